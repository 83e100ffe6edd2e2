/*  config: declared keys with defaults, overridden by a ZPL file and then by BERTH_* env. */
#include "config.h"
#include "log.h"
#include "util.h"

#include <assert.h>
#include <ctype.h>
#include <czmq.h>
#include <jansson.h>

typedef struct {
    char *key;
    char *value;        /* NULL when unset */
    const char *origin; /* "default", "file", "env", "set" */
    int secret;         /* masked in logs */
} s_entry_t;

struct _config_t {
    zlistx_t *entries; /* of s_entry_t, in declaration order */
};

static void s_entry_free(void **item)
{
    s_entry_t *e = *item;
    if (e) {
        free(e->key);
        free(e->value);
        free(e);
        *item = NULL;
    }
}

static s_entry_t *s_find(config_t *self, const char *key)
{
    for (s_entry_t *e = zlistx_first(self->entries); e; e = zlistx_next(self->entries))
        if (streq(e->key, key))
            return e;
    return NULL;
}

config_t *config_new(void)
{
    config_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->entries = zlistx_new();
    if (!self->entries) {
        free(self);
        return NULL;
    }
    zlistx_set_destructor(self->entries, s_entry_free);
    return self;
}

void config_destroy(config_t **self_p)
{
    if (self_p && *self_p) {
        zlistx_destroy(&(*self_p)->entries);
        free(*self_p);
        *self_p = NULL;
    }
}

static void s_assign(s_entry_t *e, const char *value, const char *origin)
{
    free(e->value);
    e->value = value ? strdup(value) : NULL;
    e->origin = origin;
}

void config_declare(config_t *self, const char *key, const char *value, int secret)
{
    assert(self && key);
    s_entry_t *e = s_find(self, key);
    if (!e) {
        e = calloc(1, sizeof *e);
        assert(e);
        e->key = strdup(key);
        zlistx_add_end(self->entries, e);
    }
    e->secret = secret;
    s_assign(e, value, "default");
}

int config_load(config_t *self, const char *path)
{
    assert(self);
    if (path) {
        zconfig_t *root = zconfig_load(path);
        if (!root) {
            log_error(NULL, "cannot read config file", "{s:s}", "path", path);
            return -1;
        }
        for (zconfig_t *item = zconfig_child(root); item; item = zconfig_next(item)) {
            s_entry_t *e = s_find(self, zconfig_name(item));
            if (!e) {
                log_error(NULL, "unknown key in config file", "{s:s, s:s}", "path", path, "key",
                          zconfig_name(item));
                zconfig_destroy(&root);
                return -1;
            }
            s_assign(e, zconfig_value(item), "file");
        }
        zconfig_destroy(&root);
    }
    for (s_entry_t *e = zlistx_first(self->entries); e; e = zlistx_next(self->entries)) {
        char name[128] = "BERTH_";
        size_t n = strlen(name);
        for (const char *c = e->key; *c && n + 1 < sizeof name; c++)
            name[n++] = (char)toupper((unsigned char)*c);
        name[n] = '\0';
        const char *env = getenv(name);
        if (env)
            s_assign(e, env, "env");
    }
    return 0;
}

void config_set(config_t *self, const char *key, const char *value)
{
    s_entry_t *e = s_find(self, key);
    assert(e);
    s_assign(e, value, "set");
}

const char *config_get(config_t *self, const char *key)
{
    s_entry_t *e = s_find(self, key);
    assert(e);
    return e->value;
}

int config_int(config_t *self, const char *key, int64_t min, int64_t max, int64_t *out)
{
    const char *text = config_get(self, key);
    int64_t value;
    if (util_parse_int(text, min, max, &value) != 0) {
        log_error(NULL, "config value is not an integer in range", "{s:s, s:s?, s:I, s:I}", "key",
                  key, "value", text, "min", (json_int_t)min, "max", (json_int_t)max);
        return -1;
    }
    *out = value;
    return 0;
}

const char *config_origin(config_t *self, const char *key)
{
    s_entry_t *e = s_find(self, key);
    assert(e);
    return e->origin;
}

void config_log(config_t *self)
{
    json_t *effective = json_object();
    for (s_entry_t *e = zlistx_first(self->entries); e; e = zlistx_next(self->entries)) {
        const char *shown = e->value ? (e->secret ? "********" : e->value) : NULL;
        json_object_set_new(effective, e->key,
                            json_pack("{s:s?, s:s}", "value", shown, "origin", e->origin));
    }
    log_info(NULL, "effective config", "{s:o}", "config", effective);
}
