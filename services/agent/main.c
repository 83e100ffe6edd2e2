/*  berth-agent: one per physical host. Reports the host's inventory and every domain's
    state to taskmgr by heartbeat, polls taskmgr for work over the same outbound connection
    and hands the commands it gets to the worker, whose threads own the libvirt connections,
    and answers Ping on its own endpoint. libvirt's domain lifecycle events (domevents.c)
    refresh the inventory at once, so a domain that stops behind Berth's back is reported in
    the heartbeat sent then (taskmgr reconciles). Never touches Redis: taskmgr records what
    it reports. Nothing on the loop waits: calls to taskmgr and libvirt work both come back
    on it as messages. */
#include "domevents.h"
#include "imgcache.h"
#include "limit.h"
#include "service.h"
#include "uploader.h"
#include "vmops.h"
#include "worker.h"

#include <limits.h>
#include <malloc.h>
#include <sodium.h>
#include <unistd.h>

#define MAX_LINKS     16   /* taskmgr instances one agent connects to */
#define LINK_RETRY_MS 1000 /* resend interval of a poll (parked at taskmgr most of the time) */
/* Free heap the allocator keeps instead of giving it back. Each command allocates and frees
   buffers of a seed's size (tens to hundreds of KB) several times; with glibc's default the
   heap top is trimmed after many of those frees, and each trim (brk, then a TLB shootdown on
   every CPU) cost ~7% of the agent's CPU under the provisioning bench. */
#define HEAP_KEEP_BYTES (64 << 20)
/* Blocks up to this size come from the heap, not a mapping of their own. An image chunk (up
   to 2 MiB, several copies on its way in) was otherwise mapped, faulted in page by page and
   unmapped again for every chunk: setting M_TRIM_THRESHOLD above also stops glibc from
   raising its mmap threshold by itself. */
#define HEAP_BLOCK_MAX_BYTES (8 << 20)

typedef struct _agent_t agent_t;

/* The agent's connection to one taskmgr instance. */
typedef struct {
    agent_t *agent;
    char target[32]; /* bus client target ("taskmgr#<n>") pinned to endpoint */
    char endpoint[256];
    char call[UTIL_ID_LEN];      /* the current poll in flight ("" when none) */
    size_t carried;              /* outbox results the current poll carries */
    Berth__AgentResult **outbox; /* results of commands this link delivered, oldest first */
    size_t n_out;
    int batching;     /* running a poll's commands: send results after */
    int64_t retry_at; /* monotonic ms before which a failed link is not polled */
    int64_t sent_at;  /* monotonic ms the current poll was sent */
    char error[128];  /* why the last poll failed ("" = it worked) */
} s_link_t;

struct _agent_t {
    service_t *service;
    worker_t *worker;
    domevents_t *events;    /* libvirt domain events: a change refreshes the inventory now */
    zhashx_t *delivered_by; /* command id -> s_link_t that delivered it (borrowed) */
    const char *uri;
    bus_client_t *taskmgr; /* the service's client, pinned to the taskmgr endpoints */
    zactor_t *resolver;    /* looks the taskmgr endpoints up again (s_resolver) */
    Berth__Host host;      /* inventory, from the worker's snapshot at each heartbeat */
    Berth__Resources capacity;
    Berth__Resources used;
    int connected;     /* last heartbeat reached a taskmgr */
    int heartbeat_out; /* a heartbeat is on its way: do not pile more up */
    int64_t started_ms;
    int poll_wait_ms;     /* how long taskmgr may park a poll */
    int poll_timeout_ms;  /* longest wait for an answer beyond that (and for a seed) */
    int poll_retry_ms;    /* a link whose poll failed polls again after this */
    int64_t max_commands; /* commands run per poll; the rest are refused */
    size_t max_pending;   /* undelivered results per link */
    int stager;           /* stager_endpoints is set: seeds can be fetched */
    zlistx_t *fetches;    /* s_fetch_t* waiting for their seed or image (owned; freed at a stop) */
    imgcache_t *images;   /* base images cached here, fetched from the stager */
    uploader_t *uploads;  /* capture files sent to the stager (CAPTURE_UPLOAD) */
    int stopping;         /* tearing down: ended uploads answer nobody */
    zhashx_t *holding;    /* command id -> digest of the cached image it holds (owned) */
    s_link_t links[MAX_LINKS];
    size_t n_links;
};

/* Capacity as libvirt last reported it (node info, the storage pool), each figure
   overridable by config to simulate host sizes. */
static void s_inventory(agent_t *self, const Berth__Host *snapshot)
{
    config_t *c = service_config(self->service);
    int64_t v;
    const Berth__Resources *seen = snapshot->capacity;
    self->capacity.vcpus = seen ? seen->vcpus : 0;
    self->capacity.ram_mb = seen ? seen->ram_mb : 0;
    self->capacity.disk_gb = seen ? seen->disk_gb : 0;
    if (config_get(c, "host_vcpus") && config_int(c, "host_vcpus", 1, 100000, &v) == 0)
        self->capacity.vcpus = (int32_t)v;
    if (config_get(c, "host_ram_mb") && config_int(c, "host_ram_mb", 1, INT64_MAX / 2, &v) == 0)
        self->capacity.ram_mb = v;
    if (config_get(c, "host_disk_gb") && config_int(c, "host_disk_gb", 1, INT64_MAX / 2, &v) == 0)
        self->capacity.disk_gb = v;
}

static void s_on_heartbeat(bus_client_t *client, const char *call_id, Berth__Envelope *reply,
                           void *arg)
{
    (void)client;
    (void)call_id;
    agent_t *self = arg;
    self->heartbeat_out = 0;
    int ok = reply && !reply->error;
    if (ok != self->connected)
        log_emit(ok ? BERTH_LOG_INFO : BERTH_LOG_WARN, NULL,
                 ok ? "connected to taskmgr" : "taskmgr unreachable", "{s:s?}", "error",
                 reply && reply->error ? reply->error->message : NULL);
    self->connected = ok;
    if (reply)
        berth__envelope__free_unpacked(reply, NULL);
}

/* Liveness and inventory for taskmgr, from the worker's latest snapshot: no libvirt call
   here, so a slow hypervisor never delays a beat. The domains travel once, in hb.domains;
   hb.host carries inventory only. */
static int s_heartbeat(service_t *service, void *arg)
{
    agent_t *self = arg;
    const Berth__Host *snapshot = worker_inventory(self->worker);
    if (!snapshot || self->heartbeat_out)
        return 0; /* the first snapshot sends the first beat */
    s_inventory(self, snapshot);
    Berth__AgentHeartbeat hb = BERTH__AGENT_HEARTBEAT__INIT;
    hb.instance = (char *)service_instance(service);
    hb.endpoint = (char *)service_endpoint(service);
    hb.host = &self->host;
    hb.ttl_ms = service_heartbeat_ms(service) * 3;
    hb.n_domains = snapshot->n_domains;
    hb.domains = snapshot->domains;
    hb.started_ms = self->started_ms;
    self->host.vms = (int32_t)snapshot->n_domains;
    self->host.images = imgcache_list(self->images, &self->host.n_images);
    self->host.state = snapshot->state;
    self->host.hypervisor = snapshot->hypervisor;
    self->heartbeat_out =
        bus_client_send(self->taskmgr, "taskmgr", &hb.base, NULL, service_heartbeat_ms(service),
                        s_on_heartbeat, self, NULL) == 0;
    /* Borrowed from the snapshot, which the next worker call may replace. */
    self->host.state = self->host.hypervisor = (char *)protobuf_c_empty_string;
    return 0;
}

/* The host changed (a domain came, went or changed state): tell taskmgr now, not at the
   next beat. */
static void s_on_inventory(const Berth__Host *host, void *arg)
{
    (void)host;
    agent_t *self = arg;
    s_heartbeat(self->service, self);
}

/* A libvirt domain event (a domain started, stopped, crashed, ... by us or behind our
   back): a snapshot now, which the heartbeat reports as soon as it differs. */
static int s_on_domain_event(service_t *service, void *arg)
{
    (void)service;
    agent_t *self = arg;
    if (domevents_recv(self->events) > 0)
        worker_refresh(self->worker);
    return 0;
}

/* ---- the work protocol ------------------------------------------------------------------
   One link per taskmgr instance, each its own connection, each with one AgentWork parked at
   its instance (wait_ms): taskmgr answers it the moment it has a command for this host. A
   command's result goes back at once, on the link that delivered it (only the instance
   holding the task sent it and waits for it), in a new poll that supersedes the parked one;
   it stays in the link's outbox until a poll carrying it is answered (taskmgr answers only
   after recording it). PUT_SEED names the seed instead of carrying it: the agent fetches it
   from the stager (GetSeed) and checks its SHA-256 before running the command. */

/* One poll failed or worked: log only when the reason changes, so a taskmgr without an
   AgentWork handler (UNKNOWN_TYPE) or one that is down costs one line, not one per poll. */
static void s_poll_state(s_link_t *link, const char *code, const char *message)
{
    const char *now = code ? code : "";
    if (strcmp(now, link->error) == 0)
        return;
    if (code)
        log_warn(NULL, "work poll failed", "{s:s, s:s, s:s?}", "taskmgr", link->endpoint, "code",
                 code, "error", message);
    else
        log_info(NULL, "polling taskmgr for work", "{s:s}", "taskmgr", link->endpoint);
    util_strlcpy(link->error, now, sizeof link->error);
}

static void s_on_work(bus_client_t *client, const char *call_id, Berth__Envelope *reply, void *arg);

/* Send a poll on link carrying every result of its outbox; it supersedes the one in flight. */
static void s_poll_send(s_link_t *link)
{
    agent_t *self = link->agent;
    Berth__AgentWork work = BERTH__AGENT_WORK__INIT;
    work.host = self->host.id;
    work.instance = (char *)service_instance(self->service);
    work.results = link->outbox;
    work.n_results = link->n_out;
    work.wait_ms = self->poll_wait_ms;
    if (bus_client_send(self->taskmgr, link->target, &work.base, NULL,
                        self->poll_wait_ms + self->poll_timeout_ms, s_on_work, link,
                        link->call) == 0) {
        link->carried = link->n_out;
        link->sent_at = util_mono_ms();
    } else
        link->call[0] = '\0';
}

/* Queue a copy of result for link's instance and send it now (unless a batch of commands is
   being run: then once, after the batch). */
static void s_on_result(s_link_t *link, const Berth__AgentResult *result)
{
    agent_t *self = link->agent;
    if (!result)
        return;
    if (link->n_out == self->max_pending) {
        log_warn(NULL, "result queue full: dropping the oldest undelivered result", "{s:s}",
                 "taskmgr", link->endpoint);
        vmops_result_clear(link->outbox[0]);
        free(link->outbox[0]);
        memmove(link->outbox, link->outbox + 1, --link->n_out * sizeof *link->outbox);
        if (link->carried)
            link->carried--;
    }
    Berth__AgentResult *copy = malloc(sizeof *copy);
    if (!copy || vmops_result_copy(copy, result) != 0) {
        free(copy);
        return;
    }
    link->outbox[link->n_out++] = copy;
    if (!link->batching)
        s_poll_send(link);
}

/* A command finished (or was answered from the worker's cache, or refused by it): its
   result goes back on the link that delivered it, looked up by command id. */
static void s_worker_done(const Berth__AgentResult *result, void *arg)
{
    agent_t *self = arg;
    if (!result)
        return;
    s_link_t *link = zhashx_lookup(self->delivered_by, result->command);
    worker_delivered(self->worker, SIZE_MAX); /* delivery is the link's (its outbox) */
    const char *held = zhashx_lookup(self->holding, result->command);
    if (held) {
        imgcache_release(self->images, held);
        zhashx_delete(self->holding, result->command);
    }
    if (!link)
        return; /* answered twice (a redelivery seen while running): the first went back */
    zhashx_delete(self->delivered_by, result->command);
    s_on_result(link, result);
}

/* Hand one command to the worker (the one place commands are executed): it runs on the
   worker's threads and its result comes to s_worker_done from the worker's socket. */
static void s_execute(s_link_t *link, const Berth__AgentCommand *cmd)
{
    agent_t *self = link->agent;
    if (!cmd->id || !*cmd->id) {
        Berth__AgentResult r = BERTH__AGENT_RESULT__INIT;
        r.command = "";
        r.error = "command without id";
        s_on_result(link, &r);
        return;
    }
    zhashx_update(self->delivered_by, cmd->id, link);
    worker_submit(self->worker, cmd);
}

static int s_on_images(service_t *service, void *arg)
{
    (void)service;
    agent_t *self = arg;
    imgcache_recv(self->images);
    return 0;
}

static int s_on_worker(service_t *service, void *arg)
{
    (void)service;
    agent_t *self = arg;
    worker_recv(self->worker);
    return 0;
}

/* A command refused before running: its failure goes back like any result. */
static void s_refuse(s_link_t *link, const char *command, const char *error)
{
    Berth__AgentResult r = BERTH__AGENT_RESULT__INIT;
    r.command = (char *)(command ? command : "");
    r.error = (char *)error;
    log_warn(NULL, "command refused", "{s:s, s:s}", "command", r.command, "error", error);
    s_on_result(link, &r);
}

/* A PUT_SEED waiting for its seed from the stager. */
typedef struct {
    s_link_t *link;
    Berth__AgentCommand *cmd; /* owned copy */
    void *handle;             /* its place in agent_t.fetches */
} s_fetch_t;

static void s_fetch_free(void **item)
{
    s_fetch_t *f = *item;
    if (f) {
        if (f->cmd)
            berth__agent_command__free_unpacked(f->cmd, NULL);
        free(f);
        *item = NULL;
    }
}

static void s_on_seed(bus_client_t *client, const char *call_id, Berth__Envelope *reply, void *arg)
{
    (void)client;
    (void)call_id;
    s_fetch_t *f = arg;
    Berth__AgentCommand *cmd = f->cmd;
    char why[256] = "";
    Berth__Seed *seed = NULL;
    if (!reply)
        snprintf(why, sizeof why, "cannot fetch the seed of VM '%s': the stager did not answer",
                 cmd->vm);
    else if (reply->error)
        snprintf(why, sizeof why, "cannot fetch the seed of VM '%s': %s", cmd->vm,
                 reply->error->message);
    else if (!(seed = (Berth__Seed *)envelope_body(reply, &berth__seed__descriptor)))
        snprintf(why, sizeof why, "cannot fetch the seed of VM '%s': bad answer", cmd->vm);
    else {
        uint8_t digest[crypto_hash_sha256_BYTES];
        char hex[65];
        crypto_hash_sha256(digest, seed->iso.data, (unsigned long long)seed->iso.len);
        sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
        if (strcmp(hex, cmd->seed_sha256) != 0)
            snprintf(why, sizeof why,
                     "the seed fetched for VM '%s' does not match its digest (%s, expected %s)",
                     cmd->vm, hex, cmd->seed_sha256);
    }
    if (reply)
        berth__envelope__free_unpacked(reply, NULL);
    if (*why)
        s_refuse(f->link, cmd->id, why);
    else {
        cmd->seed_iso = seed->iso; /* borrowed for the run */
        s_execute(f->link, cmd);
        cmd->seed_iso.data = NULL;
        cmd->seed_iso.len = 0;
    }
    if (seed)
        berth__seed__free_unpacked(seed, NULL);
    zlistx_delete(f->link->agent->fetches, f->handle); /* frees f */
}

/* A copy of cmd as a fetch waiting for its seed or image, kept in agent_t.fetches until it
   ends (a stop before that frees it with the list: the bus client and the image cache drop
   their calls without calling back). NULL when out of memory. */
static s_fetch_t *s_fetch_new(s_link_t *link, const Berth__AgentCommand *cmd)
{
    agent_t *self = link->agent;
    s_fetch_t *f = calloc(1, sizeof *f);
    size_t len = berth__agent_command__get_packed_size(cmd);
    uint8_t *buf = f ? malloc(len ? len : 1) : NULL;
    if (buf) {
        f->link = link;
        berth__agent_command__pack(cmd, buf);
        f->cmd = berth__agent_command__unpack(NULL, len, buf);
    }
    free(buf);
    if (f && f->cmd)
        f->handle = zlistx_add_end(self->fetches, f);
    if (f && f->handle)
        return f;
    void *item = f;
    s_fetch_free(&item);
    return NULL;
}

/* The base image of a CREATE_DISK is in the cache (path) or could not be had (error): run the
   command on the cached copy, holding it so that it is not evicted under the command. */
static void s_on_image(const char *path, const char *error, void *arg)
{
    s_fetch_t *f = arg;
    agent_t *self = f->link->agent;
    Berth__AgentCommand *cmd = f->cmd;
    if (!path) {
        char why[768];
        snprintf(why, sizeof why, "cannot fetch the base image of VM '%s': %s", cmd->vm, error);
        s_refuse(f->link, cmd->id, why);
    } else {
        if (!zhashx_lookup(self->holding, cmd->id)) {
            char *sha = strdup(cmd->image_sha256);
            if (sha) {
                imgcache_hold(self->images, sha);
                zhashx_insert(self->holding, cmd->id, sha);
            }
        }
        char *was = cmd->image_path;
        cmd->image_path = (char *)path; /* borrowed for the run */
        s_execute(f->link, cmd);
        cmd->image_path = was;
    }
    zlistx_delete(self->fetches, f->handle); /* frees f */
}

/* A CAPTURE_UPLOAD waiting for its upload to end. */
typedef struct {
    s_link_t *link;
    char command[UTIL_ID_LEN + 8];
    int64_t bytes;
} s_upload_t;

static void s_on_uploaded(const char *error, void *arg)
{
    s_upload_t *u = arg;
    if (!u->link->agent->stopping) {
        if (error)
            s_refuse(u->link, u->command, error);
        else {
            char detail[64];
            snprintf(detail, sizeof detail, "uploaded %lld bytes", (long long)u->bytes);
            Berth__AgentResult r = BERTH__AGENT_RESULT__INIT;
            r.command = u->command;
            r.ok = 1;
            r.detail = detail;
            r.power_state = "";
            s_on_result(u->link, &r);
        }
    }
    free(u);
}

/* Run cmd, fetching its seed or its base image first when it names one. */
static void s_command(s_link_t *link, const Berth__AgentCommand *cmd)
{
    agent_t *self = link->agent;
    if (streq(cmd->op, "CAPTURE_UPLOAD")) {
        s_upload_t *u = calloc(1, sizeof *u);
        if (!self->stager || !u || !cmd->id || strlen(cmd->id) >= sizeof u->command) {
            free(u);
            s_refuse(link, cmd->id,
                     !self->stager ? "CAPTURE_UPLOAD needs stager_endpoints"
                                   : "invalid CAPTURE_UPLOAD command");
            return;
        }
        u->link = link;
        u->bytes = cmd->upload_bytes;
        util_strlcpy(u->command, cmd->id, sizeof u->command);
        uploader_start(self->uploads, cmd->upload_id, cmd->upload_bytes, s_on_uploaded, u);
        return;
    }
    if (streq(cmd->op, "CREATE_DISK") && *cmd->image_sha256) {
        s_fetch_t *f = s_fetch_new(link, cmd);
        if (!f)
            s_refuse(link, cmd->id, "cannot fetch the base image: out of memory");
        else
            imgcache_get(self->images, f->cmd->image_sha256,
                         *f->cmd->image_id ? f->cmd->image_id : f->cmd->image, f->cmd->image_bytes,
                         s_on_image, f);
        return;
    }
    if (!streq(cmd->op, "PUT_SEED") || cmd->seed_iso.len || !*cmd->seed_sha256) {
        s_execute(link, cmd);
        return;
    }
    if (!self->stager) {
        s_refuse(link, cmd->id, "PUT_SEED names a seed but stager_endpoints is not set");
        return;
    }
    if (!util_is_uuid(cmd->vm) || strlen(cmd->seed_sha256) != 64) {
        s_refuse(link, cmd->id, "invalid PUT_SEED command: needs a VM id and a seed digest");
        return;
    }
    s_fetch_t *f = s_fetch_new(link, cmd);
    Berth__GetSeed req = BERTH__GET_SEED__INIT;
    req.vm = cmd->vm;
    if (!f || bus_client_send(self->taskmgr, "stager", &req.base, NULL, self->poll_timeout_ms,
                              s_on_seed, f, NULL) != 0) {
        if (f)
            zlistx_delete(self->fetches, f->handle);
        s_refuse(link, cmd->id, "cannot ask the stager for the seed");
    }
}

/* The answer to a poll of link: if it is the current poll, the results it carried are
   delivered; run the commands in order; park the next poll at once. An older poll
   (superseded) may still bring commands: they run too. */
static void s_on_work(bus_client_t *client, const char *call_id, Berth__Envelope *reply, void *arg)
{
    (void)client;
    s_link_t *link = arg;
    agent_t *self = link->agent;
    int current = streq(call_id, link->call);
    if (current)
        link->call[0] = '\0';
    Berth__AgentWorkReply *body = NULL;
    if (!reply)
        s_poll_state(link, "UNREACHABLE", "no taskmgr answered");
    else if (reply->error)
        /* Not processed (e.g. an older taskmgr without the handler): the results stay
           queued for the next poll. */
        s_poll_state(link, reply->error->code, reply->error->message);
    else if (!(body = (Berth__AgentWorkReply *)envelope_body(reply,
                                                             &berth__agent_work_reply__descriptor)))
        s_poll_state(link, "BAD_REPLY", "the answer to AgentWork is not an AgentWorkReply");
    if (reply)
        berth__envelope__free_unpacked(reply, NULL);
    if (!body) {
        if (current)
            link->retry_at = util_mono_ms() + self->poll_retry_ms; /* s_poll sends again */
        return;
    }
    s_poll_state(link, NULL, NULL);
    if (current) {
        for (size_t i = 0; i < link->carried; i++) {
            vmops_result_clear(link->outbox[i]);
            free(link->outbox[i]);
        }
        memmove(link->outbox, link->outbox + link->carried,
                (link->n_out - link->carried) * sizeof *link->outbox);
        link->n_out -= link->carried;
        link->carried = 0;
    }
    link->batching = 1;
    for (size_t i = 0; i < body->n_commands; i++) {
        const Berth__AgentCommand *cmd = body->commands[i];
        if ((int64_t)i >= self->max_commands) {
            char why[160];
            snprintf(why, sizeof why, "not run: more than %lld commands in one poll (max_commands)",
                     (long long)self->max_commands);
            s_refuse(link, cmd->id, why);
            continue;
        }
        s_command(link, cmd);
    }
    link->batching = 0;
    /* An empty answer well before the wait is up comes from a taskmgr that does not park
       polls (an older version): poll again at the retry pace, not in a tight loop. */
    int early =
        current && body->n_commands == 0 && util_mono_ms() - link->sent_at < self->poll_wait_ms / 2;
    protobuf_c_message_free_unpacked(&body->base, NULL);
    if (link->n_out > link->carried)
        s_poll_send(link);
    else if (!*link->call && early)
        link->retry_at = util_mono_ms() + self->poll_retry_ms; /* s_poll sends it */
    else if (!*link->call)
        s_poll_send(link);
    /* Domains that change are reported when the worker's inventory sees it (s_on_inventory). */
}

/* Links without a poll in flight (their last one failed) poll again once their retry time
   has come: the only timer of the protocol, off the path of a command. */
static int s_poll(service_t *service, void *arg)
{
    (void)service;
    agent_t *self = arg;
    int64_t now = util_mono_ms();
    for (size_t i = 0; i < self->n_links; i++)
        if (!*self->links[i].call && now >= self->links[i].retry_at)
            s_poll_send(&self->links[i]);
    return 0;
}

/* A link to endpoint, its own pinned connection. 0, or -1 (logged) when none can be made. */
static int s_link_add(agent_t *self, const char *endpoint)
{
    if (self->n_links == MAX_LINKS) {
        log_error(NULL, "too many taskmgr instances: not connecting to this one", "{s:s, s:i}",
                  "endpoint", endpoint, "max", MAX_LINKS);
        return -1;
    }
    s_link_t *link = &self->links[self->n_links];
    link->agent = self;
    snprintf(link->target, sizeof link->target, "taskmgr#%zu", self->n_links + 1);
    util_strlcpy(link->endpoint, endpoint, sizeof link->endpoint);
    link->outbox = calloc(self->max_pending, sizeof *link->outbox);
    if (!link->outbox || bus_client_pin_as(self->taskmgr, link->target, "taskmgr", endpoint) != 0) {
        free(link->outbox);
        memset(link, 0, sizeof *link);
        log_error(NULL, "cannot connect to a taskmgr instance", "{s:s}", "endpoint", endpoint);
        return -1;
    }
    /* A parked poll is resent rarely: taskmgr absorbs resends of a poll it keeps, so a
       resend only matters when the poll was lost (taskmgr restarted). */
    bus_client_set_target_retry(self->taskmgr, link->target, LINK_RETRY_MS);
    self->n_links++;
    if (self->n_links > 1)
        log_info(NULL, "connected to a taskmgr instance", "{s:s, s:i}", "endpoint", endpoint,
                 "instances", (int)self->n_links);
    return 0;
}

/* A link to each endpoint of found not linked yet. -1 when one could not be made. */
static int s_link_new(agent_t *self, char (*found)[UTIL_ENDPOINT_MAX], int n)
{
    int rc = 0;
    for (int i = 0; i < n; i++) {
        int linked = 0;
        for (size_t k = 0; k < self->n_links && !linked; k++)
            linked = streq(self->links[k].endpoint, found[i]);
        if (!linked && s_link_add(self, found[i]) != 0)
            rc = -1;
    }
    return rc;
}

/* A link to every taskmgr instance the comma-separated endpoints stand for: each name
   resolves to every address it has (a compose service scaled to several instances). At
   start, on the loop; afterwards the resolver thread does it (s_resolver). -1 when a name did
   not resolve or a link could not be made. */
static int s_links(agent_t *self, const char *endpoints)
{
    char *copy = strdup(endpoints);
    char *save = NULL;
    int rc = copy ? 0 : -1;
    for (char *ep = copy ? strtok_r(copy, ", ", &save) : NULL; ep;
         ep = strtok_r(NULL, ", ", &save)) {
        char found[MAX_LINKS][UTIL_ENDPOINT_MAX];
        int n = util_resolve_endpoint(ep, found, MAX_LINKS);
        if (n < 0) {
            log_warn(NULL, "taskmgr endpoint does not resolve", "{s:s}", "endpoint", ep);
            rc = -1;
        }
        if (s_link_new(self, found, n) != 0)
            rc = -1;
    }
    free(copy);
    return rc;
}

/* What the resolver thread is given. */
typedef struct {
    char *endpoints;
    int interval_ms;
} s_resolver_args_t;

/* The resolver thread: every interval_ms, the addresses the endpoints stand for, sent to the
   loop as one message (a frame each). Name lookups may wait on a DNS server: never on the
   loop, whose heartbeats must go out on time. */
static void s_resolver(zsock_t *pipe, void *arg)
{
    s_resolver_args_t *a = arg;
    zsock_signal(pipe, 0);
    zpoller_t *poller = zpoller_new(pipe, NULL);
    while (poller) {
        zsock_t *which = zpoller_wait(poller, a->interval_ms);
        if (which == pipe || zpoller_terminated(poller))
            break; /* $TERM: the only thing the loop sends */
        zmsg_t *msg = zmsg_new();
        char *copy = strdup(a->endpoints);
        char *save = NULL;
        for (char *ep = copy ? strtok_r(copy, ", ", &save) : NULL; ep && msg;
             ep = strtok_r(NULL, ", ", &save)) {
            char found[MAX_LINKS][UTIL_ENDPOINT_MAX];
            int n = util_resolve_endpoint(ep, found, MAX_LINKS);
            for (int i = 0; i < n; i++)
                zmsg_addstr(msg, found[i]);
        }
        free(copy);
        if (msg && zmsg_size(msg) > 0)
            zmsg_send(&msg, pipe);
        zmsg_destroy(&msg);
    }
    zpoller_destroy(&poller);
    free(a->endpoints);
    free(a);
}

/* The resolver's latest addresses: link the new ones. */
static int s_on_resolved(service_t *service, void *arg)
{
    agent_t *self = arg;
    zmsg_t *msg = zmsg_recv(zactor_sock(self->resolver));
    (void)service;
    char found[MAX_LINKS][UTIL_ENDPOINT_MAX];
    int n = 0;
    for (char *ep = msg ? zmsg_popstr(msg) : NULL; ep; ep = zmsg_popstr(msg)) {
        if (n < MAX_LINKS)
            util_strlcpy(found[n++], ep, UTIL_ENDPOINT_MAX);
        free(ep);
    }
    zmsg_destroy(&msg);
    s_link_new(self, found, n);
    return 0;
}

int main(int argc, char **argv)
{
    mallopt(M_TRIM_THRESHOLD, HEAP_KEEP_BYTES);
    mallopt(M_MMAP_THRESHOLD, HEAP_BLOCK_MAX_BYTES);
    service_t *service = service_new("agent", argc, argv);
    if (!service)
        return 2;
    config_t *c = service_config(service);
    config_declare(c, "libvirt_uri", "test:///default", 0);
    config_declare(c, "taskmgr_endpoints", NULL, 0);
    config_declare(c, "taskmgr_resolve_ms", "10000", 0);
    config_declare(c, "host_name", NULL, 0);
    config_declare(c, "host_vcpus", NULL, 0);
    config_declare(c, "host_ram_mb", NULL, 0);
    config_declare(c, "host_disk_gb", NULL, 0);
    config_declare(c, "data_dir", "./.berth/agent", 0);
    config_declare(c, "pool", "berth", 0);
    config_declare(c, "stager_endpoints", NULL, 0);
    config_declare(c, "poll_wait_ms", "10000", 0);
    config_declare(c, "poll_timeout_ms", "2000", 0);
    config_declare(c, "poll_retry_ms", "500", 0);
    config_declare(c, "max_commands", "64", 0);
    config_declare(c, "result_cache", "1024", 0);
    config_declare(c, "pending_results", "1024", 0);
    config_declare(c, "worker_threads", "4", 0);
    config_declare(c, "worker_queue", "256", 0);
    config_declare(c, "libvirt_delay_ms", "0", 0);
    /* A template's disk "full": the tool the copy is made with and the longest it may take. */
    config_declare(c, "qemu_img", "qemu-img", 0);
    config_declare(c, "copy_timeout_ms", "600000", 0);
    config_declare(c, "vm_max_vcpus", "256", 0);
    config_declare(c, "vm_max_ram_mb", "4194304", 0);
    config_declare(c, "vm_max_disk_gb", "65536", 0);
    config_declare(c, "vm_max_name", "255", 0);
    config_declare(c, "seed_max_bytes", "4194304", 0);
    config_declare(c, "inventory_gap_ms", "100", 0);
    /* The image cache (imgcache.h): where, how large, and how images are fetched. */
    config_declare(c, "image_cache_dir", NULL, 0); /* default <data_dir>/images */
    config_declare(c, "image_cache_bytes", "10737418240", 0);
    config_declare(c, "image_chunk_bytes", "1048576", 0);
    config_declare(c, "image_credit", "8", 0);
    config_declare(c, "image_chunk_retries", "3", 0);
    config_declare(c, "image_chunk_timeout_ms", "10000", 0);

    agent_t self = { .service = service, .started_ms = util_now_ms() };
    int rc = 1;
    service_without_store(service);
    if (service_start(service) != 0)
        goto done;
    if (!config_get(c, "taskmgr_endpoints")) {
        log_error(NULL, "taskmgr_endpoints is not set", NULL);
        goto done;
    }
    int64_t poll_wait, poll_retry, poll_timeout, cache, pending, vcpus, ram, disk, name_max,
        seed_max, threads, queue, delay, gap, resolve, copy_timeout, cache_bytes, chunk_bytes,
        credit, retries, chunk_timeout;
    if (config_int(c, "poll_wait_ms", 100, 600000, &poll_wait) ||
        config_int(c, "taskmgr_resolve_ms", 0, 3600000, &resolve) ||
        config_int(c, "poll_retry_ms", 10, 60000, &poll_retry) ||
        config_int(c, "poll_timeout_ms", 50, 60000, &poll_timeout) ||
        config_int(c, "max_commands", 1, 10000, &self.max_commands) ||
        config_int(c, "result_cache", 1, 1000000, &cache) ||
        config_int(c, "pending_results", 1, 1000000, &pending) ||
        config_int(c, "worker_threads", 1, 64, &threads) ||
        config_int(c, "worker_queue", 1, 100000, &queue) ||
        config_int(c, "libvirt_delay_ms", 0, 600000, &delay) ||
        config_int(c, "vm_max_vcpus", 1, 100000, &vcpus) ||
        config_int(c, "vm_max_ram_mb", 1, INT64_MAX / 2, &ram) ||
        config_int(c, "vm_max_disk_gb", 1, INT64_MAX / 2, &disk) ||
        config_int(c, "vm_max_name", 1, 4096, &name_max) ||
        config_int(c, "seed_max_bytes", 1, ENVELOPE_MAX_BYTES, &seed_max) ||
        config_int(c, "inventory_gap_ms", 0, 60000, &gap) ||
        config_int(c, "copy_timeout_ms", 1000, 86400000, &copy_timeout) ||
        config_int(c, "image_cache_bytes", 1, INT64_MAX / 2, &cache_bytes) ||
        config_int(c, "image_chunk_bytes", TRANSFER_CHUNK_MIN, TRANSFER_CHUNK_MAX, &chunk_bytes) ||
        config_int(c, "image_credit", 1, TRANSFER_CREDIT_MAX, &credit) ||
        config_int(c, "image_chunk_retries", 0, TRANSFER_RETRIES_MAX, &retries) ||
        config_int(c, "image_chunk_timeout_ms", 100, 600000, &chunk_timeout))
        goto done;
    char cache_dir[PATH_MAX];
    if (config_get(c, "image_cache_dir"))
        util_strlcpy(cache_dir, config_get(c, "image_cache_dir"), sizeof cache_dir);
    else if (snprintf(cache_dir, sizeof cache_dir, "%s/images", config_get(c, "data_dir")) >=
             (int)sizeof cache_dir) {
        log_error(NULL, "data_dir is too long", NULL);
        goto done;
    }
    self.poll_timeout_ms = (int)poll_timeout;
    self.poll_wait_ms = (int)poll_wait;
    self.poll_retry_ms = (int)poll_retry;
    self.max_pending = (size_t)pending;
    self.uri = config_get(c, "libvirt_uri");
    const char *name = config_get(c, "host_name");
    char fallback[64] = "";
    if (!name) {
        gethostname(fallback, sizeof fallback - 1);
        name = fallback;
    }
    /* The bus certificate is the host's: taskmgr and the stager take this agent's word only
       for the host it names. */
    if (!streq(bus_auth_host(service_auth(service)), name)) {
        log_error(NULL, "curve_cert is another host's certificate", "{s:s, s:s}", "host_name", name,
                  "certificate_host", bus_auth_host(service_auth(service)));
        goto done;
    }
    vmops_config_t vc = { .uri = self.uri,
                          .host = name,
                          .data_dir = config_get(c, "data_dir"),
                          .pool = config_get(c, "pool"),
                          .max_vcpus = vcpus,
                          .max_ram_mb = ram,
                          .max_disk_gb = disk,
                          .max_seed_bytes = seed_max,
                          .max_name_len = name_max,
                          .delay_ms = delay,
                          .qemu_img = config_get(c, "qemu_img"),
                          .copy_timeout_ms = copy_timeout,
                          .image_cache_dir = cache_dir };
    /* libvirt's event loop before any connection: a driver opened earlier emits nothing. */
    if (domevents_init() != 0)
        goto done;
    self.worker =
        worker_new(&vc, (size_t)threads, (size_t)queue, (size_t)cache, s_worker_done, &self);
    self.delivered_by = zhashx_new();
    self.holding = zhashx_new();
    if (self.holding)
        zhashx_set_destructor(self.holding, (zhashx_destructor_fn *)zstr_free);
    self.fetches = zlistx_new();
    if (self.fetches)
        zlistx_set_destructor(self.fetches, s_fetch_free);
    self.taskmgr = service_client(service);
    if (!self.worker || !self.delivered_by || !self.holding || !self.fetches ||
        bus_client_pin(self.taskmgr, "taskmgr", config_get(c, "taskmgr_endpoints")))
        goto done;
    if (s_links(&self, config_get(c, "taskmgr_endpoints")) != 0 && self.n_links == 0) {
        log_error(NULL, "no taskmgr instance to connect to", "{s:s}", "taskmgr_endpoints",
                  config_get(c, "taskmgr_endpoints"));
        goto done;
    }
    if (sodium_init() < 0) {
        log_error(NULL, "libsodium failed to initialise", NULL);
        goto done;
    }
    if (config_get(c, "stager_endpoints")) {
        if (bus_client_pin(self.taskmgr, "stager", config_get(c, "stager_endpoints")) != 0 ||
            bus_client_pin_as(self.taskmgr, "stager-images", "stager",
                              config_get(c, "stager_endpoints")) != 0)
            goto done;
        /* A chunk call is resent rarely: the stager answers each in a few ms, and a resend
           of one waiting behind the others in flight only doubles the stager's work. */
        bus_client_set_target_retry(self.taskmgr, "stager-images", (int)chunk_timeout / 4);
        self.stager = 1;
    } else
        log_warn(NULL, "stager_endpoints is not set: seeds cannot be fetched (PUT_SEED fails)",
                 NULL);
    imgcache_config_t icc = { .dir = cache_dir,
                              .max_bytes = cache_bytes,
                              .chunk_bytes = chunk_bytes,
                              .credit = (int)credit,
                              .retries = (int)retries,
                              .timeout_ms = (int)chunk_timeout };
    self.images = imgcache_new(&icc, self.stager ? self.taskmgr : NULL);
    if (!self.images)
        goto done;
    service_reader(service, imgcache_socket(self.images), s_on_images, &self);
    uploader_config_t ucc = { .data_dir = config_get(c, "data_dir"),
                              .chunk_bytes = chunk_bytes,
                              .credit = (int)credit,
                              .retries = (int)retries,
                              .timeout_ms = (int)chunk_timeout };
    self.uploads = uploader_new(&ucc, self.taskmgr);
    if (!self.uploads)
        goto done;
    berth__host__init(&self.host);
    berth__resources__init(&self.capacity);
    berth__resources__init(&self.used);
    self.host.id = (char *)name;
    self.host.name = (char *)name;
    self.host.capacity = &self.capacity;
    self.host.used = &self.used;
    self.host.agent = (char *)service_instance(service);
    self.host.libvirt_uri = (char *)self.uri;
    worker_set_refresh_gap(self.worker, (int)gap);
    if (worker_watch(self.worker, service_heartbeat_ms(service), s_on_inventory, &self) != 0)
        goto done;
    service_reader(service, worker_socket(self.worker), s_on_worker, &self);
    if (!(self.events = domevents_new(self.uri)))
        goto done;
    service_reader(service, domevents_socket(self.events), s_on_domain_event, &self);
    service_every(service, service_heartbeat_ms(service), s_heartbeat, &self);
    s_poll(service, &self);
    service_every(service, (int)poll_retry, s_poll, &self);
    if (resolve > 0) {
        s_resolver_args_t *a = calloc(1, sizeof *a);
        if (a && (a->endpoints = strdup(config_get(c, "taskmgr_endpoints")))) {
            a->interval_ms = (int)resolve;
            self.resolver = zactor_new(s_resolver, a); /* the thread frees a */
        }
        if (!self.resolver) {
            if (a)
                free(a->endpoints);
            free(a);
            log_error(NULL, "cannot start the taskmgr resolver thread", NULL);
            goto done;
        }
        service_reader(service, zactor_sock(self.resolver), s_on_resolved, &self);
    }
    rc = service_run(service);
done:
    zactor_destroy(&self.resolver);
    for (size_t i = 0; i < self.n_links; i++) {
        for (size_t k = 0; k < self.links[i].n_out; k++) {
            vmops_result_clear(self.links[i].outbox[k]);
            free(self.links[i].outbox[k]);
        }
        free(self.links[i].outbox);
    }
    self.stopping = 1;
    uploader_destroy(&self.uploads);
    domevents_destroy(&self.events);
    worker_destroy(&self.worker);
    zhashx_destroy(&self.delivered_by);
    zlistx_destroy(&self.fetches);
    imgcache_destroy(&self.images);
    zhashx_destroy(&self.holding);
    service_destroy(&service);
    return rc;
}
