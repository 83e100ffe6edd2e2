/*  berth-stager: the image store. Keeps the image catalog (base images it creates when
    missing) and builds each VM's cloud-init NoCloud seed, which taskmgr hands to the agent
    with the create command. Handlers: ListImages, StageImage. */
#include "service.h"
#include "catalog.h"
#include "files.h"
#include "seed.h"

#include <errno.h>
#include <limits.h>
#include <sodium.h>

#define CATALOG_CHECK_MS 30000 /* how often a prepared catalog is checked again */

typedef struct {
    service_t *service;
    catalog_t *catalog;
    seed_t *seeds;
    int64_t max_seed_bytes; /* largest ISO sent in a reply */
    int64_t seed_keep_ms;   /* seeds untouched this long are swept */
    int ready;              /* base images were prepared once */
    int64_t next_check_ms;  /* monotonic ms of the next catalog check */
    char not_ready[768];    /* last failure, logged once per reason; "" when fine */
} stager_t;

/* Make sure the base images exist and are recorded. Runs every second until it works
   (Redis may come up after the stager; until then requests are answered UNAVAILABLE), then
   every CATALOG_CHECK_MS to repair a record or file lost since (Redis flushed, file deleted). */
static int s_prepare(service_t *service, void *arg)
{
    (void)service;
    stager_t *self = arg;
    if (self->ready && util_mono_ms() < self->next_check_ms)
        return 0;
    char error[768];
    if (catalog_ensure_base(self->catalog, error, sizeof error) != 0) {
        if (strcmp(error, self->not_ready) != 0)
            log_error(NULL, "cannot prepare the base images; retrying", "{s:s}", "reason", error);
        util_strlcpy(self->not_ready, error, sizeof self->not_ready);
        return 0;
    }
    if (!self->ready || self->not_ready[0])
        log_info(NULL, "base images ready", NULL);
    self->ready = 1;
    self->not_ready[0] = '\0';
    self->next_check_ms = util_mono_ms() + CATALOG_CHECK_MS;
    return 0;
}

static void s_on_list_images(bus_request_t *request, void *arg)
{
    stager_t *self = arg;
    if (!bus_request_body(request, &berth__list_images__descriptor)) {
        bus_reply_error(request, "BAD_REQUEST", "expected a ListImages body");
        return;
    }
    if (!self->ready) {
        bus_reply_error(request, "UNAVAILABLE", "base images are not ready yet");
        return;
    }
    Berth__ImageList *list = NULL;
    if (catalog_list(self->catalog, &list) != 0) {
        bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
        return;
    }
    bus_reply(request, &list->base);
    protobuf_c_message_free_unpacked(&list->base, NULL);
}

/* Resolve the image, build (or find) the seed, answer both. Idempotent by vm. */
static void s_on_stage_image(bus_request_t *request, void *arg)
{
    stager_t *self = arg;
    const char *rid = bus_request_envelope(request)->request_id;
    Berth__StageImage *req = bus_request_body(request, &berth__stage_image__descriptor);
    if (!req) {
        bus_reply_error(request, "BAD_REQUEST", "expected a StageImage body");
        return;
    }
    if (!self->ready) {
        bus_reply_error(request, "UNAVAILABLE", "base images are not ready yet");
        return;
    }
    if (!util_is_uuid(req->vm)) {
        bus_reply_error(request, "BAD_REQUEST", "vm must be a lower-case UUID");
        return;
    }
    if (!catalog_valid_name(req->image)) {
        bus_reply_error(request, "BAD_REQUEST",
                        "image must be 1 to 64 of a-z, 0-9, '.', '_' and '-'");
        return;
    }
    Berth__Image *image = NULL;
    int rc = catalog_get(self->catalog, req->image, &image);
    if (rc == CATALOG_NOT_FOUND) {
        char msg[160];
        snprintf(msg, sizeof msg, "no image named '%s'", req->image);
        bus_reply_error(request, "NOT_FOUND", msg);
        return;
    }
    if (rc != 0) {
        bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
        return;
    }
    char error[768];
    char *path = NULL;
    rc = seed_stage(self->seeds, req->vm, req->name, req->user_data, &path, error, sizeof error);
    uint8_t *iso = NULL;
    size_t size = 0;
    if (rc == 0 && files_read(path, (size_t)self->max_seed_bytes, &iso, &size) != 0) {
        snprintf(error, sizeof error, "cannot read seed '%s': %s", path, strerror(errno));
        rc = -1;
    }
    if (rc == SEED_BAD_REQUEST)
        bus_reply_error(request, "BAD_REQUEST", error);
    else if (rc == SEED_CONFLICT)
        bus_reply_error(request, "CONFLICT", error);
    else if (rc != 0) {
        log_error(rid, "staging failed", "{s:s, s:s}", "vm", req->vm, "reason", error);
        bus_reply_error(request, "INTERNAL", error);
    } else {
        Berth__StagedImage reply = BERTH__STAGED_IMAGE__INIT;
        reply.image = image;
        reply.seed_iso.data = iso;
        reply.seed_iso.len = size;
        log_info(rid, "staged", "{s:s, s:s, s:s, s:s, s:I}", "vm", req->vm, "name", req->name,
                 "image", image->name, "seed", path, "seed_bytes", (json_int_t)size);
        bus_reply(request, &reply.base);
    }
    free(iso);
    free(path);
    protobuf_c_message_free_unpacked(&image->base, NULL);
}

static int s_sweep(service_t *service, void *arg)
{
    (void)service;
    stager_t *self = arg;
    int removed = seed_sweep(self->seeds, self->seed_keep_ms);
    if (removed > 0)
        log_info(NULL, "swept old seeds", "{s:i}", "removed", removed);
    return 0;
}

/* <data_dir>/<sub> unless the key is set. */
static int s_dir(config_t *c, const char *key, const char *sub, char *out, size_t size)
{
    const char *v = config_get(c, key);
    int n = v ? snprintf(out, size, "%s", v)
              : snprintf(out, size, "%s/%s", config_get(c, "data_dir"), sub);
    if (n <= 0 || (size_t)n >= size) {
        log_error(NULL, "directory path is too long", "{s:s}", "key", key);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    service_t *service = service_new("stager", argc, argv);
    if (!service)
        return 2;
    config_t *c = service_config(service);
    config_declare(c, "data_dir", "./.berth/stager", 0);
    config_declare(c, "images_dir", NULL, 0); /* default <data_dir>/images */
    config_declare(c, "seeds_dir", NULL, 0);  /* default <data_dir>/seeds */
    config_declare(c, "qemu_img", "qemu-img", 0);
    config_declare(c, "tool_timeout_ms", "10000", 0);
    config_declare(c, "base_image_size", "2G", 0);
    config_declare(c, "max_images", "1000", 0);
    config_declare(c, "max_user_data", "65536", 0);
    config_declare(c, "max_seed_bytes", "2097152", 0);
    config_declare(c, "seed_keep_hours", "168", 0);
    config_declare(c, "seed_sweep_ms", "600000", 0);

    stager_t self = { .service = service };
    int rc = 1;
    if (service_start(service) != 0)
        goto done;
    int64_t timeout, max_images, max_user_data, keep_hours, sweep_ms;
    if (config_int(c, "tool_timeout_ms", 100, 600000, &timeout) ||
        config_int(c, "max_images", 1, 100000, &max_images) ||
        config_int(c, "max_user_data", 0, 1024 * 1024, &max_user_data) ||
        config_int(c, "max_seed_bytes", 65536, 3 * 1024 * 1024, &self.max_seed_bytes) ||
        config_int(c, "seed_keep_hours", 1, 24 * 3650, &keep_hours) ||
        config_int(c, "seed_sweep_ms", 1000, 86400000, &sweep_ms))
        goto done;
    self.seed_keep_ms = keep_hours * 3600 * 1000;
    if (sodium_init() < 0) {
        log_error(NULL, "libsodium failed to initialise", NULL);
        goto done;
    }
    char images_dir[PATH_MAX], seeds_dir[PATH_MAX];
    if (s_dir(c, "images_dir", "images", images_dir, sizeof images_dir) ||
        s_dir(c, "seeds_dir", "seeds", seeds_dir, sizeof seeds_dir))
        goto done;
    catalog_config_t cc = { .qemu_img = config_get(c, "qemu_img"),
                            .base_size = config_get(c, "base_image_size"),
                            .timeout_ms = (int)timeout,
                            .max_images = (int)max_images };
    seed_config_t sc = { .max_user_data = (size_t)max_user_data };
    self.catalog = catalog_new(service_store(service), images_dir, &cc);
    if (!self.catalog) {
        log_error(NULL, "cannot open the images directory", "{s:s, s:s}", "dir", images_dir,
                  "reason", strerror(errno));
        goto done;
    }
    self.seeds = seed_new(seeds_dir, &sc);
    if (!self.seeds) {
        log_error(NULL, "cannot open the seeds directory", "{s:s, s:s}", "dir", seeds_dir, "reason",
                  strerror(errno));
        goto done;
    }
    log_info(NULL, "stores opened", "{s:s, s:s}", "images_dir", images_dir, "seeds_dir", seeds_dir);
    s_prepare(service, &self);
    service_every(service, 1000, s_prepare, &self);
    service_on(service, "ListImages", s_on_list_images, &self);
    service_on(service, "StageImage", s_on_stage_image, &self);
    service_every(service, (int)sweep_ms, s_sweep, &self);
    rc = service_run(service);
done:
    seed_destroy(&self.seeds);
    catalog_destroy(&self.catalog);
    service_destroy(&service);
    return rc;
}
