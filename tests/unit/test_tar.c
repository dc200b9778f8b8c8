/*
 * ingest/tar.h: ustar archives, built here byte by byte, fed in pieces of
 * every size into a tree and read back by restoring the snapshot: headers,
 * names split over the ustar prefix field, sizes (octal, base-256), padding,
 * the end, and truncated or damaged input (-EPROTO; what tar.h does not read,
 * GNU and pax long-name headers, is refused the same way).
 */
#include "tests/unit/test.h"

#include "common/log.h"
#include "ingest/tar.h"
#include "store/restore.h"

#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

static const RepoInitOptions small_repo = {.chunk_size = 16384, .pack_size = 1 << 20};
static Repo *repo;
static char tmp[64];

/* ---- building archives ---- */

typedef struct {
	uint8_t *buf;
	size_t len, cap;
} Ar;

static void ar_put(Ar *a, const void *p, size_t n)
{
	if (a->len + n > a->cap) {
		a->cap = (a->len + n) * 2;
		a->buf = xrealloc(a->buf, a->cap);
	}
	memcpy(a->buf + a->len, p, n);
	a->len += n;
}

static void octal(uint8_t *f, size_t len, uint64_t v)
{
	char s[32];
	snprintf(s, sizeof(s), "%0*llo", (int)len - 1, (unsigned long long)v);
	memcpy(f, s, len - 1);
	f[len - 1] = '\0';
}

static void header_sum(uint8_t *h)
{
	unsigned sum = 0;
	memset(h + 148, ' ', 8);
	for (int i = 0; i < 512; i++)
		sum += h[i];
	snprintf((char *)h + 148, 8, "%06o", sum);
	h[155] = ' ';
}

/* a ustar header; a name longer than 100 goes into prefix/name at a slash */
static void header(uint8_t h[512], const char *name, char type, uint32_t mode, uint64_t size,
		   uint64_t mtime, const char *link)
{
	size_t n = strlen(name);
	memset(h, 0, 512);
	if (n > 100) {
		const char *cut = name + n - 100;
		cut = strchr(cut, '/');
		memcpy(h + 345, name, (size_t)(cut - name));
		memcpy(h, cut + 1, strlen(cut + 1));
	} else {
		memcpy(h, name, n);
	}
	octal(h + 100, 8, mode);
	octal(h + 108, 8, 1234);
	octal(h + 116, 8, 5678);
	octal(h + 124, 12, size);
	octal(h + 136, 12, mtime);
	h[156] = (uint8_t)type;
	if (link)
		memcpy(h + 157, link, strlen(link));
	memcpy(h + 257, "ustar", 6);
	memcpy(h + 263, "00", 2);
	header_sum(h);
}

static void ar_entry(Ar *a, const char *name, char type, uint32_t mode, const void *data,
		     uint64_t size, const char *link)
{
	uint8_t h[512], zero[512] = {0};
	header(h, name, type, mode, size, 1700000000, link);
	ar_put(a, h, 512);
	if (size) {
		ar_put(a, data, size);
		ar_put(a, zero, (512 - size % 512) % 512);
	}
}

static void ar_end(Ar *a)
{
	uint8_t zero[1024] = {0};
	ar_put(a, zero, sizeof(zero));
}

/* ---- reading them ---- */

typedef struct {
	SnapWriter *w;
	Tree *t;
	TarReader *tr;
} Fx;

static bool fx_begin(Fx *f, const char *prefix)
{
	SnapWriterOptions o = {.jobs = 1, .source = "test"};
	*f = (Fx){0};
	return CHECK_EQ_INT(snapwriter_new(repo, &o, &f->w), 0) &&
	       CHECK_EQ_INT(tree_new(f->w, &f->t), 0) &&
	       CHECK_EQ_INT(tar_reader_new(f->t, prefix, &f->tr), 0);
}

static void fx_abort(Fx *f)
{
	tar_reader_free(f->tr);
	tree_free(f->t);
	snapwriter_free(f->w);
	*f = (Fx){0};
}

/* feed in pieces of piece bytes; the first error */
static int feed(Fx *f, const Ar *a, size_t len, size_t piece)
{
	for (size_t off = 0; off < len; off += piece) {
		int r = tar_reader_feed(f->tr, a->buf + off, MIN(piece, len - off));
		if (r < 0)
			return r;
	}
	return 0;
}

/* the whole archive read in pieces, committed and restored into tmp/NAME */
static bool read_back(const Ar *a, const char *prefix, size_t piece, const char *name, char *out,
		      size_t out_len)
{
	SnapWriterResult res = {0};
	RestoreOptions ro = {.jobs = 1};
	RestoreResult rr;
	SnapshotInfo s = {0};
	Fx f;
	bool ok = false;

	if (!fx_begin(&f, prefix))
		goto out;
	if (!CHECK_EQ_INT(feed(&f, a, a->len, piece), 0) ||
	    !CHECK_EQ_INT(tar_reader_finish(f.tr), 0))
		goto out;
	f.tr = tar_reader_free(f.tr);
	f.t = tree_free(f.t);
	test_fmt(out, out_len, "%s/%s", tmp, name);
	ok = CHECK_EQ_INT(snapwriter_commit(f.w, &res), 0) &&
	     CHECK_EQ_INT(catalog_snapshot_get(repo_catalog(repo), res.name, NULL, &s), 0) &&
	     CHECK_EQ_INT(restore_snapshot(repo, &s, out, &ro, &rr), 0);
out:
	if (!ok)
		fprintf(stderr, "  reading \"%s\" in pieces of %zu\n", name, piece);
	snapshot_info_clear(&s);
	fx_abort(&f);
	return ok;
}

static bool mode_is(const char *dir, const char *rel, mode_t mode)
{
	char p[PATH_MAX];
	struct stat st;
	test_fmt(p, sizeof(p), "%s/%s", dir, rel);
	return lstat(p, &st) == 0 && st.st_mode == mode && st.st_uid == 1234 && st.st_gid == 5678 &&
	       st.st_mtim.tv_sec == 1700000000;
}

static uint8_t rnd[70000];

static void test_archive(void)
{
	static const size_t pieces[] = {1 << 20, 512, 1, 7, 511, 513, 4096 + 3};
	static const size_t sizes[] = {0, 1, 511, 512, 513, 1024, 66000};
	char long_name[256], out[PATH_MAX], name[32], p[PATH_MAX], target[128] = "";
	Ar a = {0};

	/* the root, directories, files of sizes around the block, a symlink, a long name */
	ar_entry(&a, "./", '5', 0700, NULL, 0, NULL);
	ar_entry(&a, "./base/", '5', 0750, NULL, 0, NULL);
	for (size_t i = 0; i < ELEMENTSOF(sizes); i++) {
		snprintf(name, sizeof(name), "base/f%zu", sizes[i]);
		ar_entry(&a, name, i % 2 ? '0' : '\0', 0600, rnd + i, sizes[i], NULL);
	}
	ar_entry(&a, "pg_wal", '2', 0777, NULL, 0, "/var/lib/wal/with a space");
	snprintf(long_name, sizeof(long_name), "%s/%s", "deep/d123456789/d123456789/d123456789/"
		 "d123456789/d123456789/d123456789/d123456789/d123456789/d123456789/d123456789/"
		 "d123456789/d123456789", "a-file-name-of-sixty-characters-0123456789012345678901234567");
	CHECK(strlen(long_name) > 150);
	ar_entry(&a, long_name, '0', 0640, "long", 4, NULL);
	ar_end(&a);

	for (size_t k = 0; k < ELEMENTSOF(pieces); k++) {
		snprintf(name, sizeof(name), "archive%zu", k);
		if (!read_back(&a, k == 0 ? "" : NULL, pieces[k], name, out, sizeof(out)))
			continue;
		CHECK(mode_is(out, "base", S_IFDIR | 0750));
		for (size_t i = 0; i < ELEMENTSOF(sizes); i++) {
			char rel[32];
			snprintf(rel, sizeof(rel), "base/f%zu", sizes[i]);
			if (!CHECK(test_file_equals(out, rel, rnd + i, sizes[i])))
				fprintf(stderr, "  %s, pieces of %zu\n", rel, pieces[k]);
			CHECK(mode_is(out, rel, S_IFREG | 0600));
		}
		CHECK(test_file_equals(out, long_name, (const uint8_t *)"long", 4));
		CHECK(mode_is(out, long_name, S_IFREG | 0640));
		test_fmt(p, sizeof(p), "%s/pg_wal", out);
		CHECK_EQ_INT(readlink(p, target, sizeof(target) - 1), 25);
		CHECK_EQ_STR(target, "/var/lib/wal/with a space");
	}

	/* a prefix: a tablespace's archive lands under pg_tblspc/OID */
	if (read_back(&a, "pg_tblspc/16384", 1000, "prefixed", out, sizeof(out))) {
		CHECK(mode_is(out, "pg_tblspc/16384", S_IFDIR | 0700));
		CHECK(test_file_equals(out, "pg_tblspc/16384/base/f513", rnd + 4, 513));
	}
	free(a.buf);
}

static void test_numbers(void)
{
	char out[PATH_MAX];
	uint8_t h[512], zero[512] = {0};
	Ar a = {0};

	/* base-256 size (GNU, for files of 8 GiB and more) and a space-padded octal mode */
	header(h, "big", '0', 0600, 0, 1700000000, NULL);
	memset(h + 124, 0, 12);
	h[124] = 0x80;
	h[134] = 600 >> 8;
	h[135] = 600 & 0xff;
	memcpy(h + 100, "   644 ", 7);
	header_sum(h);
	ar_put(&a, h, 512);
	ar_put(&a, rnd, 600);
	ar_put(&a, zero, 1024 - 600);
	ar_end(&a);
	if (read_back(&a, NULL, 100, "numbers", out, sizeof(out))) {
		CHECK(test_file_equals(out, "big", rnd, 600));
		CHECK(mode_is(out, "big", S_IFREG | 0644));
	}
	free(a.buf);
}

/* feed a (all of it, or its first len bytes): the error of feed or finish */
static int read_error(const Ar *a, size_t len)
{
	Fx f;
	int r = -1;
	if (!fx_begin(&f, NULL))
		return r;
	r = feed(&f, a, len, 300);
	if (r == 0)
		r = tar_reader_finish(f.tr);
	fx_abort(&f);
	return r;
}

static void test_damage(void)
{
	Ar good = {0};
	uint8_t h[512];

	ar_entry(&good, "dir/", '5', 0700, NULL, 0, NULL);
	ar_entry(&good, "dir/file", '0', 0600, rnd, 1000, NULL);
	ar_entry(&good, "dir/last", '0', 0600, rnd, 10, NULL);
	ar_end(&good);
	CHECK_EQ_INT(read_error(&good, good.len), 0);
	/* no end marker, but stopped between entries: PostgreSQL's streams may */
	CHECK_EQ_INT(read_error(&good, good.len - 1024), 0);
	CHECK_EQ_INT(read_error(&good, good.len - 512), 0);
	/* truncated: in a header, in data, in padding */
	CHECK_EQ_INT(read_error(&good, 100), -EPROTO);
	CHECK_EQ_INT(read_error(&good, 512 + 300), -EPROTO);
	CHECK_EQ_INT(read_error(&good, 1024 + 500), -EPROTO);
	CHECK_EQ_INT(read_error(&good, 1024 + 1000), -EPROTO);
	CHECK_EQ_INT(read_error(&good, 1024 + 1000 + 10), -EPROTO);
	/* what follows the end marker is not read */
	{
		Ar a = {0};
		ar_put(&a, good.buf, good.len);
		ar_put(&a, "garbage after the end", 21);
		CHECK_EQ_INT(read_error(&a, a.len), 0);
		free(a.buf);
	}

	static const struct {
		const char *what;
		size_t off;
		uint8_t value;
		bool resum;
		int want;
	} cases[] = {
		{"a flipped byte in the name", 3, 'X', false, -EPROTO},
		{"a flipped checksum", 153, 0, false, -EPROTO},
		{"a bad octal digit in the size", 124 + 5, '9', true, -EPROTO},
		{"a bad octal digit in the mode", 100 + 2, 'x', true, -EPROTO},
		{"a character device", 156, '3', true, -EPROTO},
		{"a FIFO", 156, '6', true, -EPROTO},
		{"a hard link", 156, '1', true, -EPROTO},
		{"a GNU long name", 156, 'L', true, -EPROTO},
		{"a pax extended header", 156, 'x', true, -EPROTO},
		{"a pax global header", 156, 'g', true, -EPROTO},
	};
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		Ar a = {0};
		ar_put(&a, good.buf, good.len);
		if (cases[i].value)
			a.buf[512 + cases[i].off] = cases[i].value; /* the header of dir/file */
		else
			a.buf[512 + cases[i].off] ^= 1;
		if (cases[i].resum)
			header_sum(a.buf + 512);
		if (!CHECK_EQ_INT(read_error(&a, a.len), cases[i].want))
			fprintf(stderr, "  %s\n", cases[i].what);
		free(a.buf);
	}

	/* names that climb out of the snapshot: refused by the tree */
	static const char *const climb[] = {"../etc/passwd", "dir/../../x", "/abs"};
	for (size_t i = 0; i < ELEMENTSOF(climb); i++) {
		Ar a = {0};
		header(h, climb[i], '0', 0600, 0, 0, NULL);
		ar_put(&a, h, 512);
		ar_end(&a);
		if (!CHECK_EQ_INT(read_error(&a, a.len), -EBADMSG))
			fprintf(stderr, "  \"%s\"\n", climb[i]);
		free(a.buf);
	}
	free(good.buf);
}

int main(void)
{
	char repo_path[PATH_MAX];

	log_set_level(LOG_ERROR);
	test_random(rnd, sizeof(rnd));
	test_tmpdir(tmp, sizeof(tmp));
	test_fmt(repo_path, sizeof(repo_path), "%s/repo", tmp);
	if (CHECK_EQ_INT(repo_init(repo_path, &small_repo), 0) &&
	    CHECK_EQ_INT(repo_open(repo_path, &repo), 0)) {
		test_archive();
		test_numbers();
		test_damage();
	}
	repo_free(repo);
	TEST_RM_RF(tmp);
	return test_finish();
}
