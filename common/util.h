/* Small OS and formatting helpers. All return 0 or -errno unless stated. */
#pragma once

#include "common/common.h"

#include <stdio.h>
#include <sys/types.h>
#include <time.h>

/* Nanoseconds since the epoch (CLOCK_REALTIME) and a monotonic clock. */
int64_t now_ns(void);
int64_t mono_ns(void);

/* A timespec (clock reading, st_mtim...) as nanoseconds since its epoch. */
static inline int64_t timespec_to_ns(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

/* "64K", "1M", "2G", "4096" -> bytes. -EINVAL on junk or overflow. */
int parse_size(const char *s, uint64_t *ret);
/* "7d", "12h", "30m", "45s", "2w" -> seconds. */
int parse_duration(const char *s, int64_t *ret);
/* Human size "12.3 MiB" into buf (>= 16 bytes). */
const char *format_bytes(uint64_t n, char *buf, size_t len);
/* ISO 8601 UTC "2026-11-22T01:54:00Z" into buf (>= 32 bytes). */
const char *format_time_iso(int64_t ns, char *buf, size_t len);

void hex_encode(const uint8_t *in, size_t n, char *out); /* out: 2n+1 bytes */
int hex_decode(const char *in, uint8_t *out, size_t n);   /* exactly 2n hex chars */
int hex_digit_value(char c);                                /* 0-15, or -1 */
/* s is exactly n characters of 0-9a-f (the names this project gives objects) */
bool hex_is_lower(const char *s, size_t n);

/* Write all / read all, retrying on EINTR and short counts. */
int write_full(int fd, const void *buf, size_t len);
int pwrite_full(int fd, const void *buf, size_t len, off_t off);
/* Reads up to len bytes; returns bytes read (short only at EOF) or -errno. */
ssize_t pread_full(int fd, void *buf, size_t len, off_t off);

int mkdir_p(const char *path, mode_t mode);
int fsync_dir(const char *path);

/*
 * Whom new files and directories in a tree go to. Root writing into a tree
 * another user owns (a repository whose archiver, running as postgres,
 * shares it with root's backups) gives each to that user, and each appears
 * under its name already theirs: created under a temporary name, given,
 * then linked or renamed into place. A file created first and given after
 * was, for a moment, root's alone: the archiver opening it then failed.
 * give false: everything is created as the caller, as open(2) does.
 */
typedef struct FileOwner {
	bool give;
	uid_t uid;
	gid_t gid;
} FileOwner;

/* Root, and dir owned by another user: give to that user; else give nothing. */
int file_owner_of(const char *dir, FileOwner *ret);
/*
 * open(2) of path with flags; with O_CREAT and an owner to give to, a file
 * that does not exist yet appears already given (O_EXCL: -EEXIST when it
 * does exist). A descriptor, or -errno. owner NULL: open(2).
 */
int open_owned(const char *path, int flags, mode_t mode, const FileOwner *owner);
/*
 * An empty file of mode at path, given to owner (give true) before it has
 * its name; -EEXIST when path exists. path itself is never opened: closing
 * a descriptor drops every fcntl lock the process holds on the file (SQLite's
 * on its -shm, held by another connection of the process).
 */
int file_create_owned(const char *path, mode_t mode, const FileOwner *owner);
/* mkdir(2), an existing directory being no error; given as open_owned gives. */
int mkdir_owned(const char *path, mode_t mode, const FileOwner *owner);
/* mkdir -p, each directory made given. */
int mkdir_p_owned(const char *path, mode_t mode, const FileOwner *owner);
/* Path of the directory containing path, into buf. */
void path_dirname(const char *path, char *buf, size_t len);
/*
 * Write a whole file atomically and durably: a ".tmp-<random>" file in the same
 * directory, fsync, rename over path, fsync of the directory. A buffer of 1 MiB
 * or more aligned to 4 KiB (malloc_huge) is written with O_DIRECT where the file
 * system takes it, bypassing the page cache.
 */
int file_write_atomic(const char *path, const void *buf, size_t len, mode_t mode);
/* file_write_atomic, the file given to owner before it takes its name. */
int file_write_atomic_owned(const char *path, const void *buf, size_t len, mode_t mode,
			    const FileOwner *owner);
/* Read a whole small file into a NUL-terminated malloc'd buffer. */
int file_read_all(const char *path, size_t max, char **ret, size_t *ret_len);
/*
 * Read a whole regular file of at most max bytes into a malloc'd buffer
 * (not NUL-terminated). O_NOFOLLOW with nofollow. -errno from open/fstat/
 * read, -EINVAL when it is not a regular file, -EFBIG when larger than max,
 * -EIO when it shrank while read. A file of 2 MiB or more is read into
 * huge pages (malloc_huge): a 16 MiB WAL segment read into a fresh malloc
 * took 4,096 page faults, a third of wal-push's CPU.
 */
int file_read_regular(const char *path, bool nofollow, uint64_t max, uint8_t **ret,
		      size_t *ret_len);
/*
 * len bytes (at least 1), 2 MiB-aligned and advised for transparent huge
 * pages (a hint), for a large buffer filled once: a fresh malloc this large is
 * a fresh mapping, and its first touch in 4 KiB pages (4,096 page faults for
 * 16 MiB) cost more than the copy into it. free() releases it; NULL when out
 * of memory.
 */
void *malloc_huge(size_t len);
/*
 * Names the calling thread (at most 15 characters: the kernel's limit) for
 * top -H, ps -L, perf and gdb: a restore's time split between its fetchers,
 * workers and writers is readable there by name. Best effort.
 */
void thread_name(const char *name);
/*
 * Bytes of the file open at fd that are in the page cache (cachestat(2),
 * Linux 6.5): -ENOSYS where the kernel lacks it.
 */
int file_cached_bytes(int fd, uint64_t *ret);
/* True if directory is missing or empty; -errno on other errors. */
int dir_is_empty(const char *path);
/* rm -rf; errors other than ENOENT are returned. */
int rm_rf(const char *path);

/*
 * Append n bytes at src to the growing buffer *buf (*len used of *cap,
 * doubling as needed): -ENOMEM, buffer unchanged, when it cannot grow.
 */
int bytes_append(uint8_t **buf, size_t *len, size_t *cap, const void *src, size_t n);

/* Random bytes from getrandom(2). */
int random_bytes(void *buf, size_t n);

/* malloc/calloc that exit on failure: only for tools/ and tests. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xasprintf(const char *fmt, ...) _printf_(1, 2);

/* Number of online CPUs, at least 1. */
int cpu_count(void);

/* Little-endian integers in on-disk formats (packs, WAL objects, restore records). */
static inline void put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline uint16_t get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static inline void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t get_le32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static inline uint64_t get_le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}
