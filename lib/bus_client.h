/*  bus_client: the DEALER side of the bus. Keeps one DEALER per target service connected
    to every live instance in the registry (ZeroMQ round-robins among them) and follows
    instances as they come and go. A call has a deadline; until it passes, the same
    message id is resent at each retry interval, so a lost message or a dead instance
    costs one interval, and a reply is matched by correlation id. One client per thread. */
#ifndef BERTH_BUS_CLIENT_H
#define BERTH_BUS_CLIENT_H

#include "envelope.h"
#include "store.h"

typedef struct _bus_client_t bus_client_t;

/* store (borrowed, may be NULL when every service is pinned) finds instances; sender is
   stamped on every envelope. */
bus_client_t *bus_client_new(store_t *store, const char *sender);
void bus_client_destroy(bus_client_t **self_p);

/* Use a fixed list of endpoints (comma-separated) for service instead of the registry;
   agents reach taskmgr this way. */
int bus_client_pin(bus_client_t *self, const char *service, const char *endpoints);

/* Call service with body and wait up to timeout_ms. 0 and *reply_p (free with
   berth__envelope__free_unpacked; it may carry an error: check ->error) on an answer;
   -1 when no instance answered before the deadline. */
int bus_client_call(bus_client_t *self, const char *service, const ProtobufCMessage *body,
                    const char *request_id, int timeout_ms, Berth__Envelope **reply_p);

/* Interval between resends of an unanswered call (default 250 ms). */
void bus_client_set_retry(bus_client_t *self, int retry_ms);

/* Number of endpoints the client is connected to for service (after a refresh). */
int bus_client_instances(bus_client_t *self, const char *service);

#endif
