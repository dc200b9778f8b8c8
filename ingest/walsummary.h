/*
 * Block-reference summaries of WAL: which relation blocks the records of a
 * WAL segment touch, with the limit-block rules of PostgreSQL 17's WAL
 * summarizer (src/backend/postmaster/walsummarizer.c), for PostgreSQL 14 to
 * 18 (told apart by the page magic; little-endian WAL only).
 *
 * A segment summary is computed from one segment alone (segments are
 * archived in parallel): the record that starts in it and runs past its end
 * (the "tail") and the continuation bytes at its start that belong to a
 * record begun earlier (the "head") are kept raw, up to 1 MiB each, and a
 * WalBlockSet resolves them when consecutive summaries are combined.
 *
 * Never guess: an unknown magic, a bad page header, a record that fails its
 * CRC or does not decode, wal_level=minimal, or a record flagged
 * XLR_SPECIAL_REL_UPDATE that these rules do not understand makes the WAL
 * from there on *unsummarized*; that is data in the summary, not an error.
 *
 * Block numbers assume BLCKSZ 8192. Every function is reentrant; a summary or
 * set is used by one thread at a time.
 */
#pragma once

#include "common/common.h"

#define WALSUM_VERSION 1
#define WALSUM_BOUNDARY_CAP (1u << 20) /* raw bytes kept for a head or a tail */

/* A relation fork: PostgreSQL's RelFileLocator plus ForkNumber (0 main, 1 fsm, 2 vm, 3 init). */
typedef struct WalRelFork {
	uint32_t spc, db, rel;
	uint8_t fork;
} WalRelFork;

typedef struct WalSegSummary WalSegSummary;

/*
 * Summarize one segment file. buf/len: its bytes (len == seg_size, a power of
 * two from 1 MiB to 1 GiB); seg_start_lsn: the LSN of its first byte (a
 * multiple of seg_size); tli: its timeline (from its name; pages of a higher
 * timeline are a bad page header), 0 = take it from the first page.
 * from/to (0 / UINT64_MAX = everything): only records that start at/after
 * from and end (MAXALIGNed, as PostgreSQL's EndRecPtr) at/before to are
 * counted; the others are still read and checked.
 * Returns 0 with *ret (free with walsum_free) even when part or all of the
 * segment is unsummarized, -EINVAL for bad arguments, -ENOMEM.
 */
int walsum_segment(const void *buf, size_t len, uint64_t seg_start_lsn, uint32_t seg_size,
		   uint32_t tli, uint64_t from, uint64_t to, WalSegSummary **ret);
/* Accepts and returns NULL. */
WalSegSummary *walsum_free(WalSegSummary *s);

/*
 * Serialization, stored beside the WAL object: little-endian, versioned
 * (WALSUM_VERSION), a CRC-32C over the whole. *ret is malloc'ed. parse:
 * -EBADMSG for anything truncated, corrupt or inconsistent, -EPROTONOSUPPORT
 * for a newer version, -ENOMEM.
 */
int walsum_serialize(const WalSegSummary *s, uint8_t **ret, size_t *ret_len);
int walsum_parse(const uint8_t *buf, size_t len, WalSegSummary **ret);

/* What a summary says about itself. */
typedef struct WalSegInfo {
	int pg_major;          /* 14..18; 0: unknown or big-endian magic */
	uint16_t magic;        /* xlp_magic as read little-endian */
	uint32_t tli;          /* the segment's timeline */
	uint32_t seg_size;
	uint64_t seg_start;    /* LSN of the segment's first byte */
	uint64_t system_id;    /* from the long page header; 0 if unknown */
	uint64_t end_lsn;      /* records starting in [seg_start, end_lsn) were all read
				  (the head's record aside): the end of the last whole one, or
				  the segment's end after XLOG_SWITCH / at a record boundary */
	uint64_t unsummarized_lsn; /* UINT64_MAX: nothing; else unsummarized from here on */
	bool end_of_wal;       /* a zero xl_tot_len (or a page never written) at end_lsn */
	bool switched;         /* an XLOG_SWITCH ends the segment's WAL */
	bool has_head;         /* starts with the continuation of an earlier record */
	bool head_continues;   /* ...which runs past this segment too */
	bool has_tail;         /* a record starting at end_lsn runs past the segment */
	size_t n_relforks;     /* entries in the summary's block table */
	uint64_t n_records;    /* records read whole in this segment */
	char why[160];         /* why it is unsummarized, "" if it is not */
} WalSegInfo;

void walsum_info(const WalSegSummary *s, WalSegInfo *ret);

/*
 * The changed-block set of an LSN range, built from consecutive segment
 * summaries of one system: per relation fork a limit block and the blocks
 * referenced (PostgreSQL's BlockRefTable semantics), and which LSN range the
 * set covers.
 */
typedef struct WalBlockSet WalBlockSet;

int walblocks_new(WalBlockSet **ret);
/* Accepts and returns NULL. */
WalBlockSet *walblocks_free(WalBlockSet *b);

/*
 * Add a segment summary; summaries come in ascending segment order (-EINVAL
 * otherwise, or for another segment size; nothing changes then). A record
 * crossing from the previous summary into this one is decoded here, with the
 * same rules and CRC check. Coverage ends, with a reason, at a missing
 * segment, an unresolvable boundary (over the cap, no continuation, CRC), a
 * prev-link or timeline that does not follow, another system identifier or
 * magic, the end of WAL, or an unsummarized part; the blocks of later
 * summaries are still added (a superset is safe). A timeline may go up between
 * segments (the caller follows the timeline history). -ENOMEM.
 */
int walblocks_add(WalBlockSet *b, const WalSegSummary *s);
/*
 * Does the set hold every record that starts in [from, to)? If not, why says
 * why in one line (lower case, no final period).
 */
bool walblocks_covers(const WalBlockSet *b, uint64_t from, uint64_t to, char *why, size_t why_len);
/* Was the database (spc, db) created or dropped in the range (limit 0 on relfilenode 0)? */
bool walblocks_db_recreated(const WalBlockSet *b, uint32_t spc, uint32_t db);
/*
 * For one relation segment file (segno: its ".N" suffix; nblocks <= 131072 of
 * it exist): set in changed (nblocks bits, LSB first; block i of the file is
 * block segno * 131072 + i of the fork) every block that must be read: those
 * referenced and every one at/after the fork's limit. Returns 1 when the whole
 * file must be read (its database recreated, its limit at or before the
 * file's first block, or an FSM fork, which WAL does not track), 0 otherwise,
 * -EINVAL for bad arguments.
 */
int walblocks_file(const WalBlockSet *b, const WalRelFork *rf, uint32_t segno, uint32_t nblocks,
		   uint8_t *changed);
/*
 * Call fn for every relation fork, sorted by (spc, db, rel, fork), with its
 * limit (UINT32_MAX = none) and its sorted referenced blocks (valid during the
 * call). Stops at the first non-zero return of fn and returns it; -ENOMEM.
 */
int walblocks_foreach(const WalBlockSet *b,
		      int (*fn)(const WalRelFork *rf, uint32_t limit, const uint32_t *blocks,
				size_t n, void *ud),
		      void *ud);

/* A block reference or limit from elsewhere (the server's own summaries). */
typedef struct WalBlockRef {
	WalRelFork rf;
	uint32_t block; /* the block, or the limit */
	bool is_limit;  /* rel 0 with limit 0: the database (spc, db) recreated */
} WalBlockRef;

/*
 * Add n entries in order (as pg_wal_summary_contents gives them, summary by
 * summary): they change the blocks, not the coverage. FSM entries are
 * ignored, as the summarizer ignores them. -EINVAL for a bad fork, -ENOMEM.
 */
int walblocks_add_refs(WalBlockSet *b, const WalBlockRef *v, size_t n);

/* One segment file's bytes and the LSN of its first byte. */
typedef struct WalSegBuf {
	const void *buf;
	size_t len;
	uint64_t seg_start_lsn;
} WalSegBuf;

/*
 * The precise set of [from, to) on raw WAL: walsum_segment with from/to on
 * each of segs (consecutive, ascending) and walblocks_add, as
 * pg_wal_summary_contents(tli, from, to) reports it on PostgreSQL 17.
 * Check walblocks_covers(*ret, from, to) before trusting it.
 */
int walsum_range(const WalSegBuf *segs, size_t n_segs, uint32_t seg_size, uint32_t tli,
		 uint64_t from, uint64_t to, WalBlockSet **ret);

/* PostgreSQL's visibilitymap_truncation_length: VM blocks left when the heap has nheapblocks. */
uint32_t walsum_vm_truncation_length(uint32_t nheapblocks);
