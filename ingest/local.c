#include "ingest/local.h"
#include "common/log.h"
#include "ingest/changes.h"
#include "common/progress.h"
#include "common/util.h"
#include "common/workqueue.h"
#include "ingest/manifest.h"
#include "ingest/pgpage.h"
#include "ingest/walk.h"
#include "ingest/walstream.h"

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define READ_BUF (1024 * 1024)
#define QUEUE_CAP 256 /* files waiting for a reader */

/* Directories whose contents pg_basebackup leaves out (the directory itself is kept). */
static const char *const exclude_contents[] = {
	"pg_stat_tmp", "pg_replslot", "pg_dynshmem", "pg_notify", "pg_serial", "pg_snapshots",
	"pg_subtrans", "pg_wal", NULL};
/* Files left out wherever they are. */
static const char *const exclude_files[] = {
	"postgresql.auto.conf.tmp", "current_logfiles.tmp", "backup_label", "tablespace_map",
	"backup_manifest", "postmaster.pid", "postmaster.opts", NULL};

typedef struct ParentFile {
	char *path;
	uint64_t size;
	int64_t mtime_ns;
	int64_t content;
} ParentFile;

typedef struct Task {
	char *abs, *rel, *name;
	uint64_t parent;
	struct stat st;
	const ParentFile *pfile; /* block-level: the parent's copy to take unchanged chunks from */
	PgRelFile relfile;
} Task;

typedef struct Local {
	Repo *repo;
	const LocalBackupOptions *o;
	LocalBackupResult *res;
	PgError *err;
	PgConn *conn;
	WalStream *wal;
	PgSystem sys;
	char staging[PATH_MAX];
	char pgdata[PATH_MAX];
	uint32_t seg_size;
	bool checksums; /* data_checksums: pages are verified as they are read */
	uint64_t start_lsn, stop_lsn;
	SnapWriter *w;
	Manifest *manifest;
	Progress *progress;
	uint32_t owner_uid, owner_gid;
	uint64_t pg_wal_ino;

	/* incremental */
	SnapshotInfo parent;
	bool have_parent;
	ParentFile *pfiles; /* sorted by path */
	size_t n_pfiles;
	uint64_t parent_start_lsn;
	ChangesResult changes; /* .blocks: the changed blocks since the parent started, or NULL */

	/* reader pool: files to read (aborted on the first error); lock guards error_path, err */
	WorkQueue *tasks;
	pthread_mutex_t lock;
	_Atomic int error;
	char error_path[PATH_MAX];
	_Atomic uint64_t files_read, files_reused, files_blocks;
	_Atomic uint64_t read_bytes;
	_Atomic uint64_t verified_chunks, verified_hint_only, verified_during; /* --verify-blocks */
} Local;

static void set_error(Local *lc, int r, const char *path)
{
	int expected = 0;
	if (r < 0 && atomic_compare_exchange_strong(&lc->error, &expected, r)) {
		pthread_mutex_lock(&lc->lock);
		if (path)
			snprintf(lc->error_path, sizeof(lc->error_path), "%s", path);
		pthread_mutex_unlock(&lc->lock);
		workqueue_abort(lc->tasks, r);
	}
}

static int sql_one(Local *lc, const char *sql, char **ret)
{
	PgRows rows = {0};
	int r = pgconn_query(lc->conn, sql, &rows, lc->err);
	if (r == 0) {
		const char *v = pgrows_get(&rows, 0, 0);
		*ret = v ? strdup(v) : NULL;
		if (!*ret)
			r = -EPROTO;
	}
	pgrows_clear(&rows);
	return r;
}

/* ---- setup ---- */

static int check_data_directory(Local *lc)
{
	_cleanup_free_ char *dd = NULL, *seg = NULL, *sums = NULL;
	char real_dd[PATH_MAX];
	int r = sql_one(lc, "SHOW data_directory", &dd);
	if (r == 0)
		r = sql_one(lc, "SHOW wal_segment_size", &seg);
	if (r == 0)
		r = sql_one(lc, "SHOW data_checksums", &sums);
	if (r < 0)
		return r;
	lc->checksums = !strcmp(sums, "on");
	if (!realpath(dd, real_dd) || strcmp(real_dd, lc->pgdata) != 0) {
		snprintf(lc->err->msg, sizeof(lc->err->msg),
			 "\"%s\" is not the data directory of the server at -d (it uses \"%s\")",
			 lc->o->pgdata, dd);
		return -EINVAL;
	}
	if (wal_parse_segment_size(seg, &lc->seg_size) < 0) {
		snprintf(lc->err->msg, sizeof(lc->err->msg), "unexpected wal_segment_size \"%s\"", seg);
		return -EPROTO;
	}
	return 0;
}

static int cmp_pfile(const void *a, const void *b)
{
	return strcmp(((const ParentFile *)a)->path, ((const ParentFile *)b)->path);
}

typedef struct ParentLoad {
	Local *lc;
	char **dirs; /* by ino */
	size_t n_dirs;
} ParentLoad;

static int load_parent_file(const FileRow *f, void *userdata)
{
	ParentLoad *pl = userdata;
	Local *lc = pl->lc;
	const char *dir = f->parent < pl->n_dirs && pl->dirs[f->parent] ? pl->dirs[f->parent] : "";
	char *path;
	if (f->ino == 1)
		return 0;
	if (asprintf(&path, "%s%s%s", dir, *dir ? "/" : "", f->name) < 0)
		return -ENOMEM;
	if (S_ISDIR(f->mode)) {
		if (f->ino >= pl->n_dirs) {
			size_t n = MAX(f->ino + 1, pl->n_dirs * 2);
			char **v = realloc(pl->dirs, n * sizeof(char *));
			if (!v) {
				free(path);
				return -ENOMEM;
			}
			memset(v + pl->n_dirs, 0, (n - pl->n_dirs) * sizeof(char *));
			pl->dirs = v;
			pl->n_dirs = n;
		}
		pl->dirs[f->ino] = path;
		return 0;
	}
	if (!S_ISREG(f->mode) || !f->content) {
		free(path);
		return 0;
	}
	ParentFile *v = realloc(lc->pfiles, (lc->n_pfiles + 1) * sizeof(*v));
	if (!v) {
		free(path);
		return -ENOMEM;
	}
	lc->pfiles = v;
	v[lc->n_pfiles++] = (ParentFile){.path = path, .size = f->size, .mtime_ns = f->mtime_ns,
					 .content = f->content};
	return 0;
}

/* incr: the newest snapshot of the instance is the parent; none: a full backup. */
static int load_parent(Local *lc)
{
	ParentLoad pl = {.lc = lc};
	int r;
	snprintf(lc->res->type, sizeof(lc->res->type), "full");
	if (!lc->o->type || strcmp(lc->o->type, "incr") != 0)
		return 0;
	r = catalog_snapshot_get(repo_catalog(lc->repo), "latest",
				 lc->o->instance ? lc->o->instance : "main", &lc->parent);
	if (r == -ENOENT)
		return 0; /* the caller says so */
	if (r < 0)
		return r;
	lc->have_parent = true;
	snprintf(lc->res->type, sizeof(lc->res->type), "incr");
	snprintf(lc->res->parent, sizeof(lc->res->parent), "%s", lc->parent.name);
	r = catalog_file_foreach(repo_catalog(lc->repo), lc->parent.rowid, load_parent_file, &pl);
	for (size_t i = 0; i < pl.n_dirs; i++)
		free(pl.dirs[i]);
	free(pl.dirs);
	if (r == 0 && lc->n_pfiles > 1)
		qsort(lc->pfiles, lc->n_pfiles, sizeof(ParentFile), cmp_pfile);
	return r;
}

/*
 * incr: which blocks changed since the parent started? Without a full answer
 * (see ingest/changes.h), files are compared by size and mtime, and the
 * snapshot says why.
 */
static int plan_incremental(Local *lc)
{
	char why[512] = "";
	_cleanup_free_ char *bs = NULL, *segsz = NULL;
	int major = pgconn_server_version(lc->conn) / 10000;
	uint64_t sysid = strtoull(lc->sys.system_id, NULL, 10);
	int r;

	if (!lc->have_parent) {
		snprintf(lc->res->method, sizeof(lc->res->method), "full");
		return 0;
	}
	snprintf(lc->res->method, sizeof(lc->res->method), "files");
	r = sql_one(lc, "SHOW block_size", &bs);
	if (r == 0)
		r = sql_one(lc, "SHOW segment_size", &segsz);
	if (r < 0)
		return r;
	if (!lc->parent.start_lsn || lsn_parse(lc->parent.start_lsn, &lc->parent_start_lsn) < 0 ||
	    lc->parent.timeline <= 0)
		snprintf(why, sizeof(why), "the parent %s has no start LSN", lc->parent.name);
	else if (lc->parent.pg_version != major)
		snprintf(why, sizeof(why), "the parent %s is of PostgreSQL %lld", lc->parent.name,
			 (long long)lc->parent.pg_version);
	else if (strcmp(bs, "8192") != 0 || strcmp(segsz, "1GB") != 0)
		snprintf(why, sizeof(why), "block_size %s and segment_size %s are not the defaults", bs,
			 segsz);
	if (why[0]) {
		snprintf(lc->res->note, sizeof(lc->res->note), "files by size and mtime: %.400s", why);
		return 0;
	}
	ChangesRequest rq = {.repo = lc->repo, .conn = lc->conn, .pgdata = lc->pgdata,
			     .system_id = sysid, .seg_size = lc->seg_size,
			     .from = lc->parent_start_lsn, .to = lc->start_lsn,
			     .from_tli = (uint32_t)lc->parent.timeline, .to_tli = lc->sys.timeline};
	r = changes_collect(&rq, &lc->changes);
	if (r < 0)
		return r;
	if (lc->changes.blocks)
		snprintf(lc->res->method, sizeof(lc->res->method), "blocks");
	snprintf(lc->res->note, sizeof(lc->res->note), "%s%.480s",
		 lc->changes.blocks ? "" : "files by size and mtime: ", lc->changes.note);
	return 0;
}

static int start_backup(Local *lc)
{
	char label[300], quoted[700], sql[800];
	_cleanup_free_ char *lsn = NULL;
	int r;
	snprintf(label, sizeof(label), "%s", lc->o->label ? lc->o->label : "pgbakfs");
	r = pgconn_quote_literal(label, quoted, sizeof(quoted));
	if (r < 0)
		return r;
	if (pgconn_server_version(lc->conn) >= 150000)
		snprintf(sql, sizeof(sql), "SELECT pg_backup_start(%s, true)", quoted);
	else
		snprintf(sql, sizeof(sql), "SELECT pg_start_backup(%s, true, false)", quoted);
	r = sql_one(lc, sql, &lsn);
	if (r == 0)
		r = lsn_parse(lsn, &lc->start_lsn);
	if (r == 0)
		lsn_format(lc->start_lsn, lc->res->start_lsn);
	lc->res->timeline = lc->sys.timeline;
	return r;
}

/* ---- reading files ---- */

static SnapEntry entry_of(uint64_t parent, const char *name, const struct stat *st)
{
	return (SnapEntry){.parent = parent, .name = name, .mode = st->st_mode, .uid = st->st_uid,
			   .gid = st->st_gid,
			   .mtime_ns = timespec_to_ns(&st->st_mtim)};
}

typedef struct BadCtx {
	Local *lc;
	const char *rel;
} BadCtx;

static int report_bad(uint64_t block, void *userdata)
{
	BadCtx *b = userdata;
	return snapwriter_add_bad_block(b->lc->w, b->rel, block);
}

/* A source file, without touching its atime where we may: -ENOENT when it is gone. */
static int open_source(const char *abs)
{
	int fd = open(abs, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOATIME);
	if (fd < 0 && errno == EPERM)
		fd = open(abs, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

/* What a file's bytes go through on their way into the snapshot: its manifest CRC, page checks. */
typedef struct ReadCtx {
	PageCheck pc;
	BadCtx bad;
	bool verify;
	uint32_t crc;
	uint64_t n_read; /* bytes read: holes are not */
} ReadCtx;

static int read_data(void *userdata, const uint8_t *buf, size_t len)
{
	ReadCtx *x = userdata;
	x->crc = crc32c_update(x->crc, buf, len);
	x->n_read += len;
	return x->verify ? page_check_feed(&x->pc, buf, len, report_bad, &x->bad) : 0;
}

/* A hole reads as zeros: the manifest's CRC and the page checks see them as such. */
static int read_zeros(void *userdata, uint64_t len)
{
	static const uint8_t zeros[64 * 1024];
	ReadCtx *x = userdata;
	int r = 0;
	while (len > 0 && r == 0) {
		size_t n = (size_t)MIN(len, sizeof(zeros));
		x->crc = crc32c_update(x->crc, zeros, n);
		if (x->verify)
			r = page_check_feed(&x->pc, zeros, n, report_bad, &x->bad);
		len -= n;
	}
	return r;
}

static const WalkReadOps read_ops = {.data = read_data, .zeros = read_zeros};

static int read_file(Local *lc, Task *t, uint8_t *buf)
{
	SnapFile *f;
	ReadCtx x = {.bad = {.lc = lc, .rel = t->rel}, .crc = CRC32C_INIT};
	uint32_t segno = 0;
	uint64_t total = 0;
	struct stat st;
	int r;
	_cleanup_close_ int fd = open_source(t->abs);
	if (fd < 0)
		return fd == -ENOENT ? 0 : fd; /* dropped meanwhile: WAL replay knows */
	if (fstat(fd, &st) < 0)
		return -errno;
	x.verify = lc->checksums && pg_path_is_relation(t->rel, &segno);
	page_check_init(&x.pc, segno, lc->start_lsn);
	SnapEntry e = entry_of(t->parent, t->name, &st);
	r = snapwriter_file_begin(lc->w, &e, &f);
	if (r < 0)
		return r;
	/* to its end, even past the size it had: a relation may grow while we read */
	r = walk_read_file(lc->w, f, fd, (uint64_t)st.st_size, true, buf, READ_BUF, &read_ops, &x,
			   &total);
	atomic_fetch_add(&lc->read_bytes, x.n_read);
	int r2 = snapwriter_file_end(lc->w, f);
	if (r == 0)
		r = r2;
	if (r == 0 && t->rel[0] != '/') /* extra roots are not part of the data directory */
		r = manifest_add(lc->manifest, t->rel, total, e.mtime_ns, true, CRC32C_FINISH(x.crc));
	atomic_fetch_add(&lc->files_read, 1);
	return r;
}

/* ---- block-level incremental ---- */

/*
 * --verify-blocks: a chunk taken from the parent unread is read after all. A
 * page in it that WAL changed within the range ([the parent's start, this
 * backup's start)) is a block the summary missed: the backup fails. Pages that
 * differ without such an LSN changed without WAL (hint bits with checksums
 * off): counted, harmless, as in PostgreSQL's own incremental backups.
 */
static int verify_chunk(Local *lc, int fd, const Task *t, uint64_t off, size_t len,
			const ChunkId *parent_id, uint8_t *buf)
{
	bool during = false;
	ChunkId id;
	ssize_t n = pread_full(fd, buf, len, (off_t)off);
	if (n < 0)
		return (int)n;
	if ((size_t)n != len)
		return 0; /* shrank meanwhile: a truncation WAL replays */
	for (size_t p = 0; p + PG_BLCKSZ <= len; p += PG_BLCKSZ) {
		uint64_t lsn = pg_page_lsn(buf + p);
		if (pg_page_is_new(buf + p) || lsn < lc->parent_start_lsn)
			continue;
		if (lsn >= lc->start_lsn) {
			during = true; /* changed while we read: the backup's WAL replays it */
			continue;
		}
		char at[32];
		lsn_format(lsn, at);
		pthread_mutex_lock(&lc->lock);
		if (!lc->err->msg[0])
			snprintf(lc->err->msg, sizeof(lc->err->msg),
				 "--verify-blocks: block %llu of \"%.300s\" changed at %s but the WAL "
				 "summary does not list it",
				 (unsigned long long)(t->relfile.segno * (uint64_t)PG_RELSEG_BLOCKS +
						      (off + p) / PG_BLCKSZ),
				 t->rel, at);
		pthread_mutex_unlock(&lc->lock);
		return -EUCLEAN;
	}
	repo_chunk_hash(lc->repo, buf, len, &id);
	atomic_fetch_add(&lc->verified_chunks, 1);
	if (chunk_id_cmp(&id, parent_id) != 0)
		atomic_fetch_add(during ? &lc->verified_during : &lc->verified_hint_only, 1);
	return 0;
}

/* Read [off, off + len) into the file: whole chunks, checked page by page. */
static int read_range(Local *lc, int fd, Task *t, SnapFile *f, uint64_t off, uint64_t len,
		      uint8_t *buf)
{
	BadCtx bad = {.lc = lc, .rel = t->rel};
	PageCheck pc;
	page_check_init(&pc, t->relfile.segno, lc->start_lsn);
	pc.offset = off;
	while (len > 0) {
		size_t want = (size_t)MIN(len, READ_BUF);
		ssize_t n = pread_full(fd, buf, want, (off_t)off);
		int r;
		if (n < 0)
			return (int)n;
		if (n == 0)
			return 0; /* shrank meanwhile: WAL replay knows */
		r = lc->checksums ? page_check_feed(&pc, buf, (size_t)n, report_bad, &bad) : 0;
		if (r == 0)
			r = snapwriter_file_write(lc->w, f, buf, (size_t)n);
		if (r < 0)
			return r;
		atomic_fetch_add(&lc->read_bytes, (uint64_t)n);
		off += (uint64_t)n;
		len -= (uint64_t)n;
		if ((size_t)n < want)
			return 0;
	}
	return 0;
}

/*
 * Which chunks of the file to read: those holding a changed block, those the
 * parent's copy does not have whole (past its length, or its short last
 * chunk unless the length is the same). 1: read the whole file.
 */
static int plan_chunks(Local *lc, const Task *t, uint64_t size, size_t n_parent, uint8_t *read)
{
	uint64_t chunk = repo_config(lc->repo)->chunk_size, psize = t->pfile->size;
	uint64_t chunk_blocks = chunk / PG_BLCKSZ;
	uint64_t n_chunks = (size + chunk - 1) / chunk;
	uint32_t nblocks = (uint32_t)(size / PG_BLCKSZ);
	_cleanup_free_ uint8_t *changed = NULL;
	int r;

	/*
	 * Read whole: the free space map (not WAL-logged) and the visibility map:
	 * a heap record clears VM bits in redo without referencing the VM page,
	 * so a VM page changes with nothing in the summary (and keeps its LSN).
	 * Both are tiny: one VM page covers 255 MiB of heap.
	 */
	if (t->relfile.fork == PG_FORK_FSM || t->relfile.fork == PG_FORK_VM ||
	    size % PG_BLCKSZ || nblocks > PG_RELSEG_BLOCKS ||
	    chunk > READ_BUF || chunk % PG_BLCKSZ ||
	    n_parent != (psize + chunk - 1) / chunk)
		return 1;
	changed = calloc((nblocks + 7) / 8 + 1, 1);
	if (!changed)
		return -ENOMEM;
	WalRelFork rf = {.spc = t->relfile.spc, .db = t->relfile.db, .rel = t->relfile.rel,
			 .fork = t->relfile.fork};
	r = walblocks_file(lc->changes.blocks, &rf, t->relfile.segno, nblocks, changed);
	if (r != 0)
		return r;
	for (uint64_t i = 0; i < n_chunks; i++) {
		uint64_t end = MIN(size, (i + 1) * chunk), pend = MIN(psize, (i + 1) * chunk);
		read[i] = i >= n_parent || end != pend;
		for (uint64_t b = i * chunk_blocks; !read[i] && b < MIN(nblocks, (i + 1) * chunk_blocks);
		     b++)
			read[i] = (changed[b / 8] >> (b % 8)) & 1;
	}
	return 0;
}

static int read_file_blocks(Local *lc, Catalog *cat, Task *t, uint8_t *buf)
{
	uint64_t chunk = repo_config(lc->repo)->chunk_size;
	_cleanup_free_ ChunkId *ids = NULL;
	_cleanup_free_ uint8_t *read = NULL;
	size_t n_ids = 0;
	SnapFile *f;
	struct stat st;
	int r;
	_cleanup_close_ int fd = open_source(t->abs);
	if (fd < 0)
		return fd == -ENOENT ? 0 : fd;
	if (fstat(fd, &st) < 0)
		return -errno;
	uint64_t size = (uint64_t)st.st_size, n_chunks = (size + chunk - 1) / chunk;
	r = catalog_content_get(cat, t->pfile->content, &ids, &n_ids);
	if (r < 0)
		return r;
	read = malloc(n_chunks + 1);
	if (!read)
		return -ENOMEM;
	r = plan_chunks(lc, t, size, n_ids, read);
	if (r < 0)
		return r;
	if (r == 1) { /* the whole file: as a full backup reads it */
		close(fd);
		fd = -1;
		return read_file(lc, t, buf);
	}
	SnapEntry e = entry_of(t->parent, t->name, &st);
	r = snapwriter_file_begin(lc->w, &e, &f);
	if (r < 0)
		return r;
	for (uint64_t i = 0; r == 0 && i < n_chunks;) {
		uint64_t j = i;
		while (j < n_chunks && read[j] == read[i])
			j++;
		uint64_t off = i * chunk, len = MIN(size, j * chunk) - off;
		if (read[i]) {
			r = read_range(lc, fd, t, f, off, len, buf);
		} else {
			r = snapwriter_file_write_ids(lc->w, f, ids + i, j - i, len);
			for (uint64_t k = i; r == 0 && lc->o->verify_blocks && k < j; k++)
				r = verify_chunk(lc, fd, t, k * chunk,
						 (size_t)(MIN(size, (k + 1) * chunk) - k * chunk),
						 &ids[k], buf);
		}
		i = j;
	}
	int r2 = snapwriter_file_end(lc->w, f);
	if (r == 0)
		r = r2;
	if (r == 0)
		r = manifest_add(lc->manifest, t->rel, size, e.mtime_ns, false, 0);
	atomic_fetch_add(&lc->files_blocks, 1);
	return r;
}

static void task_clear(Task *t)
{
	free(t->abs);
	free(t->rel);
	free(t->name);
}

static void *reader_main(void *arg)
{
	Local *lc = arg;
	thread_name("backup-read");
	uint8_t *buf = malloc(READ_BUF);
	Catalog *cat = NULL; /* block-level reads look up the parent's chunk lists */
	if (!buf)
		set_error(lc, -ENOMEM, NULL);
	if (lc->changes.blocks) {
		int r = repo_catalog_open(lc->repo, &cat);
		if (r < 0)
			set_error(lc, r, NULL);
	}
	/* after an error the queue still hands out its tasks, to be freed unread */
	Task t;
	while (workqueue_pop(lc->tasks, &t) == 0) {
		if (buf && !atomic_load(&lc->error)) {
			int r = t.pfile && cat ? read_file_blocks(lc, cat, &t, buf) : read_file(lc, &t, buf);
			if (r < 0)
				set_error(lc, r, t.abs);
		}
		task_clear(&t);
	}
	catalog_free(cat);
	free(buf);
	return NULL;
}

static int queue_task(Local *lc, Task *t)
{
	int r = workqueue_push(lc->tasks, t);
	if (r < 0)
		task_clear(t);
	return r;
}

/* ---- walking ---- */

static bool in_list(const char *name, const char *const *list)
{
	for (; *list; list++)
		if (!strcmp(name, *list))
			return true;
	return false;
}

/* "t3_16384" temporary relations and "pgsql_tmp*" files are never backed up. */
static bool is_temp(const char *name)
{
	if (!strncmp(name, "pgsql_tmp", 9))
		return true;
	if (name[0] != 't')
		return false;
	size_t n = strspn(name + 1, "0123456789");
	return n > 0 && name[1 + n] == '_';
}

static bool is_db_dir(const char *rel)
{
	/* base/DB or pg_tblspc/TS/PG_x/DB */
	const char *last = strrchr(rel, '/');
	if (!last || !last[1] || strspn(last + 1, "0123456789") != strlen(last + 1))
		return false;
	return !strncmp(rel, "base/", 5) ? last == rel + 4 : !strncmp(rel, "pg_tblspc/", 10);
}

/* In a database directory: is name a non-init fork of a relation that has an init fork? */
static bool unlogged_fork(char *const *names, size_t n, const char *name)
{
	size_t num = strspn(name, "0123456789");
	char init[64];
	if (num == 0 || num > 20 || strstr(name, "_init"))
		return false;
	snprintf(init, sizeof(init), "%.*s_init", (int)num, name);
	for (size_t i = 0; i < n; i++)
		if (!strcmp(names[i], init))
			return true;
	return false;
}

static int list_dir(const char *path, char ***ret, size_t *ret_n)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return fd < 0 ? -errno : walk_names(fd, ret, ret_n);
}


static const ParentFile *parent_lookup(Local *lc, const char *rel)
{
	ParentFile key = {.path = (char *)rel};
	if (!lc->n_pfiles)
		return NULL;
	return bsearch(&key, lc->pfiles, lc->n_pfiles, sizeof(ParentFile), cmp_pfile);
}

static int add_regular(Local *lc, const char *abs, const char *rel, const char *name,
		       uint64_t parent, const struct stat *st)
{
	Task t;
	PgRelFile rf;
	const ParentFile *pblocks = NULL;
	if (lc->have_parent) {
		const ParentFile *p = parent_lookup(lc, rel);
		SnapEntry e = entry_of(parent, name, st);
		/* a relation file the parent has: read only its changed chunks */
		if (p && lc->changes.blocks && pg_path_relfile(rel, &rf))
			pblocks = p;
		/*
		 * unchanged: same size and the same mtime to the second (a parent taken
		 * over BASE_BACKUP knows mtimes only to the second, as tar carries them),
		 * and not modified in or after the second before the parent started
		 */
		if (p && p->size == (uint64_t)st->st_size &&
		    p->mtime_ns / 1000000000 == e.mtime_ns / 1000000000 &&
		    e.mtime_ns < lc->parent.start_time - 1000000000 &&
		    !(pblocks && lc->o->verify_blocks)) {
			int r = snapwriter_add_file_reuse(lc->w, &e, p->size, p->content);
			if (r == 0 && rel[0] != '/')
				r = manifest_add(lc->manifest, rel, p->size, e.mtime_ns, false, 0);
			atomic_fetch_add(&lc->files_reused, 1);
			return r;
		}
	}
	t = (Task){.abs = strdup(abs), .rel = strdup(rel), .name = strdup(name), .parent = parent,
		   .st = *st, .pfile = pblocks};
	if (pblocks)
		t.relfile = rf;
	if (!t.abs || !t.rel || !t.name) {
		task_clear(&t);
		return -ENOMEM;
	}
	return queue_task(lc, &t);
}

static const WalkOps walk_ops;

static int walk_tablespace(Local *lc, const char *abs, const char *rel, const char *name,
			   uint64_t parent, const struct stat *lst)
{
	char target[PATH_MAX], version_dir[PATH_MAX + 32], sub_rel[PATH_MAX + 32];
	char **names = NULL;
	size_t n = 0;
	struct stat st;
	uint64_t ino, vino;
	char prefix[16];
	ssize_t len = readlink(abs, target, sizeof(target) - 1);
	int r;

	if (len < 0)
		return -errno;
	target[len] = '\0';
	if (stat(abs, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	SnapEntry e = entry_of(parent, name, &st);
	e.mode = S_IFDIR | (st.st_mode & 07777);
	(void)lst;
	r = snapwriter_add_dir(lc->w, &e, &ino);
	if (r == 0)
		r = snapwriter_add_link(lc->w, rel, target);
	if (r == 0)
		r = list_dir(abs, &names, &n);
	/* only this server version's directory, as pg_basebackup does */
	snprintf(prefix, sizeof(prefix), "PG_%d_", pgconn_server_version(lc->conn) / 10000);
	for (size_t i = 0; r == 0 && i < n; i++) {
		if (strncmp(names[i], prefix, strlen(prefix)) != 0)
			continue;
		snprintf(version_dir, sizeof(version_dir), "%s/%s", abs, names[i]);
		snprintf(sub_rel, sizeof(sub_rel), "%s/%s", rel, names[i]);
		if (lstat(version_dir, &st) < 0 || !S_ISDIR(st.st_mode))
			continue;
		SnapEntry ve = entry_of(ino, names[i], &st);
		r = snapwriter_add_dir(lc->w, &ve, &vino);
		if (r == 0)
			r = walk_dir(version_dir, sub_rel, vino, &walk_ops, lc);
	}
	walk_names_free(names, n);
	return r;
}

static int walk_entry(Local *lc, const WalkEntry *we, uint64_t *ret_ino)
{
	const char *abs = we->path, *rel = we->rel, *name = we->name;
	struct stat st = we->st;
	uint64_t child;
	int r;

	if (we->stat_err)
		return we->stat_err == -ENOENT ? 0 : we->stat_err;
	if (in_list(name, exclude_files) || !strncmp(name, "pg_internal.init", 16) || is_temp(name))
		return 0;
	if (is_db_dir(we->dir_rel) && unlogged_fork(we->names, we->n_names, name))
		return 0;
	if (S_ISREG(st.st_mode))
		return add_regular(lc, abs, rel, name, we->parent, &st);
	if (S_ISLNK(st.st_mode)) {
		if (!strncmp(rel, "pg_tblspc/", 10))
			return walk_tablespace(lc, abs, rel, name, we->parent, &st);
		if (!strcmp(rel, "pg_wal")) { /* initdb -X: kept as a directory */
			if (stat(abs, &st) < 0)
				return -errno;
		} else {
			char target[PATH_MAX];
			ssize_t len = readlink(abs, target, sizeof(target) - 1);
			if (len < 0)
				return errno == ENOENT ? 0 : -errno;
			target[len] = '\0';
			SnapEntry e = entry_of(we->parent, name, &st);
			return snapwriter_add_symlink(lc->w, &e, target);
		}
	}
	if (!S_ISDIR(st.st_mode))
		return 0; /* sockets, fifos: not part of a data directory */
	SnapEntry e = entry_of(we->parent, name, &st);
	e.mode = S_IFDIR | (st.st_mode & 07777);
	r = snapwriter_add_dir(lc->w, &e, &child);
	if (r < 0)
		return r;
	if (!strcmp(rel, "pg_wal")) {
		lc->pg_wal_ino = child;
		char sub[PATH_MAX + 32];
		snprintf(sub, sizeof(sub), "%s/archive_status", abs);
		if (stat(sub, &st) == 0) {
			SnapEntry ae = entry_of(child, "archive_status", &st);
			uint64_t ai;
			return snapwriter_add_dir(lc->w, &ae, &ai);
		}
		return 0;
	}
	if (in_list(rel, exclude_contents))
		return 0;
	if (we->fd < 0) /* a database dropped while we walk: its directory stays, empty */
		return we->fd == -ENOENT ? 0 : we->fd;
	*ret_ino = child;
	return WALK_DESCEND;
}

/* The walk's callbacks: the first error names the file it is about. */
static int walk_cb_entry(void *userdata, const WalkEntry *we, uint64_t *ret_ino)
{
	Local *lc = userdata;
	int r = walk_entry(lc, we, ret_ino);
	if (r < 0 && !lc->error_path[0])
		snprintf(lc->error_path, sizeof(lc->error_path), "%s", we->path);
	return r;
}

static int walk_cb_dir_error(void *userdata, const char *path, int r)
{
	Local *lc = userdata;
	if (r == -ENOENT)
		return 0; /* a database dropped while we walk */
	if (!lc->error_path[0])
		snprintf(lc->error_path, sizeof(lc->error_path), "%s", path);
	return r;
}

static const WalkOps walk_ops = {.entry = walk_cb_entry, .dir_error = walk_cb_dir_error};

/* An extra root: kept beside the data directory under its absolute path. */
static int walk_extra(Local *lc, const char *dir)
{
	char real[PATH_MAX];
	struct stat st;
	uint64_t ino;
	int r;
	if (!realpath(dir, real) || stat(real, &st) < 0) {
		snprintf(lc->error_path, sizeof(lc->error_path), "%s", dir);
		return -errno;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(lc->error_path, sizeof(lc->error_path), "%s", dir);
		return -ENOTDIR;
	}
	if (!strncmp(real, lc->pgdata, strlen(lc->pgdata)) &&
	    (real[strlen(lc->pgdata)] == '/' || !real[strlen(lc->pgdata)])) {
		snprintf(lc->err->msg, sizeof(lc->err->msg),
			 "--extra-dir \"%.200s\" is inside the data directory", dir);
		return -EINVAL;
	}
	SnapEntry e = entry_of(0, real, &st);
	r = snapwriter_add_dir(lc->w, &e, &ino);
	return r < 0 ? r : walk_dir(real, real, ino, &walk_ops, lc);
}

static int read_data_directory(Local *lc)
{
	int n_threads = lc->o->jobs > 0 ? lc->o->jobs : cpu_count();
	pthread_t *th = calloc((size_t)n_threads, sizeof(pthread_t));
	int started = 0, r;
	struct stat st;
	uint64_t root;

	r = th ? workqueue_new(QUEUE_CAP, sizeof(Task), &lc->tasks) : -ENOMEM;
	if (r < 0) {
		free(th);
		return r;
	}
	for (; started < n_threads; started++)
		if (pthread_create(&th[started], NULL, reader_main, lc) != 0)
			break;
	r = started ? 0 : -EAGAIN;
	if (r == 0 && stat(lc->pgdata, &st) < 0)
		r = -errno;
	if (r == 0) {
		lc->owner_uid = st.st_uid;
		lc->owner_gid = st.st_gid;
		SnapEntry e = entry_of(0, "", &st);
		r = snapwriter_add_dir(lc->w, &e, &root);
	}
	if (r == 0)
		r = walk_dir(lc->pgdata, "", root, &walk_ops, lc);
	for (size_t i = 0; r == 0 && i < lc->o->n_extra_dirs; i++)
		r = walk_extra(lc, lc->o->extra_dirs[i]);
	set_error(lc, r, NULL);
	workqueue_close(lc->tasks);
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	free(th);
	lc->tasks = workqueue_free(lc->tasks);
	r = atomic_load(&lc->error);
	if (r < 0 && lc->error_path[0] && !lc->err->msg[0])
		snprintf(lc->err->msg, sizeof(lc->err->msg), "could not read \"%.400s\": %s",
			 lc->error_path, strerror(-r));
	return r;
}

/* ---- finishing ---- */

static int add_buffer_file(Local *lc, uint64_t parent, const char *name, const char *rel,
			   const char *data, size_t len, bool in_manifest)
{
	SnapFile *f;
	int64_t now = now_ns();
	SnapEntry e = {.parent = parent, .name = name, .mode = S_IFREG | 0600,
		       .uid = lc->owner_uid, .gid = lc->owner_gid, .mtime_ns = now};
	int r = snapwriter_file_begin(lc->w, &e, &f);
	if (r < 0)
		return r;
	r = snapwriter_file_write(lc->w, f, data, len);
	int r2 = snapwriter_file_end(lc->w, f);
	r = r ? r : r2;
	if (r == 0 && in_manifest)
		r = manifest_add(lc->manifest, rel, len, now, true,
				 CRC32C_FINISH(crc32c_update(CRC32C_INIT, data, len)));
	return r;
}

static int stop_backup(Local *lc)
{
	PgRows rows = {0};
	const char *sql = pgconn_server_version(lc->conn) >= 150000
				  ? "SELECT lsn, labelfile FROM pg_backup_stop(false)"
				  : "SELECT lsn, labelfile FROM pg_stop_backup(false, false)";
	int r = pgconn_query(lc->conn, sql, &rows, lc->err);
	if (r == 0 && (!pgrows_get(&rows, 0, 0) || !pgrows_get(&rows, 0, 1)))
		r = -EPROTO;
	if (r == 0)
		r = lsn_parse(pgrows_get(&rows, 0, 0), &lc->stop_lsn);
	if (r == 0) {
		const char *label = pgrows_get(&rows, 0, 1);
		lsn_format(lc->stop_lsn, lc->res->stop_lsn);
		r = add_buffer_file(lc, 1, "backup_label", "backup_label", label, strlen(label), true);
	}
	pgrows_clear(&rows);
	return r;
}

static int add_wal_segments(Local *lc)
{
	char **names = NULL;
	size_t n = 0;
	uint8_t *buf = malloc(READ_BUF);
	int r = buf ? list_dir(lc->staging, &names, &n) : -ENOMEM;
	for (size_t i = 0; r == 0 && i < n; i++) {
		char path[PATH_MAX + 32];
		SnapFile *f;
		ssize_t got;
		off_t off = 0;
		snprintf(path, sizeof(path), "%s/%s", lc->staging, names[i]);
		_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			r = -errno;
			break;
		}
		SnapEntry e = {.parent = lc->pg_wal_ino, .name = names[i], .mode = S_IFREG | 0600,
			       .uid = lc->owner_uid, .gid = lc->owner_gid, .mtime_ns = now_ns()};
		r = snapwriter_file_begin(lc->w, &e, &f);
		while (r == 0 && (got = pread_full(fd, buf, READ_BUF, off)) > 0) {
			r = snapwriter_file_write(lc->w, f, buf, (size_t)got);
			off += got;
		}
		if (r == 0 || f) {
			int r2 = snapwriter_file_end(lc->w, f);
			r = r ? r : r2;
		}
		unlink(path);
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	free(buf);
	return r;
}

static int write_manifest(Local *lc)
{
	_cleanup_free_ char *text = NULL;
	size_t len;
	int r = manifest_render(lc->manifest, lc->res->timeline, lc->res->start_lsn,
				lc->res->stop_lsn, &text, &len);
	if (r == 0)
		r = add_buffer_file(lc, 1, "backup_manifest", "backup_manifest", text, len, false);
	return r;
}

static int open_snapshot(Local *lc)
{
	char source[PATH_MAX + 16];
	snprintf(source, sizeof(source), "pgdata:%s", lc->pgdata);
	SnapWriterOptions wo = {
		.instance = lc->o->instance, .type = lc->res->type, .label = lc->o->label,
		.parent = lc->have_parent ? lc->parent.name : NULL, .note = lc->o->note,
		.source = source, .jobs = lc->o->jobs, .progress = lc->progress,
		.start_lsn = lc->res->start_lsn, .system_id = lc->sys.system_id,
		.timeline = lc->res->timeline, .pg_version = pgconn_server_version(lc->conn) / 10000};
	return snapwriter_new(lc->repo, &wo, &lc->w);
}

static int run(Local *lc)
{
	int r = pgconn_connect(lc->o->conninfo, false, &lc->conn, lc->err);
	if (r == 0 && pgconn_server_version(lc->conn) < 130000) {
		snprintf(lc->err->msg, sizeof(lc->err->msg), "PostgreSQL 13 or later is required");
		r = -EPROTONOSUPPORT;
	}
	if (r == 0)
		r = check_data_directory(lc);
	if (r == 0)
		r = walstream_new(lc->o->conninfo, lc->staging, &lc->wal, &lc->sys, lc->err);
	if (r == 0)
		r = instance_check_system(lc->repo, lc->o->instance ? lc->o->instance : "main",
					  lc->sys.system_id, lc->err);
	if (r == 0)
		r = load_parent(lc);
	if (r == 0)
		r = start_backup(lc);
	if (r == 0)
		r = walstream_start(lc->wal, lc->start_lsn, lc->sys.timeline, lc->seg_size, lc->err);
	if (r == 0)
		r = plan_incremental(lc);
	if (r == 0)
		r = open_snapshot(lc);
	if (r == 0)
		r = manifest_new(&lc->manifest);
	if (r == 0)
		r = read_data_directory(lc);
	if (r == 0)
		r = stop_backup(lc);
	if (r == 0)
		r = walstream_finish(lc->wal, lc->stop_lsn, lc->err);
	if (r == 0 && !lc->pg_wal_ino) {
		snprintf(lc->err->msg, sizeof(lc->err->msg), "the data directory has no pg_wal");
		r = -ENOENT;
	}
	if (r == 0)
		r = add_wal_segments(lc);
	if (r == 0)
		r = write_manifest(lc);
	if (r == 0)
		r = snapwriter_set_stop_lsn(lc->w, lc->res->stop_lsn);
	if (r == 0)
		r = snapwriter_set_method(lc->w, lc->res->method, lc->res->note[0] ? lc->res->note : NULL,
					  atomic_load(&lc->read_bytes));
	if (r == 0)
		r = snapwriter_commit(lc->w, &lc->res->snap);
	return r;
}

int local_backup(Repo *repo, const LocalBackupOptions *o, LocalBackupResult *ret, PgError *err)
{
	Local lc = {.repo = repo, .o = o, .res = ret, .err = err};
	uint64_t total = 0;
	int r;

	*ret = (LocalBackupResult){0};
	err->msg[0] = '\0';
	if (!realpath(o->pgdata, lc.pgdata)) {
		snprintf(err->msg, sizeof(err->msg), "could not open data directory \"%s\": %s",
			 o->pgdata, strerror(errno));
		return -errno;
	}
	snprintf(lc.staging, sizeof(lc.staging), "%s/pgbakfs-wal-XXXXXX",
		 o->staging_dir ? o->staging_dir : "/tmp");
	if (!mkdtemp(lc.staging)) {
		snprintf(err->msg, sizeof(err->msg), "could not create a staging directory: %s",
			 strerror(errno));
		return -errno;
	}
	pthread_mutex_init(&lc.lock, NULL);
	atomic_init(&lc.error, 0);
	atomic_init(&lc.files_read, 0);
	atomic_init(&lc.files_reused, 0);
	atomic_init(&lc.files_blocks, 0);
	atomic_init(&lc.read_bytes, 0);
	atomic_init(&lc.verified_chunks, 0);
	atomic_init(&lc.verified_hint_only, 0);
	atomic_init(&lc.verified_during, 0);
	progress_new("backup", total, o->progress, &lc.progress);

	r = run(&lc);

	ret->files_read = atomic_load(&lc.files_read);
	ret->files_reused = atomic_load(&lc.files_reused);
	ret->files_blocks = atomic_load(&lc.files_blocks);
	ret->read_bytes = atomic_load(&lc.read_bytes);
	ret->verified_chunks = atomic_load(&lc.verified_chunks);
	ret->verified_hint_only = atomic_load(&lc.verified_hint_only);
	ret->verified_during = atomic_load(&lc.verified_during);
	changes_result_clear(&lc.changes);
	lc.w = snapwriter_free(lc.w);
	lc.manifest = manifest_free(lc.manifest);
	lc.wal = walstream_free(lc.wal);
	lc.conn = pgconn_free(lc.conn); /* ends a non-exclusive backup left open */
	lc.progress = progress_free(lc.progress);
	snapshot_info_clear(&lc.parent);
	for (size_t i = 0; i < lc.n_pfiles; i++)
		free(lc.pfiles[i].path);
	free(lc.pfiles);
	pthread_mutex_destroy(&lc.lock);
	rm_rf(lc.staging);
	return r;
}
