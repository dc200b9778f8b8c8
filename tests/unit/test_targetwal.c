/*
 * ingest/targetwal.c targetwal_summary_add on PostgreSQL 17 WAL summary files
 * written by a tiny builder below (src/common/blkreftable.c's format): array
 * and bitmap chunks land on the right blocks of the right segment file, limit
 * blocks mark the rest of the fork, FSM entries are ignored, an empty table
 * adds nothing; every flipped bit, every truncation and each inconsistency
 * behind a correct CRC is refused with -EBADMSG and leaves the set as it was.
 */
#include "tests/unit/test.h"

#include "common/crc32c.h"
#include "ingest/targetwal.h"
#include "ingest/walsummary.h"

#define MAGIC 0x652B137Bu
#define NO_LIMIT UINT32_MAX
#define BITMAP 4096u
#define SEG_BLOCKS 131072u
#define NONE UINT32_MAX
#define CAP 32768

/* ---- summary file builder ---- */
typedef struct Brt {
	size_t len;
	uint8_t b[CAP];
} Brt;

static void brt_u32(Brt *t, uint32_t v)
{
	if (t->len + 4 > CAP)
		abort();
	put_le32(t->b + t->len, v);
	t->len += 4;
}

static void brt_u16s(Brt *t, const uint16_t *v, size_t n)
{
	if (t->len + 2 * n > CAP)
		abort();
	for (size_t i = 0; i < n; i++)
		put_le16(t->b + t->len + 2 * i, v[i]);
	t->len += 2 * n;
}

static void brt_begin(Brt *t)
{
	t->len = 0;
	brt_u32(t, MAGIC);
}

/* An entry's header and its chunk usage array; the chunks' data follow. */
static void brt_entry(Brt *t, const WalRelFork *rf, uint32_t fork, uint32_t limit,
		      uint32_t nchunks, const uint16_t *usage)
{
	brt_u32(t, rf->spc);
	brt_u32(t, rf->db);
	brt_u32(t, rf->rel);
	brt_u32(t, fork);
	brt_u32(t, limit);
	brt_u32(t, nchunks);
	brt_u16s(t, usage, nchunks);
}

/* A bitmap chunk with the n offsets of v set. */
static void brt_bitmap(Brt *t, const uint32_t *v, size_t n)
{
	uint16_t w[BITMAP] = {0};
	for (size_t i = 0; i < n; i++)
		w[v[i] / 16] |= (uint16_t)(1u << (v[i] % 16));
	brt_u16s(t, w, BITMAP);
}

/* One main-fork entry of a single array chunk holding v. */
static void brt_array(Brt *t, const WalRelFork *rf, uint32_t limit, const uint16_t *v, uint16_t n)
{
	brt_entry(t, rf, rf->fork, limit, 1, &n);
	brt_u16s(t, v, n);
}

/* Set the CRC-32C of all before the last 4 bytes. */
static void brt_crc(Brt *t)
{
	put_le32(t->b + t->len - 4, crc32c(t->b, t->len - 4));
}

/* The zero sentinel entry and the CRC. */
static void brt_end(Brt *t)
{
	uint8_t zero[24] = {0};
	if (t->len + 28 > CAP)
		abort();
	memcpy(t->b + t->len, zero, sizeof(zero));
	t->len += 28;
	brt_crc(t);
}

/* targetwal_summary_add on an exact-size heap copy, so any read past the end shows. */
static int add_copy(WalBlockSet *b, const uint8_t *buf, size_t len)
{
	uint8_t *c = malloc(len ? len : 1);
	if (!c)
		abort();
	memcpy(c, buf, len);
	int r = targetwal_summary_add(b, c, len);
	free(c);
	return r;
}

/* ---- what a set holds ---- */
static uint8_t got[SEG_BLOCKS / 8], want[SEG_BLOCKS / 8];

/*
 * walblocks_file for segment segno (nblocks) of rf returns rc and marks
 * exactly the n blocks of v (of the file) plus every one at/after from.
 */
static bool file_marks(const WalBlockSet *b, const WalRelFork *rf, uint32_t segno,
		       uint32_t nblocks, int rc, const uint32_t *v, size_t n, uint32_t from)
{
	memset(want, 0, sizeof(want));
	memset(got, 0xAA, sizeof(got));
	for (size_t i = 0; i < n; i++)
		want[v[i] / 8] |= (uint8_t)(1u << (v[i] % 8));
	for (uint32_t i = from; i < nblocks; i++)
		want[i / 8] |= (uint8_t)(1u << (i % 8));
	int r = walblocks_file(b, rf, segno, nblocks, got);
	if (r != rc) {
		fprintf(stderr, "walblocks_file(%u/%u/%u fork %u, segno %u): %d, want %d\n", rf->spc,
			rf->db, rf->rel, rf->fork, segno, r, rc);
		return false;
	}
	for (uint32_t i = 0; i < nblocks; i++)
		if ((got[i / 8] ^ want[i / 8]) & (1u << (i % 8))) {
			fprintf(stderr, "%u/%u/%u fork %u segno %u: block %u is %s\n", rf->spc, rf->db,
				rf->rel, rf->fork, segno, i, got[i / 8] & (1u << (i % 8)) ? "set" : "clear");
			return false;
		}
	return true;
}

typedef struct Dump {
	char s[4096];
	size_t len;
	size_t n_forks;
} Dump;

static int dump_fn(const WalRelFork *rf, uint32_t limit, const uint32_t *blocks, size_t n,
		   void *ud)
{
	Dump *d = ud;
	d->n_forks++;
	d->len += (size_t)snprintf(d->s + d->len, sizeof(d->s) - d->len, "%u/%u/%u/%u limit %u:",
				   rf->spc, rf->db, rf->rel, rf->fork, limit);
	for (size_t i = 0; i < n && d->len < sizeof(d->s); i++)
		d->len += (size_t)snprintf(d->s + d->len, sizeof(d->s) - d->len, " %u", blocks[i]);
	if (d->len < sizeof(d->s))
		d->len += (size_t)snprintf(d->s + d->len, sizeof(d->s) - d->len, ";");
	return d->len < sizeof(d->s) ? 0 : -ENOSPC;
}

/* Every fork of b with its limit and blocks, as text. */
static const char *dump(const WalBlockSet *b, Dump *d)
{
	d->len = 0;
	d->n_forks = 0;
	d->s[0] = 0;
	if (walblocks_foreach(b, dump_fn, d) < 0)
		snprintf(d->s, sizeof(d->s), "(foreach failed)");
	return d->s;
}

static const WalRelFork REL = {.spc = 1663, .db = 5, .rel = 16384, .fork = 0};

static WalRelFork rel(uint32_t r, uint8_t fork)
{
	return (WalRelFork){.spc = 1663, .db = 5, .rel = r, .fork = fork};
}

/* ---- accepted files ---- */

static void test_array(void)
{
	Brt t;
	WalBlockSet *b = NULL;
	WalRelFork other = rel(16385, 0);
	const uint16_t offs[] = {3, 70};
	const uint32_t blocks[] = {3, 70};

	brt_begin(&t);
	brt_array(&t, &REL, NO_LIMIT, offs, 2);
	brt_end(&t);
	if (!CHECK_EQ_INT(walblocks_new(&b), 0))
		return;
	CHECK_EQ_INT(add_copy(b, t.b, t.len), 0);
	CHECK(file_marks(b, &REL, 0, 128, 0, blocks, 2, NONE));
	CHECK(file_marks(b, &REL, 0, SEG_BLOCKS, 0, blocks, 2, NONE));
	CHECK(file_marks(b, &REL, 1, SEG_BLOCKS, 0, NULL, 0, NONE));
	CHECK(file_marks(b, &other, 0, 128, 0, NULL, 0, NONE));
	walblocks_free(b);
}

/* chunk 2 holds blocks 131072..: the file's second segment */
static void test_far_chunk(void)
{
	Brt t;
	WalBlockSet *b = NULL;
	const uint16_t usage[] = {0, 0, 1}, off = 5;
	const uint32_t blk = 5;
	Dump d;

	brt_begin(&t);
	brt_entry(&t, &REL, 0, NO_LIMIT, 3, usage);
	brt_u16s(&t, &off, 1);
	brt_end(&t);
	if (!CHECK_EQ_INT(walblocks_new(&b), 0))
		return;
	CHECK_EQ_INT(add_copy(b, t.b, t.len), 0);
	CHECK(file_marks(b, &REL, 1, 16, 0, &blk, 1, NONE));
	CHECK(file_marks(b, &REL, 1, SEG_BLOCKS, 0, &blk, 1, NONE));
	CHECK(file_marks(b, &REL, 0, SEG_BLOCKS, 0, NULL, 0, NONE));
	CHECK_EQ_STR(dump(b, &d), "1663/5/16384/0 limit 4294967295: 131077;");
	walblocks_free(b);
}

static void test_bitmap(void)
{
	Brt t;
	WalBlockSet *b = NULL;
	WalRelFork far = rel(16385, 0);
	const uint32_t bits[] = {0, 17, 65535}, far_bit = 1, far_blk = 65536 + 1;
	const uint16_t bitmap = BITMAP, far_usage[] = {0, 0, 0, BITMAP};

	brt_begin(&t);
	brt_entry(&t, &REL, 0, NO_LIMIT, 1, &bitmap);
	brt_bitmap(&t, bits, 3);
	/* a bitmap in chunk 3: blocks 196608.., the second segment's second half */
	brt_entry(&t, &far, 0, NO_LIMIT, 4, far_usage);
	brt_bitmap(&t, &far_bit, 1);
	brt_end(&t);
	if (!CHECK_EQ_INT(walblocks_new(&b), 0))
		return;
	CHECK_EQ_INT(add_copy(b, t.b, t.len), 0);
	CHECK(file_marks(b, &REL, 0, SEG_BLOCKS, 0, bits, 3, NONE));
	CHECK(file_marks(b, &REL, 0, 65536, 0, bits, 3, NONE));
	CHECK(file_marks(b, &far, 1, SEG_BLOCKS, 0, &far_blk, 1, NONE));
	CHECK(file_marks(b, &far, 0, SEG_BLOCKS, 0, NULL, 0, NONE));
	walblocks_free(b);
}

static void test_limit(void)
{
	Brt t;
	WalBlockSet *b = NULL;
	WalRelFork zero = rel(16385, 0), mixed = rel(16386, 0), dbrel = {1663, 6, 0, 0};
	WalRelFork indb = {1663, 6, 16384, 0};
	const uint16_t offs[] = {3, 12};
	const uint32_t three = 3;

	brt_begin(&t);
	brt_entry(&t, &REL, 0, 10, 0, NULL);
	brt_entry(&t, &zero, 0, 0, 0, NULL);
	brt_array(&t, &mixed, 10, offs, 2); /* blocks referenced after the truncation */
	brt_entry(&t, &dbrel, 0, 0, 0, NULL); /* relfilenode 0 at limit 0: database 6 recreated */
	brt_end(&t);
	if (!CHECK_EQ_INT(walblocks_new(&b), 0))
		return;
	CHECK_EQ_INT(add_copy(b, t.b, t.len), 0);
	CHECK(file_marks(b, &REL, 0, 20, 0, NULL, 0, 10));
	CHECK(file_marks(b, &REL, 0, 10, 0, NULL, 0, NONE));
	CHECK(file_marks(b, &REL, 1, 20, 1, NULL, 0, NONE)); /* limit before the file's first block */
	CHECK(file_marks(b, &zero, 0, 20, 1, NULL, 0, NONE));
	CHECK(file_marks(b, &mixed, 0, 20, 0, &three, 1, 10));
	CHECK(walblocks_db_recreated(b, 1663, 6));
	CHECK(!walblocks_db_recreated(b, 1663, 5));
	CHECK(file_marks(b, &indb, 0, 20, 1, NULL, 0, NONE));
	walblocks_free(b);
}

/* FSM entries are ignored; the other forks are kept apart */
static void test_forks(void)
{
	Brt t;
	WalBlockSet *b = NULL;
	WalRelFork fsm = rel(16384, 1), vm = rel(16384, 2), init = rel(16384, 3);
	const uint16_t o3 = 3, o4 = 4, o0 = 0;
	const uint32_t b4 = 4, b0 = 0;
	Dump d;

	brt_begin(&t);
	brt_array(&t, &fsm, NO_LIMIT, &o3, 1);
	brt_array(&t, &vm, NO_LIMIT, &o4, 1);
	brt_array(&t, &init, NO_LIMIT, &o0, 1);
	brt_end(&t);
	if (!CHECK_EQ_INT(walblocks_new(&b), 0))
		return;
	CHECK_EQ_INT(add_copy(b, t.b, t.len), 0);
	CHECK(file_marks(b, &fsm, 0, 16, 1, NULL, 0, NONE));
	CHECK(file_marks(b, &vm, 0, 16, 0, &b4, 1, NONE));
	CHECK(file_marks(b, &init, 0, 16, 0, &b0, 1, NONE));
	CHECK(file_marks(b, &REL, 0, 16, 0, NULL, 0, NONE));
	CHECK_EQ_STR(dump(b, &d), "1663/5/16384/2 limit 4294967295: 4;1663/5/16384/3 limit 4294967295: 0;");
	walblocks_free(b);
}

static void test_empty(void)
{
	Brt t;
	WalBlockSet *b = NULL;
	Dump d;

	brt_begin(&t);
	brt_end(&t);
	CHECK_EQ_INT(t.len, 32);
	if (!CHECK_EQ_INT(walblocks_new(&b), 0))
		return;
	CHECK_EQ_INT(add_copy(b, t.b, t.len), 0);
	CHECK_EQ_STR(dump(b, &d), "");
	CHECK_EQ_INT(d.n_forks, 0);
	CHECK(file_marks(b, &REL, 0, 16, 0, NULL, 0, NONE));
	walblocks_free(b);
}

/* ---- refused files ---- */

/* The set b already holds: relation 99, block 1 and the limit 20. */
static const WalRelFork OLD = {.spc = 1663, .db = 5, .rel = 99, .fork = 0};

/*
 * A file whose first entry is valid and would change what b holds (OLD cut
 * to limit 0, a block of REL), the rest up to the caller, then (with end)
 * the sentinel and CRC.
 */
static void bad_begin(Brt *t)
{
	const uint16_t o = 7;
	brt_begin(t);
	brt_entry(t, &OLD, 0, 0, 0, NULL);
	brt_array(t, &REL, NO_LIMIT, &o, 1);
}

/* add_copy refuses buf with -EBADMSG and b still dumps as before. */
static bool refused(WalBlockSet *b, const uint8_t *buf, size_t len, const char *before)
{
	Dump d;
	int r = add_copy(b, buf, len);
	if (r != -EBADMSG) {
		fprintf(stderr, "targetwal_summary_add of %zu bytes: %d, want -EBADMSG\n", len, r);
		return false;
	}
	if (strcmp(dump(b, &d), before) != 0) {
		fprintf(stderr, "set changed by a refused file: \"%s\", was \"%s\"\n", d.s, before);
		return false;
	}
	return true;
}

/* A valid file of a few entries (no bitmap: every bit of it is flipped). */
static void valid_file(Brt *t)
{
	const uint16_t a[] = {3, 70, 9}, usage[] = {0, 2, 0, 1}, far[] = {1, 65535, 5};
	WalRelFork vm = rel(16390, 2);
	brt_begin(t);
	brt_array(t, &REL, NO_LIMIT, a, 3);
	brt_entry(t, &OLD, 0, 40, 4, usage);
	brt_u16s(t, far, 3);
	brt_array(t, &vm, 2, a, 2);
	brt_end(t);
}

static void test_flips_and_cuts(WalBlockSet *b, const char *before)
{
	Brt t;
	size_t n_bad = 0;

	valid_file(&t);
	for (size_t i = 0; i < t.len; i++)
		for (int bit = 0; bit < 8; bit++) {
			t.b[i] ^= (uint8_t)(1u << bit);
			if (!refused(b, t.b, t.len, before) && n_bad++ == 0)
				fprintf(stderr, "byte %zu bit %d flipped: accepted\n", i, bit);
			t.b[i] ^= (uint8_t)(1u << bit);
		}
	CHECK_EQ_INT(n_bad, 0);
	for (size_t len = 0; len < t.len; len++)
		if (!refused(b, t.b, len, before) && n_bad++ == 0)
			fprintf(stderr, "cut to %zu of %zu bytes: accepted\n", len, t.len);
	CHECK_EQ_INT(n_bad, 0);
}

static void test_consistency(WalBlockSet *b, const char *before)
{
	Brt t;
	const uint16_t o = 1, big = 100, many[BITMAP + 1] = {0}, over = BITMAP + 1;
	const uint16_t bitmap = BITMAP;

	/* wrong magic */
	bad_begin(&t);
	brt_end(&t);
	put_le32(t.b, MAGIC ^ 0x100);
	brt_crc(&t);
	CHECK(refused(b, t.b, t.len, before));
	/* fork 4 */
	bad_begin(&t);
	brt_entry(&t, &REL, 4, NO_LIMIT, 1, &o);
	brt_u16s(&t, &o, 1);
	brt_end(&t);
	CHECK(refused(b, t.b, t.len, before));
	/* a chunk of 4097 entries, all of them present */
	bad_begin(&t);
	brt_entry(&t, &REL, 0, NO_LIMIT, 1, &over);
	brt_u16s(&t, many, BITMAP + 1);
	brt_end(&t);
	CHECK(refused(b, t.b, t.len, before));
	/* bytes between the sentinel and the CRC: one, then a whole entry */
	bad_begin(&t);
	brt_end(&t);
	t.b[t.len - 4] = 0;
	t.len++;
	brt_crc(&t);
	CHECK(refused(b, t.b, t.len, before));
	bad_begin(&t);
	brt_end(&t);
	t.len -= 4;
	brt_array(&t, &REL, NO_LIMIT, &o, 1);
	t.len += 4;
	brt_crc(&t);
	CHECK(refused(b, t.b, t.len, before));
	/* usage beyond the bytes left: 100 offsets, 2 given before the sentinel */
	bad_begin(&t);
	brt_entry(&t, &REL, 0, NO_LIMIT, 1, &big);
	brt_u16s(&t, &o, 1);
	brt_end(&t);
	CHECK(refused(b, t.b, t.len, before));
	/* a bitmap chunk cut short */
	bad_begin(&t);
	brt_entry(&t, &REL, 0, NO_LIMIT, 1, &bitmap);
	brt_u16s(&t, many, 100);
	brt_end(&t);
	CHECK(refused(b, t.b, t.len, before));
	/* more chunk usage values than bytes left */
	bad_begin(&t);
	brt_entry(&t, &REL, 0, NO_LIMIT, 0, NULL);
	put_le32(t.b + t.len - 4, 1000);
	brt_end(&t);
	CHECK(refused(b, t.b, t.len, before));
	/* no sentinel */
	bad_begin(&t);
	t.len += 4;
	brt_crc(&t);
	CHECK(refused(b, t.b, t.len, before));
	/* magic and CRC alone */
	brt_begin(&t);
	t.len += 4;
	brt_crc(&t);
	CHECK(refused(b, t.b, t.len, before));
}

/*
 * Usage claimed in full for every chunk a fork can have (65536 bitmaps of
 * 8 KiB: 512 MiB of blocks) with none of it there: refused before anything
 * is sized by what the file claims.
 */
static void test_claims_more(WalBlockSet *b, const char *before)
{
	size_t len = 4 + 24 + 65536 * 2 + 24 + 4;
	uint8_t *buf = calloc(1, len);
	if (!CHECK(buf != NULL))
		return;
	put_le32(buf, MAGIC);
	put_le32(buf + 4, 1663);
	put_le32(buf + 8, 5);
	put_le32(buf + 12, 16384);
	put_le32(buf + 20, NO_LIMIT);
	put_le32(buf + 24, 65536);
	for (size_t c = 0; c < 65536; c++)
		put_le16(buf + 28 + 2 * c, BITMAP);
	put_le32(buf + len - 4, crc32c(buf, len - 4));
	CHECK(refused(b, buf, len, before));
	free(buf);
}

static void test_refused(void)
{
	Brt t;
	WalBlockSet *b = NULL;
	const uint16_t o = 1;
	const uint32_t one = 1;
	char before[4096];
	Dump d;

	if (!CHECK_EQ_INT(walblocks_new(&b), 0))
		return;
	brt_begin(&t);
	brt_array(&t, &OLD, 20, &o, 1);
	brt_end(&t);
	CHECK_EQ_INT(add_copy(b, t.b, t.len), 0);
	snprintf(before, sizeof(before), "%s", dump(b, &d));
	CHECK_EQ_STR(before, "1663/5/99/0 limit 20: 1;");
	test_flips_and_cuts(b, before);
	test_consistency(b, before);
	test_claims_more(b, before);
	CHECK(file_marks(b, &OLD, 0, 32, 0, &one, 1, 20));
	CHECK(file_marks(b, &REL, 0, 32, 0, NULL, 0, NONE));
	/* the unbroken file is taken after all that */
	valid_file(&t);
	CHECK_EQ_INT(add_copy(b, t.b, t.len), 0);
	CHECK_EQ_STR(dump(b, &d), "1663/5/99/0 limit 20: 1 65537 131071 196613;"
				  "1663/5/16384/0 limit 4294967295: 3 9 70;"
				  "1663/5/16390/2 limit 2: 3 70;");
	walblocks_free(b);
}

int main(void)
{
	test_array();
	test_far_chunk();
	test_bitmap();
	test_limit();
	test_forks();
	test_empty();
	test_refused();
	return test_finish();
}
