/*
 * repair --rebuild-catalog: a new catalog from the packs and manifests
 * (store/repair.c), swapped in place of a local repository's or published as
 * the next generation. docs/design.md, "Manifests and repair".
 */
#include "store/repo_int.h"
#include "store/repair.h"
#include "store/sqldb.h"
#include "common/log.h"
#include "common/util.h"

#include <sqlite3.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int manifest_fetch(const char *name, void **ret_buf, size_t *ret_len, void *ud)
{
	return repo_meta_get(ud, name, ret_buf, ret_len);
}

/* Unlink path+suffix; a missing one is fine. */
static int unlink_sfx(const char *path, const char *sfx)
{
	_cleanup_free_ char *p = NULL;
	if (asprintf(&p, "%s%s", path, sfx) < 0)
		return -ENOMEM;
	return unlink(p) < 0 && errno != ENOENT ? -errno : 0;
}

/* Hard-link path+sfx as to+sfx; a missing source is fine. */
static int link_sfx(const char *path, const char *to, const char *sfx)
{
	_cleanup_free_ char *a = NULL, *b = NULL;
	if (asprintf(&a, "%s%s", path, sfx) < 0 || asprintf(&b, "%s%s", to, sfx) < 0)
		return -ENOMEM;
	return link(a, b) < 0 && errno != ENOENT ? -errno : 0;
}

/* Fold a catalog's WAL into its file, if it opens at all (a damaged one may not). */
static void catalog_fold_wal(const char *path)
{
	sqlite3 *db = NULL;
	if (sqldb_open(path, NULL, &db) == 0)
		sqlite3_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
	sqldb_close(db); /* the last connection: an empty WAL goes away */
}

/*
 * Put the rebuilt catalog fresh in place of a local repository's, keeping
 * the old one as catalog.db.old(-wal). Nobody has either open (the in-use
 * lock is ours). At every step the repository has a catalog: the old one is
 * linked, not moved, to its .old name, its WAL folded in or linked beside it
 * and then removed (a WAL must never meet another database file), and the
 * new one replaces it in one rename.
 */
static int catalog_replace_local(Repo *r, const char *fresh)
{
	_cleanup_free_ char *old = NULL, *fresh_wal = NULL;
	int e = 0;

	if (asprintf(&old, "%s.old", r->catalog_path) < 0 ||
	    asprintf(&fresh_wal, "%s-wal", fresh) < 0)
		return -ENOMEM;
	if (access(fresh_wal, F_OK) == 0)
		return -EIO; /* the rebuilt catalog was not checkpointed and closed */
	catalog_fold_wal(r->catalog_path);
	e = unlink_sfx(old, "");
	if (e == 0)
		e = unlink_sfx(old, "-wal");
	if (e == 0)
		e = unlink_sfx(old, "-shm");
	if (e == 0)
		e = link_sfx(r->catalog_path, old, "");
	if (e == 0)
		e = link_sfx(r->catalog_path, old, "-wal");
	if (e == 0)
		e = fsync_dir(r->workdir);
	if (e == 0)
		e = unlink_sfx(r->catalog_path, "-wal");
	if (e == 0)
		e = unlink_sfx(r->catalog_path, "-shm");
	if (e == 0 && rename(fresh, r->catalog_path) < 0)
		e = -errno;
	if (e == 0)
		e = fsync_dir(r->workdir);
	return e;
}

/*
 * Build the new catalog beside the old one, then put it in place: a local
 * repository's catalog.db is swapped (the old one kept as catalog.db.old);
 * a published one becomes the next generation, under the writer lock.
 */
int repo_rebuild_catalog(const RepoLocation *l, RepairStats *ret)
{
	Repo *r = NULL;
	Catalog *fresh = NULL;
	_cleanup_free_ char *tmp = NULL;
	char *holder = NULL;
	uint64_t latest = 0;
	int maint_fd = -1;
	int e = repo_open_bare(l, &r);

	if (e < 0)
		return e;
	if (asprintf(&tmp, "%s/tmp/catalog-rebuild.db", r->workdir) < 0) {
		repo_free(r);
		return -ENOMEM;
	}
	unlink(tmp);
	if (r->remote) { /* first the lock: no writer may publish while the objects are read */
		RemoteLockOptions o = {.wait_s = r->lock_wait_s};
		e = remote_lock_acquire(r->backend, &o, &r->lock, &holder);
		if (e == 0)
			e = repo_cache_lock(r, true, &r->cache_lock_fd);
	} else {
		e = repo_lock_maintenance(r, &maint_fd); /* no gc or expire meanwhile */
		if (e == 0) /* and nobody else with the catalog open: it is about to be replaced */
			e = repo_use_lock(r, LOCK_EX, &r->use_lock_fd);
	}
	if (e == 0)
		e = repo_catalog_create(tmp, &r->work_owner);
	if (e == 0)
		e = repo_catalog_connect(r, tmp, &fresh);
	if (e == 0 && r->config.format < 2) /* what the release of format 1 reads */
		e = catalog_chunks_unkeyed(fresh);
	if (e == 0)
		e = repair_rebuild_catalog(r->backend, fresh, MANIFEST_PREFIX, manifest_fetch, r, ret);
	catalog_free(fresh);
	if (e == 0 && r->remote) {
		e = remote_catalog_latest(r->backend, &latest);
		if (e == -ENOENT)
			e = 0;
		/* until published, this machine's copy is not any generation */
		if (e == 0)
			e = repo_gen_file_write(r, latest, true);
		if (e == 0) {
			mode_t old = umask(0077);
			e = repo_catalog_install(r, tmp);
			umask(old);
		}
		if (e == 0)
			e = repo_catalog_connect(r, r->catalog_path, &r->catalog);
		/* above any generation another machine may have cached before the catalog was
		 * lost (they refuse to go back in time): a number from the clock, in ms */
		uint64_t next = MAX(latest + 1, (uint64_t)time(NULL) * 1000);
		if (e == 0)
			e = remote_lock_check(r->lock);
		if (e == 0)
			e = repo_catalog_publish(r, next);
		if (e == 0)
			e = repo_gen_file_write(r, next, false);
	} else if (e == 0) {
		e = catalog_replace_local(r, tmp);
	}
	if (e < 0 && holder)
		log_error("the writer lock is held by %s", holder);
	free(holder);
	unlink(tmp);
	if (maint_fd >= 0)
		close(maint_fd);
	repo_free(r);
	return e;
}
