/* common/lsn.c: the one LSN parser/formatter and WAL segment-name formatter/parser. */
#include "tests/unit/test.h"
#include "common/lsn.h"

#define MIB (1024u * 1024u)

static void test_lsn_parse(void)
{
	uint64_t v = 0;
	CHECK_EQ_INT(lsn_parse("0/0", &v), 0);
	CHECK_EQ_INT(v, 0);
	CHECK_EQ_INT(lsn_parse("16/B374D848", &v), 0);
	CHECK(v == 0x16B374D848ULL);
	/* PostgreSQL's pg_lsn input takes either case */
	CHECK_EQ_INT(lsn_parse("16/b374d848", &v), 0);
	CHECK(v == 0x16B374D848ULL);
	CHECK_EQ_INT(lsn_parse("FFFFFFFF/FFFFFFFF", &v), 0);
	CHECK(v == UINT64_MAX);
	CHECK_EQ_INT(lsn_parse("00000001/00000000", &v), 0);
	CHECK(v == 0x100000000ULL);
	CHECK_EQ_INT(lsn_parse("0/3000028", &v), 0);
	CHECK(v == 0x3000028);
	CHECK_EQ_INT(lsn_parse("1/0", &v), 0);
	CHECK(v == 0x100000000ULL);

	static const char *const bad[] = {
		"",		       /* empty */
		"16B374D848", "0",    /* no slash */
		"/1", "1/",	       /* an empty side */
		"123456789/0",	       /* overflow: more than 32 bits a side */
		"0/123456789", "100000000/0",
		"0/3000028 ",	       /* trailing garbage */
		"0/3000028x", "0/1/2", "0//1",
		" 0/1", "0/ 1", "+0/1", "-1/0", "0/+1", "0x1/0", /* what sscanf would take */
		"g/0", "0/G", "x/1", "1/x",
	};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		v = 42;
		if (!CHECK_EQ_INT(lsn_parse(bad[i], &v), -EINVAL))
			fprintf(stderr, "  accepted \"%s\"\n", bad[i]);
		CHECK_EQ_INT(v, 42);
	}
	CHECK_EQ_INT(lsn_parse(NULL, &v), -EINVAL);
	CHECK_EQ_INT(v, 42);
}

static void test_lsn_format(void)
{
	char buf[LSN_FORMAT_LEN];
	static const uint64_t v[] = {0, 0x3000028, 0x16B374D848ULL, 0x100000000ULL, UINT64_MAX};
	lsn_format(0x16B374D848ULL, buf);
	CHECK_EQ_STR(buf, "16/B374D848");
	lsn_format(0, buf);
	CHECK_EQ_STR(buf, "0/0");
	lsn_format(UINT64_MAX, buf);
	CHECK_EQ_STR(buf, "FFFFFFFF/FFFFFFFF");
	for (size_t i = 0; i < ELEMENTSOF(v); i++) {
		uint64_t back = 1;
		lsn_format(v[i], buf);
		CHECK(lsn_parse(buf, &back) == 0 && back == v[i]);
	}
}

static void test_segment_names(void)
{
	char name[WAL_SEGMENT_NAME_LEN];
	uint32_t t = 0, l = 0, s = 0;

	/* 16 MiB: 256 segments per "log" */
	wal_segno_to_name(3, 0xA * 256 + 0xFF, 16 * MIB, name);
	CHECK_EQ_STR(name, "000000030000000A000000FF");
	CHECK_EQ_INT(wal_segment_name_parse(name, &t, &l, &s), 0);
	CHECK(t == 3 && l == 0xA && s == 0xFF);
	CHECK(wal_segno_of(l, s, 16 * MIB) == 0xA * 256 + 0xFF);
	/* the segment holding an LSN, as PostgreSQL's XLByteToSeg + XLogFileName */
	wal_segno_to_name(1, 0x16B374D848ULL / (16 * MIB), 16 * MIB, name);
	CHECK_EQ_STR(name, "0000000100000016000000B3");
	/* 1 MiB and 1 GiB segments */
	wal_segno_to_name(1, 5000, 1 * MIB, name);
	CHECK_EQ_STR(name, "000000010000000100000388");
	CHECK_EQ_INT(wal_segment_name_parse(name, &t, &l, &s), 0);
	CHECK(wal_segno_of(l, s, 1 * MIB) == 5000);
	wal_segno_to_name(2, 9, 1024 * MIB, name);
	CHECK_EQ_STR(name, "000000020000000200000001");
	CHECK_EQ_INT(wal_segment_name_parse(name, &t, &l, &s), 0);
	CHECK(t == 2 && wal_segno_of(l, s, 1024 * MIB) == 9);
	/* the largest */
	wal_segno_to_name(0xFFFFFFFF, UINT64_MAX / (16 * MIB), 16 * MIB, name);
	CHECK_EQ_STR(name, "FFFFFFFFFFFFFFFF000000FF");

	/* only the first 24 characters are the parser's: suffixes are the caller's */
	CHECK_EQ_INT(wal_segment_name_parse("000000010000000000000002.partial", &t, &l, &s), 0);
	CHECK(t == 1 && l == 0 && s == 2);
	static const char *const bad[] = {
		"",
		"00000001000000000000000",  /* short */
		"000000000000000000000001", /* timeline 0 */
		"00000001000000000000000a", /* lower case: PostgreSQL never writes it */
		"00000001000000000000000G",
		"0000000100000000 0000001",
		"00000001.history",
	};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		t = l = s = 7;
		if (!CHECK_EQ_INT(wal_segment_name_parse(bad[i], &t, &l, &s), -EINVAL))
			fprintf(stderr, "  accepted \"%s\"\n", bad[i]);
		CHECK(t == 7 && l == 7 && s == 7);
	}
	CHECK_EQ_INT(wal_segment_name_parse(NULL, &t, &l, &s), -EINVAL);
}

int main(void)
{
	test_lsn_parse();
	test_lsn_format();
	test_segment_names();
	return test_finish();
}
