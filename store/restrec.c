/* The restore record: see store/restrec.h. */
#include "store/restrec.h"
#include "common/crc32c.h"
#include "common/fasthash.h"
#include "common/util.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RESTREC_MAGIC "PGBKRRC1"
#define RESTREC_VERSION 2 /* 2: the LSN after the entries; 1 has none (0) */
#define RESTREC_ID_LEN 32
#define RESTREC_HEADER (8 + 4 + 4 + RESTREC_ID_LEN + 8 + 8 + 8 + 2) /* without the target */
#define RESTREC_ENTRY_FIXED (2 + 6 * 8 + RESTREC_KEY_LEN) /* without the path */
#define RESTREC_MAX_BYTES (1ULL << 30)

/* The key of the chunk-id list hash: fixed, part of the record's format. */
static const uint8_t restrec_hash_key[16] = "pgbakfs-restrec1";

struct RestoreRecord {
	char repo_id[RESTREC_ID_LEN + 1];
	char *target;
	uint64_t chunk_size;
	uint64_t lsn;       /* since when PostgreSQL's WAL says what changed in the files; 0: unknown */
	int64_t written_ns; /* when it was saved (loaded records) */
	RestRecEntry *e;
	size_t n, cap;
	bool sorted;
	pthread_mutex_t lock;
};

int restrec_new(const char *repo_id, uint64_t chunk_size, const char *target,
		RestoreRecord **ret)
{
	RestoreRecord *r = calloc(1, sizeof(*r));
	if (!r || strlen(target) > UINT16_MAX || !(r->target = strdup(target))) {
		free(r);
		return strlen(target) > UINT16_MAX ? -ENAMETOOLONG : -ENOMEM;
	}
	snprintf(r->repo_id, sizeof(r->repo_id), "%s", repo_id);
	r->chunk_size = chunk_size;
	pthread_mutex_init(&r->lock, NULL);
	*ret = r;
	return 0;
}

RestoreRecord *restrec_free(RestoreRecord *r)
{
	if (!r)
		return NULL;
	for (size_t i = 0; i < r->n; i++)
		free(r->e[i].path);
	free(r->e);
	free(r->target);
	pthread_mutex_destroy(&r->lock);
	free(r);
	return NULL;
}

size_t restrec_count(RestoreRecord *r)
{
	pthread_mutex_lock(&r->lock);
	size_t n = r->n;
	pthread_mutex_unlock(&r->lock);
	return n;
}

/* Append e, whose malloc'd path r takes (freed on failure); caller holds the lock or owns r alone. */
static int restrec_push(RestoreRecord *r, const RestRecEntry *e)
{
	if (r->n == r->cap) {
		size_t cap = r->cap ? 2 * r->cap : 256;
		RestRecEntry *a = realloc(r->e, cap * sizeof(*a));
		if (!a) {
			free(e->path);
			return -ENOMEM;
		}
		r->e = a;
		r->cap = cap;
	}
	r->e[r->n++] = *e;
	r->sorted = false;
	return 0;
}

int restrec_add(RestoreRecord *r, const char *path, const struct stat *st, int64_t content,
		const uint8_t key[RESTREC_KEY_LEN])
{
	RestRecEntry e = {.path = NULL, .dev = (uint64_t)st->st_dev,
			  .ino = (uint64_t)st->st_ino, .size = (uint64_t)st->st_size,
			  .mtime_ns = timespec_to_ns(&st->st_mtim),
			  .ctime_ns = timespec_to_ns(&st->st_ctim), .content = content};
	if (strlen(path) > UINT16_MAX)
		return 0; /* not recorded: read again next time */
	memcpy(e.key, key, RESTREC_KEY_LEN);
	if (!(e.path = strdup(path)))
		return -ENOMEM;
	pthread_mutex_lock(&r->lock);
	int ret = restrec_push(r, &e);
	pthread_mutex_unlock(&r->lock);
	return ret;
}

void restrec_set_lsn(RestoreRecord *r, uint64_t lsn)
{
	r->lsn = lsn;
}

uint64_t restrec_lsn(const RestoreRecord *r)
{
	return r->lsn;
}

int64_t restrec_written_ns(const RestoreRecord *r)
{
	return r->written_ns;
}

bool restrec_same_inode(const RestRecEntry *e, const struct stat *st)
{
	return e->dev == (uint64_t)st->st_dev && e->ino == (uint64_t)st->st_ino;
}

bool restrec_matches(const RestRecEntry *e, const struct stat *st)
{
	return e->dev == (uint64_t)st->st_dev && e->ino == (uint64_t)st->st_ino &&
	       e->size == (uint64_t)st->st_size && e->mtime_ns == timespec_to_ns(&st->st_mtim) &&
	       e->ctime_ns == timespec_to_ns(&st->st_ctim);
}

void restrec_key(const ChunkId *ids, size_t n, uint8_t out[RESTREC_KEY_LEN])
{
	fasthash128(restrec_hash_key, ids, n * sizeof(*ids), out);
}

static int entry_cmp(const void *a, const void *b)
{
	return strcmp(((const RestRecEntry *)a)->path, ((const RestRecEntry *)b)->path);
}

RestRecEntry *restrec_take(RestoreRecord *r, const char *path)
{
	RestRecEntry *e = (RestRecEntry *)restrec_find(r, path);
	if (e)
		e->taken = true;
	return e;
}

const RestRecEntry *restrec_find(RestoreRecord *r, const char *path)
{
	if (!r->sorted) {
		qsort(r->e, r->n, sizeof(*r->e), entry_cmp);
		r->sorted = true;
	}
	RestRecEntry k = {.path = (char *)path};
	return r->n ? bsearch(&k, r->e, r->n, sizeof(*r->e), entry_cmp) : NULL;
}

/* ---- serialization ---- */

static bool entry_racy(const RestRecEntry *e, int64_t now_ns)
{
	return e->ctime_ns > now_ns - RESTREC_RACY_NS;
}

/* Wait until RESTREC_RACY_NS after newest (that long at most); now then. */
static int64_t settled_now(int64_t newest)
{
	int64_t now = now_ns();
	if (newest > now - RESTREC_RACY_NS) {
		int64_t wait = MIN(RESTREC_RACY_NS, newest + RESTREC_RACY_NS - now) + 1;
		struct timespec ts = {.tv_sec = wait / 1000000000, .tv_nsec = wait % 1000000000};
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
		now = now_ns();
	}
	return now;
}

static uint8_t *put_entry(uint8_t *p, const RestRecEntry *e)
{
	size_t pl = strlen(e->path);
	put_le16(p, (uint16_t)pl);
	memcpy(p + 2, e->path, pl);
	p += 2 + pl;
	put_le64(p, e->dev);
	put_le64(p + 8, e->ino);
	put_le64(p + 16, e->size);
	put_le64(p + 24, (uint64_t)e->mtime_ns);
	put_le64(p + 32, (uint64_t)e->ctime_ns);
	put_le64(p + 40, (uint64_t)e->content);
	memcpy(p + 48, e->key, RESTREC_KEY_LEN);
	return p + 48 + RESTREC_KEY_LEN;
}

/* Whether entry i of r (src 0) or of also (src 1) goes into the record. */
static bool kept(const RestRecEntry *e, int src, int64_t now_ns)
{
	return !entry_racy(e, now_ns) && (src == 0 || !e->taken);
}

/*
 * The record of r's first upto entries and also's entries not taken, as of
 * now_ns (r's lock held): malloc'd, *ret_len bytes.
 */
static uint8_t *serialize(const RestoreRecord *r, size_t upto, const RestoreRecord *also,
			  int64_t now_ns, size_t *ret_len)
{
	const RestRecEntry *es[2] = {r->e, also ? also->e : NULL};
	size_t ns[2] = {upto, also ? also->n : 0};
	size_t tl = strlen(r->target), len = RESTREC_HEADER + tl + 8 + 4, n = 0;
	uint64_t lsn = r->lsn;
	for (int src = 0; src < 2; src++)
		for (size_t i = 0; i < ns[src]; i++)
			if (kept(&es[src][i], src, now_ns)) {
				len += RESTREC_ENTRY_FIXED + strlen(es[src][i].path);
				n++;
				if (src == 1) /* an older restore's file: its changes count from its LSN */
					lsn = MIN(lsn, also->lsn);
			}
	uint8_t *buf = malloc(len), *p = buf;
	if (!buf)
		return NULL;
	memcpy(p, RESTREC_MAGIC, 8);
	put_le32(p + 8, RESTREC_VERSION);
	put_le32(p + 12, 0);
	memset(p + 16, 0, RESTREC_ID_LEN);
	memcpy(p + 16, r->repo_id, strlen(r->repo_id));
	p += 16 + RESTREC_ID_LEN;
	put_le64(p, r->chunk_size);
	put_le64(p + 8, (uint64_t)now_ns);
	put_le64(p + 16, n);
	put_le16(p + 24, (uint16_t)tl);
	memcpy(p + 26, r->target, tl);
	p += 26 + tl;
	for (int src = 0; src < 2; src++)
		for (size_t i = 0; i < ns[src]; i++)
			if (kept(&es[src][i], src, now_ns))
				p = put_entry(p, &es[src][i]);
	put_le64(p, lsn);
	p += 8;
	put_le32(p, crc32c(buf, (size_t)(p - buf)));
	*ret_len = len;
	return buf;
}

int restrec_save(RestoreRecord *r, const char *path, size_t upto, const RestoreRecord *also)
{
	int64_t newest = INT64_MIN;
	size_t len = 0;

	pthread_mutex_lock(&r->lock);
	upto = MIN(upto, r->n);
	for (size_t i = 0; i < upto; i++)
		newest = MAX(newest, r->e[i].ctime_ns);
	pthread_mutex_unlock(&r->lock);
	int64_t now = settled_now(newest);
	pthread_mutex_lock(&r->lock); /* entries may be added meanwhile, and move */
	uint8_t *buf = serialize(r, upto, also, now, &len);
	pthread_mutex_unlock(&r->lock);
	if (!buf)
		return -ENOMEM;
	int ret = file_write_atomic(path, buf, len, 0600);
	free(buf);
	return ret;
}

/* Entries of buf[off..end) into r: -EBADMSG unless exactly n of them fill it. */
static int parse_entries(RestoreRecord *r, const uint8_t *buf, size_t off, size_t end, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++) {
		if (end - off < RESTREC_ENTRY_FIXED)
			return -EBADMSG;
		size_t pl = get_le16(buf + off);
		if (pl == 0 || end - off - RESTREC_ENTRY_FIXED < pl || memchr(buf + off + 2, 0, pl))
			return -EBADMSG;
		char *path = strndup((const char *)buf + off + 2, pl);
		if (!path)
			return -ENOMEM;
		const uint8_t *p = buf + off + 2 + pl;
		RestRecEntry e = {.path = path, .dev = get_le64(p), .ino = get_le64(p + 8),
				  .size = get_le64(p + 16), .mtime_ns = (int64_t)get_le64(p + 24),
				  .ctime_ns = (int64_t)get_le64(p + 32),
				  .content = (int64_t)get_le64(p + 40)};
		memcpy(e.key, p + 48, RESTREC_KEY_LEN);
		int ret = restrec_push(r, &e);
		if (ret < 0)
			return ret;
		off += RESTREC_ENTRY_FIXED + pl;
	}
	return off == end ? 0 : -EBADMSG;
}

int restrec_load(const char *path, const char *repo_id, uint64_t chunk_size,
		 RestoreRecord **ret)
{
	uint8_t *buf = NULL;
	size_t len = 0, tl, tail;
	uint32_t version;
	RestoreRecord *r = NULL;
	char id[RESTREC_ID_LEN + 1] = {0}, *target = NULL;
	int e = file_read_regular(path, true, RESTREC_MAX_BYTES, &buf, &len);
	if (e < 0)
		return e;
	version = len >= RESTREC_HEADER + 4 ? get_le32(buf + 8) : 0;
	tail = version == 1 ? 4 : 12; /* CRC; v2: the LSN before it */
	if (len < RESTREC_HEADER + tail || memcmp(buf, RESTREC_MAGIC, 8) != 0 ||
	    get_le32(buf + len - 4) != crc32c(buf, len - 4) || version < 1 || version > RESTREC_VERSION ||
	    (tl = get_le16(buf + RESTREC_HEADER - 2)) > len - tail - RESTREC_HEADER) {
		e = -EBADMSG;
		goto out;
	}
	memcpy(id, buf + 16, RESTREC_ID_LEN);
	if (strcmp(id, repo_id) != 0 || get_le64(buf + 16 + RESTREC_ID_LEN) != chunk_size) {
		e = -ESTALE;
		goto out;
	}
	target = strndup((const char *)buf + RESTREC_HEADER, tl);
	e = target ? restrec_new(repo_id, chunk_size, target, &r) : -ENOMEM;
	if (e == 0)
		e = parse_entries(r, buf, RESTREC_HEADER + tl, len - tail,
				  get_le64(buf + RESTREC_HEADER - 10));
	if (e == 0) {
		r->lsn = version >= 2 ? get_le64(buf + len - 12) : 0;
		r->written_ns = (int64_t)get_le64(buf + RESTREC_HEADER - 18);
		*ret = r;
		r = NULL;
	}
out:
	restrec_free(r);
	free(target);
	free(buf);
	return e;
}

/* The target a record file names (malloc'd), if it is a record at all. */
static char *record_target(int dirfd, const char *name)
{
	uint8_t h[RESTREC_HEADER];
	char *target = NULL;
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	if (pread_full(fd, h, sizeof(h), 0) == (ssize_t)sizeof(h) && !memcmp(h, RESTREC_MAGIC, 8)) {
		size_t tl = get_le16(h + RESTREC_HEADER - 2);
		target = calloc(1, tl + 1);
		if (target && pread_full(fd, target, tl, RESTREC_HEADER) != (ssize_t)tl) {
			free(target);
			target = NULL;
		}
	}
	close(fd);
	return target;
}

void restrec_prune(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	if (!d)
		return;
	while ((de = readdir(d))) {
		unsigned long long dev, ino;
		char tail;
		struct stat st;
		if (sscanf(de->d_name, "%llx-%llx%c", &dev, &ino, &tail) != 2)
			continue;
		char *target = record_target(dirfd(d), de->d_name);
		/* a record whose directory is gone: no delta will ever find it */
		if (!target || stat(target, &st) < 0 || (uint64_t)st.st_dev != dev ||
		    (uint64_t)st.st_ino != ino)
			(void)unlinkat(dirfd(d), de->d_name, 0);
		free(target);
	}
	closedir(d);
}
