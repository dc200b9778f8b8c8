/*
 * AWS Signature Version 4 (HMAC-SHA256), as S3 uses it: pure functions over
 * a described request, no I/O, no global state, thread-safe.
 *
 * Paths are encoded the S3 way (each byte outside A-Za-z0-9-._~ as %XX, '/'
 * kept, no double encoding and no dot-segment normalisation). Query
 * parameters and header values are given raw; the functions encode, trim,
 * lower-case and sort them. The caller sends the same headers it signs and
 * the query string sigv4_canonical_query() returns.
 *
 * Every function returning char ** gives a malloc'd string the caller frees;
 * they return 0, -ENOMEM or -EINVAL (a header or parameter without a name).
 */
#pragma once

#include "common/common.h"

#define SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"
/* SHA-256 of the empty string, hex */
#define SIGV4_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

typedef struct SigV4Pair {
	const char *name;
	const char *value; /* NULL is the same as "" */
} SigV4Pair;

typedef struct SigV4Request {
	const char *method;        /* "GET", "PUT", ... */
	const char *path;          /* raw (not encoded), starts with '/' */
	const SigV4Pair *query;    /* raw names and values, any order */
	size_t n_query;
	const SigV4Pair *headers;  /* every header to sign, "host" and "x-amz-date" included */
	size_t n_headers;
	const char *payload_hash;  /* hex SHA-256 of the body, or SIGV4_UNSIGNED_PAYLOAD */
} SigV4Request;

typedef struct SigV4Key {
	const char *access_key;
	const char *secret_key;
	const char *region;  /* "us-east-1" */
	const char *service; /* "s3" */
} SigV4Key;

/* Hex SHA-256 of buf (out: 65 bytes, lower case, NUL-terminated). */
void sigv4_sha256_hex(const void *buf, size_t len, char out[65]);

/* URI-encode s; '/' is kept when keep_slash (paths) and encoded otherwise. */
int sigv4_uri_encode(const char *s, bool keep_slash, char **ret);

/* "a=1&b=2": encoded, sorted by name then value; also the query to send. */
int sigv4_canonical_query(const SigV4Pair *query, size_t n_query, char **ret);

/* The canonical request (step 1 of the signing process). */
int sigv4_canonical_request(const SigV4Request *req, char **ret);

/* "AWS4-HMAC-SHA256\n<amz_date>\n<scope>\n<hex sha256(canonical request)>". */
int sigv4_string_to_sign(const char *amz_date, const char *region, const char *service,
			 const char *canonical_request, char **ret);

/* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, yyyymmdd), region), service), "aws4_request") */
void sigv4_signing_key(const char *secret_key, const char *yyyymmdd, const char *region,
		       const char *service, uint8_t out[32]);

/*
 * The Authorization header value for req signed at amz_date
 * ("20150830T123600Z"): "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
 * Signature=...". It carries a secret-derived signature: never log it.
 */
int sigv4_authorization(const SigV4Request *req, const SigV4Key *key, const char *amz_date,
			char **ret);
