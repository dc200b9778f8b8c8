/*
 * expire: delete the snapshots a retention policy no longer keeps (the rules
 * are store/retention.c's), then the archived WAL no remaining snapshot of
 * any instance needs. One maintenance job at a time: it holds the
 * repository's maintenance lock (repo_lock_maintenance) while it runs, so it
 * never interleaves with gc.
 *
 * What it does is told line by line through report, as check does: the
 * caller prints them. A snapshot pinned or deleted by someone else after the
 * list was read is kept or skipped, not an error.
 */
#pragma once

#include "store/repo.h"
#include "store/retention.h"

typedef void (*ExpireReportFn)(const char *msg, void *userdata);

typedef struct ExpireOptions {
	RetentionPolicy policy;
	const char *instance; /* NULL: every instance */
	bool dry_run;         /* report what would go, change nothing, take no lock */
	int64_t now;          /* ns since 1970: the policy's "now" */
} ExpireOptions;

typedef struct ExpireResult {
	size_t n_deleted; /* or, dry run, that would be */
	unsigned n_kept;
	char error[512]; /* when it returns < 0: one line saying what failed */
} ExpireResult;

/*
 * 0 when it ran; -EBUSY when a gc or expire holds the lock; other -errno when
 * the catalog or the archive could not be read or a delete failed (what was
 * deleted before stays deleted, each deletion being whole).
 */
int repo_expire(Repo *repo, const ExpireOptions *o, ExpireReportFn report, void *userdata,
		ExpireResult *ret);
