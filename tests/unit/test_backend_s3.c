/*
 * Tests for the S3 driver (store/backend_s3.c) against a real S3-compatible
 * server, s3rver (tests/s3/server.js, installed by tools/test with npm ci),
 * started here on 127.0.0.1, and through tests/s3/proxy.js, a proxy of our
 * own that drops connections, answers 500/503/429, cuts bodies and stalls.
 * Skipped (exit 77, which ctest reports as skipped, with a message) when node
 * or s3rver is not installed.
 */
#include "tests/unit/test.h"
#include "tests/unit/backend_conformance.h"

#include "common/log.h"
#include "store/backend.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#define BUCKET "pgbakfs-test"
#define ACCESS "S3RVER"
#define SECRET "S3RVER"
#define N_MANY 1005

static char src_root[PATH_MAX];

typedef struct Helper {
	pid_t pid;
	int port;
} Helper;

static bool find_node(void)
{
	const char *path = getenv("PATH");
	char dir[PATH_MAX], exe[PATH_MAX + 8];
	while (path && *path) {
		size_t n = strcspn(path, ":");
		snprintf(dir, sizeof(dir), "%.*s", (int)n, path);
		test_fmt(exe, sizeof(exe), "%s/node", *dir ? dir : ".");
		if (access(exe, X_OK) == 0)
			return true;
		path += n + (path[n] == ':');
	}
	return false;
}

/* Start "node tests/s3/<script> args..." and wait for its "ready PORT" line. */
static bool helper_start(Helper *h, const char *script, const char *a1, const char *a2,
			 const char *a3)
{
	char js[PATH_MAX + 32], line[128];
	size_t len = 0;
	int fds[2];

	test_fmt(js, sizeof(js), "%s/tests/s3/%s", src_root, script);
	if (pipe(fds) < 0)
		return false;
	h->pid = fork();
	if (h->pid < 0)
		return false;
	if (h->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		dup2(fds[1], 1);
		close(fds[0]);
		close(fds[1]);
		/* s3rver's continuation tokens use DES, in OpenSSL 3's legacy provider */
		execlp("node", "node", "--openssl-legacy-provider", js, a1, a2, a3, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	while (len < sizeof(line) - 1) {
		struct pollfd p = {.fd = fds[0], .events = POLLIN};
		ssize_t n;
		if (poll(&p, 1, 60000) <= 0)
			break;
		n = read(fds[0], line + len, 1);
		if (n <= 0 || line[len] == '\n')
			break;
		len++;
	}
	line[len] = '\0';
	close(fds[0]);
	if (sscanf(line, "ready %d", &h->port) != 1) {
		fprintf(stderr, "%s did not start (\"%s\")\n", script, line);
		kill(h->pid, SIGKILL);
		waitpid(h->pid, NULL, 0);
		h->pid = 0;
		return false;
	}
	return true;
}

static void helper_stop(Helper *h)
{
	if (h->pid <= 0)
		return;
	kill(h->pid, SIGTERM);
	waitpid(h->pid, NULL, 0);
	h->pid = 0;
}

static size_t sink(char *d, size_t s, size_t n, void *u)
{
	char *out = u;
	size_t len = strlen(out), take = MIN(s * n, 63 - len);
	memcpy(out + len, d, take);
	out[len + take] = '\0';
	return s * n;
}

/* GET http://127.0.0.1:port/path from the proxy's control interface; the answer's first line. */
static long proxy_ctl(int port, const char *path)
{
	char url[256], out[64] = "";
	CURL *c = curl_easy_init();
	if (!c)
		return -1;
	test_fmt(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
	CURLcode r = curl_easy_perform(c);
	curl_easy_cleanup(c);
	if (r != CURLE_OK)
		return -1;
	return strtol(out, NULL, 10);
}

static void config(StoreS3Config *c, int port, const char *prefix)
{
	static char endpoint[64];
	test_fmt(endpoint, sizeof(endpoint), "http://127.0.0.1:%d", port);
	*c = (StoreS3Config){
		.endpoint = endpoint,
		.region = "us-east-1",
		.bucket = BUCKET,
		.prefix = prefix,
		.access_key = ACCESS,
		.secret_key = SECRET,
		.multipart_threshold = 8 << 20,
		.part_size = 5 << 20,
		.backoff_ms = 10,
		.deadline_ms = 30000,
		.stall_ms = 1000,
	};
}

typedef struct ManyArgs {
	StoreBackend *b;
	int first, step;
	int failed;
} ManyArgs;

static void *put_many(void *p)
{
	ManyArgs *a = p;
	char name[64];
	for (int i = a->first; i < N_MANY; i += a->step) {
		snprintf(name, sizeof(name), "many/%04d.obj", i);
		if (store_put(a->b, name, name, strlen(name)) != 0)
			a->failed++;
	}
	return NULL;
}

static void test_conformance(int port)
{
	StoreS3Config cfg;
	StoreBackend *b = NULL, *other = NULL;
	static uint8_t data[CONFORMANCE_DATA_LEN], got[16];
	uint64_t size = 0;
	Listing l = {0};
	uint8_t *big = NULL, *bigback = NULL;
	const size_t big_len = (20 << 20) + 12345;

	config(&cfg, port, "/repo/one/");
	test_random(data, sizeof(data));
	if (!CHECK_EQ_INT(store_s3_new(&cfg, &b), 0))
		return;
	CHECK_EQ_STR(b->ops->name, "s3");
	CHECK((b->ops->features & STORE_FEATURE_LOCAL_PATH) == 0);

	conformance_put_get(b, data);
	/* an empty range past the end (the local driver answers 0 to this one, not -ENODATA) */
	CHECK_EQ_INT(store_get_range(b, "config", 6, 0, got), -ENODATA);
	conformance_list(b);

	/* another prefix in the same bucket sees nothing of the first */
	config(&cfg, port, "repo/two");
	CHECK_EQ_INT(store_s3_new(&cfg, &other), 0);
	if (other) {
		l = (Listing){0};
		CHECK_EQ_INT(store_list(other, "", collect, &l), 0);
		CHECK_EQ_INT(l.n, 0);
		CHECK_EQ_INT(store_size(other, "config", &size), -ENOENT);
		other = store_backend_free(other);
	}

	conformance_overwrite_delete(b);

	/* more than 1000 keys: ListObjectsV2 pages; four threads share the driver */
	{
		pthread_t t[4];
		ManyArgs a[4];
		int failed = 0;
		for (int i = 0; i < 4; i++) {
			a[i] = (ManyArgs){.b = b, .first = i, .step = 4};
			pthread_create(&t[i], NULL, put_many, &a[i]);
		}
		for (int i = 0; i < 4; i++) {
			pthread_join(t[i], NULL);
			failed += a[i].failed;
		}
		CHECK_EQ_INT(failed, 0);
		l = (Listing){0};
		CHECK_EQ_INT(store_list(b, "many", collect, &l), 0);
		CHECK_EQ_INT(l.total, N_MANY);
		CHECK_EQ_INT(l.sizes[0], strlen("many/0000.obj"));
		l = (Listing){0};
		CHECK_EQ_INT(store_list(b, "", collect, &l), 0);
		CHECK_EQ_INT(l.total, N_MANY + 3);
	}

	/* a multipart object (20 MiB in 5 MiB parts), read back byte for byte */
	big = malloc(big_len);
	bigback = malloc(big_len);
	if (CHECK(big && bigback)) {
		test_random(big, big_len);
		CHECK_EQ_INT(store_put(b, "packs/big.pack", big, big_len), 0);
		CHECK_EQ_INT(store_size(b, "packs/big.pack", &size), 0);
		CHECK_EQ_INT(size, big_len);
		memset(bigback, 0, big_len);
		CHECK_EQ_INT(store_get_range(b, "packs/big.pack", 0, big_len, bigback), 0);
		CHECK(memcmp(big, bigback, big_len) == 0);
		/* whole, in one GET of a buffer sized by Content-Length (2 MiB-aligned: huge) */
		void *all = NULL;
		size_t all_len = 0;
		CHECK_EQ_INT(store_get_all(b, "packs/big.pack", big_len, &all, &all_len), 0);
		CHECK(all && all_len == big_len && memcmp(all, big, big_len) == 0);
		CHECK(((uintptr_t)all & ((2u << 20) - 1)) == 0);
		free(all);
		CHECK_EQ_INT(store_get_range(b, "packs/big.pack", (5 << 20) - 7, 20, bigback), 0);
		CHECK(memcmp(big + (5 << 20) - 7, bigback, 20) == 0);
		CHECK_EQ_INT(store_delete(b, "packs/big.pack"), 0);
	}
	free(big);
	free(bigback);
	store_backend_free(b);

	/*
	 * Unknown credentials: refused at once, not retried. (s3rver checks the
	 * access key but not SigV4 signatures: test_sigv4 proves those.)
	 */
	config(&cfg, port, "repo/one");
	cfg.access_key = "AKIDUNKNOWN";
	CHECK_EQ_INT(store_s3_new(&cfg, &b), 0);
	if (b) {
		CHECK_EQ_INT(store_size(b, "config", &size), -EACCES);
		CHECK_EQ_INT(store_put(b, "x", "x", 1), -EACCES);
		b = store_backend_free(b);
	}

	/* virtual-host addressing: BUCKET.s3.localhost */
	{
		char endpoint[64];
		config(&cfg, port, "vhost");
		cfg.endpoint = test_fmt(endpoint, sizeof(endpoint), "http://s3.localhost:%d", port);
		cfg.virtual_host = true;
		cfg.session_token = "FQoGZXIvYXdzEXAMPLETOKEN"; /* sent as x-amz-security-token */
		CHECK_EQ_INT(store_s3_new(&cfg, &b), 0);
		if (b) {
			CHECK_EQ_INT(store_put(b, "v/obj", "vhost", 5), 0);
			CHECK_EQ_INT(store_get_range(b, "v/obj", 1, 4, got), 0);
			CHECK(memcmp(got, "host", 4) == 0);
			l = (Listing){0};
			CHECK_EQ_INT(store_list(b, "v", collect, &l), 0);
			CHECK_EQ_INT(l.n, 1);
			CHECK_EQ_INT(listed(&l, "v/obj"), 5);
			CHECK_EQ_INT(store_delete(b, "v/obj"), 0);
			b = store_backend_free(b);
		}
	}

	/* bad configurations */
	config(&cfg, port, "");
	cfg.endpoint = "ftp://127.0.0.1";
	CHECK_EQ_INT(store_s3_new(&cfg, &b), -EINVAL);
	cfg.endpoint = "http://127.0.0.1:1/path";
	CHECK_EQ_INT(store_s3_new(&cfg, &b), -EINVAL);
	config(&cfg, port, "");
	cfg.part_size = 1 << 20;
	CHECK_EQ_INT(store_s3_new(&cfg, &b), -EINVAL);
	config(&cfg, port, "");
	cfg.bucket = NULL;
	CHECK_EQ_INT(store_s3_new(&cfg, &b), -EINVAL);
}

static long count(int pport)
{
	return proxy_ctl(pport, "/__count");
}

static void plan(int pport, const char *p)
{
	char path[256];
	CHECK_EQ_INT(proxy_ctl(pport, test_fmt(path, sizeof(path), "/__fault?%s", p)), 0);
}

static void test_faults(int pport)
{
	StoreS3Config cfg;
	StoreBackend *b = NULL;
	static uint8_t data[100000], got[100000];
	uint64_t size = 0;
	Listing l = {0};
	long c0;
	int64_t t0;
	uint8_t *big = NULL, *bigback = NULL;
	const size_t big_len = 12 << 20;

	config(&cfg, pport, "faults");
	test_random(data, sizeof(data));
	if (!CHECK_EQ_INT(store_s3_new(&cfg, &b), 0))
		return;

	/* transient faults: each operation retries through them */
	plan(pport, "plan=drop,500");
	c0 = count(pport);
	CHECK_EQ_INT(store_put(b, "obj", data, sizeof(data)), 0);
	CHECK_EQ_INT(count(pport) - c0, 3);

	plan(pport, "plan=503,429,cut");
	c0 = count(pport);
	memset(got, 0, sizeof(got));
	CHECK_EQ_INT(store_get_range(b, "obj", 0, sizeof(data), got), 0);
	CHECK(memcmp(got, data, sizeof(data)) == 0);
	CHECK_EQ_INT(count(pport) - c0, 4);

	plan(pport, "plan=cut,cut");
	memset(got, 0, sizeof(got));
	CHECK_EQ_INT(store_get_range(b, "obj", 777, 50000, got), 0);
	CHECK(memcmp(got, data + 777, 50000) == 0);

	/* a whole object: one request (no HEAD first), and the same retries */
	{
		void *all = NULL;
		size_t all_len = 0;
		c0 = count(pport);
		CHECK_EQ_INT(store_get_all(b, "obj", sizeof(data), &all, &all_len), 0);
		CHECK_EQ_INT(count(pport) - c0, 1);
		CHECK(all && all_len == sizeof(data) && memcmp(all, data, sizeof(data)) == 0);
		free(all);
		all = NULL;
		plan(pport, "plan=503,cut,drop");
		c0 = count(pport);
		CHECK_EQ_INT(store_get_all(b, "obj", sizeof(data), &all, &all_len), 0);
		CHECK_EQ_INT(count(pport) - c0, 4);
		CHECK(all && all_len == sizeof(data) && memcmp(all, data, sizeof(data)) == 0);
		free(all);
		all = NULL;
		plan(pport, "always=cut");
		CHECK(store_get_all(b, "obj", sizeof(data), &all, &all_len) < 0);
		CHECK(all == NULL);
		plan(pport, "plan=");
	}

	/* a stalled answer times out (stall_ms) and is retried */
	plan(pport, "plan=stall");
	c0 = count(pport);
	CHECK_EQ_INT(store_size(b, "obj", &size), 0);
	CHECK_EQ_INT(size, sizeof(data));
	CHECK_EQ_INT(count(pport) - c0, 2);
	/* a body held back longer than stall_ms: a timeout, then a retry */
	plan(pport, "plan=slow");
	CHECK_EQ_INT(store_get_range(b, "obj", 0, 100, got), 0);
	CHECK(memcmp(got, data, 100) == 0);

	plan(pport, "plan=drop,cut,503");
	l = (Listing){0};
	CHECK_EQ_INT(store_list(b, "", collect, &l), 0);
	CHECK_EQ_INT(l.n, 1);
	CHECK_EQ_INT(listed(&l, "obj"), sizeof(data));

	plan(pport, "plan=500,drop");
	CHECK_EQ_INT(store_put(b, "gone", "x", 1), 0);
	plan(pport, "plan=500,drop");
	CHECK_EQ_INT(store_delete(b, "gone"), 0);
	CHECK_EQ_INT(store_size(b, "gone", &size), -ENOENT);

	/* a multipart upload with faults on initiate, parts and completion */
	big = malloc(big_len);
	bigback = malloc(big_len);
	if (CHECK(big && bigback)) {
		test_random(big, big_len);
		plan(pport, "plan=503,pass,drop,pass,500,pass,429");
		CHECK_EQ_INT(store_put(b, "big", big, big_len), 0);
		plan(pport, "plan=cut");
		memset(bigback, 0, big_len);
		CHECK_EQ_INT(store_get_range(b, "big", 0, big_len, bigback), 0);
		CHECK(memcmp(big, bigback, big_len) == 0);
	}

	/* permanent failures: an error after max_attempts tries, never a hang or bad data */
	plan(pport, "always=503");
	c0 = count(pport);
	CHECK_EQ_INT(store_put(b, "never", data, 10), -EIO);
	CHECK_EQ_INT(count(pport) - c0, 6);
	memset(got, 0xAA, 100);
	CHECK_EQ_INT(store_get_range(b, "obj", 0, 100, got), -EIO);
	CHECK_EQ_INT(store_size(b, "obj", &size), -EIO);
	CHECK_EQ_INT(store_list(b, "", collect, &l), -EIO);
	CHECK_EQ_INT(store_delete(b, "obj"), -EIO);
	if (big) {
		plan(pport, "always=drop");
		CHECK(store_put(b, "big2", big, big_len) < 0); /* initiate fails */
	}
	plan(pport, "always=cut");
	CHECK(store_get_range(b, "obj", 0, sizeof(data), got) < 0);
	store_backend_free(b);

	/* a server that never answers: the deadline ends it */
	config(&cfg, pport, "faults");
	cfg.deadline_ms = 3000;
	CHECK_EQ_INT(store_s3_new(&cfg, &b), 0);
	if (b) {
		plan(pport, "always=stall");
		t0 = mono_ns();
		CHECK_EQ_INT(store_size(b, "obj", &size), -ETIMEDOUT);
		CHECK((mono_ns() - t0) / 1000000 < 6000);
		plan(pport, "plan=");
		/* nothing was damaged by all this */
		CHECK_EQ_INT(store_get_range(b, "obj", 0, sizeof(data), got), 0);
		CHECK(memcmp(got, data, sizeof(data)) == 0);
		l = (Listing){0};
		CHECK_EQ_INT(store_list(b, "", collect, &l), 0);
		CHECK_EQ_INT(l.n, 2);
		CHECK_EQ_INT(listed(&l, "big"), big_len);
		CHECK_EQ_INT(listed(&l, "never"), -1);
		CHECK_EQ_INT(listed(&l, "big2"), -1);
		store_backend_free(b);
	}
	free(big);
	free(bigback);
}

typedef struct RaceArgs {
	StoreBackend *b;
	const char *name;
	uint8_t *buf;
	size_t len;
	int r;
} RaceArgs;

static void *put_if_absent_thread(void *p)
{
	RaceArgs *a = p;
	a->r = store_put_if_absent(a->b, a->name, a->buf, a->len);
	return NULL;
}

/*
 * Conditional put through the proxy (which gives s3rver AWS's If-None-Match
 * semantics): a new name is written, an existing one is -EEXIST and kept;
 * two threads racing for one name: exactly one writes; multipart too.
 */
static void test_conditional(int sport, int pport)
{
	StoreS3Config cfg;
	StoreBackend *b = NULL, *direct = NULL;
	static uint8_t a[70000], z[70000], got[70000];
	uint8_t *big = NULL, *bigback = NULL;
	const size_t big_len = 9 << 20; /* over the 8 MiB multipart threshold of config() */
	char name[64];

	test_random(a, sizeof(a));
	test_random(z, sizeof(z));
	config(&cfg, pport, "cond");
	if (!CHECK_EQ_INT(store_s3_new(&cfg, &b), 0))
		return;
	CHECK(b->ops->features & STORE_FEATURE_CONDITIONAL_PUT);
	CHECK_EQ_INT(store_put_if_absent(b, "one", a, sizeof(a)), 0);
	CHECK_EQ_INT(store_put_if_absent(b, "one", z, sizeof(z)), -EEXIST);
	CHECK(store_get_range(b, "one", 0, sizeof(got), got) == 0 && !memcmp(got, a, sizeof(a)));
	/* the answer to a retried put whose first try went through is 412 too */
	plan(pport, "only=PUT%20/" BUCKET "/cond/two&plan=lose");
	CHECK_EQ_INT(store_put_if_absent(b, "two", a, sizeof(a)), -EEXIST);
	plan(pport, "plan=");
	CHECK(store_get_range(b, "two", 0, sizeof(got), got) == 0 && !memcmp(got, a, sizeof(a)));
	/* races: one winner each, and the object is the winner's */
	for (int i = 0; i < 8; i++) {
		RaceArgs r1 = {b, name, a, sizeof(a), 1}, r2 = {b, name, z, sizeof(z), 1};
		pthread_t t1, t2;
		test_fmt(name, sizeof(name), "race/%d", i);
		pthread_create(&t1, NULL, put_if_absent_thread, &r1);
		pthread_create(&t2, NULL, put_if_absent_thread, &r2);
		pthread_join(t1, NULL);
		pthread_join(t2, NULL);
		if (CHECK((r1.r == 0 && r2.r == -EEXIST) || (r1.r == -EEXIST && r2.r == 0)))
			CHECK(store_get_range(b, name, 0, sizeof(got), got) == 0 &&
			      !memcmp(got, r1.r == 0 ? a : z, sizeof(got)));
	}
	/* multipart: conditional at the completion, the loser's upload aborted */
	big = malloc(big_len);
	bigback = malloc(big_len);
	if (CHECK(big && bigback)) {
		test_random(big, big_len);
		CHECK_EQ_INT(store_put_if_absent(b, "big", big, big_len), 0);
		big[5] ^= 1;
		CHECK_EQ_INT(store_put_if_absent(b, "big", big, big_len), -EEXIST);
		big[5] ^= 1;
		CHECK(store_get_range(b, "big", 0, big_len, bigback) == 0 &&
		      !memcmp(big, bigback, big_len));
	}
	free(big);
	free(bigback);
	/* s3rver itself ignores If-None-Match: a plain put, hence the proxy's emulation */
	config(&cfg, sport, "cond");
	if (CHECK_EQ_INT(store_s3_new(&cfg, &direct), 0)) {
		CHECK_EQ_INT(store_put_if_absent(direct, "one", z, sizeof(z)), 0);
		CHECK(store_get_range(b, "one", 0, sizeof(got), got) == 0 && !memcmp(got, z, sizeof(z)));
	}
	store_backend_free(direct);
	store_backend_free(b);
}

int main(void)
{
	char tmp[64], dir[PATH_MAX], port[16], mods[PATH_MAX + 64], logf[PATH_MAX];
	int saved_err, log_fd;
	Helper server = {0}, proxy = {0};
	const char *self = __FILE__, *tail = strstr(self, "/tests/unit/test_backend_s3.c");

	if (!find_node()) {
		printf("skipped: node is not installed (tools/test installs it), S3 driver not tested\n");
		return 77;
	}
	if (!tail || self[0] != '/') {
		fprintf(stderr, "cannot locate the source tree from \"%s\"\n", self);
		return 1;
	}
	snprintf(src_root, sizeof(src_root), "%.*s", (int)(tail - self), self);
	if (access(test_fmt(mods, sizeof(mods), "%s/tests/s3/node_modules/s3rver", src_root), F_OK) <
	    0) {
		printf("skipped: s3rver is not installed: run npm ci --prefix tests/s3 (tools/test does)\n");
		return 77;
	}
	/* the fault tests warn on purpose: keep the warnings to prove they hold no secret */
	log_set_level(LOG_WARNING);
	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	test_tmpdir(tmp, sizeof(tmp));
	test_fmt(dir, sizeof(dir), "%s/s3", tmp);
	test_fmt(logf, sizeof(logf), "%s/stderr.log", tmp);
	fflush(stderr);
	saved_err = dup(2);
	log_fd = open(logf, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (!CHECK(saved_err >= 0 && log_fd >= 0))
		return test_finish();
	dup2(log_fd, 2);
	close(log_fd);
	if (CHECK(helper_start(&server, "server.js", "0", dir, BUCKET))) {
		test_conformance(server.port);
		snprintf(port, sizeof(port), "%d", server.port);
		if (CHECK(helper_start(&proxy, "proxy.js", port, NULL, NULL))) {
			test_faults(proxy.port);
			test_conditional(server.port, proxy.port);
		}
	}
	helper_stop(&proxy);
	helper_stop(&server);
	fflush(stderr);
	dup2(saved_err, 2);
	close(saved_err);
	{
		/* what the driver said: warnings with statuses, never a secret or a signature */
		char *text = NULL;
		size_t len = 0;
		if (CHECK_EQ_INT(file_read_all(logf, 1 << 20, &text, &len), 0)) {
			fputs(text, stderr);
			CHECK(strstr(text, "s3 put \"faults/never\" failed: HTTP 503") != NULL);
			CHECK(strstr(text, "HTTP 403") != NULL);
			CHECK(strstr(text, SECRET) == NULL); /* also the access key, here */
			CHECK(strstr(text, "EXAMPLETOKEN") == NULL);
			CHECK(strstr(text, "Signature") == NULL);
			CHECK(strstr(text, "Credential") == NULL);
		}
		free(text);
	}
	TEST_RM_RF(tmp);
	curl_global_cleanup();
	return test_finish();
}
