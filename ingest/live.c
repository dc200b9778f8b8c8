#include "ingest/live.h"
#include "common/log.h"
#include "common/util.h"
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
			 "WAIT false, MANIFEST 'yes', VERIFY_CHECKSUMS false)", quoted);
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
	SnapWriterOptions wo = {.instance = lv->o->instance, .type = "full", .label = lv->o->label,
				.note = lv->o->note, .source = source, .jobs = lv->o->jobs,
				.progress = lv->progress, .start_lsn = lv->res->start_lsn,
				.system_id = lv->sys.system_id, .timeline = lv->res->timeline,
				.pg_version = lv->res->pg_version};
	r = snapwriter_new(lv->repo, &wo, &lv->w);
	if (r == 0)
		r = tree_new(lv->w, &lv->tree);
	if (r == 0 && lv->checksums) /* without data checksums a page has none to check */
		tree_verify_pages(lv->tree, lv->start_lsn);
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

static int start_manifest(Live *lv)
{
	int r = end_archive(lv);
	TreeMeta m;
	if (r == 0)
		r = tree_ensure_root(lv->tree, &lv->default_meta);
	m = own_file_meta(lv);
	if (r == 0)
		r = tree_file_begin(lv->tree, "backup_manifest", &m, &lv->manifest);
	return r;
}

static int feed(Live *lv, const char *data, size_t len)
{
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

static int run(Live *lv)
{
	int r = connect_and_identify(lv);
	if (r == 0)
		r = start_base_backup(lv);
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
	if (r == 0 && ret_n)
		*ret_n = sc.n;
	for (size_t i = 0; i < sc.n; i++)
		free((char *)sc.v[i].source);
	free(sc.v);
	return r;
}
