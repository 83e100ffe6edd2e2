/*  catalog: base images and their records.

    The record is shared by every stager instance (Redis) while the file is local. A record
    is replaced only through a checked transaction on its path (compare-and-set), so two
    instances starting together agree on one record, and a record left pointing at a file
    that no longer exists (data directory wiped, Redis kept) is repaired at the next start. */
#include "catalog.h"
#include "keys.h"
#include "files.h"
#include "tool.h"
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CATALOG_SET KEYS_IMAGES

/* The base images every Berth installation starts with; templates name them. */
static const struct {
    const char *name;
    const char *os;
} s_base[] = {
    { "debian-12", "debian" },
    { "ubuntu-24.04", "ubuntu" },
};

struct _catalog_t {
    store_t *store; /* borrowed */
    char *dir;      /* absolute images directory */
    catalog_config_t config;
    char *qemu_img; /* owned copies of the config strings */
    char *base_size;
};

catalog_t *catalog_new(store_t *store, const char *images_dir, const catalog_config_t *config)
{
    if (files_mkdirs(images_dir) != 0)
        return NULL;
    catalog_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->store = store;
    self->dir = realpath(images_dir, NULL);
    self->qemu_img = strdup(config->qemu_img);
    self->base_size = strdup(config->base_size);
    if (!self->dir || !self->qemu_img || !self->base_size) {
        catalog_destroy(&self);
        return NULL;
    }
    /* Room for the longest file name kept inside it. */
    if (strlen(self->dir) > PATH_MAX - 128) {
        catalog_destroy(&self);
        errno = ENAMETOOLONG;
        return NULL;
    }
    self->config = *config;
    self->config.qemu_img = self->qemu_img;
    self->config.base_size = self->base_size;
    return self;
}

void catalog_destroy(catalog_t **self_p)
{
    if (self_p && *self_p) {
        catalog_t *self = *self_p;
        free(self->dir);
        free(self->qemu_img);
        free(self->base_size);
        free(self);
        *self_p = NULL;
    }
}

int catalog_valid_name(const char *text)
{
    if (!text)
        return 0;
    size_t len = strlen(text);
    if (len < 1 || len > 64)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        int alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
            return 0;
    }
    return 1;
}

/* Create the qcow2 file at path (via a temporary name, so a half-made file never has the
   final name) unless it exists already. */
static int s_create_file(catalog_t *self, const char *name, const char *path, char *error,
                         size_t error_size)
{
    if (files_exists(path))
        return 0;
    /* Temporary names unique per attempt: instances sharing a volume may race here. */
    char tmp[PATH_MAX], log_path[PATH_MAX], id[UTIL_ID_LEN];
    util_uuid(id);
    snprintf(tmp, sizeof tmp, "%s/.%s.%.8s.qcow2", self->dir, name, id);
    snprintf(log_path, sizeof log_path, "%s/.%s.%.8s.log", self->dir, name, id);
    const char *argv[] = { self->config.qemu_img,  "create", "-q", "-f", "qcow2", tmp,
                           self->config.base_size, NULL };
    char why[512];
    int rc = tool_run(argv, log_path, self->config.timeout_ms, why, sizeof why);
    if (rc != 0)
        snprintf(error, error_size, "cannot create base image '%s': %s", name, why);
    else if (rename(tmp, path) != 0) {
        snprintf(error, error_size, "cannot create base image '%s' at '%s': %s", name, path,
                 strerror(errno));
        rc = -1;
    }
    unlink(tmp);
    unlink(log_path);
    return rc;
}

/* One base image: keep a record whose file is here, otherwise make the file and record it. */
static int s_ensure(catalog_t *self, const char *name, const char *os, char *error,
                    size_t error_size)
{
    char key[KEYS_MAX];
    keys_build(key, KEYS_IMAGE, name, NULL);
    Berth__Image *old = NULL;
    int rc = model_load(self->store, &berth__image__descriptor, key, (ProtobufCMessage **)&old);
    if (rc < 0) {
        snprintf(error, error_size, "cannot read image '%s': state store unreachable", name);
        return -1;
    }
    if (rc == 0 && old->path && *old->path && files_exists(old->path)) {
        protobuf_c_message_free_unpacked(&old->base, NULL);
        return 0;
    }
    char path[PATH_MAX], sha[65];
    int64_t size = 0;
    snprintf(path, sizeof path, "%s/%s.qcow2", self->dir, name);
    int bad = s_create_file(self, name, path, error, error_size);
    if (!bad && files_sha256(path, sha, &size) != 0) {
        snprintf(error, error_size, "cannot read base image '%s': %s", path, strerror(errno));
        bad = -1;
    }
    if (bad) {
        if (old)
            protobuf_c_message_free_unpacked(&old->base, NULL);
        return -1;
    }
    Berth__Image image = BERTH__IMAGE__INIT;
    image.name = (char *)name;
    image.os = (char *)os;
    image.path = path;
    image.format = "qcow2";
    image.size_bytes = size;
    image.sha256 = sha;
    model_tx_t *tx = model_tx_new();
    if (!tx) {
        snprintf(error, error_size, "out of memory");
        if (old)
            protobuf_c_message_free_unpacked(&old->base, NULL);
        return -1;
    }
    /* Replace only what we looked at: the absent record, or the one with the dead path. */
    model_tx_check(tx, key, "path", old && old->path ? old->path : "");
    model_tx_put(tx, key, &image.base);
    model_tx_sadd(tx, CATALOG_SET, name);
    rc = model_tx_commit(tx, self->store, NULL);
    model_tx_destroy(&tx);
    if (old)
        protobuf_c_message_free_unpacked(&old->base, NULL);
    if (rc < 0) {
        snprintf(error, error_size, "cannot record image '%s': state store unreachable", name);
        return -1;
    }
    /* MODEL_CONFLICT: another instance recorded it first; its record stands. */
    return 0;
}

int catalog_ensure_base(catalog_t *self, char *error, size_t error_size)
{
    for (size_t i = 0; i < sizeof s_base / sizeof s_base[0]; i++)
        if (s_ensure(self, s_base[i].name, s_base[i].os, error, error_size) != 0)
            return -1;
    return 0;
}

int catalog_get(catalog_t *self, const char *name, Berth__Image **image_p)
{
    if (!catalog_valid_name(name))
        return CATALOG_NOT_FOUND;
    char key[KEYS_MAX];
    int rc = model_load(self->store, &berth__image__descriptor,
                        keys_build(key, KEYS_IMAGE, name, NULL), (ProtobufCMessage **)image_p);
    return rc == MODEL_NOT_FOUND ? CATALOG_NOT_FOUND : rc;
}

static int s_by_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int catalog_list(catalog_t *self, Berth__ImageList **list_p)
{
    redisReply *r = store_command(self->store, "SMEMBERS %s", CATALOG_SET);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return -1;
    }
    /* Names first, sorted, so the cap keeps the same images every time. */
    const char **names = calloc(r->elements + 1, sizeof *names);
    Berth__ImageList *list = malloc(sizeof *list);
    size_t n = 0;
    for (size_t i = 0; names && i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING)
            names[n++] = r->element[i]->str;
    size_t cap = n < (size_t)self->config.max_images ? n : (size_t)self->config.max_images;
    if (list) {
        berth__image_list__init(list);
        list->images = calloc(cap + 1, sizeof *list->images);
    }
    if (!names || !list || !list->images) {
        free(names);
        if (list)
            free(list->images);
        free(list);
        freeReplyObject(r);
        return -1;
    }
    qsort(names, n, sizeof *names, s_by_name);
    int rc = 0;
    for (size_t i = 0; i < n && list->n_images < cap; i++) {
        Berth__Image *image = NULL;
        int got = catalog_get(self, names[i], &image);
        if (got < 0) {
            rc = -1;
            break;
        }
        if (got == 0) /* a name whose record vanished meanwhile is skipped */
            list->images[list->n_images++] = image;
    }
    free(names);
    freeReplyObject(r);
    if (rc != 0) {
        protobuf_c_message_free_unpacked(&list->base, NULL);
        return -1;
    }
    *list_p = list;
    return 0;
}
