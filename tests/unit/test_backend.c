/* Unit tests for store/backend.h: the local driver and the fault driver. */
#include "tests/unit/test.h"

#include "store/backend.h"
#include "store/remote.h"
#include "tests/unit/backend_conformance.h"

#include <limits.h>
#include <sys/stat.h>

static mode_t mode_of(const char *root, const char *rel)
{
	char path[PATH_MAX];
	struct stat st;
	snprintf(path, sizeof(path), "%s/%s", root, rel);
	if (stat(path, &st) < 0)
		return (mode_t)-1;
	return st.st_mode & 07777;
}

static void test_local(void)
{
	char tmp[64], root[PATH_MAX];
	StoreBackend *b = NULL;
	uint8_t data[CONFORMANCE_DATA_LEN];
	Listing l = {0};

	test_tmpdir(tmp, sizeof(tmp));
	snprintf(root, sizeof(root), "%s/objects", tmp); /* created on first put */
	test_random(data, sizeof(data));

	if (!CHECK_EQ_INT(store_local_new(root, &b), 0))
		goto out;
	CHECK_EQ_STR(store_local_root(b), root);
	CHECK((b->ops->features & STORE_FEATURE_LOCAL_PATH) != 0);
	CHECK_EQ_STR(b->ops->name, "local");

	conformance_put_get(b, data);

	/* modes: objects 0600, directories 0700 */
	CHECK_EQ_INT(mode_of(root, ""), 0700);
	CHECK_EQ_INT(mode_of(root, "packs"), 0700);
	CHECK_EQ_INT(mode_of(root, "packs/ab"), 0700);
	CHECK_EQ_INT(mode_of(root, "packs/ab/abcdef.pack"), 0600);
	CHECK_EQ_INT(mode_of(root, "config"), 0600);
	/* atomic put leaves no temporary file behind */
	CHECK_EQ_INT(test_count_names(root, ".tmp"), 0);
	CHECK_EQ_INT(test_count_names(root, "."), 0);

	conformance_list(b);
	{
		/* an in-flight temporary file is not an object */
		char tmpf[PATH_MAX + 64];
		snprintf(tmpf, sizeof(tmpf), "%s/packs/ab/.tmp-0123456789abcdef", root);
		FILE *f = fopen(tmpf, "w");
		CHECK(f != NULL);
		if (f)
			fclose(f);
		l.n = 0;
		CHECK_EQ_INT(store_list(b, "packs/", collect, &l), 0);
		CHECK_EQ_INT(l.n, 3);
		unlink(tmpf);
	}

	conformance_overwrite_delete(b);
	CHECK_EQ_INT(test_count_names(root, ".tmp"), 0);
	CHECK_EQ_INT(test_count_names(tmp, "escape"), 0);
out:
	CHECK(store_backend_free(b) == NULL);
	CHECK(store_backend_free(NULL) == NULL);
	TEST_RM_RF(tmp);
}

static void test_fault(void)
{
	char tmp[64];
	StoreBackend *inner = NULL, *b = NULL;
	uint8_t data[1000], got[1000];
	uint64_t size = 0;

	test_tmpdir(tmp, sizeof(tmp));
	test_random(data, sizeof(data));

	/* "put:2=ENOSPC": exactly the second put fails, and leaves nothing */
	CHECK_EQ_INT(store_local_new(tmp, &inner), 0);
	if (!CHECK_EQ_INT(store_fault_new(inner, "put:2=ENOSPC", &b), 0)) {
		store_backend_free(inner);
		goto out;
	}
	CHECK_EQ_STR(b->ops->name, "fault");
	CHECK_EQ_INT(store_fault_count(b, "put"), 0);
	CHECK_EQ_INT(store_put(b, "a", data, sizeof(data)), 0);
	CHECK_EQ_INT(store_put(b, "b", data, sizeof(data)), -ENOSPC);
	CHECK_EQ_INT(store_put(b, "c", data, sizeof(data)), 0);
	CHECK_EQ_INT(store_put(b, "b", data, sizeof(data)), 0);
	CHECK_EQ_INT(store_fault_count(b, "put"), 4);
	CHECK_EQ_INT(store_get_range(b, "a", 0, sizeof(data), got), 0);
	CHECK(memcmp(got, data, sizeof(data)) == 0);
	CHECK_EQ_INT(store_size(b, "c", &size), 0);
	CHECK_EQ_INT(size, sizeof(data));
	CHECK_EQ_INT(store_delete(b, "c"), 0);
	CHECK_EQ_INT(store_size(b, "c", &size), -ENOENT);
	CHECK_EQ_INT(store_fault_count(b, "get"), 1);
	CHECK_EQ_INT(store_fault_count(b, "size"), 2);
	CHECK_EQ_INT(store_fault_count(b, "delete"), 1);
	CHECK_EQ_INT(store_fault_count(b, "list"), 0);
	CHECK_EQ_INT(store_fault_count(b, "bogus"), 0);
	b = store_backend_free(b); /* frees inner too */
	TEST_RM_RF(tmp);
	test_tmpdir(tmp, sizeof(tmp));

	/* ENOSPC on the first put leaves no object behind */
	CHECK_EQ_INT(store_local_new(tmp, &inner), 0);
	if (!CHECK_EQ_INT(store_fault_new(inner, "put:1=ENOSPC", &b), 0)) {
		store_backend_free(inner);
		goto out;
	}
	CHECK_EQ_INT(store_put(b, "packs/aa/x.pack", data, sizeof(data)), -ENOSPC);
	CHECK_EQ_INT(store_size(b, "packs/aa/x.pack", &size), -ENOENT);
	b = store_backend_free(b);

	/* "get:*=EIO": every get fails, the rest works */
	CHECK_EQ_INT(store_local_new(tmp, &inner), 0);
	if (!CHECK_EQ_INT(store_fault_new(inner, "get:*=EIO", &b), 0)) {
		store_backend_free(inner);
		goto out;
	}
	CHECK_EQ_INT(store_put(b, "obj", data, sizeof(data)), 0);
	for (int i = 0; i < 5; i++)
		CHECK_EQ_INT(store_get_range(b, "obj", 0, 10, got), -EIO);
	CHECK_EQ_INT(store_get_range(b, "missing", 0, 10, got), -EIO);
	CHECK_EQ_INT(store_size(b, "obj", &size), 0);
	CHECK_EQ_INT(store_fault_count(b, "get"), 6);
	b = store_backend_free(b);

	/* "put:1=crash": half an object under the final name, and -EIO */
	CHECK_EQ_INT(store_local_new(tmp, &inner), 0);
	if (!CHECK_EQ_INT(store_fault_new(inner, "put:1=crash", &b), 0)) {
		store_backend_free(inner);
		goto out;
	}
	CHECK_EQ_INT(store_put(b, "torn", data, sizeof(data)), -EIO);
	CHECK_EQ_INT(store_size(b, "torn", &size), 0);
	CHECK_EQ_INT(size, sizeof(data) / 2);
	CHECK_EQ_INT(store_get_range(b, "torn", 0, sizeof(data) / 2, got), 0);
	CHECK(memcmp(got, data, sizeof(data) / 2) == 0);
	CHECK_EQ_INT(store_get_range(b, "torn", 0, sizeof(data), got), -ENODATA);
	CHECK_EQ_INT(store_put(b, "whole", data, sizeof(data)), 0); /* only the first */
	CHECK_EQ_INT(store_size(b, "whole", &size), 0);
	CHECK_EQ_INT(size, sizeof(data));
	b = store_backend_free(b);

	/* several rules, other operations */
	CHECK_EQ_INT(store_local_new(tmp, &inner), 0);
	if (!CHECK_EQ_INT(store_fault_new(inner, "size:2=ETIMEDOUT,list:*=EACCES,delete:1=ECONNRESET,"
						 "get:3=ENOENT", &b), 0)) {
		store_backend_free(inner);
		goto out;
	}
	{
		Listing l = {0};
		CHECK_EQ_INT(store_size(b, "whole", &size), 0);
		CHECK_EQ_INT(store_size(b, "whole", &size), -ETIMEDOUT);
		CHECK_EQ_INT(store_size(b, "whole", &size), 0);
		CHECK_EQ_INT(store_list(b, "", collect, &l), -EACCES);
		CHECK_EQ_INT(store_list(b, "", collect, &l), -EACCES);
		CHECK_EQ_INT(l.n, 0);
		CHECK_EQ_INT(store_delete(b, "whole"), -ECONNRESET);
		CHECK_EQ_INT(store_get_range(b, "whole", 0, 1, got), 0); /* not deleted */
		CHECK_EQ_INT(store_get_range(b, "whole", 0, 1, got), 0);
		CHECK_EQ_INT(store_get_range(b, "whole", 0, 1, got), -ENOENT);
		CHECK_EQ_INT(store_get_range(b, "whole", 0, 1, got), 0);
		CHECK_EQ_INT(store_delete(b, "whole"), 0);
		CHECK_EQ_INT(store_fault_count(b, "size"), 3);
		CHECK_EQ_INT(store_fault_count(b, "list"), 2);
		CHECK_EQ_INT(store_fault_count(b, "delete"), 2);
		CHECK_EQ_INT(store_fault_count(b, "get"), 4);
	}
	b = store_backend_free(b);

	/* an empty script injects nothing */
	CHECK_EQ_INT(store_local_new(tmp, &inner), 0);
	if (!CHECK_EQ_INT(store_fault_new(inner, "", &b), 0)) {
		store_backend_free(inner);
		goto out;
	}
	CHECK_EQ_INT(store_put(b, "fine", data, 10), 0);
	b = store_backend_free(b);

	/* bad scripts: -EINVAL, and the caller keeps the inner driver */
	{
		static const char *const bad[] = {
			"bogus", "put", "put:1", "put=EIO", "put:1=", "put:1=EFOO", "foo:1=EIO",
			"put:x=EIO", "put:0=EIO", "put:=EIO", "=EIO:1", "put:1=EIO,get", "PUT:1=EIO",
			"put:1=eio",
			/* more than 16 rules */
			"put:1=EIO,put:2=EIO,put:3=EIO,put:4=EIO,put:5=EIO,put:6=EIO,put:7=EIO,"
			"put:8=EIO,put:9=EIO,put:10=EIO,put:11=EIO,put:12=EIO,put:13=EIO,"
			"put:14=EIO,put:15=EIO,put:16=EIO,put:17=EIO",
		};
		CHECK_EQ_INT(store_local_new(tmp, &inner), 0);
		for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
			StoreBackend *fb = NULL;
			int r = store_fault_new(inner, bad[i], &fb);
			if (!CHECK_EQ_INT(r, -EINVAL))
				fprintf(stderr, "  script \"%s\" accepted\n", bad[i]);
			if (r == 0) {
				/* it took inner: free it through the wrapper and start over */
				store_backend_free(fb);
				CHECK_EQ_INT(store_local_new(tmp, &inner), 0);
			}
		}
		/* a script too long to parse */
		char longs[600];
		memset(longs, 'x', sizeof(longs) - 1);
		longs[sizeof(longs) - 1] = '\0';
		StoreBackend *fb = NULL;
		CHECK_EQ_INT(store_fault_new(inner, longs, &fb), -EINVAL);
		/* inner still works after the failed wraps */
		CHECK_EQ_INT(store_put(inner, "still", data, 3), 0);
		store_backend_free(inner);
	}
out:
	store_backend_free(b);
	TEST_RM_RF(tmp);
}

/*
 * In a directory repository, locks/ also holds wal-push's flock'ed stripe
 * files: taking the writer lock must leave them alone (deleting one lets two
 * pushes of one name run at once), and still remove a damaged writer lock.
 */
static void test_writer_lock_others(void)
{
	char tmp[64], root[PATH_MAX];
	StoreBackend *b = NULL;
	RemoteLock *l = NULL;
	const char *damaged = "locks/0123456789abcdef0123456789abcdef";
	uint64_t size;

	test_tmpdir(tmp, sizeof(tmp));
	snprintf(root, sizeof(root), "%s/objects", tmp);
	if (!CHECK_EQ_INT(store_local_new(root, &b), 0))
		goto out;
	CHECK_EQ_INT(store_put(b, "locks/wal-42.lock", "", 0), 0);
	CHECK_EQ_INT(store_put(b, damaged, "", 0), 0);
	CHECK_EQ_INT(remote_lock_acquire(b, NULL, &l, NULL), 0);
	CHECK_EQ_INT(store_size(b, "locks/wal-42.lock", &size), 0);
	CHECK_EQ_INT(store_size(b, damaged, &size), -ENOENT);
	CHECK(remote_lock_release(l) == NULL);
	CHECK_EQ_INT(store_size(b, "locks/wal-42.lock", &size), 0);
out:
	store_backend_free(b);
	TEST_RM_RF(tmp);
}

int main(void)
{
	test_local();
	test_writer_lock_others();
	test_fault();
	return test_finish();
}
