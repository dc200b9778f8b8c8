#include "ingest/live.h"
#include "common/log.h"
#include "common/util.h"
#include "ingest/incremental.h"
#include "ingest/tar.h"
#include "ingest/tree.h"
#include "ingest/walstream.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

typedef struct Live {
	Repo *repo;
	const LiveBackupOptions *o;
	LiveBackupResult *res;
	PgError *err;
	PgConn *conn;
	WalStream *wal;
	PgSystem sys;
	char staging[PATH_MAX];
	uint32_t seg_size;
	bool checksums; /* data_checksums: pages are verified as they pass */
	uint64_t start_lsn, stop_lsn;
	SnapWriter *w;
	Tree *tree;
	TarReader *tar;
	TreeFile *manifest;
	Progress *progress;
	TreeMeta default_meta;
	PgRows tablespaces; /* spcoid, spclocation, size: the data directory's row last */
	/* incremental (17+): the parent, the materializer, the server's manifest as received */
	SnapshotInfo parent;
	Incr *incr;
	FILE *manifest_buf;
	char *manifest_text;
	size_t manifest_len;
} Live;

static int fail(Live *lv, int r, const char *fmt, const char *arg)
{
	if (r < 0 && !lv->err->msg[0])
		snprintf(lv->err->msg, sizeof(lv->err->msg), fmt, arg ? arg : "", strerror(-r));
	return r;
}

static int show(Live *lv, const char *name, char **ret)
{
	PgRows rows = {0};
	char sql[64];
	int r;
	snprintf(sql, sizeof(sql), "SHOW %s", name);
	r = pgconn_query(lv->conn, sql, &rows, lv->err);
	if (r == 0)
		*ret = pgrows_get(&rows, 0, 0) ? strdup(pgrows_get(&rows, 0, 0)) : NULL;
	pgrows_clear(&rows);
	return r == 0 && !*ret ? -EPROTO : r;
}

static int connect_and_identify(Live *lv)
{
	_cleanup_free_ char *seg = NULL, *sums = NULL;
	int r = pgconn_connect(lv->o->conninfo, true, &lv->conn, lv->err);
	if (r < 0)
		return r;
	lv->res->pg_version = pgconn_server_version(lv->conn) / 10000;
	if (pgconn_server_version(lv->conn) < 130000) {
		snprintf(lv->err->msg, sizeof(lv->err->msg),
			 "server version %d is not supported (PostgreSQL 13 or later is)",
			 pgconn_server_version(lv->conn) / 10000);
		return -EPROTONOSUPPORT;
	}
	r = show(lv, "data_checksums", &sums);
	if (r == 0)
		lv->checksums = !strcmp(sums, "on");
	if (r == 0)
		r = show(lv, "wal_segment_size", &seg);
	if (r == 0 && wal_parse_segment_size(seg, &lv->seg_size) < 0) {
		snprintf(lv->err->msg, sizeof(lv->err->msg), "unexpected wal_segment_size \"%s\"", seg);
		r = -EPROTO;
	}
	/* the WAL connection reserves WAL (temporary slot) before the backup starts */
	if (r == 0)
		r = walstream_new(lv->o->conninfo, lv->staging, &lv->wal, &lv->sys, lv->err);
	if (r == 0)
		r = instance_check_system(lv->repo, lv->o->instance ? lv->o->instance : "main",
					  lv->sys.system_id, lv->err);
	return r;
}

static int start_base_backup(Live *lv)
{
	char label[256], quoted[600], sql[800];
	PgRows rows = {0};
	int r;

	snprintf(label, sizeof(label), "%s", lv->o->label ? lv->o->label : "pgbakfs");
	r = pgconn_quote_literal(label, quoted, sizeof(quoted));
	if (r < 0)
		return r;
	/* WAL comes through the slot; checksums are verified here, page by page */
	if (pgconn_server_version(lv->conn) >= 150000)
		snprintf(sql, sizeof(sql), "BASE_BACKUP (LABEL %s, PROGRESS, CHECKPOINT 'fast', "
			 "WAIT false, MANIFEST 'yes', VERIFY_CHECKSUMS false%s)", quoted,
			 lv->incr ? ", INCREMENTAL" : "");
	else
		snprintf(sql, sizeof(sql), "BASE_BACKUP LABEL %s PROGRESS FAST NOWAIT "
			 "MANIFEST 'yes' NOVERIFY_CHECKSUMS", quoted);
	r = pgconn_send(lv->conn, sql, lv->err);
	if (r == 0)
		r = pgconn_next_result(lv->conn, &rows, lv->err);
	if (r == PGCONN_ROWS && rows.n_rows == 1 && rows.n_cols >= 2) {
		r = lsn_parse(pgrows_get(&rows, 0, 0), &lv->start_lsn);
		lv->res->timeline = (uint32_t)strtoul(pgrows_get(&rows, 0, 1), NULL, 10);
	} else if (r >= 0) {
		snprintf(lv->err->msg, sizeof(lv->err->msg), "unexpected reply to BASE_BACKUP");
		r = -EPROTO;
	}
	pgrows_clear(&rows);
	if (r == 0)
		lsn_format(lv->start_lsn, lv->res->start_lsn);
	return r;
}

/* "pg:" and the conninfo without its secrets */
static int live_source(const char *conninfo, char **ret)
{
	_cleanup_free_ char *safe = NULL;
	int r = pgconn_conninfo_redact(conninfo, &safe, NULL);
	if (r == -EINVAL) /* libpq accepted it to connect: cannot happen; keep nothing then */
		r = 0;
	if (r < 0)
		return r;
	return asprintf(ret, "pg:%s", safe ? safe : "") < 0 ? -ENOMEM : 0;
}

static int open_snapshot(Live *lv)
{
	_cleanup_free_ char *source = NULL;
	int r = live_source(lv->o->conninfo, &source);
	if (r < 0)
		return r;
	SnapWriterOptions wo = {.instance = lv->o->instance, .type = lv->res->type,
				.parent = lv->incr ? lv->res->parent : NULL, .label = lv->o->label,
				.note = lv->o->note, .source = source, .jobs = lv->o->jobs,
				.progress = lv->progress, .start_lsn = lv->res->start_lsn,
				.system_id = lv->sys.system_id, .timeline = lv->res->timeline,
				.pg_version = lv->res->pg_version};
	r = snapwriter_new(lv->repo, &wo, &lv->w);
	if (r == 0)
		r = tree_new(lv->w, &lv->tree);
	if (r == 0 && lv->checksums) /* without data checksums a page has none to check */
		tree_verify_pages(lv->tree, lv->start_lsn);
	if (r == 0 && lv->incr)
		incr_attach(lv->incr, lv->tree);
	return r;
}

/* Tablespace list: sizes (KiB) for progress. */
static int read_tablespaces(Live *lv)
{
	PgRows *rows = &lv->tablespaces;
	uint64_t total = 0;
	int r = pgconn_next_result(lv->conn, rows, lv->err);
	if (r == PGCONN_ROWS && rows->n_cols >= 3) {
		r = 0;
		for (int i = 0; i < rows->n_rows && r == 0; i++) {
			const char *oid = pgrows_get(rows, i, 0), *loc = pgrows_get(rows, i, 1);
			if (pgrows_get(rows, i, 2))
				total += strtoull(pgrows_get(rows, i, 2), NULL, 10) * 1024;
			if (oid && loc && *loc) {
				/* kept as a directory; restore puts it back at loc (or a mapped path) */
				char path[64];
				snprintf(path, sizeof(path), "pg_tblspc/%s", oid);
				r = snapwriter_add_link(lv->w, path, loc);
			}
		}
		if (r < 0)
			return r;
		progress_set_total(lv->progress, total);
		r = 0;
	} else if (r >= 0) {
		snprintf(lv->err->msg, sizeof(lv->err->msg), "unexpected reply to BASE_BACKUP");
		r = -EPROTO;
	}
	return r;
}

static int end_archive(Live *lv)
{
	int r = 0;
	if (lv->tar) {
		r = tar_reader_finish(lv->tar);
		lv->tar = tar_reader_free(lv->tar);
		if (r < 0)
			snprintf(lv->err->msg, sizeof(lv->err->msg), "the server's archive stream ended inside an entry");
	}
	return r;
}

/* "n" message: archive name, then tablespace location ("" for the data directory). */
static int new_archive(Live *lv, const char *msg, size_t len)
{
	const char *name = msg, *location;
	char prefix[64] = "";
	int r = end_archive(lv);
	if (r < 0)
		return r;
	location = memchr(name, '\0', len) ? name + strlen(name) + 1 : NULL;
	if (!location || location >= msg + len || !memchr(location, '\0', (size_t)(msg + len - location)))
		return -EPROTO;
	if (*location) {
		unsigned oid = (unsigned)strtoul(name, NULL, 10);
		if (!oid)
			return -EPROTO;
		snprintf(prefix, sizeof(prefix), "pg_tblspc/%u", oid);
	}
	return tar_reader_new(lv->tree, prefix, &lv->tar);
}

/* Files we add ourselves belong to the owner of the data directory. */
static TreeMeta own_file_meta(Live *lv)
{
	TreeMeta m = {.mode = 0600, .mtime_ns = now_ns()};
	tree_root_owner(lv->tree, &m.uid, &m.gid);
	return m;
}

static int manifest_buffer_begin(Live *lv);
static int manifest_buffer_end(Live *lv);

static int start_manifest(Live *lv)
{
	int r = end_archive(lv);
	TreeMeta m;
	if (r == 0)
		r = tree_ensure_root(lv->tree, &lv->default_meta);
	m = own_file_meta(lv);
	if (r == 0 && lv->incr)
		return manifest_buffer_begin(lv);
	if (r == 0)
		r = tree_file_begin(lv->tree, "backup_manifest", &m, &lv->manifest);
	return r;
}

static int feed(Live *lv, const char *data, size_t len)
{
	lv->res->received_bytes += len;
	if (lv->manifest_buf)
		return fwrite(data, 1, len, lv->manifest_buf) == len ? 0 : -ENOMEM;
	if (lv->manifest)
		return tree_file_write(lv->tree, lv->manifest, data, len);
	if (lv->tar)
		return tar_reader_feed(lv->tar, data, len);
	return -EPROTO;
}

/* PostgreSQL 15+: one COPY stream of typed messages. */
static int handle_copy_message(Live *lv, const char *m, size_t len)
{
	switch (len ? m[0] : 0) {
	case 'n': return new_archive(lv, m + 1, len - 1);
	case 'd': return feed(lv, m + 1, len - 1);
	case 'm': return start_manifest(lv);
	case 'p': return 0; /* we count bytes ourselves */
	default: return -EPROTO;
	}
}

static int receive_copy(Live *lv, bool typed)
{
	for (;;) {
		char *buf = NULL;
		int n = pgconn_copy_read(lv->conn, true, &buf, lv->err), r;
		if (n == 0)
			return 0;
		if (n < 0)
			return n;
		r = typed ? handle_copy_message(lv, buf, (size_t)n) : feed(lv, buf, (size_t)n);
		pgconn_freemem(buf);
		if (r < 0)
			return r;
	}
}

static int expect_copy(Live *lv)
{
	int r = pgconn_next_result(lv->conn, NULL, lv->err);
	if (r == PGCONN_COPY_OUT)
		return 0;
	if (r >= 0) {
		snprintf(lv->err->msg, sizeof(lv->err->msg), "unexpected reply to BASE_BACKUP");
		return -EPROTO;
	}
	return r;
}

static int receive_archives(Live *lv)
{
	int r = expect_copy(lv);
	if (r < 0)
		return r;
	if (pgconn_server_version(lv->conn) >= 150000)
		return receive_copy(lv, true);
	/* 13 and 14: one COPY per row of the tablespace list, then one for the manifest */
	for (int i = 0; r == 0 && i < lv->tablespaces.n_rows; i++) {
		const char *oid = pgrows_get(&lv->tablespaces, i, 0);
		char prefix[64] = "";
		if (i > 0)
			r = expect_copy(lv);
		if (oid)
			snprintf(prefix, sizeof(prefix), "pg_tblspc/%s", oid);
		if (r == 0)
			r = tar_reader_new(lv->tree, prefix, &lv->tar);
		if (r == 0)
			r = receive_copy(lv, false);
		if (r == 0)
			r = end_archive(lv);
	}
	if (r == 0)
		r = expect_copy(lv);
	if (r == 0)
		r = start_manifest(lv);
	if (r == 0)
		r = receive_copy(lv, false);
	return r;
}

static int finish_base_backup(Live *lv)
{
	PgRows rows = {0};
	int r = end_archive(lv);
	if (r == 0 && lv->manifest) {
		r = tree_file_end(lv->tree, lv->manifest);
		lv->manifest = NULL;
	}
	if (r == 0 && lv->manifest_buf)
		r = manifest_buffer_end(lv);
	if (r == 0)
		r = pgconn_next_result(lv->conn, &rows, lv->err);
	if (r == PGCONN_ROWS && rows.n_rows == 1 && rows.n_cols >= 1) {
		r = lsn_parse(pgrows_get(&rows, 0, 0), &lv->stop_lsn);
	} else if (r >= 0) {
		snprintf(lv->err->msg, sizeof(lv->err->msg), "unexpected end of BASE_BACKUP");
		r = -EPROTO;
	}
	pgrows_clear(&rows);
	while (r == 0) { /* drain to the end of the command */
		int k = pgconn_next_result(lv->conn, NULL, lv->err);
		if (k == PGCONN_DONE)
			break;
		if (k < 0)
			r = k;
	}
	if (r == 0)
		lsn_format(lv->stop_lsn, lv->res->stop_lsn);
	return r;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int add_wal_file(Live *lv, const char *name, uint8_t *buf, size_t buf_len)
{
	char path[PATH_MAX + 64], rel[64];
	TreeFile *f = NULL;
	TreeMeta m = own_file_meta(lv);
	ssize_t n;
	off_t off = 0;
	int r;

	snprintf(path, sizeof(path), "%s/%s", lv->staging, name);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	snprintf(rel, sizeof(rel), "pg_wal/%s", name);
	r = tree_file_begin(lv->tree, rel, &m, &f);
	while (r == 0 && f && (n = pread_full(fd, buf, buf_len, off)) > 0) {
		r = tree_file_write(lv->tree, f, buf, (size_t)n);
		off += n;
	}
	if (f) {
		int r2 = tree_file_end(lv->tree, f);
		r = r ? r : r2;
	}
	unlink(path);
	return r;
}

/* The streamed segments go into the snapshot's pg_wal, oldest first. */
static int add_wal(Live *lv)
{
	DIR *d = opendir(lv->staging);
	struct dirent *de;
	char **names = NULL;
	size_t n = 0;
	uint8_t *buf = malloc(1 << 20);
	int r = d && buf ? 0 : -ENOMEM;

	while (r == 0 && d && (de = readdir(d))) {
		if (strlen(de->d_name) != 24)
			continue;
		char **v = realloc(names, (n + 1) * sizeof(char *));
		if (!v || !(v[n] = strdup(de->d_name))) {
			names = v ? v : names;
			r = -ENOMEM;
			break;
		}
		names = v;
		n++;
	}
	if (d)
		closedir(d);
	if (n > 1)
		qsort(names, n, sizeof(char *), cmp_str);
	for (size_t i = 0; r == 0 && i < n; i++)
		r = add_wal_file(lv, names[i], buf, 1 << 20);
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	free(buf);
	return r;
}

/* ---- remote incremental (PostgreSQL 17+): UPLOAD_MANIFEST + BASE_BACKUP INCREMENTAL ---- */

/* An incremental asked for stays full: why, in one line, for the caller to print. */
static int stay_full(Live *lv, const char *fmt, const char *arg)
{
	snprintf(lv->res->note, sizeof(lv->res->note), fmt, arg ? arg : "");
	lv->incr = incr_free(lv->incr);
	snprintf(lv->res->type, sizeof(lv->res->type), "full");
	lv->res->parent[0] = '\0';
	return 0;
}

/* "1GB", "8kB" (SHOW's units) -> bytes; 0 when it is not one of those. */
static uint64_t show_bytes(const char *v)
{
	char *end;
	uint64_t n = strtoull(v ? v : "", &end, 10);
	if (!strcmp(end, "kB"))
		return n << 10;
	if (!strcmp(end, "MB"))
		return n << 20;
	if (!strcmp(end, "GB"))
		return n << 30;
	if (!strcmp(end, "TB"))
		return n << 40;
	return *end ? 0 : n;
}

/* block_size and segment_size, as the INCREMENTAL format depends on them. */
static int server_block_layout(Live *lv, uint32_t *ret_blcksz, uint32_t *ret_relseg)
{
	_cleanup_free_ char *bs = NULL, *seg = NULL;
	int r = show(lv, "block_size", &bs);
	if (r == 0)
		r = show(lv, "segment_size", &seg);
	if (r < 0)
		return r;
	uint64_t b = show_bytes(bs), s = show_bytes(seg);
	if (!b || b > (1 << 20) || !s || s % b || s / b > UINT32_MAX) {
		snprintf(lv->err->msg, sizeof(lv->err->msg), "unexpected block_size \"%s\" or "
			 "segment_size \"%s\"", bs, seg);
		return -EPROTO;
	}
	*ret_blcksz = (uint32_t)b;
	*ret_relseg = (uint32_t)(s / b);
	return 0;
}

/* The replication connection afresh (after the server refused an incremental). */
static int reconnect(Live *lv)
{
	lv->conn = pgconn_free(lv->conn);
	return pgconn_connect(lv->o->conninfo, true, &lv->conn, lv->err);
}

static int upload_piece(const void *buf, size_t len, void *userdata)
{
	Live *lv = userdata;
	return pgconn_copy_write(lv->conn, buf, len, lv->err);
}

/*
 * UPLOAD_MANIFEST with the parent's backup_manifest. 1: the server refused
 * it (its message in err); 0: taken.
 */
static int upload_manifest(Live *lv)
{
	int r = pgconn_send(lv->conn, "UPLOAD_MANIFEST", lv->err), k;
	if (r == 0)
		r = pgconn_next_result(lv->conn, NULL, lv->err);
	if (r == -EIO)
		return 1;
	if (r >= 0 && r != PGCONN_COPY_IN) {
		snprintf(lv->err->msg, sizeof(lv->err->msg), "unexpected reply to UPLOAD_MANIFEST");
		return -EPROTO;
	}
	r = incr_parent_manifest_send(lv->incr, upload_piece, lv);
	if (r < 0) {
		if (!lv->err->msg[0])
			snprintf(lv->err->msg, sizeof(lv->err->msg), "could not read the backup_manifest "
				 "of the parent snapshot \"%s\": %s", lv->parent.name, strerror(-r));
		return r;
	}
	r = pgconn_copy_end(lv->conn, lv->err);
	bool refused = false;
	while (r == 0 && (k = pgconn_next_result(lv->conn, NULL, lv->err)) != PGCONN_DONE) {
		if (k == -EIO)
			refused = true;
		else if (k < 0)
			r = k;
	}
	return r < 0 ? r : refused;
}

/*
 * incr asked for: decide whether the server can send changed blocks against
 * the newest snapshot, and upload that snapshot's manifest. Anything that
 * rules it out leaves a full backup and a note.
 */
static int plan_incremental(Live *lv)
{
	_cleanup_free_ char *summarize = NULL;
	uint32_t blcksz = 0, relseg = 0;
	int r;

	snprintf(lv->res->type, sizeof(lv->res->type), "full");
	if (!lv->o->type || strcmp(lv->o->type, "incr") != 0)
		return 0;
	if (lv->res->pg_version < 17) {
		char v[16];
		snprintf(v, sizeof(v), "%d", lv->res->pg_version);
		return stay_full(lv, "PostgreSQL %s has no incremental BASE_BACKUP: taking a full "
			      "backup (dedup stores only new chunks)", v);
	}
	r = show(lv, "summarize_wal", &summarize);
	if (r < 0)
		return r;
	if (strcmp(summarize, "on") != 0)
		return stay_full(lv, "summarize_wal is off on the server, so it cannot send only changed "
			      "blocks: taking a full backup (dedup stores only new chunks)%s", NULL);
	r = catalog_snapshot_get(repo_catalog(lv->repo), "latest",
				 lv->o->instance ? lv->o->instance : "main", &lv->parent);
	if (r == -ENOENT)
		return stay_full(lv, "instance has no snapshot yet: taking a full backup%s", NULL);
	if (r == 0)
		r = server_block_layout(lv, &blcksz, &relseg);
	if (r < 0)
		return r;
	IncrOptions io = {.parent_rowid = lv->parent.rowid, .parent_name = lv->parent.name,
			  .blcksz = blcksz, .relseg_blocks = relseg};
	r = incr_new(lv->repo, &io, &lv->incr);
	if (r == -EINVAL)
		return stay_full(lv, "the repository's chunk size is not a multiple of the server's "
			      "block size: taking a full backup%s", NULL);
	if (r < 0)
		return r;
	if (!incr_parent_has_manifest(lv->incr))
		return stay_full(lv, "the newest snapshot, \"%s\", has no backup_manifest: taking a "
			      "full backup", lv->parent.name);
	snprintf(lv->res->type, sizeof(lv->res->type), "incr");
	snprintf(lv->res->parent, sizeof(lv->res->parent), "%s", lv->parent.name);
	r = upload_manifest(lv);
	if (r == 1) {
		char why[sizeof(lv->err->msg)];
		snprintf(why, sizeof(why), "%s", lv->err->msg);
		lv->err->msg[0] = '\0';
		stay_full(lv, "the server refused the parent's backup_manifest (%s): taking a full "
			  "backup", why);
		return reconnect(lv);
	}
	return r;
}

/* The server can still refuse at BASE_BACKUP (WAL summaries missing): then full. */
static int start_base_backup_or_full(Live *lv)
{
	int r;
	pgconn_hold_notices(lv->conn, lv->incr != NULL); /* a refusal's warnings are noise */
	r = start_base_backup(lv);
	if (r != -EIO || !lv->incr)
		pgconn_hold_notices(lv->conn, false);
	if (r == -EIO && lv->incr) {
		char why[sizeof(lv->err->msg)];
		snprintf(why, sizeof(why), "%s", lv->err->msg);
		lv->err->msg[0] = '\0';
		stay_full(lv, "the server cannot take an incremental backup (%s): taking a full "
			  "backup", why);
		r = reconnect(lv);
		if (r == 0)
			r = start_base_backup(lv);
	}
	return r;
}

/* The server's manifest names INCREMENTAL files: kept aside, rewritten at the end. */
static int manifest_buffer_begin(Live *lv)
{
	lv->manifest_buf = open_memstream(&lv->manifest_text, &lv->manifest_len);
	return lv->manifest_buf ? 0 : -ENOMEM;
}

static int manifest_buffer_end(Live *lv)
{
	_cleanup_free_ char *text = NULL;
	TreeFile *f = NULL;
	TreeMeta m = own_file_meta(lv);
	size_t len = 0;
	int r = fclose(lv->manifest_buf) == 0 ? 0 : -ENOMEM;
	lv->manifest_buf = NULL;
	if (r == 0)
		r = incr_rewrite_manifest(lv->incr, lv->manifest_text, lv->manifest_len, &text, &len);
	if (r == 0)
		r = tree_file_begin(lv->tree, "backup_manifest", &m, &f);
	if (r == 0 && f) {
		r = tree_file_write(lv->tree, f, text, len);
		int r2 = tree_file_end(lv->tree, f);
		r = r ? r : r2;
	}
	return r;
}

static int run(Live *lv)
{
	int r = connect_and_identify(lv);
	if (r == 0)
		r = plan_incremental(lv);
	if (r == 0)
		r = start_base_backup_or_full(lv);
	if (r == 0)
		r = walstream_start(lv->wal, lv->start_lsn, lv->res->timeline, lv->seg_size, lv->err);
	if (r == 0)
		r = open_snapshot(lv);
	if (r == 0)
		r = read_tablespaces(lv);
	if (r == 0)
		r = receive_archives(lv);
	if (r == 0)
		r = finish_base_backup(lv);
	if (r == 0)
		r = walstream_finish(lv->wal, lv->stop_lsn, lv->err);
	if (r == 0)
		r = add_wal(lv);
	if (r == 0)
		r = snapwriter_set_stop_lsn(lv->w, lv->res->stop_lsn);
	/* how it was taken: the server's changed blocks, or everything it sent */
	if (r == 0 && !strcmp(lv->res->type, "incr"))
		r = snapwriter_set_method(lv->w, "blocks", "blocks from the server's incremental BASE_BACKUP",
					  lv->res->received_bytes);
	else if (r == 0)
		r = snapwriter_set_method(lv->w, "full", lv->res->note[0] ? lv->res->note : NULL,
					  lv->res->received_bytes);
	if (r == 0)
		r = snapwriter_commit(lv->w, &lv->res->snap);
	return r;
}

int live_backup(Repo *repo, const LiveBackupOptions *o, LiveBackupResult *ret, PgError *err)
{
	Live lv = {.repo = repo, .o = o, .res = ret, .err = err,
		   .default_meta = {.mode = 0700, .uid = geteuid(), .gid = getegid()}};
	int r;

	*ret = (LiveBackupResult){0};
	err->msg[0] = '\0';
	snprintf(lv.staging, sizeof(lv.staging), "%s/pgbakfs-wal-XXXXXX",
		 o->staging_dir ? o->staging_dir : "/tmp");
	if (!mkdtemp(lv.staging))
		return fail(&lv, -errno, "could not create a staging directory for WAL%s: %s", NULL);
	progress_new("backup", 0, o->progress, &lv.progress);

	r = run(&lv);

	lv.tar = tar_reader_free(lv.tar);
	if (lv.manifest)
		tree_file_end(lv.tree, lv.manifest);
	if (r < 0 && lv.incr && incr_error(lv.incr)[0] && !err->msg[0])
		snprintf(err->msg, sizeof(err->msg), "%s", incr_error(lv.incr));
	if (lv.incr) {
		ret->incremental_files = incr_n_files(lv.incr);
		ret->parent_bytes = incr_reused_bytes(lv.incr);
	}
	lv.incr = incr_free(lv.incr);
	if (lv.manifest_buf)
		fclose(lv.manifest_buf);
	free(lv.manifest_text);
	snapshot_info_clear(&lv.parent);
	lv.tree = tree_free(lv.tree);
	lv.w = snapwriter_free(lv.w); /* an uncommitted snapshot is removed */
	lv.wal = walstream_free(lv.wal);
	lv.conn = pgconn_free(lv.conn); /* the server aborts an unfinished backup */
	lv.progress = progress_free(lv.progress);
	pgrows_clear(&lv.tablespaces);
	rm_rf(lv.staging);
	return r;
}

/* ---- sources that older versions recorded with a secret (see live.h) ---- */

typedef struct Scrub {
	CatalogSourceEdit *v;
	size_t n;
} Scrub;

/*
 * What a source becomes: NULL when it has nothing to remove. A source libpq
 * cannot parse (cut short, or a newer libpq's option) loses its conninfo when
 * it looks like it holds a password.
 */
static int scrubbed_source(const char *source, char **ret)
{
	_cleanup_free_ char *safe = NULL;
	bool secret = false;
	const char *ci;
	int r;

	*ret = NULL;
	if (!source || strncmp(source, "pg:", 3) != 0)
		return 0;
	ci = source + 3;
	r = pgconn_conninfo_redact(ci, &safe, &secret);
	if (r == -EINVAL) {
		secret = strcasestr(ci, "password") || (strstr(ci, "://") && strchr(ci, '@'));
		r = 0;
	}
	if (r < 0 || !secret)
		return r;
	return asprintf(ret, "pg:%s", safe ? safe : "") < 0 ? -ENOMEM : 0;
}

static int scrub_collect(const SnapshotInfo *s, void *ud)
{
	Scrub *sc = ud;
	char *src = NULL;
	int r = scrubbed_source(s->source, &src);
	if (r < 0 || !src)
		return r;
	CatalogSourceEdit *v = realloc(sc->v, (sc->n + 1) * sizeof(*v));
	if (!v) {
		free(src);
		return -ENOMEM;
	}
	sc->v = v;
	sc->v[sc->n++] = (CatalogSourceEdit){.rowid = s->rowid, .source = src};
	return 0;
}

int live_scrub_sources(Repo *repo, uint64_t *ret_n)
{
	Scrub sc = {0};
	int r = catalog_snapshot_foreach_any(repo_catalog(repo), scrub_collect, &sc);
	if (r == 0)
		r = catalog_snapshot_set_sources(repo_catalog(repo), sc.v, sc.n);
	if (r == 0 && sc.n)
		repo_publish_whole(repo); /* the old text must not stay in a chain of deltas */
	if (r == 0 && ret_n)
		*ret_n = sc.n;
	for (size_t i = 0; i < sc.n; i++)
		free((char *)sc.v[i].source);
	free(sc.v);
	return r;
}
