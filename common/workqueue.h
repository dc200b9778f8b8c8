/*
 * A bounded FIFO between threads: at most `capacity` items of `item_size`
 * bytes, copied in by producers and out by consumers (an item may be a
 * pointer, or a small struct by value).
 *
 * Contract:
 * - workqueue_push() blocks while the queue is full; workqueue_try_push()
 *   never blocks and fails with -EAGAIN instead (for work that may be
 *   dropped, like a prefetch hint).
 * - workqueue_pop() blocks while the queue is empty and open.
 * - Items come out in the order they went in, over all producers: one
 *   producer's items reach the consumers in its order, and one consumer sees
 *   them in that order too.
 * - workqueue_close(): the producers are done. Pushes fail with -EPIPE; pops
 *   hand out what is still queued, then fail with -EPIPE.
 * - workqueue_abort(q, err), err < 0: something failed, and the producers
 *   must stop. Every blocked thread wakes; pushes fail with err (the first
 *   abort's); pops still hand out what is queued, so that whoever owns what
 *   an item holds can release it (workqueue_error() tells the consumer not
 *   to do the work), then fail with err. Abort after close is an abort.
 * - Items still queued at workqueue_free() are dropped: the caller owns what
 *   they point to.
 *
 * Every call but workqueue_new() and workqueue_free() is thread-safe.
 * Return values: 0 or -errno; *ret_* is filled only on success.
 */
#pragma once

#include <stddef.h>

typedef struct WorkQueue WorkQueue;

/* -EINVAL for a capacity or item size of 0, -ENOMEM */
int workqueue_new(size_t capacity, size_t item_size, WorkQueue **ret);
/* Accepts and returns NULL. No thread may be using q. */
WorkQueue *workqueue_free(WorkQueue *q);

/* Blocks while full. 0, -EPIPE (closed) or the abort error. */
int workqueue_push(WorkQueue *q, const void *item);
/* Never blocks. 0, -EAGAIN (full), -EPIPE (closed) or the abort error. */
int workqueue_try_push(WorkQueue *q, const void *item);
/*
 * Blocks while empty and open. 0 with an item copied to ret_item; when empty
 * and closed: -EPIPE, or the abort error.
 */
int workqueue_pop(WorkQueue *q, void *ret_item);

void workqueue_close(WorkQueue *q);
void workqueue_abort(WorkQueue *q, int err);
/* The abort error, or 0. */
int workqueue_error(WorkQueue *q);
/* Items queued now (a hint: others may change it at once). */
size_t workqueue_count(WorkQueue *q);
