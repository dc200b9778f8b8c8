/* store/sqldb: the error map, the statement cache, a busy database, transactions. */
#include "store/sqldb.h"
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

static char dir[256];

static const char *path_in(char *buf, size_t len, const char *name)
{
	return test_fmt(buf, len, "%s/%s", dir, name);
}

static void test_error_map(void)
{
	static const struct {
		int rc, e;
	} map[] = {
		{SQLITE_OK, 0},
		{SQLITE_ROW, 0},
		{SQLITE_DONE, 0},
		{SQLITE_BUSY, -EBUSY},
		{SQLITE_BUSY_SNAPSHOT, -EBUSY},
		{SQLITE_LOCKED, -EBUSY},
		{SQLITE_NOMEM, -ENOMEM},
		{SQLITE_IOERR_NOMEM, -ENOMEM},
		{SQLITE_FULL, -ENOSPC},
		{SQLITE_IOERR, -EIO},
		{SQLITE_IOERR_FSYNC, -EIO}, /* no connection: the system errno is not known */
		{SQLITE_CANTOPEN, -ENOENT},
		{SQLITE_READONLY, -EACCES},
		{SQLITE_PERM, -EACCES},
		{SQLITE_AUTH, -EACCES},
		{SQLITE_CORRUPT, -EBADMSG},
		{SQLITE_NOTADB, -EBADMSG},
		{SQLITE_CONSTRAINT, -EEXIST},
		{SQLITE_CONSTRAINT_UNIQUE, -EEXIST},
		{SQLITE_TOOBIG, -EFBIG},
		{SQLITE_ERROR, -EIO},
		{SQLITE_MISUSE, -EIO},
	};
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (!CHECK_EQ_INT(sqldb_errno(NULL, map[i].rc), map[i].e))
			fprintf(stderr, "  for %s (%d)\n", sqlite3_errstr(map[i].rc), map[i].rc);
	/* a failure is never 0, even when handed a success code */
	CHECK_EQ_INT(sqldb_fail(NULL, SQLITE_OK, "nothing"), -EIO);
}

/* Opening: a missing file, a directory that is not there, garbage, a constraint. */
static void test_open_errors(void)
{
	char p[512];
	sqlite3 *db = NULL;
	SqldbOptions rw = {.flags = SQLITE_OPEN_READWRITE};

	/* the open's own errno, not a guess */
	CHECK_EQ_INT(sqldb_open(path_in(p, sizeof(p), "missing.db"), &rw, &db), -ENOENT);
	CHECK(db == NULL);
	CHECK_EQ_INT(sqldb_open(path_in(p, sizeof(p), "nodir/x.db"),
				&(SqldbOptions){.flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE}, &db),
		     -ENOENT);
	CHECK_EQ_INT(sqldb_open(dir, &rw, &db), -EISDIR);

	/* a file that is no database: damaged data, -EBADMSG (clone.db said -EIO before) */
	path_in(p, sizeof(p), "garbage.db");
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	char junk[4096];
	memset(junk, 0x5a, sizeof(junk));
	CHECK(fd >= 0 && write(fd, junk, sizeof(junk)) == (ssize_t)sizeof(junk));
	if (fd >= 0)
		close(fd);
	CHECK_EQ_INT(sqldb_open(p, &(SqldbOptions){.pragmas = "PRAGMA journal_mode=WAL"}, &db),
		     -EBADMSG);

	/* pragmas run; a constraint is -EEXIST */
	if (CHECK_EQ_INT(sqldb_open(path_in(p, sizeof(p), "ok.db"),
				    &(SqldbOptions){.flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
						    .pragmas = "PRAGMA journal_mode=WAL"},
				    &db),
			 0)) {
		_cleanup_stmt_ sqlite3_stmt *s = NULL;
		CHECK_EQ_INT(sqldb_prepare(db, "PRAGMA journal_mode", &s), 0);
		CHECK_EQ_INT(sqldb_step_row(db, s), 0);
		CHECK_EQ_STR((const char *)sqlite3_column_text(s, 0), "wal");
		CHECK_EQ_INT(sqldb_exec(db, "CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT UNIQUE);"
					    "INSERT INTO t VALUES(1, 'a')"),
			     0);
		CHECK_EQ_INT(sqldb_exec(db, "INSERT INTO t VALUES(2, 'a')"), -EEXIST);
		CHECK_EQ_INT(sqldb_exec(db, "SELECT nosuchcolumn FROM t"), -EIO);
		sqlite3_stmt *bad = (sqlite3_stmt *)&bad;
		CHECK_EQ_INT(sqldb_prepare(db, "SELEKT 1", &bad), -EIO);
		CHECK(bad == NULL);
		sqlite3_finalize(TAKE_PTR(s));
		CHECK_EQ_INT(sqldb_prepare(db, "SELECT v FROM t WHERE k = 99", &s), 0);
		CHECK_EQ_INT(sqldb_step_row(db, s), -ENOENT);
		sqlite3_finalize(TAKE_PTR(s));
		CHECK_EQ_INT(sqlite3_close(TAKE_PTR(db)), SQLITE_OK); /* nothing left open */
	}
}

/* Statements are prepared once, handed out reset and unbound, and all finalized. */
static void test_cache(void)
{
	sqlite3 *db = NULL;
	SqldbCache *c = NULL;
	sqlite3_stmt *a = NULL, *b = NULL, *a2 = NULL;

	if (!CHECK_EQ_INT(sqldb_open(":memory:", &(SqldbOptions){.flags = SQLITE_OPEN_READWRITE},
				     &db),
			  0))
		return;
	CHECK_EQ_INT(sqldb_exec(db, "CREATE TABLE t(k INTEGER PRIMARY KEY, v);"
				    "INSERT INTO t VALUES(1, 'one'), (2, 'two')"),
		     0);
	if (!CHECK_EQ_INT(sqldb_cache_new(db, 2, &c), 0))
		goto out;
	CHECK_EQ_INT(sqldb_cache_get(c, 0, "SELECT v FROM t WHERE k = ?1", &a), 0);
	sqlite3_bind_int(a, 1, 2);
	CHECK_EQ_INT(sqlite3_step(a), SQLITE_ROW); /* left mid-row: the next get resets it */
	CHECK_EQ_INT(sqldb_cache_get(c, 1, "SELECT count(*) FROM t", &b), 0);
	CHECK(a != b);
	/* reuse: the same statement, whatever sql says now; bindings cleared */
	CHECK_EQ_INT(sqldb_cache_get(c, 0, "SELECT 'other'", &a2), 0);
	CHECK(a2 == a);
	CHECK_EQ_INT(sqlite3_step(a2), SQLITE_DONE); /* ?1 is NULL again: no row */
	CHECK_EQ_INT(sqldb_cache_get(c, 2, "SELECT 1", &a2), -EINVAL);
	/* a bad statement fills nothing and caches nothing */
	sqlite3_stmt *keep = (sqlite3_stmt *)&keep, *got = keep;
	sqldb_cache_clear(c);
	CHECK_EQ_INT(sqldb_cache_get(c, 1, "SELEKT", &got), -EIO);
	CHECK(got == keep);
	CHECK(sqlite3_next_stmt(db, NULL) == NULL); /* clear finalized both */
	CHECK_EQ_INT(sqldb_cache_get(c, 0, "SELECT v FROM t WHERE k = ?1", &a), 0);
	sqlite3_bind_int(a, 1, 1);
	CHECK_EQ_INT(sqlite3_step(a), SQLITE_ROW);
	CHECK_EQ_STR((const char *)sqlite3_column_text(a, 0), "one");
	CHECK(sqlite3_next_stmt(db, NULL) == a);
	c = sqldb_cache_free(c);
	CHECK(sqlite3_next_stmt(db, NULL) == NULL);
	CHECK(sqldb_cache_free(NULL) == NULL);
out:
	/* sqlite3_close refuses a connection with statements left */
	CHECK_EQ_INT(sqlite3_close(db), SQLITE_OK);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Another connection's write lock: waited for up to busy_ms, then -EBUSY; sqldb_end rolls back. */
static void test_busy(void)
{
	char p[512];
	sqlite3 *a = NULL, *b = NULL;
	SqldbOptions o = {.flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
			  .busy_ms = 200,
			  .pragmas = "PRAGMA journal_mode=WAL"};
	path_in(p, sizeof(p), "busy.db");
	if (!CHECK_EQ_INT(sqldb_open(p, &o, &a), 0) || !CHECK_EQ_INT(sqldb_open(p, &o, &b), 0))
		goto out;
	CHECK_EQ_INT(sqldb_exec(a, "CREATE TABLE t(v)"), 0);
	CHECK_EQ_INT(sqldb_begin(a, true), 0);
	CHECK_EQ_INT(sqldb_exec(a, "INSERT INTO t VALUES(1)"), 0);

	double t0 = now_s();
	CHECK_EQ_INT(sqldb_begin(b, true), -EBUSY);
	CHECK(now_s() - t0 >= 0.15); /* the timeout was waited */
	CHECK(sqlite3_get_autocommit(b));
	/* a deferred reader is not blocked by the writer (WAL) and sees nothing uncommitted */
	CHECK_EQ_INT(sqldb_begin(b, false), 0);
	{
		_cleanup_stmt_ sqlite3_stmt *s = NULL;
		CHECK_EQ_INT(sqldb_prepare(b, "SELECT count(*) FROM t", &s), 0);
		CHECK_EQ_INT(sqldb_step_row(b, s), 0);
		CHECK_EQ_INT(sqlite3_column_int(s, 0), 0);
	}
	CHECK_EQ_INT(sqldb_end(b, 0), 0);
	CHECK_EQ_INT(sqldb_end(a, 0), 0); /* commit */

	/* an error ends the transaction rolled back, and is returned */
	CHECK_EQ_INT(sqldb_begin(b, true), 0);
	CHECK_EQ_INT(sqldb_exec(b, "INSERT INTO t VALUES(2)"), 0);
	CHECK_EQ_INT(sqldb_end(b, -ENOSPC), -ENOSPC);
	CHECK(sqlite3_get_autocommit(b));
	{
		_cleanup_stmt_ sqlite3_stmt *s = NULL;
		CHECK_EQ_INT(sqldb_prepare(a, "SELECT count(*) FROM t", &s), 0);
		CHECK_EQ_INT(sqldb_step_row(a, s), 0);
		CHECK_EQ_INT(sqlite3_column_int(s, 0), 1);
	}
	sqldb_rollback(a); /* no transaction: nothing happens */
	CHECK(sqlite3_get_autocommit(a));
out:
	sqldb_close(a);
	sqldb_close(b);
}

/*
 * A commit that fails (a rollback-journal database: another connection's
 * read lock keeps the writer from committing) ends rolled back, not open.
 */
static void test_commit_fails(void)
{
	char p[512];
	sqlite3 *a = NULL, *b = NULL;
	sqlite3_stmt *s = NULL;
	SqldbOptions o = {.flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
			  .busy_ms = 50,
			  .pragmas = "PRAGMA journal_mode=DELETE"};
	path_in(p, sizeof(p), "journal.db");
	if (!CHECK_EQ_INT(sqldb_open(p, &o, &a), 0) || !CHECK_EQ_INT(sqldb_open(p, &o, &b), 0))
		goto out;
	CHECK_EQ_INT(sqldb_exec(a, "CREATE TABLE t(v); INSERT INTO t VALUES(1), (2)"), 0);
	CHECK_EQ_INT(sqldb_prepare(b, "SELECT v FROM t", &s), 0);
	CHECK_EQ_INT(sqlite3_step(s), SQLITE_ROW); /* b holds a read lock while mid-query */
	CHECK_EQ_INT(sqldb_begin(a, true), 0);
	CHECK_EQ_INT(sqldb_exec(a, "INSERT INTO t VALUES(3)"), 0);
	CHECK_EQ_INT(sqldb_end(a, 0), -EBUSY);
	CHECK(sqlite3_get_autocommit(a)); /* rolled back, not left open */
	sqlite3_finalize(TAKE_PTR(s));
	CHECK_EQ_INT(sqldb_prepare(a, "SELECT count(*) FROM t", &s), 0);
	CHECK_EQ_INT(sqldb_step_row(a, s), 0);
	CHECK_EQ_INT(sqlite3_column_int(s, 0), 2);
	sqlite3_finalize(TAKE_PTR(s));
out:
	sqlite3_finalize(s);
	sqldb_close(a);
	sqldb_close(b);
}

/* untrusted: a schema's triggers never run. */
static void test_untrusted(void)
{
	char p[512];
	sqlite3 *db = NULL;
	SqldbOptions create = {.flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE};
	path_in(p, sizeof(p), "trig.db");
	if (!CHECK_EQ_INT(sqldb_open(p, &create, &db), 0))
		return;
	CHECK_EQ_INT(sqldb_exec(db, "CREATE TABLE t(v); CREATE TABLE log(v);"
				    "CREATE TRIGGER tr AFTER INSERT ON t BEGIN"
				    " INSERT INTO log VALUES(new.v); END;"),
		     0);
	CHECK_EQ_INT(sqldb_exec(db, "INSERT INTO t VALUES(1)"), 0);
	db = sqldb_close(db);
	create.untrusted = true;
	if (!CHECK_EQ_INT(sqldb_open(p, &create, &db), 0))
		return;
	CHECK_EQ_INT(sqldb_exec(db, "INSERT INTO t VALUES(2)"), 0);
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	CHECK_EQ_INT(sqldb_prepare(db, "SELECT count(*) FROM log", &s), 0);
	CHECK_EQ_INT(sqldb_step_row(db, s), 0);
	CHECK_EQ_INT(sqlite3_column_int(s, 0), 1); /* the trigger ran once, not twice */
	sqlite3_finalize(TAKE_PTR(s));
	sqldb_close(db);
}

int main(void)
{
	if (!test_tmpdir(dir, sizeof(dir)))
		return 1;
	test_error_map();
	test_open_errors();
	test_cache();
	test_busy();
	test_commit_fails();
	test_untrusted();
	TEST_RM_RF(dir);
	return test_finish();
}
