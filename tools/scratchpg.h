/*
 * A throwaway PostgreSQL server on a writable clone of one snapshot, for
 * verify and dump: a private directory holds the mount point, the clone's
 * scratch directory and the server's socket; the server runs as the postgres
 * OS user when we are root (as ourselves otherwise), listens only on its
 * socket, trusts local connections, archives nothing and never fsyncs. Stopping
 * it unmounts and removes everything; the repository never changes.
 */
#pragma once

#include "store/catalog.h"
#include "tools/recovery.h"

#include <limits.h>
#include <sys/types.h>

typedef struct ScratchPg {
	char root[PATH_MAX]; /* private directory */
	char mnt[PATH_MAX + 8], sock[PATH_MAX + 8], log[PATH_MAX + 32];
	char datadir[PATH_MAX + 80];
	char pgbin[PATH_MAX];
	char user[64];
	uid_t uid;
	gid_t gid;
	int port;
	pid_t mount_pid;
	bool started;
	char error[512]; /* why start failed, for the one error line */
} ScratchPg;

/* pg_bin may be NULL: /usr/lib/postgresql/<the snapshot's major>/bin. */
int scratchpg_start(ScratchPg *pg, const char *repo, const SnapshotInfo *s, const char *pg_bin,
		    const RecoveryTarget *t);
/* Run a client program of pgbin against the server; its exit status (or -errno). */
int scratchpg_client(ScratchPg *pg, const char *program, char *const args[], int out_fd,
		     int err_fd);
/* Stop the server, unmount, remove the private directory unless keep. */
void scratchpg_stop(ScratchPg *pg, bool keep);
