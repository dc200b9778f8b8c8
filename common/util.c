#include "common/util.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>

int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return timespec_to_ns(&ts);
}

int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return timespec_to_ns(&ts);
}

static int parse_scaled(const char *s, const char *units, const uint64_t *mult, uint64_t *ret)
{
	char *end;
	unsigned long long v;

	if (!s || *s < '0' || *s > '9') /* strtoull would skip blanks and accept a sign */
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	if (*end) {
		const char *u = strchr(units, *end);
		if (!u || !*u)
			return -EINVAL;
		/* accept "64K", "64KB", "64KiB" */
		if (end[1] && strcmp(end + 1, "B") != 0 && strcmp(end + 1, "iB") != 0)
			return -EINVAL;
		uint64_t m = mult[u - units];
		if (v > UINT64_MAX / m)
			return -EINVAL;
		v *= m;
	}
	*ret = v;
	return 0;
}

int parse_size(const char *s, uint64_t *ret)
{
	static const uint64_t mult[] = {1024ULL, 1024ULL, 1ULL << 20, 1ULL << 20, 1ULL << 30,
					1ULL << 30, 1ULL << 40, 1ULL << 40};
	char buf[64];
	if (!s || strlen(s) >= sizeof(buf))
		return -EINVAL;
	return parse_scaled(s, "kKmMgGtT", mult, ret);
}

int parse_duration(const char *s, int64_t *ret)
{
	static const uint64_t mult[] = {1, 60, 3600, 86400, 7 * 86400};
	uint64_t v;
	int r;
	/* a bare number means seconds; suffixes do not take "B" */
	if (!s || !*s)
		return -EINVAL;
	size_t n = strlen(s);
	if (n > 1 && (s[n - 1] == 'B'))
		return -EINVAL;
	r = parse_scaled(s, "smhdw", mult, &v);
	if (r < 0 || v > INT64_MAX)
		return -EINVAL;
	*ret = (int64_t)v;
	return 0;
}

const char *format_bytes(uint64_t n, char *buf, size_t len)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	double v = (double)n;
	size_t u = 0;
	while (v >= 1024 && u + 1 < ELEMENTSOF(units)) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%llu B", (unsigned long long)n);
	else
		snprintf(buf, len, "%.1f %s", v, units[u]);
	return buf;
}

const char *format_time_iso(int64_t ns, char *buf, size_t len)
{
	time_t t = (time_t)(ns / 1000000000);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
	return buf;
}

void hex_encode(const uint8_t *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

bool hex_is_lower(const char *s, size_t n)
{
	if (strlen(s) != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

int hex_digit_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int hex_decode(const char *in, uint8_t *out, size_t n)
{
	if (strlen(in) != 2 * n)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		int hi = hex_digit_value(in[2 * i]), lo = hex_digit_value(in[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

int write_full(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t w = write(fd, p, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

int pwrite_full(int fd, const void *buf, size_t len, off_t off)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t w = pwrite(fd, p, len, off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		off += w;
		len -= (size_t)w;
	}
	return 0;
}

ssize_t pread_full(int fd, void *buf, size_t len, off_t off)
{
	char *p = buf;
	size_t done = 0;
	while (done < len) {
		ssize_t r = pread(fd, p + done, len - done, off + (off_t)done);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			break;
		done += (size_t)r;
	}
	return (ssize_t)done;
}

int mkdir_p(const char *path, mode_t mode)
{
	return mkdir_p_owned(path, mode, NULL);
}

int file_owner_of(const char *dir, FileOwner *ret)
{
	struct stat st;

	*ret = (FileOwner){0};
	if (geteuid() != 0)
		return 0;
	if (stat(dir, &st) < 0)
		return -errno;
	if (st.st_uid != 0)
		*ret = (FileOwner){.give = true, .uid = st.st_uid, .gid = st.st_gid};
	return 0;
}

/* "<dir of path>/.own-<random>": a name listings skip, in path's directory */
static int owned_tmp_name(const char *path, char *buf, size_t len)
{
	char dir[PATH_MAX];
	uint64_t rnd;
	int r = random_bytes(&rnd, sizeof(rnd));

	if (r < 0)
		return r;
	path_dirname(path, dir, sizeof(dir));
	if ((size_t)snprintf(buf, len, "%s/.own-%016llx", dir, (unsigned long long)rnd) >= len)
		return -ENAMETOOLONG;
	return 0;
}

int file_create_owned(const char *path, mode_t mode, const FileOwner *owner)
{
	char tmp[PATH_MAX + 32];
	int r = owned_tmp_name(path, tmp, sizeof(tmp));
	int fd = r < 0 ? r : open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);

	if (r < 0 || fd < 0)
		return r < 0 ? r : -errno;
	r = owner && owner->give && fchown(fd, owner->uid, owner->gid) < 0 ? -errno : 0;
	close(fd);
	if (r == 0 && link(tmp, path) < 0)
		r = -errno;
	unlink(tmp);
	return r;
}

int open_owned(const char *path, int flags, mode_t mode, const FileOwner *owner)
{
	int fd, r;

	if (!owner || !owner->give || !(flags & O_CREAT)) {
		fd = open(path, flags, mode);
		return fd < 0 ? -errno : fd;
	}
	if (!(flags & O_EXCL)) {
		fd = open(path, flags & ~O_CREAT, mode);
		if (fd >= 0 || errno != ENOENT)
			return fd < 0 ? -errno : fd;
	}
	/* made given; another process making it meanwhile is no error without O_EXCL */
	r = file_create_owned(path, mode, owner);
	if (r < 0 && (r != -EEXIST || (flags & O_EXCL)))
		return r;
	fd = open(path, flags & ~(O_CREAT | O_EXCL | O_TRUNC), mode);
	return fd < 0 ? -errno : fd;
}

int mkdir_owned(const char *path, mode_t mode, const FileOwner *owner)
{
	char tmp[PATH_MAX + 32];
	struct stat st;
	int r;

	if (!owner || !owner->give)
		return mkdir(path, mode) < 0 && errno != EEXIST ? -errno : 0;
	if (stat(path, &st) == 0)
		return 0;
	if (errno != ENOENT)
		return -errno;
	r = owned_tmp_name(path, tmp, sizeof(tmp));
	if (r < 0)
		return r;
	if (mkdir(tmp, mode) < 0)
		return -errno;
	if (chown(tmp, owner->uid, owner->gid) < 0) {
		r = -errno;
	} else if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) == 0) {
		return 0;
	} else if (errno == EEXIST) {
		r = 0; /* made meanwhile */
	} else if (errno == EINVAL || errno == ENOSYS) {
		/* a file system without RENAME_NOREPLACE: made, then given */
		r = mkdir(path, mode) < 0 ? (errno == EEXIST ? 0 : -errno)
					  : chown(path, owner->uid, owner->gid) < 0 ? -errno : 0;
	} else {
		r = -errno;
	}
	rmdir(tmp);
	return r;
}

int mkdir_p_owned(const char *path, mode_t mode, const FileOwner *owner)
{
	char buf[PATH_MAX];
	size_t n = strlen(path);
	int r;

	if (n == 0 || n >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, n + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		r = mkdir_owned(buf, mode, owner);
		if (r < 0)
			return r;
		*p = '/';
	}
	return mkdir_owned(buf, mode, owner);
}

int fsync_dir(const char *path)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		return -errno;
	return 0;
}

void path_dirname(const char *path, char *buf, size_t len)
{
	const char *slash = strrchr(path, '/');
	if (!slash)
		snprintf(buf, len, ".");
	else if (slash == path)
		snprintf(buf, len, "/");
	else
		snprintf(buf, len, "%.*s", (int)(slash - path), path);
}

#define DIRECT_WRITE_ALIGN 4096
#define DIRECT_WRITE_MIN (1u << 20)

/*
 * A new file's contents := buf[0..len). A large page-aligned buffer (a pack,
 * a WAL segment: written once, not read back soon) goes with O_DIRECT up to
 * its last whole 4 KiB block, the tail through the page cache. Copying such
 * a buffer into the cache cost more than anything else in storing it: in a VM
 * whose freed memory goes back to the host, 2 GiB of 32 MiB files took 3-5 s
 * of CPU and 4-6 s buffered, 0.1 s and 1.4 s direct. Where O_DIRECT is refused
 * (EINVAL), all of it goes through the cache.
 */
static int write_new_file(int fd, const void *buf, size_t len)
{
	size_t direct = len & ~(size_t)(DIRECT_WRITE_ALIGN - 1);
	int flags = fcntl(fd, F_GETFL);
	if (((uintptr_t)buf & (DIRECT_WRITE_ALIGN - 1)) || len < DIRECT_WRITE_MIN || flags < 0 ||
	    fcntl(fd, F_SETFL, flags | O_DIRECT) < 0)
		return write_full(fd, buf, len);
	int r = pwrite_full(fd, buf, direct, 0);
	if (fcntl(fd, F_SETFL, flags) < 0)
		return -errno;
	if (r == -EINVAL)
		direct = 0; /* refused after all: everything through the cache */
	else if (r < 0)
		return r;
	return pwrite_full(fd, (const uint8_t *)buf + direct, len - direct, (off_t)direct);
}

int file_write_atomic(const char *path, const void *buf, size_t len, mode_t mode)
{
	return file_write_atomic_owned(path, buf, len, mode, NULL);
}

int file_write_atomic_owned(const char *path, const void *buf, size_t len, mode_t mode,
			    const FileOwner *owner)
{
	char tmp[PATH_MAX + 32], dir[PATH_MAX];
	uint64_t rnd;
	int r = random_bytes(&rnd, sizeof(rnd));

	if (r < 0)
		return r;
	/* a dot name in the same directory: listings skip it, rename is atomic */
	path_dirname(path, dir, sizeof(dir));
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s/.tmp-%016llx", dir, (unsigned long long)rnd) >=
	    sizeof(tmp))
		return -ENAMETOOLONG;
	_cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	r = write_new_file(fd, buf, len);
	if (r == 0 && owner && owner->give && fchown(fd, owner->uid, owner->gid) < 0)
		r = -errno;
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		return r;
	}
	return fsync_dir(dir);
}

int file_read_all(const char *path, size_t max, char **ret, size_t *ret_len)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	_cleanup_free_ char *buf = NULL;
	struct stat st;
	ssize_t n;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if ((size_t)st.st_size > max)
		return -EFBIG;
	buf = malloc((size_t)st.st_size + 1);
	if (!buf)
		return -ENOMEM;
	n = pread_full(fd, buf, (size_t)st.st_size, 0);
	if (n < 0)
		return (int)n;
	buf[n] = '\0';
	if (ret_len)
		*ret_len = (size_t)n;
	*ret = TAKE_PTR(buf);
	return 0;
}

void *malloc_huge(size_t len)
{
	const size_t huge = 2u << 20;
	void *p = NULL;
	if (posix_memalign(&p, huge, len ? len : 1) != 0)
		return NULL;
#ifdef MADV_HUGEPAGE
	if (len >= huge)
		(void)madvise(p, len, MADV_HUGEPAGE);
#endif
	return p;
}

void thread_name(const char *name)
{
	(void)prctl(PR_SET_NAME, name, 0, 0, 0); /* truncated to 15 characters */
}

#define FILE_READ_HUGE (2 << 20)

int file_read_regular(const char *path, bool nofollow, uint64_t max, uint8_t **ret,
		      size_t *ret_len)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | (nofollow ? O_NOFOLLOW : 0));
	_cleanup_free_ uint8_t *buf = NULL;
	struct stat st;
	ssize_t n;

	if (fd < 0 || fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	if ((uint64_t)st.st_size > max)
		return -EFBIG;
	/* a large file is read once into a fresh mapping: huge pages spare most page faults */
	buf = st.st_size >= FILE_READ_HUGE ? malloc_huge((size_t)st.st_size)
					    : malloc(st.st_size ? (size_t)st.st_size : 1);
	if (!buf)
		return -ENOMEM;
	n = pread_full(fd, buf, (size_t)st.st_size, 0);
	if (n < 0)
		return (int)n;
	if (n != st.st_size)
		return -EIO;
	*ret = TAKE_PTR(buf);
	*ret_len = (size_t)n;
	return 0;
}

int file_cached_bytes(int fd, uint64_t *ret)
{
#ifndef __NR_cachestat
#define __NR_cachestat 451 /* the same number on every architecture */
#endif
	struct {
		uint64_t off, len; /* len 0: to the end */
	} range = {0, 0};
	struct {
		uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
	} cs;
	if (syscall(__NR_cachestat, fd, &range, &cs, 0) < 0)
		return -errno;
	*ret = cs.nr_cache * (uint64_t)sysconf(_SC_PAGESIZE);
	return 0;
}

int dir_is_empty(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;
	int empty = 1;
	if (!d)
		return errno == ENOENT ? 1 : -errno;
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
			empty = 0;
			break;
		}
	}
	closedir(d);
	return empty;
}

static int rm_one(const char *p, const struct stat *st _unused_, int flag, struct FTW *ftw _unused_)
{
	if (flag == FTW_DP)
		return rmdir(p) < 0 ? -1 : 0;
	return unlink(p) < 0 && errno != ENOENT ? -1 : 0;
}

int rm_rf(const char *path)
{
	if (nftw(path, rm_one, 32, FTW_DEPTH | FTW_PHYS) < 0)
		return errno == ENOENT ? 0 : -errno;
	return 0;
}

int bytes_append(uint8_t **buf, size_t *len, size_t *cap, const void *src, size_t n)
{
	if (n > SIZE_MAX - *len)
		return -ENOMEM;
	if (*len + n > *cap) {
		size_t c = MAX(*len + n, *cap > SIZE_MAX / 2 ? SIZE_MAX : *cap * 2);
		uint8_t *p = realloc(*buf, c ? c : 1);
		if (!p)
			return -ENOMEM;
		*buf = p;
		*cap = c;
	}
	if (n)
		memcpy(*buf + *len, src, n);
	*len += n;
	return 0;
}

int random_bytes(void *buf, size_t n)
{
	char *p = buf;
	while (n > 0) {
		ssize_t r = getrandom(p, n, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static _Noreturn void oom(void)
{
	fputs("pgbakfs: error: out of memory\n", stderr);
	exit(1);
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		oom();
	return p;
}

void *xcalloc(size_t n, size_t m)
{
	void *p = calloc(n ? n : 1, m ? m : 1);
	if (!p)
		oom();
	return p;
}

void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		oom();
	return q;
}

char *xstrdup(const char *s)
{
	char *p = strdup(s);
	if (!p)
		oom();
	return p;
}

char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *p;
	va_start(ap, fmt);
	if (vasprintf(&p, fmt, ap) < 0)
		oom();
	va_end(ap);
	return p;
}

int cpu_count(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : (int)MIN(n, 256);
}
