/*  seed: NoCloud seeds with genisoimage.

    A build happens in a private temporary directory next to the final files and is
    published by rename, so a crash or a concurrent build never exposes half an ISO. Beside
    <vm>.iso sits <vm>.sum, the SHA-256 of what the seed was built from (name and user-data):
    it is written before the ISO is renamed into place, so an ISO present means its sum is
    too, and a retry can tell "same request again" (answer the ISO) from "another request for
    the same VM" (refuse with a conflict instead of silently handing out the wrong identity). */
#include "seed.h"
#include "files.h"
#include "tool.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SUM_HEX 65 /* 64 hex chars + NUL */

struct _seed_t {
    char *dir; /* absolute directory of <vm>.iso and <vm>.sum */
    seed_config_t config;
    char *genisoimage; /* owned copy of config.genisoimage */
};

seed_t *seed_new(const char *dir, const seed_config_t *config)
{
    if (files_mkdirs(dir) != 0)
        return NULL;
    seed_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->dir = realpath(dir, NULL);
    self->genisoimage = strdup(config->genisoimage);
    if (!self->dir || !self->genisoimage) {
        seed_destroy(&self);
        return NULL;
    }
    /* Room for the longest file name kept inside it. */
    if (strlen(self->dir) > PATH_MAX - 128) {
        seed_destroy(&self);
        errno = ENAMETOOLONG;
        return NULL;
    }
    self->config = *config;
    self->config.genisoimage = self->genisoimage;
    return self;
}

void seed_destroy(seed_t **self_p)
{
    if (self_p && *self_p) {
        seed_t *self = *self_p;
        free(self->dir);
        free(self->genisoimage);
        free(self);
        *self_p = NULL;
    }
}

int seed_valid_hostname(const char *text)
{
    if (!text)
        return 0;
    size_t len = strlen(text);
    if (len < 1 || len > 63 || text[0] == '-' || text[len - 1] == '-')
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return 0;
    }
    return 1;
}

/* user-data must be text cloud-init will take: a #cloud-config document or a script. */
static const char *s_user_data_problem(const char *text, size_t max)
{
    size_t len = strlen(text);
    if (len > max)
        return "user_data is larger than the configured limit";
    if (strncmp(text, "#cloud-config", 13) != 0 && strncmp(text, "#!", 2) != 0)
        return "user_data must start with #cloud-config or #!";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if ((c < 0x20 && c != '\n' && c != '\r' && c != '\t') || c == 0x7f)
            return "user_data holds control characters";
    }
    return NULL;
}

/* What the seed is built from, as a digest: name and user-data, unambiguously separated. */
static void s_fingerprint(const char *name, const char *user_data, char hex[SUM_HEX])
{
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, (const uint8_t *)name, strlen(name) + 1);
    crypto_hash_sha256_update(&st, (const uint8_t *)user_data, strlen(user_data));
    uint8_t digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&st, digest);
    sodium_bin2hex(hex, SUM_HEX, digest, sizeof digest);
}

/* The sum recorded beside an existing seed, or "" when there is none. */
static void s_read_sum(const char *path, char hex[SUM_HEX])
{
    hex[0] = '\0';
    uint8_t *data = NULL;
    size_t size = 0;
    if (files_read(path, SUM_HEX, &data, &size) == 0) {
        if (size >= SUM_HEX - 1) {
            memcpy(hex, data, SUM_HEX - 1);
            hex[SUM_HEX - 1] = '\0';
        }
        free(data);
    }
}

/* Remove a build directory: it holds only plain files. */
static void s_remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char path[PATH_MAX];
        while ((e = readdir(d))) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) < (int)sizeof path)
                unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

/* dir/name into out (PATH_MAX bytes); -1 when it does not fit. */
static int s_path(char *out, const char *dir, const char *name)
{
    int n = snprintf(out, PATH_MAX, "%s/%s", dir, name);
    return n > 0 && n < PATH_MAX ? 0 : -1;
}

/* Build the ISO in a private directory and publish sum then ISO by rename. */
static int s_build(seed_t *self, const char *vm, const char *name, const char *user_data,
                   const char *sum, const char *iso, const char *sum_path, char *error,
                   size_t error_size)
{
    char work[PATH_MAX], meta_path[PATH_MAX], user_path[PATH_MAX], out_path[PATH_MAX],
        log_path[PATH_MAX];
    snprintf(work, sizeof work, "%s/.build-%s-XXXXXX", self->dir, vm);
    if (!mkdtemp(work)) {
        snprintf(error, error_size, "cannot create a build directory in '%s': %s", self->dir,
                 strerror(errno));
        return -1;
    }
    if (s_path(meta_path, work, "meta-data") || s_path(user_path, work, "user-data") ||
        s_path(out_path, work, "seed.iso") || s_path(log_path, work, "genisoimage.log")) {
        snprintf(error, error_size, "seed directory path '%s' is too long", self->dir);
        s_remove_dir(work);
        return -1;
    }

    char meta[256];
    int meta_len = snprintf(meta, sizeof meta, "instance-id: %s\nlocal-hostname: %s\n", vm, name);
    int rc = -1;
    if (files_write(meta_path, meta, (size_t)meta_len) != 0 ||
        files_write(user_path, user_data, strlen(user_data)) != 0) {
        snprintf(error, error_size, "cannot write the seed files of vm '%s': %s", vm,
                 strerror(errno));
        goto done;
    }
    /* Files named on the command line land in the volume's root under their own names;
       Rock Ridge and Joliet keep "user-data" and "meta-data" readable as they are. */
    const char *argv[] = { self->config.genisoimage,
                           "-output",
                           out_path,
                           "-volid",
                           "cidata",
                           "-joliet",
                           "-rock",
                           user_path,
                           meta_path,
                           NULL };
    char why[512];
    if (tool_run(argv, log_path, self->config.timeout_ms, why, sizeof why) != 0) {
        snprintf(error, error_size, "cannot build the seed of vm '%s': %s", vm, why);
        goto done;
    }
    if (files_write(sum_path, sum, SUM_HEX - 1) != 0 || rename(out_path, iso) != 0) {
        snprintf(error, error_size, "cannot publish the seed of vm '%s' in '%s': %s", vm, self->dir,
                 strerror(errno));
        goto done;
    }
    rc = 0;
done:
    s_remove_dir(work);
    return rc;
}

int seed_stage(seed_t *self, const char *vm, const char *name, const char *user_data, char **path_p,
               char *error, size_t error_size)
{
    if (!util_is_uuid(vm)) {
        snprintf(error, error_size, "vm must be a lower-case UUID");
        return SEED_BAD_REQUEST;
    }
    if (!seed_valid_hostname(name)) {
        snprintf(error, error_size,
                 "name must be a hostname: 1 to 63 of a-z, 0-9 and '-', not starting or "
                 "ending with '-'");
        return SEED_BAD_REQUEST;
    }
    char fallback[128];
    if (!user_data || !*user_data) {
        snprintf(fallback, sizeof fallback, "#cloud-config\nhostname: %s\n", name);
        user_data = fallback;
    } else {
        const char *problem = s_user_data_problem(user_data, self->config.max_user_data);
        if (problem) {
            snprintf(error, error_size, "%s", problem);
            return SEED_BAD_REQUEST;
        }
    }
    char sum[SUM_HEX], old[SUM_HEX], iso[PATH_MAX], sum_path[PATH_MAX];
    s_fingerprint(name, user_data, sum);
    snprintf(iso, sizeof iso, "%s/%s.iso", self->dir, vm);
    snprintf(sum_path, sizeof sum_path, "%s/%s.sum", self->dir, vm);
    s_read_sum(sum_path, old);
    if (files_exists(iso) && old[0]) {
        if (strcmp(old, sum) != 0) {
            snprintf(error, error_size,
                     "vm '%s' already has a seed built for another name or user-data", vm);
            return SEED_CONFLICT;
        }
    } else if (s_build(self, vm, name, user_data, sum, iso, sum_path, error, error_size) != 0)
        return -1;
    char *path = strdup(iso);
    if (!path) {
        snprintf(error, error_size, "out of memory");
        return -1;
    }
    *path_p = path;
    return 0;
}

int seed_sweep(seed_t *self, int64_t max_age_ms)
{
    DIR *d = opendir(self->dir);
    if (!d)
        return 0;
    time_t cutoff = time(NULL) - (time_t)(max_age_ms / 1000);
    int removed = 0;
    struct dirent *e;
    char path[PATH_MAX];
    while ((e = readdir(d))) {
        const char *n = e->d_name;
        size_t len = strlen(n);
        int build = strncmp(n, ".build-", 7) == 0;
        int seed =
            len > 4 && (strcmp(n + len - 4, ".iso") == 0 || strcmp(n + len - 4, ".sum") == 0);
        if ((!build && !seed) || s_path(path, self->dir, n) != 0)
            continue;
        struct stat st;
        if (stat(path, &st) != 0 || st.st_mtime >= cutoff)
            continue;
        if (build)
            s_remove_dir(path);
        else if (unlink(path) != 0)
            continue;
        removed++;
    }
    closedir(d);
    return removed;
}
