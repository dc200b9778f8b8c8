/* Unit tests for ingest/pgconn.h without a server: conninfo redaction. */
#include "tests/unit/test.h"

#include "ingest/pgconn.h"

/* redact in, and what comes out (NULL: -EINVAL expected) */
static void check_redact(const char *in, const char *want, bool want_secret)
{
	char *out = NULL;
	bool secret = !want_secret;
	int r = pgconn_conninfo_redact(in, &out, &secret);
	if (!want) {
		CHECK_EQ_INT(r, -EINVAL);
		return;
	}
	if (CHECK_EQ_INT(r, 0)) {
		CHECK_EQ_STR(out, want);
		CHECK_EQ_INT(secret, want_secret);
	}
	free(out);
}

static void test_redact(void)
{
	check_redact("host=h port=5 user=u", "user=u host=h port=5", false);
	check_redact("host=h password=Sekr1t user=u", "user=u host=h", true);
	check_redact("password='a b' sslpassword=x host=h", "host=h", true);
	check_redact("host=h replication=database", "host=h", true);
	check_redact("", "", false);
	/* values libpq must read back: quoted, \ and ' escaped */
	check_redact("application_name='my app' options='-c a=\\'b\\''",
		     "options='-c a=\\'b\\'' application_name='my app'", false);
	check_redact("host=h dbname=''", "dbname='' host=h", false);
	check_redact("dbname=a\\\\b", "dbname='a\\\\b'", false); /* libpq reads a\b */
	/* URIs: the userinfo password and the password parameter go */
	check_redact("postgresql://u:Sekr1t@h:5/db?sslmode=disable",
		     "user=u dbname=db host=h port=5 sslmode=disable", true);
	check_redact("postgres://u@h/db?password=Sekr1t", "user=u dbname=db host=h", true);
	check_redact("postgresql://u%3Ax:p%40ss@h/d", "user=u:x dbname=d host=h", true);
	/* a dbname that is itself a connection string */
	check_redact("dbname='host=h password=Sekr1t' user=u", "user=u dbname=host=h", true);
	check_redact("dbname=postgresql://u:Sekr1t@h/db", "dbname='user=u dbname=db host=h'", true);
	/* libpq refuses these: so does redaction (nothing of it is shown) */
	check_redact("host=h password='unterminated", NULL, false);
	check_redact("nosuchoption=1 password=x", NULL, false);
}

/* the output reads back as the same options, secrets excluded */
static void test_roundtrip(void)
{
	const char *in = "host='a b' user='it\\'s' password=x application_name='\\\\ \\''";
	char *once = NULL, *twice = NULL;
	bool secret = false;
	if (CHECK_EQ_INT(pgconn_conninfo_redact(in, &once, &secret), 0) &&
	    CHECK_EQ_INT(pgconn_conninfo_redact(once, &twice, &secret), 0)) {
		CHECK_EQ_STR(once, twice);
		CHECK(!secret);
	}
	free(once);
	free(twice);
}

int main(void)
{
	test_redact();
	test_roundtrip();
	return test_finish();
}
