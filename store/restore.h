/*
 * Restore a snapshot into a local directory, in parallel: byte-identical
 * files, holes left sparse, modes, mtimes, symlinks, and ownership when run
 * as root. Every chunk is checked against its id before it is written; a
 * damaged chunk fails the restore (the partial target is left for the
 * caller to remove). Durable (syncfs) before success.
 */
#pragma once

#include "common/progress.h"
#include "store/repo.h"

#include <limits.h>

typedef struct RestoreOptions {
	int jobs; /* 0: number of CPUs */
	Progress *progress;
} RestoreOptions;

typedef struct RestoreResult {
	uint64_t n_files, bytes;
	/* on failure: the file and offset that could not be restored, if any */
	char failed_path[PATH_MAX];
	uint64_t failed_offset;
} RestoreResult;

/* target must be missing or an empty directory (-ENOTEMPTY otherwise). */
int restore_snapshot(Repo *repo, const SnapshotInfo *snap, const char *target,
		     const RestoreOptions *o, RestoreResult *ret);
