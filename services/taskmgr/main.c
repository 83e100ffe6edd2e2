/*  berth-taskmgr: runs tasks and is the host agents' endpoint. Agents connect out to it
    and heartbeat their inventory and domain states; taskmgr records the host in Redis and
    registers the agent in the registry on its behalf (agents never touch Redis). */
#include "service.h"

typedef struct {
    service_t *service;
} taskmgr_t;

/* Record an agent's heartbeat: registry entry for the agent, host hash for placement. */
static void s_on_agent_heartbeat(bus_request_t *request, void *arg)
{
    taskmgr_t *self = arg;
    Berth__AgentHeartbeat *hb = bus_request_body(request, &berth__agent_heartbeat__descriptor);
    if (!hb || !hb->host || !hb->host->id || !*hb->host->id || !hb->host->capacity
        || !*hb->instance || strlen(hb->host->id) > 64 || hb->ttl_ms < 100 || hb->ttl_ms > 600000) {
        bus_reply_error(request, "BAD_REQUEST", "heartbeat needs instance, host id, capacity and ttl");
        return;
    }
    store_t *store = service_store(self->service);
    registry_entry_t e = { .started_ms = hb->started_ms };
    util_strlcpy(e.service, "agent", sizeof e.service);
    util_strlcpy(e.instance, hb->instance, sizeof e.instance);
    util_strlcpy(e.endpoint, hb->endpoint, sizeof e.endpoint);
    util_strlcpy(e.status, hb->host->state, sizeof e.status);
    if (registry_register(store, &e, hb->ttl_ms) != 0) {
        bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
        return;
    }
    Berth__Resources *cap = hb->host->capacity;
    redisReply *r = store_command(
        store,
        "HSET berth:host:%s id %s name %s agent %s libvirt_uri %s cap_vcpus %d cap_ram_mb %lld "
        "cap_disk_gb %lld vms %d last_seen_ms %lld agent_state %s",
        hb->host->id, hb->host->id, hb->host->name, hb->instance, hb->host->libvirt_uri,
        cap->vcpus, (long long)cap->ram_mb, (long long)cap->disk_gb, (int)hb->n_domains,
        (long long)util_now_ms(), hb->host->state);
    redisReply *s = r ? store_command(store, "SADD berth:hosts %s", hb->host->id) : NULL;
    int ok = r && s && r->type != REDIS_REPLY_ERROR && s->type != REDIS_REPLY_ERROR;
    if (r)
        freeReplyObject(r);
    if (s)
        freeReplyObject(s);
    if (!ok) {
        bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
        return;
    }
    Berth__AgentHeartbeatReply reply = BERTH__AGENT_HEARTBEAT_REPLY__INIT;
    reply.host_state = hb->host->state;
    bus_reply(request, &reply.base);
}

int main(int argc, char **argv)
{
    service_t *service = service_new("taskmgr", argc, argv);
    if (!service)
        return 2;
    taskmgr_t self = { .service = service };
    int rc = 1;
    if (service_start(service) == 0) {
        service_on(service, "AgentHeartbeat", s_on_agent_heartbeat, &self);
        rc = service_run(service);
    }
    service_destroy(&service);
    return rc;
}
