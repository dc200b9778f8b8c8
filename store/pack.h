/*
 * Pack files: encoded chunks appended back to back, then a trailer listing
 * every chunk (id, offset, lengths, encoding) and a fixed-size footer, so a
 * pack describes itself and the catalog can be rebuilt from packs alone.
 *
 *   "PGBKPAK1" | chunk bytes ... | entries (52 B each) | footer (56 B)
 *   footer = n_entries u32 | reserved u32 | entries_offset u64 |
 *            SHA-256(entries) | "PGBKEND1"        (integers little-endian)
 */
#pragma once

#include "store/chunk.h"

#define PACK_HEADER_LEN 8
#define PACK_ENTRY_LEN 52
#define PACK_FOOTER_LEN 56

typedef struct PackEntry {
	ChunkId id;
	uint64_t offset;
	uint32_t elen; /* encoded length in the pack */
	uint32_t plen; /* plain length */
	uint8_t enc;   /* ChunkEncoding */
	/* in memory and in the catalog only, not in the pack: CRC-32C of the plain bytes */
	bool has_crc;
	uint32_t crc;
	/* the same: chunk_fh of the plain bytes, restore --delta's check */
	bool has_fh;
	uint8_t fh[CHUNK_FH_LEN];
} PackEntry;

typedef struct PackWriter PackWriter;

int pack_writer_new(size_t capacity, PackWriter **ret);
PackWriter *pack_writer_free(PackWriter *w);
/* Append one encoded chunk. */
int pack_writer_add(PackWriter *w, const ChunkId *id, ChunkEncoding enc, const void *data,
		    size_t elen, size_t plen);
/* The same, with the CRC-32C of the plain bytes for the catalog, and their chunk_fh (or NULL). */
int pack_writer_add_crc(PackWriter *w, const ChunkId *id, ChunkEncoding enc, const void *data,
			size_t elen, size_t plen, uint32_t crc, const uint8_t *fh);
/* Bytes so far (header + chunks) and number of chunks. */
size_t pack_writer_size(const PackWriter *w);
size_t pack_writer_count(const PackWriter *w);
const PackEntry *pack_writer_entries(const PackWriter *w);
/* True if a chunk with this id is already in the unfinished pack. */
bool pack_writer_contains(const PackWriter *w, const ChunkId *id);
/* Append trailer and footer; the returned buffer is valid until reset/free. */
int pack_writer_finish(PackWriter *w, const void **ret_buf, size_t *ret_len);
void pack_writer_reset(PackWriter *w);

/* Parse the footer (last PACK_FOOTER_LEN bytes); returns entries offset and count. */
int pack_parse_footer(const void *footer, uint64_t pack_size, uint64_t *ret_entries_off,
		      uint32_t *ret_n);
/* Parse n entries (and check their digest from the footer); malloc'd array. */
int pack_parse_entries(const void *entries, uint32_t n, const void *footer,
		       uint64_t entries_off, PackEntry **ret);

/* "packs/ab/<32 hex>.pack" for a new random pack name. */
int pack_name_new(char *buf, size_t len);
