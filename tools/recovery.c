#include "tools/recovery.h"

#include "common/util.h"
#include "tools/cli.h"

#include <ctype.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static const char *const kinds[] = {"time", "lsn", "xid", "name"};

/* PostgreSQL's pg_lsn input: X/Y, each 1 to 8 hex digits. */
static bool valid_lsn(const char *s)
{
	size_t hi = strspn(s, "0123456789abcdefABCDEF");
	if (hi < 1 || hi > 8 || s[hi] != '/')
		return false;
	s += hi + 1;
	size_t lo = strspn(s, "0123456789abcdefABCDEF");
	return lo >= 1 && lo <= 8 && s[lo] == '\0';
}

/* A transaction id: decimal, at most 2^64-1 (recovery_target_xid takes epoch-qualified ids). */
static bool valid_xid(const char *s)
{
	if (!*s || strspn(s, "0123456789") != strlen(s))
		return false;
	errno = 0;
	(void)strtoull(s, NULL, 10);
	return errno == 0;
}

/* Exactly n decimal digits at *p. */
static bool take_digits(const char **p, int n, int *ret)
{
	int v = 0;
	for (int i = 0; i < n; i++, (*p)++) {
		if (!isdigit((unsigned char)**p))
			return false;
		v = v * 10 + (**p - '0');
	}
	*ret = v;
	return true;
}

static bool take_char(const char **p, char c)
{
	if (**p != c)
		return false;
	(*p)++;
	return true;
}

static int days_in_month(int y, int m)
{
	static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	return m == 2 && leap ? 29 : days[m - 1];
}

/* A zone after a time: Z, +HH, +HH:MM, +HHMM (or -), or a name such as UTC or Europe/Berlin. */
static bool valid_zone(const char *p)
{
	int zh, zm = 0;
	if (!strcmp(p, "Z"))
		return true;
	if (*p == '+' || *p == '-') {
		p++;
		if (!take_digits(&p, 2, &zh))
			return false;
		if (*p && (take_char(&p, ':'), !take_digits(&p, 2, &zm)))
			return false;
		return !*p && zh <= 15 && zm <= 59;
	}
	if (!isalpha((unsigned char)*p))
		return false;
	return strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_/+-") ==
	       strlen(p);
}

/*
 * The timestamptz forms recovery_target_time is given in practice (ISO 8601):
 * YYYY-MM-DD[( |T)HH:MM[:SS[.FRACTION]]][[ ]ZONE]. PostgreSQL takes more
 * spellings; these are the ones we can check here, so a typo fails now rather
 * than when the server starts recovering.
 */
static bool valid_time(const char *s)
{
	const char *p = s;
	int y, mo, d, h, mi, sec = 0;
	if (!take_digits(&p, 4, &y) || !take_char(&p, '-') || !take_digits(&p, 2, &mo) ||
	    !take_char(&p, '-') || !take_digits(&p, 2, &d))
		return false;
	if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo))
		return false;
	if (!*p)
		return true;
	if (!take_char(&p, ' ') && !take_char(&p, 'T'))
		return false;
	if (!take_digits(&p, 2, &h) || !take_char(&p, ':') || !take_digits(&p, 2, &mi))
		return false;
	if (take_char(&p, ':')) {
		if (!take_digits(&p, 2, &sec))
			return false;
		if (take_char(&p, '.')) {
			if (!isdigit((unsigned char)*p))
				return false;
			p += strspn(p, "0123456789");
		}
	}
	if (h > 24 || mi > 59 || sec > 60 || (h == 24 && (mi || sec)))
		return false;
	if (!*p)
		return true;
	take_char(&p, ' ');
	return valid_zone(p);
}

bool recovery_option(const char *cmd, int c, const char *arg, RecoveryTarget *t, int *ret_exit)
{
	int k = c - RECOVERY_OPT_BASE;
	*ret_exit = EXIT_OK;
	if (k < 0 || k > 4)
		return false;
	if (k == 4) {
		if (strcmp(arg, "promote") && strcmp(arg, "pause") && strcmp(arg, "shutdown"))
			*ret_exit = cli_usage(cmd, "invalid --target-action \"%s\" (promote, pause or "
					      "shutdown)", arg);
		t->action = arg;
		return true;
	}
	if (t->kind) {
		*ret_exit = cli_usage(cmd, "only one recovery target may be given");
		return true;
	}
	if (k == 0 && !valid_time(arg))
		*ret_exit = cli_usage(cmd, "invalid --target-time \"%s\" (expected a timestamp such as "
				      "\"2025-01-31 14:05:00+00\" or 2025-01-31T14:05:00.5Z; "
				      "without a zone, the server's time zone)", arg);
	else if (k == 1 && !valid_lsn(arg))
		*ret_exit = cli_usage(cmd, "invalid --target-lsn \"%s\" (expected an LSN such as "
				      "\"0/1A2B3C4\": X/Y in hexadecimal)", arg);
	else if (k == 2 && !valid_xid(arg))
		*ret_exit = cli_usage(cmd, "invalid --target-xid \"%s\" (expected a transaction id, "
				      "a number)", arg);
	else if (!*arg)
		*ret_exit = cli_usage(cmd, "invalid --target-%s \"\" (empty)", kinds[k]);
	t->kind = kinds[k];
	t->value = arg;
	return true;
}

int recovery_check(const char *cmd, const RecoveryTarget *t)
{
	if (t->action && !t->kind)
		return cli_usage(cmd, "--target-action needs a recovery target");
	return EXIT_OK;
}

/* Append s to a PostgreSQL configuration string literal (quotes doubled). */
static void conf_quote(FILE *f, const char *s)
{
	fputc('\'', f);
	for (; *s; s++) {
		if (*s == '\'')
			fputc('\'', f);
		fputc(*s, f);
	}
	fputc('\'', f);
}

/* Append s quoted for the shell that runs restore_command. */
static void shell_quote(FILE *f, const char *s)
{
	fputc('\'', f);
	for (; *s; s++) {
		if (*s == '\'')
			fputs("'\\''", f);
		else
			fputc(*s, f);
	}
	fputc('\'', f);
}

static void add_option(FILE *f, const char *name, const char *value)
{
	if (!value)
		return;
	fprintf(f, " %s ", name);
	shell_quote(f, value);
}

/*
 * What the server's wal-fetch needs besides --repo: the cache, config, CA
 * bundle and passphrase file (fetch, else this command line's: a passphrase
 * or S3 keys given only in the environment must be in the server's
 * environment too), and for a bucket, --prefetch.
 */
static void add_fetch_options(FILE *f, const char *repo, const RecoveryFetch *fetch)
{
	if (fetch) {
		add_option(f, "--cache-dir", fetch->cache_dir);
		add_option(f, "--config", fetch->config);
		add_option(f, "--ca-file", fetch->ca_file);
		add_option(f, "--passphrase-file", fetch->passphrase_file);
	} else {
		const char *names[4];
		char *values[4];
		size_t n_opts = cli_common_options(names, values);
		for (size_t i = 0; i < n_opts; i++) {
			add_option(f, names[i], values[i]);
			free(values[i]);
		}
	}
	/* a bucket: fetch the next segments while PostgreSQL replays one (design.md,
	 * "Working ahead of PostgreSQL"); a directory is read at disk speed */
	if (strncmp(repo, "s3://", 5) == 0)
		fprintf(f, " --prefetch %d", RECOVERY_PREFETCH);
}

int recovery_conf(const RecoveryTarget *t, const char *repo, const RecoveryFetch *fetch,
		  char **ret)
{
	char exe[PATH_MAX];
	char *cmd = NULL, *out = NULL;
	size_t cmd_len = 0, out_len = 0;
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	FILE *f;

	if (n < 0)
		return -errno;
	exe[n] = 0;
	/*
	 * restore_command = '<pgbakfs> wal-fetch %f %p --repo <repo> [options]':
	 * one command, no "|| exit 1" or the like around it, so the shell
	 * PostgreSQL runs it with passes wal-fetch's exit status through unchanged
	 */
	f = open_memstream(&cmd, &cmd_len);
	if (!f)
		return -ENOMEM;
	shell_quote(f, exe);
	fputs(" wal-fetch %f %p --repo ", f);
	shell_quote(f, repo);
	add_fetch_options(f, repo, fetch);
	if (fclose(f) != 0) {
		free(cmd);
		return -ENOMEM;
	}
	f = open_memstream(&out, &out_len);
	if (!f) {
		free(cmd);
		return -ENOMEM;
	}
	fputs("\n# added by pgbakfs: recover with the archived WAL\nrestore_command = ", f);
	conf_quote(f, cmd);
	fputc('\n', f);
	if (t->kind) {
		fprintf(f, "recovery_target_%s = ", t->kind);
		conf_quote(f, t->value);
		fputc('\n', f);
	}
	if (t->action)
		fprintf(f, "recovery_target_action = '%s'\n", t->action);
	free(cmd);
	if (fclose(f) != 0) {
		free(out);
		return -ENOMEM;
	}
	*ret = out;
	return 0;
}

/* Append len bytes to path (created with the data directory's owner if missing). */
static int append_file(const char *path, const char *buf, size_t len, const struct stat *owner)
{
	_cleanup_close_ int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (geteuid() == 0 && (st.st_uid != owner->st_uid || st.st_gid != owner->st_gid) &&
	    fchown(fd, owner->st_uid, owner->st_gid) < 0)
		return -errno;
	if (write(fd, buf, len) != (ssize_t)len)
		return errno ? -errno : -EIO;
	return fsync(fd) < 0 ? -errno : 0;
}

int recovery_write(const char *datadir, const char *conf)
{
	char path[PATH_MAX];
	struct stat st;
	int r;
	if (stat(datadir, &st) < 0)
		return -errno;
	snprintf(path, sizeof(path), "%s/postgresql.auto.conf", datadir);
	r = append_file(path, conf, strlen(conf), &st);
	if (r == 0) {
		snprintf(path, sizeof(path), "%s/recovery.signal", datadir);
		r = append_file(path, "", 0, &st);
	}
	return r;
}
