/*
 * A repository: its config object, its backend, its catalog, and the
 * sessions (running backups) that gc must respect.
 *
 * Layout of a local repository (directories 0700, files 0600):
 *   config            format version, chunk size, pack size, compression, id
 *   catalog.db        the SQLite catalog (plus -wal/-shm while open)
 *   packs/ab/NAME.pack  pack objects
 *   locks/            one flock'ed file per live session, and gc's lock
 */
#pragma once

#include "store/backend.h"
#include "store/catalog.h"

#define PGBAKFS_REPO_FORMAT 1
#define PGBAKFS_DEFAULT_CHUNK_SIZE (64 * 1024)
#define PGBAKFS_DEFAULT_PACK_SIZE (32 * 1024 * 1024)
#define PGBAKFS_DEFAULT_COMPRESS_LEVEL 3

typedef struct RepoConfig {
	uint32_t format;
	uint64_t chunk_size;
	uint64_t pack_size;
	int compress_level;
	char id[33];
} RepoConfig;

typedef struct RepoInitOptions {
	uint64_t chunk_size; /* 0: default */
	uint64_t pack_size;  /* 0: default */
	int compress_level;  /* 0: default */
} RepoInitOptions;

typedef struct Repo Repo;
typedef struct RepoSession RepoSession;

/*
 * Create a repository at path: -EEXIST if one is already there, -ENOTEMPTY
 * if the directory holds other files, -EINVAL for a bad chunk size.
 */
int repo_init(const char *path, const RepoInitOptions *o);
/*
 * Open: -ENOTDIR/-ENOENT when path is not a repository (no config object),
 * -EPROTONOSUPPORT when its format is newer than this binary understands,
 * -EBADMSG for a damaged config.
 */
int repo_open(const char *path, Repo **ret);
Repo *repo_free(Repo *r);

const char *repo_path(const Repo *r);
const RepoConfig *repo_config(const Repo *r);
StoreBackend *repo_backend(Repo *r);
/* The repository's own connection: for the thread that opened the repository. */
Catalog *repo_catalog(Repo *r);
/* A new connection for another thread; free it with catalog_free(). */
int repo_catalog_open(Repo *r, Catalog **ret);

/* Register a live session (kind "backup", ...): gc keeps what it may reference. */
int repo_session_begin(Repo *r, const char *kind, RepoSession **ret);
const char *repo_session_id(const RepoSession *s);
/* Unregister and free. Accepts NULL. */
RepoSession *repo_session_end(Repo *r, RepoSession *s);

/* Remove sessions whose process is gone, with their unfinished snapshots. */
int repo_reap_dead_sessions(Repo *r, uint64_t *ret_sessions, uint64_t *ret_snapshots);
/* Exclusive maintenance lock (gc): -EBUSY when another holder has it. */
int repo_lock_maintenance(Repo *r, int *ret_fd);
