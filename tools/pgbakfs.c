/* pgbakfs: main only dispatches to the command functions. */
#include "common/log.h"
#include "tools/cli.h"
#include "tools/config.h"

#include <stdio.h>
#include <string.h>

static const struct {
	const char *name;
	CommandFn fn;
	const char *summary;
} commands[] = {
	{"init", cmd_init, "create a repository"},
	{"backup", cmd_backup, "take a snapshot (of a directory tree: --from-dir)"},
	{"list", cmd_list, "list snapshots"},
	{"show", cmd_show, "show one snapshot"},
	{"restore", cmd_restore, "restore a snapshot into a directory"},
	{"mount", cmd_mount, "show every snapshot as a data directory (FUSE)"},
	{"verify", cmd_verify, "prove a snapshot by starting PostgreSQL on a clone of it"},
	{"dump", cmd_dump, "pg_dump out of a snapshot, without restoring it"},
	{"delete", cmd_delete, "delete a snapshot (space is reclaimed by gc)"},
	{"gc", cmd_gc, "remove data no snapshot uses"},
	{"check", cmd_check, "check the repository (--read-data: every byte; --archive: WAL archiving)"},
	{"stats", cmd_stats, "repository size and deduplication"},
	{"status", cmd_status, "per instance: last backup and its age, failures, verify, WAL (--max-age)"},
	{"metrics", cmd_metrics, "the same as Prometheus metrics (--textfile DIR for node_exporter)"},
	{"expire", cmd_expire, "delete snapshots and WAL a retention policy no longer keeps"},
	{"pin", cmd_pin, "keep a snapshot from expire for a while, or set its note"},
	{"wal-push", cmd_wal_push, "archive a WAL file (archive_command)"},
	{"wal-fetch", cmd_wal_fetch, "fetch an archived WAL file (restore_command)"},
	{"wal-summary", cmd_wal_summary, "the blocks archived WAL changed (pg_walsummary's format)"},
	{"restore-point", cmd_restore_point, "create a named restore point on a server"},
	{"repair", cmd_repair, "rebuild the catalog from packs and snapshot manifests"},
	{"upgrade", cmd_upgrade, "bring a repository to this version's format"},
	{"key", cmd_key, "key change: new passphrase for an encrypted repository"},
};

static void usage(FILE *f)
{
	fprintf(f, "pgbakfs: deduplicated PostgreSQL backups you can see and start\n\n"
		   "Usage: pgbakfs [OPTIONS] COMMAND [OPTIONS] [ARGS...]\n"
		   "       pgbakfs help COMMAND      (= pgbakfs COMMAND --help)\n"
		   "       pgbakfs -V | --version\n\nCommands:\n");
	for (size_t i = 0; i < ELEMENTSOF(commands); i++)
		fprintf(f, "  %-13s %s\n", commands[i].name, commands[i].summary);
	fprintf(f, "\nEvery command takes --repo PATH|s3://BUCKET/PREFIX (or PGBAKFS_REPO), --help,\n"
		   "--cache-dir DIR (local state of S3 and encrypted repositories; default\n"
		   "~/.cache/pgbakfs), --config FILE (default: PGBAKFS_CONFIG, else\n"
		   "/etc/pgbakfs/pgbakfs.conf for root, ~/.config/pgbakfs/pgbakfs.conf otherwise),\n"
		   "--ca-file FILE (CA bundle for S3 over TLS), --passphrase-file FILE,\n"
		   "--log-level error|warning|info|debug (default info: notes, warnings, errors),\n"
		   "--log-file FILE (also append them there, timestamped; a mount daemon logs\n"
		   "there instead of syslog).\n"
		   "These, and -j N/--jobs N, --instance NAME, --json, may also come before the\n"
		   "command name: \"pgbakfs --repo R list\" = \"pgbakfs list --repo R\"; other\n"
		   "options go after it.\n"
		   "S3 settings come from PGBAKFS_S3_ENDPOINT, AWS_REGION, PGBAKFS_S3_URI_STYLE,\n"
		   "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN (see docs/design.md).\n"
		   "\nThe config file (ini syntax) holds what every command would otherwise be told:\n"
		   "  repo = /var/lib/pgbakfs          top level: repo, jobs, cache-dir, ca-file,\n"
		   "  jobs = 4                         passphrase-file, log-level, log-file,\n"
		   "  keep-last = 7                    keep-last, keep-within, s3-endpoint, s3-region,\n"
		   "  [main]                           s3-uri-style, aws-access-key-id,\n"
		   "  conninfo = host=/run/postgresql  aws-secret-access-key, aws-session-token\n"
		   "  pgdata = /var/lib/postgresql/15/main   one section per instance: conninfo,\n"
		   "  extra-dir = /etc/postgresql/15/main    pgdata, extra-dir (repeatable),\n"
		   "                                         keep-last, keep-within\n"
		   "\"pgbakfs backup\" without -d or --from-dir backs up the instance named by\n"
		   "--instance, or the only one configured. The command line wins over the\n"
		   "environment, which wins over the file. A file holding a secret must be 0600.\n");
}

static CommandFn command_find(const char *name)
{
	for (size_t i = 0; i < ELEMENTSOF(commands); i++)
		if (!strcmp(name, commands[i].name))
			return commands[i].fn;
	return NULL;
}

static int unknown_command(const char *name)
{
	fprintf(stderr, "pgbakfs: error: unknown command \"%s\"\n", name);
	fprintf(stderr, "hint: see \"pgbakfs --help\"\n");
	return EXIT_USAGE;
}

/*
 * The options that may come before the command name. Which tokens are values
 * must be known before the command (and so its option table, tools/opts.h)
 * is, so these are the options every command takes, plus the ones several
 * commands share (-j, --instance, --json); the command still rejects one it
 * does not take.
 */
static const struct {
	const char *name;
	bool has_value;
} leading_options[] = {
	{"--repo", true},    {"--config", true},   {"--cache-dir", true},
	{"--ca-file", true}, {"--passphrase-file", true},
	{"--jobs", true},    {"-j", true},	   {"--instance", true},
	{"--json", false},   {"--help", false},	   {"-h", false},
	{"--log-level", true}, {"--log-file", true},
};

/* a (a token before the command) is one of leading_options: whether it takes a value, attached. */
static bool leading_option(const char *a, bool *has_value, bool *attached)
{
	for (size_t k = 0; k < ELEMENTSOF(leading_options); k++) {
		const char *n = leading_options[k].name;
		size_t len = strlen(n);
		if (strncmp(a, n, len) != 0)
			continue;
		*has_value = leading_options[k].has_value;
		if (a[len] == 0)
			return true;
		if (*has_value && (a[len] == '=' || (n[1] != '-' && a[len] != 0))) {
			*attached = true; /* --repo=R, -j2 */
			return true;
		}
	}
	return false;
}

/*
 * pgbakfs [OPTIONS] COMMAND [ARGS...] -> pgbakfs COMMAND [OPTIONS] [ARGS...]:
 * the command name moves to argv[1], the leading options keep their order and
 * values; a "--" that ends them is dropped, as getopt does. Sets *ret_n_lead to
 * the number of tokens moved. Prints one error; returns an exit code.
 */
static int move_leading_options(int *argc, char **argv, int *ret_n_lead)
{
	int i = 1, dashdash = 0;

	while (i < *argc && argv[i][0] == '-') {
		const char *a = argv[i];
		bool known = false, has_value = false, attached = false;

		if (!strcmp(a, "--")) {
			dashdash = 1;
			break;
		}
		known = leading_option(a, &has_value, &attached);
		if (!known) {
			fprintf(stderr, "pgbakfs: error: unknown option \"%s\" before the command\n", a);
			fprintf(stderr, "hint: give it after the command name; see \"pgbakfs --help\"\n");
			return EXIT_USAGE;
		}
		if (has_value && !attached && ++i >= *argc) {
			fprintf(stderr, "pgbakfs: error: option %s needs a value\n", a);
			return EXIT_USAGE;
		}
		i++;
	}
	int cmd = i + dashdash;
	if (cmd >= *argc) {
		for (int k = 1; k < i; k++) /* options and --help alone: the general help */
			if (!strcmp(argv[k], "--help") || !strcmp(argv[k], "-h")) {
				usage(stdout);
				return -1;
			}
		fprintf(stderr, "pgbakfs: error: no command given\n");
		fprintf(stderr, "hint: see \"pgbakfs --help\"\n");
		return EXIT_USAGE;
	}
	/* rotate: argv[1..i) + "--"? + COMMAND -> COMMAND + argv[1..i) */
	char *name = argv[cmd];
	memmove(argv + 2, argv + 1, (size_t)(i - 1) * sizeof(*argv));
	argv[1] = name;
	if (dashdash) {
		memmove(argv + i + 1, argv + cmd + 1, (size_t)(*argc - cmd) * sizeof(*argv));
		(*argc)--;
	}
	*ret_n_lead = i - 1;
	return EXIT_OK;
}

/* COMMAND ... --help (before any "--"): help does not need the config file. */
static bool asks_help(int argc, char **argv)
{
	for (int i = 2; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
			return true;
	return false;
}

/* pgbakfs help [COMMAND]: COMMAND --help. */
static int help(int argc, char **argv)
{
	if (argc == 0 || !strcmp(argv[0], "help")) {
		usage(stdout);
		return EXIT_OK;
	}
	if (argc > 1) {
		fprintf(stderr, "pgbakfs: error: help takes one command, not %d arguments\n", argc);
		fprintf(stderr, "hint: see \"pgbakfs --help\"\n");
		return EXIT_USAGE;
	}
	CommandFn fn = command_find(argv[0]);
	if (!fn)
		return unknown_command(argv[0]);
	char *args[] = {argv[0], (char *)"--help", NULL};
	return fn(2, args);
}

int main(int argc, char **argv)
{
	int n_lead = 0, rc;

	/* developers' switch: internal diagnostics (SQLite messages, ...) on stderr */
	if (getenv("PGBAKFS_DEBUG")) /* cli_logs_setup sets the level again, options first */
		log_set_level(LOG_DEBUG);
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(stdout);
		return EXIT_OK;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
		printf("pgbakfs 0.1.0\n");
		return EXIT_OK;
	}
	rc = move_leading_options(&argc, argv, &n_lead);
	if (rc != EXIT_OK)
		return rc < 0 ? EXIT_OK : rc;
	if (!strcmp(argv[1], "help"))
		return help(argc - 2 - n_lead, argv + 2 + n_lead);
	rc = cli_take_common_options(&argc, argv);
	if (rc != EXIT_OK)
		return rc;
	CommandFn fn = command_find(argv[1]);
	if (!fn)
		return unknown_command(argv[1]);
	if (asks_help(argc, argv))
		return fn(argc - 1, argv + 1);
	/* a broken config file is an error before anything runs */
	rc = cli_logs_setup(argv[1]);
	if (rc != EXIT_OK)
		return rc;
	rc = fn(argc - 1, argv + 1);
	char line[128];
	snprintf(line, sizeof(line), "%s: exit %d", argv[1], rc);
	log_file_line(LOG_INFO, line);
	return rc;
}
