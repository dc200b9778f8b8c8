/*
 * Small repository objects (catalog generations and deltas, snapshot
 * manifests): a header, zstd, sealed under the metadata key when the
 * repository is encrypted.
 */
#include "store/repo_int.h"
#include "common/util.h"

#include <string.h>
#include <zstd.h>

#define META_MAGIC "PGBKOBJ1"
#define META_HEADER_LEN 24
#define META_MAX_BYTES (4ULL << 30)
enum { META_ZSTD = 1, META_SEALED = 2 };

int repo_meta_put(Repo *r, const char *name, const void *buf, size_t len)
{
	size_t bound = ZSTD_compressBound(len), n;
	uint8_t *obj = malloc(META_HEADER_LEN + bound);
	int e;

	if (!obj)
		return -ENOMEM;
	n = ZSTD_compress(obj + META_HEADER_LEN, bound, buf, len, 3);
	if (ZSTD_isError(n)) {
		free(obj);
		return -EIO;
	}
	memcpy(obj, META_MAGIC, 8);
	put_le32(obj + 8, META_ZSTD | (r->encrypted ? META_SEALED : 0));
	put_le32(obj + 12, 0);
	put_le64(obj + 16, len);
	e = 0;
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
