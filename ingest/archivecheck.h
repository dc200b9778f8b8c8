/*
 * check --archive: does the server's archive_command bring WAL into this
 * repository? The server completes a WAL segment (a restore point, which is
 * important WAL, then pg_switch_wal(), as pgBackRest's check does) and the
 * check waits, bounded, for that segment to appear in the repository.
 */
#pragma once

#include "ingest/pgconn.h"
#include "store/wal.h"

typedef enum {
	ARCHIVE_CHECK_OK = 0,     /* the segment is in the repository */
	ARCHIVE_CHECK_MODE_OFF,   /* archive_mode is off: nothing is archived */
	ARCHIVE_CHECK_NO_COMMAND, /* archive_mode on, but archive_command (and archive_library) empty */
	ARCHIVE_CHECK_TIMEOUT,    /* the segment did not arrive within the timeout */
} ArchiveCheckStatus;

typedef struct ArchiveCheckResult {
	ArchiveCheckStatus status;
	char segment[PGBAKFS_WAL_NAME_MAX + 1]; /* the segment waited for ("" before the switch) */
	double seconds; /* from the switch until the segment was found (OK) or given up on */
	/*
	 * pg_stat_archiver when the check ended ("" for NULL): the last segment
	 * archive_command succeeded and failed on, and when it failed (ISO 8601
	 * UTC).
	 */
	char last_archived_wal[PGBAKFS_WAL_NAME_MAX + 1];
	char last_failed_wal[PGBAKFS_WAL_NAME_MAX + 1];
	char last_failed_time[32];
} ArchiveCheckResult;

/*
 * Run the check against the server at conninfo (a superuser, or a role
 * allowed pg_create_restore_point, pg_switch_wal and pg_reload_conf), waiting
 * up to timeout_s seconds. While it waits it sends pg_reload_conf() every few
 * seconds: that wakes an archiver sleeping after failures. 0 when the check
 * ran (the verdict is ret->status; ret is filled in every case); -errno when
 * it could not run, with one line in err saying what failed (connect, switch,
 * reading the repository). Writes nothing to the repository.
 */
int archive_check(Repo *repo, const char *conninfo, int timeout_s, ArchiveCheckResult *ret,
		  PgError *err);
