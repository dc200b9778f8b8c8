/*
 * Snapshot manifests: every committed snapshot is also an object
 * (snapshots/NAME, store/manifest.h), written when its row changes and
 * removed when it is deleted, so that repair can rebuild the catalog from
 * objects alone. docs/design.md, "Manifests and repair".
 */
#include "store/repo_int.h"
#include "store/manifest.h"
#include "store/sqldb.h"
#include "common/log.h"
#include "common/util.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <string.h>

/*
 * A digest of a snapshot's row (the columns from first on): its manifest is
 * rewritten when it changes (pin, note, verify).
 */
static int row_digest(sqlite3_stmt *s, int first, ChunkId *ret)
{
	size_t cap = 1024, len = 0;
	char *buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	for (int i = first; i < sqlite3_column_count(s); i++) {
		const void *v = sqlite3_column_blob(s, i);
		size_t n = (size_t)sqlite3_column_bytes(s, i);
		if (len + n + 2 > cap) {
			cap = 2 * (len + n + 2);
			char *grown = realloc(buf, cap);
			if (!grown) {
				free(buf);
				return -ENOMEM;
			}
			buf = grown;
		}
		buf[len++] = (char)sqlite3_column_type(s, i);
		if (n)
			memcpy(buf + len, v, n);
		len += n;
		buf[len++] = 0x1f;
	}
	chunk_hash(buf, len, ret);
	free(buf);
	return 0;
}

/*
 * Write the manifest of a snapshot: built in a file under the work
 * directory's tmp/ and stored from there, never whole in memory (a full of
 * 10 million chunks has a 366 MiB image; built in memory and serialized it
 * took ~4 times that).
 */
static int manifest_put(Repo *r, int64_t rowid, const char *name)
{
	_cleanup_free_ char *obj = NULL, *tmp = NULL;
	int e = 0;
	/* one name, as the catalog's own temporary files: a writer writes one manifest at a time */
	if (asprintf(&obj, MANIFEST_PREFIX "%s", name) < 0 ||
	    asprintf(&tmp, "%s/tmp/manifest-put.db", r->workdir) < 0)
		e = -ENOMEM;
	if (e == 0 && unlink(tmp) < 0 && errno != ENOENT) /* left by a crash */
		e = -errno;
	if (e == 0)
		e = manifest_export_file(r->catalog, rowid, tmp);
	if (e == 0) {
		_cleanup_close_ int fd = open(tmp, O_RDONLY | O_CLOEXEC);
		e = fd < 0 ? -errno : repo_meta_put_file(r, obj, fd);
		unlink(tmp);
	}
	return e;
}

/* Remember what was written for name (digest), or forget it (NULL). */
static int manifest_state_set(sqlite3 *db, const char *name, const ChunkId *digest)
{
	char hex[2 * PGBAKFS_CHUNK_ID_LEN + 1], *sql;
	int e;
	if (digest) {
		hex_encode(digest->b, sizeof(digest->b), hex);
		sql = sqlite3_mprintf("INSERT OR REPLACE INTO manifest_state VALUES(%Q, x'%s')", name, hex);
	} else
		sql = sqlite3_mprintf("DELETE FROM manifest_state WHERE name = %Q", name);
	e = sql ? sqldb_exec(db, sql) : -ENOMEM;
	sqlite3_free(sql);
	return e;
}

/* A snapshot that became a block's carrier: its manifest is written again. */
static int manifest_mark_rewrite(int64_t snap _unused_, const char *name, void *ud)
{
	return manifest_state_set(ud, name, NULL);
}

/*
 * Where catalog_idblocks_assign_carriers must look. A carrier is deleted only
 * with its snapshot, whose manifest is then still remembered here until it is
 * removed: while one is, every item without a live carrier is looked for
 * (0), whichever binary deleted it. Otherwise only items never carried are
 * orphans, and only snapshots whose manifest was never written can use them:
 * a written manifest's snapshot had every item carried when it was written,
 * and its tree does not change.
 */
static int carriers_from(sqlite3 *db, int64_t *ret)
{
	static const char sql[] =
		"SELECT EXISTS(SELECT 1 FROM manifest_state m WHERE NOT EXISTS(SELECT 1 FROM"
		"  snapshots s WHERE s.name = m.name AND s.status NOT IN ('running', 'deleted'))),"
		" (SELECT min(s.id) FROM snapshots s WHERE s.status NOT IN ('running', 'deleted')"
		"  AND NOT EXISTS(SELECT 1 FROM manifest_state m WHERE m.name = s.name))";
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int e = sqldb_prepare(db, sql, &s);
	if (e == 0)
		e = sqldb_step_row(db, s); /* an aggregate: always one row */
	if (e == 0) {
		if (sqlite3_column_int(s, 0))
			*ret = 0;
		else if (sqlite3_column_type(s, 1) == SQLITE_NULL)
			*ret = INT64_MAX;
		else
			*ret = sqlite3_column_int64(s, 1);
	}
	return e;
}

typedef struct ManifestWork {
	int64_t rowid;
	char *name;
	ChunkId digest;
	bool gone; /* deleted: remove its manifest */
} ManifestWork;

/*
 * Bring the manifest objects in line with the catalog: write those of new or
 * changed snapshots, remove those of deleted ones. The catalog remembers what
 * it wrote (manifest_state), so an unchanged repository costs one query.
 */
int repo_manifests_sync(Repo *r)
{
	sqlite3 *db = catalog_sqlite(r->catalog);
	sqlite3_stmt *s = NULL;
	ManifestWork *w = NULL;
	size_t n = 0;
	int rc, e = 0;

	static const char *const queries[] = {
		/* committed snapshots (deleted ones: 2nd column 1), what was last written for them */
		"SELECT s.id, s.name, s.status = 'deleted', m.digest, s.* FROM snapshots s"
		" LEFT JOIN manifest_state m ON m.name = s.name WHERE s.status <> 'running'"
		/* oldest first: an item's carrier is older than any other snapshot naming it,
		 * so its manifest is written first (format 3) */
		" ORDER BY s.id",
		/* manifests of snapshots purged since */
		"SELECT NULL, m.name, 1, m.digest FROM manifest_state m"
		" WHERE NOT EXISTS (SELECT 1 FROM snapshots s WHERE s.name = m.name)",
	};
	int64_t from_snap = 0;
	e = sqldb_exec(db, "CREATE TABLE IF NOT EXISTS manifest_state(name TEXT PRIMARY KEY,"
			   " digest BLOB NOT NULL) WITHOUT ROWID");
	if (e == 0)
		e = carriers_from(db, &from_snap);
	/* blocks whose carrier is new or gone move first (catalog_idblocks_assign_carriers),
	 * so the new carrier's manifest is written below before the old one is removed */
	if (e == 0)
		e = catalog_idblocks_assign_carriers(r->catalog, from_snap, manifest_mark_rewrite, db);
	for (size_t q = 0; q < ELEMENTSOF(queries) && e == 0; q++) {
		e = sqldb_prepare(db, queries[q], &s);
		rc = SQLITE_OK;
		while (e == 0 && (rc = sqlite3_step(s)) == SQLITE_ROW) {
			bool gone = sqlite3_column_int(s, 2) != 0;
			bool known = sqlite3_column_type(s, 3) != SQLITE_NULL;
			ManifestWork m = {.rowid = sqlite3_column_int64(s, 0), .gone = gone};
			if (gone && !known)
				continue;
			if (!gone) {
				/* s.*: after id, name, deleted, digest */
				if ((e = row_digest(s, 4, &m.digest)) < 0)
					break;
				if (known && sqlite3_column_bytes(s, 3) == sizeof(m.digest.b) &&
				    memcmp(sqlite3_column_blob(s, 3), m.digest.b, sizeof(m.digest.b)) == 0)
					continue;
			}
			ManifestWork *v = realloc(w, (n + 1) * sizeof(*w));
			if (v)
				w = v;
			if (!v || !(m.name = strdup((const char *)sqlite3_column_text(s, 1)))) {
				e = -ENOMEM;
				break;
			}
			w[n++] = m;
		}
		if (e == 0 && rc != SQLITE_DONE)
			e = sqldb_fail(db, rc, "manifest sync");
		sqlite3_finalize(s);
		s = NULL;
	}
	/* writes before removals: a block moving carrier is in some manifest at every moment */
	for (size_t k = 0; k < 2 * n && e == 0; k++) {
		size_t i = k % n;
		if (w[i].gone != (k >= n))
			continue;
		_cleanup_free_ char *obj = NULL;
		if (asprintf(&obj, MANIFEST_PREFIX "%s", w[i].name) < 0)
			e = -ENOMEM;
		else
			e = w[i].gone ? store_delete(r->backend, obj)
				      : manifest_put(r, w[i].rowid, w[i].name);
		if (e == 0)
			e = manifest_state_set(db, w[i].name, w[i].gone ? NULL : &w[i].digest);
		if (e < 0)
			log_warning("could not store the manifest of snapshot %s (tried again at the "
				    "next change): %s", w[i].name, strerror(-e));
	}
	for (size_t i = 0; i < n; i++)
		free(w[i].name);
	free(w);
	return e;
}
