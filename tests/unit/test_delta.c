/*
 * store/delta.c: every table of a real catalog travels in a delta (a table a
 * later change adds without a primary key fails here), a delta is all or
 * nothing, a damaged frame never opens, local rows survive.
 */
#include "tests/unit/test.h"
#include "store/catalog.h"
#include "store/delta.h"

#include <sqlite3.h>

static int exec(sqlite3 *db, const char *sql)
{
	char *err = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
	if (rc != SQLITE_OK)
		fprintf(stderr, "%s: %s\n", sql, err ? err : "?");
	sqlite3_free(err);
	return rc;
}

static int64_t count(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *s = NULL;
	int64_t n = -1;
	if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
		n = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return n;
}

/* One row of made-up values in every table (whatever columns it has). */
static void fill_every_table(sqlite3 *db)
{
	sqlite3_stmt *t = NULL;
	CHECK_EQ_INT(sqlite3_prepare_v2(db, "SELECT name FROM sqlite_master WHERE type = 'table'", -1,
					&t, NULL),
		     SQLITE_OK);
	while (sqlite3_step(t) == SQLITE_ROW) {
		const char *table = (const char *)sqlite3_column_text(t, 0);
		char *sql = sqlite3_mprintf(
			"SELECT 'INSERT INTO \"%w\" VALUES(' || group_concat(CASE"
			" WHEN type LIKE '%%INT%%' THEN 'abs(random()) %% 1000000'"
			" WHEN type LIKE '%%BLOB%%' THEN 'randomblob(32)'"
			" ELSE 'hex(randomblob(8))' END, ', ') || ')'"
			" FROM (SELECT type FROM pragma_table_info(%Q) ORDER BY cid)",
			table, table);
		sqlite3_stmt *s = NULL;
		if (CHECK_EQ_INT(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK) &&
		    CHECK_EQ_INT(sqlite3_step(s), SQLITE_ROW))
			CHECK_EQ_INT(exec(db, (const char *)sqlite3_column_text(s, 0)), SQLITE_OK);
		sqlite3_finalize(s);
		sqlite3_free(sql);
	}
	sqlite3_finalize(t);
}

/* Every table of main has the same rows as in other (attached as "o"), and some. */
static bool same_tables(sqlite3 *db)
{
	sqlite3_stmt *t = NULL;
	bool same = true;
	sqlite3_prepare_v2(db, "SELECT name FROM main.sqlite_master WHERE type = 'table'", -1, &t,
			   NULL);
	while (sqlite3_step(t) == SQLITE_ROW) {
		const char *table = (const char *)sqlite3_column_text(t, 0);
		char *sql = sqlite3_mprintf(
			"SELECT (SELECT count(*) FROM (SELECT * FROM main.\"%w\" EXCEPT"
			" SELECT * FROM o.\"%w\")) + (SELECT count(*) FROM (SELECT * FROM o.\"%w\""
			" EXCEPT SELECT * FROM main.\"%w\")) + ((SELECT count(*) FROM main.\"%w\") = 0)",
			table, table, table, table, table);
		if (count(db, sql) != 0) {
			fprintf(stderr, "table %s differs (or is empty)\n", table);
			same = false;
		}
		sqlite3_free(sql);
	}
	sqlite3_finalize(t);
	return same;
}

static sqlite3 *open_db(const char *path)
{
	sqlite3 *db = NULL;
	CHECK_EQ_INT(sqlite3_open(path, &db), SQLITE_OK);
	return db;
}

static void vacuum_into(sqlite3 *db, const char *path)
{
	char *sql = sqlite3_mprintf("VACUUM INTO %Q", path);
	CHECK_EQ_INT(exec(db, sql), SQLITE_OK);
	sqlite3_free(sql);
}

int main(void)
{
	char tmp[PATH_MAX], cur[PATH_MAX], base[PATH_MAX], other[PATH_MAX];
	Catalog *c = NULL;
	void *cs = NULL, *cs2 = NULL, *framed = NULL;
	size_t len = 0, len2 = 0, flen = 0;
	const void *got;
	size_t got_len;

	test_tmpdir(tmp, sizeof(tmp));
	test_fmt(cur, sizeof(cur), "%s/cur.db", tmp);
	test_fmt(base, sizeof(base), "%s/base.db", tmp);
	test_fmt(other, sizeof(other), "%s/other.db", tmp);

	/* a catalog with every table of this binary's schema, one row each: the base */
	if (!CHECK_EQ_INT(catalog_open(cur, true, &c), 0))
		return test_finish();
	sqlite3 *db = catalog_sqlite(c);
	fill_every_table(db);
	vacuum_into(db, base);
	vacuum_into(db, other); /* a reader's copy of the same generation */
	/* then every table changes: a row more, the first one gone */
	CHECK_EQ_INT(exec(db, "DELETE FROM packs; DELETE FROM snapshots; DELETE FROM bad_blocks;"
			      "UPDATE chunks SET pack = pack + 1"),
		     SQLITE_OK);
	fill_every_table(db);
	catalog_free(c);

	/* the delta makes the base the current catalog, in every table */
	CHECK_EQ_INT(delta_diff(cur, base, UINT64_MAX, &cs, &len), 0);
	CHECK(len > 0);
	sqlite3 *b = open_db(base);
	const void *v[2] = {cs, cs};
	size_t l[2] = {len, len};
	CHECK_EQ_INT(delta_apply(b, v, l, 1), 0);
	sqlite3_close(b);
	sqlite3 *a = open_db(cur);
	char *att = sqlite3_mprintf("ATTACH %Q AS o", base);
	CHECK_EQ_INT(exec(a, att), SQLITE_OK);
	sqlite3_free(att);
	CHECK(same_tables(a));
	sqlite3_close(a);

	/* all or nothing: the same delta twice conflicts, and neither is applied */
	sqlite3 *r = open_db(other);
	CHECK_EQ_INT(exec(r, "INSERT INTO sessions VALUES('local-mount', 'mount', 1, 1, 0)"),
		     SQLITE_OK);
	int64_t before = count(r, "SELECT count(*) FROM files");
	CHECK_EQ_INT(delta_apply(r, v, l, 2), -EBADMSG);
	CHECK_EQ_INT(count(r, "SELECT count(*) FROM files"), before);
	/* once: fine, and the reader's own row is left alone */
	CHECK_EQ_INT(delta_apply(r, v, l, 1), 0);
	CHECK_EQ_INT(count(r, "SELECT count(*) FROM sessions WHERE id = 'local-mount'"), 1);
	/* a table the reader lacks: refused, not skipped */
	CHECK_EQ_INT(exec(r, "DROP TABLE links"), SQLITE_OK);
	b = open_db(base);
	CHECK_EQ_INT(exec(b, "INSERT INTO links VALUES(7, 'x', 'y')"), SQLITE_OK);
	sqlite3_close(b);
	CHECK_EQ_INT(delta_diff(base, cur, UINT64_MAX, &cs2, &len2), 0);
	const void *v2[1] = {cs2};
	size_t l2[1] = {len2};
	CHECK_EQ_INT(delta_apply(r, v2, l2, 1), -EBADMSG);
	sqlite3_close(r);
	free(cs2);
	cs2 = NULL;

	/* a table without a primary key, or one dropped since: no delta */
	a = open_db(cur);
	CHECK_EQ_INT(exec(a, "CREATE TABLE nokey(a, b)"), SQLITE_OK);
	b = open_db(base);
	CHECK_EQ_INT(exec(b, "CREATE TABLE nokey(a, b)"), SQLITE_OK);
	CHECK_EQ_INT(delta_diff(cur, base, UINT64_MAX, &cs2, &len2), -ENOTSUP);
	CHECK_EQ_INT(exec(a, "DROP TABLE nokey"), SQLITE_OK);
	CHECK_EQ_INT(delta_diff(cur, base, UINT64_MAX, &cs2, &len2), -ENOTSUP);
	CHECK_EQ_INT(exec(b, "DROP TABLE nokey"), SQLITE_OK);
	/* a column more in one: no delta either */
	CHECK_EQ_INT(exec(a, "ALTER TABLE links ADD COLUMN extra"), SQLITE_OK);
	CHECK_EQ_INT(delta_diff(cur, base, UINT64_MAX, &cs2, &len2), -ENOTSUP);
	sqlite3_close(a);
	sqlite3_close(b);

	/* grown by more than max_growth bytes of pages in use: no diff; shrunk: a diff */
	char grown[PATH_MAX];
	test_fmt(grown, sizeof(grown), "%s/grown.db", tmp);
	a = open_db(cur);
	vacuum_into(a, grown);
	sqlite3_close(a);
	sqlite3 *g = open_db(grown);
	CHECK_EQ_INT(exec(g, "ALTER TABLE links DROP COLUMN extra"), SQLITE_OK);
	sqlite3_close(g);
	b = open_db(base);
	CHECK_EQ_INT(exec(b, "DELETE FROM links"), SQLITE_OK);
	sqlite3_close(b);
	g = open_db(grown);
	CHECK_EQ_INT(exec(g, "DELETE FROM links; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1"
			     " FROM n WHERE i < 5000) INSERT INTO links SELECT 7, 'path-' || i,"
			     " 'target' FROM n"),
		     SQLITE_OK);
	sqlite3_close(g);
	CHECK_EQ_INT(delta_diff(grown, base, 64 << 10, &cs2, &len2), -EFBIG);
	CHECK(cs2 == NULL);
	CHECK_EQ_INT(delta_diff(grown, base, 1 << 20, &cs2, &len2), 0);
	CHECK(len2 > 64 << 10);
	free(cs2);
	cs2 = NULL;
	CHECK_EQ_INT(delta_diff(base, grown, 64 << 10, &cs2, &len2), 0);
	free(cs2);
	cs2 = NULL;

	/* a catalog from before bad_blocks had a key gets one on open, duplicates dropped */
	char old[PATH_MAX];
	test_fmt(old, sizeof(old), "%s/old.db", tmp);
	if (CHECK_EQ_INT(catalog_open(old, true, &c), 0)) {
		CHECK_EQ_INT(exec(catalog_sqlite(c),
				  "DROP TABLE bad_blocks; CREATE TABLE bad_blocks(snap INTEGER NOT NULL,"
				  " path TEXT NOT NULL, block INTEGER NOT NULL);"
				  "CREATE INDEX bad_blocks_snap ON bad_blocks(snap);"
				  "INSERT INTO bad_blocks VALUES(1, 'a', 3), (1, 'a', 3), (2, 'b', 4)"),
			     SQLITE_OK);
		catalog_free(c);
	}
	if (CHECK_EQ_INT(catalog_open(old, false, &c), 0)) {
		CHECK_EQ_INT(count(catalog_sqlite(c), "SELECT count(*) FROM bad_blocks"), 2);
		CHECK_EQ_INT(count(catalog_sqlite(c), "SELECT count(*) FROM"
						      " pragma_table_info('bad_blocks') WHERE pk > 0"),
			     3);
		CHECK_EQ_INT(catalog_bad_block_add(c, 2, "b", 4), 0); /* again: no error */
		catalog_free(c);
	}

	/* the frame: only whole, unaltered, and between the generations it names */
	CHECK_EQ_INT(delta_frame(41, 42, cs, len, &framed, &flen), 0);
	CHECK_EQ_INT(delta_unframe(framed, flen, 41, 42, &got, &got_len), 0);
	CHECK(got_len == len && memcmp(got, cs, len) == 0);
	CHECK_EQ_INT(delta_unframe(framed, flen - 1, 41, 42, &got, &got_len), -EBADMSG);
	CHECK_EQ_INT(delta_unframe(framed, flen, 40, 41, &got, &got_len), -EBADMSG);
	CHECK_EQ_INT(delta_unframe(framed, 10, 41, 42, &got, &got_len), -EBADMSG);
	((uint8_t *)framed)[flen - 3] ^= 1;
	CHECK_EQ_INT(delta_unframe(framed, flen, 41, 42, &got, &got_len), -EBADMSG);
	free(framed);
	free(cs);
	TEST_RM_RF(tmp);
	return test_finish();
}
