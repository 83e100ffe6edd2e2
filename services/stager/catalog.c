/*  catalog: base images and their records.

    The record is shared by every stager instance (Redis) while the file is local. A record
    is replaced only through a checked transaction on its path (compare-and-set), so two
    instances starting together agree on one record, and a record left pointing at a file
    that no longer exists (data directory wiped, Redis kept) is repaired at the next start. */
#include "catalog.h"
#include "keys.h"
#include "files.h"
#include "tool.h"
#include "lua_scripts.h"
#include "util.h"
#include "log.h"

#include <czmq.h>
#include <errno.h>
#include <glob.h>
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
    const char *os_version;
    int64_t min_ram_mb;
    int64_t min_disk_gb;
} s_base[] = {
    { "debian-12", "debian", "12", 512, 2 },
    { "ubuntu-24.04", "ubuntu", "24.04", 1024, 4 },
};

struct _catalog_t {
    store_t *store; /* borrowed */
    char *dir;      /* absolute images directory */
    catalog_config_t config;
    char *qemu_img; /* owned copies of the config strings */
    char *base_size;
    char *instance;
    zhashx_t *working; /* image id -> "" while a job of this process works on it */
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
    self->instance = strdup(config->instance ? config->instance : "");
    self->working = zhashx_new();
    if (!self->dir || !self->qemu_img || !self->base_size || !self->instance || !self->working) {
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
    self->config.instance = self->instance;
    return self;
}

void catalog_destroy(catalog_t **self_p)
{
    if (self_p && *self_p) {
        catalog_t *self = *self_p;
        free(self->dir);
        free(self->qemu_img);
        free(self->base_size);
        free(self->instance);
        zhashx_destroy(&self->working);
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

/* Give a record written before ids and states its id (and berth:image-id:<id>) and state
   READY, if it still has the path we looked at. */
static int s_backfill(catalog_t *self, const Berth__Image *old, const char *key, char *error,
                      size_t error_size)
{
    int need_id = !old->id || !*old->id, need_state = !old->state || !*old->state;
    if (!need_id && !need_state)
        return 0;
    char id[UTIL_ID_LEN], id_key[KEYS_MAX];
    if (need_id)
        util_uuid(id);
    else
        util_strlcpy(id, old->id, sizeof id);
    Berth__Image image = *old;
    image.id = id;
    model_tx_t *tx = model_tx_new();
    if (!tx) {
        snprintf(error, error_size, "out of memory");
        return -1;
    }
    model_tx_check(tx, key, "path", old->path ? old->path : "");
    if (need_id) {
        model_tx_check(tx, key, "id", "");
        model_tx_put_fields(tx, key, &image.base, "id", NULL);
        model_tx_hset(tx, keys_build(id_key, KEYS_IMAGE_ID, id, NULL), "name", old->name);
    }
    if (need_state)
        model_tx_transition(tx, LIFECYCLE_IMAGE, key, "", "READY", 0, "image", old->name, "id", id,
                            NULL);
    int rc = model_tx_commit(tx, self->store, NULL);
    model_tx_destroy(&tx);
    if (rc < 0) {
        snprintf(error, error_size, "cannot record image '%s': state store unreachable", old->name);
        return -1;
    }
    return 0; /* MODEL_CONFLICT: another instance did it first */
}

/* One base image: keep a record whose file is here, otherwise make the file and record it. */
static int s_ensure(catalog_t *self, const char *name, const char *os, const char *os_version,
                    int64_t min_ram_mb, int64_t min_disk_gb, char *error, size_t error_size)
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
        rc = s_backfill(self, old, key, error, error_size);
        protobuf_c_message_free_unpacked(&old->base, NULL);
        return rc;
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
    char id[UTIL_ID_LEN], id_key[KEYS_MAX];
    util_uuid(id);
    Berth__Image image = BERTH__IMAGE__INIT;
    image.id = id;
    image.name = (char *)name;
    image.os = (char *)os;
    image.os_version = (char *)os_version;
    image.arch = "x86_64";
    image.min_ram_mb = min_ram_mb;
    image.min_disk_gb = min_disk_gb;
    image.created_ms = util_now_ms();
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
    if (!old) {
        model_tx_put(tx, key, &image.base);
        model_tx_transition(tx, LIFECYCLE_IMAGE, key, "", "READY", 0, "image", name, "id", id,
                            NULL);
        model_tx_hset(tx, keys_build(id_key, KEYS_IMAGE_ID, id, NULL), "name", name);
        model_tx_sadd(tx, CATALOG_SET, name);
    } else {
        model_tx_put_fields(tx, key, &image.base, "path", "format", "size_bytes", "sha256", NULL);
        model_tx_sadd(tx, CATALOG_SET, name);
    }
    rc = model_tx_commit(tx, self->store, NULL);
    model_tx_destroy(&tx);
    if (rc < 0) {
        if (old)
            protobuf_c_message_free_unpacked(&old->base, NULL);
        snprintf(error, error_size, "cannot record image '%s': state store unreachable", name);
        return -1;
    }
    /* MODEL_CONFLICT: another instance recorded it first; its record stands. A record we
       repaired may still lack an id or a state: give it both. */
    if (rc == 0 && old) {
        Berth__Image *now = NULL;
        if (model_load(self->store, &berth__image__descriptor, key, (ProtobufCMessage **)&now) ==
            0) {
            rc = s_backfill(self, now, key, error, error_size);
            protobuf_c_message_free_unpacked(&now->base, NULL);
        }
    }
    if (old)
        protobuf_c_message_free_unpacked(&old->base, NULL);
    return rc < 0 ? -1 : 0;
}

int catalog_ensure_base(catalog_t *self, char *error, size_t error_size)
{
    for (size_t i = 0; i < sizeof s_base / sizeof s_base[0]; i++)
        if (s_ensure(self, s_base[i].name, s_base[i].os, s_base[i].os_version, s_base[i].min_ram_mb,
                     s_base[i].min_disk_gb, error, error_size) != 0)
            return -1;
    return 0;
}

int catalog_get(catalog_t *self, const char *ref, Berth__Image **image_p)
{
    char key[KEYS_MAX], name[72];
    if (ref && util_is_uuid(ref)) {
        redisReply *r =
            store_command(self->store, "HGET %s name", keys_build(key, KEYS_IMAGE_ID, ref, NULL));
        if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL)) {
            if (r)
                freeReplyObject(r);
            return -1;
        }
        int found = r->type == REDIS_REPLY_STRING && catalog_valid_name(r->str);
        if (found)
            util_strlcpy(name, r->str, sizeof name);
        freeReplyObject(r);
        if (!found)
            return CATALOG_NOT_FOUND;
        ref = name;
    }
    if (!catalog_valid_name(ref))
        return CATALOG_NOT_FOUND;
    int rc = model_load(self->store, &berth__image__descriptor,
                        keys_build(key, KEYS_IMAGE, ref, NULL), (ProtobufCMessage **)image_p);
    return rc == MODEL_NOT_FOUND ? CATALOG_NOT_FOUND : rc;
}

const char *catalog_dir(catalog_t *self)
{
    return self->dir;
}

int catalog_import_begin(catalog_t *self, const Berth__Image *image, const char *actor,
                         const char *request_id, berth_error_t *error)
{
    char key[KEYS_MAX], id_key[KEYS_MAX];
    keys_build(key, KEYS_IMAGE, image->name, NULL);
    model_tx_t *tx = model_tx_new();
    if (!tx)
        return error_set(error, "INTERNAL", "out of memory");
    model_tx_actor(tx, actor, request_id);
    /* The name and the id must be free when the transaction runs. */
    model_tx_check(tx, key, "name", "");
    model_tx_check(tx, keys_build(id_key, KEYS_IMAGE_ID, image->id, NULL), "name", "");
    Berth__Image record = *image;
    record.worker = self->instance;
    model_tx_put(tx, key, &record.base);
    model_tx_transition(tx, LIFECYCLE_IMAGE, key, "", "IMPORTING", 0, "image", image->name, "id",
                        image->id, NULL);
    model_tx_hset(tx, id_key, "name", image->name);
    model_tx_sadd(tx, CATALOG_SET, image->name);
    const char *why = NULL;
    int rc = model_tx_commit(tx, self->store, &why);
    model_tx_destroy(&tx);
    if (rc == MODEL_CONFLICT) {
        error_field(error, "name", "an image named '%s' exists already", image->name);
        util_strlcpy(error->code, "CONFLICT", sizeof error->code);
        return -1;
    }
    if (rc != 0)
        return error_set(error, rc < 0 ? "UNAVAILABLE" : "INTERNAL",
                         rc < 0 ? "state store unreachable" : "cannot record the image: %s",
                         why ? why : "refused");
    return 0;
}

int catalog_import_end(catalog_t *self, const char *name, const char *path, const char *kernel,
                       const char *initrd, int64_t size, const char *sha256, const char *fault)
{
    char key[KEYS_MAX];
    keys_build(key, KEYS_IMAGE, name, NULL);
    Berth__Image image = BERTH__IMAGE__INIT;
    model_tx_t *tx = model_tx_new();
    if (!tx)
        return -1;
    image.worker = ""; /* ended: no one works on it any more */
    if (fault) {
        image.fault = (char *)fault;
        model_tx_put_fields(tx, key, &image.base, "fault", "worker", NULL);
        model_tx_transition(tx, LIFECYCLE_IMAGE, key, "IMPORTING", "FAILED", MODEL_VERSION_ANY,
                            "image", name, "fault", fault, NULL);
    } else {
        image.path = (char *)path;
        image.size_bytes = size;
        image.sha256 = (char *)sha256;
        image.kernel_path = (char *)(kernel ? kernel : "");
        image.initrd_path = (char *)(initrd ? initrd : "");
        model_tx_put_fields(tx, key, &image.base, "path", "size_bytes", "sha256", "kernel_path",
                            "initrd_path", "worker", NULL);
        model_tx_transition(tx, LIFECYCLE_IMAGE, key, "IMPORTING", "READY", MODEL_VERSION_ANY,
                            "image", name, "sha256", sha256, NULL);
    }
    int rc = model_tx_commit(tx, self->store, NULL);
    model_tx_destroy(&tx);
    return rc < 0 ? -1 : rc;
}

int catalog_stage_begin(catalog_t *self, const Berth__Image *model, const Berth__Image *staged,
                        const char *actor, const char *request_id, berth_error_t *error)
{
    char key[KEYS_MAX], id_key[KEYS_MAX], model_key[KEYS_MAX], staged_key[KEYS_MAX];
    keys_build(key, KEYS_IMAGE, staged->name, NULL);
    keys_build(model_key, KEYS_IMAGE, model->name, NULL);
    model_tx_t *tx = model_tx_new();
    if (!tx)
        return error_set(error, "INTERNAL", "out of memory");
    model_tx_actor(tx, actor, request_id);
    /* The model must still be READY (a deletion moves it to DELETING first, then looks for
       staged images), and the name and id free. */
    model_tx_check(tx, model_key, "state", "READY");
    model_tx_check(tx, model_key, "id", model->id);
    model_tx_check(tx, key, "name", "");
    model_tx_check(tx, keys_build(id_key, KEYS_IMAGE_ID, staged->id, NULL), "name", "");
    Berth__Image record = *staged;
    record.worker = self->instance;
    model_tx_put(tx, key, &record.base);
    model_tx_transition(tx, LIFECYCLE_IMAGE, key, "", "STAGING", 0, "image", staged->name, "id",
                        staged->id, "model", model->id, NULL);
    model_tx_hset(tx, id_key, "name", staged->name);
    model_tx_sadd(tx, CATALOG_SET, staged->name);
    model_tx_zadd(tx, keys_build(staged_key, KEYS_IMAGE_STAGED, model->id, NULL),
                  staged->created_ms, staged->name);
    const char *why = NULL;
    int rc = model_tx_commit(tx, self->store, &why);
    model_tx_destroy(&tx);
    if (rc == MODEL_CONFLICT) {
        error_set(error, "CONFLICT",
                  "image '%s' changed meanwhile (it must be READY), or '%s' is taken; try again",
                  model->name, staged->name);
        return -1;
    }
    if (rc != 0)
        return error_set(error, rc < 0 ? "UNAVAILABLE" : "INTERNAL",
                         rc < 0 ? "state store unreachable" : "cannot record the image: %s",
                         why ? why : "refused");
    return 0;
}

int catalog_stage_progress(catalog_t *self, const char *name, const char *stage, int percent)
{
    char key[KEYS_MAX];
    keys_build(key, KEYS_IMAGE, name, NULL);
    Berth__Image image = BERTH__IMAGE__INIT;
    image.stage = (char *)stage;
    image.percent = percent;
    model_tx_t *tx = model_tx_new();
    if (!tx)
        return -1;
    model_tx_check(tx, key, "state", "STAGING");
    model_tx_put_fields(tx, key, &image.base, "stage", "percent", NULL);
    int rc = model_tx_commit(tx, self->store, NULL);
    model_tx_destroy(&tx);
    return rc < 0 ? -1 : rc;
}

int catalog_stage_end(catalog_t *self, const char *name, const catalog_staged_t *done,
                      const char *fault)
{
    char key[KEYS_MAX];
    keys_build(key, KEYS_IMAGE, name, NULL);
    Berth__Image image = BERTH__IMAGE__INIT;
    model_tx_t *tx = model_tx_new();
    if (!tx)
        return -1;
    image.worker = ""; /* ended: no one works on it any more */
    if (fault) {
        image.fault = (char *)fault;
        model_tx_put_fields(tx, key, &image.base, "fault", "worker", NULL);
        model_tx_transition(tx, LIFECYCLE_IMAGE, key, "STAGING", "FAILED", MODEL_VERSION_ANY,
                            "image", name, "fault", fault, NULL);
    } else {
        image.path = (char *)done->path;
        image.format = "qcow2";
        image.size_bytes = done->size;
        image.sha256 = (char *)done->sha256;
        image.manifest = (char *)done->manifest;
        image.sysprep_report = (char *)done->report;
        image.stage = "";
        image.percent = 100;
        model_tx_put_fields(tx, key, &image.base, "path", "format", "size_bytes", "sha256",
                            "manifest", "sysprep_report", "stage", "percent", "worker", NULL);
        model_tx_transition(tx, LIFECYCLE_IMAGE, key, "STAGING", "READY", MODEL_VERSION_ANY,
                            "image", name, "sha256", done->sha256, NULL);
    }
    int rc = model_tx_commit(tx, self->store, NULL);
    model_tx_destroy(&tx);
    return rc < 0 ? -1 : rc;
}

/* Does the image (name, id) appear in the `image` field of these hashes' rows (HMGET image
   name [state])? Adds the users' names to found (comma-separated, a few). */
static size_t s_users(const redisReply *rows, const char *name, const char *id, int vms,
                      char *found, size_t found_size)
{
    size_t n = 0;
    for (size_t i = 0; rows && i < rows->elements; i++) {
        const redisReply *row = rows->element[i];
        if (row->type != REDIS_REPLY_ARRAY || row->elements < (vms ? 3u : 2u))
            continue;
        const char *image = row->element[0]->type == REDIS_REPLY_STRING ? row->element[0]->str : "";
        const char *who = row->element[1]->type == REDIS_REPLY_STRING ? row->element[1]->str : "";
        if (strcmp(image, name) != 0 && !(id && *id && strcmp(image, id) == 0))
            continue;
        if (vms) {
            const char *state =
                row->element[2]->type == REDIS_REPLY_STRING ? row->element[2]->str : "";
            if (strcmp(state, "DISPOSED") == 0 || strcmp(state, "REJECTED") == 0)
                continue;
        }
        size_t at = strlen(found);
        if (n < 5 && at + strlen(who) + 2 < found_size)
            snprintf(found + at, found_size - at, "%s%s", at ? "," : "", who);
        n++;
    }
    return n;
}

#define S_BATCH 256 /* hashes read per script call while looking for an image's users */

/* How many hashes of the zset index (kind's keys) name the image in field; their names into
   found. -1 when Redis failed. */
static long s_count_users(catalog_t *self, const char *index, keys_kind_t kind, int vms,
                          const char *field, const char *name, const char *id, char *found,
                          size_t found_size)
{
    redisReply *ids = store_command(self->store, "ZRANGE %s 0 -1", index);
    if (!ids || ids->type != REDIS_REPLY_ARRAY) {
        if (ids)
            freeReplyObject(ids);
        return -1;
    }
    long users = 0;
    char(*keys)[KEYS_MAX] = calloc(S_BATCH, sizeof *keys);
    const char **argv = calloc(S_BATCH + 3, sizeof *argv);
    for (size_t at = 0; keys && argv && at < ids->elements && users >= 0; at += S_BATCH) {
        size_t n = 0;
        for (size_t i = at; i < ids->elements && n < S_BATCH; i++)
            if (ids->element[i]->type == REDIS_REPLY_STRING)
                argv[n] = keys_build(keys[n], kind, ids->element[i]->str, NULL), n++;
        argv[n] = field;
        argv[n + 1] = "name";
        argv[n + 2] = "state";
        redisReply *rows =
            store_run(self->store, &lua_hash_rows, (int)n, (int)n + (vms ? 3 : 2), argv);
        if (!rows || rows->type != REDIS_REPLY_ARRAY)
            users = -1;
        else
            users += (long)s_users(rows, name, id, vms, found, found_size);
        if (rows)
            freeReplyObject(rows);
    }
    if (!keys || !argv)
        users = -1;
    free(keys);
    free(argv);
    freeReplyObject(ids);
    return users;
}

/* How many staged images the zset key lists (a few of their names into found); -1 when
   Redis failed. */
static long s_staged_of(catalog_t *self, const char *key, char *found, size_t found_size)
{
    redisReply *r = store_command(self->store, "ZRANGE %s 0 -1", key);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return -1;
    }
    long n = (long)r->elements;
    for (size_t i = 0; i < r->elements && i < 5; i++) {
        size_t at = strlen(found);
        if (r->element[i]->type == REDIS_REPLY_STRING && at + r->element[i]->len + 2 < found_size)
            snprintf(found + at, found_size - at, "%s%s", at ? "," : "", r->element[i]->str);
    }
    freeReplyObject(r);
    return n;
}

/* Move the image back from DELETING to where it was. */
static void s_keep(catalog_t *self, const char *key, const char *name, const char *to)
{
    model_tx_t *tx = model_tx_new();
    if (!tx)
        return;
    model_tx_transition(tx, LIFECYCLE_IMAGE, key, "DELETING", to, MODEL_VERSION_ANY, "image", name,
                        NULL);
    model_tx_commit(tx, self->store, NULL);
    model_tx_destroy(&tx);
}

/*  Deleting an image while nothing uses it. A template names an image by name; a VM keeps
    the name of the image it was built from. The image first goes DELETING (a checked
    transition): from then on a new template naming it is refused (approval checks the state
    is READY in the transaction that adds the template), so what the scan below finds is
    every template there will be. VMs come from templates; one not DISPOSED (or REJECTED)
    that names the image keeps it too. Then the record goes, and its file. */
/* The chunk digest sidecars the transfer keeps next to an image file (transfer.c). */
static void s_unlink_sidecars(const char *path)
{
    char pattern[PATH_MAX + 16];
    glob_t found;
    if (snprintf(pattern, sizeof pattern, "%s.chunks-*", path) >= (int)sizeof pattern ||
        glob(pattern, GLOB_NOSORT, NULL, &found) != 0)
        return;
    for (size_t i = 0; i < found.gl_pathc; i++)
        unlink(found.gl_pathv[i]);
    globfree(&found);
}

int catalog_delete(catalog_t *self, const char *ref, const char *actor, const char *request_id,
                   Berth__Image **deleted_p, berth_error_t *error)
{
    Berth__Image *image = NULL;
    int rc = catalog_get(self, ref, &image);
    if (rc == CATALOG_NOT_FOUND)
        return error_set(error, "NOT_FOUND", "no such image");
    if (rc != 0)
        return error_set(error, "UNAVAILABLE", "state store unreachable");
    const char *state = image->state ? image->state : "";
    if (strcmp(state, "READY") != 0 && strcmp(state, "FAILED") != 0) {
        error_set(error, "CONFLICT", "image '%s' is %s: it cannot be deleted now", image->name,
                  *state ? state : "not recorded with a state yet");
        error_detail(error, "state", "%s", state);
        protobuf_c_message_free_unpacked(&image->base, NULL);
        return -1;
    }
    char key[KEYS_MAX], id_key[KEYS_MAX];
    keys_build(key, KEYS_IMAGE, image->name, NULL);
    model_tx_t *tx = model_tx_new();
    if (!tx) {
        protobuf_c_message_free_unpacked(&image->base, NULL);
        return error_set(error, "INTERNAL", "out of memory");
    }
    model_tx_actor(tx, actor, request_id);
    model_tx_transition(tx, LIFECYCLE_IMAGE, key, state, "DELETING", image->version, "image",
                        image->name, NULL);
    rc = model_tx_commit(tx, self->store, NULL);
    model_tx_destroy(&tx);
    if (rc != 0) {
        protobuf_c_message_free_unpacked(&image->base, NULL);
        return rc == MODEL_CONFLICT
                   ? error_set(error, "CONFLICT", "the image changed meanwhile; try again")
                   : error_set(error, "UNAVAILABLE", "state store unreachable");
    }
    char templates[256] = "", vms[256] = "", staged_names[256] = "", staged_key[KEYS_MAX];
    int is_staged = image->kind && strcmp(image->kind, "staged") == 0;
    long t = s_count_users(self, KEYS_TEMPLATES, KEYS_TEMPLATE, 0, "image", image->name, image->id,
                           templates, sizeof templates);
    long v = t < 0 ? -1
                   : s_count_users(self, KEYS_VMS, KEYS_VM, 1, "image", image->name, image->id, vms,
                                   sizeof vms);
    /* A staged image is also used by the VMs built from it (their staged_image); a model by
       the staged images derived from it. */
    long vs = 0, s = 0;
    if (v >= 0 && is_staged)
        vs = s_count_users(self, KEYS_VMS, KEYS_VM, 1, "staged_image", image->id, image->id, vms,
                           sizeof vms);
    else if (v >= 0 && image->id && *image->id)
        s = s_staged_of(self, keys_build(staged_key, KEYS_IMAGE_STAGED, image->id, NULL),
                        staged_names, sizeof staged_names);
    v = vs < 0 ? -1 : v < 0 ? v : v + vs;
    if (t != 0 || v != 0 || s != 0) {
        s_keep(self, key, image->name, state);
        if (t < 0 || v < 0 || s < 0)
            error_set(error, "UNAVAILABLE", "state store unreachable");
        else if (s > 0) {
            error_set(error, "CONFLICT", "image '%s' is the model of %ld staged image(s)",
                      image->name, s);
            error_detail(error, "staged", "%s", staged_names);
        } else {
            error_set(error, "CONFLICT",
                      "image '%s' is in use by %ld template(s) and %ld VM(s) not disposed",
                      image->name, t, v);
            if (t)
                error_detail(error, "templates", "%s", templates);
            if (v)
                error_detail(error, "vms", "%s", vms);
        }
        protobuf_c_message_free_unpacked(&image->base, NULL);
        return -1;
    }
    tx = model_tx_new();
    if (!tx) {
        s_keep(self, key, image->name, state);
        protobuf_c_message_free_unpacked(&image->base, NULL);
        return error_set(error, "INTERNAL", "out of memory");
    }
    model_tx_actor(tx, actor, request_id);
    model_tx_check(tx, key, "state", "DELETING");
    model_tx_del(tx, key);
    if (image->id && *image->id)
        model_tx_del(tx, keys_build(id_key, KEYS_IMAGE_ID, image->id, NULL));
    model_tx_srem(tx, CATALOG_SET, image->name);
    if (is_staged && image->model && *image->model)
        model_tx_zrem(tx, keys_build(staged_key, KEYS_IMAGE_STAGED, image->model, NULL),
                      image->name);
    model_tx_event(tx, "image.deleted", "key", key, "image", image->name, "id",
                   image->id ? image->id : "", "actor", actor ? actor : "", NULL);
    rc = model_tx_commit(tx, self->store, NULL);
    model_tx_destroy(&tx);
    if (rc != 0) {
        protobuf_c_message_free_unpacked(&image->base, NULL);
        return error_set(error, rc < 0 ? "UNAVAILABLE" : "CONFLICT",
                         rc < 0 ? "state store unreachable" : "the image changed meanwhile");
    }
    /* The files go only when they are the store's own (a direct-boot image's kernel and initrd
       beside its disk). */
    size_t dl = strlen(self->dir);
    const char *files[3] = { image->path, image->kernel_path, image->initrd_path };
    /* A staged image shares its model's kernel and initrd: only its disk is its own. */
    for (int i = 0; i < (is_staged ? 1 : 3); i++)
        if (files[i] && strncmp(files[i], self->dir, dl) == 0 && files[i][dl] == '/' &&
            !strstr(files[i] + dl, "/..")) {
            unlink(files[i]);
            if (i == 0)
                s_unlink_sidecars(files[i]);
        }
    *deleted_p = image;
    return 0;
}

/* An unpacked string field emptied: protobuf-c frees what is not its shared default. */
static char *s_clear(char *text)
{
    if (text && text != protobuf_c_empty_string)
        free(text);
    return (char *)protobuf_c_empty_string;
}

static int s_by_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int catalog_list(catalog_t *self, const char *kind, Berth__ImageList **list_p)
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
        if (got != 0) /* a name whose record vanished meanwhile is skipped */
            continue;
        const char *its = image->kind && *image->kind ? image->kind : "model";
        if (kind && *kind && strcmp(kind, its) != 0) {
            protobuf_c_message_free_unpacked(&image->base, NULL);
            continue;
        }
        /* A list carries no manifests: GET /v1/images/{id} shows them. */
        image->manifest = s_clear(image->manifest);
        image->sysprep_report = s_clear(image->sysprep_report);
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

void catalog_work_begin(catalog_t *self, const char *id)
{
    zhashx_update(self->working, id, (void *)"");
}

void catalog_work_end(catalog_t *self, const char *id)
{
    zhashx_delete(self->working, id);
}

/* Remove the files matching pattern (a glob). */
static void s_unlink_glob(const char *pattern)
{
    glob_t found;
    if (glob(pattern, GLOB_NOSORT, NULL, &found) != 0)
        return;
    for (size_t i = 0; i < found.gl_pathc; i++)
        if (unlink(found.gl_pathv[i]) == 0)
            log_info(NULL, "partial image file removed", "{s:s}", "file", found.gl_pathv[i]);
    globfree(&found);
}

/* Every file of image id that is not a READY record's: its copy or staging in progress
   (.import-<id>*, .stage-<id>.*) and a file already named as the store's (<id>.*). */
static void s_unlink_partial(catalog_t *self, const char *id)
{
    static const char *const patterns[] = { "%s/.import-%s*", "%s/.stage-%s.*", "%s/%s.*" };
    char pattern[PATH_MAX + 64];
    for (size_t i = 0; i < sizeof patterns / sizeof patterns[0]; i++) {
        snprintf(pattern, sizeof pattern, patterns[i], self->dir, id);
        s_unlink_glob(pattern);
    }
}

/* Is the image someone's work in progress: its worker a live instance other than this one,
   or this one with a job on it here? */
static int s_worked_on(catalog_t *self, const Berth__Image *image, const char *const *live,
                       size_t n)
{
    const char *worker = image->worker ? image->worker : "";
    if (!*worker)
        return 0;
    if (streq(worker, self->instance))
        return zhashx_lookup(self->working, image->id) != NULL;
    for (size_t i = 0; i < n; i++)
        if (streq(worker, live[i]))
            return 1;
    return 0;
}

/* A captured image recorded and not yet ended: its upload's files are still here. */
static int s_capture_pending(catalog_t *self, const Berth__Image *image)
{
    char meta[PATH_MAX + 64];
    snprintf(meta, sizeof meta, "%s/uploads/%s.meta", self->dir, image->id);
    return streq(image->state, "IMPORTING") && image->captured_from && *image->captured_from &&
           files_exists(meta);
}

/* Why the orphan did not finish, into fault. */
static void s_orphan_why(const Berth__Image *image, char *fault, size_t size)
{
    const char *worker = image->worker && *image->worker ? image->worker : "an earlier stager";
    snprintf(fault, size, "the stager %s stopped while the image was %s", worker,
             streq(image->state, "STAGING") ? "being staged" : "being imported");
}

/* Make this instance the worker of the orphan, if it is still as we saw it. 0 when taken,
   MODEL_CONFLICT, or -1. */
static int s_take_orphan(catalog_t *self, const Berth__Image *image)
{
    char key[KEYS_MAX];
    keys_build(key, KEYS_IMAGE, image->name, NULL);
    Berth__Image update = BERTH__IMAGE__INIT;
    update.worker = self->instance;
    model_tx_t *tx = model_tx_new();
    if (!tx)
        return -1;
    model_tx_check(tx, key, "worker", image->worker ? image->worker : "");
    model_tx_check(tx, key, "state", image->state);
    model_tx_put_fields(tx, key, &update.base, "worker", NULL);
    int rc = model_tx_commit(tx, self->store, NULL);
    model_tx_destroy(&tx);
    return rc < 0 ? -1 : rc;
}

/* End the orphan FAILED, if it is still as we saw it (state and worker). */
static int s_fail_orphan(catalog_t *self, const Berth__Image *image)
{
    char key[KEYS_MAX], fault[256], why[200];
    keys_build(key, KEYS_IMAGE, image->name, NULL);
    const char *worker = image->worker && *image->worker ? image->worker : "an earlier stager";
    s_orphan_why(image, why, sizeof why);
    snprintf(fault, sizeof fault, "%s; %s it again", why,
             streq(image->state, "STAGING") ? "stage" : "import");
    Berth__Image update = BERTH__IMAGE__INIT;
    update.fault = fault;
    update.worker = "";
    update.stage = "";
    model_tx_t *tx = model_tx_new();
    if (!tx)
        return -1;
    model_tx_check(tx, key, "worker", image->worker ? image->worker : "");
    model_tx_put_fields(tx, key, &update.base, "fault", "worker", "stage", NULL);
    model_tx_transition(tx, LIFECYCLE_IMAGE, key, image->state, "FAILED", image->version, "image",
                        image->name, "fault", fault, NULL);
    int rc = model_tx_commit(tx, self->store, NULL);
    model_tx_destroy(&tx);
    if (rc == 0)
        log_warn(NULL, "image left unfinished by a stopped stager ended FAILED",
                 "{s:s, s:s, s:s, s:s}", "image", image->name, "id", image->id, "state",
                 image->state, "worker", worker);
    return rc < 0 ? -1 : rc;
}

int catalog_recover(catalog_t *self, const char *const *live, size_t n, catalog_resume_fn *resume,
                    void *arg, int *failed_p)
{
    Berth__ImageList *list = NULL;
    if (catalog_list(self, NULL, &list) != 0)
        return -1;
    zhashx_t *busy = zhashx_new(); /* ids whose partial files are someone's work */
    int failed = 0, rc = 0;
    for (size_t i = 0; busy && i < list->n_images; i++) {
        const Berth__Image *image = list->images[i];
        const char *state = image->state ? image->state : "";
        if (!image->id || !*image->id || (!streq(state, "IMPORTING") && !streq(state, "STAGING")))
            continue;
        if (s_worked_on(self, image, live, n) || s_capture_pending(self, image)) {
            zhashx_update(busy, image->id, (void *)"");
            continue;
        }
        if (resume && streq(state, "IMPORTING") && image->import_path && *image->import_path) {
            /* A path import: its files may still be there; import it again. */
            char why[200];
            s_orphan_why(image, why, sizeof why);
            int taken = s_take_orphan(self, image);
            if (taken < 0) {
                rc = -1;
                break;
            }
            if (taken != 0)
                continue; /* changed meanwhile: another instance took it */
            s_unlink_partial(self, image->id);
            catalog_work_begin(self, image->id);
            zhashx_update(busy, image->id, (void *)"");
            log_warn(NULL, "image left unfinished by a stopped stager is imported again",
                     "{s:s, s:s, s:s}", "image", image->name, "id", image->id, "worker",
                     image->worker);
            if (resume(arg, image, why) != 0) {
                char fault[256];
                snprintf(fault, sizeof fault, "%s; the stager was too busy to import it again",
                         why);
                catalog_work_end(self, image->id);
                catalog_import_end(self, image->name, NULL, NULL, NULL, 0, NULL, fault);
            }
            failed++;
            continue;
        }
        int ended = s_fail_orphan(self, image);
        if (ended < 0) {
            rc = -1;
            break;
        }
        if (ended == 0) {
            failed++;
            s_unlink_partial(self, image->id);
        }
    }
    /* Partial files of images no one works on (their record gone, ended, or never
       written): the leftovers of a stager that died. */
    static const char *const prefixes[] = { ".import-", ".stage-" };
    for (size_t p = 0; rc == 0 && busy && p < 2; p++) {
        char pattern[PATH_MAX + 32];
        glob_t found;
        snprintf(pattern, sizeof pattern, "%s/%s*", self->dir, prefixes[p]);
        if (glob(pattern, GLOB_NOSORT, NULL, &found) != 0)
            continue;
        size_t skip = strlen(self->dir) + 1 + strlen(prefixes[p]);
        for (size_t i = 0; i < found.gl_pathc; i++) {
            char id[UTIL_ID_LEN];
            util_strlcpy(id, found.gl_pathv[i] + skip, sizeof id);
            if (util_is_uuid(id) && !zhashx_lookup(busy, id) && !zhashx_lookup(self->working, id) &&
                unlink(found.gl_pathv[i]) == 0)
                log_info(NULL, "partial image file removed", "{s:s}", "file", found.gl_pathv[i]);
        }
        globfree(&found);
    }
    if (!busy)
        rc = -1;
    zhashx_destroy(&busy);
    protobuf_c_message_free_unpacked(&list->base, NULL);
    if (rc == 0)
        *failed_p = failed;
    return rc;
}
