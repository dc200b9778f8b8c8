/*
 * PostgreSQL data pages: which files hold them, and the page checksum
 * (the FNV-1a-based algorithm of src/include/storage/checksum_impl.h,
 * written here from its description).
 */
#pragma once

#include "common/common.h"

#define PG_BLCKSZ 8192
#define PG_RELSEG_BLOCKS 131072 /* blocks per 1 GiB segment */

/* Checksum of one page as block blkno (the stored pd_checksum is ignored). */
uint16_t pg_page_checksum(const uint8_t *page, uint32_t blkno);

/*
 * Is path (relative to the data directory) a relation data file whose
 * pages carry checksums? base/DB/REL[_fsm|_vm|_init][.SEG], global/REL...,
 * pg_tblspc/TS/PG_.../DB/REL... Sets *ret_segno from the ".SEG" suffix.
 */
bool pg_path_is_relation(const char *path, uint32_t *ret_segno);

#define PG_DEFAULTTABLESPACE_OID 1663
#define PG_GLOBALTABLESPACE_OID 1664
enum { PG_FORK_MAIN = 0, PG_FORK_FSM = 1, PG_FORK_VM = 2, PG_FORK_INIT = 3 };

/* A relation segment file, as WAL names its blocks. */
typedef struct PgRelFile {
	uint32_t spc, db, rel; /* tablespace (1663 base/, 1664 global/), database (0: global), relfilenode */
	uint8_t fork;          /* PG_FORK_* */
	uint32_t segno;        /* the ".N" suffix: blocks from segno * PG_RELSEG_BLOCKS */
} PgRelFile;

/* Parse a relation file's path (as pg_path_is_relation accepts): false otherwise. */
bool pg_path_relfile(const char *path, PgRelFile *ret);
/* pd_lsn of a page. */
uint64_t pg_page_lsn(const uint8_t *page);
/* An all-zero page (not initialised yet). */
bool pg_page_is_new(const uint8_t *page);

typedef enum {
	PAGE_OK,
	PAGE_NEW,     /* all zeros: not initialised yet */
	PAGE_SKIPPED, /* LSN at or after the backup's start: WAL replay rewrites it */
	PAGE_BAD,
} PageVerdict;

PageVerdict pg_page_verify(const uint8_t *page, uint32_t blkno, uint64_t start_lsn);

/*
 * Checking the pages of one relation file as its bytes stream past, in any
 * piece sizes. bad() is called with the block number within the file.
 */
typedef int (*PageBadFn)(uint64_t block, void *userdata);

typedef struct PageCheck {
	uint32_t segno;
	uint64_t offset; /* of the page being filled */
	size_t fill;
	uint64_t start_lsn;
	uint64_t n_bad;
	uint8_t page[PG_BLCKSZ];
} PageCheck;

void page_check_init(PageCheck *pc, uint32_t segno, uint64_t start_lsn);
int page_check_feed(PageCheck *pc, const uint8_t *p, size_t len, PageBadFn bad, void *userdata);
