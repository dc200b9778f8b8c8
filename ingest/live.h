/*
 * Backing up a running cluster from any host: BASE_BACKUP over a replication
 * connection, its archive stream parsed on the fly into the snapshot (never
 * staged), WAL from the start to the end LSN streamed beside it through a
 * temporary slot into the snapshot's pg_wal (staged per segment while the
 * backup runs), the server's backup_manifest kept (for an incremental,
 * rewritten to list the materialized files: ingest/incremental.h). Page
 * checksums are verified as data passes. On any error the connections
 * close, so the server aborts the backup and drops the slot; nothing is left
 * behind there.
 */
#pragma once

#include "common/progress.h"
#include "ingest/pgconn.h"
#include "store/snapwriter.h"

typedef struct LiveBackupOptions {
	const char *conninfo;
	const char *instance;
	const char *label;
	const char *note;
	int jobs;
	bool progress;
	const char *staging_dir; /* parent of a private directory for WAL segments */
	/*
	 * "incr": on PostgreSQL 17+ with summarize_wal on, an incremental
	 * BASE_BACKUP against the newest snapshot of the instance (its
	 * backup_manifest uploaded), materialized into a complete snapshot
	 * (ingest/incremental.h). Where that cannot work the backup is full and
	 * the result says why. NULL or "full": full.
	 */
	const char *type;
} LiveBackupOptions;

typedef struct LiveBackupResult {
	SnapWriterResult snap;
	char start_lsn[32], stop_lsn[32];
	uint32_t timeline;
	int pg_version;
	char type[8];      /* what was taken: "full" or "incr" */
	char parent[64];   /* the parent of an incr */
	char note[600];    /* why an incr asked for is full (one line), or "" */
	uint64_t received_bytes;    /* of BASE_BACKUP's archives and manifest */
	uint64_t incremental_files; /* INCREMENTAL files materialized */
	uint64_t parent_bytes;      /* bytes of those taken from the parent by id */
} LiveBackupResult;

/*
 * -ECONNREFUSED / -EIO / -EPROTO with err->msg from the server or libpq;
 * -EEXIST when the instance holds another cluster's snapshots (err->msg says which);
 * incr: -ENOENT when the server sent changed blocks of a file the parent
 * snapshot lacks, -EBADMSG for a damaged incremental file (no snapshot then).
 */
int live_backup(Repo *repo, const LiveBackupOptions *o, LiveBackupResult *ret, PgError *err);

/*
 * Snapshots record where they came from ("pg:" and the conninfo) without
 * secrets: no password, sslpassword or other option libpq marks as a password
 * or debug option (pgconn_conninfo_redact). Older versions kept the conninfo
 * as given. This removes the secrets from every snapshot row of the catalog
 * that holds one (and the old text from the catalog file, see
 * catalog_snapshot_set_sources); the manifests follow when the writer ends
 * (repo_write_end). For a writer, outside a transaction; *ret_n (optional):
 * how many snapshots changed.
 */
int live_scrub_sources(Repo *repo, uint64_t *ret_n);
