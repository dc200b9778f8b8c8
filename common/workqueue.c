/*
 * A ring of fixed-size slots under one mutex: not_full wakes producers,
 * not_empty consumers. A push or pop wakes one thread of the other side; a
 * close or abort wakes all of both. Nothing is allocated after
 * workqueue_new(), so a push never fails for memory.
 */
#include "common/workqueue.h"
#include "common/common.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

struct WorkQueue {
	pthread_mutex_t lock; /* guards every field below */
	pthread_cond_t not_empty, not_full;
	size_t capacity, item_size;
	size_t head, n; /* first item's slot, items queued */
	bool closed;
	int error; /* the first abort's */
	uint8_t slots[];
};

int workqueue_new(size_t capacity, size_t item_size, WorkQueue **ret)
{
	WorkQueue *q;
	if (capacity == 0 || item_size == 0 || capacity > (SIZE_MAX - sizeof(*q)) / item_size)
		return -EINVAL;
	q = calloc(1, sizeof(*q) + capacity * item_size);
	if (!q)
		return -ENOMEM;
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->not_empty, NULL);
	pthread_cond_init(&q->not_full, NULL);
	q->capacity = capacity;
	q->item_size = item_size;
	*ret = q;
	return 0;
}

WorkQueue *workqueue_free(WorkQueue *q)
{
	if (!q)
		return NULL;
	pthread_mutex_destroy(&q->lock);
	pthread_cond_destroy(&q->not_empty);
	pthread_cond_destroy(&q->not_full);
	free(q);
	return NULL;
}

static int stopped(const WorkQueue *q) { return q->error ? q->error : -EPIPE; }

/* Lock held, room for one more. */
static void put(WorkQueue *q, const void *item)
{
	memcpy(q->slots + ((q->head + q->n) % q->capacity) * q->item_size, item, q->item_size);
	q->n++;
	pthread_cond_signal(&q->not_empty);
}

int workqueue_push(WorkQueue *q, const void *item)
{
	int r = 0;
	pthread_mutex_lock(&q->lock);
	while (q->n == q->capacity && !q->closed)
		pthread_cond_wait(&q->not_full, &q->lock);
	if (q->closed)
		r = stopped(q);
	else
		put(q, item);
	pthread_mutex_unlock(&q->lock);
	return r;
}

int workqueue_try_push(WorkQueue *q, const void *item)
{
	int r = 0;
	pthread_mutex_lock(&q->lock);
	if (q->closed)
		r = stopped(q);
	else if (q->n == q->capacity)
		r = -EAGAIN;
	else
		put(q, item);
	pthread_mutex_unlock(&q->lock);
	return r;
}

int workqueue_pop(WorkQueue *q, void *ret_item)
{
	int r = 0;
	pthread_mutex_lock(&q->lock);
	while (q->n == 0 && !q->closed)
		pthread_cond_wait(&q->not_empty, &q->lock);
	if (q->n == 0) {
		r = stopped(q);
	} else {
		memcpy(ret_item, q->slots + q->head * q->item_size, q->item_size);
		q->head = (q->head + 1) % q->capacity;
		q->n--;
		pthread_cond_signal(&q->not_full);
	}
	pthread_mutex_unlock(&q->lock);
	return r;
}

static void stop(WorkQueue *q, int err)
{
	pthread_mutex_lock(&q->lock);
	q->closed = true;
	if (err < 0 && !q->error)
		q->error = err;
	pthread_cond_broadcast(&q->not_empty);
	pthread_cond_broadcast(&q->not_full);
	pthread_mutex_unlock(&q->lock);
}

void workqueue_close(WorkQueue *q) { stop(q, 0); }

void workqueue_abort(WorkQueue *q, int err) { stop(q, err < 0 ? err : -ECANCELED); }

int workqueue_error(WorkQueue *q)
{
	int r;
	pthread_mutex_lock(&q->lock);
	r = q->error;
	pthread_mutex_unlock(&q->lock);
	return r;
}

size_t workqueue_count(WorkQueue *q)
{
	size_t n;
	pthread_mutex_lock(&q->lock);
	n = q->n;
	pthread_mutex_unlock(&q->lock);
	return n;
}
