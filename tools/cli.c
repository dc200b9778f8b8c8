#include "tools/cli.h"
#include "common/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void cli_error(const char *fmt, ...)
{
	va_list ap;
	fputs("pgbakfs: error: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void cli_hint(const char *fmt, ...)
{
	va_list ap;
	fputs("hint: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int cli_usage(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	fputs("pgbakfs: error: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nhint: see \"pgbakfs %s --help\"\n", cmd);
	return EXIT_USAGE;
}

const char *cli_repo_location(const char *opt)
{
	const char *r = opt ? opt : getenv("PGBAKFS_REPO");
	if (!r || !*r) {
		cli_error("no repository given");
		cli_hint("pass --repo PATH or set PGBAKFS_REPO");
		return NULL;
	}
	return r;
}

int cli_open_repo(const char *opt, Repo **ret)
{
	const char *loc = cli_repo_location(opt);
	Repo *repo;
	int r;

	if (!loc)
		return EXIT_USAGE;
	if (strncmp(loc, "s3://", 5) == 0) {
		cli_error("repository \"%s\": S3 repositories are not supported by this build", loc);
		return EXIT_FAIL;
	}
	r = repo_open(loc, &repo);
	switch (r) {
	case 0:
		*ret = repo;
		return EXIT_OK;
	case -ENOENT:
		cli_error("repository \"%s\" does not exist", loc);
		cli_hint("create it with \"pgbakfs init --repo %s\"", loc);
		break;
	case -ENOTDIR:
		cli_error("\"%s\" is not a pgbakfs repository (no config file)", loc);
		cli_hint("create one with \"pgbakfs init --repo DIR\" in an empty directory");
		break;
	case -EPROTONOSUPPORT:
		cli_error("repository \"%s\" uses a newer format than this pgbakfs supports (%d)", loc,
			  PGBAKFS_REPO_FORMAT);
		cli_hint("upgrade pgbakfs to use this repository");
		break;
	case -EBADMSG:
		cli_error("repository \"%s\" is damaged: its config or catalog cannot be read", loc);
		break;
	default:
		cli_error("could not open repository \"%s\": %s", loc, strerror(-r));
	}
	return EXIT_FAIL;
}

int cli_find_snapshot(Repo *repo, const char *id, const char *instance, SnapshotInfo *ret)
{
	int r = catalog_snapshot_get(repo_catalog(repo), id, instance, ret);
	if (r == -ENOENT) {
		if (strcmp(id, "latest") == 0)
			cli_error("repository \"%s\" has no snapshot%s%s%s", repo_path(repo),
				  instance ? " of instance \"" : "", instance ? instance : "",
				  instance ? "\"" : "");
		else
			cli_error("snapshot \"%s\" not found in repository \"%s\"", id, repo_path(repo));
		cli_hint("\"pgbakfs list\" shows the snapshots");
		return EXIT_FAIL;
	}
	if (r < 0) {
		cli_error("could not read the catalog of \"%s\": %s", repo_path(repo), strerror(-r));
		return EXIT_FAIL;
	}
	return EXIT_OK;
}

int cli_parse_jobs(const char *cmd, const char *s, int *ret)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (*end || v < 1 || v > 256)
		return cli_usage(cmd, "invalid number of jobs \"%s\" (1-256)", s);
	*ret = (int)v;
	return EXIT_OK;
}

bool cli_stderr_is_tty(void)
{
	return isatty(STDERR_FILENO) == 1;
}
