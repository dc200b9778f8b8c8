/*
 * Unit tests for ingest/incremental.h: the INCREMENTAL header, the
 * materialization arithmetic (pg_combinebackup's rules), the CRC-32C over
 * stored chunks, and whole files materialized against a parent snapshot in
 * a real repository, restored and compared with a reference reconstruction.
 */
#include "tests/unit/test.h"

#include "common/crc32c.h"
#include "ingest/fromdir.h"
#include "ingest/incremental.h"
#include "store/restore.h"

#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>

#define BS 8192u
#define CS 16384u
#define RELSEG 64u

static const RepoInitOptions small_repo = {.chunk_size = CS, .pack_size = 1 << 20};

/* An INCREMENTAL file: header, padding, blocks (malloc'd; block i's bytes from data). */
static uint8_t *make_incr(uint32_t n, uint32_t trunc, const uint32_t *blocks, const uint8_t *data,
			  size_t *ret_len)
{
	size_t hl = 12 + 4 * (size_t)n;
	if (n && hl % BS)
		hl += BS - hl % BS;
	uint8_t *b = xcalloc(1, hl + (size_t)n * BS);
	uint32_t magic = INCR_MAGIC;
	memcpy(b, &magic, 4);
	memcpy(b + 4, &n, 4);
	memcpy(b + 8, &trunc, 4);
	for (uint32_t i = 0; i < n; i++) {
		memcpy(b + 12 + 4 * i, &blocks[i], 4);
		memcpy(b + hl + (size_t)i * BS, data + (size_t)i * BS, BS);
	}
	*ret_len = hl + (size_t)n * BS;
	return b;
}

static void test_header(void)
{
	uint32_t blocks[3] = {1, 5, 8};
	uint8_t data[3 * BS] = {0};
	size_t len, need = 0;
	uint8_t *f = make_incr(3, 4, blocks, data, &len);
	IncrHeader h = {0};

	CHECK_EQ_INT(len, BS + 3 * BS); /* 24 header bytes padded to a block */
	CHECK_EQ_INT(incr_header_parse(f, 3, BS, RELSEG, &h, &need), -EAGAIN);
	CHECK_EQ_INT(need, 12);
	CHECK_EQ_INT(incr_header_parse(f, 12, BS, RELSEG, &h, &need), -EAGAIN);
	CHECK_EQ_INT(need, BS);
	CHECK_EQ_INT(incr_header_parse(f, BS - 1, BS, RELSEG, &h, &need), -EAGAIN);
	if (CHECK_EQ_INT(incr_header_parse(f, len, BS, RELSEG, &h, &need), 0)) {
		CHECK_EQ_INT(h.n_blocks, 3);
		CHECK_EQ_INT(h.truncation_blocks, 4);
		CHECK_EQ_INT(h.header_len, BS);
		CHECK_EQ_INT(h.blocks[2], 8);
		CHECK_EQ_INT(incr_result_blocks(&h), 9);
	}
	incr_header_clear(&h);
	/* no blocks: no padding, 12 bytes */
	free(f);
	f = make_incr(0, 7, NULL, NULL, &len);
	CHECK_EQ_INT(len, 12);
	if (CHECK_EQ_INT(incr_header_parse(f, len, BS, RELSEG, &h, NULL), 0)) {
		CHECK_EQ_INT(h.header_len, 12);
		CHECK_EQ_INT(incr_result_blocks(&h), 7);
	}
	incr_header_clear(&h);
	free(f);

	/* damage: magic, counts past the segment, order, padding */
	f = make_incr(3, 4, blocks, data, &len);
	f[0] ^= 1;
	CHECK_EQ_INT(incr_header_parse(f, 4, BS, RELSEG, &h, NULL), -EBADMSG);
	f[0] ^= 1;
	CHECK_EQ_INT(incr_header_parse(f, len, BS, 8, &h, NULL), -EBADMSG); /* block 8 >= 8 */
	CHECK_EQ_INT(incr_header_parse(f, len, BS, 3, &h, NULL), -EBADMSG); /* trunc 4 > 3 */
	f[100] = 1;
	CHECK_EQ_INT(incr_header_parse(f, len, BS, RELSEG, &h, NULL), -EBADMSG);
	f[100] = 0;
	uint32_t five = 5;
	memcpy(f + 12, &five, 4); /* 5, 5, 8 */
	CHECK_EQ_INT(incr_header_parse(f, len, BS, RELSEG, &h, NULL), -EBADMSG);
	free(f);
}

static void test_plan(void)
{
	uint32_t blocks[3] = {1, 5, 8};
	IncrHeader h = {.n_blocks = 3, .truncation_blocks = 4, .blocks = blocks};
	IncrChunkPlan p;
	uint64_t psize = 5 * BS; /* chunks: 2 blocks, 2 blocks, 1 block */

	CHECK_EQ_INT(incr_block_source(&h, 5, 0), INCR_FROM_PARENT);
	CHECK_EQ_INT(incr_block_source(&h, 5, 1), INCR_FROM_FILE);
	CHECK_EQ_INT(incr_block_source(&h, 5, 4), INCR_FROM_ZERO); /* at the truncation length */
	CHECK_EQ_INT(incr_block_source(&h, 3, 3), INCR_FROM_ZERO); /* past the parent */
	CHECK_EQ_INT(incr_block_source(&h, 5, 8), INCR_FROM_FILE);

	CHECK_EQ_INT(incr_chunk_plan(&h, psize, BS, CS, 0, &p), 0);
	CHECK(p.kind == INCR_CHUNK_BUILD && p.read_parent && p.len == CS && p.parent_len == CS);
	CHECK_EQ_INT(incr_chunk_plan(&h, psize, BS, CS, 1, &p), 0);
	CHECK(p.kind == INCR_CHUNK_REUSE && p.len == CS);
	CHECK_EQ_INT(incr_chunk_plan(&h, psize, BS, CS, 2, &p), 0);
	CHECK(p.kind == INCR_CHUNK_BUILD && !p.read_parent && p.parent_len == BS);
	CHECK_EQ_INT(incr_chunk_plan(&h, psize, BS, CS, 3, &p), 0);
	CHECK(p.kind == INCR_CHUNK_ZERO && p.len == CS);
	CHECK_EQ_INT(incr_chunk_plan(&h, psize, BS, CS, 4, &p), 0);
	CHECK(p.kind == INCR_CHUNK_BUILD && !p.read_parent && p.len == BS && p.parent_len == 0);
	CHECK_EQ_INT(incr_chunk_plan(&h, psize, BS, CS, 5, &p), -EINVAL);

	/* truncated to 3 blocks: chunk 1 keeps one parent block of two, so it is read */
	IncrHeader t = {.truncation_blocks = 3};
	CHECK_EQ_INT(incr_result_blocks(&t), 3);
	CHECK_EQ_INT(incr_chunk_plan(&t, psize, BS, CS, 0, &p), 0);
	CHECK(p.kind == INCR_CHUNK_REUSE);
	CHECK_EQ_INT(incr_chunk_plan(&t, psize, BS, CS, 1, &p), 0);
	CHECK(p.kind == INCR_CHUNK_BUILD && p.read_parent && p.len == BS && p.parent_len == CS);
	/* a parent shorter than the truncation length: the rest is zeros */
	IncrHeader g = {.truncation_blocks = 4};
	CHECK_EQ_INT(incr_chunk_plan(&g, 2 * BS + BS, BS, CS, 1, &p), 0);
	CHECK(p.kind == INCR_CHUNK_BUILD && p.read_parent && p.parent_len == BS);
	/* chunk size not a multiple of the block size */
	CHECK_EQ_INT(incr_chunk_plan(&g, psize, 32768, CS, 0, &p), -EINVAL);
}

static void test_crc(void)
{
	uint8_t a[1000], b[CS];
	ChunkId id;
	test_random(a, sizeof(a));
	test_random(b, sizeof(b));
	test_random(&id, sizeof(id));
	/* the catalog's CRC of a chunk covers its id, then its bytes */
	uint32_t stored = ~crc32c_update(crc32c_update(~0u, id.b, sizeof(id.b)), b, sizeof(b));
	uint32_t s = incr_crc_add_bytes(INCR_CRC_INIT, a, sizeof(a));
	uint32_t want = crc32c_update(s, b, sizeof(b));
	CHECK_EQ_INT(incr_crc_add_stored(s, &id, stored, sizeof(b)), want);
	CHECK_EQ_INT(incr_crc_final(incr_crc_add_stored(INCR_CRC_INIT, &id, stored, sizeof(b))),
		     crc32c(b, sizeof(b)));
	memset(b, 0, sizeof(b));
	uint32_t z = s;
	for (uint64_t left = 100000; left; left -= MIN(left, CS))
		z = crc32c_update(z, b, MIN(left, CS));
	CHECK_EQ_INT(incr_crc_add_zeros(s, 100000), z);
	CHECK_EQ_INT(incr_crc_final(incr_crc_add_bytes(INCR_CRC_INIT, a, sizeof(a))),
		     crc32c(a, sizeof(a)));
}

/* pg_combinebackup's result, written the plain way. */
static uint8_t *reconstruct(const uint8_t *parent, uint64_t psize, uint32_t n, uint32_t trunc,
			    const uint32_t *blocks, const uint8_t *data, size_t *ret_len)
{
	uint64_t nb = trunc;
	for (uint32_t i = 0; i < n; i++)
		nb = MAX(nb, (uint64_t)blocks[i] + 1);
	uint8_t *out = xcalloc(1, nb * BS + 1);
	for (uint64_t b = 0; b < nb; b++) {
		const uint8_t *src = NULL;
		for (uint32_t i = 0; i < n; i++)
			if (blocks[i] == b)
				src = data + (size_t)i * BS;
		if (!src && b < trunc && b < psize / BS)
			src = parent + b * BS;
		if (src)
			memcpy(out + b * BS, src, BS);
	}
	*ret_len = nb * BS;
	return out;
}

/* Feed an INCREMENTAL file through the tree in uneven pieces. */
static int feed_file(Tree *t, const char *path, const uint8_t *buf, size_t len, size_t piece)
{
	TreeMeta m = {.mode = 0600, .uid = getuid(), .gid = getgid(), .mtime_ns = 1700000000000000000};
	TreeFile *f = NULL;
	int r = tree_file_begin(t, path, &m, &f);
	if (r < 0)
		return r;
	for (size_t off = 0; r == 0 && off < len; off += piece)
		r = tree_file_write(t, f, buf + off, MIN(piece, len - off));
	int r2 = tree_file_end(t, f);
	return r ? r : r2;
}

static int collect(const void *buf, size_t len, void *userdata)
{
	FILE *f = userdata;
	return fwrite(buf, 1, len, f) == len ? 0 : -EIO;
}

typedef struct Case {
	const char *name; /* base/1/<name> */
	uint64_t psize;
	uint32_t n, trunc;
	uint32_t blocks[4];
} Case;

static const Case cases[] = {
	{"16384", 5 * BS, 3, 4, {1, 5, 8}},  /* build, reuse, zeros, growth */
	{"16385", 5 * BS, 0, 3, {0}},        /* truncated in a chunk */
	{"16386", 4 * BS, 0, 4, {0}},        /* unchanged: all by id */
	{"16387", 2 * BS, 1, 4, {3}},        /* parent shorter than the truncation length */
	{"16388", 0, 2, 0, {0, 2}},          /* empty in the parent */
	{"16389.1", 6 * BS, 2, 6, {2, 3}},    /* both blocks of one chunk */
};

static void test_materialize(void)
{
	char tmp[64], src[PATH_MAX], repo_path[PATH_MAX], out[PATH_MAX], p[PATH_MAX];
	uint8_t *parents[ELEMENTSOF(cases)] = {0}, *data = xmalloc(4 * BS);
	const char *manifest_text = "{ \"PostgreSQL-Backup-Manifest-Version\": 2,\n\"Files\": []}\n";
	Repo *r = NULL;
	SnapWriter *w = NULL;
	Tree *t = NULL;
	Incr *in = NULL;
	SnapWriterOptions o = {.jobs = 2, .source = "dir"};
	SnapWriterResult res = {0}, res2 = {0};
	FromDirError err;
	SnapshotInfo s = {0}, s2 = {0};
	RestoreOptions ro = {.jobs = 2};
	RestoreResult rr;

	test_tmpdir(tmp, sizeof(tmp));
	test_random(data, 4 * BS);
	test_fmt(src, sizeof(src), "%s/src", tmp);
	test_fmt(repo_path, sizeof(repo_path), "%s/repo", tmp);
	test_fmt(out, sizeof(out), "%s/out", tmp);
	test_fmt(p, sizeof(p), "%s/base/1", src);
	CHECK_EQ_INT(mkdir_p(p, 0700), 0);
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		parents[i] = xmalloc(cases[i].psize + 1);
		test_random(parents[i], cases[i].psize);
		test_fmt(p, sizeof(p), "%s/base/1/%s", src, cases[i].name);
		int fd = open(p, O_WRONLY | O_CREAT, 0600);
		CHECK(fd >= 0 && write_full(fd, parents[i], cases[i].psize) == 0);
		close(fd);
	}
	for (int i = 1; i <= 2; i++) {
		test_fmt(p, sizeof(p), "%s/base/1/dmg%d", src, i);
		CHECK_EQ_INT(file_write_atomic(p, data, BS, 0600), 0);
	}
	test_fmt(p, sizeof(p), "%s/backup_manifest", src);
	CHECK_EQ_INT(file_write_atomic(p, manifest_text, strlen(manifest_text), 0600), 0);

	/* the parent */
	if (!CHECK_EQ_INT(repo_init(repo_path, &small_repo), 0) ||
	    !CHECK_EQ_INT(repo_open(repo_path, &r), 0) ||
	    !CHECK_EQ_INT(snapwriter_new(r, &o, &w), 0))
		goto out;
	CHECK_EQ_INT(fromdir_ingest(w, src, &err), 0);
	if (!CHECK_EQ_INT(snapwriter_commit(w, &res), 0))
		goto out;
	w = snapwriter_free(w);
	if (!CHECK_EQ_INT(catalog_snapshot_get(repo_catalog(r), res.name, NULL, &s), 0))
		goto out;

	/* a chunk size that is not a multiple of the block size rules it out */
	IncrOptions bad = {.parent_rowid = s.rowid, .parent_name = s.name, .blcksz = 32768,
			   .relseg_blocks = RELSEG};
	CHECK_EQ_INT(incr_new(r, &bad, &in), -EINVAL);
	IncrOptions io = {.parent_rowid = s.rowid, .parent_name = s.name, .blcksz = BS,
			  .relseg_blocks = RELSEG};
	if (!CHECK_EQ_INT(incr_new(r, &io, &in), 0))
		goto out;

	/* the parent's manifest, for UPLOAD_MANIFEST */
	{
		char *got = NULL;
		size_t got_len = 0;
		FILE *mf = open_memstream(&got, &got_len);
		CHECK(incr_parent_has_manifest(in));
		CHECK_EQ_INT(incr_parent_manifest_send(in, collect, mf), 0);
		fclose(mf);
		CHECK(got_len == strlen(manifest_text) && !memcmp(got, manifest_text, got_len));
		free(got);
	}

	/* the incremental snapshot */
	SnapWriterOptions o2 = {.jobs = 2, .source = "pg:test", .type = "incr", .parent = s.name};
	if (!CHECK_EQ_INT(snapwriter_new(r, &o2, &w), 0) || !CHECK_EQ_INT(tree_new(w, &t), 0))
		goto out;
	incr_attach(in, t);
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		const Case *c = &cases[i];
		size_t len;
		uint8_t *f = make_incr(c->n, c->trunc, c->blocks, data, &len);
		test_fmt(p, sizeof(p), "base/1/INCREMENTAL.%s", c->name);
		CHECK_EQ_INT(feed_file(t, p, f, len, i % 2 ? 1000 : 8192), 0);
		free(f);
	}
	/* a visibility map sent as changed blocks is left out, whatever it holds */
	{
		size_t len;
		uint8_t *f = make_incr(1, 1, (const uint32_t[]){0}, data, &len);
		CHECK_EQ_INT(feed_file(t, "base/1/INCREMENTAL.16390_vm", f, len, 8192), 0);
		free(f);
	}
	static const char label[] = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n"
				    "INCREMENTAL FROM LSN: 0/1000028\nINCREMENTAL FROM TLI: 1\n"
				    "START TIMELINE: 1\n";
	CHECK_EQ_INT(feed_file(t, "backup_label", (const uint8_t *)label, strlen(label), 7), 0);
	CHECK_EQ_INT(incr_n_files(in), ELEMENTSOF(cases));
	CHECK_EQ_INT(incr_reused_bytes(in), 7 * CS);

	/* failures: a file the parent lacks, a damaged one, one cut short */
	{
		uint32_t b = 0;
		size_t len;
		uint8_t *f = make_incr(1, 1, &b, data, &len);
		CHECK_EQ_INT(feed_file(t, "base/1/INCREMENTAL.99999", f, len, len), -ENOENT);
		CHECK(strstr(incr_error(in), "\"base/1/99999\"") != NULL);
		f[1] ^= 0xff;
		CHECK_EQ_INT(feed_file(t, "base/1/INCREMENTAL.dmg1", f, len, 100), -EBADMSG);
		CHECK(strstr(incr_error(in), "damaged") != NULL);
		f[1] ^= 0xff;
		CHECK_EQ_INT(feed_file(t, "base/1/INCREMENTAL.dmg2", f, len - 1, 100), -EBADMSG);
		free(f);
	}

	/* the server's manifest, rewritten */
	{
		static const char sent[] =
			"{ \"PostgreSQL-Backup-Manifest-Version\": 2,\n\"System-Identifier\": 7,\n\"Files\": [\n"
			"{ \"Path\": \"backup_label\", \"Size\": 171, \"Last-Modified\": \"2025-01-02 03:04:05 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"00000000\" },\n"
			"{ \"Path\": \"PG_VERSION\", \"Size\": 3, \"Last-Modified\": \"2025-01-02 03:04:05 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"11223344\" },\n"
			"{ \"Path\": \"base/1/INCREMENTAL.16384\", \"Size\": 32768, \"Last-Modified\": \"2025-01-02 03:04:06 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"00000000\" },\n"
			"{ \"Path\": \"base/1/INCREMENTAL.16385\", \"Size\": 12, \"Last-Modified\": \"2025-01-02 03:04:06 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"00000000\" },\n"
			"{ \"Path\": \"base/1/INCREMENTAL.16386\", \"Size\": 12, \"Last-Modified\": \"2025-01-02 03:04:06 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"00000000\" },\n"
			"{ \"Path\": \"base/1/INCREMENTAL.16387\", \"Size\": 12, \"Last-Modified\": \"2025-01-02 03:04:06 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"00000000\" },\n"
			"{ \"Path\": \"base/1/INCREMENTAL.16388\", \"Size\": 12, \"Last-Modified\": \"2025-01-02 03:04:06 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"00000000\" },\n"
			"{ \"Path\": \"base/1/INCREMENTAL.16389.1\", \"Size\": 12, \"Last-Modified\": \"2025-01-02 03:04:06 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"00000000\" },\n"
			"{ \"Path\": \"base/1/INCREMENTAL.16390_vm\", \"Size\": 8204, \"Last-Modified\": \"2025-01-02 03:04:06 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"00000000\" }\n"
			"],\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }\n],\n"
			"\"Manifest-Checksum\": \"0000\"}\n";
		char *m = NULL, hex[65];
		size_t mlen = 0, want_len;
		uint8_t *want = reconstruct(parents[0], cases[0].psize, cases[0].n, cases[0].trunc,
					    cases[0].blocks, data, &want_len);
		uint32_t crc = crc32c(want, want_len);
		char entry[300];
		test_fmt(entry, sizeof(entry), "{ \"Path\": \"base/1/16384\", \"Size\": %zu, "
			 "\"Last-Modified\": \"2025-01-02 03:04:06 GMT\", \"Checksum-Algorithm\": "
			 "\"CRC32C\", \"Checksum\": \"%02x%02x%02x%02x\" },\n", want_len, crc & 0xff,
			 (crc >> 8) & 0xff, (crc >> 16) & 0xff, crc >> 24);
		free(want);
		if (CHECK_EQ_INT(incr_rewrite_manifest(in, sent, strlen(sent), &m, &mlen), 0)) {
			CHECK(strstr(m, entry) != NULL);
			CHECK(strstr(m, "INCREMENTAL") == NULL);
			/* the left-out VM's line is gone, and the entry before it ends the list */
			CHECK(strstr(m, "16390_vm") == NULL);
			CHECK(strstr(m, "\"base/1/16389.1\"") != NULL);
			CHECK(strstr(m, "\" }\n],\n\"WAL-Ranges\"") != NULL);
			CHECK(strstr(m, "\"Checksum\": \"11223344\" },\n") != NULL);
			CHECK(strstr(m, "\"Path\": \"backup_label\", \"Size\": 80,") != NULL);
			char *sum = strstr(m, "\"Manifest-Checksum\": \"");
			unsigned char d[32];
			unsigned int dl = 0;
			if (CHECK(sum != NULL)) {
				EVP_Digest(m, (size_t)(sum - m), d, &dl, EVP_sha256(), NULL);
				hex_encode(d, sizeof(d), hex);
				CHECK(!strncmp(sum + 22, hex, 64) && !strcmp(sum + 86, "\"}\n"));
			}
		}
		free(m);
		/* a manifest that does not list a materialized file */
		static const char short_sent[] = "{ \"Files\": [\n],\n\"Manifest-Checksum\": \"00\"}\n";
		CHECK_EQ_INT(incr_rewrite_manifest(in, short_sent, strlen(short_sent), &m, &mlen), -EPROTO);
	}
	in = incr_free(in);
	t = tree_free(t);
	if (!CHECK_EQ_INT(snapwriter_commit(w, &res2), 0))
		goto out;
	w = snapwriter_free(w);

	/* restored, every file is pg_combinebackup's result */
	if (!CHECK_EQ_INT(catalog_snapshot_get(repo_catalog(r), res2.name, NULL, &s2), 0) ||
	    !CHECK_EQ_INT(restore_snapshot(r, &s2, out, &ro, &rr), 0))
		goto out;
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		const Case *c = &cases[i];
		size_t want_len;
		uint8_t *want = reconstruct(parents[i], c->psize, c->n, c->trunc, c->blocks, data,
					    &want_len);
		test_fmt(p, sizeof(p), "base/1/%s", c->name);
		if (!CHECK(test_file_equals(out, p, want, want_len)))
			fprintf(stderr, "case %s differs\n", c->name);
		free(want);
	}
	test_fmt(p, sizeof(p), "%s/base/1/16390_vm", out);
	CHECK(access(p, F_OK) < 0 && errno == ENOENT);
	CHECK(test_file_equals(out, "backup_label",
			       (const uint8_t *)"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n"
						"START TIMELINE: 1\n", 80));
	test_fmt(p, sizeof(p), "%s/base/1/INCREMENTAL.16384", out);
	CHECK(access(p, F_OK) < 0);
out:
	incr_free(in);
	tree_free(t);
	snapwriter_free(w);
	snapshot_info_clear(&s);
	snapshot_info_clear(&s2);
	repo_free(r);
	for (size_t i = 0; i < ELEMENTSOF(cases); i++)
		free(parents[i]);
	free(data);
	TEST_RM_RF(tmp);
}

int main(void)
{
	test_header();
	test_plan();
	test_crc();
	test_materialize();
	return test_finish();
}
