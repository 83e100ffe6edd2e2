/*  health: liveness (/healthz), readiness (/readyz) and the platform view (/v1/health):
    every registered instance with its endpoint, status and last heartbeat.

    /healthz and /readyz answer from memory: neither touches the bus or Redis, so neither
    waits on anything. Readiness is a snapshot of the registry that the service loop
    refreshes (health_refresh); a failed read, or a snapshot that has not been refreshed for a
    while (a stalled loop), means the state store is unreachable. */
#include "gateway.h"

#include <pthread.h>

/* Every service type the platform needs before it can serve requests. */
static const char *s_required[] = { "gateway", "approval", "scheduler", "taskmgr",
                                    "stager",  "meter",    "agent",     NULL };

void health_live(http_req_t *req)
{
    http_json(req, 200, json_pack("{s:s}", "status", "ok"));
}

/* Missing service types as a JSON array, or NULL if the registry cannot be read. */
static json_t *s_missing(store_t *store, json_t *services)
{
    registry_entry_t *entries = NULL;
    size_t count = 0;
    if (registry_list(store, NULL, &entries, &count) != 0)
        return NULL;
    json_t *missing = json_array();
    for (const char **s = s_required; *s; s++) {
        int found = 0;
        for (size_t i = 0; i < count && !found; i++)
            found = streq(entries[i].service, *s);
        if (!found)
            json_array_append_new(missing, json_string(*s));
    }
    for (size_t i = 0; services && i < count; i++)
        json_array_append_new(
            services,
            json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "service", entries[i].service,
                      "instance", entries[i].instance, "endpoint", entries[i].endpoint, "status",
                      entries[i].status, "started_ms", (json_int_t)entries[i].started_ms,
                      "last_heartbeat_ms", (json_int_t)entries[i].last_heartbeat_ms, "expires_ms",
                      (json_int_t)entries[i].expires_ms));
    free(entries);
    return missing;
}

/* The last readiness read: written by the service loop, read by worker threads. */
static struct {
    pthread_mutex_t lock;
    json_t *missing;  /* service types not registered, NULL before the first good read */
    int64_t taken_at; /* monotonic ms of that read */
} s_ready = { .lock = PTHREAD_MUTEX_INITIALIZER };

void health_refresh(store_t *store)
{
    json_t *missing = s_missing(store, NULL);
    /* A failed read drops the snapshot: not ready from now on, not once it has aged. */
    pthread_mutex_lock(&s_ready.lock);
    json_decref(s_ready.missing);
    s_ready.missing = missing;
    s_ready.taken_at = util_mono_ms();
    pthread_mutex_unlock(&s_ready.lock);
}

void health_cleanup(void)
{
    pthread_mutex_lock(&s_ready.lock);
    json_decref(s_ready.missing);
    s_ready.missing = NULL;
    pthread_mutex_unlock(&s_ready.lock);
}

void health_ready(http_req_t *req)
{
    json_t *missing = NULL;
    pthread_mutex_lock(&s_ready.lock);
    if (s_ready.missing && util_mono_ms() - s_ready.taken_at <= HEALTH_STALE_MS)
        missing = json_deep_copy(s_ready.missing);
    pthread_mutex_unlock(&s_ready.lock);
    if (!missing) {
        http_json(
            req, 503,
            json_pack("{s:s, s:s}", "status", "unavailable", "reason", "state store unreachable"));
        return;
    }
    int ready = json_array_size(missing) == 0;
    http_json(req, ready ? 200 : 503,
              json_pack("{s:s, s:o}", "status", ready ? "ready" : "not ready", "missing", missing));
}

void health_platform(http_req_t *req)
{
    json_t *services = json_array();
    json_t *missing = s_missing(req->store, services);
    if (!missing) {
        json_decref(services);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return;
    }
    const char *status = json_array_size(missing) ? "degraded" : "ok";
    http_json(
        req, 200,
        json_pack("{s:s, s:o, s:o}", "status", status, "missing", missing, "services", services));
}
