/* Helpers shared by the commands: messages, exit codes, opening a repository. */
#pragma once

#include "common/common.h"
#include "store/repo.h"

#include <getopt.h>

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

/* One line on stderr: "pgbakfs: error: ...". */
void cli_error(const char *fmt, ...) _printf_(1, 2);
/* The text of the last error line printed (without "pgbakfs: error: "), or "". */
const char *cli_last_error(void);
/*
 * "pgbakfs: warning: ..." / "pgbakfs: note: ..." on stderr and in the log
 * file (--log-file), unless --log-level is above them.
 */
void cli_warning(const char *fmt, ...) _printf_(1, 2);
void cli_note(const char *fmt, ...) _printf_(1, 2);
/* "hint: ..." line that says what to do (after a message --log-level hid: none). */
void cli_hint(const char *fmt, ...) _printf_(1, 2);
/* Usage error: message plus a pointer to --help; returns EXIT_USAGE. */
int cli_usage(const char *cmd, const char *fmt, ...) _printf_(2, 3);

/* The repository from --repo or PGBAKFS_REPO; NULL (after a message) if none. */
const char *cli_repo_location(const char *opt);
/*
 * A resolved --repo (tools/repoloc.c): for s3://bucket/prefix, the endpoint,
 * region, addressing style and credentials from the environment or the
 * config file (--config, PGBAKFS_CONFIG, else ~/.config/pgbakfs/pgbakfs.conf,
 * which must be 0600), and the cache directory. Prints one error; exit code.
 */
typedef struct CliLocation {
	RepoLocation loc;
	StoreS3Config s3;
	char *bucket, *prefix, *endpoint, *region, *access_key, *secret_key, *session_token,
		*ca_file, *cache_dir;
	char *passphrase; /* PGBAKFS_PASSPHRASE or --passphrase-file, if given */
	size_t passphrase_len;
} CliLocation;
int cli_location_resolve(const char *opt, CliLocation *ret);
/* Wipes the credentials. */
void cli_location_clear(CliLocation *cl);
/*
 * S3 settings (credentials included) as a config file's text, which
 * --config reads back: malloc'd; wipe and free it.
 */
char *cli_s3_config_text(const StoreS3Config *s3);
/*
 * Options every command takes, removed from argv before the command parses
 * it (up to a "--"): --cache-dir, --passphrase-file, --ca-file, --config,
 * --log-level, --log-file.
 */
int cli_take_common_options(int *argc, char **argv);
const char *cli_passphrase_file(void);
const char *cli_config_file(void);
/* --log-level and --log-file as given (applied by cli_logs_setup, tools/config.c) */
const char *cli_log_level_option(void);
const char *cli_log_file_option(void);
/*
 * The common options given on this command line, as absolute paths (for a
 * command pgbakfs writes for later, like restore_command): their count;
 * free the values.
 */
size_t cli_common_options(const char *ret_names[4], char *ret_values[4]);

/* strerror, with what a failure of the S3 driver means for the user (TLS, access). */
const char *cli_store_strerror(int r, bool s3);

/* Open it, printing one clear error on failure. Returns an exit code. */
int cli_open_repo(const char *opt, Repo **ret);
/* The same for a location already resolved (cl stays the caller's). */
int cli_open_location(const CliLocation *cl, Repo **ret);
/* The same for the WAL archive alone (repo_open_archive: no catalog is read or downloaded). */
int cli_open_archive(const CliLocation *cl, Repo **ret);
/*
 * For commands that change the catalog: take the writer lock of a remote
 * repository (local: nothing). cli_write_end publishes the change when
 * publish; both print one error and return an exit code.
 */
int cli_write_begin(Repo *repo);
int cli_write_end(Repo *repo, bool publish);
/* cli_open_repo, then cli_write_begin. */
int cli_open_repo_writer(const char *opt, Repo **ret);
/* End a write (publishing), free the repository; returns rc, or the failure to publish. */
int cli_close_repo(Repo *repo, int rc);
/* Find a snapshot by id or "latest", printing an error on failure. Exit code. */
int cli_find_snapshot(Repo *repo, const char *id, const char *instance, SnapshotInfo *ret);

int cli_parse_jobs(const char *cmd, const char *s, int *ret);
bool cli_stderr_is_tty(void);

typedef int (*CommandFn)(int argc, char **argv);

/*
 * The commands, one file per command or per named group: cmd_repo.c (the
 * repository as a whole: init, gc, check, stats, key, repair), cmd_upgrade.c,
 * cmd_snapshots.c (snapshot records: list, show, delete), cmd_retention.c
 * (expire, pin), cmd_backup.c, cmd_restore.c, cmd_mount.c, cmd_verify.c
 * (verify, dump), cmd_wal.c (wal-push, wal-fetch, wal-summary, restore-point),
 * cmd_status.c (status, metrics). Each parses its command line with
 * cli_parse (tools/opts.h), validates, then runs a short script of library
 * calls.
 */

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
int cmd_key(int argc, char **argv);
int cmd_repair(int argc, char **argv);
int cmd_upgrade(int argc, char **argv);
/*
 * backup --expire: before the backup, the instance must have a policy (the
 * config file's, or one saved in the repository; else a usage error); after
 * it, apply that policy to the instance's snapshots (and the WAL archive).
 */
int expire_check_policy(Repo *repo, const char *instance);
int expire_apply_policy(Repo *repo, const char *instance);
int cmd_status(int argc, char **argv);
int cmd_metrics(int argc, char **argv);
int cmd_wal_push(int argc, char **argv);
int cmd_wal_fetch(int argc, char **argv);
int cmd_wal_summary(int argc, char **argv);
int cmd_restore_point(int argc, char **argv);

/*
 * WAL archive reports (tools/cmd_wal.c). With a JSON writer, write the key
 * "wal" and its value (null after an error); without, print text lines. An
 * error is printed once; returns an exit code.
 */
struct JsonWriter;
int cli_wal_stats(Repo *repo, struct JsonWriter *w);
int cli_wal_show(Repo *repo, const SnapshotInfo *s, struct JsonWriter *w);
/* What the WAL archive holds from a snapshot on (tools/cmd_wal.c). */
typedef struct CliWalCoverage {
	bool known;      /* the snapshot is PostgreSQL's (not --from-dir) */
	bool archived;   /* its first segment is in the archive */
	bool continuous; /* and every segment after it, up to the archive's last */
	uint32_t timeline;
	char from[25], to[25]; /* the unbroken run from the snapshot's first segment */
	char last[25];         /* the archive's last segment of that timeline ("" if none) */
	char end_lsn[32];      /* recovery can replay up to here */
} CliWalCoverage;
int cli_wal_coverage(Repo *repo, const SnapshotInfo *s, CliWalCoverage *ret);
