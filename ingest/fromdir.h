/*
 * Ingest a plain directory tree (a pg_basebackup -Fp copy, or any tree)
 * into a snapshot: directories, regular files (holes found with SEEK_HOLE
 * stay holes), symlinks, modes, owners and mtimes. Other file types
 * (sockets, fifos, devices) are skipped with a warning.
 */
#pragma once

#include "store/snapwriter.h"

#include <limits.h>

typedef struct FromDirError {
	char path[PATH_MAX]; /* the file an error is about, if any */
} FromDirError;

int fromdir_ingest(SnapWriter *w, const char *dir, FromDirError *err);
/* Sum of regular file sizes under dir (for progress). */
int fromdir_total_size(const char *dir, uint64_t *ret);
