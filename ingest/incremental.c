/*
 * Materializing PostgreSQL's INCREMENTAL files against the parent snapshot.
 *
 * The tar stream hands an INCREMENTAL file over in pieces: its header, then
 * its blocks in ascending order. The result is written chunk by chunk, in
 * order, as the blocks arrive: every chunk before the one the next block
 * falls in is final (blocks come sorted), so it is written then, by the
 * parent's id when nothing in it changed, and the chunk a block falls in is
 * assembled in one buffer (the parent's bytes under the new blocks). Nothing
 * of the file is staged; memory is one chunk and the header.
 *
 * The manifest needs each file's CRC-32C, also over chunks that are never
 * read: the catalog keeps a CRC-32C of every stored chunk (over its id and
 * its plain bytes, store/chunk.c chunk_crc), and CRC-32C is linear, so the
 * file's CRC advances over a stored chunk from that value alone (see
 * incr_crc_add_stored). Chunks stored by versions that kept no CRC are read.
 */
#include "ingest/incremental.h"
#include "common/crc32c.h"
#include "common/util.h"
#include "ingest/manifest.h"
#include "ingest/pgpage.h"
#include "store/reader.h"

#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* ---- the header ---- */

static uint32_t get_u32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, sizeof(v)); /* host order, as the server wrote it */
	return v;
}

static size_t header_size(uint32_t n_blocks, uint32_t blcksz)
{
	size_t n = 12 + (size_t)n_blocks * 4;
	if (n_blocks > 0 && n % blcksz)
		n += blcksz - n % blcksz;
	return n;
}

int incr_header_parse(const void *buf, size_t len, uint32_t blcksz, uint32_t relseg_blocks,
		      IncrHeader *ret, size_t *ret_need)
{
	const uint8_t *p = buf;
	uint32_t n, trunc;
	size_t need = 12;

	if (len >= 4 && get_u32(p) != INCR_MAGIC)
		return -EBADMSG;
	if (len >= 12) {
		n = get_u32(p + 4);
		trunc = get_u32(p + 8);
		if (n > relseg_blocks || trunc > relseg_blocks)
			return -EBADMSG;
		need = header_size(n, blcksz);
	}
	if (ret_need)
		*ret_need = need;
	if (len < need)
		return -EAGAIN;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t b = get_u32(p + 12 + 4 * (size_t)i);
		if (b >= relseg_blocks || (i > 0 && b <= get_u32(p + 12 + 4 * (size_t)(i - 1))))
			return -EBADMSG;
	}
	if (!buf_is_zero(p + 12 + 4 * (size_t)n, need - 12 - 4 * (size_t)n))
		return -EBADMSG;
	IncrHeader h = {.n_blocks = n, .truncation_blocks = trunc, .header_len = need};
	if (n) {
		h.blocks = malloc((size_t)n * sizeof(uint32_t));
		if (!h.blocks)
			return -ENOMEM;
		for (uint32_t i = 0; i < n; i++)
			h.blocks[i] = get_u32(p + 12 + 4 * (size_t)i);
	}
	*ret = h;
	return 0;
}

void incr_header_clear(IncrHeader *h)
{
	free(h->blocks);
	*h = (IncrHeader){0};
}

uint64_t incr_result_blocks(const IncrHeader *h)
{
	uint64_t n = h->truncation_blocks;
	if (h->n_blocks && h->blocks[h->n_blocks - 1] >= n)
		n = (uint64_t)h->blocks[h->n_blocks - 1] + 1;
	return n;
}

static bool header_has_block(const IncrHeader *h, uint64_t b)
{
	size_t lo = 0, hi = h->n_blocks;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (h->blocks[mid] == b)
			return true;
		if (h->blocks[mid] < b)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

IncrSource incr_block_source(const IncrHeader *h, uint64_t parent_blocks, uint64_t b)
{
	if (header_has_block(h, b))
		return INCR_FROM_FILE;
	/* below the truncation length the parent's block stands, if it had one */
	if (b < h->truncation_blocks && b < parent_blocks)
		return INCR_FROM_PARENT;
	return INCR_FROM_ZERO;
}

int incr_chunk_plan(const IncrHeader *h, uint64_t parent_size, uint32_t blcksz,
		    uint64_t chunk_size, uint64_t c, IncrChunkPlan *ret)
{
	uint64_t size = incr_result_blocks(h) * blcksz, start = c * chunk_size;
	uint64_t n_file = 0, n_parent = 0, n_zero = 0;
	IncrChunkPlan p = {0};

	if (!blcksz || chunk_size % blcksz || start >= size)
		return -EINVAL;
	p.len = (size_t)MIN(chunk_size, size - start);
	p.parent_len = start < parent_size ? (size_t)MIN(chunk_size, parent_size - start) : 0;
	for (uint64_t b = start / blcksz; b < (start + p.len) / blcksz; b++) {
		switch (incr_block_source(h, parent_size / blcksz, b)) {
		case INCR_FROM_FILE: n_file++; break;
		case INCR_FROM_PARENT: n_parent++; break;
		case INCR_FROM_ZERO: n_zero++; break;
		}
	}
	if (!n_file && !n_zero && p.parent_len == p.len)
		p.kind = INCR_CHUNK_REUSE;
	else if (!n_file && !n_parent)
		p.kind = INCR_CHUNK_ZERO;
	else
		p.kind = INCR_CHUNK_BUILD;
	p.read_parent = p.kind == INCR_CHUNK_BUILD && n_parent > 0;
	*ret = p;
	return 0;
}

/* ---- CRC-32C over pieces ---- */

static const uint8_t zeros[64 * 1024];

uint32_t incr_crc_add_bytes(uint32_t state, const void *buf, size_t len)
{
	return crc32c_update(state, buf, len);
}

uint32_t incr_crc_add_zeros(uint32_t state, uint64_t len)
{
	while (len > 0) {
		size_t n = (size_t)MIN(len, sizeof(zeros));
		state = crc32c_update(state, zeros, n);
		len -= n;
	}
	return state;
}

/*
 * The raw update is linear: update(s, B) = Z(s) ^ update(0, B), with Z the
 * update over len zero bytes. The catalog's C = ~update(s_id, B), s_id the
 * state after the id, so update(state, B) = Z(state) ^ update(0, B)
 * = Z(state) ^ ~C ^ Z(s_id) = Z(state ^ s_id) ^ ~C.
 */
uint32_t incr_crc_add_stored(uint32_t state, const ChunkId *id, uint32_t stored_crc, size_t len)
{
	uint32_t s_id = crc32c_update(0xFFFFFFFFu, id->b, sizeof(id->b));
	return incr_crc_add_zeros(state ^ s_id, len) ^ ~stored_crc;
}

/* ---- the materializer ---- */

typedef struct ParentFile {
	char *path;
	uint64_t size;
	int64_t content; /* 0: empty */
} ParentFile;

/* A file the manifest must show as materialized. */
typedef struct Done {
	char *sent_path; /* as the server's manifest names it */
	char *path;
	uint64_t size;
	uint32_t crc;
	bool used;
	bool dropped; /* a visibility-map fork left out: its manifest line goes too */
} Done;

typedef struct IncrFile {
	bool is_label;
	bool drop; /* a visibility-map fork sent as changed blocks: left out */
	TreeMeta meta;
	char *sent_path, *path;
	/* backup_label: its bytes */
	char *text;
	size_t text_len;
	/* INCREMENTAL: the header as it arrives, then the blocks */
	uint8_t *hbuf;
	size_t hlen, hcap;
	bool have_header;
	IncrHeader h;
	uint64_t size, n_chunks;
	const ParentFile *pf;
	ChunkId *pids;
	size_t n_pids;
	TreeFile *out;
	uint32_t block;       /* index of the block arriving */
	size_t boff;          /* bytes of it received */
	uint64_t next_chunk;  /* first chunk not written */
	int64_t cur_chunk;    /* chunk assembled in the buffer, -1: none */
	uint64_t run_start, run_n; /* reusable ids not appended yet */
	uint32_t crc;
	int error;
} IncrFile;

struct Incr {
	Repo *repo;
	IncrOptions o;
	char parent_name[64];
	uint64_t chunk_size;
	Catalog *cat; /* own connection: chunk CRCs, content lists */
	ChunkReader *reader;
	Tree *tree;
	ParentFile *pfiles; /* sorted by path */
	size_t n_pfiles;
	Done *done;
	size_t n_done;
	uint8_t *cbuf; /* the chunk being assembled */
	IncrFile *open; /* at most one at a time: tar streams files one by one */
	bool passthrough; /* our own tree calls are not diverted */
	uint64_t n_files, reused_bytes;
	char err[512];
};

static int _printf_(3, 4) incr_fail(Incr *in, int r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(in->err, sizeof(in->err), fmt, ap);
	va_end(ap);
	return r;
}

static int cmp_pfile(const void *a, const void *b)
{
	return strcmp(((const ParentFile *)a)->path, ((const ParentFile *)b)->path);
}

typedef struct Load {
	Incr *in;
	char **dirs; /* by ino */
	size_t n_dirs;
} Load;

static int load_file(const FileRow *f, void *userdata)
{
	Load *ld = userdata;
	Incr *in = ld->in;
	const char *dir = f->parent < ld->n_dirs && ld->dirs[f->parent] ? ld->dirs[f->parent] : "";
	char *path;

	if (f->ino == 1 || (!S_ISDIR(f->mode) && !S_ISREG(f->mode)))
		return 0;
	if (asprintf(&path, "%s%s%s", dir, *dir ? "/" : "", f->name) < 0)
		return -ENOMEM;
	if (S_ISDIR(f->mode)) {
		if (f->ino >= ld->n_dirs) {
			size_t n = MAX(f->ino + 1, ld->n_dirs * 2);
			char **v = realloc(ld->dirs, n * sizeof(char *));
			if (!v) {
				free(path);
				return -ENOMEM;
			}
			memset(v + ld->n_dirs, 0, (n - ld->n_dirs) * sizeof(char *));
			ld->dirs = v;
			ld->n_dirs = n;
		}
		free(ld->dirs[f->ino]);
		ld->dirs[f->ino] = path;
		return 0;
	}
	ParentFile *v = realloc(in->pfiles, (in->n_pfiles + 1) * sizeof(*v));
	if (!v) {
		free(path);
		return -ENOMEM;
	}
	in->pfiles = v;
	v[in->n_pfiles++] = (ParentFile){.path = path, .size = f->size, .content = f->content};
	return 0;
}

int incr_new(Repo *repo, const IncrOptions *o, Incr **ret)
{
	Incr *in;
	Load ld = {0};
	int r;

	if (!o->blcksz || repo_config(repo)->chunk_size % o->blcksz || !o->relseg_blocks)
		return -EINVAL;
	in = calloc(1, sizeof(*in));
	if (!in)
		return -ENOMEM;
	in->repo = repo;
	in->o = *o;
	snprintf(in->parent_name, sizeof(in->parent_name), "%s", o->parent_name ? o->parent_name : "");
	in->o.parent_name = in->parent_name;
	in->chunk_size = repo_config(repo)->chunk_size;
	in->cbuf = malloc(in->chunk_size);
	r = in->cbuf ? repo_catalog_open(repo, &in->cat) : -ENOMEM;
	if (r == 0)
		r = chunk_reader_new(repo, &in->reader);
	ld.in = in;
	if (r == 0)
		r = catalog_file_foreach(in->cat, o->parent_rowid, load_file, &ld);
	for (size_t i = 0; i < ld.n_dirs; i++)
		free(ld.dirs[i]);
	free(ld.dirs);
	if (r < 0) {
		incr_free(in);
		return r;
	}
	if (in->n_pfiles > 1)
		qsort(in->pfiles, in->n_pfiles, sizeof(ParentFile), cmp_pfile);
	*ret = in;
	return 0;
}

static void file_free(IncrFile *f)
{
	if (!f)
		return;
	free(f->sent_path);
	free(f->path);
	free(f->text);
	free(f->hbuf);
	free(f->pids);
	incr_header_clear(&f->h);
	free(f);
}

Incr *incr_free(Incr *in)
{
	if (!in)
		return NULL;
	file_free(in->open); /* the tree's owner ends open files before freeing us */
	for (size_t i = 0; i < in->n_pfiles; i++)
		free(in->pfiles[i].path);
	free(in->pfiles);
	for (size_t i = 0; i < in->n_done; i++) {
		free(in->done[i].sent_path);
		free(in->done[i].path);
	}
	free(in->done);
	chunk_reader_free(in->reader);
	catalog_free(in->cat);
	free(in->cbuf);
	free(in);
	return NULL;
}

const char *incr_error(const Incr *in) { return in->err; }
uint64_t incr_n_files(const Incr *in) { return in->n_files; }
uint64_t incr_reused_bytes(const Incr *in) { return in->reused_bytes; }

static const ParentFile *parent_lookup(const Incr *in, const char *path)
{
	ParentFile key = {.path = (char *)path};
	return in->n_pfiles ? bsearch(&key, in->pfiles, in->n_pfiles, sizeof(ParentFile), cmp_pfile)
			    : NULL;
}

/* The len plain bytes of a stored chunk (or hole) into buf. */
static int read_stored_chunk(Incr *in, const ChunkId *id, size_t len, uint8_t *buf)
{
	if (chunk_id_is_hole(id)) {
		memset(buf, 0, len);
		return 0;
	}
	return chunk_reader_read_fast(in->reader, id, len, buf);
}

bool incr_parent_has_manifest(const Incr *in)
{
	const ParentFile *pf = parent_lookup(in, "backup_manifest");
	return pf && pf->content;
}

int incr_parent_manifest_send(Incr *in, IncrSendFn cb, void *userdata)
{
	const ParentFile *pf = parent_lookup(in, "backup_manifest");
	_cleanup_free_ ChunkId *ids = NULL;
	size_t n = 0;
	int r;

	if (!pf || !pf->content)
		return -ENOENT;
	r = catalog_content_get(in->cat, pf->content, &ids, &n);
	for (size_t i = 0; r == 0 && i < n; i++) {
		uint64_t off = i * in->chunk_size;
		size_t len = off < pf->size ? (size_t)MIN(in->chunk_size, pf->size - off) : 0;
		if (!len) {
			r = -EBADMSG;
			break;
		}
		r = read_stored_chunk(in, &ids[i], len, in->cbuf);
		if (r == 0)
			r = cb(in->cbuf, len, userdata);
	}
	return r;
}

static int add_done(Incr *in, const char *sent_path, const char *path, uint64_t size, uint32_t crc)
{
	Done *v = realloc(in->done, (in->n_done + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	in->done = v;
	v[in->n_done] = (Done){.sent_path = strdup(sent_path), .path = strdup(path), .size = size,
			       .crc = crc};
	if (!v[in->n_done].sent_path || !v[in->n_done].path) {
		free(v[in->n_done].sent_path);
		free(v[in->n_done].path);
		return -ENOMEM;
	}
	in->n_done++;
	return 0;
}

/* ---- writing the result of an INCREMENTAL file ---- */

static int flush_run(Incr *in, IncrFile *f)
{
	uint64_t start = f->run_start * in->chunk_size;
	uint64_t len = MIN(f->run_n * in->chunk_size, f->size - start);
	int r;
	if (!f->run_n)
		return 0;
	r = tree_file_write_ids(in->tree, f->out, f->pids + f->run_start, f->run_n, len);
	if (r == 0)
		in->reused_bytes += len;
	f->run_n = 0;
	return r;
}

static int write_bytes(Incr *in, IncrFile *f, const uint8_t *buf, size_t len)
{
	int r = flush_run(in, f);
	if (r == 0)
		r = tree_file_write(in->tree, f->out, buf, len);
	if (r == 0)
		f->crc = incr_crc_add_bytes(f->crc, buf, len);
	return r;
}

/* The parent's chunk c under the result's chunk c: parent blocks kept, the rest zero. */
static int build_base(Incr *in, IncrFile *f, uint64_t c, const IncrChunkPlan *p)
{
	uint32_t bs = in->o.blcksz;
	uint64_t first = c * in->chunk_size / bs;
	int r;

	memset(in->cbuf, 0, in->chunk_size);
	if (!p->read_parent)
		return 0;
	if (c >= f->n_pids)
		return incr_fail(in, -EBADMSG, "the parent snapshot's file \"%s\" has fewer chunks "
				 "than its size", f->path);
	r = read_stored_chunk(in, &f->pids[c], p->parent_len, in->cbuf);
	if (r < 0)
		return incr_fail(in, r, "could not read the parent snapshot's file \"%s\": %s",
				 f->path, strerror(-r));
	for (size_t off = 0; off < p->len; off += bs)
		if (incr_block_source(&f->h, f->pf->size / bs, first + off / bs) != INCR_FROM_PARENT)
			memset(in->cbuf + off, 0, bs);
	return 0;
}

static int reuse_chunk(Incr *in, IncrFile *f, uint64_t c, size_t len)
{
	const ChunkId *id = &f->pids[c];
	ChunkLoc loc;
	int r;

	if (c >= f->n_pids)
		return incr_fail(in, -EBADMSG, "the parent snapshot's file \"%s\" has fewer chunks "
				 "than its size", f->path);
	if (chunk_id_is_hole(id)) {
		f->crc = incr_crc_add_zeros(f->crc, len);
	} else {
		r = catalog_chunk_locate(in->cat, id, &loc);
		if (r < 0)
			return incr_fail(in, r, "could not find a chunk of the parent snapshot's file "
					 "\"%s\": %s", f->path, strerror(-r));
		if (loc.has_crc) {
			f->crc = incr_crc_add_stored(f->crc, id, loc.crc, len);
		} else { /* stored by a version that kept no CRC: read it for the manifest */
			r = read_stored_chunk(in, id, len, in->cbuf);
			if (r < 0)
				return incr_fail(in, r, "could not read the parent snapshot's file "
						 "\"%s\": %s", f->path, strerror(-r));
			f->crc = incr_crc_add_bytes(f->crc, in->cbuf, len);
		}
	}
	if (f->run_n && f->run_start + f->run_n != c) {
		r = flush_run(in, f);
		if (r < 0)
			return r;
	}
	if (!f->run_n)
		f->run_start = c;
	f->run_n++;
	return 0;
}

/* Chunk c, which no block of the incremental file touches. */
static int write_plain_chunk(Incr *in, IncrFile *f, uint64_t c)
{
	IncrChunkPlan p;
	int r = incr_chunk_plan(&f->h, f->pf->size, in->o.blcksz, in->chunk_size, c, &p);
	if (r < 0)
		return r;
	switch (p.kind) {
	case INCR_CHUNK_REUSE:
		return reuse_chunk(in, f, c, p.len);
	case INCR_CHUNK_ZERO:
		memset(in->cbuf, 0, p.len);
		return write_bytes(in, f, in->cbuf, p.len);
	case INCR_CHUNK_BUILD:
		r = build_base(in, f, c, &p);
		return r < 0 ? r : write_bytes(in, f, in->cbuf, p.len);
	}
	return -EINVAL;
}

static int finish_cur_chunk(Incr *in, IncrFile *f)
{
	uint64_t start = (uint64_t)f->cur_chunk * in->chunk_size;
	int r;
	if (f->cur_chunk < 0)
		return 0;
	r = write_bytes(in, f, in->cbuf, (size_t)MIN(in->chunk_size, f->size - start));
	f->next_chunk = (uint64_t)f->cur_chunk + 1;
	f->cur_chunk = -1;
	return r;
}

/* Everything before chunk c is final: write it; chunk c becomes the one assembled. */
static int begin_chunk(Incr *in, IncrFile *f, uint64_t c)
{
	IncrChunkPlan p;
	int r = 0;
	if (f->cur_chunk == (int64_t)c)
		return 0;
	r = finish_cur_chunk(in, f);
	while (r == 0 && f->next_chunk < c)
		r = write_plain_chunk(in, f, f->next_chunk++);
	if (r == 0)
		r = incr_chunk_plan(&f->h, f->pf->size, in->o.blcksz, in->chunk_size, c, &p);
	if (r == 0)
		r = build_base(in, f, c, &p);
	if (r == 0)
		f->cur_chunk = (int64_t)c;
	return r;
}

static int take_header(Incr *in, IncrFile *f, const uint8_t **p, size_t *len)
{
	size_t need = 12;
	int r;
	for (;;) {
		r = incr_header_parse(f->hbuf, f->hlen, in->o.blcksz, in->o.relseg_blocks, &f->h, &need);
		if (r != -EAGAIN)
			break;
		if (!*len)
			return 0;
		if (need > f->hcap) {
			uint8_t *v = realloc(f->hbuf, need);
			if (!v)
				return -ENOMEM;
			f->hbuf = v;
			f->hcap = need;
		}
		size_t n = MIN(*len, need - f->hlen);
		memcpy(f->hbuf + f->hlen, *p, n);
		f->hlen += n;
		*p += n;
		*len -= n;
	}
	if (r < 0)
		return r == -EBADMSG ? incr_fail(in, r, "the server sent a damaged incremental file "
						"\"%s\"", f->sent_path)
				     : r;
	f->have_header = true;
	f->size = incr_result_blocks(&f->h) * in->o.blcksz;
	f->n_chunks = (f->size + in->chunk_size - 1) / in->chunk_size;
	return 0;
}

static int incremental_write(Incr *in, IncrFile *f, const uint8_t *p, size_t len)
{
	uint32_t bs = in->o.blcksz;
	int r;
	if (!f->have_header) {
		r = take_header(in, f, &p, &len);
		if (r < 0 || !f->have_header)
			return r;
	}
	while (len > 0) {
		if (f->block >= f->h.n_blocks)
			return incr_fail(in, -EBADMSG, "the incremental file \"%s\" is longer than its "
					 "header says", f->sent_path);
		uint64_t off = (uint64_t)f->h.blocks[f->block] * bs;
		if (f->boff == 0) {
			r = begin_chunk(in, f, off / in->chunk_size);
			if (r < 0)
				return r;
		}
		size_t n = MIN(len, bs - f->boff);
		memcpy(in->cbuf + off % in->chunk_size + f->boff, p, n);
		f->boff += n;
		p += n;
		len -= n;
		if (f->boff == bs) {
			f->boff = 0;
			f->block++;
		}
	}
	return 0;
}

static int incremental_end(Incr *in, IncrFile *f)
{
	int r = 0;
	if (!f->have_header || f->block < f->h.n_blocks)
		r = incr_fail(in, -EBADMSG, "the incremental file \"%s\" ends early", f->sent_path);
	if (r == 0)
		r = finish_cur_chunk(in, f);
	while (r == 0 && f->next_chunk < f->n_chunks)
		r = write_plain_chunk(in, f, f->next_chunk++);
	if (r == 0)
		r = flush_run(in, f);
	int r2 = tree_file_end(in->tree, f->out);
	f->out = NULL;
	r = r ? r : r2;
	if (r == 0)
		r = add_done(in, f->sent_path, f->path, f->size, incr_crc_final(f->crc));
	if (r == 0)
		in->n_files++;
	return r;
}

static int incremental_begin(Incr *in, IncrFile *f)
{
	int r;
	f->pf = parent_lookup(in, f->path);
	if (!f->pf)
		return incr_fail(in, -ENOENT, "the server sent \"%s\" as changed blocks, but the parent "
				 "snapshot \"%s\" has no file \"%s\"", f->sent_path,
				 in->parent_name, f->path);
	if (f->pf->content) {
		r = catalog_content_get(in->cat, f->pf->content, &f->pids, &f->n_pids);
		if (r < 0)
			return incr_fail(in, r, "could not read the chunk list of \"%s\" in the parent "
					 "snapshot: %s", f->path, strerror(-r));
	}
	in->passthrough = true;
	r = tree_file_begin(in->tree, f->path, &f->meta, &f->out);
	in->passthrough = false;
	if (r == 0 && !f->out)
		r = incr_fail(in, -EPROTO, "the server sent \"%s\" twice", f->path);
	f->cur_chunk = -1;
	f->crc = INCR_CRC_INIT;
	return r;
}

/* ---- backup_label ---- */

#define LABEL_MAX (1 << 20)

static int label_write(Incr *in, IncrFile *f, const uint8_t *p, size_t len)
{
	if (f->text_len + len > LABEL_MAX)
		return incr_fail(in, -EBADMSG, "the server's backup_label is too long");
	char *v = realloc(f->text, f->text_len + len + 1);
	if (!v)
		return -ENOMEM;
	memcpy(v + f->text_len, p, len);
	f->text = v;
	f->text_len += len;
	f->text[f->text_len] = '\0';
	return 0;
}

/* backup_label without "INCREMENTAL FROM" lines: PostgreSQL refuses to start on those. */
static int label_end(Incr *in, IncrFile *f)
{
	_cleanup_free_ char *out = malloc(f->text_len + 1);
	size_t n = 0;
	TreeFile *tf = NULL;
	int r;

	if (!out)
		return -ENOMEM;
	for (size_t i = 0; i < f->text_len;) {
		const char *nl = memchr(f->text + i, '\n', f->text_len - i);
		size_t line = nl ? (size_t)(nl - (f->text + i)) + 1 : f->text_len - i;
		if (strncmp(f->text + i, "INCREMENTAL FROM ", 17) != 0) {
			memcpy(out + n, f->text + i, line);
			n += line;
		}
		i += line;
	}
	in->passthrough = true;
	r = tree_file_begin(in->tree, f->path, &f->meta, &tf);
	in->passthrough = false;
	if (r < 0 || !tf)
		return r;
	r = tree_file_write(in->tree, tf, out, n);
	int r2 = tree_file_end(in->tree, tf);
	r = r ? r : r2;
	if (r == 0)
		r = add_done(in, f->sent_path, f->path, n, crc32c(out, n));
	return r;
}

/* ---- the tree's diverter ---- */

static int divert_begin(void *userdata, const char *path, const TreeMeta *m, void **ret_state)
{
	Incr *in = userdata;
	const char *slash = strrchr(path, '/'), *name = slash ? slash + 1 : path;
	bool label = !strcmp(path, "backup_label");
	IncrFile *f;
	int r;

	if (in->passthrough || (!label && (strncmp(name, INCR_PREFIX, strlen(INCR_PREFIX)) != 0 ||
					   !name[strlen(INCR_PREFIX)])))
		return 0;
	if (in->open)
		return -EBUSY;
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->is_label = label;
	f->meta = *m;
	f->sent_path = strdup(path);
	if (label)
		f->path = strdup(path);
	else if (asprintf(&f->path, "%.*s%s", (int)(name - path), path, name + strlen(INCR_PREFIX)) < 0)
		f->path = NULL;
	if (!f->sent_path || !f->path) {
		file_free(f);
		return -ENOMEM;
	}
	/*
	 * A visibility map sent as changed blocks cannot be rebuilt: heap records
	 * clear VM bits in redo without referencing the VM page, so the server's
	 * summary misses such pages and the parent's copy may still say
	 * all-visible (an index-only scan would then skip a changed heap page). A
	 * missing VM fork is valid, every bit clear; VACUUM sets them again.
	 */
	PgRelFile rf;
	if (!label && pg_path_relfile(f->path, &rf) && rf.fork == PG_FORK_VM) {
		f->drop = true;
		in->open = f;
		*ret_state = f;
		return 1;
	}
	r = label ? 0 : incremental_begin(in, f);
	if (r < 0) {
		if (f->out)
			tree_file_end(in->tree, f->out);
		file_free(f);
		return r;
	}
	in->open = f;
	*ret_state = f;
	return 1;
}

static int divert_write(void *userdata, void *state, const void *buf, size_t len)
{
	Incr *in = userdata;
	IncrFile *f = state;
	int r;
	if (f->error)
		return f->error;
	if (f->drop)
		return 0;
	r = f->is_label ? label_write(in, f, buf, len) : incremental_write(in, f, buf, len);
	if (r < 0)
		f->error = r;
	return r;
}

static int divert_end(void *userdata, void *state)
{
	Incr *in = userdata;
	IncrFile *f = state;
	int r = f->error;
	if (r == 0 && f->drop) {
		r = add_done(in, f->sent_path, f->path, 0, 0);
		if (r == 0)
			in->done[in->n_done - 1].dropped = true;
	} else if (r == 0) {
		r = f->is_label ? label_end(in, f) : incremental_end(in, f);
	}
	if (f->out)
		tree_file_end(in->tree, f->out);
	in->open = NULL;
	file_free(f);
	return r;
}

void incr_attach(Incr *in, Tree *t)
{
	TreeDivert d = {.begin = divert_begin, .write = divert_write, .end = divert_end,
			.userdata = in};
	in->tree = t;
	tree_set_divert(t, &d);
}

/* ---- the manifest ---- */

/*
 * A JSON string at p (after its opening quote) into out (malloc'd); *ret_end
 * just past the closing quote. Only what PostgreSQL's escape_json writes.
 */
static int json_string_at(const char *p, const char *end, char **ret, const char **ret_end)
{
	char *out = malloc((size_t)(end - p) + 1);
	size_t n = 0;
	if (!out)
		return -ENOMEM;
	while (p < end && *p != '"') {
		char c = *p++;
		if (c == '\\') {
			if (p >= end)
				break;
			c = *p++;
			switch (c) {
			case 'b': c = '\b'; break;
			case 'f': c = '\f'; break;
			case 'n': c = '\n'; break;
			case 'r': c = '\r'; break;
			case 't': c = '\t'; break;
			case 'u': {
				uint8_t v[2];
				if (end - p < 4 || hex_decode(p, v, 2) < 0 || v[0]) {
					free(out);
					return -EPROTO;
				}
				c = (char)v[1];
				p += 4;
				break;
			}
			default: break; /* \" \\ \/ */
			}
		}
		out[n++] = c;
	}
	if (p >= end) {
		free(out);
		return -EPROTO;
	}
	out[n] = '\0';
	*ret = out;
	*ret_end = p + 1;
	return 0;
}

static Done *done_lookup(Incr *in, const char *sent_path)
{
	for (size_t i = 0; i < in->n_done; i++)
		if (!strcmp(in->done[i].sent_path, sent_path))
			return &in->done[i];
	return NULL;
}

/* One file entry line: replaced when it names a materialized file, else kept. */
static int rewrite_entry(Incr *in, FILE *out, const char *line, const char *eol)
{
	static const char path_key[] = "{ \"Path\": \"", mtime_key[] = "\"Last-Modified\": \"";
	_cleanup_free_ char *path = NULL;
	const char *after, *mt, *mt_end, *close;
	Done *d;
	int r = json_string_at(line + strlen(path_key), eol, &path, &after);
	if (r < 0)
		return r;
	d = done_lookup(in, path);
	if (!d) {
		fwrite(line, 1, (size_t)(eol - line), out);
		return 0;
	}
	mt = memmem(after, (size_t)(eol - after), mtime_key, strlen(mtime_key));
	mt_end = mt ? memchr(mt + strlen(mtime_key), '"', (size_t)(eol - mt - strlen(mtime_key))) : NULL;
	close = mt_end ? memchr(mt_end, '}', (size_t)(eol - mt_end)) : NULL;
	if (!close || d->used)
		return -EPROTO;
	d->used = true;
	if (d->dropped) {
		/* entries are joined by ",\n": the last one left out takes the comma before it */
		if (eol - line >= 2 && eol[-1] == '\n' && eol[-2] != ',') {
			if (fflush(out) != 0 || fseeko(out, -2, SEEK_CUR) != 0)
				return -EPROTO;
			fputc('\n', out);
		}
		return 0;
	}
	fputs("{ \"Path\": ", out);
	manifest_put_json_string(out, d->path);
	fprintf(out, ", \"Size\": %llu, %.*s, \"Checksum-Algorithm\": \"CRC32C\", "
		     "\"Checksum\": \"%02x%02x%02x%02x\" ",
		(unsigned long long)d->size, (int)(mt_end + 1 - mt), mt, d->crc & 0xff,
		(d->crc >> 8) & 0xff, (d->crc >> 16) & 0xff, d->crc >> 24);
	fwrite(close, 1, (size_t)(eol - close), out);
	return 0;
}

int incr_rewrite_manifest(Incr *in, const char *text, size_t len, char **ret, size_t *ret_len)
{
	static const char path_key[] = "{ \"Path\": \"", sum_key[] = "\"Manifest-Checksum\": \"";
	char *buf = NULL, hex[65];
	size_t buf_len = 0;
	unsigned char digest[32];
	unsigned int dlen = 0;
	bool summed = false;
	FILE *out = open_memstream(&buf, &buf_len);
	int r = out ? 0 : -ENOMEM;

	for (size_t i = 0; i < in->n_done; i++)
		in->done[i].used = false;
	in->err[0] = '\0';
	for (const char *p = text, *end = text + len; r == 0 && p < end;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *eol = nl ? nl + 1 : end;
		if (!strncmp(p, path_key, MIN(strlen(path_key), (size_t)(end - p)))) {
			r = rewrite_entry(in, out, p, eol);
		} else if (!strncmp(p, sum_key, MIN(strlen(sum_key), (size_t)(end - p)))) {
			/* the checksum covers everything before its line */
			if (fflush(out) != 0) {
				r = -ENOMEM;
				break;
			}
			PGBAKFS_CHECK(EVP_Digest(buf, buf_len, digest, &dlen, EVP_sha256(), NULL) == 1);
			hex_encode(digest, sizeof(digest), hex);
			fprintf(out, "%s%s\"}\n", sum_key, hex);
			summed = true;
			break;
		} else {
			fwrite(p, 1, (size_t)(eol - p), out);
		}
		p = eol;
	}
	if (out && fclose(out) != 0 && r == 0)
		r = -ENOMEM;
	for (size_t i = 0; r == 0 && i < in->n_done; i++)
		if (!in->done[i].used)
			r = incr_fail(in, -EPROTO, "the server's backup_manifest does not list \"%s\"",
				      in->done[i].sent_path);
	if (r == 0 && !summed)
		r = incr_fail(in, -EPROTO, "the server's backup_manifest has no Manifest-Checksum");
	if (r < 0) {
		if (r != -EPROTO || !in->err[0])
			incr_fail(in, r, "the server's backup_manifest is not laid out as expected");
		free(buf);
		return r;
	}
	*ret = buf;
	*ret_len = buf_len;
	return 0;
}
