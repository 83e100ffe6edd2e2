/*  stage: StageImage requests, coalesced by VM, built on the worker pool.

    The loop owns everything here (the map of builds, the kept requests); a worker only fills
    in its own s_stage_t. A build's outcome is the answer for every request that asked for the
    same thing; a request that asked for something else for the same VM (another name or
    user-data) waits for the build to end and is then started again, so it meets the seed on
    disk (a conflict) rather than racing the build for the files. */
#include "stage.h"
#include "error.h"
#include "files.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct _stage_t {
    stage_config_t config;
    zhashx_t *building; /* vm -> s_stage_t being built */
};

stage_t *stage_new(const stage_config_t *config)
{
    stage_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->config = *config;
    self->building = zhashx_new();
    if (!self->building) {
        free(self);
        return NULL;
    }
    return self;
}

void stage_destroy(stage_t **self_p)
{
    if (self_p && *self_p) {
        stage_t *self = *self_p;
        zhashx_destroy(&self->building);
        free(self);
        *self_p = NULL;
    }
}

size_t stage_building(stage_t *self)
{
    return zhashx_size(self->building);
}

/* One VM's seed build: what it is built from, who waits for it, what came out. */
typedef struct {
    stage_t *stage;
    char *vm, *name, *user_data; /* copies: the requests may be answered before the job ends */
    char *network_config;        /* "" when the VM has no address */
    int reidentify;              /* a pooled VM handed out: its seed may change identity */
    char *ref;                   /* the image the request named (id or name): the one answered */
    Berth__Image *image;         /* the image record to answer with */
    zlistx_t *waiting;           /* bus_request_t kept, answered when the build ends */
    /* filled by the worker */
    int rc;              /* seed_stage's answer, or -1 when reading the ISO failed */
    berth_error_t error; /* why rc is not 0 */
    char *path;
    uint8_t *iso;
    size_t size;
    char sha256[65]; /* hex SHA-256 of iso (agents fetch seeds by reference and check it) */
} s_stage_t;

static void s_stage_free(s_stage_t **job_p)
{
    s_stage_t *job = *job_p;
    if (!job)
        return;
    free(job->vm);
    free(job->name);
    free(job->user_data);
    free(job->network_config);
    free(job->ref);
    if (job->image)
        protobuf_c_message_free_unpacked(&job->image->base, NULL);
    zlistx_destroy(&job->waiting);
    free(job->path);
    free(job->iso);
    free(job);
    *job_p = NULL;
}

static void s_answer_free(bus_request_t *kept, const char *code, const char *message)
{
    bus_reply_error(kept, code, message);
    bus_request_destroy(&kept);
}

/* Worker: build the seed (or find it built) and read it for the reply. */
static void s_stage_run(void *arg)
{
    s_stage_t *job = arg;
    const stage_config_t *c = &job->stage->config;
    seed_bytes_t seed;
    if (job->reidentify &&
        seed_forget_other(c->seeds, job->vm, job->name, job->user_data, job->network_config) != 0) {
        job->rc = error_set(&job->error, "INTERNAL", "cannot replace the seed of VM '%s': %s",
                            job->vm, strerror(errno));
        return;
    }
    job->rc = seed_stage_network(c->seeds, job->vm, job->name, job->user_data, job->network_config,
                                 (size_t)c->max_seed_bytes, &job->path, &seed, &job->error);
    if (job->rc == 0 && seed.size > c->max_seed_bytes) { /* built now, and too large */
        job->rc = error_set(&job->error, "INTERNAL", "cannot read seed '%s': %s", job->path,
                            strerror(EFBIG));
        seed_bytes_clear(&seed);
    }
    if (job->rc == 0) { /* built or checked just now: neither read nor hashed again */
        job->iso = seed.iso;
        job->size = seed.size;
        memcpy(job->sha256, seed.sha256, sizeof job->sha256);
    }
}

/* Answer one request with the build's outcome. */
static void s_stage_answer(s_stage_t *job, bus_request_t *kept)
{
    const char *rid = bus_request_envelope(kept)->request_id;
    if (job->rc != 0) {
        /* BAD_REQUEST (naming the field) and CONFLICT are the caller's; the rest is ours. */
        if (job->rc != SEED_BAD_REQUEST && job->rc != SEED_CONFLICT)
            log_error(rid, "staging failed", "{s:s, s:s}", "vm", job->vm, "reason",
                      job->error.message);
        bus_reply_fault(kept, &job->error);
    } else {
        Berth__StagedImage reply = BERTH__STAGED_IMAGE__INIT;
        const Berth__StageImage *req = bus_request_body(kept, &berth__stage_image__descriptor);
        reply.image = job->image;
        reply.seed_sha256 = job->sha256;
        reply.seed_bytes = (int64_t)job->size;
        if (!req || !req->seed_by_reference) { /* by reference: the agent fetches it (GetSeed) */
            reply.seed_iso.data = job->iso;
            reply.seed_iso.len = job->size;
        }
        log_info(rid, "staged", "{s:s, s:s, s:s, s:s, s:I}", "vm", job->vm, "name", job->name,
                 "image", job->image->name, "seed", job->path, "seed_bytes", (json_int_t)job->size);
        bus_reply(kept, &reply.base);
    }
    bus_request_destroy(&kept);
}

/* The user-data req asks for: its own, or with SSH keys the default one installing them
   ("" when neither: the seed's default). NULL with error set when the keys are refused (or
   come with a user-data of their own: they would not be in it). Caller frees. */
static char *s_user_data(const Berth__StageImage *req, berth_error_t *error)
{
    const char *given = req->user_data ? req->user_data : "";
    if (!req->n_ssh_authorized_keys && !req->n_packages) {
        char *copy = strdup(given);
        if (!copy)
            error_set(error, "INTERNAL", "out of memory");
        return copy;
    }
    if (*given) {
        const char *field = req->n_packages ? "packages" : "ssh_authorized_keys";
        error_field(error, field, "%s go into the default user-data: give them or user_data",
                    field);
        return NULL;
    }
    return seed_user_data_packages(req->name ? req->name : "", req->ssh_authorized_keys,
                                   req->n_ssh_authorized_keys, req->packages, req->n_packages,
                                   error);
}

/* The network-config req asks for ("" when its VM has no address), or NULL with error set.
   Caller frees. */
static char *s_network_config(const Berth__StageImage *req, berth_error_t *error)
{
    if (!req->network || !req->network->ip || !*req->network->ip) {
        char *none = strdup("");
        if (!none)
            error_set(error, "INTERNAL", "out of memory");
        return none;
    }
    if (req->n_networks > 0)
        return seed_networks_config(req->networks, req->n_networks, error);
    return seed_network_config(req->network, error);
}

/* 1 if req asks for exactly what job builds (empty user-data and none are the same). */
static int s_same_request(const s_stage_t *job, const Berth__StageImage *req)
{
    berth_error_t error;
    char *user_data = s_user_data(req, &error);
    char *network_config = s_network_config(req, &error);
    int same = user_data && network_config && streq(job->name, req->name ? req->name : "") &&
               streq(job->user_data, user_data) && streq(job->network_config, network_config) &&
               streq(job->ref, req->image ? req->image : "");
    free(user_data);
    free(network_config);
    return same;
}

/* Loop: the build ended. Requests for the same seed get its answer; one that asked for
   something else for the same VM (another name or user-data) is started anew, and then
   meets the seed now on disk (a conflict) or builds if this build failed. */
static void s_stage_done(void *arg, int deliver)
{
    s_stage_t *job = arg;
    stage_t *self = job->stage;
    if (zhashx_lookup(self->building, job->vm) == job)
        zhashx_delete(self->building, job->vm);
    bus_request_t *kept;
    while ((kept = zlistx_detach(job->waiting, NULL))) {
        Berth__StageImage *req = bus_request_body(kept, &berth__stage_image__descriptor);
        if (!deliver)
            bus_request_destroy(&kept); /* shutting down: the caller resends elsewhere */
        else if (s_same_request(job, req))
            s_stage_answer(job, kept);
        else
            stage_request(self, kept);
    }
    s_stage_free(&job);
}

void stage_request(stage_t *self, bus_request_t *kept)
{
    Berth__StageImage *req = bus_request_body(kept, &berth__stage_image__descriptor);
    s_stage_t *job = zhashx_lookup(self->building, req->vm);
    if (job) {
        if (zlistx_size(job->waiting) >= self->config.max_waiting) {
            s_answer_free(kept, "UNAVAILABLE", "busy: too many requests wait for this vm's seed");
            return;
        }
        zlistx_add_end(job->waiting, kept);
        return;
    }
    berth_error_t refused;
    char *user_data = s_user_data(req, &refused);
    char *network_config = user_data ? s_network_config(req, &refused) : NULL;
    if (!user_data || !network_config) {
        free(user_data);
        free(network_config);
        bus_reply_fault(kept, &refused);
        bus_request_destroy(&kept);
        return;
    }
    Berth__Image *image = NULL;
    int rc = catalog_get(self->config.catalog, req->image, &image);
    if (rc == CATALOG_NOT_FOUND) {
        char msg[160];
        snprintf(msg, sizeof msg, "no image named '%s'", req->image);
        free(user_data);
        free(network_config);
        s_answer_free(kept, "NOT_FOUND", msg);
        return;
    }
    if (rc != 0) {
        free(user_data);
        free(network_config);
        s_answer_free(kept, "UNAVAILABLE", "state store unreachable");
        return;
    }
    /* Only a READY image has a file to build from (one being imported, staged or deleted, or
       whose import failed, has none to give). */
    if (image->state && *image->state && !streq(image->state, "READY")) {
        char msg[160];
        snprintf(msg, sizeof msg, "image '%s' is %s", image->name, image->state);
        protobuf_c_message_free_unpacked(&image->base, NULL);
        free(user_data);
        free(network_config);
        s_answer_free(kept, "CONFLICT", msg);
        return;
    }
    /* The VM is built from the image named, as the scheduler chose it when it placed the
       VM (a template's staged image, by its id): the stager does not choose another. */
    job = calloc(1, sizeof *job);
    if (job) {
        job->stage = self;
        job->image = image;
        job->vm = strdup(req->vm);
        job->name = strdup(req->name ? req->name : "");
        job->ref = strdup(req->image ? req->image : "");
        job->user_data = user_data;
        user_data = NULL;
        job->network_config = network_config;
        network_config = NULL;
        job->reidentify = req->reidentify;
        job->waiting = zlistx_new();
    } else
        protobuf_c_message_free_unpacked(&image->base, NULL);
    free(user_data);
    free(network_config);
    if (!job || !job->vm || !job->name || !job->ref || !job->user_data || !job->waiting ||
        !zlistx_add_end(job->waiting, kept)) {
        if (job && job->waiting)
            zlistx_purge(job->waiting); /* kept is answered below, not freed with the job */
        s_stage_free(&job);
        s_answer_free(kept, "INTERNAL", "out of memory");
        return;
    }
    if (work_submit(self->config.work, s_stage_run, s_stage_done, job) != 0) {
        zlistx_purge(job->waiting);
        s_stage_free(&job);
        s_answer_free(kept, "UNAVAILABLE", "busy: the stager's work queue is full");
        return;
    }
    zhashx_insert(self->building, job->vm, job);
}
