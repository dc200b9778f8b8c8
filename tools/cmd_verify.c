/*
 * pgbakfs verify ID: prove a snapshot by starting PostgreSQL on a writable
 * clone and checking every table and index, then throw the clone away.
 * pgbakfs dump ID -- PG_DUMP_ARGS: pg_dump out of such a clone (one table of
 * a big backup without restoring it).
 */
#include "common/util.h"
#include "tools/cli.h"
#include "tools/opts.h"
#include "tools/scratchpg.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>

enum { OPT_PG_BIN = 0x100, OPT_KEEP_SCRATCH };

typedef struct ClonePgArgs {
	CliArgs a;
	const char *pg_bin, *id;
	bool keep;
	char repo[PATH_MAX];
} ClonePgArgs;

static int clone_option(int c, char *arg, void *opts)
{
	ClonePgArgs *x = opts;

	if (c == OPT_PG_BIN)
		x->pg_bin = arg;
	else if (c == OPT_KEEP_SCRATCH)
		x->keep = true;
	return EXIT_OK;
}

static const struct option clone_options[] = {
	{"pg-bin", required_argument, NULL, OPT_PG_BIN},
	{"keep-scratch", no_argument, NULL, OPT_KEEP_SCRATCH},
	{0}};

/* verify and dump: the same options, one snapshot ID, dump's pg_dump arguments after "--" */
#define CLONE_COMMAND(cmd, help_text)                                                        \
	{                                                                                    \
		.name = cmd, .common = CLI_REPO | CLI_INSTANCE | CLI_RECOVERY | CLI_REST,    \
		.options = clone_options, .option = clone_option, .n_args = 1,               \
		.missing = "expected one snapshot ID", .help = help_text RECOVERY_USAGE,     \
	}

/* Parsed, the target checked, the repository's location absolute (the clone's server uses it). */
static int parse(const CliCommand *cmd, int argc, char **argv, ClonePgArgs *x)
{
	int rc = cli_parse(cmd, argc, argv, &x->a, x);

	if (rc != CLI_CONTINUE)
		return rc;
	x->id = x->a.args[0];
	if ((rc = recovery_check(cmd->name, &x->a.target)) != EXIT_OK)
		return rc;
	const char *loc = cli_repo_location(x->a.repo);
	if (!loc)
		return EXIT_FAIL;
	if (!realpath(loc, x->repo))
		snprintf(x->repo, sizeof(x->repo), "%s", loc);
	return CLI_CONTINUE;
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
		rc = cli_find_snapshot(*repo, a->id, a->a.instance, s);
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

static const CliCommand verify_command = CLONE_COMMAND(
	"verify",
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
	"  --instance NAME   with ID \"latest\": the newest snapshot of instance NAME\n");

/*
 * The outcome (r: 0 passed) recorded with the snapshot: a catalog change,
 * for S3 under the writer lock, published. 0 or -errno.
 */
static int verify_record(Repo *repo, const SnapshotInfo *s, int r, const char *details)
{
	SnapshotInfo now_s = {0};
	int w = repo_write_begin(repo, NULL);

	/* by name again: the catalog may have been brought to a newer generation */
	if (w == 0)
		w = catalog_snapshot_get(repo_catalog(repo), s->name, NULL, &now_s);
	if (w == 0)
		w = catalog_snapshot_set_verified(repo_catalog(repo), now_s.rowid, now_ns(), r == 0,
						  details);
	snapshot_info_clear(&now_s);
	int p = repo_write_end(repo, w == 0);
	return w == 0 ? p : w;
}

/* A clone of s started and checked, then stopped: 0 or -errno, what happened in details. */
static int verify_clone(ScratchPg *pg, const ClonePgArgs *x, const CliLocation *cl,
			const SnapshotInfo *s, char *details, size_t len)
{
	int r = scratchpg_start(pg, x->repo, cl, s, &x->a.target);

	if (r < 0)
		snprintf(details, len, "startup: %s", pg->error);
	else
		r = run_checks(pg, details, len);
	scratchpg_stop(pg, x->keep);
	return r;
}

/* The programs: the snapshot's PostgreSQL, pg_amcheck or else pg_dumpall. An exit code. */
static int verify_prepare(ScratchPg *pg, const ClonePgArgs *x, const SnapshotInfo *s)
{
	char amcheck[PATH_MAX + 64];
	int r = scratchpg_prepare(pg, s, x->pg_bin, &x->a.target);

	if (r == 0 && scratchpg_client_path(pg, "pg_amcheck", amcheck, sizeof(amcheck)) < 0)
		r = scratchpg_require_client(pg, "pg_dumpall");
	if (r < 0) {
		cli_error("cannot verify snapshot \"%s\": %s", s->name, pg->error);
		return EXIT_FAIL;
	}
	return EXIT_OK;
}

int cmd_verify(int argc, char **argv)
{
	ClonePgArgs x = {0};
	CliLocation cl = {0};
	ScratchPg pg;
	SnapshotInfo s = {0};
	Repo *repo = NULL;
	char details[640];
	int r, w, rc = parse(&verify_command, argc, argv, &x);

	if (rc != CLI_CONTINUE)
		return rc;
	rc = open_snapshot(&x, &cl, &repo, &s);
	/* missing programs say nothing about the snapshot: not recorded */
	if (rc == EXIT_OK)
		rc = verify_prepare(&pg, &x, &s);
	if (rc != EXIT_OK)
		goto out;
	/* start a clone, check it, throw it away; the outcome goes into the catalog */
	r = verify_clone(&pg, &x, &cl, &s, details, sizeof(details));
	w = verify_record(repo, &s, r, details);
	if (r < 0) {
		cli_error("verify of snapshot \"%s\" failed: %s", s.name, details);
		rc = EXIT_FAIL;
	} else {
		printf("verified snapshot \"%s\": %s\n", s.name, details);
	}
	if (x.keep && pg.root[0])
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

static const CliCommand dump_command = CLONE_COMMAND(
	"dump",
	"Usage: pgbakfs dump ID [--repo PATH] [--instance NAME] [--pg-bin DIR] [--target-...]\n"
	"                    -- PG_DUMP_ARGS...\n\n"
	"Run pg_dump against a throwaway PostgreSQL started on a writable clone of\n"
	"snapshot ID, output on stdout: e.g. one table out of a large backup,\n"
	"without restoring it:  pgbakfs dump latest -- -t public.orders mydb\n\n");

/* pg_dump with the arguments after "--" against a started clone of s: an exit code. */
static int dump_clone(ScratchPg *pg, const ClonePgArgs *x, const CliLocation *cl,
		      const SnapshotInfo *s)
{
	int rc = EXIT_OK, r = scratchpg_start(pg, x->repo, cl, s, &x->a.target);

	if (r < 0) {
		cli_error("dump of snapshot \"%s\" failed: %s", s->name, pg->error);
		rc = EXIT_FAIL;
	} else {
		fflush(stdout);
		r = scratchpg_client(pg, "pg_dump", x->a.rest, STDOUT_FILENO, STDERR_FILENO);
		if (r != 0) {
			cli_error("pg_dump on snapshot \"%s\" failed (%s)", s->name,
				  r < 0 ? strerror(-r) : "its message is above");
			rc = EXIT_FAIL;
		}
	}
	scratchpg_stop(pg, x->keep);
	if (x->keep && pg->root[0])
		fprintf(stderr, "pgbakfs: the clone's directory is kept in \"%s\"\n", pg->root);
	return rc;
}

int cmd_dump(int argc, char **argv)
{
	ClonePgArgs x = {0};
	CliLocation cl = {0};
	ScratchPg pg;
	SnapshotInfo s = {0};
	Repo *repo = NULL;
	int r, rc = parse(&dump_command, argc, argv, &x);

	if (rc != CLI_CONTINUE)
		return rc;
	/* the snapshot; the repository is not needed while pg_dump runs */
	rc = open_snapshot(&x, &cl, &repo, &s);
	repo = repo_free(repo);
	if (rc != EXIT_OK)
		goto out;
	/* the programs: the snapshot's PostgreSQL, pg_dump */
	r = scratchpg_prepare(&pg, &s, x.pg_bin, &x.a.target);
	if (r == 0)
		r = scratchpg_require_client(&pg, "pg_dump");
	if (r < 0) {
		cli_error("cannot dump snapshot \"%s\": %s", s.name, pg.error);
		rc = EXIT_FAIL;
		goto out;
	}
	/* a clone started, pg_dump run against it, the clone thrown away */
	rc = dump_clone(&pg, &x, &cl, &s);
out:
	cli_location_clear(&cl);
	snapshot_info_clear(&s);
	return rc;
}
