/*
 * Unit tests for fs/clone.h: a writable copy-on-write clone over a fake
 * snapshot held in memory, whose reads are counted.
 */
#include "tests/unit/test.h"

#include "fs/clone.h"

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sqlite3.h>
#include <sys/mount.h>

#define CS 4096u
#define BIG_SIZE (CS * 7 / 2) /* 3.5 chunks */
#define HUGE_CHUNKS 64

enum { INO_ROOT = 1, INO_BIG, INO_EMPTY, INO_SUB, INO_DEEP, INO_SMALL, INO_LINK, INO_F2,
       INO_HUGE, N_INO };

static const CloneSeedFile seed[] = {
	{.ino = INO_ROOT, .parent = 1, .name = "", .mode = S_IFDIR | 0755},
	{.ino = INO_BIG, .parent = 1, .name = "big", .mode = S_IFREG | 0644, .size = BIG_SIZE,
	 .mtime_ns = 1000},
	{.ino = INO_EMPTY, .parent = 1, .name = "empty", .mode = S_IFREG | 0600},
	{.ino = INO_SUB, .parent = 1, .name = "sub", .mode = S_IFDIR | 0750, .uid = 7, .gid = 8},
	{.ino = INO_DEEP, .parent = INO_SUB, .name = "deep", .mode = S_IFDIR | 0700},
	{.ino = INO_SMALL, .parent = INO_SUB, .name = "small", .mode = S_IFREG | 0644, .size = 100},
	{.ino = INO_LINK, .parent = 1, .name = "link", .mode = S_IFLNK | 0777, .size = 3,
	 .target = "big"},
	{.ino = INO_F2, .parent = INO_DEEP, .name = "f2", .mode = S_IFREG | 0644, .size = 5000},
	{.ino = INO_HUGE, .parent = 1, .name = "huge", .mode = S_IFREG | 0644,
	 .size = CS * HUGE_CHUNKS},
};

/* The fake snapshot: file bytes are a function of (ino, offset). */
typedef struct Lower {
	pthread_mutex_t lock;
	unsigned n_calls, n_bad;
	uint64_t n_bytes;
	int fail; /* -errno to return, or 0 */
	bool slow;
} Lower;

static uint8_t pattern(uint32_t ino, uint64_t off)
{
	return (uint8_t)(off * 31 + ino * 7 + off / CS * 13 + 1);
}

static int lower_read(void *userdata, uint32_t ino, uint64_t off, size_t len, void *buf)
{
	Lower *l = userdata;
	int fail;
	pthread_mutex_lock(&l->lock);
	l->n_calls++;
	l->n_bytes += len;
	if (ino == 0 || ino >= N_INO || off + len > seed[ino - 1].size)
		l->n_bad++;
	fail = l->fail;
	pthread_mutex_unlock(&l->lock);
	if (l->slow)
		sched_yield();
	if (fail)
		return fail;
	for (size_t i = 0; i < len; i++)
		((uint8_t *)buf)[i] = pattern(ino, off + i);
	return 0;
}

static void lower_reset(Lower *l)
{
	pthread_mutex_lock(&l->lock);
	l->n_calls = 0;
	l->n_bytes = 0;
	pthread_mutex_unlock(&l->lock);
}

static Lower lower = {.lock = PTHREAD_MUTEX_INITIALIZER};

static int open_clone_as(const char *dir, const char *snap, uint64_t cs, Clone **ret)
{
	CloneOptions o = {.dir = dir, .snapshot = snap, .seed = seed, .n_seed = ELEMENTSOF(seed),
			  .chunk_size = cs, .lower_read = lower_read, .userdata = &lower};
	return clone_open(&o, ret);
}

static Clone *open_clone(const char *dir)
{
	Clone *c = NULL;
	if (!CHECK_EQ_INT(open_clone_as(dir, "snap1", CS, &c), 0))
		exit(1);
	return c;
}

static uint32_t lookup_ino(Clone *c, uint32_t parent, const char *name)
{
	CloneAttr a;
	return clone_lookup(c, parent, name, &a) == 0 ? a.ino : 0;
}

static uint64_t size_of(Clone *c, uint32_t ino)
{
	CloneAttr a;
	return clone_getattr(c, ino, &a) == 0 ? a.size : UINT64_MAX;
}

static CloneFile *open_file(Clone *c, uint32_t ino, int flags)
{
	CloneFile *f = NULL;
	CHECK_EQ_INT(clone_open_file(c, ino, flags, &f), 0);
	return f;
}

static bool write_at(CloneFile *f, uint64_t off, const void *buf, size_t len)
{
	return CHECK_EQ_INT(clone_write(f, off, len, buf), (ssize_t)len);
}

/* The lower bytes of ino in [off, off + len). */
static void fill_pattern(uint32_t ino, uint64_t off, uint8_t *buf, size_t len)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = pattern(ino, off + i);
}

/* Read len bytes of ino at off through a new handle and compare them with want. */
static bool check_bytes(Clone *c, uint32_t ino, uint64_t off, const uint8_t *want, size_t len)
{
	uint8_t *got = xmalloc(len + 100);
	CloneFile *f = open_file(c, ino, O_RDONLY);
	bool ok = f && CHECK_EQ_INT(clone_read(f, off, len, got), (ssize_t)len) &&
		  CHECK(memcmp(got, want, len) == 0);
	clone_release(f);
	free(got);
	return ok;
}

/* ino holds exactly the len bytes of want. */
static bool check_content(Clone *c, uint32_t ino, const uint8_t *want, size_t len)
{
	return CHECK_EQ_INT(size_of(c, ino), len) && check_bytes(c, ino, 0, want, len);
}

/* How many of upper/INO and upper/INO.map exist. */
static int upper_count(const char *dir, uint32_t ino)
{
	char path[PATH_MAX];
	return (access(test_fmt(path, sizeof(path), "%s/upper/%u", dir, ino), F_OK) == 0) +
	       (access(test_fmt(path, sizeof(path), "%s/upper/%u.map", dir, ino), F_OK) == 0);
}

/* ---- directory listing -------------------------------------------------- */

typedef struct Listing {
	char names[128][64];
	CloneAttr attrs[128];
	uint64_t next[128];
	size_t n, stop_after;
} Listing;

static int collect(const char *name, const CloneAttr *a, uint64_t next, void *userdata)
{
	Listing *l = userdata;
	if (l->n < ELEMENTSOF(l->names)) {
		snprintf(l->names[l->n], sizeof(l->names[0]), "%s", name);
		l->attrs[l->n] = *a;
		l->next[l->n] = next;
	}
	l->n++;
	return l->stop_after && l->n == l->stop_after ? 1 : 0;
}

/* A callback may call back into the clone: readdir holds no lock while calling it. */
static int getattr_each(const char *name _unused_, const CloneAttr *a, uint64_t next _unused_,
			void *userdata)
{
	CloneAttr b;
	return clone_getattr(userdata, a->ino, &b) == 0 && b.ino == a->ino ? 0 : -EIO;
}

static bool listed(const Listing *l, const char *name)
{
	size_t hits = 0;
	for (size_t i = 0; i < l->n; i++)
		hits += strcmp(l->names[i], name) == 0;
	return hits == 1;
}

/* ---- tests ---------------------------------------------------------------- */

static void test_seed(const char *dir)
{
	char path[PATH_MAX];
	Clone *c = open_clone(dir);
	CloneAttr a;
	Listing l = {0};
	char *target = NULL;
	struct stat st;

	CHECK_EQ_INT(clone_getattr(c, 1, &a), 0);
	CHECK(S_ISDIR(a.mode));
	CHECK_EQ_INT(a.nlink, 3); /* ".", its own entry, and sub's ".." */
	CHECK_EQ_INT(clone_lookup(c, 1, "big", &a), 0);
	CHECK_EQ_INT(a.ino, INO_BIG);
	CHECK_EQ_INT(a.size, BIG_SIZE);
	CHECK_EQ_INT(a.mode, S_IFREG | 0644);
	CHECK_EQ_INT(a.mtime_ns, 1000);
	CHECK_EQ_INT(a.blocks, (BIG_SIZE + 511) / 512);
	CHECK_EQ_INT(clone_lookup(c, INO_SUB, "small", &a), 0);
	CHECK_EQ_INT(a.ino, INO_SMALL);
	CHECK_EQ_INT(clone_lookup(c, INO_DEEP, "f2", &a), 0);
	CHECK_EQ_INT(a.size, 5000);
	CHECK_EQ_INT(clone_getattr(c, INO_SUB, &a), 0);
	CHECK_EQ_INT(a.uid, 7);
	CHECK_EQ_INT(a.gid, 8);
	CHECK_EQ_INT(clone_lookup(c, 1, "nope", &a), -ENOENT);
	CHECK_EQ_INT(clone_lookup(c, INO_BIG, "x", &a), -ENOTDIR);
	CHECK_EQ_INT(clone_getattr(c, 999, &a), -ENOENT);

	CHECK_EQ_INT(clone_readlink(c, INO_LINK, &target), 0);
	CHECK_EQ_STR(target, "big");
	free(target);
	CHECK_EQ_INT(clone_readlink(c, INO_BIG, &target), -EINVAL);

	CHECK_EQ_INT(clone_readdir(c, 1, 0, collect, &l), 0);
	CHECK_EQ_INT(l.n, 5);
	CHECK(listed(&l, "big") && listed(&l, "empty") && listed(&l, "sub") &&
	      listed(&l, "link") && listed(&l, "huge"));
	CHECK_EQ_INT(clone_readdir(c, INO_BIG, 0, collect, &l), -ENOTDIR);
	CHECK_EQ_INT(clone_readdir(c, 1, 0, getattr_each, c), 0);

	/* scratch permissions: directories 0700, files 0600 */
	CHECK(stat(dir, &st) == 0 && (st.st_mode & 07777) == 0700);
	CHECK(stat(test_fmt(path, sizeof(path), "%s/upper", dir), &st) == 0 &&
	      (st.st_mode & 07777) == 0700);
	CHECK(stat(test_fmt(path, sizeof(path), "%s/clone.db", dir), &st) == 0 &&
	      (st.st_mode & 07777) == 0600);
	CHECK(stat(test_fmt(path, sizeof(path), "%s/clone.db-wal", dir), &st) == 0 &&
	      (st.st_mode & 07777) == 0600);
	clone_close(c);
}

static void test_readdir_cursor(const char *dir)
{
	Clone *c = open_clone(dir);
	CloneAttr a, d;
	Listing l = {.stop_after = 3}, rest = {0};
	char name[16];

	CHECK_EQ_INT(clone_mkdir(c, 1, "many", 0755, 0, 0, &d), 0);
	for (int i = 0; i < 100; i++)
		CHECK_EQ_INT(clone_mknod(c, d.ino, test_fmt(name, sizeof(name), "e%02d", i),
					 S_IFREG | 0644, 0, 0, &a),
			     0);
	CHECK_EQ_INT(clone_readdir(c, d.ino, 0, collect, &l), 1);
	CHECK_EQ_INT(l.n, 3);
	/* remove one listed entry and one not yet listed, add one: then resume */
	CHECK_EQ_INT(clone_unlink(c, d.ino, l.names[1]), 0);
	CHECK_EQ_INT(clone_unlink(c, d.ino, "e50"), 0);
	CHECK_EQ_INT(clone_mknod(c, d.ino, "late", S_IFREG | 0644, 0, 0, &a), 0);
	CHECK_EQ_INT(clone_readdir(c, d.ino, l.next[2], collect, &rest), 0);
	CHECK_EQ_INT(rest.n, 100 - 3 - 1 + 1);
	CHECK(!listed(&rest, l.names[0]) && !listed(&rest, l.names[2]));
	CHECK(!listed(&rest, "e50") && listed(&rest, "late") && listed(&rest, "e99"));
	clone_close(c);
}

static void test_lower_reads(const char *dir)
{
	Clone *c = open_clone(dir);
	uint8_t want[BIG_SIZE], got[BIG_SIZE];
	CloneFile *f = open_file(c, INO_BIG, O_RDONLY);

	fill_pattern(INO_BIG, 0, want, sizeof(want));
	lower_reset(&lower);
	CHECK_EQ_INT(clone_read(f, 4000, 300, got), 300);
	CHECK(memcmp(got, want + 4000, 300) == 0);
	CHECK_EQ_INT(lower.n_bytes, 300);
	CHECK_EQ_INT(clone_read(f, BIG_SIZE - 10, 100, got), 10);
	CHECK(memcmp(got, want + BIG_SIZE - 10, 10) == 0);
	CHECK_EQ_INT(clone_read(f, BIG_SIZE, 100, got), 0);
	CHECK_EQ_INT(clone_read(f, 0, sizeof(got), got), BIG_SIZE);
	CHECK(memcmp(got, want, sizeof(want)) == 0);
	CHECK_EQ_INT(clone_write(f, 0, 1, "x"), -EBADF);
	CHECK_EQ_INT(clone_lseek(f, 10, SEEK_DATA), 10);
	CHECK_EQ_INT(clone_lseek(f, 10, SEEK_HOLE), BIG_SIZE);
	CHECK_EQ_INT(clone_lseek(f, BIG_SIZE, SEEK_DATA), -ENXIO);
	clone_release(f);
	CHECK_EQ_INT(upper_count(dir, INO_BIG), 0); /* reading copies nothing */
	CHECK_EQ_INT(lower.n_bad, 0);
	clone_close(c);
}

static void test_copy_up(const char *dir)
{
	Clone *c = open_clone(dir);
	uint8_t want[BIG_SIZE + 1000], got[sizeof(want)];
	CloneFile *f = open_file(c, INO_BIG, O_RDWR);
	uint8_t page[CS];
	struct stat st;
	char path[PATH_MAX];

	fill_pattern(INO_BIG, 0, want, BIG_SIZE);
	lower_reset(&lower);
	/* the middle of chunk 1: that chunk, and only it, is read */
	write_at(f, CS + 100, "0123456789", 10);
	memcpy(want + CS + 100, "0123456789", 10);
	CHECK_EQ_INT(lower.n_calls, 1);
	CHECK_EQ_INT(lower.n_bytes, CS);
	/* across chunks 1 and 2: chunk 2 is copied up too */
	write_at(f, 2 * CS - 5, "abcdefghij", 10);
	memcpy(want + 2 * CS - 5, "abcdefghij", 10);
	CHECK_EQ_INT(lower.n_bytes, 2 * CS);
	/* all of chunk 0 overwritten: nothing to copy */
	memset(page, 'z', sizeof(page));
	write_at(f, 0, page, sizeof(page));
	memcpy(want, page, sizeof(page));
	CHECK_EQ_INT(lower.n_bytes, 2 * CS);
	/* the last, partial chunk, extending the file */
	write_at(f, BIG_SIZE - 24, "the end of the file grows by 1000 bytes", 40);
	memcpy(want + BIG_SIZE - 24, "the end of the file grows by 1000 bytes", 40);
	memset(want + BIG_SIZE + 16, 0, 1000 - 16);
	write_at(f, BIG_SIZE + 999, "!", 1);
	want[BIG_SIZE + 999] = '!';
	CHECK_EQ_INT(lower.n_bytes, 2 * CS + CS / 2);
	/* getattr sees the size of the open file */
	CHECK_EQ_INT(size_of(c, INO_BIG), BIG_SIZE + 1000);
	CHECK_EQ_INT(clone_read(f, 0, sizeof(got), got), sizeof(want));
	CHECK(memcmp(got, want, sizeof(want)) == 0);
	CHECK_EQ_INT(clone_fsync(f, false), 0);
	CHECK_EQ_INT(clone_release(f), 0);
	CHECK_EQ_INT(lower.n_bad, 0);
	check_content(c, INO_BIG, want, sizeof(want));
	/* one map byte per lower chunk; the upper file ends where the file does */
	CHECK(stat(test_fmt(path, sizeof(path), "%s/upper/%u.map", dir, INO_BIG), &st) == 0 &&
	      st.st_size == 4 && (st.st_mode & 07777) == 0600);
	CHECK(stat(test_fmt(path, sizeof(path), "%s/upper/%u", dir, INO_BIG), &st) == 0 &&
	      st.st_size == (off_t)sizeof(want) && (st.st_mode & 07777) == 0600);
	clone_close(c);
}

static void test_truncate(const char *dir)
{
	Clone *c = open_clone(dir);
	uint8_t want[6000], got[sizeof(want)];
	CloneAttr a = {.size = 2000}, out;
	CloneFile *f;

	/* down into chunk 0, which is not copied up, then up again: zeros after 2000 */
	fill_pattern(INO_F2, 0, want, 2000);
	memset(want + 2000, 0, sizeof(want) - 2000);
	lower_reset(&lower);
	CHECK_EQ_INT(clone_setattr(c, INO_F2, CLONE_SET_SIZE, &a, &out), 0);
	CHECK_EQ_INT(out.size, 2000);
	CHECK_EQ_INT(lower.n_bytes, CS);
	a.size = sizeof(want);
	CHECK_EQ_INT(clone_setattr(c, INO_F2, CLONE_SET_SIZE, &a, &out), 0);
	CHECK_EQ_INT(out.size, sizeof(want));
	check_content(c, INO_F2, want, sizeof(want));

	/* a handle sees a truncation made through setattr, and writes past it */
	f = open_file(c, INO_SMALL, O_RDWR);
	fill_pattern(INO_SMALL, 0, want, 50);
	a.size = 50;
	CHECK_EQ_INT(clone_setattr(c, INO_SMALL, CLONE_SET_SIZE, &a, &out), 0);
	CHECK_EQ_INT(clone_read(f, 0, sizeof(got), got), 50);
	write_at(f, 80, "xy", 2);
	memset(want + 50, 0, 30);
	memcpy(want + 80, "xy", 2);
	CHECK_EQ_INT(clone_read(f, 0, sizeof(got), got), 82);
	CHECK(memcmp(got, want, 82) == 0);
	clone_release(f);
	check_content(c, INO_SMALL, want, 82);
	CHECK_EQ_INT(clone_setattr(c, INO_SUB, CLONE_SET_SIZE, &a, &out), -EISDIR);

	/* O_TRUNC */
	lower_reset(&lower);
	f = open_file(c, INO_EMPTY, O_RDWR | O_TRUNC);
	write_at(f, 0, "hello", 5);
	clone_release(f);
	f = open_file(c, INO_EMPTY, O_WRONLY | O_TRUNC);
	CHECK_EQ_INT(size_of(c, INO_EMPTY), 0);
	write_at(f, 0, "hi", 2);
	clone_release(f);
	check_content(c, INO_EMPTY, (const uint8_t *)"hi", 2);
	CHECK_EQ_INT(lower.n_calls, 0);
	clone_close(c);
}

static void test_new_files(const char *dir)
{
	Clone *c = open_clone(dir);
	static uint8_t data[3 * CS + 77], want[20000 + sizeof(data)];
	CloneAttr a;
	CloneFile *f;

	test_random(data, sizeof(data));
	lower_reset(&lower);
	CHECK_EQ_INT(clone_mknod(c, INO_SUB, "new", S_IFREG | 0640, 11, 12, &a), 0);
	CHECK_EQ_INT(a.mode, S_IFREG | 0640);
	CHECK_EQ_INT(a.uid, 11);
	CHECK_EQ_INT(a.nlink, 1);
	CHECK(a.ino >= N_INO);
	CHECK_EQ_INT(clone_mknod(c, INO_SUB, "new", S_IFREG | 0640, 11, 12, &a), -EEXIST);
	CHECK_EQ_INT(clone_mknod(c, INO_SUB, "fifo", S_IFIFO | 0640, 0, 0, &a), -EPERM);
	CHECK_EQ_INT(clone_mknod(c, INO_SUB, "a/b", S_IFREG | 0640, 0, 0, &a), -EINVAL);
	CHECK_EQ_INT(clone_mknod(c, INO_BIG, "x", S_IFREG | 0640, 0, 0, &a), -ENOTDIR);
	f = open_file(c, lookup_ino(c, INO_SUB, "new"), O_RDWR);
	write_at(f, 0, data, sizeof(data));
	write_at(f, 20000, data, sizeof(data)); /* leaves a hole */
	clone_release(f);
	memcpy(want, data, sizeof(data));
	memset(want + sizeof(data), 0, 20000 - sizeof(data));
	memcpy(want + 20000, data, sizeof(data));
	check_content(c, lookup_ino(c, INO_SUB, "new"), want, sizeof(want));
	CHECK_EQ_INT(lower.n_calls, 0);
	clone_close(c);
}

static void test_dirs(const char *dir)
{
	Clone *c = open_clone(dir);
	CloneAttr a, d, root0, root1;

	CHECK_EQ_INT(clone_getattr(c, 1, &root0), 0);
	CHECK_EQ_INT(clone_mkdir(c, 1, "d", 0750, 0, 0, &d), 0);
	CHECK_EQ_INT(d.mode, S_IFDIR | 0750);
	CHECK_EQ_INT(d.nlink, 2);
	CHECK_EQ_INT(clone_getattr(c, 1, &root1), 0);
	CHECK_EQ_INT(root1.nlink, root0.nlink + 1);
	CHECK(root1.mtime_ns > root0.mtime_ns);
	CHECK_EQ_INT(clone_mkdir(c, 1, "d", 0750, 0, 0, &a), -EEXIST);
	CHECK_EQ_INT(clone_mknod(c, d.ino, "x", S_IFREG | 0644, 0, 0, &a), 0);
	CHECK_EQ_INT(clone_rmdir(c, 1, "d"), -ENOTEMPTY);
	CHECK_EQ_INT(clone_rmdir(c, d.ino, "x"), -ENOTDIR);
	CHECK_EQ_INT(clone_unlink(c, 1, "d"), -EISDIR);
	CHECK_EQ_INT(clone_unlink(c, d.ino, "x"), 0);
	CHECK_EQ_INT(clone_unlink(c, d.ino, "x"), -ENOENT);
	CHECK_EQ_INT(clone_rmdir(c, 1, "d"), 0);
	CHECK_EQ_INT(clone_lookup(c, 1, "d", &a), -ENOENT);
	CHECK_EQ_INT(clone_getattr(c, d.ino, &a), -ENOENT);
	CHECK_EQ_INT(clone_getattr(c, 1, &root1), 0);
	CHECK_EQ_INT(root1.nlink, root0.nlink);
	/* a seed directory, emptied */
	CHECK_EQ_INT(clone_rmdir(c, INO_SUB, "deep"), -ENOTEMPTY);
	CHECK_EQ_INT(clone_unlink(c, INO_DEEP, "f2"), 0);
	CHECK_EQ_INT(clone_rmdir(c, INO_SUB, "deep"), 0);
	CHECK_EQ_INT(clone_getattr(c, INO_SUB, &a), 0);
	CHECK_EQ_INT(a.nlink, 2);
	CHECK_EQ_INT(upper_count(dir, INO_F2), 0);
	clone_close(c);
}

static void test_rename(const char *dir)
{
	Clone *c = open_clone(dir);
	CloneAttr a, b, p, q;
	CloneFile *f;

	CHECK_EQ_INT(clone_mknod(c, 1, "ra", S_IFREG | 0644, 0, 0, &a), 0);
	CHECK_EQ_INT(clone_mknod(c, 1, "rb", S_IFREG | 0644, 0, 0, &b), 0);
	f = open_file(c, a.ino, O_RDWR);
	write_at(f, 0, "AAAA", 4);
	clone_release(f);
	f = open_file(c, b.ino, O_RDWR);
	write_at(f, 0, "BBBBBBBB", 8);
	clone_release(f);
	CHECK_EQ_INT(upper_count(dir, b.ino), 1);

	/* file over file: the old target and its upper data are gone */
	CHECK_EQ_INT(clone_rename(c, 1, "ra", 1, "rb", 0), 0);
	CHECK_EQ_INT(lookup_ino(c, 1, "ra"), 0);
	CHECK_EQ_INT(lookup_ino(c, 1, "rb"), a.ino);
	check_content(c, a.ino, (const uint8_t *)"AAAA", 4);
	CHECK_EQ_INT(clone_getattr(c, b.ino, &q), -ENOENT);
	CHECK_EQ_INT(upper_count(dir, b.ino), 0);
	CHECK_EQ_INT(clone_rename(c, 1, "ra", 1, "rc", 0), -ENOENT);

	/* RENAME_NOREPLACE, RENAME_EXCHANGE */
	CHECK_EQ_INT(clone_mknod(c, 1, "rc", S_IFREG | 0644, 0, 0, &b), 0);
	CHECK_EQ_INT(clone_rename(c, 1, "rc", 1, "rb", RENAME_NOREPLACE), -EEXIST);
	CHECK_EQ_INT(clone_rename(c, 1, "rc", 1, "rb", RENAME_EXCHANGE), -EINVAL);
	CHECK_EQ_INT(lookup_ino(c, 1, "rb"), a.ino);
	CHECK_EQ_INT(clone_rename(c, 1, "rc", INO_SUB, "rc2", RENAME_NOREPLACE), 0);
	CHECK_EQ_INT(lookup_ino(c, INO_SUB, "rc2"), b.ino);

	/* directories */
	CHECK_EQ_INT(clone_mkdir(c, 1, "p", 0755, 0, 0, &p), 0);
	CHECK_EQ_INT(clone_mkdir(c, p.ino, "q", 0755, 0, 0, &q), 0);
	CHECK_EQ_INT(clone_rename(c, 1, "p", q.ino, "r", 0), -EINVAL);
	CHECK_EQ_INT(clone_rename(c, 1, "p", p.ino, "r", 0), -EINVAL);
	CHECK_EQ_INT(clone_rename(c, 1, "p", 1, "rb", 0), -ENOTDIR);
	CHECK_EQ_INT(clone_rename(c, 1, "rb", 1, "p", 0), -EISDIR);
	CHECK_EQ_INT(clone_rename(c, 1, "sub", 1, "p", 0), -ENOTEMPTY);
	CHECK_EQ_INT(clone_rename(c, p.ino, "q", 1, "sub", 0), -ENOTEMPTY);
	CHECK_EQ_INT(clone_mkdir(c, 1, "e", 0755, 0, 0, &b), 0);
	CHECK_EQ_INT(clone_rename(c, p.ino, "q", 1, "e", 0), 0); /* over an empty directory */
	CHECK_EQ_INT(lookup_ino(c, 1, "e"), q.ino);
	CHECK_EQ_INT(clone_getattr(c, b.ino, &a), -ENOENT);
	CHECK_EQ_INT(clone_getattr(c, p.ino, &a), 0);
	CHECK_EQ_INT(a.nlink, 2);
	/* a lower file moved away still reads its snapshot bytes */
	CHECK_EQ_INT(clone_rename(c, INO_SUB, "small", q.ino, "small2", 0), 0);
	CHECK_EQ_INT(lookup_ino(c, q.ino, "small2"), INO_SMALL);
	CHECK_EQ_INT(clone_rename(c, q.ino, "small2", q.ino, "small2", 0), 0);
	CHECK_EQ_INT(clone_rename(c, q.ino, "small2", INO_SUB, "small", 0), 0);
	clone_close(c);
}

static void test_unlink_open(const char *dir)
{
	Clone *c = open_clone(dir);
	uint8_t got[16];
	CloneAttr a;
	CloneFile *f, *g;

	CHECK_EQ_INT(clone_mknod(c, 1, "gone", S_IFREG | 0644, 0, 0, &a), 0);
	f = open_file(c, a.ino, O_RDWR);
	write_at(f, 0, "before", 6);
	CHECK_EQ_INT(clone_fsync(f, true), 0);
	CHECK_EQ_INT(clone_unlink(c, 1, "gone"), 0);
	CHECK_EQ_INT(lookup_ino(c, 1, "gone"), 0);
	write_at(f, 6, "after", 5);
	CHECK_EQ_INT(clone_read(f, 0, sizeof(got), got), 11);
	CHECK(memcmp(got, "beforeafter", 11) == 0);
	CHECK_EQ_INT(clone_getattr(c, a.ino, &a), 0);
	CHECK_EQ_INT(a.nlink, 0);
	CHECK_EQ_INT(a.size, 11);
	CHECK_EQ_INT(upper_count(dir, a.ino), 1);
	CHECK_EQ_INT(clone_release(f), 0);
	CHECK_EQ_INT(upper_count(dir, a.ino), 0);
	CHECK_EQ_INT(clone_getattr(c, a.ino, &a), -ENOENT);

	/* a lower file with copied-up chunks, open twice */
	f = open_file(c, INO_HUGE, O_RDWR);
	g = open_file(c, INO_HUGE, O_RDONLY);
	write_at(f, 5, "x", 1);
	CHECK_EQ_INT(clone_fsync(f, false), 0);
	CHECK_EQ_INT(upper_count(dir, INO_HUGE), 2);
	CHECK_EQ_INT(clone_unlink(c, 1, "huge"), 0);
	CHECK_EQ_INT(clone_release(f), 0);
	CHECK_EQ_INT(clone_read(g, 4, 2, got), 2);
	CHECK(got[0] == pattern(INO_HUGE, 4) && got[1] == 'x');
	CHECK_EQ_INT(upper_count(dir, INO_HUGE), 2);
	CHECK_EQ_INT(clone_release(g), 0);
	CHECK_EQ_INT(upper_count(dir, INO_HUGE), 0);
	CHECK_EQ_INT(clone_getattr(c, INO_HUGE, &a), -ENOENT);
	clone_close(c);
}

static void test_links_and_attrs(const char *dir)
{
	Clone *c = open_clone(dir);
	CloneAttr a, b, set = {0};
	CloneFile *f;
	char *target = NULL;
	int64_t t0;

	/* hard links */
	CHECK_EQ_INT(clone_mknod(c, 1, "h1", S_IFREG | 0644, 0, 0, &a), 0);
	CHECK_EQ_INT(clone_link(c, a.ino, INO_SUB, "h2", &b), 0);
	CHECK_EQ_INT(b.nlink, 2);
	CHECK_EQ_INT(b.ino, a.ino);
	CHECK_EQ_INT(clone_link(c, a.ino, INO_SUB, "h2", &b), -EEXIST);
	CHECK_EQ_INT(clone_link(c, INO_SUB, 1, "subdir2", &b), -EPERM);
	f = open_file(c, lookup_ino(c, INO_SUB, "h2"), O_RDWR);
	write_at(f, 0, "shared", 6);
	clone_release(f);
	check_content(c, lookup_ino(c, 1, "h1"), (const uint8_t *)"shared", 6);
	CHECK_EQ_INT(clone_unlink(c, 1, "h1"), 0);
	CHECK_EQ_INT(clone_getattr(c, a.ino, &b), 0);
	CHECK_EQ_INT(b.nlink, 1);
	check_content(c, a.ino, (const uint8_t *)"shared", 6);
	CHECK_EQ_INT(clone_link(c, INO_BIG, INO_SUB, "biglink", &b), 0);
	CHECK_EQ_INT(b.nlink, 2);

	/* symlinks */
	CHECK_EQ_INT(clone_symlink(c, 1, "sl", "target/path", 3, 4, &a), 0);
	CHECK_EQ_INT(a.mode, S_IFLNK | 0777);
	CHECK_EQ_INT(a.size, 11);
	CHECK_EQ_INT(clone_readlink(c, a.ino, &target), 0);
	CHECK_EQ_STR(target, "target/path");
	free(target);
	CHECK_EQ_INT(clone_open_file(c, a.ino, O_RDONLY, &f), -EINVAL);
	CHECK_EQ_INT(clone_open_file(c, INO_SUB, O_RDONLY, &f), -EISDIR);
	CHECK_EQ_INT(clone_symlink(c, 1, "sl", "x", 0, 0, &a), -EEXIST);

	/* chmod, chown, utimens */
	CHECK_EQ_INT(clone_getattr(c, INO_SMALL, &a), 0);
	t0 = a.ctime_ns;
	set.mode = 0600 | S_IFDIR; /* the type bits are ignored */
	set.uid = 55;
	set.atime_ns = 1234;
	set.mtime_ns = 5678;
	CHECK_EQ_INT(clone_setattr(c, INO_SMALL, CLONE_SET_MODE | CLONE_SET_UID | CLONE_SET_ATIME |
						 CLONE_SET_MTIME,
				   &set, &b),
		     0);
	CHECK_EQ_INT(b.mode, S_IFREG | 0600);
	CHECK_EQ_INT(b.uid, 55);
	CHECK_EQ_INT(b.gid, a.gid);
	CHECK_EQ_INT(b.atime_ns, 1234);
	CHECK_EQ_INT(b.mtime_ns, 5678);
	CHECK(b.ctime_ns > t0);
	/* utimens on an open file survives the flush of the handle */
	f = open_file(c, INO_SMALL, O_RDWR);
	write_at(f, 0, "w", 1);
	set.mtime_ns = 99;
	CHECK_EQ_INT(clone_setattr(c, INO_SMALL, CLONE_SET_MTIME, &set, &b), 0);
	CHECK_EQ_INT(clone_release(f), 0);
	CHECK_EQ_INT(clone_getattr(c, INO_SMALL, &b), 0);
	CHECK_EQ_INT(b.mtime_ns, 99);
	CHECK_EQ_INT(b.size, 82);
	clone_close(c);
}

static void test_two_handles(const char *dir)
{
	Clone *c = open_clone(dir);
	CloneFile *f = open_file(c, INO_BIG, O_RDWR), *g = open_file(c, INO_BIG, O_RDWR);
	struct statvfs sv;
	uint8_t got[8];

	write_at(f, 10, "ffff", 4);
	CHECK_EQ_INT(clone_read(g, 10, 4, got), 4);
	CHECK(memcmp(got, "ffff", 4) == 0);
	write_at(g, BIG_SIZE + 2000, "gg", 2);
	CHECK_EQ_INT(clone_read(f, BIG_SIZE + 2000, 8, got), 2);
	CHECK_EQ_INT(clone_lseek(f, 0, SEEK_HOLE), BIG_SIZE + 2002);
	CHECK_EQ_INT(size_of(c, INO_BIG), BIG_SIZE + 2002);
	CHECK_EQ_INT(clone_fsync(f, false), 0);
	CHECK_EQ_INT(clone_fsync(g, false), 0);
	CHECK_EQ_INT(clone_statfs(c, &sv), 0);
	CHECK(sv.f_bsize > 0 && sv.f_blocks > 0);
	CHECK_EQ_INT(clone_release(f), 0);
	CHECK_EQ_INT(size_of(c, INO_BIG), BIG_SIZE + 2002);
	CHECK_EQ_INT(clone_release(g), 0);
	CHECK_EQ_INT(size_of(c, INO_BIG), BIG_SIZE + 2002);
	clone_close(c);
}

/* ---- reopen: the whole tree, dumped as text ------------------------------ */

static uint64_t content_hash(Clone *c, uint32_t ino, uint64_t size)
{
	uint8_t buf[8192];
	uint64_t h = 1469598103934665603ull;
	CloneFile *f = NULL;
	if (clone_open_file(c, ino, O_RDONLY, &f) < 0)
		return 0;
	for (uint64_t off = 0; off < size;) {
		ssize_t n = clone_read(f, off, sizeof(buf), buf);
		if (n <= 0)
			break;
		for (ssize_t i = 0; i < n; i++)
			h = (h ^ buf[i]) * 1099511628211ull;
		off += (uint64_t)n;
	}
	clone_release(f);
	return h;
}

static void dump_tree(Clone *c, uint32_t dir, const char *path, FILE *out)
{
	Listing *l = xcalloc(1, sizeof(*l));
	char sub[PATH_MAX];

	if (clone_readdir(c, dir, 0, collect, l) != 0)
		fprintf(out, "%s: readdir failed\n", path);
	for (size_t i = 0; i < l->n && i < ELEMENTSOF(l->names); i++) {
		const CloneAttr *a = &l->attrs[i];
		fprintf(out, "%s/%s ino=%u mode=%o nlink=%u uid=%u gid=%u size=%llu m=%lld c=%lld",
			path, l->names[i], a->ino, a->mode, a->nlink, a->uid, a->gid,
			(unsigned long long)a->size, (long long)a->mtime_ns, (long long)a->ctime_ns);
		if (S_ISREG(a->mode))
			fprintf(out, " data=%llx", (unsigned long long)content_hash(c, a->ino, a->size));
		if (S_ISLNK(a->mode)) {
			char *t = NULL;
			clone_readlink(c, a->ino, &t);
			fprintf(out, " -> %s", t ? t : "?");
			free(t);
		}
		fputc('\n', out);
		if (S_ISDIR(a->mode))
			dump_tree(c, a->ino, test_fmt(sub, sizeof(sub), "%s/%s", path, l->names[i]),
				  out);
	}
	free(l);
}

static char *dump(Clone *c)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&buf, &len);
	CloneAttr a;
	if (!out)
		exit(2);
	clone_getattr(c, 1, &a);
	fprintf(out, "/ mode=%o nlink=%u m=%lld\n", a.mode, a.nlink, (long long)a.mtime_ns);
	dump_tree(c, 1, "", out);
	fclose(out);
	return buf;
}

static void test_reopen(const char *dir)
{
	char path[PATH_MAX];
	Clone *c = open_clone(dir), *c2 = NULL;
	uint8_t want[BIG_SIZE + 2002];
	CloneAttr a = {.size = 3000}, out;
	CloneFile *f;
	char *before, *after;

	/* unsynced writes, still open at close: clone_close persists them */
	f = open_file(c, INO_BIG, O_RDWR);
	write_at(f, 3 * CS + 1, "close", 5);
	CHECK_EQ_INT(clone_setattr(c, INO_F2, CLONE_SET_SIZE, &a, &out), -ENOENT); /* removed */
	CHECK_EQ_INT(clone_setattr(c, INO_SMALL, CLONE_SET_SIZE, &a, &out), 0);
	before = dump(c);
	c = clone_close(c);

	c = open_clone(dir);
	after = dump(c);
	CHECK_EQ_STR(after, before);
	CHECK(strstr(after, "/big ") && strstr(after, "/sub/small ") && strstr(after, "/sl "));
	free(after);
	f = open_file(c, INO_BIG, O_RDONLY);
	CHECK_EQ_INT(clone_read(f, 0, sizeof(want), want), sizeof(want));
	CHECK(memcmp(want + 3 * CS + 1, "close", 5) == 0);
	CHECK(memcmp(want + 10, "ffff", 4) == 0);
	clone_release(f);
	c = clone_close(c);

	/* another snapshot, another chunk size, a stray directory */
	CHECK_EQ_INT(open_clone_as(dir, "snap2", CS, &c2), -ESTALE);
	CHECK_EQ_INT(open_clone_as(dir, "snap1", 2 * CS, &c2), -EINVAL);
	CHECK(c2 == NULL);
	CHECK_EQ_INT(open_clone_as(test_fmt(path, sizeof(path), "%s/upper", dir), "snap1", CS, &c2),
		     -ENOTEMPTY);
	/* the seed is ignored on reopen */
	CloneOptions o = {.dir = dir, .snapshot = "snap1", .chunk_size = CS,
			  .lower_read = lower_read, .userdata = &lower};
	CHECK_EQ_INT(clone_open(&o, &c2), 0);
	after = dump(c2);
	CHECK_EQ_STR(after, before);
	free(after);
	clone_close(c2);
	free(before);
}

/* What a crash leaves: an unlinked inode still in the table, an upper file longer than its size. */
static void test_crash_leftovers(const char *dir)
{
	char path[PATH_MAX];
	Clone *c = open_clone(dir);
	CloneAttr a, set = {0};
	CloneFile *f;
	sqlite3 *db = NULL;
	uint8_t got[64], zeros[64] = {0};
	int fd;

	CHECK_EQ_INT(clone_mknod(c, 1, "orphan", S_IFREG | 0644, 0, 0, &a), 0);
	f = open_file(c, a.ino, O_RDWR);
	write_at(f, 0, "data", 4);
	clone_release(f);
	c = clone_close(c);
	CHECK_EQ_INT(upper_count(dir, a.ino), 1);
	if (CHECK_EQ_INT(sqlite3_open(test_fmt(path, sizeof(path), "%s/clone.db", dir), &db),
			 SQLITE_OK)) {
		char sql[200];
		snprintf(sql, sizeof(sql),
			 "DELETE FROM dirents WHERE ino = %u; UPDATE inodes SET nlink = 0 WHERE ino = %u",
			 a.ino, a.ino);
		CHECK_EQ_INT(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	}
	sqlite3_close(db);
	/* bytes past the size of "empty" ("hi"), as a crash after a write could leave */
	fd = open(test_fmt(path, sizeof(path), "%s/upper/%u", dir, INO_EMPTY), O_WRONLY);
	CHECK(fd >= 0 && pwrite(fd, "garbage", 7, 2) == 7);
	if (fd >= 0)
		close(fd);

	c = open_clone(dir);
	CHECK_EQ_INT(upper_count(dir, a.ino), 0);
	CHECK_EQ_INT(clone_getattr(c, a.ino, &a), -ENOENT);
	set.size = 40;
	CHECK_EQ_INT(clone_setattr(c, INO_EMPTY, CLONE_SET_SIZE, &set, &a), 0);
	f = open_file(c, INO_EMPTY, O_RDONLY);
	CHECK_EQ_INT(clone_read(f, 0, sizeof(got), got), 40);
	CHECK(memcmp(got, "hi", 2) == 0 && memcmp(got + 2, zeros, 38) == 0);
	clone_release(f);
	clone_close(c);
}

static void test_fresh_dir(const char *tmp)
{
	char path[PATH_MAX];
	Clone *c;
	test_fmt(path, sizeof(path), "%s/fresh", tmp);
	CHECK_EQ_INT(mkdir(path, 0755), 0);
	c = open_clone(path);
	CHECK_EQ_INT(lookup_ino(c, 1, "big"), INO_BIG);
	CHECK_EQ_INT(size_of(c, INO_F2), 5000);
	clone_close(c);
}

static void test_lower_errors(const char *tmp)
{
	char dir[PATH_MAX];
	Clone *c = open_clone(test_fmt(dir, sizeof(dir), "%s/eio", tmp));
	uint8_t want[CS], got[CS];
	CloneAttr set = {.size = 100}, a;
	CloneFile *f = open_file(c, INO_BIG, O_RDWR);

	lower.fail = -EIO;
	CHECK_EQ_INT(clone_read(f, 0, 10, got), -EIO);
	CHECK_EQ_INT(clone_write(f, 10, 5, "xxxxx"), -EIO);
	CHECK_EQ_INT(clone_setattr(c, INO_BIG, CLONE_SET_SIZE, &set, &a), -EIO);
	CHECK_EQ_INT(size_of(c, INO_BIG), BIG_SIZE);
	lower.fail = 0;
	fill_pattern(INO_BIG, 0, want, sizeof(want));
	CHECK_EQ_INT(clone_read(f, 0, sizeof(got), got), sizeof(got));
	CHECK(memcmp(got, want, sizeof(want)) == 0);
	lower_reset(&lower);
	write_at(f, 10, "xxxxx", 5);
	CHECK_EQ_INT(lower.n_bytes, CS); /* the failed write marked nothing copied */
	memcpy(want + 10, "xxxxx", 5);
	CHECK_EQ_INT(clone_read(f, 0, sizeof(got), got), sizeof(got));
	CHECK(memcmp(got, want, sizeof(want)) == 0);
	CHECK_EQ_INT(clone_release(f), 0);
	check_bytes(c, INO_BIG, 0, want, sizeof(want));
	clone_close(c);
}

/* Every call taking a name answers ENAMETOOLONG past NAME_MAX (255 bytes), existing or not. */
static void test_long_names(const char *tmp)
{
	char dir[PATH_MAX], name[300], max[256];
	Clone *c = open_clone(test_fmt(dir, sizeof(dir), "%s/names", tmp));
	CloneAttr a;

	memset(name, 'n', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	memset(max, 'm', sizeof(max) - 1);
	max[sizeof(max) - 1] = '\0';
	CHECK_EQ_INT(clone_lookup(c, 1, name, &a), -ENAMETOOLONG);
	CHECK_EQ_INT(clone_lookup(c, INO_SUB, name, &a), -ENAMETOOLONG);
	CHECK_EQ_INT(clone_mknod(c, 1, name, S_IFREG | 0644, 0, 0, &a), -ENAMETOOLONG);
	CHECK_EQ_INT(clone_mkdir(c, 1, name, 0755, 0, 0, &a), -ENAMETOOLONG);
	CHECK_EQ_INT(clone_symlink(c, 1, name, "big", 0, 0, &a), -ENAMETOOLONG);
	CHECK_EQ_INT(clone_link(c, INO_BIG, 1, name, &a), -ENAMETOOLONG);
	CHECK_EQ_INT(clone_rename(c, 1, name, 1, "x", 0), -ENAMETOOLONG);
	CHECK_EQ_INT(clone_rename(c, 1, "big", 1, name, 0), -ENAMETOOLONG);
	CHECK_EQ_INT(clone_unlink(c, 1, name), -ENAMETOOLONG);
	CHECK_EQ_INT(clone_rmdir(c, 1, name), -ENAMETOOLONG);
	/* 255 bytes is still a name */
	CHECK_EQ_INT(clone_lookup(c, 1, max, &a), -ENOENT);
	CHECK_EQ_INT(clone_unlink(c, 1, max), -ENOENT);
	CHECK_EQ_INT(clone_rmdir(c, 1, max), -ENOENT);
	CHECK_EQ_INT(clone_mkdir(c, 1, max, 0755, 0, 0, &a), 0);
	CHECK_EQ_INT(lookup_ino(c, 1, max), a.ino);
	CHECK_EQ_INT(clone_rmdir(c, 1, max), 0);
	CHECK_EQ_INT(lookup_ino(c, 1, "big"), INO_BIG);
	clone_close(c);
}

typedef struct Writer {
	Clone *c;
	uint64_t at; /* offset inside each chunk */
	int r;
} Writer;

static void *writer_run(void *arg)
{
	Writer *w = arg;
	CloneFile *f = NULL;
	uint8_t mark = (uint8_t)w->at;
	w->r = clone_open_file(w->c, INO_HUGE, O_RDWR, &f);
	for (unsigned k = 0; k < HUGE_CHUNKS && w->r == 0; k++)
		if (clone_write(f, (uint64_t)k * CS + w->at, 1, &mark) != 1)
			w->r = -EIO;
	clone_release(f);
	return NULL;
}

/* Two writers copying up the same chunks at once must both keep their bytes. */
static void test_concurrent_copy_up(const char *tmp)
{
	char dir[PATH_MAX];
	Clone *c = open_clone(test_fmt(dir, sizeof(dir), "%s/threads", tmp));
	Writer w[2] = {{.c = c, .at = 17}, {.c = c, .at = 3001}};
	pthread_t t[2];
	uint8_t *want = xmalloc(CS * HUGE_CHUNKS);

	lower.slow = true;
	for (int i = 0; i < 2; i++)
		CHECK_EQ_INT(pthread_create(&t[i], NULL, writer_run, &w[i]), 0);
	for (int i = 0; i < 2; i++) {
		pthread_join(t[i], NULL);
		CHECK_EQ_INT(w[i].r, 0);
	}
	lower.slow = false;
	fill_pattern(INO_HUGE, 0, want, CS * HUGE_CHUNKS);
	for (unsigned k = 0; k < HUGE_CHUNKS; k++)
		want[k * CS + 17] = 17, want[k * CS + 3001] = (uint8_t)3001;
	check_content(c, INO_HUGE, want, CS * HUGE_CHUNKS);
	clone_close(c);
	free(want);
}

/* ENOSPC on a small tmpfs, which needs root and a working mount(2). */
static void test_enospc(const char *tmp)
{
	char mnt[PATH_MAX], dir[PATH_MAX], ballast[PATH_MAX];
	static uint8_t buf[64 * 1024];
	int fd;
	Clone *c;
	CloneFile *f, *g;
	CloneAttr a;
	ssize_t n = 0;
	uint64_t off = 0;
	uint8_t want[CS], got[CS];

	test_fmt(mnt, sizeof(mnt), "%s/small", tmp);
	if (geteuid() != 0 || mkdir(mnt, 0700) < 0 ||
	    mount("tmpfs", mnt, "tmpfs", 0, "size=1m") < 0) {
		printf("skipping the ENOSPC test: mounting a tmpfs needs root\n");
		return;
	}
	/* room that another process will free */
	fd = open(test_fmt(ballast, sizeof(ballast), "%s/ballast", mnt), O_WRONLY | O_CREAT, 0600);
	memset(buf, 'b', sizeof(buf));
	for (int i = 0; i < 4; i++)
		CHECK(fd >= 0 && write(fd, buf, sizeof(buf)) == (ssize_t)sizeof(buf));
	if (fd >= 0)
		close(fd);
	c = open_clone(test_fmt(dir, sizeof(dir), "%s/clone", mnt));
	CHECK_EQ_INT(clone_mknod(c, 1, "fill", S_IFREG | 0644, 0, 0, &a), 0);
	f = open_file(c, a.ino, O_RDWR);
	memset(buf, 'f', sizeof(buf));
	while ((n = clone_write(f, off, sizeof(buf), buf)) == (ssize_t)sizeof(buf))
		off += sizeof(buf);
	if (n > 0) {
		off += (uint64_t)n;
		n = clone_write(f, off, sizeof(buf), buf);
	}
	CHECK_EQ_INT(n, -ENOSPC);
	CHECK_EQ_INT(size_of(c, a.ino), off);
	CHECK(off > 0 && clone_read(f, off - 10, 100, got) == 10 && memcmp(got, buf, 10) == 0);
	/* the write was accepted: its flush had its room set aside */
	CHECK_EQ_INT(clone_fsync(f, false), 0);

	/* a copy-up that cannot be written leaves the chunk lower */
	g = open_file(c, INO_BIG, O_RDWR);
	CHECK_EQ_INT(clone_write(g, 100, 1, "x"), -ENOSPC);
	fill_pattern(INO_BIG, 0, want, sizeof(want));
	CHECK_EQ_INT(clone_read(g, 0, sizeof(got), got), sizeof(got));
	CHECK(memcmp(got, want, sizeof(want)) == 0);
	/* namespace changes fail cleanly, or succeed */
	int r = clone_mkdir(c, 1, "maybe", 0755, 0, 0, &a);
	CHECK(r == 0 || r == -ENOSPC);

	/* make room: the clone goes on as if nothing happened */
	CHECK_EQ_INT(unlink(ballast), 0);
	CHECK_EQ_INT(clone_setattr(c, lookup_ino(c, 1, "fill"), CLONE_SET_SIZE,
				   &(CloneAttr){.size = 1000}, &a),
		     0);
	write_at(g, 100, "x", 1);
	want[100] = 'x';
	CHECK_EQ_INT(clone_release(g), 0);
	CHECK_EQ_INT(clone_release(f), 0);
	clone_close(c);
	c = open_clone(dir);
	check_bytes(c, INO_BIG, 0, want, sizeof(want));
	CHECK_EQ_INT(size_of(c, lookup_ino(c, 1, "fill")), 1000);
	clone_close(c);
	CHECK_EQ_INT(umount(mnt), 0);
}

/* Write 64 KiB blocks of ino's own pattern at off until a write fails; returns the failure. */
static ssize_t fill_until_full(CloneFile *f, uint32_t tag, uint64_t *off)
{
	static uint8_t buf[64 * 1024];
	ssize_t n;
	for (;;) {
		fill_pattern(tag, *off, buf, sizeof(buf));
		n = clone_write(f, *off, sizeof(buf), buf);
		if (n <= 0)
			return n;
		*off += (uint64_t)n;
	}
}

/*
 * A write that succeeded on a full scratch disk must also fsync: what the
 * flush writes besides the data (the copy-up map, the inode row) was set
 * aside when the write was accepted. A directory's fsync does not answer
 * for other files.
 */
static void test_enospc_fsync(const char *tmp)
{
	char mnt[PATH_MAX], dir[PATH_MAX];
	uint8_t *want = NULL;
	uint64_t off = 0, off2 = 5;
	uint8_t bwant[CS * 3];
	CloneFile *f, *g, *h;
	CloneAttr a, b;
	ssize_t n;
	Clone *c;

	test_fmt(mnt, sizeof(mnt), "%s/full", tmp);
	if (geteuid() != 0 || mkdir(mnt, 0700) < 0 ||
	    mount("tmpfs", mnt, "tmpfs", 0, "size=4m") < 0) {
		printf("skipping the ENOSPC fsync test: mounting a tmpfs needs root\n");
		return;
	}
	c = open_clone(test_fmt(dir, sizeof(dir), "%s/clone", mnt));
	fill_pattern(INO_BIG, 0, bwant, sizeof(bwant));
	/* a copy-up whose map is not on disk yet, and a new file, both unflushed */
	g = open_file(c, INO_BIG, O_RDWR);
	write_at(g, 100, "x", 1);
	bwant[100] = 'x';
	CHECK_EQ_INT(clone_mknod(c, 1, "a", S_IFREG | 0644, 0, 0, &a), 0);
	CHECK_EQ_INT(clone_mknod(c, 1, "b", S_IFREG | 0644, 0, 0, &b), 0);
	h = open_file(c, b.ino, O_RDWR);
	write_at(h, 0, "early", 5);
	f = open_file(c, a.ino, O_RDWR);
	n = fill_until_full(f, 1, &off);
	CHECK_EQ_INT(n, -ENOSPC);
	CHECK(off > 0);
	/* once full, a copy-up or an extension either fails now or is flushed later */
	n = clone_write(g, 2 * CS + 7, 1, "y");
	CHECK(n == 1 || n == -ENOSPC);
	if (n == 1)
		bwant[2 * CS + 7] = 'y';
	n = fill_until_full(h, 2, &off2);
	CHECK_EQ_INT(n, -ENOSPC);

	/* a directory answers for its entries, not for the pending data of its files */
	CHECK_EQ_INT(clone_fsyncdir(c, 1), 0);
	CHECK_EQ_INT(clone_fsyncdir(c, INO_BIG), -ENOTDIR);
	CHECK_EQ_INT(clone_fsync(f, false), 0);
	CHECK_EQ_INT(clone_fsync(g, true), 0);
	CHECK_EQ_INT(clone_fsync(h, false), 0);
	CHECK_EQ_INT(clone_fsync(f, false), 0);

	want = xmalloc(off + off2 + 5);
	fill_pattern(1, 0, want, off);
	check_content(c, a.ino, want, off);
	CHECK_EQ_INT(clone_release(f), 0);
	CHECK_EQ_INT(clone_release(g), 0);
	CHECK_EQ_INT(clone_release(h), 0);
	clone_close(c);

	/* what fsync returned for is on disk: reopen and read it back */
	c = open_clone(dir);
	check_content(c, a.ino, want, off);
	check_bytes(c, INO_BIG, 0, bwant, sizeof(bwant));
	memcpy(want, "early", 5);
	fill_pattern(2, 5, want + 5, off2 - 5);
	check_content(c, b.ino, want, off2);
	/* deleting a file makes room again */
	CHECK_EQ_INT(clone_unlink(c, 1, "a"), 0);
	h = open_file(c, b.ino, O_RDWR);
	write_at(h, 0, "later", 5);
	CHECK_EQ_INT(clone_fsync(h, false), 0);
	CHECK_EQ_INT(clone_release(h), 0);
	clone_close(c);
	free(want);
	CHECK_EQ_INT(umount(mnt), 0);
}

typedef struct Hammer {
	CloneFile *f;
	uint64_t off; /* end of what was accepted */
	_Atomic unsigned n_tries;
	_Atomic bool stop;
} Hammer;

/* Keep writing pages to a full disk: any room a flush gives back, this would take. */
static void *hammer_run(void *arg)
{
	Hammer *h = arg;
	uint8_t buf[4096];
	while (!atomic_load(&h->stop)) {
		fill_pattern(3, h->off, buf, sizeof(buf));
		ssize_t n = clone_write(h->f, h->off, sizeof(buf), buf);
		if (n > 0)
			h->off += (uint64_t)n;
		atomic_fetch_add(&h->n_tries, 1);
	}
	return NULL;
}

#define RACE_FILES 8

/*
 * Flushes spending their room on a full disk while another thread writes
 * pages as fast as it can: no flush may lose its room to those writes.
 */
static void test_enospc_fsync_race(const char *tmp)
{
	char mnt[PATH_MAX], dir[PATH_MAX], name[16];
	CloneFile *f[RACE_FILES], *fill;
	uint32_t ino[RACE_FILES];
	Hammer h = {0};
	uint64_t off = 0;
	uint8_t *want;
	CloneAttr a, b;
	pthread_t t;
	Clone *c;

	test_fmt(mnt, sizeof(mnt), "%s/race", tmp);
	if (geteuid() != 0 || mkdir(mnt, 0700) < 0 ||
	    mount("tmpfs", mnt, "tmpfs", 0, "size=4m") < 0) {
		printf("skipping the ENOSPC race test: mounting a tmpfs needs root\n");
		return;
	}
	c = open_clone(test_fmt(dir, sizeof(dir), "%s/clone", mnt));
	/* files written while there is room, flushed once there is none */
	for (int i = 0; i < RACE_FILES; i++) {
		CHECK_EQ_INT(clone_mknod(c, 1, test_fmt(name, sizeof(name), "f%d", i), S_IFREG | 0644,
					 0, 0, &a),
			     0);
		ino[i] = a.ino;
		f[i] = open_file(c, a.ino, O_RDWR);
		write_at(f[i], 0, name, strlen(name));
	}
	CHECK_EQ_INT(clone_mknod(c, 1, "hammer", S_IFREG | 0644, 0, 0, &b), 0);
	h.f = open_file(c, b.ino, O_RDWR);
	write_at(h.f, 0, "h", 1);
	h.off = 1;
	CHECK_EQ_INT(clone_mknod(c, 1, "fill", S_IFREG | 0644, 0, 0, &a), 0);
	fill = open_file(c, a.ino, O_RDWR);
	CHECK_EQ_INT(fill_until_full(fill, 1, &off), -ENOSPC);
	CHECK(pthread_create(&t, NULL, hammer_run, &h) == 0);
	while (atomic_load(&h.n_tries) < 100)
		sched_yield();
	/* each flush finds the disk full again: the writer took what the last one left */
	CHECK_EQ_INT(clone_fsync(fill, false), 0);
	for (int i = 0; i < RACE_FILES; i++) {
		usleep(2000);
		CHECK_EQ_INT(clone_fsync(f[i], false), 0);
	}
	atomic_store(&h.stop, true);
	pthread_join(t, NULL);
	CHECK_EQ_INT(clone_fsync(h.f, false), 0);
	for (int i = 0; i < RACE_FILES; i++)
		CHECK_EQ_INT(clone_release(f[i]), 0);
	CHECK_EQ_INT(clone_release(fill), 0);
	CHECK_EQ_INT(clone_release(h.f), 0);
	clone_close(c);

	c = open_clone(dir);
	for (int i = 0; i < RACE_FILES; i++) {
		test_fmt(name, sizeof(name), "f%d", i);
		check_content(c, ino[i], (const uint8_t *)name, strlen(name));
	}
	want = xmalloc(MAX(off, h.off) + 1);
	fill_pattern(1, 0, want, off);
	check_content(c, a.ino, want, off);
	want[0] = 'h';
	fill_pattern(3, 1, want + 1, h.off - 1);
	check_content(c, b.ino, want, h.off);
	clone_close(c);
	free(want);
	CHECK_EQ_INT(umount(mnt), 0);
}

int main(void)
{
	char tmp[PATH_MAX], dir[PATH_MAX];

	test_tmpdir(tmp, sizeof(tmp));
	/* one clone, built up by each test in turn, then reopened */
	test_fmt(dir, sizeof(dir), "%s/clone/scratch", tmp);
	test_seed(dir);
	test_readdir_cursor(dir);
	test_lower_reads(dir);
	test_copy_up(dir);
	test_truncate(dir);
	test_new_files(dir);
	test_dirs(dir);
	test_rename(dir);
	test_unlink_open(dir);
	test_links_and_attrs(dir);
	test_two_handles(dir);
	test_reopen(dir);
	test_crash_leftovers(dir);
	test_fresh_dir(tmp);
	test_lower_errors(tmp);
	test_concurrent_copy_up(tmp);
	test_enospc(tmp);
	test_long_names(tmp);
	test_enospc_fsync(tmp);
	test_enospc_fsync_race(tmp);
	CHECK_EQ_INT(lower.n_bad, 0);
	TEST_RM_RF(tmp);
	return test_finish();
}
