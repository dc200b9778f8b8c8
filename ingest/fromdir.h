/*
 * Ingest a plain directory tree (a pg_basebackup -Fp copy, or any tree)
 * into a snapshot: directories, regular files (holes found with SEEK_HOLE
 * stay holes), symlinks, modes, owners and mtimes. Other file types
 * (sockets, fifos, devices) are skipped with a warning.
 *
 * A live tree is read as GNU tar reads it: a file whose size, mtime or ctime
 * differs after it was read ("file changed as we read it"), or that vanished
 * between listing its directory and reading it, gets one warning line and
 * makes the snapshot's status "warning"; the backup goes on.
 *
 * Paths inside the snapshot are at most FROMDIR_PATH_MAX - 1 bytes, so a
 * restore target or mount point of up to 255 bytes holds them within
 * PATH_MAX: a longer one fails the backup with -ENAMETOOLONG.
 */
#pragma once

#include "store/snapwriter.h"

#include <limits.h>

#define FROMDIR_PATH_MAX (PATH_MAX - 256)

typedef struct FromDirError {
	char path[PATH_MAX]; /* the file an error is about, if any (cut in the middle if longer) */
	size_t rel_len;      /* -ENAMETOOLONG: bytes of its path inside the snapshot */
} FromDirError;

int fromdir_ingest(SnapWriter *w, const char *dir, FromDirError *err);
/* Sum of regular file sizes under dir (for progress). */
int fromdir_total_size(const char *dir, uint64_t *ret);
