/*  clock: platform time as an offset and a scale over the real clock. Set once at start (before
    any thread reads it) from the service's settings; read everywhere a time is stamped or a
    lease timer is scored. */
#include "clock.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int64_t s_offset_ms; /* added to the scaled time */
static double s_scale = 1;  /* platform ms per real ms */
static int64_t s_origin_ms; /* real Unix ms from which the scale counts */

int64_t clock_at(int64_t real_ms)
{
    if (s_scale == 1)
        return real_ms + s_offset_ms;
    return s_origin_ms + (int64_t)llround((double)(real_ms - s_origin_ms) * s_scale) + s_offset_ms;
}

int64_t clock_now_ms(void)
{
    return clock_at(util_now_ms());
}

int64_t clock_real_delay(int64_t platform_ms)
{
    if (platform_ms <= 0)
        return 0;
    return (int64_t)ceil((double)platform_ms / s_scale);
}

int clock_set(int64_t offset_ms, double scale, int64_t origin_ms)
{
    if (!(scale > 0 && scale <= 1000000) || origin_ms < 0)
        return -1;
    s_offset_ms = offset_ms;
    s_scale = scale;
    s_origin_ms = origin_ms;
    return 0;
}

double clock_scale(void)
{
    return s_scale;
}

void clock_declare(config_t *config)
{
    config_declare(config, "clock_offset_ms", "0", 0);
    config_declare(config, "clock_scale", "1", 0);
    config_declare(config, "clock_origin_ms", NULL, 0);
}

int clock_configure(config_t *config)
{
    int64_t offset = 0, origin = 0;
    if (config_int(config, "clock_offset_ms", -(INT64_C(1) << 50), INT64_C(1) << 50, &offset))
        return -1;
    const char *text = config_get(config, "clock_scale");
    char *end = NULL;
    errno = 0;
    double scale = text ? strtod(text, &end) : 0;
    if (!text || !*text || *end || errno || !(scale > 0 && scale <= 1000000)) {
        log_error(NULL, "clock_scale must be a number above 0 and at most 1000000", "{s:s?}",
                  "clock_scale", text);
        return -1;
    }
    if (config_get(config, "clock_origin_ms")) {
        if (config_int(config, "clock_origin_ms", 0, INT64_C(1) << 50, &origin))
            return -1;
    } else if (scale != 1) {
        log_error(NULL, "clock_scale other than 1 needs clock_origin_ms, the same on every service",
                  "{s:s}", "clock_scale", text);
        return -1;
    }
    return clock_set(offset, scale, origin);
}

int64_t clock_month(int64_t ms, char month[8])
{
    time_t t = (time_t)((ms >= 0 ? ms : 0) / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    if (month)
        snprintf(month, 8, "%04u-%02u", (unsigned)(tm.tm_year + 1900) % 10000u,
                 (unsigned)(tm.tm_mon + 1) % 100u);
    tm.tm_mday = 1;
    tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
    return (int64_t)timegm(&tm) * 1000;
}
