/*  seed: NoCloud seeds built in process with libisofs.

    The ISO is made in memory (libisofs writes it through its burn_source interface) and
    published by temporary file and rename, so no reader ever sees half an ISO. Beside
    <vm>.iso sits <vm>.sum: the SHA-256 of what the seed was built from (name and user-data)
    and the SHA-256 of the ISO. A retry can tell "same request again" (answer the ISO) from
    "another request for the same VM" (refuse with a conflict instead of silently handing out
    the wrong identity), and an ISO damaged by a power loss (files are not fsync'd: a seed can
    always be built again) is rebuilt instead of served. No tool is spawned. */
#include "seed.h"
#include "error.h"
#include "files.h"
#include "limit.h"
#include "sshkey.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
/* libisofs' copy of struct burn_source (the generator's read interface); libburn not used. */
#define LIBISOFS_WITHOUT_LIBBURN
#include <libisofs/libisofs.h>
#include <limits.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SUM_HEX 65 /* 64 hex chars + NUL */

#define SEED_MAX_ISO (4 << 20) /* far above any seed: user-data is capped well below */

struct _seed_t {
    char *dir; /* absolute directory of <vm>.iso and <vm>.sum */
    seed_config_t config;
};

/* libisofs keeps process-wide state (its message queue): started once, never stopped, as
   seeds may be built until the process exits. */
static pthread_once_t s_iso_once = PTHREAD_ONCE_INIT;
static int s_iso_ready;
/* libisofs does not promise that two images can be built at once (ThreadSanitizer reports a
   race inside iso_image_unref when they are): one build at a time, ~0.15 ms each. */
static pthread_mutex_t s_iso_lock = PTHREAD_MUTEX_INITIALIZER;

static void s_iso_init(void)
{
    /* bit0: leave the process locale alone; every name written here is ASCII. */
    if (iso_init_with_flag(1) < 0)
        return;
    /* Errors come back as return codes and are reported by the caller, once. */
    iso_set_msgs_severities("NEVER", "NEVER", "berth-stager");
    s_iso_ready = 1;
}

seed_t *seed_new(const char *dir, const seed_config_t *config)
{
    pthread_once(&s_iso_once, s_iso_init);
    if (!s_iso_ready) {
        errno = ENOTSUP;
        return NULL;
    }
    if (files_mkdirs(dir) != 0)
        return NULL;
    seed_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->dir = realpath(dir, NULL);
    if (!self->dir) {
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
    return self;
}

void seed_destroy(seed_t **self_p)
{
    if (self_p && *self_p) {
        seed_t *self = *self_p;
        free(self->dir);
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

char *seed_default_user_data(const char *name, char *const *keys, size_t n, berth_error_t *error)
{
    return seed_user_data_packages(name, keys, n, NULL, 0, error);
}

/* A package name cloud-init installs: 1..LIMIT_IMAGE_TEXT_MAX of [A-Za-z0-9._+-], starting
   with a letter or digit: nothing YAML would read otherwise, nothing a shell would. */
static int s_package_ok(const char *name)
{
    size_t len = name ? strlen(name) : 0;
    return len > 0 && len <= LIMIT_IMAGE_TEXT_MAX &&
           strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-") ==
               len &&
           strchr("._+-", name[0]) == NULL;
}

char *seed_user_data_packages(const char *name, char *const *keys, size_t n, char *const *packages,
                              size_t n_packages, berth_error_t *error)
{
    if (n_packages > LIMIT_IMAGE_APPS_MAX) {
        error_field(error, "packages", "a seed installs at most %d packages", LIMIT_IMAGE_APPS_MAX);
        return NULL;
    }
    size_t extra = n_packages ? 16 : 0;
    for (size_t i = 0; i < n_packages; i++) {
        if (!s_package_ok(packages[i])) {
            error_field(error, "packages", "packages[%zu] is not a package name", i);
            return NULL;
        }
        extra += 6 + strlen(packages[i]);
    }
    if (n > LIMIT_REQUEST_SSH_KEYS_MAX) {
        error_field(error, "ssh_authorized_keys", "a seed installs at most %d SSH keys",
                    LIMIT_REQUEST_SSH_KEYS_MAX);
        return NULL;
    }
    size_t size = 64 + strlen(name) + extra;
    for (size_t i = 0; i < n; i++) {
        if (!keys[i] || !sshkey_line_ok(keys[i], LIMIT_SSH_KEY_MAX)) {
            error_field(error, "ssh_authorized_keys",
                        "ssh_authorized_keys[%zu] is not one OpenSSH public key line", i);
            return NULL;
        }
        size += 8 + 2 * strlen(keys[i]); /* "  - '" ... "'\n", each quote doubled at worst */
    }
    char *text = malloc(size);
    if (!text) {
        error_set(error, "INTERNAL", "out of memory");
        return NULL;
    }
    size_t len = (size_t)snprintf(text, size, "#cloud-config\nhostname: %s\n", name);
    if (n)
        len += (size_t)snprintf(text + len, size - len, "ssh_authorized_keys:\n");
    /* Each line single-quoted: a comment may hold ": " or "#", which YAML would otherwise
       read as a mapping or a comment; a quote inside is doubled. */
    for (size_t i = 0; i < n; i++) {
        text[len++] = ' ';
        text[len++] = ' ';
        text[len++] = '-';
        text[len++] = ' ';
        text[len++] = '\'';
        for (const char *c = keys[i]; *c; c++) {
            if (*c == '\'')
                text[len++] = '\'';
            text[len++] = *c;
        }
        text[len++] = '\'';
        text[len++] = '\n';
    }
    /* Applications its image lacks, installed at first boot. */
    if (n_packages)
        len += (size_t)snprintf(text + len, size - len, "packages:\n");
    for (size_t i = 0; i < n_packages; i++)
        len += (size_t)snprintf(text + len, size - len, "  - %s\n", packages[i]);
    text[len] = '\0';
    return text;
}

/* What the seed is built from, as a digest: name, user-data and (when there is one) the
   network-config, unambiguously separated. */
static void s_fingerprint(const char *name, const char *user_data, const char *network_config,
                          char hex[SUM_HEX])
{
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, (const uint8_t *)name, strlen(name) + 1);
    crypto_hash_sha256_update(&st, (const uint8_t *)user_data, strlen(user_data));
    if (network_config && *network_config)
        crypto_hash_sha256_update(&st, (const uint8_t *)network_config, strlen(network_config) + 1);
    uint8_t digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&st, digest);
    sodium_bin2hex(hex, SUM_HEX, digest, sizeof digest);
}

/* The sum recorded beside an existing seed: the fingerprint of what it was built from and the
   SHA-256 of the ISO; "" for what is missing (no sum, or one written by an earlier version
   with the fingerprint alone). */
static void s_read_sum(const char *path, char built_from[SUM_HEX], char iso[SUM_HEX])
{
    built_from[0] = iso[0] = '\0';
    uint8_t *data = NULL;
    size_t size = 0;
    if (files_read(path, 2 * SUM_HEX, &data, &size) == 0) {
        if (size >= SUM_HEX - 1) {
            memcpy(built_from, data, SUM_HEX - 1);
            built_from[SUM_HEX - 1] = '\0';
        }
        if (size == 2 * SUM_HEX && data[SUM_HEX - 1] == '\n') {
            memcpy(iso, data + SUM_HEX, SUM_HEX - 1);
            iso[SUM_HEX - 1] = '\0';
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

/* Add one file holding text to the root of image. libisofs takes the copy it is given. */
static int s_add_file(IsoImage *image, const char *name, const char *text)
{
    size_t len = strlen(text);
    unsigned char *copy = malloc(len ? len : 1);
    if (!copy)
        return ISO_OUT_OF_MEM;
    memcpy(copy, text, len);
    IsoStream *stream = NULL;
    int rc = iso_memory_stream_new(copy, len, &stream);
    if (rc < 0) {
        free(copy);
        return rc;
    }
    IsoFile *file = NULL;
    rc = iso_image_add_new_file(image, iso_image_get_root(image), name, stream, &file);
    if (rc < 0) {
        iso_stream_unref(stream);
        return rc;
    }
    /* What genisoimage -rock recorded for the files the stager wrote as root. */
    iso_node_set_permissions((IsoNode *)file, 0644);
    iso_node_set_uid((IsoNode *)file, 0);
    iso_node_set_gid((IsoNode *)file, 0);
    return 0;
}

/* Read the whole image out of libisofs' generator. */
static int s_drain(struct burn_source *src, uint8_t **iso_p, size_t *size_p)
{
    off_t total = src->get_size(src);
    if (total <= 0 || total > SEED_MAX_ISO || total % 2048 != 0)
        return ISO_WRITE_ERROR;
    uint8_t *iso = malloc((size_t)total);
    if (!iso)
        return ISO_OUT_OF_MEM;
    size_t got = 0;
    while (got < (size_t)total) {
        int n = src->read ? src->read(src, iso + got, 2048) : src->read_xt(src, iso + got, 2048);
        if (n != 2048) {
            free(iso);
            return ISO_WRITE_ERROR;
        }
        got += 2048;
    }
    *iso_p = iso;
    *size_p = got;
    return 0;
}

int seed_iso(const char *meta_data, const char *user_data, const char *network_config,
             uint8_t **iso_p, size_t *size_p, char *error, size_t error_size)
{
    pthread_once(&s_iso_once, s_iso_init);
    if (!s_iso_ready) {
        snprintf(error, error_size, "libisofs failed to initialise");
        return -1;
    }
    IsoImage *image = NULL;
    IsoWriteOpts *opts = NULL;
    struct burn_source *src = NULL;
    pthread_mutex_lock(&s_iso_lock);
    int rc = iso_image_new("cidata", &image);
    if (rc >= 0) {
        /* The descriptor fields genisoimage -volid cidata wrote; volume set id left empty. */
        iso_image_set_volset_id(image, "");
        iso_image_set_system_id(image, "LINUX");
        iso_node_set_permissions((IsoNode *)iso_image_get_root(image), 0555);
        rc = s_add_file(image, "meta-data", meta_data);
    }
    if (rc >= 0)
        rc = s_add_file(image, "user-data", user_data);
    if (rc >= 0 && network_config)
        rc = s_add_file(image, "network-config", network_config);
    /* genisoimage's defaults with -joliet -rock: ISO 9660 level 1 names (8.3, upper case)
       for old readers, Joliet and Rock Ridge for the real names. */
    if (rc >= 0)
        rc = iso_write_opts_new(&opts, 0);
    if (rc >= 0)
        rc = iso_write_opts_set_iso_level(opts, 1);
    /* Keep the volume id lower case, as genisoimage does: cloud-init looks for "cidata". */
    if (rc >= 0)
        rc = iso_write_opts_set_relaxed_vol_atts(opts, 1);
    if (rc >= 0)
        rc = iso_write_opts_set_rockridge(opts, 1);
    if (rc >= 0)
        rc = iso_write_opts_set_joliet(opts, 1);
    /* Joliet names exactly as given ("meta-data", not "meta-data.;1"), as genisoimage writes
       them; the ISO 9660 names keep their dot and version. */
    if (rc >= 0)
        rc = iso_write_opts_set_omit_version_numbers(opts, 2);
    if (rc >= 0)
        rc = iso_write_opts_set_no_force_dots(opts, 2);
    if (rc >= 0)
        rc = iso_image_create_burn_source(image, opts, &src);
    if (rc >= 0)
        rc = s_drain(src, iso_p, size_p);
    if (src) {
        if (rc < 0)
            src->cancel(src);
        src->free_data(src);
        free(src);
    }
    iso_write_opts_free(opts);
    if (image)
        iso_image_unref(image);
    pthread_mutex_unlock(&s_iso_lock);
    if (rc < 0) {
        snprintf(error, error_size, "libisofs: %s", iso_error_to_msg(rc));
        return -1;
    }
    return 0;
}

/* Build the ISO in memory and publish it, then its sum. Neither is fsync'd: a seed can be
   rebuilt, and the sum names the ISO's digest, so an ISO a power loss damaged is noticed on
   the next request and built again rather than handed out. */
static int s_build(seed_t *self, const char *vm, const char *name, const char *user_data,
                   const char *network_config, const char *built_from, const char *iso_path,
                   const char *sum_path, seed_bytes_t *out, char *error, size_t error_size)
{
    char meta[256];
    snprintf(meta, sizeof meta, "instance-id: %s\nlocal-hostname: %s\n", vm, name);
    uint8_t *iso = NULL;
    size_t size = 0;
    char why[256];
    if (seed_iso(meta, user_data, network_config && *network_config ? network_config : NULL, &iso,
                 &size, why, sizeof why) != 0) {
        snprintf(error, error_size, "cannot build the seed of vm '%s': %s", vm, why);
        return -1;
    }
    char sum[2 * SUM_HEX];
    memcpy(sum, built_from, SUM_HEX - 1);
    sum[SUM_HEX - 1] = '\n';
    files_sha256_hex(iso, size, sum + SUM_HEX);
    sum[2 * SUM_HEX - 1] = '\n';
    int rc = 0;
    if (files_replace(iso_path, iso, size) != 0 || files_replace(sum_path, sum, sizeof sum) != 0) {
        snprintf(error, error_size, "cannot publish the seed of vm '%s' in '%s': %s", vm, self->dir,
                 strerror(errno));
        rc = -1;
    }
    if (rc == 0 && out) {
        out->iso = iso;
        out->size = size;
        memcpy(out->sha256, sum + SUM_HEX, SUM_HEX - 1);
        out->sha256[SUM_HEX - 1] = '\0';
        iso = NULL;
    }
    free(iso);
    return rc;
}

/* 1 if the ISO at path is the one the sum names (then *out holds it, when out is set). */
static int s_iso_intact(const char *path, const char *digest, size_t max_bytes, seed_bytes_t *out)
{
    if (!digest[0])
        return 0;
    if (!out) {
        char sum[SUM_HEX];
        int64_t bytes = 0;
        return files_sha256(path, sum, &bytes) == 0 && strcmp(sum, digest) == 0;
    }
    uint8_t *iso = NULL;
    size_t size = 0;
    char hex[SUM_HEX];
    if (files_read(path, max_bytes, &iso, &size) != 0)
        return 0;
    files_sha256_hex(iso, size, hex);
    int intact = strcmp(hex, digest) == 0;
    if (intact) {
        out->iso = iso;
        out->size = size;
        memcpy(out->sha256, hex, SUM_HEX);
        iso = NULL;
    }
    free(iso);
    return intact;
}

static int s_stage_checked(seed_t *self, const char *vm, const char *name, const char *user_data,
                           const char *network_config, size_t max_bytes, char **path_p,
                           seed_bytes_t *out, berth_error_t *error);

int seed_stage(seed_t *self, const char *vm, const char *name, const char *user_data, char **path_p,
               berth_error_t *error)
{
    return seed_stage_bytes(self, vm, name, user_data, 0, path_p, NULL, error);
}

int seed_stage_bytes(seed_t *self, const char *vm, const char *name, const char *user_data,
                     size_t max_bytes, char **path_p, seed_bytes_t *out, berth_error_t *error)
{
    return seed_stage_network(self, vm, name, user_data, NULL, max_bytes, path_p, out, error);
}

/* 1 if text is a dotted IPv4 address (four octets 0 to 255). */
static int s_is_ip4(const char *text)
{
    unsigned a, b, c, d;
    char tail;
    return text && strlen(text) <= 15 && strspn(text, "0123456789.") == strlen(text) &&
           sscanf(text, "%u.%u.%u.%u%c", &a, &b, &c, &d, &tail) == 4 && a < 256 && b < 256 &&
           c < 256 && d < 256;
}

/* 1 if text is a MAC as aa:bb:cc:dd:ee:ff (lower-case hex). */
static int s_is_mac(const char *text)
{
    if (!text || strlen(text) != 17)
        return 0;
    for (int i = 0; i < 17; i++)
        if (i % 3 == 2 ? text[i] != ':' : !strchr("0123456789abcdef", text[i]))
            return 0;
    return 1;
}

/* Whether net can go into a network-config; else error names field. */
static int s_net_valid(const Berth__VmNetwork *net, const char *field, berth_error_t *error)
{
    if (!net || !s_is_ip4(net->ip) || !s_is_mac(net->mac) || net->prefix < 1 || net->prefix > 32 ||
        !s_is_ip4(net->gateway) || net->n_dns > LIMIT_NETWORK_DNS_MAX) {
        error_field(error, field,
                    "%s needs an IPv4 ip and gateway, a prefix of 1 to 32, a MAC as "
                    "aa:bb:cc:dd:ee:ff and at most %d name servers",
                    field, LIMIT_NETWORK_DNS_MAX);
        return 0;
    }
    for (size_t i = 0; i < net->n_dns; i++)
        if (!s_is_ip4(net->dns[i])) {
            error_field(error, field, "%s.dns[%zu] is not an IPv4 address", field, i);
            return 0;
        }
    return 1;
}

char *seed_network_config(const Berth__VmNetwork *net, berth_error_t *error)
{
    Berth__VmNetwork *nets[1] = { (Berth__VmNetwork *)net };
    return seed_networks_config(nets, 1, error);
}

char *seed_networks_config(Berth__VmNetwork *const *nets, size_t n, berth_error_t *error)
{
    if (n < 1 || n > LIMIT_VM_NETWORKS_MAX) {
        error_field(error, "networks", "a VM has 1 to %d networks", LIMIT_VM_NETWORKS_MAX);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        char field[32];
        snprintf(field, sizeof field, n == 1 ? "network" : "networks[%zu]", i);
        if (!s_net_valid(nets[i], field, error))
            return NULL;
    }
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    if (!f) {
        error_set(error, "INTERNAL", "out of memory");
        return NULL;
    }
    fprintf(f, "version: 2\nethernets:\n");
    /* One ethernet per interface, matched by its MAC; the first network's gateway is the
       default route. */
    for (size_t i = 0; i < n; i++) {
        const Berth__VmNetwork *net = nets[i];
        fprintf(f,
                "  eth%zu:\n"
                "    match:\n"
                "      macaddress: \"%s\"\n"
                "    set-name: eth%zu\n"
                "    addresses:\n"
                "      - %s/%d\n",
                i, net->mac, i, net->ip, net->prefix);
        if (i == 0)
            fprintf(f,
                    "    routes:\n"
                    "      - to: 0.0.0.0/0\n"
                    "        via: %s\n",
                    net->gateway);
        if (net->n_dns) {
            fprintf(f, "    nameservers:\n      addresses:\n");
            for (size_t j = 0; j < net->n_dns; j++)
                fprintf(f, "        - %s\n", net->dns[j]);
        }
    }
    if (fclose(f) != 0) {
        free(text);
        error_set(error, "INTERNAL", "out of memory");
        return NULL;
    }
    return text;
}

int seed_stage_network(seed_t *self, const char *vm, const char *name, const char *user_data,
                       const char *network_config, size_t max_bytes, char **path_p,
                       seed_bytes_t *out, berth_error_t *error)
{
    if (!util_is_uuid(vm)) {
        error_field(error, "vm", "vm must be a lower-case UUID");
        return SEED_BAD_REQUEST;
    }
    if (!seed_valid_hostname(name)) {
        error_field(error, "name",
                    "name must be a hostname: 1 to 63 of a-z, 0-9 and '-', not starting or "
                    "ending with '-'");
        return SEED_BAD_REQUEST;
    }
    if (!user_data || !*user_data) {
        char *fallback = seed_default_user_data(name, NULL, 0, error);
        if (!fallback)
            return -1;
        int rc = s_stage_checked(self, vm, name, fallback, network_config, max_bytes, path_p, out,
                                 error);
        free(fallback);
        return rc;
    }
    const char *problem = s_user_data_problem(user_data, self->config.max_user_data);
    if (problem) {
        error_field(error, "user_data", "%s", problem);
        return SEED_BAD_REQUEST;
    }
    return s_stage_checked(self, vm, name, user_data, network_config, max_bytes, path_p, out,
                           error);
}

/* seed_stage_bytes once vm, name and user_data are known to be acceptable. */
static int s_stage_checked(seed_t *self, const char *vm, const char *name, const char *user_data,
                           const char *network_config, size_t max_bytes, char **path_p,
                           seed_bytes_t *out, berth_error_t *error)
{
    char built_from[SUM_HEX], old[SUM_HEX], old_iso[SUM_HEX], iso[PATH_MAX], sum_path[PATH_MAX];
    s_fingerprint(name, user_data, network_config, built_from);
    snprintf(iso, sizeof iso, "%s/%s.iso", self->dir, vm);
    snprintf(sum_path, sizeof sum_path, "%s/%s.sum", self->dir, vm);
    s_read_sum(sum_path, old, old_iso);
    int exists = old[0] && files_exists(iso);
    if (exists && strcmp(old, built_from) != 0) {
        error_set(error, "CONFLICT",
                  "vm '%s' already has a seed built for another name, user-data or network", vm);
        return SEED_CONFLICT;
    }
    /* The same request again: answer the ISO built before, unless it is damaged (then the
       same seed is built again). */
    char why[768];
    if (out)
        memset(out, 0, sizeof *out);
    if ((!exists || !s_iso_intact(iso, old_iso, max_bytes, out)) &&
        s_build(self, vm, name, user_data, network_config, built_from, iso, sum_path, out, why,
                sizeof why) != 0)
        return error_set(error, "INTERNAL", "%s", why);
    char *path = strdup(iso);
    if (!path) {
        if (out)
            seed_bytes_clear(out);
        return error_set(error, "INTERNAL", "out of memory");
    }
    *path_p = path;
    return 0;
}

int seed_forget_other(seed_t *self, const char *vm, const char *name, const char *user_data,
                      const char *network_config)
{
    if (!util_is_uuid(vm))
        return 0;
    char built_from[SUM_HEX], old[SUM_HEX], old_iso[SUM_HEX], iso[PATH_MAX], sum_path[PATH_MAX];
    s_fingerprint(name, user_data, network_config, built_from);
    snprintf(iso, sizeof iso, "%s/%s.iso", self->dir, vm);
    snprintf(sum_path, sizeof sum_path, "%s/%s.sum", self->dir, vm);
    s_read_sum(sum_path, old, old_iso);
    if (!old[0] || strcmp(old, built_from) == 0)
        return 0;
    /* The sum first: an ISO without its sum is never served (s_stage_checked builds again). */
    if (unlink(sum_path) != 0 && errno != ENOENT)
        return -1;
    if (unlink(iso) != 0 && errno != ENOENT)
        return -1;
    return 0;
}

void seed_bytes_clear(seed_bytes_t *bytes)
{
    free(bytes->iso);
    bytes->iso = NULL;
    bytes->size = 0;
    bytes->sha256[0] = '\0';
}

int seed_read(seed_t *self, const char *vm, size_t max_bytes, seed_bytes_t *out)
{
    memset(out, 0, sizeof *out);
    if (!util_is_uuid(vm)) {
        errno = ENOENT;
        return -1;
    }
    char iso[PATH_MAX], sum_path[PATH_MAX], built_from[SUM_HEX], digest[SUM_HEX];
    snprintf(iso, sizeof iso, "%s/%s.iso", self->dir, vm);
    snprintf(sum_path, sizeof sum_path, "%s/%s.sum", self->dir, vm);
    if (files_read(iso, max_bytes, &out->iso, &out->size) != 0)
        return -1;
    /* The digest recorded when the ISO was built; hashed here only when none was. */
    s_read_sum(sum_path, built_from, digest);
    if (digest[0])
        memcpy(out->sha256, digest, SUM_HEX);
    else
        files_sha256_hex(out->iso, out->size, out->sha256);
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
        /* .build-*: directories of the genisoimage builds of earlier versions. */
        int build = strncmp(n, ".build-", 7) == 0;
        /* <vm>.iso, <vm>.sum, and .<vm>.iso.XXXXXX left by a write a crash interrupted. */
        int seed =
            (len > 4 && (strcmp(n + len - 4, ".iso") == 0 || strcmp(n + len - 4, ".sum") == 0)) ||
            (n[0] == '.' && (strstr(n, ".iso.") || strstr(n, ".sum.")));
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
