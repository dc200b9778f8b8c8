/*
 * Copy-on-write clone of one snapshot (the contract is in fs/clone.h).
 *
 * The namespace lives in clone.db; the data of an inode that has been opened
 * lives in a CloneNode shared by all its handles: the upper file descriptor,
 * the copy-up map, the size and the data times. The node is the truth while it
 * exists; the inode row catches up on fsync, on the last release and on close.
 *
 * Locks, always taken in this order:
 *   CloneNode.sync  serializes flushes of one inode, so that an older map can
 *                   never overwrite a newer one on disk
 *   Clone.space     (rwlock) read-held by every data write and copy-up,
 *                   write-held by a flush that spends its room on a full disk
 *   Clone.lock      the database and its statements, the node table, next_ino,
 *                   CloneNode.n_ref, .orphan and .files
 *   CloneNode.lock  everything else in a CloneNode (fd, map, size, times)
 *   Clone.reserve   the flush reserve file and its size
 * No lock is held while calling lower_read: a copy-up reads the lower chunk
 * first, then checks again under CloneNode.lock that nobody copied it up in the
 * meantime. Data reads take only their inode's CloneNode.lock; data writes
 * take Clone.space (read) first.
 *
 * Room for flushes. A flush writes the map and the inode row besides the
 * data, and a full disk must not fail it once write(2) said yes (PostgreSQL
 * panics when fsync fails). So the write that dirties a node pays up front:
 * the map file is created at its full length then, and the node takes a
 * charge of FLUSH_CHARGE bytes, enough for the row update in clone.db's WAL,
 * by growing the flush reserve file. A write that cannot do either fails with
 * ENOSPC before changing anything. A flush that meets ENOSPC gives its
 * node's charge back to the disk and tries once more, under Clone.space
 * (write) and with Clone.lock held from the release to the row update, so
 * that no data write and no namespace change takes the room first. A node
 * gives its charge back once flushed clean, or when it goes.
 *
 * Crash safety rests on these orderings:
 *  - map entries reach the disk only after an fdatasync of the upper file that
 *    covers the chunks they mark (node_persist);
 *  - a chunk whose map entry is 0 reads the lower bytes up to lower_limit and
 *    zeros after it, so a lost map entry loses only unsynced writes;
 *  - a shrinking truncate commits the row before cutting the upper file, and
 *    node_load cuts an upper file longer than its row's size, so bytes beyond a
 *    truncation never come back;
 *  - an inode's upper files are unlinked before its row is deleted; rows left
 *    with nlink 0 by a crash are removed by clone_open;
 *  - a map file is created (all zeros, every chunk lower) by the first write
 *    that will set an entry, and its name made durable by the first flush
 *    that writes an entry into it.
 */
#include "fs/clone.h"
#include "common/log.h"
#include "common/util.h"
#include "store/sqldb.h"

#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define CLONE_FORMAT 1
#define CLONE_BUSY_TIMEOUT_MS 120000
#define CLONE_ROOT_INO 1u
#define CLONE_NAME_MAX 255
#define CLONE_NODE_BUCKETS 256
#define CLONE_READDIR_BATCH 64
#define CLONE_MAX_DEPTH 100000 /* guards the ancestor walk against a damaged tree */
#define FLUSH_RESERVE_NAME "reserve.flush"
/*
 * Room for one flush's row update: the WAL frames of the pages an UPDATE of
 * one row touches, a leaf split and its parents included (about 10 pages of
 * 4 KiB, each with its 24-byte frame header), rounded up.
 */
#define FLUSH_CHARGE (64 * 1024)

static const char schema_sql[] =
	"CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS inodes(ino INTEGER PRIMARY KEY, mode INTEGER NOT NULL,"
	"  uid INTEGER NOT NULL, gid INTEGER NOT NULL, nlink INTEGER NOT NULL,"
	"  size INTEGER NOT NULL, atime INTEGER NOT NULL, mtime INTEGER NOT NULL,"
	"  ctime INTEGER NOT NULL, lower_ino INTEGER NOT NULL, lower_limit INTEGER NOT NULL,"
	"  target TEXT);"
	/*
	 * cur is the readdir cursor. AUTOINCREMENT never hands out a value twice,
	 * and rename updates the row in place, so a listing resumed after cur
	 * neither repeats nor skips an entry that stayed put.
	 */
	"CREATE TABLE IF NOT EXISTS dirents(cur INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  parent INTEGER NOT NULL, name TEXT NOT NULL, ino INTEGER NOT NULL,"
	"  UNIQUE(parent, name));"
	"CREATE INDEX IF NOT EXISTS dirents_list ON dirents(parent, cur);"
	"CREATE INDEX IF NOT EXISTS dirents_ino ON dirents(ino);";

/* 61440 = S_IFMT, 16384 = S_IFDIR: a directory links to itself, its parent and each subdirectory */
static const char seed_dir_nlink_sql[] =
	"UPDATE inodes SET nlink = 2 + (SELECT count(*) FROM dirents d JOIN inodes s"
	"  ON s.ino = d.ino WHERE d.parent = inodes.ino AND (s.mode & 61440) = 16384)"
	" WHERE (mode & 61440) = 16384";

#define INODE_COLS \
	"i.ino, i.mode, i.uid, i.gid, i.nlink, i.size, i.atime, i.mtime, i.ctime, i.lower_ino," \
	" i.lower_limit"

enum {
	ST_META_GET,
	ST_META_SET,
	ST_INODE_GET,
	ST_INODE_ADD,
	ST_INODE_DEL,
	ST_INODE_TARGET,
	ST_INODE_LINKS,
	ST_INODE_DIR_CHANGED,
	ST_INODE_SET_DATA,
	ST_INODE_SET_ATTR,
	ST_INODE_ORPHAN,
	ST_DIRENT_LOOKUP,
	ST_DIRENT_PARENT,
	ST_DIRENT_ANY,
	ST_DIRENT_LIST,
	ST_DIRENT_ADD,
	ST_DIRENT_DEL,
	ST_DIRENT_MOVE,
	N_STATEMENTS
};

static const char *const statement_sql[N_STATEMENTS] = {
	[ST_META_GET] = "SELECT value FROM meta WHERE key = ?1",
	[ST_META_SET] = "INSERT OR REPLACE INTO meta(key, value) VALUES(?1, ?2)",
	[ST_INODE_GET] = "SELECT " INODE_COLS " FROM inodes i WHERE i.ino = ?1",
	[ST_INODE_ADD] = "INSERT INTO inodes(ino, mode, uid, gid, nlink, size, atime, mtime, ctime,"
			 " lower_ino, lower_limit, target)"
			 " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
	[ST_INODE_DEL] = "DELETE FROM inodes WHERE ino = ?1",
	[ST_INODE_TARGET] = "SELECT target FROM inodes WHERE ino = ?1",
	[ST_INODE_LINKS] = "UPDATE inodes SET nlink = nlink + ?2, ctime = ?3 WHERE ino = ?1",
	[ST_INODE_DIR_CHANGED] = "UPDATE inodes SET nlink = nlink + ?2, mtime = ?3, ctime = ?3"
				 " WHERE ino = ?1",
	[ST_INODE_SET_DATA] = "UPDATE inodes SET size = ?2, lower_limit = ?3, mtime = ?4,"
			      " ctime = ?5 WHERE ino = ?1",
	[ST_INODE_SET_ATTR] = "UPDATE inodes SET mode = ?2, uid = ?3, gid = ?4, atime = ?5,"
			      " mtime = ?6, ctime = ?7 WHERE ino = ?1",
	[ST_INODE_ORPHAN] = "SELECT ino FROM inodes WHERE nlink = ?1 LIMIT 1",
	[ST_DIRENT_LOOKUP] = "SELECT ino FROM dirents WHERE parent = ?1 AND name = ?2",
	[ST_DIRENT_PARENT] = "SELECT parent FROM dirents WHERE ino = ?1 LIMIT 1",
	[ST_DIRENT_ANY] = "SELECT 1 FROM dirents WHERE parent = ?1 LIMIT 1",
	[ST_DIRENT_LIST] = "SELECT d.cur, d.name, " INODE_COLS " FROM dirents d"
			   " JOIN inodes i ON i.ino = d.ino WHERE d.parent = ?1 AND d.cur > ?2"
			   " ORDER BY d.cur LIMIT ?3",
	[ST_DIRENT_ADD] = "INSERT INTO dirents(parent, ino, name) VALUES(?1, ?2, ?3)",
	[ST_DIRENT_DEL] = "DELETE FROM dirents WHERE parent = ?1 AND name = ?2",
	[ST_DIRENT_MOVE] = "UPDATE dirents SET parent = ?2, name = ?4"
			   " WHERE parent = ?1 AND name = ?3",
};

typedef struct InodeRow {
	uint32_t ino, mode, uid, gid, nlink, lower_ino;
	uint64_t size, lower_limit;
	int64_t atime, mtime, ctime;
} InodeRow;

typedef struct CloneNode {
	Clone *clone;
	uint32_t ino;
	struct CloneNode *next; /* bucket chain; Clone.lock */
	CloneFile *files;       /* handles; Clone.lock */
	unsigned n_ref;         /* handles and transient users; Clone.lock */
	bool orphan;            /* last link gone: removed with its last reference; Clone.lock */
	bool map_on_disk;       /* upper/INO.map exists; CloneNode.sync */
	pthread_mutex_t sync;
	pthread_mutex_t lock;
	/* CloneNode.lock: */
	int fd; /* upper/INO, -1 until the first write */
	uint8_t *map;
	size_t n_map; /* chunks below the lower_limit the node was loaded with */
	bool map_dirty;
	bool map_ready; /* upper/INO.map allocated at its full length */
	bool charged;   /* holds FLUSH_CHARGE of the flush reserve */
	uint32_t lower_ino;
	uint64_t size, lower_limit;
	int64_t mtime_ns, ctime_ns;
	uint64_t gen, clean_gen; /* changes made / changes in the row */
} CloneNode;

struct CloneFile {
	CloneNode *node;
	int flags;
	CloneFile *prev, *next; /* Clone.lock */
};

struct Clone {
	pthread_rwlock_t space;
	pthread_mutex_t lock;
	pthread_mutex_t reserve;
	int flush_fd;        /* the flush reserve file, -1 until opened; Clone.reserve */
	uint64_t flush_size; /* its allocated length: FLUSH_CHARGE per charged node; Clone.reserve */
	sqlite3 *db;
	SqldbCache *stmts; /* statement_sql by ST_ */
	int dir_fd, upper_fd;
	uint64_t chunk_size;
	CloneLowerRead lower_read;
	void *userdata;
	uint32_t next_ino;
	bool have_reserve;
	bool fresh; /* seeded by this clone_open */
	CloneNode *nodes[CLONE_NODE_BUCKETS];
};

/* ---- SQLite ------------------------------------------------------------ */

static int db_fail(Clone *c, int rc, const char *what) { return sqldb_fail(c->db, rc, what); }

static int exec_sql(Clone *c, const char *sql) { return sqldb_exec(c->db, sql); }

static sqlite3_stmt *stmt_get(Clone *c, int which, int *ret_r)
{
	sqlite3_stmt *s = NULL;
	*ret_r = sqldb_cache_get(c->stmts, (size_t)which, statement_sql[which], &s);
	return s;
}

static int step_done(Clone *c, sqlite3_stmt *s) { return sqldb_step_done(c->db, s); }

/* Step a query expected to give at most one row: 0 with the row, -ENOENT without. */
static int step_row(Clone *c, sqlite3_stmt *s) { return sqldb_step_row(c->db, s); }

static int txn_begin(Clone *c) { return sqldb_begin(c->db, true); }

/* Commit when r is 0, else (or when the commit fails) roll back; returns the outcome. */
static int txn_end(Clone *c, int r) { return sqldb_end(c->db, r); }

/*
 * Bind integers to ?1, ?2, ... of a cached statement; text, if any, goes to
 * ?text_at. SQLITE_STATIC: the step that follows is the only reader, and the
 * next stmt_get clears the bindings.
 */
static sqlite3_stmt *stmt_bind(Clone *c, int which, const int64_t *v, size_t n, int text_at,
			       const char *text, int *ret_r)
{
	sqlite3_stmt *s = stmt_get(c, which, ret_r);
	for (size_t i = 0; s && i < n; i++)
		sqlite3_bind_int64(s, (int)i + 1, v[i]);
	if (s && text)
		sqlite3_bind_text(s, text_at, text, -1, SQLITE_STATIC);
	return s;
}

/* Run a statement that returns no row. */
static int stmt_exec(Clone *c, int which, const int64_t *v, size_t n, int text_at,
		     const char *text)
{
	int r;
	sqlite3_stmt *s = stmt_bind(c, which, v, n, text_at, text, &r);
	return s ? step_done(c, s) : r;
}

#define INTS(...) ((const int64_t[]){__VA_ARGS__}), ELEMENTSOF(((const int64_t[]){__VA_ARGS__}))
#define STMT_EXEC(c, which, ...) stmt_exec(c, which, INTS(__VA_ARGS__), 0, NULL)

/* Run a query for one integer: 0 and the first column of the first row, or -ENOENT. */
static int stmt_query(Clone *c, int which, int64_t a, const char *text, int64_t *ret)
{
	int r;
	sqlite3_stmt *s = stmt_bind(c, which, &a, 1, 2, text, &r);
	if (!s)
		return r;
	r = step_row(c, s);
	if (r < 0)
		return r;
	*ret = sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	return 0;
}

static int meta_set(Clone *c, const char *key, const char *text, int64_t value)
{
	int r;
	sqlite3_stmt *s = stmt_get(c, ST_META_SET, &r);
	if (!s)
		return r;
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	if (text)
		sqlite3_bind_text(s, 2, text, -1, SQLITE_STATIC);
	else
		sqlite3_bind_int64(s, 2, value);
	return step_done(c, s);
}

/* An integer meta value, or with expect, whether the text value equals it (1 or 0). */
static int meta_get(Clone *c, const char *key, const char *expect, int64_t *ret)
{
	int r;
	sqlite3_stmt *s = stmt_get(c, ST_META_GET, &r);
	if (!s)
		return r;
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	r = step_row(c, s);
	if (r < 0)
		return r;
	if (expect) {
		const unsigned char *t = sqlite3_column_text(s, 0);
		*ret = t && strcmp((const char *)t, expect) == 0;
	} else {
		*ret = sqlite3_column_int64(s, 0);
	}
	sqlite3_reset(s);
	return 0;
}

/* ---- inode rows and directory entries (Clone.lock held) ------------------ */

static void row_read(sqlite3_stmt *s, int i, InodeRow *ret)
{
	*ret = (InodeRow){
		.ino = (uint32_t)sqlite3_column_int64(s, i),
		.mode = (uint32_t)sqlite3_column_int64(s, i + 1),
		.uid = (uint32_t)sqlite3_column_int64(s, i + 2),
		.gid = (uint32_t)sqlite3_column_int64(s, i + 3),
		.nlink = (uint32_t)sqlite3_column_int64(s, i + 4),
		.size = (uint64_t)sqlite3_column_int64(s, i + 5),
		.atime = sqlite3_column_int64(s, i + 6),
		.mtime = sqlite3_column_int64(s, i + 7),
		.ctime = sqlite3_column_int64(s, i + 8),
		.lower_ino = (uint32_t)sqlite3_column_int64(s, i + 9),
		.lower_limit = (uint64_t)sqlite3_column_int64(s, i + 10),
	};
}

static int inode_get(Clone *c, uint32_t ino, InodeRow *ret)
{
	int r;
	sqlite3_stmt *s = stmt_get(c, ST_INODE_GET, &r);
	if (!s)
		return r;
	sqlite3_bind_int64(s, 1, ino);
	r = step_row(c, s);
	if (r < 0)
		return r;
	row_read(s, 0, ret);
	sqlite3_reset(s);
	return 0;
}

static int inode_insert(Clone *c, const InodeRow *r, const char *target)
{
	return stmt_exec(c, ST_INODE_ADD,
			 INTS(r->ino, r->mode, r->uid, r->gid, r->nlink, (int64_t)r->size, r->atime,
			      r->mtime, r->ctime, r->lower_ino, (int64_t)r->lower_limit),
			 12, target);
}

static int inode_set_data(Clone *c, uint32_t ino, uint64_t size, uint64_t limit, int64_t mtime,
			  int64_t ctime)
{
	return STMT_EXEC(c, ST_INODE_SET_DATA, ino, (int64_t)size, (int64_t)limit, mtime, ctime);
}

static int inode_set_attr(Clone *c, const InodeRow *r)
{
	return STMT_EXEC(c, ST_INODE_SET_ATTR, r->ino, r->mode, r->uid, r->gid, r->atime, r->mtime,
			 r->ctime);
}

static int inode_delete(Clone *c, uint32_t ino) { return STMT_EXEC(c, ST_INODE_DEL, ino); }

/* A file's link count moves by delta; its ctime becomes now. */
static int inode_links(Clone *c, uint32_t ino, int delta, int64_t now)
{
	return STMT_EXEC(c, ST_INODE_LINKS, ino, delta, now);
}

/* A directory's entries changed: mtime and ctime become now, nlink moves by delta. */
static int dir_changed(Clone *c, uint32_t dir, int delta, int64_t now)
{
	return STMT_EXEC(c, ST_INODE_DIR_CHANGED, dir, delta, now);
}

static int dir_get(Clone *c, uint32_t ino, InodeRow *ret)
{
	int r = inode_get(c, ino, ret);
	if (r == 0 && !S_ISDIR(ret->mode))
		r = -ENOTDIR;
	return r;
}

static int dirent_lookup(Clone *c, uint32_t parent, const char *name, uint32_t *ret)
{
	int64_t v = 0;
	int r = stmt_query(c, ST_DIRENT_LOOKUP, parent, name, &v);
	if (r == 0)
		*ret = (uint32_t)v;
	return r;
}

/* A name longer than NAME_MAX can be neither found nor made: -ENAMETOOLONG. */
static int name_check_length(const char *name)
{
	return strnlen(name, CLONE_NAME_MAX + 1) > CLONE_NAME_MAX ? -ENAMETOOLONG : 0;
}

/* The inode behind parent/name, parent being a directory. */
static int entry_get(Clone *c, uint32_t parent, const char *name, InodeRow *ret)
{
	uint32_t ino = 0;
	int r = name_check_length(name);
	if (r == 0)
		r = dir_get(c, parent, ret);
	if (r == 0)
		r = dirent_lookup(c, parent, name, &ino);
	if (r == 0)
		r = inode_get(c, ino, ret);
	return r;
}

static int dirent_parent(Clone *c, uint32_t ino, uint32_t *ret)
{
	int64_t v = 0;
	int r = stmt_query(c, ST_DIRENT_PARENT, ino, NULL, &v);
	if (r == 0)
		*ret = (uint32_t)v;
	return r;
}

/* 1 if dir has entries, 0 if not. */
static int dir_has_entries(Clone *c, uint32_t dir)
{
	int64_t v;
	int r = stmt_query(c, ST_DIRENT_ANY, dir, NULL, &v);
	return r == 0 ? 1 : r == -ENOENT ? 0 : r;
}

static int dirent_add(Clone *c, uint32_t parent, const char *name, uint32_t ino)
{
	return stmt_exec(c, ST_DIRENT_ADD, INTS(parent, ino), 3, name);
}

static int dirent_delete(Clone *c, uint32_t parent, const char *name)
{
	return stmt_exec(c, ST_DIRENT_DEL, INTS(parent), 2, name);
}

static int dirent_move(Clone *c, uint32_t parent, const char *name, uint32_t newparent,
		       const char *newname)
{
	int r;
	sqlite3_stmt *s = stmt_bind(c, ST_DIRENT_MOVE, INTS(parent, newparent), 3, name, &r);
	if (!s)
		return r;
	sqlite3_bind_text(s, 4, newname, -1, SQLITE_STATIC);
	return step_done(c, s);
}

static int name_check(const char *name)
{
	int r = name_check_length(name);
	if (r == 0 && (!*name || strchr(name, '/') || strcmp(name, ".") == 0 ||
		       strcmp(name, "..") == 0))
		r = -EINVAL;
	return r;
}

/* ---- the flush reserve (Clone.reserve) ------------------------------------ */

/* Set aside FLUSH_CHARGE more bytes of the scratch disk; -ENOSPC when it is full. */
static int flush_reserve_grow(Clone *c)
{
	int r = 0;
	pthread_mutex_lock(&c->reserve);
	if (c->flush_fd < 0) {
		c->flush_fd = openat(c->dir_fd, FLUSH_RESERVE_NAME, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (c->flush_fd < 0)
			r = -errno;
	}
	if (r == 0)
		r = -posix_fallocate(c->flush_fd, (off_t)c->flush_size, FLUSH_CHARGE);
	if (r == 0)
		c->flush_size += FLUSH_CHARGE;
	else if (c->flush_fd >= 0 && ftruncate(c->flush_fd, (off_t)c->flush_size) < 0)
		log_debug("clone: could not trim the flush reserve: %m");
	pthread_mutex_unlock(&c->reserve);
	return r;
}

/* Give FLUSH_CHARGE bytes back to the disk. */
static void flush_reserve_shrink(Clone *c)
{
	pthread_mutex_lock(&c->reserve);
	c->flush_size -= MIN(c->flush_size, (uint64_t)FLUSH_CHARGE);
	if (ftruncate(c->flush_fd, (off_t)c->flush_size) < 0)
		log_debug("clone: could not shrink the flush reserve: %m");
	pthread_mutex_unlock(&c->reserve);
}

/* ---- nodes: the shared state of an open inode ---------------------------- */

static void upper_name(char *buf, size_t len, uint32_t ino, const char *suffix)
{
	snprintf(buf, len, "%" PRIu32 "%s", ino, suffix);
}

static CloneNode *node_find(Clone *c, uint32_t ino)
{
	CloneNode *n = c->nodes[ino % CLONE_NODE_BUCKETS];
	while (n && n->ino != ino)
		n = n->next;
	return n;
}

static void node_free(CloneNode *n)
{
	if (!n)
		return;
	if (n->charged)
		flush_reserve_shrink(n->clone);
	if (n->fd >= 0)
		close(n->fd);
	free(n->map);
	pthread_mutex_destroy(&n->lock);
	pthread_mutex_destroy(&n->sync);
	free(n);
}

static void node_freep(CloneNode **n) { node_free(*n); }

/* Overlay what an open inode holds in memory on its (older) row. */
static void row_overlay_node(Clone *c, InodeRow *row)
{
	CloneNode *n = node_find(c, row->ino);
	if (!n)
		return;
	pthread_mutex_lock(&n->lock);
	row->size = n->size;
	row->lower_limit = n->lower_limit;
	row->mtime = n->mtime_ns;
	row->ctime = n->ctime_ns;
	pthread_mutex_unlock(&n->lock);
}

static void attr_from_row(Clone *c, const InodeRow *row, CloneAttr *ret)
{
	InodeRow r = *row;
	row_overlay_node(c, &r);
	*ret = (CloneAttr){.ino = r.ino, .mode = r.mode, .uid = r.uid, .gid = r.gid,
			   .nlink = r.nlink, .size = r.size, .blocks = (r.size + 511) / 512,
			   .atime_ns = r.atime, .mtime_ns = r.mtime, .ctime_ns = r.ctime};
}

/* A file's ctime changed in its row; keep the node in step so a flush does not undo it. */
static void node_set_ctime(Clone *c, uint32_t ino, int64_t now)
{
	CloneNode *n = node_find(c, ino);
	if (!n)
		return;
	pthread_mutex_lock(&n->lock);
	n->ctime_ns = now;
	pthread_mutex_unlock(&n->lock);
}

/*
 * Open an existing upper file. Bytes past the row's size can only be writes
 * that a crash cut off from their size, or a truncation that did not reach
 * the disk: cut them, so that a later extension reads zeros.
 */
static int node_open_upper(Clone *c, CloneNode *n)
{
	char name[32];
	struct stat st;
	upper_name(name, sizeof(name), n->ino, "");
	n->fd = openat(c->upper_fd, name, O_RDWR | O_CLOEXEC);
	if (n->fd < 0)
		return errno == ENOENT ? 0 : -errno;
	if (fstat(n->fd, &st) < 0)
		return -errno;
	if ((uint64_t)st.st_size > n->size && ftruncate(n->fd, (off_t)n->size) < 0)
		return -errno;
	return 0;
}

static int node_read_map(Clone *c, CloneNode *n)
{
	char name[32];
	ssize_t got;
	upper_name(name, sizeof(name), n->ino, ".map");
	_cleanup_close_ int fd = openat(c->upper_fd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	n->map_on_disk = true;
	/* a map written before a truncation may be longer; a short one ends in zeros */
	got = pread_full(fd, n->map, n->n_map, 0);
	return got < 0 ? (int)got : 0;
}

static int node_load(Clone *c, const InodeRow *row, CloneNode **ret)
{
	_cleanup_(node_freep) CloneNode *n = calloc(1, sizeof(*n));
	int r;

	if (!n)
		return -ENOMEM;
	pthread_mutex_init(&n->sync, NULL);
	pthread_mutex_init(&n->lock, NULL);
	n->clone = c;
	n->ino = row->ino;
	n->fd = -1;
	n->lower_ino = row->lower_ino;
	n->size = row->size;
	n->lower_limit = row->lower_limit;
	n->mtime_ns = row->mtime;
	n->ctime_ns = row->ctime;
	/* lower_limit only goes down, so the map never needs to grow */
	if (row->lower_limit > 0) {
		n->n_map = (size_t)((row->lower_limit - 1) / c->chunk_size + 1);
		n->map = calloc(n->n_map, 1);
		if (!n->map)
			return -ENOMEM;
	}
	r = node_open_upper(c, n);
	if (r == 0 && n->n_map > 0)
		r = node_read_map(c, n);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(n);
	return 0;
}

/* Take a reference on the node of a regular file, loading it if needed. Clone.lock held. */
static int node_get(Clone *c, uint32_t ino, CloneNode **ret)
{
	CloneNode *n = node_find(c, ino);
	InodeRow row;
	int r;

	if (!n) {
		r = inode_get(c, ino, &row);
		if (r < 0)
			return r;
		if (S_ISDIR(row.mode))
			return -EISDIR;
		if (!S_ISREG(row.mode))
			return -EINVAL;
		if (row.nlink == 0)
			return -ENOENT;
		r = node_load(c, &row, &n);
		if (r < 0)
			return r;
		n->next = c->nodes[ino % CLONE_NODE_BUCKETS];
		c->nodes[ino % CLONE_NODE_BUCKETS] = n;
	}
	n->n_ref++;
	*ret = n;
	return 0;
}

/* Upper files first: a crash then leaves a row with nlink 0, which clone_open removes. */
static int inode_remove(Clone *c, uint32_t ino)
{
	static const char *const suffixes[] = {"", ".map"};
	char name[32];

	for (size_t i = 0; i < ELEMENTSOF(suffixes); i++) {
		upper_name(name, sizeof(name), ino, suffixes[i]);
		if (unlinkat(c->upper_fd, name, 0) < 0 && errno != ENOENT)
			return -errno;
	}
	return inode_delete(c, ino);
}

/* Take the node out of the table, removing the inode if it lost its last link. Clone.lock held. */
static void node_forget(Clone *c, CloneNode *n)
{
	CloneNode **p = &c->nodes[n->ino % CLONE_NODE_BUCKETS];
	while (*p != n)
		p = &(*p)->next;
	*p = n->next;
	if (n->orphan) {
		int r = inode_remove(c, n->ino);
		if (r < 0)
			log_debug("clone: could not remove inode %" PRIu32 ": %s", n->ino, strerror(-r));
	}
}

/* The last link of ino is gone. Clone.lock held. */
static void inode_unlinked(Clone *c, uint32_t ino)
{
	CloneNode *n = node_find(c, ino);
	if (n && n->n_ref > 0) {
		n->orphan = true; /* the last reference removes it */
		return;
	}
	if (n) {
		/* kept only because a flush failed: nothing left to flush it for */
		n->orphan = true;
		node_forget(c, n);
		node_free(n);
		return;
	}
	int r = inode_remove(c, ino);
	if (r < 0)
		log_debug("clone: could not remove inode %" PRIu32 ": %s", ino, strerror(-r));
}

/* ---- data: upper writes, copy-up, flush ---------------------------------- */

/* CloneNode.lock held. */
static bool node_chunk_is_lower(Clone *c, const CloneNode *n, uint64_t k)
{
	return k * c->chunk_size < n->lower_limit && !n->map[k];
}

static int lower_read(Clone *c, uint32_t lower_ino, uint64_t off, size_t len, void *buf)
{
	int r = c->lower_read(c->userdata, lower_ino, off, len, buf);
	return r < 0 ? r : 0;
}

/* Create the upper file on first use. CloneNode.lock held. */
static int node_upper_create(Clone *c, CloneNode *n)
{
	char name[32];
	if (n->fd >= 0)
		return 0;
	upper_name(name, sizeof(name), n->ino, "");
	_cleanup_close_ int fd = openat(c->upper_fd, name, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	/* the name must be durable before a map entry or a size on disk points into the file */
	if (fsync(c->upper_fd) < 0)
		return -errno;
	n->fd = TAKE_FD(fd);
	return 0;
}

/* upper/INO.map for writing, created if missing: an fd, or -errno. */
static int node_map_open(Clone *c, const CloneNode *n)
{
	char name[32];
	upper_name(name, sizeof(name), n->ino, ".map");
	int fd = openat(c->upper_fd, name, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	return fd < 0 ? -errno : fd;
}

/* Create upper/INO.map at its full length, so that writing it never needs room. CloneNode.lock held. */
static int node_map_allocate(Clone *c, CloneNode *n)
{
	int r;
	_cleanup_close_ int fd = node_map_open(c, n);
	if (fd < 0)
		return fd;
	r = -posix_fallocate(fd, 0, (off_t)n->n_map);
	if (r == 0)
		n->map_ready = true;
	return r;
}

/*
 * Before a write changes the node: make sure its flush will find room for
 * what it writes besides the data (the map, when set_map, and the row).
 * CloneNode.lock held, and Clone.space (read).
 */
static int node_charge(Clone *c, CloneNode *n, bool set_map)
{
	int r = 0;
	if (set_map && !n->map_ready)
		r = node_map_allocate(c, n);
	if (r == 0 && !n->charged) {
		r = flush_reserve_grow(c);
		n->charged = r == 0;
	}
	return r;
}

/* Give the node's charge back; false if it held none. CloneNode.lock held. */
static bool node_uncharge(Clone *c, CloneNode *n)
{
	if (!n->charged)
		return false;
	n->charged = false;
	flush_reserve_shrink(c);
	return true;
}

/* Copy chunk k up from the snapshot unless it is there already. Clone.space (read) held. */
static int node_copy_up(Clone *c, CloneNode *n, uint64_t k)
{
	uint64_t start = k * c->chunk_size;
	_cleanup_free_ uint8_t *buf = NULL;
	uint32_t lower_ino;
	size_t len;
	int r;

	pthread_mutex_lock(&n->lock);
	if (!node_chunk_is_lower(c, n, k)) {
		pthread_mutex_unlock(&n->lock);
		return 0;
	}
	len = (size_t)MIN(c->chunk_size, n->lower_limit - start);
	lower_ino = n->lower_ino;
	pthread_mutex_unlock(&n->lock);

	buf = malloc(len);
	if (!buf)
		return -ENOMEM;
	r = lower_read(c, lower_ino, start, len, buf);
	if (r < 0)
		return r;

	pthread_mutex_lock(&n->lock);
	/* a concurrent writer may have copied it up meanwhile and written over it: keep that */
	if (node_chunk_is_lower(c, n, k)) {
		len = (size_t)MIN(len, n->lower_limit - start);
		r = node_charge(c, n, true);
		if (r == 0)
			r = node_upper_create(c, n);
		if (r == 0)
			r = pwrite_full(n->fd, buf, len, (off_t)start);
		if (r == 0) {
			n->map[k] = 1;
			n->map_dirty = true;
			n->gen++;
		}
	}
	pthread_mutex_unlock(&n->lock);
	return r;
}

/*
 * Write within one chunk, which is copied up already unless the write covers
 * all its lower bytes. CloneNode.lock held, and Clone.space (read).
 */
static int node_write_upper(Clone *c, CloneNode *n, uint64_t pos, size_t len, const void *src)
{
	uint64_t k = pos / c->chunk_size;
	int r = node_charge(c, n, node_chunk_is_lower(c, n, k));

	if (r == 0)
		r = node_upper_create(c, n);
	if (r == 0)
		r = pwrite_full(n->fd, src, len, (off_t)pos);
	if (r < 0) {
		/* keep the upper file within size: a later extension must read zeros there */
		if (n->fd >= 0 && pos + len > n->size && ftruncate(n->fd, (off_t)n->size) < 0)
			log_debug("clone: could not trim upper file of inode %" PRIu32 ": %m", n->ino);
		return r;
	}
	if (node_chunk_is_lower(c, n, k)) {
		n->map[k] = 1;
		n->map_dirty = true;
	}
	n->size = MAX(n->size, pos + len);
	n->mtime_ns = n->ctime_ns = now_ns();
	n->gen++;
	return 0;
}

/* Write len bytes at pos, all within one chunk. Clone.space (read) held. */
static int node_write_piece(Clone *c, CloneNode *n, uint64_t pos, size_t len, const void *src)
{
	uint64_t k = pos / c->chunk_size, start = k * c->chunk_size;
	int r;

	pthread_mutex_lock(&n->lock);
	/* a write that covers every lower byte of the chunk needs no copy of them */
	if (node_chunk_is_lower(c, n, k) &&
	    !(pos == start && pos + len >= MIN(start + c->chunk_size, n->lower_limit))) {
		pthread_mutex_unlock(&n->lock);
		r = node_copy_up(c, n, k);
		if (r < 0)
			return r;
		pthread_mutex_lock(&n->lock);
	}
	r = node_write_upper(c, n, pos, len, src);
	pthread_mutex_unlock(&n->lock);
	return r;
}

/* Read len bytes at pos, all within one chunk and below size. No lock held. */
static int node_read_piece(Clone *c, CloneNode *n, uint64_t pos, size_t len, uint8_t *buf)
{
	uint64_t limit;
	uint32_t lower_ino;
	ssize_t got = 0;
	size_t n_lower;

	pthread_mutex_lock(&n->lock);
	if (!node_chunk_is_lower(c, n, pos / c->chunk_size)) {
		/* the upper file may be shorter than size (an extension): zeros */
		if (n->fd >= 0)
			got = pread_full(n->fd, buf, len, (off_t)pos);
		pthread_mutex_unlock(&n->lock);
		if (got < 0)
			return (int)got;
		memset(buf + got, 0, len - (size_t)got);
		return 0;
	}
	limit = n->lower_limit;
	lower_ino = n->lower_ino;
	pthread_mutex_unlock(&n->lock);

	/* past lower_limit a chunk that was never copied up holds zeros */
	n_lower = pos < limit ? (size_t)MIN(len, limit - pos) : 0;
	memset(buf + n_lower, 0, len - n_lower);
	return n_lower ? lower_read(c, lower_ino, pos, n_lower, buf) : 0;
}

static int node_write_map(Clone *c, CloneNode *n, const uint8_t *map)
{
	int r;
	_cleanup_close_ int fd = node_map_open(c, n);
	if (fd < 0)
		return fd;
	r = pwrite_full(fd, map, n->n_map, 0);
	if (r == 0 && fdatasync(fd) < 0)
		r = -errno;
	if (r == 0 && !n->map_on_disk) {
		if (fsync(c->upper_fd) < 0)
			return -errno;
		n->map_on_disk = true;
	}
	return r;
}

/*
 * The row takes the node's current size and times, not those of when the
 * flush began: a utimens or truncate committed meanwhile must not be undone,
 * and a size ahead of the synced bytes only exposes zeros after a crash.
 * With spend, the node's charge goes back to the disk first, under Clone.lock
 * so that no namespace change commits into that room before this update.
 */
static int node_write_row(Clone *c, CloneNode *n, uint64_t gen, bool spend)
{
	int r;
	pthread_mutex_lock(&c->lock);
	pthread_mutex_lock(&n->lock);
	if (spend)
		node_uncharge(c, n);
	r = inode_set_data(c, n->ino, n->size, n->lower_limit, n->mtime_ns, n->ctime_ns);
	if (r == 0)
		n->clean_gen = gen;
	pthread_mutex_unlock(&n->lock);
	pthread_mutex_unlock(&c->lock);
	return r;
}

/* One flush: upper bytes, then map, then row (spend: see node_write_row). CloneNode.sync held. */
static int node_flush(Clone *c, CloneNode *n, bool spend)
{
	_cleanup_free_ uint8_t *map = NULL;
	bool dirty;
	uint64_t gen;
	int fd, r = 0;

	pthread_mutex_lock(&n->lock);
	gen = n->gen;
	fd = n->fd;
	dirty = gen != n->clean_gen || n->map_dirty;
	/* the copy is taken before the fdatasync, so each entry it marks is covered by it */
	if (n->map_dirty) {
		map = malloc(n->n_map);
		if (map) {
			memcpy(map, n->map, n->n_map);
			n->map_dirty = false;
		} else {
			r = -ENOMEM;
		}
	}
	pthread_mutex_unlock(&n->lock);

	if (r == 0 && dirty) {
		if (fd >= 0 && fdatasync(fd) < 0)
			r = -errno;
		if (r == 0 && map)
			r = node_write_map(c, n, map);
		if (r == 0)
			r = node_write_row(c, n, gen, spend);
	}
	if (r < 0 && map) {
		pthread_mutex_lock(&n->lock);
		n->map_dirty = true;
		pthread_mutex_unlock(&n->lock);
	}
	return r;
}

/* Make the node's data, map, size and times durable. */
static int node_persist(Clone *c, CloneNode *n)
{
	int r;

	pthread_mutex_lock(&n->sync);
	r = node_flush(c, n, false);
	if (r == -ENOSPC) {
		/*
		 * A full disk: flush again on the room this node's writes set
		 * aside, with every writer held back so that none takes it first
		 * and the flush leaves the node clean.
		 */
		pthread_rwlock_wrlock(&c->space);
		r = node_flush(c, n, true);
		pthread_rwlock_unlock(&c->space);
	}
	pthread_mutex_lock(&n->lock);
	/* clean: nothing left for the charge to pay for */
	if (r == 0 && n->gen == n->clean_gen && !n->map_dirty)
		node_uncharge(c, n);
	pthread_mutex_unlock(&n->lock);
	pthread_mutex_unlock(&n->sync);
	return r;
}

static bool node_is_clean(CloneNode *n)
{
	bool clean;
	pthread_mutex_lock(&n->lock);
	clean = n->gen == n->clean_gen && !n->map_dirty;
	pthread_mutex_unlock(&n->lock);
	return clean;
}

/*
 * Drop a reference. The last one flushes the node and forgets it, or removes
 * the inode if it was unlinked. A node whose flush fails stays in the table
 * (with no reference) so that a later fsync, release or clone_close retries.
 * No lock held.
 */
static int node_unref(Clone *c, CloneNode *n)
{
	int r = 0;

	for (;;) {
		pthread_mutex_lock(&c->lock);
		if (n->n_ref > 1 || (r < 0 && !n->orphan)) {
			n->n_ref--;
			pthread_mutex_unlock(&c->lock);
			return r;
		}
		if (n->orphan || node_is_clean(n)) {
			node_forget(c, n);
			pthread_mutex_unlock(&c->lock);
			node_free(n);
			return 0;
		}
		pthread_mutex_unlock(&c->lock);
		r = node_persist(c, n);
	}
}

/*
 * Truncate or extend to size. The chunk that size cuts is copied up first, so
 * it holds the lower bytes before size and zeros after it once extended.
 */
static int node_truncate(Clone *c, CloneNode *n, uint64_t size)
{
	int64_t now = now_ns();
	bool cut, shrink;
	int r = 0;

	pthread_mutex_lock(&n->lock);
	cut = size < n->lower_limit && size % c->chunk_size != 0;
	pthread_mutex_unlock(&n->lock);
	if (cut) {
		pthread_rwlock_rdlock(&c->space);
		r = node_copy_up(c, n, size / c->chunk_size);
		pthread_rwlock_unlock(&c->space);
	}
	if (r < 0)
		return r;

	pthread_mutex_lock(&c->lock);
	pthread_mutex_lock(&n->lock);
	/* the row first: if we crash before cutting the upper file, node_load cuts it */
	r = inode_set_data(c, n->ino, size, MIN(n->lower_limit, size), now, now);
	pthread_mutex_unlock(&c->lock);
	if (r == 0) {
		shrink = size < n->size;
		n->size = size;
		n->lower_limit = MIN(n->lower_limit, size);
		n->mtime_ns = n->ctime_ns = now;
		/* the cut must be durable before a later extension's size is */
		if (n->fd >= 0 && (ftruncate(n->fd, (off_t)size) < 0 || (shrink && fdatasync(n->fd) < 0)))
			log_debug("clone: could not truncate upper file of inode %" PRIu32 ": %m", n->ino);
	}
	pthread_mutex_unlock(&n->lock);
	return r;
}

/* ---- open and close -------------------------------------------------------- */

/* Open (creating) the scratch directory; a directory without clone.db must be empty. */
static int clone_open_dir(Clone *c, const char *dir)
{
	int r = mkdir_p(dir, 0700);
	if (r < 0)
		return r;
	c->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (c->dir_fd < 0)
		return -errno;
	if (faccessat(c->dir_fd, "clone.db", F_OK, 0) == 0)
		return 0;
	if (errno != ENOENT)
		return -errno;
	r = dir_is_empty(dir);
	if (r <= 0)
		return r < 0 ? r : -ENOTEMPTY;
	/* created here so that SQLite's -wal and -shm files inherit its 0600 */
	_cleanup_close_ int fd = openat(c->dir_fd, "clone.db", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	return fd < 0 ? -errno : 0;
}

static int clone_open_db(Clone *c, const char *dir)
{
	/* WAL: one fsync per commit; FULL: a namespace change survives power loss once returned */
	static const SqldbOptions o = {.flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
				       .busy_ms = CLONE_BUSY_TIMEOUT_MS,
				       .pragmas = "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
						  "PRAGMA foreign_keys=OFF;"};
	_cleanup_free_ char *path = NULL;
	int r;

	if (asprintf(&path, "%s/clone.db", dir) < 0)
		return -ENOMEM;
	r = sqldb_open(path, &o, &c->db);
	return r == 0 ? sqldb_cache_new(c->db, N_STATEMENTS, &c->stmts) : r;
}

static int seed_one(Clone *c, const CloneSeedFile *f)
{
	bool reg = S_ISREG(f->mode), lnk = S_ISLNK(f->mode);
	InodeRow row = {.ino = f->ino, .mode = f->mode, .uid = f->uid, .gid = f->gid, .nlink = 1,
			.size = f->size, .atime = f->mtime_ns, .mtime = f->mtime_ns,
			.ctime = f->mtime_ns, .lower_ino = reg ? f->ino : 0,
			.lower_limit = reg ? f->size : 0};
	int r;

	if (f->ino == 0 || f->size > INT64_MAX || (lnk && !f->target))
		return -EINVAL;
	if (lnk)
		row.size = strlen(f->target);
	if (f->ino == CLONE_ROOT_INO)
		return S_ISDIR(f->mode) ? inode_insert(c, &row, NULL) : -EINVAL;
	if (!f->name || f->parent == f->ino)
		return -EINVAL;
	r = name_check(f->name);
	if (r == 0)
		r = inode_insert(c, &row, lnk ? f->target : NULL);
	if (r == 0)
		r = dirent_add(c, f->parent, f->name, f->ino);
	return r;
}

/* Fill a fresh clone.db from the seed. Inside the opening transaction. */
static int seed_import(Clone *c, const CloneOptions *o)
{
	uint32_t max_ino = CLONE_ROOT_INO;
	bool have_root = false;
	int r = 0;

	for (size_t i = 0; i < o->n_seed && r == 0; i++) {
		r = seed_one(c, &o->seed[i]);
		max_ino = MAX(max_ino, o->seed[i].ino);
		have_root |= o->seed[i].ino == CLONE_ROOT_INO;
	}
	if (r == 0 && !have_root) {
		int64_t now = now_ns();
		InodeRow root = {.ino = CLONE_ROOT_INO, .mode = S_IFDIR | 0755, .uid = getuid(),
				 .gid = getgid(), .nlink = 2, .atime = now, .mtime = now, .ctime = now};
		r = inode_insert(c, &root, NULL);
	}
	if (r == 0 && max_ino == UINT32_MAX)
		r = -EOVERFLOW;
	if (r == 0)
		r = exec_sql(c, seed_dir_nlink_sql);
	if (r == 0)
		r = meta_set(c, "format", NULL, CLONE_FORMAT);
	if (r == 0)
		r = meta_set(c, "snapshot", o->snapshot, 0);
	if (r == 0)
		r = meta_set(c, "chunk_size", NULL, (int64_t)o->chunk_size);
	if (r == 0)
		r = meta_set(c, "next_ino", NULL, (int64_t)max_ino + 1);
	return r;
}

/* Create the schema and import the seed when clone.db is new (or its creation was cut short). */
static int clone_init_db(Clone *c, const CloneOptions *o)
{
	int64_t v;
	int r = txn_begin(c);
	if (r == 0)
		r = exec_sql(c, schema_sql);
	if (r == 0) {
		r = meta_get(c, "snapshot", o->snapshot, &v);
		if (r == -ENOENT) {
			r = seed_import(c, o);
			c->fresh = r == 0;
		}
	}
	return txn_end(c, r);
}

static int clone_check_meta(Clone *c, const CloneOptions *o)
{
	int64_t v = 0;
	int r = meta_get(c, "format", NULL, &v);
	if (r == 0 && v > CLONE_FORMAT)
		r = -EPROTONOSUPPORT;
	if (r == 0)
		r = meta_get(c, "snapshot", o->snapshot, &v);
	if (r == 0 && !v)
		r = -ESTALE;
	if (r == 0)
		r = meta_get(c, "chunk_size", NULL, &v);
	if (r == 0 && (uint64_t)v != o->chunk_size)
		r = -EINVAL;
	if (r == 0)
		r = meta_get(c, "next_ino", NULL, &v);
	if (r == 0 && (v <= CLONE_ROOT_INO || v > UINT32_MAX))
		r = -EBADMSG;
	if (r == 0)
		c->next_ino = (uint32_t)v;
	return r == -ENOENT ? -EBADMSG : r;
}

static int clone_open_upper(Clone *c)
{
	if (mkdirat(c->dir_fd, "upper", 0700) < 0 && errno != EEXIST)
		return -errno;
	c->upper_fd = openat(c->dir_fd, "upper", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (c->upper_fd < 0)
		return -errno;
	/* the names of a fresh clone's clone.db, its WAL and upper/ */
	return fsync(c->dir_fd) < 0 ? -errno : 0;
}

/* Remove inodes whose last link went while they were open, before a crash. */
static int clone_sweep_orphans(Clone *c)
{
	int64_t ino = 0;
	int r;
	while ((r = stmt_query(c, ST_INODE_ORPHAN, 0, NULL, &ino)) == 0) {
		r = inode_remove(c, (uint32_t)ino);
		if (r < 0)
			return r;
	}
	return r == -ENOENT ? 0 : r;
}

static void clone_closep(Clone **c) { clone_close(*c); }

/*
 * A few MiB set aside in the scratch directory: when the disk fills up,
 * deleting a file still needs room in clone.db, so an unlink that fails with
 * ENOSPC gives the reserve back and tries again. Best effort.
 */
#define RESERVE_NAME "reserve"
#define RESERVE_BYTES (1024 * 1024)

static void reserve_make(Clone *c)
{
	_cleanup_close_ int fd = openat(c->dir_fd, RESERVE_NAME, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	c->have_reserve = posix_fallocate(fd, 0, RESERVE_BYTES) == 0;
	if (!c->have_reserve)
		unlinkat(c->dir_fd, RESERVE_NAME, 0);
}

static bool reserve_release(Clone *c)
{
	if (!c->have_reserve)
		return false;
	unlinkat(c->dir_fd, RESERVE_NAME, 0);
	c->have_reserve = false;
	return true;
}

int clone_open(const CloneOptions *o, Clone **ret)
{
	_cleanup_(clone_closep) Clone *c = NULL;
	int r;

	if (!o || !o->dir || !o->snapshot || !o->lower_read || o->chunk_size == 0 ||
	    o->chunk_size > SSIZE_MAX || (o->n_seed > 0 && !o->seed))
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	pthread_rwlockattr_t attr;
	pthread_rwlockattr_init(&attr);
	/* a flush on a full disk must not wait behind an endless stream of writes */
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&c->space, &attr);
	pthread_rwlockattr_destroy(&attr);
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->reserve, NULL);
	c->dir_fd = c->upper_fd = c->flush_fd = -1;
	c->chunk_size = o->chunk_size;
	c->lower_read = o->lower_read;
	c->userdata = o->userdata;

	r = clone_open_dir(c, o->dir);
	if (r == 0)
		r = clone_open_db(c, o->dir);
	if (r == 0)
		r = clone_init_db(c, o);
	if (r == 0)
		r = clone_check_meta(c, o);
	if (r == 0)
		r = clone_open_upper(c);
	if (r == 0)
		r = clone_sweep_orphans(c);
	if (r < 0)
		return r;
	reserve_make(c);
	/* nothing is charged yet; created now while there is room, or by the first charge */
	c->flush_fd = openat(c->dir_fd, FLUSH_RESERVE_NAME, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC,
			     0600);
	*ret = TAKE_PTR(c);
	return 0;
}

/* Flush and drop a node at close; its handles go with it. */
static void clone_close_node(Clone *c, CloneNode *n)
{
	if (!n->orphan) {
		int r = node_persist(c, n);
		if (r < 0)
			log_warning("could not flush inode %" PRIu32 " of clone: %s", n->ino,
				    strerror(-r));
	}
	pthread_mutex_lock(&c->lock);
	node_forget(c, n);
	pthread_mutex_unlock(&c->lock);
	while (n->files) {
		CloneFile *f = n->files;
		n->files = f->next;
		free(f);
	}
	node_free(n);
}

Clone *clone_close(Clone *c)
{
	if (!c)
		return NULL;
	for (size_t b = 0; b < CLONE_NODE_BUCKETS; b++)
		while (c->nodes[b])
			clone_close_node(c, c->nodes[b]);
	sqldb_cache_free(c->stmts);
	sqldb_close(c->db);
	if (c->flush_fd >= 0) {
		close(c->flush_fd);
		unlinkat(c->dir_fd, FLUSH_RESERVE_NAME, 0);
	}
	if (c->upper_fd >= 0)
		close(c->upper_fd);
	if (c->dir_fd >= 0)
		close(c->dir_fd);
	pthread_mutex_destroy(&c->reserve);
	pthread_mutex_destroy(&c->lock);
	pthread_rwlock_destroy(&c->space);
	free(c);
	return NULL;
}

/* ---- namespace ------------------------------------------------------------- */

bool clone_is_fresh(const Clone *c) { return c->fresh; }

int clone_getattr(Clone *c, uint32_t ino, CloneAttr *ret)
{
	InodeRow row;
	int r;
	pthread_mutex_lock(&c->lock);
	r = inode_get(c, ino, &row);
	if (r == 0)
		attr_from_row(c, &row, ret);
	pthread_mutex_unlock(&c->lock);
	return r;
}

int clone_lookup(Clone *c, uint32_t parent, const char *name, CloneAttr *ret)
{
	InodeRow row;
	int r;
	pthread_mutex_lock(&c->lock);
	r = entry_get(c, parent, name, &row);
	if (r == 0)
		attr_from_row(c, &row, ret);
	pthread_mutex_unlock(&c->lock);
	return r;
}

static int readlink_locked(Clone *c, uint32_t ino, char **ret_target)
{
	const unsigned char *t;
	InodeRow row;
	char *copy;
	int r = inode_get(c, ino, &row);
	if (r < 0)
		return r;
	if (!S_ISLNK(row.mode))
		return -EINVAL;
	sqlite3_stmt *s = stmt_bind(c, ST_INODE_TARGET, INTS(ino), 0, NULL, &r);
	if (!s)
		return r;
	r = step_row(c, s);
	if (r < 0)
		return r;
	t = sqlite3_column_text(s, 0);
	copy = strdup(t ? (const char *)t : "");
	sqlite3_reset(s);
	if (!copy)
		return -ENOMEM;
	*ret_target = copy;
	return 0;
}

int clone_readlink(Clone *c, uint32_t ino, char **ret_target)
{
	int r;
	pthread_mutex_lock(&c->lock);
	r = readlink_locked(c, ino, ret_target);
	pthread_mutex_unlock(&c->lock);
	return r;
}

typedef struct DirBatchEntry {
	uint64_t cur;
	char name[CLONE_NAME_MAX + 1];
	CloneAttr attr;
} DirBatchEntry;

/* Up to CLONE_READDIR_BATCH entries of dir after cursor. */
static int readdir_batch(Clone *c, uint32_t dir, uint64_t cursor, DirBatchEntry *batch,
			 size_t *ret_n)
{
	InodeRow row;
	size_t n = 0;
	int r = dir_get(c, dir, &row), rc;
	if (r < 0)
		return r;
	sqlite3_stmt *s = stmt_get(c, ST_DIRENT_LIST, &r);
	if (!s)
		return r;
	sqlite3_bind_int64(s, 1, dir);
	sqlite3_bind_int64(s, 2, (int64_t)MIN(cursor, (uint64_t)INT64_MAX));
	sqlite3_bind_int64(s, 3, CLONE_READDIR_BATCH);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW && n < CLONE_READDIR_BATCH) {
		const unsigned char *name = sqlite3_column_text(s, 1);
		batch[n].cur = (uint64_t)sqlite3_column_int64(s, 0);
		snprintf(batch[n].name, sizeof(batch[n].name), "%s", name ? (const char *)name : "");
		row_read(s, 2, &row);
		attr_from_row(c, &row, &batch[n].attr);
		n++;
	}
	r = rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : db_fail(c, rc, "readdir");
	sqlite3_reset(s);
	*ret_n = n;
	return r;
}

/* The callback runs without the lock, so that it may call back into the clone. */
int clone_readdir(Clone *c, uint32_t dir, uint64_t cursor, CloneDirFn cb, void *userdata)
{
	_cleanup_free_ DirBatchEntry *batch = calloc(CLONE_READDIR_BATCH, sizeof(*batch));
	size_t n = 0;
	int r;

	if (!batch)
		return -ENOMEM;
	for (;;) {
		pthread_mutex_lock(&c->lock);
		r = readdir_batch(c, dir, cursor, batch, &n);
		pthread_mutex_unlock(&c->lock);
		if (r < 0)
			return r;
		for (size_t i = 0; i < n; i++) {
			r = cb(batch[i].name, &batch[i].attr, batch[i].cur, userdata);
			if (r != 0)
				return r;
		}
		if (n < CLONE_READDIR_BATCH)
			return 0;
		cursor = batch[n - 1].cur;
	}
}

/* Create parent/name as a new inode in one transaction. Clone.lock held. */
static int create_locked(Clone *c, uint32_t parent, const char *name, InodeRow *row,
			 const char *target, CloneAttr *ret)
{
	InodeRow p;
	uint32_t existing;
	int r = name_check(name);

	if (r == 0)
		r = dir_get(c, parent, &p);
	if (r == 0)
		r = dirent_lookup(c, parent, name, &existing) == 0 ? -EEXIST : 0;
	if (r < 0)
		return r;
	if (c->next_ino == UINT32_MAX)
		return -ENOSPC;
	row->ino = c->next_ino;
	row->atime = row->mtime = row->ctime = now_ns();

	r = txn_begin(c);
	if (r == 0)
		r = inode_insert(c, row, target);
	if (r == 0)
		r = dirent_add(c, parent, name, row->ino);
	if (r == 0)
		r = dir_changed(c, parent, S_ISDIR(row->mode) ? 1 : 0, row->mtime);
	if (r == 0)
		r = meta_set(c, "next_ino", NULL, (int64_t)row->ino + 1);
	r = txn_end(c, r);
	if (r < 0)
		return r;
	c->next_ino++;
	attr_from_row(c, row, ret);
	return 0;
}

static int create_inode(Clone *c, uint32_t parent, const char *name, InodeRow *row,
			const char *target, CloneAttr *ret)
{
	int r;
	pthread_mutex_lock(&c->lock);
	r = create_locked(c, parent, name, row, target, ret);
	pthread_mutex_unlock(&c->lock);
	return r;
}

int clone_mkdir(Clone *c, uint32_t parent, const char *name, uint32_t mode, uint32_t uid,
		uint32_t gid, CloneAttr *ret)
{
	InodeRow row = {.mode = S_IFDIR | (mode & 07777), .uid = uid, .gid = gid, .nlink = 2};
	return create_inode(c, parent, name, &row, NULL, ret);
}

int clone_mknod(Clone *c, uint32_t parent, const char *name, uint32_t mode, uint32_t uid,
		uint32_t gid, CloneAttr *ret)
{
	InodeRow row = {.mode = S_IFREG | (mode & 07777), .uid = uid, .gid = gid, .nlink = 1};
	uint32_t type = mode & S_IFMT;

	if (type == S_IFDIR)
		return clone_mkdir(c, parent, name, mode, uid, gid, ret);
	/* a zero type means a regular file, as for mknod(2) */
	if (type != S_IFREG && type != 0)
		return -EPERM;
	return create_inode(c, parent, name, &row, NULL, ret);
}

int clone_symlink(Clone *c, uint32_t parent, const char *name, const char *target, uint32_t uid,
		  uint32_t gid, CloneAttr *ret)
{
	InodeRow row = {.mode = S_IFLNK | 0777, .uid = uid, .gid = gid, .nlink = 1};
	size_t len = strlen(target);

	if (len == 0)
		return -ENOENT;
	if (len >= PATH_MAX)
		return -ENAMETOOLONG;
	row.size = len;
	return create_inode(c, parent, name, &row, target, ret);
}

static int link_locked(Clone *c, uint32_t ino, uint32_t newparent, const char *newname,
		       CloneAttr *ret)
{
	int64_t now = now_ns();
	InodeRow row, p;
	uint32_t existing;
	int r = inode_get(c, ino, &row);

	if (r == 0 && S_ISDIR(row.mode))
		r = -EPERM;
	if (r == 0 && row.nlink == 0)
		r = -ENOENT;
	if (r == 0)
		r = name_check(newname);
	if (r == 0)
		r = dir_get(c, newparent, &p);
	if (r == 0)
		r = dirent_lookup(c, newparent, newname, &existing) == 0 ? -EEXIST : 0;
	if (r < 0)
		return r;

	r = txn_begin(c);
	if (r == 0)
		r = dirent_add(c, newparent, newname, ino);
	if (r == 0)
		r = inode_links(c, ino, 1, now);
	if (r == 0)
		r = dir_changed(c, newparent, 0, now);
	r = txn_end(c, r);
	if (r < 0)
		return r;
	node_set_ctime(c, ino, now);
	row.nlink++;
	row.ctime = now;
	attr_from_row(c, &row, ret);
	return 0;
}

int clone_link(Clone *c, uint32_t ino, uint32_t newparent, const char *newname, CloneAttr *ret)
{
	int r;
	pthread_mutex_lock(&c->lock);
	r = link_locked(c, ino, newparent, newname, ret);
	pthread_mutex_unlock(&c->lock);
	return r;
}

static int unlink_locked(Clone *c, uint32_t parent, const char *name)
{
	int64_t now = now_ns();
	InodeRow row;
	int r = entry_get(c, parent, name, &row);

	if (r == 0 && S_ISDIR(row.mode))
		r = -EISDIR;
	if (r < 0)
		return r;
	r = txn_begin(c);
	if (r == 0)
		r = dirent_delete(c, parent, name);
	if (r == 0)
		r = inode_links(c, row.ino, -1, now);
	if (r == 0)
		r = dir_changed(c, parent, 0, now);
	r = txn_end(c, r);
	if (r < 0)
		return r;
	node_set_ctime(c, row.ino, now);
	if (row.nlink <= 1)
		inode_unlinked(c, row.ino);
	return 0;
}

int clone_unlink(Clone *c, uint32_t parent, const char *name)
{
	int r;
	pthread_mutex_lock(&c->lock);
	r = unlink_locked(c, parent, name);
	if (r == -ENOSPC && reserve_release(c))
		r = unlink_locked(c, parent, name);
	if (r == 0 && !c->have_reserve)
		reserve_make(c);
	pthread_mutex_unlock(&c->lock);
	return r;
}

/* 0 if dir is an empty directory. */
static int dir_check_empty(Clone *c, const InodeRow *dir)
{
	int r;
	if (!S_ISDIR(dir->mode))
		return -ENOTDIR;
	r = dir_has_entries(c, dir->ino);
	return r > 0 ? -ENOTEMPTY : r;
}

static int rmdir_locked(Clone *c, uint32_t parent, const char *name)
{
	InodeRow row;
	int r = entry_get(c, parent, name, &row);

	if (r == 0)
		r = dir_check_empty(c, &row);
	if (r < 0)
		return r;
	r = txn_begin(c);
	if (r == 0)
		r = dirent_delete(c, parent, name);
	if (r == 0)
		r = inode_delete(c, row.ino);
	if (r == 0)
		r = dir_changed(c, parent, -1, now_ns());
	return txn_end(c, r);
}

int clone_rmdir(Clone *c, uint32_t parent, const char *name)
{
	int r;
	pthread_mutex_lock(&c->lock);
	r = rmdir_locked(c, parent, name);
	if (r == -ENOSPC && reserve_release(c))
		r = rmdir_locked(c, parent, name);
	pthread_mutex_unlock(&c->lock);
	return r;
}

/* -EINVAL if dir is ino itself or one of its ancestors: a directory cannot move into itself. */
static int check_not_ancestor(Clone *c, uint32_t ino, uint32_t dir)
{
	for (unsigned depth = 0; depth < CLONE_MAX_DEPTH; depth++) {
		if (dir == ino)
			return -EINVAL;
		if (dir == CLONE_ROOT_INO)
			return 0;
		int r = dirent_parent(c, dir, &dir);
		if (r < 0)
			return r == -ENOENT ? -EIO : r;
	}
	return -ELOOP;
}

/* May src replace dst (POSIX rename(2))? */
static int rename_check_target(Clone *c, const InodeRow *src, const InodeRow *dst)
{
	if (S_ISDIR(src->mode))
		return dir_check_empty(c, dst);
	return S_ISDIR(dst->mode) ? -EISDIR : 0;
}

typedef struct RenameArgs {
	uint32_t parent, newparent;
	const char *name, *newname;
	unsigned flags;
} RenameArgs;

/* The rename's database changes; dst, if it has an ino, is replaced. Inside a transaction. */
static int rename_apply(Clone *c, const RenameArgs *a, const InodeRow *src, const InodeRow *dst,
			int64_t now)
{
	bool is_dir = S_ISDIR(src->mode), moves = a->parent != a->newparent;
	int r = 0;

	if (dst->ino) {
		r = dirent_delete(c, a->newparent, a->newname);
		if (r == 0)
			r = S_ISDIR(dst->mode) ? inode_delete(c, dst->ino)
					       : inode_links(c, dst->ino, -1, now);
		if (r == 0 && S_ISDIR(dst->mode))
			r = dir_changed(c, a->newparent, -1, now);
	}
	if (r == 0)
		r = dirent_move(c, a->parent, a->name, a->newparent, a->newname);
	if (r == 0)
		r = dir_changed(c, a->parent, is_dir && moves ? -1 : 0, now);
	if (r == 0)
		r = dir_changed(c, a->newparent, is_dir && moves ? 1 : 0, now);
	if (r == 0)
		r = inode_links(c, src->ino, 0, now); /* ctime only */
	return r;
}

static int rename_locked(Clone *c, const RenameArgs *a)
{
	int64_t now = now_ns();
	InodeRow src, dst = {0}, p;
	int r = entry_get(c, a->parent, a->name, &src);

	if (r == 0)
		r = name_check(a->newname);
	if (r == 0)
		r = dir_get(c, a->newparent, &p);
	if (r == 0 && S_ISDIR(src.mode) && a->parent != a->newparent)
		r = check_not_ancestor(c, src.ino, a->newparent);
	if (r == 0) {
		r = entry_get(c, a->newparent, a->newname, &dst);
		if (r == -ENOENT) {
			dst.ino = 0;
			r = 0;
		} else if (r == 0 && (a->flags & RENAME_NOREPLACE)) {
			r = -EEXIST;
		} else if (r == 0 && dst.ino == src.ino) {
			return 0; /* two links of one file: rename(2) does nothing */
		} else if (r == 0) {
			r = rename_check_target(c, &src, &dst);
		}
	}
	if (r < 0)
		return r;

	r = txn_begin(c);
	if (r == 0)
		r = rename_apply(c, a, &src, &dst, now);
	r = txn_end(c, r);
	if (r < 0)
		return r;
	node_set_ctime(c, src.ino, now);
	if (dst.ino && !S_ISDIR(dst.mode)) {
		node_set_ctime(c, dst.ino, now);
		if (dst.nlink <= 1)
			inode_unlinked(c, dst.ino);
	}
	return 0;
}

int clone_rename(Clone *c, uint32_t parent, const char *name, uint32_t newparent,
		 const char *newname, unsigned flags)
{
	RenameArgs a = {.parent = parent, .newparent = newparent, .name = name,
			.newname = newname, .flags = flags};
	int r;

	if (flags & ~(unsigned)RENAME_NOREPLACE)
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	r = rename_locked(c, &a);
	pthread_mutex_unlock(&c->lock);
	return r;
}

/* ---- attributes ------------------------------------------------------------ */

static int setattr_locked(Clone *c, uint32_t ino, unsigned mask, const CloneAttr *a,
			  CloneAttr *ret)
{
	InodeRow row;
	CloneNode *n;
	int r = inode_get(c, ino, &row);

	if (r < 0)
		return r;
	row_overlay_node(c, &row);
	if (mask & ~CLONE_SET_SIZE) {
		if (mask & CLONE_SET_MODE)
			row.mode = (row.mode & S_IFMT) | (a->mode & 07777);
		if (mask & CLONE_SET_UID)
			row.uid = a->uid;
		if (mask & CLONE_SET_GID)
			row.gid = a->gid;
		if (mask & CLONE_SET_ATIME)
			row.atime = a->atime_ns;
		if (mask & CLONE_SET_MTIME)
			row.mtime = a->mtime_ns;
		row.ctime = now_ns();
		r = inode_set_attr(c, &row);
		if (r < 0)
			return r;
		n = node_find(c, ino);
		if (n) {
			pthread_mutex_lock(&n->lock);
			n->mtime_ns = row.mtime;
			n->ctime_ns = row.ctime;
			pthread_mutex_unlock(&n->lock);
		}
	}
	attr_from_row(c, &row, ret);
	return 0;
}

/* Truncate through a node reference, so open handles see it at once. */
static int clone_truncate(Clone *c, uint32_t ino, uint64_t size)
{
	CloneNode *n;
	int r, r2;

	if (size > INT64_MAX)
		return -EFBIG;
	pthread_mutex_lock(&c->lock);
	r = node_get(c, ino, &n);
	pthread_mutex_unlock(&c->lock);
	if (r < 0)
		return r;
	r = node_truncate(c, n, size);
	r2 = node_unref(c, n);
	return r < 0 ? r : r2;
}

int clone_setattr(Clone *c, uint32_t ino, unsigned mask, const CloneAttr *a, CloneAttr *ret)
{
	int r = 0;

	if (mask & CLONE_SET_SIZE)
		r = clone_truncate(c, ino, a->size);
	if (r < 0)
		return r;
	pthread_mutex_lock(&c->lock);
	r = setattr_locked(c, ino, mask, a, ret);
	pthread_mutex_unlock(&c->lock);
	return r;
}

/* ---- file handles ---------------------------------------------------------- */

int clone_open_file(Clone *c, uint32_t ino, int flags, CloneFile **ret)
{
	_cleanup_free_ CloneFile *f = calloc(1, sizeof(*f));
	CloneNode *n;
	int r;

	if (!f)
		return -ENOMEM;
	pthread_mutex_lock(&c->lock);
	r = node_get(c, ino, &n);
	if (r == 0) {
		f->node = n;
		f->flags = flags;
		f->next = n->files;
		if (n->files)
			n->files->prev = f;
		n->files = f;
	}
	pthread_mutex_unlock(&c->lock);
	if (r < 0)
		return r;
	if (flags & O_TRUNC) {
		r = node_truncate(c, n, 0);
		if (r < 0) {
			clone_release(TAKE_PTR(f));
			return r;
		}
	}
	*ret = TAKE_PTR(f);
	return 0;
}

int clone_release(CloneFile *f)
{
	CloneNode *n;
	Clone *c;

	if (!f)
		return 0;
	n = f->node;
	c = n->clone;
	pthread_mutex_lock(&c->lock);
	if (f->prev)
		f->prev->next = f->next;
	else
		n->files = f->next;
	if (f->next)
		f->next->prev = f->prev;
	pthread_mutex_unlock(&c->lock);
	free(f);
	return node_unref(c, n);
}

ssize_t clone_read(CloneFile *f, uint64_t off, size_t len, void *buf)
{
	CloneNode *n = f->node;
	Clone *c = n->clone;
	uint64_t size;
	size_t done = 0;

	pthread_mutex_lock(&n->lock);
	size = n->size;
	pthread_mutex_unlock(&n->lock);
	if (off >= size)
		return 0;
	len = (size_t)MIN((uint64_t)MIN(len, (size_t)SSIZE_MAX), size - off);
	while (done < len) {
		uint64_t pos = off + done;
		size_t piece = (size_t)MIN(len - done, c->chunk_size - pos % c->chunk_size);
		int r = node_read_piece(c, n, pos, piece, (uint8_t *)buf + done);
		if (r < 0)
			return r;
		done += piece;
	}
	return (ssize_t)done;
}

/* An error after some chunks were written gives a short count, as write(2) does. */
ssize_t clone_write(CloneFile *f, uint64_t off, size_t len, const void *buf)
{
	CloneNode *n = f->node;
	Clone *c = n->clone;
	size_t done = 0;
	int r = 0;

	if ((f->flags & O_ACCMODE) == O_RDONLY)
		return -EBADF;
	len = MIN(len, (size_t)SSIZE_MAX);
	if (off > (uint64_t)INT64_MAX - len)
		return -EFBIG;
	pthread_rwlock_rdlock(&c->space);
	while (done < len) {
		uint64_t pos = off + done;
		size_t piece = (size_t)MIN(len - done, c->chunk_size - pos % c->chunk_size);
		r = node_write_piece(c, n, pos, piece, (const uint8_t *)buf + done);
		if (r < 0)
			break;
		done += piece;
	}
	pthread_rwlock_unlock(&c->space);
	return done > 0 ? (ssize_t)done : r < 0 ? r : 0;
}

/* datasync changes nothing: size and times are flushed either way, and cost one row update. */
int clone_fsync(CloneFile *f, bool datasync _unused_)
{
	return node_persist(f->node->clone, f->node);
}

int64_t clone_lseek(CloneFile *f, int64_t off, int whence)
{
	CloneNode *n = f->node;
	uint64_t size;

	if (whence != SEEK_DATA && whence != SEEK_HOLE)
		return -EINVAL;
	pthread_mutex_lock(&n->lock);
	size = n->size;
	pthread_mutex_unlock(&n->lock);
	if (off < 0 || (uint64_t)off >= size)
		return -ENXIO;
	return whence == SEEK_DATA ? off : (int64_t)size;
}

/*
 * Namespace changes are committed (synchronous=FULL) before they return, and
 * the upper directory's entries are made durable with them, so a directory
 * has nothing left to flush: answer for the directory alone, never for the
 * pending data of the files in it.
 */
int clone_fsyncdir(Clone *c, uint32_t dir)
{
	InodeRow row;
	int r;
	pthread_mutex_lock(&c->lock);
	r = dir_get(c, dir, &row);
	pthread_mutex_unlock(&c->lock);
	return r;
}

int clone_statfs(Clone *c, struct statvfs *ret)
{
	return fstatvfs(c->dir_fd, ret) < 0 ? -errno : 0;
}
