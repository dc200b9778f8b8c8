#include "tools/opts.h"

#include "common/json.h"
#include "tools/config.h"

#include <stdio.h>
#include <string.h>

/* codes of the shared options: above the commands' own, below RECOVERY_OPT_BASE */
enum { OPT_REPO = 0x300, OPT_JOBS, OPT_PROGRESS, OPT_NO_PROGRESS, OPT_INSTANCE, OPT_JSON, OPT_DBNAME };

/* The shared options, each with the CLI_* bit that brings it into a command's table. */
static const struct {
	unsigned bit;
	struct option o;
} shared[] = {
	{CLI_REPO, {"repo", required_argument, NULL, OPT_REPO}},
	{CLI_JOBS, {"jobs", required_argument, NULL, OPT_JOBS}},
	{CLI_PROGRESS, {"progress", no_argument, NULL, OPT_PROGRESS}},
	{CLI_PROGRESS, {"no-progress", no_argument, NULL, OPT_NO_PROGRESS}},
	{CLI_INSTANCE, {"instance", required_argument, NULL, OPT_INSTANCE}},
	{CLI_JSON, {"json", no_argument, NULL, OPT_JSON}},
	{CLI_DBNAME, {"dbname", required_argument, NULL, OPT_DBNAME}},
	{CLI_RECOVERY, {"target-time", required_argument, NULL, RECOVERY_OPT_BASE + 0}},
	{CLI_RECOVERY, {"target-lsn", required_argument, NULL, RECOVERY_OPT_BASE + 1}},
	{CLI_RECOVERY, {"target-xid", required_argument, NULL, RECOVERY_OPT_BASE + 2}},
	{CLI_RECOVERY, {"target-name", required_argument, NULL, RECOVERY_OPT_BASE + 3}},
	{CLI_RECOVERY, {"target-action", required_argument, NULL, RECOVERY_OPT_BASE + 4}},
};

#define MAX_OPTIONS 64

/* The command's getopt_long table and short options: the shared ones it takes, then its own. */
static void build_table(const CliCommand *cmd, struct option *t, char *shorts, size_t shorts_len)
{
	size_t n = 0;
	for (size_t i = 0; i < ELEMENTSOF(shared); i++)
		if (cmd->common & shared[i].bit)
			t[n++] = shared[i].o;
	for (const struct option *o = cmd->options; o && o->name; o++)
		if (n < MAX_OPTIONS - 2)
			t[n++] = *o;
	t[n++] = (struct option){"help", no_argument, NULL, 'h'};
	t[n] = (struct option){0};
	snprintf(shorts, shorts_len, "h%s%s%s", cmd->common & CLI_JOBS ? "j:" : "",
		 cmd->common & CLI_DBNAME ? "d:" : "", cmd->short_options ? cmd->short_options : "");
}

/* One shared option (or a recovery target): true when c was one, *ret_exit its outcome. */
static bool take_shared(const CliCommand *cmd, int c, const char *arg, CliArgs *a, int *ret_exit)
{
	*ret_exit = EXIT_OK;
	if (recovery_option(cmd->name, c, arg, &a->target, ret_exit))
		return true;
	switch (c) {
	case OPT_REPO: a->repo = arg; break;
	case 'j':
	case OPT_JOBS: *ret_exit = cli_parse_jobs(cmd->name, arg, &a->jobs); break;
	case OPT_PROGRESS: a->progress = true; break;
	case OPT_NO_PROGRESS: a->progress = false; break;
	case OPT_INSTANCE:
		if (cmd->common & CLI_INSTANCE_NAME)
			*ret_exit = cli_check_instance(cmd->name, arg);
		a->instance = arg;
		break;
	case OPT_JSON: a->json = true; break;
	case 'd':
	case OPT_DBNAME: a->conninfo = arg; break;
	default: return false;
	}
	return true;
}

/* The positional arguments: as many as the command takes. */
static int take_args(const CliCommand *cmd, CliArgs *a)
{
	if (cmd->n_args == CLI_ARGS_ANY)
		return CLI_CONTINUE;
	if (a->n_args < cmd->n_args)
		return cli_usage(cmd->name, "%s", cmd->missing);
	if (a->n_args > cmd->n_args)
		return cli_usage(cmd->name, "unexpected argument \"%s\"", a->args[cmd->n_args]);
	return CLI_CONTINUE;
}

int cli_parse(const CliCommand *cmd, int argc, char **argv, CliArgs *a, void *opts)
{
	struct option table[MAX_OPTIONS];
	char shorts[32];
	int c, rc, n = argc;

	*a = (CliArgs){.progress = cli_stderr_is_tty()};
	build_table(cmd, table, shorts, sizeof(shorts));
	/* everything after "--" belongs to the client program */
	for (int i = 1; cmd->common & CLI_REST && i < argc; i++)
		if (!strcmp(argv[i], "--")) {
			n = i;
			break;
		}
	a->rest = argv + MIN(n + 1, argc);
	optind = 0; /* GNU getopt: start afresh (a second parse in one process) */
	while ((c = getopt_long(n, argv, shorts, table, NULL)) != -1) {
		if (c == 'h') {
			fputs(cmd->help, stdout);
			return EXIT_OK;
		}
		if (take_shared(cmd, c, optarg, a, &rc))
			;
		else if (c != '?' && cmd->option)
			rc = cmd->option(c, optarg, opts);
		else
			rc = cli_usage(cmd->name, "invalid option");
		if (rc != EXIT_OK)
			return rc;
	}
	a->args = argv + optind;
	a->n_args = n - optind;
	if ((rc = take_args(cmd, a)) != CLI_CONTINUE)
		return rc;
	if (cmd->common & CLI_JOBS && !a->jobs)
		a->jobs = cli_config_jobs();
	return CLI_CONTINUE;
}

int cli_check_instance(const char *cmd, const char *name)
{
	/* names end up in JSON and on terminals: text only */
	if (!json_text_is_clean(name))
		return cli_usage(cmd, "the instance name must be UTF-8 text without control characters");
	if (!*name || strpbrk(name, "/ \t\n"))
		return cli_usage(cmd, "invalid instance name \"%s\"", name);
	return EXIT_OK;
}
