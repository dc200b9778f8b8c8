/*
 * Retention: which snapshots and which archived WAL files a policy keeps.
 * Pure logic over plain arrays (no catalog, no I/O), so every rule is unit
 * tested; store/expire.c reads the catalog, calls these and deletes.
 */
#pragma once

#include "common/common.h"

/* 0 in a field means "not part of the policy"; at least one must be set. */
typedef struct RetentionPolicy {
	uint64_t keep_last;   /* the N newest ok/warning snapshots of each instance */
	int64_t keep_within;  /* seconds: snapshots started within this of now */
} RetentionPolicy;

/* Why a snapshot is kept; RETAIN_NONE: the policy expires it. */
typedef enum RetainReason {
	RETAIN_NONE = 0,
	RETAIN_LAST,      /* among the keep_last newest ok/warning of its instance */
	RETAIN_WITHIN,    /* started within keep_within of now (or in the future) */
	RETAIN_PINNED,    /* pinned_until later than now */
	RETAIN_NEWEST_OK, /* the newest "ok" snapshot of its instance (with no ok one, the
			   * newest "warning" one): never expired */
} RetainReason;

typedef enum RetainStatus {
	RETAIN_STATUS_OK,      /* "ok" */
	RETAIN_STATUS_WARNING, /* "warning": counts for keep_last like ok */
	RETAIN_STATUS_OTHER,   /* "failed" or anything unknown: never counted */
} RetainStatus;

typedef struct RetentionItem {
	const char *instance;
	int64_t rowid;        /* tie-break between equal start times: higher is newer */
	int64_t start_time;   /* ns since the epoch */
	int64_t pinned_until; /* ns since the epoch; 0 or past: not pinned */
	RetainStatus status;
	RetainReason reason;  /* out: filled by retention_evaluate */
} RetentionItem;

RetainStatus retention_status(const char *status);
const char *retention_reason_name(RetainReason r);

/*
 * Set items[i].reason for every item (any order, any mix of instances; each
 * instance is judged on its own). The first reason that applies wins, in the
 * order newest-ok, pinned, last, within. -EINVAL if the policy keeps nothing
 * by itself (both fields 0) or keep_within would overflow; -ENOMEM.
 */
int retention_evaluate(const RetentionPolicy *p, int64_t now_ns, RetentionItem *items, size_t n);

/* What a snapshot that stays in the repository tells about the WAL it needs. */
typedef struct RetentionWalUse {
	uint32_t timeline;
	uint64_t start_lsn;
	uint64_t seg_size; /* WAL segment size of its cluster, a power of two */
} RetentionWalUse;

/*
 * The WAL archive's expiry bounds: for each timeline, files wholly before the
 * start of the oldest remaining snapshot on it may go. A timeline with no
 * remaining snapshot keeps all its WAL; so does a timeline above the lowest
 * one that has a remaining snapshot, since recovery from that older snapshot
 * may follow the history into it (point-in-time recovery across a promotion).
 */
typedef struct RetentionWalBounds {
	size_t n;
	struct {
		uint32_t timeline;
		uint64_t start_lsn; /* of the oldest remaining snapshot */
		uint64_t seg_size;
		bool trim;          /* false: kept whole (older timeline holds a snapshot) */
	} *v;
} RetentionWalBounds;

int retention_wal_bounds(const RetentionWalUse *uses, size_t n, RetentionWalBounds *ret);
void retention_wal_bounds_clear(RetentionWalBounds *b);

/*
 * True when archived file name may be expired under b: a segment, a
 * ".partial" segment or a ".backup" file of a trimmed timeline whose segment
 * ends at or before that timeline's bound. History files, unknown names and
 * timelines without a bound are always kept.
 */
bool retention_wal_expirable(const RetentionWalBounds *b, const char *name);
