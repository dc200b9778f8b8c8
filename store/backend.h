/*
 * Storage backends: where a repository's objects live. A backend stores
 * named immutable objects ("packs/ab/abcd....pack", "config").
 *
 * Contract for every driver:
 *  - put() is atomic and durable: after it returns 0 the object is complete
 *    and survives a crash; a crash during put() leaves no object (or the old one).
 *  - get_range() reads exactly len bytes at offset or fails (-ENOENT for a
 *    missing object, -EIO/-ENODATA for a short object).
 *  - list() calls cb for every object under prefix, in no particular order.
 *  - delete() of a missing object returns 0.
 * All operations are thread-safe and return 0 or -errno.
 */
#pragma once

#include "common/common.h"

#include <sys/types.h>

typedef struct StoreBackend StoreBackend;

typedef int (*StoreListFn)(const char *name, uint64_t size, void *userdata);

typedef enum {
	STORE_FEATURE_LOCAL_PATH = 1 << 0,     /* objects are files under local_path() */
	STORE_FEATURE_CONDITIONAL_PUT = 1 << 1, /* put_if_absent() is atomic in the store */
} StoreFeature;

typedef struct StoreBackendOps {
	const char *name;
	unsigned features;
	int (*put)(StoreBackend *b, const char *name, const void *buf, size_t len);
	/* Optional, with STORE_FEATURE_CONDITIONAL_PUT: see store_put_if_absent(). */
	int (*put_if_absent)(StoreBackend *b, const char *name, const void *buf, size_t len);
	int (*get_range)(StoreBackend *b, const char *name, uint64_t offset, size_t len, void *buf);
	int (*size)(StoreBackend *b, const char *name, uint64_t *ret_size); /* exists + size */
	/*
	 * Optional: a whole object of at most max bytes in one request (S3: one
	 * GET, where size() then get_range() are two). Without it,
	 * store_get_all() does exactly that.
	 */
	int (*get_all)(StoreBackend *b, const char *name, size_t max, void **ret, size_t *ret_len);
	int (*list)(StoreBackend *b, const char *prefix, StoreListFn cb, void *userdata);
	int (*delete)(StoreBackend *b, const char *name);
	void (*free)(StoreBackend *b);
} StoreBackendOps;

/* Every driver embeds this first. */
struct StoreBackend {
	const StoreBackendOps *ops;
};

/* Checks that a driver provides every operation (called by constructors). */
void store_backend_init(StoreBackend *b, const StoreBackendOps *ops);

int store_put(StoreBackend *b, const char *name, const void *buf, size_t len);
int store_get_range(StoreBackend *b, const char *name, uint64_t offset, size_t len, void *buf);
int store_size(StoreBackend *b, const char *name, uint64_t *ret_size);
int store_list(StoreBackend *b, const char *prefix, StoreListFn cb, void *userdata);
int store_delete(StoreBackend *b, const char *name);
/*
 * put(), unless name exists: then -EEXIST and nothing is written. The store
 * decides atomically (S3: "If-None-Match: *", answered 412), so of two
 * concurrent calls for one name, from any machines, exactly one writes.
 * -EOPNOTSUPP from a driver without STORE_FEATURE_CONDITIONAL_PUT (wrapping
 * drivers do not pass it on). A service that ignores If-None-Match (s3rver,
 * older Ceph) makes this a plain put: see docs/design.md, "WAL archive".
 */
static inline int store_put_if_absent(StoreBackend *b, const char *name, const void *buf,
				      size_t len)
{
	if (!(b->ops->features & STORE_FEATURE_CONDITIONAL_PUT) || !b->ops->put_if_absent)
		return -EOPNOTSUPP;
	return b->ops->put_if_absent(b, name, buf, len);
}
/*
 * A whole object, at most max bytes (-EFBIG above): malloc'd into *ret (from
 * 2 MiB up, 2 MiB-aligned: malloc_huge). -ENOENT when missing; -ENODATA when it
 * shrank while being read.
 */
int store_get_all(StoreBackend *b, const char *name, size_t max, void **ret, size_t *ret_len);
/* The buffer store_get_all() gives for size bytes (for drivers' get_all); free() it. */
#define STORE_GET_HUGE ((size_t)2 << 20)
void *store_get_buf(size_t size);
StoreBackend *store_backend_free(StoreBackend *b);

/* Local directory driver: objects are files under root (0600, dirs 0700). */
int store_local_new(const char *root, StoreBackend **ret);
const char *store_local_root(StoreBackend *b);

/*
 * S3-compatible object storage driver (store/backend_s3.c), over libcurl and
 * SigV4. Strings are copied; NULL or 0 fields take the defaults noted.
 * Secrets are never logged; errors name the operation, key and HTTP status.
 */
typedef struct StoreS3Config {
	const char *endpoint;      /* "https://s3.us-east-1.amazonaws.com", "http://127.0.0.1:9000" */
	const char *region;        /* NULL: "us-east-1" */
	const char *bucket;
	const char *prefix;        /* objects live under "<prefix>/"; NULL or "": the bucket root */
	const char *access_key;
	const char *secret_key;
	const char *session_token; /* NULL: none; sent as x-amz-security-token */
	const char *ca_file;       /* NULL: the system CA bundle (verification is always on) */
	bool virtual_host;         /* bucket.host/key instead of host/bucket/key */
	size_t multipart_threshold;/* 0: 64 MiB; larger objects use multipart upload */
	size_t part_size;          /* 0: 16 MiB; at least 5 MiB */
	unsigned max_attempts;     /* 0: 6 tries per request */
	unsigned deadline_ms;      /* 0: 300000; total time per request, retries included */
	unsigned stall_ms;         /* 0: 30000; no byte moving this long is a timeout */
	unsigned backoff_ms;       /* 0: 100; first retry delay cap, doubling, full jitter */
} StoreS3Config;

int store_s3_new(const StoreS3Config *cfg, StoreBackend **ret);

/*
 * Fault-injecting driver for tests: wraps inner (taking ownership) and fails
 * operations by a script: e.g. "put:3=ENOSPC" fails the third put with
 * ENOSPC; "get:*=EIO" fails every get; "put:2=crash" writes half of the
 * second object under its final name and returns -EIO (a torn, non-atomic
 * write, to prove readers detect it); "get:1=flip" makes the first get
 * succeed with one byte of the body changed (damage on the way); several
 * rules separated by ','.
 */
int store_fault_new(StoreBackend *inner, const char *script, StoreBackend **ret);
/* Number of calls seen per operation ("put", "get", "size", "list", "delete"). */
unsigned store_fault_count(StoreBackend *b, const char *op);

/*
 * Caching driver: wraps inner (taking ownership) and keeps ranged reads of
 * objects under "packs/" (immutable: never rewritten under the same name) in
 * files under dir (created 0700 if missing), at most max_bytes in all,
 * headers included, least recently used evicted first. Other names, empty
 * ranges, ranges over max_bytes/8, and every other operation pass through. A
 * cache file that fails its own check (magic, length, CRC-32C) is dropped
 * and re-read. Errors from inner are returned unchanged; a cache file that
 * cannot be written costs only a later re-read, never a failed read.
 * Entries of an existing dir are indexed again, oldest mtime least recent;
 * one process at a time may use a dir. Thread-safe. On failure (dir cannot
 * be made or read: -errno) the caller keeps inner.
 */
int store_cache_new(StoreBackend *inner, const char *dir, uint64_t max_bytes, StoreBackend **ret);
/* Hits, misses and evictions so far (for tests and stats); NULL skips one. */
void store_cache_counts(StoreBackend *b, uint64_t *ret_hits, uint64_t *ret_misses,
			uint64_t *ret_evictions);
