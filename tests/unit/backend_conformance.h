/*
 * What every backend driver must do (the contract in store/backend.h),
 * checked the same way for each: tests/unit/test_backend.c (local) and
 * tests/unit/test_backend_s3.c (S3). Include after test.h. The phases leave
 * room between them for a driver's own checks (file modes, prefixes, ...).
 */
#pragma once

#include "store/backend.h"

#define CONFORMANCE_DATA_LEN 10000

typedef struct Listing {
	char names[16][128];
	uint64_t sizes[16];
	size_t n, total; /* names kept (at most 16), names seen */
} Listing;

static int collect(const char *name, uint64_t size, void *userdata)
{
	Listing *l = userdata;
	l->total++;
	if (l->n < ELEMENTSOF(l->names)) {
		snprintf(l->names[l->n], sizeof(l->names[0]), "%s", name);
		l->sizes[l->n++] = size;
	}
	return 0;
}

static int stop_early(const char *name _unused_, uint64_t size _unused_, void *userdata)
{
	(*(int *)userdata)++;
	return -ECANCELED;
}

/* Size of name in the listing, or -1 when it is not listed. */
static long long listed(const Listing *l, const char *name)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->names[i], name) == 0)
			return (long long)l->sizes[i];
	return -1;
}

/* store_get_all of the objects of conformance_put_get: exact bytes, the limit, absence. */
static void conformance_get_all(StoreBackend *b, const uint8_t data[CONFORMANCE_DATA_LEN])
{
	void *all = NULL;
	size_t len = 7;

	CHECK_EQ_INT(store_get_all(b, "packs/ab/abcdef.pack", CONFORMANCE_DATA_LEN, &all, &len), 0);
	CHECK(all && len == CONFORMANCE_DATA_LEN && memcmp(all, data, len) == 0);
	free(all);
	all = NULL;
	CHECK_EQ_INT(store_get_all(b, "config", 1 << 20, &all, &len), 0);
	CHECK(all && len == 5 && memcmp(all, "hello", 5) == 0);
	free(all);
	all = NULL;
	CHECK_EQ_INT(store_get_all(b, "packs/cd/empty.pack", 10, &all, &len), 0);
	CHECK(all != NULL);
	CHECK_EQ_INT(len, 0);
	free(all);
	all = NULL;
	CHECK_EQ_INT(store_get_all(b, "packs/ab/abcdef.pack", CONFORMANCE_DATA_LEN - 1, &all, &len),
		     -EFBIG);
	CHECK_EQ_INT(store_get_all(b, "config", 4, &all, &len), -EFBIG);
	CHECK_EQ_INT(store_get_all(b, "packs/ab/missing.pack", 100, &all, &len), -ENOENT);
	CHECK(all == NULL);
}

/*
 * Four objects (config, three packs, one empty) put and read back: whole,
 * by range, past the end (-ENODATA, never a short read), missing (-ENOENT),
 * sizes.
 */
static void conformance_put_get(StoreBackend *b, const uint8_t data[CONFORMANCE_DATA_LEN])
{
	static uint8_t got[CONFORMANCE_DATA_LEN];
	uint64_t size = 0;

	CHECK_EQ_INT(store_put(b, "config", "hello", 5), 0);
	CHECK_EQ_INT(store_put(b, "packs/ab/abcdef.pack", data, CONFORMANCE_DATA_LEN), 0);
	CHECK_EQ_INT(store_put(b, "packs/cd/cdef01.pack", data, 100), 0);
	CHECK_EQ_INT(store_put(b, "packs/cd/empty.pack", data, 0), 0);

	memset(got, 0, sizeof(got));
	CHECK_EQ_INT(store_get_range(b, "packs/ab/abcdef.pack", 0, CONFORMANCE_DATA_LEN, got), 0);
	CHECK(memcmp(got, data, CONFORMANCE_DATA_LEN) == 0);
	memset(got, 0, sizeof(got));
	CHECK_EQ_INT(store_get_range(b, "packs/ab/abcdef.pack", 1234, 4321, got), 0);
	CHECK(memcmp(got, data + 1234, 4321) == 0);
	CHECK_EQ_INT(store_get_range(b, "config", 0, 5, got), 0);
	CHECK(memcmp(got, "hello", 5) == 0);
	CHECK_EQ_INT(store_get_range(b, "packs/cd/empty.pack", 0, 0, got), 0);

	CHECK_EQ_INT(store_get_range(b, "packs/ab/abcdef.pack", CONFORMANCE_DATA_LEN - 10, 11, got),
		     -ENODATA);
	CHECK_EQ_INT(store_get_range(b, "packs/ab/abcdef.pack", CONFORMANCE_DATA_LEN + 5, 1, got),
		     -ENODATA);
	CHECK_EQ_INT(store_get_range(b, "config", 0, 6, got), -ENODATA);
	CHECK_EQ_INT(store_get_range(b, "packs/ab/missing.pack", 0, 1, got), -ENOENT);
	CHECK_EQ_INT(store_get_range(b, "nodir/missing", 0, 1, got), -ENOENT);
	CHECK_EQ_INT(store_get_range(b, "nodir/missing", 0, 0, got), -ENOENT);
	CHECK_EQ_INT(store_size(b, "packs/ab/missing.pack", &size), -ENOENT);
	CHECK_EQ_INT(store_size(b, "packs/ab", &size), -ENOENT); /* a "directory" is no object */

	CHECK_EQ_INT(store_size(b, "packs/ab/abcdef.pack", &size), 0);
	CHECK_EQ_INT(size, CONFORMANCE_DATA_LEN);
	CHECK_EQ_INT(store_size(b, "packs/cd/empty.pack", &size), 0);
	CHECK_EQ_INT(size, 0);
	conformance_get_all(b, data);
}

/* Listing the objects of conformance_put_get: prefixes are directories, names relative. */
static void conformance_list(StoreBackend *b)
{
	Listing l = {0};
	CHECK_EQ_INT(store_list(b, "packs/", collect, &l), 0);
	CHECK_EQ_INT(l.n, 3);
	CHECK_EQ_INT(listed(&l, "packs/ab/abcdef.pack"), CONFORMANCE_DATA_LEN);
	CHECK_EQ_INT(listed(&l, "packs/cd/cdef01.pack"), 100);
	CHECK_EQ_INT(listed(&l, "packs/cd/empty.pack"), 0);
	CHECK_EQ_INT(listed(&l, "config"), -1);
	l = (Listing){0};
	CHECK_EQ_INT(store_list(b, "packs", collect, &l), 0);
	CHECK_EQ_INT(l.n, 3);
	l = (Listing){0};
	CHECK_EQ_INT(store_list(b, "packs/cd", collect, &l), 0);
	CHECK_EQ_INT(l.n, 2);
	CHECK_EQ_INT(listed(&l, "packs/cd/cdef01.pack"), 100);
	l = (Listing){0};
	CHECK_EQ_INT(store_list(b, "pack", collect, &l), 0); /* not a string prefix */
	CHECK_EQ_INT(l.n, 0);
	l = (Listing){0};
	CHECK_EQ_INT(store_list(b, "", collect, &l), 0);
	CHECK_EQ_INT(l.n, 4);
	CHECK_EQ_INT(listed(&l, "config"), 5);
	l = (Listing){0};
	CHECK_EQ_INT(store_list(b, "nothing/", collect, &l), 0);
	CHECK_EQ_INT(l.n, 0);
	/* a callback's error stops the listing and is returned */
	int calls = 0;
	CHECK_EQ_INT(store_list(b, "packs/", stop_early, &calls), -ECANCELED);
	CHECK_EQ_INT(calls, 1);
}

/* Overwrite, delete (a missing object too), and names that would escape refused. */
static void conformance_overwrite_delete(StoreBackend *b)
{
	uint8_t got[16];
	uint64_t size = 0;
	Listing l = {0};

	CHECK_EQ_INT(store_put(b, "config", "bye", 3), 0);
	CHECK_EQ_INT(store_size(b, "config", &size), 0);
	CHECK_EQ_INT(size, 3);
	CHECK_EQ_INT(store_get_range(b, "config", 0, 3, got), 0);
	CHECK(memcmp(got, "bye", 3) == 0);

	CHECK_EQ_INT(store_delete(b, "packs/cd/cdef01.pack"), 0);
	CHECK_EQ_INT(store_size(b, "packs/cd/cdef01.pack", &size), -ENOENT);
	CHECK_EQ_INT(store_get_range(b, "packs/cd/cdef01.pack", 0, 1, got), -ENOENT);
	CHECK_EQ_INT(store_delete(b, "packs/cd/cdef01.pack"), 0);
	CHECK_EQ_INT(store_delete(b, "never/was"), 0);
	CHECK_EQ_INT(store_list(b, "packs/", collect, &l), 0);
	CHECK_EQ_INT(l.n, 2);

	CHECK_EQ_INT(store_put(b, "", "x", 1), -EINVAL);
	CHECK_EQ_INT(store_put(b, "/etc/passwd", "x", 1), -EINVAL);
	CHECK_EQ_INT(store_put(b, "../escape", "x", 1), -EINVAL);
	CHECK_EQ_INT(store_put(b, "packs/../../escape", "x", 1), -EINVAL);
	CHECK_EQ_INT(store_get_range(b, "../escape", 0, 1, got), -EINVAL);
	CHECK_EQ_INT(store_delete(b, "../escape"), -EINVAL);
	CHECK_EQ_INT(store_size(b, "/etc/passwd", &size), -EINVAL);
}
