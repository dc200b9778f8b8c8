/* pgbakfs restore ID TARGET. */
#include "common/progress.h"
#include "common/util.h"
#include "store/restore.h"
#include "tools/cli.h"
#include "tools/config.h"
#include "tools/recovery.h"

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

enum { OPT_REPO = 0x100, OPT_INSTANCE, OPT_PROGRESS, OPT_NO_PROGRESS, OPT_TS_MAP, OPT_DELTA };

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

int cmd_restore(int argc, char **argv)
{
	static const struct option opts[] = {
		{"repo", required_argument, NULL, OPT_REPO},
		{"instance", required_argument, NULL, OPT_INSTANCE},
		{"jobs", required_argument, NULL, 'j'},
		{"progress", no_argument, NULL, OPT_PROGRESS},
		{"no-progress", no_argument, NULL, OPT_NO_PROGRESS},
		{"tablespace-map", required_argument, NULL, OPT_TS_MAP},
		{"delta", no_argument, NULL, OPT_DELTA},
		RECOVERY_OPTIONS,
		{"help", no_argument, NULL, 'h'},
		{0}};
	const char *repo_opt = NULL, *instance = NULL, *id, *target;
	bool show_progress = cli_stderr_is_tty();
	RestoreOptions o = {0};
	RestoreMapping maps[MAX_MAPS];
	char *eq;
	RestoreResult res;
	RecoveryTarget rt = {0};
	SnapshotInfo s = {0};
	Progress *progress = NULL;
	Repo *repo = NULL;
	int c, r, rc;
	int64_t t0 = mono_ns();

	while ((c = getopt_long(argc, argv, "hj:", opts, NULL)) != -1) {
		if (recovery_option("restore", c, optarg, &rt, &rc)) {
			if (rc != EXIT_OK)
				return rc;
			continue;
		}
		switch (c) {
		case OPT_DELTA: o.delta = true; break;
		case OPT_REPO: repo_opt = optarg; break;
		case OPT_INSTANCE: instance = optarg; break;
		case 'j':
			if ((rc = cli_parse_jobs("restore", optarg, &o.jobs)) != EXIT_OK)
				return rc;
			break;
		case OPT_PROGRESS: show_progress = true; break;
		case OPT_NO_PROGRESS: show_progress = false; break;
		case OPT_TS_MAP:
			eq = strchr(optarg, '=');
			if (!eq || eq == optarg || !eq[1] || optarg[0] != '/' || eq[1] != '/' ||
			    o.n_maps == MAX_MAPS)
				return cli_usage("restore", "invalid --tablespace-map \"%s\" (OLD=NEW, absolute paths)", optarg);
			*eq = '\0';
			strip_slashes(optarg);
			strip_slashes(eq + 1);
			maps[o.n_maps++] = (RestoreMapping){.from = optarg, .to = eq + 1};
			break;
		case 'h':
			printf("Usage: pgbakfs restore ID TARGET [--repo PATH] [-j N] [--[no-]progress]\n"
			       "                       [--delta] [--tablespace-map OLD=NEW]...\n"
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
			       "                    to a directory is kept (the WAL goes into its target)\n"
			       RECOVERY_USAGE);
			return EXIT_OK;
		default: return cli_usage("restore", "invalid option");
		}
	}
	if (argc - optind != 2)
		return cli_usage("restore", "expected ID and TARGET");
	id = argv[optind];
	target = argv[optind + 1];
	if (!o.jobs)
		o.jobs = cli_config_jobs();
	if ((rc = recovery_check("restore", &rt)) != EXIT_OK)
		return rc;
	long pid = running_postmaster(target);
	if (pid) {
		cli_error("PostgreSQL is running in \"%s\" (postmaster.pid: pid %ld)", target, pid);
		cli_hint("stop it first; a restore never writes under a running server");
		return EXIT_FAIL;
	}
	r = o.delta ? 1 : dir_is_empty(target);
	if (r == 0) {
		cli_error("target directory \"%s\" is not empty", target);
		cli_hint("restore into a new or empty directory");
		return EXIT_FAIL;
	}
	if (r < 0) {
		cli_error("could not open target directory \"%s\": %s", target, strerror(-r));
		return EXIT_FAIL;
	}
	rc = cli_open_repo(repo_opt, &repo);
	if (rc == EXIT_OK)
		rc = cli_find_snapshot(repo, id, instance, &s);
	if (rc == EXIT_OK)
		rc = check_maps(repo, &s, maps, o.n_maps);
	if (rc != EXIT_OK)
		goto out;
	progress_new("restore", s.logical_bytes, show_progress, &progress);
	o.progress = progress;
	o.maps = maps;
	r = restore_snapshot(repo, &s, target, &o, &res);
	progress = progress_free(progress);
	if (r == -EUCLEAN) {
		cli_error("snapshot \"%s\" is damaged in the catalog: its file list fails its "
			  "integrity check (tree digest, names); nothing was restored", s.name);
		cli_hint("\"pgbakfs repair --rebuild-catalog\" rebuilds the catalog from the snapshot "
			 "manifests");
		rc = EXIT_FAIL;
	} else if (r == -ENOENT && !res.failed_path[0]) {
		cli_error("snapshot \"%s\" was deleted before the restore could hold it", s.name);
		rc = EXIT_FAIL;
	} else if (r == -EBADMSG || r == -ENOENT) {
		cli_error("snapshot \"%s\" is damaged: file \"%s\" at offset %llu cannot be read "
			  "correctly; restore stopped", s.name, res.failed_path,
			  (unsigned long long)res.failed_offset);
		cli_hint("\"pgbakfs check --read-data\" lists all damage; \"%s\" is incomplete", target);
		rc = EXIT_FAIL;
	} else if (r == -ENOTEMPTY && res.failed_path[0]) {
		cli_error("directory \"%s\" is not empty", res.failed_path);
		if (strlen(res.failed_path) > 6 &&
		    !strcmp(res.failed_path + strlen(res.failed_path) - 6, ".extra"))
			cli_hint("extra directories are restored there; empty it or pick another TARGET");
		else
			cli_hint("restore the tablespace elsewhere with --tablespace-map %s=NEW_DIR",
				 res.failed_path);
		rc = EXIT_FAIL;
	} else if (r < 0) {
		if (res.failed_path[0])
			cli_error("could not restore \"%s\": %s", res.failed_path, strerror(-r));
		else
			cli_error("restore of snapshot \"%s\" failed: %s", s.name, strerror(-r));
		rc = EXIT_FAIL;
	} else {
		char b[32], w[32], h[32];
		double secs = (double)(mono_ns() - t0) / 1e9;
		printf("restored snapshot \"%s\" into \"%s\": %llu files, %s, %.1f s (%.1f MB/s)\n",
		       s.name, target, (unsigned long long)res.n_files,
		       format_bytes(res.bytes, b, sizeof(b)), secs,
		       secs > 0 ? (double)res.bytes / secs / 1e6 : 0.0);
		if (o.delta)
			printf("delta: %s rewritten, %llu file(s) unchanged, %llu entries removed%s%s%s\n",
			       format_bytes(res.bytes_written, w, sizeof(w)),
			       (unsigned long long)res.n_unchanged, (unsigned long long)res.n_removed,
			       res.bytes_sha256 ? " (" : "",
			       res.bytes_sha256 ? format_bytes(res.bytes_sha256, h, sizeof(h)) : "",
			       res.bytes_sha256 ? " checked by SHA-256: chunks stored without a fast hash)"
						: "");
		rc = write_recovery(&rt, repo, target);
	}
out:
	snapshot_info_clear(&s);
	repo_free(repo);
	return rc;
}
