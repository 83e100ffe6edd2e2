/*  images: import in two jobs on the import worker. The first opens and inspects the file
    while the caller's request waits (kept with bus_request_defer): a refusal is the answer
    and nothing is stored. Accepted, the record is written IMPORTING on the loop, the request
    is answered with it, and the second job copies the file; its end writes READY or FAILED.
    A stager that dies mid-copy leaves the record IMPORTING (and a .import-* file in the
    images directory) until recovery (catalog_recover: at the next start of a stager and every
    recover_ms) ends it FAILED and removes the file; then it can be deleted and imported
    again. */
#include "images.h"
#include "sysprep.h"
#include "limit.h"
#include "log.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct _images_t {
    images_config_t config;
    size_t importing;
};

images_t *images_new(const images_config_t *config)
{
    images_t *self = calloc(1, sizeof *self);
    if (self)
        self->config = *config;
    return self;
}

void images_destroy(images_t **self_p)
{
    if (self_p && *self_p) {
        free(*self_p);
        *self_p = NULL;
    }
}

size_t images_importing(images_t *self)
{
    return self->importing;
}

Berth__UserAssertion *images_operator(assertion_t *verifier, bus_request_t *request,
                                      const Berth__SignedAssertion *assertion)
{
    berth_error_t error = { 0 };
    Berth__UserAssertion *who = NULL;
    const char *rid = bus_request_envelope(request)->request_id;
    if (assertion_of(verifier, request, assertion, &who, &error) != 0) {
        log_info(rid, "call without a valid user assertion refused", "{s:s}", "reason",
                 error.message);
        bus_reply_fault(request, &error);
        return NULL;
    }
    if (!assertion_has_role(who, "admin") && !assertion_has_role(who, "operator")) {
        error_set(&error, "FORBIDDEN", "%s needs the admin or operator role",
                  bus_request_envelope(request)->type);
        log_info(rid, "call refused: role", "{s:s, s:s}", "type",
                 bus_request_envelope(request)->type, "user", who->user);
        berth__user_assertion__free_unpacked(who, NULL);
        bus_reply_fault(request, &error);
        return NULL;
    }
    return who;
}

/* A short printable text: 1..max bytes (0..max when optional), no control character. */
static int s_text(berth_error_t *error, const char *field, const char *text, size_t max,
                  int required)
{
    size_t len = text ? strlen(text) : 0;
    if (required && len == 0)
        return error_field(error, field, "%s is required", field);
    if (len > max)
        return error_field(error, field, "%s is longer than %zu bytes", field, max);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f)
            return error_field(error, field, "%s holds a control character", field);
    return 0;
}

int images_check_meta(const Berth__Image *im, berth_error_t *error)
{
    if (!im)
        return error_field(error, "name", "name is required");
    if (!catalog_valid_name(im->name) || util_is_uuid(im->name))
        return error_field(error, "name",
                           "name must be 1 to 64 of a-z, 0-9, '.', '_' and '-' (starting with a "
                           "letter or digit), and not a UUID");
    if (s_text(error, "os", im->os, LIMIT_TEXT_MAX, 1) ||
        s_text(error, "os_version", im->os_version, LIMIT_IMAGE_TEXT_MAX, 0) ||
        s_text(error, "arch", im->arch, LIMIT_IMAGE_TEXT_MAX, 0))
        return -1;
    if (im->n_applications > LIMIT_IMAGE_APPS_MAX)
        return error_field(error, "applications", "at most %d applications", LIMIT_IMAGE_APPS_MAX);
    for (size_t i = 0; i < im->n_applications; i++)
        if (s_text(error, "applications", im->applications[i]->name, LIMIT_IMAGE_TEXT_MAX, 1) ||
            s_text(error, "applications", im->applications[i]->version, LIMIT_IMAGE_TEXT_MAX, 0))
            return -1;
        else if (im->applications[i]->min_ram_mb < 0 ||
                 im->applications[i]->min_ram_mb > LIMIT_RAM_MB_MAX ||
                 im->applications[i]->min_disk_gb < 0 ||
                 im->applications[i]->min_disk_gb > LIMIT_DISK_GB_MAX)
            return error_field(error, "applications",
                               "an application's min_ram_mb is 0 to %d, its min_disk_gb 0 to %d",
                               LIMIT_RAM_MB_MAX, LIMIT_DISK_GB_MAX);
    if (im->min_ram_mb < 0 || im->min_ram_mb > LIMIT_RAM_MB_MAX)
        return error_field(error, "min_ram_mb", "min_ram_mb must be 0 to %d", LIMIT_RAM_MB_MAX);
    if (im->min_disk_gb < 0 || im->min_disk_gb > LIMIT_DISK_GB_MAX)
        return error_field(error, "min_disk_gb", "min_disk_gb must be 0 to %d", LIMIT_DISK_GB_MAX);
    return 0;
}

/* The fields an import may set, checked; the rest of what the record holds is the store's. */
static int s_check_import(const Berth__ImportImage *req, berth_error_t *error)
{
    const Berth__Image *im = req->image;
    if (images_check_meta(im, error) != 0)
        return -1;
    if (!req->path || !*req->path)
        return error_field(error, "path", "path is required: a file under the import directory");
    if (strlen(req->path) > LIMIT_IMAGE_PATH_MAX)
        return error_field(error, "path", "path is longer than %d bytes", LIMIT_IMAGE_PATH_MAX);
    int kernel = req->kernel && *req->kernel, initrd = req->initrd && *req->initrd;
    if (kernel != initrd)
        return error_field(error, kernel ? "initrd" : "kernel",
                           "a direct-boot image names both its kernel and its initrd");
    if (s_text(error, "kernel", req->kernel, LIMIT_IMAGE_PATH_MAX, 0) ||
        s_text(error, "initrd", req->initrd, LIMIT_IMAGE_PATH_MAX, 0) ||
        s_text(error, "cmdline", im->cmdline, LIMIT_IMAGE_CMDLINE_MAX, 0))
        return -1;
    if (im->cmdline && *im->cmdline && !kernel)
        return error_field(error, "cmdline", "cmdline is for a direct-boot image (kernel, initrd)");
    if (req->manifest && *req->manifest) {
        char *normalized = NULL;
        if (sysprep_manifest_check(req->manifest, &normalized, error) != 0)
            return -1;
        free(normalized); /* normalized again when the record is written */
    }
    return 0;
}

typedef struct {
    images_t *images;
    bus_request_t *kept; /* the ImportImage, answered when the inspection ends (NULL: an
                            import taken over from a dead stager, images_resume) */
    char *user;          /* who imports (from the assertion) */
    char *src[3];        /* the files named: the image, its kernel and initrd ("" when none) */
    /* filled by the inspection */
    int fd;
    int boot_fd[2]; /* a direct-boot image's kernel and initrd, or -1 */
    char boot_path[2][4096];
    inspect_info_t info;
    berth_error_t error;
    int rc;
    /* the copy */
    char id[UTIL_ID_LEN];
    char name[72];
    char path[4096];
    char sha256[65];
    int64_t size;
    char fault[512];
} s_import_t;

static void s_import_free(s_import_t *job)
{
    if (job->fd >= 0)
        close(job->fd);
    for (int i = 0; i < 2; i++)
        if (job->boot_fd[i] >= 0)
            close(job->boot_fd[i]);
    if (job->kept)
        bus_request_destroy(&job->kept);
    free(job->user);
    for (int i = 0; i < 3; i++)
        free(job->src[i]);
    free(job);
}

static void s_inspect_run(void *arg)
{
    s_import_t *job = arg;
    job->rc =
        import_open(&job->images->config.import, job->src[0], &job->fd, &job->info, &job->error);
    if (job->rc == 0 && *job->src[1])
        job->rc = import_open_file(&job->images->config.import, job->src[1], "kernel",
                                   &job->boot_fd[0], &job->error) ||
                  import_open_file(&job->images->config.import, job->src[2], "initrd",
                                   &job->boot_fd[1], &job->error);
}

static void s_copy_run(void *arg)
{
    s_import_t *job = arg;
    job->rc =
        import_copy(&job->images->config.import, job->fd, job->id, job->info.format, job->path,
                    sizeof job->path, &job->size, job->sha256, job->fault, sizeof job->fault);
    static const char *const suffix[2] = { "kernel", "initrd" };
    for (int i = 0; job->rc == 0 && i < 2; i++)
        if (job->boot_fd[i] >= 0 &&
            import_copy_file(&job->images->config.import, job->boot_fd[i], job->id, suffix[i],
                             job->boot_path[i], sizeof job->boot_path[i], job->fault,
                             sizeof job->fault) != 0) {
            job->rc = -1;
            unlink(job->path);
            if (i == 1)
                unlink(job->boot_path[0]);
        }
}

static void s_copy_done(void *arg, int deliver)
{
    s_import_t *job = arg;
    images_t *self = job->images;
    self->importing--;
    catalog_work_end(self->config.catalog, job->id);
    if (!deliver) { /* shutting down: the record stays IMPORTING (see the top of the file) */
        if (job->rc == 0 && job->path[0]) {
            unlink(job->path);
            for (int i = 0; i < 2; i++)
                if (job->boot_path[i][0])
                    unlink(job->boot_path[i]);
        }
        s_import_free(job);
        return;
    }
    int rc = catalog_import_end(self->config.catalog, job->name, job->path, job->boot_path[0],
                                job->boot_path[1], job->size, job->sha256,
                                job->rc == 0 ? NULL : job->fault);
    if (job->rc == 0 && rc == 0)
        log_info(NULL, "image imported", "{s:s, s:s, s:s, s:I}", "image", job->name, "id", job->id,
                 "sha256", job->sha256, "size_bytes", (json_int_t)job->size);
    else if (job->rc != 0)
        log_warn(NULL, "image import failed", "{s:s, s:s}", "image", job->name, "reason",
                 job->fault);
    if (rc != 0) {
        log_error(NULL, "cannot record the end of an import", "{s:s, s:i}", "image", job->name,
                  "rc", rc);
        if (job->rc == 0) {
            unlink(job->path);
            for (int i = 0; i < 2; i++)
                if (job->boot_path[i][0])
                    unlink(job->boot_path[i]);
        }
    }
    s_import_free(job);
}

/* The copy job of an import whose record is IMPORTING. */
static void s_submit_copy(images_t *self, s_import_t *job)
{
    if (work_submit(self->config.work, s_copy_run, s_copy_done, job) != 0) {
        self->importing--;
        catalog_import_end(self->config.catalog, job->name, NULL, NULL, NULL, 0, NULL,
                           "the stager was too busy to copy the image; import it again");
        catalog_work_end(self->config.catalog, job->id);
        s_import_free(job);
        return;
    }
    catalog_work_begin(self->config.catalog, job->id);
}

static void s_inspect_done(void *arg, int deliver)
{
    s_import_t *job = arg;
    images_t *self = job->images;
    if (!deliver) {
        self->importing--;
        if (!job->kept) /* a takeover: the record stays IMPORTING for the next recovery */
            catalog_work_end(self->config.catalog, job->id);
        s_import_free(job); /* the caller resends to another instance */
        return;
    }
    if (!job->kept) { /* taken over from a dead stager (images_resume): its record exists */
        if (job->rc == 0) {
            log_info(NULL, "image import taken over", "{s:s, s:s}", "image", job->name, "id",
                     job->id);
            s_submit_copy(self, job);
            return;
        }
        self->importing--;
        char fault[1024];
        snprintf(fault, sizeof fault, "%s, and its file cannot be imported again: %s", job->fault,
                 job->error.message);
        catalog_import_end(self->config.catalog, job->name, NULL, NULL, NULL, 0, NULL, fault);
        catalog_work_end(self->config.catalog, job->id);
        log_warn(NULL, "image import not taken over", "{s:s, s:s}", "image", job->name, "reason",
                 job->error.message);
        s_import_free(job);
        return;
    }
    const char *rid = bus_request_envelope(job->kept)->request_id;
    if (job->rc != 0) {
        self->importing--;
        log_info(rid, "image import refused", "{s:s}", "reason", job->error.message);
        bus_reply_fault(job->kept, &job->error);
        s_import_free(job);
        return;
    }
    const Berth__ImportImage *req = bus_request_body(job->kept, &berth__import_image__descriptor);
    util_uuid(job->id);
    util_strlcpy(job->name, req->image->name, sizeof job->name);
    Berth__Image image = *req->image;
    image.id = job->id;
    image.path = "";
    image.sha256 = "";
    image.size_bytes = 0;
    image.format = job->info.format;
    image.state = "";
    image.fault = "";
    image.kernel_path = "";
    image.initrd_path = "";
    image.version = 0;
    image.created_ms = util_now_ms();
    if (!image.arch || !*image.arch)
        image.arch = "x86_64";
    image.kind = "model";
    image.model = "";
    image.stage = "";
    image.percent = 0;
    image.sysprep = "";
    image.sysprep_report = "";
    image.import_path = job->src[0];
    image.import_kernel = job->src[1];
    image.import_initrd = job->src[2];
    berth_error_t error = { 0 };
    char *manifest = NULL;
    if (req->manifest && *req->manifest &&
        sysprep_manifest_check(req->manifest, &manifest, &error) != 0) {
        self->importing--;
        bus_reply_fault(job->kept, &error);
        s_import_free(job);
        return;
    }
    image.manifest = manifest ? manifest : "";
    int begun = catalog_import_begin(self->config.catalog, &image, job->user, rid, &error);
    free(manifest);
    if (begun != 0) {
        self->importing--;
        bus_reply_fault(job->kept, &error);
        s_import_free(job);
        return;
    }
    Berth__Image *stored = NULL;
    if (catalog_get(self->config.catalog, job->id, &stored) == 0) {
        bus_reply(job->kept, &stored->base);
        protobuf_c_message_free_unpacked(&stored->base, NULL);
    } else {
        image.state = "IMPORTING";
        bus_reply(job->kept, &image.base);
    }
    log_info(rid, "image import accepted", "{s:s, s:s, s:s, s:I, s:s}", "image", job->name, "id",
             job->id, "format", job->info.format, "virtual_size",
             (json_int_t)job->info.virtual_size, "by", job->user);
    bus_request_destroy(&job->kept);
    s_submit_copy(self, job);
}

int images_resume(images_t *self, const Berth__Image *image, const char *why)
{
    s_import_t *job = calloc(1, sizeof *job);
    if (!job)
        return -1;
    job->images = self;
    job->fd = job->boot_fd[0] = job->boot_fd[1] = -1;
    job->user = strdup("");
    const char *src[3] = { image->import_path, image->import_kernel, image->import_initrd };
    for (int i = 0; i < 3; i++)
        job->src[i] = strdup(src[i] ? src[i] : "");
    util_strlcpy(job->id, image->id, sizeof job->id);
    util_strlcpy(job->name, image->name, sizeof job->name);
    util_strlcpy(job->fault, why, sizeof job->fault);
    if (!job->user || !job->src[0] || !job->src[1] || !job->src[2] ||
        work_submit(self->config.work, s_inspect_run, s_inspect_done, job) != 0) {
        s_import_free(job);
        return -1;
    }
    self->importing++;
    return 0;
}

static void s_on_import(bus_request_t *request, void *arg)
{
    images_t *self = arg;
    Berth__ImportImage *req = bus_request_body(request, &berth__import_image__descriptor);
    if (!req) {
        bus_reply_error(request, "BAD_REQUEST", "expected an ImportImage body");
        return;
    }
    Berth__UserAssertion *who = images_operator(self->config.verifier, request, req->assertion);
    if (!who)
        return;
    berth_error_t error = { 0 };
    Berth__Image *existing = NULL;
    int rc = s_check_import(req, &error)
                 ? -1
                 : catalog_get(self->config.catalog, req->image->name, &existing);
    if (rc == 0) {
        protobuf_c_message_free_unpacked(&existing->base, NULL);
        error_field(&error, "name", "an image named '%s' exists already", req->image->name);
        util_strlcpy(error.code, "CONFLICT", sizeof error.code);
    } else if (rc != CATALOG_NOT_FOUND && !error.code[0])
        error_set(&error, "UNAVAILABLE", "state store unreachable");
    if (error.code[0]) {
        berth__user_assertion__free_unpacked(who, NULL);
        bus_reply_fault(request, &error);
        return;
    }
    s_import_t *job = calloc(1, sizeof *job);
    if (job) {
        job->images = self;
        job->fd = job->boot_fd[0] = job->boot_fd[1] = -1;
        job->user = strdup(who->user ? who->user : "");
        const char *src[3] = { req->path, req->kernel, req->initrd };
        for (int i = 0; i < 3; i++)
            job->src[i] = strdup(src[i] ? src[i] : "");
    }
    berth__user_assertion__free_unpacked(who, NULL);
    if (!job || !job->user || !job->src[0] || !job->src[1] || !job->src[2]) {
        if (job)
            s_import_free(job);
        bus_reply_error(request, "INTERNAL", "out of memory");
        return;
    }
    if (!(job->kept = bus_request_defer(request))) {
        s_import_free(job);
        bus_reply_error(request, "INTERNAL", "out of memory");
        return;
    }
    if (work_submit(self->config.work, s_inspect_run, s_inspect_done, job) != 0) {
        bus_reply_error(job->kept, "UNAVAILABLE", "busy: the stager's import queue is full");
        s_import_free(job);
        return;
    }
    self->importing++;
}

static void s_on_get(bus_request_t *request, void *arg)
{
    images_t *self = arg;
    Berth__GetImage *req = bus_request_body(request, &berth__get_image__descriptor);
    if (!req) {
        bus_reply_error(request, "BAD_REQUEST", "expected a GetImage body");
        return;
    }
    Berth__Image *image = NULL;
    int rc = catalog_get(self->config.catalog, req->id, &image);
    if (rc == CATALOG_NOT_FOUND)
        bus_reply_error(request, "NOT_FOUND", "no such image");
    else if (rc != 0)
        bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
    else {
        bus_reply(request, &image->base);
        protobuf_c_message_free_unpacked(&image->base, NULL);
    }
}

static void s_on_delete(bus_request_t *request, void *arg)
{
    images_t *self = arg;
    Berth__DeleteImage *req = bus_request_body(request, &berth__delete_image__descriptor);
    if (!req) {
        bus_reply_error(request, "BAD_REQUEST", "expected a DeleteImage body");
        return;
    }
    Berth__UserAssertion *who = images_operator(self->config.verifier, request, req->assertion);
    if (!who)
        return;
    const char *rid = bus_request_envelope(request)->request_id;
    berth_error_t error = { 0 };
    Berth__Image *deleted = NULL;
    if (catalog_delete(self->config.catalog, req->id, who->user, rid, &deleted, &error) != 0) {
        log_info(rid, "image deletion refused", "{s:s, s:s}", "image", req->id ? req->id : "",
                 "reason", error.message);
        bus_reply_fault(request, &error);
    } else {
        log_info(rid, "image deleted", "{s:s, s:s, s:s}", "image", deleted->name, "id",
                 deleted->id ? deleted->id : "", "by", who->user);
        bus_reply(request, &deleted->base);
        protobuf_c_message_free_unpacked(&deleted->base, NULL);
    }
    berth__user_assertion__free_unpacked(who, NULL);
}

void images_register(images_t *self, service_t *service)
{
    service_on(service, "ImportImage", "gateway", s_on_import, self);
    service_on(service, "GetImage", "gateway", s_on_get, self);
    service_on(service, "DeleteImage", "gateway", s_on_delete, self);
}
