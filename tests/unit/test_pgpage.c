/*
 * ingest/pgpage.c against PostgreSQL's own checksums.
 *
 * tests/unit/pgpages-pg15.bin holds six 8 KiB pages written by PostgreSQL 15.18
 * (Debian), made once with
 *     initdb -k -D data && pg_checksums --check -D data     (0 bad checksums)
 * and then, in this order: base/1/1259 (pg_class) blocks 0, 1 and 13,
 * base/1/1249 (pg_attribute) block 55, base/1/1259_fsm block 2 and
 * base/1/1259_vm block 0. Their pd_checksum is PostgreSQL's, computed with
 * the block number, which is their block number in the file (segment 0).
 */
#include "tests/unit/test.h"
#include "ingest/pgpage.h"

#include <limits.h>

#define N_PAGES 6

static const struct {
	uint32_t blkno;
	uint64_t lsn;
	uint16_t checksum;
} fixture[N_PAGES] = {
	{0, 0x158B4C8, 15392}, {1, 0x16768B8, 16677}, {13, 0x158ACE0, 42545},
	{55, 0x150F080, 24629}, {2, 0x119DAD0, 40162}, {0, 0x158B820, 49370},
};

static uint8_t *pages; /* N_PAGES * PG_BLCKSZ */

static bool load_fixture(void)
{
	char path[PATH_MAX];
	const char *self = __FILE__, *slash = strrchr(self, '/');
	size_t len = 0;
	char *buf = NULL;

	if (!slash || self[0] != '/') {
		fprintf(stderr, "cannot locate the fixture from \"%s\"\n", self);
		return false;
	}
	test_fmt(path, sizeof(path), "%.*s/pgpages-pg15.bin", (int)(slash - self), self);
	if (!CHECK_EQ_INT(file_read_all(path, 1 << 20, &buf, &len), 0))
		return false;
	if (!CHECK_EQ_INT(len, N_PAGES * PG_BLCKSZ)) {
		free(buf);
		return false;
	}
	pages = (uint8_t *)buf;
	return true;
}

static uint16_t stored_checksum(const uint8_t *page)
{
	return (uint16_t)(page[8] | page[9] << 8);
}

static void test_checksums(void)
{
	uint8_t page[PG_BLCKSZ];

	for (int i = 0; i < N_PAGES; i++) {
		const uint8_t *p = pages + (size_t)i * PG_BLCKSZ;
		uint32_t blkno = fixture[i].blkno;
		CHECK_EQ_INT(stored_checksum(p), fixture[i].checksum);
		/* ours is PostgreSQL's */
		if (!CHECK_EQ_INT(pg_page_checksum(p, blkno), stored_checksum(p)))
			fprintf(stderr, "  page %d (block %u)\n", i, blkno);
		CHECK_EQ_INT(pg_page_verify(p, blkno, UINT64_MAX), PAGE_OK);
		CHECK(pg_page_lsn(p) == fixture[i].lsn);
		CHECK(!pg_page_is_new(p));
		/* the block number is part of it: the same page elsewhere is bad */
		CHECK(pg_page_checksum(p, blkno + 1) != stored_checksum(p));
		CHECK_EQ_INT(pg_page_verify(p, blkno + PG_RELSEG_BLOCKS, UINT64_MAX), PAGE_BAD);
		/* the stored pd_checksum itself does not count */
		memcpy(page, p, PG_BLCKSZ);
		page[8] ^= 0x5a;
		page[9] ^= 0xa5;
		CHECK_EQ_INT(pg_page_checksum(page, blkno), fixture[i].checksum);
		CHECK_EQ_INT(pg_page_verify(page, blkno, UINT64_MAX), PAGE_BAD);
	}

	/* one flipped bit anywhere else is caught (a sample of positions on every page) */
	for (int i = 0; i < N_PAGES; i++) {
		const uint8_t *p = pages + (size_t)i * PG_BLCKSZ;
		for (size_t off = 0; off < PG_BLCKSZ; off += 61) {
			if (off == 8 || off == 9)
				continue;
			memcpy(page, p, PG_BLCKSZ);
			page[off] ^= (uint8_t)(1u << (off % 8));
			if (pg_page_verify(page, fixture[i].blkno, UINT64_MAX) != PAGE_BAD) {
				CHECK(!"a flipped bit passed");
				fprintf(stderr, "  page %d, byte %zu\n", i, off);
				break;
			}
		}
		memcpy(page, p, PG_BLCKSZ);
		page[PG_BLCKSZ - 1] ^= 1;
		CHECK_EQ_INT(pg_page_verify(page, fixture[i].blkno, UINT64_MAX), PAGE_BAD);
	}
}

static void test_verify_rules(void)
{
	uint8_t page[PG_BLCKSZ];
	const uint8_t *p = pages + PG_BLCKSZ; /* block 1 */

	/* an all-zero page is new (not yet initialised), whatever the block */
	memset(page, 0, sizeof(page));
	CHECK(pg_page_is_new(page));
	CHECK_EQ_INT(pg_page_verify(page, 0, 0), PAGE_NEW);
	CHECK_EQ_INT(pg_page_verify(page, 12345, UINT64_MAX), PAGE_NEW);
	CHECK(pg_page_lsn(page) == 0);
	/* pd_upper 0 with anything else set is not new: it is checked, and fails */
	page[PG_BLCKSZ / 2] = 1;
	CHECK(!pg_page_is_new(page));
	CHECK_EQ_INT(pg_page_verify(page, 0, UINT64_MAX), PAGE_BAD);
	/* nonzero pd_upper but otherwise zero: not new either */
	memset(page, 0, sizeof(page));
	page[14] = 0x10;
	CHECK(!pg_page_is_new(page));

	/* pages at or after the backup's start LSN are WAL replay's: skipped, even if torn */
	memcpy(page, p, PG_BLCKSZ);
	page[100] ^= 0xff;
	CHECK_EQ_INT(pg_page_verify(page, 1, fixture[1].lsn), PAGE_SKIPPED);
	CHECK_EQ_INT(pg_page_verify(page, 1, fixture[1].lsn - 1), PAGE_SKIPPED);
	CHECK_EQ_INT(pg_page_verify(page, 1, fixture[1].lsn + 1), PAGE_BAD);
	CHECK_EQ_INT(pg_page_verify(p, 1, fixture[1].lsn + 1), PAGE_OK);
	/* pd_lsn: xlogid then xrecoff, each in the server's (little-endian) order */
	memset(page, 0, sizeof(page));
	page[0] = 0x16;
	page[4] = 0x48;
	page[5] = 0xD8;
	page[6] = 0x74;
	page[7] = 0xB3;
	CHECK(pg_page_lsn(page) == 0x16B374D848ULL);
}

typedef struct {
	uint64_t blocks[16];
	size_t n;
	int fail_at; /* return -EIO on this call (1-based), 0: never */
} BadList;

static int record_bad(uint64_t block, void *userdata)
{
	BadList *b = userdata;
	if (b->n < ELEMENTSOF(b->blocks))
		b->blocks[b->n] = block;
	b->n++;
	return b->fail_at && (int)b->n == b->fail_at ? -EIO : 0;
}

/* a file of 14 blocks as 1259 is: blocks 0, 1 and 13 real, the others new */
static uint8_t *make_file(size_t *ret_len)
{
	size_t len = 14 * (size_t)PG_BLCKSZ;
	uint8_t *f = xcalloc(1, len);
	memcpy(f, pages, PG_BLCKSZ);
	memcpy(f + PG_BLCKSZ, pages + PG_BLCKSZ, PG_BLCKSZ);
	memcpy(f + 13 * (size_t)PG_BLCKSZ, pages + 2 * (size_t)PG_BLCKSZ, PG_BLCKSZ);
	*ret_len = len;
	return f;
}

static void feed(PageCheck *pc, const uint8_t *f, size_t len, size_t piece, BadList *b, int *ret)
{
	*ret = 0;
	for (size_t off = 0; off < len && *ret == 0; off += piece)
		*ret = page_check_feed(pc, f + off, MIN(piece, len - off), record_bad, b);
}

static void test_page_check(void)
{
	static const size_t pieces[] = {1 << 20, PG_BLCKSZ, 1, 100, 8191, 8193, 3 * PG_BLCKSZ + 7};
	size_t len;
	uint8_t *f = make_file(&len);
	PageCheck pc;
	int r;

	for (size_t i = 0; i < ELEMENTSOF(pieces); i++) {
		BadList b = {0};
		page_check_init(&pc, 0, UINT64_MAX);
		feed(&pc, f, len, pieces[i], &b, &r);
		CHECK_EQ_INT(r, 0);
		if (!CHECK_EQ_INT(b.n, 0))
			fprintf(stderr, "  pieces of %zu\n", pieces[i]);
		CHECK_EQ_INT(pc.n_bad, 0);
	}
	/* a flipped byte in block 13 and one in block 1: both named, by block in the file */
	f[13 * (size_t)PG_BLCKSZ + 4000] ^= 0x20;
	f[PG_BLCKSZ + 77] ^= 0x01;
	for (size_t i = 0; i < ELEMENTSOF(pieces); i++) {
		BadList b = {0};
		page_check_init(&pc, 0, UINT64_MAX);
		feed(&pc, f, len, pieces[i], &b, &r);
		CHECK_EQ_INT(r, 0);
		if (CHECK_EQ_INT(b.n, 2))
			CHECK(b.blocks[0] == 1 && b.blocks[1] == 13);
		CHECK_EQ_INT(pc.n_bad, 2);
	}
	/* the segment number moves the block numbers: segment 1's pages are other blocks */
	{
		BadList b = {0};
		page_check_init(&pc, 1, UINT64_MAX);
		feed(&pc, f, len, PG_BLCKSZ, &b, &r);
		CHECK_EQ_INT(b.n, 3); /* the three real pages; new pages stay new */
		CHECK(b.blocks[0] == 0 && b.blocks[1] == 1 && b.blocks[2] == 13);
	}
	/* pages written after the start LSN are not judged */
	{
		BadList b = {0};
		page_check_init(&pc, 0, 0x1000000);
		feed(&pc, f, len, 4096, &b, &r);
		CHECK_EQ_INT(b.n, 0);
	}
	/* the callback's error stops the check and is returned */
	{
		BadList b = {.fail_at = 1};
		page_check_init(&pc, 0, UINT64_MAX);
		feed(&pc, f, len, 1000, &b, &r);
		CHECK_EQ_INT(r, -EIO);
		CHECK_EQ_INT(b.n, 1);
	}
	free(f);
}

static void test_paths(void)
{
	static const struct {
		const char *path;
		bool relation;
		uint32_t spc, db, rel, segno;
		uint8_t fork;
	} cases[] = {
		{"base/1/1259", true, 1663, 1, 1259, 0, PG_FORK_MAIN},
		{"base/16384/16385.3", true, 1663, 16384, 16385, 3, PG_FORK_MAIN},
		{"base/5/2608_fsm", true, 1663, 5, 2608, 0, PG_FORK_FSM},
		{"base/5/2608_vm.1", true, 1663, 5, 2608, 1, PG_FORK_VM},
		{"base/5/16400_init", true, 1663, 5, 16400, 0, PG_FORK_INIT},
		{"global/1262", true, 1664, 0, 1262, 0, PG_FORK_MAIN},
		{"global/1262_fsm", true, 1664, 0, 1262, 0, PG_FORK_FSM},
		{"pg_tblspc/16390/PG_15_202209061/16384/16391.12", true, 16390, 16384, 16391, 12,
		 PG_FORK_MAIN},
		{"global/pg_control", false, 0, 0, 0, 0, 0},
		{"global/pg_filenode.map", false, 0, 0, 0, 0, 0},
		{"base/1/PG_VERSION", false, 0, 0, 0, 0, 0},
		{"base/1/pg_internal.init", false, 0, 0, 0, 0, 0},
		{"base/1/1259_foo", false, 0, 0, 0, 0, 0},
		{"base/1/1259.", false, 0, 0, 0, 0, 0},
		{"base/1/1259.x", false, 0, 0, 0, 0, 0},
		{"base/x/1259", false, 0, 0, 0, 0, 0},
		{"base//1259", false, 0, 0, 0, 0, 0},
		{"base/1", false, 0, 0, 0, 0, 0},
		{"pg_wal/000000010000000000000001", false, 0, 0, 0, 0, 0},
		{"pg_tblspc/16390/16384/16391", false, 0, 0, 0, 0, 0},
		{"pg_tblspc/16390/PG_15_202209061/16391", false, 0, 0, 0, 0, 0},
		{"1259", false, 0, 0, 0, 0, 0},
		{"", false, 0, 0, 0, 0, 0},
	};
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		uint32_t segno = 999;
		PgRelFile f = {0};
		bool is = pg_path_is_relation(cases[i].path, &segno);
		if (!CHECK(is == cases[i].relation)) {
			fprintf(stderr, "  \"%s\"\n", cases[i].path);
			continue;
		}
		CHECK(pg_path_relfile(cases[i].path, &f) == cases[i].relation);
		if (!is)
			continue;
		CHECK_EQ_INT(segno, cases[i].segno);
		if (!CHECK(f.spc == cases[i].spc && f.db == cases[i].db && f.rel == cases[i].rel &&
			   f.fork == cases[i].fork && f.segno == cases[i].segno))
			fprintf(stderr, "  \"%s\": %u/%u/%u fork %u seg %u\n", cases[i].path, f.spc,
				f.db, f.rel, f.fork, f.segno);
	}
}

int main(void)
{
	if (!load_fixture())
		return test_finish();
	test_checksums();
	test_verify_rules();
	test_page_check();
	test_paths();
	free(pages);
	return test_finish();
}
