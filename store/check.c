/*
 * check: the catalog's own integrity, every pack object present with its
 * recorded size, every chunk of every snapshot known to the catalog; with
 * read_data, every chunk of every pack read, decompressed and hashed, and the
 * damage traced to the snapshots and files that use it.
 */
#include "store/check.h"
#include "store/treedigest.h"
#include "common/util.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef struct PackRef {
	int64_t id;
	char *name;
	uint64_t size;
} PackRef;

typedef struct Checker {
	Repo *repo;
	const CheckOptions *o;
	CheckReportFn report;
	void *userdata;
	CheckResult *res;
	pthread_mutex_t lock; /* guards report calls, res, bad, next_pack, fatal */

	PackRef *packs;
	size_t n_packs, next_pack;
	uint64_t n_pending;
	ChunkId *bad;
	size_t n_bad, cap_bad;
	char **damaged; /* names of damaged snapshots */
	size_t n_damaged;
	int fatal;
} Checker;

static void _printf_(3, 4) say(Checker *ck, CheckSeverity sev, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&ck->lock);
	if (sev == CHECK_ERROR)
		ck->res->n_errors++;
	else
		ck->res->n_notes++;
	ck->report(sev, msg, ck->userdata);
	pthread_mutex_unlock(&ck->lock);
}

static int add_bad(Checker *ck, const ChunkId *id)
{
	int r = 0;
	pthread_mutex_lock(&ck->lock);
	if (ck->n_bad == ck->cap_bad) {
		size_t cap = ck->cap_bad ? ck->cap_bad * 2 : 64;
		ChunkId *v = realloc(ck->bad, cap * sizeof(*v));
		if (v) {
			ck->bad = v;
			ck->cap_bad = cap;
		} else {
			r = -ENOMEM;
		}
	}
	if (r == 0) {
		ck->bad[ck->n_bad++] = *id;
		ck->res->n_bad_chunks++;
	}
	pthread_mutex_unlock(&ck->lock);
	return r;
}

static int collect_pack(int64_t id, const char *name, const char *state, uint64_t size, void *ud)
{
	Checker *ck = ud;
	if (strcmp(state, "retired") == 0)
		return 0; /* emptied by gc --repack, deleted once no session may read it */
	if (strcmp(state, "ok") != 0) {
		ck->n_pending++;
		return 0;
	}
	PackRef *v = realloc(ck->packs, (ck->n_packs + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	ck->packs = v;
	v[ck->n_packs] = (PackRef){.id = id, .name = strdup(name), .size = size};
	if (!v[ck->n_packs].name)
		return -ENOMEM;
	ck->n_packs++;
	return 0;
}

/* All chunks the catalog places in a pack are lost with it. */
static int mark_pack_bad(Checker *ck, Catalog *cat, const PackRef *p)
{
	_cleanup_free_ PackEntry *e = NULL;
	size_t n = 0;
	int r = catalog_pack_chunks(cat, p->id, &e, &n);
	for (size_t i = 0; r == 0 && i < n; i++)
		r = add_bad(ck, &e[i].id);
	return r;
}

static int check_pack_objects(Checker *ck)
{
	for (size_t i = 0; i < ck->n_packs; i++) {
		const PackRef *p = &ck->packs[i];
		uint64_t size;
		int r = store_size(repo_backend(ck->repo), p->name, &size);
		if (r == -ENOENT) {
			say(ck, CHECK_ERROR, "pack \"%s\" is missing", p->name);
		} else if (r < 0) {
			say(ck, CHECK_ERROR, "could not stat pack \"%s\": %s", p->name, strerror(-r));
		} else if (size != p->size) {
			say(ck, CHECK_ERROR, "pack \"%s\" has %llu bytes, the catalog expects %llu",
			    p->name, (unsigned long long)size, (unsigned long long)p->size);
			r = -EBADMSG;
		}
		if (r < 0) {
			r = mark_pack_bad(ck, repo_catalog(ck->repo), p);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

static int report_missing(const char *snapshot, const ChunkId *id, void *ud)
{
	char hex[65];
	chunk_id_to_hex(id, hex);
	say(ud, CHECK_ERROR, "snapshot \"%s\" uses chunk %s, which the catalog does not have",
	    snapshot, hex);
	return 0;
}

static int report_bad_idblock(const ChunkId *hash, bool missing, void *ud)
{
	char hex[65];
	chunk_id_to_hex(hash, hex);
	say(ud, CHECK_ERROR, "catalog is damaged: id block %s %s (\"pgbakfs repair "
	    "--rebuild-catalog\" rebuilds it from the snapshot manifests)", hex,
	    missing ? "is in no manifest" : "does not match its hash");
	return 0;
}

static void verify_pack_trailer(Checker *ck, const PackRef *p, const uint8_t *buf)
{
	uint64_t off;
	uint32_t n;
	PackEntry *e = NULL;
	int r = pack_parse_footer(buf + p->size - PACK_FOOTER_LEN, p->size, &off, &n);
	if (r == 0)
		r = pack_parse_entries(buf + off, n, buf + p->size - PACK_FOOTER_LEN, off, &e);
	if (r < 0)
		say(ck, CHECK_ERROR, "pack \"%s\": trailer is damaged", p->name);
	free(e);
}

static int check_pack_data(Checker *ck, Catalog *cat, ChunkCodec *codec, uint8_t *plain,
			   const PackRef *p)
{
	_cleanup_free_ PackEntry *e = NULL;
	_cleanup_free_ uint8_t *buf = NULL;
	size_t n = 0;
	uint64_t chunk_size = repo_config(ck->repo)->chunk_size;
	int r = catalog_pack_chunks(cat, p->id, &e, &n);
	if (r < 0)
		return r;
	if (p->size < PACK_HEADER_LEN + PACK_FOOTER_LEN || !(buf = malloc(p->size)))
		return p->size < PACK_HEADER_LEN + PACK_FOOTER_LEN ? 0 : -ENOMEM;
	r = store_get_range(repo_backend(ck->repo), p->name, 0, p->size, buf);
	if (r < 0) {
		say(ck, CHECK_ERROR, "could not read pack \"%s\": %s", p->name, strerror(-r));
		for (size_t i = 0; i < n; i++)
			add_bad(ck, &e[i].id);
		return 0;
	}
	verify_pack_trailer(ck, p, buf);
	for (size_t i = 0; i < n; i++) {
		bool ok = e[i].offset + e[i].elen <= p->size && e[i].plen <= chunk_size &&
			  chunk_decode(codec, (ChunkEncoding)e[i].enc, buf + e[i].offset, e[i].elen,
				       plain, e[i].plen, &e[i].id) == 0;
		if (!ok) {
			char hex[65];
			chunk_id_to_hex(&e[i].id, hex);
			say(ck, CHECK_ERROR, "pack \"%s\": chunk %s at offset %llu is damaged", p->name,
			    hex, (unsigned long long)e[i].offset);
			r = add_bad(ck, &e[i].id);
			if (r < 0)
				return r;
		}
		progress_add(ck->o->progress, e[i].elen);
	}
	pthread_mutex_lock(&ck->lock);
	ck->res->n_chunks_read += n;
	pthread_mutex_unlock(&ck->lock);
	return 0;
}

static void *read_data_worker(void *arg)
{
	Checker *ck = arg;
	thread_name("check-read");
	Catalog *cat = NULL;
	ChunkCodec *codec = NULL;
	uint8_t *plain = malloc(repo_config(ck->repo)->chunk_size);
	int r = plain ? repo_catalog_open(ck->repo, &cat) : -ENOMEM;
	if (r == 0)
		r = repo_codec_new(ck->repo, &codec);
	while (r == 0) {
		size_t i;
		pthread_mutex_lock(&ck->lock);
		i = ck->next_pack++;
		pthread_mutex_unlock(&ck->lock);
		if (i >= ck->n_packs)
			break;
		r = check_pack_data(ck, cat, codec, plain, &ck->packs[i]);
	}
	if (r < 0) {
		pthread_mutex_lock(&ck->lock);
		ck->fatal = ck->fatal ? ck->fatal : r;
		pthread_mutex_unlock(&ck->lock);
	}
	chunk_codec_free(codec);
	catalog_free(cat);
	free(plain);
	return NULL;
}

static int read_all_data(Checker *ck)
{
	int n = ck->o->jobs > 0 ? ck->o->jobs : cpu_count();
	pthread_t *t = calloc((size_t)n, sizeof(pthread_t));
	int started = 0;
	if (!t)
		return -ENOMEM;
	for (; started < n; started++)
		if (pthread_create(&t[started], NULL, read_data_worker, ck) != 0)
			break;
	for (int i = 0; i < started; i++)
		pthread_join(t[i], NULL);
	free(t);
	return started == 0 ? -EAGAIN : ck->fatal;
}

static int report_damage(const char *snapshot, const char *path, void *ud)
{
	Checker *ck = ud;
	say(ck, CHECK_ERROR, "snapshot \"%s\": file \"%s\" is damaged", snapshot, path);
	if (ck->n_damaged && strcmp(ck->damaged[ck->n_damaged - 1], snapshot) == 0)
		return 0;
	char **v = realloc(ck->damaged, (ck->n_damaged + 1) * sizeof(char *));
	if (!v)
		return -ENOMEM;
	ck->damaged = v;
	v[ck->n_damaged] = strdup(snapshot);
	return v[ck->n_damaged++] ? 0 : -ENOMEM;
}

static void report_damaged_snapshots(Checker *ck)
{
	char line[900] = "";
	size_t len = 0;
	for (size_t i = 0; i < ck->n_damaged && len < sizeof(line) - 80; i++)
		len += (size_t)snprintf(line + len, sizeof(line) - len, "%s\"%s\"", i ? ", " : "",
					ck->damaged[i]);
	if (ck->n_damaged)
		say(ck, CHECK_ERROR, "damaged snapshots: %s", line);
}

typedef struct TreeCheck {
	Checker *ck;
	uint64_t n_without;
} TreeCheck;

/* Each snapshot's files must still give the digest recorded when it was committed. */
static int check_tree(const SnapshotInfo *s, void *ud)
{
	TreeCheck *tc = ud;
	int r;
	if (!s->has_tree_digest)
		tc->n_without++;
	r = tree_digest_verify(repo_catalog(tc->ck->repo), s);
	if (r == -EBADMSG) {
		say(tc->ck, CHECK_ERROR, "snapshot \"%s\": %s (the catalog is damaged; \"pgbakfs "
		    "repair --rebuild-catalog\" rebuilds it from the snapshot manifests)", s->name,
		    s->has_tree_digest ? "its files in the catalog do not match its tree digest"
				       : "its files in the catalog do not form a valid tree");
		r = 0;
	}
	return r;
}

static int check_trees(Checker *ck)
{
	TreeCheck tc = {.ck = ck};
	int r = catalog_snapshot_foreach(repo_catalog(ck->repo), NULL, check_tree, &tc);
	if (r == 0 && tc.n_without)
		say(ck, CHECK_NOTE, "%llu snapshot(s) taken by an earlier version of pgbakfs have no "
		    "tree digest: their file lists cannot be checked",
		    (unsigned long long)tc.n_without);
	return r;
}

/* Backup sessions; a mount's session leaves nothing to clean up. */
static int count_backups(const char *id _unused_, const char *kind, int64_t pid _unused_,
			 int64_t started _unused_, void *ud)
{
	if (strcmp(kind, "mount") != 0)
		(*(uint64_t *)ud)++;
	return 0;
}

static int check_run(Checker *ck)
{
	Catalog *cat = repo_catalog(ck->repo);
	_cleanup_free_ char *msg = NULL;
	uint64_t n_sessions = 0;
	int r = catalog_integrity_check(cat, &msg);

	if (r == -EBADMSG) {
		say(ck, CHECK_ERROR, "catalog is damaged: %s", msg);
		return 0; /* nothing else can be trusted */
	}
	if (r == 0)
		r = catalog_pack_foreach(cat, collect_pack, ck);
	if (r == 0)
		r = check_pack_objects(ck);
	if (r == 0)
		r = check_trees(ck);
	if (r == 0)
		r = catalog_idblocks_verify(cat, report_bad_idblock, ck);
	if (r == 0)
		r = catalog_check_references(cat, report_missing, ck);
	if (r == 0 && ck->o->read_data)
		r = read_all_data(ck);
	if (r == 0 && ck->n_bad > 0) {
		r = catalog_find_damage(cat, ck->bad, ck->n_bad, report_damage, ck);
		report_damaged_snapshots(ck);
	}
	if (r == 0)
		r = catalog_session_foreach(cat, count_backups, &n_sessions);
	if (r == 0 && (n_sessions || ck->n_pending))
		say(ck, CHECK_NOTE,
		    "%llu backup session(s) running or interrupted, %llu pack(s) not yet recorded;"
		    " an interrupted backup's leftovers are removed by \"pgbakfs gc\"",
		    (unsigned long long)n_sessions, (unsigned long long)ck->n_pending);
	ck->res->n_packs = ck->n_packs;
	return r;
}

int repo_check(Repo *repo, const CheckOptions *o, CheckReportFn report, void *userdata,
	       CheckResult *ret)
{
	Checker ck = {.repo = repo, .o = o, .report = report, .userdata = userdata, .res = ret};
	int r;
	*ret = (CheckResult){0};
	pthread_mutex_init(&ck.lock, NULL);
	r = check_run(&ck);
	for (size_t i = 0; i < ck.n_packs; i++)
		free(ck.packs[i].name);
	for (size_t i = 0; i < ck.n_damaged; i++)
		free(ck.damaged[i]);
	free(ck.damaged);
	free(ck.packs);
	free(ck.bad);
	pthread_mutex_destroy(&ck.lock);
	return r;
}
