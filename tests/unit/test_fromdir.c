/* Unit tests for ingest/fromdir.h: a directory tree in, the same tree out. */
#include "tests/unit/test.h"

#include "common/log.h"
#include "ingest/fromdir.h"
#include "store/restore.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>

#define CS 16384

static const RepoInitOptions small_repo = {.chunk_size = CS, .pack_size = 1 << 20};

static int write_at(const char *dir, const char *rel, const void *buf, size_t len, off_t off,
		    off_t total, mode_t mode)
{
	char path[PATH_MAX];
	int fd, r = 0;
	test_fmt(path, sizeof(path), "%s/%s", dir, rel);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
	if (fd < 0)
		return -errno;
	if (total > 0 && ftruncate(fd, total) < 0)
		r = -errno;
	if (r == 0 && len)
		r = pwrite_full(fd, buf, len, off);
	close(fd);
	return r;
}

static bool same_file(const char *a_dir, const char *b_dir, const char *rel)
{
	char a[PATH_MAX], b[PATH_MAX];
	char *ta = NULL, *tb = NULL;
	size_t na = 0, nb = 0;
	bool ok;
	struct stat sa, sb;
	test_fmt(a, sizeof(a), "%s/%s", a_dir, rel);
	test_fmt(b, sizeof(b), "%s/%s", b_dir, rel);
	if (file_read_all(a, 64 << 20, &ta, &na) < 0 || file_read_all(b, 64 << 20, &tb, &nb) < 0) {
		free(ta);
		free(tb);
		return false;
	}
	ok = na == nb && memcmp(ta, tb, na) == 0 && stat(a, &sa) == 0 && stat(b, &sb) == 0 &&
	     sa.st_mode == sb.st_mode && sa.st_mtim.tv_sec == sb.st_mtim.tv_sec &&
	     sa.st_mtim.tv_nsec == sb.st_mtim.tv_nsec;
	free(ta);
	free(tb);
	return ok;
}

static void test_roundtrip(void)
{
	char tmp[64], src[PATH_MAX], repo_path[PATH_MAX], out[PATH_MAX], p[PATH_MAX];
	uint8_t *rnd = xmalloc(5 * CS);
	Repo *r = NULL;
	SnapWriter *w = NULL;
	SnapWriterOptions o = {.jobs = 2, .source = "dir"};
	SnapWriterResult res = {0};
	FromDirError err;
	SnapshotInfo s = {0};
	RestoreOptions ro = {.jobs = 2};
	RestoreResult rr;
	uint64_t total = 0;

	test_tmpdir(tmp, sizeof(tmp));
	test_random(rnd, 5 * CS);
	test_fmt(src, sizeof(src), "%s/src", tmp);
	test_fmt(repo_path, sizeof(repo_path), "%s/repo", tmp);
	test_fmt(out, sizeof(out), "%s/out", tmp);
	CHECK_EQ_INT(mkdir(src, 0750), 0);
	test_fmt(p, sizeof(p), "%s/base", src);
	CHECK_EQ_INT(mkdir(p, 0700), 0);
	test_fmt(p, sizeof(p), "%s/base/1", src);
	CHECK_EQ_INT(mkdir(p, 0700), 0);
	CHECK_EQ_INT(write_at(src, "PG_VERSION", "17\n", 3, 0, 0, 0600), 0);
	CHECK_EQ_INT(write_at(src, "base/1/1259", rnd, 2 * CS + 77, 0, 0, 0600), 0);
	/* sparse: 8 chunks, data only in the 5th */
	CHECK_EQ_INT(write_at(src, "base/1/sparse", rnd + 3 * CS, CS, 4 * CS, 8 * CS, 0640), 0);
	CHECK_EQ_INT(write_at(src, "empty", NULL, 0, 0, 0, 0600), 0);
	test_fmt(p, sizeof(p), "%s/link", src);
	CHECK_EQ_INT(symlink("base/1/1259", p), 0);
	test_fmt(p, sizeof(p), "%s/fifo", src);
	CHECK_EQ_INT(mkfifo(p, 0600), 0); /* skipped with a warning */

	CHECK_EQ_INT(fromdir_total_size(src, &total), 0);
	CHECK_EQ_INT(total, 3 + 2 * CS + 77 + 8 * CS);
	test_fmt(p, sizeof(p), "%s/none", src);
	CHECK_EQ_INT(fromdir_total_size(p, &total), -ENOENT);

	if (!CHECK_EQ_INT(repo_init(repo_path, &small_repo), 0) ||
	    !CHECK_EQ_INT(repo_open(repo_path, &r), 0))
		goto out;
	if (!CHECK_EQ_INT(snapwriter_new(r, &o, &w), 0))
		goto out;
	/* a missing source directory names itself */
	{
		char missing[PATH_MAX];
		test_fmt(missing, sizeof(missing), "%s/nope", tmp);
		CHECK_EQ_INT(fromdir_ingest(w, missing, &err), -ENOENT);
		CHECK_EQ_STR(err.path, missing);
	}
	CHECK_EQ_INT(fromdir_ingest(w, src, &err), 0);
	if (!CHECK_EQ_INT(snapwriter_commit(w, &res), 0))
		goto out;
	w = snapwriter_free(w);
	/* root, base, base/1, 1259, sparse, PG_VERSION, empty, link; not the fifo */
	CHECK_EQ_INT(res.n_files, 8);
	CHECK_EQ_INT(res.logical_bytes, total);
	CHECK(res.hole_chunks >= 7);
	CHECK_EQ_INT(res.new_chunks, 3 + 1 + 1); /* 1259: 3, sparse: 1, PG_VERSION: 1 */

	if (!CHECK_EQ_INT(catalog_snapshot_get(repo_catalog(r), res.name, NULL, &s), 0))
		goto out;
	CHECK_EQ_STR(s.source, "dir");
	if (CHECK_EQ_INT(restore_snapshot(r, &s, out, &ro, &rr), 0)) {
		CHECK_EQ_INT(rr.n_files, 4);
		CHECK_EQ_INT(rr.bytes, total);
		CHECK(same_file(src, out, "PG_VERSION"));
		CHECK(same_file(src, out, "base/1/1259"));
		CHECK(same_file(src, out, "base/1/sparse"));
		CHECK(same_file(src, out, "empty"));
		char target[64] = "";
		test_fmt(p, sizeof(p), "%s/link", out);
		ssize_t n = readlink(p, target, sizeof(target) - 1);
		CHECK_EQ_INT(n, 11);
		CHECK_EQ_STR(target, "base/1/1259");
		test_fmt(p, sizeof(p), "%s/fifo", out);
		CHECK(access(p, F_OK) < 0);
		struct stat st;
		test_fmt(p, sizeof(p), "%s/base/1/sparse", out);
		if (CHECK(stat(p, &st) == 0))
			CHECK((uint64_t)st.st_blocks * 512 < 4 * CS);
		struct stat a, b;
		test_fmt(p, sizeof(p), "%s/base", src);
		CHECK(stat(p, &a) == 0);
		test_fmt(p, sizeof(p), "%s/base", out);
		CHECK(stat(p, &b) == 0);
		CHECK_EQ_INT(a.st_mode, b.st_mode);
		CHECK_EQ_INT(a.st_mtim.tv_sec, b.st_mtim.tv_sec);
		CHECK_EQ_INT(a.st_mtim.tv_nsec, b.st_mtim.tv_nsec);
		CHECK(stat(src, &a) == 0 && stat(out, &b) == 0);
		CHECK_EQ_INT(a.st_mode, b.st_mode);
	}
out:
	snapshot_info_clear(&s);
	snapwriter_free(w);
	repo_free(r);
	free(rnd);
	TEST_RM_RF(tmp);
}

/*
 * Under root/name: 18 directories of 200 bytes, then a file whose name makes
 * its path inside the snapshot rel_len bytes long (mkdirat: the whole path may
 * pass PATH_MAX).
 */
static int make_deep(const char *root, size_t rel_len, char *ret_file, size_t len)
{
	char dname[201], fname[256];
	size_t depth = 18, used = depth * 201, m = rel_len - used;
	int fd = open(root, O_RDONLY | O_DIRECTORY), r = 0;

	if (fd < 0 || m == 0 || m >= sizeof(fname))
		return -EINVAL;
	memset(dname, 'd', 200);
	dname[200] = '\0';
	for (size_t i = 0; i < depth && r == 0; i++) {
		int sub;
		if (mkdirat(fd, dname, 0700) < 0 ||
		    (sub = openat(fd, dname, O_RDONLY | O_DIRECTORY)) < 0) {
			r = -errno;
			break;
		}
		close(fd);
		fd = sub;
	}
	memset(fname, 'f', m);
	fname[m] = '\0';
	if (r == 0) {
		int f = openat(fd, fname, O_WRONLY | O_CREAT, 0600);
		if (f < 0 || write(f, "x", 1) != 1)
			r = -EIO;
		if (f >= 0)
			close(f);
	}
	close(fd);
	snprintf(ret_file, len, "%s", fname);
	return r;
}

/* A path restore could not write is refused, naming it; one byte less is kept. */
static void test_long_paths(void)
{
	char tmp[64], ok_src[PATH_MAX], long_src[PATH_MAX], repo_path[PATH_MAX], out[PATH_MAX];
	char fname[256];
	Repo *r = NULL;
	SnapWriter *w = NULL;
	SnapWriterOptions o = {.jobs = 1, .source = "dir"};
	SnapWriterResult res = {0};
	FromDirError err;
	SnapshotInfo s = {0};
	RestoreOptions ro = {.jobs = 1};
	RestoreResult rr;

	test_tmpdir(tmp, sizeof(tmp));
	test_fmt(ok_src, sizeof(ok_src), "%s/ok", tmp);
	test_fmt(long_src, sizeof(long_src), "%s/long", tmp);
	test_fmt(repo_path, sizeof(repo_path), "%s/repo", tmp);
	test_fmt(out, sizeof(out), "%s/out", tmp);
	CHECK_EQ_INT(mkdir(ok_src, 0700), 0);
	CHECK_EQ_INT(mkdir(long_src, 0700), 0);
	if (!CHECK_EQ_INT(repo_init(repo_path, &small_repo), 0) ||
	    !CHECK_EQ_INT(repo_open(repo_path, &r), 0))
		goto out;

	if (!CHECK_EQ_INT(make_deep(long_src, FROMDIR_PATH_MAX, fname, sizeof(fname)), 0) ||
	    !CHECK_EQ_INT(snapwriter_new(r, &o, &w), 0))
		goto out;
	CHECK_EQ_INT(fromdir_ingest(w, long_src, &err), -ENAMETOOLONG);
	CHECK_EQ_INT(err.rel_len, FROMDIR_PATH_MAX);
	CHECK(strncmp(err.path, long_src, strlen(long_src)) == 0);
	CHECK(strlen(err.path) > strlen(fname) &&
	      strcmp(err.path + strlen(err.path) - strlen(fname), fname) == 0);
	w = snapwriter_free(w); /* nothing committed */

	if (!CHECK_EQ_INT(make_deep(ok_src, FROMDIR_PATH_MAX - 1, fname, sizeof(fname)), 0) ||
	    !CHECK_EQ_INT(snapwriter_new(r, &o, &w), 0))
		goto out;
	CHECK_EQ_INT(fromdir_ingest(w, ok_src, &err), 0);
	if (!CHECK_EQ_INT(snapwriter_commit(w, &res), 0))
		goto out;
	w = snapwriter_free(w);
	CHECK_EQ_INT(res.n_files, 1 + 18 + 1);
	if (CHECK_EQ_INT(catalog_snapshot_get(repo_catalog(r), "latest", NULL, &s), 0)) {
		CHECK_EQ_STR(s.name, res.name);
		/* the target's path plus the longest path kept stays within PATH_MAX */
		CHECK(strlen(out) + 1 + FROMDIR_PATH_MAX - 1 < PATH_MAX);
		if (CHECK_EQ_INT(restore_snapshot(r, &s, out, &ro, &rr), 0))
			CHECK_EQ_INT(rr.n_files, 1);
	}
out:
	snapshot_info_clear(&s);
	snapwriter_free(w);
	repo_free(r);
	TEST_RM_RF(tmp);
}

int main(void)
{
	log_set_level(LOG_ERROR); /* the fifo warning is expected */
	test_roundtrip();
	test_long_paths();
	return test_finish();
}
