/*
 * Garbage collection: reap dead sessions, drop unreferenced contents and
 * chunks (see catalog_gc for the rule that keeps it safe against running
 * backups and mounts), purge deleted snapshots no mount holds any more, delete packs left without chunks and orphaned objects. Safe to
 * run while backups run; two gc runs exclude each other (-EBUSY).
 *
 * With repack_pct, packs whose live chunks fill less than that share of them
 * are rewritten: their live chunks, checked on the way, are copied as they are
 * stored into new packs, and the old packs are deleted once no session that
 * may still read them lives (catalog_gc_retired). A pack holding a damaged
 * chunk is kept as it is (logged as a warning, counted in packs_damaged).
 * Memory is bounded by about two pack sizes plus a read window.
 *
 * Then the catalog file is compacted when gc left much of it free
 * (catalog_vacuum_sparse).
 */
#pragma once

#include "store/repo.h"

#define GC_REPACK_DEFAULT_PCT 50

typedef struct GcOptions {
	unsigned repack_pct; /* 0: no repack; else 1-99 */
} GcOptions;

typedef struct GcResult {
	uint64_t sessions_reaped, snapshots_reaped, snapshots_purged;
	uint64_t contents_deleted, chunks_deleted, chunks_waiting;
	uint64_t packs_deleted, orphans_deleted, bytes_reclaimed;
	uint64_t catalog_bytes_freed; /* the catalog file's, after VACUUM */
	/* repack */
	uint64_t packs_repacked;       /* old packs whose live chunks moved */
	uint64_t packs_written, bytes_copied; /* new packs, and their size */
	uint64_t repacked_packs_deleted, repacked_bytes_deleted; /* old packs deleted now */
	uint64_t packs_retired_waiting;  /* old packs kept for sessions older than the move */
	uint64_t packs_damaged, chunks_damaged; /* kept as they are */
} GcResult;

int repo_gc(Repo *repo, GcResult *ret);
int repo_gc_opts(Repo *repo, const GcOptions *o, GcResult *ret);
