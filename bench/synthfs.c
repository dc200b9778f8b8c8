/*
 * bench/synthfs — a synthetic FUSE file system for bench/scale (not part of pgbakfs).
 *
 * Serves files f000000, f000001, ... holding --chunks chunks of --chunk-bytes in all,
 * --file-bytes each (the last one shorter), without storing them: chunk k (global number)
 * reads as "<k: 8 bytes LE><version: 8 bytes LE>" then zeros, version 0 at start. A
 * write of exactly those 16 bytes at the start of chunk k sets its version and the
 * file's mtime (bench/scale rewrites one chunk per changed file that way); any other
 * write is refused with EINVAL. So a repository of 10 million unique chunks can be
 * backed up without 40-80 GB of fragmented files on disk: the data costs only CPU.
 *
 * Files are direct_io (no page cache: 80 GB of synthetic data would evict the
 * catalog's pages). Build: cc -O2 -o synthfs synthfs.c $(pkg-config --cflags --libs fuse3)
 * Usage: synthfs MOUNTPOINT --chunks N --chunk-bytes B --file-bytes F [--uid U --gid G] [FUSE options]
 */
#define FUSE_USE_VERSION 31
#define _GNU_SOURCE
#include <errno.h>
#include <fuse.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static struct {
	uint64_t chunks, chunk_bytes, file_bytes, per_file, nfiles;
	uint32_t *version;         /* per chunk */
	struct timespec *mtime;    /* per file */
	struct timespec start;
	unsigned uid, gid;
} S;

static struct options {
	const char *chunks, *chunk_bytes, *file_bytes, *uid, *gid;
} O;

#define OPT(t, p) {t, offsetof(struct options, p), 1}
static const struct fuse_opt opt_spec[] = {
	OPT("--chunks=%s", chunks), OPT("--chunk-bytes=%s", chunk_bytes), OPT("--file-bytes=%s", file_bytes),
	OPT("--uid=%s", uid), OPT("--gid=%s", gid), FUSE_OPT_END,
};

/* file number of path "/fNNNNNN", or -1 */
static int64_t file_of(const char *path)
{
	char *end;
	if (path[0] != '/' || path[1] != 'f' || strlen(path) != 8)
		return -1;
	unsigned long long f = strtoull(path + 2, &end, 10);
	return *end == '\0' && f < S.nfiles ? (int64_t)f : -1;
}

static uint64_t file_size(uint64_t f)
{
	uint64_t first = f * S.per_file, n = S.chunks - first < S.per_file ? S.chunks - first : S.per_file;
	return n * S.chunk_bytes;
}

static int sy_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	(void)fi;
	memset(st, 0, sizeof(*st));
	st->st_uid = S.uid;
	st->st_gid = S.gid;
	if (strcmp(path, "/") == 0) {
		st->st_mode = S_IFDIR | 0700;
		st->st_nlink = 2;
		st->st_mtim = st->st_ctim = st->st_atim = S.start;
		return 0;
	}
	int64_t f = file_of(path);
	if (f < 0)
		return -ENOENT;
	st->st_mode = S_IFREG | 0600;
	st->st_nlink = 1;
	st->st_size = (off_t)file_size((uint64_t)f);
	st->st_blocks = st->st_size / 512;
	st->st_blksize = 4096;
	__atomic_load(&S.mtime[f].tv_sec, &st->st_mtim.tv_sec, __ATOMIC_ACQUIRE);
	__atomic_load(&S.mtime[f].tv_nsec, &st->st_mtim.tv_nsec, __ATOMIC_ACQUIRE);
	st->st_ctim = st->st_mtim;
	st->st_atim = S.start;
	return 0;
}

static int sy_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off, struct fuse_file_info *fi,
		      enum fuse_readdir_flags flags)
{
	(void)off, (void)fi, (void)flags;
	if (strcmp(path, "/") != 0)
		return -ENOTDIR;
	fill(buf, ".", NULL, 0, 0);
	fill(buf, "..", NULL, 0, 0);
	for (uint64_t f = 0; f < S.nfiles; f++) {
		char name[24];
		snprintf(name, sizeof(name), "f%06llu", (unsigned long long)f);
		if (fill(buf, name, NULL, 0, 0))
			break;
	}
	return 0;
}

static int sy_open(const char *path, struct fuse_file_info *fi)
{
	if (file_of(path) < 0)
		return -ENOENT;
	if (fi->flags & O_TRUNC)
		return -EPERM;
	fi->direct_io = 1;
	return 0;
}

static int sy_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
	(void)fi;
	int64_t f = file_of(path);
	if (f < 0)
		return -ENOENT;
	uint64_t fsize = file_size((uint64_t)f), pos = (uint64_t)off;
	if (pos >= fsize)
		return 0;
	if (size > fsize - pos)
		size = fsize - pos;
	memset(buf, 0, size);
	uint64_t first = pos / S.chunk_bytes, last = (pos + size - 1) / S.chunk_bytes;
	for (uint64_t c = first; c <= last; c++) {
		uint64_t k = (uint64_t)f * S.per_file + c, cstart = c * S.chunk_bytes;
		uint8_t head[16];
		uint32_t v = __atomic_load_n(&S.version[k], __ATOMIC_ACQUIRE);
		for (int i = 0; i < 8; i++) {
			head[i] = (uint8_t)(k >> (8 * i));
			head[8 + i] = (uint8_t)((uint64_t)v >> (8 * i));
		}
		/* the part of head[0..16) at cstart that falls inside [pos, pos+size) */
		for (uint64_t b = 0; b < 16; b++)
			if (cstart + b >= pos && cstart + b < pos + size)
				buf[cstart + b - pos] = (char)head[b];
	}
	return (int)size;
}

static int sy_write(const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
	(void)fi;
	int64_t f = file_of(path);
	if (f < 0)
		return -ENOENT;
	uint64_t pos = (uint64_t)off;
	if (size != 16 || pos % S.chunk_bytes != 0 || pos >= file_size((uint64_t)f))
		return -EINVAL;
	uint64_t k = (uint64_t)f * S.per_file + pos / S.chunk_bytes, wk = 0, v = 0;
	for (int i = 7; i >= 0; i--) {
		wk = wk << 8 | (uint8_t)buf[i];
		v = v << 8 | (uint8_t)buf[8 + i];
	}
	if (wk != k || v > UINT32_MAX)
		return -EINVAL;
	__atomic_store_n(&S.version[k], (uint32_t)v, __ATOMIC_RELEASE);
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	__atomic_store_n(&S.mtime[f].tv_nsec, now.tv_nsec, __ATOMIC_RELEASE);
	__atomic_store_n(&S.mtime[f].tv_sec, now.tv_sec, __ATOMIC_RELEASE);
	return 16;
}

static void *sy_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	(void)conn;
	cfg->attr_timeout = 0; /* mtimes change under writes: never serve a stale one */
	cfg->entry_timeout = 0;
	return NULL;
}

static const struct fuse_operations ops = {
	.getattr = sy_getattr, .readdir = sy_readdir, .open = sy_open,
	.read = sy_read, .write = sy_write, .init = sy_init,
};

static uint64_t num(const char *s, const char *what)
{
	char *end;
	unsigned long long v = s ? strtoull(s, &end, 10) : 0;
	if (!s || *end || v == 0) {
		fprintf(stderr, "synthfs: %s must be a positive integer\n", what);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	if (fuse_opt_parse(&args, &O, opt_spec, NULL) == -1)
		return 2;
	S.chunks = num(O.chunks, "--chunks");
	S.chunk_bytes = num(O.chunk_bytes, "--chunk-bytes");
	S.file_bytes = num(O.file_bytes, "--file-bytes");
	S.uid = O.uid ? (unsigned)num(O.uid, "--uid") : 0;
	S.gid = O.gid ? (unsigned)num(O.gid, "--gid") : 0;
	if (S.chunk_bytes < 16 || S.file_bytes % S.chunk_bytes) {
		fprintf(stderr, "synthfs: --file-bytes must be a multiple of --chunk-bytes (>= 16)\n");
		return 2;
	}
	S.per_file = S.file_bytes / S.chunk_bytes;
	S.nfiles = (S.chunks + S.per_file - 1) / S.per_file;
	if (S.nfiles > 999999) {
		fprintf(stderr, "synthfs: more than 999999 files: raise --file-bytes\n");
		return 2;
	}
	S.version = calloc(S.chunks, sizeof(*S.version));
	S.mtime = calloc(S.nfiles, sizeof(*S.mtime));
	if (!S.version || !S.mtime) {
		fprintf(stderr, "synthfs: out of memory\n");
		return 1;
	}
	clock_gettime(CLOCK_REALTIME, &S.start);
	/* an hour old: a backup right after the mount must not take every file for
	 * one that may still be changing (mtime within a second of the parent's start) */
	S.start.tv_sec -= 3600;
	for (uint64_t f = 0; f < S.nfiles; f++)
		S.mtime[f] = S.start;
	int rc = fuse_main(args.argc, args.argv, &ops, NULL);
	fuse_opt_free_args(&args);
	free(S.version);
	free(S.mtime);
	return rc;
}
