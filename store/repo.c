#include "store/repo.h"
#include "store/remote.h"
#include "common/log.h"
#include "common/util.h"

#include <fcntl.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <zstd.h>

#define CONFIG_MAX_BYTES (64 * 1024)
#define META_MAGIC "PGBKOBJ1"
#define META_HEADER_LEN 24
#define META_MAX_BYTES (4ULL << 30)
enum { META_ZSTD = 1 };
/* generations kept in the bucket besides the newest: a reader that listed an
 * older one a moment ago can still fetch it */
#define CATALOG_GENERATIONS_KEPT 3

struct Repo {
	char *url;
	char *workdir;
	char *catalog_path;
	StoreBackend *backend;
	Catalog *catalog;
	RepoConfig config;
	/* remote repositories only */
	bool remote;
	unsigned lock_wait_s;
	uint64_t gen;        /* generation the local catalog copies */
	RemoteLock *lock;    /* held between write_begin and write_end */
	int cache_lock_fd;   /* flock on <workdir>/catalog.lock while writing */
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

static RepoConfig config_new(const RepoInitOptions *o)
{
	return (RepoConfig){
		.format = PGBAKFS_REPO_FORMAT,
		.chunk_size = o && o->chunk_size ? o->chunk_size : PGBAKFS_DEFAULT_CHUNK_SIZE,
		.pack_size = o && o->pack_size ? o->pack_size : PGBAKFS_DEFAULT_PACK_SIZE,
		.compress_level = o && o->compress_level ? o->compress_level
							  : PGBAKFS_DEFAULT_COMPRESS_LEVEL,
	};
}

static int config_put(StoreBackend *b, const RepoConfig *c)
{
	char text[512];
	int n = config_format(c, text, sizeof(text));
	return n < 0 ? n : store_put(b, "config", text, (size_t)n);
}

static int config_get(StoreBackend *b, RepoConfig *ret)
{
	char *text = NULL;
	size_t len;
	int r = store_get_all(b, "config", CONFIG_MAX_BYTES, (void **)&text, &len);
	if (r == -ENOENT)
		return -ENOTDIR;
	if (r == -EFBIG)
		return -EBADMSG;
	if (r < 0)
		return r;
	char *z = realloc(text, len + 1);
	if (!z) {
		free(text);
		return -ENOMEM;
	}
	z[len] = 0;
	r = config_parse(z, ret);
	free(z);
	return r;
}

static Repo *repo_alloc(const char *url)
{
	Repo *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->cache_lock_fd = -1;
	if (!(r->url = strdup(url)))
		return repo_free(r);
	return r;
}

static int repo_set_workdir(Repo *r, const char *dir)
{
	free(r->workdir);
	free(r->catalog_path);
	r->catalog_path = NULL;
	if (!(r->workdir = strdup(dir)) || asprintf(&r->catalog_path, "%s/catalog.db", dir) < 0) {
		r->catalog_path = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* test hook: wrap the backend in the fault driver (see store/backend.h) */
static int backend_wrap_faults(StoreBackend **b)
{
	const char *faults = getenv("PGBAKFS_TEST_FAULTS");
	StoreBackend *fb;
	if (!faults || !*faults)
		return 0;
	int e = store_fault_new(*b, faults, &fb);
	if (e < 0)
		return e;
	*b = fb;
	return 0;
}

static int backend_for(const RepoLocation *l, StoreBackend **ret)
{
	int e = l->s3 ? store_s3_new(l->s3, ret) : store_local_new(l->path, ret);
	if (e == 0 && (e = backend_wrap_faults(ret)) < 0)
		*ret = store_backend_free(*ret);
	return e;
}

static int workdir_prepare(const char *dir)
{
	char sub[PATH_MAX];
	int r = mkdir_p(dir, 0700);
	if (r < 0)
		return r;
	for (const char *d = "locks\0tmp\0"; *d; d += strlen(d) + 1) {
		snprintf(sub, sizeof(sub), "%s/%s", dir, d);
		if (mkdir(sub, 0700) < 0 && errno != EEXIST)
			return -errno;
	}
	return 0;
}

static int catalog_create(const char *path)
{
	Catalog *cat = NULL;
	mode_t old = umask(0077); /* SQLite creates its files with the umask */
	int r = catalog_open(path, true, &cat);
	umask(old);
	catalog_free(cat);
	return r;
}

static int init_local(const char *path, RepoConfig *c)
{
	char sub[PATH_MAX];
	StoreBackend *b = NULL;
	int r = dir_is_empty(path);

	if (r < 0)
		return r;
	if (r == 0) {
		snprintf(sub, sizeof(sub), "%s/config", path);
		return access(sub, F_OK) == 0 ? -EEXIST : -ENOTEMPTY;
	}
	r = mkdir_p(path, 0700);
	if (r == 0 && chmod(path, 0700) < 0)
		r = -errno;
	if (r == 0)
		r = workdir_prepare(path);
	if (r == 0) {
		snprintf(sub, sizeof(sub), "%s/packs", path);
		if (mkdir(sub, 0700) < 0 && errno != EEXIST)
			r = -errno;
	}
	if (r == 0) {
		snprintf(sub, sizeof(sub), "%s/catalog.db", path);
		r = catalog_create(sub);
	}
	/* config last: its presence is what makes the directory a repository */
	if (r == 0)
		r = store_local_new(path, &b);
	if (r == 0)
		r = config_put(b, c);
	store_backend_free(b);
	return r;
}

static int any_object(const char *name _unused_, uint64_t size _unused_, void *userdata)
{
	*(bool *)userdata = true;
	return 1; /* stop */
}

static int catalog_publish(Repo *r, uint64_t gen);

static int init_remote(const RepoLocation *l, RepoConfig *c)
{
	Repo *r = repo_alloc(l->url);
	_cleanup_free_ char *dir = NULL;
	bool found = false;
	uint64_t size;
	int e;

	if (!r)
		return -ENOMEM;
	e = backend_for(l, &r->backend);
	if (e == 0) {
		e = store_size(r->backend, "config", &size);
		if (e == 0)
			e = -EEXIST;
		else if (e == -ENOENT)
			e = store_list(r->backend, "", any_object, &found);
		if (e > 0)
			e = 0; /* stopped at the first object */
	}
	if (e == 0 && found)
		e = -ENOTEMPTY;
	if (e == 0 && asprintf(&dir, "%s/%s", l->cache_dir, c->id) < 0) {
		dir = NULL;
		e = -ENOMEM;
	}
	r->remote = true;
	r->config = *c;
	if (e == 0)
		e = repo_set_workdir(r, dir);
	if (e == 0)
		e = workdir_prepare(dir);
	if (e == 0)
		e = catalog_create(r->catalog_path);
	if (e == 0)
		e = catalog_open(r->catalog_path, false, &r->catalog);
	if (e == 0)
		e = catalog_publish(r, 1);
	if (e == 0)
		e = config_put(r->backend, c);
	repo_free(r);
	return e;
}

int repo_init_at(const RepoLocation *l, const RepoInitOptions *o)
{
	RepoConfig c = config_new(o);
	uint8_t rnd[16];
	int r;

	if (!chunk_size_valid(c.chunk_size) || c.pack_size < c.chunk_size)
		return -EINVAL;
	r = random_bytes(rnd, sizeof(rnd));
	if (r < 0)
		return r;
	hex_encode(rnd, sizeof(rnd), c.id);
	return l->s3 ? init_remote(l, &c) : init_local(l->path, &c);
}

int repo_init(const char *path, const RepoInitOptions *o)
{
	RepoLocation l = {.url = path, .path = path};
	return repo_init_at(&l, o);
}

/* ---- small objects: header, zstd ---- */

int repo_meta_put(Repo *r, const char *name, const void *buf, size_t len)
{
	size_t bound = ZSTD_compressBound(len), n;
	uint8_t *obj = malloc(META_HEADER_LEN + bound);
	int e;

	if (!obj)
		return -ENOMEM;
	n = ZSTD_compress(obj + META_HEADER_LEN, bound, buf, len, 3);
	if (ZSTD_isError(n)) {
		free(obj);
		return -EIO;
	}
	memcpy(obj, META_MAGIC, 8);
	put_le32(obj + 8, META_ZSTD);
	put_le32(obj + 12, 0);
	put_le64(obj + 16, len);
	e = store_put(r->backend, name, obj, META_HEADER_LEN + n);
	free(obj);
	return e;
}

int repo_meta_get(Repo *r, const char *name, void **ret, size_t *ret_len)
{
	uint8_t *obj = NULL;
	void *plain = NULL;
	size_t len, n;
	uint64_t plen;
	int e = store_get_all(r->backend, name, META_MAX_BYTES, (void **)&obj, &len);

	if (e < 0)
		return e == -EFBIG ? -EBADMSG : e;
	e = -EBADMSG;
	if (len < META_HEADER_LEN || memcmp(obj, META_MAGIC, 8) != 0 || get_le32(obj + 8) != META_ZSTD)
		goto out;
	plen = get_le64(obj + 16);
	if (plen > META_MAX_BYTES || !(plain = malloc(plen ? plen : 1))) {
		e = plen > META_MAX_BYTES ? -EBADMSG : -ENOMEM;
		goto out;
	}
	n = ZSTD_decompress(plain, plen, obj + META_HEADER_LEN, len - META_HEADER_LEN);
	if (ZSTD_isError(n) || n != plen) {
		free(plain);
		goto out;
	}
	*ret = plain;
	*ret_len = plen;
	e = 0;
out:
	free(obj);
	return e;
}

/* ---- the local copy of a remote catalog ---- */

static int gen_file_read(Repo *r, uint64_t *ret_gen, bool *ret_dirty)
{
	_cleanup_free_ char *path = xasprintf("%s/catalog.gen", r->workdir);
	_cleanup_free_ char *text = NULL;
	unsigned long long g;
	char word[16] = "";
	int e = file_read_all(path, 256, &text, NULL);
	if (e < 0)
		return e;
	if (sscanf(text, "%llu %15s", &g, word) < 1)
		return -EBADMSG;
	*ret_gen = g;
	*ret_dirty = strcmp(word, "dirty") == 0;
	return 0;
}

static int gen_file_write(Repo *r, uint64_t gen, bool dirty)
{
	_cleanup_free_ char *path = xasprintf("%s/catalog.gen", r->workdir);
	char text[64];
	int n = snprintf(text, sizeof(text), "%llu%s\n", (unsigned long long)gen,
			 dirty ? " dirty" : "");
	return file_write_atomic(path, text, (size_t)n, 0600);
}

/* Copy the database file src into the catalog, in place: open connections see the change. */
static int catalog_install(Repo *r, const char *src)
{
	sqlite3 *from = NULL, *to = NULL;
	sqlite3_backup *bk;
	int rc;

	rc = sqlite3_open_v2(src, &from, SQLITE_OPEN_READONLY, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_open_v2(r->catalog_path, &to,
				     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_busy_timeout(to, 60000);
		bk = sqlite3_backup_init(to, "main", from, "main");
		if (!bk)
			rc = sqlite3_errcode(to);
		else {
			do {
				rc = sqlite3_backup_step(bk, -1);
				if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
					sqlite3_sleep(50);
			} while (rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED);
			rc = sqlite3_backup_finish(bk);
		}
	}
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(to, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		log_error("could not install the catalog copy: %s",
			  to ? sqlite3_errmsg(to) : sqlite3_errstr(rc));
	sqlite3_close(from);
	sqlite3_close(to);
	return rc == SQLITE_OK ? 0 : -EIO;
}

/* Fetch generation gen from the bucket into the local catalog. */
static int catalog_fetch(Repo *r, uint64_t gen)
{
	char name[64];
	void *img = NULL;
	size_t len;
	_cleanup_free_ char *tmp = xasprintf("%s/tmp/catalog-fetch.db", r->workdir);
	int e;

	remote_catalog_name(gen, name, sizeof(name));
	e = repo_meta_get(r, name, &img, &len);
	if (e == 0)
		e = file_write_atomic(tmp, img, len, 0600);
	free(img);
	if (e == 0) {
		mode_t old = umask(0077);
		e = catalog_install(r, tmp);
		umask(old);
	}
	unlink(tmp);
	if (e == 0)
		e = gen_file_write(r, gen, false);
	if (e == 0)
		r->gen = gen;
	return e;
}

/* Bring the local copy to the newest generation if it is behind or was left dirty. */
static int catalog_sync(Repo *r)
{
	uint64_t latest, have = 0;
	bool dirty = false;
	int e = remote_catalog_latest(r->backend, &latest);

	if (e == -ENOENT)
		return -EBADMSG; /* config without catalog: damaged */
	if (e < 0)
		return e;
	e = gen_file_read(r, &have, &dirty);
	if (e < 0 && e != -ENOENT)
		log_warning("ignoring a damaged %s/catalog.gen: %s", r->workdir, strerror(-e));
	if (e == 0 && !dirty && have == latest && access(r->catalog_path, F_OK) == 0) {
		r->gen = have;
		return 0;
	}
	log_debug("fetching catalog generation %llu", (unsigned long long)latest);
	return catalog_fetch(r, latest);
}

static int cache_lock(Repo *r, bool wait, int *ret_fd)
{
	_cleanup_free_ char *path = xasprintf("%s/catalog.lock", r->workdir);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	while (flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB)) < 0) {
		if (errno == EINTR)
			continue;
		int e = errno == EWOULDBLOCK ? -EBUSY : -errno;
		close(fd);
		return e;
	}
	*ret_fd = fd;
	return 0;
}

/*
 * Readers sync under the cache lock taken without waiting: when a writer on
 * this machine holds it, the local copy is newer than the bucket's and is
 * used as it is.
 */
int repo_refresh(Repo *r)
{
	int fd, e;
	if (!r->remote || r->lock)
		return 0;
	e = cache_lock(r, false, &fd);
	if (e == -EBUSY)
		return 0;
	if (e < 0)
		return e;
	e = catalog_sync(r);
	close(fd);
	return e;
}

static int catalog_publish(Repo *r, uint64_t gen)
{
	_cleanup_free_ char *tmp = xasprintf("%s/tmp/catalog-publish.db", r->workdir);
	_cleanup_free_ char *sql = NULL;
	char name[64], *img = NULL, *err = NULL;
	size_t len;
	uint64_t size;
	int e;

	unlink(tmp);
	sql = sqlite3_mprintf("VACUUM INTO %Q", tmp);
	if (!sql)
		return -ENOMEM;
	if (sqlite3_exec(catalog_sqlite(r->catalog), sql, NULL, NULL, &err) != SQLITE_OK) {
		log_error("could not copy the catalog for publication: %s", err ? err : "?");
		sqlite3_free(err);
		sqlite3_free(sql);
		sql = NULL;
		return -EIO;
	}
	sqlite3_free(sql);
	sql = NULL;
	e = file_read_all(tmp, SIZE_MAX, &img, &len);
	unlink(tmp);
	if (e < 0)
		return e;
	remote_catalog_name(gen, name, sizeof(name));
	e = store_size(r->backend, name, &size);
	if (e == 0)
		e = -ESTALE; /* someone published this generation: never overwrite it */
	else if (e == -ENOENT)
		e = repo_meta_put(r, name, img, len);
	free(img);
	if (e == 0)
		e = gen_file_write(r, gen, r->lock != NULL);
	if (e == 0)
		r->gen = gen;
	return e;
}

int repo_write_begin(Repo *r, char **ret_holder)
{
	RemoteLockOptions o = {.wait_s = r->lock_wait_s};
	int e;

	if (!r->remote)
		return 0;
	if (r->lock)
		return -EALREADY;
	e = remote_lock_acquire(r->backend, &o, &r->lock, ret_holder);
	if (e < 0)
		return e;
	/* readers on this machine now use the local copy as it is */
	e = cache_lock(r, true, &r->cache_lock_fd);
	if (e == 0)
		e = catalog_sync(r);
	if (e == 0)
		e = gen_file_write(r, r->gen, true);
	if (e < 0) {
		if (r->cache_lock_fd >= 0)
			close(r->cache_lock_fd);
		r->cache_lock_fd = -1;
		r->lock = remote_lock_release(r->lock);
	}
	return e;
}

static int publish_next(Repo *r)
{
	uint64_t latest;
	int e = remote_lock_check(r->lock);
	if (e == 0)
		e = remote_catalog_latest(r->backend, &latest);
	if (e == 0 && latest != r->gen)
		e = -ESTALE;
	if (e == 0)
		e = catalog_publish(r, r->gen + 1);
	if (e == 0 && r->gen > CATALOG_GENERATIONS_KEPT) {
		int p = remote_catalog_prune(r->backend, r->gen - CATALOG_GENERATIONS_KEPT);
		if (p < 0)
			log_warning("could not remove old catalog generations: %s", strerror(-p));
	}
	return e;
}

int repo_write_end(Repo *r, bool publish)
{
	int e = 0;
	if (!r->remote || !r->lock)
		return 0;
	if (publish) {
		e = publish_next(r);
		if (e == 0)
			e = gen_file_write(r, r->gen, false);
	}
	r->lock = remote_lock_release(r->lock);
	close(r->cache_lock_fd);
	r->cache_lock_fd = -1;
	return e;
}

uint64_t repo_generation(const Repo *r) { return r->gen; }
bool repo_is_remote(const Repo *r) { return r->remote; }
const char *repo_workdir(const Repo *r) { return r->workdir; }

/* ---- open ---- */

static int open_remote(Repo *r, const RepoLocation *l)
{
	_cleanup_free_ char *dir = NULL;
	int e;

	r->remote = true;
	r->lock_wait_s = l->lock_wait_s;
	if (asprintf(&dir, "%s/%s", l->cache_dir, r->config.id) < 0) {
		dir = NULL;
		return -ENOMEM;
	}
	e = repo_set_workdir(r, dir);
	if (e == 0)
		e = workdir_prepare(dir);
	if (e == 0)
		e = repo_refresh(r);
	if (e == 0 && access(r->catalog_path, F_OK) < 0) /* a writer here never published */
		e = -EBADMSG;
	return e;
}

int repo_open_at(const RepoLocation *l, Repo **ret)
{
	Repo *r = repo_alloc(l->url);
	struct stat st;
	int e;

	if (!r)
		return -ENOMEM;
	if (!l->s3) {
		e = stat(l->path, &st) < 0 ? -errno : !S_ISDIR(st.st_mode) ? -ENOTDIR : 0;
		if (e < 0)
			goto fail;
	}
	e = backend_for(l, &r->backend);
	if (e == 0)
		e = config_get(r->backend, &r->config);
	if (e < 0)
		goto fail;
	e = l->s3 ? open_remote(r, l) : repo_set_workdir(r, l->path);
	if (e < 0)
		goto fail;
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

int repo_open(const char *path, Repo **ret)
{
	RepoLocation l = {.url = path, .path = path};
	return repo_open_at(&l, ret);
}

Repo *repo_free(Repo *r)
{
	if (!r)
		return NULL;
	if (r->lock) /* a writer that did not end: its changes are discarded at the next open */
		r->lock = remote_lock_release(r->lock);
	if (r->cache_lock_fd >= 0)
		close(r->cache_lock_fd);
	catalog_free(r->catalog);
	store_backend_free(r->backend);
	free(r->url);
	free(r->workdir);
	free(r->catalog_path);
	free(r);
	return NULL;
}

const char *repo_path(const Repo *r) { return r->url; }
const RepoConfig *repo_config(const Repo *r) { return &r->config; }
StoreBackend *repo_backend(Repo *r) { return r->backend; }
Catalog *repo_catalog(Repo *r) { return r->catalog; }

int repo_catalog_open(Repo *r, Catalog **ret)
{
	return catalog_open(r->catalog_path, false, ret);
}

static void lock_path(const Repo *r, const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/locks/%s.lock", r->workdir, name);
}

static int lock_dir_ensure(Repo *r)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s/locks", r->workdir);
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
	snprintf(path, sizeof(path), "%s/locks/maintenance", r->workdir);
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
