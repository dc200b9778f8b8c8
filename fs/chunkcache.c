#include "fs/chunkcache.h"

#include "common/log.h"
#include "common/util.h"
#include "common/workqueue.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define N_SHARDS 16
/*
 * Runs of up to PREFETCH_RUN chunks from a local repository (eight streaming
 * readers 8 MiB ahead, in 64 KiB chunks), PREFETCH_BATCH from object storage,
 * where each fetch is a request: runs of 8 were 6,204 GETs for 20 MB stored
 * of a 671 MB file read out of a cold mount.
 */
#define PREFETCH_QUEUE 256
#define PREFETCH_RUN 8

/* ENTRY_RELEASED: claimed for a prefetch that was dropped; its waiters look again */
typedef enum { ENTRY_LOADING, ENTRY_READY, ENTRY_FAILED, ENTRY_BAD, ENTRY_RELEASED } EntryState;

struct CachedChunk {
	ChunkId id;
	uint32_t plen;
	EntryState state;
	int error;
	unsigned refs;
	uint8_t *data;
	bool hashed;
	CachedChunk *hnext;      /* hash chain */
	CachedChunk *prev, *next; /* LRU of unpinned ready entries, newest first */
};

typedef struct Shard {
	pthread_mutex_t lock;
	pthread_cond_t loaded;
	CachedChunk **buckets;
	size_t n_buckets; /* a power of two */
	CachedChunk *lru_head, *lru_tail;
	uint64_t bytes, capacity;
} Shard;

/*
 * One item of the prefetch queue: a run of chunks of a file, located
 * (chunk_cache_prefetch_many) and lying one after the other in one pack, so
 * that one fetch of the backend and one queue item serve them all; or one
 * chunk the batch did not locate, which its loader locates.
 *
 * The chunks of a run neither cached nor loading are claimed (hashed as
 * loading) before its fetch, so that a reader that gets to one of them
 * meanwhile waits for it instead of fetching it alone: from object storage
 * when the run is queued (a request each: readers overtaking runs queued on
 * a busy machine made up to 72 GETs of a sequential read that takes 9),
 * from a local repository when a prefetch thread takes it.
 */
typedef struct PrefetchItem {
	int64_t queued; /* mono_ns: a reader that got there first makes old items moot */
	unsigned n;
	bool has_loc;
	ChunkId ids[PREFETCH_BATCH];
	uint32_t plens[PREFETCH_BATCH];
	ChunkLoc locs[PREFETCH_BATCH]; /* if has_loc */
	uint64_t lo, hi;               /* if has_loc: the bytes of the pack the run spans */
	unsigned n_claimed;
	CachedChunk *claimed[PREFETCH_BATCH]; /* pinned loading entries, or NULL */
} PrefetchItem;

/*
 * From object storage a run is the chunks of a pack within RUN_GAP of each
 * other, in any order, RUN_SPAN_MAX bytes at most: two workers compress a
 * file's chunks side by side, so the pack holds them nearly in order, with
 * neighbours swapped here and there (runs of strictly adjacent chunks were
 * 17 chunks long on average, fetched one GET each).
 */
#define RUN_GAP (256u * 1024)
#define RUN_SPAN_MAX (4u * 1024 * 1024)

/*
 * Prefetching what a reader has already read (and the cache let go) is
 * waste: an item older than this is dropped. From object storage an item
 * waits for fetches of round trips each: 100 ms dropped half of a cold
 * stream's items, which its reader then loaded one chunk, one GET, at a time.
 * A claimed run is never moot: no reader has had its chunks.
 */
#define PREFETCH_STALE_NS (100 * 1000 * 1000)
#define PREFETCH_STALE_REMOTE_NS (2000 * 1000 * 1000LL)

/*
 * Chunk buffers are all chunk_size and recycled through a free list: 64 KiB
 * mallocs freed by other threads scattered over glibc's per-thread arenas and
 * let the daemon's RSS grow well past the cache's capacity. They are carved
 * out of 2 MiB slabs the kernel may back with huge pages (MADV_HUGEPAGE):
 * filling the cache touched every 4 KiB page of it for the first time, one
 * page fault each, and those faults were ~15-19% of the daemon's CPU on a
 * first read of a 1 GiB file (perf); a huge page is one fault per 2 MiB. The
 * kernel also pins the pages of every reply (fuse_copy_fill), cheaper on a
 * huge page.
 */
#define SLAB_BYTES (2u * 1024 * 1024)

typedef struct BufPool {
	pthread_mutex_t lock;
	void **free;
	size_t n_free, cap_free;
	size_t size;
	/* every slab, for chunk_cache_free; the newest one is carved from its unused tail */
	void **slabs;
	size_t n_slabs, cap_slabs;
	size_t slab_bytes, slab_used;
} BufPool;

struct ChunkCache {
	Repo *repo;
	BufPool bufs;
	Shard shards[N_SHARDS];

	pthread_mutex_t pool_lock;
	ChunkReader **pool;
	size_t n_pool, cap_pool;

	/*
	 * The batch lookups all go through one catalog connection (locate_lock):
	 * on a fresh mount each connection reads (pread) and caches (malloc) the
	 * catalog pages it touches, and spread over the pool's connections that
	 * was half of the lookups' CPU (perf).
	 */
	pthread_mutex_t locate_lock;
	ChunkReader *locator; /* made on first use */

	/* hints for the prefetch threads: dropped when full, skipped once stopping */
	WorkQueue *prefetch;
	_Atomic bool stopping;
	pthread_t *threads;
	unsigned n_threads;

	_Atomic uint64_t hits, misses, prefetched, evicted, dropped, located, relocated, runs;
	unsigned run_max;  /* chunks in a run: PREFETCH_RUN, or PREFETCH_BATCH from object storage */
	int64_t stale_ns;  /* PREFETCH_STALE_NS or PREFETCH_STALE_REMOTE_NS */
};

static Shard *shard_of(ChunkCache *c, const ChunkId *id) { return &c->shards[id->b[0] % N_SHARDS]; }

static size_t bucket_of(const Shard *s, const ChunkId *id)
{
	uint64_t h;
	memcpy(&h, id->b + 8, sizeof(h)); /* the id is a hash already */
	return (size_t)h & (s->n_buckets - 1);
}

static CachedChunk *shard_find(Shard *s, const ChunkId *id)
{
	for (CachedChunk *e = s->buckets[bucket_of(s, id)]; e; e = e->hnext)
		if (memcmp(e->id.b, id->b, sizeof(id->b)) == 0)
			return e;
	return NULL;
}

static void shard_unhash(Shard *s, CachedChunk *e)
{
	CachedChunk **p = &s->buckets[bucket_of(s, &e->id)];
	while (*p != e)
		p = &(*p)->hnext;
	*p = e->hnext;
	e->hashed = false;
}

static void lru_remove(Shard *s, CachedChunk *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		s->lru_head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		s->lru_tail = e->prev;
	e->prev = e->next = NULL;
}

static void lru_push(Shard *s, CachedChunk *e)
{
	e->prev = NULL;
	e->next = s->lru_head;
	if (s->lru_head)
		s->lru_head->prev = e;
	s->lru_head = e;
	if (!s->lru_tail)
		s->lru_tail = e;
}

/* A new slab to carve buffers from (p->lock held); false when out of memory. */
static bool slab_new(BufPool *p)
{
	void *slab = NULL;
	if (p->n_slabs == p->cap_slabs) {
		size_t cap = p->cap_slabs ? p->cap_slabs * 2 : 16;
		void **v = realloc(p->slabs, cap * sizeof(*v));
		if (!v)
			return false;
		p->slabs = v;
		p->cap_slabs = cap;
	}
	/* mapped whole and trimmed to a 2 MiB boundary, so that huge pages can back it */
	size_t len = p->slab_bytes + SLAB_BYTES;
	uint8_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return false;
	slab = (void *)(((uintptr_t)m + SLAB_BYTES - 1) & ~((uintptr_t)SLAB_BYTES - 1));
	size_t head = (size_t)((uint8_t *)slab - m);
	if (head)
		munmap(m, head);
	if (len - head > p->slab_bytes)
		munmap((uint8_t *)slab + p->slab_bytes, len - head - p->slab_bytes);
#ifdef MADV_HUGEPAGE
	(void)madvise(slab, p->slab_bytes, MADV_HUGEPAGE); /* a hint: without it, 4 KiB pages */
#endif
	p->slabs[p->n_slabs++] = slab;
	p->slab_used = 0;
	return true;
}

static void *buf_get(BufPool *p)
{
	void *b = NULL;
	pthread_mutex_lock(&p->lock);
	if (p->n_free)
		b = p->free[--p->n_free];
	else if ((p->n_slabs && p->slab_used + p->size <= p->slab_bytes) || slab_new(p)) {
		b = (uint8_t *)p->slabs[p->n_slabs - 1] + p->slab_used;
		p->slab_used += p->size;
	}
	pthread_mutex_unlock(&p->lock);
	return b;
}

static void buf_put(BufPool *p, void *b)
{
	if (!b)
		return;
	pthread_mutex_lock(&p->lock);
	if (p->n_free == p->cap_free) {
		size_t cap = p->cap_free ? p->cap_free * 2 : 64;
		void **v = realloc(p->free, cap * sizeof(*v));
		if (!v) {
			pthread_mutex_unlock(&p->lock);
			return; /* lost until the slab goes, at chunk_cache_free */
		}
		p->free = v;
		p->cap_free = cap;
	}
	p->free[p->n_free++] = b;
	pthread_mutex_unlock(&p->lock);
}

static void entry_free(ChunkCache *c, CachedChunk *e)
{
	buf_put(&c->bufs, e->data);
	free(e);
}

/* Drop unpinned entries, oldest first, until the shard fits its capacity. */
static void shard_evict(ChunkCache *c, Shard *s)
{
	while (s->bytes > s->capacity && s->lru_tail) {
		CachedChunk *e = s->lru_tail;
		lru_remove(s, e);
		shard_unhash(s, e);
		s->bytes -= c->bufs.size;
		entry_free(c, e);
		atomic_fetch_add(&c->evicted, 1);
	}
}

static ChunkReader *pool_take(ChunkCache *c, int *ret_error)
{
	ChunkReader *r = NULL;
	pthread_mutex_lock(&c->pool_lock);
	if (c->n_pool)
		r = c->pool[--c->n_pool];
	pthread_mutex_unlock(&c->pool_lock);
	if (!r)
		*ret_error = chunk_reader_new(c->repo, &r);
	return r;
}

static void pool_return(ChunkCache *c, ChunkReader *r)
{
	pthread_mutex_lock(&c->pool_lock);
	if (c->n_pool == c->cap_pool) {
		size_t cap = c->cap_pool ? c->cap_pool * 2 : 8;
		ChunkReader **v = realloc(c->pool, cap * sizeof(*v));
		if (!v) {
			pthread_mutex_unlock(&c->pool_lock);
			chunk_reader_free(r);
			return;
		}
		c->pool = v;
		c->cap_pool = cap;
	}
	c->pool[c->n_pool++] = r;
	pthread_mutex_unlock(&c->pool_lock);
}

/* Read and check a chunk without any cache lock held, with reader or one of the pool. */
static int load_chunk(ChunkCache *c, ChunkReader *reader, const ChunkId *id, uint32_t plen,
		      const ChunkLoc *loc, uint8_t **ret)
{
	int r = 0;
	bool own = !reader;
	uint8_t *buf;

	if (own && !(reader = pool_take(c, &r)))
		return r;
	buf = plen <= c->bufs.size ? buf_get(&c->bufs) : NULL;
	if (!buf)
		r = -ENOMEM;
	else if (!loc)
		r = chunk_reader_read_fast(reader, id, plen, buf);
	else if ((r = chunk_reader_read_fast_at(reader, id, loc, plen, buf)) == 1) {
		atomic_fetch_add(&c->relocated, 1); /* the location did not serve: found again */
		r = 0;
	}
	if (own)
		pool_return(c, reader);
	if (r < 0) {
		buf_put(&c->bufs, buf);
		return r;
	}
	*ret = buf;
	return 0;
}

/*
 * With the shard locked: wait for a loading entry. 0 (ready), 1 (released
 * unloaded: look again) or the load's error.
 */
static int wait_loaded(Shard *s, CachedChunk *e)
{
	while (e->state == ENTRY_LOADING)
		pthread_cond_wait(&s->loaded, &s->lock);
	return e->state == ENTRY_READY ? 0 : e->state == ENTRY_RELEASED ? 1 : e->error;
}

static void unpin_locked(ChunkCache *c, Shard *s, CachedChunk *e)
{
	PGBAKFS_CHECK(e->refs > 0);
	if (--e->refs > 0)
		return;
	if (e->state == ENTRY_READY)
		lru_push(s, e);
	else if (!e->hashed)
		entry_free(c, e); /* a failed load nobody waits for any more */
}

/*
 * A new loading entry for id, hashed and pinned, for the caller to load and
 * settle (s locked). Readers that ask for it meanwhile wait for it.
 */
static CachedChunk *entry_claim_locked(ChunkCache *c, Shard *s, const ChunkId *id, uint32_t plen)
{
	CachedChunk *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	*e = (CachedChunk){.id = *id, .plen = plen, .state = ENTRY_LOADING, .refs = 1, .hashed = true};
	size_t b = bucket_of(s, id);
	e->hnext = s->buckets[b];
	s->buckets[b] = e;
	atomic_fetch_add(&c->misses, 1);
	return e;
}

/* entry_settle's r for a claim given up before its load */
#define LOAD_RELEASED 1

/*
 * A claimed entry loaded (r == 0: data, still pinned), not loaded (r < 0:
 * unpinned, and remembered if damaged) or given up (LOAD_RELEASED:
 * unpinned, gone); its waiters wake.
 */
static void entry_settle(ChunkCache *c, CachedChunk *e, int r, uint8_t *data)
{
	Shard *s = shard_of(c, &e->id);
	pthread_mutex_lock(&s->lock);
	if (r == 0) {
		e->data = data;
		e->state = ENTRY_READY;
		s->bytes += c->bufs.size; /* the buffer, not the bytes in it: a small file's chunk costs as much */
		shard_evict(c, s);
	} else if (r == -EBADMSG) {
		e->state = ENTRY_BAD; /* damage does not heal: remember it */
		e->error = r;
		e->refs--;
	} else {
		/* perhaps transient: the next reader tries again */
		e->state = r == LOAD_RELEASED ? ENTRY_RELEASED : ENTRY_FAILED;
		e->error = r;
		shard_unhash(s, e);
		unpin_locked(c, s, e);
	}
	pthread_cond_broadcast(&s->loaded);
	pthread_mutex_unlock(&s->lock);
}

int chunk_cache_get(ChunkCache *c, const ChunkId *id, uint32_t plen, CachedChunk **ret)
{
	Shard *s = shard_of(c, id);
	CachedChunk *e;
	uint8_t *data = NULL;
	int r;

again:
	pthread_mutex_lock(&s->lock);
	e = shard_find(s, id);
	if (e) {
		if (e->state == ENTRY_BAD) {
			r = e->error;
			pthread_mutex_unlock(&s->lock);
			return r;
		}
		if (e->refs++ == 0 && e->state == ENTRY_READY)
			lru_remove(s, e);
		r = wait_loaded(s, e);
		if (r != 0)
			unpin_locked(c, s, e);
		pthread_mutex_unlock(&s->lock);
		if (r == 1)
			goto again;
		atomic_fetch_add(&c->hits, 1);
		if (r == 0)
			*ret = e;
		return r;
	}
	e = entry_claim_locked(c, s, id, plen);
	pthread_mutex_unlock(&s->lock);
	if (!e)
		return -ENOMEM;
	r = load_chunk(c, NULL, id, plen, NULL, &data);
	entry_settle(c, e, r, data);
	if (r == 0)
		*ret = e;
	return r;
}

const uint8_t *cached_chunk_data(const CachedChunk *e) { return e->data; }

void chunk_cache_put(ChunkCache *c, CachedChunk *e)
{
	Shard *s = shard_of(c, &e->id);
	pthread_mutex_lock(&s->lock);
	unpin_locked(c, s, e);
	shard_evict(c, s);
	pthread_mutex_unlock(&s->lock);
}

void chunk_cache_put_done(ChunkCache *c, CachedChunk *e)
{
	Shard *s = shard_of(c, &e->id);
	pthread_mutex_lock(&s->lock);
	PGBAKFS_CHECK(e->refs > 0);
	if (e->refs == 1 && e->state == ENTRY_READY && e->hashed) {
		shard_unhash(s, e);
		s->bytes -= c->bufs.size;
		pthread_mutex_unlock(&s->lock);
		entry_free(c, e);
		atomic_fetch_add(&c->dropped, 1);
		return;
	}
	unpin_locked(c, s, e);
	shard_evict(c, s);
	pthread_mutex_unlock(&s->lock);
}

static bool cached_or_loading(ChunkCache *c, const ChunkId *id)
{
	Shard *s = shard_of(c, id);
	pthread_mutex_lock(&s->lock);
	bool found = shard_find(s, id) != NULL;
	pthread_mutex_unlock(&s->lock);
	return found;
}

/* A hint, never waited for: dropped when the queue is full (0 or -errno). */
static int queue_push(ChunkCache *c, PrefetchItem *it)
{
	it->queued = mono_ns();
	return workqueue_try_push(c->prefetch, it);
}

/* Claim the chunks of item it neither cached nor loading; how many were. */
static unsigned run_claim(ChunkCache *c, PrefetchItem *it)
{
	it->n_claimed = 0;
	for (unsigned i = 0; i < it->n; i++) {
		Shard *s = shard_of(c, &it->ids[i]);
		pthread_mutex_lock(&s->lock);
		it->claimed[i] = shard_find(s, &it->ids[i]) ? NULL
							   : entry_claim_locked(c, s, &it->ids[i], it->plens[i]);
		it->n_claimed += it->claimed[i] != NULL;
		pthread_mutex_unlock(&s->lock);
	}
	return it->n_claimed;
}

/* Give up the claims of an item not loaded: their waiters look again. */
static void run_release(ChunkCache *c, PrefetchItem *it)
{
	for (unsigned i = 0; it->n_claimed && i < it->n; i++)
		if (it->claimed[i])
			entry_settle(c, it->claimed[i], LOAD_RELEASED, NULL);
	it->n_claimed = 0;
}

/* Queue an item of queue_located: a run from object storage claimed first. */
static void queue_item(ChunkCache *c, PrefetchItem *it)
{
	bool claim = it->has_loc && it->n > 1 && c->run_max == PREFETCH_BATCH;
	if (claim && !run_claim(c, it))
		return; /* all of it cached or loading already */
	if (queue_push(c, it) < 0)
		run_release(c, it);
	it->n_claimed = 0;
}

void chunk_cache_prefetch(ChunkCache *c, const ChunkId *id, uint32_t plen)
{
	PrefetchItem it = {.n = 1};
	if (!c->n_threads || chunk_id_is_hole(id))
		return;
	it.ids[0] = *id;
	it.plens[0] = plen;
	(void)queue_push(c, &it);
}

/* Whether the chunk at b joins run it: right after its last chunk, or (object storage) near it */
static bool run_joins(const ChunkCache *c, const PrefetchItem *it, const ChunkLoc *b)
{
	const ChunkLoc *a = &it->locs[it->n - 1];
	if (a->pack != b->pack)
		return false;
	if (c->run_max == PREFETCH_RUN)
		return a->offset + a->elen == b->offset;
	return b->offset + b->elen + RUN_GAP >= it->lo && b->offset <= it->hi + RUN_GAP &&
	       MAX(it->hi, b->offset + b->elen) - MIN(it->lo, b->offset) <= RUN_SPAN_MAX;
}

/*
 * The chunks neither cached nor loading are located in one catalog
 * transaction, on the caller's thread, and queued with their locations in
 * runs (one after the other in a pack): the prefetch threads then only
 * fetch, decode and check, one fetch per run. One not located (an error is
 * the reader's to meet, when it asks for the chunk itself) is queued alone.
 */
static void queue_located(ChunkCache *c, const ChunkId *ids, const uint32_t *plens, size_t n)
{
	ChunkLoc locs[PREFETCH_BATCH];
	int errs[PREFETCH_BATCH];
	int r = 0;
	PrefetchItem it = {0};

	pthread_mutex_lock(&c->locate_lock);
	if (!c->locator)
		r = chunk_reader_new(c->repo, &c->locator);
	if (r == 0)
		r = chunk_reader_locate(c->locator, ids, n, locs, errs);
	pthread_mutex_unlock(&c->locate_lock);
	for (size_t k = 0; k < n; k++) {
		bool found = r == 0 && errs[k] == 0;
		if (it.n && (!found || !it.has_loc || it.n == c->run_max ||
			     !run_joins(c, &it, &locs[k]))) {
			queue_item(c, &it);
			it.n = 0;
		}
		it.has_loc = found;
		it.ids[it.n] = ids[k];
		it.plens[it.n] = plens[k];
		if (found) {
			it.locs[it.n] = locs[k];
			it.lo = it.n ? MIN(it.lo, locs[k].offset) : locs[k].offset;
			it.hi = it.n ? MAX(it.hi, locs[k].offset + locs[k].elen)
				     : locs[k].offset + locs[k].elen;
			atomic_fetch_add(&c->located, 1);
		}
		it.n++;
	}
	if (it.n)
		queue_item(c, &it);
}

void chunk_cache_prefetch_many(ChunkCache *c, const ChunkId *ids, const uint32_t *plens, size_t n)
{
	ChunkId want[PREFETCH_BATCH];
	uint32_t want_plen[PREFETCH_BATCH];
	size_t n_want = 0;

	if (!c->n_threads)
		return;
	for (size_t i = 0; i < n; i++) {
		if (chunk_id_is_hole(&ids[i]) || cached_or_loading(c, &ids[i]))
			continue;
		want[n_want] = ids[i];
		want_plen[n_want++] = plens[i];
		if (n_want == PREFETCH_BATCH) {
			queue_located(c, want, want_plen, n_want);
			n_want = 0;
		}
	}
	if (n_want)
		queue_located(c, want, want_plen, n_want);
}

/*
 * The encoded bytes of a located run, fetched at once into *buf (grown as
 * needed) and lent to reader; nothing lent when the fetch fails (each chunk
 * is then fetched alone, and a failure is the reader's to meet).
 */
static void run_fetch(ChunkCache *c, ChunkReader *reader, const PrefetchItem *it, uint8_t **buf,
		      size_t *cap)
{
	const ChunkLoc *first = &it->locs[0];
	size_t len = (size_t)(it->hi - it->lo);
	if (len > *cap) {
		uint8_t *v = realloc(*buf, len);
		if (!v)
			return;
		*buf = v;
		*cap = len;
	}
	if (store_get_range(repo_backend(c->repo), first->pack_name, it->lo, len, *buf) == 0) {
		chunk_reader_lend(reader, first->pack_name, it->lo, *buf, len);
		atomic_fetch_add(&c->runs, 1);
	}
}

/*
 * An item, claimed (when queued, or here: what is cached or loading already
 * is skipped, never waited for, so that no prefetch thread waits on a run
 * still queued), a located run fetched at once, and the claimed chunks
 * decoded and checked in order.
 */
static void prefetch_item(ChunkCache *c, ChunkReader *reader, PrefetchItem *it, uint8_t **buf,
			  size_t *cap)
{
	if (!it->n_claimed && !run_claim(c, it))
		return;
	if (it->has_loc && it->n > 1)
		run_fetch(c, reader, it, buf, cap);
	for (unsigned i = 0; i < it->n; i++) {
		uint8_t *data = NULL;
		if (!it->claimed[i])
			continue;
		/* errors are the reader's to report, when it asks for the chunk itself */
		int r = load_chunk(c, reader, &it->ids[i], it->plens[i],
				   it->has_loc ? &it->locs[i] : NULL, &data);
		if (r == 0) /* counted before its waiters wake */
			atomic_fetch_add(&c->prefetched, 1);
		entry_settle(c, it->claimed[i], r, data);
		if (r == 0)
			chunk_cache_put(c, it->claimed[i]);
	}
	chunk_reader_lend(reader, NULL, 0, NULL, 0);
}

static void *prefetch_main(void *userdata)
{
	ChunkCache *c = userdata;
	thread_name("mount-prefetch");
	PrefetchItem it;
	_cleanup_free_ uint8_t *buf = NULL;
	size_t cap = 0;

	while (workqueue_pop(c->prefetch, &it) == 0) {
		int r = 0;
		ChunkReader *reader = NULL;
		/* stopping: what is left is popped and forgotten, not loaded */
		bool moot = atomic_load(&c->stopping) ||
			    (!it.n_claimed && mono_ns() - it.queued > c->stale_ns);
		/* without a reader, the one that asks for the chunks meets the error */
		if (moot || !(reader = pool_take(c, &r))) {
			run_release(c, &it);
			continue;
		}
		prefetch_item(c, reader, &it, &buf, &cap);
		pool_return(c, reader);
	}
	return NULL;
}

static int shards_init(ChunkCache *c, uint64_t capacity)
{
	uint64_t per_shard = capacity / N_SHARDS;
	uint64_t chunk = repo_config(c->repo)->chunk_size;
	size_t n_buckets = 64;
	while (n_buckets < 2 * per_shard / chunk)
		n_buckets *= 2;
	for (size_t i = 0; i < N_SHARDS; i++) {
		Shard *s = &c->shards[i];
		pthread_mutex_init(&s->lock, NULL);
		pthread_cond_init(&s->loaded, NULL);
		s->capacity = per_shard;
		s->n_buckets = n_buckets;
		s->buckets = calloc(n_buckets, sizeof(*s->buckets));
		if (!s->buckets)
			return -ENOMEM;
	}
	return 0;
}

int chunk_cache_new(Repo *repo, uint64_t capacity, unsigned prefetch_threads, ChunkCache **ret)
{
	ChunkCache *c = calloc(1, sizeof(*c));
	int r;
	if (!c)
		return -ENOMEM;
	c->repo = repo;
	c->run_max = repo_is_local_backend(repo) ? PREFETCH_RUN : PREFETCH_BATCH;
	c->stale_ns = repo_is_local_backend(repo) ? PREFETCH_STALE_NS : PREFETCH_STALE_REMOTE_NS;
	c->bufs.size = repo_config(repo)->chunk_size;
	/* chunk sizes are powers of two: a slab holds a whole number of buffers */
	c->bufs.slab_bytes = MAX((size_t)SLAB_BYTES, c->bufs.size);
	pthread_mutex_init(&c->bufs.lock, NULL);
	pthread_mutex_init(&c->pool_lock, NULL);
	pthread_mutex_init(&c->locate_lock, NULL);
	atomic_init(&c->stopping, false);
	r = shards_init(c, capacity);
	if (r == 0 && prefetch_threads) {
		c->threads = calloc(prefetch_threads, sizeof(*c->threads));
		r = c->threads ? workqueue_new(PREFETCH_QUEUE, sizeof(PrefetchItem), &c->prefetch)
			       : -ENOMEM;
	}
	for (unsigned i = 0; r == 0 && i < prefetch_threads; i++) {
		r = -pthread_create(&c->threads[i], NULL, prefetch_main, c);
		if (r == 0)
			c->n_threads++;
	}
	if (r < 0) {
		chunk_cache_free(c);
		return r;
	}
	*ret = c;
	return 0;
}

ChunkCache *chunk_cache_free(ChunkCache *c)
{
	if (!c)
		return NULL;
	atomic_store(&c->stopping, true);
	if (c->prefetch)
		workqueue_close(c->prefetch);
	for (unsigned i = 0; i < c->n_threads; i++)
		pthread_join(c->threads[i], NULL);
	free(c->threads);
	workqueue_free(c->prefetch);
	for (size_t i = 0; i < N_SHARDS; i++) {
		Shard *s = &c->shards[i];
		for (size_t b = 0; s->buckets && b < s->n_buckets; b++) {
			CachedChunk *e = s->buckets[b];
			while (e) {
				CachedChunk *next = e->hnext;
				PGBAKFS_CHECK(e->refs == 0);
				entry_free(c, e);
				e = next;
			}
		}
		free(s->buckets);
		pthread_mutex_destroy(&s->lock);
		pthread_cond_destroy(&s->loaded);
	}
	for (size_t i = 0; i < c->bufs.n_slabs; i++)
		munmap(c->bufs.slabs[i], c->bufs.slab_bytes);
	free(c->bufs.slabs);
	free(c->bufs.free);
	pthread_mutex_destroy(&c->bufs.lock);
	for (size_t i = 0; i < c->n_pool; i++)
		chunk_reader_free(c->pool[i]);
	free(c->pool);
	pthread_mutex_destroy(&c->pool_lock);
	chunk_reader_free(c->locator);
	pthread_mutex_destroy(&c->locate_lock);
	free(c);
	return NULL;
}

void chunk_cache_stats(ChunkCache *c, ChunkCacheStats *ret)
{
	uint64_t bytes = 0;
	for (size_t i = 0; i < N_SHARDS; i++) {
		pthread_mutex_lock(&c->shards[i].lock);
		bytes += c->shards[i].bytes;
		pthread_mutex_unlock(&c->shards[i].lock);
	}
	*ret = (ChunkCacheStats){.hits = atomic_load(&c->hits),
				 .misses = atomic_load(&c->misses),
				 .prefetched = atomic_load(&c->prefetched),
				 .evicted = atomic_load(&c->evicted),
				 .dropped = atomic_load(&c->dropped),
				 .located = atomic_load(&c->located),
				 .relocated = atomic_load(&c->relocated),
				 .runs = atomic_load(&c->runs),
				 .bytes = bytes};
}
