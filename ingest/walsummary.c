#include "ingest/walsummary.h"

#include "common/crc32c.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/*
 * Layout facts of PostgreSQL's WAL (src/include/access/xlog_internal.h,
 * xlogrecord.h, and the rmgr record structs), the same in 14..18 except
 * where a major is named. Everything is read little-endian with memcpy-free
 * byte loads: records and their fields are not aligned in our buffers.
 */
#define XLP_FIRST_IS_CONTRECORD 0x0001
#define XLP_LONG_HEADER 0x0002
#define XLP_FIRST_IS_OVERWRITE_CONTRECORD 0x0008
#define XLP_ALL_FLAGS 0x000F
#define SHORT_PHD 24 /* MAXALIGN(sizeof(XLogPageHeaderData)) */
#define LONG_PHD 40  /* MAXALIGN(sizeof(XLogLongPageHeaderData)) */
#define REC_HDR 24   /* SizeOfXLogRecord; xl_crc at 20 */
#define REC_MAX_SIZE (1020u * 1024 * 1024) /* XLogRecordMaxSize */
#define PG_BLCKSZ_ 8192u
#define MAXALIGN8(x) (((x) + 7) & ~(uint64_t)7)

#define XLR_SPECIAL_REL_UPDATE 0x01
#define XLR_MAX_BLOCK_ID 32
#define BLOCK_ID_DATA_SHORT 255
#define BLOCK_ID_DATA_LONG 254
#define BLOCK_ID_ORIGIN 253
#define BLOCK_ID_TOPLEVEL_XID 252
#define BKPBLOCK_FORK_MASK 0x0F
#define BKPBLOCK_HAS_IMAGE 0x10
#define BKPBLOCK_HAS_DATA 0x20
#define BKPBLOCK_SAME_REL 0x80
#define BKPIMAGE_HAS_HOLE 0x01
#define BKPIMAGE_IS_COMPRESSED_14 0x02
#define BKPIMAGE_COMPRESSED_15 (0x04 | 0x08 | 0x10) /* pglz, lz4, zstd */

#define RM_XLOG_ID 0
#define RM_XACT_ID 1
#define RM_SMGR_ID 2
#define RM_DBASE_ID 4

#define XLOG_CHECKPOINT_SHUTDOWN 0x00
#define XLOG_CHECKPOINT_ONLINE 0x10
#define XLOG_SWITCH 0x40
#define XLOG_PARAMETER_CHANGE 0x60
#define XLOG_END_OF_RECOVERY 0x90
#define XLOG_CHECKPOINT_REDO 0xE0 /* 17+ */
#define WAL_LEVEL_MINIMAL 0

#define XLOG_SMGR_CREATE 0x10
#define XLOG_SMGR_TRUNCATE 0x20
#define SMGR_TRUNCATE_HEAP 0x0001
#define SMGR_TRUNCATE_VM 0x0002

#define XLOG_XACT_COMMIT 0x00
#define XLOG_XACT_ABORT 0x20
#define XLOG_XACT_COMMIT_PREPARED 0x30
#define XLOG_XACT_ABORT_PREPARED 0x40
#define XLOG_XACT_OPMASK 0x70
#define XLOG_XACT_HAS_INFO 0x80
#define XACT_XINFO_HAS_DBINFO (1u << 0)
#define XACT_XINFO_HAS_SUBXACTS (1u << 1)
#define XACT_XINFO_HAS_RELFILENODES (1u << 2)

#define FORK_MAIN 0
#define FORK_FSM 1
#define FORK_VM 2
#define MAX_FORK 3
#define VM_HEAPBLOCKS_PER_PAGE 32672u /* (BLCKSZ - MAXALIGN(SizeOfPageHeaderData)) * 4 */
#define RELSEG_BLOCKS 131072u
#define NO_LSN UINT64_MAX

static inline uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t le64(const uint8_t *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }

static int magic_major(uint16_t magic)
{
	switch (magic) {
	case 0xD10D:
		return 14;
	case 0xD110:
		return 15;
	case 0xD113:
		return 16;
	case 0xD116:
		return 17;
	case 0xD118:
		return 18;
	default:
		return 0;
	}
}

uint32_t walsum_vm_truncation_length(uint32_t nheapblocks)
{
	return (uint32_t)(((uint64_t)nheapblocks + VM_HEAPBLOCKS_PER_PAGE - 1) / VM_HEAPBLOCKS_PER_PAGE);
}

/* ---------------------------------------------------------------------------
 * Block table: PostgreSQL's BlockRefTable semantics (blkreftable.c), our own
 * layout. Per relation fork a limit block and the referenced blocks, in
 * chunks of 65536 blocks, each a sorted array of 16-bit offsets until it
 * would pass 8 KiB, then a bitmap of the same size. References are appended
 * to an unsorted pending list first (one append per block reference, the hot
 * path of summarizing) and sorted into the chunks in bulk: when a limit is
 * lowered (blocks referenced before it at/after the new limit go), and when
 * a summary or set is finished.
 *
 * A segment's table also keeps, per entry, the blocks its own limits removed
 * ("dropped", all at/after its final limit). Summarizing sequentially,
 * PostgreSQL would have kept them if the limit was already that low before
 * the segment (lowering a limit to where it is removes nothing): bt_merge
 * adds them back then, so that combining per-segment tables gives exactly
 * the table of one sequential pass.
 */
#define BT_SHIFT 16
#define BT_WORDS 4096u /* 65536 bits as uint16 words; also the largest array */
#define BT_BITMAP UINT32_MAX
#define BT_PEND_FLUSH (1u << 16)

typedef struct BtChunk {
	uint16_t *v;  /* sorted offsets, or a bitmap when cap == BT_BITMAP */
	uint32_t n;   /* offsets held */
	uint32_t cap;
} BtChunk;

typedef struct BtEntry {
	WalRelFork key;
	uint32_t limit;
	uint32_t n_chunks;
	BtChunk *chunks;
	uint32_t *pend;
	uint32_t n_pend, cap_pend;
	uint32_t *drop; /* segment tables: blocks our own limits removed */
	uint32_t n_drop, cap_drop;
} BtEntry;

typedef struct BlockTab {
	BtEntry *e;
	size_t n, cap;
	uint32_t *slots; /* open addressing: entry index + 1, 0 = empty */
	size_t n_slots;
	size_t last; /* index + 1 of the last entry looked up */
	bool keep_dropped;
} BlockTab;

static int key_cmp(const WalRelFork *a, const WalRelFork *b)
{
	if (a->spc != b->spc)
		return a->spc < b->spc ? -1 : 1;
	if (a->db != b->db)
		return a->db < b->db ? -1 : 1;
	if (a->rel != b->rel)
		return a->rel < b->rel ? -1 : 1;
	if (a->fork != b->fork)
		return a->fork < b->fork ? -1 : 1;
	return 0;
}

static inline bool key_eq(const WalRelFork *a, const WalRelFork *b)
{
	return a->rel == b->rel && a->db == b->db && a->spc == b->spc && a->fork == b->fork;
}

static inline uint32_t key_hash(const WalRelFork *k)
{
	uint64_t h = (uint64_t)k->spc * 0x9E3779B97F4A7C15ull;
	h ^= (uint64_t)k->db * 0xC2B2AE3D27D4EB4Full;
	h ^= ((uint64_t)k->rel << 2 | k->fork) * 0x165667B19E3779F9ull;
	h ^= h >> 29;
	h *= 0xBF58476D1CE4E5B9ull;
	return (uint32_t)(h ^ h >> 32);
}

static void chunk_free(BtChunk *c)
{
	free(c->v);
	*c = (BtChunk){0};
}

static void bt_free(BlockTab *bt)
{
	for (size_t i = 0; i < bt->n; i++) {
		for (uint32_t c = 0; c < bt->e[i].n_chunks; c++)
			free(bt->e[i].chunks[c].v);
		free(bt->e[i].chunks);
		free(bt->e[i].pend);
		free(bt->e[i].drop);
	}
	free(bt->e);
	free(bt->slots);
	*bt = (BlockTab){0};
}

static int bt_rehash(BlockTab *bt, size_t n_slots)
{
	uint32_t *slots = calloc(n_slots, sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	for (size_t i = 0; i < bt->n; i++) {
		size_t j = key_hash(&bt->e[i].key) & (n_slots - 1);
		while (slots[j])
			j = (j + 1) & (n_slots - 1);
		slots[j] = (uint32_t)(i + 1);
	}
	free(bt->slots);
	bt->slots = slots;
	bt->n_slots = n_slots;
	return 0;
}

/* The entry for key, created (with limit) if absent; *created says which. NULL: -ENOMEM. */
static BtEntry *bt_get(BlockTab *bt, const WalRelFork *key, uint32_t limit, bool *created)
{
	size_t j;
	*created = false;
	if (bt->last && key_eq(&bt->e[bt->last - 1].key, key))
		return &bt->e[bt->last - 1];
	if (bt->n_slots) {
		j = key_hash(key) & (bt->n_slots - 1);
		while (bt->slots[j]) {
			BtEntry *e = &bt->e[bt->slots[j] - 1];
			if (key_eq(&e->key, key)) {
				bt->last = bt->slots[j];
				return e;
			}
			j = (j + 1) & (bt->n_slots - 1);
		}
	}
	if (bt->n == bt->cap) {
		size_t cap = bt->cap ? bt->cap * 2 : 16;
		BtEntry *e = realloc(bt->e, cap * sizeof(*e));
		if (!e)
			return NULL;
		bt->e = e;
		bt->cap = cap;
	}
	if ((bt->n + 1) * 2 > bt->n_slots && bt_rehash(bt, bt->n_slots ? bt->n_slots * 2 : 64) < 0)
		return NULL;
	bt->e[bt->n] = (BtEntry){.key = *key, .limit = limit};
	j = key_hash(key) & (bt->n_slots - 1);
	while (bt->slots[j])
		j = (j + 1) & (bt->n_slots - 1);
	bt->slots[j] = (uint32_t)(bt->n + 1);
	bt->last = ++bt->n;
	*created = true;
	return &bt->e[bt->n - 1];
}

static const BtEntry *bt_find(const BlockTab *bt, const WalRelFork *key)
{
	if (!bt->n_slots)
		return NULL;
	for (size_t j = key_hash(key) & (bt->n_slots - 1); bt->slots[j]; j = (j + 1) & (bt->n_slots - 1))
		if (key_eq(&bt->e[bt->slots[j] - 1].key, key))
			return &bt->e[bt->slots[j] - 1];
	return NULL;
}

/* LSD radix sort, 8 bits a pass, passes whose digit is the same everywhere skipped. */
static void sort_u32(uint32_t *a, size_t n, uint32_t *tmp)
{
	if (n < 48) {
		for (size_t i = 1; i < n; i++) {
			uint32_t x = a[i];
			size_t j = i;
			while (j > 0 && a[j - 1] > x) {
				a[j] = a[j - 1];
				j--;
			}
			a[j] = x;
		}
		return;
	}
	uint32_t *src = a, *dst = tmp;
	for (int shift = 0; shift < 32; shift += 8) {
		size_t count[256] = {0}, sum = 0;
		for (size_t i = 0; i < n; i++)
			count[(src[i] >> shift) & 0xff]++;
		if (count[(src[0] >> shift) & 0xff] == n)
			continue;
		for (int d = 0; d < 256; d++) {
			size_t c = count[d];
			count[d] = sum;
			sum += c;
		}
		for (size_t i = 0; i < n; i++)
			dst[count[(src[i] >> shift) & 0xff]++] = src[i];
		uint32_t *t = src;
		src = dst;
		dst = t;
	}
	if (src != a)
		memcpy(a, src, n * sizeof(*a));
}

static inline bool bit_test(const uint16_t *w, uint32_t off) { return w[off >> 4] >> (off & 15) & 1; }

static int chunk_to_bitmap(BtChunk *c)
{
	uint16_t *w = calloc(BT_WORDS, sizeof(*w));
	if (!w)
		return -ENOMEM;
	for (uint32_t i = 0; i < c->n; i++)
		w[c->v[i] >> 4] |= (uint16_t)(1u << (c->v[i] & 15));
	free(c->v);
	c->v = w;
	c->cap = BT_BITMAP;
	return 0;
}

/* Add k sorted, distinct offsets. */
static int chunk_add(BtChunk *c, const uint16_t *off, size_t k)
{
	if (c->cap != BT_BITMAP && c->n + k > BT_WORDS && chunk_to_bitmap(c) < 0)
		return -ENOMEM;
	if (c->cap == BT_BITMAP) {
		for (size_t i = 0; i < k; i++) {
			uint16_t m = (uint16_t)(1u << (off[i] & 15));
			if (!(c->v[off[i] >> 4] & m)) {
				c->v[off[i] >> 4] |= m;
				c->n++;
			}
		}
		return 0;
	}
	uint16_t *m = malloc((c->n + k) * sizeof(*m));
	size_t i = 0, j = 0, n = 0;
	if (!m)
		return -ENOMEM;
	while (i < c->n || j < k) {
		if (j == k || (i < c->n && c->v[i] < off[j]))
			m[n++] = c->v[i++];
		else if (i == c->n || off[j] < c->v[i])
			m[n++] = off[j++];
		else {
			m[n++] = c->v[i++];
			j++;
		}
	}
	free(c->v);
	c->v = m;
	c->n = c->cap = (uint32_t)n;
	return 0;
}

/* Drop the offsets at/after off. */
static void chunk_cut(BtChunk *c, uint32_t off)
{
	if (c->cap == BT_BITMAP) {
		uint32_t n = 0;
		for (uint32_t o = off; o < (off + 15) / 16 * 16 && o < 65536; o++)
			c->v[o >> 4] &= (uint16_t)~(1u << (o & 15));
		for (uint32_t w = (off + 15) / 16; w < BT_WORDS; w++)
			c->v[w] = 0;
		for (uint32_t w = 0; w < BT_WORDS; w++)
			n += (uint32_t)__builtin_popcount(c->v[w]);
		c->n = n;
	} else {
		uint32_t i = 0;
		while (i < c->n && c->v[i] < off)
			i++;
		c->n = i;
	}
	if (!c->n)
		chunk_free(c);
}

static int entry_grow_chunks(BtEntry *e, uint32_t n)
{
	if (n <= e->n_chunks)
		return 0;
	BtChunk *c = realloc(e->chunks, n * sizeof(*c));
	if (!c)
		return -ENOMEM;
	memset(c + e->n_chunks, 0, (n - e->n_chunks) * sizeof(*c));
	e->chunks = c;
	e->n_chunks = n;
	return 0;
}

/* Sort the pending references into the chunks. */
static int entry_flush(BtEntry *e)
{
	uint32_t n = e->n_pend, u = 0;
	int r = 0;
	if (!n)
		return 0;
	uint32_t *tmp = malloc((size_t)n * sizeof(*tmp));
	if (!tmp)
		return -ENOMEM;
	sort_u32(e->pend, n, tmp);
	for (uint32_t i = 0; i < n; i++)
		if (!u || e->pend[u - 1] != e->pend[i])
			e->pend[u++] = e->pend[i];
	r = entry_grow_chunks(e, (e->pend[u - 1] >> BT_SHIFT) + 1);
	for (uint32_t i = 0; r == 0 && i < u;) {
		uint32_t ci = e->pend[i] >> BT_SHIFT, k = 0;
		uint16_t *off = (uint16_t *)tmp;
		while (i < u && e->pend[i] >> BT_SHIFT == ci)
			off[k++] = (uint16_t)(e->pend[i++] & 0xffff);
		r = chunk_add(&e->chunks[ci], off, k);
	}
	free(tmp);
	if (r == 0)
		e->n_pend = 0;
	return r;
}

static int bt_flush(BlockTab *bt)
{
	for (size_t i = 0; i < bt->n; i++) {
		int r = entry_flush(&bt->e[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

static int vec_push(uint32_t **v, uint32_t *n, uint32_t *cap, uint32_t x)
{
	if (*n == *cap) {
		uint32_t c = *cap ? *cap * 2 : 8;
		uint32_t *p = realloc(*v, (size_t)c * sizeof(*p));
		if (!p)
			return -ENOMEM;
		*v = p;
		*cap = c;
	}
	(*v)[(*n)++] = x;
	return 0;
}

static int entry_mark(BtEntry *e, uint32_t blk)
{
	if (e->n_pend && e->pend[e->n_pend - 1] == blk)
		return 0;
	if (vec_push(&e->pend, &e->n_pend, &e->cap_pend, blk) < 0)
		return -ENOMEM;
	return e->n_pend >= BT_PEND_FLUSH ? entry_flush(e) : 0;
}

static int bt_mark(BlockTab *bt, const WalRelFork *key, uint32_t blk)
{
	bool created;
	BtEntry *e = bt_get(bt, key, UINT32_MAX, &created);
	return e ? entry_mark(e, blk) : -ENOMEM;
}

/* Remember the blocks at/after limit before a cut removes them. */
static int entry_keep_dropped(BtEntry *e, uint32_t limit)
{
	for (uint32_t c = limit >> BT_SHIFT; c < e->n_chunks; c++) {
		const BtChunk *ch = &e->chunks[c];
		uint32_t base = c << BT_SHIFT;
		if (ch->cap != BT_BITMAP) {
			for (uint32_t i = 0; i < ch->n; i++)
				if (base + ch->v[i] >= limit &&
				    vec_push(&e->drop, &e->n_drop, &e->cap_drop, base + ch->v[i]) < 0)
					return -ENOMEM;
			continue;
		}
		for (uint32_t w = 0; w < BT_WORDS; w++)
			for (uint32_t bits = ch->v[w]; bits; bits &= bits - 1) {
				uint32_t blk = base + w * 16 + (uint32_t)__builtin_ctz(bits);
				if (blk >= limit && vec_push(&e->drop, &e->n_drop, &e->cap_drop, blk) < 0)
					return -ENOMEM;
			}
	}
	return 0;
}

/* Sort the dropped blocks and remove duplicates. */
static int entry_finish_dropped(BtEntry *e)
{
	uint32_t u = 0;
	if (e->n_drop < 2)
		return 0;
	uint32_t *tmp = malloc((size_t)e->n_drop * sizeof(*tmp));
	if (!tmp)
		return -ENOMEM;
	sort_u32(e->drop, e->n_drop, tmp);
	free(tmp);
	for (uint32_t i = 0; i < e->n_drop; i++)
		if (!u || e->drop[u - 1] != e->drop[i])
			e->drop[u++] = e->drop[i];
	e->n_drop = u;
	return 0;
}

/* BlockRefTableSetLimitBlock: the limit only goes down; blocks at/after it go. */
static int bt_set_limit(BlockTab *bt, const WalRelFork *key, uint32_t limit)
{
	bool created;
	BtEntry *e = bt_get(bt, key, limit, &created);
	if (!e)
		return -ENOMEM;
	if (created || limit >= e->limit)
		return 0;
	int r = entry_flush(e);
	if (r == 0 && bt->keep_dropped)
		r = entry_keep_dropped(e, limit);
	if (r < 0)
		return r;
	e->limit = limit;
	uint32_t ci = limit >> BT_SHIFT;
	for (uint32_t c = ci + 1; c < e->n_chunks; c++)
		chunk_free(&e->chunks[c]);
	if (ci < e->n_chunks) {
		chunk_cut(&e->chunks[ci], limit & 0xffff);
		e->n_chunks = ci + 1;
	}
	return 0;
}

/*
 * dst gets src's limit, then src's blocks (src flushed), as if src's records
 * came after dst's: where src's limit is not below dst's, src's limits would
 * have removed nothing, so the blocks they removed in src come back.
 */
static int bt_merge(BlockTab *dst, const BlockTab *src)
{
	for (size_t i = 0; i < src->n; i++) {
		const BtEntry *s = &src->e[i];
		bool created;
		const BtEntry *old = bt_find(dst, &s->key);
		bool lowers = !old || s->limit < old->limit;
		int r = bt_set_limit(dst, &s->key, s->limit);
		BtEntry *d = bt_get(dst, &s->key, s->limit, &created);
		if (r < 0 || !d || entry_grow_chunks(d, s->n_chunks) < 0)
			return -ENOMEM;
		for (uint32_t k = 0; !lowers && k < s->n_drop; k++)
			if ((r = entry_mark(d, s->drop[k])) < 0)
				return r;
		for (uint32_t c = 0; c < s->n_chunks; c++) {
			const BtChunk *sc = &s->chunks[c];
			BtChunk *dc = &d->chunks[c];
			if (!sc->n)
				continue;
			if (sc->cap != BT_BITMAP) {
				r = chunk_add(dc, sc->v, sc->n);
			} else if (dc->cap == BT_BITMAP || (r = chunk_to_bitmap(dc)) == 0) {
				uint32_t n = 0;
				for (uint32_t w = 0; w < BT_WORDS; w++) {
					dc->v[w] |= sc->v[w];
					n += (uint32_t)__builtin_popcount(dc->v[w]);
				}
				dc->n = n;
			}
			if (r < 0)
				return r;
		}
	}
	return 0;
}

static size_t entry_n_blocks(const BtEntry *e)
{
	size_t n = 0;
	for (uint32_t c = 0; c < e->n_chunks; c++)
		n += e->chunks[c].n;
	return n;
}

/* The sorted blocks of a flushed entry into out (entry_n_blocks of them). */
static void entry_blocks(const BtEntry *e, uint32_t *out)
{
	size_t n = 0;
	for (uint32_t c = 0; c < e->n_chunks; c++) {
		const BtChunk *ch = &e->chunks[c];
		uint32_t base = c << BT_SHIFT;
		if (ch->cap != BT_BITMAP) {
			for (uint32_t i = 0; i < ch->n; i++)
				out[n++] = base + ch->v[i];
			continue;
		}
		for (uint32_t w = 0; w < BT_WORDS; w++)
			for (uint32_t bits = ch->v[w]; bits; bits &= bits - 1)
				out[n++] = base + w * 16 + (uint32_t)__builtin_ctz(bits);
	}
}

static int cmp_entry_ptr(const void *a, const void *b)
{
	return key_cmp(&(*(const BtEntry *const *)a)->key, &(*(const BtEntry *const *)b)->key);
}

/* The entries sorted by key (malloc'ed array of pointers); NULL with n > 0: -ENOMEM. */
static const BtEntry **bt_sorted(const BlockTab *bt)
{
	const BtEntry **v = malloc((bt->n ? bt->n : 1) * sizeof(*v));
	if (!v)
		return NULL;
	for (size_t i = 0; i < bt->n; i++)
		v[i] = &bt->e[i];
	qsort(v, bt->n, sizeof(*v), cmp_entry_ptr);
	return v;
}

/* ---------------------------------------------------------------------------
 * Why WAL is unsummarized: a code, the LSN, and a detail.
 */
enum {
	WHY_NONE = 0,
	WHY_MAGIC,   /* aux: the magic read */
	WHY_PAGE,    /* aux: PAGE_* */
	WHY_RECORD,  /* aux: REC_* */
	WHY_MINIMAL, /* wal_level=minimal */
	WHY_SPECIAL, /* aux: rmid << 8 | xl_info */
	WHY_MAX_,
};
enum { PAGE_MAGIC = 1, PAGE_INFO, PAGE_ADDR, PAGE_TLI, PAGE_LONG, PAGE_CONT, PAGE_NOCONT, PAGE_MAX_ };
enum { REC_LENGTH = 1, REC_PREV, REC_CRC, REC_DECODE, REC_MAX_ };

static void why_format(uint32_t code, uint32_t aux, uint64_t lsn, char *out, size_t len)
{
	static const char *const page[] = {
		"", "its magic differs from the segment's", "it has invalid info bits",
		"its xlp_pageaddr is wrong", "its timeline goes down or is past the segment's",
		"its long header is missing, misplaced or from another cluster",
		"a continuation record is missing or has the wrong length",
		"it continues a record where a new record should start"};
	static const char *const rec[] = {"", "its xl_tot_len is invalid",
					  "its prev-link does not match the previous record",
					  "its CRC is incorrect", "its block references do not decode"};
	unsigned hi = (unsigned)(lsn >> 32), lo = (unsigned)lsn;
	switch (code) {
	case WHY_MAGIC:
		if (aux == 0x0DD1 || aux == 0x10D1 || aux == 0x13D1 || aux == 0x16D1 || aux == 0x18D1)
			snprintf(out, len, "WAL at %X/%X is big-endian (magic %04X)", hi, lo, aux);
		else
			snprintf(out, len, "WAL at %X/%X has an unknown page magic %04X", hi, lo, aux);
		break;
	case WHY_PAGE:
		snprintf(out, len, "invalid WAL page header at %X/%X: %s", hi, lo,
			 aux < PAGE_MAX_ ? page[aux] : "?");
		break;
	case WHY_RECORD:
		snprintf(out, len, "invalid WAL record at %X/%X: %s", hi, lo, aux < REC_MAX_ ? rec[aux] : "?");
		break;
	case WHY_MINIMAL:
		snprintf(out, len, "WAL at %X/%X was written with wal_level=minimal", hi, lo);
		break;
	case WHY_SPECIAL:
		snprintf(out, len,
			 "WAL record at %X/%X (resource manager %u, info %02X) changes relation files "
			 "in a way not understood",
			 hi, lo, aux >> 8, aux & 0xff);
		break;
	default:
		snprintf(out, len, "%s", "");
	}
}

/* ---------------------------------------------------------------------------
 * One record: PostgreSQL's DecodeXLogRecord checks, then the summarizer's
 * rules. Returns 0, a WHY_* code (> 0, detail in *aux), or -ENOMEM. bt NULL:
 * the record is outside the range asked for, only checked (and
 * wal_level=minimal still stops summarizing).
 */
typedef struct BlkRef {
	WalRelFork rf;
	uint32_t blk;
} BlkRef;

static int limit_all_forks(BlockTab *bt, const uint8_t *loc)
{
	WalRelFork rf = {le32(loc), le32(loc + 4), le32(loc + 8), 0};
	for (uint8_t f = 0; f <= MAX_FORK; f++) {
		int r;
		if (f == FORK_FSM)
			continue;
		rf.fork = f;
		if ((r = bt_set_limit(bt, &rf, 0)) < 0)
			return r;
	}
	return 0;
}

/* Dropped relations of a commit/abort record (ParseCommitRecord / ParseAbortRecord). */
static int rec_xact(BlockTab *bt, uint8_t info, const uint8_t *m, uint32_t n, uint32_t *aux)
{
	uint64_t off = 8; /* xact_time */
	uint32_t xinfo = 0;
	if (n < off)
		goto bad;
	if (info & XLOG_XACT_HAS_INFO) {
		if (n < off + 4)
			goto bad;
		xinfo = le32(m + off);
		off += 4;
	}
	if (xinfo & XACT_XINFO_HAS_DBINFO)
		off += 8;
	if (xinfo & XACT_XINFO_HAS_SUBXACTS) {
		if (n < off + 4 || (int32_t)le32(m + off) < 0)
			goto bad;
		off += 4 + 4 * (uint64_t)le32(m + off);
	}
	if (xinfo & XACT_XINFO_HAS_RELFILENODES) {
		if (n < off + 4 || (int32_t)le32(m + off) < 0)
			goto bad;
		uint32_t nrels = le32(m + off);
		off += 4;
		if (n < off + 12 * (uint64_t)nrels)
			goto bad;
		for (uint32_t i = 0; i < nrels; i++) {
			int r = limit_all_forks(bt, m + off + 12 * (uint64_t)i);
			if (r < 0)
				return r;
		}
	}
	return 0;
bad:
	*aux = REC_DECODE;
	return WHY_RECORD;
}

static int rec_dbase_mark(BlockTab *bt, uint32_t spc, uint32_t db)
{
	WalRelFork rf = {spc, db, 0, FORK_MAIN};
	return bt_set_limit(bt, &rf, 0);
}

/* The summarizer's special records; 0 when the record is not one of them. */
static int rec_special(BlockTab *bt, int major, uint8_t rmid, uint8_t xl_info, const uint8_t *m,
		       uint32_t n, uint32_t *aux)
{
	uint8_t info = xl_info & 0xF0;
	bool understood = false;
	int r = 0;

	if (rmid == RM_XLOG_ID) {
		int32_t level = -1;
		if (info == XLOG_PARAMETER_CHANGE && n >= 24)
			level = (int32_t)le32(m + 20);
		else if (major >= 17 && (info == XLOG_CHECKPOINT_SHUTDOWN || info == XLOG_CHECKPOINT_ONLINE) &&
			 n >= 24)
			level = (int32_t)le32(m + 20);
		else if (major >= 17 && info == XLOG_END_OF_RECOVERY && n >= 20)
			level = (int32_t)le32(m + 16);
		else if (major >= 17 && info == XLOG_CHECKPOINT_REDO && n >= 4)
			level = (int32_t)le32(m);
		if (level == WAL_LEVEL_MINIMAL)
			return WHY_MINIMAL;
		if (!bt)
			return 0;
	} else if (!bt) {
		return 0;
	} else if (rmid == RM_SMGR_ID) {
		if (info == XLOG_SMGR_CREATE) {
			if (n < 16 || le32(m + 12) > MAX_FORK)
				goto bad;
			WalRelFork rf = {le32(m), le32(m + 4), le32(m + 8), (uint8_t)le32(m + 12)};
			r = rf.fork == FORK_FSM ? 0 : bt_set_limit(bt, &rf, 0);
			understood = true;
		} else if (info == XLOG_SMGR_TRUNCATE) {
			if (n < 20)
				goto bad;
			uint32_t blkno = le32(m), flags = le32(m + 16);
			WalRelFork rf = {le32(m + 4), le32(m + 8), le32(m + 12), FORK_MAIN};
			if (flags & SMGR_TRUNCATE_HEAP)
				r = bt_set_limit(bt, &rf, blkno);
			rf.fork = FORK_VM;
			if (r == 0 && (flags & SMGR_TRUNCATE_VM))
				r = bt_set_limit(bt, &rf, walsum_vm_truncation_length(blkno));
			understood = true;
		}
	} else if (rmid == RM_DBASE_ID) {
		/* 14: CREATE 0x00, DROP 0x10; 15+: CREATE_FILE_COPY 0x00, CREATE_WAL_LOG 0x10, DROP 0x20 */
		uint8_t drop = major == 14 ? 0x10 : 0x20;
		if (info == 0x00 || (major >= 15 && info == 0x10)) {
			if (n < 8)
				goto bad;
			r = rec_dbase_mark(bt, le32(m + 4), le32(m));
			understood = true;
		} else if (info == drop) {
			if (n < 8 || (int32_t)le32(m + 4) < 0 || n < 8 + 4 * (uint64_t)le32(m + 4))
				goto bad;
			for (uint32_t i = 0; r == 0 && i < le32(m + 4); i++)
				r = rec_dbase_mark(bt, le32(m + 8 + 4 * i), le32(m));
			understood = true;
		}
	} else if (rmid == RM_XACT_ID) {
		uint8_t op = xl_info & XLOG_XACT_OPMASK;
		if (op == XLOG_XACT_COMMIT || op == XLOG_XACT_ABORT || op == XLOG_XACT_COMMIT_PREPARED ||
		    op == XLOG_XACT_ABORT_PREPARED) {
			r = rec_xact(bt, xl_info, m, n, aux);
			understood = true;
		}
	}
	if (r != 0)
		return r;
	if (!understood && (xl_info & XLR_SPECIAL_REL_UPDATE)) {
		*aux = (uint32_t)rmid << 8 | xl_info;
		return WHY_SPECIAL;
	}
	return 0;
bad:
	*aux = REC_DECODE;
	return WHY_RECORD;
}

static bool rec_crc_ok(const uint8_t *rec, uint32_t len)
{
	uint32_t crc = crc32c_update(0xFFFFFFFFu, rec + REC_HDR, len - REC_HDR);
	crc = crc32c_update(crc, rec, 20);
	return (crc ^ 0xFFFFFFFFu) == le32(rec + 20);
}

/* A whole record of len (== xl_tot_len >= REC_HDR) bytes whose CRC was checked. */
static int rec_apply(const uint8_t *rec, uint32_t len, int major, BlockTab *bt, uint32_t *aux)
{
	const uint8_t *p = rec + REC_HDR, *end = rec + len;
	uint64_t datatotal = 0;
	uint32_t main_len = 0;
	BlkRef refs[XLR_MAX_BLOCK_ID + 1];
	int n_refs = 0, max_id = -1, r;
	const uint8_t *loc = NULL;

#define NEED(k)                                                                                    \
	do {                                                                                       \
		if ((uint64_t)(end - p) < (uint64_t)(k) + datatotal)                               \
			goto bad;                                                                  \
	} while (0)

	while ((uint64_t)(end - p) > datatotal) {
		uint8_t id = *p++;
		if (id == BLOCK_ID_DATA_SHORT) {
			NEED(1);
			main_len = *p++;
			datatotal += main_len;
			break;
		} else if (id == BLOCK_ID_DATA_LONG) {
			NEED(4);
			main_len = le32(p);
			p += 4;
			datatotal += main_len;
			break;
		} else if (id == BLOCK_ID_ORIGIN) {
			NEED(2);
			p += 2;
		} else if (id == BLOCK_ID_TOPLEVEL_XID) {
			NEED(4);
			p += 4;
		} else if (id <= XLR_MAX_BLOCK_ID) {
			if ((int)id <= max_id)
				goto bad;
			max_id = id;
			NEED(3);
			uint8_t flags = p[0];
			uint16_t data_len = le16(p + 1);
			p += 3;
			if (!!(flags & BKPBLOCK_HAS_DATA) != (data_len != 0))
				goto bad;
			datatotal += data_len;
			if (flags & BKPBLOCK_HAS_IMAGE) {
				NEED(5);
				uint32_t bimg_len = le16(p), hole_off = le16(p + 2), hole_len;
				uint8_t bimg_info = p[4];
				bool hole = bimg_info & BKPIMAGE_HAS_HOLE;
				bool compressed = major == 14 ? bimg_info & BKPIMAGE_IS_COMPRESSED_14
							      : bimg_info & BKPIMAGE_COMPRESSED_15;
				p += 5;
				if (compressed && hole) {
					NEED(2);
					hole_len = le16(p);
					p += 2;
				} else if (compressed) {
					hole_len = 0;
				} else {
					if (bimg_len > PG_BLCKSZ_)
						goto bad;
					hole_len = PG_BLCKSZ_ - bimg_len;
				}
				datatotal += bimg_len;
				if (hole && (hole_off == 0 || hole_len == 0 || bimg_len == PG_BLCKSZ_))
					goto bad;
				if (!hole && (hole_off != 0 || hole_len != 0))
					goto bad;
				if (compressed && bimg_len == PG_BLCKSZ_)
					goto bad;
				if (!hole && !compressed && bimg_len != PG_BLCKSZ_)
					goto bad;
			}
			if (!(flags & BKPBLOCK_SAME_REL)) {
				NEED(12);
				loc = p;
				p += 12;
			} else if (!loc) {
				goto bad;
			}
			NEED(4);
			if ((flags & BKPBLOCK_FORK_MASK) > MAX_FORK)
				goto bad;
			refs[n_refs++] = (BlkRef){{le32(loc), le32(loc + 4), le32(loc + 8),
						   (uint8_t)(flags & BKPBLOCK_FORK_MASK)},
						  le32(p)};
			p += 4;
		} else {
			goto bad;
		}
	}
#undef NEED
	if ((uint64_t)(end - p) != datatotal)
		goto bad;

	/* limits first, then the record's own block references, as the summarizer does */
	r = rec_special(bt, major, rec[17], rec[16], end - main_len, main_len, aux);
	if (r != 0 || !bt)
		return r;
	for (int i = 0; i < n_refs; i++)
		if (refs[i].rf.fork != FORK_FSM && (r = bt_mark(bt, &refs[i].rf, refs[i].blk)) < 0)
			return r;
	return 0;
bad:
	*aux = REC_DECODE;
	return WHY_RECORD;
}

static bool rec_is_switch(const uint8_t *rec)
{
	return rec[17] == RM_XLOG_ID && (rec[16] & 0xF0) == XLOG_SWITCH;
}

/* ---------------------------------------------------------------------------
 * Segment summaries.
 */
enum { HEAD_NONE = 0, HEAD_CONT, HEAD_OVERWRITE };
#define F_EOW 0x01
#define F_SWITCHED 0x02
#define F_FIRST_AFTER_OVERWRITE 0x04
#define F_HEAD_CONTINUES 0x08
#define F_HEAD_OVERCAP 0x10
#define F_HAS_TAIL 0x20
#define F_TAIL_OVERCAP 0x40
#define F_HEAD_BAD 0x80 /* a bad page cut the head short: it cannot be used */
#define F_ALL 0xFF

struct WalSegSummary {
	uint16_t magic;
	uint8_t major;
	uint8_t head_kind;
	uint32_t flags;
	uint32_t tli, seg_size, blcksz;
	uint32_t first_tli, last_tli; /* of its pages */
	uint64_t seg_start, sysid, from, to;
	uint64_t end_lsn;
	uint32_t why_code, why_aux;
	uint64_t why_lsn; /* NO_LSN: nothing unsummarized */
	uint64_t first_rec, first_prev; /* first whole record starting here, its xl_prev */
	uint64_t last_rec;              /* last whole record starting here */
	uint64_t filter_cut;            /* earliest record left out for ending after `to` */
	uint64_t n_records;
	uint32_t head_rem;  /* xlp_rem_len of the first page: the head record's bytes still to come */
	uint64_t head_next; /* where the first record after the head starts (MAXALIGNed end) */
	uint32_t head_len;
	uint8_t *head;
	uint64_t tail_start;
	uint32_t tail_tot, tail_len;
	uint8_t *tail;
	BlockTab bt;
};

WalSegSummary *walsum_free(WalSegSummary *s)
{
	if (s) {
		bt_free(&s->bt);
		free(s->head);
		free(s->tail);
		free(s);
	}
	return NULL;
}

typedef struct Walk {
	WalSegSummary *s;
	const uint8_t *buf;
	uint32_t blcksz;
	uint32_t last_tli;
	uint64_t prev; /* start of the previous whole record, NO_LSN unknown */
	uint8_t *scratch;
	size_t scratch_cap;
	bool after_overwrite;
} Walk;

static void seg_unsummarized(WalSegSummary *s, uint32_t code, uint32_t aux, uint64_t lsn)
{
	s->why_code = code;
	s->why_aux = aux;
	s->why_lsn = lsn;
	s->end_lsn = lsn;
}

/* XLogReaderValidatePageHeader; 0 or a PAGE_* code. */
static int page_check(Walk *w, uint32_t off, uint32_t *ret_hsize, uint16_t *ret_info, uint32_t *ret_rem)
{
	WalSegSummary *s = w->s;
	const uint8_t *p = w->buf + off;
	uint16_t info = le16(p + 2);
	uint32_t tli = le32(p + 4);
	if (le16(p) != s->magic)
		return PAGE_MAGIC;
	if (info & ~XLP_ALL_FLAGS)
		return PAGE_INFO;
	if (le64(p + 8) != s->seg_start + off)
		return PAGE_ADDR;
	if (tli < w->last_tli || (s->tli && tli > s->tli))
		return PAGE_TLI;
	if (off == 0) {
		if (!(info & XLP_LONG_HEADER) || le64(p + 24) != s->sysid || le32(p + 32) != s->seg_size ||
		    le32(p + 36) != w->blcksz)
			return PAGE_LONG;
		s->first_tli = tli;
	} else if (info & XLP_LONG_HEADER) {
		return PAGE_LONG;
	}
	w->last_tli = s->last_tli = tli;
	*ret_hsize = info & XLP_LONG_HEADER ? LONG_PHD : SHORT_PHD;
	*ret_info = info;
	*ret_rem = le32(p + 16);
	return 0;
}

/* A copy of n bytes (at least one byte allocated). */
static int keep_bytes(uint8_t **dst, const uint8_t *src, uint32_t n)
{
	if (!(*dst = malloc(n ? n : 1)))
		return -ENOMEM;
	memcpy(*dst, src, n);
	return 0;
}

static int head_bad(WalSegSummary *s)
{
	free(s->head);
	s->head = NULL;
	s->head_len = 0;
	s->flags = (s->flags & ~(uint32_t)F_HEAD_OVERCAP) | F_HEAD_BAD;
	return 1;
}

/* The continuation at the segment's start; sets *pos to where records start. 1: stop walking. */
static int walk_head(Walk *w, uint32_t hsize, uint16_t info, uint32_t rem, uint32_t *pos)
{
	WalSegSummary *s = w->s;
	uint32_t B = w->blcksz, off = 0, got = 0;
	if (info & XLP_FIRST_IS_OVERWRITE_CONTRECORD) {
		s->head_kind = HEAD_OVERWRITE;
		w->after_overwrite = true;
		*pos = hsize;
		return 0;
	}
	if (!(info & XLP_FIRST_IS_CONTRECORD)) {
		*pos = hsize;
		return 0;
	}
	if (rem == 0) {
		seg_unsummarized(s, WHY_PAGE, PAGE_CONT, s->seg_start);
		s->head_kind = HEAD_CONT;
		s->flags |= F_HEAD_BAD;
		return 1;
	}
	s->head_kind = HEAD_CONT;
	s->head_rem = rem;
	if (!(s->head = malloc(MIN(rem, WALSUM_BOUNDARY_CAP))))
		return -ENOMEM;
	for (;;) {
		uint32_t n = MIN(rem - got, B - hsize);
		if (!(s->flags & F_HEAD_OVERCAP)) {
			if (s->head_len + n > WALSUM_BOUNDARY_CAP) {
				s->flags |= F_HEAD_OVERCAP;
				free(s->head);
				s->head = NULL;
				s->head_len = 0;
			} else {
				memcpy(s->head + s->head_len, w->buf + off + hsize, n);
				s->head_len += n;
			}
		}
		got += n;
		if (got == rem) {
			*pos = (uint32_t)MAXALIGN8(off + hsize + n);
			s->head_next = s->seg_start + *pos;
			return 0;
		}
		off += B;
		if (off == s->seg_size) {
			s->flags |= F_HEAD_CONTINUES;
			s->head_next = s->seg_start + s->seg_size;
			s->end_lsn = s->seg_start + s->seg_size;
			return 1;
		}
		uint32_t prem;
		int r = page_check(w, off, &hsize, &info, &prem);
		if (r) {
			seg_unsummarized(s, WHY_PAGE, (uint32_t)r, s->seg_start + off);
			return head_bad(s);
		}
		if (info & XLP_FIRST_IS_OVERWRITE_CONTRECORD) {
			/* the record was abandoned: what follows the header is a new record */
			s->head_kind = HEAD_OVERWRITE;
			s->flags &= ~(uint32_t)F_HEAD_OVERCAP;
			free(s->head);
			s->head = NULL;
			s->head_len = 0;
			w->after_overwrite = true;
			*pos = off + hsize;
			return 0;
		}
		if (!(info & XLP_FIRST_IS_CONTRECORD) || prem != rem - got) {
			seg_unsummarized(s, WHY_PAGE, PAGE_CONT, s->seg_start + off);
			return head_bad(s);
		}
	}
}

static int scratch_reserve(Walk *w, size_t n)
{
	if (n <= w->scratch_cap)
		return 0;
	size_t cap = MAX(n, w->scratch_cap * 2);
	uint8_t *p = realloc(w->scratch, cap);
	if (!p)
		return -ENOMEM;
	w->scratch = p;
	w->scratch_cap = cap;
	return 0;
}

/*
 * Gather a record that crosses pages into scratch. 0: *ret_next is where the
 * next record starts; 1: stop walking (tail kept, or unsummarized); 2: the
 * record was abandoned (overwrite contrecord), go on at *ret_next.
 */
static int walk_gather(Walk *w, uint32_t pos, uint32_t tot, uint32_t *ret_next)
{
	WalSegSummary *s = w->s;
	uint32_t B = w->blcksz, avail = B - pos % B, got = avail;
	uint32_t off = pos - pos % B + B;
	if (scratch_reserve(w, MIN((uint64_t)tot, (uint64_t)s->seg_size)) < 0)
		return -ENOMEM;
	memcpy(w->scratch, w->buf + pos, avail);
	for (;;) {
		uint32_t hsize, prem;
		uint16_t info;
		if (off == s->seg_size) {
			s->flags |= F_HAS_TAIL;
			s->tail_start = s->seg_start + pos;
			s->tail_tot = tot;
			if (got > WALSUM_BOUNDARY_CAP)
				s->flags |= F_TAIL_OVERCAP;
			else if (keep_bytes(&s->tail, w->scratch, got) < 0)
				return -ENOMEM;
			else
				s->tail_len = got;
			s->end_lsn = s->tail_start;
			return 1;
		}
		int r = page_check(w, off, &hsize, &info, &prem);
		if (r) {
			seg_unsummarized(s, WHY_PAGE, (uint32_t)r, s->seg_start + pos);
			return 1;
		}
		if (info & XLP_FIRST_IS_OVERWRITE_CONTRECORD) {
			w->after_overwrite = true;
			w->prev = NO_LSN;
			*ret_next = off + hsize;
			return 2;
		}
		if (!(info & XLP_FIRST_IS_CONTRECORD) || prem != tot - got) {
			seg_unsummarized(s, WHY_PAGE, PAGE_CONT, s->seg_start + pos);
			return 1;
		}
		uint32_t n = MIN(prem, B - hsize);
		memcpy(w->scratch + got, w->buf + off + hsize, n);
		got += n;
		if (got == tot) {
			*ret_next = (uint32_t)MAXALIGN8(off + hsize + n);
			return 0;
		}
		off += B;
	}
}

static bool page_is_zero(const uint8_t *p)
{
	static const uint8_t zero[SHORT_PHD];
	return memcmp(p, zero, SHORT_PHD) == 0;
}

/* The records of the segment, from pos. */
static int walk_records(Walk *w, uint32_t pos)
{
	WalSegSummary *s = w->s;
	uint32_t B = w->blcksz;
	for (;;) {
		uint32_t hsize, rem, tot, next, aux = 0;
		uint16_t info;
		const uint8_t *rec;
		int r;
		if (pos % B == 0) {
			if (pos == s->seg_size) {
				s->end_lsn = s->seg_start + pos;
				return 0;
			}
			if (page_is_zero(w->buf + pos)) { /* never written: WAL ends here */
				s->flags |= F_EOW;
				s->end_lsn = s->seg_start + pos;
				return 0;
			}
			r = page_check(w, pos, &hsize, &info, &rem);
			if (r == 0 && (info & XLP_FIRST_IS_CONTRECORD))
				r = PAGE_NOCONT;
			if (r) {
				seg_unsummarized(s, WHY_PAGE, (uint32_t)r, s->seg_start + pos);
				return 0;
			}
			if (info & XLP_FIRST_IS_OVERWRITE_CONTRECORD) {
				w->prev = NO_LSN;
				w->after_overwrite = true;
			}
			pos += hsize;
		}
		uint64_t start = s->seg_start + pos;
		tot = le32(w->buf + pos);
		if (tot == 0) {
			s->flags |= F_EOW;
			s->end_lsn = start;
			return 0;
		}
		if (tot < REC_HDR || tot > REC_MAX_SIZE) {
			seg_unsummarized(s, WHY_RECORD, REC_LENGTH, start);
			return 0;
		}
		if (tot <= B - pos % B) {
			rec = w->buf + pos;
			next = (uint32_t)MAXALIGN8(pos + tot);
		} else {
			r = walk_gather(w, pos, tot, &next);
			if (r < 0)
				return r;
			if (r == 1)
				return 0;
			if (r == 2) {
				pos = next;
				continue;
			}
			rec = w->scratch;
		}
		if (w->prev != NO_LSN && le64(rec + 8) != w->prev) {
			seg_unsummarized(s, WHY_RECORD, REC_PREV, start);
			return 0;
		}
		if (!rec_crc_ok(rec, tot)) {
			seg_unsummarized(s, WHY_RECORD, REC_CRC, start);
			return 0;
		}
		bool sw = rec_is_switch(rec);
		uint64_t end = sw ? s->seg_start + s->seg_size : s->seg_start + next;
		bool in = start >= s->from && end <= s->to;
		if (!in && start < s->to && end > s->to)
			s->filter_cut = MIN(s->filter_cut, start);
		r = rec_apply(rec, tot, s->major, in ? &s->bt : NULL, &aux);
		if (r < 0)
			return r;
		if (r > 0) {
			seg_unsummarized(s, (uint32_t)r, aux, start);
			return 0;
		}
		if (s->first_rec == NO_LSN) {
			s->first_rec = start;
			s->first_prev = le64(rec + 8);
			if (w->after_overwrite)
				s->flags |= F_FIRST_AFTER_OVERWRITE;
		}
		s->last_rec = w->prev = start;
		s->n_records++;
		s->end_lsn = end;
		if (sw) {
			s->flags |= F_SWITCHED;
			return 0;
		}
		pos = next;
	}
}

static WalSegSummary *summary_new(uint64_t seg_start, uint32_t seg_size, uint32_t tli, uint64_t from,
				  uint64_t to)
{
	WalSegSummary *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->seg_start = seg_start;
	s->seg_size = seg_size;
	s->tli = tli;
	s->from = from;
	s->to = to;
	s->end_lsn = seg_start;
	s->why_lsn = s->first_rec = s->last_rec = s->filter_cut = NO_LSN;
	s->bt.keep_dropped = true;
	return s;
}

static bool seg_size_ok(uint32_t seg_size)
{
	return seg_size >= (1u << 20) && seg_size <= (1u << 30) && !(seg_size & (seg_size - 1));
}

int walsum_segment(const void *buf, size_t len, uint64_t seg_start_lsn, uint32_t seg_size,
		   uint32_t tli, uint64_t from, uint64_t to, WalSegSummary **ret)
{
	const uint8_t *p = buf;
	if (!buf || !ret || !seg_size_ok(seg_size) || len != seg_size || seg_start_lsn % seg_size ||
	    seg_start_lsn > UINT64_MAX - seg_size || from > to)
		return -EINVAL;
	WalSegSummary *s = summary_new(seg_start_lsn, seg_size, tli, from, to);
	Walk w = {.s = s, .buf = p, .prev = NO_LSN};
	uint32_t hsize, rem, pos = 0, blcksz = le32(p + 36);
	uint16_t info;
	int r = 0;
	if (!s)
		return -ENOMEM;

	s->magic = le16(p);
	s->major = (uint8_t)magic_major(s->magic);
	if (!s->major) {
		seg_unsummarized(s, WHY_MAGIC, s->magic, seg_start_lsn);
		goto done;
	}
	if (!s->tli)
		s->tli = le32(p + 4);
	s->sysid = le64(p + 24);
	if (blcksz < 1024 || blcksz > 65536 || (blcksz & (blcksz - 1)) || seg_size % blcksz) {
		seg_unsummarized(s, WHY_PAGE, PAGE_LONG, seg_start_lsn);
		goto done;
	}
	w.blcksz = s->blcksz = blcksz;
	r = page_check(&w, 0, &hsize, &info, &rem);
	if (r) {
		seg_unsummarized(s, WHY_PAGE, (uint32_t)r, seg_start_lsn);
		r = 0;
		goto done;
	}
	r = walk_head(&w, hsize, info, rem, &pos);
	if (r == 0)
		r = walk_records(&w, pos);
	if (r == 1)
		r = 0;
done:
	free(w.scratch);
	if (r == 0)
		r = bt_flush(&s->bt);
	for (size_t i = 0; r == 0 && i < s->bt.n; i++)
		r = entry_finish_dropped(&s->bt.e[i]);
	if (r < 0) {
		walsum_free(s);
		return r;
	}
	*ret = s;
	return 0;
}

void walsum_info(const WalSegSummary *s, WalSegInfo *ret)
{
	*ret = (WalSegInfo){
		.pg_major = s->major,
		.magic = s->magic,
		.tli = s->tli,
		.seg_size = s->seg_size,
		.seg_start = s->seg_start,
		.system_id = s->sysid,
		.end_lsn = s->end_lsn,
		.unsummarized_lsn = s->why_lsn,
		.end_of_wal = s->flags & F_EOW,
		.switched = s->flags & F_SWITCHED,
		.has_head = s->head_kind == HEAD_CONT,
		.head_continues = s->flags & F_HEAD_CONTINUES,
		.has_tail = s->flags & F_HAS_TAIL,
		.n_relforks = s->bt.n,
		.n_records = s->n_records,
	};
	why_format(s->why_code, s->why_aux, s->why_lsn, ret->why, sizeof(ret->why));
}

/* ---------------------------------------------------------------------------
 * Serialization, version 1 (all little-endian):
 *   "PGBWSUM\0", u32 version, u32 CRC-32C of those 12 bytes,
 *   the fixed fields (see ser_fields), u32 n_entries,
 *   per entry u32 spc, db, rel, fork, limit, n_blocks, blocks[n_blocks] (ascending),
 *   n_dropped, dropped[n_dropped] (ascending, all >= limit; see bt_merge),
 *   head bytes, tail bytes, u32 CRC-32C of everything before it.
 * The preamble's own CRC tells a corrupt version field (-EBADMSG) from a
 * newer one (-EPROTONOSUPPORT).
 */
static const char ser_magic[8] = "PGBWSUM";

typedef struct Ser {
	uint8_t *p;
	size_t len, cap;
	const uint8_t *r; /* reading */
	size_t off;
	bool bad;
} Ser;

static void put(Ser *w, const void *v, size_t n)
{
	if (w->bad)
		return;
	if (w->len + n > w->cap) {
		size_t cap = MAX(w->cap * 2, w->len + n + 256);
		uint8_t *p = realloc(w->p, cap);
		if (!p) {
			w->bad = true;
			return;
		}
		w->p = p;
		w->cap = cap;
	}
	memcpy(w->p + w->len, v, n);
	w->len += n;
}

static void put32(Ser *w, uint32_t v)
{
	uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
	put(w, b, 4);
}

static void put64(Ser *w, uint64_t v)
{
	put32(w, (uint32_t)v);
	put32(w, (uint32_t)(v >> 32));
}

static const uint8_t *get(Ser *r, size_t n)
{
	if (r->bad || r->len - r->off < n) {
		r->bad = true;
		return NULL;
	}
	r->off += n;
	return r->r + r->off - n;
}

static uint32_t get32(Ser *r)
{
	const uint8_t *p = get(r, 4);
	return p ? le32(p) : 0;
}

static uint64_t get64(Ser *r)
{
	const uint8_t *p = get(r, 8);
	return p ? le64(p) : 0;
}

/* The fixed fields, written or read in one place so the two cannot drift. */
#define SER_FIELDS(X32, X64)                                                                       \
	X32(magic) X32(major) X32(head_kind) X32(flags) X32(tli) X32(seg_size) X32(blcksz)         \
	X32(first_tli) X32(last_tli) X64(seg_start) X64(sysid) X64(from) X64(to) X64(end_lsn)      \
	X32(why_code) X32(why_aux) X64(why_lsn) X64(first_rec) X64(first_prev) X64(last_rec)       \
	X64(filter_cut) X64(n_records) X32(head_rem) X64(head_next) X32(head_len)                  \
	X64(tail_start) X32(tail_tot) X32(tail_len)

int walsum_serialize(const WalSegSummary *s, uint8_t **ret, size_t *ret_len)
{
	Ser w = {0};
	const BtEntry **v = bt_sorted(&s->bt);
	if (!v)
		return -ENOMEM;
	put(&w, ser_magic, 8);
	put32(&w, WALSUM_VERSION);
	put32(&w, w.bad ? 0 : crc32c(w.p, 12));
#define W32(f) put32(&w, (uint32_t)s->f);
#define W64(f) put64(&w, s->f);
	SER_FIELDS(W32, W64)
#undef W32
#undef W64
	put32(&w, (uint32_t)s->bt.n);
	for (size_t i = 0; i < s->bt.n && !w.bad; i++) {
		size_t n = entry_n_blocks(v[i]);
		uint32_t *blocks = malloc((n ? n : 1) * sizeof(*blocks));
		if (!blocks) {
			w.bad = true;
			break;
		}
		entry_blocks(v[i], blocks);
		put32(&w, v[i]->key.spc);
		put32(&w, v[i]->key.db);
		put32(&w, v[i]->key.rel);
		put32(&w, v[i]->key.fork);
		put32(&w, v[i]->limit);
		put32(&w, (uint32_t)n);
		for (size_t j = 0; j < n; j++)
			put32(&w, blocks[j]);
		put32(&w, v[i]->n_drop);
		for (uint32_t j = 0; j < v[i]->n_drop; j++)
			put32(&w, v[i]->drop[j]);
		free(blocks);
	}
	free(v);
	if (s->head_len)
		put(&w, s->head, s->head_len);
	if (s->tail_len)
		put(&w, s->tail, s->tail_len);
	put32(&w, w.bad ? 0 : crc32c(w.p, w.len));
	if (w.bad) {
		free(w.p);
		return -ENOMEM;
	}
	*ret = w.p;
	*ret_len = w.len;
	return 0;
}

/* Are the parsed fields consistent with each other? */
static bool parsed_ok(const WalSegSummary *s)
{
	uint64_t seg_end;
	if (!seg_size_ok(s->seg_size) || s->seg_start % s->seg_size || s->seg_start > UINT64_MAX - s->seg_size)
		return false;
	seg_end = s->seg_start + s->seg_size;
	if (s->major != magic_major(s->magic) || s->head_kind > HEAD_OVERWRITE || (s->flags & ~F_ALL) ||
	    s->why_code >= WHY_MAX_ || s->from > s->to)
		return false;
	if (s->end_lsn < s->seg_start || s->end_lsn > seg_end)
		return false;
	if ((s->why_code == WHY_NONE) != (s->why_lsn == NO_LSN))
		return false;
	if (s->head_len > WALSUM_BOUNDARY_CAP || s->tail_len > WALSUM_BOUNDARY_CAP)
		return false;
	if (s->head_kind != HEAD_CONT && (s->head_len || s->head_rem))
		return false;
	if ((s->flags & F_HEAD_BAD) && (s->head_kind != HEAD_CONT || s->head_len))
		return false;
	if (s->head_kind == HEAD_CONT && !(s->flags & (F_HEAD_OVERCAP | F_HEAD_BAD)) &&
	    (s->head_len > s->head_rem || (!(s->flags & F_HEAD_CONTINUES) && s->head_len != s->head_rem)))
		return false;
	if (!(s->flags & F_HAS_TAIL) && s->tail_len)
		return false;
	if ((s->flags & F_HAS_TAIL) &&
	    (s->tail_start < s->seg_start || s->tail_start >= seg_end || s->tail_tot < REC_HDR ||
	     (!(s->flags & F_TAIL_OVERCAP) && (s->tail_len >= s->tail_tot || s->tail_len == 0))))
		return false;
	return true;
}

static int parse_entries(Ser *r, WalSegSummary *s, uint32_t n_entries)
{
	WalRelFork prev = {0};
	for (uint32_t i = 0; i < n_entries; i++) {
		WalRelFork key;
		uint32_t limit, n, last = 0;
		bool created;
		key.spc = get32(r);
		key.db = get32(r);
		key.rel = get32(r);
		uint32_t fork = get32(r);
		limit = get32(r);
		n = get32(r);
		key.fork = (uint8_t)fork;
		if (r->bad || fork > MAX_FORK || (i && key_cmp(&prev, &key) >= 0) ||
		    (uint64_t)n * 4 > r->len - r->off)
			return -EBADMSG;
		prev = key;
		BtEntry *e = bt_get(&s->bt, &key, limit, &created);
		if (!e)
			return -ENOMEM;
		if (n) {
			e->pend = malloc((size_t)n * sizeof(*e->pend));
			if (!e->pend)
				return -ENOMEM;
			e->cap_pend = n;
		}
		for (uint32_t j = 0; j < n; j++) {
			uint32_t b = get32(r);
			if (j && b <= last)
				return -EBADMSG;
			e->pend[e->n_pend++] = last = b;
		}
		int rr = entry_flush(e);
		if (rr < 0)
			return rr;
		n = get32(r);
		if (r->bad || (uint64_t)n * 4 > r->len - r->off)
			return -EBADMSG;
		for (uint32_t j = 0; j < n; j++) {
			uint32_t b = get32(r);
			if ((j && b <= e->drop[j - 1]) || b < limit)
				return -EBADMSG;
			if (vec_push(&e->drop, &e->n_drop, &e->cap_drop, b) < 0)
				return -ENOMEM;
		}
	}
	return 0;
}

int walsum_parse(const uint8_t *buf, size_t len, WalSegSummary **ret)
{
	Ser r = {.r = buf, .len = len};
	WalSegSummary *s;
	uint32_t version;
	int rr;
	if (!buf || len < 20 || memcmp(buf, ser_magic, 8) != 0 || crc32c(buf, 12) != le32(buf + 12))
		return -EBADMSG;
	version = le32(buf + 8);
	if (version > WALSUM_VERSION)
		return -EPROTONOSUPPORT;
	if (version != WALSUM_VERSION || crc32c(buf, len - 4) != le32(buf + len - 4))
		return -EBADMSG;
	r.len = len - 4;
	r.off = 16;
	if (!(s = calloc(1, sizeof(*s))))
		return -ENOMEM;
	s->bt.keep_dropped = true;
#define R32(f) s->f = (__typeof__(s->f))get32(&r);
#define R64(f) s->f = get64(&r);
	SER_FIELDS(R32, R64)
#undef R32
#undef R64
	uint32_t n_entries = get32(&r);
	if (r.bad || !parsed_ok(s)) {
		walsum_free(s);
		return -EBADMSG;
	}
	rr = parse_entries(&r, s, n_entries);
	if (rr == 0) {
		const uint8_t *h = s->head_len ? get(&r, s->head_len) : NULL;
		const uint8_t *t = s->tail_len ? get(&r, s->tail_len) : NULL;
		if (r.bad || r.off != r.len)
			rr = -EBADMSG;
		if (rr == 0 && h && keep_bytes(&s->head, h, s->head_len) < 0)
			rr = -ENOMEM;
		if (rr == 0 && t && keep_bytes(&s->tail, t, s->tail_len) < 0)
			rr = -ENOMEM;
	}
	if (rr < 0) {
		walsum_free(s);
		return rr;
	}
	*ret = s;
	return 0;
}

/* ---------------------------------------------------------------------------
 * Combining summaries.
 */
struct WalBlockSet {
	BlockTab bt;
	bool started;
	uint16_t magic;
	uint8_t major;
	uint32_t seg_size, last_tli;
	uint64_t sysid;
	uint64_t next_seg;          /* seg_start of the summary expected next */
	uint64_t cov_start, cov_end; /* every record starting in [cov_start, cov_end) is in */
	bool broken;                 /* cov_end can no longer grow */
	char why[200];
	uint64_t filt_from, filt_to;
	uint64_t prev_rec; /* start of the last whole record added, NO_LSN unknown */
	/* a record that started in an earlier summary and is not finished yet */
	bool pending;
	uint64_t pend_start;
	uint32_t pend_tot, pend_len;
	uint8_t *pend_buf; /* pend_tot bytes */
};

int walblocks_new(WalBlockSet **ret)
{
	WalBlockSet *b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->prev_rec = NO_LSN;
	b->filt_to = UINT64_MAX;
	*ret = b;
	return 0;
}

WalBlockSet *walblocks_free(WalBlockSet *b)
{
	if (b) {
		bt_free(&b->bt);
		free(b->pend_buf);
		free(b);
	}
	return NULL;
}

static _printf_(3, 4) void set_break(WalBlockSet *b, uint64_t at, const char *fmt, ...)
{
	va_list ap;
	if (b->broken)
		return;
	b->broken = true;
	b->cov_end = MIN(b->cov_end, at);
	va_start(ap, fmt);
	vsnprintf(b->why, sizeof(b->why), fmt, ap);
	va_end(ap);
}

#define LSN_ARGS(l) (unsigned)((l) >> 32), (unsigned)(l)

/* Finish the pending record with s's head. 1: s's records do not count (an XLOG_SWITCH ended). */
static int boundary_resolve(WalBlockSet *b, const WalSegSummary *s)
{
	uint64_t start = b->pend_start;
	uint32_t aux = 0;
	if (s->head_kind == HEAD_OVERWRITE) { /* abandoned: never happened */
		b->pending = false;
		return 0;
	}
	if (s->head_kind != HEAD_CONT || (s->flags & F_HEAD_BAD) || s->head_rem != b->pend_tot - b->pend_len) {
		set_break(b, start, "the WAL record at %X/%X has no valid continuation in the next segment",
			  LSN_ARGS(start));
		b->pending = false;
		return 0;
	}
	if (s->flags & F_HEAD_OVERCAP || b->pend_len + s->head_len > b->pend_tot) {
		set_break(b, start, "the WAL record at %X/%X is longer than %u bytes", LSN_ARGS(start),
			  WALSUM_BOUNDARY_CAP);
		b->pending = false;
		return 0;
	}
	memcpy(b->pend_buf + b->pend_len, s->head, s->head_len);
	b->pend_len += s->head_len;
	if (s->flags & F_HEAD_CONTINUES)
		return 0;
	b->pending = false;
	if (b->pend_len != b->pend_tot) {
		set_break(b, start, "the WAL record at %X/%X has no valid continuation in the next segment",
			  LSN_ARGS(start));
		return 0;
	}
	const uint8_t *rec = b->pend_buf;
	if (b->prev_rec != NO_LSN && le64(rec + 8) != b->prev_rec) {
		set_break(b, start, "invalid WAL record at %X/%X: its prev-link does not match the previous record",
			  LSN_ARGS(start));
		return 0;
	}
	if (!rec_crc_ok(rec, b->pend_tot)) {
		set_break(b, start, "invalid WAL record at %X/%X: its CRC is incorrect", LSN_ARGS(start));
		return 0;
	}
	bool sw = rec_is_switch(rec);
	uint64_t end = sw ? s->seg_start + s->seg_size : s->head_next;
	bool in = start >= s->from && end <= s->to;
	int r = rec_apply(rec, b->pend_tot, b->major, in ? &b->bt : NULL, &aux);
	if (r < 0)
		return r;
	if (!in && start < s->to && end > s->to)
		set_break(b, start, "the WAL record at %X/%X ends after the range", LSN_ARGS(start));
	if (r > 0) {
		char why[160];
		why_format((uint32_t)r, aux, start, why, sizeof(why));
		set_break(b, start, "%s", why);
		return 0;
	}
	b->prev_rec = start;
	return sw ? 1 : 0;
}

static int set_start(WalBlockSet *b, const WalSegSummary *s)
{
	b->started = true;
	b->magic = s->magic;
	b->major = s->major;
	b->seg_size = s->seg_size;
	b->sysid = s->sysid;
	b->cov_start = b->cov_end = s->seg_start;
	return 0;
}

/* Where the coverage of s's own records ends, and why if that is a break (else *why is ""). */
static uint64_t body_end(const WalSegSummary *s, char *why, size_t len)
{
	uint64_t end = s->end_lsn;
	why[0] = 0;
	if (s->why_code != WHY_NONE)
		why_format(s->why_code, s->why_aux, s->why_lsn, why, len);
	else if (s->flags & F_EOW)
		snprintf(why, len, "WAL ends at %X/%X", LSN_ARGS(s->end_lsn));
	else if ((s->flags & (F_HAS_TAIL | F_TAIL_OVERCAP)) == (F_HAS_TAIL | F_TAIL_OVERCAP))
		snprintf(why, len, "the WAL record at %X/%X is longer than %u bytes", LSN_ARGS(s->tail_start),
			 WALSUM_BOUNDARY_CAP);
	if (s->filter_cut < end) {
		end = s->filter_cut;
		snprintf(why, len, "the WAL record at %X/%X ends after the range", LSN_ARGS(end));
	}
	return end;
}

/* Checks that s follows what the set holds; false (with a break) if it does not. */
static bool segment_follows(WalBlockSet *b, const WalSegSummary *s)
{
	if (s->seg_start != b->next_seg)
		set_break(b, b->cov_end, "WAL segment at %X/%X is missing", LSN_ARGS(b->next_seg));
	else if (s->sysid != b->sysid || s->magic != b->magic)
		set_break(b, b->cov_end, "WAL segment at %X/%X is from another system or version",
			  LSN_ARGS(s->seg_start));
	else if (s->major && s->first_tli < b->last_tli)
		set_break(b, b->cov_end, "WAL segment at %X/%X goes back to timeline %u", LSN_ARGS(s->seg_start),
			  s->first_tli);
	else
		return true;
	return false;
}

int walblocks_add(WalBlockSet *b, const WalSegSummary *s)
{
	bool first = !b || !b->started;
	char why[200];
	int r;
	if (!b || !s || (!first && (s->seg_size != b->seg_size || s->seg_start < b->next_seg)))
		return -EINVAL;
	if (first && (r = set_start(b, s)) < 0)
		return r;
	if (!first && !segment_follows(b, s)) {
		b->pending = false;
		b->prev_rec = NO_LSN;
	}
	b->filt_from = MAX(b->filt_from, s->from);
	b->filt_to = MIN(b->filt_to, s->to);
	b->next_seg = s->seg_start + s->seg_size;
	if (!s->major) { /* nothing in it can be read */
		why_format(s->why_code, s->why_aux, s->why_lsn, why, sizeof(why));
		set_break(b, s->seg_start, "%s", why);
		b->pending = false;
		return 0;
	}
	b->last_tli = s->last_tli;

	/* the record crossing into this segment */
	if (b->pending) {
		r = boundary_resolve(b, s);
		if (r < 0)
			return r;
		if (r == 1) { /* an XLOG_SWITCH: the rest of this segment is not WAL */
			if (!b->broken)
				b->cov_end = s->seg_start + s->seg_size;
			return bt_flush(&b->bt);
		}
		if (b->pending) { /* it goes on past this segment too */
			b->cov_end = b->broken ? b->cov_end : b->pend_start;
			return bt_flush(&b->bt);
		}
	} else if (!first && s->head_kind == HEAD_CONT) {
		set_break(b, b->cov_end,
			  "WAL segment at %X/%X continues a record the previous segment did not start",
			  LSN_ARGS(s->seg_start));
	}

	/* its own records */
	if (s->first_rec != NO_LSN && b->prev_rec != NO_LSN && !(s->flags & F_FIRST_AFTER_OVERWRITE) &&
	    s->first_prev != b->prev_rec)
		set_break(b, s->first_rec,
			  "invalid WAL record at %X/%X: its prev-link does not match the previous record",
			  LSN_ARGS(s->first_rec));
	if ((r = bt_merge(&b->bt, &s->bt)) < 0 || (r = bt_flush(&b->bt)) < 0)
		return r;
	if (s->last_rec != NO_LSN)
		b->prev_rec = s->last_rec;
	uint64_t end = body_end(s, why, sizeof(why));
	if (!b->broken)
		b->cov_end = end;
	if (why[0])
		set_break(b, end, "%s", why);
	if ((s->flags & F_HAS_TAIL) && !(s->flags & F_TAIL_OVERCAP) && s->why_code == WHY_NONE) {
		if (s->tail_tot > WALSUM_BOUNDARY_CAP || s->tail_len > s->tail_tot) {
			set_break(b, s->tail_start, "the WAL record at %X/%X is longer than %u bytes",
				  LSN_ARGS(s->tail_start), WALSUM_BOUNDARY_CAP);
			return 0;
		}
		uint8_t *p = realloc(b->pend_buf, s->tail_tot);
		if (!p)
			return -ENOMEM;
		b->pend_buf = p;
		b->pending = true;
		b->pend_start = s->tail_start;
		b->pend_tot = s->tail_tot;
		b->pend_len = s->tail_len;
		memcpy(b->pend_buf, s->tail, s->tail_len);
	}
	return 0;
}

bool walblocks_covers(const WalBlockSet *b, uint64_t from, uint64_t to, char *why, size_t why_len)
{
	char buf[1];
	if (!why) {
		why = buf;
		why_len = sizeof(buf);
	}
	if (!b->started) {
		snprintf(why, why_len, "no WAL summaries");
		return false;
	}
	if (from > to) {
		snprintf(why, why_len, "the range %X/%X..%X/%X is empty", LSN_ARGS(from), LSN_ARGS(to));
		return false;
	}
	if (from < b->cov_start || from < b->filt_from) {
		uint64_t first = MAX(b->cov_start, b->filt_from);
		snprintf(why, why_len, "WAL before %X/%X is not summarized", LSN_ARGS(first));
		return false;
	}
	if (to > b->filt_to) {
		snprintf(why, why_len, "WAL after %X/%X is not summarized", LSN_ARGS(b->filt_to));
		return false;
	}
	if (to > b->cov_end) {
		if (b->broken)
			snprintf(why, why_len, "%s", b->why);
		else if (b->pending)
			snprintf(why, why_len, "the WAL record at %X/%X continues in a segment not summarized",
				 LSN_ARGS(b->pend_start));
		else
			snprintf(why, why_len, "WAL summaries end at %X/%X", LSN_ARGS(b->cov_end));
		return false;
	}
	snprintf(why, why_len, "%s", "");
	return true;
}

bool walblocks_db_recreated(const WalBlockSet *b, uint32_t spc, uint32_t db)
{
	WalRelFork k = {spc, db, 0, FORK_MAIN};
	const BtEntry *e = bt_find(&b->bt, &k);
	return e && e->limit == 0;
}

int walblocks_file(const WalBlockSet *b, const WalRelFork *rf, uint32_t segno, uint32_t nblocks,
		   uint8_t *changed)
{
	uint64_t first = (uint64_t)segno * RELSEG_BLOCKS;
	if (!b || !rf || !changed || nblocks > RELSEG_BLOCKS || rf->fork > MAX_FORK ||
	    first + nblocks > UINT32_MAX)
		return -EINVAL;
	memset(changed, 0, (nblocks + 7) / 8);
	if (rf->fork == FORK_FSM || walblocks_db_recreated(b, rf->spc, rf->db))
		return 1;
	const BtEntry *e = bt_find(&b->bt, rf);
	if (!e)
		return 0;
	if (e->limit <= first)
		return 1;
	for (uint64_t blk = MAX(first, (uint64_t)e->limit); blk < first + nblocks; blk++)
		changed[(blk - first) / 8] |= (uint8_t)(1u << ((blk - first) % 8));
	for (uint32_t i = 0; i < nblocks;) {
		uint32_t blk = (uint32_t)first + i, ci = blk >> BT_SHIFT;
		uint32_t span = MIN(nblocks - i, 65536 - (blk & 0xffff));
		const BtChunk *c = ci < e->n_chunks ? &e->chunks[ci] : NULL;
		if (c && c->n) {
			uint32_t lo = blk & 0xffff, hi = lo + span;
			if (c->cap == BT_BITMAP) {
				for (uint32_t o = lo; o < hi; o++)
					if (bit_test(c->v, o))
						changed[(i + o - lo) / 8] |= (uint8_t)(1u << ((i + o - lo) % 8));
			} else {
				for (uint32_t k = 0; k < c->n; k++)
					if (c->v[k] >= lo && c->v[k] < hi)
						changed[(i + c->v[k] - lo) / 8] |=
							(uint8_t)(1u << ((i + c->v[k] - lo) % 8));
			}
		}
		i += span;
	}
	return 0;
}

int walblocks_foreach(const WalBlockSet *b,
		      int (*fn)(const WalRelFork *rf, uint32_t limit, const uint32_t *blocks,
				size_t n, void *ud),
		      void *ud)
{
	const BtEntry **v = bt_sorted(&b->bt);
	int r = 0;
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < b->bt.n && r == 0; i++) {
		size_t n = entry_n_blocks(v[i]);
		uint32_t *blocks = malloc((n ? n : 1) * sizeof(*blocks));
		if (!blocks) {
			r = -ENOMEM;
			break;
		}
		entry_blocks(v[i], blocks);
		r = fn(&v[i]->key, v[i]->limit, blocks, n, ud);
		free(blocks);
	}
	free(v);
	return r;
}

int walsum_range(const WalSegBuf *segs, size_t n_segs, uint32_t seg_size, uint32_t tli,
		 uint64_t from, uint64_t to, WalBlockSet **ret)
{
	WalBlockSet *b;
	int r;
	if (!segs || !ret || from > to)
		return -EINVAL;
	if ((r = walblocks_new(&b)) < 0)
		return r;
	for (size_t i = 0; i < n_segs && r == 0; i++) {
		WalSegSummary *s = NULL;
		r = walsum_segment(segs[i].buf, segs[i].len, segs[i].seg_start_lsn, seg_size, tli, from, to, &s);
		if (r == 0)
			r = walblocks_add(b, s);
		walsum_free(s);
	}
	if (r < 0) {
		walblocks_free(b);
		return r;
	}
	*ret = b;
	return 0;
}

int walblocks_add_refs(WalBlockSet *b, const WalBlockRef *v, size_t n)
{
	int r = 0;
	if (!b || (n && !v))
		return -EINVAL;
	for (size_t i = 0; i < n && r == 0; i++) {
		if (v[i].rf.fork > MAX_FORK)
			return -EINVAL;
		if (v[i].rf.fork == FORK_FSM)
			continue;
		r = v[i].is_limit ? bt_set_limit(&b->bt, &v[i].rf, v[i].block)
				  : bt_mark(&b->bt, &v[i].rf, v[i].block);
	}
	return r < 0 ? r : bt_flush(&b->bt);
}
