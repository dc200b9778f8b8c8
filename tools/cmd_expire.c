/* pgbakfs expire / pin: retention of snapshots and of the WAL archive. */
#include "common/util.h"
#include "store/retention.h"
#include "store/wal.h"
#include "tools/cli.h"
#include "tools/config.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

enum { OPT_REPO = 0x100, OPT_KEEP_LAST, OPT_KEEP_WITHIN, OPT_INSTANCE, OPT_DRY_RUN, OPT_TTL,
       OPT_UNPIN, OPT_NOTE };

#define NS_PER_S 1000000000LL
#define KEEP_LAST_MAX 1000000

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

/* "7d", "12h": the largest unit that divides seconds exactly. */
static const char *format_duration(int64_t secs, char *buf, size_t len)
{
	static const struct { int64_t s; char u; } units[] = {
		{7 * 86400, 'w'}, {86400, 'd'}, {3600, 'h'}, {60, 'm'}, {1, 's'}};
	for (size_t i = 0; i < ELEMENTSOF(units); i++)
		if (secs % units[i].s == 0) {
			snprintf(buf, len, "%lld%c", (long long)(secs / units[i].s), units[i].u);
			break;
		}
	return buf;
}

/* where a policy came from, for print_policy */
typedef enum { POLICY_GIVEN, POLICY_SAVED, POLICY_CONFIG } PolicySource;

static void print_policy(const RetentionPolicy *p, PolicySource from, const char *instance)
{
	char d[32];
	printf("expire: policy%s%s%s%s:", instance ? " of instance \"" : "", instance ? instance : "",
	       instance ? "\"" : "",
	       from == POLICY_SAVED    ? " (saved in the repository)"
	       : from == POLICY_CONFIG ? " (config file)"
				       : "");
	if (p->keep_last)
		printf(" keep-last %llu", (unsigned long long)p->keep_last);
	if (p->keep_within)
		printf("%s keep-within %s", p->keep_last ? "," : "",
		       format_duration(p->keep_within, d, sizeof(d)));
	printf("\n");
}

/* Delete (or list) the snapshots the policy expires; counts into *ret_deleted, *ret_kept. */
static int expire_snapshots(Repo *repo, ExpireSet *set, int64_t now, bool dry_run,
			    int64_t **ret_gone, size_t *ret_n_gone, unsigned *ret_kept)
{
	_cleanup_free_ int64_t *gone = calloc(set->n + 1, sizeof(int64_t));
	size_t n_gone = 0;
	unsigned kept = 0;
	char t[40];

	if (!gone) {
		cli_error("out of memory");
		return EXIT_FAIL;
	}
	for (size_t i = 0; i < set->n; i++) {
		const ExpireSnap *e = &set->snaps[i];
		int r;
		if (set->items[i].reason != RETAIN_NONE) {
			kept++;
			continue;
		}
		format_time_iso(e->start_time, t, sizeof(t));
		if (dry_run) {
			printf("expire: would delete snapshot \"%s\" (instance \"%s\", %s, started %s)\n",
			       e->name, e->instance, e->status, t);
			gone[n_gone++] = set->items[i].rowid;
			continue;
		}
		r = catalog_snapshot_expire(repo_catalog(repo), set->items[i].rowid, now);
		if (r == -EAGAIN || r == -ENOENT) {
			/* pinned or deleted by someone else since the list was read */
			printf("expire: kept snapshot \"%s\": %s meanwhile\n", e->name,
			       r == -EAGAIN ? "it was pinned" : "it was deleted");
			if (r == -EAGAIN)
				kept++;
			continue;
		}
		if (r < 0) {
			cli_error("could not delete snapshot \"%s\": %s", e->name, strerror(-r));
			return EXIT_FAIL;
		}
		printf("expire: deleted snapshot \"%s\" (instance \"%s\", %s, started %s)%s\n", e->name,
		       e->instance, e->status, t,
		       r == 1 ? "; a mount still serves it, so its data stays until the mount lets "
				"go of it" : "");
		gone[n_gone++] = set->items[i].rowid;
	}
	*ret_gone = TAKE_PTR(gone);
	*ret_n_gone = n_gone;
	*ret_kept = kept;
	return EXIT_OK;
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

static void print_timeline_kept(const RetentionWalBounds *b, uint32_t timeline)
{
	size_t k;
	for (k = 0; k < b->n && b->v[k].timeline != timeline; k++)
		;
	if (k == b->n)
		printf("expire: WAL of timeline %u kept: no snapshot on that timeline\n", timeline);
	else if (!b->v[k].trim)
		printf("expire: WAL of timeline %u kept: recovery from a snapshot on an earlier "
		       "timeline may follow into it\n", timeline);
}

static int expire_wal(Repo *repo, const int64_t *gone, size_t n_gone, bool dry_run)
{
	WalNames archive = {0};
	WalUses uses = {.repo = repo, .archive = &archive, .gone = gone, .n_gone = n_gone};
	RetentionWalBounds bounds = {0};
	uint64_t n_tl = 0;
	uint32_t cur_tl = 0;
	bool have_tl = false;
	int r, rc = EXIT_OK;

	r = wal_list(repo, collect_wal, &archive);
	if (r == 0 && archive.n)
		r = catalog_snapshot_foreach_any(repo_catalog(repo), collect_wal_use, &uses);
	if (r == 0 && archive.n && !uses.unusable)
		r = retention_wal_bounds(uses.v, uses.n, &bounds);
	if (r < 0) {
		cli_error("could not read the WAL archive of \"%s\": %s", repo_path(repo), strerror(-r));
		rc = EXIT_FAIL;
		goto out;
	}
	if (uses.unusable) {
		printf("expire: WAL archive kept whole: %s\n", uses.unusable);
		goto out;
	}
	/* wal_list sorts by timeline: one summary line per timeline */
	for (size_t i = 0; i <= archive.n; i++) {
		bool end = i == archive.n;
		if (have_tl && (end || archive.parsed[i].timeline != cur_tl)) {
			if (n_tl)
				printf("expire: timeline %u: %s %llu WAL file(s)\n", cur_tl,
				       dry_run ? "would delete" : "deleted", (unsigned long long)n_tl);
			else
				print_timeline_kept(&bounds, cur_tl);
			n_tl = 0;
		}
		if (end)
			break;
		cur_tl = archive.parsed[i].timeline;
		have_tl = true;
		if (!retention_wal_expirable(&bounds, archive.names[i]))
			continue;
		if (dry_run) {
			printf("expire: would delete WAL \"%s\"\n", archive.names[i]);
		} else if ((r = wal_delete(repo, archive.names[i])) < 0) {
			cli_error("could not delete WAL file \"%s\": %s", archive.names[i], strerror(-r));
			rc = EXIT_FAIL;
			goto out;
		}
		n_tl++;
	}
out:
	retention_wal_bounds_clear(&bounds);
	free(uses.v);
	wal_names_clear(&archive);
	return rc;
}

/* ---- expire ---- */

static int expire_run(Repo *repo, const RetentionPolicy *p, const char *instance, bool dry_run)
{
	ExpireSet set = {0};
	_cleanup_free_ int64_t *gone = NULL;
	_cleanup_close_ int lock_fd = -1;
	size_t n_gone = 0;
	unsigned kept = 0;
	int64_t now = now_ns();
	int r, rc;

	/* one maintenance job at a time: expire and gc never interleave */
	if (!dry_run && (r = repo_lock_maintenance(repo, &lock_fd)) < 0) {
		if (r == -EBUSY) {
			cli_error("repository \"%s\" is busy: a gc or expire is running", repo_path(repo));
			cli_hint("run expire again once it has finished");
		} else {
			cli_error("could not lock repository \"%s\": %s", repo_path(repo), strerror(-r));
		}
		return EXIT_FAIL;
	}
	r = catalog_snapshot_foreach(repo_catalog(repo), instance, collect_snapshot, &set);
	if (r == 0)
		r = retention_evaluate(p, now, set.items, set.n);
	if (r < 0) {
		cli_error("could not read the catalog of \"%s\": %s", repo_path(repo), strerror(-r));
		expire_set_clear(&set);
		return EXIT_FAIL;
	}
	rc = expire_snapshots(repo, &set, now, dry_run, &gone, &n_gone, &kept);
	expire_set_clear(&set);
	if (rc != EXIT_OK)
		return rc;
	printf("expire: %zu snapshot(s) %s, %u kept\n", n_gone,
	       dry_run ? "would be deleted" : "deleted", kept);
	/* the WAL archive follows the snapshots that remain, of every instance */
	rc = expire_wal(repo, gone, n_gone, dry_run);
	if (rc == EXIT_OK && n_gone && !dry_run)
		printf("expire: run \"pgbakfs gc\" to reclaim the space only they used\n");
	if (rc == EXIT_OK && dry_run)
		printf("expire: dry run, nothing was changed\n");
	return rc;
}

static int parse_keep_last(const char *s, uint64_t *ret)
{
	char *end;
	unsigned long long v;
	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v < 1 || v > KEEP_LAST_MAX)
		return -EINVAL;
	*ret = v;
	return 0;
}

/* A positive duration in seconds that fits nanoseconds. */
static int parse_positive_duration(const char *s, int64_t *ret)
{
	int64_t v;
	if (parse_duration(s, &v) < 0 || v <= 0 || v > INT64_MAX / NS_PER_S)
		return -EINVAL;
	*ret = v;
	return 0;
}

static bool instance_name_valid(const char *s)
{
	return *s && !strpbrk(s, "/ \t\n");
}

/*
 * The policy of one instance when none is given on the command line: its
 * config file section's keep-last/keep-within, else the file's top-level
 * ones, else the one saved in the repository. -ENOENT: none.
 */
static int policy_for(Repo *repo, const char *instance, RetentionPolicy *ret, PolicySource *ret_from)
{
	const Config *conf;
	const ConfigInstance *in;
	const char *last = NULL, *within = NULL;

	*ret = (RetentionPolicy){0};
	if (cli_config(&conf) == EXIT_OK) {
		in = config_instance(conf, instance);
		if (in && (in->keep_last || in->keep_within)) {
			last = in->keep_last;
			within = in->keep_within;
		} else {
			last = config_setting(conf, "keep-last");
			within = config_setting(conf, "keep-within");
		}
	}
	if (last || within) { /* both checked when the file was read */
		if ((last && parse_keep_last(last, &ret->keep_last) < 0) ||
		    (within && parse_positive_duration(within, &ret->keep_within) < 0))
			return -EINVAL;
		*ret_from = POLICY_CONFIG;
		return 0;
	}
	*ret_from = POLICY_SAVED;
	return catalog_retention_get(repo_catalog(repo), &ret->keep_last, &ret->keep_within);
}

/* Whether the config file sets a retention policy anywhere. */
static bool config_has_retention(void)
{
	const Config *conf;
	if (cli_config(&conf) != EXIT_OK)
		return false;
	if (config_setting(conf, "keep-last") || config_setting(conf, "keep-within"))
		return true;
	for (size_t i = 0; i < config_n_instances(conf); i++)
		if (config_instance_at(conf, i)->keep_last || config_instance_at(conf, i)->keep_within)
			return true;
	return false;
}

/* expire with each instance's own policy (policy_for): of instance, or of every one. */
static int expire_each(Repo *repo, const char *instance, bool dry_run)
{
	char **names = NULL;
	size_t n = 0;
	int r, rc = EXIT_OK;

	if (instance) {
		names = xcalloc(1, sizeof(*names));
		names[n++] = xstrdup(instance);
	} else if ((r = catalog_instances(repo_catalog(repo), &names, &n)) < 0) {
		cli_error("could not read the catalog of \"%s\": %s", repo_path(repo), strerror(-r));
		return EXIT_FAIL;
	}
	for (size_t i = 0; i < n; i++) {
		RetentionPolicy p;
		PolicySource from;
		r = rc == EXIT_OK ? policy_for(repo, names[i], &p, &from) : 0;
		if (rc != EXIT_OK) {
		} else if (r == -ENOENT) {
			cli_note("instance \"%s\" has no retention policy: nothing of it expires", names[i]);
		} else if (r < 0) {
			cli_error("could not read the retention policy of \"%s\": %s", repo_path(repo),
				  strerror(-r));
			rc = EXIT_FAIL;
		} else {
			print_policy(&p, from, names[i]);
			rc = expire_run(repo, &p, names[i], dry_run);
		}
		free(names[i]);
	}
	free(names);
	return rc;
}

int expire_check_policy(Repo *repo, const char *instance)
{
	RetentionPolicy p;
	PolicySource from;
	int r = policy_for(repo, instance, &p, &from);
	if (r == -ENOENT)
		return cli_usage("backup", "--expire needs a retention policy and instance \"%s\" has "
				 "none: keep-last/keep-within in the config file, or run \"pgbakfs "
				 "expire --keep-last N\" once to save one in \"%s\"", instance,
				 repo_path(repo));
	if (r < 0) {
		cli_error("could not read the catalog of \"%s\": %s", repo_path(repo), strerror(-r));
		return EXIT_FAIL;
	}
	return EXIT_OK;
}

int expire_apply_policy(Repo *repo, const char *instance)
{
	RetentionPolicy p;
	PolicySource from;
	int r = policy_for(repo, instance, &p, &from);
	if (r < 0) {
		cli_error("the backup succeeded, but the retention policy of \"%s\" could not be "
			  "read: %s", repo_path(repo), strerror(-r));
		return EXIT_FAIL;
	}
	print_policy(&p, from, NULL);
	return expire_run(repo, &p, instance, false);
}

int cmd_expire(int argc, char **argv)
{
	static const struct option opts[] = {
		{"repo", required_argument, NULL, OPT_REPO},
		{"keep-last", required_argument, NULL, OPT_KEEP_LAST},
		{"keep-within", required_argument, NULL, OPT_KEEP_WITHIN},
		{"instance", required_argument, NULL, OPT_INSTANCE},
		{"dry-run", no_argument, NULL, OPT_DRY_RUN},
		{"help", no_argument, NULL, 'h'},
		{0}};
	const char *repo_opt = NULL, *instance = NULL;
	RetentionPolicy p = {0};
	bool dry_run = false, saved = false;
	Repo *repo = NULL;
	int c, r, rc;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_REPO: repo_opt = optarg; break;
		case OPT_KEEP_LAST:
			if (parse_keep_last(optarg, &p.keep_last) < 0)
				return cli_usage("expire", "invalid --keep-last \"%s\": a number from 1 to %d",
						 optarg, KEEP_LAST_MAX);
			break;
		case OPT_KEEP_WITHIN:
			if (parse_positive_duration(optarg, &p.keep_within) < 0)
				return cli_usage("expire", "invalid --keep-within \"%s\": a positive duration "
						 "such as 45s, 30m, 12h, 7d, 2w", optarg);
			break;
		case OPT_INSTANCE:
			if (!instance_name_valid(optarg))
				return cli_usage("expire", "invalid instance name \"%s\"", optarg);
			instance = optarg;
			break;
		case OPT_DRY_RUN: dry_run = true; break;
		case 'h':
			printf("Usage: pgbakfs expire [--keep-last N] [--keep-within DURATION]\n"
			       "                      [--instance NAME] [--dry-run] [--repo PATH]\n\n"
			       "Delete the snapshots a retention policy no longer keeps, each instance\n"
			       "judged on its own (only NAME with --instance), and the archived WAL\n"
			       "older than the oldest remaining snapshot of each timeline. A snapshot\n"
			       "is kept when it is among the N newest ok or warning snapshots of its\n"
			       "instance, started within DURATION (45s, 30m, 12h, 7d, 2w) of now, or is\n"
			       "pinned (\"pgbakfs pin\"). The newest ok snapshot of an instance (with\n"
			       "no ok one, its newest warning one) is never deleted. Failed snapshots\n"
			       "do not count among the N newest.\n\n"
			       "The options given are saved as the repository's policy; without\n"
			       "options each instance gets keep-last/keep-within from its config file\n"
			       "section, else from the file's top level, else the saved policy\n"
			       "(\"backup --expire\" does the same for its instance).\n"
			       "--dry-run only lists what would be deleted and saves nothing.\n"
			       "Run \"pgbakfs gc\" afterwards to reclaim the space.\n");
			return EXIT_OK;
		default: return cli_usage("expire", "invalid option");
		}
	}
	if (optind != argc)
		return cli_usage("expire", "unexpected argument \"%s\"", argv[optind]);
	rc = cli_open_repo_writer(repo_opt, &repo);
	if (rc != EXIT_OK)
		return rc;
	if (!p.keep_last && !p.keep_within && config_has_retention()) {
		/* each instance with its own policy from the config file (or the saved one) */
		rc = expire_each(repo, instance, dry_run);
		return cli_close_repo(repo, rc);
	}
	if (!p.keep_last && !p.keep_within) {
		r = catalog_retention_get(repo_catalog(repo), &p.keep_last, &p.keep_within);
		if (r == -ENOENT) {
			cli_close_repo(repo, EXIT_OK);
			return cli_usage("expire", "no retention policy: give --keep-last N and/or "
					 "--keep-within DURATION (they are saved for later runs)");
		}
		if (r < 0) {
			cli_error("could not read the catalog of \"%s\": %s", repo_path(repo), strerror(-r));
			return cli_close_repo(repo, EXIT_FAIL);
		}
		saved = true;
	} else if (!dry_run) {
		r = catalog_retention_set(repo_catalog(repo), p.keep_last, p.keep_within);
		if (r < 0) {
			cli_error("could not save the retention policy in \"%s\": %s", repo_path(repo),
				  strerror(-r));
			return cli_close_repo(repo, EXIT_FAIL);
		}
	}
	print_policy(&p, saved ? POLICY_SAVED : POLICY_GIVEN, NULL);
	rc = expire_run(repo, &p, instance, dry_run);
	return cli_close_repo(repo, rc);
}

/* ---- pin ---- */

int cmd_pin(int argc, char **argv)
{
	static const struct option opts[] = {
		{"repo", required_argument, NULL, OPT_REPO},
		{"ttl", required_argument, NULL, OPT_TTL},
		{"unpin", no_argument, NULL, OPT_UNPIN},
		{"note", required_argument, NULL, OPT_NOTE},
		{"instance", required_argument, NULL, OPT_INSTANCE},
		{"help", no_argument, NULL, 'h'},
		{0}};
	const char *repo_opt = NULL, *instance = NULL, *note = NULL, *ttl_arg = NULL;
	bool unpin = false;
	int64_t ttl = 0, until = 0, now = now_ns();
	SnapshotInfo s = {0};
	Repo *repo = NULL;
	char t[40];
	int c, r = 0, rc;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_REPO: repo_opt = optarg; break;
		case OPT_TTL:
			ttl_arg = optarg;
			if (parse_positive_duration(optarg, &ttl) < 0 || ttl > (INT64_MAX - now) / NS_PER_S)
				return cli_usage("pin", "invalid --ttl \"%s\": a positive duration such as "
						 "12h, 7d, 2w", optarg);
			break;
		case OPT_UNPIN: unpin = true; break;
		case OPT_NOTE: note = optarg; break;
		case OPT_INSTANCE:
			if (!instance_name_valid(optarg))
				return cli_usage("pin", "invalid instance name \"%s\"", optarg);
			instance = optarg;
			break;
		case 'h':
			printf("Usage: pgbakfs pin ID --ttl DURATION [--note TEXT] [--repo PATH]\n"
			       "       pgbakfs pin ID --unpin [--note TEXT] [--repo PATH]\n"
			       "       pgbakfs pin ID --note TEXT [--repo PATH]\n\n"
			       "Keep a snapshot from \"pgbakfs expire\" for DURATION (45s, 30m, 12h, 7d,\n"
			       "2w) from now, or release it with --unpin. --note sets the snapshot's\n"
			       "note (an empty TEXT clears it). ID may be \"latest\" (of --instance).\n");
			return EXIT_OK;
		default: return cli_usage("pin", "invalid option");
		}
	}
	if (optind >= argc)
		return cli_usage("pin", "missing snapshot ID");
	if (optind + 1 != argc)
		return cli_usage("pin", "unexpected argument \"%s\"", argv[optind + 1]);
	if (ttl_arg && unpin)
		return cli_usage("pin", "use either --ttl or --unpin, not both");
	if (!ttl_arg && !unpin && !note)
		return cli_usage("pin", "missing --ttl DURATION, --unpin or --note TEXT");
	rc = cli_open_repo_writer(repo_opt, &repo);
	if (rc == EXIT_OK)
		rc = cli_find_snapshot(repo, argv[optind], instance, &s);
	if (rc != EXIT_OK)
		goto out;
	/* pin and note change together or not at all */
	until = ttl_arg ? now + ttl * NS_PER_S : 0;
	r = catalog_begin(repo_catalog(repo));
	if (r == 0 && (ttl_arg || unpin))
		r = catalog_snapshot_set_pin(repo_catalog(repo), s.rowid, until);
	if (r == 0 && note)
		r = catalog_snapshot_set_note(repo_catalog(repo), s.rowid, *note ? note : NULL);
	if (r == 0)
		r = catalog_commit(repo_catalog(repo));
	if (r < 0) {
		catalog_rollback(repo_catalog(repo));
		if (r == -ENOENT)
			cli_error("snapshot \"%s\" was deleted meanwhile", s.name);
		else
			cli_error("could not update snapshot \"%s\": %s", s.name, strerror(-r));
		rc = EXIT_FAIL;
		goto out;
	}
	if (ttl_arg)
		printf("pinned snapshot \"%s\" until %s\n", s.name, format_time_iso(until, t, sizeof(t)));
	else if (unpin)
		printf("unpinned snapshot \"%s\"%s\n", s.name,
		       s.pinned_until > now ? "" : " (it was not pinned)");
	if (note)
		printf("%s of snapshot \"%s\" %s\n", "note", s.name, *note ? "set" : "cleared");
out:
	snapshot_info_clear(&s);
	return cli_close_repo(repo, rc);
}
