/*
 * One walker of a directory tree on the file system, for the ingest paths
 * that read one (ingest/fromdir.c: any tree; ingest/local.c: a data
 * directory), and one reader of a regular file into a snapshot file.
 *
 * The walk: depth first, parents before their entries; each directory's
 * entries in strcmp order of their names ("." and ".." left out), so that a
 * tree is always given the same inode numbers; symlinks below the root are
 * never followed. Each entry is lstat'ed (fstatat with AT_SYMLINK_NOFOLLOW)
 * and a directory entry is opened before the callback sees it; what the entry
 * becomes (skipped, a snapshot row, a task for a reader thread) and whether
 * the walk goes into a directory is the callback's. The walk stops at the
 * first error a callback returns and returns it. Single-threaded: the
 * callbacks run on the caller's thread; nothing is kept between calls.
 */
#pragma once

#include "store/snapwriter.h"

#include <sys/stat.h>

typedef struct WalkEntry {
	const char *path;    /* the directory's path, "/", name: for opening and messages */
	const char *rel;     /* the directory's rel, "/" (unless that is ""), name */
	const char *dir_rel; /* the directory's rel */
	const char *name;
	int dirfd;           /* the directory, open: for the *at() calls */
	uint64_t parent;     /* what the caller gave for the directory */
	int stat_err;        /* 0, or -errno of the lstat (-ENOENT: gone since listed) */
	struct stat st;      /* the lstat, if !stat_err */
	int fd;              /* a directory: open (O_NOFOLLOW), or -errno; else -1. The walk's */
	char *const *names;  /* every name in the directory, sorted */
	size_t n_names;
} WalkEntry;

/* from WalkOps.entry: walk into the directory, its entries getting *ret_ino as parent */
#define WALK_DESCEND 1

typedef struct WalkOps {
	/* Each entry: <0 stops the walk, 0 goes on, WALK_DESCEND (a directory with e->fd >= 0). */
	int (*entry)(void *userdata, const WalkEntry *e, uint64_t *ret_ino);
	/*
	 * A directory that could not be opened (a walk's root) or listed: 0 goes
	 * on without its entries, <0 stops the walk. NULL: every such error stops it.
	 */
	int (*dir_error)(void *userdata, const char *path, int r);
} WalkOps;

/*
 * Walk the entries below the directory open at fd (borrowed), known as path
 * and, inside the snapshot, as rel ("" for the snapshot's root); ino is what
 * its entries get as parent.
 */
int walk_dir_fd(int fd, const char *path, const char *rel, uint64_t ino, const WalkOps *ops,
		void *userdata);
/* The same for the directory at path (a symlink to a directory is followed here only). */
int walk_dir(const char *path, const char *rel, uint64_t ino, const WalkOps *ops, void *userdata);

/* The names in the directory open at fd, sorted (fd is not moved). Free with walk_names_free(). */
int walk_names(int fd, char ***ret, size_t *ret_n);
void walk_names_free(char **names, size_t n);

/*
 * Reading a regular file into a snapshot file: what is read passes through
 * data() (a checksum, page checks), holes (found with SEEK_DATA/SEEK_HOLE,
 * where the file system tells them) through zeros() and into the snapshot as
 * holes, so that a sparse file stays sparse and is never read as zeros.
 * Either hook may be NULL; an error of one stops the read and is returned.
 */
typedef struct WalkReadOps {
	int (*data)(void *userdata, const uint8_t *buf, size_t len);
	int (*zeros)(void *userdata, uint64_t len);
} WalkReadOps;

/*
 * The bytes of fd into f, from offset 0 up to size (the size when the file
 * was opened), through buf (buf_len bytes, the unit of each read). With
 * to_eof, what the file has grown by meanwhile is read too. A file that
 * shrank meanwhile ends where it ends. *ret_len: bytes taken, holes included.
 */
int walk_read_file(SnapWriter *w, SnapFile *f, int fd, uint64_t size, bool to_eof, uint8_t *buf,
		   size_t buf_len, const WalkReadOps *ops, void *userdata, uint64_t *ret_len);
