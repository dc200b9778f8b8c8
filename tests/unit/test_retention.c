/*
 * Unit tests for store/retention.h (the policy rules, WAL bounds) and the
 * retention functions of store/catalog.h (pin, note, policy, expire).
 * A bug here deletes backups: many cases, plus a randomized comparison with
 * a plain reference implementation of the rules.
 */
#include "tests/unit/test.h"

#include "store/catalog.h"
#include "store/retention.h"

#include <limits.h>
#include <sys/stat.h>

#define S_NS 1000000000LL
#define H_NS (3600 * S_NS)
#define D_NS (24 * H_NS)
/* 2026-11-22T00:00:00Z */
#define NOW (1795305600LL * S_NS)

static RetentionItem item(const char *instance, int64_t rowid, int64_t start, const char *status)
{
	return (RetentionItem){.instance = instance, .rowid = rowid, .start_time = start,
			       .status = retention_status(status)};
}

/* Reasons of items in order, as a string of letters: N(one) L W P O(newest ok). */
static const char *reasons(const RetentionItem *v, size_t n, char *buf)
{
	static const char letters[] = {[RETAIN_NONE] = 'N', [RETAIN_LAST] = 'L',
				       [RETAIN_WITHIN] = 'W', [RETAIN_PINNED] = 'P',
				       [RETAIN_NEWEST_OK] = 'O'};
	for (size_t i = 0; i < n; i++)
		buf[i] = letters[v[i].reason];
	buf[n] = '\0';
	return buf;
}

static void test_keep_last(void)
{
	RetentionPolicy p = {.keep_last = 2};
	char b[32];
	/* oldest first in the array; evaluation does not depend on order */
	RetentionItem v[] = {item("main", 1, NOW - 5 * D_NS, "ok"), item("main", 2, NOW - 4 * D_NS, "ok"),
			     item("main", 3, NOW - 3 * D_NS, "ok"), item("main", 4, NOW - 2 * D_NS, "ok"),
			     item("main", 5, NOW - 1 * D_NS, "ok")};
	CHECK_EQ_INT(retention_evaluate(&p, NOW, v, ELEMENTSOF(v)), 0);
	CHECK_EQ_STR(reasons(v, ELEMENTSOF(v), b), "NNNLO");

	p.keep_last = 5;
	CHECK_EQ_INT(retention_evaluate(&p, NOW, v, ELEMENTSOF(v)), 0);
	CHECK_EQ_STR(reasons(v, ELEMENTSOF(v), b), "LLLLO");
	p.keep_last = 100;
	CHECK_EQ_INT(retention_evaluate(&p, NOW, v, ELEMENTSOF(v)), 0);
	CHECK_EQ_STR(reasons(v, ELEMENTSOF(v), b), "LLLLO");
	/* keep_last 1: only the newest ok */
	p.keep_last = 1;
	CHECK_EQ_INT(retention_evaluate(&p, NOW, v, ELEMENTSOF(v)), 0);
	CHECK_EQ_STR(reasons(v, ELEMENTSOF(v), b), "NNNNO");

	/* reversed input order gives the same decisions per item */
	RetentionItem w[] = {v[4], v[3], v[2], v[1], v[0]};
	p.keep_last = 2;
	CHECK_EQ_INT(retention_evaluate(&p, NOW, w, ELEMENTSOF(w)), 0);
	CHECK_EQ_STR(reasons(w, ELEMENTSOF(w), b), "OLNNN");

	/* nothing to judge */
	CHECK_EQ_INT(retention_evaluate(&p, NOW, NULL, 0), 0);
}

static void test_failed_and_warning(void)
{
	RetentionPolicy p = {.keep_last = 2};
	char b[32];
	/* failed ones are not counted and go when outside the policy, even the newest */
	RetentionItem v[] = {item("main", 1, NOW - 5 * D_NS, "ok"), item("main", 2, NOW - 4 * D_NS, "failed"),
			     item("main", 3, NOW - 3 * D_NS, "ok"), item("main", 4, NOW - 2 * D_NS, "ok"),
			     item("main", 5, NOW - 1 * D_NS, "failed")};
	CHECK_EQ_INT(retention_evaluate(&p, NOW, v, ELEMENTSOF(v)), 0);
	CHECK_EQ_STR(reasons(v, ELEMENTSOF(v), b), "NNLON");

	/* warning ones count among the N newest; the newest ok stays besides */
	RetentionItem w[] = {item("main", 1, NOW - 3 * D_NS, "ok"), item("main", 2, NOW - 2 * D_NS, "ok"),
			     item("main", 3, NOW - 1 * D_NS, "warning")};
	p.keep_last = 1;
	CHECK_EQ_INT(retention_evaluate(&p, NOW, w, ELEMENTSOF(w)), 0);
	CHECK_EQ_STR(reasons(w, ELEMENTSOF(w), b), "NOL");

	/* only failed snapshots: none is protected */
	RetentionItem f[] = {item("main", 1, NOW - 3 * D_NS, "failed"),
			     item("main", 2, NOW - 2 * D_NS, "failed")};
	CHECK_EQ_INT(retention_evaluate(&p, NOW, f, ELEMENTSOF(f)), 0);
	CHECK_EQ_STR(reasons(f, ELEMENTSOF(f), b), "NN");

	/* no ok one: the newest warning one is protected even outside keep-within */
	RetentionPolicy pw = {.keep_within = 3600};
	RetentionItem g[] = {item("main", 1, NOW - 3 * D_NS, "warning"),
			     item("main", 2, NOW - 2 * D_NS, "warning"),
			     item("main", 3, NOW - 1 * D_NS, "failed")};
	CHECK_EQ_INT(retention_evaluate(&pw, NOW, g, ELEMENTSOF(g)), 0);
	CHECK_EQ_STR(reasons(g, ELEMENTSOF(g), b), "NON");

	/* statuses never passed by the catalog, or unknown: never counted, never protected */
	CHECK_EQ_INT(retention_status("running"), RETAIN_STATUS_OTHER);
	CHECK_EQ_INT(retention_status("deleted"), RETAIN_STATUS_OTHER);
	CHECK_EQ_INT(retention_status(NULL), RETAIN_STATUS_OTHER);
	CHECK_EQ_INT(retention_status("OK"), RETAIN_STATUS_OTHER);
	RetentionItem u[] = {item("main", 1, NOW - 3 * D_NS, "ok"), item("main", 2, NOW - 2 * D_NS, "weird")};
	p.keep_last = 1;
	CHECK_EQ_INT(retention_evaluate(&p, NOW, u, ELEMENTSOF(u)), 0);
	CHECK_EQ_STR(reasons(u, ELEMENTSOF(u), b), "ON");
}

static void test_keep_within(void)
{
	RetentionPolicy p = {.keep_within = 7 * 86400};
	char b[32];
	RetentionItem v[] = {
		item("main", 1, NOW - 10 * D_NS, "ok"),
		item("main", 2, NOW - 7 * D_NS - 1, "ok"), /* one ns too old */
		item("main", 3, NOW - 7 * D_NS, "ok"),     /* exactly on the edge: kept */
		item("main", 4, NOW - 2 * D_NS, "failed"), /* failed but recent: kept */
		item("main", 5, NOW - 1 * H_NS, "ok"),
		item("main", 6, NOW + 1 * H_NS, "warning"), /* clock skew: in the future */
	};
	CHECK_EQ_INT(retention_evaluate(&p, NOW, v, ELEMENTSOF(v)), 0);
	CHECK_EQ_STR(reasons(v, ELEMENTSOF(v), b), "NNWWOW");

	/* the newest ok survives a window that holds nothing */
	p.keep_within = 60;
	CHECK_EQ_INT(retention_evaluate(&p, NOW, v, ELEMENTSOF(v)), 0);
	CHECK_EQ_STR(reasons(v, ELEMENTSOF(v), b), "NNNNOW");

	/* both: a union */
	p = (RetentionPolicy){.keep_last = 2, .keep_within = 3 * 86400};
	RetentionItem w[] = {item("main", 1, NOW - 9 * D_NS, "ok"), item("main", 2, NOW - 8 * D_NS, "ok"),
			     item("main", 3, NOW - 2 * D_NS, "ok"), item("main", 4, NOW - 1 * D_NS, "ok"),
			     item("main", 5, NOW - 1 * H_NS, "ok")};
	CHECK_EQ_INT(retention_evaluate(&p, NOW, w, ELEMENTSOF(w)), 0);
	CHECK_EQ_STR(reasons(w, ELEMENTSOF(w), b), "NNWLO");

	/* a window reaching before the epoch or before INT64_MIN does not wrap */
	p = (RetentionPolicy){.keep_within = INT64_MAX / S_NS};
	CHECK_EQ_INT(retention_evaluate(&p, NOW, w, ELEMENTSOF(w)), 0);
	CHECK_EQ_STR(reasons(w, ELEMENTSOF(w), b), "WWWWO");
	CHECK_EQ_INT(retention_evaluate(&p, INT64_MIN + 5, w, ELEMENTSOF(w)), 0);
	CHECK_EQ_STR(reasons(w, ELEMENTSOF(w), b), "WWWWO");
}

static void test_pinned(void)
{
	RetentionPolicy p = {.keep_last = 1};
	char b[32];
	RetentionItem v[] = {item("main", 1, NOW - 9 * D_NS, "ok"), item("main", 2, NOW - 8 * D_NS, "failed"),
			     item("main", 3, NOW - 7 * D_NS, "ok"), item("main", 4, NOW - 6 * D_NS, "ok"),
			     item("main", 5, NOW - 1 * D_NS, "ok")};
	v[0].pinned_until = NOW + 1;      /* pinned */
	v[1].pinned_until = NOW + D_NS;   /* a pinned failed one is kept too */
	v[2].pinned_until = NOW;          /* pin ends now: expired */
	v[3].pinned_until = NOW - D_NS;   /* pin in the past */
	CHECK_EQ_INT(retention_evaluate(&p, NOW, v, ELEMENTSOF(v)), 0);
	CHECK_EQ_STR(reasons(v, ELEMENTSOF(v), b), "PPNNO");

	/* a pinned snapshot still counts among the N newest */
	RetentionItem w[] = {item("main", 1, NOW - 3 * D_NS, "ok"), item("main", 2, NOW - 2 * D_NS, "ok"),
			     item("main", 3, NOW - 1 * D_NS, "ok")};
	w[1].pinned_until = NOW + D_NS;
	p.keep_last = 2;
	CHECK_EQ_INT(retention_evaluate(&p, NOW, w, ELEMENTSOF(w)), 0);
	CHECK_EQ_STR(reasons(w, ELEMENTSOF(w), b), "NPO");
}

static void test_instances_and_ties(void)
{
	RetentionPolicy p = {.keep_last = 1};
	char b[32];
	/* instance b's only snapshot is old: judged alone, it stays */
	RetentionItem v[] = {item("a", 1, NOW - 9 * D_NS, "ok"), item("b", 2, NOW - 8 * D_NS, "ok"),
			     item("a", 3, NOW - 7 * D_NS, "ok"), item("a", 4, NOW - 6 * D_NS, "ok"),
			     item("b", 5, NOW - 9 * D_NS, "ok"), item("c", 6, NOW - 1 * D_NS, "failed")};
	CHECK_EQ_INT(retention_evaluate(&p, NOW, v, ELEMENTSOF(v)), 0);
	CHECK_EQ_STR(reasons(v, ELEMENTSOF(v), b), "NONONN");

	/* equal start times: the higher row id is the newer */
	RetentionItem w[] = {item("main", 7, NOW - D_NS, "ok"), item("main", 3, NOW - D_NS, "ok"),
			     item("main", 5, NOW - D_NS, "ok")};
	p.keep_last = 2;
	CHECK_EQ_INT(retention_evaluate(&p, NOW, w, ELEMENTSOF(w)), 0);
	CHECK_EQ_STR(reasons(w, ELEMENTSOF(w), b), "ONL");
}

static void test_bad_policy(void)
{
	RetentionItem v[] = {item("main", 1, NOW, "ok")};
	RetentionPolicy p = {0};
	CHECK_EQ_INT(retention_evaluate(&p, NOW, v, 1), -EINVAL);
	p.keep_within = -1;
	CHECK_EQ_INT(retention_evaluate(&p, NOW, v, 1), -EINVAL);
	p.keep_within = INT64_MAX / S_NS + 1;
	CHECK_EQ_INT(retention_evaluate(&p, NOW, v, 1), -EINVAL);
	CHECK_EQ_STR(retention_reason_name(RETAIN_NONE), "expired");
	CHECK_EQ_STR(retention_reason_name(RETAIN_PINNED), "pinned");
}

/*
 * The rules written the obvious way, item by item, O(n^2): keep if pinned, if
 * started within the window, if fewer than keep_last ok/warning snapshots of
 * its instance are newer and it is ok/warning itself, or if it is the newest
 * ok one (with no ok one: the newest warning one) of its instance.
 */
static bool newer(const RetentionItem *a, const RetentionItem *b)
{
	return a->start_time > b->start_time || (a->start_time == b->start_time && a->rowid > b->rowid);
}

static bool reference_keep(const RetentionPolicy *p, int64_t now, const RetentionItem *v, size_t n,
			   size_t i)
{
	const RetentionItem *it = &v[i];
	uint64_t n_newer = 0;
	bool newer_ok = false, any_ok = false, newer_warning = false;
	for (size_t j = 0; j < n; j++) {
		if (j == i || strcmp(v[j].instance, it->instance) != 0)
			continue;
		any_ok |= v[j].status == RETAIN_STATUS_OK;
		if (!newer(&v[j], it))
			continue;
		n_newer += v[j].status != RETAIN_STATUS_OTHER;
		newer_ok |= v[j].status == RETAIN_STATUS_OK;
		newer_warning |= v[j].status == RETAIN_STATUS_WARNING;
	}
	if (it->pinned_until && it->pinned_until > now)
		return true;
	if (p->keep_within && it->start_time >= now - p->keep_within * S_NS)
		return true;
	if (it->status != RETAIN_STATUS_OTHER && n_newer < p->keep_last)
		return true;
	if (it->status == RETAIN_STATUS_OK && !newer_ok)
		return true;
	if (it->status == RETAIN_STATUS_WARNING && !any_ok && !newer_warning)
		return true;
	return false;
}

static void test_randomized(void)
{
	static const char *const instances[] = {"a", "b", "c"};
	static const char *const statuses[] = {"ok", "ok", "ok", "warning", "failed"};
	unsigned mismatches = 0, n_kept = 0, n_expired = 0;

	for (int iter = 0; iter < 3000; iter++) {
		uint32_t rnd[64 * 5 + 4];
		RetentionItem v[64];
		test_random(rnd, sizeof(rnd));
		size_t n = rnd[0] % 64;
		RetentionPolicy p = {.keep_last = rnd[1] % 6, .keep_within = (int64_t)(rnd[2] % 4) * 86400};
		if (!p.keep_last && !p.keep_within)
			p.keep_last = 1;
		for (size_t i = 0; i < n; i++) {
			uint32_t *r = &rnd[4 + 5 * i];
			/* coarse times so ties happen; some in the future */
			v[i] = item(instances[r[0] % 3], (int64_t)i + 1,
				    NOW - (int64_t)(r[1] % 12) * D_NS + (int64_t)(r[1] % 3) * H_NS,
				    statuses[r[2] % ELEMENTSOF(statuses)]);
			if (r[3] % 5 == 0)
				v[i].pinned_until = NOW + ((int64_t)(r[4] % 3) - 1) * D_NS;
		}
		if (!CHECK_EQ_INT(retention_evaluate(&p, NOW, v, n), 0))
			return;
		for (size_t i = 0; i < n; i++) {
			bool want = reference_keep(&p, NOW, v, n, i);
			if (want != (v[i].reason != RETAIN_NONE))
				mismatches++;
			if (want)
				n_kept++;
			else
				n_expired++;
		}
	}
	CHECK_EQ_INT(mismatches, 0);
	/* the cases exercised both outcomes */
	CHECK(n_kept > 1000 && n_expired > 1000);
}

#define MIB (1024ULL * 1024)

static void test_wal_one_timeline(void)
{
	RetentionWalUse u[] = {{.timeline = 1, .start_lsn = 0x5000028, .seg_size = 16 * MIB},
			       {.timeline = 1, .start_lsn = 0x3000028, .seg_size = 16 * MIB},
			       {.timeline = 1, .start_lsn = 0x9000000, .seg_size = 16 * MIB}};
	RetentionWalBounds b = {0};
	if (!CHECK_EQ_INT(retention_wal_bounds(u, ELEMENTSOF(u), &b), 0))
		return;
	CHECK_EQ_INT(b.n, 1);
	CHECK(b.v[0].start_lsn == 0x3000028 && b.v[0].trim);
	/* bound 0/3000028 is in segment 3: segments 1 and 2 end before it */
	CHECK(retention_wal_expirable(&b, "000000010000000000000000"));
	CHECK(retention_wal_expirable(&b, "000000010000000000000001"));
	CHECK(retention_wal_expirable(&b, "000000010000000000000002"));
	CHECK(!retention_wal_expirable(&b, "000000010000000000000003"));
	CHECK(!retention_wal_expirable(&b, "000000010000000000000004"));
	CHECK(!retention_wal_expirable(&b, "000000010000000100000000"));
	CHECK(retention_wal_expirable(&b, "000000010000000000000002.partial"));
	CHECK(!retention_wal_expirable(&b, "000000010000000000000003.partial"));
	CHECK(retention_wal_expirable(&b, "000000010000000000000002.00000028.backup"));
	CHECK(!retention_wal_expirable(&b, "000000010000000000000003.00000028.backup"));
	/* history files and anything odd stay */
	CHECK(!retention_wal_expirable(&b, "00000001.history"));
	CHECK(!retention_wal_expirable(&b, "00000002.history"));
	CHECK(!retention_wal_expirable(&b, "000000010000000000000001.foo"));
	CHECK(!retention_wal_expirable(&b, "000000010000000000000001.partialx"));
	CHECK(!retention_wal_expirable(&b, "000000010000000000000001.0000028.backup"));
	CHECK(!retention_wal_expirable(&b, "00000001000000000000001"));
	CHECK(!retention_wal_expirable(&b, "0000000100000000000000011"));
	CHECK(!retention_wal_expirable(&b, "00000001000000000000000G"));
	CHECK(!retention_wal_expirable(&b, ""));
	/* another timeline without a snapshot keeps everything */
	CHECK(!retention_wal_expirable(&b, "000000020000000000000001"));
	/* a segment number that cannot exist at 16 MiB is not judged */
	CHECK(!retention_wal_expirable(&b, "000000010000000000000100"));
	retention_wal_bounds_clear(&b);

	/* exactly on a segment boundary: the segment before it goes */
	RetentionWalUse e = {.timeline = 1, .start_lsn = 0x3000000, .seg_size = 16 * MIB};
	CHECK_EQ_INT(retention_wal_bounds(&e, 1, &b), 0);
	CHECK(retention_wal_expirable(&b, "000000010000000000000002"));
	CHECK(!retention_wal_expirable(&b, "000000010000000000000003"));
	retention_wal_bounds_clear(&b);

	/* past the first 4 GiB: whole older "log" files and earlier segments go */
	RetentionWalUse l = {.timeline = 1, .start_lsn = 0x105000000ULL, .seg_size = 16 * MIB};
	CHECK_EQ_INT(retention_wal_bounds(&l, 1, &b), 0);
	CHECK(retention_wal_expirable(&b, "0000000100000000000000FF"));
	CHECK(retention_wal_expirable(&b, "000000010000000100000004"));
	CHECK(!retention_wal_expirable(&b, "000000010000000100000005"));
	CHECK(!retention_wal_expirable(&b, "000000010000000200000000"));
	retention_wal_bounds_clear(&b);

	/* the very end of the LSN space does not overflow */
	RetentionWalUse m = {.timeline = 1, .start_lsn = UINT64_MAX, .seg_size = 16 * MIB};
	CHECK_EQ_INT(retention_wal_bounds(&m, 1, &b), 0);
	CHECK(retention_wal_expirable(&b, "00000001FFFFFFFF000000FE"));
	CHECK(!retention_wal_expirable(&b, "00000001FFFFFFFF000000FF"));
	retention_wal_bounds_clear(&b);

	/* no snapshot at all: no bounds, nothing goes */
	CHECK_EQ_INT(retention_wal_bounds(NULL, 0, &b), 0);
	CHECK_EQ_INT(b.n, 0);
	CHECK(!retention_wal_expirable(&b, "000000010000000000000001"));
	retention_wal_bounds_clear(&b);
}

static void test_wal_seg_sizes(void)
{
	RetentionWalBounds b = {0};
	/* 64 MiB segments: 0/8000000 is the start of segment 2 */
	RetentionWalUse u = {.timeline = 1, .start_lsn = 0x8000000, .seg_size = 64 * MIB};
	CHECK_EQ_INT(retention_wal_bounds(&u, 1, &b), 0);
	CHECK(retention_wal_expirable(&b, "000000010000000000000000"));
	CHECK(retention_wal_expirable(&b, "000000010000000000000001"));
	CHECK(!retention_wal_expirable(&b, "000000010000000000000002"));
	CHECK(!retention_wal_expirable(&b, "000000010000000000000040")); /* > 63: not 64 MiB */
	retention_wal_bounds_clear(&b);

	/* 1 GiB segments: four per 4 GiB */
	u = (RetentionWalUse){.timeline = 1, .start_lsn = 0x1C0000000ULL, .seg_size = 1024 * MIB};
	CHECK_EQ_INT(retention_wal_bounds(&u, 1, &b), 0);
	CHECK(retention_wal_expirable(&b, "000000010000000000000003"));
	CHECK(retention_wal_expirable(&b, "000000010000000100000002"));
	CHECK(!retention_wal_expirable(&b, "000000010000000100000003"));
	CHECK(!retention_wal_expirable(&b, "000000010000000000000004"));
	retention_wal_bounds_clear(&b);

	/* 1 MiB segments */
	u = (RetentionWalUse){.timeline = 1, .start_lsn = 0x300000, .seg_size = MIB};
	CHECK_EQ_INT(retention_wal_bounds(&u, 1, &b), 0);
	CHECK(retention_wal_expirable(&b, "000000010000000000000002"));
	CHECK(!retention_wal_expirable(&b, "000000010000000000000003"));
	retention_wal_bounds_clear(&b);

	/* a size PostgreSQL cannot have: keep everything */
	static const uint64_t bad[] = {0, 3 * MIB, 512 * 1024, 2048 * MIB};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		u = (RetentionWalUse){.timeline = 1, .start_lsn = 0x100000000ULL, .seg_size = bad[i]};
		CHECK_EQ_INT(retention_wal_bounds(&u, 1, &b), 0);
		CHECK(!retention_wal_expirable(&b, "000000010000000000000000"));
		retention_wal_bounds_clear(&b);
	}

	/* two clusters on one timeline with the same oldest start: the larger size wins */
	RetentionWalUse two[] = {{.timeline = 1, .start_lsn = 0x8000000, .seg_size = 16 * MIB},
				 {.timeline = 1, .start_lsn = 0x8000000, .seg_size = 64 * MIB}};
	CHECK_EQ_INT(retention_wal_bounds(two, 2, &b), 0);
	CHECK(b.v[0].seg_size == 64 * MIB);
	retention_wal_bounds_clear(&b);
}

static void test_wal_timelines(void)
{
	RetentionWalBounds b = {0};
	/* snapshots on timelines 1 and 2: 2 is kept whole, recovery from 1 may follow into it */
	RetentionWalUse u[] = {{.timeline = 2, .start_lsn = 0x9000000, .seg_size = 16 * MIB},
			       {.timeline = 1, .start_lsn = 0x5000000, .seg_size = 16 * MIB}};
	CHECK_EQ_INT(retention_wal_bounds(u, 2, &b), 0);
	CHECK_EQ_INT(b.n, 2);
	CHECK(retention_wal_expirable(&b, "000000010000000000000004"));
	CHECK(!retention_wal_expirable(&b, "000000010000000000000005"));
	CHECK(!retention_wal_expirable(&b, "000000020000000000000001"));
	CHECK(!retention_wal_expirable(&b, "000000020000000000000008"));
	retention_wal_bounds_clear(&b);

	/* only timeline 2 has a snapshot: 2 is trimmed, 1 (no snapshot) kept */
	CHECK_EQ_INT(retention_wal_bounds(u, 1, &b), 0);
	CHECK(retention_wal_expirable(&b, "000000020000000000000008"));
	CHECK(!retention_wal_expirable(&b, "000000020000000000000009"));
	CHECK(!retention_wal_expirable(&b, "000000010000000000000001"));
	CHECK(!retention_wal_expirable(&b, "00000002.history"));
	retention_wal_bounds_clear(&b);

	/* timeline 16 (hex 10) */
	RetentionWalUse t = {.timeline = 16, .start_lsn = 0x3000000, .seg_size = 16 * MIB};
	CHECK_EQ_INT(retention_wal_bounds(&t, 1, &b), 0);
	CHECK(retention_wal_expirable(&b, "000000100000000000000002"));
	CHECK(!retention_wal_expirable(&b, "000000160000000000000002"));
	retention_wal_bounds_clear(&b);
}

/* ---- catalog ---- */

static int64_t make_snap(Catalog *c, const char *instance, int64_t start, const char *status,
			 uint64_t pg_wal_seg_size)
{
	SnapshotInfo s = {.instance = (char *)instance, .type = "full", .start_time = start};
	FileRow root = {.ino = 1, .parent = 1, .name = "", .mode = S_IFDIR | 0755};
	FileRow wal = {.ino = 2, .parent = 1, .name = "pg_wal", .mode = S_IFDIR | 0700};
	FileRow seg = {.ino = 3, .parent = 2, .name = "000000010000000000000003",
		       .mode = S_IFREG | 0600, .size = pg_wal_seg_size};
	FileRow other = {.ino = 4, .parent = 1, .name = "000000010000000000000009",
			 .mode = S_IFREG | 0600, .size = 1ULL << 30}; /* not in pg_wal */
	if (catalog_snapshot_begin(c, &s) < 0 || catalog_file_add(c, s.rowid, &root) < 0 ||
	    catalog_file_add(c, s.rowid, &other) < 0)
		return -1;
	if (pg_wal_seg_size &&
	    (catalog_file_add(c, s.rowid, &wal) < 0 || catalog_file_add(c, s.rowid, &seg) < 0))
		return -1;
	if (!status)
		return s.rowid; /* left running */
	s.status = (char *)status;
	s.stop_time = start + 1000;
	if (catalog_snapshot_finish(c, &s) < 0)
		return -1;
	return s.rowid;
}

static int count_cb(const SnapshotInfo *s _unused_, void *ud)
{
	(*(unsigned *)ud)++;
	return 0;
}

static int find_cb(const SnapshotInfo *s, void *ud)
{
	SnapshotInfo *want = ud;
	if (s->rowid == want->rowid)
		want->pinned_until = s->pinned_until;
	return 0;
}

static void test_catalog(void)
{
	char tmp[64], path[PATH_MAX];
	Catalog *c = NULL;
	uint64_t last = 99, size = 0;
	int64_t within = 99;
	SnapshotInfo s = {0};
	unsigned n;

	test_tmpdir(tmp, sizeof(tmp));
	test_fmt(path, sizeof(path), "%s/catalog.db", tmp);
	if (!CHECK_EQ_INT(catalog_open(path, true, &c), 0))
		return;

	/* policy: none, set, replace, bad */
	CHECK_EQ_INT(catalog_retention_get(c, &last, &within), -ENOENT);
	CHECK_EQ_INT(last, 99);
	CHECK_EQ_INT(catalog_retention_set(c, 3, 0), 0);
	CHECK_EQ_INT(catalog_retention_get(c, &last, &within), 0);
	CHECK_EQ_INT(last, 3);
	CHECK_EQ_INT(within, 0);
	CHECK_EQ_INT(catalog_retention_set(c, 0, 86400), 0);
	CHECK_EQ_INT(catalog_retention_get(c, &last, &within), 0);
	CHECK_EQ_INT(last, 0);
	CHECK_EQ_INT(within, 86400);
	CHECK_EQ_INT(catalog_retention_set(c, 0, 0), -EINVAL);
	CHECK_EQ_INT(catalog_retention_set(c, 1, -1), -EINVAL);
	CHECK_EQ_INT(catalog_retention_get(c, &last, &within), 0);
	CHECK_EQ_INT(within, 86400);

	int64_t a = make_snap(c, "main", NOW - 3 * D_NS, "ok", 16 * MIB);
	int64_t b = make_snap(c, "main", NOW - 2 * D_NS, "failed", 0);
	int64_t r = make_snap(c, "main", NOW - 1 * D_NS, NULL, 64 * MIB);
	CHECK(a > 0 && b > 0 && r > 0);

	/* pin, unpin, note; only on visible snapshots */
	CHECK_EQ_INT(catalog_snapshot_set_pin(c, a, NOW + D_NS), 0);
	s.rowid = a;
	CHECK_EQ_INT(catalog_snapshot_foreach(c, NULL, find_cb, &s), 0);
	CHECK(s.pinned_until == NOW + D_NS);
	CHECK_EQ_INT(catalog_snapshot_get(c, "latest", "main", &s), 0);
	CHECK_EQ_INT(s.rowid, b);
	snapshot_info_clear(&s);
	CHECK_EQ_INT(catalog_snapshot_set_note(c, a, "before the upgrade"), 0);
	CHECK_EQ_INT(catalog_snapshot_get(c, "latest", NULL, &s), 0);
	snapshot_info_clear(&s);
	CHECK_EQ_INT(catalog_snapshot_set_pin(c, r, NOW), -ENOENT);  /* running */
	CHECK_EQ_INT(catalog_snapshot_set_note(c, r, "x"), -ENOENT);
	CHECK_EQ_INT(catalog_snapshot_set_pin(c, 12345, NOW), -ENOENT);

	/* expire refuses a snapshot pinned meanwhile, and one gone or running */
	CHECK_EQ_INT(catalog_snapshot_expire(c, a, NOW), -EAGAIN);
	CHECK_EQ_INT(catalog_snapshot_expire(c, a, NOW + D_NS), 0); /* pin over at that time */
	CHECK_EQ_INT(catalog_snapshot_expire(c, a, NOW), -ENOENT);
	CHECK_EQ_INT(catalog_snapshot_expire(c, r, NOW), -ENOENT);
	CHECK_EQ_INT(catalog_snapshot_set_pin(c, b, NOW + D_NS), 0);
	CHECK_EQ_INT(catalog_snapshot_set_pin(c, b, 0), 0); /* unpin */
	s.rowid = b;
	CHECK_EQ_INT(catalog_snapshot_foreach(c, NULL, find_cb, &s), 0);
	CHECK_EQ_INT(s.pinned_until, 0);
	/* a held one becomes "deleted" (1) and still shows in foreach_any */
	int64_t h = make_snap(c, "main", NOW - 4 * D_NS, "ok", 0);
	CHECK_EQ_INT(catalog_session_add(c, "mnt1", "mount", NULL), 0);
	CHECK_EQ_INT(catalog_snapshot_hold(c, "mnt1", h), 0);
	CHECK_EQ_INT(catalog_snapshot_expire(c, h, NOW), 1);
	n = 0;
	CHECK_EQ_INT(catalog_snapshot_foreach(c, NULL, count_cb, &n), 0);
	CHECK_EQ_INT(n, 1); /* b */
	n = 0;
	CHECK_EQ_INT(catalog_snapshot_foreach_any(c, count_cb, &n), 0);
	CHECK_EQ_INT(n, 3); /* b, running r, deleted h */
	CHECK_EQ_INT(catalog_snapshot_expire(c, h, NOW), -ENOENT);

	/* segment size from pg_wal only */
	CHECK_EQ_INT(catalog_snapshot_wal_seg_size(c, r, &size), 0);
	CHECK(size == 64 * MIB);
	CHECK_EQ_INT(catalog_snapshot_wal_seg_size(c, b, &size), -ENOENT);
	int64_t odd = make_snap(c, "main", NOW, "ok", 3 * MIB);
	CHECK_EQ_INT(catalog_snapshot_wal_seg_size(c, odd, &size), -ENOENT);

	catalog_free(c);
	TEST_RM_RF(tmp);
}

int main(void)
{
	test_keep_last();
	test_failed_and_warning();
	test_keep_within();
	test_pinned();
	test_instances_and_ties();
	test_bad_policy();
	test_randomized();
	test_wal_one_timeline();
	test_wal_seg_sizes();
	test_wal_timelines();
	test_catalog();
	return test_finish();
}
