/*
 * The config file (tools/config.c): where an operator writes the repository
 * and the clusters once, in ini syntax:
 *
 *   repo = /var/lib/pgbakfs          # top-level settings: every command
 *   jobs = 4
 *   [main]                           # one section per instance (cluster)
 *   conninfo = host=/run/postgresql port=5432 user=postgres
 *   pgdata = /var/lib/postgresql/15/main
 *   extra-dir = /etc/postgresql/15/main
 *   keep-last = 7                    # retention: here or at the top level
 *
 * Found at --config FILE, else PGBAKFS_CONFIG (both must exist), else
 * /etc/pgbakfs/pgbakfs.conf for root and ~/.config/pgbakfs/pgbakfs.conf
 * (XDG_CONFIG_HOME) otherwise; root falls back to the latter, where earlier
 * versions looked. Keys may be written with '-' or '_'. A file holding a
 * secret (an AWS secret key or session token, a conninfo with a password)
 * must be readable by its owner only. A value given on the command line wins,
 * then the environment, then the file.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#define CONFIG_MAX_EXTRA_DIRS 16

typedef struct ConfigInstance {
	const char *name;
	const char *conninfo, *pgdata;
	const char *extra_dirs[CONFIG_MAX_EXTRA_DIRS];
	size_t n_extra_dirs;
	const char *keep_last, *keep_within; /* retention of this instance (checked when read) */
} ConfigInstance;

typedef struct Config Config;

/*
 * The config file, read on first use and kept until exit. Prints one error
 * and returns an exit code (2 for a file that cannot be understood, 1 when it
 * cannot be read); EXIT_OK with an empty config when there is no file.
 */
int cli_config(const Config **ret);
/* The path read, or NULL when there was none. */
const char *config_path(const Config *c);

/* A top-level setting, by its '-' name (e.g. "repo", "s3-endpoint"); NULL if unset. */
const char *config_setting(const Config *c, const char *key);
size_t config_n_instances(const Config *c);
const ConfigInstance *config_instance_at(const Config *c, size_t i);
const ConfigInstance *config_instance(const Config *c, const char *name);

/*
 * The instance a command means: the one named (it must be configured), or,
 * when none is named, the only one configured. Prints one error naming the
 * choices (exit 2) when there are several or the name is unknown; *ret is
 * NULL and EXIT_OK when the file configures none and no name is given.
 */
int cli_config_instance(const char *cmd, const char *name, const ConfigInstance **ret);

/*
 * Logging for this command: the level from --log-level, else debug when
 * PGBAKFS_DEBUG is set, else the file's log-level, else info; the file from
 * --log-file, else the file's log-file. Writes "COMMAND: started" to the log
 * file. Prints one error; exit code.
 */
int cli_logs_setup(const char *cmd);

/* The number of jobs the file sets (top-level "jobs"), 0 when unset. */
int cli_config_jobs(void);
