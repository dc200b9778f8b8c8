/*
 * Unit tests for the caching driver (store/backend_cache.c). Each test wraps
 * a local driver in the fault driver, whose "get" count is the number of
 * reads that reached inner, and that in the cache driver.
 */
#include "tests/unit/test.h"

#include "store/backend.h"

#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>

#define KIB 1024
#define MIB (1024 * 1024)
#define HEADER 20 /* magic, length, CRC-32C: counted in the bound */
#define PACK "packs/ab/ab0123456789.pack"
#define PACK_SIZE (40 * 64 * KIB)

static uint8_t pack[PACK_SIZE];

typedef struct Fixture {
	char tmp[64], repo[PATH_MAX], cache[PATH_MAX];
	StoreBackend *fault; /* inside b, which owns it */
	StoreBackend *b;
} Fixture;

static void fixture_init(Fixture *f)
{
	*f = (Fixture){0};
	test_tmpdir(f->tmp, sizeof(f->tmp));
	test_fmt(f->repo, sizeof(f->repo), "%s/repo", f->tmp);
	test_fmt(f->cache, sizeof(f->cache), "%s/cache", f->tmp);
}

/* A cache of max bytes over a fault driver with script over the local repo. */
static bool fixture_open(Fixture *f, const char *script, uint64_t max)
{
	StoreBackend *inner = NULL;
	if (!CHECK_EQ_INT(store_local_new(f->repo, &inner), 0))
		return false;
	if (!CHECK_EQ_INT(store_fault_new(inner, script, &f->fault), 0)) {
		store_backend_free(inner);
		return false;
	}
	if (!CHECK_EQ_INT(store_cache_new(f->fault, f->cache, max, &f->b), 0)) {
		f->fault = store_backend_free(f->fault);
		return false;
	}
	return true;
}

static void fixture_close(Fixture *f)
{
	f->b = store_backend_free(f->b); /* frees the fault and local drivers too */
	f->fault = NULL;
}

static void fixture_done(Fixture *f)
{
	fixture_close(f);
	TEST_RM_RF(f->tmp);
}

static unsigned gets(const Fixture *f)
{
	return store_fault_count(f->fault, "get");
}

typedef struct Counts {
	uint64_t hits, misses, evictions;
} Counts;

static Counts counts(StoreBackend *b)
{
	Counts c = {0};
	store_cache_counts(b, &c.hits, &c.misses, &c.evictions);
	return c;
}

/* Reads a range of the test pack through b; true when it matches. */
static bool read_ok(StoreBackend *b, uint64_t off, size_t len)
{
	uint8_t *got = xmalloc(len);
	bool ok = store_get_range(b, PACK, off, len, got) == 0 && memcmp(got, pack + off, len) == 0;
	free(got);
	return ok;
}

/* The documented file of a range: dir/<2 hex>/<62 hex> of SHA-256("name\0off\0len"). */
static char *key_path(const char *cache, const char *name, uint64_t off, size_t len, char *buf,
		      size_t buflen)
{
	char key[512], hex[65];
	uint8_t md[32];
	unsigned int n = 0;
	int m = snprintf(key, sizeof(key), "%s%c%llu%c%zu", name, '\0', (unsigned long long)off,
			 '\0', len);
	EVP_Digest(key, (size_t)m, md, &n, EVP_sha256(), NULL);
	hex_encode(md, sizeof(md), hex);
	return test_fmt(buf, buflen, "%s/%.2s/%s", cache, hex, hex + 2);
}

static bool cached_file(const Fixture *f, uint64_t off, size_t len)
{
	char path[PATH_MAX];
	struct stat st;
	key_path(f->cache, PACK, off, len, path, sizeof(path));
	return stat(path, &st) == 0 && (uint64_t)st.st_size == HEADER + len;
}

/* Regular files under dir and their bytes. */
static void dir_usage(const char *dir, unsigned *ret_files, uint64_t *ret_bytes)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	if (!d)
		return;
	while ((de = readdir(d))) {
		char child[PATH_MAX];
		struct stat st;
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		test_fmt(child, sizeof(child), "%s/%s", dir, de->d_name);
		if (lstat(child, &st) < 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			dir_usage(child, ret_files, ret_bytes);
		} else if (S_ISREG(st.st_mode)) {
			(*ret_files)++;
			*ret_bytes += (uint64_t)st.st_size;
		}
	}
	closedir(d);
}

static unsigned dir_files(const char *dir)
{
	unsigned n = 0;
	uint64_t bytes = 0;
	dir_usage(dir, &n, &bytes);
	return n;
}

static void write_file(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	CHECK(fd >= 0);
	if (fd >= 0) {
		CHECK_EQ_INT(write_full(fd, buf, len), 0);
		close(fd);
	}
}

static void test_hit_miss(void)
{
	Fixture f;
	char path[PATH_MAX];
	uint8_t got[8];
	uint64_t size = 0;
	char *data = NULL;
	size_t n = 0;

	fixture_init(&f);
	if (!fixture_open(&f, "", MIB))
		goto out;
	CHECK_EQ_STR(f.b->ops->name, "cache");
	CHECK_EQ_INT(store_put(f.b, PACK, pack, PACK_SIZE), 0);

	/* a miss reaches inner, a hit does not */
	CHECK(read_ok(f.b, 1000, 5000));
	CHECK_EQ_INT(gets(&f), 1);
	CHECK_EQ_INT(counts(f.b).misses, 1);
	CHECK_EQ_INT(counts(f.b).hits, 0);
	CHECK(read_ok(f.b, 1000, 5000));
	CHECK_EQ_INT(gets(&f), 1);
	CHECK_EQ_INT(counts(f.b).hits, 1);
	CHECK_EQ_INT(counts(f.b).misses, 1);
	CHECK_EQ_INT(counts(f.b).evictions, 0);

	/* the key is (name, offset, len): the same offset or length alone is a miss */
	CHECK(read_ok(f.b, 1000, 4999));
	CHECK(read_ok(f.b, 1001, 5000));
	CHECK_EQ_INT(gets(&f), 3);
	CHECK(read_ok(f.b, 1000, 4999));
	CHECK_EQ_INT(gets(&f), 3);

	/* the documented file: header then data, 0600 in 0700 directories, no temp file */
	key_path(f.cache, PACK, 1000, 5000, path, sizeof(path));
	if (CHECK_EQ_INT(file_read_all(path, MIB, &data, &n), 0) && CHECK_EQ_INT(n, HEADER + 5000)) {
		CHECK(memcmp(data, "PGBKCCH1", 8) == 0);
		CHECK_EQ_INT(get_le64((uint8_t *)data + 8), 5000);
		CHECK(memcmp(data + HEADER, pack + 1000, 5000) == 0);
	}
	free(data);
	{
		struct stat st;
		char sub[PATH_MAX];
		path_dirname(path, sub, sizeof(sub));
		CHECK(stat(path, &st) == 0 && (st.st_mode & 07777) == 0600);
		CHECK(stat(sub, &st) == 0 && (st.st_mode & 07777) == 0700);
		CHECK(stat(f.cache, &st) == 0 && (st.st_mode & 07777) == 0700);
	}
	CHECK_EQ_INT(test_count_names(f.cache, ".tmp"), 0);
	CHECK_EQ_INT(dir_files(f.cache), 3);

	/* an empty range passes through */
	CHECK_EQ_INT(store_get_range(f.b, PACK, 10, 0, got), 0);
	CHECK_EQ_INT(gets(&f), 4);

	/* other operations pass through */
	CHECK_EQ_INT(store_size(f.b, PACK, &size), 0);
	CHECK_EQ_INT(size, PACK_SIZE);
	CHECK_EQ_INT(store_fault_count(f.fault, "size"), 1);
	/* a deleted pack's ranges stay cached until they age out (names are never reused) */
	CHECK_EQ_INT(store_delete(f.b, PACK), 0);
	CHECK_EQ_INT(store_fault_count(f.fault, "delete"), 1);
	CHECK_EQ_INT(store_size(f.b, PACK, &size), -ENOENT);
	CHECK(read_ok(f.b, 1000, 5000));
	CHECK_EQ_INT(store_get_range(f.b, PACK, 0, 8, got), -ENOENT);
	CHECK_EQ_INT(counts(f.b).hits, 3);
	/* counts may be read one at a time */
	store_cache_counts(f.b, NULL, NULL, NULL);
out:
	fixture_done(&f);
}

static void test_pass_through(void)
{
	Fixture f;
	uint8_t got[200000];

	fixture_init(&f);
	if (!fixture_open(&f, "", MIB))
		goto out;
	CHECK_EQ_INT(store_put(f.b, "config", "hello", 5), 0);
	CHECK_EQ_INT(store_put(f.b, "wal/000000010000000000000001", pack, 1000), 0);
	CHECK_EQ_INT(store_put(f.b, "packsx/ab/x.pack", pack, 1000), 0);
	CHECK_EQ_INT(store_put(f.b, PACK, pack, PACK_SIZE), 0);

	/* names outside "packs/" are not cached */
	for (int i = 0; i < 2; i++) {
		CHECK_EQ_INT(store_get_range(f.b, "config", 0, 5, got), 0);
		CHECK(memcmp(got, "hello", 5) == 0);
		CHECK_EQ_INT(store_get_range(f.b, "wal/000000010000000000000001", 10, 100, got), 0);
		CHECK(memcmp(got, pack + 10, 100) == 0);
		CHECK_EQ_INT(store_get_range(f.b, "packsx/ab/x.pack", 0, 100, got), 0);
	}
	CHECK_EQ_INT(gets(&f), 6);

	/* a range over max/8 is not cached; max/8 itself is */
	CHECK(read_ok(f.b, 0, MIB / 8 + 1));
	CHECK(read_ok(f.b, 0, MIB / 8 + 1));
	CHECK(read_ok(f.b, 7, sizeof(got)));
	CHECK(read_ok(f.b, 7, sizeof(got)));
	CHECK_EQ_INT(gets(&f), 10);
	CHECK_EQ_INT(dir_files(f.cache), 0);
	CHECK_EQ_INT(counts(f.b).hits, 0);
	CHECK_EQ_INT(counts(f.b).misses, 0);
	CHECK(read_ok(f.b, 0, MIB / 8));
	CHECK(read_ok(f.b, 0, MIB / 8));
	CHECK_EQ_INT(gets(&f), 11);
	CHECK_EQ_INT(dir_files(f.cache), 1);
out:
	fixture_done(&f);
}

static void test_bound(void)
{
	Fixture f;
	/* 15 files of 64 KiB + header fit in 1 MiB, 16 do not */
	const unsigned fit = MIB / (64 * KIB + HEADER);
	unsigned n_files = 0, before;
	uint64_t bytes = 0;

	fixture_init(&f);
	if (!fixture_open(&f, "", MIB))
		goto out;
	CHECK_EQ_INT(store_put(f.b, PACK, pack, PACK_SIZE), 0);
	for (unsigned i = 0; i < 40; i++)
		CHECK(read_ok(f.b, (uint64_t)i * 64 * KIB, 64 * KIB));
	CHECK_EQ_INT(gets(&f), 40);
	CHECK_EQ_INT(counts(f.b).misses, 40);
	CHECK_EQ_INT(counts(f.b).evictions, 40 - fit);
	dir_usage(f.cache, &n_files, &bytes);
	CHECK_EQ_INT(n_files, fit);
	CHECK(bytes <= MIB);

	/* the most recent survive, the oldest are gone */
	for (unsigned i = 0; i < 40; i++)
		if (!CHECK_EQ_INT(cached_file(&f, (uint64_t)i * 64 * KIB, 64 * KIB), i >= 40 - fit))
			fprintf(stderr, "  range %u\n", i);

	/* a hit makes the oldest survivor the most recent: the next miss evicts the one after */
	before = gets(&f);
	CHECK(read_ok(f.b, (uint64_t)(40 - fit) * 64 * KIB, 64 * KIB));
	CHECK_EQ_INT(gets(&f), before);
	CHECK(read_ok(f.b, 0, 64 * KIB));
	CHECK_EQ_INT(gets(&f), before + 1);
	CHECK_EQ_INT(counts(f.b).evictions, 40 - fit + 1);
	CHECK(cached_file(&f, (uint64_t)(40 - fit) * 64 * KIB, 64 * KIB));
	CHECK(!cached_file(&f, (uint64_t)(40 - fit + 1) * 64 * KIB, 64 * KIB));
	CHECK(read_ok(f.b, (uint64_t)(40 - fit) * 64 * KIB, 64 * KIB));
	CHECK_EQ_INT(gets(&f), before + 1);
	CHECK(read_ok(f.b, (uint64_t)(40 - fit + 1) * 64 * KIB, 64 * KIB));
	CHECK_EQ_INT(gets(&f), before + 2);

	n_files = 0;
	bytes = 0;
	dir_usage(f.cache, &n_files, &bytes);
	CHECK_EQ_INT(n_files, fit);
	CHECK(bytes <= MIB);
out:
	fixture_done(&f);
}

typedef enum { FLIP, TRUNCATE, APPEND, REMOVE } DamageKind;

static void test_corrupt(void)
{
	static const struct {
		const char *what;
		DamageKind kind;
		off_t at; /* negative: from the end */
	} cases[] = {
		{"last data byte flipped", FLIP, -1},
		{"first data byte flipped", FLIP, HEADER},
		{"magic flipped", FLIP, 0},
		{"length flipped", FLIP, 8},
		{"CRC flipped", FLIP, 16},
		{"torn data", TRUNCATE, -100},
		{"torn header", TRUNCATE, 10},
		{"empty file", TRUNCATE, 0},
		{"trailing garbage", APPEND, 0},
		{"file removed behind the cache", REMOVE, 0},
	};
	Fixture f;
	const size_t len = 4000;

	fixture_init(&f);
	if (!fixture_open(&f, "", MIB))
		goto out;
	CHECK_EQ_INT(store_put(f.b, PACK, pack, PACK_SIZE), 0);
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		char path[PATH_MAX];
		uint64_t off = 100 + i * len;
		unsigned before;
		Counts c;
		int fd;

		key_path(f.cache, PACK, off, len, path, sizeof(path));
		CHECK(read_ok(f.b, off, len));
		if (!CHECK(cached_file(&f, off, len)))
			continue;
		switch (cases[i].kind) {
		case FLIP: {
			off_t at = cases[i].at < 0 ? (off_t)(HEADER + len) + cases[i].at : cases[i].at;
			uint8_t byte = 0;
			fd = open(path, O_RDWR | O_CLOEXEC);
			CHECK(fd >= 0 && pread(fd, &byte, 1, at) == 1);
			byte ^= 0x40;
			CHECK(fd >= 0 && pwrite(fd, &byte, 1, at) == 1);
			if (fd >= 0)
				close(fd);
			break;
		}
		case TRUNCATE:
			CHECK(truncate(path, cases[i].at < 0 ? (off_t)(HEADER + len) + cases[i].at
							      : cases[i].at) == 0);
			break;
		case APPEND:
			fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
			CHECK(fd >= 0 && write(fd, "x", 1) == 1);
			if (fd >= 0)
				close(fd);
			break;
		case REMOVE:
			CHECK(unlink(path) == 0);
			break;
		}
		/* detected: the right bytes come from inner, and a good file replaces the bad one */
		before = gets(&f);
		c = counts(f.b);
		if (!CHECK(read_ok(f.b, off, len)))
			fprintf(stderr, "  case \"%s\"\n", cases[i].what);
		CHECK_EQ_INT(gets(&f), before + 1);
		CHECK_EQ_INT(counts(f.b).misses, c.misses + 1);
		CHECK_EQ_INT(counts(f.b).hits, c.hits);
		CHECK(cached_file(&f, off, len));
		CHECK(read_ok(f.b, off, len));
		if (!CHECK_EQ_INT(gets(&f), before + 1))
			fprintf(stderr, "  case \"%s\"\n", cases[i].what);
		CHECK_EQ_INT(counts(f.b).hits, c.hits + 1);
	}
	CHECK_EQ_INT(dir_files(f.cache), ELEMENTSOF(cases));
	CHECK_EQ_INT(test_count_names(f.cache, ".tmp"), 0);
out:
	fixture_done(&f);
}

static void test_reopen(void)
{
	Fixture f;
	char path[PATH_MAX], sub[PATH_MAX], stray[PATH_MAX], foreign[PATH_MAX], headless[PATH_MAX];
	const size_t len = 10000;

	fixture_init(&f);
	if (!fixture_open(&f, "", MIB))
		goto out;
	CHECK_EQ_INT(store_put(f.b, PACK, pack, PACK_SIZE), 0);
	for (unsigned i = 0; i < 4; i++)
		CHECK(read_ok(f.b, i * len, len));
	fixture_close(&f);

	/* leftovers of a killed process, and files that are not the cache's */
	key_path(f.cache, PACK, 0, len, path, sizeof(path));
	path_dirname(path, sub, sizeof(sub));
	test_fmt(stray, sizeof(stray), "%s/.tmp-0123456789abcdef", sub);
	write_file(stray, "torn", 4);
	test_fmt(foreign, sizeof(foreign), "%s/README", f.cache);
	write_file(foreign, "mine", 4);
	test_fmt(headless, sizeof(headless), "%s/%062d", sub, 0);
	write_file(headless, "PGBK", 4);

	/* a new cache over the same directory finds the old entries */
	if (!fixture_open(&f, "", MIB))
		goto out;
	for (unsigned i = 0; i < 4; i++)
		CHECK(read_ok(f.b, i * len, len));
	CHECK_EQ_INT(gets(&f), 0);
	CHECK_EQ_INT(counts(f.b).hits, 4);
	CHECK_EQ_INT(counts(f.b).misses, 0);
	CHECK(access(stray, F_OK) < 0 && errno == ENOENT);
	CHECK(access(headless, F_OK) < 0 && errno == ENOENT);
	CHECK_EQ_INT(access(foreign, F_OK), 0);
	fixture_close(&f);

	/* the index is rebuilt oldest mtime first: range 0 newest, range 3 oldest */
	for (unsigned i = 0; i < 4; i++) {
		struct timespec ts[2] = {{.tv_sec = 1700000000 - (time_t)i * 100},
					 {.tv_sec = 1700000000 - (time_t)i * 100}};
		key_path(f.cache, PACK, i * len, len, path, sizeof(path));
		CHECK_EQ_INT(utimensat(AT_FDCWD, path, ts, 0), 0);
	}
	/* a smaller bound: two entries fit, the two oldest go at once */
	if (!fixture_open(&f, "", 2 * (HEADER + len) + 100))
		goto out;
	CHECK_EQ_INT(counts(f.b).evictions, 2);
	CHECK(cached_file(&f, 0, len));
	CHECK(cached_file(&f, len, len));
	CHECK(!cached_file(&f, 2 * len, len));
	CHECK(!cached_file(&f, 3 * len, len));
	CHECK_EQ_INT(dir_files(f.cache), 3); /* and README */
	fixture_close(&f);

	/* a hit refreshes an old mtime (at most once a minute), for the next start's order */
	if (!fixture_open(&f, "", MIB))
		goto out;
	CHECK(read_ok(f.b, len, len));
	{
		struct stat st;
		key_path(f.cache, PACK, len, len, path, sizeof(path));
		CHECK(stat(path, &st) == 0 && st.st_mtim.tv_sec > 1700000000);
		key_path(f.cache, PACK, 0, len, path, sizeof(path));
		CHECK(stat(path, &st) == 0 && st.st_mtim.tv_sec == 1700000000);
	}
out:
	fixture_done(&f);
}

static void test_inner_errors(void)
{
	Fixture f;
	uint8_t got[100];

	fixture_init(&f);
	/* every get fails: a cold key gets -EIO, and nothing is cached */
	if (!fixture_open(&f, "get:*=EIO", MIB))
		goto out;
	CHECK_EQ_INT(store_put(f.b, PACK, pack, PACK_SIZE), 0);
	CHECK_EQ_INT(store_get_range(f.b, PACK, 0, sizeof(got), got), -EIO);
	CHECK_EQ_INT(store_get_range(f.b, PACK, 0, sizeof(got), got), -EIO);
	CHECK_EQ_INT(gets(&f), 2);
	CHECK_EQ_INT(counts(f.b).misses, 2);
	CHECK_EQ_INT(dir_files(f.cache), 0);
	fixture_close(&f);

	/* a warm key is served while inner fails */
	if (!fixture_open(&f, "get:2=ETIMEDOUT", MIB))
		goto out;
	CHECK(read_ok(f.b, 0, sizeof(got)));
	CHECK_EQ_INT(store_get_range(f.b, PACK, 500, sizeof(got), got), -ETIMEDOUT);
	CHECK(read_ok(f.b, 0, sizeof(got)));
	CHECK(read_ok(f.b, 500, sizeof(got)));
	CHECK_EQ_INT(gets(&f), 3);
	fixture_close(&f);

	/* inner's own errors, unchanged */
	if (!fixture_open(&f, "", MIB))
		goto out;
	CHECK_EQ_INT(store_get_range(f.b, "packs/ab/missing.pack", 0, 10, got), -ENOENT);
	CHECK_EQ_INT(store_get_range(f.b, "packs/ab/missing.pack", 0, 10, got), -ENOENT);
	CHECK_EQ_INT(store_get_range(f.b, PACK, PACK_SIZE - 10, 11, got), -ENODATA);
	CHECK_EQ_INT(store_get_range(f.b, "packs/../escape", 0, 10, got), -EINVAL);
	CHECK_EQ_INT(gets(&f), 4);
	CHECK_EQ_INT(dir_files(f.cache), 2); /* the two ranges read above */
out:
	fixture_done(&f);
}

static void test_unwritable(void)
{
	Fixture f;
	char path[PATH_MAX], sub[PATH_MAX], notdir[PATH_MAX];
	StoreBackend *inner = NULL, *b = NULL;

	fixture_init(&f);
	/* a cache directory that cannot be made: an error, and the caller keeps inner */
	test_fmt(notdir, sizeof(notdir), "%s/file", f.tmp);
	write_file(notdir, "x", 1);
	test_fmt(path, sizeof(path), "%s/file/cache", f.tmp);
	CHECK_EQ_INT(store_local_new(f.repo, &inner), 0);
	CHECK_EQ_INT(store_cache_new(inner, path, MIB, &b), -ENOTDIR);
	CHECK_EQ_INT(store_cache_new(inner, notdir, MIB, &b), -ENOTDIR);
	CHECK(b == NULL);
	store_backend_free(inner);

	if (!fixture_open(&f, "", MIB))
		goto out;
	CHECK_EQ_INT(store_put(f.b, PACK, pack, PACK_SIZE), 0);

	/* its subdirectory is a regular file (this stops root too): reads still work */
	key_path(f.cache, PACK, 0, 3000, path, sizeof(path));
	path_dirname(path, sub, sizeof(sub));
	write_file(sub, "x", 1);
	CHECK(read_ok(f.b, 0, 3000));
	CHECK(read_ok(f.b, 0, 3000));
	CHECK_EQ_INT(gets(&f), 2);
	CHECK_EQ_INT(counts(f.b).misses, 2);

	/* the whole directory replaced by a regular file */
	CHECK(read_ok(f.b, 5000, 3000));
	CHECK_EQ_INT(rm_rf(f.cache), 0);
	write_file(f.cache, "x", 1);
	CHECK(read_ok(f.b, 5000, 3000)); /* indexed, file gone: a miss */
	CHECK(read_ok(f.b, 5000, 3000));
	CHECK(read_ok(f.b, 9000, 3000));
	CHECK_EQ_INT(gets(&f), 6);
	CHECK_EQ_INT(counts(f.b).hits, 0);
out:
	fixture_done(&f);
}

#define N_THREADS 4
#define N_KEYS 16
#define N_ROUNDS 25
#define KEY_LEN (16 * KIB)

typedef struct Reader {
	StoreBackend *b;
	unsigned seed;
	unsigned n_bad;
} Reader;

static void *reader_main(void *arg)
{
	Reader *r = arg;
	for (unsigned round = 0; round < N_ROUNDS; round++)
		for (unsigned k = 0; k < N_KEYS; k++) {
			/* each thread walks the keys in its own order */
			unsigned key = (k * 7 + r->seed * 5 + round) % N_KEYS;
			if (!read_ok(r->b, (uint64_t)key * KEY_LEN + r->seed % 2, KEY_LEN - 1))
				r->n_bad++;
		}
	return NULL;
}

/* Four threads reading the same keys; "fits" entries of the 16 fit in the cache. */
static void run_readers(uint64_t max, unsigned fits)
{
	Fixture f;
	pthread_t th[N_THREADS];
	Reader rd[N_THREADS];
	unsigned n_files = 0;
	uint64_t bytes = 0;
	Counts c;

	fixture_init(&f);
	if (!fixture_open(&f, "", max))
		goto out;
	CHECK_EQ_INT(store_put(f.b, PACK, pack, PACK_SIZE), 0);
	for (unsigned i = 0; i < N_THREADS; i++) {
		/* two threads per key set (offsets differ by one byte) */
		rd[i] = (Reader){.b = f.b, .seed = i};
		CHECK_EQ_INT(pthread_create(&th[i], NULL, reader_main, &rd[i]), 0);
	}
	for (unsigned i = 0; i < N_THREADS; i++) {
		CHECK_EQ_INT(pthread_join(th[i], NULL), 0);
		CHECK_EQ_INT(rd[i].n_bad, 0);
	}
	c = counts(f.b);
	CHECK_EQ_INT(c.hits + c.misses, N_THREADS * N_KEYS * N_ROUNDS);
	CHECK_EQ_INT(c.misses, gets(&f));
	dir_usage(f.cache, &n_files, &bytes);
	CHECK(bytes <= max);
	CHECK(n_files <= fits);
	CHECK_EQ_INT(test_count_names(f.cache, ".tmp"), 0);
	if (fits >= 2 * N_KEYS) {
		/* no eviction: each thread misses a key at most once */
		CHECK_EQ_INT(n_files, 2 * N_KEYS);
		CHECK(c.misses >= 2 * N_KEYS && c.misses <= N_THREADS * N_KEYS);
		CHECK_EQ_INT(c.evictions, 0);
	} else {
		CHECK(c.evictions > 0);
	}
out:
	fixture_done(&f);
}

static void test_threads(void)
{
	run_readers(MIB, 2 * N_KEYS);
	/* churn: 128 KiB holds 7 of the 32 ranges */
	run_readers(128 * KIB, 7);
}

int main(void)
{
	test_random(pack, sizeof(pack));
	test_hit_miss();
	test_pass_through();
	test_bound();
	test_corrupt();
	test_reopen();
	test_inner_errors();
	test_unwritable();
	test_threads();
	return test_finish();
}
