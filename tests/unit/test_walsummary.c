/*
 * Unit tests for ingest/walsummary.h on synthetic WAL written by a tiny
 * writer below (page headers long and short, records with correct CRCs,
 * MAXALIGN 8, records split across pages and segments), for every magic.
 * Run with -v for a timing line: summarizing a 16 MiB segment against
 * zstd -3 + SHA-256 of it.
 */
#include "tests/unit/test.h"

#include "common/crc32c.h"
#include "ingest/walsummary.h"

#include <openssl/sha.h>
#include <time.h>
#include <zstd.h>

#define SEG (1u << 20)
#define BLK 8192u
#define SPC 1663u
#define DB 5u

static uint32_t wseg = SEG; /* the writer's segment size */

static const uint16_t magics[] = {0xD10D, 0xD110, 0xD113, 0xD116, 0xD118};
static const int majors[] = {14, 15, 16, 17, 18};

/* ---- little-endian stores ---- */
static void st16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
static void st32(uint8_t *p, uint32_t v) { st16(p, (uint16_t)v), st16(p + 2, (uint16_t)(v >> 16)); }
static void st64(uint8_t *p, uint64_t v) { st32(p, (uint32_t)v), st32(p + 4, (uint32_t)(v >> 32)); }
static uint32_t ld32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }

/* ---- record builder ---- */
typedef struct TBlk {
	uint8_t id, fork;
	bool same_rel;
	uint32_t rel, blk;
	uint16_t data_len;
	bool image;
	uint16_t bimg_len, hole_off;
	uint8_t bimg_info;
	bool comp_hdr;
	uint16_t hole_len;
} TBlk;

typedef struct TRec {
	uint8_t rmid, info;
	int n;
	TBlk b[6];
	bool origin, toplevel;
	uint32_t main_len;
	const uint8_t *main; /* NULL: a pattern */
	uint32_t spc, db;    /* 0: SPC, DB */
} TRec;

static uint8_t *recbuf; /* 2 MiB scratch for one record */

static uint32_t rec_build(const TRec *t)
{
	uint8_t *o = recbuf;
	uint32_t off = 24;
	for (int i = 0; i < t->n; i++) {
		const TBlk *b = &t->b[i];
		o[off++] = b->id;
		o[off++] = (uint8_t)(b->fork | (b->data_len ? 0x20 : 0) | (b->image ? 0x10 : 0) |
				     (b->same_rel ? 0x80 : 0));
		st16(o + off, b->data_len), off += 2;
		if (b->image) {
			st16(o + off, b->bimg_len), st16(o + off + 2, b->hole_off), o[off + 4] = b->bimg_info;
			off += 5;
			if (b->comp_hdr)
				st16(o + off, b->hole_len), off += 2;
		}
		if (!b->same_rel) {
			st32(o + off, t->spc ? t->spc : SPC), st32(o + off + 4, t->db ? t->db : DB);
			st32(o + off + 8, b->rel), off += 12;
		}
		st32(o + off, b->blk), off += 4;
	}
	if (t->origin)
		o[off] = 253, st16(o + off + 1, 7), off += 3;
	if (t->toplevel)
		o[off] = 252, st32(o + off + 1, 1234), off += 5;
	if (t->main_len > 255)
		o[off] = 254, st32(o + off + 1, t->main_len), off += 5;
	else if (t->main_len)
		o[off] = 255, o[off + 1] = (uint8_t)t->main_len, off += 2;
	for (int i = 0; i < t->n; i++) {
		uint32_t n = (t->b[i].image ? t->b[i].bimg_len : 0) + t->b[i].data_len;
		memset(o + off, 0xA0 + i, n), off += n;
	}
	if (t->main)
		memcpy(o + off, t->main, t->main_len);
	else
		memset(o + off, 0x5A, t->main_len);
	off += t->main_len;
	memset(o, 0, 24);
	st32(o, off), st32(o + 4, 100);
	o[16] = t->info, o[17] = t->rmid;
	return off;
}

/* ---- WAL writer over n consecutive segments ---- */
typedef struct WalW {
	uint8_t *buf;
	uint64_t start, pos, prev;
	size_t size;
	uint16_t magic;
	uint32_t tli;
	uint64_t sysid;
} WalW;

static void ww_init(WalW *w, uint16_t magic, uint64_t start, int n_segs)
{
	*w = (WalW){.buf = calloc((size_t)n_segs, wseg), .start = start, .pos = start,
		    .size = (size_t)n_segs * wseg, .magic = magic, .tli = 1, .sysid = 7000000000000000001ull};
	if (!w->buf)
		exit(2);
}

static uint8_t *at(WalW *w, uint64_t lsn)
{
	if (lsn < w->start || lsn - w->start >= w->size) {
		fprintf(stderr, "test writer: LSN %" PRIx64 " outside the buffer\n", lsn);
		exit(2);
	}
	return w->buf + (lsn - w->start);
}

static void ww_page(WalW *w, uint16_t info, uint32_t rem)
{
	uint8_t *p = at(w, w->pos);
	bool lng = w->pos % wseg == 0;
	st16(p, w->magic), st16(p + 2, (uint16_t)(info | (lng ? 2 : 0))), st32(p + 4, w->tli);
	st64(p + 8, w->pos), st32(p + 16, rem);
	if (lng)
		st64(p + 24, w->sysid), st32(p + 32, wseg), st32(p + 36, BLK);
	w->pos += lng ? 40 : 24;
}

static void ww_crc(uint8_t *rec, uint32_t len)
{
	uint32_t crc = crc32c_update(~0u, rec + 24, len - 24);
	st32(rec + 20, ~crc32c_update(crc, rec, 20));
}

/* Write len bytes of recbuf as the next record; stop after `upto` bytes if upto < len. */
static uint64_t ww_put(WalW *w, uint32_t len, uint32_t upto)
{
	uint64_t start;
	uint32_t done = 0;
	if (w->pos % BLK == 0)
		ww_page(w, 0, 0);
	start = w->pos;
	st64(recbuf + 8, w->prev);
	ww_crc(recbuf, len);
	while (done < MIN(len, upto)) {
		uint32_t n;
		if (w->pos % BLK == 0)
			ww_page(w, 1, len - done);
		n = (uint32_t)MIN(MIN(len, upto) - done, BLK - w->pos % BLK);
		memcpy(at(w, w->pos), recbuf + done, n);
		w->pos += n, done += n;
	}
	if (upto >= len) {
		w->pos = (w->pos + 7) & ~7ull;
		w->prev = start;
	}
	return start;
}

static uint64_t ww_rec(WalW *w, const TRec *t) { return ww_put(w, rec_build(t), UINT32_MAX); }

/*
 * Write the first part of a record up to the end of its page, then the next
 * page with XLP_FIRST_IS_OVERWRITE_CONTRECORD: the record is abandoned.
 */
static uint64_t ww_abandon(WalW *w, const TRec *t)
{
	uint32_t len = rec_build(t);
	uint64_t start = w->pos % BLK == 0 ? w->pos + (w->pos % wseg ? 24 : 40) : w->pos;
	uint32_t upto = (uint32_t)(BLK - start % BLK);
	if (len <= upto)
		exit(2);
	ww_put(w, len, upto);
	ww_page(w, 8, 0);
	return start;
}

/* A record of the given rmgr/info with main data only. */
static uint64_t ww_main(WalW *w, uint8_t rmid, uint8_t info, const void *main, uint32_t len)
{
	TRec t = {.rmid = rmid, .info = info, .main = main, .main_len = len};
	return ww_rec(w, &t);
}

/* A heap-like record touching one block of rel (fork 0 unless given). */
static uint64_t ww_heap(WalW *w, uint32_t rel, uint8_t fork, uint32_t blk)
{
	TRec t = {.rmid = 10, .info = 0x00, .n = 1, .main_len = 3};
	t.b[0] = (TBlk){.id = 0, .fork = fork, .rel = rel, .blk = blk, .data_len = 10};
	return ww_rec(w, &t);
}

/* Where a record of tot bytes starting at pos ends (MAXALIGNed), page headers counted. */
static uint64_t rec_end(uint64_t pos, uint32_t tot)
{
	if (pos % BLK == 0)
		pos += pos % wseg ? 24 : 40;
	while (tot) {
		if (pos % BLK == 0)
			pos += pos % wseg ? 24 : 40;
		uint32_t n = (uint32_t)MIN(tot, BLK - pos % BLK);
		pos += n, tot -= n;
	}
	return (pos + 7) & ~7ull;
}

/*
 * XLOG_NOOP records until the next record starts at target (a page start:
 * the last one ends at the page's end; just after a page header: the same).
 */
static void ww_pad_to(WalW *w, uint64_t target)
{
	if (target % BLK == (target % wseg < BLK ? 40 : 24))
		target -= target % BLK;
	while (w->pos < target) {
		uint64_t gap = target - w->pos;
		uint32_t lo = 24, hi = (uint32_t)MIN(gap, 1u << 19), tot = 0;
		if (rec_end(w->pos, hi) < target) {
			ww_main(w, 0, 0x20, NULL, hi - 29);
			continue;
		}
		while (lo <= hi) { /* the largest record ending at or before target */
			uint32_t mid = (lo + hi) / 2;
			if (rec_end(w->pos, mid) <= target)
				tot = mid, lo = mid + 1;
			else
				hi = mid - 1;
		}
		if (tot < 26) {
			fprintf(stderr, "test writer: cannot pad to %" PRIx64 "\n", target);
			exit(2);
		}
		ww_main(w, 0, 0x20, NULL, tot <= 26 + 255 ? tot - 26 : tot - 29);
	}
	if (w->pos != target) {
		fprintf(stderr, "test writer: padded past %" PRIx64 "\n", target);
		exit(2);
	}
}

/* ---- reading summaries back ---- */
static const char *fork_name(uint8_t f)
{
	static const char *const n[] = {"main", "fsm", "vm", "init"};
	return f < 4 ? n[f] : "?";
}

typedef struct Str {
	char s[1 << 16];
	size_t n;
} Str;

static _printf_(2, 3) void str_add(Str *o, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int k = vsnprintf(o->s + o->n, sizeof(o->s) - o->n, fmt, ap);
	va_end(ap);
	o->n = MIN(o->n + (size_t)(k > 0 ? k : 0), sizeof(o->s) - 1);
}

static int dump_fn(const WalRelFork *rf, uint32_t limit, const uint32_t *blocks, size_t n, void *ud)
{
	Str *o = ud;
	str_add(o, "%s%u/%u/%u/%s", o->n ? "; " : "", rf->spc, rf->db, rf->rel, fork_name(rf->fork));
	if (limit != UINT32_MAX)
		str_add(o, " limit %u", limit);
	for (size_t i = 0; i < n; i++)
		str_add(o, "%s%u", i ? "," : " blocks ", blocks[i]);
	return 0;
}

static const char *dump_set(const WalBlockSet *b, Str *o)
{
	o->n = 0;
	o->s[0] = 0;
	walblocks_foreach(b, dump_fn, o);
	return o->s;
}

/* Summarize segment i of w and return its blocks as text (and its info). */
static const char *seg_dump(WalW *w, int i, WalSegInfo *info, Str *o)
{
	WalSegSummary *s = NULL;
	WalBlockSet *b = NULL;
	o->s[0] = 0;
	if (!CHECK_EQ_INT(walsum_segment(w->buf + (size_t)i * SEG, SEG, w->start + (uint64_t)i * SEG, SEG,
					 0, 0, UINT64_MAX, &s),
			  0))
		return "(error)";
	if (info)
		walsum_info(s, info);
	CHECK_EQ_INT(walblocks_new(&b), 0);
	CHECK_EQ_INT(walblocks_add(b, s), 0);
	dump_set(b, o);
	walblocks_free(b);
	walsum_free(s);
	return o->s;
}

/* Combine segments [first, first + n) of w, skipping `skip` (-1: none). */
static WalBlockSet *combine(WalW *w, int first, int n, int skip, uint64_t from, uint64_t to)
{
	WalBlockSet *b = NULL;
	CHECK_EQ_INT(walblocks_new(&b), 0);
	for (int i = first; i < first + n; i++) {
		WalSegSummary *s = NULL;
		if (i == skip)
			continue;
		CHECK_EQ_INT(walsum_segment(w->buf + (size_t)i * SEG, SEG, w->start + (uint64_t)i * SEG, SEG,
					    0, from, to, &s),
			     0);
		CHECK_EQ_INT(walblocks_add(b, s), 0);
		walsum_free(s);
	}
	return b;
}

/* ---- tests ---- */

static void test_vm_length(void)
{
	CHECK_EQ_INT(walsum_vm_truncation_length(0), 0);
	CHECK_EQ_INT(walsum_vm_truncation_length(1), 1);
	CHECK_EQ_INT(walsum_vm_truncation_length(32671), 1);
	CHECK_EQ_INT(walsum_vm_truncation_length(32672), 1);
	CHECK_EQ_INT(walsum_vm_truncation_length(32673), 2);
	CHECK_EQ_INT(walsum_vm_truncation_length(65344), 2);
	CHECK_EQ_INT(walsum_vm_truncation_length(UINT32_MAX), 131458);
}

/* Block references of every shape, one major. */
static void test_blockrefs(int k)
{
	WalW w;
	Str o;
	WalSegInfo info;
	int major = majors[k];
	bool v14 = major == 14;
	uint8_t comp = v14 ? 0x02 : 0x04, apply = v14 ? 0x04 : 0x02;
	TRec t;
	ww_init(&w, magics[k], 0x1000000, 1);

	ww_heap(&w, 100, 0, 5);
	/* two blocks, the second SAME_REL, plus origin and toplevel xid and long main data */
	t = (TRec){.rmid = 10, .info = 0x20, .n = 2, .origin = true, .toplevel = true, .main_len = 300};
	t.b[0] = (TBlk){.id = 0, .rel = 101, .blk = 7, .data_len = 4};
	t.b[1] = (TBlk){.id = 1, .same_rel = true, .blk = 9};
	ww_rec(&w, &t);
	/* full-page images: plain, with a hole, compressed, compressed with a hole */
	t = (TRec){.rmid = 0, .info = 0xB0, .n = 4};
	t.b[0] = (TBlk){.id = 0, .rel = 102, .blk = 1, .image = true, .bimg_len = 8192, .bimg_info = apply};
	t.b[1] = (TBlk){.id = 1, .rel = 102, .blk = 2, .image = true, .bimg_len = 8192 - 4000,
			.hole_off = 200, .bimg_info = 0x01};
	t.b[2] = (TBlk){.id = 2, .same_rel = true, .blk = 3, .image = true, .bimg_len = 900,
			.bimg_info = comp, .data_len = 6};
	t.b[3] = (TBlk){.id = 5, .same_rel = true, .blk = 4, .image = true, .bimg_len = 700,
			.hole_off = 100, .bimg_info = (uint8_t)(comp | 0x01), .comp_hdr = true,
			.hole_len = 3000};
	ww_rec(&w, &t);
	if (!v14) { /* lz4 and zstd flags */
		t = (TRec){.rmid = 0, .info = 0xB0, .n = 2};
		t.b[0] = (TBlk){.id = 0, .rel = 102, .blk = 10, .image = true, .bimg_len = 800,
				.hole_off = 64, .bimg_info = 0x08 | 0x01, .comp_hdr = true, .hole_len = 64};
		t.b[1] = (TBlk){.id = 1, .rel = 102, .blk = 11, .image = true, .bimg_len = 500,
				.bimg_info = 0x10 | 0x02};
		ww_rec(&w, &t);
	}
	/* FSM ignored, VM and init forks kept, the same block twice counted once */
	ww_heap(&w, 103, 1, 0);
	ww_heap(&w, 103, 2, 0);
	ww_heap(&w, 103, 3, 0);
	ww_heap(&w, 100, 0, 5);
	ww_heap(&w, 100, 0, 70000); /* a second chunk */
	/* a record crossing a page: 20 KB of block data */
	t = (TRec){.rmid = 10, .info = 0x00, .n = 1, .main_len = 20000};
	t.b[0] = (TBlk){.id = 0, .rel = 104, .blk = 42, .data_len = 20000};
	ww_rec(&w, &t);
	ww_heap(&w, 104, 0, 43);
	uint64_t end = w.pos;

	const char *want_14 = "1663/5/100/main blocks 5,70000; 1663/5/101/main blocks 7,9; "
			      "1663/5/102/main blocks 1,2,3,4; 1663/5/103/vm blocks 0; "
			      "1663/5/103/init blocks 0; 1663/5/104/main blocks 42,43";
	const char *want = "1663/5/100/main blocks 5,70000; 1663/5/101/main blocks 7,9; "
			   "1663/5/102/main blocks 1,2,3,4,10,11; 1663/5/103/vm blocks 0; "
			   "1663/5/103/init blocks 0; 1663/5/104/main blocks 42,43";
	CHECK_EQ_STR(seg_dump(&w, 0, &info, &o), v14 ? want_14 : want);
	CHECK_EQ_INT(info.pg_major, major);
	CHECK_EQ_INT(info.unsummarized_lsn, UINT64_MAX);
	CHECK(info.end_of_wal);
	CHECK_EQ_INT(info.end_lsn, end);
	CHECK_EQ_INT(info.n_records, v14 ? 10 : 11);
	CHECK_EQ_STR(info.why, "");
	free(w.buf);

	/* the other layout's compressed flag: a compress header where none belongs, or none where one does */
	ww_init(&w, magics[k], 0x1000000, 1);
	ww_heap(&w, 100, 0, 1);
	t = (TRec){.rmid = 0, .info = 0xB0, .n = 1};
	t.b[0] = (TBlk){.id = 0, .rel = 102, .blk = 4, .image = true, .bimg_len = 700, .hole_off = 100,
			.bimg_info = (uint8_t)((v14 ? 0x04 : 0x02) | 0x01), .comp_hdr = true,
			.hole_len = 3000};
	uint64_t bad = ww_rec(&w, &t);
	ww_heap(&w, 100, 0, 2);
	CHECK_EQ_STR(seg_dump(&w, 0, &info, &o), "1663/5/100/main blocks 1");
	CHECK_EQ_INT(info.unsummarized_lsn, bad);
	CHECK(strstr(info.why, "do not decode") != NULL);
	free(w.buf);
}

static void test_smgr(int k)
{
	WalW w;
	Str o;
	WalSegInfo info;
	uint8_t m[20];
	ww_init(&w, magics[k], 0x1000000, 1);
	ww_heap(&w, 200, 0, 3);
	/* XLOG_SMGR_CREATE main and fsm (ignored) */
	st32(m, SPC), st32(m + 4, DB), st32(m + 8, 200), st32(m + 12, 0);
	ww_main(&w, 2, 0x10 | 0x01, m, 16);
	st32(m + 12, 1);
	ww_main(&w, 2, 0x10 | 0x01, m, 16);
	ww_heap(&w, 200, 0, 9); /* after the create: kept */
	/* truncate heap and vm of 201: blocks at/after the limit referenced before it go */
	ww_heap(&w, 201, 0, 10);
	ww_heap(&w, 201, 0, 40000);
	ww_heap(&w, 201, 0, 32672);
	ww_heap(&w, 201, 2, 0);
	ww_heap(&w, 201, 2, 1);
	ww_heap(&w, 201, 2, 5);
	st32(m, 32673), st32(m + 4, SPC), st32(m + 8, DB), st32(m + 12, 201), st32(m + 16, 3);
	ww_main(&w, 2, 0x20 | 0x01, m, 20);
	ww_heap(&w, 201, 0, 50000); /* after the truncate: kept */
	/* a higher truncate later does not raise the limit */
	st32(m, 40000);
	ww_main(&w, 2, 0x20 | 0x01, m, 20);
	/* heap only */
	ww_heap(&w, 202, 2, 3);
	st32(m, 0), st32(m + 12, 202), st32(m + 16, 1);
	ww_main(&w, 2, 0x20 | 0x01, m, 20);
	CHECK_EQ_STR(seg_dump(&w, 0, &info, &o),
		     "1663/5/200/main limit 0 blocks 9; 1663/5/201/main limit 32673 blocks 10,32672,50000; "
		     "1663/5/201/vm limit 2 blocks 0,1; 1663/5/202/main limit 0; 1663/5/202/vm blocks 3");
	CHECK_EQ_INT(info.unsummarized_lsn, UINT64_MAX);
	free(w.buf);
}

static void test_dbase(int k)
{
	WalW w;
	Str o;
	WalSegInfo info;
	WalSegSummary *s = NULL;
	WalBlockSet *b = NULL;
	uint8_t m[20];
	bool v14 = majors[k] == 14;
	ww_init(&w, magics[k], 0x1000000, 1);
	st32(m, 16400), st32(m + 4, SPC), st32(m + 8, 1), st32(m + 12, SPC);
	ww_main(&w, 4, 0x00 | 0x01, m, 16); /* create (file copy) */
	ww_heap(&w, 5, 0, 1);
	if (!v14) {
		st32(m, 16401), st32(m + 4, 16500);
		ww_main(&w, 4, 0x10 | 0x01, m, 8); /* create (wal log) */
	}
	st32(m, 16402), st32(m + 4, 2), st32(m + 8, SPC), st32(m + 12, 16501);
	ww_main(&w, 4, (v14 ? 0x10 : 0x20) | 0x01, m, 16); /* drop, two tablespaces */
	uint64_t unknown = ww_main(&w, 4, (v14 ? 0x20 : 0x30) | 0x01, m, 16);
	ww_heap(&w, 6, 0, 1);
	CHECK_EQ_STR(seg_dump(&w, 0, &info, &o),
		     v14 ? "1663/5/5/main blocks 1; 1663/16400/0/main limit 0; 1663/16402/0/main limit 0; "
			   "16501/16402/0/main limit 0"
			 : "1663/5/5/main blocks 1; 1663/16400/0/main limit 0; 1663/16402/0/main limit 0; "
			   "16500/16401/0/main limit 0; 16501/16402/0/main limit 0");
	CHECK_EQ_INT(info.unsummarized_lsn, unknown);
	CHECK(strstr(info.why, "resource manager 4") != NULL);

	CHECK_EQ_INT(walsum_segment(w.buf, SEG, w.start, SEG, 0, 0, UINT64_MAX, &s), 0);
	CHECK_EQ_INT(walblocks_new(&b), 0);
	CHECK_EQ_INT(walblocks_add(b, s), 0);
	CHECK(walblocks_db_recreated(b, SPC, 16400));
	CHECK(walblocks_db_recreated(b, 16501, 16402));
	CHECK(!walblocks_db_recreated(b, SPC, DB));
	CHECK_EQ_INT(walblocks_db_recreated(b, 16500, 16401), !v14);
	uint8_t bits[16];
	WalRelFork rf = {SPC, 16400, 1259, 0};
	CHECK_EQ_INT(walblocks_file(b, &rf, 0, 100, bits), 1);
	rf = (WalRelFork){SPC, DB, 5, 0};
	CHECK_EQ_INT(walblocks_file(b, &rf, 0, 100, bits), 0);
	CHECK_EQ_INT(bits[0], 0x02);
	walblocks_free(b);
	walsum_free(s);
	free(w.buf);
}

static void test_xact(int k)
{
	WalW w;
	Str o;
	WalSegInfo info;
	uint8_t m[128];
	uint32_t off = 0;
	ww_init(&w, magics[k], 0x1000000, 1);
	ww_heap(&w, 300, 0, 1);
	ww_heap(&w, 300, 2, 1);
	ww_heap(&w, 300, 1, 1);
	/* commit: xact_time, xinfo (dbinfo, 3 subxacts, 2 dropped rels) */
	memset(m, 0, sizeof(m));
	st64(m, 12345), off = 8;
	st32(m + off, 1 | 2 | 4), off += 4;
	st32(m + off, DB), st32(m + off + 4, SPC), off += 8;
	st32(m + off, 3), off += 4 + 12;
	st32(m + off, 2), off += 4;
	st32(m + off, SPC), st32(m + off + 4, DB), st32(m + off + 8, 300), off += 12;
	st32(m + off, SPC), st32(m + off + 4, DB), st32(m + off + 8, 301), off += 12;
	ww_main(&w, 1, 0x00 | 0x80 | 0x01, m, off);
	ww_heap(&w, 300, 0, 2); /* after the drop: kept */
	/* abort prepared with one rel, no subxacts */
	off = 8;
	st32(m + off, 4 | 16), off += 4;
	st32(m + off, 1), off += 4;
	st32(m + off, SPC), st32(m + off + 4, DB), st32(m + off + 8, 302), off += 12;
	st32(m + off, 999), off += 4; /* twophase xid */
	ww_main(&w, 1, 0x40 | 0x80 | 0x01, m, off);
	/* plain commit without xinfo: nothing */
	ww_main(&w, 1, 0x00, m, 8);
	/* abort with rels */
	off = 8;
	st32(m + off, 4), off += 4;
	st32(m + off, 1), off += 4;
	st32(m + off, 16600), st32(m + off + 4, DB), st32(m + off + 8, 303), off += 12;
	ww_main(&w, 1, 0x20 | 0x80 | 0x01, m, off);
	/* prepare carries no dropped rels */
	ww_main(&w, 1, 0x10, m, 40);
	CHECK_EQ_STR(seg_dump(&w, 0, &info, &o),
		     "1663/5/300/main limit 0 blocks 2; 1663/5/300/vm limit 0; 1663/5/300/init limit 0; "
		     "1663/5/301/main limit 0; 1663/5/301/vm limit 0; 1663/5/301/init limit 0; "
		     "1663/5/302/main limit 0; 1663/5/302/vm limit 0; 1663/5/302/init limit 0; "
		     "16600/5/303/main limit 0; 16600/5/303/vm limit 0; 16600/5/303/init limit 0");
	CHECK_EQ_INT(info.unsummarized_lsn, UINT64_MAX);
	free(w.buf);
}

/* Things that make WAL unsummarized from a record on. */
static void test_unsummarized(int k)
{
	WalW w;
	Str o;
	WalSegInfo info;
	uint8_t m[28] = {0};
	uint64_t at_lsn;

	/* wal_level=minimal */
	ww_init(&w, magics[k], 0x1000000, 1);
	ww_heap(&w, 400, 0, 1);
	st32(m + 20, 1); /* replica: fine */
	ww_main(&w, 0, 0x60, m, 28);
	ww_heap(&w, 400, 0, 2);
	st32(m + 20, 0);
	at_lsn = ww_main(&w, 0, 0x60, m, 28);
	ww_heap(&w, 400, 0, 3);
	CHECK_EQ_STR(seg_dump(&w, 0, &info, &o), "1663/5/400/main blocks 1,2");
	CHECK_EQ_INT(info.unsummarized_lsn, at_lsn);
	CHECK_EQ_INT(info.end_lsn, at_lsn);
	CHECK(strstr(info.why, "wal_level=minimal") != NULL);
	free(w.buf);

	/* an unknown XLR_SPECIAL_REL_UPDATE (heap rmgr, and an smgr info we do not know) */
	for (int i = 0; i < 2; i++) {
		ww_init(&w, magics[k], 0x1000000, 1);
		ww_heap(&w, 400, 0, 1);
		at_lsn = i == 0 ? ww_heap(&w, 400, 0, 9) : ww_main(&w, 2, 0x30 | 0x01, m, 20);
		if (i == 0) { /* the heap record, flagged */
			uint8_t *rec = w.buf + (at_lsn - w.start);
			rec[16] |= 0x01;
			ww_crc(rec, ld32(rec));
		}
		ww_heap(&w, 400, 0, 3);
		CHECK_EQ_STR(seg_dump(&w, 0, &info, &o), "1663/5/400/main blocks 1");
		CHECK_EQ_INT(info.unsummarized_lsn, at_lsn);
		CHECK(strstr(info.why, "not understood") != NULL);
		free(w.buf);
	}

	/* a flipped byte: CRC */
	ww_init(&w, magics[k], 0x1000000, 1);
	ww_heap(&w, 400, 0, 1);
	at_lsn = ww_heap(&w, 400, 0, 2);
	ww_heap(&w, 400, 0, 3);
	w.buf[at_lsn - w.start + 30] ^= 0x40;
	CHECK_EQ_STR(seg_dump(&w, 0, &info, &o), "1663/5/400/main blocks 1");
	CHECK_EQ_INT(info.unsummarized_lsn, at_lsn);
	CHECK(strstr(info.why, "CRC") != NULL);
	free(w.buf);

	/* a page header from another place (xlp_pageaddr) where a record continues */
	ww_init(&w, magics[k], 0x1000000, 1);
	ww_heap(&w, 400, 0, 1);
	TRec t = {.rmid = 10, .n = 1, .main_len = 9000};
	t.b[0] = (TBlk){.id = 0, .rel = 400, .blk = 2};
	at_lsn = ww_rec(&w, &t);
	st64(w.buf + BLK + 8, 0x12345000);
	CHECK_EQ_STR(seg_dump(&w, 0, &info, &o), "1663/5/400/main blocks 1");
	CHECK_EQ_INT(info.unsummarized_lsn, at_lsn);
	CHECK(strstr(info.why, "xlp_pageaddr") != NULL);
	free(w.buf);

	/* a timeline going down */
	ww_init(&w, magics[k], 0x1000000, 1);
	w.tli = 2;
	ww_heap(&w, 400, 0, 1);
	ww_pad_to(&w, 0x1000000 + BLK + 24);
	w.tli = 1;
	at_lsn = ww_heap(&w, 400, 0, 2); /* starts a new page */
	CHECK_EQ_STR(seg_dump(&w, 0, &info, &o), "1663/5/400/main blocks 1");
	CHECK_EQ_INT(info.unsummarized_lsn, 0x1000000 + BLK);
	CHECK(strstr(info.why, "timeline") != NULL);
	free(w.buf);
}

static void test_magic(void)
{
	WalW w;
	Str o;
	WalSegInfo info;
	const uint16_t bad[] = {0xD0FF, 0x0000, 0x10D1 /* 15 big-endian */};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		ww_init(&w, bad[i], 0x1000000, 1);
		ww_heap(&w, 500, 0, 1);
		CHECK_EQ_STR(seg_dump(&w, 0, &info, &o), "");
		CHECK_EQ_INT(info.pg_major, 0);
		CHECK_EQ_INT(info.unsummarized_lsn, 0x1000000);
		CHECK_EQ_INT(info.end_lsn, 0x1000000);
		CHECK(strstr(info.why, i == 2 ? "big-endian" : "unknown page magic") != NULL);
		free(w.buf);
	}
	/* a known magic on a page in the middle differs */
	ww_init(&w, 0xD110, 0x1000000, 1);
	ww_heap(&w, 500, 0, 1);
	ww_pad_to(&w, 0x1000000 + BLK + 24);
	w.magic = 0xD113;
	ww_heap(&w, 500, 0, 2);
	CHECK_EQ_STR(seg_dump(&w, 0, &info, &o), "1663/5/500/main blocks 1");
	CHECK_EQ_INT(info.unsummarized_lsn, 0x1000000 + BLK);
	free(w.buf);
}

static void test_end_and_switch(int k)
{
	WalW w;
	Str o;
	WalSegInfo info;
	/* zero xl_tot_len: end of WAL, not an error */
	ww_init(&w, magics[k], 0x1000000, 1);
	ww_heap(&w, 600, 0, 1);
	uint64_t end = w.pos;
	CHECK_EQ_STR(seg_dump(&w, 0, &info, &o), "1663/5/600/main blocks 1");
	CHECK(info.end_of_wal);
	CHECK_EQ_INT(info.end_lsn, end);
	CHECK_EQ_INT(info.unsummarized_lsn, UINT64_MAX);
	/* a record ending at a page end, and the next page never written */
	ww_pad_to(&w, 0x1000000 + BLK);
	CHECK_EQ_STR(seg_dump(&w, 0, &info, &o), "1663/5/600/main blocks 1");
	CHECK(info.end_of_wal);
	CHECK_EQ_INT(info.end_lsn, 0x1000000 + BLK);
	CHECK_EQ_INT(info.unsummarized_lsn, UINT64_MAX);
	free(w.buf);

	/* XLOG_SWITCH: the rest is padding, whatever it holds */
	ww_init(&w, magics[k], 0x1000000, 1);
	ww_heap(&w, 600, 0, 1);
	ww_main(&w, 0, 0x40, NULL, 0);
	memset(w.buf + (w.pos - w.start), 0x5A, 100);
	CHECK_EQ_STR(seg_dump(&w, 0, &info, &o), "1663/5/600/main blocks 1");
	CHECK(info.switched);
	CHECK(!info.end_of_wal);
	CHECK_EQ_INT(info.end_lsn, 0x1000000 + SEG);
	CHECK_EQ_INT(info.unsummarized_lsn, UINT64_MAX);
	free(w.buf);
}

/*
 * Four segments: a record crossing 0 -> 1, one crossing 1 -> 2 -> 3 (all of
 * segment 2 is its continuation), a switch spanning 3's end... and the
 * combined set, whole, filtered, and with a segment missing.
 */
static void test_spanning(int k)
{
	WalW w;
	Str o;
	WalSegInfo info;
	TRec t;
	char why[256];
	uint64_t S = 0x5000000;
	ww_init(&w, magics[k], S, 4);

	ww_heap(&w, 700, 0, 1);
	ww_pad_to(&w, S + SEG - 16);
	t = (TRec){.rmid = 10, .n = 2, .main_len = 3000};
	t.b[0] = (TBlk){.id = 0, .rel = 701, .blk = 11, .data_len = 100};
	t.b[1] = (TBlk){.id = 3, .rel = 702, .blk = 12};
	uint64_t r1 = ww_rec(&w, &t); /* header split across segments */
	uint64_t after_r1 = w.pos;
	ww_heap(&w, 700, 0, 2);
	ww_pad_to(&w, 2 * SEG + S - 16);
	t = (TRec){.rmid = 10, .n = 1, .main_len = 1045604 - 24 - 20 - 5};
	t.b[0] = (TBlk){.id = 0, .rel = 703, .blk = 13};
	uint64_t r2 = ww_rec(&w, &t); /* 16 bytes in 1, all of 2, some of 3 */
	CHECK_EQ_INT(ld32(recbuf), 1045604);
	uint64_t after_r2 = w.pos;
	CHECK(after_r2 > S + 3 * SEG && after_r2 < S + 3 * SEG + 400);
	ww_heap(&w, 700, 0, 3);
	uint64_t end = w.pos;

	/* alone: the tail, the heads */
	CHECK_EQ_STR(seg_dump(&w, 0, &info, &o), "1663/5/700/main blocks 1");
	CHECK(info.has_tail && !info.has_head && info.end_lsn == r1);
	CHECK_EQ_STR(seg_dump(&w, 1, &info, &o), "1663/5/700/main blocks 2");
	CHECK(info.has_tail && info.has_head && !info.head_continues && info.end_lsn == r2);
	CHECK_EQ_STR(seg_dump(&w, 2, &info, &o), "");
	CHECK(info.has_head && info.head_continues && !info.has_tail && info.n_records == 0);
	CHECK_EQ_STR(seg_dump(&w, 3, &info, &o), "1663/5/700/main blocks 3");
	CHECK(info.has_head && info.end_of_wal && info.end_lsn == end);

	/* combined: the spanning records resolve */
	WalBlockSet *b = combine(&w, 0, 4, -1, 0, UINT64_MAX);
	CHECK_EQ_STR(dump_set(b, &o), "1663/5/700/main blocks 1,2,3; 1663/5/701/main blocks 11; "
				      "1663/5/702/main blocks 12; 1663/5/703/main blocks 13");
	CHECK(walblocks_covers(b, S, end, why, sizeof(why)));
	CHECK_EQ_STR(why, "");
	CHECK(!walblocks_covers(b, S, end + 8, why, sizeof(why)));
	CHECK(strstr(why, "WAL ends at") != NULL);
	CHECK(!walblocks_covers(b, S - 1, end, why, sizeof(why)));
	walblocks_free(b);

	/* only the first two: r2 pending */
	b = combine(&w, 0, 2, -1, 0, UINT64_MAX);
	CHECK(walblocks_covers(b, S, r2, why, sizeof(why)));
	CHECK(!walblocks_covers(b, S, r2 + 8, why, sizeof(why)));
	CHECK(strstr(why, "continues in a segment not summarized") != NULL);
	walblocks_free(b);

	/* the middle segment missing: covered up to r2, not past it, and says why */
	b = combine(&w, 0, 4, 2, 0, UINT64_MAX);
	CHECK(walblocks_covers(b, S, r2, why, sizeof(why)));
	CHECK(!walblocks_covers(b, S, end, why, sizeof(why)));
	CHECK(strstr(why, "is missing") != NULL);
	CHECK_EQ_STR(dump_set(b, &o), "1663/5/700/main blocks 1,2,3; 1663/5/701/main blocks 11; "
				      "1663/5/702/main blocks 12");
	walblocks_free(b);

	/* out of order: -EINVAL, nothing changes */
	{
		WalSegSummary *s0 = NULL, *s1 = NULL;
		CHECK_EQ_INT(walblocks_new(&b), 0);
		CHECK_EQ_INT(walsum_segment(w.buf, SEG, S, SEG, 0, 0, UINT64_MAX, &s0), 0);
		CHECK_EQ_INT(walsum_segment(w.buf + SEG, SEG, S + SEG, SEG, 0, 0, UINT64_MAX, &s1), 0);
		CHECK_EQ_INT(walblocks_add(b, s1), 0);
		CHECK_EQ_INT(walblocks_add(b, s0), -EINVAL);
		walsum_free(s0);
		walsum_free(s1);
		walblocks_free(b);
	}

	/* a precise range: [after r1, r2 + its length) holds the heap at 2 and r2 */
	WalSegBuf segs[4];
	for (int i = 0; i < 4; i++)
		segs[i] = (WalSegBuf){w.buf + (size_t)i * SEG, SEG, S + (uint64_t)i * SEG};
	CHECK_EQ_INT(walsum_range(segs, 4, SEG, 1, after_r1, after_r2, &b), 0);
	CHECK_EQ_STR(dump_set(b, &o), "1663/5/700/main blocks 2; 1663/5/703/main blocks 13");
	CHECK(walblocks_covers(b, after_r1, after_r2, why, sizeof(why)));
	CHECK(!walblocks_covers(b, r1, after_r2, why, sizeof(why)));
	CHECK(!walblocks_covers(b, after_r1, after_r2 + 8, why, sizeof(why)));
	walblocks_free(b);
	/* a range ending inside r2: r2 left out, and the coverage says so */
	CHECK_EQ_INT(walsum_range(segs, 4, SEG, 1, r1, r2 + 8, &b), 0);
	CHECK_EQ_STR(dump_set(b, &o), "1663/5/700/main blocks 2; 1663/5/701/main blocks 11; "
				      "1663/5/702/main blocks 12");
	CHECK(walblocks_covers(b, r1, r2, why, sizeof(why)));
	CHECK(!walblocks_covers(b, r1, r2 + 8, why, sizeof(why)));
	CHECK(strstr(why, "ends after the range") != NULL);
	walblocks_free(b);

	/* a range ending inside a record that lies within one segment */
	CHECK_EQ_INT(walsum_range(segs, 4, SEG, 1, S, after_r1 + 8, &b), 0);
	CHECK_EQ_STR(dump_set(b, &o), "1663/5/700/main blocks 1; 1663/5/701/main blocks 11; "
				      "1663/5/702/main blocks 12");
	CHECK(walblocks_covers(b, S, after_r1, why, sizeof(why)));
	CHECK(!walblocks_covers(b, S, after_r1 + 8, why, sizeof(why)));
	CHECK(strstr(why, "ends after the range") != NULL);
	walblocks_free(b);

	/* a bad page in the middle of segment 2 (all r2's continuation): r2 cannot be resolved */
	{
		uint8_t save = w.buf[2 * SEG + 5 * BLK + 8];
		w.buf[2 * SEG + 5 * BLK + 8] ^= 0x80; /* xlp_pageaddr */
		CHECK_EQ_STR(seg_dump(&w, 2, &info, &o), "");
		CHECK_EQ_INT(info.unsummarized_lsn, S + 2 * SEG + 5 * BLK);
		WalSegSummary *x = NULL, *y = NULL;
		uint8_t *ser = NULL;
		size_t n = 0;
		CHECK_EQ_INT(walsum_segment(w.buf + 2 * SEG, SEG, S + 2 * SEG, SEG, 0, 0, UINT64_MAX, &x), 0);
		CHECK_EQ_INT(walsum_serialize(x, &ser, &n), 0);
		CHECK_EQ_INT(walsum_parse(ser, n, &y), 0);
		free(ser);
		walsum_free(x);
		walsum_free(y);
		b = combine(&w, 0, 4, -1, 0, UINT64_MAX);
		CHECK(walblocks_covers(b, S, r2, why, sizeof(why)));
		CHECK(!walblocks_covers(b, S, r2 + 8, why, sizeof(why)));
		CHECK(strstr(why, "no valid continuation") != NULL);
		CHECK_EQ_STR(dump_set(b, &o), "1663/5/700/main blocks 1,2,3; 1663/5/701/main blocks 11; "
					      "1663/5/702/main blocks 12");
		walblocks_free(b);
		w.buf[2 * SEG + 5 * BLK + 8] = save;
	}

	/* a CRC error in the record crossing 0 -> 1 shows when combining */
	w.buf[SEG + 40 + 50] ^= 1;
	b = combine(&w, 0, 2, -1, 0, UINT64_MAX);
	CHECK(walblocks_covers(b, S, r1, why, sizeof(why)));
	CHECK(!walblocks_covers(b, S, r1 + 8, why, sizeof(why)));
	CHECK(strstr(why, "CRC") != NULL);
	walblocks_free(b);
	free(w.buf);
}

/* XLP_FIRST_IS_OVERWRITE_CONTRECORD, inside a segment and at a segment's start. */
static void test_overwrite(int k)
{
	WalW w;
	Str o;
	WalSegInfo info;
	TRec t;
	char why[256];
	uint64_t S = 0x7000000;
	uint8_t m[16] = {0};
	ww_init(&w, magics[k], S, 2);
	ww_heap(&w, 800, 0, 1);
	t = (TRec){.rmid = 10, .n = 1, .main_len = 12000};
	t.b[0] = (TBlk){.id = 0, .rel = 801, .blk = 1};
	ww_abandon(&w, &t);
	ww_main(&w, 0, 0xD0, m, 16); /* XLOG_OVERWRITE_CONTRECORD */
	ww_heap(&w, 800, 0, 2);
	ww_pad_to(&w, S + SEG - 64);
	t.b[0].blk = 2;
	ww_abandon(&w, &t); /* its rest never comes: segment 1 starts over */
	ww_main(&w, 0, 0xD0, m, 16);
	ww_heap(&w, 800, 0, 3);
	uint64_t end = w.pos;
	CHECK_EQ_STR(seg_dump(&w, 0, &info, &o), "1663/5/800/main blocks 1,2");
	CHECK(info.has_tail);
	CHECK_EQ_INT(info.unsummarized_lsn, UINT64_MAX);
	CHECK_EQ_STR(seg_dump(&w, 1, &info, &o), "1663/5/800/main blocks 3");
	CHECK(!info.has_head);
	WalBlockSet *b = combine(&w, 0, 2, -1, 0, UINT64_MAX);
	CHECK_EQ_STR(dump_set(b, &o), "1663/5/800/main blocks 1,2,3");
	CHECK(walblocks_covers(b, S, end, why, sizeof(why)));
	walblocks_free(b);
	free(w.buf);
}

/* A record that crosses into the next segment is an XLOG_SWITCH: that segment is padding. */
static void test_switch_across(int k)
{
	WalW w;
	Str o;
	char why[256];
	uint64_t S = 0x9000000;
	ww_init(&w, magics[k], S, 3);
	ww_heap(&w, 900, 0, 1);
	ww_pad_to(&w, S + SEG - 8);
	ww_main(&w, 0, 0x40, NULL, 0); /* 8 bytes here, 16 in segment 1 */
	w.pos = S + 2 * SEG;
	ww_heap(&w, 900, 0, 2);
	WalBlockSet *b = combine(&w, 0, 3, -1, 0, UINT64_MAX);
	CHECK_EQ_STR(dump_set(b, &o), "1663/5/900/main blocks 1,2");
	CHECK(walblocks_covers(b, S, S + 2 * SEG, why, sizeof(why)));
	walblocks_free(b);
	free(w.buf);
}

/* A record crossing segments with more than WALSUM_BOUNDARY_CAP bytes in one: unsummarized boundary. */
static void test_cap(int k)
{
	WalW w;
	Str o;
	WalSegInfo info;
	char why[256];
	uint64_t S = 0x8000000;
	wseg = 2 * SEG;
	ww_init(&w, magics[k], S, 2); /* two 2 MiB segments */
	ww_heap(&w, 1400, 0, 1);
	ww_pad_to(&w, S + 200000);
	TRec t = {.rmid = 10, .n = 1, .main_len = 2000000};
	t.b[0] = (TBlk){.id = 0, .rel = 1401, .blk = 1};
	uint64_t big = ww_rec(&w, &t);
	ww_heap(&w, 1400, 0, 2);
	uint64_t end = w.pos;
	WalSegSummary *s0 = NULL, *s1 = NULL;
	WalBlockSet *b = NULL;
	CHECK_EQ_INT(walsum_segment(w.buf, 2 * SEG, S, 2 * SEG, 0, 0, UINT64_MAX, &s0), 0);
	CHECK_EQ_INT(walsum_segment(w.buf + 2 * SEG, 2 * SEG, S + 2 * SEG, 2 * SEG, 0, 0, UINT64_MAX, &s1), 0);
	walsum_info(s0, &info);
	CHECK(info.has_tail && info.end_lsn == big && info.unsummarized_lsn == UINT64_MAX);
	CHECK_EQ_INT(walblocks_new(&b), 0);
	CHECK_EQ_INT(walblocks_add(b, s0), 0);
	CHECK_EQ_INT(walblocks_add(b, s1), 0);
	CHECK_EQ_STR(dump_set(b, &o), "1663/5/1400/main blocks 1,2");
	CHECK(walblocks_covers(b, S, big, why, sizeof(why)));
	CHECK(!walblocks_covers(b, S, end, why, sizeof(why)));
	CHECK(strstr(why, "longer than 1048576 bytes") != NULL);
	walblocks_free(b);
	walsum_free(s0);
	walsum_free(s1);
	free(w.buf);
	wseg = SEG;
}

/*
 * Combining per-segment tables gives the table of one sequential pass, where
 * a limit that is not lower than the one before removes nothing.
 */
static void test_merge_order(int k)
{
	WalW w;
	Str o;
	uint8_t m[20];
	char why[128];
	uint64_t S = 0x3000000;
	ww_init(&w, magics[k], S, 2);
	/* rel 1300: created (limit 0) in 0; blocks in 1; dropped (limit 0 again) in 1: blocks stay */
	st32(m, SPC), st32(m + 4, DB), st32(m + 8, 1300), st32(m + 12, 0);
	ww_main(&w, 2, 0x11, m, 16);
	ww_heap(&w, 1300, 0, 0);
	/* rel 1301: blocks 10, 20 in 0; in 1: 30, truncate to 15, 40: limit 15, blocks 10, 40 */
	ww_heap(&w, 1301, 0, 10);
	ww_heap(&w, 1301, 0, 20);
	/* rel 1302: truncate to 5, block 8 in 0; in 1: 9, truncate to 7 (no effect), 12 */
	st32(m, 5), st32(m + 4, SPC), st32(m + 8, DB), st32(m + 12, 1302), st32(m + 16, 1);
	ww_main(&w, 2, 0x21, m, 20);
	ww_heap(&w, 1302, 0, 8);
	ww_pad_to(&w, S + SEG + 40);
	ww_heap(&w, 1300, 0, 5);
	ww_heap(&w, 1300, 0, 6);
	uint8_t c[40] = {0};
	st32(c + 8, 4), st32(c + 12, 1), st32(c + 16, SPC), st32(c + 20, DB), st32(c + 24, 1300);
	ww_main(&w, 1, 0x80 | 0x01, c, 28);
	ww_heap(&w, 1301, 0, 30);
	st32(m, 15), st32(m + 12, 1301);
	ww_main(&w, 2, 0x21, m, 20);
	ww_heap(&w, 1301, 0, 40);
	ww_heap(&w, 1302, 0, 9);
	st32(m, 7), st32(m + 12, 1302);
	ww_main(&w, 2, 0x21, m, 20);
	ww_heap(&w, 1302, 0, 12);
	/* segment 1 alone */
	CHECK_EQ_STR(seg_dump(&w, 1, NULL, &o),
		     "1663/5/1300/main limit 0; 1663/5/1300/vm limit 0; 1663/5/1300/init limit 0; "
		     "1663/5/1301/main limit 15 blocks 40; 1663/5/1302/main limit 7 blocks 12");
	/* both, whether from summaries or their serialized forms */
	for (int pass = 0; pass < 2; pass++) {
		WalBlockSet *b = NULL;
		CHECK_EQ_INT(walblocks_new(&b), 0);
		for (int i = 0; i < 2; i++) {
			WalSegSummary *s = NULL, *p = NULL;
			uint8_t *ser = NULL;
			size_t n;
			CHECK_EQ_INT(walsum_segment(w.buf + (size_t)i * SEG, SEG, S + (uint64_t)i * SEG, SEG, 0,
						    0, UINT64_MAX, &s),
				     0);
			if (pass == 1) {
				CHECK_EQ_INT(walsum_serialize(s, &ser, &n), 0);
				CHECK_EQ_INT(walsum_parse(ser, n, &p), 0);
				free(ser);
			}
			CHECK_EQ_INT(walblocks_add(b, pass ? p : s), 0);
			walsum_free(s);
			walsum_free(p);
		}
		CHECK_EQ_STR(dump_set(b, &o),
			     "1663/5/1300/main limit 0 blocks 0,5,6; 1663/5/1300/vm limit 0; "
			     "1663/5/1300/init limit 0; 1663/5/1301/main limit 15 blocks 10,40; "
			     "1663/5/1302/main limit 5 blocks 8,9,12");
		CHECK(walblocks_covers(b, S, w.pos, why, sizeof(why)));
		walblocks_free(b);
	}
	free(w.buf);
}

static void test_serialize(int k)
{
	WalW w;
	static Str o1, o2;
	TRec t;
	uint64_t S = 0x5000000;
	ww_init(&w, magics[k], S, 3);
	for (uint32_t i = 0; i < 5000; i++)
		ww_heap(&w, 1000 + i % 7, (uint8_t)(i % 3 == 0 ? 2 : 0), i * 37 % 70000);
	ww_pad_to(&w, S + SEG - 48);
	t = (TRec){.rmid = 10, .n = 1, .main_len = 3000};
	t.b[0] = (TBlk){.id = 0, .rel = 1100, .blk = 11};
	ww_rec(&w, &t);
	uint8_t m[20];
	st32(m, 100), st32(m + 4, SPC), st32(m + 8, DB), st32(m + 12, 1001), st32(m + 16, 3);
	ww_main(&w, 2, 0x21, m, 20);
	ww_pad_to(&w, S + 2 * SEG - 40);
	ww_rec(&w, &t);
	ww_heap(&w, 1000, 0, 1);

	WalBlockSet *a = NULL, *b = NULL;
	CHECK_EQ_INT(walblocks_new(&a), 0);
	CHECK_EQ_INT(walblocks_new(&b), 0);
	for (int i = 0; i < 3; i++) {
		WalSegSummary *s = NULL, *p = NULL;
		uint8_t *ser = NULL, *ser2 = NULL;
		size_t n = 0, n2 = 0;
		WalSegInfo i1, i2;
		CHECK_EQ_INT(walsum_segment(w.buf + (size_t)i * SEG, SEG, S + (uint64_t)i * SEG, SEG, 1, 0,
					    UINT64_MAX, &s),
			     0);
		CHECK_EQ_INT(walsum_serialize(s, &ser, &n), 0);
		CHECK_EQ_INT(walsum_parse(ser, n, &p), 0);
		walsum_info(s, &i1);
		walsum_info(p, &i2);
		CHECK(i1.end_lsn == i2.end_lsn && i1.unsummarized_lsn == i2.unsummarized_lsn &&
		      i1.has_head == i2.has_head && i1.has_tail == i2.has_tail &&
		      i1.head_continues == i2.head_continues && i1.system_id == i2.system_id &&
		      i1.n_relforks == i2.n_relforks && i1.n_records == i2.n_records &&
		      i1.pg_major == i2.pg_major && i1.tli == i2.tli && strcmp(i1.why, i2.why) == 0);
		CHECK_EQ_INT(walsum_serialize(p, &ser2, &n2), 0);
		CHECK(n == n2 && memcmp(ser, ser2, n) == 0);
		CHECK_EQ_INT(walblocks_add(a, s), 0);
		CHECK_EQ_INT(walblocks_add(b, p), 0);
		if (i == 1) { /* junk */
			WalSegSummary *x = NULL;
			uint32_t crc;
			for (size_t cut = 0; cut < n; cut += 1 + n / 37)
				CHECK_EQ_INT(walsum_parse(ser, cut, &x), -EBADMSG);
			CHECK_EQ_INT(walsum_parse(ser, n - 1, &x), -EBADMSG);
			for (size_t pos = 0; pos < n; pos += 1 + n / 53) {
				ser[pos] ^= 0x10;
				CHECK_EQ_INT(walsum_parse(ser, n, &x), -EBADMSG);
				ser[pos] ^= 0x10;
			}
			st32(ser + 8, 2); /* a newer version, its preamble intact */
			crc = crc32c(ser, 12);
			st32(ser + 12, crc);
			CHECK_EQ_INT(walsum_parse(ser, n, &x), -EPROTONOSUPPORT);
			CHECK(x == NULL);
		}
		free(ser);
		free(ser2);
		walsum_free(s);
		walsum_free(p);
	}
	CHECK_EQ_STR(dump_set(a, &o1), dump_set(b, &o2));
	CHECK(strstr(o1.s, "1663/5/1001/main limit 100") != NULL);
	CHECK(strstr(o1.s, "1663/5/1001/vm limit 1") != NULL);
	CHECK(strstr(o1.s, "1663/5/1100/main blocks 11") != NULL);
	char why[128];
	CHECK(walblocks_covers(b, S, w.pos, why, sizeof(why)));
	walblocks_free(a);
	walblocks_free(b);
	free(w.buf);
}

/* walblocks_file: limits, chunks, the bitmap form. */
static void test_file_bits(void)
{
	WalW w;
	uint8_t m[20];
	uint64_t S = 0x1000000;
	ww_init(&w, 0xD116, S, 1);
	for (uint32_t i = 0; i < 6000; i++) /* 6000 blocks in one chunk: a bitmap */
		ww_heap(&w, 1200, 0, 131072 + i * 2);
	ww_heap(&w, 1200, 0, 3);
	ww_heap(&w, 1201, 0, 10);
	st32(m, 131072 + 100), st32(m + 4, SPC), st32(m + 8, DB), st32(m + 12, 1200), st32(m + 16, 1);
	ww_main(&w, 2, 0x21, m, 20); /* truncate 1200 main to 131172 */
	ww_heap(&w, 1200, 0, 131072 + 5000);
	WalBlockSet *b = combine(&w, 0, 1, -1, 0, UINT64_MAX);
	static uint8_t bits[131072 / 8];
	WalRelFork rf = {SPC, DB, 1200, 0};
	CHECK_EQ_INT(walblocks_file(b, &rf, 0, 131072, bits), 0);
	CHECK_EQ_INT(bits[0], 0x08);
	CHECK_EQ_INT(bits[1], 0);
	CHECK_EQ_INT(walblocks_file(b, &rf, 1, 131072, bits), 0);
	CHECK_EQ_INT(bits[0], 0x55); /* 0,2,4,6 */
	CHECK_EQ_INT(bits[12], 0xF5); /* 96, 98, then the limit 100.. */
	CHECK_EQ_INT(bits[13], 0xff);
	CHECK_EQ_INT(bits[16383], 0xff);
	CHECK_EQ_INT(walblocks_file(b, &rf, 0, 4, bits), 0);
	CHECK_EQ_INT(bits[0], 0x08);
	CHECK_EQ_INT(walblocks_file(b, &rf, 2, 10, bits), 1);
	rf.fork = 1;
	CHECK_EQ_INT(walblocks_file(b, &rf, 0, 10, bits), 1);
	rf = (WalRelFork){SPC, DB, 1202, 0};
	CHECK_EQ_INT(walblocks_file(b, &rf, 0, 10, bits), 0);
	CHECK_EQ_INT(bits[0] | bits[1], 0);
	CHECK_EQ_INT(walblocks_file(b, &rf, 0, 131073, bits), -EINVAL);
	walblocks_free(b);
	free(w.buf);
}

static void test_args(void)
{
	static uint8_t buf[SEG];
	WalSegSummary *s = NULL;
	CHECK_EQ_INT(walsum_segment(buf, SEG - 1, 0, SEG, 0, 0, UINT64_MAX, &s), -EINVAL);
	CHECK_EQ_INT(walsum_segment(buf, SEG, 4096, SEG, 0, 0, UINT64_MAX, &s), -EINVAL);
	CHECK_EQ_INT(walsum_segment(buf, SEG, 0, SEG + 1, 0, 0, UINT64_MAX, &s), -EINVAL);
	CHECK_EQ_INT(walsum_segment(buf, SEG, 0, SEG, 0, 5, 4, &s), -EINVAL);
	CHECK(s == NULL);
	CHECK(walsum_free(NULL) == NULL);
	CHECK(walblocks_free(NULL) == NULL);
}

/* Synthetic but typical WAL: small records with one or two blocks, some full-page images. */
static void bench(void)
{
	const uint32_t SZ = 16u << 20;
	uint8_t *seg = calloc(1, SZ), *out;
	WalW w = {.buf = seg, .start = 0x10000000, .pos = 0x10000000, .size = SZ, .magic = 0xD116,
		  .tli = 1, .sysid = 1};
	wseg = SZ;
	size_t cap = ZSTD_compressBound(SZ);
	struct timespec t0, t1, t2;
	uint32_t i = 0;
	WalSegSummary *s = NULL;
	unsigned char md[32];
	WalSegInfo info;
	out = malloc(cap);
	while (w.pos < w.start + SZ - 20000) {
		TRec t = {.rmid = 10, .info = 0x00, .n = 1 + i % 2, .main_len = 3};
		t.b[0] = (TBlk){.id = 0, .rel = 16384 + i % 5, .blk = (i * 7919) % 20000, .data_len = 60};
		t.b[1] = (TBlk){.id = 1, .rel = 16390, .blk = i % 300, .data_len = 16};
		if (i % 50 == 0)
			t.b[0].image = true, t.b[0].bimg_len = 8192 - 2000, t.b[0].hole_off = 400,
			t.b[0].bimg_info = 0x03;
		ww_rec(&w, &t);
		i++;
	}
	wseg = SEG;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int n_runs = 5;
	for (int r = 0; r < n_runs; r++) {
		walsum_segment(seg, SZ, w.start, SZ, 0, 0, UINT64_MAX, &s);
		if (r < n_runs - 1)
			s = walsum_free(s);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	walsum_info(s, &info);
	walsum_free(s);
	size_t z = ZSTD_compress(out, cap, seg, SZ, 3);
	SHA256(seg, SZ, md);
	clock_gettime(CLOCK_MONOTONIC, &t2);
	double sum_ms = ((t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6) / n_runs;
	double zs_ms = (t2.tv_sec - t1.tv_sec) * 1e3 + (t2.tv_nsec - t1.tv_nsec) / 1e6;
	printf("bench: %" PRIu64 " records (%u written) in 16 MiB: summary %.2f ms, zstd-3 + sha256 %.2f ms "
	       "(%.1f%%), %zu bytes compressed, %s\n",
	       info.n_records, i, sum_ms, zs_ms, 100 * sum_ms / zs_ms, z, info.why);
	free(out);
	free(seg);
}

int main(int argc, char **argv)
{
	recbuf = malloc(2u << 20);
	test_vm_length();
	test_args();
	test_magic();
	test_file_bits();
	for (int k = 0; k < (int)ELEMENTSOF(magics); k++) {
		test_blockrefs(k);
		test_smgr(k);
		test_dbase(k);
		test_xact(k);
		test_unsummarized(k);
		test_end_and_switch(k);
		test_spanning(k);
		test_overwrite(k);
		test_switch_across(k);
		test_serialize(k);
		test_merge_order(k);
		test_cap(k);
	}
	if (argc > 1 && strcmp(argv[1], "-v") == 0)
		bench();
	free(recbuf);
	return test_finish();
}
