/*
 * WAL spools (see walspool.h).
 *
 * Fetch entry: the segment's bytes, then a 64-byte trailer (little-endian):
 *   0  8  "PGBAKSPL"
 *   8  4  format (1)
 *   12 4  CRC-32C of the bytes
 *   16 8  their length
 *   24 40 the entry's name, NUL-padded
 * The bytes were verified against the archived object's SHA-256 before they
 * were spooled; the CRC only guards the spool file itself (a torn write after
 * a crash, a bad disk), at a cost PostgreSQL does not notice. A trailer that
 * does not match is -EBADMSG: the caller fetches the segment again.
 *
 * Push record "NAME.done": "PGBAKDON", the length (8 bytes), fasthash128 of
 * the bytes archived (16 bytes), keyed with a fixed key: it tells whether
 * pg_wal/NAME still holds the bytes that were archived, several GB/s, where
 * hashing again with SHA-256 would cost half of a push.
 *
 * Temporary files are "NAME.tmp-XXXXXX" (mkstemp): walspool_trim() removes
 * those left by a crash. Every entry and record is written while the
 * process holds the spool's flock, so a temporary file seen by the holder is
 * either its own (never, outside put) or a dead process's.
 */
#include "store/walspool.h"
#include "common/crc32c.h"
#include "common/fasthash.h"
#include "common/util.h"
#include "store/chunk.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define SPOOL_MAGIC "PGBAKSPL"
#define SPOOL_FORMAT 1
#define SPOOL_TRAILER 64
#define DONE_MAGIC "PGBAKDON"
#define DONE_LEN 32
#define DONE_SUFFIX ".done"

static const uint8_t done_key[16] = "pgbakfs wal done";

struct WalSpool {
	char *dir;
	int lock_fd;
};

int walspool_open(const char *dir, WalSpool **ret)
{
	_cleanup_free_ char *lock = NULL;
	WalSpool *s;
	int fd, e = mkdir_p(dir, 0700);

	if (e < 0)
		return e;
	if (asprintf(&lock, "%s/lock", dir) < 0)
		return -ENOMEM;
	fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	while (flock(fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			e = -errno;
			close(fd);
			return e;
		}
	}
	s = calloc(1, sizeof(*s));
	if (!s || !(s->dir = strdup(dir))) {
		free(s);
		close(fd);
		return -ENOMEM;
	}
	s->lock_fd = fd;
	*ret = s;
	return 0;
}

WalSpool *walspool_free(WalSpool *s)
{
	if (!s)
		return NULL;
	close(s->lock_fd);
	free(s->dir);
	free(s);
	return NULL;
}

const char *walspool_dir(const WalSpool *s) { return s->dir; }

static int entry_path(const WalSpool *s, const char *name, const char *suffix, char *buf,
		      size_t len)
{
	WalName n;
	if (wal_name_parse(name, &n) < 0)
		return -EINVAL;
	if ((size_t)snprintf(buf, len, "%s/%s%s", s->dir, name, suffix) >= len)
		return -ENAMETOOLONG;
	return 0;
}

/* Write body + tail into a temporary file beside path and rename it there. */
static int write_renamed(const char *path, const void *body, size_t body_len, const void *tail,
			 size_t tail_len)
{
	char tmp[PATH_MAX];
	int fd, e = 0;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp-XXXXXX", path) >= sizeof(tmp))
		return -ENAMETOOLONG;
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (body_len)
		e = write_full(fd, body, body_len);
	if (e == 0 && tail_len)
		e = write_full(fd, tail, tail_len);
	if (close(fd) < 0 && e == 0)
		e = -errno;
	if (e == 0 && rename(tmp, path) < 0)
		e = -errno;
	if (e < 0)
		unlink(tmp);
	return e;
}

int walspool_put(WalSpool *s, const char *name, const void *buf, size_t len)
{
	uint8_t t[SPOOL_TRAILER] = {0};
	char path[PATH_MAX];
	int e = entry_path(s, name, "", path, sizeof(path));

	if (e < 0)
		return e;
	memcpy(t, SPOOL_MAGIC, 8);
	put_le32(t + 8, SPOOL_FORMAT);
	put_le32(t + 12, crc32c(buf, len));
	put_le64(t + 16, len);
	memcpy(t + 24, name, strlen(name));
	/* the trailer goes last: a file cut short has none */
	return write_renamed(path, buf, len, t, sizeof(t));
}

bool walspool_has(WalSpool *s, const char *name)
{
	char path[PATH_MAX];
	return entry_path(s, name, "", path, sizeof(path)) == 0 && access(path, F_OK) == 0;
}

/* Read a whole regular file of at most max bytes; anything else is a damaged entry. */
static int read_file(const char *path, uint64_t max, uint8_t **ret, size_t *ret_len)
{
	int e = file_read_regular(path, true, max, ret, ret_len);
	return e == -EINVAL || e == -EFBIG || e == -EIO ? -EBADMSG : e;
}

int walspool_take(WalSpool *s, const char *name, void **ret_buf, size_t *ret_len)
{
	_cleanup_free_ uint8_t *buf = NULL;
	char path[PATH_MAX], tname[41] = "";
	size_t n = 0, len;
	const uint8_t *t;
	int e = entry_path(s, name, "", path, sizeof(path));

	if (e < 0)
		return e;
	e = read_file(path, PGBAKFS_WAL_FILE_MAX + SPOOL_TRAILER, &buf, &n);
	if (e == -ENOENT || (e < 0 && e != -EBADMSG))
		return e;
	/* consumed or damaged: either way it is never served again */
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	if (e < 0 || n < SPOOL_TRAILER)
		return -EBADMSG;
	len = n - SPOOL_TRAILER;
	t = buf + len;
	memcpy(tname, t + 24, 40);
	if (memcmp(t, SPOOL_MAGIC, 8) != 0 || get_le32(t + 8) != SPOOL_FORMAT ||
	    get_le64(t + 16) != len || strcmp(tname, name) != 0 ||
	    !buf_is_zero(t + 24 + strlen(name), 40 - strlen(name)) ||
	    get_le32(t + 12) != crc32c(buf, len))
		return -EBADMSG;
	*ret_len = len;
	*ret_buf = TAKE_PTR(buf);
	return 0;
}

/* Should the fetch-spool entry name (of file size st_size) stay? */
static bool entry_wanted(const char *name, uint64_t st_size, const WalName *want, uint64_t window)
{
	uint64_t seg_size = st_size - SPOOL_TRAILER, n, w;
	WalName e;

	if (!want || st_size < SPOOL_TRAILER || wal_name_parse(name, &e) < 0 ||
	    e.kind != WAL_KIND_SEGMENT || e.timeline != want->timeline ||
	    !wal_seg_size_valid(seg_size) || e.seg >= 0x100000000ULL / seg_size ||
	    want->seg >= 0x100000000ULL / seg_size)
		return false;
	n = wal_name_segno(&e, (uint32_t)seg_size);
	w = wal_name_segno(want, (uint32_t)seg_size);
	return n > w && n - w < window;
}

int walspool_trim(WalSpool *s, const WalName *want, uint64_t window, size_t *ret_n_kept)
{
	DIR *d = opendir(s->dir);
	struct dirent *de;
	size_t n_kept = 0;
	int e = 0;

	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		const char *name = de->d_name;
		struct stat st;
		WalName wn;
		bool tmp = strstr(name, ".tmp-") != NULL;

		if (!tmp && (wal_name_parse(name, &wn) < 0 || wn.kind != WAL_KIND_SEGMENT))
			continue; /* lock, push records: not entries */
		if (fstatat(dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue;
			e = -errno;
			break;
		}
		if (!tmp && S_ISREG(st.st_mode) && entry_wanted(name, (uint64_t)st.st_size, want, window)) {
			n_kept++;
			continue;
		}
		if (unlinkat(dirfd(d), name, 0) < 0 && errno != ENOENT) {
			e = -errno;
			break;
		}
	}
	closedir(d);
	if (e == 0 && ret_n_kept)
		*ret_n_kept = n_kept;
	return e;
}

/* ---- push records ---- */

static void done_record(const void *buf, size_t len, uint8_t out[DONE_LEN])
{
	memcpy(out, DONE_MAGIC, 8);
	put_le64(out + 8, len);
	fasthash128(done_key, buf, len, out + 16);
}

int walspool_mark_done(WalSpool *s, const char *name, const void *buf, size_t len)
{
	uint8_t rec[DONE_LEN];
	char path[PATH_MAX];
	int e = entry_path(s, name, DONE_SUFFIX, path, sizeof(path));

	if (e < 0)
		return e;
	done_record(buf, len, rec);
	return write_renamed(path, rec, sizeof(rec), NULL, 0);
}

int walspool_take_done(WalSpool *s, const char *name, const void *buf, size_t len)
{
	_cleanup_free_ uint8_t *rec = NULL;
	uint8_t want[DONE_LEN];
	char path[PATH_MAX];
	size_t n = 0;
	int e = entry_path(s, name, DONE_SUFFIX, path, sizeof(path));

	if (e < 0)
		return e;
	e = read_file(path, DONE_LEN, &rec, &n);
	if (e == -ENOENT)
		return 0;
	if (e < 0 && e != -EBADMSG)
		return e;
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	if (e < 0 || n != DONE_LEN)
		return 0;
	done_record(buf, len, want);
	return memcmp(rec, want, DONE_LEN) == 0 ? 1 : 0;
}

int walspool_prune_done(WalSpool *s, bool (*keep)(const char *name, void *userdata),
			void *userdata)
{
	DIR *d = opendir(s->dir);
	struct dirent *de;
	int e = 0;

	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		char name[PGBAKFS_WAL_NAME_MAX + 1];
		size_t n = strlen(de->d_name), sl = strlen(DONE_SUFFIX);
		bool tmp = strstr(de->d_name, DONE_SUFFIX ".tmp-") != NULL;

		if (!tmp && (n <= sl || n - sl > PGBAKFS_WAL_NAME_MAX ||
			     strcmp(de->d_name + n - sl, DONE_SUFFIX) != 0))
			continue;
		if (!tmp) {
			memcpy(name, de->d_name, n - sl);
			name[n - sl] = '\0';
			if (keep(name, userdata))
				continue;
		}
		if (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT) {
			e = -errno;
			break;
		}
	}
	closedir(d);
	return e;
}

/* ---- parallel work ---- */

typedef struct Runner {
	pthread_mutex_t lock;
	size_t next, n;     /* next job to start, number of jobs (lowered by a stop); lock */
	int (*job)(size_t i, void *userdata);
	void *userdata;
} Runner;

static void *runner_main(void *arg)
{
	Runner *rn = arg;
	thread_name("wal-spool");
	for (;;) {
		size_t i;
		pthread_mutex_lock(&rn->lock);
		i = rn->next < rn->n ? rn->next++ : SIZE_MAX;
		pthread_mutex_unlock(&rn->lock);
		if (i == SIZE_MAX)
			return NULL;
		if (rn->job(i, rn->userdata) == WALSPOOL_STOP) {
			pthread_mutex_lock(&rn->lock);
			if (rn->n > i + 1)
				rn->n = i + 1;
			pthread_mutex_unlock(&rn->lock);
		}
	}
}

void walspool_run(size_t n, unsigned n_threads, int (*job)(size_t i, void *userdata),
		  void *userdata)
{
	Runner rn = {.n = n, .job = job, .userdata = userdata};
	pthread_t th[64];
	unsigned started = 0, want = n_threads ? n_threads : 1;

	if (want > ELEMENTSOF(th))
		want = ELEMENTSOF(th);
	if (want > n)
		want = (unsigned)n;
	if (n == 0)
		return;
	pthread_mutex_init(&rn.lock, NULL);
	/* the calling thread works too: one thread fewer to start, and none for one job */
	for (; started + 1 < want; started++)
		if (pthread_create(&th[started], NULL, runner_main, &rn) != 0)
			break;
	runner_main(&rn);
	for (unsigned i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	pthread_mutex_destroy(&rn.lock);
}
