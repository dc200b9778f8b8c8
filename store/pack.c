#include "store/pack.h"
#include "common/util.h"

#include <stdio.h>
#include <string.h>

static const char pack_magic[8] = "PGBKPAK1";
static const char pack_end_magic[8] = "PGBKEND1";

struct PackWriter {
	uint8_t *buf;
	size_t len, cap;
	PackEntry *entries;
	size_t n_entries, cap_entries;
	/* open-addressing set of entry indexes + 1, for pack_writer_contains() */
	uint32_t *set;
	size_t set_cap;
};

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
	size_t n = *cap ? *cap : 16;
	void *q;
	if (need <= *cap)
		return 0;
	while (n < need)
		n *= 2;
	q = realloc(*p, n * elem);
	if (!q)
		return -ENOMEM;
	*p = q;
	*cap = n;
	return 0;
}

/*
 * The pack's bytes grow in huge-page-aligned memory: the backend writes a whole
 * pack from it, and a local one with O_DIRECT when it is aligned
 * (file_write_atomic), so packs do not pass through the page cache.
 */
static int grow_buf(PackWriter *w, size_t need)
{
	if (need <= w->cap)
		return 0;
	size_t n = MAX(need, w->cap * 2);
	uint8_t *q = malloc_huge(n);
	if (!q)
		return -ENOMEM;
	if (w->buf)
		memcpy(q, w->buf, w->len);
	free(w->buf);
	w->buf = q;
	w->cap = n;
	return 0;
}

int pack_writer_new(size_t capacity, PackWriter **ret)
{
	PackWriter *w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	if (grow_buf(w, capacity + PACK_HEADER_LEN) < 0) {
		free(w);
		return -ENOMEM;
	}
	pack_writer_reset(w);
	*ret = w;
	return 0;
}

PackWriter *pack_writer_free(PackWriter *w)
{
	if (!w)
		return NULL;
	free(w->buf);
	free(w->entries);
	free(w->set);
	free(w);
	return NULL;
}

void pack_writer_reset(PackWriter *w)
{
	memcpy(w->buf, pack_magic, sizeof(pack_magic));
	w->len = PACK_HEADER_LEN;
	w->n_entries = 0;
	if (w->set)
		memset(w->set, 0, w->set_cap * sizeof(*w->set));
}

static size_t id_slot(const ChunkId *id, size_t cap)
{
	uint64_t h;
	memcpy(&h, id->b, sizeof(h)); /* ids are uniformly random */
	return (size_t)(h & (cap - 1));
}

static int set_insert(PackWriter *w, size_t idx)
{
	if ((w->n_entries + 1) * 2 > w->set_cap) {
		size_t cap = w->set_cap ? w->set_cap * 2 : 1024;
		uint32_t *set = calloc(cap, sizeof(*set));
		if (!set)
			return -ENOMEM;
		free(w->set);
		w->set = set;
		w->set_cap = cap;
		for (size_t i = 0; i <= idx; i++) { /* rehash, the entry being added included */
			size_t s = id_slot(&w->entries[i].id, cap);
			while (set[s])
				s = (s + 1) & (cap - 1);
			set[s] = (uint32_t)i + 1;
		}
		return 0;
	}
	size_t s = id_slot(&w->entries[idx].id, w->set_cap);
	while (w->set[s])
		s = (s + 1) & (w->set_cap - 1);
	w->set[s] = (uint32_t)idx + 1;
	return 0;
}

bool pack_writer_contains(const PackWriter *w, const ChunkId *id)
{
	if (!w->set_cap)
		return false;
	for (size_t s = id_slot(id, w->set_cap); w->set[s]; s = (s + 1) & (w->set_cap - 1))
		if (chunk_id_cmp(&w->entries[w->set[s] - 1].id, id) == 0)
			return true;
	return false;
}

int pack_writer_add(PackWriter *w, const ChunkId *id, ChunkEncoding enc, const void *data,
		    size_t elen, size_t plen)
{
	int r = pack_writer_add_crc(w, id, enc, data, elen, plen, 0, NULL);
	if (r == 0)
		w->entries[w->n_entries - 1].has_crc = false;
	return r;
}

int pack_writer_add_crc(PackWriter *w, const ChunkId *id, ChunkEncoding enc, const void *data,
			size_t elen, size_t plen, uint32_t crc, const uint8_t *fh)
{
	int r = grow_buf(w, w->len + elen);
	if (r < 0)
		return r;
	void *ents = w->entries;
	r = grow(&ents, &w->cap_entries, w->n_entries + 1, sizeof(PackEntry));
	w->entries = ents;
	if (r < 0)
		return r;
	w->entries[w->n_entries] = (PackEntry){
		.id = *id, .offset = w->len, .elen = (uint32_t)elen, .plen = (uint32_t)plen, .enc = (uint8_t)enc,
		.has_crc = true, .crc = crc, .has_fh = fh != NULL};
	if (fh)
		memcpy(w->entries[w->n_entries].fh, fh, CHUNK_FH_LEN);
	memcpy(w->buf + w->len, data, elen);
	w->len += elen;
	r = set_insert(w, w->n_entries);
	if (r < 0)
		return r;
	w->n_entries++;
	return 0;
}

size_t pack_writer_size(const PackWriter *w) { return w->len; }
size_t pack_writer_count(const PackWriter *w) { return w->n_entries; }
const PackEntry *pack_writer_entries(const PackWriter *w) { return w->entries; }

int pack_writer_finish(PackWriter *w, const void **ret_buf, size_t *ret_len)
{
	size_t entries_off = w->len;
	size_t need = w->len + w->n_entries * PACK_ENTRY_LEN + PACK_FOOTER_LEN;
	ChunkId digest;
	uint8_t *p;
	int r = grow_buf(w, need);
	if (r < 0)
		return r;
	p = w->buf + entries_off;
	for (size_t i = 0; i < w->n_entries; i++, p += PACK_ENTRY_LEN) {
		const PackEntry *e = &w->entries[i];
		memcpy(p, e->id.b, 32);
		put_le64(p + 32, e->offset);
		put_le32(p + 40, e->elen);
		put_le32(p + 44, e->plen);
		p[48] = e->enc;
		p[49] = p[50] = p[51] = 0;
	}
	chunk_hash(w->buf + entries_off, w->n_entries * PACK_ENTRY_LEN, &digest);
	put_le32(p, (uint32_t)w->n_entries);
	put_le32(p + 4, 0);
	put_le64(p + 8, entries_off);
	memcpy(p + 16, digest.b, 32);
	memcpy(p + 48, pack_end_magic, 8);
	w->len = need;
	*ret_buf = w->buf;
	*ret_len = w->len;
	return 0;
}

int pack_parse_footer(const void *footer, uint64_t pack_size, uint64_t *ret_entries_off,
		      uint32_t *ret_n)
{
	const uint8_t *p = footer;
	uint32_t n = get_le32(p);
	uint64_t off = get_le64(p + 8);
	if (memcmp(p + 48, pack_end_magic, 8) != 0)
		return -EBADMSG;
	/* no arithmetic that can wrap: a damaged footer must not point anywhere */
	if (pack_size < PACK_HEADER_LEN + PACK_FOOTER_LEN || off < PACK_HEADER_LEN ||
	    off > pack_size - PACK_FOOTER_LEN ||
	    (uint64_t)n > (pack_size - PACK_FOOTER_LEN - off) / PACK_ENTRY_LEN ||
	    off + (uint64_t)n * PACK_ENTRY_LEN + PACK_FOOTER_LEN != pack_size)
		return -EBADMSG;
	*ret_entries_off = off;
	*ret_n = n;
	return 0;
}

int pack_parse_entries(const void *entries, uint32_t n, const void *footer,
		       uint64_t entries_off, PackEntry **ret)
{
	const uint8_t *p = entries;
	ChunkId digest;
	PackEntry *out;

	chunk_hash(entries, (size_t)n * PACK_ENTRY_LEN, &digest);
	if (memcmp(digest.b, (const uint8_t *)footer + 16, 32) != 0)
		return -EBADMSG;
	out = calloc(n ? n : 1, sizeof(*out));
	if (!out)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++, p += PACK_ENTRY_LEN) {
		memcpy(out[i].id.b, p, 32);
		out[i].offset = get_le64(p + 32);
		out[i].elen = get_le32(p + 40);
		out[i].plen = get_le32(p + 44);
		out[i].enc = p[48];
		if (out[i].offset < PACK_HEADER_LEN || out[i].offset + out[i].elen > entries_off) {
			free(out);
			return -EBADMSG;
		}
	}
	*ret = out;
	return 0;
}

int pack_name_new(char *buf, size_t len)
{
	uint8_t rnd[16];
	char hex[33];
	int r = random_bytes(rnd, sizeof(rnd));
	if (r < 0)
		return r;
	hex_encode(rnd, sizeof(rnd), hex);
	if ((size_t)snprintf(buf, len, "packs/%.2s/%s.pack", hex, hex) >= len)
		return -ENAMETOOLONG;
	return 0;
}
