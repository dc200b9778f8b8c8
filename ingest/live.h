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
