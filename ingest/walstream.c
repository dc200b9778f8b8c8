#include "ingest/walstream.h"
#include "common/util.h"

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define STATUS_INTERVAL_NS (5LL * 1000000000)
/* microseconds between the Unix epoch and PostgreSQL's (2000-01-01) */
#define PG_EPOCH_OFFSET_US 946684800000000LL

struct WalStream {
	PgConn *conn;
	char *dir;
	char slot[64];
	uint32_t timeline, seg_size;
	uint64_t startpos;

	pthread_t thread;
	bool started;
	pthread_mutex_t lock; /* guards stoppos, written, stop_set */
	uint64_t stoppos;
	bool stop_set;
	uint64_t written; /* everything before this LSN is in segment files */
	int error;
	PgError err;

	int seg_fd;
	uint64_t seg_no; /* of seg_fd */
};

static uint64_t get_be64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

int walstream_new(const char *conninfo, const char *dir, WalStream **ret, PgSystem *ret_sys,
		  PgError *err)
{
	WalStream *ws = calloc(1, sizeof(*ws));
	PgRows rows = {0};
	char sql[160];
	int r;

	if (!ws)
		return -ENOMEM;
	ws->seg_fd = -1;
	pthread_mutex_init(&ws->lock, NULL);
	ws->dir = strdup(dir);
	r = ws->dir ? pgconn_connect(conninfo, true, &ws->conn, err) : -ENOMEM;
	if (r == 0)
		r = pgconn_query(ws->conn, "IDENTIFY_SYSTEM", &rows, err);
	if (r == 0 && rows.n_rows == 1 && rows.n_cols >= 3) {
		snprintf(ret_sys->system_id, sizeof(ret_sys->system_id), "%s", pgrows_get(&rows, 0, 0));
		ret_sys->timeline = (uint32_t)strtoul(pgrows_get(&rows, 0, 1), NULL, 10);
		r = lsn_parse(pgrows_get(&rows, 0, 2), &ret_sys->xlogpos);
	} else if (r == 0) {
		snprintf(err->msg, sizeof(err->msg), "unexpected reply to IDENTIFY_SYSTEM");
		r = -EPROTO;
	}
	pgrows_clear(&rows);
	if (r == 0) {
		/* a temporary slot: gone with this connection, even if we crash */
		snprintf(ws->slot, sizeof(ws->slot), "pgbakfs_%d_%lld", (int)getpid(),
			 (long long)(now_ns() / 1000000 % 1000000000));
		snprintf(sql, sizeof(sql), "CREATE_REPLICATION_SLOT %s TEMPORARY PHYSICAL RESERVE_WAL",
			 ws->slot);
		r = pgconn_query(ws->conn, sql, NULL, err);
	}
	if (r < 0) {
		walstream_free(ws);
		return r;
	}
	*ret = ws;
	return 0;
}

static int segment_open(WalStream *ws, uint64_t lsn)
{
	char name[25], path[PATH_MAX];
	uint64_t segno = lsn / ws->seg_size;
	if (ws->seg_fd >= 0 && ws->seg_no == segno)
		return 0;
	if (ws->seg_fd >= 0)
		close(ws->seg_fd);
	wal_segno_to_name(ws->timeline, segno, ws->seg_size, name);
	snprintf(path, sizeof(path), "%s/%s", ws->dir, name);
	ws->seg_fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (ws->seg_fd < 0)
		return -errno;
	/* full size from the start: the last, partial segment ends in zeros as recovery expects */
	if (ftruncate(ws->seg_fd, ws->seg_size) < 0)
		return -errno;
	ws->seg_no = segno;
	return 0;
}

static int write_wal(WalStream *ws, uint64_t lsn, const uint8_t *data, size_t len)
{
	while (len > 0) {
		uint64_t off = lsn % ws->seg_size;
		size_t n = (size_t)MIN((uint64_t)len, ws->seg_size - off);
		int r = segment_open(ws, lsn);
		if (r < 0)
			return r;
		r = pwrite_full(ws->seg_fd, data, n, (off_t)off);
		if (r < 0)
			return r;
		lsn += n;
		data += n;
		len -= n;
	}
	pthread_mutex_lock(&ws->lock);
	if (lsn > ws->written)
		ws->written = lsn;
	pthread_mutex_unlock(&ws->lock);
	return 0;
}

static int send_status(WalStream *ws)
{
	uint8_t msg[34];
	uint64_t pos;
	pthread_mutex_lock(&ws->lock);
	pos = ws->written;
	pthread_mutex_unlock(&ws->lock);
	msg[0] = 'r';
	put_be64(msg + 1, pos);
	put_be64(msg + 9, pos);
	put_be64(msg + 17, 0);
	put_be64(msg + 25, (uint64_t)(now_ns() / 1000 - PG_EPOCH_OFFSET_US));
	msg[33] = 0;
	return pgconn_copy_write(ws->conn, msg, sizeof(msg), &ws->err);
}

static int handle_message(WalStream *ws, const uint8_t *m, int len)
{
	if (len >= 25 && m[0] == 'w')
		return write_wal(ws, get_be64(m + 1), m + 25, (size_t)len - 25);
	if (len >= 18 && m[0] == 'k')
		return m[17] ? send_status(ws) : 0;
	snprintf(ws->err.msg, sizeof(ws->err.msg), "unexpected WAL stream message");
	return -EPROTO;
}

static bool reached_stop(WalStream *ws)
{
	bool done;
	pthread_mutex_lock(&ws->lock);
	done = ws->stop_set && ws->written >= ws->stoppos;
	pthread_mutex_unlock(&ws->lock);
	return done;
}

static int stream_loop(WalStream *ws)
{
	int64_t last_status = mono_ns();
	for (;;) {
		char *buf = NULL;
		int n, r;
		if (reached_stop(ws))
			return 0;
		n = pgconn_copy_read(ws->conn, false, &buf, &ws->err);
		if (n == -EAGAIN) {
			r = pgconn_wait_readable(ws->conn, 100, &ws->err);
			if (r < 0)
				return r;
		} else if (n == 0) {
			snprintf(ws->err.msg, sizeof(ws->err.msg),
				 "the server ended WAL streaming before the backup's end");
			return -EPIPE;
		} else if (n < 0) {
			return n;
		} else {
			r = handle_message(ws, (const uint8_t *)buf, n);
			pgconn_freemem(buf);
			if (r < 0)
				return r;
		}
		if (mono_ns() - last_status > STATUS_INTERVAL_NS) {
			r = send_status(ws);
			if (r < 0)
				return r;
			last_status = mono_ns();
		}
	}
}

static void *stream_thread(void *arg)
{
	WalStream *ws = arg;
	thread_name("wal-stream");
	int r = stream_loop(ws);
	if (r == 0 && ws->seg_fd >= 0 && fsync(ws->seg_fd) < 0)
		r = -errno;
	pthread_mutex_lock(&ws->lock);
	ws->error = r;
	pthread_mutex_unlock(&ws->lock);
	return NULL;
}

int walstream_start(WalStream *ws, uint64_t startpos, uint32_t timeline, uint32_t seg_size,
		    PgError *err)
{
	char sql[160], pos[32];
	int r;
	ws->seg_size = seg_size;
	ws->timeline = timeline;
	ws->startpos = startpos - startpos % seg_size;
	ws->written = ws->startpos;
	lsn_format(ws->startpos, pos);
	snprintf(sql, sizeof(sql), "START_REPLICATION SLOT %s PHYSICAL %s TIMELINE %u", ws->slot, pos,
		 timeline);
	r = pgconn_send(ws->conn, sql, err);
	if (r == 0) {
		r = pgconn_next_result(ws->conn, NULL, err);
		if (r == PGCONN_COPY_BOTH)
			r = 0;
		else if (r >= 0) {
			snprintf(err->msg, sizeof(err->msg), "unexpected reply to START_REPLICATION");
			r = -EPROTO;
		}
	}
	if (r == 0) {
		if (pthread_create(&ws->thread, NULL, stream_thread, ws) != 0)
			return -EAGAIN;
		ws->started = true;
	}
	return r;
}

static void stop_thread(WalStream *ws, uint64_t stoppos)
{
	pthread_mutex_lock(&ws->lock);
	if (!ws->stop_set) {
		ws->stop_set = true;
		ws->stoppos = stoppos;
	}
	pthread_mutex_unlock(&ws->lock);
	pthread_join(ws->thread, NULL);
	ws->started = false;
}

int walstream_finish(WalStream *ws, uint64_t stoppos, PgError *err)
{
	if (!ws->started)
		return -EINVAL;
	stop_thread(ws, stoppos);
	if (ws->seg_fd >= 0) {
		close(ws->seg_fd);
		ws->seg_fd = -1;
	}
	if (ws->error < 0) {
		*err = ws->err;
		return ws->error;
	}
	/* leave streaming politely; errors here do not matter, the WAL is complete */
	pgconn_copy_end(ws->conn, NULL);
	return 0;
}

WalStream *walstream_free(WalStream *ws)
{
	if (!ws)
		return NULL;
	if (ws->started)
		stop_thread(ws, 0); /* stop at once: written >= 0 */
	if (ws->seg_fd >= 0)
		close(ws->seg_fd);
	pgconn_free(ws->conn);
	pthread_mutex_destroy(&ws->lock);
	free(ws->dir);
	free(ws);
	return NULL;
}

int wal_parse_segment_size(const char *s, uint32_t *ret)
{
	char *end;
	unsigned long v = strtoul(s ? s : "", &end, 10);
	if (!strcmp(end, "MB"))
		v <<= 20;
	else if (!strcmp(end, "GB"))
		v <<= 30;
	else if (*end)
		return -EPROTO;
	if (v < (1 << 20) || v > (1UL << 30) || (v & (v - 1)))
		return -EPROTO;
	*ret = (uint32_t)v;
	return 0;
}

int instance_check_system(Repo *repo, const char *instance, const char *system_id, PgError *err)
{
	char *have = NULL;
	int r = catalog_instance_system_id(repo_catalog(repo), instance, &have);
	if (r == -ENOENT)
		return 0;
	if (r == 0 && strcmp(have, system_id) != 0) {
		snprintf(err->msg, sizeof(err->msg),
			 "instance \"%s\" holds backups of the cluster with system identifier %s, not %s;"
			 " use another --instance", instance, have, system_id);
		r = -EEXIST;
	}
	free(have);
	return r;
}
