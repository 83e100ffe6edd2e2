/*  berth-agent: one per physical host. Owns the libvirt connection (through vmops), reports
    the host's inventory and every domain's state to taskmgr by heartbeat, polls taskmgr for
    work over the same outbound connection and runs the commands it gets (through worker),
    and answers Ping on its own endpoint. Never touches Redis: taskmgr records what it
    reports. Calls to taskmgr are never waited for; their answers come back on the loop. */
#include "service.h"
#include "vmops.h"
#include "worker.h"

#include <libvirt/libvirt.h>
#include <unistd.h>

typedef struct {
    service_t *service;
    vmops_t *ops;
    worker_t *worker;
    const char *uri;
    bus_client_t *taskmgr; /* the service's client, pinned to the taskmgr endpoints */
    Berth__Host host;      /* inventory, refreshed each heartbeat */
    Berth__Resources capacity;
    Berth__Resources used;
    int connected;     /* last heartbeat reached a taskmgr */
    int heartbeat_out; /* a heartbeat is on its way: do not pile more up */
    int poll_out;      /* a work poll is on its way */
    size_t poll_sent;  /* results that poll carries (dropped once it is answered) */
    int64_t started_ms;
    int poll_timeout_ms;  /* longest wait for one AgentWork answer */
    int64_t max_commands; /* commands run per poll; the rest are refused */
    char poll_error[128]; /* why the last poll failed ("" = it worked): logged on change */
} agent_t;

/* Capacity from libvirt (node info, the storage pool), each figure overridable by config
   to simulate host sizes. */
static void s_inventory(agent_t *self)
{
    config_t *c = service_config(self->service);
    virConnectPtr conn = vmops_conn(self->ops);
    virNodeInfo info = { 0 };
    if (conn)
        virNodeGetInfo(conn, &info);
    int64_t v;
    self->capacity.vcpus = (int32_t)info.cpus;
    self->capacity.ram_mb = (int64_t)(info.memory / 1024);
    int64_t disk = vmops_pool_capacity_gb(self->ops);
    self->capacity.disk_gb = disk > 0 ? disk : 0;
    if (config_get(c, "host_vcpus") && config_int(c, "host_vcpus", 1, 100000, &v) == 0)
        self->capacity.vcpus = (int32_t)v;
    if (config_get(c, "host_ram_mb") && config_int(c, "host_ram_mb", 1, INT64_MAX / 2, &v) == 0)
        self->capacity.ram_mb = v;
    if (config_get(c, "host_disk_gb") && config_int(c, "host_disk_gb", 1, INT64_MAX / 2, &v) == 0)
        self->capacity.disk_gb = v;
    const char *hv = vmops_hypervisor(self->ops);
    self->host.hypervisor = (char *)(hv ? hv : "");
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

static int s_heartbeat(service_t *service, void *arg)
{
    agent_t *self = arg;
    int up = vmops_connect(self->ops) == 0;
    s_inventory(self);
    Berth__AgentHeartbeat hb = BERTH__AGENT_HEARTBEAT__INIT;
    hb.instance = (char *)service_instance(service);
    hb.endpoint = (char *)service_endpoint(service);
    hb.host = &self->host;
    hb.ttl_ms = service_heartbeat_ms(service) * 3;
    virConnectPtr conn = vmops_conn(self->ops);
    virDomainPtr *domains = NULL;
    int n = conn ? virConnectListAllDomains(conn, &domains, 0) : 0;
    if (n < 0)
        n = 0;
    Berth__Domain *items = calloc((size_t)n + 1, sizeof *items);
    Berth__Domain **ptrs = calloc((size_t)n + 1, sizeof *ptrs);
    for (int i = 0; i < n && items && ptrs; i++) {
        berth__domain__init(&items[i]);
        items[i].name = (char *)virDomainGetName(domains[i]);
        int state = VIR_DOMAIN_NOSTATE;
        virDomainGetState(domains[i], &state, NULL, 0);
        items[i].power_state = (char *)vmops_power_state(state);
        ptrs[i] = &items[i];
    }
    hb.n_domains = items && ptrs ? (size_t)n : 0;
    hb.domains = ptrs;
    self->host.n_domains = hb.n_domains;
    self->host.domains = ptrs;
    self->host.vms = (int32_t)hb.n_domains;
    hb.started_ms = self->started_ms;
    self->host.state = up ? "UP" : "DOWN";

    if (!self->heartbeat_out)
        self->heartbeat_out =
            bus_client_send(self->taskmgr, "taskmgr", &hb.base, NULL, service_heartbeat_ms(service),
                            s_on_heartbeat, self, NULL) == 0;
    self->host.n_domains = 0;
    self->host.domains = NULL;
    for (int i = 0; i < n; i++)
        virDomainFree(domains[i]);
    free(domains);
    free(items);
    free(ptrs);
    return 0;
}

/* One poll failed or worked: log only when the reason changes, so a taskmgr without an
   AgentWork handler (UNKNOWN_TYPE) or one that is down costs one line, not one per poll. */
static void s_poll_state(agent_t *self, const char *code, const char *message)
{
    const char *now = code ? code : "";
    if (strcmp(now, self->poll_error) == 0)
        return;
    if (code)
        log_warn(NULL, "work poll failed", "{s:s, s:s?}", "code", code, "error", message);
    else
        log_info(NULL, "polling taskmgr for work", NULL);
    util_strlcpy(self->poll_error, now, sizeof self->poll_error);
}

static void s_on_work(bus_client_t *client, const char *call_id, Berth__Envelope *reply, void *arg);

/* Send the undelivered results and ask for commands, unless a poll is on its way. */
static void s_poll_send(agent_t *self)
{
    if (self->poll_out)
        return;
    Berth__AgentWork work = BERTH__AGENT_WORK__INIT;
    work.host = self->host.id;
    work.instance = (char *)service_instance(self->service);
    self->poll_sent = worker_pending(self->worker, &work.results);
    work.n_results = self->poll_sent;
    self->poll_out = bus_client_send(self->taskmgr, "taskmgr", &work.base, NULL,
                                     self->poll_timeout_ms, s_on_work, self, NULL) == 0;
}

/* The answer to a poll: the results it carried are delivered; run the commands in order.
   A poll that ran commands is followed by one more at once, to hand their results back
   without waiting a whole poll interval (the next stage of a task waits for them). */
static void s_on_work(bus_client_t *client, const char *call_id, Berth__Envelope *reply, void *arg)
{
    (void)client;
    (void)call_id;
    agent_t *self = arg;
    self->poll_out = 0;
    if (!reply) {
        s_poll_state(self, "UNREACHABLE", "no taskmgr answered");
        return;
    }
    if (reply->error) {
        /* Not processed (e.g. an older taskmgr without the handler): the results stay
           queued for the next poll. */
        s_poll_state(self, reply->error->code, reply->error->message);
        berth__envelope__free_unpacked(reply, NULL);
        return;
    }
    Berth__AgentWorkReply *body =
        (Berth__AgentWorkReply *)envelope_body(reply, &berth__agent_work_reply__descriptor);
    berth__envelope__free_unpacked(reply, NULL);
    if (!body) {
        s_poll_state(self, "BAD_REPLY", "the answer to AgentWork is not an AgentWorkReply");
        return;
    }
    s_poll_state(self, NULL, NULL);
    worker_delivered(self->worker, self->poll_sent);
    int ran = 0;
    for (size_t i = 0; i < body->n_commands; i++) {
        const Berth__AgentCommand *cmd = body->commands[i];
        if ((int64_t)i >= self->max_commands) {
            char why[160];
            snprintf(why, sizeof why, "not run: more than %lld commands in one poll (max_commands)",
                     (long long)self->max_commands);
            worker_refuse(self->worker, cmd->id, why);
            continue;
        }
        worker_run(self->worker, cmd);
        ran++;
    }
    protobuf_c_message_free_unpacked(&body->base, NULL);
    if (ran > 0) {
        s_poll_send(self);
        /* Domains changed: report them now, not at the next beat (a task waits for it). */
        s_heartbeat(self->service, self);
    }
}

static int s_poll(service_t *service, void *arg)
{
    (void)service;
    s_poll_send(arg);
    return 0;
}

int main(int argc, char **argv)
{
    service_t *service = service_new("agent", argc, argv);
    if (!service)
        return 2;
    config_t *c = service_config(service);
    config_declare(c, "libvirt_uri", "test:///default", 0);
    config_declare(c, "taskmgr_endpoints", NULL, 0);
    config_declare(c, "host_name", NULL, 0);
    config_declare(c, "host_vcpus", NULL, 0);
    config_declare(c, "host_ram_mb", NULL, 0);
    config_declare(c, "host_disk_gb", NULL, 0);
    config_declare(c, "data_dir", "./.berth/agent", 0);
    config_declare(c, "pool", "berth", 0);
    config_declare(c, "poll_ms", "200", 0);
    config_declare(c, "poll_timeout_ms", "1000", 0);
    config_declare(c, "max_commands", "64", 0);
    config_declare(c, "result_cache", "1024", 0);
    config_declare(c, "pending_results", "1024", 0);
    config_declare(c, "vm_max_vcpus", "256", 0);
    config_declare(c, "vm_max_ram_mb", "4194304", 0);
    config_declare(c, "vm_max_disk_gb", "65536", 0);
    config_declare(c, "vm_max_name", "255", 0);
    config_declare(c, "seed_max_bytes", "4194304", 0);

    agent_t self = { .service = service, .started_ms = util_now_ms() };
    int rc = 1;
    service_without_store(service);
    if (service_start(service) != 0)
        goto done;
    if (!config_get(c, "taskmgr_endpoints")) {
        log_error(NULL, "taskmgr_endpoints is not set", NULL);
        goto done;
    }
    int64_t poll_ms, poll_timeout, cache, pending, vcpus, ram, disk, name_max, seed_max;
    if (config_int(c, "poll_ms", 10, 60000, &poll_ms) ||
        config_int(c, "poll_timeout_ms", 50, 60000, &poll_timeout) ||
        config_int(c, "max_commands", 1, 10000, &self.max_commands) ||
        config_int(c, "result_cache", 1, 1000000, &cache) ||
        config_int(c, "pending_results", 1, 1000000, &pending) ||
        config_int(c, "vm_max_vcpus", 1, 100000, &vcpus) ||
        config_int(c, "vm_max_ram_mb", 1, INT64_MAX / 2, &ram) ||
        config_int(c, "vm_max_disk_gb", 1, INT64_MAX / 2, &disk) ||
        config_int(c, "vm_max_name", 1, 4096, &name_max) ||
        config_int(c, "seed_max_bytes", 1, ENVELOPE_MAX_BYTES, &seed_max))
        goto done;
    self.poll_timeout_ms = (int)poll_timeout;
    self.uri = config_get(c, "libvirt_uri");
    const char *name = config_get(c, "host_name");
    char fallback[64] = "";
    if (!name) {
        gethostname(fallback, sizeof fallback - 1);
        name = fallback;
    }
    vmops_config_t vc = { .uri = self.uri,
                          .host = name,
                          .data_dir = config_get(c, "data_dir"),
                          .pool = config_get(c, "pool"),
                          .max_vcpus = vcpus,
                          .max_ram_mb = ram,
                          .max_disk_gb = disk,
                          .max_seed_bytes = seed_max,
                          .max_name_len = name_max };
    self.ops = vmops_new(&vc);
    self.worker = self.ops ? worker_new(self.ops, (size_t)cache, (size_t)pending) : NULL;
    self.taskmgr = service_client(service);
    if (!self.ops || !self.worker ||
        bus_client_pin(self.taskmgr, "taskmgr", config_get(c, "taskmgr_endpoints")))
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
    s_heartbeat(service, &self);
    service_every(service, service_heartbeat_ms(service), s_heartbeat, &self);
    service_every(service, (int)poll_ms, s_poll, &self);
    rc = service_run(service);
done:
    worker_destroy(&self.worker);
    vmops_destroy(&self.ops);
    service_destroy(&service);
    return rc;
}
