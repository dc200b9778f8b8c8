/*
 * Unit tests for store/walspool.h: fetch entries round trip; a damaged,
 * truncated, renamed or trailer-less entry is -EBADMSG and removed; trim
 * keeps exactly the window after the segment asked for on its timeline;
 * push records match only the bytes recorded; prune; walspool_run stops
 * after a job says so and runs everything with one thread.
 */
#include "tests/unit/test.h"

#include "store/walspool.h"

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sys/file.h>
#include <unistd.h>

#define MIB (1024 * 1024)

static char dir[PATH_MAX];

static void seg_name(uint64_t segno, uint32_t tli, char out[25])
{
	wal_segno_to_name(tli, segno, MIB, out);
}

static bool spooled(WalSpool *s, uint64_t segno)
{
	char n[25];
	seg_name(segno, 1, n);
	return walspool_has(s, n);
}

static void test_entries(WalSpool *s, const uint8_t *buf)
{
	char path[PATH_MAX], other[PATH_MAX];
	void *out = NULL;
	size_t len = 0;
	int fd;

	CHECK_EQ_INT(walspool_put(s, "000000010000000000000005", buf, MIB), 0);
	CHECK(walspool_has(s, "000000010000000000000005"));
	if (CHECK_EQ_INT(walspool_take(s, "000000010000000000000005", &out, &len), 0))
		CHECK(len == MIB && memcmp(out, buf, MIB) == 0);
	free(out);
	CHECK(!walspool_has(s, "000000010000000000000005")); /* consumed */
	CHECK_EQ_INT(walspool_take(s, "000000010000000000000005", &out, &len), -ENOENT);
	CHECK_EQ_INT(walspool_put(s, "not a name", buf, 10), -EINVAL);

	/* one flipped byte in the bytes, in the trailer; cut short; renamed; no trailer */
	static const off_t flips[] = {0, MIB / 2, MIB - 1, MIB + 3, MIB + 12, MIB + 16, MIB + 30};
	for (size_t i = 0; i < ELEMENTSOF(flips); i++) {
		uint8_t b;
		CHECK_EQ_INT(walspool_put(s, "000000010000000000000006", buf, MIB), 0);
		test_fmt(path, sizeof(path), "%s/000000010000000000000006", dir);
		fd = open(path, O_RDWR);
		CHECK(pread(fd, &b, 1, flips[i]) == 1);
		b ^= 0x10;
		CHECK(pwrite(fd, &b, 1, flips[i]) == 1);
		close(fd);
		CHECK_EQ_INT(walspool_take(s, "000000010000000000000006", &out, &len), -EBADMSG);
		CHECK(access(path, F_OK) < 0); /* removed: never served */
	}
	CHECK_EQ_INT(walspool_put(s, "000000010000000000000006", buf, MIB), 0);
	CHECK_EQ_INT(truncate(path, MIB + 32), 0);
	CHECK_EQ_INT(walspool_take(s, "000000010000000000000006", &out, &len), -EBADMSG);
	CHECK_EQ_INT(walspool_put(s, "000000010000000000000006", buf, MIB), 0);
	CHECK_EQ_INT(truncate(path, MIB), 0);
	CHECK_EQ_INT(walspool_take(s, "000000010000000000000006", &out, &len), -EBADMSG);
	CHECK_EQ_INT(walspool_put(s, "000000010000000000000006", buf, MIB), 0);
	test_fmt(other, sizeof(other), "%s/000000010000000000000007", dir);
	CHECK_EQ_INT(rename(path, other), 0);
	CHECK_EQ_INT(walspool_take(s, "000000010000000000000007", &out, &len), -EBADMSG);
	CHECK_EQ_INT(walspool_put(s, "000000010000000000000006", buf, 0), 0); /* empty is fine */
	if (CHECK_EQ_INT(walspool_take(s, "000000010000000000000006", &out, &len), 0))
		CHECK_EQ_INT(len, 0);
	free(out);
}

static void test_trim(WalSpool *s, const uint8_t *buf)
{
	char n[25], path[PATH_MAX];
	WalName want;
	size_t kept = 99;

	/* 10..20 on timeline 1, 12 on timeline 2, a stray temporary file */
	for (uint64_t i = 10; i <= 20; i++) {
		seg_name(i, 1, n);
		CHECK_EQ_INT(walspool_put(s, n, buf, MIB), 0);
	}
	seg_name(12, 2, n);
	CHECK_EQ_INT(walspool_put(s, n, buf, MIB), 0);
	test_fmt(path, sizeof(path), "%s/000000010000000000000015.tmp-abcdef", dir);
	close(open(path, O_CREAT | O_WRONLY, 0600));
	/* asked for 12 with a window of 4: 13, 14, 15 stay */
	seg_name(12, 1, n);
	CHECK_EQ_INT(wal_name_parse(n, &want), 0);
	CHECK_EQ_INT(walspool_trim(s, &want, 4, &kept), 0);
	CHECK_EQ_INT(kept, 3);
	for (uint64_t i = 10; i <= 20; i++)
		CHECK_EQ_INT(spooled(s, i), i >= 13 && i <= 15);
	seg_name(12, 2, n);
	CHECK(!walspool_has(s, n));
	CHECK(access(path, F_OK) < 0);
	/* a history file asked for: everything goes */
	CHECK_EQ_INT(walspool_trim(s, NULL, 0, &kept), 0);
	CHECK_EQ_INT(kept, 0);
	CHECK(!spooled(s, 13));
	CHECK_EQ_INT(test_count_names(dir, "0000"), 0);
}

static bool keep_odd(const char *name, void *userdata)
{
	(void)userdata;
	return (name[23] - '0') % 2 == 1;
}

static void test_done(WalSpool *s, uint8_t *buf)
{
	char path[PATH_MAX];

	CHECK_EQ_INT(walspool_take_done(s, "000000010000000000000001", buf, MIB), 0); /* none */
	CHECK_EQ_INT(walspool_mark_done(s, "000000010000000000000001", buf, MIB), 0);
	CHECK_EQ_INT(walspool_take_done(s, "000000010000000000000001", buf, MIB), 1);
	/* taken: PostgreSQL never asks twice for a file it marked done */
	CHECK_EQ_INT(walspool_take_done(s, "000000010000000000000001", buf, MIB), 0);
	/* other bytes: one flipped, one fewer */
	CHECK_EQ_INT(walspool_mark_done(s, "000000010000000000000001", buf, MIB), 0);
	buf[12345] ^= 1;
	CHECK_EQ_INT(walspool_take_done(s, "000000010000000000000001", buf, MIB), 0);
	buf[12345] ^= 1;
	CHECK_EQ_INT(walspool_take_done(s, "000000010000000000000001", buf, MIB), 0); /* removed */
	CHECK_EQ_INT(walspool_mark_done(s, "000000010000000000000001", buf, MIB), 0);
	CHECK_EQ_INT(walspool_take_done(s, "000000010000000000000001", buf, MIB - 1), 0);
	/* a damaged record matches nothing */
	CHECK_EQ_INT(walspool_mark_done(s, "000000010000000000000001", buf, MIB), 0);
	test_fmt(path, sizeof(path), "%s/000000010000000000000001.done", dir);
	CHECK_EQ_INT(truncate(path, 20), 0);
	CHECK_EQ_INT(walspool_take_done(s, "000000010000000000000001", buf, MIB), 0);
	/* prune keeps what keep() says */
	for (int i = 1; i <= 4; i++) {
		char n[25];
		seg_name((uint64_t)i, 1, n);
		CHECK_EQ_INT(walspool_mark_done(s, n, buf, 100), 0);
	}
	CHECK_EQ_INT(walspool_prune_done(s, keep_odd, NULL), 0);
	CHECK_EQ_INT(walspool_take_done(s, "000000010000000000000001", buf, 100), 1);
	CHECK_EQ_INT(walspool_take_done(s, "000000010000000000000002", buf, 100), 0);
	CHECK_EQ_INT(walspool_take_done(s, "000000010000000000000003", buf, 100), 1);
	CHECK_EQ_INT(walspool_take_done(s, "000000010000000000000004", buf, 100), 0);
}

typedef struct RunCtx {
	pthread_mutex_t lock;
	unsigned ran[100];
	size_t stop_at;
} RunCtx;

static int run_job(size_t i, void *userdata)
{
	RunCtx *c = userdata;
	pthread_mutex_lock(&c->lock);
	c->ran[i]++;
	pthread_mutex_unlock(&c->lock);
	return i == c->stop_at ? WALSPOOL_STOP : 0;
}

static void test_run(void)
{
	for (unsigned threads = 0; threads <= 9; threads += 3) {
		RunCtx c = {.stop_at = SIZE_MAX};
		size_t n_ran = 0;
		pthread_mutex_init(&c.lock, NULL);
		walspool_run(100, threads, run_job, &c);
		for (size_t i = 0; i < 100; i++)
			n_ran += c.ran[i] == 1;
		CHECK_EQ_INT(n_ran, 100);
		/*
		 * a stop at 10: every job before it ran, each once; with one thread
		 * none after it (with more, others may have started before it ended)
		 */
		memset(c.ran, 0, sizeof(c.ran));
		c.stop_at = 10;
		walspool_run(100, threads, run_job, &c);
		for (size_t i = 0; i < 100; i++)
			CHECK(i <= 10 ? c.ran[i] == 1 : c.ran[i] <= (threads > 1 ? 1u : 0u));
		pthread_mutex_destroy(&c.lock);
	}
}

int main(void)
{
	uint8_t *buf = malloc(MIB);
	WalSpool *s = NULL, *s2 = NULL;
	char sub[PATH_MAX];

	test_tmpdir(dir, sizeof(dir));
	test_random(buf, MIB);
	test_fmt(sub, sizeof(sub), "%s/a/b", dir);
	if (CHECK_EQ_INT(walspool_open(sub, &s), 0)) {
		struct stat st;
		CHECK(stat(sub, &st) == 0 && (st.st_mode & 0777) == 0700);
		s = walspool_free(s);
	}
	if (!CHECK_EQ_INT(walspool_open(dir, &s), 0))
		return test_finish();
	CHECK_EQ_STR(walspool_dir(s), dir);
	test_entries(s, buf);
	test_trim(s, buf);
	test_done(s, buf);
	test_run();
	/* the lock: a second holder of the same spool waits (checked without waiting) */
	{
		char lock[PATH_MAX];
		int fd = open(test_fmt(lock, sizeof(lock), "%s/lock", dir), O_RDWR);
		CHECK(fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK);
		close(fd);
	}
	walspool_free(s);
	CHECK_EQ_INT(walspool_open(dir, &s2), 0);
	walspool_free(s2);
	CHECK(walspool_free(NULL) == NULL);
	TEST_RM_RF(dir);
	free(buf);
	return test_finish();
}
