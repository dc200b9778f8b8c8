/* Snapshot records: list, show, delete. */
#include "common/json.h"
#include "common/util.h"
#include "tools/cli.h"

#include <stdio.h>
#include <string.h>

enum { OPT_REPO = 0x100, OPT_JSON, OPT_INSTANCE };

/* All fields of a snapshot, leaving the object open for details. */
static void json_snapshot_open(JsonWriter *w, const SnapshotInfo *s)
{
	char t[40];
	json_begin_object(w);
	json_key(w, "id"); json_string(w, s->name);
	json_key(w, "instance"); json_string(w, s->instance);
	json_key(w, "type"); json_string(w, s->type);
	json_key(w, "parent"); json_string(w, s->parent);
	/* how it was taken: "full", "files" (size/mtime), "blocks" (changed blocks); null: --from-dir, older */
	json_key(w, "method"); json_string(w, s->method);
	json_key(w, "method_note"); json_string(w, s->method_note);
	json_key(w, "read_bytes");
	if (s->has_read_bytes) json_uint(w, s->read_bytes); else json_null(w);
	json_key(w, "label"); json_string(w, s->label);
	json_key(w, "note"); json_string(w, s->note);
	json_key(w, "pinned_until");
	if (s->pinned_until) json_string(w, format_time_iso(s->pinned_until, t, sizeof(t)));
	else json_null(w);
	json_key(w, "start_time"); json_string(w, format_time_iso(s->start_time, t, sizeof(t)));
	json_key(w, "stop_time"); json_string(w, format_time_iso(s->stop_time, t, sizeof(t)));
	json_key(w, "start_lsn"); json_string(w, s->start_lsn);
	json_key(w, "stop_lsn"); json_string(w, s->stop_lsn);
	json_key(w, "timeline");
	if (s->timeline) json_int(w, s->timeline); else json_null(w);
	json_key(w, "pg_version");
	if (s->pg_version) json_int(w, s->pg_version); else json_null(w);
	json_key(w, "system_id"); json_string(w, s->system_id);
	json_key(w, "logical_bytes"); json_uint(w, s->logical_bytes);
	json_key(w, "stored_bytes"); json_uint(w, s->stored_bytes);
	json_key(w, "files"); json_uint(w, s->n_files);
	json_key(w, "status"); json_string(w, s->status);
	json_key(w, "source"); json_string(w, s->source);
	json_key(w, "verified");
	if (s->verified) {
		json_begin_object(w);
		json_key(w, "time"); json_string(w, format_time_iso(s->verified_time, t, sizeof(t)));
		json_key(w, "ok"); json_bool(w, s->verified_ok);
		json_key(w, "details"); json_string(w, s->verified_details);
		json_end_object(w);
	} else {
		json_null(w);
	}
}

static void json_snapshot(JsonWriter *w, const SnapshotInfo *s)
{
	json_snapshot_open(w, s);
	json_end_object(w);
}

typedef struct ListCtx {
	bool json;
	JsonWriter w;
	unsigned n;
} ListCtx;

static int list_one(const SnapshotInfo *s, void *ud)
{
	ListCtx *ctx = ud;
	char t[40], l[32], st[32];
	if (ctx->json) {
		json_snapshot(&ctx->w, s);
	} else {
		double secs = (double)(s->stop_time - s->start_time) / 1e9;
		double ratio = s->stored_bytes ? (double)s->logical_bytes / (double)s->stored_bytes : 0;
		char tli[16] = "-", pin[40] = "-";
		if (ctx->n == 0)
			printf("%-20s %-10s %-5s %-20s %-20s %8s %11s %11s %8s %-12s %-12s %3s %-7s %-20s %s\n",
			       "ID", "INSTANCE", "TYPE", "PARENT", "START (UTC)", "DURATION", "LOGICAL",
			       "STORED", "RATIO", "START LSN", "STOP LSN", "TLI", "STATUS",
			       "PINNED UNTIL", "LABEL");
		if (s->pinned_until > now_ns())
			format_time_iso(s->pinned_until, pin, sizeof(pin));
		format_time_iso(s->start_time, t, sizeof(t));
		if (s->timeline)
			snprintf(tli, sizeof(tli), "%lld", (long long)s->timeline);
		printf("%-20s %-10s %-5s %-20s %-20s %7.1fs %11s %11s ", s->name, s->instance, s->type,
		       s->parent ? s->parent : "-", t, secs,
		       format_bytes(s->logical_bytes, l, sizeof(l)),
		       format_bytes(s->stored_bytes, st, sizeof(st)));
		if (s->stored_bytes)
			printf("%7.1fx ", ratio);
		else
			printf("%8s ", "-");
		printf("%-12s %-12s %3s %-7s %-20s %s%s%s%s\n", s->start_lsn ? s->start_lsn : "-",
		       s->stop_lsn ? s->stop_lsn : "-", tli, s->status, pin, s->label ? s->label : "",
		       s->note ? (s->label ? "  (note: " : "(note: ") : "", s->note ? s->note : "",
		       s->note ? ")" : "");
	}
	ctx->n++;
	return 0;
}

int cmd_list(int argc, char **argv)
{
	static const struct option opts[] = {
		{"repo", required_argument, NULL, OPT_REPO},
		{"json", no_argument, NULL, OPT_JSON},
		{"instance", required_argument, NULL, OPT_INSTANCE},
		{"help", no_argument, NULL, 'h'},
		{0}};
	const char *repo_opt = NULL, *instance = NULL;
	ListCtx ctx = {0};
	Repo *repo = NULL;
	int c, r, rc;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_REPO: repo_opt = optarg; break;
		case OPT_JSON: ctx.json = true; break;
		case OPT_INSTANCE: instance = optarg; break;
		case 'h':
			printf("Usage: pgbakfs list [--repo PATH] [--instance NAME] [--json]\n\n"
			       "List snapshots, oldest first. STORED is what each snapshot added.\n");
			return EXIT_OK;
		default: return cli_usage("list", "invalid option");
		}
	}
	if (optind != argc)
		return cli_usage("list", "unexpected argument \"%s\"", argv[optind]);
	rc = cli_open_repo(repo_opt, &repo);
	if (rc != EXIT_OK)
		return rc;
	if (ctx.json) {
		json_init(&ctx.w, stdout);
		json_begin_array(&ctx.w);
	}
	r = catalog_snapshot_foreach(repo_catalog(repo), instance, list_one, &ctx);
	if (ctx.json) {
		json_end_array(&ctx.w);
		putchar('\n');
	}
	if (r < 0) {
		cli_error("could not read the catalog of \"%s\": %s", repo_path(repo), strerror(-r));
		rc = EXIT_FAIL;
	}
	repo_free(repo);
	return rc;
}

static int print_bad_block(const char *path, uint64_t block, void *ud)
{
	if ((*(unsigned *)ud)++ == 0)
		printf("bad pages (failed checksum verification):\n");
	printf("  %s block %llu\n", path, (unsigned long long)block);
	return 0;
}

static int json_bad_block(const char *path, uint64_t block, void *ud)
{
	JsonWriter *w = ud;
	json_begin_object(w);
	json_key(w, "path"); json_string(w, path);
	json_key(w, "block"); json_uint(w, block);
	json_end_object(w);
	return 0;
}

static void show_text(const SnapshotInfo *s)
{
	char t[40], b[32];
	printf("id:            %s\n", s->name);
	printf("instance:      %s\n", s->instance);
	printf("type:          %s\n", s->type);
	if (s->parent)
		printf("parent:        %s\n", s->parent);
	printf("status:        %s\n", s->status);
	if (s->label)
		printf("label:         %s\n", s->label);
	if (s->note)
		printf("note:          %s\n", s->note);
	if (s->pinned_until)
		printf("pinned until:  %s%s\n", format_time_iso(s->pinned_until, t, sizeof(t)),
		       s->pinned_until > now_ns() ? "" : " (expired)");
	if (s->source)
		printf("source:        %s\n", s->source);
	printf("start time:    %s\n", format_time_iso(s->start_time, t, sizeof(t)));
	printf("stop time:     %s\n", format_time_iso(s->stop_time, t, sizeof(t)));
	printf("duration:      %.1f s\n", (double)(s->stop_time - s->start_time) / 1e9);
	if (s->start_lsn)
		printf("start LSN:     %s\n", s->start_lsn);
	if (s->stop_lsn)
		printf("stop LSN:      %s\n", s->stop_lsn);
	if (s->timeline)
		printf("timeline:      %lld\n", (long long)s->timeline);
	if (s->system_id)
		printf("system id:     %s\n", s->system_id);
	if (s->pg_version)
		printf("PG version:    %lld\n", (long long)s->pg_version);
	printf("files:         %llu\n", (unsigned long long)s->n_files);
	printf("logical size:  %s\n", format_bytes(s->logical_bytes, b, sizeof(b)));
	printf("stored size:   %s (added by this snapshot)\n", format_bytes(s->stored_bytes, b, sizeof(b)));
	if (s->verified)
		printf("verified:      %s at %s\n", s->verified_ok ? "ok" : "FAILED",
		       format_time_iso(s->verified_time, t, sizeof(t)));
	else
		printf("verified:      never\n");
}

int cmd_show(int argc, char **argv)
{
	static const struct option opts[] = {
		{"repo", required_argument, NULL, OPT_REPO},
		{"json", no_argument, NULL, OPT_JSON},
		{"instance", required_argument, NULL, OPT_INSTANCE},
		{"help", no_argument, NULL, 'h'},
		{0}};
	const char *repo_opt = NULL, *instance = NULL;
	bool json = false;
	SnapshotInfo s = {0};
	Repo *repo = NULL;
	int c, rc;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_REPO: repo_opt = optarg; break;
		case OPT_JSON: json = true; break;
		case OPT_INSTANCE: instance = optarg; break;
		case 'h':
			printf("Usage: pgbakfs show ID [--repo PATH] [--instance NAME] [--json]\n\n"
			       "Show one snapshot; ID may be \"latest\".\n");
			return EXIT_OK;
		default: return cli_usage("show", "invalid option");
		}
	}
	if (optind + 1 != argc)
		return cli_usage("show", optind >= argc ? "missing snapshot ID" : "too many arguments");
	rc = cli_open_repo(repo_opt, &repo);
	if (rc == EXIT_OK)
		rc = cli_find_snapshot(repo, argv[optind], instance, &s);
	if (rc == EXIT_OK) {
		unsigned n_bad = 0;
		if (json) {
			JsonWriter w;
			json_init(&w, stdout);
			json_snapshot_open(&w, &s);
			json_key(&w, "bad_pages");
			json_begin_array(&w);
			catalog_bad_block_foreach(repo_catalog(repo), s.rowid, json_bad_block, &w);
			json_end_array(&w);
			rc = cli_wal_show(repo, &s, &w);
			json_end_object(&w);
			putchar('\n');
		} else {
			show_text(&s);
			rc = cli_wal_show(repo, &s, NULL);
			catalog_bad_block_foreach(repo_catalog(repo), s.rowid, print_bad_block, &n_bad);
		}
	}
	snapshot_info_clear(&s);
	repo_free(repo);
	return rc;
}

/* --repo and --help only, plus one positional ID when want_id. */
static int parse_simple(const char *cmd, const char *help, int argc, char **argv,
			const char **ret_repo, const char **ret_id)
{
	static const struct option opts[] = {
		{"repo", required_argument, NULL, OPT_REPO}, {"help", no_argument, NULL, 'h'}, {0}};
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c == OPT_REPO)
			*ret_repo = optarg;
		else if (c == 'h') {
			fputs(help, stdout);
			return -1;
		} else
			return cli_usage(cmd, "invalid option");
	}
	if (ret_id) {
		if (optind >= argc)
			return cli_usage(cmd, "missing snapshot ID");
		*ret_id = argv[optind++];
	}
	if (optind != argc)
		return cli_usage(cmd, "unexpected argument \"%s\"", argv[optind]);
	return EXIT_OK;
}

int cmd_delete(int argc, char **argv)
{
	const char *repo_opt = NULL, *id = NULL;
	SnapshotInfo s = {0};
	Repo *repo = NULL;
	int rc = parse_simple("delete", "Usage: pgbakfs delete ID [--repo PATH]\n\n"
			      "Delete a snapshot. Other snapshots never depend on it; run\n"
			      "\"pgbakfs gc\" to reclaim the space only it used.\n",
			      argc, argv, &repo_opt, &id);
	if (rc != EXIT_OK)
		return rc < 0 ? EXIT_OK : rc;
	rc = cli_open_repo_writer(repo_opt, &repo);
	if (rc == EXIT_OK)
		rc = cli_find_snapshot(repo, id, NULL, &s);
	if (rc == EXIT_OK) {
		int r = catalog_snapshot_delete(repo_catalog(repo), s.rowid);
		if (r < 0) {
			cli_error("could not delete snapshot \"%s\": %s", s.name, strerror(-r));
			rc = EXIT_FAIL;
		} else if (r == 1) {
			printf("deleted snapshot \"%s\"; a mount still serves it, so its data stays "
			       "until the mount lets go of it\n", s.name);
		} else {
			printf("deleted snapshot \"%s\"\n", s.name);
		}
	}
	snapshot_info_clear(&s);
	return cli_close_repo(repo, rc);
}
