/* Retention: expire (snapshots and the WAL archive they need) and pin. */
#include "common/util.h"
#include "store/expire.h"
#include "tools/cli.h"
#include "tools/config.h"
#include "tools/opts.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

enum { OPT_KEEP_LAST = 0x100, OPT_KEEP_WITHIN, OPT_DRY_RUN, OPT_TTL, OPT_UNPIN, OPT_NOTE };

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

typedef struct ExpireArgs {
	CliArgs a;
	RetentionPolicy p; /* given on the command line (zero: none) */
	bool dry_run;
} ExpireArgs;

static int expire_option(int c, char *arg, void *opts)
{
	ExpireArgs *x = opts;

	switch (c) {
	case OPT_KEEP_LAST:
		if (parse_keep_last(arg, &x->p.keep_last) < 0)
			return cli_usage("expire", "invalid --keep-last \"%s\": a number from 1 to %d", arg,
					 KEEP_LAST_MAX);
		break;
	case OPT_KEEP_WITHIN:
		if (parse_positive_duration(arg, &x->p.keep_within) < 0)
			return cli_usage("expire", "invalid --keep-within \"%s\": a positive duration "
					 "such as 45s, 30m, 12h, 7d, 2w", arg);
		break;
	case OPT_DRY_RUN: x->dry_run = true; break;
	}
	return EXIT_OK;
}

static const struct option expire_options[] = {
	{"keep-last", required_argument, NULL, OPT_KEEP_LAST},
	{"keep-within", required_argument, NULL, OPT_KEEP_WITHIN},
	{"dry-run", no_argument, NULL, OPT_DRY_RUN},
	{0}};

static const CliCommand expire_command = {
	.name = "expire",
	.common = CLI_REPO | CLI_INSTANCE | CLI_INSTANCE_NAME,
	.options = expire_options,
	.option = expire_option,
	.help = "Usage: pgbakfs expire [--keep-last N] [--keep-within DURATION]\n"
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
		"Run \"pgbakfs gc\" afterwards to reclaim the space.\n",
};

/*
 * The policy for every instance at once: the one given, saved for later runs
 * (unless a dry run), or without one the policy saved before. An exit code
 * after one message; EXIT_USAGE without one when there is no policy.
 */
static int expire_policy(Repo *repo, ExpireArgs *x, PolicySource *ret_from)
{
	int r;

	*ret_from = POLICY_GIVEN;
	if (x->p.keep_last || x->p.keep_within) {
		r = x->dry_run ? 0 : catalog_retention_set(repo_catalog(repo), x->p.keep_last,
							   x->p.keep_within);
		if (r < 0) {
			cli_error("could not save the retention policy in \"%s\": %s", repo_path(repo),
				  strerror(-r));
			return EXIT_FAIL;
		}
		return EXIT_OK;
	}
	r = catalog_retention_get(repo_catalog(repo), &x->p.keep_last, &x->p.keep_within);
	if (r == -ENOENT)
		return EXIT_USAGE; /* the caller says it */
	if (r < 0) {
		cli_error("could not read the catalog of \"%s\": %s", repo_path(repo), strerror(-r));
		return EXIT_FAIL;
	}
	*ret_from = POLICY_SAVED;
	return EXIT_OK;
}

int cmd_expire(int argc, char **argv)
{
	ExpireArgs x = {0};
	PolicySource from;
	Repo *repo = NULL;
	int rc = cli_parse(&expire_command, argc, argv, &x.a, &x);

	if (rc != CLI_CONTINUE)
		return rc;
	rc = cli_open_repo_writer(x.a.repo, &repo);
	if (rc != EXIT_OK)
		return rc;
	/* no options and a policy in the config file: each instance with its own */
	if (!x.p.keep_last && !x.p.keep_within && config_has_retention())
		return cli_close_repo(repo, expire_each(repo, x.a.instance, x.dry_run));
	/* one policy: the one given (saved), or the saved one */
	rc = expire_policy(repo, &x, &from);
	if (rc == EXIT_USAGE) {
		cli_close_repo(repo, EXIT_OK);
		return cli_usage("expire", "no retention policy: give --keep-last N and/or "
				 "--keep-within DURATION (they are saved for later runs)");
	}
	if (rc != EXIT_OK)
		return cli_close_repo(repo, rc);
	/* the snapshots and WAL it no longer keeps are deleted; then the catalog is published */
	print_policy(&x.p, from, NULL);
	return cli_close_repo(repo, expire_run(repo, &x.p, x.a.instance, x.dry_run));
}

/* ---- pin ---- */

typedef struct PinArgs {
	CliArgs a;
	const char *ttl_arg, *note;
	bool unpin;
	int64_t ttl, now;
} PinArgs;

static int pin_option(int c, char *arg, void *opts)
{
	PinArgs *x = opts;

	switch (c) {
	case OPT_TTL:
		x->ttl_arg = arg;
		if (parse_positive_duration(arg, &x->ttl) < 0 || x->ttl > (INT64_MAX - x->now) / NS_PER_S)
			return cli_usage("pin", "invalid --ttl \"%s\": a positive duration such as "
					 "12h, 7d, 2w", arg);
		break;
	case OPT_UNPIN: x->unpin = true; break;
	case OPT_NOTE: x->note = arg; break;
	}
	return EXIT_OK;
}

static const struct option pin_options[] = {
	{"ttl", required_argument, NULL, OPT_TTL},
	{"unpin", no_argument, NULL, OPT_UNPIN},
	{"note", required_argument, NULL, OPT_NOTE},
	{0}};

static const CliCommand pin_command = {
	.name = "pin",
	.common = CLI_REPO | CLI_INSTANCE | CLI_INSTANCE_NAME,
	.options = pin_options,
	.option = pin_option,
	.n_args = 1,
	.missing = "missing snapshot ID",
	.help = "Usage: pgbakfs pin ID --ttl DURATION [--note TEXT] [--repo PATH]\n"
		"       pgbakfs pin ID --unpin [--note TEXT] [--repo PATH]\n"
		"       pgbakfs pin ID --note TEXT [--repo PATH]\n\n"
		"Keep a snapshot from \"pgbakfs expire\" for DURATION (45s, 30m, 12h, 7d,\n"
		"2w) from now, or release it with --unpin. --note sets the snapshot's\n"
		"note (an empty TEXT clears it). ID may be \"latest\" (of --instance).\n",
};

/* The pin (until, 0: none) and the note of s, together or not at all: an exit code. */
static int pin_update(Repo *repo, const PinArgs *x, const SnapshotInfo *s, int64_t until)
{
	int r = catalog_begin(repo_catalog(repo));

	if (r == 0 && (x->ttl_arg || x->unpin))
		r = catalog_snapshot_set_pin(repo_catalog(repo), s->rowid, until);
	if (r == 0 && x->note)
		r = catalog_snapshot_set_note(repo_catalog(repo), s->rowid, *x->note ? x->note : NULL);
	if (r == 0)
		r = catalog_commit(repo_catalog(repo));
	if (r == 0)
		return EXIT_OK;
	catalog_rollback(repo_catalog(repo));
	if (r == -ENOENT)
		cli_error("snapshot \"%s\" was deleted meanwhile", s->name);
	else
		cli_error("could not update snapshot \"%s\": %s", s->name, strerror(-r));
	return EXIT_FAIL;
}

static void pin_print(const PinArgs *x, const SnapshotInfo *s, int64_t until)
{
	char t[40];

	if (x->ttl_arg)
		printf("pinned snapshot \"%s\" until %s\n", s->name, format_time_iso(until, t, sizeof(t)));
	else if (x->unpin)
		printf("unpinned snapshot \"%s\"%s\n", s->name,
		       s->pinned_until > x->now ? "" : " (it was not pinned)");
	if (x->note)
		printf("%s of snapshot \"%s\" %s\n", "note", s->name, *x->note ? "set" : "cleared");
}

int cmd_pin(int argc, char **argv)
{
	PinArgs x = {.now = now_ns()};
	SnapshotInfo s = {0};
	Repo *repo = NULL;
	int64_t until;
	int rc = cli_parse(&pin_command, argc, argv, &x.a, &x);

	if (rc != CLI_CONTINUE)
		return rc;
	if (x.ttl_arg && x.unpin)
		return cli_usage("pin", "use either --ttl or --unpin, not both");
	if (!x.ttl_arg && !x.unpin && !x.note)
		return cli_usage("pin", "missing --ttl DURATION, --unpin or --note TEXT");
	/* as the writer, the snapshot by id or "latest" */
	rc = cli_open_repo_writer(x.a.repo, &repo);
	if (rc == EXIT_OK)
		rc = cli_find_snapshot(repo, x.a.args[0], x.a.instance, &s);
	/* pin and note change together or not at all; then the catalog is published */
	until = x.ttl_arg ? x.now + x.ttl * NS_PER_S : 0;
	if (rc == EXIT_OK)
		rc = pin_update(repo, &x, &s, until);
	if (rc == EXIT_OK)
		pin_print(&x, &s, until);
	snapshot_info_clear(&s);
	return cli_close_repo(repo, rc);
}
