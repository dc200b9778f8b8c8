/*
 * repo_init: a new repository, in a directory (its own work directory) or
 * published by generations (S3, or encrypted: a local cache and generation 1).
 */
#include "store/repo_int.h"
#include "common/util.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <openssl/crypto.h>

int repo_catalog_create(const char *path, const FileOwner *owner)
{
	Catalog *cat = NULL;
	mode_t old = umask(0077); /* SQLite creates its files with the umask */
	/* an empty file is an empty database: given first, SQLite gives its -wal and -shm alike */
	int r = owner->give ? file_create_owned(path, 0600, owner) : 0;
	if (r == 0 || r == -EEXIST)
		r = catalog_open(path, true, &cat);
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
	FileOwner owner;
	int r = repo_workdir_prepare(path, &owner);

	if (r == 0) {
		snprintf(sub, sizeof(sub), "%s/packs", path);
		r = mkdir_owned(sub, 0700, &owner);
	}
	if (r == 0) {
		snprintf(sub, sizeof(sub), "%s/catalog.db", path);
		r = repo_catalog_create(sub, &owner);
	}
	/* config last: its presence is what makes the directory a repository */
	if (r == 0)
		r = store_local_new(path, &b);
	if (r == 0)
		r = repo_config_put(b, c);
	store_backend_free(b);
	return r;
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
	e = repo_backend_for(l, &r->backend);
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
	if (e == 0 && !(dir = repo_workdir_for(l, c->id)))
		e = -ENOMEM;
	r->remote = true;
	r->config = *c;
	if (e == 0 && c->encrypted)
		e = keys_create(r, l);
	if (e == 0)
		e = repo_set_workdir(r, dir);
	if (e == 0)
		e = repo_workdir_prepare(dir, &r->work_owner);
	if (e == 0)
		e = repo_catalog_create(r->catalog_path, &r->work_owner);
	if (e == 0)
		e = repo_catalog_connect(r, r->catalog_path, &r->catalog);
	if (e == 0)
		e = repo_catalog_publish(r, 1);
	if (e == 0)
		e = repo_config_put(r->backend, c);
	repo_free(r);
	return e;
}

int repo_init_at(const RepoLocation *l, const RepoInitOptions *o)
{
	RepoConfig c = repo_config_new(o);
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
