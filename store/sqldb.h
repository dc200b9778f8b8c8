/*
 * One way to use SQLite: every database pgbakfs opens (the catalog, a
 * writable clone's clone.db, manifest images, catalog deltas and copies)
 * is opened, stepped and mapped to -errno here.
 *
 * Errors: every function returns 0 or a negative errno and fills ret_*
 * only on success; the SQLite message goes to the debug log (it helps a
 * developer, not a user). sqldb_errno() is the one map from SQLite's
 * result codes:
 *   SQLITE_BUSY, SQLITE_LOCKED         -EBUSY (another connection's lock
 *                                      outlived the busy timeout)
 *   SQLITE_NOMEM                       -ENOMEM
 *   SQLITE_FULL                        -ENOSPC
 *   SQLITE_IOERR                       -ENOSPC or -EDQUOT when the failed
 *                                      system call said so (a full disk met
 *                                      by fsync or a WAL write), -ENOMEM for
 *                                      SQLITE_IOERR_NOMEM, else -EIO
 *   SQLITE_CANTOPEN                    the failed open's errno when it is one
 *                                      that says why (-ENOENT, -EACCES,
 *                                      -EROFS, -EMFILE, ...), else -ENOENT
 *   SQLITE_READONLY, _PERM, _AUTH      -EACCES
 *   SQLITE_CORRUPT, SQLITE_NOTADB      -EBADMSG (damaged data)
 *   SQLITE_CONSTRAINT                  -EEXIST
 *   SQLITE_TOOBIG                      -EFBIG
 *   anything else                      -EIO
 * and 0 for SQLITE_OK, SQLITE_ROW and SQLITE_DONE.
 *
 * Thread safety: none of its own. A connection and its statement cache
 * belong to one thread at a time (connections are opened NOMUTEX where the
 * caller says so), as SQLite's multi-thread mode requires.
 */
#pragma once

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct SqldbOptions {
	int flags;           /* SQLITE_OPEN_*; 0: SQLITE_OPEN_READWRITE */
	int busy_ms;         /* wait up to this long for another connection's lock; 0: fail at once */
	const char *pragmas; /* statements run once open (journal mode, synchronous), or NULL */
	bool untrusted;      /* bytes from storage: defensive, no triggers, views or schema functions */
} SqldbOptions;

/* SQLite result code rc of connection db (NULL: none, or not known) as 0 or -errno (above). */
int sqldb_errno(sqlite3 *db, int rc);

/*
 * The -errno of a failed call (never 0: a success code given here is -EIO),
 * with db's message in the debug log under what.
 */
int sqldb_fail(sqlite3 *db, int rc, const char *what);

/*
 * Open path (":memory:" for a private in-memory database) with o (NULL:
 * defaults), set the busy timeout, then run o->pragmas. On failure nothing
 * stays open.
 */
int sqldb_open(const char *path, const SqldbOptions *o, sqlite3 **ret);
/* Close db, finalizing nothing (finalize statements first); NULL is fine. Returns NULL. */
sqlite3 *sqldb_close(sqlite3 *db);

/* Run sql (one or more statements, no rows wanted). */
int sqldb_exec(sqlite3 *db, const char *sql);
/*
 * A one-off statement, for the caller to sqlite3_finalize (or _cleanup_stmt_);
 * *ret is NULL on failure, as sqlite3_prepare_v2 leaves it.
 */
int sqldb_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **ret);
/* Step a statement that gives no row, then reset it. */
int sqldb_step_done(sqlite3 *db, sqlite3_stmt *s);
/*
 * Step a query expected to give at most one row: 0 with the row (the caller
 * resets), -ENOENT without (reset here).
 */
int sqldb_step_row(sqlite3 *db, sqlite3_stmt *s);

/* BEGIN IMMEDIATE (write) or BEGIN (deferred: reads). */
int sqldb_begin(sqlite3 *db, bool write);
int sqldb_commit(sqlite3 *db);
/* Roll back the open transaction, if there is one; never fails. */
void sqldb_rollback(sqlite3 *db);
/*
 * End the transaction: commit when r is 0, else, or when the commit fails,
 * roll back. Returns the outcome (r, or the commit's error).
 */
int sqldb_end(sqlite3 *db, int r);

/*
 * A cache of n prepared statements of one connection, by slot: a statement
 * is prepared (SQLITE_PREPARE_PERSISTENT) on first use and reused after,
 * reset and with its bindings cleared each time it is handed out. The cache
 * must be freed before its connection is closed.
 */
typedef struct SqldbCache SqldbCache;
int sqldb_cache_new(sqlite3 *db, size_t n, SqldbCache **ret);
/*
 * Slot which's statement, prepared from sql the first time (later calls
 * ignore sql until sqldb_cache_clear). The statement stays the cache's.
 */
int sqldb_cache_get(SqldbCache *c, size_t which, const char *sql, sqlite3_stmt **ret);
/* Finalize every statement (before the schema they were prepared on changes). */
void sqldb_cache_clear(SqldbCache *c);
/* Finalize and free; NULL is fine. Returns NULL. */
SqldbCache *sqldb_cache_free(SqldbCache *c);

void sqldb_stmt_finalizep(sqlite3_stmt **s);
void sqldb_closep(sqlite3 **db);
#define _cleanup_stmt_ __attribute__((cleanup(sqldb_stmt_finalizep)))
#define _cleanup_sqldb_ __attribute__((cleanup(sqldb_closep)))
