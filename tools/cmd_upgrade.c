/*
 * pgbakfs upgrade: bring a repository to the format this binary writes.
 */
#include "common/util.h"
#include "store/repo.h"
#include "tools/cli.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

enum { OPT_REPO = 0x100 };

int cmd_upgrade(int argc, char **argv)
{
	static const struct option opts[] = {
		{"repo", required_argument, NULL, OPT_REPO}, {"help", no_argument, NULL, 'h'}, {0}};
	const char *repo_opt = NULL;
	RepoUpgradeResult res = {0};
	Repo *repo = NULL;
	int c, r, rc;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_REPO: repo_opt = optarg; break;
		case 'h':
			printf("Usage: pgbakfs upgrade [--repo R]\n\n"
			       "Bring the repository to format %d: chunk lists of more than 256 chunks\n"
			       "are stored as shared blocks of chunk ids, so a small change in a large\n"
			       "file adds little metadata, the catalog's chunk rows are keyed by 8\n"
			       "bytes of their id instead of 32, and every snapshot manifest is written\n"
			       "again, carrying each directory and chunk list only once.\n"
			       "Older pgbakfs versions cannot open the repository afterwards. Safe to\n"
			       "interrupt and to run again; a repository already upgraded is left as\n"
			       "it is. Runs beside backups and mounts, not beside gc.\n",
			       PGBAKFS_REPO_FORMAT);
			return EXIT_OK;
		default: return cli_usage("upgrade", "invalid option");
		}
	}
	if (optind != argc)
		return cli_usage("upgrade", "unexpected argument \"%s\"", argv[optind]);
	/* open, then the writer lock (object storage, encrypted) */
	rc = cli_open_repo_writer(repo_opt, &repo);
	if (rc != EXIT_OK)
		return rc;
	/* config, lists, manifests */
	r = repo_upgrade(repo, &res);
	if (r == -EBUSY) {
		cli_error("gc is running on repository \"%s\": upgrade once it is done", repo_path(repo));
		rc = EXIT_FAIL;
	} else if (r < 0) {
		cli_error("could not upgrade repository \"%s\": %s", repo_path(repo), strerror(-r));
		cli_hint("the repository stays usable; run \"pgbakfs upgrade\" again to finish");
		rc = EXIT_FAIL;
	} else if (res.already) {
		printf("upgrade: repository \"%s\" is already format %d\n", repo_path(repo),
		       PGBAKFS_REPO_FORMAT);
	} else {
		printf("upgrade: repository \"%s\" upgraded from format %u to format %d: %llu chunk "
		       "list(s) stored as id blocks, snapshot manifests rewritten\n", repo_path(repo),
		       res.from_format, PGBAKFS_REPO_FORMAT, (unsigned long long)res.lists_converted);
	}
	return cli_close_repo(repo, rc);
}
