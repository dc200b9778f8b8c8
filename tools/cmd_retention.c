/* Retention: expire (snapshots and the WAL archive they need) and pin. */
#include "common/util.h"
#include "store/expire.h"
#include "tools/cli.h"
#include "tools/config.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

enum { OPT_REPO = 0x100, OPT_KEEP_LAST, OPT_KEEP_WITHIN, OPT_INSTANCE, OPT_DRY_RUN, OPT_TTL,
       OPT_UNPIN, OPT_NOTE };

#define NS_PER_S 1000000000LL
#define KEEP_LAST_MAX 1000000

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

/* ---- expire ---- */

static void print_line(const char *msg, void *userdata _unused_)
{
	printf("expire: %s\n", msg);
}

/* The policy applied (store/expire.c), its lines printed, then what to do next. */
static int expire_run(Repo *repo, const RetentionPolicy *p, const char *instance, bool dry_run)
{
	ExpireOptions o = {.policy = *p, .instance = instance, .dry_run = dry_run, .now = now_ns()};
	ExpireResult res;
	int r = repo_expire(repo, &o, print_line, NULL, &res);

	if (r < 0) {
		cli_error("%s", res.error);
		if (r == -EBUSY)
			cli_hint("run expire again once it has finished");
		return EXIT_FAIL;
	}
	if (res.n_deleted && !dry_run)
		printf("expire: run \"pgbakfs gc\" to reclaim the space only they used\n");
	if (dry_run)
		printf("expire: dry run, nothing was changed\n");
	return EXIT_OK;
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
