/*
 * Reading chunks back: locate in the catalog, fetch the range from the
 * backend, decompress, and check the bytes against the chunk id. A reader is
 * for one thread (it owns a catalog connection and codec state).
 */
#pragma once

#include "store/repo.h"

typedef struct ChunkReader ChunkReader;

int chunk_reader_new(Repo *repo, ChunkReader **ret);
ChunkReader *chunk_reader_free(ChunkReader *r);
/*
 * Fetch up to bytes of a pack at once, from the chunk asked for on, and
 * serve the chunks that follow from that window: for sequential readers
 * (restore) of object storage, where each request costs a round trip.
 * 0 turns it off (the default: one range per chunk).
 */
int chunk_reader_set_readahead(ChunkReader *r, size_t bytes);
/*
 * Serve the chunks of pack that lie within bytes [off, off + len) from buf,
 * which the caller fetched (restore's fetch threads) and keeps unchanged
 * until the next call; pack NULL stops. Chunks outside are fetched as usual;
 * bytes that fail verification are fetched once more, alone, as always.
 */
void chunk_reader_lend(ChunkReader *r, const char *pack, uint64_t off, const void *buf, size_t len);
/*
 * Fill buf with the plen plain bytes of chunk id (zeros for a hole).
 * -ENOENT: the catalog does not know the chunk; -EBADMSG: damaged data (the
 * chunk failed verification twice: bytes that fail are fetched once more,
 * alone, since a body may be damaged on the way); other -errno from the
 * backend.
 */
int chunk_reader_read(ChunkReader *r, const ChunkId *id, size_t plen, void *buf);
/*
 * The same, checking the CRC-32C recorded at backup when the catalog has one
 * (SHA-256 otherwise), where SHA-256 on a CPU without SHA extensions would
 * cost more than everything else together: the mount's read path, restore,
 * and an incremental backup's reads of its parent's chunks. check
 * --read-data hashes every chunk it reads with SHA-256 on its own.
 */
int chunk_reader_read_fast(ChunkReader *r, const ChunkId *id, size_t plen, void *buf);
/*
 * Locate n chunks in one catalog transaction (catalog_chunks_locate), for
 * chunk_reader_read_fast_at: the mount's prefetch locates a window of a file
 * at once instead of one query per chunk.
 */
int chunk_reader_locate(ChunkReader *r, const ChunkId *ids, size_t n, ChunkLoc *ret, int *ret_err);
/*
 * chunk_reader_read_fast of a chunk located already (loc from
 * chunk_reader_locate, for this id): the same checks and errors. A location
 * that does not serve the chunk any more (its pack rewritten by gc --repack
 * since) is not trusted: the chunk is located again and read as
 * chunk_reader_read_fast does, and 1 is returned instead of 0 (a count for
 * the mount's statistics: a batched lookup that went wrong would show there,
 * not in the bytes). A stored chunk that is not compressed is read straight
 * into buf, without a copy. Bytes lent (chunk_reader_lend: a restore's fetched
 * window, the mount's run) are served from there; when they fail verification
 * the chunk is fetched again, alone.
 */
int chunk_reader_read_fast_at(ChunkReader *r, const ChunkId *id, const ChunkLoc *loc, size_t plen,
			      void *buf);
/*
 * The chunk_fh recorded at backup for chunk id (restore --delta's check of
 * the bytes in place). -ENODATA: the catalog has none (a chunk stored before
 * it was recorded, or a rebuilt catalog): compare the SHA-256 instead;
 * -ENOENT: the catalog does not know the chunk.
 */
int chunk_reader_fh(ChunkReader *r, const ChunkId *id, uint8_t ret[CHUNK_FH_LEN]);

