#include "ingest/fromdir.h"
#include "ingest/walk.h"
#include "common/log.h"
#include "common/util.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define READ_BUF_SIZE (1024 * 1024)

typedef struct Walker {
	SnapWriter *w;
	FromDirError *err;
	uint8_t *buf;
	char tblspc_prefix[16]; /* a data directory's "PG_<major>_" ("": not one) */
} Walker;

static int walker_fail(Walker *wk, const char *path, int r)
{
	size_t n = strlen(path), room = sizeof(wk->err->path) - 1;
	if (!wk->err || wk->err->path[0])
		return r;
	if (n <= room) {
		memcpy(wk->err->path, path, n + 1);
	} else { /* keep both ends: where it starts and which file it is */
		size_t head = (room - 3) / 2, tail = room - 3 - head;
		snprintf(wk->err->path, sizeof(wk->err->path), "%.*s...%s", (int)head, path,
			 path + n - tail);
	}
	return r;
}

/* One warning per file, as GNU tar gives them; the snapshot's status becomes "warning". */
static int walker_warn(Walker *wk, const char *path, const char *what)
{
	log_warning("\"%s\": %s", path, what);
	return snapwriter_add_warning(wk->w);
}

static bool same_stat(const struct stat *a, const struct stat *b)
{
	return a->st_size == b->st_size && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
	       a->st_mtim.tv_nsec == b->st_mtim.tv_nsec && a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
	       a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

static SnapEntry entry_from_stat(uint64_t parent, const char *name, const struct stat *st)
{
	return (SnapEntry){.parent = parent, .name = name, .mode = st->st_mode, .uid = st->st_uid,
			   .gid = st->st_gid,
			   .mtime_ns = timespec_to_ns(&st->st_mtim)};
}

static int ingest_file(Walker *wk, int dirfd, const char *name, const char *path, uint64_t parent)
{
	SnapFile *f;
	struct stat st, after;
	int r, r2;
	_cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOATIME);
	if (fd < 0 && errno == EPERM)
		fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return walker_warn(wk, path, "file removed before we read it");
		return walker_fail(wk, path, -errno);
	}
	if (fstat(fd, &st) < 0)
		return walker_fail(wk, path, -errno);
	SnapEntry e = entry_from_stat(parent, name, &st);
	r = snapwriter_file_begin(wk->w, &e, &f);
	if (r < 0)
		return r;
	uint64_t len;
	r = walk_read_file(wk->w, f, fd, (uint64_t)st.st_size, false, wk->buf, READ_BUF_SIZE, NULL,
			   NULL, &len);
	r2 = snapwriter_file_end(wk->w, f);
	if (r < 0)
		return walker_fail(wk, path, r);
	if (r2 < 0)
		return r2;
	/* written to meanwhile: what we kept may mix old and new data */
	if (fstat(fd, &after) < 0)
		return walker_fail(wk, path, -errno);
	if (!same_stat(&st, &after))
		return walker_warn(wk, path, "file changed as we read it");
	return 0;
}

static const WalkOps walker_ops;

/* rel is a data directory's tablespace link: pg_tblspc/OID */
static bool is_tablespace_link(const Walker *wk, const char *rel)
{
	const char *oid = rel + 10;
	return wk->tblspc_prefix[0] && !strncmp(rel, "pg_tblspc/", 10) && *oid &&
	       strspn(oid, "0123456789") == strlen(oid);
}

/*
 * A data directory's tablespace (pg_tblspc/OID -> its location), as a backup
 * on the database host takes it: the link is kept as a link (restore writes
 * the tablespace back at its location, or where --tablespace-map sends it)
 * and the location's directory of this major (PG_<major>_...) is backed up
 * under it; the other majors' (pg_upgrade leaves them) are not this
 * cluster's. Before, only the link was kept: a restore's link led back into
 * the source's location.
 */
static int ingest_tablespace(Walker *wk, const WalkEntry *we, const char *target)
{
	struct stat st;
	uint64_t ino;
	if (fstatat(we->dirfd, we->name, &st, 0) < 0) /* the location */
		return errno == ENOENT ? walker_warn(wk, we->path, "tablespace location missing")
				       : walker_fail(wk, we->path, -errno);
	if (!S_ISDIR(st.st_mode))
		return walker_warn(wk, we->path, "tablespace link to a non-directory");
	SnapEntry e = entry_from_stat(we->parent, we->name, &st);
	e.mode = S_IFDIR | (st.st_mode & 07777);
	int r = snapwriter_add_dir(wk->w, &e, &ino);
	if (r == 0)
		r = snapwriter_add_link(wk->w, we->rel, target);
	_cleanup_close_ int fd = r == 0 ? openat(we->dirfd, we->name, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	if (r == 0 && fd < 0)
		r = walker_fail(wk, we->path, -errno);
	DIR *d = r == 0 ? fdopendir(dup(fd)) : NULL;
	struct dirent *de;
	while (r == 0 && d && (de = readdir(d))) {
		char path[PATH_MAX + 256], rel[PATH_MAX + 256];
		uint64_t vino;
		struct stat vst;
		if (strncmp(de->d_name, wk->tblspc_prefix, strlen(wk->tblspc_prefix)) ||
		    fstatat(fd, de->d_name, &vst, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(vst.st_mode))
			continue;
		snprintf(path, sizeof(path), "%s/%s", we->path, de->d_name);
		snprintf(rel, sizeof(rel), "%s/%s", we->rel, de->d_name);
		SnapEntry ve = entry_from_stat(ino, de->d_name, &vst);
		_cleanup_close_ int vfd = openat(fd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		r = vfd < 0 ? walker_fail(wk, path, -errno) : snapwriter_add_dir(wk->w, &ve, &vino);
		if (r == 0)
			r = walk_dir_fd(vfd, path, rel, vino, &walker_ops, wk);
	}
	if (d)
		closedir(d);
	return r;
}

static int walker_entry(void *userdata, const WalkEntry *we, uint64_t *ret_ino)
{
	Walker *wk = userdata;
	const char *child = we->path;
	int r;

	/* restore writes it at TARGET/rel: refuse what no restore could write */
	if (strlen(we->rel) >= FROMDIR_PATH_MAX) {
		if (wk->err)
			wk->err->rel_len = strlen(we->rel);
		return walker_fail(wk, child, -ENAMETOOLONG);
	}
	if (we->stat_err)
		return we->stat_err == -ENOENT ? walker_warn(wk, child, "file removed before we read it")
					       : walker_fail(wk, child, we->stat_err);
	SnapEntry e = entry_from_stat(we->parent, we->name, &we->st);
	if (S_ISREG(we->st.st_mode))
		return ingest_file(wk, we->dirfd, we->name, child, we->parent);
	if (S_ISLNK(we->st.st_mode)) {
		char target[PATH_MAX];
		ssize_t n = readlinkat(we->dirfd, we->name, target, sizeof(target) - 1);
		if (n < 0)
			return errno == ENOENT ? walker_warn(wk, child, "file removed before we read it")
					       : walker_fail(wk, child, -errno);
		target[n] = '\0';
		if (is_tablespace_link(wk, we->rel))
			return ingest_tablespace(wk, we, target);
		return snapwriter_add_symlink(wk->w, &e, target);
	}
	if (S_ISDIR(we->st.st_mode)) {
		if (we->fd < 0)
			return we->fd == -ENOENT
				       ? walker_warn(wk, child, "directory removed before we read it")
				       : walker_fail(wk, child, we->fd);
		r = snapwriter_add_dir(wk->w, &e, ret_ino);
		return r < 0 ? r : WALK_DESCEND;
	}
	log_warning("skipping \"%s\": not a regular file, directory or symlink", child);
	return 0;
}

static int walker_dir_error(void *userdata, const char *path, int r)
{
	return walker_fail(userdata, path, r);
}

static const WalkOps walker_ops = {.entry = walker_entry, .dir_error = walker_dir_error};

/* A data directory (PG_VERSION "N"): its tablespaces' directories are "PG_N_...". */
static void tablespace_prefix(int dirfd, char out[16])
{
	char v[8] = {0};
	out[0] = 0;
	_cleanup_close_ int fd = openat(dirfd, "PG_VERSION", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, v, sizeof(v) - 1) : -1;
	if (n > 0 && strspn(v, "0123456789") > 0 && strspn(v, "0123456789") <= 4)
		snprintf(out, 16, "PG_%.*s_", (int)strspn(v, "0123456789"), v);
}

int fromdir_ingest(SnapWriter *w, const char *dir, FromDirError *err)
{
	Walker wk = {.w = w, .err = err};
	struct stat st;
	uint64_t root;
	int r;
	_cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (err)
		*err = (FromDirError){.rel_len = 0};
	if (fd < 0 || fstat(fd, &st) < 0)
		return walker_fail(&wk, dir, -errno);
	wk.buf = malloc(READ_BUF_SIZE);
	if (!wk.buf)
		return -ENOMEM;
	tablespace_prefix(fd, wk.tblspc_prefix);
	SnapEntry e = entry_from_stat(0, "", &st);
	r = snapwriter_add_dir(w, &e, &root);
	if (r == 0)
		r = walk_dir_fd(fd, dir, "", root, &walker_ops, &wk);
	free(wk.buf);
	return r;
}

typedef struct SizeWalk {
	const char *root;
	uint64_t total;
} SizeWalk;

/* the walk of fromdir_total_size: every directory entered, regular files summed */
static int size_entry(void *userdata, const WalkEntry *e, uint64_t *ret_ino)
{
	*ret_ino = 0;
	if (e->stat_err)
		return 0;
	if (S_ISREG(e->st.st_mode))
		((SizeWalk *)userdata)->total += (uint64_t)e->st.st_size;
	return S_ISDIR(e->st.st_mode) && e->fd >= 0 ? WALK_DESCEND : 0;
}

/* a directory below the root that cannot be listed counts nothing: the backup reports it */
static int size_dir_error(void *userdata, const char *path, int r)
{
	return strcmp(path, ((SizeWalk *)userdata)->root) == 0 ? r : 0;
}

int fromdir_total_size(const char *dir, uint64_t *ret)
{
	static const WalkOps ops = {.entry = size_entry, .dir_error = size_dir_error};
	SizeWalk sw = {.root = dir};
	int r = walk_dir(dir, "", 0, &ops, &sw);
	if (r == 0)
		*ret = sw.total;
	return r;
}
