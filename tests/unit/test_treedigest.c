/*
 * Unit tests for store/treedigest.h and the tree-shape rules of
 * catalog_file_add/catalog_file_foreach, and for manifests that carry the
 * digest (export refuses a damaged tree, import refuses a damaged manifest).
 */
#include "tests/unit/test.h"
#include "tests/unit/manifest_image.h"

#include "store/catalog.h"
#include "store/manifest.h"
#include "store/treedigest.h"

#include <limits.h>
#include <sqlite3.h>
#include <sys/stat.h>

#define T0 (1700000000LL * 1000000000)

static ChunkId id_of(const char *s)
{
	ChunkId id;
	chunk_hash(s, strlen(s), &id);
	return id;
}

static Catalog *open_fresh(char *tmp, size_t len, const char *name)
{
	char path[PATH_MAX];
	Catalog *c = NULL;
	if (!*tmp)
		test_tmpdir(tmp, len);
	snprintf(path, sizeof(path), "%s/%s", tmp, name);
	if (!CHECK_EQ_INT(catalog_open(path, true, &c), 0))
		return NULL;
	return c;
}

static void test_names(void)
{
	CHECK(catalog_name_valid("base", 4));
	CHECK(catalog_name_valid("...", 3));
	CHECK(!catalog_name_valid("", 0));
	CHECK(!catalog_name_valid(".", 1));
	CHECK(!catalog_name_valid("..", 2));
	CHECK(!catalog_name_valid("a/b", 3));
	CHECK(!catalog_name_valid("a\0b", 3)); /* a NUL inside the stored bytes */
	char long_name[NAME_MAX + 2];
	memset(long_name, 'a', sizeof(long_name));
	CHECK(catalog_name_valid(long_name, NAME_MAX));
	CHECK(!catalog_name_valid(long_name, NAME_MAX + 1));

	CHECK(catalog_abs_path_valid("/etc/postgresql", 15));
	CHECK(!catalog_abs_path_valid("/", 1));
	CHECK(!catalog_abs_path_valid("/..", 3));
	CHECK(!catalog_abs_path_valid("/a/../b", 7));
	CHECK(!catalog_abs_path_valid("/a//b", 5));
	CHECK(!catalog_abs_path_valid("/a/", 3));
	CHECK(!catalog_abs_path_valid("a/b", 3));

	CHECK(catalog_rel_path_valid("pg_tblspc/16384", 15));
	CHECK(!catalog_rel_path_valid("/pg_tblspc", 10));
	CHECK(!catalog_rel_path_valid("pg_tblspc/..", 12));
	CHECK(!catalog_rel_path_valid("", 0));
}

typedef struct Tree {
	Catalog *c;
	SnapshotInfo s;
	int64_t content;
} Tree;

/* root, dir "base", file "base/f" with a two-chunk list, symlink "l", link "base" */
static int make_tree(Tree *t, int64_t start)
{
	ChunkId ids[2] = {id_of("one"), id_of("two")};
	FileRow rows[] = {
		{.ino = 1, .parent = 1, .name = "", .mode = S_IFDIR | 0700},
		{.ino = 2, .parent = 1, .name = "base", .mode = S_IFDIR | 0700},
		{.ino = 3, .parent = 2, .name = "f", .mode = S_IFREG | 0600, .size = 70000},
		{.ino = 4, .parent = 1, .name = "l", .mode = S_IFLNK | 0777, .target = "base/f"},
		{.ino = 5, .parent = 5, .name = "/etc/extra", .mode = S_IFDIR | 0755},
	};
	int r = catalog_content_put(t->c, ids, 2, &t->content);
	t->s = (SnapshotInfo){.instance = "main", .type = "full", .start_time = start};
	if (r == 0)
		r = catalog_snapshot_begin(t->c, &t->s);
	rows[2].content = t->content;
	for (size_t i = 0; r == 0 && i < ELEMENTSOF(rows); i++)
		r = catalog_file_add(t->c, t->s.rowid, &rows[i]);
	if (r == 0)
		r = catalog_link_add(t->c, t->s.rowid, "base", "/srv/tblspc");
	if (r == 0)
		r = tree_digest_compute(t->c, t->s.rowid, &t->s.tree_digest);
	t->s.has_tree_digest = true;
	t->s.status = SNAP_STATUS_OK;
	t->s.stop_time = start + 1;
	if (r == 0)
		r = catalog_snapshot_finish(t->c, &t->s);
	return r;
}

static int sql(Catalog *c, const char *q)
{
	return sqlite3_exec(catalog_sqlite(c), q, NULL, NULL, NULL) == SQLITE_OK ? 0 : -EIO;
}

/* Every field of a row and of a link changes the digest; putting it back restores it. */
static void test_digest(void)
{
	static const char *const edits[][2] = {
		{"UPDATE files SET name = 'g' WHERE ino = 3", "UPDATE files SET name = 'f' WHERE ino = 3"},
		{"UPDATE files SET mode = mode | 4 WHERE ino = 3", "UPDATE files SET mode = mode & ~4 WHERE ino = 3"},
		{"UPDATE files SET uid = 9 WHERE ino = 3", "UPDATE files SET uid = 0 WHERE ino = 3"},
		{"UPDATE files SET gid = 9 WHERE ino = 3", "UPDATE files SET gid = 0 WHERE ino = 3"},
		{"UPDATE files SET mtime = 9 WHERE ino = 3", "UPDATE files SET mtime = 0 WHERE ino = 3"},
		{"UPDATE files SET size = 9 WHERE ino = 3", "UPDATE files SET size = 70000 WHERE ino = 3"},
		{"UPDATE files SET target = 'base/g' WHERE ino = 4", "UPDATE files SET target = 'base/f' WHERE ino = 4"},
		{"UPDATE files SET parent = 1 WHERE ino = 3", "UPDATE files SET parent = 2 WHERE ino = 3"},
		{"UPDATE links SET target = '/srv/other'", "UPDATE links SET target = '/srv/tblspc'"},
		{"CREATE TEMP TABLE saved AS SELECT id, list FROM contents;"
		 " UPDATE contents SET list = zeroblob(64)",
		 "UPDATE contents SET list = (SELECT list FROM temp.saved s WHERE s.id = contents.id);"
		 " DROP TABLE temp.saved"},
	};
	char tmp[64] = "";
	Tree t = {.c = open_fresh(tmp, sizeof(tmp), "catalog.db")};
	SnapshotInfo got = {0};
	ChunkId again;

	if (!t.c || !CHECK_EQ_INT(make_tree(&t, T0), 0))
		goto out;
	CHECK_EQ_INT(tree_digest_compute(t.c, t.s.rowid, &again), 0);
	CHECK(memcmp(again.b, t.s.tree_digest.b, sizeof(again.b)) == 0);
	/* recorded, read back, verified */
	if (CHECK_EQ_INT(catalog_snapshot_get(t.c, t.s.name, NULL, &got), 0)) {
		CHECK(got.has_tree_digest);
		CHECK(memcmp(got.tree_digest.b, t.s.tree_digest.b, sizeof(got.tree_digest.b)) == 0);
		CHECK_EQ_INT(tree_digest_verify(t.c, &got), 0);
		for (size_t i = 0; i < ELEMENTSOF(edits); i++) {
			if (!CHECK_EQ_INT(sql(t.c, edits[i][0]), 0))
				continue;
			if (!CHECK_EQ_INT(tree_digest_verify(t.c, &got), -EBADMSG))
				fprintf(stderr, "  not caught: %s\n", edits[i][0]);
			CHECK_EQ_INT(sql(t.c, edits[i][1]), 0);
			CHECK_EQ_INT(tree_digest_verify(t.c, &got), 0);
		}
		/* a digest of another length never matches */
		CHECK_EQ_INT(sql(t.c, "UPDATE snapshots SET tree_digest = x'00'"), 0);
		snapshot_info_clear(&got);
		if (CHECK_EQ_INT(catalog_snapshot_get(t.c, t.s.name, NULL, &got), 0))
			CHECK_EQ_INT(tree_digest_verify(t.c, &got), -EBADMSG);
		/* an older version's snapshot: no digest, only the shape is checked */
		CHECK_EQ_INT(sql(t.c, "UPDATE snapshots SET tree_digest = NULL"), 0);
		snapshot_info_clear(&got);
		if (CHECK_EQ_INT(catalog_snapshot_get(t.c, t.s.name, NULL, &got), 0)) {
			CHECK(!got.has_tree_digest);
			CHECK_EQ_INT(tree_digest_verify(t.c, &got), 0);
			CHECK_EQ_INT(sql(t.c, "UPDATE files SET name = '..' WHERE ino = 3"), 0);
			CHECK_EQ_INT(tree_digest_verify(t.c, &got), -EBADMSG);
		}
	}
out:
	snapshot_info_clear(&got);
	catalog_free(t.c);
	TEST_RM_RF(tmp);
}

static int count_rows(const FileRow *f _unused_, void *ud)
{
	(*(int *)ud)++;
	return 0;
}

/* Rows that would lead a consumer outside its tree: refused on the way in and on the way out. */
static void test_shape(void)
{
	static const char *const crafted[] = {
		"INSERT INTO files VALUES(?1, 9, 9, '/..', 16877, 0, 0, 0, 0, NULL, NULL)",
		"INSERT INTO files VALUES(?1, 9, 9, '/a/../..', 16877, 0, 0, 0, 0, NULL, NULL)",
		"INSERT INTO files VALUES(?1, 9, 2, '..', 33188, 0, 0, 0, 0, NULL, NULL)",
		"INSERT INTO files VALUES(?1, 9, 2, 'a/b', 33188, 0, 0, 0, 0, NULL, NULL)",
		"INSERT INTO files VALUES(?1, 9, 2, '', 33188, 0, 0, 0, 0, NULL, NULL)",
		"INSERT INTO files VALUES(?1, 9, 2, CAST(x'610062' AS TEXT), 33188, 0, 0, 0, 0, NULL, NULL)",
		"INSERT INTO files VALUES(?1, 9, 3, 'under_a_file', 33188, 0, 0, 0, 0, NULL, NULL)",
		"INSERT INTO files VALUES(?1, 9, 42, 'orphan', 33188, 0, 0, 0, 0, NULL, NULL)",
		"INSERT INTO files VALUES(?1, 9, 9, '/etc/x', 33188, 0, 0, 0, 0, NULL, NULL)",
		"INSERT INTO files VALUES(?1, 9, 1, 'dangling', 41471, 0, 0, 0, 0, NULL, NULL)",
		"UPDATE files SET parent = 4 WHERE snap = ?1 AND ino = 3",
		"UPDATE files SET name = 'root' WHERE snap = ?1 AND ino = 1",
		"DELETE FROM files WHERE snap = ?1 AND ino = 1",
		"INSERT INTO links VALUES(?1, '../escape', '/tmp')",
		"INSERT INTO links VALUES(?1, '/abs', '/tmp')",
	};
	char tmp[64] = "";
	Tree t = {.c = open_fresh(tmp, sizeof(tmp), "catalog.db")};
	int n = 0;

	if (!t.c || !CHECK_EQ_INT(make_tree(&t, T0), 0))
		goto out;
	CHECK_EQ_INT(catalog_file_foreach(t.c, t.s.rowid, count_rows, &n), 0);
	CHECK_EQ_INT(n, 5);
	/* on the way in */
	FileRow bad[] = {
		{.ino = 9, .parent = 9, .name = "/..", .mode = S_IFDIR | 0700},
		{.ino = 9, .parent = 2, .name = "..", .mode = S_IFREG | 0600},
		{.ino = 9, .parent = 2, .name = "x/y", .mode = S_IFREG | 0600},
		{.ino = 9, .parent = 2, .name = "l", .mode = S_IFLNK | 0777},
		{.ino = 1, .parent = 1, .name = "x", .mode = S_IFDIR | 0700},
		{.ino = 9, .parent = 10, .name = "later_parent", .mode = S_IFREG | 0600},
	};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++)
		CHECK_EQ_INT(catalog_file_add(t.c, t.s.rowid, &bad[i]), -EBADMSG);
	CHECK_EQ_INT(catalog_link_add(t.c, t.s.rowid, "../x", "/t"), -EBADMSG);
	CHECK_EQ_INT(catalog_link_add(t.c, t.s.rowid, "x", ""), -EBADMSG);
	/* on the way out: rows written behind the catalog's back */
	for (size_t i = 0; i < ELEMENTSOF(crafted); i++) {
		sqlite3 *db = catalog_sqlite(t.c);
		sqlite3_stmt *s = NULL;
		bool link = strstr(crafted[i], "links") != NULL;
		CHECK_EQ_INT(sqlite3_exec(db, "SAVEPOINT crafted", NULL, NULL, NULL), SQLITE_OK);
		if (CHECK_EQ_INT(sqlite3_prepare_v2(db, crafted[i], -1, &s, NULL), SQLITE_OK)) {
			sqlite3_bind_int64(s, 1, t.s.rowid);
			CHECK_EQ_INT(sqlite3_step(s), SQLITE_DONE);
		}
		sqlite3_finalize(s);
		n = 0;
		if (link) {
			CHECK_EQ_INT(tree_digest_compute(t.c, t.s.rowid, &(ChunkId){0}), -EBADMSG);
		} else if (!CHECK_EQ_INT(catalog_file_foreach(t.c, t.s.rowid, count_rows, &n),
					 -EBADMSG)) {
			fprintf(stderr, "  not refused: %s\n", crafted[i]);
		}
		CHECK_EQ_INT(sqlite3_exec(db, "ROLLBACK TO crafted; RELEASE crafted", NULL, NULL, NULL),
			     SQLITE_OK);
	}
	n = 0;
	CHECK_EQ_INT(catalog_file_foreach(t.c, t.s.rowid, count_rows, &n), 0);
	CHECK_EQ_INT(n, 5);
out:
	catalog_free(t.c);
	TEST_RM_RF(tmp);
}

/* A catalog made before the digest gets the column; its snapshots stay readable. */
static void test_migration(void)
{
	char tmp[64] = "", path[PATH_MAX];
	Tree t = {.c = open_fresh(tmp, sizeof(tmp), "catalog.db")};
	SnapshotInfo got = {0};
	sqlite3 *db = NULL;

	if (!t.c || !CHECK_EQ_INT(make_tree(&t, T0), 0))
		goto out;
	catalog_free(t.c);
	t.c = NULL;
	snprintf(path, sizeof(path), "%s/catalog.db", tmp);
	if (CHECK_EQ_INT(sqlite3_open(path, &db), SQLITE_OK))
		CHECK_EQ_INT(sqlite3_exec(db, "ALTER TABLE snapshots DROP COLUMN tree_digest", NULL,
					  NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	if (!CHECK_EQ_INT(catalog_open(path, false, &t.c), 0))
		goto out;
	if (CHECK_EQ_INT(catalog_snapshot_get(t.c, "latest", NULL, &got), 0)) {
		CHECK(!got.has_tree_digest);
		CHECK_EQ_INT(tree_digest_verify(t.c, &got), 0);
	}
out:
	snapshot_info_clear(&got);
	catalog_free(t.c);
	TEST_RM_RF(tmp);
}

/* Rename file ino 3 inside a manifest image. */
static int damage_image(void **buf, size_t *len)
{
	sqlite3 *db = NULL;
	sqlite3_int64 size = 0;
	unsigned char *copy = sqlite3_malloc64(*len), *out;
	int rc = copy ? sqlite3_open(":memory:", &db) : SQLITE_NOMEM;

	if (rc == SQLITE_OK) {
		memcpy(copy, *buf, *len);
		rc = sqlite3_deserialize(db, "main", copy, (sqlite3_int64)*len, (sqlite3_int64)*len,
					 SQLITE_DESERIALIZE_FREEONCLOSE | SQLITE_DESERIALIZE_RESIZEABLE);
		copy = NULL;
	}
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, "UPDATE files SET name = 'renamed' WHERE ino = 3", NULL, NULL, NULL);
	if (rc == SQLITE_OK && (out = sqlite3_serialize(db, "main", &size, 0))) {
		free(*buf);
		*buf = malloc((size_t)size);
		if (*buf)
			memcpy(*buf, out, (size_t)size);
		*len = (size_t)size;
		sqlite3_free(out);
	}
	sqlite3_free(copy);
	sqlite3_close(db);
	return rc == SQLITE_OK && *buf ? 0 : -EIO;
}

static void test_manifests(void)
{
	char tmp[64] = "";
	Tree t = {.c = open_fresh(tmp, sizeof(tmp), "catalog.db")};
	Catalog *other = open_fresh(tmp, sizeof(tmp), "other.db");
	void *img = NULL;
	size_t len = 0;
	int64_t rowid = 0;

	if (!t.c || !other || !CHECK_EQ_INT(make_tree(&t, T0), 0))
		goto out;
	if (!CHECK_EQ_INT(test_manifest_image(t.c, t.s.rowid, &img, &len), 0))
		goto out;
	/* a damaged catalog is not exported over a good manifest */
	CHECK_EQ_INT(sql(t.c, "UPDATE files SET name = 'g' WHERE ino = 3"), 0);
	{
		void *bad = NULL;
		size_t bad_len = 0;
		CHECK_EQ_INT(test_manifest_image(t.c, t.s.rowid, &bad, &bad_len), -EBADMSG);
		free(bad);
	}
	/* a manifest whose rows do not give its digest is not imported */
	void *copy = malloc(len);
	size_t copy_len = len;
	if (CHECK(copy)) {
		memcpy(copy, img, len);
		if (CHECK_EQ_INT(damage_image(&copy, &copy_len), 0))
			CHECK_EQ_INT(manifest_import(other, copy, copy_len, &rowid), -EBADMSG);
		free(copy);
	}
	/* the good one is, with its digest, which verifies */
	if (CHECK_EQ_INT(manifest_import(other, img, len, &rowid), 0)) {
		SnapshotInfo got = {0};
		if (CHECK_EQ_INT(catalog_snapshot_get(other, t.s.name, NULL, &got), 0)) {
			CHECK(got.has_tree_digest);
			CHECK(memcmp(got.tree_digest.b, t.s.tree_digest.b, sizeof(got.tree_digest.b)) == 0);
			CHECK_EQ_INT(tree_digest_verify(other, &got), 0);
		}
		snapshot_info_clear(&got);
	}
out:
	free(img);
	catalog_free(other);
	catalog_free(t.c);
	TEST_RM_RF(tmp);
}

int main(void)
{
	test_names();
	test_digest();
	test_shape();
	test_migration();
	test_manifests();
	return test_finish();
}
