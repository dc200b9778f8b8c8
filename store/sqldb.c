/*
 * SQLite plumbing shared by every database pgbakfs opens. The error map
 * was once written four times (catalog, clone, manifest, repair) and the
 * copies disagreed: a corrupt clone.db was -EIO, a corrupt catalog
 * -EBADMSG; a full disk met by fsync was -ENOSPC in a clone, -EIO in the
 * catalog. One map now says what each code means (sqldb.h).
 */
#include "store/sqldb.h"
#include "common/log.h"

#include <errno.h>
#include <stdlib.h>

/* An open's errno that tells the user why; any other (or none) is reported as -ENOENT. */
static int cantopen_errno(sqlite3 *db)
{
	int e = db ? sqlite3_system_errno(db) : 0;
	switch (e) {
	case ENOENT:
	case ENOTDIR:
	case EACCES:
	case EPERM:
	case EROFS:
	case EISDIR:
	case ELOOP:
	case ENAMETOOLONG:
	case EMFILE:
	case ENFILE:
	case ENOSPC:
	case EDQUOT:
	case ENOMEM:
		return -e;
	default:
		return -ENOENT;
	}
}

int sqldb_errno(sqlite3 *db, int rc)
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
	case SQLITE_IOERR:
		if (rc == SQLITE_IOERR_NOMEM)
			return -ENOMEM;
		/* a full disk met by fsync or a WAL index write is still a full disk */
		if (db && (sqlite3_system_errno(db) == ENOSPC || sqlite3_system_errno(db) == EDQUOT))
			return -sqlite3_system_errno(db);
		return -EIO;
	case SQLITE_CANTOPEN:
		return cantopen_errno(db);
	case SQLITE_READONLY:
	case SQLITE_PERM:
	case SQLITE_AUTH:
		return -EACCES;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		return -EBADMSG;
	case SQLITE_CONSTRAINT:
		return -EEXIST;
	case SQLITE_TOOBIG:
		return -EFBIG;
	default:
		return -EIO;
	}
}

int sqldb_fail(sqlite3 *db, int rc, const char *what)
{
	int r = sqldb_errno(db, rc);
	const char *name = db ? sqlite3_db_filename(db, "main") : NULL;
	log_debug("sqlite %s: %s: %s", name && *name ? name : "(memory)", what,
		  db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
	return r ? r : -EIO;
}

int sqldb_open(const char *path, const SqldbOptions *o, sqlite3 **ret)
{
	static const SqldbOptions defaults = {0};
	sqlite3 *db = NULL;
	int rc, r;

	if (!o)
		o = &defaults;
	rc = sqlite3_open_v2(path, &db, o->flags ? o->flags : SQLITE_OPEN_READWRITE, NULL);
	if (rc != SQLITE_OK) {
		r = db ? sqldb_fail(db, rc, path) : -ENOMEM;
		sqlite3_close(db);
		return r;
	}
	if (o->busy_ms > 0)
		sqlite3_busy_timeout(db, o->busy_ms);
	if (o->untrusted) {
		sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
		sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);
		sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_TRIGGER, 0, NULL);
		sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_VIEW, 0, NULL);
	}
	r = o->pragmas ? sqldb_exec(db, o->pragmas) : 0;
	if (r < 0) {
		sqlite3_close(db);
		return r;
	}
	*ret = db;
	return 0;
}

sqlite3 *sqldb_close(sqlite3 *db)
{
	sqlite3_close(db);
	return NULL;
}

int sqldb_exec(sqlite3 *db, const char *sql)
{
	int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
	return rc == SQLITE_OK ? 0 : sqldb_fail(db, rc, sql);
}

int sqldb_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **ret)
{
	int rc = sqlite3_prepare_v2(db, sql, -1, ret, NULL);
	return rc == SQLITE_OK ? 0 : sqldb_fail(db, rc, sql);
}

int sqldb_step_done(sqlite3 *db, sqlite3_stmt *s)
{
	int rc = sqlite3_step(s);
	int r = rc == SQLITE_DONE ? 0 : sqldb_fail(db, rc, sqlite3_sql(s));
	sqlite3_reset(s);
	return r;
}

int sqldb_step_row(sqlite3 *db, sqlite3_stmt *s)
{
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		return 0;
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? -ENOENT : sqldb_fail(db, rc, sqlite3_sql(s));
}

int sqldb_begin(sqlite3 *db, bool write) { return sqldb_exec(db, write ? "BEGIN IMMEDIATE" : "BEGIN"); }

int sqldb_commit(sqlite3 *db) { return sqldb_exec(db, "COMMIT"); }

void sqldb_rollback(sqlite3 *db)
{
	if (!sqlite3_get_autocommit(db))
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
}

int sqldb_end(sqlite3 *db, int r)
{
	if (r == 0)
		r = sqldb_commit(db);
	if (r < 0)
		sqldb_rollback(db);
	return r;
}

/* ---- statement cache ---- */

struct SqldbCache {
	sqlite3 *db;
	size_t n;
	sqlite3_stmt *stmt[];
};

int sqldb_cache_new(sqlite3 *db, size_t n, SqldbCache **ret)
{
	SqldbCache *c = calloc(1, sizeof(*c) + n * sizeof(c->stmt[0]));
	if (!c)
		return -ENOMEM;
	c->db = db;
	c->n = n;
	*ret = c;
	return 0;
}

int sqldb_cache_get(SqldbCache *c, size_t which, const char *sql, sqlite3_stmt **ret)
{
	sqlite3_stmt *s;
	if (which >= c->n)
		return -EINVAL;
	s = c->stmt[which];
	if (!s) {
		int rc = sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, NULL);
		if (rc != SQLITE_OK)
			return sqldb_fail(c->db, rc, sql);
		c->stmt[which] = s;
	}
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	*ret = s;
	return 0;
}

void sqldb_cache_clear(SqldbCache *c)
{
	for (size_t i = 0; i < c->n; i++) {
		sqlite3_finalize(c->stmt[i]);
		c->stmt[i] = NULL;
	}
}

SqldbCache *sqldb_cache_free(SqldbCache *c)
{
	if (c) {
		sqldb_cache_clear(c);
		free(c);
	}
	return NULL;
}

void sqldb_stmt_finalizep(sqlite3_stmt **s)
{
	if (*s)
		sqlite3_finalize(*s);
}

void sqldb_closep(sqlite3 **db)
{
	if (*db)
		sqlite3_close(*db);
}
