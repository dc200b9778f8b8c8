#include "store/repo.h"
#include "common/log.h"
#include "common/util.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

struct Repo {
	char *path;
	char *catalog_path;
	StoreBackend *backend;
	Catalog *catalog;
	RepoConfig config;
};

struct RepoSession {
	char id[33];
	int lock_fd;
	char lock_path[PATH_MAX];
};

static int config_format(const RepoConfig *c, char *buf, size_t len)
{
	int n = snprintf(buf, len,
			 "# pgbakfs repository: do not edit\n"
			 "format = %u\n"
			 "chunk_size = %llu\n"
			 "pack_size = %llu\n"
			 "compression = zstd\n"
			 "compression_level = %d\n"
			 "id = %s\n",
			 c->format, (unsigned long long)c->chunk_size,
			 (unsigned long long)c->pack_size, c->compress_level, c->id);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : n;
}

static int config_parse(char *text, RepoConfig *ret)
{
	RepoConfig c = {0};
	char *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char key[64], value[128];
		if (line[0] == '#' || !*line)
			continue;
		if (sscanf(line, " %63[a-z_] = %127s", key, value) != 2)
			return -EBADMSG;
		if (strcmp(key, "format") == 0)
			c.format = (uint32_t)strtoul(value, NULL, 10);
		else if (strcmp(key, "chunk_size") == 0)
			c.chunk_size = strtoull(value, NULL, 10);
		else if (strcmp(key, "pack_size") == 0)
			c.pack_size = strtoull(value, NULL, 10);
		else if (strcmp(key, "compression_level") == 0)
			c.compress_level = atoi(value);
		else if (strcmp(key, "id") == 0 && strlen(value) < sizeof(c.id))
			memcpy(c.id, value, strlen(value) + 1);
	}
	if (c.format == 0)
		return -EBADMSG;
	if (c.format > PGBAKFS_REPO_FORMAT) {
		*ret = c;
		return -EPROTONOSUPPORT;
	}
	if (!chunk_size_valid(c.chunk_size) || c.pack_size < c.chunk_size || !c.id[0])
		return -EBADMSG;
	*ret = c;
	return 0;
}

static int repo_paths(Repo *r, const char *path)
{
	r->path = strdup(path);
	if (!r->path || asprintf(&r->catalog_path, "%s/catalog.db", path) < 0) {
		r->catalog_path = NULL;
		return -ENOMEM;
	}
	return 0;
}

int repo_init(const char *path, const RepoInitOptions *o)
{
	RepoConfig c = {
		.format = PGBAKFS_REPO_FORMAT,
		.chunk_size = o && o->chunk_size ? o->chunk_size : PGBAKFS_DEFAULT_CHUNK_SIZE,
		.pack_size = o && o->pack_size ? o->pack_size : PGBAKFS_DEFAULT_PACK_SIZE,
		.compress_level = o && o->compress_level ? o->compress_level
							  : PGBAKFS_DEFAULT_COMPRESS_LEVEL,
	};
	char text[512], sub[PATH_MAX];
	uint8_t rnd[16];
	Catalog *cat = NULL;
	int r, n;

	if (!chunk_size_valid(c.chunk_size) || c.pack_size < c.chunk_size)
		return -EINVAL;
	r = dir_is_empty(path);
	if (r < 0)
		return r;
	if (r == 0) {
		snprintf(sub, sizeof(sub), "%s/config", path);
		return access(sub, F_OK) == 0 ? -EEXIST : -ENOTEMPTY;
	}
	r = mkdir_p(path, 0700);
	if (r < 0)
		return r;
	if (chmod(path, 0700) < 0)
		return -errno;
	r = random_bytes(rnd, sizeof(rnd));
	if (r < 0)
		return r;
	hex_encode(rnd, sizeof(rnd), c.id);
	for (const char *d = "packs\0locks\0"; *d; d += strlen(d) + 1) {
		snprintf(sub, sizeof(sub), "%s/%s", path, d);
		if (mkdir(sub, 0700) < 0 && errno != EEXIST)
			return -errno;
	}
	snprintf(sub, sizeof(sub), "%s/catalog.db", path);
	mode_t old = umask(0077); /* SQLite creates its files with the umask */
	r = catalog_open(sub, true, &cat);
	umask(old);
	catalog_free(cat);
	if (r < 0)
		return r;
	/* config last: its presence is what makes the directory a repository */
	n = config_format(&c, text, sizeof(text));
	if (n < 0)
		return n;
	snprintf(sub, sizeof(sub), "%s/config", path);
	return file_write_atomic(sub, text, (size_t)n, 0600);
}

int repo_open(const char *path, Repo **ret)
{
	Repo *r = calloc(1, sizeof(*r));
	_cleanup_free_ char *text = NULL;
	char cfg[PATH_MAX];
	struct stat st;
	int e;

	if (!r)
		return -ENOMEM;
	e = repo_paths(r, path);
	if (e < 0)
		goto fail;
	if (stat(path, &st) < 0) {
		e = -errno;
		goto fail;
	}
	if (!S_ISDIR(st.st_mode)) {
		e = -ENOTDIR;
		goto fail;
	}
	snprintf(cfg, sizeof(cfg), "%s/config", path);
	e = file_read_all(cfg, 64 * 1024, &text, NULL);
	if (e == -ENOENT) {
		e = -ENOTDIR;
		goto fail;
	}
	if (e < 0)
		goto fail;
	e = config_parse(text, &r->config);
	if (e < 0)
		goto fail;
	e = store_local_new(path, &r->backend);
	if (e < 0)
		goto fail;
	/* test hook: wrap the backend in the fault driver (see store/backend.h) */
	const char *faults = getenv("PGBAKFS_TEST_FAULTS");
	if (faults && *faults) {
		StoreBackend *fb;
		e = store_fault_new(r->backend, faults, &fb);
		if (e < 0)
			goto fail;
		r->backend = fb;
	}
	e = catalog_open(r->catalog_path, false, &r->catalog);
	if (e == -ENOENT)
		e = -EBADMSG; /* config without catalog: damaged */
	if (e < 0)
		goto fail;
	*ret = r;
	return 0;
fail:
	repo_free(r);
	return e;
}

Repo *repo_free(Repo *r)
{
	if (!r)
		return NULL;
	catalog_free(r->catalog);
	store_backend_free(r->backend);
	free(r->path);
	free(r->catalog_path);
	free(r);
	return NULL;
}

const char *repo_path(const Repo *r) { return r->path; }
const RepoConfig *repo_config(const Repo *r) { return &r->config; }
StoreBackend *repo_backend(Repo *r) { return r->backend; }
Catalog *repo_catalog(Repo *r) { return r->catalog; }

int repo_catalog_open(Repo *r, Catalog **ret)
{
	return catalog_open(r->catalog_path, false, ret);
}

static void lock_path(const Repo *r, const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/locks/%s.lock", r->path, name);
}

static int lock_dir_ensure(Repo *r)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s/locks", r->path);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
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
	s->lock_fd = open(s->lock_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (s->lock_fd < 0 || flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
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
	int fd, e = lock_dir_ensure(r);
	if (e < 0)
		return e;
	snprintf(path, sizeof(path), "%s/locks/maintenance", r->path);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		e = errno == EWOULDBLOCK ? -EBUSY : -errno;
		close(fd);
		return e;
	}
	*ret_fd = fd;
	return 0;
}
