/*  log: JSON-lines logger. Each line is built as a jansson object and written with one
    fputs under a lock so lines from several threads never interleave. */
#include "log.h"

#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static char s_service[64] = "berth";
static char s_instance[128] = "";
static log_level_t s_level = BERTH_LOG_INFO;
static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static const char *s_names[] = { "debug", "info", "warn", "error" };

void log_init(const char *service, const char *instance)
{
    snprintf(s_service, sizeof s_service, "%s", service ? service : "berth");
    snprintf(s_instance, sizeof s_instance, "%s", instance ? instance : "");
}

const char *log_service(void)
{
    return s_service;
}

int log_set_level(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (name && strcmp(name, s_names[i]) == 0) {
            s_level = (log_level_t)i;
            return 0;
        }
    return -1;
}

void log_emit(log_level_t level, const char *request_id, const char *msg, const char *fields, ...)
{
    if (level < s_level) {
        /* "o" hands a reference to the line: take it even when the line is not written. */
        if (fields && strchr(fields, 'o')) {
            va_list ap;
            va_start(ap, fields);
            json_error_t err;
            json_decref(json_vpack_ex(&err, 0, fields, ap));
            va_end(ap);
        }
        return;
    }
    json_t *extra = NULL;
    if (fields) {
        va_list ap;
        va_start(ap, fields);
        json_error_t err;
        extra = json_vpack_ex(&err, 0, fields, ap);
        va_end(ap);
    }
    json_t *line = json_object();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char stamp[40];
    size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp + n, sizeof stamp - n, ".%03ldZ", ts.tv_nsec / 1000000);

    json_object_set_new(line, "time", json_string(stamp));
    json_object_set_new(line, "level", json_string(s_names[level]));
    json_object_set_new(line, "service", json_string(s_service));
    json_object_set_new(line, "instance", json_string(s_instance));
    if (request_id && *request_id)
        json_object_set_new(line, "request_id", json_string(request_id));
    json_object_set_new(line, "msg", json_string(msg ? msg : ""));
    if (json_is_object(extra))
        json_object_update(line, extra);
    json_decref(extra);

    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(line);
    if (!text)
        return;
    pthread_mutex_lock(&s_lock);
    fputs(text, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    pthread_mutex_unlock(&s_lock);
    free(text);
}
