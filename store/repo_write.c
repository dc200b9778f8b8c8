/*
 * A writer's life: repo_write_begin (the writer lock and a synced copy when
 * published), repo_write_end and repo_write_publish (manifests, then the next
 * generation), repo_upgrade to the current format, and key change.
 */
#include "store/repo_int.h"
#include "common/log.h"
#include "common/util.h"

#include <sqlite3.h>
#include <string.h>
#include <unistd.h>

int repo_write_begin(Repo *r, char **ret_holder)
{
	RemoteLockOptions o = {.wait_s = r->lock_wait_s};
	int e;

	if (r->writing)
		return -EALREADY;
	if (!r->remote) {
		r->writing = true;
		return 0;
	}
	e = remote_lock_acquire(r->backend, &o, &r->lock, ret_holder);
	if (e < 0)
		return e;
	/* readers on this machine now use the local copy as it is */
	e = repo_cache_lock(r, true, &r->cache_lock_fd);
	if (e == 0)
		e = repo_catalog_sync(r);
	if (e == 0)
		e = repo_gen_file_write(r, r->gen, true);
	if (e < 0) {
		if (r->cache_lock_fd >= 0)
			close(r->cache_lock_fd);
		r->cache_lock_fd = -1;
		r->lock = remote_lock_release(r->lock);
	}
	r->writing = e == 0;
	return e;
}

/* Still the writer, and nobody published since we synced? */
int repo_publish_allowed(Repo *r)
{
	uint64_t latest;
	int e = remote_lock_check(r->lock);
	if (e == 0)
		e = remote_catalog_latest(r->backend, &latest);
	if (e == 0 && latest != r->gen)
		e = -ESTALE;
	return e;
}

static int publish_next(Repo *r)
{
	int e = repo_publish_allowed(r); /* again: manifests took time */
	if (e == 0)
		e = repo_catalog_publish_next(r);
	if (e == 0) {
		int p = repo_catalog_prune(r);
		if (p < 0)
			log_warning("could not remove old catalog generations: %s", strerror(-p));
	}
	return e;
}

int repo_write_end(Repo *r, bool publish)
{
	int e = 0;
	if (!r->writing)
		return 0;
	r->writing = false;
	/* a writer that lost the lock changes no object, manifests included */
	if (publish && r->remote)
		e = repo_publish_allowed(r);
	/* the catalog is what counts: a manifest that failed is written at the next change */
	if (publish && e == 0)
		repo_manifests_sync(r);
	if (!r->remote)
		return 0;
	if (publish && e == 0) {
		e = publish_next(r);
		if (e == 0)
			e = repo_gen_file_write(r, r->gen, false);
	}
	r->lock = remote_lock_release(r->lock);
	close(r->cache_lock_fd);
	r->cache_lock_fd = -1;
	return e;
}

int repo_write_publish(Repo *r)
{
	int e;
	if (!r->remote || !r->lock)
		return 0;
	e = repo_publish_allowed(r);
	if (e == 0)
		repo_manifests_sync(r);
	if (e == 0)
		e = publish_next(r); /* leaves catalog.gen dirty: the writer goes on */
	return e;
}

void repo_publish_whole(Repo *r)
{
	r->publish_whole = true;
}

int repo_write_check(Repo *r)
{
	return r->remote && r->lock ? remote_lock_check(r->lock) : 0;
}

/* ---- upgrade ---- */

/*
 * Order: config first. From the moment a block-form list may exist, the
 * config says format 2, so a binary that knows only format 1 refuses the
 * repository instead of misreading it. Every state after that is a valid
 * format-2 repository: inline lists are allowed in format 2 (they are what
 * format 1 wrote), and format-1 manifests stay importable. So an upgrade cut
 * short anywhere leaves a repository the new binary opens, and running
 * upgrade again finishes it (it converts what is left; with nothing left it
 * is "already format 2", and only writes the manifests still pending).
 */
int repo_upgrade(Repo *r, RepoUpgradeResult *ret)
{
	RepoUpgradeResult res = {.from_format = r->config.format};
	_cleanup_close_ int maint_fd = -1;
	uint64_t left = 0;
	int e = 0;

	if (!r->writing)
		return -EINVAL;
	if (!r->remote)
		e = repo_lock_maintenance(r, &maint_fd); /* no gc meanwhile */
	if (e == 0 && r->config.format >= PGBAKFS_REPO_FORMAT)
		e = catalog_idblocks_inline_count(r->catalog, &left);
	/* with nothing to convert, only manifests an interrupted run left are written */
	res.already = e == 0 && r->config.format >= PGBAKFS_REPO_FORMAT && left == 0;
	if (e == 0 && r->config.format < PGBAKFS_REPO_FORMAT) {
		RepoConfig c = r->config;
		c.format = PGBAKFS_REPO_FORMAT;
		e = repo_config_put(r->backend, &c);
		if (e == 0)
			r->config.format = PGBAKFS_REPO_FORMAT;
		/* format 3: manifests carry contents and directories once (carriers) */
		if (e == 0)
			catalog_set_format(r->catalog, PGBAKFS_REPO_FORMAT);
	}
	if (e == 0 && !res.already) {
		int k = catalog_chunks_rekey(r->catalog);
		e = k < 0 ? k : 0;
	}
	if (e == 0 && !res.already) {
		catalog_set_idblocks(r->catalog, true);
		e = catalog_idblocks_convert(r->catalog, &res.lists_converted);
	}
	/* every manifest is written again, in format 2 */
	if (e == 0 && !res.already && sqlite3_exec(catalog_sqlite(r->catalog),
				   "CREATE TABLE IF NOT EXISTS manifest_state(name TEXT PRIMARY KEY,"
				   " digest BLOB NOT NULL) WITHOUT ROWID; DELETE FROM manifest_state",
				   NULL, NULL, NULL) != SQLITE_OK)
		e = -EIO;
	if (e == 0 && r->remote)
		e = repo_publish_allowed(r); /* a writer that lost the lock changes no object */
	if (e == 0)
		e = repo_manifests_sync(r);
	if (e == 0)
		*ret = res;
	return e;
}

int repo_key_change(Repo *r, const char *old_pass, size_t old_len, const char *new_pass,
		    size_t new_len)
{
	char *text = NULL, *next = NULL;
	size_t len, next_len = 0;
	int e;
	if (!r->encrypted)
		return -EINVAL;
	e = store_get_all(r->backend, "keys", KEYS_MAX_BYTES, (void **)&text, &len);
	if (e == 0)
		e = crypt_keyfile_rewrap(text, len, old_pass, old_len, new_pass, new_len, NULL, &next,
					 &next_len);
	if (e == 0)
		e = store_put(r->backend, "keys", next, next_len);
	free(text);
	free(next);
	return e;
}
