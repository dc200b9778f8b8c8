#include "common/fasthash.h"

#include <string.h>
#if defined(__SSE2__) && !defined(FASTHASH_PORTABLE)
#define FASTHASH_SSE2
#include <emmintrin.h>
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FASTHASH_AVX2
#include <immintrin.h>
#endif
#endif

/*
 * Shape (XXH3's accumulate/scramble, our own constants and keying):
 *
 *   - 8 lanes of 64-bit accumulators, started from the key and the
 *     hexadecimal digits of pi (PI[], Blowfish's P-array, "nothing up my
 *     sleeve");
 *   - each 64-byte stripe: lane i reads word v = bytes [8i, 8i+8) (little
 *     endian), x = v ^ secret(n, i) where n is the stripe's place in its
 *     1 KiB block, adds lo32(x) * hi32(x) to its own accumulator and v to
 *     its neighbour's (i ^ 1). secret(n, i) = K[i] + n * GOLD differs for
 *     every stripe of a block, so stripes swapped inside a block change the
 *     products;
 *   - after each 1 KiB block every lane is scrambled (xorshift 47, xor a
 *     keyed constant, multiply by an odd 32-bit prime): a bijection that is
 *     not linear, so blocks (and 8 KiB pages: 8 blocks) are order dependent;
 *   - the tail (len % 64 bytes) is a last stripe padded with zeros; the
 *     length goes into the finalisation, so padding cannot alias;
 *   - two 64-bit halves each fold the 8 lanes pairwise through a 64x64->128
 *     multiply (high ^ low), with different constants, plus the length,
 *     then an avalanche (xorshift-multiply-xorshift).
 *
 * Every update of a lane is a bijection of that lane for fixed data (add;
 * xorshift, xor, multiply by an odd number), and a single changed word
 * changes its neighbour's lane by v' - v != 0: so any single-word change
 * (a flipped bit) always changes the state before finalisation; only the
 * final fold (not injective) can collide, at random-function odds.
 *
 * The loop is one 32x32->64 multiply and two adds per word: with SSE2 (every
 * x86-64) two lanes per instruction (pmuludq, as XXH3's SSE2 path), with
 * AVX2 (chosen at run time) four, giving the same value as the portable
 * loop, which the compilers do not vectorise. AVX2 halves the instructions:
 * restore --delta hashes every byte of the target, and the SSE2 loop was a
 * fifth of its CPU.
 */

#define LANES 8
#define STRIPE 64
#define STRIPES_PER_BLOCK 16

static const uint64_t PI[2 * LANES] = {
	0x243F6A8885A308D3ull, 0x13198A2E03707344ull, 0xA4093822299F31D0ull, 0x082EFA98EC4E6C89ull,
	0x452821E638D01377ull, 0xBE5466CF34E90C6Cull, 0xC0AC29B7C97C50DDull, 0x3F84D5B5B5470917ull,
	0x9216D5D98979FB1Bull, 0xD1310BA698DFB5ACull, 0x2FFD72DBD01ADFB7ull, 0xB8E1AFED6A267E96ull,
	0xBA7C9045F12C7F99ull, 0x24A19947B3916CF7ull, 0x0801F2E2858EFC16ull, 0x636920D871574E69ull,
};
#define GOLD 0x9E3779B97F4A7C15ull  /* 2^64 / golden ratio */
#define PRIME32 0x9E3779B1u         /* xxHash's PRIME32_1 */
#define PRIME64_1 0x9E3779B185EBCA87ull
#define PRIME64_2 0xC2B2AE3D27D4EB4Full
#define AVALANCHE 0x165667919E3779F9ull

static inline uint64_t load_le64(const uint8_t *p)
{
	return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
	       (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 |
	       (uint64_t)p[7] << 56;
}

static inline void store_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint64_t fold64(uint64_t a, uint64_t b)
{
#ifdef __SIZEOF_INT128__
	__extension__ unsigned __int128 m = (unsigned __int128)a * b;
	return (uint64_t)m ^ (uint64_t)(m >> 64);
#else
	uint64_t al = (uint32_t)a, ah = a >> 32, bl = (uint32_t)b, bh = b >> 32;
	uint64_t ll = al * bl, lh = al * bh, hl = ah * bl, hh = ah * bh;
	uint64_t mid = (ll >> 32) + (uint32_t)lh + (uint32_t)hl;
	uint64_t lo = (mid << 32) | (uint32_t)ll;
	uint64_t hi = hh + (lh >> 32) + (hl >> 32) + (mid >> 32);
	return lo ^ hi;
#endif
}

static inline uint64_t avalanche(uint64_t h)
{
	h ^= h >> 37;
	h *= AVALANCHE;
	return h ^ (h >> 32);
}

static inline void stripe(uint64_t *restrict acc, const uint8_t *restrict p,
			  const uint64_t *restrict k, uint64_t n)
{
	for (int i = 0; i < LANES; i++) {
		uint64_t v = load_le64(p + 8 * i);
		uint64_t x = v ^ (k[i] + n * GOLD);
		acc[i ^ 1] += v;
		acc[i] += (uint64_t)(uint32_t)x * (x >> 32);
	}
}

static inline void scramble(uint64_t *acc, const uint64_t *k)
{
	for (int i = 0; i < LANES; i++) {
		uint64_t a = acc[i];
		a ^= a >> 47;
		a ^= k[LANES + i];
		acc[i] = a * PRIME32;
	}
}

#ifdef FASTHASH_SSE2
/* One 1 KiB block or less (n_stripes <= 16), lanes two by two; scramble after a whole block. */
static void blocks_sse2(uint64_t *acc, const uint8_t *p, size_t n_stripes, const uint64_t *k)
{
	__m128i a[LANES / 2], kv[LANES / 2], ks[LANES / 2];
	const __m128i gold = _mm_set1_epi64x((long long)GOLD), prime = _mm_set1_epi32((int)PRIME32);
	for (int j = 0; j < LANES / 2; j++) {
		a[j] = _mm_loadu_si128((const __m128i *)(acc + 2 * j));
		kv[j] = _mm_loadu_si128((const __m128i *)(k + 2 * j));
		ks[j] = _mm_loadu_si128((const __m128i *)(k + LANES + 2 * j));
	}
	for (size_t s = 0; s < n_stripes;) {
		__m128i kn[LANES / 2];
		size_t n = 0;
		for (int j = 0; j < LANES / 2; j++)
			kn[j] = kv[j];
		for (; n < STRIPES_PER_BLOCK && s < n_stripes; n++, s++) {
			const uint8_t *q = p + s * STRIPE;
			for (int j = 0; j < LANES / 2; j++) {
				__m128i v = _mm_loadu_si128((const __m128i *)(q + 16 * j));
				__m128i x = _mm_xor_si128(v, kn[j]);
				__m128i m = _mm_mul_epu32(x, _mm_srli_epi64(x, 32));
				a[j] = _mm_add_epi64(a[j], _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 0, 3, 2)));
				a[j] = _mm_add_epi64(a[j], m);
				kn[j] = _mm_add_epi64(kn[j], gold);
			}
		}
		if (n < STRIPES_PER_BLOCK)
			break;
		for (int j = 0; j < LANES / 2; j++) {
			__m128i x = _mm_xor_si128(a[j], _mm_srli_epi64(a[j], 47));
			x = _mm_xor_si128(x, ks[j]);
			__m128i lo = _mm_mul_epu32(x, prime);
			__m128i hi = _mm_mul_epu32(_mm_srli_epi64(x, 32), prime);
			a[j] = _mm_add_epi64(lo, _mm_slli_epi64(hi, 32));
		}
	}
	for (int j = 0; j < LANES / 2; j++)
		_mm_storeu_si128((__m128i *)(acc + 2 * j), a[j]);
}
#endif

#ifdef FASTHASH_AVX2
/* blocks_sse2, four lanes to a register */
__attribute__((target("avx2"))) static void blocks_avx2(uint64_t *acc, const uint8_t *p,
							 size_t n_stripes, const uint64_t *k)
{
	__m256i a[LANES / 4], kv[LANES / 4], ks[LANES / 4];
	const __m256i gold = _mm256_set1_epi64x((long long)GOLD),
		      prime = _mm256_set1_epi32((int)PRIME32);
	for (int j = 0; j < LANES / 4; j++) {
		a[j] = _mm256_loadu_si256((const __m256i *)(acc + 4 * j));
		kv[j] = _mm256_loadu_si256((const __m256i *)(k + 4 * j));
		ks[j] = _mm256_loadu_si256((const __m256i *)(k + LANES + 4 * j));
	}
	for (size_t s = 0; s < n_stripes;) {
		__m256i kn[LANES / 4];
		size_t n = 0;
		for (int j = 0; j < LANES / 4; j++)
			kn[j] = kv[j];
		for (; n < STRIPES_PER_BLOCK && s < n_stripes; n++, s++) {
			const uint8_t *q = p + s * STRIPE;
			for (int j = 0; j < LANES / 4; j++) {
				__m256i v = _mm256_loadu_si256((const __m256i *)(q + 32 * j));
				__m256i x = _mm256_xor_si256(v, kn[j]);
				__m256i m = _mm256_mul_epu32(x, _mm256_srli_epi64(x, 32));
				a[j] = _mm256_add_epi64(a[j], _mm256_shuffle_epi32(v, _MM_SHUFFLE(1, 0, 3, 2)));
				a[j] = _mm256_add_epi64(a[j], m);
				kn[j] = _mm256_add_epi64(kn[j], gold);
			}
		}
		if (n < STRIPES_PER_BLOCK)
			break;
		for (int j = 0; j < LANES / 4; j++) {
			__m256i x = _mm256_xor_si256(a[j], _mm256_srli_epi64(a[j], 47));
			x = _mm256_xor_si256(x, ks[j]);
			__m256i lo = _mm256_mul_epu32(x, prime);
			__m256i hi = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), prime);
			a[j] = _mm256_add_epi64(lo, _mm256_slli_epi64(hi, 32));
		}
	}
	for (int j = 0; j < LANES / 4; j++)
		_mm256_storeu_si256((__m256i *)(acc + 4 * j), a[j]);
}
#endif

typedef void BlocksFn(uint64_t *acc, const uint8_t *p, size_t n_stripes, const uint64_t *k);

static void fasthash_run(const void *key16, const void *buf, size_t len,
			 uint8_t out[FASTHASH_LEN], BlocksFn *blocks)
{
	const uint8_t *p = buf;
	uint64_t k0 = load_le64(key16), k1 = load_le64((const uint8_t *)key16 + 8);
	uint64_t k[2 * LANES], acc[LANES];
	size_t n_stripes = len / STRIPE, s = 0;
	uint64_t lo, hi;

	for (int i = 0; i < 2 * LANES; i++)
		k[i] = PI[i] ^ (i & 1 ? k1 : k0);
	for (int i = 0; i < LANES; i++)
		acc[i] = PI[LANES + i] ^ (i & 1 ? k0 : k1);

	if (blocks) {
		blocks(acc, p, n_stripes, k);
		s = n_stripes;
	}
	for (; s + STRIPES_PER_BLOCK <= n_stripes; s += STRIPES_PER_BLOCK) {
		for (uint64_t n = 0; n < STRIPES_PER_BLOCK; n++)
			stripe(acc, p + (s + n) * STRIPE, k, n);
		scramble(acc, k);
	}
	for (uint64_t n = 0; s < n_stripes; s++, n++)
		stripe(acc, p + s * STRIPE, k, n);
	if (len % STRIPE) {
		uint8_t last[STRIPE] = {0};
		memcpy(last, p + s * STRIPE, len % STRIPE);
		stripe(acc, last, k, n_stripes % STRIPES_PER_BLOCK);
	}

	lo = (uint64_t)len * PRIME64_1 ^ k0;
	hi = ~(uint64_t)len * PRIME64_2 ^ k1;
	for (int i = 0; i < LANES; i += 2) {
		lo += fold64(acc[i] ^ k[i], acc[i + 1] ^ k[i + 1] ^ GOLD);
		hi += fold64(acc[i] ^ k[LANES + i], acc[i + 1] ^ k[LANES + i + 1] ^ PRIME64_2);
	}
	store_le64(out, avalanche(lo));
	store_le64(out + 8, avalanche(hi ^ lo));
}

void fasthash128(const void *key16, const void *buf, size_t len, uint8_t out[FASTHASH_LEN])
{
#if defined(FASTHASH_AVX2)
	fasthash_run(key16, buf, len, out,
		     __builtin_cpu_supports("avx2") ? blocks_avx2 : blocks_sse2);
#elif defined(FASTHASH_SSE2)
	fasthash_run(key16, buf, len, out, blocks_sse2);
#else
	fasthash_run(key16, buf, len, out, NULL);
#endif
}

#ifdef FASTHASH_SSE2
/* the SSE2 path whatever the CPU has, for tests (not in the header) */
void fasthash128_sse2(const void *key16, const void *buf, size_t len, uint8_t out[FASTHASH_LEN]);
void fasthash128_sse2(const void *key16, const void *buf, size_t len, uint8_t out[FASTHASH_LEN])
{
	fasthash_run(key16, buf, len, out, blocks_sse2);
}
#endif
