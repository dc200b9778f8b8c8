/* pgbakfs restore ID TARGET. */
#include "common/progress.h"
#include "common/util.h"
#include "store/restore.h"
#include "tools/cli.h"

#include <stdio.h>
#include <string.h>

enum { OPT_REPO = 0x100, OPT_INSTANCE, OPT_PROGRESS, OPT_NO_PROGRESS, OPT_TS_MAP };
#define MAX_MAPS 64

int cmd_restore(int argc, char **argv)
{
	static const struct option opts[] = {
		{"repo", required_argument, NULL, OPT_REPO},
		{"instance", required_argument, NULL, OPT_INSTANCE},
		{"jobs", required_argument, NULL, 'j'},
		{"progress", no_argument, NULL, OPT_PROGRESS},
		{"no-progress", no_argument, NULL, OPT_NO_PROGRESS},
		{"tablespace-map", required_argument, NULL, OPT_TS_MAP},
		{"help", no_argument, NULL, 'h'},
		{0}};
	const char *repo_opt = NULL, *instance = NULL, *id, *target;
	bool show_progress = cli_stderr_is_tty();
	RestoreOptions o = {0};
	RestoreMapping maps[MAX_MAPS];
	char *eq;
	RestoreResult res;
	SnapshotInfo s = {0};
	Progress *progress = NULL;
	Repo *repo = NULL;
	int c, r, rc;
	int64_t t0 = mono_ns();

	while ((c = getopt_long(argc, argv, "hj:", opts, NULL)) != -1) {
		switch (c) {
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
			maps[o.n_maps++] = (RestoreMapping){.from = optarg, .to = eq + 1};
			break;
		case 'h':
			printf("Usage: pgbakfs restore ID TARGET [--repo PATH] [-j N] [--[no-]progress]\n"
			       "                       [--tablespace-map OLD=NEW]...\n\n"
			       "Restore snapshot ID (or \"latest\") into TARGET, a missing or empty\n"
			       "directory. Every chunk is verified before it is written. Tablespaces go\n"
			       "back to their original directories, or to NEW for --tablespace-map\n"
			       "OLD=NEW; those must be missing or empty.\n");
			return EXIT_OK;
		default: return cli_usage("restore", "invalid option");
		}
	}
	if (argc - optind != 2)
		return cli_usage("restore", "expected ID and TARGET");
	id = argv[optind];
	target = argv[optind + 1];
	r = dir_is_empty(target);
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
	if (rc != EXIT_OK)
		goto out;
	progress_new("restore", s.logical_bytes, show_progress, &progress);
	o.progress = progress;
	o.maps = maps;
	r = restore_snapshot(repo, &s, target, &o, &res);
	progress = progress_free(progress);
	if (r == -EBADMSG || r == -ENOENT) {
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
		char b[32];
		double secs = (double)(mono_ns() - t0) / 1e9;
		printf("restored snapshot \"%s\" into \"%s\": %llu files, %s, %.1f s (%.1f MB/s)\n",
		       s.name, target, (unsigned long long)res.n_files,
		       format_bytes(res.bytes, b, sizeof(b)), secs,
		       secs > 0 ? (double)res.bytes / secs / 1e6 : 0.0);
	}
out:
	snapshot_info_clear(&s);
	repo_free(repo);
	return rc;
}
