/*
 * All SQL of pgbakfs. Statements are prepared once per connection and
 * cached; SQLite's error codes become -errno here and nowhere else.
 */
#include "store/catalog.h"
#include "common/log.h"
#include "common/util.h"

#include <limits.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <time.h>
#include <stdio.h>
#include <string.h>

#define CATALOG_SCHEMA_VERSION 1
#define CATALOG_BUSY_TIMEOUT_MS 120000
#define CATALOG_N_TABLES 10 /* tables in schema_sql */

static const char schema_sql[] =
	"CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS packs(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
	"  state TEXT NOT NULL, session TEXT, size INTEGER NOT NULL DEFAULT 0,"
	"  n_chunks INTEGER NOT NULL DEFAULT 0, created INTEGER NOT NULL);"
	"CREATE TABLE IF NOT EXISTS chunks(id BLOB PRIMARY KEY, pack INTEGER NOT NULL,"
	"  offset INTEGER NOT NULL, elen INTEGER NOT NULL, plen INTEGER NOT NULL,"
	"  enc INTEGER NOT NULL, condemned INTEGER, crc INTEGER) WITHOUT ROWID;"
	"CREATE INDEX IF NOT EXISTS chunks_pack ON chunks(pack);"
	"CREATE TABLE IF NOT EXISTS contents(id INTEGER PRIMARY KEY, hash BLOB NOT NULL UNIQUE,"
	"  n INTEGER NOT NULL, list BLOB NOT NULL);"
	"CREATE TABLE IF NOT EXISTS sessions(id TEXT PRIMARY KEY, kind TEXT NOT NULL,"
	"  pid INTEGER NOT NULL, started INTEGER NOT NULL, epoch INTEGER NOT NULL) WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS snapshots(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
	"  instance TEXT NOT NULL, type TEXT NOT NULL, parent TEXT, status TEXT NOT NULL,"
	"  session TEXT, label TEXT, note TEXT, source TEXT, start_time INTEGER NOT NULL,"
	"  stop_time INTEGER, start_lsn TEXT, stop_lsn TEXT, timeline INTEGER, system_id TEXT,"
	"  pg_version INTEGER, logical_bytes INTEGER NOT NULL DEFAULT 0,"
	"  stored_bytes INTEGER NOT NULL DEFAULT 0, n_files INTEGER NOT NULL DEFAULT 0,"
	"  verified_time INTEGER, verified_ok INTEGER, verified_details TEXT,"
	"  pinned_until INTEGER, tree_digest BLOB, method TEXT, method_note TEXT,"
	"  read_bytes INTEGER);"
	"CREATE TABLE IF NOT EXISTS files(snap INTEGER NOT NULL, ino INTEGER NOT NULL,"
	"  parent INTEGER NOT NULL, name TEXT NOT NULL, mode INTEGER NOT NULL,"
	"  uid INTEGER NOT NULL, gid INTEGER NOT NULL, mtime INTEGER NOT NULL,"
	"  size INTEGER NOT NULL, content INTEGER, target TEXT,"
	"  PRIMARY KEY(snap, ino)) WITHOUT ROWID;"
	"CREATE INDEX IF NOT EXISTS files_dir ON files(snap, parent, name);"
	"CREATE INDEX IF NOT EXISTS files_content ON files(content);"
	"CREATE TABLE IF NOT EXISTS bad_blocks(snap INTEGER NOT NULL, path TEXT NOT NULL,"
	"  block INTEGER NOT NULL, PRIMARY KEY(snap, path, block)) WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS links(snap INTEGER NOT NULL, path TEXT NOT NULL,"
	"  target TEXT NOT NULL, PRIMARY KEY(snap, path)) WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS holds(session TEXT NOT NULL, snap INTEGER NOT NULL,"
	"  PRIMARY KEY(session, snap)) WITHOUT ROWID;";

/* A snapshot list and show: finished, and not deleted (deleted ones may still be held). */
#define VISIBLE "status NOT IN ('running', 'deleted')"

enum {
	ST_CHUNK_EXISTS,
	ST_CHUNK_LOCATE,
	ST_CHUNK_UPSERT,
	ST_PACK_RECORD,
	ST_CONTENT_INSERT,
	ST_CONTENT_ID,
	ST_CONTENT_GET,
	ST_FILE_ADD,
	ST_FILE_LIST,
	N_STATEMENTS
};

static const char *const statement_sql[N_STATEMENTS] = {
	[ST_CHUNK_EXISTS] = "SELECT 1 FROM chunks WHERE id = ?1 AND condemned IS NULL",
	[ST_CHUNK_LOCATE] = "SELECT c.pack, p.name, c.offset, c.elen, c.plen, c.enc, c.crc, p.size FROM chunks c"
			    " JOIN packs p ON p.id = c.pack WHERE c.id = ?1",
	[ST_CHUNK_UPSERT] = "INSERT INTO chunks(id, pack, offset, elen, plen, enc, crc)"
			    " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(id) DO UPDATE SET"
			    " pack = excluded.pack, offset = excluded.offset, elen = excluded.elen,"
			    " plen = excluded.plen, enc = excluded.enc, crc = excluded.crc, condemned = NULL"
			    " WHERE chunks.condemned IS NOT NULL",
	[ST_PACK_RECORD] = "UPDATE packs SET state = 'ok', size = ?2, n_chunks = ?3 WHERE id = ?1",
	[ST_CONTENT_INSERT] = "INSERT OR IGNORE INTO contents(hash, n, list) VALUES(?1, ?2, ?3)",
	[ST_CONTENT_ID] = "SELECT id FROM contents WHERE hash = ?1",
	[ST_CONTENT_GET] = "SELECT n, list FROM contents WHERE id = ?1",
	[ST_FILE_ADD] = "INSERT INTO files(snap, ino, parent, name, mode, uid, gid, mtime, size,"
			" content, target) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
	[ST_FILE_LIST] = "SELECT ino, parent, name, mode, uid, gid, mtime, size, content, target"
			 " FROM files WHERE snap = ?1 ORDER BY ino",
};

struct Catalog {
	sqlite3 *db;
	sqlite3_stmt *stmt[N_STATEMENTS];
};

int catalog_sqlite_errno(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_ROW:
	case SQLITE_DONE:
		return 0;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_READONLY:
	case SQLITE_PERM:
	case SQLITE_AUTH:
		return -EACCES;
	case SQLITE_CANTOPEN:
		return -ENOENT;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		return -EBADMSG;
	case SQLITE_CONSTRAINT:
		return -EEXIST;
	default:
		return -EIO;
	}
}

static int catalog_fail(Catalog *c, int rc, const char *what)
{
	int r = catalog_sqlite_errno(rc);
	/* the error code travels up; the SQLite text helps only a developer */
	log_debug("catalog: %s: %s", what, sqlite3_errmsg(c->db));
	return r ? r : -EIO;
}

static int exec_sql(Catalog *c, const char *sql)
{
	int rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
	return rc == SQLITE_OK ? 0 : catalog_fail(c, rc, sql);
}

static sqlite3_stmt *stmt_get(Catalog *c, int which, int *ret_r)
{
	sqlite3_stmt *s = c->stmt[which];
	if (!s) {
		int rc = sqlite3_prepare_v3(c->db, statement_sql[which], -1, SQLITE_PREPARE_PERSISTENT,
					    &s, NULL);
		if (rc != SQLITE_OK) {
			*ret_r = catalog_fail(c, rc, statement_sql[which]);
			return NULL;
		}
		c->stmt[which] = s;
	}
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	*ret_r = 0;
	return s;
}

/* Prepare a one-off statement. */
static int prepare(Catalog *c, const char *sql, sqlite3_stmt **ret)
{
	int rc = sqlite3_prepare_v2(c->db, sql, -1, ret, NULL);
	return rc == SQLITE_OK ? 0 : catalog_fail(c, rc, sql);
}

static void stmt_finalizep(sqlite3_stmt **s)
{
	if (*s)
		sqlite3_finalize(*s);
}
#define _cleanup_stmt_ _cleanup_(stmt_finalizep)

static int step_done(Catalog *c, sqlite3_stmt *s)
{
	int rc = sqlite3_step(s);
	int r = rc == SQLITE_DONE ? 0 : catalog_fail(c, rc, sqlite3_sql(s));
	sqlite3_reset(s);
	return r;
}

static void bind_text_or_null(sqlite3_stmt *s, int i, const char *v)
{
	if (v)
		sqlite3_bind_text(s, i, v, -1, SQLITE_TRANSIENT);
	else
		sqlite3_bind_null(s, i);
}

static char *column_strdup(sqlite3_stmt *s, int i)
{
	const unsigned char *t = sqlite3_column_text(s, i);
	return t ? strdup((const char *)t) : NULL;
}

/*
 * A column added after the table was first released: catalogs made before
 * get it (NULL in old rows: unknown). Chunks' CRC-32C, snapshots' tree digest.
 */
static int migrate_add_column(Catalog *c, const char *table, const char *column, const char *type)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	char sql[256];
	int r = prepare(c, "SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2", &s);
	if (r < 0)
		return r;
	sqlite3_bind_text(s, 1, table, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, column, -1, SQLITE_STATIC);
	if (sqlite3_step(s) != SQLITE_ROW)
		return catalog_fail(c, sqlite3_errcode(c->db), "table info");
	if (sqlite3_column_int(s, 0) > 0)
		return 0;
	snprintf(sql, sizeof(sql), "ALTER TABLE %s ADD COLUMN %s %s", table, column, type);
	return exec_sql(c, sql);
}

/*
 * bad_blocks was first made without a primary key; a table without one
 * cannot travel in a catalog delta (store/delta.c). Rebuild it with one,
 * duplicates dropped (the key also serves the lookups by snapshot).
 */
static int migrate_bad_blocks_key(Catalog *c)
{
	static const char check[] = "SELECT count(*) FROM pragma_table_info('bad_blocks') WHERE pk > 0";
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int r = prepare(c, check, &s);
	if (r < 0 || sqlite3_step(s) != SQLITE_ROW)
		return r < 0 ? r : catalog_fail(c, sqlite3_errcode(c->db), "table info");
	if (sqlite3_column_int(s, 0) > 0)
		return 0;
	sqlite3_reset(s);
	r = exec_sql(c, "BEGIN IMMEDIATE");
	if (r < 0)
		return r;
	/* again inside the transaction: another process may have done it meanwhile */
	int keyed = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int(s, 0) : -1;
	sqlite3_reset(s); /* before the table it reads is dropped */
	if (keyed < 0)
		r = catalog_fail(c, sqlite3_errcode(c->db), "table info");
	else if (keyed == 0)
		r = exec_sql(c, "CREATE TABLE bad_blocks_keyed(snap INTEGER NOT NULL,"
				" path TEXT NOT NULL, block INTEGER NOT NULL,"
				" PRIMARY KEY(snap, path, block)) WITHOUT ROWID;"
				"INSERT OR IGNORE INTO bad_blocks_keyed SELECT snap, path, block"
				" FROM bad_blocks;"
				"DROP TABLE bad_blocks;"
				"ALTER TABLE bad_blocks_keyed RENAME TO bad_blocks;");
	return r == 0 ? exec_sql(c, "COMMIT") : (exec_sql(c, "ROLLBACK"), r);
}

int catalog_open(const char *path, bool create, Catalog **ret)
{
	Catalog *c = calloc(1, sizeof(*c));
	int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
	int rc, r;

	if (!c)
		return -ENOMEM;
	rc = sqlite3_open_v2(path, &c->db, flags, NULL);
	if (rc != SQLITE_OK) {
		r = catalog_sqlite_errno(rc);
		catalog_free(c);
		return r ? r : -EIO;
	}
	sqlite3_busy_timeout(c->db, CATALOG_BUSY_TIMEOUT_MS);
	/* WAL: readers never block the writer; FULL: a commit survives power loss */
	r = exec_sql(c, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
			"PRAGMA foreign_keys=OFF; PRAGMA temp_store=FILE;");
	if (r == 0 && !create) {
		/* a catalog made by an earlier build of this format may lack newer tables */
		_cleanup_stmt_ sqlite3_stmt *s = NULL;
		r = prepare(c, "SELECT count(*) FROM sqlite_master WHERE type = 'table'", &s);
		if (r == 0 && sqlite3_step(s) == SQLITE_ROW && sqlite3_column_int(s, 0) > 0 &&
		    sqlite3_column_int(s, 0) < CATALOG_N_TABLES)
			create = true;
	}
	if (r == 0 && create) {
		r = exec_sql(c, "BEGIN IMMEDIATE");
		if (r == 0)
			r = exec_sql(c, schema_sql);
		if (r == 0)
			r = exec_sql(c, "INSERT OR IGNORE INTO meta VALUES('schema_version', 1);"
					"INSERT OR IGNORE INTO meta VALUES('epoch', 0);");
		r = r == 0 ? exec_sql(c, "COMMIT") : (exec_sql(c, "ROLLBACK"), r);
	}
	if (r == 0)
		r = migrate_add_column(c, "chunks", "crc", "INTEGER");
	if (r == 0)
		r = migrate_add_column(c, "snapshots", "tree_digest", "BLOB");
	if (r == 0)
		r = migrate_add_column(c, "snapshots", "method", "TEXT");
	if (r == 0)
		r = migrate_add_column(c, "snapshots", "method_note", "TEXT");
	if (r == 0)
		r = migrate_add_column(c, "snapshots", "read_bytes", "INTEGER");
	if (r == 0)
		r = migrate_bad_blocks_key(c);
	if (r == 0) {
		_cleanup_stmt_ sqlite3_stmt *s = NULL;
		r = prepare(c, "SELECT value FROM meta WHERE key = 'schema_version'", &s);
		if (r == 0 && sqlite3_step(s) == SQLITE_ROW) {
			if (sqlite3_column_int(s, 0) > CATALOG_SCHEMA_VERSION)
				r = -EPROTONOSUPPORT;
		} else if (r == 0) {
			r = -EBADMSG;
		}
	}
	if (r < 0) {
		catalog_free(c);
		return r;
	}
	*ret = c;
	return 0;
}

Catalog *catalog_free(Catalog *c)
{
	if (!c)
		return NULL;
	for (int i = 0; i < N_STATEMENTS; i++)
		sqlite3_finalize(c->stmt[i]);
	sqlite3_close(c->db);
	free(c);
	return NULL;
}

int catalog_begin(Catalog *c) { return exec_sql(c, "BEGIN IMMEDIATE"); }
int catalog_commit(Catalog *c) { return exec_sql(c, "COMMIT"); }

void catalog_rollback(Catalog *c)
{
	if (!sqlite3_get_autocommit(c->db))
		sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
}

int catalog_chunk_exists(Catalog *c, const ChunkId *id)
{
	int r, rc;
	sqlite3_stmt *s = stmt_get(c, ST_CHUNK_EXISTS, &r);
	if (!s)
		return r;
	sqlite3_bind_blob(s, 1, id->b, sizeof(id->b), SQLITE_STATIC);
	rc = sqlite3_step(s);
	r = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : catalog_fail(c, rc, "chunk lookup");
	sqlite3_reset(s);
	return r;
}

int catalog_chunk_locate(Catalog *c, const ChunkId *id, ChunkLoc *ret)
{
	int r, rc;
	sqlite3_stmt *s = stmt_get(c, ST_CHUNK_LOCATE, &r);
	if (!s)
		return r;
	sqlite3_bind_blob(s, 1, id->b, sizeof(id->b), SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		ret->pack = sqlite3_column_int64(s, 0);
		snprintf(ret->pack_name, sizeof(ret->pack_name), "%s",
			 (const char *)sqlite3_column_text(s, 1));
		ret->offset = (uint64_t)sqlite3_column_int64(s, 2);
		ret->elen = (uint32_t)sqlite3_column_int64(s, 3);
		ret->plen = (uint32_t)sqlite3_column_int64(s, 4);
		ret->enc = (uint8_t)sqlite3_column_int(s, 5);
		ret->has_crc = sqlite3_column_type(s, 6) != SQLITE_NULL;
		ret->crc = (uint32_t)sqlite3_column_int64(s, 6);
		ret->pack_size = (uint64_t)sqlite3_column_int64(s, 7);
		r = 0;
	} else {
		r = rc == SQLITE_DONE ? -ENOENT : catalog_fail(c, rc, "chunk locate");
	}
	sqlite3_reset(s);
	return r;
}

int catalog_pack_add_pending(Catalog *c, const char *name, const char *session, int64_t *ret_id)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int r = prepare(c, "INSERT INTO packs(name, state, session, created)"
			   " VALUES(?1, 'pending', ?2, ?3)", &s);
	if (r < 0)
		return r;
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	bind_text_or_null(s, 2, session);
	sqlite3_bind_int64(s, 3, now_ns());
	r = step_done(c, s);
	if (r < 0)
		return r;
	*ret_id = sqlite3_last_insert_rowid(c->db);
	return 0;
}

int catalog_pack_record(Catalog *c, int64_t pack_id, uint64_t size, const PackEntry *e, size_t n)
{
	sqlite3_stmt *s;
	int r = catalog_begin(c);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n && r == 0; i++) {
		s = stmt_get(c, ST_CHUNK_UPSERT, &r);
		if (!s)
			break;
		sqlite3_bind_blob(s, 1, e[i].id.b, sizeof(e[i].id.b), SQLITE_STATIC);
		sqlite3_bind_int64(s, 2, pack_id);
		sqlite3_bind_int64(s, 3, (int64_t)e[i].offset);
		sqlite3_bind_int64(s, 4, e[i].elen);
		sqlite3_bind_int64(s, 5, e[i].plen);
		sqlite3_bind_int(s, 6, e[i].enc);
		if (e[i].has_crc)
			sqlite3_bind_int64(s, 7, e[i].crc);
		else
			sqlite3_bind_null(s, 7);
		r = step_done(c, s);
	}
	if (r == 0 && (s = stmt_get(c, ST_PACK_RECORD, &r))) {
		sqlite3_bind_int64(s, 1, pack_id);
		sqlite3_bind_int64(s, 2, (int64_t)size);
		sqlite3_bind_int64(s, 3, (int64_t)n);
		r = step_done(c, s);
	}
	if (r == 0)
		r = catalog_commit(c);
	if (r < 0)
		catalog_rollback(c);
	return r;
}

int catalog_pack_foreach(Catalog *c, CatalogPackFn cb, void *userdata)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int r = prepare(c, "SELECT id, name, state, size FROM packs ORDER BY id", &s);
	int rc;
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		r = cb(sqlite3_column_int64(s, 0), (const char *)sqlite3_column_text(s, 1),
		       (const char *)sqlite3_column_text(s, 2), (uint64_t)sqlite3_column_int64(s, 3),
		       userdata);
		if (r < 0)
			return r;
	}
	return rc == SQLITE_DONE ? 0 : catalog_fail(c, rc, "pack list");
}

int catalog_pack_chunks(Catalog *c, int64_t pack_id, PackEntry **ret, size_t *ret_n)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	_cleanup_free_ PackEntry *v = NULL;
	size_t n = 0, cap = 0;
	int rc, r = prepare(c, "SELECT id, offset, elen, plen, enc FROM chunks WHERE pack = ?1"
			       " ORDER BY offset", &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, pack_id);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (n == cap) {
			size_t ncap = cap ? 2 * cap : 256;
			PackEntry *nv = realloc(v, ncap * sizeof(*nv));
			if (!nv)
				return -ENOMEM;
			v = nv;
			cap = ncap;
		}
		if (sqlite3_column_bytes(s, 0) != PGBAKFS_CHUNK_ID_LEN)
			return -EBADMSG;
		memcpy(v[n].id.b, sqlite3_column_blob(s, 0), PGBAKFS_CHUNK_ID_LEN);
		v[n].offset = (uint64_t)sqlite3_column_int64(s, 1);
		v[n].elen = (uint32_t)sqlite3_column_int64(s, 2);
		v[n].plen = (uint32_t)sqlite3_column_int64(s, 3);
		v[n].enc = (uint8_t)sqlite3_column_int(s, 4);
		n++;
	}
	if (rc != SQLITE_DONE)
		return catalog_fail(c, rc, "pack chunks");
	*ret = TAKE_PTR(v);
	*ret_n = n;
	return 0;
}

int catalog_content_put(Catalog *c, const ChunkId *ids, size_t n, int64_t *ret_id)
{
	ChunkId hash;
	int r, rc;
	sqlite3_stmt *s;

	chunk_hash(ids, n * sizeof(*ids), &hash);
	s = stmt_get(c, ST_CONTENT_INSERT, &r);
	if (!s)
		return r;
	sqlite3_bind_blob(s, 1, hash.b, sizeof(hash.b), SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, (int64_t)n);
	sqlite3_bind_blob64(s, 3, ids, n * sizeof(*ids), SQLITE_STATIC);
	r = step_done(c, s);
	if (r < 0)
		return r;
	if (sqlite3_changes(c->db) == 1) {
		*ret_id = sqlite3_last_insert_rowid(c->db);
		return 0;
	}
	s = stmt_get(c, ST_CONTENT_ID, &r);
	if (!s)
		return r;
	sqlite3_bind_blob(s, 1, hash.b, sizeof(hash.b), SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*ret_id = sqlite3_column_int64(s, 0);
		r = 0;
	} else {
		r = rc == SQLITE_DONE ? -EIO : catalog_fail(c, rc, "content lookup");
	}
	sqlite3_reset(s);
	return r;
}

int catalog_content_get(Catalog *c, int64_t id, ChunkId **ret, size_t *ret_n)
{
	int r, rc;
	sqlite3_stmt *s = stmt_get(c, ST_CONTENT_GET, &r);
	if (!s)
		return r;
	sqlite3_bind_int64(s, 1, id);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		size_t n = (size_t)sqlite3_column_int64(s, 0);
		size_t bytes = (size_t)sqlite3_column_bytes(s, 1);
		ChunkId *v;
		if (bytes != n * sizeof(ChunkId)) {
			r = -EBADMSG;
		} else if (!(v = malloc(bytes ? bytes : 1))) {
			r = -ENOMEM;
		} else {
			if (bytes)
				memcpy(v, sqlite3_column_blob(s, 1), bytes);
			*ret = v;
			*ret_n = n;
			r = 0;
		}
	} else {
		r = rc == SQLITE_DONE ? -ENOENT : catalog_fail(c, rc, "content get");
	}
	sqlite3_reset(s);
	return r;
}

static int meta_get_int(Catalog *c, const char *key, int64_t *ret)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int r = prepare(c, "SELECT value FROM meta WHERE key = ?1", &s);
	if (r < 0)
		return r;
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	if (sqlite3_step(s) != SQLITE_ROW)
		return -ENOENT;
	*ret = sqlite3_column_int64(s, 0);
	return 0;
}

static int meta_set_int(Catalog *c, const char *key, int64_t v)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int r = prepare(c, "INSERT OR REPLACE INTO meta VALUES(?1, ?2)", &s);
	if (r < 0)
		return r;
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, v);
	return step_done(c, s);
}

static int query_u64(Catalog *c, const char *sql, uint64_t *ret)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int rc, r = prepare(c, sql, &s);
	if (r < 0)
		return r;
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW)
		return catalog_fail(c, rc, sql);
	*ret = (uint64_t)sqlite3_column_int64(s, 0);
	return 0;
}

static int query_u64_bound(Catalog *c, const char *sql, int64_t v, uint64_t *ret)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int rc, r = prepare(c, sql, &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, v);
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW)
		return catalog_fail(c, rc, sql);
	*ret = (uint64_t)sqlite3_column_int64(s, 0);
	return 0;
}

static int exec_bound_text(Catalog *c, const char *sql, const char *v)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int r = prepare(c, sql, &s);
	if (r < 0)
		return r;
	sqlite3_bind_text(s, 1, v, -1, SQLITE_STATIC);
	return step_done(c, s);
}

static int exec_bound_int(Catalog *c, const char *sql, int64_t v)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int r = prepare(c, sql, &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, v);
	return step_done(c, s);
}

int catalog_session_add(Catalog *c, const char *id, const char *kind, int64_t *ret_epoch)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int64_t epoch = 0;
	int r = catalog_begin(c);
	if (r < 0)
		return r;
	r = meta_get_int(c, "epoch", &epoch);
	if (r == 0)
		r = prepare(c, "INSERT INTO sessions(id, kind, pid, started, epoch)"
			       " VALUES(?1, ?2, ?3, ?4, ?5)", &s);
	if (r == 0) {
		sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 2, kind, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 3, getpid());
		sqlite3_bind_int64(s, 4, now_ns());
		sqlite3_bind_int64(s, 5, epoch);
		r = step_done(c, s);
	}
	if (r == 0)
		r = catalog_commit(c);
	if (r < 0) {
		catalog_rollback(c);
		return r;
	}
	if (ret_epoch)
		*ret_epoch = epoch;
	return 0;
}

int catalog_session_remove(Catalog *c, const char *id)
{
	int r = catalog_begin(c);
	if (r == 0)
		r = exec_bound_text(c, "DELETE FROM holds WHERE session = ?1", id);
	if (r == 0)
		r = exec_bound_text(c, "DELETE FROM sessions WHERE id = ?1", id);
	if (r == 0)
		r = catalog_commit(c);
	if (r < 0)
		catalog_rollback(c);
	return r;
}

int catalog_session_foreach(Catalog *c, CatalogSessionFn cb, void *userdata)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int rc, r = prepare(c, "SELECT id, kind, pid, started FROM sessions ORDER BY started", &s);
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		r = cb((const char *)sqlite3_column_text(s, 0), (const char *)sqlite3_column_text(s, 1),
		       sqlite3_column_int64(s, 2), sqlite3_column_int64(s, 3), userdata);
		if (r < 0)
			return r;
	}
	return rc == SQLITE_DONE ? 0 : catalog_fail(c, rc, "session list");
}

int catalog_session_reap(Catalog *c, const char *id, uint64_t *ret_n_snapshots)
{
	int r = catalog_begin(c);
	uint64_t n = 0;
	if (r == 0)
		r = exec_bound_text(c, "DELETE FROM files WHERE snap IN (SELECT id FROM snapshots"
				       " WHERE session = ?1 AND status = 'running')", id);
	if (r == 0)
		r = exec_bound_text(c, "DELETE FROM bad_blocks WHERE snap IN (SELECT id FROM snapshots"
				       " WHERE session = ?1 AND status = 'running')", id);
	if (r == 0)
		r = exec_bound_text(c, "DELETE FROM links WHERE snap IN (SELECT id FROM snapshots"
				       " WHERE session = ?1 AND status = 'running')", id);
	if (r == 0) {
		r = exec_bound_text(c, "DELETE FROM snapshots WHERE session = ?1 AND status = 'running'",
				    id);
		n = (uint64_t)sqlite3_changes(c->db);
	}
	if (r == 0)
		r = exec_bound_text(c, "DELETE FROM holds WHERE session = ?1", id);
	if (r == 0)
		r = exec_bound_text(c, "DELETE FROM sessions WHERE id = ?1", id);
	if (r == 0)
		r = catalog_commit(c);
	if (r < 0) {
		catalog_rollback(c);
		return r;
	}
	if (ret_n_snapshots)
		*ret_n_snapshots = n;
	return 0;
}

void snapshot_info_clear(SnapshotInfo *s)
{
	free(s->instance);
	free(s->type);
	free(s->parent);
	free(s->status);
	free(s->label);
	free(s->note);
	free(s->source);
	free(s->session);
	free(s->start_lsn);
	free(s->stop_lsn);
	free(s->system_id);
	free(s->verified_details);
	free(s->method);
	free(s->method_note);
	*s = (SnapshotInfo){0};
}

static void snapshot_name_from_time(int64_t ns, unsigned suffix, char *buf, size_t len)
{
	char base[32];
	time_t t = (time_t)(ns / 1000000000);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(base, sizeof(base), "%Y%m%dT%H%M%SZ", &tm);
	if (suffix)
		snprintf(buf, len, "%s-%u", base, suffix);
	else
		snprintf(buf, len, "%s", base);
}

int catalog_snapshot_begin(Catalog *c, SnapshotInfo *s)
{
	_cleanup_stmt_ sqlite3_stmt *st = NULL;
	int r = prepare(c, "INSERT INTO snapshots(name, instance, type, parent, status, session,"
			   " label, note, source, start_time, start_lsn, timeline, system_id,"
			   " pg_version) VALUES(?1, ?2, ?3, ?4, 'running', ?5, ?6, ?7, ?8, ?9, ?10,"
			   " ?11, ?12, ?13)", &st);
	if (r < 0)
		return r;
	for (unsigned suffix = 0; suffix < 1000; suffix++) {
		snapshot_name_from_time(s->start_time, suffix, s->name, sizeof(s->name));
		sqlite3_reset(st);
		sqlite3_bind_text(st, 1, s->name, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, s->instance, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, s->type, -1, SQLITE_STATIC);
		bind_text_or_null(st, 4, s->parent);
		bind_text_or_null(st, 5, s->session);
		bind_text_or_null(st, 6, s->label);
		bind_text_or_null(st, 7, s->note);
		bind_text_or_null(st, 8, s->source);
		sqlite3_bind_int64(st, 9, s->start_time);
		bind_text_or_null(st, 10, s->start_lsn);
		if (s->timeline)
			sqlite3_bind_int64(st, 11, s->timeline);
		else
			sqlite3_bind_null(st, 11);
		bind_text_or_null(st, 12, s->system_id);
		if (s->pg_version)
			sqlite3_bind_int64(st, 13, s->pg_version);
		else
			sqlite3_bind_null(st, 13);
		r = step_done(c, st);
		if (r != -EEXIST)
			break;
	}
	if (r < 0)
		return r;
	s->rowid = sqlite3_last_insert_rowid(c->db);
	return 0;
}

int catalog_snapshot_finish(Catalog *c, const SnapshotInfo *s)
{
	_cleanup_stmt_ sqlite3_stmt *st = NULL;
	int r = prepare(c, "UPDATE snapshots SET status = ?2, stop_time = ?3, logical_bytes = ?4,"
			   " stored_bytes = ?5, n_files = ?6, stop_lsn = ?7, tree_digest = ?8,"
			   " method = ?9, method_note = ?10, read_bytes = ?11,"
			   " session = NULL WHERE id = ?1 AND status = 'running'", &st);
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, s->rowid);
	sqlite3_bind_text(st, 2, s->status, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, s->stop_time);
	sqlite3_bind_int64(st, 4, (int64_t)s->logical_bytes);
	sqlite3_bind_int64(st, 5, (int64_t)s->stored_bytes);
	sqlite3_bind_int64(st, 6, (int64_t)s->n_files);
	bind_text_or_null(st, 7, s->stop_lsn);
	if (s->has_tree_digest)
		sqlite3_bind_blob(st, 8, s->tree_digest.b, sizeof(s->tree_digest.b), SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 8);
	bind_text_or_null(st, 9, s->method);
	bind_text_or_null(st, 10, s->method_note);
	if (s->has_read_bytes)
		sqlite3_bind_int64(st, 11, (int64_t)s->read_bytes);
	else
		sqlite3_bind_null(st, 11);
	r = step_done(c, st);
	if (r == 0 && sqlite3_changes(c->db) != 1)
		r = -ENOENT; /* reaped by gc as dead: never resurrect */
	return r;
}

#define SNAPSHOT_COLUMNS                                                                   \
	"id, name, instance, type, parent, status, label, note, source, session, start_time," \
	" stop_time, start_lsn, stop_lsn, timeline, system_id, pg_version, logical_bytes,"   \
	" stored_bytes, n_files, verified_time, verified_ok, verified_details, pinned_until,"  \
	" tree_digest, method, method_note, read_bytes"

static int snapshot_from_row(sqlite3_stmt *s, SnapshotInfo *ret)
{
	SnapshotInfo v = {0};
	v.rowid = sqlite3_column_int64(s, 0);
	snprintf(v.name, sizeof(v.name), "%s", (const char *)sqlite3_column_text(s, 1));
	v.instance = column_strdup(s, 2);
	v.type = column_strdup(s, 3);
	v.parent = column_strdup(s, 4);
	v.status = column_strdup(s, 5);
	v.label = column_strdup(s, 6);
	v.note = column_strdup(s, 7);
	v.source = column_strdup(s, 8);
	v.session = column_strdup(s, 9);
	v.start_time = sqlite3_column_int64(s, 10);
	v.stop_time = sqlite3_column_int64(s, 11);
	v.start_lsn = column_strdup(s, 12);
	v.stop_lsn = column_strdup(s, 13);
	v.timeline = sqlite3_column_int64(s, 14);
	v.system_id = column_strdup(s, 15);
	v.pg_version = sqlite3_column_int64(s, 16);
	v.logical_bytes = (uint64_t)sqlite3_column_int64(s, 17);
	v.stored_bytes = (uint64_t)sqlite3_column_int64(s, 18);
	v.n_files = (uint64_t)sqlite3_column_int64(s, 19);
	v.verified = sqlite3_column_type(s, 20) != SQLITE_NULL;
	v.verified_time = sqlite3_column_int64(s, 20);
	v.verified_ok = sqlite3_column_int(s, 21) != 0;
	v.verified_details = column_strdup(s, 22);
	v.pinned_until = sqlite3_column_int64(s, 23);
	/* a digest of another length is kept as "present" and fails its check */
	if (sqlite3_column_type(s, 24) != SQLITE_NULL) {
		size_t n = (size_t)sqlite3_column_bytes(s, 24);
		v.has_tree_digest = true;
		memset(v.tree_digest.b, 0xff, sizeof(v.tree_digest.b));
		if (n == sizeof(v.tree_digest.b))
			memcpy(v.tree_digest.b, sqlite3_column_blob(s, 24), n);
	}
	v.method = column_strdup(s, 25);
	v.method_note = column_strdup(s, 26);
	v.has_read_bytes = sqlite3_column_type(s, 27) != SQLITE_NULL;
	v.read_bytes = (uint64_t)sqlite3_column_int64(s, 27);
	if (!v.instance || !v.type || !v.status) {
		snapshot_info_clear(&v);
		return -ENOMEM;
	}
	*ret = v;
	return 0;
}

int catalog_snapshot_get(Catalog *c, const char *name, const char *instance, SnapshotInfo *ret)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int rc, r;
	if (strcmp(name, "latest") == 0)
		r = prepare(c, "SELECT " SNAPSHOT_COLUMNS " FROM snapshots WHERE " VISIBLE
			       " AND (?1 IS NULL OR instance = ?1) ORDER BY start_time DESC, id DESC"
			       " LIMIT 1", &s);
	else
		r = prepare(c, "SELECT " SNAPSHOT_COLUMNS " FROM snapshots WHERE " VISIBLE
			       " AND name = ?2", &s);
	if (r < 0)
		return r;
	bind_text_or_null(s, 1, instance);
	if (strcmp(name, "latest") != 0)
		sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		return snapshot_from_row(s, ret);
	return rc == SQLITE_DONE ? -ENOENT : catalog_fail(c, rc, "snapshot get");
}

int catalog_snapshot_foreach(Catalog *c, const char *instance, CatalogSnapshotFn cb, void *ud)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int rc, r = prepare(c, "SELECT " SNAPSHOT_COLUMNS " FROM snapshots WHERE " VISIBLE
			       " AND (?1 IS NULL OR instance = ?1) ORDER BY start_time, id", &s);
	if (r < 0)
		return r;
	bind_text_or_null(s, 1, instance);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		SnapshotInfo v;
		r = snapshot_from_row(s, &v);
		if (r < 0)
			return r;
		r = cb(&v, ud);
		snapshot_info_clear(&v);
		if (r < 0)
			return r;
	}
	return rc == SQLITE_DONE ? 0 : catalog_fail(c, rc, "snapshot list");
}


/* The rows of a snapshot, inside the caller's transaction. */
static int snapshot_purge(Catalog *c, int64_t rowid)
{
	int r = exec_bound_int(c, "DELETE FROM files WHERE snap = ?1", rowid);
	if (r == 0)
		r = exec_bound_int(c, "DELETE FROM bad_blocks WHERE snap = ?1", rowid);
	if (r == 0)
		r = exec_bound_int(c, "DELETE FROM links WHERE snap = ?1", rowid);
	if (r == 0)
		r = exec_bound_int(c, "DELETE FROM snapshots WHERE id = ?1", rowid);
	return r;
}

/* Delete or, when held, hide a snapshot inside the caller's transaction. */
static int snapshot_delete_tx(Catalog *c, int64_t rowid, uint64_t *ret_held)
{
	int r = query_u64_bound(c, "SELECT count(*) FROM holds WHERE snap = ?1", rowid, ret_held);
	if (r == 0 && *ret_held)
		r = exec_bound_int(c, "UPDATE snapshots SET status = 'deleted' WHERE id = ?1", rowid);
	else if (r == 0)
		r = snapshot_purge(c, rowid);
	return r;
}

/* Commit what snapshot_delete_tx did (or roll back after r < 0): 1 when a hold deferred it. */
static int snapshot_delete_end(Catalog *c, int r, uint64_t held)
{
	if (r == 0)
		r = catalog_commit(c);
	if (r < 0) {
		catalog_rollback(c);
		return r;
	}
	return held ? 1 : 0;
}

int catalog_snapshot_delete(Catalog *c, int64_t rowid)
{
	uint64_t held = 0;
	int r = catalog_begin(c);
	if (r == 0)
		r = snapshot_delete_tx(c, rowid, &held);
	return snapshot_delete_end(c, r, held);
}

int catalog_snapshot_expire(Catalog *c, int64_t rowid, int64_t now_ns)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	uint64_t held = 0;
	int rc, r = catalog_begin(c);
	/* the decision was made on an earlier read: a pin set since then wins */
	if (r == 0)
		r = prepare(c, "SELECT coalesce(pinned_until, 0) FROM snapshots WHERE id = ?1 AND "
			       VISIBLE, &s);
	if (r == 0) {
		sqlite3_bind_int64(s, 1, rowid);
		rc = sqlite3_step(s);
		if (rc == SQLITE_DONE)
			r = -ENOENT;
		else if (rc != SQLITE_ROW)
			r = catalog_fail(c, rc, "snapshot expire");
		else if (sqlite3_column_int64(s, 0) > now_ns)
			r = -EAGAIN;
	}
	if (r == 0)
		r = snapshot_delete_tx(c, rowid, &held);
	return snapshot_delete_end(c, r, held);
}

int catalog_snapshot_set_pin(Catalog *c, int64_t rowid, int64_t until_ns)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int r = prepare(c, "UPDATE snapshots SET pinned_until = ?2 WHERE id = ?1 AND " VISIBLE, &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, rowid);
	if (until_ns)
		sqlite3_bind_int64(s, 2, until_ns);
	else
		sqlite3_bind_null(s, 2);
	r = step_done(c, s);
	if (r == 0 && sqlite3_changes(c->db) == 0)
		r = -ENOENT;
	return r;
}

int catalog_snapshot_set_note(Catalog *c, int64_t rowid, const char *note)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int r = prepare(c, "UPDATE snapshots SET note = ?2 WHERE id = ?1 AND " VISIBLE, &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, rowid);
	bind_text_or_null(s, 2, note);
	r = step_done(c, s);
	if (r == 0 && sqlite3_changes(c->db) == 0)
		r = -ENOENT;
	return r;
}

int catalog_snapshot_mark_failed(Catalog *c, const char *name)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int r = prepare(c, "UPDATE snapshots SET status = 'failed' WHERE name = ?1 AND " VISIBLE, &s);
	if (r < 0)
		return r;
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	r = step_done(c, s);
	if (r == 0 && sqlite3_changes(c->db) == 0)
		r = -ENOENT;
	return r;
}

int catalog_snapshot_foreach_any(Catalog *c, CatalogSnapshotFn cb, void *ud)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int rc, r = prepare(c, "SELECT " SNAPSHOT_COLUMNS " FROM snapshots ORDER BY start_time, id",
			    &s);
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		SnapshotInfo v;
		r = snapshot_from_row(s, &v);
		if (r < 0)
			return r;
		r = cb(&v, ud);
		snapshot_info_clear(&v);
		if (r < 0)
			return r;
	}
	return rc == SQLITE_DONE ? 0 : catalog_fail(c, rc, "snapshot list");
}

int catalog_snapshot_wal_seg_size(Catalog *c, int64_t rowid, uint64_t *ret)
{
	uint64_t size = 0;
	/* regular files named like WAL segments in the data directory's pg_wal */
	int r = query_u64_bound(c, "SELECT coalesce(max(f.size), 0) FROM files d JOIN files f"
				   " ON f.snap = d.snap AND f.parent = d.ino"
				   " WHERE d.snap = ?1 AND d.parent = 1 AND d.ino <> 1"
				   " AND d.name = 'pg_wal' AND length(f.name) = 24"
				   " AND f.name NOT GLOB '*[^0-9A-F]*' AND (f.mode & 61440) = 32768",
				rowid, &size);
	if (r < 0)
		return r;
	if (size < (1u << 20) || size > (1u << 30) || (size & (size - 1)))
		return -ENOENT;
	*ret = size;
	return 0;
}

int catalog_retention_get(Catalog *c, uint64_t *ret_keep_last, int64_t *ret_keep_within)
{
	int64_t last = 0, within = 0;
	int r1 = meta_get_int(c, "retention_keep_last", &last);
	int r2 = meta_get_int(c, "retention_keep_within", &within);
	if (r1 < 0 && r1 != -ENOENT)
		return r1;
	if (r2 < 0 && r2 != -ENOENT)
		return r2;
	if (last < 0 || within < 0)
		return -EBADMSG;
	if (last == 0 && within == 0)
		return -ENOENT;
	*ret_keep_last = (uint64_t)last;
	*ret_keep_within = within;
	return 0;
}

int catalog_retention_set(Catalog *c, uint64_t keep_last, int64_t keep_within)
{
	int r;
	if ((!keep_last && !keep_within) || keep_last > INT64_MAX || keep_within < 0)
		return -EINVAL;
	r = catalog_begin(c);
	if (r == 0)
		r = exec_sql(c, "DELETE FROM meta WHERE key IN ('retention_keep_last',"
				" 'retention_keep_within')");
	if (r == 0 && keep_last)
		r = meta_set_int(c, "retention_keep_last", (int64_t)keep_last);
	if (r == 0 && keep_within)
		r = meta_set_int(c, "retention_keep_within", keep_within);
	if (r == 0)
		r = catalog_commit(c);
	if (r < 0)
		catalog_rollback(c);
	return r;
}

int catalog_snapshot_set_verified(Catalog *c, int64_t rowid, int64_t time_ns, bool ok,
				  const char *details)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int r = prepare(c, "UPDATE snapshots SET verified_time = ?2, verified_ok = ?3,"
			   " verified_details = ?4 WHERE id = ?1", &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, rowid);
	sqlite3_bind_int64(s, 2, time_ns);
	sqlite3_bind_int(s, 3, ok);
	sqlite3_bind_text(s, 4, details, -1, SQLITE_STATIC);
	r = step_done(c, s);
	if (r == 0 && sqlite3_changes(c->db) == 0)
		r = -ENOENT;
	return r;
}

int catalog_snapshot_hold(Catalog *c, const char *session, int64_t rowid)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	uint64_t n = 0;
	/* one statement: the snapshot cannot be deleted between the check and the hold */
	int r = prepare(c, "INSERT OR IGNORE INTO holds SELECT ?1, id FROM snapshots"
			   " WHERE id = ?2 AND " VISIBLE, &s);
	if (r < 0)
		return r;
	sqlite3_bind_text(s, 1, session, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, rowid);
	r = step_done(c, s);
	if (r < 0)
		return r;
	if (sqlite3_changes(c->db) > 0)
		return 0;
	/* already held by this session (perhaps deleted since), or gone */
	_cleanup_stmt_ sqlite3_stmt *q = NULL;
	r = prepare(c, "SELECT count(*) FROM holds WHERE session = ?1 AND snap = ?2", &q);
	if (r < 0)
		return r;
	sqlite3_bind_text(q, 1, session, -1, SQLITE_STATIC);
	sqlite3_bind_int64(q, 2, rowid);
	if (sqlite3_step(q) == SQLITE_ROW)
		n = (uint64_t)sqlite3_column_int64(q, 0);
	return n ? 0 : -ENOENT;
}

int catalog_snapshot_release(Catalog *c, const char *session, int64_t rowid)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int r = prepare(c, "DELETE FROM holds WHERE session = ?1 AND snap = ?2", &s);
	if (r < 0)
		return r;
	sqlite3_bind_text(s, 1, session, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, rowid);
	return step_done(c, s);
}

/* ---- the shape of a file tree: what catalog_file_add and catalog_file_foreach allow ---- */

bool catalog_name_valid(const char *name, size_t len)
{
	if (len == 0 || len > NAME_MAX || strnlen(name, len) != len || memchr(name, '/', len))
		return false;
	return !(len == 1 && name[0] == '.') && !(len == 2 && name[0] == '.' && name[1] == '.');
}

/* "a/b/c" with every part a valid name (a leading '/' is the caller's). */
static bool parts_valid(const char *path, size_t len)
{
	size_t start = 0;
	for (size_t i = 0; i <= len; i++) {
		if (i < len && path[i] != '/')
			continue;
		if (!catalog_name_valid(path + start, i - start))
			return false;
		start = i + 1;
	}
	return true;
}

bool catalog_abs_path_valid(const char *path, size_t len)
{
	return len > 1 && len < PATH_MAX && path[0] == '/' && strnlen(path, len) == len &&
	       parts_valid(path + 1, len - 1);
}

bool catalog_rel_path_valid(const char *path, size_t len)
{
	return len > 0 && len < PATH_MAX && strnlen(path, len) == len && parts_valid(path, len);
}

/* What one row shows of the tree's shape (the rest needs the rows before it). */
static bool file_row_valid(const FileRow *f, size_t name_len)
{
	if (!f->name || (S_ISLNK(f->mode) && !f->target))
		return false;
	if (f->ino == 1) /* the root */
		return f->parent == 1 && name_len == 0 && S_ISDIR(f->mode);
	if (f->parent == f->ino) /* an extra root, named by its absolute path */
		return S_ISDIR(f->mode) && catalog_abs_path_valid(f->name, name_len);
	return f->ino > 1 && f->parent < f->ino && catalog_name_valid(f->name, name_len);
}

int catalog_file_add(Catalog *c, int64_t snap, const FileRow *f)
{
	int r;
	sqlite3_stmt *s;

	if (!file_row_valid(f, f->name ? strlen(f->name) : 0))
		return -EBADMSG;
	s = stmt_get(c, ST_FILE_ADD, &r);
	if (!s)
		return r;
	sqlite3_bind_int64(s, 1, snap);
	sqlite3_bind_int64(s, 2, (int64_t)f->ino);
	sqlite3_bind_int64(s, 3, (int64_t)f->parent);
	sqlite3_bind_text(s, 4, f->name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 5, f->mode);
	sqlite3_bind_int64(s, 6, f->uid);
	sqlite3_bind_int64(s, 7, f->gid);
	sqlite3_bind_int64(s, 8, f->mtime_ns);
	sqlite3_bind_int64(s, 9, (int64_t)f->size);
	if (f->content)
		sqlite3_bind_int64(s, 10, f->content);
	else
		sqlite3_bind_null(s, 10);
	bind_text_or_null(s, 11, f->target);
	return step_done(c, s);
}

static void file_from_row(sqlite3_stmt *s, FileRow *f)
{
	f->ino = (uint64_t)sqlite3_column_int64(s, 0);
	f->parent = (uint64_t)sqlite3_column_int64(s, 1);
	f->name = (const char *)sqlite3_column_text(s, 2);
	f->mode = (uint32_t)sqlite3_column_int64(s, 3);
	f->uid = (uint32_t)sqlite3_column_int64(s, 4);
	f->gid = (uint32_t)sqlite3_column_int64(s, 5);
	f->mtime_ns = sqlite3_column_int64(s, 6);
	f->size = (uint64_t)sqlite3_column_int64(s, 7);
	f->content = sqlite3_column_int64(s, 8);
	f->target = (const char *)sqlite3_column_text(s, 9);
}

/* The directories seen so far, in ino order: a child's parent must be one of them. */
typedef struct DirSet {
	uint64_t *v;
	size_t n, cap;
} DirSet;

static int dir_set_add(DirSet *d, uint64_t ino)
{
	if (d->n == d->cap) {
		size_t cap = d->cap ? 2 * d->cap : 256;
		uint64_t *v = realloc(d->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		d->v = v;
		d->cap = cap;
	}
	d->v[d->n++] = ino;
	return 0;
}

static bool dir_set_has(const DirSet *d, uint64_t ino)
{
	size_t lo = 0, hi = d->n;
	while (lo < hi) { /* ascending: rows come in ino order */
		size_t mid = lo + (hi - lo) / 2;
		if (d->v[mid] == ino)
			return true;
		if (d->v[mid] < ino)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

/* A row in its place: valid alone, the root first, under a directory listed before it. */
static int file_row_check(DirSet *dirs, const FileRow *f, size_t name_len)
{
	bool root = f->ino == 1, extra = !root && f->parent == f->ino;
	if (!file_row_valid(f, name_len) || (dirs->n == 0) != root ||
	    (!root && !extra && !dir_set_has(dirs, f->parent)))
		return -EBADMSG;
	return S_ISDIR(f->mode) ? dir_set_add(dirs, f->ino) : 0;
}

int catalog_file_foreach(Catalog *c, int64_t snap, CatalogFileFn cb, void *userdata)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	DirSet dirs = {0};
	int rc, r = prepare(c, statement_sql[ST_FILE_LIST], &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, snap);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		FileRow f;
		file_from_row(s, &f);
		r = file_row_check(&dirs, &f, (size_t)sqlite3_column_bytes(s, 2));
		if (r == 0)
			r = cb(&f, userdata);
		if (r < 0)
			break;
	}
	free(dirs.v);
	if (r < 0)
		return r;
	return rc == SQLITE_DONE ? 0 : catalog_fail(c, rc, "file list");
}

int catalog_data_version(Catalog *c, uint64_t *ret)
{
	return query_u64(c, "PRAGMA data_version", ret);
}

int catalog_stats(Catalog *c, CatalogStats *ret)
{
	CatalogStats v = {0};
	int r = 0;
	/* one read transaction so the numbers agree with each other */
	r = exec_sql(c, "BEGIN");
	if (r < 0)
		return r;
	if (!r) r = query_u64(c, "SELECT count(*) FROM snapshots WHERE " VISIBLE, &v.n_snapshots);
	if (!r) r = query_u64(c, "SELECT count(*) FROM packs WHERE state = 'ok'", &v.n_packs);
	if (!r) r = query_u64(c, "SELECT coalesce(sum(size), 0) FROM packs WHERE state = 'ok'", &v.pack_bytes);
	if (!r) r = query_u64(c, "SELECT count(*) FROM chunks", &v.n_chunks);
	if (!r) r = query_u64(c, "SELECT coalesce(sum(plen), 0) FROM chunks", &v.chunk_plain_bytes);
	if (!r) r = query_u64(c, "SELECT coalesce(sum(elen), 0) FROM chunks", &v.chunk_stored_bytes);
	if (!r) r = query_u64(c, "SELECT count(*) FROM contents", &v.n_contents);
	if (!r) r = query_u64(c, "SELECT count(*) FROM files", &v.n_files);
	if (!r) r = query_u64(c, "SELECT coalesce(sum(logical_bytes), 0) FROM snapshots"
				 " WHERE " VISIBLE, &v.logical_bytes);
	exec_sql(c, "COMMIT");
	if (r < 0)
		return r;
	*ret = v;
	return 0;
}

void catalog_gc_result_clear(CatalogGcResult *r)
{
	for (size_t i = 0; i < r->n_dead_packs; i++)
		free(r->dead_packs[i]);
	free(r->dead_packs);
	*r = (CatalogGcResult){0};
}

/* Fill temp table live(id) with every chunk id of every remaining content. */
static int gc_build_live_set(Catalog *c)
{
	_cleanup_stmt_ sqlite3_stmt *sel = NULL, *ins = NULL;
	int rc, r = exec_sql(c, "CREATE TEMP TABLE IF NOT EXISTS live(id BLOB PRIMARY KEY)"
				" WITHOUT ROWID; DELETE FROM live;");
	if (r == 0)
		r = prepare(c, "SELECT n, list FROM contents", &sel);
	if (r == 0)
		r = prepare(c, "INSERT OR IGNORE INTO live VALUES(?1)", &ins);
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(sel)) == SQLITE_ROW) {
		size_t n = (size_t)sqlite3_column_int64(sel, 0);
		const ChunkId *ids = sqlite3_column_blob(sel, 1);
		if ((size_t)sqlite3_column_bytes(sel, 1) != n * sizeof(ChunkId))
			return -EBADMSG;
		for (size_t i = 0; i < n; i++) {
			if (chunk_id_is_hole(&ids[i]))
				continue;
			sqlite3_bind_blob(ins, 1, ids[i].b, sizeof(ids[i].b), SQLITE_STATIC);
			r = step_done(c, ins);
			if (r < 0)
				return r;
		}
	}
	return rc == SQLITE_DONE ? 0 : catalog_fail(c, rc, "gc live set");
}

static int gc_collect_dead_packs(Catalog *c, CatalogGcResult *res)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int rc, r = prepare(c, "SELECT id, name FROM packs WHERE"
			       " (state = 'ok' AND NOT EXISTS (SELECT 1 FROM chunks WHERE pack = packs.id))"
			       " OR (state = 'pending' AND NOT EXISTS"
			       "     (SELECT 1 FROM sessions WHERE id = packs.session))", &s);
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		char **v = realloc(res->dead_packs, (res->n_dead_packs + 2) * sizeof(char *));
		if (!v)
			return -ENOMEM;
		res->dead_packs = v;
		v[res->n_dead_packs] = strdup((const char *)sqlite3_column_text(s, 1));
		if (!v[res->n_dead_packs])
			return -ENOMEM;
		v[++res->n_dead_packs] = NULL;
		r = exec_bound_int(c, "DELETE FROM packs WHERE id = ?1", sqlite3_column_int64(s, 0));
		if (r < 0)
			return r;
	}
	return rc == SQLITE_DONE ? 0 : catalog_fail(c, rc, "gc packs");
}

/* Deleted snapshots that no session holds any more lose their rows. */
static int gc_purge_deleted(Catalog *c, uint64_t *ret_n)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int rc, r = prepare(c, "SELECT id FROM snapshots WHERE status = 'deleted' AND NOT EXISTS"
			       " (SELECT 1 FROM holds WHERE holds.snap = snapshots.id)", &s);
	if (r < 0)
		return r;
	*ret_n = 0;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		r = snapshot_purge(c, sqlite3_column_int64(s, 0));
		if (r < 0)
			return r;
		(*ret_n)++;
	}
	return rc == SQLITE_DONE ? 0 : catalog_fail(c, rc, "gc deleted snapshots");
}

static int gc_in_transaction(Catalog *c, CatalogGcResult *res)
{
	int64_t epoch;
	uint64_t min_epoch, n_sessions;
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int r;

	/* mounts never add references: they hold whole snapshots instead (holds) */
	r = query_u64(c, "SELECT count(*) FROM sessions WHERE kind <> 'mount'", &n_sessions);
	if (r == 0)
		r = gc_purge_deleted(c, &res->snapshots_purged);
	if (r < 0)
		return r;
	/*
	 * A running incremental backup may reuse a content list it found in its
	 * parent and insert the file row later: unreferenced contents (and so
	 * their chunks) are kept while any session lives.
	 */
	if (n_sessions == 0) {
		r = exec_sql(c, "DELETE FROM contents WHERE NOT EXISTS"
				" (SELECT 1 FROM files WHERE files.content = contents.id)");
		if (r < 0)
			return r;
		res->contents_deleted = (uint64_t)sqlite3_changes(c->db);
	}
	r = gc_build_live_set(c);
	if (r == 0)
		r = meta_get_int(c, "epoch", &epoch);
	if (r == 0)
		r = meta_set_int(c, "epoch", ++epoch);
	if (r == 0)
		r = exec_sql(c, "UPDATE chunks SET condemned = NULL WHERE condemned IS NOT NULL"
				" AND id IN (SELECT id FROM live)");
	if (r == 0)
		r = exec_bound_int(c, "UPDATE chunks SET condemned = ?1 WHERE condemned IS NULL"
				      " AND id NOT IN (SELECT id FROM live)", epoch);
	if (r < 0)
		return r;
	res->chunks_condemned = (uint64_t)sqlite3_changes(c->db);
	r = query_u64(c, "SELECT coalesce(min(epoch), 0) FROM sessions WHERE kind <> 'mount'",
		      &min_epoch);
	if (r < 0)
		return r;
	/*
	 * A session registered before this transaction carries an epoch older than
	 * the one just assigned; one registered after an earlier gc committed saw
	 * that gc's condemnations and never used them. So a chunk condemned at
	 * epoch e may go once every live session has epoch >= e.
	 */
	int64_t limit = n_sessions ? (int64_t)min_epoch : INT64_MAX;
	r = prepare(c, "SELECT count(*), coalesce(sum(elen), 0) FROM chunks WHERE"
		       " condemned IS NOT NULL AND condemned <= ?1", &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, limit);
	if (sqlite3_step(s) == SQLITE_ROW) {
		res->chunks_deleted = (uint64_t)sqlite3_column_int64(s, 0);
		res->chunk_bytes_deleted = (uint64_t)sqlite3_column_int64(s, 1);
	}
	r = exec_bound_int(c, "DELETE FROM chunks WHERE condemned IS NOT NULL AND condemned <= ?1",
			   limit);
	if (r == 0)
		r = query_u64(c, "SELECT count(*) FROM chunks WHERE condemned IS NOT NULL",
			      &res->chunks_waiting);
	if (r == 0)
		r = gc_collect_dead_packs(c, res);
	return r;
}

int catalog_gc(Catalog *c, CatalogGcResult *ret)
{
	CatalogGcResult res = {0};
	int r = catalog_begin(c);
	if (r < 0)
		return r;
	r = gc_in_transaction(c, &res);
	if (r == 0)
		r = catalog_commit(c);
	if (r < 0) {
		catalog_rollback(c);
		catalog_gc_result_clear(&res);
		return r;
	}
	*ret = res;
	return 0;
}

/* Paths of a snapshot's directories, indexed by ino, built while iterating in ino order. */
typedef struct DirPaths {
	char **v;
	size_t n;
} DirPaths;

static void dir_paths_clear(DirPaths *d)
{
	for (size_t i = 0; i < d->n; i++)
		free(d->v[i]);
	free(d->v);
	*d = (DirPaths){0};
}

static int dir_paths_join(DirPaths *d, const FileRow *f, char **ret)
{
	const char *parent = f->parent < d->n && d->v[f->parent] ? d->v[f->parent] : "";
	if (f->ino == 1)
		*ret = strdup("");
	else if (asprintf(ret, "%s%s%s", parent, *parent ? "/" : "", f->name) < 0)
		*ret = NULL;
	return *ret ? 0 : -ENOMEM;
}

static int dir_paths_add(DirPaths *d, uint64_t ino, char *path)
{
	if (ino >= d->n) {
		size_t n = MAX(ino + 1, d->n * 2);
		char **v = realloc(d->v, n * sizeof(char *));
		if (!v)
			return -ENOMEM;
		memset(v + d->n, 0, (n - d->n) * sizeof(char *));
		d->v = v;
		d->n = n;
	}
	free(d->v[ino]);
	d->v[ino] = path;
	return 0;
}

static int id_cmp(const void *a, const void *b) { return chunk_id_cmp(a, b); }

int catalog_find_damage(Catalog *c, const ChunkId *ids, size_t n, CatalogDamageFn cb, void *ud)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	_cleanup_free_ ChunkId *sorted = malloc(n * sizeof(*sorted) + 1);
	DirPaths dirs = {0};
	int64_t cur_snap = -1;
	int rc, r;

	if (!sorted)
		return -ENOMEM;
	memcpy(sorted, ids, n * sizeof(*sorted));
	qsort(sorted, n, sizeof(*sorted), id_cmp);
	r = prepare(c, "SELECT f.ino, f.parent, f.name, f.mode, f.uid, f.gid, f.mtime, f.size,"
		       " f.content, f.target, s.id, s.name, ct.n, ct.list FROM snapshots s"
		       " JOIN files f ON f.snap = s.id LEFT JOIN contents ct ON ct.id = f.content"
		       " WHERE s.status NOT IN ('running', 'deleted') ORDER BY s.id, f.ino", &s);
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		FileRow f;
		char *path;
		file_from_row(s, &f);
		if (sqlite3_column_int64(s, 10) != cur_snap) {
			dir_paths_clear(&dirs);
			cur_snap = sqlite3_column_int64(s, 10);
		}
		r = dir_paths_join(&dirs, &f, &path);
		if (r < 0)
			break;
		if (S_ISDIR(f.mode)) {
			r = dir_paths_add(&dirs, f.ino, path);
			if (r < 0) {
				free(path);
				break;
			}
			continue;
		}
		size_t nc = (size_t)sqlite3_column_int64(s, 12);
		const ChunkId *list = sqlite3_column_blob(s, 13);
		bool hit = false;
		for (size_t i = 0; list && i < nc && !hit; i++)
			hit = bsearch(&list[i], sorted, n, sizeof(*sorted), id_cmp) != NULL;
		if (hit)
			r = cb((const char *)sqlite3_column_text(s, 11), path, ud);
		free(path);
		if (r < 0)
			break;
	}
	dir_paths_clear(&dirs);
	if (r < 0)
		return r;
	return rc == SQLITE_DONE ? 0 : catalog_fail(c, rc, "damage scan");
}

int catalog_check_references(Catalog *c, CatalogMissingFn cb, void *userdata)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int rc, r;
	/* a chunk row pointing at a pack that is not "ok" is as good as missing */
	r = prepare(c, "SELECT DISTINCT s.name, ct.n, ct.list FROM snapshots s"
		       " JOIN files f ON f.snap = s.id JOIN contents ct ON ct.id = f.content"
		       " WHERE s.status NOT IN ('running', 'deleted')", &s);
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		size_t n = (size_t)sqlite3_column_int64(s, 1);
		const ChunkId *list = sqlite3_column_blob(s, 2);
		const char *snap = (const char *)sqlite3_column_text(s, 0);
		if ((size_t)sqlite3_column_bytes(s, 2) != n * sizeof(ChunkId))
			return -EBADMSG;
		for (size_t i = 0; i < n; i++) {
			ChunkLoc loc;
			if (chunk_id_is_hole(&list[i]))
				continue;
			r = catalog_chunk_locate(c, &list[i], &loc);
			if (r == -ENOENT)
				r = cb(snap, &list[i], userdata);
			if (r < 0)
				return r;
		}
	}
	return rc == SQLITE_DONE ? 0 : catalog_fail(c, rc, "reference check");
}

int catalog_integrity_check(Catalog *c, char **ret_message)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int r = prepare(c, "PRAGMA quick_check", &s);
	const char *msg;
	if (r < 0)
		return r;
	if (sqlite3_step(s) != SQLITE_ROW)
		return catalog_fail(c, SQLITE_ERROR, "quick_check");
	msg = (const char *)sqlite3_column_text(s, 0);
	if (msg && strcmp(msg, "ok") == 0)
		return 0;
	*ret_message = strdup(msg ? msg : "unknown");
	return -EBADMSG;
}

int catalog_bad_block_add(Catalog *c, int64_t snap, const char *path, uint64_t block)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int r = prepare(c, "INSERT OR IGNORE INTO bad_blocks(snap, path, block) VALUES(?1, ?2, ?3)",
			&s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, snap);
	sqlite3_bind_text(s, 2, path, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, (int64_t)block);
	return step_done(c, s);
}

int catalog_bad_block_foreach(Catalog *c, int64_t snap, CatalogBadBlockFn cb, void *userdata)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int rc, r = prepare(c, "SELECT path, block FROM bad_blocks WHERE snap = ?1 ORDER BY path, block",
			    &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, snap);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		r = cb((const char *)sqlite3_column_text(s, 0), (uint64_t)sqlite3_column_int64(s, 1),
		       userdata);
		if (r < 0)
			return r;
	}
	return rc == SQLITE_DONE ? 0 : catalog_fail(c, rc, "bad block list");
}

int catalog_instance_system_id(Catalog *c, const char *instance, char **ret)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int rc, r = prepare(c, "SELECT system_id FROM snapshots WHERE instance = ?1 AND"
			       " system_id IS NOT NULL AND " VISIBLE
			       " ORDER BY start_time DESC, id DESC LIMIT 1", &s);
	if (r < 0)
		return r;
	sqlite3_bind_text(s, 1, instance, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_DONE)
		return -ENOENT;
	if (rc != SQLITE_ROW)
		return catalog_fail(c, rc, "instance system id");
	*ret = column_strdup(s, 0);
	return *ret ? 0 : -ENOMEM;
}

static bool link_valid(const char *path, size_t path_len, const char *target)
{
	return path && target && *target && catalog_rel_path_valid(path, path_len);
}

int catalog_link_add(Catalog *c, int64_t snap, const char *path, const char *target)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int r;
	if (!link_valid(path, path ? strlen(path) : 0, target))
		return -EBADMSG;
	r = prepare(c, "INSERT OR REPLACE INTO links(snap, path, target) VALUES(?1, ?2, ?3)", &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, snap);
	sqlite3_bind_text(s, 2, path, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, target, -1, SQLITE_STATIC);
	return step_done(c, s);
}

int catalog_link_foreach(Catalog *c, int64_t snap, CatalogLinkFn cb, void *userdata)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int rc, r = prepare(c, "SELECT path, target FROM links WHERE snap = ?1 ORDER BY path", &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, snap);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		const char *path = (const char *)sqlite3_column_text(s, 0);
		const char *target = (const char *)sqlite3_column_text(s, 1);
		if (!link_valid(path, (size_t)sqlite3_column_bytes(s, 0), target))
			return -EBADMSG;
		r = cb(path, target, userdata);
		if (r < 0)
			return r;
	}
	return rc == SQLITE_DONE ? 0 : catalog_fail(c, rc, "link list");
}

sqlite3 *catalog_sqlite(Catalog *c) { return c->db; }

/* secure_delete zeroes what the updates free; VACUUM drops what earlier updates freed */
int catalog_snapshot_set_sources(Catalog *c, const CatalogSourceEdit *edits, size_t n)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	uint64_t secure = 0;
	int r;

	if (n == 0)
		return 0;
	if (!sqlite3_get_autocommit(c->db))
		return -EINVAL;
	r = query_u64(c, "PRAGMA secure_delete", &secure);
	if (r == 0)
		r = exec_sql(c, "PRAGMA secure_delete = ON");
	if (r == 0)
		r = prepare(c, "UPDATE snapshots SET source = ?2 WHERE id = ?1", &s);
	if (r == 0)
		r = catalog_begin(c);
	for (size_t i = 0; r == 0 && i < n; i++) {
		sqlite3_bind_int64(s, 1, edits[i].rowid);
		bind_text_or_null(s, 2, edits[i].source);
		r = step_done(c, s);
		if (r == 0 && sqlite3_changes(c->db) == 0)
			r = -ENOENT;
	}
	if (r == 0)
		r = catalog_commit(c);
	if (r < 0)
		catalog_rollback(c);
	sqlite3_finalize(s);
	s = NULL;
	if (r == 0)
		r = exec_sql(c, "VACUUM");
	if (r == 0 && sqlite3_exec(c->db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL) !=
			      SQLITE_OK)
		log_debug("catalog: could not truncate the WAL after rewriting sources: %s",
			  sqlite3_errmsg(c->db));
	sqlite3_exec(c->db, secure == 1 ? "PRAGMA secure_delete = ON" : secure == 2
			    ? "PRAGMA secure_delete = FAST" : "PRAGMA secure_delete = OFF", NULL, NULL, NULL);
	return r;
}
