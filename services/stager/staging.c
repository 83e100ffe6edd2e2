/*  staging: StageModel on the loop, the stages on the import worker, progress through two
    atomics the worker writes and a loop timer reads.

    The record is the loop's: the worker never touches Redis. It publishes which stage it is
    in and how far (percent) in its job; every report_ms the loop writes what changed into the
    record (a checked write: only while it is STAGING). A stager that stops mid-way leaves the
    record STAGING with its temporary files (.stage-<id>.*) in the images directory, as an
    import is left IMPORTING. */
#include "staging.h"
#include "files.h"
#include "images.h"
#include "log.h"
#include "sysprep.h"
#include "tool.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define S_OUTPUT_MAX (1024 * 1024) /* what a tool's output may hold that we read back */
#define S_CHUNK      (1024 * 1024)

struct _staging_t {
    staging_config_t config;
    char *images_dir, *qemu_img, *sysprep, *virt_sysprep; /* owned copies */
    zlistx_t *running;                                    /* s_job_t being staged */
};

typedef struct s_job_t s_job_t;
typedef int(s_stage_fn)(s_job_t *job);

struct s_job_t {
    staging_t *staging;
    char id[UTIL_ID_LEN];
    char name[72];
    char model[72];      /* the model's name, for logs */
    char src[PATH_MAX];  /* the model's file */
    char format[16];     /* its format */
    char *manifest_in;   /* the model's manifest ("" when none) */
    char copy[PATH_MAX]; /* .stage-<id>.copy: the model's file, then stripped */
    char conv[PATH_MAX]; /* .stage-<id>.qcow2: converted, being checksummed */
    char path[PATH_MAX]; /* <id>.qcow2: the staged image's file */
    atomic_int stage;    /* index in s_stages, written by the worker */
    atomic_int percent;  /* of the current stage */
    int written_stage;   /* what the loop last wrote into the record */
    int written_percent;
    /* results */
    char *manifest_out, *report;
    char sha256[65];
    int64_t size;
    char fault[512];
    int rc;
};

static int s_copy(s_job_t *job);
static int s_sysprep(s_job_t *job);
static int s_convert(s_job_t *job);
static int s_checksum(s_job_t *job);

/* The stages of a staging, in order: the name shown while it runs and what it does. */
static const struct {
    const char *name;
    s_stage_fn *run;
} s_stages[] = {
    { "COPY", s_copy },
    { "SYSPREP", s_sysprep },
    { "CONVERT", s_convert },
    { "CHECKSUM", s_checksum },
};
#define S_STAGES ((int)(sizeof s_stages / sizeof s_stages[0]))

static void s_job_free(s_job_t *job)
{
    if (!job)
        return;
    free(job->manifest_in);
    free(job->manifest_out);
    free(job->report);
    free(job);
}

/* Read fd to its end into out (when out_fd >= 0) and the digest, moving percent. */
static int s_stream(s_job_t *job, int fd, int out_fd, char sha256[65], int64_t *size_p)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return -1;
    uint8_t *buf = malloc(S_CHUNK);
    if (!buf) {
        errno = ENOMEM;
        return -1;
    }
    crypto_hash_sha256_state state;
    crypto_hash_sha256_init(&state);
    int64_t total = 0;
    for (;;) {
        ssize_t n = read(fd, buf, S_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            free(buf);
            return -1;
        }
        if (n == 0)
            break;
        crypto_hash_sha256_update(&state, buf, (unsigned long long)n);
        for (ssize_t done = 0; out_fd >= 0 && done < n;) {
            ssize_t w = write(out_fd, buf + done, (size_t)(n - done));
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                if (w == 0)
                    errno = EIO;
                free(buf);
                return -1;
            }
            done += w;
        }
        total += n;
        if (st.st_size > 0)
            atomic_store(&job->percent,
                         (int)(total * 100 / st.st_size > 99 ? 99 : total * 100 / st.st_size));
    }
    free(buf);
    uint8_t digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&state, digest);
    sodium_bin2hex(sha256, 65, digest, sizeof digest);
    *size_p = total;
    return 0;
}

/* COPY: the model's file, byte for byte, beside it (the model itself is never touched). */
static int s_copy(s_job_t *job)
{
    int fd = open(job->src, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(job->fault, sizeof job->fault, "cannot open the model's file %.200s: %s", job->src,
                 strerror(errno));
        return -1;
    }
    int out = open(job->copy, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0640);
    char sha256[65];
    int64_t size = 0;
    int rc = out < 0 ? -1 : s_stream(job, fd, out, sha256, &size);
    if (rc != 0)
        snprintf(job->fault, sizeof job->fault, "cannot copy the model's file to %.200s: %s",
                 job->copy, strerror(errno));
    close(fd);
    if (out >= 0 && close(out) != 0 && rc == 0) {
        snprintf(job->fault, sizeof job->fault, "cannot copy the model's file to %.200s: %s",
                 job->copy, strerror(errno));
        rc = -1;
    }
    return rc;
}

/* SYSPREP: the identity stripped, by virt-sysprep on the copy or by the same operations on
   the model's manifest. The manifest (when the model has one) is carried over with the
   operations applied either way: it describes what the staged image holds. */
static int s_sysprep(s_job_t *job)
{
    const staging_config_t *c = &job->staging->config;
    const char *manifest = *job->manifest_in ? job->manifest_in : "{\"files\":[]}";
    char *report = NULL;
    if (sysprep_manifest_apply(manifest, &job->manifest_out, &report) != 0) {
        snprintf(job->fault, sizeof job->fault, "the model's manifest cannot be read");
        return -1;
    }
    if (!*job->manifest_in) {
        free(job->manifest_out);
        job->manifest_out = strdup("");
    }
    if (strcmp(c->sysprep, "virt-sysprep") != 0) {
        job->report = report;
        return job->manifest_out ? 0 : -1;
    }
    free(report);
    char log_path[PATH_MAX], why[512];
    snprintf(log_path, sizeof log_path, "%s/.stage-%s.sysprep.log", c->images_dir, job->id);
    const char *argv[] = { c->virt_sysprep, "--format",     job->format,        "-a",
                           job->copy,       "--operations", SYSPREP_OPERATIONS, NULL };
    int rc = tool_run(argv, log_path, c->timeout_ms, why, sizeof why);
    uint8_t *output = NULL;
    size_t len = 0;
    if (rc == 0 && files_read(log_path, S_OUTPUT_MAX, &output, &len) == 0)
        job->report = sysprep_tool_report((const char *)output, len);
    free(output);
    unlink(log_path);
    if (rc != 0) {
        snprintf(job->fault, sizeof job->fault, "virt-sysprep failed: %.400s", why);
        return -1;
    }
    if (!job->report) {
        snprintf(job->fault, sizeof job->fault, "cannot read what virt-sysprep did");
        return -1;
    }
    return 0;
}

/* CONVERT: the stripped copy into the store's format, a qcow2 of its own (no backing file). */
static int s_convert(s_job_t *job)
{
    const staging_config_t *c = &job->staging->config;
    char log_path[PATH_MAX], why[512];
    snprintf(log_path, sizeof log_path, "%s/.stage-%s.convert.log", c->images_dir, job->id);
    const char *argv[] = { c->qemu_img, "convert", "-f",      job->format, "-O",
                           "qcow2",     job->copy, job->conv, NULL };
    int rc = tool_run(argv, log_path, c->timeout_ms, why, sizeof why);
    unlink(log_path);
    unlink(job->copy);
    if (rc != 0)
        snprintf(job->fault, sizeof job->fault, "qemu-img convert failed: %.400s", why);
    return rc;
}

/* CHECKSUM: the sha256 of the converted file, which then takes its name in the store. */
static int s_checksum(s_job_t *job)
{
    int fd = open(job->conv, O_RDONLY | O_CLOEXEC);
    int rc = fd < 0 ? -1 : s_stream(job, fd, -1, job->sha256, &job->size);
    if (fd >= 0 && rc == 0)
        rc = fsync(fd);
    if (fd >= 0)
        close(fd);
    if (rc == 0 && rename(job->conv, job->path) != 0)
        rc = -1;
    if (rc != 0)
        snprintf(job->fault, sizeof job->fault, "cannot checksum %.200s into the store: %s",
                 job->conv, strerror(errno));
    return rc;
}

/* Worker: every stage in order; the first that fails ends it, leaving no file behind. */
static void s_run(void *arg)
{
    s_job_t *job = arg;
    job->rc = 0;
    for (int i = 0; i < S_STAGES && job->rc == 0; i++) {
        atomic_store(&job->percent, 0);
        atomic_store(&job->stage, i);
        job->rc = s_stages[i].run(job);
        if (job->rc == 0)
            atomic_store(&job->percent, 100);
    }
    if (job->rc != 0) {
        unlink(job->copy);
        unlink(job->conv);
        unlink(job->path);
    }
}

/* Loop: write the job's stage and percent into its record when they moved. */
static void s_report(staging_t *self, s_job_t *job)
{
    int stage = atomic_load(&job->stage), percent = atomic_load(&job->percent);
    if (stage == job->written_stage && percent == job->written_percent)
        return;
    if (catalog_stage_progress(self->config.catalog, job->name, s_stages[stage].name, percent) ==
        0) {
        job->written_stage = stage;
        job->written_percent = percent;
    }
}

static void s_done(void *arg, int deliver)
{
    s_job_t *job = arg;
    staging_t *self = job->staging;
    void *handle = zlistx_find(self->running, job);
    if (handle)
        zlistx_detach(self->running, handle);
    catalog_work_end(self->config.catalog, job->id);
    if (!deliver) { /* shutting down: the record stays STAGING (see the top of the file) */
        if (job->rc == 0)
            unlink(job->path);
        s_job_free(job);
        return;
    }
    int stage = atomic_load(&job->stage);
    int rc;
    if (job->rc == 0) {
        catalog_staged_t done = { .path = job->path,
                                  .size = job->size,
                                  .sha256 = job->sha256,
                                  .manifest = job->manifest_out,
                                  .report = job->report };
        rc = catalog_stage_end(self->config.catalog, job->name, &done, NULL);
        if (rc == 0)
            log_info(NULL, "image staged", "{s:s, s:s, s:s, s:s, s:I}", "image", job->name, "model",
                     job->model, "sha256", job->sha256, "sysprep", self->sysprep, "size_bytes",
                     (json_int_t)job->size);
    } else {
        s_report(self, job); /* the stage it failed in stays on the record */
        log_warn(NULL, "image staging failed", "{s:s, s:s, s:s, s:s}", "image", job->name, "model",
                 job->model, "stage", s_stages[stage].name, "reason", job->fault);
        char fault[600];
        snprintf(fault, sizeof fault, "%s: %s", s_stages[stage].name, job->fault);
        rc = catalog_stage_end(self->config.catalog, job->name, NULL, fault);
    }
    if (rc != 0) {
        log_error(NULL, "cannot record the end of a staging", "{s:s, s:i}", "image", job->name,
                  "rc", rc);
        if (job->rc == 0)
            unlink(job->path);
    }
    s_job_free(job);
}

static int s_tick(service_t *service, void *arg)
{
    (void)service;
    staging_t *self = arg;
    for (s_job_t *job = zlistx_first(self->running); job; job = zlistx_next(self->running))
        s_report(self, job);
    return 0;
}

/* The staged image's name: the model's, "-staged-" and the start of its id (64 at most). */
static void s_name(char *out, size_t size, const char *model, const char *id)
{
    snprintf(out, size, "%.47s-staged-%.8s", model, id);
}

static void s_on_stage(bus_request_t *request, void *arg)
{
    staging_t *self = arg;
    Berth__StageModel *req = bus_request_body(request, &berth__stage_model__descriptor);
    if (!req) {
        bus_reply_error(request, "BAD_REQUEST", "expected a StageModel body");
        return;
    }
    Berth__UserAssertion *who = images_operator(self->config.verifier, request, req->assertion);
    if (!who)
        return;
    const char *rid = bus_request_envelope(request)->request_id;
    berth_error_t error = { 0 };
    Berth__Image *model = NULL;
    int rc = catalog_get(self->config.catalog, req->id, &model);
    if (rc == CATALOG_NOT_FOUND)
        error_set(&error, "NOT_FOUND", "no such image");
    else if (rc != 0)
        error_set(&error, "UNAVAILABLE", "state store unreachable");
    else if (model->kind && strcmp(model->kind, "staged") == 0)
        error_set(&error, "CONFLICT", "image '%s' is a staged image: stage its model '%s'",
                  model->name, model->model);
    else if (!model->state || strcmp(model->state, "READY") != 0)
        error_set(&error, "CONFLICT", "image '%s' is %s: only a READY model can be staged",
                  model->name, model->state && *model->state ? model->state : "not READY");
    else if (!model->path || !*model->path ||
             (strcmp(model->format, "qcow2") != 0 && strcmp(model->format, "raw") != 0))
        error_set(&error, "CONFLICT", "image '%s' has no qcow2 or raw file to stage", model->name);
    s_job_t *job = error.code[0] ? NULL : calloc(1, sizeof *job);
    if (!error.code[0] && !job)
        error_set(&error, "INTERNAL", "out of memory");
    char name[72];
    Berth__Image staged = BERTH__IMAGE__INIT;
    if (job) {
        job->staging = self;
        util_uuid(job->id);
        s_name(name, sizeof name, model->name, job->id);
        util_strlcpy(job->name, name, sizeof job->name);
        util_strlcpy(job->model, model->name, sizeof job->model);
        util_strlcpy(job->src, model->path, sizeof job->src);
        util_strlcpy(job->format, model->format, sizeof job->format);
        job->manifest_in = strdup(model->manifest ? model->manifest : "");
        snprintf(job->copy, sizeof job->copy, "%s/.stage-%s.copy", self->images_dir, job->id);
        snprintf(job->conv, sizeof job->conv, "%s/.stage-%s.qcow2", self->images_dir, job->id);
        snprintf(job->path, sizeof job->path, "%s/%s.qcow2", self->images_dir, job->id);
        job->written_stage = job->written_percent = 0; /* as recorded below */
        staged = *model; /* what describes it: os, version, arch, applications, minimums */
        staged.id = job->id;
        staged.name = name;
        staged.kind = "staged";
        staged.model = model->id;
        staged.path = "";
        staged.format = "qcow2";
        staged.size_bytes = 0;
        staged.sha256 = "";
        staged.state = "";
        staged.fault = "";
        staged.version = 0;
        staged.created_ms = util_now_ms();
        staged.stage = (char *)s_stages[0].name;
        staged.percent = 0;
        staged.manifest = "";
        staged.sysprep = self->sysprep;
        staged.sysprep_report = "";
        if (!job->manifest_in)
            error_set(&error, "INTERNAL", "out of memory");
        else
            catalog_stage_begin(self->config.catalog, model, &staged, who->user, rid, &error);
    }
    if (error.code[0]) {
        log_info(rid, "staging refused", "{s:s, s:s}", "image", req->id ? req->id : "", "reason",
                 error.message);
        bus_reply_fault(request, &error);
        s_job_free(job);
        if (model)
            protobuf_c_message_free_unpacked(&model->base, NULL);
        berth__user_assertion__free_unpacked(who, NULL);
        return;
    }
    Berth__Image *stored = NULL;
    if (catalog_get(self->config.catalog, job->id, &stored) == 0) {
        bus_reply(request, &stored->base);
        protobuf_c_message_free_unpacked(&stored->base, NULL);
    } else {
        staged.state = "STAGING";
        bus_reply(request, &staged.base);
    }
    log_info(rid, "staging accepted", "{s:s, s:s, s:s, s:s, s:s}", "image", job->name, "id",
             job->id, "model", model->name, "sysprep", self->sysprep, "by", who->user);
    protobuf_c_message_free_unpacked(&model->base, NULL);
    berth__user_assertion__free_unpacked(who, NULL);
    if (work_submit(self->config.work, s_run, s_done, job) != 0) {
        catalog_stage_end(self->config.catalog, job->name, NULL,
                          "the stager was too busy to stage the image; stage it again");
        s_job_free(job);
        return;
    }
    zlistx_add_end(self->running, job);
    catalog_work_begin(self->config.catalog, job->id);
}

staging_t *staging_new(const staging_config_t *config)
{
    if (strcmp(config->sysprep, "manifest") != 0 && strcmp(config->sysprep, "virt-sysprep") != 0)
        return NULL;
    staging_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->config = *config;
    self->images_dir = strdup(config->images_dir);
    self->qemu_img = strdup(config->qemu_img);
    self->sysprep = strdup(config->sysprep);
    self->virt_sysprep = strdup(config->virt_sysprep);
    self->running = zlistx_new();
    if (!self->images_dir || !self->qemu_img || !self->sysprep || !self->virt_sysprep ||
        !self->running) {
        staging_destroy(&self);
        return NULL;
    }
    self->config.images_dir = self->images_dir;
    self->config.qemu_img = self->qemu_img;
    self->config.sysprep = self->sysprep;
    self->config.virt_sysprep = self->virt_sysprep;
    return self;
}

void staging_destroy(staging_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    staging_t *self = *self_p;
    zlistx_destroy(&self->running); /* its jobs were released by work_destroy */
    free(self->images_dir);
    free(self->qemu_img);
    free(self->sysprep);
    free(self->virt_sysprep);
    free(self);
    *self_p = NULL;
}

void staging_register(staging_t *self, service_t *service, int report_ms)
{
    service_on(service, "StageModel", "gateway", s_on_stage, self);
    service_every(service, report_ms, s_tick, self);
}

size_t staging_running(staging_t *self)
{
    return zlistx_size(self->running);
}
