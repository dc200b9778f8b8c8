/* Unit tests for store/catalog.h: contents, snapshots, files, packs, sessions, gc. */
#include "tests/unit/test.h"

#include "store/catalog.h"

#include <limits.h>
#include <sqlite3.h>
#include <sys/stat.h>

/* 2023-11-14T22:13:20Z */
#define T0 (1700000000LL * 1000000000)

static ChunkId id_of(const char *s)
{
	ChunkId id;
	chunk_hash(s, strlen(s), &id);
	return id;
}

static Catalog *open_fresh(char *tmp, size_t len)
{
	char path[PATH_MAX];
	Catalog *c = NULL;
	test_tmpdir(tmp, len);
	snprintf(path, sizeof(path), "%s/catalog.db", tmp);
	if (!CHECK_EQ_INT(catalog_open(path, true, &c), 0))
		return NULL;
	return c;
}

typedef struct SnapList {
	char names[8][64];
	int64_t rowids[8];
	size_t n;
} SnapList;

static int collect_snap(const SnapshotInfo *s, void *ud)
{
	SnapList *l = ud;
	if (l->n < ELEMENTSOF(l->names)) {
		snprintf(l->names[l->n], sizeof(l->names[0]), "%s", s->name);
		l->rowids[l->n] = s->rowid;
	}
	l->n++;
	return 0;
}

static size_t count_snapshots(Catalog *c, const char *instance)
{
	SnapList l = {0};
	if (catalog_snapshot_foreach(c, instance, collect_snap, &l) < 0)
		return (size_t)-1;
	return l.n;
}

/* A visible snapshot with one regular file "f" using content. */
static int64_t make_snapshot(Catalog *c, int64_t start, int64_t content, const char *session)
{
	SnapshotInfo s = {.instance = "main", .type = "full", .start_time = start,
			  .session = (char *)session};
	FileRow root = {.ino = 1, .parent = 1, .name = "", .mode = S_IFDIR | 0755};
	FileRow f = {.ino = 2, .parent = 1, .name = "f", .mode = S_IFREG | 0644,
		     .size = 100, .content = content};
	if (catalog_snapshot_begin(c, &s) < 0)
		return -1;
	if (catalog_file_add(c, s.rowid, &root) < 0 || catalog_file_add(c, s.rowid, &f) < 0)
		return -1;
	s.status = SNAP_STATUS_OK;
	s.stop_time = start + 1000;
	if (catalog_snapshot_finish(c, &s) < 0)
		return -1;
	return s.rowid;
}

/* Record a pack holding chunks ids (fake offsets/lengths). */
static int64_t make_pack(Catalog *c, const char *name, const char *session, const ChunkId *ids,
			 size_t n)
{
	PackEntry e[8];
	int64_t id = -1;
	PGBAKFS_CHECK(n <= ELEMENTSOF(e));
	for (size_t i = 0; i < n; i++)
		e[i] = (PackEntry){.id = ids[i], .offset = PACK_HEADER_LEN + 100 * i, .elen = 100,
				   .plen = 16384, .enc = CHUNK_ENC_ZSTD};
	if (catalog_pack_add_pending(c, name, session, &id) < 0)
		return -1;
	if (catalog_pack_record(c, id, PACK_HEADER_LEN + 100 * n + PACK_ENTRY_LEN * n + PACK_FOOTER_LEN,
				e, n) < 0)
		return -1;
	return id;
}

static bool has_dead(const CatalogGcResult *r, const char *name)
{
	for (size_t i = 0; i < r->n_dead_packs; i++)
		if (strcmp(r->dead_packs[i], name) == 0)
			return true;
	return false;
}

static void test_open(void)
{
	char tmp[64], path[PATH_MAX];
	Catalog *c = NULL;
	struct stat st;

	test_tmpdir(tmp, sizeof(tmp));
	snprintf(path, sizeof(path), "%s/catalog.db", tmp);
	/* without create, a missing catalog is -ENOENT */
	CHECK_EQ_INT(catalog_open(path, false, &c), -ENOENT);
	CHECK(c == NULL);
	CHECK_EQ_INT(catalog_open(path, true, &c), 0);
	CHECK(stat(path, &st) == 0 && S_ISREG(st.st_mode));
	{
		char *msg = NULL;
		CHECK_EQ_INT(catalog_integrity_check(c, &msg), 0);
		CHECK(msg == NULL);
		free(msg);
	}
	CatalogStats stats;
	CHECK_EQ_INT(catalog_stats(c, &stats), 0);
	CHECK_EQ_INT(stats.n_snapshots + stats.n_packs + stats.n_chunks + stats.n_files, 0);
	catalog_free(c);
	c = NULL;
	/* create on an existing catalog is idempotent; open without create works */
	CHECK_EQ_INT(catalog_open(path, true, &c), 0);
	catalog_free(c);
	c = NULL;
	CHECK_EQ_INT(catalog_open(path, false, &c), 0);
	catalog_free(c);
	c = NULL;

	/* a file that is not a database */
	snprintf(path, sizeof(path), "%s/junk.db", tmp);
	{
		static const char junk[] = "this is not an SQLite database, not at all";
		CHECK_EQ_INT(file_write_atomic(path, junk, sizeof(junk) - 1, 0600), 0);
	}
	CHECK(catalog_open(path, false, &c) < 0);
	CHECK(c == NULL);
	catalog_free(c);
	CHECK(catalog_free(NULL) == NULL);
	TEST_RM_RF(tmp);
}

static void test_contents(void)
{
	char tmp[64];
	Catalog *c = open_fresh(tmp, sizeof(tmp));
	ChunkId a[3] = {id_of("one"), id_of("two"), chunk_id_hole};
	ChunkId b[3] = {id_of("one"), id_of("two"), id_of("three")};
	int64_t ia = 0, ia2 = 0, ib = 0, ic = 0;
	ChunkId *got = NULL;
	size_t n = 0;

	if (!c)
		goto out;
	CHECK_EQ_INT(catalog_content_put(c, a, 3, &ia), 0);
	CHECK_EQ_INT(catalog_content_put(c, a, 3, &ia2), 0);
	CHECK(ia > 0);
	CHECK_EQ_INT(ia2, ia);
	CHECK_EQ_INT(catalog_content_put(c, b, 3, &ib), 0);
	CHECK(ib != ia);
	CHECK_EQ_INT(catalog_content_put(c, b, 2, &ic), 0); /* a prefix is another list */
	CHECK(ic != ia && ic != ib);
	{
		int64_t again = 0;
		CHECK_EQ_INT(catalog_content_put(c, b, 3, &again), 0);
		CHECK_EQ_INT(again, ib);
	}

	CHECK_EQ_INT(catalog_content_get(c, ia, &got, &n), 0);
	CHECK_EQ_INT(n, 3);
	if (got && n == 3)
		CHECK(memcmp(got, a, sizeof(a)) == 0);
	free(got);
	got = NULL;
	CHECK_EQ_INT(catalog_content_get(c, ic, &got, &n), 0);
	CHECK_EQ_INT(n, 2);
	if (got && n == 2)
		CHECK(memcmp(got, b, 2 * sizeof(ChunkId)) == 0);
	free(got);
	got = NULL;
	CHECK_EQ_INT(catalog_content_get(c, 999999, &got, &n), -ENOENT);
	CHECK(got == NULL);

	CatalogStats st;
	CHECK_EQ_INT(catalog_stats(c, &st), 0);
	CHECK_EQ_INT(st.n_contents, 3);
out:
	catalog_free(c);
	TEST_RM_RF(tmp);
}

static void test_snapshots(void)
{
	char tmp[64];
	Catalog *c = open_fresh(tmp, sizeof(tmp));
	SnapshotInfo s1 = {.instance = "main", .type = "full", .start_time = T0, .label = "first",
			   .source = "dir:/x", .start_lsn = "0/1000000", .timeline = 3,
			   .system_id = "7300000000000000001", .pg_version = 170002};
	SnapshotInfo s2 = {.instance = "main", .type = "incr", .parent = "20231114T221320Z",
			   .start_time = T0 + 500000000};
	SnapshotInfo got = {0};
	SnapList l = {0};

	if (!c)
		goto out;
	CHECK_EQ_INT(catalog_snapshot_begin(c, &s1), 0);
	CHECK_EQ_STR(s1.name, "20231114T221320Z");
	CHECK(s1.rowid > 0);
	/* same second: a suffix keeps names unique */
	CHECK_EQ_INT(catalog_snapshot_begin(c, &s2), 0);
	CHECK_EQ_STR(s2.name, "20231114T221320Z-1");
	CHECK(s2.rowid != s1.rowid);

	/* running snapshots are invisible */
	CHECK_EQ_INT(catalog_snapshot_get(c, s1.name, NULL, &got), -ENOENT);
	CHECK_EQ_INT(catalog_snapshot_get(c, "latest", NULL, &got), -ENOENT);
	CHECK_EQ_INT(catalog_snapshot_get(c, "latest", "main", &got), -ENOENT);
	CHECK_EQ_INT(count_snapshots(c, NULL), 0);
	CatalogStats st;
	CHECK_EQ_INT(catalog_stats(c, &st), 0);
	CHECK_EQ_INT(st.n_snapshots, 0);

	s1.status = SNAP_STATUS_OK;
	s1.stop_time = T0 + 2000000000;
	s1.logical_bytes = 1000;
	s1.stored_bytes = 400;
	s1.n_files = 7;
	s1.stop_lsn = "0/2000000";
	CHECK_EQ_INT(catalog_snapshot_finish(c, &s1), 0);
	/* finishing twice: it is no longer running */
	CHECK_EQ_INT(catalog_snapshot_finish(c, &s1), -ENOENT);

	CHECK_EQ_INT(count_snapshots(c, NULL), 1);
	if (CHECK_EQ_INT(catalog_snapshot_get(c, s1.name, NULL, &got), 0)) {
		CHECK_EQ_INT(got.rowid, s1.rowid);
		CHECK_EQ_STR(got.name, "20231114T221320Z");
		CHECK_EQ_STR(got.instance, "main");
		CHECK_EQ_STR(got.type, "full");
		CHECK_EQ_STR(got.status, "ok");
		CHECK_EQ_STR(got.label, "first");
		CHECK_EQ_STR(got.source, "dir:/x");
		CHECK(got.parent == NULL);
		CHECK(got.note == NULL);
		CHECK_EQ_STR(got.start_lsn, "0/1000000");
		CHECK_EQ_STR(got.stop_lsn, "0/2000000");
		CHECK_EQ_STR(got.system_id, "7300000000000000001");
		CHECK_EQ_INT(got.timeline, 3);
		CHECK_EQ_INT(got.pg_version, 170002);
		CHECK_EQ_INT(got.start_time, T0);
		CHECK_EQ_INT(got.stop_time, T0 + 2000000000);
		CHECK_EQ_INT(got.logical_bytes, 1000);
		CHECK_EQ_INT(got.stored_bytes, 400);
		CHECK_EQ_INT(got.n_files, 7);
		CHECK(!got.verified);
	}
	snapshot_info_clear(&got);
	CHECK(got.instance == NULL && got.name[0] == '\0');
	CHECK_EQ_INT(catalog_snapshot_get(c, "latest", NULL, &got), 0);
	CHECK_EQ_STR(got.name, s1.name);
	snapshot_info_clear(&got);
	CHECK_EQ_INT(catalog_snapshot_get(c, "nonexistent", NULL, &got), -ENOENT);

	s2.status = SNAP_STATUS_WARNING;
	s2.stop_time = T0 + 3000000000;
	CHECK_EQ_INT(catalog_snapshot_finish(c, &s2), 0);
	/* latest: the newest by start time */
	CHECK_EQ_INT(catalog_snapshot_get(c, "latest", NULL, &got), 0);
	CHECK_EQ_STR(got.name, "20231114T221320Z-1");
	CHECK_EQ_STR(got.status, "warning");
	CHECK_EQ_STR(got.parent, "20231114T221320Z");
	snapshot_info_clear(&got);

	/* an older snapshot finished later does not become "latest" */
	SnapshotInfo s0 = {.instance = "main", .type = "full", .start_time = T0 - 3600LL * 1000000000};
	CHECK_EQ_INT(catalog_snapshot_begin(c, &s0), 0);
	CHECK_EQ_STR(s0.name, "20231114T211320Z");
	s0.status = SNAP_STATUS_OK;
	CHECK_EQ_INT(catalog_snapshot_finish(c, &s0), 0);
	CHECK_EQ_INT(catalog_snapshot_get(c, "latest", NULL, &got), 0);
	CHECK_EQ_STR(got.name, s2.name);
	snapshot_info_clear(&got);

	/* another instance, newer: "latest" of "main" still picks main's */
	SnapshotInfo o = {.instance = "other", .type = "full", .start_time = T0 + 86400LL * 1000000000};
	CHECK_EQ_INT(catalog_snapshot_begin(c, &o), 0);
	CHECK_EQ_STR(o.name, "20231115T221320Z");
	o.status = SNAP_STATUS_OK;
	CHECK_EQ_INT(catalog_snapshot_finish(c, &o), 0);
	CHECK_EQ_INT(catalog_snapshot_get(c, "latest", "main", &got), 0);
	CHECK_EQ_STR(got.name, s2.name);
	snapshot_info_clear(&got);
	CHECK_EQ_INT(catalog_snapshot_get(c, "latest", NULL, &got), 0);
	CHECK_EQ_STR(got.name, o.name);
	CHECK_EQ_STR(got.instance, "other");
	snapshot_info_clear(&got);
	CHECK_EQ_INT(catalog_snapshot_get(c, "latest", "nobody", &got), -ENOENT);

	/* foreach: oldest first, filtered by instance */
	CHECK_EQ_INT(catalog_snapshot_foreach(c, NULL, collect_snap, &l), 0);
	CHECK_EQ_INT(l.n, 4);
	CHECK_EQ_STR(l.names[0], s0.name);
	CHECK_EQ_STR(l.names[1], s1.name);
	CHECK_EQ_STR(l.names[2], s2.name);
	CHECK_EQ_STR(l.names[3], o.name);
	CHECK_EQ_INT(count_snapshots(c, "main"), 3);
	CHECK_EQ_INT(count_snapshots(c, "other"), 1);
	CHECK_EQ_INT(count_snapshots(c, "nobody"), 0);

	/* delete */
	CHECK_EQ_INT(catalog_snapshot_delete(c, s1.rowid), 0);
	CHECK_EQ_INT(catalog_snapshot_get(c, s1.name, NULL, &got), -ENOENT);
	CHECK_EQ_INT(count_snapshots(c, NULL), 3);
	/* the name is free again */
	SnapshotInfo s3 = {.instance = "main", .type = "full", .start_time = T0};
	CHECK_EQ_INT(catalog_snapshot_begin(c, &s3), 0);
	CHECK_EQ_STR(s3.name, "20231114T221320Z");
	CHECK_EQ_INT(catalog_stats(c, &st), 0);
	CHECK_EQ_INT(st.n_snapshots, 3);
out:
	catalog_free(c);
	TEST_RM_RF(tmp);
}

typedef struct FileList {
	uint64_t inos[16];
	char names[16][32];
	FileRow rows[16];
	char targets[16][32];
	size_t n;
} FileList;

static int collect_file(const FileRow *f, void *ud)
{
	FileList *l = ud;
	if (l->n < ELEMENTSOF(l->inos)) {
		l->inos[l->n] = f->ino;
		snprintf(l->names[l->n], sizeof(l->names[0]), "%s", f->name);
		l->rows[l->n] = *f;
		l->rows[l->n].name = NULL; /* only valid during the callback */
		snprintf(l->targets[l->n], sizeof(l->targets[0]), "%s", f->target ? f->target : "(null)");
		l->rows[l->n].target = NULL;
	}
	l->n++;
	return 0;
}

static int file_cb_error(const FileRow *f _unused_, void *ud)
{
	(*(int *)ud)++;
	return -EINTR;
}

static void test_files(void)
{
	char tmp[64];
	Catalog *c = open_fresh(tmp, sizeof(tmp));
	SnapshotInfo s = {.instance = "main", .type = "full", .start_time = T0};
	SnapshotInfo other = {.instance = "main", .type = "full", .start_time = T0};
	FileList l = {0};
	ChunkId ids[2] = {id_of("x"), id_of("y")};
	int64_t content = 0;

	if (!c)
		goto out;
	CHECK_EQ_INT(catalog_snapshot_begin(c, &s), 0);
	CHECK_EQ_INT(catalog_snapshot_begin(c, &other), 0);
	CHECK_EQ_INT(catalog_content_put(c, ids, 2, &content), 0);

	/* added out of order: listed by ino */
	FileRow rows[] = {
		{.ino = 3, .parent = 2, .name = "data", .mode = S_IFREG | 0640, .uid = 26, .gid = 27,
		 .mtime_ns = T0 + 123456789, .size = 20000, .content = content},
		{.ino = 1, .parent = 1, .name = "", .mode = S_IFDIR | 0700, .mtime_ns = T0},
		{.ino = 4, .parent = 1, .name = "link", .mode = S_IFLNK | 0777, .size = 7,
		 .target = "sub/data"},
		{.ino = 2, .parent = 1, .name = "sub", .mode = S_IFDIR | 0755},
		{.ino = 5, .parent = 1, .name = "empty", .mode = S_IFREG | 0600},
	};
	for (size_t i = 0; i < ELEMENTSOF(rows); i++)
		CHECK_EQ_INT(catalog_file_add(c, s.rowid, &rows[i]), 0);
	/* the same ino twice in one snapshot is refused */
	CHECK(catalog_file_add(c, s.rowid, &rows[0]) < 0);
	/* another snapshot's files are its own */
	CHECK_EQ_INT(catalog_file_add(c, other.rowid, &rows[1]), 0);

	CHECK_EQ_INT(catalog_file_foreach(c, s.rowid, collect_file, &l), 0);
	CHECK_EQ_INT(l.n, 5);
	for (size_t i = 0; i < 5 && i < l.n; i++)
		CHECK_EQ_INT(l.inos[i], i + 1);
	CHECK_EQ_STR(l.names[0], "");
	CHECK_EQ_STR(l.names[1], "sub");
	CHECK_EQ_STR(l.names[2], "data");
	CHECK_EQ_STR(l.names[3], "link");
	CHECK_EQ_STR(l.names[4], "empty");
	CHECK_EQ_INT(l.rows[2].parent, 2);
	CHECK_EQ_INT(l.rows[2].mode, S_IFREG | 0640);
	CHECK_EQ_INT(l.rows[2].uid, 26);
	CHECK_EQ_INT(l.rows[2].gid, 27);
	CHECK_EQ_INT(l.rows[2].mtime_ns, T0 + 123456789);
	CHECK_EQ_INT(l.rows[2].size, 20000);
	CHECK_EQ_INT(l.rows[2].content, content);
	CHECK_EQ_STR(l.targets[2], "(null)");
	CHECK_EQ_STR(l.targets[3], "sub/data");
	CHECK_EQ_INT(l.rows[3].content, 0);
	CHECK_EQ_INT(l.rows[4].content, 0);
	CHECK_EQ_INT(l.rows[0].parent, 1);

	{
		int calls = 0;
		CHECK_EQ_INT(catalog_file_foreach(c, s.rowid, file_cb_error, &calls), -EINTR);
		CHECK_EQ_INT(calls, 1);
	}
	l.n = 0;
	CHECK_EQ_INT(catalog_file_foreach(c, other.rowid, collect_file, &l), 0);
	CHECK_EQ_INT(l.n, 1);
	l.n = 0;
	CHECK_EQ_INT(catalog_file_foreach(c, 424242, collect_file, &l), 0);
	CHECK_EQ_INT(l.n, 0);

	/* deleting the snapshot removes its file rows */
	CHECK_EQ_INT(catalog_snapshot_delete(c, s.rowid), 0);
	l.n = 0;
	CHECK_EQ_INT(catalog_file_foreach(c, s.rowid, collect_file, &l), 0);
	CHECK_EQ_INT(l.n, 0);
	CatalogStats st;
	CHECK_EQ_INT(catalog_stats(c, &st), 0);
	CHECK_EQ_INT(st.n_files, 1);
out:
	catalog_free(c);
	TEST_RM_RF(tmp);
}

typedef struct PackList {
	char names[8][64];
	char states[8][16];
	uint64_t sizes[8];
	size_t n;
} PackList;

static int collect_pack(int64_t id _unused_, const char *name, const char *state, uint64_t size,
			void *ud)
{
	PackList *l = ud;
	if (l->n < ELEMENTSOF(l->names)) {
		snprintf(l->names[l->n], sizeof(l->names[0]), "%s", name);
		snprintf(l->states[l->n], sizeof(l->states[0]), "%s", state);
		l->sizes[l->n] = size;
	}
	l->n++;
	return 0;
}

static int64_t query_int(Catalog *c, const char *sql)
{
	sqlite3_stmt *s = NULL;
	int64_t v = -1;
	if (sqlite3_prepare_v2(catalog_sqlite(c), sql, -1, &s, NULL) == SQLITE_OK &&
	    sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return v;
}

static void test_packs(void)
{
	char tmp[64];
	Catalog *c = open_fresh(tmp, sizeof(tmp));
	ChunkId a = id_of("a"), b = id_of("b"), x = id_of("x");
	PackEntry e[2] = {
		{.id = b, .offset = 5000, .elen = 300, .plen = 16384, .enc = CHUNK_ENC_RAW},
		{.id = a, .offset = 8, .elen = 4992, .plen = 16384, .enc = CHUNK_ENC_ZSTD,
		 .has_crc = true, .crc = 0xdeadbeef, .has_fh = true, .fh = {1, 2, 3, [CHUNK_FH_LEN - 1] = 0xfe}},
	};
	int64_t pid = 0, pid2 = 0;
	ChunkLoc loc;
	PackList l = {0};
	PackEntry *pe = NULL;
	size_t n = 0;

	if (!c)
		goto out;
	CHECK_EQ_INT(catalog_pack_add_pending(c, "packs/aa/aaaa.pack", "sess", &pid), 0);
	CHECK(pid > 0);
	/* pending: its chunks are not known yet */
	CHECK_EQ_INT(catalog_chunk_exists(c, &a), 0);
	CHECK_EQ_INT(catalog_chunk_locate(c, &a, &loc), -ENOENT);
	CHECK_EQ_INT(catalog_pack_foreach(c, collect_pack, &l), 0);
	CHECK_EQ_INT(l.n, 1);
	CHECK_EQ_STR(l.states[0], "pending");
	/* a pack name is unique */
	CHECK(catalog_pack_add_pending(c, "packs/aa/aaaa.pack", "sess", &pid2) < 0);

	CHECK_EQ_INT(catalog_pack_record(c, pid, 5300 + 2 * PACK_ENTRY_LEN + PACK_FOOTER_LEN, e, 2), 0);
	CHECK_EQ_INT(catalog_chunk_exists(c, &a), 1);
	CHECK_EQ_INT(catalog_chunk_exists(c, &b), 1);
	CHECK_EQ_INT(catalog_chunk_exists(c, &x), 0);
	if (CHECK_EQ_INT(catalog_chunk_locate(c, &b, &loc), 0)) {
		CHECK_EQ_INT(loc.pack, pid);
		CHECK_EQ_STR(loc.pack_name, "packs/aa/aaaa.pack");
		CHECK_EQ_INT(loc.offset, 5000);
		CHECK_EQ_INT(loc.elen, 300);
		CHECK_EQ_INT(loc.plen, 16384);
		CHECK_EQ_INT(loc.enc, CHUNK_ENC_RAW);
		CHECK(!loc.has_crc);
		CHECK(!loc.has_fh);
	}
	if (CHECK_EQ_INT(catalog_chunk_locate(c, &a, &loc), 0)) {
		CHECK(loc.has_crc);
		CHECK_EQ_INT(loc.crc, 0xdeadbeef);
		CHECK(loc.has_fh && memcmp(loc.fh, e[1].fh, CHUNK_FH_LEN) == 0);
	}
	CHECK_EQ_INT(query_int(c, "SELECT max(length(fh)) FROM chunks"), CHUNK_FH_LEN);
	/* stored as CHUNK_FH_LEN bytes; the 16 of fasthash128 that catalogs written
	 * before hold still count, by their first CHUNK_FH_LEN */
	CHECK_EQ_INT(sqlite3_exec(catalog_sqlite(c),
				  "UPDATE chunks SET fh = CASE WHEN length(fh) = 8"
				  " THEN fh || x'00112233445566ff' ELSE x'00' END",
				  NULL, NULL, NULL),
		     SQLITE_OK);
	if (CHECK_EQ_INT(catalog_chunk_locate(c, &a, &loc), 0))
		CHECK(loc.has_fh && memcmp(loc.fh, e[1].fh, CHUNK_FH_LEN) == 0);
	if (CHECK_EQ_INT(catalog_chunk_locate(c, &b, &loc), 0))
		CHECK(!loc.has_fh); /* neither length: no check value, SHA-256 */
	CHECK_EQ_INT(catalog_chunk_locate(c, &x, &loc), -ENOENT);
	{
		/* restore --delta's lookup of a file's chunks: as catalog_chunk_locate says, at once */
		ChunkId ids[5] = {a, b, x, chunk_id_hole, a};
		uint8_t fh[5][CHUNK_FH_LEN];
		bool has[5] = {false, true, true, true, false};
		memset(fh, 0, sizeof(fh));
		CHECK_EQ_INT(catalog_chunk_fh_get(c, ids, 5, fh, has), 0);
		CHECK(has[0] && memcmp(fh[0], e[1].fh, CHUNK_FH_LEN) == 0);
		CHECK(!has[1] && !has[2] && !has[3]);
		CHECK(has[4] && memcmp(fh[4], e[1].fh, CHUNK_FH_LEN) == 0);
		/* inside a caller's transaction too */
		CHECK_EQ_INT(catalog_begin(c), 0);
		CHECK_EQ_INT(catalog_chunk_fh_get(c, ids, 2, fh, has), 0);
		CHECK(has[0] && !has[1]);
		CHECK_EQ_INT(catalog_commit(c), 0);
	}
	l.n = 0;
	CHECK_EQ_INT(catalog_pack_foreach(c, collect_pack, &l), 0);
	CHECK_EQ_INT(l.n, 1);
	CHECK_EQ_STR(l.states[0], "ok");
	CHECK_EQ_INT(l.sizes[0], 5300 + 2 * PACK_ENTRY_LEN + PACK_FOOTER_LEN);

	/* chunks of a pack, by offset */
	CHECK_EQ_INT(catalog_pack_chunks(c, pid, &pe, &n), 0);
	CHECK_EQ_INT(n, 2);
	if (n == 2) {
		CHECK(chunk_id_cmp(&pe[0].id, &a) == 0);
		CHECK_EQ_INT(pe[0].offset, 8);
		CHECK_EQ_INT(pe[0].elen, 4992);
		CHECK_EQ_INT(pe[0].enc, CHUNK_ENC_ZSTD);
		CHECK(chunk_id_cmp(&pe[1].id, &b) == 0);
	}
	free(pe);
	pe = NULL;
	CHECK_EQ_INT(catalog_pack_chunks(c, 999, &pe, &n), 0);
	CHECK_EQ_INT(n, 0);
	free(pe);
	pe = NULL;

	/* a second pack with a chunk already stored: the first copy stays */
	{
		PackEntry e2 = {.id = a, .offset = 8, .elen = 10, .plen = 16384, .enc = 0};
		CHECK_EQ_INT(catalog_pack_add_pending(c, "packs/bb/bbbb.pack", NULL, &pid2), 0);
		CHECK_EQ_INT(catalog_pack_record(c, pid2, 100, &e2, 1), 0);
		CHECK_EQ_INT(catalog_chunk_locate(c, &a, &loc), 0);
		CHECK_EQ_INT(loc.pack, pid);
		CHECK_EQ_INT(loc.elen, 4992);
	}

	CatalogStats st;
	CHECK_EQ_INT(catalog_stats(c, &st), 0);
	CHECK_EQ_INT(st.n_packs, 2);
	CHECK_EQ_INT(st.n_chunks, 2);
	CHECK_EQ_INT(st.chunk_plain_bytes, 2 * 16384);
	CHECK_EQ_INT(st.chunk_stored_bytes, 5292);
	CHECK_EQ_INT(st.pack_bytes, 5300 + 2 * PACK_ENTRY_LEN + PACK_FOOTER_LEN + 100);
out:
	catalog_free(c);
	TEST_RM_RF(tmp);
}

typedef struct SessList {
	char ids[8][40];
	char kinds[8][16];
	int64_t pids[8];
	size_t n;
} SessList;

static int collect_session(const char *id, const char *kind, int64_t pid, int64_t started _unused_,
			   void *ud)
{
	SessList *l = ud;
	if (l->n < ELEMENTSOF(l->ids)) {
		snprintf(l->ids[l->n], sizeof(l->ids[0]), "%s", id);
		snprintf(l->kinds[l->n], sizeof(l->kinds[0]), "%s", kind);
		l->pids[l->n] = pid;
	}
	l->n++;
	return 0;
}

static void test_sessions(void)
{
	char tmp[64];
	Catalog *c = open_fresh(tmp, sizeof(tmp));
	SessList l = {0};
	int64_t epoch = -1;
	uint64_t n_snaps = 99;

	if (!c)
		goto out;
	CHECK_EQ_INT(catalog_session_add(c, "s1", "backup", &epoch), 0);
	CHECK_EQ_INT(epoch, 0);
	CHECK(catalog_session_add(c, "s1", "backup", NULL) < 0); /* ids are unique */
	CHECK_EQ_INT(catalog_session_add(c, "s2", "restore", NULL), 0);
	CHECK_EQ_INT(catalog_session_foreach(c, collect_session, &l), 0);
	CHECK_EQ_INT(l.n, 2);
	CHECK_EQ_STR(l.ids[0], "s1");
	CHECK_EQ_STR(l.kinds[0], "backup");
	CHECK_EQ_INT(l.pids[0], getpid());
	CHECK_EQ_STR(l.ids[1], "s2");

	/* reap: the session's running snapshots go with it, finished ones stay */
	{
		SnapshotInfo run = {.instance = "main", .type = "full", .start_time = T0,
				    .session = "s1"};
		FileRow root = {.ino = 1, .parent = 1, .name = "", .mode = S_IFDIR | 0700};
		CHECK_EQ_INT(catalog_snapshot_begin(c, &run), 0);
		CHECK_EQ_INT(catalog_file_add(c, run.rowid, &root), 0);
		CHECK(make_snapshot(c, T0 + 1000000000, 0, "s1") > 0);
		CHECK_EQ_INT(catalog_session_reap(c, "s1", &n_snaps), 0);
		CHECK_EQ_INT(n_snaps, 1);
		CHECK_EQ_INT(count_snapshots(c, NULL), 1);
		/* a reaped snapshot cannot be finished any more */
		run.status = SNAP_STATUS_OK;
		CHECK_EQ_INT(catalog_snapshot_finish(c, &run), -ENOENT);
		CatalogStats st;
		CHECK_EQ_INT(catalog_stats(c, &st), 0);
		CHECK_EQ_INT(st.n_files, 2); /* the finished snapshot's */
	}
	l.n = 0;
	CHECK_EQ_INT(catalog_session_foreach(c, collect_session, &l), 0);
	CHECK_EQ_INT(l.n, 1);
	CHECK_EQ_STR(l.ids[0], "s2");
	CHECK_EQ_INT(catalog_session_remove(c, "s2"), 0);
	CHECK_EQ_INT(catalog_session_remove(c, "s2"), 0); /* already gone */
	l.n = 0;
	CHECK_EQ_INT(catalog_session_foreach(c, collect_session, &l), 0);
	CHECK_EQ_INT(l.n, 0);

	/* the epoch a session records moves with gc */
	{
		CatalogGcResult r = {0};
		CHECK_EQ_INT(catalog_gc(c, &r), 0);
		catalog_gc_result_clear(&r);
		CHECK_EQ_INT(catalog_session_add(c, "s3", "backup", &epoch), 0);
		CHECK_EQ_INT(epoch, 1);
	}
out:
	catalog_free(c);
	TEST_RM_RF(tmp);
}

static void test_gc(void)
{
	char tmp[64];
	Catalog *c = open_fresh(tmp, sizeof(tmp));
	ChunkId a = id_of("A"), b = id_of("B"), cc = id_of("C"), d = id_of("D");
	ChunkId ab[2] = {a, b};
	ChunkId list_a[2] = {a, chunk_id_hole};
	int64_t p1, p2, content, snap;
	CatalogGcResult r = {0};

	if (!c)
		goto out;
	/* P1 holds A and B; a snapshot uses A (and a hole) */
	p1 = make_pack(c, "packs/11/p1.pack", "gone-session", ab, 2);
	CHECK(p1 > 0);
	CHECK_EQ_INT(catalog_content_put(c, list_a, 2, &content), 0);
	snap = make_snapshot(c, T0, content, NULL);
	CHECK(snap > 0);

	/* no sessions: the unreferenced B goes at once; P1 still holds A */
	CHECK_EQ_INT(catalog_gc(c, &r), 0);
	CHECK_EQ_INT(r.contents_deleted, 0);
	CHECK_EQ_INT(r.chunks_condemned, 1);
	CHECK_EQ_INT(r.chunks_deleted, 1);
	CHECK_EQ_INT(r.chunk_bytes_deleted, 100);
	CHECK_EQ_INT(r.chunks_waiting, 0);
	CHECK_EQ_INT(r.n_dead_packs, 0);
	CHECK(r.dead_packs == NULL || r.dead_packs[0] == NULL);
	catalog_gc_result_clear(&r);
	CHECK_EQ_INT(catalog_chunk_exists(c, &a), 1);
	CHECK_EQ_INT(catalog_chunk_exists(c, &b), 0);
	{
		ChunkLoc loc;
		CHECK_EQ_INT(catalog_chunk_locate(c, &b, &loc), -ENOENT);
	}

	/* a session that began before gc keeps what gc condemns */
	p2 = make_pack(c, "packs/22/p2.pack", NULL, &cc, 1);
	CHECK(p2 > 0);
	CHECK_EQ_INT(catalog_chunk_exists(c, &cc), 1);
	CHECK_EQ_INT(catalog_session_add(c, "backup-1", "backup", NULL), 0);
	CHECK_EQ_INT(catalog_gc(c, &r), 0);
	CHECK_EQ_INT(r.chunks_condemned, 1);
	CHECK_EQ_INT(r.chunks_deleted, 0);
	CHECK_EQ_INT(r.chunks_waiting, 1);
	CHECK_EQ_INT(r.n_dead_packs, 0);
	catalog_gc_result_clear(&r);
	/* condemned: not offered for reuse, but still readable */
	CHECK_EQ_INT(catalog_chunk_exists(c, &cc), 0);
	{
		ChunkLoc loc;
		CHECK_EQ_INT(catalog_chunk_locate(c, &cc, &loc), 0);
		CHECK_EQ_INT(loc.pack, p2);
	}
	/* while the session lives, gc keeps waiting */
	CHECK_EQ_INT(catalog_gc(c, &r), 0);
	CHECK_EQ_INT(r.chunks_deleted, 0);
	CHECK_EQ_INT(r.chunks_waiting, 1);
	catalog_gc_result_clear(&r);

	/* the session ends: the next gc deletes C, and P2 is left empty */
	CHECK_EQ_INT(catalog_session_remove(c, "backup-1"), 0);
	CHECK_EQ_INT(catalog_gc(c, &r), 0);
	CHECK_EQ_INT(r.chunks_deleted, 1);
	CHECK_EQ_INT(r.chunks_waiting, 0);
	CHECK_EQ_INT(r.n_dead_packs, 1);
	CHECK(has_dead(&r, "packs/22/p2.pack"));
	CHECK(r.dead_packs && r.dead_packs[r.n_dead_packs] == NULL);
	catalog_gc_result_clear(&r);
	CHECK(r.dead_packs == NULL && r.n_dead_packs == 0);
	{
		ChunkLoc loc;
		CHECK_EQ_INT(catalog_chunk_locate(c, &cc, &loc), -ENOENT);
	}
	/* a dead pack is reported once: its row is gone */
	CHECK_EQ_INT(catalog_gc(c, &r), 0);
	CHECK_EQ_INT(r.n_dead_packs, 0);
	catalog_gc_result_clear(&r);

	/* a condemned chunk written again by a backup is alive again */
	CHECK_EQ_INT(catalog_session_add(c, "backup-2", "backup", NULL), 0);
	CHECK(make_pack(c, "packs/33/p3.pack", "backup-2", &d, 1) > 0);
	CHECK_EQ_INT(catalog_gc(c, &r), 0); /* D: unreferenced, condemned, kept */
	CHECK_EQ_INT(r.chunks_waiting, 1);
	catalog_gc_result_clear(&r);
	CHECK_EQ_INT(catalog_chunk_exists(c, &d), 0);
	{
		int64_t p4 = make_pack(c, "packs/44/p4.pack", "backup-2", &d, 1);
		ChunkLoc loc;
		CHECK(p4 > 0);
		CHECK_EQ_INT(catalog_chunk_exists(c, &d), 1);
		CHECK_EQ_INT(catalog_chunk_locate(c, &d, &loc), 0);
		CHECK_EQ_INT(loc.pack, p4);
		/* and a snapshot now uses it */
		int64_t cd;
		CHECK_EQ_INT(catalog_content_put(c, &d, 1, &cd), 0);
		CHECK(make_snapshot(c, T0 + 5000000000, cd, NULL) > 0);
	}
	CHECK_EQ_INT(catalog_session_remove(c, "backup-2"), 0);
	CHECK_EQ_INT(catalog_gc(c, &r), 0);
	CHECK_EQ_INT(r.chunks_deleted, 0);
	CHECK_EQ_INT(r.chunks_waiting, 0);
	CHECK_EQ_INT(r.n_dead_packs, 1);
	CHECK(has_dead(&r, "packs/33/p3.pack")); /* D moved to p4 */
	catalog_gc_result_clear(&r);
	CHECK_EQ_INT(catalog_chunk_exists(c, &d), 1);

	/* pending packs: kept while their session lives, dead once it is gone */
	{
		int64_t pp;
		CHECK_EQ_INT(catalog_session_add(c, "writer", "backup", NULL), 0);
		CHECK_EQ_INT(catalog_pack_add_pending(c, "packs/55/live.pack", "writer", &pp), 0);
		CHECK_EQ_INT(catalog_pack_add_pending(c, "packs/66/orphan.pack", "crashed", &pp), 0);
		CHECK_EQ_INT(catalog_gc(c, &r), 0);
		CHECK_EQ_INT(r.n_dead_packs, 1);
		CHECK(has_dead(&r, "packs/66/orphan.pack"));
		CHECK(!has_dead(&r, "packs/55/live.pack"));
		catalog_gc_result_clear(&r);
		CHECK_EQ_INT(catalog_session_remove(c, "writer"), 0);
		CHECK_EQ_INT(catalog_gc(c, &r), 0);
		CHECK_EQ_INT(r.n_dead_packs, 1);
		CHECK(has_dead(&r, "packs/55/live.pack"));
		catalog_gc_result_clear(&r);
	}

	/* the snapshot goes: its content, A, and P1 follow */
	CHECK_EQ_INT(catalog_snapshot_delete(c, snap), 0);
	CHECK_EQ_INT(catalog_gc(c, &r), 0);
	CHECK_EQ_INT(r.contents_deleted, 1);
	CHECK_EQ_INT(r.chunks_deleted, 1);
	CHECK_EQ_INT(r.n_dead_packs, 1);
	CHECK(has_dead(&r, "packs/11/p1.pack"));
	catalog_gc_result_clear(&r);
	CHECK_EQ_INT(catalog_chunk_exists(c, &a), 0);
	CHECK_EQ_INT(catalog_chunk_exists(c, &d), 1);

	CatalogStats st;
	CHECK_EQ_INT(catalog_stats(c, &st), 0);
	CHECK_EQ_INT(st.n_chunks, 1);
	CHECK_EQ_INT(st.n_packs, 1);
	CHECK_EQ_INT(st.n_contents, 1);
	CHECK_EQ_INT(st.n_snapshots, 1);
	{
		char *msg = NULL;
		CHECK_EQ_INT(catalog_integrity_check(c, &msg), 0);
		free(msg);
	}
	catalog_gc_result_clear(&r); /* clearing twice is harmless */
out:
	catalog_free(c);
	TEST_RM_RF(tmp);
}

/*
 * gc --repack's catalog side: candidates, the move (all or nothing), retired
 * packs kept while any session (a mount too) older than the move lives, and
 * VACUUM giving pages back.
 */
static void test_repack(void)
{
	char tmp[64];
	Catalog *c = open_fresh(tmp, sizeof(tmp));
	ChunkId a = id_of("A"), b = id_of("B"), cc = id_of("C"), d = id_of("D");
	ChunkId abcd[4] = {a, b, cc, d}, list[2] = {a, cc};
	CatalogRepackPack *cand = NULL;
	PackEntry *live = NULL;
	CatalogGcResult r = {0};
	size_t n = 0;
	int64_t p1, content, np;

	if (!c)
		goto out;
	p1 = make_pack(c, "packs/11/p1.pack", NULL, abcd, 4);
	CHECK_EQ_INT(catalog_content_put(c, list, 2, &content), 0);
	CHECK(make_snapshot(c, T0, content, NULL) > 0);
	/* all four live: 400 of 8 + 400 + 4 * 52 + 56 bytes, no candidate at 50% */
	CHECK_EQ_INT(catalog_repack_candidates(c, 50, &cand, &n), 0);
	CHECK_EQ_INT(n, 0);
	free(cand);
	cand = NULL;
	/* B and D go: 200 live bytes of 672 */
	CHECK_EQ_INT(catalog_gc(c, &r), 0);
	CHECK_EQ_INT(r.chunks_deleted, 2);
	catalog_gc_result_clear(&r);
	CHECK_EQ_INT(catalog_repack_candidates(c, 25, &cand, &n), 0);
	CHECK_EQ_INT(n, 0);
	free(cand);
	cand = NULL;
	CHECK_EQ_INT(catalog_repack_candidates(c, 50, &cand, &n), 0);
	if (!CHECK_EQ_INT(n, 1))
		goto out;
	CHECK_EQ_INT(cand[0].id, p1);
	CHECK_EQ_STR(cand[0].name, "packs/11/p1.pack");
	CHECK_EQ_INT(cand[0].live_bytes, 200);
	CHECK_EQ_INT(cand[0].n_chunks, 2);
	CHECK_EQ_INT(catalog_pack_live_chunks(c, p1, &live, &n), 0);
	if (!CHECK_EQ_INT(n, 2))
		goto out;
	CHECK(chunk_id_cmp(&live[0].id, &a) == 0 && chunk_id_cmp(&live[1].id, &cc) == 0);

	/* a mount (any session) from before the move keeps the old pack */
	CHECK_EQ_INT(catalog_session_add(c, "mount-1", "mount", NULL), 0);
	CHECK_EQ_INT(catalog_pack_add_pending(c, "packs/22/new.pack", NULL, &np), 0);
	live[0].offset = PACK_HEADER_LEN;
	live[1].offset = PACK_HEADER_LEN + 100;
	/* a copy whose lengths differ from the row is not taken: nothing changes */
	live[1].elen = 99;
	CHECK_EQ_INT(catalog_pack_move(c, np, 500, live, 2, &p1, 1), -ESTALE);
	live[1].elen = 100;
	/* nor one that would leave a live chunk behind in the old pack */
	CHECK_EQ_INT(catalog_pack_move(c, np, 500, live, 1, &p1, 1), -ESTALE);
	{
		ChunkLoc loc;
		CHECK_EQ_INT(catalog_chunk_locate(c, &a, &loc), 0);
		CHECK_EQ_INT(loc.pack, p1);
	}
	CHECK_EQ_INT(catalog_pack_move(c, np, 368, live, 2, &p1, 1), 0);
	{
		ChunkLoc loc;
		CHECK_EQ_INT(catalog_chunk_locate(c, &cc, &loc), 0);
		CHECK_EQ_INT(loc.pack, np);
		CHECK_EQ_INT(loc.offset, PACK_HEADER_LEN + 100);
		CHECK_EQ_INT(loc.pack_size, 368);
	}
	/* a session registered after the move does not keep it */
	CHECK_EQ_INT(catalog_session_add(c, "mount-2", "mount", NULL), 0);
	CHECK_EQ_INT(catalog_gc_retired(c, &r), 0);
	CHECK_EQ_INT(r.n_dead_packs, 0);
	CHECK_EQ_INT(r.packs_retired_waiting, 1);
	catalog_gc_result_clear(&r);
	CHECK_EQ_INT(catalog_gc(c, &r), 0); /* plain gc keeps it too */
	CHECK(!has_dead(&r, "packs/11/p1.pack"));
	catalog_gc_result_clear(&r);
	CHECK_EQ_INT(catalog_session_remove(c, "mount-1"), 0);
	CHECK_EQ_INT(catalog_gc_retired(c, &r), 0);
	CHECK_EQ_INT(r.n_dead_packs, 1);
	CHECK(has_dead(&r, "packs/11/p1.pack"));
	CHECK_EQ_INT(r.packs_retired_waiting, 0);
	catalog_gc_result_clear(&r);
	CHECK_EQ_INT(catalog_session_remove(c, "mount-2"), 0);
	/* the new pack is full of live chunks: nothing more to do */
	free(cand);
	cand = NULL;
	CHECK_EQ_INT(catalog_repack_candidates(c, 50, &cand, &n), 0);
	CHECK_EQ_INT(n, 0);

	/* two moves, a session registered between them: only the second old pack waits */
	{
		ChunkId e = id_of("E"), f = id_of("F"), g = id_of("G");
		ChunkId ef[2] = {e, f}, eg[2] = {e, g};
		int64_t p2, p3, np2, np3, ceg;
		PackEntry pe, pg;
		p2 = make_pack(c, "packs/33/p2.pack", NULL, ef, 2);
		p3 = make_pack(c, "packs/44/p3.pack", NULL, &g, 1);
		CHECK_EQ_INT(catalog_content_put(c, eg, 2, &ceg), 0);
		CHECK(make_snapshot(c, T0 + 1000000000, ceg, NULL) > 0);
		CHECK_EQ_INT(catalog_gc(c, &r), 0); /* F goes */
		catalog_gc_result_clear(&r);
		pe = (PackEntry){.id = e, .offset = PACK_HEADER_LEN, .elen = 100, .plen = 16384,
				 .enc = CHUNK_ENC_ZSTD};
		pg = pe;
		pg.id = g;
		CHECK_EQ_INT(catalog_pack_add_pending(c, "packs/55/np2.pack", NULL, &np2), 0);
		CHECK_EQ_INT(catalog_pack_move(c, np2, 216, &pe, 1, &p2, 1), 0);
		CHECK_EQ_INT(catalog_session_add(c, "mount-3", "mount", NULL), 0);
		CHECK_EQ_INT(catalog_pack_add_pending(c, "packs/66/np3.pack", NULL, &np3), 0);
		CHECK_EQ_INT(catalog_pack_move(c, np3, 216, &pg, 1, &p3, 1), 0);
		CHECK_EQ_INT(catalog_gc_retired(c, &r), 0);
		CHECK_EQ_INT(r.n_dead_packs, 1);
		CHECK(has_dead(&r, "packs/33/p2.pack"));
		CHECK_EQ_INT(r.packs_retired_waiting, 1);
		catalog_gc_result_clear(&r);
		CHECK_EQ_INT(catalog_session_remove(c, "mount-3"), 0);
		CHECK_EQ_INT(catalog_gc(c, &r), 0); /* a plain gc deletes it once nobody waits */
		CHECK_EQ_INT(r.n_dead_packs, 1);
		CHECK(has_dead(&r, "packs/44/p3.pack"));
		catalog_gc_result_clear(&r);
	}

	/* VACUUM: only when much of the file is free, then the pages are given back */
	{
		uint64_t freed = 1;
		sqlite3 *db = catalog_sqlite(c);
		CHECK_EQ_INT(catalog_vacuum_sparse(c, &freed), 0);
		CHECK_EQ_INT(freed, 0);
		CHECK_EQ_INT(sqlite3_exec(db, "CREATE TABLE filler(x); WITH RECURSIVE n(i) AS"
					  " (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)"
					  " INSERT INTO filler SELECT randomblob(1000) FROM n;"
					  " DROP TABLE filler;", NULL, NULL, NULL), SQLITE_OK);
		CHECK_EQ_INT(catalog_vacuum_sparse(c, &freed), 0);
		CHECK(freed >= 2000 * 1000);
		CHECK_EQ_INT(catalog_vacuum_sparse(c, &freed), 0);
		CHECK_EQ_INT(freed, 0);
		CHECK_EQ_INT(catalog_begin(c), 0);
		CHECK_EQ_INT(catalog_vacuum_sparse(c, &freed), -EINVAL);
		catalog_rollback(c);
	}
out:
	free(cand);
	free(live);
	catalog_free(c);
	TEST_RM_RF(tmp);
}

typedef struct Hits {
	char snaps[8][64];
	char paths[8][65]; /* a chunk id in hex, or a path */
	size_t n;
} Hits;

static int collect_damage(const char *snapshot, const char *path, void *ud)
{
	Hits *h = ud;
	if (h->n < ELEMENTSOF(h->snaps)) {
		snprintf(h->snaps[h->n], sizeof(h->snaps[0]), "%s", snapshot);
		snprintf(h->paths[h->n], sizeof(h->paths[0]), "%s", path);
	}
	h->n++;
	return 0;
}

static int collect_missing(const char *snapshot, const ChunkId *id, void *ud)
{
	Hits *h = ud;
	if (h->n < ELEMENTSOF(h->snaps)) {
		snprintf(h->snaps[h->n], sizeof(h->snaps[0]), "%s", snapshot);
		chunk_id_to_hex(id, h->paths[h->n]);
	}
	h->n++;
	return 0;
}

static void test_damage_and_references(void)
{
	char tmp[64];
	Catalog *c = open_fresh(tmp, sizeof(tmp));
	ChunkId good = id_of("good"), bad = id_of("bad"), lost = id_of("lost");
	ChunkId l1[2] = {good, bad}, l2[1] = {lost}, l3[2] = {good, chunk_id_hole};
	int64_t c1, c2, c3;
	SnapshotInfo s = {.instance = "main", .type = "full", .start_time = T0};
	Hits h = {0};

	if (!c)
		goto out;
	CHECK(make_pack(c, "packs/aa/a.pack", NULL, l1, 2) > 0);
	CHECK_EQ_INT(catalog_content_put(c, l1, 2, &c1), 0);
	CHECK_EQ_INT(catalog_content_put(c, l2, 1, &c2), 0);
	CHECK_EQ_INT(catalog_content_put(c, l3, 2, &c3), 0);
	CHECK_EQ_INT(catalog_snapshot_begin(c, &s), 0);
	FileRow rows[] = {
		{.ino = 1, .parent = 1, .name = "", .mode = S_IFDIR | 0700},
		{.ino = 2, .parent = 1, .name = "base", .mode = S_IFDIR | 0700},
		{.ino = 3, .parent = 2, .name = "16384", .mode = S_IFDIR | 0700},
		{.ino = 4, .parent = 3, .name = "1259", .mode = S_IFREG | 0600, .size = 20000,
		 .content = c1},
		{.ino = 5, .parent = 1, .name = "PG_VERSION", .mode = S_IFREG | 0600, .size = 3,
		 .content = c3},
		{.ino = 6, .parent = 1, .name = "lostfile", .mode = S_IFREG | 0600, .size = 3,
		 .content = c2},
	};
	for (size_t i = 0; i < ELEMENTSOF(rows); i++)
		CHECK_EQ_INT(catalog_file_add(c, s.rowid, &rows[i]), 0);

	/* running: not checked */
	CHECK_EQ_INT(catalog_check_references(c, collect_missing, &h), 0);
	CHECK_EQ_INT(h.n, 0);
	CHECK_EQ_INT(catalog_find_damage(c, &bad, 1, collect_damage, &h), 0);
	CHECK_EQ_INT(h.n, 0);

	s.status = SNAP_STATUS_OK;
	CHECK_EQ_INT(catalog_snapshot_finish(c, &s), 0);
	/* "lost" has no chunk row */
	CHECK_EQ_INT(catalog_check_references(c, collect_missing, &h), 0);
	CHECK_EQ_INT(h.n, 1);
	{
		char hex[65];
		chunk_id_to_hex(&lost, hex);
		CHECK_EQ_STR(h.paths[0], hex);
		CHECK_EQ_STR(h.snaps[0], s.name);
	}
	/* damage is traced to the files that use it, with their paths */
	h.n = 0;
	CHECK_EQ_INT(catalog_find_damage(c, &bad, 1, collect_damage, &h), 0);
	CHECK_EQ_INT(h.n, 1);
	CHECK_EQ_STR(h.snaps[0], s.name);
	CHECK_EQ_STR(h.paths[0], "base/16384/1259");
	h.n = 0;
	ChunkId both[2] = {lost, good};
	CHECK_EQ_INT(catalog_find_damage(c, both, 2, collect_damage, &h), 0);
	CHECK_EQ_INT(h.n, 3);
out:
	catalog_free(c);
	TEST_RM_RF(tmp);
}

/* ids distinct per (seed, i) */
static ChunkId *make_ids(size_t n, unsigned seed)
{
	ChunkId *v = xmalloc(n ? n * sizeof(*v) : 1);
	for (size_t i = 0; i < n; i++) {
		char buf[48];
		snprintf(buf, sizeof(buf), "%u/%zu", seed, i);
		v[i] = id_of(buf);
	}
	return v;
}


static bool roundtrip(Catalog *c, const ChunkId *ids, size_t n, int64_t *ret_id)
{
	_cleanup_free_ ChunkId *got = NULL;
	size_t got_n = 99;
	int64_t id = 0;
	bool ok = CHECK_EQ_INT(catalog_content_put(c, ids, n, &id), 0) &&
		  CHECK_EQ_INT(catalog_content_get(c, id, &got, &got_n), 0) &&
		  CHECK_EQ_INT(got_n, n) && CHECK(n == 0 || memcmp(got, ids, n * sizeof(*ids)) == 0);
	if (ret_id)
		*ret_id = id;
	return ok;
}

/* Flip one byte of the ids of the first id block. */
static bool flip_block_byte(Catalog *c, size_t at)
{
	sqlite3 *db = catalog_sqlite(c);
	sqlite3_stmt *s = NULL, *u = NULL;
	bool ok = false;
	if (sqlite3_prepare_v2(db, "SELECT id, ids FROM idblocks ORDER BY id LIMIT 1", -1, &s,
			       NULL) == SQLITE_OK &&
	    sqlite3_step(s) == SQLITE_ROW && (size_t)sqlite3_column_bytes(s, 1) > at &&
	    sqlite3_prepare_v2(db, "UPDATE idblocks SET ids = ?2 WHERE id = ?1", -1, &u, NULL) ==
		    SQLITE_OK) {
		size_t len = (size_t)sqlite3_column_bytes(s, 1);
		_cleanup_free_ uint8_t *b = xmalloc(len);
		memcpy(b, sqlite3_column_blob(s, 1), len);
		b[at] ^= 1;
		sqlite3_bind_int64(u, 1, sqlite3_column_int64(s, 0));
		sqlite3_bind_blob(u, 2, b, (int)len, SQLITE_TRANSIENT);
		ok = sqlite3_step(u) == SQLITE_DONE;
	}
	sqlite3_finalize(s);
	sqlite3_finalize(u);
	return ok;
}

typedef struct BadBlocks {
	size_t n, missing;
} BadBlocks;

static int count_bad_block(const ChunkId *hash _unused_, bool missing, void *ud)
{
	BadBlocks *b = ud;
	b->n++;
	b->missing += missing;
	return 0;
}

/* Lists as id blocks: round trips, sharing, gc of blocks, damage. */
static void test_idblocks(void)
{
	static const size_t sizes[] = {0, 1, 256, 257, 16384};
	char tmp[64];
	Catalog *c = open_fresh(tmp, sizeof(tmp));
	_cleanup_free_ ChunkId *big = make_ids(16384, 1), *inl = make_ids(300, 2);
	int64_t ids[ELEMENTSOF(sizes)], id_big = 0, id_changed = 0, id_inline = 0, id_grown = 0;

	if (!c)
		goto out;
	CHECK(!catalog_idblocks(c)); /* off unless the repository says format 2 */
	/* with blocks off, a long list stays inline */
	CHECK(roundtrip(c, inl, 300, &id_inline));
	CHECK_EQ_INT(query_int(c, "SELECT count(*) FROM idblocks"), 0);
	catalog_set_idblocks(c, true);
	for (size_t i = 0; i < ELEMENTSOF(sizes); i++) {
		_cleanup_free_ ChunkId *v = make_ids(sizes[i], 10 + (unsigned)i);
		CHECK(roundtrip(c, v, sizes[i], &ids[i]));
	}
	/* 0, 1, 256: inline; 257: two blocks (256 + 1); 16384: 64 */
	CHECK_EQ_INT(query_int(c, "SELECT count(*) FROM contents WHERE blocks = 1"), 2);
	CHECK_EQ_INT(query_int(c, "SELECT count(*) FROM idblocks"), 2 + 64);
	CHECK_EQ_INT(query_int(c, "SELECT count(*) FROM idblocks WHERE n = 1"), 1);
	/* a list inline from before is still read; the same list again is the same row */
	{
		int64_t again = 0;
		CHECK(roundtrip(c, inl, 300, &again));
		CHECK_EQ_INT(again, id_inline);
	}

	/* one id changed in a 16384-id list: exactly one new block */
	CHECK(roundtrip(c, big, 16384, &id_big));
	int64_t before = query_int(c, "SELECT count(*) FROM idblocks");
	big[5000] = id_of("changed");
	CHECK(roundtrip(c, big, 16384, &id_changed));
	CHECK(id_changed != id_big);
	CHECK_EQ_INT(query_int(c, "SELECT count(*) FROM idblocks"), before + 1);
	/* grown by one id: every full block shared, one new tail block of 1 */
	{
		_cleanup_free_ ChunkId *grown = xmalloc(16385 * sizeof(ChunkId));
		memcpy(grown, big, 16384 * sizeof(ChunkId));
		grown[16384] = id_of("tail");
		CHECK(roundtrip(c, grown, 16385, &id_grown));
		CHECK_EQ_INT(query_int(c, "SELECT count(*) FROM idblocks"), before + 2);
	}

	/* gc: blocks of lists no file uses go, shared ones stay */
	{
		CatalogGcResult res = {0};
		int64_t snap = make_snapshot(c, T0, id_changed, NULL);
		CHECK(snap > 0);
		CHECK_EQ_INT(catalog_gc(c, &res), 0);
		/* only the changed list is left: its 64 blocks */
		CHECK_EQ_INT(query_int(c, "SELECT count(*) FROM contents"), 1);
		CHECK_EQ_INT(query_int(c, "SELECT count(*) FROM idblocks"), 64);
		CHECK_EQ_INT(res.idblocks_deleted, 2 + 64 + 1 + 1);
		catalog_gc_result_clear(&res);
		/* its chunks stay referenced: none condemned that it names */
		CHECK_EQ_INT(query_int(c, "SELECT count(*) FROM chunks"), 0);
		_cleanup_free_ ChunkId *got = NULL;
		size_t n = 0;
		CHECK_EQ_INT(catalog_content_get(c, id_changed, &got, &n), 0);
		CHECK_EQ_INT(n, 16384);
	}

	/* a damaged block: found by verify, never returned as data */
	{
		BadBlocks bb = {0};
		_cleanup_free_ ChunkId *got = NULL;
		size_t n = 0;
		CHECK_EQ_INT(catalog_idblocks_verify(c, count_bad_block, &bb), 0);
		CHECK_EQ_INT(bb.n, 0);
		CHECK(flip_block_byte(c, 100));
		CHECK_EQ_INT(catalog_idblocks_verify(c, count_bad_block, &bb), 0);
		CHECK_EQ_INT(bb.n, 1);
		CHECK_EQ_INT(bb.missing, 0);
		CHECK_EQ_INT(catalog_content_get(c, id_changed, &got, &n), -EBADMSG);
		CHECK(got == NULL);
		/* another list that has the block heals it */
		big[16000] = id_of("elsewhere");
		CHECK(roundtrip(c, big, 16384, NULL));
		free(TAKE_PTR(got));
		CHECK_EQ_INT(catalog_content_get(c, id_changed, &got, &n), 0);
		bb.n = 0;
		CHECK_EQ_INT(catalog_idblocks_verify(c, count_bad_block, &bb), 0);
		CHECK_EQ_INT(bb.n, 0);
	}

	/* upgrade: a long inline list becomes blocks, the same ids */
	{
		uint64_t left = 0, conv = 0;
		int64_t id2 = 0;
		catalog_set_idblocks(c, false);
		CHECK(roundtrip(c, inl, 300, &id2));
		catalog_set_idblocks(c, true);
		CHECK_EQ_INT(catalog_idblocks_inline_count(c, &left), 0);
		CHECK_EQ_INT(left, 1);
		CHECK_EQ_INT(catalog_idblocks_convert(c, &conv), 0);
		CHECK_EQ_INT(conv, 1);
		CHECK_EQ_INT(catalog_idblocks_inline_count(c, &left), 0);
		CHECK_EQ_INT(left, 0);
		CHECK(roundtrip(c, inl, 300, NULL));
		CHECK_EQ_INT(query_int(c, "SELECT count(*) FROM contents WHERE blocks = 0"), 0);
	}
out:
	catalog_free(c);
	TEST_RM_RF(tmp);
}

/* Rewrite contents row id's list column to the bytes given (hex). */
static bool set_list(Catalog *c, int64_t id, const char *hex)
{
	char sql[256];
	snprintf(sql, sizeof(sql), "UPDATE contents SET list = x'%s' WHERE id = %lld", hex,
		 (long long)id);
	return sqlite3_exec(catalog_sqlite(c), sql, NULL, NULL, NULL) == SQLITE_OK;
}

/*
 * Format 4: lists of more than 62 ids are 62-id blocks named by zigzag delta
 * varints (contents.blocks 2): two block rows on each 4 KiB page, no overflow
 * page, a one-byte list entry per consecutive block; 256-id blocks (form 1)
 * written before keep reading; a damaged list is never read or gc'ed past.
 */
static void test_idblocks_small(void)
{
	char tmp[64];
	Catalog *c = open_fresh(tmp, sizeof(tmp));
	_cleanup_free_ ChunkId *big = make_ids(16384, 21), *old = make_ids(1000, 22);
	int64_t id_old = 0, id_big = 0, id_changed = 0, id_mid = 0, id_62 = 0, id_front = 0;
	int64_t overflow_old = 0;

	if (!c)
		goto out;
	catalog_set_idblocks(c, true);
	catalog_set_format(c, 3);
	CHECK_EQ_INT(catalog_list_form(c, 1000), CATALOG_LIST_BLOCKS);
	CHECK(roundtrip(c, old, 1000, &id_old)); /* form 1: four 256-id blocks */
	overflow_old = query_int(c, "SELECT count(*) FROM dbstat WHERE name = 'idblocks'"
				    " AND pagetype = 'overflow'");
	CHECK(overflow_old >= 2 * 3);
	catalog_set_format(c, 4);
	CHECK_EQ_INT(catalog_list_form(c, 62), CATALOG_LIST_INLINE);
	CHECK_EQ_INT(catalog_list_form(c, 63), CATALOG_LIST_SMALL_BLOCKS);
	{
		_cleanup_free_ ChunkId *v = make_ids(62, 23), *w = make_ids(100, 24);
		CHECK(roundtrip(c, v, 62, &id_62));
		CHECK(roundtrip(c, w, 100, &id_mid));
	}
	CHECK(roundtrip(c, big, 16384, &id_big));
	CHECK_EQ_INT(query_int(c, test_fmt((char[128]){0}, 128,
					   "SELECT blocks FROM contents WHERE id = %lld", (long long)id_old)),
		     CATALOG_LIST_BLOCKS);
	CHECK_EQ_INT(query_int(c, test_fmt((char[128]){0}, 128,
					   "SELECT blocks FROM contents WHERE id = %lld", (long long)id_62)),
		     CATALOG_LIST_INLINE);
	CHECK_EQ_INT(query_int(c, "SELECT count(*) FROM contents WHERE blocks = 2"), 2);
	/* 100 ids: 62 + 38; 16384: 265 blocks, 264 of 62 and one of 16 */
	CHECK_EQ_INT(query_int(c, "SELECT count(*) FROM idblocks WHERE n <= 62"), 2 + 265);
	CHECK_EQ_INT(query_int(c, "SELECT count(*) FROM idblocks WHERE n > 62"), 4);
	/* its blocks are consecutive rowids: the first entry its rowid, then one byte each */
	CHECK_EQ_INT(query_int(c, test_fmt((char[128]){0}, 128,
					   "SELECT length(list) FROM contents WHERE id = %lld",
					   (long long)id_big)), 1 + 264);
	/* the row layout: two 62-id blocks on each leaf page, nothing on overflow pages
	 * (a 256-id block took two overflow pages) */
	CHECK_EQ_INT(query_int(c, "SELECT count(*) FROM dbstat WHERE name = 'idblocks'"
				  " AND pagetype = 'overflow'"), overflow_old);
	CHECK(query_int(c, "SELECT count(*) FROM dbstat WHERE name = 'idblocks' AND pagetype = 'leaf'") <=
	      4 + (2 + 265 + 1) / 2 + 2);
	CHECK_EQ_INT(query_int(c, "SELECT max(length(ids)) FROM idblocks WHERE n <= 62"), 62 * 32);

	/* one id changed: exactly one new block, and the list still ~1 byte per block
	 * (the new block's rowid is far: two entries of a few bytes) */
	{
		int64_t before = query_int(c, "SELECT count(*) FROM idblocks");
		big[5000] = id_of("small changed");
		CHECK(roundtrip(c, big, 16384, &id_changed));
		CHECK_EQ_INT(query_int(c, "SELECT count(*) FROM idblocks"), before + 1);
		CHECK(query_int(c, test_fmt((char[128]){0}, 128,
					    "SELECT length(list) FROM contents WHERE id = %lld",
					    (long long)id_changed)) <= 1 + 264 + 4);
	}
	/* a new first block then older ones: a negative difference (zigzag) */
	{
		_cleanup_free_ ChunkId *front = xmalloc(16384 * sizeof(ChunkId));
		memcpy(front, big, 16384 * sizeof(ChunkId));
		front[0] = id_of("front");
		CHECK(roundtrip(c, front, 16384, &id_front));
	}
	/* the form-1 list written before still reads, in a format-4 connection too */
	{
		_cleanup_free_ ChunkId *got = NULL;
		size_t n = 0;
		CHECK_EQ_INT(catalog_content_get(c, id_old, &got, &n), 0);
		CHECK(n == 1000 && memcmp(got, old, sizeof(ChunkId) * 1000) == 0);
	}
	/* the stored form, for manifests */
	{
		_cleanup_free_ ChunkId *ids = NULL, *blocks = NULL;
		ChunkId hash;
		size_t n = 0, nb = 0;
		int form = -1;
		CHECK_EQ_INT(catalog_content_get_blocks(c, id_changed, &hash, &ids, &n, &blocks, &nb,
							&form), 0);
		CHECK_EQ_INT(form, CATALOG_LIST_SMALL_BLOCKS);
		CHECK_EQ_INT(nb, 265);
		/* put back by its block hashes (repair), in either catalog: the same list */
		{
			int64_t again = 0;
			size_t missing = 9;
			CHECK_EQ_INT(catalog_content_put_blocks(c, &hash, n, form, blocks, nb, &again,
								&missing), 0);
			CHECK_EQ_INT(again, id_changed);
			CHECK_EQ_INT(catalog_content_put_blocks(c, &hash, n, CATALOG_LIST_BLOCKS, blocks, nb,
								&again, &missing), -EBADMSG);
			CHECK_EQ_INT(catalog_content_put_blocks(c, &hash, n, 3, blocks, nb, &again,
								&missing), -EBADMSG);
		}
	}
	/* a damaged list (cut varint, a byte too many, a byte too few): -EBADMSG, and gc
	 * deletes nothing */
	{
		static const char *const bad[] = {"02", "0202", "80", "0102"};
		_cleanup_free_ ChunkId *got = NULL;
		size_t n = 0;
		CatalogGcResult res = {0};
		int64_t n_blocks = query_int(c, "SELECT count(*) FROM idblocks");
		for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
			if (!CHECK(set_list(c, id_mid, bad[i])))
				continue;
			/* 100 ids: two blocks, so "0202" would be two, but rowids 1, 2 are
			 * form-1 blocks of 256: the count of ids does not match */
			CHECK_EQ_INT(catalog_content_get(c, id_mid, &got, &n), -EBADMSG);
			free(TAKE_PTR(got));
		}
		CHECK(set_list(c, id_mid, "8001"));
		CHECK(make_snapshot(c, T0, id_mid, NULL) > 0);
		CHECK_EQ_INT(catalog_gc(c, &res), -EBADMSG);
		catalog_gc_result_clear(&res);
		CHECK_EQ_INT(query_int(c, "SELECT count(*) FROM idblocks"), n_blocks);
	}
out:
	catalog_free(c);
	TEST_RM_RF(tmp);
}

/* chunks.crc is stored signed (4 bytes); old unsigned rows read the same. */
static void test_crc_signed(void)
{
	char tmp[64];
	Catalog *c = open_fresh(tmp, sizeof(tmp));
	ChunkId a = id_of("crc a"), b = id_of("crc b");
	PackEntry e[2] = {{.id = a, .offset = 8, .elen = 10, .plen = 10, .enc = CHUNK_ENC_RAW,
			   .has_crc = true, .crc = 0xdeadbeef},
			  {.id = b, .offset = 18, .elen = 10, .plen = 10, .enc = CHUNK_ENC_RAW}};
	int64_t pid = 0;
	ChunkLoc loc;

	if (!c)
		return;
	CHECK_EQ_INT(catalog_pack_add_pending(c, "packs/aa/a.pack", "s", &pid), 0);
	CHECK_EQ_INT(catalog_pack_record(c, pid, 100, e, 2), 0);
	CHECK_EQ_INT(catalog_chunk_set_crc(c, &b, 0x80000000u), 0);
	CHECK_EQ_INT(query_int(c, "SELECT count(*) FROM chunks WHERE crc < 0"), 2);
	if (CHECK_EQ_INT(catalog_chunk_locate(c, &a, &loc), 0))
		CHECK_EQ_INT(loc.crc, 0xdeadbeef);
	if (CHECK_EQ_INT(catalog_chunk_locate(c, &b, &loc), 0))
		CHECK_EQ_INT(loc.crc, 0x80000000u);
	/* as an earlier binary wrote it */
	CHECK_EQ_INT(sqlite3_exec(catalog_sqlite(c), "UPDATE chunks SET crc = 3735928559 WHERE crc = -559038737",
				  NULL, NULL, NULL), SQLITE_OK);
	if (CHECK_EQ_INT(catalog_chunk_locate(c, &a, &loc), 0))
		CHECK_EQ_INT(loc.crc, 0xdeadbeef);
	catalog_free(c);
	rm_rf(tmp);
}

typedef struct Marked {
	int64_t v[8];
	size_t n;
} Marked;

static int mark_snap(int64_t snap, const char *name _unused_, void *ud)
{
	Marked *m = ud;
	if (m->n < ELEMENTSOF(m->v))
		m->v[m->n] = snap;
	m->n++;
	return 0;
}

/* Each block gets the lowest committed snapshot using it as carrier; a deleted one passes it on. */
static void test_idblock_carriers(void)
{
	char tmp[64];
	Catalog *c = open_fresh(tmp, sizeof(tmp));
	_cleanup_free_ ChunkId *v = make_ids(512, 3);
	int64_t l1 = 0, l2 = 0, s1, s2;
	Marked m = {0};

	if (!c)
		goto out;
	catalog_set_idblocks(c, true);
	CHECK(roundtrip(c, v, 512, &l1));
	v[300] = id_of("x");
	CHECK(roundtrip(c, v, 512, &l2));
	s1 = make_snapshot(c, T0, l1, NULL);
	s2 = make_snapshot(c, T0 + 1000000000, l2, NULL);
	CHECK_EQ_INT(catalog_idblocks_assign_carriers(c, 0, mark_snap, &m), 0);
	CHECK_EQ_INT(m.n, 2);
	CHECK_EQ_INT(query_int(c, test_fmt((char[128]){0}, 128,
					   "SELECT count(*) FROM idblocks WHERE carrier = %lld",
					   (long long)s1)), 2);
	CHECK_EQ_INT(query_int(c, test_fmt((char[128]){0}, 128,
					   "SELECT count(*) FROM idblocks WHERE carrier = %lld",
					   (long long)s2)), 1);
	/* nothing to move: nobody marked */
	m.n = 0;
	CHECK_EQ_INT(catalog_idblocks_assign_carriers(c, 0, mark_snap, &m), 0);
	CHECK_EQ_INT(m.n, 0);
	/* s1 deleted: the block both share moves to s2, the one only s1 used stays put */
	CHECK_EQ_INT(catalog_snapshot_delete(c, s1), 0);
	CHECK_EQ_INT(catalog_idblocks_assign_carriers(c, 0, mark_snap, &m), 0);
	CHECK_EQ_INT(m.n, 1);
	CHECK_EQ_INT(m.v[0], s2);
	CHECK_EQ_INT(query_int(c, test_fmt((char[128]){0}, 128,
					   "SELECT count(*) FROM idblocks WHERE carrier = %lld",
					   (long long)s2)), 2);
out:
	catalog_free(c);
	TEST_RM_RF(tmp);
}

/* A catalog from before chunks had CRC and fh columns gets them on open, NULL for old rows. */
static void test_crc_migration(void)
{
	char tmp[64], path[128];
	Catalog *c = open_fresh(tmp, sizeof(tmp));
	ChunkId a = id_of("a");
	PackEntry e = {.id = a, .offset = 8, .elen = 10, .plen = 10, .enc = CHUNK_ENC_RAW,
		       .has_crc = true, .crc = 7, .has_fh = true};
	int64_t pid = 0;
	ChunkLoc loc;
	sqlite3 *db = NULL;

	if (!c)
		return;
	CHECK_EQ_INT(catalog_pack_add_pending(c, "packs/aa/a.pack", "s", &pid), 0);
	CHECK_EQ_INT(catalog_pack_record(c, pid, 100, &e, 1), 0);
	catalog_free(c);
	snprintf(path, sizeof(path), "%s/catalog.db", tmp);
	if (CHECK_EQ_INT(sqlite3_open(path, &db), SQLITE_OK))
		CHECK_EQ_INT(sqlite3_exec(db, "ALTER TABLE chunks DROP COLUMN crc;"
					      "ALTER TABLE chunks DROP COLUMN fh", NULL, NULL, NULL),
			     SQLITE_OK);
	sqlite3_close(db);
	if (CHECK_EQ_INT(catalog_open(path, false, &c), 0) &&
	    CHECK_EQ_INT(catalog_chunk_locate(c, &a, &loc), 0)) {
		CHECK(!loc.has_crc);
		CHECK(!loc.has_fh);
	}
	catalog_free(c);
	rm_rf(tmp);
}

/*
 * A catalog from before snapshots recorded how they were taken gets the
 * columns on open: old snapshots read back without a method, new ones with.
 */
static void test_method_migration(void)
{
	char tmp[64], path[128];
	Catalog *c = open_fresh(tmp, sizeof(tmp));
	SnapshotInfo got = {0};
	sqlite3 *db = NULL;

	if (!c)
		return;
	CHECK(make_snapshot(c, T0, 0, NULL) > 0);
	catalog_free(c);
	snprintf(path, sizeof(path), "%s/catalog.db", tmp);
	if (CHECK_EQ_INT(sqlite3_open(path, &db), SQLITE_OK))
		CHECK_EQ_INT(sqlite3_exec(db, "ALTER TABLE snapshots DROP COLUMN method;"
					      "ALTER TABLE snapshots DROP COLUMN method_note;"
					      "ALTER TABLE snapshots DROP COLUMN read_bytes",
					  NULL, NULL, NULL),
			     SQLITE_OK);
	sqlite3_close(db);
	if (!CHECK_EQ_INT(catalog_open(path, false, &c), 0))
		goto out;
	if (CHECK_EQ_INT(catalog_snapshot_get(c, "latest", NULL, &got), 0))
		CHECK(!got.method && !got.method_note && !got.has_read_bytes);
	snapshot_info_clear(&got);
	/* and the migrated catalog records them for a new snapshot */
	SnapshotInfo s = {.instance = "main", .type = "incr", .start_time = T0 + 2000000000LL};
	if (CHECK_EQ_INT(catalog_snapshot_begin(c, &s), 0)) {
		s.status = SNAP_STATUS_OK;
		s.stop_time = s.start_time + 1000;
		s.method = "blocks";
		s.method_note = "why";
		s.has_read_bytes = true;
		s.read_bytes = 42;
		CHECK_EQ_INT(catalog_snapshot_finish(c, &s), 0);
		s.method = s.method_note = NULL; /* not ours to free */
		if (CHECK_EQ_INT(catalog_snapshot_get(c, s.name, NULL, &got), 0)) {
			CHECK_EQ_STR(got.method, "blocks");
			CHECK_EQ_STR(got.method_note, "why");
			CHECK(got.has_read_bytes && got.read_bytes == 42);
		}
		snapshot_info_clear(&got);
	}
out:
	catalog_free(c);
	rm_rf(tmp);
}


/* id with its last byte changed: the same first 8 bytes, so the same chunk row key */
static ChunkId id_twin(const ChunkId *id, uint8_t x)
{
	ChunkId t = *id;
	t.b[PGBAKFS_CHUNK_ID_LEN - 1] ^= x;
	return t;
}

/*
 * Two ids whose first 8 bytes are equal share a chunk row key: the second
 * lives in chunks_overflow, and lookups, per-pack listings, CRCs, gc, repack
 * and re-recording all find each under its own id, never the other.
 */
static void test_chunk_key_collision(void)
{
	char tmp[64];
	Catalog *c = open_fresh(tmp, sizeof(tmp));
	ChunkId x = id_of("X"), y = id_twin(&x, 1), z = id_twin(&x, 2);
	ChunkId xy[2] = {x, y}, list_y[1] = {y};
	PackEntry *pe = NULL;
	CatalogGcResult r = {0};
	CatalogStats st;
	ChunkLoc loc;
	size_t n = 0;
	int64_t p1, p2, p3, content, np;

	if (!c)
		goto out;
	p1 = make_pack(c, "packs/11/p1.pack", NULL, xy, 2);
	CHECK(p1 > 0);
	CHECK_EQ_INT(query_int(c, "SELECT count(*) FROM chunks"), 1);
	CHECK_EQ_INT(query_int(c, "SELECT count(*) FROM chunks_overflow"), 1);
	CHECK_EQ_INT(catalog_chunk_exists(c, &x), 1);
	CHECK_EQ_INT(catalog_chunk_exists(c, &y), 1);
	CHECK_EQ_INT(catalog_chunk_exists(c, &z), 0); /* same key, neither id */
	CHECK_EQ_INT(catalog_chunk_locate(c, &z, &loc), -ENOENT);
	if (CHECK_EQ_INT(catalog_chunk_locate(c, &x, &loc), 0))
		CHECK_EQ_INT(loc.offset, PACK_HEADER_LEN);
	if (CHECK_EQ_INT(catalog_chunk_locate(c, &y, &loc), 0))
		CHECK_EQ_INT(loc.offset, PACK_HEADER_LEN + 100);
	/* the per-pack listing has both, each with its own id, by offset */
	CHECK_EQ_INT(catalog_pack_chunks(c, p1, &pe, &n), 0);
	if (CHECK_EQ_INT(n, 2))
		CHECK(chunk_id_cmp(&pe[0].id, &x) == 0 && chunk_id_cmp(&pe[1].id, &y) == 0);
	free(pe);
	pe = NULL;
	/* a CRC lands on its own row only */
	CHECK_EQ_INT(catalog_chunk_set_crc(c, &y, 77), 0);
	CHECK_EQ_INT(catalog_chunk_set_crc(c, &z, 78), 0);
	if (CHECK_EQ_INT(catalog_chunk_locate(c, &y, &loc), 0))
		CHECK(loc.has_crc && loc.crc == 77);
	if (CHECK_EQ_INT(catalog_chunk_locate(c, &x, &loc), 0))
		CHECK(!loc.has_crc);
	CHECK_EQ_INT(catalog_stats(c, &st), 0);
	CHECK_EQ_INT(st.n_chunks, 2);
	CHECK_EQ_INT(st.chunk_stored_bytes, 200);

	/* only y is used: gc deletes x, the main row of the key, and keeps y */
	CHECK_EQ_INT(catalog_content_put(c, list_y, 1, &content), 0);
	CHECK(make_snapshot(c, T0, content, NULL) > 0);
	CHECK_EQ_INT(catalog_gc(c, &r), 0);
	CHECK_EQ_INT(r.chunks_condemned, 1);
	CHECK_EQ_INT(r.chunks_deleted, 1);
	catalog_gc_result_clear(&r);
	CHECK_EQ_INT(catalog_chunk_exists(c, &x), 0);
	CHECK_EQ_INT(catalog_chunk_exists(c, &y), 1);
	CHECK_EQ_INT(query_int(c, "SELECT count(*) FROM chunks"), 0);

	/* y again, the key free in the main table: y stays where it is, once */
	p2 = make_pack(c, "packs/22/p2.pack", NULL, &y, 1);
	CHECK(p2 > 0);
	CHECK_EQ_INT(query_int(c, "SELECT count(*) FROM chunks"), 0);
	CHECK_EQ_INT(query_int(c, "SELECT count(*) FROM chunks_overflow"), 1);
	if (CHECK_EQ_INT(catalog_chunk_locate(c, &y, &loc), 0))
		CHECK_EQ_INT(loc.pack, p1);
	/* z, new: the main row of the key */
	p3 = make_pack(c, "packs/33/p3.pack", NULL, &z, 1);
	CHECK(p3 > 0);
	CHECK_EQ_INT(query_int(c, "SELECT count(*) FROM chunks"), 1);
	if (CHECK_EQ_INT(catalog_chunk_locate(c, &z, &loc), 0))
		CHECK_EQ_INT(loc.pack, p3);

	/* repack moves y (an overflow row) out of p1, which then goes */
	CHECK_EQ_INT(catalog_pack_live_chunks(c, p1, &pe, &n), 0);
	if (!CHECK_EQ_INT(n, 1) || !CHECK(chunk_id_cmp(&pe[0].id, &y) == 0))
		goto out;
	CHECK_EQ_INT(catalog_pack_add_pending(c, "packs/44/new.pack", NULL, &np), 0);
	pe[0].offset = PACK_HEADER_LEN;
	CHECK_EQ_INT(catalog_pack_move(c, np, 300, pe, 1, &p1, 1), 0);
	if (CHECK_EQ_INT(catalog_chunk_locate(c, &y, &loc), 0))
		CHECK_EQ_INT(loc.pack, np);
	CHECK_EQ_INT(catalog_gc_retired(c, &r), 0);
	CHECK(has_dead(&r, "packs/11/p1.pack"));
	catalog_gc_result_clear(&r);
	/* gc: z and the empty p2 and p3 go, y stays */
	CHECK_EQ_INT(catalog_gc(c, &r), 0);
	CHECK_EQ_INT(r.chunks_deleted, 1);
	CHECK(has_dead(&r, "packs/22/p2.pack") && has_dead(&r, "packs/33/p3.pack"));
	CHECK(!has_dead(&r, "packs/44/new.pack"));
	CHECK_EQ_INT(catalog_chunk_exists(c, &y), 1);
	CHECK_EQ_INT(catalog_chunk_exists(c, &z), 0);
out:
	catalog_gc_result_clear(&r);
	free(pe);
	catalog_free(c);
	rm_rf(tmp);
}

#define N_OLD_ROWS 500

/* A catalog.db whose chunks table has the shape of schema version 1 (rows keyed by id). */
static bool make_v1_catalog(const char *path, const ChunkId *ids, size_t n)
{
	Catalog *c = NULL;
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;
	bool ok = CHECK_EQ_INT(catalog_open(path, true, &c), 0);
	catalog_free(c);
	ok = ok && CHECK_EQ_INT(sqlite3_open(path, &db), SQLITE_OK);
	ok = ok && CHECK_EQ_INT(sqlite3_exec(db,
		"DROP TABLE chunks; DROP TABLE chunks_overflow;"
		"CREATE TABLE chunks(id BLOB PRIMARY KEY, pack INTEGER NOT NULL,"
		"  offset INTEGER NOT NULL, elen INTEGER NOT NULL, plen INTEGER NOT NULL,"
		"  enc INTEGER NOT NULL, condemned INTEGER, crc INTEGER) WITHOUT ROWID;"
		"CREATE INDEX chunks_pack ON chunks(pack);"
		"ALTER TABLE chunks ADD COLUMN fh BLOB;" /* as a catalog with per-chunk fast hashes */
		"INSERT INTO packs(id, name, state, size, created) VALUES(1, 'packs/11/a.pack', 'ok',"
		"  1000000, 0), (2, 'packs/22/b.pack', 'ok', 1000000, 0);"
		"UPDATE meta SET value = 1 WHERE key = 'schema_version'", NULL, NULL, NULL), SQLITE_OK);
	ok = ok && CHECK_EQ_INT(sqlite3_prepare_v2(db, "INSERT INTO chunks VALUES(?1, ?2, ?3, ?4,"
					       " ?5, ?6, ?7, ?8, ?9)", -1, &s, NULL), SQLITE_OK);
	sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
	for (size_t i = 0; ok && i < n; i++) {
		sqlite3_reset(s);
		sqlite3_bind_blob(s, 1, ids[i].b, sizeof(ids[i].b), SQLITE_STATIC);
		sqlite3_bind_int64(s, 2, 1 + (int64_t)(i % 2));
		sqlite3_bind_int64(s, 3, 8 + 100 * (int64_t)i);
		sqlite3_bind_int64(s, 4, 50 + (int64_t)i);
		sqlite3_bind_int64(s, 5, 16384);
		sqlite3_bind_int(s, 6, (int)(i % 2));
		if (i % 7 == 3)
			sqlite3_bind_int64(s, 7, 5);
		else
			sqlite3_bind_null(s, 7);
		if (i % 5 == 0)
			sqlite3_bind_null(s, 8);
		else
			sqlite3_bind_int64(s, 8, 0xfffffff0u - i);
		if (i == 4)
			sqlite3_bind_blob(s, 9, "fast-hash-16byte", 16, SQLITE_STATIC);
		else
			sqlite3_bind_null(s, 9);
		ok = CHECK_EQ_INT(sqlite3_step(s), SQLITE_DONE);
	}
	sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
	sqlite3_finalize(s);
	sqlite3_close(db);
	return ok;
}

/*
 * A catalog of schema version 1 (chunk rows keyed by the whole id) is used as
 * it is, and catalog_chunks_rekey gives it the new rows, every column of
 * every row kept, ids sharing their first 8 bytes included; a migration
 * that fails leaves the old table as it was.
 */
static void test_chunks_migration(void)
{
	char tmp[64], path[128];
	ChunkId *ids = make_ids(N_OLD_ROWS, 9);
	Catalog *c = NULL;
	sqlite3 *db = NULL;
	PackEntry *pe = NULL;
	size_t n = 0;

	test_tmpdir(tmp, sizeof(tmp));
	snprintf(path, sizeof(path), "%s/catalog.db", tmp);
	ids[1] = id_twin(&ids[0], 1);
	ids[2] = id_twin(&ids[0], 2); /* three ids, one key */
	if (!make_v1_catalog(path, ids, N_OLD_ROWS))
		goto out;
	/* a failure half-way (a table in the way): nothing changed, the error returned */
	if (CHECK_EQ_INT(sqlite3_open(path, &db), SQLITE_OK))
		CHECK_EQ_INT(sqlite3_exec(db, "CREATE TABLE chunks_keyed(x)", NULL, NULL, NULL),
			     SQLITE_OK);
	sqlite3_close(db);
	db = NULL;
	/* a catalog of version 1 is used as it is (format 1 keeps it) */
	if (!CHECK_EQ_INT(catalog_open(path, false, &c), 0))
		goto out;
	{
		ChunkLoc loc;
		if (CHECK_EQ_INT(catalog_chunk_locate(c, &ids[2], &loc), 0))
			CHECK_EQ_INT(loc.offset, 8 + 100 * 2);
		CHECK_EQ_INT(catalog_chunk_exists(c, &ids[3]), 0); /* condemned */
		CHECK_EQ_INT(catalog_pack_chunks(c, 2, &pe, &n), 0);
		CHECK_EQ_INT(n, N_OLD_ROWS / 2);
		free(pe);
		pe = NULL;
	}
	CHECK(catalog_chunks_rekey(c) < 0);
	catalog_free(c);
	c = NULL;
	if (CHECK_EQ_INT(sqlite3_open(path, &db), SQLITE_OK)) {
		sqlite3_stmt *s = NULL;
		CHECK_EQ_INT(sqlite3_prepare_v2(db, "SELECT (SELECT count(*) FROM chunks WHERE"
					      " length(id) = 32), (SELECT value FROM meta WHERE key ="
					      " 'schema_version')", -1, &s, NULL), SQLITE_OK);
		if (CHECK_EQ_INT(sqlite3_step(s), SQLITE_ROW)) {
			CHECK_EQ_INT(sqlite3_column_int(s, 0), N_OLD_ROWS);
			CHECK_EQ_INT(sqlite3_column_int(s, 1), 1);
		}
		sqlite3_finalize(s);
		CHECK_EQ_INT(sqlite3_exec(db, "DROP TABLE chunks_keyed", NULL, NULL, NULL), SQLITE_OK);
	}
	sqlite3_close(db);

	/* the migration */
	if (!CHECK_EQ_INT(catalog_open(path, false, &c), 0) ||
	    !CHECK_EQ_INT(catalog_chunks_rekey(c), 1))
		goto out;
	CHECK_EQ_INT(query_int(c, "SELECT value FROM meta WHERE key = 'schema_version'"), 2);
	CHECK_EQ_INT(query_int(c, "SELECT count(*) FROM pragma_table_info('chunks') WHERE"
				  " name = 'id'"), 0);
	CHECK_EQ_INT(query_int(c, "SELECT count(*) FROM chunks"), N_OLD_ROWS - 2);
	CHECK_EQ_INT(query_int(c, "SELECT count(*) FROM chunks_overflow"), 2);
	CHECK_EQ_INT(query_int(c, "SELECT count(*) FROM sqlite_master WHERE name = 'chunks_pack'"), 1);
	CHECK_EQ_INT(query_int(c, "SELECT count(*) FROM chunks WHERE fh = 'fast-hash-16byte'"
				  " OR fh = CAST('fast-hash-16byte' AS BLOB)"), 1);
	CHECK_EQ_INT(catalog_publish_whole_take(c), 1);
	CHECK_EQ_INT(catalog_publish_whole_take(c), 0);
	for (size_t i = 0; i < N_OLD_ROWS; i++) {
		ChunkLoc loc;
		if (!CHECK_EQ_INT(catalog_chunk_locate(c, &ids[i], &loc), 0))
			break;
		CHECK_EQ_INT(loc.pack, 1 + (int64_t)(i % 2));
		CHECK_EQ_INT(loc.offset, 8 + 100 * i);
		CHECK_EQ_INT(loc.elen, 50 + i);
		CHECK_EQ_INT(loc.plen, 16384);
		CHECK_EQ_INT(loc.enc, i % 2);
		CHECK_EQ_INT(loc.has_crc, i % 5 != 0);
		if (i % 5 != 0)
			CHECK_EQ_INT(loc.crc, 0xfffffff0u - i);
		CHECK_EQ_INT(catalog_chunk_exists(c, &ids[i]), i % 7 != 3); /* condemned */
	}
	/* the listing of a pack has its rows, overflow ones included, and ids intact */
	CHECK_EQ_INT(catalog_pack_chunks(c, 1, &pe, &n), 0);
	if (CHECK_EQ_INT(n, N_OLD_ROWS / 2))
		for (size_t i = 0; i < n; i++)
			CHECK(chunk_id_cmp(&pe[i].id, &ids[2 * i]) == 0);
	catalog_free(c);
	c = NULL;
	/* again: nothing to do */
	if (CHECK_EQ_INT(catalog_open(path, false, &c), 0)) {
		CHECK_EQ_INT(catalog_chunks_rekey(c), 0);
		CHECK_EQ_INT(catalog_publish_whole_take(c), 0);
	}
out:
	free(pe);
	catalog_free(c);
	free(ids);
	rm_rf(tmp);
}


/*
 * A format-1 repository's new catalog (repair) keeps chunk rows keyed by id,
 * as its release reads them; every call works on it, and it re-keys later.
 */
static void test_chunks_v1(void)
{
	char tmp[64];
	Catalog *c = open_fresh(tmp, sizeof(tmp));
	ChunkId a = id_of("A"), b = id_of("B"), ab[2] = {a, b}, list_a[1] = {a};
	CatalogGcResult r = {0};
	PackEntry *pe = NULL;
	ChunkLoc loc;
	size_t n = 0;
	int64_t p1, content, np;

	if (!c || !CHECK_EQ_INT(catalog_chunks_unkeyed(c), 0))
		goto out;
	CHECK_EQ_INT(query_int(c, "SELECT value FROM meta WHERE key = 'schema_version'"), 1);
	CHECK_EQ_INT(query_int(c, "SELECT count(*) FROM pragma_table_info('chunks') WHERE"
				  " name = 'id'"), 1);
	p1 = make_pack(c, "packs/11/p1.pack", NULL, ab, 2);
	CHECK(p1 > 0);
	CHECK_EQ_INT(catalog_chunks_unkeyed(c), -ENOTEMPTY);
	CHECK_EQ_INT(catalog_content_put(c, list_a, 1, &content), 0);
	CHECK(make_snapshot(c, T0, content, NULL) > 0);
	CHECK_EQ_INT(catalog_gc(c, &r), 0);
	CHECK_EQ_INT(r.chunks_deleted, 1);
	catalog_gc_result_clear(&r);
	CHECK_EQ_INT(catalog_chunk_exists(c, &a), 1);
	CHECK_EQ_INT(catalog_chunk_exists(c, &b), 0);
	CHECK_EQ_INT(catalog_chunk_set_crc(c, &a, 9), 0);
	if (CHECK_EQ_INT(catalog_chunk_locate(c, &a, &loc), 0))
		CHECK(loc.has_crc && loc.crc == 9);
	{
		uint8_t fh[2][CHUNK_FH_LEN];
		bool has[2] = {true, true};
		CHECK_EQ_INT(catalog_chunk_fh_get(c, ab, 2, fh, has), 0);
		CHECK(!has[0] && !has[1]); /* a without fh, b gone */
	}
	CHECK_EQ_INT(catalog_pack_live_chunks(c, p1, &pe, &n), 0);
	if (!CHECK_EQ_INT(n, 1) || !CHECK(chunk_id_cmp(&pe[0].id, &a) == 0))
		goto out;
	CHECK_EQ_INT(catalog_pack_add_pending(c, "packs/22/new.pack", NULL, &np), 0);
	CHECK_EQ_INT(catalog_pack_move(c, np, 300, pe, 1, &p1, 1), 0);
	if (CHECK_EQ_INT(catalog_chunk_locate(c, &a, &loc), 0))
		CHECK_EQ_INT(loc.pack, np);
	CHECK_EQ_INT(catalog_chunks_rekey(c), 1);
	if (CHECK_EQ_INT(catalog_chunk_locate(c, &a, &loc), 0))
		CHECK(loc.pack == np && loc.has_crc && loc.crc == 9);
	CHECK_EQ_INT(catalog_publish_whole_take(c), 1);
out:
	catalog_gc_result_clear(&r);
	free(pe);
	catalog_free(c);
	rm_rf(tmp);
}

/*
 * catalog_chunks_locate finds each id where catalog_chunk_locate does, in
 * the order asked, across packs, through the overflow table (x and y share
 * a key), with unknown ids among them, alone or inside an open transaction.
 */
static void test_chunks_locate_batch(void)
{
	char tmp[64];
	Catalog *c = open_fresh(tmp, sizeof(tmp));
	ChunkId x = id_of("X"), y = id_twin(&x, 1), z = id_twin(&x, 2);
	ChunkId a = id_of("a"), b = id_of("b"), d = id_of("d"), u = id_of("unknown");
	ChunkId p1ids[3] = {x, a, y}, p2ids[2] = {b, d};
	ChunkId ask[9] = {y, b, u, a, x, z, d, a, y};
	ChunkLoc got[9], want;
	int errs[9];

	if (!c)
		goto out;
	CHECK(make_pack(c, "packs/11/p1.pack", NULL, p1ids, 3) > 0);
	CHECK(make_pack(c, "packs/22/p2.pack", NULL, p2ids, 2) > 0);
	CHECK_EQ_INT(query_int(c, "SELECT count(*) FROM chunks_overflow"), 1);
	for (int in_tx = 0; in_tx < 2; in_tx++) {
		if (in_tx)
			CHECK_EQ_INT(catalog_begin(c), 0);
		memset(got, 0, sizeof(got));
		if (!CHECK_EQ_INT(catalog_chunks_locate(c, ask, ELEMENTSOF(ask), got, errs), 0))
			break;
		for (size_t i = 0; i < ELEMENTSOF(ask); i++) {
			int r = catalog_chunk_locate(c, &ask[i], &want);
			CHECK_EQ_INT(errs[i], r);
			if (r == 0)
				CHECK(got[i].pack == want.pack && strcmp(got[i].pack_name, want.pack_name) == 0 &&
				      got[i].offset == want.offset && got[i].elen == want.elen &&
				      got[i].plen == want.plen && got[i].pack_size == want.pack_size);
		}
		CHECK_EQ_INT(errs[2], -ENOENT);
		CHECK_EQ_INT(errs[5], -ENOENT);
		CHECK_EQ_INT(got[0].offset, PACK_HEADER_LEN + 200); /* y: the overflow row */
		CHECK_EQ_INT(got[4].offset, PACK_HEADER_LEN);
		CHECK(strcmp(got[1].pack_name, "packs/22/p2.pack") == 0);
		CHECK(strcmp(got[3].pack_name, "packs/11/p1.pack") == 0);
		if (in_tx) /* the caller's transaction is still open, and its own */
			CHECK_EQ_INT(catalog_commit(c), 0);
	}
out:
	catalog_free(c);
	rm_rf(tmp);
}

/* a snapshot of one file whose content is list */
static void snapshot_of(Catalog *c, int64_t list, int64_t start_time, char name[64])
{
	SnapshotInfo s = {.instance = "main", .type = "full", .start_time = start_time};
	FileRow rows[] = {
		{.ino = 1, .parent = 1, .name = "", .mode = S_IFDIR | 0700},
		{.ino = 2, .parent = 1, .name = "big", .mode = S_IFREG | 0600, .size = 300 * 16384,
		 .content = list},
	};
	CHECK_EQ_INT(catalog_snapshot_begin(c, &s), 0);
	for (size_t i = 0; i < ELEMENTSOF(rows); i++)
		CHECK_EQ_INT(catalog_file_add(c, s.rowid, &rows[i]), 0);
	s.status = SNAP_STATUS_OK;
	CHECK_EQ_INT(catalog_snapshot_finish(c, &s), 0);
	snprintf(name, 64, "%s", s.name);
}

/*
 * check's references through id blocks (checked once per block): two lists
 * sharing all blocks but one, a chunk without a row in a shared block:
 * reported for each snapshot, in 256-id (format 3) and 62-id blocks alike.
 */
static void test_references_in_blocks(void)
{
	for (int format = 3; format <= 4; format++) {
		char tmp[64], name_a[64] = "", name_b[64] = "";
		Catalog *c = open_fresh(tmp, sizeof(tmp));
		_cleanup_free_ ChunkId *a = make_ids(300, 77), *b = make_ids(300, 77);
		ChunkId present[8], changed = id_of("changed");
		size_t n = 0, packs = 0;
		int64_t la, lb;
		Hits h = {0};

		if (!c)
			continue;
		catalog_set_idblocks(c, true);
		catalog_set_format(c, format);
		b[5] = changed;
		/* rows for every chunk of both lists but a[130] */
		for (size_t i = 0; i <= 300; i++) {
			if (i == 130)
				continue;
			if (i < 300)
				present[n++] = a[i];
			else
				present[n++] = changed;
			if (n == ELEMENTSOF(present) || i == 300) {
				char pack[64];
				snprintf(pack, sizeof(pack), "packs/aa/%03zu.pack", packs++);
				CHECK(make_pack(c, pack, NULL, present, n) > 0);
				n = 0;
			}
		}
		CHECK_EQ_INT(catalog_content_put(c, a, 300, &la), 0);
		CHECK_EQ_INT(catalog_content_put(c, b, 300, &lb), 0);
		CHECK(query_int(c, "SELECT count(*) FROM contents WHERE blocks > 0") >= 2);
		snapshot_of(c, la, T0, name_a);
		snapshot_of(c, lb, T0 + 1000000000, name_b);
		CHECK_EQ_INT(catalog_check_references(c, collect_missing, &h), 0);
		CHECK_EQ_INT(h.n, 2);
		char hex[65];
		chunk_id_to_hex(&a[130], hex);
		for (size_t i = 0; i < MIN(h.n, (size_t)2); i++)
			CHECK_EQ_STR(h.paths[i], hex);
		CHECK(h.n == 2 && strcmp(h.snaps[0], h.snaps[1]) != 0);
		/* again: the blocks remembered by the first check are forgotten */
		h.n = 0;
		CHECK_EQ_INT(catalog_check_references(c, collect_missing, &h), 0);
		CHECK_EQ_INT(h.n, 2);
		catalog_free(c);
		TEST_RM_RF(tmp);
	}
}

int main(void)
{
	test_chunks_locate_batch();
	test_open();
	test_crc_migration();
	test_chunk_key_collision();
	test_chunks_migration();
	test_chunks_v1();
	test_method_migration();
	test_contents();
	test_snapshots();
	test_files();
	test_packs();
	test_sessions();
	test_gc();
	test_repack();
	test_damage_and_references();
	test_references_in_blocks();
	test_idblocks();
	test_idblocks_small();
	test_crc_signed();
	test_idblock_carriers();
	return test_finish();
}
