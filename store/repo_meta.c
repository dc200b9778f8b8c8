/*
 * Metadata objects (catalog generations and deltas, snapshot manifests): a
 * header, zstd, sealed under the metadata key when the repository is
 * encrypted. Readers decode every object as a stream into a sink (a buffer
 * or a file), fetching those past META_WHOLE in windows.
 *
 * Format 1 ("PGBKOBJ1") is one zstd frame, sealed whole: writing it holds the
 * compressed object in memory, and no reader takes one over META_MAX_BYTES.
 * A catalog reaches that at ~34 million chunks (~2 TB of unique data), so
 * an object whose plain bytes pass it is written in pieces (format 2,
 * "PGBKOBJ2"), streamed from and to files:
 *
 *   header (24 bytes): magic | flags | piece bytes | plain length
 *   per piece of the plain bytes: u32 length | zstd frame with its checksum
 *   trailer: u32 length | SHA-256 of all the plain bytes
 *
 * Sealed, each piece and the trailer are sealed alone with the name, the
 * header and their number as associated data: a piece opens only in its
 * place in its object, and the header (authenticated by every piece) says
 * how many there are, so a dropped, repeated or reordered piece or a cut
 * object is refused. Unsealed, the trailer's digest catches the same.
 * Format 1 stays what smaller objects are written in, so older binaries
 * keep reading every object they could. Readers take both.
 */
#include "store/repo_int.h"
#include "common/util.h"

#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#define META_MAGIC "PGBKOBJ1"
#define META_MAGIC_PIECES "PGBKOBJ2"
#define META_HEADER_LEN 24
#define META_MAX_BYTES (4ULL << 30)
#define META_PIECE (16u << 20)  /* plain bytes per piece, at most */
#define META_WHOLE (64u << 20)  /* objects fetched in one request, at most */
#define META_WINDOW (32u << 20) /* bytes of a larger object fetched per request */
#define META_DIGEST_LEN 32
enum { META_ZSTD = 1, META_SEALED = 2 };

static uint32_t meta_flags(const Repo *r)
{
	return META_ZSTD | (r->encrypted ? META_SEALED : 0);
}

/* Objects of more plain bytes than this are written in pieces of as many. */
static uint64_t pieces_from(const Repo *r)
{
	return r->meta_pieces ? r->meta_pieces : META_MAX_BYTES;
}

static size_t piece_bytes(const Repo *r)
{
	return r->meta_pieces ? (size_t)MIN(r->meta_pieces, (uint64_t)META_PIECE) : META_PIECE;
}

/* Objects up to this size are fetched in one request, larger ones in windows of window_bytes. */
static size_t whole_max(const Repo *r)
{
	return r->meta_pieces ? 4 * piece_bytes(r) : META_WHOLE;
}

static size_t window_bytes(const Repo *r)
{
	return r->meta_pieces ? 2 * piece_bytes(r) : META_WINDOW;
}

/* ---- format 1 ---- */

/*
 * Seal (when encrypted) and store obj: META_HEADER_LEN bytes of room, then n
 * compressed bytes of len plain ones. Takes obj.
 */
static int meta_store(Repo *r, const char *name, uint8_t *obj, size_t n, size_t len)
{
	int e = 0;

	memcpy(obj, META_MAGIC, 8);
	put_le32(obj + 8, meta_flags(r));
	put_le32(obj + 12, 0);
	put_le64(obj + 16, len);
	if (r->encrypted) { /* the name as associated data: an object opens only under its own name */
		uint8_t *sealed = malloc(META_HEADER_LEN + n + CRYPT_OVERHEAD);
		e = sealed ? crypt_seal(r->keys.meta, name, strlen(name), obj + META_HEADER_LEN, n,
					sealed + META_HEADER_LEN, &n)
			   : -ENOMEM;
		if (e == 0) {
			memcpy(sealed, obj, META_HEADER_LEN);
			free(obj);
			obj = sealed;
		} else
			free(sealed);
	}
	if (e == 0)
		e = store_put(r->backend, name, obj, META_HEADER_LEN + n);
	free(obj);
	return e;
}

/* ---- format 2: pieces ---- */

/* Associated data of a sealed piece: the name, the header, the piece's number. */
typedef struct PieceAad {
	uint8_t *buf;
	size_t len;
} PieceAad;

static int piece_aad_init(PieceAad *a, const char *name, const uint8_t *header)
{
	size_t n = strlen(name);
	a->len = n + META_HEADER_LEN + 8;
	if (!(a->buf = malloc(a->len)))
		return -ENOMEM;
	memcpy(a->buf, name, n);
	memcpy(a->buf + n, header, META_HEADER_LEN);
	return 0;
}

static const uint8_t *piece_aad(PieceAad *a, uint64_t i)
{
	put_le64(a->buf + a->len - 8, i);
	return a->buf;
}

/*
 * One record (u32 length, then body: sealed as piece i when encrypted) to
 * out. scratch holds body's length + CRYPT_OVERHEAD + 4 bytes.
 */
static int piece_record_write(Repo *r, PieceAad *aad, uint64_t i, const uint8_t *body, size_t n,
			      uint8_t *scratch, int out)
{
	int e = 0;
	if (r->encrypted)
		e = crypt_seal(r->keys.meta, piece_aad(aad, i), aad->len, body, n, scratch + 4, &n);
	else
		memcpy(scratch + 4, body, n);
	if (e == 0) {
		put_le32(scratch, (uint32_t)n);
		e = write_full(out, scratch, 4 + n);
	}
	return e;
}

/*
 * The pieced object of the len plain bytes at src (NULL: of the file open
 * at fd) to out.
 */
static int pieces_write(Repo *r, const char *name, const uint8_t *src, int fd, uint64_t len, int out)
{
	size_t piece = piece_bytes(r), bound = ZSTD_compressBound(piece);
	uint8_t header[META_HEADER_LEN], digest[META_DIGEST_LEN];
	_cleanup_free_ uint8_t *in = src ? NULL : malloc(piece);
	_cleanup_free_ uint8_t *z = malloc(bound);
	_cleanup_free_ uint8_t *rec = malloc(4 + bound + CRYPT_OVERHEAD);
	ZSTD_CCtx *cz = ZSTD_createCCtx();
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	PieceAad aad = {0};
	uint64_t off = 0, i = 0;
	int e = (src || in) && z && rec && cz && md ? 0 : -ENOMEM;

	memcpy(header, META_MAGIC_PIECES, 8);
	put_le32(header + 8, meta_flags(r));
	put_le32(header + 12, (uint32_t)piece);
	put_le64(header + 16, len);
	if (e == 0)
		e = piece_aad_init(&aad, name, header);
	if (e == 0 && (ZSTD_isError(ZSTD_CCtx_setParameter(cz, ZSTD_c_compressionLevel, 3)) ||
		       ZSTD_isError(ZSTD_CCtx_setParameter(cz, ZSTD_c_checksumFlag, 1)) ||
		       EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1))
		e = -EIO;
	if (e == 0)
		e = write_full(out, header, sizeof(header));
	for (; e == 0 && off < len; off += MIN(piece, len - off), i++) {
		size_t n = (size_t)MIN(piece, len - off), zn;
		const uint8_t *p = src ? src + off : in;
		ssize_t k = src ? (ssize_t)n : pread_full(fd, in, n, (off_t)off);
		if (k < 0 || (size_t)k != n) {
			e = k < 0 ? (int)k : -EIO; /* the file shrank under us */
			break;
		}
		zn = ZSTD_compress2(cz, z, bound, p, n);
		if (ZSTD_isError(zn) || EVP_DigestUpdate(md, p, n) != 1)
			e = -EIO;
		if (e == 0)
			e = piece_record_write(r, &aad, i, z, zn, rec, out);
	}
	if (e == 0 && EVP_DigestFinal_ex(md, digest, NULL) != 1)
		e = -EIO;
	if (e == 0)
		e = piece_record_write(r, &aad, i, digest, sizeof(digest), rec, out);
	free(aad.buf);
	EVP_MD_CTX_free(md);
	ZSTD_freeCCtx(cz);
	return e;
}

/*
 * Put the pieced form of len plain bytes (at src, or of the file at fd):
 * made in an unlinked file of the work directory and stored from its
 * mapping, so that neither the plain nor the stored bytes are all in memory.
 */
static int meta_put_pieces(Repo *r, const char *name, const uint8_t *src, int fd, uint64_t len)
{
	char path[PATH_MAX];
	struct stat st;
	void *map = MAP_FAILED;
	int out, e;

	if (snprintf(path, sizeof(path), "%s/tmp/meta-put-XXXXXX", r->workdir) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	out = mkostemp(path, O_CLOEXEC);
	if (out < 0)
		return -errno;
	unlink(path);
	e = pieces_write(r, name, src, fd, len, out);
	if (e == 0 && fstat(out, &st) < 0)
		e = -errno;
	if (e == 0 && (map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, out, 0)) == MAP_FAILED)
		e = -errno;
	if (e == 0) {
		(void)madvise(map, (size_t)st.st_size, MADV_SEQUENTIAL);
		e = store_put(r->backend, name, map, (size_t)st.st_size);
		munmap(map, (size_t)st.st_size);
	}
	close(out);
	return e;
}

/*
 * An object being read: whole in buf (off == size), or in windows of
 * META_WINDOW fetched as the pieces are taken.
 */
typedef struct MetaIn {
	StoreBackend *b;
	const char *name;
	uint64_t size, off; /* the object's size; where the next window starts */
	uint8_t *buf;
	size_t cap, pos, len; /* buf holds [pos, len) unread */
	size_t window;        /* bytes fetched at a time, at least */
	bool pieced;          /* format 2 (else format 1) */
	bool whole;           /* all of it in buf */
} MetaIn;

/* The next n bytes of the object, contiguous at *ret; -EBADMSG past its end. */
static int in_take(MetaIn *in, size_t n, const uint8_t **ret)
{
	if (in->len - in->pos < n) {
		memmove(in->buf, in->buf + in->pos, in->len - in->pos);
		in->len -= in->pos;
		in->pos = 0;
		size_t want = MIN(MAX(n - in->len, in->window), in->cap - in->len);
		want = (size_t)MIN((uint64_t)want, in->size - in->off);
		if (in->len + want < n)
			return -EBADMSG;
		int e = want ? store_get_range(in->b, in->name, in->off, want, in->buf + in->len) : 0;
		if (e < 0)
			return e == -ENODATA ? -EBADMSG : e; /* shorter than it said: damage */
		in->off += want;
		in->len += want;
	}
	*ret = in->buf + in->pos;
	in->pos += n;
	return 0;
}

/* Where the plain bytes go, in order. */
typedef int (*MetaSink)(void *ud, const uint8_t *p, size_t n);

/*
 * Record i's body: opened when sealed, into scratch (which holds at most
 * max bytes plus the record's overhead); *ret and *ret_len its bytes.
 */
static int piece_record_read(Repo *r, MetaIn *in, PieceAad *aad, uint64_t i, size_t max,
			     uint8_t *scratch, const uint8_t **ret, size_t *ret_len)
{
	const uint8_t *p;
	size_t n;
	int e = in_take(in, 4, &p);

	if (e < 0)
		return e;
	n = get_le32(p);
	if (n > max + (r->encrypted ? CRYPT_OVERHEAD : 0))
		return -EBADMSG;
	if ((e = in_take(in, n, &p)) < 0)
		return e;
	if (r->encrypted) {
		if (n < CRYPT_OVERHEAD)
			return -EBADMSG;
		e = crypt_open(r->keys.meta, piece_aad(aad, i), aad->len, p, n, scratch, &n);
		p = scratch;
	}
	*ret = p;
	*ret_len = n;
	return e;
}

/* Decode a pieced object into sink: every piece checked before its bytes go. */
static int pieces_read(Repo *r, MetaIn *in, MetaSink sink, void *ud)
{
	const uint8_t *header, *p;
	uint8_t digest[META_DIGEST_LEN];
	size_t piece, bound, n;
	uint64_t len, off = 0, i = 0;
	PieceAad aad = {0};
	int e = in_take(in, META_HEADER_LEN, &header);

	if (e < 0)
		return e;
	piece = get_le32(header + 12);
	len = get_le64(header + 16);
	if (memcmp(header, META_MAGIC_PIECES, 8) != 0 || get_le32(header + 8) != meta_flags(r) ||
	    piece == 0 || piece > META_PIECE)
		return -EBADMSG;
	bound = ZSTD_compressBound(piece);
	_cleanup_free_ uint8_t *opened = malloc(bound + CRYPT_OVERHEAD);
	_cleanup_free_ uint8_t *plain = malloc(piece);
	ZSTD_DCtx *dz = ZSTD_createDCtx();
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	e = opened && plain && dz && md ? piece_aad_init(&aad, in->name, header) : -ENOMEM;
	if (e == 0 && EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
		e = -EIO;
	for (; e == 0 && off < len; off += n, i++) {
		const uint8_t *z;
		size_t zn, want = (size_t)MIN(piece, len - off);
		e = piece_record_read(r, in, &aad, i, bound, opened, &z, &zn);
		if (e < 0)
			break;
		n = ZSTD_decompressDCtx(dz, plain, piece, z, zn);
		if (ZSTD_isError(n) || n != want || ZSTD_getFrameContentSize(z, zn) != want) {
			e = -EBADMSG;
			break;
		}
		if (EVP_DigestUpdate(md, plain, n) != 1)
			e = -EIO;
		if (e == 0)
			e = sink(ud, plain, n);
	}
	if (e == 0)
		e = piece_record_read(r, in, &aad, i, META_DIGEST_LEN, opened, &p, &n);
	if (e == 0 && EVP_DigestFinal_ex(md, digest, NULL) != 1)
		e = -EIO;
	if (e == 0 && (n != META_DIGEST_LEN || memcmp(p, digest, META_DIGEST_LEN) != 0 ||
		       in->pos != in->len || in->off != in->size))
		e = -EBADMSG; /* a digest that differs, or bytes after it */
	free(aad.buf);
	EVP_MD_CTX_free(md);
	ZSTD_freeDCtx(dz);
	return e;
}

/*
 * Start reading name: whole (one request) when it is small, else in windows,
 * the first of which is fetched to tell the format. in->buf is the caller's
 * to free.
 */
static int meta_in_open(Repo *r, const char *name, MetaIn *in)
{
	void *obj = NULL;
	size_t len = 0;
	int e = store_get_all(r->backend, name, whole_max(r), &obj, &len);

	*in = (MetaIn){.b = r->backend, .name = name, .window = window_bytes(r)};
	if (e == 0) {
		in->buf = obj;
		in->size = in->off = in->cap = in->len = len;
		in->whole = true;
	} else if (e == -EFBIG) {
		const uint8_t *header;
		/* a window and the largest record any writer makes */
		in->cap = in->window + 4 + ZSTD_compressBound(META_PIECE) + CRYPT_OVERHEAD;
		e = store_size(r->backend, name, &in->size);
		if (e == 0 && !(in->buf = malloc(in->cap)))
			e = -ENOMEM;
		if (e == 0)
			e = in_take(in, META_HEADER_LEN, &header);
		in->pos = 0; /* the decoder takes the header again */
	}
	if (e < 0) {
		free(in->buf);
		return e;
	}
	in->pieced = in->len >= 8 && memcmp(in->buf, META_MAGIC_PIECES, 8) == 0;
	return 0;
}

/* The object's last n bytes into dst (a whole object holds them already). */
static int in_tail(const MetaIn *in, size_t n, uint8_t *dst)
{
	if (in->whole) {
		memcpy(dst, in->buf + in->size - n, n);
		return 0;
	}
	int e = store_get_range(in->b, in->name, in->size - n, n, dst);
	return e == -ENODATA ? -EBADMSG : e;
}

/* The next unread byte of the object. */
static uint64_t in_at(const MetaIn *in)
{
	return in->off - (in->len - in->pos);
}

/* One step of zstd over zin into sink: *got counts the plain bytes, *zr is zstd's answer. */
static int unzstd_step(ZSTD_DCtx *dz, ZSTD_inBuffer *zin, uint8_t *out, size_t out_cap,
		       uint64_t plen, uint64_t *got, size_t *zr, MetaSink sink, void *ud)
{
	ZSTD_outBuffer zo = {.dst = out, .size = out_cap};
	*zr = ZSTD_decompressStream(dz, &zo, zin);
	if (ZSTD_isError(*zr) || zo.pos > plen - *got)
		return -EBADMSG;
	*got += zo.pos;
	return zo.pos ? sink(ud, out, zo.pos) : 0;
}

/*
 * Decode a format-1 object into sink as a stream: its zstd frame a window
 * at a time, opened as it comes when sealed (the tag read first), so that
 * an object too large to hold is never held. Sealed bytes reach sink
 * before the tag is checked at the end: on error the caller drops what
 * sink got, as it does for any error.
 */
static int format1_read(Repo *r, MetaIn *in, MetaSink sink, void *ud)
{
	const uint8_t *header, *p;
	uint8_t tag[CRYPT_TAG_LEN];
	CryptOpenStream *cs = NULL;
	size_t out_cap = ZSTD_DStreamOutSize(), zr = 1;
	_cleanup_free_ uint8_t *out = malloc(out_cap);
	_cleanup_free_ uint8_t *opened =
		r->encrypted ? malloc((size_t)MIN((uint64_t)in->window, in->size)) : NULL;
	ZSTD_DCtx *dz = ZSTD_createDCtx();
	uint64_t plen = 0, got = 0, end = in->size;
	int e = in_take(in, META_HEADER_LEN, &header);

	if (e == 0 && (memcmp(header, META_MAGIC, 8) != 0 || get_le32(header + 8) != meta_flags(r) ||
		       (plen = get_le64(header + 16)) > META_MAX_BYTES))
		e = -EBADMSG;
	if (e == 0 && (!out || !dz || (r->encrypted && !opened)))
		e = -ENOMEM;
	if (e == 0 && r->encrypted) { /* nonce | ciphertext | tag */
		const uint8_t *nonce;
		if (in->size < META_HEADER_LEN + CRYPT_OVERHEAD)
			e = -EBADMSG;
		end = in->size - CRYPT_TAG_LEN;
		if (e == 0)
			e = in_tail(in, CRYPT_TAG_LEN, tag);
		if (e == 0)
			e = in_take(in, CRYPT_NONCE_LEN, &nonce);
		if (e == 0)
			e = crypt_open_stream_begin(r->keys.meta, in->name, strlen(in->name), nonce, tag,
						    &cs);
	}
	while (e == 0 && in_at(in) < end) {
		size_t n = (size_t)MIN((uint64_t)in->window, end - in_at(in));
		e = in_take(in, n, &p);
		if (e == 0 && cs) {
			e = crypt_open_stream_update(cs, p, n, opened);
			p = opened;
		}
		ZSTD_inBuffer zin = {.src = p, .size = n};
		while (e == 0 && zin.pos < zin.size)
			e = unzstd_step(dz, &zin, out, out_cap, plen, &got, &zr, sink, ud);
	}
	while (e == 0 && zr != 0) { /* what zstd still holds */
		ZSTD_inBuffer none = {0};
		uint64_t before = got;
		e = unzstd_step(dz, &none, out, out_cap, plen, &got, &zr, sink, ud);
		if (e == 0 && zr != 0 && got == before)
			e = -EBADMSG; /* a frame cut short */
	}
	if (e == 0 && cs)
		e = crypt_open_stream_end(cs);
	if (e == 0 && got != plen)
		e = -EBADMSG;
	crypt_open_stream_free(cs);
	ZSTD_freeDCtx(dz);
	return e;
}

/* A sink into a buffer that grows as the pieces come (never trusting the header's length). */
typedef struct BufSink {
	uint8_t *p;
	size_t len, cap;
} BufSink;

static int buf_sink(void *ud, const uint8_t *p, size_t n)
{
	BufSink *s = ud;
	return bytes_append(&s->p, &s->len, &s->cap, p, n);
}

static int fd_sink(void *ud, const uint8_t *p, size_t n)
{
	return write_full(*(int *)ud, p, n);
}

/* ---- the interface ---- */

int repo_meta_put(Repo *r, const char *name, const void *buf, size_t len)
{
	size_t bound = ZSTD_compressBound(len), n;
	uint8_t *obj;

	if (len > pieces_from(r))
		return meta_put_pieces(r, name, buf, -1, len);
	if (!(obj = malloc(META_HEADER_LEN + bound)))
		return -ENOMEM;
	n = ZSTD_compress(obj + META_HEADER_LEN, bound, buf, len, 3);
	if (ZSTD_isError(n)) {
		free(obj);
		return -EIO;
	}
	return meta_store(r, name, obj, n, len);
}

int repo_meta_put_file(Repo *r, const char *name, int fd)
{
	enum { PIECE = 4 << 20 };
	struct stat st;
	ZSTD_CCtx *z = NULL;
	uint8_t *obj = NULL, *in = NULL;
	size_t bound = 0, n = 0, len = 0;
	int e = fstat(fd, &st) < 0 ? -errno : 0;

	if (e == 0 && (uint64_t)st.st_size > pieces_from(r))
		return meta_put_pieces(r, name, NULL, fd, (uint64_t)st.st_size);
	if (e == 0) {
		len = (size_t)st.st_size;
		bound = ZSTD_compressBound(len);
		/* only what the compressed bytes fill is touched: the rest never costs memory */
		obj = malloc(META_HEADER_LEN + bound);
		in = malloc(PIECE);
		z = ZSTD_createCCtx();
		e = obj && in && z ? 0 : -ENOMEM;
	}
	if (e == 0 && (ZSTD_isError(ZSTD_CCtx_setParameter(z, ZSTD_c_compressionLevel, 3)) ||
		       ZSTD_isError(ZSTD_CCtx_setPledgedSrcSize(z, len))))
		e = -EIO;
	ZSTD_outBuffer out = {.dst = obj ? obj + META_HEADER_LEN : NULL, .size = bound};
	for (size_t off = 0; e == 0;) {
		ssize_t k = off < len ? pread_full(fd, in, MIN((size_t)PIECE, len - off), (off_t)off) : 0;
		if (k < 0 || (k == 0 && off < len)) {
			e = k < 0 ? (int)k : -EIO; /* shrank under us */
			break;
		}
		off += (size_t)k;
		ZSTD_inBuffer zin = {.src = in, .size = (size_t)k};
		ZSTD_EndDirective end = off == len ? ZSTD_e_end : ZSTD_e_continue;
		size_t left;
		do
			left = ZSTD_compressStream2(z, &out, &zin, end);
		while (!ZSTD_isError(left) && (end == ZSTD_e_end ? left != 0 : zin.pos < zin.size));
		if (ZSTD_isError(left))
			e = -EIO;
		else if (end == ZSTD_e_end)
			break;
	}
	n = out.pos;
	ZSTD_freeCCtx(z);
	free(in);
	if (e < 0) {
		free(obj);
		return e;
	}
	return meta_store(r, name, obj, n, len);
}

/* Decode an object being read into sink, whichever its format. Frees in->buf. */
static int meta_in_read(Repo *r, MetaIn *in, MetaSink sink, void *ud)
{
	int e = in->pieced ? pieces_read(r, in, sink, ud) : format1_read(r, in, sink, ud);
	free(in->buf);
	return e;
}

int repo_meta_get(Repo *r, const char *name, void **ret, size_t *ret_len)
{
	MetaIn in;
	BufSink s = {0};
	int e = meta_in_open(r, name, &in);

	if (e == 0)
		e = meta_in_read(r, &in, buf_sink, &s);
	if (e < 0) {
		free(s.p);
		return e;
	}
	*ret = s.p ? s.p : malloc(1);
	*ret_len = s.len;
	return *ret ? 0 : -ENOMEM;
}

int repo_meta_get_file(Repo *r, const char *name, int fd)
{
	MetaIn in;
	int e = meta_in_open(r, name, &in);

	return e < 0 ? e : meta_in_read(r, &in, fd_sink, &fd);
}
