#include "store/reader.h"

#include <stdio.h>
#include <string.h>

#define READER_WINDOWS 2
#define READER_WINDOW_MIN (1024 * 1024)

typedef struct Window {
	uint8_t *buf;
	size_t len, used; /* bytes held, bytes of them served */
	uint64_t off;
	char name[64];
	unsigned last; /* win_clock of the last hit */
} Window;

struct ChunkReader {
	Repo *repo;
	Catalog *cat;
	ChunkCodec *codec;
	uint8_t *ebuf;
	size_t ebuf_cap;
	/* read-ahead windows: bytes [off, off + len) of pack name; two, because an
	 * incremental snapshot's chunks alternate between an old and a new pack */
	Window win[READER_WINDOWS];
	size_t win_cap;  /* 0: no read-ahead */
	size_t win_want; /* next fetch size: shrinks when windows go unused, grows when used */
	unsigned win_clock;
	/* a window the caller fetched (chunk_reader_lend): not ours to free */
	const uint8_t *lent;
	uint64_t lent_off;
	size_t lent_len;
	char lent_name[64];
};

int chunk_reader_new(Repo *repo, ChunkReader **ret)
{
	ChunkReader *r = calloc(1, sizeof(*r));
	int e;
	if (!r)
		return -ENOMEM;
	r->repo = repo;
	r->ebuf_cap = chunk_encode_bound(repo_config(repo)->chunk_size);
	r->ebuf = malloc(r->ebuf_cap);
	e = r->ebuf ? 0 : -ENOMEM;
	if (e == 0)
		e = repo_catalog_open(repo, &r->cat);
	if (e == 0)
		e = repo_codec_new(repo, &r->codec);
	if (e < 0) {
		chunk_reader_free(r);
		return e;
	}
	*ret = r;
	return 0;
}

ChunkReader *chunk_reader_free(ChunkReader *r)
{
	if (!r)
		return NULL;
	catalog_free(r->cat);
	chunk_codec_free(r->codec);
	free(r->ebuf);
	for (int i = 0; i < READER_WINDOWS; i++)
		free(r->win[i].buf);
	free(r);
	return NULL;
}

int chunk_reader_set_readahead(ChunkReader *r, size_t bytes)
{
	for (int i = 0; i < READER_WINDOWS; i++) {
		free(r->win[i].buf);
		r->win[i] = (Window){0};
	}
	r->win_cap = 0;
	if (bytes <= r->ebuf_cap)
		return 0;
	for (int i = 0; i < READER_WINDOWS; i++)
		if (!(r->win[i].buf = malloc(bytes)))
			return -ENOMEM;
	r->win_cap = r->win_want = bytes;
	return 0;
}

void chunk_reader_lend(ChunkReader *r, const char *pack, uint64_t off, const void *buf, size_t len)
{
	r->lent = pack ? buf : NULL;
	r->lent_off = off;
	r->lent_len = pack ? len : 0;
	snprintf(r->lent_name, sizeof(r->lent_name), "%s", pack ? pack : "");
}

static const uint8_t *lent_bytes(const ChunkReader *r, const ChunkLoc *loc)
{
	if (!r->lent || strcmp(r->lent_name, loc->pack_name) != 0 || loc->offset < r->lent_off ||
	    loc->offset + loc->elen > r->lent_off + r->lent_len)
		return NULL;
	return r->lent + (loc->offset - r->lent_off);
}

/*
 * Adapt the next fetch to how much of the window it replaces was used: a
 * snapshot whose chunks are scattered must not cost a whole window per
 * chunk; a sequential one gets the whole size back quickly.
 */
static void window_adapt(ChunkReader *r, const Window *w)
{
	if (!w->len)
		return;
	if (w->used * 8 < w->len)
		r->win_want = MAX(r->win_want / 2, MIN((size_t)READER_WINDOW_MIN, r->win_cap));
	else if (w->used * 2 >= w->len)
		r->win_want = MIN(r->win_want * 2, r->win_cap);
}

/* The encoded bytes of loc: from a window, after refilling the least recent one from loc on. */
static int fetch_windowed(ChunkReader *r, const ChunkLoc *loc, const uint8_t **ret)
{
	Window *w = NULL;
	int e;

	for (int i = 0; i < READER_WINDOWS && !w; i++) {
		Window *c = &r->win[i];
		if (c->len && strcmp(c->name, loc->pack_name) == 0 && loc->offset >= c->off &&
		    loc->offset + loc->elen <= c->off + c->len)
			w = c;
	}
	if (!w) {
		w = &r->win[0];
		for (int i = 1; i < READER_WINDOWS; i++)
			if (r->win[i].last < w->last)
				w = &r->win[i];
		window_adapt(r, w);
		uint64_t end = loc->offset + r->win_want;
		if (loc->pack_size && end > loc->pack_size)
			end = loc->pack_size;
		if (end < loc->offset + loc->elen)
			end = loc->offset + loc->elen;
		w->len = 0;
		e = store_get_range(repo_backend(r->repo), loc->pack_name, loc->offset,
				    end - loc->offset, w->buf);
		if (e < 0)
			return e;
		snprintf(w->name, sizeof(w->name), "%s", loc->pack_name);
		w->off = loc->offset;
		w->len = end - loc->offset;
		w->used = 0;
	}
	w->used += loc->elen;
	w->last = ++r->win_clock;
	*ret = w->buf + (loc->offset - w->off);
	return 0;
}

static int decode(ChunkReader *r, const ChunkLoc *loc, const uint8_t *enc, const ChunkId *id,
		  size_t plen, void *buf, bool fast)
{
	if (fast && loc->has_crc)
		return chunk_decode_crc(r->codec, (ChunkEncoding)loc->enc, enc, loc->elen, buf, plen,
					id, loc->crc);
	return chunk_decode(r->codec, (ChunkEncoding)loc->enc, enc, loc->elen, buf, plen, id);
}

/*
 * Forget what the windows hold of a pack: bytes that failed once are not
 * served again. A lent window stays: the caller fetched it for many chunks,
 * each verified on its own, and the one that failed is fetched alone anyway.
 */
static void windows_drop(ChunkReader *r, const char *pack)
{
	for (int i = 0; i < READER_WINDOWS; i++)
		if (strcmp(r->win[i].name, pack) == 0)
			r->win[i].len = 0;
}

static int read_chunk(ChunkReader *r, const ChunkId *id, size_t plen, void *buf, bool fast)
{
	ChunkLoc loc;
	int e;

	if (chunk_id_is_hole(id)) {
		memset(buf, 0, plen);
		return 0;
	}
	e = catalog_chunk_locate(r->cat, id, &loc);
	if (e < 0)
		return e;
	if (loc.plen != plen || loc.elen > r->ebuf_cap)
		return -EBADMSG;
	const uint8_t *enc = lent_bytes(r, &loc);
	if (!enc) {
		enc = r->ebuf;
		if (r->win_cap)
			e = fetch_windowed(r, &loc, &enc);
		else
			e = store_get_range(repo_backend(r->repo), loc.pack_name, loc.offset,
					    loc.elen, r->ebuf);
	}
	if (e == -ENODATA)
		return -EBADMSG; /* a truncated pack is damage, not absence */
	if (e < 0)
		return e;
	e = decode(r, &loc, enc, id, plen, buf, fast);
	if (e != -EBADMSG)
		return e;
	/*
	 * Bytes that fail verification may have been damaged on the way (a body
	 * from object storage): fetch the chunk once more, alone, before calling
	 * it damage.
	 */
	windows_drop(r, loc.pack_name);
	e = store_get_range(repo_backend(r->repo), loc.pack_name, loc.offset, loc.elen, r->ebuf);
	if (e == -ENODATA)
		return -EBADMSG;
	if (e < 0)
		return e;
	return decode(r, &loc, r->ebuf, id, plen, buf, fast);
}

int chunk_reader_read(ChunkReader *r, const ChunkId *id, size_t plen, void *buf)
{
	return read_chunk(r, id, plen, buf, false);
}

int chunk_reader_read_fast(ChunkReader *r, const ChunkId *id, size_t plen, void *buf)
{
	return read_chunk(r, id, plen, buf, true);
}

int chunk_reader_fh(ChunkReader *r, const ChunkId *id, uint8_t ret[CHUNK_FH_LEN])
{
	ChunkLoc loc;
	int e = catalog_chunk_locate(r->cat, id, &loc);
	if (e < 0)
		return e;
	if (!loc.has_fh)
		return -ENODATA;
	memcpy(ret, loc.fh, CHUNK_FH_LEN);
	return 0;
}

int chunk_reader_locate(ChunkReader *r, const ChunkId *ids, size_t n, ChunkLoc *ret, int *ret_err)
{
	return catalog_chunks_locate(r->cat, ids, n, ret, ret_err);
}

/*
 * The bytes at loc, decoded and checked against the catalog's CRC-32C, or an
 * error: any error sends the caller to read_chunk, which locates afresh and
 * fetches a failing chunk once more before calling it damaged.
 */
static int read_located(ChunkReader *r, const ChunkLoc *loc, const ChunkId *id, size_t plen,
			void *buf)
{
	const uint8_t *lent = lent_bytes(r, loc);
	int e;
	if (lent) /* bytes lent: a restore's fetched window, the mount's run */
		return decode(r, loc, lent, id, plen, buf, true);
	if (loc->enc == CHUNK_ENC_RAW && loc->elen == plen) {
		/* not sealed either (a sealed chunk is longer than its plain bytes) */
		e = store_get_range(repo_backend(r->repo), loc->pack_name, loc->offset, plen, buf);
		if (e == 0 && chunk_crc(id, buf, plen) != loc->crc)
			e = -EBADMSG;
		return e;
	}
	e = store_get_range(repo_backend(r->repo), loc->pack_name, loc->offset, loc->elen, r->ebuf);
	if (e == 0)
		e = decode(r, loc, r->ebuf, id, plen, buf, true);
	return e;
}

int chunk_reader_read_fast_at(ChunkReader *r, const ChunkId *id, const ChunkLoc *loc, size_t plen,
			      void *buf)
{
	/* read-ahead windows and catalogs without the CRC take the usual way */
	if (r->win_cap || !loc->has_crc || chunk_id_is_hole(id))
		return read_chunk(r, id, plen, buf, true);
	if (loc->plen == plen && loc->elen <= r->ebuf_cap && read_located(r, loc, id, plen, buf) == 0)
		return 0;
	int e = read_chunk(r, id, plen, buf, true);
	return e == 0 ? 1 : e;
}
