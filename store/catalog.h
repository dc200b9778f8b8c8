/*
 * The catalog: the SQLite index of a repository (WAL mode, synchronous=FULL).
 * All SQL lives in catalog.c. Everything here can be rebuilt from the
 * repository's objects; the catalog is an index, not the only copy of truth.
 *
 * A Catalog is one SQLite connection: use it from one thread at a time; each
 * thread that needs the catalog opens its own. Functions return 0 or -errno
 * (-ENOENT for an unknown snapshot or chunk, -EBUSY when the database stays
 * locked past the busy timeout, -EIO for other SQLite errors).
 */
#pragma once

#include "store/chunk.h"
#include "store/pack.h"

typedef struct Catalog Catalog;

typedef struct ChunkLoc {
	int64_t pack;
	char pack_name[64];
	uint64_t offset;
	uint32_t elen, plen;
	uint8_t enc;
	bool has_crc;
	uint32_t crc; /* CRC-32C of the plain bytes, recorded at backup (not in packs) */
	uint64_t pack_size;
	bool has_fh; /* chunk_fh of the plain bytes, recorded at backup (NULL before) */
	uint8_t fh[CHUNK_FH_LEN];
} ChunkLoc;

/* Snapshot status values stored in the catalog. */
#define SNAP_STATUS_RUNNING "running"
#define SNAP_STATUS_OK "ok"
#define SNAP_STATUS_WARNING "warning"
#define SNAP_STATUS_FAILED "failed"

typedef struct SnapshotInfo {
	int64_t rowid;
	char name[64];
	char *instance, *type, *parent, *status, *label, *note, *source, *session;
	char *start_lsn, *stop_lsn, *system_id;
	int64_t start_time, stop_time; /* ns since the epoch */
	int64_t timeline, pg_version;
	uint64_t logical_bytes, stored_bytes, n_files;
	bool verified;
	int64_t verified_time;
	bool verified_ok;
	char *verified_details;
	int64_t pinned_until;
	/* digest of the file tree (store/treedigest.h); absent in snapshots of older versions */
	bool has_tree_digest;
	ChunkId tree_digest;
	/*
	 * How the snapshot was taken (NULL from --from-dir and older versions): "full"
	 * (everything read), "files" (an incremental: files whose size and mtime
	 * moved were read), "blocks" (an incremental: relation files read only
	 * where the WAL says blocks changed); method_note says why, or what
	 * fell back; read_bytes: the bytes read from the source.
	 */
	char *method, *method_note;
	bool has_read_bytes;
	uint64_t read_bytes;
} SnapshotInfo;

void snapshot_info_clear(SnapshotInfo *s);

typedef struct FileRow {
	uint64_t ino, parent; /* root is ino 1, its own parent */
	const char *name;     /* "" for the root */
	uint32_t mode, uid, gid;
	int64_t mtime_ns;
	uint64_t size;
	int64_t content; /* 0: no content (empty file, directory, symlink) */
	const char *target;
} FileRow;

typedef struct CatalogStats {
	uint64_t n_snapshots, n_packs, n_chunks, n_contents, n_files, n_idblocks;
	uint64_t pack_bytes, chunk_plain_bytes, chunk_stored_bytes, logical_bytes;
} CatalogStats;

int catalog_open(const char *path, bool create, Catalog **ret);
Catalog *catalog_free(Catalog *c);
/*
 * The repository format this connection writes (store/repo.c sets it on every
 * connection it opens; 0 until then): from 2 on, committed snapshots keep
 * their trees as shared directories (catalog_tree_share).
 */
void catalog_set_format(Catalog *c, unsigned format);
unsigned catalog_format(const Catalog *c);

/* BEGIN IMMEDIATE / COMMIT / ROLLBACK. */
int catalog_begin(Catalog *c);
int catalog_commit(Catalog *c);
void catalog_rollback(Catalog *c);

/* 1 when a usable (not condemned) copy of the chunk exists, 0 if not. */
int catalog_chunk_exists(Catalog *c, const ChunkId *id);
int catalog_chunk_locate(Catalog *c, const ChunkId *id, ChunkLoc *ret);
/*
 * catalog_chunk_locate for n ids, in one read transaction (one snapshot of the
 * catalog; inside the caller's when one is open): ret_err[i] is 0 with ret[i]
 * filled, or -ENOENT for an unknown id. Returns 0, or -errno when the catalog
 * failed (ret and ret_err then say nothing).
 */
int catalog_chunks_locate(Catalog *c, const ChunkId *ids, size_t n, ChunkLoc *ret, int *ret_err);
/*
 * The chunk_fh recorded at backup of each of ids[0..n), as catalog_chunk_locate
 * would give it, in one read transaction (restore --delta looks up a file's
 * chunks at once). ret_has[i] false: none (a hole, a chunk stored without one,
 * or an id not found: catalog_chunk_locate says which). 0 or -errno.
 */
int catalog_chunk_fh_get(Catalog *c, const ChunkId *ids, size_t n,
			 uint8_t (*ret_fh)[CHUNK_FH_LEN], bool *ret_has);
/* Set the chunk's CRC-32C if its row has none (manifest import); no row: nothing. */
int catalog_chunk_set_crc(Catalog *c, const ChunkId *id, uint32_t crc);
/*
 * 1 (and the mark cleared) when catalog_open migrated this catalog in a way
 * a delta cannot carry to a reader with an older binary: its next
 * publication must be whole. 0 when not, -errno on error.
 */
int catalog_publish_whole_take(Catalog *c);
/*
 * Chunk rows keyed by the whole id (schema version 1, what format 1 keeps so
 * an earlier release reads it) become rows keyed by its first 8 bytes, in
 * one transaction (nothing changed on error); the catalog is then schema
 * version 2, which an earlier release refuses. 1 when it migrated, 0 when
 * there was nothing to do. Every other call works on either shape.
 */
int catalog_chunks_rekey(Catalog *c);
/* A new, empty catalog for a format-1 repository: chunk rows keyed by id; -ENOTEMPTY if it has any. */
int catalog_chunks_unkeyed(Catalog *c);

/* Record a pack about to be written (state "pending", autocommitted). */
int catalog_pack_add_pending(Catalog *c, const char *name, const char *session, int64_t *ret_id);
/* After the pack object is durable: its chunks and state "ok", one transaction. */
int catalog_pack_record(Catalog *c, int64_t pack_id, uint64_t size, const PackEntry *e, size_t n);
typedef int (*CatalogPackFn)(int64_t id, const char *name, const char *state, uint64_t size,
			     void *userdata);
int catalog_pack_foreach(Catalog *c, CatalogPackFn cb, void *userdata);
/* The chunks the catalog places in a pack, sorted by offset. */
int catalog_pack_chunks(Catalog *c, int64_t pack_id, PackEntry **ret, size_t *ret_n);

/*
 * Chunk-id lists ("contents"). A list is stored once, found by the SHA-256 of
 * its id bytes. In a catalog with id blocks on (catalog_set_idblocks), a list
 * of more than PGBAKFS_IDBLOCK_IDS ids (PGBAKFS_IDBLOCK_IDS_SMALL from format
 * 4) is stored as id blocks: ids [0, 256), [256, 512), ... (or [0, 62), ...)
 * each stored once by the SHA-256 of its bytes, so lists that differ in a few
 * ids share the rest. Callers always see whole lists.
 *
 * put: returns the id of the existing or new row; in the caller's transaction
 * when one is open, else in one of its own. get: *ret malloc'd (free() it);
 * -ENOENT for an unknown id, -EBADMSG when the row or one of its blocks is
 * damaged (a block's ids must hash to its hash: a damaged block is never
 * returned as data).
 */
#define PGBAKFS_IDBLOCK_IDS 256
/*
 * Block size of lists written in repository format 4 (catalog_set_format): the
 * most ids that put two block rows on one 4 KiB catalog page (catalog.c).
 * Every reader takes lists of both sizes, told apart by the row's form.
 */
#define PGBAKFS_IDBLOCK_IDS_SMALL 62
/* A list's stored form (contents.blocks; manifests carry it in their rows too). */
enum {
	CATALOG_LIST_INLINE = 0,       /* the 32-byte ids */
	CATALOG_LIST_BLOCKS = 1,       /* 256-id blocks, 8-byte little-endian rowids */
	CATALOG_LIST_SMALL_BLOCKS = 2, /* 62-id blocks, zigzag delta varint rowids */
};
/* The form a new list of n ids takes on this connection. */
int catalog_list_form(const Catalog *c, size_t n);
int catalog_content_put(Catalog *c, const ChunkId *ids, size_t n, int64_t *ret_id);
int catalog_content_get(Catalog *c, int64_t id, ChunkId **ret, size_t *ret_n);
/*
 * Whether new lists may be stored as id blocks (off by default: a format-1
 * repository must never get them, its older readers would misread them).
 * Lists of both forms are read either way. Set by the repository (store/repo.c)
 * on every connection it opens.
 */
void catalog_set_idblocks(Catalog *c, bool on);
bool catalog_idblocks(const Catalog *c);
/*
 * The stored form of a content (manifests): the whole list (*ret, *ret_n) and
 * the hash of the whole list; for a list stored as blocks also the hashes of
 * its blocks (*ret_blocks, *ret_n_blocks, malloc'd), else NULL and 0; its
 * form (CATALOG_LIST_*) in *ret_form (may be NULL).
 */
int catalog_content_get_blocks(Catalog *c, int64_t id, ChunkId *ret_hash, ChunkId **ret,
			       size_t *ret_n, ChunkId **ret_blocks, size_t *ret_n_blocks,
			       int *ret_form);
/*
 * A list of n ids (more than one block of form's size) by the hash of the
 * whole list and of its blocks (manifest import), stored in form
 * (CATALOG_LIST_BLOCKS or CATALOG_LIST_SMALL_BLOCKS). A block the catalog
 * lacks is recorded as a placeholder (no ids; counted in *ret_missing, may be
 * NULL): the content then reads as damaged (-EBADMSG) and check reports it,
 * until a block with that hash is put. -EBADMSG when the form is unknown or
 * n_blocks does not fit n.
 */
int catalog_content_put_blocks(Catalog *c, const ChunkId *hash, size_t n, int form,
			       const ChunkId *blocks, size_t n_blocks, int64_t *ret_id,
			       size_t *ret_missing);
/*
 * One id block of 1..PGBAKFS_IDBLOCK_IDS ids, stored once by its hash (an
 * existing row of that hash whose ids are wrong is overwritten: healed).
 */
int catalog_idblock_put(Catalog *c, const ChunkId *ids, size_t n, int64_t *ret_id);
/*
 * The content with this hash; when there is none, a placeholder row (n 0,
 * blocks 1: reading it is -EBADMSG, catalog_check_references reports it
 * missing under its hash) and *ret_missing 1; also 1 when the row found is
 * such a placeholder or names a placeholder id block. Putting the list later
 * (catalog_content_put) fills the placeholder in, keeping its row id.
 */
int catalog_content_find_or_missing(Catalog *c, const ChunkId *hash, int64_t *ret_id,
				    size_t *ret_missing);
/* Make snap the carrier of the content with this hash, unless it has one (manifest import). */
int catalog_content_set_carrier(Catalog *c, const ChunkId *hash, int64_t snap);
/* Make snap the carrier of the block with this hash, unless it has one. */
int catalog_idblock_set_carrier(Catalog *c, const ChunkId *hash, int64_t snap);
/* The blocks snap carries (its manifest holds them), each verified: -EBADMSG if damaged. */
typedef int (*CatalogIdBlockFn)(const ChunkId *hash, const ChunkId *ids, size_t n, void *ud);
int catalog_idblock_foreach_carried(Catalog *c, int64_t snap, CatalogIdBlockFn cb, void *ud);
/* Every block whose ids do not hash to its hash (missing: a placeholder left by repair). */
typedef int (*CatalogBadIdBlockFn)(const ChunkId *hash, bool missing, void *ud);
int catalog_idblocks_verify(Catalog *c, CatalogBadIdBlockFn cb, void *ud);
/*
 * Give every block without a committed carrier one (the lowest-rowid committed
 * snapshot that uses it), in one transaction; cb (name: the snapshot's) is
 * called inside it once per snapshot that became a carrier, to mark its
 * manifest for rewrite. From repository format 3 (catalog_set_format) the
 * same for contents and directories (contents.carrier, dirs.carrier).
 *
 * from_snap 0: every item without a committed carrier, from a scan of each
 * table, placed by walking every committed snapshot (needed after a carrier
 * was deleted). from_snap > 0: the caller knows no carrier was deleted and
 * that only snapshots from rowid from_snap on can use an item without one
 * (their manifests were never written); only items whose carrier is NULL
 * (by the carrier indexes) and only those snapshots' trees are read, so the
 * cost follows what the new snapshots added, not the repository's history.
 * INT64_MAX: no such snapshot.
 */
typedef int (*CatalogCarrierFn)(int64_t snap, const char *name, void *ud);
int catalog_idblocks_assign_carriers(Catalog *c, int64_t from_snap, CatalogCarrierFn cb, void *ud);
/*
 * upgrade: every inline list of more than PGBAKFS_IDBLOCK_IDS ids becomes
 * blocks, in one transaction (-EINVAL unless id blocks are on). count: how
 * many such lists there are.
 */
int catalog_idblocks_convert(Catalog *c, uint64_t *ret_n);
int catalog_idblocks_inline_count(Catalog *c, uint64_t *ret_n);

int catalog_session_add(Catalog *c, const char *id, const char *kind, int64_t *ret_epoch);
/* Unregister a session and drop its holds. */
int catalog_session_remove(Catalog *c, const char *id);
typedef int (*CatalogSessionFn)(const char *id, const char *kind, int64_t pid, int64_t started,
				void *userdata);
int catalog_session_foreach(Catalog *c, CatalogSessionFn cb, void *userdata);
/* Drop a dead session: its running snapshots and its row (one transaction). */
int catalog_session_reap(Catalog *c, const char *id, uint64_t *ret_n_snapshots);

/*
 * Insert s as a running snapshot; picks a unique name from s->start_time
 * ("20261122T015400Z", then "-1", "-2" ...) and sets s->rowid and s->name.
 */
int catalog_snapshot_begin(Catalog *c, SnapshotInfo *s);
/*
 * Set status, stop time, sizes, LSNs and the tree digest (when
 * has_tree_digest) of a running snapshot: it becomes visible.
 */
int catalog_snapshot_finish(Catalog *c, const SnapshotInfo *s);
/* name, or "latest" (newest visible snapshot, of instance when not NULL). */
int catalog_snapshot_get(Catalog *c, const char *name, const char *instance, SnapshotInfo *ret);
typedef int (*CatalogSnapshotFn)(const SnapshotInfo *s, void *userdata);
/* Visible snapshots (not running) oldest first; instance NULL means all. */
int catalog_snapshot_foreach(Catalog *c, const char *instance, CatalogSnapshotFn cb, void *ud);
/*
 * Remove a snapshot and its file rows (one transaction). A snapshot some
 * session holds (a mount serving it) only becomes "deleted": hidden from every
 * listing, its rows and chunks kept until the holds go and gc purges it.
 * Returns 0 when removed, 1 when deferred that way.
 */
int catalog_snapshot_delete(Catalog *c, int64_t rowid);
/* Record the outcome of "pgbakfs verify" on a snapshot. */
int catalog_snapshot_set_verified(Catalog *c, int64_t rowid, int64_t time_ns, bool ok,
				  const char *details);
/*
 * Retention (pin, note, expire). Pin until until_ns (ns since the epoch; 0
 * unpins); set or, with NULL, clear the note. Both: -ENOENT unless the
 * snapshot is visible.
 */
int catalog_snapshot_set_pin(Catalog *c, int64_t rowid, int64_t until_ns);
int catalog_snapshot_set_note(Catalog *c, int64_t rowid, const char *note);
/*
 * catalog_snapshot_delete for retention: in the same transaction, checks the
 * snapshot is still visible (-ENOENT) and not pinned past now_ns (-EAGAIN: it
 * was pinned after the caller decided).
 */
int catalog_snapshot_expire(Catalog *c, int64_t rowid, int64_t now_ns);
/* Status "failed" for a visible snapshot that cannot be restored whole (repair). */
int catalog_snapshot_mark_failed(Catalog *c, const char *name);
/* Every snapshot row, running and deleted (still held) ones too, oldest first. */
int catalog_snapshot_foreach_any(Catalog *c, CatalogSnapshotFn cb, void *ud);
/*
 * WAL segment size of the snapshot's cluster, from the size of the WAL
 * segments in its pg_wal (a power of two from 1 MiB to 1 GiB); -ENOENT if
 * it has none.
 */
int catalog_snapshot_wal_seg_size(Catalog *c, int64_t rowid, uint64_t *ret);
/*
 * The repository's saved retention policy (meta keys retention_keep_last,
 * retention_keep_within in seconds); 0 means not part of the policy.
 * get: -ENOENT when none is saved. set: replaces the whole policy.
 */
int catalog_retention_get(Catalog *c, uint64_t *ret_keep_last, int64_t *ret_keep_within);
int catalog_retention_set(Catalog *c, uint64_t keep_last, int64_t keep_within);
/*
 * Hold a visible snapshot for session: -ENOENT if it is gone (or running).
 * Holding again what the session already holds succeeds, even once deleted.
 */
int catalog_snapshot_hold(Catalog *c, const char *session, int64_t rowid);
int catalog_snapshot_release(Catalog *c, const char *session, int64_t rowid);

/*
 * Add a file row. -EBADMSG for a row that breaks the tree's shape (see
 * catalog_file_foreach) as far as one row shows it: a name that is not one
 * path component, a root or extra root that is not a directory.
 */
int catalog_file_add(Catalog *c, int64_t snap, const FileRow *f);
typedef int (*CatalogFileFn)(const FileRow *f, void *userdata);
/*
 * Files of a snapshot in ino order (parents before children). Every row is
 * checked before cb sees it, so no consumer can be led outside its tree by
 * a damaged or crafted catalog: -EBADMSG unless the root is ino 1 (its own
 * parent, named "", a directory), an extra root is a directory that is its
 * own parent and is named by a normalized absolute path, and every other row
 * is one path component (not empty, ".", "..", no '/' or NUL, at most
 * NAME_MAX bytes) under a directory listed before it; a symlink has a target.
 */
int catalog_file_foreach(Catalog *c, int64_t snap, CatalogFileFn cb, void *userdata);
/*
 * One directory of a snapshot without reading its files: its row (name and
 * target NULL, parent as stored) and how many directories lie directly under
 * it (for st_nlink). One indexed lookup; -ENOENT when snap has no row ino,
 * -ENOTDIR when that row is not a directory. A snapshot with a shared tree
 * answers for its root (ino 1) only.
 */
int catalog_dir_get(Catalog *c, int64_t snap, uint64_t ino, FileRow *ret,
		    uint32_t *ret_n_subdirs);
/* True when name is one valid path component (the rule above). */
bool catalog_name_valid(const char *name, size_t len);
/* True when path is absolute, normalized ("/a/b": no empty, ".", ".." parts) and < PATH_MAX. */
bool catalog_abs_path_valid(const char *path, size_t len);
/* True when path is relative and normalized ("a/b"), with valid components. */
bool catalog_rel_path_valid(const char *path, size_t len);

int catalog_stats(Catalog *c, CatalogStats *ret);
/* Changes whenever another connection commits (PRAGMA data_version): cheap polling. */
int catalog_data_version(Catalog *c, uint64_t *ret);
/* What one file row shows of the tree's shape: root, extra root, or a name under a parent. */
bool catalog_file_row_valid(const FileRow *f, size_t name_len);

/*
 * Shared snapshot trees (store/catalog_tree.c). catalog_tree_share turns a
 * snapshot's file rows into directory rows shared with every snapshot that
 * has the same directory, and points the snapshot at them (inos are then
 * derived: preorder, names in order; compute the tree digest after it).
 * From repository format 5 (catalog_set_format) a directory of more than
 * 128 entries is written as a list of shared entry blocks (a list of more
 * than 64 blocks: a list of sublists of them); both forms are read
 * everywhere. catalog_tree_foreach gives a tree's rows as
 * catalog_file_foreach does. catalog_tree_mark_live fills temp tables
 * live_dirs and live_contents with what the remaining snapshots reach (gc;
 * entry blocks in live_dirs too). A directory that does not match its hash
 * is -EBADMSG everywhere.
 */
int catalog_tree_share(Catalog *c, int64_t snap);
int catalog_tree_foreach(Catalog *c, int64_t forest, CatalogFileFn cb, void *userdata);
int catalog_tree_mark_live(Catalog *c);
/* The root's row of a tree (name and target NULL) and how many directories are right under it. */
int catalog_tree_root(Catalog *c, int64_t forest, FileRow *ret, uint32_t *ret_n_subdirs);
/*
 * The directories and contents a tree reaches (carriers): dir_cb sees each
 * `dirs` row, the forest first, a directory stored as entry blocks (format
 * 5) before each of its blocks, and returns 1 to skip its entries (met
 * before: so was everything under it), 0 to read them, <0 to stop;
 * content_cb sees the content of each entry of a directory or block read.
 */
typedef int (*CatalogTreeIdFn)(int64_t id, void *ud);
int catalog_tree_walk_ids(Catalog *c, int64_t forest, CatalogTreeIdFn dir_cb,
			  CatalogTreeIdFn content_cb, void *ud);
/*
 * Portable directories (manifests of format 3): the entries of a directory
 * with each content named by its hash and each subdirectory by its portable
 * hash (the SHA-256 of its portable bytes); a directory stored as entry
 * blocks is a list of its blocks' (or sublists') portable hashes, and each
 * block and sublist a row of its own (the first byte of the bytes says
 * which: 1 directory, 2 list, 3 block; a format-4 binary refuses 2 and 3).
 * catalog_tree_export walks the
 * tree forest of snapshot snap: dir() gets each row snap carries
 * (dirs.carrier) in portable form, content() each content snap carries
 * (contents.carrier; may repeat); an item without a carrier yet is carried
 * by every snapshot that uses it; *ret_forest: the forest's portable hash.
 * -EBADMSG when a directory does not match its hash or names a content the
 * catalog lacks.
 */
typedef struct CatalogTreeExport {
	int (*dir)(const ChunkId *phash, uint64_t n, const void *bytes, size_t len, void *ud);
	int (*content)(int64_t content, void *ud);
	void *ud;
} CatalogTreeExport;
int catalog_tree_export(Catalog *c, int64_t forest, int64_t snap, const CatalogTreeExport *x,
			ChunkId *ret_forest);
/*
 * Import, on one connection: catalog_tree_stage keeps a portable directory
 * (-EBADMSG unless its bytes hash to phash) in a temp table of this
 * connection until it is closed; catalog_tree_import makes the catalog rows
 * of the tree whose forest has portable hash forest, from staged
 * directories and contents the catalog has (found by hash), and returns the
 * forest's row. A directory nobody staged becomes an empty directory and a
 * content the catalog lacks a placeholder (catalog_content_find_or_missing),
 * each counted in *ret_missing: the tree is then not whole. -EBADMSG for a
 * staged directory that is not well formed. catalog_tree_carry: snap becomes
 * the carrier of the row made from staged phash, unless it has one.
 */
int catalog_tree_stage(Catalog *c, const ChunkId *phash, uint64_t n, const void *bytes,
		       size_t len);
int catalog_tree_import(Catalog *c, const ChunkId *forest, int64_t *ret_forest,
			size_t *ret_missing);
int catalog_tree_carry(Catalog *c, const ChunkId *phash, int64_t snap);
/*
 * The connection itself, for store modules that move whole catalogs or
 * snapshots (publication, manifests, repair). Not for ad-hoc queries.
 */
struct sqlite3;
struct sqlite3 *catalog_sqlite(Catalog *c);

/*
 * Backup attempts (table attempts), recorded whether or not they made a
 * snapshot, so a failed backup leaves a trace for status and metrics; the
 * newest CATALOG_ATTEMPTS_KEPT of each instance are kept. Not in manifests:
 * a rebuilt catalog starts without them.
 */
#define CATALOG_ATTEMPTS_KEPT 100
typedef struct BackupAttempt {
	char *instance;
	int64_t started, finished; /* ns since the epoch */
	char *snapshot;            /* the snapshot it made; NULL when it failed */
	char *error;               /* the error line when it failed, else NULL */
} BackupAttempt;
int catalog_attempt_add(Catalog *c, const char *instance, int64_t started, int64_t finished,
			const char *snapshot, const char *error);
/*
 * The newest attempt of instance (failed: the newest that failed): -ENOENT
 * when there is none. *ret_n_failed (may be NULL): attempts that failed since
 * the last one that succeeded (set on -ENOENT too). Clear *ret with backup_attempt_clear.
 */
int catalog_attempt_last(Catalog *c, const char *instance, bool failed, BackupAttempt *ret,
			 uint64_t *ret_n_failed);
void backup_attempt_clear(BackupAttempt *a);
/* Every instance with a visible snapshot or an attempt, sorted; free each and the array. */
int catalog_instances(Catalog *c, char ***ret, size_t *ret_n);

/* Damaged blocks found while a snapshot was taken (kept with the snapshot). */
int catalog_bad_block_add(Catalog *c, int64_t snap, const char *path, uint64_t block);
typedef int (*CatalogBadBlockFn)(const char *path, uint64_t block, void *userdata);
int catalog_bad_block_foreach(Catalog *c, int64_t snap, CatalogBadBlockFn cb, void *userdata);
/*
 * Links: a directory of the snapshot that the source reached through a symlink
 * (a tablespace under pg_tblspc); restore writes it at target and links it.
 */
/* add, foreach: -EBADMSG when path is not a relative normalized path or target is empty. */
int catalog_link_add(Catalog *c, int64_t snap, const char *path, const char *target);
typedef int (*CatalogLinkFn)(const char *path, const char *target, void *userdata);
int catalog_link_foreach(Catalog *c, int64_t snap, CatalogLinkFn cb, void *userdata);
/* System id recorded by the newest snapshot of instance; -ENOENT if none. */
int catalog_instance_system_id(Catalog *c, const char *instance, char **ret);

typedef struct CatalogGcResult {
	uint64_t snapshots_purged; /* deleted snapshots whose last hold went */
	uint64_t contents_deleted, idblocks_deleted, chunks_condemned, chunks_deleted, chunk_bytes_deleted;
	uint64_t chunks_waiting; /* condemned, kept for a backup that started earlier */
	char **dead_packs;       /* pack object names to delete, NULL-terminated */
	size_t n_dead_packs;
	uint64_t packs_retired_waiting; /* catalog_gc_retired: retired packs kept for sessions */
} CatalogGcResult;

void catalog_gc_result_clear(CatalogGcResult *r);
/*
 * Mark and sweep in one transaction: deleted snapshots nobody holds lose their
 * rows; chunks no remaining file references are
 * condemned; condemned chunks are deleted once no live session started
 * before they were condemned (a backup may hold an unrecorded reference to a
 * chunk it found before gc condemned it). Packs left without chunks, and
 * pending packs of sessions that are gone, are returned for deletion.
 */
int catalog_gc(Catalog *c, CatalogGcResult *ret);
/*
 * Packs gc --repack emptied ("retired", with the epoch of their move) go once
 * every live session of any kind, mounts and restores too, registered after
 * the move: one of them may have located a chunk there just before it moved.
 * catalog_gc returns them with the dead packs; this returns only them, and
 * counts those that must wait.
 */
int catalog_gc_retired(Catalog *c, CatalogGcResult *ret);
/*
 * VACUUM when at least a quarter of the file (or 64 MiB) is free pages, then
 * try to truncate the WAL; *ret_freed: bytes the file gives back (0 when
 * nothing was done). Outside a transaction (-EINVAL). Waits for a running
 * writer like any write (-EBUSY past the busy timeout).
 */
int catalog_vacuum_sparse(Catalog *c, uint64_t *ret_freed);

/* gc --repack */
typedef struct CatalogRepackPack {
	int64_t id;
	char name[64];
	uint64_t size, live_bytes, n_chunks;
} CatalogRepackPack;
/*
 * Recorded packs whose chunks' encoded bytes are below pct% of the pack's
 * size, and none of whose chunks is condemned (one may still be waiting for a
 * backup: such a pack waits too); malloc'd array, by pack id.
 */
int catalog_repack_candidates(Catalog *c, unsigned pct, CatalogRepackPack **ret, size_t *ret_n);
/* The not condemned chunks of a pack, with their CRC, sorted by offset. */
int catalog_pack_live_chunks(Catalog *c, int64_t pack_id, PackEntry **ret, size_t *ret_n);
/*
 * After the pending pack pack_id (size bytes) holding copies of the chunks e
 * is durable, in one transaction: move each chunk's row from one of the old
 * packs to it (same encoded bytes: same lengths and encoding), record it "ok",
 * bump the gc epoch, and make each old pack "retired" at that epoch.
 * -ESTALE, nothing changed, when a chunk is no longer in an old pack as read,
 * or an old pack would keep a chunk.
 */
int catalog_pack_move(Catalog *c, int64_t pack_id, uint64_t size, const PackEntry *e, size_t n,
		      const int64_t *old, size_t n_old);

/* Names of visible snapshots whose files use any chunk in ids (check). */
typedef int (*CatalogDamageFn)(const char *snapshot, const char *path, void *userdata);
int catalog_find_damage(Catalog *c, const ChunkId *ids, size_t n, CatalogDamageFn cb, void *ud);
/*
 * Every chunk referenced by a visible snapshot must have a row (check); an id
 * block a list names that is missing (see catalog_content_put_blocks) is
 * reported under its hash too.
 */
typedef int (*CatalogMissingFn)(const char *snapshot, const ChunkId *id, void *userdata);
int catalog_check_references(Catalog *c, CatalogMissingFn cb, void *userdata);
/* PRAGMA quick_check; 0 when it says ok. */
int catalog_integrity_check(Catalog *c, char **ret_message);

/*
 * Replace the source of snapshots (rows of any status), e.g. to remove a
 * secret an older version recorded: n edits in one transaction with
 * secure_delete on, then the file is rebuilt (VACUUM) and the WAL truncated,
 * so the old text is gone from catalog.db and catalog.db-wal too, not only
 * from the rows (the WAL stays when another connection reads meanwhile; it
 * goes when the last connection closes). Outside a transaction (-EINVAL).
 * -ENOENT when a rowid is unknown: nothing is changed then.
 */
typedef struct CatalogSourceEdit {
	int64_t rowid;
	const char *source; /* NULL: no source */
} CatalogSourceEdit;
int catalog_snapshot_set_sources(Catalog *c, const CatalogSourceEdit *edits, size_t n);
