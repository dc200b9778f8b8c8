/*
 * Catalog deltas, as SQLite patchsets (primary keys and new values: a
 * changeset would also carry every old value, twice the bytes of an update,
 * whole rows for a delete, and a scrubbed password in the delta that
 * removes it). The writer's process may change the catalog through many
 * connections (the backup's snapwriter opens several), so a session recorded
 * on one connection would miss changes: instead the change is computed at
 * publication by comparing the catalog with a copy of the generation it
 * started from (sqlite3session_diff, table by table), which is right however
 * the catalog was written. Sessions silently skip tables without a primary
 * key, and an applied changeset silently skips tables the target lacks or
 * has with other columns: both are checked here, so a change can never be
 * dropped without an error.
 */
/* the session extension's declarations (Debian's SQLite is built with both) */
#define SQLITE_ENABLE_SESSION 1
#define SQLITE_ENABLE_PREUPDATE_HOOK 1
#include "store/delta.h"
#include "store/chunk.h"
#include "store/sqldb.h"
#include "common/log.h"
#include "common/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DELTA_MAGIC "PGBKDLT1"

/* the catalog's statistics (ANALYZE) are no data; every other table must travel */
#define SKIP_TABLE(name) (strncmp((name), "sqlite_stat", 11) == 0)

static int sql_fail(sqlite3 *db, const char *what)
{
	log_debug("catalog delta: %s: %s", what, sqlite3_errmsg(db));
	return -EIO;
}

/* 1 when schema.table has a primary key, 0 when not, <0 on error */
static int has_primary_key(sqlite3 *db, const char *schema, const char *table)
{
	sqlite3_stmt *s = NULL;
	int r = sqlite3_prepare_v2(db, "SELECT count(*) FROM pragma_table_info(?1, ?2) WHERE pk > 0",
				   -1, &s, NULL);
	if (r == SQLITE_OK) {
		sqlite3_bind_text(s, 1, table, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 2, schema, -1, SQLITE_STATIC);
		r = sqlite3_step(s);
	}
	int e = r == SQLITE_ROW ? sqlite3_column_int(s, 0) > 0 : sql_fail(db, "table info");
	sqlite3_finalize(s);
	return e;
}

/* 1 when a table of base is not in main (dropped: a changeset cannot say so) */
static int table_dropped(sqlite3 *db)
{
	sqlite3_stmt *s = NULL;
	int r = sqlite3_prepare_v2(db,
				   "SELECT count(*) FROM base.sqlite_master b WHERE b.type = 'table'"
				   " AND substr(b.name, 1, 11) <> 'sqlite_stat' AND NOT EXISTS"
				   " (SELECT 1 FROM main.sqlite_master m WHERE m.type = 'table'"
				   "  AND m.name = b.name)",
				   -1, &s, NULL);
	if (r == SQLITE_OK)
		r = sqlite3_step(s);
	int e = r == SQLITE_ROW ? sqlite3_column_int(s, 0) > 0 : sql_fail(db, "tables");
	sqlite3_finalize(s);
	return e;
}

/* Bytes of pages in use in schema (page_count - freelist_count, times page_size). */
static int used_bytes(sqlite3 *db, const char *schema, uint64_t *ret)
{
	static const char *const pragmas[] = {"page_count", "freelist_count", "page_size"};
	int64_t v[3];

	for (size_t i = 0; i < 3; i++) {
		char sql[64];
		sqlite3_stmt *s = NULL;
		snprintf(sql, sizeof(sql), "PRAGMA %s.%s", schema, pragmas[i]);
		int r = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
		if (r == SQLITE_OK)
			r = sqlite3_step(s);
		v[i] = r == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
		sqlite3_finalize(s);
		if (v[i] < 0)
			return sql_fail(db, pragmas[i]);
	}
	*ret = (uint64_t)(v[0] - MIN(v[1], v[0])) * (uint64_t)v[2];
	return 0;
}

/*
 * -EFBIG when main grew past base by more than max_growth bytes of pages in
 * use: rows inserted, which the diff would hold in memory (a full backup of
 * millions of chunks: ~1.5 times the growth measured), only to find a delta
 * not worth publishing.
 */
static int growth_check(sqlite3 *db, uint64_t max_growth)
{
	uint64_t cur, base;
	int e = used_bytes(db, "main", &cur);

	if (e == 0)
		e = used_bytes(db, "base", &base);
	if (e == 0 && cur > base && cur - base > max_growth) {
		log_debug("catalog delta: the catalog grew by %llu bytes since the base copy (more "
			  "than %llu)", (unsigned long long)(cur - base), (unsigned long long)max_growth);
		e = -EFBIG;
	}
	return e;
}

static int diff_tables(sqlite3 *db, sqlite3_session *ss)
{
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(db, "SELECT name FROM main.sqlite_master WHERE type = 'table'"
					" ORDER BY name", -1, &s, NULL);
	int e = rc == SQLITE_OK ? 0 : sql_fail(db, "tables");

	while (e == 0 && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(s, 0);
		char *err = NULL;
		if (SKIP_TABLE(name))
			continue;
		e = has_primary_key(db, "main", name);
		if (e == 0) {
			log_debug("catalog table %s has no primary key: publishing a whole catalog",
				  name);
			e = -ENOTSUP;
			break;
		}
		if (e < 0)
			break;
		e = 0;
		rc = sqlite3session_attach(ss, name);
		if (rc == SQLITE_OK)
			rc = sqlite3session_diff(ss, "base", name, &err);
		if (rc != SQLITE_OK) {
			/* another schema in the base copy (or none): a whole catalog is right */
			log_debug("catalog table %s differs from the base copy's: %s", name,
				  err ? err : sqlite3_errstr(rc));
			e = -ENOTSUP;
		}
		sqlite3_free(err);
	}
	if (e == 0 && rc != SQLITE_DONE)
		e = sql_fail(db, "tables");
	sqlite3_finalize(s);
	return e;
}

int delta_diff(const char *cur_path, const char *base_path, uint64_t max_growth, void **ret,
	       size_t *ret_len)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;
	sqlite3_session *ss = NULL;
	void *cs = NULL;
	int n = 0, e = sqldb_open(cur_path, &(SqldbOptions){.busy_ms = 60000}, &db);
	int rc = SQLITE_OK;

	if (e == 0)
		rc = sqlite3_prepare_v2(db, "ATTACH ?1 AS base", -1, &s, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_text(s, 1, base_path, -1, SQLITE_STATIC);
		rc = sqlite3_step(s) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
		sqlite3_finalize(s);
	}
	/* one read transaction: the tables are compared as of one moment */
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
	if (e == 0 && rc != SQLITE_OK)
		e = sql_fail(db, "open for the delta");
	if (e == 0) {
		e = table_dropped(db);
		if (e > 0) {
			log_debug("a catalog table was dropped: publishing a whole catalog");
			e = -ENOTSUP;
		}
	}
	if (e == 0)
		e = growth_check(db, max_growth);
	if (e == 0)
		e = sqlite3session_create(db, "main", &ss) == SQLITE_OK ? 0 : -ENOMEM;
	if (e == 0)
		e = diff_tables(db, ss);
	if (e == 0 && sqlite3session_patchset(ss, &n, &cs) != SQLITE_OK)
		e = sql_fail(db, "changeset");
	if (e == 0) {
		void *copy = malloc(n ? (size_t)n : 1);
		if (copy) {
			if (n)
				memcpy(copy, cs, (size_t)n);
			*ret = copy;
			*ret_len = (size_t)n;
		} else
			e = -ENOMEM;
	}
	sqlite3_free(cs);
	if (ss)
		sqlite3session_delete(ss);
	if (db) {
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		sqlite3_close(db);
	}
	return e;
}

/* ---- apply ---- */

typedef struct ApplyCtx {
	int conflicts;
	int first_type;
	char table[64];
} ApplyCtx;

static const char *conflict_name(int type)
{
	switch (type) {
	case SQLITE_CHANGESET_DATA:
		return "a row it changes is not as it expects";
	case SQLITE_CHANGESET_NOTFOUND:
		return "a row it changes or deletes is missing";
	case SQLITE_CHANGESET_CONFLICT:
		return "a row it inserts exists already";
	default:
		return "a constraint fails";
	}
}

static int on_conflict(void *ud, int type, sqlite3_changeset_iter *it)
{
	ApplyCtx *c = ud;
	const char *table = NULL;
	int ncol, op;
	if (c->conflicts++ == 0) {
		c->first_type = type;
		if (sqlite3changeset_op(it, &table, &ncol, &op, NULL) == SQLITE_OK && table)
			snprintf(c->table, sizeof(c->table), "%s", table);
	}
	return SQLITE_CHANGESET_ABORT;
}

/* Every table the changeset names exists in db with the same columns and primary key. */
static int check_tables(sqlite3 *db, const void *cs, size_t len)
{
	sqlite3_changeset_iter *it = NULL;
	char last[128] = "";
	int rc = sqlite3changeset_start(&it, (int)len, (void *)cs), e = 0;

	if (rc != SQLITE_OK)
		return -EBADMSG;
	while (e == 0 && (rc = sqlite3changeset_next(it)) == SQLITE_ROW) {
		const char *table;
		unsigned char *pk;
		int ncol, op, pkn = 0;
		sqlite3_stmt *s = NULL;

		if (sqlite3changeset_op(it, &table, &ncol, &op, NULL) != SQLITE_OK ||
		    sqlite3changeset_pk(it, &pk, &pkn) != SQLITE_OK) {
			e = -EBADMSG;
			break;
		}
		if (strcmp(table, last) == 0)
			continue;
		snprintf(last, sizeof(last), "%s", table);
		rc = sqlite3_prepare_v2(db, "SELECT pk FROM pragma_table_info(?1, 'main') ORDER BY cid",
					-1, &s, NULL);
		if (rc != SQLITE_OK) {
			e = sql_fail(db, "table info");
			break;
		}
		sqlite3_bind_text(s, 1, table, -1, SQLITE_STATIC);
		int col = 0;
		while (e == 0 && sqlite3_step(s) == SQLITE_ROW) {
			if (col >= ncol || (sqlite3_column_int(s, 0) > 0) != (pk[col] != 0))
				e = -EBADMSG;
			col++;
		}
		sqlite3_finalize(s);
		if (e == 0 && col != ncol)
			e = -EBADMSG;
		if (e < 0)
			log_warning("a catalog delta changes table \"%s\", which this catalog has with "
				  "other columns or not at all", table);
	}
	if (e == 0 && rc != SQLITE_DONE)
		e = -EBADMSG;
	sqlite3changeset_finalize(it);
	return e;
}

int delta_apply(sqlite3 *db, const void *const *cs, const size_t *lens, size_t n)
{
	int e = 0;
	if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
		return sql_fail(db, "begin");
	for (size_t i = 0; i < n && e == 0; i++) {
		ApplyCtx ctx = {0};
		if (lens[i] > INT32_MAX) {
			e = -EBADMSG;
			break;
		}
		e = check_tables(db, cs[i], lens[i]);
		if (e < 0)
			break;
		int rc = sqlite3changeset_apply(db, (int)lens[i], (void *)cs[i], NULL, on_conflict,
						&ctx);
		if (ctx.conflicts) {
			log_warning("a catalog delta does not apply to this catalog: %s in table \"%s\"",
				    conflict_name(ctx.first_type), ctx.table);
			e = -EBADMSG;
		} else if (rc == SQLITE_CORRUPT || rc == SQLITE_MISUSE || rc == SQLITE_ABORT) {
			e = -EBADMSG;
		} else if (rc != SQLITE_OK) {
			e = sql_fail(db, "apply");
		}
	}
	if (e == 0 && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		e = sql_fail(db, "commit");
	if (e < 0 && !sqlite3_get_autocommit(db))
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return e;
}

/* ---- framing ---- */

int delta_frame(uint64_t from, uint64_t to, const void *cs, size_t len, void **ret,
		size_t *ret_len)
{
	uint8_t *p = malloc(DELTA_HEADER_LEN + len);
	ChunkId sum;
	if (!p)
		return -ENOMEM;
	chunk_hash(cs, len, &sum);
	memcpy(p, DELTA_MAGIC, 8);
	put_le64(p + 8, from);
	put_le64(p + 16, to);
	put_le64(p + 24, len);
	memcpy(p + 32, sum.b, 32);
	if (len)
		memcpy(p + DELTA_HEADER_LEN, cs, len);
	*ret = p;
	*ret_len = DELTA_HEADER_LEN + len;
	return 0;
}

int delta_unframe(const void *buf, size_t len, uint64_t from, uint64_t to, const void **ret_cs,
		  size_t *ret_cs_len)
{
	const uint8_t *p = buf;
	ChunkId sum;
	if (len < DELTA_HEADER_LEN || memcmp(p, DELTA_MAGIC, 8) != 0 || get_le64(p + 8) != from ||
	    get_le64(p + 16) != to || get_le64(p + 24) != len - DELTA_HEADER_LEN)
		return -EBADMSG;
	chunk_hash(p + DELTA_HEADER_LEN, len - DELTA_HEADER_LEN, &sum);
	if (memcmp(p + 32, sum.b, 32) != 0)
		return -EBADMSG;
	*ret_cs = p + DELTA_HEADER_LEN;
	*ret_cs_len = len - DELTA_HEADER_LEN;
	return 0;
}
