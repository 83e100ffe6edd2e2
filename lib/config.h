/*  config: a service's settings. Precedence, lowest first: built-in default, the config
    file (ZPL "key = value", read with CZMQ zconfig), then BERTH_<KEY> environment variables.
    Only declared keys exist; the effective set is logged at start, secrets masked. */
#ifndef BERTH_CONFIG_H
#define BERTH_CONFIG_H

#include <stdint.h>

typedef struct _config_t config_t;

config_t *config_new(void);
void config_destroy(config_t **self_p);

/* Declare a key with its default (NULL = unset). A secret is never printed. */
void config_declare(config_t *self, const char *key, const char *value, int secret);

/* Apply the file (if path is non-NULL) then the environment. -1 with a logged reason if the
   file cannot be read or names an undeclared key. */
int config_load(config_t *self, const char *path);

/* Set a value directly (highest precedence: used for values derived at start). */
void config_set(config_t *self, const char *key, const char *value);

/* Borrowed value or NULL when unset. Asserts that the key was declared. */
const char *config_get(config_t *self, const char *key);

/* Integer value within [min, max]; -1 (and a logged reason) if not a number or out of range. */
int config_int(config_t *self, const char *key, int64_t min, int64_t max, int64_t *out);

/* Where a key's value came from: "default", "file" or "env". */
const char *config_origin(config_t *self, const char *key);

/* Log the effective configuration as one line, secrets masked. */
void config_log(config_t *self);

#endif
