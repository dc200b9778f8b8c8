/*
 * Repository check, pg_verifybackup style: every problem is reported, the
 * check goes on. Errors make the repository unhealthy; notes (leftovers of
 * interrupted backups that gc removes) do not.
 */
#pragma once

#include "common/progress.h"
#include "store/repo.h"

typedef enum { CHECK_NOTE, CHECK_ERROR } CheckSeverity;
typedef void (*CheckReportFn)(CheckSeverity sev, const char *msg, void *userdata);

typedef struct CheckOptions {
	bool read_data; /* read and verify every chunk of every pack */
	int jobs;       /* 0: number of CPUs */
	Progress *progress;
} CheckOptions;

typedef struct CheckResult {
	uint64_t n_errors, n_notes, n_packs, n_chunks_read, n_bad_chunks;
} CheckResult;

/* Returns 0 when the check ran (whatever it found), -errno if it could not run. */
int repo_check(Repo *repo, const CheckOptions *o, CheckReportFn report, void *userdata,
	       CheckResult *ret);
