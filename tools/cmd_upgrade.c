/*
 * pgbakfs upgrade: bring a repository to the format this binary writes.
 */
#include "common/util.h"
#include "store/repo.h"
#include "tools/cli.h"
#include "tools/opts.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static const CliCommand upgrade_command = {
	.name = "upgrade",
	.common = CLI_REPO,
	.help = "Usage: pgbakfs upgrade [--repo R]\n\n"
		"Bring the repository to format " CLI_STR(PGBAKFS_REPO_FORMAT) ": chunk lists of more than 256 chunks\n"
		"are stored as shared blocks of chunk ids, so a small change in a large\n"
		"file adds little metadata (lists written after it, in blocks of 62 ids:\n"
		"lists written before keep their blocks of 256, both are read), the\n"
		"catalog's chunk rows are keyed by 8 bytes of their id instead of 32,\n"
		"directories of more than 128 entries written after it are stored as\n"
		"shared blocks of entries (directories written before are read as they\n"
		"are), and every snapshot manifest is written again, carrying each\n"
		"directory and chunk list only once.\n"
		"Older pgbakfs versions cannot open the repository afterwards. Safe to\n"
		"interrupt and to run again; a repository already upgraded is left as\n"
		"it is. Runs beside backups and mounts, not beside gc.\n",
};

int cmd_upgrade(int argc, char **argv)
{
	RepoUpgradeResult res = {0};
	Repo *repo = NULL;
	CliArgs a;
	int r, rc = cli_parse(&upgrade_command, argc, argv, &a, NULL);

	if (rc != CLI_CONTINUE)
		return rc;
	/* open, then the writer lock (object storage, encrypted) */
	rc = cli_open_repo_writer(a.repo, &repo);
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
