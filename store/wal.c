/*
 * The WAL archive. One object per WAL file, so archive_command is one put
 * and restore_command one get, and retention deletes whole files.
 *
 * Object format (little-endian), a 128-byte header then the payload:
 *   0   8  magic "PGBAKWAL"
 *   8   4  format version (1)
 *   12  4  encoding: 0 raw, 1 zstd (ChunkEncoding)
 *   16  8  plain length
 *   24  8  payload length (object size - 128)
 *   32 32  SHA-256 of the plain bytes
 *   64 48  the file's own name, NUL-padded
 *   112 16 zero
 * Every header byte is checked on read (magic, version, encoding, lengths
 * against the object size, the name against the object's name, the padding
 * and the zero tail), and the payload is decoded and hashed, so a flipped
 * bit anywhere is -EBADMSG and never a wrong WAL file.
 */
#include "store/wal.h"
#include "common/log.h"
#include "common/util.h"
#include "store/catalog.h"
#include "store/chunk.h"

#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

#define WAL_MAGIC "PGBAKWAL"
#define WAL_FORMAT 1
#define WAL_HEADER_LEN 128
#define WAL_NAME_FIELD 48
#define WAL_LOCK_STRIPES 64
#define WAL_PREFIX "wal/"
#define WALSUM_PREFIX "walsum/"
#define WALSUM_SUFFIX ".sum"

typedef struct WalHeader {
	uint32_t version, encoding;
	uint64_t plain_len, payload_len;
	uint8_t sha256[32];
	char name[WAL_NAME_FIELD + 1];
} WalHeader;

const char *wal_kind_name(WalKind k)
{
	switch (k) {
	case WAL_KIND_SEGMENT: return "segment";
	case WAL_KIND_PARTIAL: return "partial";
	case WAL_KIND_HISTORY: return "history";
	case WAL_KIND_BACKUP: return "backup";
	}
	return "unknown";
}

/* n upper-case hex digits (PostgreSQL's names never use lower case) */
static bool parse_hex32(const char *s, size_t n, uint32_t *ret)
{
	uint32_t v = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c >= '0' && c <= '9')
			v = (v << 4) | (uint32_t)(c - '0');
		else if (c >= 'A' && c <= 'F')
			v = (v << 4) | (uint32_t)(c - 'A' + 10);
		else
			return false;
	}
	*ret = v;
	return true;
}

int wal_name_parse(const char *name, WalName *ret)
{
	WalName n = {0};
	size_t len = strnlen(name, PGBAKFS_WAL_NAME_MAX + 1);
	uint32_t offset;

	if (len == 16 && strcmp(name + 8, ".history") == 0)
		n.kind = WAL_KIND_HISTORY;
	else if (len == 24)
		n.kind = WAL_KIND_SEGMENT;
	else if (len == 32 && strcmp(name + 24, ".partial") == 0)
		n.kind = WAL_KIND_PARTIAL;
	else if (len == 40 && name[24] == '.' && strcmp(name + 33, ".backup") == 0 &&
		 parse_hex32(name + 25, 8, &offset))
		n.kind = WAL_KIND_BACKUP;
	else
		return -EINVAL;
	if (n.kind == WAL_KIND_HISTORY ? !parse_hex32(name, 8, &n.timeline) || n.timeline == 0
				       : wal_segment_name_parse(name, &n.timeline, &n.log, &n.seg) < 0)
		return -EINVAL;
	*ret = n;
	return 0;
}

bool wal_seg_size_valid(uint64_t seg_size)
{
	return seg_size >= (1 << 20) && seg_size <= (1 << 30) && (seg_size & (seg_size - 1)) == 0;
}

uint64_t wal_name_segno(const WalName *n, uint32_t seg_size)
{
	return wal_segno_of(n->log, n->seg, seg_size);
}

/* ---- what a WAL file must look like before it is archived ---- */

/* xlp_magic of each PostgreSQL major version (src/include/access/xlog_internal.h) */
static const struct {
	uint16_t magic;
	unsigned version;
} wal_magics[] = {{0xD106, 13}, {0xD10D, 14}, {0xD110, 15}, {0xD113, 16}, {0xD116, 17},
		  {0xD118, 18}};

#define XLP_LONG_HEADER 0x0002
#define XLP_ALL_FLAGS 0x0007
#define XLOG_LONG_PHD_LEN 40 /* SizeOfXLogLongPHD on every 64-bit-aligned platform */

static unsigned magic_version(uint16_t magic)
{
	for (size_t i = 0; i < ELEMENTSOF(wal_magics); i++)
		if (wal_magics[i].magic == magic)
			return wal_magics[i].version;
	return 0;
}

/* PostgreSQL writes its page headers in the server's byte order. */
static uint64_t get_uint(const uint8_t *p, size_t n, bool big_endian)
{
	uint64_t v = 0;
	for (size_t i = 0; i < n; i++)
		v |= (uint64_t)p[big_endian ? n - 1 - i : i] << (8 * i);
	return v;
}

_printf_(3, 4) static int refuse(char *why, size_t why_len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, why_len, fmt, ap);
	va_end(ap);
	return -EBADMSG;
}

#define LSN_ARGS(lsn) (unsigned)((lsn) >> 32), (unsigned)(lsn)

static int segment_check(const WalName *n, const uint8_t *p, size_t len, WalSegmentHeader *ret,
			 char *why, size_t why_len)
{
	WalSegmentHeader h = {0};
	uint16_t info;
	uint64_t start;

	if (len == 0)
		return refuse(why, why_len, "the file is empty");
	if (!wal_seg_size_valid(len))
		return refuse(why, why_len, "its size, %zu bytes, is not a WAL segment size (a power "
			      "of two from 1 MiB to 1 GiB)", len);
	h.magic = (uint16_t)get_uint(p, 2, false);
	h.pg_version = magic_version(h.magic);
	if (!h.pg_version && magic_version((uint16_t)get_uint(p, 2, true))) {
		h.big_endian = true;
		h.magic = (uint16_t)get_uint(p, 2, true);
		h.pg_version = magic_version(h.magic);
	}
	if (!h.pg_version)
		return refuse(why, why_len, "its first page has no WAL page magic of PostgreSQL 13 to "
			      "18 (xlp_magic 0x%04X)", h.magic);
	info = (uint16_t)get_uint(p + 2, 2, h.big_endian);
	h.timeline = (uint32_t)get_uint(p + 4, 4, h.big_endian);
	h.pageaddr = get_uint(p + 8, 8, h.big_endian);
	h.system_id = get_uint(p + 24, 8, h.big_endian);
	h.seg_size = (uint32_t)get_uint(p + 32, 4, h.big_endian);
	h.block_size = (uint32_t)get_uint(p + 36, 4, h.big_endian);
	if (!(info & XLP_LONG_HEADER) || (info & ~XLP_ALL_FLAGS))
		return refuse(why, why_len, "its first page has no long page header (xlp_info 0x%04X)",
			      info);
	if (h.seg_size != len)
		return refuse(why, why_len, "xlp_seg_size is %u, the file has %zu bytes", h.seg_size,
			      len);
	if (h.block_size < 1024 || h.block_size > 65536 || (h.block_size & (h.block_size - 1)))
		return refuse(why, why_len, "xlp_xlog_blcksz %u is not a WAL block size",
			      h.block_size);
	/* the first segment of a new timeline starts with the parent's pages */
	if (h.timeline == 0 || h.timeline > n->timeline)
		return refuse(why, why_len, "xlp_tli is %u, the name says timeline %u", h.timeline,
			      n->timeline);
	if (n->seg >= 0x100000000ULL / len)
		return refuse(why, why_len, "the name's segment %08X does not exist with %zu-byte "
			      "segments", n->seg, len);
	start = wal_name_segno(n, (uint32_t)len) * len;
	if (h.pageaddr != start)
		return refuse(why, why_len, "xlp_pageaddr is %X/%X, the name says the segment starts "
			      "at %X/%X", LSN_ARGS(h.pageaddr), LSN_ARGS(start));
	if (ret)
		*ret = h;
	return 0;
}

/* A backup history file's first line names the segment the backup started in. */
static int backup_check(const char *name, const uint8_t *p, size_t len, char *why, size_t why_len)
{
	static const char prefix[] = "START WAL LOCATION: ";
	const uint8_t *eol = memchr(p, '\n', len);
	char line[128], seg[25];
	unsigned hi, lo;
	int end = -1;

	if (!eol || (size_t)(eol - p) >= sizeof(line) || memcmp(p, prefix, MIN(len, strlen(prefix))) ||
	    len < strlen(prefix))
		return refuse(why, why_len, "it does not start with \"%s\" (not a backup history "
			      "file)", prefix);
	memcpy(line, p, (size_t)(eol - p));
	line[eol - p] = '\0';
	if (sscanf(line, "START WAL LOCATION: %X/%X (file %24[0-9A-F])%n", &hi, &lo, seg, &end) != 3 ||
	    end < 0 || line[end] != '\0')
		return refuse(why, why_len, "its first line is not \"START WAL LOCATION: X/X (file "
			      "SEGMENT)\"");
	if (strncmp(seg, name, 24) != 0)
		return refuse(why, why_len, "it is the backup history of segment %s", seg);
	return 0;
}

/* Lines "<parent timeline> <switch point X/X> [reason]", as readTimeLineHistory reads them. */
static int history_check(const WalName *n, const uint8_t *p, size_t len, char *why, size_t why_len)
{
	uint32_t prev = 0;
	unsigned line_no = 0;

	if (len == 0)
		return refuse(why, why_len, "the file is empty");
	if (memchr(p, '\0', len))
		return refuse(why, why_len, "it holds NUL bytes (not a timeline history file)");
	for (size_t off = 0; off < len;) {
		const uint8_t *eol = memchr(p + off, '\n', len - off);
		size_t n_line = eol ? (size_t)(eol - (p + off)) : len - off;
		char line[256];
		unsigned tli, hi, lo;
		const char *s = line;

		line_no++;
		snprintf(line, sizeof(line), "%.*s", (int)MIN(n_line, sizeof(line) - 1),
			 (const char *)p + off);
		off += n_line + 1;
		while (*s == ' ' || *s == '\t' || *s == '\r')
			s++;
		if (*s == '\0' || *s == '#')
			continue;
		if (sscanf(s, "%u %X/%X", &tli, &hi, &lo) != 3)
			return refuse(why, why_len, "line %u is not \"<timeline> <X/X> ...\" (not a "
				      "timeline history file)", line_no);
		if (tli <= prev || tli >= n->timeline)
			return refuse(why, why_len, "line %u names timeline %u: the parents of timeline "
				      "%u must be below it, ascending", line_no, tli, n->timeline);
		prev = tli;
	}
	return 0;
}

int wal_file_check(const char *name, const void *buf, size_t len, WalSegmentHeader *ret_hdr,
		   char *why, size_t why_len)
{
	WalName n;
	int e = wal_name_parse(name, &n);

	if (e < 0)
		return e;
	if (ret_hdr)
		*ret_hdr = (WalSegmentHeader){0};
	switch (n.kind) {
	case WAL_KIND_SEGMENT:
	case WAL_KIND_PARTIAL:
		if (len > 0 && len < XLOG_LONG_PHD_LEN)
			return refuse(why, why_len, "its size, %zu bytes, is not a WAL segment size", len);
		return segment_check(&n, buf, len, ret_hdr, why, why_len);
	case WAL_KIND_BACKUP:
		return backup_check(name, buf, len, why, why_len);
	case WAL_KIND_HISTORY:
		return history_check(&n, buf, len, why, why_len);
	}
	return -EINVAL;
}

typedef struct SysidCtx {
	uint64_t want;
	unsigned n_ids;
	bool found;
	char first[32];
} SysidCtx;

static int sysid_visit(const SnapshotInfo *s, void *userdata)
{
	SysidCtx *ctx = userdata;
	char *end;
	unsigned long long v;

	if (!s->system_id || !*s->system_id)
		return 0;
	errno = 0;
	v = strtoull(s->system_id, &end, 10);
	if (errno || *end)
		return 0; /* not PostgreSQL's: says nothing */
	if (ctx->n_ids++ == 0)
		snprintf(ctx->first, sizeof(ctx->first), "%s", s->system_id);
	if (v == ctx->want)
		ctx->found = true;
	return 0;
}

int wal_system_id_check(Repo *r, uint64_t system_id, char *why, size_t why_len)
{
	SysidCtx ctx = {.want = system_id};
	int e = catalog_snapshot_foreach_any(repo_catalog(r), sysid_visit, &ctx);

	if (e < 0)
		return e;
	if (ctx.n_ids == 0 || ctx.found)
		return 0;
	return refuse(why, why_len, "its system identifier %llu is not that of any cluster backed "
		      "up into this repository (snapshots have %s)", (unsigned long long)system_id,
		      ctx.first);
}

static int object_key(const char *name, WalName *ret_parsed, char *buf, size_t len)
{
	WalName n;
	int r = wal_name_parse(name, &n);
	if (r < 0)
		return r;
	snprintf(buf, len, WAL_PREFIX "%08X/%s", n.timeline, name);
	if (ret_parsed)
		*ret_parsed = n;
	return 0;
}

/* ---- header ---- */

static void header_write(const WalHeader *h, uint8_t out[WAL_HEADER_LEN])
{
	memset(out, 0, WAL_HEADER_LEN);
	memcpy(out, WAL_MAGIC, 8);
	put_le32(out + 8, h->version);
	put_le32(out + 12, h->encoding);
	put_le64(out + 16, h->plain_len);
	put_le64(out + 24, h->payload_len);
	memcpy(out + 32, h->sha256, 32);
	memcpy(out + 64, h->name, strnlen(h->name, WAL_NAME_FIELD));
}

/* Parse and check a header against the object's name and size. */
static int header_read(const uint8_t in[WAL_HEADER_LEN], const char *name, uint64_t object_size,
		       WalHeader *ret)
{
	WalHeader h = {0};
	size_t name_len = strlen(name);

	if (memcmp(in, WAL_MAGIC, 8) != 0)
		return -EBADMSG;
	h.version = get_le32(in + 8);
	h.encoding = get_le32(in + 12);
	h.plain_len = get_le64(in + 16);
	h.payload_len = get_le64(in + 24);
	memcpy(h.sha256, in + 32, 32);
	if (h.version != WAL_FORMAT)
		return h.version > WAL_FORMAT ? -EPROTONOSUPPORT : -EBADMSG;
	if (h.encoding != CHUNK_ENC_RAW && h.encoding != CHUNK_ENC_ZSTD)
		return -EBADMSG;
	if (h.plain_len > PGBAKFS_WAL_FILE_MAX || h.payload_len != object_size - WAL_HEADER_LEN ||
	    (h.encoding == CHUNK_ENC_RAW && h.payload_len != h.plain_len))
		return -EBADMSG;
	if (name_len > WAL_NAME_FIELD || memcmp(in + 64, name, name_len) != 0 ||
	    !buf_is_zero(in + 64 + name_len, WAL_HEADER_LEN - 64 - name_len))
		return -EBADMSG;
	memcpy(h.name, name, name_len);
	*ret = h;
	return 0;
}

/* ---- locks ---- */

/*
 * Pushes and deletes of one name are serialized by one of 64 flock'ed files,
 * locks/wal-NN.lock, chosen by a hash of the name: a file per name would
 * leave one lock file behind per WAL file forever (unlinking a lock file
 * that others may have open is a race), and 64 stripes keep distinct names
 * mostly independent. flock() serializes one machine only; between machines
 * a store with a conditional put (S3's If-None-Match) decides: see put_new().
 */
static int wal_lock(Repo *r, const char *name, int *ret_fd)
{
	char path[PATH_MAX];
	uint32_t h = 2166136261u; /* FNV-1a */
	int e, fd;

	/* a local repository's own directory: the archiver (postgres) and root share it;
	 * object storage: this machine's cache (pushes from two machines are not serialized) */
	const char *dir = repo_objects_dir(r) ? repo_objects_dir(r) : repo_workdir(r);
	/* root's pushes and expires share the stripes with the archiver: given to the owner */
	const FileOwner *owner = repo_objects_dir(r) ? repo_objects_owner(r) : repo_work_owner(r);
	for (const char *p = name; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	if ((size_t)snprintf(path, sizeof(path), "%s/locks", dir) >= sizeof(path))
		return -ENAMETOOLONG;
	e = mkdir_owned(path, 0700, owner);
	if (e < 0)
		return e;
	snprintf(path, sizeof(path), "%s/locks/wal-%02u.lock", dir, h % WAL_LOCK_STRIPES);
	fd = open_owned(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600, owner);
	if (fd < 0)
		return fd;
	while (flock(fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			e = -errno;
			close(fd);
			return e;
		}
	}
	*ret_fd = fd;
	return 0;
}

/* ---- objects ---- */

/*
 * What an encrypted WAL object is sealed under besides its key: its name,
 * content id and length, so an object copied to another name (a .history
 * file passed off as another) fails to open. Unencrypted objects carry no
 * seal: their header's id and name are checked instead.
 */
static void wal_aad(Repo *r, const char *name, const ChunkId *id, uint64_t plain_len, ChunkId *ret)
{
	uint8_t buf[16 + WAL_NAME_FIELD + 1 + sizeof(id->b) + 8];
	size_t n = strlen(name) < WAL_NAME_FIELD ? strlen(name) : WAL_NAME_FIELD;
	memcpy(buf, "pgbakfs wal v1\0\0", 16);
	memcpy(buf + 16, name, n);
	buf[16 + n] = 0;
	memcpy(buf + 17 + n, id->b, sizeof(id->b));
	put_le64(buf + 17 + n + sizeof(id->b), plain_len);
	repo_chunk_hash(r, buf, 17 + n + sizeof(id->b) + 8, ret);
}

/* Header plus encoded payload of plain bytes, in one malloc'd buffer. */
static int object_encode(Repo *r, const char *name, const void *buf, size_t len,
			 const ChunkId *id, uint8_t **ret, size_t *ret_len)
{
	/* huge pages: a fresh mapping each (see malloc_huge) */
	_cleanup_free_ uint8_t *obj = malloc_huge(WAL_HEADER_LEN + chunk_encode_bound(len));
	ChunkCodec *codec = NULL;
	ChunkEncoding enc;
	size_t n = 0;
	int e;

	if (!obj)
		return -ENOMEM;
	e = repo_codec_new(r, &codec);
	if (e < 0)
		return e;
	ChunkId aad;
	wal_aad(r, name, id, len, &aad);
	if (len > 0)
		e = chunk_encode(codec, &aad, buf, len, obj + WAL_HEADER_LEN, &n, &enc);
	else
		enc = CHUNK_ENC_RAW;
	chunk_codec_free(codec);
	if (e < 0)
		return e;
	WalHeader h = {.version = WAL_FORMAT, .encoding = enc, .plain_len = len, .payload_len = n};
	memcpy(h.sha256, id->b, sizeof(h.sha256));
	snprintf(h.name, sizeof(h.name), "%s", name);
	header_write(&h, obj);
	*ret_len = WAL_HEADER_LEN + n;
	*ret = TAKE_PTR(obj);
	return 0;
}

/* object_encode() of len plain bytes under name, hashing them first: -EFBIG when too big. */
static int object_encode_new(Repo *r, const char *name, const void *buf, size_t len, ChunkId *ret_id,
			     uint8_t **ret, size_t *ret_len)
{
	if (len > PGBAKFS_WAL_FILE_MAX)
		return -EFBIG;
	repo_chunk_hash(r, buf, len, ret_id);
	return object_encode(r, name, buf, len, ret_id, ret, ret_len);
}

/* Read a whole object: -ENOENT when missing, -EBADMSG when implausibly sized. */
static int object_read(Repo *r, const char *key, uint8_t **ret, size_t *ret_len)
{
	_cleanup_free_ void *obj = NULL;
	size_t size;
	int e = store_get_all(repo_backend(r), key,
			      WAL_HEADER_LEN + chunk_encode_bound(PGBAKFS_WAL_FILE_MAX), &obj, &size);

	/* too large, or shrank under us: not a complete object */
	if (e == -EFBIG || e == -ENODATA || (e == 0 && size < WAL_HEADER_LEN))
		return -EBADMSG;
	if (e < 0)
		return e;
	*ret = TAKE_PTR(obj);
	*ret_len = size;
	return 0;
}

/* Check and decode an object into a malloc'd plain buffer. */
static int object_decode(Repo *r, const uint8_t *obj, size_t obj_len, const char *name,
			 WalHeader *ret_h, void **ret_buf)
{
	_cleanup_free_ uint8_t *plain = NULL;
	ChunkCodec *codec = NULL;
	WalHeader h;
	ChunkId id;
	int e = header_read(obj, name, obj_len, &h);

	if (e < 0)
		return e;
	plain = malloc_huge(h.plain_len);
	if (!plain)
		return -ENOMEM;
	memcpy(id.b, h.sha256, sizeof(id.b));
	if (h.plain_len == 0) {
		ChunkId empty;
		repo_chunk_hash(r, "", 0, &empty);
		e = h.payload_len == 0 && chunk_id_cmp(&empty, &id) == 0 ? 0 : -EBADMSG;
	} else {
		ChunkId aad;
		wal_aad(r, name, &id, h.plain_len, &aad);
		e = repo_codec_new(r, &codec);
		if (e == 0)
			e = chunk_decode_aad(codec, (ChunkEncoding)h.encoding, obj + WAL_HEADER_LEN,
					     h.payload_len, plain, h.plain_len, &id, &aad);
		chunk_codec_free(codec);
	}
	if (e < 0)
		return e;
	*ret_h = h;
	*ret_buf = TAKE_PTR(plain);
	return 0;
}

/*
 * What is archived under key, compared with content of plain length len and
 * hash id: 0 nothing, 1 the same content (verified), -ENOTUNIQ other content,
 * -EBADMSG a damaged object, or another -errno.
 */
static int existing_compare_once(Repo *r, const char *key, const char *name, size_t len,
				 const ChunkId *id)
{
	_cleanup_free_ uint8_t *obj = NULL;
	_cleanup_free_ void *plain = NULL;
	size_t obj_len;
	WalHeader h;
	int e = object_read(r, key, &obj, &obj_len);

	if (e == -ENOENT)
		return 0;
	if (e < 0)
		return e;
	e = header_read(obj, name, obj_len, &h);
	if (e < 0)
		return e == -EPROTONOSUPPORT ? e : -EBADMSG;
	if (h.plain_len != len || memcmp(h.sha256, id->b, sizeof(id->b)) != 0)
		return -PGBAKFS_WAL_ECONFLICT;
	/* the same content by its header: make sure the archived copy is readable */
	e = object_decode(r, obj, obj_len, name, &h, &plain);
	return e < 0 ? e : 1;
}

static int existing_compare(Repo *r, const char *key, const char *name, size_t len,
			    const ChunkId *id)
{
	int e = existing_compare_once(r, key, name, len, id);
	/* as in wal_fetch: object storage is read once more before a copy is called damaged */
	if (e == -EBADMSG && !repo_is_local_backend(r))
		e = existing_compare_once(r, key, name, len, id);
	return e;
}

/*
 * Write the object where nothing is archived yet. With a store that has a
 * conditional put (S3), the store decides between two machines pushing at
 * once: the loser sees what the winner wrote and compares, like a push that
 * found the object in the first place. (1 = the same content was there.)
 */
static int put_new(Repo *r, const char *key, const char *name, const uint8_t *obj, size_t obj_len,
		   size_t len, const ChunkId *id)
{
	StoreBackend *b = repo_backend(r);
	int e;

	if (!(b->ops->features & STORE_FEATURE_CONDITIONAL_PUT))
		return store_put(b, key, obj, obj_len);
	e = store_put_if_absent(b, key, obj, obj_len);
	if (e != -EEXIST)
		return e;
	e = existing_compare(r, key, name, len, id);
	if (e == 0)
		return -EAGAIN; /* there and gone again (deleted meanwhile): PostgreSQL retries */
	return e;
}

int wal_push(Repo *r, const char *name, const void *buf, size_t len, WalPushResult *ret_result)
{
	_cleanup_free_ uint8_t *obj = NULL;
	_cleanup_close_ int lock_fd = -1;
	char key[PATH_MAX];
	size_t obj_len;
	ChunkId id;
	int e = object_key(name, NULL, key, sizeof(key));
	bool repaired = false;

	if (e < 0)
		return e;
	/* hash and compress before taking the lock: the lock covers only check + put */
	e = object_encode_new(r, name, buf, len, &id, &obj, &obj_len);
	if (e < 0)
		return e;
	e = wal_lock(r, name, &lock_fd);
	if (e < 0)
		return e;
	e = existing_compare(r, key, name, len, &id);
	if (e == 0) {
		e = put_new(r, key, name, obj, obj_len, len, &id);
	} else if (e == -EBADMSG) {
		/*
		 * A damaged archived copy cannot be compared; the file PostgreSQL
		 * hands us is the best copy there is, so it replaces the damaged one
		 * (unconditionally: on S3 a concurrent push of other content may
		 * race this repair, see docs/design.md).
		 */
		e = store_put(repo_backend(r), key, obj, obj_len);
		repaired = true;
	}
	if (e < 0)
		return e;
	if (ret_result)
		*ret_result = e == 1 ? WAL_PUSH_EXISTED : repaired ? WAL_PUSH_REPAIRED : WAL_PUSH_STORED;
	return 0;
}

/* One GET of the object, checked and decoded. */
static int fetch_once(Repo *r, const char *key, const char *name, WalHeader *ret_h, void **ret_buf)
{
	_cleanup_free_ uint8_t *obj = NULL;
	size_t obj_len;
	int e = object_read(r, key, &obj, &obj_len);

	if (e < 0)
		return e;
	return object_decode(r, obj, obj_len, name, ret_h, ret_buf);
}

int wal_fetch(Repo *r, const char *name, void **ret_buf, size_t *ret_len)
{
	char key[PATH_MAX];
	WalHeader h;
	void *plain;
	int e = object_key(name, NULL, key, sizeof(key));

	if (e < 0)
		return e;
	e = fetch_once(r, key, name, &h, &plain);
	/*
	 * Bytes that fail the checks may have been damaged on the way (a proxy,
	 * a bad NIC, a cut body the server's length did not catch) rather than at
	 * rest: read object storage once more before calling the archived copy
	 * damaged. (A local file read again gives the same bytes.)
	 */
	if (e == -EBADMSG && !repo_is_local_backend(r)) {
		log_warning("archived WAL file \"%s\" failed its checks; reading it again", name);
		e = fetch_once(r, key, name, &h, &plain);
	}
	if (e < 0)
		return e;
	*ret_buf = plain;
	*ret_len = h.plain_len;
	return 0;
}

int wal_stat(Repo *r, const char *name, WalObjectInfo *ret)
{
	StoreBackend *b = repo_backend(r);
	uint8_t hdr[WAL_HEADER_LEN];
	char key[PATH_MAX];
	uint64_t size;
	WalHeader h;
	int e = object_key(name, NULL, key, sizeof(key));

	if (e < 0)
		return e;
	e = store_size(b, key, &size);
	if (e < 0)
		return e;
	if (size < WAL_HEADER_LEN)
		return -EBADMSG;
	e = store_get_range(b, key, 0, sizeof(hdr), hdr);
	if (e < 0)
		return e == -ENODATA ? -EBADMSG : e;
	e = header_read(hdr, name, size, &h);
	if (e < 0)
		return e;
	*ret = (WalObjectInfo){.plain_size = h.plain_len, .stored_size = size,
			       .encoding = (int)h.encoding};
	memcpy(ret->sha256, h.sha256, sizeof(ret->sha256));
	return 0;
}

/* ---- listing ---- */

typedef struct WalEntry {
	char name[PGBAKFS_WAL_NAME_MAX + 1];
	WalName parsed;
	uint64_t size;
} WalEntry;

typedef struct ListCtx {
	WalEntry *v;
	size_t n, cap;
} ListCtx;

static int list_collect(const char *key, uint64_t size, void *userdata)
{
	ListCtx *ctx = userdata;
	const char *name;
	char dir[9];
	WalName n;

	/* "wal/TTTTTTTT/NAME" with TTTTTTTT the name's own timeline */
	if (strncmp(key, WAL_PREFIX, strlen(WAL_PREFIX)) != 0)
		return 0;
	key += strlen(WAL_PREFIX);
	name = strchr(key, '/');
	if (!name || name - key != 8 || wal_name_parse(name + 1, &n) < 0)
		return 0;
	snprintf(dir, sizeof(dir), "%08X", n.timeline);
	if (memcmp(key, dir, 8) != 0)
		return 0;
	if (ctx->n == ctx->cap) {
		size_t cap = ctx->cap ? 2 * ctx->cap : 256;
		WalEntry *v = realloc(ctx->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		ctx->v = v;
		ctx->cap = cap;
	}
	WalEntry *e = &ctx->v[ctx->n++];
	snprintf(e->name, sizeof(e->name), "%s", name + 1);
	e->parsed = n;
	e->size = size;
	return 0;
}

static int entry_cmp(const void *a, const void *b)
{
	const WalEntry *x = a, *y = b;
	if (x->parsed.timeline != y->parsed.timeline)
		return x->parsed.timeline < y->parsed.timeline ? -1 : 1;
	return strcmp(x->name, y->name);
}

int wal_list(Repo *r, WalListFn cb, void *userdata)
{
	ListCtx ctx = {0};
	int e = store_list(repo_backend(r), WAL_PREFIX, list_collect, &ctx);

	if (e == 0 && ctx.n)
		qsort(ctx.v, ctx.n, sizeof(*ctx.v), entry_cmp);
	for (size_t i = 0; e == 0 && i < ctx.n; i++) {
		WalFileInfo f = {.name = ctx.v[i].name, .parsed = ctx.v[i].parsed,
				 .stored_size = ctx.v[i].size};
		e = cb(&f, userdata);
	}
	free(ctx.v);
	return e;
}

static int summary_key(const char *segment, char *obj_name, char *buf, size_t len)
{
	WalName n;
	int r = wal_name_parse(segment, &n);
	if (r < 0)
		return r;
	if (n.kind != WAL_KIND_SEGMENT)
		return -EINVAL;
	snprintf(buf, len, WALSUM_PREFIX "%08X/%s", n.timeline, segment);
	/* the object's own name (header, seal) differs from the segment's: never mistaken for it */
	snprintf(obj_name, WAL_NAME_FIELD + 1, "%s" WALSUM_SUFFIX, segment);
	return 0;
}

int wal_delete(Repo *r, const char *name)
{
	_cleanup_close_ int lock_fd = -1;
	char key[PATH_MAX], skey[PATH_MAX], sname[WAL_NAME_FIELD + 1];
	int e = object_key(name, NULL, key, sizeof(key));

	if (e < 0)
		return e;
	e = wal_lock(r, name, &lock_fd);
	if (e < 0)
		return e;
	/* the summary first: one left without its segment would describe nothing */
	if (summary_key(name, sname, skey, sizeof(skey)) == 0) {
		e = store_delete(repo_backend(r), skey);
		if (e < 0 && e != -ENOENT)
			return e;
	}
	return store_delete(repo_backend(r), key);
}

/* ---- block-reference summaries ---- */

int wal_summary_put(Repo *r, const char *segment, const void *buf, size_t len)
{
	_cleanup_free_ uint8_t *obj = NULL;
	char key[PATH_MAX], name[WAL_NAME_FIELD + 1];
	size_t obj_len;
	ChunkId id;
	int e = summary_key(segment, name, key, sizeof(key));

	if (e < 0)
		return e;
	e = object_encode_new(r, name, buf, len, &id, &obj, &obj_len);
	if (e < 0)
		return e;
	return store_put(repo_backend(r), key, obj, obj_len);
}

int wal_summary_get(Repo *r, const char *segment, void **ret_buf, size_t *ret_len)
{
	char key[PATH_MAX], name[WAL_NAME_FIELD + 1];
	WalHeader h;
	void *plain;
	int e = summary_key(segment, name, key, sizeof(key));

	if (e < 0)
		return e;
	e = fetch_once(r, key, name, &h, &plain);
	if (e < 0)
		return e;
	*ret_buf = plain;
	*ret_len = h.plain_len;
	return 0;
}

/* ---- summary per timeline ---- */

typedef struct SummaryCtx {
	Repo *repo;
	WalTimeline *v;
	size_t n;
	bool have_prev;  /* a segment of the current timeline was seen */
	uint64_t prev;   /* its number */
} SummaryCtx;

static int range_append(WalTimeline *t, uint64_t from, uint64_t to)
{
	WalRange *v = realloc(t->gaps, (t->n_gaps + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	t->gaps = v;
	t->gaps[t->n_gaps++] = (WalRange){from, to};
	return 0;
}

static int summary_add(const WalFileInfo *f, void *userdata)
{
	SummaryCtx *ctx = userdata;
	WalTimeline *t = ctx->n ? &ctx->v[ctx->n - 1] : NULL;
	uint64_t segno;

	if (!t || t->timeline != f->parsed.timeline) {
		WalTimeline *v = realloc(ctx->v, (ctx->n + 1) * sizeof(*v));
		if (!v)
			return -ENOMEM;
		ctx->v = v;
		t = &ctx->v[ctx->n++];
		*t = (WalTimeline){.timeline = f->parsed.timeline,
				   .seg_size = PGBAKFS_WAL_DEFAULT_SEG_SIZE};
		ctx->have_prev = false;
	}
	t->n_files++;
	t->stored_bytes += f->stored_size;
	if (f->parsed.kind != WAL_KIND_SEGMENT)
		return 0;
	if (!ctx->have_prev) {
		/* names sort by position, so the first segment fixes the size */
		WalObjectInfo oi;
		if (wal_stat(ctx->repo, f->name, &oi) == 0 && wal_seg_size_valid(oi.plain_size))
			t->seg_size = (uint32_t)oi.plain_size;
	}
	if (f->parsed.seg >= 0x100000000ULL / t->seg_size)
		return 0; /* not a segment of this size */
	segno = wal_name_segno(&f->parsed, t->seg_size);
	if (!ctx->have_prev) {
		t->first = segno;
	} else if (segno > ctx->prev + 1) {
		int e = range_append(t, ctx->prev + 1, segno - 1);
		if (e < 0)
			return e;
	}
	t->last = segno;
	t->n_segments++;
	ctx->prev = segno;
	ctx->have_prev = true;
	return 0;
}

int wal_timelines(Repo *r, WalTimeline **ret, size_t *ret_n)
{
	SummaryCtx ctx = {.repo = r};
	int e = wal_list(r, summary_add, &ctx);
	if (e < 0) {
		wal_timelines_free(ctx.v, ctx.n);
		return e;
	}
	*ret = ctx.v;
	*ret_n = ctx.n;
	return 0;
}

WalTimeline *wal_timelines_free(WalTimeline *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i].gaps);
	free(v);
	return NULL;
}

int wal_timeline_run(const WalTimeline *t, uint64_t segno, uint64_t *ret_last)
{
	if (!t->n_segments || segno < t->first || segno > t->last)
		return -ENOENT;
	for (size_t i = 0; i < t->n_gaps; i++) {
		if (segno >= t->gaps[i].from && segno <= t->gaps[i].to)
			return -ENOENT;
		if (t->gaps[i].from > segno) {
			*ret_last = t->gaps[i].from - 1;
			return 0;
		}
	}
	*ret_last = t->last;
	return 0;
}
