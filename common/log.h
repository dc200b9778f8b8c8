/*
 * Messages, PostgreSQL/git style: lower case, no final period, quoted names.
 * Thread-safe (one fprintf per line). Library code logs only diagnostics that
 * cannot travel in an error code (a bad chunk found during a long read);
 * tools/ prints the one error line of a failed command.
 */
#pragma once

#include "common/common.h"

typedef enum { LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERROR } LogLevel;

void log_set_level(LogLevel level);
LogLevel log_get_level(void);
void log_set_prefix(const char *prefix);
/* From now on, send messages to syslog (a daemon without a terminal). */
void log_to_syslog(const char *ident);
/*
 * Also append every message at or above the level to path, one line each:
 * "2026-12-05T16:05:00.123Z [pid] warning: ...". 0 or -errno.
 */
int log_to_file(const char *path);
bool log_has_file(void);
/* A line for the log file only (nothing on stderr): no-op without one or below the level. */
void log_file_line(LogLevel level, const char *line);
/* "error", "warning", "info", "debug" -> level; -EINVAL otherwise. */
int log_level_parse(const char *s, LogLevel *ret);
void log_msg(LogLevel level, const char *fmt, ...) _printf_(2, 3);

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
