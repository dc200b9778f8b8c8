/*
 * Snapshot manifests as SQLite images. A second, private in-memory
 * connection holds the image; the catalog's own connection (catalog_sqlite)
 * is only read (export) or written inside one transaction (import), mostly
 * through catalog.h. The snapshots row is copied column by column by name,
 * so a column added to the catalog later travels without a format change.
 */
#include "store/manifest.h"
#include "store/sqldb.h"
#include "store/treedigest.h"
#include "common/log.h"
#include "common/util.h"

#include <sqlite3.h>
#include <string.h>

/* one CRC record: a flag byte (1: known) and the CRC-32C little-endian */
#define CRC_RECORD_LEN 5
/* no SQLite database is smaller than one page of the smallest size */
#define IMAGE_MIN_LEN 512

static const char image_schema[] =
	"CREATE TABLE meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;"
	"CREATE TABLE files(ino INTEGER PRIMARY KEY, parent INTEGER NOT NULL, name TEXT NOT NULL,"
	"  mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,"
	"  mtime INTEGER NOT NULL, size INTEGER NOT NULL, content INTEGER, target TEXT);"
	"CREATE TABLE contents(id INTEGER PRIMARY KEY, n INTEGER NOT NULL, list BLOB NOT NULL,"
	"  crcs BLOB);"
	"CREATE TABLE links(path TEXT PRIMARY KEY, target TEXT NOT NULL) WITHOUT ROWID;"
	"CREATE TABLE bad_blocks(path TEXT NOT NULL, block INTEGER NOT NULL);";

/* format 2: lists as id blocks, and the blocks this snapshot carries */
static const char image_schema_2[] =
	"ALTER TABLE contents ADD COLUMN blocks INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE contents ADD COLUMN hash BLOB;"
	"CREATE TABLE idblocks(hash BLOB PRIMARY KEY, n INTEGER NOT NULL, ids BLOB NOT NULL,"
	"  crcs BLOB) WITHOUT ROWID;";

/* format 3: the directories this snapshot carries, in portable form (catalog.h) */
static const char image_schema_3[] =
	"CREATE TABLE dirs(hash BLOB PRIMARY KEY, n INTEGER NOT NULL, entries BLOB NOT NULL)"
	"  WITHOUT ROWID;";

static void str_freep(sqlite3_str **s)
{
	if (*s)
		sqlite3_free(sqlite3_str_finish(*s));
}
#define _cleanup_str_ _cleanup_(str_freep)

/* An error of the catalog connection (as catalog.c maps them). */
static int catalog_errno(sqlite3 *db, int rc, const char *what)
{
	int e = sqldb_fail(db, rc, what);
	/* a manifest's values the catalog's schema refuses: a damaged manifest */
	return (rc & 0xff) == SQLITE_CONSTRAINT ? -EBADMSG : e;
}

/*
 * An error of the image connection: out of memory, or (import) an image that
 * is not a well-formed manifest; export builds its own, so there it is -EIO.
 */
static int image_errno(sqlite3 *db, int rc, int other, const char *what)
{
	return sqldb_fail(db, rc, what) == -ENOMEM ? -ENOMEM : other;
}

static int image_exec(sqlite3 *img, const char *sql, int other)
{
	int rc = sqlite3_exec(img, sql, NULL, NULL, NULL);
	return rc == SQLITE_OK ? 0 : image_errno(img, rc, other, sql);
}

static int image_prepare(sqlite3 *img, const char *sql, int other, sqlite3_stmt **ret)
{
	int rc = sqlite3_prepare_v2(img, sql, -1, ret, NULL);
	return rc == SQLITE_OK ? 0 : image_errno(img, rc, other, sql);
}

static int image_step_done(sqlite3 *img, sqlite3_stmt *s, int other)
{
	int rc = sqlite3_step(s);
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? 0 : image_errno(img, rc, other, sqlite3_sql(s));
}

static int catalog_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **ret)
{
	return sqldb_prepare(db, sql, ret);
}

static void bind_text_or_null(sqlite3_stmt *s, int i, const char *v)
{
	if (v)
		sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(s, i);
}

/* the private connection an image is built or read on */
static const SqldbOptions image_options = {
	.flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX};

/* ---- export ---- */

/*
 * The rows must give the digest the snapshot recorded: a damaged catalog is
 * not exported over a good manifest, and a manifest whose tree was damaged
 * (a renamed file, another chunk list) is refused rather than restored
 * wrongly. Snapshots of older versions carry none.
 */
static int verify_tree(Catalog *c, int64_t rowid)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	sqlite3 *cat = catalog_sqlite(c);
	ChunkId got;
	int rc, r = catalog_prepare(cat, "SELECT tree_digest FROM snapshots WHERE id = ?1", &s);

	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, rowid);
	rc = sqlite3_step(s);
	if (rc == SQLITE_DONE)
		return 0; /* no such snapshot: the caller's lookup says so */
	if (rc != SQLITE_ROW)
		return catalog_errno(cat, rc, "tree digest");
	if (sqlite3_column_type(s, 0) == SQLITE_NULL)
		return 0;
	r = tree_digest_compute(c, rowid, &got);
	if (r == 0 && ((size_t)sqlite3_column_bytes(s, 0) != sizeof(got.b) ||
		       memcmp(sqlite3_column_blob(s, 0), got.b, sizeof(got.b)) != 0))
		r = -EBADMSG;
	return r;
}


typedef struct Exporter {
	Catalog *c;
	int format;   /* 2 when the catalog stores lists as id blocks */
	sqlite3 *cat; /* the catalog's connection */
	sqlite3 *img; /* the manifest being built */
	sqlite3_stmt *ins;
	int64_t *contents; /* content ids the files use, with repeats */
	size_t n_contents, cap_contents;
} Exporter;

/*
 * The snapshot's row, every column under its own name: the image's table is
 * untyped, so each value keeps the type it had in the catalog.
 */
static int export_snapshot(Exporter *e, int64_t rowid)
{
	_cleanup_stmt_ sqlite3_stmt *row = NULL, *ins = NULL;
	_cleanup_str_ sqlite3_str *create = sqlite3_str_new(NULL);
	_cleanup_str_ sqlite3_str *insert = sqlite3_str_new(NULL);
	int n, rc, r = catalog_prepare(e->cat, "SELECT * FROM snapshots WHERE id = ?1", &row);

	if (r < 0)
		return r;
	sqlite3_bind_int64(row, 1, rowid);
	rc = sqlite3_step(row);
	if (rc == SQLITE_DONE)
		return -ENOENT;
	if (rc != SQLITE_ROW)
		return catalog_errno(e->cat, rc, "snapshot row");
	n = sqlite3_column_count(row);
	sqlite3_str_appendall(create, "CREATE TABLE snapshots(");
	sqlite3_str_appendall(insert, "INSERT INTO snapshots VALUES(");
	for (int i = 0; i < n; i++) {
		const char *name = sqlite3_column_name(row, i);
		if (!name)
			return -ENOMEM;
		/* the rows of a running snapshot are still being written */
		if (strcmp(name, "status") == 0 && sqlite3_column_type(row, i) == SQLITE_TEXT &&
		    strcmp((const char *)sqlite3_column_text(row, i), SNAP_STATUS_RUNNING) == 0)
			return -EINVAL;
		sqlite3_str_appendf(create, "%s\"%w\"", i ? ", " : "", name);
		sqlite3_str_appendf(insert, "%s?%d", i ? ", " : "", i + 1);
	}
	sqlite3_str_appendall(create, ")");
	sqlite3_str_appendall(insert, ")");
	if (sqlite3_str_errcode(create) || sqlite3_str_errcode(insert))
		return -ENOMEM;
	r = image_exec(e->img, sqlite3_str_value(create), -EIO);
	if (r == 0)
		r = image_prepare(e->img, sqlite3_str_value(insert), -EIO, &ins);
	if (r < 0)
		return r;
	for (int i = 0; i < n; i++) {
		/* a session is a live process of this host, a tree a row of this catalog:
		 * never part of a manifest (its files are) */
		if (strcmp(sqlite3_column_name(row, i), "session") == 0 ||
		    strcmp(sqlite3_column_name(row, i), "tree") == 0)
			sqlite3_bind_null(ins, i + 1);
		else
			sqlite3_bind_value(ins, i + 1, sqlite3_column_value(row, i));
	}
	return image_step_done(e->img, ins, -EIO);
}

static int export_content_use(int64_t content, void *userdata)
{
	Exporter *e = userdata;
	if (e->n_contents == e->cap_contents) {
		size_t cap = e->cap_contents ? 2 * e->cap_contents : 256;
		int64_t *v = realloc(e->contents, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		e->contents = v;
		e->cap_contents = cap;
	}
	e->contents[e->n_contents++] = content;
	return 0;
}

static int export_file(const FileRow *f, void *userdata)
{
	Exporter *e = userdata;
	sqlite3_stmt *s = e->ins;

	if (f->content) {
		int r = export_content_use(f->content, e);
		if (r < 0)
			return r;
	}
	sqlite3_bind_int64(s, 1, (int64_t)f->ino);
	sqlite3_bind_int64(s, 2, (int64_t)f->parent);
	sqlite3_bind_text(s, 3, f->name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 4, f->mode);
	sqlite3_bind_int64(s, 5, f->uid);
	sqlite3_bind_int64(s, 6, f->gid);
	sqlite3_bind_int64(s, 7, f->mtime_ns);
	sqlite3_bind_int64(s, 8, (int64_t)f->size);
	if (f->content)
		sqlite3_bind_int64(s, 9, f->content);
	else
		sqlite3_bind_null(s, 9);
	bind_text_or_null(s, 10, f->target);
	return image_step_done(e->img, s, -EIO);
}

static int cmp_int64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

/* The CRC records of a chunk list; *ret NULL when no chunk has a known CRC. */
static int export_crcs(Catalog *c, const ChunkId *ids, size_t n, uint8_t **ret)
{
	_cleanup_free_ uint8_t *v = calloc(n ? n : 1, CRC_RECORD_LEN);
	bool any = false;

	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		ChunkLoc loc;
		int r;
		if (chunk_id_is_hole(&ids[i]))
			continue;
		r = catalog_chunk_locate(c, &ids[i], &loc);
		if (r == -ENOENT || (r == 0 && !loc.has_crc))
			continue;
		if (r < 0)
			return r;
		v[i * CRC_RECORD_LEN] = 1;
		put_le32(v + i * CRC_RECORD_LEN + 1, loc.crc);
		any = true;
	}
	*ret = any ? TAKE_PTR(v) : NULL;
	return 0;
}

/* A list stored as id blocks goes in as the hashes of its blocks (format 2). */
static int export_content(Exporter *e, sqlite3_stmt *ins, int64_t id)
{
	_cleanup_free_ ChunkId *ids = NULL, *blocks = NULL;
	_cleanup_free_ uint8_t *crcs = NULL;
	ChunkId hash;
	size_t n = 0, nb = 0;
	int form = CATALOG_LIST_INLINE;
	int r = e->format >= 2 ? catalog_content_get_blocks(e->c, id, &hash, &ids, &n, &blocks, &nb,
							    &form)
			       : catalog_content_get(e->c, id, &ids, &n);
	if (r == -ENOENT)
		return -EBADMSG; /* a file refers to a list the catalog lacks */
	if (r == 0 && nb == 0)
		r = export_crcs(e->c, ids, n, &crcs);
	if (r < 0)
		return r;
	sqlite3_bind_int64(ins, 1, id);
	sqlite3_bind_int64(ins, 2, (int64_t)n);
	if (nb)
		sqlite3_bind_blob64(ins, 3, blocks, nb * sizeof(*blocks), SQLITE_STATIC);
	else
		sqlite3_bind_blob64(ins, 3, ids, n * sizeof(*ids), SQLITE_STATIC);
	if (crcs)
		sqlite3_bind_blob64(ins, 4, crcs, n * CRC_RECORD_LEN, SQLITE_STATIC);
	else
		sqlite3_bind_null(ins, 4);
	if (e->format >= 2) {
		sqlite3_bind_int(ins, 5, nb > 0 ? form : CATALOG_LIST_INLINE);
		sqlite3_bind_blob(ins, 6, hash.b, sizeof(hash.b), SQLITE_STATIC);
	}
	return image_step_done(e->img, ins, -EIO);
}

static int export_contents(Exporter *e)
{
	_cleanup_stmt_ sqlite3_stmt *ins = NULL;
	int r = image_prepare(e->img, e->format >= 2
				? "INSERT INTO contents(id, n, list, crcs, blocks, hash)"
				  " VALUES(?1, ?2, ?3, ?4, ?5, ?6)"
				: "INSERT INTO contents(id, n, list, crcs) VALUES(?1, ?2, ?3, ?4)",
			      -EIO, &ins);
	if (r < 0)
		return r;
	if (e->n_contents)
		qsort(e->contents, e->n_contents, sizeof(*e->contents), cmp_int64);
	for (size_t i = 0; i < e->n_contents; i++) {
		if (i > 0 && e->contents[i] == e->contents[i - 1])
			continue;
		r = export_content(e, ins, e->contents[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

static int export_idblock(const ChunkId *hash, const ChunkId *ids, size_t n, void *userdata)
{
	Exporter *e = userdata;
	_cleanup_free_ uint8_t *crcs = NULL;
	int r = export_crcs(e->c, ids, n, &crcs);
	if (r < 0)
		return r;
	sqlite3_bind_blob(e->ins, 1, hash->b, sizeof(hash->b), SQLITE_STATIC);
	sqlite3_bind_int64(e->ins, 2, (int64_t)n);
	sqlite3_bind_blob64(e->ins, 3, ids, n * sizeof(*ids), SQLITE_STATIC);
	if (crcs)
		sqlite3_bind_blob64(e->ins, 4, crcs, n * CRC_RECORD_LEN, SQLITE_STATIC);
	else
		sqlite3_bind_null(e->ins, 4);
	return image_step_done(e->img, e->ins, -EIO);
}

static int export_link(const char *path, const char *target, void *userdata)
{
	Exporter *e = userdata;
	sqlite3_bind_text(e->ins, 1, path, -1, SQLITE_STATIC);
	sqlite3_bind_text(e->ins, 2, target, -1, SQLITE_STATIC);
	return image_step_done(e->img, e->ins, -EIO);
}

static int export_bad_block(const char *path, uint64_t block, void *userdata)
{
	Exporter *e = userdata;
	sqlite3_bind_text(e->ins, 1, path, -1, SQLITE_STATIC);
	sqlite3_bind_int64(e->ins, 2, (int64_t)block);
	return image_step_done(e->img, e->ins, -EIO);
}

/* e->ins becomes sql, for the rows of one catalog_*_foreach. */
static int export_prepare(Exporter *e, const char *sql)
{
	sqlite3_finalize(e->ins);
	e->ins = NULL;
	return image_prepare(e->img, sql, -EIO, &e->ins);
}

/* snapshots.tree: the snapshot's shared tree, 0 when it keeps files rows */
static int snapshot_tree(Exporter *e, int64_t rowid, int64_t *ret)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int rc, r = catalog_prepare(e->cat, "SELECT tree FROM snapshots WHERE id = ?1", &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, rowid);
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW)
		return rc == SQLITE_DONE ? -ENOENT : catalog_errno(e->cat, rc, "snapshot tree");
	*ret = sqlite3_column_int64(s, 0);
	return 0;
}

static int export_dir(const ChunkId *phash, uint64_t n, const void *bytes, size_t len, void *ud)
{
	Exporter *e = ud;
	sqlite3_bind_blob(e->ins, 1, phash->b, sizeof(phash->b), SQLITE_STATIC);
	sqlite3_bind_int64(e->ins, 2, (int64_t)n);
	sqlite3_bind_blob64(e->ins, 3, bytes, len, SQLITE_STATIC);
	return image_step_done(e->img, e->ins, -EIO);
}

/*
 * Format 3, a shared tree: the directories and contents this snapshot
 * carries (the first committed snapshot to use them, catalog_tree_export),
 * and its forest's portable hash in meta; no files rows.
 */
static int export_tree(Exporter *e, int64_t rowid, int64_t tree)
{
	CatalogTreeExport x = {.dir = export_dir, .content = export_content_use, .ud = e};
	ChunkId forest;
	int r = export_prepare(e, "INSERT INTO dirs VALUES(?1, ?2, ?3)");
	if (r == 0)
		r = catalog_tree_export(e->c, tree, rowid, &x, &forest);
	if (r == 0)
		r = export_prepare(e, "INSERT INTO meta VALUES('tree', ?1)");
	if (r == 0) {
		sqlite3_bind_blob(e->ins, 1, forest.b, sizeof(forest.b), SQLITE_STATIC);
		r = image_step_done(e->img, e->ins, -EIO);
	}
	return r;
}

static int export_rows(Exporter *e, int64_t rowid)
{
	int64_t tree = 0;
	int r = image_exec(e->img, image_schema, -EIO);
	if (r == 0 && e->format >= 2)
		r = image_exec(e->img, image_schema_2, -EIO);
	if (r == 0 && e->format >= 3)
		r = image_exec(e->img, image_schema_3, -EIO);
	if (r == 0 && e->format >= 3)
		r = snapshot_tree(e, rowid, &tree);
	if (r == 0)
		r = export_prepare(e, "INSERT INTO meta VALUES('manifest_format', ?1)");
	if (r == 0) {
		sqlite3_bind_int(e->ins, 1, e->format);
		r = image_step_done(e->img, e->ins, -EIO);
	}
	if (r == 0)
		r = export_snapshot(e, rowid);
	if (r == 0 && tree)
		r = export_tree(e, rowid, tree);
	if (r == 0 && !tree)
		r = export_prepare(e, "INSERT INTO files VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)");
	if (r == 0 && !tree)
		r = catalog_file_foreach(e->c, rowid, export_file, e);
	if (r == 0)
		r = export_contents(e);
	if (r == 0)
		r = export_prepare(e, "INSERT INTO links VALUES(?1, ?2)");
	if (r == 0)
		r = catalog_link_foreach(e->c, rowid, export_link, e);
	if (r == 0)
		r = export_prepare(e, "INSERT INTO bad_blocks VALUES(?1, ?2)");
	if (r == 0)
		r = catalog_bad_block_foreach(e->c, rowid, export_bad_block, e);
	if (r == 0 && e->format >= 2)
		r = export_prepare(e, "INSERT INTO idblocks VALUES(?1, ?2, ?3, ?4)");
	if (r == 0 && e->format >= 2)
		r = catalog_idblock_foreach_carried(e->c, rowid, export_idblock, e);
	return r;
}

/* The snapshot's rows into img, a new, empty image: in one transaction of its own. */
static int export_image(Catalog *c, int64_t snap_rowid, sqlite3 *img)
{
	/* format 1 in a format-1 repository: its older readers must read every manifest */
	Exporter e = {.c = c, .cat = catalog_sqlite(c), .img = img,
		      .format = catalog_format(c) >= 3 ? 3 : catalog_idblocks(c) ? 2 : 1};
	bool own_tx = sqlite3_get_autocommit(e.cat);
	int rc, r;

	/* thrown away on error: nothing to journal */
	r = image_exec(img, "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; BEGIN", -EIO);
	/* every row from one read transaction: a consistent snapshot of the catalog */
	if (r == 0 && own_tx) {
		rc = sqlite3_exec(e.cat, "BEGIN", NULL, NULL, NULL);
		if (rc != SQLITE_OK)
			r = catalog_errno(e.cat, rc, "BEGIN");
	}
	if (r == 0) {
		r = verify_tree(c, snap_rowid);
		if (r == 0)
			r = export_rows(&e, snap_rowid);
		if (own_tx)
			catalog_rollback(c); /* only read */
	}
	sqlite3_finalize(e.ins);
	free(e.contents);
	if (r == 0)
		r = image_exec(img, "COMMIT", -EIO);
	return r;
}

int manifest_export_file(Catalog *c, int64_t snap_rowid, const char *path)
{
	sqlite3 *img = NULL;
	int r = sqldb_open(path, &image_options, &img);

	if (r == 0) /* the image grows on disk, not in memory: a page cache of its own of 8 MiB */
		r = image_exec(img, "PRAGMA cache_size=-8192", -EIO);
	if (r == 0)
		r = export_image(c, snap_rowid, img);
	if (img && sqlite3_close(img) != SQLITE_OK && r == 0)
		r = -EIO;
	if (r < 0)
		unlink(path);
	return r;
}

/* ---- import ---- */

/*
 * Open a copy of the image on a private connection. The bytes come from
 * storage: SQLite runs nothing the image's schema asks for (triggers, views,
 * functions), and a damaged image is refused before any row is read.
 */
static int image_open(const void *buf, size_t len, sqlite3 **ret, int *ret_format)
{
	static const SqldbOptions untrusted = {
		.flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
		.untrusted = true};
	_cleanup_sqldb_ sqlite3 *img = NULL;
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	unsigned char *copy;
	int rc, r;

	if (len < IMAGE_MIN_LEN)
		return -EBADMSG;
	r = sqldb_open(":memory:", &untrusted, &img);
	if (r < 0)
		return -ENOMEM;
	copy = sqlite3_malloc64(len);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, buf, len);
	/* SQLite frees the copy, on failure too */
	rc = sqlite3_deserialize(img, "main", copy, (sqlite3_int64)len, (sqlite3_int64)len,
				 SQLITE_DESERIALIZE_FREEONCLOSE | SQLITE_DESERIALIZE_READONLY);
	if (rc != SQLITE_OK)
		return image_errno(img, rc, -EBADMSG, "deserialize");
	/* the content map below lives in memory beside the read-only image */
	r = image_exec(img, "PRAGMA temp_store=MEMORY", -EBADMSG);
	if (r == 0)
		r = image_prepare(img, "PRAGMA quick_check(1)", -EBADMSG, &s);
	if (r < 0)
		return r;
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW)
		return image_errno(img, rc, -EBADMSG, "quick_check");
	if (!sqlite3_column_text(s, 0) || strcmp((const char *)sqlite3_column_text(s, 0), "ok") != 0)
		return -EBADMSG;
	sqlite3_finalize(TAKE_PTR(s));

	r = image_prepare(img, "SELECT value FROM meta WHERE key = 'manifest_format'", -EBADMSG, &s);
	if (r < 0)
		return r;
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW)
		return rc == SQLITE_DONE ? -EBADMSG : image_errno(img, rc, -EBADMSG, "format");
	if (sqlite3_column_type(s, 0) != SQLITE_INTEGER || sqlite3_column_int64(s, 0) < 1)
		return -EBADMSG;
	if (sqlite3_column_int64(s, 0) > PGBAKFS_MANIFEST_FORMAT)
		return -EPROTONOSUPPORT;
	*ret_format = (int)sqlite3_column_int64(s, 0);
	*ret = TAKE_PTR(img);
	return 0;
}

/* 1 when the catalog's snapshots table has a column of that name, 0 if not. */
static int catalog_has_column(sqlite3 *cat, sqlite3_stmt *q, const char *name)
{
	int rc;
	sqlite3_reset(q);
	sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW)
		return 1;
	return rc == SQLITE_DONE ? 0 : catalog_errno(cat, rc, "column lookup");
}

static int snapshot_name_taken(sqlite3 *cat, const char *name)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int rc, r = catalog_prepare(cat, "SELECT 1 FROM snapshots WHERE name = ?1", &s);
	if (r < 0)
		return r;
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		return -EEXIST;
	return rc == SQLITE_DONE ? 0 : catalog_errno(cat, rc, "snapshot lookup");
}

/* The manifest's row: which columns, and its name and status are sound. */
static int import_snapshot_check(sqlite3 *img, sqlite3_stmt *row, const char **ret_name)
{
	const char *name = NULL, *status = NULL;
	int rc = sqlite3_step(row);

	if (rc != SQLITE_ROW)
		return rc == SQLITE_DONE ? -EBADMSG : image_errno(img, rc, -EBADMSG, "snapshot row");
	for (int i = 0; i < sqlite3_column_count(row); i++) {
		const char *col = sqlite3_column_name(row, i);
		if (!col)
			return -ENOMEM;
		if (sqlite3_column_type(row, i) != SQLITE_TEXT)
			continue;
		if (strcmp(col, "name") == 0)
			name = (const char *)sqlite3_column_text(row, i);
		else if (strcmp(col, "status") == 0)
			status = (const char *)sqlite3_column_text(row, i);
	}
	/* the name is a directory of the mount and part of object names */
	if (!name || !catalog_name_valid(name, strlen(name)) || !status ||
	    strcmp(status, SNAP_STATUS_RUNNING) == 0)
		return -EBADMSG;
	*ret_name = name;
	return 0;
}

static int import_snapshot(sqlite3 *cat, sqlite3 *img, int64_t *ret_rowid)
{
	_cleanup_stmt_ sqlite3_stmt *count = NULL, *row = NULL, *has = NULL, *ins = NULL;
	_cleanup_str_ sqlite3_str *cols = sqlite3_str_new(NULL);
	_cleanup_str_ sqlite3_str *vals = sqlite3_str_new(NULL);
	int use[256]; /* manifest column of each bound parameter */
	const char *name;
	int n_use = 0, rc, r;

	r = image_prepare(img, "SELECT count(*) FROM snapshots", -EBADMSG, &count);
	if (r < 0)
		return r;
	rc = sqlite3_step(count);
	if (rc != SQLITE_ROW)
		return image_errno(img, rc, -EBADMSG, "snapshot count");
	if (sqlite3_column_int64(count, 0) != 1)
		return -EBADMSG;
	r = image_prepare(img, "SELECT * FROM snapshots", -EBADMSG, &row);
	if (r == 0)
		r = import_snapshot_check(img, row, &name);
	if (r == 0)
		r = snapshot_name_taken(cat, name);
	if (r == 0)
		r = catalog_prepare(cat, "SELECT 1 FROM pragma_table_info('snapshots') WHERE name = ?1",
				    &has);
	if (r < 0)
		return r;
	for (int i = 0; i < sqlite3_column_count(row); i++) {
		const char *col = sqlite3_column_name(row, i);
		/* a new row id; sessions are of this host, and there are none yet; the files
		 * come as rows */
		if (strcmp(col, "id") == 0 || strcmp(col, "session") == 0 || strcmp(col, "tree") == 0)
			continue;
		r = catalog_has_column(cat, has, col);
		if (r < 0)
			return r;
		if (r == 0)
			continue; /* written by a newer build: not kept here */
		if (n_use == (int)ELEMENTSOF(use))
			return -EBADMSG;
		/* col is exactly a column name of the catalog's own schema */
		sqlite3_str_appendf(cols, "%s\"%w\"", n_use ? ", " : "", col);
		sqlite3_str_appendf(vals, "%s?%d", n_use ? ", " : "", n_use + 1);
		use[n_use++] = i;
	}
	if (sqlite3_str_errcode(cols) || sqlite3_str_errcode(vals))
		return -ENOMEM;
	{
		_cleanup_free_ char *sql = NULL;
		if (asprintf(&sql, "INSERT INTO snapshots(%s) VALUES(%s)", sqlite3_str_value(cols),
			     sqlite3_str_value(vals)) < 0)
			return -ENOMEM;
		r = catalog_prepare(cat, sql, &ins);
	}
	if (r < 0)
		return r;
	for (int i = 0; i < n_use; i++)
		sqlite3_bind_value(ins, i + 1, sqlite3_column_value(row, use[i]));
	rc = sqlite3_step(ins);
	if (rc != SQLITE_DONE)
		return catalog_errno(cat, rc, "snapshot insert");
	*ret_rowid = sqlite3_last_insert_rowid(cat);
	return 0;
}

/* An imported snapshot whose tree is not whole: "failed", so nobody takes it for whole. */
static int snapshot_set_failed(Catalog *c, int64_t rowid)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	sqlite3 *cat = catalog_sqlite(c);
	int rc, r = catalog_prepare(cat, "UPDATE snapshots SET status = '" SNAP_STATUS_FAILED "'"
					 " WHERE id = ?1", &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, rowid);
	rc = sqlite3_step(s);
	return rc == SQLITE_DONE ? 0 : catalog_errno(cat, rc, "snapshot status");
}

/* Set the chunks' known CRCs where the catalog has the chunk but not its CRC. */
static int import_crcs(Catalog *c, const ChunkId *ids, size_t n, const uint8_t *crcs)
{
	for (size_t i = 0; i < n; i++) {
		const uint8_t *rec = crcs + i * CRC_RECORD_LEN;
		int r;
		if (rec[0] > 1)
			return -EBADMSG;
		if (rec[0] == 0 || chunk_id_is_hole(&ids[i]))
			continue;
		r = catalog_chunk_set_crc(c, &ids[i], get_le32(rec + 1));
		if (r < 0)
			return r;
	}
	return 0;
}

/*
 * The id blocks the manifest carries: each must hash to its name. With snap,
 * the blocks get it as carrier (unless they have one: another manifest
 * carried them first).
 */
static int import_idblocks(Catalog *c, sqlite3 *img, int64_t snap)
{
	_cleanup_stmt_ sqlite3_stmt *sel = NULL;
	int rc, r = image_prepare(img, "SELECT hash, n, ids, crcs FROM idblocks", -EBADMSG, &sel);
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(sel)) == SQLITE_ROW) {
		int64_t n = sqlite3_column_int64(sel, 1), id;
		const ChunkId *ids = sqlite3_column_blob(sel, 2);
		const uint8_t *crcs = sqlite3_column_blob(sel, 3);
		ChunkId hash, got;

		if (sqlite3_column_bytes(sel, 0) != PGBAKFS_CHUNK_ID_LEN || n < 1 ||
		    n > PGBAKFS_IDBLOCK_IDS ||
		    (size_t)sqlite3_column_bytes(sel, 2) != (size_t)n * sizeof(ChunkId) ||
		    (sqlite3_column_type(sel, 3) != SQLITE_NULL &&
		     (size_t)sqlite3_column_bytes(sel, 3) != (size_t)n * CRC_RECORD_LEN))
			return -EBADMSG;
		memcpy(hash.b, sqlite3_column_blob(sel, 0), sizeof(hash.b));
		chunk_hash(ids, (size_t)n * sizeof(ChunkId), &got);
		if (memcmp(got.b, hash.b, sizeof(got.b)) != 0)
			return -EBADMSG;
		r = catalog_idblock_put(c, ids, (size_t)n, &id);
		if (r == 0 && crcs)
			r = import_crcs(c, ids, (size_t)n, crcs);
		if (r == 0 && snap)
			r = catalog_idblock_set_carrier(c, &hash, snap);
		if (r < 0)
			return r;
	}
	return rc == SQLITE_DONE ? 0 : image_errno(img, rc, -EBADMSG, "id blocks");
}

/* A list stored as id blocks: by the hashes of its blocks (format 2). */
static int import_content_blocks(Catalog *c, sqlite3_stmt *sel, int64_t n, int form,
				 int64_t *ret_id, size_t *ret_missing)
{
	size_t bytes = (size_t)sqlite3_column_bytes(sel, 2);
	ChunkId hash;
	int r;

	if (sqlite3_column_bytes(sel, 5) != PGBAKFS_CHUNK_ID_LEN || bytes % sizeof(ChunkId) ||
	    sqlite3_column_type(sel, 3) != SQLITE_NULL)
		return -EBADMSG;
	memcpy(hash.b, sqlite3_column_blob(sel, 5), sizeof(hash.b));
	r = catalog_content_put_blocks(c, &hash, (size_t)n, form, sqlite3_column_blob(sel, 2),
				       bytes / sizeof(ChunkId), ret_id, ret_missing);
	if (r == 0) {
		/* whole, the list must be the one its hash names; not whole (a block no
		 * manifest imported so far carries, maybe in a list the catalog had): missing */
		_cleanup_free_ ChunkId *ids = NULL;
		size_t got_n = 0;
		ChunkId got;
		r = catalog_content_get(c, *ret_id, &ids, &got_n);
		if (r == -EBADMSG) {
			*ret_missing += !*ret_missing;
			r = 0;
		} else if (r == 0) {
			chunk_hash(ids, got_n * sizeof(ChunkId), &got);
			if (memcmp(got.b, hash.b, sizeof(got.b)) != 0)
				r = -EBADMSG;
		}
	}
	return r;
}

/*
 * Each chunk list goes in (or is found by its hash); temp.content_map takes
 * the manifest's content id to the catalog's for the files. *ret_missing:
 * blocks of its lists that neither it nor the catalog holds.
 */
static int import_contents(Catalog *c, sqlite3 *img, int format, int64_t snap,
			   size_t *ret_missing)
{
	static const ChunkId empty_list; /* a zero-length list is a blob, not NULL */
	_cleanup_stmt_ sqlite3_stmt *sel = NULL, *map = NULL;
	int rc, r;

	r = image_exec(img, "CREATE TEMP TABLE content_map(old INTEGER PRIMARY KEY,"
			    " new INTEGER NOT NULL)", -EBADMSG);
	if (r == 0)
		r = image_prepare(img, format >= 2 ? "SELECT id, n, list, crcs, blocks, hash FROM contents"
						   : "SELECT id, n, list, crcs, 0, NULL FROM contents",
				  -EBADMSG, &sel);
	if (r == 0)
		r = image_prepare(img, "INSERT INTO temp.content_map VALUES(?1, ?2)", -EBADMSG, &map);
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(sel)) == SQLITE_ROW) {
		int64_t n = sqlite3_column_int64(sel, 1), id;
		size_t bytes = (size_t)sqlite3_column_bytes(sel, 2);
		const ChunkId *list = sqlite3_column_blob(sel, 2);
		const uint8_t *crcs = sqlite3_column_blob(sel, 3);
		size_t missing = 0;

		if (sqlite3_column_type(sel, 0) != SQLITE_INTEGER || n < 0)
			return -EBADMSG;
		if (sqlite3_column_int64(sel, 4) == CATALOG_LIST_BLOCKS ||
		    sqlite3_column_int64(sel, 4) == CATALOG_LIST_SMALL_BLOCKS) {
			r = import_content_blocks(c, sel, n, (int)sqlite3_column_int64(sel, 4), &id,
						  &missing);
			*ret_missing += missing;
		} else if (sqlite3_column_int64(sel, 4) != 0 || bytes % sizeof(ChunkId) ||
			   (uint64_t)n != bytes / sizeof(ChunkId) ||
			   (sqlite3_column_type(sel, 3) != SQLITE_NULL &&
			    (size_t)sqlite3_column_bytes(sel, 3) != (size_t)n * CRC_RECORD_LEN)) {
			r = -EBADMSG;
		} else {
			r = catalog_content_put(c, n ? list : &empty_list, (size_t)n, &id);
			if (r == 0 && crcs)
				r = import_crcs(c, list, (size_t)n, crcs);
		}
		/* format 3: the manifest carries every list it has (repair: the first imported) */
		if (r == 0 && format >= 3 && snap) {
			ChunkId hash;
			if (sqlite3_column_bytes(sel, 5) == PGBAKFS_CHUNK_ID_LEN)
				memcpy(hash.b, sqlite3_column_blob(sel, 5), sizeof(hash.b));
			else
				chunk_hash(n ? list : &empty_list, (size_t)n * sizeof(ChunkId), &hash);
			r = catalog_content_set_carrier(c, &hash, snap);
		}
		if (r < 0)
			return r;
		sqlite3_bind_int64(map, 1, sqlite3_column_int64(sel, 0));
		sqlite3_bind_int64(map, 2, id);
		r = image_step_done(img, map, -EBADMSG);
		if (r < 0)
			return r;
	}
	return rc == SQLITE_DONE ? 0 : image_errno(img, rc, -EBADMSG, "contents");
}

static int import_files(Catalog *c, sqlite3 *img, int64_t snap)
{
	_cleanup_stmt_ sqlite3_stmt *sel = NULL;
	int rc, r = image_prepare(img, "SELECT f.ino, f.parent, f.name, f.mode, f.uid, f.gid,"
				       " f.mtime, f.size, f.content, f.target, m.new FROM files f"
				       " LEFT JOIN temp.content_map m ON m.old = f.content ORDER BY f.ino",
				  -EBADMSG, &sel);
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(sel)) == SQLITE_ROW) {
		FileRow f = {
			.ino = (uint64_t)sqlite3_column_int64(sel, 0),
			.parent = (uint64_t)sqlite3_column_int64(sel, 1),
			.name = (const char *)sqlite3_column_text(sel, 2),
			.mode = (uint32_t)sqlite3_column_int64(sel, 3),
			.uid = (uint32_t)sqlite3_column_int64(sel, 4),
			.gid = (uint32_t)sqlite3_column_int64(sel, 5),
			.mtime_ns = sqlite3_column_int64(sel, 6),
			.size = (uint64_t)sqlite3_column_int64(sel, 7),
			.content = sqlite3_column_int64(sel, 10),
			.target = (const char *)sqlite3_column_text(sel, 9),
		};
		/* a file must not refer to a list the manifest does not carry */
		if (!f.name || (sqlite3_column_type(sel, 8) != SQLITE_NULL &&
				sqlite3_column_type(sel, 10) == SQLITE_NULL))
			return -EBADMSG;
		r = catalog_file_add(c, snap, &f);
		if (r < 0)
			return r == -EEXIST ? -EBADMSG : r; /* the same ino twice */
	}
	return rc == SQLITE_DONE ? 0 : image_errno(img, rc, -EBADMSG, "files");
}

/* Format 3: the directories the manifest carries wait, staged, for the trees that use them. */
static int import_stage_dirs(Catalog *c, sqlite3 *img)
{
	_cleanup_stmt_ sqlite3_stmt *sel = NULL;
	int rc, r = image_prepare(img, "SELECT hash, n, entries FROM dirs", -EBADMSG, &sel);
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(sel)) == SQLITE_ROW) {
		ChunkId h;
		if (sqlite3_column_bytes(sel, 0) != PGBAKFS_CHUNK_ID_LEN ||
		    sqlite3_column_type(sel, 1) != SQLITE_INTEGER || sqlite3_column_int64(sel, 1) < 0 ||
		    sqlite3_column_type(sel, 2) != SQLITE_BLOB)
			return -EBADMSG;
		memcpy(h.b, sqlite3_column_blob(sel, 0), sizeof(h.b));
		r = catalog_tree_stage(c, &h, (uint64_t)sqlite3_column_int64(sel, 1),
				       sqlite3_column_blob(sel, 2), (size_t)sqlite3_column_bytes(sel, 2));
		if (r < 0)
			return r;
	}
	return rc == SQLITE_DONE ? 0 : image_errno(img, rc, -EBADMSG, "dirs");
}

/* meta 'tree': the forest's portable hash (format 3, a shared tree); 0 when there is none. */
static int image_tree(sqlite3 *img, ChunkId *ret, bool *ret_has)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int rc, r = image_prepare(img, "SELECT value FROM meta WHERE key = 'tree'", -EBADMSG, &s);
	if (r < 0)
		return r;
	rc = sqlite3_step(s);
	*ret_has = rc == SQLITE_ROW;
	if (rc == SQLITE_DONE)
		return 0;
	if (rc != SQLITE_ROW)
		return image_errno(img, rc, -EBADMSG, "tree");
	if (sqlite3_column_type(s, 0) != SQLITE_BLOB ||
	    sqlite3_column_bytes(s, 0) != PGBAKFS_CHUNK_ID_LEN)
		return -EBADMSG;
	memcpy(ret->b, sqlite3_column_blob(s, 0), sizeof(ret->b));
	return 0;
}

/*
 * The snapshot's tree from portable directories: those of this manifest and
 * of every manifest staged before (repair's first pass). Items no manifest
 * carried are counted in *ret_missing.
 */
static int import_tree(Catalog *c, sqlite3 *img, int64_t snap, const ChunkId *forest,
		       size_t *ret_missing)
{
	_cleanup_stmt_ sqlite3_stmt *sel = NULL, *up = NULL;
	sqlite3 *cat = catalog_sqlite(c);
	int64_t local = 0;
	size_t missing = 0;
	int rc, r = import_stage_dirs(c, img);
	if (r == 0)
		r = catalog_tree_import(c, forest, &local, &missing);
	if (r == 0)
		r = catalog_prepare(cat, "UPDATE snapshots SET tree = ?2 WHERE id = ?1", &up);
	if (r < 0)
		return r;
	sqlite3_bind_int64(up, 1, snap);
	sqlite3_bind_int64(up, 2, local);
	rc = sqlite3_step(up);
	if (rc != SQLITE_DONE)
		return catalog_errno(cat, rc, "snapshot tree");
	*ret_missing += missing;
	/* the directories this manifest carries: it is their carrier unless one was imported before */
	r = image_prepare(img, "SELECT hash FROM dirs", -EBADMSG, &sel);
	while (r == 0 && (rc = sqlite3_step(sel)) == SQLITE_ROW) {
		ChunkId h;
		memcpy(h.b, sqlite3_column_blob(sel, 0), sizeof(h.b)); /* 32 bytes: staged */
		r = catalog_tree_carry(c, &h, snap);
	}
	return r < 0 ? r : rc == SQLITE_DONE ? 0 : image_errno(img, rc, -EBADMSG, "dirs");
}

static int import_links_bad_blocks(Catalog *c, sqlite3 *img, int64_t snap)
{
	_cleanup_stmt_ sqlite3_stmt *links = NULL, *bad = NULL;
	int rc, r = image_prepare(img, "SELECT path, target FROM links", -EBADMSG, &links);
	if (r == 0)
		r = image_prepare(img, "SELECT path, block FROM bad_blocks", -EBADMSG, &bad);
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(links)) == SQLITE_ROW) {
		const char *path = (const char *)sqlite3_column_text(links, 0);
		const char *target = (const char *)sqlite3_column_text(links, 1);
		if (!path || !target)
			return -EBADMSG;
		r = catalog_link_add(c, snap, path, target);
		if (r < 0)
			return r;
	}
	if (rc != SQLITE_DONE)
		return image_errno(img, rc, -EBADMSG, "links");
	while ((rc = sqlite3_step(bad)) == SQLITE_ROW) {
		const char *path = (const char *)sqlite3_column_text(bad, 0);
		if (!path)
			return -EBADMSG;
		r = catalog_bad_block_add(c, snap, path, (uint64_t)sqlite3_column_int64(bad, 1));
		if (r < 0)
			return r;
	}
	return rc == SQLITE_DONE ? 0 : image_errno(img, rc, -EBADMSG, "bad blocks");
}

int manifest_import(Catalog *c, const void *buf, size_t len, int64_t *ret_rowid)
{
	return manifest_import_counted(c, buf, len, ret_rowid, NULL);
}

int manifest_import_counted(Catalog *c, const void *buf, size_t len, int64_t *ret_rowid,
			    size_t *ret_missing)
{
	_cleanup_sqldb_ sqlite3 *img = NULL;
	int64_t rowid = 0;
	size_t missing = 0, missing_tree = 0;
	ChunkId forest;
	bool has_tree = false;
	int format, r;

	/* all or nothing: a caller's transaction would make it part of something else */
	if (!sqlite3_get_autocommit(catalog_sqlite(c)))
		return -EINVAL;
	r = image_open(buf, len, &img, &format);
	if (r < 0)
		return r;
	r = catalog_begin(c);
	if (r < 0)
		return r;
	r = import_snapshot(catalog_sqlite(c), img, &rowid);
	if (r == 0 && format >= 3)
		r = image_tree(img, &forest, &has_tree);
	if (r == 0 && format >= 2)
		r = import_idblocks(c, img, rowid);
	if (r == 0)
		r = import_contents(c, img, format, rowid, &missing);
	if (r == 0 && has_tree)
		r = import_tree(c, img, rowid, &forest, &missing_tree);
	if (r == 0 && !has_tree)
		r = import_files(c, img, rowid);
	if (r == 0)
		r = import_links_bad_blocks(c, img, rowid);
	/* with a block no manifest carried, the lists are not whole: the caller marks the
	 * snapshot failed (catalog_check_references names the block); a directory or a list
	 * no manifest carried: the same, and the caller is told (missing_tree) */
	if (r == 0 && missing == 0 && missing_tree == 0)
		r = verify_tree(c, rowid);
	if (r == 0 && missing_tree > 0)
		r = snapshot_set_failed(c, rowid);
	if (r == 0)
		r = catalog_commit(c);
	if (r < 0) {
		catalog_rollback(c);
		return r;
	}
	if (ret_rowid)
		*ret_rowid = rowid;
	if (ret_missing)
		*ret_missing = missing_tree;
	return 0;
}

int manifest_import_idblocks(Catalog *c, const void *buf, size_t len)
{
	_cleanup_sqldb_ sqlite3 *img = NULL;
	int format, r;

	if (!sqlite3_get_autocommit(catalog_sqlite(c)))
		return -EINVAL;
	r = image_open(buf, len, &img, &format);
	if (r < 0 || format < 2)
		return r;
	r = catalog_begin(c);
	if (r < 0)
		return r;
	r = import_idblocks(c, img, 0);
	/* format 3: lists and directories may be named by another manifest's tree too */
	if (r == 0 && format >= 3) {
		size_t missing = 0;
		r = import_contents(c, img, format, 0, &missing);
	}
	if (r == 0 && format >= 3)
		r = import_stage_dirs(c, img);
	if (r == 0)
		r = catalog_commit(c);
	if (r < 0)
		catalog_rollback(c);
	return r;
}
