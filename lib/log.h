/*  log: JSON lines on stdout, one object per event: time, level, service, instance,
    request_id, msg and the caller's fields. Library code logs at debug only. */
#ifndef BERTH_LOG_H
#define BERTH_LOG_H

#include <jansson.h>

typedef enum {
    BERTH_LOG_DEBUG = 0,
    BERTH_LOG_INFO = 1,
    BERTH_LOG_WARN = 2,
    BERTH_LOG_ERROR = 3
} log_level_t;

/* Name the process for every line that follows (strings are copied). */
void log_init(const char *service, const char *instance);
/* The service name given to log_init ("berth" before it). */
const char *log_service(void);

/* Set the minimum level from its name ("debug", "info", "warn", "error"); -1 if unknown. */
int log_set_level(const char *name);

/* Emit one line. fields is a jansson json_pack format for an object ("{s:s, s:i}") or NULL. */
void log_emit(log_level_t level, const char *request_id, const char *msg, const char *fields, ...);

#define log_debug(rid, msg, ...) log_emit(BERTH_LOG_DEBUG, rid, msg, __VA_ARGS__)
#define log_info(rid, msg, ...)  log_emit(BERTH_LOG_INFO, rid, msg, __VA_ARGS__)
#define log_warn(rid, msg, ...)  log_emit(BERTH_LOG_WARN, rid, msg, __VA_ARGS__)
#define log_error(rid, msg, ...) log_emit(BERTH_LOG_ERROR, rid, msg, __VA_ARGS__)

#endif
