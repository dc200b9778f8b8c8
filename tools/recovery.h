/*
 * Recovery targets (--target-time, --target-lsn, --target-xid, --target-name,
 * --target-action) shared by restore, mount --writable, verify and dump: parse
 * them, and write what PostgreSQL needs to recover to one: recovery.signal plus
 * restore_command (pgbakfs wal-fetch from the same repository) and the target
 * in postgresql.auto.conf.
 */
#pragma once

#include "common/common.h"

#include <getopt.h>

typedef struct RecoveryTarget {
	const char *kind;  /* "time", "lsn", "xid", "name"; NULL: none */
	const char *value;
	const char *action; /* "promote", "pause", "shutdown"; NULL: PostgreSQL's default */
} RecoveryTarget;

/* getopt_long entries for the target options; codes from RECOVERY_OPT_BASE on. */
#define RECOVERY_OPT_BASE 0x400
#define RECOVERY_OPTIONS                                                                   \
	{"target-time", required_argument, NULL, RECOVERY_OPT_BASE + 0},                   \
	{"target-lsn", required_argument, NULL, RECOVERY_OPT_BASE + 1},                    \
	{"target-xid", required_argument, NULL, RECOVERY_OPT_BASE + 2},                    \
	{"target-name", required_argument, NULL, RECOVERY_OPT_BASE + 3},                   \
	{"target-action", required_argument, NULL, RECOVERY_OPT_BASE + 4}
#define RECOVERY_USAGE                                                                     \
	"  --target-time T | --target-lsn L | --target-xid X | --target-name N\n"          \
	"                    recover to that point with the archived WAL (wal-fetch)\n"    \
	"  --target-action promote|pause|shutdown   what to do there\n"

/*
 * Take option code c (from getopt_long) if it is a target option: true when
 * it was one; *ret_exit is then EXIT_OK or EXIT_USAGE (message printed).
 */
bool recovery_option(const char *cmd, int c, const char *arg, RecoveryTarget *t, int *ret_exit);
/* After parsing: a usage error (printed, EXIT_USAGE) or EXIT_OK. */
int recovery_check(const char *cmd, const RecoveryTarget *t);

/*
 * What restore_command's wal-fetch is given besides --repo: files, never the
 * secrets themselves (absolute paths; NULL: not given).
 */
typedef struct RecoveryFetch {
	const char *cache_dir, *config, *ca_file, *passphrase_file;
} RecoveryFetch;
/*
 * The postgresql.auto.conf lines for repository repo (absolute path); free()
 * it. restore_command is one command, "<pgbakfs> wal-fetch %f %p --repo ...",
 * with no shell around it: PostgreSQL sees wal-fetch's exit status unchanged
 * (1: no such file; above 125: a failure that must stop recovery). fetch NULL:
 * the --cache-dir, --config, --ca-file and --passphrase-file of this command line.
 * A repository in a bucket also gets --prefetch RECOVERY_PREFETCH (8 segments,
 * pgBackRest's archive-get queue of 128 MiB).
 */
#define RECOVERY_PREFETCH 8
int recovery_conf(const RecoveryTarget *t, const char *repo, const RecoveryFetch *fetch,
		  char **ret);
/* Write recovery.signal and append conf to postgresql.auto.conf in datadir. */
int recovery_write(const char *datadir, const char *conf);
