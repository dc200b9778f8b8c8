#include "common/log.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static LogLevel log_level = LOG_INFO;
static const char *log_prefix = "pgbakfs";
static bool log_syslog;
static int log_fd = -1;
static const char *const level_names[] = {"debug", "info", "warning", "error"};

/* log_syslog.c: <syslog.h> defines LOG_INFO & co. too, so it lives apart */
void log_syslog_open(const char *ident);
void log_syslog_line(int level, const char *line);

void log_to_syslog(const char *ident)
{
	log_syslog_open(ident);
	log_syslog = true;
}

int log_to_file(const char *path)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
	if (fd < 0)
		return -errno;
	if (log_fd >= 0)
		close(log_fd);
	log_fd = fd;
	return 0;
}

bool log_has_file(void) { return log_fd >= 0; }

int log_level_parse(const char *s, LogLevel *ret)
{
	for (int i = LOG_DEBUG; i <= LOG_ERROR; i++)
		if (!strcmp(s, level_names[i])) {
			*ret = (LogLevel)i;
			return 0;
		}
	return -EINVAL;
}

void log_file_line(LogLevel level, const char *line)
{
	struct timespec ts;
	struct tm tm;
	char buf[4400];
	int n;

	if (log_fd < 0 || level < log_level)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ [%ld] %s: %s\n",
		     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		     ts.tv_nsec / 1000000, (long)getpid(), level_names[level], line);
	if (n > (int)sizeof(buf) - 1) { /* cut: still one line */
		n = (int)sizeof(buf) - 1;
		buf[n - 1] = '\n';
	}
	/* one write per line: O_APPEND keeps concurrent processes' lines whole */
	if (write(log_fd, buf, (size_t)n) < 0)
		return;
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
	log_file_line(level, line);
	errno = saved;
}

void pgbakfs_check_failed(const char *expr, const char *file, int line)
{
	fprintf(stderr, "%s: internal check failed: %s (%s:%d)\n", log_prefix, expr, file, line);
	abort();
}
