/* pgbakfs restore ID TARGET. */
#include "common/progress.h"
#include "common/util.h"
#include "ingest/targetwal.h"
#include "store/restore.h"
#include "tools/cli.h"
#include "tools/opts.h"
#include "tools/recovery.h"

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

enum { OPT_TS_MAP = 0x100, OPT_DELTA, OPT_NO_WAL_SUMMARIES };

/* A live postmaster.pid in dir: the pid of the PostgreSQL running there, else 0. */
static long running_postmaster(const char *dir)
{
	char path[PATH_MAX];
	long pid = 0;
	snprintf(path, sizeof(path), "%s/postmaster.pid", dir);
	FILE *f = fopen(path, "re");
	if (!f)
		return 0;
	if (fscanf(f, "%ld", &pid) != 1)
		pid = 0;
	fclose(f);
	/* EPERM: alive, owned by another user */
	if (pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM))
		return pid;
	return 0;
}

/* After a successful restore: the recovery settings for a target, if any. */
static int write_recovery(const RecoveryTarget *t, Repo *repo, const char *target)
{
	_cleanup_free_ char *conf = NULL;
	char abs_repo[PATH_MAX];
	int r;
	if (!t->kind)
		return EXIT_OK;
	if (!realpath(repo_path(repo), abs_repo))
		snprintf(abs_repo, sizeof(abs_repo), "%s", repo_path(repo));
	r = recovery_conf(t, abs_repo, NULL, &conf);
	if (r == 0)
		r = recovery_write(target, conf);
	if (r < 0) {
		cli_error("could not write the recovery settings into \"%s\": %s", target,
			  strerror(-r));
		return EXIT_FAIL;
	}
	printf("recovery to %s %s configured: recovery.signal and postgresql.auto.conf "
	       "(restore_command = pgbakfs wal-fetch)\n", t->kind, t->value);
	/* secrets never go into postgresql.auto.conf: say where the server's wal-fetch finds them */
	if (repo_is_encrypted(repo) && !cli_passphrase_file())
		cli_note("the server's restore_command needs the passphrase: PGBAKFS_PASSPHRASE in "
			 "the server's environment, or restore with --passphrase-file FILE (readable "
			 "by the server's user)");
	if (!repo_is_local_backend(repo) && !cli_config_file())
		cli_note("the server's restore_command reads the S3 settings from its environment or "
			 "its user's config file; --config FILE names one it can read");
	return EXIT_OK;
}
#define MAX_MAPS 64

typedef struct MapCheck {
	const char *from;
	bool found;
	char *list; /* the snapshot's linked directories, for the hint */
} MapCheck;

static int map_check_link(const char *path _unused_, const char *target, void *userdata)
{
	MapCheck *mc = userdata;
	if (!strcmp(target, mc->from))
		mc->found = true;
	char *l = mc->list ? xasprintf("%s, %s", mc->list, target) : xstrdup(target);
	free(mc->list);
	mc->list = l;
	return 0;
}

/* Every --tablespace-map OLD must be a tablespace (linked directory) of the snapshot. */
static int check_maps(Repo *repo, const SnapshotInfo *s, const RestoreMapping *maps, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		MapCheck mc = {.from = maps[i].from};
		int r = catalog_link_foreach(repo_catalog(repo), s->rowid, map_check_link, &mc);
		if (r < 0) {
			free(mc.list);
			cli_error("could not read the catalog of \"%s\": %s", repo_path(repo),
				  strerror(-r));
			return EXIT_FAIL;
		}
		if (!mc.found) {
			cli_error("--tablespace-map \"%s\": snapshot \"%s\" has no tablespace there",
				  maps[i].from, s->name);
			if (mc.list)
				cli_hint("its tablespaces are at: %s", mc.list);
			else
				cli_hint("snapshot \"%s\" has no tablespaces", s->name);
			free(mc.list);
			return EXIT_USAGE;
		}
		free(mc.list);
	}
	return EXIT_OK;
}

/* A path without its trailing slashes ("/" stays). */
static void strip_slashes(char *p)
{
	size_t n = strlen(p);
	while (n > 1 && p[n - 1] == '/')
		p[--n] = 0;
}

/* What a delta asks PostgreSQL's WAL about its target (ingest/targetwal.h). */
typedef struct WalAsk {
	TargetWal *tw;
	bool off; /* --no-wal-summaries */
} WalAsk;

static int wal_ask_open(void *ud, const char *target, uint64_t lsn, int64_t written_ns, char *why,
			size_t why_len)
{
	WalAsk *a = ud;
	if (a->off) {
		snprintf(why, why_len, "not asked (--no-wal-summaries)");
		return 1;
	}
	int r = targetwal_open(target, lsn, written_ns, &a->tw, why, why_len);
	return r < 0 ? r : a->tw ? 0 : 1;
}

static int wal_ask_file(void *ud, const char *path, uint64_t nblocks, uint8_t *changed)
{
	return targetwal_file(((WalAsk *)ud)->tw, path, nblocks, changed);
}

static uint64_t wal_ask_lsn(void *ud _unused_, const char *target)
{
	return targetwal_since(target);
}

typedef struct RestoreArgs {
	CliArgs a;
	RestoreOptions o;
	WalAsk ask;
	RestoreWal wal;
	RestoreMapping maps[MAX_MAPS];
	int64_t t0; /* when the command started */
} RestoreArgs;

static int restore_option(int c, char *arg, void *opts)
{
	RestoreArgs *x = opts;
	char *eq;

	switch (c) {
	case OPT_DELTA: x->o.delta = true; break;
	case OPT_NO_WAL_SUMMARIES: x->ask.off = true; break;
	case OPT_TS_MAP:
		eq = strchr(arg, '=');
		if (!eq || eq == arg || !eq[1] || arg[0] != '/' || eq[1] != '/' || x->o.n_maps == MAX_MAPS)
			return cli_usage("restore", "invalid --tablespace-map \"%s\" (OLD=NEW, absolute paths)", arg);
		*eq = '\0';
		strip_slashes(arg);
		strip_slashes(eq + 1);
		x->maps[x->o.n_maps++] = (RestoreMapping){.from = arg, .to = eq + 1};
		break;
	}
	return EXIT_OK;
}

static const struct option restore_options[] = {
	{"tablespace-map", required_argument, NULL, OPT_TS_MAP},
	{"delta", no_argument, NULL, OPT_DELTA},
	{"no-wal-summaries", no_argument, NULL, OPT_NO_WAL_SUMMARIES},
	{0}};

static const CliCommand restore_command = {
	.name = "restore",
	.common = CLI_REPO | CLI_INSTANCE | CLI_JOBS | CLI_PROGRESS | CLI_RECOVERY,
	.options = restore_options,
	.option = restore_option,
	.n_args = 2,
	.missing = "expected ID and TARGET",
	.help = "Usage: pgbakfs restore ID TARGET [--repo PATH] [-j N] [--[no-]progress]\n"
		"                       [--delta [--no-wal-summaries]] [--tablespace-map OLD=NEW]...\n"
		"                       [--target-time T | --target-lsn L | --target-xid X |\n"
		"                        --target-name N] [--target-action ACTION]\n\n"
		"Restore snapshot ID (or \"latest\") into TARGET, a missing or empty\n"
		"directory. Every chunk is verified before it is written. Tablespaces go\n"
		"back to their original directories, or to NEW for --tablespace-map\n"
		"OLD=NEW (OLD: a tablespace location of the snapshot); those must be\n"
		"missing or empty. global/pg_control is written last: an interrupted\n"
		"restore leaves none, so PostgreSQL refuses to start on it.\n\n"
		"  --delta           TARGET may hold an older or diverged copy (a stopped\n"
		"                    primary): only chunks that differ are written, and what\n"
		"                    the snapshot does not have is removed; a pg_wal symlink\n"
		"                    to a directory is kept (the WAL goes into its target);\n"
		"                    files no one changed since a restore into TARGET (same\n"
		"                    inode, size, mtime and ctime, recorded under the cache\n"
		"                    directory) are not read again; of those PostgreSQL 17+\n"
		"                    wrote since (summarize_wal = on, data checksums or\n"
		"                    wal_log_hints, shut down cleanly) only the chunks whose\n"
		"                    blocks its WAL summaries name are read\n"
		"  --no-wal-summaries  with --delta: read every file written since the last\n"
		"                    restore, whatever PostgreSQL's WAL says (a file changed\n"
		"                    outside PostgreSQL)\n"
		RECOVERY_USAGE,
};

/* TARGET: no server running there, and empty unless --delta. An exit code. */
static int restore_check_target(const char *target, bool delta)
{
	long pid = running_postmaster(target);
	int r;

	if (pid) {
		cli_error("PostgreSQL is running in \"%s\" (postmaster.pid: pid %ld)", target, pid);
		cli_hint("stop it first; a restore never writes under a running server");
		return EXIT_FAIL;
	}
	r = delta ? 1 : dir_is_empty(target);
	if (r == 0) {
		cli_error("target directory \"%s\" is not empty", target);
		cli_hint("restore into a new or empty directory");
		return EXIT_FAIL;
	}
	if (r < 0) {
		cli_error("could not open target directory \"%s\": %s", target, strerror(-r));
		return EXIT_FAIL;
	}
	return EXIT_OK;
}

/* A failed restore_snapshot (r < 0): one error line and what to do. */
static void restore_error(int r, const SnapshotInfo *s, const RestoreResult *res, const char *target)
{
	const char *failed = res->failed_path;
	size_t n = strlen(failed);

	if (r == -EUCLEAN) {
		cli_error("snapshot \"%s\" is damaged in the catalog: its file list fails its "
			  "integrity check (tree digest, names); nothing was restored", s->name);
		cli_hint("\"pgbakfs repair --rebuild-catalog\" rebuilds the catalog from the snapshot "
			 "manifests");
	} else if (r == -ENOENT && !failed[0]) {
		cli_error("snapshot \"%s\" was deleted before the restore could hold it", s->name);
	} else if (r == -EBADMSG || r == -ENOENT) {
		cli_error("snapshot \"%s\" is damaged: file \"%s\" at offset %llu cannot be read "
			  "correctly; restore stopped", s->name, failed,
			  (unsigned long long)res->failed_offset);
		cli_hint("\"pgbakfs check --read-data\" lists all damage; \"%s\" is incomplete", target);
	} else if (r == -ENOTEMPTY && failed[0]) {
		cli_error("directory \"%s\" is not empty", failed);
		if (n > 6 && !strcmp(failed + n - 6, ".extra"))
			cli_hint("extra directories are restored there; empty it or pick another TARGET");
		else
			cli_hint("restore the tablespace elsewhere with --tablespace-map %s=NEW_DIR", failed);
	} else if (failed[0]) {
		cli_error("could not restore \"%s\": %s", failed, strerror(-r));
	} else {
		cli_error("restore of snapshot \"%s\" failed: %s", s->name, strerror(-r));
	}
}

/* A restore done: files, bytes, speed; with --delta what was rewritten, kept, removed. */
static void restore_print(const SnapshotInfo *s, const RestoreResult *res, const char *target,
			  bool delta, int64_t t0)
{
	char b[32], w[32], h[32], k[32];
	double secs = (double)(mono_ns() - t0) / 1e9;

	printf("restored snapshot \"%s\" into \"%s\": %llu files, %s, %.1f s (%.1f MB/s)\n",
	       s->name, target, (unsigned long long)res->n_files,
	       format_bytes(res->bytes, b, sizeof(b)), secs,
	       secs > 0 ? (double)res->bytes / secs / 1e6 : 0.0);
	if (delta)
		printf("delta: %s rewritten, %llu file(s) unchanged, %llu entries removed, %s not read "
		       "(%llu file(s) whole: unchanged since the last restore's record)%s%s%s\n",
		       format_bytes(res->bytes_written, w, sizeof(w)),
		       (unsigned long long)res->n_unchanged, (unsigned long long)res->n_removed,
		       format_bytes(res->bytes_known, k, sizeof(k)), (unsigned long long)res->n_known,
		       res->bytes_sha256 ? " (" : "",
		       res->bytes_sha256 ? format_bytes(res->bytes_sha256, h, sizeof(h)) : "",
		       res->bytes_sha256 ? " checked by SHA-256: chunks stored without a fast hash)"
					 : "");
	if (delta && res->n_wal)
		printf("delta: %llu file(s) PostgreSQL wrote since the last restore read only where "
		       "its WAL summaries say\n", (unsigned long long)res->n_wal);
	if (delta && res->wal_note[0])
		printf("delta: PostgreSQL's WAL summaries not used: %s\n", res->wal_note);
}

/* Every chunk read, verified and written into target, with progress: an exit code. */
static int restore_run(Repo *repo, const SnapshotInfo *s, RestoreArgs *x, const char *target)
{
	Progress *progress = NULL;
	RestoreResult res;
	int r;

	progress_new("restore", s->logical_bytes, x->a.progress, &progress);
	x->o.progress = progress;
	x->o.maps = x->maps;
	x->o.jobs = x->a.jobs;
	x->wal = (RestoreWal){.open = wal_ask_open, .file = wal_ask_file, .record_lsn = wal_ask_lsn,
			      .ud = &x->ask};
	x->o.wal = &x->wal;
	r = restore_snapshot(repo, s, target, &x->o, &res);
	x->ask.tw = targetwal_free(x->ask.tw);
	progress_free(progress);
	if (r < 0) {
		restore_error(r, s, &res, target);
		return EXIT_FAIL;
	}
	restore_print(s, &res, target, x->o.delta, x->t0);
	return EXIT_OK;
}

int cmd_restore(int argc, char **argv)
{
	RestoreArgs x = {.t0 = mono_ns()};
	SnapshotInfo s = {0};
	Repo *repo = NULL;
	CliLocation cl = {0};
	char *record_dir = NULL;
	int rc = cli_parse(&restore_command, argc, argv, &x.a, &x);

	if (rc != CLI_CONTINUE)
		return rc;
	if (x.ask.off && !x.o.delta)
		return cli_usage("restore", "--no-wal-summaries is an option of --delta");
	const char *id = x.a.args[0], *target = x.a.args[1];
	/* a target without a running server, empty unless --delta */
	if ((rc = recovery_check("restore", &x.a.target)) != EXIT_OK ||
	    (rc = restore_check_target(target, x.o.delta)) != EXIT_OK)
		return rc;
	/* the snapshot, and the tablespaces --tablespace-map moves are its own */
	rc = cli_location_resolve(x.a.repo, &cl);
	if (rc == EXIT_OK)
		rc = cli_open_location(&cl, &repo);
	/* beside the caches: what this restore leaves, for the next --delta into TARGET */
	if (rc == EXIT_OK)
		x.o.record_dir = record_dir = xasprintf("%s/restored", cl.cache_dir);
	/* tests: save it this often (ms) during the restore, not every 60 s */
	const char *every = getenv("PGBAKFS_RECORD_EVERY_MS");
	x.o.record_every_ns = every ? (int64_t)strtoull(every, NULL, 10) * 1000000 : 0;
	if (rc == EXIT_OK)
		rc = cli_find_snapshot(repo, id, x.a.instance, &s);
	if (rc == EXIT_OK)
		rc = check_maps(repo, &s, x.maps, x.o.n_maps);
	/* its files into TARGET; then the recovery settings for a target given */
	if (rc == EXIT_OK)
		rc = restore_run(repo, &s, &x, target);
	if (rc == EXIT_OK)
		rc = write_recovery(&x.a.target, repo, target);
	snapshot_info_clear(&s);
	repo_free(repo);
	cli_location_clear(&cl);
	free(record_dir);
	return rc;
}
