/*
 * A writable clone of one snapshot: a copy-on-write namespace kept in a
 * scratch directory. The repository is never modified.
 *
 * Layout of a clone's scratch directory (directories 0700, files 0600):
 *   clone.db        SQLite (WAL, synchronous=FULL): the namespace (inodes,
 *                   directory entries) and the snapshot it was cloned from
 *   upper/INO       sparse upper data of inode INO
 *   upper/INO.map   one byte per chunk of the lower file: 1 when the chunk
 *                   lives in upper/INO (copied up), 0 when it is still read
 *                   from the snapshot
 *   reserve         1 MiB given back when an unlink or rmdir meets ENOSPC
 *   reserve.flush   room set aside for the flushes of written files
 *
 * A lower-backed regular file reads chunk k from upper when map[k] is set or
 * when k * chunk_size >= lower_limit (the lower bytes end there: the original
 * size, lowered by truncation); otherwise from the snapshot through the
 * CloneLowerRead callback. The first write into a chunk copies that chunk up
 * (never the whole file). A file created in the clone has lower_limit 0.
 *
 * Durability follows POSIX: namespace changes (create, mkdir, unlink, rename,
 * link, symlink, chmod, chown, utimens, truncate) are committed to clone.db
 * before the call returns. Data and size reach the disk on clone_fsync(),
 * clone_release() and clone_close(): the upper file is fdatasync'ed first, the
 * map and size after it, so a crash never marks a chunk copied up before its
 * bytes are on disk. Reopening the same directory after clone_close() gives
 * back the same state; an empty directory gives a fresh clone.
 *
 * A full scratch disk fails the write, not the flush: clone_write sets aside
 * the room its flush will need besides the data (the map file, the inode
 * row), or fails with -ENOSPC having changed nothing. Once a write has
 * succeeded, clone_fsync(), clone_release() and clone_close() do not fail for
 * lack of space, unless something outside the clone fills the disk between
 * the flush's own steps.
 *
 * Inode numbers are 32-bit and local to the clone; the seed's inode numbers
 * are kept (root is 1) and new inodes continue after the largest of them.
 * Every function is thread-safe and returns 0 (or a count) or -errno:
 * -ENOENT, -EEXIST, -ENOTDIR, -EISDIR, -ENOTEMPTY, -EINVAL, -ENAMETOOLONG (a
 * name longer than 255 bytes, given to any call that takes a name, whether it
 * exists or not), -ENOSPC (scratch disk full: the clone stays consistent),
 * -EIO, -EBADMSG (clone.db damaged), -ENOMEM, -ESTALE (the clone's snapshot
 * differs from the one given to clone_open); SQLite's codes as store/sqldb.h maps them.
 */
#pragma once

#include "common/common.h"

#include <sys/statvfs.h>
#include <sys/types.h>

typedef struct Clone Clone;
typedef struct CloneFile CloneFile;

/* A file of the snapshot, as handed to clone_open (seed of a fresh clone). */
typedef struct CloneSeedFile {
	uint32_t ino, parent; /* root: ino 1, parent 1, name "" */
	const char *name;
	uint32_t mode, uid, gid;
	int64_t mtime_ns;
	uint64_t size;
	const char *target; /* symlinks */
} CloneSeedFile;

/*
 * Read len bytes at off of the snapshot's file lower_ino into buf; off + len
 * never passes that file's size. Returns 0 or -errno (-EIO for damage). Called
 * from any thread, without the clone's lock held.
 */
typedef int (*CloneLowerRead)(void *userdata, uint32_t lower_ino, uint64_t off, size_t len,
			      void *buf);

typedef struct CloneOptions {
	const char *dir;      /* scratch directory; created (0700) if missing */
	const char *snapshot; /* snapshot name; stored in a fresh clone, checked on reopen */
	const CloneSeedFile *seed;
	size_t n_seed; /* seed files in parent-before-child order */
	uint64_t chunk_size;
	CloneLowerRead lower_read;
	void *userdata;
} CloneOptions;

typedef struct CloneAttr {
	uint32_t ino;
	uint32_t mode, uid, gid, nlink;
	uint64_t size;
	uint64_t blocks; /* 512-byte units */
	int64_t atime_ns, mtime_ns, ctime_ns;
} CloneAttr;

int clone_open(const CloneOptions *o, Clone **ret);
/* Flush sizes and maps of every open file, close the database. Accepts NULL. */
Clone *clone_close(Clone *c);

/* True when clone_open seeded a fresh clone rather than reopening one. */
bool clone_is_fresh(const Clone *c);

int clone_getattr(Clone *c, uint32_t ino, CloneAttr *ret);
int clone_lookup(Clone *c, uint32_t parent, const char *name, CloneAttr *ret);
int clone_readlink(Clone *c, uint32_t ino, char **ret_target);

/*
 * Directory listing from cursor (0 to start). cb gets each entry with the
 * cursor of the entry after it; a non-zero return of cb stops the listing and
 * is returned. Cursors stay valid while entries are added and removed. "." and
 * ".." are not listed.
 */
typedef int (*CloneDirFn)(const char *name, const CloneAttr *a, uint64_t next, void *userdata);
int clone_readdir(Clone *c, uint32_t dir, uint64_t cursor, CloneDirFn cb, void *userdata);

/* mode carries the file type (S_IFREG, S_IFDIR; S_IFIFO etc. give -EPERM). */
int clone_mknod(Clone *c, uint32_t parent, const char *name, uint32_t mode, uint32_t uid,
		uint32_t gid, CloneAttr *ret);
int clone_mkdir(Clone *c, uint32_t parent, const char *name, uint32_t mode, uint32_t uid,
		uint32_t gid, CloneAttr *ret);
int clone_symlink(Clone *c, uint32_t parent, const char *name, const char *target, uint32_t uid,
		  uint32_t gid, CloneAttr *ret);
int clone_link(Clone *c, uint32_t ino, uint32_t newparent, const char *newname, CloneAttr *ret);
/* Files stay readable and writable through open CloneFiles after their last unlink. */
int clone_unlink(Clone *c, uint32_t parent, const char *name);
int clone_rmdir(Clone *c, uint32_t parent, const char *name);
/* flags: 0 or RENAME_NOREPLACE (RENAME_EXCHANGE gives -EINVAL). */
int clone_rename(Clone *c, uint32_t parent, const char *name, uint32_t newparent,
		 const char *newname, unsigned flags);

#define CLONE_SET_MODE (1u << 0)
#define CLONE_SET_UID (1u << 1)
#define CLONE_SET_GID (1u << 2)
#define CLONE_SET_SIZE (1u << 3)
#define CLONE_SET_ATIME (1u << 4)
#define CLONE_SET_MTIME (1u << 5)
/* Change what mask selects from a; ret gets the new attributes. */
int clone_setattr(Clone *c, uint32_t ino, unsigned mask, const CloneAttr *a, CloneAttr *ret);

/* Open a regular file; O_TRUNC truncates. Each open is its own handle. */
int clone_open_file(Clone *c, uint32_t ino, int flags, CloneFile **ret);
/* Flush and drop the handle; the last close of an unlinked file removes it. */
int clone_release(CloneFile *f);
ssize_t clone_read(CloneFile *f, uint64_t off, size_t len, void *buf);
/* -ENOSPC (nothing written) when the disk holds neither the bytes nor the room to flush them. */
ssize_t clone_write(CloneFile *f, uint64_t off, size_t len, const void *buf);
/* Flush the file's data, map, size and times (see the durability contract above). */
int clone_fsync(CloneFile *f, bool datasync);
/* SEEK_DATA / SEEK_HOLE (a clone may report the whole file as data). */
int64_t clone_lseek(CloneFile *f, int64_t off, int whence);
/*
 * fsync of directory dir: its entries are durable already, so this only
 * checks that dir is a directory; other files' pending data is not its
 * business (-ENOTDIR, -ENOENT).
 */
int clone_fsyncdir(Clone *c, uint32_t dir);
/* Space of the scratch filesystem. */
int clone_statfs(Clone *c, struct statvfs *ret);
