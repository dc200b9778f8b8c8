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

static bool valid_lsn(const char *s)
{
	unsigned hi, lo;
	int n = 0;
	return sscanf(s, "%8X/%8X%n", &hi, &lo, &n) == 2 && s[n] == '\0';
}

static bool all_digits(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!isdigit((unsigned char)*s))
			return false;
	return true;
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
	if (!*arg || (k == 1 && !valid_lsn(arg)) || (k == 2 && !all_digits(arg)))
		*ret_exit = cli_usage(cmd, "invalid --target-%s \"%s\"", kinds[k], arg);
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

int recovery_conf(const RecoveryTarget *t, const char *repo, char **ret)
{
	char exe[PATH_MAX];
	char *cmd = NULL, *out = NULL;
	size_t cmd_len = 0, out_len = 0;
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	FILE *f;

	if (n < 0)
		return -errno;
	exe[n] = 0;
	/* restore_command = '<pgbakfs> wal-fetch %f %p --repo <repo>' */
	f = open_memstream(&cmd, &cmd_len);
	if (!f)
		return -ENOMEM;
	shell_quote(f, exe);
	fputs(" wal-fetch %f %p --repo ", f);
	shell_quote(f, repo);
	/* the cache, config, CA bundle and passphrase file this restore used: the
	 * server's restore_command needs the same (credentials come from its environment) */
	const char *names[4];
	char *values[4];
	size_t n_opts = cli_common_options(names, values);
	for (size_t i = 0; i < n_opts; i++) {
		fprintf(f, " %s ", names[i]);
		shell_quote(f, values[i]);
		free(values[i]);
	}
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
	if (geteuid() == 0 && fchown(fd, owner->st_uid, owner->st_gid) < 0)
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
