/*
 * Chunks: fixed-size, offset-aligned pieces of a file. A chunk's id is the
 * SHA-256 of its plain bytes; the all-zero id stands for a hole (a chunk of
 * zeros, never stored). Encoded chunks are zstd frames, or the plain bytes
 * when compression does not help.
 */
#pragma once

#include "common/common.h"
#include "common/fasthash.h"

#define PGBAKFS_CHUNK_ID_LEN 32
#define PGBAKFS_CHUNK_SIZE_MIN (8 * 1024)
#define PGBAKFS_CHUNK_SIZE_MAX (8 * 1024 * 1024)

typedef struct ChunkId {
	uint8_t b[PGBAKFS_CHUNK_ID_LEN];
} ChunkId;

typedef enum {
	CHUNK_ENC_RAW = 0,
	CHUNK_ENC_ZSTD = 1,
} ChunkEncoding;

extern const ChunkId chunk_id_hole;

bool chunk_id_is_hole(const ChunkId *id);
int chunk_id_cmp(const ChunkId *a, const ChunkId *b);
/* 65-byte buffer. */
void chunk_id_to_hex(const ChunkId *id, char out[2 * PGBAKFS_CHUNK_ID_LEN + 1]);

/* True when len bytes at buf are all zero. */
bool buf_is_zero(const void *buf, size_t len);

/* SHA-256 of buf. Thread-safe. */
void chunk_hash(const void *buf, size_t len, ChunkId *ret);

/* True when size is a power of two, a multiple of 8 KiB, within the limits. */
bool chunk_size_valid(uint64_t size);

/*
 * Per-thread codec state (zstd contexts). Not shared between threads.
 */
typedef struct ChunkCodec ChunkCodec;

int chunk_codec_new(int level, ChunkCodec **ret);
ChunkCodec *chunk_codec_free(ChunkCodec *c);
/*
 * Encrypted repositories: from here on the codec's ids are HMAC-SHA-256
 * under id_key, and encoded chunks are sealed with AES-256-GCM under
 * data_key with the chunk id as associated data (store/crypt.h).
 */
void chunk_codec_set_keys(ChunkCodec *c, const uint8_t data_key[32], const uint8_t id_key[32]);
/*
 * The id of plain bytes: SHA-256, or with id_key (an encrypted repository's)
 * HMAC-SHA-256 under it. The one definition of a chunk id; the two below pick
 * the key of a codec or of a repository (repo_chunk_hash).
 */
void chunk_id_of(const uint8_t *id_key, const void *buf, size_t len, ChunkId *ret);
/* chunk_id_of with the codec's id key when it seals (chunk_codec_set_keys). */
void chunk_codec_hash(ChunkCodec *c, const void *buf, size_t len, ChunkId *ret);
/* Worst-case encoded size for plain length len. */
size_t chunk_encode_bound(size_t len);
/*
 * Encode plain bytes (whose id is id) into out (capacity >=
 * chunk_encode_bound(len)). Chooses RAW when zstd does not shrink the data.
 */
int chunk_encode(ChunkCodec *c, const ChunkId *id, const void *in, size_t len, void *out,
		 size_t *ret_len, ChunkEncoding *ret_enc);
/*
 * Decode enc bytes into out, which must hold exactly plain_len bytes, and
 * check them against id. -EBADMSG when the bytes are damaged or do not hash
 * to id: a read never returns wrong data.
 */
int chunk_decode(ChunkCodec *c, ChunkEncoding enc, const void *in, size_t in_len, void *out,
		 size_t plain_len, const ChunkId *id);
/*
 * The same for bytes sealed with another associated data than their id
 * (chunk_encode's id argument): WAL objects bind their file name that way.
 */
int chunk_decode_aad(ChunkCodec *c, ChunkEncoding enc, const void *in, size_t in_len, void *out,
		     size_t plain_len, const ChunkId *id, const ChunkId *aad);
/*
 * The fast check value of a chunk: CRC-32C over its id, then its plain bytes.
 * The id binds it to the chunk, so the bytes of another chunk never pass;
 * that matters because a plain CRC-32C is the same for every data block that
 * ends in its own CRC-32C and zeros (pg_control is one: CRC's residue).
 */
uint32_t chunk_crc(const ChunkId *id, const void *buf, size_t len);
/*
 * Decode like chunk_decode, but check the plain bytes against their
 * chunk_crc (recorded at backup) instead of the SHA-256 id: many times
 * cheaper, and as sure to catch damage; for the mount's and restore's read
 * path. -EBADMSG on a mismatch. Not for telling two valid contents apart
 * (a delta): CRC-32C is linear, so it cannot.
 */
int chunk_decode_crc(ChunkCodec *c, ChunkEncoding enc, const void *in, size_t in_len, void *out,
		     size_t plain_len, const ChunkId *id, uint32_t crc);
/*
 * The delta check value of a chunk (chunks.fh, recorded at backup beside the
 * crc): the first CHUNK_FH_LEN bytes of fasthash128 of its plain bytes keyed
 * by the first 16 bytes of its id. Unlike the CRC it tells two valid contents
 * apart (not linear), and unlike the SHA-256 id it runs at several GB/s
 * without SHA extensions. 64 bits: a changed chunk passes as unchanged with
 * probability 2^-64, and 8 fewer bytes per chunk row keep the catalog under
 * 0.2% of the data (catalogs written before keep 16 bytes; their first 8 are
 * this value).
 */
#define CHUNK_FH_LEN 8
void chunk_fh(const ChunkId *id, const void *buf, size_t len, uint8_t ret[CHUNK_FH_LEN]);
