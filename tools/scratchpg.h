/*
 * A throwaway PostgreSQL server on a writable clone of one snapshot, for
 * verify and dump: a private directory holds the mount point, the clone's
 * scratch directory and the server's socket; the server runs as the postgres
 * OS user when we are root (as ourselves otherwise), listens only on its
 * socket, trusts local connections, archives nothing and never fsyncs. Stopping
 * it unmounts and removes everything; the repository never changes.
 *
 * Secrets: the clone's mount is our child and opens the repository as we did
 * (the same --passphrase-file, --config, --cache-dir, --ca-file; the same
 * environment). The server and its client programs get an environment without
 * PGBAKFS_PASSPHRASE, PGBAKFS_NEW_PASSPHRASE, PGBAKFS_CONFIG or any AWS_*
 * variable; with a recovery target its restore_command (wal-fetch, as the
 * server's user) reads the passphrase and S3 settings from 0600 files of that
 * user in fetch/ of the private directory, and keeps its cache there.
 * fetch/ is removed when the server stops, --keep-scratch or not.
 */
#pragma once

#include "store/catalog.h"
#include "tools/cli.h"
#include "tools/recovery.h"

#include <limits.h>
#include <sys/types.h>

typedef struct ScratchPg {
	char root[PATH_MAX]; /* private directory */
	char mnt[PATH_MAX + 8], sock[PATH_MAX + 8], log[PATH_MAX + 32];
	char datadir[PATH_MAX + 80];
	char pgbin[PATH_MAX];
	char user[64];
	char fetch[PATH_MAX + 8]; /* files for the server's wal-fetch */
	char fetch_cache[PATH_MAX + 64], fetch_pass[PATH_MAX + 64], fetch_conf[PATH_MAX + 64];
	char ca_file[PATH_MAX];
	uid_t uid;
	gid_t gid;
	int port;
	pid_t mount_pid;
	bool started;
	char error[512]; /* why start failed, for the one error line */
} ScratchPg;

/*
 * pg_bin may be NULL: /usr/lib/postgresql/<the snapshot's major>/bin. loc:
 * the repository as this command resolved it (its passphrase and S3 settings
 * go to the server's restore_command through files, see above).
 */
int scratchpg_start(ScratchPg *pg, const char *repo, const CliLocation *loc, const SnapshotInfo *s,
		    const char *pg_bin, const RecoveryTarget *t);
/* Run a client program of pgbin against the server; its exit status (or -errno). */
int scratchpg_client(ScratchPg *pg, const char *program, char *const args[], int out_fd,
		     int err_fd);
/*
 * Stop the server, unmount, remove the private directory unless keep (then
 * it is made 0700: nothing in it readable by others).
 */
void scratchpg_stop(ScratchPg *pg, bool keep);
