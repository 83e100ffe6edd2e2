/*  registry: which service instances are alive and where. Each instance writes
    {service, instance, endpoint, status} with a TTL and refreshes it by heartbeat; an
    instance that stops heartbeating disappears when its TTL runs out. Times are Redis's
    clock, so instances on hosts with skewed clocks agree. */
#ifndef BERTH_REGISTRY_H
#define BERTH_REGISTRY_H

#include "store.h"

typedef struct {
    char service[32];
    char instance[128];
    char endpoint[256];
    char status[32]; /* UP, DRAINING, ... as the instance reports it */
    int64_t started_ms;
    int64_t last_heartbeat_ms; /* Redis time of the last refresh */
    int64_t expires_ms;        /* Redis time at which the entry lapses */
} registry_entry_t;

/* Register or refresh (the heartbeat) an instance for ttl_ms. 0 or -1 if Redis failed. */
int registry_register(store_t *store, const registry_entry_t *entry, int ttl_ms);

/* Remove an instance at once (clean shutdown). */
int registry_deregister(store_t *store, const char *service, const char *instance);

/* Live instances of one service (or of all when service is NULL), sorted by service then
   instance. *entries is the caller's to free. -1 if Redis failed. */
int registry_list(store_t *store, const char *service, registry_entry_t **entries, size_t *count);

#endif
