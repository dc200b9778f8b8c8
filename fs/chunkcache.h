/*
 * A bounded cache of decompressed chunks for the mount, with background
 * prefetch. Sharded by chunk id, each shard with its own lock and LRU, so
 * concurrent reads of different chunks do not contend; a chunk being loaded
 * is loaded once while other readers of it wait. Entries in use are pinned
 * and never evicted; the capacity bounds the unpinned rest, counting each
 * entry as a whole chunk buffer (the tail of a file, or a small file, too).
 *
 * Chunks are read through a pool of ChunkReaders (each with its own catalog
 * connection), so every read is checked against its id. A chunk found damaged
 * (-EBADMSG) is remembered as such and not read again.
 */
#pragma once

#include "store/reader.h"

typedef struct ChunkCache ChunkCache;
typedef struct CachedChunk CachedChunk;

int chunk_cache_new(Repo *repo, uint64_t capacity, unsigned prefetch_threads, ChunkCache **ret);
/* Waits for prefetch threads; every pinned chunk must have been put back. */
ChunkCache *chunk_cache_free(ChunkCache *c);

/*
 * The plen plain bytes of chunk id, pinned until chunk_cache_put. Never for a
 * hole (the caller knows those are zeros). Returns 0 or -errno as
 * chunk_reader_read.
 */
int chunk_cache_get(ChunkCache *c, const ChunkId *id, uint32_t plen, CachedChunk **ret);
const uint8_t *cached_chunk_data(const CachedChunk *e);
void chunk_cache_put(ChunkCache *c, CachedChunk *e);
/*
 * chunk_cache_put by a reader done with the chunk (a streaming reader that
 * served its last byte, which the kernel's page cache now holds): unless
 * someone else has it pinned, the entry leaves the cache at once and its
 * buffer is the next one reused, instead of waiting at the head of the LRU
 * while the rest of the capacity is filled. A later get loads it again.
 */
void chunk_cache_put_done(ChunkCache *c, CachedChunk *e);

/* Queue a chunk to be loaded in the background; dropped when the queue is full. */
void chunk_cache_prefetch(ChunkCache *c, const ChunkId *id, uint32_t plen);
/*
 * Queue n chunks (plens[i] plain bytes each; holes and chunks cached or
 * loading are skipped), located in one catalog transaction per
 * PREFETCH_BATCH of them on the calling thread. Errors are left to the
 * reader that asks for the chunk (chunk_cache_get).
 */
#define PREFETCH_BATCH 64
void chunk_cache_prefetch_many(ChunkCache *c, const ChunkId *ids, const uint32_t *plens, size_t n);

typedef struct ChunkCacheStats {
	uint64_t hits, misses, prefetched, evicted, dropped, bytes;
	/* queued with a location found in a batch; loaded at a location that did not serve */
	uint64_t located, relocated;
	/* runs of located chunks, one after the other in a pack, fetched at once */
	uint64_t runs;
} ChunkCacheStats;
void chunk_cache_stats(ChunkCache *c, ChunkCacheStats *ret);
