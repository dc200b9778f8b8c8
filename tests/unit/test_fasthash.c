/*
 * fasthash128: fixed vectors (the value is part of the repository format:
 * chunks.fh), and that it tells apart what restore --delta must tell apart:
 * every single-bit flip, every swap of two 8 KiB pages of a chunk, a change
 * of key, length or padding, and two pg_control images that both carry a
 * valid CRC (which a CRC cannot tell apart).
 */
#include "test.h"
#include "common/crc32c.h"
#include "common/fasthash.h"

/* the portable loop, under another name, to compare with the SSE2 and AVX2 ones */
void fasthash128_portable(const void *key16, const void *buf, size_t len, uint8_t out[FASTHASH_LEN]);
#ifdef __SSE2__
/* the library's SSE2 path, whatever the CPU has (fasthash128: AVX2 where there is) */
void fasthash128_sse2(const void *key16, const void *buf, size_t len, uint8_t out[FASTHASH_LEN]);
#endif
#define fasthash128 fasthash128_portable
#define FASTHASH_PORTABLE
#include "../../common/fasthash.c"
#undef fasthash128

#define PAGE 8192

static void hex(const uint8_t *h, char *out)
{
	for (int i = 0; i < FASTHASH_LEN; i++)
		sprintf(out + 2 * i, "%02x", h[i]);
}

/* Deterministic filler (xorshift64*): the test's bytes, whatever the libc. */
static void fill(uint8_t *buf, size_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
	for (size_t i = 0; i < len; i++) {
		x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
		buf[i] = (uint8_t)((x * 0x2545F4914F6CDD1Dull) >> 56);
	}
}

static bool same(const uint8_t *a, const uint8_t *b)
{
	return memcmp(a, b, FASTHASH_LEN) == 0;
}

/* Pinned values: a change here changes every fh a repository recorded. */
static void test_vectors(void)
{
	static const struct {
		size_t len;
		const char *hash;
	} v[] = {
		{0, "05672ddd8cf2c107a7d064eb981031a4"},     {1, "7a1612cd50285d327ee68dff63bab2ab"},
		{63, "6d39d80614f4427a7e564146981b7b69"},    {64, "7a0aa0780b835ec724929f479bb9d02a"},
		{1000, "004e18acf1bfc07f5b36f7f5929a6b04"},  {1024, "6e1f70d2508c3a21d42d951633f0441d"},
		{8192, "9efecdb0133059833ed9e55762cf41a1"}, {65543, "9929d9b6513cc493660fa0bc06e9d4c2"},
	};
	uint8_t key[16], h[FASTHASH_LEN], hp[FASTHASH_LEN];
	char s[2 * FASTHASH_LEN + 1];
	uint8_t *buf = malloc(65543);
	if (!CHECK(buf))
		return;
	fill(key, sizeof(key), 99);
	fill(buf, 65543, 1);
	for (size_t i = 0; i < ELEMENTSOF(v); i++) {
		fasthash128(key, buf, v[i].len, h);
		hex(h, s);
		CHECK_EQ_STR(s, v[i].hash);
	}
	/* the vectorised paths and the portable one agree at every length around block edges */
	for (size_t len = 0; len <= 65543; len += len < 70 ? 1 : len < 2200 ? 61 : 4099) {
		fasthash128(key, buf, len, h);
		fasthash128_portable(key, buf, len, hp);
		if (!CHECK(same(h, hp)))
			fprintf(stderr, "len %zu\n", len);
#ifdef __SSE2__
		fasthash128_sse2(key, buf, len, hp);
		if (!CHECK(same(h, hp)))
			fprintf(stderr, "sse2, len %zu\n", len);
#endif
	}
	free(buf);
}

/* Every single-bit flip of a 4 KiB buffer, of the key, and a few in a 64 KiB chunk. */
static void test_bit_flips(void)
{
	uint8_t key[16], h0[FASTHASH_LEN], h[FASTHASH_LEN];
	uint8_t *buf = malloc(65536);
	unsigned missed = 0;
	if (!CHECK(buf))
		return;
	fill(key, sizeof(key), 7);
	fill(buf, 65536, 2);
	fasthash128(key, buf, 4096, h0);
	for (size_t bit = 0; bit < 4096 * 8; bit++) {
		buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		fasthash128(key, buf, 4096, h);
		buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		missed += same(h, h0);
	}
	CHECK_EQ_INT(missed, 0);
	for (size_t bit = 0; bit < 128; bit++) {
		key[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		fasthash128(key, buf, 4096, h);
		key[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		missed += same(h, h0);
	}
	CHECK_EQ_INT(missed, 0);
	fasthash128(key, buf, 65536, h0);
	for (size_t bit = 5; bit < 65536 * 8; bit += 4093) {
		buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		fasthash128(key, buf, 65536, h);
		buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		missed += same(h, h0);
	}
	CHECK_EQ_INT(missed, 0);
	/* an all-zero chunk (a hole is never hashed, but a zero page inside one is) */
	memset(buf, 0, 65536);
	fasthash128(key, buf, 65536, h0);
	buf[65535] = 1;
	fasthash128(key, buf, 65536, h);
	CHECK(!same(h, h0));
	free(buf);
}

/* Every pair of 8 KiB pages of a 64 KiB chunk swapped; also two pages of zeros and a copy. */
static void test_page_swaps(void)
{
	uint8_t key[16] = {0}, h0[FASTHASH_LEN], h[FASTHASH_LEN], tmp[PAGE];
	uint8_t *buf = malloc(65536);
	unsigned missed = 0;
	if (!CHECK(buf))
		return;
	fill(buf, 65536, 3);
	memset(buf + 2 * PAGE, 0, PAGE); /* a fresh page among written ones */
	fasthash128(key, buf, 65536, h0);
	for (int a = 0; a < 8; a++)
		for (int b = a + 1; b < 8; b++) {
			memcpy(tmp, buf + a * PAGE, PAGE);
			memcpy(buf + a * PAGE, buf + b * PAGE, PAGE);
			memcpy(buf + b * PAGE, tmp, PAGE);
			fasthash128(key, buf, 65536, h);
			missed += same(h, h0);
			memcpy(buf + b * PAGE, buf + a * PAGE, PAGE);
			memcpy(buf + a * PAGE, tmp, PAGE);
		}
	CHECK_EQ_INT(missed, 0);
	/* a page written twice (the old copy of a page in place of its neighbour) */
	memcpy(buf + PAGE, buf, PAGE);
	fasthash128(key, buf, 65536, h);
	CHECK(!same(h, h0));
	/* two 64-byte stripes swapped inside one 1 KiB block */
	fasthash128(key, buf, 65536, h0);
	memcpy(tmp, buf + 64, 64);
	memcpy(buf + 64, buf + 512, 64);
	memcpy(buf + 512, tmp, 64);
	fasthash128(key, buf, 65536, h);
	CHECK(!same(h, h0));
	/* the zero padding of a tail is not data: length counts */
	fasthash128(key, buf, 100, h0);
	buf[100] = 0;
	fasthash128(key, buf, 101, h);
	CHECK(!same(h, h0));
	free(buf);
}

/*
 * Two pg_control images, each with a valid CRC-32C (PostgreSQL's: over the
 * bytes before the crc field, stored after them): a CRC over the whole
 * image is the same for both (CRC's residue), the fast hash is not.
 */
static void test_pg_control(void)
{
	enum { CRC_OFF = 288, SIZE = 8192 };
	uint8_t a[SIZE] = {0}, b[SIZE] = {0}, key[16] = {0}, ha[FASTHASH_LEN], hb[FASTHASH_LEN];
	uint32_t ca, cb;
	fill(a, CRC_OFF, 11);
	memcpy(b, a, CRC_OFF);
	b[16] ^= 1; /* another checkpoint LSN */
	ca = crc32c(a, CRC_OFF), cb = crc32c(b, CRC_OFF);
	memcpy(a + CRC_OFF, &ca, 4);
	memcpy(b + CRC_OFF, &cb, 4);
	CHECK(crc32c(a, CRC_OFF + 4) == crc32c(b, CRC_OFF + 4));
	fasthash128(key, a, SIZE, ha);
	fasthash128(key, b, SIZE, hb);
	CHECK(!same(ha, hb));
}

int main(void)
{
#ifdef __x86_64__
	fprintf(stderr, "fasthash128 runs %s here\n", __builtin_cpu_supports("avx2") ? "AVX2" : "SSE2");
#endif
	test_vectors();
	test_bit_flips();
	test_page_swaps();
	test_pg_control();
	return test_finish();
}
