#include "tools/cli.h"
#include "common/log.h"
#include "tools/config.h"
#include "common/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static char last_error[8192];
static bool last_shown = true; /* whether the message a hint follows was shown */

const char *cli_last_error(void) { return last_error; }

void cli_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
	fprintf(stderr, "pgbakfs: error: %s\n", last_error);
	log_file_line(LOG_ERROR, last_error);
	last_shown = true;
}

/* A warning or note: on stderr and in the log file, unless --log-level is above it. */
static void cli_message(LogLevel level, const char *fmt, va_list ap)
{
	char line[8192];
	vsnprintf(line, sizeof(line), fmt, ap);
	last_shown = level >= log_get_level();
	if (last_shown)
		fprintf(stderr, "pgbakfs: %s: %s\n", level == LOG_WARNING ? "warning" : "note", line);
	log_file_line(level, line);
}

void cli_warning(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cli_message(LOG_WARNING, fmt, ap);
	va_end(ap);
}

void cli_note(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cli_message(LOG_INFO, fmt, ap);
	va_end(ap);
}

void cli_hint(const char *fmt, ...)
{
	va_list ap;
	if (!last_shown)
		return;
	fputs("hint: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int cli_usage(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
	fprintf(stderr, "pgbakfs: error: %s\nhint: see \"pgbakfs %s --help\"\n", last_error, cmd);
	log_file_line(LOG_ERROR, last_error);
	last_shown = true;
	return EXIT_USAGE;
}

const char *cli_repo_location(const char *opt)
{
	const char *r = opt ? opt : getenv("PGBAKFS_REPO");
	const Config *conf;
	if ((!r || !*r) && cli_config(&conf) == EXIT_OK)
		r = config_setting(conf, "repo");
	if (!r || !*r) {
		cli_error("no repository given");
		cli_hint("pass --repo PATH, set PGBAKFS_REPO, or write \"repo = PATH\" in the config file");
		return NULL;
	}
	return r;
}

const char *cli_store_strerror(int r, bool s3)
{
	if (s3 && r == -EPERM) /* how the S3 driver reports a failed TLS verification */
		return "the server's TLS certificate could not be verified (a private CA: --ca-file FILE)";
	if (s3 && r == -EACCES)
		return "access denied by the S3 service (check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)";
	return strerror(-r);
}

int cli_open_repo(const char *opt, Repo **ret)
{
	CliLocation cl;
	int r = cli_location_resolve(opt, &cl);

	if (r == EXIT_OK)
		r = cli_open_location(&cl, ret);
	cli_location_clear(&cl);
	return r;
}

/* Say why the repository at cl could not be opened (r < 0). */
static int open_result(const CliLocation *cl, int r)
{
	const char *loc = cl->loc.url;

	switch (r) {
	case 0:
		break;
	case -ENOENT:
		cli_error("repository \"%s\" does not exist", loc);
		cli_hint("create it with \"pgbakfs init --repo %s\"", loc);
		break;
	case -ENOTDIR:
		cli_error("\"%s\" is not a pgbakfs repository (no config file)", loc);
		cli_hint("create one with \"pgbakfs init --repo %s\"", cl->loc.s3 ? loc : "DIR");
		break;
	case -EPROTONOSUPPORT:
		cli_error("repository \"%s\" uses a newer format than this pgbakfs supports (%d)", loc,
			  PGBAKFS_REPO_FORMAT);
		cli_hint("upgrade pgbakfs to use this repository");
		break;
	case -ENOKEY:
		cli_error("repository \"%s\" is encrypted and no passphrase was given", loc);
		cli_hint("set PGBAKFS_PASSPHRASE or pass --passphrase-file FILE (mode 0600)");
		break;
	case -EKEYREJECTED:
		cli_error("wrong passphrase for repository \"%s\"", loc);
		break;
	case -ESTALE:
		cli_error("repository \"%s\": its newest catalog is older than one this machine has seen "
			  "(newer generations vanished); refusing to work on an older catalog", loc);
		break;
	case -EUCLEAN:
		cli_error("repository \"%s\" has a key file but its config says it is not encrypted: "
			  "refusing to write it in the clear (was the config edited?)", loc);
		break;
	case -EBUSY:
		cli_error("repository \"%s\" is being repaired (repair --rebuild-catalog is running); "
			  "try again when it ends", loc);
		break;
	case -EBADMSG:
		cli_error("repository \"%s\" is damaged: its config or catalog cannot be read", loc);
		cli_hint("\"pgbakfs repair --rebuild-catalog\" rebuilds the catalog from the packs");
		break;
	default:
		cli_error("could not open repository \"%s\": %s", loc, cli_store_strerror(r, cl->loc.s3));
	}
	return r == 0 ? EXIT_OK : EXIT_FAIL;
}

int cli_open_location(const CliLocation *cl, Repo **ret)
{
	return open_result(cl, repo_open_at(&cl->loc, ret));
}

int cli_open_archive(const CliLocation *cl, Repo **ret)
{
	return open_result(cl, repo_open_archive(&cl->loc, ret));
}

int cli_write_begin(Repo *repo)
{
	char *holder = NULL;
	int r = repo_write_begin(repo, &holder);
	if (r == -EBUSY) {
		cli_error("repository \"%s\" is busy: another writer (%s) holds its lock", repo_path(repo),
			  holder ? holder : "?");
		cli_hint("wait for it, or raise PGBAKFS_LOCK_WAIT");
	} else if (r < 0)
		cli_error("could not lock repository \"%s\" for writing: %s", repo_path(repo),
			  strerror(-r));
	free(holder);
	return r < 0 ? EXIT_FAIL : EXIT_OK;
}

int cli_write_end(Repo *repo, bool publish)
{
	int r = repo_write_end(repo, publish);
	if (r == -ENOLCK)
		cli_error("repository \"%s\": the writer lock was lost before the catalog was published; "
			  "this change is discarded", repo_path(repo));
	else if (r == -ESTALE)
		cli_error("repository \"%s\": another writer published the catalog meanwhile; "
			  "this change is discarded", repo_path(repo));
	else if (r < 0)
		cli_error("could not publish the catalog of \"%s\": %s", repo_path(repo), strerror(-r));
	return r < 0 ? EXIT_FAIL : EXIT_OK;
}

int cli_open_repo_writer(const char *opt, Repo **ret)
{
	int rc = cli_open_repo(opt, ret);
	if (rc == EXIT_OK && (rc = cli_write_begin(*ret)) != EXIT_OK)
		*ret = repo_free(*ret);
	return rc;
}

int cli_close_repo(Repo *repo, int rc)
{
	int w = repo ? cli_write_end(repo, true) : EXIT_OK;
	repo_free(repo);
	return rc != EXIT_OK ? rc : w;
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
