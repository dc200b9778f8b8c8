/* Unit tests for store/pack.h: the pack writer, trailer parsing, pack names. */
#include "tests/unit/test.h"

#include "store/pack.h"

#include <ctype.h>

#define N_CHUNKS 5
#define CHUNK_LEN 8192

typedef struct Sample {
	uint8_t plain[CHUNK_LEN];
	uint8_t enc[CHUNK_LEN + 1024];
	size_t elen;
	ChunkEncoding e;
	ChunkId id;
} Sample;

static void make_samples(ChunkCodec *c, Sample *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (i % 2) {
			test_random(s[i].plain, CHUNK_LEN); /* RAW */
		} else {
			for (size_t j = 0; j < CHUNK_LEN; j++) /* compressible, different per i */
				s[i].plain[j] = (uint8_t)((j / 64) * 7 + i);
		}
		chunk_hash(s[i].plain, CHUNK_LEN, &s[i].id);
		PGBAKFS_CHECK(chunk_encode_bound(CHUNK_LEN) <= sizeof(s[i].enc));
		PGBAKFS_CHECK(chunk_encode(c, &s[i].id, s[i].plain, CHUNK_LEN, s[i].enc, &s[i].elen, &s[i].e) == 0);
	}
}

static void test_writer_roundtrip(void)
{
	Sample *s = xcalloc(N_CHUNKS, sizeof(*s));
	ChunkCodec *c = NULL;
	PackWriter *w = NULL;
	const void *buf;
	size_t len, data_len = PACK_HEADER_LEN;
	uint64_t off = 0;
	uint32_t n = 0;
	PackEntry *e = NULL;
	uint8_t *copy = NULL;

	if (!CHECK_EQ_INT(chunk_codec_new(3, &c), 0))
		goto out;
	make_samples(c, s, N_CHUNKS);
	/* a small capacity: the writer must grow */
	if (!CHECK_EQ_INT(pack_writer_new(1000, &w), 0))
		goto out;
	CHECK_EQ_INT(pack_writer_size(w), PACK_HEADER_LEN);
	CHECK_EQ_INT(pack_writer_count(w), 0);
	CHECK(!pack_writer_contains(w, &s[0].id));

	for (size_t i = 0; i < N_CHUNKS; i++) {
		CHECK_EQ_INT(pack_writer_add(w, &s[i].id, s[i].e, s[i].enc, s[i].elen, CHUNK_LEN), 0);
		data_len += s[i].elen;
		CHECK_EQ_INT(pack_writer_size(w), data_len);
		CHECK_EQ_INT(pack_writer_count(w), i + 1);
		/* every chunk added so far, including the very first one */
		for (size_t j = 0; j <= i; j++)
			if (!CHECK(pack_writer_contains(w, &s[j].id)))
				fprintf(stderr, "  after %zu adds, chunk %zu is not found\n", i + 1, j);
		for (size_t j = i + 1; j < N_CHUNKS; j++)
			CHECK(!pack_writer_contains(w, &s[j].id));
	}
	CHECK(s[0].e == CHUNK_ENC_ZSTD && s[1].e == CHUNK_ENC_RAW);

	const PackEntry *we = pack_writer_entries(w);
	uint64_t expect_off = PACK_HEADER_LEN;
	for (size_t i = 0; i < N_CHUNKS; i++) {
		CHECK(chunk_id_cmp(&we[i].id, &s[i].id) == 0);
		CHECK_EQ_INT(we[i].offset, expect_off);
		CHECK_EQ_INT(we[i].elen, s[i].elen);
		CHECK_EQ_INT(we[i].plen, CHUNK_LEN);
		CHECK_EQ_INT(we[i].enc, s[i].e);
		expect_off += s[i].elen;
	}

	if (!CHECK_EQ_INT(pack_writer_finish(w, &buf, &len), 0))
		goto out;
	CHECK_EQ_INT(len, data_len + N_CHUNKS * PACK_ENTRY_LEN + PACK_FOOTER_LEN);
	CHECK(memcmp(buf, "PGBKPAK1", 8) == 0);
	CHECK(memcmp((const uint8_t *)buf + len - 8, "PGBKEND1", 8) == 0);
	/* footer fields at their documented places */
	const uint8_t *footer = (const uint8_t *)buf + len - PACK_FOOTER_LEN;
	CHECK_EQ_INT(footer[0] | footer[1] << 8 | footer[2] << 16 | (uint32_t)footer[3] << 24, N_CHUNKS);
	CHECK_EQ_INT(get_le64(footer + 8), data_len);
	{
		ChunkId digest;
		chunk_hash((const uint8_t *)buf + data_len, N_CHUNKS * PACK_ENTRY_LEN, &digest);
		CHECK(memcmp(footer + 16, digest.b, 32) == 0);
	}

	CHECK_EQ_INT(pack_parse_footer(footer, len, &off, &n), 0);
	CHECK_EQ_INT(off, data_len);
	CHECK_EQ_INT(n, N_CHUNKS);
	if (!CHECK_EQ_INT(pack_parse_entries((const uint8_t *)buf + off, n, footer, off, &e), 0))
		goto out;
	for (size_t i = 0; i < N_CHUNKS; i++) {
		uint8_t plain[CHUNK_LEN];
		CHECK(chunk_id_cmp(&e[i].id, &s[i].id) == 0);
		CHECK_EQ_INT(e[i].offset, we[i].offset);
		CHECK_EQ_INT(e[i].elen, s[i].elen);
		CHECK_EQ_INT(e[i].plen, CHUNK_LEN);
		CHECK_EQ_INT(e[i].enc, s[i].e);
		/* the pack holds the encoded bytes where the entry says */
		CHECK_EQ_INT(chunk_decode(c, (ChunkEncoding)e[i].enc, (const uint8_t *)buf + e[i].offset,
					  e[i].elen, plain, e[i].plen, &e[i].id), 0);
		CHECK(memcmp(plain, s[i].plain, CHUNK_LEN) == 0);
	}
	free(e);
	e = NULL;

	/* damage: a flipped byte in the entries breaks their digest */
	copy = xmalloc(len);
	uint8_t *cf = copy + len - PACK_FOOTER_LEN;
	memcpy(copy, buf, len);
	copy[off + PACK_ENTRY_LEN + 33] ^= 1; /* offset of the second entry */
	CHECK_EQ_INT(pack_parse_footer(cf, len, &off, &n), 0);
	CHECK_EQ_INT(pack_parse_entries(copy + off, n, cf, off, &e), -EBADMSG);
	CHECK(e == NULL);
	memcpy(copy, buf, len);
	copy[off] ^= 0x80; /* first byte of the first id */
	CHECK_EQ_INT(pack_parse_entries(copy + off, n, cf, off, &e), -EBADMSG);
	memcpy(copy, buf, len);
	cf[20] ^= 1; /* the digest itself */
	CHECK_EQ_INT(pack_parse_entries(copy + off, n, cf, off, &e), -EBADMSG);

	/* damage: wrong pack size, wrong count, wrong offset, bad magic */
	memcpy(copy, buf, len);
	CHECK_EQ_INT(pack_parse_footer(cf, len + 1, &off, &n), -EBADMSG);
	CHECK_EQ_INT(pack_parse_footer(cf, len - 1, &off, &n), -EBADMSG);
	CHECK_EQ_INT(pack_parse_footer(cf, PACK_FOOTER_LEN, &off, &n), -EBADMSG);
	put_le32(cf, N_CHUNKS + 1);
	CHECK_EQ_INT(pack_parse_footer(cf, len, &off, &n), -EBADMSG);
	memcpy(copy, buf, len);
	put_le64(cf + 8, data_len - 1);
	CHECK_EQ_INT(pack_parse_footer(cf, len, &off, &n), -EBADMSG);
	memcpy(copy, buf, len);
	cf[55] = '2';
	CHECK_EQ_INT(pack_parse_footer(cf, len, &off, &n), -EBADMSG);

	/* an entry pointing past the chunk data is refused even with a valid digest */
	memcpy(copy, buf, len);
	off = data_len;
	put_le64(copy + off + 4 * PACK_ENTRY_LEN + 32, data_len - s[4].elen + 1);
	{
		ChunkId digest;
		chunk_hash(copy + off, N_CHUNKS * PACK_ENTRY_LEN, &digest);
		memcpy(cf + 16, digest.b, 32);
	}
	CHECK_EQ_INT(pack_parse_entries(copy + off, N_CHUNKS, cf, off, &e), -EBADMSG);
	/* ... and one pointing into the header */
	memcpy(copy, buf, len);
	put_le64(copy + off + 32, 4);
	{
		ChunkId digest;
		chunk_hash(copy + off, N_CHUNKS * PACK_ENTRY_LEN, &digest);
		memcpy(cf + 16, digest.b, 32);
	}
	CHECK_EQ_INT(pack_parse_entries(copy + off, N_CHUNKS, cf, off, &e), -EBADMSG);

	/* reset: an empty pack again, with nothing remembered */
	pack_writer_reset(w);
	CHECK_EQ_INT(pack_writer_size(w), PACK_HEADER_LEN);
	CHECK_EQ_INT(pack_writer_count(w), 0);
	for (size_t i = 0; i < N_CHUNKS; i++)
		CHECK(!pack_writer_contains(w, &s[i].id));
	CHECK_EQ_INT(pack_writer_add(w, &s[3].id, s[3].e, s[3].enc, s[3].elen, CHUNK_LEN), 0);
	CHECK(pack_writer_contains(w, &s[3].id));
	CHECK(!pack_writer_contains(w, &s[0].id));

	/* an empty pack is a valid pack */
	pack_writer_reset(w);
	CHECK_EQ_INT(pack_writer_finish(w, &buf, &len), 0);
	CHECK_EQ_INT(len, PACK_HEADER_LEN + PACK_FOOTER_LEN);
	footer = (const uint8_t *)buf + len - PACK_FOOTER_LEN;
	CHECK_EQ_INT(pack_parse_footer(footer, len, &off, &n), 0);
	CHECK_EQ_INT(n, 0);
	CHECK_EQ_INT(off, PACK_HEADER_LEN);
	CHECK_EQ_INT(pack_parse_entries((const uint8_t *)buf + off, n, footer, off, &e), 0);
	free(e);
	e = NULL;
out:
	free(copy);
	free(e);
	pack_writer_free(w);
	chunk_codec_free(c);
	free(s);
}

/*
 * A footer whose entries offset plus the trailer length wraps around 2^64
 * must not pass: its entries offset lies beyond the end of the pack.
 */
static void test_footer_overflow(void)
{
	uint8_t footer[PACK_FOOTER_LEN] = {0};
	const uint64_t pack_size = 4096;
	const uint32_t n = UINT32_MAX;
	uint64_t off = pack_size - PACK_FOOTER_LEN - (uint64_t)n * PACK_ENTRY_LEN; /* wraps */
	uint64_t got_off = 0;
	uint32_t got_n = 0;

	put_le32(footer, n);
	put_le64(footer + 8, off);
	memcpy(footer + 48, "PGBKEND1", 8);
	int r = pack_parse_footer(footer, pack_size, &got_off, &got_n);
	if (!CHECK_EQ_INT(r, -EBADMSG))
		fprintf(stderr, "  accepted entries_off=%" PRIu64 " n=%" PRIu32 " for a %" PRIu64
				"-byte pack\n", got_off, got_n, pack_size);
	/* whatever it returns, a success must describe bytes inside the pack */
	CHECK(r < 0 || got_off + (uint64_t)got_n * PACK_ENTRY_LEN <= pack_size);
}

/* Many chunks: growth of the lookup set must keep every chunk findable. */
static void test_writer_many(void)
{
	const size_t count = 3000;
	PackWriter *w = NULL;
	ChunkId *ids = xcalloc(count, sizeof(*ids));
	uint8_t data[16];
	size_t missing = 0, false_hits = 0;

	if (!CHECK_EQ_INT(pack_writer_new(64, &w), 0))
		goto out;
	for (size_t i = 0; i < count; i++) {
		memcpy(data, &i, sizeof(i));
		chunk_hash(&i, sizeof(i), &ids[i]);
		if (pack_writer_add(w, &ids[i], CHUNK_ENC_RAW, data, sizeof(data), sizeof(data)) < 0)
			break;
	}
	CHECK_EQ_INT(pack_writer_count(w), count);
	CHECK_EQ_INT(pack_writer_size(w), PACK_HEADER_LEN + count * sizeof(data));
	for (size_t i = 0; i < count; i++)
		if (!pack_writer_contains(w, &ids[i])) {
			if (missing++ < 5)
				fprintf(stderr, "  chunk %zu of %zu not found by pack_writer_contains\n", i,
					count);
		}
	CHECK_EQ_INT(missing, 0);
	for (size_t i = count; i < count + 1000; i++) {
		ChunkId other;
		chunk_hash(&i, sizeof(i), &other);
		false_hits += pack_writer_contains(w, &other);
	}
	CHECK_EQ_INT(false_hits, 0);

	/* after a reset the set is reused: the first chunk of the next pack is found */
	pack_writer_reset(w);
	CHECK_EQ_INT(pack_writer_add(w, &ids[7], CHUNK_ENC_RAW, data, sizeof(data), sizeof(data)), 0);
	CHECK(pack_writer_contains(w, &ids[7]));
	CHECK(!pack_writer_contains(w, &ids[8]));
out:
	CHECK(pack_writer_free(w) == NULL);
	CHECK(pack_writer_free(NULL) == NULL);
	free(ids);
}

static bool is_lower_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i]))
			return false;
	return true;
}

static void test_pack_name(void)
{
	char a[64], b[64], small[20];
	CHECK_EQ_INT(pack_name_new(a, sizeof(a)), 0);
	CHECK_EQ_INT(pack_name_new(b, sizeof(b)), 0);
	/* "packs/xx/<32 hex>.pack", xx = the first two hex digits */
	CHECK_EQ_INT(strlen(a), 6 + 3 + 32 + 5);
	CHECK(strncmp(a, "packs/", 6) == 0);
	CHECK(a[8] == '/');
	CHECK(is_lower_hex(a + 9, 32));
	CHECK(a[6] == a[9] && a[7] == a[10]);
	CHECK_EQ_STR(a + 41, ".pack");
	CHECK(strcmp(a, b) != 0);
	CHECK_EQ_INT(pack_name_new(small, sizeof(small)), -ENAMETOOLONG);
	CHECK_EQ_INT(pack_name_new(a, 46), -ENAMETOOLONG); /* no room for the NUL */
	CHECK_EQ_INT(pack_name_new(a, 47), 0);
}

int main(void)
{
	test_writer_roundtrip();
	test_footer_overflow();
	test_writer_many();
	test_pack_name();
	return test_finish();
}
