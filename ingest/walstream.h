/*
 * Streaming WAL beside a backup, as pg_basebackup -X stream does: a
 * replication connection creates a temporary physical slot (reserving WAL
 * from the last checkpoint's redo point, before the backup starts), then
 * streams from the backup's start segment into full-size segment files in a
 * staging directory, until the backup's end LSN has arrived. The slot
 * disappears with the connection, whatever happens.
 */
#pragma once

#include "common/lsn.h" /* lsn_parse, lsn_format, wal_segno_to_name */
#include "ingest/pgconn.h"
#include "store/repo.h"

typedef struct WalStream WalStream;

typedef struct PgSystem {
	char system_id[32];
	uint32_t timeline;
	uint64_t xlogpos;
} PgSystem;

/* Connect, IDENTIFY_SYSTEM, create the temporary slot. */
int walstream_new(const char *conninfo, const char *dir, WalStream **ret, PgSystem *ret_sys,
		  PgError *err);
/* Start the streaming thread at startpos (rounded down to its segment). */
int walstream_start(WalStream *ws, uint64_t startpos, uint32_t timeline, uint32_t seg_size,
		    PgError *err);
/* Wait until everything up to stoppos is written, stop, and return the result. */
int walstream_finish(WalStream *ws, uint64_t stoppos, PgError *err);
/* Stops the thread if running and disconnects (the slot goes with it). */
WalStream *walstream_free(WalStream *ws);
/* wal_segment_size as SHOW prints it ("16MB", "1GB") -> bytes; -EPROTO if odd. */
int wal_parse_segment_size(const char *s, uint32_t *ret);

/*
 * An instance holds one cluster: -EEXIST (with err->msg) when its snapshots
 * come from another system identifier.
 */
int instance_check_system(Repo *repo, const char *instance, const char *system_id, PgError *err);
