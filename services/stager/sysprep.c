/*  sysprep: the identity operations as a table of (operation, file pattern, action), the same
    files virt-sysprep's operations of those names touch on a Linux guest. A manifest is
    checked once at import and applied here at staging, file by file, in table order. */
#include "sysprep.h"
#include "limit.h"

#include <fnmatch.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

const char SYSPREP_OPERATIONS[] =
    "machine-id,ssh-hostkeys,net-hwaddr,udev-persistent-net,dhcp-client-state,logfiles";

typedef enum {
    S_REMOVE,      /* the file goes */
    S_EMPTY,       /* the file stays, with nothing in it */
    S_DROP_HWADDR, /* the file stays without its HWADDR= lines */
} s_action_t;

/* Patterns are fnmatch(3)'s; `deep` lets '*' match across '/' (a whole directory tree). */
static const struct {
    const char *operation;
    const char *pattern;
    int deep;
    s_action_t action;
} s_rules[] = {
    { "machine-id", "/etc/machine-id", 0, S_EMPTY },
    { "machine-id", "/var/lib/dbus/machine-id", 0, S_REMOVE },
    { "ssh-hostkeys", "/etc/ssh/*_host_*", 0, S_REMOVE },
    { "net-hwaddr", "/etc/sysconfig/network-scripts/ifcfg-*", 0, S_DROP_HWADDR },
    { "udev-persistent-net", "/etc/udev/rules.d/70-persistent-net.rules", 0, S_REMOVE },
    { "udev-persistent-net", "/etc/udev/rules.d/75-persistent-net-generator.rules", 0, S_REMOVE },
    { "dhcp-client-state", "/var/lib/dhclient/*", 1, S_REMOVE },
    { "dhcp-client-state", "/var/lib/dhcp/*", 1, S_REMOVE },
    { "dhcp-client-state", "/var/lib/NetworkManager/*.lease", 0, S_REMOVE },
    { "logfiles", "/var/log/*", 1, S_REMOVE },
    { "logfiles", "/root/anaconda-ks.cfg", 0, S_REMOVE },
};
#define S_RULES (sizeof s_rules / sizeof s_rules[0])

int sysprep_manifest_check(const char *text, char **normalized, berth_error_t *error)
{
    size_t len = text ? strlen(text) : 0;
    if (len > LIMIT_IMAGE_MANIFEST_MAX)
        return error_field(error, "manifest", "manifest is longer than %d bytes",
                           LIMIT_IMAGE_MANIFEST_MAX);
    json_error_t jerr;
    json_t *root = json_loadb(text ? text : "", len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *files = root ? json_object_get(root, "files") : NULL;
    if (!json_is_object(root) || json_object_size(root) != 1 || !json_is_array(files)) {
        json_decref(root);
        return error_field(error, "manifest",
                           "manifest must be an object {\"files\": [{\"path\", \"content\"}]}");
    }
    if (json_array_size(files) > LIMIT_IMAGE_MANIFEST_FILES_MAX) {
        json_decref(root);
        return error_field(error, "manifest", "a manifest lists at most %d files",
                           LIMIT_IMAGE_MANIFEST_FILES_MAX);
    }
    size_t i, j;
    json_t *file;
    json_array_foreach(files, i, file)
    {
        json_t *path = json_object_get(file, "path"), *content = json_object_get(file, "content");
        size_t keys = json_object_size(file);
        const char *p = json_string_value(path);
        if (!json_is_object(file) || !p || p[0] != '/' || strstr(p, "/../") ||
            strlen(p) > LIMIT_IMAGE_PATH_MAX || (content && !json_is_string(content)) ||
            keys != (content ? 2u : 1u)) {
            json_decref(root);
            return error_field(error, "manifest",
                               "manifest file %zu: an object with an absolute \"path\" and an "
                               "optional string \"content\", nothing else",
                               i);
        }
        for (j = 0; j < i; j++)
            if (strcmp(json_string_value(json_object_get(json_array_get(files, j), "path")), p) ==
                0) {
                error_field(error, "manifest", "manifest lists %s twice", p);
                json_decref(root); /* p is root's */
                return -1;
            }
    }
    *normalized = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!*normalized)
        return error_set(error, "INTERNAL", "out of memory");
    return 0;
}

/* The first rule whose pattern path matches, or -1. */
static int s_rule(const char *path)
{
    for (size_t r = 0; r < S_RULES; r++)
        if (fnmatch(s_rules[r].pattern, path, s_rules[r].deep ? 0 : FNM_PATHNAME) == 0)
            return (int)r;
    return -1;
}

/* content without its HWADDR= lines (caller frees). */
static char *s_drop_hwaddr(const char *content)
{
    char *out = malloc(strlen(content) + 1), *at = out;
    if (!out)
        return NULL;
    for (const char *line = content; *line;) {
        const char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) + 1 : strlen(line);
        if (strncmp(line, "HWADDR=", 7) != 0) {
            memcpy(at, line, n);
            at += n;
        }
        line += n;
    }
    *at = '\0';
    return out;
}

int sysprep_manifest_apply(const char *manifest, char **staged, char **report)
{
    json_t *root = json_loads(manifest ? manifest : "", 0, NULL);
    json_t *files = root ? json_object_get(root, "files") : NULL;
    if (!json_is_array(files)) {
        json_decref(root);
        return -1;
    }
    /* One report entry per operation, in the order SYSPREP_OPERATIONS names them. */
    json_t *ops = json_array(), *kept = json_array();
    char names[sizeof SYSPREP_OPERATIONS];
    memcpy(names, SYSPREP_OPERATIONS, sizeof names);
    for (char *save = NULL, *op = strtok_r(names, ",", &save); op && ops;
         op = strtok_r(NULL, ",", &save))
        json_array_append_new(ops, json_pack("{s:s, s:[], s:[], s:[]}", "operation", op, "removed",
                                             "emptied", "edited"));
    int rc = ops && kept ? 0 : -1;
    size_t i;
    json_t *file;
    json_array_foreach(files, i, file)
    {
        if (rc)
            break;
        const char *path = json_string_value(json_object_get(file, "path"));
        int r = path ? s_rule(path) : -1;
        if (r < 0) {
            json_array_append(kept, file);
            continue;
        }
        json_t *entry = NULL;
        for (size_t k = 0; k < json_array_size(ops); k++)
            if (strcmp(json_string_value(json_object_get(json_array_get(ops, k), "operation")),
                       s_rules[r].operation) == 0)
                entry = json_array_get(ops, k);
        const char *content = json_string_value(json_object_get(file, "content"));
        json_t *copy = json_deep_copy(file);
        if (!entry || !copy) {
            json_decref(copy);
            rc = -1;
            break;
        }
        switch (s_rules[r].action) {
        case S_REMOVE:
            json_array_append_new(json_object_get(entry, "removed"), json_string(path));
            json_decref(copy);
            continue;
        case S_EMPTY:
            json_object_set_new(copy, "content", json_string(""));
            json_array_append_new(json_object_get(entry, "emptied"), json_string(path));
            break;
        case S_DROP_HWADDR: {
            char *left = s_drop_hwaddr(content ? content : "");
            if (!left) {
                json_decref(copy);
                rc = -1;
                continue;
            }
            if (content && strcmp(left, content) != 0) {
                json_object_set_new(copy, "content", json_string(left));
                json_array_append_new(json_object_get(entry, "edited"), json_string(path));
            }
            free(left);
            break;
        }
        }
        json_array_append_new(kept, copy);
    }
    json_t *out = rc ? NULL : json_pack("{s:O}", "files", kept);
    *staged = out ? json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    *report = out ? json_dumps(ops, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(out);
    json_decref(kept);
    json_decref(ops);
    json_decref(root);
    if (!*staged || !*report) {
        free(*staged);
        free(*report);
        *staged = *report = NULL;
        return -1;
    }
    return 0;
}

char *sysprep_tool_report(const char *output, size_t len)
{
    json_t *ops = json_array();
    static const char S_MARK[] = "Performing \"";
    for (size_t at = 0; ops && at < len;) {
        const char *hit = memmem(output + at, len - at, S_MARK, sizeof S_MARK - 1);
        if (!hit)
            break;
        const char *name = hit + sizeof S_MARK - 1;
        const char *end = memchr(name, '"', len - (size_t)(name - output));
        if (!end)
            break;
        json_array_append_new(
            ops, json_pack("{s:s%, s:b}", "operation", name, (size_t)(end - name), "performed", 1));
        at = (size_t)(end - output) + 1;
    }
    char *text = ops ? json_dumps(ops, JSON_COMPACT) : NULL;
    json_decref(ops);
    return text;
}
