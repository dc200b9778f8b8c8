/*
 * check --archive (see archivecheck.h). The steps are pgBackRest's check:
 * settings, restore point, switch, wait for the segment in the repository.
 *
 * Why a restore point before the switch: pg_switch_wal() does nothing when
 * no important WAL was written since the last switch (an idle server writes
 * only running-xacts and checkpoint records), and then returns a position in
 * a segment nobody will complete. The restore point is important WAL, so the
 * switch always completes the segment that holds it, and pg_walfile_name() of
 * the switch's end (a segment boundary) names exactly that segment.
 *
 * Why the reloads: after archive_command fails three times in a row the
 * archiver sleeps up to a minute (PGARCH_AUTOWAKE_INTERVAL); a SIGHUP, which
 * pg_reload_conf() sends on, wakes it. A reload only rereads the
 * configuration files.
 */
#include "ingest/archivecheck.h"

#include "common/util.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define POLL_MS 200
#define NUDGE_MS 3000

static void copy_value(const PgRows *rows, int col, char *buf, size_t len)
{
	const char *v = rows->n_rows > 0 && col < rows->n_cols ? pgrows_get(rows, 0, col) : NULL;
	snprintf(buf, len, "%s", v ? v : "");
}

static int query_fail(PgError *err, int r, const char *what)
{
	char msg[sizeof(err->msg)];
	memcpy(msg, err->msg, sizeof(msg));
	snprintf(err->msg, sizeof(err->msg), "could not %s: %.400s", what, msg);
	return r;
}

/* archive_mode, and whether anything is set to archive with. */
static int read_settings(PgConn *conn, ArchiveCheckResult *res, PgError *err)
{
	/* archive_library is 15+; current_setting(.., true) is NULL before */
	PgRows rows = {0};
	char mode[32], command[8], library[8];
	int r = pgconn_query(conn,
			     "SELECT current_setting('archive_mode'), current_setting('archive_command'), "
			     "coalesce(current_setting('archive_library', true), '')",
			     &rows, err);
	if (r < 0)
		return query_fail(err, r, "read the archive settings");
	copy_value(&rows, 0, mode, sizeof(mode));
	copy_value(&rows, 1, command, sizeof(command));
	copy_value(&rows, 2, library, sizeof(library));
	pgrows_clear(&rows);
	if (strcmp(mode, "off") == 0)
		res->status = ARCHIVE_CHECK_MODE_OFF;
	else if (!command[0] && !library[0])
		res->status = ARCHIVE_CHECK_NO_COMMAND;
	return 0;
}

/* Complete the current segment; its name into res->segment. */
static int switch_wal(PgConn *conn, ArchiveCheckResult *res, PgError *err)
{
	PgRows rows = {0};
	char lsn[32];
	int r = pgconn_create_restore_point(conn, "pgbakfs archive check", lsn, sizeof(lsn), err);
	if (r < 0)
		return query_fail(err, r, "create a restore point before the WAL switch");
	r = pgconn_query(conn, "SELECT pg_walfile_name(pg_switch_wal())", &rows, err);
	if (r < 0)
		return query_fail(err, r, "switch WAL");
	copy_value(&rows, 0, res->segment, sizeof(res->segment));
	pgrows_clear(&rows);
	WalName n;
	if (wal_name_parse(res->segment, &n) < 0 || n.kind != WAL_KIND_SEGMENT) {
		snprintf(err->msg, sizeof(err->msg), "the server named an invalid WAL segment \"%s\"",
			 res->segment);
		return -EPROTO;
	}
	return 0;
}

static int read_archiver(PgConn *conn, ArchiveCheckResult *res, PgError *err)
{
	PgRows rows = {0};
	int r = pgconn_query(conn,
			     "SELECT last_archived_wal, last_failed_wal, to_char(last_failed_time "
			     "AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM pg_stat_archiver",
			     &rows, err);
	if (r < 0)
		return query_fail(err, r, "read pg_stat_archiver");
	copy_value(&rows, 0, res->last_archived_wal, sizeof(res->last_archived_wal));
	copy_value(&rows, 1, res->last_failed_wal, sizeof(res->last_failed_wal));
	copy_value(&rows, 2, res->last_failed_time, sizeof(res->last_failed_time));
	pgrows_clear(&rows);
	return 0;
}

/* 1 when the segment is in the repository, 0 when not yet, -errno. */
static int segment_archived(Repo *repo, const ArchiveCheckResult *res, PgError *err)
{
	WalObjectInfo info;
	int r = wal_stat(repo, res->segment, &info);
	if (r == -ENOENT)
		return 0;
	if (r < 0) {
		snprintf(err->msg, sizeof(err->msg),
			 "could not look up WAL segment %s in the repository: %s", res->segment,
			 strerror(-r));
		return r;
	}
	return 1;
}

static int wait_archived(Repo *repo, PgConn *conn, int timeout_s, int64_t start,
			 ArchiveCheckResult *res, PgError *err)
{
	int64_t deadline = start + (int64_t)timeout_s * 1000000000, next_nudge = start;
	for (;;) {
		int r = segment_archived(repo, res, err);
		int64_t now = mono_ns();
		res->seconds = (double)(now - start) / 1e9;
		if (r != 0)
			return r < 0 ? r : 0;
		if (now >= deadline) {
			res->status = ARCHIVE_CHECK_TIMEOUT;
			return 0;
		}
		if (now >= next_nudge) {
			r = pgconn_query(conn, "SELECT pg_reload_conf()", NULL, err);
			if (r < 0)
				return query_fail(err, r, "wake the archiver (pg_reload_conf)");
			next_nudge = now + (int64_t)NUDGE_MS * 1000000;
		}
		struct timespec ts = {0, POLL_MS * 1000000};
		nanosleep(&ts, NULL);
	}
}

int archive_check(Repo *repo, const char *conninfo, int timeout_s, ArchiveCheckResult *ret,
		  PgError *err)
{
	PgConn *conn = NULL;
	int64_t start;
	int r;

	*ret = (ArchiveCheckResult){0};
	err->msg[0] = '\0';
	r = pgconn_connect(conninfo, false, &conn, err);
	if (r < 0)
		return query_fail(err, r, "connect to the server");
	r = read_settings(conn, ret, err);
	if (r == 0 && ret->status == ARCHIVE_CHECK_OK) {
		start = mono_ns();
		r = switch_wal(conn, ret, err);
		if (r == 0)
			r = wait_archived(repo, conn, timeout_s, start, ret, err);
		if (r == 0)
			r = read_archiver(conn, ret, err);
	}
	pgconn_free(conn);
	return r;
}
