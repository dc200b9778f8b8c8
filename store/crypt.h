/*
 * Encryption primitives. A repository has one random master key, kept in a
 * key file ("keys") wrapped under a passphrase; three keys are derived from
 * it: one seals chunks, one makes their ids (an HMAC instead of a plain
 * SHA-256, so ids reveal nothing about the contents), one seals the catalog,
 * manifests and WAL. Changing the passphrase rewraps the master key and
 * touches no data.
 *
 * Secrets are wiped by the functions that hold them (OPENSSL_cleanse); the
 * caller wipes what it is given (crypt_keys_clear, crypt_passphrase_free, or
 * OPENSSL_cleanse on a master key). Functions returning int give 0 or -errno,
 * fill ret_* out-parameters only on success, and give -ENOMEM or -EIO when
 * OpenSSL or the random generator fails. The void functions abort (a
 * PGBAKFS_CHECK) only when OpenSSL cannot run at all, like chunk_hash().
 */
#pragma once

#include "common/common.h"

#define CRYPT_KEY_LEN 32
#define CRYPT_NONCE_LEN 12
#define CRYPT_TAG_LEN 16
/* What sealing adds to a buffer: the nonce in front, the tag behind */
#define CRYPT_OVERHEAD (CRYPT_NONCE_LEN + CRYPT_TAG_LEN)

/* The keys derived from the master key (HKDF-SHA-256, no salt, info below) */
typedef struct CryptKeys {
	uint8_t data[CRYPT_KEY_LEN]; /* "pgbakfs data v1": chunk sealing */
	uint8_t id[CRYPT_KEY_LEN];   /* "pgbakfs id v1": HMAC chunk ids */
	uint8_t meta[CRYPT_KEY_LEN]; /* "pgbakfs meta v1": catalog, manifests (WAL: data) */
} CryptKeys;

/*
 * scrypt parameters: n a power of two >= 1024, r and p >= 1, and
 * 128 * n * r * p (scrypt's memory when its p lanes run at once, and a bound
 * on its time) at most 1 GiB.
 */
typedef struct CryptKdfParams {
	uint64_t n;
	uint32_t r, p;
} CryptKdfParams;

/*
 * Create a key file: a random master key, wrapped (AES-256-GCM, AAD
 * "pgbakfs key v1") by a key derived from the passphrase with scrypt (random
 * 16-byte salt). params NULL: N=2^15, r=8, p=1 (32 MiB). Gives the master key
 * and the key file, a malloc'd NUL-terminated text (ret_len: its strlen):
 *
 *     # pgbakfs key file: do not edit
 *     version = 1
 *     kdf = scrypt
 *     n = 32768
 *     r = 8
 *     p = 1
 *     salt = <32 hex>
 *     nonce = <24 hex>
 *     wrapped = <96 hex: the wrapped key, then the tag>
 *
 * -EINVAL for an empty passphrase or params out of bounds.
 */
int crypt_keyfile_create(const char *pass, size_t pass_len, const CryptKdfParams *params,
			 uint8_t master[CRYPT_KEY_LEN], char **ret_text, size_t *ret_len);
/*
 * The master key from a key file (len bytes of text, no NUL needed).
 * -EKEYREJECTED when the tag does not match: a wrong passphrase, or a salt,
 * nonce, wrapped key or n/r/p damaged into other valid values (the file
 * cannot tell these apart). -EPROTONOSUPPORT for a version other than 1 or a
 * kdf other than scrypt; -EBADMSG for any other malformed text: a line
 * missing, repeated or unknown, a bad number or hex string, params out of
 * bounds. Blank lines, "#" comments, blanks around names and values and
 * "\r\n" line ends are accepted.
 */
int crypt_keyfile_unwrap(const char *text, size_t len, const char *pass, size_t pass_len,
			 uint8_t master[CRYPT_KEY_LEN]);
/*
 * A new key file holding the same master key under new_pass (new salt, new
 * nonce): the data sealed under the master key stays readable. params NULL:
 * the file's own. Errors of crypt_keyfile_unwrap (-EKEYREJECTED: old_pass is
 * wrong), and -EINVAL for an empty new_pass or params out of bounds.
 */
int crypt_keyfile_rewrap(const char *text, size_t len, const char *old_pass, size_t old_len,
			 const char *new_pass, size_t new_len, const CryptKdfParams *params,
			 char **ret_text, size_t *ret_len);

/* Derive the three keys from the master key. Deterministic, thread-safe. */
void crypt_keys_derive(const uint8_t master[CRYPT_KEY_LEN], CryptKeys *ret);
/* Wipe the keys. */
void crypt_keys_clear(CryptKeys *k);

/* HMAC-SHA-256 of buf under key (chunk ids: out is 32 bytes). Thread-safe. */
void crypt_hmac(const uint8_t key[CRYPT_KEY_LEN], const void *buf, size_t len, uint8_t out[32]);

/*
 * Seal len bytes with AES-256-GCM under key, binding aad (NULL/0: none):
 * out = nonce (12 random bytes) || ciphertext (len bytes) || tag (16 bytes).
 * out must hold len + CRYPT_OVERHEAD bytes and not overlap in; ret_len (may
 * be NULL) gets that length. -EFBIG beyond GCM's limit (64 GiB). A random
 * nonce per call: at most 2^32 seals per key. Thread-safe.
 */
int crypt_seal(const uint8_t key[CRYPT_KEY_LEN], const void *aad, size_t aad_len, const void *in,
	       size_t len, void *out, size_t *ret_len);
/*
 * Open what crypt_seal made, with the same key and aad: out must hold
 * len - CRYPT_OVERHEAD bytes and not overlap in; ret_len (may be NULL) gets
 * that length. -EBADMSG when anything does not match (bytes, tag, key, aad,
 * length); out is then wiped, so unauthenticated bytes never get out.
 * Thread-safe.
 */
int crypt_open(const uint8_t key[CRYPT_KEY_LEN], const void *aad, size_t aad_len, const void *in,
	       size_t len, void *out, size_t *ret_len);

/*
 * crypt_open in pieces, for what is too large to hold: begin with the
 * sealed bytes' nonce (their first CRYPT_NONCE_LEN) and tag (their last
 * CRYPT_TAG_LEN), update with the ciphertext between, in order, in pieces
 * of any size (out holds len bytes), then end: -EBADMSG when the tag does
 * not match. The bytes update wrote are unauthenticated until end returns
 * 0: the caller drops them otherwise. Free with crypt_open_stream_free
 * (accepts NULL). One stream per thread.
 */
typedef struct CryptOpenStream CryptOpenStream;
int crypt_open_stream_begin(const uint8_t key[CRYPT_KEY_LEN], const void *aad, size_t aad_len,
			    const uint8_t nonce[CRYPT_NONCE_LEN], const uint8_t tag[CRYPT_TAG_LEN],
			    CryptOpenStream **ret);
int crypt_open_stream_update(CryptOpenStream *s, const void *in, size_t len, void *out);
int crypt_open_stream_end(CryptOpenStream *s);
CryptOpenStream *crypt_open_stream_free(CryptOpenStream *s);

/*
 * The passphrase. From file when it is not NULL: it must be a regular file
 * with no permission bits for group or other (mode & 077 == 0), else -EPERM;
 * at most 64 KiB (-EFBIG); one trailing "\n" or "\r\n" is stripped; open
 * errors as -errno. Else from the environment variable PGBAKFS_PASSPHRASE,
 * taken as is; -ENOKEY when it is not set. -EINVAL when the passphrase is
 * empty. Gives a malloc'd NUL-terminated copy (ret_len: its length; it may
 * hold NUL bytes from a file); free it with crypt_passphrase_free. Reads the
 * environment: not safe against a concurrent setenv().
 */
int crypt_passphrase_load(const char *file, char **ret, size_t *ret_len);
/* Wipe and free a passphrase from crypt_passphrase_load; NULL is a no-op. */
void crypt_passphrase_free(char *p, size_t len);
