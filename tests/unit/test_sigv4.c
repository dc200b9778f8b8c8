/*
 * Unit tests for store/sigv4.h against AWS's published vectors.
 *
 * Sources of the expected values:
 *  - the AWS Signature Version 4 test suite ("aws-sig-v4-test-suite",
 *    https://docs.aws.amazon.com/general/latest/gr/signature-v4-test-suite.html):
 *    get-vanilla, get-vanilla-query-order-key-case, get-utf8, get-unreserved,
 *    get-header-key-duplicate, get-header-value-trim, post-vanilla and
 *    post-x-www-form-urlencoded, their .creq/.sts/.authz files (credentials
 *    AKIDEXAMPLE / wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, us-east-1,
 *    service "service", 20150830T123600Z). Copied from the suite as vendored
 *    by AWS's SDK test fixtures (@aws-sdk/signature-v4 suite.fixture).
 *  - the Amazon S3 API reference, "Signature Calculations for the
 *    Authorization Header: Transferring Payload in a Single Chunk"
 *    (https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html),
 *    examples GET Object, PUT Object, GET Bucket Lifecycle and Get Bucket
 *    (List Objects) with AKIAIOSFODNN7EXAMPLE / wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY,
 *    us-east-1, 20130524T000000Z.
 *  - "Examples of how to derive a signing key for Signature Version 4" (AWS
 *    General Reference): the iam/20120215 signing key.
 */
#include "tests/unit/test.h"

#include "store/sigv4.h"

#define SUITE_DATE "20150830T123600Z"
#define S3_DATE "20130524T000000Z"
#define HOST_SUITE {"Host", "example.amazonaws.com"}
#define DATE_SUITE {"X-Amz-Date", SUITE_DATE}

static const SigV4Key suite_key = {
	.access_key = "AKIDEXAMPLE",
	.secret_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
	.region = "us-east-1",
	.service = "service",
};

static const SigV4Key s3_key = {
	.access_key = "AKIAIOSFODNN7EXAMPLE",
	.secret_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
	.region = "us-east-1",
	.service = "s3",
};

typedef struct Vector {
	const char *name;
	const SigV4Key *key;
	const char *date;
	SigV4Request req;
	const char *creq; /* NULL: not checked */
	const char *sts_hash; /* last line of the string to sign; NULL: not checked */
	const char *authz;
} Vector;

static void check_vector(const Vector *v)
{
	char *creq = NULL, *sts = NULL, *authz = NULL;

	if (!CHECK_EQ_INT(sigv4_canonical_request(&v->req, &creq), 0))
		goto out;
	if (v->creq && !CHECK_EQ_STR(creq, v->creq))
		fprintf(stderr, "  vector %s\n", v->name);
	if (!CHECK_EQ_INT(sigv4_string_to_sign(v->date, v->key->region, v->key->service, creq, &sts),
			  0))
		goto out;
	if (v->sts_hash) {
		char want[256];
		snprintf(want, sizeof(want), "AWS4-HMAC-SHA256\n%s\n%.8s/%s/%s/aws4_request\n%s",
			 v->date, v->date, v->key->region, v->key->service, v->sts_hash);
		if (!CHECK_EQ_STR(sts, want))
			fprintf(stderr, "  vector %s\n", v->name);
	}
	if (!CHECK_EQ_INT(sigv4_authorization(&v->req, v->key, v->date, &authz), 0))
		goto out;
	if (!CHECK_EQ_STR(authz, v->authz))
		fprintf(stderr, "  vector %s\n", v->name);
out:
	free(creq);
	free(sts);
	free(authz);
}

static void test_suite(void)
{
	static const SigV4Pair h_plain[] = {HOST_SUITE, DATE_SUITE};
	static const SigV4Pair q_order[] = {{"Param2", "value2"}, {"Param1", "value1"}};
	static const SigV4Pair h_form[] = {
		{"Content-Type", "application/x-www-form-urlencoded"}, HOST_SUITE, DATE_SUITE};
	static const SigV4Pair h_dup[] = {HOST_SUITE,
					  {"My-Header1", "value2"},
					  {"My-Header1", "value2"},
					  {"My-Header1", "value1"},
					  DATE_SUITE};
	static const SigV4Pair h_trim[] = {
		HOST_SUITE, {"My-Header1", " value1"}, {"My-Header2", " \"a   b   c\""}, DATE_SUITE};
	char form_hash[65];
	sigv4_sha256_hex("Param1=value1", 13, form_hash);
	CHECK_EQ_STR(form_hash, "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e");

	const Vector v[] = {
		{"get-vanilla", &suite_key, SUITE_DATE,
		 {"GET", "/", NULL, 0, h_plain, 2, SIGV4_EMPTY_SHA256},
		 "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n"
		 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		 "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
		 "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
		 "SignedHeaders=host;x-amz-date, "
		 "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
		{"get-vanilla-query-order-key-case", &suite_key, SUITE_DATE,
		 {"GET", "/", q_order, 2, h_plain, 2, SIGV4_EMPTY_SHA256},
		 "GET\n/\nParam1=value1&Param2=value2\nhost:example.amazonaws.com\n"
		 "x-amz-date:20150830T123600Z\n\nhost;x-amz-date\n"
		 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		 "816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0",
		 "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
		 "SignedHeaders=host;x-amz-date, "
		 "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"},
		{"get-utf8", &suite_key, SUITE_DATE,
		 {"GET", "/\xE1\x88\xB4", NULL, 0, h_plain, 2, SIGV4_EMPTY_SHA256},
		 "GET\n/%E1%88%B4\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
		 "host;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		 "2a0a97d02205e45ce2e994789806b19270cfbbb0921b278ccf58f5249ac42102",
		 "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
		 "SignedHeaders=host;x-amz-date, "
		 "Signature=8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"},
		{"get-unreserved", &suite_key, SUITE_DATE,
		 {"GET", "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", NULL, 0,
		  h_plain, 2, SIGV4_EMPTY_SHA256},
		 "GET\n/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz\n\n"
		 "host:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n"
		 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		 NULL,
		 "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
		 "SignedHeaders=host;x-amz-date, "
		 "Signature=07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f"},
		{"get-header-key-duplicate", &suite_key, SUITE_DATE,
		 {"GET", "/", NULL, 0, h_dup, 5, SIGV4_EMPTY_SHA256},
		 "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value2,value2,value1\n"
		 "x-amz-date:20150830T123600Z\n\nhost;my-header1;x-amz-date\n"
		 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		 NULL,
		 "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
		 "SignedHeaders=host;my-header1;x-amz-date, "
		 "Signature=c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea"},
		{"get-header-value-trim", &suite_key, SUITE_DATE,
		 {"GET", "/", NULL, 0, h_trim, 4, SIGV4_EMPTY_SHA256},
		 "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value1\nmy-header2:\"a b c\"\n"
		 "x-amz-date:20150830T123600Z\n\nhost;my-header1;my-header2;x-amz-date\n"
		 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		 "a726db9b0df21c14f559d0a978e563112acb1b9e05476f0a6a1c7d68f28605c7",
		 "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
		 "SignedHeaders=host;my-header1;my-header2;x-amz-date, "
		 "Signature=acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"},
		{"post-vanilla", &suite_key, SUITE_DATE,
		 {"POST", "/", NULL, 0, h_plain, 2, SIGV4_EMPTY_SHA256},
		 "POST\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n"
		 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		 "553f88c9e4d10fc9e109e2aeb65f030801b70c2f6468faca261d401ae622fc87",
		 "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
		 "SignedHeaders=host;x-amz-date, "
		 "Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"},
		{"post-x-www-form-urlencoded", &suite_key, SUITE_DATE,
		 {"POST", "/", NULL, 0, h_form, 3, form_hash},
		 "POST\n/\n\ncontent-type:application/x-www-form-urlencoded\nhost:example.amazonaws.com\n"
		 "x-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n"
		 "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
		 "42a5e5bb34198acb3e84da4f085bb7927f2bc277ca766e6d19c73c2154021281",
		 "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
		 "SignedHeaders=content-type;host;x-amz-date, "
		 "Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"},
	};
	for (size_t i = 0; i < ELEMENTSOF(v); i++)
		check_vector(&v[i]);
}

static void test_s3_examples(void)
{
	static const SigV4Pair h_get[] = {
		{"Host", "examplebucket.s3.amazonaws.com"},
		{"Range", "bytes=0-9"},
		{"x-amz-content-sha256", SIGV4_EMPTY_SHA256},
		{"x-amz-date", S3_DATE},
	};
	static const SigV4Pair h_put[] = {
		{"Host", "examplebucket.s3.amazonaws.com"},
		{"Date", "Fri, 24 May 2013 00:00:00 GMT"},
		{"x-amz-date", S3_DATE},
		{"x-amz-storage-class", "REDUCED_REDUNDANCY"},
		{"x-amz-content-sha256", "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"},
	};
	static const SigV4Pair h_bucket[] = {
		{"Host", "examplebucket.s3.amazonaws.com"},
		{"x-amz-date", S3_DATE},
		{"x-amz-content-sha256", SIGV4_EMPTY_SHA256},
	};
	static const SigV4Pair q_lifecycle[] = {{"lifecycle", ""}};
	static const SigV4Pair q_list[] = {{"prefix", "J"}, {"max-keys", "2"}};
	char put_hash[65];
	sigv4_sha256_hex("Welcome to Amazon S3.", 21, put_hash);
	CHECK_EQ_STR(put_hash, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");

	const Vector v[] = {
		{"s3 GET Object", &s3_key, S3_DATE,
		 {"GET", "/test.txt", NULL, 0, h_get, 4, SIGV4_EMPTY_SHA256},
		 "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
		 "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
		 "x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n"
		 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		 "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972",
		 "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
		 "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
		 "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"},
		{"s3 PUT Object", &s3_key, S3_DATE,
		 {"PUT", "/test$file.text", NULL, 0, h_put, 5, put_hash},
		 "PUT\n/test%24file.text\n\ndate:Fri, 24 May 2013 00:00:00 GMT\n"
		 "host:examplebucket.s3.amazonaws.com\n"
		 "x-amz-content-sha256:44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072\n"
		 "x-amz-date:20130524T000000Z\nx-amz-storage-class:REDUCED_REDUNDANCY\n\n"
		 "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class\n"
		 "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072",
		 "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d",
		 "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
		 "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class, "
		 "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"},
		{"s3 GET Bucket Lifecycle", &s3_key, S3_DATE,
		 {"GET", "/", q_lifecycle, 1, h_bucket, 3, SIGV4_EMPTY_SHA256},
		 "GET\n/\nlifecycle=\nhost:examplebucket.s3.amazonaws.com\n"
		 "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
		 "x-amz-date:20130524T000000Z\n\nhost;x-amz-content-sha256;x-amz-date\n"
		 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		 "9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca",
		 "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
		 "SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
		 "Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"},
		{"s3 Get Bucket (List Objects)", &s3_key, S3_DATE,
		 {"GET", "/", q_list, 2, h_bucket, 3, SIGV4_EMPTY_SHA256},
		 "GET\n/\nmax-keys=2&prefix=J\nhost:examplebucket.s3.amazonaws.com\n"
		 "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
		 "x-amz-date:20130524T000000Z\n\nhost;x-amz-content-sha256;x-amz-date\n"
		 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		 "df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7",
		 "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
		 "SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
		 "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"},
	};
	for (size_t i = 0; i < ELEMENTSOF(v); i++)
		check_vector(&v[i]);
}

static void test_signing_key(void)
{
	/* AWS General Reference, "Examples of how to derive a signing key" */
	uint8_t k[32];
	char hex[65];
	sigv4_signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam",
			  k);
	hex_encode(k, 32, hex);
	CHECK_EQ_STR(hex, "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");
}

static void test_encoding(void)
{
	char *s = NULL;
	CHECK_EQ_INT(sigv4_uri_encode("a b/c~d+e$\xC3\xA9", true, &s), 0);
	CHECK_EQ_STR(s, "a%20b/c~d%2Be%24%C3%A9");
	free(s);
	CHECK_EQ_INT(sigv4_uri_encode("a/b=c", false, &s), 0);
	CHECK_EQ_STR(s, "a%2Fb%3Dc");
	free(s);
	{
		/* the S3 list request's parameters: continuation tokens carry '/', '+', '=' */
		const SigV4Pair q[] = {{"prefix", "repo/packs/"},
				       {"list-type", "2"},
				       {"continuation-token", "1/a+b=="},
				       {"uploads", NULL}};
		CHECK_EQ_INT(sigv4_canonical_query(q, ELEMENTSOF(q), &s), 0);
		CHECK_EQ_STR(s, "continuation-token=1%2Fa%2Bb%3D%3D&list-type=2&prefix=repo%2Fpacks%2F&"
				"uploads=");
		free(s);
	}
	CHECK_EQ_INT(sigv4_canonical_query(NULL, 0, &s), 0);
	CHECK_EQ_STR(s, "");
	free(s);
	{
		/* UNSIGNED-PAYLOAD is the last line as given */
		const SigV4Pair h[] = {{"host", "h"}, {"x-amz-date", SUITE_DATE}};
		const SigV4Request req = {"GET", "/k", NULL, 0, h, 2, SIGV4_UNSIGNED_PAYLOAD};
		CHECK_EQ_INT(sigv4_canonical_request(&req, &s), 0);
		CHECK_EQ_STR(s, "GET\n/k\n\nhost:h\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n"
				"UNSIGNED-PAYLOAD");
		free(s);
	}
	{
		/* bad input */
		const SigV4Pair h[] = {{"", "x"}};
		const SigV4Pair q[] = {{NULL, "x"}};
		const SigV4Request no_slash = {"GET", "k", NULL, 0, NULL, 0, SIGV4_UNSIGNED_PAYLOAD};
		const SigV4Request bad_header = {"GET", "/k", NULL, 0, h, 1, SIGV4_UNSIGNED_PAYLOAD};
		const SigV4Request bad_query = {"GET", "/k", q, 1, NULL, 0, SIGV4_UNSIGNED_PAYLOAD};
		CHECK_EQ_INT(sigv4_canonical_request(&no_slash, &s), -EINVAL);
		CHECK_EQ_INT(sigv4_canonical_request(&bad_header, &s), -EINVAL);
		CHECK_EQ_INT(sigv4_canonical_request(&bad_query, &s), -EINVAL);
		CHECK_EQ_INT(sigv4_authorization(&bad_header, &suite_key, SUITE_DATE, &s), -EINVAL);
		const SigV4Request ok = {"GET", "/k", NULL, 0, NULL, 0, SIGV4_UNSIGNED_PAYLOAD};
		CHECK_EQ_INT(sigv4_authorization(&ok, &suite_key, "2015-08-30", &s), -EINVAL);
	}
}

int main(void)
{
	test_suite();
	test_s3_examples();
	test_signing_key();
	test_encoding();
	return test_finish();
}
