/*
 * What the files of the FUSE mount share (fs/mount.c and fs/mount_*.c);
 * nothing outside fs/mount*.c includes it.
 *
 *   mount.c        the session: options, the ops table, the poller
 *   mount_snap.c   the snapshot table (and its refresh), their trees, inode decoding
 *   mount_ro.c     the handlers that change nothing: lookup, getattr, readlink,
 *                  readdir, statfs, extended attributes
 *   mount_read.c   open files and the read path (chunk cache, prefetch, holes)
 *   mount_rw.c     writable clones: their opening and the modifying handlers
 *
 * Inode numbers: 1 is the root, 2 "latest", 16 + k "latest-<instance k>";
 * a snapshot's files are (snapshot rowid << 32) | ino, ino being the
 * catalog's (or, in a writable clone, the clone's) inode number. So no table
 * maps inodes: every request decodes its inode.
 *
 * Locks: m->lock (rwlock) guards the snapshot table and is held only to find
 * a snapshot and take a reference; a read through an open file takes no
 * other lock than the chunk cache's shard locks. A snapshot's load_lock guards its tree (load,
 * users, release) and clone; m->trees_lock the count and bytes of loaded
 * trees; m->meta_lock the mount's own catalog connection (snapshot list,
 * holds, file lists, root attributes). Order: m->lock (only to collect
 * references, released before anything else), then a snapshot's load_lock,
 * then a tree's lock, then m->trees_lock or m->meta_lock.
 *
 * Trees are loaded on demand and let go (see "trees" in mount_snap.c): a SnapTree or
 * SnapNode pointer is only used under a tree reference (Target.tree,
 * Handle.tree), never through MountSnap.tree without load_lock.
 */
#pragma once

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 312
#endif

#include "fs/mount.h"

#include "fs/chunkcache.h"
#include "fs/clone.h"
#include "fs/snaptree.h"

#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define LATEST_INO 2
#define INSTANCE_INO_BASE 16
#define SNAP_SHIFT 32
#define IMMUTABLE_TIMEOUT 86400.0 /* a snapshot never changes */
#define LIVE_TIMEOUT 1.0          /* the root's entries and writable clones */
#define MAX_IO (1024 * 1024)
#define MOUNT_NAME_MAX 255 /* NAME_MAX, reported by statfs */
#define POLL_INTERVAL_MS 1000
#define MAX_THREADS 16 /* request threads */
/* decoders ahead of sequential readers: more than the cores, as they also wait for the disk */
#define PREFETCH_THREADS 4
#define PREFETCH_THREADS_REMOTE 16
/* loaded trees nothing uses: at most this many bytes, and none idle for longer */
#define MAX_TREE_BYTES (256ull * 1024 * 1024)
#define TREE_IDLE_NS (60ll * 1000000000)
/* the mount root's extended attribute telling what trees are loaded */
#define TREES_XATTR "user.pgbakfs.trees"

typedef struct Mount Mount;

/*
 * A file's reads so far, to tell a sequential reader (mount_read.c): where
 * the last few ended (UINT64_MAX: none yet), as several threads serve the
 * kernel's requests of one stream at once, their reads interleaved.
 */
#define STREAM_ENDS 3
typedef struct ReadStream {
	_Atomic uint64_t ends[STREAM_ENDS]; /* read n went to ends[n % STREAM_ENDS] */
	_Atomic unsigned n_reads;
	_Atomic uint64_t prefetched; /* chunks below this index were queued */
} ReadStream;
/* A stream no read has continued yet. */
void read_stream_init(ReadStream *st);

typedef struct MountSnap {
	Mount *m;
	int64_t rowid;
	char name[64];
	char *instance;
	int64_t start_time, stop_time;
	bool listed;     /* in the catalog at the last refresh (m->lock) */
	bool invalidated; /* the kernel was told it is gone (poller only) */
	_Atomic unsigned refs;

	pthread_mutex_t load_lock;
	int load_error; /* a load that failed is not tried again (logged once) */
	bool held;      /* in the catalog, since the first load */
	SnapTree *tree; /* NULL until something inside is used, and after a release */
	unsigned tree_users; /* tree references: requests, open files, a clone */
	_Atomic int64_t tree_used_ns; /* CLOCK_MONOTONIC: when the last user let go */
	_Atomic bool has_tree;        /* tree != NULL, for the trimmer's scan */
	Clone *clone; /* writable: opened once, keeps a tree reference for good */
	uint8_t *pinned; /* writable: chunk lists kept for the clone's lower reads */
	pthread_mutex_t pin_lock;
	ReadStream *streams; /* writable: the clone's lower reads of each file, by inode */

	/* the snapshot directory's own attributes, from its catalog row (meta_lock) */
	bool have_root;
	SnapNode root;
} MountSnap;

struct Mount {
	Repo *repo;
	const MountOptions *o;
	RepoSession *session;
	struct fuse_session *se;
	ChunkCache *cache;
	uint64_t chunk_size;
	struct timespec started;

	pthread_mutex_t meta_lock;
	Catalog *meta;

	/* loaded trees, bounded when unused (trees_lock) */
	pthread_mutex_t trees_lock;
	size_t n_trees;
	uint64_t tree_bytes;
	uint64_t n_tree_loads, n_tree_releases;
	unsigned max_trees;
	uint64_t max_tree_bytes;
	int64_t tree_idle_ns;
	uint64_t data_version;
	bool have_version;

	pthread_rwlock_t lock;
	MountSnap **snaps; /* sorted by rowid */
	size_t n_snaps;
	char **instances; /* append-only: latest-<instance> inodes stay stable */
	size_t n_instances;

	/* open handles: the kernel sends no release for those still open at unmount */
	pthread_mutex_t handles_lock;
	struct Handle *handles;

	pthread_mutex_t bad_lock;
	uint64_t (*bad)[2]; /* (inode, chunk) already reported damaged */
	size_t n_bad;

	pthread_t poller;
	bool poller_running;
	pthread_mutex_t stop_lock;
	pthread_cond_t stop_cond;
	bool stopping;
};

typedef struct Handle {
	MountSnap *snap;
	SnapTree *tree; /* read-only: a tree reference while the handle is open */
	const SnapNode *node;
	SnapChunks chunks;
	bool have_chunks;
	CloneFile *cf;
	ReadStream stream;
	struct Handle *prev, *next; /* Mount.handles */
} Handle;

/* ---- decoding inodes ---- */

typedef enum { KIND_ROOT, KIND_LATEST, KIND_INSTANCE, KIND_SNAP } InoKind;

typedef struct Target {
	InoKind kind;
	MountSnap *ms;  /* KIND_SNAP: referenced */
	SnapTree *tree; /* KIND_SNAP, unless resolved with want_tree false: a tree reference */
	uint32_t local;
	size_t instance;
} Target;

static inline Mount *mount_of(fuse_req_t req) { return fuse_req_userdata(req); }

static inline uint64_t make_ino(const MountSnap *ms, uint32_t local)
{
	return ((uint64_t)ms->rowid << SNAP_SHIFT) | local;
}

static inline bool ro(const Mount *m) { return !m->o->writable; }

static inline double entry_timeout(const Mount *m) { return ro(m) ? IMMUTABLE_TIMEOUT : LIVE_TIMEOUT; }

/* ---- mount_snap.c ---- */

/* A reference to snapshot rowid, or NULL; put it back with mount_snap_put. */
MountSnap *mount_snap_get(Mount *m, int64_t rowid);
void mount_snap_put(MountSnap *ms);
/* Free a snapshot nobody references: close its clone, let go of its hold. */
void mount_snap_free(Mount *m, MountSnap *ms);
/*
 * A reference to the snapshot's tree (loading it when it is not in memory)
 * and, writable, its clone; the caller holds a snapshot reference. Put it
 * back with mount_snap_tree_put.
 */
int mount_snap_tree_get(MountSnap *ms, SnapTree **ret);
void mount_snap_tree_put(MountSnap *ms);
/* The snapshot directory's own attributes, without loading its tree. */
int mount_snap_root(MountSnap *ms, SnapNode *ret);
/* A file's chunk list by content id (snaptree_chunks' loader); -ESTALE for a renumbered snapshot. */
int mount_content_loader(void *userdata, int64_t content, ChunkId **ret, size_t *ret_n);
/* Let go of unused trees over the bounds (and, idle, those unused for the idle time). */
void mount_trees_trim(Mount *m, bool idle);
/* Reload the snapshot list when the catalog changed since the last look. */
int mount_refresh(Mount *m);
/* Tell the kernel about deleted snapshots, free those nobody uses (the poller). */
void mount_retire_gone(Mount *m);
/*
 * Decode ino. A snapshot's inode takes a reference to the snapshot and, with
 * want_tree, to its tree (and clone), loading it if needed; mount_target_put
 * lets go (of a target that failed to resolve too).
 */
int mount_resolve_as(Mount *m, fuse_ino_t ino, Target *t, bool want_tree);
int mount_resolve(Mount *m, fuse_ino_t ino, Target *t);
void mount_target_put(Target *t);
/* The newest listed snapshot, of instance when not NULL; m->lock held. */
const MountSnap *mount_newest_locked(Mount *m, const char *instance);
/* How many instances have listed snapshots; m->lock held. */
size_t mount_live_instances_locked(Mount *m);
/* Target of a root link inode into buf; -ENOENT when it has none right now. */
int mount_link_target(Mount *m, const Target *t, char *buf, size_t len);

/* ---- mount_ro.c ---- */

/* -ENAMETOOLONG when name (or name2, if not NULL) is longer than NAME_MAX. */
int mount_names_check(const char *name, const char *name2);
void mount_attr_clone(Mount *m, const MountSnap *ms, const CloneAttr *a, struct stat *st);
void mount_ro_ops(struct fuse_lowlevel_ops *ops);

/* ---- mount_read.c ---- */

/* Open handles, for the unmount (Mount.handles_lock). */
void mount_handle_track(Mount *m, Handle *h);
void mount_handle_untrack(Mount *m, Handle *h);
/* A clone's read of its lower (snapshot) file: CloneOptions.lower_read. */
int mount_lower_read(void *userdata, uint32_t lower_ino, uint64_t off, size_t len, void *buf);
void mount_read_ops(struct fuse_lowlevel_ops *ops);

/* ---- mount_rw.c ---- */

/* Open the snapshot's clone (under its load_lock, its tree loaded). */
int mount_snap_open_clone(MountSnap *ms);
void mount_rw_ops(struct fuse_lowlevel_ops *ops);
