#include "store/remote.h"
#include "common/log.h"
#include "common/util.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOCK_MAX_BYTES 4096

struct RemoteLock {
	StoreBackend *backend;
	char name[64];  /* locks/<owner> */
	char owner[33];
	unsigned lease_s;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	bool stop;
	bool lost;
	/* mono_ns when the last successful write of the lock object began: the
	 * object says "expires" lease_s after about that time, so the lease is
	 * ours until last_renewed + lease_s at the earliest */
	int64_t last_renewed;
};

typedef struct LockInfo {
	char owner[33];
	char holder[128];
	int64_t expires; /* unix seconds */
} LockInfo;

static int lock_put(RemoteLock *l)
{
	char host[64] = "?", text[256];
	int n;

	gethostname(host, sizeof(host) - 1);
	n = snprintf(text, sizeof(text),
		     "# pgbakfs writer lock\nowner = %s\nhost = %s\npid = %ld\nexpires = %lld\n",
		     l->owner, host, (long)getpid(), (long long)time(NULL) + l->lease_s);
	if (n < 0 || (size_t)n >= sizeof(text))
		return -ENAMETOOLONG;
	return store_put(l->backend, l->name, text, (size_t)n);
}

static int lock_parse(const char *text, size_t len, LockInfo *ret);

/*
 * Read and parse a lock object. Some S3-compatible servers (s3rver, a plain
 * filesystem underneath) let a reader see an object while it is rewritten:
 * a torn read is retried before it counts as damage.
 */
static int lock_read(StoreBackend *b, const char *name, LockInfo *ret)
{
	int r = 0;
	for (int attempt = 0; attempt < 3; attempt++) {
		void *buf = NULL;
		size_t len = 0;
		if (attempt) {
			struct timespec ts = {0, 200 * 1000000};
			nanosleep(&ts, NULL);
		}
		r = store_get_all(b, name, LOCK_MAX_BYTES, &buf, &len);
		if (r == 0)
			r = lock_parse(buf, len, ret);
		free(buf);
		if (r == 0 || r == -ENOENT)
			return r;
	}
	return r == -EFBIG || r == -ENODATA ? -EBADMSG : r;
}

static int lock_parse(const char *text, size_t len, LockInfo *ret)
{
	char buf[LOCK_MAX_BYTES + 1], *save = NULL, host[64] = "?";
	long pid = 0;
	LockInfo li = {.expires = -1};

	if (len > LOCK_MAX_BYTES)
		return -EBADMSG;
	memcpy(buf, text, len);
	buf[len] = 0;
	for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		long long v;
		if (sscanf(line, "owner = %32s", li.owner) == 1 || sscanf(line, "host = %63s", host) == 1 ||
		    sscanf(line, "pid = %ld", &pid) == 1)
			continue;
		if (sscanf(line, "expires = %lld", &v) == 1)
			li.expires = v;
	}
	if (!li.owner[0] || li.expires < 0)
		return -EBADMSG;
	snprintf(li.holder, sizeof(li.holder), "%s pid %ld", host, pid);
	*ret = li;
	return 0;
}

typedef struct Names {
	char **v;
	size_t n;
} Names;

static int names_add(const char *name, uint64_t size _unused_, void *userdata)
{
	Names *ns = userdata;
	char **v = realloc(ns->v, (ns->n + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	ns->v = v;
	if (!(ns->v[ns->n] = strdup(name)))
		return -ENOMEM;
	ns->n++;
	return 0;
}

static void names_clear(Names *ns)
{
	for (size_t i = 0; i < ns->n; i++)
		free(ns->v[i]);
	free(ns->v);
	*ns = (Names){0};
}

/*
 * A writer lock's name: the prefix and an owner in hex digits (32 of them
 * from remote_lock_acquire). Other files share
 * the prefix in a directory repository (wal-push's locks/wal-NN.lock, held
 * with flock): they are not writer locks, and deleting one would let two
 * pushes of one WAL name run at once.
 */
static bool is_writer_lock(const char *name)
{
	size_t n = strlen(REMOTE_LOCK_PREFIX);
	return strncmp(name, REMOTE_LOCK_PREFIX, n) == 0 && name[n] &&
	       hex_is_lower(name + n, strlen(name + n));
}

/*
 * Look at every writer lock but ours: 1 with *holder set if one is live;
 * expired or unreadable ones (a holder that died mid-put) are deleted. 0 when
 * none is live.
 */
static int others_live(RemoteLock *l, char *holder, size_t holder_len)
{
	Names ns = {0};
	int live = 0, r = store_list(l->backend, REMOTE_LOCK_PREFIX, names_add, &ns);

	for (size_t i = 0; r == 0 && i < ns.n && !live; i++) {
		LockInfo li;

		if (strcmp(ns.v[i], l->name) == 0 || !is_writer_lock(ns.v[i]))
			continue;
		r = lock_read(l->backend, ns.v[i], &li);
		if (r == -ENOENT) { /* released meanwhile */
			r = 0;
			continue;
		}
		if (r < 0 && r != -EBADMSG)
			break;
		if (r == 0 && li.expires > time(NULL)) {
			snprintf(holder, holder_len, "%s", li.holder);
			live = 1;
		} else {
			log_info("removing the %s writer lock %s", r == 0 ? "expired" : "damaged",
				 ns.v[i]);
			r = store_delete(l->backend, ns.v[i]);
		}
	}
	names_clear(&ns);
	return r < 0 ? r : live;
}

static void *renew_thread(void *arg)
{
	RemoteLock *l = arg;
	thread_name("lock-renew");
	int64_t period_ns = (int64_t)l->lease_s * 1000000000 / 4;

	pthread_mutex_lock(&l->mu);
	while (!l->stop) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		int64_t deadline = timespec_to_ns(&ts) + period_ns;
		ts.tv_sec = deadline / 1000000000;
		ts.tv_nsec = deadline % 1000000000;
		while (!l->stop && pthread_cond_timedwait(&l->cond, &l->mu, &ts) != ETIMEDOUT)
			;
		if (l->stop)
			break;
		int64_t start = mono_ns(), lease_ns = (int64_t)l->lease_s * 1000000000;
		if (start - l->last_renewed > lease_ns * 3 / 4) {
			/* too late to renew safely: another writer may take it over any moment */
			l->lost = true;
			break;
		}
		pthread_mutex_unlock(&l->mu);
		void *buf = NULL;
		size_t len;
		/* still ours? another writer deletes a lock only after it expired */
		int r = store_get_all(l->backend, l->name, LOCK_MAX_BYTES, &buf, &len);
		free(buf);
		if (r == 0)
			r = lock_put(l);
		/* a rewrite that took longer than the margin may have resurrected a lock that had
		 * expired (and been taken) meanwhile: give it up */
		bool late = r == 0 && mono_ns() - start > lease_ns / 4;
		if (late)
			store_delete(l->backend, l->name);
		pthread_mutex_lock(&l->mu);
		if (r == 0 && !late)
			l->last_renewed = start;
		else if (r == -ENOENT || late)
			l->lost = true;
		else
			log_warning("could not renew the writer lock: %s", strerror(-r));
		if (l->lost)
			break;
	}
	pthread_mutex_unlock(&l->mu);
	return NULL;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static unsigned jitter_ms(unsigned max)
{
	uint32_t v = 0;
	random_bytes(&v, sizeof(v));
	return 50 + v % max;
}

static RemoteLock *lock_free(RemoteLock *l)
{
	if (!l)
		return NULL;
	pthread_mutex_destroy(&l->mu);
	pthread_cond_destroy(&l->cond);
	free(l);
	return NULL;
}

/* One attempt: 1 acquired, 0 someone else holds it (holder filled), <0 error. */
static int try_acquire(RemoteLock *l, char *holder, size_t holder_len)
{
	int r = others_live(l, holder, holder_len);
	if (r != 0)
		return r < 0 ? r : 0;
	r = lock_put(l);
	if (r < 0)
		return r;
	r = others_live(l, holder, holder_len);
	if (r == 0)
		return 1;
	int d = store_delete(l->backend, l->name); /* both saw each other: both back off */
	return r < 0 ? r : d < 0 ? d : 0;
}

int remote_lock_acquire(StoreBackend *b, const RemoteLockOptions *o, RemoteLock **ret,
			char **ret_holder)
{
	RemoteLock *l = calloc(1, sizeof(*l));
	char holder[128] = "";
	uint8_t rnd[16];
	int64_t deadline;
	unsigned backoff = 200;
	int r;

	if (!l)
		return -ENOMEM;
	l->backend = b;
	l->lease_s = o && o->lease_s ? o->lease_s : 120;
	pthread_condattr_t ca;
	pthread_mutex_init(&l->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* the renewal thread's deadlines */
	pthread_cond_init(&l->cond, &ca);
	pthread_condattr_destroy(&ca);
	r = random_bytes(rnd, sizeof(rnd));
	if (r < 0) {
		lock_free(l);
		return r;
	}
	hex_encode(rnd, sizeof(rnd), l->owner);
	snprintf(l->name, sizeof(l->name), REMOTE_LOCK_PREFIX "%s", l->owner);
	deadline = mono_ns() + (int64_t)(o ? o->wait_s : 0) * 1000000000;
	for (;;) {
		int64_t attempt = mono_ns();
		r = try_acquire(l, holder, sizeof(holder));
		l->last_renewed = attempt;
		if (r != 0)
			break;
		if (mono_ns() >= deadline) {
			r = -EBUSY;
			break;
		}
		log_debug("the writer lock is held by %s; waiting", holder);
		sleep_ms(jitter_ms(backoff));
		backoff = backoff < 2000 ? backoff * 2 : 2000;
	}
	if (r < 0) {
		if (r == -EBUSY && ret_holder)
			*ret_holder = strdup(holder);
		lock_free(l);
		return r;
	}
	r = -pthread_create(&l->thread, NULL, renew_thread, l);
	if (r < 0) {
		store_delete(b, l->name);
		lock_free(l);
		return r;
	}
	*ret = l;
	return 0;
}

int remote_lock_check(RemoteLock *l)
{
	LockInfo li;
	bool lost;
	int r;

	pthread_mutex_lock(&l->mu);
	lost = l->lost || mono_ns() - l->last_renewed > (int64_t)l->lease_s * 1000000000 * 3 / 4;
	pthread_mutex_unlock(&l->mu);
	if (lost)
		return -ENOLCK;
	r = lock_read(l->backend, l->name, &li);
	if (r == -ENOENT || (r == 0 && strcmp(li.owner, l->owner) != 0))
		return -ENOLCK;
	if (r == 0) { /* and nobody else believes they hold it */
		char holder[128];
		r = others_live(l, holder, sizeof(holder));
		if (r > 0) {
			log_error("the writer lock was taken over by %s", holder);
			return -ENOLCK;
		}
	}
	return r;
}

RemoteLock *remote_lock_release(RemoteLock *l)
{
	if (!l)
		return NULL;
	pthread_mutex_lock(&l->mu);
	l->stop = true;
	pthread_cond_signal(&l->cond);
	pthread_mutex_unlock(&l->mu);
	pthread_join(l->thread, NULL);
	int r = store_delete(l->backend, l->name);
	if (r < 0)
		log_warning("could not remove the writer lock %s: %s (it expires by itself)", l->name,
			    strerror(-r));
	return lock_free(l);
}

void remote_catalog_name(uint64_t gen, char *buf, size_t len)
{
	snprintf(buf, len, REMOTE_CATALOG_PREFIX "%020llu", (unsigned long long)gen);
}

void remote_catalog_delta_name(uint64_t gen, char *buf, size_t len)
{
	snprintf(buf, len, REMOTE_CATALOG_PREFIX "%020llu" REMOTE_DELTA_SUFFIX,
		 (unsigned long long)gen);
}

/* "catalog/<20 digits>" or "catalog/<20 digits>.delta"; -EINVAL for any other name */
static int parse_gen(const char *name, uint64_t *ret, bool *ret_delta)
{
	const char *p = name + strlen(REMOTE_CATALOG_PREFIX);
	size_t len = strlen(p);
	bool delta = len == 20 + strlen(REMOTE_DELTA_SUFFIX) &&
		     strcmp(p + 20, REMOTE_DELTA_SUFFIX) == 0;
	char *end;
	if ((len != 20 && !delta) || strspn(p, "0123456789") != 20)
		return -EINVAL;
	*ret = strtoull(p, &end, 10);
	if (end != p + 20)
		return -EINVAL;
	*ret_delta = delta;
	return 0;
}

static int gens_add(const char *name, uint64_t size, void *userdata)
{
	RemoteCatalogList *l = userdata;
	RemoteGen g = {.size = size};
	if (parse_gen(name, &g.gen, &g.delta) < 0)
		return 0;
	RemoteGen *v = realloc(l->v, (l->n + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	l->v = v;
	l->v[l->n++] = g;
	return 0;
}

static int gen_cmp(const void *a, const void *b)
{
	const RemoteGen *x = a, *y = b;
	if (x->gen != y->gen)
		return x->gen < y->gen ? -1 : 1;
	return (int)x->delta - (int)y->delta;
}

int remote_catalog_list(StoreBackend *b, RemoteCatalogList *ret)
{
	RemoteCatalogList l = {0};
	int r = store_list(b, REMOTE_CATALOG_PREFIX, gens_add, &l);
	*ret = (RemoteCatalogList){0};
	if (r < 0) {
		remote_catalog_list_clear(&l);
		return r;
	}
	if (l.n)
		qsort(l.v, l.n, sizeof(*l.v), gen_cmp);
	*ret = l;
	return 0;
}

void remote_catalog_list_clear(RemoteCatalogList *l)
{
	free(l->v);
	*l = (RemoteCatalogList){0};
}

int remote_catalog_list_latest(const RemoteCatalogList *l, uint64_t *ret_gen)
{
	if (!l->n)
		return -ENOENT;
	*ret_gen = l->v[l->n - 1].gen;
	return 0;
}

const RemoteGen *remote_catalog_list_find(const RemoteCatalogList *l, uint64_t gen, bool delta)
{
	for (size_t i = 0; i < l->n; i++)
		if (l->v[i].gen == gen && l->v[i].delta == delta)
			return &l->v[i];
	return NULL;
}

const RemoteGen *remote_catalog_list_base(const RemoteCatalogList *l, uint64_t gen)
{
	for (size_t i = l->n; i-- > 0;)
		if (!l->v[i].delta && l->v[i].gen <= gen)
			return &l->v[i];
	return NULL;
}

int remote_catalog_latest(StoreBackend *b, uint64_t *ret_gen)
{
	RemoteCatalogList l = {0};
	int r = remote_catalog_list(b, &l);
	if (r == 0)
		r = remote_catalog_list_latest(&l, ret_gen);
	remote_catalog_list_clear(&l);
	return r;
}

int remote_catalog_prune(StoreBackend *b, uint64_t keep_from)
{
	Names ns = {0};
	int r = store_list(b, REMOTE_CATALOG_PREFIX, names_add, &ns);

	for (size_t i = 0; r == 0 && i < ns.n; i++) {
		uint64_t g;
		bool delta;
		if (parse_gen(ns.v[i], &g, &delta) == 0 && g < keep_from)
			r = store_delete(b, ns.v[i]);
	}
	names_clear(&ns);
	return r;
}
