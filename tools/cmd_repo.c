/*
 * Commands on the repository as a whole: init, gc, check, stats, key, repair
 * (upgrade: cmd_upgrade.c). Snapshot records (list, show, delete) are in
 * cmd_snapshots.c; retention (expire, pin) in cmd_retention.c.
 */
#include "common/json.h"
#include "common/progress.h"
#include "common/util.h"
#include "ingest/archivecheck.h"
#include "store/check.h"
#include "store/crypt.h"
#include "store/repair.h"
#include "store/gc.h"
#include "tools/cli.h"
#include "tools/config.h"
#include "tools/opts.h"

#include <stdio.h>
#include <string.h>

enum { OPT_CHUNK_SIZE = 0x100, OPT_PACK_SIZE, OPT_LEVEL, OPT_ENCRYPT, OPT_READ_DATA, OPT_ARCHIVE,
       OPT_ARCHIVE_TIMEOUT, OPT_REPACK, OPT_NEW_PASSPHRASE_FILE, OPT_REBUILD_CATALOG };

/* ---- init ---- */

static int init_option(int c, char *arg, void *opts)
{
	RepoInitOptions *o = opts;
	uint64_t v;

	switch (c) {
	case OPT_CHUNK_SIZE:
		if (parse_size(arg, &v) < 0 || !chunk_size_valid(v))
			return cli_usage("init", "invalid chunk size \"%s\": a power of two from 8K to 8M", arg);
		o->chunk_size = v;
		break;
	case OPT_PACK_SIZE:
		if (parse_size(arg, &v) < 0 || v < (1 << 20) || v > (1ULL << 30))
			return cli_usage("init", "invalid pack size \"%s\": 1M to 1G", arg);
		o->pack_size = v;
		break;
	case OPT_LEVEL:
		o->compress_level = atoi(arg);
		if (o->compress_level < 1 || o->compress_level > 19)
			return cli_usage("init", "invalid compression level \"%s\": 1 to 19", arg);
		break;
	case OPT_ENCRYPT: o->encrypt = true; break;
	}
	return EXIT_OK;
}

static const struct option init_options[] = {
	{"chunk-size", required_argument, NULL, OPT_CHUNK_SIZE},
	{"pack-size", required_argument, NULL, OPT_PACK_SIZE},
	{"compress-level", required_argument, NULL, OPT_LEVEL},
	{"encrypt", no_argument, NULL, OPT_ENCRYPT},
	{0}};

static const CliCommand init_command = {
	.name = "init",
	.common = CLI_REPO,
	.options = init_options,
	.option = init_option,
	.help = "Usage: pgbakfs init --repo PATH|s3://BUCKET/PREFIX [--chunk-size 64K]\n"
		"                    [--pack-size 32M] [--compress-level 1] [--encrypt]\n\n"
		"Create an empty repository in PATH (missing or empty directory) or under an\n"
		"empty bucket prefix. The chunk size (power of two, 8K..8M) is fixed for the\n"
		"repository's life.\n\n"
		"--encrypt: chunks, catalog, manifests and WAL are sealed with AES-256-GCM under\n"
		"a random master key, wrapped by a key derived (scrypt) from the passphrase in\n"
		"PGBAKFS_PASSPHRASE or --passphrase-file FILE (mode 0600). Chunk ids are keyed\n"
		"HMAC-SHA-256. Lose the passphrase and the data is gone.\n",
};

/* What repo_init_at's result r means for the user: one line; an exit code. */
static int init_report(int r, const CliLocation *cl, const RepoInitOptions *o)
{
	const char *loc = cl->loc.url;

	if (r == -EEXIST) {
		cli_error("repository \"%s\" already exists", loc);
		return EXIT_FAIL;
	}
	if (r == -ENOKEY) {
		cli_error("--encrypt needs a passphrase");
		cli_hint("set PGBAKFS_PASSPHRASE or pass --passphrase-file FILE (mode 0600)");
		return EXIT_USAGE;
	}
	if (r == -ENOTEMPTY) {
		cli_error("\"%s\" is not empty", loc);
		cli_hint("create the repository in a new or empty directory or bucket prefix");
		return EXIT_FAIL;
	}
	if (r < 0) {
		cli_error("could not create repository \"%s\": %s", loc,
			  cli_store_strerror(r, cl->loc.s3 != NULL));
		return EXIT_FAIL;
	}
	printf("created %srepository \"%s\" (chunk size %llu KiB)\n", o->encrypt ? "encrypted " : "", loc,
	       (unsigned long long)((o->chunk_size ? o->chunk_size : PGBAKFS_DEFAULT_CHUNK_SIZE) / 1024));
	return EXIT_OK;
}

int cmd_init(int argc, char **argv)
{
	RepoInitOptions o = {0};
	CliLocation cl;
	CliArgs a;
	int rc = cli_parse(&init_command, argc, argv, &a, &o);

	if (rc != CLI_CONTINUE)
		return rc;
	/* where: a directory, or a bucket prefix with its settings and credentials */
	rc = cli_location_resolve(a.repo, &cl);
	/* the config object, an empty catalog (and with --encrypt, the wrapped master key) */
	if (rc == EXIT_OK)
		rc = init_report(repo_init_at(&cl.loc, &o), &cl, &o);
	cli_location_clear(&cl);
	return rc;
}

/* ---- gc ---- */

static int gc_option(int c, char *arg, void *opts)
{
	GcOptions *o = opts;
	char *end;
	long pct;

	if (c != OPT_REPACK)
		return EXIT_OK;
	o->repack_pct = GC_REPACK_DEFAULT_PCT;
	if (!arg)
		return EXIT_OK;
	errno = 0;
	pct = strtol(arg, &end, 10);
	if (errno || end == arg || *end || pct < 1 || pct > 99)
		return cli_usage("gc", "invalid --repack \"%s\": a percentage from 1 to 99", arg);
	o->repack_pct = (unsigned)pct;
	return EXIT_OK;
}

static const struct option gc_options[] = {{"repack", optional_argument, NULL, OPT_REPACK}, {0}};

static const CliCommand gc_command = {
	.name = "gc",
	.common = CLI_REPO,
	.options = gc_options,
	.option = gc_option,
	.help = "Usage: pgbakfs gc [--repack[=PCT]] [--repo PATH]\n\n"
		"Remove chunks and packs that no snapshot uses, and the leftovers of\n"
		"interrupted backups, then compact the catalog when much of it is free.\n"
		"Safe while backups, restores and mounts run.\n\n"
		"--repack[=PCT]: also rewrite every pack whose live chunks fill less than\n"
		"PCT% of it (default " CLI_STR(GC_REPACK_DEFAULT_PCT) "): its live chunks are checked and copied into new\n"
		"packs, and the old pack is deleted once no restore, mount or backup that\n"
		"started before the copy runs (else by a later gc). A pack holding a\n"
		"damaged chunk is reported and kept as it is.\n",
};

/* "gc: reclaimed ...": what was deleted, and what waits for the next gc. */
static void gc_print(const GcResult *g)
{
	char b[32];

	printf("gc: reclaimed %s: %llu pack(s) and %llu orphaned object(s) deleted, "
	       "%llu chunk(s) and %llu content list(s) dropped",
	       format_bytes(g->bytes_reclaimed, b, sizeof(b)),
	       (unsigned long long)g->packs_deleted, (unsigned long long)g->orphans_deleted,
	       (unsigned long long)g->chunks_deleted, (unsigned long long)g->contents_deleted);
	if (g->sessions_reaped)
		printf(", %llu interrupted session(s) cleaned up", (unsigned long long)g->sessions_reaped);
	if (g->snapshots_purged)
		printf(", %llu deleted snapshot(s) released by mounts purged",
		       (unsigned long long)g->snapshots_purged);
	if (g->catalog_bytes_freed)
		printf(", catalog compacted by %s", format_bytes(g->catalog_bytes_freed, b, sizeof(b)));
	printf("\n");
	if (g->chunks_waiting)
		printf("gc: %llu unused chunk(s) kept for a running backup; the next gc "
		       "removes them\n", (unsigned long long)g->chunks_waiting);
}

/* "repack: ...": packs rewritten, bytes copied and given back. */
static void repack_print(const GcResult *g)
{
	char b[32], b2[32];
	uint64_t back = g->repacked_bytes_deleted > g->bytes_copied
				? g->repacked_bytes_deleted - g->bytes_copied : 0;

	printf("repack: %llu pack(s) repacked into %llu, %s copied, %s given back",
	       (unsigned long long)g->packs_repacked, (unsigned long long)g->packs_written,
	       format_bytes(g->bytes_copied, b, sizeof(b)), format_bytes(back, b2, sizeof(b2)));
	if (g->packs_retired_waiting)
		printf(", %llu old pack(s) kept until the sessions that may read them end "
		       "(the next gc deletes them)", (unsigned long long)g->packs_retired_waiting);
	printf("\n");
}

/* repo_gc_opts's result r: the summary lines, or one error line; an exit code. */
static int gc_report(Repo *repo, int r, const GcOptions *o, const GcResult *g)
{
	if (r == -EBUSY) {
		cli_error("another gc is running on repository \"%s\"", repo_path(repo));
		return EXIT_FAIL;
	}
	if (r < 0) {
		cli_error("gc failed on repository \"%s\": %s", repo_path(repo), strerror(-r));
		return EXIT_FAIL;
	}
	gc_print(g);
	if (o->repack_pct)
		repack_print(g);
	if (g->packs_damaged) {
		cli_error("%llu pack(s) with %llu damaged chunk(s) were not repacked; run "
			  "\"pgbakfs check --read-data\"", (unsigned long long)g->packs_damaged,
			  (unsigned long long)g->chunks_damaged);
		return EXIT_FAIL;
	}
	return EXIT_OK;
}

int cmd_gc(int argc, char **argv)
{
	GcOptions o = {0};
	GcResult g;
	Repo *repo = NULL;
	CliArgs a;
	int rc = cli_parse(&gc_command, argc, argv, &a, &o);

	if (rc != CLI_CONTINUE)
		return rc;
	/* the repository, as its writer */
	rc = cli_open_repo_writer(a.repo, &repo);
	if (rc != EXIT_OK)
		return rc;
	/* delete what no snapshot uses (with --repack, rewrite sparse packs) and say what */
	rc = gc_report(repo, repo_gc_opts(repo, &o, &g), &o, &g);
	/* publish the catalog */
	return cli_close_repo(repo, rc);
}

/* ---- check ---- */

typedef struct CheckArgs {
	CliArgs a;
	CheckOptions o;
	bool archive;
	const char *timeout_opt;
	long timeout_s;
} CheckArgs;

static int check_option(int c, char *arg, void *opts)
{
	CheckArgs *x = opts;
	char *end;

	switch (c) {
	case OPT_READ_DATA: x->o.read_data = true; break;
	case OPT_ARCHIVE: x->archive = true; break;
	case OPT_ARCHIVE_TIMEOUT:
		x->timeout_opt = arg;
		errno = 0;
		x->timeout_s = strtol(arg, &end, 10);
		if (errno || end == arg || *end || x->timeout_s < 1 || x->timeout_s > 86400)
			return cli_usage("check", "invalid archive timeout \"%s\": 1 to 86400 seconds", arg);
		break;
	}
	return EXIT_OK;
}

static const struct option check_options[] = {
	{"read-data", no_argument, NULL, OPT_READ_DATA},
	{"archive", no_argument, NULL, OPT_ARCHIVE},
	{"archive-timeout", required_argument, NULL, OPT_ARCHIVE_TIMEOUT},
	{0}};

static const CliCommand check_command = {
	.name = "check",
	.common = CLI_REPO | CLI_JOBS | CLI_PROGRESS | CLI_DBNAME | CLI_INSTANCE,
	.options = check_options,
	.option = check_option,
	.help = "Usage: pgbakfs check [--repo PATH] [--read-data] [-j N] [--[no-]progress]\n"
		"       pgbakfs check --archive -d CONNINFO [--archive-timeout SECONDS] [--repo PATH]\n"
		"       pgbakfs check --archive [--instance NAME] [--archive-timeout SECONDS]\n\n"
		"Check the catalog and that every pack is present; with --read-data,\n"
		"read and verify every chunk and name the snapshots any damage affects.\n"
		"Exit status 1 when a problem is found.\n\n"
		"--archive: check that the server's archive_command brings WAL into this\n"
		"repository. The server writes a restore point and switches WAL\n"
		"(superuser, or a role granted pg_create_restore_point, pg_switch_wal and\n"
		"pg_reload_conf), then the check waits up to --archive-timeout seconds\n"
		"(default 60) for that segment in the repository. On failure, one line\n"
		"names the segment and archive_command's last failure (pg_stat_archiver).\n"
		"Without -d, the conninfo of the instance in the config file (--instance\n"
		"NAME, or the only one configured).\n",
};

/* -d, --instance and --archive-timeout go with --archive, --read-data without. */
static int check_validate(CheckArgs *x)
{
	const char *conninfo = x->a.conninfo;
	int rc;

	if (!x->archive && (conninfo || x->timeout_opt))
		return cli_usage("check", "%s needs --archive", conninfo ? "-d" : "--archive-timeout");
	if (x->archive && !conninfo) { /* the instance's, from the config file */
		const ConfigInstance *in;
		rc = cli_config_instance("check", x->a.instance, &in);
		if (rc != EXIT_OK)
			return rc;
		x->a.conninfo = in ? in->conninfo : NULL;
	}
	if (x->archive && !x->a.conninfo)
		return cli_usage("check", "--archive needs -d CONNINFO (or an instance with a conninfo in the config file)");
	if (x->a.instance && !x->archive)
		return cli_usage("check", "--instance needs --archive");
	if (x->archive && x->o.read_data)
		return cli_usage("check", "--archive and --read-data are separate checks");
	x->o.jobs = x->a.jobs;
	return EXIT_OK;
}

/* archive_check's outcome: one line, pass or fail; an exit code. */
static int check_archive_report(Repo *repo, int r, const ArchiveCheckResult *res,
				const PgError *err, int timeout_s)
{
	if (r < 0)
		cli_error("%s", err->msg);
	else if (res->status == ARCHIVE_CHECK_MODE_OFF) {
		cli_error("archive_mode is off on the server: no WAL is archived");
		cli_hint("set archive_mode = on and archive_command = 'pgbakfs wal-push %%p --repo %s', "
			 "then restart the server", repo_path(repo));
	} else if (res->status == ARCHIVE_CHECK_NO_COMMAND) {
		cli_error("archive_command is empty on the server: no WAL is archived");
		cli_hint("set archive_command = 'pgbakfs wal-push %%p --repo %s', then reload the server",
			 repo_path(repo));
	} else if (res->status == ARCHIVE_CHECK_TIMEOUT && res->last_archived_wal[0] &&
		   strcmp(res->last_archived_wal, res->segment) >= 0)
		cli_error("WAL segment %s was not archived within %d s: the server archived it, but "
			  "not into repository \"%s\"; check where archive_command pushes",
			  res->segment, timeout_s, repo_path(repo));
	else if (res->status == ARCHIVE_CHECK_TIMEOUT && res->last_failed_wal[0])
		cli_error("WAL segment %s was not archived within %d s: archive_command last failed "
			  "on %s at %s; see the server log", res->segment, timeout_s,
			  res->last_failed_wal, res->last_failed_time);
	else if (res->status == ARCHIVE_CHECK_TIMEOUT)
		cli_error("WAL segment %s was not archived within %d s: archive_command has not "
			  "failed yet, the archiver may be behind; see the server log", res->segment,
			  timeout_s);
	else {
		printf("archive: WAL segment %s archived in %.1f s\n", res->segment, res->seconds);
		return EXIT_OK;
	}
	return EXIT_FAIL;
}

/* check --archive: one line, pass or fail; returns the exit code. */
static int check_archive(const CheckArgs *x)
{
	ArchiveCheckResult res;
	PgError err;
	Repo *repo = NULL;
	int r, rc = cli_open_repo(x->a.repo, &repo);

	if (rc != EXIT_OK)
		return rc;
	/* switch WAL on the server, wait for the segment in the repository */
	r = archive_check(repo, x->a.conninfo, (int)x->timeout_s, &res, &err);
	rc = check_archive_report(repo, r, &res, &err, (int)x->timeout_s);
	repo_free(repo);
	return rc;
}

static void print_problem(CheckSeverity sev, const char *msg, void *userdata _unused_)
{
	if (sev == CHECK_ERROR)
		cli_error("%s", msg);
	else
		cli_note("%s", msg);
}

/* repo_check's result r: one line, consistent or how many problems; an exit code. */
static int check_report(Repo *repo, int r, const CheckOptions *o, const CheckResult *res)
{
	if (r < 0) {
		cli_error("could not check repository \"%s\": %s", repo_path(repo), strerror(-r));
		return EXIT_FAIL;
	}
	if (res->n_errors) {
		cli_error("repository \"%s\" has %llu problem(s)", repo_path(repo),
			  (unsigned long long)res->n_errors);
		return EXIT_FAIL;
	}
	printf("check: repository \"%s\" is consistent: %llu pack(s)", repo_path(repo),
	       (unsigned long long)res->n_packs);
	if (o->read_data)
		printf(", %llu chunk(s) read and verified", (unsigned long long)res->n_chunks_read);
	printf("\n");
	return EXIT_OK;
}

/* check [--read-data]: the catalog against the packs (and every chunk read). */
static int check_repository(CheckArgs *x)
{
	Progress *progress = NULL;
	CheckResult res;
	Repo *repo = NULL;
	int r, rc = cli_open_repo(x->a.repo, &repo);

	if (rc != EXIT_OK)
		return rc;
	/* --read-data reads every pack: progress by their bytes */
	if (x->o.read_data) {
		CatalogStats st = {0};
		catalog_stats(repo_catalog(repo), &st);
		progress_new("check", st.pack_bytes, x->a.progress, &progress);
		x->o.progress = progress;
	}
	/* every problem is printed as it is found; then the verdict */
	r = repo_check(repo, &x->o, print_problem, NULL, &res);
	progress_free(progress);
	rc = check_report(repo, r, &x->o, &res);
	repo_free(repo);
	return rc;
}

int cmd_check(int argc, char **argv)
{
	CheckArgs x = {.timeout_s = 60};
	int rc = cli_parse(&check_command, argc, argv, &x.a, &x);

	if (rc != CLI_CONTINUE)
		return rc;
	rc = check_validate(&x);
	if (rc != EXIT_OK)
		return rc;
	/* --archive: the server's archive_command against this repository */
	if (x.archive)
		return check_archive(&x);
	/* else the repository itself */
	return check_repository(&x);
}

/* ---- stats ---- */

static const CliCommand stats_command = {
	.name = "stats",
	.common = CLI_REPO | CLI_JSON,
	.help = "Usage: pgbakfs stats [--repo PATH] [--json]\n\n"
		"Repository size, deduplication and compression.\n",
};

typedef struct StatsRatios {
	double dedup; /* logical bytes over unique chunk bytes */
	double total; /* logical bytes over stored bytes */
} StatsRatios;

static int stats_json(Repo *repo, const CatalogStats *st, const StatsRatios *q)
{
	JsonWriter w;
	int rc;

	json_init(&w, stdout);
	json_begin_object(&w);
	json_key(&w, "snapshots"); json_uint(&w, st->n_snapshots);
	json_key(&w, "packs"); json_uint(&w, st->n_packs);
	json_key(&w, "chunks"); json_uint(&w, st->n_chunks);
	json_key(&w, "contents"); json_uint(&w, st->n_contents);
	json_key(&w, "files"); json_uint(&w, st->n_files);
	json_key(&w, "logical_bytes"); json_uint(&w, st->logical_bytes);
	json_key(&w, "unique_bytes"); json_uint(&w, st->chunk_plain_bytes);
	json_key(&w, "stored_bytes"); json_uint(&w, st->pack_bytes);
	json_key(&w, "chunk_size"); json_uint(&w, repo_config(repo)->chunk_size);
	json_key(&w, "dedup_ratio"); json_double(&w, q->dedup);
	json_key(&w, "total_ratio"); json_double(&w, q->total);
	rc = cli_wal_stats(repo, &w);
	json_end_object(&w);
	putchar('\n');
	return rc;
}

static int stats_text(Repo *repo, const CatalogStats *st, const StatsRatios *q)
{
	char a[32], b[32], d[32];

	printf("snapshots:      %llu\n", (unsigned long long)st->n_snapshots);
	printf("logical size:   %s (sum of all snapshots)\n", format_bytes(st->logical_bytes, a, sizeof(a)));
	printf("unique data:    %s in %llu chunk(s) (dedup %.2fx)\n",
	       format_bytes(st->chunk_plain_bytes, b, sizeof(b)), (unsigned long long)st->n_chunks,
	       q->dedup);
	printf("stored:         %s in %llu pack(s) (overall %.2fx)\n",
	       format_bytes(st->pack_bytes, d, sizeof(d)), (unsigned long long)st->n_packs, q->total);
	printf("chunk size:     %llu KiB\n", (unsigned long long)(repo_config(repo)->chunk_size / 1024));
	return cli_wal_stats(repo, NULL);
}

int cmd_stats(int argc, char **argv)
{
	CatalogStats st;
	StatsRatios q;
	Repo *repo = NULL;
	CliArgs a;
	int r, rc = cli_parse(&stats_command, argc, argv, &a, NULL);

	if (rc != CLI_CONTINUE)
		return rc;
	rc = cli_open_repo(a.repo, &repo);
	if (rc != EXIT_OK)
		return rc;
	/* the catalog's totals */
	r = catalog_stats(repo_catalog(repo), &st);
	if (r < 0) {
		cli_error("could not read the catalog of \"%s\": %s", repo_path(repo), strerror(-r));
		repo_free(repo);
		return EXIT_FAIL;
	}
	q.dedup = st.chunk_plain_bytes ? (double)st.logical_bytes / (double)st.chunk_plain_bytes : 0;
	q.total = st.pack_bytes ? (double)st.logical_bytes / (double)st.pack_bytes : 0;
	/* printed with the WAL archive's timelines */
	rc = a.json ? stats_json(repo, &st, &q) : stats_text(repo, &st, &q);
	repo_free(repo);
	return rc;
}

/* ---- key change ---- */

static int key_option(int c, char *arg, void *opts)
{
	if (c == OPT_NEW_PASSPHRASE_FILE)
		*(const char **)opts = arg;
	return EXIT_OK;
}

static const struct option key_options[] = {
	{"new-passphrase-file", required_argument, NULL, OPT_NEW_PASSPHRASE_FILE}, {0}};

static const CliCommand key_command = {
	.name = "key",
	.common = CLI_REPO,
	.options = key_options,
	.option = key_option,
	.n_args = CLI_ARGS_ANY,
	.help = "Usage: pgbakfs key change [--repo R] [--new-passphrase-file FILE]\n\n"
		"Wrap the master key of an encrypted repository under a new passphrase.\n"
		"No data is rewritten. The current passphrase comes from PGBAKFS_PASSPHRASE\n"
		"or --passphrase-file; the new one from --new-passphrase-file (mode 0600)\n"
		"or PGBAKFS_NEW_PASSPHRASE.\n",
};

/*
 * The new passphrase: from new_file, else PGBAKFS_NEW_PASSPHRASE (it stands
 * in for PGBAKFS_PASSPHRASE). An exit code after one message.
 */
static int key_new_passphrase(const char *new_file, char **ret, size_t *ret_len)
{
	const char *env_new = getenv("PGBAKFS_NEW_PASSPHRASE");
	int r = -ENOKEY;

	if (new_file) {
		r = crypt_passphrase_load(new_file, ret, ret_len);
	} else if (env_new && *env_new) {
		*ret = xstrdup(env_new);
		*ret_len = strlen(*ret);
		r = 0;
	}
	if (r == -ENOKEY)
		return cli_usage("key", "no new passphrase: pass --new-passphrase-file FILE or set "
				 "PGBAKFS_NEW_PASSPHRASE");
	if (r == -EPERM) {
		cli_error("passphrase file \"%s\" must be a regular file readable only by its owner", new_file);
		return EXIT_FAIL;
	}
	if (r < 0) {
		cli_error("could not read the new passphrase: %s", strerror(-r));
		return EXIT_FAIL;
	}
	return EXIT_OK;
}

/* Wrap the master key of repo (an encrypted one) under next; an exit code. */
static int key_change(Repo *repo, const char *next, size_t next_len)
{
	char *old = NULL;
	size_t old_len = 0;
	int r;

	if (!repo_is_encrypted(repo)) {
		cli_error("repository \"%s\" is not encrypted", repo_path(repo));
		return EXIT_FAIL;
	}
	r = crypt_passphrase_load(cli_passphrase_file(), &old, &old_len);
	if (r == 0)
		r = repo_key_change(repo, old, old_len, next, next_len);
	if (old)
		crypt_passphrase_free(old, old_len);
	if (r < 0) {
		cli_error("could not change the key of \"%s\": %s", repo_path(repo),
			  r == -EKEYREJECTED ? "wrong passphrase" : strerror(-r));
		return EXIT_FAIL;
	}
	printf("the master key of \"%s\" is now wrapped by the new passphrase\n", repo_path(repo));
	return EXIT_OK;
}

int cmd_key(int argc, char **argv)
{
	const char *new_file = NULL;
	char *next = NULL;
	size_t next_len = 0;
	Repo *repo = NULL;
	CliArgs a;
	int rc = cli_parse(&key_command, argc, argv, &a, &new_file);

	if (rc != CLI_CONTINUE)
		return rc;
	if (a.n_args < 1 || strcmp(a.args[0], "change") != 0)
		return cli_usage("key", "expected \"key change\"");
	if (a.n_args != 1)
		return cli_usage("key", "unexpected argument \"%s\"", a.args[1]);
	/* the new passphrase before anything is opened */
	rc = key_new_passphrase(new_file, &next, &next_len);
	if (rc != EXIT_OK)
		return rc;
	/* as the writer: no other change meanwhile; then wrap the key again */
	rc = cli_open_repo_writer(a.repo, &repo);
	if (rc == EXIT_OK)
		rc = key_change(repo, next, next_len);
	crypt_passphrase_free(next, next_len);
	if (repo) /* the catalog did not change: nothing to publish */
		repo_write_end(repo, false);
	return cli_close_repo(repo, rc);
}

/* ---- repair --rebuild-catalog ---- */

static int repair_option(int c, char *arg _unused_, void *opts)
{
	if (c == OPT_REBUILD_CATALOG)
		*(bool *)opts = true;
	return EXIT_OK;
}

static const struct option repair_options[] = {
	{"rebuild-catalog", no_argument, NULL, OPT_REBUILD_CATALOG}, {0}};

static const CliCommand repair_command = {
	.name = "repair",
	.common = CLI_REPO,
	.options = repair_options,
	.option = repair_option,
	.help = "Usage: pgbakfs repair --rebuild-catalog [--repo R]\n\n"
		"Rebuild the catalog from the repository's objects alone: every pack\n"
		"lists its chunks, every snapshot is also stored as a manifest. The old\n"
		"catalog of a directory repository is kept as catalog.db.old; an S3 or\n"
		"encrypted repository gets the rebuilt catalog as its next generation.\n"
		"The retention policy is not in any object: save it again with expire.\n\n"
		"Nothing else may have a directory repository open meanwhile (backups,\n"
		"mounts, wal-push): repair refuses while anything does. A manifest whose\n"
		"files do not match its tree digest is skipped; a snapshot whose chunks\n"
		"no pack holds is kept as \"failed\". Both make repair exit 1.\n",
};

/* repo_rebuild_catalog's result r: what was rebuilt and skipped, or why not; an exit code. */
static int repair_report(const char *url, int r, const RepairStats *st)
{
	if (r == -ENOTDIR || r == -ENOENT)
		cli_error("\"%s\" is not a pgbakfs repository (no config object)", url);
	else if (r == -EKEYREJECTED)
		cli_error("wrong passphrase for repository \"%s\"", url);
	else if (r == -ENOKEY)
		cli_error("repository \"%s\" is encrypted and no passphrase was given", url);
	else if (r == -EBUSY)
		cli_error("repository \"%s\" is in use: stop its backups, mounts, wal-push and other "
			  "pgbakfs commands, then repair again", url);
	else if (r < 0)
		cli_error("could not rebuild the catalog of \"%s\": %s", url, strerror(-r));
	if (r < 0)
		return EXIT_FAIL;
	printf("repair: rebuilt the catalog of \"%s\": %llu pack(s), %llu chunk(s), "
	       "%llu snapshot(s)\n", url, (unsigned long long)st->packs,
	       (unsigned long long)st->chunks, (unsigned long long)st->snapshots);
	if (st->bad_packs || st->bad_manifests || st->incomplete) {
		cli_error("%llu damaged pack(s) and %llu damaged manifest(s) were skipped, "
			  "%llu snapshot(s) lack chunks and are marked failed; the warnings "
			  "above name them",
			  (unsigned long long)st->bad_packs, (unsigned long long)st->bad_manifests,
			  (unsigned long long)st->incomplete);
		return EXIT_FAIL;
	}
	return EXIT_OK;
}

int cmd_repair(int argc, char **argv)
{
	bool rebuild = false;
	RepairStats st = {0};
	CliLocation cl;
	CliArgs a;
	int rc = cli_parse(&repair_command, argc, argv, &a, &rebuild);

	if (rc != CLI_CONTINUE)
		return rc;
	if (!rebuild)
		return cli_usage("repair", "nothing to do: give --rebuild-catalog");
	/* the repository's objects, without its catalog */
	rc = cli_location_resolve(a.repo, &cl);
	/* every pack's chunk list and every snapshot manifest, into a new catalog */
	if (rc == EXIT_OK)
		rc = repair_report(cl.loc.url, repo_rebuild_catalog(&cl.loc, &st), &st);
	cli_location_clear(&cl);
	return rc;
}
