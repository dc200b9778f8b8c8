/*
 * The backup pipeline. Threads and what they own:
 *
 *   producer (caller)  cuts files into chunk jobs       -> job queue
 *   workers (-j)       zero test, SHA-256, dedup lookup,
 *                      zstd for new chunks              -> writer queue
 *   writer (1)         appends new chunks to the open pack, resolves each
 *                      file's chunk list, inserts content and file rows
 *   flusher (1)        writes a full pack (durable), then records its chunks
 *
 * Backpressure: a chunk travels in one of pool.n messages (each with its
 * buffers), taken from the free queue by the producer and given back by the
 * writer, so at most pool.n chunks are read ahead of the writer; the job
 * queue holds them all, so pushing a job never waits. The writer queue also
 * carries the producers' other messages (entries, holes, reused ids), at
 * most WRITER_QUEUE_EXTRA of them beyond the chunks.
 *
 * Lock order: the queues' locks, fl.lock and files.lock are
 * leaves; no thread holds two of them at once, nor waits for the catalog
 * while holding one. main_lock (producers' use of the repository's own
 * catalog connection) may wait for the catalog; the writer never takes it. The writer commits its catalog
 * transaction before it waits on the flusher, so the flusher's transaction
 * can never wait on a writer that waits on it.
 *
 * A chunk is recorded in the catalog only after its pack is durable; the
 * snapshot row turns from "running" to "ok" only after every pack and row is
 * committed.
 */
#include "store/snapwriter.h"
#include "store/treedigest.h"

#include "common/crc32c.h"
#include "common/log.h"
#include "common/util.h"
#include "common/workqueue.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>

typedef enum { MSG_CHUNK, MSG_HOLES, MSG_IDS, MSG_FILE_END, MSG_ENTRY } MsgKind;
typedef enum { CHUNK_NEW, CHUNK_REUSED, CHUNK_HOLE } ChunkState;

typedef struct Msg {
	MsgKind kind;
	SnapFile *file;
	uint64_t idx;   /* CHUNK: chunk index; HOLES, IDS: first index */
	uint64_t count; /* HOLES, IDS: number of chunks; FILE_END: total chunks */
	ChunkId *ids;   /* IDS: the stored chunks' ids */
	/* MSG_CHUNK (pooled) */
	uint8_t *buf, *ebuf;
	size_t len, elen;
	ChunkEncoding enc;
	ChunkId id;
	uint32_t crc; /* of the plain bytes, for the mount's fast check */
	uint8_t fh[CHUNK_FH_LEN]; /* chunk_fh of them, for restore --delta */
	ChunkState state;
	/* MSG_ENTRY */
	FileRow row;
	char *name, *target;
} Msg;

struct SnapFile {
	/* set by the producer before the file is handed over */
	uint64_t ino, parent;
	char *name;
	uint32_t mode, uid, gid;
	int64_t mtime_ns;
	uint64_t size;
	uint64_t n_submitted;
	Msg *cur; /* chunk being filled by the producer */
	/* writer-owned */
	ChunkId *ids;
	size_t cap_ids;
	uint64_t n_resolved, n_total;
	bool ended;
	/* registry of unfinished files, files.lock: freed at teardown if never completed */
	struct SnapFile *reg_prev, *reg_next;
};

/* messages other than chunks the writer queue holds at most (4096 entries: ~1 MiB) */
#define WRITER_QUEUE_EXTRA 4096

/*
 * A pack is full at pack_size bytes, or at one chunk per PACK_MIN_AVG_CHUNK
 * bytes of it: chunks that compress to almost nothing (pages that are mostly
 * empty) would otherwise put millions in one pack, and the pack's entry table
 * (~88 bytes a chunk in memory, 52 in the pack) and its one catalog
 * transaction grow with them (bench/scale's synthetic chunks of ~40 bytes:
 * 1.5 million in one 64 MiB pack, a 79 MB entry table).
 */
#define PACK_MIN_AVG_CHUNK 1024

struct SnapWriter {
	Repo *repo;
	RepoSession *session;
	SnapshotInfo info;
	uint64_t chunk_size;
	uint64_t pack_size;
	uint64_t pack_max_chunks; /* pack_size / PACK_MIN_AVG_CHUNK */
	int n_workers;
	Progress *progress;
	bool committed;

	_Atomic int error; /* first error of any thread; once set, everyone stops */

	/* chunk messages: all of them, and the free ones (Msg *; aborted on the first error) */
	struct {
		WorkQueue *free;
		Msg *all;
		size_t n;
	} pool;
	WorkQueue *jobs; /* Msg *: producer -> workers */
	WorkQueue *wq;   /* Msg *: workers, producer -> writer */

	/* pack hand-over: fl.lock guards pending, busy, done */
	struct {
		pthread_mutex_t lock;
		pthread_cond_t cond;
		PackWriter *pending; /* full pack waiting for the flusher */
		PackWriter *busy;    /* pack the flusher is writing */
		bool done;
	} fl;
	/* three buffers: one filling, one waiting, one being written (fsync stalls) */
	PackWriter *packs[3];
	PackWriter *open_pack; /* writer-owned */

	pthread_mutex_t main_lock; /* producers' use of repo_catalog() */
	/* files begun and not yet completed: files.lock guards the list */
	struct {
		pthread_mutex_t lock;
		SnapFile *head;
	} files;

	pthread_t *workers;
	int n_started_workers;
	pthread_t writer_thread, flusher_thread;
	bool writer_started, flusher_started;

	/* producer counters: atomics, as files may be produced by several threads */
	_Atomic uint64_t n_bad_blocks;
	_Atomic uint64_t n_warnings; /* snapwriter_add_warning */
	_Atomic uint64_t next_ino;
	_Atomic uint64_t n_files, logical_bytes, reused_bytes;
	/* writer counters */
	uint64_t new_chunks, reused_chunks, hole_chunks;
	/* flusher counter */
	uint64_t stored_bytes;
};

static void set_error(SnapWriter *w, int r)
{
	int expected = 0;
	if (r < 0 && atomic_compare_exchange_strong(&w->error, &expected, r)) {
		/* wake everyone so they can notice */
		if (w->pool.free)
			workqueue_abort(w->pool.free, r);
		pthread_mutex_lock(&w->fl.lock);
		pthread_cond_broadcast(&w->fl.cond);
		pthread_mutex_unlock(&w->fl.lock);
	}
}

static int get_error(SnapWriter *w) { return atomic_load(&w->error); }

static void msg_free(SnapWriter *w, Msg *m);

/*
 * The job and writer queues are never aborted: after an error the workers
 * still hand every chunk on to the writer, which drops the messages. They are
 * closed once the producers are done: a message after that (a caller still
 * adding after commit or free) is dropped and fails the snapshot.
 */
static void queue_push(SnapWriter *w, WorkQueue *q, Msg *m)
{
	int r = workqueue_push(q, &m);
	if (r < 0) {
		set_error(w, r);
		msg_free(w, m);
	}
}

/* Blocks until a message arrives; NULL once the queue is closed and empty. */
static Msg *queue_pop(WorkQueue *q)
{
	Msg *m;
	return workqueue_pop(q, &m) == 0 ? m : NULL;
}

/* Waits for a free chunk message; NULL once there is none and an error stops the backup. */
static Msg *pool_get(SnapWriter *w)
{
	Msg *m;
	if (workqueue_pop(w->pool.free, &m) < 0)
		return NULL;
	m->kind = MSG_CHUNK;
	m->len = 0;
	return m;
}

static void pool_put(SnapWriter *w, Msg *m)
{
	/* fails only after an error: then it stays out, freed with pool.all */
	(void)workqueue_push(w->pool.free, &m);
}

static void msg_free(SnapWriter *w, Msg *m)
{
	if (m->kind == MSG_CHUNK) {
		pool_put(w, m);
		return;
	}
	free(m->name);
	free(m->target);
	free(m->ids);
	free(m);
}

static void snapfile_register(SnapWriter *w, SnapFile *f)
{
	pthread_mutex_lock(&w->files.lock);
	f->reg_next = w->files.head;
	if (f->reg_next)
		f->reg_next->reg_prev = f;
	w->files.head = f;
	pthread_mutex_unlock(&w->files.lock);
}

static void snapfile_free(SnapWriter *w, SnapFile *f)
{
	if (!f)
		return;
	pthread_mutex_lock(&w->files.lock);
	if (f->reg_prev)
		f->reg_prev->reg_next = f->reg_next;
	else
		w->files.head = f->reg_next;
	if (f->reg_next)
		f->reg_next->reg_prev = f->reg_prev;
	pthread_mutex_unlock(&w->files.lock);
	free(f->name);
	free(f->ids);
	free(f);
}

/* ---- workers ---- */

static int worker_process(Catalog *cat, ChunkCodec *codec, Msg *m)
{
	int r;
	if (buf_is_zero(m->buf, m->len)) {
		m->state = CHUNK_HOLE;
		return 0;
	}
	chunk_codec_hash(codec, m->buf, m->len, &m->id);
	r = catalog_chunk_exists(cat, &m->id);
	if (r < 0)
		return r;
	if (r == 1) {
		m->state = CHUNK_REUSED;
		return 0;
	}
	m->state = CHUNK_NEW;
	m->crc = chunk_crc(&m->id, m->buf, m->len);
	chunk_fh(&m->id, m->buf, m->len, m->fh);
	return chunk_encode(codec, &m->id, m->buf, m->len, m->ebuf, &m->elen, &m->enc);
}

static void *worker_main(void *arg)
{
	SnapWriter *w = arg;
	thread_name("backup-work");
	Catalog *cat = NULL;
	ChunkCodec *codec = NULL;
	Msg *m;
	int r = repo_catalog_open(w->repo, &cat);
	if (r == 0)
		r = repo_codec_new(w->repo, &codec);
	set_error(w, r);
	while ((m = queue_pop(w->jobs))) {
		if (!get_error(w)) {
			r = worker_process(cat, codec, m);
			set_error(w, r);
		}
		queue_push(w, w->wq, m); /* the writer resolves or releases it */
	}
	chunk_codec_free(codec);
	catalog_free(cat);
	return NULL;
}

/* ---- flusher ---- */

static int flush_pack(SnapWriter *w, Catalog *cat, PackWriter *p)
{
	char name[64];
	const void *buf;
	size_t len;
	int64_t pack_id;
	int r = pack_name_new(name, sizeof(name));
	if (r == 0)
		r = catalog_pack_add_pending(cat, name, repo_session_id(w->session), &pack_id);
	if (r == 0)
		r = pack_writer_finish(p, &buf, &len);
	if (r == 0)
		r = store_put(repo_backend(w->repo), name, buf, len);
	if (r == 0)
		r = catalog_pack_record(cat, pack_id, len, pack_writer_entries(p),
					pack_writer_count(p));
	if (r == 0)
		w->stored_bytes += len;
	return r;
}

static void *flusher_main(void *arg)
{
	SnapWriter *w = arg;
	thread_name("backup-flush");
	Catalog *cat = NULL;
	int r = repo_catalog_open(w->repo, &cat);
	set_error(w, r);

	pthread_mutex_lock(&w->fl.lock);
	for (;;) {
		while (!w->fl.pending && !w->fl.done)
			pthread_cond_wait(&w->fl.cond, &w->fl.lock);
		if (!w->fl.pending)
			break;
		w->fl.busy = w->fl.pending;
		w->fl.pending = NULL;
		pthread_mutex_unlock(&w->fl.lock);

		if (!get_error(w)) {
			r = flush_pack(w, cat, w->fl.busy);
			set_error(w, r);
		}

		pthread_mutex_lock(&w->fl.lock);
		pack_writer_reset(w->fl.busy);
		w->fl.busy = NULL;
		pthread_cond_broadcast(&w->fl.cond);
	}
	pthread_mutex_unlock(&w->fl.lock);
	catalog_free(cat);
	return NULL;
}

/* ---- writer ---- */

typedef struct WriterState {
	Catalog *cat;
	bool in_txn;
	unsigned rows_in_txn;
	int64_t txn_start;
} WriterState;

static int writer_txn_commit(WriterState *ws)
{
	int r = 0;
	if (ws->in_txn) {
		r = catalog_commit(ws->cat);
		if (r < 0)
			catalog_rollback(ws->cat);
		ws->in_txn = false;
		ws->rows_in_txn = 0;
	}
	return r;
}

static int writer_txn_ensure(WriterState *ws)
{
	int r = 0;
	if (!ws->in_txn) {
		r = catalog_begin(ws->cat);
		ws->in_txn = r == 0;
		ws->txn_start = mono_ns();
	}
	return r;
}

/* Hand the open pack to the flusher and take the free buffer. */
static int writer_rotate_pack(SnapWriter *w, WriterState *ws)
{
	int r = writer_txn_commit(ws);
	if (r < 0)
		return r;
	pthread_mutex_lock(&w->fl.lock);
	while (w->fl.pending && !get_error(w))
		pthread_cond_wait(&w->fl.cond, &w->fl.lock);
	if (!get_error(w)) {
		PackWriter *next = NULL;
		w->fl.pending = w->open_pack;
		for (size_t i = 0; i < ELEMENTSOF(w->packs); i++)
			if (w->packs[i] != w->fl.pending && w->packs[i] != w->fl.busy)
				next = w->packs[i];
		PGBAKFS_CHECK(next != NULL);
		w->open_pack = next;
		pthread_cond_broadcast(&w->fl.cond);
	}
	pthread_mutex_unlock(&w->fl.lock);
	return get_error(w);
}

/* Is the chunk already stored, or on its way into a pack? */
static int writer_chunk_known(SnapWriter *w, WriterState *ws, const ChunkId *id)
{
	bool in_flight;
	if (pack_writer_contains(w->open_pack, id))
		return 1;
	pthread_mutex_lock(&w->fl.lock);
	in_flight = (w->fl.pending && pack_writer_contains(w->fl.pending, id)) ||
		    (w->fl.busy && pack_writer_contains(w->fl.busy, id));
	pthread_mutex_unlock(&w->fl.lock);
	if (in_flight)
		return 1;
	/* the flusher records before it releases the buffer: checked after, never missed */
	return catalog_chunk_exists(ws->cat, id);
}

static int file_ids_reserve(SnapFile *f, uint64_t n)
{
	if (n <= f->cap_ids)
		return 0;
	size_t cap = f->cap_ids ? f->cap_ids : 16;
	while (cap < n)
		cap *= 2;
	ChunkId *v = realloc(f->ids, cap * sizeof(*v));
	if (!v)
		return -ENOMEM;
	f->ids = v;
	f->cap_ids = cap;
	return 0;
}

static int writer_file_complete(SnapWriter *w, WriterState *ws, SnapFile *f)
{
	FileRow row = {
		.ino = f->ino, .parent = f->parent, .name = f->name, .mode = f->mode,
		.uid = f->uid, .gid = f->gid, .mtime_ns = f->mtime_ns, .size = f->size,
	};
	int r = writer_txn_ensure(ws);
	/* content and file row in one transaction: gc never sees the content unreferenced */
	if (r == 0 && f->n_total > 0)
		r = catalog_content_put(ws->cat, f->ids, f->n_total, &row.content);
	if (r == 0)
		r = catalog_file_add(ws->cat, w->info.rowid, &row);
	ws->rows_in_txn++;
	snapfile_free(w, f);
	return r;
}

static int writer_maybe_complete(SnapWriter *w, WriterState *ws, SnapFile *f)
{
	if (f->ended && f->n_resolved == f->n_total)
		return writer_file_complete(w, ws, f);
	return 0;
}

static int writer_handle_chunk(SnapWriter *w, WriterState *ws, Msg *m)
{
	SnapFile *f = m->file;
	int r = file_ids_reserve(f, m->idx + 1);
	if (r < 0)
		return r;
	if (m->state == CHUNK_NEW) {
		r = writer_chunk_known(w, ws, &m->id);
		if (r < 0)
			return r;
		if (r == 0) {
			r = pack_writer_add_crc(w->open_pack, &m->id, m->enc, m->ebuf, m->elen, m->len,
						m->crc, m->fh);
			if (r < 0)
				return r;
			w->new_chunks++;
			if (pack_writer_size(w->open_pack) >= w->pack_size ||
			    pack_writer_count(w->open_pack) >= w->pack_max_chunks) {
				r = writer_rotate_pack(w, ws);
				if (r < 0)
					return r;
			}
		} else {
			w->reused_chunks++;
		}
	} else if (m->state == CHUNK_REUSED) {
		w->reused_chunks++;
	} else {
		w->hole_chunks++;
	}
	f->ids[m->idx] = m->state == CHUNK_HOLE ? chunk_id_hole : m->id;
	f->n_resolved++;
	return writer_maybe_complete(w, ws, f);
}

static int writer_handle(SnapWriter *w, WriterState *ws, Msg *m)
{
	SnapFile *f = m->file;
	int r;
	switch (m->kind) {
	case MSG_CHUNK:
		return writer_handle_chunk(w, ws, m);
	case MSG_HOLES:
		r = file_ids_reserve(f, m->idx + m->count);
		if (r < 0)
			return r;
		for (uint64_t i = 0; i < m->count; i++)
			f->ids[m->idx + i] = chunk_id_hole;
		f->n_resolved += m->count;
		w->hole_chunks += m->count;
		return writer_maybe_complete(w, ws, f);
	case MSG_IDS:
		r = file_ids_reserve(f, m->idx + m->count);
		if (r < 0)
			return r;
		for (uint64_t i = 0; i < m->count; i++) {
			bool hole = chunk_id_is_hole(&m->ids[i]);
			f->ids[m->idx + i] = m->ids[i];
			if (hole)
				w->hole_chunks++;
			else
				w->reused_chunks++;
		}
		f->n_resolved += m->count;
		return writer_maybe_complete(w, ws, f);
	case MSG_FILE_END:
		f->ended = true;
		f->n_total = m->count;
		r = file_ids_reserve(f, f->n_total);
		if (r < 0)
			return r;
		return writer_maybe_complete(w, ws, f);
	case MSG_ENTRY:
		r = writer_txn_ensure(ws);
		if (r == 0)
			r = catalog_file_add(ws->cat, w->info.rowid, &m->row);
		ws->rows_in_txn++;
		return r;
	}
	return -EINVAL;
}

static void *writer_main(void *arg)
{
	SnapWriter *w = arg;
	thread_name("backup-write");
	WriterState ws = {0};
	Msg *m;
	int r = repo_catalog_open(w->repo, &ws.cat);
	set_error(w, r);

	while ((m = queue_pop(w->wq))) {
		if (!get_error(w)) {
			r = writer_handle(w, &ws, m);
			set_error(w, r);
			/* keep transactions short: gc and other backups share the catalog */
			if (ws.in_txn && (ws.rows_in_txn >= 2000 || workqueue_count(w->wq) == 0 ||
					  mono_ns() - ws.txn_start > 20 * 1000000))
				set_error(w, writer_txn_commit(&ws));
		}
		msg_free(w, m);
	}
	if (!get_error(w) && pack_writer_count(w->open_pack) > 0)
		set_error(w, writer_rotate_pack(w, &ws));
	if (!get_error(w))
		set_error(w, writer_txn_commit(&ws));
	catalog_rollback(ws.cat);
	catalog_free(ws.cat);
	return NULL;
}

/* ---- setup and teardown ---- */

static int pool_init(SnapWriter *w)
{
	size_t ebound = chunk_encode_bound(w->chunk_size);
	int r;
	w->pool.n = (size_t)w->n_workers * 8 + 16;
	r = workqueue_new(w->pool.n, sizeof(Msg *), &w->pool.free);
	if (r == 0)
		r = workqueue_new(w->pool.n, sizeof(Msg *), &w->jobs);
	if (r == 0)
		r = workqueue_new(w->pool.n + WRITER_QUEUE_EXTRA, sizeof(Msg *), &w->wq);
	if (r < 0)
		return r;
	w->pool.all = calloc(w->pool.n, sizeof(Msg));
	if (!w->pool.all)
		return -ENOMEM;
	for (size_t i = 0; i < w->pool.n; i++) {
		Msg *m = &w->pool.all[i];
		m->kind = MSG_CHUNK;
		m->buf = malloc(w->chunk_size);
		m->ebuf = malloc(ebound);
		if (!m->buf || !m->ebuf)
			return -ENOMEM;
		pool_put(w, m);
	}
	return 0;
}

static int start_threads(SnapWriter *w)
{
	w->workers = calloc((size_t)w->n_workers, sizeof(pthread_t));
	if (!w->workers)
		return -ENOMEM;
	for (int i = 0; i < w->n_workers; i++) {
		if (pthread_create(&w->workers[i], NULL, worker_main, w) != 0)
			return -EAGAIN;
		w->n_started_workers++;
	}
	if (pthread_create(&w->writer_thread, NULL, writer_main, w) != 0)
		return -EAGAIN;
	w->writer_started = true;
	if (pthread_create(&w->flusher_thread, NULL, flusher_main, w) != 0)
		return -EAGAIN;
	w->flusher_started = true;
	return 0;
}

static char *strdup_or_null(const char *s) { return s ? strdup(s) : NULL; }

int snapwriter_new(Repo *repo, const SnapWriterOptions *o, SnapWriter **ret)
{
	SnapWriter *w = calloc(1, sizeof(*w));
	const RepoConfig *cfg = repo_config(repo);
	int r;

	if (!w)
		return -ENOMEM;
	w->repo = repo;
	w->chunk_size = cfg->chunk_size;
	w->pack_size = cfg->pack_size;
	w->pack_max_chunks = MAX(1, cfg->pack_size / PACK_MIN_AVG_CHUNK);
	w->n_workers = o->jobs > 0 ? o->jobs : cpu_count();
	w->progress = o->progress;
	atomic_init(&w->next_ino, 1);
	atomic_init(&w->n_files, 0);
	atomic_init(&w->logical_bytes, 0);
	atomic_init(&w->reused_bytes, 0);
	atomic_init(&w->n_bad_blocks, 0);
	atomic_init(&w->n_warnings, 0);
	atomic_init(&w->error, 0);
	pthread_mutex_init(&w->fl.lock, NULL);
	pthread_cond_init(&w->fl.cond, NULL);
	pthread_mutex_init(&w->files.lock, NULL);
	pthread_mutex_init(&w->main_lock, NULL);

	w->info.instance = strdup(o->instance ? o->instance : "main");
	w->info.type = strdup(o->type ? o->type : "full");
	w->info.parent = strdup_or_null(o->parent);
	w->info.label = strdup_or_null(o->label);
	w->info.note = strdup_or_null(o->note);
	w->info.source = strdup_or_null(o->source);
	w->info.start_lsn = strdup_or_null(o->start_lsn);
	w->info.system_id = strdup_or_null(o->system_id);
	w->info.timeline = o->timeline;
	w->info.pg_version = o->pg_version;
	w->info.start_time = now_ns();
	r = (!w->info.instance || !w->info.type) ? -ENOMEM : 0;
	if (r == 0)
		r = pool_init(w);
	for (size_t i = 0; r == 0 && i < ELEMENTSOF(w->packs); i++)
		r = pack_writer_new(w->pack_size + chunk_encode_bound(w->chunk_size), &w->packs[i]);
	w->open_pack = w->packs[0];
	/* register first: from here on gc keeps every chunk we may find and reuse */
	if (r == 0)
		r = repo_session_begin(repo, "backup", &w->session);
	if (r == 0) {
		w->info.session = strdup(repo_session_id(w->session));
		r = w->info.session ? catalog_snapshot_begin(repo_catalog(repo), &w->info) : -ENOMEM;
	}
	if (r == 0)
		r = start_threads(w);
	if (r < 0) {
		snapwriter_free(w);
		return r;
	}
	*ret = w;
	return 0;
}

/* Stop all threads; with abort, nothing more is written. */
static void pipeline_stop(SnapWriter *w)
{
	if (w->jobs)
		workqueue_close(w->jobs);
	for (int i = 0; i < w->n_started_workers; i++)
		pthread_join(w->workers[i], NULL);
	w->n_started_workers = 0;
	if (w->wq)
		workqueue_close(w->wq);
	if (w->writer_started)
		pthread_join(w->writer_thread, NULL);
	w->writer_started = false;
	pthread_mutex_lock(&w->fl.lock);
	w->fl.done = true;
	pthread_cond_broadcast(&w->fl.cond);
	pthread_mutex_unlock(&w->fl.lock);
	if (w->flusher_started)
		pthread_join(w->flusher_thread, NULL);
	w->flusher_started = false;
}

SnapWriter *snapwriter_free(SnapWriter *w)
{
	if (!w)
		return NULL;
	if (!w->committed)
		set_error(w, -ECANCELED);
	pipeline_stop(w);
	if (!w->committed && w->info.rowid) {
		/* best effort; if the catalog cannot be written, gc reaps the dead session */
		if (catalog_snapshot_delete(repo_catalog(w->repo), w->info.rowid) < 0)
			log_debug("could not remove partial snapshot \"%s\"", w->info.name);
	}
	repo_session_end(w->repo, w->session);
	while (w->files.head)
		snapfile_free(w, w->files.head);
	pthread_mutex_destroy(&w->files.lock);
	pthread_mutex_destroy(&w->main_lock);
	for (size_t i = 0; w->pool.all && i < w->pool.n; i++) {
		free(w->pool.all[i].buf);
		free(w->pool.all[i].ebuf);
	}
	free(w->pool.all);
	free(w->workers);
	for (size_t i = 0; i < ELEMENTSOF(w->packs); i++)
		pack_writer_free(w->packs[i]);
	pthread_mutex_destroy(&w->fl.lock);
	pthread_cond_destroy(&w->fl.cond);
	workqueue_free(w->pool.free);
	workqueue_free(w->jobs);
	workqueue_free(w->wq);
	snapshot_info_clear(&w->info);
	free(w);
	return NULL;
}

/* ---- producer API ---- */

static Msg *entry_msg_new(const SnapEntry *e, uint64_t ino, const char *target)
{
	Msg *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->kind = MSG_ENTRY;
	m->name = strdup(e->name ? e->name : "");
	m->target = target ? strdup(target) : NULL;
	if (!m->name || (target && !m->target)) {
		free(m->name);
		free(m->target);
		free(m);
		return NULL;
	}
	m->row = (FileRow){.ino = ino, .parent = e->parent ? e->parent : ino, .name = m->name,
			   .mode = e->mode, .uid = e->uid, .gid = e->gid, .mtime_ns = e->mtime_ns,
			   .size = target ? strlen(target) : 0, .target = m->target};
	return m;
}

static int add_entry(SnapWriter *w, const SnapEntry *e, const char *target, uint64_t *ret_ino)
{
	uint64_t ino;
	Msg *m;
	int r = get_error(w);
	if (r < 0)
		return r;
	bool first = atomic_load(&w->next_ino) == 1;
	/* the root first; later a parentless directory is an extra root, named by its path */
	if (first != (e->parent == 0) && !(e->parent == 0 && S_ISDIR(e->mode) && e->name &&
					    e->name[0] == '/' && !first))
		return -EINVAL;
	if (first && e->name && *e->name)
		return -EINVAL;
	ino = atomic_fetch_add(&w->next_ino, 1);
	m = entry_msg_new(e, ino, target);
	if (!m)
		return -ENOMEM;
	if (ret_ino)
		*ret_ino = ino;
	atomic_fetch_add(&w->n_files, 1);
	queue_push(w, w->wq, m);
	return 0;
}

int snapwriter_add_file_reuse(SnapWriter *w, const SnapEntry *e, uint64_t size, int64_t content)
{
	Msg *m;
	int r = get_error(w);
	if (r < 0)
		return r;
	if (!S_ISREG(e->mode) || e->parent == 0)
		return -EINVAL;
	m = entry_msg_new(e, atomic_fetch_add(&w->next_ino, 1), NULL);
	if (!m)
		return -ENOMEM;
	m->row.size = size;
	m->row.content = content;
	atomic_fetch_add(&w->n_files, 1);
	atomic_fetch_add(&w->logical_bytes, size);
	atomic_fetch_add(&w->reused_bytes, size);
	progress_add(w->progress, size);
	queue_push(w, w->wq, m);
	return 0;
}

int snapwriter_add_dir(SnapWriter *w, const SnapEntry *e, uint64_t *ret_ino)
{
	if (!S_ISDIR(e->mode))
		return -EINVAL;
	return add_entry(w, e, NULL, ret_ino);
}

int snapwriter_add_symlink(SnapWriter *w, const SnapEntry *e, const char *target)
{
	if (!S_ISLNK(e->mode) || !target)
		return -EINVAL;
	return add_entry(w, e, target, NULL);
}

int snapwriter_file_begin(SnapWriter *w, const SnapEntry *e, SnapFile **ret)
{
	SnapFile *f;
	int r = get_error(w);
	if (r < 0)
		return r;
	if (!S_ISREG(e->mode) || e->parent == 0)
		return -EINVAL;
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->name = strdup(e->name);
	if (!f->name) {
		free(f);
		return -ENOMEM;
	}
	f->ino = atomic_fetch_add(&w->next_ino, 1);
	f->parent = e->parent;
	f->mode = e->mode;
	f->uid = e->uid;
	f->gid = e->gid;
	f->mtime_ns = e->mtime_ns;
	atomic_fetch_add(&w->n_files, 1);
	snapfile_register(w, f);
	*ret = f;
	return 0;
}

static void submit_cur(SnapWriter *w, SnapFile *f)
{
	queue_push(w, w->jobs, f->cur);
	f->cur = NULL;
}

int snapwriter_file_write(SnapWriter *w, SnapFile *f, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	while (len > 0) {
		int r = get_error(w);
		if (r < 0)
			return r;
		if (!f->cur) {
			f->cur = pool_get(w);
			if (!f->cur)
				return get_error(w);
			f->cur->file = f;
			f->cur->idx = f->n_submitted++;
		}
		size_t n = MIN(len, w->chunk_size - f->cur->len);
		memcpy(f->cur->buf + f->cur->len, p, n);
		f->cur->len += n;
		f->size += n;
		atomic_fetch_add(&w->logical_bytes, n);
		progress_add(w->progress, n);
		p += n;
		len -= n;
		if (f->cur->len == w->chunk_size)
			submit_cur(w, f);
	}
	return 0;
}

int snapwriter_file_write_zeros(SnapWriter *w, SnapFile *f, uint64_t len)
{
	static const uint8_t zeros[4096];
	uint64_t whole;
	int r;

	/* finish a partly filled chunk with real zeros */
	while (len > 0 && f->cur) {
		size_t n = (size_t)MIN(len, MIN(sizeof(zeros), w->chunk_size - f->cur->len));
		r = snapwriter_file_write(w, f, zeros, n);
		if (r < 0)
			return r;
		len -= n;
	}
	whole = len / w->chunk_size;
	if (whole > 0) {
		Msg *m = calloc(1, sizeof(*m));
		if (!m)
			return -ENOMEM;
		m->kind = MSG_HOLES;
		m->file = f;
		m->idx = f->n_submitted;
		m->count = whole;
		f->n_submitted += whole;
		f->size += whole * w->chunk_size;
		atomic_fetch_add(&w->logical_bytes, whole * w->chunk_size);
		progress_add(w->progress, whole * w->chunk_size);
		len -= whole * w->chunk_size;
		queue_push(w, w->wq, m);
	}
	while (len > 0) {
		size_t n = (size_t)MIN(len, sizeof(zeros));
		r = snapwriter_file_write(w, f, zeros, n);
		if (r < 0)
			return r;
		len -= n;
	}
	return 0;
}

int snapwriter_file_write_ids(SnapWriter *w, SnapFile *f, const ChunkId *ids, uint64_t n,
			      uint64_t len)
{
	Msg *m;
	int r = get_error(w);
	if (r < 0)
		return r;
	/* whole chunks at a chunk boundary; only the last may be short */
	if (f->cur || n == 0 || len > n * w->chunk_size || len <= (n - 1) * w->chunk_size)
		return -EINVAL;
	m = calloc(1, sizeof(*m));
	if (!m || !(m->ids = malloc(n * sizeof(ChunkId)))) {
		free(m);
		return -ENOMEM;
	}
	memcpy(m->ids, ids, n * sizeof(ChunkId));
	m->kind = MSG_IDS;
	m->file = f;
	m->idx = f->n_submitted;
	m->count = n;
	f->n_submitted += n;
	f->size += len;
	atomic_fetch_add(&w->logical_bytes, len);
	atomic_fetch_add(&w->reused_bytes, len);
	progress_add(w->progress, len);
	queue_push(w, w->wq, m);
	return 0;
}

int snapwriter_file_end(SnapWriter *w, SnapFile *f)
{
	Msg *m;
	int r = get_error(w);
	if (f->cur) {
		if (r < 0) {
			pool_put(w, f->cur);
			f->cur = NULL;
		} else {
			submit_cur(w, f);
		}
	}
	m = calloc(1, sizeof(*m));
	if (!m) {
		set_error(w, -ENOMEM); /* f stays registered and is freed at teardown */
		return -ENOMEM;
	}
	m->kind = MSG_FILE_END;
	m->file = f;
	m->count = f->n_submitted;
	queue_push(w, w->wq, m);
	return r;
}

int snapwriter_commit(SnapWriter *w, SnapWriterResult *ret)
{
	int r = get_error(w);
	if (r < 0)
		return r;
	pipeline_stop(w);
	r = get_error(w);
	if (r < 0)
		return r;
	w->info.stop_time = now_ns();
	w->info.logical_bytes = atomic_load(&w->logical_bytes);
	w->info.stored_bytes = w->stored_bytes;
	w->info.n_files = atomic_load(&w->n_files);
	free(w->info.status);
	w->info.status = strdup(w->n_bad_blocks || w->n_warnings ? SNAP_STATUS_WARNING : SNAP_STATUS_OK);
	if (!w->info.status)
		return -ENOMEM;
	/* every file row is in: from format 2 on its directories are shared with other snapshots */
	if (catalog_format(repo_catalog(w->repo)) >= 2) {
		r = catalog_tree_share(repo_catalog(w->repo), w->info.rowid);
		if (r < 0)
			return r;
	}
	/* what the snapshot is from now on, for check, restore and repair */
	r = tree_digest_compute(repo_catalog(w->repo), w->info.rowid, &w->info.tree_digest);
	if (r < 0)
		return r;
	w->info.has_tree_digest = true;
	r = catalog_snapshot_finish(repo_catalog(w->repo), &w->info);
	if (r < 0)
		return r;
	w->committed = true;
	if (ret) {
		*ret = (SnapWriterResult){
			.n_files = atomic_load(&w->n_files),
			.logical_bytes = atomic_load(&w->logical_bytes),
			.reused_bytes = atomic_load(&w->reused_bytes),
			.stored_bytes = w->stored_bytes, .new_chunks = w->new_chunks,
			.reused_chunks = w->reused_chunks, .hole_chunks = w->hole_chunks,
			.bad_blocks = atomic_load(&w->n_bad_blocks),
		};
		snprintf(ret->name, sizeof(ret->name), "%s", w->info.name);
		snprintf(ret->status, sizeof(ret->status), "%s", w->info.status);
	}
	return 0;
}

int snapwriter_add_bad_block(SnapWriter *w, const char *path, uint64_t block)
{
	int r;
	/* the repository's own connection: one producer thread at a time uses it */
	pthread_mutex_lock(&w->main_lock);
	r = catalog_bad_block_add(repo_catalog(w->repo), w->info.rowid, path, block);
	pthread_mutex_unlock(&w->main_lock);
	if (r == 0)
		atomic_fetch_add(&w->n_bad_blocks, 1);
	return r;
}

int snapwriter_add_link(SnapWriter *w, const char *path, const char *target)
{
	int r;
	pthread_mutex_lock(&w->main_lock);
	r = catalog_link_add(repo_catalog(w->repo), w->info.rowid, path, target);
	pthread_mutex_unlock(&w->main_lock);
	return r;
}

int snapwriter_set_stop_lsn(SnapWriter *w, const char *lsn)
{
	char *v = strdup(lsn);
	if (!v)
		return -ENOMEM;
	free(w->info.stop_lsn);
	w->info.stop_lsn = v;
	return 0;
}

int snapwriter_set_method(SnapWriter *w, const char *method, const char *note, uint64_t read_bytes)
{
	char *m = strdup(method), *n = note ? strdup(note) : NULL;
	if (!m || (note && !n)) {
		free(m);
		free(n);
		return -ENOMEM;
	}
	free(w->info.method);
	free(w->info.method_note);
	w->info.method = m;
	w->info.method_note = n;
	w->info.has_read_bytes = true;
	w->info.read_bytes = read_bytes;
	return 0;
}

const char *snapwriter_name(const SnapWriter *w)
{
	return w->info.name;
}

int snapwriter_add_warning(SnapWriter *w)
{
	atomic_fetch_add(&w->n_warnings, 1);
	return 0;
}
