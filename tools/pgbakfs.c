/* pgbakfs: main only dispatches to the command functions. */
#include "common/log.h"
#include "tools/cli.h"

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
	{"expire", cmd_expire, "delete snapshots and WAL a retention policy no longer keeps"},
	{"pin", cmd_pin, "keep a snapshot from expire for a while, or set its note"},
	{"wal-push", cmd_wal_push, "archive a WAL file (archive_command)"},
	{"wal-fetch", cmd_wal_fetch, "fetch an archived WAL file (restore_command)"},
	{"wal-summary", cmd_wal_summary, "the blocks archived WAL changed (pg_walsummary's format)"},
	{"restore-point", cmd_restore_point, "create a named restore point on a server"},
	{"repair", cmd_repair, "rebuild the catalog from packs and snapshot manifests"},
	{"key", cmd_key, "key change: new passphrase for an encrypted repository"},
};

static void usage(FILE *f)
{
	fprintf(f, "pgbakfs: deduplicated PostgreSQL backups you can see and start\n\n"
		   "Usage: pgbakfs COMMAND [OPTIONS]\n\nCommands:\n");
	for (size_t i = 0; i < ELEMENTSOF(commands); i++)
		fprintf(f, "  %-13s %s\n", commands[i].name, commands[i].summary);
	fprintf(f, "\nEvery command takes --repo PATH|s3://BUCKET/PREFIX (or PGBAKFS_REPO), --help,\n"
		   "--cache-dir DIR (local state of S3 and encrypted repositories; default\n"
		   "~/.cache/pgbakfs), --config FILE (S3 settings, 0600; default\n"
		   "~/.config/pgbakfs/pgbakfs.conf),\n"
		   "--ca-file FILE (CA bundle for S3 over TLS), --passphrase-file FILE.\n"
		   "S3 settings come from PGBAKFS_S3_ENDPOINT, AWS_REGION, PGBAKFS_S3_URI_STYLE,\n"
		   "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN (see docs/design.md).\n");
}

int main(int argc, char **argv)
{
	/* developers' switch: internal diagnostics (SQLite messages, ...) on stderr */
	if (getenv("PGBAKFS_DEBUG"))
		log_set_level(LOG_DEBUG);
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return EXIT_OK;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("pgbakfs 0.1.0\n");
		return EXIT_OK;
	}
	int rc = cli_take_common_options(&argc, argv);
	if (rc != EXIT_OK)
		return rc;
	for (size_t i = 0; i < ELEMENTSOF(commands); i++)
		if (!strcmp(argv[1], commands[i].name))
			return commands[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "pgbakfs: error: unknown command \"%s\"\n", argv[1]);
	fprintf(stderr, "hint: see \"pgbakfs --help\"\n");
	return EXIT_USAGE;
}
