/*
 * PostgreSQL's log sequence numbers ("16/B374D848") and WAL segment file
 * names ("0000000100000016000000B3"): the one parser and formatter of each.
 * Pure functions of their arguments: thread-safe, no allocation.
 */
#pragma once

#include <stdint.h>

/* Long enough for "FFFFFFFF/FFFFFFFF" and its NUL. */
#define LSN_FORMAT_LEN 32
/* A segment file name without suffix ("TTTTTTTTLLLLLLLLSSSSSSSS") and its NUL. */
#define WAL_SEGMENT_NAME_LEN 25

/*
 * "X/Y" into an LSN, as PostgreSQL's pg_lsn input reads it: 1 to 8 hex digits
 * (either case) on each side of one slash, nothing before or after. -EINVAL
 * for anything else (NULL, empty, no slash, more than 32 bits a side,
 * trailing garbage); *ret is set only on success.
 */
int lsn_parse(const char *s, uint64_t *ret);
/* "%X/%X" of lsn into out. */
void lsn_format(uint64_t lsn, char out[LSN_FORMAT_LEN]);

/*
 * Segment segno holds the LSNs from segno * seg_size (seg_size a power of two
 * from 1 MiB to 1 GiB). Its name on timeline: out holds WAL_SEGMENT_NAME_LEN
 * bytes.
 */
void wal_segno_to_name(uint32_t timeline, uint64_t segno, uint32_t seg_size,
		       char out[WAL_SEGMENT_NAME_LEN]);
/*
 * The segment number of the two halves of a name's segment part ("log" and
 * "seg" in PostgreSQL's XLogFileName): log * (4 GiB / seg_size) + seg.
 */
uint64_t wal_segno_of(uint32_t log, uint32_t seg, uint32_t seg_size);
/*
 * The first 24 characters of name as a segment name: 24 upper-case hex
 * digits (as PostgreSQL writes them), a timeline other than 0. What follows
 * them (NUL, ".partial", ...) is the caller's to check. -EINVAL otherwise;
 * the ret_ values are set only on success.
 */
int wal_segment_name_parse(const char *name, uint32_t *ret_timeline, uint32_t *ret_log,
			   uint32_t *ret_seg);
