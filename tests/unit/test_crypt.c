/*
 * Unit tests for store/crypt.h: key files and their damage, key derivation,
 * HMAC, sealing, passphrase loading.
 *
 * Sources of the expected values:
 *  - HMAC: RFC 4231 test cases 1 and 2. Their keys (20 and 4 bytes) are
 *    shorter than SHA-256's block, which HMAC pads with zeros, so the same
 *    keys zero-padded to 32 bytes give the published outputs. The 32-byte
 *    key vectors come from
 *    `openssl dgst -sha256 -mac HMAC -macopt hexkey:000102...1f` and agree
 *    with Python's hmac module.
 *  - HKDF: `openssl kdf -keylen 32 -kdfopt digest:SHA256 -kdfopt hexkey:...
 *    -kdfopt "info:pgbakfs data v1" HKDF` (no salt), checked against an
 *    RFC 5869 extract-and-expand written with Python's hmac module.
 *  - the key file and the sealed buffer: made with Python's hashlib.scrypt
 *    and the cryptography package's AESGCM, so they pin the formats
 *    independently of this code.
 *
 * Most key files use n=1024 to keep the test fast under valgrind; exactly
 * one uses the default parameters.
 */
#include "tests/unit/test.h"

#include "store/crypt.h"

#include <fcntl.h>
#include <openssl/crypto.h>

#define PASS "correct horse battery staple"
#define PASS_LEN (sizeof(PASS) - 1)

static const CryptKdfParams fast = {.n = 1024, .r = 1, .p = 1};

static void hex(const uint8_t *b, size_t n, char *out)
{
	hex_encode(b, n, out);
}

static bool all_zero(const void *buf, size_t n)
{
	const uint8_t *p = buf;
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* The value of "name = value" in a key file, into out. */
static const char *field(const char *text, const char *name, char *out, size_t len)
{
	char prefix[64];
	const char *p, *e;
	test_fmt(prefix, sizeof(prefix), "\n%s = ", name);
	p = strstr(text, prefix);
	if (!p) {
		out[0] = '\0';
		return out;
	}
	p += strlen(prefix);
	e = strchr(p, '\n');
	snprintf(out, len, "%.*s", (int)(e - p), p);
	return out;
}

static void test_keyfile_round_trip(void)
{
	uint8_t m1[CRYPT_KEY_LEN], m2[CRYPT_KEY_LEN], got[CRYPT_KEY_LEN];
	char *t1 = NULL, *t2 = NULL, s1[64], s2[64];
	size_t l1 = 0, l2 = 0;

	if (!CHECK_EQ_INT(crypt_keyfile_create(PASS, PASS_LEN, &fast, m1, &t1, &l1), 0))
		return;
	CHECK_EQ_INT(l1, strlen(t1));
	CHECK(strncmp(t1,
		      "# pgbakfs key file: do not edit\nversion = 1\nkdf = scrypt\nn = 1024\nr = 1\n"
		      "p = 1\nsalt = ",
		      strlen("# pgbakfs key file: do not edit\nversion = 1\nkdf = scrypt\nn = 1024\n"
			     "r = 1\np = 1\nsalt = ")) == 0);
	CHECK_EQ_INT(strlen(field(t1, "salt", s1, sizeof(s1))), 32);
	CHECK_EQ_INT(strlen(field(t1, "nonce", s1, sizeof(s1))), 24);
	{
		char w[128];
		CHECK_EQ_INT(strlen(field(t1, "wrapped", w, sizeof(w))), 96);
	}
	CHECK(t1[l1 - 1] == '\n');

	memset(got, 0xee, sizeof(got));
	CHECK_EQ_INT(crypt_keyfile_unwrap(t1, l1, PASS, PASS_LEN, got), 0);
	CHECK(memcmp(got, m1, CRYPT_KEY_LEN) == 0);

	/* wrong passphrases, a prefix and a longer one among them; master untouched */
	memset(got, 0xee, sizeof(got));
	CHECK_EQ_INT(crypt_keyfile_unwrap(t1, l1, "wrong", 5, got), -EKEYREJECTED);
	CHECK_EQ_INT(crypt_keyfile_unwrap(t1, l1, PASS, PASS_LEN - 1, got), -EKEYREJECTED);
	CHECK_EQ_INT(crypt_keyfile_unwrap(t1, l1, PASS "!", PASS_LEN + 1, got), -EKEYREJECTED);
	CHECK_EQ_INT(crypt_keyfile_unwrap(t1, l1, "", 0, got), -EKEYREJECTED);
	CHECK(got[0] == 0xee && got[CRYPT_KEY_LEN - 1] == 0xee);

	/* the same passphrase again: another master key, salt and nonce */
	if (CHECK_EQ_INT(crypt_keyfile_create(PASS, PASS_LEN, &fast, m2, &t2, &l2), 0)) {
		CHECK(memcmp(m1, m2, CRYPT_KEY_LEN) != 0);
		CHECK(strcmp(field(t1, "salt", s1, sizeof(s1)), field(t2, "salt", s2, sizeof(s2))));
		CHECK(strcmp(field(t1, "nonce", s1, sizeof(s1)),
			     field(t2, "nonce", s2, sizeof(s2))));
	}

	/* bad arguments */
	CHECK_EQ_INT(crypt_keyfile_create("", 0, &fast, m2, &t2, &l2), -EINVAL);
	{
		static const CryptKdfParams bad[] = {
			{0, 8, 1},		/* n too small */
			{512, 8, 1},		/* n too small */
			{1000, 8, 1},		/* not a power of two */
			{3072, 8, 1},		/* not a power of two */
			{1024, 0, 1},		/* r zero */
			{1024, 8, 0},		/* p zero */
			{1 << 21, 8, 1},	/* 2 GiB */
			{1 << 20, 16, 1},	/* 2 GiB */
			{1 << 20, 8, 2},	/* 2 GiB */
			{1024, 8, 1025},	/* 128 n r p > 1 GiB */
			{UINT64_C(1) << 63, 1, 1}, /* overflows */
			{1 << 16, 1, 1},	/* OpenSSL: n < 2^(16 r) */
			{1024, UINT32_MAX, UINT32_MAX},
		};
		for (size_t i = 0; i < ELEMENTSOF(bad); i++)
			if (!CHECK_EQ_INT(crypt_keyfile_create(PASS, PASS_LEN, &bad[i], m2, &t2, &l2),
					  -EINVAL))
				fprintf(stderr, "  params %zu\n", i);
	}
	OPENSSL_cleanse(m1, sizeof(m1));
	OPENSSL_cleanse(m2, sizeof(m2));
	free(t1);
	free(t2);
}

/* A key file made by Python (hashlib.scrypt, cryptography's AESGCM). */
static void test_keyfile_known(void)
{
	static const char text[] =
		"# pgbakfs key file: do not edit\n"
		"version = 1\n"
		"kdf = scrypt\n"
		"n = 1024\n"
		"r = 8\n"
		"p = 1\n"
		"salt = a0a1a2a3a4a5a6a7a8a9aaabacadaeaf\n"
		"nonce = c0c1c2c3c4c5c6c7c8c9cacb\n"
		"wrapped = 597385342bf57bb0e7a3b7068c962b6c26d8aba3eac9d857d421f59122930ab8"
		"df17726b36f8f85fafbb0131c2f67de4\n";
	uint8_t m[CRYPT_KEY_LEN];
	char h[2 * CRYPT_KEY_LEN + 1];

	if (CHECK_EQ_INT(crypt_keyfile_unwrap(text, strlen(text), PASS, PASS_LEN, m), 0)) {
		hex(m, CRYPT_KEY_LEN, h);
		CHECK_EQ_STR(h, "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f");
	}
	CHECK_EQ_INT(crypt_keyfile_unwrap(text, strlen(text), "Correct horse battery staple",
					  PASS_LEN, m),
		     -EKEYREJECTED);
}

/*
 * The one test with the default scrypt parameters (32 MiB, N=2^15): one
 * scrypt takes 2.5 s under valgrind, so it creates but does not unwrap; the
 * unwrap runs the same derivation, and only the parameters differ.
 */
static void test_keyfile_default_params(void)
{
	uint8_t m[CRYPT_KEY_LEN];
	char *t = NULL, *none = NULL;
	size_t len = 0, none_len = 0;

	if (!CHECK_EQ_INT(crypt_keyfile_create(PASS, PASS_LEN, NULL, m, &t, &len), 0))
		return;
	CHECK(strstr(t, "\nkdf = scrypt\nn = 32768\nr = 8\np = 1\n") != NULL);
	CHECK(!all_zero(m, sizeof(m)));
	/* it parses: rewrap refuses the empty new passphrase only after reading the file */
	CHECK_EQ_INT(crypt_keyfile_rewrap(t, len, PASS, PASS_LEN, "", 0, NULL, &none, &none_len),
		     -EINVAL);
	OPENSSL_cleanse(m, sizeof(m));
	free(t);
}

typedef struct Damage {
	const char *what;
	const char *field; /* the line to change, by name; "#" is the comment */
	const char *line;  /* its replacement (may be several lines); NULL: drop it */
	int flip_at;       /* >= 0: change this digit of the value instead ... */
	char flip_to;      /* ... into this; 0: into another hex digit */
	int want;
} Damage;

/* text with the damage done, malloc'd */
static char *damage(const char *text, const Damage *d)
{
	char prefix[64], *out = xmalloc(strlen(text) + 1024);
	const char *p, *e;

	if (strcmp(d->field, "#") == 0) {
		p = text;
	} else {
		test_fmt(prefix, sizeof(prefix), "\n%s = ", d->field);
		p = strstr(text, prefix);
		PGBAKFS_CHECK(p != NULL);
		p++;
	}
	e = strchr(p, '\n') + 1;
	memcpy(out, text, (size_t)(p - text));
	out[p - text] = '\0';
	if (d->flip_at >= 0) {
		char *v;
		strncat(out, p, (size_t)(e - p));
		v = strchr(out + (p - text), '=') + 2 + d->flip_at;
		*v = d->flip_to ? d->flip_to : (*v == '0' ? '1' : '0');
	} else if (d->line) {
		strcat(out, d->line);
		strcat(out, "\n");
	}
	strcat(out, e);
	return out;
}

static void test_keyfile_damage(void)
{
	static const Damage cases[] = {
		{"no comment", "#", NULL, -1, 0, 0},
		{"spaces, blank lines, CRLF", "kdf", "\r\n  kdf\t=  scrypt \r\n", -1, 0, 0},
		{"no spaces", "n", "n=1024", -1, 0, 0},
		{"leading zeros", "p", "p = 001", -1, 0, 0},
		{"comment in the middle", "r", "# hello\nr = 1", -1, 0, 0},
		{"no version", "version", NULL, -1, 0, -EBADMSG},
		{"no kdf", "kdf", NULL, -1, 0, -EBADMSG},
		{"no n", "n", NULL, -1, 0, -EBADMSG},
		{"no r", "r", NULL, -1, 0, -EBADMSG},
		{"no p", "p", NULL, -1, 0, -EBADMSG},
		{"no salt", "salt", NULL, -1, 0, -EBADMSG},
		{"no nonce", "nonce", NULL, -1, 0, -EBADMSG},
		{"no wrapped", "wrapped", NULL, -1, 0, -EBADMSG},
		{"version 2", "version", "version = 2", -1, 0, -EPROTONOSUPPORT},
		{"version 0", "version", "version = 0", -1, 0, -EPROTONOSUPPORT},
		{"salt renamed", "salt", "salt2 = x", -1, 0, -EBADMSG},
		{"version junk", "version", "version = 1x", -1, 0, -EBADMSG},
		{"version negative", "version", "version = -1", -1, 0, -EBADMSG},
		{"version empty", "version", "version =", -1, 0, -EBADMSG},
		{"version twice", "version", "version = 1\nversion = 1", -1, 0, -EBADMSG},
		{"kdf argon2id", "kdf", "kdf = argon2id", -1, 0, -EPROTONOSUPPORT},
		{"kdf empty", "kdf", "kdf = ", -1, 0, -EPROTONOSUPPORT},
		{"unknown field", "p", "p = 1\ncipher = aes", -1, 0, -EBADMSG},
		{"no equals sign", "p", "p 1", -1, 0, -EBADMSG},
		{"no name", "p", "= 1", -1, 0, -EBADMSG},
		{"n not a power of two", "n", "n = 1000", -1, 0, -EBADMSG},
		{"n too small", "n", "n = 512", -1, 0, -EBADMSG},
		{"n too large", "n", "n = 1073741824", -1, 0, -EBADMSG},
		{"n overflows", "n", "n = 18446744073709551616", -1, 0, -EBADMSG},
		{"n hex", "n", "n = 0x400", -1, 0, -EBADMSG},
		{"r zero", "r", "r = 0", -1, 0, -EBADMSG},
		{"r overflows", "r", "r = 4294967304", -1, 0, -EBADMSG},
		{"p zero", "p", "p = 0", -1, 0, -EBADMSG},
		{"p over 1 GiB", "p", "p = 8193", -1, 0, -EBADMSG},
		{"n over OpenSSL's bound", "n", "n = 65536", -1, 0, -EBADMSG},
		{"salt short", "salt", "salt = a0a1a2a3a4a5a6a7a8a9aaabacadae", -1, 0, -EBADMSG},
		{"salt long", "salt", "salt = a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0", -1, 0, -EBADMSG},
		{"salt not hex", "salt", NULL, 5, 'g', -EBADMSG},
		{"nonce not hex", "nonce", NULL, 0, 'x', -EBADMSG},
		{"wrapped not hex", "wrapped", NULL, 95, 'z', -EBADMSG},
		/* damage into valid values: the tag is all that can tell */
		{"salt digit", "salt", NULL, 0, 0, -EKEYREJECTED},
		{"salt last digit", "salt", NULL, 31, 0, -EKEYREJECTED},
		{"nonce digit", "nonce", NULL, 7, 0, -EKEYREJECTED},
		{"wrapped key digit", "wrapped", NULL, 3, 0, -EKEYREJECTED},
		{"wrapped tag digit", "wrapped", NULL, 95, 0, -EKEYREJECTED},
		{"other n", "n", "n = 2048", -1, 0, -EKEYREJECTED},
		{"other r", "r", "r = 4", -1, 0, -EKEYREJECTED},
		{"other p", "p", "p = 2", -1, 0, -EKEYREJECTED},
	};
	uint8_t m[CRYPT_KEY_LEN], got[CRYPT_KEY_LEN];
	char *t = NULL;
	size_t len = 0;

	if (!CHECK_EQ_INT(crypt_keyfile_create(PASS, PASS_LEN, &fast, m, &t, &len), 0))
		return;
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		char *bad = damage(t, &cases[i]);
		memset(got, 0xee, sizeof(got));
		int r = crypt_keyfile_unwrap(bad, strlen(bad), PASS, PASS_LEN, got);
		if (!CHECK_EQ_INT(r, cases[i].want))
			fprintf(stderr, "  case \"%s\":\n%s", cases[i].what, bad);
		if (r == 0)
			CHECK(memcmp(got, m, CRYPT_KEY_LEN) == 0);
		else
			CHECK(got[0] == 0xee);
		free(bad);
	}
	{
		/* hex digits in upper case read the same */
		char *up = xstrdup(t);
		for (char *p = strstr(up, "salt = ") + 7; *p != '\n'; p++)
			if (*p >= 'a' && *p <= 'f')
				*p = (char)(*p - 'a' + 'A');
		CHECK_EQ_INT(crypt_keyfile_unwrap(up, strlen(up), PASS, PASS_LEN, got), 0);
		free(up);
	}
	{
		/* whole-text damage: truncated, empty, NUL inside, version 2 alone, huge */
		char *big = xmalloc(8192);
		CHECK_EQ_INT(crypt_keyfile_unwrap(t, len / 2, PASS, PASS_LEN, got), -EBADMSG);
		CHECK_EQ_INT(crypt_keyfile_unwrap(t, len - 5, PASS, PASS_LEN, got), -EBADMSG);
		CHECK_EQ_INT(crypt_keyfile_unwrap(t, len - 1, PASS, PASS_LEN, got), 0);
		CHECK_EQ_INT(crypt_keyfile_unwrap(t, 0, PASS, PASS_LEN, got), -EBADMSG);
		CHECK_EQ_INT(crypt_keyfile_unwrap(t, len + 1, PASS, PASS_LEN, got), -EBADMSG);
		{
			const char *v2 = "version = 2\nkdf = argon2id\nm = 64M\n";
			CHECK_EQ_INT(crypt_keyfile_unwrap(v2, strlen(v2), PASS, PASS_LEN, got),
				     -EPROTONOSUPPORT);
		}
		CHECK_EQ_INT(crypt_keyfile_unwrap("garbage", 7, PASS, PASS_LEN, got), -EBADMSG);
		memcpy(big, t, len);
		memset(big + len, '\n', 8192 - len);
		CHECK_EQ_INT(crypt_keyfile_unwrap(big, 8192, PASS, PASS_LEN, got), -EBADMSG);
		free(big);
	}
	free(t);
}

static void test_keyfile_rewrap(void)
{
	uint8_t m[CRYPT_KEY_LEN], got[CRYPT_KEY_LEN];
	char *t = NULL, *t2 = NULL, *t3 = NULL, a[128], b[128];
	size_t len = 0, len2 = 0, len3 = 0;

	if (!CHECK_EQ_INT(crypt_keyfile_create(PASS, PASS_LEN, &fast, m, &t, &len), 0))
		return;
	if (!CHECK_EQ_INT(crypt_keyfile_rewrap(t, len, PASS, PASS_LEN, "new pass", 8, NULL, &t2,
					       &len2),
			  0))
		goto out;
	CHECK_EQ_INT(len2, strlen(t2));
	CHECK_EQ_INT(crypt_keyfile_unwrap(t2, len2, "new pass", 8, got), 0);
	CHECK(memcmp(got, m, CRYPT_KEY_LEN) == 0);
	CHECK_EQ_INT(crypt_keyfile_unwrap(t2, len2, PASS, PASS_LEN, got), -EKEYREJECTED);
	CHECK(strcmp(field(t, "salt", a, sizeof(a)), field(t2, "salt", b, sizeof(b))) != 0);
	CHECK(strcmp(field(t, "nonce", a, sizeof(a)), field(t2, "nonce", b, sizeof(b))) != 0);
	CHECK(strcmp(field(t, "wrapped", a, sizeof(a)), field(t2, "wrapped", b, sizeof(b))) != 0);
	CHECK_EQ_STR(field(t2, "n", b, sizeof(b)), "1024");
	/* the old file still opens with the old passphrase: it is the caller's to replace */
	CHECK_EQ_INT(crypt_keyfile_unwrap(t, len, PASS, PASS_LEN, got), 0);

	/* new parameters; the same passphrase again still gets a new salt */
	{
		const CryptKdfParams p2 = {.n = 2048, .r = 4, .p = 2};
		if (CHECK_EQ_INT(crypt_keyfile_rewrap(t2, len2, "new pass", 8, "new pass", 8, &p2,
						      &t3, &len3),
				 0)) {
			CHECK_EQ_STR(field(t3, "n", b, sizeof(b)), "2048");
			CHECK_EQ_STR(field(t3, "r", b, sizeof(b)), "4");
			CHECK_EQ_STR(field(t3, "p", b, sizeof(b)), "2");
			CHECK(strcmp(field(t2, "salt", a, sizeof(a)),
				     field(t3, "salt", b, sizeof(b))) != 0);
			CHECK_EQ_INT(crypt_keyfile_unwrap(t3, len3, "new pass", 8, got), 0);
			CHECK(memcmp(got, m, CRYPT_KEY_LEN) == 0);
		}
	}

	/* refused: nothing is returned */
	{
		const CryptKdfParams bad = {.n = 1000, .r = 8, .p = 1};
		char *none = NULL;
		size_t none_len = 0;
		CHECK_EQ_INT(crypt_keyfile_rewrap(t, len, "wrong", 5, "x", 1, NULL, &none, &none_len),
			     -EKEYREJECTED);
		CHECK_EQ_INT(crypt_keyfile_rewrap(t, len, PASS, PASS_LEN, "", 0, NULL, &none,
						  &none_len),
			     -EINVAL);
		CHECK_EQ_INT(crypt_keyfile_rewrap(t, len, PASS, PASS_LEN, "x", 1, &bad, &none,
						  &none_len),
			     -EINVAL);
		CHECK_EQ_INT(crypt_keyfile_rewrap("version = 2\n", 12, PASS, PASS_LEN, "x", 1, NULL,
						  &none, &none_len),
			     -EPROTONOSUPPORT);
		CHECK_EQ_INT(crypt_keyfile_rewrap(t, len / 2, PASS, PASS_LEN, "x", 1, NULL, &none,
						  &none_len),
			     -EBADMSG);
		CHECK(none == NULL && none_len == 0);
	}
out:
	OPENSSL_cleanse(m, sizeof(m));
	free(t);
	free(t2);
	free(t3);
}

static void test_derive(void)
{
	uint8_t master[CRYPT_KEY_LEN], other[CRYPT_KEY_LEN];
	CryptKeys k, k2, k3;
	char h[2 * CRYPT_KEY_LEN + 1];

	for (int i = 0; i < CRYPT_KEY_LEN; i++)
		master[i] = (uint8_t)i;
	crypt_keys_derive(master, &k);
	hex(k.data, CRYPT_KEY_LEN, h);
	CHECK_EQ_STR(h, "d6499902046520b81e9dfeabb877d2fd17f942dbb2ae2bceb9f2c3a35b00355e");
	hex(k.id, CRYPT_KEY_LEN, h);
	CHECK_EQ_STR(h, "e3a03365fc2e721fbfa91db820580a240df072cc1e1f816aff45fb413a18d067");
	hex(k.meta, CRYPT_KEY_LEN, h);
	CHECK_EQ_STR(h, "49b3b24d338b928e9dd8083ca1e8cbd3270f46fa2733c161b231fd0a6e6cd6fc");
	CHECK(memcmp(k.data, k.id, CRYPT_KEY_LEN) != 0);
	CHECK(memcmp(k.data, k.meta, CRYPT_KEY_LEN) != 0);
	CHECK(memcmp(k.id, k.meta, CRYPT_KEY_LEN) != 0);
	CHECK(memcmp(k.data, master, CRYPT_KEY_LEN) != 0);

	crypt_keys_derive(master, &k2);
	CHECK(memcmp(&k, &k2, sizeof(k)) == 0);

	memcpy(other, master, CRYPT_KEY_LEN);
	other[31] ^= 1;
	crypt_keys_derive(other, &k3);
	CHECK(memcmp(k.data, k3.data, CRYPT_KEY_LEN) != 0);
	CHECK(memcmp(k.id, k3.id, CRYPT_KEY_LEN) != 0);
	CHECK(memcmp(k.meta, k3.meta, CRYPT_KEY_LEN) != 0);

	crypt_keys_clear(&k);
	CHECK(all_zero(&k, sizeof(k)));
	crypt_keys_clear(&k2);
	crypt_keys_clear(&k3);
}

static void check_hmac(const uint8_t key[CRYPT_KEY_LEN], const char *msg, const char *want)
{
	uint8_t out[32];
	char h[65];
	crypt_hmac(key, msg, strlen(msg), out);
	hex(out, 32, h);
	CHECK_EQ_STR(h, want);
}

static void test_hmac(void)
{
	uint8_t key[CRYPT_KEY_LEN] = {0};

	/* RFC 4231 test case 1: key 20 x 0x0b (zero-padded), "Hi There" */
	memset(key, 0x0b, 20);
	check_hmac(key, "Hi There",
		   "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
	/* RFC 4231 test case 2: key "Jefe" (zero-padded) */
	memset(key, 0, sizeof(key));
	memcpy(key, "Jefe", 4);
	check_hmac(key, "what do ya want for nothing?",
		   "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
	/* a full 32-byte key: openssl dgst -sha256 -mac HMAC -macopt hexkey:0001..1f */
	for (int i = 0; i < CRYPT_KEY_LEN; i++)
		key[i] = (uint8_t)i;
	check_hmac(key, "pgbakfs chunk id test vector",
		   "53d801f3ec24c50e325944c6d97826f66587ffbb2611e6f6456dad55225c08e4");
	check_hmac(key, "", "d38b42096d80f45f826b44a9d5607de72496a415d3f4a1a8c88e3bb9da8dc1cb");
	{
		uint8_t out[32];
		char h[65];
		crypt_hmac(key, NULL, 0, out);
		hex(out, 32, h);
		CHECK_EQ_STR(h, "d38b42096d80f45f826b44a9d5607de72496a415d3f4a1a8c88e3bb9da8dc1cb");
	}
}

static void test_seal_open(void)
{
	static const size_t lens[] = {0, 1, 65536};
	uint8_t key[CRYPT_KEY_LEN], key2[CRYPT_KEY_LEN];
	const char aad[] = "pack 0123/chunk 42";

	test_random(key, sizeof(key));
	memcpy(key2, key, sizeof(key));
	key2[0] ^= 0x80;
	for (size_t i = 0; i < ELEMENTSOF(lens); i++) {
		size_t n = lens[i], sl = 0, ol = 99, total = n + CRYPT_OVERHEAD;
		uint8_t *plain = xmalloc(n + 1), *s1 = xmalloc(total + 1), *s2 = xmalloc(total);
		uint8_t *out = xmalloc(n + 1);

		test_random(plain, n);
		/* with and without aad */
		if (!CHECK_EQ_INT(crypt_seal(key, NULL, 0, plain, n, s1, &sl), 0))
			goto next;
		CHECK_EQ_INT(sl, total);
		CHECK_EQ_INT(crypt_open(key, NULL, 0, s1, sl, out, &ol), 0);
		CHECK_EQ_INT(ol, n);
		CHECK(memcmp(out, plain, n) == 0);
		if (!CHECK_EQ_INT(crypt_seal(key, aad, strlen(aad), plain, n, s1, &sl), 0))
			goto next;
		CHECK_EQ_INT(crypt_open(key, aad, strlen(aad), s1, sl, out, NULL), 0);
		CHECK(memcmp(out, plain, n) == 0);
		/* (not for a few bytes: one byte of ciphertext equals its plaintext 1 time in 256) */
		if (n >= 16)
			CHECK(memcmp(s1 + CRYPT_NONCE_LEN, plain, n) != 0);

		/* a random nonce: the same plaintext seals differently */
		CHECK_EQ_INT(crypt_seal(key, aad, strlen(aad), plain, n, s2, NULL), 0);
		CHECK(memcmp(s1, s2, CRYPT_NONCE_LEN) != 0);
		CHECK(memcmp(s1 + CRYPT_NONCE_LEN, s2 + CRYPT_NONCE_LEN, total - CRYPT_NONCE_LEN));

		/* every kind of damage; out is wiped, ret_len untouched */
		{
			/* nonce, ciphertext (the tag when n is 0), tag */
			const size_t at[] = {0, CRYPT_NONCE_LEN - 1, CRYPT_NONCE_LEN + n / 2,
					     total - CRYPT_TAG_LEN, total - 1};
			for (size_t j = 0; j < ELEMENTSOF(at); j++) {
				s1[at[j]] ^= 0x01;
				memset(out, 0xee, n + 1);
				ol = 99;
				CHECK_EQ_INT(crypt_open(key, aad, strlen(aad), s1, sl, out, &ol),
					     -EBADMSG);
				CHECK(all_zero(out, n) && out[n] == 0xee && ol == 99);
				s1[at[j]] ^= 0x01;
			}
		}
		CHECK_EQ_INT(crypt_open(key, aad, strlen(aad) - 1, s1, sl, out, NULL), -EBADMSG);
		CHECK_EQ_INT(crypt_open(key, "pack 0123/chunk 43", strlen(aad), s1, sl, out, NULL),
			     -EBADMSG);
		CHECK_EQ_INT(crypt_open(key, NULL, 0, s1, sl, out, NULL), -EBADMSG);
		CHECK_EQ_INT(crypt_open(key2, aad, strlen(aad), s1, sl, out, NULL), -EBADMSG);
		CHECK_EQ_INT(crypt_open(key, aad, strlen(aad), s1, sl - 1, out, NULL), -EBADMSG);
		CHECK_EQ_INT(crypt_open(key, aad, strlen(aad), s1, CRYPT_OVERHEAD - 1, out, NULL),
			     -EBADMSG);
		CHECK_EQ_INT(crypt_open(key, aad, strlen(aad), s1, 0, out, NULL), -EBADMSG);
		s1[total] = 0;
		CHECK_EQ_INT(crypt_open(key, aad, strlen(aad), s1, sl + 1, out, NULL), -EBADMSG);
		/* the tag of a later seal does not fit an earlier one */
		memcpy(s2, s1, total - CRYPT_TAG_LEN);
		CHECK_EQ_INT(crypt_open(key, aad, strlen(aad), s2, sl, out, NULL), -EBADMSG);
		/* still fine after all that */
		CHECK_EQ_INT(crypt_open(key, aad, strlen(aad), s1, sl, out, NULL), 0);
		CHECK(memcmp(out, plain, n) == 0);
next:
		free(plain);
		free(s1);
		free(s2);
		free(out);
	}
	OPENSSL_cleanse(key, sizeof(key));
	OPENSSL_cleanse(key2, sizeof(key2));
}

/* A buffer sealed by Python's cryptography AESGCM: pins nonce || ciphertext || tag. */
/* crypt_open_stream: what crypt_seal made, opened in uneven pieces; a changed byte or tag: -EBADMSG */
static void test_open_stream(void)
{
	uint8_t key[CRYPT_KEY_LEN];
	const char *aad = "catalog/00000000000000000001";
	size_t n = 100000, sl = 0;
	uint8_t *plain = malloc(n), *sealed = malloc(n + CRYPT_OVERHEAD), *out = malloc(n);
	memset(key, 7, sizeof(key));
	for (size_t i = 0; i < n; i++)
		plain[i] = (uint8_t)(i * 31 + i / 977);
	CHECK_EQ_INT(crypt_seal(key, aad, strlen(aad), plain, n, sealed, &sl), 0);
	for (int round = 0; round < 4; round++) {
		/* round 0 as sealed; 1 a ciphertext byte changed; 2 the tag; 3 another aad */
		if (round == 1)
			sealed[CRYPT_NONCE_LEN + 5000] ^= 1;
		if (round == 2) {
			sealed[CRYPT_NONCE_LEN + 5000] ^= 1;
			sealed[sl - 1] ^= 1;
		}
		if (round == 3)
			sealed[sl - 1] ^= 1;
		CryptOpenStream *st = NULL;
		const char *a = round == 3 ? "catalog/00000000000000000002" : aad;
		const uint8_t *ct = sealed + CRYPT_NONCE_LEN;
		if (!CHECK_EQ_INT(crypt_open_stream_begin(key, a, strlen(a), sealed, sealed + sl - CRYPT_TAG_LEN,
							  &st), 0))
			break;
		size_t at = 0, step = 1;
		while (at < n) { /* pieces of 1, 2, 4, ... bytes */
			size_t k = MIN(step, n - at);
			CHECK_EQ_INT(crypt_open_stream_update(st, ct + at, k, out + at), 0);
			at += k;
			step *= 2;
		}
		int e = crypt_open_stream_end(st);
		crypt_open_stream_free(st);
		CHECK_EQ_INT(e, round == 0 ? 0 : -EBADMSG);
		if (round == 0)
			CHECK(memcmp(out, plain, n) == 0);
	}
	CHECK(crypt_open_stream_free(NULL) == NULL);
	free(plain);
	free(sealed);
	free(out);
}

static void test_open_known(void)
{
	static const char sealed_hex[] = "101112131415161718191a1b0d99fa7722af4993b91069716a1d89fa6e80"
					 "53b1c66aa09df4b2828e092c";
	uint8_t key[CRYPT_KEY_LEN], sealed[sizeof(sealed_hex) / 2];
	char out[32] = {0};
	size_t n = 0;

	for (int i = 0; i < CRYPT_KEY_LEN; i++)
		key[i] = (uint8_t)i;
	if (!CHECK_EQ_INT(hex_decode(sealed_hex, sealed, sizeof(sealed)), 0))
		return;
	CHECK_EQ_INT(crypt_open(key, "aad", 3, sealed, sizeof(sealed), out, &n), 0);
	CHECK_EQ_INT(n, 14);
	CHECK_EQ_STR(out, "pgbakfs sealed");
}

static void write_file(const char *path, const char *content, size_t len, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	PGBAKFS_CHECK(fd >= 0);
	PGBAKFS_CHECK(write_full(fd, content, len) == 0);
	PGBAKFS_CHECK(fchmod(fd, mode) == 0);
	close(fd);
}

static void check_load_file(const char *path, const char *content, size_t len, mode_t mode,
			    int want, const char *want_pass, size_t want_len)
{
	char *p = NULL;
	size_t n = 0;
	int r;

	write_file(path, content, len, mode);
	r = crypt_passphrase_load(path, &p, &n);
	if (!CHECK_EQ_INT(r, want))
		fprintf(stderr, "  file content \"%.*s\", mode %o\n", (int)len, content,
			(unsigned)mode);
	if (r == 0) {
		CHECK_EQ_INT(n, want_len);
		CHECK(memcmp(p, want_pass, want_len) == 0 && p[n] == '\0');
		crypt_passphrase_free(p, n);
	} else {
		CHECK(p == NULL && n == 0);
	}
}

static void test_passphrase(void)
{
	char dir[64], f[128], d[128], *p = NULL;
	size_t n = 0;

	test_tmpdir(dir, sizeof(dir));
	test_fmt(f, sizeof(f), "%s/pass", dir);
	test_fmt(d, sizeof(d), "%s/sub", dir);
	unsetenv("PGBAKFS_PASSPHRASE");

	check_load_file(f, "hunter2\n", 8, 0600, 0, "hunter2", 7);
	check_load_file(f, "hunter2\r\n", 9, 0600, 0, "hunter2", 7);
	check_load_file(f, "hunter2", 7, 0400, 0, "hunter2", 7);
	check_load_file(f, "two\n\n", 5, 0600, 0, "two\n", 4);
	check_load_file(f, " spaced \r", 9, 0600, 0, " spaced \r", 9);
	check_load_file(f, "a\0b\n", 4, 0600, 0, "a\0b", 3);
	check_load_file(f, "hunter2\n", 8, 0644, -EPERM, NULL, 0);
	check_load_file(f, "hunter2\n", 8, 0640, -EPERM, NULL, 0);
	check_load_file(f, "hunter2\n", 8, 0604, -EPERM, NULL, 0);
	check_load_file(f, "hunter2\n", 8, 0602, -EPERM, NULL, 0);
	check_load_file(f, "hunter2\n", 8, 0610, -EPERM, NULL, 0);
	check_load_file(f, "", 0, 0600, -EINVAL, NULL, 0);
	check_load_file(f, "\n", 1, 0600, -EINVAL, NULL, 0);
	check_load_file(f, "\r\n", 2, 0600, -EINVAL, NULL, 0);
	{
		char *big = xmalloc(64 * 1024 + 1);
		memset(big, 'x', 64 * 1024 + 1);
		check_load_file(f, big, 64 * 1024, 0600, 0, big, 64 * 1024);
		check_load_file(f, big, 64 * 1024 + 1, 0600, -EFBIG, NULL, 0);
		free(big);
	}
	/* not a regular file */
	CHECK_EQ_INT(mkdir(d, 0700), 0);
	CHECK_EQ_INT(crypt_passphrase_load(d, &p, &n), -EPERM);
	CHECK_EQ_INT(crypt_passphrase_load("/dev/null", &p, &n), -EPERM);
	test_fmt(d, sizeof(d), "%s/missing", dir);
	CHECK_EQ_INT(crypt_passphrase_load(d, &p, &n), -ENOENT);

	/* the environment, when no file is given */
	CHECK_EQ_INT(crypt_passphrase_load(NULL, &p, &n), -ENOKEY);
	CHECK_EQ_INT(setenv("PGBAKFS_PASSPHRASE", "from env\n", 1), 0);
	if (CHECK_EQ_INT(crypt_passphrase_load(NULL, &p, &n), 0)) {
		CHECK_EQ_INT(n, 9);
		CHECK_EQ_STR(p, "from env\n");
		crypt_passphrase_free(p, n);
	}
	/* a file wins over the environment */
	check_load_file(f, "from file\n", 10, 0600, 0, "from file", 9);
	check_load_file(f, "from file\n", 10, 0644, -EPERM, NULL, 0);
	CHECK_EQ_INT(setenv("PGBAKFS_PASSPHRASE", "", 1), 0);
	p = NULL;
	n = 0;
	CHECK_EQ_INT(crypt_passphrase_load(NULL, &p, &n), -EINVAL);
	CHECK(p == NULL && n == 0);
	unsetenv("PGBAKFS_PASSPHRASE");
	crypt_passphrase_free(NULL, 0);

	TEST_RM_RF(dir);
}

int main(void)
{
	test_keyfile_round_trip();
	test_keyfile_known();
	test_keyfile_default_params();
	test_keyfile_damage();
	test_keyfile_rewrap();
	test_derive();
	test_hmac();
	test_seal_open();
	test_open_known();
	test_open_stream();
	test_passphrase();
	return test_finish();
}
