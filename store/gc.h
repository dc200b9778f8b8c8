/*
 * Garbage collection: reap dead sessions, drop unreferenced contents and
 * chunks (see catalog_gc for the rule that keeps it safe against running
 * backups and mounts), purge deleted snapshots no mount holds any more, delete packs left without chunks and orphaned objects. Safe to
 * run while backups run; two gc runs exclude each other (-EBUSY).
 */
#pragma once

#include "store/repo.h"

typedef struct GcResult {
	uint64_t sessions_reaped, snapshots_reaped, snapshots_purged;
	uint64_t contents_deleted, chunks_deleted, chunks_waiting;
	uint64_t packs_deleted, orphans_deleted, bytes_reclaimed;
} GcResult;

int repo_gc(Repo *repo, GcResult *ret);
