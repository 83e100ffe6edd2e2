/*  seed: the cloud-init NoCloud seed of each VM: an ISO 9660 volume labelled "cidata" holding
    meta-data (instance-id = the VM's UUID, local-hostname = its name) and user-data, built by
    genisoimage and kept as <dir>/<vm>.iso. Staging is idempotent by VM: asking again for the
    same VM, name and user-data returns the ISO already built. */
#ifndef BERTH_STAGER_SEED_H
#define BERTH_STAGER_SEED_H

#include <stddef.h>
#include <stdint.h>

#define SEED_BAD_REQUEST 1 /* the VM id, name or user-data is not acceptable */
#define SEED_CONFLICT    2 /* the VM already has a seed built for another name or user-data */

typedef struct {
    const char *genisoimage; /* the tool, looked up in PATH when not absolute */
    int timeout_ms;          /* a genisoimage run longer than this is killed */
    size_t max_user_data;    /* largest user-data accepted, bytes */
} seed_config_t;

typedef struct _seed_t seed_t;

/* A seed store in dir (created if missing). NULL (with errno) when dir cannot be made. */
seed_t *seed_new(const char *dir, const seed_config_t *config);
void seed_destroy(seed_t **self_p);

/* 1 if text is a hostname label: [a-z0-9-]{1,63}, not starting or ending with '-'. */
int seed_valid_hostname(const char *text);

/* The seed ISO of vm, built now unless it already exists for the same name and user-data
   (empty user_data = a default #cloud-config setting the hostname). 0 and *path_p (caller
   frees); SEED_BAD_REQUEST or SEED_CONFLICT; -1 when building failed. error says why. */
int seed_stage(seed_t *self, const char *vm, const char *name, const char *user_data, char **path_p,
               char *error, size_t error_size);

/* Remove seeds (and leftovers of interrupted builds) not touched for max_age_ms: the agent
   holds its own copy once the VM is built. Returns how many were removed. */
int seed_sweep(seed_t *self, int64_t max_age_ms);

#endif
