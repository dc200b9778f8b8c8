/*
 * A snapshot's manifest image in memory, for tests: built in a file by
 * manifest_export_file (as writers build it) and read back. Include after
 * test.h.
 */
#pragma once

#include "common/util.h"
#include "store/manifest.h"

#include <stdlib.h>
#include <unistd.h>

/* manifest_export_file's result; on success *ret (malloc'd) and *ret_len, else *ret untouched */
static inline int test_manifest_image(Catalog *c, int64_t snap_rowid, void **ret, size_t *ret_len)
{
	char dir[] = "/tmp/pgbakfs-manifest-XXXXXX", path[sizeof(dir) + 8];
	uint8_t *buf = NULL;
	size_t len = 0;
	int r;

	if (!mkdtemp(dir))
		return -errno;
	snprintf(path, sizeof(path), "%s/m.db", dir);
	r = manifest_export_file(c, snap_rowid, path);
	if (r == 0)
		r = file_read_regular(path, true, SIZE_MAX, &buf, &len);
	unlink(path);
	rmdir(dir);
	if (r == 0) {
		*ret = buf;
		*ret_len = len;
	}
	return r;
}
