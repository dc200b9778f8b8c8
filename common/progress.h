/*
 * Progress line on a TTY: bytes done, rate and ETA, redrawn at most 4 times a
 * second from a background thread. Counters are atomics any thread may add to.
 */
#pragma once

#include "common/common.h"

typedef struct Progress Progress;

/* enabled=false gives an object whose updates cost one atomic add and print nothing. */
int progress_new(const char *what, uint64_t total_bytes, bool enabled, Progress **ret);
void progress_add(Progress *p, uint64_t bytes);
void progress_set_total(Progress *p, uint64_t total_bytes);
/* Stops the thread and clears the line. Accepts NULL. */
Progress *progress_free(Progress *p);
