/*
 * common/workqueue: bounded, FIFO, close and abort wake blocked threads on
 * both sides, and many producers and consumers lose and duplicate nothing.
 * Checks run on the main thread only (test.h's counters are not atomic).
 */
#include "common/workqueue.h"
#include "test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

static void sleep_ms(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

static void test_args(void)
{
	WorkQueue *q = NULL;
	CHECK_EQ_INT(workqueue_new(0, sizeof(int), &q), -EINVAL);
	CHECK_EQ_INT(workqueue_new(4, 0, &q), -EINVAL);
	CHECK_EQ_INT(workqueue_new(SIZE_MAX / 2, 16, &q), -EINVAL);
	CHECK(q == NULL);
	CHECK(workqueue_free(NULL) == NULL);
}

typedef struct Item {
	uint64_t a;
	char tag[12];
} Item;

/* One thread: items by value, in order; try_push says full; count follows. */
static void test_fifo(void)
{
	WorkQueue *q;
	Item it;
	if (!CHECK_EQ_INT(workqueue_new(5, sizeof(Item), &q), 0))
		return;
	for (int round = 0; round < 3; round++) { /* wraps around the ring */
		for (uint64_t i = 0; i < 5; i++) {
			it = (Item){.a = i * 7 + (uint64_t)round};
			snprintf(it.tag, sizeof(it.tag), "t%d", (int)i);
			CHECK_EQ_INT(workqueue_push(q, &it), 0);
		}
		CHECK_EQ_INT(workqueue_count(q), 5);
		CHECK_EQ_INT(workqueue_try_push(q, &it), -EAGAIN);
		for (uint64_t i = 0; i < 3; i++) {
			char want[12];
			snprintf(want, sizeof(want), "t%d", (int)i);
			CHECK_EQ_INT(workqueue_pop(q, &it), 0);
			CHECK_EQ_INT(it.a, i * 7 + (uint64_t)round);
			CHECK_EQ_STR(it.tag, want);
		}
		CHECK_EQ_INT(workqueue_try_push(q, &(Item){.a = 100}), 0);
		CHECK_EQ_INT(workqueue_pop(q, &it), 0);
		CHECK_EQ_INT(it.a, 3 * 7 + (uint64_t)round);
		CHECK_EQ_INT(workqueue_pop(q, &it), 0);
		CHECK_EQ_INT(it.a, 4 * 7 + (uint64_t)round);
		CHECK_EQ_INT(workqueue_pop(q, &it), 0);
		CHECK_EQ_INT(it.a, 100);
		CHECK_EQ_INT(workqueue_count(q), 0);
	}
	/* close: what is queued still comes out, then -EPIPE; pushes fail */
	CHECK_EQ_INT(workqueue_push(q, &(Item){.a = 1}), 0);
	CHECK_EQ_INT(workqueue_push(q, &(Item){.a = 2}), 0);
	workqueue_close(q);
	CHECK_EQ_INT(workqueue_push(q, &(Item){.a = 3}), -EPIPE);
	CHECK_EQ_INT(workqueue_try_push(q, &(Item){.a = 3}), -EPIPE);
	CHECK_EQ_INT(workqueue_pop(q, &it), 0);
	CHECK_EQ_INT(it.a, 1);
	CHECK_EQ_INT(workqueue_pop(q, &it), 0);
	CHECK_EQ_INT(it.a, 2);
	CHECK_EQ_INT(workqueue_pop(q, &it), -EPIPE);
	CHECK_EQ_INT(workqueue_error(q), 0);
	workqueue_free(q);
}

typedef struct Blocked {
	WorkQueue *q;
	int n;              /* items to push (pusher) */
	_Atomic int done;   /* items pushed or popped so far */
	_Atomic int result; /* of the last call, once finished */
	_Atomic bool finished;
} Blocked;

static void *pusher(void *arg)
{
	Blocked *b = arg;
	int r = 0;
	for (int i = 0; i < b->n && r == 0; i++) {
		r = workqueue_push(b->q, &i);
		if (r == 0)
			atomic_fetch_add(&b->done, 1);
	}
	atomic_store(&b->result, r);
	atomic_store(&b->finished, true);
	return NULL;
}

static void *popper(void *arg)
{
	Blocked *b = arg;
	int v, r;
	while ((r = workqueue_pop(b->q, &v)) == 0)
		atomic_fetch_add(&b->done, 1);
	atomic_store(&b->result, r);
	atomic_store(&b->finished, true);
	return NULL;
}

/* A push at capacity waits for a pop; no more than capacity items get in. */
static void test_bounded(void)
{
	WorkQueue *q;
	pthread_t th;
	int v;
	if (!CHECK_EQ_INT(workqueue_new(4, sizeof(int), &q), 0))
		return;
	Blocked b = {.q = q, .n = 6};
	pthread_create(&th, NULL, pusher, &b);
	for (int i = 0; i < 200 && atomic_load(&b.done) < 4; i++)
		sleep_ms(5);
	sleep_ms(50); /* time for a wrong fifth push to get in */
	CHECK_EQ_INT(atomic_load(&b.done), 4);
	CHECK(!atomic_load(&b.finished));
	CHECK_EQ_INT(workqueue_count(q), 4);
	CHECK_EQ_INT(workqueue_pop(q, &v), 0);
	CHECK_EQ_INT(v, 0);
	for (int i = 0; i < 200 && atomic_load(&b.done) < 5; i++)
		sleep_ms(5);
	sleep_ms(50);
	CHECK_EQ_INT(atomic_load(&b.done), 5);
	CHECK_EQ_INT(workqueue_pop(q, &v), 0);
	CHECK_EQ_INT(v, 1);
	pthread_join(th, NULL);
	CHECK_EQ_INT(atomic_load(&b.result), 0);
	for (int want = 2; want < 6; want++) {
		CHECK_EQ_INT(workqueue_pop(q, &v), 0);
		CHECK_EQ_INT(v, want);
	}
	workqueue_free(q);
}

/* close wakes a pop blocked on an empty queue and a push blocked on a full one */
static void test_close_wakes(void)
{
	WorkQueue *q;
	pthread_t th;
	if (!CHECK_EQ_INT(workqueue_new(2, sizeof(int), &q), 0))
		return;
	Blocked pop = {.q = q};
	pthread_create(&th, NULL, popper, &pop);
	sleep_ms(50);
	CHECK(!atomic_load(&pop.finished));
	workqueue_close(q);
	pthread_join(th, NULL);
	CHECK_EQ_INT(atomic_load(&pop.result), -EPIPE);
	CHECK_EQ_INT(atomic_load(&pop.done), 0);
	workqueue_free(q);

	if (!CHECK_EQ_INT(workqueue_new(2, sizeof(int), &q), 0))
		return;
	Blocked push = {.q = q, .n = 3};
	pthread_create(&th, NULL, pusher, &push);
	for (int i = 0; i < 200 && atomic_load(&push.done) < 2; i++)
		sleep_ms(5);
	sleep_ms(50);
	CHECK(!atomic_load(&push.finished));
	workqueue_close(q);
	pthread_join(th, NULL);
	CHECK_EQ_INT(atomic_load(&push.result), -EPIPE);
	CHECK_EQ_INT(atomic_load(&push.done), 2);
	CHECK_EQ_INT(workqueue_count(q), 2);
	workqueue_free(q);
}

/*
 * abort: a blocked producer wakes with the error and so does every later
 * push; consumers still get what was queued (to release it), then the error.
 */
static void test_abort(void)
{
	WorkQueue *q;
	pthread_t th;
	int v;
	if (!CHECK_EQ_INT(workqueue_new(2, sizeof(int), &q), 0))
		return;
	Blocked push = {.q = q, .n = 5};
	pthread_create(&th, NULL, pusher, &push);
	for (int i = 0; i < 200 && atomic_load(&push.done) < 2; i++)
		sleep_ms(5);
	sleep_ms(50);
	CHECK(!atomic_load(&push.finished));
	workqueue_abort(q, -EIO);
	workqueue_abort(q, -ENOSPC); /* the first error stays */
	pthread_join(th, NULL);
	CHECK_EQ_INT(atomic_load(&push.result), -EIO);
	CHECK_EQ_INT(workqueue_error(q), -EIO);
	CHECK_EQ_INT(workqueue_push(q, &v), -EIO);
	CHECK_EQ_INT(workqueue_try_push(q, &v), -EIO);
	CHECK_EQ_INT(workqueue_pop(q, &v), 0);
	CHECK_EQ_INT(v, 0);
	CHECK_EQ_INT(workqueue_pop(q, &v), 0);
	CHECK_EQ_INT(v, 1);
	CHECK_EQ_INT(workqueue_pop(q, &v), -EIO);
	workqueue_free(q);

	/* an abort wakes a blocked consumer too, and after close it still counts */
	if (!CHECK_EQ_INT(workqueue_new(2, sizeof(int), &q), 0))
		return;
	Blocked pop = {.q = q};
	pthread_create(&th, NULL, popper, &pop);
	sleep_ms(50);
	workqueue_abort(q, -ECANCELED);
	pthread_join(th, NULL);
	CHECK_EQ_INT(atomic_load(&pop.result), -ECANCELED);
	workqueue_free(q);

	if (!CHECK_EQ_INT(workqueue_new(2, sizeof(int), &q), 0))
		return;
	workqueue_close(q);
	workqueue_abort(q, 0); /* not an error code: still an abort */
	CHECK_EQ_INT(workqueue_error(q), -ECANCELED);
	CHECK_EQ_INT(workqueue_pop(q, &v), -ECANCELED);
	workqueue_free(q);
}

/* ---- many producers and consumers ---- */

#define N_PRODUCERS 4
#define N_CONSUMERS 4
#define PER_PRODUCER 25000

typedef struct Mpmc {
	WorkQueue *q;
	_Atomic uint32_t seen[N_PRODUCERS][PER_PRODUCER]; /* times each item came out */
	_Atomic int out_of_order;                         /* per producer, per consumer */
	_Atomic int64_t sum;
} Mpmc;

typedef struct Producer {
	Mpmc *m;
	uint32_t id;
	int result;
} Producer;

static void *mpmc_produce(void *arg)
{
	Producer *p = arg;
	p->result = 0;
	for (uint32_t i = 0; i < PER_PRODUCER && p->result == 0; i++) {
		uint64_t v = (uint64_t)p->id << 32 | i;
		p->result = workqueue_push(p->m->q, &v);
	}
	return NULL;
}

static void *mpmc_consume(void *arg)
{
	Mpmc *m = arg;
	int64_t last[N_PRODUCERS];
	uint64_t v;
	for (int i = 0; i < N_PRODUCERS; i++)
		last[i] = -1;
	while (workqueue_pop(m->q, &v) == 0) {
		uint32_t id = (uint32_t)(v >> 32), seq = (uint32_t)v;
		if (id >= N_PRODUCERS || seq >= PER_PRODUCER) {
			atomic_fetch_add(&m->out_of_order, 1000000);
			continue;
		}
		if ((int64_t)seq <= last[id])
			atomic_fetch_add(&m->out_of_order, 1);
		last[id] = seq;
		atomic_fetch_add(&m->seen[id][seq], 1);
		atomic_fetch_add(&m->sum, (int64_t)seq);
	}
	return NULL;
}

static void test_mpmc(void)
{
	static Mpmc m; /* 400 KB: not on the stack */
	pthread_t prod[N_PRODUCERS], cons[N_CONSUMERS];
	Producer p[N_PRODUCERS];
	uint64_t missing = 0, duplicated = 0;

	if (!CHECK_EQ_INT(workqueue_new(16, sizeof(uint64_t), &m.q), 0))
		return;
	for (int i = 0; i < N_CONSUMERS; i++)
		pthread_create(&cons[i], NULL, mpmc_consume, &m);
	for (uint32_t i = 0; i < N_PRODUCERS; i++) {
		p[i] = (Producer){.m = &m, .id = i};
		pthread_create(&prod[i], NULL, mpmc_produce, &p[i]);
	}
	for (int i = 0; i < N_PRODUCERS; i++)
		pthread_join(prod[i], NULL);
	workqueue_close(m.q);
	for (int i = 0; i < N_CONSUMERS; i++)
		pthread_join(cons[i], NULL);
	for (int i = 0; i < N_PRODUCERS; i++) {
		CHECK_EQ_INT(p[i].result, 0);
		for (int s = 0; s < PER_PRODUCER; s++) {
			uint32_t n = atomic_load(&m.seen[i][s]);
			missing += n == 0;
			duplicated += n > 1;
		}
	}
	CHECK_EQ_INT(missing, 0);
	CHECK_EQ_INT(duplicated, 0);
	CHECK_EQ_INT(atomic_load(&m.out_of_order), 0);
	CHECK_EQ_INT(atomic_load(&m.sum),
		     (int64_t)N_PRODUCERS * PER_PRODUCER * (PER_PRODUCER - 1) / 2);
	CHECK_EQ_INT(workqueue_count(m.q), 0);
	workqueue_free(m.q);
}

int main(void)
{
	test_args();
	test_fifo();
	test_bounded();
	test_close_wakes();
	test_abort();
	test_mpmc();
	return test_finish();
}
