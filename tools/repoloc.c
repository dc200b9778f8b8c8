/*
 * From --repo (or PGBAKFS_REPO) to a RepoLocation: a local path, or
 * s3://bucket/prefix with its endpoint, region, addressing style and
 * credentials from the environment or a 0600 config file; plus the options
 * every command takes (--cache-dir, --passphrase-file, --ca-file).
 */
#include "tools/cli.h"
#include "tools/config.h"
#include "common/util.h"
#include "store/crypt.h"

#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static struct {
	const char *cache_dir;
	const char *passphrase_file;
	const char *ca_file;
	const char *config_file;
	const char *log_level;
	const char *log_file;
} common_opts;

static const char *const common_names[] = {"--cache-dir", "--passphrase-file", "--ca-file",
					   "--config", "--log-level", "--log-file"};
/* the ones a command pgbakfs writes for later (restore_command) passes on */
#define N_PASSED_ON 4

static const char **common_slot(size_t i)
{
	const char **slots[] = {&common_opts.cache_dir, &common_opts.passphrase_file,
				&common_opts.ca_file, &common_opts.config_file,
				&common_opts.log_level, &common_opts.log_file};
	return slots[i];
}

int cli_take_common_options(int *argc, char **argv)
{
	int out = 1;
	for (int i = 1; i < *argc; i++) {
		bool taken = false;
		if (strcmp(argv[i], "--") == 0) { /* the rest belongs to another program */
			while (i < *argc)
				argv[out++] = argv[i++];
			break;
		}
		for (size_t k = 0; k < ELEMENTSOF(common_names) && !taken; k++) {
			size_t n = strlen(common_names[k]);
			if (strncmp(argv[i], common_names[k], n) != 0)
				continue;
			if (argv[i][n] == '=') {
				*common_slot(k) = argv[i] + n + 1;
				taken = true;
			} else if (argv[i][n] == 0) {
				if (i + 1 >= *argc) {
					cli_error("option %s needs a value", common_names[k]);
					return EXIT_USAGE;
				}
				*common_slot(k) = argv[++i];
				taken = true;
			}
		}
		if (!taken)
			argv[out++] = argv[i];
	}
	argv[out] = NULL;
	*argc = out;
	return EXIT_OK;
}

const char *cli_passphrase_file(void) { return common_opts.passphrase_file; }
const char *cli_config_file(void) { return common_opts.config_file; }
const char *cli_log_level_option(void) { return common_opts.log_level; }
const char *cli_log_file_option(void) { return common_opts.log_file; }

size_t cli_common_options(const char *ret_names[4], char *ret_values[4])
{
	size_t n = 0;
	for (size_t k = 0; k < N_PASSED_ON; k++) {
		const char *v = *common_slot(k);
		char real[PATH_MAX];
		if (!v)
			continue;
		ret_names[n] = common_names[k];
		ret_values[n++] = xstrdup(realpath(v, real) ? real : v);
	}
	return n;
}

static char *home_path(const char *xdg_var, const char *fallback)
{
	const char *x = getenv(xdg_var), *home = getenv("HOME");
	if (x && *x == '/')
		return xasprintf("%s/pgbakfs", x);
	if (!home || !*home) {
		struct passwd *pw = getpwuid(getuid());
		home = pw ? pw->pw_dir : "/";
	}
	return xasprintf("%s/%s/pgbakfs", home, fallback);
}

char *cli_s3_config_text(const StoreS3Config *s3)
{
	return xasprintf("s3_endpoint = %s\ns3_region = %s\ns3_uri_style = %s\n"
			 "aws_access_key_id = %s\naws_secret_access_key = %s\n%s%s%s",
			 s3->endpoint, s3->region, s3->virtual_host ? "host" : "path",
			 s3->access_key, s3->secret_key,
			 s3->session_token ? "aws_session_token = " : "",
			 s3->session_token ? s3->session_token : "", s3->session_token ? "\n" : "");
}

static const char *pick(const char *env, const char *file_value)
{
	const char *v = getenv(env);
	return v && *v ? v : file_value;
}

static int parse_s3_url(const char *url, CliLocation *cl)
{
	const char *p = url + 5, *slash = strchr(p, '/');
	size_t blen = slash ? (size_t)(slash - p) : strlen(p);

	if (blen < 3 || blen > 63 || strspn(p, "abcdefghijklmnopqrstuvwxyz0123456789.-") < blen) {
		cli_error("invalid S3 repository \"%s\": expected s3://bucket/prefix with a valid bucket name",
			  url);
		return EXIT_USAGE;
	}
	cl->bucket = xasprintf("%.*s", (int)blen, p);
	cl->prefix = xstrdup(slash ? slash + 1 : "");
	size_t n = strlen(cl->prefix);
	while (n && cl->prefix[n - 1] == '/')
		cl->prefix[--n] = 0;
	return EXIT_OK;
}

static int resolve_s3(const char *url, CliLocation *cl)
{
	const Config *conf;
	const char *style, *endpoint, *region;
	int rc = parse_s3_url(url, cl);

	if (rc == EXIT_OK)
		rc = cli_config(&conf);
	if (rc != EXIT_OK)
		return rc;
	endpoint = pick("PGBAKFS_S3_ENDPOINT", config_setting(conf, "s3-endpoint"));
	region = pick("AWS_REGION", pick("AWS_DEFAULT_REGION", config_setting(conf, "s3-region")));
	style = pick("PGBAKFS_S3_URI_STYLE", config_setting(conf, "s3-uri-style"));
	cl->region = xstrdup(region ? region : "us-east-1");
	cl->endpoint = endpoint ? xstrdup(endpoint) : xasprintf("https://s3.%s.amazonaws.com", cl->region);
	if (strncmp(cl->endpoint, "http://", 7) != 0 && strncmp(cl->endpoint, "https://", 8) != 0) {
		cli_error("invalid S3 endpoint \"%s\": expected http://HOST[:PORT] or https://...",
			  cl->endpoint);
		return EXIT_USAGE;
	}
	if (style && strcmp(style, "path") != 0 && strcmp(style, "host") != 0) {
		cli_error("invalid S3 URI style \"%s\" (PGBAKFS_S3_URI_STYLE or s3-uri-style): "
			  "\"path\" or \"host\"", style);
		return EXIT_USAGE;
	}
	/* AWS itself: virtual-host style; a custom endpoint: path style unless told */
	cl->s3.virtual_host = style ? strcmp(style, "host") == 0 : !endpoint;
	const char *ak = pick("AWS_ACCESS_KEY_ID", config_setting(conf, "aws-access-key-id"));
	const char *sk = pick("AWS_SECRET_ACCESS_KEY", config_setting(conf, "aws-secret-access-key"));
	const char *tok = pick("AWS_SESSION_TOKEN", config_setting(conf, "aws-session-token"));
	if (!ak || !sk) {
		cli_error("no S3 credentials for repository \"%s\"", url);
		cli_hint("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or put them in a 0600 config file");
		return EXIT_FAIL;
	}
	cl->access_key = xstrdup(ak);
	cl->secret_key = xstrdup(sk);
	cl->session_token = tok ? xstrdup(tok) : NULL;
	const char *ca = common_opts.ca_file ? common_opts.ca_file
			 : pick("PGBAKFS_S3_CA_FILE", config_setting(conf, "ca-file"));
	cl->ca_file = ca ? xstrdup(ca) : NULL;
	cl->s3 = (StoreS3Config){
		.endpoint = cl->endpoint, .region = cl->region, .bucket = cl->bucket,
		.prefix = cl->prefix, .access_key = cl->access_key, .secret_key = cl->secret_key,
		.session_token = cl->session_token, .ca_file = cl->ca_file,
		.virtual_host = cl->s3.virtual_host,
	};
	cl->loc.s3 = &cl->s3;
	return EXIT_OK;
}

/* A common option's value: the command line's, else the config file's setting. */
static const char *common_or_config(const char *given, const char *key)
{
	const Config *conf;
	if (given || cli_config(&conf) != EXIT_OK)
		return given;
	return config_setting(conf, key);
}

/*
 * The passphrase, when one is given: --passphrase-file (0600), else
 * PGBAKFS_PASSPHRASE, else the config file's passphrase-file.
 */
static int resolve_passphrase(CliLocation *cl)
{
	const char *file = common_opts.passphrase_file;
	int r;
	if (!file && !getenv("PGBAKFS_PASSPHRASE"))
		file = common_or_config(NULL, "passphrase-file");
	r = crypt_passphrase_load(file, &cl->passphrase, &cl->passphrase_len);
	switch (r) {
	case 0:
		cl->loc.passphrase = cl->passphrase;
		cl->loc.passphrase_len = cl->passphrase_len;
		return EXIT_OK;
	case -ENOKEY:
		return EXIT_OK;
	case -EPERM:
		cli_error("passphrase file \"%s\" must be a regular file readable only by its owner", file);
		cli_hint("chmod 600 %s", file);
		return EXIT_FAIL;
	case -EINVAL:
		cli_error("the passphrase%s%s%s is empty", file ? " in \"" : "", file ? file : "",
			  file ? "\"" : "");
		return EXIT_USAGE;
	default:
		cli_error("could not read the passphrase file \"%s\": %s", file ? file : "?", strerror(-r));
		return EXIT_FAIL;
	}
}

int cli_location_resolve(const char *opt, CliLocation *cl)
{
	const char *url = cli_repo_location(opt), *wait = getenv("PGBAKFS_LOCK_WAIT");
	int64_t wait_s = 600;
	int rc;

	*cl = (CliLocation){0};
	if (!url)
		return EXIT_USAGE;
	cl->loc.url = url;
	if (wait && *wait && parse_duration(wait, &wait_s) < 0) {
		cli_error("invalid PGBAKFS_LOCK_WAIT \"%s\": a duration such as 600s or 10m", wait);
		return EXIT_USAGE;
	}
	cl->loc.lock_wait_s = (unsigned)wait_s;
	/* the tests' switches (fault driver, store/backend.h; catalog compaction and
	 * metadata pieces, repo.h):
	 * the library reads no environment for them */
	cl->loc.faults = getenv("PGBAKFS_TEST_FAULTS");
	const char *deltas_max = getenv("PGBAKFS_CATALOG_DELTAS_MAX");
	if (deltas_max && *deltas_max)
		cl->loc.catalog_deltas_max = (unsigned)strtoul(deltas_max, NULL, 10);
	const char *pieces = getenv("PGBAKFS_META_PIECES");
	if (pieces && *pieces)
		cl->loc.meta_pieces = strtoull(pieces, NULL, 10);
	/* S3 and encrypted repositories keep their working catalog here */
	const char *cache_dir = common_or_config(common_opts.cache_dir, "cache-dir");
	cl->cache_dir = cache_dir ? xstrdup(cache_dir) : home_path("XDG_CACHE_HOME", ".cache");
	cl->loc.cache_dir = cl->cache_dir;
	rc = resolve_passphrase(cl);
	if (rc != EXIT_OK)
		return rc;
	if (strncmp(url, "s3://", 5) == 0)
		return resolve_s3(url, cl);
	if (strstr(url, "://")) {
		cli_error("repository \"%s\": only local paths and s3:// URLs are supported", url);
		return EXIT_USAGE;
	}
	cl->loc.path = url;
	return EXIT_OK;
}

void cli_location_clear(CliLocation *cl)
{
	char **v[] = {&cl->bucket, &cl->prefix, &cl->endpoint, &cl->region, &cl->access_key,
		      &cl->secret_key, &cl->session_token, &cl->ca_file, &cl->cache_dir};
	for (size_t i = 0; i < ELEMENTSOF(v); i++) {
		if (*v[i])
			explicit_bzero(*v[i], strlen(*v[i]));
		free(*v[i]);
	}
	if (cl->passphrase)
		crypt_passphrase_free(cl->passphrase, cl->passphrase_len);
	*cl = (CliLocation){0};
}
