/*
 * Catalog rebuild: packs first (their chunk rows), then manifests (snapshots,
 * files, chunk lists, and the chunks' CRCs, which only manifests carry).
 */
#include "store/repair.h"
#include "store/manifest.h"
#include "store/sqldb.h"
#include "common/log.h"
#include "common/util.h"

#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

/*
 * A pack's trailer is 52 bytes per chunk: 26 KiB for a 32 MiB pack of 64 KiB
 * chunks. Reading this much of the tail at once gets footer and entries in
 * one request for common packs (a round trip each in object storage).
 */
#define TAIL_READ (64 * 1024)

typedef struct Object {
	char *name;
	uint64_t size;
} Object;

typedef struct ObjectList {
	Object *v;
	size_t n, cap;
} ObjectList;

static void object_list_clear(ObjectList *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i].name);
	free(l->v);
	*l = (ObjectList){0};
}

static int object_list_add(const char *name, uint64_t size, void *userdata)
{
	ObjectList *l = userdata;
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 64;
		Object *v = realloc(l->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n].name = strdup(name);
	if (!l->v[l->n].name)
		return -ENOMEM;
	l->v[l->n++].size = size;
	return 0;
}

static int cmp_object(const void *a, const void *b)
{
	return strcmp(((const Object *)a)->name, ((const Object *)b)->name);
}

/* Objects under prefix, sorted by name: the order decides which copy of a chunk wins. */
static int list_sorted(StoreBackend *b, const char *prefix, ObjectList *ret)
{
	int r = store_list(b, prefix, object_list_add, ret);
	if (r < 0) {
		object_list_clear(ret);
		return r;
	}
	if (ret->n)
		qsort(ret->v, ret->n, sizeof(*ret->v), cmp_object);
	return 0;
}

static int refuse_pack(int64_t id _unused_, const char *name _unused_, const char *state _unused_,
		       uint64_t size _unused_, void *userdata _unused_)
{
	return -ENOTEMPTY;
}

static int refuse_snapshot(const SnapshotInfo *s _unused_, void *userdata _unused_)
{
	return -ENOTEMPTY;
}

/* -ENOTEMPTY unless c has no packs, chunks, contents, files or snapshots. */
static int catalog_check_empty(Catalog *c)
{
	CatalogStats st;
	int r = catalog_stats(c, &st);
	if (r == 0 && st.n_chunks + st.n_contents + st.n_files + st.n_idblocks > 0)
		r = -ENOTEMPTY;
	if (r == 0)
		r = catalog_pack_foreach(c, refuse_pack, NULL);
	if (r == 0)
		r = catalog_snapshot_foreach_any(c, refuse_snapshot, NULL);
	return r;
}

/*
 * A rebuild commits once per pack and per manifest. Unsynced commits
 * (synchronous=NORMAL keeps a WAL database consistent, only not durable) and
 * one checkpoint at the end save two fsyncs per pack.
 */
static int catalog_make_durable(Catalog *c)
{
	sqlite3 *db = catalog_sqlite(c);
	_cleanup_stmt_ sqlite3_stmt *s = NULL;
	int r = sqldb_exec(db, "PRAGMA synchronous=FULL");
	if (r == 0)
		r = sqldb_prepare(db, "PRAGMA wal_checkpoint(FULL)", &s);
	if (r == 0)
		r = sqldb_step_row(db, s);
	/* first column: 1 when a reader kept the checkpoint from completing */
	if (r == 0 && sqlite3_column_int(s, 0))
		r = -EBUSY;
	return r;
}

/*
 * The entries of a pack object of at least a header and a footer: -EBADMSG
 * when its trailer is damaged or the object is shorter than it was listed,
 * other -errno from the backend.
 */
static int pack_read_entries(StoreBackend *b, const Object *o, PackEntry **ret, uint32_t *ret_n)
{
	size_t tail_len = (size_t)MIN(o->size, (uint64_t)TAIL_READ);
	_cleanup_free_ uint8_t *tail = NULL, *entries = NULL;
	const uint8_t *footer, *at;
	uint64_t tail_off = o->size - tail_len, off;
	uint32_t n;
	int r;

	tail = malloc(tail_len);
	if (!tail)
		return -ENOMEM;
	r = store_get_range(b, o->name, tail_off, tail_len, tail);
	if (r < 0)
		return r == -ENODATA ? -EBADMSG : r;
	footer = tail + tail_len - PACK_FOOTER_LEN;
	r = pack_parse_footer(footer, o->size, &off, &n);
	if (r < 0)
		return r;
	if (off >= tail_off) {
		at = tail + (off - tail_off);
	} else {
		/* a trailer longer than the tail read: fetch it on its own */
		entries = malloc((size_t)n * PACK_ENTRY_LEN);
		if (!entries)
			return -ENOMEM;
		r = store_get_range(b, o->name, off, (size_t)n * PACK_ENTRY_LEN, entries);
		if (r < 0)
			return r == -ENODATA ? -EBADMSG : r;
		at = entries;
	}
	r = pack_parse_entries(at, n, footer, off, ret);
	if (r < 0)
		return r;
	*ret_n = n;
	return 0;
}

static int skip_pack(RepairStats *st, const char *name, const char *why)
{
	log_warning("skipping pack \"%s\": %s", name, why);
	st->bad_packs++;
	return 0;
}

static int repair_pack(StoreBackend *b, Catalog *c, const Object *o, RepairStats *st)
{
	_cleanup_free_ PackEntry *entries = NULL;
	int64_t id;
	uint32_t n = 0;
	int r;

	/* the catalog hands pack names around in ChunkLoc.pack_name */
	if (strlen(o->name) >= sizeof(((ChunkLoc *)NULL)->pack_name))
		return skip_pack(st, o->name, "its name is too long for the catalog");
	if (o->size < PACK_HEADER_LEN + PACK_FOOTER_LEN)
		return skip_pack(st, o->name, "it is too short to be a pack");
	r = pack_read_entries(b, o, &entries, &n);
	if (r == -EBADMSG)
		return skip_pack(st, o->name, "its trailer is damaged");
	if (r < 0)
		return r;
	/* a chunk row that exists already stays: the first pack keeps the chunk */
	r = catalog_pack_add_pending(c, o->name, NULL, &id);
	if (r == 0)
		r = catalog_pack_record(c, id, o->size, entries, n);
	if (r < 0)
		return r;
	st->packs++;
	return 0;
}

typedef struct Incomplete {
	char (*names)[64];
	uint64_t *missing;
	size_t n;
} Incomplete;

static int note_missing(const char *snapshot, const ChunkId *id _unused_, void *userdata)
{
	Incomplete *inc = userdata;
	for (size_t i = inc->n; i-- > 0;) { /* few: the last is the likely one */
		if (strcmp(inc->names[i], snapshot) == 0) {
			inc->missing[i]++;
			return 0;
		}
	}
	void *v = realloc(inc->names, (inc->n + 1) * sizeof(*inc->names));
	if (!v)
		return -ENOMEM;
	inc->names = v;
	v = realloc(inc->missing, (inc->n + 1) * sizeof(*inc->missing));
	if (!v)
		return -ENOMEM;
	inc->missing = v;
	snprintf(inc->names[inc->n], sizeof(*inc->names), "%s", snapshot);
	inc->missing[inc->n++] = 1;
	return 0;
}

/* The name of snapshot rowid, for the missing items its tree names. */
static int note_missing_tree(Catalog *c, int64_t rowid, size_t missing, Incomplete *inc)
{
	sqlite3 *db = catalog_sqlite(c);
	sqlite3_stmt *s = NULL;
	int r = 0;
	if (sqlite3_prepare_v2(db, "SELECT name FROM snapshots WHERE id = ?1", -1, &s, NULL) !=
	    SQLITE_OK)
		return -EIO;
	sqlite3_bind_int64(s, 1, rowid);
	if (sqlite3_step(s) != SQLITE_ROW)
		r = -EIO;
	for (size_t i = 0; r == 0 && i < missing; i++)
		r = note_missing((const char *)sqlite3_column_text(s, 0), NULL, inc);
	sqlite3_finalize(s);
	return r;
}

static int repair_manifest(Catalog *c, const char *name, RepairManifestFn get_manifest,
			   void *ud, RepairStats *st, Incomplete *inc)
{
	_cleanup_free_ void *buf = NULL;
	size_t len = 0, missing = 0;
	int64_t rowid = 0;
	int r = get_manifest(name, &buf, &len, ud);

	if (r == -ENOMEM)
		return r;
	if (r < 0) {
		log_warning("skipping manifest \"%s\": could not read it: %s", name, strerror(-r));
		st->bad_manifests++;
		return 0;
	}
	r = manifest_import_counted(c, buf, len, &rowid, &missing);
	/* directories or lists its tree names that no manifest carries */
	if (r == 0 && missing > 0)
		r = note_missing_tree(c, rowid, missing, inc);
	if (r == -EEXIST)
		return 0; /* another copy of a snapshot imported already */
	if (r == -EBADMSG || r == -EPROTONOSUPPORT) {
		log_warning("skipping manifest \"%s\": %s", name,
			    r == -EBADMSG ? "it is damaged or not a manifest (or its files do not "
					    "match its tree digest)"
					  : "it was written by a newer version of pgbakfs");
		st->bad_manifests++;
		return 0;
	}
	if (r < 0)
		return r;
	st->snapshots++;
	return 0;
}

/*
 * First pass: the id blocks of every manifest (format 3: and its chunk lists
 * and directories), before any snapshot, since a list may name a block, and
 * a tree a list or a directory, that another manifest carries. A manifest that fails here
 * is counted and named by the second pass, which reads it again.
 */
static int repair_manifest_idblocks(Catalog *c, const char *name, RepairManifestFn get_manifest,
				    void *ud)
{
	_cleanup_free_ void *buf = NULL;
	size_t len = 0;
	int r = get_manifest(name, &buf, &len, ud);

	if (r == 0)
		r = manifest_import_idblocks(c, buf, len);
	return r == -ENOMEM ? r : 0;
}

/*
 * Snapshots naming chunks no pack holds (or id blocks, lists or directories no
 * manifest holds: inc has those of the directories already): "failed", so
 * nobody takes them for whole.
 */
static int mark_incomplete(Catalog *c, RepairStats *st, Incomplete *in)
{
	Incomplete inc = *in;
	int r = catalog_check_references(c, note_missing, &inc);

	*in = (Incomplete){0};

	for (size_t i = 0; r == 0 && i < inc.n; i++) {
		r = catalog_snapshot_mark_failed(c, inc.names[i]);
		if (r == 0) {
			log_warning("snapshot \"%s\" names %llu chunk(s) that no pack holds (or id "
				    "block(s), chunk list(s) or directories that no manifest holds): kept as failed (delete it unless "
				    "its other files are needed)", inc.names[i],
				    (unsigned long long)inc.missing[i]);
			st->incomplete++;
		}
	}
	free(inc.names);
	free(inc.missing);
	return r;
}

static int rebuild(StoreBackend *b, Catalog *c, const char *manifest_prefix,
		   RepairManifestFn get_manifest, void *ud, RepairStats *st)
{
	ObjectList packs = {0}, manifests = {0};
	Incomplete inc = {0};
	CatalogStats cs;
	int r = list_sorted(b, "packs/", &packs);

	if (r < 0)
		return r;
	for (size_t i = 0; r == 0 && i < packs.n; i++)
		r = repair_pack(b, c, &packs.v[i], st);
	object_list_clear(&packs);
	if (r == 0)
		r = list_sorted(b, manifest_prefix, &manifests);
	for (size_t i = 0; r == 0 && i < manifests.n; i++)
		r = repair_manifest_idblocks(c, manifests.v[i].name, get_manifest, ud);
	for (size_t i = 0; r == 0 && i < manifests.n; i++)
		r = repair_manifest(c, manifests.v[i].name, get_manifest, ud, st, &inc);
	object_list_clear(&manifests);
	if (r == 0)
		r = mark_incomplete(c, st, &inc);
	free(inc.names);
	free(inc.missing);
	if (r == 0)
		r = catalog_stats(c, &cs);
	if (r == 0)
		st->chunks = cs.n_chunks;
	return r;
}

int repair_rebuild_catalog(StoreBackend *b, Catalog *c, const char *manifest_prefix,
			   RepairManifestFn get_manifest, void *ud, RepairStats *ret)
{
	RepairStats st = {0};
	int r = catalog_check_empty(c);

	if (r < 0)
		return r;
	r = sqldb_exec(catalog_sqlite(c), "PRAGMA synchronous=NORMAL");
	if (r == 0)
		r = rebuild(b, c, manifest_prefix, get_manifest, ud, &st);
	/* back to the catalog's setting whatever happened; durable only on success */
	if (r == 0)
		r = catalog_make_durable(c);
	else
		sqldb_exec(catalog_sqlite(c), "PRAGMA synchronous=FULL");
	if (r < 0)
		return r;
	if (ret)
		*ret = st;
	return 0;
}
