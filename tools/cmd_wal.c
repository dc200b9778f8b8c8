/* The WAL archive commands: wal-push, wal-fetch, restore-point; WAL reports for stats/show. */
#include "common/json.h"
#include "common/util.h"
#include "ingest/changes.h"
#include "ingest/pgconn.h"
#include "ingest/walstream.h"
#include "common/fasthash.h"
#include "common/log.h"
#include "store/wal.h"
#include "store/walspool.h"
#include "tools/cli.h"
#include "tools/opts.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { OPT_NO_SUMMARY = 0x100, OPT_PREFETCH, OPT_PARALLEL, OPT_TIMELINE, OPT_FROM, OPT_TO };

/*
 * --prefetch / --parallel: at most this many files per call, on at most
 * WAL_THREADS threads, fewer when their buffers (a file and its object each)
 * would pass WAL_THREADS_MEM
 */
#define WAL_BATCH_MAX 64
#define WAL_THREADS 8
#define WAL_THREADS_MEM (512ULL << 20)

static unsigned wal_threads(unsigned n, uint64_t file_size)
{
	unsigned t = MIN(n, WAL_THREADS);
	while (t > 1 && 2 * t * file_size > WAL_THREADS_MEM)
		t--;
	return t;
}

static const char *const wal_name_hint =
	"expected a WAL segment (24 hex digits), a timeline history file (8 hex digits + "
	"\".history\"), a backup history file or a \".partial\" segment";

/*
 * wal-push and wal-fetch: the same option table (an option of the other one
 * is an invalid option), one count option each ("parallel", "prefetch": 1 to
 * WAL_BATCH_MAX), and --no-summary for wal-push.
 */
typedef struct WalArgs {
	CliArgs a;
	const char *cmd;
	const char *count_opt;
	unsigned count;
	bool takes_no_summary, no_summary;
} WalArgs;

static int wal_option(int c, char *arg, void *opts)
{
	WalArgs *x = opts;
	char *end;
	unsigned long v;

	if (c == OPT_NO_SUMMARY && x->takes_no_summary) {
		x->no_summary = true;
		return EXIT_OK;
	}
	if ((c != OPT_PREFETCH && c != OPT_PARALLEL) ||
	    strcmp(x->count_opt, c == OPT_PREFETCH ? "prefetch" : "parallel") != 0)
		return cli_usage(x->cmd, "invalid option");
	errno = 0;
	v = strtoul(arg, &end, 10);
	if (errno || *end || !*arg || v < 1 || v > WAL_BATCH_MAX)
		return cli_usage(x->cmd, "invalid --%s \"%s\": a number from 1 to %d", x->count_opt, arg,
				 WAL_BATCH_MAX);
	x->count = (unsigned)v;
	return EXIT_OK;
}

static const struct option wal_options[] = {
	{"no-summary", no_argument, NULL, OPT_NO_SUMMARY},
	{"prefetch", required_argument, NULL, OPT_PREFETCH},
	{"parallel", required_argument, NULL, OPT_PARALLEL},
	{0}};

/* -EINVAL: not a regular file; -EFBIG: over 1 GiB; -EIO: shrank while read (PostgreSQL retries). */
static int read_wal_file(const char *path, void **ret, size_t *ret_len)
{
	uint8_t *buf = NULL;
	int r = file_read_regular(path, false, PGBAKFS_WAL_FILE_MAX, &buf, ret_len);
	if (r == 0)
		*ret = buf;
	return r;
}

/*
 * Beside an archived segment, the summary of the blocks its records touch,
 * for block-level incrementals. The segment is archived already: a summary
 * that cannot be made or stored costs a later backup some reading (it
 * summarizes the segment itself), never the archive. Thread-safe.
 */
static int summary_store(Repo *repo, const char *name, const void *buf, size_t len)
{
	_cleanup_free_ uint8_t *sum = NULL;
	size_t sum_len = 0;
	int r = changes_summary_build(name, buf, len, &sum, &sum_len);
	if (r == 0)
		r = wal_summary_put(repo, name, sum, sum_len);
	return r;
}

static void summary_warning(const char *name, int r)
{
	cli_warning("could not store the block summary of WAL file \"%s\": %s", name, strerror(-r));
}

/*
 * The spool directory of one repository (and, for wal-push, one pg_wal):
 * <cache dir>/wal-spool/<kind>-<16 hex digits of a hash of where the
 * repository is>. It is found without opening the repository, so a file
 * served from it costs no request. NULL (after a warning) when it cannot be
 * named: the caller works without it.
 */
static char *spool_dir(const CliLocation *cl, const char *kind, const char *pg_wal)
{
	static const uint8_t key[16] = "pgbakfs spool v1";
	_cleanup_free_ char *where = NULL, *repo_real = NULL, *wal_real = NULL;
	uint8_t h[FASTHASH_LEN];
	char hex[17];

	if (cl->loc.s3) {
		where = xasprintf("s3\n%s\n%s\n%s", cl->endpoint ? cl->endpoint : "", cl->bucket,
				  cl->prefix ? cl->prefix : "");
	} else {
		repo_real = realpath(cl->loc.path, NULL);
		if (!repo_real)
			goto fail;
		where = xasprintf("dir\n%s", repo_real);
	}
	if (pg_wal) {
		char *w;
		wal_real = realpath(pg_wal, NULL);
		if (!wal_real)
			goto fail;
		w = xasprintf("%s\n%s", where, wal_real);
		free(where);
		where = w;
	}
	fasthash128(key, where, strlen(where), h);
	hex_encode(h, 8, hex);
	return xasprintf("%s/wal-spool/%s-%s", cl->cache_dir, kind, hex);
fail:
	cli_warning("could not resolve path \"%s\": %m; working without a spool",
		    pg_wal && repo_real ? pg_wal : cl->loc.path);
	return NULL;
}

/* ---- wal-push --parallel ---- */

/* One file of a parallel push: the one PostgreSQL asked for is job 0. */
typedef struct PushJob {
	char name[PGBAKFS_WAL_NAME_MAX + 1];
	void *buf; /* job 0: read and checked already; the others: read by the job */
	size_t len;
	int r;             /* 0 or -errno */
	WalPushResult res;
	int summary_r;     /* of the block summary */
	bool skipped;      /* not this cluster's (as far as we know): left for PostgreSQL to ask */
	char why[256];     /* a file that fails wal_file_check */
} PushJob;

typedef struct PushBatch {
	Repo *repo;
	WalSpool *spool;
	const char *pg_wal;
	PushJob *jobs;
	uint64_t sysid;     /* the system identifier approved for the repository */
	bool any_sysid;     /* the repository records none: every one is approved */
	bool no_summary;
} PushBatch;

static int push_job(size_t i, void *userdata)
{
	PushBatch *b = userdata;
	PushJob *j = &b->jobs[i];
	WalSegmentHeader hdr;
	WalName wn;

	if (!j->buf) {
		char path[PATH_MAX];
		snprintf(path, sizeof(path), "%s/%s", b->pg_wal, j->name);
		j->r = read_wal_file(path, &j->buf, &j->len);
		if (j->r == 0 && wal_file_check(j->name, j->buf, j->len, &hdr, j->why,
						sizeof(j->why)) < 0)
			j->r = -EBADMSG;
		if (j->r < 0)
			goto out;
		/* the catalog is not for threads: another cluster's file waits for its own call */
		if (hdr.pg_version && !b->any_sysid && hdr.system_id != b->sysid) {
			j->skipped = true;
			goto out;
		}
	}
	j->r = wal_push(b->repo, j->name, j->buf, j->len, &j->res);
	if (j->r == 0 && wal_name_parse(j->name, &wn) == 0 && wn.kind == WAL_KIND_SEGMENT &&
	    !b->no_summary)
		j->summary_r = summary_store(b->repo, j->name, j->buf, j->len);
	/* durable in the repository: PostgreSQL's later call for it needs no request */
	if (j->r == 0 && i > 0 && walspool_mark_done(b->spool, j->name, j->buf, j->len) < 0)
		j->skipped = true; /* pushed, but unrecorded: its own call pushes it again (a no-op) */
out:
	if (i > 0) {
		free(j->buf);
		j->buf = NULL;
	}
	return 0;
}

/* archive_status/NAME.ready exists */
static bool still_ready(const char *name, void *userdata)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/archive_status/%s.ready", (const char *)userdata, name);
	return access(path, F_OK) == 0;
}

/* PostgreSQL's archiver order (pgarch.c's ready_file_comparator): history files first, then by name */
static int ready_cmp(const void *a, const void *b)
{
	const PushJob *x = a, *y = b;
	bool hx = strstr(x->name, ".history") != NULL, hy = strstr(y->name, ".history") != NULL;
	if (hx != hy)
		return hx ? -1 : 1;
	return strcmp(x->name, y->name);
}

/*
 * The jobs: name (its bytes in buf) first, then up to n_max - 1 other files
 * PostgreSQL has ready to archive (archive_status/NAME.ready) and that have
 * no record in the spool, in the archiver's order.
 */
static int ready_jobs(const char *pg_wal, WalSpool *spool, const char *name, void *buf,
		      size_t len, unsigned n_max, PushJob **ret, size_t *ret_n)
{
	char dir[PATH_MAX];
	PushJob *v = xcalloc(1, sizeof(*v));
	size_t n = 1, cap = 1;
	struct dirent *de;
	DIR *d;

	snprintf(v[0].name, sizeof(v[0].name), "%s", name);
	v[0].buf = buf;
	v[0].len = len;
	d = n_max > 1 && (size_t)snprintf(dir, sizeof(dir), "%s/archive_status", pg_wal) < sizeof(dir)
		    ? opendir(dir) : NULL;
	while (d && (de = readdir(d))) {
		size_t l = strlen(de->d_name);
		char cand[PGBAKFS_WAL_NAME_MAX + 1], rec[PATH_MAX];
		WalName wn;
		if (l <= 6 || l - 6 > PGBAKFS_WAL_NAME_MAX || strcmp(de->d_name + l - 6, ".ready"))
			continue;
		snprintf(cand, sizeof(cand), "%.*s", (int)(l - 6), de->d_name);
		snprintf(rec, sizeof(rec), "%s/%s.done", walspool_dir(spool), cand);
		if (wal_name_parse(cand, &wn) < 0 || strcmp(cand, name) == 0 || access(rec, F_OK) == 0)
			continue;
		if (n == cap) {
			cap *= 2;
			v = realloc(v, cap * sizeof(*v));
			if (!v)
				abort();
		}
		v[n] = (PushJob){0};
		snprintf(v[n].name, sizeof(v[n].name), "%s", cand);
		n++;
	}
	if (d)
		closedir(d);
	qsort(v + 1, n - 1, sizeof(*v), ready_cmp);
	*ret = v;
	*ret_n = MIN(n, (size_t)n_max);
	return 0;
}

/* What PostgreSQL's call is told about its own file (job 0). */
static int push_report(Repo *repo, const PushJob *j)
{
	if (j->r == -PGBAKFS_WAL_ECONFLICT) {
		cli_error("WAL file \"%s\" is already archived with different content", j->name);
		cli_hint("the archived copy was kept; is another cluster archiving into \"%s\"?",
			 repo_path(repo));
		return EXIT_FAIL;
	} else if (j->r < 0) {
		cli_error("could not archive WAL file \"%s\": %s", j->name, strerror(-j->r));
		return EXIT_FAIL;
	} else if (j->res == WAL_PUSH_REPAIRED) {
		cli_note("the archived copy of WAL file \"%s\" was damaged and has been replaced",
			 j->name);
	}
	return EXIT_OK;
}

static const CliCommand wal_push_command = {
	.name = "wal-push",
	.common = CLI_REPO,
	.options = wal_options,
	.option = wal_option,
	.n_args = 1,
	.missing = "missing argument",
	.help = "Usage: pgbakfs wal-push PATH [--repo PATH] [--no-summary] [--parallel N]\n\n"
		"Archive one WAL file: archive_command = 'pgbakfs wal-push %p'.\n"
		"Pushing a file that is archived with the same content succeeds;\n"
		"with other content it fails and the archived copy is kept.\n"
		"A segment must look like one: a WAL segment size, a first page\n"
		"header of PostgreSQL 13 to 18 matching its name and size, and\n"
		"the system identifier of a cluster backed up into the repository\n"
		"(when it has any); history and backup files must parse.\n"
		"Beside a segment goes the summary of the blocks its records change,\n"
		"for block-level incrementals (backup --pgdata --type incr); a summary\n"
		"that cannot be stored is a warning, not a failure.\n\n"
		"  --no-summary  archive the segment only (one object per segment, not two;\n"
		"                a block-level incremental then summarizes it itself)\n"
		"  --parallel N  archive PATH and up to N-1 other files PostgreSQL has ready\n"
		"                (pg_wal/archive_status/*.ready) at once, on up to 8 threads;\n"
		"                each one archived is recorded in the cache directory, and\n"
		"                PostgreSQL's call for it later exits 0 without a request\n"
		"                when the file still holds the bytes archived. Exits 0 only\n"
		"                for PATH stored in the repository, as without it\n",
};

/*
 * The file PostgreSQL asks to archive, read and checked: its name first (it
 * becomes the object's name), then that it is the file its name says (a
 * wrong file archived is worse than none). An exit code.
 */
static int push_read(const char *path, const char *name, void **ret, size_t *ret_len,
		     WalSegmentHeader *hdr)
{
	char why[256];
	WalName wn;
	int r;

	if (wal_name_parse(name, &wn) < 0) {
		cli_error("\"%s\" is not the name of a WAL file", name);
		cli_hint("%s", wal_name_hint);
		return EXIT_FAIL;
	}
	r = read_wal_file(path, ret, ret_len);
	if (r == -EFBIG || r == -EINVAL) {
		cli_error("\"%s\" is not a WAL file (%s)", path,
			  r == -EFBIG ? "larger than 1 GiB" : "not a regular file");
		return EXIT_FAIL;
	}
	if (r < 0) {
		cli_error("could not read file \"%s\": %s", path, strerror(-r));
		return EXIT_FAIL;
	}
	if (wal_file_check(name, *ret, *ret_len, hdr, why, sizeof(why)) < 0) {
		cli_error("\"%s\" is not a valid WAL file: %s", path, why);
		return EXIT_FAIL;
	}
	return EXIT_OK;
}

/*
 * --parallel: the spool of this repository and pg_wal (*ret NULL: none, after
 * a warning). 1 when an earlier call archived name with these very bytes.
 */
static int push_spool_open(const CliLocation *cl, const char *pg_wal, const char *name,
			   const void *buf, size_t len, WalSpool **ret, char **ret_path)
{
	int r;

	*ret = NULL;
	*ret_path = spool_dir(cl, "push", pg_wal);
	if (!*ret_path)
		return 0;
	r = walspool_open(*ret_path, ret);
	if (r == 0)
		r = walspool_take_done(*ret, name, buf, len);
	if (r < 0) {
		cli_warning("could not use the WAL spool \"%s\": %s; archiving one file", *ret_path,
			    strerror(-r));
		*ret = walspool_free(*ret);
	}
	return r == 1;
}

/* A segment of another cluster than the one backed up here is refused: an exit code. */
static int push_check_cluster(Repo *repo, const char *path, const WalSegmentHeader *hdr)
{
	char why[256];
	int r = hdr->pg_version ? wal_system_id_check(repo, hdr->system_id, why, sizeof(why)) : 0;

	if (r == -EBADMSG) {
		cli_error("\"%s\" is not a WAL file of this repository's cluster: %s", path, why);
		return EXIT_FAIL;
	}
	if (r < 0) {
		cli_error("could not read the catalog of \"%s\": %s", repo_path(repo), strerror(-r));
		return EXIT_FAIL;
	}
	return EXIT_OK;
}

/* The files pushed ahead of PostgreSQL's call (jobs 1..n-1): a warning for each failure. */
static void push_warn_ahead(const PushJob *jobs, size_t n)
{
	for (size_t i = 1; i < n; i++) {
		const PushJob *j = &jobs[i];
		if (j->r == -EBADMSG && j->why[0])
			cli_warning("could not archive WAL file \"%s\" ahead: not a valid WAL file: %s",
				    j->name, j->why);
		else if (j->r < 0)
			cli_warning("could not archive WAL file \"%s\" ahead: %s", j->name,
				    j->r == -PGBAKFS_WAL_ECONFLICT ? "already archived with different content"
								   : strerror(-j->r));
		if (j->r == 0 && j->summary_r < 0)
			summary_warning(j->name, j->summary_r);
	}
}

/*
 * Push name (its bytes in buf) and, with a spool, up to parallel - 1 other
 * ready files at once; what PostgreSQL's call is told about its own file.
 */
static int push_batch(PushBatch *b, const char *name, void *buf, size_t len, unsigned parallel)
{
	_cleanup_free_ PushJob *jobs = NULL;
	size_t n_jobs = 1;
	char why[256];
	int rc;

	/*
	 * with a catalog that records no system identifier, 0 passes: so does
	 * every one (after a history file, which has none, only then)
	 */
	b->any_sysid = wal_system_id_check(b->repo, 0, why, sizeof(why)) == 0;
	if (b->spool) {
		/* records of files PostgreSQL no longer has ready are of no use */
		if (walspool_prune_done(b->spool, still_ready, (void *)b->pg_wal) < 0)
			log_debug("could not prune the WAL spool \"%s\"", walspool_dir(b->spool));
		ready_jobs(b->pg_wal, b->spool, name, buf, len, parallel, &jobs, &n_jobs);
	} else {
		jobs = xcalloc(1, sizeof(*jobs));
		snprintf(jobs[0].name, sizeof(jobs[0].name), "%s", name);
		jobs[0].buf = buf;
		jobs[0].len = len;
	}
	b->jobs = jobs;
	/* store them: one object each, compressed once, up to WAL_THREADS at a time */
	walspool_run(n_jobs, wal_threads(parallel, len), push_job, b);
	push_warn_ahead(jobs, n_jobs);
	rc = push_report(b->repo, &jobs[0]);
	if (rc == EXIT_OK && jobs[0].summary_r < 0)
		summary_warning(name, jobs[0].summary_r);
	return rc;
}

int cmd_wal_push(int argc, char **argv)
{
	WalArgs x = {.cmd = "wal-push", .count_opt = "parallel", .count = 1, .takes_no_summary = true};
	_cleanup_free_ void *buf = NULL;
	_cleanup_free_ char *spool_path = NULL;
	const char *path, *name;
	WalSegmentHeader hdr;
	char pg_wal[PATH_MAX];
	WalSpool *spool = NULL;
	Repo *repo = NULL;
	CliLocation cl;
	size_t len = 0;
	int rc = cli_parse(&wal_push_command, argc, argv, &x.a, &x);

	if (rc != CLI_CONTINUE)
		return rc;
	path = x.a.args[0];
	name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	/* the file: its name, its bytes, its page header */
	if ((rc = push_read(path, name, &buf, &len, &hdr)) != EXIT_OK ||
	    (rc = cli_location_resolve(x.a.repo, &cl)) != EXIT_OK)
		return rc;
	/* --parallel: archived by an earlier call already, with these very bytes? */
	path_dirname(path, pg_wal, sizeof(pg_wal));
	if (x.count > 1 && push_spool_open(&cl, pg_wal, name, buf, len, &spool, &spool_path)) {
		walspool_free(spool);
		cli_location_clear(&cl);
		return EXIT_OK;
	}
	/* the repository; the segment must be of its cluster */
	rc = cli_open_location(&cl, &repo);
	cli_location_clear(&cl);
	if (rc == EXIT_OK)
		rc = push_check_cluster(repo, path, &hdr);
	/* push it (and, with --parallel, the other files ready) */
	if (rc == EXIT_OK) {
		PushBatch b = {.repo = repo, .spool = spool, .pg_wal = pg_wal,
			       .no_summary = x.no_summary, .sysid = hdr.system_id};
		rc = push_batch(&b, name, buf, len, x.count);
	}
	repo_free(repo);
	walspool_free(spool);
	return rc;
}

/*
 * wal-fetch's exit status for every failure but "not archived". PostgreSQL
 * runs restore_command through system() and reads any exit status up to 125
 * as "this file is not in the archive": it then ends recovery at the end of
 * what it has and promotes, losing every later commit. Above 125 (126, 127:
 * the shell's "not executable", "not found") or death by a signal makes the
 * startup process stop with FATAL instead (RestoreArchivedFile in PostgreSQL
 * 13-15's xlogarchive.c, shell_restore.c from 16: wait_result_is_any_signal(rc,
 * true), i.e. WEXITSTATUS > 125). 126 is the smaller of the two; PostgreSQL's
 * log line calls it "command not executable", so ours comes first and says
 * what really failed.
 */
#define EXIT_STOP_RECOVERY 126

/* One error line for a failed fetch of name (the server log gets it). */
static void fetch_error(const char *name, int r, bool s3)
{
	if (r == -EBADMSG)
		cli_error("archived WAL file \"%s\" is damaged (fails its checksum); recovery stops "
			  "here: push it again from a server that still has it", name);
	else if (r == -EPROTONOSUPPORT)
		cli_error("archived WAL file \"%s\" has a newer format than this pgbakfs supports; "
			  "recovery stops here: upgrade pgbakfs", name);
	else
		cli_error("could not fetch WAL file \"%s\": %s; recovery stops here", name,
			  cli_store_strerror(r, s3));
}

/* ---- wal-fetch --prefetch ---- */

/*
 * The system identifier of the data directory DEST is in, when DEST is in
 * its pg_wal (PostgreSQL's %p is "pg_wal/RECOVERYXLOG", relative to the data
 * directory): the first 8 bytes of global/pg_control. A spooled segment is
 * served only when its xlp_sysid is this one, so the spool of an earlier
 * recovery of another cluster is never replayed into this one. -ENOENT when
 * DEST is not in a pg_wal.
 */
static int dest_system_id(const char *dest, uint64_t *ret)
{
	char dir[PATH_MAX], control[PATH_MAX];
	uint8_t b[8];
	size_t n;
	_cleanup_close_ int fd = -1;

	path_dirname(dest, dir, sizeof(dir));
	n = strlen(dir);
	if (strcmp(dir, "pg_wal") == 0)
		snprintf(control, sizeof(control), "global/pg_control");
	else if (n > 7 && strcmp(dir + n - 7, "/pg_wal") == 0)
		snprintf(control, sizeof(control), "%.*sglobal/pg_control", (int)(n - 6), dir);
	else
		return -ENOENT;
	fd = open(control, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (pread_full(fd, b, sizeof(b), 0) != (ssize_t)sizeof(b))
		return -EIO;
	memcpy(ret, b, sizeof(*ret)); /* the server's byte order, as xlp_sysid is read */
	return 0;
}

/* A spooled or prefetched segment may be served: it is the segment its name says, of this cluster. */
static bool spool_acceptable(const char *name, const void *buf, size_t len, uint64_t sysid)
{
	WalSegmentHeader hdr;
	char why[256];
	return wal_file_check(name, buf, len, &hdr, why, sizeof(why)) == 0 &&
	       hdr.system_id == sysid;
}

typedef struct FetchBatch {
	Repo *repo;
	WalSpool *spool;
	char (*names)[25];
	int *results;           /* per name: 0, -errno, or -EBADMSG when not acceptable */
	void *first;            /* names[0], the file asked for, when fetched */
	size_t first_len;
	uint64_t sysid;
	pthread_mutex_t lock;   /* guards spool_error */
	int spool_error;        /* the first error writing the spool */
} FetchBatch;

static int fetch_job(size_t i, void *userdata)
{
	FetchBatch *b = userdata;
	void *buf = NULL;
	size_t len = 0;
	int r = wal_fetch(b->repo, b->names[i], &buf, &len);

	b->results[i] = r;
	if (r == -ENOENT)
		return i > 0 ? WALSPOOL_STOP : 0; /* the end of the archive: stop prefetching */
	if (r < 0)
		return 0;
	if (i == 0) {
		b->first = buf;
		b->first_len = len;
		return 0;
	}
	if (!spool_acceptable(b->names[i], buf, len, b->sysid))
		r = -EBADMSG; /* never served: the call for it fetches it again */
	else
		r = walspool_put(b->spool, b->names[i], buf, len);
	if (r < 0 && r != -EBADMSG) {
		pthread_mutex_lock(&b->lock);
		if (!b->spool_error)
			b->spool_error = r;
		pthread_mutex_unlock(&b->lock);
	}
	b->results[i] = r;
	free(buf);
	return 0;
}

/*
 * 0 when the spool's file "sysid" says sysid, else 1 after writing sysid
 * there: what the spool holds is another cluster's (or nothing).
 */
static int spool_system_id(WalSpool *s, uint64_t sysid)
{
	char path[PATH_MAX], want[32];
	_cleanup_free_ char *text = NULL;
	size_t n;

	snprintf(path, sizeof(path), "%s/sysid", walspool_dir(s));
	snprintf(want, sizeof(want), "%llu\n", (unsigned long long)sysid);
	if (file_read_all(path, 32, &text, &n) == 0 && strcmp(text, want) == 0)
		return 0;
	(void)file_write_atomic(path, want, strlen(want), 0600);
	return 1;
}

/*
 * Segment size the spool saw last (the file "segsize"): names of the segments
 * after one depend on it. 16 MiB until a segment was fetched.
 */
static uint32_t spool_seg_size(WalSpool *s)
{
	char path[PATH_MAX];
	_cleanup_free_ char *text = NULL;
	size_t n;
	unsigned long v;

	snprintf(path, sizeof(path), "%s/segsize", walspool_dir(s));
	if (file_read_all(path, 32, &text, &n) < 0)
		return PGBAKFS_WAL_DEFAULT_SEG_SIZE;
	v = strtoul(text, NULL, 10);
	return wal_seg_size_valid(v) ? (uint32_t)v : PGBAKFS_WAL_DEFAULT_SEG_SIZE;
}

/*
 * name (a segment) from the spool, or fetched with the next ones: *ret_buf
 * and *ret_len, or -ENOENT, or another -errno of wal_fetch.
 */
static int fetch_prefetching(CliLocation *cl, WalSpool *spool, const char *name,
			     const WalName *wn, unsigned prefetch, uint64_t sysid, Repo **repo,
			     void **ret_buf, size_t *ret_len)
{
	_cleanup_free_ char (*names)[25] = xcalloc(prefetch, sizeof(*names));
	_cleanup_free_ int *results = xcalloc(prefetch, sizeof(*results));
	uint32_t seg_size;
	uint64_t segno;
	size_t n = 1;
	int r = walspool_take(spool, name, ret_buf, ret_len);

	/* served from the spool: verified when fetched, checked again now */
	if (r == 0 && spool_acceptable(name, *ret_buf, *ret_len, sysid)) {
		log_debug("WAL file \"%s\" served from the spool \"%s\"", name, walspool_dir(spool));
		return 0;
	}
	if (r == 0 || r == -EBADMSG) {
		cli_warning("spooled WAL file \"%s\" in \"%s\" is damaged; fetching it again", name,
			    walspool_dir(spool));
		if (r == 0)
			free(*ret_buf);
	}
	/* anything not after name on its timeline will not be asked for */
	r = walspool_trim(spool, wn, prefetch, NULL);
	if (r < 0)
		log_debug("could not trim the WAL spool \"%s\": %s", walspool_dir(spool), strerror(-r));
	if (cli_open_archive(cl, repo) != EXIT_OK)
		return -EIO; /* reported; *repo stays NULL */
	/* the segment asked for and the next ones not spooled yet, all at once */
	seg_size = spool_seg_size(spool);
	snprintf(names[0], sizeof(names[0]), "%s", name);
	segno = wn->seg < 0x100000000ULL / seg_size ? wal_name_segno(wn, seg_size) : 0;
	for (unsigned k = 1; segno && k < prefetch; k++) {
		char next[25];
		wal_segno_to_name(wn->timeline, segno + k, seg_size, next);
		if (!walspool_has(spool, next))
			memcpy(names[n++], next, sizeof(next));
	}
	FetchBatch b = {.repo = *repo, .spool = spool, .names = names, .results = results,
			.sysid = sysid};
	pthread_mutex_init(&b.lock, NULL);
	walspool_run(n, wal_threads(prefetch, seg_size), fetch_job, &b);
	pthread_mutex_destroy(&b.lock);
	if (b.spool_error)
		cli_warning("could not spool prefetched WAL files in \"%s\": %s; the file asked for "
			    "is served, the next ones are fetched when asked for", walspool_dir(spool),
			    strerror(-b.spool_error));
	if (results[0] < 0)
		return results[0];
	if (b.first_len != seg_size && wal_seg_size_valid(b.first_len)) {
		char path[PATH_MAX], text[32];
		snprintf(path, sizeof(path), "%s/segsize", walspool_dir(spool));
		snprintf(text, sizeof(text), "%zu\n", b.first_len);
		(void)file_write_atomic(path, text, strlen(text), 0600);
	}
	*ret_buf = b.first;
	*ret_len = b.first_len;
	return 0;
}

static const CliCommand wal_fetch_command = {
	.name = "wal-fetch",
	.common = CLI_REPO,
	.options = wal_options,
	.option = wal_option,
	.n_args = 2,
	.missing = "missing argument",
	.help = "Usage: pgbakfs wal-fetch NAME DEST [--repo PATH] [--prefetch N]\n\n"
		"Write the archived WAL file NAME to DEST, verified:\n"
		"restore_command = 'pgbakfs wal-fetch %f %p'.\n\n"
		"  --prefetch N  with a segment NAME, fetch the next N-1 segments of its\n"
		"                timeline too, on up to 8 threads, into a spool in the cache\n"
		"                directory (wal-spool/): a later call for one of them is\n"
		"                served from there without a request. Each is verified\n"
		"                when fetched and checked again when served (a damaged one\n"
		"                is fetched again); a timeline history file asked for, or\n"
		"                a segment out of order, clears what is no longer ahead.\n"
		"                Needs DEST in a data directory's pg_wal, as %p is:\n"
		"                segments of another system identifier are never served.\n\n"
		"Exit status: 0 fetched; 1 not archived (no message), which\n"
		"PostgreSQL reads as the end of the archive; 126 for every other\n"
		"failure (a damaged copy, an unreadable object or repository, an\n"
		"unreachable bucket after retries, DEST not writable), which makes\n"
		"PostgreSQL stop recovery instead of ending it early. Wrong usage\n"
		"exits 126 too, not 2: a restore_command missing %p must not end\n"
		"recovery as if the archive were exhausted.\n",
};

/*
 * --prefetch: the spool, when DEST says which cluster it is for (*ret NULL:
 * none). Recovery may change timelines: after a history file nothing spooled
 * is surely ahead any more; nor for another cluster (an earlier recovery's).
 */
static void fetch_spool_open(const CliLocation *cl, const WalName *wn, const char *dest,
			     uint64_t *ret_sysid, WalSpool **ret, char **ret_path)
{
	int r;

	*ret = NULL;
	if (dest_system_id(dest, ret_sysid) < 0 || !(*ret_path = spool_dir(cl, "fetch", NULL)))
		return;
	r = walspool_open(*ret_path, ret);
	if (r == 0 && (wn->kind != WAL_KIND_SEGMENT || spool_system_id(*ret, *ret_sysid) != 0))
		r = walspool_trim(*ret, NULL, 0, NULL);
	if (r < 0) {
		cli_warning("could not use the WAL spool \"%s\": %s; fetching one file", *ret_path,
			    strerror(-r));
		*ret = walspool_free(*ret);
	}
}

/* What PostgreSQL is told: wal_fetch's result r, then DEST written. The exit status. */
static int fetch_finish(Repo *repo, int r, const char *name, const char *dest, const void *buf,
			size_t len)
{
	/* a repository that cannot be opened (reported) says nothing about the file: stop */
	if (r < 0 && !repo)
		return EXIT_STOP_RECOVERY;
	if (r == -ENOENT)
		return EXIT_FAIL; /* PostgreSQL asks for files that may not exist: stay quiet */
	if (r < 0) {
		fetch_error(name, r, !repo_is_local_backend(repo));
		return EXIT_STOP_RECOVERY;
	}
	/* temporary file, fsync, rename: PostgreSQL never sees half a segment */
	r = file_write_atomic(dest, buf, len, 0600);
	if (r < 0) {
		cli_error("could not write file \"%s\": %s; recovery stops here", dest, strerror(-r));
		return EXIT_STOP_RECOVERY;
	}
	return EXIT_OK;
}

int cmd_wal_fetch(int argc, char **argv)
{
	WalArgs x = {.cmd = "wal-fetch", .count_opt = "prefetch", .count = 1};
	_cleanup_free_ void *buf = NULL;
	_cleanup_free_ char *spool_path = NULL;
	const char *name, *dest;
	WalName wn;
	Repo *repo = NULL;
	WalSpool *spool = NULL;
	CliLocation cl;
	uint64_t sysid = 0;
	size_t len = 0;
	int r, rc = cli_parse(&wal_fetch_command, argc, argv, &x.a, &x);

	if (rc != CLI_CONTINUE) /* wrong usage must stop recovery too */
		return rc == EXIT_OK ? EXIT_OK : EXIT_STOP_RECOVERY;
	name = x.a.args[0];
	dest = x.a.args[1];
	if (wal_name_parse(name, &wn) < 0) {
		/* PostgreSQL only asks for WAL file names: this is a misconfiguration */
		cli_error("\"%s\" is not the name of a WAL file", name);
		cli_hint("%s", wal_name_hint);
		return EXIT_STOP_RECOVERY;
	}
	if (cli_location_resolve(x.a.repo, &cl) != EXIT_OK)
		return EXIT_STOP_RECOVERY;
	/* --prefetch: the spool, when DEST says which cluster it is for */
	if (x.count > 1)
		fetch_spool_open(&cl, &wn, dest, &sysid, &spool, &spool_path);
	/* a segment from the spool or fetched with the next ones; else just the file */
	if (spool && wn.kind == WAL_KIND_SEGMENT)
		r = fetch_prefetching(&cl, spool, name, &wn, x.count, sysid, &repo, &buf, &len);
	else
		r = cli_open_archive(&cl, &repo) == EXIT_OK ? wal_fetch(repo, name, &buf, &len) : -EIO;
	cli_location_clear(&cl);
	/* into DEST, or the exit status that tells PostgreSQL why not */
	rc = fetch_finish(repo, r, name, dest, buf, len);
	repo_free(repo);
	walspool_free(spool);
	return rc;
}

static const char *const fork_names[] = {"main", "fsm", "vm", "init"};

/* pg_walsummary's lines: "TS 1663, DB 5, REL 16384, FORK main: limit 0", "...: block 7" */
static int print_relfork(const WalRelFork *rf, uint32_t limit, const uint32_t *blocks, size_t n,
			 void *ud)
{
	const char *fork = rf->fork < ELEMENTSOF(fork_names) ? fork_names[rf->fork] : "?";
	(void)ud;
	if (limit != UINT32_MAX)
		printf("TS %u, DB %u, REL %u, FORK %s: limit %u\n", rf->spc, rf->db, rf->rel, fork,
		       limit);
	for (size_t i = 0; i < n; i++)
		printf("TS %u, DB %u, REL %u, FORK %s: block %u\n", rf->spc, rf->db, rf->rel, fork,
		       blocks[i]);
	return 0;
}

typedef struct WalSummaryArgs {
	CliArgs a;
	const char *from_s, *to_s;
	unsigned long tli;
	uint64_t from, to;
} WalSummaryArgs;

static int wal_summary_option(int c, char *arg, void *opts)
{
	WalSummaryArgs *x = opts;
	char *end;

	switch (c) {
	case OPT_TIMELINE:
		errno = 0;
		x->tli = strtoul(arg, &end, 10);
		if (errno || *end || x->tli == 0 || x->tli > UINT32_MAX)
			return cli_usage("wal-summary", "invalid --timeline \"%s\"", arg);
		break;
	case OPT_FROM: x->from_s = arg; break;
	case OPT_TO: x->to_s = arg; break;
	}
	return EXIT_OK;
}

static const struct option wal_summary_options[] = {
	{"timeline", required_argument, NULL, OPT_TIMELINE},
	{"from", required_argument, NULL, OPT_FROM},
	{"to", required_argument, NULL, OPT_TO},
	{0}};

static const CliCommand wal_summary_command = {
	.name = "wal-summary",
	.common = CLI_REPO,
	.options = wal_summary_options,
	.option = wal_summary_option,
	.help = "Usage: pgbakfs wal-summary --from LSN --to LSN [--timeline N] [--repo PATH]\n\n"
		"Print every block the archived WAL records in [--from, --to) of one\n"
		"timeline (default 1) reference, one line each in pg_walsummary's format:\n"
		"\"TS 1663, DB 5, REL 16384, FORK main: block 7\", and \"...: limit N\"\n"
		"where a relation fork was created, truncated or dropped (limit 0 of\n"
		"REL 0: the database was created or dropped). It is what block-level\n"
		"incrementals read, and what PostgreSQL 17's pg_wal_summary_contents()\n"
		"gives for the same range. Fails when a segment is not archived or its\n"
		"WAL cannot be summarized.\n",
};

int cmd_wal_summary(int argc, char **argv)
{
	WalSummaryArgs x = {.tli = 1};
	WalBlockSet *b = NULL;
	Repo *repo = NULL;
	char why[256] = "";
	int r, rc = cli_parse(&wal_summary_command, argc, argv, &x.a, &x);

	if (rc != CLI_CONTINUE)
		return rc;
	if (!x.from_s || !x.to_s)
		return cli_usage("wal-summary", "missing --from LSN or --to LSN");
	if (lsn_parse(x.from_s, &x.from) < 0 || lsn_parse(x.to_s, &x.to) < 0 || x.to < x.from)
		return cli_usage("wal-summary", "invalid LSN range \"%s\" to \"%s\"", x.from_s, x.to_s);
	rc = cli_open_repo(x.a.repo, &repo);
	if (rc != EXIT_OK)
		return rc;
	/* the blocks the range's records touch, from the summaries or the segments */
	r = changes_range(repo, (uint32_t)x.tli, x.from, x.to, &b, why, sizeof(why));
	if (r < 0) {
		cli_error("cannot summarize %s to %s on timeline %lu: %s", x.from_s, x.to_s, x.tli,
			  why[0] ? why : strerror(-r));
		rc = EXIT_FAIL;
	} else {
		/* one line each, as pg_walsummary prints them */
		r = walblocks_foreach(b, print_relfork, NULL);
		rc = r < 0 ? EXIT_FAIL : EXIT_OK;
	}
	walblocks_free(b);
	repo_free(repo);
	return rc;
}

static const CliCommand restore_point_command = {
	.name = "restore-point",
	.common = CLI_REPO | CLI_DBNAME, /* --repo accepted: every command takes it */
	.n_args = 1,
	.missing = "missing restore point NAME",
	.help = "Usage: pgbakfs restore-point NAME -d CONNINFO\n\n"
		"Create a named restore point on the server (pg_create_restore_point)\n"
		"and print its LSN. Restore to it with --target-name NAME.\n",
};

int cmd_restore_point(int argc, char **argv)
{
	PgConn *conn = NULL;
	PgError err = {{0}};
	char lsn[64];
	CliArgs a;
	int r, rc = cli_parse(&restore_point_command, argc, argv, &a, NULL);

	if (rc != CLI_CONTINUE)
		return rc;
	if (!a.conninfo)
		return cli_usage("restore-point", "missing -d CONNINFO");
	const char *name = a.args[0];
	if (!*name)
		return cli_usage("restore-point", "empty restore point name");
	/* connect, create it, print its LSN */
	r = pgconn_connect(a.conninfo, false, &conn, &err);
	if (r < 0) {
		cli_error("could not connect to the server: %s", err.msg);
		return EXIT_FAIL;
	}
	r = pgconn_create_restore_point(conn, name, lsn, sizeof(lsn), &err);
	pgconn_free(conn);
	if (r < 0) {
		cli_error("could not create restore point \"%s\": %s", name, err.msg);
		return EXIT_FAIL;
	}
	printf("%s\n", lsn);
	return EXIT_OK;
}

/* ---- reports for stats and show ---- */

static void segment_name(const WalTimeline *t, uint64_t segno, char out[25])
{
	wal_segno_to_name(t->timeline, segno, t->seg_size, out);
}

static int load_timelines(Repo *repo, WalTimeline **ret, size_t *ret_n)
{
	int r = wal_timelines(repo, ret, ret_n);
	if (r < 0)
		cli_error("could not list the WAL archive of \"%s\": %s", repo_path(repo),
			  strerror(-r));
	return r < 0 ? EXIT_FAIL : EXIT_OK;
}

/* One timeline of the archive as a JSON object: its first and last segments, sizes, gaps. */
static void json_timeline(JsonWriter *w, const WalTimeline *t)
{
	char a[25] = "", b[25] = "";

	if (t->n_segments) {
		segment_name(t, t->first, a);
		segment_name(t, t->last, b);
	}
	json_begin_object(w);
	json_key(w, "timeline"); json_uint(w, t->timeline);
	json_key(w, "first"); json_string(w, t->n_segments ? a : NULL);
	json_key(w, "last"); json_string(w, t->n_segments ? b : NULL);
	json_key(w, "files"); json_uint(w, t->n_files);
	json_key(w, "segments"); json_uint(w, t->n_segments);
	json_key(w, "stored_bytes"); json_uint(w, t->stored_bytes);
	json_key(w, "segment_size"); json_uint(w, t->seg_size);
	json_key(w, "gaps");
	json_begin_array(w);
	for (size_t j = 0; j < t->n_gaps; j++) {
		segment_name(t, t->gaps[j].from, a);
		segment_name(t, t->gaps[j].to, b);
		json_begin_object(w);
		json_key(w, "from"); json_string(w, a);
		json_key(w, "to"); json_string(w, b);
		json_end_object(w);
	}
	json_end_array(w);
	json_end_object(w);
}

/* One timeline of the archive as stats lines (the first one headed "WAL archive:"). */
static void print_timeline(const WalTimeline *t, bool first)
{
	char a[25] = "", b[25] = "", sz[32];

	printf("%s timeline %u: ", first ? "WAL archive:   " : "               ", t->timeline);
	if (t->n_segments) {
		segment_name(t, t->first, a);
		segment_name(t, t->last, b);
		printf("%s .. %s, ", a, b);
	}
	printf("%llu file(s), %s stored", (unsigned long long)t->n_files,
	       format_bytes(t->stored_bytes, sz, sizeof(sz)));
	printf(t->n_gaps ? ", %zu gap(s)\n" : ", no gaps\n", t->n_gaps);
	for (size_t j = 0; j < t->n_gaps; j++) {
		segment_name(t, t->gaps[j].from, a);
		segment_name(t, t->gaps[j].to, b);
		printf("                 missing: %s .. %s\n", a, b);
	}
}

int cli_wal_stats(Repo *repo, struct JsonWriter *w)
{
	WalTimeline *v = NULL;
	size_t n = 0;
	int rc = load_timelines(repo, &v, &n);

	if (w) {
		json_key(w, "wal");
		if (rc != EXIT_OK) {
			json_null(w);
			return rc;
		}
		json_begin_array(w);
	} else if (rc != EXIT_OK) {
		return rc;
	} else if (n == 0) {
		printf("WAL archive:    empty\n");
	}
	for (size_t i = 0; i < n; i++) {
		if (w)
			json_timeline(w, &v[i]);
		else
			print_timeline(&v[i], i == 0);
	}
	if (w)
		json_end_array(w);
	wal_timelines_free(v, n);
	return EXIT_OK;
}

int cli_wal_coverage(Repo *repo, const SnapshotInfo *s, CliWalCoverage *ret)
{
	WalTimeline *v = NULL, none = {0};
	const WalTimeline *t = &none;
	size_t n = 0;
	uint64_t lsn, from, to = 0, seg_size;
	int rc;

	*ret = (CliWalCoverage){0};
	if (s->timeline <= 0 || s->timeline > UINT32_MAX || lsn_parse(s->start_lsn, &lsn) < 0)
		return EXIT_OK; /* not from PostgreSQL (--from-dir): no WAL to speak of */
	rc = load_timelines(repo, &v, &n);
	if (rc != EXIT_OK)
		return rc;
	for (size_t i = 0; i < n; i++)
		if (v[i].timeline == (uint32_t)s->timeline)
			t = &v[i];
	none = (WalTimeline){.timeline = (uint32_t)s->timeline,
			     .seg_size = PGBAKFS_WAL_DEFAULT_SEG_SIZE};
	/* the snapshot's own segment size (from its pg_wal) when known, else the archive's */
	if (catalog_snapshot_wal_seg_size(repo_catalog(repo), s->rowid, &seg_size) < 0 ||
	    !wal_seg_size_valid(seg_size))
		seg_size = t->seg_size;
	from = lsn / seg_size;
	ret->known = true;
	ret->timeline = t->timeline;
	/* segments of another size are another cluster's: they do not count */
	ret->archived = seg_size == t->seg_size && wal_timeline_run(t, from, &to) == 0;
	wal_segno_to_name(t->timeline, from, (uint32_t)seg_size, ret->from);
	segment_name(t, to, ret->to);
	if (t->n_segments)
		segment_name(t, t->last, ret->last);
	/* recovery can replay to the end of the last segment of the run */
	snprintf(ret->end_lsn, sizeof(ret->end_lsn), "%X/%X",
		 (uint32_t)(((to + 1) * t->seg_size) >> 32), (uint32_t)((to + 1) * t->seg_size));
	ret->continuous = ret->archived && to == t->last;
	wal_timelines_free(v, n);
	return EXIT_OK;
}

int cli_wal_show(Repo *repo, const SnapshotInfo *s, struct JsonWriter *w)
{
	CliWalCoverage c;
	int rc = cli_wal_coverage(repo, s, &c);

	if (w) {
		json_key(w, "wal");
		if (rc != EXIT_OK || !c.known) {
			json_null(w);
			return rc;
		}
		json_begin_object(w);
		json_key(w, "timeline"); json_uint(w, c.timeline);
		json_key(w, "from"); json_string(w, c.from);
		json_key(w, "to"); json_string(w, c.archived ? c.to : NULL);
		json_key(w, "end_lsn"); json_string(w, c.archived ? c.end_lsn : NULL);
		json_key(w, "continuous"); json_bool(w, c.continuous);
		json_end_object(w);
	} else if (rc != EXIT_OK || !c.known) {
		return rc;
	} else if (!c.archived) {
		printf("WAL archived:  no (segment %s is not in the archive)\n", c.from);
	} else {
		printf("WAL archived:  %s .. %s (timeline %u, %s), recovery up to %s\n", c.from, c.to,
		       c.timeline, c.continuous ? "continuous" : "a gap follows", c.end_lsn);
	}
	return EXIT_OK;
}
