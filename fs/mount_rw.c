/*
 * Writable mounts: each snapshot directory is a copy-on-write clone
 * (fs/clone.h) opened with its tree, and the handlers that modify it.
 */
#define FUSE_USE_VERSION 312

#include "fs/mount_int.h"

#include "common/log.h"
#include "common/util.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

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

int mount_snap_open_clone(MountSnap *ms)
{
	Mount *m = ms->m;
	_cleanup_free_ CloneSeedFile *seed = NULL;
	_cleanup_free_ char *dir = NULL;
	size_t n_seed = 0;
	int r;

	size_t n_ino = (size_t)snaptree_max_ino(ms->tree) + 1;
	ms->pinned = calloc(n_ino, 1);
	ms->streams = calloc(n_ino, sizeof(*ms->streams));
	if (!ms->pinned || !ms->streams)
		return -ENOMEM;
	for (size_t i = 0; i < n_ino; i++)
		read_stream_init(&ms->streams[i]);
	if (asprintf(&dir, "%s/%s", m->o->scratch, ms->name) < 0)
		return -ENOMEM;
	r = clone_seed(ms, &seed, &n_seed);
	if (r < 0)
		return r;
	CloneOptions co = {.dir = dir, .snapshot = ms->name, .seed = seed, .n_seed = n_seed,
			   .chunk_size = m->chunk_size, .lower_read = mount_lower_read, .userdata = ms};
	r = clone_open(&co, &ms->clone);
	if (r == 0 && m->o->recovery_conf && clone_is_fresh(ms->clone))
		r = clone_add_recovery(ms->clone, m->o->recovery_conf, m->o->uid, m->o->gid);
	if (r < 0)
		log_error("cannot open the clone of snapshot \"%s\" in \"%s\": %s", ms->name, dir,
			  strerror(-r));
	return r;
}

/* ---- writable clones ---- */

/* mount_names_check for a modifying handler: false (ENAMETOOLONG replied) when a name is too long. */
static bool names_fit(fuse_req_t req, const char *name, const char *name2)
{
	int r = mount_names_check(name, name2);
	if (r < 0)
		fuse_reply_err(req, -r);
	return r == 0;
}

/* The clone and inode a modifying request works on; EROFS without one. */
static int writable_target(Mount *m, fuse_ino_t ino, Target *t)
{
	if (ro(m))
		return -EROFS;
	int r = mount_resolve(m, ino, t);
	if (r == 0 && (t->kind != KIND_SNAP || !t->ms->clone)) {
		mount_target_put(t);
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
		mount_attr_clone(m, t->ms, a, &e.attr);
		fuse_reply_entry(req, &e);
	} else {
		fuse_reply_err(req, -r);
	}
	mount_target_put(t);
}

/* mknod and mkdir: a new entry of mode in the clone's directory parent, owned by the caller */
static void create_name(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
			int (*create)(Clone *c, uint32_t parent, const char *name, uint32_t mode,
				      uint32_t uid, uint32_t gid, CloneAttr *ret))
{
	Mount *m = mount_of(req);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	CloneAttr a;
	Target t;
	if (!names_fit(req, name, NULL) || !clone_op_begin(req, parent, &t))
		return;
	int r = create(t.ms->clone, t.local, name, mode, ctx->uid, ctx->gid, &a);
	reply_clone_entry(req, m, &t, r, &a);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		     dev_t rdev _unused_)
{
	create_name(req, parent, name, mode, clone_mknod);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	create_name(req, parent, name, mode, clone_mkdir);
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

/* unlink and rmdir: remove name from the clone's directory parent */
static void remove_name(fuse_req_t req, fuse_ino_t parent, const char *name,
			int (*remove)(Clone *c, uint32_t dir, const char *name))
{
	Target t;
	if (!names_fit(req, name, NULL))
		return;
	int r = writable_target(mount_of(req), parent, &t);
	if (r == 0) {
		r = remove(t.ms->clone, t.local, name);
		mount_target_put(&t);
	}
	fuse_reply_err(req, r < 0 ? -r : 0);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	remove_name(req, parent, name, clone_unlink);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	remove_name(req, parent, name, clone_rmdir);
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
		mount_target_put(&t);
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
		mount_attr_clone(m, t.ms, &out, &st);
	mount_target_put(&t);
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
		mount_target_put(&t);
		fuse_reply_err(req, -r);
		return;
	}
	h->snap = t.ms;
	h->tree = t.tree;
	mount_attr_clone(m, t.ms, &a, &e.attr);
	e.ino = make_ino(t.ms, a.ino);
	fi->fh = (uint64_t)(uintptr_t)h;
	mount_handle_track(m, h);
	if (fuse_reply_create(req, &e, fi) == -ENOENT) {
		mount_handle_untrack(m, h);
		clone_release(h->cf);
		free(h);
		mount_target_put(&t);
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
	int r = ro(m) ? -ENOENT : mount_resolve(m, ino, &t);
	if (r == 0) {
		/* the directory's own entries only: other files' flushes are theirs to report */
		r = t.kind == KIND_SNAP && t.ms->clone ? clone_fsyncdir(t.ms->clone, t.local) : 0;
		mount_target_put(&t);
	}
	fuse_reply_err(req, r < 0 && r != -ENOENT ? -r : 0);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino _unused_, struct fuse_file_info *fi _unused_)
{
	fuse_reply_err(req, 0);
}

void mount_rw_ops(struct fuse_lowlevel_ops *ops)
{
	ops->setattr = op_setattr;
	ops->mknod = op_mknod;
	ops->mkdir = op_mkdir;
	ops->unlink = op_unlink;
	ops->rmdir = op_rmdir;
	ops->symlink = op_symlink;
	ops->rename = op_rename;
	ops->link = op_link;
	ops->write = op_write;
	ops->flush = op_flush;
	ops->fsync = op_fsync;
	ops->fsyncdir = op_fsyncdir;
	ops->create = op_create;
}
