#include "store/repo.h"
#include "store/remote.h"
#include "store/delta.h"
#include "store/crypt.h"
#include "store/manifest.h"
#include "store/repair.h"
#include "common/log.h"
#include "common/util.h"

#include <fcntl.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <openssl/crypto.h>
#include <zstd.h>

#define CONFIG_MAX_BYTES (64 * 1024)
#define META_MAGIC "PGBKOBJ1"
#define META_HEADER_LEN 24
#define META_MAX_BYTES (4ULL << 30)
enum { META_ZSTD = 1, META_SEALED = 2 };
#define KEYS_MAX_BYTES 4096
/* generations kept in the bucket besides the newest: a reader that listed an
 * older one a moment ago can still fetch it */
#define CATALOG_GENERATIONS_KEPT 3
/* from this repository format on, a publication may be a delta (docs/design.md) */
#define CATALOG_FORMAT_DELTAS 2
/* a whole catalog again once the deltas since the last one number more than
 * this, or weigh more than 1/CATALOG_DELTAS_FRACTION of it and more than
 * CATALOG_DELTAS_FLOOR bytes (PGBAKFS_CATALOG_DELTAS_MAX overrides the count: tests) */
#define CATALOG_DELTAS_MAX 64
#define CATALOG_DELTAS_FRACTION 4
#define CATALOG_DELTAS_FLOOR (1024 * 1024)

struct Repo {
	char *url;
	char *objdir;  /* the directory of a local repository's objects; NULL for S3 */
	char *workdir;
	char *catalog_path;
	StoreBackend *backend;
	Catalog *catalog;
	RepoConfig config;
	/* remote repositories only */
	bool remote;         /* catalog published by generations: S3, or encrypted */
	bool encrypted;
	CryptKeys keys;
	unsigned lock_wait_s;
	uint64_t gen;        /* generation the local catalog copies */
	RemoteLock *lock;    /* held between write_begin and write_end */
	bool writing;        /* between write_begin and write_end (every kind) */
	int cache_lock_fd;   /* flock on <workdir>/catalog.lock while writing */
	int disk_cache_fd;   /* flock on <workdir>/chunks.lock while using the disk cache */
	int use_lock_fd;     /* local: shared flock on locks/in-use while open (repair: exclusive) */
	bool publish_whole;  /* the next publication is a whole catalog (secrets were removed) */
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
			 "id = %s\n"
			 "encryption = %s\n",
			 c->format, (unsigned long long)c->chunk_size,
			 (unsigned long long)c->pack_size, c->compress_level, c->id,
			 c->encrypted ? "aes-256-gcm" : "none");
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
		else if (strcmp(key, "encryption") == 0) {
			if (strcmp(value, "aes-256-gcm") == 0)
				c.encrypted = true;
			else if (strcmp(value, "none") != 0)
				return -EPROTONOSUPPORT;
		}
	}
	if (c.format == 0)
		return -EBADMSG;
	if (c.format > PGBAKFS_REPO_FORMAT) {
		*ret = c;
		return -EPROTONOSUPPORT;
	}
	/* the id names the cache directory: exactly 32 hex digits, nothing else */
	if (!chunk_size_valid(c.chunk_size) || c.pack_size < c.chunk_size || strlen(c.id) != 32 ||
	    strspn(c.id, "0123456789abcdef") != 32)
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

/*
 * Every connection to a repository's catalog: long lists become id blocks
 * only in format 2 (an older binary reading a format-1 repository would
 * misread them; it refuses format 2 outright).
 */
static int repo_catalog_connect(Repo *r, const char *path, Catalog **ret)
{
	int e = catalog_open(path, false, ret);
	if (e == 0) {
		catalog_set_format(*ret, r->config.format);
		catalog_set_idblocks(*ret, r->config.format >= 2);
	}
	/* format 2: chunk rows keyed by 8 bytes of the id (format 1 keeps what its release reads) */
	if (e == 0 && r->config.format >= 2) {
		int k = catalog_chunks_rekey(*ret);
		if (k < 0)
			*ret = catalog_free(*ret);
		e = k < 0 ? k : 0;
	}
	return e;
}

static Repo *repo_alloc(const char *url)
{
	Repo *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->cache_lock_fd = -1;
	r->disk_cache_fd = -1;
	r->use_lock_fd = -1;
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

/*
 * The cache directory of a repository: its id and where it is (two copies of
 * one repository, same id, must not share a catalog copy).
 */
static char *workdir_for(const RepoLocation *l, const char *id)
{
	char where[PATH_MAX * 2], real[PATH_MAX], hex[65];
	ChunkId h;
	if (l->s3)
		snprintf(where, sizeof(where), "%s|%s|%s", l->s3->endpoint ? l->s3->endpoint : "",
			 l->s3->bucket, l->s3->prefix ? l->s3->prefix : "");
	else
		snprintf(where, sizeof(where), "%s", realpath(l->path, real) ? real : l->path);
	chunk_hash(where, strlen(where), &h);
	hex_encode(h.b, 4, hex);
	return xasprintf("%s/%s-%s", l->cache_dir, id, hex);
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
	return l->s3 ? store_s3_new(l->s3, ret) : store_local_new(l->path, ret);
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

/* A new or empty directory for a local repository, 0700. */
static int local_dir_claim(const char *path)
{
	char sub[PATH_MAX];
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
	return r;
}

static int init_local(const char *path, RepoConfig *c)
{
	char sub[PATH_MAX];
	StoreBackend *b = NULL;
	int r = workdir_prepare(path);

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

/* The master key from the key file and a passphrase, and the keys derived from it. */
static int keys_load(Repo *r, const char *text, size_t len, const RepoLocation *l)
{
	uint8_t master[CRYPT_KEY_LEN];
	int e;
	if (!l->passphrase)
		return -ENOKEY;
	e = crypt_keyfile_unwrap(text, len, l->passphrase, l->passphrase_len, master);
	if (e == 0) {
		crypt_keys_derive(master, &r->keys);
		r->encrypted = true;
	}
	OPENSSL_cleanse(master, sizeof(master));
	return e;
}

static int keys_create(Repo *r, const RepoLocation *l)
{
	uint8_t master[CRYPT_KEY_LEN];
	char *text = NULL;
	size_t len = 0;
	int e;
	if (!l->passphrase)
		return -ENOKEY;
	e = crypt_keyfile_create(l->passphrase, l->passphrase_len, NULL, master, &text, &len);
	if (e == 0)
		e = store_put(r->backend, "keys", text, len);
	if (e == 0) {
		crypt_keys_derive(master, &r->keys);
		r->encrypted = true;
	}
	OPENSSL_cleanse(master, sizeof(master));
	free(text);
	return e;
}

static int any_object(const char *name _unused_, uint64_t size _unused_, void *userdata)
{
	*(bool *)userdata = true;
	return 1; /* stop */
}

static int catalog_publish(Repo *r, uint64_t gen);

/* A repository whose catalog is published by generations: S3, or encrypted. */
static int init_published(const RepoLocation *l, RepoConfig *c)
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
	if (e == 0)
		dir = workdir_for(l, c->id);
	r->remote = true;
	r->config = *c;
	if (e == 0 && c->encrypted)
		e = keys_create(r, l);
	if (e == 0)
		e = repo_set_workdir(r, dir);
	if (e == 0)
		e = workdir_prepare(dir);
	if (e == 0)
		e = catalog_create(r->catalog_path);
	if (e == 0)
		e = repo_catalog_connect(r, r->catalog_path, &r->catalog);
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
	if (o && o->encrypt) {
		if (!l->passphrase)
			return -ENOKEY;
		c.encrypted = true;
	}
	if (!l->s3) {
		r = local_dir_claim(l->path);
		if (r < 0)
			return r;
	}
	return l->s3 || c.encrypted ? init_published(l, &c) : init_local(l->path, &c);
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
	put_le32(obj + 8, META_ZSTD | (r->encrypted ? META_SEALED : 0));
	put_le32(obj + 12, 0);
	put_le64(obj + 16, len);
	e = 0;
	if (r->encrypted) { /* the name as associated data: an object opens only under its own name */
		uint8_t *sealed = malloc(META_HEADER_LEN + n + CRYPT_OVERHEAD);
		e = sealed ? crypt_seal(r->keys.meta, name, strlen(name), obj + META_HEADER_LEN, n,
					sealed + META_HEADER_LEN, &n)
			   : -ENOMEM;
		if (e == 0) {
			memcpy(sealed, obj, META_HEADER_LEN);
			free(obj);
			obj = sealed;
		} else
			free(sealed);
	}
	if (e == 0)
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
	if (len < META_HEADER_LEN || memcmp(obj, META_MAGIC, 8) != 0 ||
	    get_le32(obj + 8) != (META_ZSTD | (r->encrypted ? META_SEALED : 0)))
		goto out;
	if (r->encrypted) {
		uint8_t *opened = len - META_HEADER_LEN >= CRYPT_OVERHEAD ? malloc(len) : NULL;
		size_t olen;
		e = !opened ? -EBADMSG
			    : crypt_open(r->keys.meta, name, strlen(name), obj + META_HEADER_LEN,
					 len - META_HEADER_LEN, opened + META_HEADER_LEN, &olen);
		if (e < 0) {
			free(opened);
			goto out;
		}
		memcpy(opened, obj, META_HEADER_LEN);
		free(obj);
		obj = opened;
		len = META_HEADER_LEN + olen;
		e = -EBADMSG;
	}
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

/*
 * The base copy, <workdir>/catalog.base.db, is the catalog exactly as the
 * generation named in catalog.base.gen (no local rows, no unpublished
 * change): what a writer diffs its catalog against to make a delta. A
 * missing catalog.base.gen means no valid copy; it is removed before the
 * copy is changed and written after, so a crash between leaves none.
 */
static void work_path(const Repo *r, const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s", r->workdir, name);
}

static int base_gen_read(Repo *r, uint64_t *ret)
{
	char path[PATH_MAX], db[PATH_MAX];
	_cleanup_free_ char *text = NULL;
	unsigned long long g;
	int e;

	work_path(r, "catalog.base.gen", path, sizeof(path));
	work_path(r, "catalog.base.db", db, sizeof(db));
	e = file_read_all(path, 256, &text, NULL);
	if (e < 0)
		return e;
	if (sscanf(text, "%llu", &g) != 1 || access(db, F_OK) < 0)
		return -ENOENT;
	*ret = g;
	return 0;
}

static int base_gen_write(Repo *r, uint64_t gen)
{
	char path[PATH_MAX], text[32];
	work_path(r, "catalog.base.gen", path, sizeof(path));
	int n = snprintf(text, sizeof(text), "%llu\n", (unsigned long long)gen);
	return file_write_atomic(path, text, (size_t)n, 0600);
}

static void base_gen_clear(Repo *r)
{
	char path[PATH_MAX];
	work_path(r, "catalog.base.gen", path, sizeof(path));
	unlink(path);
}

/* Make the database file img (a generation's image) the base copy of generation gen. */
static int base_copy_replace(Repo *r, const char *img, uint64_t gen)
{
	static const char *const names[] = {"catalog.base.db-wal", "catalog.base.db-shm"};
	char db[PATH_MAX], f[PATH_MAX];
	int e = 0;

	work_path(r, "catalog.base.db", db, sizeof(db));
	base_gen_clear(r);
	/* a WAL left by a crash would be replayed over the new file */
	for (size_t i = 0; i < ELEMENTSOF(names); i++) {
		work_path(r, names[i], f, sizeof(f));
		if (unlink(f) < 0 && errno != ENOENT)
			e = -errno;
	}
	if (e == 0 && rename(img, db) < 0)
		e = -errno;
	if (e == 0)
		e = base_gen_write(r, gen);
	return e;
}

/* The deltas that lead from one generation to a later one, fetched and checked. */
typedef struct DeltaChain {
	void **obj;
	const void **cs;
	size_t *len;
	size_t n;
	uint64_t from, to;
} DeltaChain;

static void chain_clear(DeltaChain *c)
{
	for (size_t i = 0; i < c->n; i++)
		free(c->obj[i]);
	free(c->obj);
	free(c->cs);
	free(c->len);
	*c = (DeltaChain){0};
}

/* Bytes of the deltas from+1..to in the listing; UINT64_MAX when one is missing. */
static uint64_t chain_size(const RemoteCatalogList *cl, uint64_t from, uint64_t to)
{
	uint64_t sum = 0;
	if (to - from > cl->n) /* fewer objects than generations (a jump: repair) */
		return UINT64_MAX;
	for (uint64_t g = from + 1; g <= to; g++) {
		const RemoteGen *d = remote_catalog_list_find(cl, g, true);
		if (!d)
			return UINT64_MAX;
		sum += d->size;
	}
	return sum;
}

/*
 * Fetch the deltas from+1..to and check each (length, GCM tag when sealed,
 * the generations it joins, its SHA-256): -EBADMSG with one error line for a
 * damaged one, -ENOENT when one is missing (the caller falls back to a base).
 */
static int chain_fetch(Repo *r, const RemoteCatalogList *cl, uint64_t from, uint64_t to,
		       DeltaChain *ret)
{
	DeltaChain c = {.from = from, .to = to};
	size_t n = (size_t)(to - from);
	int e = 0;

	if (to < from)
		return -EINVAL;
	if (to - from > cl->n) /* fewer objects than generations: some are missing */
		return -ENOENT;
	if (n && (!(c.obj = calloc(n, sizeof(*c.obj))) || !(c.cs = calloc(n, sizeof(*c.cs))) ||
		  !(c.len = calloc(n, sizeof(*c.len))))) {
		chain_clear(&c);
		return -ENOMEM;
	}
	for (uint64_t g = from + 1; g <= to && e == 0; g++) {
		char name[64];
		size_t len = 0;
		remote_catalog_delta_name(g, name, sizeof(name));
		if (!remote_catalog_list_find(cl, g, true)) {
			log_debug("catalog delta %s is not in the repository", name);
			e = -ENOENT;
			break;
		}
		e = repo_meta_get(r, name, &c.obj[c.n], &len);
		if (e == 0)
			c.n++;
		if (e == 0)
			e = delta_unframe(c.obj[c.n - 1], len, g - 1, g, &c.cs[c.n - 1], &c.len[c.n - 1]);
		if (e == -EBADMSG)
			log_warning("the catalog delta \"%s\" is damaged (truncated, altered or "
				  "misnamed): not applied", name);
	}
	if (e < 0) {
		chain_clear(&c);
		return e;
	}
	*ret = c;
	return 0;
}

/*
 * Apply a chain to the database at path, all or nothing. Through
 * catalog_open, which brings an older file to this binary's schema first,
 * as the writer's copies were; secure_delete, so rows a delta rewrote (a
 * scrubbed password) do not stay in free pages.
 */
static int chain_apply(const char *path, const DeltaChain *c)
{
	Catalog *cat = NULL;
	int e = catalog_open(path, false, &cat);
	if (e == 0 && sqlite3_exec(catalog_sqlite(cat), "PRAGMA secure_delete=ON", NULL, NULL,
				   NULL) != SQLITE_OK)
		e = -EIO;
	if (e == 0)
		e = delta_apply(catalog_sqlite(cat), c->cs, c->len, c->n);
	catalog_free(cat);
	return e;
}

/* The base copy at c->from follows the catalog to c->to, or is dropped. */
static void base_copy_forward(Repo *r, const DeltaChain *c)
{
	char db[PATH_MAX];
	work_path(r, "catalog.base.db", db, sizeof(db));
	uint64_t g;
	if (base_gen_read(r, &g) < 0 || g != c->from)
		return;
	base_gen_clear(r);
	if (chain_apply(db, c) == 0)
		base_gen_write(r, c->to);
	else
		unlink(db);
}

/*
 * Fetch the whole generation gen into the local catalog (in place: open
 * connections see it) and, when deltas are in use, keep the image as the
 * base copy. catalog.gen is left to the caller.
 */
static int catalog_fetch(Repo *r, uint64_t gen)
{
	char name[64];
	void *img = NULL;
	size_t len;
	_cleanup_free_ char *tmp = xasprintf("%s/tmp/catalog-fetch.db", r->workdir);
	int e;

	remote_catalog_name(gen, name, sizeof(name));
	e = repo_meta_get(r, name, &img, &len);
	if (e == -EBADMSG)
		log_warning("the catalog generation \"%s\" is damaged", name);
	if (e == 0)
		e = file_write_atomic(tmp, img, len, 0600);
	free(img);
	if (e == 0) {
		mode_t old = umask(0077);
		e = catalog_install(r, tmp);
		umask(old);
	}
	if (e == 0 && r->config.format >= CATALOG_FORMAT_DELTAS &&
	    base_copy_replace(r, tmp, gen) < 0)
		base_gen_clear(r);
	unlink(tmp);
	return e;
}

/*
 * From the local copy at have, apply the deltas up to latest. Anything short
 * of the whole chain applied (a delta missing or damaged, a conflict, a chain
 * heavier than the newest base) leaves the copy as it was: the caller then
 * fetches a base.
 */
static int catalog_forward(Repo *r, const RemoteCatalogList *cl, uint64_t have, uint64_t latest)
{
	const RemoteGen *b = remote_catalog_list_base(cl, latest);
	DeltaChain c;
	uint64_t size = chain_size(cl, have, latest);
	int e;

	if (size == UINT64_MAX)
		return -ENOENT;
	if (b && b->gen > have && size > b->size)
		return -E2BIG; /* the base is cheaper to fetch */
	e = chain_fetch(r, cl, have, latest, &c);
	if (e < 0)
		return e;
	e = gen_file_write(r, have, true); /* a crash while applying: fetch again */
	if (e == 0)
		e = chain_apply(r->catalog_path, &c);
	if (e == 0) {
		log_debug("applied catalog deltas %llu..%llu (%zu, %llu bytes)",
			  (unsigned long long)have + 1, (unsigned long long)latest, c.n,
			  (unsigned long long)size);
		base_copy_forward(r, &c);
		e = gen_file_write(r, latest, false);
		if (e == 0)
			r->gen = latest;
	} else if (gen_file_write(r, have, false) < 0) { /* rolled back: still have */
		log_warning("could not write %s/catalog.gen", r->workdir);
	}
	chain_clear(&c);
	return e;
}

/* Fetch the newest base at or below latest and apply the deltas after it. */
static int catalog_fetch_latest(Repo *r, const RemoteCatalogList *cl, uint64_t have,
				uint64_t latest)
{
	const RemoteGen *b = remote_catalog_list_base(cl, latest);
	DeltaChain c = {0};
	int e;

	if (!b) {
		log_warning("the repository has catalog deltas up to %llu but no whole catalog "
			  "before them", (unsigned long long)latest);
		return -EBADMSG;
	}
	/* every delta first: nothing is changed unless the whole way is there */
	e = chain_fetch(r, cl, b->gen, latest, &c);
	if (e == -ENOENT)
		log_warning("the catalog delta %llu is missing from the repository",
			  (unsigned long long)latest);
	if (e < 0)
		return e == -ENOENT ? -EBADMSG : e;
	log_debug("fetching catalog generation %llu%s", (unsigned long long)b->gen,
		  c.n ? " and the deltas after it" : "");
	e = gen_file_write(r, have, true);
	if (e == 0)
		e = catalog_fetch(r, b->gen);
	if (e == 0 && c.n) {
		e = chain_apply(r->catalog_path, &c);
		if (e == 0) {
			log_debug("applied catalog deltas %llu..%llu (%zu)",
				  (unsigned long long)b->gen + 1, (unsigned long long)latest, c.n);
			base_copy_forward(r, &c);
		}
	}
	if (e == 0)
		e = gen_file_write(r, latest, false);
	if (e == 0)
		r->gen = latest;
	chain_clear(&c);
	return e;
}

/* Bring the local copy to the newest generation if it is behind or was left dirty. */
static int catalog_sync(Repo *r)
{
	RemoteCatalogList cl = {0};
	uint64_t latest = 0, have = 0;
	bool dirty = false;
	int e = remote_catalog_list(r->backend, &cl);

	if (e == 0)
		e = remote_catalog_list_latest(&cl, &latest);
	if (e == -ENOENT)
		e = -EBADMSG; /* config without catalog: damaged */
	if (e < 0)
		goto out;
	e = gen_file_read(r, &have, &dirty);
	if (e < 0 && e != -ENOENT)
		log_warning("ignoring a damaged %s/catalog.gen: %s", r->workdir, strerror(-e));
	bool known = e == 0, present = access(r->catalog_path, F_OK) == 0;
	if (known && !dirty && have == latest && present) {
		r->gen = have;
		e = 0;
		goto out;
	}
	if (known && latest < have) {
		/* newer generations vanished: never work on an older catalog than one seen */
		log_warning("the newest catalog generation in the repository (%llu) is older than "
			    "this machine's copy (%llu); if that is on purpose, remove %s",
			    (unsigned long long)latest, (unsigned long long)have, r->workdir);
		e = -ESTALE;
		goto out;
	}
	if (known && !dirty && present) {
		e = catalog_forward(r, &cl, have, latest);
		if (e == 0)
			goto out;
		log_debug("catalog deltas from %llu not applied (%s): fetching a whole catalog",
			  (unsigned long long)have, strerror(-e));
	}
	e = catalog_fetch_latest(r, &cl, known ? have : 0, latest);
out:
	remote_catalog_list_clear(&cl);
	return e;
}

/* flock(op) on path (created 0600); -EBUSY when held elsewhere and op has LOCK_NB. */
static int lock_file_op(const char *path, int op, int *ret_fd)
{
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
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

/* An exclusive flock on path (created 0600); -EBUSY when held and !wait. */
static int lock_file(const char *path, bool wait, int *ret_fd)
{
	return lock_file_op(path, LOCK_EX | (wait ? 0 : LOCK_NB), ret_fd);
}

static int cache_lock(Repo *r, bool wait, int *ret_fd)
{
	_cleanup_free_ char *path = xasprintf("%s/catalog.lock", r->workdir);
	return lock_file(path, wait, ret_fd);
}

/*
 * Readers sync under the cache lock taken without waiting: when a writer on
 * this machine holds it, the local copy is newer than the bucket's and is
 * used as it is.
 */
int repo_refresh(Repo *r)
{
	int fd = -1, e;
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
	if (e < 0) {
		unlink(tmp);
		return e;
	}
	remote_catalog_name(gen, name, sizeof(name));
	e = store_size(r->backend, name, &size);
	if (e == 0)
		e = -ESTALE; /* someone published this generation: never overwrite it */
	else if (e == -ENOENT)
		e = repo_meta_put(r, name, img, len);
	free(img);
	/* the image is generation gen exactly: the next delta's base */
	if (e == 0 && r->config.format >= CATALOG_FORMAT_DELTAS && base_copy_replace(r, tmp, gen) < 0)
		base_gen_clear(r);
	unlink(tmp);
	if (e == 0)
		e = gen_file_write(r, gen, r->lock != NULL);
	if (e == 0)
		r->gen = gen;
	return e;
}

/*
 * Make the base copy generation gen (the local catalog's), from the bucket
 * when this machine has none: after `upgrade`, or a crash while it changed.
 */
static int base_copy_ready(Repo *r, const RemoteCatalogList *cl, uint64_t gen)
{
	char tmp[PATH_MAX];
	work_path(r, "tmp/catalog-base.db", tmp, sizeof(tmp));
	const RemoteGen *b = remote_catalog_list_base(cl, gen);
	DeltaChain c = {0};
	char name[64];
	void *img = NULL;
	size_t len;
	uint64_t have;
	int e;

	if (base_gen_read(r, &have) == 0 && have == gen)
		return 0;
	if (!b)
		return -ENOENT;
	log_debug("making the base copy of catalog generation %llu", (unsigned long long)gen);
	e = chain_fetch(r, cl, b->gen, gen, &c);
	remote_catalog_name(b->gen, name, sizeof(name));
	if (e == 0)
		e = repo_meta_get(r, name, &img, &len);
	if (e == 0)
		e = file_write_atomic(tmp, img, len, 0600);
	free(img);
	if (e == 0)
		e = base_copy_replace(r, tmp, b->gen);
	unlink(tmp);
	if (e == 0 && c.n) {
		base_copy_forward(r, &c);
		e = base_gen_read(r, &have) == 0 && have == gen ? 0 : -EBADMSG;
	}
	chain_clear(&c);
	return e;
}

/*
 * Publish generation gen as a delta when it pays: 1 published (as a delta,
 * and also whole when the deltas since the last whole catalog grew too
 * many or too heavy), 0 when a whole catalog is to be published instead,
 * <0 on error (nothing published).
 */
static int catalog_publish_delta(Repo *r, uint64_t gen)
{
	char base[PATH_MAX];
	work_path(r, "catalog.base.db", base, sizeof(base));
	RemoteCatalogList cl = {0};
	const char *env = getenv("PGBAKFS_CATALOG_DELTAS_MAX");
	unsigned long max = env && *env ? strtoul(env, NULL, 10) : CATALOG_DELTAS_MAX;
	void *cs = NULL, *framed = NULL;
	size_t cs_len = 0, len = 0;
	uint64_t sum = 0, n = 0, size;
	char name[64];
	int e = remote_catalog_list(r->backend, &cl);
	const RemoteGen *b = e == 0 ? remote_catalog_list_base(&cl, gen - 1) : NULL;

	if (e == 0 && (!b || gen - b->gen > cl.n + 1))
		e = -ENOENT;
	if (e == 0)
		e = base_copy_ready(r, &cl, gen - 1);
	if (e == 0) { /* to this binary's schema, as the catalog was when it was opened */
		Catalog *cat = NULL;
		e = catalog_open(base, false, &cat);
		catalog_free(cat);
	}
	if (e == 0)
		e = delta_diff(r->catalog_path, base, &cs, &cs_len);
	for (uint64_t g = b ? b->gen + 1 : gen; e == 0 && g < gen; g++) {
		const RemoteGen *d = remote_catalog_list_find(&cl, g, true);
		sum += d ? d->size : 0;
		n++;
	}
	uint64_t base_size = b ? b->size : 0; /* b points into cl */
	remote_catalog_list_clear(&cl);
	if (e < 0) {
		log_debug("publishing catalog generation %llu whole: %s", (unsigned long long)gen,
			  strerror(-e));
		free(cs);
		return e == -ENOMEM ? e : 0;
	}
	bool compact = n + 1 > max || (sum + cs_len > base_size / CATALOG_DELTAS_FRACTION &&
				       sum + cs_len > CATALOG_DELTAS_FLOOR);
	/* a delta that weighs as much as a whole catalog is pointless */
	if (compact && cs_len >= base_size) {
		free(cs);
		return 0;
	}
	e = delta_frame(gen - 1, gen, cs, cs_len, &framed, &len);
	remote_catalog_delta_name(gen, name, sizeof(name));
	if (e == 0) {
		e = store_size(r->backend, name, &size);
		if (e == 0)
			e = -ESTALE; /* someone published this generation: never overwrite it */
		else if (e == -ENOENT)
			e = repo_meta_put(r, name, framed, len);
	}
	free(framed);
	if (e == 0) { /* the base copy follows: it is gen now */
		DeltaChain c = {.cs = (const void **)&cs, .len = &cs_len, .n = 1, .from = gen - 1,
				.to = gen};
		base_copy_forward(r, &c);
		log_debug("published catalog generation %llu as a delta of %zu bytes%s",
			  (unsigned long long)gen, len, compact ? " (and whole)" : "");
	}
	free(cs);
	if (e < 0)
		return e;
	/* compaction: the delta is published already; readers holding gen - 1 still use it */
	if (compact) {
		int w = catalog_publish(r, gen);
		if (w < 0)
			log_warning("could not publish catalog generation %llu whole (deltas are "
				    "used until the next one): %s", (unsigned long long)gen,
				    strerror(-w));
		else
			return 1;
	}
	e = gen_file_write(r, gen, r->lock != NULL);
	if (e == 0)
		r->gen = gen;
	return e < 0 ? e : 1;
}

/* Generation r->gen + 1: a delta or a whole catalog (format 1: always whole). */
static int catalog_publish_next(Repo *r)
{
	uint64_t gen = r->gen + 1, size;
	char name[64];
	int e = 0;

	/* a catalog migrated here (e.g. its chunk rows re-keyed) reaches readers whole */
	if (catalog_publish_whole_take(r->catalog) > 0)
		r->publish_whole = true;
	if (r->config.format >= CATALOG_FORMAT_DELTAS && !r->publish_whole) {
		e = catalog_publish_delta(r, gen);
		if (e != 0)
			return e < 0 ? e : 0;
	}
	/* a whole catalog: no delta of that number may exist either */
	remote_catalog_delta_name(gen, name, sizeof(name));
	e = store_size(r->backend, name, &size);
	if (e == 0)
		return -ESTALE;
	if (e != -ENOENT)
		return e;
	e = catalog_publish(r, gen);
	if (e == 0)
		r->publish_whole = false;
	return e;
}

/*
 * Remove what no reader needs: objects older than both the newest whole
 * catalog and the last CATALOG_GENERATIONS_KEPT generations (a reader that
 * listed a moment ago may be fetching one). Format 1 has only whole
 * generations, and this keeps the newest four, as it always did.
 */
static int catalog_prune(Repo *r)
{
	RemoteCatalogList cl = {0};
	uint64_t keep_from = r->gen > CATALOG_GENERATIONS_KEPT ? r->gen - CATALOG_GENERATIONS_KEPT : 0;
	int e = 0;

	if (r->config.format >= CATALOG_FORMAT_DELTAS) {
		e = remote_catalog_list(r->backend, &cl);
		const RemoteGen *b = e == 0 ? remote_catalog_list_base(&cl, r->gen) : NULL;
		keep_from = b ? MIN(b->gen, keep_from) : 0;
		remote_catalog_list_clear(&cl);
	}
	if (e == 0 && keep_from > 0)
		e = remote_catalog_prune(r->backend, keep_from);
	return e;
}


/* ---- snapshot manifests: every committed snapshot as an object too ---- */

#define MANIFEST_PREFIX "snapshots/"

/*
 * A digest of a snapshot's row (the columns from first on): its manifest is
 * rewritten when it changes (pin, note, verify).
 */
static void row_digest(sqlite3_stmt *s, int first, ChunkId *ret)
{
	size_t cap = 1024, len = 0;
	char *buf = xmalloc(cap);
	for (int i = first; i < sqlite3_column_count(s); i++) {
		const void *v = sqlite3_column_blob(s, i);
		size_t n = (size_t)sqlite3_column_bytes(s, i);
		if (len + n + 2 > cap) {
			cap = 2 * (len + n + 2);
			buf = realloc(buf, cap);
			PGBAKFS_CHECK(buf);
		}
		buf[len++] = (char)sqlite3_column_type(s, i);
		if (n)
			memcpy(buf + len, v, n);
		len += n;
		buf[len++] = 0x1f;
	}
	chunk_hash(buf, len, ret);
	free(buf);
}

static int manifest_put(Repo *r, int64_t rowid, const char *name)
{
	_cleanup_free_ char *obj = xasprintf(MANIFEST_PREFIX "%s", name);
	void *img = NULL;
	size_t len;
	int e = manifest_export(r->catalog, rowid, &img, &len);
	if (e == 0)
		e = repo_meta_put(r, obj, img, len);
	free(img);
	return e;
}

/* Remember what was written for name (digest), or forget it (NULL). */
static int manifest_state_set(sqlite3 *db, const char *name, const ChunkId *digest)
{
	char hex[2 * PGBAKFS_CHUNK_ID_LEN + 1], *sql;
	int e;
	if (digest) {
		hex_encode(digest->b, sizeof(digest->b), hex);
		sql = sqlite3_mprintf("INSERT OR REPLACE INTO manifest_state VALUES(%Q, x'%s')", name, hex);
	} else
		sql = sqlite3_mprintf("DELETE FROM manifest_state WHERE name = %Q", name);
	e = sql && sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -EIO;
	sqlite3_free(sql);
	return e;
}

/* A snapshot that became a block's carrier: its manifest is written again. */
static int manifest_mark_rewrite(int64_t snap _unused_, const char *name, void *ud)
{
	return manifest_state_set(ud, name, NULL);
}

typedef struct ManifestWork {
	int64_t rowid;
	char *name;
	ChunkId digest;
	bool gone; /* deleted: remove its manifest */
} ManifestWork;

/*
 * Bring the manifest objects in line with the catalog: write those of new or
 * changed snapshots, remove those of deleted ones. The catalog remembers what
 * it wrote (manifest_state), so an unchanged repository costs one query.
 */
static int manifests_sync(Repo *r)
{
	sqlite3 *db = catalog_sqlite(r->catalog);
	sqlite3_stmt *s = NULL;
	ManifestWork *w = NULL;
	size_t n = 0;
	int rc, e = 0;

	static const char *const queries[] = {
		/* committed snapshots (deleted ones: 2nd column 1), what was last written for them */
		"SELECT s.id, s.name, s.status = 'deleted', m.digest, s.* FROM snapshots s"
		" LEFT JOIN manifest_state m ON m.name = s.name WHERE s.status <> 'running'",
		/* manifests of snapshots purged since */
		"SELECT NULL, m.name, 1, m.digest FROM manifest_state m"
		" WHERE NOT EXISTS (SELECT 1 FROM snapshots s WHERE s.name = m.name)",
	};
	rc = sqlite3_exec(db, "CREATE TABLE IF NOT EXISTS manifest_state(name TEXT PRIMARY KEY,"
			      " digest BLOB NOT NULL) WITHOUT ROWID", NULL, NULL, NULL);
	/* blocks whose carrier is new or gone move first (catalog_idblocks_assign_carriers),
	 * so the new carrier's manifest is written below before the old one is removed */
	if (rc == SQLITE_OK && catalog_idblocks_assign_carriers(r->catalog, manifest_mark_rewrite,
								db) < 0)
		rc = SQLITE_ERROR;
	for (size_t q = 0; q < ELEMENTSOF(queries) && rc == SQLITE_OK; q++) {
		rc = sqlite3_prepare_v2(db, queries[q], -1, &s, NULL);
		while (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
			bool gone = sqlite3_column_int(s, 2) != 0;
			bool known = sqlite3_column_type(s, 3) != SQLITE_NULL;
			ManifestWork m = {.rowid = sqlite3_column_int64(s, 0), .gone = gone};
			rc = SQLITE_OK;
			if (gone && !known)
				continue;
			if (!gone) {
				row_digest(s, 4, &m.digest); /* s.*: after id, name, deleted, digest */
				if (known && sqlite3_column_bytes(s, 3) == sizeof(m.digest.b) &&
				    memcmp(sqlite3_column_blob(s, 3), m.digest.b, sizeof(m.digest.b)) == 0)
					continue;
			}
			m.name = xstrdup((const char *)sqlite3_column_text(s, 1));
			w = realloc(w, (n + 1) * sizeof(*w));
			PGBAKFS_CHECK(w);
			w[n++] = m;
		}
		sqlite3_finalize(s);
		s = NULL;
		if (rc == SQLITE_DONE)
			rc = SQLITE_OK;
	}
	if (rc != SQLITE_OK)
		e = -EIO;
	/* writes before removals: a block moving carrier is in some manifest at every moment */
	for (size_t k = 0; k < 2 * n && e == 0; k++) {
		size_t i = k % n;
		if (w[i].gone != (k >= n))
			continue;
		_cleanup_free_ char *obj = xasprintf(MANIFEST_PREFIX "%s", w[i].name);
		e = w[i].gone ? store_delete(r->backend, obj) : manifest_put(r, w[i].rowid, w[i].name);
		if (e == 0)
			e = manifest_state_set(db, w[i].name, w[i].gone ? NULL : &w[i].digest);
		if (e < 0)
			log_warning("could not store the manifest of snapshot %s (tried again at the "
				    "next change): %s", w[i].name, strerror(-e));
	}
	for (size_t i = 0; i < n; i++)
		free(w[i].name);
	free(w);
	return e;
}

int repo_write_begin(Repo *r, char **ret_holder)
{
	RemoteLockOptions o = {.wait_s = r->lock_wait_s};
	int e;

	if (r->writing)
		return -EALREADY;
	if (!r->remote) {
		r->writing = true;
		return 0;
	}
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
	r->writing = e == 0;
	return e;
}

/* Still the writer, and nobody published since we synced? */
static int publish_allowed(Repo *r)
{
	uint64_t latest;
	int e = remote_lock_check(r->lock);
	if (e == 0)
		e = remote_catalog_latest(r->backend, &latest);
	if (e == 0 && latest != r->gen)
		e = -ESTALE;
	return e;
}

static int publish_next(Repo *r)
{
	int e = publish_allowed(r); /* again: manifests took time */
	if (e == 0)
		e = catalog_publish_next(r);
	if (e == 0) {
		int p = catalog_prune(r);
		if (p < 0)
			log_warning("could not remove old catalog generations: %s", strerror(-p));
	}
	return e;
}

int repo_write_end(Repo *r, bool publish)
{
	int e = 0;
	if (!r->writing)
		return 0;
	r->writing = false;
	/* a writer that lost the lock changes no object, manifests included */
	if (publish && r->remote)
		e = publish_allowed(r);
	/* the catalog is what counts: a manifest that failed is written at the next change */
	if (publish && e == 0)
		manifests_sync(r);
	if (!r->remote)
		return 0;
	if (publish && e == 0) {
		e = publish_next(r);
		if (e == 0)
			e = gen_file_write(r, r->gen, false);
	}
	r->lock = remote_lock_release(r->lock);
	close(r->cache_lock_fd);
	r->cache_lock_fd = -1;
	return e;
}

int repo_write_publish(Repo *r)
{
	int e;
	if (!r->remote || !r->lock)
		return 0;
	e = publish_allowed(r);
	if (e == 0)
		manifests_sync(r);
	if (e == 0)
		e = publish_next(r); /* leaves catalog.gen dirty: the writer goes on */
	return e;
}

void repo_publish_whole(Repo *r)
{
	r->publish_whole = true;
}

int repo_write_check(Repo *r)
{
	return r->remote && r->lock ? remote_lock_check(r->lock) : 0;
}

/* ---- upgrade ---- */

/*
 * Order: config first. From the moment a block-form list may exist, the
 * config says format 2, so a binary that knows only format 1 refuses the
 * repository instead of misreading it. Every state after that is a valid
 * format-2 repository: inline lists are allowed in format 2 (they are what
 * format 1 wrote), and format-1 manifests stay importable. So an upgrade cut
 * short anywhere leaves a repository the new binary opens, and running
 * upgrade again finishes it (it converts what is left; with nothing left it
 * is "already format 2", and only writes the manifests still pending).
 */
int repo_upgrade(Repo *r, RepoUpgradeResult *ret)
{
	RepoUpgradeResult res = {.from_format = r->config.format};
	_cleanup_close_ int maint_fd = -1;
	uint64_t left = 0;
	int e = 0;

	if (!r->writing)
		return -EINVAL;
	if (!r->remote)
		e = repo_lock_maintenance(r, &maint_fd); /* no gc meanwhile */
	if (e == 0 && r->config.format >= PGBAKFS_REPO_FORMAT)
		e = catalog_idblocks_inline_count(r->catalog, &left);
	/* with nothing to convert, only manifests an interrupted run left are written */
	res.already = e == 0 && r->config.format >= PGBAKFS_REPO_FORMAT && left == 0;
	if (e == 0 && r->config.format < PGBAKFS_REPO_FORMAT) {
		RepoConfig c = r->config;
		c.format = PGBAKFS_REPO_FORMAT;
		e = config_put(r->backend, &c);
		if (e == 0)
			r->config.format = PGBAKFS_REPO_FORMAT;
	}
	if (e == 0 && !res.already) {
		int k = catalog_chunks_rekey(r->catalog);
		e = k < 0 ? k : 0;
	}
	if (e == 0 && !res.already) {
		catalog_set_idblocks(r->catalog, true);
		e = catalog_idblocks_convert(r->catalog, &res.lists_converted);
	}
	/* every manifest is written again, in format 2 */
	if (e == 0 && !res.already && sqlite3_exec(catalog_sqlite(r->catalog),
				   "CREATE TABLE IF NOT EXISTS manifest_state(name TEXT PRIMARY KEY,"
				   " digest BLOB NOT NULL) WITHOUT ROWID; DELETE FROM manifest_state",
				   NULL, NULL, NULL) != SQLITE_OK)
		e = -EIO;
	if (e == 0 && r->remote)
		e = publish_allowed(r); /* a writer that lost the lock changes no object */
	if (e == 0)
		e = manifests_sync(r);
	if (e == 0)
		*ret = res;
	return e;
}

uint64_t repo_generation(const Repo *r) { return r->gen; }
bool repo_is_encrypted(const Repo *r) { return r->encrypted; }

bool repo_is_local_backend(const Repo *r)
{
	return (r->backend->ops->features & STORE_FEATURE_LOCAL_PATH) != 0;
}

int repo_disk_cache(Repo *r, uint64_t max_bytes)
{
	_cleanup_free_ char *lock = xasprintf("%s/chunks.lock", r->workdir);
	_cleanup_free_ char *dir = xasprintf("%s/chunks", r->workdir);
	StoreBackend *cached;
	int fd = -1, e;

	if (r->disk_cache_fd >= 0)
		return -EALREADY;
	e = lock_file(lock, false, &fd);
	if (e < 0)
		return e;
	e = store_cache_new(r->backend, dir, max_bytes, &cached);
	if (e < 0) {
		close(fd);
		return e;
	}
	r->backend = cached;
	r->disk_cache_fd = fd;
	return 0;
}

void repo_chunk_hash(Repo *r, const void *buf, size_t len, ChunkId *ret)
{
	if (r->encrypted)
		crypt_hmac(r->keys.id, buf, len, ret->b);
	else
		chunk_hash(buf, len, ret);
}

int repo_codec_new(Repo *r, ChunkCodec **ret)
{
	int e = chunk_codec_new(r->config.compress_level, ret);
	if (e == 0 && r->encrypted)
		chunk_codec_set_keys(*ret, r->keys.data, r->keys.id);
	return e;
}

int repo_key_change(Repo *r, const char *old_pass, size_t old_len, const char *new_pass,
		    size_t new_len)
{
	char *text = NULL, *next = NULL;
	size_t len, next_len = 0;
	int e;
	if (!r->encrypted)
		return -EINVAL;
	e = store_get_all(r->backend, "keys", KEYS_MAX_BYTES, (void **)&text, &len);
	if (e == 0)
		e = crypt_keyfile_rewrap(text, len, old_pass, old_len, new_pass, new_len, NULL, &next,
					 &next_len);
	if (e == 0)
		e = store_put(r->backend, "keys", next, next_len);
	free(text);
	free(next);
	return e;
}
bool repo_is_remote(const Repo *r) { return r->remote; }
const char *repo_workdir(const Repo *r) { return r->workdir; }
const char *repo_objects_dir(const Repo *r) { return r->objdir; }

/* ---- repair --rebuild-catalog ---- */

static int manifest_fetch(const char *name, void **ret_buf, size_t *ret_len, void *ud)
{
	return repo_meta_get(ud, name, ret_buf, ret_len);
}

/* Open what a repository has without its catalog: backend, config, keys, work directory. */
static int open_bare(const RepoLocation *l, Repo **ret);
static int use_lock(Repo *r, int op, int *ret_fd);

/* Unlink path+suffix; a missing one is fine. */
static int unlink_sfx(const char *path, const char *sfx)
{
	_cleanup_free_ char *p = NULL;
	if (asprintf(&p, "%s%s", path, sfx) < 0)
		return -ENOMEM;
	return unlink(p) < 0 && errno != ENOENT ? -errno : 0;
}

/* Hard-link path+sfx as to+sfx; a missing source is fine. */
static int link_sfx(const char *path, const char *to, const char *sfx)
{
	_cleanup_free_ char *a = NULL, *b = NULL;
	if (asprintf(&a, "%s%s", path, sfx) < 0 || asprintf(&b, "%s%s", to, sfx) < 0)
		return -ENOMEM;
	return link(a, b) < 0 && errno != ENOENT ? -errno : 0;
}

/* Fold a catalog's WAL into its file, if it opens at all (a damaged one may not). */
static void catalog_fold_wal(const char *path)
{
	sqlite3 *db = NULL;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK)
		sqlite3_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
	sqlite3_close(db); /* the last connection: an empty WAL goes away */
}

/*
 * Put the rebuilt catalog fresh in place of a local repository's, keeping
 * the old one as catalog.db.old(-wal). Nobody has either open (the in-use
 * lock is ours). At every step the repository has a catalog: the old one is
 * linked, not moved, to its .old name, its WAL folded in or linked beside it
 * and then removed (a WAL must never meet another database file), and the
 * new one replaces it in one rename.
 */
static int catalog_replace_local(Repo *r, const char *fresh)
{
	_cleanup_free_ char *old = NULL, *fresh_wal = NULL;
	int e = 0;

	if (asprintf(&old, "%s.old", r->catalog_path) < 0 ||
	    asprintf(&fresh_wal, "%s-wal", fresh) < 0)
		return -ENOMEM;
	if (access(fresh_wal, F_OK) == 0)
		return -EIO; /* the rebuilt catalog was not checkpointed and closed */
	catalog_fold_wal(r->catalog_path);
	e = unlink_sfx(old, "");
	if (e == 0)
		e = unlink_sfx(old, "-wal");
	if (e == 0)
		e = unlink_sfx(old, "-shm");
	if (e == 0)
		e = link_sfx(r->catalog_path, old, "");
	if (e == 0)
		e = link_sfx(r->catalog_path, old, "-wal");
	if (e == 0)
		e = fsync_dir(r->workdir);
	if (e == 0)
		e = unlink_sfx(r->catalog_path, "-wal");
	if (e == 0)
		e = unlink_sfx(r->catalog_path, "-shm");
	if (e == 0 && rename(fresh, r->catalog_path) < 0)
		e = -errno;
	if (e == 0)
		e = fsync_dir(r->workdir);
	return e;
}

/*
 * Build the new catalog beside the old one, then put it in place: a local
 * repository's catalog.db is swapped (the old one kept as catalog.db.old);
 * a published one becomes the next generation, under the writer lock.
 */
int repo_rebuild_catalog(const RepoLocation *l, RepairStats *ret)
{
	Repo *r = NULL;
	Catalog *fresh = NULL;
	_cleanup_free_ char *tmp = NULL;
	char *holder = NULL;
	uint64_t latest = 0;
	int maint_fd = -1;
	int e = open_bare(l, &r);

	if (e < 0)
		return e;
	tmp = xasprintf("%s/tmp/catalog-rebuild.db", r->workdir);
	unlink(tmp);
	if (r->remote) { /* first the lock: no writer may publish while the objects are read */
		RemoteLockOptions o = {.wait_s = r->lock_wait_s};
		e = remote_lock_acquire(r->backend, &o, &r->lock, &holder);
		if (e == 0)
			e = cache_lock(r, true, &r->cache_lock_fd);
	} else {
		e = repo_lock_maintenance(r, &maint_fd); /* no gc or expire meanwhile */
		if (e == 0) /* and nobody else with the catalog open: it is about to be replaced */
			e = use_lock(r, LOCK_EX, &r->use_lock_fd);
	}
	if (e == 0)
		e = catalog_create(tmp);
	if (e == 0)
		e = repo_catalog_connect(r, tmp, &fresh);
	if (e == 0 && r->config.format < 2) /* what the release of format 1 reads */
		e = catalog_chunks_unkeyed(fresh);
	if (e == 0)
		e = repair_rebuild_catalog(r->backend, fresh, MANIFEST_PREFIX, manifest_fetch, r, ret);
	catalog_free(fresh);
	if (e == 0 && r->remote) {
		e = remote_catalog_latest(r->backend, &latest);
		if (e == -ENOENT)
			e = 0;
		/* until published, this machine's copy is not any generation */
		if (e == 0)
			e = gen_file_write(r, latest, true);
		if (e == 0) {
			mode_t old = umask(0077);
			e = catalog_install(r, tmp);
			umask(old);
		}
		if (e == 0)
			e = repo_catalog_connect(r, r->catalog_path, &r->catalog);
		/* above any generation another machine may have cached before the catalog was
		 * lost (they refuse to go back in time): a number from the clock, in ms */
		uint64_t next = MAX(latest + 1, (uint64_t)time(NULL) * 1000);
		if (e == 0)
			e = remote_lock_check(r->lock);
		if (e == 0)
			e = catalog_publish(r, next);
		if (e == 0)
			e = gen_file_write(r, next, false);
	} else if (e == 0) {
		e = catalog_replace_local(r, tmp);
	}
	if (e < 0 && holder)
		log_error("the writer lock is held by %s", holder);
	free(holder);
	unlink(tmp);
	if (maint_fd >= 0)
		close(maint_fd);
	repo_free(r);
	return e;
}

/* ---- open ---- */

static int open_bare(const RepoLocation *l, Repo **ret)
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
		r->objdir = xstrdup(l->path);
	}
	e = backend_for(l, &r->backend);
	if (e == 0)
		e = config_get(r->backend, &r->config);
	if (e == 0 && r->config.encrypted) {
		char *text = NULL;
		size_t len;
		e = store_get_all(r->backend, "keys", KEYS_MAX_BYTES, (void **)&text, &len);
		if (e == -ENOENT || e == -EFBIG)
			e = -EBADMSG;
		if (e == 0)
			e = keys_load(r, text, len, l);
		free(text);
	}
	if (e == 0 && !r->config.encrypted) {
		/* a key file and a config that says "none": an encrypted repository whose
		 * config was edited to make new backups plain; refuse */
		uint64_t size;
		e = store_size(r->backend, "keys", &size);
		if (e == 0)
			e = -EUCLEAN;
		else if (e == -ENOENT)
			e = 0;
	}
	if (e == 0) /* after config and keys: the faults are for what the commands do */
		e = backend_wrap_faults(&r->backend);
	if (e < 0)
		goto fail;
	if (l->s3 || r->config.encrypted) {
		_cleanup_free_ char *dir = workdir_for(l, r->config.id);
		r->remote = true;
		r->lock_wait_s = l->lock_wait_s;
		e = repo_set_workdir(r, dir);
		if (e == 0)
			e = workdir_prepare(dir);
	} else {
		e = repo_set_workdir(r, l->path);
		if (e == 0)
			e = workdir_prepare(l->path);
	}
	if (e < 0)
		goto fail;
	*ret = r;
	return 0;
fail:
	repo_free(r);
	return e;
}

int repo_open_at(const RepoLocation *l, Repo **ret)
{
	Repo *r = NULL;
	int e = open_bare(l, &r);

	if (e < 0)
		return e;
	if (r->remote) {
		e = repo_refresh(r);
		if (e == 0 && access(r->catalog_path, F_OK) < 0) /* a writer here never published */
			e = -EBADMSG;
	} else {
		e = use_lock(r, LOCK_SH, &r->use_lock_fd);
		/* a user who may not create the lock file cannot write the catalog either */
		if (e == -EACCES || e == -EROFS)
			e = 0;
	}
	if (e == 0)
		e = repo_catalog_connect(r, r->catalog_path, &r->catalog);
	if (e == -ENOENT)
		e = -EBADMSG; /* config without catalog: damaged */
	if (e < 0) {
		repo_free(r);
		return e;
	}
	*ret = r;
	return 0;
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
	catalog_free(r->catalog); /* before the lock that kept repair from replacing it */
	r->catalog = NULL;
	if (r->use_lock_fd >= 0)
		close(r->use_lock_fd);
	store_backend_free(r->backend);
	if (r->disk_cache_fd >= 0)
		close(r->disk_cache_fd);
	crypt_keys_clear(&r->keys);
	free(r->url);
	free(r->objdir);
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
	return repo_catalog_connect(r, r->catalog_path, ret);
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

/*
 * Every process that opens a local repository holds locks/in-use shared for
 * as long as it has the catalog open; repair --rebuild-catalog takes it
 * exclusive before it replaces the catalog file, so no backup, mount or
 * wal-push keeps writing into a catalog that is no longer the repository's
 * (its commits would succeed into the replaced file and be lost). Neither
 * side waits: -EBUSY.
 */
static int use_lock(Repo *r, int op, int *ret_fd)
{
	char path[PATH_MAX];
	struct stat st;
	int e = lock_dir_ensure(r);
	if (e < 0)
		return e;
	/*
	 * The archiver (the repository's owner, postgres) must take it too: what
	 * root creates here goes to the repository's owner, as SQLite does for
	 * the catalog files it creates.
	 */
	bool give = geteuid() == 0 && stat(r->workdir, &st) == 0 && st.st_uid != 0;
	snprintf(path, sizeof(path), "%s/locks", r->workdir);
	if (give && chown(path, st.st_uid, st.st_gid) < 0)
		return -errno;
	snprintf(path, sizeof(path), "%s/locks/in-use", r->workdir);
	e = lock_file_op(path, op | LOCK_NB, ret_fd);
	if (e == 0 && give && fchown(*ret_fd, st.st_uid, st.st_gid) < 0) {
		e = -errno;
		close(*ret_fd);
		*ret_fd = -1;
	}
	return e;
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
	int e = lock_dir_ensure(r);
	if (e < 0)
		return e;
	snprintf(path, sizeof(path), "%s/locks/maintenance", r->workdir);
	return lock_file(path, false, ret_fd);
}
