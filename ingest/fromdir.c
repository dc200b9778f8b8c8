#include "ingest/fromdir.h"
#include "common/log.h"
#include "common/util.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define READ_BUF_SIZE (1024 * 1024)

typedef struct Walker {
	SnapWriter *w;
	FromDirError *err;
	uint8_t *buf;
	size_t root_len; /* of the tree's path: what precedes a path inside the snapshot */
} Walker;

static int walker_fail(Walker *wk, const char *path, int r)
{
	size_t n = strlen(path), room = sizeof(wk->err->path) - 1;
	if (!wk->err || wk->err->path[0])
		return r;
	if (n <= room) {
		memcpy(wk->err->path, path, n + 1);
	} else { /* keep both ends: where it starts and which file it is */
		size_t head = (room - 3) / 2, tail = room - 3 - head;
		snprintf(wk->err->path, sizeof(wk->err->path), "%.*s...%s", (int)head, path,
			 path + n - tail);
	}
	return r;
}

/* One warning per file, as GNU tar gives them; the snapshot's status becomes "warning". */
static int walker_warn(Walker *wk, const char *path, const char *what)
{
	log_warning("\"%s\": %s", path, what);
	return snapwriter_add_warning(wk->w);
}

static bool same_stat(const struct stat *a, const struct stat *b)
{
	return a->st_size == b->st_size && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
	       a->st_mtim.tv_nsec == b->st_mtim.tv_nsec && a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
	       a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

static SnapEntry entry_from_stat(uint64_t parent, const char *name, const struct stat *st)
{
	return (SnapEntry){.parent = parent, .name = name, .mode = st->st_mode, .uid = st->st_uid,
			   .gid = st->st_gid,
			   .mtime_ns = timespec_to_ns(&st->st_mtim)};
}

/* Copy [off, end) of fd into the file, reading in large sequential blocks. */
static int ingest_range(Walker *wk, SnapFile *f, int fd, off_t off, off_t end, off_t *ret_done)
{
	while (off < end) {
		size_t want = (size_t)MIN((off_t)READ_BUF_SIZE, end - off);
		ssize_t n = pread_full(fd, wk->buf, want, off);
		if (n < 0)
			return (int)n;
		if (n == 0)
			break; /* shrank while we read: keep what is there */
		int r = snapwriter_file_write(wk->w, f, wk->buf, (size_t)n);
		if (r < 0)
			return r;
		off += n;
	}
	*ret_done = off;
	return 0;
}

static int ingest_file_data(Walker *wk, SnapFile *f, int fd, off_t size)
{
	off_t pos = 0;
	int r;
	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	while (pos < size) {
		off_t data = lseek(fd, pos, SEEK_DATA);
		if (data < 0 && errno == ENXIO)
			data = size; /* only a hole remains */
		else if (data < 0)
			data = pos; /* no SEEK_DATA here: read everything */
		if (data > size)
			data = size;
		if (data > pos) {
			r = snapwriter_file_write_zeros(wk->w, f, (uint64_t)(data - pos));
			if (r < 0)
				return r;
			pos = data;
		}
		if (pos >= size)
			break;
		off_t hole = lseek(fd, pos, SEEK_HOLE);
		if (hole < 0 || hole > size)
			hole = size;
		off_t done = pos;
		r = ingest_range(wk, f, fd, pos, hole, &done);
		if (r < 0)
			return r;
		if (done < hole)
			break; /* file shrank */
		pos = hole;
	}
	return 0;
}

static int ingest_file(Walker *wk, int dirfd, const char *name, const char *path, uint64_t parent)
{
	SnapFile *f;
	struct stat st, after;
	int r, r2;
	_cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOATIME);
	if (fd < 0 && errno == EPERM)
		fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return walker_warn(wk, path, "file removed before we read it");
		return walker_fail(wk, path, -errno);
	}
	if (fstat(fd, &st) < 0)
		return walker_fail(wk, path, -errno);
	SnapEntry e = entry_from_stat(parent, name, &st);
	r = snapwriter_file_begin(wk->w, &e, &f);
	if (r < 0)
		return r;
	r = ingest_file_data(wk, f, fd, st.st_size);
	r2 = snapwriter_file_end(wk->w, f);
	if (r < 0)
		return walker_fail(wk, path, r);
	if (r2 < 0)
		return r2;
	/* written to meanwhile: what we kept may mix old and new data */
	if (fstat(fd, &after) < 0)
		return walker_fail(wk, path, -errno);
	if (!same_stat(&st, &after))
		return walker_warn(wk, path, "file changed as we read it");
	return 0;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* Sorted entry names of a directory, for a stable ino order. */
static int read_names(int fd, char ***ret, size_t *ret_n)
{
	int dup_fd = dup(fd);
	DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;

	if (!d) {
		int r = -errno;
		if (dup_fd >= 0)
			close(dup_fd);
		return r;
	}
	while ((errno = 0, de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 32;
			char **v = realloc(names, cap * sizeof(char *));
			if (!v)
				goto oom;
			names = v;
		}
		if (!(names[n] = strdup(de->d_name)))
			goto oom;
		n++;
	}
	if (errno) {
		int r = -errno;
		closedir(d);
		free_names(names, n);
		return r;
	}
	closedir(d);
	if (n > 1)
		qsort(names, n, sizeof(char *), cmp_names);
	*ret = names;
	*ret_n = n;
	return 0;
oom:
	closedir(d);
	free_names(names, n);
	return -ENOMEM;
}

static int walk_dir(Walker *wk, int fd, const char *path, uint64_t ino);

static int walk_entry(Walker *wk, int dirfd, const char *path, const char *name, uint64_t parent)
{
	_cleanup_free_ char *child = NULL;
	struct stat st;
	int r;

	if (asprintf(&child, "%s/%s", path, name) < 0) {
		child = NULL;
		return -ENOMEM;
	}
	/* restore writes it at TARGET/rel: refuse what no restore could write */
	if (strlen(child) - wk->root_len - 1 >= FROMDIR_PATH_MAX) {
		if (wk->err)
			wk->err->rel_len = strlen(child) - wk->root_len - 1;
		return walker_fail(wk, child, -ENAMETOOLONG);
	}
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? walker_warn(wk, child, "file removed before we read it")
				       : walker_fail(wk, child, -errno);
	SnapEntry e = entry_from_stat(parent, name, &st);
	if (S_ISREG(st.st_mode))
		return ingest_file(wk, dirfd, name, child, parent);
	if (S_ISLNK(st.st_mode)) {
		char target[PATH_MAX];
		ssize_t n = readlinkat(dirfd, name, target, sizeof(target) - 1);
		if (n < 0)
			return errno == ENOENT ? walker_warn(wk, child, "file removed before we read it")
					       : walker_fail(wk, child, -errno);
		target[n] = '\0';
		return snapwriter_add_symlink(wk->w, &e, target);
	}
	if (S_ISDIR(st.st_mode)) {
		uint64_t ino;
		_cleanup_close_ int sub = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sub < 0)
			return errno == ENOENT ? walker_warn(wk, child, "directory removed before we read it")
					       : walker_fail(wk, child, -errno);
		r = snapwriter_add_dir(wk->w, &e, &ino);
		if (r < 0)
			return r;
		return walk_dir(wk, sub, child, ino);
	}
	log_warning("skipping \"%s\": not a regular file, directory or symlink", child);
	return 0;
}

static int walk_dir(Walker *wk, int fd, const char *path, uint64_t ino)
{
	char **names = NULL;
	size_t n = 0;
	int r = read_names(fd, &names, &n);
	if (r < 0)
		return walker_fail(wk, path, r);
	for (size_t i = 0; i < n && r == 0; i++)
		r = walk_entry(wk, fd, path, names[i], ino);
	free_names(names, n);
	return r;
}

int fromdir_ingest(SnapWriter *w, const char *dir, FromDirError *err)
{
	Walker wk = {.w = w, .err = err, .root_len = strlen(dir)};
	struct stat st;
	uint64_t root;
	int r;
	_cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (err)
		*err = (FromDirError){.rel_len = 0};
	if (fd < 0 || fstat(fd, &st) < 0)
		return walker_fail(&wk, dir, -errno);
	wk.buf = malloc(READ_BUF_SIZE);
	if (!wk.buf)
		return -ENOMEM;
	SnapEntry e = entry_from_stat(0, "", &st);
	r = snapwriter_add_dir(w, &e, &root);
	if (r == 0)
		r = walk_dir(&wk, fd, dir, root);
	free(wk.buf);
	return r;
}

static uint64_t total_acc;

static int add_size(const char *p _unused_, const struct stat *st, int flag, struct FTW *f _unused_)
{
	if (flag == FTW_F && S_ISREG(st->st_mode))
		total_acc += (uint64_t)st->st_size;
	return 0;
}

int fromdir_total_size(const char *dir, uint64_t *ret)
{
	/* nftw has no user pointer; this is only called from the main thread */
	total_acc = 0;
	if (nftw(dir, add_size, 64, FTW_PHYS) < 0)
		return -errno;
	*ret = total_acc;
	return 0;
}
