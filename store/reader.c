#include "store/reader.h"

#include <stdio.h>
#include <string.h>

struct ChunkReader {
	Repo *repo;
	Catalog *cat;
	ChunkCodec *codec;
	uint8_t *ebuf;
	size_t ebuf_cap;
	/* read-ahead window: bytes [win_off, win_off + win_len) of pack win_name */
	uint8_t *win;
	size_t win_cap, win_len;
	uint64_t win_off;
	char win_name[64];
	size_t win_want; /* next fetch size: shrinks when windows go unused, grows when used */
	size_t win_used; /* bytes of the current window served */
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
	free(r->win);
	free(r);
	return NULL;
}

int chunk_reader_set_readahead(ChunkReader *r, size_t bytes)
{
	free(r->win);
	r->win = NULL;
	r->win_cap = r->win_len = 0;
	if (bytes <= r->ebuf_cap)
		return 0;
	if (!(r->win = malloc(bytes)))
		return -ENOMEM;
	r->win_cap = r->win_want = bytes;
	return 0;
}

/*
 * Adapt the next fetch to how much of the last window was used: a snapshot
 * whose chunks alternate between packs (an incremental one) must not cost a
 * whole window per chunk.
 */
static void window_adapt(ChunkReader *r)
{
	if (!r->win_len)
		return;
	if (r->win_used * 4 < r->win_len)
		r->win_want = MAX(r->win_want / 4, r->ebuf_cap);
	else if (r->win_used * 2 >= r->win_len)
		r->win_want = MIN(r->win_want * 2, r->win_cap);
}

/* The encoded bytes of loc: from the window, after refilling it from loc on. */
static int fetch_windowed(ChunkReader *r, const ChunkLoc *loc, const uint8_t **ret)
{
	int e;
	if (strcmp(r->win_name, loc->pack_name) != 0 || loc->offset < r->win_off ||
	    loc->offset + loc->elen > r->win_off + r->win_len) {
		window_adapt(r);
		uint64_t end = loc->offset + r->win_want;
		if (loc->pack_size && end > loc->pack_size)
			end = loc->pack_size;
		if (end < loc->offset + loc->elen)
			end = loc->offset + loc->elen;
		r->win_len = 0;
		e = store_get_range(repo_backend(r->repo), loc->pack_name, loc->offset,
				    end - loc->offset, r->win);
		if (e < 0)
			return e;
		snprintf(r->win_name, sizeof(r->win_name), "%s", loc->pack_name);
		r->win_off = loc->offset;
		r->win_len = end - loc->offset;
		r->win_used = 0;
	}
	r->win_used += loc->elen;
	*ret = r->win + (loc->offset - r->win_off);
	return 0;
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
	const uint8_t *enc = r->ebuf;
	if (r->win)
		e = fetch_windowed(r, &loc, &enc);
	else
		e = store_get_range(repo_backend(r->repo), loc.pack_name, loc.offset, loc.elen, r->ebuf);
	if (e == -ENODATA)
		return -EBADMSG; /* a truncated pack is damage, not absence */
	if (e < 0)
		return e;
	if (fast && loc.has_crc)
		return chunk_decode_crc(r->codec, (ChunkEncoding)loc.enc, enc, loc.elen, buf,
					plen, id, loc.crc);
	return chunk_decode(r->codec, (ChunkEncoding)loc.enc, enc, loc.elen, buf, plen, id);
}

int chunk_reader_read(ChunkReader *r, const ChunkId *id, size_t plen, void *buf)
{
	return read_chunk(r, id, plen, buf, false);
}

int chunk_reader_read_fast(ChunkReader *r, const ChunkId *id, size_t plen, void *buf)
{
	return read_chunk(r, id, plen, buf, true);
}
