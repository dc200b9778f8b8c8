/* Unit tests for store/chunk.h: ids, hashing, zero detection, the codec. */
#include "tests/unit/test.h"

#include "common/crc32c.h"

#include "store/chunk.h"

static void check_hash_hex(const void *buf, size_t len, const char *want)
{
	ChunkId id;
	char hex[2 * PGBAKFS_CHUNK_ID_LEN + 1];
	chunk_hash(buf, len, &id);
	chunk_id_to_hex(&id, hex);
	CHECK_EQ_STR(hex, want);
}

static void test_hash(void)
{
	/* FIPS 180-2 test vectors */
	check_hash_hex("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	check_hash_hex("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	check_hash_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56,
		       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
	{
		/* one million 'a' */
		char *m = xmalloc(1000000);
		memset(m, 'a', 1000000);
		check_hash_hex(m, 1000000,
			       "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
		free(m);
	}

	ChunkId a, b;
	chunk_hash("abc", 3, &a);
	chunk_hash("abd", 3, &b);
	CHECK(chunk_id_cmp(&a, &a) == 0);
	CHECK(chunk_id_cmp(&a, &b) != 0);
	CHECK((chunk_id_cmp(&a, &b) < 0) == (chunk_id_cmp(&b, &a) > 0));
	CHECK(!chunk_id_is_hole(&a));

	/* the hole id is all zeros, and is not the hash of a zero chunk */
	CHECK(chunk_id_is_hole(&chunk_id_hole));
	CHECK(buf_is_zero(chunk_id_hole.b, sizeof(chunk_id_hole.b)));
	{
		uint8_t *zeros = xcalloc(1, 16384);
		ChunkId z;
		chunk_hash(zeros, 16384, &z);
		CHECK(!chunk_id_is_hole(&z));
		free(zeros);
	}
	ChunkId almost = chunk_id_hole;
	almost.b[31] = 1;
	CHECK(!chunk_id_is_hole(&almost));
	almost = chunk_id_hole;
	almost.b[0] = 0x80;
	CHECK(!chunk_id_is_hole(&almost));
}

static void test_buf_is_zero(void)
{
	uint8_t buf[200];
	memset(buf, 0, sizeof(buf));
	CHECK(buf_is_zero(buf, 0));
	/* every length, and a single non-zero byte at every position */
	bool all_ok = true;
	for (size_t len = 1; len <= sizeof(buf); len++) {
		if (!buf_is_zero(buf, len))
			all_ok = false;
		for (size_t pos = 0; pos < len; pos++) {
			buf[pos] = 0x01;
			if (buf_is_zero(buf, len))
				all_ok = false;
			buf[pos] = 0;
		}
	}
	CHECK(all_ok);
	/* a non-zero byte just past len does not count */
	buf[17] = 0xff;
	CHECK(buf_is_zero(buf, 17));
	CHECK(!buf_is_zero(buf, 18));
	buf[17] = 0;

	uint8_t *big = xcalloc(1, 1 << 20);
	CHECK(buf_is_zero(big, 1 << 20));
	big[(1 << 20) - 1] = 0x80;
	CHECK(!buf_is_zero(big, 1 << 20));
	free(big);
}

static void test_chunk_size_valid(void)
{
	CHECK(chunk_size_valid(8192));
	CHECK(chunk_size_valid(16384));
	CHECK(chunk_size_valid(65536));
	CHECK(chunk_size_valid(8 * 1024 * 1024));
	CHECK(!chunk_size_valid(0));
	CHECK(!chunk_size_valid(1));
	CHECK(!chunk_size_valid(4096));
	CHECK(!chunk_size_valid(8193));
	CHECK(!chunk_size_valid(12288));  /* multiple of 4 KiB, not a power of two */
	CHECK(!chunk_size_valid(24576));  /* multiple of 8 KiB, not a power of two */
	CHECK(!chunk_size_valid(16 * 1024 * 1024));
	CHECK(!chunk_size_valid(1ULL << 40));
	CHECK(!chunk_size_valid(UINT64_MAX));
}

static void roundtrip(ChunkCodec *c, const uint8_t *plain, size_t len, ChunkEncoding want_enc)
{
	size_t bound = chunk_encode_bound(len), elen = 0;
	uint8_t *enc = xmalloc(bound), *out = xmalloc(len + 1), *bad = xmalloc(bound);
	ChunkEncoding e = (ChunkEncoding)99;
	ChunkId id, wrong;

	CHECK(bound >= len);
	chunk_hash(plain, len, &id);
	CHECK_EQ_INT(chunk_encode(c, &id, plain, len, enc, &elen, &e), 0);
	CHECK_EQ_INT(e, want_enc);
	CHECK(elen <= bound);
	if (want_enc == CHUNK_ENC_RAW) {
		CHECK_EQ_INT(elen, len);
		CHECK(memcmp(enc, plain, len) == 0);
	} else {
		CHECK(elen < len);
	}

	memset(out, 0xaa, len);
	CHECK_EQ_INT(chunk_decode(c, e, enc, elen, out, len, &id), 0);
	CHECK(memcmp(out, plain, len) == 0);

	/* a flipped byte anywhere: never wrong data, always -EBADMSG */
	size_t positions[] = {0, elen / 2, elen - 1};
	for (size_t i = 0; i < ELEMENTSOF(positions); i++) {
		memcpy(bad, enc, elen);
		bad[positions[i]] ^= 0x20;
		CHECK_EQ_INT(chunk_decode(c, e, bad, elen, out, len, &id), -EBADMSG);
	}
	/* wrong id */
	wrong = id;
	wrong.b[7] ^= 1;
	CHECK_EQ_INT(chunk_decode(c, e, enc, elen, out, len, &wrong), -EBADMSG);
	CHECK_EQ_INT(chunk_decode(c, e, enc, elen, out, len, &chunk_id_hole), -EBADMSG);
	/* truncated input */
	CHECK_EQ_INT(chunk_decode(c, e, enc, elen - 1, out, len, &id), -EBADMSG);
	/* plain length that does not match */
	CHECK_EQ_INT(chunk_decode(c, e, enc, elen, out, len - 1, &id), -EBADMSG);
	/* unknown encoding */
	CHECK_EQ_INT(chunk_decode(c, (ChunkEncoding)7, enc, elen, out, len, &id), -EBADMSG);

	/* the codec is still usable after errors */
	CHECK_EQ_INT(chunk_decode(c, e, enc, elen, out, len, &id), 0);
	CHECK(memcmp(out, plain, len) == 0);

	free(enc);
	free(out);
	free(bad);
}

static void test_codec(void)
{
	const size_t len = 65536;
	uint8_t *text = xmalloc(len), *rnd = xmalloc(len), *zeros = xcalloc(1, len);
	ChunkCodec *c = NULL;

	for (size_t i = 0; i < len; i++)
		text[i] = (uint8_t)("the quick brown fox jumps over the lazy dog "[i % 44] + (i / 4096));
	test_random(rnd, len);

	if (!CHECK_EQ_INT(chunk_codec_new(3, &c), 0))
		goto out;
	roundtrip(c, text, len, CHUNK_ENC_ZSTD);
	roundtrip(c, rnd, len, CHUNK_ENC_RAW);
	roundtrip(c, zeros, len, CHUNK_ENC_ZSTD);
	roundtrip(c, text, 8192, CHUNK_ENC_ZSTD);
	roundtrip(c, rnd, 100, CHUNK_ENC_RAW); /* short tail chunk */

	/* RAW and ZSTD decode each other's bytes only as damage */
	{
		size_t elen;
		ChunkEncoding e;
		ChunkId id;
		uint8_t *enc = xmalloc(chunk_encode_bound(len)), *out = xmalloc(len);
		chunk_hash(text, len, &id);
		CHECK_EQ_INT(chunk_encode(c, &id, text, len, enc, &elen, &e), 0);
		CHECK_EQ_INT(e, CHUNK_ENC_ZSTD);
		CHECK_EQ_INT(chunk_decode(c, CHUNK_ENC_RAW, enc, elen, out, len, &id), -EBADMSG);
		CHECK_EQ_INT(chunk_decode(c, CHUNK_ENC_ZSTD, text, len, out, len, &id), -EBADMSG);
		free(enc);
		free(out);
	}

	/* the CRC-32C check: right CRC decodes, a wrong one (or damage) is -EBADMSG */
	{
		size_t elen;
		ChunkEncoding e;
		ChunkId id, other;
		uint8_t *enc = xmalloc(chunk_encode_bound(len)), *out = xmalloc(len);
		chunk_hash(text, len, &id);
		chunk_hash(rnd, len, &other);
		uint32_t crc = chunk_crc(&id, text, len);
		CHECK_EQ_INT(chunk_encode(c, &id, text, len, enc, &elen, &e), 0);
		CHECK_EQ_INT(chunk_decode_crc(c, e, enc, elen, out, len, &id, crc), 0);
		CHECK(memcmp(out, text, len) == 0);
		CHECK_EQ_INT(chunk_decode_crc(c, e, enc, elen, out, len, &id, crc ^ 1), -EBADMSG);
		/* the same bytes under another id do not pass: the id is in the CRC */
		CHECK_EQ_INT(chunk_decode_crc(c, e, enc, elen, out, len, &other, crc), -EBADMSG);
		/* RAW: a flipped byte is caught by the CRC alone */
		memcpy(enc, rnd, len);
		enc[777] ^= 0x10;
		CHECK_EQ_INT(chunk_decode_crc(c, CHUNK_ENC_RAW, enc, len, out, len, &other,
					      chunk_crc(&other, rnd, len)),
			     -EBADMSG);
		/* known value (RFC 3720 B.4: 32 bytes of zeros) */
		uint8_t z[32] = {0};
		CHECK_EQ_INT(crc32c(z, sizeof(z)), 0x8A9136AA);
		/* why delta compares by SHA-256: data ending in its own CRC-32C all share one CRC */
		uint8_t a[64] = "one pg_control", b[64] = "another pg_control";
		uint32_t ca = crc32c(a, 60), cb = crc32c(b, 60);
		memcpy(a + 60, &ca, 4);
		memcpy(b + 60, &cb, 4);
		CHECK_EQ_INT(crc32c(a, 64), crc32c(b, 64));
		free(enc);
		free(out);
	}

	/* another level; codecs are independent */
	{
		ChunkCodec *c2 = NULL;
		CHECK_EQ_INT(chunk_codec_new(19, &c2), 0);
		roundtrip(c2, text, len, CHUNK_ENC_ZSTD);
		CHECK(chunk_codec_free(c2) == NULL);
	}
out:
	CHECK(chunk_codec_free(c) == NULL);
	CHECK(chunk_codec_free(NULL) == NULL);
	free(text);
	free(rnd);
	free(zeros);
}

int main(void)
{
	test_hash();
	test_buf_is_zero();
	test_chunk_size_valid();
	test_codec();
	return test_finish();
}
