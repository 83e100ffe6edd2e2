/*  seed: the cloud-init NoCloud seed of each VM: an ISO 9660 volume labelled "cidata" holding
    meta-data (instance-id = the VM's UUID, local-hostname = its name) and user-data, built in
    process with libisofs (the library under xorriso) and kept as <dir>/<vm>.iso. Staging is
    idempotent by VM: asking again for the same VM, name and user-data returns the ISO already
    built. Safe to call from several threads at once for different VMs. */
#ifndef BERTH_STAGER_SEED_H
#define BERTH_STAGER_SEED_H

#include "error.h"

#include "berth.pb-c.h"

#include <stddef.h>
#include <stdint.h>

#define SEED_BAD_REQUEST 1 /* the VM id, name or user-data is not acceptable */
#define SEED_CONFLICT    2 /* the VM already has a seed built for another name or user-data */

typedef struct {
    size_t max_user_data; /* largest user-data accepted, bytes */
} seed_config_t;

typedef struct _seed_t seed_t;

/* A seed store in dir (created if missing). NULL (with errno) when dir cannot be made or
   libisofs cannot start. */
seed_t *seed_new(const char *dir, const seed_config_t *config);
void seed_destroy(seed_t **self_p);

/* 1 if text is a hostname label: [a-z0-9-]{1,63}, not starting or ending with '-'. */
int seed_valid_hostname(const char *text);

/* The user-data of a seed asked for without one: a #cloud-config document setting the
   hostname to name and, with n > 0, installing each of keys (OpenSSH public key lines) for
   the default user (ssh_authorized_keys). NULL with error BAD_REQUEST naming
   ssh_authorized_keys when there are more than LIMIT_REQUEST_SSH_KEYS_MAX keys or one is not
   exactly a key line (lib/sshkey.h), or INTERNAL when out of memory. Caller frees. */
char *seed_default_user_data(const char *name, char *const *keys, size_t n, berth_error_t *error);

/* The same, also installing packages[0 .. n_packages) at first boot (cloud-init
   `packages:`); BAD_REQUEST naming packages when one is not a package name
   ([A-Za-z0-9][A-Za-z0-9._+-]*, at most LIMIT_IMAGE_TEXT_MAX) or there are more than
   LIMIT_IMAGE_APPS_MAX. Caller frees. */
char *seed_user_data_packages(const char *name, char *const *keys, size_t n, char *const *packages,
                              size_t n_packages, berth_error_t *error);

/* The seed ISO of vm, built now unless it already exists for the same name and user-data
   (empty user_data = a default #cloud-config setting the hostname). 0 and *path_p (caller
   frees); SEED_BAD_REQUEST (error is BAD_REQUEST naming the field: vm, name or user_data) or
   SEED_CONFLICT (error is CONFLICT); -1 when building failed (error is INTERNAL). */
int seed_stage(seed_t *self, const char *vm, const char *name, const char *user_data, char **path_p,
               berth_error_t *error);

/* A seed's bytes and the hex SHA-256 of them, as seed_stage_bytes() hands them back. */
typedef struct {
    uint8_t *iso; /* owned: seed_bytes_clear() frees it */
    size_t size;
    char sha256[65];
} seed_bytes_t;

/* seed_stage(), also handing back in *out the ISO it built or checked (at most max_bytes
   when it was already built), so the caller neither reads nor hashes it again. */
int seed_stage_bytes(seed_t *self, const char *vm, const char *name, const char *user_data,
                     size_t max_bytes, char **path_p, seed_bytes_t *out, berth_error_t *error);
/* The same with a network-config (NULL or "": none; seed_network_config makes one). */
int seed_stage_network(seed_t *self, const char *vm, const char *name, const char *user_data,
                       const char *network_config, size_t max_bytes, char **path_p,
                       seed_bytes_t *out, berth_error_t *error);

/* A pooled VM handed out (instant deploy): its seed is rebuilt for its new name, keys and
   address. Removes vm's seed when it was built from anything else than this name, user-data
   and network-config, so the next seed_stage_network builds it again instead of refusing the
   new identity as a conflict; a seed built from exactly these is kept. 0, or -1 (errno) when
   a file could not be removed. */
int seed_forget_other(seed_t *self, const char *vm, const char *name, const char *user_data,
                      const char *network_config);

/* A NoCloud network-config (version 2) for a VM's address: the interface with mac gets
   ip/prefix, a default route through gateway and the name servers. NULL with error
   (BAD_REQUEST naming the field network) when a value is not what it must be (an IPv4
   address, a MAC, a prefix of 1 to 32), so nothing from a caller reaches the YAML unchecked.
   Caller frees. */
char *seed_network_config(const Berth__VmNetwork *net, berth_error_t *error);
/* The same for a VM on n networks (1 to LIMIT_VM_NETWORKS_MAX), in order: one ethernet
   per interface matched by its MAC (eth0, eth1, ...), each with its address and name
   servers; the default route goes through the first one's gateway. A bad value names the
   field networks[i]. */
char *seed_networks_config(Berth__VmNetwork *const *nets, size_t n, berth_error_t *error);
void seed_bytes_clear(seed_bytes_t *bytes);

/* The seed staged for vm (at most max_bytes) and the SHA-256 recorded when it was built,
   without hashing it again: whoever fetches it checks it against the digest StageImage
   answered (the agent does), so a damaged file is still refused. 0 and *out, or -1 with
   errno (ENOENT: no seed staged for vm; EFBIG: larger than max_bytes). */
int seed_read(seed_t *self, const char *vm, size_t max_bytes, seed_bytes_t *out);

/* The ISO 9660 image of a NoCloud seed, built in memory: volume id "cidata", the files
   meta-data, user-data and, when network_config is not NULL, network-config (Rock Ridge and
   Joliet names as written, ISO 9660 level 1 names such as META_DAT.), root-owned and
   world-readable. 0 with *iso_p (caller frees) and *size_p, or -1 with error. seed_stage()
   stores what this builds; benchmarks call it alone. */
int seed_iso(const char *meta_data, const char *user_data, const char *network_config,
             uint8_t **iso_p, size_t *size_p, char *error, size_t error_size);

/* Remove seeds (and leftovers of interrupted builds) not touched for max_age_ms: the agent
   holds its own copy once the VM is built. Returns how many were removed. */
int seed_sweep(seed_t *self, int64_t max_age_ms);

#endif
