/*
 * What a repository in object storage needs beyond objects: one writer at a
 * time, and numbered catalog generations (store/remote.c).
 *
 * The writer lock is an object "locks/<owner>" holding an expiry time (a
 * lease), renewed by a thread while the lock is held. It does not rely on a
 * conditional put (store_put_if_absent: not every store has one, and some
 * S3-compatible services ignore it): strongly consistent put and list give
 * mutual exclusion (S3 since 2020, MinIO, Ceph): a candidate puts its
 * lock object, then lists; it holds the lock only if it sees no other live
 * lock, else it deletes its own and retries after a random delay. Of two
 * candidates, the second to list always sees the first, so at most one holds.
 * An expired lock (its holder died) is deleted by the next candidate.
 *
 * Catalog generations are immutable objects: "catalog/<20-digit number>" a
 * whole catalog (a base), "catalog/<20-digit number>.delta" the change from
 * the generation before it. The highest number of either kind is the
 * catalog. A writer publishes N+1 only while holding the lock and only if N
 * is still the highest, so a lost lease fails the publication instead of
 * overwriting another writer's work.
 */
#pragma once

#include "store/backend.h"

#define REMOTE_CATALOG_PREFIX "catalog/"
#define REMOTE_LOCK_PREFIX "locks/"

typedef struct RemoteLock RemoteLock;

typedef struct RemoteLockOptions {
	unsigned lease_s; /* 0: 120; renewed every lease/4 */
	unsigned wait_s;  /* how long to wait for another holder; 0: do not wait */
} RemoteLockOptions;

/*
 * Take the writer lock. -EBUSY when another live holder kept it for wait_s;
 * then *ret_holder (if given) says who ("host pid N"), malloc'd.
 */
int remote_lock_acquire(StoreBackend *b, const RemoteLockOptions *o, RemoteLock **ret,
			char **ret_holder);
/* 0 while the lease is ours; -ENOLCK once it was lost (renewals failed or it was taken). */
int remote_lock_check(RemoteLock *l);
/* Stop renewing and delete the lock object. Accepts NULL. */
RemoteLock *remote_lock_release(RemoteLock *l);

#define REMOTE_DELTA_SUFFIX ".delta"

/* One catalog object of a listing. */
typedef struct RemoteGen {
	uint64_t gen;
	uint64_t size; /* bytes of the object */
	bool delta;
} RemoteGen;

/* What catalog/ holds, sorted by generation (a base before a delta of the same number). */
typedef struct RemoteCatalogList {
	RemoteGen *v;
	size_t n;
} RemoteCatalogList;

/* List catalog/ (other names are ignored). Free with remote_catalog_list_clear. */
int remote_catalog_list(StoreBackend *b, RemoteCatalogList *ret);
void remote_catalog_list_clear(RemoteCatalogList *l);
/* Highest generation, base or delta: -ENOENT when the list is empty. */
int remote_catalog_list_latest(const RemoteCatalogList *l, uint64_t *ret_gen);
/* The entry for gen of the given kind, or NULL. */
const RemoteGen *remote_catalog_list_find(const RemoteCatalogList *l, uint64_t gen, bool delta);
/* The newest base at or below gen, or NULL. */
const RemoteGen *remote_catalog_list_base(const RemoteCatalogList *l, uint64_t gen);

/* Highest catalog generation (base or delta): -ENOENT when there is none. */
int remote_catalog_latest(StoreBackend *b, uint64_t *ret_gen);
/* "catalog/00000000000000000042" */
void remote_catalog_name(uint64_t gen, char *buf, size_t len);
/* "catalog/00000000000000000042.delta" */
void remote_catalog_delta_name(uint64_t gen, char *buf, size_t len);
/* Delete generations (bases and deltas) below keep_from. */
int remote_catalog_prune(StoreBackend *b, uint64_t keep_from);
