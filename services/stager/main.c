/*  berth-stager: the image store. Keeps the image catalog (base images it creates when
    missing, and model images imported by operators: images.h) and builds each VM's
    cloud-init NoCloud seed, which taskmgr hands to the agent with the create command.
    Handlers: ListImages, GetImage, ImportImage, DeleteImage, StageModel, StageImage, GetSeed,
    and GetImageChunk (agents fetch base images in chunks: transfer.h).

    The loop never waits on a disk or a tool: qemu-img runs, seed builds and sweeps are jobs
    for a small pool of workers (work.h) with a bounded queue. StageImage keeps its request
    (bus_request_defer) and is answered from the loop when its job comes back; over the bound
    it is answered UNAVAILABLE at once. Requests for a VM whose seed is being built wait for
    that build instead of starting another. */
#include "service.h"
#include "assertion.h"
#include "catalog.h"
#include "images.h"
#include "files.h"
#include "seed.h"
#include "stage.h"
#include "staging.h"
#include "transfer.h"
#include "upload.h"
#include "limit.h"
#include "registry.h"
#include "work.h"

#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <sodium.h>

#define CATALOG_CHECK_MS 30000 /* how often a prepared catalog is checked again */
/* Image chunks (up to 2 MiB, copied into the reply and its envelope) come from the heap and
   the heap keeps this much free: with glibc's defaults each such block was a mapping of its
   own, faulted in page by page and unmapped again, for every chunk sent. */
#define HEAP_BLOCK_MAX_BYTES (8 << 20)
#define HEAP_KEEP_BYTES      (64 << 20)

typedef struct {
    service_t *service;
    catalog_t *catalog;      /* the loop's: lookups on the service's Redis connection */
    catalog_t *prep_catalog; /* the preparation job's, on its own connection (prep_store) */
    store_t *prep_store;
    seed_t *seeds; /* shared by the workers: seed_stage is safe across threads */
    work_t *work;
    work_t *import_work;    /* imports: inspections and copies, apart from seeds */
    images_t *images;       /* the image store's handlers */
    staging_t *staging;     /* staged images derived from models */
    assertion_t *verifier;  /* checks the gateway's user assertions */
    stage_t *stage;         /* StageImage requests and their builds */
    transfer_t *transfer;   /* GetImageChunk: images sent to agents */
    upload_t *upload;       /* PutImageChunk: captured disks and HTTP uploads received */
    int64_t max_seed_bytes; /* largest ISO sent in a reply */
    int64_t seed_keep_ms;   /* seeds untouched this long are swept */
    int ready;              /* base images were prepared once */
    int preparing;          /* a preparation job is out */
    int sweeping;           /* a sweep job is out */
    int64_t next_check_ms;  /* monotonic ms of the next catalog check */
    char not_ready[768];    /* last failure, logged once per reason; "" when fine */
} stager_t;

/* ---- base images ---- */

typedef struct {
    stager_t *stager;
    int rc;
    char error[768];
} s_prep_t;

/* Worker: qemu-img and the records, on the job's own Redis connection. */
static void s_prep_run(void *arg)
{
    s_prep_t *job = arg;
    job->rc = catalog_ensure_base(job->stager->prep_catalog, job->error, sizeof job->error);
}

static void s_prep_done(void *arg, int deliver)
{
    s_prep_t *job = arg;
    stager_t *self = job->stager;
    self->preparing = 0;
    if (!deliver) {
        free(job);
        return;
    }
    if (job->rc != 0) {
        if (strcmp(job->error, self->not_ready) != 0)
            log_error(NULL, "cannot prepare the base images; retrying", "{s:s}", "reason",
                      job->error);
        util_strlcpy(self->not_ready, job->error, sizeof self->not_ready);
    } else {
        if (!self->ready || self->not_ready[0])
            log_info(NULL, "base images ready", NULL);
        self->ready = 1;
        self->not_ready[0] = '\0';
        self->next_check_ms = util_mono_ms() + CATALOG_CHECK_MS;
    }
    free(job);
}

/* Make sure the base images exist and are recorded. Runs every second until it works
   (Redis may come up after the stager; until then requests are answered UNAVAILABLE), then
   every CATALOG_CHECK_MS to repair a record or file lost since (Redis flushed, file deleted).
   The work itself is a job: creating an image runs qemu-img. */
static int s_prepare(service_t *service, void *arg)
{
    (void)service;
    stager_t *self = arg;
    if (self->preparing || (self->ready && util_mono_ms() < self->next_check_ms))
        return 0;
    s_prep_t *job = calloc(1, sizeof *job);
    if (!job)
        return 0;
    job->stager = self;
    if (work_submit(self->work, s_prep_run, s_prep_done, job) != 0) {
        free(job); /* busy: tried again on the next tick */
        return 0;
    }
    self->preparing = 1;
    return 0;
}

static void s_on_list_images(bus_request_t *request, void *arg)
{
    stager_t *self = arg;
    const Berth__ListImages *req = bus_request_body(request, &berth__list_images__descriptor);
    if (!req) {
        bus_reply_error(request, "BAD_REQUEST", "expected a ListImages body");
        return;
    }
    if (req->kind && *req->kind && strcmp(req->kind, "model") != 0 &&
        strcmp(req->kind, "staged") != 0) {
        berth_error_t error = { 0 };
        error_field(&error, "kind", "kind is model or staged");
        bus_reply_fault(request, &error);
        return;
    }
    if (!self->ready) {
        bus_reply_error(request, "UNAVAILABLE", "base images are not ready yet");
        return;
    }
    Berth__ImageList *list = NULL;
    if (catalog_list(self->catalog, req->kind, &list) != 0) {
        bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
        return;
    }
    bus_reply(request, &list->base);
    protobuf_c_message_free_unpacked(&list->base, NULL);
}

/* ---- recovery ---- */

/* catalog_resume_fn: a path import a dead stager left is imported again here. */
static int s_resume(void *arg, const Berth__Image *image, const char *why)
{
    stager_t *self = arg;
    return images_resume(self->images, image, why);
}

/* Records left IMPORTING or STAGING by a stager that died end FAILED, and their partial
   files go (catalog.h). Runs once the base images are ready (Redis answers), then every
   recover_ms: an instance killed a moment ago stays in the registry until its entry lapses
   (three heartbeats), and its records are ended at the first run after that. */
static int s_recover(service_t *service, void *arg)
{
    stager_t *self = arg;
    if (!self->ready)
        return 0;
    registry_entry_t *entries = NULL;
    size_t n = 0;
    if (registry_list(service_store(service), "stager", &entries, &n) != 0)
        return 0; /* Redis away: the next run */
    const char **live = calloc(n + 1, sizeof *live);
    for (size_t i = 0; live && i < n; i++)
        live[i] = entries[i].instance;
    int failed = 0;
    if (live && catalog_recover(self->catalog, live, n, s_resume, self, &failed) == 0 && failed)
        log_info(NULL, "recovered images left unfinished", "{s:i}", "failed", failed);
    free(live);
    free(entries);
    return 0;
}

/* ---- seeds ---- */

/* Check what can be checked at once, then keep the request for its build. Idempotent by vm:
   a seed built is answered again, a build under way is joined. */
static void s_on_stage_image(bus_request_t *request, void *arg)
{
    stager_t *self = arg;
    Berth__StageImage *req = bus_request_body(request, &berth__stage_image__descriptor);
    if (!req) {
        bus_reply_error(request, "BAD_REQUEST", "expected a StageImage body");
        return;
    }
    if (!self->ready) {
        bus_reply_error(request, "UNAVAILABLE", "base images are not ready yet");
        return;
    }
    berth_error_t error = { 0 };
    if (!util_is_uuid(req->vm)) {
        error_field(&error, "vm", "vm must be a lower-case UUID");
        bus_reply_fault(request, &error);
        return;
    }
    if (!catalog_valid_name(req->image)) {
        error_field(&error, "image", "image must be 1 to 64 of a-z, 0-9, '.', '_' and '-'");
        bus_reply_fault(request, &error);
        return;
    }
    bus_request_t *kept = bus_request_defer(request);
    if (!kept) {
        bus_reply_error(request, "INTERNAL", "out of memory");
        return;
    }
    stage_request(self->stage, kept);
}

typedef struct {
    stager_t *stager;
    int removed;
} s_sweep_t;

static void s_sweep_run(void *arg)
{
    s_sweep_t *job = arg;
    job->removed = seed_sweep(job->stager->seeds, job->stager->seed_keep_ms);
}

static void s_sweep_done(void *arg, int deliver)
{
    s_sweep_t *job = arg;
    job->stager->sweeping = 0;
    if (deliver && job->removed > 0)
        log_info(NULL, "swept old seeds", "{s:i}", "removed", job->removed);
    free(job);
}

static int s_sweep(service_t *service, void *arg)
{
    (void)service;
    stager_t *self = arg;
    s_sweep_t *job = self->sweeping ? NULL : calloc(1, sizeof *job);
    if (!job)
        return 0;
    job->stager = self;
    if (work_submit(self->work, s_sweep_run, s_sweep_done, job) != 0)
        free(job); /* busy: the next sweep will do */
    else
        self->sweeping = 1;
    return 0;
}

static int s_on_work(service_t *service, void *arg)
{
    (void)service;
    stager_t *self = arg;
    work_deliver(self->work);
    return 0;
}

static int s_on_import_work(service_t *service, void *arg)
{
    (void)service;
    stager_t *self = arg;
    work_deliver(self->import_work);
    return 0;
}

/* The seed StageImage built for a VM, with its digest: agents fetch seeds by reference.
   One file read of a few hundred KB, on the loop (StageImage built it moments before). */
/* A seed (user data, keys) goes only to the agent of the host the VM is placed on: the
   caller's certificate names its host (lib/bus_auth.h), the VM's record names the VM's.
   Answers the refusal and returns 1, or 0 when the caller may have it. */
static int s_seed_refused(stager_t *self, bus_request_t *request, const char *vm)
{
    const bus_caller_t *caller = bus_request_caller(request);
    if (!caller)
        return 0; /* a server without CURVE (unit tests) knows no callers */
    char key[KEYS_MAX];
    redisReply *r = store_command(service_store(self->service), "HGET %s host", keys_vm(key, vm));
    if (!r || r->type == REDIS_REPLY_ERROR) {
        if (r)
            freeReplyObject(r);
        bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
        return 1;
    }
    int mine = r->type == REDIS_REPLY_STRING && streq(r->str, caller->host);
    freeReplyObject(r);
    if (mine)
        return 0;
    log_warn(bus_request_envelope(request)->request_id, "seed refused to another host's agent",
             "{s:s, s:s}", "vm", vm, "certificate_host", caller->host);
    berth_error_t error;
    error_set(&error, "FORBIDDEN", "VM %s is not placed on host '%s'", vm, caller->host);
    bus_reply_fault(request, &error);
    return 1;
}

static void s_on_get_seed(bus_request_t *request, void *arg)
{
    stager_t *self = arg;
    Berth__GetSeed *req = bus_request_body(request, &berth__get_seed__descriptor);
    if (!req) {
        bus_reply_error(request, "BAD_REQUEST", "expected a GetSeed body");
        return;
    }
    if (!util_is_uuid(req->vm)) {
        berth_error_t error;
        error_field(&error, "vm", "GetSeed needs a VM id (UUID)");
        bus_reply_fault(request, &error);
        return;
    }
    if (s_seed_refused(self, request, req->vm))
        return;
    seed_bytes_t seed;
    if (seed_read(self->seeds, req->vm, (size_t)self->max_seed_bytes, &seed) != 0) {
        bus_reply_error(request, errno == ENOENT ? "NOT_FOUND" : "INTERNAL",
                        errno == ENOENT ? "no seed staged for this VM" : strerror(errno));
        return;
    }
    Berth__Seed reply = BERTH__SEED__INIT;
    reply.iso.data = seed.iso;
    reply.iso.len = seed.size;
    reply.sha256 = seed.sha256;
    bus_reply(request, &reply.base);
    seed_bytes_clear(&seed);
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
    mallopt(M_MMAP_THRESHOLD, HEAP_BLOCK_MAX_BYTES);
    mallopt(M_TRIM_THRESHOLD, HEAP_KEEP_BYTES);
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
    config_declare(c, "workers", "2", 0);                 /* threads for qemu-img, seeds, sweeps */
    config_declare(c, "work_queue_max", "256", 0);        /* jobs held; beyond: answered busy */
    config_declare(c, "max_waiting_per_vm", "16", 0);     /* requests joining one VM's build */
    config_declare(c, "import_dir", NULL, 0);             /* default <data_dir>/import */
    config_declare(c, "import_formats", "qcow2", 0);      /* formats an import may have */
    config_declare(c, "import_max_virtual_gb", "256", 0); /* largest virtual size imported */
    config_declare(c, "import_queue_max", "16", 0);       /* imports inspected or copied at once */
    /* Staging (staging.h): how identity is stripped ("manifest": the model's manifest;
       "virt-sysprep": the tool on the image, libguestfs' appliance cached in
       sysprep_cache_dir so it is built once), how long one tool run may take, and how often
       a staging's stage and percent are written to its record. */
    config_declare(c, "sysprep", "manifest", 0);
    config_declare(c, "virt_sysprep", "virt-sysprep", 0);
    config_declare(c, "sysprep_cache_dir", NULL, 0); /* default <data_dir>/guestfs */
    config_declare(c, "stage_timeout_ms", "1800000", 0);
    config_declare(c, "stage_report_ms", "250", 0);
    config_declare(c, "image_chunk_max", "2097152", 0);       /* largest chunk sent to an agent */
    config_declare(c, "capture_max_bytes", "68719476736", 0); /* largest upload: 64 GiB */
    config_declare(c, "recover_ms", "5000", 0);
    config_declare(c, "upload_idle_ms", "300000", 0);
    /* an HTTP upload untouched: dropped */ /* how often unfinished records are checked */

    stager_t self = { .service = service };
    int rc = 1;
    if (service_start(service) != 0)
        goto done;
    int64_t timeout, max_images, max_user_data, keep_hours, sweep_ms, workers, queue_max, waiting,
        redis_port, redis_timeout, import_max_gb, import_queue, stage_timeout, stage_report,
        chunk_max, capture_max, recover_ms, upload_idle_ms;
    if (config_int(c, "tool_timeout_ms", 100, 600000, &timeout) ||
        config_int(c, "workers", 1, 64, &workers) ||
        config_int(c, "work_queue_max", 1, 100000, &queue_max) ||
        config_int(c, "max_waiting_per_vm", 1, 1000, &waiting) ||
        config_int(c, "redis_port", 1, 65535, &redis_port) ||
        config_int(c, "redis_timeout_ms", 10, 60000, &redis_timeout) ||
        config_int(c, "max_images", 1, 100000, &max_images) ||
        config_int(c, "max_user_data", 0, 1024 * 1024, &max_user_data) ||
        config_int(c, "max_seed_bytes", 65536, 3 * 1024 * 1024, &self.max_seed_bytes) ||
        config_int(c, "seed_keep_hours", 1, 24 * 3650, &keep_hours) ||
        config_int(c, "seed_sweep_ms", 1000, 86400000, &sweep_ms) ||
        config_int(c, "import_max_virtual_gb", 1, 1048576, &import_max_gb) ||
        config_int(c, "import_queue_max", 1, 10000, &import_queue) ||
        config_int(c, "stage_timeout_ms", 1000, 86400000, &stage_timeout) ||
        config_int(c, "stage_report_ms", 10, 60000, &stage_report) ||
        config_int(c, "image_chunk_max", TRANSFER_CHUNK_MIN, TRANSFER_CHUNK_MAX, &chunk_max) ||
        config_int(c, "capture_max_bytes", 1, TRANSFER_UPLOAD_MAX, &capture_max) ||
        config_int(c, "recover_ms", 100, 3600000, &recover_ms) ||
        config_int(c, "upload_idle_ms", 1000, 86400000, &upload_idle_ms))
        goto done;
    const char *sysprep = config_get(c, "sysprep");
    if (strcmp(sysprep, "manifest") != 0 && strcmp(sysprep, "virt-sysprep") != 0) {
        log_error(NULL, "sysprep must be manifest or virt-sysprep", "{s:s}", "sysprep", sysprep);
        goto done;
    }
    self.seed_keep_ms = keep_hours * 3600 * 1000;
    if (sodium_init() < 0) {
        log_error(NULL, "libsodium failed to initialise", NULL);
        goto done;
    }
    char images_dir[PATH_MAX], seeds_dir[PATH_MAX], import_dir[PATH_MAX], import_real[PATH_MAX],
        guestfs_dir[PATH_MAX];
    if (s_dir(c, "images_dir", "images", images_dir, sizeof images_dir) ||
        s_dir(c, "seeds_dir", "seeds", seeds_dir, sizeof seeds_dir) ||
        s_dir(c, "import_dir", "import", import_dir, sizeof import_dir) ||
        s_dir(c, "sysprep_cache_dir", "guestfs", guestfs_dir, sizeof guestfs_dir))
        goto done;
    /* virt-sysprep reads these from its environment: libguestfs' direct backend (no libvirtd
       needed) and where its appliance is cached. Set before any worker runs a tool. */
    if (strcmp(sysprep, "virt-sysprep") == 0) {
        if (files_mkdirs(guestfs_dir) != 0) {
            log_error(NULL, "cannot make the sysprep cache directory", "{s:s, s:s}", "dir",
                      guestfs_dir, "reason", strerror(errno));
            goto done;
        }
        setenv("LIBGUESTFS_BACKEND", "direct", 0);
        setenv("LIBGUESTFS_CACHEDIR", guestfs_dir, 1);
    }
    if (files_mkdirs(import_dir) != 0 || !realpath(import_dir, import_real)) {
        log_error(NULL, "cannot open the import directory", "{s:s, s:s}", "dir", import_dir,
                  "reason", strerror(errno));
        goto done;
    }
    berth_error_t verr = { 0 };
    self.verifier = assertion_verifier_new(config_get(c, "secrets_dir"), &verr);
    if (!self.verifier) {
        log_error(NULL, "cannot check user assertions", "{s:s}", "reason", verr.message);
        goto done;
    }
    catalog_config_t cc = { .qemu_img = config_get(c, "qemu_img"),
                            .base_size = config_get(c, "base_image_size"),
                            .timeout_ms = (int)timeout,
                            .max_images = (int)max_images,
                            .instance = service_instance(service) };
    seed_config_t sc = { .max_user_data = (size_t)max_user_data };
    /* The preparation job talks to Redis from a worker: a connection of its own. */
    self.prep_store = store_new(config_get(c, "redis_host"), (int)redis_port, (int)redis_timeout,
                                (int)redis_timeout);
    if (self.prep_store && store_use_secrets(self.prep_store, config_get(c, "secrets_dir")) != 0)
        goto done;
    self.catalog = catalog_new(service_store(service), images_dir, &cc);
    self.prep_catalog = self.prep_store ? catalog_new(self.prep_store, images_dir, &cc) : NULL;
    if (!self.catalog || !self.prep_catalog) {
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
    self.work = work_new((int)workers, (int)queue_max);
    stage_config_t stc = { .seeds = self.seeds,
                           .catalog = self.catalog,
                           .work = self.work,
                           .max_seed_bytes = (size_t)self.max_seed_bytes,
                           .max_waiting = (size_t)waiting };
    self.stage = self.work ? stage_new(&stc) : NULL;
    if (!self.stage) {
        log_error(NULL, "cannot start the workers", "{s:I}", "workers", (json_int_t)workers);
        goto done;
    }
    self.import_work = work_new(1, (int)import_queue);
    images_config_t ic = { .catalog = self.catalog,
                           .work = self.import_work,
                           .verifier = self.verifier,
                           .import = { .import_dir = import_real,
                                       .images_dir = catalog_dir(self.catalog),
                                       .qemu_img = config_get(c, "qemu_img"),
                                       .timeout_ms = (int)timeout,
                                       .rules = { .formats = config_get(c, "import_formats"),
                                                  .max_virtual_size =
                                                      import_max_gb * 1024 * 1024 * 1024 } } };
    self.images = self.import_work ? images_new(&ic) : NULL;
    staging_config_t sgc = { .catalog = self.catalog,
                             .work = self.import_work,
                             .verifier = self.verifier,
                             .images_dir = catalog_dir(self.catalog),
                             .qemu_img = config_get(c, "qemu_img"),
                             .sysprep = sysprep,
                             .virt_sysprep = config_get(c, "virt_sysprep"),
                             .timeout_ms = (int)stage_timeout };
    self.staging = self.import_work ? staging_new(&sgc) : NULL;
    if (!self.images || !self.staging) {
        log_error(NULL, "cannot start the import worker", NULL);
        goto done;
    }
    self.transfer = transfer_new(self.catalog, chunk_max);
    upload_config_t uc = { .catalog = self.catalog,
                           .verifier = self.verifier,
                           .work = self.work,
                           .rules = &ic.import,
                           .chunk_max = chunk_max,
                           .max_bytes = capture_max,
                           .idle_ms = upload_idle_ms };
    self.upload = upload_new(&uc);
    if (!self.transfer || !self.upload) {
        log_error(NULL, "out of memory", NULL);
        goto done;
    }
    log_info(NULL, "stores opened", "{s:s, s:s}", "images_dir", images_dir, "seeds_dir", seeds_dir);
    service_reader(service, work_socket(self.work), s_on_work, &self);
    service_reader(service, work_socket(self.import_work), s_on_import_work, &self);
    images_register(self.images, service);
    staging_register(self.staging, service, (int)stage_report);
    s_prepare(service, &self);
    service_every(service, 1000, s_prepare, &self);
    service_on(service, "ListImages", "gateway", s_on_list_images, &self);
    service_on(service, "GetSeed", "agent", s_on_get_seed, &self);
    transfer_register(self.transfer, service);
    upload_register(self.upload, service);
    service_on(service, "StageImage", "taskmgr", s_on_stage_image, &self);
    service_every(service, (int)sweep_ms, s_sweep, &self);
    service_every(service, (int)recover_ms, s_recover, &self);
    rc = service_run(service);
done:
    /* Workers first: their jobs use everything below. Requests still waiting are dropped
       unanswered (their callers resend to another instance). */
    work_destroy(&self.work);
    work_destroy(&self.import_work);
    images_destroy(&self.images);
    staging_destroy(&self.staging);
    transfer_destroy(&self.transfer);
    upload_destroy(&self.upload);
    assertion_destroy(&self.verifier);
    stage_destroy(&self.stage);
    seed_destroy(&self.seeds);
    catalog_destroy(&self.prep_catalog);
    catalog_destroy(&self.catalog);
    store_destroy(&self.prep_store);
    service_destroy(&service);
    return rc;
}
