/*
 * ingest/walk.h: the walk's order and what each entry says (sorted, depth
 * first, symlinks not followed, a vanished entry, a directory that cannot be
 * listed, a callback's error), and walk_read_file: holes skipped and handed
 * on as zeros, a file that grew, a file cut short.
 */
#include "tests/unit/test.h"

#include "ingest/walk.h"
#include "store/restore.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>

#define CS 16384

static const RepoInitOptions small_repo = {.chunk_size = CS, .pack_size = 1 << 20};

typedef struct Log {
	char text[4096];
	const char *remove_on; /* rel whose callback removes remove_path */
	char remove_path[PATH_MAX];
	const char *fail_on; /* rel whose callback fails with -EIO */
	int dir_errors, dir_error_r;
	bool bad_names;
} Log;

static void log_add(Log *l, const char *fmt, const char *a, const char *b)
{
	size_t n = strlen(l->text);
	snprintf(l->text + n, sizeof(l->text) - n, fmt, a, b);
}

static int log_entry(void *userdata, const WalkEntry *e, uint64_t *ret_ino)
{
	Log *l = userdata;
	const char *type = e->stat_err == -ENOENT ? "gone"
			   : S_ISDIR(e->st.st_mode)   ? "d"
			   : S_ISLNK(e->st.st_mode)   ? "l"
			   : S_ISREG(e->st.st_mode)   ? "f"
						      : "o";
	log_add(l, "%s:%s ", e->rel, type);
	/* the entry knows its directory: path, names, parent */
	if (strcmp(e->names[0], e->name) > 0 || e->parent != strlen(e->dir_rel) ||
	    (e->fd >= 0) != (!e->stat_err && S_ISDIR(e->st.st_mode)))
		l->bad_names = true;
	if (l->remove_on && !strcmp(e->rel, l->remove_on))
		unlink(l->remove_path);
	if (l->fail_on && !strcmp(e->rel, l->fail_on))
		return -EIO;
	if (e->fd >= 0) {
		*ret_ino = strlen(e->rel); /* checked against dir_rel by its entries */
		return WALK_DESCEND;
	}
	return 0;
}

static int log_dir_error(void *userdata, const char *path _unused_, int r)
{
	Log *l = userdata;
	l->dir_errors++;
	return l->dir_error_r ? l->dir_error_r : (r == -ENOENT ? 0 : r);
}

static const WalkOps log_ops = {.entry = log_entry, .dir_error = log_dir_error};

static void touch(const char *dir, const char *rel)
{
	char p[PATH_MAX];
	test_fmt(p, sizeof(p), "%s/%s", dir, rel);
	CHECK_EQ_INT(file_write_atomic(p, "x", 1, 0600), 0);
}

static void mkdir_in(const char *dir, const char *rel)
{
	char p[PATH_MAX];
	test_fmt(p, sizeof(p), "%s/%s", dir, rel);
	CHECK_EQ_INT(mkdir(p, 0700), 0);
}

static void test_walk_tree(void)
{
	char tmp[64], src[PATH_MAX], p[PATH_MAX];
	Log l = {.fail_on = NULL};

	test_tmpdir(tmp, sizeof(tmp));
	test_fmt(src, sizeof(src), "%s/src", tmp);
	CHECK_EQ_INT(mkdir(src, 0700), 0);
	mkdir_in(src, "b");
	mkdir_in(src, "a");
	mkdir_in(src, "a/y");
	touch(src, "a/z");
	touch(src, "a/y/1");
	touch(src, "a/Y"); /* strcmp: upper case first */
	touch(src, "c");
	test_fmt(p, sizeof(p), "%s/la", src);
	CHECK_EQ_INT(symlink("a", p), 0); /* a directory behind it: not walked */
	test_fmt(p, sizeof(p), "%s/fifo", src);
	CHECK_EQ_INT(mkfifo(p, 0600), 0);

	/* "" as the root's rel, and ino 0 its entries' parent (strlen("")) */
	CHECK_EQ_INT(walk_dir(src, "", 0, &log_ops, &l), 0);
	CHECK_EQ_STR(l.text, "a:d a/Y:f a/y:d a/y/1:f a/z:f b:d c:f fifo:o la:l ");
	CHECK(!l.bad_names);
	CHECK_EQ_INT(l.dir_errors, 0);

	/* another root's rel; an entry removed after its directory was listed */
	l = (Log){.remove_on = "/x/a/Y"};
	test_fmt(l.remove_path, sizeof(l.remove_path), "%s/a/z", src);
	CHECK_EQ_INT(walk_dir(src, "/x", strlen("/x"), &log_ops, &l), 0);
	CHECK_EQ_STR(l.text, "/x/a:d /x/a/Y:f /x/a/y:d /x/a/y/1:f /x/a/z:gone /x/b:d /x/c:f "
			     "/x/fifo:o /x/la:l ");
	CHECK(!l.bad_names);

	/* a callback's error stops the walk, from any depth */
	l = (Log){.fail_on = "a/y/1"};
	CHECK_EQ_INT(walk_dir(src, "", 0, &log_ops, &l), -EIO);
	CHECK_EQ_STR(l.text, "a:d a/Y:f a/y:d a/y/1:f ");

	/* a root that cannot be opened: dir_error decides, and without one it is the error */
	test_fmt(p, sizeof(p), "%s/nope", tmp);
	l = (Log){.fail_on = NULL};
	CHECK_EQ_INT(walk_dir(p, "", 0, &log_ops, &l), 0);
	CHECK_EQ_INT(l.dir_errors, 1);
	l = (Log){.dir_error_r = -EPERM};
	CHECK_EQ_INT(walk_dir(p, "", 0, &log_ops, &l), -EPERM);
	CHECK_EQ_INT(walk_dir(p, "", 0, &(WalkOps){.entry = log_entry}, &l), -ENOENT);
	/* through a symlink to a directory: the root follows it, nothing below does */
	test_fmt(p, sizeof(p), "%s/la", src);
	l = (Log){.fail_on = NULL};
	CHECK_EQ_INT(walk_dir(p, "", 0, &log_ops, &l), 0);
	CHECK_EQ_STR(l.text, "Y:f y:d y/1:f ");
	TEST_RM_RF(tmp);
}

/* ---- walk_read_file ---- */

typedef struct Seen {
	uint64_t data, zeros;
	bool data_not_zero;
} Seen;

static int seen_data(void *userdata, const uint8_t *buf, size_t len)
{
	Seen *s = userdata;
	s->data += len;
	s->data_not_zero |= !buf_is_zero(buf, len);
	return 0;
}

static int seen_zeros(void *userdata, uint64_t len)
{
	((Seen *)userdata)->zeros += len;
	return 0;
}

static const WalkReadOps seen_ops = {.data = seen_data, .zeros = seen_zeros};

/* read path into a snapshot file named name; size as the caller says it was */
static int read_one(SnapWriter *w, uint64_t root, const char *path, const char *name,
		    uint64_t size, bool to_eof, Seen *seen, uint64_t *ret_len)
{
	static uint8_t buf[3 * CS + 100]; /* not a multiple of anything */
	SnapFile *f;
	int fd = open(path, O_RDONLY | O_CLOEXEC), r;
	SnapEntry e = {.parent = root, .name = name, .mode = S_IFREG | 0600};
	if (fd < 0)
		return -errno;
	r = snapwriter_file_begin(w, &e, &f);
	if (r == 0) {
		r = walk_read_file(w, f, fd, size, to_eof, buf, sizeof(buf), &seen_ops, seen,
				   ret_len);
		int r2 = snapwriter_file_end(w, f);
		if (r == 0)
			r = r2;
	}
	close(fd);
	return r;
}

static void test_read_file(void)
{
	char tmp[64], repo_path[PATH_MAX], sparse[PATH_MAX], grown[PATH_MAX], out[PATH_MAX];
	uint8_t *rnd = xmalloc(8 * CS);
	Repo *r = NULL;
	SnapWriter *w = NULL;
	SnapWriterResult res = {0};
	SnapshotInfo s = {0};
	RestoreOptions ro = {.jobs = 2};
	RestoreResult rr;
	Seen seen = {0};
	uint64_t root, len = 0;
	int fd;

	test_tmpdir(tmp, sizeof(tmp));
	test_random(rnd, 8 * CS);
	test_fmt(repo_path, sizeof(repo_path), "%s/repo", tmp);
	test_fmt(out, sizeof(out), "%s/out", tmp);
	/* 64 chunks; data in chunk 10 (part of it) and in chunks 40-41 */
	test_fmt(sparse, sizeof(sparse), "%s/sparse", tmp);
	fd = open(sparse, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0 && ftruncate(fd, 64 * CS) == 0);
	CHECK_EQ_INT(pwrite_full(fd, rnd, 100, 10 * CS + 7), 0);
	CHECK_EQ_INT(pwrite_full(fd, rnd + CS, 2 * CS, 40 * CS), 0);
	close(fd);
	test_fmt(grown, sizeof(grown), "%s/grown", tmp);
	CHECK_EQ_INT(file_write_atomic(grown, rnd, 5 * CS + 3, 0600), 0);

	if (!CHECK_EQ_INT(repo_init(repo_path, &small_repo), 0) ||
	    !CHECK_EQ_INT(repo_open(repo_path, &r), 0) ||
	    !CHECK_EQ_INT(snapwriter_new(r, &(SnapWriterOptions){.jobs = 2, .source = "dir"}, &w),
			  0) ||
	    !CHECK_EQ_INT(snapwriter_add_dir(w, &(SnapEntry){.mode = S_IFDIR | 0700}, &root), 0))
		goto out;

	/* the holes never reach data(): far fewer bytes read than the file holds */
	CHECK_EQ_INT(read_one(w, root, sparse, "sparse", 64 * CS, false, &seen, &len), 0);
	CHECK_EQ_INT(len, 64 * CS);
	CHECK_EQ_INT(seen.data + seen.zeros, 64 * CS);
	CHECK(seen.data >= 2 * CS + 100 && seen.data <= 8 * CS);
	CHECK(seen.data_not_zero);
	/* stopped at the size it was given, or read on to the end */
	seen = (Seen){0};
	CHECK_EQ_INT(read_one(w, root, grown, "cut", 2 * CS, false, &seen, &len), 0);
	CHECK_EQ_INT(len, 2 * CS);
	CHECK_EQ_INT(seen.data, 2 * CS);
	seen = (Seen){0};
	CHECK_EQ_INT(read_one(w, root, grown, "grown", 2 * CS, true, &seen, &len), 0);
	CHECK_EQ_INT(len, 5 * CS + 3);
	CHECK_EQ_INT(seen.data, 5 * CS + 3);
	CHECK_EQ_INT(seen.zeros, 0);
	/* a file that shrank below the size it was opened with ends where it ends */
	seen = (Seen){0};
	CHECK_EQ_INT(read_one(w, root, grown, "shrank", 9 * CS, false, &seen, &len), 0);
	CHECK_EQ_INT(len, 5 * CS + 3);

	if (!CHECK_EQ_INT(snapwriter_commit(w, &res), 0))
		goto out;
	w = snapwriter_free(w);
	CHECK(res.hole_chunks >= 60);
	CHECK_EQ_INT(res.logical_bytes, 64 * CS + 2 * CS + 2 * (5 * CS + 3));
	if (!CHECK_EQ_INT(catalog_snapshot_get(repo_catalog(r), res.name, NULL, &s), 0))
		goto out;
	if (CHECK_EQ_INT(restore_snapshot(r, &s, out, &ro, &rr), 0)) {
		char *a = NULL, *b = NULL;
		size_t na = 0, nb = 0;
		char p[PATH_MAX];
		test_fmt(p, sizeof(p), "%s/sparse", out);
		if (CHECK_EQ_INT(file_read_all(sparse, 64 << 20, &a, &na), 0) &&
		    CHECK_EQ_INT(file_read_all(p, 64 << 20, &b, &nb), 0))
			CHECK(na == nb && memcmp(a, b, na) == 0);
		free(a);
		free(b);
		CHECK(test_file_equals(out, "cut", rnd, 2 * CS));
		CHECK(test_file_equals(out, "grown", rnd, 5 * CS + 3));
	}
out:
	snapshot_info_clear(&s);
	snapwriter_free(w);
	repo_free(r);
	free(rnd);
	TEST_RM_RF(tmp);
}

int main(void)
{
	test_walk_tree();
	test_read_file();
	return test_finish();
}
