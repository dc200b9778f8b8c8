#include "common/crc32c.h"

#include <pthread.h>
#include <string.h>

/*
 * CRC-32C (Castagnoli): SSE 4.2 when the CPU has it, else slicing by 8.
 *
 * The crc32 instruction has a latency of three cycles and a throughput of
 * one, so one chain of it runs at a third of the speed the CPU allows. Long
 * buffers are cut into three blocks whose CRCs run interleaved, each block
 * started from 0, and joined after: the raw update is linear,
 * update(c, A B) = zeros(update(c, A), |B|) ^ update(0, B), where zeros(c, n)
 * is c fed n zero bytes, itself linear in c and so one lookup per byte of c
 * in a table made once for each block length used (LONG_BLOCK, SHORT_BLOCK).
 */

#define LONG_BLOCK 8192
#define SHORT_BLOCK 256

static uint32_t crc_table[8][256];
static uint32_t zeros_long[4][256], zeros_short[4][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static bool crc_hw;

/* c fed n zero bytes, a byte at a time (only to build the tables; crc_table[0] first) */
static uint32_t zeros_slow(uint32_t c, size_t n)
{
	while (n--)
		c = (c >> 8) ^ crc_table[0][c & 0xff];
	return c;
}

static void zeros_table(uint32_t t[4][256], size_t n)
{
	uint32_t bit[32];
	for (int k = 0; k < 32; k++)
		bit[k] = zeros_slow(1u << k, n);
	for (int b = 0; b < 4; b++)
		for (uint32_t v = 0; v < 256; v++) {
			uint32_t c = 0;
			for (int k = 0; k < 8; k++)
				if (v & (1u << k))
					c ^= bit[8 * b + k];
			t[b][v] = c;
		}
}

static uint32_t zeros(const uint32_t t[4][256], uint32_t c)
{
	return t[0][c & 0xff] ^ t[1][(c >> 8) & 0xff] ^ t[2][(c >> 16) & 0xff] ^ t[3][c >> 24];
}

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		crc_table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
	zeros_table(zeros_long, LONG_BLOCK);
	zeros_table(zeros_short, SHORT_BLOCK);
#if defined(__x86_64__)
	__builtin_cpu_init();
	crc_hw = __builtin_cpu_supports("sse4.2");
#endif
}

#if defined(__x86_64__)
/* three blocks of n bytes (a multiple of 8) from p, as one: see the top */
__attribute__((target("sse4.2"))) static uint64_t crc_hw_3way(uint64_t c0, const uint8_t *p, size_t n,
							     const uint32_t t[4][256])
{
	uint64_t c1 = 0, c2 = 0;
	for (size_t i = 0; i < n; i += 8) {
		uint64_t a, b, c;
		memcpy(&a, p + i, 8);
		memcpy(&b, p + n + i, 8);
		memcpy(&c, p + 2 * n + i, 8);
		c0 = __builtin_ia32_crc32di(c0, a);
		c1 = __builtin_ia32_crc32di(c1, b);
		c2 = __builtin_ia32_crc32di(c2, c);
	}
	c0 = zeros(t, (uint32_t)c0) ^ c1;
	return zeros(t, (uint32_t)c0) ^ c2;
}

__attribute__((target("sse4.2"))) static uint32_t crc_hw_update(uint32_t crc, const uint8_t *p,
								   size_t len)
{
	uint64_t c = crc;
	while (len >= 3 * LONG_BLOCK) {
		c = crc_hw_3way(c, p, LONG_BLOCK, zeros_long);
		p += 3 * LONG_BLOCK;
		len -= 3 * LONG_BLOCK;
	}
	while (len >= 3 * SHORT_BLOCK) {
		c = crc_hw_3way(c, p, SHORT_BLOCK, zeros_short);
		p += 3 * SHORT_BLOCK;
		len -= 3 * SHORT_BLOCK;
	}
	while (len >= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		c = __builtin_ia32_crc32di(c, v);
		p += 8;
		len -= 8;
	}
	while (len--)
		c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
	return (uint32_t)c;
}
#endif

static uint32_t crc_sw_update(uint32_t crc, const uint8_t *p, size_t len)
{
	while (len >= 8) {
		uint32_t lo, hi;
		memcpy(&lo, p, 4);
		memcpy(&hi, p + 4, 4);
		lo ^= crc;
		crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
		      crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
		      crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
		      crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
		p += 8;
		len -= 8;
	}
	while (len--)
		crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
	return crc;
}

uint32_t crc32c_update(uint32_t crc, const void *buf, size_t len)
{
	pthread_once(&crc_once, crc_init);
#if defined(__x86_64__)
	if (crc_hw)
		return crc_hw_update(crc, buf, len);
#endif
	return crc_sw_update(crc, buf, len);
}

uint32_t crc32c(const void *buf, size_t len) { return ~crc32c_update(~0u, buf, len); }

/* slicing by 8 whatever the CPU has: for tests/unit/test_chunk.c to compare with */
uint32_t crc32c_update_sw(uint32_t crc, const void *buf, size_t len);
uint32_t crc32c_update_sw(uint32_t crc, const void *buf, size_t len)
{
	pthread_once(&crc_once, crc_init);
	return crc_sw_update(crc, buf, len);
}
