/*
 * The WAL archive: PostgreSQL's WAL files (segments, .partial segments,
 * timeline .history files, backup .backup files) kept as one object each,
 * "wal/<timeline, 8 hex>/<name>", compressed and checked by SHA-256.
 * The store layer sees only names and bytes; it knows nothing of LSNs beyond
 * the arithmetic of segment names.
 *
 * Errors: 0 or -errno. Every function is safe to call from several
 * processes at once on the same repository: pushes and deletes of one name
 * are serialized by a flock'ed file under the repository's locks/ directory
 * (for object storage, the cache's), and pushes from several machines by the
 * store's conditional put when it has one (STORE_FEATURE_CONDITIONAL_PUT).
 * A Repo is not shared between threads (see store/repo.h), with one
 * exception: wal_push(), wal_fetch(), wal_stat() and wal_summary_put() may run
 * in several threads at once on one open Repo (wal-push --parallel, wal-fetch
 * --prefetch: store/walspool.h). They use only its backend (whose operations
 * are thread-safe), its configuration and keys (read-only once open) and
 * their own flock'ed files; never the catalog.
 */
#pragma once

#include "common/lsn.h" /* lsn_parse, wal_segno_to_name */
#include "store/repo.h"

/* WAL file names are at most 24 hex + ".XXXXXXXX.backup" = 40 characters. */
#define PGBAKFS_WAL_NAME_MAX 40
/* Largest WAL file accepted (PostgreSQL's largest wal_segment_size, 1 GiB). */
#define PGBAKFS_WAL_FILE_MAX (1024ULL * 1024 * 1024)
#define PGBAKFS_WAL_DEFAULT_SEG_SIZE (16U * 1024 * 1024)

/*
 * Distinct error of wal_push(): the name is archived with other content.
 * ENOTUNIQ ("name not unique") is not returned by anything else in pgbakfs.
 */
#define PGBAKFS_WAL_ECONFLICT ENOTUNIQ

typedef enum {
	WAL_KIND_SEGMENT = 0, /* 000000010000000A000000FF */
	WAL_KIND_PARTIAL,     /* 000000010000000A000000FF.partial */
	WAL_KIND_HISTORY,     /* 00000002.history */
	WAL_KIND_BACKUP,      /* 000000010000000A000000FF.00000028.backup */
} WalKind;

/* "segment", "partial", "history", "backup". */
const char *wal_kind_name(WalKind k);

/* What a WAL file's name says. */
typedef struct WalName {
	WalKind kind;
	uint32_t timeline;
	/*
	 * The two halves of the segment part of the name ("log" and "seg" in
	 * PostgreSQL's XLogFileName): 0 for history files. A segment's number is
	 * log * (4 GiB / seg_size) + seg: see wal_name_segno().
	 */
	uint32_t log, seg;
} WalName;

/*
 * Parse a bare file name (no directory). -EINVAL for anything that is not
 * one of the four kinds (upper-case hex only, as PostgreSQL writes them).
 */
int wal_name_parse(const char *name, WalName *ret);
/* The segment number of a segment/partial/backup name for seg_size. */
uint64_t wal_name_segno(const WalName *n, uint32_t seg_size);
/* True for a power of two from 1 MiB to 1 GiB, as PostgreSQL allows. */
bool wal_seg_size_valid(uint64_t seg_size);

/* What the long page header at the start of a WAL segment says. */
typedef struct WalSegmentHeader {
	uint16_t magic;        /* xlp_magic */
	unsigned pg_version;   /* the PostgreSQL major version of that magic */
	bool big_endian;       /* written by a big-endian server */
	uint32_t timeline;     /* xlp_tli: of the first record on the page */
	uint64_t pageaddr;     /* xlp_pageaddr */
	uint64_t system_id;    /* xlp_sysid */
	uint32_t seg_size;     /* xlp_seg_size */
	uint32_t block_size;   /* xlp_xlog_blcksz */
} WalSegmentHeader;

/*
 * Is buf (len bytes) plausibly the WAL file its name says, before it is
 * archived? Segments and .partial segments (a .partial is a whole segment,
 * its tail unused): the size is a valid wal_segment_size and the first page
 * carries a long page header with a known magic (PostgreSQL 13 to 18), the
 * long-header flag, a timeline from 1 to the name's (the first page of a
 * timeline's first segment can still hold the parent's records),
 * xlp_pageaddr the segment's start for that size, xlp_seg_size the file's
 * size; *ret_hdr (may be NULL) gets the header. Backup history files: text
 * whose first line is "START WAL LOCATION: X/X (file <the name's segment>)".
 * Timeline history files: text lines "<parent timeline> <X/X> ..." with
 * parents below the file's timeline ('#' comments and blank lines allowed).
 * 0 when it is, -EBADMSG when not (why gets a lower-case reason naming the
 * field, e.g. "xlp_pageaddr is 0/3000000, expected 0/4000000"), -EINVAL for
 * a bad name.
 */
int wal_file_check(const char *name, const void *buf, size_t len, WalSegmentHeader *ret_hdr,
		   char *why, size_t why_len);

/*
 * The segment's system identifier against what the repository records for
 * its snapshots: 0 when a snapshot has system_id (or none has one at all),
 * -EBADMSG when snapshots have system identifiers and none is system_id (why
 * says which ones), other -errno from the catalog.
 */
int wal_system_id_check(Repo *r, uint64_t system_id, char *why, size_t why_len);

typedef enum {
	WAL_PUSH_STORED = 0,   /* the object was written */
	WAL_PUSH_EXISTED = 1,  /* the same content was archived already: nothing written */
	WAL_PUSH_REPAIRED = 2, /* the archived copy was damaged and has been replaced */
} WalPushResult;

/*
 * Archive len bytes under name (a bare file name, see wal_name_parse).
 * Idempotent: when the name is archived with the same plain SHA-256 (and the
 * archived copy verifies), returns 0 and writes nothing. When it is archived
 * with other content: -PGBAKFS_WAL_ECONFLICT (-ENOTUNIQ), and the archived
 * copy is untouched. A damaged archived copy (one wal_fetch() rejects with
 * -EBADMSG) is replaced: WAL_PUSH_REPAIRED. -EPROTONOSUPPORT when the archived
 * copy has a newer format (left alone), -EINVAL for a bad name, -EFBIG over
 * PGBAKFS_WAL_FILE_MAX, other -errno from the backend. ret_result may be NULL.
 */
int wal_push(Repo *r, const char *name, const void *buf, size_t len, WalPushResult *ret_result);

/*
 * Read an archived file back, verified: *ret_buf (malloc'd, the caller
 * frees it; non-NULL even for an empty file) and *ret_len. -ENOENT when it is
 * not archived, -EBADMSG when the object is damaged (bad header, wrong name,
 * length or SHA-256 mismatch), -EPROTONOSUPPORT for an object of a newer
 * format, -EINVAL for a bad name.
 */
int wal_fetch(Repo *r, const char *name, void **ret_buf, size_t *ret_len);

/* Header of an archived object, read without its payload. */
typedef struct WalObjectInfo {
	uint64_t plain_size;  /* length of the WAL file */
	uint64_t stored_size; /* size of the object */
	int encoding;         /* ChunkEncoding (store/chunk.h) */
	uint8_t sha256[32];   /* of the plain bytes */
} WalObjectInfo;

/* -ENOENT when not archived, -EBADMSG for a damaged header. */
int wal_stat(Repo *r, const char *name, WalObjectInfo *ret);

/* One archived file, as wal_list() reports it. */
typedef struct WalFileInfo {
	const char *name; /* bare file name, valid during the callback only */
	WalName parsed;
	uint64_t stored_size; /* bytes in the repository (object size) */
} WalFileInfo;

/* A non-zero return stops the listing and becomes wal_list()'s result. */
typedef int (*WalListFn)(const WalFileInfo *f, void *userdata);

/*
 * Call cb for every archived WAL file, sorted by timeline, then by name
 * (for one timeline that is position order: history file first, then
 * segments by number, a segment's .backup and .partial files right after it).
 * Objects under wal/ whose name is not a WAL file name, or that sit under
 * another timeline's directory, are skipped. Listing does not read objects.
 */
int wal_list(Repo *r, WalListFn cb, void *userdata);

/*
 * Remove an archived file (for retention). A missing one is not an error.
 * Serialized against wal_push() of the same name. -EINVAL for a bad name.
 */
int wal_delete(Repo *r, const char *name);

/*
 * Block-reference summaries: what the records of one archived segment touch
 * (ingest/walsummary.h builds and reads them; here they are bytes). One
 * object per segment, "walsum/<timeline>/<segment>", compressed, sealed and
 * checked like a WAL object but under its own name, so neither can pass for
 * the other. A summary is derived data: put overwrites, wal_delete() removes
 * a segment's summary with it. -EINVAL unless segment names a full segment.
 */
int wal_summary_put(Repo *r, const char *segment, const void *buf, size_t len);
/* -ENOENT when there is none, -EBADMSG when damaged, -EPROTONOSUPPORT when newer. */
int wal_summary_get(Repo *r, const char *segment, void **ret_buf, size_t *ret_len);

/* A run of segment numbers, both ends included. */
typedef struct WalRange {
	uint64_t from, to;
} WalRange;

/* What the archive holds of one timeline (for stats, show and retention). */
typedef struct WalTimeline {
	uint32_t timeline;
	/*
	 * Segment size: the plain length of the timeline's first archived
	 * segment (the archive does not need PostgreSQL to say it), or 16 MiB when
	 * the timeline has no readable segment.
	 */
	uint32_t seg_size;
	uint64_t n_files;      /* every kind */
	uint64_t stored_bytes; /* every kind */
	uint64_t n_segments;   /* full segments only: .partial files fill no gap */
	uint64_t first, last;  /* segment numbers, when n_segments > 0 */
	WalRange *gaps;        /* missing segments between first and last, ascending */
	size_t n_gaps;
} WalTimeline;

/*
 * Summarize the archive per timeline, ascending: *ret (free it with
 * wal_timelines_free) and *ret_n (0 and NULL for an empty archive). Reads one
 * object header per timeline, nothing else.
 */
int wal_timelines(Repo *r, WalTimeline **ret, size_t *ret_n);
WalTimeline *wal_timelines_free(WalTimeline *v, size_t n);
/*
 * The last segment of the unbroken run of archived segments that starts at
 * segno: recovery from segno can replay up to the end of *ret_last.
 * -ENOENT when segno itself is not archived.
 */
int wal_timeline_run(const WalTimeline *t, uint64_t segno, uint64_t *ret_last);
