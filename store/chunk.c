#include "store/chunk.h"
#include "store/crypt.h"

#include <openssl/crypto.h>

#include "common/crc32c.h"
#include "common/util.h"

#include <openssl/evp.h>
#include <string.h>
#include <zstd.h>

const ChunkId chunk_id_hole = {{0}};

bool chunk_id_is_hole(const ChunkId *id)
{
	return buf_is_zero(id->b, sizeof(id->b));
}

int chunk_id_cmp(const ChunkId *a, const ChunkId *b)
{
	return memcmp(a->b, b->b, sizeof(a->b));
}

void chunk_id_to_hex(const ChunkId *id, char out[2 * PGBAKFS_CHUNK_ID_LEN + 1])
{
	hex_encode(id->b, sizeof(id->b), out);
}

bool buf_is_zero(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	/* check 16 bytes by hand, then compare the buffer against itself shifted */
	size_t head = MIN(len, 16);
	for (size_t i = 0; i < head; i++)
		if (p[i])
			return false;
	return len <= 16 || memcmp(p, p + 16, len - 16) == 0;
}

void chunk_hash(const void *buf, size_t len, ChunkId *ret)
{
	unsigned int n = 0;
	/* EVP_Digest with the one-shot API is thread-safe and uses SHA-NI when present */
	PGBAKFS_CHECK(EVP_Digest(buf, len, ret->b, &n, EVP_sha256(), NULL) == 1);
	PGBAKFS_CHECK(n == PGBAKFS_CHUNK_ID_LEN);
}

bool chunk_size_valid(uint64_t size)
{
	return size >= PGBAKFS_CHUNK_SIZE_MIN && size <= PGBAKFS_CHUNK_SIZE_MAX &&
	       (size & (size - 1)) == 0;
}

struct ChunkCodec {
	ZSTD_CCtx *cctx;
	ZSTD_DCtx *dctx;
	int level;
	/* encrypted repositories: ids are HMACs, encoded chunks are sealed */
	bool sealed;
	uint8_t data_key[CRYPT_KEY_LEN];
	uint8_t id_key[CRYPT_KEY_LEN];
	uint8_t *tmp; /* the encoding before sealing, or the opened bytes */
	size_t tmp_cap;
};

int chunk_codec_new(int level, ChunkCodec **ret)
{
	ChunkCodec *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->cctx = ZSTD_createCCtx();
	c->dctx = ZSTD_createDCtx();
	c->level = level;
	if (!c->cctx || !c->dctx) {
		chunk_codec_free(c);
		return -ENOMEM;
	}
	*ret = c;
	return 0;
}

ChunkCodec *chunk_codec_free(ChunkCodec *c)
{
	if (!c)
		return NULL;
	ZSTD_freeCCtx(c->cctx);
	ZSTD_freeDCtx(c->dctx);
	OPENSSL_cleanse(c->data_key, sizeof(c->data_key));
	OPENSSL_cleanse(c->id_key, sizeof(c->id_key));
	free(c->tmp);
	free(c);
	return NULL;
}

void chunk_codec_set_keys(ChunkCodec *c, const uint8_t data_key[32], const uint8_t id_key[32])
{
	memcpy(c->data_key, data_key, sizeof(c->data_key));
	memcpy(c->id_key, id_key, sizeof(c->id_key));
	c->sealed = true;
}

void chunk_id_of(const uint8_t *id_key, const void *buf, size_t len, ChunkId *ret)
{
	if (id_key)
		crypt_hmac(id_key, buf, len, ret->b);
	else
		chunk_hash(buf, len, ret);
}

void chunk_codec_hash(ChunkCodec *c, const void *buf, size_t len, ChunkId *ret)
{
	chunk_id_of(c->sealed ? c->id_key : NULL, buf, len, ret);
}

static int tmp_reserve(ChunkCodec *c, size_t n)
{
	if (c->tmp_cap >= n)
		return 0;
	uint8_t *t = realloc(c->tmp, n);
	if (!t)
		return -ENOMEM;
	c->tmp = t;
	c->tmp_cap = n;
	return 0;
}

size_t chunk_encode_bound(size_t len)
{
	return MAX(ZSTD_compressBound(len), len) + CRYPT_OVERHEAD;
}

/*
 * Incompressible data (random bytes, already compressed files) costs zstd as
 * much time as it saves nothing: compressing random 64 KiB chunks at level 3
 * took more CPU than SHA-256. Like borg's "auto" mode, try a 4 KiB sample at
 * level 1 first (about 2% of the work) and keep the chunk plain when the
 * sample does not shrink by 1/32. PostgreSQL pages are uniform enough that
 * the first page of a chunk speaks for the rest.
 */
#define CHUNK_SAMPLE_LEN 4096

static bool sample_incompressible(ChunkCodec *c, const void *in, size_t len, void *out)
{
	size_t n;
	if (len < 4 * CHUNK_SAMPLE_LEN)
		return false;
	n = ZSTD_compressCCtx(c->cctx, out, ZSTD_compressBound(CHUNK_SAMPLE_LEN), in,
			      CHUNK_SAMPLE_LEN, 1);
	return !ZSTD_isError(n) && n > CHUNK_SAMPLE_LEN - CHUNK_SAMPLE_LEN / 32;
}

static int encode_plain(ChunkCodec *c, const void *in, size_t len, void *out, size_t *ret_len,
			ChunkEncoding *ret_enc)
{
	size_t n;
	if (sample_incompressible(c, in, len, out)) {
		memcpy(out, in, len);
		*ret_len = len;
		*ret_enc = CHUNK_ENC_RAW;
		return 0;
	}
	n = ZSTD_compressCCtx(c->cctx, out, chunk_encode_bound(len), in, len, c->level);
	if (ZSTD_isError(n))
		return -EIO;
	/* keep incompressible data plain: saves the decompression on every read */
	if (n >= len - len / 64) {
		memcpy(out, in, len);
		*ret_len = len;
		*ret_enc = CHUNK_ENC_RAW;
		return 0;
	}
	*ret_len = n;
	*ret_enc = CHUNK_ENC_ZSTD;
	return 0;
}

int chunk_encode(ChunkCodec *c, const ChunkId *id, const void *in, size_t len, void *out,
		 size_t *ret_len, ChunkEncoding *ret_enc)
{
	size_t n;
	int r;
	if (!c->sealed)
		return encode_plain(c, in, len, out, ret_len, ret_enc);
	r = tmp_reserve(c, chunk_encode_bound(len));
	if (r == 0)
		r = encode_plain(c, in, len, c->tmp, &n, ret_enc);
	if (r == 0) /* the id as associated data: a sealed chunk opens only as itself */
		r = crypt_seal(c->data_key, id->b, sizeof(id->b), c->tmp, n, out, ret_len);
	return r;
}

static int decode_only(ChunkCodec *c, ChunkEncoding enc, const void *in, size_t in_len, void *out,
		       size_t plain_len, const ChunkId *id)
{
	if (c->sealed) {
		int r = in_len < CRYPT_OVERHEAD ? -EBADMSG : tmp_reserve(c, in_len);
		if (r == 0)
			r = crypt_open(c->data_key, id->b, sizeof(id->b), in, in_len, c->tmp, &in_len);
		if (r < 0)
			return r;
		in = c->tmp;
	}
	switch (enc) {
	case CHUNK_ENC_RAW:
		if (in_len != plain_len)
			return -EBADMSG;
		memcpy(out, in, in_len);
		break;
	case CHUNK_ENC_ZSTD: {
		size_t n = ZSTD_decompressDCtx(c->dctx, out, plain_len, in, in_len);
		if (ZSTD_isError(n) || n != plain_len)
			return -EBADMSG;
		break;
	}
	default:
		return -EBADMSG;
	}
	return 0;
}

int chunk_decode(ChunkCodec *c, ChunkEncoding enc, const void *in, size_t in_len, void *out,
		 size_t plain_len, const ChunkId *id)
{
	return chunk_decode_aad(c, enc, in, in_len, out, plain_len, id, id);
}

int chunk_decode_aad(ChunkCodec *c, ChunkEncoding enc, const void *in, size_t in_len, void *out,
		     size_t plain_len, const ChunkId *id, const ChunkId *aad)
{
	ChunkId got;
	int r = decode_only(c, enc, in, in_len, out, plain_len, aad);
	if (r < 0)
		return r;
	chunk_codec_hash(c, out, plain_len, &got);
	return chunk_id_cmp(&got, id) == 0 ? 0 : -EBADMSG;
}

uint32_t chunk_crc(const ChunkId *id, const void *buf, size_t len)
{
	uint32_t crc = crc32c_update(~0u, id->b, sizeof(id->b));
	return ~crc32c_update(crc, buf, len);
}

void chunk_fh(const ChunkId *id, const void *buf, size_t len, uint8_t ret[CHUNK_FH_LEN])
{
	uint8_t h[FASTHASH_LEN];
	fasthash128(id->b, buf, len, h);
	memcpy(ret, h, CHUNK_FH_LEN);
}

int chunk_decode_crc(ChunkCodec *c, ChunkEncoding enc, const void *in, size_t in_len, void *out,
		     size_t plain_len, const ChunkId *id, uint32_t crc)
{
	int r = decode_only(c, enc, in, in_len, out, plain_len, id);
	if (r < 0)
		return r;
	return chunk_crc(id, out, plain_len) == crc ? 0 : -EBADMSG;
}
