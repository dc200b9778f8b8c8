/*
 * Local directory driver. put() writes a temporary file beside the final
 * name's parent (same filesystem), fsyncs it, renames it into place and
 * fsyncs the directory, so an object is either absent or complete.
 */
#include "store/backend.h"
#include "common/util.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

typedef struct LocalBackend {
	StoreBackend base;
	char *root;
} LocalBackend;

static int local_path(LocalBackend *lb, const char *name, char *buf, size_t len)
{
	if (!*name || name[0] == '/' || strstr(name, ".."))
		return -EINVAL;
	if ((size_t)snprintf(buf, len, "%s/%s", lb->root, name) >= len)
		return -ENAMETOOLONG;
	return 0;
}

static int local_put(StoreBackend *b, const char *name, const void *buf, size_t len)
{
	LocalBackend *lb = (LocalBackend *)b;
	char path[PATH_MAX], dir[PATH_MAX];
	int r = local_path(lb, name, path, sizeof(path));
	if (r < 0)
		return r;
	path_dirname(path, dir, sizeof(dir));
	r = mkdir_p(dir, 0700);
	if (r < 0)
		return r;
	return file_write_atomic(path, buf, len, 0600);
}

static int local_get_range(StoreBackend *b, const char *name, uint64_t offset, size_t len,
			   void *buf)
{
	LocalBackend *lb = (LocalBackend *)b;
	char path[PATH_MAX];
	ssize_t n;
	int r = local_path(lb, name, path, sizeof(path));
	if (r < 0)
		return r;
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = pread_full(fd, buf, len, (off_t)offset);
	if (n < 0)
		return (int)n;
	return (size_t)n == len ? 0 : -ENODATA;
}

static int local_size(StoreBackend *b, const char *name, uint64_t *ret_size)
{
	LocalBackend *lb = (LocalBackend *)b;
	char path[PATH_MAX];
	struct stat st;
	int r = local_path(lb, name, path, sizeof(path));
	if (r < 0)
		return r;
	if (stat(path, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -ENOENT;
	*ret_size = (uint64_t)st.st_size;
	return 0;
}

static int local_list_dir(LocalBackend *lb, const char *rel, StoreListFn cb, void *userdata)
{
	char path[PATH_MAX];
	DIR *d;
	struct dirent *de;
	int r = 0;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", lb->root, rel) >= sizeof(path))
		return -ENAMETOOLONG;
	d = opendir(path);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while (r == 0 && (de = readdir(d))) {
		char child[PATH_MAX];
		struct stat st;
		if (de->d_name[0] == '.') /* ".", "..", and in-flight ".tmp-*" files */
			continue;
		if ((size_t)snprintf(child, sizeof(child), "%s%s%s", rel, *rel ? "/" : "",
				     de->d_name) >= sizeof(child)) {
			r = -ENAMETOOLONG;
			break;
		}
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue;
			r = -errno;
			break;
		}
		if (S_ISDIR(st.st_mode))
			r = local_list_dir(lb, child, cb, userdata);
		else if (S_ISREG(st.st_mode))
			r = cb(child, (uint64_t)st.st_size, userdata);
	}
	closedir(d);
	return r;
}

static int local_list(StoreBackend *b, const char *prefix, StoreListFn cb, void *userdata)
{
	LocalBackend *lb = (LocalBackend *)b;
	char rel[PATH_MAX];
	size_t n = strlen(prefix);
	/* prefixes are directory names ("packs/" or "packs") */
	snprintf(rel, sizeof(rel), "%.*s", (int)(n && prefix[n - 1] == '/' ? n - 1 : n), prefix);
	return local_list_dir(lb, rel, cb, userdata);
}

static int local_delete(StoreBackend *b, const char *name)
{
	LocalBackend *lb = (LocalBackend *)b;
	char path[PATH_MAX];
	int r = local_path(lb, name, path, sizeof(path));
	if (r < 0)
		return r;
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

static void local_free(StoreBackend *b)
{
	LocalBackend *lb = (LocalBackend *)b;
	free(lb->root);
	free(lb);
}

static const StoreBackendOps local_ops = {
	.name = "local",
	.features = STORE_FEATURE_LOCAL_PATH,
	.put = local_put,
	.get_range = local_get_range,
	.size = local_size,
	.list = local_list,
	.delete = local_delete,
	.free = local_free,
};

int store_local_new(const char *root, StoreBackend **ret)
{
	LocalBackend *lb = calloc(1, sizeof(*lb));
	if (!lb)
		return -ENOMEM;
	lb->root = strdup(root);
	if (!lb->root) {
		free(lb);
		return -ENOMEM;
	}
	store_backend_init(&lb->base, &local_ops);
	*ret = &lb->base;
	return 0;
}

const char *store_local_root(StoreBackend *b)
{
	PGBAKFS_CHECK(b->ops == &local_ops);
	return ((LocalBackend *)b)->root;
}
