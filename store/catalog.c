/*
 * All SQL of pgbakfs. Statements are prepared once per connection and
 * cached; SQLite's error codes become -errno by store/sqldb.c's one map.
 */
#include "store/catalog.h"
#include "store/sqldb.h"
#include "common/log.h"
#include "common/util.h"

#include <limits.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <time.h>
#include <stdio.h>
#include <string.h>

/* 2: chunk rows keyed by their id's first 8 bytes (see "chunk rows" below) */
#define CATALOG_SCHEMA_VERSION 2
#define CATALOG_BUSY_TIMEOUT_MS 120000
#define CATALOG_N_TABLES 13 /* tables in schema_sql */
#define CATALOG_VACUUM_FREE_BYTES (64ull << 20)

/* directories of committed snapshots, shared between them (store/catalog_tree.c); carrier:
 * the snapshot whose manifest holds the directory (format 3), as for contents and idblocks */
#define DIRS_SQL                                                                         \
	"CREATE TABLE IF NOT EXISTS dirs(id INTEGER PRIMARY KEY, hash BLOB NOT NULL UNIQUE," \
	"  n INTEGER NOT NULL, entries BLOB NOT NULL, carrier INTEGER);"

/* backup attempts, kept whether or not they made a snapshot (catalog_attempt_add) */
#define ATTEMPTS_SQL                                                                        \
	"CREATE TABLE IF NOT EXISTS attempts(id INTEGER PRIMARY KEY, instance TEXT NOT NULL," \
	"  started INTEGER NOT NULL, finished INTEGER NOT NULL, snapshot TEXT, error TEXT);"   \
	"CREATE INDEX IF NOT EXISTS attempts_instance ON attempts(instance, id);"

/* id blocks (see catalog_content_put); carrier: the snapshot whose manifest holds the block */
#define IDBLOCKS_SQL                                                                         \
	"CREATE TABLE IF NOT EXISTS idblocks(id INTEGER PRIMARY KEY, hash BLOB NOT NULL UNIQUE," \
	"  n INTEGER NOT NULL, ids BLOB NOT NULL, carrier INTEGER);"                             \
	"CREATE INDEX IF NOT EXISTS idblocks_carrier ON idblocks(carrier);"

/*
 * Chunk rows. A chunk's id is 32 bytes; its row is keyed by the first 8 as
 * an INTEGER PRIMARY KEY (k: big-endian, sign bit flipped, so k orders as
 * the ids do) and holds the other 24 (tail): the pack index then holds
 * (pack, 8-byte k) instead of (pack, 32-byte id), and the row keeps no
 * byte of the id twice. A lookup compares both parts, so it matches the
 * whole id. Two ids with equal first 8 bytes (about 1 in 2^64 per pair,
 * or someone crafting them) cannot share k: the second goes to
 * chunks_overflow, keyed by (k, tail), normally empty. Every reader looks in
 * both tables; an id is in at most one (catalog_pack_record).
 */
#define CHUNK_COLUMNS                                                         \
	"pack INTEGER NOT NULL, offset INTEGER NOT NULL, elen INTEGER NOT NULL," \
	" plen INTEGER NOT NULL, enc INTEGER NOT NULL, condemned INTEGER, crc INTEGER, fh BLOB"
#define CHUNKS_SQL(name)                                                                  \
	"CREATE TABLE IF NOT EXISTS " name "(k INTEGER PRIMARY KEY, tail BLOB NOT NULL, " \
	CHUNK_COLUMNS ");"
#define CHUNKS_OVERFLOW_SQL                                                                 \
	"CREATE TABLE IF NOT EXISTS chunks_overflow(k INTEGER NOT NULL, tail BLOB NOT NULL, " \
	CHUNK_COLUMNS ", PRIMARY KEY(k, tail)) WITHOUT ROWID;"                                 \
	"CREATE INDEX IF NOT EXISTS chunks_overflow_pack ON chunks_overflow(pack);"
#define CHUNK_COLUMNS_NAMES "pack, offset, elen, plen, enc, condemned, crc, fh"
#define CHUNK_TAIL_LEN (PGBAKFS_CHUNK_ID_LEN - 8)

static const char schema_sql[] =
	"CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS packs(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
	"  state TEXT NOT NULL, session TEXT, size INTEGER NOT NULL DEFAULT 0,"
	"  n_chunks INTEGER NOT NULL DEFAULT 0, created INTEGER NOT NULL);"
	CHUNKS_SQL("chunks")
	"CREATE INDEX IF NOT EXISTS chunks_pack ON chunks(pack);"
	CHUNKS_OVERFLOW_SQL
	"CREATE TABLE IF NOT EXISTS contents(id INTEGER PRIMARY KEY, hash BLOB NOT NULL UNIQUE,"
	"  n INTEGER NOT NULL, list BLOB NOT NULL, blocks INTEGER NOT NULL DEFAULT 0,"
	"  carrier INTEGER);"
	IDBLOCKS_SQL
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
	"  read_bytes INTEGER, tree INTEGER);"
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
	DIRS_SQL
	"CREATE TABLE IF NOT EXISTS holds(session TEXT NOT NULL, snap INTEGER NOT NULL,"
	"  PRIMARY KEY(session, snap)) WITHOUT ROWID;";

/* A snapshot list and show: finished, and not deleted (deleted ones may still be held). */
#define VISIBLE "status NOT IN ('running', 'deleted')"

enum {
	ST_CHUNK_EXISTS,
	ST_CHUNK_LOCATE,
	ST_CHUNK_UPSERT,
	ST_CHUNK_IN_MAIN,
	ST_CHUNK_UPSERT_OVERFLOW,
	ST_CHUNK_SET_CRC,
	ST_CHUNK_SET_CRC_OVERFLOW,
	ST_PACK_RECORD,
	ST_CONTENT_INSERT,
	ST_CONTENT_ID,
	ST_CONTENT_GET,
	ST_CONTENT_PLACEHOLDER,
	ST_IDBLOCK_UPSERT,
	ST_IDBLOCK_ID,
	ST_IDBLOCK_GET,
	ST_FILE_ADD,
	ST_FILE_LIST,
	ST_CHUNK_FH,
	N_STATEMENTS
};

static const char *const statement_sql[N_STATEMENTS] = {
	/* chunk rows: ?1 k, ?2 tail (chunk_bind_id) */
	[ST_CHUNK_EXISTS] = "SELECT 1 FROM chunks WHERE k = ?1 AND tail = ?2 AND condemned IS NULL"
			    " UNION ALL SELECT 1 FROM chunks_overflow WHERE k = ?1 AND tail = ?2"
			    " AND condemned IS NULL LIMIT 1",
	[ST_CHUNK_LOCATE] = "SELECT c.pack, p.name, c.offset, c.elen, c.plen, c.enc, c.crc, p.size, c.fh"
			    " FROM chunks c JOIN packs p ON p.id = c.pack WHERE c.k = ?1 AND c.tail = ?2"
			    " UNION ALL SELECT c.pack, p.name, c.offset, c.elen, c.plen, c.enc, c.crc,"
			    " p.size, c.fh FROM chunks_overflow c JOIN packs p ON p.id = c.pack"
			    " WHERE c.k = ?1 AND c.tail = ?2 LIMIT 1",
	/* changes nothing when k holds another id, or the id is in the overflow table */
	[ST_CHUNK_UPSERT] = "INSERT INTO chunks(k, tail, pack, offset, elen, plen, enc, crc, fh)"
			    " SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 WHERE NOT EXISTS"
			    " (SELECT 1 FROM chunks_overflow WHERE k = ?1 AND tail = ?2)"
			    " ON CONFLICT(k) DO UPDATE SET"
			    " pack = excluded.pack, offset = excluded.offset, elen = excluded.elen,"
			    " plen = excluded.plen, enc = excluded.enc, crc = excluded.crc, fh = excluded.fh,"
			    " condemned = NULL"
			    " WHERE chunks.tail = excluded.tail AND chunks.condemned IS NOT NULL",
	[ST_CHUNK_IN_MAIN] = "SELECT 1 FROM chunks WHERE k = ?1 AND tail = ?2",
	[ST_CHUNK_UPSERT_OVERFLOW] = "INSERT INTO chunks_overflow(k, tail, pack, offset, elen, plen,"
				     " enc, crc, fh) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
				     " ON CONFLICT(k, tail) DO UPDATE SET pack = excluded.pack,"
				     " offset = excluded.offset, elen = excluded.elen,"
				     " plen = excluded.plen, enc = excluded.enc, crc = excluded.crc,"
				     " fh = excluded.fh,"
				     " condemned = NULL WHERE chunks_overflow.condemned IS NOT NULL",
	[ST_CHUNK_SET_CRC] = "UPDATE chunks SET crc = ?3 WHERE k = ?1 AND tail = ?2 AND crc IS NULL",
	[ST_CHUNK_SET_CRC_OVERFLOW] = "UPDATE chunks_overflow SET crc = ?3 WHERE k = ?1 AND tail = ?2"
				      " AND crc IS NULL",
	[ST_PACK_RECORD] = "UPDATE packs SET state = 'ok', size = ?2, n_chunks = ?3 WHERE id = ?1",
	[ST_CONTENT_INSERT] = "INSERT OR IGNORE INTO contents(hash, n, list) VALUES(?1, ?2, ?3)",
	[ST_CONTENT_ID] = "SELECT id FROM contents WHERE hash = ?1",
	[ST_CONTENT_GET] = "SELECT n, list, blocks, hash FROM contents WHERE id = ?1",
	[ST_CONTENT_PLACEHOLDER] = "SELECT 1 FROM contents WHERE id = ?1 AND n = 0 AND blocks = 1",
	/* a row whose ids do not match (damaged, or a placeholder repair left) is healed */
	[ST_IDBLOCK_UPSERT] = "INSERT INTO idblocks(hash, n, ids) VALUES(?1, ?2, ?3)"
			      " ON CONFLICT(hash) DO UPDATE SET n = excluded.n, ids = excluded.ids"
			      " WHERE idblocks.n <> excluded.n OR idblocks.ids <> excluded.ids",
	[ST_IDBLOCK_ID] = "SELECT id FROM idblocks WHERE hash = ?1",
	[ST_IDBLOCK_GET] = "SELECT n, ids, hash FROM idblocks WHERE id = ?1",
	[ST_FILE_ADD] = "INSERT INTO files(snap, ino, parent, name, mode, uid, gid, mtime, size,"
			" content, target) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
	[ST_FILE_LIST] = "SELECT ino, parent, name, mode, uid, gid, mtime, size, content, target"
			 " FROM files WHERE snap = ?1 ORDER BY ino",
	[ST_CHUNK_FH] = "SELECT c.fh FROM chunks c JOIN packs p ON p.id = c.pack WHERE c.k = ?1"
			" AND c.tail = ?2 UNION ALL SELECT c.fh FROM chunks_overflow c JOIN packs p"
			" ON p.id = c.pack WHERE c.k = ?1 AND c.tail = ?2 LIMIT 1",
};

/*
 * The same statements on a chunks table of schema version 1 (rows keyed by
 * the whole id, ?1; format-1 repositories keep it: an earlier release reads
 * them). NULL: the statement does not depend on the shape.
 */
static const char *const statement_sql_v1[N_STATEMENTS] = {
	[ST_CHUNK_EXISTS] = "SELECT 1 FROM chunks WHERE id = ?1 AND condemned IS NULL",
	[ST_CHUNK_LOCATE] = "SELECT c.pack, p.name, c.offset, c.elen, c.plen, c.enc, c.crc, p.size, c.fh"
			    " FROM chunks c JOIN packs p ON p.id = c.pack WHERE c.id = ?1",
	[ST_CHUNK_UPSERT] = "INSERT INTO chunks(id, pack, offset, elen, plen, enc, crc, fh)"
			    " VALUES(?1, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT(id) DO UPDATE SET"
			    " pack = excluded.pack, offset = excluded.offset, elen = excluded.elen,"
			    " plen = excluded.plen, enc = excluded.enc, crc = excluded.crc, fh = excluded.fh,"
			    " condemned = NULL"
			    " WHERE chunks.condemned IS NOT NULL",
	[ST_CHUNK_IN_MAIN] = "SELECT 1 FROM chunks WHERE id = ?1",
	[ST_CHUNK_UPSERT_OVERFLOW] = "SELECT 1 WHERE ?1 IS NULL AND ?9 IS NULL", /* never reached */
	[ST_CHUNK_SET_CRC] = "UPDATE chunks SET crc = ?3 WHERE id = ?1 AND ?2 IS NULL AND crc IS NULL",
	[ST_CHUNK_SET_CRC_OVERFLOW] = "SELECT 1 WHERE ?1 IS NULL AND ?3 IS NULL",
	[ST_CHUNK_FH] = "SELECT c.fh FROM chunks c JOIN packs p ON p.id = c.pack WHERE c.id = ?1",
};

struct Catalog {
	sqlite3 *db;
	bool keyed; /* chunk rows keyed by k (schema version 2), else by id (version 1) */
	SqldbCache *stmts; /* statement_sql (or statement_sql_v1) by ST_ */
	unsigned format; /* the repository's: what this connection may write */
	bool idblocks; /* new lists of more than PGBAKFS_IDBLOCK_IDS ids go in id blocks */
};


static int catalog_fail(Catalog *c, int rc, const char *what)
{
	/* the error code travels up; the SQLite text (debug log) helps only a developer */
	return sqldb_fail(c->db, rc, what);
}

static int exec_sql(Catalog *c, const char *sql) { return sqldb_exec(c->db, sql); }

static sqlite3_stmt *stmt_get(Catalog *c, int which, int *ret_r)
{
	const char *sql = !c->keyed && statement_sql_v1[which] ? statement_sql_v1[which]
							       : statement_sql[which];
	sqlite3_stmt *s = NULL;
	*ret_r = sqldb_cache_get(c->stmts, (size_t)which, sql, &s);
	return s;
}

/* Prepare a one-off statement. */
static int prepare(Catalog *c, const char *sql, sqlite3_stmt **ret)
{
	return sqldb_prepare(c->db, sql, ret);
}

static int step_done(Catalog *c, sqlite3_stmt *s) { return sqldb_step_done(c->db, s); }

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

static const char *const chunk_tables[] = {"chunks", "chunks_overflow"};

/* Which shape the chunks table has (c->keyed). */
static int chunks_shape(Catalog *c)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int r = prepare(c, "SELECT count(*) FROM pragma_table_info('chunks') WHERE name = 'k'", &s);
	if (r < 0 || sqlite3_step(s) != SQLITE_ROW)
		return r < 0 ? r : catalog_fail(c, sqlite3_errcode(c->db), "table info");
	c->keyed = sqlite3_column_int(s, 0) > 0;
	return 0;
}

/* A chunk row's key: the id's first 8 bytes, big-endian, sign bit flipped (orders as ids do). */
static int64_t chunk_key(const uint8_t *id)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | id[i];
	return (int64_t)(v ^ (UINT64_C(1) << 63));
}

/* Bind id as (k, tail) to parameters i and i + 1; to i alone in a version-1 table. */
static void chunk_bind_id(const Catalog *c, sqlite3_stmt *s, int i, const ChunkId *id)
{
	if (!c->keyed) {
		sqlite3_bind_blob(s, i, id->b, PGBAKFS_CHUNK_ID_LEN, SQLITE_STATIC);
		return;
	}
	sqlite3_bind_int64(s, i, chunk_key(id->b));
	sqlite3_bind_blob(s, i + 1, id->b + 8, CHUNK_TAIL_LEN, SQLITE_STATIC);
}

/*
 * The id of a row whose columns i, i + 1 are k, tail (or id, NULL: version 1);
 * -EBADMSG for a damaged one.
 */
static int chunk_column_id(sqlite3_stmt *s, int i, ChunkId *ret)
{
	uint64_t v = (uint64_t)sqlite3_column_int64(s, i) ^ (UINT64_C(1) << 63);
	if (sqlite3_column_type(s, i) == SQLITE_BLOB) {
		if (sqlite3_column_bytes(s, i) != PGBAKFS_CHUNK_ID_LEN)
			return -EBADMSG;
		memcpy(ret->b, sqlite3_column_blob(s, i), PGBAKFS_CHUNK_ID_LEN);
		return 0;
	}
	if (sqlite3_column_type(s, i) != SQLITE_INTEGER ||
	    sqlite3_column_bytes(s, i + 1) != CHUNK_TAIL_LEN)
		return -EBADMSG;
	for (int b = 7; b >= 0; b--, v >>= 8)
		ret->b[b] = (uint8_t)v;
	memcpy(ret->b + 8, sqlite3_column_blob(s, i + 1), CHUNK_TAIL_LEN);
	return 0;
}

/* pgbakfs_chunk_key(id): chunk_key in SQL, for the migration below (NULL for a bad id) */
static void sql_chunk_key(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	(void)argc;
	if (sqlite3_value_bytes(argv[0]) != PGBAKFS_CHUNK_ID_LEN)
		sqlite3_result_null(ctx);
	else
		sqlite3_result_int64(ctx, chunk_key(sqlite3_value_blob(argv[0])));
}

/*
 * Chunk rows keyed by id (schema version 1: chunks(id BLOB PRIMARY KEY, ...)
 * WITHOUT ROWID, and chunks_pack on (pack, id)) become rows keyed by k, in one
 * transaction: a kill at any point leaves the old table as it was. Rows go
 * in id order, so in k order: each new page is appended full. The first
 * of two ids sharing k keeps the place, the other goes to chunks_overflow.
 * schema_version 2 makes an earlier binary refuse the catalog ("newer
 * format") instead of running its statements on a table it does not know;
 * publish_whole tells the writer of a published catalog to put the next
 * generation whole, so readers of that earlier binary meet it in a base
 * they refuse, not in a delta they cannot apply.
 */
int catalog_chunks_rekey(Catalog *c)
{
	static const char check[] = "SELECT (SELECT count(*) FROM pragma_table_info('chunks')"
				    " WHERE name = 'id'), (SELECT count(*) FROM"
				    " pragma_table_info('chunks') WHERE name = 'fh')";
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	char sql[1024];
	int r = prepare(c, check, &s);
	if (r < 0 || sqlite3_step(s) != SQLITE_ROW)
		return r < 0 ? r : catalog_fail(c, sqlite3_errcode(c->db), "table info");
	if (sqlite3_column_int(s, 0) == 0)
		return 0;
	sqlite3_reset(s);
	sqldb_cache_clear(c->stmts); /* prepared for the old table */
	r = exec_sql(c, "BEGIN IMMEDIATE");
	if (r < 0)
		return r;
	/* again inside the transaction: another process may have done it meanwhile */
	int old = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int(s, 0) : -1;
	bool fh = old > 0 && sqlite3_column_int(s, 1) > 0;
	sqlite3_reset(s); /* before the table it reads is dropped */
	if (old < 0)
		r = catalog_fail(c, sqlite3_errcode(c->db), "table info");
	if (r == 0 && old > 0 &&
	    sqlite3_create_function(c->db, "pgbakfs_chunk_key", 1,
				    SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL, sql_chunk_key, NULL,
				    NULL) != SQLITE_OK)
		r = catalog_fail(c, sqlite3_errcode(c->db), "chunk key function");
	if (r == 0 && old > 0)
		r = exec_sql(c, CHUNKS_SQL("chunks_keyed") CHUNKS_OVERFLOW_SQL);
	if (r == 0 && old > 0) {
		snprintf(sql, sizeof(sql),
			 "INSERT INTO chunks_keyed(k, tail, " CHUNK_COLUMNS_NAMES ")"
			 " SELECT pgbakfs_chunk_key(id), substr(id, 9), pack, offset, elen, plen, enc,"
			 " condemned, crc, %s FROM chunks WHERE length(id) = %d ORDER BY id"
			 " ON CONFLICT(k) DO NOTHING;"
			 "INSERT INTO chunks_overflow(k, tail, " CHUNK_COLUMNS_NAMES ")"
			 " SELECT pgbakfs_chunk_key(o.id), substr(o.id, 9), pack, offset, elen, plen,"
			 " enc, condemned, crc, %s FROM chunks o WHERE length(o.id) = %d AND NOT EXISTS"
			 " (SELECT 1 FROM chunks_keyed n WHERE n.k = pgbakfs_chunk_key(o.id)"
			 " AND n.tail = substr(o.id, 9)) ON CONFLICT(k, tail) DO NOTHING;",
			 fh ? "fh" : "NULL", PGBAKFS_CHUNK_ID_LEN, fh ? "fh" : "NULL",
			 PGBAKFS_CHUNK_ID_LEN);
		r = exec_sql(c, sql);
	}
	if (r == 0 && old > 0)
		r = exec_sql(c, "DROP TABLE chunks;"
				"ALTER TABLE chunks_keyed RENAME TO chunks;"
				"CREATE INDEX chunks_pack ON chunks(pack);"
				"INSERT OR REPLACE INTO meta VALUES('schema_version', 2);"
				"INSERT OR REPLACE INTO meta VALUES('publish_whole', 1);");
	r = r == 0 ? exec_sql(c, "COMMIT") : (exec_sql(c, "ROLLBACK"), r);
	if (r == 0)
		r = chunks_shape(c);
	return r < 0 ? r : old > 0;
}

static int query_u64(Catalog *c, const char *sql, uint64_t *ret);

int catalog_chunks_unkeyed(Catalog *c)
{
	uint64_t n = 0;
	int r = exec_sql(c, "BEGIN IMMEDIATE");
	if (r == 0)
		r = query_u64(c, "SELECT (SELECT count(*) FROM chunks) +"
			      " (SELECT count(*) FROM chunks_overflow)", &n);
	if (r == 0 && n > 0)
		r = -ENOTEMPTY;
	if (r == 0) /* prepared for the table about to go */
		sqldb_cache_clear(c->stmts);
	if (r == 0 && c->keyed)
		r = exec_sql(c, "DROP TABLE chunks;"
				"CREATE TABLE chunks(id BLOB PRIMARY KEY, pack INTEGER NOT NULL,"
				"  offset INTEGER NOT NULL, elen INTEGER NOT NULL, plen INTEGER NOT NULL,"
				"  enc INTEGER NOT NULL, condemned INTEGER, crc INTEGER, fh BLOB)"
				"  WITHOUT ROWID;"
				"CREATE INDEX chunks_pack ON chunks(pack);"
				"UPDATE meta SET value = 1 WHERE key = 'schema_version';");
	r = r == 0 ? exec_sql(c, "COMMIT") : (exec_sql(c, "ROLLBACK"), r);
	return r == 0 ? chunks_shape(c) : r;
}

/* A table added later (a catalog that already has manifest_state is not "short" of tables). */
static int migrate_add_table(Catalog *c, const char *table, const char *sql)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int r = prepare(c, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1", &s);
	if (r < 0)
		return r;
	sqlite3_bind_text(s, 1, table, -1, SQLITE_STATIC);
	if (sqlite3_step(s) != SQLITE_ROW)
		return catalog_fail(c, sqlite3_errcode(c->db), "table lookup");
	return sqlite3_column_int(s, 0) > 0 ? 0 : exec_sql(c, sql);
}

/* The carrier indexes (catalog_idblocks_assign_carriers finds new items by them). */
static int migrate_carrier_indexes(Catalog *c)
{
	return exec_sql(c, "CREATE INDEX IF NOT EXISTS contents_carrier ON contents(carrier);"
			   "CREATE INDEX IF NOT EXISTS dirs_carrier ON dirs(carrier);");
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
	/* WAL: readers never block the writer; FULL: a commit survives power loss */
	SqldbOptions o = {
		.flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0),
		.busy_ms = CATALOG_BUSY_TIMEOUT_MS,
		.pragmas = "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
			   "PRAGMA foreign_keys=OFF; PRAGMA temp_store=FILE;"};
	Catalog *c = calloc(1, sizeof(*c));
	int r;

	if (!c)
		return -ENOMEM;
	r = sqldb_open(path, &o, &c->db);
	if (r == 0)
		r = sqldb_cache_new(c->db, N_STATEMENTS, &c->stmts);
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
			r = exec_sql(c, "INSERT OR IGNORE INTO meta VALUES('schema_version', 2);"
					"INSERT OR IGNORE INTO meta VALUES('epoch', 0);");
		r = r == 0 ? exec_sql(c, "COMMIT") : (exec_sql(c, "ROLLBACK"), r);
	}
	if (r == 0)
		r = migrate_add_table(c, "idblocks", IDBLOCKS_SQL);
	if (r == 0)
		r = migrate_add_table(c, "dirs", DIRS_SQL);
	if (r == 0)
		r = migrate_add_table(c, "attempts", ATTEMPTS_SQL);
	if (r == 0)
		r = migrate_add_column(c, "contents", "blocks", "INTEGER NOT NULL DEFAULT 0");
	if (r == 0)
		r = migrate_add_column(c, "contents", "carrier", "INTEGER");
	if (r == 0)
		r = migrate_add_column(c, "dirs", "carrier", "INTEGER");
	if (r == 0)
		r = migrate_carrier_indexes(c);
	if (r == 0)
		r = migrate_add_column(c, "chunks", "crc", "INTEGER");
	if (r == 0) /* restore --delta's check (chunk_fh), 16 bytes; NULL: SHA-256 */
		r = migrate_add_column(c, "chunks", "fh", "BLOB");
	if (r == 0)
		r = migrate_add_table(c, "chunks_overflow", CHUNKS_OVERFLOW_SQL);
	if (r == 0)
		r = chunks_shape(c);
	if (r == 0)
		r = migrate_add_column(c, "snapshots", "tree_digest", "BLOB");
	if (r == 0)
		r = migrate_add_column(c, "snapshots", "method", "TEXT");
	if (r == 0)
		r = migrate_add_column(c, "snapshots", "method_note", "TEXT");
	if (r == 0)
		r = migrate_add_column(c, "snapshots", "read_bytes", "INTEGER");
	if (r == 0)
		r = migrate_add_column(c, "snapshots", "tree", "INTEGER");
	if (r == 0) /* gc --repack: the epoch at which a pack's chunks moved out */
		r = migrate_add_column(c, "packs", "retired", "INTEGER");
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
	sqldb_cache_free(c->stmts);
	sqldb_close(c->db);
	free(c);
	return NULL;
}

int catalog_begin(Catalog *c) { return sqldb_begin(c->db, true); }
int catalog_commit(Catalog *c) { return sqldb_commit(c->db); }
void catalog_rollback(Catalog *c) { sqldb_rollback(c->db); }

int catalog_chunk_exists(Catalog *c, const ChunkId *id)
{
	int r, rc;
	sqlite3_stmt *s = stmt_get(c, ST_CHUNK_EXISTS, &r);
	if (!s)
		return r;
	chunk_bind_id(c, s, 1, id);
	rc = sqlite3_step(s);
	r = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : catalog_fail(c, rc, "chunk lookup");
	sqlite3_reset(s);
	return r;
}

/* chunks.fh in column col: CHUNK_FH_LEN bytes, or the 16 of fasthash128 older catalogs hold. */
static bool fh_column(sqlite3_stmt *s, int col, uint8_t ret[CHUNK_FH_LEN])
{
	int n = sqlite3_column_bytes(s, col);
	if (n != CHUNK_FH_LEN && n != FASTHASH_LEN)
		return false;
	memcpy(ret, sqlite3_column_blob(s, col), CHUNK_FH_LEN);
	return true;
}

int catalog_chunk_locate(Catalog *c, const ChunkId *id, ChunkLoc *ret)
{
	int r, rc;
	sqlite3_stmt *s = stmt_get(c, ST_CHUNK_LOCATE, &r);
	if (!s)
		return r;
	chunk_bind_id(c, s, 1, id);
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
		ret->has_fh = fh_column(s, 8, ret->fh);
		r = 0;
	} else {
		r = rc == SQLITE_DONE ? -ENOENT : catalog_fail(c, rc, "chunk locate");
	}
	sqlite3_reset(s);
	return r;
}

/*
 * A read transaction of its own, unless the caller has one open: one snapshot
 * of the catalog for a batch of lookups, and SQLite's WAL read lock taken
 * once instead of per statement.
 */
static int read_begin(Catalog *c, bool *ret_own)
{
	*ret_own = sqlite3_get_autocommit(c->db) != 0;
	return *ret_own ? exec_sql(c, "BEGIN") : 0;
}

static int read_end(Catalog *c, bool own, int r)
{
	if (own && r == 0)
		return exec_sql(c, "COMMIT");
	if (own)
		catalog_rollback(c);
	return r;
}

/*
 * One read transaction for the lot: an autocommit lookup takes and drops
 * SQLite's shared locks (fcntl on the WAL index) per id, which was most of a
 * lookup's cost after the B-tree walk itself.
 */
int catalog_chunks_locate(Catalog *c, const ChunkId *ids, size_t n, ChunkLoc *ret, int *ret_err)
{
	bool own;
	int r = read_begin(c, &own);
	for (size_t i = 0; i < n && r == 0; i++) {
		ret_err[i] = catalog_chunk_locate(c, &ids[i], &ret[i]);
		if (ret_err[i] < 0 && ret_err[i] != -ENOENT)
			r = ret_err[i];
	}
	return read_end(c, own, r);
}

/*
 * One read transaction for all n: a statement outside one takes and drops
 * SQLite's WAL read lock (two fcntl calls) each time, which with the join
 * of catalog_chunk_locate was a quarter of a delta restore's CPU.
 */
int catalog_chunk_fh_get(Catalog *c, const ChunkId *ids, size_t n,
			 uint8_t (*ret_fh)[CHUNK_FH_LEN], bool *ret_has)
{
	bool own;
	int r = read_begin(c, &own);

	for (size_t i = 0; r == 0 && i < n; i++) {
		sqlite3_stmt *s;
		int rc;
		ret_has[i] = false;
		if (chunk_id_is_hole(&ids[i]))
			continue;
		s = stmt_get(c, ST_CHUNK_FH, &r);
		if (!s)
			break;
		chunk_bind_id(c, s, 1, &ids[i]);
		rc = sqlite3_step(s);
		if (rc == SQLITE_ROW)
			ret_has[i] = fh_column(s, 0, ret_fh[i]);
		else if (rc != SQLITE_DONE)
			r = catalog_fail(c, rc, "chunk fh lookup");
		sqlite3_reset(s);
	}
	return read_end(c, own, r);
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

/*
 * chunks.crc holds the CRC-32C as a signed 32-bit integer: SQLite stores an
 * integer in the fewest bytes that hold its value, and half of all CRCs are
 * over 2^31 - 1, which as themselves take 6 bytes and as signed ones 4 (~1 B
 * per chunk row). Every reader takes the low 32 bits ((uint32_t) of the
 * 64-bit column), so rows of either kind, and earlier binaries, read the same
 * value.
 */
static int crc_stored(uint32_t crc) { return (int)(int32_t)crc; }

static int chunk_upsert_in(Catalog *c, int which, int64_t pack_id, const PackEntry *e)
{
	int r;
	sqlite3_stmt *s = stmt_get(c, which, &r);
	if (!s)
		return r;
	chunk_bind_id(c, s, 1, &e->id);
	sqlite3_bind_int64(s, 3, pack_id);
	sqlite3_bind_int64(s, 4, (int64_t)e->offset);
	sqlite3_bind_int64(s, 5, e->elen);
	sqlite3_bind_int64(s, 6, e->plen);
	sqlite3_bind_int(s, 7, e->enc);
	if (e->has_crc)
		sqlite3_bind_int(s, 8, crc_stored(e->crc));
	else
		sqlite3_bind_null(s, 8);
	if (e->has_fh)
		sqlite3_bind_blob(s, 9, e->fh, CHUNK_FH_LEN, SQLITE_STATIC);
	else
		sqlite3_bind_null(s, 9);
	return step_done(c, s);
}

/*
 * A row for e, or a condemned one given back life. When the main table
 * changed nothing, either its row of k is this id, live (nothing to do), or
 * k holds another id, or the id is in chunks_overflow: there it goes.
 */
static int chunk_upsert(Catalog *c, int64_t pack_id, const PackEntry *e)
{
	int rc, r = chunk_upsert_in(c, ST_CHUNK_UPSERT, pack_id, e);
	sqlite3_stmt *s;
	if (r < 0 || sqlite3_changes(c->db) > 0)
		return r;
	s = stmt_get(c, ST_CHUNK_IN_MAIN, &r);
	if (!s)
		return r;
	chunk_bind_id(c, s, 1, &e->id);
	rc = sqlite3_step(s);
	sqlite3_reset(s);
	if (rc == SQLITE_ROW)
		return 0;
	if (rc != SQLITE_DONE)
		return catalog_fail(c, rc, "chunk lookup");
	return chunk_upsert_in(c, ST_CHUNK_UPSERT_OVERFLOW, pack_id, e);
}

int catalog_chunk_set_crc(Catalog *c, const ChunkId *id, uint32_t crc)
{
	static const int which[] = {ST_CHUNK_SET_CRC, ST_CHUNK_SET_CRC_OVERFLOW};
	int r = 0;
	for (size_t i = 0; i < sizeof(which) / sizeof(which[0]) && r == 0; i++) {
		sqlite3_stmt *s = stmt_get(c, which[i], &r);
		if (!s)
			break;
		chunk_bind_id(c, s, 1, id);
		sqlite3_bind_int(s, 3, crc_stored(crc));
		r = step_done(c, s);
	}
	return r;
}

int catalog_publish_whole_take(Catalog *c)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int r = prepare(c, "DELETE FROM meta WHERE key = 'publish_whole' RETURNING 1", &s);
	int rc = r == 0 ? sqlite3_step(s) : SQLITE_OK;
	if (r < 0)
		return r;
	if (rc == SQLITE_ROW)
		return 1;
	return rc == SQLITE_DONE ? 0 : catalog_fail(c, rc, "meta");
}

int catalog_pack_record(Catalog *c, int64_t pack_id, uint64_t size, const PackEntry *e, size_t n)
{
	sqlite3_stmt *s;
	int r = catalog_begin(c);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n && r == 0; i++)
		r = chunk_upsert(c, pack_id, &e[i]);
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

/* The chunk rows sql (k, tail, offset, elen, plen, enc, crc; pack ?1) selects, in its order. */
static int pack_entries(Catalog *c, const char *sql, int64_t pack_id, PackEntry **ret,
			size_t *ret_n)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	_cleanup_free_ PackEntry *v = NULL;
	size_t n = 0, cap = 0;
	int rc, r = prepare(c, sql, &s);
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
		v[n] = (PackEntry){0};
		if (chunk_column_id(s, 0, &v[n].id) < 0)
			return -EBADMSG;
		v[n].offset = (uint64_t)sqlite3_column_int64(s, 2);
		v[n].elen = (uint32_t)sqlite3_column_int64(s, 3);
		v[n].plen = (uint32_t)sqlite3_column_int64(s, 4);
		v[n].enc = (uint8_t)sqlite3_column_int(s, 5);
		v[n].has_crc = sqlite3_column_type(s, 6) != SQLITE_NULL;
		v[n].crc = (uint32_t)sqlite3_column_int64(s, 6);
		n++;
	}
	if (rc != SQLITE_DONE)
		return catalog_fail(c, rc, "pack chunks");
	*ret = TAKE_PTR(v);
	*ret_n = n;
	return 0;
}

int catalog_pack_chunks(Catalog *c, int64_t pack_id, PackEntry **ret, size_t *ret_n)
{
	return pack_entries(c, c->keyed ? "SELECT k, tail, offset, elen, plen, enc, crc FROM chunks"
					  " WHERE pack = ?1 UNION ALL SELECT k, tail, offset, elen,"
					  " plen, enc, crc FROM chunks_overflow WHERE pack = ?1"
					  " ORDER BY offset"
					: "SELECT id, NULL, offset, elen, plen, enc, crc FROM chunks"
					  " WHERE pack = ?1 ORDER BY offset", pack_id, ret, ret_n);
}

/*
 * Chunk-id lists. A list of more than a block's worth of ids is stored, in a
 * catalog with id blocks switched on, as the rowids of its blocks: ids
 * [0, B), [B, 2B), ... each content-addressed by the SHA-256 of its id
 * bytes. Cutting at fixed positions (not by content) is what makes sharing
 * work for both changes that matter: a chunk rewritten in place changes only
 * its own block, and a file that grew keeps every full block before its old
 * tail. contents.hash stays the hash of the whole list, so equal lists still
 * dedup as one row and nothing that compares content hashes changes.
 *
 * contents.blocks says the form, row by row, so both are read everywhere:
 * 1 (repository formats 2 and 3): blocks of 256 ids, the list 8-byte
 * little-endian rowids; 2 (format 4): blocks of 62 ids, the list each
 * rowid's difference from the one before it (the first: from 0), zigzag,
 * as a LEB128 varint. Why: a changed file rewrites one block and its list.
 * A 256-id block is 8 KiB, which SQLite stores in a 4 KiB-page catalog as
 * 489 bytes in the leaf plus two overflow pages (~8.7 KB); 62 ids (1,984
 * bytes, with the row's key, hash and counts ~2,034) is the most that puts
 * two rows on one 4 KiB page, so a block costs half a page. The list then
 * names 4x as many blocks, but a file's blocks are mostly consecutive rowids
 * (written together), so their differences take one byte: a 16,384-chunk
 * file's list is ~270 bytes instead of 512 (form 1) or 2,120 (62-id blocks
 * named by 8-byte rowids). Per changed file 8.7 KB + 0.5 KB became
 * ~2 KB + 0.3 KB (bench/scale, docs/design.md "Id blocks").
 */

void catalog_set_idblocks(Catalog *c, bool on) { c->idblocks = on; }
bool catalog_idblocks(const Catalog *c) { return c->idblocks; }

static size_t form_ids(int form)
{
	return form == CATALOG_LIST_SMALL_BLOCKS ? PGBAKFS_IDBLOCK_IDS_SMALL : PGBAKFS_IDBLOCK_IDS;
}

/* Ids in block i of a list of n (n > 0). */
static size_t block_len(size_t n, size_t i, int form)
{
	size_t start = i * form_ids(form);
	return MIN(form_ids(form), n - start);
}

static size_t blocks_for(size_t n, int form) { return (n + form_ids(form) - 1) / form_ids(form); }

/* The form a new list of n ids takes on this connection. */
static int list_form_new(const Catalog *c, size_t n)
{
	int form = c->format >= 4 ? CATALOG_LIST_SMALL_BLOCKS : CATALOG_LIST_BLOCKS;
	return c->idblocks && n > form_ids(form) ? form : CATALOG_LIST_INLINE;
}

int catalog_list_form(const Catalog *c, size_t n) { return list_form_new(c, n); }

static int list_decode(int form, const void *list, size_t bytes, size_t nb, int64_t **ret);

/* The block rowids of the current row of s (columns n, list, blocks; a block form). */
static int list_rowids(sqlite3_stmt *s, int64_t **ret, size_t *ret_nb)
{
	int form = sqlite3_column_int(s, 2);
	size_t n = (size_t)sqlite3_column_int64(s, 0);
	size_t nb = form == CATALOG_LIST_BLOCKS || form == CATALOG_LIST_SMALL_BLOCKS
			    ? blocks_for(n, form) : 0;
	int r = list_decode(form, sqlite3_column_blob(s, 1), (size_t)sqlite3_column_bytes(s, 1),
			    nb, ret);
	if (r == 0)
		*ret_nb = nb;
	return r;
}

/* nb block rowids in a form's list encoding (*ret malloc'd). */
static int list_encode(int form, const int64_t *ids, size_t nb, uint8_t **ret, size_t *ret_bytes)
{
	uint8_t *p = malloc(nb ? nb * (form == CATALOG_LIST_BLOCKS ? 8 : 10) : 1);
	size_t len = 0;
	int64_t prev = 0;

	if (!p)
		return -ENOMEM;
	for (size_t i = 0; i < nb; i++) {
		if (form == CATALOG_LIST_BLOCKS) {
			put_le64(p + len, (uint64_t)ids[i]);
			len += 8;
			continue;
		}
		uint64_t d = (uint64_t)ids[i] - (uint64_t)prev;
		uint64_t z = (d << 1) ^ (uint64_t)-(int64_t)(d >> 63); /* zigzag */
		prev = ids[i];
		do {
			p[len++] = (uint8_t)((z & 0x7f) | (z > 0x7f ? 0x80 : 0));
			z >>= 7;
		} while (z);
	}
	*ret = p;
	*ret_bytes = len;
	return 0;
}

/* The nb rowids of a list of form 1 or 2 into *ret (malloc'd); -EBADMSG unless exactly nb. */
static int list_decode(int form, const void *list, size_t bytes, size_t nb, int64_t **ret)
{
	const uint8_t *p = list;
	_cleanup_free_ int64_t *v = malloc(nb ? nb * sizeof(int64_t) : 1);
	size_t at = 0;
	uint64_t prev = 0;

	if (!v)
		return -ENOMEM;
	if (form == CATALOG_LIST_BLOCKS) {
		if (bytes != nb * 8)
			return -EBADMSG;
		for (size_t i = 0; i < nb; i++)
			v[i] = (int64_t)get_le64(p + i * 8);
	} else if (form == CATALOG_LIST_SMALL_BLOCKS) {
		for (size_t i = 0; i < nb; i++) {
			uint64_t z = 0;
			unsigned shift = 0;
			for (;;) {
				if (at == bytes || shift > 63)
					return -EBADMSG;
				z |= (uint64_t)(p[at] & 0x7f) << shift;
				shift += 7;
				if (!(p[at++] & 0x80))
					break;
			}
			prev += (z >> 1) ^ (uint64_t)-(int64_t)(z & 1);
			v[i] = (int64_t)prev;
		}
		if (at != bytes)
			return -EBADMSG;
	} else {
		return -EBADMSG;
	}
	*ret = TAKE_PTR(v);
	return 0;
}

/* A transaction of its own, or a savepoint inside the caller's. */
static int sub_begin(Catalog *c, bool *ret_own)
{
	*ret_own = sqlite3_get_autocommit(c->db) != 0;
	return exec_sql(c, *ret_own ? "BEGIN IMMEDIATE" : "SAVEPOINT catalog_sub");
}

static int sub_end(Catalog *c, bool own, int r)
{
	if (r == 0)
		return exec_sql(c, own ? "COMMIT" : "RELEASE catalog_sub");
	if (own)
		catalog_rollback(c);
	else
		sqlite3_exec(c->db, "ROLLBACK TO catalog_sub; RELEASE catalog_sub", NULL, NULL, NULL);
	return r;
}

static int lookup_id(Catalog *c, int which, const ChunkId *hash, int64_t *ret_id)
{
	int r, rc;
	sqlite3_stmt *s = stmt_get(c, which, &r);
	if (!s)
		return r;
	sqlite3_bind_blob(s, 1, hash->b, sizeof(hash->b), SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*ret_id = sqlite3_column_int64(s, 0);
		r = 0;
	} else {
		r = rc == SQLITE_DONE ? -ENOENT : catalog_fail(c, rc, "id lookup");
	}
	sqlite3_reset(s);
	return r;
}

int catalog_idblock_put(Catalog *c, const ChunkId *ids, size_t n, int64_t *ret_id)
{
	ChunkId hash;
	int r;
	sqlite3_stmt *s;

	if (n == 0 || n > PGBAKFS_IDBLOCK_IDS)
		return -EINVAL;
	chunk_hash(ids, n * sizeof(*ids), &hash);
	s = stmt_get(c, ST_IDBLOCK_UPSERT, &r);
	if (!s)
		return r;
	sqlite3_bind_blob(s, 1, hash.b, sizeof(hash.b), SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, (int64_t)n);
	sqlite3_bind_blob64(s, 3, ids, n * sizeof(*ids), SQLITE_STATIC);
	r = step_done(c, s);
	if (r == 0)
		r = lookup_id(c, ST_IDBLOCK_ID, &hash, ret_id);
	return r == -ENOENT ? -EIO : r;
}

static int content_insert(Catalog *c, const ChunkId *hash, size_t n, const void *list,
			  size_t bytes, int form, int64_t *ret_id)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int r = prepare(c, "INSERT INTO contents(hash, n, list, blocks) VALUES(?1, ?2, ?3, ?4)", &s);
	if (r < 0)
		return r;
	sqlite3_bind_blob(s, 1, hash->b, sizeof(hash->b), SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, (int64_t)n);
	sqlite3_bind_blob64(s, 3, list, bytes, SQLITE_STATIC);
	sqlite3_bind_int(s, 4, form);
	r = step_done(c, s);
	if (r == 0)
		*ret_id = sqlite3_last_insert_rowid(c->db);
	return r;
}

/* The blocks of a list of n ids, put, and the list naming them in form (*ret_list malloc'd). */
static int content_blocks_list(Catalog *c, const ChunkId *ids, size_t n, int form,
			       uint8_t **ret_list, size_t *ret_bytes)
{
	size_t nb = blocks_for(n, form), b = form_ids(form);
	_cleanup_free_ int64_t *v = malloc(nb * sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < nb; i++) {
		int r = catalog_idblock_put(c, ids + i * b, block_len(n, i, form), &v[i]);
		if (r < 0)
			return r;
	}
	return list_encode(form, v, nb, ret_list, ret_bytes);
}

/*
 * A placeholder a repair left for a list no manifest carried (n 0, blocks 1)
 * gets the list now given, in place: directories name its row id. Any other
 * row is left as it is.
 */
static int content_heal(Catalog *c, int64_t id, const ChunkId *ids, size_t n)
{
	_cleanup_stmt_ sqlite3_stmt *u = NULL;
	_cleanup_free_ uint8_t *list = NULL;
	size_t bytes = 0;
	int form = list_form_new(c, n);
	int rc, r;
	sqlite3_stmt *s = stmt_get(c, ST_CONTENT_PLACEHOLDER, &r);
	if (!s)
		return r;
	sqlite3_bind_int64(s, 1, id);
	rc = sqlite3_step(s);
	sqlite3_reset(s);
	if (rc != SQLITE_ROW)
		return rc == SQLITE_DONE ? 0 : catalog_fail(c, rc, "content placeholder");
	if (form)
		r = content_blocks_list(c, ids, n, form, &list, &bytes);
	if (r == 0)
		r = prepare(c, "UPDATE contents SET n = ?2, list = ?3, blocks = ?4 WHERE id = ?1", &u);
	if (r < 0)
		return r;
	sqlite3_bind_int64(u, 1, id);
	sqlite3_bind_int64(u, 2, (int64_t)n);
	if (form)
		sqlite3_bind_blob64(u, 3, list, bytes, SQLITE_STATIC);
	else
		sqlite3_bind_blob64(u, 3, n ? (const void *)ids : "", n * sizeof(*ids), SQLITE_STATIC);
	sqlite3_bind_int(u, 4, form);
	return step_done(c, u);
}

static int content_put_blocks(Catalog *c, const ChunkId *hash, const ChunkId *ids, size_t n,
			      int form, int64_t *ret_id)
{
	_cleanup_free_ uint8_t *list = NULL;
	size_t bytes = 0;
	int r = lookup_id(c, ST_CONTENT_ID, hash, ret_id);
	if (r == 0)
		r = content_heal(c, *ret_id, ids, n);
	if (r != -ENOENT)
		return r;
	r = content_blocks_list(c, ids, n, form, &list, &bytes);
	return r < 0 ? r : content_insert(c, hash, n, list, bytes, form, ret_id);
}

int catalog_content_put(Catalog *c, const ChunkId *ids, size_t n, int64_t *ret_id)
{
	ChunkId hash;
	bool own;
	int r, rc;
	sqlite3_stmt *s;

	chunk_hash(ids, n * sizeof(*ids), &hash);
	if (list_form_new(c, n)) {
		/* the blocks and the list that names them in one transaction: gc never sees
		 * a block unreferenced in between */
		r = sub_begin(c, &own);
		if (r == 0)
			r = sub_end(c, own, content_put_blocks(c, &hash, ids, n, list_form_new(c, n),
								ret_id));
		return r;
	}
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
	return r == 0 ? content_heal(c, *ret_id, ids, n) : r;
}

/* 1 when the list of row id cannot be read whole: a placeholder, or a block that is one. */
static int content_hollow(Catalog *c, int64_t id)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL, *b = NULL;
	int rc, r = prepare(c, "SELECT n, list, blocks FROM contents WHERE id = ?1", &s);
	if (r == 0)
		r = prepare(c, "SELECT length(ids) > 0 FROM idblocks WHERE id = ?1", &b);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, id);
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW)
		return rc == SQLITE_DONE ? 1 : catalog_fail(c, rc, "content");
	int form = sqlite3_column_int(s, 2);
	size_t n = (size_t)sqlite3_column_int64(s, 0), nb;
	_cleanup_free_ int64_t *v = NULL;
	if (form == CATALOG_LIST_INLINE)
		return 0;
	if (n == 0)
		return 1;
	nb = blocks_for(n, form);
	r = list_decode(form, sqlite3_column_blob(s, 1), (size_t)sqlite3_column_bytes(s, 1), nb, &v);
	if (r < 0)
		return r == -EBADMSG ? 1 : r;
	for (size_t i = 0; i < nb; i++) {
		sqlite3_reset(b);
		sqlite3_bind_int64(b, 1, v[i]);
		rc = sqlite3_step(b);
		if (rc != SQLITE_ROW)
			return rc == SQLITE_DONE ? 1 : catalog_fail(c, rc, "id block");
		if (!sqlite3_column_int(b, 0))
			return 1;
	}
	return 0;
}

int catalog_content_find_or_missing(Catalog *c, const ChunkId *hash, int64_t *ret_id,
				    size_t *ret_missing)
{
	int r = lookup_id(c, ST_CONTENT_ID, hash, ret_id);
	*ret_missing = 0;
	if (r == 0) {
		/* there, but a placeholder (or naming one): missing for every tree that uses it */
		r = content_hollow(c, *ret_id);
		if (r > 0)
			*ret_missing = 1;
		return r < 0 ? r : 0;
	}
	if (r != -ENOENT)
		return r;
	r = content_insert(c, hash, 0, "", 0, CATALOG_LIST_BLOCKS, ret_id);
	if (r == 0)
		*ret_missing = 1;
	return r;
}

/* UPDATE sql (?1 the item's hash, ?2 the snapshot): an item's first carrier. */
static int carrier_set(Catalog *c, const char *sql, const ChunkId *hash, int64_t snap)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int r = prepare(c, sql, &s);
	if (r < 0)
		return r;
	sqlite3_bind_blob(s, 1, hash->b, sizeof(hash->b), SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, snap);
	return step_done(c, s);
}

int catalog_content_set_carrier(Catalog *c, const ChunkId *hash, int64_t snap)
{
	return carrier_set(c, "UPDATE contents SET carrier = ?2 WHERE hash = ?1 AND carrier IS NULL",
			   hash, snap);
}

/*
 * The ids of block rowid id into dst, which holds exactly n: -EBADMSG when
 * the row is missing, holds another number of ids, or its ids do not hash to
 * its hash (damage, or a block no manifest carried at repair). A damaged
 * block is never returned as data.
 */
static int idblock_read(Catalog *c, int64_t id, ChunkId *dst, size_t n, ChunkId *ret_hash)
{
	int r, rc;
	sqlite3_stmt *s = stmt_get(c, ST_IDBLOCK_GET, &r);
	if (!s)
		return r;
	sqlite3_bind_int64(s, 1, id);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		ChunkId got;
		r = 0;
		if ((size_t)sqlite3_column_int64(s, 0) != n ||
		    (size_t)sqlite3_column_bytes(s, 1) != n * sizeof(ChunkId) ||
		    sqlite3_column_bytes(s, 2) != PGBAKFS_CHUNK_ID_LEN) {
			r = -EBADMSG;
		} else {
			memcpy(dst, sqlite3_column_blob(s, 1), n * sizeof(ChunkId));
			chunk_hash(dst, n * sizeof(ChunkId), &got);
			if (memcmp(got.b, sqlite3_column_blob(s, 2), sizeof(got.b)) != 0)
				r = -EBADMSG;
			else if (ret_hash)
				*ret_hash = got;
		}
	} else {
		r = rc == SQLITE_DONE ? -EBADMSG : catalog_fail(c, rc, "id block get");
	}
	sqlite3_reset(s);
	return r;
}

/* Whole list of a row (n ids; list/bytes its list column, form its blocks column) into *ret. */
static int content_decode(Catalog *c, size_t n, const void *list, size_t bytes, int form,
			  ChunkId **ret, ChunkId **ret_hashes)
{
	_cleanup_free_ ChunkId *v = NULL, *hashes = NULL;
	_cleanup_free_ int64_t *rowids = NULL;
	size_t nb = form ? blocks_for(n, form) : 0;
	int r;

	if (form ? n == 0 : bytes != n * sizeof(ChunkId))
		return -EBADMSG;
	if (form && (r = list_decode(form, list, bytes, nb, &rowids)) < 0)
		return r;
	v = malloc(n ? n * sizeof(ChunkId) : 1);
	if (!v)
		return -ENOMEM;
	if (!form) {
		if (bytes)
			memcpy(v, list, bytes);
		*ret = TAKE_PTR(v);
		return 0;
	}
	if (ret_hashes && !(hashes = malloc(nb * sizeof(ChunkId))))
		return -ENOMEM;
	/* list may be a column of a live row: reading blocks steps other statements only */
	for (size_t i = 0; i < nb; i++) {
		r = idblock_read(c, rowids[i], v + i * form_ids(form), block_len(n, i, form),
				 hashes ? &hashes[i] : NULL);
		if (r < 0)
			return r;
	}
	*ret = TAKE_PTR(v);
	if (ret_hashes)
		*ret_hashes = TAKE_PTR(hashes);
	return 0;
}

static int content_get_form(Catalog *c, int64_t id, ChunkId **ret, size_t *ret_n,
			    ChunkId **ret_hashes, size_t *ret_n_blocks, ChunkId *ret_hash,
			    int *ret_form)
{
	int r, rc;
	sqlite3_stmt *s = stmt_get(c, ST_CONTENT_GET, &r);
	size_t n, bytes;
	int form;

	if (!s)
		return r;
	sqlite3_bind_int64(s, 1, id);
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW) {
		r = rc == SQLITE_DONE ? -ENOENT : catalog_fail(c, rc, "content get");
		sqlite3_reset(s);
		return r;
	}
	n = (size_t)sqlite3_column_int64(s, 0);
	bytes = (size_t)sqlite3_column_bytes(s, 1);
	form = sqlite3_column_int(s, 2);
	if (form < CATALOG_LIST_INLINE || form > CATALOG_LIST_SMALL_BLOCKS)
		r = -EBADMSG;
	if (ret_hash) {
		if (sqlite3_column_bytes(s, 3) == PGBAKFS_CHUNK_ID_LEN)
			memcpy(ret_hash->b, sqlite3_column_blob(s, 3), PGBAKFS_CHUNK_ID_LEN);
		else
			r = -EBADMSG;
	}
	/* straight from the row: reading blocks steps other statements, never this one */
	if (r == 0)
		r = content_decode(c, n, sqlite3_column_blob(s, 1), bytes, form, ret,
				   form ? ret_hashes : NULL);
	sqlite3_reset(s);
	if (r == 0) {
		*ret_n = n;
		if (ret_n_blocks)
			*ret_n_blocks = form ? blocks_for(n, form) : 0;
		if (ret_form)
			*ret_form = form;
	}
	return r;
}

int catalog_content_get(Catalog *c, int64_t id, ChunkId **ret, size_t *ret_n)
{
	return content_get_form(c, id, ret, ret_n, NULL, NULL, NULL, NULL);
}

int catalog_content_get_blocks(Catalog *c, int64_t id, ChunkId *ret_hash, ChunkId **ret,
			       size_t *ret_n, ChunkId **ret_blocks, size_t *ret_n_blocks,
			       int *ret_form)
{
	*ret_blocks = NULL;
	return content_get_form(c, id, ret, ret_n, ret_blocks, ret_n_blocks, ret_hash, ret_form);
}

int catalog_content_put_blocks(Catalog *c, const ChunkId *hash, size_t n, int form,
			       const ChunkId *blocks, size_t n_blocks, int64_t *ret_id,
			       size_t *ret_missing)
{
	_cleanup_free_ int64_t *v = NULL;
	_cleanup_free_ uint8_t *list = NULL;
	size_t missing = 0, bytes = 0;
	bool own;
	int r;

	if ((form != CATALOG_LIST_BLOCKS && form != CATALOG_LIST_SMALL_BLOCKS) ||
	    n <= form_ids(form) || n_blocks != blocks_for(n, form))
		return -EBADMSG;
	v = malloc(n_blocks * sizeof(*v));
	if (!v)
		return -ENOMEM;
	r = sub_begin(c, &own);
	if (r < 0)
		return r;
	r = lookup_id(c, ST_CONTENT_ID, hash, ret_id);
	if (r == -ENOENT) {
		r = 0;
		for (size_t i = 0; i < n_blocks && r == 0; i++) {
			int64_t id;
			r = lookup_id(c, ST_IDBLOCK_ID, &blocks[i], &id);
			if (r == -ENOENT) {
				/* a placeholder that names the block: its content reads as damaged */
				_cleanup_stmt_ sqlite3_stmt *s = NULL;
				r = prepare(c, "INSERT INTO idblocks(hash, n, ids) VALUES(?1, ?2, x'')", &s);
				if (r == 0) {
					sqlite3_bind_blob(s, 1, blocks[i].b, sizeof(blocks[i].b),
							  SQLITE_STATIC);
					sqlite3_bind_int64(s, 2, (int64_t)block_len(n, i, form));
					r = step_done(c, s);
				}
				id = sqlite3_last_insert_rowid(c->db);
				missing++;
			}
			v[i] = id;
		}
		if (r == 0)
			r = list_encode(form, v, n_blocks, &list, &bytes);
		if (r == 0)
			r = content_insert(c, hash, n, list, bytes, form, ret_id);
	}
	r = sub_end(c, own, r);
	if (r == 0 && ret_missing)
		*ret_missing = missing;
	return r;
}

int catalog_idblock_set_carrier(Catalog *c, const ChunkId *hash, int64_t snap)
{
	return carrier_set(c, "UPDATE idblocks SET carrier = ?2 WHERE hash = ?1 AND carrier IS NULL",
			   hash, snap);
}

int catalog_idblock_foreach_carried(Catalog *c, int64_t snap, CatalogIdBlockFn cb, void *ud)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	_cleanup_free_ ChunkId *v = malloc(PGBAKFS_IDBLOCK_IDS * sizeof(ChunkId));
	int rc, r = v ? prepare(c, "SELECT id, n FROM idblocks WHERE carrier = ?1 ORDER BY id", &s)
		      : -ENOMEM;
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, snap);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		ChunkId hash;
		size_t n = (size_t)sqlite3_column_int64(s, 1);
		if (n == 0 || n > PGBAKFS_IDBLOCK_IDS)
			return -EBADMSG;
		r = idblock_read(c, sqlite3_column_int64(s, 0), v, n, &hash);
		if (r == 0)
			r = cb(&hash, v, n, ud);
		if (r < 0)
			return r;
	}
	return rc == SQLITE_DONE ? 0 : catalog_fail(c, rc, "carried id blocks");
}

int catalog_idblocks_verify(Catalog *c, CatalogBadIdBlockFn cb, void *ud)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int rc, r = prepare(c, "SELECT hash, n, ids FROM idblocks", &s);
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		ChunkId hash = {0}, got;
		size_t n = (size_t)sqlite3_column_int64(s, 1);
		size_t bytes = (size_t)sqlite3_column_bytes(s, 2);
		bool ok = sqlite3_column_bytes(s, 0) == PGBAKFS_CHUNK_ID_LEN && n > 0 &&
			  n <= PGBAKFS_IDBLOCK_IDS && bytes == n * sizeof(ChunkId);
		if (sqlite3_column_bytes(s, 0) == PGBAKFS_CHUNK_ID_LEN)
			memcpy(hash.b, sqlite3_column_blob(s, 0), sizeof(hash.b));
		if (ok) {
			chunk_hash(sqlite3_column_blob(s, 2), bytes, &got);
			ok = memcmp(got.b, hash.b, sizeof(got.b)) == 0;
		}
		if (!ok && (r = cb(&hash, bytes == 0, ud)) < 0)
			return r;
	}
	return rc == SQLITE_DONE ? 0 : catalog_fail(c, rc, "id block check");
}

int catalog_idblocks_convert(Catalog *c, uint64_t *ret_n)
{
	_cleanup_free_ int64_t *v = NULL;
	size_t n = 0, cap = 0;
	int rc, r;

	if (!c->idblocks)
		return -EINVAL;
	r = catalog_begin(c);
	if (r < 0)
		return r;
	{
		_cleanup_stmt_ sqlite3_stmt *s = NULL;
		r = prepare(c, "SELECT id FROM contents WHERE blocks = 0 AND n > ?1", &s);
		if (r == 0)
			sqlite3_bind_int(s, 1, PGBAKFS_IDBLOCK_IDS);
		while (r == 0 && (rc = sqlite3_step(s)) == SQLITE_ROW) {
			if (n == cap) {
				int64_t *nv = realloc(v, (cap = cap ? 2 * cap : 64) * sizeof(*v));
				if (!nv) {
					r = -ENOMEM;
					break;
				}
				v = nv;
			}
			v[n++] = sqlite3_column_int64(s, 0);
		}
		if (r == 0 && rc != SQLITE_DONE)
			r = catalog_fail(c, rc, "contents to convert");
	}
	for (size_t i = 0; i < n && r == 0; i++) {
		_cleanup_free_ ChunkId *ids = NULL;
		_cleanup_free_ uint8_t *list = NULL;
		_cleanup_stmt_ sqlite3_stmt *u = NULL;
		size_t k = 0, bytes = 0;
		int form = 0;
		r = catalog_content_get(c, v[i], &ids, &k);
		if (r == 0 && !(form = list_form_new(c, k)))
			r = -EIO; /* more than PGBAKFS_IDBLOCK_IDS ids: a block form */
		if (r == 0)
			r = content_blocks_list(c, ids, k, form, &list, &bytes);
		if (r == 0)
			r = prepare(c, "UPDATE contents SET list = ?2, blocks = ?3 WHERE id = ?1", &u);
		if (r == 0) {
			sqlite3_bind_int64(u, 1, v[i]);
			sqlite3_bind_blob64(u, 2, list, bytes, SQLITE_STATIC);
			sqlite3_bind_int(u, 3, form);
			r = step_done(c, u);
		}
	}
	if (r == 0)
		r = catalog_commit(c);
	if (r < 0) {
		catalog_rollback(c);
		return r;
	}
	*ret_n = n;
	return 0;
}

int catalog_idblocks_inline_count(Catalog *c, uint64_t *ret_n)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int r = prepare(c, "SELECT count(*) FROM contents WHERE blocks = 0 AND n > ?1", &s);
	if (r < 0)
		return r;
	sqlite3_bind_int(s, 1, PGBAKFS_IDBLOCK_IDS);
	if (sqlite3_step(s) != SQLITE_ROW)
		return catalog_fail(c, sqlite3_errcode(c->db), "inline count");
	*ret_n = (uint64_t)sqlite3_column_int64(s, 0);
	return 0;
}

/*
 * Carriers. Every block is in the manifest of exactly one committed
 * snapshot, its carrier, so a manifest never repeats what its parent's
 * already holds. A block whose carrier is unset (new) or no longer
 * committed (deleted, purged) moves to the lowest-rowid committed snapshot
 * that uses it; cb learns each snapshot whose manifest must be rewritten,
 * inside the same transaction, so the move and the rewrite mark commit
 * together.
 */
static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

/*
 * Items of table (idblocks, contents, dirs) without a committed carrier: their
 * rowids, sorted, each with a flag set once it is placed.
 */
typedef struct Orphans {
	int64_t *v;
	bool *placed;
	size_t n, left;
	sqlite3_stmt *upd;
} Orphans;

static void orphans_clear(Orphans *o)
{
	free(o->v);
	free(o->placed);
	sqlite3_finalize(o->upd);
}

static int orphans_load(Catalog *c, const char *table, bool only_new, Orphans *o)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	_cleanup_free_ char *sql = NULL, *upd = NULL;
	size_t cap = 0;
	int rc, r;

	/* only_new: by the carrier index; else a scan of the table */
	if (asprintf(&sql, "SELECT id FROM %s WHERE carrier IS NULL%s ORDER BY id", table,
		     only_new ? "" : " OR carrier NOT IN (SELECT id FROM snapshots WHERE " VISIBLE ")")
		< 0 ||
	    asprintf(&upd, "UPDATE %s SET carrier = ?2 WHERE id = ?1", table) < 0)
		return -ENOMEM;
	r = prepare(c, sql, &s);
	if (r == 0)
		r = prepare(c, upd, &o->upd);
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (o->n == cap) {
			int64_t *nv = realloc(o->v, (cap = cap ? 2 * cap : 64) * sizeof(*nv));
			if (!nv)
				return -ENOMEM;
			o->v = nv;
		}
		o->v[o->n++] = sqlite3_column_int64(s, 0);
	}
	if (rc != SQLITE_DONE)
		return catalog_fail(c, rc, "orphans");
	o->left = o->n;
	o->placed = calloc(o->n ? o->n : 1, sizeof(*o->placed));
	return o->placed ? 0 : -ENOMEM;
}

/* The distinct contents of one snapshot's files (rows or a shared tree). */
typedef struct ContentIds {
	int64_t *v;
	size_t n, cap;
} ContentIds;

static int content_ids_row(const FileRow *f, void *userdata)
{
	ContentIds *k = userdata;
	if (!f->content)
		return 0;
	if (k->n == k->cap) {
		size_t cap = k->cap ? 2 * k->cap : 1024;
		int64_t *v = realloc(k->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		k->v = v;
		k->cap = cap;
	}
	k->v[k->n++] = f->content;
	return 0;
}

static int content_ids_of(Catalog *c, int64_t snap, ContentIds *k)
{
	size_t n = 0;
	k->n = 0;
	int r = catalog_file_foreach(c, snap, content_ids_row, k);
	if (r < 0 || k->n == 0)
		return r;
	qsort(k->v, k->n, sizeof(*k->v), cmp_i64);
	for (size_t i = 0; i < k->n; i++)
		if (i == 0 || k->v[i] != k->v[n - 1])
			k->v[n++] = k->v[i];
	k->n = n;
	return 0;
}

/* A set of row ids (open addressing, 0 never stored: contents ids start at 1). */
typedef struct IdSet {
	int64_t *v;
	size_t n, cap; /* cap: a power of two */
} IdSet;

static int id_set_add(IdSet *s, int64_t id, bool *ret_fresh)
{
	if (2 * (s->n + 1) > s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 4096;
		int64_t *v = calloc(cap, sizeof(*v));
		if (!v)
			return -ENOMEM;
		for (size_t i = 0; i < s->cap; i++) {
			if (!s->v[i])
				continue;
			size_t j = ((uint64_t)s->v[i] * 0x9E3779B97F4A7C15ull) & (cap - 1);
			while (v[j])
				j = (j + 1) & (cap - 1);
			v[j] = s->v[i];
		}
		free(s->v);
		s->v = v;
		s->cap = cap;
	}
	size_t j = ((uint64_t)id * 0x9E3779B97F4A7C15ull) & (s->cap - 1);
	while (s->v[j] && s->v[j] != id)
		j = (j + 1) & (s->cap - 1);
	*ret_fresh = !s->v[j];
	if (!s->v[j]) {
		s->v[j] = id;
		s->n++;
	}
	return 0;
}

typedef struct Carry {
	Catalog *c;
	Orphans blocks, contents, dirs;
	IdSet seen_contents, seen_dirs;
	sqlite3_stmt *list;
	int64_t snap;
	const char *name;
	bool marked; /* cb was called for snap */
	/* only never-carried items are orphans (from_snap > 0, format 3): a carried directory
	 * or list had everything it reaches carried with it, so it is not read */
	bool prune;
	CatalogCarrierFn cb;
	void *ud;
} Carry;

static size_t carry_left(const Carry *k) { return k->blocks.left + k->contents.left + k->dirs.left; }

/* Where id is among the orphans, or NULL. */
static int64_t *orphan_find(const Orphans *o, int64_t id)
{
	return o->n ? bsearch(&id, o->v, o->n, sizeof(*o->v), cmp_i64) : NULL;
}

static bool is_orphan(const Orphans *o, int64_t id) { return orphan_find(o, id) != NULL; }

/* id goes to the snapshot being scanned if it is an orphan not placed yet. */
static int carry_place(Carry *k, Orphans *o, int64_t id)
{
	int64_t *hit = orphan_find(o, id);
	int r;
	if (!hit || o->placed[hit - o->v])
		return 0;
	o->placed[hit - o->v] = true;
	o->left--;
	sqlite3_reset(o->upd);
	sqlite3_bind_int64(o->upd, 1, id);
	sqlite3_bind_int64(o->upd, 2, k->snap);
	r = step_done(k->c, o->upd);
	if (r == 0 && !k->marked) {
		k->marked = true;
		r = k->cb(k->snap, k->name, k->ud);
	}
	return r;
}

/* The orphans among the blocks of content go to the snapshot being scanned. */
static int carry_blocks(Carry *k, int64_t content)
{
	int rc, r = 0;
	sqlite3_reset(k->list);
	sqlite3_bind_int64(k->list, 1, content);
	rc = sqlite3_step(k->list);
	if (rc != SQLITE_ROW) {
		sqlite3_reset(k->list);
		return rc == SQLITE_DONE ? 0 : catalog_fail(k->c, rc, "carriers");
	}
	_cleanup_free_ int64_t *v = NULL;
	size_t nb = 0;
	r = list_rowids(k->list, &v, &nb);
	for (size_t i = 0; i < nb && k->blocks.left > 0 && r == 0; i++)
		r = carry_place(k, &k->blocks, v[i]);
	sqlite3_reset(k->list);
	return r;
}

/* A content met for the first time in this scan: it, then its blocks. */
static int carry_content(int64_t content, void *ud)
{
	Carry *k = ud;
	bool fresh = false;
	int r = id_set_add(&k->seen_contents, content, &fresh);
	if (r < 0 || !fresh || (k->prune && !is_orphan(&k->contents, content)))
		return r;
	r = carry_place(k, &k->contents, content);
	if (r == 0 && k->blocks.left > 0)
		r = carry_blocks(k, content);
	return r;
}

/* A directory met before was walked then, with all it reaches: 1 skips it. */
static int carry_dir(int64_t dir, void *ud)
{
	Carry *k = ud;
	bool fresh = false;
	int r = id_set_add(&k->seen_dirs, dir, &fresh);
	if (r < 0)
		return r;
	if (!fresh || (k->prune && !is_orphan(&k->dirs, dir)))
		return 1;
	return carry_place(k, &k->dirs, dir);
}

static int carry_snapshot(Carry *k, int64_t tree, ContentIds *ids)
{
	int r;
	if (tree)
		return catalog_tree_walk_ids(k->c, tree, carry_dir, carry_content, k);
	r = content_ids_of(k->c, k->snap, ids);
	for (size_t i = 0; r == 0 && i < ids->n && carry_left(k) > 0; i++)
		r = carry_content(ids->v[i], k);
	return r;
}

static int assign_carriers(Catalog *c, int64_t from_snap, CatalogCarrierFn cb, void *ud)
{
	_cleanup_stmt_ sqlite3_stmt *snaps = NULL;
	ContentIds ids = {0};
	Carry k = {.c = c, .cb = cb, .ud = ud};
	bool only_new = from_snap > 0;
	int rc = SQLITE_DONE, r = orphans_load(c, "idblocks", only_new, &k.blocks);

	k.prune = only_new && c->format >= 3;
	/* format 3: manifests carry contents and directories once too */
	if (r == 0 && c->format >= 3)
		r = orphans_load(c, "contents", only_new, &k.contents);
	if (r == 0 && c->format >= 3)
		r = orphans_load(c, "dirs", only_new, &k.dirs);
	/* oldest first: an item goes to the first snapshot that uses it (a child's manifest
	 * does not repeat its parent's); what an earlier snapshot reached is not read again */
	if (r == 0 && carry_left(&k) > 0)
		r = prepare(c, "SELECT id, name, tree FROM snapshots WHERE " VISIBLE " AND id >= ?1"
			    " ORDER BY id", &snaps);
	if (r == 0 && carry_left(&k) > 0)
		sqlite3_bind_int64(snaps, 1, from_snap);
	if (r == 0 && carry_left(&k) > 0)
		r = prepare(c, "SELECT n, list, blocks FROM contents WHERE id = ?1 AND blocks <> 0",
			    &k.list);
	while (r == 0 && carry_left(&k) > 0 && (rc = sqlite3_step(snaps)) == SQLITE_ROW) {
		k.snap = sqlite3_column_int64(snaps, 0);
		k.name = (const char *)sqlite3_column_text(snaps, 1);
		k.marked = false;
		r = carry_snapshot(&k, sqlite3_column_int64(snaps, 2), &ids);
	}
	sqlite3_finalize(k.list);
	orphans_clear(&k.blocks);
	orphans_clear(&k.contents);
	orphans_clear(&k.dirs);
	free(ids.v);
	free(k.seen_contents.v);
	free(k.seen_dirs.v);
	if (r < 0)
		return r;
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : catalog_fail(c, rc, "carriers");
}

int catalog_idblocks_assign_carriers(Catalog *c, int64_t from_snap, CatalogCarrierFn cb, void *ud)
{
	int r = catalog_begin(c);
	if (r < 0)
		return r;
	r = assign_carriers(c, from_snap, cb, ud);
	if (r == 0)
		r = catalog_commit(c);
	if (r < 0)
		catalog_rollback(c);
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

typedef struct WalSeg {
	uint64_t pg_wal, size;
} WalSeg;

static bool wal_name(const char *name)
{
	size_t n = strlen(name);
	return n == 24 && strspn(name, "0123456789ABCDEF") == n;
}

static int wal_seg_row(const FileRow *f, void *userdata)
{
	WalSeg *w = userdata;
	if (f->parent == 1 && f->ino != 1 && S_ISDIR(f->mode) && strcmp(f->name, "pg_wal") == 0)
		w->pg_wal = f->ino;
	else if (w->pg_wal && f->parent == w->pg_wal && S_ISREG(f->mode) && wal_name(f->name))
		w->size = MAX(w->size, f->size);
	return 0;
}

int catalog_snapshot_wal_seg_size(Catalog *c, int64_t rowid, uint64_t *ret)
{
	/* regular files named like WAL segments in the data directory's pg_wal */
	WalSeg w = {0};
	int r = catalog_file_foreach(c, rowid, wal_seg_row, &w);
	if (r < 0)
		return r;
	if (w.size < (1u << 20) || w.size > (1u << 30) || (w.size & (w.size - 1)))
		return -ENOENT;
	*ret = w.size;
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
bool catalog_file_row_valid(const FileRow *f, size_t name_len)
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

	if (!catalog_file_row_valid(f, f->name ? strlen(f->name) : 0))
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
	if (!catalog_file_row_valid(f, name_len) || (dirs->n == 0) != root ||
	    (!root && !extra && !dir_set_has(dirs, f->parent)))
		return -EBADMSG;
	return S_ISDIR(f->mode) ? dir_set_add(dirs, f->ino) : 0;
}

/* The snapshot's shared tree (0: none, its rows are in files). */
static int snapshot_tree(Catalog *c, int64_t snap, int64_t *ret)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int rc, r = prepare(c, "SELECT tree FROM snapshots WHERE id = ?1", &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, snap);
	rc = sqlite3_step(s);
	*ret = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : catalog_fail(c, rc, "snapshot tree");
}

int catalog_file_foreach(Catalog *c, int64_t snap, CatalogFileFn cb, void *userdata)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	DirSet dirs = {0};
	int64_t tree;
	int rc, r = snapshot_tree(c, snap, &tree);
	if (r == 0 && tree)
		return catalog_tree_foreach(c, tree, cb, userdata);
	if (r == 0)
		r = prepare(c, statement_sql[ST_FILE_LIST], &s);
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

int catalog_dir_get(Catalog *c, int64_t snap, uint64_t ino, FileRow *ret,
		    uint32_t *ret_n_subdirs)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int64_t tree;
	int e = snapshot_tree(c, snap, &tree);
	if (e < 0)
		return e;
	if (tree) /* a shared tree: its root without the walk; other rows need the tree */
		return ino == 1 ? catalog_tree_root(c, tree, ret, ret_n_subdirs) : -ENOENT;
	/* both through the primary key and files_dir (snap, parent, name) */
	int rc, r = prepare(c, "SELECT parent, mode, uid, gid, mtime, size,"
			       " (SELECT count(*) FROM files d WHERE d.snap = ?1 AND d.parent = ?2"
			       "  AND d.ino != ?2 AND (d.mode & 61440) = 16384)"
			       " FROM files WHERE snap = ?1 AND ino = ?2", &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, snap);
	sqlite3_bind_int64(s, 2, (int64_t)ino);
	rc = sqlite3_step(s);
	if (rc == SQLITE_DONE)
		return -ENOENT;
	if (rc != SQLITE_ROW)
		return catalog_fail(c, rc, "directory lookup");
	FileRow f = {.ino = ino,
		     .parent = (uint64_t)sqlite3_column_int64(s, 0),
		     .mode = (uint32_t)sqlite3_column_int64(s, 1),
		     .uid = (uint32_t)sqlite3_column_int64(s, 2),
		     .gid = (uint32_t)sqlite3_column_int64(s, 3),
		     .mtime_ns = sqlite3_column_int64(s, 4),
		     .size = (uint64_t)sqlite3_column_int64(s, 5)};
	if (!S_ISDIR(f.mode))
		return -ENOTDIR;
	*ret = f;
	*ret_n_subdirs = (uint32_t)sqlite3_column_int64(s, 6);
	return 0;
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
#define BOTH(x) "SELECT (SELECT " x " FROM chunks) + (SELECT " x " FROM chunks_overflow)"
	if (!r) r = query_u64(c, BOTH("count(*)"), &v.n_chunks);
	if (!r) r = query_u64(c, BOTH("coalesce(sum(plen), 0)"), &v.chunk_plain_bytes);
	if (!r) r = query_u64(c, BOTH("coalesce(sum(elen), 0)"), &v.chunk_stored_bytes);
#undef BOTH
	if (!r) r = query_u64(c, "SELECT count(*) FROM contents", &v.n_contents);
	/* file rows of running and older snapshots, and entries of shared directories (a
	 * directory stored as entry blocks counts them there, not again in its list) */
	if (!r) r = query_u64(c, "SELECT (SELECT count(*) FROM files) +"
			      " (SELECT coalesce(sum(n), 0) FROM dirs"
			      "  WHERE substr(entries, 1, 1) <> x'02')", &v.n_files);
	if (!r) r = query_u64(c, "SELECT count(*) FROM idblocks", &v.n_idblocks);
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

static int live_add(Catalog *c, sqlite3_stmt *ins, const ChunkId *ids, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int r;
		if (chunk_id_is_hole(&ids[i]))
			continue;
		chunk_bind_id(c, ins, 1, &ids[i]);
		r = step_done(c, ins);
		if (r < 0)
			return r;
	}
	return 0;
}

/*
 * Fill temp table live(k, tail) with every chunk id of every remaining content:
 * the inline lists, and every id block (after the unreferenced ones went,
 * each remaining block belongs to some content).
 */
static int gc_build_live_set(Catalog *c)
{
	_cleanup_stmt_ sqlite3_stmt *sel = NULL, *blk = NULL, *ins = NULL;
	int rc, r = exec_sql(c, c->keyed ? "DROP TABLE IF EXISTS temp.live; CREATE TEMP TABLE live("
					   "k INTEGER NOT NULL, tail BLOB NOT NULL, PRIMARY KEY(k, tail))"
					   " WITHOUT ROWID;"
					 : "DROP TABLE IF EXISTS temp.live; CREATE TEMP TABLE live("
					   "id BLOB PRIMARY KEY, tail) WITHOUT ROWID;");
	if (r == 0)
		r = prepare(c, "SELECT n, list FROM contents WHERE blocks = 0", &sel);
	if (r == 0)
		r = prepare(c, "SELECT n, ids FROM idblocks", &blk);
	if (r == 0)
		r = prepare(c, "INSERT OR IGNORE INTO live VALUES(?1, ?2)", &ins);
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(sel)) == SQLITE_ROW) {
		size_t n = (size_t)sqlite3_column_int64(sel, 0);
		if ((size_t)sqlite3_column_bytes(sel, 1) != n * sizeof(ChunkId))
			return -EBADMSG;
		r = live_add(c, ins, sqlite3_column_blob(sel, 1), n);
		if (r < 0)
			return r;
	}
	if (rc != SQLITE_DONE)
		return catalog_fail(c, rc, "gc live set");
	while ((rc = sqlite3_step(blk)) == SQLITE_ROW) {
		size_t n = (size_t)sqlite3_column_int64(blk, 0);
		size_t bytes = (size_t)sqlite3_column_bytes(blk, 1);
		/* a placeholder repair left names no ids: its chunks are not known to be live */
		if (bytes == 0)
			continue;
		if (bytes != n * sizeof(ChunkId))
			return -EBADMSG;
		r = live_add(c, ins, sqlite3_column_blob(blk, 1), n);
		if (r < 0)
			return r;
	}
	return rc == SQLITE_DONE ? 0 : catalog_fail(c, rc, "gc live set");
}

/* Id blocks that no content names any more go (contents and blocks change together). */
static int gc_idblocks(Catalog *c, uint64_t *ret_n)
{
	_cleanup_stmt_ sqlite3_stmt *sel = NULL, *ins = NULL;
	int rc, r = exec_sql(c, "CREATE TEMP TABLE IF NOT EXISTS live_blocks(id INTEGER PRIMARY KEY);"
				"DELETE FROM live_blocks;");
	if (r == 0)
		r = prepare(c, "SELECT n, list, blocks FROM contents WHERE blocks <> 0", &sel);
	if (r == 0)
		r = prepare(c, "INSERT OR IGNORE INTO live_blocks VALUES(?1)", &ins);
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(sel)) == SQLITE_ROW) {
		_cleanup_free_ int64_t *v = NULL;
		size_t nb = 0;
		r = list_rowids(sel, &v, &nb); /* a list not read whole: nothing is deleted */
		for (size_t i = 0; i < nb && r == 0; i++) {
			sqlite3_bind_int64(ins, 1, v[i]);
			r = step_done(c, ins);
		}
		if (r < 0)
			return r;
	}
	if (rc != SQLITE_DONE)
		return catalog_fail(c, rc, "gc id blocks");
	r = exec_sql(c, "DELETE FROM idblocks WHERE id NOT IN (SELECT id FROM live_blocks)");
	if (r == 0)
		*ret_n = (uint64_t)sqlite3_changes(c->db);
	return r;
}

/*
 * Every session, mounts and restores too, may have located a chunk in a pack
 * before gc --repack moved it out and read it afterwards: a retired pack goes
 * once every live session registered after the move (epoch >= retired).
 */
#define PACK_EMPTY "(NOT EXISTS (SELECT 1 FROM chunks WHERE pack = packs.id) AND NOT EXISTS" \
	" (SELECT 1 FROM chunks_overflow WHERE pack = packs.id))"
#define RETIRED_DEAD "(state = 'retired' AND retired <= ?1 AND " PACK_EMPTY ")"

static int gc_retired_limit(Catalog *c, int64_t *ret)
{
	uint64_t n = 0, min_epoch = 0;
	int r = query_u64(c, "SELECT count(*) FROM sessions", &n);
	if (r == 0)
		r = query_u64(c, "SELECT coalesce(min(epoch), 0) FROM sessions", &min_epoch);
	if (r == 0)
		*ret = n ? (int64_t)min_epoch : INT64_MAX;
	return r;
}

static int gc_collect_packs(Catalog *c, const char *sql, CatalogGcResult *res)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int64_t limit = INT64_MAX;
	int rc, r = gc_retired_limit(c, &limit);
	if (r == 0)
		r = prepare(c, sql, &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, limit);
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

static int gc_collect_dead_packs(Catalog *c, CatalogGcResult *res)
{
	return gc_collect_packs(c, "SELECT id, name FROM packs WHERE"
			       " (state = 'ok' AND " PACK_EMPTY ")"
			       " OR (state = 'pending' AND NOT EXISTS"
			       "     (SELECT 1 FROM sessions WHERE id = packs.session))"
			       " OR " RETIRED_DEAD, res);
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
	uint64_t min_epoch = 0, n_sessions = 0;
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int r;

	/* mounts never add references: they hold whole snapshots instead (holds) */
	r = query_u64(c, "SELECT count(*) FROM sessions WHERE kind <> 'mount'", &n_sessions);
	if (r == 0)
		r = gc_purge_deleted(c, &res->snapshots_purged);
	/* directories no remaining snapshot reaches (a damaged one stops gc: -EBADMSG) */
	if (r == 0)
		r = catalog_tree_mark_live(c);
	if (r == 0)
		r = exec_sql(c, "DELETE FROM dirs WHERE id NOT IN (SELECT id FROM live_dirs)");
	if (r < 0)
		return r;
	/*
	 * A running incremental backup may reuse a content list it found in its
	 * parent and insert the file row later: unreferenced contents (and so
	 * their chunks) are kept while any session lives.
	 */
	if (n_sessions == 0) {
		r = exec_sql(c, "DELETE FROM contents WHERE NOT EXISTS"
				" (SELECT 1 FROM files WHERE files.content = contents.id)"
				" AND id NOT IN (SELECT id FROM live_contents)");
		if (r < 0)
			return r;
		res->contents_deleted = (uint64_t)sqlite3_changes(c->db);
	}
	r = gc_idblocks(c, &res->idblocks_deleted);
	if (r == 0)
		r = gc_build_live_set(c);
	if (r == 0)
		r = meta_get_int(c, "epoch", &epoch);
	if (r == 0)
		r = meta_set_int(c, "epoch", ++epoch);
	for (size_t i = 0; r == 0 && i < 2; i++) {
		char sql[256];
		const char *key = c->keyed ? "(k, tail)" : "id", *sel = c->keyed ? "k, tail" : "id";
		if (!c->keyed && i > 0)
			break;
		snprintf(sql, sizeof(sql), "UPDATE %s SET condemned = NULL WHERE condemned IS NOT NULL"
			 " AND %s IN (SELECT %s FROM live)", chunk_tables[i], key, sel);
		r = exec_sql(c, sql);
		snprintf(sql, sizeof(sql), "UPDATE %s SET condemned = ?1 WHERE condemned IS NULL"
			 " AND %s NOT IN (SELECT %s FROM live)", chunk_tables[i], key, sel);
		if (r == 0)
			r = exec_bound_int(c, sql, epoch);
		res->chunks_condemned += r == 0 ? (uint64_t)sqlite3_changes(c->db) : 0;
	}
	if (r == 0)
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
	r = prepare(c, "SELECT count(*), coalesce(sum(elen), 0) FROM (SELECT elen, condemned FROM"
		       " chunks UNION ALL SELECT elen, condemned FROM chunks_overflow) WHERE"
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
		r = exec_bound_int(c, "DELETE FROM chunks_overflow WHERE condemned IS NOT NULL AND"
				      " condemned <= ?1", limit);
	if (r == 0)
		r = query_u64(c, "SELECT (SELECT count(*) FROM chunks WHERE condemned IS NOT NULL) +"
			      " (SELECT count(*) FROM chunks_overflow WHERE condemned IS NOT NULL)",
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

int catalog_gc_retired(Catalog *c, CatalogGcResult *ret)
{
	CatalogGcResult res = {0};
	int r = catalog_begin(c);
	if (r < 0)
		return r;
	r = gc_collect_packs(c, "SELECT id, name FROM packs WHERE " RETIRED_DEAD, &res);
	if (r == 0)
		r = query_u64(c, "SELECT count(*) FROM packs WHERE state = 'retired'",
			      &res.packs_retired_waiting);
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

/*
 * A full VACUUM, not auto_vacuum=INCREMENTAL: that mode must be chosen before
 * the tables exist (an existing catalog needs a VACUUM to switch anyway), it
 * keeps a pointer map up to date on every commit of every backup, and
 * incremental_vacuum only moves pages to fill holes: it never defragments.
 * A VACUUM when a quarter of the file (or 64 MiB) is free rewrites the
 * catalog once per that much freed: its cost follows what gc deleted. In WAL
 * mode it is one write transaction: readers (mounts, restores) keep reading
 * their snapshot of the file, a backup's writer waits for it (busy timeout).
 * The file shrinks when a checkpoint copies the whole WAL back: at once when
 * no reader is in the way, else at a later checkpoint.
 */
int catalog_vacuum_sparse(Catalog *c, uint64_t *ret_freed)
{
	uint64_t page_size = 0, pages = 0, free_pages = 0, after = 0;
	int r;

	if (!sqlite3_get_autocommit(c->db))
		return -EINVAL;
	r = query_u64(c, "PRAGMA page_size", &page_size);
	if (r == 0)
		r = query_u64(c, "PRAGMA page_count", &pages);
	if (r == 0)
		r = query_u64(c, "PRAGMA freelist_count", &free_pages);
	if (r < 0)
		return r;
	*ret_freed = 0;
	if (free_pages * 4 <= pages && free_pages * page_size <= CATALOG_VACUUM_FREE_BYTES)
		return 0;
	r = exec_sql(c, "VACUUM");
	if (r == 0)
		r = query_u64(c, "PRAGMA page_count", &after);
	if (r < 0)
		return r;
	if (sqlite3_exec(c->db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL) != SQLITE_OK)
		log_debug("catalog: could not truncate the WAL after VACUUM: %s", sqlite3_errmsg(c->db));
	*ret_freed = pages > after ? (pages - after) * page_size : 0;
	return 0;
}

int catalog_repack_candidates(Catalog *c, unsigned pct, CatalogRepackPack **ret, size_t *ret_n)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	_cleanup_free_ CatalogRepackPack *v = NULL;
	size_t n = 0, cap = 0;
	/* condemned chunks wait for a backup that may still reference them: such a pack waits too */
	int rc, r = prepare(c, "SELECT p.id, p.name, p.size, c.live, c.n FROM packs p JOIN"
			       " (SELECT pack, sum(elen) AS live, count(*) AS n, count(condemned) AS nc"
			       " FROM (SELECT pack, elen, condemned FROM chunks UNION ALL"
			       " SELECT pack, elen, condemned FROM chunks_overflow) GROUP BY pack) c"
			       " ON c.pack = p.id WHERE p.state = 'ok' AND c.nc = 0"
			       " AND c.live * 100 < ?1 * p.size ORDER BY p.id", &s);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, pct);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (n == cap) {
			size_t ncap = cap ? 2 * cap : 64;
			CatalogRepackPack *nv = realloc(v, ncap * sizeof(*nv));
			if (!nv)
				return -ENOMEM;
			v = nv;
			cap = ncap;
		}
		v[n].id = sqlite3_column_int64(s, 0);
		snprintf(v[n].name, sizeof(v[n].name), "%s", (const char *)sqlite3_column_text(s, 1));
		v[n].size = (uint64_t)sqlite3_column_int64(s, 2);
		v[n].live_bytes = (uint64_t)sqlite3_column_int64(s, 3);
		v[n].n_chunks = (uint64_t)sqlite3_column_int64(s, 4);
		n++;
	}
	if (rc != SQLITE_DONE)
		return catalog_fail(c, rc, "repack candidates");
	*ret = TAKE_PTR(v);
	*ret_n = n;
	return 0;
}

int catalog_pack_live_chunks(Catalog *c, int64_t pack_id, PackEntry **ret, size_t *ret_n)
{
	return pack_entries(c, c->keyed ? "SELECT k, tail, offset, elen, plen, enc, crc FROM chunks"
					  " WHERE pack = ?1 AND condemned IS NULL UNION ALL SELECT k,"
					  " tail, offset, elen, plen, enc, crc FROM chunks_overflow"
					  " WHERE pack = ?1 AND condemned IS NULL ORDER BY offset"
					: "SELECT id, NULL, offset, elen, plen, enc, crc FROM chunks"
					  " WHERE pack = ?1 AND condemned IS NULL ORDER BY offset",
			    pack_id, ret, ret_n);
}

static int pack_move_tx(Catalog *c, int64_t pack_id, uint64_t size, const PackEntry *e, size_t n,
			const int64_t *old, size_t n_old)
{
	_cleanup_stmt_ sqlite3_stmt *mv = NULL, *mvo = NULL, *left = NULL, *ret = NULL;
	int64_t epoch;
#define MOVE(t) "UPDATE " t " SET pack = ?3, offset = ?4 WHERE k = ?1 AND tail = ?2 AND"    \
	" condemned IS NULL AND elen = ?5 AND plen = ?6 AND enc = ?7 AND pack IN" \
	" (SELECT value FROM json_each(?8))"
	int r = prepare(c, c->keyed ? MOVE("chunks") : "UPDATE chunks SET pack = ?3, offset = ?4"
			   " WHERE id = ?1 AND condemned IS NULL AND elen = ?5 AND plen = ?6 AND"
			   " enc = ?7 AND pack IN (SELECT value FROM json_each(?8))", &mv);
	if (r == 0)
		r = prepare(c, MOVE("chunks_overflow"), &mvo);
#undef MOVE
	_cleanup_free_ char *olds = NULL;
	size_t len = 3;

	/* the old packs as a JSON array: a statement prepared once for any number */
	for (size_t i = 0; i < n_old; i++)
		len += 21;
	olds = malloc(len);
	if (!olds)
		return -ENOMEM;
	len = (size_t)sprintf(olds, "[");
	for (size_t i = 0; i < n_old; i++)
		len += (size_t)sprintf(olds + len, "%s%lld", i ? "," : "", (long long)old[i]);
	sprintf(olds + len, "]");
	for (size_t i = 0; r == 0 && i < n; i++) {
		int moved = 0;
		for (int t = 0; t < 2 && r == 0 && !moved; t++) {
			sqlite3_stmt *s = t ? mvo : mv;
			if (t && !c->keyed)
				break;
			sqlite3_reset(s);
			chunk_bind_id(c, s, 1, &e[i].id);
			sqlite3_bind_int64(s, 3, pack_id);
			sqlite3_bind_int64(s, 4, (int64_t)e[i].offset);
			sqlite3_bind_int64(s, 5, e[i].elen);
			sqlite3_bind_int64(s, 6, e[i].plen);
			sqlite3_bind_int(s, 7, e[i].enc);
			sqlite3_bind_text(s, 8, olds, -1, SQLITE_STATIC);
			r = step_done(c, s);
			moved = r == 0 ? sqlite3_changes(c->db) : 0;
		}
		if (r == 0 && moved != 1)
			r = -ESTALE; /* the chunk is no longer where it was read */
	}
	if (r == 0) {
		sqlite3_stmt *s = stmt_get(c, ST_PACK_RECORD, &r);
		if (s) {
			sqlite3_bind_int64(s, 1, pack_id);
			sqlite3_bind_int64(s, 2, (int64_t)size);
			sqlite3_bind_int64(s, 3, (int64_t)n);
			r = step_done(c, s);
		}
	}
	/* sessions registered from here on locate the chunks in the new pack */
	if (r == 0)
		r = meta_get_int(c, "epoch", &epoch);
	if (r == 0)
		r = meta_set_int(c, "epoch", ++epoch);
	if (r == 0)
		r = prepare(c, "SELECT (SELECT count(*) FROM chunks WHERE pack = ?1) +"
			       " (SELECT count(*) FROM chunks_overflow WHERE pack = ?1)", &left);
	if (r == 0)
		r = prepare(c, "UPDATE packs SET state = 'retired', retired = ?2 WHERE id = ?1"
			       " AND state = 'ok'", &ret);
	for (size_t i = 0; r == 0 && i < n_old; i++) {
		sqlite3_reset(left);
		sqlite3_bind_int64(left, 1, old[i]);
		if (sqlite3_step(left) != SQLITE_ROW)
			return catalog_fail(c, sqlite3_errcode(c->db), "pack move");
		if (sqlite3_column_int64(left, 0) != 0)
			return -ESTALE; /* a chunk would be left behind in a pack about to go */
		sqlite3_reset(ret);
		sqlite3_bind_int64(ret, 1, old[i]);
		sqlite3_bind_int64(ret, 2, epoch);
		r = step_done(c, ret);
		if (r == 0 && sqlite3_changes(c->db) != 1)
			r = -ESTALE;
	}
	return r;
}

int catalog_pack_move(Catalog *c, int64_t pack_id, uint64_t size, const PackEntry *e, size_t n,
		      const int64_t *old, size_t n_old)
{
	int r = catalog_begin(c);
	if (r < 0)
		return r;
	r = pack_move_tx(c, pack_id, size, e, n, old, n_old);
	if (r == 0)
		r = catalog_commit(c);
	if (r < 0)
		catalog_rollback(c);
	return r;
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

/* One visible snapshot at a time, its rows from catalog_file_foreach (files or a shared tree). */
typedef int (*VisibleFn)(Catalog *c, int64_t rowid, const char *name, void *userdata);

static int foreach_visible(Catalog *c, VisibleFn fn, void *userdata)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int rc, r = prepare(c, "SELECT id, name FROM snapshots WHERE " VISIBLE " ORDER BY id", &s);
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		r = fn(c, sqlite3_column_int64(s, 0), (const char *)sqlite3_column_text(s, 1), userdata);
		if (r < 0)
			return r;
	}
	return rc == SQLITE_DONE ? 0 : catalog_fail(c, rc, "snapshots");
}

/* Contents already looked at, and what was found (0 or 1), in a temp table. */
static int seen_prepare(Catalog *c, const char *table, sqlite3_stmt **get, sqlite3_stmt **put)
{
	char sql[256];
	snprintf(sql, sizeof(sql), "CREATE TEMP TABLE IF NOT EXISTS %s(id INTEGER PRIMARY KEY,"
		 " v INTEGER NOT NULL); DELETE FROM %s;", table, table);
	int r = exec_sql(c, sql);
	if (r == 0) {
		snprintf(sql, sizeof(sql), "SELECT v FROM %s WHERE id = ?1", table);
		r = prepare(c, sql, get);
	}
	if (r == 0) {
		snprintf(sql, sizeof(sql), "INSERT OR REPLACE INTO %s VALUES(?1, ?2)", table);
		r = prepare(c, sql, put);
	}
	return r;
}

/* -ENOENT: not seen yet. */
static int seen_get(Catalog *c, sqlite3_stmt *get, int64_t id, int *ret)
{
	sqlite3_reset(get);
	sqlite3_bind_int64(get, 1, id);
	int rc = sqlite3_step(get);
	if (rc == SQLITE_ROW)
		*ret = sqlite3_column_int(get, 0);
	sqlite3_reset(get);
	return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : catalog_fail(c, rc, "seen");
}

static int seen_put(Catalog *c, sqlite3_stmt *put, int64_t id, int v)
{
	sqlite3_reset(put);
	sqlite3_bind_int64(put, 1, id);
	sqlite3_bind_int(put, 2, v);
	return step_done(c, put);
}

typedef struct Damage {
	const ChunkId *sorted;
	size_t n;
	CatalogDamageFn cb;
	void *ud;
	sqlite3_stmt *get, *put;
	Catalog *c;
	const char *snap;
	DirPaths dirs;
} Damage;

static int id_cmp(const void *a, const void *b) { return chunk_id_cmp(a, b); }

/* Does content id use any chunk of the damaged set? (remembered per content) */
static int damage_hit(Damage *d, int64_t content, bool *ret)
{
	_cleanup_free_ ChunkId *list = NULL;
	size_t n;
	int v = 0, r = seen_get(d->c, d->get, content, &v);
	if (r == 0) {
		*ret = v;
		return 0;
	}
	if (r != -ENOENT)
		return r;
	r = catalog_content_get(d->c, content, &list, &n);
	if (r == -EBADMSG) { /* a list that cannot be read whole is a damaged file too */
		*ret = true;
		return seen_put(d->c, d->put, content, 1);
	}
	if (r < 0)
		return r;
	*ret = false;
	for (size_t i = 0; i < n && !*ret; i++)
		*ret = bsearch(&list[i], d->sorted, d->n, sizeof(*d->sorted), id_cmp) != NULL;
	return seen_put(d->c, d->put, content, *ret);
}

static int damage_row(const FileRow *f, void *userdata)
{
	Damage *d = userdata;
	char *path;
	bool hit = false;
	int r = dir_paths_join(&d->dirs, f, &path);
	if (r < 0)
		return r;
	if (S_ISDIR(f->mode)) {
		r = dir_paths_add(&d->dirs, f->ino, path);
		if (r < 0)
			free(path);
		return r;
	}
	if (f->content)
		r = damage_hit(d, f->content, &hit);
	if (r == 0 && hit)
		r = d->cb(d->snap, path, d->ud);
	free(path);
	return r;
}

static int damage_snapshot(Catalog *c, int64_t rowid, const char *name, void *userdata)
{
	Damage *d = userdata;
	d->snap = name;
	int r = catalog_file_foreach(c, rowid, damage_row, d);
	dir_paths_clear(&d->dirs);
	return r;
}

int catalog_find_damage(Catalog *c, const ChunkId *ids, size_t n, CatalogDamageFn cb, void *ud)
{
	_cleanup_free_ ChunkId *sorted = malloc(n * sizeof(*sorted) + 1);
	Damage d = {.sorted = sorted, .n = n, .cb = cb, .ud = ud, .c = c};
	int r;

	if (!sorted)
		return -ENOMEM;
	memcpy(sorted, ids, n * sizeof(*sorted));
	qsort(sorted, n, sizeof(*sorted), id_cmp);
	r = seen_prepare(c, "damage_seen", &d.get, &d.put);
	if (r == 0)
		r = foreach_visible(c, damage_snapshot, &d);
	sqlite3_finalize(d.get);
	sqlite3_finalize(d.put);
	return r;
}

typedef struct Refs {
	CatalogMissingFn cb;
	void *ud;
	sqlite3_stmt *get, *put;   /* contents whose chunks all have rows */
	sqlite3_stmt *bget, *bput; /* id blocks whose chunks all have rows */
	sqlite3_stmt *list;        /* a content's n, list and form */
	ContentIds contents;
	ChunkId *missing;          /* refs_blocks: a content's chunks without a row */
	size_t n_missing, cap_missing;
} Refs;

static int report_unreadable_blocks(Catalog *c, int64_t content, const char *snap,
				    CatalogMissingFn cb, void *userdata);

/* Does the chunk have a row in a pack that is "ok"? -ENOENT when not. */
static int ref_present(Catalog *c, const ChunkId *id)
{
	ChunkLoc loc;
	return chunk_id_is_hole(id) ? 0 : catalog_chunk_locate(c, id, &loc);
}

static int missing_add(Refs *rf, const ChunkId *id)
{
	if (rf->n_missing == rf->cap_missing) {
		size_t cap = rf->cap_missing ? 2 * rf->cap_missing : 64;
		ChunkId *v = realloc(rf->missing, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		rf->missing = v;
		rf->cap_missing = cap;
	}
	rf->missing[rf->n_missing++] = *id;
	return 0;
}

/*
 * One id block of a content: its chunks without a row into rf->missing, or,
 * when all have one, the block remembered. -EBADMSG when it cannot be read.
 */
static int refs_block(Catalog *c, Refs *rf, int64_t block, size_t n_ids)
{
	ChunkId ids[PGBAKFS_IDBLOCK_IDS];
	bool all = true;
	int v = 0, r = seen_get(c, rf->bget, block, &v);
	if (r != -ENOENT)
		return r; /* 0: checked in an earlier list */
	r = idblock_read(c, block, ids, n_ids, NULL);
	for (size_t i = 0; r == 0 && i < n_ids; i++) {
		r = ref_present(c, &ids[i]);
		if (r == -ENOENT) {
			all = false;
			r = missing_add(rf, &ids[i]);
		}
	}
	return r == 0 && all ? seen_put(c, rf->bput, block, 1) : r;
}

/*
 * A content stored as id blocks, block by block: a block is checked once per
 * check, however many lists share it. A changed file shares all its blocks
 * but one with its parent's list, so each snapshot costs the lookups of its
 * new blocks, not of its whole files (check ran in snapshots x chunks).
 * 1 when handled, with *ret_all; 0 when the content is not in blocks or one
 * cannot be read (refs_content's whole-list path reports it, as before).
 */
static int refs_blocks(Catalog *c, Refs *rf, const char *snap, int64_t content, bool *ret_all)
{
	_cleanup_free_ int64_t *rowids = NULL;
	size_t n, nb = 0;
	int form, rc, r = 0;

	sqlite3_reset(rf->list);
	sqlite3_bind_int64(rf->list, 1, content);
	rc = sqlite3_step(rf->list);
	if (rc != SQLITE_ROW) {
		sqlite3_reset(rf->list);
		return rc == SQLITE_DONE ? 0 : catalog_fail(c, rc, "content get");
	}
	n = (size_t)sqlite3_column_int64(rf->list, 0);
	form = sqlite3_column_int(rf->list, 2);
	if ((form == CATALOG_LIST_BLOCKS || form == CATALOG_LIST_SMALL_BLOCKS) && n > 0)
		r = list_rowids(rf->list, &rowids, &nb);
	sqlite3_reset(rf->list);
	if (r < 0 || nb == 0)
		return r == -EBADMSG ? 0 : r;
	rf->n_missing = 0;
	for (size_t i = 0; r == 0 && i < nb; i++)
		r = refs_block(c, rf, rowids[i], block_len(n, i, form));
	if (r == -EBADMSG)
		return 0;
	for (size_t i = 0; r == 0 && i < rf->n_missing; i++)
		r = rf->cb(snap, &rf->missing[i], rf->ud);
	*ret_all = rf->n_missing == 0;
	return r < 0 ? r : 1;
}

/* Report the chunks of content that have no row; remember a content that has them all. */
static int refs_content(Catalog *c, Refs *rf, const char *snap, int64_t content)
{
	_cleanup_free_ ChunkId *list = NULL;
	size_t n;
	bool all = true;
	int v = 0, r = seen_get(c, rf->get, content, &v);
	if (r != -ENOENT)
		return r; /* 0: every chunk of it was there */
	r = refs_blocks(c, rf, snap, content, &all);
	if (r != 0)
		return r < 0 ? r : all ? seen_put(c, rf->put, content, 1) : 0;
	r = catalog_content_get(c, content, &list, &n);
	if (r == -EBADMSG) /* a block that is missing or damaged: its chunks are unknown, so missing */
		return report_unreadable_blocks(c, content, snap, rf->cb, rf->ud);
	for (size_t i = 0; r == 0 && i < n; i++) {
		/* a chunk row pointing at a pack that is not "ok" is as good as missing */
		r = ref_present(c, &list[i]);
		if (r == -ENOENT) {
			all = false;
			r = rf->cb(snap, &list[i], rf->ud);
		}
	}
	return r == 0 && all ? seen_put(c, rf->put, content, 1) : r;
}

static int refs_snapshot(Catalog *c, int64_t rowid, const char *name, void *userdata)
{
	Refs *rf = userdata;
	int r = content_ids_of(c, rowid, &rf->contents);
	for (size_t i = 0; i < rf->contents.n && r == 0; i++)
		r = refs_content(c, rf, name, rf->contents.v[i]);
	return r;
}

static int report_unreadable_blocks(Catalog *c, int64_t content, const char *snap,
				    CatalogMissingFn cb, void *userdata)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL, *b = NULL;
	_cleanup_free_ ChunkId *v = malloc(PGBAKFS_IDBLOCK_IDS * sizeof(ChunkId));
	int rc, r = v ? prepare(c, "SELECT n, list, blocks, hash FROM contents WHERE id = ?1", &s)
		      : -ENOMEM;
	if (r == 0)
		r = prepare(c, "SELECT hash, ids FROM idblocks WHERE id = ?1", &b);
	if (r < 0)
		return r;
	sqlite3_bind_int64(s, 1, content);
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW)
		return rc == SQLITE_DONE ? -EBADMSG : catalog_fail(c, rc, "content get");
	size_t n = (size_t)sqlite3_column_int64(s, 0), nb = 0;
	size_t bytes = (size_t)sqlite3_column_bytes(s, 1);
	/* a placeholder for a whole list no manifest carried (catalog_content_find_or_missing) */
	if (sqlite3_column_int(s, 2) == 1 && n == 0 && bytes == 0 &&
	    sqlite3_column_bytes(s, 3) == PGBAKFS_CHUNK_ID_LEN) {
		ChunkId hash;
		memcpy(hash.b, sqlite3_column_blob(s, 3), sizeof(hash.b));
		return cb(snap, &hash, userdata);
	}
	int form = sqlite3_column_int(s, 2);
	_cleanup_free_ int64_t *rowids = NULL;
	if (form == CATALOG_LIST_INLINE || n == 0)
		return -EBADMSG;
	r = list_rowids(s, &rowids, &nb);
	for (size_t i = 0; r == 0 && i < nb; i++) {
		int64_t id = rowids[i];
		ChunkId hash = {0};
		bool found;
		if (idblock_read(c, id, v, block_len(n, i, form), NULL) == 0)
			continue;
		sqlite3_reset(b);
		sqlite3_bind_int64(b, 1, id);
		found = sqlite3_step(b) == SQLITE_ROW;
		if (found && sqlite3_column_bytes(b, 0) == PGBAKFS_CHUNK_ID_LEN)
			memcpy(hash.b, sqlite3_column_blob(b, 0), sizeof(hash.b));
		/* a damaged block is catalog damage (catalog_idblocks_verify), not a missing one */
		if (found && sqlite3_column_bytes(b, 1) > 0)
			continue;
		r = cb(snap, &hash, userdata);
	}
	return r;
}

int catalog_check_references(Catalog *c, CatalogMissingFn cb, void *userdata)
{
	Refs rf = {.cb = cb, .ud = userdata};
	int r = seen_prepare(c, "refs_seen", &rf.get, &rf.put);
	if (r == 0)
		r = seen_prepare(c, "refs_block_seen", &rf.bget, &rf.bput);
	if (r == 0)
		r = prepare(c, "SELECT n, list, blocks FROM contents WHERE id = ?1", &rf.list);
	if (r == 0)
		r = foreach_visible(c, refs_snapshot, &rf);
	sqlite3_finalize(rf.get);
	sqlite3_finalize(rf.put);
	sqlite3_finalize(rf.bget);
	sqlite3_finalize(rf.bput);
	sqlite3_finalize(rf.list);
	free(rf.contents.v);
	free(rf.missing);
	return r;
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

void catalog_set_format(Catalog *c, unsigned format) { c->format = format; }
unsigned catalog_format(const Catalog *c) { return c->format; }

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

/* ---- backup attempts ---- */

int catalog_attempt_add(Catalog *c, const char *instance, int64_t started, int64_t finished,
			const char *snapshot, const char *error)
{
	_cleanup_stmt_ sqlite3_stmt *ins = NULL, *prune = NULL;
	int r = prepare(c, "INSERT INTO attempts(instance, started, finished, snapshot, error)"
			   " VALUES(?1, ?2, ?3, ?4, ?5)", &ins);
	if (r == 0)
		r = prepare(c, "DELETE FROM attempts WHERE instance = ?1 AND id <= (SELECT id FROM"
			       " attempts WHERE instance = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
			    &prune);
	if (r == 0)
		r = catalog_begin(c);
	if (r < 0)
		return r;
	sqlite3_bind_text(ins, 1, instance, -1, SQLITE_STATIC);
	sqlite3_bind_int64(ins, 2, started);
	sqlite3_bind_int64(ins, 3, finished);
	bind_text_or_null(ins, 4, snapshot);
	bind_text_or_null(ins, 5, error);
	r = step_done(c, ins);
	if (r == 0) {
		sqlite3_bind_text(prune, 1, instance, -1, SQLITE_STATIC);
		sqlite3_bind_int(prune, 2, CATALOG_ATTEMPTS_KEPT);
		r = step_done(c, prune);
	}
	if (r == 0)
		r = catalog_commit(c);
	if (r < 0)
		catalog_rollback(c);
	return r;
}

void backup_attempt_clear(BackupAttempt *a)
{
	free(a->instance);
	free(a->snapshot);
	free(a->error);
	*a = (BackupAttempt){0};
}

static int query_u64_text(Catalog *c, const char *sql, const char *v, uint64_t *ret)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int rc, r = prepare(c, sql, &s);
	if (r < 0)
		return r;
	sqlite3_bind_text(s, 1, v, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW)
		return catalog_fail(c, rc, sql);
	*ret = (uint64_t)sqlite3_column_int64(s, 0);
	return 0;
}

int catalog_attempt_last(Catalog *c, const char *instance, bool failed, BackupAttempt *ret,
			 uint64_t *ret_n_failed)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int rc, r = prepare(c, failed ? "SELECT instance, started, finished, snapshot, error FROM attempts"
					" WHERE instance = ?1 AND error IS NOT NULL ORDER BY id DESC LIMIT 1"
				      : "SELECT instance, started, finished, snapshot, error FROM attempts"
					" WHERE instance = ?1 ORDER BY id DESC LIMIT 1", &s);
	*ret = (BackupAttempt){0};
	if (r < 0)
		return r;
	sqlite3_bind_text(s, 1, instance, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_DONE)
		r = -ENOENT;
	else if (rc != SQLITE_ROW)
		return catalog_fail(c, rc, "attempts");
	else {
		ret->instance = column_strdup(s, 0);
		ret->started = sqlite3_column_int64(s, 1);
		ret->finished = sqlite3_column_int64(s, 2);
		ret->snapshot = column_strdup(s, 3);
		ret->error = column_strdup(s, 4);
		if (!ret->instance || (sqlite3_column_type(s, 3) != SQLITE_NULL && !ret->snapshot) ||
		    (sqlite3_column_type(s, 4) != SQLITE_NULL && !ret->error)) {
			backup_attempt_clear(ret);
			return -ENOMEM;
		}
	}
	if (ret_n_failed && (r == 0 || r == -ENOENT)) {
		int e = query_u64_text(c, "SELECT count(*) FROM attempts WHERE instance = ?1 AND"
				       " error IS NOT NULL AND id > coalesce((SELECT max(id) FROM attempts"
				       " WHERE instance = ?1 AND error IS NULL), 0)", instance,
				       ret_n_failed);
		if (e < 0) {
			backup_attempt_clear(ret);
			return e;
		}
	}
	return r;
}

int catalog_instances(Catalog *c, char ***ret, size_t *ret_n)
{
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	char **v = NULL;
	size_t n = 0;
	int rc, r = prepare(c, "SELECT instance FROM snapshots WHERE " VISIBLE
			       " UNION SELECT instance FROM attempts ORDER BY 1", &s);
	while (r == 0 && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		char **nv = realloc(v, (n + 1) * sizeof(*v));
		if (!nv || !(nv[n] = column_strdup(s, 0))) {
			if (nv)
				v = nv;
			r = -ENOMEM;
			break;
		}
		v = nv;
		n++;
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = catalog_fail(c, rc, "instances");
	if (r < 0) {
		for (size_t i = 0; i < n; i++)
			free(v[i]);
		free(v);
		return r;
	}
	*ret = v;
	*ret_n = n;
	return 0;
}
