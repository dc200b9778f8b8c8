/*
 * A repository: its config object, its backend, its catalog, and the
 * sessions (running backups) that gc must respect.
 *
 * Objects (every backend):
 *   config              format version, chunk size, pack size, compression, id
 *   packs/ab/NAME.pack  pack objects
 *   wal/TLI/NAME        archived WAL (store/wal.h)
 *
 * A local repository is also its own work directory (directories 0700,
 * files 0600): catalog.db (the SQLite catalog, plus -wal/-shm while open),
 * locks/ (one flock'ed file per live session, gc's lock) and tmp/.
 *
 * A repository in object storage keeps the same work directory in a local
 * cache, <cache_dir>/<repository id>/, plus catalog.gen (the generation the
 * local catalog.db copies, and "dirty" while a writer changes it). The
 * bucket holds the catalog as numbered generations and a writer lock
 * (store/remote.h): readers pick up the newest generation when they open;
 * writers take the lock, change the local copy, and publish generation N+1.
 */
#pragma once

#include "store/backend.h"
#include "store/catalog.h"
#include "common/util.h"

#define PGBAKFS_REPO_FORMAT 5
#define PGBAKFS_DEFAULT_CHUNK_SIZE (64 * 1024)
#define PGBAKFS_DEFAULT_PACK_SIZE (32 * 1024 * 1024)
#define PGBAKFS_DEFAULT_COMPRESS_LEVEL 1

typedef struct RepoConfig {
	uint32_t format;
	uint64_t chunk_size;
	uint64_t pack_size;
	int compress_level;
	char id[33];
	bool encrypted;      /* "encryption = aes-256-gcm": key file in the object "keys" */
} RepoConfig;

typedef struct RepoInitOptions {
	uint64_t chunk_size; /* 0: default */
	uint64_t pack_size;  /* 0: default */
	int compress_level;  /* 0: default */
	bool encrypt;        /* with the location's passphrase */
} RepoInitOptions;

typedef struct Repo Repo;
typedef struct RepoSession RepoSession;

/* Where a repository is: a local directory, or a bucket and prefix. */
typedef struct RepoLocation {
	const char *url;            /* how the user named it (messages) */
	const char *path;           /* a local repository: its directory */
	const StoreS3Config *s3;    /* else in S3-compatible storage */
	const char *cache_dir;      /* S3: root of the local caches (work directories) */
	unsigned lock_wait_s;       /* S3: how long a writer waits for the writer lock */
	const char *passphrase;     /* encrypted repositories (NULL: none given) */
	size_t passphrase_len;
	/*
	 * Tests: a fault script (store/backend.h, store_fault_new) for a fault
	 * driver wrapped around the backend once config and keys are read;
	 * NULL or "": none. tools/ passes PGBAKFS_TEST_FAULTS.
	 */
	const char *faults;
	/*
	 * Tests: publish a base catalog after this many deltas instead of
	 * CATALOG_DELTAS_MAX (0: that). tools/ passes PGBAKFS_CATALOG_DELTAS_MAX.
	 */
	unsigned catalog_deltas_max;
	/*
	 * Tests: write metadata objects of more than this many plain bytes in
	 * pieces of as many (0: objects past 4 GiB, in 16 MiB pieces).
	 * tools/ passes PGBAKFS_META_PIECES.
	 */
	uint64_t meta_pieces;
} RepoLocation;

/*
 * Create a repository: -EEXIST if one is already there, -ENOTEMPTY if the
 * directory (or bucket prefix) holds other files, -EINVAL for a bad chunk size.
 */
int repo_init_at(const RepoLocation *l, const RepoInitOptions *o);
/*
 * Open: -ENOTDIR/-ENOENT when there is no repository (no config object),
 * -EPROTONOSUPPORT when its format is newer than this binary understands,
 * -EBADMSG for a damaged config or catalog. Encrypted: -ENOKEY without a
 * passphrase, -EKEYREJECTED for a wrong one (nothing is written then);
 * -EUCLEAN when the config says "not encrypted" but a key file exists (an
 * edited config must not turn new backups plain). A local repository is held
 * open (a shared flock on locks/in-use) until repo_free: -EBUSY while
 * repo_rebuild_catalog holds it.
 */
int repo_open_at(const RepoLocation *l, Repo **ret);
/*
 * repo_open_at for the WAL archive alone (wal-fetch): a repository whose
 * catalog is published (S3, encrypted) is opened without it, so nothing is
 * listed or downloaded beyond the config and the keys, and repo_catalog() is
 * NULL; a local one opens as with repo_open_at.
 */
int repo_open_archive(const RepoLocation *l, Repo **ret);
/* The same for a local directory. */
int repo_init(const char *path, const RepoInitOptions *o);
int repo_open(const char *path, Repo **ret);
Repo *repo_free(Repo *r);

/*
 * True when the catalog is published by generations and worked on in a
 * local cache: object storage, and encrypted repositories (whose catalog
 * is stored sealed; the cache keeps the working copy, 0700, on this machine).
 */
bool repo_is_remote(const Repo *r);
bool repo_is_encrypted(const Repo *r);
/* True when the objects are files on this machine (the directory driver). */
bool repo_is_local_backend(const Repo *r);
/*
 * Keep ranged reads of packs on local disk, at most max_bytes, in
 * <workdir>/chunks (store_cache_new): for long-lived readers of object
 * storage (a mount). -EBUSY when another process uses that cache.
 */
int repo_disk_cache(Repo *r, uint64_t max_bytes);
/* A codec for this repository's chunks: its compression level, and its keys if encrypted. */
struct ChunkCodec;
int repo_codec_new(Repo *r, struct ChunkCodec **ret);
/* The id of plain bytes in this repository (SHA-256, or the keyed HMAC when encrypted). */
void repo_chunk_hash(Repo *r, const void *buf, size_t len, ChunkId *ret);
/*
 * Rewrap the master key under a new passphrase (the object "keys"); data,
 * catalog and WAL stay as they are. -EKEYREJECTED when old is wrong.
 */
int repo_key_change(Repo *r, const char *old_pass, size_t old_len, const char *new_pass,
		    size_t new_len);
/* The local work directory: catalog.db, locks/, tmp/. */
const char *repo_workdir(const Repo *r);
/*
 * The directory holding a local repository's objects (the repository path,
 * shared by every user of the repository: locks that must hold across users,
 * like wal-push's, live there); NULL for object storage.
 */
const char *repo_objects_dir(const Repo *r);
/*
 * Whom files and directories made in repo_workdir and repo_objects_dir go
 * to: root working in a repository another user owns (the archiver's)
 * gives them to that user, so that the archiver can open every lock and
 * directory root made (common/util.h, FileOwner).
 */
const FileOwner *repo_work_owner(const Repo *r);
const FileOwner *repo_objects_owner(const Repo *r);
/*
 * Before a command changes the catalog. Local: nothing to do. Remote: take
 * the writer lock (waiting up to lock_wait_s; -EBUSY and *ret_holder, "host
 * pid N", malloc'd, when another writer kept it), then bring the local
 * catalog up to the newest generation.
 */
int repo_write_begin(Repo *r, char **ret_holder);
/*
 * After it: remote, publish the catalog as the next generation when publish
 * (-ENOLCK when the lease was lost, -ESTALE when another writer published
 * meanwhile: nothing is overwritten) and release the lock. Without a
 * successful publication the local copy is discarded at the next open.
 */
int repo_write_end(Repo *r, bool publish);
/* Remote: publish the changes so far and keep writing (gc, before it deletes packs). */
int repo_write_publish(Repo *r);
/* Before a writer deletes objects (gc): -ENOLCK when the writer lock is no longer its own. */
int repo_write_check(Repo *r);
/* Readers that live long (a mount): pick up a newer generation, if any. */
int repo_refresh(Repo *r);
/*
 * Remote: make this writer's next publication a whole catalog, not a delta,
 * so that rows it rewrote to remove secrets leave the bucket with the
 * objects before it (within three writes). No-op elsewhere.
 */
void repo_publish_whole(Repo *r);
/*
 * repair --rebuild-catalog: a new catalog from the packs and snapshot
 * manifests alone (store/repair.h), put in place of the old one (kept as
 * catalog.db.old; -EBUSY while any other process has the repository open)
 * or published as the next generation. Retention policy and WAL segment size
 * settings are not in any object: set them again.
 */
struct RepairStats;
int repo_rebuild_catalog(const RepoLocation *l, struct RepairStats *ret);
/*
 * Repository format 2 (pgbakfs upgrade): chunk-id lists of more than 256 ids
 * as shared id blocks (catalog.h), manifests of format 2 (manifest.h).
 */
typedef struct RepoUpgradeResult {
	uint32_t from_format;
	uint64_t lists_converted;
	bool already; /* format 2 already, nothing left to convert: nothing done */
} RepoUpgradeResult;
/*
 * Write config with the current format, convert every long inline list to id
 * blocks (one transaction), and write every manifest again. Between
 * repo_write_begin and repo_write_end (-EINVAL otherwise); a directory
 * repository is also locked against gc (-EBUSY while gc runs). Safe to
 * interrupt and to run again (see repo_write.c).
 */
int repo_upgrade(Repo *r, RepoUpgradeResult *ret);
/* Generation of the local catalog copy (remote; 0 for local repositories). */
uint64_t repo_generation(const Repo *r);

/*
 * Repository objects other than packs and WAL (catalog generations and
 * deltas, snapshot manifests): zstd-compressed, with a header, sealed when
 * the repository is encrypted; past 4 GiB of plain bytes, in checked pieces
 * (store/repo_meta.c). get: -EBADMSG when damaged.
 */
int repo_meta_put(Repo *r, const char *name, const void *buf, size_t len);
/*
 * repo_meta_put of the bytes of the file open at fd, read in pieces: the
 * plain bytes are never all in memory, only the compressed ones.
 */
int repo_meta_put_file(Repo *r, const char *name, int fd);
int repo_meta_get(Repo *r, const char *name, void **ret, size_t *ret_len);
/*
 * repo_meta_get's plain bytes written to fd (from its offset) as they are
 * decoded: an object past 64 MiB is fetched in windows and never held
 * whole. On error the file may hold part of them, the last not yet checked
 * (a digest, a tag, the end of a frame): the caller drops it.
 */
int repo_meta_get_file(Repo *r, const char *name, int fd);

/* The repository's name for messages: the path or the s3:// URL. */
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
