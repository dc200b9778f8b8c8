/*
 * A repository opened: its location's backend, config and keys, its work
 * directory and catalog connection (repo_open_bare, repo_open_at), closing, and
 * the accessors. The other jobs on a Repo live beside it (repo_int.h lists
 * the pieces).
 */
#include "store/repo_int.h"
#include "common/log.h"
#include "common/util.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <openssl/crypto.h>

/*
 * Root opening a catalog file another user owns (the archiver's): its -wal
 * and -shm made first, already that user's, with the file's mode. SQLite
 * makes them as root and gives them after: the archiver opening the catalog
 * between the two failed (wal-push exited 1, and PostgreSQL counted a
 * failure). Existing files are left as they are, and never opened here (a
 * close would drop the SQLite locks of this process's other connections).
 */
static int catalog_files_give(const char *path)
{
	static const char *const sfx[] = {"-wal", "-shm"};
	FileOwner owner;
	struct stat st;
	char f[PATH_MAX];
	int e = file_owner_of(path, &owner);

	if (e < 0 || !owner.give)
		return e;
	if (stat(path, &st) < 0)
		return -errno;
	for (size_t i = 0; i < ELEMENTSOF(sfx); i++) {
		if ((size_t)snprintf(f, sizeof(f), "%s%s", path, sfx[i]) >= sizeof(f))
			return -ENAMETOOLONG;
		e = file_create_owned(f, st.st_mode & 0777, &owner);
		if (e < 0 && e != -EEXIST)
			return e;
	}
	return 0;
}

/*
 * Every connection to a repository's catalog: long lists become id blocks
 * only in format 2 (an older binary reading a format-1 repository would
 * misread them; it refuses format 2 outright).
 */
int repo_catalog_connect(Repo *r, const char *path, Catalog **ret)
{
	int e = catalog_files_give(path);
	if (e == 0)
		e = catalog_open(path, false, ret);
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

Repo *repo_alloc(const char *url)
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

int repo_set_workdir(Repo *r, const char *dir)
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
char *repo_workdir_for(const RepoLocation *l, const char *id)
{
	char where[PATH_MAX * 2], real[PATH_MAX], hex[65], *dir = NULL;
	ChunkId h;
	if (l->s3)
		snprintf(where, sizeof(where), "%s|%s|%s", l->s3->endpoint ? l->s3->endpoint : "",
			 l->s3->bucket, l->s3->prefix ? l->s3->prefix : "");
	else
		snprintf(where, sizeof(where), "%s", realpath(l->path, real) ? real : l->path);
	chunk_hash(where, strlen(where), &h);
	hex_encode(h.b, 4, hex);
	return asprintf(&dir, "%s/%s-%s", l->cache_dir, id, hex) < 0 ? NULL : dir;
}

/* test hook: wrap the backend in the fault driver (see store/backend.h) */
static int backend_wrap_faults(const char *faults, StoreBackend **b)
{
	StoreBackend *fb;
	if (!faults || !*faults)
		return 0;
	int e = store_fault_new(*b, faults, &fb);
	if (e < 0)
		return e;
	*b = fb;
	return 0;
}

int repo_backend_for(const RepoLocation *l, StoreBackend **ret)
{
	return l->s3 ? store_s3_new(l->s3, ret) : store_local_new(l->path, ret);
}

int repo_workdir_prepare(const char *dir, FileOwner *ret_owner)
{
	char sub[PATH_MAX];
	int r = mkdir_p(dir, 0700);
	if (r == 0)
		r = file_owner_of(dir, ret_owner);
	for (const char *d = "locks\0tmp\0"; r == 0 && *d; d += strlen(d) + 1) {
		snprintf(sub, sizeof(sub), "%s/%s", dir, d);
		r = mkdir_owned(sub, 0700, ret_owner);
	}
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

uint64_t repo_generation(const Repo *r) { return r->gen; }
bool repo_is_encrypted(const Repo *r) { return r->encrypted; }

bool repo_is_local_backend(const Repo *r)
{
	return (r->backend->ops->features & STORE_FEATURE_LOCAL_PATH) != 0;
}

int repo_disk_cache(Repo *r, uint64_t max_bytes)
{
	_cleanup_free_ char *lock = NULL, *dir = NULL;
	StoreBackend *cached;
	int fd = -1, e;

	if (r->disk_cache_fd >= 0)
		return -EALREADY;
	if (asprintf(&lock, "%s/chunks.lock", r->workdir) < 0 ||
	    asprintf(&dir, "%s/chunks", r->workdir) < 0)
		return -ENOMEM;
	e = repo_lock_file(lock, false, &r->work_owner, &fd);
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
	chunk_id_of(r->encrypted ? r->keys.id : NULL, buf, len, ret);
}

int repo_codec_new(Repo *r, ChunkCodec **ret)
{
	int e = chunk_codec_new(r->config.compress_level, ret);
	if (e == 0 && r->encrypted)
		chunk_codec_set_keys(*ret, r->keys.data, r->keys.id);
	return e;
}

bool repo_is_remote(const Repo *r) { return r->remote; }
const char *repo_workdir(const Repo *r) { return r->workdir; }
const char *repo_objects_dir(const Repo *r) { return r->objdir; }
const FileOwner *repo_work_owner(const Repo *r) { return &r->work_owner; }
const FileOwner *repo_objects_owner(const Repo *r) { return &r->obj_owner; }

/* ---- open ---- */

int repo_open_bare(const RepoLocation *l, Repo **ret)
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
		if (!(r->objdir = strdup(l->path))) {
			e = -ENOMEM;
			goto fail;
		}
		e = file_owner_of(r->objdir, &r->obj_owner);
		if (e < 0)
			goto fail;
	}
	e = repo_backend_for(l, &r->backend);
	if (e == 0)
		e = repo_config_get(r->backend, &r->config);
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
	r->meta_pieces = l->meta_pieces;
	if (e == 0) /* after config and keys: the faults are for what the commands do */
		e = backend_wrap_faults(l->faults, &r->backend);
	if (e < 0)
		goto fail;
	if (l->s3 || r->config.encrypted) {
		_cleanup_free_ char *dir = repo_workdir_for(l, r->config.id);
		r->remote = true;
		r->lock_wait_s = l->lock_wait_s;
		r->catalog_deltas_max = l->catalog_deltas_max;
		e = dir ? repo_set_workdir(r, dir) : -ENOMEM;
		if (e == 0)
			e = repo_workdir_prepare(dir, &r->work_owner);
	} else {
		e = repo_set_workdir(r, l->path);
		if (e == 0)
			e = repo_workdir_prepare(l->path, &r->work_owner);
	}
	if (e < 0)
		goto fail;
	*ret = r;
	return 0;
fail:
	repo_free(r);
	return e;
}

/* The catalog of r, opened bare: brought up to date first when published; r is freed on error. */
static int open_catalog(Repo *r, Repo **ret)
{
	int e;

	if (r->remote) {
		e = repo_refresh(r);
		if (e == 0 && access(r->catalog_path, F_OK) < 0) /* a writer here never published */
			e = -EBADMSG;
	} else {
		e = repo_use_lock(r, LOCK_SH, &r->use_lock_fd);
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

int repo_open_at(const RepoLocation *l, Repo **ret)
{
	Repo *r = NULL;
	int e = repo_open_bare(l, &r);

	return e < 0 ? e : open_catalog(r, ret);
}

int repo_open_archive(const RepoLocation *l, Repo **ret)
{
	Repo *r = NULL;
	int e = repo_open_bare(l, &r);

	if (e < 0)
		return e;
	if (!r->remote)
		return open_catalog(r, ret);
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
