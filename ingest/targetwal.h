/*
 * What PostgreSQL changed in a stopped data directory since an LSN, known
 * without reading its relation files: from the server's own WAL summaries
 * (PostgreSQL 17+, summarize_wal = on: pg_wal/summaries) and, past the last
 * of them, the WAL still in pg_wal (ingest/walsummary.c). For restore
 * --delta into a target PostgreSQL ran on since it was restored.
 *
 * Used only when every block PostgreSQL wrote is in its WAL, and all of
 * that WAL is summarized:
 *   - global/pg_control of PostgreSQL 17 or 18, valid, the cluster shut
 *     down cleanly (every change is in WAL before its shutdown checkpoint);
 *   - data checksums or wal_log_hints (otherwise hint bits change pages
 *     without WAL);
 *   - summary files written after trusted_after_ns (mtime; not restored from
 *     the snapshot) that chain without a gap from since, on the timelines
 *     of the cluster's history within their ranges, and the records from
 *     the last one's end to the checkpoint summarized from pg_wal.
 * Anything else is an answer, not an error: *ret is NULL and why says why.
 * Forks WAL does not track whole (free space maps, visibility maps whose
 * bits heap records clear without naming the page) and unlogged relations
 * are read whole: targetwal_file says so.
 */
#pragma once

#include "common/common.h"
#include "ingest/walsummary.h"

typedef struct TargetWal TargetWal;

/* 0 with *ret set or NULL (see why); -errno for real failures (-ENOMEM). */
int targetwal_open(const char *pgdata, uint64_t since, int64_t trusted_after_ns, TargetWal **ret,
		   char *why, size_t why_len);
TargetWal *targetwal_free(TargetWal *t); /* accepts and returns NULL */

/*
 * For the file at path (relative to pgdata) of nblocks 8 KiB blocks: 0 with
 * changed (nblocks bits, LSB first) holding the blocks PostgreSQL may have
 * written since; 1 when the whole file must be read (not a relation main
 * fork under base/, global/ or pg_tblspc/SPC/PG_.../, an unlogged
 * relation, a relation created, dropped or truncated meanwhile, a database
 * recreated); -EINVAL for bad arguments. Thread-safe.
 */
int targetwal_file(const TargetWal *t, const char *path, uint64_t nblocks, uint8_t *changed);

/*
 * The LSN from which the files of a data directory just restored change only
 * by WAL: the redo point its recovery starts from (backup_label's START WAL
 * LOCATION, else pg_control's checkpoint redo; the lower of both). 0 when
 * neither can be read.
 */
uint64_t targetwal_since(const char *pgdata);

/*
 * The limits and blocks of one PostgreSQL summary file's bytes (magic
 * 0x652B137B, entries of RelFileLocator, fork, limit block and chunk count,
 * each chunk an array of block offsets or, at 4096 entries, a bitmap; a zero
 * entry; CRC-32C of all before it) into b, in order. -EBADMSG when damaged,
 * truncated or inconsistent (nothing added then), -ENOMEM.
 */
int targetwal_summary_add(WalBlockSet *b, const uint8_t *buf, size_t len);
