/* The syslog sink of log.c, apart because <syslog.h> and log.h share names. */
#include <syslog.h>

void log_syslog_open(const char *ident);
void log_syslog_line(int level, const char *line);

void log_syslog_open(const char *ident) { openlog(ident, LOG_PID, LOG_DAEMON); }

void log_syslog_line(int level, const char *line)
{
	/* log.h's order: debug, info, warning, error */
	static const int prio[] = {LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR};
	syslog(prio[level >= 0 && level < 4 ? level : 3], "%s", line);
}
