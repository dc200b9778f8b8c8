#include "store/backend.h"
#include "common/util.h"

void store_backend_init(StoreBackend *b, const StoreBackendOps *ops)
{
	/* asserted once here so that callers never test for NULL */
	PGBAKFS_CHECK(ops && ops->put && ops->get_range && ops->size && ops->list &&
		      ops->delete && ops->free);
	b->ops = ops;
}

int store_put(StoreBackend *b, const char *name, const void *buf, size_t len)
{
	return b->ops->put(b, name, buf, len);
}

int store_get_range(StoreBackend *b, const char *name, uint64_t offset, size_t len, void *buf)
{
	return b->ops->get_range(b, name, offset, len, buf);
}

int store_size(StoreBackend *b, const char *name, uint64_t *ret_size)
{
	return b->ops->size(b, name, ret_size);
}

int store_list(StoreBackend *b, const char *prefix, StoreListFn cb, void *userdata)
{
	return b->ops->list(b, prefix, cb, userdata);
}

int store_delete(StoreBackend *b, const char *name)
{
	return b->ops->delete(b, name);
}

StoreBackend *store_backend_free(StoreBackend *b)
{
	if (b)
		b->ops->free(b);
	return NULL;
}

void *store_get_buf(size_t size)
{
	return size >= STORE_GET_HUGE ? malloc_huge(size) : malloc(size ? size : 1);
}

int store_get_all(StoreBackend *b, const char *name, size_t max, void **ret, size_t *ret_len)
{
	uint64_t size;
	void *buf;
	int r;

	if (b->ops->get_all)
		return b->ops->get_all(b, name, max, ret, ret_len);
	r = store_size(b, name, &size);
	if (r < 0)
		return r;
	if (size > max)
		return -EFBIG;
	buf = store_get_buf((size_t)size);
	if (!buf)
		return -ENOMEM;
	r = size ? store_get_range(b, name, 0, size, buf) : 0;
	if (r < 0) {
		free(buf);
		return r;
	}
	*ret = buf;
	*ret_len = size;
	return 0;
}
