/*
 * Unit tests for store/wal.h: WAL file names, the object format (compressed
 * and raw), idempotent push and conflicts, damage detection in every part
 * of an object, repair by a second push, listing, timelines and gaps,
 * delete, and a failing backend.
 */
#include "tests/unit/test.h"

#include "store/catalog.h"
#include "store/wal.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>

#define MIB (1024 * 1024)

static char repo_dir[PATH_MAX];

/* repo_open with a fault driver around the backend, as PGBAKFS_TEST_FAULTS does for the CLI */
static int repo_open_faults(const char *path, const char *faults, Repo **ret)
{
	RepoLocation l = {.url = path, .path = path, .faults = faults};
	return repo_open_at(&l, ret);
}

static void fill_wal_like(uint8_t *buf, size_t len, uint32_t seed)
{
	/* compressible: records of a counter and some text, like WAL */
	for (size_t i = 0; i < len; i++)
		buf[i] = i % 64 < 8 ? (uint8_t)((seed + i / 64) >> (8 * (i % 4)))
				    : (uint8_t)"wal record "[i % 11];
}

static char *object_path(const char *name, char *buf, size_t len)
{
	return test_fmt(buf, len, "%s/wal/%.8s/%s", repo_dir, name, name);
}

static ino_t object_ino(const char *name)
{
	char p[PATH_MAX];
	struct stat st;
	return stat(object_path(name, p, sizeof(p)), &st) == 0 ? st.st_ino : 0;
}

static int flip_byte(const char *name, off_t off)
{
	char p[PATH_MAX];
	uint8_t c;
	_cleanup_close_ int fd = open(object_path(name, p, sizeof(p)), O_RDWR);
	if (fd < 0 || pread(fd, &c, 1, off) != 1)
		return -1;
	c ^= 0x20;
	return pwrite(fd, &c, 1, off) == 1 ? 0 : -1;
}

static bool fetch_equals(Repo *r, const char *name, const void *want, size_t want_len)
{
	_cleanup_free_ void *buf = NULL;
	size_t len = 0;
	if (wal_fetch(r, name, &buf, &len) != 0)
		return false;
	return len == want_len && memcmp(buf, want, len) == 0;
}

static void test_names(void)
{
	WalName n;
	CHECK_EQ_INT(wal_name_parse("000000010000000A000000FF", &n), 0);
	CHECK_EQ_INT(n.kind, WAL_KIND_SEGMENT);
	CHECK_EQ_INT(n.timeline, 1);
	CHECK_EQ_INT(n.log, 0xA);
	CHECK_EQ_INT(n.seg, 0xFF);
	CHECK_EQ_INT(wal_name_segno(&n, 16 * MIB), 0xA * 256 + 0xFF);
	CHECK_EQ_INT(wal_name_parse("0000000200000000000000FF.partial", &n), 0);
	CHECK_EQ_INT(n.kind, WAL_KIND_PARTIAL);
	CHECK_EQ_INT(n.timeline, 2);
	CHECK_EQ_INT(wal_name_parse("0000000A.history", &n), 0);
	CHECK_EQ_INT(n.kind, WAL_KIND_HISTORY);
	CHECK_EQ_INT(n.timeline, 10);
	CHECK_EQ_INT(wal_name_parse("000000010000000000000002.00000028.backup", &n), 0);
	CHECK_EQ_INT(n.kind, WAL_KIND_BACKUP);
	CHECK_EQ_INT(n.seg, 2);
	const char *bad[] = {"", "RECOVERYXLOG", "000000010000000a000000ff", "00000001000000000000000",
			     "0000000100000000000000001", "00000000000000000000000001",
			     "000000000000000000000001", "0000000G0000000000000001",
			     "00000001.histor", "00000001.historyx", "0000000100000000000000FF.part",
			     "000000010000000000000002.0000002.backup", "000000010000000000000002.0000002Z.backup",
			     "000000010000000000000002_00000028.backup", "../00000001.history",
			     "000000010000000000000002.00000028.backupx"};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++)
		if (!CHECK_EQ_INT(wal_name_parse(bad[i], &n), -EINVAL))
			fprintf(stderr, "  accepted \"%s\"\n", bad[i]);

	char name[25];
	wal_segno_to_name(3, 0xA * 256 + 0xFF, 16 * MIB, name);
	CHECK_EQ_STR(name, "000000030000000A000000FF");
	wal_segno_to_name(1, 5000, 1 * MIB, name);
	CHECK_EQ_INT(wal_name_parse(name, &n), 0);
	CHECK_EQ_INT(wal_name_segno(&n, 1 * MIB), 5000);
	CHECK(wal_seg_size_valid(16 * MIB) && wal_seg_size_valid(MIB) && wal_seg_size_valid(1024 * MIB));
	CHECK(!wal_seg_size_valid(3 * MIB) && !wal_seg_size_valid(512 * 1024) && !wal_seg_size_valid(2048ULL * MIB));

	/* LSNs: tests/unit/test_lsn.c */
}

static void test_push_fetch(Repo *r)
{
	const char *seg = "000000010000000000000001";
	_cleanup_free_ uint8_t *a = malloc(MIB), *b = malloc(MIB), *rnd = malloc(MIB);
	WalPushResult res = -1;
	WalObjectInfo oi;
	char p[PATH_MAX];
	struct stat st;

	fill_wal_like(a, MIB, 1);
	fill_wal_like(b, MIB, 2);
	test_random(rnd, MIB);

	/* compressible: stored as zstd, much smaller, fetched byte for byte */
	CHECK_EQ_INT(wal_push(r, seg, a, MIB, &res), 0);
	CHECK_EQ_INT(res, WAL_PUSH_STORED);
	CHECK(fetch_equals(r, seg, a, MIB));
	CHECK_EQ_INT(wal_stat(r, seg, &oi), 0);
	CHECK_EQ_INT(oi.plain_size, MIB);
	CHECK_EQ_INT(oi.encoding, 1);
	CHECK(oi.stored_size < MIB / 4);
	CHECK(stat(object_path(seg, p, sizeof(p)), &st) == 0 && (st.st_mode & 07777) == 0600);

	/* the same content again: success, nothing written (same inode) */
	ino_t ino = object_ino(seg);
	CHECK_EQ_INT(wal_push(r, seg, a, MIB, &res), 0);
	CHECK_EQ_INT(res, WAL_PUSH_EXISTED);
	CHECK_EQ_INT(object_ino(seg), ino);

	/* other content, or other length: a conflict, the archived copy untouched */
	CHECK_EQ_INT(wal_push(r, seg, b, MIB, NULL), -ENOTUNIQ);
	CHECK_EQ_INT(wal_push(r, seg, a, MIB - 1, NULL), -ENOTUNIQ);
	CHECK_EQ_INT(object_ino(seg), ino);
	CHECK(fetch_equals(r, seg, a, MIB));

	/* incompressible: raw, header + plain bytes */
	const char *seg2 = "000000010000000000000002";
	CHECK_EQ_INT(wal_push(r, seg2, rnd, MIB, NULL), 0);
	CHECK_EQ_INT(wal_stat(r, seg2, &oi), 0);
	CHECK_EQ_INT(oi.encoding, 0);
	CHECK_EQ_INT(oi.stored_size, MIB + 128);
	CHECK(fetch_equals(r, seg2, rnd, MIB));

	/* small and empty files of the other kinds */
	const char *hist = "00000002.history", *hist_text = "1\t0/3000090\tno recovery target specified\n";
	CHECK_EQ_INT(wal_push(r, hist, hist_text, strlen(hist_text), NULL), 0);
	CHECK(fetch_equals(r, hist, hist_text, strlen(hist_text)));
	const char *bk = "000000010000000000000002.00000028.backup";
	CHECK_EQ_INT(wal_push(r, bk, "", 0, &res), 0);
	CHECK_EQ_INT(res, WAL_PUSH_STORED);
	CHECK(fetch_equals(r, bk, "", 0));
	CHECK_EQ_INT(wal_push(r, bk, "", 0, &res), 0);
	CHECK_EQ_INT(res, WAL_PUSH_EXISTED);

	/* missing, bad names, too big */
	void *buf = NULL;
	size_t len;
	CHECK_EQ_INT(wal_fetch(r, "000000010000000000000009", &buf, &len), -ENOENT);
	CHECK_EQ_INT(wal_fetch(r, "00000009.history", &buf, &len), -ENOENT);
	CHECK_EQ_INT(wal_fetch(r, "RECOVERYXLOG", &buf, &len), -EINVAL);
	CHECK_EQ_INT(wal_push(r, "../../config", a, 10, NULL), -EINVAL);
	CHECK_EQ_INT(wal_push(r, seg, a, PGBAKFS_WAL_FILE_MAX + 1, NULL), -EFBIG);
	CHECK(buf == NULL);
}

/* Every kind of damage is -EBADMSG; a push of the right content repairs it. */
static void test_damage(Repo *r)
{
	const char *seg = "000000010000000000000003";
	_cleanup_free_ uint8_t *a = malloc(MIB);
	WalObjectInfo oi;
	WalPushResult res;
	char p[PATH_MAX], q[PATH_MAX];
	/* magic, version, encoding, plain length, payload length, hash, name, padding, tail, payload */
	const off_t offsets[] = {0, 8, 9, 12, 17, 25, 40, 70, 100, 120, 128, 1000};
	void *buf = NULL;
	size_t len;

	fill_wal_like(a, MIB, 3);
	CHECK_EQ_INT(wal_push(r, seg, a, MIB, NULL), 0);
	CHECK_EQ_INT(wal_stat(r, seg, &oi), 0);
	for (size_t i = 0; i < ELEMENTSOF(offsets); i++) {
		/* a higher version number reads as a newer format, not as damage */
		int want = offsets[i] >= 8 && offsets[i] < 12 ? -EPROTONOSUPPORT : -EBADMSG;
		CHECK_EQ_INT(flip_byte(seg, offsets[i]), 0);
		if (!CHECK_EQ_INT(wal_fetch(r, seg, &buf, &len), want))
			fprintf(stderr, "  damage at offset %lld not detected\n", (long long)offsets[i]);
		CHECK_EQ_INT(flip_byte(seg, offsets[i]), 0);
		CHECK(fetch_equals(r, seg, a, MIB));
	}
	/* last byte of the payload */
	CHECK_EQ_INT(flip_byte(seg, (off_t)oi.stored_size - 1), 0);
	CHECK_EQ_INT(wal_fetch(r, seg, &buf, &len), -EBADMSG);
	/* a push of the same content replaces the damaged copy */
	CHECK_EQ_INT(wal_push(r, seg, a, MIB, &res), 0);
	CHECK_EQ_INT(res, WAL_PUSH_REPAIRED);
	CHECK(fetch_equals(r, seg, a, MIB));

	/* truncated object, and one shorter than a header */
	CHECK_EQ_INT(truncate(object_path(seg, p, sizeof(p)), (off_t)oi.stored_size - 1), 0);
	CHECK_EQ_INT(wal_fetch(r, seg, &buf, &len), -EBADMSG);
	CHECK_EQ_INT(truncate(p, 64), 0);
	CHECK_EQ_INT(wal_fetch(r, seg, &buf, &len), -EBADMSG);
	CHECK_EQ_INT(wal_stat(r, seg, &oi), -EBADMSG);
	CHECK_EQ_INT(wal_push(r, seg, a, MIB, &res), 0);
	CHECK_EQ_INT(res, WAL_PUSH_REPAIRED);
	CHECK(fetch_equals(r, seg, a, MIB));

	/* an intact object under another name is not that file */
	const char *other = "000000010000000000000004";
	object_path(other, q, sizeof(q));
	char cmd[2 * PATH_MAX + 16];
	test_fmt(cmd, sizeof(cmd), "cp '%s' '%s'", object_path(seg, p, sizeof(p)), q);
	CHECK_EQ_INT(system(cmd), 0);
	CHECK_EQ_INT(wal_fetch(r, other, &buf, &len), -EBADMSG);
	CHECK_EQ_INT(unlink(q), 0);
	CHECK(buf == NULL);
}

typedef struct Listed {
	char names[32][PGBAKFS_WAL_NAME_MAX + 1];
	WalKind kinds[32];
	size_t n;
} Listed;

static int list_cb(const WalFileInfo *f, void *userdata)
{
	Listed *l = userdata;
	if (l->n < ELEMENTSOF(l->names)) {
		test_fmt(l->names[l->n], sizeof(l->names[0]), "%s", f->name);
		l->kinds[l->n] = f->parsed.kind;
	}
	l->n++;
	return f->stored_size > 0 ? 0 : -EIO;
}

static int stop_cb(const WalFileInfo *f _unused_, void *userdata _unused_) { return 42; }

static void test_list_timelines(Repo *r)
{
	uint8_t seg[MIB];
	Listed l = {0};
	WalTimeline *v = NULL;
	size_t n = 0;
	uint64_t last;
	char p[PATH_MAX];

	/* after test_push_fetch/test_damage: timeline 1 has segments 1..3, history 2 */
	fill_wal_like(seg, MIB, 7);
	CHECK_EQ_INT(wal_push(r, "000000010000000000000006", seg, MIB, NULL), 0);
	CHECK_EQ_INT(wal_push(r, "000000010000000000000009", seg, MIB, NULL), 0);
	CHECK_EQ_INT(wal_push(r, "00000001000000000000000A.partial", seg, 1000, NULL), 0);
	CHECK_EQ_INT(wal_push(r, "000000020000000000000009", seg, MIB, NULL), 0);
	/* strays: not WAL names, or under the wrong timeline's directory */
	CHECK_EQ_INT(mkdir_p(test_fmt(p, sizeof(p), "%s/wal/00000003", repo_dir), 0700), 0);
	CHECK_EQ_INT(file_write_atomic(test_fmt(p, sizeof(p), "%s/wal/00000003/junk", repo_dir), "x", 1, 0600), 0);
	CHECK_EQ_INT(file_write_atomic(test_fmt(p, sizeof(p), "%s/wal/00000003/000000040000000000000001", repo_dir), "x", 1, 0600), 0);

	CHECK_EQ_INT(wal_list(r, list_cb, &l), 0);
	const char *want[] = {"000000010000000000000001", "000000010000000000000002",
			      "000000010000000000000002.00000028.backup", "000000010000000000000003",
			      "000000010000000000000006", "000000010000000000000009",
			      "00000001000000000000000A.partial", "00000002.history",
			      "000000020000000000000009"};
	if (CHECK_EQ_INT(l.n, ELEMENTSOF(want)))
		for (size_t i = 0; i < ELEMENTSOF(want); i++)
			CHECK_EQ_STR(l.names[i], want[i]);
	CHECK_EQ_INT(l.kinds[2], WAL_KIND_BACKUP);
	CHECK_EQ_INT(l.kinds[6], WAL_KIND_PARTIAL);
	CHECK_EQ_INT(l.kinds[7], WAL_KIND_HISTORY);
	CHECK_EQ_INT(wal_list(r, stop_cb, NULL), 42);

	CHECK_EQ_INT(wal_timelines(r, &v, &n), 0);
	if (CHECK_EQ_INT(n, 2)) {
		CHECK_EQ_INT(v[0].timeline, 1);
		CHECK_EQ_INT(v[0].seg_size, MIB); /* from the first segment's length */
		CHECK_EQ_INT(v[0].n_files, 7);
		CHECK_EQ_INT(v[0].n_segments, 5);
		CHECK_EQ_INT(v[0].first, 1);
		CHECK_EQ_INT(v[0].last, 9);
		if (CHECK_EQ_INT(v[0].n_gaps, 2)) {
			CHECK(v[0].gaps[0].from == 4 && v[0].gaps[0].to == 5);
			CHECK(v[0].gaps[1].from == 7 && v[0].gaps[1].to == 8);
		}
		CHECK(wal_timeline_run(&v[0], 1, &last) == 0 && last == 3);
		CHECK(wal_timeline_run(&v[0], 3, &last) == 0 && last == 3);
		CHECK(wal_timeline_run(&v[0], 6, &last) == 0 && last == 6);
		CHECK(wal_timeline_run(&v[0], 9, &last) == 0 && last == 9);
		CHECK_EQ_INT(wal_timeline_run(&v[0], 0, &last), -ENOENT);
		CHECK_EQ_INT(wal_timeline_run(&v[0], 4, &last), -ENOENT);
		CHECK_EQ_INT(wal_timeline_run(&v[0], 10, &last), -ENOENT);
		CHECK_EQ_INT(v[1].timeline, 2);
		CHECK_EQ_INT(v[1].n_files, 2);
		CHECK_EQ_INT(v[1].n_segments, 1);
		CHECK_EQ_INT(v[1].n_gaps, 0);
	}
	v = wal_timelines_free(v, n);

	/* delete: serialized with push, missing is fine; a gap appears */
	CHECK_EQ_INT(wal_delete(r, "000000010000000000000002"), 0);
	CHECK_EQ_INT(wal_delete(r, "000000010000000000000002"), 0);
	CHECK_EQ_INT(wal_delete(r, "junk"), -EINVAL);
	void *buf = NULL;
	size_t len;
	CHECK_EQ_INT(wal_fetch(r, "000000010000000000000002", &buf, &len), -ENOENT);
	CHECK_EQ_INT(wal_timelines(r, &v, &n), 0);
	if (CHECK(n == 2) && CHECK_EQ_INT(v[0].n_gaps, 3))
		CHECK(v[0].gaps[0].from == 2 && v[0].gaps[0].to == 2);
	wal_timelines_free(v, n);
}

/* A first page as PostgreSQL writes it: long header, little-endian or big-endian. */
static void put_header(uint8_t *p, bool be, uint16_t magic, uint16_t info, uint32_t tli,
		       uint64_t pageaddr, uint64_t sysid, uint32_t seg_size, uint32_t blcksz)
{
	const struct {
		size_t off, n;
		uint64_t v;
	} f[] = {{0, 2, magic}, {2, 2, info},   {4, 4, tli},       {8, 8, pageaddr},
		 {16, 4, 0},    {24, 8, sysid}, {32, 4, seg_size}, {36, 4, blcksz}};
	memset(p, 0, 40);
	for (size_t i = 0; i < ELEMENTSOF(f); i++)
		for (size_t b = 0; b < f[i].n; b++)
			p[f[i].off + (be ? f[i].n - 1 - b : b)] = (uint8_t)(f[i].v >> (8 * b));
}

/* wal_file_check's verdict on buf under name: 0, or -EBADMSG with why containing want. */
static bool verdict(const char *name, const void *buf, size_t len, const char *want)
{
	char why[256] = "";
	int e = wal_file_check(name, buf, len, NULL, why, sizeof(why));
	if (!want)
		return e == 0 || (fprintf(stderr, "%s refused: %s\n", name, why), false);
	if (e != -EBADMSG || !strstr(why, want)) {
		fprintf(stderr, "%s: got %d \"%s\", want \"%s\"\n", name, e, why, want);
		return false;
	}
	return true;
}

static void test_file_check(void)
{
	const char *seg3 = "000000020000000100000003"; /* timeline 2, log 1, seg 3 */
	uint64_t start16 = (0x100ULL + 3) * 16 * MIB, start1 = (0x1000ULL + 3) * MIB;
	_cleanup_free_ uint8_t *b = calloc(1, 16 * MIB);
	WalSegmentHeader h;
	char why[256];

	if (!CHECK(b))
		return;
	/* a good 16 MiB segment of each known version; the header is reported */
	static const uint16_t magics[] = {0xD106, 0xD10D, 0xD110, 0xD113, 0xD116, 0xD118};
	for (size_t i = 0; i < ELEMENTSOF(magics); i++) {
		put_header(b, false, magics[i], 0x0002, 2, start16, 7123, 16 * MIB, 8192);
		CHECK(verdict(seg3, b, 16 * MIB, NULL));
	}
	put_header(b, false, 0xD110, 0x0003, 2, start16, 7123, 16 * MIB, 8192);
	if (CHECK_EQ_INT(wal_file_check(seg3, b, 16 * MIB, &h, why, sizeof(why)), 0))
		CHECK(h.magic == 0xD110 && h.pg_version == 15 && !h.big_endian && h.timeline == 2 &&
		      h.pageaddr == start16 && h.system_id == 7123 && h.seg_size == 16 * MIB &&
		      h.block_size == 8192);
	/* big-endian server; 1 MiB segments; the parent's timeline on the first page; .partial */
	put_header(b, true, 0xD113, 0x0002, 2, start16, 7123, 16 * MIB, 8192);
	CHECK(wal_file_check(seg3, b, 16 * MIB, &h, why, sizeof(why)) == 0 && h.big_endian &&
	      h.pg_version == 16 && h.system_id == 7123);
	put_header(b, false, 0xD110, 0x0002, 2, start1, 7123, MIB, 8192);
	CHECK(verdict(seg3, b, MIB, NULL));
	put_header(b, false, 0xD110, 0x0002, 1, start16, 7123, 16 * MIB, 8192);
	CHECK(verdict(seg3, b, 16 * MIB, NULL));
	CHECK(verdict("000000020000000100000003.partial", b, 16 * MIB, NULL));

	/* sizes: empty, short, not a power of two, too small, a .partial cut short */
	CHECK(verdict(seg3, b, 0, "the file is empty"));
	CHECK(verdict(seg3, b, 20, "is not a WAL segment size"));
	CHECK(verdict(seg3, b, 16 * MIB - 8192, "is not a WAL segment size"));
	CHECK(verdict(seg3, b, 512 * 1024, "is not a WAL segment size"));
	CHECK(verdict("000000020000000100000003.partial", b, 3000000, "is not a WAL segment size"));
	/* magic: unknown, PostgreSQL 12's, random bytes */
	put_header(b, false, 0xD120, 0x0002, 2, start16, 7123, 16 * MIB, 8192);
	CHECK(verdict(seg3, b, 16 * MIB, "xlp_magic 0xD120"));
	put_header(b, false, 0xD101, 0x0002, 2, start16, 7123, 16 * MIB, 8192);
	CHECK(verdict(seg3, b, 16 * MIB, "no WAL page magic"));
	test_random(b, 64);
	b[0] = 0x00;
	CHECK(verdict(seg3, b, 16 * MIB, "no WAL page magic"));
	/* a short header, unknown flags */
	put_header(b, false, 0xD110, 0x0000, 2, start16, 7123, 16 * MIB, 8192);
	CHECK(verdict(seg3, b, 16 * MIB, "no long page header"));
	put_header(b, false, 0xD110, 0x0012, 2, start16, 7123, 16 * MIB, 8192);
	CHECK(verdict(seg3, b, 16 * MIB, "no long page header"));
	/* xlp_seg_size against the file, block size */
	put_header(b, false, 0xD110, 0x0002, 2, start16, 7123, 64 * MIB, 8192);
	CHECK(verdict(seg3, b, 16 * MIB, "xlp_seg_size is 67108864"));
	put_header(b, false, 0xD110, 0x0002, 2, start16, 7123, 16 * MIB, 3000);
	CHECK(verdict(seg3, b, 16 * MIB, "xlp_xlog_blcksz 3000"));
	/* timeline: a later one, zero */
	put_header(b, false, 0xD110, 0x0002, 3, start16, 7123, 16 * MIB, 8192);
	CHECK(verdict(seg3, b, 16 * MIB, "xlp_tli is 3, the name says timeline 2"));
	put_header(b, false, 0xD110, 0x0002, 0, start16, 7123, 16 * MIB, 8192);
	CHECK(verdict(seg3, b, 16 * MIB, "xlp_tli is 0"));
	/* another segment's contents (the neighbour, another log, another size) */
	put_header(b, false, 0xD110, 0x0002, 2, start16 + 16 * MIB, 7123, 16 * MIB, 8192);
	CHECK(verdict(seg3, b, 16 * MIB, "xlp_pageaddr is 1/4000000, the name says the segment "
					 "starts at 1/3000000"));
	put_header(b, false, 0xD110, 0x0002, 2, 3 * 16 * MIB, 7123, 16 * MIB, 8192);
	CHECK(verdict(seg3, b, 16 * MIB, "xlp_pageaddr is 0/3000000"));
	put_header(b, false, 0xD110, 0x0002, 2, start16, 7123, MIB, 8192);
	CHECK(verdict(seg3, b, MIB, "xlp_pageaddr"));
	/* a segment number that does not exist with this size (0x100 segments of 16 MiB per log) */
	put_header(b, false, 0xD110, 0x0002, 2, 0, 7123, 16 * MIB, 8192);
	CHECK(verdict("000000020000000000000100", b, 16 * MIB, "does not exist with"));

	/* backup history files */
	const char *bk = "000000010000000A000000FF.00000028.backup";
	const char *bk_ok = "START WAL LOCATION: A/FF000028 (file 000000010000000A000000FF)\n"
			    "STOP WAL LOCATION: A/FF000100 (file 000000010000000A000000FF)\n";
	CHECK(verdict(bk, bk_ok, strlen(bk_ok), NULL));
	const char *bk18 = "START WAL LOCATION: A/FF000028 (file 000000010000000A000000FF)\n";
	CHECK(verdict(bk, bk18, strlen(bk18), NULL));
	const char *bk_other = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n";
	CHECK(verdict(bk, bk_other, strlen(bk_other), "backup history of segment 000000010000000000000002"));
	CHECK(verdict(bk, "root:x:0:0:root:/root:/bin/bash\n", 32, "does not start with"));
	CHECK(verdict(bk, "", 0, "does not start with"));
	CHECK(verdict(bk, "START WAL LOCATION: junk\n", 25, "its first line is not"));
	/* timeline history files */
	const char *hist = "1\t0/5000090\tno recovery target specified\n\n"
			   "# comment\n3\tA/FF000000\tat restore point \"x\"\n";
	CHECK(verdict("00000004.history", hist, strlen(hist), NULL));
	CHECK(verdict("00000003.history", hist, strlen(hist), "names timeline 3"));
	const char *unordered = "2\t0/5000090\tx\n1\t0/6000000\ty\n";
	CHECK(verdict("00000004.history", unordered, strlen(unordered), "ascending"));
	CHECK(verdict("00000002.history", "", 0, "the file is empty"));
	CHECK(verdict("00000002.history", "root:x:0:0:root:/root:/bin/bash\n", 32, "line 1 is not"));
	CHECK(verdict("00000002.history", "1\t0/5\0x\n", 8, "NUL bytes"));
	CHECK_EQ_INT(wal_file_check("RECOVERYXLOG", b, 16 * MIB, NULL, why, sizeof(why)), -EINVAL);
}

/* The segment's system identifier against the snapshots' (none recorded: anything goes). */
static void test_system_id(Repo *r)
{
	char why[256] = "";
	SnapshotInfo s = {.instance = (char *)"main", .type = (char *)"full",
			  .status = (char *)SNAP_STATUS_RUNNING, .source = (char *)"test",
			  .start_time = 1000};
	Catalog *c = repo_catalog(r);

	CHECK_EQ_INT(wal_system_id_check(r, 42, why, sizeof(why)), 0);
	s.system_id = (char *)"7300000000000000001";
	if (!CHECK_EQ_INT(catalog_snapshot_begin(c, &s), 0))
		return;
	s.status = (char *)SNAP_STATUS_OK;
	s.stop_time = 2000;
	CHECK_EQ_INT(catalog_snapshot_finish(c, &s), 0);
	CHECK_EQ_INT(wal_system_id_check(r, 7300000000000000001ULL, why, sizeof(why)), 0);
	CHECK_EQ_INT(wal_system_id_check(r, 42, why, sizeof(why)), -EBADMSG);
	CHECK(strstr(why, "system identifier 42") && strstr(why, "7300000000000000001"));
}

static void test_empty_and_faults(void)
{
	char dir[PATH_MAX];
	Repo *r = NULL;
	WalTimeline *v = (WalTimeline *)1;
	size_t n = 1;
	uint8_t seg[4096];
	void *buf = NULL;
	size_t len;

	test_tmpdir(dir, sizeof(dir));
	test_fmt(dir + strlen(dir), sizeof(dir) - strlen(dir), "/repo");
	CHECK_EQ_INT(repo_init(dir, NULL), 0);
	if (CHECK_EQ_INT(repo_open_faults(dir, "put:1=ENOSPC,get:*=EIO", &r), 0)) {
		CHECK_EQ_INT(wal_timelines(r, &v, &n), 0);
		CHECK(v == NULL && n == 0);
		memset(seg, 1, sizeof(seg));
		CHECK_EQ_INT(wal_push(r, "00000003.history", seg, sizeof(seg), NULL), -ENOSPC);
		CHECK_EQ_INT(test_count_names(dir, "00000003"), 0);
		CHECK_EQ_INT(wal_push(r, "00000003.history", seg, sizeof(seg), NULL), 0);
		CHECK_EQ_INT(wal_fetch(r, "00000003.history", &buf, &len), -EIO);
		/* a failing read of the existing copy is not taken for damage */
		CHECK_EQ_INT(wal_push(r, "00000003.history", seg, sizeof(seg), NULL), -EIO);
	}
	repo_free(r);
	char parent[PATH_MAX];
	path_dirname(dir, parent, sizeof(parent));
	TEST_RM_RF(parent);
}

/* Summaries: their own objects, never taken for the segment; deleted with it. */
static void test_summaries(Repo *r)
{
	const char *seg = "000000010000000000000007", *sum = "summary bytes";
	_cleanup_free_ uint8_t *a = malloc(MIB);
	void *buf = NULL, *wbuf = NULL;
	size_t len = 0;
	char p[PATH_MAX];

	fill_wal_like(a, MIB, 7);
	CHECK_EQ_INT(wal_summary_get(r, seg, &buf, &len), -ENOENT);
	CHECK_EQ_INT(wal_push(r, seg, a, MIB, NULL), 0);
	CHECK_EQ_INT(wal_summary_put(r, seg, sum, strlen(sum)), 0);
	CHECK_EQ_INT(wal_summary_get(r, seg, &buf, &len), 0);
	CHECK(len == strlen(sum) && buf && !memcmp(buf, sum, len));
	free(buf);
	buf = NULL;
	/* overwritten, as derived data is */
	CHECK_EQ_INT(wal_summary_put(r, seg, "v2", 2), 0);
	CHECK_EQ_INT(wal_summary_get(r, seg, &buf, &len), 0);
	CHECK(len == 2 && !memcmp(buf, "v2", 2));
	free(buf);
	buf = NULL;
	/* only full segments have summaries */
	CHECK_EQ_INT(wal_summary_put(r, "00000002.history", "x", 1), -EINVAL);
	CHECK_EQ_INT(wal_summary_put(r, "000000010000000000000007.partial", "x", 1), -EINVAL);
	CHECK_EQ_INT(wal_summary_get(r, "../x", &buf, &len), -EINVAL);
	/* a summary object copied over the segment's is refused as the segment, and back */
	test_fmt(p, sizeof(p), "cp %s/walsum/00000001/%s %s/wal/00000001/%s", repo_dir, seg,
		 repo_dir, seg);
	CHECK_EQ_INT(system(p), 0);
	CHECK_EQ_INT(wal_fetch(r, seg, &wbuf, &len), -EBADMSG);
	CHECK(wbuf == NULL);
	CHECK_EQ_INT(wal_push(r, seg, a, MIB, NULL), 0); /* repaired */
	test_fmt(p, sizeof(p), "cp %s/wal/00000001/%s %s/walsum/00000001/%s", repo_dir, seg,
		 repo_dir, seg);
	CHECK_EQ_INT(system(p), 0);
	CHECK_EQ_INT(wal_summary_get(r, seg, &buf, &len), -EBADMSG);
	CHECK(buf == NULL);
	/* retention's delete takes the summary along */
	CHECK_EQ_INT(wal_summary_put(r, seg, sum, strlen(sum)), 0);
	CHECK_EQ_INT(wal_delete(r, seg), 0);
	CHECK_EQ_INT(wal_summary_get(r, seg, &buf, &len), -ENOENT);
	test_fmt(p, sizeof(p), "%s/walsum/00000001/%s", repo_dir, seg);
	CHECK(access(p, F_OK) < 0);
}

int main(void)
{
	char tmp[PATH_MAX];
	Repo *r = NULL;

	test_names();
	test_file_check();
	test_tmpdir(tmp, sizeof(tmp));
	test_fmt(repo_dir, sizeof(repo_dir), "%s/repo", tmp);
	if (CHECK_EQ_INT(repo_init(repo_dir, NULL), 0) && CHECK_EQ_INT(repo_open(repo_dir, &r), 0)) {
		test_push_fetch(r);
		test_damage(r);
		test_list_timelines(r);
		test_system_id(r);
		test_summaries(r);
	}
	repo_free(r);
	test_empty_and_faults();
	TEST_RM_RF(tmp);
	return test_finish();
}
