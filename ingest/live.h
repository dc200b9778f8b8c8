/*
 * Backing up a running cluster from any host: BASE_BACKUP over a replication
 * connection, its archive stream parsed on the fly into the snapshot (never
 * staged), WAL from the start to the end LSN streamed beside it through a
 * temporary slot into the snapshot's pg_wal (staged per segment while the
 * backup runs), the server's backup_manifest kept. Page checksums are
 * verified as data passes. On any error the connections close, so the server
 * aborts the backup and drops the slot; nothing is left behind there.
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
} LiveBackupOptions;

typedef struct LiveBackupResult {
	SnapWriterResult snap;
	char start_lsn[32], stop_lsn[32];
	uint32_t timeline;
	int pg_version;
} LiveBackupResult;

/*
 * -ECONNREFUSED / -EIO / -EPROTO with err->msg from the server or libpq;
 * -EEXIST when the instance holds another cluster's snapshots (err->msg says which).
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
