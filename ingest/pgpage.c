#include "ingest/pgpage.h"

#include <stdlib.h>
#include <string.h>

#define N_SUMS 32
#define FNV_PRIME 16777619

static const uint32_t checksum_base_offsets[N_SUMS] = {
	0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2,
	0x83E13D2C, 0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C,
	0xF718902A, 0x0B1C9CDB, 0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979,
	0xCCA6C0B2, 0x304A0979, 0x85AA43D4, 0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E,
	0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
};

static inline uint32_t checksum_comp(uint32_t sum, uint32_t value)
{
	uint32_t tmp = sum ^ value;
	return tmp * FNV_PRIME ^ (tmp >> 17);
}

uint16_t pg_page_checksum(const uint8_t *page, uint32_t blkno)
{
	uint32_t sums[N_SUMS], words[PG_BLCKSZ / 4];
	uint32_t result = 0;

	memcpy(words, page, PG_BLCKSZ);
	memset((uint8_t *)words + 8, 0, 2); /* pd_checksum counts as zero */
	memcpy(sums, checksum_base_offsets, sizeof(sums));
	for (size_t i = 0; i < PG_BLCKSZ / (4 * N_SUMS); i++)
		for (size_t j = 0; j < N_SUMS; j++)
			sums[j] = checksum_comp(sums[j], words[i * N_SUMS + j]);
	for (int round = 0; round < 2; round++)
		for (size_t j = 0; j < N_SUMS; j++)
			sums[j] = checksum_comp(sums[j], 0);
	for (size_t j = 0; j < N_SUMS; j++)
		result ^= sums[j];
	result ^= blkno;
	return (uint16_t)(result % 65535 + 1);
}

static bool all_digits(const char *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return true;
}

/* "REL[_fsm|_vm|_init][.SEG]" */
static bool relation_file_name(const char *name, uint32_t *ret_segno)
{
	size_t n = strspn(name, "0123456789");
	const char *p = name + n;
	if (n == 0)
		return false;
	if (*p == '_') {
		if (!strncmp(p, "_fsm", 4))
			p += 4;
		else if (!strncmp(p, "_vm", 3))
			p += 3;
		else if (!strncmp(p, "_init", 5))
			p += 5;
		else
			return false;
	}
	*ret_segno = 0;
	if (*p == '.') {
		if (!all_digits(p + 1, strlen(p + 1)))
			return false;
		*ret_segno = (uint32_t)strtoul(p + 1, NULL, 10);
		return true;
	}
	return *p == '\0';
}

bool pg_path_is_relation(const char *path, uint32_t *ret_segno)
{
	const char *slash;
	if (!strncmp(path, "global/", 7))
		return relation_file_name(path + 7, ret_segno);
	if (!strncmp(path, "base/", 5)) {
		slash = strchr(path + 5, '/');
		return slash && all_digits(path + 5, (size_t)(slash - path - 5)) &&
		       relation_file_name(slash + 1, ret_segno);
	}
	if (!strncmp(path, "pg_tblspc/", 10)) {
		/* pg_tblspc/TS/PG_xx_yyyy/DB/REL */
		const char *a = strchr(path + 10, '/'), *b, *c;
		if (!a || !(b = strchr(a + 1, '/')) || strncmp(a + 1, "PG_", 3) || !(c = strchr(b + 1, '/')))
			return false;
		return all_digits(b + 1, (size_t)(c - b - 1)) && relation_file_name(c + 1, ret_segno);
	}
	return false;
}

static bool page_all_zero(const uint8_t *page);

/* "REL[_fork][.SEG]" into rel, fork, segno */
static bool relfile_name(const char *name, PgRelFile *f)
{
	const char *us = strchr(name, '_');
	if (!relation_file_name(name, &f->segno))
		return false;
	f->rel = (uint32_t)strtoul(name, NULL, 10);
	f->fork = PG_FORK_MAIN;
	if (us)
		f->fork = us[1] == 'f' ? PG_FORK_FSM : us[1] == 'v' ? PG_FORK_VM : PG_FORK_INIT;
	return f->rel != 0;
}

bool pg_path_relfile(const char *path, PgRelFile *ret)
{
	PgRelFile f = {0};
	const char *slash;
	if (!pg_path_is_relation(path, &f.segno))
		return false;
	if (!strncmp(path, "global/", 7)) {
		f.spc = PG_GLOBALTABLESPACE_OID;
		slash = path + 6;
	} else if (!strncmp(path, "base/", 5)) {
		f.spc = PG_DEFAULTTABLESPACE_OID;
		f.db = (uint32_t)strtoul(path + 5, NULL, 10);
		slash = strchr(path + 5, '/');
	} else {
		/* pg_tblspc/TS/PG_xx_yyyy/DB/REL */
		const char *b = strchr(strchr(path + 10, '/') + 1, '/');
		f.spc = (uint32_t)strtoul(path + 10, NULL, 10);
		f.db = (uint32_t)strtoul(b + 1, NULL, 10);
		slash = strchr(b + 1, '/');
	}
	if (!relfile_name(slash + 1, &f))
		return false;
	*ret = f;
	return true;
}

uint64_t pg_page_lsn(const uint8_t *page)
{
	uint32_t xlogid, xrecoff;
	memcpy(&xlogid, page, 4);
	memcpy(&xrecoff, page + 4, 4);
	return (uint64_t)xlogid << 32 | xrecoff;
}

bool pg_page_is_new(const uint8_t *page)
{
	uint16_t upper;
	memcpy(&upper, page + 14, 2);
	return upper == 0 && page_all_zero(page);
}

static bool page_all_zero(const uint8_t *page)
{
	for (size_t i = 0; i < PG_BLCKSZ; i++)
		if (page[i])
			return false;
	return true;
}

PageVerdict pg_page_verify(const uint8_t *page, uint32_t blkno, uint64_t start_lsn)
{
	uint32_t xlogid, xrecoff;
	uint16_t stored, upper;
	uint64_t lsn;

	memcpy(&upper, page + 14, 2);
	if (upper == 0 && page_all_zero(page))
		return PAGE_NEW;
	memcpy(&xlogid, page, 4);
	memcpy(&xrecoff, page + 4, 4);
	lsn = (uint64_t)xlogid << 32 | xrecoff;
	if (lsn >= start_lsn)
		return PAGE_SKIPPED;
	memcpy(&stored, page + 8, 2);
	return stored == pg_page_checksum(page, blkno) ? PAGE_OK : PAGE_BAD;
}

void page_check_init(PageCheck *pc, uint32_t segno, uint64_t start_lsn)
{
	pc->segno = segno;
	pc->offset = 0;
	pc->fill = 0;
	pc->start_lsn = start_lsn;
	pc->n_bad = 0;
}

static int page_check_one(PageCheck *pc, const uint8_t *page, PageBadFn bad, void *userdata)
{
	uint64_t block = pc->offset / PG_BLCKSZ;
	uint32_t blkno = (uint32_t)(pc->segno * (uint64_t)PG_RELSEG_BLOCKS + block);
	pc->offset += PG_BLCKSZ;
	if (pg_page_verify(page, blkno, pc->start_lsn) != PAGE_BAD)
		return 0;
	pc->n_bad++;
	return bad(block, userdata);
}

int page_check_feed(PageCheck *pc, const uint8_t *p, size_t len, PageBadFn bad, void *userdata)
{
	while (len > 0) {
		int r;
		if (pc->fill == 0 && len >= PG_BLCKSZ) {
			r = page_check_one(pc, p, bad, userdata); /* whole pages in place */
			p += PG_BLCKSZ;
			len -= PG_BLCKSZ;
		} else {
			size_t n = MIN(len, PG_BLCKSZ - pc->fill);
			memcpy(pc->page + pc->fill, p, n);
			pc->fill += n;
			p += n;
			len -= n;
			r = 0;
			if (pc->fill == PG_BLCKSZ) {
				pc->fill = 0;
				r = page_check_one(pc, pc->page, bad, userdata);
			}
		}
		if (r < 0)
			return r;
	}
	return 0;
}
