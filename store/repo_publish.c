/*
 * The catalog of a repository published by generations (S3, or encrypted):
 * the local copy and its generation (catalog.gen), the base copy deltas are
 * made against, bringing the copy up to the newest generation (whole
 * catalogs and delta chains), publishing the next generation, and pruning
 * old ones. docs/design.md, "Published catalogs".
 */
#include "store/repo_int.h"
#include "store/delta.h"
#include "store/sqldb.h"
#include "common/log.h"
#include "common/util.h"

#include <fcntl.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* generations kept in the bucket besides the newest: a reader that listed an
 * older one a moment ago can still fetch it */
#define CATALOG_GENERATIONS_KEPT 3
/* from this repository format on, a publication may be a delta (docs/design.md) */
#define CATALOG_FORMAT_DELTAS 2
/* a whole catalog again once the deltas since the last one number more than
 * this, or weigh more than 1/CATALOG_DELTAS_FRACTION of it and more than
 * CATALOG_DELTAS_FLOOR bytes (RepoLocation.catalog_deltas_max overrides the count: tests) */
#define CATALOG_DELTAS_MAX 64
#define CATALOG_DELTAS_FRACTION 4
#define CATALOG_DELTAS_FLOOR (1024 * 1024)
/*
 * No delta is computed when the catalog grew by more than this many times
 * the newest whole catalog's size (and the floor): its patchset, at least a
 * quarter of the growth, would weigh more than that catalog, and a whole
 * one is published instead (the same outcome, without the diff's memory).
 * Nor past CATALOG_DELTA_GROWTH_MAX: the diff holds ~1.5 times the growth
 * in memory (one backup of 10 million new chunks: ~1.2 GB of catalog rows).
 */
#define CATALOG_DELTA_GROWTH_RATIO 4
#define CATALOG_DELTA_GROWTH_MAX (1ULL << 30)

/* ---- the local copy of a remote catalog ---- */

static int gen_file_read(Repo *r, uint64_t *ret_gen, bool *ret_dirty)
{
	_cleanup_free_ char *path = NULL, *text = NULL;
	unsigned long long g;
	char word[16] = "";
	int e = asprintf(&path, "%s/catalog.gen", r->workdir) < 0 ? -ENOMEM : 0;
	if (e == 0)
		e = file_read_all(path, 256, &text, NULL);
	if (e < 0)
		return e;
	if (sscanf(text, "%llu %15s", &g, word) < 1)
		return -EBADMSG;
	*ret_gen = g;
	*ret_dirty = strcmp(word, "dirty") == 0;
	return 0;
}

int repo_gen_file_write(Repo *r, uint64_t gen, bool dirty)
{
	_cleanup_free_ char *path = NULL;
	char text[64];
	int n = snprintf(text, sizeof(text), "%llu%s\n", (unsigned long long)gen,
			 dirty ? " dirty" : "");
	if (asprintf(&path, "%s/catalog.gen", r->workdir) < 0)
		return -ENOMEM;
	return file_write_atomic(path, text, (size_t)n, 0600);
}

/* Copy the database file src into the catalog, in place: open connections see the change. */
int repo_catalog_install(Repo *r, const char *src)
{
	sqlite3 *from = NULL, *to = NULL;
	sqlite3_backup *bk;
	int rc;

	rc = sqldb_open(src, &(SqldbOptions){.flags = SQLITE_OPEN_READONLY}, &from) == 0 &&
			     sqldb_open(r->catalog_path,
					&(SqldbOptions){.flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
							.busy_ms = 60000},
					&to) == 0
		     ? SQLITE_OK
		     : SQLITE_CANTOPEN;
	if (rc == SQLITE_OK) {
		bk = sqlite3_backup_init(to, "main", from, "main");
		if (!bk)
			rc = sqlite3_errcode(to);
		else {
			do {
				rc = sqlite3_backup_step(bk, -1);
				if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
					sqlite3_sleep(50);
			} while (rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED);
			rc = sqlite3_backup_finish(bk);
		}
	}
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(to, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		log_error("could not install the catalog copy: %s",
			  to ? sqlite3_errmsg(to) : sqlite3_errstr(rc));
	sqlite3_close(from);
	sqlite3_close(to);
	return rc == SQLITE_OK ? 0 : -EIO;
}

/*
 * The base copy, <workdir>/catalog.base.db, is the catalog exactly as the
 * generation named in catalog.base.gen (no local rows, no unpublished
 * change): what a writer diffs its catalog against to make a delta. A
 * missing catalog.base.gen means no valid copy; it is removed before the
 * copy is changed and written after, so a crash between leaves none.
 */
static void work_path(const Repo *r, const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s", r->workdir, name);
}

static int base_gen_read(Repo *r, uint64_t *ret)
{
	char path[PATH_MAX], db[PATH_MAX];
	_cleanup_free_ char *text = NULL;
	unsigned long long g;
	int e;

	work_path(r, "catalog.base.gen", path, sizeof(path));
	work_path(r, "catalog.base.db", db, sizeof(db));
	e = file_read_all(path, 256, &text, NULL);
	if (e < 0)
		return e;
	if (sscanf(text, "%llu", &g) != 1 || access(db, F_OK) < 0)
		return -ENOENT;
	*ret = g;
	return 0;
}

static int base_gen_write(Repo *r, uint64_t gen)
{
	char path[PATH_MAX], text[32];
	work_path(r, "catalog.base.gen", path, sizeof(path));
	int n = snprintf(text, sizeof(text), "%llu\n", (unsigned long long)gen);
	return file_write_atomic(path, text, (size_t)n, 0600);
}

static void base_gen_clear(Repo *r)
{
	char path[PATH_MAX];
	work_path(r, "catalog.base.gen", path, sizeof(path));
	unlink(path);
}

/* Make the database file img (a generation's image) the base copy of generation gen. */
static int base_copy_replace(Repo *r, const char *img, uint64_t gen)
{
	static const char *const names[] = {"catalog.base.db-wal", "catalog.base.db-shm"};
	char db[PATH_MAX], f[PATH_MAX];
	int e = 0;

	work_path(r, "catalog.base.db", db, sizeof(db));
	base_gen_clear(r);
	/* a WAL left by a crash would be replayed over the new file */
	for (size_t i = 0; i < ELEMENTSOF(names); i++) {
		work_path(r, names[i], f, sizeof(f));
		if (unlink(f) < 0 && errno != ENOENT)
			e = -errno;
	}
	if (e == 0 && rename(img, db) < 0)
		e = -errno;
	if (e == 0)
		e = base_gen_write(r, gen);
	return e;
}

/* The deltas that lead from one generation to a later one, fetched and checked. */
typedef struct DeltaChain {
	void **obj;
	const void **cs;
	size_t *len;
	size_t n;
	uint64_t from, to;
} DeltaChain;

static void chain_clear(DeltaChain *c)
{
	for (size_t i = 0; i < c->n; i++)
		free(c->obj[i]);
	free(c->obj);
	free(c->cs);
	free(c->len);
	*c = (DeltaChain){0};
}

/* Bytes of the deltas from+1..to in the listing; UINT64_MAX when one is missing. */
static uint64_t chain_size(const RemoteCatalogList *cl, uint64_t from, uint64_t to)
{
	uint64_t sum = 0;
	if (to - from > cl->n) /* fewer objects than generations (a jump: repair) */
		return UINT64_MAX;
	for (uint64_t g = from + 1; g <= to; g++) {
		const RemoteGen *d = remote_catalog_list_find(cl, g, true);
		if (!d)
			return UINT64_MAX;
		sum += d->size;
	}
	return sum;
}

/*
 * Fetch the deltas from+1..to and check each (length, GCM tag when sealed,
 * the generations it joins, its SHA-256): -EBADMSG with one error line for a
 * damaged one, -ENOENT when one is missing (the caller falls back to a base).
 */
static int chain_fetch(Repo *r, const RemoteCatalogList *cl, uint64_t from, uint64_t to,
		       DeltaChain *ret)
{
	DeltaChain c = {.from = from, .to = to};
	size_t n = (size_t)(to - from);
	int e = 0;

	if (to < from)
		return -EINVAL;
	if (to - from > cl->n) /* fewer objects than generations: some are missing */
		return -ENOENT;
	if (n && (!(c.obj = calloc(n, sizeof(*c.obj))) || !(c.cs = calloc(n, sizeof(*c.cs))) ||
		  !(c.len = calloc(n, sizeof(*c.len))))) {
		chain_clear(&c);
		return -ENOMEM;
	}
	for (uint64_t g = from + 1; g <= to && e == 0; g++) {
		char name[64];
		size_t len = 0;
		remote_catalog_delta_name(g, name, sizeof(name));
		if (!remote_catalog_list_find(cl, g, true)) {
			log_debug("catalog delta %s is not in the repository", name);
			e = -ENOENT;
			break;
		}
		e = repo_meta_get(r, name, &c.obj[c.n], &len);
		if (e == 0)
			c.n++;
		if (e == 0)
			e = delta_unframe(c.obj[c.n - 1], len, g - 1, g, &c.cs[c.n - 1], &c.len[c.n - 1]);
		if (e == -EBADMSG)
			log_warning("the catalog delta \"%s\" is damaged (truncated, altered or "
				  "misnamed): not applied", name);
	}
	if (e < 0) {
		chain_clear(&c);
		return e;
	}
	*ret = c;
	return 0;
}

/*
 * Apply a chain to the database at path, all or nothing. Through
 * catalog_open, which brings an older file to this binary's schema first,
 * as the writer's copies were; secure_delete, so rows a delta rewrote (a
 * scrubbed password) do not stay in free pages.
 */
static int chain_apply(const char *path, const DeltaChain *c)
{
	Catalog *cat = NULL;
	int e = catalog_open(path, false, &cat);
	if (e == 0 && sqlite3_exec(catalog_sqlite(cat), "PRAGMA secure_delete=ON", NULL, NULL,
				   NULL) != SQLITE_OK)
		e = -EIO;
	if (e == 0)
		e = delta_apply(catalog_sqlite(cat), c->cs, c->len, c->n);
	catalog_free(cat);
	return e;
}

/* The base copy at c->from follows the catalog to c->to, or is dropped. */
static void base_copy_forward(Repo *r, const DeltaChain *c)
{
	char db[PATH_MAX];
	work_path(r, "catalog.base.db", db, sizeof(db));
	uint64_t g;
	if (base_gen_read(r, &g) < 0 || g != c->from)
		return;
	base_gen_clear(r);
	if (chain_apply(db, c) == 0)
		base_gen_write(r, c->to);
	else
		unlink(db);
}

/*
 * The plain bytes of the object name as the file path (0600, synced),
 * streamed: a whole catalog can be larger than memory. On error no file.
 */
static int meta_get_path(Repo *r, const char *name, const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int e = fd < 0 ? -errno : repo_meta_get_file(r, name, fd);

	if (e == 0 && fsync(fd) < 0)
		e = -errno;
	if (fd >= 0 && close(fd) < 0 && e == 0)
		e = -errno;
	if (e < 0 && fd >= 0)
		unlink(path);
	return e;
}

/*
 * Fetch the whole generation gen into the local catalog (in place: open
 * connections see it) and, when deltas are in use, keep the image as the
 * base copy. catalog.gen is left to the caller.
 */
static int catalog_fetch(Repo *r, uint64_t gen)
{
	char name[64];
	_cleanup_free_ char *tmp = NULL;
	int e;

	if (asprintf(&tmp, "%s/tmp/catalog-fetch.db", r->workdir) < 0)
		return -ENOMEM;
	remote_catalog_name(gen, name, sizeof(name));
	e = meta_get_path(r, name, tmp);
	if (e == -EBADMSG)
		log_warning("the catalog generation \"%s\" is damaged", name);
	if (e == 0) {
		mode_t old = umask(0077);
		e = repo_catalog_install(r, tmp);
		umask(old);
	}
	if (e == 0 && r->config.format >= CATALOG_FORMAT_DELTAS &&
	    base_copy_replace(r, tmp, gen) < 0)
		base_gen_clear(r);
	unlink(tmp);
	return e;
}

/*
 * From the local copy at have, apply the deltas up to latest. Anything short
 * of the whole chain applied (a delta missing or damaged, a conflict, a chain
 * heavier than the newest base) leaves the copy as it was: the caller then
 * fetches a base.
 */
static int catalog_forward(Repo *r, const RemoteCatalogList *cl, uint64_t have, uint64_t latest)
{
	const RemoteGen *b = remote_catalog_list_base(cl, latest);
	DeltaChain c;
	uint64_t size = chain_size(cl, have, latest);
	int e;

	if (size == UINT64_MAX)
		return -ENOENT;
	if (b && b->gen > have && size > b->size)
		return -E2BIG; /* the base is cheaper to fetch */
	e = chain_fetch(r, cl, have, latest, &c);
	if (e < 0)
		return e;
	e = repo_gen_file_write(r, have, true); /* a crash while applying: fetch again */
	if (e == 0)
		e = chain_apply(r->catalog_path, &c);
	if (e == 0) {
		log_debug("applied catalog deltas %llu..%llu (%zu, %llu bytes)",
			  (unsigned long long)have + 1, (unsigned long long)latest, c.n,
			  (unsigned long long)size);
		base_copy_forward(r, &c);
		e = repo_gen_file_write(r, latest, false);
		if (e == 0)
			r->gen = latest;
	} else if (repo_gen_file_write(r, have, false) < 0) { /* rolled back: still have */
		log_warning("could not write %s/catalog.gen", r->workdir);
	}
	chain_clear(&c);
	return e;
}

/* Fetch the newest base at or below latest and apply the deltas after it. */
static int catalog_fetch_latest(Repo *r, const RemoteCatalogList *cl, uint64_t have,
				uint64_t latest)
{
	const RemoteGen *b = remote_catalog_list_base(cl, latest);
	DeltaChain c = {0};
	int e;

	if (!b) {
		log_warning("the repository has catalog deltas up to %llu but no whole catalog "
			  "before them", (unsigned long long)latest);
		return -EBADMSG;
	}
	/* every delta first: nothing is changed unless the whole way is there */
	e = chain_fetch(r, cl, b->gen, latest, &c);
	if (e == -ENOENT)
		log_warning("the catalog delta %llu is missing from the repository",
			  (unsigned long long)latest);
	if (e < 0)
		return e == -ENOENT ? -EBADMSG : e;
	log_debug("fetching catalog generation %llu%s", (unsigned long long)b->gen,
		  c.n ? " and the deltas after it" : "");
	e = repo_gen_file_write(r, have, true);
	if (e == 0)
		e = catalog_fetch(r, b->gen);
	if (e == 0 && c.n) {
		e = chain_apply(r->catalog_path, &c);
		if (e == 0) {
			log_debug("applied catalog deltas %llu..%llu (%zu)",
				  (unsigned long long)b->gen + 1, (unsigned long long)latest, c.n);
			base_copy_forward(r, &c);
		}
	}
	if (e == 0)
		e = repo_gen_file_write(r, latest, false);
	if (e == 0)
		r->gen = latest;
	chain_clear(&c);
	return e;
}

/* Bring the local copy to the newest generation if it is behind or was left dirty. */
int repo_catalog_sync(Repo *r)
{
	RemoteCatalogList cl = {0};
	uint64_t latest = 0, have = 0;
	bool dirty = false;
	int e = remote_catalog_list(r->backend, &cl);

	if (e == 0)
		e = remote_catalog_list_latest(&cl, &latest);
	if (e == -ENOENT)
		e = -EBADMSG; /* config without catalog: damaged */
	if (e < 0)
		goto out;
	e = gen_file_read(r, &have, &dirty);
	if (e == -ENOMEM)
		goto out;
	if (e < 0 && e != -ENOENT)
		log_warning("ignoring a damaged %s/catalog.gen: %s", r->workdir, strerror(-e));
	bool known = e == 0, present = access(r->catalog_path, F_OK) == 0;
	if (known && !dirty && have == latest && present) {
		r->gen = have;
		e = 0;
		goto out;
	}
	if (known && latest < have) {
		/* newer generations vanished: never work on an older catalog than one seen */
		log_warning("the newest catalog generation in the repository (%llu) is older than "
			    "this machine's copy (%llu); if that is on purpose, remove %s",
			    (unsigned long long)latest, (unsigned long long)have, r->workdir);
		e = -ESTALE;
		goto out;
	}
	if (known && !dirty && present) {
		e = catalog_forward(r, &cl, have, latest);
		if (e == 0)
			goto out;
		log_debug("catalog deltas from %llu not applied (%s): fetching a whole catalog",
			  (unsigned long long)have, strerror(-e));
	}
	e = catalog_fetch_latest(r, &cl, known ? have : 0, latest);
out:
	remote_catalog_list_clear(&cl);
	return e;
}

/*
 * Readers sync under the cache lock taken without waiting: when a writer on
 * this machine holds it, the local copy is newer than the bucket's and is
 * used as it is.
 */
int repo_refresh(Repo *r)
{
	int fd = -1, e;
	if (!r->remote || r->lock)
		return 0;
	e = repo_cache_lock(r, false, &fd);
	if (e == -EBUSY)
		return 0;
	if (e < 0)
		return e;
	e = repo_catalog_sync(r);
	close(fd);
	return e;
}

int repo_catalog_publish(Repo *r, uint64_t gen)
{
	_cleanup_free_ char *tmp = NULL;
	_cleanup_free_ char *sql = NULL;
	char name[64], *err = NULL;
	uint64_t size;
	int e;

	if (asprintf(&tmp, "%s/tmp/catalog-publish.db", r->workdir) < 0)
		return -ENOMEM;
	unlink(tmp);
	sql = sqlite3_mprintf("VACUUM INTO %Q", tmp);
	if (!sql)
		return -ENOMEM;
	if (sqlite3_exec(catalog_sqlite(r->catalog), sql, NULL, NULL, &err) != SQLITE_OK) {
		log_error("could not copy the catalog for publication: %s", err ? err : "?");
		sqlite3_free(err);
		sqlite3_free(sql);
		sql = NULL;
		return -EIO;
	}
	sqlite3_free(sql);
	sql = NULL;
	int fd = open(tmp, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		e = -errno;
		unlink(tmp);
		return e;
	}
	remote_catalog_name(gen, name, sizeof(name));
	e = store_size(r->backend, name, &size);
	if (e == 0)
		e = -ESTALE; /* someone published this generation: never overwrite it */
	else if (e == -ENOENT)
		e = repo_meta_put_file(r, name, fd);
	close(fd);
	/* the image is generation gen exactly: the next delta's base */
	if (e == 0 && r->config.format >= CATALOG_FORMAT_DELTAS && base_copy_replace(r, tmp, gen) < 0)
		base_gen_clear(r);
	unlink(tmp);
	if (e == 0)
		e = repo_gen_file_write(r, gen, r->lock != NULL);
	if (e == 0)
		r->gen = gen;
	return e;
}

/*
 * Make the base copy generation gen (the local catalog's), from the bucket
 * when this machine has none: after `upgrade`, or a crash while it changed.
 */
static int base_copy_ready(Repo *r, const RemoteCatalogList *cl, uint64_t gen)
{
	char tmp[PATH_MAX];
	work_path(r, "tmp/catalog-base.db", tmp, sizeof(tmp));
	const RemoteGen *b = remote_catalog_list_base(cl, gen);
	DeltaChain c = {0};
	char name[64];
	uint64_t have;
	int e;

	if (base_gen_read(r, &have) == 0 && have == gen)
		return 0;
	if (!b)
		return -ENOENT;
	log_debug("making the base copy of catalog generation %llu", (unsigned long long)gen);
	e = chain_fetch(r, cl, b->gen, gen, &c);
	remote_catalog_name(b->gen, name, sizeof(name));
	if (e == 0)
		e = meta_get_path(r, name, tmp);
	if (e == 0)
		e = base_copy_replace(r, tmp, b->gen);
	unlink(tmp);
	if (e == 0 && c.n) {
		base_copy_forward(r, &c);
		e = base_gen_read(r, &have) == 0 && have == gen ? 0 : -EBADMSG;
	}
	chain_clear(&c);
	return e;
}

/*
 * Publish generation gen as a delta when it pays: 1 published (as a delta,
 * and also whole when the deltas since the last whole catalog grew too
 * many or too heavy), 0 when a whole catalog is to be published instead,
 * <0 on error (nothing published).
 */
static int catalog_publish_delta(Repo *r, uint64_t gen)
{
	char base[PATH_MAX];
	work_path(r, "catalog.base.db", base, sizeof(base));
	RemoteCatalogList cl = {0};
	unsigned long max = r->catalog_deltas_max ? r->catalog_deltas_max : CATALOG_DELTAS_MAX;
	void *cs = NULL, *framed = NULL;
	size_t cs_len = 0, len = 0;
	uint64_t sum = 0, n = 0, size;
	char name[64];
	int e = remote_catalog_list(r->backend, &cl);
	const RemoteGen *b = e == 0 ? remote_catalog_list_base(&cl, gen - 1) : NULL;

	if (e == 0 && (!b || gen - b->gen > cl.n + 1))
		e = -ENOENT;
	if (e == 0)
		e = base_copy_ready(r, &cl, gen - 1);
	if (e == 0) { /* to this binary's schema, as the catalog was when it was opened */
		Catalog *cat = NULL;
		e = catalog_open(base, false, &cat);
		catalog_free(cat);
	}
	uint64_t max_growth = b ? MIN(CATALOG_DELTA_GROWTH_RATIO *
					      MAX(b->size, (uint64_t)CATALOG_DELTAS_FLOOR),
				      CATALOG_DELTA_GROWTH_MAX)
				: 0;
	if (e == 0)
		e = delta_diff(r->catalog_path, base, max_growth, &cs, &cs_len);
	for (uint64_t g = b ? b->gen + 1 : gen; e == 0 && g < gen; g++) {
		const RemoteGen *d = remote_catalog_list_find(&cl, g, true);
		sum += d ? d->size : 0;
		n++;
	}
	uint64_t base_size = b ? b->size : 0; /* b points into cl */
	remote_catalog_list_clear(&cl);
	if (e < 0) {
		log_debug("publishing catalog generation %llu whole: %s", (unsigned long long)gen,
			  strerror(-e));
		free(cs);
		return e == -ENOMEM ? e : 0;
	}
	bool compact = n + 1 > max || (sum + cs_len > base_size / CATALOG_DELTAS_FRACTION &&
				       sum + cs_len > CATALOG_DELTAS_FLOOR);
	/* a delta that weighs as much as a whole catalog is pointless */
	if (compact && cs_len >= base_size) {
		free(cs);
		return 0;
	}
	e = delta_frame(gen - 1, gen, cs, cs_len, &framed, &len);
	remote_catalog_delta_name(gen, name, sizeof(name));
	if (e == 0) {
		e = store_size(r->backend, name, &size);
		if (e == 0)
			e = -ESTALE; /* someone published this generation: never overwrite it */
		else if (e == -ENOENT)
			e = repo_meta_put(r, name, framed, len);
	}
	free(framed);
	if (e == 0) { /* the base copy follows: it is gen now */
		DeltaChain c = {.cs = (const void **)&cs, .len = &cs_len, .n = 1, .from = gen - 1,
				.to = gen};
		base_copy_forward(r, &c);
		log_debug("published catalog generation %llu as a delta of %zu bytes%s",
			  (unsigned long long)gen, len, compact ? " (and whole)" : "");
	}
	free(cs);
	if (e < 0)
		return e;
	/* compaction: the delta is published already; readers holding gen - 1 still use it */
	if (compact) {
		int w = repo_catalog_publish(r, gen);
		if (w < 0)
			log_warning("could not publish catalog generation %llu whole (deltas are "
				    "used until the next one): %s", (unsigned long long)gen,
				    strerror(-w));
		else
			return 1;
	}
	e = repo_gen_file_write(r, gen, r->lock != NULL);
	if (e == 0)
		r->gen = gen;
	return e < 0 ? e : 1;
}

/* Generation r->gen + 1: a delta or a whole catalog (format 1: always whole). */
int repo_catalog_publish_next(Repo *r)
{
	uint64_t gen = r->gen + 1, size;
	char name[64];
	int e = 0;

	/* a catalog migrated here (e.g. its chunk rows re-keyed) reaches readers whole */
	if (catalog_publish_whole_take(r->catalog) > 0)
		r->publish_whole = true;
	if (r->config.format >= CATALOG_FORMAT_DELTAS && !r->publish_whole) {
		e = catalog_publish_delta(r, gen);
		if (e != 0)
			return e < 0 ? e : 0;
	}
	/* a whole catalog: no delta of that number may exist either */
	remote_catalog_delta_name(gen, name, sizeof(name));
	e = store_size(r->backend, name, &size);
	if (e == 0)
		return -ESTALE;
	if (e != -ENOENT)
		return e;
	e = repo_catalog_publish(r, gen);
	if (e == 0)
		r->publish_whole = false;
	return e;
}

/*
 * Remove what no reader needs: objects older than both the newest whole
 * catalog and the last CATALOG_GENERATIONS_KEPT generations (a reader that
 * listed a moment ago may be fetching one). Format 1 has only whole
 * generations, and this keeps the newest four, as it always did.
 */
int repo_catalog_prune(Repo *r)
{
	RemoteCatalogList cl = {0};
	uint64_t keep_from = r->gen > CATALOG_GENERATIONS_KEPT ? r->gen - CATALOG_GENERATIONS_KEPT : 0;
	int e = 0;

	if (r->config.format >= CATALOG_FORMAT_DELTAS) {
		e = remote_catalog_list(r->backend, &cl);
		const RemoteGen *b = e == 0 ? remote_catalog_list_base(&cl, r->gen) : NULL;
		keep_from = b ? MIN(b->gen, keep_from) : 0;
		remote_catalog_list_clear(&cl);
	}
	if (e == 0 && keep_from > 0)
		e = remote_catalog_prune(r->backend, keep_from);
	return e;
}
