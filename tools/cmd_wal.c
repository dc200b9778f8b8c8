/* The WAL archive commands: wal-push, wal-fetch, restore-point; WAL reports for stats/show. */
#include "common/json.h"
#include "common/util.h"
#include "ingest/changes.h"
#include "ingest/pgconn.h"
#include "ingest/walstream.h"
#include "store/wal.h"
#include "tools/cli.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

enum { OPT_REPO = 0x100, OPT_NO_SUMMARY };

static const char *const wal_name_hint =
	"expected a WAL segment (24 hex digits), a timeline history file (8 hex digits + "
	"\".history\"), a backup history file or a \".partial\" segment";

/*
 * --repo and --help (and --no-summary where ret_no_summary is not NULL), then
 * exactly n_args positionals into args.
 */
static int parse_args(const char *cmd, const char *help, int argc, char **argv, int n_args,
		      const char **ret_repo, bool *ret_no_summary, const char **args)
{
	static const struct option opts[] = {
		{"repo", required_argument, NULL, OPT_REPO},
		{"no-summary", no_argument, NULL, OPT_NO_SUMMARY},
		{"help", no_argument, NULL, 'h'}, {0}};
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c == OPT_REPO) {
			*ret_repo = optarg;
		} else if (c == OPT_NO_SUMMARY && ret_no_summary) {
			*ret_no_summary = true;
		} else if (c == 'h') {
			fputs(help, stdout);
			return -1;
		} else {
			return cli_usage(cmd, "invalid option");
		}
	}
	if (argc - optind < n_args)
		return cli_usage(cmd, "missing argument");
	if (argc - optind > n_args)
		return cli_usage(cmd, "unexpected argument \"%s\"", argv[optind + n_args]);
	for (int i = 0; i < n_args; i++)
		args[i] = argv[optind + i];
	return EXIT_OK;
}

static int read_wal_file(const char *path, void **ret, size_t *ret_len)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	_cleanup_free_ void *buf = NULL;
	struct stat st;
	ssize_t n;

	if (fd < 0 || fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	if ((uint64_t)st.st_size > PGBAKFS_WAL_FILE_MAX)
		return -EFBIG;
	buf = malloc(st.st_size ? (size_t)st.st_size : 1);
	if (!buf)
		return -ENOMEM;
	n = pread_full(fd, buf, (size_t)st.st_size, 0);
	if (n < 0)
		return (int)n;
	if (n != st.st_size)
		return -EIO; /* shrank while we read: PostgreSQL will retry */
	*ret = TAKE_PTR(buf);
	*ret_len = (size_t)n;
	return 0;
}

/*
 * Beside an archived segment, the summary of the blocks its records touch,
 * for block-level incrementals. The segment is archived already: a summary
 * that cannot be made or stored costs a later backup some reading (it
 * summarizes the segment itself), never the archive. A warning, exit 0.
 */
static void push_summary(Repo *repo, const char *name, const void *buf, size_t len)
{
	_cleanup_free_ uint8_t *sum = NULL;
	size_t sum_len = 0;
	int r = changes_summary_build(name, buf, len, &sum, &sum_len);
	if (r == 0)
		r = wal_summary_put(repo, name, sum, sum_len);
	if (r < 0)
		cli_warning("could not store the block summary of WAL file \"%s\": %s", name,
			    strerror(-r));
}

int cmd_wal_push(int argc, char **argv)
{
	const char *repo_opt = NULL, *path = NULL;
	_cleanup_free_ void *buf = NULL;
	const char *name;
	WalPushResult res = WAL_PUSH_STORED;
	WalSegmentHeader hdr;
	char why[256];
	WalName wn;
	Repo *repo = NULL;
	size_t len = 0;
	bool no_summary = false;
	int r, rc = parse_args("wal-push",
			       "Usage: pgbakfs wal-push PATH [--repo PATH] [--no-summary]\n\n"
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
			       "                a block-level incremental then summarizes it itself)\n",
			       argc, argv, 1, &repo_opt, &no_summary, &path);
	if (rc != EXIT_OK)
		return rc < 0 ? EXIT_OK : rc;
	/* check the name before anything else: it becomes the object's name */
	name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	if (wal_name_parse(name, &wn) < 0) {
		cli_error("\"%s\" is not the name of a WAL file", name);
		cli_hint("%s", wal_name_hint);
		return EXIT_FAIL;
	}
	r = read_wal_file(path, &buf, &len);
	if (r == -EFBIG || r == -EINVAL) {
		cli_error("\"%s\" is not a WAL file (%s)", path,
			  r == -EFBIG ? "larger than 1 GiB" : "not a regular file");
		return EXIT_FAIL;
	}
	if (r < 0) {
		cli_error("could not read file \"%s\": %s", path, strerror(-r));
		return EXIT_FAIL;
	}
	/* is it the file its name says? A wrong file archived is worse than none */
	r = wal_file_check(name, buf, len, &hdr, why, sizeof(why));
	if (r < 0) {
		cli_error("\"%s\" is not a valid WAL file: %s", path, why);
		return EXIT_FAIL;
	}
	rc = cli_open_repo(repo_opt, &repo);
	if (rc != EXIT_OK)
		return rc;
	/* a segment of another cluster than the one backed up here */
	r = hdr.pg_version ? wal_system_id_check(repo, hdr.system_id, why, sizeof(why)) : 0;
	if (r == -EBADMSG) {
		cli_error("\"%s\" is not a WAL file of this repository's cluster: %s", path, why);
		repo_free(repo);
		return EXIT_FAIL;
	} else if (r < 0) {
		cli_error("could not read the catalog of \"%s\": %s", repo_path(repo), strerror(-r));
		repo_free(repo);
		return EXIT_FAIL;
	}
	/* store it: one object, compressed once */
	r = wal_push(repo, name, buf, len, &res);
	if (r == -PGBAKFS_WAL_ECONFLICT) {
		cli_error("WAL file \"%s\" is already archived with different content", name);
		cli_hint("the archived copy was kept; is another cluster archiving into \"%s\"?",
			 repo_path(repo));
		rc = EXIT_FAIL;
	} else if (r < 0) {
		cli_error("could not archive WAL file \"%s\": %s", name, strerror(-r));
		rc = EXIT_FAIL;
	} else if (res == WAL_PUSH_REPAIRED) {
		cli_note("the archived copy of WAL file \"%s\" was damaged and has been replaced", name);
	}
	if (rc == EXIT_OK && wn.kind == WAL_KIND_SEGMENT && !no_summary)
		push_summary(repo, name, buf, len);
	repo_free(repo);
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

int cmd_wal_fetch(int argc, char **argv)
{
	const char *repo_opt = NULL, *args[2] = {NULL, NULL};
	_cleanup_free_ void *buf = NULL;
	WalName wn;
	Repo *repo = NULL;
	size_t len = 0;
	int r, rc = parse_args("wal-fetch",
			       "Usage: pgbakfs wal-fetch NAME DEST [--repo PATH]\n\n"
			       "Write the archived WAL file NAME to DEST, verified:\n"
			       "restore_command = 'pgbakfs wal-fetch %f %p'.\n\n"
			       "Exit status: 0 fetched; 1 not archived (no message), which\n"
			       "PostgreSQL reads as the end of the archive; 126 for every other\n"
			       "failure (a damaged copy, an unreadable object or repository, an\n"
			       "unreachable bucket after retries, DEST not writable), which makes\n"
			       "PostgreSQL stop recovery instead of ending it early. Wrong usage\n"
			       "exits 126 too, not 2: a restore_command missing %%p must not end\n"
			       "recovery as if the archive were exhausted.\n",
			       argc, argv, 2, &repo_opt, NULL, args);
	if (rc != EXIT_OK) /* --help: -1 */
		return rc < 0 ? EXIT_OK : EXIT_STOP_RECOVERY;
	if (wal_name_parse(args[0], &wn) < 0) {
		/* PostgreSQL only asks for WAL file names: this is a misconfiguration */
		cli_error("\"%s\" is not the name of a WAL file", args[0]);
		cli_hint("%s", wal_name_hint);
		return EXIT_STOP_RECOVERY;
	}
	/* a repository that cannot be opened says nothing about the file: stop */
	rc = cli_open_repo(repo_opt, &repo);
	if (rc != EXIT_OK)
		return EXIT_STOP_RECOVERY;
	r = wal_fetch(repo, args[0], &buf, &len);
	if (r == -ENOENT) {
		rc = EXIT_FAIL; /* PostgreSQL asks for files that may not exist: stay quiet */
	} else if (r < 0) {
		fetch_error(args[0], r, !repo_is_local_backend(repo));
		rc = EXIT_STOP_RECOVERY;
	} else {
		/* temporary file, fsync, rename: PostgreSQL never sees half a segment */
		r = file_write_atomic(args[1], buf, len, 0600);
		if (r < 0) {
			cli_error("could not write file \"%s\": %s; recovery stops here", args[1],
				  strerror(-r));
			rc = EXIT_STOP_RECOVERY;
		}
	}
	repo_free(repo);
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

int cmd_wal_summary(int argc, char **argv)
{
	enum { OPT_TIMELINE = 0x200, OPT_FROM, OPT_TO };
	static const struct option opts[] = {
		{"repo", required_argument, NULL, OPT_REPO},
		{"timeline", required_argument, NULL, OPT_TIMELINE},
		{"from", required_argument, NULL, OPT_FROM},
		{"to", required_argument, NULL, OPT_TO},
		{"help", no_argument, NULL, 'h'},
		{0}};
	const char *repo_opt = NULL, *from_s = NULL, *to_s = NULL;
	unsigned long tli = 1;
	uint64_t from, to;
	WalBlockSet *b = NULL;
	Repo *repo = NULL;
	char why[256] = "", *end;
	int c, r, rc;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_REPO: repo_opt = optarg; break;
		case OPT_TIMELINE:
			errno = 0;
			tli = strtoul(optarg, &end, 10);
			if (errno || *end || tli == 0 || tli > UINT32_MAX)
				return cli_usage("wal-summary", "invalid --timeline \"%s\"", optarg);
			break;
		case OPT_FROM: from_s = optarg; break;
		case OPT_TO: to_s = optarg; break;
		case 'h':
			printf("Usage: pgbakfs wal-summary --from LSN --to LSN [--timeline N] [--repo PATH]\n\n"
			       "Print every block the archived WAL records in [--from, --to) of one\n"
			       "timeline (default 1) reference, one line each in pg_walsummary's format:\n"
			       "\"TS 1663, DB 5, REL 16384, FORK main: block 7\", and \"...: limit N\"\n"
			       "where a relation fork was created, truncated or dropped (limit 0 of\n"
			       "REL 0: the database was created or dropped). It is what block-level\n"
			       "incrementals read, and what PostgreSQL 17's pg_wal_summary_contents()\n"
			       "gives for the same range. Fails when a segment is not archived or its\n"
			       "WAL cannot be summarized.\n");
			return EXIT_OK;
		default: return cli_usage("wal-summary", "invalid option");
		}
	}
	if (optind != argc)
		return cli_usage("wal-summary", "unexpected argument \"%s\"", argv[optind]);
	if (!from_s || !to_s)
		return cli_usage("wal-summary", "missing --from LSN or --to LSN");
	if (lsn_parse(from_s, &from) < 0 || lsn_parse(to_s, &to) < 0 || to < from)
		return cli_usage("wal-summary", "invalid LSN range \"%s\" to \"%s\"", from_s, to_s);
	rc = cli_open_repo(repo_opt, &repo);
	if (rc != EXIT_OK)
		return rc;
	r = changes_range(repo, (uint32_t)tli, from, to, &b, why, sizeof(why));
	if (r < 0) {
		cli_error("cannot summarize %s to %s on timeline %lu: %s", from_s, to_s, tli,
			  why[0] ? why : strerror(-r));
		rc = EXIT_FAIL;
	} else {
		r = walblocks_foreach(b, print_relfork, NULL);
		rc = r < 0 ? EXIT_FAIL : EXIT_OK;
	}
	walblocks_free(b);
	repo_free(repo);
	return rc;
}

int cmd_restore_point(int argc, char **argv)
{
	static const struct option opts[] = {
		{"dbname", required_argument, NULL, 'd'},
		{"repo", required_argument, NULL, OPT_REPO}, /* accepted: every command takes it */
		{"help", no_argument, NULL, 'h'},
		{0}};
	const char *conninfo = NULL, *name;
	PgConn *conn = NULL;
	PgError err = {{0}};
	char lsn[64];
	int c, r;

	while ((c = getopt_long(argc, argv, "hd:", opts, NULL)) != -1) {
		switch (c) {
		case 'd': conninfo = optarg; break;
		case OPT_REPO: break;
		case 'h':
			printf("Usage: pgbakfs restore-point NAME -d CONNINFO\n\n"
			       "Create a named restore point on the server (pg_create_restore_point)\n"
			       "and print its LSN. Restore to it with --target-name NAME.\n");
			return EXIT_OK;
		default: return cli_usage("restore-point", "invalid option");
		}
	}
	if (optind + 1 != argc)
		return cli_usage("restore-point", optind >= argc ? "missing restore point NAME"
								  : "too many arguments");
	if (!conninfo)
		return cli_usage("restore-point", "missing -d CONNINFO");
	name = argv[optind];
	if (!*name)
		return cli_usage("restore-point", "empty restore point name");
	r = pgconn_connect(conninfo, false, &conn, &err);
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

int cli_wal_stats(Repo *repo, struct JsonWriter *w)
{
	WalTimeline *v = NULL;
	size_t n = 0;
	char a[25] = "", b[25] = "", sz[32];
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
		const WalTimeline *t = &v[i];
		if (t->n_segments) {
			segment_name(t, t->first, a);
			segment_name(t, t->last, b);
		}
		if (w) {
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
			continue;
		}
		printf("%s timeline %u: ", i == 0 ? "WAL archive:   " : "               ",
		       t->timeline);
		if (t->n_segments)
			printf("%s .. %s, ", a, b);
		printf("%llu file(s), %s stored", (unsigned long long)t->n_files,
		       format_bytes(t->stored_bytes, sz, sizeof(sz)));
		printf(t->n_gaps ? ", %zu gap(s)\n" : ", no gaps\n", t->n_gaps);
		for (size_t j = 0; j < t->n_gaps; j++) {
			segment_name(t, t->gaps[j].from, a);
			segment_name(t, t->gaps[j].to, b);
			printf("                 missing: %s .. %s\n", a, b);
		}
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
