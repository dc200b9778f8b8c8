/* Unit tests for store/catalog_tree.c: snapshot trees shared between snapshots (format 2). */
#include "tests/unit/test.h"
#include "tests/unit/manifest_image.h"

#include "common/util.h"
#include "store/catalog.h"
#include "store/manifest.h"
#include "store/treedigest.h"

#include <limits.h>
#include <sqlite3.h>
#include <sys/stat.h>

#define T0 (1700000000LL * 1000000000)
#define N_BASE 40

static Catalog *open_fresh(char *tmp, size_t len)
{
	char path[PATH_MAX];
	Catalog *c = NULL;
	test_tmpdir(tmp, len);
	snprintf(path, sizeof(path), "%s/catalog.db", tmp);
	if (!CHECK_EQ_INT(catalog_open(path, true, &c), 0))
		return NULL;
	catalog_set_format(c, 2);
	return c;
}

static uint64_t count_sql(Catalog *c, const char *sql)
{
	sqlite3_stmt *s = NULL;
	uint64_t n = UINT64_MAX;
	if (sqlite3_prepare_v2(catalog_sqlite(c), sql, -1, &s, NULL) == SQLITE_OK &&
	    sqlite3_step(s) == SQLITE_ROW)
		n = (uint64_t)sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return n;
}

static int64_t content_of(Catalog *c, const char *text)
{
	ChunkId id;
	int64_t content = 0;
	chunk_hash(text, strlen(text), &id);
	CHECK_EQ_INT(catalog_content_put(c, &id, 1, &content), 0);
	return content;
}

/*
 * A data directory in a writer's order (not name order, inos with gaps):
 * base/ with N_BASE files, pg_wal/ with one 16 MiB segment, global/pg_control,
 * an empty directory, a symlink, and an extra root. changed: the content of
 * base/f7; mtime: the mtime of global/pg_control.
 */
static int64_t make_tree(Catalog *c, int64_t start, const char *changed, int64_t mtime)
{
	SnapshotInfo s = {.instance = "main", .type = "full", .start_time = start};
	char names[N_BASE][16];
	uint64_t ino = 1;
	int r = catalog_snapshot_begin(c, &s);
	FileRow root = {.ino = ino, .parent = 1, .name = "", .mode = S_IFDIR | 0700};
	r = r ?: catalog_file_add(c, s.rowid, &root);
	FileRow wal = {.ino = ino += 3, .parent = 1, .name = "pg_wal", .mode = S_IFDIR | 0700};
	FileRow base = {.ino = ++ino, .parent = 1, .name = "base", .mode = S_IFDIR | 0700};
	FileRow global = {.ino = ++ino, .parent = 1, .name = "global", .mode = S_IFDIR | 0700,
			  .uid = 70, .gid = 70, .mtime_ns = T0};
	FileRow empty = {.ino = ++ino, .parent = 1, .name = "pg_notify", .mode = S_IFDIR | 0700};
	FileRow link = {.ino = ++ino, .parent = 1, .name = "pg_tblspc_link", .mode = S_IFLNK | 0777,
			.size = 4, .target = "/tmp"};
	r = r ?: catalog_file_add(c, s.rowid, &wal);
	r = r ?: catalog_file_add(c, s.rowid, &base);
	r = r ?: catalog_file_add(c, s.rowid, &global);
	r = r ?: catalog_file_add(c, s.rowid, &empty);
	r = r ?: catalog_file_add(c, s.rowid, &link);
	FileRow seg = {.ino = ++ino, .parent = wal.ino, .name = "000000010000000000000003",
		       .mode = S_IFREG | 0600, .size = 16 << 20, .content = content_of(c, "seg")};
	r = r ?: catalog_file_add(c, s.rowid, &seg);
	for (int i = N_BASE - 1; i >= 0; i--) { /* reverse name order */
		snprintf(names[i], sizeof(names[i]), "f%d", i);
		FileRow f = {.ino = ++ino, .parent = base.ino, .name = names[i],
			     .mode = S_IFREG | 0600, .size = 8192, .mtime_ns = -5 + i,
			     .content = content_of(c, i == 7 ? changed : names[i])};
		r = r ?: catalog_file_add(c, s.rowid, &f);
	}
	FileRow ctl = {.ino = ++ino, .parent = global.ino, .name = "pg_control",
		       .mode = S_IFREG | 0600, .size = 8192, .mtime_ns = mtime,
		       .content = content_of(c, "control")};
	FileRow extra = {.ino = ++ino, .parent = ino, .name = "/etc/pg", .mode = S_IFDIR | 0755};
	r = r ?: catalog_file_add(c, s.rowid, &ctl);
	r = r ?: catalog_file_add(c, s.rowid, &extra);
	FileRow conf = {.ino = ++ino, .parent = extra.ino, .name = "pg.conf", .mode = S_IFREG | 0644,
			.size = 3, .content = content_of(c, "conf")};
	r = r ?: catalog_file_add(c, s.rowid, &conf);
	r = r ?: catalog_tree_share(c, s.rowid);
	s.status = SNAP_STATUS_OK;
	s.stop_time = start + 1000;
	r = r ?: catalog_snapshot_finish(c, &s);
	return CHECK_EQ_INT(r, 0) ? s.rowid : -1;
}

/* The rows of a snapshot as "path mode size content target" lines, with checks on the shape. */
typedef struct Listing {
	char lines[64][160];
	char paths[64][128];
	uint64_t inos[64];
	size_t n;
	bool shape_ok;
} Listing;

static int list_row(const FileRow *f, void *userdata)
{
	Listing *l = userdata;
	char path[128] = "";
	if (l->n == ELEMENTSOF(l->lines))
		return -E2BIG;
	/* preorder, inos dense from 1, parents already listed */
	if (f->ino != l->n + 1)
		l->shape_ok = false;
	if (f->parent != f->ino) {
		size_t p = (size_t)f->parent - 1;
		if (p >= l->n)
			l->shape_ok = false;
		else
			test_fmt(path, sizeof(path), "%s/%s", l->paths[p], f->name);
	} else {
		test_fmt(path, sizeof(path), "%s", f->name);
	}
	snprintf(l->paths[l->n], sizeof(l->paths[0]), "%s", path);
	snprintf(l->lines[l->n], sizeof(l->lines[0]), "%s %o %u:%u %lld %llu %lld %s", path,
		 (unsigned)f->mode, (unsigned)f->uid, (unsigned)f->gid, (long long)f->mtime_ns,
		 (unsigned long long)f->size, (long long)f->content, f->target ? f->target : "-");
	l->inos[l->n++] = f->ino;
	return 0;
}

static int list(Catalog *c, int64_t snap, Listing *l)
{
	*l = (Listing){.shape_ok = true};
	return catalog_file_foreach(c, snap, list_row, l);
}

static bool has_line(const Listing *l, const char *prefix)
{
	for (size_t i = 0; i < l->n; i++)
		if (strncmp(l->lines[i], prefix, strlen(prefix)) == 0)
			return true;
	return false;
}

static void test_share_and_read(void)
{
	char tmp[PATH_MAX];
	Catalog *c = open_fresh(tmp, sizeof(tmp));
	Listing a, b;
	uint64_t seg = 0;
	if (!c)
		return;
	int64_t s1 = make_tree(c, T0, "f7", T0);
	CHECK(s1 > 0);
	CHECK_EQ_INT(count_sql(c, "SELECT count(*) FROM files"), 0);
	/* forest, root, base, pg_wal, global, pg_notify, the extra root */
	CHECK_EQ_INT(count_sql(c, "SELECT count(*) FROM dirs"), 7);
	CHECK_EQ_INT(list(c, s1, &a), 0);
	CHECK(a.shape_ok);
	CHECK_EQ_INT(a.n, 1 + 5 + 1 + N_BASE + 1 + 1 + 1);
	CHECK(has_line(&a, " 40700 0:0 0 0 0 -")); /* the root, named "" */
	CHECK_EQ_STR(a.paths[1], "/base"); /* name order: base < global < pg_notify < ... */
	CHECK_EQ_STR(a.paths[2], "/base/f0");
	CHECK(has_line(&a, "/base/f1 100600 0:0 -4 8192"));
	CHECK(has_line(&a, "/global 40700 70:70 1700000000000000000 0"));
	CHECK(has_line(&a, "/pg_tblspc_link 120777 0:0 0 4 0 /tmp"));
	CHECK(has_line(&a, "/pg_notify 40700"));
	CHECK(has_line(&a, "/etc/pg 40755"));
	CHECK(has_line(&a, "/etc/pg/pg.conf 100644"));
	CHECK_EQ_STR(a.paths[a.n - 2], "/etc/pg"); /* extra roots after the data directory */
	FileRow root;
	uint32_t subdirs = 0;
	CHECK_EQ_INT(catalog_tree_root(c, (int64_t)count_sql(c, "SELECT tree FROM snapshots"), &root,
				       &subdirs), 0);
	CHECK_EQ_INT(root.mode, S_IFDIR | 0700);
	CHECK_EQ_INT(subdirs, 4); /* base, global, pg_notify, pg_wal */
	CHECK_EQ_INT(catalog_snapshot_wal_seg_size(c, s1, &seg), 0);
	CHECK_EQ_INT(seg, 16 << 20);

	/* one changed file: its directory, the root and the forest are new; the rest is shared */
	int64_t s2 = make_tree(c, T0 + 2000, "f7 changed", T0);
	CHECK_EQ_INT(count_sql(c, "SELECT count(*) FROM dirs"), 7 + 3);
	CHECK_EQ_INT(list(c, s2, &b), 0);
	CHECK(b.shape_ok);
	CHECK_EQ_INT(b.n, a.n);
	for (size_t i = 0; i < a.n; i++)
		if (strncmp(a.lines[i], "/base/f7 ", 9) != 0)
			CHECK_EQ_STR(a.lines[i], b.lines[i]);
	/* the same tree again shares everything */
	int64_t s3 = make_tree(c, T0 + 4000, "f7 changed", T0);
	CHECK_EQ_INT(count_sql(c, "SELECT count(*) FROM dirs"), 10);
	/* an mtime deep down: that directory and the ones above it */
	int64_t s4 = make_tree(c, T0 + 6000, "f7 changed", T0 + 1);
	CHECK_EQ_INT(count_sql(c, "SELECT count(*) FROM dirs"), 13);

	/* gc: what only s1 reached goes, the others stay whole */
	CatalogGcResult g = {0};
	CHECK_EQ_INT(catalog_snapshot_delete(c, s1), 0);
	CHECK_EQ_INT(catalog_gc(c, &g), 0);
	catalog_gc_result_clear(&g);
	CHECK_EQ_INT(count_sql(c, "SELECT count(*) FROM dirs"), 13 - 3); /* s1's base, root, forest */
	CHECK_EQ_INT(list(c, s2, &a), 0);
	CHECK_EQ_INT(a.n, b.n);
	for (size_t i = 0; i < a.n; i++)
		CHECK_EQ_STR(a.lines[i], b.lines[i]);
	CHECK(count_sql(c, "SELECT count(*) FROM contents") > 0);
	CHECK_EQ_INT(catalog_snapshot_delete(c, s2), 0);
	CHECK_EQ_INT(catalog_snapshot_delete(c, s3), 0);
	CHECK_EQ_INT(catalog_snapshot_delete(c, s4), 0);
	CHECK_EQ_INT(catalog_gc(c, &g), 0);
	catalog_gc_result_clear(&g);
	CHECK_EQ_INT(count_sql(c, "SELECT count(*) FROM dirs"), 0);
	CHECK_EQ_INT(count_sql(c, "SELECT count(*) FROM contents"), 0);
	catalog_free(c);
	TEST_RM_RF(tmp);
}

static int count_row(const FileRow *f, void *userdata)
{
	(void)f;
	(*(int *)userdata)++;
	return 0;
}

/*
 * Tree root/d/x, shared: rows d (entries: x), root (entries: d -> d's row),
 * forest. Rewrite the root's row so that d's subdirectory is the root's row
 * itself, with a matching hash: only the walk's depth limit stops it.
 */
static int make_loop(Catalog *c)
{
	sqlite3_stmt *s = NULL, *u = NULL;
	unsigned char blob[256];
	int rc = sqlite3_prepare_v2(catalog_sqlite(c), "SELECT id, entries FROM dirs WHERE id ="
				    " (SELECT max(id) - 1 FROM dirs)", -1, &s, NULL);
	if (rc != SQLITE_OK || sqlite3_step(s) != SQLITE_ROW) {
		sqlite3_finalize(s);
		return -1;
	}
	int64_t id = sqlite3_column_int64(s, 0);
	size_t len = (size_t)sqlite3_column_bytes(s, 1);
	memcpy(blob, sqlite3_column_blob(s, 1), MIN(len, sizeof(blob)));
	sqlite3_finalize(s);
	if (len > sizeof(blob) || id > 127 || blob[len - 1] != id - 1)
		return -1;
	blob[len - 1] = (unsigned char)id;
	ChunkId h;
	chunk_hash(blob, len, &h);
	rc = sqlite3_prepare_v2(catalog_sqlite(c), "UPDATE dirs SET hash = ?2, entries = ?3 WHERE id = ?1",
				-1, &u, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_int64(u, 1, id);
		sqlite3_bind_blob(u, 2, h.b, sizeof(h.b), SQLITE_STATIC);
		sqlite3_bind_blob(u, 3, blob, (int)len, SQLITE_STATIC);
		rc = sqlite3_step(u) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
	}
	sqlite3_finalize(u);
	return rc == SQLITE_OK ? 0 : -1;
}

/* Flip one bit of byte off of the entries of the dirs row id_sql names (its hash stays). */
static int flip_byte(Catalog *c, const char *id_sql, size_t off)
{
	char sql[256];
	sqlite3_stmt *s = NULL;
	int rc;
	int64_t id = (int64_t)count_sql(c, id_sql);
	test_fmt(sql + 128, 128, "SELECT entries FROM dirs WHERE id = %lld", (long long)id);
	unsigned char blob[4096];
	size_t len = 0;
	rc = sqlite3_prepare_v2(catalog_sqlite(c), sql + 128, -1, &s, NULL);
	if (rc == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW) {
		len = MIN((size_t)sqlite3_column_bytes(s, 0), sizeof(blob));
		memcpy(blob, sqlite3_column_blob(s, 0), len);
	}
	sqlite3_finalize(s);
	if (len <= off)
		return -1;
	blob[off] ^= 1;
	test_fmt(sql, 128, "UPDATE dirs SET entries = ?1 WHERE id = %lld", (long long)id);
	rc = sqlite3_prepare_v2(catalog_sqlite(c), sql, -1, &s, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_blob(s, 1, blob, (int)len, SQLITE_STATIC);
		rc = sqlite3_step(s) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
	}
	sqlite3_finalize(s);
	return rc == SQLITE_OK ? 0 : -1;
}

static void test_damage(void)
{
	char tmp[PATH_MAX];
	Catalog *c = open_fresh(tmp, sizeof(tmp));
	int n = 0;
	if (!c)
		return;
	int64_t s1 = make_tree(c, T0, "f7", T0);
	int64_t s2 = make_tree(c, T0 + 2000, "f7 changed", T0);
	uint64_t dirs = count_sql(c, "SELECT count(*) FROM dirs");
	/* one flipped bit in the directory only s1 has: s1 is damage, s2 reads, gc refuses */
	CHECK_EQ_INT(flip_byte(c, "SELECT min(id) FROM dirs WHERE n = 40", 6), 0);
	CHECK_EQ_INT(catalog_file_foreach(c, s1, count_row, &n), -EBADMSG);
	n = 0;
	CHECK_EQ_INT(catalog_file_foreach(c, s2, count_row, &n), 0);
	CHECK(n > N_BASE);
	CatalogGcResult g = {0};
	CHECK_EQ_INT(catalog_snapshot_delete(c, s2), 0);
	CHECK_EQ_INT(catalog_gc(c, &g), -EBADMSG);
	catalog_gc_result_clear(&g);
	CHECK_EQ_INT(count_sql(c, "SELECT count(*) FROM dirs"), dirs);

	/* a directory naming itself as a subdirectory: a loop is damage, not a hang */
	catalog_free(c);
	TEST_RM_RF(tmp);
	c = open_fresh(tmp, sizeof(tmp));
	if (!c)
		return;
	SnapshotInfo s = {.instance = "main", .type = "full", .start_time = T0 + 9000};
	CHECK_EQ_INT(catalog_snapshot_begin(c, &s), 0);
	FileRow root = {.ino = 1, .parent = 1, .name = "", .mode = S_IFDIR | 0700};
	FileRow d = {.ino = 2, .parent = 1, .name = "d", .mode = S_IFDIR | 0700};
	FileRow dup1 = {.ino = 3, .parent = 2, .name = "x", .mode = S_IFREG | 0600};
	FileRow dup2 = {.ino = 4, .parent = 2, .name = "x", .mode = S_IFREG | 0600};
	CHECK_EQ_INT(catalog_file_add(c, s.rowid, &root), 0);
	CHECK_EQ_INT(catalog_file_add(c, s.rowid, &d), 0);
	CHECK_EQ_INT(catalog_file_add(c, s.rowid, &dup1), 0);
	CHECK_EQ_INT(catalog_file_add(c, s.rowid, &dup2), 0);
	/* two entries of one name are no tree: refused, the rows stay as they were */
	CHECK_EQ_INT(catalog_tree_share(c, s.rowid), -EBADMSG);
	CHECK_EQ_INT(count_sql(c, "SELECT count(*) FROM files"), 4);
	CHECK_EQ_INT(count_sql(c, "SELECT count(*) FROM dirs"), 0);
	CHECK_EQ_INT(sqlite3_exec(catalog_sqlite(c), "DELETE FROM files WHERE ino = 4", NULL, NULL,
				  NULL), SQLITE_OK);
	CHECK_EQ_INT(catalog_tree_share(c, s.rowid), 0);
	/* point d's entry at the root's own directory row: d contains d contains d ... */
	CHECK_EQ_INT(make_loop(c), 0);
	n = 0;
	CHECK_EQ_INT(catalog_file_foreach(c, s.rowid, count_row, &n), -EBADMSG);
	CHECK(n > 100);
	CHECK_EQ_INT(catalog_tree_mark_live(c), 0); /* gc's walk visits each directory once */
	catalog_free(c);
	TEST_RM_RF(tmp);
}

/* A catalog of an earlier build, with a table the schema does not list, gets dirs on open. */
static void test_migration(void)
{
	char tmp[PATH_MAX], path[PATH_MAX];
	Catalog *c = open_fresh(tmp, sizeof(tmp));
	if (!c)
		return;
	CHECK_EQ_INT(sqlite3_exec(catalog_sqlite(c), "DROP TABLE dirs; CREATE TABLE manifest_state(x)",
				  NULL, NULL, NULL), SQLITE_OK);
	catalog_free(c);
	test_fmt(path, sizeof(path), "%s/catalog.db", tmp);
	if (CHECK_EQ_INT(catalog_open(path, false, &c), 0)) {
		CHECK_EQ_INT(count_sql(c, "SELECT count(*) FROM dirs"), 0);
		catalog_free(c);
	}
	TEST_RM_RF(tmp);
}

static int no_missing(const char *snapshot, const ChunkId *id, void *userdata)
{
	(void)snapshot, (void)id;
	(*(int *)userdata)++;
	return 0;
}

static int no_damage(const char *snapshot, const char *path, void *userdata)
{
	(void)snapshot, (void)path;
	(*(int *)userdata)++;
	return 0;
}

/* check's scans over a snapshot whose files have no content at all (empty files only) */
static void test_scans_without_contents(void)
{
	char tmp[PATH_MAX];
	Catalog *c = open_fresh(tmp, sizeof(tmp));
	int n = 0;
	ChunkId any = {{1}};
	if (!c)
		return;
	SnapshotInfo s = {.instance = "main", .type = "full", .start_time = T0};
	FileRow root = {.ino = 1, .parent = 1, .name = "", .mode = S_IFDIR | 0700};
	FileRow empty = {.ino = 2, .parent = 1, .name = "empty", .mode = S_IFREG | 0600};
	CHECK_EQ_INT(catalog_snapshot_begin(c, &s), 0);
	CHECK_EQ_INT(catalog_file_add(c, s.rowid, &root), 0);
	CHECK_EQ_INT(catalog_file_add(c, s.rowid, &empty), 0);
	CHECK_EQ_INT(catalog_tree_share(c, s.rowid), 0);
	s.status = SNAP_STATUS_OK;
	s.stop_time = T0 + 1;
	CHECK_EQ_INT(catalog_snapshot_finish(c, &s), 0);
	CHECK_EQ_INT(catalog_check_references(c, no_missing, &n), 0);
	CHECK_EQ_INT(catalog_find_damage(c, &any, 1, no_damage, &n), 0);
	CHECK_EQ_INT(n, 0);
	catalog_free(c);
	TEST_RM_RF(tmp);
}

/* ---- format 3: carriers, and manifests that carry each directory and list once ---- */

typedef struct Marks {
	int64_t v[16];
	size_t n;
} Marks;

static int note_carrier(int64_t snap, const char *name _unused_, void *ud)
{
	Marks *m = ud;
	if (m->n < ELEMENTSOF(m->v))
		m->v[m->n++] = snap;
	return 0;
}

/* Rows of table in a manifest image. */
static uint64_t image_rows(const void *buf, size_t len, const char *table)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;
	uint64_t n = UINT64_MAX;
	unsigned char *copy = sqlite3_malloc64(len);
	char sql[128];
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", table);
	if (copy && sqlite3_open(":memory:", &db) == SQLITE_OK) {
		memcpy(copy, buf, len);
		if (sqlite3_deserialize(db, "main", copy, (sqlite3_int64)len, (sqlite3_int64)len,
					SQLITE_DESERIALIZE_FREEONCLOSE) == SQLITE_OK &&
		    sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
			n = (uint64_t)sqlite3_column_int64(s, 0);
	} else {
		sqlite3_free(copy);
	}
	sqlite3_finalize(s);
	sqlite3_close(db);
	return n;
}

/* A snapshot's rows as lines with each content named by its hash (portable between catalogs). */
typedef struct HashListing {
	Catalog *c;
	char lines[64][256];
	size_t n;
} HashListing;

static int hash_row(const FileRow *f, void *userdata)
{
	HashListing *l = userdata;
	char hex[65] = "-";
	if (f->content) {
		sqlite3_stmt *s = NULL;
		char sql[96];
		snprintf(sql, sizeof(sql), "SELECT hex(hash) FROM contents WHERE id = %lld",
			 (long long)f->content);
		if (sqlite3_prepare_v2(catalog_sqlite(l->c), sql, -1, &s, NULL) == SQLITE_OK &&
		    sqlite3_step(s) == SQLITE_ROW)
			snprintf(hex, sizeof(hex), "%s", (const char *)sqlite3_column_text(s, 0));
		sqlite3_finalize(s);
	}
	if (l->n == ELEMENTSOF(l->lines))
		return -E2BIG;
	snprintf(l->lines[l->n++], sizeof(l->lines[0]), "%llu %llu %s %o %u:%u %lld %llu %s %s",
		 (unsigned long long)f->ino, (unsigned long long)f->parent, f->name, f->mode, f->uid,
		 f->gid, (long long)f->mtime_ns, (unsigned long long)f->size, hex,
		 f->target ? f->target : "-");
	return 0;
}

/* A copy of a manifest image renamed to name (malloc'd, *ret_len), or NULL. */
static void *image_renamed(const void *buf, size_t len, const char *name, size_t *ret_len)
{
	sqlite3 *db = NULL;
	unsigned char *copy = sqlite3_malloc64(len), *out = NULL;
	sqlite3_int64 size = 0;
	void *ret = NULL;
	char sql[128];
	snprintf(sql, sizeof(sql), "UPDATE snapshots SET name = '%s'", name);
	if (copy && sqlite3_open(":memory:", &db) == SQLITE_OK) {
		memcpy(copy, buf, len);
		if (sqlite3_deserialize(db, "main", copy, (sqlite3_int64)len, (sqlite3_int64)len,
					SQLITE_DESERIALIZE_FREEONCLOSE | SQLITE_DESERIALIZE_RESIZEABLE) ==
			    SQLITE_OK &&
		    sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK)
			out = sqlite3_serialize(db, "main", &size, 0);
	} else {
		sqlite3_free(copy);
	}
	sqlite3_close(db);
	if (out && (ret = malloc((size_t)size))) {
		memcpy(ret, out, (size_t)size);
		*ret_len = (size_t)size;
	}
	sqlite3_free(out);
	return ret;
}

static void same_listing(Catalog *a, int64_t sa, Catalog *b, int64_t sb)
{
	HashListing *la = calloc(1, sizeof(*la)), *lb = calloc(1, sizeof(*lb));
	if (la && lb) {
		la->c = a;
		lb->c = b;
		if (CHECK_EQ_INT(catalog_file_foreach(a, sa, hash_row, la), 0) &&
		    CHECK_EQ_INT(catalog_file_foreach(b, sb, hash_row, lb), 0) &&
		    CHECK_EQ_INT(la->n, lb->n))
			for (size_t i = 0; i < la->n; i++)
				CHECK_EQ_STR(la->lines[i], lb->lines[i]);
		CHECK(la->n > N_BASE);
	}
	free(la);
	free(lb);
}

/*
 * Carriers from a known snapshot on (repo_manifests_sync's common case): only items
 * never carried are looked for, only in the snapshots from from_snap on.
 */
static void test_carriers_new(void)
{
	char tmp[PATH_MAX];
	Catalog *c = open_fresh(tmp, sizeof(tmp));
	Marks k = {0};
	if (!c)
		return;
	catalog_set_format(c, 3);
	int64_t s1 = make_tree(c, T0, "f7", T0);
	/* no snapshot may use them: nothing is placed, nothing is read */
	CHECK_EQ_INT(catalog_idblocks_assign_carriers(c, INT64_MAX, note_carrier, &k), 0);
	CHECK_EQ_INT(k.n, 0);
	CHECK_EQ_INT(count_sql(c, "SELECT count(*) FROM dirs WHERE carrier IS NULL"), 7);
	CHECK_EQ_INT(catalog_idblocks_assign_carriers(c, s1, note_carrier, &k), 0);
	CHECK_EQ_INT(k.n, 1);
	CHECK_EQ_INT(count_sql(c, "SELECT count(*) FROM dirs WHERE carrier IS NULL"), 0);
	/* a child: its 3 new directories and its list go to it; neither its parent nor
	 * the 4 directories it shares with it (carried already) are read: damaged, a walk
	 * of them would fail */
	int64_t s2 = make_tree(c, T0 + 2000, "f7 changed", T0);
	CHECK_EQ_INT(sqlite3_exec(catalog_sqlite(c), "UPDATE snapshots SET tree = 999999 WHERE id = 1;"
				  "UPDATE dirs SET entries = x'0001' WHERE carrier = 1",
				  NULL, NULL, NULL), SQLITE_OK);
	k.n = 0;
	CHECK_EQ_INT(catalog_idblocks_assign_carriers(c, s2, note_carrier, &k), 0);
	if (CHECK_EQ_INT(k.n, 1))
		CHECK_EQ_INT(k.v[0], s2);
	CHECK_EQ_INT(count_sql(c, "SELECT count(*) FROM dirs WHERE carrier = 2"), 3);
	CHECK_EQ_INT(count_sql(c, "SELECT count(*) FROM contents WHERE carrier = 2"), 1);
	CHECK_EQ_INT(count_sql(c, "SELECT count(*) FROM contents WHERE carrier IS NULL"), 0);
	/* found by the carrier indexes, not by scanning the tables */
	CHECK_EQ_INT(count_sql(c, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND"
				  " name IN ('contents_carrier', 'dirs_carrier', 'idblocks_carrier')"), 3);
	catalog_free(c);
	TEST_RM_RF(tmp);
}

static void test_carriers(void)
{
	char tmp[PATH_MAX], path[PATH_MAX];
	Catalog *c = open_fresh(tmp, sizeof(tmp)), *d = NULL, *e = NULL;
	void *m1 = NULL, *m2 = NULL, *m2b = NULL;
	size_t l1 = 0, l2 = 0, l2b = 0, missing = 0;
	int64_t i1 = 0, i2 = 0, i3 = 0;
	Marks k = {0};
	if (!c)
		return;
	catalog_set_format(c, 3);
	int64_t s1 = make_tree(c, T0, "f7", T0);
	int64_t s2 = make_tree(c, T0 + 2000, "f7 changed", T0);
	/* each item goes to the first snapshot that uses it; both manifests are to be written */
	CHECK_EQ_INT(catalog_idblocks_assign_carriers(c, 0, note_carrier, &k), 0);
	CHECK_EQ_INT(k.n, 2);
	CHECK_EQ_INT(count_sql(c, "SELECT count(*) FROM dirs WHERE carrier = 1"), 7);
	CHECK_EQ_INT(count_sql(c, "SELECT count(*) FROM dirs WHERE carrier = 2"), 3);
	CHECK_EQ_INT(count_sql(c, "SELECT count(*) FROM contents WHERE carrier = 2"), 1);
	CHECK_EQ_INT(count_sql(c, "SELECT count(*) FROM contents WHERE carrier IS NULL"), 0);
	/* nothing new: no rewrite */
	k.n = 0;
	CHECK_EQ_INT(catalog_idblocks_assign_carriers(c, 0, note_carrier, &k), 0);
	CHECK_EQ_INT(k.n, 0);

	/* s2's manifest: only its 3 new directories and the changed list, no file rows */
	if (!CHECK_EQ_INT(test_manifest_image(c, s1, &m1, &l1), 0) ||
	    !CHECK_EQ_INT(test_manifest_image(c, s2, &m2, &l2), 0))
		goto out;
	CHECK_EQ_INT(image_rows(m1, l1, "dirs"), 7);
	/* a failed export leaves no file */
	test_fmt(path, sizeof(path), "%s/none.db", tmp);
	CHECK_EQ_INT(manifest_export_file(c, 999999, path), -ENOENT);
	CHECK(access(path, F_OK) < 0);
	CHECK_EQ_INT(image_rows(m2, l2, "dirs"), 3);
	CHECK_EQ_INT(image_rows(m2, l2, "contents"), 1);
	CHECK_EQ_INT(image_rows(m2, l2, "files"), 0);

	/* a rebuild, the child first: every item staged in a first pass, then the trees */
	if (!CHECK_EQ_INT(catalog_open(test_fmt(path, sizeof(path), "%s/d.db", tmp), true, &d), 0))
		goto out;
	CHECK_EQ_INT(manifest_import_idblocks(d, m2, l2), 0);
	CHECK_EQ_INT(manifest_import_idblocks(d, m1, l1), 0);
	CHECK_EQ_INT(manifest_import_counted(d, m2, l2, &i2, &missing), 0);
	CHECK_EQ_INT(missing, 0);
	CHECK_EQ_INT(manifest_import_counted(d, m1, l1, &i1, &missing), 0);
	CHECK_EQ_INT(missing, 0);
	same_listing(c, s1, d, i1);
	same_listing(c, s2, d, i2);
	/* shared again, as in the original: 10 directories, no file rows */
	CHECK_EQ_INT(count_sql(d, "SELECT count(*) FROM dirs"), 10);
	CHECK_EQ_INT(count_sql(d, "SELECT count(*) FROM files"), 0);
	CHECK_EQ_INT(count_sql(d, "SELECT count(*) FROM dirs WHERE carrier IS NULL"), 0);

	/* the child's manifest alone: what its parent carried is missing, the snapshot failed */
	if (!CHECK_EQ_INT(catalog_open(test_fmt(path, sizeof(path), "%s/e.db", tmp), true, &e), 0))
		goto out;
	CHECK_EQ_INT(manifest_import_counted(e, m2, l2, &i3, &missing), 0);
	CHECK(missing > 0);
	CHECK_EQ_INT(count_sql(e, "SELECT count(*) FROM snapshots WHERE status = 'failed'"), 1);
	/* a second snapshot naming the same hollow directories and placeholders: missing too
	 * (neither a hollow translation nor a placeholder passes for whole) */
	{
		size_t again = 0, lr = 0;
		_cleanup_free_ void *renamed = image_renamed(m2, l2, "again", &lr);
		if (CHECK(renamed != NULL)) {
			CHECK_EQ_INT(manifest_import_counted(e, renamed, lr, NULL, &again), 0);
			CHECK_EQ_INT(again, missing);
		}
		CHECK_EQ_INT(count_sql(e, "SELECT count(*) FROM snapshots WHERE status = 'failed'"), 2);
	}

	/* the parent deleted: what the child uses moves to it, and its manifest says so */
	CHECK_EQ_INT(catalog_snapshot_delete(c, s1), 0);
	k.n = 0;
	CHECK_EQ_INT(catalog_idblocks_assign_carriers(c, 0, note_carrier, &k), 0);
	CHECK_EQ_INT(k.n, 1);
	CHECK_EQ_INT(k.v[0], s2);
	CHECK_EQ_INT(count_sql(c, "SELECT count(*) FROM dirs WHERE carrier = 2"), 7);
	if (CHECK_EQ_INT(test_manifest_image(c, s2, &m2b, &l2b), 0)) {
		CHECK_EQ_INT(image_rows(m2b, l2b, "dirs"), 7);
		CHECK_EQ_INT(image_rows(m2b, l2b, "contents"),
			     count_sql(c, "SELECT count(*) FROM contents WHERE carrier = 2"));
	}
out:
	free(m1);
	free(m2);
	free(m2b);
	catalog_free(d);
	catalog_free(e);
	catalog_free(c);
	TEST_RM_RF(tmp);
}

/* ---- format 5: large directories as content-defined entry blocks ---- */


/*
 * A root with base/5 of n files named 16384.. (skip: one left out, or -1),
 * file changed holding other contents; then global/pg_control.
 */
static int64_t make_big(Catalog *c, int64_t start, int n, int changed, int skip)
{
	SnapshotInfo s = {.instance = "main", .type = "full", .start_time = start};
	uint64_t ino = 1;
	char name[32];
	int r = catalog_snapshot_begin(c, &s);
	FileRow root = {.ino = ino, .parent = 1, .name = "", .mode = S_IFDIR | 0700};
	FileRow base = {.ino = ++ino, .parent = 1, .name = "base", .mode = S_IFDIR | 0700};
	FileRow db = {.ino = ++ino, .parent = base.ino, .name = "5", .mode = S_IFDIR | 0700};
	r = r ?: catalog_file_add(c, s.rowid, &root);
	r = r ?: catalog_file_add(c, s.rowid, &base);
	r = r ?: catalog_file_add(c, s.rowid, &db);
	/* one content for all but the changed file, one transaction: cheap under valgrind */
	int64_t same = content_of(c, "same"), other = content_of(c, "changed");
	r = r ?: sqlite3_exec(catalog_sqlite(c), "BEGIN", NULL, NULL, NULL);
	for (int i = 0; i < n && r == 0; i++) {
		if (i == skip)
			continue;
		snprintf(name, sizeof(name), "%d", 16384 + i);
		FileRow f = {.ino = ++ino, .parent = db.ino, .name = name, .mode = S_IFREG | 0600,
			     .size = 8192, .mtime_ns = T0 + i, .content = i == changed ? other : same};
		r = catalog_file_add(c, s.rowid, &f);
	}
	r = r ?: sqlite3_exec(catalog_sqlite(c), "COMMIT", NULL, NULL, NULL);
	FileRow global = {.ino = ++ino, .parent = 1, .name = "global", .mode = S_IFDIR | 0700};
	r = r ?: catalog_file_add(c, s.rowid, &global);
	FileRow ctl = {.ino = ++ino, .parent = global.ino, .name = "pg_control",
		       .mode = S_IFREG | 0600, .size = 8192, .content = content_of(c, "control")};
	r = r ?: catalog_file_add(c, s.rowid, &ctl);
	r = r ?: catalog_tree_share(c, s.rowid);
	s.status = SNAP_STATUS_OK;
	s.stop_time = start + 1000;
	r = r ?: catalog_snapshot_finish(c, &s);
	return CHECK_EQ_INT(r, 0) ? s.rowid : -1;
}

/* Bytes of the dirs rows added after row id since. */
static uint64_t dir_bytes_since(Catalog *c, int64_t since)
{
	char sql[128];
	snprintf(sql, sizeof(sql), "SELECT coalesce(sum(length(entries)), 0) FROM dirs WHERE id > %lld",
		 (long long)since);
	return count_sql(c, sql);
}

typedef struct BigWalk {
	uint64_t n;
	char prev[32];
	bool sorted;
} BigWalk;

static int big_row(const FileRow *f, void *userdata)
{
	BigWalk *w = userdata;
	/* base/5's files (ino 4 on) come in name order */
	if (f->parent == 4 && w->prev[0] && strcmp(w->prev, f->name) >= 0)
		w->sorted = false;
	if (f->parent == 4)
		snprintf(w->prev, sizeof(w->prev), "%s", f->name);
	w->n++;
	return 0;
}

static void same_digest(Catalog *a, int64_t sa, Catalog *b, int64_t sb)
{
	ChunkId da, db;
	if (CHECK_EQ_INT(tree_digest_compute(a, sa, &da), 0) &&
	    CHECK_EQ_INT(tree_digest_compute(b, sb, &db), 0))
		CHECK(memcmp(da.b, db.b, sizeof(da.b)) == 0);
}

#define LISTS "SELECT count(*) FROM dirs WHERE substr(entries, 1, 1) = x'02'"
#define BLOCKS "SELECT count(*) FROM dirs WHERE substr(entries, 1, 1) = x'03'"

/*
 * n entries in base/5: nested (more than 64 blocks, a list of sublists) or
 * flat; the nested run skips what the flat one covers in the same code
 * (removal, gc, format 4), to stay cheap under valgrind.
 */
static void test_dirblocks(int n, bool nested)
{
	const int mid = n / 2;
	const uint64_t lists_new = nested ? 2 : 1; /* a change's new lists: the list (and a sublist) */
	char tmp[PATH_MAX], path[PATH_MAX];
	Catalog *c = open_fresh(tmp, sizeof(tmp)), *d = NULL, *old = NULL;
	void *m1 = NULL, *m2 = NULL;
	size_t l1 = 0, l2 = 0, missing = 0;
	int64_t i1 = 0, i2 = 0;
	Marks k = {0};
	BigWalk w = {.sorted = true};
	CatalogStats st;
	if (!c)
		return;
	catalog_set_format(c, 5);
	CHECK_EQ_INT(sqlite3_exec(catalog_sqlite(c), "PRAGMA synchronous=OFF", NULL, NULL, NULL), 0);
	int64_t s1 = make_big(c, T0, n, -1, -1);
	/* base/5 is ~n/64 blocks (more than 64: a list of sublists of them); the small
	 * directories stay one row each */
	uint64_t blocks = count_sql(c, BLOCKS), lists = count_sql(c, LISTS);
	CHECK(nested ? lists >= 2 && lists < 6 && blocks > 64 : lists == 1 && blocks <= 64);
	CHECK(blocks > (uint64_t)n / 512 && blocks < (uint64_t)n / 32);
	CHECK_EQ_INT(count_sql(c, "SELECT max(n) FROM dirs WHERE substr(entries, 1, 1) = x'03'") <= 512,
		     1);
	CHECK_EQ_INT(count_sql(c, "SELECT count(*) FROM dirs"), 4 + lists + blocks); /* forest root base global */
	CHECK_EQ_INT(catalog_file_foreach(c, s1, big_row, &w), 0);
	CHECK_EQ_INT(w.n, n + 5);
	CHECK(w.sorted);
	/* the files counted once: not again through the list */
	CHECK_EQ_INT(catalog_stats(c, &st), 0);
	CHECK_EQ_INT(st.n_files, n + 5); /* the forest's entry for the root included */

	/* one changed file: one new block, (its sublist,) the list, base, the root, the forest */
	int64_t top = (int64_t)count_sql(c, "SELECT max(id) FROM dirs");
	int64_t s2 = make_big(c, T0 + 2000, n, mid, -1);
	CHECK_EQ_INT(count_sql(c, "SELECT count(*) FROM dirs"), 4 + lists + blocks + 4 + lists_new);
	CHECK(dir_bytes_since(c, top) < 8192); /* a single row of n entries: 15 n bytes */
	if (nested)
		goto manifests;
	/* one file less: its block changes, or it merges with the next one */
	top = (int64_t)count_sql(c, "SELECT max(id) FROM dirs");
	int64_t s3 = make_big(c, T0 + 4000, n, mid, 17);
	CHECK(count_sql(c, "SELECT count(*) FROM dirs") - (uint64_t)top <= 8);
	CHECK(dir_bytes_since(c, top) < 12288);
	w = (BigWalk){.sorted = true};
	CHECK_EQ_INT(catalog_file_foreach(c, s3, big_row, &w), 0);
	CHECK_EQ_INT(w.n, n + 4);
	CHECK(w.sorted);
	FileRow root;
	uint32_t subdirs = 0;
	CHECK_EQ_INT(catalog_dir_get(c, s3, 1, &root, &subdirs), 0);
	CHECK_EQ_INT(subdirs, 2);

manifests:
	/* carriers and manifests: s2's manifest carries its one block, not s1's */
	CHECK_EQ_INT(catalog_idblocks_assign_carriers(c, 0, note_carrier, &k), 0);
	CHECK_EQ_INT(count_sql(c, "SELECT count(*) FROM dirs WHERE carrier IS NULL"), 0);
	if (!CHECK_EQ_INT(test_manifest_image(c, s1, &m1, &l1), 0) ||
	    !CHECK_EQ_INT(test_manifest_image(c, s2, &m2, &l2), 0))
		goto out;
	CHECK_EQ_INT(image_rows(m1, l1, "dirs"), 4 + lists + blocks);
	CHECK_EQ_INT(image_rows(m2, l2, "dirs"), 4 + lists_new);
	/* in a format-4 manifest the whole directory is one row of ~70 n bytes */
	CHECK_EQ_INT(image_rows(m2, l2, "dirs WHERE length(entries) > 8192"), 0);
	/* a rebuild from the two manifests: the same trees, in the same form */
	if (!CHECK_EQ_INT(catalog_open(test_fmt(path, sizeof(path), "%s/d.db", tmp), true, &d), 0))
		goto out;
	CHECK_EQ_INT(manifest_import_idblocks(d, m2, l2), 0);
	CHECK_EQ_INT(manifest_import_idblocks(d, m1, l1), 0);
	CHECK_EQ_INT(manifest_import_counted(d, m2, l2, &i2, &missing), 0);
	CHECK_EQ_INT(missing, 0);
	CHECK_EQ_INT(manifest_import_counted(d, m1, l1, &i1, &missing), 0);
	CHECK_EQ_INT(missing, 0);
	same_digest(c, s1, d, i1);
	same_digest(c, s2, d, i2);
	CHECK_EQ_INT(count_sql(d, LISTS), lists + lists_new);
	CHECK_EQ_INT(count_sql(d, BLOCKS), blocks + 1);
	CHECK_EQ_INT(count_sql(d, "SELECT count(*) FROM dirs WHERE carrier IS NULL"), 0);

	if (nested)
		goto out;
	/* gc: what only s1 used goes (its forest, root, base, list and the block of file
	 * mid), every block s2 and s3 use stays */
	CatalogGcResult g = {0};
	uint64_t rows = count_sql(c, "SELECT count(*) FROM dirs");
	CHECK_EQ_INT(catalog_snapshot_delete(c, s1), 0);
	CHECK_EQ_INT(catalog_gc(c, &g), 0);
	catalog_gc_result_clear(&g);
	CHECK_EQ_INT(count_sql(c, "SELECT count(*) FROM dirs"), rows - 5);
	w = (BigWalk){.sorted = true};
	CHECK_EQ_INT(catalog_file_foreach(c, s2, big_row, &w), 0);
	CHECK_EQ_INT(w.n, n + 5);
	same_digest(c, s2, d, i2);

	/* damage: a block gone, or a list naming a directory where a block belongs */
	CHECK_EQ_INT(sqlite3_exec(catalog_sqlite(d), "DELETE FROM dirs WHERE id = (SELECT max(id)"
				  " FROM dirs WHERE substr(entries, 1, 1) = x'03')", NULL, NULL, NULL),
		     SQLITE_OK);
	w = (BigWalk){.sorted = true};
	CHECK_EQ_INT(catalog_file_foreach(d, i1, big_row, &w) == -EBADMSG ||
			     catalog_file_foreach(d, i2, big_row, &w) == -EBADMSG,
		     1);

	/* format 4: the same directory stays one row, as an older binary reads it */
	if (!CHECK_EQ_INT(catalog_open(test_fmt(path, sizeof(path), "%s/o.db", tmp), true, &old), 0))
		goto out;
	catalog_set_format(old, 4);
	CHECK_EQ_INT(sqlite3_exec(catalog_sqlite(old), "PRAGMA synchronous=OFF", NULL, NULL, NULL), 0);
	int64_t o1 = make_big(old, T0 + 2000, n, mid, -1);
	CHECK_EQ_INT(count_sql(old, LISTS), 0);
	CHECK_EQ_INT(count_sql(old, BLOCKS), 0);
	CHECK_EQ_INT(count_sql(old, "SELECT count(*) FROM dirs"), 5);
	/* and reads as the format-5 tree does */
	same_digest(c, s2, old, o1);
out:
	free(m1);
	free(m2);
	catalog_free(d);
	catalog_free(old);
	catalog_free(c);
	TEST_RM_RF(tmp);
}

int main(void)
{
	test_dirblocks(600, false);
	test_dirblocks(4500, true);
	test_carriers();
	test_carriers_new();
	test_scans_without_contents();
	test_migration();
	test_share_and_read();
	test_damage();
	return test_finish();
}
