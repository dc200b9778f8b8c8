/* pgbakfs mount MOUNTPOINT: every snapshot a data directory. */
#include "common/log.h"
#include "common/util.h"
#include "fs/mount.h"
#include "tools/cli.h"
#include "tools/config.h"
#include "tools/opts.h"
#include "tools/recovery.h"

#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

enum {
	OPT_FOREGROUND = 0x100,
	OPT_WRITABLE,
	OPT_SCRATCH,
	OPT_ALLOW_OTHER,
	OPT_OWNER,
	OPT_CACHE_SIZE,
	OPT_DISK_CACHE,
	OPT_MAX_TREES,
	OPT_POLL_INTERVAL
};

#define DEFAULT_CACHE_SIZE (192ull * 1024 * 1024)
#define DEFAULT_DISK_CACHE (2ull * 1024 * 1024 * 1024)
#define DEFAULT_MAX_TREES 8
#define MAX_MAX_TREES 100000
#define MAX_POLL_INTERVAL 86400

static const char mount_help[] =
	"Usage: pgbakfs mount MOUNTPOINT [--repo PATH] [--foreground]\n"
	"                     [--writable [--scratch DIR]] [--allow-other] [--owner USER]\n"
	"                     [--cache-size SIZE] [--disk-cache SIZE] [--max-trees N]\n"
	"                     [--poll-interval SECONDS]\n\n"
	"Show every snapshot as a data directory: MOUNTPOINT/<id>/, with MOUNTPOINT/latest\n"
	"pointing at the newest. Read-only unless --writable, which makes each snapshot a\n"
	"copy-on-write clone kept in --scratch DIR (default: a private directory removed at\n"
	"unmount); the repository never changes. Runs in the background unless\n"
	"--foreground; unmount with \"fusermount3 -u MOUNTPOINT\".\n\n"
	"  --owner USER      show files as owned by USER (a mount by root, e.g. for postgres)\n"
	"  --allow-other     let other users than the owner in (with their permissions)\n"
	"  --cache-size SIZE decompressed chunks kept in memory (default 192MiB)\n"
	"  --disk-cache SIZE S3 repositories: chunk ranges kept on local disk, under the\n"
	"                    cache directory (default 2GiB; 0: none)\n"
	"  --max-trees N     snapshot file trees kept in memory while unused (default 8;\n"
	"                    at most 256MiB of them, none unused for over 60s); a tree is\n"
	"                    loaded again when a file of its snapshot is used\n"
	"  --poll-interval SECONDS\n"
	"                    S3 repositories: how often to look for snapshots other\n"
	"                    machines published, one request each (default 15; 0: never;\n"
	"                    config file: poll-interval); nothing else is requested\n"
	"                    while the mount is idle\n"
	"With --writable, a recovery target makes each fresh clone recover to it:\n"
	RECOVERY_USAGE;

typedef struct MountArgs {
	CliArgs a;
	const char *repo_opt; /* --repo, as an absolute path when it is one */
	const char *scratch_opt, *owner, *poll;
	char mountpoint[PATH_MAX];
	char scratch[PATH_MAX];
	char repo[PATH_MAX];
	bool foreground, scratch_is_temp;
	char *recovery_conf;
	uint64_t disk_cache;
	MountOptions o;
} MountArgs;

static int parse_owner(const char *user, MountOptions *o)
{
	struct passwd *pw = getpwnam(user);
	if (!pw) {
		cli_error("unknown user \"%s\" for --owner", user);
		return EXIT_FAIL;
	}
	if (geteuid() != 0 && pw->pw_uid != geteuid()) {
		cli_error("--owner %s needs a mount by root", user);
		return EXIT_FAIL;
	}
	o->uid = pw->pw_uid;
	o->gid = pw->pw_gid;
	return EXIT_OK;
}

/* --poll-interval (or the config file's poll-interval): seconds, 0 for never */
static int parse_poll_interval(const char *s, int *ret)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || end == s || *end || s[0] < '0' || s[0] > '9' || v > MAX_POLL_INTERVAL)
		return cli_usage("mount", "invalid poll interval \"%s\" (0 to %d seconds)", s,
				 MAX_POLL_INTERVAL);
	*ret = v == 0 ? -1 : (int)v;
	return EXIT_OK;
}

/* --max-trees: 0 to MAX_MAX_TREES */
static int parse_max_trees(const char *arg, unsigned *ret)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(arg, &end, 10);
	if (errno || end == arg || *end || arg[0] == '-' || v > MAX_MAX_TREES)
		return cli_usage("mount", "invalid --max-trees \"%s\" (0 to %d)", arg, MAX_MAX_TREES);
	*ret = (unsigned)v;
	return EXIT_OK;
}

static int mount_option(int c, char *arg, void *opts)
{
	MountArgs *m = opts;

	switch (c) {
	case 'f':
	case OPT_FOREGROUND: m->foreground = true; break;
	case OPT_WRITABLE: m->o.writable = true; break;
	case OPT_SCRATCH: m->scratch_opt = arg; break;
	case OPT_ALLOW_OTHER: m->o.allow_other = true; break;
	case OPT_OWNER: m->owner = arg; break;
	case OPT_CACHE_SIZE:
		if (parse_size(arg, &m->o.cache_size) < 0 || m->o.cache_size < 1024 * 1024)
			return cli_usage("mount", "invalid --cache-size \"%s\" (at least 1MiB)", arg);
		break;
	case OPT_DISK_CACHE:
		if (parse_size(arg, &m->disk_cache) < 0 ||
		    (m->disk_cache && m->disk_cache < 16 * 1024 * 1024))
			return cli_usage("mount", "invalid --disk-cache \"%s\" (0, or at least 16MiB)", arg);
		break;
	case OPT_MAX_TREES: return parse_max_trees(arg, &m->o.max_trees);
	case OPT_POLL_INTERVAL: m->poll = arg; break;
	}
	return EXIT_OK;
}

static const struct option mount_options[] = {
	{"foreground", no_argument, NULL, OPT_FOREGROUND},
	{"writable", no_argument, NULL, OPT_WRITABLE},
	{"scratch", required_argument, NULL, OPT_SCRATCH},
	{"allow-other", no_argument, NULL, OPT_ALLOW_OTHER},
	{"owner", required_argument, NULL, OPT_OWNER},
	{"cache-size", required_argument, NULL, OPT_CACHE_SIZE},
	{"disk-cache", required_argument, NULL, OPT_DISK_CACHE},
	{"max-trees", required_argument, NULL, OPT_MAX_TREES},
	{"poll-interval", required_argument, NULL, OPT_POLL_INTERVAL},
	{0}};

static const CliCommand mount_command = {
	.name = "mount",
	.common = CLI_REPO | CLI_RECOVERY,
	.options = mount_options,
	.short_options = "f",
	.option = mount_option,
	.n_args = 1,
	.missing = "expected MOUNTPOINT",
	.help = mount_help,
};

/* The options that go together: poll interval (or the config file's), --scratch, target, --owner. */
static int mount_validate(MountArgs *m)
{
	const Config *conf;
	int rc;

	if (!m->poll && cli_config(&conf) == EXIT_OK)
		m->poll = config_setting(conf, "poll-interval");
	if (m->poll && (rc = parse_poll_interval(m->poll, &m->o.poll_interval)) != EXIT_OK)
		return rc;
	if (m->scratch_opt && !m->o.writable)
		return cli_usage("mount", "--scratch needs --writable");
	if (m->a.target.kind && !m->o.writable)
		return cli_usage("mount", "a recovery target needs --writable");
	if ((rc = recovery_check("mount", &m->a.target)) != EXIT_OK)
		return rc;
	if (m->owner && (rc = parse_owner(m->owner, &m->o)) != EXIT_OK)
		return rc;
	return EXIT_OK;
}

/* The daemon works from "/": the repository, mount point and scratch directory, absolute. */
static int mount_resolve(MountArgs *m, const char *mountpoint)
{
	const char *loc = cli_repo_location(m->a.repo);
	struct stat st;
	int r;

	if (!loc)
		return EXIT_FAIL;
	m->repo_opt = realpath(loc, m->repo) ? m->repo : m->a.repo;
	if (m->a.target.kind) {
		r = recovery_conf(&m->a.target, m->repo_opt, NULL, &m->recovery_conf);
		if (r < 0) {
			cli_error("cannot prepare the recovery settings: %s", strerror(-r));
			return EXIT_FAIL;
		}
		m->o.recovery_conf = m->recovery_conf;
	}
	if (!realpath(mountpoint, m->mountpoint)) {
		cli_error("mount point \"%s\": %m", mountpoint);
		return EXIT_FAIL;
	}
	if (stat(m->mountpoint, &st) < 0 || !S_ISDIR(st.st_mode)) {
		cli_error("mount point \"%s\" is not a directory", mountpoint);
		return EXIT_FAIL;
	}
	if (m->scratch_opt) {
		r = mkdir_p(m->scratch_opt, 0700);
		if (r < 0 || !realpath(m->scratch_opt, m->scratch)) {
			cli_error("cannot use scratch directory \"%s\": %s", m->scratch_opt,
				  strerror(r < 0 ? -r : errno));
			return EXIT_FAIL;
		}
		m->o.scratch = m->scratch;
	}
	return EXIT_OK;
}

/* A private scratch directory for this mount only, removed at unmount. */
static int make_temp_scratch(MountArgs *a)
{
	const char *base = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
	char dir[PATH_MAX];
	if (base && *base)
		snprintf(dir, sizeof(dir), "%s/pgbakfs", base);
	else
		snprintf(dir, sizeof(dir), "%s/.cache/pgbakfs", home && *home ? home : "/tmp");
	int r = mkdir_p(dir, 0700);
	if (r == 0 && (size_t)snprintf(a->scratch, sizeof(a->scratch), "%s/scratch.XXXXXX", dir) >=
			      sizeof(a->scratch))
		r = -ENAMETOOLONG;
	if (r == 0 && !mkdtemp(a->scratch))
		r = -errno;
	if (r < 0) {
		cli_error("cannot create a scratch directory in \"%s\": %s", dir, strerror(-r));
		return EXIT_FAIL;
	}
	a->o.scratch = a->scratch;
	a->scratch_is_temp = true;
	return EXIT_OK;
}

typedef struct ReadyCtx {
	int fd; /* the parent's pipe; -1 in the foreground */
	const char *mountpoint;
} ReadyCtx;

/* Mounted: detach from the terminal and tell the waiting parent. */
static void on_ready(void *userdata)
{
	ReadyCtx *ctx = userdata;
	char line[PATH_MAX + 32];
	snprintf(line, sizeof(line), "mounted on \"%s\"", ctx->mountpoint);
	log_file_line(LOG_INFO, line);
	if (ctx->fd < 0)
		return;
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (!log_has_file()) /* --log-file (or log-file) keeps the daemon's messages there */
		log_to_syslog("pgbakfs");
	if (null >= 0) {
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		close(null);
	}
	char ok = 0;
	if (write(ctx->fd, &ok, 1) < 0)
		log_warning("cannot tell the parent the mount is ready: %m");
	close(ctx->fd);
	ctx->fd = -1;
}

static int run(MountArgs *a, int ready_fd)
{
	ReadyCtx ctx = {ready_fd, a->mountpoint};
	Repo *repo = NULL;
	int rc = cli_open_repo(a->repo_opt, &repo);
	if (rc != EXIT_OK)
		return rc;
	if (a->disk_cache && repo_is_remote(repo) && !repo_is_local_backend(repo)) {
		int r = repo_disk_cache(repo, a->disk_cache);
		if (r == -EBUSY)
			log_info("another mount uses the disk cache of this repository: none for this one");
		else if (r < 0)
			log_warning("no disk cache: %s", strerror(-r));
	}
	a->o.mountpoint = a->mountpoint;
	a->o.ready = on_ready;
	a->o.userdata = &ctx;
	int r = mount_run(repo, &a->o);
	if (r < 0) {
		cli_error("cannot mount the repository on \"%s\": %s", a->mountpoint, strerror(-r));
		rc = EXIT_FAIL;
	} else {
		char line[PATH_MAX + 32];
		snprintf(line, sizeof(line), "unmounted \"%s\"", a->mountpoint);
		log_file_line(LOG_INFO, line);
	}
	repo_free(repo);
	if (a->scratch_is_temp)
		rm_rf(a->scratch);
	return rc;
}

/* The parent relays what the child says until it is mounted or has failed. */
static int wait_child(pid_t pid, int fd)
{
	char buf[4096];
	size_t used = 0;
	bool ready = false;
	ssize_t n;
	while (!ready && (n = read(fd, buf + used, sizeof(buf) - 1 - used)) > 0) {
		char *zero = memchr(buf + used, 0, (size_t)n);
		used += (size_t)n;
		if (zero) {
			used = (size_t)(zero - buf);
			ready = true;
		}
		if (used == sizeof(buf) - 1) {
			fwrite(buf, 1, used, stderr);
			used = 0;
		}
	}
	fwrite(buf, 1, used, stderr);
	close(fd);
	if (ready)
		return EXIT_OK;
	int status;
	if (waitpid(pid, &status, 0) < 0)
		return EXIT_FAIL;
	return WIFEXITED(status) && WEXITSTATUS(status) ? WEXITSTATUS(status) : EXIT_FAIL;
}

/* In the background: a child mounts, the parent waits until it is mounted or failed. */
static int mount_daemon(MountArgs *m)
{
	int p[2], rc;

	/* the child opens the repository: no thread or database crosses the fork */
	if (pipe2(p, O_CLOEXEC) < 0) {
		cli_error("cannot start the mount daemon: %m");
		return EXIT_FAIL;
	}
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		cli_error("cannot start the mount daemon: %m");
		return EXIT_FAIL;
	}
	if (pid > 0) {
		close(p[1]);
		return wait_child(pid, p[0]);
	}
	close(p[0]);
	setsid();
	if (chdir("/") < 0 || dup2(p[1], STDERR_FILENO) < 0)
		_exit(EXIT_FAIL);
	rc = run(m, p[1]);
	free(m->recovery_conf);
	_exit(rc);
}

int cmd_mount(int argc, char **argv)
{
	MountArgs m = {.o = {.uid = getuid(), .gid = getgid(), .cache_size = DEFAULT_CACHE_SIZE,
			     .max_trees = DEFAULT_MAX_TREES},
		       .disk_cache = DEFAULT_DISK_CACHE};
	int rc = cli_parse(&mount_command, argc, argv, &m.a, &m);

	if (rc != CLI_CONTINUE)
		return rc;
	/* the options checked, the paths made absolute */
	rc = mount_validate(&m);
	if (rc == EXIT_OK)
		rc = mount_resolve(&m, m.a.args[0]);
	/* --writable without --scratch: a private directory, removed at unmount */
	if (rc == EXIT_OK && m.o.writable && !m.o.scratch)
		rc = make_temp_scratch(&m);
	/* serve until unmounted: here with --foreground, else in a daemon */
	if (rc == EXIT_OK)
		rc = m.foreground ? run(&m, -1) : mount_daemon(&m);
	free(m.recovery_conf);
	return rc;
}
