/*
 * Which blocks of a cluster changed between two backups: the changed-block
 * set of the WAL range [from, to) (the parent's start LSN to the new backup's)
 * along the timeline history, for a block-level incremental.
 *
 * Sources, tried per segment in this order:
 *   1. the block-reference summary wal-push stored beside the archived segment;
 *   2. the segment itself in the server's pg_wal (local mode: the newest
 *      segments are not archived yet when a backup starts);
 *   3. the archived segment, summarized now (WAL archived by an older
 *      pgbakfs); its summary is stored for next time.
 * On PostgreSQL 17+ with summarize_wal = on, the server's own summaries
 * (pg_wal_summary_contents) are used instead when they cover the range.
 *
 * Incomplete coverage is an answer, not an error: a gap in the archive, a
 * segment of another system, an unsummarized record (see ingest/walsummary.h),
 * a timeline the history does not lead through. The caller then reads by
 * size and mtime, and says why (the note).
 */
#pragma once

#include "ingest/pgconn.h"
#include "ingest/walsummary.h"
#include "store/repo.h"

typedef struct ChangesRequest {
	Repo *repo;
	PgConn *conn;       /* the server (for its WAL summaries and history); may be NULL */
	const char *pgdata; /* its data directory on this host (for pg_wal); may be NULL */
	uint64_t system_id;
	uint32_t seg_size;
	uint64_t from, to; /* LSNs: the parent's start, the new backup's start */
	uint32_t from_tli, to_tli;
} ChangesRequest;

typedef struct ChangesResult {
	WalBlockSet *blocks; /* NULL when the range is not covered */
	char note[512];      /* where the set came from, or why there is none */
	uint64_t segments;   /* segments summarized, by source: */
	uint64_t from_archive, from_pg_wal, backfilled;
	bool server;         /* from the server's summaries */
} ChangesResult;

/* 0 with res->blocks set or NULL (see the note); -errno for real failures. */
int changes_collect(const ChangesRequest *rq, ChangesResult *res);
void changes_result_clear(ChangesResult *res);

/*
 * The summary wal-push stores for an archived segment (name, its bytes):
 * walsum_serialize() of its walsum_segment(). -EINVAL when name is not a
 * full segment's, -EBADMSG when the bytes are not that segment.
 */
int changes_summary_build(const char *name, const void *buf, size_t len, uint8_t **ret,
			  size_t *ret_len);

/*
 * The precise changed-block set of the records in [from, to) on one timeline,
 * from the archived segments themselves (what pg_wal_summary_contents gives
 * for the same range on PostgreSQL 17; `pgbakfs wal-summary` prints it).
 * -ENOENT and the like (why names the segment) when a segment cannot be read,
 * -ENODATA when the WAL there is not summarizable (why says why).
 */
int changes_range(Repo *repo, uint32_t tli, uint64_t from, uint64_t to, WalBlockSet **ret,
		  char *why, size_t why_len);
