/*
 * pgbakfs verify ID: prove a snapshot by starting PostgreSQL on a writable
 * clone and checking every table and index, then throw the clone away.
 * pgbakfs dump ID -- PG_DUMP_ARGS: pg_dump out of such a clone (one table of
 * a big backup without restoring it).
 */
#include "common/util.h"
#include "tools/cli.h"
#include "tools/scratchpg.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>

enum { OPT_REPO = 0x100, OPT_PG_BIN, OPT_KEEP_SCRATCH, OPT_INSTANCE };

typedef struct ClonePgArgs {
	const char *repo_opt, *pg_bin, *id, *instance;
	bool keep;
	RecoveryTarget target;
	char repo[PATH_MAX];
	char **rest; /* dump: the arguments after "--" */
} ClonePgArgs;

static int parse(const char *cmd, const char *help, int argc, char **argv, ClonePgArgs *a)
{
	static const struct option opts[] = {
		{"repo", required_argument, NULL, OPT_REPO},
		{"pg-bin", required_argument, NULL, OPT_PG_BIN},
		{"keep-scratch", no_argument, NULL, OPT_KEEP_SCRATCH},
		{"instance", required_argument, NULL, OPT_INSTANCE},
		RECOVERY_OPTIONS,
		{"help", no_argument, NULL, 'h'},
		{0}};
	int c, rc, n = argc;

	/* everything after "--" belongs to the client program */
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--")) {
			n = i;
			break;
		}
	a->rest = argv + MIN(n + 1, argc);
	while ((c = getopt_long(n, argv, "h", opts, NULL)) != -1) {
		if (recovery_option(cmd, c, optarg, &a->target, &rc)) {
			if (rc != EXIT_OK)
				return rc;
			continue;
		}
		switch (c) {
		case OPT_REPO: a->repo_opt = optarg; break;
		case OPT_PG_BIN: a->pg_bin = optarg; break;
		case OPT_KEEP_SCRATCH: a->keep = true; break;
		case OPT_INSTANCE: a->instance = optarg; break;
		case 'h': printf("%s" RECOVERY_USAGE, help); return -1;
		default: return cli_usage(cmd, "invalid option");
		}
	}
	if (n - optind != 1)
		return cli_usage(cmd, "expected one snapshot ID");
	a->id = argv[optind];
	if ((rc = recovery_check(cmd, &a->target)) != EXIT_OK)
		return rc;
	const char *loc = cli_repo_location(a->repo_opt);
	if (!loc)
		return EXIT_FAIL;
	if (!realpath(loc, a->repo))
		snprintf(a->repo, sizeof(a->repo), "%s", loc);
	return EXIT_OK;
}

/*
 * Open the repository and find the snapshot: an exit code. cl: the repository
 * as resolved (passphrase, S3 settings) for the clone's server.
 */
static int open_snapshot(ClonePgArgs *a, CliLocation *cl, Repo **repo, SnapshotInfo *s)
{
	int rc = cli_location_resolve(a->repo, cl);
	if (rc == EXIT_OK)
		rc = cli_open_location(cl, repo);
	if (rc == EXIT_OK)
		rc = cli_find_snapshot(*repo, a->id, a->instance, s);
	return rc;
}

/* The first line of a file, for the one error line. */
static void first_line(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "re");
	buf[0] = 0;
	if (f) {
		if (!fgets(buf, (int)len, f))
			buf[0] = 0;
		fclose(f);
	}
	buf[strcspn(buf, "\n")] = 0;
}

/*
 * The checks on a started clone: amcheck on every table and btree index of
 * every database (pg_amcheck, installing the extension in the clone), or when
 * pg_amcheck is missing, every row of every relation read by pg_dumpall.
 */
static int run_checks(ScratchPg *pg, char *details, size_t len)
{
	char out[PATH_MAX + 16], line[400], prog[PATH_MAX + 16];
	snprintf(out, sizeof(out), "%s/checks.log", pg->root);
	_cleanup_close_ int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	bool amcheck = scratchpg_client_path(pg, "pg_amcheck", prog, sizeof(prog)) == 0;
	char jobs[32];
	snprintf(jobs, sizeof(jobs), "--jobs=%d", cpu_count());
	char *amcheck_args[] = {(char *)"--all", (char *)"--install-missing", jobs, NULL};
	char *dump_args[] = {(char *)"--file=/dev/null", NULL};
	const char *name = amcheck ? "amcheck" : "read every relation";
	int r = amcheck ? scratchpg_client(pg, "pg_amcheck", amcheck_args, fd, fd)
			: scratchpg_client(pg, "pg_dumpall", dump_args, -1, fd);
	if (r == 0) {
		snprintf(details, len, "startup: ok; %s: ok", name);
		return 0;
	}
	first_line(out, line, sizeof(line));
	snprintf(details, len, "%s: %s", name, *line ? line : r < 0 ? strerror(-r) : "failed");
	return -EIO;
}

int cmd_verify(int argc, char **argv)
{
	ClonePgArgs a = {0};
	CliLocation cl = {0};
	ScratchPg pg;
	SnapshotInfo s = {0};
	Repo *repo = NULL;
	char details[640], amcheck[PATH_MAX + 64];
	int r, rc = parse("verify",
			  "Usage: pgbakfs verify ID [--repo PATH] [--instance NAME] [--pg-bin DIR]\n"
			  "                         [--keep-scratch]\n\n"
			  "Prove a snapshot: start PostgreSQL on a writable clone of it (the\n"
			  "repository never changes), wait for consistency, check every table and\n"
			  "btree index with amcheck (or read every relation), stop, throw the clone\n"
			  "away, and record the outcome (list and show print it).\n\n"
			  "  --pg-bin DIR      PostgreSQL binaries (default: /usr/lib/postgresql/<the\n"
			  "                    snapshot's major>/bin); a client program not in DIR\n"
			  "                    comes from the newest /usr/lib/postgresql/*/bin\n"
			  "  --keep-scratch    keep the clone's directory (its path is printed)\n"
			  "  --instance NAME   with ID \"latest\": the newest snapshot of instance NAME\n",
			  argc, argv, &a);
	if (rc != EXIT_OK)
		return rc < 0 ? EXIT_OK : rc;
	rc = open_snapshot(&a, &cl, &repo, &s);
	if (rc != EXIT_OK)
		goto out;
	/* missing programs say nothing about the snapshot: not recorded */
	r = scratchpg_prepare(&pg, &s, a.pg_bin, &a.target);
	if (r == 0 && scratchpg_client_path(&pg, "pg_amcheck", amcheck, sizeof(amcheck)) < 0)
		r = scratchpg_require_client(&pg, "pg_dumpall");
	if (r < 0) {
		cli_error("cannot verify snapshot \"%s\": %s", s.name, pg.error);
		rc = EXIT_FAIL;
		goto out;
	}
	r = scratchpg_start(&pg, a.repo, &cl, &s, &a.target);
	if (r < 0)
		snprintf(details, sizeof(details), "startup: %s", pg.error);
	else
		r = run_checks(&pg, details, sizeof(details));
	scratchpg_stop(&pg, a.keep);
	/* the outcome is a catalog change: for S3, under the writer lock, published */
	int w = repo_write_begin(repo, NULL);
	SnapshotInfo now_s = {0};
	/* by name again: the catalog may have been brought to a newer generation */
	if (w == 0)
		w = catalog_snapshot_get(repo_catalog(repo), s.name, NULL, &now_s);
	if (w == 0)
		w = catalog_snapshot_set_verified(repo_catalog(repo), now_s.rowid, now_ns(), r == 0,
						  details);
	snapshot_info_clear(&now_s);
	int p = repo_write_end(repo, w == 0);
	if (w == 0)
		w = p;
	if (r < 0) {
		cli_error("verify of snapshot \"%s\" failed: %s", s.name, details);
		rc = EXIT_FAIL;
	} else {
		printf("verified snapshot \"%s\": %s\n", s.name, details);
	}
	if (a.keep && pg.root[0])
		fprintf(stderr, "pgbakfs: the clone's directory is kept in \"%s\"\n", pg.root);
	if (w < 0 && rc == EXIT_OK) {
		cli_error("could not record the outcome of verify: %s", strerror(-w));
		rc = EXIT_FAIL;
	}
out:
	cli_location_clear(&cl);
	snapshot_info_clear(&s);
	repo_free(repo);
	return rc;
}

int cmd_dump(int argc, char **argv)
{
	ClonePgArgs a = {0};
	CliLocation cl = {0};
	ScratchPg pg;
	SnapshotInfo s = {0};
	Repo *repo = NULL;
	int r, rc = parse("dump",
			  "Usage: pgbakfs dump ID [--repo PATH] [--instance NAME] [--pg-bin DIR] [--target-...]\n"
			  "                    -- PG_DUMP_ARGS...\n\n"
			  "Run pg_dump against a throwaway PostgreSQL started on a writable clone of\n"
			  "snapshot ID, output on stdout: e.g. one table out of a large backup,\n"
			  "without restoring it:  pgbakfs dump latest -- -t public.orders mydb\n\n",
			  argc, argv, &a);
	if (rc != EXIT_OK)
		return rc < 0 ? EXIT_OK : rc;
	rc = open_snapshot(&a, &cl, &repo, &s);
	/* the repository is not needed while pg_dump runs */
	repo = repo_free(repo);
	if (rc != EXIT_OK)
		goto out;
	r = scratchpg_prepare(&pg, &s, a.pg_bin, &a.target);
	if (r == 0)
		r = scratchpg_require_client(&pg, "pg_dump");
	if (r < 0) {
		cli_error("cannot dump snapshot \"%s\": %s", s.name, pg.error);
		rc = EXIT_FAIL;
		goto out;
	}
	r = scratchpg_start(&pg, a.repo, &cl, &s, &a.target);
	if (r < 0) {
		cli_error("dump of snapshot \"%s\" failed: %s", s.name, pg.error);
		rc = EXIT_FAIL;
	} else {
		fflush(stdout);
		r = scratchpg_client(&pg, "pg_dump", a.rest, STDOUT_FILENO, STDERR_FILENO);
		if (r != 0) {
			cli_error("pg_dump on snapshot \"%s\" failed (%s)", s.name,
				  r < 0 ? strerror(-r) : "its message is above");
			rc = EXIT_FAIL;
		}
	}
	scratchpg_stop(&pg, a.keep);
	if (a.keep && pg.root[0])
		fprintf(stderr, "pgbakfs: the clone's directory is kept in \"%s\"\n", pg.root);
out:
	cli_location_clear(&cl);
	snapshot_info_clear(&s);
	return rc;
}
