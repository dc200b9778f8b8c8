#include "store/gc.h"
#include "common/log.h"
#include "store/chunk.h"
#include "store/pack.h"
#include "common/util.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

typedef struct NameSet {
	char **v;
	size_t n;
} NameSet;

static void name_set_clear(NameSet *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
	*s = (NameSet){0};
}

static int name_set_add(NameSet *s, const char *name)
{
	char **v = realloc(s->v, (s->n + 1) * sizeof(char *));
	if (!v)
		return -ENOMEM;
	s->v = v;
	v[s->n] = strdup(name);
	if (!v[s->n])
		return -ENOMEM;
	s->n++;
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int collect_known(int64_t id _unused_, const char *name, const char *state _unused_,
			 uint64_t size _unused_, void *userdata)
{
	return name_set_add(userdata, name);
}

typedef struct ObjectList {
	NameSet names;
	uint64_t *sizes;
} ObjectList;

static int collect_object(const char *name, uint64_t size, void *userdata)
{
	ObjectList *l = userdata;
	uint64_t *v = realloc(l->sizes, (l->names.n + 1) * sizeof(uint64_t));
	if (!v)
		return -ENOMEM;
	l->sizes = v;
	v[l->names.n] = size;
	return name_set_add(&l->names, name);
}

/*
 * Objects under packs/ that the catalog does not know. A live session adds its
 * pending pack row before it writes the object, so an unknown object is never
 * a live backup's: the list of objects is taken first, the catalog second.
 */
static int gc_orphans(Repo *repo, GcResult *res)
{
	ObjectList objs = {0};
	NameSet known = {0};
	int r = store_list(repo_backend(repo), "packs/", collect_object, &objs);
	if (r == 0)
		r = catalog_pack_foreach(repo_catalog(repo), collect_known, &known);
	if (r == 0 && known.n)
		qsort(known.v, known.n, sizeof(char *), cmp_str);
	for (size_t i = 0; r == 0 && i < objs.names.n; i++) {
		if (known.n && bsearch(&objs.names.v[i], known.v, known.n, sizeof(char *), cmp_str))
			continue;
		r = store_delete(repo_backend(repo), objs.names.v[i]);
		if (r == 0) {
			res->orphans_deleted++;
			res->bytes_reclaimed += objs.sizes[i];
		}
	}
	name_set_clear(&objs.names);
	free(objs.sizes);
	name_set_clear(&known);
	return r;
}

static int count_session(const char *id _unused_, const char *kind _unused_, int64_t pid _unused_,
			 int64_t started _unused_, void *userdata)
{
	(*(uint64_t *)userdata)++;
	return 0;
}

/*
 * Temporary files of interrupted puts and staging directories of interrupted
 * backups (local driver). Listed first; removed only if no session is alive
 * afterwards: a session registers before it creates any, so what is listed
 * belongs to a dead one.
 */
static int gc_local_tmp(Repo *repo, GcResult *res)
{
	NameSet tmp = {0};
	char dir[PATH_MAX];
	uint64_t n_sessions = 0;
	DIR *top, *sub;
	struct dirent *de, *se;
	int r = 0;

	if (!repo_objects_dir(repo))
		return 0;
	snprintf(dir, sizeof(dir), "%s/packs", repo_objects_dir(repo));
	top = opendir(dir);
	if (!top)
		return errno == ENOENT ? 0 : -errno;
	while (r == 0 && (de = readdir(top))) {
		char path[PATH_MAX * 2];
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (!(sub = opendir(path)))
			continue;
		while (r == 0 && (se = readdir(sub))) {
			char full[PATH_MAX * 3];
			if (strncmp(se->d_name, ".tmp-", 5) != 0)
				continue;
			snprintf(full, sizeof(full), "%s/%s", path, se->d_name);
			r = name_set_add(&tmp, full);
		}
		closedir(sub);
	}
	closedir(top);
	/* staging directories of interrupted backups (WAL segments): tmp/NAME */
	snprintf(dir, sizeof(dir), "%s/tmp", repo_workdir(repo));
	if (r == 0 && (top = opendir(dir))) {
		while (r == 0 && (de = readdir(top))) {
			char full[PATH_MAX * 2];
			if (de->d_name[0] == '.')
				continue;
			snprintf(full, sizeof(full), "%s/%s", dir, de->d_name);
			r = name_set_add(&tmp, full);
		}
		closedir(top);
	}
	if (r == 0)
		r = catalog_session_foreach(repo_catalog(repo), count_session, &n_sessions);
	for (size_t i = 0; r == 0 && n_sessions == 0 && i < tmp.n; i++) {
		if (rm_rf(tmp.v[i]) == 0)
			res->orphans_deleted++;
	}
	name_set_clear(&tmp);
	return r;
}

/* Delete pack objects the catalog (published, when remote) no longer names. */
static int delete_packs(Repo *repo, char **names, size_t n, uint64_t *ret_n, uint64_t *ret_bytes)
{
	int r = 0;
	/* a published catalog must stop naming the packs before they go: publish it
	 * now (the writer keeps its lock), and only while the lock is still ours */
	if (n && repo_is_remote(repo))
		r = repo_write_publish(repo);
	if (r == 0)
		r = repo_write_check(repo);
	for (size_t i = 0; r == 0 && i < n; i++) {
		uint64_t size = 0;
		if (store_size(repo_backend(repo), names[i], &size) < 0)
			size = 0;
		r = store_delete(repo_backend(repo), names[i]);
		if (r == 0) {
			(*ret_n)++;
			*ret_bytes += size;
		}
	}
	return r;
}

/* ---- repack ---- */

#define REPACK_WINDOW (8u << 20) /* one ranged read of an old pack */
#define REPACK_GAP (1u << 20)    /* dead bytes a read may span rather than start another */

typedef struct Repacker {
	Repo *repo;
	Catalog *cat;
	ChunkCodec *codec;
	GcResult *res;
	uint64_t pack_size;
	PackWriter *out;           /* the new pack being filled */
	int64_t *olds;             /* the old packs whose chunks it holds */
	size_t n_olds, cap_olds;
	uint8_t *win;              /* a read window of an old pack: win_cap bytes */
	size_t win_cap;
	uint8_t *one;              /* one encoded chunk, fetched again alone */
	uint8_t *plain;            /* one chunk decoded, to check it */
	size_t chunk_cap;
	uint8_t *stage;            /* the checked live chunks of one old pack, back to back */
	size_t stage_len, stage_cap;
} Repacker;

static void repacker_free(Repacker *rp)
{
	chunk_codec_free(rp->codec);
	pack_writer_free(rp->out);
	free(rp->olds);
	free(rp->win);
	free(rp->one);
	free(rp->plain);
	free(rp->stage);
}

static int repacker_init(Repacker *rp, Repo *repo, GcResult *res)
{
	const RepoConfig *cfg = repo_config(repo);
	*rp = (Repacker){.repo = repo, .cat = repo_catalog(repo), .res = res,
			 .pack_size = cfg->pack_size ? cfg->pack_size : PGBAKFS_DEFAULT_PACK_SIZE};
	rp->chunk_cap = chunk_encode_bound(cfg->chunk_size);
	rp->win_cap = MAX((size_t)REPACK_WINDOW, rp->chunk_cap); /* 8 MiB chunks, sealed */
	rp->win = malloc(rp->win_cap);
	rp->one = malloc(rp->chunk_cap);
	rp->plain = malloc(cfg->chunk_size);
	if (!rp->win || !rp->one || !rp->plain)
		return -ENOMEM;
	int r = repo_codec_new(repo, &rp->codec);
	if (r == 0)
		r = pack_writer_new(rp->pack_size, &rp->out);
	return r;
}

/* Write the new pack, then move the chunks into it and retire the old packs. */
static int repack_flush(Repacker *rp)
{
	char name[64];
	const void *buf;
	size_t len;
	int64_t id;
	int r;

	if (pack_writer_count(rp->out) == 0)
		return 0;
	/* as a backup writes a pack: pending row (gc removes it if we die), put, record */
	r = pack_name_new(name, sizeof(name));
	if (r == 0)
		r = catalog_pack_add_pending(rp->cat, name, NULL, &id);
	if (r == 0)
		r = pack_writer_finish(rp->out, &buf, &len);
	if (r == 0)
		r = store_put(repo_backend(rp->repo), name, buf, len);
	if (r == 0)
		r = catalog_pack_move(rp->cat, id, len, pack_writer_entries(rp->out),
				      pack_writer_count(rp->out), rp->olds, rp->n_olds);
	if (r < 0)
		return r;
	rp->res->packs_written++;
	rp->res->bytes_copied += len;
	rp->res->packs_repacked += rp->n_olds;
	rp->n_olds = 0;
	pack_writer_reset(rp->out);
	return 0;
}

static int stage_add(Repacker *rp, const void *buf, size_t len)
{
	return bytes_append(&rp->stage, &rp->stage_len, &rp->stage_cap, buf, len);
}

/* 0 when the encoded bytes are the chunk's, as restore checks them; -EBADMSG when not. */
static int chunk_verify(Repacker *rp, const PackEntry *e, const void *enc)
{
	if (e->elen > rp->chunk_cap || e->plen > repo_config(rp->repo)->chunk_size)
		return -EBADMSG;
	if (e->has_crc)
		return chunk_decode_crc(rp->codec, (ChunkEncoding)e->enc, enc, e->elen, rp->plain,
					e->plen, &e->id, e->crc);
	return chunk_decode(rp->codec, (ChunkEncoding)e->enc, enc, e->elen, rp->plain, e->plen,
			    &e->id);
}

static void report_damage(Repacker *rp, const CatalogRepackPack *p, const PackEntry *e, int r)
{
	char hex[2 * PGBAKFS_CHUNK_ID_LEN + 1];
	chunk_id_to_hex(&e->id, hex);
	log_warning("chunk %s in pack \"%s\" is damaged (%s): the pack is not repacked; run "
		    "\"pgbakfs check --read-data\"", hex, p->name, strerror(-r));
	rp->res->chunks_damaged++;
}

/*
 * Read the live chunks of one old pack into the stage, each checked; a
 * chunk that fails is fetched once more alone (a body may be damaged on the
 * way). Returns 1 when one is damaged: the pack is then kept as it is.
 */
static int repack_read(Repacker *rp, const CatalogRepackPack *p, const PackEntry *e, size_t n)
{
	StoreBackend *b = repo_backend(rp->repo);
	bool damaged = false;
	int r;

	rp->stage_len = 0;
	for (size_t i = 0, j; i < n; i = j) {
		uint64_t start = e[i].offset, end = e[i].offset + e[i].elen;
		for (j = i + 1; j < n && e[j].offset >= end && e[j].offset - end <= REPACK_GAP &&
				e[j].offset + e[j].elen - start <= rp->win_cap; j++)
			end = e[j].offset + e[j].elen;
		if (end - start > rp->win_cap) /* larger than any chunk can be: damage */
			r = -EBADMSG;
		else
			r = store_get_range(b, p->name, start, end - start, rp->win);
		if (r == -ENODATA || r == -ENOENT || r == -EBADMSG) {
			/* a truncated or missing pack: nothing of it can be copied */
			for (size_t k = i; k < j; k++)
				report_damage(rp, p, &e[k], r == -ENODATA ? -EBADMSG : r);
			damaged = true;
			continue;
		}
		if (r < 0)
			return r;
		for (size_t k = i; k < j; k++) {
			const uint8_t *enc = rp->win + (e[k].offset - start);
			r = chunk_verify(rp, &e[k], enc);
			if (r == -EBADMSG) {
				enc = rp->one;
				r = store_get_range(b, p->name, e[k].offset, e[k].elen, rp->one);
				if (r == 0 || r == -ENODATA)
					r = r == 0 ? chunk_verify(rp, &e[k], enc) : -EBADMSG;
			}
			if (r == -EBADMSG) {
				report_damage(rp, p, &e[k], r);
				damaged = true;
				continue;
			}
			if (r == 0 && !damaged)
				r = stage_add(rp, enc, e[k].elen);
			if (r < 0)
				return r;
		}
	}
	return damaged ? 1 : 0;
}

static int repack_one(Repacker *rp, const CatalogRepackPack *p)
{
	_cleanup_free_ PackEntry *e = NULL;
	size_t n = 0, off = 0;
	int r = catalog_pack_live_chunks(rp->cat, p->id, &e, &n);
	if (r < 0 || n == 0)
		return r;
	r = repack_read(rp, p, e, n);
	if (r == 1) {
		rp->res->packs_damaged++;
		return 0;
	}
	if (r < 0)
		return r;
	/*
	 * An old pack's chunks go into one new pack, so each move retires whole
	 * packs. A backup's packs end at the first chunk past the pack size; here
	 * a pack may take a quarter more rather than close half empty.
	 */
	if (pack_writer_size(rp->out) + rp->stage_len > rp->pack_size + rp->pack_size / 4)
		r = repack_flush(rp);
	for (size_t i = 0; r == 0 && i < n; off += e[i].elen, i++) {
		if (e[i].has_crc)
			r = pack_writer_add_crc(rp->out, &e[i].id, (ChunkEncoding)e[i].enc,
						rp->stage + off, e[i].elen, e[i].plen, e[i].crc,
						NULL /* moved rows keep their fh */);
		else
			r = pack_writer_add(rp->out, &e[i].id, (ChunkEncoding)e[i].enc,
					    rp->stage + off, e[i].elen, e[i].plen);
	}
	if (r == 0 && rp->n_olds == rp->cap_olds) {
		size_t cap = rp->cap_olds ? rp->cap_olds * 2 : 16;
		int64_t *v = realloc(rp->olds, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		rp->olds = v;
		rp->cap_olds = cap;
	}
	if (r == 0)
		rp->olds[rp->n_olds++] = p->id;
	if (r == 0 && pack_writer_size(rp->out) >= rp->pack_size)
		r = repack_flush(rp);
	return r;
}

static int gc_repack(Repo *repo, unsigned pct, GcResult *res)
{
	_cleanup_free_ CatalogRepackPack *cand = NULL;
	CatalogGcResult cres = {0};
	Repacker rp;
	size_t n = 0;
	int r = repacker_init(&rp, repo, res);

	if (r == 0)
		r = catalog_repack_candidates(repo_catalog(repo), pct, &cand, &n);
	for (size_t i = 0; r == 0 && i < n; i++)
		r = repack_one(&rp, &cand[i]);
	if (r == 0)
		r = repack_flush(&rp);
	repacker_free(&rp);
	/* old packs no session can be reading any more go now; the others, at a later gc */
	if (r == 0)
		r = catalog_gc_retired(repo_catalog(repo), &cres);
	if (r == 0) {
		res->packs_retired_waiting = cres.packs_retired_waiting;
		r = delete_packs(repo, cres.dead_packs, cres.n_dead_packs, &res->repacked_packs_deleted,
				 &res->repacked_bytes_deleted);
	}
	catalog_gc_result_clear(&cres);
	return r;
}

int repo_gc(Repo *repo, GcResult *ret)
{
	return repo_gc_opts(repo, &(GcOptions){0}, ret);
}

int repo_gc_opts(Repo *repo, const GcOptions *o, GcResult *ret)
{
	GcResult res = {0};
	CatalogGcResult cres = {0};
	_cleanup_close_ int lock_fd = -1;
	int r = o->repack_pct < 100 ? 0 : -EINVAL;

	if (r == 0)
		r = repo_lock_maintenance(repo, &lock_fd);
	if (r == 0)
		r = repo_reap_dead_sessions(repo, &res.sessions_reaped, &res.snapshots_reaped);
	if (r == 0)
		r = catalog_gc(repo_catalog(repo), &cres);
	if (r < 0)
		return r;
	res.snapshots_purged = cres.snapshots_purged;
	res.contents_deleted = cres.contents_deleted;
	res.chunks_deleted = cres.chunks_deleted;
	res.chunks_waiting = cres.chunks_waiting;
	/* the catalog no longer points into these packs: deleting them is safe */
	if (repo_is_remote(repo))
		r = repo_write_publish(repo);
	if (r == 0)
		r = delete_packs(repo, cres.dead_packs, cres.n_dead_packs, &res.packs_deleted,
				 &res.bytes_reclaimed);
	catalog_gc_result_clear(&cres);
	if (r == 0)
		r = repo_write_check(repo);
	if (r == 0)
		r = gc_orphans(repo, &res);
	if (r == 0)
		r = gc_local_tmp(repo, &res);
	if (r == 0 && o->repack_pct)
		r = gc_repack(repo, o->repack_pct, &res);
	if (r < 0)
		return r;
	/* gc did its work; a catalog left uncompacted is the next gc's to compact */
	r = catalog_vacuum_sparse(repo_catalog(repo), &res.catalog_bytes_freed);
	if (r < 0)
		log_warning("could not compact the catalog: %s; the next gc tries again", strerror(-r));
	*ret = res;
	return 0;
}
