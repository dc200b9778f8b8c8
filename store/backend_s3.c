/*
 * S3-compatible object storage driver, on libcurl and SigV4.
 *
 * Connection reuse: a pool of CURL easy handles (each keeps its own
 * connection cache, so a handle returned to the pool keeps its keep-alive
 * connection for the next request) plus a CURLSH sharing the DNS and TLS
 * session caches between them. A thread takes a handle for one attempt and
 * gives it back; nothing else is shared, so every operation is thread-safe.
 *
 * Retries: timeouts, refused/reset/dropped connections, truncated bodies,
 * 5xx and 429 are retried up to max_attempts times within one deadline per
 * request, sleeping a random time in [0, min(10 s, backoff * 2^(n-1))]
 * between tries ("full jitter"), so that many clients backing off do not
 * hammer the server in step. Every try starts over: a read restarts at its
 * first byte and never delivers a mix of two tries.
 *
 * Secrets: the secret key only enters sigv4_authorization(); the
 * Authorization header lives in the curl header list of one try and is never
 * logged. Messages name the operation, the key and the HTTP status.
 */
#include "store/backend.h"
#include "store/sigv4.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "common/util.h"

#include <curl/curl.h>
#include <openssl/evp.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define S3_POOL_MAX 64
#define S3_MIN_PART ((size_t)5 << 20)
#define S3_MAX_PARTS 10000
#define S3_MAX_DELAY_MS 10000
#define S3_MAX_BODY ((size_t)64 << 20) /* XML answers; object data goes to the caller's buffer */

typedef struct S3Backend {
	StoreBackend base;
	char *origin;    /* "https://host[:port]" the requests go to */
	char *host;      /* the Host header (signed) */
	char *path_base; /* "/bucket" (path style) or "" (virtual host) */
	char *region, *bucket, *prefix; /* prefix is "" or ends with '/' */
	char *access_key, *secret_key, *session_token, *ca_file;
	size_t threshold, part_size;
	unsigned max_attempts, deadline_ms, stall_ms, backoff_ms;
	CURLSH *share;
	pthread_mutex_t share_lock[CURL_LOCK_DATA_LAST]; /* one per shared cache, for curl */
	pthread_mutex_t pool_lock;                       /* guards pool, n_pool */
	CURL *pool[S3_POOL_MAX];
	size_t n_pool;
} S3Backend;

typedef struct S3Request {
	const char *op;  /* for messages: "put", "get", ... */
	const char *method;
	const char *key; /* full key (prefix included); NULL: the bucket */
	const SigV4Pair *query;
	size_t n_query;
	const uint8_t *body; /* PUT/POST body (may be empty) */
	size_t body_len;
	bool has_body;
	const char *range;   /* Range header value, or NULL */
	uint8_t *out;        /* GET: the object bytes go here ... */
	size_t out_len;      /* ... at most this many */
	uint64_t out_skip;   /* bytes to skip when the server ignores Range (status 200) */
	/* GET of a whole object of at most whole_max bytes, into S3Response.obj (s3_get_all) */
	bool whole;
	size_t whole_max;
	/*
	 * A whole-object PUT: the body is checked by S3 through a signed
	 * x-amz-checksum-crc32c instead of its SHA-256 in the signature
	 * (UNSIGNED-PAYLOAD). Same protection against a damaged upload; the
	 * SHA-256 of every 32 MiB pack cost more CPU than its compression on a
	 * machine without SHA extensions. Multipart parts keep the SHA-256 (a
	 * part checksum needs the upload created with that algorithm).
	 */
	bool crc32c_body;
	/*
	 * "If-None-Match: *": written only if the key does not exist (412
	 * otherwise); 409 (a concurrent conditional write in progress) is retried.
	 */
	bool if_none_match;
} S3Request;

#define S3_LARGE_GET (512L * 1024) /* a GET of at least this many bytes reads them at once */

typedef struct S3Response {
	long status;
	char *body; /* NUL-terminated, everything but object data */
	size_t body_len, body_cap;
	size_t out_got;
	uint64_t skipped;
	curl_off_t length; /* Content-Length, -1 when unknown */
	char etag[128];
	bool overflow;
	/* a whole object (S3Request.whole): obj_cap bytes at obj, kept across tries */
	uint8_t *obj;
	size_t obj_cap;
	bool sized, too_big, oom;
} S3Response;

typedef struct Xfer {
	CURL *h;
	const S3Request *req;
	S3Response *resp;
	size_t sent;
} Xfer;

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc;

static void global_init(void)
{
	global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void share_lock(CURL *h _unused_, curl_lock_data data, curl_lock_access a _unused_,
		       void *userdata)
{
	S3Backend *sb = userdata;
	pthread_mutex_lock(&sb->share_lock[data]);
}

static void share_unlock(CURL *h _unused_, curl_lock_data data, void *userdata)
{
	S3Backend *sb = userdata;
	pthread_mutex_unlock(&sb->share_lock[data]);
}

static CURL *pool_get(S3Backend *sb)
{
	CURL *h = NULL;
	pthread_mutex_lock(&sb->pool_lock);
	if (sb->n_pool > 0)
		h = sb->pool[--sb->n_pool];
	pthread_mutex_unlock(&sb->pool_lock);
	return h ? h : curl_easy_init();
}

static void pool_put(S3Backend *sb, CURL *h)
{
	pthread_mutex_lock(&sb->pool_lock);
	if (sb->n_pool < S3_POOL_MAX) {
		sb->pool[sb->n_pool++] = h;
		h = NULL;
	}
	pthread_mutex_unlock(&sb->pool_lock);
	if (h)
		curl_easy_cleanup(h);
}

static void body_append(S3Response *resp, const char *data, size_t len)
{
	if (resp->overflow || resp->body_len + len + 1 > S3_MAX_BODY) {
		resp->overflow = true;
		return;
	}
	if (resp->body_len + len + 1 > resp->body_cap) {
		size_t cap = MAX(resp->body_cap * 2, resp->body_len + len + 4096);
		char *p = realloc(resp->body, cap);
		if (!p) {
			resp->overflow = true;
			return;
		}
		resp->body = p;
		resp->body_cap = cap;
	}
	memcpy(resp->body + resp->body_len, data, len);
	resp->body_len += len;
	resp->body[resp->body_len] = '\0';
}

/* Room for need bytes of a whole object at resp->obj, keeping what it holds. */
static bool whole_reserve(S3Response *resp, size_t need)
{
	uint8_t *p;
	if (need <= resp->obj_cap)
		return true;
	if (!(p = store_get_buf(need))) {
		resp->oom = true;
		return false;
	}
	if (resp->out_got)
		memcpy(p, resp->obj, resp->out_got);
	free(resp->obj);
	resp->obj = p;
	resp->obj_cap = need;
	return true;
}

/*
 * Body bytes of a whole-object GET: the buffer is sized by Content-Length when
 * the first bytes of a try arrive (grown by doubling when the server sends
 * none), and an object over whole_max stops the transfer.
 */
static size_t whole_write(Xfer *x, const char *data, size_t len)
{
	S3Response *resp = x->resp;
	size_t max = x->req->whole_max;

	if (!resp->sized) {
		curl_off_t cl = -1;
		curl_easy_getinfo(x->h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
		resp->sized = true;
		if (cl >= 0 && (uint64_t)cl > max) {
			resp->too_big = true;
			return 0;
		}
		if (cl >= 0 && !whole_reserve(resp, (size_t)cl))
			return 0;
	}
	if (len > max - resp->out_got) {
		resp->too_big = true;
		return 0;
	}
	if (resp->out_got + len > resp->obj_cap &&
	    !whole_reserve(resp, MIN(max, MAX(resp->obj_cap * 2, resp->out_got + len))))
		return 0;
	memcpy(resp->obj + resp->out_got, data, len);
	resp->out_got += len;
	return len;
}

static size_t on_write(char *data, size_t size, size_t n, void *userdata)
{
	Xfer *x = userdata;
	S3Response *resp = x->resp;
	size_t len = size * n, off = 0, take;
	long status = 0;

	curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &status);
	if (x->req->whole && status == 200)
		return whole_write(x, data, len);
	if (!x->req->out || (status != 200 && status != 206)) {
		body_append(resp, data, len);
		return resp->overflow ? 0 : len;
	}
	if (status == 200 && resp->skipped < x->req->out_skip) {
		/* the server ignored Range: skip to the offset */
		off = (size_t)MIN((uint64_t)len, x->req->out_skip - resp->skipped);
		resp->skipped += off;
	}
	take = len - off;
	if (resp->out_got + take > x->req->out_len) {
		if (status == 206) {
			/* more than we asked for: a broken server, never silently trimmed */
			resp->overflow = true;
			return 0;
		}
		take = x->req->out_len - resp->out_got;
	}
	memcpy(x->req->out + resp->out_got, data + off, take);
	resp->out_got += take;
	return len;
}

static size_t on_header(char *data, size_t size, size_t n, void *userdata)
{
	Xfer *x = userdata;
	size_t len = size * n;
	if (len > 5 && strncasecmp(data, "etag:", 5) == 0) {
		const char *v = data + 5;
		size_t vl = len - 5;
		while (vl && (*v == ' ' || *v == '\t')) {
			v++;
			vl--;
		}
		while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
			vl--;
		if (vl < sizeof(x->resp->etag))
			snprintf(x->resp->etag, sizeof(x->resp->etag), "%.*s", (int)vl, v);
	}
	return len;
}

static size_t on_read(char *buf, size_t size, size_t n, void *userdata)
{
	Xfer *x = userdata;
	size_t take = MIN(size * n, x->req->body_len - x->sent);
	if (take)
		memcpy(buf, x->req->body + x->sent, take);
	x->sent += take;
	return take;
}

static int on_seek(void *userdata, curl_off_t offset, int origin)
{
	Xfer *x = userdata;
	if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > x->req->body_len)
		return CURL_SEEKFUNC_FAIL;
	x->sent = (size_t)offset;
	return CURL_SEEKFUNC_OK;
}

static int header_add(struct curl_slist **list, const char *name, const char *value)
{
	char *line;
	struct curl_slist *l;
	if (asprintf(&line, "%s: %s", name, value) < 0)
		return -ENOMEM;
	l = curl_slist_append(*list, line);
	free(line);
	if (!l)
		return -ENOMEM;
	*list = l;
	return 0;
}

/* Sign the request and set up h for one try. */
static int s3_setup(S3Backend *sb, Xfer *x, const char *payload_hash, long left_ms,
		    struct curl_slist **headers, char **url)
{
	const S3Request *req = x->req;
	CURL *h = x->h;
	char amz_date[32], *path = NULL, *epath = NULL, *query = NULL, *authz = NULL;
	SigV4Pair sh[6];
	size_t n_sh = 0;
	char crc_b64[16];
	struct tm tm;
	time_t now = time(NULL);
	int r;

	if (req->key)
		r = asprintf(&path, "%s/%s", sb->path_base, req->key);
	else
		r = asprintf(&path, "%s", *sb->path_base ? sb->path_base : "/");
	if (r < 0)
		return -ENOMEM;
	gmtime_r(&now, &tm);
	strftime(amz_date, sizeof(amz_date), "%Y%m%dT%H%M%SZ", &tm);

	sh[n_sh++] = (SigV4Pair){"host", sb->host};
	sh[n_sh++] = (SigV4Pair){"x-amz-content-sha256", payload_hash};
	sh[n_sh++] = (SigV4Pair){"x-amz-date", amz_date};
	if (req->range)
		sh[n_sh++] = (SigV4Pair){"range", req->range};
	if (sb->session_token)
		sh[n_sh++] = (SigV4Pair){"x-amz-security-token", sb->session_token};
	if (req->crc32c_body) {
		uint8_t be[4];
		uint32_t crc = crc32c(req->body, req->body_len);
		be[0] = (uint8_t)(crc >> 24), be[1] = (uint8_t)(crc >> 16);
		be[2] = (uint8_t)(crc >> 8), be[3] = (uint8_t)crc;
		EVP_EncodeBlock((unsigned char *)crc_b64, be, sizeof(be));
		sh[n_sh++] = (SigV4Pair){"x-amz-checksum-crc32c", crc_b64};
	}
	SigV4Request sreq = {
		.method = req->method,
		.path = path,
		.query = req->query,
		.n_query = req->n_query,
		.headers = sh,
		.n_headers = n_sh,
		.payload_hash = payload_hash,
	};
	SigV4Key key = {sb->access_key, sb->secret_key, sb->region, "s3"};
	r = sigv4_authorization(&sreq, &key, amz_date, &authz);
	if (r < 0)
		goto out;
	r = -ENOMEM;
	if (sigv4_uri_encode(path, true, &epath) < 0 ||
	    sigv4_canonical_query(req->query, req->n_query, &query) < 0)
		goto out;
	if (asprintf(url, "%s%s%s%s", sb->origin, epath, *query ? "?" : "", query) < 0) {
		*url = NULL;
		goto out;
	}
	for (size_t i = 0; i < n_sh; i++)
		if (header_add(headers, sh[i].name, sh[i].value) < 0)
			goto out;
	if (header_add(headers, "Authorization", authz) < 0 || header_add(headers, "Expect", "") < 0)
		goto out;
	if (req->if_none_match && header_add(headers, "If-None-Match", "*") < 0)
		goto out;
	r = 0;

	curl_easy_reset(h);
	curl_easy_setopt(h, CURLOPT_URL, *url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, *headers);
	curl_easy_setopt(h, CURLOPT_SHARE, sb->share);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	if (sb->ca_file)
		curl_easy_setopt(h, CURLOPT_CAINFO, sb->ca_file);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, MIN(left_ms, 10000L));
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, left_ms);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)MAX(1u, sb->stall_ms / 1000));
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
	/*
	 * A large range (restore's windows, 8-32 MiB) is read in up to 512 KiB at
	 * a time (curl's largest) instead of 16 KiB: a poll, a recv and a call of
	 * on_write each, per 16 KiB, were 16,000 of each for 127 MiB of packs.
	 */
	if ((req->out && req->out_len >= S3_LARGE_GET) || req->whole)
		curl_easy_setopt(h, CURLOPT_BUFFERSIZE, (long)S3_LARGE_GET);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
	if (!strcmp(req->method, "HEAD")) {
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	} else if (req->has_body) {
		curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(h, CURLOPT_READDATA, x);
		curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
		curl_easy_setopt(h, CURLOPT_SEEKDATA, x);
		curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)req->body_len);
		if (strcmp(req->method, "PUT") != 0)
			curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req->method);
	} else if (strcmp(req->method, "GET") != 0) {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req->method);
	}
out:
	free(path);
	free(epath);
	free(query);
	if (authz) {
		explicit_bzero(authz, strlen(authz));
		free(authz);
	}
	return r;
}

static bool curl_transient(CURLcode c)
{
	switch (c) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return true;
	default:
		return false;
	}
}

static int curl_errno(CURLcode c)
{
	switch (c) {
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
		return -ECONNRESET;
	case CURLE_COULDNT_RESOLVE_HOST:
		return -EHOSTUNREACH;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CERTPROBLEM:
		return -EPERM;
	default:
		return -EIO;
	}
}

static bool status_transient(long status)
{
	return status >= 500 || status == 429;
}

/* Sleep the full-jitter backoff of try n (1-based); false if the deadline comes first. */
static bool backoff_sleep(S3Backend *sb, unsigned n, int64_t deadline)
{
	uint64_t cap = sb->backoff_ms, rnd = 0;
	for (unsigned i = 1; i < n && cap < S3_MAX_DELAY_MS; i++)
		cap *= 2;
	cap = MIN(cap, (uint64_t)S3_MAX_DELAY_MS);
	if (random_bytes(&rnd, sizeof(rnd)) < 0)
		rnd = (uint64_t)mono_ns();
	uint64_t ms = rnd % (cap + 1);
	if (mono_ns() + (int64_t)ms * 1000000 >= deadline)
		return false;
	struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	return true;
}

static void response_reset(S3Response *resp)
{
	resp->status = 0;
	resp->body_len = 0;
	if (resp->body)
		resp->body[0] = '\0';
	resp->out_got = 0;
	resp->skipped = 0;
	resp->length = -1;
	resp->etag[0] = '\0';
	resp->overflow = false;
	resp->sized = resp->too_big = resp->oom = false;
}

/*
 * Run req, retrying transient failures. 0 when an HTTP answer that is not
 * worth retrying came back (its status in resp->status, any status);
 * otherwise -errno after the last try, logged with the operation and key.
 */
static int s3_perform(S3Backend *sb, const S3Request *req, S3Response *resp)
{
	int64_t deadline = mono_ns() + (int64_t)sb->deadline_ms * 1000000;
	char payload_hash[65];
	char what[64] = "";
	int r = -EIO;

	if (req->crc32c_body)
		snprintf(payload_hash, sizeof(payload_hash), "UNSIGNED-PAYLOAD");
	else if (req->has_body)
		sigv4_sha256_hex(req->body, req->body_len, payload_hash);
	else
		snprintf(payload_hash, sizeof(payload_hash), "%s", SIGV4_EMPTY_SHA256);

	for (unsigned n = 1;; n++) {
		struct curl_slist *headers = NULL;
		char *url = NULL;
		CURLcode c;
		long left_ms = (long)((deadline - mono_ns()) / 1000000);
		bool retry;
		Xfer x = {.req = req, .resp = resp};

		if (left_ms <= 0) {
			if (!*what)
				snprintf(what, sizeof(what), "deadline passed");
			r = -ETIMEDOUT;
			break;
		}
		x.h = pool_get(sb);
		if (!x.h)
			return -ENOMEM;
		response_reset(resp);
		r = s3_setup(sb, &x, payload_hash, left_ms, &headers, &url);
		if (r < 0) {
			curl_slist_free_all(headers);
			free(url);
			pool_put(sb, x.h);
			return r;
		}
		c = curl_easy_perform(x.h);
		curl_easy_getinfo(x.h, CURLINFO_RESPONSE_CODE, &resp->status);
		curl_easy_getinfo(x.h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &resp->length);
		curl_easy_setopt(x.h, CURLOPT_HTTPHEADER, NULL);
		curl_slist_free_all(headers);
		free(url);
		pool_put(sb, x.h);

		if (c == CURLE_OK && !status_transient(resp->status) &&
		    !(req->if_none_match && resp->status == 409))
			return 0;
		if (c == CURLE_WRITE_ERROR && (resp->too_big || resp->oom))
			return resp->too_big ? -EFBIG : -ENOMEM;
		if (c == CURLE_WRITE_ERROR && resp->overflow) {
			log_warning("s3 %s \"%s\": unexpected response size", req->op,
				    req->key ? req->key : "");
			return -EBADMSG;
		}
		if (c == CURLE_OK) {
			snprintf(what, sizeof(what), "HTTP %ld", resp->status);
			r = -EIO;
			retry = true;
		} else {
			snprintf(what, sizeof(what), "%s", curl_easy_strerror(c));
			r = curl_errno(c);
			retry = curl_transient(c);
		}
		if (!retry || n >= sb->max_attempts)
			break;
		log_debug("s3 %s \"%s\": %s, retrying", req->op, req->key ? req->key : "", what);
		if (!backoff_sleep(sb, n, deadline)) {
			r = -ETIMEDOUT;
			break;
		}
	}
	log_warning("s3 %s \"%s\" failed: %s", req->op, req->key ? req->key : "", what);
	return r;
}

/* -errno for an HTTP status that is not the expected one, logged. */
static int status_errno(const S3Request *req, long status)
{
	int r;
	switch (status) {
	case 404:
		return -ENOENT;
	case 412:
		return -EEXIST; /* If-None-Match: the object exists (an expected answer: not logged) */
	case 416:
		return -ENODATA;
	case 401:
	case 403:
		r = -EACCES;
		break;
	case 400:
		r = -EINVAL;
		break;
	default:
		r = -EIO;
	}
	log_warning("s3 %s \"%s\" failed: HTTP %ld", req->op, req->key ? req->key : "", status);
	return r;
}

static int s3_key(S3Backend *sb, const char *name, char **ret)
{
	if (!*name || name[0] == '/' || strstr(name, ".."))
		return -EINVAL;
	return asprintf(ret, "%s%s", sb->prefix, name) < 0 ? -ENOMEM : 0;
}

/* Text of the first <tag>...</tag> in [p, end), XML entities decoded; NULL if absent. */
static char *xml_text(const char *p, const char *end, const char *tag, const char **ret_next)
{
	char open[64], close[64];
	const char *a, *b;
	char *s, *o;

	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	a = strstr(p, open);
	if (!a || a >= end)
		return NULL;
	a += strlen(open);
	b = strstr(a, close);
	if (!b || b > end)
		return NULL;
	s = o = malloc((size_t)(b - a) + 1);
	if (!s)
		return NULL;
	static const struct {
		const char *ent;
		char c;
	} ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
	while (a < b) {
		bool done = false;
		for (size_t i = 0; *a == '&' && i < ELEMENTSOF(ents); i++) {
			size_t n = strlen(ents[i].ent);
			if ((size_t)(b - a) >= n && !strncmp(a, ents[i].ent, n)) {
				*o++ = ents[i].c;
				a += n;
				done = true;
				break;
			}
		}
		if (!done)
			*o++ = *a++;
	}
	*o = '\0';
	if (ret_next)
		*ret_next = b + strlen(close);
	return s;
}

/* In-place URL decoding ("%2F" and '+' for a space, as S3's encoding-type=url does). */
static int url_decode(char *s)
{
	char *o = s;
	for (; *s; s++) {
		if (*s == '%') {
			int hi = hex_digit_value(s[1]), lo = hi < 0 ? -1 : hex_digit_value(s[2]);
			if (hi < 0 || lo < 0)
				return -EBADMSG;
			*o++ = (char)(hi * 16 + lo);
			s += 2;
		} else {
			*o++ = *s == '+' ? ' ' : *s;
		}
	}
	*o = '\0';
	return 0;
}

static int s3_put_single(S3Backend *sb, const char *key, const void *buf, size_t len,
			 bool if_absent)
{
	S3Request req = {.op = "put", .method = "PUT", .key = key, .body = buf, .body_len = len,
			 .has_body = true, .crc32c_body = true, .if_none_match = if_absent};
	S3Response resp = {0};
	int r = s3_perform(sb, &req, &resp);
	if (r == 0 && resp.status != 200)
		r = status_errno(&req, resp.status);
	free(resp.body);
	return r;
}

static void s3_abort_upload(S3Backend *sb, const char *key, const char *upload_id)
{
	const SigV4Pair q[] = {{"uploadId", upload_id}};
	S3Request req = {.op = "abort upload", .method = "DELETE", .key = key, .query = q,
			 .n_query = 1};
	S3Response resp = {0};
	(void)s3_perform(sb, &req, &resp);
	free(resp.body);
}

static int s3_complete_upload(S3Backend *sb, const char *key, const char *upload_id,
			      char (*etags)[128], size_t n_parts, size_t len, bool if_absent)
{
	const SigV4Pair q[] = {{"uploadId", upload_id}};
	char *xml = NULL;
	size_t xml_len = 0;
	FILE *f = open_memstream(&xml, &xml_len);
	S3Response resp = {0};
	int r;

	if (!f)
		return -ENOMEM;
	fputs("<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">", f);
	for (size_t i = 0; i < n_parts; i++)
		fprintf(f, "<Part><PartNumber>%zu</PartNumber><ETag>%s</ETag></Part>", i + 1, etags[i]);
	fputs("</CompleteMultipartUpload>", f);
	if (fclose(f) != 0) {
		free(xml);
		return -ENOMEM;
	}
	S3Request req = {.op = "complete upload", .method = "POST", .key = key, .query = q,
			 .n_query = 1, .body = (const uint8_t *)xml, .body_len = xml_len,
			 .has_body = true, .if_none_match = if_absent};
	r = s3_perform(sb, &req, &resp);
	if (r == 0 && resp.status == 200 && resp.body && strstr(resp.body, "<Error>"))
		r = -EIO; /* S3 may fail a completion after its 200 header */
	else if (r == 0 && resp.status == 404) {
		/* a retried completion whose first try went through: the object is there */
		S3Request head = {.op = "size", .method = "HEAD", .key = key};
		S3Response hr = {0};
		r = s3_perform(sb, &head, &hr);
		if (r == 0 && !(hr.status == 200 && hr.length == (curl_off_t)len))
			r = status_errno(&req, 404);
		free(hr.body);
	} else if (r == 0 && resp.status != 200) {
		r = status_errno(&req, resp.status);
	}
	free(resp.body);
	free(xml);
	return r;
}

static int s3_put_multipart(S3Backend *sb, const char *key, const uint8_t *buf, size_t len,
			    bool if_absent)
{
	size_t part = sb->part_size, n_parts;
	char *upload_id = NULL;
	char(*etags)[128] = NULL;
	int r;

	/* at most 10000 parts: grow the part for huge objects, in whole MiB */
	if ((len + part - 1) / part > S3_MAX_PARTS)
		part = ((len / S3_MAX_PARTS) | (((size_t)1 << 20) - 1)) + 1;
	n_parts = (len + part - 1) / part;
	etags = calloc(n_parts, sizeof(*etags));
	if (!etags)
		return -ENOMEM;

	{
		const SigV4Pair q[] = {{"uploads", ""}};
		S3Request req = {.op = "initiate upload", .method = "POST", .key = key, .query = q,
				 .n_query = 1, .has_body = true};
		S3Response resp = {0};
		r = s3_perform(sb, &req, &resp);
		if (r == 0 && resp.status != 200)
			r = status_errno(&req, resp.status);
		if (r == 0) {
			upload_id = resp.body ? xml_text(resp.body, resp.body + resp.body_len, "UploadId",
							 NULL)
					      : NULL;
			if (!upload_id || !*upload_id)
				r = -EBADMSG;
		}
		free(resp.body);
		if (r < 0)
			goto out;
	}

	for (size_t i = 0; i < n_parts && r == 0; i++) {
		char num[24];
		snprintf(num, sizeof(num), "%zu", i + 1);
		const SigV4Pair q[] = {{"partNumber", num}, {"uploadId", upload_id}};
		size_t off = i * part;
		S3Request req = {.op = "upload part", .method = "PUT", .key = key, .query = q,
				 .n_query = 2, .body = buf + off, .body_len = MIN(part, len - off),
				 .has_body = true};
		S3Response resp = {0};
		r = s3_perform(sb, &req, &resp);
		if (r == 0 && resp.status != 200)
			r = status_errno(&req, resp.status);
		else if (r == 0 && !resp.etag[0])
			r = -EBADMSG;
		if (r == 0)
			memcpy(etags[i], resp.etag, sizeof(etags[i]));
		free(resp.body);
	}
	if (r == 0)
		r = s3_complete_upload(sb, key, upload_id, etags, n_parts, len, if_absent);
	if (r < 0)
		s3_abort_upload(sb, key, upload_id);
out:
	free(upload_id);
	free(etags);
	return r;
}

static int s3_put_any(StoreBackend *b, const char *name, const void *buf, size_t len,
		      bool if_absent)
{
	S3Backend *sb = (S3Backend *)b;
	char *key = NULL;
	int r = s3_key(sb, name, &key);
	if (r < 0)
		return r;
	/* a multipart upload is conditional at its completion */
	if (len > sb->threshold)
		r = s3_put_multipart(sb, key, buf, len, if_absent);
	else
		r = s3_put_single(sb, key, buf, len, if_absent);
	free(key);
	return r;
}

static int s3_put(StoreBackend *b, const char *name, const void *buf, size_t len)
{
	return s3_put_any(b, name, buf, len, false);
}

/*
 * If-None-Match: * on PUT (AWS since 2024-08, MinIO, Ceph RGW 18+). A retry
 * of a put whose first try went through also gets 412: the caller compares.
 */
static int s3_put_if_absent(StoreBackend *b, const char *name, const void *buf, size_t len)
{
	return s3_put_any(b, name, buf, len, true);
}

static int s3_head(S3Backend *sb, const char *key, uint64_t *ret_size)
{
	S3Request req = {.op = "size", .method = "HEAD", .key = key};
	S3Response resp = {0};
	int r = s3_perform(sb, &req, &resp);
	if (r == 0 && resp.status == 200 && resp.length >= 0)
		*ret_size = (uint64_t)resp.length;
	else if (r == 0 && resp.status == 200)
		r = -EBADMSG;
	else if (r == 0)
		r = status_errno(&req, resp.status);
	free(resp.body);
	return r;
}

static int s3_size(StoreBackend *b, const char *name, uint64_t *ret_size)
{
	S3Backend *sb = (S3Backend *)b;
	char *key = NULL;
	int r = s3_key(sb, name, &key);
	if (r < 0)
		return r;
	r = s3_head(sb, key, ret_size);
	free(key);
	return r;
}

static int s3_get_range(StoreBackend *b, const char *name, uint64_t offset, size_t len, void *buf)
{
	S3Backend *sb = (S3Backend *)b;
	char *key = NULL, range[64];
	S3Response resp = {0};
	uint64_t size;
	int r = s3_key(sb, name, &key);
	if (r < 0)
		return r;
	if (len == 0) {
		/* no empty Range exists: ask for the size */
		r = s3_head(sb, key, &size);
		if (r == 0 && offset > size)
			r = -ENODATA;
		free(key);
		return r;
	}
	snprintf(range, sizeof(range), "bytes=%" PRIu64 "-%" PRIu64, offset, offset + len - 1);
	S3Request req = {.op = "get", .method = "GET", .key = key, .range = range, .out = buf,
			 .out_len = len, .out_skip = offset};
	r = s3_perform(sb, &req, &resp);
	if (r == 0 && (resp.status == 206 || resp.status == 200))
		r = resp.out_got == len ? 0 : -ENODATA;
	else if (r == 0)
		r = status_errno(&req, resp.status);
	free(resp.body);
	free(key);
	return r;
}

/*
 * A whole object in one GET, sized by its Content-Length: a HEAD for the size
 * first was a request more for every config, catalog, manifest and WAL file.
 */
static int s3_get_all(StoreBackend *b, const char *name, size_t max, void **ret, size_t *ret_len)
{
	S3Backend *sb = (S3Backend *)b;
	char *key = NULL;
	S3Response resp = {0};
	int r = s3_key(sb, name, &key);
	if (r < 0)
		return r;
	S3Request req = {.op = "get", .method = "GET", .key = key, .whole = true, .whole_max = max};
	r = s3_perform(sb, &req, &resp);
	if (r == 0 && resp.status != 200)
		r = status_errno(&req, resp.status);
	else if (r == 0 && resp.length >= 0 && resp.out_got != (uint64_t)resp.length)
		r = -ENODATA;
	else if (r == 0 && !resp.obj && !(resp.obj = store_get_buf(0)))
		r = -ENOMEM; /* an empty object */
	if (r == 0) {
		*ret = TAKE_PTR(resp.obj);
		*ret_len = resp.out_got;
	}
	free(resp.obj);
	free(resp.body);
	free(key);
	return r;
}

/* Call cb for each <Contents> of one ListObjectsV2 page. */
static int s3_list_page(S3Backend *sb, const S3Response *resp, StoreListFn cb, void *userdata)
{
	const char *p = resp->body, *end = resp->body + resp->body_len;
	bool url = strstr(p, "<EncodingType>url</EncodingType>") != NULL;
	size_t plen = strlen(sb->prefix);

	for (;;) {
		const char *c = strstr(p, "<Contents>"), *ce;
		char *key, *size_s, *e;
		uint64_t size;
		int r = 0;

		if (!c)
			return 0;
		ce = strstr(c, "</Contents>");
		if (!ce)
			return -EBADMSG;
		key = xml_text(c, ce, "Key", NULL);
		size_s = xml_text(c, ce, "Size", NULL);
		if (!key || !size_s || (url && url_decode(key) < 0))
			r = -EBADMSG;
		if (r == 0) {
			errno = 0;
			size = strtoull(size_s, &e, 10);
			if (errno || e == size_s || *e)
				r = -EBADMSG;
		}
		if (r == 0 && strncmp(key, sb->prefix, plen) == 0 && key[plen])
			r = cb(key + plen, size, userdata);
		free(key);
		free(size_s);
		if (r != 0)
			return r;
		p = ce + strlen("</Contents>");
		if (p > end)
			return -EBADMSG;
	}
}

static int s3_list(StoreBackend *b, const char *prefix, StoreListFn cb, void *userdata)
{
	S3Backend *sb = (S3Backend *)b;
	size_t n = strlen(prefix);
	char *full = NULL, *token = NULL;
	int r;

	/* prefixes are directory names ("packs/" or "packs"), as with the local driver */
	if (asprintf(&full, "%s%s%s", sb->prefix, prefix, n && prefix[n - 1] != '/' ? "/" : "") < 0)
		return -ENOMEM;
	do {
		SigV4Pair q[4] = {{"list-type", "2"}, {"prefix", full}, {"encoding-type", "url"}};
		size_t n_q = 3;
		if (token)
			q[n_q++] = (SigV4Pair){"continuation-token", token};
		S3Request req = {.op = "list", .method = "GET", .key = NULL, .query = q, .n_query = n_q};
		S3Response resp = {0};
		bool truncated;

		r = s3_perform(sb, &req, &resp);
		if (r == 0 && resp.status != 200)
			r = status_errno(&req, resp.status);
		if (r == 0 && !resp.body)
			r = -EBADMSG;
		if (r == 0)
			r = s3_list_page(sb, &resp, cb, userdata);
		free(token);
		token = NULL;
		if (r == 0) {
			truncated = strstr(resp.body, "<IsTruncated>true</IsTruncated>") != NULL;
			if (truncated) {
				token = xml_text(resp.body, resp.body + resp.body_len,
						 "NextContinuationToken", NULL);
				if (!token || !*token)
					r = -EBADMSG;
			}
		}
		free(resp.body);
	} while (r == 0 && token);
	free(token);
	free(full);
	return r;
}

static int s3_delete(StoreBackend *b, const char *name)
{
	S3Backend *sb = (S3Backend *)b;
	char *key = NULL;
	S3Response resp = {0};
	int r = s3_key(sb, name, &key);
	if (r < 0)
		return r;
	S3Request req = {.op = "delete", .method = "DELETE", .key = key};
	r = s3_perform(sb, &req, &resp);
	if (r == 0 && resp.status != 204 && resp.status != 200 && resp.status != 404)
		r = status_errno(&req, resp.status);
	free(resp.body);
	free(key);
	return r;
}

static void s3_free(StoreBackend *b)
{
	S3Backend *sb = (S3Backend *)b;
	for (size_t i = 0; i < sb->n_pool; i++)
		curl_easy_cleanup(sb->pool[i]);
	if (sb->share)
		curl_share_cleanup(sb->share);
	for (size_t i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&sb->share_lock[i]);
	pthread_mutex_destroy(&sb->pool_lock);
	free(sb->origin);
	free(sb->host);
	free(sb->path_base);
	free(sb->region);
	free(sb->bucket);
	free(sb->prefix);
	free(sb->access_key);
	if (sb->secret_key) {
		explicit_bzero(sb->secret_key, strlen(sb->secret_key));
		free(sb->secret_key);
	}
	free(sb->session_token);
	free(sb->ca_file);
	free(sb);
}

static const StoreBackendOps s3_ops = {
	.name = "s3",
	.features = STORE_FEATURE_CONDITIONAL_PUT,
	.put = s3_put,
	.put_if_absent = s3_put_if_absent,
	.get_range = s3_get_range,
	.size = s3_size,
	.get_all = s3_get_all,
	.list = s3_list,
	.delete = s3_delete,
	.free = s3_free,
};

static char *dup_or_null(const char *s, bool *oom)
{
	char *d;
	if (!s)
		return NULL;
	d = strdup(s);
	if (!d)
		*oom = true;
	return d;
}

/* origin, Host and path base from the endpoint ("scheme://host[:port][/]"). */
static int s3_addressing(S3Backend *sb, const char *endpoint, bool virtual_host)
{
	const char *hp = strstr(endpoint, "://");
	size_t scheme_len, hp_len;

	if (!hp)
		return -EINVAL;
	scheme_len = (size_t)(hp - endpoint);
	if (!((scheme_len == 4 && !strncmp(endpoint, "http", 4)) ||
	      (scheme_len == 5 && !strncmp(endpoint, "https", 5))))
		return -EINVAL;
	hp += 3;
	hp_len = strcspn(hp, "/");
	if (hp_len == 0 || (hp[hp_len] && strcmp(hp + hp_len, "/") != 0))
		return -EINVAL; /* no path in the endpoint */
	if (virtual_host) {
		if (asprintf(&sb->host, "%s.%.*s", sb->bucket, (int)hp_len, hp) < 0)
			return -ENOMEM;
		if (asprintf(&sb->path_base, "%s", "") < 0)
			return -ENOMEM;
	} else {
		if (asprintf(&sb->host, "%.*s", (int)hp_len, hp) < 0)
			return -ENOMEM;
		if (asprintf(&sb->path_base, "/%s", sb->bucket) < 0)
			return -ENOMEM;
	}
	if (asprintf(&sb->origin, "%.*s://%s", (int)scheme_len, endpoint, sb->host) < 0)
		return -ENOMEM;
	return 0;
}

int store_s3_new(const StoreS3Config *cfg, StoreBackend **ret)
{
	S3Backend *sb;
	bool oom = false;
	const char *prefix = cfg->prefix ? cfg->prefix : "";
	size_t plen;
	int r;

	if (!cfg->endpoint || !cfg->bucket || !*cfg->bucket || strchr(cfg->bucket, '/') ||
	    !cfg->access_key || !cfg->secret_key)
		return -EINVAL;
	if (cfg->part_size && cfg->part_size < S3_MIN_PART)
		return -EINVAL;
	pthread_once(&global_once, global_init);
	if (global_rc != CURLE_OK)
		return -EIO;

	sb = calloc(1, sizeof(*sb));
	if (!sb)
		return -ENOMEM;
	pthread_mutex_init(&sb->pool_lock, NULL);
	for (size_t i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&sb->share_lock[i], NULL);
	store_backend_init(&sb->base, &s3_ops);

	while (*prefix == '/')
		prefix++;
	plen = strlen(prefix);
	while (plen && prefix[plen - 1] == '/')
		plen--;
	if (asprintf(&sb->prefix, "%.*s%s", (int)plen, prefix, plen ? "/" : "") < 0) {
		sb->prefix = NULL;
		oom = true;
	}
	sb->region = dup_or_null(cfg->region ? cfg->region : "us-east-1", &oom);
	sb->bucket = dup_or_null(cfg->bucket, &oom);
	sb->access_key = dup_or_null(cfg->access_key, &oom);
	sb->secret_key = dup_or_null(cfg->secret_key, &oom);
	sb->session_token = dup_or_null(cfg->session_token, &oom);
	sb->ca_file = dup_or_null(cfg->ca_file, &oom);
	if (oom) {
		r = -ENOMEM;
		goto fail;
	}
	r = s3_addressing(sb, cfg->endpoint, cfg->virtual_host);
	if (r < 0)
		goto fail;
	sb->threshold = cfg->multipart_threshold ? cfg->multipart_threshold : (size_t)64 << 20;
	sb->part_size = cfg->part_size ? cfg->part_size : (size_t)16 << 20;
	sb->max_attempts = cfg->max_attempts ? cfg->max_attempts : 6;
	sb->deadline_ms = cfg->deadline_ms ? cfg->deadline_ms : 300000;
	sb->stall_ms = cfg->stall_ms ? cfg->stall_ms : 30000;
	sb->backoff_ms = cfg->backoff_ms ? cfg->backoff_ms : 100;

	sb->share = curl_share_init();
	if (!sb->share) {
		r = -ENOMEM;
		goto fail;
	}
	curl_share_setopt(sb->share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(sb->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(sb->share, CURLSHOPT_USERDATA, sb);
	curl_share_setopt(sb->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(sb->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	*ret = &sb->base;
	return 0;
fail:
	s3_free(&sb->base);
	return r;
}
