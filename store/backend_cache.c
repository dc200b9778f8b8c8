/*
 * Caching driver: a bounded on-disk cache of ranged reads of packs, for
 * repositories far away (S3). A mount reads each chunk as a byte range of a
 * pack; packs are never rewritten under the same name, so a range once read
 * stays right and the cache never has to invalidate anything.
 *
 * One file per range, dir/<2 hex>/<62 hex>: the hex SHA-256 of the key
 * "name\0offset\0len" (offset and len in decimal). The file holds a header
 * (magic, data length, CRC-32C of the data) and the data. It is written to a
 * temporary name and renamed into place, so readers see a whole file or none;
 * the CRC catches one damaged later. Nothing is fsynced: after a crash the
 * cache may hold torn files, and a read drops them and fetches again.
 *
 * The index lives in memory: a hash table of entries by key digest and an
 * LRU list whose bytes (headers included) stay within max_bytes. It is
 * rebuilt from the files at creation, the oldest mtime least recently used;
 * a hit refreshes the file's mtime at most once a minute, so that a restart
 * keeps roughly the recently used entries without a write per hit.
 *
 * Locking: one mutex guards the index and the counters; file I/O and calls to
 * inner happen outside it. Every removal from the index is followed by an
 * unlink of its file once the mutex is dropped, so racing threads can at
 * worst leave an entry whose file is gone (its next read drops it), never a
 * file outside the index that nothing would evict (short of a failed unlink,
 * which the next start's scan indexes again). Two threads missing the same key
 * both fetch it and both rename a file into place: same contents, and the
 * index, checked again under the mutex, counts it once.
 *
 * A cache directory belongs to one process at a time: a second one would
 * keep its own index, overshoot the bound and remove the first's temp files.
 */
#include "store/backend.h"

#include "common/crc32c.h"
#include "common/log.h"
#include "common/util.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define CACHE_PREFIX "packs/"
#define CACHE_MAGIC "PGBKCCH1"
#define CACHE_HEADER_SIZE 20 /* magic[8], data length le64, CRC-32C of the data le32 */
#define CACHE_NAME_MAX 1024
/* a range bigger than an eighth of the cache is a bulk read: caching it would flush the rest */
#define CACHE_MAX_SHARE 8
#define CACHE_TOUCH_NS (60 * INT64_C(1000000000))
#define CACHE_MIN_BUCKETS 256

typedef struct CacheKey {
	uint8_t b[32];
} CacheKey;

typedef struct CacheEntry {
	CacheKey key;
	uint64_t size;     /* of the file, header included */
	int64_t mtime_ns;  /* as last set on the file, as far as we know */
	struct CacheEntry *hnext;       /* hash chain; after eviction, the victim list */
	struct CacheEntry *prev, *next; /* LRU list */
} CacheEntry;

typedef struct CacheBackend {
	StoreBackend base;
	StoreBackend *inner;
	char *dir;
	uint64_t max_bytes;
	pthread_mutex_t lock; /* guards every field below */
	CacheEntry **buckets;
	size_t n_buckets; /* a power of two */
	size_t n_entries;
	CacheEntry *lru_head, *lru_tail; /* head: least recently used */
	uint64_t bytes;
	uint64_t n_hits, n_misses, n_evictions;
} CacheBackend;

static void cache_key(const char *name, uint64_t offset, size_t len, CacheKey *ret)
{
	char buf[CACHE_NAME_MAX + 64];
	size_t n = strlen(name);
	unsigned int dlen = 0;
	int m;

	PGBAKFS_CHECK(n <= CACHE_NAME_MAX);
	memcpy(buf, name, n + 1);
	m = snprintf(buf + n + 1, sizeof(buf) - n - 1, "%" PRIu64 "%c%zu", offset, '\0', len);
	PGBAKFS_CHECK(m > 0 && (size_t)m < sizeof(buf) - n - 1);
	PGBAKFS_CHECK(EVP_Digest(buf, n + 1 + (size_t)m, ret->b, &dlen, EVP_sha256(), NULL) == 1);
	PGBAKFS_CHECK(dlen == sizeof(ret->b));
}

static int cache_path(const CacheBackend *c, const CacheKey *key, char *buf, size_t len)
{
	char hex[2 * sizeof(key->b) + 1];
	hex_encode(key->b, sizeof(key->b), hex);
	if ((size_t)snprintf(buf, len, "%s/%.2s/%s", c->dir, hex, hex + 2) >= len)
		return -ENAMETOOLONG;
	return 0;
}

/* Ranges of other objects, empty ones and big ones go straight to inner. */
static bool cache_wants(const CacheBackend *c, const char *name, size_t len)
{
	return len > 0 && len <= c->max_bytes / CACHE_MAX_SHARE &&
	       strncmp(name, CACHE_PREFIX, strlen(CACHE_PREFIX)) == 0 &&
	       strlen(name) <= CACHE_NAME_MAX;
}

static CacheEntry **index_slot(CacheBackend *c, const CacheKey *key)
{
	uint64_t h;
	memcpy(&h, key->b, sizeof(h)); /* a SHA-256 needs no further mixing */
	return &c->buckets[h & (c->n_buckets - 1)];
}

/* lock held */
static CacheEntry *index_find(CacheBackend *c, const CacheKey *key)
{
	for (CacheEntry *e = *index_slot(c, key); e; e = e->hnext)
		if (memcmp(e->key.b, key->b, sizeof(key->b)) == 0)
			return e;
	return NULL;
}

/* lock held */
static void lru_unlink(CacheBackend *c, CacheEntry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		c->lru_head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		c->lru_tail = e->prev;
	e->prev = e->next = NULL;
}

/* lock held */
static void lru_append(CacheBackend *c, CacheEntry *e)
{
	e->prev = c->lru_tail;
	e->next = NULL;
	if (c->lru_tail)
		c->lru_tail->next = e;
	else
		c->lru_head = e;
	c->lru_tail = e;
}

/* Doubles the table; a failed allocation keeps the old one (longer chains). lock held. */
static void index_grow(CacheBackend *c)
{
	size_t n = c->n_buckets * 2;
	CacheEntry **old = c->buckets, **nb = calloc(n, sizeof(*nb));
	size_t n_old = c->n_buckets;

	if (!nb)
		return;
	c->buckets = nb;
	c->n_buckets = n;
	for (size_t i = 0; i < n_old; i++)
		for (CacheEntry *e = old[i], *next; e; e = next) {
			CacheEntry **slot = index_slot(c, &e->key);
			next = e->hnext;
			e->hnext = *slot;
			*slot = e;
		}
	free(old);
}

/* As the most recently used. lock held. */
static void index_insert(CacheBackend *c, CacheEntry *e)
{
	CacheEntry **slot = index_slot(c, &e->key);
	e->hnext = *slot;
	*slot = e;
	lru_append(c, e);
	c->bytes += e->size;
	if (++c->n_entries > c->n_buckets)
		index_grow(c);
}

/* lock held */
static void index_remove(CacheBackend *c, CacheEntry *e)
{
	for (CacheEntry **p = index_slot(c, &e->key); *p; p = &(*p)->hnext)
		if (*p == e) {
			*p = e->hnext;
			break;
		}
	e->hnext = NULL;
	lru_unlink(c, e);
	c->bytes -= e->size;
	c->n_entries--;
}

/* Takes least recently used entries out until the bound holds; returns them chained. lock held. */
static CacheEntry *index_evict(CacheBackend *c)
{
	CacheEntry *victims = NULL;
	while (c->bytes > c->max_bytes && c->lru_head) {
		CacheEntry *e = c->lru_head;
		index_remove(c, e);
		e->hnext = victims;
		victims = e;
		c->n_evictions++;
	}
	return victims;
}

/* lock not held */
static void cache_unlink(const CacheBackend *c, const CacheKey *key)
{
	char path[PATH_MAX];
	if (cache_path(c, key, path, sizeof(path)) == 0 && unlink(path) < 0 && errno != ENOENT)
		log_debug("could not remove cache file \"%s\": %m", path);
}

/* Unlinks the files of entries taken out of the index and frees them. lock not held. */
static void cache_unlink_entries(const CacheBackend *c, CacheEntry *list)
{
	for (CacheEntry *e = list, *next; e; e = next) {
		next = e->hnext;
		cache_unlink(c, &e->key);
		free(e);
	}
}

/* 0, -EBADMSG for a file that fails its check, or -errno. */
static int cache_file_read(const char *path, size_t len, void *buf, bool touch)
{
	uint8_t h[CACHE_HEADER_SIZE];
	struct stat st;
	ssize_t n;
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if ((uint64_t)st.st_size != CACHE_HEADER_SIZE + (uint64_t)len)
		return -EBADMSG;
	n = pread_full(fd, h, sizeof(h), 0);
	if (n < 0)
		return (int)n;
	if ((size_t)n != sizeof(h) || memcmp(h, CACHE_MAGIC, 8) != 0 || get_le64(h + 8) != len)
		return -EBADMSG;
	n = pread_full(fd, buf, len, CACHE_HEADER_SIZE);
	if (n < 0)
		return (int)n;
	if ((size_t)n != len || crc32c(buf, len) != get_le32(h + 16))
		return -EBADMSG;
	/* best effort: the mtime only orders the index rebuilt at the next start */
	if (touch)
		(void)futimens(fd, NULL);
	return 0;
}

/* Temp file beside path, then rename: a reader sees all of it or nothing. */
static int cache_file_write(const char *path, const void *buf, size_t len)
{
	char dir[PATH_MAX], tmp[PATH_MAX + 32];
	uint8_t h[CACHE_HEADER_SIZE];
	uint64_t rnd;
	_cleanup_close_ int fd = -1;
	int r = random_bytes(&rnd, sizeof(rnd));

	if (r < 0)
		return r;
	path_dirname(path, dir, sizeof(dir));
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s/.tmp-%016" PRIx64, dir, rnd) >= sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 && errno == ENOENT) {
		/* the 256 subdirectories are made on first use */
		if (mkdir(dir, 0700) < 0 && errno != EEXIST)
			return -errno;
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	}
	if (fd < 0)
		return -errno;
	memcpy(h, CACHE_MAGIC, 8);
	put_le64(h + 8, len);
	put_le32(h + 16, crc32c(buf, len));
	r = write_full(fd, h, sizeof(h));
	if (r == 0)
		r = write_full(fd, buf, len);
	if (r == 0 && close(TAKE_FD(fd)) < 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	return r;
}

/* A cached file failed to read: out of the index, and its file removed. */
static void cache_drop(CacheBackend *c, const CacheKey *key)
{
	CacheEntry *e;
	pthread_mutex_lock(&c->lock);
	e = index_find(c, key);
	if (e)
		index_remove(c, e);
	c->n_misses++;
	pthread_mutex_unlock(&c->lock);
	/* even when evicted meanwhile: its evictor may have unlinked before a newer rename */
	cache_unlink(c, key);
	free(e);
}

/* Keeps a range just read from inner; failures only cost a later re-read. */
static void cache_store(CacheBackend *c, const CacheKey *key, const char *path, const void *buf,
			size_t len)
{
	CacheEntry *e, *victims;
	int r = cache_file_write(path, buf, len);

	if (r < 0) {
		log_debug("could not write cache file \"%s\": %s", path, strerror(-r));
		return;
	}
	e = calloc(1, sizeof(*e));
	if (!e) {
		unlink(path);
		return;
	}
	e->key = *key;
	e->size = CACHE_HEADER_SIZE + (uint64_t)len;
	e->mtime_ns = now_ns();
	pthread_mutex_lock(&c->lock);
	if (index_find(c, key)) {
		/* another thread fetched it too: same bytes, same file name */
		pthread_mutex_unlock(&c->lock);
		free(e);
		return;
	}
	index_insert(c, e);
	victims = index_evict(c);
	pthread_mutex_unlock(&c->lock);
	cache_unlink_entries(c, victims);
}

static int cache_get_range(StoreBackend *b, const char *name, uint64_t offset, size_t len,
			   void *buf)
{
	CacheBackend *c = (CacheBackend *)b;
	char path[PATH_MAX];
	CacheKey key;
	CacheEntry *e;
	bool indexed, touch = false;
	int r;

	if (!cache_wants(c, name, len))
		return store_get_range(c->inner, name, offset, len, buf);
	cache_key(name, offset, len, &key);
	if (cache_path(c, &key, path, sizeof(path)) < 0)
		return store_get_range(c->inner, name, offset, len, buf);

	pthread_mutex_lock(&c->lock);
	e = index_find(c, &key);
	if (e) {
		int64_t now = now_ns();
		lru_unlink(c, e);
		lru_append(c, e);
		if (now - e->mtime_ns >= CACHE_TOUCH_NS) {
			e->mtime_ns = now;
			touch = true;
		}
	} else {
		c->n_misses++;
	}
	indexed = e != NULL; /* e may be evicted and freed once the lock is dropped */
	pthread_mutex_unlock(&c->lock);

	if (indexed) {
		r = cache_file_read(path, len, buf, touch);
		if (r == 0) {
			pthread_mutex_lock(&c->lock);
			c->n_hits++;
			pthread_mutex_unlock(&c->lock);
			return 0;
		}
		if (r == -EBADMSG)
			log_debug("cache file \"%s\" is damaged, reading its range again", path);
		else if (r != -ENOENT)
			log_debug("could not read cache file \"%s\": %s", path, strerror(-r));
		cache_drop(c, &key);
	}

	r = store_get_range(c->inner, name, offset, len, buf);
	if (r < 0)
		return r;
	cache_store(c, &key, path, buf, len);
	return 0;
}

static int cache_put(StoreBackend *b, const char *name, const void *buf, size_t len)
{
	/* packs are immutable: a put never makes a cached range stale */
	return store_put(((CacheBackend *)b)->inner, name, buf, len);
}

static int cache_size(StoreBackend *b, const char *name, uint64_t *ret_size)
{
	return store_size(((CacheBackend *)b)->inner, name, ret_size);
}

static int cache_list(StoreBackend *b, const char *prefix, StoreListFn cb, void *userdata)
{
	return store_list(((CacheBackend *)b)->inner, prefix, cb, userdata);
}

static int cache_delete(StoreBackend *b, const char *name)
{
	/*
	 * Ranges of a deleted pack stay cached until they age out of the LRU:
	 * pack names are random and never reused, so nobody asks for them again
	 * (the index is keyed by digest and could not find them by name anyway).
	 */
	return store_delete(((CacheBackend *)b)->inner, name);
}

static void cache_free_index(CacheBackend *c)
{
	for (CacheEntry *e = c->lru_head, *next; e; e = next) {
		next = e->next;
		free(e);
	}
	free(c->buckets);
}

static void cache_free(StoreBackend *b)
{
	CacheBackend *c = (CacheBackend *)b;
	store_backend_free(c->inner);
	cache_free_index(c);
	pthread_mutex_destroy(&c->lock);
	free(c->dir);
	free(c);
}

static const StoreBackendOps cache_ops = {
	.name = "cache",
	.put = cache_put,
	.get_range = cache_get_range,
	.size = cache_size,
	.list = cache_list,
	.delete = cache_delete,
	.free = cache_free,
};

typedef struct ScanItem {
	CacheKey key;
	uint64_t size;
	int64_t mtime_ns;
} ScanItem;

typedef struct Scan {
	ScanItem *items;
	size_t n, cap;
} Scan;

static int scan_add(Scan *s, const char *sub, const char *name, const struct stat *st)
{
	char hex[2 * sizeof(s->items[0].key.b) + 1];
	ScanItem *it;

	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 256;
		ScanItem *items = realloc(s->items, cap * sizeof(*items));
		if (!items)
			return -ENOMEM;
		s->items = items;
		s->cap = cap;
	}
	it = &s->items[s->n];
	/* callers checked the lengths: 2 + 62 hex digits */
	memcpy(hex, sub, 2);
	memcpy(hex + 2, name, sizeof(hex) - 2);
	if (hex_decode(hex, it->key.b, sizeof(it->key.b)) < 0)
		return 0;
	it->size = (uint64_t)st->st_size;
	it->mtime_ns = timespec_to_ns(&st->st_mtim);
	s->n++;
	return 0;
}

/* Files of dir/<sub>: entries to index; leftover temp files and headless files removed. */
static int scan_subdir(int dfd, const char *sub, Scan *s)
{
	int fd = openat(dfd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct dirent *de;
	DIR *d;
	int r = 0;

	if (fd < 0)
		return errno == ENOENT || errno == ENOTDIR ? 0 : -errno;
	d = fdopendir(fd);
	if (!d) {
		r = -errno;
		close(fd);
		return r;
	}
	while (r == 0 && (de = readdir(d))) {
		struct stat st;
		if (strncmp(de->d_name, ".tmp-", 5) == 0) {
			/* a write cut short by a crash or a kill */
			if (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT)
				r = -errno;
			continue;
		}
		if (!hex_is_lower(de->d_name, 62))
			continue; /* not ours: leave it alone */
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT)
				r = -errno;
			continue;
		}
		if (!S_ISREG(st.st_mode))
			continue;
		if ((uint64_t)st.st_size < CACHE_HEADER_SIZE) {
			if (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT)
				r = -errno;
			continue;
		}
		r = scan_add(s, sub, de->d_name, &st);
	}
	closedir(d);
	return r;
}

static int scan_item_cmp(const void *a, const void *b)
{
	const ScanItem *x = a, *y = b;
	if (x->mtime_ns != y->mtime_ns)
		return x->mtime_ns < y->mtime_ns ? -1 : 1;
	return memcmp(x->key.b, y->key.b, sizeof(x->key.b));
}

static int cache_scan(const char *dir, Scan *s)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int r = 0;

	if (!d)
		return -errno;
	while (r == 0 && (de = readdir(d)))
		if (hex_is_lower(de->d_name, 2))
			r = scan_subdir(dirfd(d), de->d_name, s);
	closedir(d);
	return r;
}

/* Rebuilds the index from the files, oldest first, then evicts down to the bound. */
static int cache_load(CacheBackend *c)
{
	Scan s = {0};
	CacheEntry *victims;
	int r = cache_scan(c->dir, &s);

	if (r < 0)
		goto out;
	if (s.n > 0)
		qsort(s.items, s.n, sizeof(*s.items), scan_item_cmp);
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < s.n && r == 0; i++) {
		CacheEntry *e = calloc(1, sizeof(*e));
		if (!e) {
			r = -ENOMEM;
			break;
		}
		*e = (CacheEntry){.key = s.items[i].key, .size = s.items[i].size,
				  .mtime_ns = s.items[i].mtime_ns};
		index_insert(c, e);
	}
	victims = r == 0 ? index_evict(c) : NULL;
	pthread_mutex_unlock(&c->lock);
	cache_unlink_entries(c, victims);
out:
	free(s.items);
	return r;
}

int store_cache_new(StoreBackend *inner, const char *dir, uint64_t max_bytes, StoreBackend **ret)
{
	CacheBackend *c = calloc(1, sizeof(*c));
	int r;

	if (!c)
		return -ENOMEM;
	pthread_mutex_init(&c->lock, NULL);
	c->max_bytes = max_bytes;
	c->n_buckets = CACHE_MIN_BUCKETS;
	c->buckets = calloc(c->n_buckets, sizeof(*c->buckets));
	c->dir = strdup(dir);
	if (!c->buckets || !c->dir) {
		r = -ENOMEM;
		goto fail;
	}
	r = mkdir_p(dir, 0700);
	if (r < 0)
		goto fail;
	r = cache_load(c);
	if (r < 0)
		goto fail;
	c->inner = inner;
	store_backend_init(&c->base, &cache_ops);
	*ret = &c->base;
	return 0;
fail:
	cache_free_index(c);
	pthread_mutex_destroy(&c->lock);
	free(c->dir);
	free(c);
	return r;
}

void store_cache_counts(StoreBackend *b, uint64_t *ret_hits, uint64_t *ret_misses,
			uint64_t *ret_evictions)
{
	CacheBackend *c = (CacheBackend *)b;
	PGBAKFS_CHECK(b->ops == &cache_ops);
	pthread_mutex_lock(&c->lock);
	if (ret_hits)
		*ret_hits = c->n_hits;
	if (ret_misses)
		*ret_misses = c->n_misses;
	if (ret_evictions)
		*ret_evictions = c->n_evictions;
	pthread_mutex_unlock(&c->lock);
}
