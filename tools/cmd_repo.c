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

#include <stdio.h>
#include <string.h>

enum { OPT_REPO = 0x100, OPT_CHUNK_SIZE, OPT_PACK_SIZE, OPT_LEVEL, OPT_ENCRYPT, OPT_READ_DATA, OPT_JSON,
       OPT_PROGRESS, OPT_NO_PROGRESS, OPT_INSTANCE, OPT_ARCHIVE, OPT_ARCHIVE_TIMEOUT, OPT_REPACK };

int cmd_init(int argc, char **argv)
{
	static const struct option opts[] = {
		{"repo", required_argument, NULL, OPT_REPO},
		{"chunk-size", required_argument, NULL, OPT_CHUNK_SIZE},
		{"pack-size", required_argument, NULL, OPT_PACK_SIZE},
		{"compress-level", required_argument, NULL, OPT_LEVEL},
		{"encrypt", no_argument, NULL, OPT_ENCRYPT},
		{"help", no_argument, NULL, 'h'},
		{0}};
	const char *repo_opt = NULL, *loc;
	RepoInitOptions o = {0};
	uint64_t v;
	int c, r;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_REPO: repo_opt = optarg; break;
		case OPT_CHUNK_SIZE:
			if (parse_size(optarg, &v) < 0 || !chunk_size_valid(v))
				return cli_usage("init", "invalid chunk size \"%s\": a power of two from 8K to 8M", optarg);
			o.chunk_size = v;
			break;
		case OPT_PACK_SIZE:
			if (parse_size(optarg, &v) < 0 || v < (1 << 20) || v > (1ULL << 30))
				return cli_usage("init", "invalid pack size \"%s\": 1M to 1G", optarg);
			o.pack_size = v;
			break;
		case OPT_LEVEL:
			o.compress_level = atoi(optarg);
			if (o.compress_level < 1 || o.compress_level > 19)
				return cli_usage("init", "invalid compression level \"%s\": 1 to 19", optarg);
			break;
		case OPT_ENCRYPT: o.encrypt = true; break;
		case 'h':
			printf("Usage: pgbakfs init --repo PATH|s3://BUCKET/PREFIX [--chunk-size 64K]\n"
			       "                    [--pack-size 32M] [--compress-level 3] [--encrypt]\n\n"
			       "Create an empty repository in PATH (missing or empty directory) or under an\n"
			       "empty bucket prefix. The chunk size (power of two, 8K..8M) is fixed for the\n"
			       "repository's life.\n\n"
			       "--encrypt: chunks, catalog, manifests and WAL are sealed with AES-256-GCM under\n"
			       "a random master key, wrapped by a key derived (scrypt) from the passphrase in\n"
			       "PGBAKFS_PASSPHRASE or --passphrase-file FILE (mode 0600). Chunk ids are keyed\n"
			       "HMAC-SHA-256. Lose the passphrase and the data is gone.\n");
			return EXIT_OK;
		default: return cli_usage("init", "invalid option");
		}
	}
	if (optind != argc)
		return cli_usage("init", "unexpected argument \"%s\"", argv[optind]);
	CliLocation cl;
	r = cli_location_resolve(repo_opt, &cl);
	if (r != EXIT_OK) {
		cli_location_clear(&cl);
		return r;
	}
	loc = cl.loc.url;
	bool s3 = cl.loc.s3 != NULL;
	r = repo_init_at(&cl.loc, &o);
	cli_location_clear(&cl);
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
		cli_error("could not create repository \"%s\": %s", loc, cli_store_strerror(r, s3));
		return EXIT_FAIL;
	}
	printf("created %srepository \"%s\" (chunk size %llu KiB)\n", o.encrypt ? "encrypted " : "", loc,
	       (unsigned long long)((o.chunk_size ? o.chunk_size : PGBAKFS_DEFAULT_CHUNK_SIZE) / 1024));
	return EXIT_OK;
}

int cmd_gc(int argc, char **argv)
{
	static const struct option opts[] = {
		{"repo", required_argument, NULL, OPT_REPO},
		{"repack", optional_argument, NULL, OPT_REPACK},
		{"help", no_argument, NULL, 'h'},
		{0}};
	const char *repo_opt = NULL;
	GcOptions o = {0};
	Repo *repo = NULL;
	GcResult g;
	char b[32], b2[32];
	char *end;
	long pct;
	int c, r, rc;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_REPO: repo_opt = optarg; break;
		case OPT_REPACK:
			o.repack_pct = GC_REPACK_DEFAULT_PCT;
			if (!optarg)
				break;
			errno = 0;
			pct = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || pct < 1 || pct > 99)
				return cli_usage("gc", "invalid --repack \"%s\": a percentage from 1 to 99",
						 optarg);
			o.repack_pct = (unsigned)pct;
			break;
		case 'h':
			printf("Usage: pgbakfs gc [--repack[=PCT]] [--repo PATH]\n\n"
			       "Remove chunks and packs that no snapshot uses, and the leftovers of\n"
			       "interrupted backups, then compact the catalog when much of it is free.\n"
			       "Safe while backups, restores and mounts run.\n\n"
			       "--repack[=PCT]: also rewrite every pack whose live chunks fill less than\n"
			       "PCT%% of it (default %d): its live chunks are checked and copied into new\n"
			       "packs, and the old pack is deleted once no restore, mount or backup that\n"
			       "started before the copy runs (else by a later gc). A pack holding a\n"
			       "damaged chunk is reported and kept as it is.\n",
			       GC_REPACK_DEFAULT_PCT);
			return EXIT_OK;
		default: return cli_usage("gc", "invalid option");
		}
	}
	if (optind != argc)
		return cli_usage("gc", "unexpected argument \"%s\"", argv[optind]);
	rc = cli_open_repo_writer(repo_opt, &repo);
	if (rc != EXIT_OK)
		return rc;
	r = repo_gc_opts(repo, &o, &g);
	if (r == -EBUSY) {
		cli_error("another gc is running on repository \"%s\"", repo_path(repo));
		rc = EXIT_FAIL;
	} else if (r < 0) {
		cli_error("gc failed on repository \"%s\": %s", repo_path(repo), strerror(-r));
		rc = EXIT_FAIL;
	} else {
		printf("gc: reclaimed %s: %llu pack(s) and %llu orphaned object(s) deleted, "
		       "%llu chunk(s) and %llu content list(s) dropped",
		       format_bytes(g.bytes_reclaimed, b, sizeof(b)),
		       (unsigned long long)g.packs_deleted, (unsigned long long)g.orphans_deleted,
		       (unsigned long long)g.chunks_deleted, (unsigned long long)g.contents_deleted);
		if (g.sessions_reaped)
			printf(", %llu interrupted session(s) cleaned up",
			       (unsigned long long)g.sessions_reaped);
		if (g.snapshots_purged)
			printf(", %llu deleted snapshot(s) released by mounts purged",
			       (unsigned long long)g.snapshots_purged);
		if (g.catalog_bytes_freed)
			printf(", catalog compacted by %s",
			       format_bytes(g.catalog_bytes_freed, b, sizeof(b)));
		printf("\n");
		if (g.chunks_waiting)
			printf("gc: %llu unused chunk(s) kept for a running backup; the next gc "
			       "removes them\n", (unsigned long long)g.chunks_waiting);
		if (o.repack_pct) {
			uint64_t back = g.repacked_bytes_deleted > g.bytes_copied
						? g.repacked_bytes_deleted - g.bytes_copied : 0;
			printf("repack: %llu pack(s) repacked into %llu, %s copied, %s given back",
			       (unsigned long long)g.packs_repacked, (unsigned long long)g.packs_written,
			       format_bytes(g.bytes_copied, b, sizeof(b)),
			       format_bytes(back, b2, sizeof(b2)));
			if (g.packs_retired_waiting)
				printf(", %llu old pack(s) kept until the sessions that may read them end "
				       "(the next gc deletes them)", (unsigned long long)g.packs_retired_waiting);
			printf("\n");
		}
		if (g.packs_damaged) {
			cli_error("%llu pack(s) with %llu damaged chunk(s) were not repacked; run "
				  "\"pgbakfs check --read-data\"", (unsigned long long)g.packs_damaged,
				  (unsigned long long)g.chunks_damaged);
			rc = EXIT_FAIL;
		}
	}
	return cli_close_repo(repo, rc);
}

static void print_problem(CheckSeverity sev, const char *msg, void *userdata _unused_)
{
	if (sev == CHECK_ERROR)
		cli_error("%s", msg);
	else
		cli_note("%s", msg);
}

/* check --archive: one line, pass or fail; returns the exit code. */
static int check_archive(const char *repo_opt, const char *conninfo, int timeout_s)
{
	ArchiveCheckResult res;
	PgError err;
	Repo *repo = NULL;
	int r, rc = cli_open_repo(repo_opt, &repo);

	if (rc != EXIT_OK)
		return rc;
	/* switch WAL on the server, wait for the segment in the repository */
	r = archive_check(repo, conninfo, timeout_s, &res, &err);
	rc = EXIT_FAIL;
	if (r < 0)
		cli_error("%s", err.msg);
	else if (res.status == ARCHIVE_CHECK_MODE_OFF) {
		cli_error("archive_mode is off on the server: no WAL is archived");
		cli_hint("set archive_mode = on and archive_command = 'pgbakfs wal-push %%p --repo %s', "
			 "then restart the server", repo_path(repo));
	} else if (res.status == ARCHIVE_CHECK_NO_COMMAND) {
		cli_error("archive_command is empty on the server: no WAL is archived");
		cli_hint("set archive_command = 'pgbakfs wal-push %%p --repo %s', then reload the server",
			 repo_path(repo));
	} else if (res.status == ARCHIVE_CHECK_TIMEOUT && res.last_archived_wal[0] &&
		   strcmp(res.last_archived_wal, res.segment) >= 0)
		cli_error("WAL segment %s was not archived within %d s: the server archived it, but "
			  "not into repository \"%s\"; check where archive_command pushes",
			  res.segment, timeout_s, repo_path(repo));
	else if (res.status == ARCHIVE_CHECK_TIMEOUT && res.last_failed_wal[0])
		cli_error("WAL segment %s was not archived within %d s: archive_command last failed "
			  "on %s at %s; see the server log", res.segment, timeout_s,
			  res.last_failed_wal, res.last_failed_time);
	else if (res.status == ARCHIVE_CHECK_TIMEOUT)
		cli_error("WAL segment %s was not archived within %d s: archive_command has not "
			  "failed yet, the archiver may be behind; see the server log", res.segment,
			  timeout_s);
	else {
		printf("archive: WAL segment %s archived in %.1f s\n", res.segment, res.seconds);
		rc = EXIT_OK;
	}
	repo_free(repo);
	return rc;
}

int cmd_check(int argc, char **argv)
{
	static const struct option opts[] = {
		{"repo", required_argument, NULL, OPT_REPO},
		{"read-data", no_argument, NULL, OPT_READ_DATA},
		{"jobs", required_argument, NULL, 'j'},
		{"progress", no_argument, NULL, OPT_PROGRESS},
		{"no-progress", no_argument, NULL, OPT_NO_PROGRESS},
		{"archive", no_argument, NULL, OPT_ARCHIVE},
		{"dbname", required_argument, NULL, 'd'},
		{"archive-timeout", required_argument, NULL, OPT_ARCHIVE_TIMEOUT},
		{"instance", required_argument, NULL, OPT_INSTANCE},
		{"help", no_argument, NULL, 'h'},
		{0}};
	const char *repo_opt = NULL, *conninfo = NULL, *timeout_opt = NULL, *instance = NULL;
	bool archive = false;
	long timeout_s = 60;
	char *end;
	CheckOptions o = {0};
	CheckResult res;
	Repo *repo = NULL;
	Progress *progress = NULL;
	bool show_progress = cli_stderr_is_tty();
	int c, r, rc;

	while ((c = getopt_long(argc, argv, "hj:d:", opts, NULL)) != -1) {
		switch (c) {
		case OPT_REPO: repo_opt = optarg; break;
		case OPT_READ_DATA: o.read_data = true; break;
		case OPT_ARCHIVE: archive = true; break;
		case 'd': conninfo = optarg; break;
		case OPT_INSTANCE: instance = optarg; break;
		case OPT_ARCHIVE_TIMEOUT:
			timeout_opt = optarg;
			errno = 0;
			timeout_s = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || timeout_s < 1 || timeout_s > 86400)
				return cli_usage("check", "invalid archive timeout \"%s\": 1 to 86400 seconds",
						 optarg);
			break;
		case 'j':
			if ((rc = cli_parse_jobs("check", optarg, &o.jobs)) != EXIT_OK)
				return rc;
			break;
		case OPT_PROGRESS: show_progress = true; break;
		case OPT_NO_PROGRESS: show_progress = false; break;
		case 'h':
			printf("Usage: pgbakfs check [--repo PATH] [--read-data] [-j N] [--[no-]progress]\n"
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
			       "NAME, or the only one configured).\n");
			return EXIT_OK;
		default: return cli_usage("check", "invalid option");
		}
	}
	if (optind != argc)
		return cli_usage("check", "unexpected argument \"%s\"", argv[optind]);
	if (!archive && (conninfo || timeout_opt))
		return cli_usage("check", "%s needs --archive", conninfo ? "-d" : "--archive-timeout");
	if (archive && !conninfo) { /* the instance's, from the config file */
		const ConfigInstance *in;
		rc = cli_config_instance("check", instance, &in);
		if (rc != EXIT_OK)
			return rc;
		conninfo = in ? in->conninfo : NULL;
	}
	if (archive && !conninfo)
		return cli_usage("check", "--archive needs -d CONNINFO (or an instance with a conninfo in the config file)");
	if (instance && !archive)
		return cli_usage("check", "--instance needs --archive");
	if (!o.jobs)
		o.jobs = cli_config_jobs();
	if (archive && o.read_data)
		return cli_usage("check", "--archive and --read-data are separate checks");
	if (archive)
		return check_archive(repo_opt, conninfo, (int)timeout_s);
	rc = cli_open_repo(repo_opt, &repo);
	if (rc != EXIT_OK)
		return rc;
	if (o.read_data) {
		CatalogStats st = {0};
		catalog_stats(repo_catalog(repo), &st);
		progress_new("check", st.pack_bytes, show_progress, &progress);
		o.progress = progress;
	}
	r = repo_check(repo, &o, print_problem, NULL, &res);
	progress = progress_free(progress);
	if (r < 0) {
		cli_error("could not check repository \"%s\": %s", repo_path(repo), strerror(-r));
		rc = EXIT_FAIL;
	} else if (res.n_errors) {
		cli_error("repository \"%s\" has %llu problem(s)", repo_path(repo),
			  (unsigned long long)res.n_errors);
		rc = EXIT_FAIL;
	} else {
		printf("check: repository \"%s\" is consistent: %llu pack(s)", repo_path(repo),
		       (unsigned long long)res.n_packs);
		if (o.read_data)
			printf(", %llu chunk(s) read and verified", (unsigned long long)res.n_chunks_read);
		printf("\n");
	}
	repo_free(repo);
	return rc;
}

int cmd_stats(int argc, char **argv)
{
	static const struct option opts[] = {
		{"repo", required_argument, NULL, OPT_REPO},
		{"json", no_argument, NULL, OPT_JSON},
		{"help", no_argument, NULL, 'h'},
		{0}};
	const char *repo_opt = NULL;
	bool json = false;
	CatalogStats st;
	Repo *repo = NULL;
	int c, r, rc;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_REPO: repo_opt = optarg; break;
		case OPT_JSON: json = true; break;
		case 'h':
			printf("Usage: pgbakfs stats [--repo PATH] [--json]\n\n"
			       "Repository size, deduplication and compression.\n");
			return EXIT_OK;
		default: return cli_usage("stats", "invalid option");
		}
	}
	if (optind != argc)
		return cli_usage("stats", "unexpected argument \"%s\"", argv[optind]);
	rc = cli_open_repo(repo_opt, &repo);
	if (rc != EXIT_OK)
		return rc;
	r = catalog_stats(repo_catalog(repo), &st);
	if (r < 0) {
		cli_error("could not read the catalog of \"%s\": %s", repo_path(repo), strerror(-r));
		repo_free(repo);
		return EXIT_FAIL;
	}
	double dedup = st.chunk_plain_bytes ? (double)st.logical_bytes / (double)st.chunk_plain_bytes : 0;
	double ratio = st.pack_bytes ? (double)st.logical_bytes / (double)st.pack_bytes : 0;
	if (json) {
		JsonWriter w;
		json_init(&w, stdout);
		json_begin_object(&w);
		json_key(&w, "snapshots"); json_uint(&w, st.n_snapshots);
		json_key(&w, "packs"); json_uint(&w, st.n_packs);
		json_key(&w, "chunks"); json_uint(&w, st.n_chunks);
		json_key(&w, "contents"); json_uint(&w, st.n_contents);
		json_key(&w, "files"); json_uint(&w, st.n_files);
		json_key(&w, "logical_bytes"); json_uint(&w, st.logical_bytes);
		json_key(&w, "unique_bytes"); json_uint(&w, st.chunk_plain_bytes);
		json_key(&w, "stored_bytes"); json_uint(&w, st.pack_bytes);
		json_key(&w, "chunk_size"); json_uint(&w, repo_config(repo)->chunk_size);
		json_key(&w, "dedup_ratio"); json_double(&w, dedup);
		json_key(&w, "total_ratio"); json_double(&w, ratio);
		rc = cli_wal_stats(repo, &w);
		json_end_object(&w);
		putchar('\n');
	} else {
		char a[32], b[32], d[32];
		printf("snapshots:      %llu\n", (unsigned long long)st.n_snapshots);
		printf("logical size:   %s (sum of all snapshots)\n", format_bytes(st.logical_bytes, a, sizeof(a)));
		printf("unique data:    %s in %llu chunk(s) (dedup %.2fx)\n",
		       format_bytes(st.chunk_plain_bytes, b, sizeof(b)), (unsigned long long)st.n_chunks, dedup);
		printf("stored:         %s in %llu pack(s) (overall %.2fx)\n",
		       format_bytes(st.pack_bytes, d, sizeof(d)), (unsigned long long)st.n_packs, ratio);
		printf("chunk size:     %llu KiB\n", (unsigned long long)(repo_config(repo)->chunk_size / 1024));
		rc = cli_wal_stats(repo, NULL);
	}
	repo_free(repo);
	return rc;
}

/* ---- key change ---- */

int cmd_key(int argc, char **argv)
{
	static const struct option opts[] = {
		{"repo", required_argument, NULL, OPT_REPO},
		{"new-passphrase-file", required_argument, NULL, 'n'},
		{"help", no_argument, NULL, 'h'},
		{0}};
	const char *repo_opt = NULL, *new_file = NULL;
	char *old = NULL, *next = NULL;
	size_t old_len = 0, next_len = 0;
	Repo *repo = NULL;
	int c, r, rc;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_REPO: repo_opt = optarg; break;
		case 'n': new_file = optarg; break;
		case 'h':
			printf("Usage: pgbakfs key change [--repo R] [--new-passphrase-file FILE]\n\n"
			       "Wrap the master key of an encrypted repository under a new passphrase.\n"
			       "No data is rewritten. The current passphrase comes from PGBAKFS_PASSPHRASE\n"
			       "or --passphrase-file; the new one from --new-passphrase-file (mode 0600)\n"
			       "or PGBAKFS_NEW_PASSPHRASE.\n");
			return EXIT_OK;
		default: return cli_usage("key", "invalid option");
		}
	}
	if (optind >= argc || strcmp(argv[optind], "change") != 0)
		return cli_usage("key", "expected \"key change\"");
	if (optind + 1 != argc)
		return cli_usage("key", "unexpected argument \"%s\"", argv[optind + 1]);
	/* the new passphrase: PGBAKFS_NEW_PASSPHRASE stands in for PGBAKFS_PASSPHRASE */
	const char *env_new = getenv("PGBAKFS_NEW_PASSPHRASE");
	if (new_file) {
		r = crypt_passphrase_load(new_file, &next, &next_len);
	} else if (env_new && *env_new) {
		next = xstrdup(env_new);
		next_len = strlen(next);
		r = 0;
	} else
		r = -ENOKEY;
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
	rc = cli_open_repo_writer(repo_opt, &repo);
	if (rc == EXIT_OK && !repo_is_encrypted(repo)) {
		cli_error("repository \"%s\" is not encrypted", repo_path(repo));
		rc = EXIT_FAIL;
	}
	if (rc == EXIT_OK) {
		r = crypt_passphrase_load(cli_passphrase_file(), &old, &old_len);
		if (r == 0)
			r = repo_key_change(repo, old, old_len, next, next_len);
		if (r < 0) {
			cli_error("could not change the key of \"%s\": %s", repo_path(repo),
				  r == -EKEYREJECTED ? "wrong passphrase" : strerror(-r));
			rc = EXIT_FAIL;
		} else
			printf("the master key of \"%s\" is now wrapped by the new passphrase\n",
			       repo_path(repo));
	}
	if (old)
		crypt_passphrase_free(old, old_len);
	crypt_passphrase_free(next, next_len);
	if (repo) /* the catalog did not change: nothing to publish */
		repo_write_end(repo, false);
	return cli_close_repo(repo, rc);
}

/* ---- repair --rebuild-catalog ---- */

int cmd_repair(int argc, char **argv)
{
	static const struct option opts[] = {
		{"repo", required_argument, NULL, OPT_REPO},
		{"rebuild-catalog", no_argument, NULL, 'r'},
		{"help", no_argument, NULL, 'h'},
		{0}};
	const char *repo_opt = NULL;
	bool rebuild = false;
	RepairStats st = {0};
	CliLocation cl;
	int c, r, rc;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_REPO: repo_opt = optarg; break;
		case 'r': rebuild = true; break;
		case 'h':
			printf("Usage: pgbakfs repair --rebuild-catalog [--repo R]\n\n"
			       "Rebuild the catalog from the repository's objects alone: every pack\n"
			       "lists its chunks, every snapshot is also stored as a manifest. The old\n"
			       "catalog of a directory repository is kept as catalog.db.old; an S3 or\n"
			       "encrypted repository gets the rebuilt catalog as its next generation.\n"
			       "The retention policy is not in any object: save it again with expire.\n\n"
			       "Nothing else may have a directory repository open meanwhile (backups,\n"
			       "mounts, wal-push): repair refuses while anything does. A manifest whose\n"
			       "files do not match its tree digest is skipped; a snapshot whose chunks\n"
			       "no pack holds is kept as \"failed\". Both make repair exit 1.\n");
			return EXIT_OK;
		default: return cli_usage("repair", "invalid option");
		}
	}
	if (optind != argc)
		return cli_usage("repair", "unexpected argument \"%s\"", argv[optind]);
	if (!rebuild)
		return cli_usage("repair", "nothing to do: give --rebuild-catalog");
	rc = cli_location_resolve(repo_opt, &cl);
	if (rc != EXIT_OK) {
		cli_location_clear(&cl);
		return rc;
	}
	r = repo_rebuild_catalog(&cl.loc, &st);
	if (r == -ENOTDIR || r == -ENOENT)
		cli_error("\"%s\" is not a pgbakfs repository (no config object)", cl.loc.url);
	else if (r == -EKEYREJECTED)
		cli_error("wrong passphrase for repository \"%s\"", cl.loc.url);
	else if (r == -ENOKEY)
		cli_error("repository \"%s\" is encrypted and no passphrase was given", cl.loc.url);
	else if (r == -EBUSY)
		cli_error("repository \"%s\" is in use: stop its backups, mounts, wal-push and other "
			  "pgbakfs commands, then repair again", cl.loc.url);
	else if (r < 0)
		cli_error("could not rebuild the catalog of \"%s\": %s", cl.loc.url, strerror(-r));
	else {
		printf("repair: rebuilt the catalog of \"%s\": %llu pack(s), %llu chunk(s), "
		       "%llu snapshot(s)\n", cl.loc.url, (unsigned long long)st.packs,
		       (unsigned long long)st.chunks, (unsigned long long)st.snapshots);
		if (st.bad_packs || st.bad_manifests || st.incomplete) {
			cli_error("%llu damaged pack(s) and %llu damaged manifest(s) were skipped, "
				  "%llu snapshot(s) lack chunks and are marked failed; the warnings "
				  "above name them",
				  (unsigned long long)st.bad_packs, (unsigned long long)st.bad_manifests,
				  (unsigned long long)st.incomplete);
			r = -EBADMSG;
		}
	}
	cli_location_clear(&cl);
	return r < 0 ? EXIT_FAIL : EXIT_OK;
}
