/*
 * store/restrec.c: a record reads back as written; a damaged, truncated or
 * foreign one is refused; an entry matches only the file as it was; saving
 * waits out a coarse clock's tick and leaves out entries from the future;
 * pruning removes the records of directories that are gone. The LSN and the
 * time of writing read back, version 1 records (no LSN) still load, entries
 * carried from an older record bring its lower LSN, and an entry knows its
 * file's inode after the file is rewritten in place.
 */
#include "tests/unit/test.h"
#include "common/crc32c.h"
#include "common/util.h"
#include "store/restrec.h"

#include <fcntl.h>
#include <unistd.h>

#define ID "0123456789abcdef0123456789abcdef"
#define CS 65536

static char *rec_path(const char *dir, const char *target, char *buf, size_t len)
{
	struct stat st;
	if (stat(target, &st) < 0)
		return NULL;
	return test_fmt(buf, len, "%s/%llx-%llx", dir, (unsigned long long)st.st_dev,
			(unsigned long long)st.st_ino);
}

static void test_roundtrip(const char *dir)
{
	char file[PATH_MAX], path[PATH_MAX];
	ChunkId ids[3];
	uint8_t key[RESTREC_KEY_LEN], key2[RESTREC_KEY_LEN];
	RestoreRecord *r = NULL, *back = NULL;
	struct stat st;

	test_random(ids, sizeof(ids));
	restrec_key(ids, 3, key);
	restrec_key(ids, 2, key2);
	CHECK(memcmp(key, key2, sizeof(key)) != 0);
	test_fmt(file, sizeof(file), "%s/f", dir);
	int fd = open(file, O_CREAT | O_WRONLY, 0600);
	CHECK(fd >= 0 && write(fd, "abc", 3) == 3 && fstat(fd, &st) == 0);
	close(fd);
	CHECK_EQ_INT(restrec_new(ID, CS, dir, &r), 0);
	CHECK_EQ_INT(restrec_add(r, "base/1/f", &st, 42, key), 0);
	CHECK_EQ_INT(restrec_add(r, "/abs/tablespace/x", &st, 7, key2), 0);
	rec_path(dir, dir, path, sizeof(path));
	int64_t t0 = now_ns();
	CHECK_EQ_INT(restrec_save(r, path, SIZE_MAX, NULL), 0);
	/* saved once the newest change is a racy window old, waiting no longer than that */
	CHECK(now_ns() - timespec_to_ns(&st.st_ctim) >= RESTREC_RACY_NS);
	CHECK(now_ns() - t0 < 10 * RESTREC_RACY_NS);
	r = restrec_free(r);

	if (!CHECK_EQ_INT(restrec_load(path, ID, CS, &back), 0))
		return;
	CHECK_EQ_INT(restrec_count(back), 2);
	const RestRecEntry *e = restrec_find(back, "base/1/f");
	if (CHECK(e != NULL)) {
		CHECK_EQ_INT(e->content, 42);
		CHECK(!memcmp(e->key, key, sizeof(key)));
		CHECK(restrec_matches(e, &st));
		/* the same file after any change: its ctime moved */
		usleep(20000);
		CHECK_EQ_INT(chmod(file, 0600), 0);
		struct stat st2;
		CHECK(stat(file, &st2) == 0 && !restrec_matches(e, &st2));
	}
	e = restrec_find(back, "/abs/tablespace/x");
	CHECK(e && e->content == 7 && !memcmp(e->key, key2, sizeof(key2)));
	CHECK(restrec_find(back, "base/1") == NULL);
	back = restrec_free(back);

	/* the first entries only (a restore's record of the files finished so far) */
	CHECK_EQ_INT(restrec_load(path, ID, CS, &back), 0);
	if (back) {
		char part[PATH_MAX];
		RestoreRecord *first = NULL;
		test_fmt(part, sizeof(part), "%s.part", path);
		CHECK_EQ_INT(restrec_save(back, part, 1, NULL), 0);
		if (CHECK_EQ_INT(restrec_load(part, ID, CS, &first), 0))
			CHECK_EQ_INT(restrec_count(first), 1);
		restrec_free(first);
		unlink(part);
	}
	back = restrec_free(back);

	/* an older record's entries not taken are carried into a new one (a restore stopped early) */
	CHECK_EQ_INT(restrec_load(path, ID, CS, &back), 0);
	if (back) {
		char carry[PATH_MAX];
		RestoreRecord *fresh = NULL, *both = NULL;
		struct stat st3 = st;
		test_fmt(carry, sizeof(carry), "%s.carry", path);
		CHECK(restrec_take(back, "base/1/f") != NULL); /* reached: this restore says what it is */
		CHECK(restrec_take(back, "no/such") == NULL);
		CHECK_EQ_INT(restrec_new(ID, CS, dir, &fresh), 0);
		st3.st_ino++;
		CHECK_EQ_INT(restrec_add(fresh, "new/file", &st3, 9, key), 0);
		CHECK_EQ_INT(restrec_save(fresh, carry, SIZE_MAX, back), 0);
		if (CHECK_EQ_INT(restrec_load(carry, ID, CS, &both), 0)) {
			CHECK_EQ_INT(restrec_count(both), 2);
			CHECK(restrec_find(both, "new/file") != NULL);
			CHECK(restrec_find(both, "/abs/tablespace/x") != NULL);
			CHECK(restrec_find(both, "base/1/f") == NULL);
		}
		restrec_free(both);
		restrec_free(fresh);
		unlink(carry);
	}
	back = restrec_free(back);

	/* another repository, another chunk size */
	CHECK_EQ_INT(restrec_load(path, "ffffffffffffffffffffffffffffffff", CS, &back), -ESTALE);
	CHECK_EQ_INT(restrec_load(path, ID, 2 * CS, &back), -ESTALE);
	/* every byte matters: a flipped one, a cut */
	uint8_t *buf = NULL;
	size_t len = 0;
	CHECK_EQ_INT(file_read_regular(path, true, 1 << 20, &buf, &len), 0);
	for (size_t i = 0; i < len; i += 7) {
		buf[i] ^= 1;
		CHECK_EQ_INT(file_write_atomic(path, buf, len, 0600), 0);
		int e2 = restrec_load(path, ID, CS, &back);
		CHECK(e2 == -EBADMSG || e2 == -ESTALE);
		back = restrec_free(back);
		buf[i] ^= 1;
	}
	CHECK_EQ_INT(file_write_atomic(path, buf, len - 5, 0600), 0);
	CHECK_EQ_INT(restrec_load(path, ID, CS, &back), -EBADMSG);
	free(buf);
	unlink(path);
	CHECK_EQ_INT(restrec_load(path, ID, CS, &back), -ENOENT);
}

/* an entry changed "after" the save (a clock set back since) is left out */
static void test_future(const char *dir)
{
	char path[PATH_MAX];
	struct stat st = {0};
	uint8_t key[RESTREC_KEY_LEN] = {0};
	RestoreRecord *r = NULL, *back = NULL;

	CHECK_EQ_INT(restrec_new(ID, CS, dir, &r), 0);
	st.st_ctim.tv_sec = time(NULL) + 3600;
	st.st_size = 1;
	CHECK_EQ_INT(restrec_add(r, "later", &st, 1, key), 0);
	st.st_ctim.tv_sec = time(NULL) - 3600;
	CHECK_EQ_INT(restrec_add(r, "earlier", &st, 1, key), 0);
	int64_t t0 = now_ns();
	CHECK_EQ_INT(restrec_save(r, rec_path(dir, dir, path, sizeof(path)), SIZE_MAX, NULL), 0);
	CHECK(now_ns() - t0 < 10 * RESTREC_RACY_NS); /* waited a window at most */
	restrec_free(r);
	if (CHECK_EQ_INT(restrec_load(path, ID, CS, &back), 0)) {
		CHECK(restrec_find(back, "earlier") != NULL);
		CHECK(restrec_find(back, "later") == NULL);
	}
	restrec_free(back);
}

/* A regular file at dir/name holding len bytes; st: its fstat after the write. */
static bool make_file(const char *dir, const char *name, size_t len, struct stat *st)
{
	char path[PATH_MAX];
	uint8_t buf[256];
	test_random(buf, sizeof(buf));
	test_fmt(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
	bool ok = fd >= 0 && len <= sizeof(buf) && write(fd, buf, len) == (ssize_t)len &&
		  fstat(fd, st) == 0;
	if (fd >= 0)
		close(fd);
	return ok;
}

/* The version 1 form of the version 2 record at path: no LSN, version field 1. */
static bool downgrade_v1(const char *path, const char *v1)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	bool ok = file_read_regular(path, true, 1 << 20, &buf, &len) == 0 && len > 12 &&
		  get_le32(buf + 8) == 2;
	if (ok) {
		put_le32(buf + 8, 1);
		put_le32(buf + len - 12, crc32c(buf, len - 12));
		ok = file_write_atomic(v1, buf, len - 8, 0600) == 0;
	}
	free(buf);
	return ok;
}

/* path's bytes with the u32 version at offset 8 set to version, its CRC redone. */
static bool set_version(const char *path, const char *out, uint32_t version)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	bool ok = file_read_regular(path, true, 1 << 20, &buf, &len) == 0 && len > 12;
	if (ok) {
		put_le32(buf + 8, version);
		put_le32(buf + len - 4, crc32c(buf, len - 4));
		ok = file_write_atomic(out, buf, len, 0600) == 0;
	}
	free(buf);
	return ok;
}

/* The LSN and the time of writing read back; a version 1 record loads with LSN 0. */
static void test_lsn(const char *dir)
{
	char path[PATH_MAX], v1[PATH_MAX], other[PATH_MAX];
	uint8_t key[RESTREC_KEY_LEN], *buf = NULL;
	size_t len = 0;
	RestoreRecord *r = NULL, *back = NULL;
	struct stat st;
	const uint64_t lsn = 0x123456789ABCULL;

	test_random(key, sizeof(key));
	CHECK(make_file(dir, "lsn_f", 5, &st));
	test_fmt(path, sizeof(path), "%s/lsn.rec", dir);
	test_fmt(v1, sizeof(v1), "%s/lsn.v1", dir);
	test_fmt(other, sizeof(other), "%s/lsn.other", dir);
	CHECK_EQ_INT(restrec_new(ID, CS, dir, &r), 0);
	if (!r)
		return;
	CHECK_EQ_INT(restrec_lsn(r), 0); /* unknown until set */
	restrec_set_lsn(r, lsn);
	CHECK_EQ_INT(restrec_lsn(r), lsn);
	CHECK_EQ_INT(restrec_add(r, "base/5/16384", &st, 42, key), 0);
	CHECK_EQ_INT(restrec_save(r, path, SIZE_MAX, NULL), 0);
	int64_t saved = now_ns();
	r = restrec_free(r);

	/* the format: version 2, the LSN right before the CRC */
	CHECK_EQ_INT(file_read_regular(path, true, 1 << 20, &buf, &len), 0);
	if (buf && len > 12) {
		CHECK_EQ_INT(get_le32(buf + 8), 2);
		CHECK(get_le64(buf + len - 12) == lsn);
	}
	free(buf);
	if (CHECK_EQ_INT(restrec_load(path, ID, CS, &back), 0)) {
		CHECK(restrec_lsn(back) == lsn);
		int64_t w = restrec_written_ns(back);
		CHECK(w <= saved && saved - w < 5 * 1000000000LL);
	}
	int64_t written = back ? restrec_written_ns(back) : 0;
	back = restrec_free(back);

	/* version 1: no LSN, the entries end right before the CRC */
	CHECK(downgrade_v1(path, v1));
	if (CHECK_EQ_INT(restrec_load(v1, ID, CS, &back), 0)) {
		CHECK_EQ_INT(restrec_lsn(back), 0);
		CHECK_EQ_INT(restrec_written_ns(back), written);
		CHECK_EQ_INT(restrec_count(back), 1);
		const RestRecEntry *e = restrec_find(back, "base/5/16384");
		CHECK(e && e->content == 42 && !memcmp(e->key, key, sizeof(key)) &&
		      restrec_matches(e, &st));
	}
	back = restrec_free(back);
	/* a version that does not fit its layout, or is unknown, is damage */
	CHECK(set_version(path, other, 1)); /* version 1 with an LSN */
	CHECK_EQ_INT(restrec_load(other, ID, CS, &back), -EBADMSG);
	CHECK(set_version(v1, other, 2)); /* version 2 without one */
	CHECK_EQ_INT(restrec_load(other, ID, CS, &back), -EBADMSG);
	CHECK(set_version(path, other, 3));
	CHECK_EQ_INT(restrec_load(other, ID, CS, &back), -EBADMSG);
	CHECK(set_version(path, other, 0));
	CHECK_EQ_INT(restrec_load(other, ID, CS, &back), -EBADMSG);
	CHECK(back == NULL);
	unlink(path);
	unlink(v1);
	unlink(other);
}

/* Save r to path with also and load it back: its LSN and entries, or -1 when it cannot. */
static int64_t saved_lsn(RestoreRecord *r, const char *path, const RestoreRecord *also,
			 size_t *ret_n)
{
	RestoreRecord *back = NULL;
	int64_t lsn = -1;
	*ret_n = 0;
	if (restrec_save(r, path, SIZE_MAX, also) == 0 && restrec_load(path, ID, CS, &back) == 0) {
		lsn = (int64_t)restrec_lsn(back);
		*ret_n = restrec_count(back);
	}
	restrec_free(back);
	return lsn;
}

/* An entry carried from an older record brings its LSN when it is lower. */
static void test_carried_lsn(const char *dir)
{
	char pa[PATH_MAX], pb[PATH_MAX];
	uint8_t key[RESTREC_KEY_LEN] = {0};
	RestoreRecord *a = NULL, *old = NULL, *b = NULL, *back = NULL;
	struct stat sx = {0}, sy = {0};
	size_t n = 0;

	test_fmt(pa, sizeof(pa), "%s/carry_a.rec", dir);
	test_fmt(pb, sizeof(pb), "%s/carry_b.rec", dir);
	sx.st_ctim.tv_sec = sy.st_ctim.tv_sec = time(NULL) - 3600; /* not racy: no wait */
	sx.st_ino = 1001;
	sy.st_ino = 1002;
	CHECK_EQ_INT(restrec_new(ID, CS, dir, &a), 0);
	CHECK_EQ_INT(restrec_new(ID, CS, dir, &b), 0);
	if (!a || !b)
		goto out;
	restrec_set_lsn(a, 100);
	CHECK_EQ_INT(restrec_add(a, "x", &sx, 1, key), 0);
	CHECK_EQ_INT(restrec_add(a, "y", &sy, 2, key), 0);
	CHECK_EQ_INT(restrec_save(a, pa, SIZE_MAX, NULL), 0);
	if (!CHECK_EQ_INT(restrec_load(pa, ID, CS, &old), 0))
		goto out;
	CHECK_EQ_INT(restrec_lsn(old), 100);
	restrec_set_lsn(b, 500);
	CHECK_EQ_INT(restrec_add(b, "x", &sx, 11, key), 0);
	CHECK(restrec_take(old, "x") != NULL); /* this restore reached x */

	/* y is carried: the record's changes count from A's LSN */
	CHECK_EQ_INT(restrec_save(b, pb, SIZE_MAX, old), 0);
	if (CHECK_EQ_INT(restrec_load(pb, ID, CS, &back), 0)) {
		CHECK_EQ_INT(restrec_lsn(back), 100);
		CHECK_EQ_INT(restrec_count(back), 2);
		const RestRecEntry *x = restrec_find(back, "x"), *y = restrec_find(back, "y");
		CHECK(x && x->content == 11);
		CHECK(y && y->content == 2 && y->ino == 1002);
	}
	back = restrec_free(back);
	/* nothing carried: its own */
	CHECK_EQ_INT(saved_lsn(b, pb, NULL, &n), 500);
	CHECK_EQ_INT(n, 1);
	CHECK(restrec_take(old, "y") != NULL);
	CHECK_EQ_INT(saved_lsn(b, pb, old, &n), 500);
	CHECK_EQ_INT(n, 1);
	/* the lower of both, whichever it is */
	old = restrec_free(old);
	if (!CHECK_EQ_INT(restrec_load(pa, ID, CS, &old), 0))
		goto out;
	CHECK(restrec_take(old, "x") != NULL);
	restrec_set_lsn(b, 50);
	CHECK_EQ_INT(saved_lsn(b, pb, old, &n), 50);
	CHECK_EQ_INT(n, 2);
out:
	restrec_free(back);
	restrec_free(old);
	restrec_free(a);
	restrec_free(b);
	unlink(pa);
	unlink(pb);
}

/* Same inode: the recorded file rewritten in place, not another file nor a replacement. */
static void test_same_inode(const char *dir)
{
	char path[PATH_MAX], file[PATH_MAX];
	uint8_t key[RESTREC_KEY_LEN] = {0}, bytes[100];
	RestoreRecord *r = NULL, *back = NULL;
	struct stat st, st2, other;

	CHECK(make_file(dir, "inode_f", 10, &st));
	CHECK(make_file(dir, "inode_g", 10, &other));
	test_fmt(path, sizeof(path), "%s/inode.rec", dir);
	test_fmt(file, sizeof(file), "%s/inode_f", dir);
	CHECK_EQ_INT(restrec_new(ID, CS, dir, &r), 0);
	if (!r)
		return;
	CHECK_EQ_INT(restrec_add(r, "inode_f", &st, 3, key), 0);
	CHECK_EQ_INT(restrec_save(r, path, SIZE_MAX, NULL), 0);
	restrec_free(r);
	if (!CHECK_EQ_INT(restrec_load(path, ID, CS, &back), 0))
		return;
	const RestRecEntry *e = restrec_find(back, "inode_f");
	if (CHECK(e != NULL)) {
		CHECK(restrec_same_inode(e, &st) && restrec_matches(e, &st));
		/* other bytes, another size, the same inode (as PostgreSQL writes) */
		CHECK(make_file(dir, "inode_f", 77, &st2));
		CHECK(st2.st_ino == st.st_ino && st2.st_size == 77);
		CHECK(restrec_same_inode(e, &st2));
		CHECK(!restrec_matches(e, &st2));
		CHECK(!restrec_same_inode(e, &other));
		/* replaced by a rename: another inode */
		test_random(bytes, sizeof(bytes));
		CHECK_EQ_INT(file_write_atomic(file, bytes, sizeof(bytes), 0600), 0);
		CHECK(stat(file, &st2) == 0 && !restrec_same_inode(e, &st2));
	}
	restrec_free(back);
	unlink(path);
}

static void test_prune(const char *dir)
{
	char recs[PATH_MAX], gone[PATH_MAX], kept[PATH_MAX], p1[PATH_MAX], p2[PATH_MAX];
	RestoreRecord *r = NULL;

	test_fmt(recs, sizeof(recs), "%s/records", dir);
	test_fmt(gone, sizeof(gone), "%s/gone", dir);
	test_fmt(kept, sizeof(kept), "%s/kept", dir);
	CHECK(mkdir(recs, 0700) == 0 && mkdir(gone, 0700) == 0 && mkdir(kept, 0700) == 0);
	rec_path(recs, gone, p1, sizeof(p1));
	rec_path(recs, kept, p2, sizeof(p2));
	CHECK_EQ_INT(restrec_new(ID, CS, gone, &r), 0);
	CHECK_EQ_INT(restrec_save(r, p1, SIZE_MAX, NULL), 0);
	restrec_free(r);
	CHECK_EQ_INT(restrec_new(ID, CS, kept, &r), 0);
	CHECK_EQ_INT(restrec_save(r, p2, SIZE_MAX, NULL), 0);
	restrec_free(r);
	CHECK_EQ_INT(rmdir(gone), 0);
	restrec_prune(recs);
	CHECK(access(p1, F_OK) < 0 && errno == ENOENT);
	CHECK_EQ_INT(access(p2, F_OK), 0);
	/* a record under another directory's name (a target replaced by a new one) goes too */
	char moved[PATH_MAX];
	test_fmt(moved, sizeof(moved), "%s/%s", recs, "1-2");
	CHECK_EQ_INT(rename(p2, moved), 0);
	restrec_prune(recs);
	CHECK(access(moved, F_OK) < 0 && errno == ENOENT);
}

int main(void)
{
	char dir[PATH_MAX];
	if (!test_tmpdir(dir, sizeof(dir)))
		return 1;
	test_roundtrip(dir);
	test_future(dir);
	test_prune(dir);
	test_lsn(dir);
	test_carried_lsn(dir);
	test_same_inode(dir);
	rm_rf(dir);
	return test_finish();
}
