/*
 * ingest/tree.h: paths in, a snapshot's tree out (read back by restoring it):
 * parents and root made on demand with the entry's owner, an existing path
 * skipped, paths that climb out refused, page checks of relation files only,
 * diverted files.
 */
#include "tests/unit/test.h"

#include "common/log.h"
#include "ingest/pgpage.h"
#include "ingest/tree.h"
#include "store/restore.h"

#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

static const RepoInitOptions small_repo = {.chunk_size = 16384, .pack_size = 1 << 20};
static Repo *repo;
static char tmp[64];

typedef struct {
	SnapWriter *w;
	Tree *t;
} Fx;

static bool fx_begin(Fx *f)
{
	SnapWriterOptions o = {.jobs = 1, .source = "test"};
	*f = (Fx){0};
	return CHECK_EQ_INT(snapwriter_new(repo, &o, &f->w), 0) &&
	       CHECK_EQ_INT(tree_new(f->w, &f->t), 0);
}

static void fx_abort(Fx *f)
{
	tree_free(f->t);
	snapwriter_free(f->w);
	*f = (Fx){0};
}

/* commit, then restore into tmp/NAME */
static bool fx_restore(Fx *f, const char *name, char *out, size_t len, SnapshotInfo *ret)
{
	SnapWriterResult res = {0};
	RestoreOptions ro = {.jobs = 1};
	RestoreResult rr;
	bool ok;

	test_fmt(out, len, "%s/%s", tmp, name);
	tree_free(f->t);
	f->t = NULL;
	ok = CHECK_EQ_INT(snapwriter_commit(f->w, &res), 0) &&
	     CHECK_EQ_INT(catalog_snapshot_get(repo_catalog(repo), res.name, NULL, ret), 0) &&
	     CHECK_EQ_INT(restore_snapshot(repo, ret, out, &ro, &rr), 0);
	fx_abort(f);
	return ok;
}

static bool stat_is(const char *dir, const char *rel, mode_t mode, uid_t uid, gid_t gid)
{
	char p[PATH_MAX];
	struct stat st;
	test_fmt(p, sizeof(p), "%s/%s", dir, rel);
	if (lstat(p, &st) < 0) {
		fprintf(stderr, "  %s: %m\n", p);
		return false;
	}
	if (st.st_mode != mode || st.st_uid != uid || st.st_gid != gid) {
		fprintf(stderr, "  %s: mode %o uid %u gid %u\n", p, st.st_mode, st.st_uid, st.st_gid);
		return false;
	}
	return true;
}

static void test_build(void)
{
	Fx f;
	TreeFile *tf = NULL;
	SnapshotInfo s = {0};
	char out[PATH_MAX], p[PATH_MAX], target[64] = "";
	const TreeMeta m = {.mode = 0640, .uid = 1234, .gid = 5678, .mtime_ns = 1000000000LL * 1700000000};
	const TreeMeta dm = {.mode = 0755, .uid = 1, .gid = 2, .mtime_ns = 0};
	uint32_t uid = 0, gid = 0;

	if (!fx_begin(&f))
		return;
	CHECK(!tree_exists(f.t, "base"));
	/* a file whose parents do not exist: they are made, 0700, with the file's owner */
	if (CHECK_EQ_INT(tree_file_begin(f.t, "base/1/1259", &m, &tf), 0) && CHECK(tf)) {
		CHECK_EQ_INT(tree_file_write(f.t, tf, "hello, ", 7), 0);
		CHECK_EQ_INT(tree_file_write(f.t, tf, "tree", 4), 0);
		CHECK_EQ_INT(tree_file_end(f.t, tf), 0);
	}
	CHECK(tree_exists(f.t, "base") && tree_exists(f.t, "base/1") && tree_exists(f.t, "base/1/1259"));
	tree_root_owner(f.t, &uid, &gid);
	CHECK(uid == 1234 && gid == 5678);
	CHECK_EQ_INT(tree_add_dir(f.t, "pg_wal", &dm), 0);
	CHECK_EQ_INT(tree_add_symlink(f.t, "pg_tblspc/16384", &m, "/srv/ts"), 0);
	/* an existing path is skipped: the first entry stays */
	CHECK_EQ_INT(tree_add_dir(f.t, "base", &dm), 0);
	tf = (TreeFile *)1;
	CHECK_EQ_INT(tree_file_begin(f.t, "base/1/1259", &dm, &tf), 0);
	CHECK(tf == NULL);
	CHECK_EQ_INT(tree_add_symlink(f.t, "pg_wal", &m, "/elsewhere"), 0);
	CHECK_EQ_INT(tree_add_dir(f.t, "pg_tblspc/16384", &dm), 0);
	CHECK_EQ_INT(tree_ensure_root(f.t, &dm), 0); /* the root exists: nothing changes */
	tree_root_owner(f.t, &uid, &gid);
	CHECK(uid == 1234 && gid == 5678);

	if (!fx_restore(&f, "build", out, sizeof(out), &s))
		goto out;
	CHECK(test_file_equals(out, "base/1/1259", (const uint8_t *)"hello, tree", 11));
	CHECK(stat_is(out, "base/1/1259", S_IFREG | 0640, 1234, 5678));
	CHECK(stat_is(out, "base", S_IFDIR | 0700, 1234, 5678));
	CHECK(stat_is(out, "base/1", S_IFDIR | 0700, 1234, 5678));
	CHECK(stat_is(out, "pg_wal", S_IFDIR | 0755, 1, 2));
	CHECK(stat_is(out, "pg_tblspc", S_IFDIR | 0700, 1234, 5678));
	test_fmt(p, sizeof(p), "%s/pg_tblspc/16384", out);
	CHECK_EQ_INT(readlink(p, target, sizeof(target) - 1), 7);
	CHECK_EQ_STR(target, "/srv/ts");
	struct stat st;
	test_fmt(p, sizeof(p), "%s/base/1/1259", out);
	if (CHECK(stat(p, &st) == 0))
		CHECK(st.st_mtim.tv_sec == 1700000000 && st.st_mtim.tv_nsec == 0);
out:
	snapshot_info_clear(&s);
}

static void test_bad_paths(void)
{
	static const char *const bad[] = {"",	 "/etc/passwd", "a//b", "..", "../x",  "a/..",
					  "a/../b", ".",	  "./a",  "a/.",  "a/./b"};
	const TreeMeta m = {.mode = 0600};
	Fx f;
	TreeFile *tf;

	if (!fx_begin(&f))
		return;
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		tf = (TreeFile *)1;
		if (!CHECK_EQ_INT(tree_file_begin(f.t, bad[i], &m, &tf), -EBADMSG))
			fprintf(stderr, "  \"%s\"\n", bad[i]);
		CHECK(tf == NULL);
		CHECK_EQ_INT(tree_add_dir(f.t, bad[i], &m), -EBADMSG);
		CHECK_EQ_INT(tree_add_symlink(f.t, bad[i], &m, "x"), -EBADMSG);
	}
	/* names that only look like them are fine */
	CHECK_EQ_INT(tree_add_dir(f.t, "..a", &m), 0);
	CHECK_EQ_INT(tree_add_dir(f.t, "a.", &m), 0);
	CHECK_EQ_INT(tree_add_dir(f.t, ".a/b..", &m), 0);
	/* a parent that is not a directory */
	CHECK_EQ_INT(tree_add_symlink(f.t, "link", &m, "a."), 0);
	CHECK_EQ_INT(tree_add_dir(f.t, "link/sub", &m), -ENOTDIR);
	tf = NULL;
	CHECK_EQ_INT(tree_file_begin(f.t, "link/file", &m, &tf), -ENOTDIR);
	CHECK(tf == NULL);
	fx_abort(&f);
}

/* a valid page of ours: pd_lsn lsn, pd_lower 24, pd_upper 8192, checksummed as block blkno */
static void make_page(uint8_t *page, uint32_t blkno, uint32_t lsn)
{
	memset(page, 0, PG_BLCKSZ);
	memcpy(page + 4, &lsn, 4);
	page[12] = 24;
	page[15] = 0x20;
	memset(page + 4096, 0xab, 100);
	uint16_t sum = pg_page_checksum(page, blkno);
	memcpy(page + 8, &sum, 2);
}

typedef struct {
	char path[64];
	uint64_t block;
	int n;
} BadSeen;

static int bad_seen(const char *path, uint64_t block, void *userdata)
{
	BadSeen *b = userdata;
	snprintf(b->path, sizeof(b->path), "%s", path);
	b->block = block;
	b->n++;
	return 0;
}

static void write_pages(Fx *f, const char *path, const uint8_t *buf, size_t len)
{
	const TreeMeta m = {.mode = 0600};
	TreeFile *tf = NULL;
	if (!CHECK_EQ_INT(tree_file_begin(f->t, path, &m, &tf), 0) || !CHECK(tf))
		return;
	for (size_t off = 0; off < len; off += 1000)
		CHECK_EQ_INT(tree_file_write(f->t, tf, buf + off, MIN(1000, len - off)), 0);
	CHECK_EQ_INT(tree_file_end(f->t, tf), 0);
}

static void test_verify(void)
{
	uint8_t *file = xcalloc(4, PG_BLCKSZ);
	SnapshotInfo s = {0};
	char out[PATH_MAX];
	BadSeen seen = {0};
	Fx f;

	/* blocks 0 and 1 valid, 2 damaged, 3 new; the second segment's blocks are other numbers */
	make_page(file, 0, 0x1000);
	make_page(file + PG_BLCKSZ, 1, 0x1000);
	make_page(file + 2 * PG_BLCKSZ, 2, 0x1000);
	file[2 * PG_BLCKSZ + 5000] ^= 1;
	if (!fx_begin(&f))
		goto out;
	tree_verify_pages(f.t, 0x2000);
	write_pages(&f, "base/1/16384", file, 4 * PG_BLCKSZ);
	CHECK_EQ_INT(tree_bad_pages(f.t), 1);
	write_pages(&f, "base/1/PG_VERSION", file, 4 * PG_BLCKSZ); /* not a relation: not checked */
	write_pages(&f, "base/1/16385.1", file, 2 * PG_BLCKSZ);    /* blocks 131072 and 131073 */
	CHECK_EQ_INT(tree_bad_pages(f.t), 3);
	if (fx_restore(&f, "verify", out, sizeof(out), &s)) {
		CHECK(test_file_equals(out, "base/1/16384", file, 4 * PG_BLCKSZ));
		CHECK_EQ_INT(catalog_bad_block_foreach(repo_catalog(repo), s.rowid, bad_seen, &seen), 0);
		CHECK_EQ_INT(seen.n, 3);
	}
	snapshot_info_clear(&s);

	/* pages written after the start LSN are not checked; no verification: nothing is */
	if (!fx_begin(&f))
		goto out;
	tree_verify_pages(f.t, 0x1000);
	write_pages(&f, "base/1/16384", file, 4 * PG_BLCKSZ);
	CHECK_EQ_INT(tree_bad_pages(f.t), 0);
	fx_abort(&f);
	if (!fx_begin(&f))
		goto out;
	write_pages(&f, "base/1/16384", file, 4 * PG_BLCKSZ);
	CHECK_EQ_INT(tree_bad_pages(f.t), 0);
	fx_abort(&f);
out:
	free(file);
}

typedef struct {
	int begins, ends, n_states;
	size_t bytes;
	int fail_begin;
	int state;
} Divert;

static int dv_begin(void *userdata, const char *path, const TreeMeta *m, void **ret_state)
{
	Divert *d = userdata;
	(void)m;
	d->begins++;
	if (d->fail_begin)
		return -EIO;
	if (strncmp(path, "INCREMENTAL.", 12) && !strstr(path, "/INCREMENTAL."))
		return 0;
	*ret_state = &d->state;
	return 1;
}

static int dv_write(void *userdata, void *state, const void *buf, size_t len)
{
	Divert *d = userdata;
	(void)buf;
	if (state != &d->state)
		return -EINVAL;
	d->bytes += len;
	return 0;
}

static int dv_end(void *userdata, void *state)
{
	Divert *d = userdata;
	d->ends += state == &d->state;
	return 0;
}

static void test_divert(void)
{
	Divert d = {0};
	TreeDivert td = {.begin = dv_begin, .write = dv_write, .end = dv_end, .userdata = &d};
	const TreeMeta m = {.mode = 0600};
	SnapshotInfo s = {0};
	char out[PATH_MAX], p[PATH_MAX];
	TreeFile *tf = NULL;
	ChunkId id = {0};
	Fx f;

	if (!fx_begin(&f))
		return;
	tree_set_divert(f.t, &td);
	if (CHECK_EQ_INT(tree_file_begin(f.t, "base/1/INCREMENTAL.16384", &m, &tf), 0) && CHECK(tf)) {
		CHECK_EQ_INT(tree_file_write(f.t, tf, "abcdef", 6), 0);
		CHECK_EQ_INT(tree_file_write_ids(f.t, tf, &id, 1, 16384), -EINVAL);
		CHECK_EQ_INT(tree_file_end(f.t, tf), 0);
	}
	CHECK(d.begins == 1 && d.ends == 1 && d.bytes == 6);
	/* not taken: an ordinary file */
	if (CHECK_EQ_INT(tree_file_begin(f.t, "base/1/16384", &m, &tf), 0) && CHECK(tf)) {
		CHECK_EQ_INT(tree_file_write(f.t, tf, "xyz", 3), 0);
		CHECK_EQ_INT(tree_file_end(f.t, tf), 0);
	}
	CHECK(d.begins == 2 && d.ends == 1 && d.bytes == 6);
	/* the diverter's failure is the caller's */
	d.fail_begin = 1;
	tf = (TreeFile *)1;
	CHECK_EQ_INT(tree_file_begin(f.t, "base/1/INCREMENTAL.1", &m, &tf), -EIO);
	CHECK(tf == NULL);
	if (fx_restore(&f, "divert", out, sizeof(out), &s)) {
		CHECK(test_file_equals(out, "base/1/16384", (const uint8_t *)"xyz", 3));
		test_fmt(p, sizeof(p), "%s/base/1/INCREMENTAL.16384", out);
		CHECK(access(p, F_OK) < 0);
	}
	snapshot_info_clear(&s);
}

static void test_empty(void)
{
	const TreeMeta m = {.mode = 0750, .uid = 7, .gid = 8};
	SnapshotInfo s = {0};
	char out[PATH_MAX];
	Fx f;

	if (!fx_begin(&f))
		return;
	CHECK_EQ_INT(tree_ensure_root(f.t, &m), 0);
	CHECK_EQ_INT(tree_ensure_root(f.t, &m), 0);
	if (fx_restore(&f, "empty", out, sizeof(out), &s))
		CHECK_EQ_INT(test_count_names(out, ""), 0);
	snapshot_info_clear(&s);
}

int main(void)
{
	char repo_path[PATH_MAX];

	log_set_level(LOG_ERROR);
	test_tmpdir(tmp, sizeof(tmp));
	test_fmt(repo_path, sizeof(repo_path), "%s/repo", tmp);
	if (CHECK_EQ_INT(repo_init(repo_path, &small_repo), 0) &&
	    CHECK_EQ_INT(repo_open(repo_path, &repo), 0)) {
		test_build();
		test_bad_paths();
		test_verify();
		test_divert();
		test_empty();
	}
	repo_free(repo);
	TEST_RM_RF(tmp);
	return test_finish();
}
