/*
 * The FUSE low-level filesystem of a mount.
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
 * Trees are loaded on demand and let go (see "trees" below): a SnapTree or
 * SnapNode pointer is only used under a tree reference (Target.tree,
 * Handle.tree), never through MountSnap.tree without load_lock.
 */
#define FUSE_USE_VERSION 312

#include "fs/mount.h"

#include "common/log.h"
#include "common/util.h"
#include "fs/chunkcache.h"
#include "fs/clone.h"
#include "fs/snaptree.h"
#include "store/treedigest.h"

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <time.h>

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
/* loaded trees nothing uses: at most this many bytes, and none idle for longer */
#define MAX_TREE_BYTES (256ull * 1024 * 1024)
#define TREE_IDLE_NS (60ll * 1000000000)
/* the mount root's extended attribute telling what trees are loaded */
#define TREES_XATTR "user.pgbakfs.trees"

typedef struct Mount Mount;

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
	_Atomic uint64_t next_off;  /* where the last read ended */
	_Atomic uint64_t prefetched; /* chunks below this index were queued */
	struct Handle *prev, *next; /* Mount.handles */
} Handle;

static Mount *mount_of(fuse_req_t req) { return fuse_req_userdata(req); }

static void handle_track(Mount *m, Handle *h)
{
	pthread_mutex_lock(&m->handles_lock);
	h->next = m->handles;
	if (h->next)
		h->next->prev = h;
	m->handles = h;
	pthread_mutex_unlock(&m->handles_lock);
}

static void handle_untrack(Mount *m, Handle *h)
{
	pthread_mutex_lock(&m->handles_lock);
	if (h->prev)
		h->prev->next = h->next;
	else
		m->handles = h->next;
	if (h->next)
		h->next->prev = h->prev;
	pthread_mutex_unlock(&m->handles_lock);
}

static uint64_t make_ino(const MountSnap *ms, uint32_t local)
{
	return ((uint64_t)ms->rowid << SNAP_SHIFT) | local;
}

/* ---- snapshot table ---- */

static MountSnap *snap_find_locked(Mount *m, int64_t rowid, size_t *ret_pos)
{
	size_t lo = 0, hi = m->n_snaps;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (m->snaps[mid]->rowid == rowid) {
			if (ret_pos)
				*ret_pos = mid;
			return m->snaps[mid];
		}
		if (m->snaps[mid]->rowid < rowid)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (ret_pos)
		*ret_pos = lo;
	return NULL;
}

/* A reference to snapshot rowid, or NULL; put it back with snap_put. */
static MountSnap *snap_get(Mount *m, int64_t rowid)
{
	pthread_rwlock_rdlock(&m->lock);
	MountSnap *ms = snap_find_locked(m, rowid, NULL);
	if (ms)
		atomic_fetch_add(&ms->refs, 1);
	pthread_rwlock_unlock(&m->lock);
	return ms;
}

static void snap_put(MountSnap *ms)
{
	if (ms)
		atomic_fetch_sub(&ms->refs, 1);
}

static MountSnap *snap_new(Mount *m, const SnapshotInfo *s)
{
	MountSnap *ms = calloc(1, sizeof(*ms));
	if (!ms)
		return NULL;
	ms->m = m;
	ms->rowid = s->rowid;
	snprintf(ms->name, sizeof(ms->name), "%s", s->name);
	ms->instance = strdup(s->instance);
	ms->start_time = s->start_time;
	ms->stop_time = s->stop_time;
	ms->listed = true;
	pthread_mutex_init(&ms->load_lock, NULL);
	pthread_mutex_init(&ms->pin_lock, NULL);
	if (!ms->instance) {
		free(ms);
		return NULL;
	}
	return ms;
}

/* Free a snapshot nobody references: close its clone, let go of its hold. */
static void snap_free(Mount *m, MountSnap *ms)
{
	if (ms->clone)
		clone_close(ms->clone);
	if (ms->held) {
		pthread_mutex_lock(&m->meta_lock);
		int r = catalog_snapshot_release(m->meta, repo_session_id(m->session), ms->rowid);
		pthread_mutex_unlock(&m->meta_lock);
		if (r < 0)
			log_warning("could not release snapshot \"%s\": %s", ms->name, strerror(-r));
	}
	if (ms->tree) {
		pthread_mutex_lock(&m->trees_lock);
		m->n_trees--;
		m->tree_bytes -= snaptree_bytes(ms->tree);
		pthread_mutex_unlock(&m->trees_lock);
		snaptree_free(ms->tree);
	}
	free(ms->pinned);
	free(ms->instance);
	pthread_mutex_destroy(&ms->load_lock);
	pthread_mutex_destroy(&ms->pin_lock);
	free(ms);
}

/*
 * A file's chunk list, by the content id its snapshot's tree recorded. Such
 * an id stays valid while the snapshot is in the catalog under the same
 * rowid: a repository in object storage can lose a snapshot to another
 * machine's delete + gc (holds are per machine), or be renumbered by a
 * rebuilt catalog, and a content id can then be reused. Checked before every
 * load: -ESTALE rather than another file's bytes.
 */
static int content_loader(void *userdata, int64_t content, ChunkId **ret, size_t *ret_n)
{
	MountSnap *ms = userdata;
	Mount *m = ms->m;
	SnapshotInfo s = {0};
	int r = 0;

	pthread_mutex_lock(&m->meta_lock);
	if (repo_is_remote(m->repo)) {
		r = catalog_snapshot_get(m->meta, ms->name, NULL, &s);
		if (r == -ENOENT || (r == 0 && s.rowid != ms->rowid))
			r = -ESTALE;
		snapshot_info_clear(&s);
	}
	if (r == 0)
		r = catalog_content_get(m->meta, content, ret, ret_n);
	pthread_mutex_unlock(&m->meta_lock);
	return r;
}

static int lower_read(void *userdata, uint32_t lower_ino, uint64_t off, size_t len, void *buf);

static int clone_seed(MountSnap *ms, CloneSeedFile **ret, size_t *ret_n)
{
	Mount *m = ms->m;
	uint32_t max = snaptree_max_ino(ms->tree);
	CloneSeedFile *v = calloc(max + 1, sizeof(*v));
	size_t n = 0;
	if (!v)
		return -ENOMEM;
	for (uint32_t i = 1; i <= max; i++) {
		const SnapNode *nd = snaptree_node(ms->tree, i);
		if (!nd)
			continue;
		v[n++] = (CloneSeedFile){.ino = nd->ino, .parent = nd->parent, .name = nd->name,
					 .mode = nd->mode, .uid = m->o->uid, .gid = m->o->gid,
					 .mtime_ns = nd->mtime_ns, .size = nd->size,
					 .target = nd->target};
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

/* Append conf to the clone's postgresql.auto.conf and create recovery.signal. */
static int clone_add_recovery(Clone *c, const char *conf, uid_t uid, gid_t gid)
{
	CloneFile *f = NULL;
	CloneAttr a;
	int r = clone_lookup(c, 1, "postgresql.auto.conf", &a);
	if (r == -ENOENT)
		r = clone_mknod(c, 1, "postgresql.auto.conf", S_IFREG | 0600, uid, gid, &a);
	if (r == 0)
		r = clone_open_file(c, a.ino, O_RDWR, &f);
	if (r == 0) {
		ssize_t n = clone_write(f, a.size, strlen(conf), conf);
		r = n < 0 ? (int)n : n != (ssize_t)strlen(conf) ? -EIO : clone_fsync(f, false);
		int r2 = clone_release(f);
		if (r == 0)
			r = r2;
	}
	if (r == 0)
		r = clone_mknod(c, 1, "recovery.signal", S_IFREG | 0600, uid, gid, &a);
	return r == -EEXIST ? 0 : r;
}

static int snap_open_clone(MountSnap *ms)
{
	Mount *m = ms->m;
	_cleanup_free_ CloneSeedFile *seed = NULL;
	_cleanup_free_ char *dir = NULL;
	size_t n_seed = 0;
	int r;

	ms->pinned = calloc(snaptree_max_ino(ms->tree) + 1, 1);
	if (!ms->pinned)
		return -ENOMEM;
	if (asprintf(&dir, "%s/%s", m->o->scratch, ms->name) < 0)
		return -ENOMEM;
	r = clone_seed(ms, &seed, &n_seed);
	if (r < 0)
		return r;
	CloneOptions co = {.dir = dir, .snapshot = ms->name, .seed = seed, .n_seed = n_seed,
			   .chunk_size = m->chunk_size, .lower_read = lower_read, .userdata = ms};
	r = clone_open(&co, &ms->clone);
	if (r == 0 && m->o->recovery_conf && clone_is_fresh(ms->clone))
		r = clone_add_recovery(ms->clone, m->o->recovery_conf, m->o->uid, m->o->gid);
	if (r < 0)
		log_error("cannot open the clone of snapshot \"%s\" in \"%s\": %s", ms->name, dir,
			  strerror(-r));
	return r;
}

/*
 * A snapshot whose files no longer match its tree digest (a damaged catalog)
 * is not served: EIO, logged once. A snapshot deleted while held is served
 * as it was loaded.
 */
static int snap_verify_tree(Mount *m, MountSnap *ms)
{
	SnapshotInfo s = {0};
	int r = catalog_snapshot_get(m->meta, ms->name, NULL, &s);
	if (r == 0 && s.rowid != ms->rowid)
		r = -ESTALE; /* renumbered (a bucket's catalog, rebuilt): not the files we serve */
	else if (r == 0)
		r = tree_digest_verify(m->meta, &s);
	else if (r == -ENOENT)
		r = 0;
	if (r == -EBADMSG) {
		log_error("snapshot \"%s\": its files in the catalog do not match its tree digest "
			  "(the catalog is damaged); it is not served", ms->name);
		r = -EIO;
	}
	snapshot_info_clear(&s);
	return r;
}

/* ---- trees: loaded when something inside a snapshot is used, let go when not ---- */

static bool trees_over_bound(Mount *m)
{
	pthread_mutex_lock(&m->trees_lock);
	bool over = m->n_trees > m->max_trees || m->tree_bytes > m->max_tree_bytes;
	pthread_mutex_unlock(&m->trees_lock);
	return over;
}

/*
 * Load the tree (under load_lock): the first time, hold the snapshot in the
 * catalog (gc keeps it while we serve it); every time, check the files
 * against the tree digest, so a damaged catalog is refused on each load.
 */
static int snap_load_tree_locked(MountSnap *ms)
{
	Mount *m = ms->m;
	int r = 0;

	pthread_mutex_lock(&m->meta_lock);
	if (!ms->held) {
		r = catalog_snapshot_hold(m->meta, repo_session_id(m->session), ms->rowid);
		ms->held = r == 0;
	}
	if (r == 0)
		r = snap_verify_tree(m, ms);
	if (r == 0)
		r = snaptree_load(m->meta, ms->rowid, &ms->tree);
	pthread_mutex_unlock(&m->meta_lock);
	if (r < 0)
		return r;
	size_t bytes = snaptree_bytes(ms->tree);
	pthread_mutex_lock(&m->trees_lock);
	m->n_trees++;
	m->tree_bytes += bytes;
	m->n_tree_loads++;
	pthread_mutex_unlock(&m->trees_lock);
	atomic_store(&ms->has_tree, true);
	log_debug("snapshot \"%s\": tree loaded (%zu bytes)", ms->name, bytes);
	return 0;
}

static void trees_trim(Mount *m, bool idle);

/*
 * A reference to the snapshot's tree (loading it when it is not in memory)
 * and, writable, its clone; the caller holds a snapshot reference. Put it
 * back with snap_tree_put.
 */
static int snap_tree_get(MountSnap *ms, SnapTree **ret)
{
	Mount *m = ms->m;
	bool loaded = false;
	int r;

	pthread_mutex_lock(&ms->load_lock);
	r = ms->load_error;
	if (r == 0 && !ms->tree) {
		r = snap_load_tree_locked(ms);
		loaded = r == 0;
	}
	if (r == 0 && m->o->writable && !ms->clone) {
		r = snap_open_clone(ms);
		if (r == 0)
			ms->tree_users++; /* the clone's lower reads use the tree from now on */
	}
	if (r < 0 && ms->load_error == 0 && r != -ENOMEM) {
		if (r != -ENOENT)
			log_error("cannot load snapshot \"%s\": %s", ms->name, strerror(-r));
		ms->load_error = r;
	}
	if (r == 0) {
		ms->tree_users++;
		*ret = ms->tree;
	}
	pthread_mutex_unlock(&ms->load_lock);
	if (loaded && trees_over_bound(m))
		trees_trim(m, false);
	return r;
}

static void snap_tree_put(MountSnap *ms)
{
	Mount *m = ms->m;
	pthread_mutex_lock(&ms->load_lock);
	PGBAKFS_CHECK(ms->tree_users > 0);
	bool unused = --ms->tree_users == 0;
	if (unused)
		atomic_store(&ms->tree_used_ns, mono_ns());
	pthread_mutex_unlock(&ms->load_lock);
	if (unused && trees_over_bound(m))
		trees_trim(m, false);
}

static int cmp_used(const void *a, const void *b)
{
	int64_t x = atomic_load(&(*(MountSnap *const *)a)->tree_used_ns);
	int64_t y = atomic_load(&(*(MountSnap *const *)b)->tree_used_ns);
	return x < y ? -1 : x > y;
}

/*
 * Let go of unused trees, least recently used first, while more are loaded
 * than the bounds allow (count, bytes), and (idle: the poller's round) those
 * unused for the idle time. A tree in use (a request in it, an open file, a
 * clone) stays; inode numbers stay valid and the next use loads it again.
 */
static void trees_trim(Mount *m, bool idle)
{
	MountSnap **v = NULL;
	size_t n = 0;

	pthread_rwlock_rdlock(&m->lock);
	v = calloc(m->n_snaps + 1, sizeof(*v));
	for (size_t i = 0; v && i < m->n_snaps; i++)
		if (atomic_load(&m->snaps[i]->has_tree)) {
			v[n] = m->snaps[i];
			atomic_fetch_add(&v[n++]->refs, 1);
		}
	pthread_rwlock_unlock(&m->lock);
	if (!v)
		return;
	qsort(v, n, sizeof(*v), cmp_used);
	int64_t now = mono_ns();
	for (size_t i = 0; i < n; i++) {
		MountSnap *ms = v[i];
		SnapTree *gone = NULL;
		bool over = trees_over_bound(m);
		pthread_mutex_lock(&ms->load_lock);
		if (ms->tree && ms->tree_users == 0 &&
		    (over || (idle && now - atomic_load(&ms->tree_used_ns) >= m->tree_idle_ns))) {
			gone = ms->tree;
			ms->tree = NULL;
			atomic_store(&ms->has_tree, false);
			pthread_mutex_lock(&m->trees_lock);
			m->n_trees--;
			m->tree_bytes -= snaptree_bytes(gone);
			m->n_tree_releases++;
			pthread_mutex_unlock(&m->trees_lock);
		}
		pthread_mutex_unlock(&ms->load_lock);
		if (gone) {
			log_debug("snapshot \"%s\": tree released (%s)", ms->name,
				  over ? "over the bound" : "idle");
			snaptree_free(gone);
		}
		snap_put(ms);
	}
	free(v);
}

/*
 * The snapshot directory's own attributes, without loading its tree: its
 * root row and the count of directories under it (one indexed query, then
 * kept: a snapshot never changes).
 */
static int snap_root(MountSnap *ms, SnapNode *ret)
{
	Mount *m = ms->m;
	int r = 0;

	pthread_mutex_lock(&m->meta_lock);
	if (!ms->have_root) {
		FileRow f;
		uint32_t n_subdirs = 0;
		r = catalog_dir_get(m->meta, ms->rowid, 1, &f, &n_subdirs);
		if (r == -ENOTDIR)
			r = -EIO; /* the load would refuse it: EBADMSG */
		if (r == 0) {
			ms->root = (SnapNode){.ino = 1, .parent = 1, .name = "", .mode = f.mode,
					      .mtime_ns = f.mtime_ns, .size = f.size,
					      .nlink = 2 + n_subdirs};
			ms->have_root = true;
		}
	}
	if (r == 0)
		*ret = ms->root;
	pthread_mutex_unlock(&m->meta_lock);
	return r;
}

/* ---- refreshing the snapshot list (live view) ---- */

typedef struct SnapList {
	SnapshotInfo *v;
	size_t n;
} SnapList;

static int collect_snapshot(const SnapshotInfo *s, void *userdata)
{
	SnapList *l = userdata;
	SnapshotInfo *v = realloc(l->v, (l->n + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	l->v = v;
	v[l->n] = (SnapshotInfo){.rowid = s->rowid, .start_time = s->start_time,
				 .stop_time = s->stop_time, .instance = strdup(s->instance)};
	snprintf(v[l->n].name, sizeof(v[l->n].name), "%s", s->name);
	if (!v[l->n].instance)
		return -ENOMEM;
	l->n++;
	return 0;
}

static void snap_list_clear(SnapList *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i].instance);
	free(l->v);
}

static int instance_index_locked(Mount *m, const char *instance)
{
	for (size_t i = 0; i < m->n_instances; i++)
		if (strcmp(m->instances[i], instance) == 0)
			return (int)i;
	char **v = realloc(m->instances, (m->n_instances + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	m->instances = v;
	v[m->n_instances] = strdup(instance);
	if (!v[m->n_instances])
		return -ENOMEM;
	return (int)m->n_instances++;
}

static int merge_locked(Mount *m, const SnapList *l)
{
	for (size_t i = 0; i < m->n_snaps; i++)
		m->snaps[i]->listed = false;
	for (size_t i = 0; i < l->n; i++) {
		size_t pos;
		MountSnap *ms = snap_find_locked(m, l->v[i].rowid, &pos);
		if (ms && strcmp(ms->name, l->v[i].name) == 0) {
			ms->listed = true;
			continue;
		}
		if (ms)
			continue; /* a reused rowid: wait until the old one is gone */
		if (instance_index_locked(m, l->v[i].instance) < 0)
			return -ENOMEM;
		MountSnap **v = realloc(m->snaps, (m->n_snaps + 1) * sizeof(*v));
		if (!v)
			return -ENOMEM;
		m->snaps = v;
		ms = snap_new(m, &l->v[i]);
		if (!ms)
			return -ENOMEM;
		memmove(&v[pos + 1], &v[pos], (m->n_snaps - pos) * sizeof(*v));
		v[pos] = ms;
		m->n_snaps++;
	}
	return 0;
}

/* Reload the snapshot list when the catalog changed since the last look. */
static int refresh(Mount *m)
{
	SnapList l = {0};
	uint64_t version;
	int r;

	pthread_mutex_lock(&m->meta_lock);
	r = catalog_data_version(m->meta, &version);
	if (r == 0 && m->have_version && version == m->data_version) {
		pthread_mutex_unlock(&m->meta_lock);
		return 0;
	}
	if (r == 0)
		r = catalog_snapshot_foreach(m->meta, NULL, collect_snapshot, &l);
	if (r == 0) {
		m->data_version = version;
		m->have_version = true;
	}
	pthread_mutex_unlock(&m->meta_lock);
	if (r == 0) {
		pthread_rwlock_wrlock(&m->lock);
		r = merge_locked(m, &l);
		pthread_rwlock_unlock(&m->lock);
	}
	snap_list_clear(&l);
	if (r < 0)
		log_warning("cannot refresh the snapshot list: %s", strerror(-r));
	return r;
}

/* Poller: tell the kernel about deleted snapshots, free those nobody uses. */
static void retire_gone(Mount *m)
{
	char (*names)[64] = NULL;
	MountSnap **dead = NULL;
	size_t n_names = 0, n_dead = 0;

	pthread_rwlock_wrlock(&m->lock);
	names = calloc(m->n_snaps + 1, sizeof(*names));
	dead = calloc(m->n_snaps + 1, sizeof(*dead));
	for (size_t i = 0; names && dead && i < m->n_snaps;) {
		MountSnap *ms = m->snaps[i];
		if (ms->listed) {
			i++;
			continue;
		}
		if (!ms->invalidated) {
			memcpy(names[n_names++], ms->name, sizeof(ms->name));
			ms->invalidated = true;
		}
		if (atomic_load(&ms->refs) == 0) {
			dead[n_dead++] = ms;
			memmove(&m->snaps[i], &m->snaps[i + 1], (m->n_snaps - i - 1) * sizeof(ms));
			m->n_snaps--;
			continue;
		}
		i++;
	}
	pthread_rwlock_unlock(&m->lock);
	for (size_t i = 0; i < n_names; i++)
		fuse_lowlevel_notify_inval_entry(m->se, FUSE_ROOT_ID, names[i], strlen(names[i]));
	for (size_t i = 0; i < n_dead; i++) {
		log_debug("snapshot \"%s\" is gone and unused: released", dead[i]->name);
		snap_free(m, dead[i]);
	}
	free(names);
	free(dead);
}

static void raise_readahead(const char *mountpoint);

/*
 * Poller: every POLL_INTERVAL_MS, the live view of the local catalog (no
 * request); every o->poll_interval seconds (object storage), a look at the
 * bucket for a newer catalog generation: the only request an idle mount makes.
 */
static void *poller_main(void *userdata)
{
	Mount *m = userdata;
	long wait_ms = 100; /* the first round comes soon: after the kernel's INIT */
	bool raised = false;
	int64_t interval_ns = (int64_t)(m->o->poll_interval ? m->o->poll_interval
							     : MOUNT_POLL_INTERVAL_DEFAULT) * 1000000000;
	int64_t next_look = mono_ns() + interval_ns;
	int refresh_error = 0;
	pthread_mutex_lock(&m->stop_lock);
	while (!m->stopping) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += wait_ms * 1000000L;
		wait_ms = POLL_INTERVAL_MS;
		ts.tv_sec += ts.tv_nsec / 1000000000L;
		ts.tv_nsec %= 1000000000L;
		pthread_cond_timedwait(&m->stop_cond, &m->stop_lock, &ts);
		if (m->stopping)
			break;
		pthread_mutex_unlock(&m->stop_lock);
		if (!raised) {
			/* the INIT reply sets the readahead: raise it after that */
			raise_readahead(m->o->mountpoint);
			raised = true;
		}
		/* object storage: other machines publish catalog generations */
		if (repo_is_remote(m->repo) && interval_ns > 0 && mono_ns() >= next_look) {
			next_look = mono_ns() + interval_ns;
			int e = repo_refresh(m->repo);
			if (e < 0 && e != refresh_error)
				log_warning("could not refresh the catalog from the bucket: %s", strerror(-e));
			refresh_error = e;
		}
		refresh(m);
		retire_gone(m);
		trees_trim(m, true);
		pthread_mutex_lock(&m->stop_lock);
	}
	pthread_mutex_unlock(&m->stop_lock);
	return NULL;
}

/* ---- attributes ---- */

static void ts_from_ns(struct timespec *ts, int64_t ns)
{
	ts->tv_sec = ns / 1000000000;
	ts->tv_nsec = ns % 1000000000;
	if (ts->tv_nsec < 0) {
		ts->tv_sec--;
		ts->tv_nsec += 1000000000;
	}
}

static void attr_base(Mount *m, struct stat *st, uint64_t ino)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_uid = m->o->uid;
	st->st_gid = m->o->gid;
	st->st_blksize = MAX_IO;
	st->st_atim = st->st_mtim = st->st_ctim = m->started;
}

static void attr_root(Mount *m, struct stat *st)
{
	attr_base(m, st, FUSE_ROOT_ID);
	st->st_mode = S_IFDIR | 0555;
	st->st_nlink = 2;
}

static void attr_link(Mount *m, struct stat *st, uint64_t ino, const char *target)
{
	attr_base(m, st, ino);
	st->st_mode = S_IFLNK | 0777;
	st->st_nlink = 1;
	st->st_size = (off_t)strlen(target);
}

static void attr_node(Mount *m, const MountSnap *ms, const SnapNode *n, struct stat *st)
{
	attr_base(m, st, make_ino(ms, n->ino));
	st->st_mode = n->mode;
	st->st_nlink = n->nlink;
	st->st_size = (off_t)n->size;
	st->st_blocks = (blkcnt_t)((n->size + 511) / 512);
	ts_from_ns(&st->st_mtim, n->mtime_ns);
	st->st_atim = st->st_ctim = st->st_mtim;
}

static void attr_clone(Mount *m, const MountSnap *ms, const CloneAttr *a, struct stat *st)
{
	attr_base(m, st, make_ino(ms, a->ino));
	st->st_mode = a->mode;
	st->st_nlink = a->nlink;
	st->st_uid = a->uid;
	st->st_gid = a->gid;
	st->st_size = (off_t)a->size;
	st->st_blocks = (blkcnt_t)a->blocks;
	ts_from_ns(&st->st_atim, a->atime_ns);
	ts_from_ns(&st->st_mtim, a->mtime_ns);
	ts_from_ns(&st->st_ctim, a->ctime_ns);
}

/* ---- decoding inodes ---- */

typedef enum { KIND_ROOT, KIND_LATEST, KIND_INSTANCE, KIND_SNAP } InoKind;

typedef struct Target {
	InoKind kind;
	MountSnap *ms;  /* KIND_SNAP: referenced */
	SnapTree *tree; /* KIND_SNAP, unless resolved with want_tree false: a tree reference */
	uint32_t local;
	size_t instance;
} Target;

/*
 * Decode ino. A snapshot's inode takes a reference to the snapshot and, with
 * want_tree, to its tree (and clone), loading it if needed.
 */
static int resolve_as(Mount *m, fuse_ino_t ino, Target *t, bool want_tree)
{
	*t = (Target){0};
	if (ino == FUSE_ROOT_ID) {
		t->kind = KIND_ROOT;
		return 0;
	}
	if (ino == LATEST_INO) {
		t->kind = KIND_LATEST;
		return 0;
	}
	if (ino >> SNAP_SHIFT == 0) {
		if (ino < INSTANCE_INO_BASE)
			return -ENOENT;
		t->kind = KIND_INSTANCE;
		t->instance = ino - INSTANCE_INO_BASE;
		return 0;
	}
	t->kind = KIND_SNAP;
	t->local = (uint32_t)(ino & UINT32_MAX);
	t->ms = snap_get(m, (int64_t)(ino >> SNAP_SHIFT));
	if (!t->ms)
		return -ESTALE;
	int r = want_tree ? snap_tree_get(t->ms, &t->tree) : 0;
	if (r < 0) {
		snap_put(t->ms);
		t->ms = NULL;
		return r == -ENOENT ? -ESTALE : r;
	}
	return 0;
}

static int resolve(Mount *m, fuse_ino_t ino, Target *t) { return resolve_as(m, ino, t, true); }

/* The newest listed snapshot, of instance when not NULL (catalog "latest" order). */
static const MountSnap *newest_locked(Mount *m, const char *instance)
{
	const MountSnap *best = NULL;
	for (size_t i = 0; i < m->n_snaps; i++) {
		const MountSnap *ms = m->snaps[i];
		if (!ms->listed || (instance && strcmp(ms->instance, instance) != 0))
			continue;
		if (!best || ms->start_time > best->start_time ||
		    (ms->start_time == best->start_time && ms->rowid > best->rowid))
			best = ms;
	}
	return best;
}

/* How many instances have listed snapshots (latest-<instance> links show when > 1). */
static size_t live_instances_locked(Mount *m)
{
	size_t n = 0;
	for (size_t k = 0; k < m->n_instances; k++)
		if (newest_locked(m, m->instances[k]))
			n++;
	return n;
}

/* Target of a root link inode into buf; -ENOENT when it has none right now. */
static int link_target(Mount *m, const Target *t, char *buf, size_t len)
{
	int r = -ENOENT;
	pthread_rwlock_rdlock(&m->lock);
	const MountSnap *ms = NULL;
	if (t->kind == KIND_LATEST)
		ms = newest_locked(m, NULL);
	else if (t->instance < m->n_instances && live_instances_locked(m) > 1)
		ms = newest_locked(m, m->instances[t->instance]);
	if (ms) {
		snprintf(buf, len, "%s", ms->name);
		r = 0;
	}
	pthread_rwlock_unlock(&m->lock);
	return r;
}

static void target_put(Target *t)
{
	if (t->tree)
		snap_tree_put(t->ms);
	snap_put(t->ms);
	t->tree = NULL;
	t->ms = NULL;
}

static bool ro(const Mount *m) { return !m->o->writable; }

static double entry_timeout(const Mount *m) { return ro(m) ? IMMUTABLE_TIMEOUT : LIVE_TIMEOUT; }

/*
 * A name longer than NAME_MAX names nothing, anywhere in the mount: every
 * request taking one answers ENAMETOOLONG before anything else (as a local
 * filesystem does, whether the name exists or not). Replies when it does;
 * false then.
 */
static bool names_fit(fuse_req_t req, const char *name, const char *name2)
{
	if (strnlen(name, MOUNT_NAME_MAX + 1) <= MOUNT_NAME_MAX &&
	    (!name2 || strnlen(name2, MOUNT_NAME_MAX + 1) <= MOUNT_NAME_MAX))
		return true;
	fuse_reply_err(req, ENAMETOOLONG);
	return false;
}

/* ---- lookup and getattr ---- */

static int lookup_root(Mount *m, const char *name, struct fuse_entry_param *e)
{
	char target[128];
	e->attr_timeout = e->entry_timeout = LIVE_TIMEOUT;
	refresh(m);
	if (strcmp(name, "latest") == 0) {
		Target t = {.kind = KIND_LATEST};
		if (link_target(m, &t, target, sizeof(target)) < 0)
			return -ENOENT;
		e->ino = LATEST_INO;
		attr_link(m, &e->attr, e->ino, target);
		return 0;
	}
	if (strncmp(name, "latest-", 7) == 0) {
		Target t = {.kind = KIND_INSTANCE};
		pthread_rwlock_rdlock(&m->lock);
		t.instance = m->n_instances;
		for (size_t k = 0; k < m->n_instances; k++)
			if (strcmp(m->instances[k], name + 7) == 0)
				t.instance = k;
		pthread_rwlock_unlock(&m->lock);
		if (link_target(m, &t, target, sizeof(target)) < 0)
			return -ENOENT;
		e->ino = INSTANCE_INO_BASE + t.instance;
		attr_link(m, &e->attr, e->ino, target);
		return 0;
	}
	MountSnap *ms = NULL;
	pthread_rwlock_rdlock(&m->lock);
	for (size_t i = 0; i < m->n_snaps && !ms; i++)
		if (m->snaps[i]->listed && strcmp(m->snaps[i]->name, name) == 0) {
			ms = m->snaps[i];
			atomic_fetch_add(&ms->refs, 1);
		}
	pthread_rwlock_unlock(&m->lock);
	if (!ms)
		return -ENOENT;
	/*
	 * The snapshot's root row, not its tree: listing the root loads nothing.
	 * A clone already open answers for itself (its root may have changed).
	 */
	CloneAttr a;
	SnapNode root;
	int r = -ENOENT;
	pthread_mutex_lock(&ms->load_lock);
	Clone *clone = ms->clone; /* once set, kept while the snapshot is referenced */
	pthread_mutex_unlock(&ms->load_lock);
	if (clone) {
		r = clone_getattr(clone, 1, &a);
		if (r == 0)
			attr_clone(m, ms, &a, &e->attr);
	} else {
		r = snap_root(ms, &root);
		if (r == 0)
			attr_node(m, ms, &root, &e->attr);
	}
	e->ino = make_ino(ms, 1);
	snap_put(ms);
	return r;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	Mount *m = mount_of(req);
	struct fuse_entry_param e = {0};
	Target t;
	int r;

	if (!names_fit(req, name, NULL))
		return;
	if (parent == FUSE_ROOT_ID) {
		r = lookup_root(m, name, &e);
		if (r < 0)
			fuse_reply_err(req, -r);
		else
			fuse_reply_entry(req, &e);
		return;
	}
	r = resolve(m, parent, &t);
	if (r == 0 && t.kind != KIND_SNAP)
		r = -ENOTDIR;
	if (r == 0 && t.ms->clone) {
		CloneAttr a;
		r = clone_lookup(t.ms->clone, t.local, name, &a);
		if (r == 0) {
			attr_clone(m, t.ms, &a, &e.attr);
			e.ino = make_ino(t.ms, a.ino);
		}
	} else if (r == 0) {
		const SnapNode *dir = snaptree_node(t.tree, t.local);
		const SnapNode *n = dir && S_ISDIR(dir->mode) ? snaptree_lookup(t.tree, dir, name)
							      : NULL;
		if (!dir)
			r = -ESTALE;
		else if (!S_ISDIR(dir->mode))
			r = -ENOTDIR;
		else if (!n)
			r = -ENOENT;
		else {
			attr_node(m, t.ms, n, &e.attr);
			e.ino = make_ino(t.ms, n->ino);
		}
	}
	target_put(&t);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	e.attr_timeout = e.entry_timeout = entry_timeout(m);
	fuse_reply_entry(req, &e);
}

static int getattr_target(Mount *m, const Target *t, fuse_ino_t ino, struct stat *st)
{
	char target[128];
	switch (t->kind) {
	case KIND_ROOT:
		attr_root(m, st);
		return 0;
	case KIND_LATEST:
	case KIND_INSTANCE:
		if (link_target(m, t, target, sizeof(target)) < 0)
			return -ENOENT;
		attr_link(m, st, ino, target);
		return 0;
	case KIND_SNAP:
		break;
	}
	if (t->ms->clone) {
		CloneAttr a;
		int r = clone_getattr(t->ms->clone, t->local, &a);
		if (r == 0)
			attr_clone(m, t->ms, &a, st);
		return r;
	}
	if (!t->tree) {
		/* a read-only snapshot's directory: from its root row, the tree stays out */
		SnapNode root;
		int r = snap_root(t->ms, &root);
		if (r == 0)
			attr_node(m, t->ms, &root, st);
		return r;
	}
	const SnapNode *n = snaptree_node(t->tree, t->local);
	if (!n)
		return -ESTALE;
	attr_node(m, t->ms, n, st);
	return 0;
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi _unused_)
{
	Mount *m = mount_of(req);
	struct stat st;
	Target t;
	/* stat of MOUNT/<id> (read-only) loads nothing; anything inside needs the tree */
	bool snap_dir = ro(m) && ino >> SNAP_SHIFT != 0 && (ino & UINT32_MAX) == 1;
	int r = resolve_as(m, ino, &t, !snap_dir);
	if (r == 0)
		r = getattr_target(m, &t, ino, &st);
	bool live = t.kind != KIND_SNAP || !ro(m) || t.local == 1;
	target_put(&t);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, &st, live ? LIVE_TIMEOUT : IMMUTABLE_TIMEOUT);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	Mount *m = mount_of(req);
	char buf[128];
	Target t;
	int r = resolve(m, ino, &t);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	if (t.kind == KIND_LATEST || t.kind == KIND_INSTANCE) {
		r = link_target(m, &t, buf, sizeof(buf));
		if (r == 0)
			fuse_reply_readlink(req, buf);
	} else if (t.kind == KIND_SNAP && t.ms->clone) {
		char *s = NULL;
		r = clone_readlink(t.ms->clone, t.local, &s);
		if (r == 0)
			fuse_reply_readlink(req, s);
		free(s);
	} else if (t.kind == KIND_SNAP) {
		const SnapNode *n = snaptree_node(t.tree, t.local);
		r = n && n->target ? 0 : -EINVAL;
		if (r == 0)
			fuse_reply_readlink(req, n->target);
	} else {
		r = -EINVAL;
	}
	target_put(&t);
	if (r < 0)
		fuse_reply_err(req, -r);
}

/* ---- directories ---- */

typedef struct DirBuf {
	fuse_req_t req;
	char *buf;
	size_t size, used;
	bool plus, full;
} DirBuf;

/* Add one entry; false when the reply buffer is full. */
static bool dir_add(DirBuf *d, const char *name, const struct fuse_entry_param *e, off_t next)
{
	size_t left = d->size - d->used, len;
	if (d->plus)
		len = fuse_add_direntry_plus(d->req, d->buf + d->used, left, name, e, next);
	else
		len = fuse_add_direntry(d->req, d->buf + d->used, left, name, &e->attr, next);
	if (len > left) {
		d->full = true;
		return false;
	}
	d->used += len;
	return true;
}

typedef struct RootEntry {
	char name[80];
	struct fuse_entry_param e;
} RootEntry;

/* The root's entries, built under the table lock: ".", "..", snapshots, links. */
static int root_entries(Mount *m, RootEntry **ret, size_t *ret_n)
{
	RootEntry *v;
	size_t n = 0;
	char target[128];

	pthread_rwlock_rdlock(&m->lock);
	v = calloc(m->n_snaps + m->n_instances + 3, sizeof(*v));
	if (!v) {
		pthread_rwlock_unlock(&m->lock);
		return -ENOMEM;
	}
	snprintf(v[n].name, sizeof(v[n].name), ".");
	attr_root(m, &v[n++].e.attr);
	snprintf(v[n].name, sizeof(v[n].name), "..");
	attr_root(m, &v[n++].e.attr);
	for (size_t i = 0; i < m->n_snaps; i++) {
		const MountSnap *ms = m->snaps[i];
		if (!ms->listed)
			continue;
		snprintf(v[n].name, sizeof(v[n].name), "%s", ms->name);
		/* the attributes come from lookup: the kernel asks when it needs them */
		v[n].e.attr.st_mode = S_IFDIR;
		v[n++].e.attr.st_ino = make_ino(ms, 1);
	}
	const MountSnap *latest = newest_locked(m, NULL);
	if (latest) {
		snprintf(v[n].name, sizeof(v[n].name), "latest");
		attr_link(m, &v[n].e.attr, LATEST_INO, latest->name);
		v[n++].e.ino = LATEST_INO;
	}
	bool several = live_instances_locked(m) > 1;
	for (size_t k = 0; several && k < m->n_instances; k++) {
		const MountSnap *ms = newest_locked(m, m->instances[k]);
		if (!ms)
			continue;
		snprintf(target, sizeof(target), "%s", ms->name);
		snprintf(v[n].name, sizeof(v[n].name), "latest-%.64s", m->instances[k]);
		attr_link(m, &v[n].e.attr, INSTANCE_INO_BASE + k, target);
		v[n++].e.ino = INSTANCE_INO_BASE + k;
	}
	pthread_rwlock_unlock(&m->lock);
	*ret = v;
	*ret_n = n;
	return 0;
}

static int readdir_root(Mount *m, DirBuf *d, off_t off)
{
	RootEntry *v;
	size_t n;
	refresh(m);
	int r = root_entries(m, &v, &n);
	if (r < 0)
		return r;
	for (size_t i = (size_t)off; i < n; i++) {
		/* readdirplus entries count as lookups: give snapshots real attributes */
		if (d->plus && S_ISDIR(v[i].e.attr.st_mode) && i >= 2) {
			if (lookup_root(m, v[i].name, &v[i].e) < 0)
				continue;
		} else {
			v[i].e.ino = d->plus && i >= 2 ? v[i].e.attr.st_ino : 0;
			v[i].e.attr_timeout = v[i].e.entry_timeout = LIVE_TIMEOUT;
		}
		if (!dir_add(d, v[i].name, &v[i].e, (off_t)i + 1))
			break;
	}
	free(v);
	return 0;
}

static int readdir_tree(Mount *m, const Target *t, DirBuf *d, off_t off)
{
	const SnapNode *dir = snaptree_node(t->tree, t->local);
	if (!dir)
		return -ESTALE;
	if (!S_ISDIR(dir->mode))
		return -ENOTDIR;
	for (uint64_t i = (uint64_t)off; i < (uint64_t)dir->n_children + 2; i++) {
		struct fuse_entry_param e = {.attr_timeout = IMMUTABLE_TIMEOUT,
					     .entry_timeout = IMMUTABLE_TIMEOUT};
		const char *name = i == 0 ? "." : "..";
		if (i < 2) {
			attr_node(m, t->ms, dir, &e.attr);
		} else {
			const SnapNode *n = snaptree_node(t->tree, dir->children[i - 2]);
			name = n->name;
			attr_node(m, t->ms, n, &e.attr);
			e.ino = make_ino(t->ms, n->ino);
		}
		if (!dir_add(d, name, &e, (off_t)i + 1))
			break;
	}
	return 0;
}

typedef struct CloneDirCtx {
	Mount *m;
	MountSnap *ms;
	DirBuf *d;
} CloneDirCtx;

static int clone_dir_entry(const char *name, const CloneAttr *a, uint64_t next, void *userdata)
{
	CloneDirCtx *ctx = userdata;
	struct fuse_entry_param e = {.attr_timeout = LIVE_TIMEOUT, .entry_timeout = LIVE_TIMEOUT};
	attr_clone(ctx->m, ctx->ms, a, &e.attr);
	e.ino = make_ino(ctx->ms, a->ino);
	/* clone cursors move up by 2: offsets 1 and 2 follow "." and ".." */
	return dir_add(ctx->d, name, &e, (off_t)(next + 2)) ? 0 : 1;
}

static int readdir_clone(Mount *m, const Target *t, DirBuf *d, off_t off)
{
	CloneDirCtx ctx = {m, t->ms, d};
	for (off_t i = off; i < 2; i++) {
		struct fuse_entry_param e = {0};
		CloneAttr a;
		int r = clone_getattr(t->ms->clone, t->local, &a);
		if (r < 0)
			return r;
		if (!S_ISDIR(a.mode))
			return -ENOTDIR;
		attr_clone(m, t->ms, &a, &e.attr);
		if (!dir_add(d, i == 0 ? "." : "..", &e, i + 1))
			return 0;
	}
	int r = clone_readdir(t->ms->clone, t->local, off > 2 ? (uint64_t)off - 2 : 0,
			      clone_dir_entry, &ctx);
	return r < 0 ? r : 0;
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
	Mount *m = mount_of(req);
	DirBuf d = {.req = req, .size = MIN(size, (size_t)MAX_IO), .plus = plus};
	Target t;
	int r = resolve(m, ino, &t);

	d.buf = malloc(d.size);
	if (r == 0 && !d.buf)
		r = -ENOMEM;
	if (r == 0) {
		if (t.kind == KIND_ROOT)
			r = readdir_root(m, &d, off);
		else if (t.kind != KIND_SNAP)
			r = -ENOTDIR;
		else if (t.ms->clone)
			r = readdir_clone(m, &t, &d, off);
		else
			r = readdir_tree(m, &t, &d, off);
	}
	target_put(&t);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_buf(req, d.buf, d.used);
	free(d.buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi _unused_)
{
	do_readdir(req, ino, size, off, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi _unused_)
{
	do_readdir(req, ino, size, off, true);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	Mount *m = mount_of(req);
	/* a snapshot's directories never change: let the kernel keep their listings */
	if (ro(m) && ino != FUSE_ROOT_ID) {
		fi->cache_readdir = 1;
		fi->keep_cache = 1;
	}
	fuse_reply_open(req, fi);
}

/* ---- reading ---- */

static void node_path(const SnapTree *t, const SnapNode *n, char *buf, size_t len)
{
	const SnapNode *chain[64];
	size_t depth = 0, used = 0;
	while (n && n->ino != 1 && depth < ELEMENTSOF(chain)) {
		chain[depth++] = n;
		n = snaptree_node(t, n->parent);
	}
	buf[0] = 0;
	while (depth-- > 0 && used < len)
		used += (size_t)snprintf(buf + used, len - used, "%s%s", used ? "/" : "",
					 chain[depth]->name);
}

/* Report a damaged chunk once per file and chunk. */
static void report_damage(Mount *m, const MountSnap *ms, const SnapTree *tree, const SnapNode *n,
			  uint64_t chunk, int r)
{
	uint64_t ino = make_ino(ms, n->ino);
	bool seen = false;
	char path[PATH_MAX];

	pthread_mutex_lock(&m->bad_lock);
	for (size_t i = 0; i < m->n_bad && !seen; i++)
		seen = m->bad[i][0] == ino && m->bad[i][1] == chunk;
	if (!seen) {
		void *v = realloc(m->bad, (m->n_bad + 1) * sizeof(*m->bad));
		if (v) {
			m->bad = v;
			m->bad[m->n_bad][0] = ino;
			m->bad[m->n_bad++][1] = chunk;
		}
	}
	pthread_mutex_unlock(&m->bad_lock);
	if (seen)
		return;
	node_path(tree, n, path, sizeof(path));
	log_error("snapshot \"%s\": file \"%s\": cannot read %" PRIu64 " bytes at offset %" PRIu64
		  ": %s", ms->name, path, m->chunk_size, chunk * m->chunk_size,
		  r == -EBADMSG ? "damaged data in the repository" : strerror(-r));
}

/* Copy [off, off + len) of a snapshot file (within its size) into buf. */
static int read_chunks(Mount *m, const MountSnap *ms, const SnapTree *tree, const SnapNode *n,
		       const SnapChunks *c, uint64_t off, size_t len, uint8_t *buf)
{
	uint64_t cs = m->chunk_size;
	while (len > 0) {
		uint64_t k = off / cs, in = off % cs;
		size_t take = (size_t)MIN((uint64_t)len, cs - in);
		uint32_t plen = (uint32_t)MIN(cs, n->size - k * cs);
		if (k >= c->n)
			return -EIO; /* the list and the size disagree */
		if (chunk_id_is_hole(&c->ids[k])) {
			memset(buf, 0, take);
		} else {
			CachedChunk *e;
			int r = chunk_cache_get(m->cache, &c->ids[k], plen, &e);
			if (r < 0) {
				report_damage(m, ms, tree, n, k, r);
				return -EIO;
			}
			memcpy(buf, cached_chunk_data(e) + in, take);
			chunk_cache_put(m->cache, e);
		}
		buf += take;
		off += take;
		len -= take;
	}
	return 0;
}

/*
 * A streaming reader (a read continuing exactly where the last one ended, or
 * a large one: the kernel's readahead at work) gets the chunks after its read
 * queued for the prefetch threads, PREFETCH_AHEAD bytes: twice the kernel's
 * readahead as raise_readahead sets it, so that the prefetch threads, not the
 * request threads, decompress and verify the chunks of the requests the kernel
 * sends next (a request finding its chunk loading waits for it; one finding
 * it neither cached nor loading loads it itself). A small read elsewhere
 * (PostgreSQL fetching one page) prefetches nothing, so it decompresses only
 * the chunk it needs.
 */
#define STREAMING_READ (128 * 1024)
#define PREFETCH_AHEAD (8 * 1024 * 1024)

static void prefetch_after(Mount *m, Handle *h, uint64_t off, size_t len)
{
	uint64_t cs = m->chunk_size, last = h->chunks.n;
	uint64_t expected = atomic_exchange(&h->next_off, off + len);
	if (off != expected && len < STREAMING_READ)
		return;
	uint64_t window = PREFETCH_AHEAD / cs;
	/*
	 * From the request's own first chunk: the first request of a stream (or
	 * one after a jump) has its chunks decoded by the prefetch threads in
	 * parallel while this thread waits for them in order.
	 */
	uint64_t first = off / cs, end = (off + len + cs - 1) / cs;
	uint64_t from = first, to = MIN(last, end + MAX(window, 2));
	uint64_t done = atomic_load(&h->prefetched);
	if (done > from && done <= to)
		from = done;
	if (from >= to)
		return;
	atomic_store(&h->prefetched, to);
	/* located in batches: one catalog transaction for up to PREFETCH_BATCH chunks */
	for (uint64_t k = from; k < to; k += PREFETCH_BATCH) {
		uint32_t plens[PREFETCH_BATCH];
		size_t n = (size_t)MIN((uint64_t)PREFETCH_BATCH, to - k);
		for (size_t i = 0; i < n; i++)
			plens[i] = (uint32_t)MIN(cs, h->node->size - (k + i) * cs);
		chunk_cache_prefetch_many(m->cache, &h->chunks.ids[k], plens, n);
	}
}

static int lower_read(void *userdata, uint32_t lower_ino, uint64_t off, size_t len, void *buf)
{
	MountSnap *ms = userdata;
	/* the clone holds a reference to the tree: it stays while the clone is open */
	SnapTree *tree = ms->tree;
	const SnapNode *n = snaptree_node(tree, lower_ino);
	SnapChunks c;
	int r;

	if (!n || !S_ISREG(n->mode) || off + len > n->size)
		return -EIO;
	/* the clone reads its lower files often: keep their chunk lists */
	r = snaptree_chunks(tree, content_loader, ms, n, &c);
	if (r < 0)
		return r;
	pthread_mutex_lock(&ms->pin_lock);
	bool pinned = ms->pinned[lower_ino];
	ms->pinned[lower_ino] = 1;
	pthread_mutex_unlock(&ms->pin_lock);
	if (pinned)
		snaptree_chunks_put(tree, n);
	return read_chunks(ms->m, ms, tree, n, &c, off, len, buf);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	Mount *m = mount_of(req);
	Handle *h = NULL;
	Target t;
	int r = resolve(m, ino, &t);

	if (r == 0 && t.kind != KIND_SNAP)
		r = -EISDIR;
	if (r == 0 && !(h = calloc(1, sizeof(*h))))
		r = -ENOMEM;
	if (r == 0 && t.ms->clone) {
		r = clone_open_file(t.ms->clone, t.local, fi->flags, &h->cf);
	} else if (r == 0) {
		h->node = snaptree_node(t.tree, t.local);
		if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
			r = -EROFS;
		else if (!h->node)
			r = -ESTALE;
		else if (!S_ISREG(h->node->mode))
			r = -EISDIR;
		else
			r = snaptree_chunks(t.tree, content_loader, t.ms, h->node, &h->chunks);
		h->have_chunks = r == 0;
		atomic_init(&h->next_off, UINT64_MAX); /* a first read continues nothing */
		/* immutable: what the kernel cached from an earlier open is still right */
		fi->keep_cache = 1;
	}
	if (r < 0) {
		target_put(&t);
		free(h);
		fuse_reply_err(req, -r);
		return;
	}
	/* the handle keeps the references: a deleted snapshot stays readable, its tree loaded */
	h->snap = t.ms;
	h->tree = t.tree;
	fi->fh = (uint64_t)(uintptr_t)h;
	handle_track(m, h);
	if (fuse_reply_open(req, fi) == -ENOENT) {
		/* the opener was interrupted: nobody will release this handle */
		handle_untrack(m, h);
		if (h->cf)
			clone_release(h->cf);
		if (h->have_chunks)
			snaptree_chunks_put(t.tree, h->node);
		free(h);
		target_put(&t);
	}
}

/*
 * A read of a snapshot file is answered from the chunk cache itself: the
 * reply's iovecs point into the cache entries (and at zeros for holes), which
 * stay pinned until fuse_reply_iov has handed them to the kernel, so the only
 * copy is the kernel's into its page cache. Not fuse_reply_data: libfuse
 * (3.14, without splice) copies a bufvec of more than one memory buffer into
 * a fresh allocation before writing it, which is what this replaces (a 1 MiB
 * malloc, its page faults and a memcpy per request). Every entry was verified
 * when it was loaded (chunk_cache_get serves nothing else).
 */
#define MAX_PIECES (MAX_IO / PGBAKFS_CHUNK_SIZE_MIN + 2)

/* never written: the zeros of holes, up to one request */
static uint8_t zeros[MAX_IO];

typedef struct Pieces {
	struct iovec iov[MAX_PIECES];
	CachedChunk *pinned[MAX_PIECES];
	size_t n_iov, n_pinned;
} Pieces;

static void pieces_put(Mount *m, Pieces *p)
{
	for (size_t i = 0; i < p->n_pinned; i++)
		chunk_cache_put(m->cache, p->pinned[i]);
	p->n_pinned = 0;
}

/* Pin the chunks of [off, off + len) of an open snapshot file and point p's iovecs at them. */
static int pin_chunks(Mount *m, const Handle *h, uint64_t off, size_t len, Pieces *p)
{
	uint64_t cs = m->chunk_size;
	const SnapNode *n = h->node;
	p->n_iov = p->n_pinned = 0;
	while (len > 0) {
		uint64_t k = off / cs, in = off % cs;
		size_t take = (size_t)MIN((uint64_t)len, cs - in);
		uint32_t plen = (uint32_t)MIN(cs, n->size - k * cs);
		const uint8_t *data = zeros;
		if (k >= h->chunks.n || p->n_iov == MAX_PIECES)
			return -EIO; /* the list and the size disagree */
		if (!chunk_id_is_hole(&h->chunks.ids[k])) {
			CachedChunk *e;
			int r = chunk_cache_get(m->cache, &h->chunks.ids[k], plen, &e);
			if (r < 0) {
				report_damage(m, h->snap, h->tree, n, k, r);
				return -EIO;
			}
			p->pinned[p->n_pinned++] = e;
			data = cached_chunk_data(e) + in;
		}
		p->iov[p->n_iov++] = (struct iovec){.iov_base = (void *)data, .iov_len = take};
		off += take;
		len -= take;
	}
	return 0;
}

static void read_snapshot_file(fuse_req_t req, Mount *m, Handle *h, size_t size, uint64_t off)
{
	uint64_t fsize = h->node->size;
	size_t n = off >= fsize ? 0 : (size_t)MIN((uint64_t)size, fsize - off);
	Pieces p;
	int r;

	if (n == 0) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	/* first: the prefetch threads decode what comes next while this thread serves this */
	prefetch_after(m, h, off, n);
	r = pin_chunks(m, h, off, n, &p);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_iov(req, p.iov, (int)p.n_iov);
	pieces_put(m, &p);
}

static void op_read(fuse_req_t req, fuse_ino_t ino _unused_, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	Mount *m = mount_of(req);
	Handle *h = (Handle *)(uintptr_t)fi->fh;
	_cleanup_free_ uint8_t *buf = NULL;
	ssize_t n;

	size = MIN(size, (size_t)MAX_IO);
	if (!h->cf) {
		read_snapshot_file(req, m, h, size, (uint64_t)off);
		return;
	}
	buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = clone_read(h->cf, (uint64_t)off, size, buf);
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		fuse_reply_buf(req, (const char *)buf, (size_t)n);
}

static void op_release(fuse_req_t req, fuse_ino_t ino _unused_, struct fuse_file_info *fi)
{
	Handle *h = (Handle *)(uintptr_t)fi->fh;
	int r = 0;
	handle_untrack(mount_of(req), h);
	if (h->cf)
		r = clone_release(h->cf);
	if (h->have_chunks)
		snaptree_chunks_put(h->tree, h->node);
	if (h->tree)
		snap_tree_put(h->snap);
	snap_put(h->snap);
	free(h);
	fuse_reply_err(req, r < 0 ? -r : 0);
}

static void op_lseek(fuse_req_t req, fuse_ino_t ino _unused_, off_t off, int whence,
		     struct fuse_file_info *fi)
{
	Mount *m = mount_of(req);
	Handle *h = (Handle *)(uintptr_t)fi->fh;
	if (h->cf) {
		int64_t r = clone_lseek(h->cf, off, whence);
		if (r < 0)
			fuse_reply_err(req, (int)-r);
		else
			fuse_reply_lseek(req, (off_t)r);
		return;
	}
	uint64_t size = h->node->size, cs = m->chunk_size;
	if (whence != SEEK_DATA && whence != SEEK_HOLE) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (off < 0 || (uint64_t)off >= size) {
		fuse_reply_err(req, ENXIO);
		return;
	}
	uint64_t k = (uint64_t)off / cs;
	bool want_hole = whence == SEEK_HOLE;
	while (k < h->chunks.n && chunk_id_is_hole(&h->chunks.ids[k]) != want_hole)
		k++;
	if (k >= h->chunks.n) {
		/* no data after off: ENXIO; no hole: the end of the file is one */
		if (!want_hole)
			fuse_reply_err(req, ENXIO);
		else
			fuse_reply_lseek(req, (off_t)size);
		return;
	}
	fuse_reply_lseek(req, (off_t)MAX((uint64_t)off, k * cs));
}

/* ---- writable clones ---- */

/* The clone and inode a modifying request works on; EROFS without one. */
static int writable_target(Mount *m, fuse_ino_t ino, Target *t)
{
	if (ro(m))
		return -EROFS;
	int r = resolve(m, ino, t);
	if (r == 0 && (t->kind != KIND_SNAP || !t->ms->clone)) {
		target_put(t);
		return t->kind == KIND_SNAP ? -EROFS : -EPERM;
	}
	return r;
}

/* Start a modifying request on ino's clone: false (the error replied) without one. */
static bool clone_op_begin(fuse_req_t req, fuse_ino_t ino, Target *t)
{
	int r = writable_target(mount_of(req), ino, t);
	if (r < 0)
		fuse_reply_err(req, -r);
	return r == 0;
}

static void reply_clone_entry(fuse_req_t req, Mount *m, Target *t, int r, const CloneAttr *a)
{
	if (r == 0) {
		struct fuse_entry_param e = {.attr_timeout = LIVE_TIMEOUT,
					     .entry_timeout = LIVE_TIMEOUT,
					     .ino = make_ino(t->ms, a->ino)};
		attr_clone(m, t->ms, a, &e.attr);
		fuse_reply_entry(req, &e);
	} else {
		fuse_reply_err(req, -r);
	}
	target_put(t);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		     dev_t rdev _unused_)
{
	Mount *m = mount_of(req);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	CloneAttr a;
	Target t;
	if (!names_fit(req, name, NULL) || !clone_op_begin(req, parent, &t))
		return;
	int r = clone_mknod(t.ms->clone, t.local, name, mode, ctx->uid, ctx->gid, &a);
	reply_clone_entry(req, m, &t, r, &a);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	Mount *m = mount_of(req);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	CloneAttr a;
	Target t;
	if (!names_fit(req, name, NULL) || !clone_op_begin(req, parent, &t))
		return;
	int r = clone_mkdir(t.ms->clone, t.local, name, mode, ctx->uid, ctx->gid, &a);
	reply_clone_entry(req, m, &t, r, &a);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	Mount *m = mount_of(req);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	CloneAttr a;
	Target t;
	if (!names_fit(req, name, NULL) || !clone_op_begin(req, parent, &t))
		return;
	int r = clone_symlink(t.ms->clone, t.local, name, link, ctx->uid, ctx->gid, &a);
	reply_clone_entry(req, m, &t, r, &a);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	Mount *m = mount_of(req);
	CloneAttr a;
	Target t;
	if (!names_fit(req, newname, NULL) || !clone_op_begin(req, newparent, &t))
		return;
	int r;
	if (ino >> SNAP_SHIFT != (uint64_t)t.ms->rowid)
		r = -EXDEV;
	else
		r = clone_link(t.ms->clone, (uint32_t)(ino & UINT32_MAX), t.local, newname, &a);
	reply_clone_entry(req, m, &t, r, &a);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	Target t;
	if (!names_fit(req, name, NULL))
		return;
	int r = writable_target(mount_of(req), parent, &t);
	if (r == 0) {
		r = clone_unlink(t.ms->clone, t.local, name);
		target_put(&t);
	}
	fuse_reply_err(req, r < 0 ? -r : 0);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	Target t;
	if (!names_fit(req, name, NULL))
		return;
	int r = writable_target(mount_of(req), parent, &t);
	if (r == 0) {
		r = clone_rmdir(t.ms->clone, t.local, name);
		target_put(&t);
	}
	fuse_reply_err(req, r < 0 ? -r : 0);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	Target t;
	if (!names_fit(req, name, newname))
		return;
	int r = writable_target(mount_of(req), parent, &t);
	if (r == 0) {
		if (newparent >> SNAP_SHIFT != (uint64_t)t.ms->rowid)
			r = -EXDEV;
		else
			r = clone_rename(t.ms->clone, t.local, name,
					 (uint32_t)(newparent & UINT32_MAX), newname, flags);
		target_put(&t);
	}
	fuse_reply_err(req, r < 0 ? -r : 0);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi _unused_)
{
	Mount *m = mount_of(req);
	CloneAttr a = {.mode = attr->st_mode, .uid = attr->st_uid, .gid = attr->st_gid,
		       .size = (uint64_t)attr->st_size};
	unsigned mask = 0;
	struct timespec now;
	struct stat st;
	Target t;
	if (!clone_op_begin(req, ino, &t))
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	int64_t now_ns = timespec_to_ns(&now);
	mask |= to_set & FUSE_SET_ATTR_MODE ? CLONE_SET_MODE : 0;
	mask |= to_set & FUSE_SET_ATTR_UID ? CLONE_SET_UID : 0;
	mask |= to_set & FUSE_SET_ATTR_GID ? CLONE_SET_GID : 0;
	mask |= to_set & FUSE_SET_ATTR_SIZE ? CLONE_SET_SIZE : 0;
	if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW)) {
		mask |= CLONE_SET_ATIME;
		a.atime_ns = to_set & FUSE_SET_ATTR_ATIME_NOW
				     ? now_ns
				     : timespec_to_ns(&attr->st_atim);
	}
	if (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)) {
		mask |= CLONE_SET_MTIME;
		a.mtime_ns = to_set & FUSE_SET_ATTR_MTIME_NOW
				     ? now_ns
				     : timespec_to_ns(&attr->st_mtim);
	}
	CloneAttr out;
	int r = clone_setattr(t.ms->clone, t.local, mask, &a, &out);
	if (r == 0)
		attr_clone(m, t.ms, &out, &st);
	target_put(&t);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, &st, LIVE_TIMEOUT);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	Mount *m = mount_of(req);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct fuse_entry_param e = {.attr_timeout = LIVE_TIMEOUT, .entry_timeout = LIVE_TIMEOUT};
	Handle *h = NULL;
	CloneAttr a;
	Target t;
	if (!names_fit(req, name, NULL) || !clone_op_begin(req, parent, &t))
		return;
	int r = clone_mknod(t.ms->clone, t.local, name, (mode & ~S_IFMT) | S_IFREG, ctx->uid,
			ctx->gid, &a);
	if (r == -EEXIST && !(fi->flags & O_EXCL))
		r = clone_lookup(t.ms->clone, t.local, name, &a);
	if (r == 0 && !(h = calloc(1, sizeof(*h))))
		r = -ENOMEM;
	if (r == 0)
		r = clone_open_file(t.ms->clone, a.ino, fi->flags, &h->cf);
	if (r == 0)
		r = clone_getattr(t.ms->clone, a.ino, &a);
	if (r < 0) {
		if (h && h->cf)
			clone_release(h->cf);
		free(h);
		target_put(&t);
		fuse_reply_err(req, -r);
		return;
	}
	h->snap = t.ms;
	h->tree = t.tree;
	attr_clone(m, t.ms, &a, &e.attr);
	e.ino = make_ino(t.ms, a.ino);
	fi->fh = (uint64_t)(uintptr_t)h;
	handle_track(m, h);
	if (fuse_reply_create(req, &e, fi) == -ENOENT) {
		handle_untrack(m, h);
		clone_release(h->cf);
		free(h);
		target_put(&t);
	}
}

static void op_write(fuse_req_t req, fuse_ino_t ino _unused_, const char *buf, size_t size,
		     off_t off, struct fuse_file_info *fi)
{
	Handle *h = (Handle *)(uintptr_t)fi->fh;
	if (!h->cf) {
		fuse_reply_err(req, EROFS);
		return;
	}
	ssize_t n = clone_write(h->cf, (uint64_t)off, size, buf);
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		fuse_reply_write(req, (size_t)n);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino _unused_, int datasync,
		     struct fuse_file_info *fi)
{
	Handle *h = (Handle *)(uintptr_t)fi->fh;
	int r = h->cf ? clone_fsync(h->cf, datasync != 0) : 0;
	fuse_reply_err(req, r < 0 ? -r : 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync _unused_,
			struct fuse_file_info *fi _unused_)
{
	Mount *m = mount_of(req);
	Target t;
	int r = ro(m) ? -ENOENT : resolve(m, ino, &t);
	if (r == 0) {
		/* the directory's own entries only: other files' flushes are theirs to report */
		r = t.kind == KIND_SNAP && t.ms->clone ? clone_fsyncdir(t.ms->clone, t.local) : 0;
		target_put(&t);
	}
	fuse_reply_err(req, r < 0 && r != -ENOENT ? -r : 0);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino _unused_, struct fuse_file_info *fi _unused_)
{
	fuse_reply_err(req, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	Mount *m = mount_of(req);
	struct statvfs sv;
	Target t;
	int r = -1;
	if (!ro(m) && resolve(m, ino, &t) == 0) {
		r = t.kind == KIND_SNAP && t.ms->clone ? clone_statfs(t.ms->clone, &sv) : -1;
		target_put(&t);
	}
	if (r < 0 && statvfs(repo_workdir(m->repo), &sv) < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	if (ro(m)) {
		/* nothing can be written here */
		sv.f_bfree = sv.f_bavail = 0;
		sv.f_ffree = sv.f_favail = 0;
	}
	sv.f_namemax = MOUNT_NAME_MAX;
	fuse_reply_statfs(req, &sv);
}

/*
 * The mount root's user.pgbakfs.trees: the snapshot trees in memory, for an
 * operator (getfattr -n user.pgbakfs.trees MOUNTPOINT) and the tests.
 */
static void trees_xattr(Mount *m, char *buf, size_t len)
{
	pthread_mutex_lock(&m->trees_lock);
	snprintf(buf, len,
		 "loaded %zu\nbytes %" PRIu64 "\nloads %" PRIu64 "\nreleases %" PRIu64
		 "\nmax_trees %u\nmax_bytes %" PRIu64 "\nidle_seconds %" PRId64 "\n",
		 m->n_trees, m->tree_bytes, m->n_tree_loads, m->n_tree_releases, m->max_trees,
		 m->max_tree_bytes, m->tree_idle_ns / 1000000000);
	pthread_mutex_unlock(&m->trees_lock);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	char buf[256];
	if (ino != FUSE_ROOT_ID || strcmp(name, TREES_XATTR) != 0) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	trees_xattr(mount_of(req), buf, sizeof(buf));
	if (size == 0)
		fuse_reply_xattr(req, strlen(buf));
	else if (size < strlen(buf))
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, buf, strlen(buf));
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	static const char names[] = TREES_XATTR; /* with its NUL */
	size_t n = ino == FUSE_ROOT_ID ? sizeof(names) : 0;
	if (size == 0)
		fuse_reply_xattr(req, n);
	else if (size < n)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, names, n);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino _unused_, const char *name _unused_,
			const char *value _unused_, size_t size _unused_, int flags _unused_)
{
	fuse_reply_err(req, ro(mount_of(req)) ? EROFS : ENOTSUP);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino _unused_, const char *name _unused_)
{
	fuse_reply_err(req, ro(mount_of(req)) ? EROFS : ENODATA);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	Mount *m = userdata;
	conn->max_write = MAX_IO;
	conn->max_read = MAX_IO; /* must match the max_read mount option */
	conn->max_background = 64;
	conn->congestion_threshold = 48;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	if (conn->capable & FUSE_CAP_READDIRPLUS) {
		conn->want |= FUSE_CAP_READDIRPLUS;
		conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
	}
	if (!ro(m) && (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC))
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE; /* fsync must reach the clone */
}

static const struct fuse_lowlevel_ops mount_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.readlink = op_readlink,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.symlink = op_symlink,
	.rename = op_rename,
	.link = op_link,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	.flush = op_flush,
	.release = op_release,
	.fsync = op_fsync,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.fsyncdir = op_fsyncdir,
	.statfs = op_statfs,
	.setxattr = op_setxattr,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.removexattr = op_removexattr,
	.create = op_create,
	.lseek = op_lseek,
};

/* ---- the session ---- */

/*
 * Raise the kernel's readahead for this mount (root only), so sequential
 * reads arrive as large requests. The device number comes from mountinfo:
 * a stat() of the mount point would wait for this very process to answer.
 */
static void raise_readahead(const char *mountpoint)
{
	_cleanup_free_ char *line = NULL;
	size_t cap = 0;
	unsigned maj = 0, min = 0;
	bool found = false;
	FILE *f;

	if (geteuid() != 0 || !(f = fopen("/proc/self/mountinfo", "re")))
		return;
	while (!found && getline(&line, &cap, f) > 0) {
		char mp[PATH_MAX];
		/* "ID PARENT MAJ:MIN ROOT MOUNTPOINT ..." (no escapes in our paths) */
		found = sscanf(line, "%*u %*u %u:%u %*s %4095s", &maj, &min, mp) == 3 &&
			strcmp(mp, mountpoint) == 0;
	}
	fclose(f);
	if (!found)
		return;
	char path[128];
	snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", maj, min);
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd >= 0 && write(fd, "4096", 4) < 0)
		log_debug("cannot raise readahead in \"%s\": %m", path);
}

static int mount_args(const MountOptions *o, struct fuse_args *args)
{
	char opts[256];
	snprintf(opts, sizeof(opts), "fsname=pgbakfs,subtype=pgbakfs,default_permissions,max_read=%d,%s%s",
		 MAX_IO,
		 o->writable ? "rw" : "ro", o->allow_other ? ",allow_other" : "");
	if (fuse_opt_add_arg(args, "pgbakfs") < 0 || fuse_opt_add_arg(args, "-o") < 0 ||
	    fuse_opt_add_arg(args, opts) < 0)
		return -ENOMEM;
	return 0;
}

static void log_cache_stats(Mount *m)
{
	ChunkCacheStats st;
	if (!m->cache)
		return;
	chunk_cache_stats(m->cache, &st);
	log_debug("chunk cache: %" PRIu64 " hits, %" PRIu64 " misses, %" PRIu64 " prefetched, %" PRIu64
		  " evicted, %" PRIu64 " located in batches, %" PRIu64 " relocated",
		  st.hits, st.misses, st.prefetched, st.evicted, st.located, st.relocated);
}

static void mount_clear(Mount *m)
{
	log_cache_stats(m);
	/* still open at unmount: their chunk lists and clone files go with their snapshots */
	while (m->handles) {
		Handle *h = m->handles;
		m->handles = h->next;
		free(h);
	}
	for (size_t i = 0; i < m->n_snaps; i++)
		snap_free(m, m->snaps[i]);
	free(m->snaps);
	for (size_t i = 0; i < m->n_instances; i++)
		free(m->instances[i]);
	free(m->instances);
	free(m->bad);
	chunk_cache_free(m->cache);
	catalog_free(m->meta);
	repo_session_end(m->repo, m->session);
	pthread_rwlock_destroy(&m->lock);
	pthread_mutex_destroy(&m->meta_lock);
	pthread_mutex_destroy(&m->trees_lock);
	pthread_mutex_destroy(&m->bad_lock);
	pthread_mutex_destroy(&m->handles_lock);
	pthread_mutex_destroy(&m->stop_lock);
	pthread_cond_destroy(&m->stop_cond);
}

static int mount_prepare(Mount *m, Repo *repo, const MountOptions *o)
{
	*m = (Mount){.repo = repo, .o = o, .chunk_size = repo_config(repo)->chunk_size,
		     .max_trees = o->max_trees, .max_tree_bytes = MAX_TREE_BYTES,
		     .tree_idle_ns = TREE_IDLE_NS};
	clock_gettime(CLOCK_REALTIME, &m->started);
	pthread_rwlock_init(&m->lock, NULL);
	pthread_mutex_init(&m->meta_lock, NULL);
	pthread_mutex_init(&m->trees_lock, NULL);
	pthread_mutex_init(&m->bad_lock, NULL);
	pthread_mutex_init(&m->handles_lock, NULL);
	pthread_mutex_init(&m->stop_lock, NULL);
	pthread_cond_init(&m->stop_cond, NULL);
	int r = repo_session_begin(repo, "mount", &m->session);
	if (r == 0)
		r = repo_catalog_open(repo, &m->meta);
	if (r == 0)
		r = chunk_cache_new(repo, o->cache_size, PREFETCH_THREADS, &m->cache);
	if (r == 0)
		r = refresh(m);
	return r;
}

static int serve(Mount *m)
{
	struct fuse_loop_config *cfg = fuse_loop_cfg_create();
	int r;
	if (!cfg)
		return -ENOMEM;
	fuse_loop_cfg_set_clone_fd(cfg, 1);
	/*
	 * Threads are kept once started: one leaving when more than the idle
	 * count waited took its 1 MiB request buffer with it, and the next one
	 * malloc'd and faulted in a new one (sysmalloc was 3-5% of the daemon's
	 * CPU on a sequential read). At most 16 MiB of buffers.
	 */
	fuse_loop_cfg_set_max_threads(cfg, MAX_THREADS);
	fuse_loop_cfg_set_idle_threads(cfg, MAX_THREADS);
	r = -pthread_create(&m->poller, NULL, poller_main, m);
	if (r == 0) {
		m->poller_running = true;
		r = fuse_session_loop_mt(m->se, cfg);
		r = r < 0 ? r : 0; /* > 0: ended by a signal, a clean exit */
	}
	pthread_mutex_lock(&m->stop_lock);
	m->stopping = true;
	pthread_cond_broadcast(&m->stop_cond);
	pthread_mutex_unlock(&m->stop_lock);
	if (m->poller_running)
		pthread_join(m->poller, NULL);
	fuse_loop_cfg_destroy(cfg);
	return r;
}

int mount_run(Repo *repo, const MountOptions *o)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	Mount m;
	int r = mount_prepare(&m, repo, o);

	if (r == 0)
		r = mount_args(o, &args);
	if (r == 0) {
		m.se = fuse_session_new(&args, &mount_ops, sizeof(mount_ops), &m);
		if (!m.se)
			r = -EINVAL;
	}
	if (r == 0 && fuse_set_signal_handlers(m.se) < 0)
		r = -EIO;
	if (r == 0 && fuse_session_mount(m.se, o->mountpoint) != 0) {
		fuse_remove_signal_handlers(m.se);
		r = -EPERM;
	}
	if (r == 0) {
		if (o->ready)
			o->ready(o->userdata);
		r = serve(&m);
		fuse_session_unmount(m.se);
		fuse_remove_signal_handlers(m.se);
	}
	if (m.se)
		fuse_session_destroy(m.se);
	fuse_opt_free_args(&args);
	mount_clear(&m);
	return r;
}
