#include "ingest/pgconn.h"

#include <libpq-fe.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

struct PgConn {
	PGconn *conn;
	bool hold;   /* notices are kept in held instead of printed */
	char *held;
};

static void _printf_(2, 3) set_err(PgError *err, const char *fmt, ...)
{
	va_list ap;
	if (!err)
		return;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
}

/* libpq messages: "FATAL:  x\nDETAIL: y\n" -> "x" (first line, no severity) */
static void set_err_text(PgError *err, const char *text)
{
	char line[512];
	const char *p = text ? text : "unknown error";
	size_t n;

	while (*p == ' ' || *p == '\n')
		p++;
	for (const char *sev = strstr(p, ":  "); sev && sev - p < 10; sev = NULL)
		p = sev + 3; /* "FATAL:  ", "ERROR:  " */
	n = strcspn(p, "\n");
	if (n >= sizeof(line))
		n = sizeof(line) - 1;
	memcpy(line, p, n);
	line[n] = '\0';
	/* "... failed: FATAL:  message" -> "... failed: message" */
	for (char *sev; (sev = strstr(line, "FATAL:  ")) || (sev = strstr(line, "ERROR:  "));)
		memmove(sev, sev + 8, strlen(sev + 8) + 1);
	set_err(err, "%s", line);
}

static void set_err_conn(PgError *err, PgConn *c)
{
	set_err_text(err, PQerrorMessage(c->conn));
}

/* As libpq's default (the message to stderr), unless held. */
static void notice_processor(void *arg, const char *message)
{
	PgConn *c = arg;
	char *v;
	if (!c->hold) {
		fputs(message, stderr);
		return;
	}
	if (asprintf(&v, "%s%s", c->held ? c->held : "", message) >= 0) {
		free(c->held);
		c->held = v;
	}
}

void pgconn_hold_notices(PgConn *c, bool hold)
{
	c->hold = hold;
	if (!hold && c->held)
		fputs(c->held, stderr);
	free(c->held);
	c->held = NULL;
}

int pgconn_connect(const char *conninfo, bool replication, PgConn **ret, PgError *err)
{
	/* conninfo is expanded in the dbname position; later keywords override it */
	const char *keys[] = {"dbname", "fallback_application_name", "replication", NULL};
	const char *vals[] = {conninfo, "pgbakfs", "true", NULL};
	PgConn *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	if (!replication)
		keys[2] = NULL;
	c->conn = PQconnectdbParams(keys, vals, 1);
	if (!c->conn) {
		free(c);
		return -ENOMEM;
	}
	if (PQstatus(c->conn) != CONNECTION_OK) {
		set_err_conn(err, c);
		pgconn_free(c);
		return -ECONNREFUSED;
	}
	PQsetNoticeProcessor(c->conn, notice_processor, c);
	*ret = c;
	return 0;
}

PgConn *pgconn_free(PgConn *c)
{
	if (!c)
		return NULL;
	PQfinish(c->conn);
	free(c->held); /* held notices go with the connection */
	free(c);
	return NULL;
}

int pgconn_server_version(PgConn *c) { return PQserverVersion(c->conn); }

void pgrows_clear(PgRows *r)
{
	for (int i = 0; r->v && i < r->n_rows * r->n_cols; i++)
		free(r->v[i]);
	free(r->v);
	*r = (PgRows){0};
}

const char *pgrows_get(const PgRows *r, int row, int col)
{
	if (row < 0 || row >= r->n_rows || col < 0 || col >= r->n_cols)
		return NULL;
	return r->v[row * r->n_cols + col];
}

static int rows_from_result(PGresult *res, PgRows *ret)
{
	PgRows r = {.n_rows = PQntuples(res), .n_cols = PQnfields(res)};
	size_t n = (size_t)r.n_rows * (size_t)r.n_cols;
	r.v = calloc(n ? n : 1, sizeof(char *));
	if (!r.v)
		return -ENOMEM;
	for (int i = 0; i < r.n_rows; i++)
		for (int j = 0; j < r.n_cols; j++) {
			if (PQgetisnull(res, i, j))
				continue;
			r.v[i * r.n_cols + j] = strdup(PQgetvalue(res, i, j));
			if (!r.v[i * r.n_cols + j]) {
				pgrows_clear(&r);
				return -ENOMEM;
			}
		}
	*ret = r;
	return 0;
}

int pgconn_query(PgConn *c, const char *sql, PgRows *ret, PgError *err)
{
	PGresult *res = PQexec(c->conn, sql);
	int r;
	ExecStatusType st = PQresultStatus(res);
	if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
		set_err_text(err, res ? PQresultErrorMessage(res) : PQerrorMessage(c->conn));
		PQclear(res);
		return -EIO;
	}
	r = ret ? rows_from_result(res, ret) : 0;
	PQclear(res);
	return r;
}

int pgconn_send(PgConn *c, const char *sql, PgError *err)
{
	if (!PQsendQuery(c->conn, sql)) {
		set_err_conn(err, c);
		return -EIO;
	}
	return 0;
}

int pgconn_next_result(PgConn *c, PgRows *rows, PgError *err)
{
	PGresult *res = PQgetResult(c->conn);
	int r;
	if (!res)
		return PGCONN_DONE;
	switch (PQresultStatus(res)) {
	case PGRES_TUPLES_OK:
	case PGRES_COMMAND_OK:
		r = rows ? rows_from_result(res, rows) : 0;
		PQclear(res);
		return r < 0 ? r : PGCONN_ROWS;
	case PGRES_COPY_OUT:
		PQclear(res);
		return PGCONN_COPY_OUT;
	case PGRES_COPY_BOTH:
		PQclear(res);
		return PGCONN_COPY_BOTH;
	case PGRES_COPY_IN:
		PQclear(res);
		return PGCONN_COPY_IN;
	default:
		set_err_text(err, PQresultErrorMessage(res));
		PQclear(res);
		return -EIO;
	}
}

int pgconn_copy_read(PgConn *c, bool wait, char **ret_buf, PgError *err)
{
	char *buf = NULL;
	int n = PQgetCopyData(c->conn, &buf, wait ? 0 : 1);
	if (n > 0) {
		*ret_buf = buf;
		return n;
	}
	if (n == 0)
		return -EAGAIN;
	if (n == -1)
		return 0;
	set_err_conn(err, c);
	return -EIO;
}

void pgconn_freemem(void *p)
{
	if (p)
		PQfreemem(p);
}

int pgconn_copy_write(PgConn *c, const void *buf, size_t len, PgError *err)
{
	if (PQputCopyData(c->conn, buf, (int)len) != 1 || PQflush(c->conn) != 0) {
		set_err_conn(err, c);
		return -EIO;
	}
	return 0;
}

int pgconn_copy_end(PgConn *c, PgError *err)
{
	if (PQputCopyEnd(c->conn, NULL) != 1 || PQflush(c->conn) != 0) {
		set_err_conn(err, c);
		return -EIO;
	}
	return 0;
}

int pgconn_wait_readable(PgConn *c, int timeout_ms, PgError *err)
{
	struct pollfd p = {.fd = PQsocket(c->conn), .events = POLLIN};
	int n = poll(&p, 1, timeout_ms);
	if (n < 0 && errno != EINTR) {
		set_err(err, "could not wait for the server: %s", strerror(errno));
		return -errno;
	}
	if (n > 0 && !PQconsumeInput(c->conn)) {
		set_err_conn(err, c);
		return -EIO;
	}
	return 0;
}

int pgconn_quote_literal(const char *s, char *buf, size_t len)
{
	size_t o = 0;
	if (len < 3)
		return -ENAMETOOLONG;
	buf[o++] = '\'';
	for (; *s; s++) {
		if (o + 3 >= len)
			return -ENAMETOOLONG;
		if (*s == '\'')
			buf[o++] = *s; /* standard quoting: backslashes are not special */
		buf[o++] = *s;
	}
	buf[o++] = '\'';
	buf[o] = '\0';
	return 0;
}

int pgconn_create_restore_point(PgConn *c, const char *name, char *ret_lsn, size_t len,
				PgError *err)
{
	const char *params[1] = {name};
	PGresult *res = PQexecParams(c->conn, "SELECT pg_create_restore_point($1)", 1, NULL,
				     params, NULL, NULL, 0);
	int r = 0;

	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		set_err_text(err, res ? PQresultErrorMessage(res) : PQerrorMessage(c->conn));
		r = -EIO;
	} else if (PQntuples(res) != 1 || PQnfields(res) != 1 || PQgetisnull(res, 0, 0)) {
		set_err(err, "pg_create_restore_point returned no LSN");
		r = -EIO;
	} else if ((size_t)snprintf(ret_lsn, len, "%s", PQgetvalue(res, 0, 0)) >= len) {
		set_err(err, "restore point LSN too long");
		r = -ENAMETOOLONG;
	}
	PQclear(res);
	return r;
}

/* ---- conninfo without secrets (what the catalog keeps as a snapshot's source) ---- */

static bool conninfo_is_secret(const PQconninfoOption *o)
{
	/* "*": a password; "D": a debug option; named too, whatever libpq says of them */
	return (o->dispchar && (strchr(o->dispchar, '*') || strchr(o->dispchar, 'D'))) ||
	       !strcmp(o->keyword, "password") || !strcmp(o->keyword, "sslpassword");
}

/* A dbname that is itself a connection string, as libpq's expand_dbname sees it. */
static bool conninfo_is_nested(const char *v)
{
	return strchr(v, '=') || !strncmp(v, "postgresql://", 13) || !strncmp(v, "postgres://", 11);
}

/* value as libpq's key=value parser reads it back: quoted when it must be */
static void conninfo_put_value(FILE *f, const char *v)
{
	if (*v && !strpbrk(v, " \t\n\r\f\v'\\")) {
		fputs(v, f);
		return;
	}
	fputc('\'', f);
	for (; *v; v++) {
		if (*v == '\'' || *v == '\\')
			fputc('\\', f);
		fputc(*v, f);
	}
	fputc('\'', f);
}

static int conninfo_redact_depth(const char *conninfo, int depth, char **ret, bool *ret_had_secret)
{
	PQconninfoOption *opts;
	char *errmsg = NULL, *buf = NULL;
	size_t len = 0;
	bool had_secret = false, first = true;
	FILE *f;
	int r = 0;

	opts = PQconninfoParse(conninfo, &errmsg);
	if (!opts) {
		r = errmsg ? -EINVAL : -ENOMEM;
		PQfreemem(errmsg); /* never shown: it may quote the conninfo */
		return r;
	}
	f = open_memstream(&buf, &len);
	if (!f) {
		PQconninfoFree(opts);
		return -ENOMEM;
	}
	for (const PQconninfoOption *o = opts; o->keyword && r == 0; o++) {
		_cleanup_free_ char *nested = NULL;
		const char *v = o->val;
		if (!v)
			continue;
		if (conninfo_is_secret(o)) {
			had_secret = true;
			continue;
		}
		if (!strcmp(o->keyword, "dbname") && depth == 0 && conninfo_is_nested(v)) {
			bool inner = false;
			r = conninfo_redact_depth(v, depth + 1, &nested, &inner);
			if (r == -EINVAL) { /* libpq would refuse it too: keep nothing of it */
				had_secret = true;
				r = 0;
				continue;
			}
			had_secret |= inner;
			v = nested;
		}
		if (r == 0) {
			fprintf(f, "%s%s=", first ? "" : " ", o->keyword);
			conninfo_put_value(f, v);
			first = false;
		}
	}
	PQconninfoFree(opts);
	if (fclose(f) != 0 && r == 0)
		r = -ENOMEM;
	if (r < 0) {
		free(buf);
		return r;
	}
	*ret = buf;
	if (ret_had_secret)
		*ret_had_secret = had_secret;
	return 0;
}

int pgconn_conninfo_redact(const char *conninfo, char **ret, bool *ret_had_secret)
{
	return conninfo_redact_depth(conninfo, 0, ret, ret_had_secret);
}
