/*
 * Unit tests for store/repo.h, snapwriter.h, reader.h, restore.h, check.h and
 * gc.h on a real local repository: init/open errors, a snapshot written
 * through the pipeline and restored byte for byte, deduplication, backend
 * faults during a backup, damage found by check and restore, and gc.
 */
#include "tests/unit/test.h"

#include "store/check.h"
#include "store/gc.h"
#include "store/reader.h"
#include "store/repo.h"
#include "store/restore.h"
#include "store/snapwriter.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>

/* repo_open with a fault driver around the backend, as PGBAKFS_TEST_FAULTS does for the CLI */
static int repo_open_faults(const char *path, const char *faults, Repo **ret)
{
	RepoLocation l = {.url = path, .path = path, .faults = faults};
	return repo_open_at(&l, ret);
}

#define CS 16384
#define T0 (1700000000LL * 1000000000)

static const RepoInitOptions small_repo = {.chunk_size = CS, .pack_size = 1 << 20};

/* ---- helpers ---- */

static mode_t mode_of(const char *dir, const char *rel)
{
	char path[PATH_MAX];
	struct stat st;
	test_fmt(path, sizeof(path), "%s/%s", dir, rel);
	if (stat(path, &st) < 0)
		return (mode_t)-1;
	return st.st_mode & 07777;
}

typedef struct CheckLog {
	char msgs[32][256];
	CheckSeverity sev[32];
	size_t n;
} CheckLog;

static void check_report(CheckSeverity sev, const char *msg, void *userdata)
{
	CheckLog *l = userdata;
	if (l->n < ELEMENTSOF(l->msgs)) {
		test_fmt(l->msgs[l->n], sizeof(l->msgs[0]), "%s", msg);
		l->sev[l->n] = sev;
	}
	l->n++;
}

static void check_log_dump(const CheckLog *l)
{
	for (size_t i = 0; i < l->n && i < ELEMENTSOF(l->msgs); i++)
		fprintf(stderr, "  check %s: %s\n", l->sev[i] == CHECK_ERROR ? "error" : "note",
			l->msgs[i]);
}

static bool check_log_has(const CheckLog *l, const char *needle)
{
	for (size_t i = 0; i < l->n && i < ELEMENTSOF(l->msgs); i++)
		if (strstr(l->msgs[i], needle))
			return true;
	return false;
}

/* Run check; its result; dumps its messages when the error count is not want_errors. */
static CheckResult run_check(Repo *repo, bool read_data, CheckLog *log, uint64_t want_errors)
{
	CheckOptions o = {.read_data = read_data, .jobs = 2};
	CheckResult res = {0};
	*log = (CheckLog){0};
	CHECK_EQ_INT(repo_check(repo, &o, check_report, log, &res), 0);
	if (!CHECK_EQ_INT(res.n_errors, want_errors))
		check_log_dump(log);
	CHECK_EQ_INT(res.n_errors + res.n_notes, log->n);
	return res;
}

static int count_snap(const SnapshotInfo *s _unused_, void *ud)
{
	(*(size_t *)ud)++;
	return 0;
}

static size_t count_snapshots(Repo *repo)
{
	size_t n = 0;
	if (catalog_snapshot_foreach(repo_catalog(repo), NULL, count_snap, &n) < 0)
		return (size_t)-1;
	return n;
}

static int count_session_cb(const char *id _unused_, const char *kind _unused_,
			    int64_t pid _unused_, int64_t started _unused_, void *ud)
{
	(*(size_t *)ud)++;
	return 0;
}

static size_t count_sessions(Repo *repo)
{
	size_t n = 0;
	if (catalog_session_foreach(repo_catalog(repo), count_session_cb, &n) < 0)
		return (size_t)-1;
	return n;
}

static int count_object(const char *name _unused_, uint64_t size _unused_, void *ud)
{
	(*(size_t *)ud)++;
	return 0;
}

static size_t count_packs(Repo *repo)
{
	size_t n = 0;
	if (store_list(repo_backend(repo), "packs/", count_object, &n) < 0)
		return (size_t)-1;
	return n;
}

static int first_pack_cb(const char *name, uint64_t size _unused_, void *ud)
{
	test_fmt(ud, 128, "%s", name);
	return 0;
}

static SnapEntry entry(uint64_t parent, const char *name, mode_t mode)
{
	return (SnapEntry){.parent = parent, .name = name, .mode = mode, .uid = getuid(),
			   .gid = getgid(), .mtime_ns = T0 + 123456789};
}

/* Write a regular file through the producer API, in pieces of piece bytes. */
static int put_file(SnapWriter *w, uint64_t parent, const char *name, mode_t mode,
		    const uint8_t *data, size_t len, size_t piece)
{
	SnapEntry e = entry(parent, name, S_IFREG | mode);
	SnapFile *f = NULL;
	int r = snapwriter_file_begin(w, &e, &f);
	if (r < 0)
		return r;
	for (size_t off = 0; off < len && r == 0; off += piece)
		r = snapwriter_file_write(w, f, data + off, MIN(piece, len - off));
	int r2 = snapwriter_file_end(w, f);
	return r < 0 ? r : r2;
}

/* The test tree, made of random bytes the caller keeps to compare with. */
typedef struct Tree {
	uint8_t data[3 * CS + CS / 2]; /* 3.5 chunks */
	uint8_t tail[10];
} Tree;

#define TREE_LOGICAL (sizeof(((Tree *)0)->data) + 4 * CS + CS + 100)

/*
 * /           0750
 * /data.bin   0640  3.5 chunks of random data, written in 1000-byte pieces
 * /sub/       0700
 * /sub/holes.bin 0600 hole, hole, 10 random bytes + zeros, hole (write_zeros)
 * /sub/zeros.bin 0600 write_zeros(CS + 100): a whole hole and a zero tail
 * /empty      0600
 * /link ->    "data.bin"
 */
static int write_tree(SnapWriter *w, const Tree *t)
{
	SnapEntry root = entry(0, "", S_IFDIR | 0750);
	SnapEntry sub = entry(1, "sub", S_IFDIR | 0700);
	SnapEntry link = entry(1, "link", S_IFLNK | 0777);
	uint64_t root_ino = 0, sub_ino = 0;
	SnapFile *f = NULL;
	int r;

	r = snapwriter_add_dir(w, &root, &root_ino);
	if (r < 0 || !CHECK_EQ_INT(root_ino, 1))
		return r < 0 ? r : -EINVAL;
	r = put_file(w, root_ino, "data.bin", 0640, t->data, sizeof(t->data), 1000);
	if (r < 0)
		return r;
	sub.parent = root_ino;
	r = snapwriter_add_dir(w, &sub, &sub_ino);
	if (r < 0)
		return r;

	SnapEntry holes = entry(sub_ino, "holes.bin", S_IFREG | 0600);
	r = snapwriter_file_begin(w, &holes, &f);
	if (r < 0)
		return r;
	r = snapwriter_file_write_zeros(w, f, 2 * CS);
	if (r == 0)
		r = snapwriter_file_write(w, f, t->tail, sizeof(t->tail));
	if (r == 0)
		r = snapwriter_file_write_zeros(w, f, CS - sizeof(t->tail) + CS);
	int r2 = snapwriter_file_end(w, f);
	if (r < 0 || r2 < 0)
		return r < 0 ? r : r2;

	SnapEntry zeros = entry(sub_ino, "zeros.bin", S_IFREG | 0600);
	r = snapwriter_file_begin(w, &zeros, &f);
	if (r < 0)
		return r;
	r = snapwriter_file_write_zeros(w, f, CS + 100);
	r2 = snapwriter_file_end(w, f);
	if (r < 0 || r2 < 0)
		return r < 0 ? r : r2;

	r = put_file(w, root_ino, "empty", 0600, NULL, 0, 1);
	if (r < 0)
		return r;
	link.parent = root_ino;
	return snapwriter_add_symlink(w, &link, "data.bin");
}

/* Compare a restored tree with t. */
static void verify_tree(const char *dir, const Tree *t)
{
	uint8_t *expect = xcalloc(1, 4 * CS);
	char path[PATH_MAX], target[64];
	struct stat st;
	ssize_t n;

	CHECK(test_file_equals(dir, "data.bin", t->data, sizeof(t->data)));
	memcpy(expect + 2 * CS, t->tail, sizeof(t->tail));
	CHECK(test_file_equals(dir, "sub/holes.bin", expect, 4 * CS));
	memset(expect, 0, 4 * CS);
	CHECK(test_file_equals(dir, "sub/zeros.bin", expect, CS + 100));
	CHECK(test_file_equals(dir, "empty", expect, 0));
	free(expect);

	test_fmt(path, sizeof(path), "%s/link", dir);
	n = readlink(path, target, sizeof(target) - 1);
	CHECK_EQ_INT(n, 8);
	if (n >= 0) {
		target[n] = '\0';
		CHECK_EQ_STR(target, "data.bin");
	}
	CHECK_EQ_INT(mode_of(dir, ""), 0750);
	CHECK_EQ_INT(mode_of(dir, "data.bin"), 0640);
	CHECK_EQ_INT(mode_of(dir, "sub"), 0700);
	CHECK_EQ_INT(mode_of(dir, "sub/holes.bin"), 0600);
	test_fmt(path, sizeof(path), "%s/data.bin", dir);
	if (CHECK(stat(path, &st) == 0)) {
		CHECK_EQ_INT(st.st_mtim.tv_sec, T0 / 1000000000);
		CHECK_EQ_INT(st.st_mtim.tv_nsec, 123456789);
		CHECK_EQ_INT(st.st_uid, getuid());
	}
	test_fmt(path, sizeof(path), "%s/sub", dir);
	if (CHECK(stat(path, &st) == 0))
		CHECK_EQ_INT(st.st_mtim.tv_sec, T0 / 1000000000);
	/* holes stay holes: only one chunk of holes.bin holds data */
	test_fmt(path, sizeof(path), "%s/sub/holes.bin", dir);
	if (CHECK(stat(path, &st) == 0))
		CHECK((uint64_t)st.st_blocks * 512 < 2 * CS);
}

/* One snapshot of fresh random data (one file of n_chunks chunks); first error. */
static int random_snapshot(Repo *repo, size_t n_chunks, SnapWriterResult *res)
{
	SnapWriterOptions o = {.jobs = 2, .label = "random"};
	SnapWriter *w = NULL;
	SnapEntry root = entry(0, "", S_IFDIR | 0700);
	uint8_t *data = xmalloc(n_chunks * CS);
	int r, first = 0;

	test_random(data, n_chunks * CS);
	r = snapwriter_new(repo, &o, &w);
	if (r < 0) {
		free(data);
		return r;
	}
	r = snapwriter_add_dir(w, &root, NULL);
	first = first ? first : r;
	r = put_file(w, 1, "random.bin", 0600, data, n_chunks * CS, 7777);
	first = first ? first : r;
	r = snapwriter_commit(w, res);
	first = first ? first : r;
	CHECK(snapwriter_free(w) == NULL);
	free(data);
	return first;
}

/* ---- tests ---- */

static void test_init_open(void)
{
	char tmp[64], path[PATH_MAX], other[PATH_MAX], cfg[PATH_MAX];
	Repo *r = NULL;
	char *text = NULL;

	test_tmpdir(tmp, sizeof(tmp));
	test_fmt(path, sizeof(path), "%s/repo", tmp);

	/* bad options create nothing */
	RepoInitOptions bad = {.chunk_size = 12345};
	CHECK_EQ_INT(repo_init(path, &bad), -EINVAL);
	bad = (RepoInitOptions){.chunk_size = 65536, .pack_size = 32768};
	CHECK_EQ_INT(repo_init(path, &bad), -EINVAL);
	bad = (RepoInitOptions){.chunk_size = 16 << 20};
	CHECK_EQ_INT(repo_init(path, &bad), -EINVAL);
	CHECK_EQ_INT(dir_is_empty(path), 1);

	if (!CHECK_EQ_INT(repo_init(path, &small_repo), 0))
		goto out;
	/* layout and modes */
	CHECK_EQ_INT(mode_of(path, ""), 0700);
	CHECK_EQ_INT(mode_of(path, "config"), 0600);
	CHECK_EQ_INT(mode_of(path, "catalog.db"), 0600);
	CHECK_EQ_INT(mode_of(path, "packs"), 0700);
	CHECK_EQ_INT(mode_of(path, "locks"), 0700);
	CHECK_EQ_INT(test_count_names(path, "config.tmp"), 0);

	/* a repository is there already; a directory with other files is not ours */
	CHECK_EQ_INT(repo_init(path, &small_repo), -EEXIST);
	CHECK_EQ_INT(repo_init(path, NULL), -EEXIST);
	test_fmt(other, sizeof(other), "%s/other", tmp);
	CHECK_EQ_INT(mkdir(other, 0755), 0);
	test_fmt(cfg, sizeof(cfg), "%s/other/somefile", tmp);
	CHECK_EQ_INT(file_write_atomic(cfg, "x", 1, 0644), 0);
	CHECK_EQ_INT(repo_init(other, &small_repo), -ENOTEMPTY);
	CHECK_EQ_INT(test_count_names(other, ""), 1);

	/* an empty existing directory becomes a repository, with mode 0700 */
	test_fmt(other, sizeof(other), "%s/empty-dir", tmp);
	CHECK_EQ_INT(mkdir(other, 0755), 0);
	CHECK_EQ_INT(repo_init(other, NULL), 0);
	CHECK_EQ_INT(mode_of(other, ""), 0700);
	if (CHECK_EQ_INT(repo_open(other, &r), 0)) {
		/* defaults */
		CHECK_EQ_INT(repo_config(r)->chunk_size, PGBAKFS_DEFAULT_CHUNK_SIZE);
		CHECK_EQ_INT(repo_config(r)->pack_size, PGBAKFS_DEFAULT_PACK_SIZE);
		/* zstd level 1 (docs/design.md, "Encoding"): not the macro, so a change shows */
		CHECK_EQ_INT(repo_config(r)->compress_level, 1);
	}
	r = repo_free(r);

	/* a level chosen at init (or level 3, every repository's before 2026-12) is kept */
	test_fmt(other, sizeof(other), "%s/level-3", tmp);
	CHECK_EQ_INT(repo_init(other, &(RepoInitOptions){.compress_level = 3}), 0);
	if (CHECK_EQ_INT(repo_open(other, &r), 0))
		CHECK_EQ_INT(repo_config(r)->compress_level, 3);
	r = repo_free(r);

	if (!CHECK_EQ_INT(repo_open(path, &r), 0))
		goto out;
	const RepoConfig *c = repo_config(r);
	CHECK_EQ_INT(c->format, PGBAKFS_REPO_FORMAT);
	CHECK_EQ_INT(c->chunk_size, CS);
	CHECK_EQ_INT(c->pack_size, 1 << 20);
	CHECK_EQ_INT(c->compress_level, PGBAKFS_DEFAULT_COMPRESS_LEVEL);
	CHECK_EQ_INT(strlen(c->id), 32);
	CHECK_EQ_STR(repo_path(r), path);
	CHECK_EQ_STR(repo_backend(r)->ops->name, "local");
	CHECK(repo_catalog(r) != NULL);
	{
		Catalog *cat = NULL;
		CHECK_EQ_INT(repo_catalog_open(r, &cat), 0);
		CHECK(cat != NULL);
		catalog_free(cat);
	}
	/* two repositories have different ids */
	{
		Repo *r2 = NULL;
		if (CHECK_EQ_INT(repo_open(other, &r2), 0))
			CHECK(strcmp(repo_config(r2)->id, c->id) != 0);
		repo_free(r2);
	}

	/* sessions: a live one is not reaped, a dead one (no lock held) is */
	{
		RepoSession *s = NULL;
		uint64_t n_sess = 99, n_snaps = 99;
		char lock[PATH_MAX];
		if (CHECK_EQ_INT(repo_session_begin(r, "backup", &s), 0)) {
			CHECK_EQ_INT(strlen(repo_session_id(s)), 32);
			test_fmt(lock, sizeof(lock), "%s/locks/%s.lock", path, repo_session_id(s));
			CHECK(access(lock, F_OK) == 0);
			CHECK_EQ_INT(catalog_session_add(repo_catalog(r), "0123456789abcdef0123456789abcdef",
							 "backup", NULL), 0);
			CHECK_EQ_INT(repo_reap_dead_sessions(r, &n_sess, &n_snaps), 0);
			CHECK_EQ_INT(n_sess, 1);
			CHECK_EQ_INT(n_snaps, 0);
			CHECK_EQ_INT(repo_reap_dead_sessions(r, &n_sess, &n_snaps), 0);
			CHECK_EQ_INT(n_sess, 0);
			CHECK(repo_session_end(r, s) == NULL);
			CHECK(access(lock, F_OK) < 0 && errno == ENOENT);
		}
		CHECK(repo_session_end(r, NULL) == NULL);
	}
	/* maintenance lock: exclusive */
	{
		int fd1 = -1, fd2 = -1;
		CHECK_EQ_INT(repo_lock_maintenance(r, &fd1), 0);
		CHECK_EQ_INT(repo_lock_maintenance(r, &fd2), -EBUSY);
		GcResult g;
		CHECK_EQ_INT(repo_gc(r, &g), -EBUSY);
		if (fd1 >= 0)
			close(fd1);
		CHECK_EQ_INT(repo_lock_maintenance(r, &fd2), 0);
		if (fd2 >= 0)
			close(fd2);
	}
	r = repo_free(r);
	CHECK(repo_free(NULL) == NULL);

	/* not a repository */
	test_fmt(other, sizeof(other), "%s/missing", tmp);
	CHECK_EQ_INT(repo_open(other, &r), -ENOENT);
	test_fmt(other, sizeof(other), "%s/plain-dir", tmp);
	CHECK_EQ_INT(mkdir(other, 0700), 0);
	CHECK_EQ_INT(repo_open(other, &r), -ENOTDIR);
	test_fmt(other, sizeof(other), "%s/other/somefile", tmp);
	CHECK_EQ_INT(repo_open(other, &r), -ENOTDIR);
	CHECK(r == NULL);

	/* a format from the future */
	test_fmt(cfg, sizeof(cfg), "%s/config", path);
	if (CHECK_EQ_INT(file_read_all(cfg, 4096, &text, NULL), 0)) {
		_cleanup_free_ char *cur = xasprintf("format = %d\n", PGBAKFS_REPO_FORMAT);
		char *p = strstr(text, cur);
		if (CHECK(p != NULL)) {
			_cleanup_free_ char *future = xasprintf("%.*sformat = 99\n%s", (int)(p - text), text,
								p + strlen(cur));
			CHECK_EQ_INT(file_write_atomic(cfg, future, strlen(future), 0600), 0);
			CHECK_EQ_INT(repo_open(path, &r), -EPROTONOSUPPORT);
			CHECK(r == NULL);
		}
		/* damaged configs */
		CHECK_EQ_INT(file_write_atomic(cfg, "garbage\n", 8, 0600), 0);
		CHECK_EQ_INT(repo_open(path, &r), -EBADMSG);
		static const char no_id[] = "format = 1\nchunk_size = 16384\npack_size = 1048576\n";
		CHECK_EQ_INT(file_write_atomic(cfg, no_id, strlen(no_id), 0600), 0);
		CHECK_EQ_INT(repo_open(path, &r), -EBADMSG);
		static const char bad_chunk[] = "format = 1\nchunk_size = 1000\npack_size = 1048576\n"
						"id = 0123456789abcdef0123456789abcdef\n";
		CHECK_EQ_INT(file_write_atomic(cfg, bad_chunk, strlen(bad_chunk), 0600), 0);
		CHECK_EQ_INT(repo_open(path, &r), -EBADMSG);
		/* the original config opens again */
		CHECK_EQ_INT(file_write_atomic(cfg, text, strlen(text), 0600), 0);
		CHECK_EQ_INT(repo_open(path, &r), 0);
		r = repo_free(r);

		/* a config without its catalog is a damaged repository */
		char db[PATH_MAX];
		test_fmt(db, sizeof(db), "%s/catalog.db", path);
		CHECK_EQ_INT(unlink(db), 0);
		CHECK_EQ_INT(repo_open(path, &r), -EBADMSG);
		CHECK(r == NULL);
	}
	free(text);

	/* a bad fault script: repo_open fails cleanly */
	test_fmt(other, sizeof(other), "%s/empty-dir", tmp);
	CHECK_EQ_INT(repo_open_faults(other, "put:1=NOSUCHERROR", &r), -EINVAL);
	CHECK(r == NULL);
out:
	repo_free(r);
	TEST_RM_RF(tmp);
}

/* Producer API misuse is refused; freeing an uncommitted writer leaves nothing visible. */
static void test_writer_misuse(void)
{
	char tmp[64], path[PATH_MAX];
	Repo *r = NULL;
	SnapWriter *w = NULL;
	SnapWriterOptions o = {.jobs = 1};
	SnapFile *f = NULL;
	uint8_t data[CS];

	test_tmpdir(tmp, sizeof(tmp));
	test_fmt(path, sizeof(path), "%s/repo", tmp);
	test_random(data, sizeof(data));
	if (!CHECK_EQ_INT(repo_init(path, &small_repo), 0) || !CHECK_EQ_INT(repo_open(path, &r), 0))
		goto out;
	if (!CHECK_EQ_INT(snapwriter_new(r, &o, &w), 0))
		goto out;
	SnapEntry root = entry(0, "", S_IFDIR | 0700);
	SnapEntry notroot = entry(1, "x", S_IFDIR | 0700);
	SnapEntry file = entry(1, "f", S_IFREG | 0600);
	SnapEntry lnk = entry(1, "l", S_IFLNK | 0777);
	CHECK_EQ_INT(snapwriter_add_dir(w, &notroot, NULL), -EINVAL); /* root first */
	file.parent = 0;
	CHECK_EQ_INT(snapwriter_file_begin(w, &file, &f), -EINVAL);
	file.parent = 1;
	CHECK_EQ_INT(snapwriter_add_dir(w, &file, NULL), -EINVAL); /* not a directory */
	CHECK_EQ_INT(snapwriter_add_dir(w, &root, NULL), 0);
	CHECK_EQ_INT(snapwriter_add_dir(w, &root, NULL), -EINVAL); /* only one root */
	CHECK_EQ_INT(snapwriter_add_symlink(w, &lnk, NULL), -EINVAL);
	CHECK_EQ_INT(snapwriter_add_symlink(w, &file, "t"), -EINVAL);
	CHECK_EQ_INT(snapwriter_file_begin(w, &notroot, &f), -EINVAL);
	/* a file left unfinished, and data written: then abandoned */
	CHECK_EQ_INT(put_file(w, 1, "done", 0600, data, sizeof(data), sizeof(data)), 0);
	if (CHECK_EQ_INT(snapwriter_file_begin(w, &file, &f), 0))
		CHECK_EQ_INT(snapwriter_file_write(w, f, data, 100), 0);
	w = snapwriter_free(w);
	CHECK_EQ_INT(count_snapshots(r), 0);
	{
		CatalogStats st;
		CHECK_EQ_INT(catalog_stats(repo_catalog(r), &st), 0);
		CHECK_EQ_INT(st.n_files, 0);
		CHECK_EQ_INT(count_sessions(r), 0);
		char locks[PATH_MAX];
		test_fmt(locks, sizeof(locks), "%s/locks", path);
		CHECK_EQ_INT((test_count_names(locks, "") - test_count_names(locks, "in-use")), 0);
	}
	{
		CheckLog log;
		run_check(r, true, &log, 0);
		GcResult g = {0};
		CHECK_EQ_INT(repo_gc(r, &g), 0);
		CHECK_EQ_INT(g.sessions_reaped, 0);
		CHECK_EQ_INT(count_packs(r), 0);
		run_check(r, true, &log, 0);
		CHECK_EQ_INT(log.n, 0);
	}
out:
	snapwriter_free(w);
	repo_free(r);
	TEST_RM_RF(tmp);
}

/*
 * A chunk that occurs twice in a snapshot (and in its first pack) is stored
 * once: the second copy is found in the unfinished pack.
 */
/* Restore snapshot name of r into target, -j 2. */
static int restore_named(Repo *r, const char *name, const char *target)
{
	SnapshotInfo s = {0};
	RestoreOptions ro = {.jobs = 2};
	RestoreResult rr;
	int rc = catalog_snapshot_get(repo_catalog(r), name, NULL, &s);
	if (rc == 0)
		rc = restore_snapshot(r, &s, target, &ro, &rr);
	snapshot_info_clear(&s);
	return rc;
}

static void test_dedup_within_snapshot(void)
{
	char tmp[64], path[PATH_MAX], target[PATH_MAX];
	Repo *r = NULL;
	SnapWriter *w = NULL;
	SnapWriterOptions o = {.jobs = 1};
	SnapWriterResult res = {0};
	uint8_t *data = xmalloc(2 * CS);

	test_tmpdir(tmp, sizeof(tmp));
	test_fmt(path, sizeof(path), "%s/repo", tmp);
	test_random(data, CS);
	memcpy(data + CS, data, CS); /* two identical chunks */
	if (!CHECK_EQ_INT(repo_init(path, &small_repo), 0) || !CHECK_EQ_INT(repo_open(path, &r), 0))
		goto out;
	if (!CHECK_EQ_INT(snapwriter_new(r, &o, &w), 0))
		goto out;
	SnapEntry root = entry(0, "", S_IFDIR | 0700);
	CHECK_EQ_INT(snapwriter_add_dir(w, &root, NULL), 0);
	CHECK_EQ_INT(put_file(w, 1, "twice.bin", 0600, data, 2 * CS, CS), 0);
	if (!CHECK_EQ_INT(snapwriter_commit(w, &res), 0))
		goto out;
	CHECK_EQ_INT(res.new_chunks, 1);
	CHECK_EQ_INT(res.reused_chunks, 1);
	CHECK_EQ_INT(res.hole_chunks, 0);
	/* one RAW chunk: header + chunk + one entry + footer */
	CHECK_EQ_INT(res.stored_bytes, PACK_HEADER_LEN + CS + PACK_ENTRY_LEN + PACK_FOOTER_LEN);
	{
		CatalogStats st;
		CHECK_EQ_INT(catalog_stats(repo_catalog(r), &st), 0);
		CHECK_EQ_INT(st.n_chunks, 1);
		CHECK_EQ_INT(st.pack_bytes, res.stored_bytes);
	}
	CheckLog log;
	run_check(r, true, &log, 0);
	/* and it restores */
	test_fmt(target, sizeof(target), "%s/restore", tmp);
	if (CHECK_EQ_INT(restore_named(r, res.name, target), 0))
		CHECK(test_file_equals(target, "twice.bin", data, 2 * CS));
out:
	snapwriter_free(w);
	repo_free(r);
	free(data);
	TEST_RM_RF(tmp);
}

/*
 * Chunks that compress to a few bytes: a pack closes at one chunk per 1 KiB
 * of its size (256 in a 256 KiB pack) long before its bytes fill it; the
 * file restores the same.
 */
static void test_pack_chunk_cap(void)
{
	enum { N = 600, SMALL = 8192 };
	const RepoInitOptions tiny_packs = {.chunk_size = SMALL, .pack_size = 256 << 10};
	char tmp[64], path[PATH_MAX], target[PATH_MAX];
	Repo *r = NULL;
	SnapWriter *w = NULL;
	SnapWriterOptions o = {.jobs = 2};
	SnapWriterResult res = {0};
	uint8_t *data = calloc(N, SMALL);
	CatalogStats st;

	test_tmpdir(tmp, sizeof(tmp));
	test_fmt(path, sizeof(path), "%s/repo", tmp);
	for (size_t i = 0; i < N; i++) { /* unique, and nearly all zeros (not a hole) */
		size_t v = i + 1;
		memcpy(data + i * SMALL, &v, sizeof(v));
	}
	if (!CHECK_EQ_INT(repo_init(path, &tiny_packs), 0) || !CHECK_EQ_INT(repo_open(path, &r), 0) ||
	    !CHECK_EQ_INT(snapwriter_new(r, &o, &w), 0))
		goto out;
	SnapEntry root = entry(0, "", S_IFDIR | 0700);
	CHECK_EQ_INT(snapwriter_add_dir(w, &root, NULL), 0);
	CHECK_EQ_INT(put_file(w, 1, "sparse.bin", 0600, data, (size_t)N * SMALL, 65536), 0);
	if (!CHECK_EQ_INT(snapwriter_commit(w, &res), 0))
		goto out;
	CHECK_EQ_INT(res.new_chunks, N);
	CHECK(res.stored_bytes < (256u << 10)); /* would all fit in one pack by size */
	if (CHECK_EQ_INT(catalog_stats(repo_catalog(r), &st), 0)) {
		CHECK_EQ_INT(st.n_chunks, N);
		CHECK_EQ_INT(st.n_packs, (N + 255) / 256);
	}
	test_fmt(target, sizeof(target), "%s/restore", tmp);
	if (CHECK_EQ_INT(restore_named(r, res.name, target), 0)) {
		/* 4.7 MiB: written past the page cache where the file system takes O_DIRECT */
		test_fmt(path, sizeof(path), "%s/direct-probe", tmp);
		int fd = open(path, O_WRONLY | O_CREAT | O_DIRECT, 0600);
		if (fd >= 0) {
			close(fd);
			unlink(path);
			test_fmt(path, sizeof(path), "%s/sparse.bin", target);
			CHECK(test_cached_pages(path) <= 16);
		}
		CHECK(test_file_equals(target, "sparse.bin", data, (size_t)N * SMALL));
	}
out:
	snapwriter_free(w);
	repo_free(r);
	free(data);
	TEST_RM_RF(tmp);
}

/*
 * Chunks larger than restore's 1 MiB runs (--chunk-size up to 8M): a file
 * of 2 MiB chunks and an unaligned tail restores the same.
 */
static void test_restore_large_chunks(void)
{
	const size_t big = 2u << 20, len = 2 * big + big / 2 + 123;
	const RepoInitOptions big_chunks = {.chunk_size = big, .pack_size = 4u << 20};
	char tmp[64], path[PATH_MAX], target[PATH_MAX];
	Repo *r = NULL;
	SnapWriter *w = NULL;
	SnapWriterOptions o = {.jobs = 2};
	SnapWriterResult res = {0};
	uint8_t *data = xmalloc(len);

	test_tmpdir(tmp, sizeof(tmp));
	test_fmt(path, sizeof(path), "%s/repo", tmp);
	test_random(data, len);
	if (!CHECK_EQ_INT(repo_init(path, &big_chunks), 0) || !CHECK_EQ_INT(repo_open(path, &r), 0) ||
	    !CHECK_EQ_INT(snapwriter_new(r, &o, &w), 0))
		goto out;
	SnapEntry root = entry(0, "", S_IFDIR | 0700);
	CHECK_EQ_INT(snapwriter_add_dir(w, &root, NULL), 0);
	CHECK_EQ_INT(put_file(w, 1, "big.bin", 0600, data, len, 65536), 0);
	if (!CHECK_EQ_INT(snapwriter_commit(w, &res), 0))
		goto out;
	test_fmt(target, sizeof(target), "%s/restore", tmp);
	if (CHECK_EQ_INT(restore_named(r, res.name, target), 0))
		CHECK(test_file_equals(target, "big.bin", data, len));
out:
	snapwriter_free(w);
	repo_free(r);
	free(data);
	TEST_RM_RF(tmp);
}

static int find_data_bin(const FileRow *f, void *ud)
{
	if (f->parent == 1 && strcmp(f->name, "data.bin") == 0)
		*(int64_t *)ud = f->content;
	return 0;
}

/* data.bin's chunk ids in snapshot snap_name of r (*s: the snapshot, for the caller to clear). */
static bool data_bin_ids(Repo *r, const char *snap_name, SnapshotInfo *s, ChunkId **ids, size_t *n)
{
	int64_t content = 0;
	return CHECK_EQ_INT(catalog_snapshot_get(repo_catalog(r), snap_name, NULL, s), 0) &&
	       CHECK_EQ_INT(catalog_file_foreach(repo_catalog(r), s->rowid, find_data_bin, &content),
			    0) &&
	       CHECK(content > 0) && CHECK_EQ_INT(catalog_content_get(repo_catalog(r), content, ids, n), 0);
}

static void test_reader(Repo *r, const char *snap_name, const Tree *t)
{
	SnapshotInfo s = {0};
	ChunkReader *cr = NULL;
	uint8_t buf[CS];
	ChunkId *ids = NULL;
	size_t n = 0;

	if (!data_bin_ids(r, snap_name, &s, &ids, &n))
		goto out;
	if (!CHECK_EQ_INT(n, 4) || !CHECK_EQ_INT(chunk_reader_new(r, &cr), 0))
		goto out;
	for (size_t i = 0; i < n; i++) {
		size_t plen = MIN(CS, sizeof(t->data) - i * CS);
		memset(buf, 0xee, sizeof(buf));
		CHECK_EQ_INT(chunk_reader_read(cr, &ids[i], plen, buf), 0);
		CHECK(memcmp(buf, t->data + i * CS, plen) == 0);
	}
	/* a wrong plain length is damage, an unknown chunk is -ENOENT, a hole is zeros */
	CHECK_EQ_INT(chunk_reader_read(cr, &ids[3], CS, buf), -EBADMSG);
	{
		ChunkId unknown;
		chunk_hash("unknown", 7, &unknown);
		CHECK_EQ_INT(chunk_reader_read(cr, &unknown, CS, buf), -ENOENT);
	}
	memset(buf, 0xee, sizeof(buf));
	CHECK_EQ_INT(chunk_reader_read(cr, &chunk_id_hole, CS, buf), 0);
	CHECK(buf_is_zero(buf, CS));
out:
	CHECK(chunk_reader_free(cr) == NULL);
	free(ids);
	snapshot_info_clear(&s);
}

/* A body damaged on the way is fetched once more; damaged twice, it is damage. */
static void test_reader_refetch(const char *path, const char *snap_name, const Tree *t)
{
	static const char *const scripts[] = {"get:1=flip", "get:*=flip"};
	for (size_t k = 0; k < ELEMENTSOF(scripts); k++) {
		Repo *r = NULL;
		SnapshotInfo s = {0};
		ChunkReader *cr = NULL;
		ChunkId *ids = NULL;
		size_t n = 0;
		uint8_t buf[CS];

		if (CHECK_EQ_INT(repo_open_faults(path, scripts[k], &r), 0) &&
		    data_bin_ids(r, snap_name, &s, &ids, &n) && CHECK_EQ_INT(chunk_reader_new(r, &cr), 0)) {
			if (k == 0) {
				CHECK_EQ_INT(chunk_reader_read(cr, &ids[0], CS, buf), 0);
				CHECK(memcmp(buf, t->data, CS) == 0);
			} else {
				CHECK_EQ_INT(chunk_reader_read(cr, &ids[0], CS, buf), -EBADMSG);
			}
			CHECK_EQ_INT(store_fault_count(repo_backend(r), "get"), 2);
		}
		chunk_reader_free(cr);
		free(ids);
		snapshot_info_clear(&s);
		repo_free(r);
	}
}

/*
 * A chunk located already is served from a lent window without a request
 * (restore's workers); bytes of the window that fail are fetched once more,
 * alone, and 1 says so.
 */
static void test_reader_lent(const char *path, const char *snap_name, const Tree *t)
{
	Repo *r = NULL;
	SnapshotInfo s = {0};
	ChunkReader *cr = NULL;
	ChunkId *ids = NULL;
	size_t n = 0;
	ChunkLoc loc;
	int err = 0;
	uint8_t buf[CS], *win = NULL;

	if (!CHECK_EQ_INT(repo_open_faults(path, "put:999=EIO", &r), 0) ||
	    !data_bin_ids(r, snap_name, &s, &ids, &n) || !CHECK_EQ_INT(chunk_reader_new(r, &cr), 0) ||
	    !CHECK_EQ_INT(chunk_reader_locate(cr, ids, 1, &loc, &err), 0) || !CHECK_EQ_INT(err, 0))
		goto out;
	CHECK(loc.has_crc); /* else read_fast_at takes the usual way, which lent windows served already */
	win = malloc(loc.offset + loc.elen);
	if (!CHECK(win) ||
	    !CHECK_EQ_INT(store_get_range(repo_backend(r), loc.pack_name, 0, loc.offset + loc.elen, win), 0))
		goto out;
	chunk_reader_lend(cr, loc.pack_name, 0, win, loc.offset + loc.elen);
	memset(buf, 0xee, sizeof(buf));
	CHECK_EQ_INT(chunk_reader_read_fast_at(cr, &ids[0], &loc, CS, buf), 0);
	CHECK(memcmp(buf, t->data, CS) == 0);
	CHECK_EQ_INT(store_fault_count(repo_backend(r), "get"), 1);
	win[loc.offset + loc.elen / 2] ^= 0x40;
	memset(buf, 0xee, sizeof(buf));
	CHECK_EQ_INT(chunk_reader_read_fast_at(cr, &ids[0], &loc, CS, buf), 1);
	CHECK(memcmp(buf, t->data, CS) == 0);
	CHECK_EQ_INT(store_fault_count(repo_backend(r), "get"), 2);
	chunk_reader_lend(cr, NULL, 0, NULL, 0);
out:
	chunk_reader_free(cr);
	free(win);
	free(ids);
	snapshot_info_clear(&s);
	repo_free(r);
}

static void test_snapshot_roundtrip_faults_gc(void)
{
	char tmp[64], path[PATH_MAX], target[PATH_MAX];
	Repo *r = NULL;
	SnapWriter *w = NULL;
	Tree *t = xmalloc(sizeof(*t));
	SnapWriterOptions o = {.jobs = 2, .label = "unit", .note = "a note", .source = "test"};
	SnapWriterResult res1 = {0}, res2 = {0}, res3 = {0};
	SnapshotInfo s = {0};
	RestoreOptions ro = {.jobs = 2};
	RestoreResult rr;
	CheckLog log;
	CheckResult cres;
	GcResult g;
	size_t n_snaps;
	char locks[PATH_MAX];

	test_tmpdir(tmp, sizeof(tmp));
	test_fmt(path, sizeof(path), "%s/repo", tmp);
	test_fmt(locks, sizeof(locks), "%s/locks", path);
	test_random(t, sizeof(*t));
	if (!CHECK_EQ_INT(repo_init(path, &small_repo), 0) || !CHECK_EQ_INT(repo_open(path, &r), 0))
		goto out;

	/* ---- first snapshot ---- */
	if (!CHECK_EQ_INT(snapwriter_new(r, &o, &w), 0))
		goto out;
	CHECK_EQ_INT(write_tree(w, t), 0);
	/* not visible before commit */
	CHECK_EQ_INT(count_snapshots(r), 0);
	if (!CHECK_EQ_INT(snapwriter_commit(w, &res1), 0))
		goto out;
	w = snapwriter_free(w);
	CHECK_EQ_INT(res1.n_files, 7);
	CHECK_EQ_INT(res1.logical_bytes, TREE_LOGICAL);
	CHECK_EQ_INT(res1.new_chunks, 5);
	CHECK_EQ_INT(res1.reused_chunks, 0);
	CHECK_EQ_INT(res1.hole_chunks, 5);
	/* 4 RAW chunks of data.bin (3.5 chunks), one small zstd chunk, the trailer */
	CHECK(res1.stored_bytes > PACK_HEADER_LEN + sizeof(t->data) + 5 * PACK_ENTRY_LEN + PACK_FOOTER_LEN);
	CHECK(res1.stored_bytes < PACK_HEADER_LEN + sizeof(t->data) + 5 * PACK_ENTRY_LEN + PACK_FOOTER_LEN + 1000);
	CHECK_EQ_INT(strlen(res1.name), 16);
	CHECK_EQ_INT(count_snapshots(r), 1);
	CHECK_EQ_INT(count_packs(r), 1);
	/* no session is left behind */
	CHECK_EQ_INT(count_sessions(r), 0);
	CHECK_EQ_INT((test_count_names(locks, "") - test_count_names(locks, "in-use")), 0);

	/* ---- reopen, look, restore ---- */
	r = repo_free(r);
	if (!CHECK_EQ_INT(repo_open(path, &r), 0))
		goto out;
	if (!CHECK_EQ_INT(catalog_snapshot_get(repo_catalog(r), "latest", NULL, &s), 0))
		goto out;
	CHECK_EQ_STR(s.name, res1.name);
	CHECK_EQ_STR(s.status, "ok");
	CHECK_EQ_STR(s.instance, "main");
	CHECK_EQ_STR(s.type, "full");
	CHECK_EQ_STR(s.label, "unit");
	CHECK_EQ_STR(s.note, "a note");
	CHECK_EQ_STR(s.source, "test");
	CHECK(s.session == NULL);
	CHECK_EQ_INT(s.n_files, 7);
	CHECK_EQ_INT(s.logical_bytes, TREE_LOGICAL);
	CHECK_EQ_INT(s.stored_bytes, res1.stored_bytes);
	CHECK(s.stop_time >= s.start_time && s.start_time > 0);

	test_fmt(target, sizeof(target), "%s/restore1", tmp);
	if (CHECK_EQ_INT(restore_snapshot(r, &s, target, &ro, &rr), 0)) {
		CHECK_EQ_INT(rr.n_files, 4);
		CHECK_EQ_INT(rr.bytes, TREE_LOGICAL);
		verify_tree(target, t);
	}
	/* the target must be empty */
	CHECK_EQ_INT(restore_snapshot(r, &s, target, &ro, &rr), -ENOTEMPTY);
	snapshot_info_clear(&s);
	test_reader(r, res1.name, t);
	test_reader_refetch(path, res1.name, t);
	test_reader_lent(path, res1.name, t);

	/* ---- the same tree again: nothing new is stored ---- */
	if (!CHECK_EQ_INT(snapwriter_new(r, &o, &w), 0))
		goto out;
	CHECK_EQ_INT(write_tree(w, t), 0);
	if (!CHECK_EQ_INT(snapwriter_commit(w, &res2), 0))
		goto out;
	w = snapwriter_free(w);
	CHECK_EQ_INT(res2.stored_bytes, 0);
	CHECK_EQ_INT(res2.new_chunks, 0);
	CHECK_EQ_INT(res2.reused_chunks, 5);
	CHECK_EQ_INT(res2.hole_chunks, 5);
	CHECK_EQ_INT(res2.logical_bytes, TREE_LOGICAL);
	CHECK(strcmp(res1.name, res2.name) != 0);
	CHECK_EQ_INT(count_snapshots(r), 2);
	CHECK_EQ_INT(count_packs(r), 1);

	cres = run_check(r, true, &log, 0);
	CHECK_EQ_INT(cres.n_notes, 0);
	CHECK_EQ_INT(cres.n_packs, 1);
	CHECK_EQ_INT(cres.n_chunks_read, 5);
	CHECK_EQ_INT(cres.n_bad_chunks, 0);
	r = repo_free(r);

	/* ---- the backend runs out of space during a backup ---- */
	n_snaps = 2;
	if (CHECK_EQ_INT(repo_open_faults(path, "put:1=ENOSPC", &r), 0)) {
		CHECK_EQ_STR(repo_backend(r)->ops->name, "fault");
		CHECK_EQ_INT(random_snapshot(r, 3, &res3), -ENOSPC);
		CHECK_EQ_INT(store_fault_count(repo_backend(r), "put"), 1);
		CHECK_EQ_INT(count_snapshots(r), n_snaps);
		/* snapwriter_free cleaned up: no session, no lock, no file rows of the failed snapshot */
		CHECK_EQ_INT(count_sessions(r), 0);
		CHECK_EQ_INT((test_count_names(locks, "") - test_count_names(locks, "in-use")), 0);
		CatalogStats st;
		CHECK_EQ_INT(catalog_stats(repo_catalog(r), &st), 0);
		/* the two snapshots are the same tree: they share its 7 entries */
		CHECK_EQ_INT(st.n_files, 7);
		CHECK_EQ_INT(st.n_chunks, 5);
		if (CHECK_EQ_INT(catalog_snapshot_get(repo_catalog(r), "latest", NULL, &s), 0))
			CHECK_EQ_STR(s.name, res2.name);
		snapshot_info_clear(&s);
		CHECK_EQ_INT(count_packs(r), 1);
		/* leftovers are notes, not errors */
		run_check(r, true, &log, 0);
	}
	r = repo_free(r);

	/* ---- a torn pack write ---- */
	if (CHECK_EQ_INT(repo_open_faults(path, "put:1=crash", &r), 0)) {
		CHECK_EQ_INT(random_snapshot(r, 3, &res3), -EIO);
		CHECK_EQ_INT(count_snapshots(r), n_snaps);
		CHECK_EQ_INT(count_sessions(r), 0);
		CatalogStats st;
		CHECK_EQ_INT(catalog_stats(repo_catalog(r), &st), 0);
		/* the two snapshots are the same tree: they share its 7 entries */
		CHECK_EQ_INT(st.n_files, 7);
		CHECK_EQ_INT(st.n_chunks, 5); /* the torn pack's chunks were never recorded */
		CHECK_EQ_INT(count_packs(r), 2); /* the torn object is there */
		cres = run_check(r, true, &log, 0);
		CHECK(cres.n_notes >= 1);
		CHECK(check_log_has(&log, "not yet recorded"));
	}
	r = repo_free(r);

	/* ---- gc removes what the failed backups left ---- */
	if (!CHECK_EQ_INT(repo_open(path, &r), 0))
		goto out;
	CHECK_EQ_STR(repo_backend(r)->ops->name, "local");
	CHECK_EQ_INT(repo_gc(r, &g), 0);
	CHECK_EQ_INT(g.sessions_reaped, 0);
	CHECK_EQ_INT(g.snapshots_reaped, 0);
	CHECK_EQ_INT(g.contents_deleted, 2); /* the failed snapshots' files */
	CHECK_EQ_INT(g.chunks_deleted, 0);
	CHECK_EQ_INT(g.chunks_waiting, 0);
	CHECK_EQ_INT(g.packs_deleted, 2); /* the two pending pack rows */
	CHECK_EQ_INT(g.orphans_deleted, 0);
	CHECK(g.bytes_reclaimed > CS); /* the torn half pack */
	CHECK_EQ_INT(count_packs(r), 1);
	cres = run_check(r, true, &log, 0);
	CHECK_EQ_INT(cres.n_notes, 0);
	CHECK_EQ_INT(count_snapshots(r), n_snaps);
	/* the snapshots are still whole */
	if (CHECK_EQ_INT(catalog_snapshot_get(repo_catalog(r), res1.name, NULL, &s), 0)) {
		test_fmt(target, sizeof(target), "%s/restore2", tmp);
		if (CHECK_EQ_INT(restore_snapshot(r, &s, target, &ro, &rr), 0))
			verify_tree(target, t);
	}
	snapshot_info_clear(&s);

	/* gc with nothing to do */
	CHECK_EQ_INT(repo_gc(r, &g), 0);
	CHECK_EQ_INT(g.contents_deleted + g.chunks_deleted + g.packs_deleted + g.orphans_deleted +
			     g.bytes_reclaimed + g.sessions_reaped,
		     0);

	/* orphans: an object the catalog does not know, a temporary file of a dead put */
	{
		char tmpf[PATH_MAX];
		CHECK_EQ_INT(store_put(repo_backend(r), "packs/ff/ffffffff.pack", "orphan", 6), 0);
		test_fmt(tmpf, sizeof(tmpf), "%s/packs/ff/.tmp-00000000deadbeef", path);
		CHECK_EQ_INT(file_write_atomic(tmpf, "tmp", 3, 0600), 0);
		CHECK_EQ_INT(repo_gc(r, &g), 0);
		CHECK_EQ_INT(g.orphans_deleted, 2);
		CHECK(g.bytes_reclaimed >= 6);
		CHECK_EQ_INT(count_packs(r), 1);
		CHECK(access(tmpf, F_OK) < 0);
	}

	/* deleting one of two snapshots that share every chunk frees nothing */
	{
		SnapshotInfo s1 = {0}, s2 = {0};
		CHECK_EQ_INT(catalog_snapshot_get(repo_catalog(r), res1.name, NULL, &s1), 0);
		CHECK_EQ_INT(catalog_snapshot_get(repo_catalog(r), res2.name, NULL, &s2), 0);
		CHECK_EQ_INT(catalog_snapshot_delete(repo_catalog(r), s1.rowid), 0);
		CHECK_EQ_INT(repo_gc(r, &g), 0);
		CHECK_EQ_INT(g.chunks_deleted, 0);
		CHECK_EQ_INT(g.packs_deleted, 0);
		CHECK_EQ_INT(count_packs(r), 1);

		/*
		 * a live backup session keeps unreferenced content lists (an incremental
		 * backup may be about to reuse one), and so their chunks
		 */
		RepoSession *sess = NULL;
		CHECK_EQ_INT(repo_session_begin(r, "backup", &sess), 0);
		CHECK_EQ_INT(catalog_snapshot_delete(repo_catalog(r), s2.rowid), 0);
		CHECK_EQ_INT(repo_gc(r, &g), 0);
		CHECK_EQ_INT(g.contents_deleted, 0);
		CHECK_EQ_INT(g.chunks_deleted, 0);
		CHECK_EQ_INT(g.chunks_waiting, 0);
		CHECK_EQ_INT(g.packs_deleted, 0);
		CHECK_EQ_INT(g.sessions_reaped, 0);
		CHECK_EQ_INT(count_packs(r), 1);
		repo_session_end(r, sess);

		/* once it ends, they go, and the pack with them */
		uint64_t pack_size = 0;
		char name[128] = "";
		store_list(repo_backend(r), "packs/", first_pack_cb, name);
		CHECK_EQ_INT(store_size(repo_backend(r), name, &pack_size), 0);
		CHECK_EQ_INT(repo_gc(r, &g), 0);
		CHECK_EQ_INT(g.contents_deleted, 3); /* data.bin, holes.bin, zeros.bin */
		CHECK_EQ_INT(g.chunks_deleted, 5);
		CHECK_EQ_INT(g.chunks_waiting, 0);
		CHECK_EQ_INT(g.packs_deleted, 1);
		CHECK_EQ_INT(g.bytes_reclaimed, pack_size);
		CHECK_EQ_INT(count_packs(r), 0);
		CHECK_EQ_INT(count_snapshots(r), 0);
		snapshot_info_clear(&s1);
		snapshot_info_clear(&s2);
	}
	cres = run_check(r, true, &log, 0);
	CHECK_EQ_INT(cres.n_notes, 0);
	CHECK_EQ_INT(cres.n_packs, 0);
	{
		CatalogStats st;
		CHECK_EQ_INT(catalog_stats(repo_catalog(r), &st), 0);
		CHECK_EQ_INT(st.n_chunks + st.n_contents + st.n_files + st.n_packs, 0);
	}
out:
	snapshot_info_clear(&s);
	snapwriter_free(w);
	repo_free(r);
	free(t);
	TEST_RM_RF(tmp);
}

/* Damage in a pack is found by the reader, restore and check, and traced to its file. */
static void test_damage(void)
{
	char tmp[64], path[PATH_MAX], target[PATH_MAX], pack[PATH_MAX], name[128] = "";
	Repo *r = NULL;
	Tree *t = xmalloc(sizeof(*t));
	SnapWriterOptions o = {.jobs = 2};
	SnapWriter *w = NULL;
	SnapWriterResult res = {0};
	SnapshotInfo s = {0};
	RestoreOptions ro = {.jobs = 2};
	RestoreResult rr;
	CheckLog log;
	CheckResult cres;
	ChunkLoc loc;
	ChunkId id1;
	int fd;

	test_tmpdir(tmp, sizeof(tmp));
	test_fmt(path, sizeof(path), "%s/repo", tmp);
	test_random(t, sizeof(*t));
	if (!CHECK_EQ_INT(repo_init(path, &small_repo), 0) || !CHECK_EQ_INT(repo_open(path, &r), 0))
		goto out;
	if (!CHECK_EQ_INT(snapwriter_new(r, &o, &w), 0))
		goto out;
	CHECK_EQ_INT(write_tree(w, t), 0);
	if (!CHECK_EQ_INT(snapwriter_commit(w, &res), 0))
		goto out;
	w = snapwriter_free(w);
	if (!CHECK_EQ_INT(catalog_snapshot_get(repo_catalog(r), res.name, NULL, &s), 0))
		goto out;

	/* flip one byte inside the second chunk of data.bin */
	chunk_hash(t->data + CS, CS, &id1);
	if (!CHECK_EQ_INT(catalog_chunk_locate(repo_catalog(r), &id1, &loc), 0))
		goto out;
	test_fmt(pack, sizeof(pack), "%s/%s", path, loc.pack_name);
	fd = open(pack, O_RDWR);
	if (CHECK(fd >= 0)) {
		uint8_t byte;
		off_t at = (off_t)(loc.offset + loc.elen / 2);
		CHECK_EQ_INT(pread(fd, &byte, 1, at), 1);
		byte ^= 0x01;
		CHECK_EQ_INT(pwrite(fd, &byte, 1, at), 1);
		close(fd);
	}

	/* the reader never returns wrong data */
	{
		ChunkReader *cr = NULL;
		uint8_t buf[CS];
		if (CHECK_EQ_INT(chunk_reader_new(r, &cr), 0))
			CHECK_EQ_INT(chunk_reader_read(cr, &id1, CS, buf), -EBADMSG);
		chunk_reader_free(cr);
	}
	/* restore fails and says where */
	test_fmt(target, sizeof(target), "%s/restore", tmp);
	CHECK_EQ_INT(restore_snapshot(r, &s, target, &ro, &rr), -EBADMSG);
	CHECK(strstr(rr.failed_path, "data.bin") != NULL);
	CHECK_EQ_INT(rr.failed_offset, CS);
	TEST_RM_RF(target);

	/* check without read_data sees nothing wrong; with it, the damaged file */
	run_check(r, false, &log, 0);
	cres = run_check(r, true, &log, 3);
	CHECK_EQ_INT(cres.n_bad_chunks, 1);
	CHECK(check_log_has(&log, "is damaged"));
	CHECK(check_log_has(&log, "file \"data.bin\" is damaged"));
	CHECK(check_log_has(&log, res.name));

	/* a truncated pack: its size no longer matches; every chunk in it is lost */
	CHECK_EQ_INT(truncate(pack, CS), 0);
	cres = run_check(r, false, &log, 1 + 2 + 1); /* the pack, two files, the summary */
	CHECK_EQ_INT(cres.n_bad_chunks, 5);
	CHECK(check_log_has(&log, "bytes, the catalog expects"));
	CHECK(check_log_has(&log, "sub/holes.bin"));
	/* a missing pack */
	store_list(repo_backend(r), "packs/", first_pack_cb, name);
	CHECK_EQ_INT(store_delete(repo_backend(r), name), 0);
	cres = run_check(r, false, &log, 1 + 2 + 1);
	CHECK(check_log_has(&log, "is missing"));
	CHECK(check_log_has(&log, "damaged snapshots"));
out:
	snapshot_info_clear(&s);
	snapwriter_free(w);
	repo_free(r);
	free(t);
	TEST_RM_RF(tmp);
}

int main(void)
{
	test_init_open();
	test_writer_misuse();
	test_dedup_within_snapshot();
	test_pack_chunk_cap();
	test_restore_large_chunks();
	test_snapshot_roundtrip_faults_gc();
	test_damage();
	return test_finish();
}
