/*
 * status and metrics: what monitoring asks of a repository, per instance:
 * the last successful backup and its age, the last failed attempt, the last
 * verify, whether the WAL archive is continuous from the newest snapshot, and
 * the repository's size and deduplication. status is for people and for
 * Nagios-style checks (--max-age); metrics is the Prometheus text format,
 * on stdout or written atomically for node_exporter's textfile collector.
 */
#include "common/json.h"
#include "common/util.h"
#include "store/catalog.h"
#include "tools/cli.h"
#include "tools/config.h"
#include "tools/opts.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { OPT_MAX_AGE = 0x100, OPT_TEXTFILE };

/* What status and metrics say of one instance. */
typedef struct InstanceStatus {
	char *name;
	uint64_t n_snapshots;
	bool has_ok, has_verified, has_failure;
	SnapshotInfo ok;       /* the newest snapshot whose status is ok or warning */
	SnapshotInfo verified; /* the snapshot verified last */
	BackupAttempt failure; /* the newest failed attempt */
	uint64_t n_failed;     /* failed attempts since the last successful one */
	CliWalCoverage wal;    /* from the newest successful snapshot on */
} InstanceStatus;

typedef struct Status {
	InstanceStatus *v;
	size_t n;
	CatalogStats stats;
	int64_t now;
} Status;

/* ---- gathering ---- */

typedef struct Newest {
	char ok[64], verified[64];
	int64_t verified_time;
	uint64_t n;
} Newest;

static int newest_cb(const SnapshotInfo *s, void *userdata)
{
	Newest *n = userdata;
	n->n++;
	if (!strcmp(s->status, SNAP_STATUS_OK) || !strcmp(s->status, SNAP_STATUS_WARNING))
		snprintf(n->ok, sizeof(n->ok), "%s", s->name);
	if (s->verified && s->verified_time >= n->verified_time) {
		snprintf(n->verified, sizeof(n->verified), "%s", s->name);
		n->verified_time = s->verified_time;
	}
	return 0;
}

static int instance_gather(Repo *repo, InstanceStatus *in)
{
	Catalog *c = repo_catalog(repo);
	Newest n = {.verified_time = INT64_MIN};
	int r = catalog_snapshot_foreach(c, in->name, newest_cb, &n);

	in->n_snapshots = n.n;
	if (r == 0 && n.ok[0]) {
		r = catalog_snapshot_get(c, n.ok, in->name, &in->ok);
		in->has_ok = r == 0;
	}
	if (r == 0 && n.verified[0]) {
		r = catalog_snapshot_get(c, n.verified, in->name, &in->verified);
		in->has_verified = r == 0;
	}
	if (r == 0) {
		r = catalog_attempt_last(c, in->name, true, &in->failure, &in->n_failed);
		in->has_failure = r == 0;
		if (r == -ENOENT)
			r = 0;
	}
	if (r < 0) {
		cli_error("could not read the catalog of \"%s\": %s", repo_path(repo), strerror(-r));
		return EXIT_FAIL;
	}
	return in->has_ok ? cli_wal_coverage(repo, &in->ok, &in->wal) : EXIT_OK;
}

static void status_clear(Status *st)
{
	for (size_t i = 0; i < st->n; i++) {
		free(st->v[i].name);
		snapshot_info_clear(&st->v[i].ok);
		snapshot_info_clear(&st->v[i].verified);
		backup_attempt_clear(&st->v[i].failure);
	}
	free(st->v);
	*st = (Status){0};
}

static void add_name(Status *st, const char *name)
{
	for (size_t i = 0; i < st->n; i++)
		if (!strcmp(st->v[i].name, name))
			return;
	st->v = xrealloc(st->v, (st->n + 1) * sizeof(*st->v));
	st->v[st->n++] = (InstanceStatus){.name = xstrdup(name)};
}

static int cmp_instance(const void *a, const void *b)
{
	return strcmp(((const InstanceStatus *)a)->name, ((const InstanceStatus *)b)->name);
}

/*
 * The instances: the one named, else every instance with snapshots or
 * attempts in the repository and every one the config file names (one never
 * backed up is what monitoring must see).
 */
static int status_gather(Repo *repo, const char *instance, Status *st)
{
	const Config *conf;
	char **names = NULL;
	size_t n = 0;
	int r, rc = EXIT_OK;

	*st = (Status){.now = now_ns()};
	if (instance)
		add_name(st, instance);
	else {
		r = catalog_instances(repo_catalog(repo), &names, &n);
		if (r < 0) {
			cli_error("could not read the catalog of \"%s\": %s", repo_path(repo), strerror(-r));
			return EXIT_FAIL;
		}
		for (size_t i = 0; i < n; i++) {
			add_name(st, names[i]);
			free(names[i]);
		}
		free(names);
		if (cli_config(&conf) == EXIT_OK)
			for (size_t i = 0; i < config_n_instances(conf); i++)
				add_name(st, config_instance_at(conf, i)->name);
		if (st->n)
			qsort(st->v, st->n, sizeof(*st->v), cmp_instance);
	}
	for (size_t i = 0; i < st->n && rc == EXIT_OK; i++)
		rc = instance_gather(repo, &st->v[i]);
	r = rc == EXIT_OK ? catalog_stats(repo_catalog(repo), &st->stats) : 0;
	if (r < 0) {
		cli_error("could not read the catalog of \"%s\": %s", repo_path(repo), strerror(-r));
		rc = EXIT_FAIL;
	}
	if (rc != EXIT_OK)
		status_clear(st);
	return rc;
}

static double dedup_ratio(const CatalogStats *s)
{
	return s->chunk_plain_bytes ? (double)s->logical_bytes / (double)s->chunk_plain_bytes : 0;
}

static int64_t age_s(const Status *st, int64_t ns) { return (st->now - ns) / 1000000000; }

/* "45s", "12m 3s", "3h 2m", "2d 4h" */
static const char *format_age(int64_t s, char *buf, size_t len)
{
	if (s < 0)
		s = 0;
	if (s < 60)
		snprintf(buf, len, "%llds", (long long)s);
	else if (s < 3600)
		snprintf(buf, len, "%lldm %llds", (long long)(s / 60), (long long)(s % 60));
	else if (s < 86400)
		snprintf(buf, len, "%lldh %lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
	else
		snprintf(buf, len, "%lldd %lldh", (long long)(s / 86400), (long long)(s % 86400 / 3600));
	return buf;
}

/* ---- status ---- */

static void print_instance(const Status *st, const InstanceStatus *in)
{
	char t[32], age[32];
	printf("instance \"%s\": %llu snapshot(s)\n", in->name, (unsigned long long)in->n_snapshots);
	if (in->has_ok)
		printf("  last backup:   %s (%s, %s) at %s, %s ago\n", in->ok.name, in->ok.type,
		       in->ok.status, format_time_iso(in->ok.stop_time, t, sizeof(t)),
		       format_age(age_s(st, in->ok.stop_time), age, sizeof(age)));
	else
		printf("  last backup:   none\n");
	if (in->has_failure)
		printf("  last failure:  %s: %s (%llu since the last success)\n",
		       format_time_iso(in->failure.finished, t, sizeof(t)), in->failure.error,
		       (unsigned long long)in->n_failed);
	else
		printf("  last failure:  none\n");
	if (in->has_verified)
		printf("  last verify:   %s at %s: %s\n", in->verified.name,
		       format_time_iso(in->verified.verified_time, t, sizeof(t)),
		       in->verified.verified_ok ? "ok" : "FAILED");
	else
		printf("  last verify:   never\n");
	if (!in->has_ok || !in->wal.known)
		printf("  WAL archive:   -\n");
	else if (!in->wal.archived)
		printf("  WAL archive:   segment %s of the last backup is not archived\n", in->wal.from);
	else if (in->wal.continuous)
		printf("  WAL archive:   continuous from the last backup to %s (timeline %u)\n",
		       in->wal.to, in->wal.timeline);
	else
		printf("  WAL archive:   a gap after %s (the archive goes on to %s, timeline %u)\n",
		       in->wal.to, in->wal.last, in->wal.timeline);
}

static void json_instance(JsonWriter *w, const Status *st, const InstanceStatus *in)
{
	char t[32];
	json_begin_object(w);
	json_key(w, "instance"); json_string(w, in->name);
	json_key(w, "snapshots"); json_uint(w, in->n_snapshots);
	json_key(w, "last_backup");
	if (in->has_ok) {
		json_begin_object(w);
		json_key(w, "name"); json_string(w, in->ok.name);
		json_key(w, "type"); json_string(w, in->ok.type);
		json_key(w, "status"); json_string(w, in->ok.status);
		json_key(w, "time"); json_string(w, format_time_iso(in->ok.stop_time, t, sizeof(t)));
		json_key(w, "age_seconds"); json_int(w, age_s(st, in->ok.stop_time));
		json_end_object(w);
	} else
		json_null(w);
	json_key(w, "last_failure");
	if (in->has_failure) {
		json_begin_object(w);
		json_key(w, "time"); json_string(w, format_time_iso(in->failure.finished, t, sizeof(t)));
		json_key(w, "error"); json_string(w, in->failure.error);
		json_end_object(w);
	} else
		json_null(w);
	json_key(w, "failures_since_success"); json_uint(w, in->n_failed);
	json_key(w, "last_verify");
	if (in->has_verified) {
		json_begin_object(w);
		json_key(w, "name"); json_string(w, in->verified.name);
		json_key(w, "time");
		json_string(w, format_time_iso(in->verified.verified_time, t, sizeof(t)));
		json_key(w, "ok"); json_bool(w, in->verified.verified_ok);
		json_end_object(w);
	} else
		json_null(w);
	json_key(w, "wal");
	if (in->has_ok && in->wal.known) {
		json_begin_object(w);
		json_key(w, "timeline"); json_uint(w, in->wal.timeline);
		json_key(w, "last_segment"); json_string(w, in->wal.last[0] ? in->wal.last : NULL);
		json_key(w, "continuous"); json_bool(w, in->wal.continuous);
		json_end_object(w);
	} else
		json_null(w);
	json_end_object(w);
}

static void status_print(const Status *st, bool json)
{
	const CatalogStats *s = &st->stats;
	char a[32], b[32];
	if (json) {
		JsonWriter w;
		json_init(&w, stdout);
		json_begin_object(&w);
		json_key(&w, "instances");
		json_begin_array(&w);
		for (size_t i = 0; i < st->n; i++)
			json_instance(&w, st, &st->v[i]);
		json_end_array(&w);
		json_key(&w, "repository");
		json_begin_object(&w);
		json_key(&w, "snapshots"); json_uint(&w, s->n_snapshots);
		json_key(&w, "logical_bytes"); json_uint(&w, s->logical_bytes);
		json_key(&w, "stored_bytes"); json_uint(&w, s->pack_bytes);
		json_key(&w, "dedup_ratio"); json_double(&w, dedup_ratio(s));
		json_end_object(&w);
		json_end_object(&w);
		putchar('\n');
		return;
	}
	for (size_t i = 0; i < st->n; i++)
		print_instance(st, &st->v[i]);
	if (!st->n)
		printf("no instance: nothing backed up yet\n");
	printf("repository: %s stored, %s logical in %llu snapshot(s), dedup %.2fx\n",
	       format_bytes(s->pack_bytes, a, sizeof(a)), format_bytes(s->logical_bytes, b, sizeof(b)),
	       (unsigned long long)s->n_snapshots, dedup_ratio(s));
}

/* --max-age: one error line per instance whose last success is older (or missing). */
static int status_check_age(const Status *st, int64_t max_age)
{
	char age[32], lim[32];
	int rc = EXIT_OK;
	for (size_t i = 0; i < st->n; i++) {
		const InstanceStatus *in = &st->v[i];
		if (!in->has_ok) {
			cli_error("instance \"%s\" has no successful backup", in->name);
			rc = EXIT_FAIL;
		} else if (age_s(st, in->ok.stop_time) > max_age) {
			cli_error("instance \"%s\": the last successful backup is %s old (--max-age %s)",
				  in->name, format_age(age_s(st, in->ok.stop_time), age, sizeof(age)),
				  format_age(max_age, lim, sizeof(lim)));
			rc = EXIT_FAIL;
		}
	}
	if (!st->n) {
		cli_error("no instance has a successful backup");
		rc = EXIT_FAIL;
	}
	return rc;
}

static int status_option(int c, char *arg, void *opts)
{
	int64_t *max_age = opts;
	if (c == OPT_MAX_AGE && (parse_duration(arg, max_age) < 0 || *max_age <= 0))
		return cli_usage("status", "invalid --max-age \"%s\": a duration such as 26h or 2d", arg);
	return EXIT_OK;
}

static const struct option status_options[] = {
	{"max-age", required_argument, NULL, OPT_MAX_AGE}, {0}};

static const CliCommand status_command = {
	.name = "status",
	.common = CLI_REPO | CLI_INSTANCE | CLI_JSON,
	.options = status_options,
	.option = status_option,
	.help = "Usage: pgbakfs status [--repo PATH] [--instance NAME] [--json]\n"
		"                      [--max-age DURATION]\n\n"
		"Per instance: the last successful backup and its age, the last failed\n"
		"attempt (backups record every attempt), the last verify and its result,\n"
		"and whether the WAL archive is continuous from the last backup; then the\n"
		"repository's size and deduplication. Instances are those of the\n"
		"repository and of the config file, or the one --instance names.\n\n"
		"  --max-age DURATION  (e.g. 26h, 2d) exit 1, with one error line per\n"
		"                 instance, when an instance's last successful backup is\n"
		"                 older or missing: a check for Nagios, cron or systemd\n",
};

/*
 * Each instance's (or --instance's) last backups, failures, verify and WAL,
 * and the repository's size: an exit code.
 */
static int status_load(const CliArgs *a, Status *st)
{
	Repo *repo = NULL;
	int rc = cli_open_repo(a->repo, &repo);

	if (rc == EXIT_OK)
		rc = status_gather(repo, a->instance, st);
	repo_free(repo);
	return rc;
}

int cmd_status(int argc, char **argv)
{
	int64_t max_age = -1;
	Status st;
	CliArgs a;
	int rc = cli_parse(&status_command, argc, argv, &a, &max_age);

	if (rc != CLI_CONTINUE)
		return rc;
	rc = status_load(&a, &st);
	if (rc != EXIT_OK)
		return rc;
	/* printed for people (or as JSON) */
	status_print(&st, a.json);
	fflush(stdout);
	/* --max-age: an error line per instance without a recent enough backup */
	if (max_age > 0)
		rc = status_check_age(&st, max_age);
	status_clear(&st);
	return rc;
}

/* ---- metrics ---- */

/* A label value in the text exposition format: \\, \" and \n escaped. */
static void put_label(FILE *f, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			fputc('\\', f);
		if (*v == '\n')
			fputs("\\n", f);
		else
			fputc(*v, f);
	}
}

static void family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample(FILE *f, const char *name, const char *instance, double v)
{
	fprintf(f, "%s", name);
	if (instance) {
		fputs("{instance=\"", f);
		put_label(f, instance);
		fputs("\"}", f);
	}
	if (v > -1e15 && v < 1e15 && v == (double)(int64_t)v)
		fprintf(f, " %.0f\n", v);
	else
		fprintf(f, " %.3f\n", v);
}

static double seconds(int64_t ns) { return (double)ns / 1e9; }

/* Each family once, with a sample per instance that has a value for it. */
static void metrics_write(FILE *f, const Status *st)
{
	const CatalogStats *s = &st->stats;
	family(f, "pgbakfs_snapshots", "gauge", "Visible snapshots of the instance.");
	for (size_t i = 0; i < st->n; i++)
		sample(f, "pgbakfs_snapshots", st->v[i].name, (double)st->v[i].n_snapshots);
	family(f, "pgbakfs_backup_last_success_timestamp_seconds", "gauge",
	       "Unix time the instance's last successful backup finished.");
	for (size_t i = 0; i < st->n; i++)
		if (st->v[i].has_ok)
			sample(f, "pgbakfs_backup_last_success_timestamp_seconds", st->v[i].name,
			       seconds(st->v[i].ok.stop_time));
	family(f, "pgbakfs_backup_last_success_duration_seconds", "gauge",
	       "How long the instance's last successful backup took.");
	for (size_t i = 0; i < st->n; i++)
		if (st->v[i].has_ok)
			sample(f, "pgbakfs_backup_last_success_duration_seconds", st->v[i].name,
			       seconds(st->v[i].ok.stop_time - st->v[i].ok.start_time));
	family(f, "pgbakfs_backup_last_success_stored_bytes", "gauge",
	       "Bytes the instance's last successful backup added to the repository.");
	for (size_t i = 0; i < st->n; i++)
		if (st->v[i].has_ok)
			sample(f, "pgbakfs_backup_last_success_stored_bytes", st->v[i].name,
			       (double)st->v[i].ok.stored_bytes);
	family(f, "pgbakfs_backup_last_failure_timestamp_seconds", "gauge",
	       "Unix time the instance's last failed backup attempt ended.");
	for (size_t i = 0; i < st->n; i++)
		if (st->v[i].has_failure)
			sample(f, "pgbakfs_backup_last_failure_timestamp_seconds", st->v[i].name,
			       seconds(st->v[i].failure.finished));
	family(f, "pgbakfs_backup_failures_since_success", "gauge",
	       "Failed backup attempts of the instance since its last successful one.");
	for (size_t i = 0; i < st->n; i++)
		sample(f, "pgbakfs_backup_failures_since_success", st->v[i].name,
		       (double)st->v[i].n_failed);
	family(f, "pgbakfs_verify_last_timestamp_seconds", "gauge",
	       "Unix time of the instance's last verify.");
	for (size_t i = 0; i < st->n; i++)
		if (st->v[i].has_verified)
			sample(f, "pgbakfs_verify_last_timestamp_seconds", st->v[i].name,
			       seconds(st->v[i].verified.verified_time));
	family(f, "pgbakfs_verify_last_success", "gauge",
	       "1 when the instance's last verify started PostgreSQL on the snapshot, else 0.");
	for (size_t i = 0; i < st->n; i++)
		if (st->v[i].has_verified)
			sample(f, "pgbakfs_verify_last_success", st->v[i].name,
			       st->v[i].verified.verified_ok ? 1 : 0);
	family(f, "pgbakfs_wal_continuous", "gauge",
	       "1 when the WAL archive is continuous from the instance's last successful backup.");
	for (size_t i = 0; i < st->n; i++)
		if (st->v[i].has_ok && st->v[i].wal.known)
			sample(f, "pgbakfs_wal_continuous", st->v[i].name, st->v[i].wal.continuous ? 1 : 0);
	family(f, "pgbakfs_repository_logical_bytes", "gauge", "Sum of the sizes of all snapshots.");
	sample(f, "pgbakfs_repository_logical_bytes", NULL, (double)s->logical_bytes);
	family(f, "pgbakfs_repository_stored_bytes", "gauge", "Bytes of packs in the repository.");
	sample(f, "pgbakfs_repository_stored_bytes", NULL, (double)s->pack_bytes);
	family(f, "pgbakfs_repository_dedup_ratio", "gauge",
	       "Logical bytes over unique chunk bytes (before compression).");
	sample(f, "pgbakfs_repository_dedup_ratio", NULL, dedup_ratio(s));
}

/* DIR/pgbakfs.prom, replaced atomically (node_exporter never reads half a file). */
static int metrics_textfile(const char *dir, const char *text, size_t len)
{
	_cleanup_free_ char *path = xasprintf("%s/pgbakfs.prom", dir);
	int r = file_write_atomic(path, text, len, 0644);
	if (r < 0) {
		cli_error("could not write \"%s\": %s", path, strerror(-r));
		return EXIT_FAIL;
	}
	return EXIT_OK;
}

static int metrics_option(int c, char *arg, void *opts)
{
	if (c == OPT_TEXTFILE)
		*(const char **)opts = arg;
	return EXIT_OK;
}

static const struct option metrics_options[] = {
	{"textfile", required_argument, NULL, OPT_TEXTFILE}, {0}};

static const CliCommand metrics_command = {
	.name = "metrics",
	.common = CLI_REPO | CLI_INSTANCE,
	.options = metrics_options,
	.option = metrics_option,
	.help = "Usage: pgbakfs metrics [--repo PATH] [--instance NAME] [--textfile DIR]\n\n"
		"What \"pgbakfs status\" says, in the Prometheus text exposition format:\n"
		"metrics pgbakfs_*, label instance=\"...\" (e.g.\n"
		"pgbakfs_backup_last_success_timestamp_seconds). With --textfile, written\n"
		"to DIR/pgbakfs.prom atomically, for node_exporter's textfile collector.\n",
};

/* The exposition text of st, in memory (written at once): an exit code. */
static int metrics_text(const Status *st, char **ret, size_t *ret_len)
{
	FILE *f = open_memstream(ret, ret_len);

	if (!f) {
		cli_error("out of memory");
		return EXIT_FAIL;
	}
	metrics_write(f, st);
	if (fclose(f) != 0) {
		free(*ret);
		*ret = NULL;
		cli_error("out of memory");
		return EXIT_FAIL;
	}
	return EXIT_OK;
}

int cmd_metrics(int argc, char **argv)
{
	const char *textfile = NULL;
	char *text = NULL;
	size_t len = 0;
	Status st;
	CliArgs a;
	int rc = cli_parse(&metrics_command, argc, argv, &a, &textfile);

	if (rc != CLI_CONTINUE)
		return rc;
	/* what status says */
	rc = status_load(&a, &st);
	if (rc != EXIT_OK)
		return rc;
	/* as exposition text, on stdout or into DIR/pgbakfs.prom */
	rc = metrics_text(&st, &text, &len);
	status_clear(&st);
	if (rc == EXIT_OK && textfile)
		rc = metrics_textfile(textfile, text, len);
	else if (rc == EXIT_OK && fwrite(text, 1, len, stdout) != len)
		rc = EXIT_FAIL;
	free(text);
	return rc;
}
