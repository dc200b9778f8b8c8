/*
 * The handlers that change nothing, for both kinds of mounts: lookup,
 * getattr, readlink, readdir, opendir, statfs and the extended attributes.
 * Each resolves and does its work in a function returning -errno, then
 * replies once through the reply helper of its kind.
 */
#define FUSE_USE_VERSION 312

#include "fs/mount_int.h"

#include "common/log.h"
#include "common/util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

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

void mount_attr_clone(Mount *m, const MountSnap *ms, const CloneAttr *a, struct stat *st)
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

/*
 * A name longer than NAME_MAX names nothing, anywhere in the mount: every
 * request taking one answers ENAMETOOLONG before anything else (as a local
 * filesystem does, whether the name exists or not).
 */
int mount_names_check(const char *name, const char *name2)
{
	if (strnlen(name, MOUNT_NAME_MAX + 1) <= MOUNT_NAME_MAX &&
	    (!name2 || strnlen(name2, MOUNT_NAME_MAX + 1) <= MOUNT_NAME_MAX))
		return 0;
	return -ENAMETOOLONG;
}

/* ---- replies: a handler replies once, through the helper of its kind ---- */

static void reply_err(fuse_req_t req, int r) { fuse_reply_err(req, r < 0 ? -r : 0); }

static void reply_entry(fuse_req_t req, int r, const struct fuse_entry_param *e)
{
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_entry(req, e);
}

static void reply_attr(fuse_req_t req, int r, const struct stat *st, double timeout)
{
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, st, timeout);
}

static void reply_readlink(fuse_req_t req, int r, const char *target)
{
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_readlink(req, target);
}

static void reply_buf(fuse_req_t req, int r, const char *buf, size_t len)
{
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_buf(req, buf, len);
}

static void reply_statfs(fuse_req_t req, int r, const struct statvfs *sv)
{
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_statfs(req, sv);
}

/* An extended attribute's value or names: the length asked with size 0, ERANGE if too small. */
static void reply_xattr(fuse_req_t req, int r, const char *buf, size_t len, size_t size)
{
	if (r == 0 && size > 0 && size < len)
		r = -ERANGE;
	if (r < 0)
		fuse_reply_err(req, -r);
	else if (size == 0)
		fuse_reply_xattr(req, len);
	else
		fuse_reply_buf(req, buf, len);
}

/* ---- lookup and getattr ---- */

static int lookup_root(Mount *m, const char *name, struct fuse_entry_param *e)
{
	char target[128];
	e->attr_timeout = e->entry_timeout = LIVE_TIMEOUT;
	mount_refresh(m);
	if (strcmp(name, "latest") == 0) {
		Target t = {.kind = KIND_LATEST};
		if (mount_link_target(m, &t, target, sizeof(target)) < 0)
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
		if (mount_link_target(m, &t, target, sizeof(target)) < 0)
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
			mount_attr_clone(m, ms, &a, &e->attr);
	} else {
		r = mount_snap_root(ms, &root);
		if (r == 0)
			attr_node(m, ms, &root, &e->attr);
	}
	e->ino = make_ino(ms, 1);
	mount_snap_put(ms);
	return r;
}

static int do_lookup(Mount *m, fuse_ino_t parent, const char *name, struct fuse_entry_param *e)
{
	Target t;
	int r = mount_names_check(name, NULL);

	if (r < 0)
		return r;
	if (parent == FUSE_ROOT_ID)
		return lookup_root(m, name, e);
	r = mount_resolve(m, parent, &t);
	if (r == 0 && t.kind != KIND_SNAP)
		r = -ENOTDIR;
	if (r == 0 && t.ms->clone) {
		CloneAttr a;
		r = clone_lookup(t.ms->clone, t.local, name, &a);
		if (r == 0) {
			mount_attr_clone(m, t.ms, &a, &e->attr);
			e->ino = make_ino(t.ms, a.ino);
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
			attr_node(m, t.ms, n, &e->attr);
			e->ino = make_ino(t.ms, n->ino);
		}
	}
	mount_target_put(&t);
	if (r == 0)
		e->attr_timeout = e->entry_timeout = entry_timeout(m);
	return r;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e = {0};
	int r = do_lookup(mount_of(req), parent, name, &e);
	reply_entry(req, r, &e);
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
		if (mount_link_target(m, t, target, sizeof(target)) < 0)
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
			mount_attr_clone(m, t->ms, &a, st);
		return r;
	}
	if (!t->tree) {
		/* a read-only snapshot's directory: from its root row, the tree stays out */
		SnapNode root;
		int r = mount_snap_root(t->ms, &root);
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

static int do_getattr(Mount *m, fuse_ino_t ino, struct stat *st, double *ret_timeout)
{
	Target t;
	/* stat of MOUNT/<id> (read-only) loads nothing; anything inside needs the tree */
	bool snap_dir = ro(m) && ino >> SNAP_SHIFT != 0 && (ino & UINT32_MAX) == 1;
	int r = mount_resolve_as(m, ino, &t, !snap_dir);
	if (r == 0)
		r = getattr_target(m, &t, ino, st);
	bool live = t.kind != KIND_SNAP || !ro(m) || t.local == 1;
	mount_target_put(&t);
	*ret_timeout = live ? LIVE_TIMEOUT : IMMUTABLE_TIMEOUT;
	return r;
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi _unused_)
{
	struct stat st;
	double timeout;
	int r = do_getattr(mount_of(req), ino, &st, &timeout);
	reply_attr(req, r, &st, timeout);
}

/*
 * The target of link t: in buf (a root link), in *ret_alloc (a clone's, to
 * free) or in t's tree (valid while t is held); *ret points at it.
 */
static int readlink_target(Mount *m, const Target *t, char *buf, size_t len, char **ret_alloc,
			   const char **ret)
{
	int r = -EINVAL;
	if (t->kind == KIND_LATEST || t->kind == KIND_INSTANCE) {
		r = mount_link_target(m, t, buf, len);
		*ret = buf;
	} else if (t->kind == KIND_SNAP && t->ms->clone) {
		r = clone_readlink(t->ms->clone, t->local, ret_alloc);
		*ret = *ret_alloc;
	} else if (t->kind == KIND_SNAP) {
		const SnapNode *n = snaptree_node(t->tree, t->local);
		r = n && n->target ? 0 : -EINVAL;
		*ret = r == 0 ? n->target : NULL;
	}
	return r;
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	Mount *m = mount_of(req);
	_cleanup_free_ char *alloc = NULL;
	const char *target = NULL;
	char buf[128];
	Target t;
	int r = mount_resolve(m, ino, &t);
	if (r == 0)
		r = readlink_target(m, &t, buf, sizeof(buf), &alloc, &target);
	reply_readlink(req, r, target);
	mount_target_put(&t); /* after the reply: target may be in its tree */
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
	const MountSnap *latest = mount_newest_locked(m, NULL);
	if (latest) {
		snprintf(v[n].name, sizeof(v[n].name), "latest");
		attr_link(m, &v[n].e.attr, LATEST_INO, latest->name);
		v[n++].e.ino = LATEST_INO;
	}
	bool several = mount_live_instances_locked(m) > 1;
	for (size_t k = 0; several && k < m->n_instances; k++) {
		const MountSnap *ms = mount_newest_locked(m, m->instances[k]);
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
	mount_refresh(m);
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
	mount_attr_clone(ctx->m, ctx->ms, a, &e.attr);
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
		mount_attr_clone(m, t->ms, &a, &e.attr);
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
	int r = mount_resolve(m, ino, &t);

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
	mount_target_put(&t);
	reply_buf(req, r, d.buf, d.used);
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

static int do_statfs(Mount *m, fuse_ino_t ino, struct statvfs *sv)
{
	Target t;
	int r = -1;
	if (!ro(m) && mount_resolve(m, ino, &t) == 0) {
		r = t.kind == KIND_SNAP && t.ms->clone ? clone_statfs(t.ms->clone, sv) : -1;
		mount_target_put(&t);
	}
	if (r < 0 && statvfs(repo_workdir(m->repo), sv) < 0)
		return -errno;
	if (ro(m)) {
		/* nothing can be written here */
		sv->f_bfree = sv->f_bavail = 0;
		sv->f_ffree = sv->f_favail = 0;
	}
	sv->f_namemax = MOUNT_NAME_MAX;
	return 0;
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;
	int r = do_statfs(mount_of(req), ino, &sv);
	reply_statfs(req, r, &sv);
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
	char buf[256] = "";
	int r = 0;
	if (ino != FUSE_ROOT_ID || strcmp(name, TREES_XATTR) != 0)
		r = -ENODATA;
	else
		trees_xattr(mount_of(req), buf, sizeof(buf));
	reply_xattr(req, r, buf, strlen(buf), size);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	static const char names[] = TREES_XATTR; /* with its NUL */
	reply_xattr(req, 0, names, ino == FUSE_ROOT_ID ? sizeof(names) : 0, size);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino _unused_, const char *name _unused_,
			const char *value _unused_, size_t size _unused_, int flags _unused_)
{
	reply_err(req, ro(mount_of(req)) ? -EROFS : -ENOTSUP);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino _unused_, const char *name _unused_)
{
	reply_err(req, ro(mount_of(req)) ? -EROFS : -ENODATA);
}

void mount_ro_ops(struct fuse_lowlevel_ops *ops)
{
	ops->lookup = op_lookup;
	ops->getattr = op_getattr;
	ops->readlink = op_readlink;
	ops->opendir = op_opendir;
	ops->readdir = op_readdir;
	ops->readdirplus = op_readdirplus;
	ops->statfs = op_statfs;
	ops->setxattr = op_setxattr;
	ops->getxattr = op_getxattr;
	ops->listxattr = op_listxattr;
	ops->removexattr = op_removexattr;
}
