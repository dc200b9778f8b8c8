/*
 * PostgreSQL 17+ incremental BASE_BACKUP, made complete: the server sends,
 * for a relation file that changed little since the backup whose manifest
 * was uploaded, "INCREMENTAL.<name>" holding only the changed blocks. Each
 * one is materialized here against the parent snapshot's file of the same
 * path, by pg_combinebackup's rules (src/bin/pg_combinebackup/reconstruct.c),
 * so that the new snapshot is a complete data directory: chunks without a
 * new block are the parent's chunk ids (not read), chunks with one are the
 * parent's bytes with the new blocks laid over them. backup_label loses its
 * "INCREMENTAL FROM" lines, and the server's backup_manifest is rewritten to
 * list the materialized files (size, CRC-32C), so that pg_verifybackup
 * accepts it and the next incremental can upload it.
 *
 * The INCREMENTAL file format (host byte order, as the server writes it):
 * magic 0xd3ae1f0d, block count N, truncation block length T, N relative
 * block numbers (ascending), zero padding to a multiple of BLCKSZ when N > 0
 * (17 and 18 alike: GetIncrementalHeaderSize), then the N blocks.
 * The result has max(T, last block + 1) blocks: a block sent is taken from
 * the file; else, below T and within the parent, the parent's; else zeros.
 *
 * Not thread-safe: one Incr serves one backup's receiving thread.
 */
#pragma once

#include "ingest/tree.h"
#include "store/catalog.h"

#define INCR_MAGIC 0xd3ae1f0du
#define INCR_PREFIX "INCREMENTAL."

typedef struct IncrHeader {
	uint32_t n_blocks;
	uint32_t truncation_blocks;
	uint32_t *blocks;  /* n_blocks relative block numbers, strictly ascending (malloc'd) */
	size_t header_len; /* bytes before the first block */
} IncrHeader;

/*
 * Parse the header from the first len bytes of an INCREMENTAL file.
 * -EAGAIN: incomplete, *ret_need (optional) says how many bytes the header
 * takes as far as len shows; -EBADMSG: not a header this code understands
 * (bad magic, counts above relseg_blocks, block numbers not ascending or
 * past the segment, padding not zero); -ENOMEM.
 */
int incr_header_parse(const void *buf, size_t len, uint32_t blcksz, uint32_t relseg_blocks,
		      IncrHeader *ret, size_t *ret_need);
void incr_header_clear(IncrHeader *h);
/* Length in blocks of the materialized file (find_reconstructed_block_length). */
uint64_t incr_result_blocks(const IncrHeader *h);

typedef enum { INCR_FROM_FILE, INCR_FROM_PARENT, INCR_FROM_ZERO } IncrSource;
/* Where block b of the result comes from; parent_blocks: the parent's whole blocks. */
IncrSource incr_block_source(const IncrHeader *h, uint64_t parent_blocks, uint64_t b);

typedef enum {
	INCR_CHUNK_REUSE, /* the parent's chunk, by id */
	INCR_CHUNK_ZERO,  /* zeros only */
	INCR_CHUNK_BUILD, /* assembled: parent bytes (when read_parent), new blocks, zeros */
} IncrChunkKind;

typedef struct IncrChunkPlan {
	IncrChunkKind kind;
	size_t len;       /* bytes of the result in this chunk */
	bool read_parent; /* BUILD: some block comes from the parent's chunk */
	size_t parent_len; /* plain length of the parent's chunk (0: none) */
} IncrChunkPlan;

/*
 * The plan for chunk c of the result (chunk_size a multiple of blcksz), for
 * a parent file of parent_size bytes. -EINVAL if c is past the result.
 */
int incr_chunk_plan(const IncrHeader *h, uint64_t parent_size, uint32_t blcksz,
		    uint64_t chunk_size, uint64_t c, IncrChunkPlan *ret);

/*
 * CRC-32C of a file built piece by piece without reading stored chunks: a
 * running state starts at INCR_CRC_INIT; incr_crc_final() gives the CRC.
 * A stored chunk's catalog CRC covers its id and its plain bytes (store's
 * chunk_crc); a hole is len zero bytes.
 */
#define INCR_CRC_INIT 0xFFFFFFFFu
uint32_t incr_crc_add_bytes(uint32_t state, const void *buf, size_t len);
uint32_t incr_crc_add_zeros(uint32_t state, uint64_t len);
uint32_t incr_crc_add_stored(uint32_t state, const ChunkId *id, uint32_t stored_crc, size_t len);
static inline uint32_t incr_crc_final(uint32_t state) { return ~state; }

/* ---- one backup's materializer ---- */

typedef struct Incr Incr;

typedef struct IncrOptions {
	int64_t parent_rowid;    /* the parent snapshot */
	const char *parent_name; /* for messages */
	uint32_t blcksz;         /* the server's block_size */
	uint32_t relseg_blocks;  /* blocks per segment (segment_size / block_size) */
} IncrOptions;

/*
 * Loads the parent's file list. -EINVAL when the repository's chunk size is
 * not a multiple of blcksz (incremental cannot work: take a full backup).
 */
int incr_new(Repo *repo, const IncrOptions *o, Incr **ret);
/* Before the tree it is attached to. */
Incr *incr_free(Incr *in);

/*
 * The parent's backup_manifest, in pieces of at most a chunk, to cb (e.g.
 * UPLOAD_MANIFEST's copy data). -ENOENT when the parent has none; cb's
 * negative result stops and is returned.
 */
bool incr_parent_has_manifest(const Incr *in);
typedef int (*IncrSendFn)(const void *buf, size_t len, void *userdata);
int incr_parent_manifest_send(Incr *in, IncrSendFn cb, void *userdata);

/*
 * From now on, files named INCREMENTAL.* that reach t are materialized and
 * backup_label loses its INCREMENTAL FROM lines. A failure (-ENOENT: the
 * parent has no such file; -EBADMSG: a damaged incremental file) comes back
 * from the tree call that met it, with incr_error() saying what happened.
 */
void incr_attach(Incr *in, Tree *t);

/*
 * The server's backup_manifest (text, len) rewritten: entries of the
 * materialized files (and of backup_label) replaced by their real names,
 * sizes and CRC-32C, everything else kept, Manifest-Checksum recomputed.
 * -EPROTO when the text is not laid out as PostgreSQL writes manifests or
 * does not list a materialized file.
 */
int incr_rewrite_manifest(Incr *in, const char *text, size_t len, char **ret, size_t *ret_len);

/* What failed last (empty when nothing did). */
const char *incr_error(const Incr *in);
/* INCREMENTAL files materialized, and the bytes of them taken from the parent by id. */
uint64_t incr_n_files(const Incr *in);
uint64_t incr_reused_bytes(const Incr *in);
