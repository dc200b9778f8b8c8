/*
 * An LD_PRELOAD shim for tests/integration/shared_repo.sh: fchown(2) of a
 * file whose name ends in "-wal" or "-shm" (SQLite, run by root, giving the
 * catalog's files to the database's owner) first sleeps
 * PGBAKFS_SLOW_FCHOWN_MS milliseconds. A file root made and gives away only
 * after it exists stays root's alone that long: the moment in which another
 * user's process fails to open it, made wide enough to test.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int (*real_fchown)(int, uid_t, gid_t);

static int ends_with(const char *s, size_t n, const char *sfx)
{
	size_t k = strlen(sfx);
	return n >= k && memcmp(s + n - k, sfx, k) == 0;
}

int fchown(int fd, uid_t uid, gid_t gid)
{
	const char *ms = getenv("PGBAKFS_SLOW_FCHOWN_MS");
	char link[64], path[4096];
	ssize_t n;

	if (!real_fchown)
		real_fchown = (int (*)(int, uid_t, gid_t))dlsym(RTLD_NEXT, "fchown");
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	if (ms && n > 0 && (ends_with(path, (size_t)n, "-wal") || ends_with(path, (size_t)n, "-shm"))) {
		long v = atol(ms);
		struct timespec ts = {v / 1000, (v % 1000) * 1000000L};
		nanosleep(&ts, NULL);
	}
	return real_fchown(fd, uid, gid);
}
