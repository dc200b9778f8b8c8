/* The config file: see tools/config.h. */
#include "tools/config.h"
#include "common/log.h"
#include "common/util.h"
#include "tools/cli.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONFIG_MAX_BYTES (64 * 1024)
#define CONFIG_MAX_INSTANCES 64

/* Top-level keys, and whether a value of theirs is a secret (the file must be 0600). */
static const struct {
	const char *key;
	bool secret;
} top_keys[] = {
	{"repo", false},	    {"jobs", false},	     {"cache-dir", false},
	{"ca-file", false},	    {"passphrase-file", false}, {"s3-endpoint", false},
	{"s3-region", false},	    {"s3-uri-style", false},
	{"aws-access-key-id", false}, {"aws-secret-access-key", true}, {"aws-session-token", true},
	{"log-level", false},	    {"log-file", false},	{"keep-last", false},
	{"keep-within", false},	    {"poll-interval", false},
};

struct Config {
	char *path;
	char *text; /* the file's bytes; keys and values point into it */
	const char *values[ELEMENTSOF(top_keys)];
	ConfigInstance instances[CONFIG_MAX_INSTANCES];
	size_t n_instances;
	const char *secret; /* the first secret setting, for the permission check */
};

static Config the_config;
static int the_rc = -1; /* exit code of the one load; -1 before it */

const char *config_path(const Config *c) { return c->path; }
size_t config_n_instances(const Config *c) { return c->n_instances; }
const ConfigInstance *config_instance_at(const Config *c, size_t i) { return &c->instances[i]; }

const char *config_setting(const Config *c, const char *key)
{
	for (size_t i = 0; i < ELEMENTSOF(top_keys); i++)
		if (!strcmp(top_keys[i].key, key))
			return c->values[i];
	return NULL;
}

const ConfigInstance *config_instance(const Config *c, const char *name)
{
	for (size_t i = 0; i < c->n_instances; i++)
		if (!strcmp(c->instances[i].name, name))
			return &c->instances[i];
	return NULL;
}

/* ---- parsing ---- */

typedef struct Parser {
	Config *c;
	int line;
	ConfigInstance *section; /* NULL: top level */
} Parser;

static int bad_line(const Parser *p, const char *what, const char *name)
{
	cli_error("config file \"%s\", line %d: %s%s%s%s", p->c->path, p->line, what,
		  name ? " \"" : "", name ? name : "", name ? "\"" : "");
	return EXIT_USAGE;
}

static char *trim(char *s)
{
	char *end;
	while (isspace((unsigned char)*s))
		s++;
	end = s + strlen(s);
	while (end > s && isspace((unsigned char)end[-1]))
		*--end = 0;
	return s;
}

/* An instance name as backup --instance takes it: text without '/', blanks or controls. */
static bool instance_name_ok(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s == '/' || isspace((unsigned char)*s) || iscntrl((unsigned char)*s))
			return false;
	return true;
}

static int parse_section(Parser *p, char *s)
{
	size_t n = strlen(s);
	if (s[n - 1] != ']')
		return bad_line(p, "expected \"[instance]\"", NULL);
	s[n - 1] = 0;
	s = trim(s + 1);
	if (!instance_name_ok(s))
		return bad_line(p, "invalid instance name", s);
	if (config_instance(p->c, s))
		return bad_line(p, "instance configured twice:", s);
	if (p->c->n_instances == CONFIG_MAX_INSTANCES)
		return bad_line(p, "too many instances (64 at most)", NULL);
	p->section = &p->c->instances[p->c->n_instances++];
	p->section->name = s;
	return EXIT_OK;
}

static int set_once(const Parser *p, const char **slot, const char *key, const char *value)
{
	if (*slot)
		return bad_line(p, "setting given twice:", key);
	*slot = value;
	return EXIT_OK;
}

/* keep-last: 1 to 1,000,000; keep-within: a positive duration */
static int retention_value_check(const Parser *p, const char *key, const char *value)
{
	int64_t d;
	char *end;
	unsigned long long n;
	if (!strcmp(key, "keep-last")) {
		n = strtoull(value, &end, 10);
		if (*value < '0' || *value > '9' || *end || n < 1 || n > 1000000)
			return bad_line(p, "invalid keep-last (1 to 1000000):", value);
	} else if (!strcmp(key, "keep-within")) {
		if (parse_duration(value, &d) < 0 || d <= 0 || d > INT64_MAX / 1000000000)
			return bad_line(p, "invalid keep-within (a duration such as 7d or 2w):", value);
	}
	return EXIT_OK;
}

static int set_instance_key(Parser *p, const char *key, const char *value)
{
	ConfigInstance *in = p->section;
	int rc = retention_value_check(p, key, value);
	if (rc != EXIT_OK)
		return rc;
	if (!strcmp(key, "keep-last"))
		return set_once(p, &in->keep_last, key, value);
	if (!strcmp(key, "keep-within"))
		return set_once(p, &in->keep_within, key, value);
	if (!strcmp(key, "conninfo")) {
		if (strstr(value, "password") && !p->c->secret)
			p->c->secret = "conninfo with a password";
		return set_once(p, &in->conninfo, key, value);
	}
	if (!strcmp(key, "pgdata"))
		return set_once(p, &in->pgdata, key, value);
	if (!strcmp(key, "extra-dir")) {
		if (in->n_extra_dirs == CONFIG_MAX_EXTRA_DIRS)
			return bad_line(p, "too many extra-dir settings (16 at most)", NULL);
		in->extra_dirs[in->n_extra_dirs++] = value;
		return EXIT_OK;
	}
	for (size_t i = 0; i < ELEMENTSOF(top_keys); i++)
		if (!strcmp(key, top_keys[i].key))
			return bad_line(p, "a top-level setting inside an instance section:", key);
	return bad_line(p, "unknown setting", key);
}

static bool jobs_ok(const char *v)
{
	char *end;
	long n = strtol(v, &end, 10);
	return !*end && n >= 1 && n <= 256;
}

static int set_top_key(Parser *p, const char *key, const char *value)
{
	for (size_t i = 0; i < ELEMENTSOF(top_keys); i++) {
		if (strcmp(key, top_keys[i].key) != 0)
			continue;
		if (top_keys[i].secret && !p->c->secret)
			p->c->secret = top_keys[i].key;
		if (!strcmp(key, "jobs") && !jobs_ok(value))
			return bad_line(p, "invalid number of jobs (1-256):", value);
		if (retention_value_check(p, key, value) != EXIT_OK)
			return EXIT_USAGE;
		if (!strcmp(key, "log-level") && log_level_parse(value, &(LogLevel){0}) < 0)
			return bad_line(p, "invalid log-level (error, warning, info or debug):", value);
		return set_once(p, &p->c->values[i], key, value);
	}
	if (!strcmp(key, "conninfo") || !strcmp(key, "pgdata") || !strcmp(key, "extra-dir"))
		return bad_line(p, "an instance setting outside an instance section:", key);
	return bad_line(p, "unknown setting", key);
}

static int parse_line(Parser *p, char *s)
{
	char *eq, *key, *value;
	s = trim(s);
	if (!*s || *s == '#' || *s == ';')
		return EXIT_OK;
	if (*s == '[')
		return parse_section(p, s);
	eq = strchr(s, '=');
	if (!eq)
		return bad_line(p, "expected \"key = value\" or \"[instance]\"", NULL);
	*eq = 0;
	key = trim(s);
	value = trim(eq + 1);
	if (!*key || strspn(key, "abcdefghijklmnopqrstuvwxyz0123456789-_") != strlen(key))
		return bad_line(p, "expected \"key = value\" or \"[instance]\"", NULL);
	for (char *k = key; *k; k++)
		if (*k == '_')
			*k = '-';
	if (!*value)
		return bad_line(p, "empty value for", key);
	if (!strcmp(key, "s3-ca-file")) /* the name earlier versions read */
		return set_top_key(p, "ca-file", value);
	return p->section ? set_instance_key(p, key, value) : set_top_key(p, key, value);
}

static int parse(Config *c)
{
	Parser p = {.c = c};
	char *line = c->text, *next;
	int rc = EXIT_OK;
	for (; line && rc == EXIT_OK; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = 0;
		p.line++;
		rc = parse_line(&p, line);
	}
	return rc;
}

/* ---- loading ---- */

static char *user_config_path(void)
{
	const char *x = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
	if (x && *x == '/')
		return xasprintf("%s/pgbakfs/pgbakfs.conf", x);
	if (!home || !*home) {
		struct passwd *pw = getpwuid(getuid());
		home = pw ? pw->pw_dir : "/";
	}
	return xasprintf("%s/.config/pgbakfs/pgbakfs.conf", home);
}

/* The file to read, and whether it must exist. */
static char *config_file_path(bool *ret_must_exist)
{
	const char *given = cli_config_file(), *env = getenv("PGBAKFS_CONFIG");
	*ret_must_exist = true;
	if (given)
		return xstrdup(given);
	if (env && *env)
		return xstrdup(env);
	*ret_must_exist = false;
	if (geteuid() == 0 && access("/etc/pgbakfs/pgbakfs.conf", F_OK) == 0)
		return xstrdup("/etc/pgbakfs/pgbakfs.conf");
	return user_config_path();
}

static int load(Config *c)
{
	bool must_exist;
	struct stat st;
	size_t len = 0;
	int fd, r;

	c->path = config_file_path(&must_exist);
	fd = open(c->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		/* the default path of a user whose HOME is another's (runuser keeps
		 * root's HOME for PostgreSQL's restore_command): as if there were none */
		if (!must_exist && (errno == ENOENT || errno == EACCES || errno == ENOTDIR)) {
			log_debug("no config file: \"%s\": %m", c->path);
			free(c->path);
			c->path = NULL;
			return EXIT_OK;
		}
		cli_error("could not open the config file \"%s\": %m", c->path);
		return EXIT_FAIL;
	}
	r = fstat(fd, &st) < 0 ? -errno : 0;
	close(fd);
	if (r == 0 && S_ISDIR(st.st_mode))
		r = -EISDIR;
	if (r == 0)
		r = file_read_all(c->path, CONFIG_MAX_BYTES, &c->text, &len);
	if (r < 0) {
		cli_error("could not read the config file \"%s\": %s", c->path, strerror(-r));
		return EXIT_FAIL;
	}
	if (memchr(c->text, 0, len)) {
		cli_error("config file \"%s\" is not text", c->path);
		return EXIT_USAGE;
	}
	r = parse(c);
	if (r == EXIT_OK && c->secret && S_ISREG(st.st_mode) && (st.st_mode & 077)) {
		cli_error("config file \"%s\" holds a secret (%s) and is readable by others", c->path,
			  c->secret);
		cli_hint("chmod 600 %s", c->path);
		return EXIT_USAGE;
	}
	return r;
}

int cli_config(const Config **ret)
{
	if (the_rc < 0)
		the_rc = load(&the_config);
	*ret = &the_config;
	return the_rc;
}

/* ---- what commands ask ---- */

static void list_instances(const Config *c, char *buf, size_t size)
{
	size_t used = 0;
	buf[0] = 0;
	for (size_t i = 0; i < c->n_instances && used < size; i++)
		used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? ", " : "",
					 c->instances[i].name);
}

int cli_config_instance(const char *cmd, const char *name, const ConfigInstance **ret)
{
	const Config *c;
	char names[512];
	int rc = cli_config(&c);

	*ret = NULL;
	if (rc != EXIT_OK)
		return rc;
	if (name) {
		*ret = config_instance(c, name);
		if (*ret)
			return EXIT_OK;
		if (!c->n_instances)
			return cli_usage(cmd, "no instance \"%s\" is configured (no config file section)",
					 name);
		list_instances(c, names, sizeof(names));
		return cli_usage(cmd, "no instance \"%s\" in the config file \"%s\" (it has: %s)", name,
				 c->path, names);
	}
	if (c->n_instances == 1)
		*ret = &c->instances[0];
	else if (c->n_instances > 1) {
		list_instances(c, names, sizeof(names));
		return cli_usage(cmd, "several instances are configured (%s): pass --instance NAME",
				 names);
	}
	return EXIT_OK;
}

int cli_logs_setup(const char *cmd)
{
	const Config *c;
	const char *level = cli_log_level_option(), *file = cli_log_file_option();
	LogLevel l = LOG_INFO;
	int r, rc = cli_config(&c);

	if (rc != EXIT_OK)
		return rc;
	if (!level && !getenv("PGBAKFS_DEBUG"))
		level = config_setting(c, "log-level");
	if (level && log_level_parse(level, &l) < 0) {
		cli_error("invalid --log-level \"%s\": error, warning, info or debug", level);
		return EXIT_USAGE;
	}
	if (!level && getenv("PGBAKFS_DEBUG"))
		l = LOG_DEBUG;
	log_set_level(l);
	if (!file)
		file = config_setting(c, "log-file");
	if (file && (r = log_to_file(file)) < 0) {
		cli_error("could not open the log file \"%s\": %s", file, strerror(-r));
		return EXIT_FAIL;
	}
	char line[128];
	snprintf(line, sizeof(line), "%s: started", cmd);
	log_file_line(LOG_INFO, line);
	return EXIT_OK;
}

int cli_config_jobs(void)
{
	const Config *c;
	const char *v;
	if (cli_config(&c) != EXIT_OK || !(v = config_setting(c, "jobs")))
		return 0;
	return (int)strtol(v, NULL, 10); /* checked when read */
}
