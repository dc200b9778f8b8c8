/*
 * Backing up a cluster from its own host: pg_backup_start/pg_backup_stop
 * (non-exclusive) over libpq, the data directory read by pgbakfs itself with
 * -j reader threads, the exclusions of pg_basebackup, tablespaces followed
 * through pg_tblspc, WAL streamed through a temporary slot into pg_wal,
 * backup_label written from pg_backup_stop, and a backup_manifest that
 * pg_verifybackup accepts. Incremental (type "incr"): files whose size and
 * mtime match the parent snapshot, and whose mtime is more than a second
 * before the parent started, reuse the parent's content without being read.
 * Relation files are read block-level where the WAL since the parent's start
 * is summarized (ingest/changes.h): only the 64 KiB chunks holding a changed
 * block, the rest taken from the parent's chunk list.
 */
#pragma once

#include "ingest/pgconn.h"
#include "store/snapwriter.h"

typedef struct LocalBackupOptions {
	const char *conninfo;
	const char *pgdata;
	const char *instance;
	const char *label;
	const char *note;
	const char *type; /* "full" or "incr" */
	int jobs;
	bool progress;
	const char *staging_dir;
	/* directories outside the data directory to keep beside it (absolute paths) */
	const char *const *extra_dirs;
	size_t n_extra_dirs;
	/* incr: also read what the WAL says is unchanged, and fail if WAL changed it */
	bool verify_blocks;
} LocalBackupOptions;

typedef struct LocalBackupResult {
	SnapWriterResult snap;
	char start_lsn[32], stop_lsn[32];
	uint32_t timeline;
	char type[8];    /* what was taken: incr falls back to full without a parent */
	char parent[64]; /* the parent of an incr */
	uint64_t files_read, files_reused;
	char method[8];  /* "full", "files" or "blocks" (SnapshotInfo.method) */
	char note[512];  /* why, or where the changed blocks came from */
	uint64_t files_blocks; /* relation files read block-level */
	uint64_t read_bytes;   /* bytes read from the data directory */
	/*
	 * --verify-blocks: chunks taken unread that were read after all; of them,
	 * those that differ without WAL (hint bits), and those changed after the
	 * backup started (its WAL replays them)
	 */
	uint64_t verified_chunks, verified_hint_only, verified_during;
} LocalBackupResult;

int local_backup(Repo *repo, const LocalBackupOptions *o, LocalBackupResult *ret, PgError *err);
