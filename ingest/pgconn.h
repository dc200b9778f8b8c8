/*
 * The libpq boundary: every libpq call of pgbakfs is in pgconn.c. Results
 * come back as strings; errors as -errno plus one line of text (the
 * server's or libpq's message, first line only) in a PgError.
 * A PgConn is for one thread.
 */
#pragma once

#include "common/common.h"

typedef struct PgError {
	char msg[512];
} PgError;

typedef struct PgConn PgConn;

typedef struct PgRows {
	int n_rows, n_cols;
	char **v; /* n_rows * n_cols values, NULL for SQL NULL */
} PgRows;

typedef enum {
	PGCONN_ROWS = 1, /* a row set (possibly empty) or command completion */
	PGCONN_COPY_OUT,
	PGCONN_COPY_BOTH,
	PGCONN_DONE, /* no more results for the command */
	PGCONN_COPY_IN, /* the server waits for copy data (UPLOAD_MANIFEST) */
} PgResultKind;

/* replication: a physical replication connection ("replication=true"). */
int pgconn_connect(const char *conninfo, bool replication, PgConn **ret, PgError *err);
PgConn *pgconn_free(PgConn *c);
int pgconn_server_version(PgConn *c);

void pgrows_clear(PgRows *r);
const char *pgrows_get(const PgRows *r, int row, int col);

/* One command, one row set (or none). */
int pgconn_query(PgConn *c, const char *sql, PgRows *ret, PgError *err);
/* A command whose results are read one by one with pgconn_next_result(). */
int pgconn_send(PgConn *c, const char *sql, PgError *err);
int pgconn_next_result(PgConn *c, PgRows *rows, PgError *err);
/*
 * Copy data of a COPY_OUT/COPY_BOTH stream: returns the length (> 0) and a
 * buffer to free with pgconn_freemem(), 0 at the end of the copy, -EAGAIN
 * when nothing is there and !wait, or -errno.
 */
int pgconn_copy_read(PgConn *c, bool wait, char **ret_buf, PgError *err);
void pgconn_freemem(void *p);
int pgconn_copy_write(PgConn *c, const void *buf, size_t len, PgError *err);
int pgconn_copy_end(PgConn *c, PgError *err);
/*
 * The server's notices (WARNING, NOTICE) go to stderr as they come, as
 * libpq's default does. hold: keep them instead, until hold is turned off
 * (then they are printed) or the connection is freed (then they are
 * dropped): for a command that may fail into a fallback whose notices
 * would only confuse.
 */
void pgconn_hold_notices(PgConn *c, bool hold);
/* Wait up to timeout_ms for the socket to become readable (after -EAGAIN). */
int pgconn_wait_readable(PgConn *c, int timeout_ms, PgError *err);

/*
 * SELECT pg_create_restore_point(name): the restore point's LSN ("0/3000090")
 * into ret_lsn (len bytes). -EIO with the server's message in err on failure
 * (not a superuser, recovery in progress, wal_level minimal, name too long).
 */
int pgconn_create_restore_point(PgConn *c, const char *name, char *ret_lsn, size_t len,
				PgError *err);

/* Quote a string literal for SQL / replication commands into buf. */
int pgconn_quote_literal(const char *s, char *buf, size_t len);

/*
 * conninfo (key=value string or postgres:// URI) without its secrets, as
 * key=value pairs (values quoted as libpq reads them) into *ret (malloc'd):
 * every option libpq marks as a password ("password", "sslpassword") or a
 * debug option ("replication") is dropped, also inside a dbname that is
 * itself a connection string. *ret_had_secret (optional) tells whether a
 * dropped option had a value. -EINVAL when libpq cannot parse conninfo,
 * -ENOMEM. Thread-safe.
 */
int pgconn_conninfo_redact(const char *conninfo, char **ret, bool *ret_had_secret);
