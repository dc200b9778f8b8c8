/* Unit tests for common/: util.h parsing and formatting, file helpers, json, progress. */
#include "tests/unit/test.h"

#include "common/crc32c.h"
#include "common/json.h"
#include "common/progress.h"
#include "common/util.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>

static void test_parse_size(void)
{
	static const struct {
		const char *s;
		uint64_t v;
	} good[] = {
		{"0", 0},
		{"4096", 4096},
		{"64K", 64 * 1024},
		{"64k", 64 * 1024},
		{"64KB", 64 * 1024},
		{"64KiB", 64 * 1024},
		{"1M", 1024 * 1024},
		{"1m", 1024 * 1024},
		{"2G", 2ULL << 30},
		{"3T", 3ULL << 40},
		{"16777215T", 16777215ULL << 40},
		{"18446744073709551615", UINT64_MAX},
	};
	static const char *const bad[] = {
		"", "K", "abc", "-1", "+1", "1X", "1KBB", "1Kb", "1 K", "1.5M", "1KiBx",
		/* negative numbers, even after blanks (strtoull would wrap them around) */
		" -1", "\t-4096", " -1048576",
		"18446744073709551616", /* > UINT64_MAX */
		"16777216T",            /* 2^64: overflows in the multiplication */
		"0x10",
	};
	uint64_t v;

	for (size_t i = 0; i < ELEMENTSOF(good); i++) {
		v = 12345;
		if (!CHECK_EQ_INT(parse_size(good[i].s, &v), 0))
			fprintf(stderr, "  parse_size(\"%s\")\n", good[i].s);
		if (!CHECK(v == good[i].v))
			fprintf(stderr, "  parse_size(\"%s\") = %" PRIu64 "\n", good[i].s, v);
	}
	for (size_t i = 0; i < ELEMENTSOF(bad); i++)
		if (!CHECK_EQ_INT(parse_size(bad[i], &v), -EINVAL))
			fprintf(stderr, "  parse_size(\"%s\") accepted\n", bad[i]);
	CHECK_EQ_INT(parse_size(NULL, &v), -EINVAL);
	/* far too long to be a size */
	char longs[100];
	memset(longs, '1', sizeof(longs) - 1);
	longs[sizeof(longs) - 1] = '\0';
	CHECK_EQ_INT(parse_size(longs, &v), -EINVAL);
}

static void test_parse_duration(void)
{
	static const struct {
		const char *s;
		int64_t v;
	} good[] = {
		{"45s", 45}, {"30m", 1800}, {"12h", 43200}, {"7d", 604800}, {"2w", 1209600},
		{"10", 10},  {"0s", 0},
		{"9223372036854775807", INT64_MAX},
	};
	static const char *const bad[] = {
		"", "s", "-5s", "+5s", "5x", "5sB", "5B", "5M", /* minutes are "m" */
		"5 s", "1.5h",
		"9223372036854775808", /* > INT64_MAX */
		"15250284452472w",     /* * 604800 > INT64_MAX */
		"30mi",
		/* durations take no byte suffix ("suffixes do not take B", util.c) */
		"30miB", "2hiB",
	};
	int64_t v;

	for (size_t i = 0; i < ELEMENTSOF(good); i++) {
		v = -1;
		if (!CHECK_EQ_INT(parse_duration(good[i].s, &v), 0))
			fprintf(stderr, "  parse_duration(\"%s\")\n", good[i].s);
		if (!CHECK(v == good[i].v))
			fprintf(stderr, "  parse_duration(\"%s\") = %" PRId64 "\n", good[i].s, v);
	}
	for (size_t i = 0; i < ELEMENTSOF(bad); i++)
		if (!CHECK_EQ_INT(parse_duration(bad[i], &v), -EINVAL))
			fprintf(stderr, "  parse_duration(\"%s\") accepted as %" PRId64 "\n", bad[i], v);
	CHECK_EQ_INT(parse_duration(NULL, &v), -EINVAL);
}

static void test_format(void)
{
	char buf[32];
	CHECK_EQ_STR(format_bytes(0, buf, sizeof(buf)), "0 B");
	CHECK_EQ_STR(format_bytes(1023, buf, sizeof(buf)), "1023 B");
	CHECK_EQ_STR(format_bytes(1024, buf, sizeof(buf)), "1.0 KiB");
	CHECK_EQ_STR(format_bytes(1536, buf, sizeof(buf)), "1.5 KiB");
	CHECK_EQ_STR(format_bytes(1 << 20, buf, sizeof(buf)), "1.0 MiB");
	CHECK_EQ_STR(format_bytes(12900000, buf, sizeof(buf)), "12.3 MiB");
	CHECK_EQ_STR(format_bytes(5ULL << 30, buf, sizeof(buf)), "5.0 GiB");
	CHECK_EQ_STR(format_bytes(3ULL << 40, buf, sizeof(buf)), "3.0 TiB");
	CHECK_EQ_STR(format_bytes(2ULL << 50, buf, sizeof(buf)), "2.0 PiB");
	/* PiB is the largest unit */
	CHECK_EQ_STR(format_bytes(UINT64_MAX, buf, sizeof(buf)), "16384.0 PiB");
	CHECK(format_bytes(42, buf, sizeof(buf)) == buf);

	CHECK_EQ_STR(format_time_iso(0, buf, sizeof(buf)), "1970-01-01T00:00:00Z");
	CHECK_EQ_STR(format_time_iso(1700000000LL * 1000000000 + 999999999, buf, sizeof(buf)),
		     "2023-11-14T22:13:20Z");

	int64_t a = now_ns(), b = now_ns();
	CHECK(a > 1700000000LL * 1000000000);
	CHECK(b >= a);
	int64_t m1 = mono_ns(), m2 = mono_ns();
	CHECK(m2 >= m1);
	CHECK(cpu_count() >= 1);
}

static void test_timespec(void)
{
	struct timespec ts = {.tv_sec = 1764900000, .tv_nsec = 123456789};
	CHECK_EQ_INT(timespec_to_ns(&ts), 1764900000123456789LL);
	ts = (struct timespec){.tv_sec = 0, .tv_nsec = 999999999};
	CHECK_EQ_INT(timespec_to_ns(&ts), 999999999);
	/* before 1970: st_mtim holds a negative tv_sec and a non-negative tv_nsec */
	ts = (struct timespec){.tv_sec = -1, .tv_nsec = 500000000};
	CHECK_EQ_INT(timespec_to_ns(&ts), -500000000);
	/* past 2038: no 32-bit overflow */
	ts = (struct timespec){.tv_sec = 4102444800, .tv_nsec = 1};
	CHECK_EQ_INT(timespec_to_ns(&ts), 4102444800000000001LL);
	int64_t a = now_ns(), b = now_ns();
	CHECK(a > 1700000000LL * 1000000000 && b >= a);
}

static void test_hex(void)
{
	const uint8_t in[] = {0x00, 0x01, 0xab, 0xff, 0x7e};
	uint8_t out[5], rnd[32], back[32];
	char hex[65];

	hex_encode(in, sizeof(in), hex);
	CHECK_EQ_STR(hex, "0001abff7e");
	hex_encode(in, 0, hex);
	CHECK_EQ_STR(hex, "");

	memset(out, 0x55, sizeof(out));
	CHECK_EQ_INT(hex_decode("0001ABFF7e", out, sizeof(out)), 0);
	CHECK(memcmp(out, in, sizeof(in)) == 0);
	CHECK_EQ_INT(hex_decode("0001abff7", out, sizeof(out)), -EINVAL);   /* too short */
	CHECK_EQ_INT(hex_decode("0001abff7e0", out, sizeof(out)), -EINVAL); /* too long */
	CHECK_EQ_INT(hex_decode("0001abff7g", out, sizeof(out)), -EINVAL);  /* not hex */
	CHECK_EQ_INT(hex_decode("0001ab ff7", out, sizeof(out)), -EINVAL);
	CHECK(hex_is_lower("09af", 4));
	CHECK(!hex_is_lower("09AF", 4)); /* upper case is not a name of ours */
	CHECK(!hex_is_lower("09af", 3));  /* exactly n */
	CHECK(!hex_is_lower("09a", 4));
	CHECK(!hex_is_lower("wal-", 4));
	CHECK_EQ_INT(hex_decode("", out, 0), 0);

	test_random(rnd, sizeof(rnd));
	hex_encode(rnd, sizeof(rnd), hex);
	CHECK_EQ_INT(strlen(hex), 64);
	CHECK_EQ_INT(hex_decode(hex, back, sizeof(back)), 0);
	CHECK(memcmp(rnd, back, sizeof(rnd)) == 0);
}

/* slicing by 8 (common/crc32c.c), to compare with the hardware path */
uint32_t crc32c_update_sw(uint32_t crc, const void *buf, size_t len);

/*
 * The three-way hardware CRC joins blocks of 256 and 8192 bytes: every length
 * around those edges, at every alignment, from any starting value, gives the
 * CRC the byte-at-a-time definition gives, and a CRC carried across any cut
 * is the CRC of the whole.
 */
static void test_crc32c(void)
{
	static const size_t lens[] = {0, 1, 7, 8, 9, 255, 256, 767, 768, 769, 775, 776, 1536, 1543,
				      8191, 8192, 24575, 24576, 24577, 24583, 25344, 25351, 49152,
				      65536, 65536 + 13, 3 * 65536 + 5};
	size_t max = 3 * 65536 + 5 + 8;
	uint8_t *buf = malloc(max), ff[32];
	int bad = 0;

	if (!CHECK(buf != NULL))
		return;
	test_random(buf, max);
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++)
		for (size_t off = 0; off < 8; off++) {
			uint32_t seed = (uint32_t)(i * 2654435761u + off);
			uint32_t want = crc32c_update_sw(seed, buf + off, lens[i]);
			if (crc32c_update(seed, buf + off, lens[i]) != want)
				bad++;
			size_t cut = lens[i] / 3;
			if (crc32c_update(crc32c_update(seed, buf + off, cut), buf + off + cut,
					  lens[i] - cut) != want)
				bad++;
		}
	CHECK_EQ_INT(bad, 0);
	/* RFC 3720 B.4: 32 bytes of 0xff */
	memset(ff, 0xff, sizeof(ff));
	CHECK_EQ_INT(crc32c(ff, sizeof(ff)), 0x62A8AB43);
	free(buf);
}

static void test_paths(void)
{
	char buf[64];
	path_dirname("a", buf, sizeof(buf));
	CHECK_EQ_STR(buf, ".");
	path_dirname("/a", buf, sizeof(buf));
	CHECK_EQ_STR(buf, "/");
	path_dirname("/a/b/c", buf, sizeof(buf));
	CHECK_EQ_STR(buf, "/a/b");
	path_dirname("x/y", buf, sizeof(buf));
	CHECK_EQ_STR(buf, "x");
}

/*
 * file_write_atomic of a large aligned buffer (a pack): the same bytes back, an
 * unaligned tail included; written past the page cache where the file system
 * takes O_DIRECT (at most the tail's page cached); an unaligned buffer of the
 * same size through the cache, same bytes.
 */
static void test_write_direct(const char *tmp)
{
	const size_t len = (3u << 20) + 123;
	char path[PATH_MAX];
	uint8_t *buf = malloc_huge(len + 1), *back = NULL;
	size_t got = 0;
	if (!CHECK(buf != NULL))
		return;
	for (size_t i = 0; i <= len; i++)
		buf[i] = (uint8_t)(i * 2654435761u >> 13);
	snprintf(path, sizeof(path), "%s/direct", tmp);
	int fd = open(path, O_WRONLY | O_CREAT | O_DIRECT, 0600);
	bool direct_ok = fd >= 0;
	if (fd >= 0)
		close(fd);
	unlink(path);

	CHECK_EQ_INT(file_write_atomic(path, buf, len, 0600), 0);
	/* the tail's page; under valgrind also the few it reads of a mapped file */
	if (direct_ok)
		CHECK(test_cached_pages(path) <= 16);
	if (CHECK_EQ_INT(file_read_regular(path, true, len, &back, &got), 0))
		CHECK(got == len && memcmp(back, buf, len) == 0);
	free(back);
	back = NULL;
	CHECK_EQ_INT(file_write_atomic(path, buf + 1, len, 0600), 0);
	if (CHECK_EQ_INT(file_read_regular(path, true, len, &back, &got), 0))
		CHECK(got == len && memcmp(back, buf + 1, len) == 0);
	free(back);
	free(buf);
	unlink(path);
}

static void test_files(void)
{
	char tmp[64], path[PATH_MAX], sub[PATH_MAX];
	struct stat st;
	char *text = NULL;
	size_t len = 0;

	test_tmpdir(tmp, sizeof(tmp));

	/* dir_is_empty: missing and empty are both "empty" */
	snprintf(sub, sizeof(sub), "%s/a/b/c", tmp);
	CHECK_EQ_INT(dir_is_empty(sub), 1);
	CHECK_EQ_INT(dir_is_empty(tmp), 1);

	CHECK_EQ_INT(mkdir_p(sub, 0700), 0);
	CHECK_EQ_INT(mkdir_p(sub, 0700), 0); /* exists: fine */
	CHECK(stat(sub, &st) == 0 && S_ISDIR(st.st_mode));
	CHECK_EQ_INT(dir_is_empty(tmp), 0);
	CHECK_EQ_INT(dir_is_empty(sub), 1);

	/* file_write_atomic: content, mode, no temporary file left behind */
	snprintf(path, sizeof(path), "%s/a/file", tmp);
	CHECK_EQ_INT(file_write_atomic(path, "hello\n", 6, 0600), 0);
	CHECK(stat(path, &st) == 0 && (st.st_mode & 07777) == 0600 && st.st_size == 6);
	CHECK_EQ_INT(file_write_atomic(path, "replaced", 8, 0600), 0);
	snprintf(sub, sizeof(sub), "%s/a", tmp);
	CHECK_EQ_INT(test_count_names(sub, ".tmp"), 0);
	CHECK_EQ_INT(test_count_names(sub, "."), 0);
	CHECK_EQ_INT(test_count_names(sub, "file"), 1);

	test_write_direct(tmp);

	CHECK_EQ_INT(file_read_all(path, 1024, &text, &len), 0);
	CHECK_EQ_INT(len, 8);
	CHECK_EQ_STR(text, "replaced");
	free(text);
	text = NULL;
	CHECK_EQ_INT(file_read_all(path, 7, &text, &len), -EFBIG);
	CHECK(text == NULL);
	snprintf(sub, sizeof(sub), "%s/missing", tmp);
	CHECK_EQ_INT(file_read_all(sub, 1024, &text, &len), -ENOENT);

	/* file_read_regular: the bytes; too large, not regular, a link with nofollow, missing */
	{
		uint8_t *bytes = NULL;
		char link[PATH_MAX];
		if (CHECK_EQ_INT(file_read_regular(path, true, 8, &bytes, &len), 0))
			CHECK(len == 8 && memcmp(bytes, "replaced", 8) == 0);
		free(bytes);
		bytes = NULL;
		CHECK_EQ_INT(file_read_regular(path, false, 7, &bytes, &len), -EFBIG);
		CHECK_EQ_INT(file_read_regular(tmp, false, 1024, &bytes, &len), -EINVAL);
		snprintf(link, sizeof(link), "%s/a/link", tmp);
		CHECK_EQ_INT(symlink(path, link), 0);
		CHECK_EQ_INT(file_read_regular(link, true, 1024, &bytes, &len), -ELOOP);
		if (CHECK_EQ_INT(file_read_regular(link, false, 1024, &bytes, &len), 0))
			CHECK_EQ_INT(len, 8);
		free(bytes);
		bytes = NULL;
		CHECK_EQ_INT(file_read_regular(sub, false, 1024, &bytes, &len), -ENOENT);
		CHECK(bytes == NULL);
		CHECK_EQ_INT(unlink(link), 0);
	}

	/* write_full / pread_full: short only at EOF */
	{
		char buf[16] = {0};
		snprintf(sub, sizeof(sub), "%s/rw", tmp);
		int fd = open(sub, O_RDWR | O_CREAT | O_EXCL, 0600);
		CHECK(fd >= 0);
		CHECK_EQ_INT(write_full(fd, "0123456789", 10), 0);
		CHECK_EQ_INT(pwrite_full(fd, "AB", 2, 2), 0);
		CHECK_EQ_INT(pread_full(fd, buf, 4, 0), 4);
		CHECK(memcmp(buf, "01AB", 4) == 0);
		CHECK_EQ_INT(pread_full(fd, buf, sizeof(buf), 6), 4);
		CHECK(memcmp(buf, "6789", 4) == 0);
		CHECK_EQ_INT(pread_full(fd, buf, sizeof(buf), 100), 0);
		close(fd);
		CHECK_EQ_INT(pread_full(-1, buf, 1, 0), -EBADF);
	}

	CHECK(fsync_dir(tmp) == 0);
	TEST_RM_RF(tmp);
	CHECK(stat(tmp, &st) < 0 && errno == ENOENT);
	TEST_RM_RF(tmp); /* missing: not an error */
}

static char *json_render(void (*fn)(JsonWriter *w))
{
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);
	JsonWriter w;
	if (!f)
		return NULL;
	json_init(&w, f);
	fn(&w);
	fclose(f);
	return out;
}

static void json_doc(JsonWriter *w)
{
	json_begin_object(w);
	json_key(w, "a");
	json_int(w, 1);
	json_key(w, "neg");
	json_int(w, INT64_MIN);
	json_key(w, "u");
	json_uint(w, UINT64_MAX);
	json_key(w, "list");
	json_begin_array(w);
	json_bool(w, true);
	json_bool(w, false);
	json_null(w);
	json_string(w, NULL);
	json_begin_object(w);
	json_end_object(w);
	json_begin_array(w);
	json_end_array(w);
	json_begin_object(w);
	json_key(w, "x");
	json_double(w, 1.5);
	json_end_object(w);
	json_end_array(w);
	json_key(w, "s");
	json_string(w, "q\"b\\n\nr\rt\t\x01\x1f\xc3\xa9/");
	json_key(w, "e");
	json_begin_object(w);
	json_end_object(w);
	json_key(w, "k\"ey");
	json_double(w, 0.25);
	json_end_object(w);
}

static void json_top_array(JsonWriter *w)
{
	json_begin_array(w);
	for (int i = 0; i < 3; i++) {
		json_begin_object(w);
		json_key(w, "i");
		json_int(w, i);
		json_key(w, "sq");
		json_begin_array(w);
		json_int(w, i * i);
		json_end_array(w);
		json_end_object(w);
	}
	json_end_array(w);
}

static char *escaped(const char *in)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);
	json_write_escaped(f, in);
	fclose(f);
	return out;
}

/* whatever bytes a catalog holds, the output is valid JSON (UTF-8) */
static void test_json_utf8(void)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
		{"\xff", "\"\\ufffd\""},
		{"a\xc3", "\"a\\ufffd\""},                 /* cut short at the end */
		{"\xc3(", "\"\\ufffd(\""},                 /* bad continuation */
		{"\xc0\xaf", "\"\\ufffd\\ufffd\""},       /* overlong "/" */
		{"\xe0\x80\xaf", "\"\\ufffd\\ufffd\\ufffd\""},
		{"\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\""}, /* a surrogate */
		{"\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\""}, /* > U+10FFFF */
		{"\xf8\x88\x80\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\""},
		{"\x80x", "\"\\ufffdx\""},
		/* well-formed: kept as they are */
		{"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\""},
		{"\xef\xbf\xbd\xf4\x8f\xbf\xbf", "\"\xef\xbf\xbd\xf4\x8f\xbf\xbf\""},
	};
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		char *out = escaped(cases[i].in);
		CHECK_EQ_STR(out, cases[i].want);
		free(out);
	}
	CHECK(json_text_is_clean(""));
	CHECK(json_text_is_clean("main-2 \xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
	CHECK(!json_text_is_clean("\xff"));
	CHECK(!json_text_is_clean("a\xc3"));
	CHECK(!json_text_is_clean("\xed\xa0\x80"));
	CHECK(!json_text_is_clean("a\nb"));
	CHECK(!json_text_is_clean("tab\there"));
	CHECK(!json_text_is_clean("\x1b[31mred"));
	CHECK(!json_text_is_clean("del\x7f"));
	CHECK(!json_text_is_clean("c1\xc2\x85")); /* U+0085, a C1 control */
}

static void test_json(void)
{
	char *s = json_render(json_doc);
	CHECK(s != NULL);
	CHECK_EQ_STR(s, "{\"a\":1,\"neg\":-9223372036854775808,\"u\":18446744073709551615,"
			"\"list\":[true,false,null,null,{},[],{\"x\":1.5}],"
			"\"s\":\"q\\\"b\\\\n\\nr\\rt\\t\\u0001\\u001f\xc3\xa9/\","
			"\"e\":{},\"k\\\"ey\":0.25}");
	free(s);

	s = json_render(json_top_array);
	CHECK_EQ_STR(s, "[{\"i\":0,\"sq\":[0]},{\"i\":1,\"sq\":[1]},{\"i\":2,\"sq\":[4]}]");
	free(s);

	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);
	json_write_escaped(f, "");
	fputc(' ', f);
	json_write_escaped(f, "plain text");
	fclose(f);
	CHECK_EQ_STR(out, "\"\" \"plain text\"");
	free(out);
	test_json_utf8();
}

/* Run fn with stderr redirected to a file; returns what it printed (malloc'd). */
static char *capture_stderr(void (*fn)(void))
{
	char tmp[64], path[PATH_MAX];
	char *text = NULL;
	test_tmpdir(tmp, sizeof(tmp));
	snprintf(path, sizeof(path), "%s/stderr", tmp);
	fflush(stderr);
	int saved = dup(2);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (saved < 0 || fd < 0) {
		fprintf(stderr, "capture_stderr: cannot redirect\n");
		exit(2);
	}
	dup2(fd, 2);
	close(fd);
	fn();
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	if (file_read_all(path, 1 << 20, &text, NULL) < 0)
		text = NULL;
	TEST_RM_RF(tmp);
	return text;
}

static void progress_disabled_run(void)
{
	Progress *p = NULL;
	CHECK_EQ_INT(progress_new("quiet", 1000, false, &p), 0);
	CHECK(p != NULL);
	progress_add(p, 10);
	progress_set_total(p, 2000);
	progress_add(p, 990);
	struct timespec ts = {.tv_nsec = 400 * 1000000};
	nanosleep(&ts, NULL); /* longer than the redraw interval */
	CHECK(progress_free(p) == NULL);
	progress_add(NULL, 1); /* accepted */
	progress_set_total(NULL, 1);
	CHECK(progress_free(NULL) == NULL);
}

static void progress_enabled_run(void)
{
	Progress *p = NULL;
	CHECK_EQ_INT(progress_new("loud", 4096, true, &p), 0);
	progress_add(p, 1024);
	struct timespec ts = {.tv_nsec = 600 * 1000000};
	nanosleep(&ts, NULL);
	progress_free(p);
}

/* The same with stderr on a pseudo-terminal: what a person at a terminal sees. */
static char *capture_stderr_tty(void (*fn)(void))
{
	char *text = NULL, buf[4096];
	size_t len = 0;
	ssize_t n;
	int master = posix_openpt(O_RDWR | O_NOCTTY), slave = -1, saved;

	if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0 ||
	    (slave = open(ptsname(master), O_RDWR | O_NOCTTY)) < 0) {
		fprintf(stderr, "capture_stderr_tty: no pseudo-terminal\n");
		exit(2);
	}
	struct termios t;
	if (tcgetattr(slave, &t) == 0) { /* bytes as written: no \n -> \r\n */
		cfmakeraw(&t);
		tcsetattr(slave, TCSANOW, &t);
	}
	fflush(stderr);
	saved = dup(2);
	dup2(slave, 2);
	close(slave);
	fn();
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	fcntl(master, F_SETFL, O_NONBLOCK);
	while ((n = read(master, buf, sizeof(buf))) > 0) {
		text = realloc(text, len + (size_t)n + 1);
		memcpy(text + len, buf, (size_t)n);
		len += (size_t)n;
		text[len] = 0;
	}
	close(master);
	return text ? text : strdup("");
}

static void progress_plain_run(void)
{
	Progress *p = NULL;
	CHECK_EQ_INT(progress_new("plain", 4096, true, &p), 0);
	progress_add(p, 1024);
	struct timespec ts = {.tv_sec = 1, .tv_nsec = 300 * 1000000};
	nanosleep(&ts, NULL); /* past the first line's 1 s */
	progress_add(p, 3072);
	progress_free(p);
}

static void test_progress(void)
{
	char *out = capture_stderr(progress_disabled_run);
	CHECK(out != NULL);
	if (out && !CHECK_EQ_INT(strlen(out), 0))
		fprintf(stderr, "  disabled progress printed: %s\n", out);
	free(out);

	/* into a file: whole lines, the first after 1 s, a last one at the end; no terminal codes */
	out = capture_stderr(progress_plain_run);
	CHECK(out != NULL);
	if (out) {
		CHECK(strncmp(out, "plain: 1.0 KiB of 4.0 KiB (25%), ", 33) == 0);
		CHECK(strstr(out, "\nplain: 4.0 KiB of 4.0 KiB (100%), ") != NULL);
		CHECK(!strchr(out, '\r') && !strchr(out, '\033') && out[strlen(out) - 1] == '\n');
	}
	free(out);
	/* a short run into a file: nothing at all */
	out = capture_stderr(progress_enabled_run);
	if (CHECK(out != NULL))
		CHECK_EQ_INT(strlen(out), 0);
	free(out);

	/* on a terminal: draws "what: done of total" lines and clears the line when freed */
	out = capture_stderr_tty(progress_enabled_run);
	CHECK(out != NULL);
	if (out) {
		CHECK(strstr(out, "\rloud: 1.0 KiB of 4.0 KiB (25%)") != NULL);
		size_t n = strlen(out);
		CHECK(n >= 4 && strcmp(out + n - 4, "\r\033[K") == 0);
	}
	free(out);
}

/* bytes_append: grows as it must, keeps what it held, refuses an overflowing length */
static void test_bytes_append(void)
{
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0;
	char want[3000];
	for (int i = 0; i < 1000; i++) {
		char piece[3] = {(char)('a' + i % 26), (char)('0' + i % 10), '.'};
		memcpy(want + 3 * i, piece, 3);
		if (!CHECK_EQ_INT(bytes_append(&buf, &len, &cap, piece, 3), 0))
			break;
	}
	CHECK(len == 3000 && cap >= len && cap <= 2 * len);
	CHECK(buf && memcmp(buf, want, 3000) == 0);
	CHECK_EQ_INT(bytes_append(&buf, &len, &cap, "", 0), 0);
	CHECK_EQ_INT(bytes_append(&buf, &len, &cap, want, SIZE_MAX - 10), -ENOMEM);
	CHECK(len == 3000 && memcmp(buf, want, 3000) == 0);
	free(buf);
}

/* owned by uid:gid */
static bool owned_by(const char *path, uid_t uid, gid_t gid)
{
	struct stat st;
	return lstat(path, &st) == 0 && st.st_uid == uid && st.st_gid == gid;
}

/* nothing named ".own-*" (a temporary name of the owned helpers) is left in dir */
static bool no_own_leftovers(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	bool clean = d != NULL;
	while (d && (de = readdir(d)))
		if (strncmp(de->d_name, ".own-", 5) == 0)
			clean = false;
	if (d)
		closedir(d);
	return clean;
}

/*
 * Root in a tree another user owns: what the owned helpers make is that
 * user's from the moment it has its name; what exists is left alone.
 */
static void test_owned(void)
{
	const uid_t u = 65534; /* nobody */
	const gid_t g = 65533;
	char tmp[64], path[PATH_MAX + 16], sub[PATH_MAX];
	FileOwner o, plain = {0};
	struct stat st;
	int fd;

	test_tmpdir(tmp, sizeof(tmp));
	CHECK_EQ_INT(file_owner_of(tmp, &o), 0);
	CHECK(!o.give); /* our own tree (or not root): nothing to give */
	CHECK_EQ_INT(file_owner_of("/nonexistent/x", &o), geteuid() == 0 ? -ENOENT : 0);
	if (geteuid() != 0) {
		printf("owned files: skipped (not root)\n");
		rm_rf(tmp);
		return;
	}
	CHECK_EQ_INT(chown(tmp, u, g), 0);
	CHECK_EQ_INT(file_owner_of(tmp, &o), 0);
	CHECK(o.give && o.uid == u && o.gid == g);

	/* a new file: given; O_EXCL on an existing one: -EEXIST; an existing one kept as it is */
	snprintf(path, sizeof(path), "%s/lock", tmp);
	fd = open_owned(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600, &o);
	CHECK(fd >= 0);
	if (fd >= 0)
		close(fd);
	CHECK(owned_by(path, u, g));
	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
	CHECK_EQ_INT(open_owned(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600, &o), -EEXIST);
	snprintf(path, sizeof(path), "%s/mine", tmp);
	fd = open_owned(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600, &plain);
	CHECK(fd >= 0);
	if (fd >= 0)
		close(fd);
	CHECK(owned_by(path, 0, 0));
	fd = open_owned(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600, &o);
	CHECK(fd >= 0);
	if (fd >= 0)
		close(fd);
	CHECK(owned_by(path, 0, 0)); /* existed: not taken over */
	snprintf(path, sizeof(path), "%s/excl", tmp);
	fd = open_owned(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600, &o);
	CHECK(fd >= 0);
	if (fd >= 0)
		close(fd);
	CHECK(owned_by(path, u, g));

	/* made, never opened: -EEXIST when there */
	snprintf(path, sizeof(path), "%s/x-shm", tmp);
	CHECK_EQ_INT(file_create_owned(path, 0640, &o), 0);
	CHECK(owned_by(path, u, g));
	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0640 && st.st_size == 0);
	CHECK_EQ_INT(file_create_owned(path, 0640, &o), -EEXIST);

	/* directories, each level; an existing one is no error */
	snprintf(sub, sizeof(sub), "%s/wal/00000001", tmp);
	CHECK_EQ_INT(mkdir_p_owned(sub, 0700, &o), 0);
	CHECK_EQ_INT(mkdir_p_owned(sub, 0700, &o), 0);
	CHECK(owned_by(sub, u, g));
	snprintf(path, sizeof(path), "%s/wal", tmp);
	CHECK(owned_by(path, u, g));
	CHECK(stat(sub, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0700);
	CHECK_EQ_INT(mkdir_owned(sub, 0700, &o), 0);

	/* a file written whole: given before it takes its name */
	snprintf(path, sizeof(path), "%s/obj", sub);
	CHECK_EQ_INT(file_write_atomic_owned(path, "abc", 3, 0600, &o), 0);
	CHECK(owned_by(path, u, g));
	CHECK_EQ_INT(file_write_atomic_owned(path, "abcd", 4, 0600, &plain), 0);
	CHECK(owned_by(path, 0, 0));
	CHECK(no_own_leftovers(tmp) && no_own_leftovers(sub));
	rm_rf(tmp);
}

int main(void)
{
	test_bytes_append();
	test_crc32c();
	test_parse_size();
	test_parse_duration();
	test_format();
	test_timespec();
	test_hex();
	test_paths();
	test_files();
	test_owned();
	test_json();
	test_progress();
	return test_finish();
}
