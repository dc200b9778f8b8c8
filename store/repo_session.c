/*
 * Locks and sessions: flock helpers, the in-use lock of a local repository,
 * live sessions (a running backup: a locks/ file held while its row exists)
 * and reaping those whose process is gone, gc's maintenance lock.
 * docs/design.md, "Sessions and gc".
 */
#include "store/repo_int.h"
#include "common/util.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

struct RepoSession {
	char id[33];
	int lock_fd;
	char lock_path[PATH_MAX];
};

/*
 * flock(op) on path (created 0600, given to owner); -EBUSY when held
 * elsewhere and op has LOCK_NB.
 */
static int lock_file_op(const char *path, int op, const FileOwner *owner, int *ret_fd)
{
	int fd = open_owned(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600, owner);
	if (fd < 0)
		return fd;
	while (flock(fd, op) < 0) {
		if (errno == EINTR)
			continue;
		int e = errno == EWOULDBLOCK ? -EBUSY : errno ? -errno : -EIO;
		close(fd);
		return e;
	}
	*ret_fd = fd;
	return 0;
}

/* An exclusive flock on path (created 0600, given to owner); -EBUSY when held and !wait. */
int repo_lock_file(const char *path, bool wait, const FileOwner *owner, int *ret_fd)
{
	return lock_file_op(path, LOCK_EX | (wait ? 0 : LOCK_NB), owner, ret_fd);
}

int repo_cache_lock(Repo *r, bool wait, int *ret_fd)
{
	_cleanup_free_ char *path = NULL;
	if (asprintf(&path, "%s/catalog.lock", r->workdir) < 0)
		return -ENOMEM;
	return repo_lock_file(path, wait, &r->work_owner, ret_fd);
}

static void lock_path(const Repo *r, const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/locks/%s.lock", r->workdir, name);
}

static int lock_dir_ensure(Repo *r)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s/locks", r->workdir);
	return mkdir_owned(dir, 0700, &r->work_owner);
}

/*
 * Every process that opens a local repository holds locks/in-use shared for
 * as long as it has the catalog open; repair --rebuild-catalog takes it
 * exclusive before it replaces the catalog file, so no backup, mount or
 * wal-push keeps writing into a catalog that is no longer the repository's
 * (its commits would succeed into the replaced file and be lost). Neither
 * side waits: -EBUSY.
 */
int repo_use_lock(Repo *r, int op, int *ret_fd)
{
	char path[PATH_MAX];
	int e = lock_dir_ensure(r);
	if (e < 0)
		return e;
	/* the archiver (the repository's owner, postgres) must take it too: work_owner */
	snprintf(path, sizeof(path), "%s/locks/in-use", r->workdir);
	return lock_file_op(path, op | LOCK_NB, &r->work_owner, ret_fd);
}

int repo_session_begin(Repo *r, const char *kind, RepoSession **ret)
{
	RepoSession *s = calloc(1, sizeof(*s));
	uint8_t rnd[16];
	int e;

	if (!s)
		return -ENOMEM;
	s->lock_fd = -1;
	e = random_bytes(rnd, sizeof(rnd));
	if (e == 0)
		e = lock_dir_ensure(r);
	if (e < 0)
		goto fail;
	hex_encode(rnd, sizeof(rnd), s->id);
	lock_path(r, s->id, s->lock_path, sizeof(s->lock_path));
	/* lock first, row second: a session row always has a held lock behind it */
	/* given: gc run by the repository's owner opens it to see whether the session lives */
	s->lock_fd = open_owned(s->lock_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600,
				&r->work_owner);
	if (s->lock_fd < 0) {
		e = s->lock_fd;
		goto fail;
	}
	if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		e = -errno;
		goto fail;
	}
	e = catalog_session_add(r->catalog, s->id, kind, NULL);
	if (e < 0)
		goto fail;
	*ret = s;
	return 0;
fail:
	if (s->lock_fd >= 0) {
		unlink(s->lock_path);
		close(s->lock_fd);
	}
	free(s);
	return e;
}

const char *repo_session_id(const RepoSession *s) { return s->id; }

RepoSession *repo_session_end(Repo *r, RepoSession *s)
{
	if (!s)
		return NULL;
	/* row first, lock second (the reverse of begin) */
	if (catalog_session_remove(r->catalog, s->id) == 0)
		unlink(s->lock_path);
	close(s->lock_fd);
	free(s);
	return NULL;
}

typedef struct ReapCtx {
	Repo *repo;
	char (*dead)[33];
	size_t n_dead;
	int error;
} ReapCtx;

static int reap_collect(const char *id, const char *kind _unused_, int64_t pid _unused_,
			int64_t started _unused_, void *userdata)
{
	ReapCtx *ctx = userdata;
	char path[PATH_MAX];
	_cleanup_close_ int fd = -1;

	lock_path(ctx->repo, id, path, sizeof(path));
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno == EWOULDBLOCK)
			return 0; /* alive */
		return -errno;
	}
	if (fd < 0 && errno != ENOENT)
		return -errno;
	void *v = realloc(ctx->dead, (ctx->n_dead + 1) * sizeof(*ctx->dead));
	if (!v)
		return -ENOMEM;
	ctx->dead = v;
	snprintf(ctx->dead[ctx->n_dead++], 33, "%s", id);
	return 0;
}

int repo_reap_dead_sessions(Repo *r, uint64_t *ret_sessions, uint64_t *ret_snapshots)
{
	ReapCtx ctx = {.repo = r};
	uint64_t n_snaps = 0;
	int e = catalog_session_foreach(r->catalog, reap_collect, &ctx);

	for (size_t i = 0; e == 0 && i < ctx.n_dead; i++) {
		char path[PATH_MAX];
		uint64_t n = 0;
		e = catalog_session_reap(r->catalog, ctx.dead[i], &n);
		n_snaps += n;
		lock_path(r, ctx.dead[i], path, sizeof(path));
		if (e == 0)
			unlink(path);
	}
	if (e == 0) {
		if (ret_sessions)
			*ret_sessions = ctx.n_dead;
		if (ret_snapshots)
			*ret_snapshots = n_snaps;
	}
	free(ctx.dead);
	return e;
}

int repo_lock_maintenance(Repo *r, int *ret_fd)
{
	char path[PATH_MAX];
	int e = lock_dir_ensure(r);
	if (e < 0)
		return e;
	snprintf(path, sizeof(path), "%s/locks/maintenance", r->workdir);
	return repo_lock_file(path, false, &r->work_owner, ret_fd);
}
