/*  appspec: an image's applications written as one line of text (the CLI's --apps, an
    upload's `applications` query parameter), read into the array the JSON import takes, with
    the limits that import enforces, so every way of stating an application's need reads and
    refuses it alike. */
#include "appspec.h"

#include "limit.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static json_t *s_refuse(json_t *apps, char *why, size_t why_size, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vsnprintf(why, why_size, format, args);
    va_end(args);
    json_decref(apps);
    return NULL;
}

/* The keys an item may carry after its name: the JSON field each fills and its bound. */
static const struct {
    const char *key;   /* as written: ram=MB */
    const char *field; /* in the JSON array */
    const char *unit;
    int64_t max;
} s_needs[] = {
    { "ram", "min_ram_mb", "MB", LIMIT_RAM_MB_MAX },
    { "disk", "min_disk_gb", "GB", LIMIT_DISK_GB_MAX },
};

json_t *appspec_parse(const char *text, char *why, size_t why_size)
{
    json_t *apps = json_array();
    if (!apps)
        return s_refuse(apps, why, why_size, "out of memory");
    size_t index = 0;
    while (text && *text) {
        size_t len = strcspn(text, ",");
        /* An item: its name and version and two needs, each bounded. */
        char item[4 * LIMIT_IMAGE_TEXT_MAX];
        if (len >= sizeof item)
            return s_refuse(apps, why, why_size, "applications item %zu is over %zu characters",
                            index + 1, sizeof item - 1);
        if (json_array_size(apps) >= LIMIT_IMAGE_APPS_MAX)
            return s_refuse(apps, why, why_size, "at most %d applications", LIMIT_IMAGE_APPS_MAX);
        memcpy(item, text, len);
        item[len] = '\0';
        text += len + (text[len] == ',');
        index++;
        /* The parts, split at each ';' by hand: an empty one (";;", a trailing ';') is a
           mistake to report, not one to skip. */
        char *parts[4], *cut = item;
        size_t n_parts = 0;
        while (cut && n_parts < sizeof parts / sizeof parts[0]) {
            parts[n_parts++] = cut;
            if ((cut = strchr(cut, ';')))
                *cut++ = '\0';
        }
        char *head = parts[0];
        char *eq = strchr(head, '=');
        if (eq)
            *eq++ = '\0';
        if (!*head)
            return s_refuse(apps, why, why_size,
                            "applications item %zu has no name (NAME[=VERSION][;ram=MB][;disk=GB])",
                            index);
        if (cut)
            return s_refuse(apps, why, why_size,
                            "applications item %zu (%s) has more than ram=MB and disk=GB", index,
                            head);
        if (strlen(head) > LIMIT_IMAGE_TEXT_MAX || (eq && strlen(eq) > LIMIT_IMAGE_TEXT_MAX))
            return s_refuse(apps, why, why_size,
                            "applications item %zu: name 1 to %d characters, version at most %d",
                            index, LIMIT_IMAGE_TEXT_MAX, LIMIT_IMAGE_TEXT_MAX);
        json_t *app = json_pack("{s:s}", "name", head);
        if (!app)
            return s_refuse(apps, why, why_size, "out of memory");
        json_array_append_new(apps, app);
        if (eq)
            json_object_set_new(app, "version", json_string(eq));
        for (size_t i = 1; i < n_parts; i++) {
            char *part = parts[i];
            char *value = strchr(part, '=');
            if (value)
                *value++ = '\0';
            size_t k = 0, n = sizeof s_needs / sizeof s_needs[0];
            while (k < n && strcmp(part, s_needs[k].key) != 0)
                k++;
            if (k == n)
                return s_refuse(apps, why, why_size,
                                "applications item %zu (%s): unknown key '%s' (ram=MB or disk=GB)",
                                index, head, part);
            if (json_object_get(app, s_needs[k].field))
                return s_refuse(apps, why, why_size, "applications item %zu (%s): %s given twice",
                                index, head, part);
            int64_t v;
            if (!value || util_parse_int(value, 0, s_needs[k].max, &v) != 0)
                return s_refuse(apps, why, why_size,
                                "applications item %zu (%s): %s must be a whole number of %s, "
                                "0 to %lld",
                                index, head, part, s_needs[k].unit, (long long)s_needs[k].max);
            json_object_set_new(app, s_needs[k].field, json_integer((json_int_t)v));
        }
    }
    return apps;
}
