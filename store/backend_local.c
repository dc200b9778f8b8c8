/*
 * Local directory driver. put() writes a temporary file beside the final
 * name's parent (same filesystem), fsyncs it, renames it into place and
 * fsyncs the directory, so an object is either absent or complete.
 *
 * Reads keep a few objects open (an LRU of file descriptors): reading a pack
 * chunk by chunk through one open file lets the kernel see the sequential
 * pattern and read ahead, where an open per chunk made every read a disk
 * round trip. put() and delete() of a name drop its descriptor.
 */
#include "store/backend.h"
#include "common/util.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define FD_CACHE_SIZE 32

typedef struct OpenObject {
	char name[128]; /* "" when the slot is free */
	int fd;
	unsigned refs;
	bool doomed; /* replaced or deleted: close at the last reference */
	uint64_t used;
} OpenObject;

typedef struct LocalBackend {
	StoreBackend base;
	char *root;
	FileOwner owner; /* root writing into another user's repository: give them what it makes */
	pthread_mutex_t fd_lock;
	OpenObject open[FD_CACHE_SIZE];
	uint64_t tick;
} LocalBackend;

static void open_forget(LocalBackend *lb, const char *name);

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
	r = mkdir_p_owned(dir, 0700, &lb->owner);
	if (r < 0)
		return r;
	r = file_write_atomic_owned(path, buf, len, 0600, &lb->owner);
	open_forget(lb, name);
	return r;
}

/* The slot of name, or NULL. fd_lock held. */
static OpenObject *open_find(LocalBackend *lb, const char *name)
{
	for (size_t i = 0; i < FD_CACHE_SIZE; i++)
		if (!lb->open[i].doomed && !strcmp(lb->open[i].name, name))
			return &lb->open[i];
	return NULL;
}

/* A free slot, or the least recently used idle one (closed). fd_lock held. */
static OpenObject *open_slot(LocalBackend *lb)
{
	OpenObject *best = NULL;
	for (size_t i = 0; i < FD_CACHE_SIZE; i++) {
		OpenObject *o = &lb->open[i];
		if (!o->name[0])
			return o;
		if (o->refs == 0 && (!best || o->used < best->used))
			best = o;
	}
	if (best) {
		close(best->fd);
		best->name[0] = 0;
	}
	return best;
}

/*
 * An open descriptor for name, cached when possible; *ret_slot says which
 * slot to release (NULL: close the descriptor yourself).
 */
static int open_get(LocalBackend *lb, const char *name, const char *path, OpenObject **ret_slot)
{
	OpenObject *o;
	int fd;

	pthread_mutex_lock(&lb->fd_lock);
	o = open_find(lb, name);
	if (o) {
		o->refs++;
		o->used = ++lb->tick;
		pthread_mutex_unlock(&lb->fd_lock);
		*ret_slot = o;
		return o->fd;
	}
	pthread_mutex_unlock(&lb->fd_lock);

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	/* objects are read front to back: a larger readahead window */
	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	*ret_slot = NULL;
	if (strlen(name) >= sizeof(o->name))
		return fd;
	pthread_mutex_lock(&lb->fd_lock);
	if (!open_find(lb, name) && (o = open_slot(lb))) {
		*o = (OpenObject){.fd = fd, .refs = 1, .used = ++lb->tick};
		snprintf(o->name, sizeof(o->name), "%s", name);
		*ret_slot = o;
	}
	pthread_mutex_unlock(&lb->fd_lock);
	return fd;
}

static void open_put(LocalBackend *lb, OpenObject *o, int fd)
{
	if (!o) {
		close(fd);
		return;
	}
	pthread_mutex_lock(&lb->fd_lock);
	if (--o->refs == 0 && o->doomed) {
		close(o->fd);
		*o = (OpenObject){0};
	}
	pthread_mutex_unlock(&lb->fd_lock);
}

/* name was replaced or deleted: its descriptor must not serve reads any more. */
static void open_forget(LocalBackend *lb, const char *name)
{
	pthread_mutex_lock(&lb->fd_lock);
	OpenObject *o = open_find(lb, name);
	if (o && o->refs == 0) {
		close(o->fd);
		*o = (OpenObject){0};
	} else if (o) {
		o->doomed = true;
	}
	pthread_mutex_unlock(&lb->fd_lock);
}

static int local_get_range(StoreBackend *b, const char *name, uint64_t offset, size_t len,
			   void *buf)
{
	LocalBackend *lb = (LocalBackend *)b;
	char path[PATH_MAX];
	OpenObject *slot = NULL;
	ssize_t n;
	int fd, r = local_path(lb, name, path, sizeof(path));
	if (r < 0)
		return r;
	fd = open_get(lb, name, path, &slot);
	if (fd < 0)
		return fd;
	n = pread_full(fd, buf, len, (off_t)offset);
	open_put(lb, slot, fd);
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
	open_forget(lb, name);
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

static void local_free(StoreBackend *b)
{
	LocalBackend *lb = (LocalBackend *)b;
	for (size_t i = 0; i < FD_CACHE_SIZE; i++)
		if (lb->open[i].name[0] || lb->open[i].doomed)
			close(lb->open[i].fd);
	pthread_mutex_destroy(&lb->fd_lock);
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
	pthread_mutex_init(&lb->fd_lock, NULL);
	lb->root = strdup(root);
	if (!lb->root) {
		free(lb);
		return -ENOMEM;
	}
	/* a root that is not there yet (init) is made by the caller, as the caller */
	if (file_owner_of(root, &lb->owner) < 0)
		lb->owner = (FileOwner){0};
	store_backend_init(&lb->base, &local_ops);
	*ret = &lb->base;
	return 0;
}

const char *store_local_root(StoreBackend *b)
{
	PGBAKFS_CHECK(b->ops == &local_ops);
	return ((LocalBackend *)b)->root;
}
