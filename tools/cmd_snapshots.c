/* Snapshot records: list, show, delete. */
#include "common/json.h"
#include "common/util.h"
#include "tools/cli.h"
#include "tools/opts.h"

#include <stdio.h>
#include <string.h>

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

static const CliCommand list_command = {
	.name = "list",
	.common = CLI_REPO | CLI_JSON | CLI_INSTANCE,
	.help = "Usage: pgbakfs list [--repo PATH] [--instance NAME] [--json]\n\n"
		"List snapshots, oldest first. STORED is what each snapshot added.\n",
};

int cmd_list(int argc, char **argv)
{
	ListCtx ctx = {0};
	Repo *repo = NULL;
	CliArgs a;
	int r, rc = cli_parse(&list_command, argc, argv, &a, NULL);

	if (rc != CLI_CONTINUE)
		return rc;
	rc = cli_open_repo(a.repo, &repo);
	if (rc != EXIT_OK)
		return rc;
	/* one line (or one JSON object) per snapshot, oldest first */
	ctx.json = a.json;
	if (ctx.json) {
		json_init(&ctx.w, stdout);
		json_begin_array(&ctx.w);
	}
	r = catalog_snapshot_foreach(repo_catalog(repo), a.instance, list_one, &ctx);
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

static const CliCommand show_command = {
	.name = "show",
	.common = CLI_REPO | CLI_JSON | CLI_INSTANCE,
	.n_args = 1,
	.missing = "missing snapshot ID",
	.help = "Usage: pgbakfs show ID [--repo PATH] [--instance NAME] [--json]\n\n"
		"Show one snapshot; ID may be \"latest\".\n",
};

/* show --json: the snapshot's fields, its bad pages and its WAL; an exit code. */
static int show_json(Repo *repo, const SnapshotInfo *s)
{
	JsonWriter w;
	int rc;

	json_init(&w, stdout);
	json_snapshot_open(&w, s);
	json_key(&w, "bad_pages");
	json_begin_array(&w);
	catalog_bad_block_foreach(repo_catalog(repo), s->rowid, json_bad_block, &w);
	json_end_array(&w);
	rc = cli_wal_show(repo, s, &w);
	json_end_object(&w);
	putchar('\n');
	return rc;
}

int cmd_show(int argc, char **argv)
{
	SnapshotInfo s = {0};
	Repo *repo = NULL;
	unsigned n_bad = 0;
	CliArgs a;
	int rc = cli_parse(&show_command, argc, argv, &a, NULL);

	if (rc != CLI_CONTINUE)
		return rc;
	/* the snapshot, by id or "latest" */
	rc = cli_open_repo(a.repo, &repo);
	if (rc == EXIT_OK)
		rc = cli_find_snapshot(repo, a.args[0], a.instance, &s);
	/* its fields, the WAL archived from it on, its bad pages */
	if (rc == EXIT_OK && a.json) {
		rc = show_json(repo, &s);
	} else if (rc == EXIT_OK) {
		show_text(&s);
		rc = cli_wal_show(repo, &s, NULL);
		catalog_bad_block_foreach(repo_catalog(repo), s.rowid, print_bad_block, &n_bad);
	}
	snapshot_info_clear(&s);
	repo_free(repo);
	return rc;
}

static const CliCommand delete_command = {
	.name = "delete",
	.common = CLI_REPO,
	.n_args = 1,
	.missing = "missing snapshot ID",
	.help = "Usage: pgbakfs delete ID [--repo PATH]\n\n"
		"Delete a snapshot. Other snapshots never depend on it; run\n"
		"\"pgbakfs gc\" to reclaim the space only it used.\n",
};

/* Delete snapshot s (its record; gc reclaims the space): an exit code. */
static int delete_snapshot(Repo *repo, const SnapshotInfo *s)
{
	int r = catalog_snapshot_delete(repo_catalog(repo), s->rowid);

	if (r < 0) {
		cli_error("could not delete snapshot \"%s\": %s", s->name, strerror(-r));
		return EXIT_FAIL;
	}
	if (r == 1)
		printf("deleted snapshot \"%s\"; a mount still serves it, so its data stays "
		       "until the mount lets go of it\n", s->name);
	else
		printf("deleted snapshot \"%s\"\n", s->name);
	return EXIT_OK;
}

int cmd_delete(int argc, char **argv)
{
	SnapshotInfo s = {0};
	Repo *repo = NULL;
	CliArgs a;
	int rc = cli_parse(&delete_command, argc, argv, &a, NULL);

	if (rc != CLI_CONTINUE)
		return rc;
	/* as the writer, the snapshot by id or "latest" */
	rc = cli_open_repo_writer(a.repo, &repo);
	if (rc == EXIT_OK)
		rc = cli_find_snapshot(repo, a.args[0], NULL, &s);
	/* its record goes; then the catalog is published */
	if (rc == EXIT_OK)
		rc = delete_snapshot(repo, &s);
	snapshot_info_clear(&s);
	return cli_close_repo(repo, rc);
}
