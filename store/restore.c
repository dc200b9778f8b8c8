/*
 * The main thread walks the file rows (parents first), creates directories
 * and symlinks, opens each regular file and queues one task per stored
 * chunk; workers read, verify and pwrite chunks; the last chunk of a file
 * sets its mode, owner and mtime and closes it. Directory modes and mtimes
 * are applied last, children before parents, so writing into them does not
 * disturb their mtimes.
 *
 * Delta restores read each chunk already in the target first and write only
 * those whose bytes differ: by the chunk_fh recorded at backup (SHA-256 of
 * the bytes against the chunk id for a chunk without one; holes: whose bytes
 * are not all zero), and of a differing chunk only the 4 KiB pages that
 * differ; then they sweep out what the snapshot does not have. A pg_wal that
 * the target has as a symlink to a directory stays one (pgBackRest does the
 * same): the snapshot's pg_wal goes into the link's target.
 *
 * global/pg_control is written last, once everything else is durable: a
 * restore that fails or is killed leaves none, and PostgreSQL refuses to start
 * on such a directory instead of starting on half a cluster. (A delta restore
 * removes the old one before it writes anything.)
 *
 * The snapshot is held for the whole restore, as a mount holds what it
 * serves: a delete meanwhile only marks it deleted, and gc keeps its rows and
 * chunks until the hold goes.
 */
#include "store/restore.h"
#include "store/treedigest.h"
#include "common/log.h"
#include "common/util.h"
#include "common/workqueue.h"
#include "store/reader.h"
#include "store/restrec.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <dirent.h>
#include <sys/mman.h>
#include <sys/stat.h>

typedef struct RFile {
	int fd;
	char *path;
	uint32_t mode, uid, gid;
	int64_t mtime_ns;
	uint64_t size;
	ChunkId *ids;
	_Atomic uint64_t remaining;
	bool existed;             /* delta: the target had this file */
	bool meta_same;           /* delta: with the snapshot's mode, owner and mtime */
	_Atomic uint64_t written; /* delta: bytes written into it */
	/* delta: changed pages held for flush_deferred (guarded by Restorer.defer_lock) */
	struct DeferredWrite *deferred;
	size_t n_deferred, cap_deferred;
	/* opened O_DIRECT for a fresh file (restore_regular) or a delta (flush_deferred), or DIRECT_* */
	int direct_fd;
	uint8_t (*fh)[CHUNK_FH_LEN]; /* delta: each chunk's chunk_fh, if has_fh[i] */
	bool *has_fh;
	bool *same;      /* delta: chunk i is in place already, by the restore record */
	/*
	 * delta: chunk i is in place but for the 8 KiB blocks set here, which
	 * PostgreSQL wrote since (its WAL says): only those are written, and
	 * nothing of it is read (NULL: none such)
	 */
	uint64_t *patch;
	int64_t content; /* the catalog's content row, for the next record */
	bool read_direct; /* delta: the bytes in place are read with O_DIRECT (direct_fd) */
} RFile;

/* delta: bytes in place read by one pread (a worker's buffer; a task of local chunks) */
#define DELTA_READ (4u << 20)
#define WAL_BLOCK 8192u /* delta: PostgreSQL's block, what its WAL names */

/* RFile.direct_fd before it is an fd: not opened yet; cannot be (write through fd instead) */
#define DIRECT_UNTRIED (-2)
#define DIRECT_NONE (-1)
/* O_DIRECT's alignment of offsets, lengths and buffers (a logical block size is 512 or 4096) */
#define DIRECT_ALIGN 4096
/* delta: threads flushing files' deferred writes, files queued to them, bytes held at most */
#define DELTA_WRITERS 4
/*
 * A fresh file is written up to RESTORE_DIRECT_RUN of consecutive chunks (or
 * one larger chunk) at a time with O_DIRECT, files from RESTORE_DIRECT_MIN up:
 * from a local repository a task at a time, from S3 as runs in a window
 * (rrun_add). Copying 5 GB into the page cache was most of a restore's CPU
 * (in a VM handing freed memory back to its host, a hypervisor fault per
 * fresh cache page), and a restore's files are not read back soon. Smaller
 * files, a file's last partial 4 KiB and file systems without O_DIRECT go
 * through the cache.
 * Runs of 8 MiB, not 1 MiB: each direct write into a file's preallocated
 * (unwritten) blocks is a request to the disk and an extent conversion to
 * journal. 1.9 GB restored from a directory (pgbench scale 50, ext4 on
 * virtio, whose requests take 4 MiB): 3.13 s with 1 MiB runs, 2.17 s with
 * 4 MiB, 2.15 s with 8 MiB, 2.10 s with 16 MiB (medians of 5).
 */
#define RESTORE_DIRECT_RUN (8u << 20)
/* bytes of runs all workers hold at most: shorter runs past 16 jobs */
#define RESTORE_RUNS_MAX (128u << 20)
#define RESTORE_DIRECT_MIN (1u << 20)
/* how often the record of finished files is saved (RestoreOptions.record_every_ns) */
#define RESTORE_RECORD_EVERY (60 * 1000000000LL)
#define DELTA_FILES_QUEUED 64
#define DELTA_DEFERRED_MAX (64u << 20)

/* delta: changed pages of a file, written once all of it has been read (flush_deferred) */
typedef struct DeferredWrite {
	uint64_t off;
	size_t len;
	uint8_t *buf;
} DeferredWrite;

/*
 * Object storage: one request per window of a pack, not per chunk. Each
 * request costs the server as much as megabytes of data (s3rver: a 32 MiB
 * window restored at 1.4x the speed of 8 MiB ones, with 1 MiB direct
 * writes). Windows of 16 MiB and jobs + 2 buffers, not 32 MiB and
 * 2 * jobs + 2: every buffer is fresh memory, whose first touch is a
 * hypervisor fault in a VM. Restoring 1.9 GB (307 MiB stored) from s3rver
 * with -j 2: peak RSS 110 MiB, was 201-227; system time 0.50-0.64 s, was
 * 0.63-0.91; the same time (2.61 s against 2.65, medians of 6), 0.70 GETs
 * per 8 MiB stored.
 *
 * The main thread looks each chunk of the files it opens up in the catalog
 * and adds it to an open window of its pack within RESTORE_WINDOW_GAP of it
 * (RESTORE_OPEN_WINDOWS are open at a time, for the packs, and places in a
 * pack, a snapshot's chunks alternate between). A window
 * is closed, queued to be fetched, when the next chunk would make it longer
 * than win_limit or lies more than RESTORE_WINDOW_GAP away from it (chunks
 * of a pack come out of order: two backup workers filled it; a gap of 1 MiB
 * cut windows 1.2 MiB apart). The first window is RESTORE_WINDOW_FIRST at
 * most, so that the workers start soon (an eighth of buf_size, 4.5 MiB, was
 * 2,600 chunks to look up and files to create before the first request),
 * and the limit doubles up to buf_size (RESTORE_WINDOW and an eighth: the
 * end of a pack that overshot its size). A window of RESTORE_WINDOW_EARLY
 * or more is also closed as soon as no window is queued, being fetched or
 * waiting for a worker: the workers are about to run out of work, and a
 * pack's last window would otherwise wait for the end of the walk (or the
 * walk reaching its size) before its first byte is asked for.
 * Fetch threads fetch each window once; the workers restore its chunks from
 * the bytes in memory (lent to their reader), so fetching overlaps decoding
 * and no two workers fetch the same bytes (as windows read ahead per worker
 * did: 3.7x the stored bytes).
 * At most n_bufs_max windows are held in memory (being fetched, fetched or
 * being restored), RESTORE_WINDOWS_QUEUED wait to be fetched, and the files
 * of RESTORE_OPEN_FILES wait in open windows (each holds a descriptor).
 */
#define RESTORE_WINDOW(rs) \
	((size_t)MIN(MAX(repo_config((rs)->repo)->pack_size, 8u << 20), 16u << 20))
#define RESTORE_WINDOW_GAP (4u << 20)
#define RESTORE_WINDOW_FIRST (2u << 20)
#define RESTORE_WINDOW_EARLY (8u << 20)
#define RESTORE_OPEN_WINDOWS 8
#define RESTORE_OPEN_FILES 1024
#define RESTORE_WINDOWS_QUEUED 32
#define RESTORE_WINDOW_BUFFERS (256u << 20) /* bytes of windows held at most */
#define RESTORE_PART 256 /* chunks of a window a worker takes at a time */
#define RESTORE_LOCATE_BATCH 256 /* chunks the main thread looks up at a time */

/*
 * A chunk of a window, with where the main thread found it in the pack: the
 * worker decodes it without a second catalog query (one per chunk, each a
 * SQLite read transaction with its locks).
 */
typedef struct RRef {
	RFile *file;
	uint64_t idx;
	uint64_t offset; /* the ChunkLoc fields a worker needs (the pack is the window's) */
	uint32_t elen, plen, crc;
	uint8_t enc;
	bool has_crc;
} RRef;

/* bytes [off, end) of a pack, and the chunks restored from them */
typedef struct RWin {
	struct RWin *next;
	int64_t pack; /* -1: nothing to fetch (holes of a delta, chunks the catalog cannot place) */
	char pack_name[64];
	uint64_t off, end;
	RRef *refs;
	size_t n_refs, cap_refs;
	size_t n_claimed, n_done; /* refs taken by workers, and done with (lock) */
	uint8_t *buf;
	int err;
	unsigned last_use; /* main thread: the open windows' clock */
} RWin;

#define RESTORE_TASKS_QUEUED 4096 /* local: tasks waiting for a worker */

typedef struct RTask {
	RFile *file;
	uint64_t idx;   /* first chunk */
	uint32_t count; /* consecutive chunks, all to be written */
} RTask;

/* a file system written to, and a directory of it opened before any write (sync_add) */
typedef struct SyncFs {
	int fd;
	dev_t dev;
} SyncFs;

typedef struct RDir {
	char *path;
	uint32_t mode, uid, gid;
	int64_t mtime_ns;
} RDir;

typedef struct Restorer {
	Repo *repo;
	const RestoreOptions *o;
	RestoreResult *res;
	const char *target;
	uint64_t chunk_size;
	int jobs;       /* workers: o->jobs, or one per CPU */
	uint32_t batch; /* chunks per task: consecutive ones go to one reader */
	size_t run_cap; /* bytes of a worker's run (run_bytes) */
	bool as_root;

	/*
	 * local: chunk tasks, in the order the main thread queues them (a file's
	 * in chunk order); aborted on the first error
	 */
	WorkQueue *tasks;
	pthread_mutex_t lock; /* guards res->failed_* and the windows pipeline below */
	pthread_cond_t cond_nonempty, cond_nonfull;
	_Atomic int error;
	_Atomic uint64_t bytes_written;
	_Atomic uint64_t bytes_sha256, n_unchanged; /* delta */
	WorkQueue *finishing;       /* delta: RFile *s whose deferred writes a writer thread does */
	pthread_mutex_t defer_lock; /* delta: every RFile's deferred writes, and: */
	uint64_t deferred_bytes;    /* what they hold */

	/*
	 * remote: the windows pipeline (lock guards these fields but open*,
	 * win_limit). Not a WorkQueue: a fetched window stays first on ready
	 * until its parts are all claimed by several workers, fetching waits for
	 * a buffer of the n_bufs_max budget, and the end is known only when
	 * nothing is pending, fetching or ready, all under the one lock.
	 */
	bool remote;
	RWin *pending, **pending_tail; /* to fetch */
	size_t n_pending;
	RWin *ready, **ready_tail; /* fetched */
	size_t n_bufs, n_bufs_max; /* windows being fetched, fetched, or being decoded */
	size_t n_fetching;
	_Atomic size_t n_unclaimed; /* windows queued and not yet all claimed by workers */
	/*
	 * window buffers of buf_size bytes, kept for the next window: a fresh
	 * allocation this large is a fresh mapping, whose page faults cost more
	 * than copying the bytes in
	 */
	uint8_t **free_bufs;
	size_t n_free, buf_size;
	bool fetch_done; /* no more windows will be queued */
	/*
	 * for the debug log: nanoseconds the workers waited for a fetched
	 * window, the fetch threads spent fetching and waited for a window or a
	 * buffer (lock)
	 */
	int64_t ns_decode_wait, ns_fetching, ns_fetch_wait;
	RWin *open[RESTORE_OPEN_WINDOWS]; /* main thread only, as the fields below */
	ChunkLoc *locs; /* RESTORE_LOCATE_BATCH: chunks of the file being queued, located */
	int *loc_errs;
	size_t n_open_files;              /* files with chunks in open windows, about */
	size_t win_limit;                 /* most bytes of the next window */
	unsigned open_clock;

	/*
	 * main thread: the file systems written to, each by a directory opened
	 * before anything is written there (sync_add). syncfs reports the
	 * writeback errors of a file system since the descriptor was opened, to
	 * each descriptor once (Linux 5.8): a directory opened just before its
	 * syncfs missed those of the writes through the cache before it.
	 */
	SyncFs *sync;
	size_t n_sync;

	/* the restore record: the last restore's (delta), and this one's */
	RestoreRecord *prev, *next;
	bool wal_ready; /* delta: o->wal answers for the files PostgreSQL wrote since prev */
	char *record_path;
	int64_t record_at;  /* main thread: when the record was last saved (mono_ns) */
	bool record_failed; /* main thread: saving it failed, it is not tried again */

	/* delta: every path the snapshot has, to sweep the rest */
	char **seen;
	size_t n_seen, cap_seen;

	/* main thread only */
	char *control_path; /* TARGET/global/pg_control, restored last */
	char *global_path;  /* TARGET/global */
	FileRow control;    /* its row (name and target not kept); control_pending if seen */
	bool control_pending;
	char **kept_links; /* delta: symlinks to directories kept as they are (pg_wal) */
	size_t n_kept_links;
	char **link_paths, **link_targets; /* relative path -> where its contents go */
	size_t n_links;
	char **dir_paths; /* by ino */
	size_t n_dir_paths;
	RDir *dirs;
	size_t n_dirs;
} Restorer;

static void restorer_fail(Restorer *rs, int r, const char *path, uint64_t offset)
{
	int expected = 0;
	if (r >= 0 || !atomic_compare_exchange_strong(&rs->error, &expected, r))
		return;
	pthread_mutex_lock(&rs->lock);
	if (path)
		snprintf(rs->res->failed_path, sizeof(rs->res->failed_path), "%s", path);
	rs->res->failed_offset = offset;
	pthread_cond_broadcast(&rs->cond_nonfull);
	pthread_cond_broadcast(&rs->cond_nonempty);
	pthread_mutex_unlock(&rs->lock);
	if (rs->tasks)
		workqueue_abort(rs->tasks, r);
}

/*
 * A directory of path's file system, opened: path's, or (one not there yet,
 * made during the restore) its nearest ancestor's.
 */
static int open_fs_of(const char *path)
{
	char dir[PATH_MAX], up[PATH_MAX];
	if ((size_t)snprintf(dir, sizeof(dir), "%s", path) >= sizeof(dir))
		return -ENAMETOOLONG;
	for (;;) {
		int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd >= 0 || errno != ENOENT)
			return fd >= 0 ? fd : -errno;
		path_dirname(dir, up, sizeof(up));
		if (!strcmp(up, dir))
			return -ENOENT; /* "." or "/" itself */
		memcpy(dir, up, sizeof(dir));
	}
}

/* path's file system among those made durable (sync_written), if it is not already */
static int sync_add(Restorer *rs, const char *path)
{
	struct stat st;
	int fd = open_fs_of(path), r = 0;
	if (fd < 0)
		return fd;
	if (fstat(fd, &st) < 0)
		r = -errno;
	size_t i = 0;
	while (r == 0 && i < rs->n_sync && rs->sync[i].dev != st.st_dev)
		i++;
	if (r == 0 && i == rs->n_sync) {
		SyncFs *v = realloc(rs->sync, (rs->n_sync + 1) * sizeof(*v));
		if (v) {
			rs->sync = v;
			v[rs->n_sync++] = (SyncFs){.fd = fd, .dev = st.st_dev};
			fd = -1;
		} else {
			r = -ENOMEM;
		}
	}
	if (fd >= 0)
		close(fd);
	return r;
}

/* The file systems the restore writes to: the target's, TARGET.extra's, the tablespaces'. */
static int sync_open(Restorer *rs)
{
	_cleanup_free_ char *extra = NULL;
	int r = sync_add(rs, rs->target);
	if (r == 0)
		r = asprintf(&extra, "%s.extra", rs->target) < 0 ? -ENOMEM : sync_add(rs, extra);
	for (size_t i = 0; r == 0 && i < rs->n_links; i++)
		r = sync_add(rs, rs->link_targets[i]);
	return r;
}

/*
 * Everything written so far, durable: syncfs of each file system. A failure
 * (a write the disk lost) fails the restore: each descriptor hears of it once.
 */
static int sync_written(Restorer *rs)
{
	int r = 0;
	for (size_t i = 0; r == 0 && i < rs->n_sync; i++)
		if (syncfs(rs->sync[i].fd) < 0)
			r = -errno;
	if (r < 0)
		restorer_fail(rs, r, NULL, 0);
	return r;
}

static int apply_meta_fd(Restorer *rs, int fd, uint32_t mode, uint32_t uid, uint32_t gid,
			 int64_t mtime_ns)
{
	struct timespec ts[2] = {{.tv_sec = mtime_ns / 1000000000, .tv_nsec = mtime_ns % 1000000000}};
	ts[1] = ts[0];
	if (rs->as_root && fchown(fd, uid, gid) < 0)
		return -errno;
	if (fchmod(fd, mode & 07777) < 0)
		return -errno;
	if (futimens(fd, ts) < 0)
		return -errno;
	return 0;
}

static void rfile_free(RFile *f)
{
	if (f->fd >= 0)
		close(f->fd);
	if (f->direct_fd >= 0)
		close(f->direct_fd);
	for (size_t i = 0; i < f->n_deferred; i++)
		free(f->deferred[i].buf);
	free(f->deferred);
	free(f->path);
	free(f->ids);
	free(f->fh);
	free(f->has_fh);
	free(f->same);
	free(f->patch);
	free(f);
}

/*
 * Delta: changed pages go around the page cache where they can. The bytes
 * in place were read through it, and the file system caches a file it reads
 * in large folios (ext4 on Linux 6.x: up to 2 MiB), whose first dirty byte
 * makes writeback write all of it: an 8 KiB page changed every 800 KiB wrote
 * the whole file again (a 1% change to 1.1 GB: 910 MB written for 26.8 MiB
 * of changed pages). A write with O_DIRECT writes its blocks alone and drops
 * the folios it overlaps from the cache.
 *
 * Direct writes are coherent with the cache only when nothing else uses the
 * file's cache meanwhile: the kernel writes back and drops the overlapping
 * folios before and after each one, and a folio another thread is reading
 * at that moment cannot be dropped, so it would stay with the old bytes for
 * whoever reads the file next (PostgreSQL). So a file's changed pages are
 * held (copied into aligned buffers; DELTA_DEFERRED_MAX in all) until every
 * chunk of it has been read and compared, and then written by one thread,
 * alone with the file (flush_deferred). Pages beyond the budget, unaligned
 * ones (a file's last bytes) and file systems without O_DIRECT are written
 * through the cache at once, which is always coherent; a direct write after
 * them writes back and drops what they dirtied first.
 */
static bool defer_write(Restorer *rs, RFile *f, const uint8_t *buf, size_t len, uint64_t off)
{
	bool held = false;
	if (!rs->finishing || off % DIRECT_ALIGN != 0 || len % DIRECT_ALIGN != 0)
		return false;
	uint8_t *copy = aligned_alloc(DIRECT_ALIGN, len);
	if (!copy)
		return false;
	memcpy(copy, buf, len);
	pthread_mutex_lock(&rs->defer_lock);
	if (rs->deferred_bytes + len <= DELTA_DEFERRED_MAX && f->n_deferred == f->cap_deferred) {
		size_t cap = f->cap_deferred ? 2 * f->cap_deferred : 16;
		DeferredWrite *d = realloc(f->deferred, cap * sizeof(*d));
		if (d) {
			f->deferred = d;
			f->cap_deferred = cap;
		}
	}
	if (rs->deferred_bytes + len <= DELTA_DEFERRED_MAX && f->n_deferred < f->cap_deferred) {
		f->deferred[f->n_deferred++] = (DeferredWrite){.off = off, .len = len, .buf = copy};
		rs->deferred_bytes += len;
		held = true;
	}
	pthread_mutex_unlock(&rs->defer_lock);
	if (!held)
		free(copy);
	return held;
}

/*
 * One run of f with O_DIRECT (a delta's held run, a fresh file's decoded
 * chunks); through the cache where that is refused.
 */
static int write_direct(RFile *f, const uint8_t *buf, size_t len, uint64_t off)
{
	if (f->direct_fd == DIRECT_UNTRIED) {
		f->direct_fd = open(f->path, O_WRONLY | O_DIRECT | O_CLOEXEC | O_NOFOLLOW);
		if (f->direct_fd < 0)
			f->direct_fd = DIRECT_NONE;
	}
	if (f->direct_fd >= 0) {
		ssize_t n = pwrite(f->direct_fd, buf, len, (off_t)off);
		if (n == (ssize_t)len)
			return 0;
		if (n < 0 && errno != EINVAL)
			return -errno;
		/* EINVAL: an alignment this file system does not take; short: the rest, cached */
		if (n > 0) {
			buf += n;
			len -= (size_t)n;
			off += (uint64_t)n;
		}
	}
	return pwrite_full(f->fd, buf, len, (off_t)off);
}

/* Delta: f's held runs, by the one thread that finishes it (no other uses it any more). */
static int flush_deferred(Restorer *rs, RFile *f)
{
	uint64_t held = 0;
	int r = 0;
	for (size_t i = 0; i < f->n_deferred; i++) {
		const DeferredWrite *d = &f->deferred[i];
		if (r == 0 && atomic_load(&rs->error) == 0) {
			r = write_direct(f, d->buf, d->len, d->off);
			if (r < 0)
				restorer_fail(rs, r, f->path, d->off);
		}
		held += d->len;
		free(d->buf);
	}
	f->n_deferred = 0;
	pthread_mutex_lock(&rs->defer_lock);
	rs->deferred_bytes -= held;
	pthread_mutex_unlock(&rs->defer_lock);
	return r;
}

/* How the restore record names path: relative to the target when under it. */
static const char *record_name(const Restorer *rs, const char *path)
{
	size_t n = strlen(rs->target);
	return !strncmp(path, rs->target, n) && path[n] == '/' ? path + n + 1 : path;
}

/* f, finished: into this restore's record, as it is now (after its last change). */
static int record_file(Restorer *rs, const RFile *f)
{
	uint8_t key[RESTREC_KEY_LEN];
	struct stat st;
	size_t n = (size_t)((f->size + rs->chunk_size - 1) / rs->chunk_size);
	static const ChunkId none;

	if (fstat(f->fd, &st) < 0)
		return -errno;
	restrec_key(f->ids ? f->ids : &none, f->ids ? n : 0, key);
	return restrec_add(rs->next, record_name(rs, f->path), &st, f->content, key);
}

static int rfile_finish(Restorer *rs, RFile *f)
{
	bool unchanged = rs->o->delta && f->existed && atomic_load(&f->written) == 0;
	int r = f->n_deferred > 0 ? flush_deferred(rs, f) : 0;
	/*
	 * Setting what is already there would still dirty the inode (ctime):
	 * a thousand unchanged files were a thousand inodes for syncfs to write.
	 */
	if (r == 0 && !(unchanged && f->meta_same))
		r = apply_meta_fd(rs, f->fd, f->mode, f->uid, f->gid, f->mtime_ns);
	/* not after any failure: a file may be finished with chunks left unwritten */
	if (r == 0 && rs->next && atomic_load(&rs->error) == 0)
		r = record_file(rs, f);
	if (unchanged)
		atomic_fetch_add(&rs->n_unchanged, 1);
	if (close(f->fd) < 0 && r == 0)
		r = -errno;
	f->fd = -1;
	if (f->direct_fd >= 0 && close(f->direct_fd) < 0 && r == 0)
		r = -errno;
	f->direct_fd = DIRECT_NONE;
	if (r < 0)
		restorer_fail(rs, r, f->path, 0);
	rfile_free(f);
	return r;
}

/* Delta: a writer thread, finishing files whose held runs are to be written. */
static void *delta_writer(void *arg)
{
	Restorer *rs = arg;
	thread_name("restore-delta");
	RFile *f;
	while (workqueue_pop(rs->finishing, &f) == 0)
		rfile_finish(rs, f);
	return NULL;
}

static void task_done(Restorer *rs, RFile *f)
{
	if (atomic_fetch_sub(&f->remaining, 1) != 1)
		return;
	/* every task of f is done: nothing adds to its held runs any more */
	if (f->n_deferred > 0 && rs->finishing && workqueue_push(rs->finishing, &f) == 0)
		return;
	rfile_finish(rs, f);
}

/*
 * Delta: are the len bytes in place (have) already those of chunk idx of f?
 * 1 yes, 0 no, <0 error. By the chunk_fh recorded at backup (looked up with
 * the file's chunk list), or the SHA-256 for a chunk without one. Never by
 * the CRC: it cannot tell two valid contents apart (every pg_control has the
 * same CRC-32C), only damage from the original.
 */
static int chunk_in_place(Restorer *rs, ChunkReader *reader, const RFile *f, uint64_t idx,
			  const uint8_t *have, size_t len)
{
	const ChunkId *id = &f->ids[idx];
	uint8_t want[CHUNK_FH_LEN], got[CHUNK_FH_LEN];
	ChunkId sum;
	int r = 0;

	if (chunk_id_is_hole(id))
		return buf_is_zero(have, len);
	if (f->has_fh[idx])
		memcpy(want, f->fh[idx], CHUNK_FH_LEN);
	else /* -ENODATA: stored without one; or what the catalog says is wrong */
		r = chunk_reader_fh(reader, id, want);
	if (r == 0) {
		chunk_fh(id, have, len, got);
		return memcmp(got, want, CHUNK_FH_LEN) == 0;
	}
	if (r != -ENODATA)
		return r;
	atomic_fetch_add(&rs->bytes_sha256, len);
	repo_chunk_hash(rs->repo, have, len, &sum);
	return chunk_id_cmp(&sum, id) == 0;
}

/*
 * Delta: write the pages (4 KiB, the page cache's unit) of buf that differ
 * from have, the bytes in place: a chunk with one changed 8 KiB page writes
 * two pages, not the whole chunk, and writeback (syncfs) is most of a delta.
 */
static int write_changed(Restorer *rs, RFile *f, const uint8_t *buf, const uint8_t *have,
			 size_t len, uint64_t off, uint64_t *ret_written)
{
	const size_t page = DIRECT_ALIGN;
	*ret_written = 0;
	for (size_t i = 0; i < len;) {
		size_t n = MIN(page, len - i), j;
		if (memcmp(buf + i, have + i, n) == 0) {
			i += n;
			continue;
		}
		for (j = i + n; j < len; j += n) {
			n = MIN(page, len - j);
			if (memcmp(buf + j, have + j, n) == 0)
				break;
		}
		if (!defer_write(rs, f, buf + i, j - i, off + i)) {
			int r = pwrite_full(f->fd, buf + i, j - i, (off_t)(off + i));
			if (r < 0)
				return r;
		}
		*ret_written += j - i;
		i = j;
	}
	return 0;
}

static bool is_patch(const RFile *f, uint64_t idx)
{
	return f->patch && f->patch[idx];
}

/*
 * Delta: a chunk in place but for the blocks PostgreSQL wrote since
 * (f->patch[idx]): those blocks of the snapshot's chunk (in buf) are written,
 * and nothing is read in place.
 */
static int write_patch(Restorer *rs, RFile *f, uint64_t idx, const uint8_t *buf, size_t len,
		       uint64_t off)
{
	uint64_t mask = f->patch[idx], written = 0;
	int r = 0;
	for (size_t b = 0; r == 0 && b * WAL_BLOCK < len;) {
		size_t e = b;
		while (e * WAL_BLOCK < len && (mask >> e & 1))
			e++;
		if (e == b) {
			b++;
			continue;
		}
		size_t from = b * WAL_BLOCK, n = MIN(e * WAL_BLOCK, len) - from;
		r = pwrite_full(f->fd, buf + from, n, (off_t)(off + from));
		written += n;
		b = e;
	}
	if (r == 0) {
		atomic_fetch_add(&f->written, written);
		atomic_fetch_add(&rs->bytes_written, written);
	}
	return r;
}

/*
 * One chunk into f; have: a delta's bytes in place (NULL: a fresh file, or a
 * delta's read came short: the whole chunk is written; or a patch chunk,
 * which needs none); loc: where the main thread found it (NULL: the reader
 * looks it up).
 */
static int restore_chunk(Restorer *rs, ChunkReader *reader, RFile *f, uint64_t idx, uint64_t off,
			 size_t len, uint8_t *buf, const uint8_t *have, const ChunkLoc *loc)
{
	const ChunkId *id = &f->ids[idx];
	uint64_t written = len;
	int r;
	if (is_patch(f, idx)) {
		if (chunk_id_is_hole(id))
			memset(buf, 0, len);
		else if ((r = loc ? chunk_reader_read_fast_at(reader, id, loc, len, buf)
				  : chunk_reader_read_fast(reader, id, len, buf)) < 0)
			return r;
		return write_patch(rs, f, idx, buf, len, off);
	}
	if (have) {
		r = chunk_in_place(rs, reader, f, idx, have, len);
		if (r != 0)
			return r < 0 ? r : 0;
	}
	if (chunk_id_is_hole(id)) {
		/* only delta queues holes: give the range back as a hole */
		if (fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
			      (off_t)len) == 0) {
			atomic_fetch_add(&f->written, len);
			atomic_fetch_add(&rs->bytes_written, len);
			return 0;
		}
		memset(buf, 0, len);
	} else {
		r = loc ? chunk_reader_read_fast_at(reader, id, loc, len, buf)
			: chunk_reader_read_fast(reader, id, len, buf);
		if (r < 0)
			return r;
	}
	if (have)
		r = write_changed(rs, f, buf, have, len, off, &written);
	else
		r = pwrite_full(f->fd, buf, len, (off_t)off);
	if (r == 0) {
		atomic_fetch_add(&f->written, written);
		atomic_fetch_add(&rs->bytes_written, written);
	}
	return r;
}

/* len decoded bytes of a fresh file at from, past the cache up to the last whole 4 KiB. */
static int write_run(Restorer *rs, RFile *f, const uint8_t *run, size_t len, uint64_t from)
{
	size_t direct = len & ~(size_t)(DIRECT_ALIGN - 1);
	int r = direct > 0 ? write_direct(f, run, direct, from) : 0;
	if (r == 0 && len > direct)
		r = pwrite_full(f->fd, run + direct, len - direct, (off_t)(from + direct));
	if (r < 0) {
		restorer_fail(rs, r, f->path, from);
		return r;
	}
	atomic_fetch_add(&f->written, len);
	atomic_fetch_add(&rs->bytes_written, len);
	progress_add(rs->o->progress, len);
	return 0;
}

/*
 * A task of a fresh local file with a direct descriptor: its chunks (no
 * holes: run_length stops at them) decoded one after the other into run,
 * then written at once, past the page cache up to the last whole 4 KiB.
 */
static int restore_task_run(Restorer *rs, ChunkReader *reader, const RTask *t, uint8_t *run)
{
	RFile *f = t->file;
	const uint64_t from = t->idx * rs->chunk_size;
	size_t len = 0;
	for (uint64_t idx = t->idx; idx < t->idx + t->count; idx++) {
		size_t n = (size_t)MIN(rs->chunk_size, f->size - idx * rs->chunk_size);
		int r = chunk_reader_read_fast(reader, &f->ids[idx], n, run + len);
		if (r < 0) {
			restorer_fail(rs, r, f->path, idx * rs->chunk_size);
			return r;
		}
		len += n;
	}
	return write_run(rs, f, run, len, from);
}

static void restore_windows(Restorer *rs, ChunkReader *reader, uint8_t *buf, uint8_t *have,
			    uint8_t *run);

/*
 * Delta: up to len bytes in place at off (a multiple of DIRECT_ALIGN) into
 * have (aligned, with room for len rounded up to DIRECT_ALIGN): how many
 * (short only at the end of the file), or -errno.
 */
static ssize_t read_in_place(const RFile *f, uint8_t *have, size_t len, uint64_t off)
{
	size_t n = (len + DIRECT_ALIGN - 1) & ~(size_t)(DIRECT_ALIGN - 1), done = 0;
	while (f->read_direct && done < n) {
		ssize_t k = pread(f->direct_fd, have + done, n - done, (off_t)(off + done));
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && errno == EINVAL && done == 0)
			break; /* not an alignment this file system takes: through the cache */
		if (k < 0)
			return -errno;
		done += (size_t)k;
		if (k == 0 || k % DIRECT_ALIGN != 0) /* the end of the file */
			return (ssize_t)MIN(done, len);
	}
	if (f->read_direct && done == n)
		return (ssize_t)len;
	return pread_full(f->fd, have, len, (off_t)off);
}

static void *restore_worker(void *arg)
{
	Restorer *rs = arg;
	thread_name("restore-work");
	ChunkReader *reader = NULL;
	uint8_t *buf = malloc(rs->chunk_size);
	/* delta: the bytes in place, read for up to DELTA_READ at once */
	size_t have_chunks = (size_t)MAX(1, MIN(rs->batch, DELTA_READ / rs->chunk_size));
	/* aligned, for O_DIRECT reads (read_in_place) */
	uint8_t *have = rs->o->delta ? malloc_huge(have_chunks * rs->chunk_size + DIRECT_ALIGN) : NULL;
	/* consecutive chunks of a fresh file, written at once (aligned for O_DIRECT) */
	uint8_t *run = !rs->o->delta ? malloc_huge(rs->run_cap) : NULL;
	int r = buf && (have || !rs->o->delta) && (run || rs->o->delta)
			? chunk_reader_new(rs->repo, &reader)
			: -ENOMEM;
	if (r < 0)
		restorer_fail(rs, r, NULL, 0);

	if (rs->remote)
		restore_windows(rs, reader, buf, have, run);
	/* after a failure the tasks still come out: their references are dropped unrestored */
	RTask t;
	while (!rs->remote && workqueue_pop(rs->tasks, &t) == 0) {
		if (run && t.file->direct_fd >= 0) {
			if (!atomic_load(&rs->error))
				(void)restore_task_run(rs, reader, &t, run);
			task_done(rs, t.file);
			continue;
		}
		uint64_t have_from = 0;
		ssize_t have_len = 0; /* bytes of have from chunk have_from on */
		for (uint64_t idx = t.idx; idx < t.idx + t.count && !atomic_load(&rs->error); idx++) {
			uint64_t off = idx * rs->chunk_size;
			size_t len = (size_t)MIN(rs->chunk_size, t.file->size - off);
			const uint8_t *in_place = NULL;
			if (have && !is_patch(t.file, idx)) { /* a patch task is that chunk alone */
				if (idx == t.idx || idx >= have_from + have_chunks) {
					uint64_t n = MIN(have_chunks, t.idx + t.count - idx);
					have_from = idx;
					have_len = read_in_place(t.file, have,
								 (size_t)MIN(n * rs->chunk_size,
									     t.file->size - off),
								 off);
				}
				size_t at = (size_t)(idx - have_from) * rs->chunk_size;
				if (have_len >= 0 && at + len <= (size_t)have_len)
					in_place = have + at;
			}
			r = restore_chunk(rs, reader, t.file, idx, off, len, buf, in_place, NULL);
			if (r < 0)
				restorer_fail(rs, r, t.file->path, off);
			else
				progress_add(rs->o->progress, len);
		}
		task_done(rs, t.file);
	}
	chunk_reader_free(reader);
	free(buf);
	free(have);
	free(run);
	return NULL;
}

static int queue_task(Restorer *rs, RFile *f, uint64_t idx, uint32_t count)
{
	return workqueue_push(rs->tasks, &(RTask){.file = f, .idx = idx, .count = count});
}

/* ---- remote: windows cut by the main thread, fetched by fetch threads, restored by workers ---- */

/* Take the first window off a list (lock held). */
static RWin *win_pop(RWin **head, RWin ***tail)
{
	RWin *w = *head;
	*head = w->next;
	if (!*head)
		*tail = head;
	w->next = NULL;
	return w;
}

static void win_free(RWin *w)
{
	if (!w)
		return;
	free(w->buf);
	free(w->refs);
	free(w);
}

/* Fetch thread: the next pending window into a buffer, then onto the ready list. */
static void *fetch_worker(void *arg)
{
	Restorer *rs = arg;
	thread_name("restore-fetch");
	StoreBackend *b = repo_backend(rs->repo);

	pthread_mutex_lock(&rs->lock);
	for (;;) {
		int64_t t0 = mono_ns();
		while (!(rs->pending && rs->n_bufs < rs->n_bufs_max) && !(rs->fetch_done && !rs->pending))
			pthread_cond_wait(&rs->cond_nonempty, &rs->lock);
		rs->ns_fetch_wait += mono_ns() - t0;
		if (!rs->pending)
			break;
		RWin *w = win_pop(&rs->pending, &rs->pending_tail);
		size_t len = w->pack >= 0 ? w->end - w->off : 0;
		rs->n_pending--;
		rs->n_bufs++;
		rs->n_fetching++;
		if (len && len <= rs->buf_size && rs->n_free)
			w->buf = rs->free_bufs[--rs->n_free];
		pthread_cond_broadcast(&rs->cond_nonfull);
		pthread_mutex_unlock(&rs->lock);

		t0 = mono_ns();
		if (atomic_load(&rs->error))
			w->err = atomic_load(&rs->error);
		else if (len && !w->buf && !(w->buf = malloc_huge(MAX(len, rs->buf_size))))
			w->err = -ENOMEM;
		else if (len)
			w->err = store_get_range(b, w->pack_name, w->off, len, w->buf);
		if (w->err == -ENODATA)
			w->err = -EBADMSG; /* a truncated pack is damage, not absence */

		pthread_mutex_lock(&rs->lock);
		rs->ns_fetching += mono_ns() - t0;
		rs->n_fetching--;
		*rs->ready_tail = w;
		rs->ready_tail = &w->next;
		pthread_cond_broadcast(&rs->cond_nonempty);
	}
	pthread_mutex_unlock(&rs->lock);
	return NULL;
}

/*
 * S3: a fresh file's consecutive chunks as a window's part meets them (a pack
 * holds them mostly in file order), decoded side by side into buf and written
 * at once when the run breaks, fills RESTORE_DIRECT_RUN or the part ends; one
 * 64 KiB direct write per chunk made an S3 restore twice as slow. Each chunk
 * is a task (remote batch 1): they are done after the write, not before, so
 * the file cannot finish under it.
 */
typedef struct RRun {
	uint8_t *buf;
	RFile *file; /* NULL: empty */
	uint64_t first, next;
	size_t len;
	bool failed;
} RRun;

static void rrun_flush(Restorer *rs, RRun *run)
{
	RFile *f = run->file;
	if (!f)
		return;
	if (!run->failed && !atomic_load(&rs->error))
		(void)write_run(rs, f, run->buf, run->len, run->first * rs->chunk_size);
	for (uint64_t i = run->first; i < run->next; i++)
		task_done(rs, f);
	run->file = NULL;
}

/* Chunk ref into the run (flushing the run first where it does not follow on). */
static void rrun_add(Restorer *rs, RRun *run, ChunkReader *reader, const RRef *ref, size_t len,
		     const ChunkLoc *loc)
{
	if (run->file && (run->file != ref->file || run->next != ref->idx ||
			  run->len + rs->chunk_size > rs->run_cap))
		rrun_flush(rs, run);
	if (!run->file)
		*run = (RRun){.buf = run->buf, .file = ref->file, .first = ref->idx, .next = ref->idx};
	const ChunkId *id = &ref->file->ids[ref->idx];
	int r = loc ? chunk_reader_read_fast_at(reader, id, loc, len, run->buf + run->len)
		    : chunk_reader_read_fast(reader, id, len, run->buf + run->len);
	if (r < 0) {
		restorer_fail(rs, r, ref->file->path, ref->idx * rs->chunk_size);
		run->failed = true;
	}
	run->len += len;
	run->next++;
}

/*
 * Worker: restore the chunks of fetched windows, RESTORE_PART at a time (so
 * that the workers share a large window, and none is left alone with one at
 * the end), until no window is left to come. The last to finish a window
 * gives its buffer back.
 */
static void restore_windows(Restorer *rs, ChunkReader *reader, uint8_t *buf, uint8_t *have,
			    uint8_t *run_buf)
{
	RRun run = {.buf = run_buf};
	pthread_mutex_lock(&rs->lock);
	for (;;) {
		int64_t t0 = mono_ns();
		while (!rs->ready && !(rs->fetch_done && !rs->pending && !rs->n_fetching))
			pthread_cond_wait(&rs->cond_nonempty, &rs->lock);
		rs->ns_decode_wait += mono_ns() - t0;
		if (!rs->ready)
			break;
		RWin *w = rs->ready;
		size_t from = w->n_claimed, to = MIN(w->n_refs, from + RESTORE_PART);
		w->n_claimed = to;
		if (to == w->n_refs) {
			win_pop(&rs->ready, &rs->ready_tail);
			atomic_fetch_sub(&rs->n_unclaimed, 1);
		}
		pthread_mutex_unlock(&rs->lock);

		if (w->err < 0 && from == 0 && w->n_refs)
			restorer_fail(rs, w->err, w->refs[0].file->path,
				      w->refs[0].idx * rs->chunk_size);
		bool lent = reader && w->err == 0 && w->buf;
		ChunkLoc loc = {.pack = w->pack};
		if (lent) {
			chunk_reader_lend(reader, w->pack_name, w->off, w->buf, w->end - w->off);
			memcpy(loc.pack_name, w->pack_name, sizeof(loc.pack_name));
		}
		for (size_t i = from; i < to; i++) {
			RRef *ref = &w->refs[i];
			uint64_t off = ref->idx * rs->chunk_size;
			size_t len = (size_t)MIN(rs->chunk_size, ref->file->size - off);
			if (reader && !atomic_load(&rs->error)) {
				/* delta: the bytes in place, as the local path reads them */
				const uint8_t *in_place =
					have && !is_patch(ref->file, ref->idx) &&
							pread_full(ref->file->fd, have, len, (off_t)off) == (ssize_t)len
						? have : NULL;
				loc.offset = ref->offset;
				loc.elen = ref->elen;
				loc.plen = ref->plen;
				loc.crc = ref->crc;
				loc.enc = ref->enc;
				loc.has_crc = ref->has_crc;
				if (run_buf && ref->file->direct_fd >= 0) {
					rrun_add(rs, &run, reader, ref, len,
						 lent && ref->has_crc ? &loc : NULL);
					continue; /* done when the run is written */
				}
				int r = restore_chunk(rs, reader, ref->file, ref->idx, off, len, buf,
						      in_place, lent && ref->has_crc ? &loc : NULL);
				if (r < 0)
					restorer_fail(rs, r, ref->file->path, off);
				else
					progress_add(rs->o->progress, len);
			}
			task_done(rs, ref->file);
		}
		/* before waiting for another window: a held file could hold up the walk */
		rrun_flush(rs, &run);
		if (reader)
			chunk_reader_lend(reader, NULL, 0, NULL, 0);

		pthread_mutex_lock(&rs->lock);
		w->n_done += to - from;
		if (w->n_done == w->n_refs) {
			if (w->buf && w->end - w->off <= rs->buf_size && rs->n_free < rs->n_bufs_max) {
				rs->free_bufs[rs->n_free++] = w->buf;
				w->buf = NULL;
			}
			win_free(w);
			rs->n_bufs--;
			pthread_cond_broadcast(&rs->cond_nonempty);
		}
	}
	pthread_mutex_unlock(&rs->lock);
}

/*
 * Open window slot to be fetched; waits while RESTORE_WINDOWS_QUEUED are.
 * The window is handed on even after a failure: the workers drop its
 * references without restoring them. The next window may be larger.
 */
static int win_close(Restorer *rs, size_t slot)
{
	RWin *w = rs->open[slot];
	rs->open[slot] = NULL;
	if (w->pack >= 0) {
		log_debug("window of \"%s\": %llu bytes at %llu, %zu chunks", w->pack_name,
			  (unsigned long long)(w->end - w->off), (unsigned long long)w->off, w->n_refs);
		rs->win_limit = MIN(rs->win_limit * 2, rs->buf_size);
	}
	pthread_mutex_lock(&rs->lock);
	while (rs->n_pending >= RESTORE_WINDOWS_QUEUED && !atomic_load(&rs->error))
		pthread_cond_wait(&rs->cond_nonfull, &rs->lock);
	*rs->pending_tail = w;
	rs->pending_tail = &w->next;
	rs->n_pending++;
	atomic_fetch_add(&rs->n_unclaimed, 1);
	pthread_cond_broadcast(&rs->cond_nonempty);
	pthread_mutex_unlock(&rs->lock);
	return atomic_load(&rs->error);
}

/* Every open window to be fetched: the files of their chunks may then be let go of. */
static int win_close_all(Restorer *rs)
{
	int r = 0;
	for (size_t i = 0; i < RESTORE_OPEN_WINDOWS; i++) {
		int e = rs->open[i] ? win_close(rs, i) : 0;
		if (r == 0)
			r = e;
	}
	rs->n_open_files = 0;
	return r;
}

/* The open window of pack (-1: the one of chunks with nothing to fetch), or -1. */
static int win_find(const Restorer *rs, const ChunkLoc *loc)
{
	for (int i = 0; i < RESTORE_OPEN_WINDOWS; i++) {
		const RWin *w = rs->open[i];
		if (!w || w->pack != loc->pack)
			continue;
		/*
		 * A pack may have several open windows, in different places: the
		 * chunks of a snapshot's small files alternate between two regions
		 * of a pack, and one window a pack closed at each switch (a window
		 * of a few KiB a GET, 5 GETs per 8 MiB at pgbench scale 10).
		 */
		if (w->pack < 0 || (loc->offset <= w->end + RESTORE_WINDOW_GAP &&
				    loc->offset + loc->elen + RESTORE_WINDOW_GAP >= w->off))
			return i;
	}
	return -1;
}

/* A free slot, after closing the least recently used window if none is. */
static int win_slot(Restorer *rs, int *ret)
{
	int lru = 0;
	for (int i = 0; i < RESTORE_OPEN_WINDOWS; i++) {
		if (!rs->open[i]) {
			*ret = i;
			return 0;
		}
		if (rs->open[i]->last_use < rs->open[lru]->last_use)
			lru = i;
	}
	*ret = lru;
	return win_close(rs, (size_t)lru);
}

/*
 * Where chunks [from, from + n) of f are (n <= RESTORE_LOCATE_BATCH), into
 * rs->locs: one catalog read transaction for them all, not one per chunk
 * (SQLite takes and drops its WAL read lock, two fcntl calls, around each
 * statement outside one). A chunk the catalog cannot place gets pack -1: it
 * goes unfetched, and the worker's reader says why.
 */
static void win_locate(Restorer *rs, const RFile *f, uint64_t from, size_t n)
{
	int r = catalog_chunks_locate(repo_catalog(rs->repo), f->ids + from, n, rs->locs,
				      rs->loc_errs);
	for (size_t i = 0; i < n; i++)
		if (r < 0 || rs->loc_errs[i] < 0 || chunk_id_is_hole(&f->ids[from + i]))
			rs->locs[i].pack = -1;
}

/*
 * Chunk idx of f, found at loc (pack -1: nothing to fetch), into the open
 * window of its pack; that window is closed (queued to be fetched) first
 * when the chunk would make it longer than win_limit or is further than
 * RESTORE_WINDOW_GAP from it. On failure the chunk is not taken.
 */
static int win_add(Restorer *rs, RFile *f, uint64_t idx, const ChunkLoc *at, bool new_file)
{
	const ChunkLoc loc = *at;
	int slot, r = 0;

	if (new_file && rs->n_open_files >= RESTORE_OPEN_FILES)
		r = win_close_all(rs);
	if (r < 0)
		return r;
	slot = win_find(rs, &loc);
	if (slot >= 0) {
		const RWin *w = rs->open[slot];
		bool full = w->pack < 0 ? w->n_refs >= RESTORE_PART
					: MAX(w->end, loc.offset + loc.elen) - MIN(w->off, loc.offset) >
						  rs->win_limit;
		if (full && (r = win_close(rs, (size_t)slot)) < 0)
			return r;
		if (full)
			slot = -1;
	}
	if (slot < 0) {
		RWin *w;
		if ((r = win_slot(rs, &slot)) < 0)
			return r;
		if (!(w = calloc(1, sizeof(*w))))
			return -ENOMEM;
		*w = (RWin){.pack = loc.pack, .off = loc.offset, .end = loc.offset + loc.elen};
		memcpy(w->pack_name, loc.pack_name, sizeof(w->pack_name));
		rs->open[slot] = w;
	}
	RWin *w = rs->open[slot];
	if (w->n_refs == w->cap_refs) {
		size_t cap = MAX(64, w->cap_refs * 2);
		RRef *v = realloc(w->refs, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		w->refs = v;
		w->cap_refs = cap;
	}
	w->refs[w->n_refs++] = (RRef){.file = f, .idx = idx, .offset = loc.offset, .elen = loc.elen,
				      .plen = loc.plen, .crc = loc.crc, .enc = loc.enc,
				      .has_crc = loc.pack >= 0 && loc.has_crc};
	if (w->pack >= 0) {
		w->off = MIN(w->off, loc.offset);
		w->end = MAX(w->end, loc.offset + loc.elen);
	}
	w->last_use = ++rs->open_clock;
	rs->n_open_files += new_file;
	/* the chunk is taken: a failure shows at the next call */
	if (w->pack >= 0 && w->end - w->off >= RESTORE_WINDOW_EARLY &&
	    atomic_load(&rs->n_unclaimed) == 0)
		(void)win_close(rs, (size_t)slot);
	return 0;
}

static int dir_path_set(Restorer *rs, uint64_t ino, char *path)
{
	if (ino >= rs->n_dir_paths) {
		size_t n = MAX(ino + 1, rs->n_dir_paths * 2);
		char **v = realloc(rs->dir_paths, n * sizeof(char *));
		if (!v)
			return -ENOMEM;
		memset(v + rs->n_dir_paths, 0, (n - rs->n_dir_paths) * sizeof(char *));
		rs->dir_paths = v;
		rs->n_dir_paths = n;
	}
	rs->dir_paths[ino] = path;
	return 0;
}

static const char *link_target(Restorer *rs, const char *path)
{
	const char *rel = path + strlen(rs->target);
	if (*rel != '/')
		return NULL;
	for (size_t i = 0; i < rs->n_links; i++)
		if (!strcmp(rs->link_paths[i], rel + 1))
			return rs->link_targets[i];
	return NULL;
}

/* Delta: make room for an entry of type mode at path, unless one is there already. */
static int delta_prepare(const char *path, mode_t type, bool *ret_exists)
{
	struct stat st;
	*ret_exists = false;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if ((st.st_mode & S_IFMT) == type) {
		*ret_exists = true;
		return 0;
	}
	return rm_rf(path);
}

/* Delta: is path already a symlink to target? */
static bool symlink_is(const char *path, const char *target)
{
	char buf[PATH_MAX];
	ssize_t n = readlink(path, buf, sizeof(buf) - 1);
	if (n < 0)
		return false;
	buf[n] = 0;
	return strcmp(buf, target) == 0;
}

/* A symlink to target at path; delta keeps one that is already right, replaces anything else. */
static int place_symlink(Restorer *rs, const char *path, const char *target)
{
	bool exists = false;
	int r = 0;
	if (rs->o->delta) {
		r = delta_prepare(path, S_IFLNK, &exists);
		if (r == 0 && exists && !symlink_is(path, target))
			r = rm_rf(path), exists = false;
	}
	if (r < 0)
		return r;
	if (!exists && symlink(target, path) < 0)
		return -errno;
	return 0;
}

/* A linked directory: its contents go to the link's target, the path becomes a symlink. */
static int restore_linked_dir(Restorer *rs, const char *path, const char *target)
{
	int r = mkdir_p(target, 0700);
	return r < 0 ? r : place_symlink(rs, path, target);
}

/* Delta: remember a path of the snapshot (absolute, as written). */
static int seen_add(Restorer *rs, const char *path)
{
	if (!rs->o->delta)
		return 0;
	if (rs->n_seen == rs->cap_seen) {
		size_t cap = rs->cap_seen ? rs->cap_seen * 2 : 1024;
		char **v = realloc(rs->seen, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		rs->seen = v;
		rs->cap_seen = cap;
	}
	rs->seen[rs->n_seen] = strdup(path);
	return rs->seen[rs->n_seen++] ? 0 : -ENOMEM;
}

static bool is_kept_link(const Restorer *rs, const char *path)
{
	for (size_t i = 0; i < rs->n_kept_links; i++)
		if (!strcmp(rs->kept_links[i], path))
			return true;
	return false;
}

/* Delta: a symlink to a directory at path is kept (*ret_kept), its target taking the contents. */
static int delta_keep_dir_link(Restorer *rs, const char *path, bool *ret_kept)
{
	struct stat lst, st;
	*ret_kept = false;
	if (lstat(path, &lst) < 0 || !S_ISLNK(lst.st_mode) || stat(path, &st) < 0 ||
	    !S_ISDIR(st.st_mode))
		return 0;
	char **v = realloc(rs->kept_links, (rs->n_kept_links + 1) * sizeof(char *));
	if (!v)
		return -ENOMEM;
	rs->kept_links = v;
	if (!(v[rs->n_kept_links] = strdup(path)))
		return -ENOMEM;
	rs->n_kept_links++;
	*ret_kept = true;
	return sync_add(rs, path); /* its contents go where it points: another file system, maybe */
}

static int restore_dir(Restorer *rs, const FileRow *f, char *path)
{
	RDir *v = realloc(rs->dirs, (rs->n_dirs + 1) * sizeof(*v));
	bool root = f->ino == 1 || f->parent == f->ino; /* the target or an extra root */
	const char *target = root ? NULL : link_target(rs, path);
	int r;
	if (!v) {
		free(path);
		return -ENOMEM;
	}
	rs->dirs = v;
	r = root ? 0 : seen_add(rs, path);
	if (r == 0 && target) {
		r = restore_linked_dir(rs, path, target);
		free(path);
		if (r < 0)
			return r;
		if (!(path = strdup(target)))
			return -ENOMEM;
	} else if (r == 0 && f->ino != 1) {
		bool exists = false;
		if (rs->o->delta && f->parent == 1 && !strcmp(f->name, "pg_wal"))
			r = delta_keep_dir_link(rs, path, &exists);
		if (r == 0 && rs->o->delta && !exists)
			r = delta_prepare(path, S_IFDIR, &exists);
		if (r == 0 && !exists && mkdir(path, 0700) < 0)
			r = -errno;
	}
	if (r < 0) {
		free(path);
		return r;
	}
	r = dir_path_set(rs, f->ino, path);
	if (r < 0) {
		free(path);
		return r;
	}
	rs->dirs[rs->n_dirs++] = (RDir){.path = path, .mode = f->mode, .uid = f->uid,
					.gid = f->gid, .mtime_ns = f->mtime_ns};
	return 0;
}

static int restore_symlink(Restorer *rs, const FileRow *f, const char *path)
{
	struct timespec ts[2] = {{.tv_sec = f->mtime_ns / 1000000000,
				  .tv_nsec = f->mtime_ns % 1000000000}};
	int r = seen_add(rs, path);
	ts[1] = ts[0];
	if (r == 0)
		r = place_symlink(rs, path, f->target ? f->target : "");
	if (r < 0)
		return r;
	if (rs->as_root && lchown(path, f->uid, f->gid) < 0)
		return -errno;
	if (utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	return 0;
}

/*
 * A fresh file is all hole already; a delta target may hold bytes where holes
 * go, and has the chunks the restore record vouches for.
 */
static bool skip_chunk(const Restorer *rs, const RFile *rf, size_t i)
{
	return (!rs->o->delta && chunk_id_is_hole(&rf->ids[i])) || (rf->same && rf->same[i]);
}

/*
 * Delta, a file the last restore's record vouches for (e: unchanged since):
 * mark in rf->same the chunks it has in place already, by comparing the
 * chunk-id list it was restored with (e's content, if the catalog still has
 * it) with the snapshot's. Returns how many; 0 when e's list is gone.
 */
static int64_t record_same_ids(Restorer *rs, RFile *rf, const RestRecEntry *e, size_t n_ids)
{
	uint8_t key[RESTREC_KEY_LEN];
	ChunkId *old = NULL;
	size_t n_old = 0, same = 0;
	int r;

	rf->same = calloc(n_ids, sizeof(*rf->same));
	if (!rf->same)
		return -ENOMEM;
	restrec_key(rf->ids, n_ids, key);
	if (e->size == rf->size && !memcmp(key, e->key, sizeof(key))) {
		memset(rf->same, 1, n_ids * sizeof(*rf->same));
		return (int64_t)n_ids;
	}
	if (e->content <= 0)
		return 0;
	r = catalog_content_get(repo_catalog(rs->repo), e->content, &old, &n_old);
	if (r == -ENOENT || r == -EBADMSG) /* its row went with its snapshots: read the file */
		return 0;
	if (r < 0)
		return r;
	restrec_key(old, n_old, key);
	if (!memcmp(key, e->key, sizeof(key)) &&
	    n_old == (e->size + rs->chunk_size - 1) / rs->chunk_size)
		for (size_t i = 0; i < MIN(n_ids, n_old); i++)
			if (!memcmp(&old[i], &rf->ids[i], sizeof(ChunkId))) {
				rf->same[i] = true;
				same++;
			}
	free(old);
	return (int64_t)same;
}

/*
 * Chunks holding a block PostgreSQL wrote since the record (changed: a bit
 * per 8 KiB block, nblocks of them), or reaching past the in_place bytes
 * the file holds now (truncated since), are not in place.
 */
static int64_t wal_unsame(const Restorer *rs, RFile *rf, size_t n_ids, const uint8_t *changed,
			  uint64_t nblocks, uint64_t in_place, int64_t n)
{
	uint64_t per = rs->chunk_size / WAL_BLOCK;
	if (per <= 64 && !(rf->patch = calloc(n_ids, sizeof(*rf->patch))))
		return -ENOMEM;
	for (size_t i = 0; n > 0 && i < n_ids; i++) {
		/* a chunk reaching past the bytes in place (truncated since) is not all there */
		uint64_t end = MIN((i + 1) * rs->chunk_size, rf->size), mask = 0;
		if (!rf->same[i])
			continue;
		for (uint64_t b = i * per; end <= in_place && b < MIN((i + 1) * per, nblocks); b++)
			if (changed[b / 8] & (1u << (b % 8)))
				mask |= 1ull << (b - i * per);
		if (end <= in_place && !mask)
			continue;
		rf->same[i] = false;
		n--;
		if (rf->patch && end <= in_place)
			rf->patch[i] = mask; /* the record's and the snapshot's agree but for these */
	}
	return n;
}

/* What PostgreSQL's WAL is asked about path as: under the target, or a tablespace's pg_tblspc/OID/... */
static const char *wal_name(const Restorer *rs, const char *path, char *buf, size_t len)
{
	const char *name = record_name(rs, path);
	for (size_t i = 0; name[0] == '/' && i < rs->n_links; i++) {
		size_t n = strlen(rs->link_targets[i]);
		if (!strncmp(path, rs->link_targets[i], n) && path[n] == '/') {
			snprintf(buf, len, "%s/%s", rs->link_paths[i], path + n + 1);
			return buf;
		}
	}
	return name;
}

/*
 * Delta: a file the record knows (e) that has been written since (st: the
 * same inode, another ctime, any size): the blocks PostgreSQL's WAL says it
 * wrote, over both sizes (*ret, malloc'd). 1: not known, the file is read as
 * any other.
 */
static int wal_changed(Restorer *rs, const RestRecEntry *e, const struct stat *st, const char *path,
		       uint8_t **ret)
{
	const RestoreWal *w = rs->o->wal;
	char buf[PATH_MAX];
	const char *name = wal_name(rs, path, buf, sizeof(buf));
	uint64_t nblocks = MAX(e->size, (uint64_t)st->st_size) / WAL_BLOCK;
	if (!rs->wal_ready || !restrec_same_inode(e, st) || e->size % WAL_BLOCK ||
	    st->st_size % WAL_BLOCK || !nblocks)
		return 1;
	uint8_t *changed = malloc((nblocks + 7) / 8);
	if (!changed)
		return -ENOMEM;
	int r = w->file(w->ud, name, nblocks, changed);
	if (r != 0) {
		log_debug("delta: %s: read whole (PostgreSQL's WAL does not say which blocks changed)", name);
		free(changed);
		return r < 0 ? r : 1;
	}
	uint64_t n = 0;
	for (uint64_t b = 0; b < nblocks; b++)
		n += (changed[b / 8] >> (b % 8)) & 1;
	log_debug("delta: %s: %llu of %llu blocks written since, by PostgreSQL's WAL", name,
		  (unsigned long long)n, (unsigned long long)nblocks);
	*ret = changed;
	return 0;
}

/*
 * Delta, a file PostgreSQL's WAL answered for: its patches are only written,
 * through the cache (syncfs merges them); when an eighth or more of its
 * chunks must be read in place (the record and the snapshot disagree on
 * them), they are read as a file the record does not know (delta_read_plan).
 */
static void delta_read_plan(const Restorer *rs, RFile *rf, uint64_t size, bool whole);
static void wal_read_plan(Restorer *rs, RFile *rf, size_t n_ids, uint64_t in_place)
{
	size_t n_read = 0;
	for (size_t i = 0; i < n_ids; i++)
		n_read += !rf->same[i] && !is_patch(rf, i);
	if (in_place > 0 && n_read > 0 && n_read >= n_ids / 8)
		delta_read_plan(rs, rf, MIN(in_place, rf->size), false);
	rs->res->n_wal++;
}

/* record_same_ids (less what PostgreSQL wrote since), counting the bytes it spares reading. */
static int64_t record_same(Restorer *rs, RFile *rf, const RestRecEntry *e, size_t n_ids,
			   const uint8_t *changed, uint64_t nblocks, uint64_t in_place)
{
	int64_t n = record_same_ids(rs, rf, e, n_ids);
	if (n > 0 && changed)
		n = wal_unsame(rs, rf, n_ids, changed, nblocks, in_place, n);
	if (n < 0)
		return n;
	for (size_t i = 0; n > 0 && i < n_ids; i++)
		if (rf->same[i])
			rs->res->bytes_known += MIN(rs->chunk_size, rf->size - i * rs->chunk_size);
	return n;
}

/* Chunks from i that one task takes: up to rs->batch, none skipped. */
static uint32_t run_length(const Restorer *rs, const RFile *rf, size_t i, size_t n)
{
	uint32_t k = 1;
	while (i + k < n && k < rs->batch && !skip_chunk(rs, rf, i + k) && !is_patch(rf, i) &&
	       !is_patch(rf, i + k))
		k++;
	return k;
}

static uint64_t count_tasks(const Restorer *rs, const RFile *rf, size_t from, size_t n)
{
	uint64_t tasks = 0;
	for (size_t i = from; i < n;) {
		if (skip_chunk(rs, rf, i)) {
			i++;
			continue;
		}
		i += run_length(rs, rf, i, n);
		tasks++;
	}
	return tasks;
}

/*
 * Delta: how the bytes in place of rf (the first size of them) will be read.
 * A file mostly out of the page cache is read with O_DIRECT: through the
 * cache every page read is a fresh page-cache page, and on a VM that hands
 * freed memory back to its host (free page reporting) each one costs a
 * fault there: 672 MB read cold took 0.85 s (0.82 s system) that way, 0.33 s
 * direct in 1 MiB reads. A file mostly in the cache (PostgreSQL just
 * stopped on it) is read through it, and WILLNEED starts on the rest now.
 * So is every file of a remote restore, which reads a chunk at a time.
 */
static void delta_read_plan(const Restorer *rs, RFile *rf, uint64_t size, bool whole)
{
	uint64_t cached;
	if (!rs->remote && size >= RESTORE_DIRECT_MIN && file_cached_bytes(rf->fd, &cached) == 0 &&
	    cached < size / 2) {
		rf->direct_fd = open(rf->path, O_RDWR | O_DIRECT | O_CLOEXEC | O_NOFOLLOW);
		rf->read_direct = rf->direct_fd >= 0;
		if (rf->read_direct)
			return;
		rf->direct_fd = DIRECT_UNTRIED;
	}
	if (whole)
		(void)posix_fadvise(rf->fd, 0, (off_t)size, POSIX_FADV_WILLNEED);
}

/*
 * A fresh file written past the cache gets its blocks now, all of them but
 * its holes' (which stay holes), in as few extents as the file system can:
 * from S3 its chunks are written in the order the packs hold them, 8 MiB here
 * and there, and allocated as they came, a 1 GiB segment ended in 44-91
 * extents (ext4; 5-20 now), and every direct write into a hole took the
 * inode's lock exclusively, so two workers writing one file waited on each
 * other. Best effort: a file system without fallocate allocates as before.
 */
static void preallocate(const Restorer *rs, const RFile *rf, size_t n_ids)
{
	for (size_t i = 0; i < n_ids;) {
		size_t j = i;
		while (j < n_ids && !chunk_id_is_hole(&rf->ids[j]))
			j++;
		if (j > i) {
			uint64_t from = i * rs->chunk_size, to = MIN(j * rs->chunk_size, rf->size);
			if (fallocate(rf->fd, 0, (off_t)from, (off_t)(to - from)) < 0)
				return;
		}
		i = j + 1;
	}
}

static int restore_regular(Restorer *rs, const FileRow *f, char *path)
{
	RFile *rf = calloc(1, sizeof(*rf));
	const RestRecEntry *known = NULL; /* delta: unchanged since the last restore recorded it */
	uint8_t *changed = NULL; /* delta: ...but for these blocks PostgreSQL wrote since */
	uint64_t in_place = 0;   /* delta: the size of the file found there */
	size_t n_ids = 0;
	int r = 0;

	if (!rf) {
		free(path);
		return -ENOMEM;
	}
	*rf = (RFile){.fd = -1, .direct_fd = DIRECT_UNTRIED, .path = path, .mode = f->mode, .uid = f->uid, .gid = f->gid,
		      .mtime_ns = f->mtime_ns, .size = f->size, .content = f->content};
	if (rs->o->delta) {
		/*
		 * No file is skipped for its size and mtime (rsync's quick check,
		 * what this did before): bytes changed with size and mtime put back
		 * (touch -d, cp -p, a copy from another restore, a file system
		 * that lost writes) would stay, silently. Every chunk is compared:
		 * read and checked against its fh, at memory speed.
		 */
		r = seen_add(rs, path);
		if (r == 0)
			r = delta_prepare(path, S_IFREG, &rf->existed);
		if (r < 0)
			goto fail;
		rf->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	} else {
		rf->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	}
	if (rf->fd < 0) {
		r = -errno;
		goto fail;
	}
	if (rs->o->delta) {
		struct stat st;
		if (fstat(rf->fd, &st) < 0) {
			r = -errno;
			goto fail;
		}
		/* taken: reached, so the record of this delta says what it is now, or nothing */
		in_place = (uint64_t)st.st_size;
		if (rs->prev && (known = restrec_take(rs->prev, record_name(rs, path))) &&
		    !restrec_matches(known, &st)) {
			r = wal_changed(rs, known, &st, path, &changed);
			if (r < 0)
				goto fail;
			if (r > 0)
				known = NULL;
			r = 0;
		}
		if ((uint64_t)st.st_size != f->size && ftruncate(rf->fd, (off_t)f->size) < 0) {
			r = -errno;
			goto fail;
		}
		if ((uint64_t)st.st_size != f->size)
			atomic_init(&rf->written, 1); /* not unchanged, whatever its chunks */
		/*
		 * Start reading the bytes in place now, as the walk runs ahead of
		 * the workers: a target not in the page cache (a cold start) keeps
		 * the disk busy instead of waiting on one 1 MiB read at a time.
		 * (Not a file the record vouches for: few of its chunks, if any,
		 * are read; one PostgreSQL's WAL answers for, below.)
		 */
		if (st.st_size > 0 && !known)
			delta_read_plan(rs, rf, MIN((uint64_t)st.st_size, f->size), true);
		rf->meta_same = (st.st_mode & 07777) == (f->mode & 07777) &&
				(!rs->as_root || (st.st_uid == f->uid && st.st_gid == f->gid)) &&
				(int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec == f->mtime_ns;
	} else if (f->size > 0 && ftruncate(rf->fd, (off_t)f->size) < 0) {
		r = -errno;
		goto fail;
	} else if (f->size >= RESTORE_DIRECT_MIN) {
		/* opened here, before any worker can use it (write_direct opens lazily) */
		rf->direct_fd = open(path, O_WRONLY | O_DIRECT | O_CLOEXEC | O_NOFOLLOW);
		if (rf->direct_fd < 0)
			rf->direct_fd = DIRECT_NONE;
	}
	if (f->content) {
		r = catalog_content_get(repo_catalog(rs->repo), f->content, &rf->ids, &n_ids);
		if (r < 0)
			goto fail;
		if (n_ids != (f->size + rs->chunk_size - 1) / rs->chunk_size) {
			r = -EBADMSG;
			goto fail;
		}
	}
	if (!rs->o->delta && rf->direct_fd >= 0) /* a delta's direct_fd reads: it has its blocks */
		preallocate(rs, rf, n_ids);
	if (known) {
		/* changed: blocks of both sizes, in place up to in_place */
		uint64_t nblocks = MAX(known->size, in_place) / WAL_BLOCK;
		int64_t same = n_ids > 0 ? record_same(rs, rf, known, n_ids, changed, nblocks, in_place) : 0;
		if (same < 0) {
			r = (int)same;
			goto fail;
		}
		if (changed)
			wal_read_plan(rs, rf, n_ids, in_place);
		else if ((size_t)same == n_ids && known->size == f->size)
			rs->res->n_known++;
	}
	free(changed);
	changed = NULL;
	if (rs->o->delta && n_ids > 0 && !(rf->same && count_tasks(rs, rf, 0, n_ids) == 0)) {
		/* all of the file's at once: one lookup per chunk by each worker cost more than the hashing */
		rf->fh = malloc(n_ids * sizeof(*rf->fh));
		rf->has_fh = malloc(n_ids * sizeof(*rf->has_fh));
		r = rf->fh && rf->has_fh ? catalog_chunk_fh_get(repo_catalog(rs->repo), rf->ids, n_ids,
								  rf->fh, rf->has_fh)
					 : -ENOMEM;
		if (r < 0)
			goto fail;
	}
	rs->res->n_files++;
	rs->res->bytes += f->size;
	/* +1 held by us while queueing, so the file cannot finish under our feet */
	atomic_init(&rf->remaining, count_tasks(rs, rf, 0, n_ids) + 1);
	bool first = true;
	size_t located = 0; /* remote: chunks [located - RESTORE_LOCATE_BATCH, located) in rs->locs */
	for (size_t i = 0; i < n_ids;) {
		if (skip_chunk(rs, rf, i)) {
			progress_add(rs->o->progress, MIN(rs->chunk_size, f->size - i * rs->chunk_size));
			i++;
			continue;
		}
		uint32_t k = run_length(rs, rf, i, n_ids);
		if (rs->remote && i >= located) {
			win_locate(rs, rf, i, MIN(RESTORE_LOCATE_BATCH, n_ids - i));
			located = i + RESTORE_LOCATE_BATCH;
		}
		if (rs->remote) /* one chunk a task (rs->batch is 1) */
			r = win_add(rs, rf, i, &rs->locs[i - (located - RESTORE_LOCATE_BATCH)], first);
		else
			r = queue_task(rs, rf, i, k);
		first = false;
		if (r < 0) {
			/* tasks not queued will never run: drop their references */
			atomic_fetch_sub(&rf->remaining, count_tasks(rs, rf, i, n_ids));
			break;
		}
		i += k;
	}
	task_done(rs, rf);
	return r < 0 ? r : 0;
fail:
	free(changed);
	restorer_fail(rs, r, path, 0);
	rfile_free(rf);
	return r;
}

/*
 * The restore record of the target: a delta loads the last one (a damaged or
 * foreign one is ignored: every file is read), then it is removed before
 * anything is written (a restore that fails or is killed leaves only the
 * record of the files it finished), and a new one is started. Without a
 * record directory, or one we cannot use, the restore goes on without (with
 * a warning).
 */
static void record_begin(Restorer *rs)
{
	const RepoConfig *cfg = repo_config(rs->repo);
	char abs[PATH_MAX];
	struct stat st;
	int r;

	if (!rs->o->record_dir)
		return;
	if (!realpath(rs->target, abs) || stat(abs, &st) < 0 ||
	    asprintf(&rs->record_path, "%s/%llx-%llx", rs->o->record_dir,
		     (unsigned long long)st.st_dev, (unsigned long long)st.st_ino) < 0) {
		rs->record_path = NULL;
		return;
	}
	if (rs->o->delta) {
		r = restrec_load(rs->record_path, cfg->id, cfg->chunk_size, &rs->prev);
		if (r < 0 && r != -ENOENT && r != -ESTALE)
			log_warning("ignoring restore record %s (%s): every file of the target is read",
				    rs->record_path, strerror(-r));
	}
	r = mkdir_p(rs->o->record_dir, 0700);
	if (r == 0 && unlink(rs->record_path) < 0 && errno != ENOENT)
		r = -errno;
	if (r == 0)
		r = restrec_new(cfg->id, cfg->chunk_size, abs, &rs->next);
	if (r < 0) {
		log_warning("cannot keep a restore record in %s (%s): the next --delta into the "
			    "target reads every file", rs->o->record_dir, strerror(-r));
		free(rs->record_path);
		rs->record_path = NULL;
	}
}

/*
 * The record of the files finished so far, once they are durable: at the
 * end, on a failure, and every record_every_ns meanwhile (an interrupted
 * restore is resumed by --delta without reading them again).
 */
static int record_save(Restorer *rs, bool whole)
{
	size_t n = restrec_count(rs->next);
	int r = sync_written(rs);
	/*
	 * Until the walk is whole, the last record's entries of files not
	 * reached yet are still true (each is checked against its file when
	 * used): a delta that stops early keeps them for the next one.
	 */
	if (r == 0)
		r = restrec_save(rs->next, rs->record_path, n, whole ? NULL : rs->prev);
	if (r < 0) {
		log_warning("cannot write restore record %s (%s): the next --delta into the target "
			    "reads every file", rs->record_path, strerror(-r));
		rs->record_failed = true; /* no more tries (workers may still add to it) */
	}
	rs->record_at = mono_ns();
	return r;
}

/* Main thread, between files: the record of those finished, if it is time. */
static void record_checkpoint(Restorer *rs)
{
	int64_t every = rs->o->record_every_ns > 0 ? rs->o->record_every_ns : RESTORE_RECORD_EVERY;
	if (rs->next && !rs->record_failed && mono_ns() - rs->record_at >= every)
		(void)record_save(rs, false);
}

/*
 * Delta, before anything is written: can PostgreSQL's WAL tell what it wrote
 * since the last record (its LSN), while the target is still as it left it?
 */
static int wal_open(Restorer *rs)
{
	const RestoreWal *w = rs->o->wal;
	char *why = rs->res->wal_note;
	size_t why_len = sizeof(rs->res->wal_note);
	int r;
	if (!w || !rs->prev)
		return 0;
	if (rs->chunk_size % WAL_BLOCK) {
		snprintf(why, why_len, "the chunk size is not a multiple of 8 KiB");
		return 0;
	}
	r = w->open(w->ud, rs->target, restrec_lsn(rs->prev), restrec_written_ns(rs->prev), why, why_len);
	rs->wal_ready = r == 0;
	if (r == 0)
		why[0] = 0;
	return r < 0 ? r : 0;
}

/* A restore done (r: how): the record of what it finished, for the next delta. */
static void record_end(Restorer *rs, int r)
{
	if (!rs->next || rs->record_failed ||
	    (r < 0 && restrec_count(rs->next) == 0 && (!rs->prev || !restrec_count(rs->prev))))
		return;
	/* whole: its files are the snapshot's, changed from the snapshot's LSN on */
	if (r == 0 && rs->o->wal)
		restrec_set_lsn(rs->next, rs->o->wal->record_lsn(rs->o->wal->ud, rs->target));
	rs->res->recorded = record_save(rs, r == 0) == 0 && r == 0;
	restrec_prune(rs->o->record_dir);
}

static int restore_entry(const FileRow *f, void *userdata)
{
	Restorer *rs = userdata;
	const char *parent;
	char *path;
	int r;

	if (atomic_load(&rs->error))
		return atomic_load(&rs->error);
	record_checkpoint(rs);
	if (f->ino == 1) {
		path = strdup(rs->target);
	} else if (f->parent == f->ino) {
		/* an extra root: beside the target, under its original absolute path */
		if (f->name[0] != '/' || strstr(f->name, "/../") || strstr(f->name, "//"))
			return -EBADMSG;
		if (asprintf(&path, "%s.extra%s", rs->target, f->name) < 0)
			path = NULL;
		if (path) {
			char dir[PATH_MAX];
			path_dirname(path, dir, sizeof(dir));
			r = mkdir_p(dir, 0700);
			if (r < 0) {
				free(path);
				return r;
			}
		}
	} else {
		if (f->parent >= rs->n_dir_paths || !rs->dir_paths[f->parent] || strchr(f->name, '/') ||
		    !strcmp(f->name, "..") || !strcmp(f->name, ".") || !*f->name)
			return -EBADMSG; /* a catalog must never place a file outside the target */
		parent = rs->dir_paths[f->parent];
		if (asprintf(&path, "%s/%s", parent, f->name) < 0)
			path = NULL;
	}
	if (!path)
		return -ENOMEM;
	if (S_ISDIR(f->mode))
		r = restore_dir(rs, f, path);
	else if (S_ISLNK(f->mode)) {
		r = restore_symlink(rs, f, path);
		if (r < 0)
			restorer_fail(rs, r, path, 0);
		free(path);
	} else if (S_ISREG(f->mode) && !strcmp(path, rs->control_path)) {
		/* written last, see above */
		rs->control = (FileRow){.mode = f->mode, .uid = f->uid, .gid = f->gid,
					.mtime_ns = f->mtime_ns, .size = f->size,
					.content = f->content};
		rs->control_pending = true;
		r = seen_add(rs, path);
		free(path);
	} else if (S_ISREG(f->mode))
		r = restore_regular(rs, f, path);
	else {
		free(path);
		r = -EBADMSG;
	}
	return r;
}

static void closedirp(DIR **d)
{
	if (*d)
		closedir(*d);
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Delta: remove under dir what the snapshot does not have (never following symlinks). */
static int sweep_dir(Restorer *rs, const char *dir)
{
	_cleanup_(closedirp) DIR *d = opendir(dir);
	struct dirent *de;
	int r = 0;

	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while (r == 0 && (errno = 0, de = readdir(d))) {
		_cleanup_free_ char *path = NULL;
		const char *key;
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (asprintf(&path, "%s/%s", dir, de->d_name) < 0)
			return -ENOMEM;
		key = path;
		if (!bsearch(&key, rs->seen, rs->n_seen, sizeof(char *), str_cmp)) {
			r = rm_rf(path);
			rs->res->n_removed++;
		} else if (de->d_type == DT_DIR || (de->d_type == DT_LNK && is_kept_link(rs, path))) {
			r = sweep_dir(rs, path);
		}
	}
	return r;
}

static int sweep_extras(Restorer *rs)
{
	int r;
	qsort(rs->seen, rs->n_seen, sizeof(char *), str_cmp);
	r = sweep_dir(rs, rs->target);
	for (size_t i = 0; r == 0 && i < rs->n_links; i++)
		r = sweep_dir(rs, rs->link_targets[i]);
	if (r < 0)
		restorer_fail(rs, r, rs->target, 0);
	return r;
}

static int restore_dirs_meta(Restorer *rs)
{
	/* children have larger inos than parents: go backwards */
	for (size_t i = rs->n_dirs; i-- > 0;) {
		RDir *d = &rs->dirs[i];
		_cleanup_close_ int fd = open(d->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		int r = fd < 0 ? -errno : apply_meta_fd(rs, fd, d->mode, d->uid, d->gid, d->mtime_ns);
		if (r < 0) {
			restorer_fail(rs, r, d->path, 0);
			return r;
		}
	}
	return 0;
}

/* Set a restored directory's mode, owner and mtime again (a file was added to it since). */
static int restore_dir_meta_again(Restorer *rs, const char *path)
{
	for (size_t i = 0; i < rs->n_dirs; i++) {
		RDir *d = &rs->dirs[i];
		if (strcmp(d->path, path) != 0)
			continue;
		_cleanup_close_ int fd = open(d->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		int r = fd < 0 ? -errno : apply_meta_fd(rs, fd, d->mode, d->uid, d->gid, d->mtime_ns);
		if (r == 0 && fsync(fd) < 0)
			r = -errno;
		return r;
	}
	return 0;
}

/* global/pg_control, after everything else is durable: its chunks, fsync, its directory. */
static int restore_control(Restorer *rs)
{
	const FileRow *f = &rs->control;
	RFile rf = {.fd = -1, .direct_fd = DIRECT_UNTRIED, .path = rs->control_path, .size = f->size};
	ChunkReader *reader = NULL;
	uint8_t *buf = NULL;
	size_t n_ids = 0;
	int r = 0;

	if (!rs->control_pending)
		return 0;
	rf.fd = open(rs->control_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (rf.fd < 0)
		r = -errno;
	if (r == 0 && f->size > 0 && ftruncate(rf.fd, (off_t)f->size) < 0)
		r = -errno;
	if (r == 0 && f->content) {
		r = catalog_content_get(repo_catalog(rs->repo), f->content, &rf.ids, &n_ids);
		if (r == 0 && n_ids != (f->size + rs->chunk_size - 1) / rs->chunk_size)
			r = -EBADMSG;
	}
	if (r == 0 && n_ids > 0) {
		buf = malloc(rs->chunk_size);
		r = buf ? chunk_reader_new(rs->repo, &reader) : -ENOMEM;
	}
	for (size_t i = 0; r == 0 && i < n_ids; i++) {
		uint64_t off = i * rs->chunk_size;
		size_t len = (size_t)MIN(rs->chunk_size, f->size - off);
		if (!chunk_id_is_hole(&rf.ids[i]))
			r = restore_chunk(rs, reader, &rf, i, off, len, buf, NULL, NULL);
		if (r < 0)
			rs->res->failed_offset = off;
	}
	if (r == 0)
		r = apply_meta_fd(rs, rf.fd, f->mode, f->uid, f->gid, f->mtime_ns);
	if (r == 0 && fsync(rf.fd) < 0)
		r = -errno;
	if (rf.fd >= 0 && close(rf.fd) < 0 && r == 0)
		r = -errno;
	if (r == 0)
		r = restore_dir_meta_again(rs, rs->global_path);
	if (r < 0) {
		snprintf(rs->res->failed_path, sizeof(rs->res->failed_path), "%s", rs->control_path);
		unlink(rs->control_path); /* none rather than a partial one */
	} else {
		rs->res->n_files++;
		rs->res->bytes += f->size;
		progress_add(rs->o->progress, f->size);
	}
	chunk_reader_free(reader);
	free(buf);
	free(rf.ids);
	return r;
}

/* Delta: the old pg_control goes first, durably, so an interrupted delta leaves none either. */
static int delta_remove_control(Restorer *rs)
{
	if (unlink(rs->control_path) < 0)
		return errno == ENOENT || errno == ENOTDIR ? 0 : -errno;
	_cleanup_close_ int fd = open(rs->global_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0)
		return -errno;
	return 0;
}

static int restore_run(Restorer *rs, const SnapshotInfo *snap)
{
	int n_workers = rs->jobs;
	int n_fetchers = rs->remote ? (int)MIN((size_t)MAX(2, n_workers), rs->n_bufs_max - 1) : 0;
	int n_writers = rs->finishing ? DELTA_WRITERS : 0;
	pthread_t *threads = calloc((size_t)(n_workers + n_fetchers), sizeof(pthread_t));
	pthread_t writers[DELTA_WRITERS];
	int n_started = 0, n_fetch_started = 0, n_write_started = 0, r;

	if (!threads)
		return -ENOMEM;
	for (; n_write_started < n_writers; n_write_started++)
		if (pthread_create(&writers[n_write_started], NULL, delta_writer, rs) != 0)
			break;
	if (n_write_started == 0 && rs->finishing) /* none: files finish where their tasks do */
		rs->finishing = workqueue_free(rs->finishing);
	for (; n_started < n_workers; n_started++)
		if (pthread_create(&threads[n_started], NULL, restore_worker, rs) != 0)
			break;
	for (; n_fetch_started < n_fetchers; n_fetch_started++)
		if (pthread_create(&threads[n_started + n_fetch_started], NULL, fetch_worker, rs) != 0)
			break;
	r = n_started > 0 && (n_fetch_started > 0 || !rs->remote) ? 0 : -EAGAIN;
	if (r == 0)
		r = catalog_file_foreach(repo_catalog(rs->repo), snap->rowid, restore_entry, rs);
	if (rs->remote) {
		int e = win_close_all(rs); /* every reference is handed on, even after a failure */
		if (r == 0)
			r = e;
	}
	if (r < 0)
		restorer_fail(rs, r, NULL, 0);

	if (rs->tasks)
		workqueue_close(rs->tasks);
	pthread_mutex_lock(&rs->lock);
	rs->fetch_done = true;
	pthread_cond_broadcast(&rs->cond_nonempty);
	pthread_mutex_unlock(&rs->lock);
	for (int i = 0; i < n_started + n_fetch_started; i++)
		pthread_join(threads[i], NULL);
	free(threads);
	if (rs->finishing) /* after the workers and the walk: no file is left to queue */
		workqueue_close(rs->finishing);
	for (int i = 0; i < n_write_started; i++)
		pthread_join(writers[i], NULL);
	if (rs->remote)
		log_debug("windows: workers waited %.3f s for them; fetch threads fetched %.3f s, "
			  "waited %.3f s", (double)rs->ns_decode_wait / 1e9, (double)rs->ns_fetching / 1e9,
			  (double)rs->ns_fetch_wait / 1e9);

	r = atomic_load(&rs->error);
	if (r == 0 && rs->o->delta)
		r = sweep_extras(rs);
	if (r == 0)
		r = restore_dirs_meta(rs);
	rs->res->bytes_written = atomic_load(&rs->bytes_written);
	rs->res->bytes_sha256 = atomic_load(&rs->bytes_sha256);
	rs->res->n_unchanged = atomic_load(&rs->n_unchanged);
	if (r == 0) {
		int64_t t0 = mono_ns();
		r = sync_written(rs);
		log_debug("written bytes made durable in %.3f s", (double)(mono_ns() - t0) / 1e9);
	}
	if (r == 0)
		r = restore_control(rs);
	return r;
}

static int collect_link(const char *path, const char *target, void *userdata)
{
	Restorer *rs = userdata;
	const char *to = target;
	char **p = realloc(rs->link_paths, (rs->n_links + 1) * sizeof(char *));
	char **t = p ? realloc(rs->link_targets, (rs->n_links + 1) * sizeof(char *)) : NULL;
	if (p)
		rs->link_paths = p;
	if (t)
		rs->link_targets = t;
	if (!p || !t)
		return -ENOMEM;
	for (size_t i = 0; i < rs->o->n_maps; i++)
		if (!strcmp(rs->o->maps[i].from, target))
			to = rs->o->maps[i].to;
	p[rs->n_links] = strdup(path);
	t[rs->n_links] = strdup(to);
	rs->n_links++;
	return p[rs->n_links - 1] && t[rs->n_links - 1] ? 0 : -ENOMEM;
}

/* Every place we will write must be empty, before we write anything. */
static int check_link_targets(Restorer *rs)
{
	char extra[PATH_MAX];
	int e;
	snprintf(extra, sizeof(extra), "%s.extra", rs->target);
	e = dir_is_empty(extra);
	if (e <= 0) {
		snprintf(rs->res->failed_path, sizeof(rs->res->failed_path), "%s", extra);
		return e < 0 ? e : -ENOTEMPTY;
	}
	for (size_t i = 0; i < rs->n_links; i++) {
		int r = dir_is_empty(rs->link_targets[i]);
		if (r <= 0) {
			snprintf(rs->res->failed_path, sizeof(rs->res->failed_path), "%s",
				 rs->link_targets[i]);
			return r < 0 ? r : -ENOTEMPTY;
		}
	}
	return 0;
}

/*
 * Hold the snapshot for a session of ours: -ENOENT when it was deleted since
 * the caller found it. A repository we may only read (no lock directory of
 * ours) is restored without a hold.
 */
static int hold_snapshot(Repo *repo, const SnapshotInfo *snap, RepoSession **ret)
{
	RepoSession *session = NULL;
	int r = repo_session_begin(repo, "restore", &session);
	if (r == -EACCES || r == -EPERM || r == -EROFS) {
		log_warning("cannot hold snapshot \"%s\" during the restore (%s): a delete and gc "
			    "meanwhile would make it fail", snap->name, strerror(-r));
		return 0;
	}
	if (r == 0)
		r = catalog_snapshot_hold(repo_catalog(repo), repo_session_id(session), snap->rowid);
	if (r < 0)
		session = repo_session_end(repo, session);
	*ret = session;
	return r;
}

/* A worker's run: RESTORE_DIRECT_RUN, less with many jobs, whole chunks, at least one. */
static size_t run_bytes(uint64_t chunk_size, int jobs)
{
	size_t run = MIN(RESTORE_DIRECT_RUN, RESTORE_RUNS_MAX / (size_t)MAX(jobs, 1));
	return (size_t)MAX(chunk_size, run / chunk_size * chunk_size);
}

int restore_snapshot(Repo *repo, const SnapshotInfo *snap, const char *target,
		     const RestoreOptions *o, RestoreResult *ret)
{
	Restorer rs = {.repo = repo, .o = o, .res = ret, .target = target, .as_root = geteuid() == 0,
		       .chunk_size = repo_config(repo)->chunk_size, .batch = 1};
	rs.jobs = o->jobs > 0 ? o->jobs : cpu_count();
	rs.run_cap = run_bytes(rs.chunk_size, rs.jobs); /* holds a task: batch * chunk_size */
	RepoSession *session = NULL;
	int r;

	rs.remote = !repo_is_local_backend(repo);
	rs.pending_tail = &rs.pending;
	rs.ready_tail = &rs.ready;
	if (rs.remote) {
		rs.buf_size = RESTORE_WINDOW(&rs) + RESTORE_WINDOW(&rs) / 8;
		rs.n_bufs_max = MAX(3, MIN((size_t)(rs.jobs + 2), RESTORE_WINDOW_BUFFERS / rs.buf_size));
		rs.win_limit = MIN(rs.buf_size / 8, RESTORE_WINDOW_FIRST);
	} else if (o->delta) { /* most chunks are only read and hashed: DELTA_READ a task, not one chunk */
		rs.batch = (uint32_t)MAX(1, DELTA_READ / rs.chunk_size);
	} else { /* a run a task, written at once (restore_task_run) */
		rs.batch = (uint32_t)(rs.run_cap / rs.chunk_size);
	}

	*ret = (RestoreResult){0};
	/* a damaged catalog must not name, place or fill a file wrongly */
	r = tree_digest_verify(repo_catalog(repo), snap);
	if (r < 0)
		return r == -EBADMSG ? -EUCLEAN : r;
	r = dir_is_empty(target); /* 1 for a missing directory too */
	if (r < 0)
		return r;
	if (r == 0 && !o->delta)
		return -ENOTEMPTY;
	if (asprintf(&rs.global_path, "%s/global", target) < 0)
		rs.global_path = NULL;
	if (asprintf(&rs.control_path, "%s/global/pg_control", target) < 0)
		rs.control_path = NULL;
	if (!rs.global_path || !rs.control_path) {
		r = -ENOMEM;
		goto out;
	}
	r = hold_snapshot(repo, snap, &session);
	if (r == 0)
		r = catalog_link_foreach(repo_catalog(repo), snap->rowid, collect_link, &rs);
	if (r == 0 && !o->delta)
		r = check_link_targets(&rs);
	if (r == 0)
		r = mkdir_p(target, 0700);
	if (r == 0)
		r = sync_open(&rs);
	if (r == 0)
		record_begin(&rs);
	if (r == 0 && o->delta)
		r = wal_open(&rs);
	if (r == 0 && o->delta)
		r = delta_remove_control(&rs);
	if (r == 0 && !rs.remote)
		r = workqueue_new(RESTORE_TASKS_QUEUED, sizeof(RTask), &rs.tasks);
	if (r == 0 && o->delta)
		r = workqueue_new(DELTA_FILES_QUEUED, sizeof(RFile *), &rs.finishing);
	if (r == 0 && rs.remote &&
	    (!(rs.free_bufs = calloc(rs.n_bufs_max, sizeof(uint8_t *))) ||
	     !(rs.locs = calloc(RESTORE_LOCATE_BATCH, sizeof(ChunkLoc))) ||
	     !(rs.loc_errs = calloc(RESTORE_LOCATE_BATCH, sizeof(int)))))
		r = -ENOMEM;
	if (r < 0)
		goto out;
	pthread_mutex_init(&rs.lock, NULL);
	pthread_mutex_init(&rs.defer_lock, NULL);
	pthread_cond_init(&rs.cond_nonempty, NULL);
	pthread_cond_init(&rs.cond_nonfull, NULL);
	atomic_init(&rs.error, 0);
	atomic_init(&rs.n_unclaimed, 0);
	atomic_init(&rs.bytes_written, 0);
	atomic_init(&rs.bytes_sha256, 0);
	atomic_init(&rs.n_unchanged, 0);

	rs.record_at = mono_ns();
	r = restore_run(&rs, snap);
	record_end(&rs, r);
out:
	restrec_free(rs.prev);
	restrec_free(rs.next);
	free(rs.record_path);
	repo_session_end(repo, session); /* and its hold */
	free(rs.control_path);
	free(rs.global_path);
	for (size_t i = 0; i < rs.n_kept_links; i++)
		free(rs.kept_links[i]);
	free(rs.kept_links);
	for (size_t i = 0; i < rs.n_links; i++) {
		free(rs.link_paths[i]);
		free(rs.link_targets[i]);
	}
	free(rs.link_paths);
	free(rs.link_targets);
	for (size_t i = 0; i < rs.n_seen; i++)
		free(rs.seen[i]);
	free(rs.seen);
	for (size_t i = 0; i < rs.n_dirs; i++)
		free(rs.dirs[i].path);
	free(rs.dirs);
	free(rs.dir_paths);
	workqueue_free(rs.tasks);
	workqueue_free(rs.finishing);
	for (size_t i = 0; i < rs.n_free; i++)
		free(rs.free_bufs[i]);
	free(rs.free_bufs);
	free(rs.locs);
	free(rs.loc_errs);
	pthread_mutex_destroy(&rs.lock);
	pthread_mutex_destroy(&rs.defer_lock);
	pthread_cond_destroy(&rs.cond_nonempty);
	pthread_cond_destroy(&rs.cond_nonfull);
	for (size_t i = 0; i < rs.n_sync; i++)
		close(rs.sync[i].fd);
	free(rs.sync);
	return r;
}
