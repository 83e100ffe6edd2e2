/*  berth-scheduler: places VMs on hosts. SelectHost runs the filters (host up, not excluded,
    hypervisor, RAM, vCPU, disk, other groups' reservations, max VMs per host, the request's
    affinity or anti-affinity: placement.h), the weigher (the group's reservation, then free
    RAM: spread or pack, then a host caching the VM's image) and the atomic claim (placement.c),
    and chooses the image the VM is built from (a template's staged image: heuristics.h);
    ReleaseClaim gives a VM's claim back; ValidateBuild judges a machine asked for and chooses
    its image (heuristics.h). Any number of instances may run side by side. */
#include "heuristics.h"
#include "keys.h"
#include "metrics.h"
#include "model.h"
#include "placement.h"
#include "service.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

typedef struct {
    service_t *service;
    placement_t *placement;
    int store_down;    /* last refresh failed: logged once per outage */
    int truncated;     /* last refresh ignored hosts over max_hosts: logged once */
    zhashx_t *digests; /* image name -> s_digest_t: its SHA-256 as last read */
    heuristics_config_t heuristics;
    int64_t max_images;     /* most catalog images one ValidateBuild reads */
    int64_t image_cache_ms; /* the catalog as read is used this long (0: read every time) */
    Berth__Image **images;  /* the catalog as last read */
    size_t n_images;
    int64_t images_read_ms; /* monotonic; 0: never */
} scheduler_t;

/* An image's digest as read from its record, and when. */
typedef struct {
    char sha256[65]; /* "" when the image has none (or is not there) */
    int64_t read_ms; /* monotonic */
} s_digest_t;

static void s_digest_free(void **item)
{
    free(*item);
    *item = NULL;
}

#define DIGEST_KEEP_MS 10000 /* an image's digest is read again after this */
#define DIGESTS_MAX    4096  /* image names remembered (the catalog holds at most 100,000) */

/* The SHA-256 of the image named name ("" when unknown), read from its record at most once
   per DIGEST_KEEP_MS: the weigher prefers hosts that cache it, and a stale answer only
   orders hosts less well. */
static const char *s_image_digest(scheduler_t *self, const char *name)
{
    if (!name || !*name || strlen(name) > LIMIT_IMAGE_NAME_MAX)
        return "";
    s_digest_t *d = zhashx_lookup(self->digests, name);
    int64_t now = util_mono_ms();
    if (d && now - d->read_ms < DIGEST_KEEP_MS)
        return d->sha256;
    if (!d) {
        if (zhashx_size(self->digests) >= DIGESTS_MAX)
            zhashx_purge(self->digests);
        d = calloc(1, sizeof *d);
        if (!d)
            return "";
        zhashx_insert(self->digests, name, d);
    }
    char key[KEYS_MAX];
    redisReply *r = store_command(service_store(self->service), "HGET %s sha256",
                                  keys_build(key, KEYS_IMAGE, name, NULL));
    d->sha256[0] = '\0';
    if (r && r->type == REDIS_REPLY_STRING && r->len == 64)
        util_strlcpy(d->sha256, r->str, sizeof d->sha256);
    if (r)
        freeReplyObject(r);
    d->read_ms = now;
    return d->sha256;
}

static int s_catalog(scheduler_t *self, int fresh);

/* The scheduler's metrics (metrics.h): placements by result, hosts by stored state. */
static struct {
    metrics_family_t *placements, *hosts;
} s_m;

static void s_on_select_host(bus_request_t *request, void *arg)
{
    scheduler_t *self = arg;
    const char *rid = bus_request_envelope(request)->request_id;
    Berth__SelectHost *req = bus_request_body(request, &berth__select_host__descriptor);
    if (!req) {
        bus_reply_error(request, "BAD_REQUEST", "expected a SelectHost body");
        return;
    }
    placement_result_t result;
    berth_error_t error = { 0 };
    /* The image the VM is built from: for a template's model, its staged image chosen here
       by the image rule (the one place it is chosen, for every VM); a custom build's image
       as its verdict chose it. A retry (said so, or hosts excluded) chooses on the catalog
       as it is now, so an image deleted since the last attempt is not chosen again. The weigher
       prefers hosts caching that image's file (by its digest). */
    const Berth__Image *built = NULL;
    if (req->image && *req->image) {
        if (s_catalog(self, req->retry || req->n_exclude > 0) != 0) {
            bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
            return;
        }
        built = heuristics_build_image(req->image, req->image_fixed, self->images, self->n_images);
    }
    int staged = built && built->kind && strcmp(built->kind, "staged") == 0;
    Berth__SelectHost ask = *req;
    if (built && built->sha256 && strlen(built->sha256) == 64)
        ask.image_sha256 = built->sha256;
    else if (!*ask.image_sha256)
        ask.image_sha256 = (char *)s_image_digest(self, ask.image);
    int rc = placement_select(self->placement, &ask, &result, &error);
    metrics_add(s_m.placements, 1,
                rc == PLACEMENT_NO_VALID_HOST ? "no_valid_host"
                : rc == PLACEMENT_NETWORK     ? "no_address"
                : rc != 0                     ? "failed"
                : result.existing             ? "existing"
                                              : "claimed");
    if (rc == PLACEMENT_NO_VALID_HOST)
        log_info(rid, "no valid host", "{s:s, s:s}", "vm", req->vm, "reason", error.message);
    if (rc == PLACEMENT_NETWORK)
        log_info(rid, "no address", "{s:s, s:s}", "vm", req->vm, "reason", error.message);
    if (rc < 0)
        error_set(&error, "UNAVAILABLE", "state store unreachable");
    if (rc != 0)
        bus_reply_fault(request, &error);
    else {
        Berth__HostSelection reply = BERTH__HOST_SELECTION__INIT;
        char *alternates[PLACEMENT_ALTERNATES_MAX];
        for (int i = 0; i < result.n_alternates; i++)
            alternates[i] = result.alternates[i];
        reply.host = result.host;
        reply.alternates = alternates;
        reply.n_alternates = (size_t)result.n_alternates;
        reply.ip = result.ip;
        reply.mac = result.mac;
        char *ips[LIMIT_VM_NETWORKS_MAX], *macs[LIMIT_VM_NETWORKS_MAX];
        for (int i = 0; i < result.n_networks; i++) {
            ips[i] = result.ips[i];
            macs[i] = result.macs[i];
        }
        reply.n_ips = reply.n_macs = (size_t)result.n_networks;
        reply.ips = ips;
        reply.macs = macs;
        reply.staged_image = staged && built->id ? built->id : "";
        reply.staged_image_name = staged && built->name ? built->name : "";
        reply.image_sha256 = ask.image_sha256 ? ask.image_sha256 : "";
        log_info(rid, result.existing ? "claim exists" : "claimed",
                 "{s:s, s:s, s:i, s:I, s:I, s:s, s:s}", "vm", req->vm, "host", result.host, "vcpus",
                 req->flavor->vcpus, "ram_mb", (json_int_t)req->flavor->ram_mb, "disk_gb",
                 (json_int_t)req->flavor->disk_gb, "image", req->image, "staged_image",
                 reply.staged_image_name);
        bus_reply(request, &reply.base);
    }
}

static void s_on_release_claim(bus_request_t *request, void *arg)
{
    scheduler_t *self = arg;
    const char *rid = bus_request_envelope(request)->request_id;
    Berth__ReleaseClaim *req = bus_request_body(request, &berth__release_claim__descriptor);
    if (!req) {
        bus_reply_error(request, "BAD_REQUEST", "expected a ReleaseClaim body");
        return;
    }
    int released = 0;
    berth_error_t error = { 0 };
    int rc = req->keep_disk ? placement_shrink(self->placement, req->vm, &released, &error)
             : req->keep_address
                 ? placement_release_capacity(self->placement, req->vm, &released, &error)
                 : placement_release(self->placement, req->vm, &released, &error);
    if (rc < 0)
        error_set(&error, "UNAVAILABLE", "state store unreachable");
    if (rc != 0)
        bus_reply_fault(request, &error);
    else {
        if (released)
            log_info(rid, req->keep_disk ? "released but the disk" : "released", "{s:s}", "vm",
                     req->vm);
        Berth__ClaimReleased reply = BERTH__CLAIM_RELEASED__INIT;
        reply.released = released;
        bus_reply(request, &reply.base);
    }
}

/* The catalog's images (at most max_images, by name order of the set), for ValidateBuild:
   read from the stager's documented keys (berth:images, berth:image:<name>). *n_p images in
   *images_p (free with s_images_free), or -1 when Redis failed. */
static int s_images(scheduler_t *self, Berth__Image ***images_p, size_t *n_p)
{
    store_t *store = service_store(self->service);
    redisReply *names = store_command(store, "SMEMBERS %s", KEYS_IMAGES);
    if (!names || names->type != REDIS_REPLY_ARRAY) {
        if (names)
            freeReplyObject(names);
        return -1;
    }
    size_t n =
        names->elements < (size_t)self->max_images ? names->elements : (size_t)self->max_images;
    Berth__Image **images = calloc(n + 1, sizeof *images);
    size_t got = 0;
    int rc = images ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const redisReply *e = names->element[i];
        if (e->type != REDIS_REPLY_STRING || e->len == 0 || e->len > LIMIT_IMAGE_NAME_MAX)
            continue;
        char key[KEYS_MAX];
        ProtobufCMessage *msg = NULL;
        int found = model_load(store, &berth__image__descriptor,
                               keys_build(key, KEYS_IMAGE, e->str, NULL), &msg);
        if (found < 0)
            rc = -1;
        else if (found == 0)
            images[got++] = (Berth__Image *)msg;
    }
    freeReplyObject(names);
    if (rc != 0) {
        for (size_t i = 0; images && i < got; i++)
            protobuf_c_message_free_unpacked(&images[i]->base, NULL);
        free(images);
        return -1;
    }
    *images_p = images;
    *n_p = got;
    return 0;
}

static void s_images_free(Berth__Image **images, size_t n)
{
    for (size_t i = 0; images && i < n; i++)
        protobuf_c_message_free_unpacked(&images[i]->base, NULL);
    free(images);
}

/* The catalog as last read, read again once image_cache_ms old (or now, with fresh): a
   form checking as its user types, and placements, cost a scan of the catalog at most that
   often. 0, or -1 when Redis failed (the copy is kept). */
static int s_catalog(scheduler_t *self, int fresh)
{
    int64_t now = util_mono_ms();
    if (!fresh && self->images_read_ms && now - self->images_read_ms < self->image_cache_ms)
        return 0;
    Berth__Image **images = NULL;
    size_t n = 0;
    if (s_images(self, &images, &n) != 0)
        return -1;
    s_images_free(self->images, self->n_images);
    self->images = images;
    self->n_images = n;
    self->images_read_ms = now;
    return 0;
}

/* Validate a machine asked for and choose its image (heuristics.h): the verdict, with its
   reasons and suggestions; approval adds the group's rules. Reads, never writes. */
static void s_on_validate_build(bus_request_t *request, void *arg)
{
    scheduler_t *self = arg;
    Berth__ValidateBuild *req = bus_request_body(request, &berth__validate_build__descriptor);
    if (!req) {
        bus_reply_error(request, "BAD_REQUEST", "expected a ValidateBuild body");
        return;
    }
    if (req->n_applications > LIMIT_IMAGE_APPS_MAX) {
        bus_reply_error(request, "BAD_REQUEST", "too many applications");
        return;
    }
    if (s_catalog(self, 0) != 0) {
        bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
        return;
    }
    Berth__Image **images = self->images;
    size_t n_images = self->n_images;
    if (placement_hosts(self->placement) == 0)
        placement_refresh(self->placement); /* none known yet: look once more */
    int n_hosts = placement_hosts(self->placement);
    int64_t(*sizes)[3] = calloc((size_t)(n_hosts > 0 ? n_hosts : 1), sizeof *sizes);
    heuristics_size_t *hosts = calloc((size_t)(n_hosts > 0 ? n_hosts : 1), sizeof *hosts);
    if (!sizes || !hosts || (n_hosts = placement_capacities(self->placement, sizes, n_hosts)) < 0) {
        free(sizes);
        free(hosts);
        bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
        return;
    }
    for (int i = 0; i < n_hosts; i++)
        hosts[i] = (heuristics_size_t){ sizes[i][0], sizes[i][1], sizes[i][2] };
    Berth__BuildVerdict *verdict = NULL;
    if (heuristics_verdict(&self->heuristics, req, images, n_images, hosts, (size_t)n_hosts,
                           &verdict) != 0)
        bus_reply_error(request, "INTERNAL", "out of memory");
    else {
        log_info(bus_request_envelope(request)->request_id, "build validated",
                 "{s:s, s:s, s:b, s:s}", "os", req->os, "image", req->image, "ok", verdict->ok,
                 "chosen", verdict->image ? verdict->image->name : "");
        bus_reply(request, &verdict->base);
        protobuf_c_message_free_unpacked(&verdict->base, NULL);
    }
    free(sizes);
    free(hosts);
}

/* The hosts by state, as the copy has them. */
static void s_gauges(scheduler_t *self)
{
    for (const char **state = (const char *[]){ "UP", "DOWN", "DISABLED", NULL }; *state; state++)
        metrics_set(s_m.hosts, placement_hosts_in(self->placement, *state), *state);
}

/* A load (rc) or follow that worked or failed: said once per change. */
static void s_store_said(scheduler_t *self, int rc)
{
    int down = rc != 0;
    if (down != self->store_down)
        log_emit(down ? BERTH_LOG_WARN : BERTH_LOG_INFO, NULL,
                 down ? "cannot load hosts" : "hosts loaded", "{s:i}", "hosts",
                 placement_hosts(self->placement));
    self->store_down = down;
    if (!down)
        s_gauges(self);
}

/* The whole host list again (at start, then every host_refresh_ms): what no event says
   (capacity from heartbeats, reservations) is current at least this often. */
static int s_refresh(service_t *service, void *arg)
{
    (void)service;
    scheduler_t *self = arg;
    int rc = placement_refresh(self->placement);
    s_store_said(self, rc);
    int truncated = rc == 0 && placement_truncated(self->placement);
    if (truncated && !self->truncated)
        log_warn(NULL, "more hosts than max_hosts; the rest are not considered", "{s:i}",
                 "considered", placement_hosts(self->placement));
    if (rc == 0)
        self->truncated = truncated;
    return 0;
}

/* Between loads, the event stream keeps the copy current (every host_follow_ms). */
static int s_follow(service_t *service, void *arg)
{
    (void)service;
    scheduler_t *self = arg;
    s_store_said(self, placement_follow(self->placement));
    return 0;
}

/* A ratio key: a decimal number in (0, 1000]. */
static int s_ratio(config_t *c, const char *key, double *out)
{
    const char *text = config_get(c, key);
    char *end = NULL;
    errno = 0;
    double v = text ? strtod(text, &end) : NAN;
    if (!text || errno || end == text || *end || !(v > 0.0 && v <= 1000.0)) {
        log_error(NULL, "ratio must be a number above 0 and at most 1000", "{s:s, s:s?}", "key",
                  key, "value", text);
        return -1;
    }
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    service_t *service = service_new("scheduler", argc, argv);
    if (!service)
        return 2;
    config_t *c = service_config(service);
    config_declare(c, "host_timeout_ms", "3000", 0);
    config_declare(c, "host_down_grace_ms", "5000", 0);
    config_declare(c, "ram_ratio", "1.0", 0);
    config_declare(c, "cpu_ratio", "4.0", 0);
    config_declare(c, "disk_ratio", "1.0", 0);
    config_declare(c, "host_refresh_ms", "60000", 0);
    config_declare(c, "host_follow_ms", "100", 0);
    config_declare(c, "weigher", "spread", 0);
    config_declare(c, "max_hosts", "100000", 0);
    config_declare(c, "max_exclude", "32", 0);
    config_declare(c, "max_alternates", "2", 0);
    config_declare(c, "max_claim_attempts", "16", 0);
    config_declare(c, "max_vms_per_host", "0", 0);
    config_declare(c, "max_vms_hosts", "", 0);
    config_declare(c, "fit_margin_pct", "10", 0);
    config_declare(c, "max_images", "10000", 0);
    config_declare(c, "image_cache_ms", "1000", 0);

    scheduler_t self = { .service = service };
    int rc = 1;
    if (service_start(service) != 0)
        goto done;
    placement_config_t pc;
    placement_config_defaults(&pc);
    int64_t max_hosts, max_exclude, max_alternates, attempts, follow_ms, margin;
    if (config_int(c, "host_timeout_ms", 100, 86400000, &pc.host_timeout_ms) ||
        config_int(c, "host_down_grace_ms", 0, 600000, &pc.down_grace_ms) ||
        config_int(c, "host_follow_ms", 0, 60000, &follow_ms) ||
        config_int(c, "host_refresh_ms", 0, 600000, &pc.refresh_ms) ||
        config_int(c, "max_hosts", 1, 1000000, &max_hosts) ||
        config_int(c, "max_exclude", 0, 1000, &max_exclude) ||
        config_int(c, "max_alternates", 0, PLACEMENT_ALTERNATES_MAX, &max_alternates) ||
        config_int(c, "max_claim_attempts", 1, 100000, &attempts) ||
        config_int(c, "max_vms_per_host", 0, 1000000, &pc.max_vms_per_host) ||
        config_int(c, "fit_margin_pct", 0, 1000, &margin) ||
        config_int(c, "max_images", 1, 100000, &self.max_images) ||
        config_int(c, "image_cache_ms", 0, 600000, &self.image_cache_ms) ||
        s_ratio(c, "ram_ratio", &pc.ram_ratio) || s_ratio(c, "cpu_ratio", &pc.cpu_ratio) ||
        s_ratio(c, "disk_ratio", &pc.disk_ratio))
        goto done;
    const char *weigher = config_get(c, "weigher");
    if (!streq(weigher, "spread") && !streq(weigher, "pack")) {
        log_error(NULL, "weigher must be spread or pack", "{s:s}", "weigher", weigher);
        goto done;
    }
    pc.pack = streq(weigher, "pack");
    self.heuristics.margin_pct = (int)margin;
    pc.max_vms_hosts = config_get(c, "max_vms_hosts");
    if (placement_max_vms_hosts_valid(pc.max_vms_hosts) != 0) {
        log_error(NULL, "max_vms_hosts must be host=N[,host=N...] with N from 0 to 1000000",
                  "{s:s}", "max_vms_hosts", pc.max_vms_hosts);
        goto done;
    }
    pc.max_hosts = (int)max_hosts;
    pc.max_exclude = (int)max_exclude;
    pc.max_alternates = (int)max_alternates;
    pc.max_attempts = (int)attempts;
    self.placement = placement_new(service_store(service), &pc);
    self.digests = zhashx_new();
    if (self.digests)
        zhashx_set_destructor(self.digests, s_digest_free);
    if (!self.placement || !self.digests)
        goto done;
    s_m.placements = metrics_counter("berth_scheduler_placements_total",
                                     "SelectHost decisions, by result (claimed, existing: the "
                                     "VM's claim was there, no_valid_host, no_address, failed)",
                                     "result");
    s_m.hosts = metrics_gauge("berth_scheduler_hosts",
                              "Hosts in the scheduler's copy, by stored state", "state");
    service_on(service, "SelectHost", "taskmgr", s_on_select_host, &self);
    service_on(service, "ReleaseClaim", "taskmgr", s_on_release_claim, &self);
    service_on(service, "ValidateBuild", "approval", s_on_validate_build, &self);
    s_refresh(service, &self);
    if (pc.refresh_ms > 0)
        service_every(service, (int)pc.refresh_ms, s_refresh, &self);
    /* host_refresh_ms 0 loads the hosts before every decision: nothing to follow then. */
    if (pc.refresh_ms > 0 && follow_ms > 0)
        service_every(service, (int)follow_ms, s_follow, &self);
    rc = service_run(service);
done:
    placement_destroy(&self.placement);
    zhashx_destroy(&self.digests);
    s_images_free(self.images, self.n_images);
    service_destroy(&service);
    return rc;
}
