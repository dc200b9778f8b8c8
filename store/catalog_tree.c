/*
 * Snapshot trees shared between snapshots (repository format 2).
 *
 * While a backup runs its file rows are in `files`, keyed by (snap, ino).
 * When it commits, catalog_tree_share() turns them into directory objects:
 * one `dirs` row per directory, holding its entries sorted by name
 * (attributes, content row, symlink target, and the `dirs` row of each
 * subdirectory), keyed by the SHA-256 of those bytes. A directory that did
 * not change since the parent snapshot is the same row, so a snapshot adds
 * only the directories on the paths to what changed, instead of one row per
 * file (1,300 files: ~100 KiB of `files` rows per snapshot). The snapshot
 * points at its "forest": a directory whose entries are the root (named "")
 * and the extra roots (named by their absolute paths).
 *
 * Large directories (repository format 5): a directory of more than
 * DIRBLOCK_MIN entries is cut into entry blocks, content-defined on names
 * (a block ends after an entry whose name hashes to a boundary, or at
 * DIRBLOCK_MAX entries), each a `dirs` row of its own (DIR_FORMAT_BLOCK);
 * the directory's row lists their rows (DIR_FORMAT_LIST) and keeps n, its
 * entry count. Adding, removing or changing one file of a 20,000-file
 * database directory then makes one new block of ~64 entries and new lists
 * of a few hundred row ids instead of a row of all 20,000 entries. A list of more
 * than DIRLIST_MIN blocks is itself cut, content-defined again (a sublist
 * ends after a block whose last name hashes to a rarer boundary), into
 * sublists of ~64 blocks, so a directory of 100,000 entries changes a
 * block, a sublist of ~64 ids and a list of ~25 (a manifest names each by
 * 32 bytes: ~3 KB of lists instead of 50 KB). Blocks live in
 * `dirs` so that everything keyed by a dirs row (carriers, gc's live_dirs,
 * catalog deltas) covers them unchanged; their own format byte keeps a block
 * from ever being read as a directory, or a list as a block.
 *
 * Inode numbers are derived when the tree is read: preorder, entries in name
 * order, the root 1. The tree digest is computed after the conversion, over
 * these rows, so it is what every reader sees. Every directory read is
 * checked against its hash; a mismatch is damage (-EBADMSG), never a tree.
 */
#include "store/catalog.h"
#include "store/chunk.h"
#include "store/sqldb.h"
#include "common/common.h"
#include "common/log.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define DIR_FORMAT 1       /* a directory: its entries */
#define DIR_FORMAT_LIST 2  /* a directory: the rows of its entry blocks, varints (format 5) */
#define DIR_FORMAT_BLOCK 3 /* an entry block: a run of a directory's entries */
#define DIRBLOCK_MIN 128   /* directories of up to this many entries stay one row */
#define DIRBLOCK_MASK 63   /* a name whose hash has these bits clear ends a block: ~64 entries */
#define DIRBLOCK_MAX 512   /* and a block ends at this many entries whatever the names */
#define DIRLIST_MIN 64     /* lists of up to this many blocks stay flat */
#define DIRLIST_MASK 0xfff /* a block whose last name has these bits clear ends a sublist */
#define DIRLIST_MAX 256    /* and a sublist ends at this many blocks */

/* What a row may be where it is read: a directory (one row or a list), an
 * element of a directory's list (a block or a sublist of blocks), a block. */
enum { WANT_DIR, WANT_PART, WANT_BLOCK };
#define MAX_DEPTH 4096 /* deeper than any path PATH_MAX allows: a loop, i.e. damage */

/* ---- a growable byte buffer with LEB128 varints ---- */

typedef struct Buf {
	unsigned char *p;
	size_t len, cap;
} Buf;

static int buf_reserve(Buf *b, size_t more)
{
	if (b->len + more <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + more)
		cap *= 2;
	unsigned char *p = realloc(b->p, cap);
	if (!p)
		return -ENOMEM;
	b->p = p;
	b->cap = cap;
	return 0;
}

static int put_uv(Buf *b, uint64_t v)
{
	int r = buf_reserve(b, 10);
	if (r < 0)
		return r;
	do {
		unsigned char byte = v & 0x7f;
		v >>= 7;
		b->p[b->len++] = byte | (v ? 0x80 : 0);
	} while (v);
	return 0;
}

static int put_bytes(Buf *b, const void *v, size_t n)
{
	int r = put_uv(b, n);
	if (r == 0)
		r = buf_reserve(b, n);
	if (r == 0 && n) {
		memcpy(b->p + b->len, v, n);
		b->len += n;
	}
	return r;
}

typedef struct Cursor {
	const unsigned char *p, *end;
} Cursor;

static int get_uv(Cursor *c, uint64_t *ret)
{
	uint64_t v = 0;
	for (unsigned shift = 0; shift < 64; shift += 7) {
		if (c->p == c->end)
			return -EBADMSG;
		unsigned char byte = *c->p++;
		v |= (uint64_t)(byte & 0x7f) << shift;
		if (!(byte & 0x80)) {
			*ret = v;
			return 0;
		}
	}
	return -EBADMSG;
}

static int get_bytes(Cursor *c, const unsigned char **ret, size_t *ret_n)
{
	uint64_t n;
	int r = get_uv(c, &n);
	if (r < 0)
		return r;
	if (n > (uint64_t)(c->end - c->p))
		return -EBADMSG;
	*ret = c->p;
	*ret_n = (size_t)n;
	c->p += n;
	return 0;
}

static uint64_t zigzag(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }
static int64_t unzigzag(uint64_t v) { return (int64_t)(v >> 1) ^ -(int64_t)(v & 1); }

/* ---- one entry of a directory ---- */

typedef struct Entry {
	char *name, *target; /* target: symlinks only */
	uint32_t mode, uid, gid;
	int64_t mtime_ns, content, sub; /* sub: the dirs row of a directory's entries */
	uint64_t size;
} Entry;

static int entry_put(Buf *b, const Entry *e)
{
	int r = put_bytes(b, e->name, strlen(e->name));
	if (r == 0) r = put_uv(b, e->mode);
	if (r == 0) r = put_uv(b, e->uid);
	if (r == 0) r = put_uv(b, e->gid);
	if (r == 0) r = put_uv(b, zigzag(e->mtime_ns));
	if (r == 0) r = put_uv(b, e->size);
	if (r == 0) r = put_uv(b, (uint64_t)e->content);
	if (r == 0) r = put_uv(b, e->target ? strlen(e->target) + 1 : 0);
	if (r == 0 && e->target) {
		r = buf_reserve(b, strlen(e->target));
		if (r == 0) {
			memcpy(b->p + b->len, e->target, strlen(e->target));
			b->len += strlen(e->target);
		}
	}
	if (r == 0) r = put_uv(b, (uint64_t)e->sub);
	return r;
}

/* An entry decoded in place: name and target are copied into *names (NUL-terminated). */
typedef struct RawEntry {
	const unsigned char *name, *target;
	size_t name_len, target_len;
	bool has_target;
	uint64_t mode, uid, gid, mtime, size, content, sub;
} RawEntry;

/* An entry's fields before its content, in both encodings: name, mode, uid, gid, mtime, size. */
static int entry_head_get(Cursor *c, const unsigned char **name, size_t *name_len, uint64_t *mode,
			  uint64_t *uid, uint64_t *gid, uint64_t *mtime, uint64_t *size)
{
	int r = get_bytes(c, name, name_len);
	if (r == 0) r = get_uv(c, mode);
	if (r == 0) r = get_uv(c, uid);
	if (r == 0) r = get_uv(c, gid);
	if (r == 0) r = get_uv(c, mtime);
	if (r == 0) r = get_uv(c, size);
	return r;
}

/* A symlink target after the content, in both encodings: its length + 1, or 0, then its bytes. */
static int entry_target_get(Cursor *c, const unsigned char **target, size_t *target_len,
			    bool *has_target)
{
	uint64_t tl;
	int r = get_uv(c, &tl);
	if (r < 0)
		return r;
	*has_target = tl > 0;
	*target_len = tl ? (size_t)(tl - 1) : 0;
	if (tl && tl - 1 > (uint64_t)(c->end - c->p))
		return -EBADMSG;
	*target = c->p;
	c->p += *target_len;
	return 0;
}

static int entry_get(Cursor *c, RawEntry *e)
{
	int r = entry_head_get(c, &e->name, &e->name_len, &e->mode, &e->uid, &e->gid, &e->mtime,
			       &e->size);
	if (r == 0) r = get_uv(c, &e->content);
	if (r == 0) r = entry_target_get(c, &e->target, &e->target_len, &e->has_target);
	if (r == 0) r = get_uv(c, &e->sub);
	if (r == 0 && (e->mode > UINT32_MAX || e->uid > UINT32_MAX || e->gid > UINT32_MAX ||
		       e->content > INT64_MAX || e->sub > INT64_MAX || e->size > INT64_MAX))
		r = -EBADMSG;
	return r;
}

/* ---- SQL ---- */

/* Store one directory's entry bytes once; *ret_id: its row. */
static int dir_put(sqlite3 *db, sqlite3_stmt *ins, sqlite3_stmt *sel, const Buf *b, uint64_t n,
		   int64_t *ret_id)
{
	ChunkId h;
	int rc;
	chunk_hash(b->p, b->len, &h);
	sqlite3_reset(ins);
	sqlite3_bind_blob(ins, 1, h.b, sizeof(h.b), SQLITE_STATIC);
	sqlite3_bind_int64(ins, 2, (int64_t)n);
	sqlite3_bind_blob64(ins, 3, b->len ? (const void *)b->p : "", b->len, SQLITE_STATIC);
	rc = sqlite3_step(ins);
	sqlite3_reset(ins);
	if (rc != SQLITE_DONE)
		return sqldb_fail(db, rc, "directory insert");
	sqlite3_reset(sel);
	sqlite3_bind_blob(sel, 1, h.b, sizeof(h.b), SQLITE_STATIC);
	rc = sqlite3_step(sel);
	if (rc == SQLITE_ROW)
		*ret_id = sqlite3_column_int64(sel, 0);
	sqlite3_reset(sel);
	return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -EIO : sqldb_fail(db, rc, "directory id");
}

/*
 * One row's bytes, checked against its hash: *ret_format its format byte,
 * *ret (malloc'd) the bytes after it, *ret_n its n; *ret_carrier (when not
 * NULL): column 3 of sel, 0 when NULL.
 */
static int row_get(sqlite3 *db, sqlite3_stmt *sel, int64_t id, int *ret_format,
		   unsigned char **ret, size_t *ret_len, uint64_t *ret_n, int64_t *ret_carrier)
{
	int rc, r;
	sqlite3_reset(sel);
	sqlite3_bind_int64(sel, 1, id);
	rc = sqlite3_step(sel);
	if (rc != SQLITE_ROW) {
		sqlite3_reset(sel);
		return rc == SQLITE_DONE ? -EBADMSG : sqldb_fail(db, rc, "directory");
	}
	const void *hash = sqlite3_column_blob(sel, 0);
	size_t len = (size_t)sqlite3_column_bytes(sel, 2);
	const unsigned char *v = sqlite3_column_blob(sel, 2);
	ChunkId h;
	chunk_hash(v, len, &h);
	if (sqlite3_column_bytes(sel, 0) != (int)sizeof(h.b) || memcmp(hash, h.b, sizeof(h.b)) != 0 ||
	    len < 1 || v[0] < DIR_FORMAT || v[0] > DIR_FORMAT_BLOCK ||
	    sqlite3_column_int64(sel, 1) < 0) {
		log_debug("catalog: directory row %lld does not match its hash", (long long)id);
		r = -EBADMSG;
	} else if (!(*ret = malloc(len))) {
		r = -ENOMEM;
	} else {
		memcpy(*ret, v + 1, len - 1);
		*ret_format = v[0];
		*ret_len = len - 1;
		*ret_n = (uint64_t)sqlite3_column_int64(sel, 1);
		if (ret_carrier)
			*ret_carrier = sqlite3_column_int64(sel, 3);
		r = 0;
	}
	sqlite3_reset(sel);
	return r;
}

/* The next element (a row) of a list; 0 at its end. */
static int list_next(Cursor *c, int64_t *ret)
{
	uint64_t id;
	int r;
	if (c->p == c->end) {
		*ret = 0;
		return 0;
	}
	r = get_uv(c, &id);
	if (r == 0 && (id == 0 || id > INT64_MAX))
		r = -EBADMSG;
	if (r == 0)
		*ret = (int64_t)id;
	return r;
}

/*
 * A list's entries appended to b: its elements (want WANT_PART: blocks or
 * sublists of blocks; WANT_BLOCK: blocks), which must add up to its n.
 */
static int list_gather(sqlite3 *db, sqlite3_stmt *sel, const unsigned char *v, size_t len,
		       uint64_t n, int want, Buf *b)
{
	Cursor cur = {v, v + len};
	uint64_t total = 0;
	int64_t elem = 0;
	int r = len ? 0 : -EBADMSG;
	while (r == 0 && (r = list_next(&cur, &elem)) == 0 && elem) {
		_cleanup_free_ unsigned char *ev = NULL;
		size_t elen;
		uint64_t en;
		int eformat;
		r = row_get(db, sel, elem, &eformat, &ev, &elen, &en, NULL);
		if (r == 0 && (en == 0 || en > n - total))
			r = -EBADMSG;
		if (r == 0 && eformat == DIR_FORMAT_LIST && want == WANT_PART)
			r = list_gather(db, sel, ev, elen, en, WANT_BLOCK, b);
		else if (r == 0 && eformat != DIR_FORMAT_BLOCK)
			r = -EBADMSG;
		else if (r == 0 && (r = buf_reserve(b, elen)) == 0) {
			memcpy(b->p + b->len, ev, elen);
			b->len += elen;
		}
		total += en;
	}
	return r == 0 && total != n ? -EBADMSG : r;
}

/*
 * A directory's entry bytes (format-1 encoding, after the format byte),
 * those of its one row or of its blocks in order: *ret (malloc'd) and
 * *ret_n entries. A block where a directory belongs, a list naming
 * anything but blocks (or sublists of blocks), or blocks that do not add
 * up to the list's n: -EBADMSG.
 */
static int dir_get(sqlite3 *db, sqlite3_stmt *sel, int64_t id, unsigned char **ret,
		   size_t *ret_len, uint64_t *ret_n)
{
	_cleanup_free_ unsigned char *v = NULL;
	size_t len;
	uint64_t n;
	int format, r = row_get(db, sel, id, &format, &v, &len, &n, NULL);
	Buf b = {0};

	if (r == 0 && format == DIR_FORMAT) {
		*ret = TAKE_PTR(v);
		*ret_len = len;
		*ret_n = n;
		return 0;
	}
	if (r == 0)
		r = format == DIR_FORMAT_LIST ? list_gather(db, sel, v, len, n, WANT_PART, &b)
					      : -EBADMSG;
	if (r < 0) {
		free(b.p);
		return r;
	}
	*ret = b.p ? b.p : malloc(1);
	if (!*ret)
		return -ENOMEM;
	*ret_len = b.len;
	*ret_n = n;
	return 0;
}

/* ---- files rows -> directories (at commit) ---- */

typedef struct Node {
	uint64_t ino, parent;
	Entry e;
	struct Node **kids;
	size_t n_kids, cap_kids;
} Node;

typedef struct Share {
	sqlite3 *db;
	Node *v;
	size_t n, cap;
	sqlite3_stmt *ins, *sel;
	bool blocks; /* repository format 5: large directories as entry blocks */
} Share;

static void share_clear(Share *s)
{
	for (size_t i = 0; i < s->n; i++) {
		free(s->v[i].e.name);
		free(s->v[i].e.target);
		free(s->v[i].kids);
	}
	free(s->v);
	sqlite3_finalize(s->ins);
	sqlite3_finalize(s->sel);
}

static int share_add_row(const FileRow *f, void *userdata)
{
	Share *s = userdata;
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 1024;
		Node *v = realloc(s->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		s->v = v;
		s->cap = cap;
	}
	Node *nd = &s->v[s->n];
	*nd = (Node){.ino = f->ino, .parent = f->parent,
		     .e = {.mode = f->mode, .uid = f->uid, .gid = f->gid, .mtime_ns = f->mtime_ns,
			   .size = f->size, .content = f->content}};
	nd->e.name = strdup(f->name);
	nd->e.target = f->target ? strdup(f->target) : NULL;
	s->n++;
	return nd->e.name && (!f->target || nd->e.target) ? 0 : -ENOMEM;
}

/* Rows come in ino order, so the index of an ino is found by bisection. */
static Node *share_find(Share *s, uint64_t ino)
{
	size_t lo = 0, hi = s->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (s->v[mid].ino == ino)
			return &s->v[mid];
		if (s->v[mid].ino < ino)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static int kid_add(Node *p, Node *kid)
{
	if (p->n_kids == p->cap_kids) {
		size_t cap = p->cap_kids ? 2 * p->cap_kids : 8;
		Node **k = realloc(p->kids, cap * sizeof(*k));
		if (!k)
			return -ENOMEM;
		p->kids = k;
		p->cap_kids = cap;
	}
	p->kids[p->n_kids++] = kid;
	return 0;
}

static int cmp_kids(const void *a, const void *b)
{
	return strcmp((*(Node *const *)a)->e.name, (*(Node *const *)b)->e.name);
}

/*
 * The hash of a name that decides where blocks and sublists end: FNV-1a,
 * then a 64-bit finalizer so the low bits depend on every byte. Part of the
 * format: another one would cut the same directory elsewhere and share
 * nothing with the blocks written before.
 */
static uint64_t name_hash(const char *name)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 0x100000001b3ull;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	return h;
}

static int buf_start(Buf *b, unsigned char format)
{
	int r = buf_reserve(b, 1);
	if (r == 0)
		b->p[b->len++] = format;
	return r;
}

/* One block of a directory being shared: its row, its entries, whether it ends a sublist. */
typedef struct BlockRef {
	int64_t id;
	uint64_t n;
	bool ends;
} BlockRef;

static int list_put(Share *s, const BlockRef *v, size_t n_v, uint64_t n, int64_t *ret_id)
{
	Buf b = {0};
	int r = buf_start(&b, DIR_FORMAT_LIST);
	for (size_t i = 0; i < n_v && r == 0; i++)
		r = put_uv(&b, (uint64_t)v[i].id);
	if (r == 0)
		r = dir_put(s->db, s->ins, s->sel, &b, n, ret_id);
	free(b.p);
	return r;
}

/* A list of more than DIRLIST_MIN blocks as a list of sublists, cut content-defined. */
static int share_sublists(Share *s, BlockRef *v, size_t n_v, uint64_t n, int64_t *ret_id)
{
	size_t start = 0, n_sub = 0;
	uint64_t sub_n = 0;
	int r = 0;
	for (size_t i = 0; i < n_v && r == 0; i++) {
		sub_n += v[i].n;
		if (i + 1 < n_v && !v[i].ends && i + 1 - start < DIRLIST_MAX)
			continue;
		BlockRef sub = {.n = sub_n};
		r = list_put(s, v + start, i + 1 - start, sub_n, &sub.id);
		v[n_sub++] = sub; /* in place: n_sub <= start */
		start = i + 1;
		sub_n = 0;
	}
	return r < 0 ? r : list_put(s, v, n_sub, n, ret_id);
}

/* Entries of kids (sorted) in rows of their own, and the list of those rows; *ret_id: the list. */
static int share_blocks(Share *s, Node **kids, size_t n, int64_t *ret_id)
{
	_cleanup_free_ BlockRef *v = malloc((n + 1) * sizeof(*v));
	Buf b = {0};
	size_t in_block = 0, n_v = 0;
	int r = v ? 0 : -ENOMEM;
	for (size_t i = 0; i < n && r == 0; i++) {
		if (in_block == 0)
			r = buf_start(&b, DIR_FORMAT_BLOCK);
		if (r == 0)
			r = entry_put(&b, &kids[i]->e);
		in_block++;
		uint64_t h = name_hash(kids[i]->e.name);
		bool boundary = (h & DIRBLOCK_MASK) == 0;
		if (r == 0 && (i + 1 == n || in_block == DIRBLOCK_MAX || boundary)) {
			BlockRef *ref = &v[n_v++];
			*ref = (BlockRef){.n = in_block, .ends = boundary && (h & DIRLIST_MASK) == 0};
			r = dir_put(s->db, s->ins, s->sel, &b, in_block, &ref->id);
			b.len = 0;
			in_block = 0;
		}
	}
	free(b.p);
	if (r == 0)
		r = n_v > DIRLIST_MIN ? share_sublists(s, v, n_v, n, ret_id)
				      : list_put(s, v, n_v, n, ret_id);
	return r;
}

/* Encode and store the directory whose children are kids; *ret_id its row. */
static int share_dir(Share *s, Node **kids, size_t n, int64_t *ret_id)
{
	Buf b = {0};
	int r = 0;
	if (n)
		qsort(kids, n, sizeof(*kids), cmp_kids);
	for (size_t i = 1; i < n && r == 0; i++)
		if (strcmp(kids[i]->e.name, kids[i - 1]->e.name) == 0)
			r = -EBADMSG; /* two entries of one name: not a tree */
	if (r == 0 && s->blocks && n > DIRBLOCK_MIN)
		return share_blocks(s, kids, n, ret_id);
	if (r == 0)
		r = buf_start(&b, DIR_FORMAT);
	for (size_t i = 0; i < n && r == 0; i++)
		r = entry_put(&b, &kids[i]->e);
	if (r == 0)
		r = dir_put(s->db, s->ins, s->sel, &b, n, ret_id);
	free(b.p);
	return r;
}

static int share_build(Share *s, int64_t *ret_forest)
{
	_cleanup_free_ Node **roots = NULL;
	size_t n_roots = 0;
	int r = 0;

	roots = malloc((s->n ? s->n : 1) * sizeof(*roots));
	if (!roots)
		return -ENOMEM;
	for (size_t i = 0; i < s->n && r == 0; i++) {
		Node *nd = &s->v[i];
		if (nd->ino == 1 || nd->parent == nd->ino) {
			roots[n_roots++] = nd;
			continue;
		}
		Node *p = share_find(s, nd->parent);
		r = p && S_ISDIR(p->e.mode) ? kid_add(p, nd) : -EBADMSG;
	}
	/* children have higher inos than their parents: backwards, every subdirectory is done first */
	for (size_t i = s->n; i-- > 0 && r == 0;)
		if (S_ISDIR(s->v[i].e.mode))
			r = share_dir(s, s->v[i].kids, s->v[i].n_kids, &s->v[i].e.sub);
	if (r == 0 && (n_roots == 0 || s->v[0].ino != 1))
		r = -EBADMSG;
	if (r == 0)
		r = share_dir(s, roots, n_roots, ret_forest);
	return r;
}

int catalog_tree_share(Catalog *c, int64_t snap)
{
	Share s = {.db = catalog_sqlite(c), .blocks = catalog_format(c) >= 5};
	sqlite3_stmt *up = NULL;
	int64_t forest = 0;
	/* the write lock first: a read that turns into a write fails at once (WAL) when another
	 * connection committed meanwhile, whatever the busy timeout */
	bool own = sqlite3_get_autocommit(s.db) != 0;
	int r = sqldb_exec(s.db, own ? "BEGIN IMMEDIATE" : "SAVEPOINT tree_share");
	if (r < 0)
		return r;
	r = catalog_file_foreach(c, snap, share_add_row, &s);
	if (r == 0)
		r = sqldb_prepare(s.db, "INSERT OR IGNORE INTO dirs(hash, n, entries) VALUES(?1, ?2, ?3)",
				&s.ins);
	if (r == 0)
		r = sqldb_prepare(s.db, "SELECT id FROM dirs WHERE hash = ?1", &s.sel);
	if (r == 0)
		r = share_build(&s, &forest);
	if (r == 0)
		r = sqldb_prepare(s.db, "UPDATE snapshots SET tree = ?2 WHERE id = ?1", &up);
	if (r == 0) {
		sqlite3_bind_int64(up, 1, snap);
		sqlite3_bind_int64(up, 2, forest);
		int rc = sqlite3_step(up);
		r = rc == SQLITE_DONE ? 0 : sqldb_fail(s.db, rc, "snapshot tree");
	}
	sqlite3_finalize(up);
	if (r == 0) {
		sqlite3_stmt *del = NULL;
		r = sqldb_prepare(s.db, "DELETE FROM files WHERE snap = ?1", &del);
		if (r == 0) {
			sqlite3_bind_int64(del, 1, snap);
			int rc = sqlite3_step(del);
			r = rc == SQLITE_DONE ? 0 : sqldb_fail(s.db, rc, "file rows");
		}
		sqlite3_finalize(del);
	}
	share_clear(&s);
	if (r == 0)
		r = sqldb_exec(s.db, own ? "COMMIT" : "RELEASE tree_share");
	if (r == 0)
		return 0;
	if (own) {
		sqldb_exec(s.db, "ROLLBACK");
	} else {
		sqldb_exec(s.db, "ROLLBACK TO tree_share");
		sqldb_exec(s.db, "RELEASE tree_share");
	}
	return r;
}

/* ---- directories -> file rows (every reader) ---- */

typedef struct Walk {
	sqlite3 *db;
	sqlite3_stmt *sel;
	uint64_t next_ino;
	CatalogFileFn cb;
	void *ud;
} Walk;

static int walk_dir(Walk *w, int64_t id, uint64_t parent, unsigned depth);

/* One entry as a file row, then (a directory) its entries. */
static int walk_entry(Walk *w, const RawEntry *re, uint64_t parent, bool root, unsigned depth)
{
	_cleanup_free_ char *name = strndup((const char *)re->name, re->name_len);
	_cleanup_free_ char *target = re->has_target ? strndup((const char *)re->target, re->target_len)
						     : NULL;
	uint64_t ino = w->next_ino++;
	FileRow f = {.ino = ino, .parent = root ? ino : parent, .name = name,
		     .mode = (uint32_t)re->mode, .uid = (uint32_t)re->uid, .gid = (uint32_t)re->gid,
		     .mtime_ns = unzigzag(re->mtime), .size = re->size,
		     .content = (int64_t)re->content, .target = target};
	int r;

	if (!name || (re->has_target && !target))
		return -ENOMEM;
	/* names with a NUL inside, a directory without entries or a file with some: damage */
	if (strlen(name) != re->name_len || (target && strlen(target) != re->target_len) ||
	    S_ISDIR(f.mode) != (re->sub != 0) ||
	    !catalog_file_row_valid(&f, re->name_len))
		return -EBADMSG;
	r = w->cb(&f, w->ud);
	if (r == 0 && S_ISDIR(f.mode))
		r = walk_dir(w, (int64_t)re->sub, ino, depth + 1);
	return r;
}

static int walk_entries(Walk *w, const unsigned char *p, size_t len, uint64_t n, uint64_t parent,
			bool forest, unsigned depth)
{
	Cursor cur = {p, p + len};
	for (uint64_t i = 0; i < n; i++) {
		RawEntry re;
		int r = entry_get(&cur, &re);
		if (r == 0 && forest && (i == 0) != (re.name_len == 0))
			r = -EBADMSG; /* the root first, and only there */
		if (r == 0)
			r = walk_entry(w, &re, parent, forest, depth);
		if (r < 0)
			return r;
	}
	return cur.p == cur.end ? 0 : -EBADMSG;
}

static int walk_dir(Walk *w, int64_t id, uint64_t parent, unsigned depth)
{
	_cleanup_free_ unsigned char *v = NULL;
	size_t len;
	uint64_t n;
	int r;
	if (depth > MAX_DEPTH)
		return -EBADMSG;
	r = dir_get(w->db, w->sel, id, &v, &len, &n);
	if (r == 0)
		r = walk_entries(w, v, len, n, parent, false, depth);
	return r;
}

int catalog_tree_foreach(Catalog *c, int64_t forest, CatalogFileFn cb, void *userdata)
{
	Walk w = {.db = catalog_sqlite(c), .next_ino = 1, .cb = cb, .ud = userdata};
	_cleanup_free_ unsigned char *v = NULL;
	size_t len;
	uint64_t n;
	int r = sqldb_prepare(w.db, "SELECT hash, n, entries FROM dirs WHERE id = ?1", &w.sel);
	if (r == 0)
		r = dir_get(w.db, w.sel, forest, &v, &len, &n);
	if (r == 0 && n == 0)
		r = -EBADMSG; /* no root */
	if (r == 0)
		r = walk_entries(&w, v, len, n, 1, true, 0);
	sqlite3_finalize(w.sel);
	return r;
}

/* ---- gc: the directories and contents every remaining snapshot reaches ---- */

typedef struct Mark {
	sqlite3 *db;
	sqlite3_stmt *sel, *dir_ins, *content_ins;
} Mark;

static int mark_insert(Mark *m, sqlite3_stmt *s, int64_t id, bool *ret_new)
{
	sqlite3_reset(s);
	sqlite3_bind_int64(s, 1, id);
	int rc = sqlite3_step(s);
	sqlite3_reset(s);
	if (rc != SQLITE_DONE)
		return sqldb_fail(m->db, rc, "live set");
	if (ret_new)
		*ret_new = sqlite3_changes(m->db) > 0;
	return 0;
}

/*
 * The rows of directory id, itself and (a list) its sublists and blocks:
 * each given to row() first (1: met before, so was everything it reaches:
 * skipped), then its entries to entry().
 */
typedef struct RowVisit {
	sqlite3 *db;
	sqlite3_stmt *sel;
	int (*row)(int64_t id, void *ud);
	int (*entry)(const RawEntry *re, unsigned depth, void *ud);
	void *ud;
} RowVisit;

static int rows_visit(const RowVisit *rv, int64_t id, int want, unsigned depth)
{
	_cleanup_free_ unsigned char *v = NULL;
	size_t len;
	uint64_t n;
	int format;
	int r = depth > MAX_DEPTH ? -EBADMSG : rv->row(id, rv->ud);
	if (r != 0)
		return r < 0 ? r : 0;
	r = row_get(rv->db, rv->sel, id, &format, &v, &len, &n, NULL);
	if (r < 0)
		return r;
	if (format == DIR_FORMAT_LIST && want != WANT_BLOCK) {
		Cursor cur = {v, v + len};
		int64_t elem = 0;
		if (len == 0)
			return -EBADMSG;
		while ((r = list_next(&cur, &elem)) == 0 && elem)
			if ((r = rows_visit(rv, elem, want == WANT_DIR ? WANT_PART : WANT_BLOCK,
					    depth)) < 0)
				break;
		return r;
	}
	if (format != (want == WANT_DIR ? DIR_FORMAT : DIR_FORMAT_BLOCK))
		return -EBADMSG;
	Cursor cur = {v, v + len};
	for (uint64_t i = 0; r == 0 && i < n; i++) {
		RawEntry re;
		r = entry_get(&cur, &re);
		if (r == 0)
			r = rv->entry(&re, depth, rv->ud);
	}
	return r;
}

static int mark_row(int64_t id, void *ud)
{
	Mark *m = ud;
	bool fresh = false;
	int r = mark_insert(m, m->dir_ins, id, &fresh);
	return r < 0 ? r : fresh ? 0 : 1; /* shared with a snapshot marked before */
}

static int mark_entry(const RawEntry *re, unsigned depth, void *ud);

static int mark_dir(Mark *m, int64_t id, unsigned depth)
{
	RowVisit rv = {.db = m->db, .sel = m->sel, .row = mark_row, .entry = mark_entry, .ud = m};
	return rows_visit(&rv, id, WANT_DIR, depth);
}

static int mark_entry(const RawEntry *re, unsigned depth, void *ud)
{
	Mark *m = ud;
	int r = 0;
	if (re->content)
		r = mark_insert(m, m->content_ins, (int64_t)re->content, NULL);
	if (r == 0 && re->sub)
		r = mark_dir(m, (int64_t)re->sub, depth + 1);
	return r;
}

int catalog_tree_mark_live(Catalog *c)
{
	Mark m = {.db = catalog_sqlite(c)};
	sqlite3_stmt *snaps = NULL;
	int rc, r = sqldb_exec(m.db, "CREATE TEMP TABLE IF NOT EXISTS live_dirs(id INTEGER PRIMARY KEY);"
				   "CREATE TEMP TABLE IF NOT EXISTS live_contents(id INTEGER PRIMARY KEY);"
				   "DELETE FROM live_dirs; DELETE FROM live_contents;");
	if (r == 0)
		r = sqldb_prepare(m.db, "SELECT hash, n, entries FROM dirs WHERE id = ?1", &m.sel);
	if (r == 0)
		r = sqldb_prepare(m.db, "INSERT OR IGNORE INTO live_dirs VALUES(?1)", &m.dir_ins);
	if (r == 0)
		r = sqldb_prepare(m.db, "INSERT OR IGNORE INTO live_contents VALUES(?1)", &m.content_ins);
	if (r == 0)
		r = sqldb_prepare(m.db, "SELECT tree FROM snapshots WHERE tree IS NOT NULL", &snaps);
	while (r == 0 && (rc = sqlite3_step(snaps)) == SQLITE_ROW)
		r = mark_dir(&m, sqlite3_column_int64(snaps, 0), 0);
	if (r == 0 && rc != SQLITE_DONE)
		r = sqldb_fail(m.db, rc, "snapshot trees");
	sqlite3_finalize(snaps);
	sqlite3_finalize(m.sel);
	sqlite3_finalize(m.dir_ins);
	sqlite3_finalize(m.content_ins);
	return r;
}

/* ---- the root alone (the mount's snapshot directories) ---- */

int catalog_tree_root(Catalog *c, int64_t forest, FileRow *ret, uint32_t *ret_n_subdirs)
{
	sqlite3 *db = catalog_sqlite(c);
	sqlite3_stmt *sel = NULL;
	_cleanup_free_ unsigned char *v = NULL, *rv = NULL;
	size_t len, rlen;
	uint64_t n, rn;
	RawEntry root;
	int r = sqldb_prepare(db, "SELECT hash, n, entries FROM dirs WHERE id = ?1", &sel);
	if (r == 0)
		r = dir_get(db, sel, forest, &v, &len, &n);
	if (r == 0) {
		Cursor cur = {v, v + len};
		r = n == 0 ? -EBADMSG : entry_get(&cur, &root);
	}
	if (r == 0 && (root.name_len != 0 || !S_ISDIR(root.mode) || !root.sub))
		r = -EBADMSG;
	if (r == 0)
		r = dir_get(db, sel, (int64_t)root.sub, &rv, &rlen, &rn);
	sqlite3_finalize(sel);
	if (r < 0)
		return r;
	/* st_nlink: the directories directly under the root */
	uint32_t subdirs = 0;
	Cursor cur = {rv, rv + rlen};
	for (uint64_t i = 0; i < rn; i++) {
		RawEntry e;
		r = entry_get(&cur, &e);
		if (r < 0)
			return r;
		subdirs += S_ISDIR(e.mode) ? 1 : 0;
	}
	*ret = (FileRow){.ino = 1, .parent = 1, .mode = (uint32_t)root.mode, .uid = (uint32_t)root.uid,
			 .gid = (uint32_t)root.gid, .mtime_ns = unzigzag(root.mtime), .size = root.size};
	*ret_n_subdirs = subdirs;
	return 0;
}

/* ---- carriers: the directories and contents a tree reaches, each directory once ---- */

typedef struct Ids {
	sqlite3 *db;
	sqlite3_stmt *sel;
	CatalogTreeIdFn dir_cb, content_cb;
	void *ud;
} Ids;

static int ids_row(int64_t id, void *ud)
{
	Ids *k = ud;
	return k->dir_cb(id, k->ud);
}

static int ids_entry(const RawEntry *re, unsigned depth, void *ud);

static int ids_dir(Ids *k, int64_t id, unsigned depth)
{
	RowVisit rv = {.db = k->db, .sel = k->sel, .row = ids_row, .entry = ids_entry, .ud = k};
	return rows_visit(&rv, id, WANT_DIR, depth);
}

static int ids_entry(const RawEntry *re, unsigned depth, void *ud)
{
	Ids *k = ud;
	int r = 0;
	if (re->content)
		r = k->content_cb((int64_t)re->content, k->ud);
	if (r == 0 && re->sub)
		r = ids_dir(k, (int64_t)re->sub, depth + 1);
	return r;
}

int catalog_tree_walk_ids(Catalog *c, int64_t forest, CatalogTreeIdFn dir_cb,
			  CatalogTreeIdFn content_cb, void *ud)
{
	Ids k = {.db = catalog_sqlite(c), .dir_cb = dir_cb, .content_cb = content_cb, .ud = ud};
	int r = sqldb_prepare(k.db, "SELECT hash, n, entries FROM dirs WHERE id = ?1", &k.sel);
	if (r == 0)
		r = ids_dir(&k, forest, 0);
	sqlite3_finalize(k.sel);
	return r;
}

/*
 * ---- portable directories (manifests of format 3) ----
 *
 * A directory row names contents and subdirectories by row ids of this
 * catalog, so its bytes (and hash) mean nothing in another one. A manifest
 * carries a directory in portable form instead: the same entries, a content
 * named by its hash (the SHA-256 of the whole chunk-id list, as everywhere)
 * and a subdirectory by its portable hash, the SHA-256 of its portable
 * bytes: a Merkle tree, so a directory carried by an older manifest is named
 * without being repeated. Translated at export and at import only; the
 * catalog keeps its compact rows, and readers never see this form.
 */
#define PDIR_FORMAT 1       /* a directory: its entries */
#define PDIR_FORMAT_LIST 2  /* a directory: the portable hashes of its entry blocks */
#define PDIR_FORMAT_BLOCK 3 /* an entry block */

static int pentry_put(Buf *b, const Entry *e, const ChunkId *content, const ChunkId *sub)
{
	int r = put_bytes(b, e->name, strlen(e->name));
	if (r == 0) r = put_uv(b, e->mode);
	if (r == 0) r = put_uv(b, e->uid);
	if (r == 0) r = put_uv(b, e->gid);
	if (r == 0) r = put_uv(b, zigzag(e->mtime_ns));
	if (r == 0) r = put_uv(b, e->size);
	if (r == 0) r = put_bytes(b, content ? content->b : NULL, content ? sizeof(content->b) : 0);
	if (r == 0) r = put_uv(b, e->target ? strlen(e->target) + 1 : 0);
	if (r == 0 && e->target) {
		r = buf_reserve(b, strlen(e->target));
		if (r == 0) {
			memcpy(b->p + b->len, e->target, strlen(e->target));
			b->len += strlen(e->target);
		}
	}
	if (r == 0) r = put_bytes(b, sub ? sub->b : NULL, sub ? sizeof(sub->b) : 0);
	return r;
}

/* A portable entry decoded in place; content and sub NULL when absent. */
typedef struct PEntry {
	const unsigned char *name, *target, *content, *sub;
	size_t name_len, target_len;
	bool has_target;
	uint64_t mode, uid, gid, mtime, size;
} PEntry;

static int hash_get(Cursor *c, const unsigned char **ret)
{
	size_t n;
	int r = get_bytes(c, ret, &n);
	if (r == 0 && n != 0 && n != PGBAKFS_CHUNK_ID_LEN)
		r = -EBADMSG;
	if (r == 0 && n == 0)
		*ret = NULL;
	return r;
}

static int pentry_get(Cursor *c, PEntry *e)
{
	int r = entry_head_get(c, &e->name, &e->name_len, &e->mode, &e->uid, &e->gid, &e->mtime,
			       &e->size);
	if (r == 0) r = hash_get(c, &e->content);
	if (r == 0) r = entry_target_get(c, &e->target, &e->target_len, &e->has_target);
	if (r == 0) r = hash_get(c, &e->sub);
	if (r == 0 && (e->mode > UINT32_MAX || e->uid > UINT32_MAX || e->gid > UINT32_MAX ||
		       e->size > INT64_MAX))
		r = -EBADMSG;
	return r;
}

/* directory row id -> portable hash, for one export (open addressing; ids start at 1) */
typedef struct HashMemo {
	int64_t *keys;
	ChunkId *vals;
	size_t n, cap;
} HashMemo;

static size_t memo_slot(const HashMemo *m, int64_t id)
{
	size_t j = ((uint64_t)id * 0x9E3779B97F4A7C15ull) & (m->cap - 1);
	while (m->keys[j] && m->keys[j] != id)
		j = (j + 1) & (m->cap - 1);
	return j;
}

static const ChunkId *memo_get(const HashMemo *m, int64_t id)
{
	if (!m->cap)
		return NULL;
	size_t j = memo_slot(m, id);
	return m->keys[j] ? &m->vals[j] : NULL;
}

static int memo_put(HashMemo *m, int64_t id, const ChunkId *h)
{
	if (2 * (m->n + 1) > m->cap) {
		HashMemo g = {.cap = m->cap ? 2 * m->cap : 256};
		g.keys = calloc(g.cap, sizeof(*g.keys));
		g.vals = malloc(g.cap * sizeof(*g.vals));
		if (!g.keys || !g.vals) {
			free(g.keys);
			free(g.vals);
			return -ENOMEM;
		}
		for (size_t i = 0; i < m->cap; i++) {
			if (!m->keys[i])
				continue;
			size_t j = memo_slot(&g, m->keys[i]);
			g.keys[j] = m->keys[i];
			g.vals[j] = m->vals[i];
		}
		g.n = m->n;
		free(m->keys);
		free(m->vals);
		*m = g;
	}
	size_t j = memo_slot(m, id);
	if (!m->keys[j]) {
		m->keys[j] = id;
		m->vals[j] = *h;
		m->n++;
	}
	return 0;
}

typedef struct Export {
	sqlite3 *db;
	sqlite3_stmt *sel, *content;
	int64_t snap;
	const CatalogTreeExport *x;
	HashMemo memo;
} Export;

/* A content's hash, and whether snap carries it. */
static int export_content_hash(Export *ex, int64_t id, ChunkId *ret, bool *ret_carried)
{
	sqlite3_reset(ex->content);
	sqlite3_bind_int64(ex->content, 1, id);
	int rc = sqlite3_step(ex->content), r = 0;
	if (rc != SQLITE_ROW)
		r = rc == SQLITE_DONE ? -EBADMSG : sqldb_fail(ex->db, rc, "content hash");
	else if (sqlite3_column_bytes(ex->content, 0) != PGBAKFS_CHUNK_ID_LEN)
		r = -EBADMSG;
	if (r == 0) {
		memcpy(ret->b, sqlite3_column_blob(ex->content, 0), sizeof(ret->b));
		/* no carrier yet (assigned at the manifest sync): carried by every user, so it is
		 * in some manifest whatever happens first */
		*ret_carried = sqlite3_column_type(ex->content, 1) == SQLITE_NULL ||
			       sqlite3_column_int64(ex->content, 1) == ex->snap;
	}
	sqlite3_reset(ex->content);
	return r;
}

static int export_row(Export *ex, int64_t id, int want, unsigned depth, ChunkId *ret);

/* Entries (format 1 encoding) in portable form after b's format byte. */
static int export_entries(Export *ex, const unsigned char *v, size_t len, uint64_t n,
			  unsigned depth, Buf *b)
{
	Cursor cur = {v, v + len};
	int r = 0;
	for (uint64_t i = 0; r == 0 && i < n; i++) {
		RawEntry re;
		ChunkId ch, sh;
		bool carried = false;
		r = entry_get(&cur, &re);
		if (r == 0 && re.content)
			r = export_content_hash(ex, (int64_t)re.content, &ch, &carried);
		if (r == 0 && carried)
			r = ex->x->content((int64_t)re.content, ex->x->ud);
		if (r == 0 && re.sub)
			r = export_row(ex, (int64_t)re.sub, WANT_DIR, depth + 1, &sh);
		if (r == 0) {
			_cleanup_free_ char *name = strndup((const char *)re.name, re.name_len);
			_cleanup_free_ char *target =
				re.has_target ? strndup((const char *)re.target, re.target_len) : NULL;
			Entry e = {.name = name, .target = target, .mode = (uint32_t)re.mode,
				   .uid = (uint32_t)re.uid, .gid = (uint32_t)re.gid,
				   .mtime_ns = unzigzag(re.mtime), .size = re.size};
			r = !name || (re.has_target && !target)
				    ? -ENOMEM
				    : pentry_put(b, &e, re.content ? &ch : NULL, re.sub ? &sh : NULL);
		}
	}
	if (r == 0 && cur.p != cur.end)
		r = -EBADMSG;
	return r;
}

/* A list's elements (want: what they may be) by their portable hashes, after b's format byte. */
static int export_list(Export *ex, const unsigned char *v, size_t len, int want, unsigned depth,
		       Buf *b)
{
	Cursor cur = {v, v + len};
	int64_t block = 0;
	int r = len ? 0 : -EBADMSG;
	while (r == 0 && (r = list_next(&cur, &block)) == 0 && block) {
		ChunkId bh;
		r = export_row(ex, block, want, depth, &bh);
		if (r == 0)
			r = buf_reserve(b, sizeof(bh.b));
		if (r == 0) {
			memcpy(b->p + b->len, bh.b, sizeof(bh.b));
			b->len += sizeof(bh.b);
		}
	}
	return r;
}

/*
 * A directory (WANT_DIR: its one row or its list), an element of a list
 * (WANT_PART: a block or a sublist of blocks) or a block (WANT_BLOCK)
 * in portable form: *ret its portable hash; given to dir() when snap
 * carries it. Each row once per export.
 */
static int export_row(Export *ex, int64_t id, int want, unsigned depth, ChunkId *ret)
{
	_cleanup_free_ unsigned char *v = NULL;
	const ChunkId *known = memo_get(&ex->memo, id);
	Buf b = {0};
	size_t len;
	uint64_t n;
	int64_t carrier = 0;
	int format, r;

	if (known) {
		*ret = *known;
		return 0;
	}
	if (depth > MAX_DEPTH)
		return -EBADMSG;
	r = row_get(ex->db, ex->sel, id, &format, &v, &len, &n, &carrier);
	if (r == 0 && !(format == DIR_FORMAT_LIST ? want != WANT_BLOCK
				: format == DIR_FORMAT ? want == WANT_DIR : want != WANT_DIR))
		r = -EBADMSG;
	if (r < 0)
		return r;
	r = buf_start(&b, format == DIR_FORMAT_LIST    ? PDIR_FORMAT_LIST
			  : format == DIR_FORMAT_BLOCK ? PDIR_FORMAT_BLOCK
						       : PDIR_FORMAT);
	if (r == 0 && format == DIR_FORMAT_LIST)
		r = export_list(ex, v, len, want == WANT_DIR ? WANT_PART : WANT_BLOCK, depth, &b);
	else if (r == 0)
		r = export_entries(ex, v, len, n, depth, &b);
	if (r == 0) {
		chunk_hash(b.p, b.len, ret);
		if (carrier == ex->snap || carrier == 0) /* 0: none yet, as for contents */
			r = ex->x->dir(ret, n, b.p, b.len, ex->x->ud);
	}
	if (r == 0)
		r = memo_put(&ex->memo, id, ret);
	free(b.p);
	return r;
}

int catalog_tree_export(Catalog *c, int64_t forest, int64_t snap, const CatalogTreeExport *x,
			ChunkId *ret_forest)
{
	Export ex = {.db = catalog_sqlite(c), .snap = snap, .x = x};
	int r = sqldb_prepare(ex.db, "SELECT hash, n, entries, carrier FROM dirs WHERE id = ?1", &ex.sel);
	if (r == 0)
		r = sqldb_prepare(ex.db, "SELECT hash, carrier FROM contents WHERE id = ?1", &ex.content);
	if (r == 0)
		r = export_row(&ex, forest, WANT_DIR, 0, ret_forest);
	sqlite3_finalize(ex.sel);
	sqlite3_finalize(ex.content);
	free(ex.memo.keys);
	free(ex.memo.vals);
	return r;
}

/*
 * Import: the portable directories of the manifests read so far wait in
 * temp.manifest_dirs (this connection only), with the row each became once
 * translated (local), so a directory shared by many snapshots is
 * translated once.
 */
#define STAGE_SQL                                                                         \
	"CREATE TEMP TABLE IF NOT EXISTS manifest_dirs(phash BLOB PRIMARY KEY,"              \
	" n INTEGER NOT NULL, entries BLOB NOT NULL, local INTEGER) WITHOUT ROWID"

int catalog_tree_stage(Catalog *c, const ChunkId *phash, uint64_t n, const void *bytes,
		       size_t len)
{
	sqlite3 *db = catalog_sqlite(c);
	sqlite3_stmt *s = NULL;
	ChunkId got;
	int r;

	chunk_hash(bytes, len, &got);
	if (len < 1 || ((const unsigned char *)bytes)[0] < PDIR_FORMAT ||
	    ((const unsigned char *)bytes)[0] > PDIR_FORMAT_BLOCK ||
	    memcmp(got.b, phash->b, sizeof(got.b)) != 0 || n > INT64_MAX)
		return -EBADMSG;
	r = sqldb_exec(db, STAGE_SQL);
	if (r == 0)
		r = sqldb_prepare(db, "INSERT OR IGNORE INTO temp.manifest_dirs(phash, n, entries)"
				    " VALUES(?1, ?2, ?3)", &s);
	if (r == 0) {
		sqlite3_bind_blob(s, 1, phash->b, sizeof(phash->b), SQLITE_STATIC);
		sqlite3_bind_int64(s, 2, (int64_t)n);
		sqlite3_bind_blob64(s, 3, bytes, len, SQLITE_STATIC);
		int rc = sqlite3_step(s);
		r = rc == SQLITE_DONE ? 0 : sqldb_fail(db, rc, "stage directory");
	}
	sqlite3_finalize(s);
	return r;
}

typedef struct Import {
	Catalog *c;
	sqlite3 *db;
	sqlite3_stmt *get, *local, *content, *ins, *sel, *rows;
	size_t missing;
} Import;

static void entry_clear(Entry *e)
{
	free(e->name);
	free(e->target);
}

static int import_row(Import *im, const ChunkId *ph, int want, unsigned depth, int64_t *ret);

/* One portable entry as a catalog entry: its content and subdirectory found or made. */
static int import_entry(Import *im, const PEntry *pe, unsigned depth, Entry *e)
{
	*e = (Entry){.mode = (uint32_t)pe->mode, .uid = (uint32_t)pe->uid, .gid = (uint32_t)pe->gid,
		     .mtime_ns = unzigzag(pe->mtime), .size = pe->size};
	e->name = strndup((const char *)pe->name, pe->name_len);
	e->target = pe->has_target ? strndup((const char *)pe->target, pe->target_len) : NULL;
	if (!e->name || (pe->has_target && !e->target))
		return -ENOMEM;
	if (strlen(e->name) != pe->name_len || (e->target && strlen(e->target) != pe->target_len))
		return -EBADMSG;
	if (pe->content) {
		ChunkId h;
		size_t missing = 0;
		memcpy(h.b, pe->content, sizeof(h.b));
		/* no manifest carried it: a placeholder that reads as damaged */
		int r = catalog_content_find_or_missing(im->c, &h, &e->content, &missing);
		im->missing += missing;
		if (r < 0)
			return r;
	}
	if (pe->sub) {
		ChunkId h;
		memcpy(h.b, pe->sub, sizeof(h.b));
		return import_row(im, &h, WANT_DIR, depth + 1, &e->sub);
	}
	return 0;
}

/* Portable entries as a row of format (a directory's or a block's); *ret its row. */
static int import_entries(Import *im, const unsigned char *p, size_t len, uint64_t n,
			  int format, unsigned depth, int64_t *ret)
{
	Cursor cur = {p, p + len};
	Buf b = {0};
	Entry prev = {0};
	int r = buf_start(&b, (unsigned char)format);
	if (r < 0)
		return r;
	for (uint64_t i = 0; r == 0 && i < n; i++) {
		PEntry pe;
		Entry e = {0};
		r = pentry_get(&cur, &pe);
		if (r == 0)
			r = import_entry(im, &pe, depth, &e);
		/* in name order, each name once: as catalog_tree_share writes them */
		if (r == 0 && i > 0 && strcmp(prev.name, e.name) >= 0)
			r = -EBADMSG;
		if (r == 0)
			r = entry_put(&b, &e);
		entry_clear(&prev);
		prev = e;
	}
	entry_clear(&prev);
	if (r == 0 && cur.p != cur.end)
		r = -EBADMSG;
	if (r == 0)
		r = dir_put(im->db, im->ins, im->sel, &b, n, ret);
	free(b.p);
	return r;
}

/* Whether entries (format 1 encoding) are in name order, each name once. */
static int entries_sorted(const unsigned char *v, size_t len, uint64_t n)
{
	Cursor cur = {v, v + len};
	RawEntry prev = {0};
	for (uint64_t i = 0; i < n; i++) {
		RawEntry re;
		int r = entry_get(&cur, &re);
		if (r < 0)
			return r;
		if (i > 0) {
			size_t m = prev.name_len < re.name_len ? prev.name_len : re.name_len;
			int c = memcmp(prev.name, re.name, m);
			if (c > 0 || (c == 0 && prev.name_len >= re.name_len))
				return -EBADMSG;
		}
		prev = re;
	}
	return cur.p == cur.end ? 0 : -EBADMSG;
}

/* A portable list: its elements (want: what they may be) found or made, then the list's row. */
static int import_list(Import *im, const unsigned char *p, size_t len, uint64_t n, int want,
		       unsigned depth, int64_t *ret)
{
	_cleanup_free_ unsigned char *all = NULL;
	size_t missing = im->missing, all_len;
	uint64_t all_n;
	Buf b = {0};
	int r = len == 0 || len % PGBAKFS_CHUNK_ID_LEN ? -EBADMSG : buf_start(&b, DIR_FORMAT_LIST);
	for (size_t i = 0; r == 0 && i < len; i += PGBAKFS_CHUNK_ID_LEN) {
		ChunkId h;
		int64_t id;
		memcpy(h.b, p + i, sizeof(h.b));
		r = import_row(im, &h, want, depth, &id);
		if (r == 0)
			r = put_uv(&b, (uint64_t)id);
	}
	if (r == 0)
		r = dir_put(im->db, im->ins, im->sel, &b, n, ret);
	free(b.p);
	/* a directory's list whole, its blocks must add up to it, in name order across them
	 * too; not whole, it reads as damaged (the caller marks the snapshot failed) */
	if (r == 0 && im->missing == missing && want == WANT_PART)
		r = dir_get(im->db, im->rows, *ret, &all, &all_len, &all_n);
	if (r == 0 && im->missing == missing && want == WANT_PART)
		r = entries_sorted(all, all_len, all_n);
	return r;
}

/*
 * A staged portable row as a catalog row: a directory (WANT_DIR: one row
 * or a list), an element of a directory's list (WANT_PART: a block or a
 * sublist of blocks) or a block (WANT_BLOCK).
 */
static int import_row(Import *im, const ChunkId *ph, int want, unsigned depth, int64_t *ret)
{
	_cleanup_free_ unsigned char *v = NULL;
	size_t len = 0;
	uint64_t n = 0;
	int rc, r;

	if (depth > MAX_DEPTH)
		return -EBADMSG;
	sqlite3_reset(im->get);
	sqlite3_bind_blob(im->get, 1, ph->b, sizeof(ph->b), SQLITE_STATIC);
	rc = sqlite3_step(im->get);
	if (rc == SQLITE_ROW && sqlite3_column_type(im->get, 2) == SQLITE_INTEGER) {
		*ret = sqlite3_column_int64(im->get, 2);
		sqlite3_reset(im->get);
		return 0;
	}
	if (rc == SQLITE_ROW) {
		/* a copy: the statement is stepped again for the subdirectories */
		len = (size_t)sqlite3_column_bytes(im->get, 1);
		n = (uint64_t)sqlite3_column_int64(im->get, 0);
		v = malloc(len ? len : 1);
		if (v && len)
			memcpy(v, sqlite3_column_blob(im->get, 1), len);
	}
	sqlite3_reset(im->get);
	if (rc == SQLITE_DONE) {
		/* no manifest carried it: an empty directory in its place, or an empty block,
		 * which reads as damaged (the caller marks the snapshot failed) */
		Buf b = {0};
		im->missing++;
		r = buf_start(&b, want == WANT_DIR ? DIR_FORMAT : DIR_FORMAT_BLOCK);
		if (r == 0)
			r = dir_put(im->db, im->ins, im->sel, &b, 0, ret);
		free(b.p);
		return r;
	}
	if (rc != SQLITE_ROW)
		return sqldb_fail(im->db, rc, "staged directory");
	if (!v)
		return -ENOMEM;
	size_t missing = im->missing;
	if (len >= 1 && v[0] == PDIR_FORMAT && want == WANT_DIR)
		r = import_entries(im, v + 1, len - 1, n, DIR_FORMAT, depth, ret);
	else if (len >= 1 && v[0] == PDIR_FORMAT_BLOCK && want != WANT_DIR)
		r = import_entries(im, v + 1, len - 1, n, DIR_FORMAT_BLOCK, depth, ret);
	else if (len >= 1 && v[0] == PDIR_FORMAT_LIST && want != WANT_BLOCK)
		r = import_list(im, v + 1, len - 1, n, want == WANT_DIR ? WANT_PART : WANT_BLOCK,
				depth, ret);
	else
		r = -EBADMSG;
	/* remembered only when whole: every snapshot naming a hollow one must count what it lacks */
	if (r == 0 && im->missing == missing) {
		sqlite3_reset(im->local);
		sqlite3_bind_blob(im->local, 1, ph->b, sizeof(ph->b), SQLITE_STATIC);
		sqlite3_bind_int64(im->local, 2, *ret);
		rc = sqlite3_step(im->local);
		sqlite3_reset(im->local);
		r = rc == SQLITE_DONE ? 0 : sqldb_fail(im->db, rc, "staged directory");
	}
	return r;
}

int catalog_tree_import(Catalog *c, const ChunkId *forest, int64_t *ret_forest,
			size_t *ret_missing)
{
	Import im = {.c = c, .db = catalog_sqlite(c)};
	int r = sqldb_exec(im.db, STAGE_SQL);
	if (r == 0)
		r = sqldb_prepare(im.db, "SELECT n, entries, local FROM temp.manifest_dirs WHERE phash = ?1",
				&im.get);
	if (r == 0)
		r = sqldb_prepare(im.db, "UPDATE temp.manifest_dirs SET local = ?2 WHERE phash = ?1",
				&im.local);
	if (r == 0)
		r = sqldb_prepare(im.db, "INSERT OR IGNORE INTO dirs(hash, n, entries) VALUES(?1, ?2, ?3)",
				&im.ins);
	if (r == 0)
		r = sqldb_prepare(im.db, "SELECT id FROM dirs WHERE hash = ?1", &im.sel);
	if (r == 0)
		r = sqldb_prepare(im.db, "SELECT hash, n, entries FROM dirs WHERE id = ?1", &im.rows);
	if (r == 0)
		r = import_row(&im, forest, WANT_DIR, 0, ret_forest);
	sqlite3_finalize(im.get);
	sqlite3_finalize(im.local);
	sqlite3_finalize(im.ins);
	sqlite3_finalize(im.sel);
	sqlite3_finalize(im.rows);
	if (r == 0)
		*ret_missing = im.missing;
	return r;
}

int catalog_tree_carry(Catalog *c, const ChunkId *phash, int64_t snap)
{
	sqlite3 *db = catalog_sqlite(c);
	sqlite3_stmt *s = NULL;
	int r = sqldb_prepare(db, "UPDATE dirs SET carrier = ?2 WHERE carrier IS NULL AND id ="
				" (SELECT local FROM temp.manifest_dirs WHERE phash = ?1)", &s);
	if (r == 0) {
		sqlite3_bind_blob(s, 1, phash->b, sizeof(phash->b), SQLITE_STATIC);
		sqlite3_bind_int64(s, 2, snap);
		int rc = sqlite3_step(s);
		r = rc == SQLITE_DONE ? 0 : sqldb_fail(db, rc, "directory carrier");
	}
	sqlite3_finalize(s);
	return r;
}
