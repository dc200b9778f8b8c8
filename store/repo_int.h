/*
 * The inside of a Repo, shared by the files that do its jobs (store/repo.h is
 * the interface; nothing outside store/repo*.c includes this):
 *
 *   repo.c            open (repo_open_bare, repo_open_at), free, accessors, disk cache
 *   repo_config.c     the config object
 *   repo_init.c       repo_init: a new repository
 *   repo_meta.c       metadata objects: header, zstd, sealing, pieces
 *   repo_publish.c    published catalogs: local copy, generations, deltas, prune
 *   repo_manifests.c  snapshot manifests in line with the catalog
 *   repo_write.c      writer lifecycle, upgrade, key change
 *   repo_repair.c     repair --rebuild-catalog
 *   repo_session.c    locks, sessions, reaping dead ones
 *
 * Every function here returns 0 or -errno unless stated, and needs the
 * caller to be the thread that owns the Repo.
 */
#pragma once

#include "store/repo.h"
#include "store/crypt.h"
#include "store/remote.h"

#include <stdbool.h>
#include <stdint.h>

#define KEYS_MAX_BYTES 4096
/* snapshot manifests are the objects snapshots/NAME */
#define MANIFEST_PREFIX "snapshots/"

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
	unsigned catalog_deltas_max; /* 0: CATALOG_DELTAS_MAX */
	uint64_t meta_pieces;        /* RepoLocation.meta_pieces */
	uint64_t gen;        /* generation the local catalog copies */
	RemoteLock *lock;    /* held between write_begin and write_end */
	bool writing;        /* between write_begin and write_end (every kind) */
	int cache_lock_fd;   /* flock on <workdir>/catalog.lock while writing */
	int disk_cache_fd;   /* flock on <workdir>/chunks.lock while using the disk cache */
	int use_lock_fd;     /* local: shared flock on locks/in-use while open (repair: exclusive) */
	FileOwner work_owner; /* whom files made in workdir go to (root in another's repository) */
	FileOwner obj_owner;  /* and in objdir */
	bool publish_whole;  /* the next publication is a whole catalog (secrets were removed) */
};

/* repo.c */
Repo *repo_alloc(const char *url); /* NULL when out of memory */
int repo_set_workdir(Repo *r, const char *dir);
/* a connection to a catalog file of this repository, in its format */
int repo_catalog_connect(Repo *r, const char *path, Catalog **ret);
/* a published repository's work directory under l->cache_dir; NULL when out of memory */
char *repo_workdir_for(const RepoLocation *l, const char *id);
int repo_backend_for(const RepoLocation *l, StoreBackend **ret);
/* dir, locks/ and tmp/ made; *ret_owner: whom what is made in it goes to */
int repo_workdir_prepare(const char *dir, FileOwner *ret_owner);
/* backend, config, keys and work directory; no catalog, no lock */
int repo_open_bare(const RepoLocation *l, Repo **ret);

/* repo_config.c */
RepoConfig repo_config_new(const RepoInitOptions *o);
int repo_config_put(StoreBackend *b, const RepoConfig *c);
/* -ENOTDIR without a config object, -EPROTONOSUPPORT for a newer format */
int repo_config_get(StoreBackend *b, RepoConfig *ret);

/* repo_init.c */
int repo_catalog_create(const char *path, const FileOwner *owner);

/* repo_publish.c */
int repo_gen_file_write(Repo *r, uint64_t gen, bool dirty);
/* copy the database file src into r's catalog, in place */
int repo_catalog_install(Repo *r, const char *src);
int repo_catalog_sync(Repo *r);
/* the local catalog whole as generation gen; -ESTALE when it exists */
int repo_catalog_publish(Repo *r, uint64_t gen);
int repo_catalog_publish_next(Repo *r);
int repo_catalog_prune(Repo *r);

/* repo_manifests.c */
int repo_manifests_sync(Repo *r);

/* repo_write.c */
int repo_publish_allowed(Repo *r);

/* repo_session.c */
int repo_lock_file(const char *path, bool wait, const FileOwner *owner, int *ret_fd);
int repo_cache_lock(Repo *r, bool wait, int *ret_fd);
int repo_use_lock(Repo *r, int op, int *ret_fd);
