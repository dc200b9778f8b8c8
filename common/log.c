#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>

static LogLevel log_level = LOG_INFO;
static const char *log_prefix = "pgbakfs";
static bool log_syslog;

/* log_syslog.c: <syslog.h> defines LOG_INFO & co. too, so it lives apart */
void log_syslog_open(const char *ident);
void log_syslog_line(int level, const char *line);

void log_to_syslog(const char *ident)
{
	log_syslog_open(ident);
	log_syslog = true;
}

void log_set_level(LogLevel level) { log_level = level; }
LogLevel log_get_level(void) { return log_level; }
void log_set_prefix(const char *prefix) { log_prefix = prefix; }

void log_msg(LogLevel level, const char *fmt, ...)
{
	static const char *const names[] = {"debug: ", "", "warning: ", "error: "};
	char line[4096];
	va_list ap;
	int saved = errno;

	if (level < log_level)
		return;
	va_start(ap, fmt);
	errno = saved; /* keep %m meaningful */
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (log_syslog)
		log_syslog_line((int)level, line);
	else
		fprintf(stderr, "%s: %s%s\n", log_prefix, names[level], line);
	errno = saved;
}

void pgbakfs_check_failed(const char *expr, const char *file, int line)
{
	fprintf(stderr, "%s: internal check failed: %s (%s:%d)\n", log_prefix, expr, file, line);
	abort();
}
