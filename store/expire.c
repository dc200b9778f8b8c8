/* expire: see store/expire.h. */
#include "store/expire.h"
#include "common/lsn.h"
#include "common/util.h"
#include "store/wal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef struct Expirer {
	Repo *repo;
	const ExpireOptions *o;
	ExpireReportFn report;
	void *userdata;
	ExpireResult *res;
} Expirer;

static void _printf_(2, 3) say(Expirer *x, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	x->report(msg, x->userdata);
}

/* Record the error line; returns r (< 0). */
static int _printf_(3, 4) fail(Expirer *x, int r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(x->res->error, sizeof(x->res->error), fmt, ap);
	va_end(ap);
	return r;
}

/* A visible snapshot as expire judges it. */
typedef struct ExpireSnap {
	char name[64];
	char *instance, *status;
	int64_t start_time;
} ExpireSnap;

typedef struct ExpireSet {
	ExpireSnap *snaps;
	RetentionItem *items; /* items[i] describes snaps[i] */
	size_t n;
} ExpireSet;

static void expire_set_clear(ExpireSet *s)
{
	for (size_t i = 0; i < s->n; i++) {
		free(s->snaps[i].instance);
		free(s->snaps[i].status);
	}
	free(s->snaps);
	free(s->items);
	*s = (ExpireSet){0};
}

static int collect_snapshot(const SnapshotInfo *s, void *ud)
{
	ExpireSet *set = ud;
	ExpireSnap *v = realloc(set->snaps, (set->n + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	set->snaps = v;
	RetentionItem *it = realloc(set->items, (set->n + 1) * sizeof(*it));
	if (!it)
		return -ENOMEM;
	set->items = it;
	ExpireSnap *e = &set->snaps[set->n];
	*e = (ExpireSnap){.start_time = s->start_time};
	snprintf(e->name, sizeof(e->name), "%s", s->name);
	e->instance = strdup(s->instance);
	e->status = strdup(s->status);
	if (!e->instance || !e->status) {
		free(e->instance);
		free(e->status);
		return -ENOMEM;
	}
	set->items[set->n] = (RetentionItem){.instance = e->instance, .rowid = s->rowid,
					     .start_time = s->start_time,
					     .pinned_until = s->pinned_until,
					     .status = retention_status(s->status)};
	set->n++;
	return 0;
}

/* Delete (or list) the snapshots the policy expires; counts into *ret_n_gone, *ret_kept. */
static int expire_snapshots(Expirer *x, ExpireSet *set, int64_t **ret_gone, size_t *ret_n_gone,
			    unsigned *ret_kept)
{
	_cleanup_free_ int64_t *gone = calloc(set->n + 1, sizeof(int64_t));
	size_t n_gone = 0;
	unsigned kept = 0;
	bool dry_run = x->o->dry_run;
	char t[40];

	if (!gone)
		return fail(x, -ENOMEM, "out of memory");
	for (size_t i = 0; i < set->n; i++) {
		const ExpireSnap *e = &set->snaps[i];
		int r;
		if (set->items[i].reason != RETAIN_NONE) {
			kept++;
			continue;
		}
		format_time_iso(e->start_time, t, sizeof(t));
		if (dry_run) {
			say(x, "would delete snapshot \"%s\" (instance \"%s\", %s, started %s)", e->name,
			    e->instance, e->status, t);
			gone[n_gone++] = set->items[i].rowid;
			continue;
		}
		r = catalog_snapshot_expire(repo_catalog(x->repo), set->items[i].rowid, x->o->now);
		if (r == -EAGAIN || r == -ENOENT) {
			/* pinned or deleted by someone else since the list was read */
			say(x, "kept snapshot \"%s\": %s meanwhile", e->name,
			    r == -EAGAIN ? "it was pinned" : "it was deleted");
			if (r == -EAGAIN)
				kept++;
			continue;
		}
		if (r < 0)
			return fail(x, r, "could not delete snapshot \"%s\": %s", e->name, strerror(-r));
		say(x, "deleted snapshot \"%s\" (instance \"%s\", %s, started %s)%s", e->name,
		    e->instance, e->status, t,
		    r == 1 ? "; a mount still serves it, so its data stays until the mount lets go of it"
			   : "");
		gone[n_gone++] = set->items[i].rowid;
	}
	*ret_gone = TAKE_PTR(gone);
	*ret_n_gone = n_gone;
	*ret_kept = kept;
	return 0;
}

/* ---- WAL ---- */

typedef struct WalNames {
	char (*names)[PGBAKFS_WAL_NAME_MAX + 1];
	WalName *parsed;
	size_t n;
} WalNames;

static void wal_names_clear(WalNames *w)
{
	free(w->names);
	free(w->parsed);
	*w = (WalNames){0};
}

static int collect_wal(const WalFileInfo *f, void *ud)
{
	WalNames *w = ud;
	void *v = realloc(w->names, (w->n + 1) * sizeof(*w->names));
	if (!v)
		return -ENOMEM;
	w->names = v;
	v = realloc(w->parsed, (w->n + 1) * sizeof(*w->parsed));
	if (!v)
		return -ENOMEM;
	w->parsed = v;
	snprintf(w->names[w->n], sizeof(w->names[0]), "%s", f->name);
	w->parsed[w->n] = f->parsed;
	w->n++;
	return 0;
}

typedef struct WalUses {
	Repo *repo;
	const WalNames *archive;
	const int64_t *gone; /* rowids deleted (or, dry run, to be deleted) */
	size_t n_gone;
	RetentionWalUse *v;
	size_t n;
	const char *unusable; /* a remaining snapshot whose WAL needs cannot be told */
	uint32_t cached_timeline; /* archive_seg_size() of it, 0: none cached */
	uint64_t cached_size;
} WalUses;

/* Segment size of an archived segment of timeline (its plain length), or 0. */
static uint64_t archive_seg_size(Repo *repo, const WalNames *a, uint32_t timeline)
{
	for (size_t i = 0; i < a->n; i++) {
		WalObjectInfo info;
		if (a->parsed[i].timeline != timeline || a->parsed[i].kind != WAL_KIND_SEGMENT)
			continue;
		if (wal_stat(repo, a->names[i], &info) == 0 && wal_seg_size_valid(info.plain_size))
			return info.plain_size;
	}
	return 0;
}

static int collect_wal_use(const SnapshotInfo *s, void *ud)
{
	WalUses *u = ud;
	uint64_t lsn, seg_size = 0;

	for (size_t i = 0; i < u->n_gone; i++)
		if (u->gone[i] == s->rowid)
			return 0;
	if (!s->start_lsn && !s->timeline)
		return 0; /* not a PostgreSQL snapshot (--from-dir): needs no archived WAL */
	if (!s->start_lsn || s->timeline <= 0 || s->timeline > UINT32_MAX ||
	    lsn_parse(s->start_lsn, &lsn) < 0) {
		u->unusable = "a snapshot's start LSN or timeline is missing or invalid";
		return 0;
	}
	/* the snapshot's own pg_wal tells its segment size; else the archive; else the default */
	if (catalog_snapshot_wal_seg_size(repo_catalog(u->repo), s->rowid, &seg_size) < 0) {
		if (u->cached_timeline != (uint32_t)s->timeline) {
			u->cached_timeline = (uint32_t)s->timeline;
			u->cached_size = archive_seg_size(u->repo, u->archive, u->cached_timeline);
		}
		seg_size = u->cached_size;
	}
	if (!seg_size)
		seg_size = PGBAKFS_WAL_DEFAULT_SEG_SIZE;
	RetentionWalUse *v = realloc(u->v, (u->n + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	u->v = v;
	v[u->n++] = (RetentionWalUse){.timeline = (uint32_t)s->timeline, .start_lsn = lsn,
				      .seg_size = seg_size};
	return 0;
}

static void say_timeline_kept(Expirer *x, const RetentionWalBounds *b, uint32_t timeline)
{
	size_t k;
	for (k = 0; k < b->n && b->v[k].timeline != timeline; k++)
		;
	if (k == b->n)
		say(x, "WAL of timeline %u kept: no snapshot on that timeline", timeline);
	else if (!b->v[k].trim)
		say(x, "WAL of timeline %u kept: recovery from a snapshot on an earlier timeline may "
		    "follow into it", timeline);
}

static int expire_wal(Expirer *x, const int64_t *gone, size_t n_gone)
{
	Repo *repo = x->repo;
	bool dry_run = x->o->dry_run;
	WalNames archive = {0};
	WalUses uses = {.repo = repo, .archive = &archive, .gone = gone, .n_gone = n_gone};
	RetentionWalBounds bounds = {0};
	uint64_t n_tl = 0;
	uint32_t cur_tl = 0;
	bool have_tl = false;
	int r;

	r = wal_list(repo, collect_wal, &archive);
	if (r == 0 && archive.n)
		r = catalog_snapshot_foreach_any(repo_catalog(repo), collect_wal_use, &uses);
	if (r == 0 && archive.n && !uses.unusable)
		r = retention_wal_bounds(uses.v, uses.n, &bounds);
	if (r < 0) {
		r = fail(x, r, "could not read the WAL archive of \"%s\": %s", repo_path(repo),
			 strerror(-r));
		goto out;
	}
	if (uses.unusable) {
		say(x, "WAL archive kept whole: %s", uses.unusable);
		goto out;
	}
	/* wal_list sorts by timeline: one summary line per timeline */
	for (size_t i = 0; i <= archive.n; i++) {
		bool end = i == archive.n;
		if (have_tl && (end || archive.parsed[i].timeline != cur_tl)) {
			if (n_tl)
				say(x, "timeline %u: %s %llu WAL file(s)", cur_tl,
				    dry_run ? "would delete" : "deleted", (unsigned long long)n_tl);
			else
				say_timeline_kept(x, &bounds, cur_tl);
			n_tl = 0;
		}
		if (end)
			break;
		cur_tl = archive.parsed[i].timeline;
		have_tl = true;
		if (!retention_wal_expirable(&bounds, archive.names[i]))
			continue;
		if (dry_run) {
			say(x, "would delete WAL \"%s\"", archive.names[i]);
		} else if ((r = wal_delete(repo, archive.names[i])) < 0) {
			r = fail(x, r, "could not delete WAL file \"%s\": %s", archive.names[i],
				 strerror(-r));
			goto out;
		}
		n_tl++;
	}
	r = 0;
out:
	retention_wal_bounds_clear(&bounds);
	free(uses.v);
	wal_names_clear(&archive);
	return r;
}

int repo_expire(Repo *repo, const ExpireOptions *o, ExpireReportFn report, void *userdata,
		ExpireResult *ret)
{
	Expirer x = {.repo = repo, .o = o, .report = report, .userdata = userdata, .res = ret};
	ExpireSet set = {0};
	_cleanup_free_ int64_t *gone = NULL;
	_cleanup_close_ int lock_fd = -1;
	size_t n_gone = 0;
	unsigned kept = 0;
	int r;

	*ret = (ExpireResult){0};
	/* one maintenance job at a time: expire and gc never interleave */
	if (!o->dry_run && (r = repo_lock_maintenance(repo, &lock_fd)) < 0)
		return r == -EBUSY ? fail(&x, r, "repository \"%s\" is busy: a gc or expire is running",
					  repo_path(repo))
				   : fail(&x, r, "could not lock repository \"%s\": %s", repo_path(repo),
					  strerror(-r));
	r = catalog_snapshot_foreach(repo_catalog(repo), o->instance, collect_snapshot, &set);
	if (r == 0)
		r = retention_evaluate(&o->policy, o->now, set.items, set.n);
	if (r < 0) {
		expire_set_clear(&set);
		return fail(&x, r, "could not read the catalog of \"%s\": %s", repo_path(repo),
			    strerror(-r));
	}
	r = expire_snapshots(&x, &set, &gone, &n_gone, &kept);
	expire_set_clear(&set);
	if (r < 0)
		return r;
	ret->n_deleted = n_gone;
	ret->n_kept = kept;
	say(&x, "%zu snapshot(s) %s, %u kept", n_gone, o->dry_run ? "would be deleted" : "deleted",
	    kept);
	/* the WAL archive follows the snapshots that remain, of every instance */
	return expire_wal(&x, gone, n_gone);
}
