/*  berth-agent: one per physical host. Owns the libvirt connection, reports the host's
    inventory and every domain's state to taskmgr by heartbeat over its outbound
    connection, and answers Ping on its own endpoint. Never touches Redis. */
#include "service.h"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <unistd.h>

typedef struct {
    service_t *service;
    virConnectPtr conn;      /* NULL while libvirt is unreachable */
    const char *uri;
    bus_client_t *taskmgr;   /* pinned to the configured taskmgr endpoints */
    Berth__Host host;        /* inventory, refreshed each heartbeat */
    Berth__Resources capacity;
    Berth__Resources used;
    char host_id[UTIL_ID_LEN];
    int connected;           /* last heartbeat reached a taskmgr */
    int64_t started_ms;
} agent_t;

static const char *s_power(int state)
{
    switch (state) {
    case VIR_DOMAIN_RUNNING:
    case VIR_DOMAIN_BLOCKED:
        return "RUNNING";
    case VIR_DOMAIN_PAUSED:
    case VIR_DOMAIN_PMSUSPENDED:
        return "SUSPENDED";
    case VIR_DOMAIN_SHUTDOWN:
    case VIR_DOMAIN_SHUTOFF:
        return "STOPPED";
    case VIR_DOMAIN_CRASHED:
        return "CRASHED";
    default:
        return "UNKNOWN";
    }
}

static int s_libvirt(agent_t *self)
{
    if (self->conn && virConnectIsAlive(self->conn) == 1)
        return 0;
    if (self->conn)
        virConnectClose(self->conn);
    self->conn = virConnectOpen(self->uri);
    if (!self->conn) {
        virErrorPtr err = virGetLastError();
        log_error(NULL, "cannot connect to libvirt", "{s:s, s:s}", "uri", self->uri, "reason",
                  err && err->message ? err->message : "unknown");
        return -1;
    }
    return 0;
}

/* Capacity from libvirt, each figure overridable by config to simulate host sizes. */
static void s_inventory(agent_t *self)
{
    config_t *c = service_config(self->service);
    virNodeInfo info = { 0 };
    if (self->conn)
        virNodeGetInfo(self->conn, &info);
    int64_t v;
    self->capacity.vcpus = (int32_t)info.cpus;
    self->capacity.ram_mb = (int64_t)(info.memory / 1024);
    self->capacity.disk_gb = 0;
    if (config_get(c, "host_vcpus") && config_int(c, "host_vcpus", 1, 100000, &v) == 0)
        self->capacity.vcpus = (int32_t)v;
    if (config_get(c, "host_ram_mb") && config_int(c, "host_ram_mb", 1, INT64_MAX / 2, &v) == 0)
        self->capacity.ram_mb = v;
    if (config_get(c, "host_disk_gb") && config_int(c, "host_disk_gb", 1, INT64_MAX / 2, &v) == 0)
        self->capacity.disk_gb = v;
}

static int s_heartbeat(service_t *service, void *arg)
{
    agent_t *self = arg;
    s_libvirt(self);
    s_inventory(self);
    Berth__AgentHeartbeat hb = BERTH__AGENT_HEARTBEAT__INIT;
    hb.instance = (char *)service_instance(service);
    hb.endpoint = (char *)service_endpoint(service);
    hb.host = &self->host;
    hb.ttl_ms = service_heartbeat_ms(service) * 3;
    virDomainPtr *domains = NULL;
    int n = self->conn ? virConnectListAllDomains(self->conn, &domains, 0) : 0;
    if (n < 0)
        n = 0;
    Berth__Domain *items = calloc((size_t)n + 1, sizeof *items);
    Berth__Domain **ptrs = calloc((size_t)n + 1, sizeof *ptrs);
    for (int i = 0; i < n && items && ptrs; i++) {
        berth__domain__init(&items[i]);
        items[i].name = (char *)virDomainGetName(domains[i]);
        int state = VIR_DOMAIN_NOSTATE;
        virDomainGetState(domains[i], &state, NULL, 0);
        items[i].power_state = (char *)s_power(state);
        ptrs[i] = &items[i];
    }
    hb.n_domains = items && ptrs ? (size_t)n : 0;
    hb.domains = ptrs;
    self->host.vms = (int32_t)hb.n_domains;
    hb.started_ms = self->started_ms;
    self->host.state = self->conn ? "UP" : "DOWN";

    Berth__Envelope *reply = NULL;
    int ok = bus_client_call(self->taskmgr, "taskmgr", &hb.base, NULL, 800, &reply) == 0
             && !reply->error;
    if (ok != self->connected)
        log_emit(ok ? BERTH_LOG_INFO : BERTH_LOG_WARN, NULL, ok ? "connected to taskmgr" : "taskmgr unreachable",
                 "{s:s?}", "error", reply && reply->error ? reply->error->message : NULL);
    self->connected = ok;
    if (reply)
        berth__envelope__free_unpacked(reply, NULL);
    for (int i = 0; i < n; i++)
        virDomainFree(domains[i]);
    free(domains);
    free(items);
    free(ptrs);
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
    virSetErrorFunc(NULL, NULL);

    agent_t self = { .service = service, .started_ms = util_now_ms() };
    int rc = 1;
    if (service_start(service) != 0)
        goto done;
    if (!config_get(c, "taskmgr_endpoints")) {
        log_error(NULL, "taskmgr_endpoints is not set", NULL);
        goto done;
    }
    self.uri = config_get(c, "libvirt_uri");
    self.taskmgr = bus_client_new(NULL, service_instance(service));
    if (!self.taskmgr || bus_client_pin(self.taskmgr, "taskmgr", config_get(c, "taskmgr_endpoints")))
        goto done;
    const char *name = config_get(c, "host_name");
    char fallback[64] = "";
    if (!name) {
        gethostname(fallback, sizeof fallback - 1);
        name = fallback;
    }
    berth__host__init(&self.host);
    berth__resources__init(&self.capacity);
    berth__resources__init(&self.used);
    self.host.id = (char *)name;
    self.host.name = (char *)name;
    self.host.capacity = &self.capacity;
    self.host.used = &self.used;
    self.host.agent = (char *)service_instance(service);
    self.host.libvirt_uri = (char *)self.uri;
    s_libvirt(&self);
    s_heartbeat(service, &self);
    service_every(service, service_heartbeat_ms(service), s_heartbeat, &self);
    rc = service_run(service);
done:
    bus_client_destroy(&self.taskmgr);
    if (self.conn)
        virConnectClose(self.conn);
    service_destroy(&service);
    return rc;
}
