/*
 * Tiny unit test harness. Every test executable is one .c file that includes
 * this header, calls CHECK()/CHECK_EQ_INT()/CHECK_EQ_STR() and ends main()
 * with "return test_finish();", which prints exactly one line
 * "N passed, M failed" (counted per check) and returns 1 if any check failed.
 *
 * The check macros are expressions that evaluate to the result of the check,
 * so a test can stop early when going on makes no sense:
 *     if (!CHECK_EQ_INT(repo_open(path, &repo), 0)) goto out;
 */
#pragma once

#include "common/util.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static unsigned test_n_passed_, test_n_failed_;

static inline bool test_check_(bool ok, const char *file, int line, const char *expr)
{
	if (ok) {
		test_n_passed_++;
	} else {
		test_n_failed_++;
		fprintf(stderr, "%s:%d: check failed: %s\n", file, line, expr);
	}
	return ok;
}

static inline bool test_check_eq_int_(long long a, long long b, const char *file, int line,
				      const char *ea, const char *eb)
{
	if (a == b) {
		test_n_passed_++;
		return true;
	}
	test_n_failed_++;
	fprintf(stderr, "%s:%d: check failed: %s == %s (%lld != %lld)\n", file, line, ea, eb, a, b);
	return false;
}

static inline bool test_check_eq_str_(const char *a, const char *b, const char *file, int line,
				      const char *ea, const char *eb)
{
	if (a && b && strcmp(a, b) == 0) {
		test_n_passed_++;
		return true;
	}
	test_n_failed_++;
	fprintf(stderr, "%s:%d: check failed: %s == %s (\"%s\" != \"%s\")\n", file, line, ea, eb,
		a ? a : "(null)", b ? b : "(null)");
	return false;
}

#define CHECK(cond) test_check_(!!(cond), __FILE__, __LINE__, #cond)
#define CHECK_EQ_INT(a, b) \
	test_check_eq_int_((long long)(a), (long long)(b), __FILE__, __LINE__, #a, #b)
#define CHECK_EQ_STR(a, b) test_check_eq_str_((a), (b), __FILE__, __LINE__, #a, #b)

/* Print the summary line; the exit status of the test executable. */
static inline int test_finish(void)
{
	printf("%u passed, %u failed\n", test_n_passed_, test_n_failed_);
	fflush(stdout);
	return test_n_failed_ ? 1 : 0;
}

/* A fresh private directory under /tmp; exits the test if it cannot be made. */
static inline char *test_tmpdir(char *buf, size_t len)
{
	if ((size_t)snprintf(buf, len, "/tmp/pgbakfs-unit.XXXXXX") >= len || !mkdtemp(buf)) {
		fprintf(stderr, "test_tmpdir: cannot create a temporary directory\n");
		exit(2);
	}
	return buf;
}

/* rm -rf path (common/util.h rm_rf); counts as a check that it succeeded. */
#define TEST_RM_RF(path) CHECK_EQ_INT(rm_rf(path), 0)

/* Random bytes; exits the test if the kernel gives none. */
static inline void test_random(void *buf, size_t n)
{
	if (random_bytes(buf, n) < 0) {
		fprintf(stderr, "test_random: getrandom failed\n");
		exit(2);
	}
}

/* snprintf for paths built from test directories (no truncation warnings). */
static inline _printf_(3, 4) char *test_fmt(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	return buf;
}

/* True when the file dir/rel holds exactly the len bytes at want. */
static inline bool test_file_equals(const char *dir, const char *rel, const uint8_t *want, size_t len)
{
	char path[4096];
	char *text = NULL;
	size_t n = 0;
	bool ok;
	test_fmt(path, sizeof(path), "%s/%s", dir, rel);
	if (file_read_all(path, 64 << 20, &text, &n) < 0)
		return false;
	ok = n == len && memcmp(text, want, len) == 0;
	free(text);
	return ok;
}

/*
 * Pages of path in the page cache (writes past it leave at most their
 * unaligned tail there; valgrind reads a few pages of a file it sees mapped).
 */
static inline size_t test_cached_pages(const char *path)
{
	int fd = open(path, O_RDONLY);
	struct stat st;
	size_t n = 0;
	if (fd < 0 || fstat(fd, &st) < 0 || st.st_size == 0) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	size_t pages = ((size_t)st.st_size + 4095) / 4096;
	void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	unsigned char *vec = malloc(pages);
	if (map != MAP_FAILED && vec && mincore(map, (size_t)st.st_size, vec) == 0)
		for (size_t i = 0; i < pages; i++)
			n += vec[i] & 1;
	if (map != MAP_FAILED)
		munmap(map, (size_t)st.st_size);
	free(vec);
	close(fd);
	return n;
}

/*
 * Number of entries under dir (recursively) whose name starts with prefix
 * ("" counts everything but "." and ".."); -1 if dir cannot be read.
 */
static inline int test_count_names(const char *dir, const char *prefix)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;
	if (!d)
		return -1;
	while ((de = readdir(d))) {
		char child[4096];
		struct stat st;
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (strncmp(de->d_name, prefix, strlen(prefix)) == 0)
			n++;
		test_fmt(child, sizeof(child), "%s/%s", dir, de->d_name);
		if (lstat(child, &st) == 0 && S_ISDIR(st.st_mode)) {
			int m = test_count_names(child, prefix);
			n += m > 0 ? m : 0;
		}
	}
	closedir(d);
	return n;
}
