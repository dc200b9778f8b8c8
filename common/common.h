/* Shared helpers for every layer: cleanup attributes, small macros. */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _likely_(x) __builtin_expect(!!(x), 1)
#define _unlikely_(x) __builtin_expect(!!(x), 0)

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

static inline void freep(void *p) { free(*(void **)p); }

static inline void closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
	}
}

/* Steal a pointer out of a _cleanup_ variable. */
static inline void *take_ptr_(void **p)
{
	void *v = *p;
	*p = NULL;
	return v;
}
#define TAKE_PTR(p) take_ptr_((void **)&(p))

static inline int take_fd_(int *fd)
{
	int v = *fd;
	*fd = -1;
	return v;
}
#define TAKE_FD(fd) take_fd_(&(fd))

/*
 * Always-on invariant check: a breach that could corrupt a backup aborts even
 * in release builds (assert() would vanish under NDEBUG).
 */
#define PGBAKFS_CHECK(cond)                                                                \
	do {                                                                               \
		if (_unlikely_(!(cond)))                                                   \
			pgbakfs_check_failed(#cond, __FILE__, __LINE__);                   \
	} while (0)

_Noreturn void pgbakfs_check_failed(const char *expr, const char *file, int line);
