/*
 * Unit tests for store/manifest.h and store/repair.h: snapshots exported as
 * manifests and a catalog rebuilt from packs and manifests alone, compared
 * row by row with the original, then used to restore; damaged packs and
 * manifests counted and skipped; manifests refused for what they are not.
 */
#include "tests/unit/test.h"
#include "tests/unit/manifest_image.h"

#include "store/check.h"
#include "store/manifest.h"
#include "store/repair.h"
#include "store/repo.h"
#include "store/restore.h"
#include "store/snapwriter.h"
#include "store/treedigest.h"

#include <fcntl.h>
#include <limits.h>
#include <sqlite3.h>
#include <sys/stat.h>

#define CS 16384
#define T0 (1700000000LL * 1000000000)
#define BIG_CHUNKS 80 /* random chunks: more than one 1 MiB pack */
#define DUP_PACK "packs/00/00000000000000000000000000000000.pack"
/* a trailer longer than the 64 KiB tail repair reads first */
#define MANY_PACK "packs/ff/ffffffffffffffffffffffffffffffff.pack"
#define MANY_CHUNKS 1500

static const RepoInitOptions small_repo = {.chunk_size = CS, .pack_size = 1 << 20};

/* ---- building a repository ---- */

typedef struct Data {
	uint8_t shared[3 * CS + CS / 2]; /* in snapshots A, B and C */
	uint8_t other[2 * CS];           /* B only */
	uint8_t big[BIG_CHUNKS * CS];    /* C only */
	uint8_t tail[10];
} Data;

static SnapEntry entry(uint64_t parent, const char *name, mode_t mode)
{
	return (SnapEntry){.parent = parent, .name = name, .mode = mode, .uid = getuid(),
			   .gid = getgid(), .mtime_ns = T0 + 123456789};
}

static int put_file(SnapWriter *w, uint64_t parent, const char *name, const uint8_t *data,
		    size_t len)
{
	SnapEntry e = entry(parent, name, S_IFREG | 0640);
	SnapFile *f = NULL;
	int r = snapwriter_file_begin(w, &e, &f);
	if (r < 0)
		return r;
	for (size_t off = 0; off < len && r == 0; off += 5000)
		r = snapwriter_file_write(w, f, data + off, MIN(5000, len - off));
	int r2 = snapwriter_file_end(w, f);
	return r < 0 ? r : r2;
}

/*
 * A: data.bin, sub/ (a tablespace link), sub/holes.bin, link -> data.bin,
 *    one bad block; PostgreSQL fields set. Status "warning".
 */
static int write_a(SnapWriter *w, const Data *d)
{
	SnapEntry root = entry(0, "", S_IFDIR | 0750);
	SnapEntry sub = entry(1, "sub", S_IFDIR | 0700);
	SnapEntry link = entry(1, "link", S_IFLNK | 0777);
	SnapEntry holes = entry(2, "holes.bin", S_IFREG | 0600);
	SnapFile *f = NULL;
	int r = snapwriter_add_dir(w, &root, NULL);
	if (r == 0)
		r = snapwriter_add_dir(w, &sub, NULL);
	if (r == 0)
		r = put_file(w, 1, "data.bin", d->shared, sizeof(d->shared));
	if (r == 0)
		r = snapwriter_file_begin(w, &holes, &f);
	if (r < 0)
		return r;
	r = snapwriter_file_write_zeros(w, f, CS);
	if (r == 0)
		r = snapwriter_file_write(w, f, d->tail, sizeof(d->tail));
	if (r == 0)
		r = snapwriter_file_write_zeros(w, f, CS);
	int r2 = snapwriter_file_end(w, f);
	if (r == 0)
		r = r2;
	if (r == 0)
		r = snapwriter_add_symlink(w, &link, "data.bin");
	if (r == 0)
		r = snapwriter_add_link(w, "sub", "/srv/tblspc");
	if (r == 0)
		r = snapwriter_add_bad_block(w, "data.bin", 2);
	if (r == 0)
		r = snapwriter_set_stop_lsn(w, "0/3000100");
	return r;
}

/* B: data.bin again (shared content and chunks) and other.bin. */
static int write_b(SnapWriter *w, const Data *d)
{
	SnapEntry root = entry(0, "", S_IFDIR | 0700);
	int r = snapwriter_add_dir(w, &root, NULL);
	if (r == 0)
		r = put_file(w, 1, "data.bin", d->shared, sizeof(d->shared));
	if (r == 0)
		r = put_file(w, 1, "other.bin", d->other, sizeof(d->other));
	return r;
}

/* C: big.bin over several packs, and data.bin once more under another name. */
static int write_c(SnapWriter *w, const Data *d)
{
	SnapEntry root = entry(0, "", S_IFDIR | 0700);
	int r = snapwriter_add_dir(w, &root, NULL);
	if (r == 0)
		r = put_file(w, 1, "big.bin", d->big, sizeof(d->big));
	if (r == 0)
		r = put_file(w, 1, "copy.bin", d->shared, sizeof(d->shared));
	return r;
}

/* D: one small file; it ends up "deleted" but held by a mount. */
static int write_d(SnapWriter *w, const Data *d)
{
	SnapEntry root = entry(0, "", S_IFDIR | 0700);
	int r = snapwriter_add_dir(w, &root, NULL);
	if (r == 0)
		r = put_file(w, 1, "small.bin", d->other, 100);
	return r;
}

static int take_snapshot(Repo *repo, const SnapWriterOptions *o,
			 int (*fill)(SnapWriter *, const Data *), const Data *d, int64_t *ret_rowid)
{
	SnapWriter *w = NULL;
	SnapWriterResult res = {0};
	SnapshotInfo s = {0};
	int r = snapwriter_new(repo, o, &w);
	if (r < 0)
		return r;
	r = fill(w, d);
	if (r == 0)
		r = snapwriter_commit(w, &res);
	snapwriter_free(w);
	if (r == 0)
		r = catalog_snapshot_get(repo_catalog(repo), res.name, NULL, &s);
	if (r == 0)
		*ret_rowid = s.rowid;
	snapshot_info_clear(&s);
	return r;
}

/* A pack that holds one chunk again, named to sort before every other pack. */
static int write_dup_pack(Repo *repo, const ChunkId *id)
{
	ChunkLoc loc;
	PackWriter *pw = NULL;
	const void *buf;
	size_t len;
	uint8_t *ebuf;
	int r = catalog_chunk_locate(repo_catalog(repo), id, &loc);
	if (r < 0)
		return r;
	ebuf = xmalloc(loc.elen);
	r = store_get_range(repo_backend(repo), loc.pack_name, loc.offset, loc.elen, ebuf);
	if (r == 0)
		r = pack_writer_new(1 << 20, &pw);
	if (r == 0)
		r = pack_writer_add(pw, id, (ChunkEncoding)loc.enc, ebuf, loc.elen, loc.plen);
	if (r == 0)
		r = pack_writer_finish(pw, &buf, &len);
	if (r == 0)
		r = store_put(repo_backend(repo), DUP_PACK, buf, len);
	pack_writer_free(pw);
	free(ebuf);
	return r;
}

/* A pack of MANY_CHUNKS tiny raw chunks (8 bytes: the little-endian index). */
static int write_many_pack(Repo *repo)
{
	PackWriter *pw = NULL;
	const void *buf;
	size_t len;
	int r = pack_writer_new(1 << 20, &pw);
	for (uint64_t i = 0; r == 0 && i < MANY_CHUNKS; i++) {
		uint8_t plain[8];
		ChunkId id;
		put_le64(plain, i);
		chunk_hash(plain, sizeof(plain), &id);
		r = pack_writer_add(pw, &id, CHUNK_ENC_RAW, plain, sizeof(plain), sizeof(plain));
	}
	if (r == 0)
		r = pack_writer_finish(pw, &buf, &len);
	if (r == 0 && !CHECK(len - (PACK_HEADER_LEN + MANY_CHUNKS * 8) > 64 * 1024))
		r = -EINVAL;
	if (r == 0)
		r = store_put(repo_backend(repo), MANY_PACK, buf, len);
	pack_writer_free(pw);
	return r;
}

/* ---- manifests served from memory ---- */

typedef struct Manifest {
	char name[128];
	void *buf; /* NULL: reading it fails */
	size_t len;
} Manifest;

typedef struct ManifestSet {
	Manifest v[16];
	size_t n;
	unsigned n_calls;
} ManifestSet;

static void manifest_set_clear(ManifestSet *m)
{
	for (size_t i = 0; i < m->n; i++)
		free(m->v[i].buf);
	*m = (ManifestSet){0};
}

/* Keep buf (taken) as object name, and put a stand-in object in the repository. */
static int manifest_set_add(ManifestSet *m, StoreBackend *b, const char *name, void *buf,
			    size_t len)
{
	Manifest *e = &m->v[m->n++];
	test_fmt(e->name, sizeof(e->name), "%s", name);
	e->buf = buf;
	e->len = len;
	/* the repository's object would be compressed and encrypted: its bytes do not matter */
	return store_put(b, name, "x", 1);
}

static int serve_manifest(const char *name, void **ret_buf, size_t *ret_len, void *ud)
{
	ManifestSet *m = ud;
	m->n_calls++;
	for (size_t i = 0; i < m->n; i++) {
		if (strcmp(m->v[i].name, name) != 0)
			continue;
		if (!m->v[i].buf)
			return -EIO;
		*ret_buf = xmalloc(m->v[i].len);
		memcpy(*ret_buf, m->v[i].buf, m->v[i].len);
		*ret_len = m->v[i].len;
		return 0;
	}
	return -ENOENT;
}

typedef struct ExportCtx {
	Catalog *c;
	StoreBackend *b;
	ManifestSet *set;
	int r;
} ExportCtx;

static int carriers_ignored(int64_t snap _unused_, const char *name _unused_, void *ud _unused_)
{
	return 0;
}

static int export_one(const SnapshotInfo *s, void *ud)
{
	ExportCtx *x = ud;
	char name[128];
	void *buf = NULL;
	size_t len = 0;
	int r = test_manifest_image(x->c, s->rowid, &buf, &len);
	if (r == 0)
		r = manifest_set_add(x->set, x->b, test_fmt(name, sizeof(name), "snapshots/%s", s->name),
				     buf, len);
	if (r < 0 && !x->r)
		x->r = r;
	return 0;
}

/* An edited copy of a manifest image: sql run on it. */
static int manifest_edit(const void *buf, size_t len, const char *sql, void **ret, size_t *ret_len)
{
	sqlite3 *db = NULL;
	unsigned char *copy = sqlite3_malloc64(len), *out;
	sqlite3_int64 size = 0;
	int rc = sqlite3_open(":memory:", &db);
	if (!copy || rc != SQLITE_OK) {
		sqlite3_free(copy);
		sqlite3_close(db);
		return -ENOMEM;
	}
	memcpy(copy, buf, len);
	rc = sqlite3_deserialize(db, "main", copy, (sqlite3_int64)len, (sqlite3_int64)len,
				 SQLITE_DESERIALIZE_FREEONCLOSE | SQLITE_DESERIALIZE_RESIZEABLE);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		fprintf(stderr, "manifest_edit: %s\n", sqlite3_errmsg(db));
		sqlite3_close(db);
		return -EIO;
	}
	out = sqlite3_serialize(db, "main", &size, 0);
	sqlite3_close(db);
	if (!out)
		return -ENOMEM;
	*ret = xmalloc((size_t)size);
	memcpy(*ret, out, (size_t)size);
	*ret_len = (size_t)size;
	sqlite3_free(out);
	return 0;
}

/* ---- comparing catalogs ---- */

static uint64_t count_rows(Catalog *c, const char *table)
{
	char sql[128];
	sqlite3_stmt *s = NULL;
	uint64_t n = UINT64_MAX;
	test_fmt(sql, sizeof(sql), "SELECT count(*) FROM %s", table);
	if (sqlite3_prepare_v2(catalog_sqlite(c), sql, -1, &s, NULL) == SQLITE_OK &&
	    sqlite3_step(s) == SQLITE_ROW)
		n = (uint64_t)sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return n;
}

/* Distinct contents of a snapshot's files, however the catalog keeps its tree. */
typedef struct ContentSet {
	int64_t v[4096];
	size_t n;
} ContentSet;

static int content_seen(const FileRow *f, void *userdata)
{
	ContentSet *cs = userdata;
	if (!f->content)
		return 0;
	for (size_t i = 0; i < cs->n; i++)
		if (cs->v[i] == f->content)
			return 0;
	if (cs->n == ELEMENTSOF(cs->v))
		return -E2BIG;
	cs->v[cs->n++] = f->content;
	return 0;
}

static uint64_t count_snapshot_contents(Catalog *c, int64_t snap)
{
	static ContentSet cs;
	cs.n = 0;
	return catalog_file_foreach(c, snap, content_seen, &cs) == 0 ? cs.n : UINT64_MAX;
}

static bool values_equal(sqlite3_stmt *a, sqlite3_stmt *b, int i)
{
	int t = sqlite3_column_type(a, i);
	if (t != sqlite3_column_type(b, i))
		return false;
	switch (t) {
	case SQLITE_NULL:
		return true;
	case SQLITE_INTEGER:
		return sqlite3_column_int64(a, i) == sqlite3_column_int64(b, i);
	case SQLITE_FLOAT:
		return sqlite3_column_double(a, i) == sqlite3_column_double(b, i);
	default:
		return sqlite3_column_bytes(a, i) == sqlite3_column_bytes(b, i) &&
		       memcmp(sqlite3_column_blob(a, i), sqlite3_column_blob(b, i),
			      (size_t)sqlite3_column_bytes(a, i)) == 0;
	}
}

typedef struct Pair {
	char name[64];
	int64_t a, b; /* rowids */
} Pair;

/*
 * Every snapshot row of a and b, by name: every column but the rowid equal,
 * b's session NULL. The rowid pairs go to pairs.
 */
static size_t compare_snapshot_rows(Catalog *a, Catalog *b, Pair *pairs, size_t max)
{
	const char *sql = "SELECT * FROM snapshots ORDER BY name";
	sqlite3_stmt *sa = NULL, *sb = NULL;
	size_t n = 0;
	int ra, rb;

	if (!CHECK_EQ_INT(sqlite3_prepare_v2(catalog_sqlite(a), sql, -1, &sa, NULL), SQLITE_OK) ||
	    !CHECK_EQ_INT(sqlite3_prepare_v2(catalog_sqlite(b), sql, -1, &sb, NULL), SQLITE_OK))
		goto out;
	CHECK_EQ_INT(sqlite3_column_count(sa), sqlite3_column_count(sb));
	while ((ra = sqlite3_step(sa)) == SQLITE_ROW) {
		rb = sqlite3_step(sb);
		if (!CHECK_EQ_INT(rb, SQLITE_ROW) || !CHECK(n < max))
			goto out;
		for (int i = 0; i < sqlite3_column_count(sa); i++) {
			const char *col = sqlite3_column_name(sa, i);
			CHECK_EQ_STR(col, sqlite3_column_name(sb, i));
			if (strcmp(col, "id") == 0) {
				pairs[n].a = sqlite3_column_int64(sa, i);
				pairs[n].b = sqlite3_column_int64(sb, i);
			} else if (strcmp(col, "session") == 0) {
				CHECK_EQ_INT(sqlite3_column_type(sb, i), SQLITE_NULL);
			} else if (strcmp(col, "tree") == 0) {
				/* a row of one catalog: the files travel as rows */
			} else if (!values_equal(sa, sb, i)) {
				CHECK(!"snapshot column differs");
				fprintf(stderr, "  column %s of %s\n", col, sqlite3_column_text(sa, 1));
			}
		}
		test_fmt(pairs[n].name, sizeof(pairs[n].name), "%s", sqlite3_column_text(sa, 1));
		n++;
	}
	CHECK_EQ_INT(ra, SQLITE_DONE);
	CHECK_EQ_INT(sqlite3_step(sb), SQLITE_DONE);
out:
	sqlite3_finalize(sa);
	sqlite3_finalize(sb);
	return n;
}

typedef struct TreeRow {
	FileRow f;
	char *name, *target;
} TreeRow;

typedef struct Tree {
	TreeRow v[256];
	size_t n;
} Tree;

static int tree_add(const FileRow *f, void *ud)
{
	Tree *t = ud;
	if (t->n == ELEMENTSOF(t->v))
		return -E2BIG;
	t->v[t->n].f = *f;
	t->v[t->n].name = xstrdup(f->name);
	t->v[t->n].target = f->target ? xstrdup(f->target) : NULL;
	t->n++;
	return 0;
}

static void tree_clear(Tree *t)
{
	for (size_t i = 0; i < t->n; i++) {
		free(t->v[i].name);
		free(t->v[i].target);
	}
	t->n = 0;
}

/* Both chunk lists, equal; returns how many chunks that is (0 for no content). */
static size_t compare_content(Catalog *a, int64_t ca, Catalog *b, int64_t cb)
{
	ChunkId *ia = NULL, *ib = NULL;
	size_t na = 0, nb = 0;
	if (!ca || !cb) {
		CHECK_EQ_INT(!ca, !cb);
		return 0;
	}
	if (CHECK_EQ_INT(catalog_content_get(a, ca, &ia, &na), 0) &&
	    CHECK_EQ_INT(catalog_content_get(b, cb, &ib, &nb), 0) && CHECK_EQ_INT(na, nb))
		CHECK(memcmp(ia, ib, na * sizeof(*ia)) == 0);
	free(ia);
	free(ib);
	return na;
}

typedef struct Lines {
	char text[4096];
	size_t len;
} Lines;

static int line_link(const char *path, const char *target, void *ud)
{
	Lines *l = ud;
	l->len += (size_t)snprintf(l->text + l->len, sizeof(l->text) - l->len, "%s -> %s\n", path,
				   target);
	return 0;
}

static int line_bad_block(const char *path, uint64_t block, void *ud)
{
	Lines *l = ud;
	l->len += (size_t)snprintf(l->text + l->len, sizeof(l->text) - l->len, "%s:%llu\n", path,
				   (unsigned long long)block);
	return 0;
}

/* The same tree (file rows and chunk lists), links and bad blocks. */
static void compare_snapshot(Catalog *a, Catalog *b, const Pair *p)
{
	static Tree ta, tb;
	Lines la = {0}, lb = {0};
	size_t n_chunks = 0;

	CHECK_EQ_INT(catalog_file_foreach(a, p->a, tree_add, &ta), 0);
	CHECK_EQ_INT(catalog_file_foreach(b, p->b, tree_add, &tb), 0);
	CHECK(ta.n > 0);
	if (CHECK_EQ_INT(ta.n, tb.n)) {
		for (size_t i = 0; i < ta.n; i++) {
			const FileRow *fa = &ta.v[i].f, *fb = &tb.v[i].f;
			CHECK_EQ_INT(fa->ino, fb->ino);
			CHECK_EQ_INT(fa->parent, fb->parent);
			CHECK_EQ_STR(ta.v[i].name, tb.v[i].name);
			CHECK_EQ_INT(fa->mode, fb->mode);
			CHECK_EQ_INT(fa->uid, fb->uid);
			CHECK_EQ_INT(fa->gid, fb->gid);
			CHECK_EQ_INT(fa->mtime_ns, fb->mtime_ns);
			CHECK_EQ_INT(fa->size, fb->size);
			CHECK_EQ_INT(!ta.v[i].target, !tb.v[i].target);
			if (ta.v[i].target)
				CHECK_EQ_STR(ta.v[i].target, tb.v[i].target);
			n_chunks += compare_content(a, fa->content, b, fb->content);
		}
	}
	CHECK(n_chunks > 0);
	tree_clear(&ta);
	tree_clear(&tb);

	CHECK_EQ_INT(catalog_link_foreach(a, p->a, line_link, &la), 0);
	CHECK_EQ_INT(catalog_link_foreach(b, p->b, line_link, &lb), 0);
	CHECK_EQ_INT(catalog_bad_block_foreach(a, p->a, line_bad_block, &la), 0);
	CHECK_EQ_INT(catalog_bad_block_foreach(b, p->b, line_bad_block, &lb), 0);
	CHECK_EQ_STR(la.text, lb.text);
}

typedef struct ChunkCheck {
	Catalog *orig;
	StoreBackend *b;
	ChunkCodec *codec;
	uint8_t ebuf[2 * CS], plain[CS];
	uint64_t n_read, n_crc;
} ChunkCheck;

/*
 * Every chunk of every content of the rebuilt catalog: located, read through
 * the backend and decoded against its id and (restored) CRC.
 */
static void check_chunks(Catalog *rebuilt, ChunkCheck *ck)
{
	sqlite3_stmt *s = NULL;
	if (!CHECK_EQ_INT(sqlite3_prepare_v2(catalog_sqlite(rebuilt), "SELECT id FROM contents", -1,
					      &s, NULL),
			  SQLITE_OK))
		return;
	while (sqlite3_step(s) == SQLITE_ROW) {
		ChunkId *ids = NULL;
		size_t n = 0;
		if (!CHECK_EQ_INT(catalog_content_get(rebuilt, sqlite3_column_int64(s, 0), &ids, &n), 0))
			continue;
		for (size_t i = 0; i < n; i++) {
			ChunkLoc loc, orig;
			if (chunk_id_is_hole(&ids[i]))
				continue;
			if (!CHECK_EQ_INT(catalog_chunk_locate(rebuilt, &ids[i], &loc), 0) ||
			    !CHECK_EQ_INT(catalog_chunk_locate(ck->orig, &ids[i], &orig), 0) ||
			    !CHECK(loc.elen <= sizeof(ck->ebuf) && loc.plen <= sizeof(ck->plain)))
				continue;
			CHECK(loc.has_crc);
			CHECK_EQ_INT(loc.has_crc, orig.has_crc);
			CHECK_EQ_INT(loc.crc, orig.crc);
			CHECK_EQ_INT(loc.plen, orig.plen);
			CHECK_EQ_INT(store_get_range(ck->b, loc.pack_name, loc.offset, loc.elen, ck->ebuf), 0);
			CHECK_EQ_INT(chunk_decode(ck->codec, (ChunkEncoding)loc.enc, ck->ebuf, loc.elen,
						  ck->plain, loc.plen, &ids[i]),
				     0);
			CHECK_EQ_INT(chunk_decode_crc(ck->codec, (ChunkEncoding)loc.enc, ck->ebuf, loc.elen,
						      ck->plain, loc.plen, &ids[i], loc.crc),
				     0);
			ck->n_read++;
			ck->n_crc += loc.has_crc;
		}
		free(ids);
	}
	sqlite3_finalize(s);
}

static int count_missing(const char *snapshot _unused_, const ChunkId *id _unused_, void *ud)
{
	(*(uint64_t *)ud)++;
	return 0;
}

static int count_object(const char *name _unused_, uint64_t size _unused_, void *ud)
{
	(*(uint64_t *)ud)++;
	return 0;
}

static void check_report(CheckSeverity sev, const char *msg, void *userdata _unused_)
{
	if (sev == CHECK_ERROR)
		fprintf(stderr, "  check error: %s\n", msg);
}

/* Flip the last byte of the trailer's entries: their digest no longer matches. */
static bool damage_trailer(const char *repo_path, const char *pack)
{
	char path[PATH_MAX];
	struct stat st;
	uint8_t byte;
	off_t at;
	bool ok;
	int fd = open(test_fmt(path, sizeof(path), "%s/%s", repo_path, pack), O_RDWR);
	if (fd < 0 || fstat(fd, &st) < 0) {
		if (fd >= 0)
			close(fd);
		return false;
	}
	at = st.st_size - PACK_FOOTER_LEN - 1;
	ok = pread(fd, &byte, 1, at) == 1;
	byte ^= 0x40;
	ok = ok && pwrite(fd, &byte, 1, at) == 1;
	close(fd);
	return ok;
}

/* ---- tests ---- */

static int count_named_missing(const char *snapshot, const ChunkId *id _unused_, void *userdata)
{
	CHECK_EQ_STR(snapshot, "named");
	(*(size_t *)userdata)++;
	return 0;
}

/* A manifest edited by sql into a fresh catalog: imported "failed", one item missing. */
static void check_import_missing(const char *tmp, size_t i, const void *buf, size_t len,
				 const char *sql)
{
	char path[PATH_MAX];
	Catalog *c = NULL;
	void *edited = NULL;
	size_t elen = 0, missing = 0, reported = 0;
	int64_t rowid = 0;
	ChunkId digest;
	_cleanup_free_ char *full = xasprintf("UPDATE snapshots SET name = 'named'; %s", sql);
	SnapshotInfo s = {0};

	if (!CHECK_EQ_INT(catalog_open(test_fmt(path, sizeof(path), "%s/cut%zu.db", tmp, i), true,
				       &c), 0) ||
	    !CHECK_EQ_INT(manifest_edit(buf, len, full, &edited, &elen), 0))
		goto out;
	CHECK_EQ_INT(manifest_import_counted(c, edited, elen, &rowid, &missing), 0);
	CHECK_EQ_INT(missing, 1);
	if (CHECK_EQ_INT(catalog_snapshot_get(c, "named", NULL, &s), 0))
		CHECK_EQ_STR(s.status, SNAP_STATUS_FAILED);
	snapshot_info_clear(&s);
	/* a missing list reads as damaged, and the reference check names it (a missing
	 * directory is an empty one: only the import tells) */
	CHECK_EQ_INT(catalog_check_references(c, count_named_missing, &reported), 0);
	CHECK(reported >= 1); /* no chunk is in this catalog either */
	CHECK_EQ_INT(tree_digest_compute(c, rowid, &digest), i == 0 ? -EBADMSG : 0);
out:
	free(edited);
	catalog_free(c);
}

/* Manifests on their own: what export refuses, what import refuses, and atomicity. */
static void test_manifest_errors(Repo *r, const char *tmp, int64_t a_rowid)
{
	Catalog *orig = repo_catalog(r), *c = NULL;
	char path[PATH_MAX];
	void *buf = NULL, *edited = NULL;
	size_t len = 0, elen = 0;
	int64_t rowid = 0;
	uint8_t garbage[4096];

	/* a running snapshot is never exported; an unknown one is not there */
	{
		SnapshotInfo run = {.instance = "main", .type = "full", .start_time = T0};
		if (CHECK_EQ_INT(catalog_snapshot_begin(orig, &run), 0)) {
			CHECK_EQ_INT(test_manifest_image(orig, run.rowid, &buf, &len), -EINVAL);
			CHECK(buf == NULL);
			CHECK_EQ_INT(catalog_snapshot_delete(orig, run.rowid), 0);
		}
		CHECK_EQ_INT(test_manifest_image(orig, 999999, &buf, &len), -ENOENT);
	}
	/* inside a transaction of the caller's, export reads in it */
	CHECK_EQ_INT(catalog_begin(orig), 0);
	CHECK_EQ_INT(test_manifest_image(orig, a_rowid, &buf, &len), 0);
	CHECK_EQ_INT(catalog_commit(orig), 0);
	if (!CHECK(buf != NULL && len > 0))
		return;

	test_fmt(path, sizeof(path), "%s/scratch.db", tmp);
	if (!CHECK_EQ_INT(catalog_open(path, true, &c), 0))
		goto out;

	/* not manifests */
	test_random(garbage, sizeof(garbage));
	CHECK_EQ_INT(manifest_import(c, garbage, sizeof(garbage), NULL), -EBADMSG);
	CHECK_EQ_INT(manifest_import(c, garbage, 10, NULL), -EBADMSG);
	CHECK_EQ_INT(manifest_import(c, buf, 0, NULL), -EBADMSG);
	CHECK_EQ_INT(manifest_import(c, buf, len / 2, NULL), -EBADMSG);
	memcpy(garbage, buf, sizeof(garbage)); /* a SQLite header, then a page of damage */
	memset(garbage + 200, 0xa5, 100);
	CHECK_EQ_INT(manifest_import(c, garbage, sizeof(garbage), NULL), -EBADMSG);
	/* a database, but not a manifest */
	if (CHECK_EQ_INT(manifest_edit(buf, len, "DROP TABLE meta", &edited, &elen), 0))
		CHECK_EQ_INT(manifest_import(c, edited, elen, NULL), -EBADMSG);
	free(TAKE_PTR(edited));
	if (CHECK_EQ_INT(manifest_edit(buf, len, "UPDATE meta SET value = 'one'", &edited, &elen), 0))
		CHECK_EQ_INT(manifest_import(c, edited, elen, NULL), -EBADMSG);
	free(TAKE_PTR(edited));
	/* a newer format */
	if (CHECK_EQ_INT(manifest_edit(buf, len, "UPDATE meta SET value = 99", &edited, &elen), 0))
		CHECK_EQ_INT(manifest_import(c, edited, elen, NULL), -EPROTONOSUPPORT);
	free(TAKE_PTR(edited));
	/* a running snapshot, two snapshots, none */
	if (CHECK_EQ_INT(manifest_edit(buf, len, "UPDATE snapshots SET status = 'running'", &edited,
				       &elen),
			 0))
		CHECK_EQ_INT(manifest_import(c, edited, elen, NULL), -EBADMSG);
	free(TAKE_PTR(edited));
	if (CHECK_EQ_INT(manifest_edit(buf, len, "DELETE FROM snapshots", &edited, &elen), 0))
		CHECK_EQ_INT(manifest_import(c, edited, elen, NULL), -EBADMSG);
	free(TAKE_PTR(edited));
	/* nothing of the image's schema runs: a view is refused */
	if (CHECK_EQ_INT(manifest_edit(buf, len,
				       "ALTER TABLE contents RENAME TO c0;"
				       " CREATE VIEW contents AS SELECT * FROM c0",
				       &edited, &elen),
			 0))
		CHECK_EQ_INT(manifest_import(c, edited, elen, NULL), -EBADMSG);
	free(TAKE_PTR(edited));
	/*
	 * format 3: a directory whose bytes do not give its name, or whose entry
	 * count is wrong: -EBADMSG after the snapshot row and lists went in (before any good
	 * copy of the manifest: a directory already imported is not read again), and
	 * the transaction leaves nothing behind
	 */
	static const char *const broken[] = {
		"UPDATE snapshots SET name = 'broken';"
		" UPDATE dirs SET hash = randomblob(32)"
		"  WHERE hash = (SELECT value FROM meta WHERE key = 'tree')",
		"UPDATE snapshots SET name = 'broken'; UPDATE dirs SET n = n + 1",
		"UPDATE snapshots SET name = 'broken'; UPDATE dirs SET entries = x'01'",
		"UPDATE snapshots SET name = 'broken'; UPDATE meta SET value = x'00' WHERE key = 'tree'",
	};
	for (size_t i = 0; i < ELEMENTSOF(broken); i++) {
		if (CHECK_EQ_INT(manifest_edit(buf, len, broken[i], &edited, &elen), 0))
			CHECK_EQ_INT(manifest_import(c, edited, elen, NULL), -EBADMSG);
		free(TAKE_PTR(edited));
	}
	CHECK_EQ_INT(count_rows(c, "snapshots"), 0);
	CHECK_EQ_INT(manifest_import(c, buf, len, &rowid), 0);
	CHECK_EQ_INT(count_rows(c, "snapshots"), 1);
	/* format 3: imported as shared directories again, not as files rows */
	CHECK_EQ_INT(count_rows(c, "files"), 0);
	CHECK_EQ_INT(count_rows(c, "snapshots WHERE tree IS NOT NULL"), 1);
	/* a list, or a directory, that no manifest carries: "failed", counted and named */
	{
		static const char *const cut[] = {
			"DELETE FROM contents WHERE id = (SELECT max(id) FROM contents)",
			"DELETE FROM dirs WHERE n = 1 AND hash <> (SELECT value FROM meta WHERE key = 'tree')",
		};
		for (size_t i = 0; i < ELEMENTSOF(cut); i++)
			check_import_missing(tmp, i, buf, len, cut[i]);
	}

	/* the same snapshot again: -EEXIST, nothing changed */
	{
		uint64_t files = count_rows(c, "files"), contents = count_rows(c, "contents");
		CHECK_EQ_INT(manifest_import(c, buf, len, NULL), -EEXIST);
		CHECK_EQ_INT(count_rows(c, "snapshots"), 1);
		CHECK_EQ_INT(count_rows(c, "files"), files);
		CHECK_EQ_INT(count_rows(c, "contents"), contents);
	}
	/* a column this build does not know is left out; the rest goes in */
	if (CHECK_EQ_INT(manifest_edit(buf, len,
				       "ALTER TABLE snapshots ADD COLUMN \"from \"\"the\"\" future\";"
				       " UPDATE snapshots SET name = 'renamed', \"from \"\"the\"\" future\" = 1",
				       &edited, &elen),
			 0)) {
		int64_t second = 0;
		SnapshotInfo s = {0};
		CHECK_EQ_INT(manifest_import(c, edited, elen, &second), 0);
		CHECK(second != rowid);
		/* the lists are shared with the first import */
		CHECK_EQ_INT(count_rows(c, "contents"), count_snapshot_contents(orig, a_rowid));
		if (CHECK_EQ_INT(catalog_snapshot_get(c, "renamed", NULL, &s), 0)) {
			CHECK_EQ_STR(s.status, SNAP_STATUS_WARNING);
			CHECK(s.session == NULL);
		}
		snapshot_info_clear(&s);
	}
	free(TAKE_PTR(edited));
	/* inside a transaction of the caller's, import refuses to start */
	CHECK_EQ_INT(catalog_begin(c), 0);
	CHECK_EQ_INT(manifest_import(c, buf, len, NULL), -EINVAL);
	catalog_rollback(c);
out:
	catalog_free(c);
	free(buf);
}

static void test_rebuild(void)
{
	char tmp[64], path[PATH_MAX], fresh[PATH_MAX], target[PATH_MAX], tblspc[PATH_MAX];
	Repo *r = NULL;
	Catalog *c = NULL;
	Data *d = xmalloc(sizeof(*d));
	ManifestSet *ms = xcalloc(1, sizeof(*ms));
	ChunkCheck *ck = xcalloc(1, sizeof(*ck));
	Pair pairs[8];
	RepairStats st = {0};
	int64_t ra = 0, rb = 0, rc = 0, rd = 0;
	uint64_t n_pack_objects = 0;
	size_t n;

	test_tmpdir(tmp, sizeof(tmp));
	test_fmt(path, sizeof(path), "%s/repo", tmp);
	test_random(d, sizeof(*d));
	if (!CHECK_EQ_INT(repo_init(path, &small_repo), 0) || !CHECK_EQ_INT(repo_open(path, &r), 0))
		goto out;

	/* four snapshots sharing data; A has PostgreSQL fields, a link and a bad block */
	{
		SnapWriterOptions oa = {.jobs = 2, .label = "first", .source = "dir:/a",
					.start_lsn = "0/2000028", .system_id = "7301234567890123456",
					.timeline = 1, .pg_version = 160002};
		SnapWriterOptions ob = {.jobs = 2, .label = "second", .type = "incr", .instance = "main"};
		SnapWriterOptions oc = {.jobs = 1, .instance = "other"};
		SnapWriterOptions od = {.jobs = 1};
		if (!CHECK_EQ_INT(take_snapshot(r, &oa, write_a, d, &ra), 0) ||
		    !CHECK_EQ_INT(take_snapshot(r, &ob, write_b, d, &rb), 0) ||
		    !CHECK_EQ_INT(take_snapshot(r, &oc, write_c, d, &rc), 0) ||
		    !CHECK_EQ_INT(take_snapshot(r, &od, write_d, d, &rd), 0))
			goto out;
	}
	/* A pinned; B with a note and a verify result; D deleted while a mount holds it */
	{
		Catalog *oc = repo_catalog(r);
		CHECK_EQ_INT(catalog_snapshot_set_pin(oc, ra, T0 + 86400LL * 1000000000), 0);
		CHECK_EQ_INT(catalog_snapshot_set_note(oc, rb, "keep for the audit"), 0);
		CHECK_EQ_INT(catalog_snapshot_set_verified(oc, rb, T0 + 5, true, "pg_amcheck: ok"), 0);
		CHECK_EQ_INT(catalog_session_add(oc, "mountsession", "mount", NULL), 0);
		CHECK_EQ_INT(catalog_snapshot_hold(oc, "mountsession", rd), 0);
		CHECK_EQ_INT(catalog_snapshot_delete(oc, rd), 1);
	}
	test_manifest_errors(r, tmp, ra);

	/* one chunk of data.bin stored again, in a pack that sorts first */
	{
		ChunkId id;
		chunk_hash(d->shared, CS, &id);
		CHECK_EQ_INT(write_dup_pack(r, &id), 0);
	}
	CHECK_EQ_INT(write_many_pack(r), 0);
	CHECK_EQ_INT(store_list(repo_backend(r), "packs/", count_object, &n_pack_objects), 0);
	CHECK(n_pack_objects >= 5); /* A+B, C (two), the copy, the many */

	/* every snapshot's manifest; then a copy, an unreadable one and garbage */
	{
		ExportCtx x = {.c = repo_catalog(r), .b = repo_backend(r), .set = ms};
		void *copy;
		/* as the manifest sync does first: every id block (C's list is blocks from
		 * format 4) in its carrier's manifest */
		CHECK_EQ_INT(catalog_idblocks_assign_carriers(repo_catalog(r), 0, carriers_ignored,
							      NULL),
			     0);
		CHECK_EQ_INT(catalog_snapshot_foreach_any(repo_catalog(r), export_one, &x), 0);
		CHECK_EQ_INT(x.r, 0);
		if (!CHECK_EQ_INT(ms->n, 4))
			goto out;
		copy = xmalloc(ms->v[0].len);
		memcpy(copy, ms->v[0].buf, ms->v[0].len);
		CHECK_EQ_INT(manifest_set_add(ms, repo_backend(r), "snapshots/zz-copy", copy,
					      ms->v[0].len),
			     0);
		CHECK_EQ_INT(manifest_set_add(ms, repo_backend(r), "snapshots/zz-unreadable", NULL, 0), 0);
		copy = xmalloc(5000);
		test_random(copy, 5000);
		CHECK_EQ_INT(manifest_set_add(ms, repo_backend(r), "snapshots/zz-garbage", copy, 5000), 0);
	}

	/* rebuild into a fresh catalog */
	test_fmt(fresh, sizeof(fresh), "%s/fresh.db", tmp);
	if (!CHECK_EQ_INT(catalog_open(fresh, true, &c), 0))
		goto out;
	if (!CHECK_EQ_INT(repair_rebuild_catalog(repo_backend(r), c, "snapshots/", serve_manifest, ms,
						 &st),
			  0))
		goto out;
	CHECK_EQ_INT(st.packs, n_pack_objects);
	CHECK_EQ_INT(st.bad_packs, 0);
	CHECK_EQ_INT(st.snapshots, 4);
	CHECK_EQ_INT(st.bad_manifests, 2);
	CHECK_EQ_INT(ms->n_calls, 2 * 7); /* each manifest twice: its id blocks first */
	CHECK_EQ_INT(st.chunks, count_rows(repo_catalog(r), "chunks") + MANY_CHUNKS);
	CHECK_EQ_INT(count_rows(c, "packs WHERE state = 'ok' AND session IS NULL"), n_pack_objects);
	/* the chunk stored twice stays in the pack that sorts first */
	{
		ChunkId id;
		ChunkLoc loc;
		chunk_hash(d->shared, CS, &id);
		if (CHECK_EQ_INT(catalog_chunk_locate(c, &id, &loc), 0))
			CHECK_EQ_STR(loc.pack_name, DUP_PACK);
	}
	/* the pack whose trailer took a second read: the last chunk in it */
	{
		uint8_t plain[8];
		ChunkId id;
		ChunkLoc loc;
		put_le64(plain, MANY_CHUNKS - 1);
		chunk_hash(plain, sizeof(plain), &id);
		if (CHECK_EQ_INT(catalog_chunk_locate(c, &id, &loc), 0)) {
			CHECK_EQ_STR(loc.pack_name, MANY_PACK);
			CHECK_EQ_INT(loc.offset, PACK_HEADER_LEN + (MANY_CHUNKS - 1) * 8);
			CHECK_EQ_INT(loc.plen, 8);
			CHECK(!loc.has_crc);
		}
	}
	/* a catalog with anything in it is not rebuilt into */
	CHECK_EQ_INT(repair_rebuild_catalog(repo_backend(r), c, "snapshots/", serve_manifest, ms, &st),
		     -ENOTEMPTY);

	/* the same snapshots, row for row; the same trees, chunk lists, links, bad blocks */
	n = compare_snapshot_rows(repo_catalog(r), c, pairs, ELEMENTSOF(pairs));
	CHECK_EQ_INT(n, 4);
	for (size_t i = 0; i < n; i++)
		compare_snapshot(repo_catalog(r), c, &pairs[i]);
	/* every chunk readable, with its CRC back */
	ck->orig = repo_catalog(r);
	ck->b = repo_backend(r);
	if (CHECK_EQ_INT(chunk_codec_new(3, &ck->codec), 0)) {
		check_chunks(c, ck);
		CHECK(ck->n_read >= BIG_CHUNKS + 6);
		CHECK_EQ_INT(ck->n_crc, ck->n_read);
	}
	{
		uint64_t missing = 0;
		CHECK_EQ_INT(catalog_check_references(c, count_missing, &missing), 0);
		CHECK_EQ_INT(missing, 0);
	}

	/* the rebuilt catalog serves the repository: restore and check */
	c = catalog_free(c);
	r = repo_free(r);
	{
		char dst[PATH_MAX];
		test_fmt(dst, sizeof(dst), "%s/catalog.db", path);
		CHECK_EQ_INT(rename(fresh, dst), 0);
		test_fmt(dst, sizeof(dst), "%s/catalog.db-wal", path);
		unlink(dst);
		test_fmt(dst, sizeof(dst), "%s/catalog.db-shm", path);
		unlink(dst);
	}
	if (!CHECK_EQ_INT(repo_open(path, &r), 0))
		goto out;
	{
		SnapshotInfo s = {0};
		RestoreMapping map = {.from = "/srv/tblspc", .to = test_fmt(tblspc, sizeof(tblspc),
									   "%s/tblspc", tmp)};
		RestoreOptions ro = {.jobs = 2, .maps = &map, .n_maps = 1};
		RestoreResult rr;
		CheckOptions co = {.read_data = true, .jobs = 2};
		CheckResult cr = {0};
		uint8_t *expect = xcalloc(1, 2 * CS + sizeof(d->tail));

		test_fmt(target, sizeof(target), "%s/restore-a", tmp);
		if (CHECK_EQ_INT(catalog_snapshot_get(repo_catalog(r), pairs[0].name, NULL, &s), 0) &&
		    CHECK_EQ_INT(restore_snapshot(r, &s, target, &ro, &rr), 0)) {
			CHECK(test_file_equals(target, "data.bin", d->shared, sizeof(d->shared)));
			memcpy(expect + CS, d->tail, sizeof(d->tail));
			CHECK(test_file_equals(tblspc, "holes.bin", expect, 2 * CS + sizeof(d->tail)));
		}
		snapshot_info_clear(&s);
		free(expect);
		test_fmt(target, sizeof(target), "%s/restore-c", tmp);
		if (CHECK_EQ_INT(catalog_snapshot_get(repo_catalog(r), pairs[2].name, NULL, &s), 0) &&
		    CHECK_EQ_INT(restore_snapshot(r, &s, target, &(RestoreOptions){.jobs = 2}, &rr), 0)) {
			CHECK(test_file_equals(target, "big.bin", d->big, sizeof(d->big)));
			CHECK(test_file_equals(target, "copy.bin", d->shared, sizeof(d->shared)));
		}
		snapshot_info_clear(&s);
		CHECK_EQ_INT(repo_check(r, &co, check_report, NULL, &cr), 0);
		CHECK_EQ_INT(cr.n_errors, 0);
	}

	/* a pack with a damaged trailer and an object too short to be a pack are skipped */
	{
		ChunkId id;
		ChunkLoc loc;
		uint64_t missing = 0;
		chunk_hash(d->big, CS, &id);
		if (!CHECK_EQ_INT(catalog_chunk_locate(repo_catalog(r), &id, &loc), 0))
			goto out;
		CHECK(damage_trailer(path, loc.pack_name));
		CHECK_EQ_INT(store_put(repo_backend(r), "packs/zz/short.pack", "PGBKPAK1", 8), 0);
		test_fmt(fresh, sizeof(fresh), "%s/fresh2.db", tmp);
		if (!CHECK_EQ_INT(catalog_open(fresh, true, &c), 0))
			goto out;
		st = (RepairStats){0};
		CHECK_EQ_INT(repair_rebuild_catalog(repo_backend(r), c, "snapshots/", serve_manifest, ms,
						    &st),
			     0);
		CHECK_EQ_INT(st.bad_packs, 2);
		CHECK_EQ_INT(st.packs, n_pack_objects - 1);
		CHECK_EQ_INT(st.snapshots, 4);
		CHECK_EQ_INT(st.bad_manifests, 2);
		CHECK_EQ_INT(catalog_chunk_locate(c, &id, &loc), -ENOENT);
		/* the snapshot that used them is there, its chunks missing: check says so */
		CHECK_EQ_INT(catalog_check_references(c, count_missing, &missing), 0);
		CHECK(missing > 0);
	}
	/* a backend error stops the rebuild */
	{
		Catalog *c3 = NULL;
		StoreBackend *fault = NULL, *local = NULL;
		test_fmt(fresh, sizeof(fresh), "%s/fresh3.db", tmp);
		if (CHECK_EQ_INT(catalog_open(fresh, true, &c3), 0) &&
		    CHECK_EQ_INT(store_local_new(path, &local), 0) &&
		    CHECK_EQ_INT(store_fault_new(local, "get:2=EIO", &fault), 0)) {
			local = NULL; /* the fault driver owns it */
			CHECK_EQ_INT(repair_rebuild_catalog(fault, c3, "snapshots/", serve_manifest, ms, &st),
				     -EIO);
		}
		store_backend_free(local);
		store_backend_free(fault);
		catalog_free(c3);
	}
out:
	if (ck->codec)
		chunk_codec_free(ck->codec);
	free(ck);
	catalog_free(c);
	repo_free(r);
	manifest_set_clear(ms);
	free(ms);
	free(d);
	TEST_RM_RF(tmp);
}

/* ---- id blocks in manifests (format 2) ---- */

static ChunkId *block_ids(size_t n, unsigned seed)
{
	ChunkId *v = xmalloc(n * sizeof(*v));
	for (size_t i = 0; i < n; i++) {
		char buf[48];
		snprintf(buf, sizeof(buf), "%u/%zu", seed, i);
		chunk_hash(buf, strlen(buf), &v[i]);
	}
	return v;
}

/* A committed snapshot named name with one file of content. */
static int64_t block_snapshot(Catalog *c, const char *name, int64_t start, int64_t content)
{
	SnapshotInfo s = {.instance = "main", .type = "full", .start_time = start};
	FileRow root = {.ino = 1, .parent = 1, .name = "", .mode = S_IFDIR | 0755};
	FileRow f = {.ino = 2, .parent = 1, .name = name, .mode = S_IFREG | 0644,
		     .size = 1 << 30, .content = content};
	ChunkId digest;
	if (catalog_snapshot_begin(c, &s) < 0 || catalog_file_add(c, s.rowid, &root) < 0 ||
	    catalog_file_add(c, s.rowid, &f) < 0 || tree_digest_compute(c, s.rowid, &digest) < 0)
		return -1;
	s.status = SNAP_STATUS_OK;
	s.stop_time = start + 1000;
	s.has_tree_digest = true;
	s.tree_digest = digest;
	return catalog_snapshot_finish(c, &s) < 0 ? -1 : s.rowid;
}

static int ignore_mark(int64_t snap _unused_, const char *name _unused_, void *ud _unused_)
{
	return 0;
}

static bool same_list(Catalog *a, int64_t ca, Catalog *b, int64_t cb)
{
	_cleanup_free_ ChunkId *x = NULL, *y = NULL;
	size_t nx = 0, ny = 0;
	return catalog_content_get(a, ca, &x, &nx) == 0 && catalog_content_get(b, cb, &y, &ny) == 0 &&
	       nx == ny && memcmp(x, y, nx * sizeof(*x)) == 0;
}

static int64_t file_content(Catalog *c, const char *name)
{
	char sql[128];
	sqlite3_stmt *s = NULL;
	int64_t v = -1;
	test_fmt(sql, sizeof(sql), "SELECT content FROM files WHERE name = '%s'", name);
	if (sqlite3_prepare_v2(catalog_sqlite(c), sql, -1, &s, NULL) == SQLITE_OK &&
	    sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return v;
}

/*
 * Two snapshots of a 16384-id list, the second with one id changed: the
 * second manifest carries one block and names the rest by hash; a rebuild
 * needs both manifests' blocks first; without the first manifest the second
 * snapshot's list is incomplete and reported.
 */
static void test_idblock_manifests(void)
{
	char tmp[64], path[PATH_MAX];
	Catalog *a = NULL, *b = NULL;
	_cleanup_free_ ChunkId *v = block_ids(16384, 7);
	_cleanup_free_ void *m1 = NULL, *m2 = NULL, *edited = NULL;
	size_t l1 = 0, l2 = 0, elen = 0;
	int64_t c1 = 0, c2 = 0, s1, s2;
	uint64_t n_missing = 0;

	test_tmpdir(tmp, sizeof(tmp));
	if (!CHECK_EQ_INT(catalog_open(test_fmt(path, sizeof(path), "%s/a.db", tmp), true, &a), 0))
		goto out;
	catalog_set_idblocks(a, true);
	CHECK_EQ_INT(catalog_content_put(a, v, 16384, &c1), 0);
	v[9000] = chunk_id_hole;
	CHECK_EQ_INT(catalog_content_put(a, v, 16384, &c2), 0);
	s1 = block_snapshot(a, "one", T0, c1);
	s2 = block_snapshot(a, "two", T0 + 1000000000, c2);
	CHECK(s1 > 0 && s2 > 0);
	CHECK_EQ_INT(catalog_idblocks_assign_carriers(a, 0, ignore_mark, NULL), 0);
	CHECK_EQ_INT(count_rows(a, "idblocks WHERE carrier IS NULL"), 0);
	CHECK_EQ_INT(test_manifest_image(a, s1, &m1, &l1), 0);
	CHECK_EQ_INT(test_manifest_image(a, s2, &m2, &l2), 0);
	/* the second carries one block of 256 ids (8 KiB), not the whole 512 KiB list */
	CHECK(l2 < 64 * 1024); /* mostly SQLite pages, before compression */
	CHECK(l1 > 512 * 1024);

	/* rebuilt in name order, blocks first: both whole, carriers kept */
	if (!CHECK_EQ_INT(catalog_open(test_fmt(path, sizeof(path), "%s/b.db", tmp), true, &b), 0))
		goto out;
	catalog_set_idblocks(b, true);
	CHECK_EQ_INT(manifest_import_idblocks(b, m2, l2), 0);
	CHECK_EQ_INT(manifest_import_idblocks(b, m1, l1), 0);
	CHECK_EQ_INT(count_rows(b, "idblocks"), 65);
	CHECK_EQ_INT(manifest_import(b, m2, l2, NULL), 0);
	CHECK_EQ_INT(manifest_import(b, m1, l1, NULL), 0);
	CHECK(same_list(a, c1, b, file_content(b, "one")));
	CHECK(same_list(a, c2, b, file_content(b, "two")));
	/* no packs here: every chunk is reported missing, once per snapshot (the hole is none) */
	CHECK_EQ_INT(catalog_check_references(b, count_missing, &n_missing), 0);
	CHECK_EQ_INT(n_missing, 16384 + 16383);
	CHECK_EQ_INT(count_rows(b, "idblocks WHERE carrier IS NULL"), 0);
	CHECK_EQ_INT(count_rows(b, "idblocks WHERE carrier = (SELECT snap FROM files WHERE name = 'two')"),
		     1);
	b = catalog_free(b);

	/* the second alone: imported, its list incomplete, the missing blocks reported */
	if (!CHECK_EQ_INT(catalog_open(test_fmt(path, sizeof(path), "%s/c.db", tmp), true, &b), 0))
		goto out;
	catalog_set_idblocks(b, true);
	CHECK_EQ_INT(manifest_import_idblocks(b, m2, l2), 0);
	CHECK_EQ_INT(manifest_import(b, m2, l2, NULL), 0);
	{
		_cleanup_free_ ChunkId *got = NULL;
		size_t n = 0;
		CHECK_EQ_INT(catalog_content_get(b, file_content(b, "two"), &got, &n), -EBADMSG);
	}
	n_missing = 0;
	CHECK_EQ_INT(catalog_check_references(b, count_missing, &n_missing), 0);
	CHECK_EQ_INT(n_missing, 63);
	/* another snapshot with the same incomplete list: imported too, not taken for damage */
	{
		_cleanup_free_ void *m3 = NULL;
		size_t l3 = 0;
		if (CHECK_EQ_INT(manifest_edit(m2, l2, "UPDATE snapshots SET name = name || '-copy';"
						       " DELETE FROM idblocks", &m3, &l3), 0))
			CHECK_EQ_INT(manifest_import(b, m3, l3, NULL), 0);
		CHECK_EQ_INT(count_rows(b, "snapshots"), 2);
	}
	/* the first one later: its blocks fill the placeholders */
	CHECK_EQ_INT(manifest_import(b, m1, l1, NULL), 0);
	CHECK(same_list(a, c2, b, file_content(b, "two")));
	b = catalog_free(b);

	/* a carried block whose ids do not give its hash: a damaged manifest */
	if (CHECK_EQ_INT(manifest_edit(m2, l2, "UPDATE idblocks SET ids = substr(ids, 33) ||"
					       " substr(ids, 1, 32)", &edited, &elen), 0)) {
		CHECK_EQ_INT(catalog_open(test_fmt(path, sizeof(path), "%s/d.db", tmp), true, &b), 0);
		CHECK_EQ_INT(manifest_import_idblocks(b, edited, elen), -EBADMSG);
		CHECK_EQ_INT(manifest_import(b, m1, l1, NULL), 0);
		CHECK_EQ_INT(manifest_import(b, edited, elen, NULL), -EBADMSG);
		CHECK_EQ_INT(count_rows(b, "snapshots"), 1);
	}
out:
	catalog_free(a);
	catalog_free(b);
	TEST_RM_RF(tmp);
}

int main(void)
{
	test_rebuild();
	test_idblock_manifests();
	return test_finish();
}
