/*
 * The command line of one command, parsed by one table-driven parser: the
 * options several commands take (--repo, --help, -j/--jobs, --[no-]progress,
 * --instance, --json, -d/--dbname, the recovery targets) are declared by a
 * bit each and parsed here, with the same words for the same bad input in
 * every command; a command adds its own options and a handler for them. The
 * common options of every command (--config, --cache-dir, ...) were taken out
 * of argv before (cli_take_common_options).
 *
 * A command then reads: parse (cli_parse into its options struct), validate
 * (its own rules between options), and a short script over library calls.
 */
#pragma once

#include "tools/cli.h"
#include "tools/recovery.h"

/* The shared options a command takes (CliCommand.common). --help: every command. */
enum {
	CLI_REPO = 1 << 0,     /* --repo PATH */
	CLI_JOBS = 1 << 1,     /* -j N, --jobs N: 1 to 256; default the config file's jobs (else 0) */
	CLI_PROGRESS = 1 << 2, /* --progress, --no-progress; default: whether stderr is a terminal */
	CLI_INSTANCE = 1 << 3, /* --instance NAME */
	CLI_INSTANCE_NAME = 1 << 4, /* with CLI_INSTANCE: NAME checked as it is read (cli_check_instance) */
	CLI_JSON = 1 << 5,     /* --json */
	CLI_DBNAME = 1 << 6,   /* -d CONNINFO, --dbname CONNINFO */
	CLI_RECOVERY = 1 << 7, /* --target-time/-lsn/-xid/-name, --target-action (recovery.h) */
	CLI_REST = 1 << 8,     /* what follows "--" is another program's (CliArgs.rest) */
};

/* What the shared options and the positional arguments gave. */
typedef struct CliArgs {
	const char *repo;     /* --repo, or NULL */
	int jobs;
	bool progress;
	const char *instance; /* NULL: not given */
	bool json;
	const char *conninfo; /* -d */
	RecoveryTarget target; /* checked one by one; recovery_check is the command's */
	char **args;          /* the positional arguments */
	int n_args;
	char **rest;          /* CLI_REST: the arguments after "--" (NULL-terminated, maybe none) */
} CliArgs;

/* Special values of CliCommand.n_args */
#define CLI_ARGS_ANY (-1) /* the command checks its positional arguments itself */

typedef struct CliCommand {
	const char *name;   /* for the messages: "pgbakfs NAME --help" */
	unsigned common;    /* CLI_* */
	const char *help;   /* --help's text, printed as it is */
	/* its own options: getopt_long entries ({0}-terminated; codes from 0x100, below 0x300) */
	const struct option *options;
	const char *short_options; /* its own short ones ("f"), or NULL */
	/*
	 * one of its own options was given (arg: getopt's optarg, inside argv,
	 * which the handler may split in place): EXIT_OK, or an exit code after
	 * one message
	 */
	int (*option)(int c, char *arg, void *opts);
	/*
	 * How many positional arguments it takes (or CLI_ARGS_ANY); fewer: the
	 * usage error "missing" (e.g. "missing snapshot ID"); more: "unexpected
	 * argument "X"", the same in every command.
	 */
	int n_args;
	const char *missing;
} CliCommand;

/* A number macro as a string, for help texts: CLI_STR(PGBAKFS_REPO_FORMAT) */
#define CLI_STR_(x) #x
#define CLI_STR(x) CLI_STR_(x)

/* cli_parse's "go on": the command runs */
#define CLI_CONTINUE (-1)

/*
 * Parse argv (argv[0]: the command's name) into *a, and the command's own
 * options through cmd->option(c, arg, opts). Returns CLI_CONTINUE, or the
 * exit code to end with: EXIT_OK after --help, EXIT_USAGE after one error
 * line (getopt's own line first for an unknown option or a missing value).
 */
int cli_parse(const CliCommand *cmd, int argc, char **argv, CliArgs *a, void *opts);

/*
 * An instance name as backup stores it: UTF-8 text without control
 * characters, not empty, no '/' or white space. A usage error or EXIT_OK.
 */
int cli_check_instance(const char *cmd, const char *name);
