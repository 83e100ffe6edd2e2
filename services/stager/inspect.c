/*  inspect: path words and qemu-img's JSON. The kernel has the last word on the path
    (openat2 with RESOLVE_BENEATH, in import.c): these checks give a clear refusal for the
    plain mistakes and the plain attacks before anything is opened. */
#include "inspect.h"
#include "util.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

int inspect_path(const char *import_dir, const char *requested, char *rel, size_t rel_size,
                 berth_error_t *error)
{
    if (!requested || !*requested)
        return error_field(error, "path", "path is required: a file under the import directory");
    size_t len = strlen(requested);
    if (len > 1024)
        return error_field(error, "path", "path is longer than 1024 bytes");
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)requested[i] < 0x20 || requested[i] == 0x7f)
            return error_field(error, "path", "path holds a control character");
    const char *p = requested;
    if (*p == '/') {
        size_t dl = strlen(import_dir);
        if (strncmp(p, import_dir, dl) != 0 || p[dl] != '/')
            return error_field(error, "path", "path must lie under the import directory %s",
                               import_dir);
        p += dl + 1;
    }
    size_t at = 0;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return error_field(error, "path", "path may not contain '..'");
        if (n > 0 && !(n == 1 && p[0] == '.')) {
            if (at + n + 2 > rel_size)
                return error_field(error, "path", "path is too long");
            if (at)
                rel[at++] = '/';
            memcpy(rel + at, p, n);
            at += n;
        }
        p += n;
        if (*p == '/')
            p++;
    }
    if (at == 0)
        return error_field(error, "path", "path names the import directory, not a file in it");
    rel[at] = '\0';
    return 0;
}

static int s_unreadable(berth_error_t *error)
{
    return error_field(error, "path", "not a disk image qemu-img can read");
}

int inspect_parse(const char *text, size_t len, inspect_info_t *info, berth_error_t *error)
{
    const char *start = text ? memchr(text, '{', len) : NULL;
    if (!start)
        return s_unreadable(error);
    json_t *j = json_loadb(start, len - (size_t)(start - text), JSON_DISABLE_EOF_CHECK, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return s_unreadable(error);
    }
    memset(info, 0, sizeof *info);
    const char *format = json_string_value(json_object_get(j, "format"));
    json_t *vsize = json_object_get(j, "virtual-size");
    json_t *asize = json_object_get(j, "actual-size");
    if (!format || !*format || strlen(format) >= sizeof info->format || !json_is_integer(vsize) ||
        json_integer_value(vsize) < 0) {
        json_decref(j);
        return s_unreadable(error);
    }
    util_strlcpy(info->format, format, sizeof info->format);
    info->virtual_size = json_integer_value(vsize);
    info->actual_size = json_is_integer(asize) ? json_integer_value(asize) : 0;
    info->backing_file = json_object_get(j, "backing-filename") != NULL ||
                         json_object_get(j, "full-backing-filename") != NULL ||
                         json_object_get(j, "backing-image") != NULL;
    json_t *data = json_object_get(json_object_get(j, "format-specific"), "data");
    info->data_file = json_object_get(data, "data-file") != NULL;
    json_decref(j);
    return 0;
}

int inspect_format_ok(const char *formats, const char *format)
{
    size_t n = strlen(format);
    for (const char *p = formats; p && *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        while (len && *p == ' ')
            p++, len--;
        while (len && p[len - 1] == ' ')
            len--;
        if (n && len == n && strncmp(p, format, n) == 0)
            return 1;
        p = comma ? comma + 1 : p + len;
        if (!comma)
            break;
    }
    return 0;
}

int inspect_check(const inspect_info_t *info, const inspect_rules_t *rules, berth_error_t *error)
{
    if (!inspect_format_ok(rules->formats, info->format)) {
        error_field(error, "path", "format '%s' is not accepted (accepted: %s)", info->format,
                    rules->formats);
        return error_detail(error, "reason", "format");
    }
    if (info->backing_file) {
        error_field(error, "path",
                    "the image names a backing file: only self-contained images "
                    "are accepted");
        return error_detail(error, "reason", "backing_file");
    }
    if (info->data_file) {
        error_field(error, "path",
                    "the image names an external data file: only self-contained "
                    "images are accepted");
        return error_detail(error, "reason", "data_file");
    }
    if (info->virtual_size > rules->max_virtual_size) {
        error_field(error, "path", "virtual size %lld bytes is over the limit of %lld bytes",
                    (long long)info->virtual_size, (long long)rules->max_virtual_size);
        return error_detail(error, "reason", "virtual_size");
    }
    return 0;
}
