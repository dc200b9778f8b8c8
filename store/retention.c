/*
 * Retention rules. A bug here deletes backups, so the rules are written to
 * fail towards keeping: anything unexpected (an unknown status, a WAL name
 * that does not parse, a segment number that does not fit the segment size)
 * keeps the object.
 */
#include "store/retention.h"
#include "store/wal.h"

#include <stdio.h>
#include <string.h>

#define NS_PER_S 1000000000LL

RetainStatus retention_status(const char *status)
{
	if (status && strcmp(status, "ok") == 0)
		return RETAIN_STATUS_OK;
	if (status && strcmp(status, "warning") == 0)
		return RETAIN_STATUS_WARNING;
	return RETAIN_STATUS_OTHER;
}

const char *retention_reason_name(RetainReason r)
{
	switch (r) {
	case RETAIN_LAST: return "keep-last";
	case RETAIN_WITHIN: return "keep-within";
	case RETAIN_PINNED: return "pinned";
	case RETAIN_NEWEST_OK: return "newest ok";
	case RETAIN_NONE: break;
	}
	return "expired";
}

static int str_cmp_null(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "");
}

/* Instance ascending, then newest first: start time, then row id. */
static int item_cmp(const void *pa, const void *pb)
{
	const RetentionItem *a = *(RetentionItem *const *)pa, *b = *(RetentionItem *const *)pb;
	int c = str_cmp_null(a->instance, b->instance);
	if (c)
		return c;
	if (a->start_time != b->start_time)
		return a->start_time > b->start_time ? -1 : 1;
	if (a->rowid != b->rowid)
		return a->rowid > b->rowid ? -1 : 1;
	return 0;
}

/* One instance's items, newest first. */
static void evaluate_instance(const RetentionPolicy *p, int64_t now_ns, int64_t within_from,
			      RetentionItem **v, size_t n)
{
	uint64_t n_counted = 0;
	RetentionItem *protect = NULL;

	/* the newest ok one; with none, the newest warning one: never all usable snapshots */
	for (size_t i = 0; i < n && !protect; i++)
		if (v[i]->status == RETAIN_STATUS_OK)
			protect = v[i];
	for (size_t i = 0; i < n && !protect; i++)
		if (v[i]->status == RETAIN_STATUS_WARNING)
			protect = v[i];
	for (size_t i = 0; i < n; i++) {
		RetentionItem *it = v[i];
		bool counted = it->status != RETAIN_STATUS_OTHER;

		it->reason = RETAIN_NONE;
		if (it == protect) {
			it->reason = RETAIN_NEWEST_OK;
		} else if (it->pinned_until && it->pinned_until > now_ns) {
			it->reason = RETAIN_PINNED;
		} else if (counted && n_counted < p->keep_last) {
			it->reason = RETAIN_LAST;
		} else if (p->keep_within && it->start_time >= within_from) {
			it->reason = RETAIN_WITHIN;
		}
		/* a good snapshot counts towards keep_last whatever else keeps it */
		if (counted)
			n_counted++;
	}
}

int retention_evaluate(const RetentionPolicy *p, int64_t now_ns, RetentionItem *items, size_t n)
{
	_cleanup_free_ RetentionItem **v = NULL;
	int64_t within_from = INT64_MIN;

	if (!p->keep_last && !p->keep_within)
		return -EINVAL;
	if (p->keep_within < 0 || p->keep_within > INT64_MAX / NS_PER_S)
		return -EINVAL;
	if (p->keep_within) {
		int64_t span = p->keep_within * NS_PER_S;
		within_from = now_ns < INT64_MIN + span ? INT64_MIN : now_ns - span;
	}
	if (n == 0)
		return 0;
	v = malloc(n * sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		v[i] = &items[i];
	qsort(v, n, sizeof(*v), item_cmp);
	for (size_t i = 0, j; i < n; i = j) {
		for (j = i + 1; j < n && str_cmp_null(v[i]->instance, v[j]->instance) == 0; j++)
			;
		evaluate_instance(p, now_ns, within_from, v + i, j - i);
	}
	return 0;
}

void retention_wal_bounds_clear(RetentionWalBounds *b)
{
	free(b->v);
	*b = (RetentionWalBounds){0};
}

int retention_wal_bounds(const RetentionWalUse *uses, size_t n, RetentionWalBounds *ret)
{
	RetentionWalBounds b = {0};
	uint32_t lowest = UINT32_MAX;

	b.v = calloc(n ? n : 1, sizeof(*b.v));
	if (!b.v)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const RetentionWalUse *u = &uses[i];
		size_t k;
		for (k = 0; k < b.n && b.v[k].timeline != u->timeline; k++)
			;
		if (k == b.n) {
			b.v[b.n].timeline = u->timeline;
			b.v[b.n].start_lsn = u->start_lsn;
			b.v[b.n].seg_size = u->seg_size;
			b.n++;
		} else if (u->start_lsn < b.v[k].start_lsn) {
			b.v[k].start_lsn = u->start_lsn;
			b.v[k].seg_size = u->seg_size;
		}
		/* the segment size of the oldest start on a timeline is the one used;
		 * two clusters on one timeline disagreeing: take the larger, which
		 * places the bound earlier or at the same segment */
		if (u->start_lsn == b.v[k].start_lsn && u->seg_size > b.v[k].seg_size)
			b.v[k].seg_size = u->seg_size;
		lowest = MIN(lowest, u->timeline);
	}
	for (size_t k = 0; k < b.n; k++)
		b.v[k].trim = b.v[k].timeline == lowest;
	*ret = b;
	return 0;
}

bool retention_wal_expirable(const RetentionWalBounds *b, const char *name)
{
	uint64_t per_log, seg_end, bound_log;
	WalName n;
	size_t k;

	if (wal_name_parse(name, &n) < 0 || n.kind == WAL_KIND_HISTORY)
		return false; /* history files ("00000002.history") and anything unknown */
	uint64_t tli = n.timeline, log = n.log, seg = n.seg;
	for (k = 0; k < b->n && b->v[k].timeline != tli; k++)
		;
	if (k == b->n || !b->v[k].trim)
		return false;
	/* a segment size that is not a power of two from 1 MiB to 1 GiB is not PostgreSQL's */
	uint64_t size = b->v[k].seg_size;
	if (size < (1u << 20) || size > (1u << 30) || (size & (size - 1)))
		return false;
	per_log = 0x100000000ULL / size;
	if (seg >= per_log)
		return false; /* does not fit this segment size: not ours to judge */
	/* the segment ends at log:seg_end, with seg_end <= 2^32: compare without overflow */
	seg_end = (seg + 1) * size;
	bound_log = b->v[k].start_lsn >> 32;
	if (log != bound_log)
		return log < bound_log;
	return seg_end <= (b->v[k].start_lsn & 0xffffffffULL);
}
