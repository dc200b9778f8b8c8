/*
 * Open files and the read path: a snapshot file is read from the chunk
 * cache (prefetched ahead of a streaming reader, holes as zeros), a clone's
 * through fs/clone.c (whose lower reads come back here).
 */
#define FUSE_USE_VERSION 312

#include "fs/mount_int.h"

#include "common/log.h"
#include "common/util.h"

#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

void mount_handle_track(Mount *m, Handle *h)
{
	pthread_mutex_lock(&m->handles_lock);
	h->next = m->handles;
	if (h->next)
		h->next->prev = h;
	m->handles = h;
	pthread_mutex_unlock(&m->handles_lock);
}

void mount_handle_untrack(Mount *m, Handle *h)
{
	pthread_mutex_lock(&m->handles_lock);
	if (h->prev)
		h->prev->next = h->next;
	else
		m->handles = h->next;
	if (h->next)
		h->next->prev = h->prev;
	pthread_mutex_unlock(&m->handles_lock);
}

/* ---- reading ---- */

static void node_path(const SnapTree *t, const SnapNode *n, char *buf, size_t len)
{
	const SnapNode *chain[64];
	size_t depth = 0, used = 0;
	while (n && n->ino != 1 && depth < ELEMENTSOF(chain)) {
		chain[depth++] = n;
		n = snaptree_node(t, n->parent);
	}
	buf[0] = 0;
	while (depth-- > 0 && used < len)
		used += (size_t)snprintf(buf + used, len - used, "%s%s", used ? "/" : "",
					 chain[depth]->name);
}

/* Report a damaged chunk once per file and chunk. */
static void report_damage(Mount *m, const MountSnap *ms, const SnapTree *tree, const SnapNode *n,
			  uint64_t chunk, int r)
{
	uint64_t ino = make_ino(ms, n->ino);
	bool seen = false;
	char path[PATH_MAX];

	pthread_mutex_lock(&m->bad_lock);
	for (size_t i = 0; i < m->n_bad && !seen; i++)
		seen = m->bad[i][0] == ino && m->bad[i][1] == chunk;
	if (!seen) {
		void *v = realloc(m->bad, (m->n_bad + 1) * sizeof(*m->bad));
		if (v) {
			m->bad = v;
			m->bad[m->n_bad][0] = ino;
			m->bad[m->n_bad++][1] = chunk;
		}
	}
	pthread_mutex_unlock(&m->bad_lock);
	if (seen)
		return;
	node_path(tree, n, path, sizeof(path));
	log_error("snapshot \"%s\": file \"%s\": cannot read %" PRIu64 " bytes at offset %" PRIu64
		  ": %s", ms->name, path, m->chunk_size, chunk * m->chunk_size,
		  r == -EBADMSG ? "damaged data in the repository" : strerror(-r));
}

/* Copy [off, off + len) of a snapshot file (within its size) into buf. */
static int read_chunks(Mount *m, const MountSnap *ms, const SnapTree *tree, const SnapNode *n,
		       const SnapChunks *c, uint64_t off, size_t len, uint8_t *buf)
{
	uint64_t cs = m->chunk_size;
	while (len > 0) {
		uint64_t k = off / cs, in = off % cs;
		size_t take = (size_t)MIN((uint64_t)len, cs - in);
		uint32_t plen = (uint32_t)MIN(cs, n->size - k * cs);
		if (k >= c->n)
			return -EIO; /* the list and the size disagree */
		if (chunk_id_is_hole(&c->ids[k])) {
			memset(buf, 0, take);
		} else {
			CachedChunk *e;
			int r = chunk_cache_get(m->cache, &c->ids[k], plen, &e);
			if (r < 0) {
				report_damage(m, ms, tree, n, k, r);
				return -EIO;
			}
			memcpy(buf, cached_chunk_data(e) + in, take);
			chunk_cache_put(m->cache, e);
		}
		buf += take;
		off += take;
		len -= take;
	}
	return 0;
}

/*
 * A streaming reader (a read continuing exactly where the last one ended, or
 * a large one: the kernel's readahead at work) gets the chunks after its read
 * queued for the prefetch threads, PREFETCH_AHEAD bytes: twice the kernel's
 * readahead as raise_readahead sets it, so that the prefetch threads, not the
 * request threads, decompress and verify the chunks of the requests the kernel
 * sends next (a request finding its chunk loading waits for it; one finding
 * it neither cached nor loading loads it itself). A small read elsewhere
 * (PostgreSQL fetching one page) prefetches nothing, so it decompresses only
 * the chunk it needs.
 */
#define STREAMING_READ (128 * 1024)
#define PREFETCH_AHEAD (8 * 1024 * 1024)
/*
 * From object storage every run the prefetch threads fetch is a request (up
 * to PREFETCH_BATCH chunks: chunkcache.c), so a stream is queued further
 * ahead and topped up half a window at a time, whole batches, not a
 * request's 16 chunks at a time (runs of a request's size, queued 8 MiB
 * ahead, were 850 runs and ~5,000 chunks that request threads fetched alone
 * for a 671 MB file: 6,204 GETs).
 */
#define PREFETCH_AHEAD_REMOTE (32 * 1024 * 1024)

/*
 * Whether a read is part of a stream (and where the next one is expected).
 * The kernel's requests of a stream arrive in any order, at most two
 * readahead windows apart: a read farther than JUMP from where the last one
 * ended is a jump, after which the stream's prefetch starts afresh.
 */
#define JUMP (2 * PREFETCH_AHEAD)

void read_stream_init(ReadStream *st)
{
	for (unsigned i = 0; i < STREAM_ENDS; i++)
		atomic_init(&st->ends[i], UINT64_MAX);
	atomic_init(&st->n_reads, 0);
	atomic_init(&st->prefetched, 0);
}

/*
 * A read that starts where one of the last few ended continues a stream: a
 * writable mount's clone reads its lower files a chunk at a time, and two
 * threads serving a request and the kernel's read-ahead behind it
 * interleave those pieces (0, 128 KiB, 64 KiB, 192 KiB, ...). Compared with
 * the last end alone, a cold 32 MiB read through a clone fetched its first
 * ~16 chunks one GET each (25-30 GETs, 10-11 now), all 512 when the pieces
 * kept alternating (s3: reads in the order 2,0,3,1, 6,4,7,5, ...).
 */
static bool read_streaming(ReadStream *st, uint64_t off, size_t len)
{
	unsigned n = atomic_fetch_add(&st->n_reads, 1);
	uint64_t last = atomic_load(&st->ends[(n + STREAM_ENDS - 1) % STREAM_ENDS]);
	bool follows = false;
	for (unsigned i = 0; i < STREAM_ENDS; i++)
		follows |= atomic_load(&st->ends[i]) == off;
	atomic_store(&st->ends[n % STREAM_ENDS], off + len);
	if (last != UINT64_MAX && (off > last + JUMP || off + JUMP < last))
		atomic_store(&st->prefetched, 0);
	return follows || len >= STREAMING_READ;
}

/* Queue what follows a streaming read of node (its chunk list ch). */
static void prefetch_after(Mount *m, ReadStream *st, const SnapNode *node, const SnapChunks *ch,
			   uint64_t off, size_t len)
{
	bool remote = !repo_is_local_backend(m->repo);
	uint64_t cs = m->chunk_size, last = ch->n;
	uint64_t window = (remote ? PREFETCH_AHEAD_REMOTE : PREFETCH_AHEAD) / cs;
	/*
	 * From the request's own first chunk: the first request of a stream (or
	 * one after a jump) has its chunks decoded by the prefetch threads in
	 * parallel while this thread waits for them in order.
	 */
	uint64_t first = off / cs, end = (off + len + cs - 1) / cs;
	uint64_t from = first, to = MIN(last, end + MAX(window, 2));
	uint64_t done = atomic_load(&st->prefetched);
	/*
	 * The queued mark only moves forward (but for a jump: read_streaming): a
	 * request behind it, one the kernel sent before a request that queued
	 * past it, queues nothing again, which would load chunks anew that were
	 * served and dropped behind the reader.
	 */
	do {
		if (done >= to || (remote && done >= end + window / 2))
			return;
		from = MAX(first, done);
	} while (!atomic_compare_exchange_weak(&st->prefetched, &done, to));
	/* located in batches: one catalog transaction for up to PREFETCH_BATCH chunks */
	for (uint64_t k = from; k < to; k += PREFETCH_BATCH) {
		uint32_t plens[PREFETCH_BATCH];
		size_t n = (size_t)MIN((uint64_t)PREFETCH_BATCH, to - k);
		for (size_t i = 0; i < n; i++)
			plens[i] = (uint32_t)MIN(cs, node->size - (k + i) * cs);
		chunk_cache_prefetch_many(m->cache, &ch->ids[k], plens, n);
	}
}

int mount_lower_read(void *userdata, uint32_t lower_ino, uint64_t off, size_t len, void *buf)
{
	MountSnap *ms = userdata;
	/* the clone holds a reference to the tree: it stays while the clone is open */
	SnapTree *tree = ms->tree;
	const SnapNode *n = snaptree_node(tree, lower_ino);
	SnapChunks c;
	int r;

	if (!n || !S_ISREG(n->mode) || off + len > n->size)
		return -EIO;
	/* the clone reads its lower files often: keep their chunk lists */
	r = snaptree_chunks(tree, mount_content_loader, ms, n, &c);
	if (r < 0)
		return r;
	pthread_mutex_lock(&ms->pin_lock);
	bool pinned = ms->pinned[lower_ino];
	ms->pinned[lower_ino] = 1;
	pthread_mutex_unlock(&ms->pin_lock);
	if (pinned)
		snaptree_chunks_put(tree, n);
	/* a clone's reader streams through its lower files as through a read-only mount's */
	if (read_streaming(&ms->streams[lower_ino], off, len))
		prefetch_after(ms->m, &ms->streams[lower_ino], n, &c, off, len);
	return read_chunks(ms->m, ms, tree, n, &c, off, len, buf);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	Mount *m = mount_of(req);
	Handle *h = NULL;
	Target t;
	int r = mount_resolve(m, ino, &t);

	if (r == 0 && t.kind != KIND_SNAP)
		r = -EISDIR;
	if (r == 0 && !(h = calloc(1, sizeof(*h))))
		r = -ENOMEM;
	if (r == 0 && t.ms->clone) {
		r = clone_open_file(t.ms->clone, t.local, fi->flags, &h->cf);
	} else if (r == 0) {
		h->node = snaptree_node(t.tree, t.local);
		if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
			r = -EROFS;
		else if (!h->node)
			r = -ESTALE;
		else if (!S_ISREG(h->node->mode))
			r = -EISDIR;
		else
			r = snaptree_chunks(t.tree, mount_content_loader, t.ms, h->node, &h->chunks);
		h->have_chunks = r == 0;
		read_stream_init(&h->stream);
		/* immutable: what the kernel cached from an earlier open is still right */
		fi->keep_cache = 1;
	}
	if (r < 0) {
		mount_target_put(&t);
		free(h);
		fuse_reply_err(req, -r);
		return;
	}
	/* the handle keeps the references: a deleted snapshot stays readable, its tree loaded */
	h->snap = t.ms;
	h->tree = t.tree;
	fi->fh = (uint64_t)(uintptr_t)h;
	mount_handle_track(m, h);
	if (fuse_reply_open(req, fi) == -ENOENT) {
		/* the opener was interrupted: nobody will release this handle */
		mount_handle_untrack(m, h);
		if (h->cf)
			clone_release(h->cf);
		if (h->have_chunks)
			snaptree_chunks_put(t.tree, h->node);
		free(h);
		mount_target_put(&t);
	}
}

/*
 * A read of a snapshot file is answered from the chunk cache itself: the
 * reply's iovecs point into the cache entries (and at zeros for holes), which
 * stay pinned until fuse_reply_iov has handed them to the kernel, so the only
 * copy is the kernel's into its page cache. Not fuse_reply_data: libfuse
 * (3.14, without splice) copies a bufvec of more than one memory buffer into
 * a fresh allocation before writing it, which is what this replaces (a 1 MiB
 * malloc, its page faults and a memcpy per request). Every entry was verified
 * when it was loaded (chunk_cache_get serves nothing else).
 */
#define MAX_PIECES (MAX_IO / PGBAKFS_CHUNK_SIZE_MIN + 2)

/* never written: the zeros of holes, up to one request */
static uint8_t zeros[MAX_IO];

typedef struct Pieces {
	struct iovec iov[MAX_PIECES];
	CachedChunk *pinned[MAX_PIECES];
	bool done[MAX_PIECES]; /* pinned[i] was served to its end by a streaming read */
	size_t n_iov, n_pinned;
} Pieces;

/*
 * A streaming reader will not ask for a chunk again once it has served its
 * last byte (the kernel's page cache has it): such a chunk leaves the cache
 * at once (drop-behind), and its buffer, still warm in the CPU's caches, is
 * the next one a decoder fills. Without it a first read of a large file
 * filled the whole capacity with chunks nobody asked for again, each buffer
 * touched for the first time (a page fault and the kernel zeroing the page:
 * a fifth to a third of the daemon's CPU on a fresh mount, perf).
 */
static void pieces_put(Mount *m, Pieces *p)
{
	for (size_t i = 0; i < p->n_pinned; i++) {
		if (p->done[i])
			chunk_cache_put_done(m->cache, p->pinned[i]);
		else
			chunk_cache_put(m->cache, p->pinned[i]);
	}
	p->n_pinned = 0;
}

/*
 * Pin the chunks of [off, off + len) of an open snapshot file and point p's
 * iovecs at them; streaming: the read is part of a sequential stream.
 */
static int pin_chunks(Mount *m, const Handle *h, uint64_t off, size_t len, bool streaming,
		      Pieces *p)
{
	uint64_t cs = m->chunk_size;
	const SnapNode *n = h->node;
	p->n_iov = p->n_pinned = 0;
	while (len > 0) {
		uint64_t k = off / cs, in = off % cs;
		size_t take = (size_t)MIN((uint64_t)len, cs - in);
		uint32_t plen = (uint32_t)MIN(cs, n->size - k * cs);
		const uint8_t *data = zeros;
		if (k >= h->chunks.n || p->n_iov == MAX_PIECES)
			return -EIO; /* the list and the size disagree */
		if (!chunk_id_is_hole(&h->chunks.ids[k])) {
			CachedChunk *e;
			int r = chunk_cache_get(m->cache, &h->chunks.ids[k], plen, &e);
			if (r < 0) {
				report_damage(m, h->snap, h->tree, n, k, r);
				return -EIO;
			}
			p->done[p->n_pinned] = streaming && in + take == plen;
			p->pinned[p->n_pinned++] = e;
			data = cached_chunk_data(e) + in;
		}
		p->iov[p->n_iov++] = (struct iovec){.iov_base = (void *)data, .iov_len = take};
		off += take;
		len -= take;
	}
	return 0;
}

static void read_snapshot_file(fuse_req_t req, Mount *m, Handle *h, size_t size, uint64_t off)
{
	uint64_t fsize = h->node->size;
	size_t n = off >= fsize ? 0 : (size_t)MIN((uint64_t)size, fsize - off);
	Pieces p;
	int r;

	if (n == 0) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	/*
	 * First: the prefetch threads decode what comes next while this thread
	 * serves this. (Queued after the reply instead, the prefetch fell behind
	 * the reader: request threads loaded a tenth of the chunks themselves and
	 * the prefetch threads loaded them again once dropped.)
	 */
	bool streaming = read_streaming(&h->stream, off, n);
	if (streaming)
		prefetch_after(m, &h->stream, h->node, &h->chunks, off, n);
	r = pin_chunks(m, h, off, n, streaming, &p);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_iov(req, p.iov, (int)p.n_iov);
	pieces_put(m, &p);
}

static void op_read(fuse_req_t req, fuse_ino_t ino _unused_, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	Mount *m = mount_of(req);
	Handle *h = (Handle *)(uintptr_t)fi->fh;
	_cleanup_free_ uint8_t *buf = NULL;
	ssize_t n;

	size = MIN(size, (size_t)MAX_IO);
	if (!h->cf) {
		read_snapshot_file(req, m, h, size, (uint64_t)off);
		return;
	}
	buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = clone_read(h->cf, (uint64_t)off, size, buf);
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		fuse_reply_buf(req, (const char *)buf, (size_t)n);
}

static void op_release(fuse_req_t req, fuse_ino_t ino _unused_, struct fuse_file_info *fi)
{
	Handle *h = (Handle *)(uintptr_t)fi->fh;
	int r = 0;
	mount_handle_untrack(mount_of(req), h);
	if (h->cf)
		r = clone_release(h->cf);
	if (h->have_chunks)
		snaptree_chunks_put(h->tree, h->node);
	if (h->tree)
		mount_snap_tree_put(h->snap);
	mount_snap_put(h->snap);
	free(h);
	fuse_reply_err(req, r < 0 ? -r : 0);
}

static void op_lseek(fuse_req_t req, fuse_ino_t ino _unused_, off_t off, int whence,
		     struct fuse_file_info *fi)
{
	Mount *m = mount_of(req);
	Handle *h = (Handle *)(uintptr_t)fi->fh;
	if (h->cf) {
		int64_t r = clone_lseek(h->cf, off, whence);
		if (r < 0)
			fuse_reply_err(req, (int)-r);
		else
			fuse_reply_lseek(req, (off_t)r);
		return;
	}
	uint64_t size = h->node->size, cs = m->chunk_size;
	if (whence != SEEK_DATA && whence != SEEK_HOLE) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (off < 0 || (uint64_t)off >= size) {
		fuse_reply_err(req, ENXIO);
		return;
	}
	uint64_t k = (uint64_t)off / cs;
	bool want_hole = whence == SEEK_HOLE;
	while (k < h->chunks.n && chunk_id_is_hole(&h->chunks.ids[k]) != want_hole)
		k++;
	if (k >= h->chunks.n) {
		/* no data after off: ENXIO; no hole: the end of the file is one */
		if (!want_hole)
			fuse_reply_err(req, ENXIO);
		else
			fuse_reply_lseek(req, (off_t)size);
		return;
	}
	fuse_reply_lseek(req, (off_t)MAX((uint64_t)off, k * cs));
}

void mount_read_ops(struct fuse_lowlevel_ops *ops)
{
	ops->open = op_open;
	ops->read = op_read;
	ops->release = op_release;
	ops->lseek = op_lseek;
}
