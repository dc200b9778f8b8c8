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
	int64_t major; /* the snapshot's PostgreSQL major */
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
 * Before anything runs: the user the server runs as and the server's
 * programs, from pg_bin or (NULL) /usr/lib/postgresql/<the snapshot's
 * major>/bin, and with a target (may be NULL) psql. -ENOENT with what is
 * missing and how to point at it in pg->error: nothing of the snapshot was
 * read, so this says nothing about it.
 */
int scratchpg_prepare(ScratchPg *pg, const SnapshotInfo *s, const char *pg_bin,
		      const RecoveryTarget *t);
/*
 * A client program the command will run: in pgbin, else in the newest
 * /usr/lib/postgresql/N/bin holding it (for pg_dump and pg_dumpall, which
 * refuse a newer server, N at least the snapshot's major). 0, or -ENOENT with
 * pg->error set (require) / its path in ret (path).
 */
int scratchpg_require_client(ScratchPg *pg, const char *program);
int scratchpg_client_path(const ScratchPg *pg, const char *program, char *ret, size_t len);
/*
 * After scratchpg_prepare: mount a clone and start the server on it; with a
 * target, wait until recovery got there. loc: the repository as this command
 * resolved it (its passphrase and S3 settings go to the server's
 * restore_command through files, see above). On error pg->error says why.
 */
int scratchpg_start(ScratchPg *pg, const char *repo, const CliLocation *loc, const SnapshotInfo *s,
		    const RecoveryTarget *t);
/*
 * Run a client program (found as scratchpg_client_path says) against the
 * server; its exit status (or -errno).
 */
int scratchpg_client(ScratchPg *pg, const char *program, char *const args[], int out_fd,
		     int err_fd);
/*
 * Stop the server, unmount, remove the private directory unless keep (then
 * it is made 0700: nothing in it readable by others).
 */
void scratchpg_stop(ScratchPg *pg, bool keep);
