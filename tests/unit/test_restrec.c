/*
 * store/restrec.c: a record reads back as written; a damaged, truncated or
 * foreign one is refused; an entry matches only the file as it was; saving
 * waits out a coarse clock's tick and leaves out entries from the future;
 * pruning removes the records of directories that are gone.
 */
#include "tests/unit/test.h"
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
	rm_rf(dir);
	return test_finish();
}
