/* pgbakfs backup --from-dir DIR: snapshot a directory tree. */
#include "common/json.h"
#include "common/log.h"
#include "common/progress.h"
#include "common/util.h"
#include "ingest/fromdir.h"
#include "ingest/live.h"
#include "ingest/local.h"
#include "tools/cli.h"
#include "tools/config.h"
#include "tools/opts.h"

#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

enum { OPT_FROM_DIR = 0x100, OPT_LABEL, OPT_NOTE, OPT_TYPE, OPT_PGDATA, OPT_EXTRA_DIR, OPT_EXPIRE,
       OPT_VERIFY_BLOCKS };
#define MAX_EXTRA_DIRS 16

typedef struct BackupOptions {
	const char *repo;
	const char *from_dir;
	const char *conninfo;
	const char *pgdata;
	const char *type;
	const char *instance;
	const char *label;
	const char *note;
	int jobs;
	bool progress;
	bool expire;
	bool verify_blocks;
	const char *extra_dirs[MAX_EXTRA_DIRS];
	size_t n_extra_dirs;
} BackupOptions;

static const char backup_help[] =
	"Usage: pgbakfs backup -d CONNINFO [--pgdata DIR] [--type full|incr] [--repo PATH]\n"
	"                      [--instance NAME] [--label TEXT] [--note TEXT] [-j N]\n"
	"                      [--progress|--no-progress] [--expire] [--verify-blocks]\n"
	"       pgbakfs backup --from-dir DIR [--repo PATH] [--instance NAME] [--label TEXT]\n"
	"                      [--expire]\n"
	"       pgbakfs backup [--instance NAME] [--type full|incr] [OPTIONS]\n\n"
	"Take a snapshot. With -d alone, of a running cluster from any host: BASE_BACKUP\n"
	"over a replication connection plus the WAL to make it consistent (the role needs\n"
	"REPLICATION and two free WAL senders); --type incr, on PostgreSQL 17+ with\n"
	"summarize_wal = on, has the server send only the blocks changed since the\n"
	"newest snapshot of the instance (UPLOAD_MANIFEST, incremental BASE_BACKUP)\n"
	"and builds a complete snapshot from them and that snapshot's chunks;\n"
	"elsewhere it takes a full backup and says why. With -d and --pgdata, on the\n"
	"database host: pg_backup_start/stop and the files read by pgbakfs itself, in\n"
	"parallel; --type incr then reads, of the relation files, only the 64 KiB\n"
	"chunks holding a block the WAL since the newest snapshot of the instance\n"
	"changed (from the summaries wal-push keeps beside archived WAL, segments still\n"
	"in pg_wal, or PostgreSQL 17's own with summarize_wal = on), and of other files\n"
	"those whose size or mtime changed; where the WAL is not fully summarized,\n"
	"every changed file is read and a note says why. With --from-dir, of a\n"
	"directory tree (a stopped data directory or a pg_basebackup -Fp copy; a data\n"
	"directory's tablespaces come along, as restore puts them back). Only chunks\n"
	"the repository does not hold are stored. With neither -d nor --from-dir,\n"
	"the cluster of the config file's instance (--instance NAME, or the only one\n"
	"configured): its conninfo, pgdata and extra-dir (see \"pgbakfs --help\").\n\n"
	"  -d CONNINFO   libpq connection string or URI of the cluster; the snapshot keeps\n"
	"                it without password, sslpassword and other secrets (a backup\n"
	"                also removes those that older versions kept)\n"
	"  --extra-dir DIR  (with --pgdata, repeatable) also keep DIR, e.g.\n"
	"                /etc/postgresql/15/main; restore puts it in TARGET.extra/DIR\n"
	"  -j N          reader and hashing/compression threads (default: the config\n"
	"                file's jobs, else the number of CPUs)\n"
	"  --instance    name of the cluster in the repository (default \"main\");\n"
	"                it, --label and --note must be UTF-8 text without control characters\n"
	"  --from-dir DIR  a file that changes or vanishes while it is read gets a warning\n"
	"                (as GNU tar gives) and the snapshot's status is \"warning\" (exit 0);\n"
	"                a path inside DIR of 3840 bytes or more is refused (restore could\n"
	"                not write it)\n"
	"  --verify-blocks  (with --type incr) also read the chunks the WAL says did not\n"
	"                change, and fail if a page in one changed after the parent started\n"
	"                (pages that differ without WAL, e.g. hint bits, are counted)\n"
	"  --expire      after a successful backup, apply the retention policy saved by\n"
	"                \"pgbakfs expire\" to the instance; refused up front when none is saved\n";

static int report_ingest_error(const BackupOptions *o, int r, const FromDirError *err)
{
	if (r == -ENOSPC)
		cli_error("repository \"%s\" is out of space: %s", o->repo, strerror(-r));
	else if (r == -ENAMETOOLONG && err->rel_len)
		cli_error("path \"%s\" is too long to restore: %zu bytes inside the snapshot, at most "
			  "%d are kept", err->path, err->rel_len, FROMDIR_PATH_MAX - 1);
	else if (err->path[0])
		cli_error("could not read \"%s\": %s", err->path, strerror(-r));
	else if (r == -EBUSY)
		cli_error("repository \"%s\" is locked for too long by another process", o->repo);
	else
		cli_error("backup of \"%s\" failed: %s", o->from_dir, strerror(-r));
	fprintf(stderr, "hint: no snapshot was created; the repository is unchanged apart from "
			"leftovers that \"pgbakfs gc\" removes\n");
	return EXIT_FAIL;
}

/* One error line for a failed backup of a running cluster. */
static int report_pg_error(const BackupOptions *o, int r, const PgError *err)
{
	if (r == -ECONNREFUSED)
		cli_error("could not connect to the server: %s", err->msg);
	else if (r == -ENOSPC)
		cli_error("repository \"%s\" is out of space; no snapshot was created", o->repo);
	else {
		cli_error("backup failed: %s", err->msg[0] ? err->msg : strerror(-r));
		fprintf(stderr, "hint: no snapshot was created; leftovers in the repository are "
				"removed by \"pgbakfs gc\"\n");
	}
	return EXIT_FAIL;
}

/* A backup of a cluster made snap: its bad pages said, its name kept for the attempt's record. */
static int backup_made(const SnapWriterResult *snap, char made[static 64])
{
	if (snap->bad_blocks) {
		cli_warning("%llu page(s) failed checksum verification; the snapshot's status is "
			    "\"warning\"", (unsigned long long)snap->bad_blocks);
		cli_hint("\"pgbakfs show %s\" lists them", snap->name);
	}
	snprintf(made, 64, "%s", snap->name);
	return EXIT_OK;
}

/*
 * Older versions kept -d's password in the snapshot's source: every backup, a
 * writer, removes what it finds (manifests follow when the writer ends).
 */
static void scrub_secrets(Repo *repo)
{
	uint64_t n = 0;
	int r = live_scrub_sources(repo, &n);
	if (r < 0)
		cli_warning("could not remove passwords recorded by an older version from the catalog: %s",
			    strerror(-r));
	else if (n) {
		cli_note("removed the password an older version recorded with the source of %llu "
			 "snapshot(s)", (unsigned long long)n);
		cli_hint("it was stored in the repository; consider changing it");
	}
}

static int backup_live(const BackupOptions *o, Repo *repo, char made[static 64])
{
	_cleanup_free_ char *staging = xasprintf("%s/tmp", repo_workdir(repo));
	LiveBackupOptions lo = {.conninfo = o->conninfo, .instance = o->instance, .label = o->label,
				.note = o->note, .jobs = o->jobs, .progress = o->progress,
				.staging_dir = staging, .type = o->type};
	LiveBackupResult res;
	PgError err = {{0}};
	int64_t t0 = mono_ns();
	char a[32], b[32], c[32], blocks[64] = "";
	int r = mkdir_p(staging, 0700);

	if (r == 0)
		r = live_backup(repo, &lo, &res, &err);
	if (r < 0)
		return report_pg_error(o, r, &err);
	if (res.note[0])
		cli_note("%s", res.note);
	if (!strcmp(res.type, "incr"))
		snprintf(blocks, sizeof(blocks), " (%llu as changed blocks)",
			 (unsigned long long)res.incremental_files);
	double secs = (double)(mono_ns() - t0) / 1e9;
	printf("backup \"%s\" (%s%s%s): %llu files%s, %s, %s received from the server, %s new in "
	       "the repository, %.1f s (%.1f MB/s), LSN %s..%s on timeline %u\n",
	       res.snap.name, res.type, res.parent[0] ? " of " : "", res.parent,
	       (unsigned long long)res.snap.n_files, blocks,
	       format_bytes(res.snap.logical_bytes, a, sizeof(a)),
	       format_bytes(res.received_bytes, c, sizeof(c)),
	       format_bytes(res.snap.stored_bytes, b, sizeof(b)), secs,
	       secs > 0 ? (double)res.snap.logical_bytes / secs / 1e6 : 0.0, res.start_lsn,
	       res.stop_lsn, res.timeline);
	return backup_made(&res.snap, made);
}

static int backup_local(const BackupOptions *o, Repo *repo, char made[static 64])
{
	_cleanup_free_ char *staging = xasprintf("%s/tmp", repo_workdir(repo));
	LocalBackupOptions lo = {.conninfo = o->conninfo, .pgdata = o->pgdata, .instance = o->instance,
				 .label = o->label, .note = o->note, .type = o->type, .jobs = o->jobs,
				 .progress = o->progress, .staging_dir = staging,
				 .extra_dirs = o->extra_dirs, .n_extra_dirs = o->n_extra_dirs,
				 .verify_blocks = o->verify_blocks};
	LocalBackupResult res;
	PgError err = {{0}};
	int64_t t0 = mono_ns();
	char a[32], b[32], c[32];
	int r = mkdir_p(staging, 0700);

	if (r == 0)
		r = local_backup(repo, &lo, &res, &err);
	if (r < 0)
		return report_pg_error(o, r, &err);
	if (o->type && !strcmp(o->type, "incr") && !strcmp(res.type, "full"))
		cli_note("instance has no snapshot yet; took a full backup");
	else if (!strcmp(res.method, "files"))
		cli_note("%s", res.note);
	double secs = (double)(mono_ns() - t0) / 1e9;
	printf("backup \"%s\" (%s%s%s, %s): %llu files (%llu read, %llu by changed blocks, %llu "
	       "unchanged), %s, read %s, %s new in the repository, %.1f s (%.1f MB/s), LSN %s..%s "
	       "on timeline %u\n",
	       res.snap.name, res.type, res.parent[0] ? " of " : "", res.parent, res.method,
	       (unsigned long long)res.snap.n_files,
	       (unsigned long long)(res.files_read - MIN(res.files_read, res.files_blocks)),
	       (unsigned long long)res.files_blocks, (unsigned long long)res.files_reused,
	       format_bytes(res.snap.logical_bytes, a, sizeof(a)),
	       format_bytes(res.read_bytes, c, sizeof(c)),
	       format_bytes(res.snap.stored_bytes, b, sizeof(b)), secs,
	       secs > 0 ? (double)res.snap.logical_bytes / secs / 1e6 : 0.0, res.start_lsn,
	       res.stop_lsn, res.timeline);
	if (o->verify_blocks)
		printf("verify-blocks: %llu chunks taken unread from the parent were read: none changed "
		       "by WAL, %llu differ without WAL (hint bits), %llu changed after the start "
		       "(replayed)\n",
		       (unsigned long long)res.verified_chunks,
		       (unsigned long long)res.verified_hint_only, (unsigned long long)res.verified_during);
	return backup_made(&res.snap, made);
}

static int backup_from_dir(const BackupOptions *o, Repo *repo, char made[static 64])
{
	_cleanup_free_ char *source = NULL;
	SnapWriter *w = NULL;
	Progress *progress = NULL;
	SnapWriterResult res;
	FromDirError err = {.rel_len = 0};
	uint64_t total = 0;
	int64_t t0 = mono_ns();
	char a[32], b[32];
	int r;

	if (o->progress)
		fromdir_total_size(o->from_dir, &total);
	progress_new("backup", total, o->progress, &progress);
	source = xasprintf("dir:%s", o->from_dir);
	SnapWriterOptions wo = {.instance = o->instance, .type = "full", .label = o->label,
				.note = o->note, .source = source, .jobs = o->jobs,
				.progress = progress};
	/* open the snapshot, stream the tree into it, commit */
	r = snapwriter_new(repo, &wo, &w);
	if (r == 0)
		r = fromdir_ingest(w, o->from_dir, &err);
	if (r == 0)
		r = snapwriter_commit(w, &res);
	w = snapwriter_free(w);
	progress = progress_free(progress);
	if (r < 0)
		return report_ingest_error(o, r, &err);

	double secs = (double)(mono_ns() - t0) / 1e9;
	printf("backup \"%s\": %llu files, %s, %s new in the repository, %.1f s (%.1f MB/s)\n",
	       res.name, (unsigned long long)res.n_files, format_bytes(res.logical_bytes, a, sizeof(a)),
	       format_bytes(res.stored_bytes, b, sizeof(b)), secs,
	       secs > 0 ? (double)res.logical_bytes / secs / 1e6 : 0.0);
	if (!strcmp(res.status, SNAP_STATUS_WARNING)) {
		cli_warning("files changed or vanished while they were read; the snapshot's status is "
			    "\"warning\"");
		cli_hint("back up a stopped data directory, or use -d for a running cluster");
	}
	snprintf(made, 64, "%s", res.name);
	return EXIT_OK;
}

/*
 * One backup of a cluster (-d) per instance at a time: an flock on locks/backup-INSTANCE in
 * the repository's working directory (the repository itself, or the cache
 * directory of an S3 or encrypted one, whose writer lock already keeps other
 * machines out), holding who runs it. The second backup refuses with one line
 * naming the first; other instances are not held up. Backups of directory
 * trees (--from-dir) take no guard: two of them cannot get in each other's
 * way. *ret_fd: keep it open until the backup ends.
 */
static int backup_guard(const BackupOptions *o, Repo *repo, int *ret_fd)
{
	const char *instance = o->instance ? o->instance : "main";
	_cleanup_free_ char *dir = xasprintf("%s/locks", repo_workdir(repo));
	_cleanup_free_ char *path = xasprintf("%s/backup-%s", dir, instance);
	/* root backing up another user's repository: the owner's backups must open it too */
	const FileOwner *owner = repo_work_owner(repo);
	char who[256] = "", t[32];
	int n, e = mkdir_owned(dir, 0700, owner);
	int fd = e < 0 ? e : open_owned(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644, owner);

	if (fd < 0) {
		cli_error("could not open the backup lock \"%s\": %s", path, strerror(-fd));
		return EXIT_FAIL;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		n = (int)pread(fd, who, sizeof(who) - 1, 0);
		who[n > 0 ? n : 0] = 0;
		who[strcspn(who, "\n")] = 0;
		close(fd);
		cli_error("a backup of instance \"%s\" is already running (%s)", instance,
			  who[0] ? who : "its process holds the lock");
		return EXIT_FAIL;
	}
	n = snprintf(who, sizeof(who), "pid %ld, started %s\n", (long)getpid(),
		     format_time_iso(now_ns(), t, sizeof(t)));
	if (ftruncate(fd, 0) < 0 || pwrite(fd, who, (size_t)n, 0) != n)
		log_debug("could not write who holds \"%s\": %m", path);
	*ret_fd = fd;
	return EXIT_OK;
}

/*
 * Run the backup and record the attempt, whether it made a snapshot or not,
 * so that status and metrics see failures too (a failure to record is a
 * warning: the backup's own result stands).
 */
static int backup_run(const BackupOptions *o, Repo *repo)
{
	char made[64] = "";
	int64_t started = now_ns();
	_cleanup_close_ int guard = -1;
	int rc = o->from_dir ? EXIT_OK : backup_guard(o, repo, &guard); /* refused: failed too */
	if (rc == EXIT_OK)
		rc = o->from_dir ? backup_from_dir(o, repo, made)
		     : o->pgdata ? backup_local(o, repo, made)
				 : backup_live(o, repo, made);
	const char *error = rc == EXIT_OK ? NULL : *cli_last_error() ? cli_last_error() : "failed";
	int r = catalog_attempt_add(repo_catalog(repo), o->instance ? o->instance : "main", started,
				    now_ns(), made[0] ? made : NULL, error);
	if (r < 0)
		cli_warning("could not record the backup attempt: %s", strerror(-r));
	return rc;
}

/*
 * Neither -d nor --from-dir: the cluster comes from the config file, the
 * instance named by --instance or the only one configured.
 */
static int backup_source_from_config(BackupOptions *o)
{
	const ConfigInstance *in;
	int rc = cli_config_instance("backup", o->instance, &in);
	if (rc != EXIT_OK || !in)
		return rc;
	if (!in->conninfo)
		return cli_usage("backup", "instance \"%s\" has no conninfo in the config file", in->name);
	o->instance = in->name;
	o->conninfo = in->conninfo;
	if (!o->pgdata)
		o->pgdata = in->pgdata;
	if (!o->n_extra_dirs) {
		memcpy(o->extra_dirs, in->extra_dirs, in->n_extra_dirs * sizeof(*in->extra_dirs));
		o->n_extra_dirs = in->n_extra_dirs;
	}
	return EXIT_OK;
}

static int backup_option(int c, char *arg, void *opts)
{
	BackupOptions *o = opts;

	switch (c) {
	case OPT_FROM_DIR: o->from_dir = arg; break;
	case OPT_TYPE: o->type = arg; break;
	case OPT_PGDATA: o->pgdata = arg; break;
	case OPT_EXTRA_DIR:
		if (o->n_extra_dirs == MAX_EXTRA_DIRS)
			return cli_usage("backup", "at most %d --extra-dir", MAX_EXTRA_DIRS);
		o->extra_dirs[o->n_extra_dirs++] = arg;
		break;
	case OPT_LABEL: o->label = arg; break;
	case OPT_NOTE: o->note = arg; break;
	case OPT_EXPIRE: o->expire = true; break;
	case OPT_VERIFY_BLOCKS: o->verify_blocks = true; break;
	}
	return EXIT_OK;
}

static const struct option backup_options[] = {
	{"from-dir", required_argument, NULL, OPT_FROM_DIR},
	{"type", required_argument, NULL, OPT_TYPE},
	{"pgdata", required_argument, NULL, OPT_PGDATA},
	{"extra-dir", required_argument, NULL, OPT_EXTRA_DIR},
	{"label", required_argument, NULL, OPT_LABEL},
	{"note", required_argument, NULL, OPT_NOTE},
	{"expire", no_argument, NULL, OPT_EXPIRE},
	{"verify-blocks", no_argument, NULL, OPT_VERIFY_BLOCKS},
	{0}};

static const CliCommand backup_command = {
	.name = "backup",
	.common = CLI_REPO | CLI_DBNAME | CLI_INSTANCE | CLI_JOBS | CLI_PROGRESS,
	.options = backup_options,
	.option = backup_option,
	.help = backup_help,
};

/* Which source (-d, --pgdata, --from-dir) goes with which option; names are text. */
static int backup_validate_options(const BackupOptions *o)
{
	if (!o->from_dir == !o->conninfo)
		return cli_usage("backup", o->from_dir ? "use either -d or --from-dir, not both"
							: "missing -d CONNINFO or --from-dir DIR");
	if (o->type && strcmp(o->type, "full") != 0 && strcmp(o->type, "incr") != 0)
		return cli_usage("backup", "invalid --type \"%s\" (full or incr)", o->type);
	if (o->type && !strcmp(o->type, "incr") && o->from_dir)
		return cli_usage("backup", "--type incr needs -d CONNINFO (--from-dir takes full snapshots)");
	if (o->verify_blocks && !o->pgdata)
		return cli_usage("backup", "--verify-blocks needs --pgdata (it re-reads the files on this host)");
	if (o->pgdata && !o->conninfo)
		return cli_usage("backup", "--pgdata needs -d CONNINFO for pg_backup_start/stop");
	if (o->n_extra_dirs && !o->pgdata)
		return cli_usage("backup", "--extra-dir needs --pgdata (directories on the database host)");
	if (o->label && !json_text_is_clean(o->label))
		return cli_usage("backup", "the label must be UTF-8 text without control characters");
	if (o->note && !json_text_is_clean(o->note))
		return cli_usage("backup", "the note must be UTF-8 text without control characters");
	if (o->instance)
		return cli_check_instance("backup", o->instance);
	return EXIT_OK;
}

/* The source given on the command line, else the config file's; checked. */
static int backup_validate(BackupOptions *o)
{
	struct stat st;
	int rc;

	if (!o->from_dir && !o->conninfo && (rc = backup_source_from_config(o)) != EXIT_OK)
		return rc;
	if ((rc = backup_validate_options(o)) != EXIT_OK)
		return rc;
	if (o->from_dir && stat(o->from_dir, &st) < 0) {
		cli_error("could not open directory \"%s\": %m", o->from_dir);
		return EXIT_FAIL;
	}
	if (o->from_dir && !S_ISDIR(st.st_mode)) {
		cli_error("\"%s\" is not a directory", o->from_dir);
		return EXIT_FAIL;
	}
	return EXIT_OK;
}

int cmd_backup(int argc, char **argv)
{
	BackupOptions o = {0};
	Repo *repo = NULL;
	CliArgs a;
	int rc = cli_parse(&backup_command, argc, argv, &a, &o);

	if (rc != CLI_CONTINUE)
		return rc;
	o.repo = a.repo;
	o.conninfo = a.conninfo;
	o.instance = a.instance;
	o.jobs = a.jobs;
	o.progress = a.progress;
	rc = backup_validate(&o);
	if (rc != EXIT_OK)
		return rc;
	/* the repository, as its writer */
	rc = cli_open_repo_writer(o.repo, &repo);
	if (rc != EXIT_OK)
		return rc;
	o.repo = repo_path(repo);
	/* --expire: refused up front when the instance has no policy */
	if (o.expire && (rc = expire_check_policy(repo, o.instance ? o.instance : "main")) != EXIT_OK)
		return cli_close_repo(repo, rc);
	/* passwords older versions recorded go; the backup, recorded as an attempt */
	scrub_secrets(repo);
	rc = backup_run(&o, repo);
	/* --expire: the instance's policy applied */
	if (rc == EXIT_OK && o.expire)
		rc = expire_apply_policy(repo, o.instance ? o.instance : "main");
	/* publish the catalog */
	return cli_close_repo(repo, rc);
}
