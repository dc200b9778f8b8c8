/*
 * AWS Signature Version 4. The canonical request is built in a growable
 * string; everything secret-derived (signing key, signature) lives on the
 * stack and is wiped before returning.
 */
#include "store/sigv4.h"
#include "common/util.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

typedef struct Str {
	char *s;
	size_t len, cap;
	bool oom;
} Str;

static void str_addn(Str *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = MAX(b->cap * 2, b->len + n + 64);
		char *p = realloc(b->s, cap);
		if (!p) {
			b->oom = true;
			return;
		}
		b->s = p;
		b->cap = cap;
	}
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = '\0';
}

static void str_add(Str *b, const char *s)
{
	str_addn(b, s, strlen(s));
}

/* The string, or -ENOMEM (and the buffer freed). */
static int str_finish(Str *b, char **ret)
{
	if (!b->s && !b->oom)
		str_addn(b, "", 0);
	if (b->oom) {
		free(b->s);
		return -ENOMEM;
	}
	*ret = b->s;
	return 0;
}

void sigv4_sha256_hex(const void *buf, size_t len, char out[65])
{
	uint8_t md[32];
	unsigned n = 0;
	PGBAKFS_CHECK(EVP_Digest(buf, len, md, &n, EVP_sha256(), NULL) == 1 && n == 32);
	hex_encode(md, 32, out);
}

static void hmac(const void *key, size_t key_len, const char *msg, uint8_t out[32])
{
	unsigned n = 0;
	PGBAKFS_CHECK(HMAC(EVP_sha256(), key, (int)key_len, (const uint8_t *)msg, strlen(msg), out,
			   &n) != NULL && n == 32);
}

static bool unreserved(unsigned char c)
{
	return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

static void str_add_encoded(Str *b, const char *s, bool keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (unreserved(*p) || (keep_slash && *p == '/')) {
			str_addn(b, (const char *)p, 1);
		} else {
			char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
			str_addn(b, e, 3);
		}
	}
}

int sigv4_uri_encode(const char *s, bool keep_slash, char **ret)
{
	Str b = {0};
	str_add_encoded(&b, s, keep_slash);
	return str_finish(&b, ret);
}

typedef struct EncodedPair {
	char *name, *value;
} EncodedPair;

static int pair_cmp(const void *a, const void *b)
{
	const EncodedPair *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	return c ? c : strcmp(x->value, y->value);
}

int sigv4_canonical_query(const SigV4Pair *query, size_t n_query, char **ret)
{
	EncodedPair *p = calloc(n_query ? n_query : 1, sizeof(*p));
	Str b = {0};
	int r = 0;

	if (!p)
		return -ENOMEM;
	for (size_t i = 0; i < n_query && r == 0; i++) {
		if (!query[i].name || !*query[i].name)
			r = -EINVAL;
		else if (sigv4_uri_encode(query[i].name, false, &p[i].name) < 0 ||
			 sigv4_uri_encode(query[i].value ? query[i].value : "", false, &p[i].value) < 0)
			r = -ENOMEM;
	}
	if (r == 0) {
		qsort(p, n_query, sizeof(*p), pair_cmp);
		for (size_t i = 0; i < n_query; i++) {
			if (i)
				str_add(&b, "&");
			str_add(&b, p[i].name);
			str_add(&b, "=");
			str_add(&b, p[i].value);
		}
		r = str_finish(&b, ret);
	}
	for (size_t i = 0; i < n_query; i++) {
		free(p[i].name);
		free(p[i].value);
	}
	free(p);
	return r;
}

/* Header value with leading/trailing blanks trimmed and inner runs collapsed. */
static void str_add_trimmed(Str *b, const char *v)
{
	bool space = false, any = false;
	for (; v && *v; v++) {
		if (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r') {
			space = any;
			continue;
		}
		if (space)
			str_addn(b, " ", 1);
		str_addn(b, v, 1);
		space = false;
		any = true;
	}
}

static int lower_name(const char *name, char **ret)
{
	char *s;
	if (!name || !*name)
		return -EINVAL;
	s = strdup(name);
	if (!s)
		return -ENOMEM;
	for (char *p = s; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	*ret = s;
	return 0;
}

/*
 * Canonical headers ("name:value\n" each) and signed headers ("a;b"): names
 * lower-cased and sorted (stable, so repeated names keep their order and
 * join with ',').
 */
static int canonical_headers(const SigV4Pair *h, size_t n, Str *canon, Str *signed_names)
{
	char **names = calloc(n ? n : 1, sizeof(*names));
	size_t *order = calloc(n ? n : 1, sizeof(*order));
	int r = 0;

	if (!names || !order) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n && r == 0; i++)
		r = lower_name(h[i].name, &names[i]);
	if (r < 0)
		goto out;
	/* insertion sort: stable, and requests sign a handful of headers */
	for (size_t i = 0; i < n; i++) {
		size_t j = i;
		while (j > 0 && strcmp(names[order[j - 1]], names[i]) > 0) {
			order[j] = order[j - 1];
			j--;
		}
		order[j] = i;
	}
	for (size_t i = 0; i < n; i++) {
		size_t k = order[i];
		bool same = i > 0 && strcmp(names[order[i - 1]], names[k]) == 0;
		if (same) {
			str_add(canon, ",");
		} else {
			if (i > 0) {
				str_add(canon, "\n");
				str_add(signed_names, ";");
			}
			str_add(canon, names[k]);
			str_add(canon, ":");
			str_add(signed_names, names[k]);
		}
		str_add_trimmed(canon, h[k].value);
	}
	if (n)
		str_add(canon, "\n");
out:
	for (size_t i = 0; names && i < n; i++)
		free(names[i]);
	free(names);
	free(order);
	return r;
}

static int canonical_request(const SigV4Request *req, char **ret, char **ret_signed)
{
	Str b = {0}, sig = {0};
	char *q = NULL;
	int r;

	if (!req->method || !req->path || req->path[0] != '/' || !req->payload_hash)
		return -EINVAL;
	r = sigv4_canonical_query(req->query, req->n_query, &q);
	if (r < 0)
		return r;
	str_add(&b, req->method);
	str_add(&b, "\n");
	str_add_encoded(&b, req->path, true);
	str_add(&b, "\n");
	str_add(&b, q);
	str_add(&b, "\n");
	free(q);
	r = canonical_headers(req->headers, req->n_headers, &b, &sig);
	if (r < 0) {
		free(b.s);
		free(sig.s);
		return r;
	}
	str_add(&b, "\n");
	str_add(&b, sig.s ? sig.s : "");
	str_add(&b, "\n");
	str_add(&b, req->payload_hash);
	r = str_finish(&sig, ret_signed);
	if (r < 0) {
		free(b.s);
		return r;
	}
	r = str_finish(&b, ret);
	if (r < 0) {
		free(*ret_signed);
		return r;
	}
	return 0;
}

int sigv4_canonical_request(const SigV4Request *req, char **ret)
{
	char *signed_names = NULL;
	int r = canonical_request(req, ret, &signed_names);
	free(signed_names);
	return r;
}

static bool valid_amz_date(const char *d)
{
	return d && strlen(d) == 16 && d[8] == 'T' && d[15] == 'Z';
}

int sigv4_string_to_sign(const char *amz_date, const char *region, const char *service,
			 const char *canonical_request_text, char **ret)
{
	char hash[65];
	Str b = {0};

	if (!valid_amz_date(amz_date))
		return -EINVAL;
	sigv4_sha256_hex(canonical_request_text, strlen(canonical_request_text), hash);
	str_add(&b, "AWS4-HMAC-SHA256\n");
	str_add(&b, amz_date);
	str_add(&b, "\n");
	str_addn(&b, amz_date, 8);
	str_add(&b, "/");
	str_add(&b, region);
	str_add(&b, "/");
	str_add(&b, service);
	str_add(&b, "/aws4_request\n");
	str_add(&b, hash);
	return str_finish(&b, ret);
}

void sigv4_signing_key(const char *secret_key, const char *yyyymmdd, const char *region,
		       const char *service, uint8_t out[32])
{
	size_t n = strlen(secret_key) + 5;
	char *k = malloc(n);
	uint8_t a[32], c[32];
	char date[9];

	PGBAKFS_CHECK(k != NULL);
	snprintf(k, n, "AWS4%s", secret_key);
	snprintf(date, sizeof(date), "%.8s", yyyymmdd);
	hmac(k, n - 1, date, a);
	hmac(a, 32, region, c);
	hmac(c, 32, service, a);
	hmac(a, 32, "aws4_request", out);
	OPENSSL_cleanse(k, n);
	OPENSSL_cleanse(a, sizeof(a));
	OPENSSL_cleanse(c, sizeof(c));
	free(k);
}

int sigv4_authorization(const SigV4Request *req, const SigV4Key *key, const char *amz_date,
			char **ret)
{
	char *creq = NULL, *signed_names = NULL, *sts = NULL;
	uint8_t skey[32], sig[32];
	char sig_hex[65];
	Str b = {0};
	int r;

	if (!key->access_key || !key->secret_key || !key->region || !key->service)
		return -EINVAL;
	r = canonical_request(req, &creq, &signed_names);
	if (r < 0)
		return r;
	r = sigv4_string_to_sign(amz_date, key->region, key->service, creq, &sts);
	free(creq);
	if (r < 0) {
		free(signed_names);
		return r;
	}
	sigv4_signing_key(key->secret_key, amz_date, key->region, key->service, skey);
	hmac(skey, sizeof(skey), sts, sig);
	hex_encode(sig, sizeof(sig), sig_hex);
	free(sts);

	str_add(&b, "AWS4-HMAC-SHA256 Credential=");
	str_add(&b, key->access_key);
	str_add(&b, "/");
	str_addn(&b, amz_date, 8);
	str_add(&b, "/");
	str_add(&b, key->region);
	str_add(&b, "/");
	str_add(&b, key->service);
	str_add(&b, "/aws4_request, SignedHeaders=");
	str_add(&b, signed_names);
	str_add(&b, ", Signature=");
	str_add(&b, sig_hex);
	free(signed_names);
	OPENSSL_cleanse(skey, sizeof(skey));
	OPENSSL_cleanse(sig, sizeof(sig));
	OPENSSL_cleanse(sig_hex, sizeof(sig_hex));
	return str_finish(&b, ret);
}
