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
int cmd_verify(int argc, char **argv);
int cmd_dump(int argc, char **argv);
int cmd_delete(int argc, char **argv);
int cmd_gc(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_expire(int argc, char **argv);
int cmd_pin(int argc, char **argv);
/* backup --expire: before the backup, a saved policy must exist (else usage error) */
int expire_check_saved_policy(Repo *repo);
/* after it: apply the saved policy to instance's snapshots (and the WAL archive) */
int expire_apply_saved_policy(Repo *repo, const char *instance);
int cmd_wal_push(int argc, char **argv);
int cmd_wal_fetch(int argc, char **argv);
int cmd_restore_point(int argc, char **argv);

/*
 * WAL archive reports (tools/cmd_wal.c). With a JSON writer, write the key
 * "wal" and its value (null after an error); without, print text lines. An
 * error is printed once; returns an exit code.
 */
struct JsonWriter;
int cli_wal_stats(Repo *repo, struct JsonWriter *w);
int cli_wal_show(Repo *repo, const SnapshotInfo *s, struct JsonWriter *w);
