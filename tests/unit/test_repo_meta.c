/*
 * Metadata objects (store/repo_meta.c), plain and encrypted: format 1 below
 * the piece threshold and pieces above it, through both puts (buffer, file)
 * and both gets (buffer, file), whole and read in windows; flipped bits,
 * cuts, an extra byte, swapped, dropped and repeated pieces and a wrong
 * name of a pieced object are -EBADMSG, never other bytes.
 */
#include "test.h"
#include "store/backend.h"
#include "store/repo.h"

#include <errno.h>

#define PIECE 1000 /* the threshold and piece size the small cases use */

static char tmpdir[] = "/tmp/pgbakfs-test-repo-meta.XXXXXX";

static Repo *open_repo(const char *sub, bool encrypt, uint64_t pieces)
{
	char path[PATH_MAX], cache[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", tmpdir, sub);
	snprintf(cache, sizeof(cache), "%s/cache", tmpdir);
	RepoLocation l = {.url = path, .path = path, .cache_dir = cache, .meta_pieces = pieces};
	if (encrypt) {
		l.passphrase = "correct horse";
		l.passphrase_len = strlen(l.passphrase);
	}
	Repo *r = NULL;
	struct stat st;
	if (stat(path, &st) < 0 &&
	    !CHECK_EQ_INT(repo_init_at(&l, &(RepoInitOptions){.encrypt = encrypt}), 0))
		return NULL;
	if (!CHECK_EQ_INT(repo_open_at(&l, &r), 0))
		return NULL;
	return r;
}

/* len bytes: half compressible text, half pseudo-random */
static uint8_t *make_bytes(size_t len, uint32_t seed)
{
	uint8_t *p = malloc(len ? len : 1);
	uint32_t x = seed * 2654435761u + 1;
	for (size_t i = 0; i < len; i++) {
		x = x * 1103515245u + 12345u;
		p[i] = (i / 512) % 2 ? (uint8_t)(x >> 24) : (uint8_t)('a' + i % 26);
	}
	return p;
}

static bool get_equals(Repo *r, const char *name, const uint8_t *want, size_t len)
{
	void *got = NULL;
	size_t n = 0;
	bool ok = CHECK_EQ_INT(repo_meta_get(r, name, &got, &n), 0) && CHECK(n == len) &&
		  CHECK(memcmp(got, want, len) == 0);
	free(got);
	return ok;
}

static bool get_file_equals(Repo *r, const char *name, const uint8_t *want, size_t len)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/got", tmpdir);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	bool ok = CHECK(fd >= 0) && CHECK_EQ_INT(repo_meta_get_file(r, name, fd), 0);
	struct stat st;
	if (ok && CHECK(fstat(fd, &st) == 0) && CHECK((size_t)st.st_size == len) && len) {
		uint8_t *m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
		ok = CHECK(m != MAP_FAILED) && CHECK(memcmp(m, want, len) == 0);
		if (m != MAP_FAILED)
			munmap(m, len);
	}
	if (fd >= 0)
		close(fd);
	unlink(path);
	return ok;
}

static void raw(Repo *r, const char *name, uint8_t **ret, size_t *ret_len)
{
	*ret = NULL;
	*ret_len = 0;
	CHECK_EQ_INT(store_get_all(repo_backend(r), name, SIZE_MAX, (void **)ret, ret_len), 0);
}

static bool is_pieced(Repo *r, const char *name)
{
	uint8_t *obj;
	size_t n;
	raw(r, name, &obj, &n);
	bool pieced = obj && n >= 8 && memcmp(obj, "PGBKOBJ2", 8) == 0;
	free(obj);
	return pieced;
}

/* Both gets of what name holds now, through r: the code and the bytes. */
static int get_both(Repo *r, const char *name, uint8_t **ret, size_t *ret_len)
{
	void *got = NULL;
	size_t len = 0;
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/got", tmpdir);
	int e1 = repo_meta_get(r, name, &got, &len);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	int e2 = repo_meta_get_file(r, name, fd);
	struct stat st;
	if (e1 == 0 && (e2 != 0 || fstat(fd, &st) < 0 || (size_t)st.st_size != len))
		e1 = -EPROTO; /* the two gets disagree */
	if (e1 == 0 && len) {
		uint8_t *g = malloc(len);
		if (pread_full(fd, g, len, 0) != (ssize_t)len || memcmp(g, got, len) != 0)
			e1 = -EPROTO;
		free(g);
	}
	if (e1 != 0 && e2 != e1 && e1 != -EPROTO)
		e1 = -EPROTO;
	close(fd);
	unlink(path);
	*ret = got;
	*ret_len = len;
	return e1;
}

/*
 * Both gets of obj stored as name refuse it with -EBADMSG; with want, they
 * may instead both give exactly want (a bit zstd does not read: an unused
 * header bit, or padding, changes nothing it decodes).
 */
static bool refused_or(Repo *r, const char *name, const uint8_t *obj, size_t n, const uint8_t *want,
		       size_t want_len)
{
	uint8_t *got = NULL;
	size_t len = 0;
	if (store_put(repo_backend(r), name, obj, n) < 0)
		return CHECK(false);
	int e = get_both(r, name, &got, &len);
	bool ok = e == -EBADMSG || (e == 0 && want && len == want_len && memcmp(got, want, len) == 0);
	free(got);
	return ok;
}

static bool refused(Repo *r, const char *name, const uint8_t *obj, size_t n)
{
	return refused_or(r, name, obj, n, NULL, 0);
}

static void test_roundtrip(bool encrypt)
{
	static const size_t sizes[] = {0,         1,         PIECE - 1,       PIECE,
				       PIECE + 1, 2 * PIECE, 3 * PIECE + 500, 70000};
	Repo *r = open_repo(encrypt ? "enc" : "plain", encrypt, PIECE);
	if (!r)
		return;
	for (size_t i = 0; i < ELEMENTSOF(sizes); i++) {
		size_t len = sizes[i];
		uint8_t *p = make_bytes(len, (uint32_t)i);
		char name[64], file[PATH_MAX];
		snprintf(name, sizeof(name), "snapshots/buf-%zu", len);
		CHECK_EQ_INT(repo_meta_put(r, name, p, len), 0);
		CHECK(is_pieced(r, name) == (len > PIECE));
		get_equals(r, name, p, len);
		get_file_equals(r, name, p, len);

		snprintf(name, sizeof(name), "snapshots/file-%zu", len);
		snprintf(file, sizeof(file), "%s/src", tmpdir);
		CHECK_EQ_INT(file_write_atomic(file, p, len, 0600), 0);
		int fd = open(file, O_RDONLY);
		CHECK_EQ_INT(repo_meta_put_file(r, name, fd), 0);
		close(fd);
		CHECK(is_pieced(r, name) == (len > PIECE));
		get_equals(r, name, p, len);
		get_file_equals(r, name, p, len);
		free(p);
	}
	/* a reader without the threshold reads both formats: it is the writer's choice */
	repo_free(r);
	r = open_repo(encrypt ? "enc" : "plain", encrypt, 0);
	uint8_t *p = make_bytes(70000, 7);
	if (r)
		get_equals(r, "snapshots/buf-70000", p, 70000);
	free(p);
	repo_free(r);
}

/*
 * a bit flipped in every fifth byte and every one of the first 64, cuts
 * likewise, one byte more: -EBADMSG (a plain object's flipped bit may also
 * decode to exactly its bytes)
 */
static void test_damage(bool encrypt)
{
	Repo *r = open_repo(encrypt ? "enc" : "plain", encrypt, PIECE);
	const char *name = "snapshots/damage";
	size_t len = 3 * PIECE + 500, n;
	uint8_t *p = make_bytes(len, 99), *obj;
	unsigned flips = 0, flips_refused = 0, cuts = 0, cuts_refused = 0;
	if (!r || !CHECK_EQ_INT(repo_meta_put(r, name, p, len), 0))
		goto out;
	raw(r, name, &obj, &n);
	if (!obj)
		goto out;
	uint8_t *bad = malloc(n + 1);
	/* every byte of the header and of the first record's start, then every fifth */
	for (size_t i = 0; i < n; i += i < 64 ? 1 : 5)
		for (int bit = (int)(i % 8); bit < 8; bit += 8) {
			memcpy(bad, obj, n);
			bad[i] ^= (uint8_t)(1u << bit);
			flips++;
			bool ok = refused_or(r, name, bad, n, encrypt ? NULL : p, len);
			flips_refused += ok;
		}
	for (size_t k = 0; k < n; k += k < 64 ? 1 : 5) {
		cuts++;
		cuts_refused += refused(r, name, obj, k);
	}
	memcpy(bad, obj, n);
	bad[n] = 0;
	CHECK(refused(r, name, bad, n + 1));
	printf("%s: %u of %u flipped bits refused (or harmless) and %u of %u cuts refused\n",
	       encrypt ? "sealed" : "plain", flips_refused, flips, cuts_refused, cuts);
	CHECK(flips_refused == flips);
	CHECK(cuts_refused == cuts);

	/* the same object under another name */
	CHECK_EQ_INT(store_put(repo_backend(r), name, obj, n), 0);
	if (encrypt) {
		CHECK_EQ_INT(store_put(repo_backend(r), "snapshots/other", obj, n), 0);
		void *got = NULL;
		size_t gl;
		CHECK_EQ_INT(repo_meta_get(r, "snapshots/other", &got, &gl), -EBADMSG);
		free(got);
	}
	get_equals(r, name, p, len);
	free(bad);
	free(obj);
out:
	free(p);
	repo_free(r);
}

/* two pieces of the same stored length swapped, one dropped, one repeated */
static void test_pieces_moved(bool encrypt)
{
	Repo *r = open_repo(encrypt ? "enc" : "plain", encrypt, PIECE);
	const char *name = "snapshots/moved";
	size_t len = 4 * PIECE, n;
	uint8_t *p = malloc(len), *obj;
	/* four pieces of the same kind of bytes: the same compressed length */
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)('a' + (i / PIECE) + (i % 7));
	if (!r || !CHECK_EQ_INT(repo_meta_put(r, name, p, len), 0))
		goto out;
	raw(r, name, &obj, &n);
	if (!obj)
		goto out;
	size_t at[5], k = 24; /* the records' offsets */
	for (int i = 0; i < 5 && k + 4 <= n; i++) {
		at[i] = k;
		k += 4 + get_le32(obj + k);
	}
	size_t r0 = at[1] - at[0], r1 = at[2] - at[1];
	if (CHECK(k == n) && CHECK(r0 == r1)) {
		uint8_t *bad = malloc(n + r0);
		memcpy(bad, obj, n); /* swapped */
		memcpy(bad + at[0], obj + at[1], r0);
		memcpy(bad + at[1], obj + at[0], r0);
		CHECK(refused(r, name, bad, n));
		memcpy(bad, obj, at[1]); /* the second dropped */
		memcpy(bad + at[1], obj + at[2], n - at[2]);
		CHECK(refused(r, name, bad, n - r0));
		memcpy(bad, obj, at[1]); /* the first repeated */
		memcpy(bad + at[1], obj + at[0], r0);
		memcpy(bad + at[1] + r0, obj + at[1], n - at[1]);
		CHECK(refused(r, name, bad, n + r0));
		free(bad);
	}
	free(obj);
out:
	free(p);
	repo_free(r);
}

/*
 * An object larger than one request's worth (4 pieces: the switch shrinks
 * that too) is read in windows of 2 pieces; damage found there as well.
 */
static void test_windows(bool encrypt)
{
	Repo *r = open_repo(encrypt ? "enc" : "plain", encrypt, PIECE);
	const char *name = "catalog/00000000000000000001";
	size_t len = 20 * PIECE + 123, n;
	uint8_t *p = malloc(len), *obj;
	uint32_t x = 1;
	for (size_t i = 0; i < len; i++) { /* incompressible: the object is as large */
		x = x * 1103515245u + 12345u;
		p[i] = (uint8_t)(x >> 24);
	}
	if (!r || !CHECK_EQ_INT(repo_meta_put(r, name, p, len), 0))
		goto out;
	CHECK(is_pieced(r, name));
	get_equals(r, name, p, len);
	get_file_equals(r, name, p, len);
	raw(r, name, &obj, &n);
	if (obj && CHECK(n > 4 * PIECE)) {
		for (size_t at = 0; at < n; at += 997) { /* a byte every so often, windows apart */
			obj[at] ^= 0x10;
			CHECK(refused(r, name, obj, n));
			obj[at] ^= 0x10;
		}
		CHECK(refused(r, name, obj, n - 1));
		CHECK(refused(r, name, obj, n / 2));
		CHECK_EQ_INT(store_put(repo_backend(r), name, obj, n), 0); /* put back whole */
		get_equals(r, name, p, len);
	}
	free(obj);
out:
	free(p);
	repo_free(r);
}

/* obj as name through both handles (a directory's backend keeps descriptors of what it read) */
static void put_both(Repo *a, Repo *b, const char *name, const uint8_t *obj, size_t n)
{
	CHECK_EQ_INT(store_put(repo_backend(a), name, obj, n), 0);
	CHECK_EQ_INT(store_put(repo_backend(b), name, obj, n), 0);
}

/*
 * A format-1 object too large for one request (which a reader with the
 * switch meets past 4 pieces) is fetched in windows: the same bytes, the
 * same refusals as when it is fetched whole, flipped bits refused when sealed
 * (but in the header's reserved bytes, which format 1 never read).
 */
static void test_whole_streamed(bool encrypt)
{
	const char *sub = encrypt ? "enc" : "plain", *name = "catalog/00000000000000000009";
	Repo *w = open_repo(sub, encrypt, 0), *rd = open_repo(sub, encrypt, PIECE);
	size_t len = 300000, n;
	uint8_t *p = make_bytes(len, 5), *obj = NULL, *got;
	if (!w || !rd || !CHECK_EQ_INT(repo_meta_put(w, name, p, len), 0))
		goto out;
	CHECK(!is_pieced(w, name));
	raw(w, name, &obj, &n);
	if (!obj || !CHECK(n > 4 * PIECE))
		goto out;
	get_equals(rd, name, p, len);
	get_file_equals(rd, name, p, len);
	unsigned same = 0, tries = 0;
	for (size_t at = 0; at < n; at += at < 64 ? 7 : 2003) { /* in windows and whole agree on damage */
		uint8_t *bad = malloc(n);
		memcpy(bad, obj, n);
		bad[at] ^= (uint8_t)(1u << (at % 8));
		put_both(w, rd, name, bad, n);
		uint8_t *g1 = NULL, *g2 = NULL;
		size_t l1 = 0, l2 = 0;
		int e1 = get_both(w, name, &g1, &l1), e2 = get_both(rd, name, &g2, &l2);
		tries++;
		/* sealed: refused, or (format 1's reserved header bytes) exactly the bytes put */
		same += e1 == e2 && e1 != -EPROTO && (e1 != 0 || (l1 == l2 && memcmp(g1, g2, l1) == 0)) &&
			(!encrypt || e2 == -EBADMSG || (l2 == len && memcmp(g2, p, len) == 0));
		free(g1);
		free(g2);
		free(bad);
	}
	printf("%s format 1 in windows: %u of %u damaged objects read as when fetched whole\n", sub, same,
	       tries);
	CHECK(same == tries);
	if (encrypt) { /* the tag, checked at the end of the stream */
		size_t gl;
		obj[n - 1] ^= 1;
		put_both(w, rd, name, obj, n);
		CHECK_EQ_INT(get_both(rd, name, &got, &gl), -EBADMSG);
		free(got);
		obj[n - 1] ^= 1;
	}
	for (size_t k = 0; k < n; k += 1999) { /* cuts */
		size_t gl;
		put_both(w, rd, name, obj, k);
		CHECK_EQ_INT(get_both(rd, name, &got, &gl), -EBADMSG);
		free(got);
	}
out:
	free(obj);
	free(p);
	repo_free(w);
	repo_free(rd);
}

int main(void)
{
	if (!mkdtemp(tmpdir))
		return 1;
	test_roundtrip(false);
	test_roundtrip(true);
	test_damage(false);
	test_damage(true);
	test_pieces_moved(false);
	test_pieces_moved(true);
	test_windows(false);
	test_windows(true);
	test_whole_streamed(false);
	test_whole_streamed(true);
	rm_rf(tmpdir);
	return test_finish();
}
