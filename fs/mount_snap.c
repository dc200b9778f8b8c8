/*
 * The mount's snapshots: the table (refreshed from the catalog: the live
 * view), each snapshot's tree, loaded when something inside is used and let
 * go when not, and the decoding of inode numbers into snapshot and tree
 * references. Locks: see fs/mount_int.h.
 */
#define FUSE_USE_VERSION 312

#include "fs/mount_int.h"

#include "common/log.h"
#include "common/util.h"
#include "store/treedigest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* A reference to snapshot rowid, or NULL; put it back with mount_snap_put. */
MountSnap *mount_snap_get(Mount *m, int64_t rowid)
{
	pthread_rwlock_rdlock(&m->lock);
	MountSnap *ms = snap_find_locked(m, rowid, NULL);
	if (ms)
		atomic_fetch_add(&ms->refs, 1);
	pthread_rwlock_unlock(&m->lock);
	return ms;
}

void mount_snap_put(MountSnap *ms)
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
void mount_snap_free(Mount *m, MountSnap *ms)
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
	free(ms->streams);
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
int mount_content_loader(void *userdata, int64_t content, ChunkId **ret, size_t *ret_n)
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


/*
 * A reference to the snapshot's tree (loading it when it is not in memory)
 * and, writable, its clone; the caller holds a snapshot reference. Put it
 * back with mount_snap_tree_put.
 */
int mount_snap_tree_get(MountSnap *ms, SnapTree **ret)
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
		r = mount_snap_open_clone(ms);
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
		mount_trees_trim(m, false);
	return r;
}

void mount_snap_tree_put(MountSnap *ms)
{
	Mount *m = ms->m;
	pthread_mutex_lock(&ms->load_lock);
	PGBAKFS_CHECK(ms->tree_users > 0);
	bool unused = --ms->tree_users == 0;
	if (unused)
		atomic_store(&ms->tree_used_ns, mono_ns());
	pthread_mutex_unlock(&ms->load_lock);
	if (unused && trees_over_bound(m))
		mount_trees_trim(m, false);
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
void mount_trees_trim(Mount *m, bool idle)
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
		mount_snap_put(ms);
	}
	free(v);
}

/*
 * The snapshot directory's own attributes, without loading its tree: its
 * root row and the count of directories under it (one indexed query, then
 * kept: a snapshot never changes).
 */
int mount_snap_root(MountSnap *ms, SnapNode *ret)
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
int mount_refresh(Mount *m)
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
		log_warning("cannot mount_refresh the snapshot list: %s", strerror(-r));
	return r;
}

/* Poller: tell the kernel about deleted snapshots, free those nobody uses. */
void mount_retire_gone(Mount *m)
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
		mount_snap_free(m, dead[i]);
	}
	free(names);
	free(dead);
}

/*
 * Decode ino. A snapshot's inode takes a reference to the snapshot and, with
 * want_tree, to its tree (and clone), loading it if needed.
 */
int mount_resolve_as(Mount *m, fuse_ino_t ino, Target *t, bool want_tree)
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
	t->ms = mount_snap_get(m, (int64_t)(ino >> SNAP_SHIFT));
	if (!t->ms)
		return -ESTALE;
	int r = want_tree ? mount_snap_tree_get(t->ms, &t->tree) : 0;
	if (r < 0) {
		mount_snap_put(t->ms);
		t->ms = NULL;
		return r == -ENOENT ? -ESTALE : r;
	}
	return 0;
}

int mount_resolve(Mount *m, fuse_ino_t ino, Target *t) { return mount_resolve_as(m, ino, t, true); }

/* The newest listed snapshot, of instance when not NULL (catalog "latest" order). */
const MountSnap *mount_newest_locked(Mount *m, const char *instance)
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
size_t mount_live_instances_locked(Mount *m)
{
	size_t n = 0;
	for (size_t k = 0; k < m->n_instances; k++)
		if (mount_newest_locked(m, m->instances[k]))
			n++;
	return n;
}

/* Target of a root link inode into buf; -ENOENT when it has none right now. */
int mount_link_target(Mount *m, const Target *t, char *buf, size_t len)
{
	int r = -ENOENT;
	pthread_rwlock_rdlock(&m->lock);
	const MountSnap *ms = NULL;
	if (t->kind == KIND_LATEST)
		ms = mount_newest_locked(m, NULL);
	else if (t->instance < m->n_instances && mount_live_instances_locked(m) > 1)
		ms = mount_newest_locked(m, m->instances[t->instance]);
	if (ms) {
		snprintf(buf, len, "%s", ms->name);
		r = 0;
	}
	pthread_rwlock_unlock(&m->lock);
	return r;
}

void mount_target_put(Target *t)
{
	if (t->tree)
		mount_snap_tree_put(t->ms);
	mount_snap_put(t->ms);
	t->tree = NULL;
	t->ms = NULL;
}
