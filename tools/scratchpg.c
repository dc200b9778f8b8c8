#include "tools/scratchpg.h"

#include "common/util.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#define SCRATCH_PORT 5432 /* the socket lives in a private directory: no clash */

static void set_error(ScratchPg *pg, const char *fmt, ...) _printf_(2, 3);
static void set_error(ScratchPg *pg, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(pg->error, sizeof(pg->error), fmt, ap);
	va_end(ap);
}

extern char **environ;

/* Variables that may hold a secret: never in the server's environment. */
static bool env_is_secret(const char *entry)
{
	static const char *const names[] = {"PGBAKFS_PASSPHRASE=", "PGBAKFS_NEW_PASSPHRASE=",
					    "PGBAKFS_CONFIG="};
	if (!strncmp(entry, "AWS_", 4))
		return true;
	for (size_t i = 0; i < ELEMENTSOF(names); i++)
		if (!strncmp(entry, names[i], strlen(names[i])))
			return true;
	return false;
}

/* Our environment without the secrets (pointers into environ; free the array only). */
static char **env_scrubbed(void)
{
	size_t n = 0, k = 0;
	while (environ[n])
		n++;
	char **v = xmalloc((n + 1) * sizeof(char *));
	for (size_t i = 0; i < n; i++)
		if (!env_is_secret(environ[i]))
			v[k++] = environ[i];
	v[k] = NULL;
	return v;
}

/*
 * fork + exec argv, as uid/gid when they differ from ours, with stdout and
 * stderr sent to out_fd/err_fd (-1: /dev/null), in environment envp (NULL:
 * ours). wait: return the exit status; otherwise the pid.
 */
static int spawn(char *const argv[], char *const envp[], uid_t uid, gid_t gid, int out_fd,
		 int err_fd, bool wait, pid_t *ret_pid)
{
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);
		dup2(null, STDIN_FILENO);
		dup2(out_fd >= 0 ? out_fd : null, STDOUT_FILENO);
		dup2(err_fd >= 0 ? err_fd : null, STDERR_FILENO);
		if (uid != geteuid() && (setgid(gid) < 0 || setgroups(0, NULL) < 0 || setuid(uid) < 0))
			_exit(126);
		execve(argv[0], argv, envp ? envp : environ);
		_exit(127);
	}
	if (ret_pid)
		*ret_pid = pid;
	if (!wait)
		return 0;
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The last line of a file that says FATAL/PANIC/ERROR, or its last line. */
static void last_error_line(const char *path, char *buf, size_t len)
{
	_cleanup_free_ char *line = NULL;
	size_t cap = 0;
	bool found = false;
	FILE *f = fopen(path, "re");
	buf[0] = 0;
	if (!f)
		return;
	while (getline(&line, &cap, f) > 0) {
		bool err = strstr(line, "FATAL") || strstr(line, "PANIC") || strstr(line, "ERROR") ||
			   strstr(line, "error");
		if (err || !found) {
			line[strcspn(line, "\n")] = 0;
			snprintf(buf, len, "%s", line);
			found = found || err;
		}
	}
	fclose(f);
}

static int pick_user(ScratchPg *pg)
{
	struct passwd *pw = geteuid() == 0 ? getpwnam("postgres") : getpwuid(geteuid());
	if (!pw) {
		set_error(pg, geteuid() == 0 ? "PostgreSQL refuses to run as root and there is no "
					       "\"postgres\" user to run it as"
					     : "cannot find the current user");
		return -ENOENT;
	}
	snprintf(pg->user, sizeof(pg->user), "%s", pw->pw_name);
	pg->uid = pw->pw_uid;
	pg->gid = pw->pw_gid;
	return 0;
}

/* The snapshot's PostgreSQL major version (recorded as 15, or as 150004 by older versions); 0: unknown. */
static int64_t pg_major(const SnapshotInfo *s)
{
	return s->pg_version >= 100000 ? s->pg_version / 10000 : s->pg_version;
}

/* Debian's layout: /usr/lib/postgresql/<major>/bin */
#define PG_LIB_DIR "/usr/lib/postgresql"

/* Append NAME to a ", "-separated list of what is missing. */
static void add_missing(char *list, size_t len, const char *name)
{
	size_t n = strlen(list);
	snprintf(list + n, len - n, "%s%s", n ? ", " : "", name);
}

static bool executable_in(const char *dir, const char *program)
{
	char path[PATH_MAX + 64];
	snprintf(path, sizeof(path), "%s/%s", dir, program);
	return access(path, X_OK) == 0;
}

/*
 * The server's programs: in --pg-bin, or in the snapshot's major's directory
 * (a data directory starts only under its own major).
 */
static int pick_bin(ScratchPg *pg, const SnapshotInfo *s, const char *pg_bin)
{
	static const char *const server[] = {"postgres", "pg_ctl"};
	char missing[64] = "";
	pg->major = pg_major(s) ? pg_major(s) : 15;
	if (pg_bin)
		snprintf(pg->pgbin, sizeof(pg->pgbin), "%s", pg_bin);
	else
		snprintf(pg->pgbin, sizeof(pg->pgbin), PG_LIB_DIR "/%lld/bin",
			 (long long)pg->major);
	for (size_t i = 0; i < ELEMENTSOF(server); i++)
		if (!executable_in(pg->pgbin, server[i]))
			add_missing(missing, sizeof(missing), server[i]);
	if (*missing) {
		set_error(pg, "it needs a PostgreSQL %lld server, and \"%s\" has no %s (install "
			  "PostgreSQL %lld, or give the directory of its binaries with --pg-bin DIR)",
			  (long long)pg->major, pg->pgbin, missing, (long long)pg->major);
		return -ENOENT;
	}
	return 0;
}

/*
 * pg_dump and pg_dumpall refuse a server of a newer major; psql and
 * pg_amcheck talk to any.
 */
static bool client_needs_major(const char *program)
{
	return !strcmp(program, "pg_dump") || !strcmp(program, "pg_dumpall");
}

int scratchpg_client_path(const ScratchPg *pg, const char *program, char *ret, size_t len)
{
	int64_t best = 0;
	if (executable_in(pg->pgbin, program)) {
		snprintf(ret, len, "%s/%s", pg->pgbin, program);
		return 0;
	}
	/* the server's directory may hold only the server (a package of it alone) */
	DIR *d = opendir(PG_LIB_DIR);
	struct dirent *e;
	while (d && (e = readdir(d))) {
		char *end, dir[PATH_MAX];
		long long v = strtoll(e->d_name, &end, 10);
		snprintf(dir, sizeof(dir), PG_LIB_DIR "/%s/bin", e->d_name);
		if (*end || v <= best || (client_needs_major(program) && v < pg->major) ||
		    !executable_in(dir, program))
			continue;
		best = v;
		snprintf(ret, len, "%s/%s", dir, program);
	}
	if (d)
		closedir(d);
	return best ? 0 : -ENOENT;
}

/* Say which client program is missing and where it was looked for; -ENOENT. */
static int client_missing(ScratchPg *pg, const char *program)
{
	char which[64];
	if (client_needs_major(program))
		snprintf(which, sizeof(which), "%s of PostgreSQL %lld or later", program,
			 (long long)pg->major);
	else
		snprintf(which, sizeof(which), "%s", program);
	set_error(pg, "it needs %s, in neither \"%s\" nor " PG_LIB_DIR "/*/bin (install it, "
		  "or give a directory holding it and the server with --pg-bin DIR)", which,
		  pg->pgbin);
	return -ENOENT;
}

int scratchpg_prepare(ScratchPg *pg, const SnapshotInfo *s, const char *pg_bin,
		      const RecoveryTarget *t)
{
	char path[PATH_MAX + 64];
	*pg = (ScratchPg){.port = SCRATCH_PORT};
	int r = pick_user(pg);
	if (r == 0)
		r = pick_bin(pg, s, pg_bin);
	/* with a target, psql asks the server whether recovery got there */
	if (r == 0 && t && t->kind && scratchpg_client_path(pg, "psql", path, sizeof(path)) < 0)
		r = client_missing(pg, "psql");
	return r;
}

int scratchpg_require_client(ScratchPg *pg, const char *program)
{
	char path[PATH_MAX + 64];
	if (scratchpg_client_path(pg, program, path, sizeof(path)) == 0)
		return 0;
	return client_missing(pg, program);
}

/* The private directory: root-owned, traversable by the server's user; fetch/ is that user's. */
static int make_dirs(ScratchPg *pg)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(pg->root, sizeof(pg->root), "%s/pgbakfs-scratch.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(pg->root))
		return -errno;
	snprintf(pg->mnt, sizeof(pg->mnt), "%s/mnt", pg->root);
	snprintf(pg->sock, sizeof(pg->sock), "%s/sock", pg->root);
	snprintf(pg->log, sizeof(pg->log), "%s/sock/postgresql.log", pg->root);
	snprintf(pg->fetch, sizeof(pg->fetch), "%s/fetch", pg->root);
	if (chmod(pg->root, 0711) < 0 || mkdir(pg->mnt, 0755) < 0 || mkdir(pg->sock, 0700) < 0 ||
	    mkdir(pg->fetch, 0700) < 0)
		return -errno;
	if (chown(pg->sock, pg->uid, pg->gid) < 0 || chown(pg->fetch, pg->uid, pg->gid) < 0)
		return -errno;
	return 0;
}

/* fetch/NAME, 0600, the server's user's, holding buf: its path in ret (PATH_MAX + 64). */
static int write_private(ScratchPg *pg, const char *name, const char *buf, size_t len, char *ret)
{
	snprintf(ret, PATH_MAX + 64, "%s/%s", pg->fetch, name);
	_cleanup_close_ int fd =
		open(ret, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0 || fchown(fd, pg->uid, pg->gid) < 0)
		return -errno;
	return pwrite_full(fd, buf, len, 0);
}

/*
 * What the server's wal-fetch needs, as files of the server's user in fetch/:
 * a cache directory, the passphrase, the S3 settings with their keys. The
 * CA bundle is no secret: its path as given.
 */
static int prepare_fetch(ScratchPg *pg, const CliLocation *cl, RecoveryFetch *ret)
{
	char *pass = pg->fetch_pass, *conf = pg->fetch_conf, *ca = pg->ca_file;
	int r = 0;
	*ret = (RecoveryFetch){.cache_dir = pg->fetch_cache};
	snprintf(pg->fetch_cache, sizeof(pg->fetch_cache), "%s/cache", pg->fetch);
	if (mkdir(pg->fetch_cache, 0700) < 0 || chown(pg->fetch_cache, pg->uid, pg->gid) < 0)
		return -errno;
	if (cl->passphrase) {
		/* a final newline: the file's reader drops exactly one */
		char *text = xmalloc(cl->passphrase_len + 2);
		memcpy(text, cl->passphrase, cl->passphrase_len);
		text[cl->passphrase_len] = '\n';
		r = write_private(pg, "passphrase", text, cl->passphrase_len + 1, pass);
		explicit_bzero(text, cl->passphrase_len + 2);
		free(text);
		ret->passphrase_file = pass;
	}
	if (r == 0 && cl->loc.s3) {
		char *text = cli_s3_config_text(cl->loc.s3);
		r = write_private(pg, "pgbakfs.conf", text, strlen(text), conf);
		explicit_bzero(text, strlen(text));
		free(text);
		ret->config = conf;
		if (cl->ca_file) {
			if (!realpath(cl->ca_file, ca))
				snprintf(ca, sizeof(pg->ca_file), "%s", cl->ca_file);
			ret->ca_file = ca;
		}
	}
	return r;
}

static bool is_mounted(const char *path, const char *parent)
{
	struct stat a, b;
	return stat(path, &a) == 0 && stat(parent, &b) == 0 && a.st_dev != b.st_dev;
}

/*
 * pgbakfs mount --foreground --writable, as our child, with this command's
 * --passphrase-file, --config, --cache-dir, --ca-file; wait until it serves.
 */
static int start_mount(ScratchPg *pg, const char *repo)
{
	char exe[PATH_MAX], scratch[PATH_MAX + 16], err_path[PATH_MAX + 16];
	char *argv[32];
	int n = 0, r;
	ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (len < 0)
		return -errno;
	exe[len] = 0;
	snprintf(scratch, sizeof(scratch), "%s/scratch", pg->root);
	snprintf(err_path, sizeof(err_path), "%s/mount.log", pg->root);
	argv[n++] = exe;
	argv[n++] = (char *)"mount";
	argv[n++] = pg->mnt;
	argv[n++] = (char *)"--foreground";
	argv[n++] = (char *)"--writable";
	argv[n++] = (char *)"--scratch";
	argv[n++] = scratch;
	argv[n++] = (char *)"--repo";
	argv[n++] = (char *)repo;
	if (geteuid() == 0) {
		argv[n++] = (char *)"--owner";
		argv[n++] = pg->user;
		argv[n++] = (char *)"--allow-other";
	}
	const char *names[4];
	char *values[4];
	size_t n_opts = cli_common_options(names, values);
	for (size_t i = 0; i < n_opts; i++) {
		argv[n++] = (char *)names[i];
		argv[n++] = values[i];
	}
	argv[n] = NULL;
	_cleanup_close_ int err_fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	r = spawn(argv, NULL, geteuid(), getegid(), -1, err_fd, false, &pg->mount_pid);
	for (size_t i = 0; i < n_opts; i++)
		free(values[i]);
	if (r < 0)
		return r;
	for (int i = 0; i < 600; i++) { /* 60 s */
		int status;
		if (is_mounted(pg->mnt, pg->root))
			return 0;
		if (waitpid(pg->mount_pid, &status, WNOHANG) == pg->mount_pid) {
			pg->mount_pid = 0;
			char line[400];
			last_error_line(err_path, line, sizeof(line));
			set_error(pg, "could not mount a clone: %s", line);
			return -EIO;
		}
		struct timespec ts = {0, 100 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	set_error(pg, "the mount did not come up within 60 s");
	return -ETIMEDOUT;
}

static int write_hba(ScratchPg *pg, char *path, size_t len)
{
	snprintf(path, len, "%s/sock/hba.conf", pg->root);
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	static const char hba[] = "local all all trust\n";
	if (fd < 0 || write(fd, hba, sizeof(hba) - 1) != sizeof(hba) - 1 ||
	    fchown(fd, pg->uid, pg->gid) < 0)
		return -errno;
	return 0;
}

/*
 * The mount shows a tablespace as a directory in pg_tblspc (no symlink), which
 * recovery refuses unless allow_in_place_tablespaces is on: a setting from 15,
 * and from 13.8 and 14.5, which got it with the check (an older minor knows
 * neither, and refuses an unknown setting). Below 15, ask the server its version.
 */
static bool server_allows_in_place(ScratchPg *pg)
{
	char postgres[PATH_MAX + 16], out[128] = "";
	int major = 0, minor = 0, p[2];
	if (pg->major >= 15)
		return true;
	snprintf(postgres, sizeof(postgres), "%s/postgres", pg->pgbin);
	char *argv[] = {postgres, (char *)"-V", NULL};
	if (pipe2(p, O_CLOEXEC) < 0)
		return false;
	_cleanup_free_ char **env = env_scrubbed();
	int r = spawn(argv, env, pg->uid, pg->gid, p[1], -1, true, NULL);
	close(p[1]);
	ssize_t n = r == 0 ? read(p[0], out, sizeof(out) - 1) : -1;
	close(p[0]);
	if (n <= 0)
		return false;
	out[n] = 0;
	/* "postgres (PostgreSQL) 14.23" */
	const char *v = strstr(out, ") ");
	if (!v || sscanf(v + 2, "%d.%d", &major, &minor) != 2)
		return false;
	return major >= 15 || (major == 14 && minor >= 5) || (major == 13 && minor >= 8);
}

static int start_server(ScratchPg *pg)
{
	char pg_ctl[PATH_MAX + 16], hba[PATH_MAX + 32], opts[2 * PATH_MAX + 256];
	int r = write_hba(pg, hba, sizeof(hba));
	if (r < 0)
		return r;
	/*
	 * A clone must never archive into, or stream to, anything real: no
	 * archiving, no TCP, and hba.conf has no replication line. (Not
	 * max_wal_senders=0: archive recovery to a target with hot_standby
	 * refuses a value below the primary's.)
	 */
	snprintf(opts, sizeof(opts),
		 "-p %d -c listen_addresses='' -c unix_socket_directories='%s' -c hba_file='%s'"
		 " -c archive_mode=off -c fsync=off -c synchronous_commit=off%s",
		 pg->port, pg->sock, hba,
		 server_allows_in_place(pg) ? " -c allow_in_place_tablespaces=on" : "");
	snprintf(pg_ctl, sizeof(pg_ctl), "%s/pg_ctl", pg->pgbin);
	char *argv[] = {pg_ctl, (char *)"-D", pg->datadir, (char *)"-l", pg->log, (char *)"-o", opts,
			(char *)"-w", (char *)"-t", (char *)"3600", (char *)"start", NULL};
	_cleanup_free_ char **env = env_scrubbed();
	r = spawn(argv, env, pg->uid, pg->gid, -1, -1, true, NULL);
	if (r != 0) {
		char line[400];
		last_error_line(pg->log, line, sizeof(line));
		set_error(pg, "PostgreSQL did not start on the clone: %s",
			  *line ? line : "see its log");
		return -EIO;
	}
	pg->started = true;
	return 0;
}

/* Recovery to a target: written into the fresh clone, through the mount. */
static int add_recovery(ScratchPg *pg, const char *repo, const CliLocation *cl,
			const RecoveryTarget *t)
{
	RecoveryFetch fetch;
	_cleanup_free_ char *conf = NULL;
	int r = prepare_fetch(pg, cl, &fetch);
	if (r == 0)
		r = recovery_conf(t, repo, &fetch, &conf);
	if (r == 0)
		r = recovery_write(pg->datadir, conf);
	if (r < 0)
		set_error(pg, "could not set up recovery to the target in the clone: %s", strerror(-r));
	return r;
}

/*
 * With a recovery target, the server takes read-only connections before it
 * gets there: wait until it has (promoted, or paused there). A server that
 * stops instead (target not reached, --target-action shutdown) is an error.
 */
static int wait_recovery_done(ScratchPg *pg)
{
	char *args[] = {(char *)"-XAtq", (char *)"-d", (char *)"postgres", (char *)"-c",
			(char *)"select not pg_is_in_recovery() or pg_is_wal_replay_paused()", NULL};
	for (int i = 0; i < 36000; i++) { /* an hour, like pg_ctl -t 3600 */
		int p[2];
		char out[8] = "";
		if (pipe2(p, O_CLOEXEC) < 0)
			return -errno;
		int r = scratchpg_client(pg, "psql", args, p[1], -1);
		close(p[1]);
		ssize_t n = read(p[0], out, sizeof(out) - 1);
		close(p[0]);
		if (r == 0 && n > 0 && out[0] == 't')
			return 0;
		if (r != 0) {
			char line[400];
			last_error_line(pg->log, line, sizeof(line));
			set_error(pg, "PostgreSQL stopped before it reached the recovery target: %s",
				  *line ? line : "see its log");
			return -EIO;
		}
		struct timespec ts = {0, 100 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	set_error(pg, "PostgreSQL did not reach the recovery target within an hour");
	return -ETIMEDOUT;
}

int scratchpg_start(ScratchPg *pg, const char *repo, const CliLocation *cl, const SnapshotInfo *s,
		    const RecoveryTarget *t)
{
	int r = make_dirs(pg);
	if (r < 0) {
		set_error(pg, "cannot create a private directory: %s", strerror(-r));
		return r;
	}
	r = start_mount(pg, repo);
	if (r < 0)
		return r;
	snprintf(pg->datadir, sizeof(pg->datadir), "%s/%s", pg->mnt, s->name);
	if (t && t->kind && (r = add_recovery(pg, repo, cl, t)) < 0)
		return r;
	r = start_server(pg);
	if (r == 0 && t && t->kind)
		r = wait_recovery_done(pg);
	return r;
}

int scratchpg_client(ScratchPg *pg, const char *program, char *const args[], int out_fd,
		     int err_fd)
{
	char path[PATH_MAX + 64], port[16];
	char *argv[64];
	int n = 0;
	int r = scratchpg_client_path(pg, program, path, sizeof(path));
	if (r < 0)
		return r;
	snprintf(port, sizeof(port), "%d", pg->port);
	argv[n++] = path;
	argv[n++] = (char *)"-h";
	argv[n++] = pg->sock;
	argv[n++] = (char *)"-p";
	argv[n++] = port;
	argv[n++] = (char *)"-U";
	argv[n++] = getenv("PGUSER") ? getenv("PGUSER") : (char *)"postgres";
	for (size_t i = 0; args && args[i] && n < 63; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	_cleanup_free_ char **env = env_scrubbed();
	return spawn(argv, env, pg->uid, pg->gid, out_fd, err_fd, true, NULL);
}

void scratchpg_stop(ScratchPg *pg, bool keep)
{
	if (pg->started) {
		char pg_ctl[PATH_MAX + 16];
		snprintf(pg_ctl, sizeof(pg_ctl), "%s/pg_ctl", pg->pgbin);
		char *argv[] = {pg_ctl, (char *)"-D", pg->datadir, (char *)"-m", (char *)"immediate",
				(char *)"-w", (char *)"stop", NULL};
		_cleanup_free_ char **env = env_scrubbed();
		spawn(argv, env, pg->uid, pg->gid, -1, -1, true, NULL);
		pg->started = false;
	}
	if (pg->mount_pid > 0) {
		/* our own child: unmount and wait for it to close the clone */
		char *argv[] = {(char *)"/bin/fusermount3", (char *)"-u", pg->mnt, NULL};
		if (spawn(argv, NULL, geteuid(), getegid(), -1, -1, true, NULL) != 0)
			umount2(pg->mnt, MNT_DETACH);
		int status;
		waitpid(pg->mount_pid, &status, 0);
		pg->mount_pid = 0;
	}
	if (pg->fetch[0])
		rm_rf(pg->fetch); /* secrets: never kept */
	if (pg->root[0] && !keep)
		rm_rf(pg->root);
	else if (pg->root[0])
		chmod(pg->root, 0700);
}
