/* Helpers shared by the commands: messages, exit codes, opening a repository. */
#pragma once

#include "common/common.h"
#include "store/repo.h"

#include <getopt.h>

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

/* One line on stderr: "pgbakfs: error: ...". */
void cli_error(const char *fmt, ...) _printf_(1, 2);
/* "hint: ..." line that says what to do. */
void cli_hint(const char *fmt, ...) _printf_(1, 2);
/* Usage error: message plus a pointer to --help; returns EXIT_USAGE. */
int cli_usage(const char *cmd, const char *fmt, ...) _printf_(2, 3);

/* The repository from --repo or PGBAKFS_REPO; NULL (after a message) if none. */
const char *cli_repo_location(const char *opt);
/* Open it, printing one clear error on failure. Returns an exit code. */
int cli_open_repo(const char *opt, Repo **ret);
/* Find a snapshot by id or "latest", printing an error on failure. Exit code. */
int cli_find_snapshot(Repo *repo, const char *id, const char *instance, SnapshotInfo *ret);

int cli_parse_jobs(const char *cmd, const char *s, int *ret);
bool cli_stderr_is_tty(void);

typedef int (*CommandFn)(int argc, char **argv);

int cmd_init(int argc, char **argv);
int cmd_backup(int argc, char **argv);
int cmd_list(int argc, char **argv);
int cmd_show(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cmd_mount(int argc, char **argv);
int cmd_delete(int argc, char **argv);
int cmd_gc(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_stats(int argc, char **argv);
