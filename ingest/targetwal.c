#include "ingest/targetwal.h"

#include "common/crc32c.h"
#include "common/lsn.h"
#include "common/util.h"
#include "ingest/pgpage.h"
#include "ingest/walsummary.h"

#include <dirent.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/*
 * global/pg_control of PostgreSQL 17 and 18 (ControlFileData, little-endian):
 * the same offsets up to data_checksum_version; 18 adds a field after it, so
 * its CRC sits 4 bytes later. Checked against both majors' initdb output.
 */
#define PGC_OFF_VERSION 8
#define PGC_OFF_STATE 16
#define PGC_OFF_CHECKPOINT 32
#define PGC_OFF_REDO 40
#define PGC_OFF_TLI 48
#define PGC_OFF_WAL_LEVEL 172
#define PGC_OFF_WAL_LOG_HINTS 176
#define PGC_OFF_FLOAT 208
#define PGC_OFF_BLCKSZ 216
#define PGC_OFF_RELSEG 220
#define PGC_OFF_XLOG_BLCKSZ 224
#define PGC_OFF_SEG_SIZE 228
#define PGC_OFF_CHECKSUMS 252
#define PGC_MAX 8192
#define DB_SHUTDOWNED 1

/* A WAL summary file (src/common/blkreftable.c): magic, entries, a zero entry, CRC-32C. */
#define BRT_MAGIC 0x652b137bu
#define BRT_ENTRY 24 /* RelFileLocator, ForkNumber, limit block, nchunks */
#define BRT_BITMAP 4096 /* a chunk of this many uint16s is a bitmap of 65536 blocks */
#define BRT_MAX_BYTES (1u << 30)
#define NO_LIMIT UINT32_MAX

#define TAIL_MAX_SEGMENTS 64

typedef struct Control {
	uint64_t checkpoint, redo;
	uint32_t tli, seg_size;
} Control;

typedef struct SumFile {
	uint32_t tli;
	uint64_t start, end;
	char name[64];
} SumFile;

/* A timeline of the cluster's history and the LSNs it holds. */
typedef struct Timeline {
	uint32_t tli;
	uint64_t begin, end;
} Timeline;

typedef struct RelKey {
	uint32_t spc, db, rel;
} RelKey;

struct TargetWal {
	WalBlockSet *blocks;
	RelKey *unlogged; /* relations with an init fork, sorted */
	size_t n_unlogged;
};

static void say(char *why, size_t why_len, const char *fmt, ...) _printf_(3, 4);
static void say(char *why, size_t why_len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, why_len, fmt, ap);
	va_end(ap);
}

/* pg_control of 17 or 18 whose CRC and build constants check; 0, or 1 with why. */
static int control_parse(const uint8_t *b, size_t len, size_t *ret_crc_off, char *why,
			 size_t why_len)
{
	uint32_t version = len >= 300 ? get_le32(b + PGC_OFF_VERSION) : 0;
	size_t crc_off = version == 1700 ? 288 : version == 1800 ? 292 : 0;
	double ff;
	if (!crc_off) {
		say(why, why_len, "global/pg_control is not PostgreSQL 17's or 18's (version %u)", version);
		return 1;
	}
	memcpy(&ff, b + PGC_OFF_FLOAT, sizeof(ff));
	if (get_le32(b + crc_off) != crc32c(b, crc_off) || ff != 1234567.0 ||
	    get_le32(b + PGC_OFF_BLCKSZ) != PG_BLCKSZ || get_le32(b + PGC_OFF_RELSEG) != PG_RELSEG_BLOCKS ||
	    get_le32(b + PGC_OFF_XLOG_BLCKSZ) != 8192) {
		say(why, why_len, "global/pg_control fails its CRC or is of another build");
		return 1;
	}
	*ret_crc_off = crc_off;
	return 0;
}

static int control_read(const char *pgdata, Control *c, char *why, size_t why_len)
{
	char path[PATH_MAX];
	uint8_t *b = NULL;
	size_t len = 0, crc_off;
	snprintf(path, sizeof(path), "%s/global/pg_control", pgdata);
	int r = file_read_regular(path, true, PGC_MAX, &b, &len);
	if (r < 0) {
		say(why, why_len, "cannot read global/pg_control (%s)", strerror(-r));
		return r == -ENOMEM ? r : 1;
	}
	r = control_parse(b, len, &crc_off, why, why_len);
	if (r == 0) {
		c->checkpoint = get_le64(b + PGC_OFF_CHECKPOINT);
		c->redo = get_le64(b + PGC_OFF_REDO);
		c->tli = get_le32(b + PGC_OFF_TLI);
		c->seg_size = get_le32(b + PGC_OFF_SEG_SIZE);
		if (get_le32(b + PGC_OFF_STATE) != DB_SHUTDOWNED) {
			say(why, why_len, "the cluster was not shut down cleanly");
			r = 1;
		} else if (get_le32(b + PGC_OFF_WAL_LEVEL) < 1) {
			say(why, why_len, "wal_level is minimal");
			r = 1;
		} else if (!get_le32(b + PGC_OFF_CHECKSUMS) && !b[PGC_OFF_WAL_LOG_HINTS]) {
			say(why, why_len, "neither data checksums nor wal_log_hints: hint bits change "
					  "pages without WAL");
			r = 1;
		} else if (c->seg_size < (1u << 20) || c->seg_size > (1u << 30) ||
			   (c->seg_size & (c->seg_size - 1)) || c->tli == 0) {
			say(why, why_len, "global/pg_control has a bad segment size or timeline");
			r = 1;
		}
	}
	free(b);
	return r;
}

uint64_t targetwal_since(const char *pgdata)
{
	char path[PATH_MAX], line[256];
	uint8_t *b = NULL;
	size_t len = 0, crc_off;
	uint64_t since = 0, start;
	char why[8];
	snprintf(path, sizeof(path), "%s/global/pg_control", pgdata);
	if (file_read_regular(path, true, PGC_MAX, &b, &len) == 0 &&
	    control_parse(b, len, &crc_off, why, sizeof(why)) == 0)
		since = get_le64(b + PGC_OFF_REDO);
	free(b);
	snprintf(path, sizeof(path), "%s/backup_label", pgdata);
	FILE *f = since ? fopen(path, "re") : NULL;
	while (f && fgets(line, sizeof(line), f)) {
		unsigned hi, lo;
		if (sscanf(line, "START WAL LOCATION: %X/%X", &hi, &lo) == 2) {
			start = (uint64_t)hi << 32 | lo;
			since = MIN(since, start);
		}
	}
	if (f)
		fclose(f);
	return since;
}

/*
 * The timelines of tli's history (pg_wal/TLI.history: "parent switchpoint
 * reason" lines), oldest first, tli last and open-ended. 0, 1 (why), -ENOMEM.
 */
static int history_read(const char *pgdata, uint32_t tli, Timeline **ret, size_t *ret_n, char *why,
			size_t why_len)
{
	char path[PATH_MAX], line[512];
	size_t n = 0;
	Timeline *v = malloc(sizeof(*v) * 2);
	uint64_t begin = 0;
	if (!v)
		return -ENOMEM;
	snprintf(path, sizeof(path), "%s/pg_wal/%08X.history", pgdata, tli);
	FILE *f = tli > 1 ? fopen(path, "re") : NULL;
	if (tli > 1 && !f) {
		free(v);
		say(why, why_len, "no history file for timeline %u in pg_wal", tli);
		return 1;
	}
	while (f && fgets(line, sizeof(line), f)) {
		unsigned parent, hi, lo;
		if (line[0] == '#' || sscanf(line, "%u %X/%X", &parent, &hi, &lo) != 3)
			continue;
		Timeline *nv = realloc(v, sizeof(*v) * (n + 2));
		if (!nv) {
			fclose(f);
			free(v);
			return -ENOMEM;
		}
		v = nv;
		v[n++] = (Timeline){.tli = parent, .begin = begin, .end = (uint64_t)hi << 32 | lo};
		begin = (uint64_t)hi << 32 | lo;
	}
	if (f)
		fclose(f);
	v[n++] = (Timeline){.tli = tli, .begin = begin, .end = UINT64_MAX};
	*ret = v;
	*ret_n = n;
	return 0;
}

/* Whether a summary of tli over [start, end) lies within the history. */
static bool in_history(const Timeline *h, size_t n, uint32_t tli, uint64_t start, uint64_t end)
{
	for (size_t i = 0; i < n; i++)
		if (h[i].tli == tli && start >= h[i].begin && end <= h[i].end)
			return true;
	return false;
}

static int sumfile_cmp(const void *a, const void *b)
{
	const SumFile *x = a, *y = b;
	return x->start < y->start ? -1 : x->start > y->start ? 1 : 0;
}

/* The summary files PostgreSQL wrote after trusted_after_ns, by start LSN. */
static int summaries_list(const char *pgdata, int64_t trusted_after_ns, SumFile **ret,
			  size_t *ret_n)
{
	char path[PATH_MAX];
	SumFile *v = NULL;
	size_t n = 0, cap = 0;
	snprintf(path, sizeof(path), "%s/pg_wal/summaries", pgdata);
	DIR *d = opendir(path);
	struct dirent *de;
	if (!d) {
		*ret = NULL;
		*ret_n = 0;
		return 0;
	}
	while ((de = readdir(d))) {
		unsigned t, sh, sl, eh, el;
		char tail[16];
		struct stat st;
		if (strlen(de->d_name) != 48 ||
		    sscanf(de->d_name, "%8X%8X%8X%8X%8X%15s", &t, &sh, &sl, &eh, &el, tail) != 6 ||
		    strcmp(tail, ".summary") ||
		    fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode) ||
		    (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec < trusted_after_ns)
			continue;
		if (n == cap) {
			SumFile *nv = realloc(v, sizeof(*v) * (cap = cap ? cap * 2 : 64));
			if (!nv) {
				closedir(d);
				free(v);
				return -ENOMEM;
			}
			v = nv;
		}
		v[n] = (SumFile){.tli = t, .start = (uint64_t)sh << 32 | sl, .end = (uint64_t)eh << 32 | el};
		memcpy(v[n].name, de->d_name, 49); /* 48 characters, checked above */
		n++;
	}
	closedir(d);
	if (n)
		qsort(v, n, sizeof(*v), sumfile_cmp);
	*ret = v;
	*ret_n = n;
	return 0;
}

/* Refs handed to the set a batch at a time: memory stays flat whatever a summary holds. */
#define BRT_BATCH 4096

typedef struct BrtOut {
	WalBlockSet *b; /* NULL: only check the file */
	WalBlockRef v[BRT_BATCH];
	size_t n;
} BrtOut;

static int brt_emit(BrtOut *o, WalBlockRef ref)
{
	if (!o->b)
		return 0;
	o->v[o->n++] = ref;
	if (o->n < BRT_BATCH)
		return 0;
	o->n = 0;
	return walblocks_add_refs(o->b, o->v, BRT_BATCH);
}

/* One relation fork's entry at buf + *off (end: where the sentinel may start at the latest). */
static int brt_entry(const uint8_t *buf, size_t end, size_t *off, BrtOut *o)
{
	const uint8_t *e = buf + *off;
	WalRelFork rf = {.spc = get_le32(e), .db = get_le32(e + 4), .rel = get_le32(e + 8)};
	uint32_t fork = get_le32(e + 12), limit = get_le32(e + 16), nchunks = get_le32(e + 20);
	size_t p = *off + BRT_ENTRY, data;
	int r = 0;
	if (fork > 3 || nchunks > 65536 || end - p < (size_t)nchunks * 2)
		return -EBADMSG;
	rf.fork = (uint8_t)fork;
	data = p + (size_t)nchunks * 2;
	if (limit != NO_LIMIT)
		r = brt_emit(o, (WalBlockRef){.rf = rf, .block = limit, .is_limit = true});
	for (uint32_t c = 0; r == 0 && c < nchunks; c++) {
		uint16_t usage = get_le16(buf + p + 2 * c);
		if (usage > BRT_BITMAP || end - data < (size_t)usage * 2)
			return -EBADMSG;
		for (uint32_t k = 0; r == 0 && usage == BRT_BITMAP && k < 65536; k++)
			if (get_le16(buf + data + 2 * (k / 16)) & (1u << (k % 16)))
				r = brt_emit(o, (WalBlockRef){.rf = rf, .block = c * 65536u + k});
		for (uint32_t k = 0; r == 0 && usage != BRT_BITMAP && k < usage; k++)
			r = brt_emit(o, (WalBlockRef){.rf = rf, .block = c * 65536u + get_le16(buf + data + 2 * k)});
		data += (size_t)usage * 2;
	}
	*off = data;
	return r;
}

/* Every entry of a summary file, checked (o->b NULL) or added. */
static int brt_walk(const uint8_t *buf, size_t len, BrtOut *o)
{
	static const uint8_t zero[BRT_ENTRY];
	size_t off = 4;
	int r;
	for (;;) {
		if (len - 4 - off < BRT_ENTRY)
			return -EBADMSG;
		if (!memcmp(buf + off, zero, BRT_ENTRY))
			break;
		if ((r = brt_entry(buf, len - 4, &off, o)) < 0)
			return r;
	}
	if (off + BRT_ENTRY != len - 4)
		return -EBADMSG;
	return o->b && o->n ? walblocks_add_refs(o->b, o->v, o->n) : 0;
}

int targetwal_summary_add(WalBlockSet *b, const uint8_t *buf, size_t len)
{
	if (!b || !buf)
		return -EINVAL;
	if (len < 4 + BRT_ENTRY + 4 || get_le32(buf) != BRT_MAGIC ||
	    get_le32(buf + len - 4) != crc32c(buf, len - 4))
		return -EBADMSG;
	BrtOut *o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	int r = brt_walk(buf, len, o); /* the whole file first: a damaged one adds nothing */
	if (r == 0) {
		o->b = b;
		r = brt_walk(buf, len, o);
	}
	free(o);
	return r;
}

/*
 * The records in [from, to) of timeline tli, from the segments in pg_wal,
 * into *ret (NULL and why if they cannot all be summarized).
 */
static int tail_summarize(const char *pgdata, const Control *c, uint64_t from, uint64_t to,
			  WalBlockSet **ret, char *why, size_t why_len)
{
	uint64_t first = from / c->seg_size, last = to / c->seg_size, n = last - first + 1;
	WalSegBuf segs[TAIL_MAX_SEGMENTS] = {0};
	int r = 0;
	*ret = NULL;
	if (n > TAIL_MAX_SEGMENTS) {
		say(why, why_len, "%llu WAL segments past the last summary", (unsigned long long)n);
		return 1;
	}
	for (uint64_t i = 0; i < n && r == 0; i++) {
		char name[WAL_SEGMENT_NAME_LEN], path[PATH_MAX];
		wal_segno_to_name(c->tli, first + i, c->seg_size, name);
		snprintf(path, sizeof(path), "%s/pg_wal/%s", pgdata, name);
		int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		struct stat st;
		void *m = MAP_FAILED;
		if (fd >= 0 && fstat(fd, &st) == 0 && (uint64_t)st.st_size == c->seg_size)
			m = mmap(NULL, c->seg_size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (fd >= 0)
			close(fd);
		if (m == MAP_FAILED) {
			say(why, why_len, "WAL past the last summary is not in pg_wal (%s)", name);
			r = 1;
			break;
		}
		segs[i] = (WalSegBuf){.buf = m, .len = c->seg_size, .seg_start_lsn = (first + i) * c->seg_size};
	}
	if (r == 0) {
		r = walsum_range(segs, n, c->seg_size, c->tli, from, to, ret);
		if (r == 0 && !walblocks_covers(*ret, from, to, why, why_len)) {
			*ret = walblocks_free(*ret);
			r = 1;
		}
	}
	for (uint64_t i = 0; i < n; i++)
		if (segs[i].buf)
			munmap((void *)segs[i].buf, c->seg_size);
	return r;
}

static int relkey_cmp(const void *a, const void *b)
{
	const RelKey *x = a, *y = b;
	if (x->spc != y->spc)
		return x->spc < y->spc ? -1 : 1;
	if (x->db != y->db)
		return x->db < y->db ? -1 : 1;
	return x->rel < y->rel ? -1 : x->rel > y->rel ? 1 : 0;
}

/* Relations of dir (spc, db) with an init fork ("N_init"): unlogged, not in WAL. */
static int unlogged_scan(TargetWal *t, const char *dir, uint32_t spc, uint32_t db, size_t *cap)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	if (!d)
		return 0;
	while ((de = readdir(d))) {
		unsigned rel;
		char tail[8];
		if (sscanf(de->d_name, "%u%7s", &rel, tail) != 2 || strcmp(tail, "_init"))
			continue;
		if (t->n_unlogged == *cap) {
			RelKey *nv = realloc(t->unlogged, sizeof(*nv) * (*cap = *cap ? *cap * 2 : 16));
			if (!nv) {
				closedir(d);
				return -ENOMEM;
			}
			t->unlogged = nv;
		}
		t->unlogged[t->n_unlogged++] = (RelKey){spc, db, rel};
	}
	closedir(d);
	return 0;
}

/* Those of tablespace spc: pg_tblspc/SPC/PG_.../DB. */
static int unlogged_tblspc(TargetWal *t, const char *pgdata, unsigned spc, size_t *cap)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/pg_tblspc/%u", pgdata, spc);
	DIR *v = opendir(path);
	struct dirent *ve, *de;
	int r = 0;
	while (r == 0 && v && (ve = readdir(v))) {
		if (strncmp(ve->d_name, "PG_", 3))
			continue;
		snprintf(path, sizeof(path), "%s/pg_tblspc/%u/%s", pgdata, spc, ve->d_name);
		DIR *d = opendir(path);
		while (r == 0 && d && (de = readdir(d))) {
			unsigned db;
			char extra, dbpath[PATH_MAX + 16];
			if (sscanf(de->d_name, "%u%c", &db, &extra) != 1)
				continue;
			snprintf(dbpath, sizeof(dbpath), "%s/%u", path, db);
			r = unlogged_scan(t, dbpath, spc, db, cap);
		}
		if (d)
			closedir(d);
	}
	if (v)
		closedir(v);
	return r;
}

static int unlogged_find(TargetWal *t, const char *pgdata)
{
	char path[PATH_MAX];
	size_t cap = 0;
	snprintf(path, sizeof(path), "%s/global", pgdata);
	int r = unlogged_scan(t, path, PG_GLOBALTABLESPACE_OID, 0, &cap);
	snprintf(path, sizeof(path), "%s/base", pgdata);
	DIR *d = opendir(path);
	struct dirent *de;
	while (r == 0 && d && (de = readdir(d))) {
		unsigned db;
		char extra;
		if (sscanf(de->d_name, "%u%c", &db, &extra) != 1)
			continue;
		snprintf(path, sizeof(path), "%s/base/%u", pgdata, db);
		r = unlogged_scan(t, path, PG_DEFAULTTABLESPACE_OID, db, &cap);
	}
	if (d)
		closedir(d);
	snprintf(path, sizeof(path), "%s/pg_tblspc", pgdata);
	d = r == 0 ? opendir(path) : NULL;
	while (r == 0 && d && (de = readdir(d))) {
		unsigned spc;
		char extra;
		if (sscanf(de->d_name, "%u%c", &spc, &extra) == 1)
			r = unlogged_tblspc(t, pgdata, spc, &cap);
	}
	if (d)
		closedir(d);
	if (r == 0 && t->n_unlogged)
		qsort(t->unlogged, t->n_unlogged, sizeof(RelKey), relkey_cmp);
	return r;
}

/* The summary files of the chain (cur moves to its end) into b. */
static int chain_add(const char *pgdata, const SumFile *f, WalBlockSet *b, char *why,
		     size_t why_len)
{
	char path[PATH_MAX];
	uint8_t *buf = NULL;
	size_t len = 0;
	snprintf(path, sizeof(path), "%s/pg_wal/summaries/%s", pgdata, f->name);
	int r = file_read_regular(path, true, BRT_MAX_BYTES, &buf, &len);
	if (r == 0)
		r = targetwal_summary_add(b, buf, len);
	free(buf);
	if (r == -ENOMEM)
		return r;
	if (r < 0) {
		say(why, why_len, "summary %s cannot be read (%s)", f->name,
		    r == -EBADMSG ? "damaged" : strerror(-r));
		return 1;
	}
	return 0;
}

/* The changed-block set from since to the checkpoint: 0 (*ret), 1 (why), -ENOMEM. */
static int collect(const char *pgdata, const Control *c, uint64_t since, int64_t trusted_after_ns,
		   WalBlockSet **ret, char *why, size_t why_len)
{
	Timeline *h = NULL;
	SumFile *v = NULL;
	size_t nh = 0, nv = 0, *used = NULL, n_used = 0;
	uint64_t cur = since;
	WalBlockSet *b = NULL;
	int r = history_read(pgdata, c->tli, &h, &nh, why, why_len);
	if (r == 0)
		r = summaries_list(pgdata, trusted_after_ns, &v, &nv);
	if (r == 0 && !(used = malloc(sizeof(*used) * (nv + 1))))
		r = -ENOMEM;
	/* the chain: each summary starts at or before where the last ended */
	for (size_t i = 0; r == 0 && i < nv && v[i].start <= cur && cur < c->checkpoint; i++)
		if (v[i].end > cur && in_history(h, nh, v[i].tli, v[i].start, v[i].end)) {
			cur = v[i].end;
			used[n_used++] = i;
		}
	if (r == 0 && cur < c->checkpoint) {
		if (!in_history(h, nh, c->tli, cur, c->checkpoint)) {
			say(why, why_len, "the WAL summaries stop before a timeline switch");
			r = 1;
		} else {
			r = tail_summarize(pgdata, c, cur, c->checkpoint, &b, why, why_len);
		}
	} else if (r == 0) {
		r = walblocks_new(&b);
	}
	for (size_t i = 0; r == 0 && i < n_used; i++)
		r = chain_add(pgdata, &v[used[i]], b, why, why_len);
	if (r == 0)
		*ret = b;
	else
		walblocks_free(b);
	free(used);
	free(v);
	free(h);
	return r;
}

int targetwal_open(const char *pgdata, uint64_t since, int64_t trusted_after_ns, TargetWal **ret,
		   char *why, size_t why_len)
{
	Control c = {0};
	TargetWal *t = NULL;
	int r;
	*ret = NULL;
	if (since == 0) {
		say(why, why_len, "the restore record has no LSN");
		return 0;
	}
	r = control_read(pgdata, &c, why, why_len);
	if (r == 0 && since > c.checkpoint) {
		say(why, why_len, "the restore's LSN is past the cluster's last checkpoint");
		r = 1;
	}
	if (r == 0 && !(t = calloc(1, sizeof(*t))))
		r = -ENOMEM;
	if (r == 0)
		r = collect(pgdata, &c, since, trusted_after_ns, &t->blocks, why, why_len);
	if (r == 0)
		r = unlogged_find(t, pgdata);
	if (r != 0)
		targetwal_free(t);
	else
		*ret = t;
	return r < 0 ? r : 0;
}

TargetWal *targetwal_free(TargetWal *t)
{
	if (t) {
		walblocks_free(t->blocks);
		free(t->unlogged);
		free(t);
	}
	return NULL;
}

int targetwal_file(const TargetWal *t, const char *path, uint64_t nblocks, uint8_t *changed)
{
	PgRelFile f;
	if (!t || !path || !changed)
		return -EINVAL;
	if (nblocks > PG_RELSEG_BLOCKS || !pg_path_relfile(path, &f) || f.fork != PG_FORK_MAIN)
		return 1;
	RelKey k = {f.spc, f.db, f.rel};
	if (t->n_unlogged && bsearch(&k, t->unlogged, t->n_unlogged, sizeof(k), relkey_cmp))
		return 1;
	WalRelFork rf = {.spc = f.spc, .db = f.db, .rel = f.rel, .fork = PG_FORK_MAIN};
	return walblocks_file(t->blocks, &rf, f.segno, (uint32_t)nblocks, changed);
}
