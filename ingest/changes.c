#include "ingest/changes.h"
#include "common/log.h"
#include "common/util.h"
#include "ingest/walstream.h"
#include "store/wal.h"

#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* How long a backup waits for the server's summarizer to reach its start LSN. */
#define SERVER_WAIT_MS 30000

static void note(ChangesResult *res, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(ChangesResult *res, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(res->note, sizeof(res->note), fmt, ap);
	va_end(ap);
}

/* ---- the stored form ---- */

static int summarize(const char *name, const void *buf, size_t len, WalSegSummary **ret)
{
	WalSegmentHeader hdr;
	char why[256];
	WalName wn;
	int r = wal_name_parse(name, &wn);

	if (r < 0 || wn.kind != WAL_KIND_SEGMENT)
		return -EINVAL;
	r = wal_file_check(name, buf, len, &hdr, why, sizeof(why));
	if (r < 0)
		return r;
	return walsum_segment(buf, len, wal_name_segno(&wn, hdr.seg_size) * hdr.seg_size,
			      hdr.seg_size, wn.timeline, 0, UINT64_MAX, ret);
}

int changes_summary_build(const char *name, const void *buf, size_t len, uint8_t **ret,
			  size_t *ret_len)
{
	WalSegSummary *s = NULL;
	int r = summarize(name, buf, len, &s);
	if (r == 0)
		r = walsum_serialize(s, ret, ret_len);
	walsum_free(s);
	return r;
}

/* A summary of the system, timeline and segment it must be of. */
static int summary_check(const WalSegSummary *s, uint64_t system_id, uint32_t tli,
			 uint64_t seg_start, char *why, size_t why_len)
{
	WalSegInfo info;
	walsum_info(s, &info);
	if (info.system_id != system_id) {
		snprintf(why, why_len, "of system %llu, not %llu",
			 (unsigned long long)info.system_id, (unsigned long long)system_id);
		return -EBADMSG;
	}
	if (info.tli != tli) {
		snprintf(why, why_len, "of timeline %u", info.tli);
		return -EBADMSG;
	}
	if (info.seg_start != seg_start) {
		char at[32];
		lsn_format(info.seg_start, at);
		snprintf(why, why_len, "of the segment at %s", at);
		return -EBADMSG;
	}
	return 0;
}

static int summary_unpack(const uint8_t *buf, size_t len, uint64_t system_id, uint32_t tli,
			  uint64_t seg_start, WalSegSummary **ret, char *why, size_t why_len)
{
	int r = walsum_parse(buf, len, ret);
	if (r < 0) {
		snprintf(why, why_len, "%s", r == -EPROTONOSUPPORT ? "of a newer format" : "damaged");
		return r;
	}
	r = summary_check(*ret, system_id, tli, seg_start, why, why_len);
	if (r < 0)
		*ret = walsum_free(*ret);
	return r;
}

/* ---- timelines ---- */

/* One timeline of the history that leads to the new backup's: LSNs [begin, end). */
typedef struct TliSpan {
	uint32_t tli;
	uint64_t begin, end;
} TliSpan;

typedef struct Plan {
	TliSpan *spans; /* ascending */
	size_t n;
} Plan;

/* A history file's text: "PARENT_TLI\tSWITCHPOINT\treason" lines, oldest first. */
static int plan_parse_history(Plan *p, const char *text, size_t len, uint32_t tli)
{
	uint64_t begin = 0;
	const char *s = text, *end = text + len;
	while (s < end) {
		const char *nl = memchr(s, '\n', (size_t)(end - s));
		size_t n = nl ? (size_t)(nl - s) : (size_t)(end - s);
		char line[256], lsn[64];
		unsigned parent;
		uint64_t sw;
		snprintf(line, sizeof(line), "%.*s", (int)MIN(n, sizeof(line) - 1), s);
		s += n + 1;
		if (line[0] == '#' || strspn(line, " \t\r") == strlen(line))
			continue;
		if (sscanf(line, "%u %63s", &parent, lsn) != 2 || lsn_parse(lsn, &sw) < 0 ||
		    sw < begin)
			return -EBADMSG;
		TliSpan *v = realloc(p->spans, (p->n + 1) * sizeof(*v));
		if (!v)
			return -ENOMEM;
		p->spans = v;
		v[p->n++] = (TliSpan){.tli = parent, .begin = begin, .end = sw};
		begin = sw;
	}
	TliSpan *v = realloc(p->spans, (p->n + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	p->spans = v;
	v[p->n++] = (TliSpan){.tli = tli, .begin = begin, .end = UINT64_MAX};
	return 0;
}

static int read_file(const char *path, uint64_t max, void **ret, size_t *ret_len)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > max)
		return -EINVAL;
	void *buf = malloc(st.st_size ? (size_t)st.st_size : 1);
	if (!buf)
		return -ENOMEM;
	ssize_t n = pread_full(fd, buf, (size_t)st.st_size, 0);
	if (n != st.st_size) {
		free(buf);
		return n < 0 ? (int)n : -EIO;
	}
	*ret = buf;
	*ret_len = (size_t)n;
	return 0;
}

/* The history from the parent's timeline to the new backup's: from pg_wal or the archive. */
static int plan_build(const ChangesRequest *rq, Plan *p, ChangesResult *res)
{
	char name[32], path[PATH_MAX];
	_cleanup_free_ void *buf = NULL;
	size_t len = 0;
	int r = -ENOENT;

	if (rq->from_tli == rq->to_tli) {
		p->spans = calloc(1, sizeof(TliSpan));
		if (!p->spans)
			return -ENOMEM;
		p->spans[0] = (TliSpan){.tli = rq->to_tli, .begin = 0, .end = UINT64_MAX};
		p->n = 1;
		return 0;
	}
	snprintf(name, sizeof(name), "%08X.history", rq->to_tli);
	if (rq->pgdata) {
		snprintf(path, sizeof(path), "%s/pg_wal/%s", rq->pgdata, name);
		r = read_file(path, 1024 * 1024, &buf, &len);
	}
	if (r < 0)
		r = wal_fetch(rq->repo, name, &buf, &len);
	if (r < 0) {
		note(res, "the history of timeline %u is neither in pg_wal nor archived", rq->to_tli);
		return 1;
	}
	r = plan_parse_history(p, buf, len, rq->to_tli);
	if (r == -EBADMSG) {
		note(res, "timeline history file %s does not parse", name);
		return 1;
	}
	if (r < 0)
		return r;
	for (size_t i = 0; i < p->n; i++)
		if (p->spans[i].tli == rq->from_tli && rq->from >= p->spans[i].begin &&
		    rq->from < p->spans[i].end)
			return 0;
	note(res, "the parent's start (timeline %u) is not on the history of timeline %u",
	     rq->from_tli, rq->to_tli);
	return 1;
}

/* A segment holds records of the newest timeline that begins before it ends. */
static uint32_t plan_tli(const Plan *p, uint64_t seg_end)
{
	uint32_t tli = p->spans[0].tli;
	for (size_t i = 0; i < p->n; i++)
		if (p->spans[i].begin < seg_end)
			tli = p->spans[i].tli;
	return tli;
}

/* ---- pgbakfs's own summaries ---- */

static int summarize_buffer(const ChangesRequest *rq, const char *name, const void *buf,
			    size_t len, WalSegSummary **ret, char *why, size_t why_len)
{
	WalName wn;
	int r = wal_name_parse(name, &wn);
	if (r == 0)
		r = summarize(name, buf, len, ret);
	if (r == -EBADMSG)
		snprintf(why, why_len, "not a WAL segment of this name");
	if (r < 0)
		return r;
	r = summary_check(*ret, rq->system_id, wn.timeline,
			  wal_name_segno(&wn, rq->seg_size) * rq->seg_size, why, why_len);
	if (r < 0)
		*ret = walsum_free(*ret);
	return r;
}

/* One segment's summary from the best source there is: 1 when there is none. */
static int segment_summary(const ChangesRequest *rq, uint32_t tli, uint64_t segno,
			   WalSegSummary **ret, ChangesResult *res)
{
	char name[25], path[PATH_MAX], why[256] = "";
	_cleanup_free_ void *buf = NULL;
	_cleanup_free_ uint8_t *packed = NULL;
	size_t len = 0, packed_len = 0;
	int r;

	wal_segno_to_name(tli, segno, rq->seg_size, name);
	/* 1. the archived summary */
	r = wal_summary_get(rq->repo, name, &buf, &len);
	if (r == 0) {
		r = summary_unpack(buf, len, rq->system_id, tli, segno * rq->seg_size, ret, why,
				   sizeof(why));
		if (r == 0) {
			res->from_archive++;
			return 0;
		}
	} else if (r == -EBADMSG || r == -EPROTONOSUPPORT) {
		snprintf(why, sizeof(why), "%s", r == -EBADMSG ? "damaged" : "of a newer format");
	}
	if (why[0]) {
		log_warning("the summary of WAL segment %s is %s: summarizing the segment again",
			    name, why);
	} else if (r < 0 && r != -ENOENT) {
		log_warning("could not read the summary of WAL segment %s: %s", name, strerror(-r));
	}
	free(buf);
	buf = NULL;
	/* 2. the segment in pg_wal (the newest ones are not archived yet) */
	if (rq->pgdata) {
		snprintf(path, sizeof(path), "%s/pg_wal/%s", rq->pgdata, name);
		r = read_file(path, PGBAKFS_WAL_FILE_MAX, &buf, &len);
		if (r == 0) {
			r = summarize_buffer(rq, name, buf, len, ret, why, sizeof(why));
			if (r == 0) {
				res->from_pg_wal++;
				return 0;
			}
			if (r != -EBADMSG)
				return r;
		}
		free(buf);
		buf = NULL;
	}
	/* 3. the archived segment (archived by an older pgbakfs): summarized, and kept */
	r = wal_fetch(rq->repo, name, &buf, &len);
	if (r == -ENOENT) {
		note(res, "WAL segment %s is neither archived nor in pg_wal", name);
		return 1;
	}
	if (r < 0) {
		note(res, "archived WAL segment %s cannot be read: %s", name, strerror(-r));
		return 1;
	}
	r = summarize_buffer(rq, name, buf, len, ret, why, sizeof(why));
	if (r == -EBADMSG) {
		note(res, "archived WAL segment %s cannot be summarized: %s", name, why);
		return 1;
	}
	if (r < 0)
		return r;
	res->backfilled++;
	r = walsum_serialize(*ret, &packed, &packed_len);
	if (r == 0)
		r = wal_summary_put(rq->repo, name, packed, packed_len);
	if (r < 0)
		log_warning("could not store the summary of WAL segment %s: %s", name, strerror(-r));
	return 0;
}

static int collect_own(const ChangesRequest *rq, const Plan *p, ChangesResult *res)
{
	uint64_t first = rq->from / rq->seg_size, last = (rq->to - 1) / rq->seg_size;
	char why[256] = "";
	WalBlockSet *b = NULL;
	int r = walblocks_new(&b);

	for (uint64_t s = first; r == 0 && s <= last; s++) {
		WalSegSummary *sum = NULL;
		r = segment_summary(rq, plan_tli(p, (s + 1) * rq->seg_size), s, &sum, res);
		if (r == 0) {
			r = walblocks_add(b, sum);
			res->segments++;
		}
		sum = walsum_free(sum);
	}
	if (r == 0 && !walblocks_covers(b, rq->from, rq->to, why, sizeof(why))) {
		note(res, "the WAL summaries do not cover the range: %s", why);
		r = 1;
	}
	if (r != 0) {
		walblocks_free(b);
		return r;
	}
	res->blocks = b;
	return 0;
}

/* ---- the server's summaries (PostgreSQL 17+) ---- */

static int sql_value(PgConn *c, const char *sql, char *out, size_t len)
{
	PgRows rows = {0};
	PgError err = {0};
	int r = pgconn_query(c, sql, &rows, &err);
	if (r == 0) {
		const char *v = pgrows_get(&rows, 0, 0);
		snprintf(out, len, "%s", v ? v : "");
	}
	pgrows_clear(&rows);
	return r;
}

/* Wait (bounded) until the summarizer has passed to: 1 if it does not. */
static int server_wait(const ChangesRequest *rq, ChangesResult *res)
{
	char v[64], fmt[32];
	uint64_t lsn;
	lsn_format(rq->to, fmt);
	for (int waited = 0;; waited += 200) {
		int r = sql_value(rq->conn, "SELECT summarized_lsn FROM pg_get_wal_summarizer_state()",
				  v, sizeof(v));
		if (r < 0)
			return r;
		if (lsn_parse(v, &lsn) == 0 && lsn >= rq->to)
			return 0;
		if (waited >= SERVER_WAIT_MS) {
			note(res, "the server's WAL summarizer has not reached %s", fmt);
			return 1;
		}
		struct timespec ts = {0, 200 * 1000000};
		nanosleep(&ts, NULL);
	}
}

static int server_add_contents(const ChangesRequest *rq, WalBlockSet *b, const char *tli,
			       const char *start, const char *end)
{
	char sql[256];
	PgRows rows = {0};
	PgError err = {0};
	_cleanup_free_ WalBlockRef *v = NULL;
	size_t n = 0;
	snprintf(sql, sizeof(sql),
		 "SELECT relfilenode, reltablespace, reldatabase, relforknumber, relblocknumber,"
		 " is_limit_block FROM pg_wal_summary_contents(%s, '%s', '%s')", tli, start, end);
	int r = pgconn_query(rq->conn, sql, &rows, &err);
	while (r == 0 && pgrows_get(&rows, (int)n, 0))
		n++;
	if (r == 0 && n && !(v = malloc(n * sizeof(*v))))
		r = -ENOMEM;
	for (size_t i = 0; r == 0 && i < n; i++) {
		const char *lim = pgrows_get(&rows, (int)i, 5);
		v[i] = (WalBlockRef){
			.rf = {.rel = (uint32_t)strtoul(pgrows_get(&rows, (int)i, 0), NULL, 10),
			       .spc = (uint32_t)strtoul(pgrows_get(&rows, (int)i, 1), NULL, 10),
			       .db = (uint32_t)strtoul(pgrows_get(&rows, (int)i, 2), NULL, 10),
			       .fork = (uint8_t)strtoul(pgrows_get(&rows, (int)i, 3), NULL, 10)},
			.block = (uint32_t)strtoul(pgrows_get(&rows, (int)i, 4), NULL, 10),
			.is_limit = lim && lim[0] == 't'};
	}
	pgrows_clear(&rows);
	if (r == 0)
		r = walblocks_add_refs(b, v, n);
	return r;
}

/* 1 when the server has no summaries for the range (res->note says why). */
static int collect_server(const ChangesRequest *rq, const Plan *p, ChangesResult *res)
{
	char v[64], sql[256], from[32], to[32];
	PgRows rows = {0};
	PgError err = {0};
	WalBlockSet *b = NULL;
	uint64_t covered;
	int r;

	if (!rq->conn || pgconn_server_version(rq->conn) < 170000)
		return 1;
	r = sql_value(rq->conn, "SHOW summarize_wal", v, sizeof(v));
	if (r < 0 || strcmp(v, "on") != 0)
		return r < 0 ? r : 1;
	r = server_wait(rq, res);
	if (r != 0)
		return r;
	lsn_format(rq->from, from);
	lsn_format(rq->to, to);
	snprintf(sql, sizeof(sql),
		 "SELECT tli, start_lsn, end_lsn FROM pg_available_wal_summaries()"
		 " WHERE end_lsn > '%s' AND start_lsn < '%s' ORDER BY start_lsn, end_lsn", from, to);
	r = pgconn_query(rq->conn, sql, &rows, &err);
	if (r == 0)
		r = walblocks_new(&b);
	covered = rq->from;
	for (int i = 0; r == 0 && pgrows_get(&rows, i, 0); i++) {
		uint64_t s, e;
		uint32_t tli = (uint32_t)strtoul(pgrows_get(&rows, i, 0), NULL, 10);
		if (lsn_parse(pgrows_get(&rows, i, 1), &s) < 0 ||
		    lsn_parse(pgrows_get(&rows, i, 2), &e) < 0) {
			r = -EPROTO;
			break;
		}
		/* summaries of other timelines' branches, or ones already passed, add nothing */
		if (e <= covered || tli != plan_tli(p, e))
			continue;
		if (s > covered)
			break; /* a hole */
		r = server_add_contents(rq, b, pgrows_get(&rows, i, 0), pgrows_get(&rows, i, 1),
					pgrows_get(&rows, i, 2));
		covered = e;
	}
	pgrows_clear(&rows);
	if (r == 0 && covered < rq->to) {
		char at[32];
		lsn_format(covered, at);
		note(res, "the server's WAL summaries do not cover %s to %s (they stop at %s)", from,
		     to, at);
		r = 1;
	}
	if (r != 0) {
		walblocks_free(b);
		return r;
	}
	res->blocks = b;
	res->server = true;
	return 0;
}

/* ---- entry ---- */

int changes_collect(const ChangesRequest *rq, ChangesResult *res)
{
	Plan p = {0};
	char server_note[512] = "";
	int r;

	*res = (ChangesResult){0};
	if (!wal_seg_size_valid(rq->seg_size))
		return -EINVAL;
	r = plan_build(rq, &p, res);
	if (r == 0 && rq->to < rq->from) {
		note(res, "the parent starts after this backup");
		r = 1;
	}
	if (r == 0) {
		r = collect_server(rq, &p, res);
		if (r == 1) {
			snprintf(server_note, sizeof(server_note), "%s", res->note);
			res->note[0] = '\0';
			r = collect_own(rq, &p, res);
		}
	}
	free(p.spans);
	if (r < 0) {
		changes_result_clear(res);
		return r;
	}
	if (r == 0 && res->server)
		note(res, "blocks from the server's WAL summaries");
	else if (r == 0)
		note(res, "blocks from WAL summaries: %llu segments (%llu archived summaries, %llu "
			  "from pg_wal, %llu summarized now)",
		     (unsigned long long)res->segments, (unsigned long long)res->from_archive,
		     (unsigned long long)res->from_pg_wal, (unsigned long long)res->backfilled);
	else if (server_note[0] && !res->note[0])
		snprintf(res->note, sizeof(res->note), "%s", server_note);
	return 0;
}

void changes_result_clear(ChangesResult *res)
{
	res->blocks = walblocks_free(res->blocks);
}

int changes_range(Repo *repo, uint32_t tli, uint64_t from, uint64_t to, WalBlockSet **ret,
		  char *why, size_t why_len)
{
	WalBlockSet *b = NULL;
	WalTimeline *tl = NULL;
	size_t n_tl = 0;
	uint32_t seg_size = PGBAKFS_WAL_DEFAULT_SEG_SIZE;
	int r = wal_timelines(repo, &tl, &n_tl);

	/* the archive knows the segment size of the timeline */
	for (size_t i = 0; r == 0 && i < n_tl; i++)
		if (tl[i].timeline == tli)
			seg_size = tl[i].seg_size;
	wal_timelines_free(tl, n_tl);
	if (r == 0)
		r = walblocks_new(&b);
	for (uint64_t lsn = from; r == 0 && (lsn < to || lsn == from);) {
		_cleanup_free_ void *buf = NULL;
		WalSegSummary *s = NULL;
		WalSegmentHeader hdr;
		size_t len = 0;
		char name[25];
		wal_segno_to_name(tli, lsn / seg_size, seg_size, name);
		r = wal_fetch(repo, name, &buf, &len);
		if (r < 0) {
			snprintf(why, why_len, "WAL segment %s: %s", name,
				 r == -ENOENT ? "not archived" : strerror(-r));
			break;
		}
		r = wal_file_check(name, buf, len, &hdr, why, why_len);
		if (r < 0)
			break;
		r = walsum_segment(buf, len, lsn / seg_size * seg_size, seg_size, tli, from, to, &s);
		if (r == 0)
			r = walblocks_add(b, s);
		walsum_free(s);
		lsn = (lsn / seg_size + 1) * seg_size;
	}
	if (r == 0 && !walblocks_covers(b, from, to, why, why_len))
		r = -ENODATA;
	if (r < 0) {
		walblocks_free(b);
		return r;
	}
	*ret = b;
	return 0;
}
