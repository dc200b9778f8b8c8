/*
 * Directories are read whole and sorted before any entry is looked at: the
 * order is the snapshot's inode order, and a directory whose entries change
 * while we walk gives what was listed (an entry gone since is the callback's
 * to judge: stat_err -ENOENT). Subdirectories are opened relative to their
 * parent with O_NOFOLLOW, so a directory swapped for a symlink meanwhile is
 * not followed out of the tree.
 */
#include "ingest/walk.h"
#include "common/util.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

void walk_names_free(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

int walk_names(int fd, char ***ret, size_t *ret_n)
{
	int dup_fd = dup(fd);
	DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	int r = 0;

	if (!d) {
		r = -errno;
		if (dup_fd >= 0)
			close(dup_fd);
		return r;
	}
	rewinddir(d); /* the duplicate shares fd's position */
	while ((errno = 0, de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 32;
			char **v = realloc(names, cap * sizeof(char *));
			if (!v) {
				r = -ENOMEM;
				break;
			}
			names = v;
		}
		if (!(names[n] = strdup(de->d_name))) {
			r = -ENOMEM;
			break;
		}
		n++;
	}
	if (r == 0 && errno)
		r = -errno;
	closedir(d);
	if (r < 0) {
		walk_names_free(names, n);
		return r;
	}
	if (n > 1)
		qsort(names, n, sizeof(char *), cmp_names);
	*ret = names;
	*ret_n = n;
	return 0;
}

static int dir_failed(const WalkOps *ops, void *userdata, const char *path, int r)
{
	return ops->dir_error ? ops->dir_error(userdata, path, r) : r;
}

/* One entry of the directory open at fd; its path and rel are already built. */
static int walk_entry(WalkEntry *e, const WalkOps *ops, void *userdata)
{
	uint64_t ino = 0;
	int r;

	e->stat_err = fstatat(e->dirfd, e->name, &e->st, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
	e->fd = -1;
	if (!e->stat_err && S_ISDIR(e->st.st_mode)) {
		e->fd = openat(e->dirfd, e->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (e->fd < 0)
			e->fd = -errno;
	}
	r = ops->entry(userdata, e, &ino);
	if (r == WALK_DESCEND)
		r = e->fd >= 0 ? walk_dir_fd(e->fd, e->path, e->rel, ino, ops, userdata) : -EINVAL;
	if (e->fd >= 0)
		close(e->fd);
	return r;
}

int walk_dir_fd(int fd, const char *path, const char *rel, uint64_t ino, const WalkOps *ops,
		void *userdata)
{
	char **names = NULL;
	size_t n = 0;
	int r = walk_names(fd, &names, &n);

	if (r < 0)
		return dir_failed(ops, userdata, path, r);
	for (size_t i = 0; i < n && r == 0; i++) {
		_cleanup_free_ char *cpath = NULL, *crel = NULL;
		if (asprintf(&cpath, "%s/%s", path, names[i]) < 0 ||
		    asprintf(&crel, "%s%s%s", rel, *rel ? "/" : "", names[i]) < 0) {
			r = -ENOMEM;
			break;
		}
		WalkEntry e = {.path = cpath, .rel = crel, .dir_rel = rel, .name = names[i],
			       .dirfd = fd, .parent = ino, .names = names, .n_names = n};
		r = walk_entry(&e, ops, userdata);
	}
	walk_names_free(names, n);
	return r < 0 ? r : 0;
}

int walk_dir(const char *path, const char *rel, uint64_t ino, const WalkOps *ops, void *userdata)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return dir_failed(ops, userdata, path, -errno);
	return walk_dir_fd(fd, path, rel, ino, ops, userdata);
}

/* ---- reading a file ---- */

/* [off, end) of fd into f, or up to the end of the file; *ret_off: where it stopped. */
static int read_range(SnapWriter *w, SnapFile *f, int fd, uint64_t off, uint64_t end, uint8_t *buf,
		      size_t buf_len, const WalkReadOps *ops, void *userdata, uint64_t *ret_off)
{
	int r = 0;
	while (off < end) {
		size_t want = (size_t)MIN((uint64_t)buf_len, end - off);
		ssize_t n = pread_full(fd, buf, want, (off_t)off);
		if (n < 0)
			return (int)n;
		if (n == 0)
			break; /* shrank while we read: keep what is there */
		if (ops && ops->data)
			r = ops->data(userdata, buf, (size_t)n);
		if (r == 0)
			r = snapwriter_file_write(w, f, buf, (size_t)n);
		if (r < 0)
			return r;
		off += (uint64_t)n;
	}
	*ret_off = off;
	return 0;
}

static int read_hole(SnapWriter *w, SnapFile *f, uint64_t len, const WalkReadOps *ops,
		     void *userdata)
{
	int r = ops && ops->zeros ? ops->zeros(userdata, len) : 0;
	return r < 0 ? r : snapwriter_file_write_zeros(w, f, len);
}

int walk_read_file(SnapWriter *w, SnapFile *f, int fd, uint64_t size, bool to_eof, uint8_t *buf,
		   size_t buf_len, const WalkReadOps *ops, void *userdata, uint64_t *ret_len)
{
	uint64_t pos = 0, done = 0;
	int r;

	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	while (pos < size) {
		off_t data = lseek(fd, (off_t)pos, SEEK_DATA);
		if (data < 0 && errno == ENXIO) {
			/* only a hole remains, or the end of a file that shrank: no zeros past it */
			struct stat st;
			if (fstat(fd, &st) == 0 && (uint64_t)st.st_size < size)
				size = MAX(pos, (uint64_t)st.st_size);
			data = (off_t)size;
		} else if (data < 0)
			data = (off_t)pos; /* no SEEK_DATA here: read everything */
		if ((uint64_t)data > size)
			data = (off_t)size;
		if ((uint64_t)data > pos) {
			r = read_hole(w, f, (uint64_t)data - pos, ops, userdata);
			if (r < 0)
				return r;
			pos = (uint64_t)data;
		}
		if (pos >= size)
			break;
		off_t hole = lseek(fd, (off_t)pos, SEEK_HOLE);
		if (hole < 0 || (uint64_t)hole > size)
			hole = (off_t)size;
		r = read_range(w, f, fd, pos, (uint64_t)hole, buf, buf_len, ops, userdata, &done);
		if (r < 0)
			return r;
		if (done < (uint64_t)hole) {
			*ret_len = done; /* file shrank */
			return 0;
		}
		pos = (uint64_t)hole;
	}
	if (to_eof) { /* grown meanwhile */
		r = read_range(w, f, fd, pos, UINT64_MAX, buf, buf_len, ops, userdata, &pos);
		if (r < 0)
			return r;
	}
	*ret_len = pos;
	return 0;
}
