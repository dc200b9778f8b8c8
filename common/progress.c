#include "common/progress.h"
#include "common/util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/*
 * A terminal gets one line redrawn 4 times a second; a file or pipe a whole
 * line after 1 s, then every 10 s, and a last one when the work ends (only
 * after one was printed: a short run adds nothing to a log).
 */
#define PROGRESS_PLAIN_FIRST_NS 1000000000LL
#define PROGRESS_PLAIN_INTERVAL_NS (10 * 1000000000LL)

struct Progress {
	const char *what;
	_Atomic uint64_t done;
	_Atomic uint64_t total;
	int64_t start;
	bool enabled;
	bool plain; /* stderr is not a terminal: whole lines, no escape codes */
	int64_t next_line; /* plain: when the next line is due */
	bool printed;
	bool thread_started;
	pthread_t thread;
	pthread_mutex_t lock; /* guards stop */
	pthread_cond_t cond;
	bool stop;
};

static void progress_draw(Progress *p)
{
	char d[32], t[32], rate[32], eta[32] = "";
	uint64_t done = atomic_load(&p->done), total = atomic_load(&p->total);
	double secs = (double)(mono_ns() - p->start) / 1e9;
	double bps = secs > 0 ? (double)done / secs : 0;

	format_bytes(done, d, sizeof(d));
	format_bytes((uint64_t)bps, rate, sizeof(rate));
	if (total > done && bps > 0) {
		uint64_t left = (uint64_t)((double)(total - done) / bps);
		snprintf(eta, sizeof(eta), ", ETA %llu:%02llu", (unsigned long long)(left / 60),
			 (unsigned long long)(left % 60));
	}
	const char *start = p->plain ? "" : "\r", *end = p->plain ? "\n" : "\033[K";
	if (p->plain) {
		int64_t now = mono_ns();
		if (now < p->next_line)
			return;
		p->next_line = now + PROGRESS_PLAIN_INTERVAL_NS;
	}
	p->printed = true;
	if (total > 0)
		fprintf(stderr, "%s%s: %s of %s (%d%%), %s/s%s%s", start, p->what, d,
			format_bytes(total, t, sizeof(t)),
			(int)(total ? MIN(100, done * 100 / total) : 0), rate, eta, end);
	else
		fprintf(stderr, "%s%s: %s, %s/s%s", start, p->what, d, rate, end);
	fflush(stderr);
}

static void *progress_thread(void *arg)
{
	Progress *p = arg;
	thread_name("progress");
	pthread_mutex_lock(&p->lock);
	while (!p->stop) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 250000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&p->cond, &p->lock, &ts);
		if (!p->stop)
			progress_draw(p);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

int progress_new(const char *what, uint64_t total_bytes, bool enabled, Progress **ret)
{
	Progress *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->what = what;
	atomic_init(&p->done, 0);
	atomic_init(&p->total, total_bytes);
	p->start = mono_ns();
	p->next_line = p->start + PROGRESS_PLAIN_FIRST_NS;
	p->enabled = enabled;
	p->plain = isatty(STDERR_FILENO) != 1;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	if (enabled && pthread_create(&p->thread, NULL, progress_thread, p) == 0)
		p->thread_started = true;
	*ret = p;
	return 0;
}

void progress_add(Progress *p, uint64_t bytes)
{
	if (p)
		atomic_fetch_add(&p->done, bytes);
}

void progress_set_total(Progress *p, uint64_t total_bytes)
{
	if (p)
		atomic_store(&p->total, total_bytes);
}

Progress *progress_free(Progress *p)
{
	if (!p)
		return NULL;
	if (p->thread_started) {
		pthread_mutex_lock(&p->lock);
		p->stop = true;
		pthread_cond_signal(&p->cond);
		pthread_mutex_unlock(&p->lock);
		pthread_join(p->thread, NULL);
		if (!p->plain) {
			fputs("\r\033[K", stderr);
			fflush(stderr);
		} else if (p->printed) {
			p->next_line = 0; /* the last line, whenever it comes */
			progress_draw(p);
		}
	}
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
	free(p);
	return NULL;
}
