/*
 * fs/chunkcache.h: chunks read back and checked, hits and misses, pinned
 * entries never evicted, the capacity bounding the rest, one load of a chunk
 * for concurrent readers, errors (unknown, damaged: remembered), prefetch
 * (located in batches, runs fetched at once), drop-behind.
 */
#include "tests/unit/test.h"

#include "common/log.h"
#include "fs/chunkcache.h"
#include "store/snapwriter.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#define CS 16384
#define N_CHUNKS 96
#define N_SHARDS 16 /* fs/chunkcache.c's: the capacity is split between them */

static const RepoInitOptions small_repo = {.chunk_size = CS, .pack_size = 1 << 20};

static uint8_t *data; /* N_CHUNKS * CS random bytes, stored as one file */
static ChunkId ids[N_CHUNKS];

static int store_file(Repo *r)
{
	SnapWriterOptions o = {.jobs = 1, .source = "test"};
	SnapWriterResult res = {0};
	SnapWriter *w = NULL;
	SnapFile *f = NULL;
	uint64_t ino;
	int e = snapwriter_new(r, &o, &w);
	if (e == 0)
		e = snapwriter_add_dir(w, &(SnapEntry){.name = "", .mode = S_IFDIR | 0700}, &ino);
	if (e == 0)
		e = snapwriter_file_begin(w, &(SnapEntry){.parent = ino, .name = "f", .mode = S_IFREG | 0600},
					  &f);
	if (e == 0)
		e = snapwriter_file_write(w, f, data, (size_t)N_CHUNKS * CS);
	if (f) {
		int e2 = snapwriter_file_end(w, f);
		e = e ? e : e2;
	}
	if (e == 0)
		e = snapwriter_commit(w, &res);
	snapwriter_free(w);
	for (int i = 0; i < N_CHUNKS; i++)
		repo_chunk_hash(r, data + (size_t)i * CS, CS, &ids[i]);
	return e;
}

static bool chunk_ok(const CachedChunk *e, int i)
{
	return memcmp(cached_chunk_data(e), data + (size_t)i * CS, CS) == 0;
}

/* Chunks [from, to) through the cache: each one got, right, and put back. */
static void get_all_ok(ChunkCache *c, int from, int to)
{
	CachedChunk *e;
	for (int i = from; i < to; i++)
		if (CHECK_EQ_INT(chunk_cache_get(c, &ids[i], CS, &e), 0)) {
			CHECK(chunk_ok(e, i));
			chunk_cache_put(c, e);
		}
}

/* Until n chunks have been prefetched, for at most 5 s. */
static void wait_prefetched(ChunkCache *c, uint64_t n)
{
	ChunkCacheStats st;
	for (int k = 0; k < 500; k++) {
		chunk_cache_stats(c, &st);
		if (st.prefetched == n)
			break;
		usleep(10 * 1000);
	}
}

static void test_get_put(Repo *r)
{
	ChunkCache *c = NULL;
	CachedChunk *e = NULL, *e2 = NULL;
	ChunkCacheStats st;

	if (!CHECK_EQ_INT(chunk_cache_new(r, 64 * CS, 0, &c), 0))
		return;
	get_all_ok(c, 0, 8);
	chunk_cache_stats(c, &st);
	CHECK(st.misses == 8 && st.hits == 0 && st.evicted == 0);
	CHECK(st.bytes == 8 * CS);
	/* again: from the cache, the same entry pinned twice */
	CHECK_EQ_INT(chunk_cache_get(c, &ids[3], CS, &e), 0);
	CHECK_EQ_INT(chunk_cache_get(c, &ids[3], CS, &e2), 0);
	CHECK(e == e2 && chunk_ok(e, 3));
	chunk_cache_put(c, e);
	CHECK(chunk_ok(e2, 3)); /* still pinned once */
	chunk_cache_put(c, e2);
	chunk_cache_stats(c, &st);
	CHECK(st.misses == 8 && st.hits == 2);
	/* no prefetch threads: a prefetch is a no-op */
	chunk_cache_prefetch(c, &ids[20], CS);
	chunk_cache_stats(c, &st);
	CHECK(st.prefetched == 0 && st.misses == 8);
	chunk_cache_free(c);
}

static void test_bounds(Repo *r)
{
	ChunkCache *c = NULL;
	CachedChunk *pinned[N_CHUNKS] = {0}, *e;
	ChunkCacheStats st;
	const uint64_t cap = N_SHARDS * 2 * CS; /* two chunks a shard */

	if (!CHECK_EQ_INT(chunk_cache_new(r, cap, 0, &c), 0))
		return;
	/* unpinned entries: never more than the capacity */
	for (int round = 0; round < 2; round++)
		for (int i = 0; i < N_CHUNKS; i++) {
			if (!CHECK_EQ_INT(chunk_cache_get(c, &ids[i], CS, &e), 0))
				continue;
			CHECK(chunk_ok(e, i));
			chunk_cache_put(c, e);
			chunk_cache_stats(c, &st);
			if (!CHECK(st.bytes <= cap))
				break;
		}
	chunk_cache_stats(c, &st);
	/* every load not resident was evicted; the second round found only what stayed */
	CHECK(st.evicted == st.misses - st.bytes / CS);
	CHECK(st.misses + st.hits == 2 * N_CHUNKS);
	CHECK(st.misses >= 2 * N_CHUNKS - cap / CS);

	/* pinned entries are never evicted, whatever the capacity */
	for (int i = 0; i < N_CHUNKS / 2; i++)
		CHECK_EQ_INT(chunk_cache_get(c, &ids[i], CS, &pinned[i]), 0);
	chunk_cache_stats(c, &st);
	CHECK(st.bytes >= (uint64_t)N_CHUNKS / 2 * CS);
	for (int i = N_CHUNKS / 2; i < N_CHUNKS; i++) { /* churn the rest */
		if (CHECK_EQ_INT(chunk_cache_get(c, &ids[i], CS, &e), 0))
			chunk_cache_put(c, e);
	}
	for (int i = 0; i < N_CHUNKS / 2; i++)
		if (pinned[i] && !CHECK(chunk_ok(pinned[i], i)))
			break;
	/* put back, the bound holds again */
	for (int i = 0; i < N_CHUNKS / 2; i++)
		if (pinned[i])
			chunk_cache_put(c, pinned[i]);
	chunk_cache_stats(c, &st);
	CHECK(st.bytes <= cap);
	chunk_cache_free(c);
}

typedef struct {
	ChunkCache *c;
	int i;
	int r;
	bool same;
} Reader;

static void *reader_main(void *arg)
{
	Reader *rd = arg;
	CachedChunk *e;
	rd->r = chunk_cache_get(rd->c, &ids[rd->i], CS, &e);
	if (rd->r == 0) {
		rd->same = chunk_ok(e, rd->i);
		chunk_cache_put(rd->c, e);
	}
	return NULL;
}

static void test_concurrent(Repo *r)
{
	ChunkCache *c = NULL;
	Reader rd[8];
	pthread_t t[8];
	ChunkCacheStats st;

	if (!CHECK_EQ_INT(chunk_cache_new(r, 64 * CS, 0, &c), 0))
		return;
	/* eight readers of one chunk: one loads it, the others wait for it */
	for (int k = 0; k < 8; k++) {
		rd[k] = (Reader){.c = c, .i = 40};
		CHECK_EQ_INT(pthread_create(&t[k], NULL, reader_main, &rd[k]), 0);
	}
	for (int k = 0; k < 8; k++) {
		pthread_join(t[k], NULL);
		CHECK(rd[k].r == 0 && rd[k].same);
	}
	chunk_cache_stats(c, &st);
	CHECK(st.misses == 1 && st.hits == 7);
	chunk_cache_free(c);
}

static void test_prefetch(Repo *r)
{
	ChunkCache *c = NULL;
	ChunkCacheStats st;
	ChunkId hole;

	if (!CHECK_EQ_INT(chunk_cache_new(r, 64 * CS, 2, &c), 0))
		return;
	memset(&hole, 0, sizeof(hole));
	CHECK(chunk_id_is_hole(&hole));
	chunk_cache_prefetch(c, &hole, CS); /* never a hole */
	for (int i = 50; i < 58; i++)
		chunk_cache_prefetch(c, &ids[i], CS);
	wait_prefetched(c, 8);
	/* (an item queued longer than 100 ms is dropped: a slow run, valgrind, may lose some) */
	chunk_cache_stats(c, &st);
	CHECK(st.prefetched >= 1 && st.prefetched == st.misses && st.hits == 0);
	/* then read: each chunk loaded once, by prefetch or by the reader; the data right */
	get_all_ok(c, 50, 58);
	chunk_cache_stats(c, &st);
	CHECK(st.misses == 8 && st.hits == st.prefetched);
	/* freed with prefetch threads running and items queued */
	for (int i = 0; i < N_CHUNKS; i++)
		chunk_cache_prefetch(c, &ids[i], CS);
	chunk_cache_free(c);
}

/*
 * chunk_cache_put_done: an entry only the caller pins leaves the cache at
 * once and its buffer is the next one used; one pinned by another stays.
 */
static void test_put_done(Repo *r)
{
	ChunkCache *c = NULL;
	CachedChunk *e = NULL, *e2 = NULL;
	ChunkCacheStats st;

	if (!CHECK_EQ_INT(chunk_cache_new(r, 64 * CS, 0, &c), 0))
		return;
	CHECK_EQ_INT(chunk_cache_get(c, &ids[0], CS, &e), 0);
	const uint8_t *buf = cached_chunk_data(e);
	chunk_cache_put_done(c, e);
	chunk_cache_stats(c, &st);
	CHECK(st.dropped == 1 && st.bytes == 0 && st.evicted == 0);
	/* the next load reuses the buffer; the dropped chunk is loaded again */
	if (CHECK_EQ_INT(chunk_cache_get(c, &ids[1], CS, &e), 0)) {
		CHECK(cached_chunk_data(e) == buf && chunk_ok(e, 1));
		chunk_cache_put(c, e);
	}
	if (CHECK_EQ_INT(chunk_cache_get(c, &ids[0], CS, &e), 0)) {
		CHECK(chunk_ok(e, 0));
		chunk_cache_put(c, e);
	}
	chunk_cache_stats(c, &st);
	CHECK(st.misses == 3 && st.hits == 0);
	/* pinned by two: done by one, it stays for the other, and cached after */
	CHECK_EQ_INT(chunk_cache_get(c, &ids[2], CS, &e), 0);
	CHECK_EQ_INT(chunk_cache_get(c, &ids[2], CS, &e2), 0);
	chunk_cache_put_done(c, e);
	CHECK(chunk_ok(e2, 2));
	chunk_cache_put(c, e2);
	chunk_cache_stats(c, &st);
	CHECK(st.dropped == 1 && st.bytes == 3 * CS);
	CHECK_EQ_INT(chunk_cache_get(c, &ids[2], CS, &e), 0);
	chunk_cache_put(c, e);
	chunk_cache_stats(c, &st);
	CHECK(st.misses == 4 && st.hits == 2);
	chunk_cache_free(c);
}

/*
 * chunk_cache_prefetch_many: located in one batch, queued in runs of chunks
 * one after the other in a pack (at most 8), each run fetched at once.
 */
static void test_prefetch_runs(Repo *r)
{
	ChunkCache *c = NULL;
	ChunkCacheStats st;
	uint32_t plens[32];

	if (!CHECK_EQ_INT(chunk_cache_new(r, N_CHUNKS * N_SHARDS * CS, 2, &c), 0))
		return;
	for (int i = 0; i < 32; i++)
		plens[i] = CS;
	chunk_cache_prefetch_many(c, &ids[8], plens, 32);
	wait_prefetched(c, 32);
	chunk_cache_stats(c, &st);
	CHECK(st.located == 32);
	/* 1 MiB packs of 16 KiB chunks: 32 chunks lie in at most two packs, so 4 to 6 runs */
	CHECK(st.prefetched >= 1 && st.runs >= 1 && st.runs <= 6 && st.relocated == 0);
	get_all_ok(c, 8, 40);
	chunk_cache_stats(c, &st);
	CHECK(st.misses == 32 && st.hits == st.prefetched);
	chunk_cache_free(c);
}

/*
 * From object storage (a backend without a local path: here the fault driver
 * with no fault due) the chunks of a run are claimed as it is queued: a
 * reader right behind the queue waits for the run instead of loading its
 * chunks one at a time (a request each). A cache freed with runs still
 * queued gives their claims up.
 */
static void test_prefetch_claimed(const char *repo_path)
{
	RepoLocation l = {.url = repo_path, .path = repo_path, .faults = "delete:1000=EIO"};
	ChunkCache *c = NULL;
	ChunkCacheStats st;
	uint32_t plens[32];
	Repo *r = NULL;

	if (!CHECK_EQ_INT(repo_open_at(&l, &r), 0))
		return;
	CHECK(!repo_is_local_backend(r));
	for (int i = 0; i < 32; i++)
		plens[i] = CS;
	if (CHECK_EQ_INT(chunk_cache_new(r, N_CHUNKS * N_SHARDS * CS, 1, &c), 0)) {
		chunk_cache_prefetch_many(c, &ids[8], plens, 32);
		get_all_ok(c, 8, 40);
		chunk_cache_stats(c, &st);
		CHECK(st.misses == 32 && st.prefetched == 32 && st.runs >= 1 && st.relocated == 0);
		chunk_cache_prefetch_many(c, &ids[40], plens, 32);
		chunk_cache_prefetch_many(c, &ids[64], plens, 32);
	}
	chunk_cache_free(c);
	repo_free(r);
}

/*
 * The first four chunks lying one after the other in a pack (from *ret_k
 * on): their span, fetched into *ret.
 */
static size_t fetch_run(Repo *r, ChunkReader *rd, ChunkLoc locs[4], int *ret_k, uint8_t **ret)
{
	for (int k = 0; k + 4 <= N_CHUNKS; k++) {
		int errs[4];
		bool run = chunk_reader_locate(rd, &ids[k], 4, locs, errs) == 0;
		for (int i = 0; run && i < 4; i++)
			run = errs[i] == 0 && locs[i].pack == locs[0].pack &&
			      (i == 0 || locs[i].offset == locs[i - 1].offset + locs[i - 1].elen);
		if (!run)
			continue;
		size_t span = (size_t)(locs[3].offset + locs[3].elen - locs[0].offset);
		*ret = xmalloc(span);
		if (store_get_range(repo_backend(r), locs[0].pack_name, locs[0].offset, span, *ret) < 0)
			break;
		*ret_k = k;
		return span;
	}
	return 0;
}

/* damage every pack of the repository from byte 1024 on, every 512 bytes, but its last 16 KiB */
static int damage_packs(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;
	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		char p[PATH_MAX];
		struct stat st;
		if (de->d_name[0] == '.')
			continue;
		test_fmt(p, sizeof(p), "%s/%s", dir, de->d_name);
		if (stat(p, &st) < 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			int r = damage_packs(p);
			n += r > 0 ? r : 0;
			continue;
		}
		if (!strstr(de->d_name, ".pack"))
			continue;
		int fd = open(p, O_RDWR);
		for (off_t off = 1024; fd >= 0 && off + 16384 < st.st_size; off += 512) {
			uint8_t b;
			if (pread(fd, &b, 1, off) == 1) {
				b ^= 0x55;
				if (pwrite(fd, &b, 1, off) != 1)
					break;
			}
		}
		if (fd >= 0) {
			close(fd);
			n++;
		}
	}
	closedir(d);
	return n;
}

static void test_errors(Repo *r, const char *repo_path)
{
	ChunkCache *c = NULL;
	CachedChunk *e = NULL;
	ChunkCacheStats st;
	ChunkId unknown;
	char packs[PATH_MAX];

	if (!CHECK_EQ_INT(chunk_cache_new(r, 64 * CS, 0, &c), 0))
		return;
	/* a chunk the catalog does not know: -ENOENT, asked for again each time */
	test_random(&unknown, sizeof(unknown));
	CHECK_EQ_INT(chunk_cache_get(c, &unknown, CS, &e), -ENOENT);
	CHECK_EQ_INT(chunk_cache_get(c, &unknown, CS, &e), -ENOENT);
	chunk_cache_stats(c, &st);
	CHECK(st.misses == 2 && st.bytes == 0);
	/* a chunk bigger than the cache's buffers */
	CHECK_EQ_INT(chunk_cache_get(c, &ids[0], CS + 1, &e), -ENOMEM);

	/* cached before the damage: still served; damaged: -EBADMSG, and remembered */
	CHECK_EQ_INT(chunk_cache_get(c, &ids[1], CS, &e), 0);
	chunk_cache_put(c, e);
	/* a run's bytes fetched before the damage, to lend */
	ChunkReader *rd = NULL;
	ChunkLoc locs[4];
	uint8_t *lent = NULL, out[CS];
	size_t span = 0;
	int k0 = 0;
	if (CHECK_EQ_INT(chunk_reader_new(r, &rd), 0))
		span = fetch_run(r, rd, locs, &k0, &lent);
	CHECK(span > 0);

	test_fmt(packs, sizeof(packs), "%s/packs", repo_path);
	CHECK(damage_packs(packs) > 0);

	/*
	 * chunk_reader_read_fast_at serves lent bytes (0: the location served;
	 * reading the damaged pack would have taken the fallback, 1, or failed),
	 * and bytes lent damaged are fetched again, alone: damaged too here.
	 */
	if (span) {
		chunk_reader_lend(rd, locs[0].pack_name, locs[0].offset, lent, span);
		for (int i = 0; i < 4; i++) {
			CHECK_EQ_INT(chunk_reader_read_fast_at(rd, &ids[k0 + i], &locs[i], CS, out), 0);
			CHECK(memcmp(out, data + (size_t)(k0 + i) * CS, CS) == 0);
		}
		lent[locs[2].offset - locs[0].offset + 100] ^= 0x10;
		CHECK_EQ_INT(chunk_reader_read_fast_at(rd, &ids[k0 + 2], &locs[2], CS, out), -EBADMSG);
		chunk_reader_lend(rd, NULL, 0, NULL, 0);
	}
	free(lent);
	chunk_reader_free(rd);
	CHECK_EQ_INT(chunk_cache_get(c, &ids[N_CHUNKS / 2], CS, &e), -EBADMSG);
	chunk_cache_stats(c, &st);
	uint64_t misses = st.misses;
	CHECK_EQ_INT(chunk_cache_get(c, &ids[N_CHUNKS / 2], CS, &e), -EBADMSG);
	chunk_cache_stats(c, &st);
	CHECK(st.misses == misses); /* not read again */
	if (CHECK_EQ_INT(chunk_cache_get(c, &ids[1], CS, &e), 0)) {
		CHECK(chunk_ok(e, 1));
		chunk_cache_put(c, e);
	}
	chunk_cache_free(c);

	/* prefetched in runs: a damaged chunk is never served */
	if (!CHECK_EQ_INT(chunk_cache_new(r, N_CHUNKS * N_SHARDS * CS, 2, &c), 0))
		return;
	uint32_t plens[N_CHUNKS];
	for (int i = 0; i < N_CHUNKS; i++)
		plens[i] = CS;
	chunk_cache_prefetch_many(c, ids, plens, N_CHUNKS);
	usleep(200 * 1000);
	int n_bad = 0;
	for (int i = 0; i < N_CHUNKS; i++) {
		int g = chunk_cache_get(c, &ids[i], CS, &e);
		CHECK(g == 0 || g == -EBADMSG);
		if (g == 0) {
			CHECK(chunk_ok(e, i));
			chunk_cache_put(c, e);
		} else {
			n_bad++;
		}
	}
	chunk_cache_stats(c, &st);
	CHECK(n_bad > 0 && st.runs > 0);
	chunk_cache_free(c);
}

int main(void)
{
	char tmp[64], repo_path[PATH_MAX];
	Repo *r = NULL;

	log_set_level(LOG_ERROR);
	test_tmpdir(tmp, sizeof(tmp));
	test_fmt(repo_path, sizeof(repo_path), "%s/repo", tmp);
	data = xmalloc((size_t)N_CHUNKS * CS);
	test_random(data, (size_t)N_CHUNKS * CS);
	if (CHECK_EQ_INT(repo_init(repo_path, &small_repo), 0) &&
	    CHECK_EQ_INT(repo_open(repo_path, &r), 0) && CHECK_EQ_INT(store_file(r), 0)) {
		test_get_put(r);
		test_bounds(r);
		test_concurrent(r);
		test_prefetch(r);
		test_put_done(r);
		test_prefetch_runs(r);
		test_prefetch_claimed(repo_path);
		test_errors(r, repo_path);
	}
	repo_free(r);
	free(data);
	rm_rf(tmp);
	return test_finish();
}
