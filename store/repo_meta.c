/*
 * Small repository objects (catalog generations and deltas, snapshot
 * manifests): a header, zstd, sealed under the metadata key when the
 * repository is encrypted.
 */
#include "store/repo_int.h"
#include "common/util.h"

#include <string.h>
#include <sys/stat.h>
#include <zstd.h>

#define META_MAGIC "PGBKOBJ1"
#define META_HEADER_LEN 24
#define META_MAX_BYTES (4ULL << 30)
enum { META_ZSTD = 1, META_SEALED = 2 };

/*
 * Seal (when encrypted) and store obj: META_HEADER_LEN bytes of room, then n
 * compressed bytes of len plain ones. Takes obj.
 */
static int meta_store(Repo *r, const char *name, uint8_t *obj, size_t n, size_t len)
{
	int e = 0;

	memcpy(obj, META_MAGIC, 8);
	put_le32(obj + 8, META_ZSTD | (r->encrypted ? META_SEALED : 0));
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

int repo_meta_put(Repo *r, const char *name, const void *buf, size_t len)
{
	size_t bound = ZSTD_compressBound(len), n;
	uint8_t *obj = malloc(META_HEADER_LEN + bound);

	if (!obj)
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

	if (e == 0 && (uint64_t)st.st_size > META_MAX_BYTES)
		e = -EFBIG;
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

int repo_meta_get(Repo *r, const char *name, void **ret, size_t *ret_len)
{
	uint8_t *obj = NULL;
	void *plain = NULL;
	size_t len, n;
	uint64_t plen;
	int e = store_get_all(r->backend, name, META_MAX_BYTES, (void **)&obj, &len);

	if (e < 0)
		return e == -EFBIG ? -EBADMSG : e;
	e = -EBADMSG;
	if (len < META_HEADER_LEN || memcmp(obj, META_MAGIC, 8) != 0 ||
	    get_le32(obj + 8) != (META_ZSTD | (r->encrypted ? META_SEALED : 0)))
		goto out;
	if (r->encrypted) {
		uint8_t *opened = len - META_HEADER_LEN >= CRYPT_OVERHEAD ? malloc(len) : NULL;
		size_t olen;
		e = !opened ? -EBADMSG
			    : crypt_open(r->keys.meta, name, strlen(name), obj + META_HEADER_LEN,
					 len - META_HEADER_LEN, opened + META_HEADER_LEN, &olen);
		if (e < 0) {
			free(opened);
			goto out;
		}
		memcpy(opened, obj, META_HEADER_LEN);
		free(obj);
		obj = opened;
		len = META_HEADER_LEN + olen;
		e = -EBADMSG;
	}
	plen = get_le64(obj + 16);
	if (plen > META_MAX_BYTES || !(plain = malloc(plen ? plen : 1))) {
		e = plen > META_MAX_BYTES ? -EBADMSG : -ENOMEM;
		goto out;
	}
	n = ZSTD_decompress(plain, plen, obj + META_HEADER_LEN, len - META_HEADER_LEN);
	if (ZSTD_isError(n) || n != plen) {
		free(plain);
		goto out;
	}
	*ret = plain;
	*ret_len = plen;
	e = 0;
out:
	free(obj);
	return e;
}
