/*
 * Encryption primitives over OpenSSL 3's EVP interfaces. Every call makes
 * and frees its own OpenSSL contexts, so nothing is shared between threads;
 * keys and anything derived from them live on the stack and are wiped before
 * returning.
 */
#include "store/crypt.h"
#include "common/util.h"

#include <fcntl.h>
#include <inttypes.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define KEYFILE_VERSION 1
#define KEYFILE_SALT_LEN 16
#define KEYFILE_AAD "pgbakfs key v1"
/* the file is about 300 bytes; anything much longer is not a key file */
#define KEYFILE_MAX_LEN 4096
#define SEALED_MASTER_LEN (CRYPT_OVERHEAD + CRYPT_KEY_LEN)

#define SCRYPT_MAX_MEM (UINT64_C(1) << 30)
#define PASSPHRASE_MAX_LEN (64 * 1024)

/* EVP_CipherUpdate takes int lengths: longer buffers go in pieces */
#define GCM_PIECE (1 << 30)
/* NIST SP 800-38D: at most 2^39 - 256 bits of plaintext under one nonce */
#define GCM_MAX_LEN ((UINT64_C(1) << 36) - 32)

static const CryptKdfParams kdf_default = {.n = 32768, .r = 8, .p = 1};

/*
 * The bounds hold for a key file read from a repository too: whoever can
 * write the repository must not make an unwrap allocate or compute without
 * limit. OpenSSL's own rule, N < 2^(16 r), matters only for r < 4 here.
 */
static int kdf_params_check(const CryptKdfParams *k)
{
	const uint64_t max = SCRYPT_MAX_MEM / 128;

	if (k->n < 1024 || (k->n & (k->n - 1)) != 0 || k->r == 0 || k->p == 0)
		return -EINVAL;
	if (k->n > max / k->r || k->n * k->r > max / k->p)
		return -EINVAL;
	if (k->r < 4 && (k->n >> (16 * k->r)) != 0)
		return -EINVAL;
	return 0;
}

static int kdf_derive(const char *pass, size_t pass_len, const CryptKdfParams *k,
		      const uint8_t salt[KEYFILE_SALT_LEN], uint8_t kek[CRYPT_KEY_LEN])
{
	/* OpenSSL allocates 128 r (n + 2) for V and 128 r p for B; 1 MiB of slack */
	uint64_t maxmem = 128 * (uint64_t)k->r * (k->n + k->p + 2) + (1 << 20);

	if (EVP_PBE_scrypt(pass, pass_len, salt, KEYFILE_SALT_LEN, k->n, k->r, k->p, maxmem, kek,
			   CRYPT_KEY_LEN) != 1)
		return -ENOMEM;
	return 0;
}

/* out NULL: len bytes of AAD */
static int gcm_update(EVP_CIPHER_CTX *ctx, const void *in, size_t len, void *out)
{
	const uint8_t *p = in;
	uint8_t *o = out;

	while (len > 0) {
		int n = (int)MIN(len, (size_t)GCM_PIECE), m = 0;
		if (EVP_CipherUpdate(ctx, o, &m, p, n) != 1 || (o && m != n))
			return -EIO;
		p += n;
		if (o)
			o += n;
		len -= (size_t)n;
	}
	return 0;
}

static int gcm_begin(EVP_CIPHER_CTX *ctx, bool enc, const uint8_t key[CRYPT_KEY_LEN],
		     const uint8_t nonce[CRYPT_NONCE_LEN], const void *aad, size_t aad_len)
{
	/* GCM's default IV length is the 12 bytes we use */
	if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce, enc ? 1 : 0) != 1)
		return -EIO;
	return gcm_update(ctx, aad, aad_len, NULL);
}

/* gcm_begin to open, with the tag the end will be checked against */
static int gcm_open_begin(EVP_CIPHER_CTX *ctx, const uint8_t key[CRYPT_KEY_LEN],
			  const uint8_t nonce[CRYPT_NONCE_LEN], const uint8_t tag[CRYPT_TAG_LEN],
			  const void *aad, size_t aad_len)
{
	int r = gcm_begin(ctx, false, key, nonce, aad, aad_len);
	if (r == 0 && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, CRYPT_TAG_LEN, (void *)tag) != 1)
		r = -EIO;
	return r;
}

int crypt_seal(const uint8_t key[CRYPT_KEY_LEN], const void *aad, size_t aad_len, const void *in,
	       size_t len, void *out, size_t *ret_len)
{
	uint8_t *nonce = out, *ct = nonce + CRYPT_NONCE_LEN, *tag = ct + len;
	EVP_CIPHER_CTX *ctx;
	int r, m = 0;

	if (len > GCM_MAX_LEN)
		return -EFBIG;
	if (RAND_bytes(nonce, CRYPT_NONCE_LEN) != 1)
		return -EIO;
	ctx = EVP_CIPHER_CTX_new();
	if (!ctx)
		return -ENOMEM;
	r = gcm_begin(ctx, true, key, nonce, aad, aad_len);
	if (r == 0)
		r = gcm_update(ctx, in, len, ct);
	if (r == 0 && (EVP_CipherFinal_ex(ctx, tag, &m) != 1 ||
		       EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, CRYPT_TAG_LEN, tag) != 1))
		r = -EIO;
	EVP_CIPHER_CTX_free(ctx);
	if (r < 0)
		return r;
	if (ret_len)
		*ret_len = len + CRYPT_OVERHEAD;
	return 0;
}

int crypt_open(const uint8_t key[CRYPT_KEY_LEN], const void *aad, size_t aad_len, const void *in,
	       size_t len, void *out, size_t *ret_len)
{
	const uint8_t *nonce = in, *ct = nonce + CRYPT_NONCE_LEN;
	EVP_CIPHER_CTX *ctx;
	size_t n;
	int r, m = 0;

	if (len < CRYPT_OVERHEAD || len - CRYPT_OVERHEAD > GCM_MAX_LEN)
		return -EBADMSG;
	n = len - CRYPT_OVERHEAD;
	ctx = EVP_CIPHER_CTX_new();
	if (!ctx)
		return -ENOMEM;
	r = gcm_open_begin(ctx, key, nonce, ct + n, aad, aad_len);
	if (r == 0)
		r = gcm_update(ctx, ct, n, out);
	/* the tag is checked here, after the bytes were decrypted into out */
	if (r == 0 && EVP_CipherFinal_ex(ctx, (uint8_t *)out + n, &m) != 1)
		r = -EBADMSG;
	EVP_CIPHER_CTX_free(ctx);
	if (r < 0) {
		OPENSSL_cleanse(out, n);
		return r;
	}
	if (ret_len)
		*ret_len = n;
	return 0;
}

struct CryptOpenStream {
	EVP_CIPHER_CTX *ctx;
	uint64_t len; /* ciphertext bytes so far: GCM_MAX_LEN at most */
};

int crypt_open_stream_begin(const uint8_t key[CRYPT_KEY_LEN], const void *aad, size_t aad_len,
			    const uint8_t nonce[CRYPT_NONCE_LEN], const uint8_t tag[CRYPT_TAG_LEN],
			    CryptOpenStream **ret)
{
	CryptOpenStream *s = calloc(1, sizeof(*s));
	int r = s && (s->ctx = EVP_CIPHER_CTX_new()) ? 0 : -ENOMEM;

	if (r == 0)
		r = gcm_open_begin(s->ctx, key, nonce, tag, aad, aad_len);
	if (r < 0) {
		crypt_open_stream_free(s);
		return r;
	}
	*ret = s;
	return 0;
}

int crypt_open_stream_update(CryptOpenStream *s, const void *in, size_t len, void *out)
{
	if (len > GCM_MAX_LEN - MIN(s->len, (uint64_t)GCM_MAX_LEN))
		return -EBADMSG;
	s->len += len;
	return gcm_update(s->ctx, in, len, out);
}

int crypt_open_stream_end(CryptOpenStream *s)
{
	uint8_t last[16];
	int m = 0;
	return EVP_CipherFinal_ex(s->ctx, last, &m) == 1 ? 0 : -EBADMSG;
}

CryptOpenStream *crypt_open_stream_free(CryptOpenStream *s)
{
	if (s) {
		EVP_CIPHER_CTX_free(s->ctx);
		free(s);
	}
	return NULL;
}

void crypt_hmac(const uint8_t key[CRYPT_KEY_LEN], const void *buf, size_t len, uint8_t out[32])
{
	unsigned n = 0;
	PGBAKFS_CHECK(HMAC(EVP_sha256(), key, CRYPT_KEY_LEN, buf, len, out, &n) != NULL && n == 32);
}

static void hkdf(const uint8_t master[CRYPT_KEY_LEN], const char *info, uint8_t out[CRYPT_KEY_LEN])
{
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, OSSL_KDF_NAME_HKDF, NULL);
	EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)master,
						  CRYPT_KEY_LEN),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, strlen(info)),
		OSSL_PARAM_construct_end(),
	};

	PGBAKFS_CHECK(ctx != NULL && EVP_KDF_derive(ctx, out, CRYPT_KEY_LEN, params) == 1);
	EVP_KDF_CTX_free(ctx);
	EVP_KDF_free(kdf);
}

void crypt_keys_derive(const uint8_t master[CRYPT_KEY_LEN], CryptKeys *ret)
{
	hkdf(master, "pgbakfs data v1", ret->data);
	hkdf(master, "pgbakfs id v1", ret->id);
	hkdf(master, "pgbakfs meta v1", ret->meta);
}

void crypt_keys_clear(CryptKeys *k)
{
	OPENSSL_cleanse(k, sizeof(*k));
}

/* A key file, parsed: sealed is nonce || wrapped key || tag, as crypt_open takes it. */
typedef struct KeyFile {
	CryptKdfParams kdf;
	uint8_t salt[KEYFILE_SALT_LEN];
	uint8_t sealed[SEALED_MASTER_LEN];
} KeyFile;

#define KEYFILE_FORMAT                                                                         \
	"# pgbakfs key file: do not edit\n"                                                    \
	"version = %d\n"                                                                       \
	"kdf = scrypt\n"                                                                       \
	"n = %" PRIu64 "\n"                                                                    \
	"r = %" PRIu32 "\n"                                                                    \
	"p = %" PRIu32 "\n"                                                                    \
	"salt = %s\n"                                                                          \
	"nonce = %s\n"                                                                         \
	"wrapped = %s\n"

static int keyfile_format(const KeyFile *kf, char **ret_text, size_t *ret_len)
{
	char salt[2 * KEYFILE_SALT_LEN + 1], nonce[2 * CRYPT_NONCE_LEN + 1],
		wrapped[2 * (CRYPT_KEY_LEN + CRYPT_TAG_LEN) + 1];
	char *s;
	int n;

	hex_encode(kf->salt, KEYFILE_SALT_LEN, salt);
	hex_encode(kf->sealed, CRYPT_NONCE_LEN, nonce);
	hex_encode(kf->sealed + CRYPT_NONCE_LEN, CRYPT_KEY_LEN + CRYPT_TAG_LEN, wrapped);
	n = snprintf(NULL, 0, KEYFILE_FORMAT, KEYFILE_VERSION, kf->kdf.n, kf->kdf.r, kf->kdf.p, salt,
		     nonce, wrapped);
	if (n < 0)
		return -EIO;
	s = malloc((size_t)n + 1);
	if (!s)
		return -ENOMEM;
	snprintf(s, (size_t)n + 1, KEYFILE_FORMAT, KEYFILE_VERSION, kf->kdf.n, kf->kdf.r, kf->kdf.p,
		 salt, nonce, wrapped);
	*ret_text = s;
	*ret_len = (size_t)n;
	return 0;
}

/* A key file for master under pass: fresh salt, fresh nonce. */
static int keyfile_wrap(const char *pass, size_t pass_len, const CryptKdfParams *k,
			const uint8_t master[CRYPT_KEY_LEN], char **ret_text, size_t *ret_len)
{
	KeyFile kf = {.kdf = *k};
	uint8_t kek[CRYPT_KEY_LEN];
	int r;

	if (!pass || pass_len == 0)
		return -EINVAL;
	r = kdf_params_check(k);
	if (r < 0)
		return r;
	if (RAND_bytes(kf.salt, KEYFILE_SALT_LEN) != 1)
		return -EIO;
	r = kdf_derive(pass, pass_len, k, kf.salt, kek);
	if (r == 0)
		r = crypt_seal(kek, KEYFILE_AAD, strlen(KEYFILE_AAD), master, CRYPT_KEY_LEN,
			       kf.sealed, NULL);
	OPENSSL_cleanse(kek, sizeof(kek));
	if (r < 0)
		return r;
	return keyfile_format(&kf, ret_text, ret_len);
}

static int keyfile_unwrap(const KeyFile *kf, const char *pass, size_t pass_len,
			  uint8_t master[CRYPT_KEY_LEN])
{
	uint8_t kek[CRYPT_KEY_LEN], m[CRYPT_KEY_LEN];
	int r = kdf_derive(pass, pass_len, &kf->kdf, kf->salt, kek);

	if (r == 0) {
		r = crypt_open(kek, KEYFILE_AAD, strlen(KEYFILE_AAD), kf->sealed,
			       sizeof(kf->sealed), m, NULL);
		if (r == -EBADMSG)
			r = -EKEYREJECTED;
	}
	if (r == 0)
		memcpy(master, m, CRYPT_KEY_LEN);
	OPENSSL_cleanse(kek, sizeof(kek));
	OPENSSL_cleanse(m, sizeof(m));
	return r;
}

enum { F_VERSION, F_KDF, F_N, F_R, F_P, F_SALT, F_NONCE, F_WRAPPED, N_FIELDS };
static const char *const keyfile_fields[N_FIELDS] = {"version", "kdf",  "n",     "r",
						     "p",       "salt", "nonce", "wrapped"};

static char *trim(char *s)
{
	size_t n;
	while (*s == ' ' || *s == '\t')
		s++;
	n = strlen(s);
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
		s[--n] = '\0';
	return s;
}

/*
 * One line: blank, "# comment" or "name = value". Names other than ours are
 * noted, not refused yet: a later version may add some, and the version line
 * decides first.
 */
static int keyfile_line(char *line, const char *val[N_FIELDS], bool *unknown)
{
	char *eq, *name;

	line = trim(line);
	if (!*line || *line == '#')
		return 0;
	eq = strchr(line, '=');
	if (!eq)
		return -EBADMSG;
	*eq = '\0';
	name = trim(line);
	for (size_t i = 0; i < N_FIELDS; i++) {
		if (strcmp(name, keyfile_fields[i]) == 0) {
			if (val[i])
				return -EBADMSG;
			val[i] = trim(eq + 1);
			return 0;
		}
	}
	*unknown = true;
	return 0;
}

/* Decimal digits only: no sign, no blanks, no overflow. */
static int parse_u64(const char *s, uint64_t max, uint64_t *ret)
{
	uint64_t v = 0;

	if (!*s)
		return -EBADMSG;
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || v > (max - (uint64_t)(*s - '0')) / 10)
			return -EBADMSG;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*ret = v;
	return 0;
}

static int keyfile_values(const char *val[N_FIELDS], KeyFile *ret)
{
	uint64_t n, r, p;

	for (size_t i = 0; i < N_FIELDS; i++)
		if (!val[i])
			return -EBADMSG;
	if (parse_u64(val[F_N], UINT64_MAX, &n) < 0 || parse_u64(val[F_R], UINT32_MAX, &r) < 0 ||
	    parse_u64(val[F_P], UINT32_MAX, &p) < 0)
		return -EBADMSG;
	ret->kdf = (CryptKdfParams){.n = n, .r = (uint32_t)r, .p = (uint32_t)p};
	if (kdf_params_check(&ret->kdf) < 0)
		return -EBADMSG;
	if (hex_decode(val[F_SALT], ret->salt, KEYFILE_SALT_LEN) < 0 ||
	    hex_decode(val[F_NONCE], ret->sealed, CRYPT_NONCE_LEN) < 0 ||
	    hex_decode(val[F_WRAPPED], ret->sealed + CRYPT_NONCE_LEN,
		       CRYPT_KEY_LEN + CRYPT_TAG_LEN) < 0)
		return -EBADMSG;
	return 0;
}

static int keyfile_parse(const char *text, size_t len, KeyFile *ret)
{
	_cleanup_free_ char *buf = NULL;
	const char *val[N_FIELDS] = {0};
	bool unknown = false;
	uint64_t version;
	KeyFile kf;
	char *line, *next;
	int r;

	if (len > KEYFILE_MAX_LEN || memchr(text, '\0', len))
		return -EBADMSG;
	buf = malloc(len + 1);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, text, len);
	buf[len] = '\0';
	for (line = buf; line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		r = keyfile_line(line, val, &unknown);
		if (r < 0)
			return r;
	}
	if (!val[F_VERSION] || parse_u64(val[F_VERSION], UINT64_MAX, &version) < 0)
		return -EBADMSG;
	if (version != KEYFILE_VERSION)
		return -EPROTONOSUPPORT;
	if (unknown || !val[F_KDF])
		return -EBADMSG;
	if (strcmp(val[F_KDF], "scrypt") != 0)
		return -EPROTONOSUPPORT;
	r = keyfile_values(val, &kf);
	if (r < 0)
		return r;
	*ret = kf;
	return 0;
}

int crypt_keyfile_create(const char *pass, size_t pass_len, const CryptKdfParams *params,
			 uint8_t master[CRYPT_KEY_LEN], char **ret_text, size_t *ret_len)
{
	uint8_t m[CRYPT_KEY_LEN];
	int r;

	if (RAND_bytes(m, CRYPT_KEY_LEN) != 1)
		return -EIO;
	r = keyfile_wrap(pass, pass_len, params ? params : &kdf_default, m, ret_text, ret_len);
	if (r == 0)
		memcpy(master, m, CRYPT_KEY_LEN);
	OPENSSL_cleanse(m, sizeof(m));
	return r;
}

int crypt_keyfile_unwrap(const char *text, size_t len, const char *pass, size_t pass_len,
			 uint8_t master[CRYPT_KEY_LEN])
{
	KeyFile kf;
	int r = keyfile_parse(text, len, &kf);

	if (r < 0)
		return r;
	return keyfile_unwrap(&kf, pass, pass_len, master);
}

int crypt_keyfile_rewrap(const char *text, size_t len, const char *old_pass, size_t old_len,
			 const char *new_pass, size_t new_len, const CryptKdfParams *params,
			 char **ret_text, size_t *ret_len)
{
	uint8_t master[CRYPT_KEY_LEN];
	KeyFile kf;
	int r = keyfile_parse(text, len, &kf);

	if (r < 0)
		return r;
	/* refuse bad new arguments before paying for the old scrypt */
	if (!new_pass || new_len == 0 || (params && kdf_params_check(params) < 0))
		return -EINVAL;
	r = keyfile_unwrap(&kf, old_pass, old_len, master);
	if (r == 0)
		r = keyfile_wrap(new_pass, new_len, params ? params : &kf.kdf, master, ret_text,
				 ret_len);
	OPENSSL_cleanse(master, sizeof(master));
	return r;
}

static void passphrase_wipe(char *p, size_t n)
{
	OPENSSL_cleanse(p, n);
	free(p);
}

static int passphrase_read(const char *file, char **ret, size_t *ret_len)
{
	/* O_NONBLOCK: a FIFO must not hang the open; it is refused just after */
	_cleanup_close_ int fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	struct stat st;
	size_t len;
	ssize_t n;
	char *buf;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || (st.st_mode & 077) != 0)
		return -EPERM;
	if (st.st_size > PASSPHRASE_MAX_LEN)
		return -EFBIG;
	/* one allocation of the final size: a realloc would leave copies behind */
	buf = malloc((size_t)st.st_size + 1);
	if (!buf)
		return -ENOMEM;
	n = pread_full(fd, buf, (size_t)st.st_size, 0);
	if (n < 0) {
		passphrase_wipe(buf, (size_t)st.st_size + 1);
		return (int)n;
	}
	len = (size_t)n;
	if (len > 0 && buf[len - 1] == '\n') {
		len--;
		if (len > 0 && buf[len - 1] == '\r')
			len--;
	}
	buf[len] = '\0';
	*ret = buf;
	*ret_len = len;
	return 0;
}

int crypt_passphrase_load(const char *file, char **ret, size_t *ret_len)
{
	char *p = NULL;
	size_t len = 0;

	if (file) {
		int r = passphrase_read(file, &p, &len);
		if (r < 0)
			return r;
	} else {
		const char *env = getenv("PGBAKFS_PASSPHRASE");
		if (!env)
			return -ENOKEY;
		len = strlen(env);
		p = malloc(len + 1);
		if (!p)
			return -ENOMEM;
		memcpy(p, env, len + 1);
	}
	if (len == 0) {
		passphrase_wipe(p, 1);
		return -EINVAL;
	}
	*ret = p;
	*ret_len = len;
	return 0;
}

void crypt_passphrase_free(char *p, size_t len)
{
	if (p)
		passphrase_wipe(p, len);
}
