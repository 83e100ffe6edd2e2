/*  bus_client: the DEALER side of the bus. Keeps one DEALER per target service connected
    to every live instance in the registry (ZeroMQ round-robins among them) and follows
    instances as they come and go. A call has a deadline; until it passes, the same
    message id is resent at each retry interval, so a lost message or a dead instance
    costs one interval, and a reply is matched by correlation id. A call is either waited
    for (bus_client_call: threads such as the gateway's workers) or not (bus_client_send:
    an actor's loop, which must not block). One client per thread. */
#ifndef BERTH_BUS_CLIENT_H
#define BERTH_BUS_CLIENT_H

#include "bus_auth.h"
#include "envelope.h"
#include "store.h"
#include "util.h"

typedef struct _bus_client_t bus_client_t;

/* store (borrowed, may be NULL when every service is pinned) finds instances; sender is
   stamped on every envelope. */
bus_client_t *bus_client_new(store_t *store, const char *sender);
void bus_client_destroy(bus_client_t **self_p);

/* Speak CURVE with auth's certificate (borrowed, must outlive the client) on every
   connection, each to the server key the store holds under the target's service name.
   Before the first pin or call. Every service's client does; without it, plain ZeroMQ. */
void bus_client_secure(bus_client_t *self, bus_auth_t *auth);

/* The server behind target presents the store's certificate `server` instead of the one
   named like its service (an agent's, "agent-host-1"; or a target of no service named).
   Before target's first pin or call; -1 when the store has no such certificate. */
int bus_client_set_server(bus_client_t *self, const char *target, const char *server);

/* Use a fixed list of endpoints (comma-separated) for service instead of the registry;
   agents reach taskmgr this way. */
int bus_client_pin(bus_client_t *self, const char *service, const char *endpoints);

/* Pin the name `target` to endpoints for requests meant for `service`: several targets of
   one service each keep their own connection (an agent holds one long poll at every
   taskmgr instance). Calls then name target where they would name the service. */
int bus_client_pin_as(bus_client_t *self, const char *target, const char *service,
                      const char *endpoints);

/* Call service with body and wait up to timeout_ms. 0 and *reply_p (free with
   berth__envelope__free_unpacked; it may carry an error: check ->error) on an answer;
   -1 when no instance answered before the deadline. */
int bus_client_call(bus_client_t *self, const char *service, const ProtobufCMessage *body,
                    const char *request_id, int timeout_ms, Berth__Envelope **reply_p);

/* What a call not waited for ends with: reply (the callee's, free it with
   berth__envelope__free_unpacked; check ->error) or NULL when the deadline passed with no
   answer. call_id is the id bus_client_send gave. Runs on the owner's loop. */
typedef void(bus_reply_fn)(bus_client_t *client, const char *call_id, Berth__Envelope *reply,
                           void *arg);

/* Let calls not waited for run on loop (the owner's zloop): their replies, resends and
   deadlines are handled there. Once, before the first bus_client_send. */
void bus_client_attach(bus_client_t *self, zloop_t *loop);

/* Start a call and return at once; fn gets its end. 0 (and the call's id in id_out when
   non-NULL) or -1 if it could not be sent at all. Needs bus_client_attach(). */
int bus_client_send(bus_client_t *self, const char *service, const ProtobufCMessage *body,
                    const char *request_id, int timeout_ms, bus_reply_fn *fn, void *arg,
                    char id_out[UTIL_ID_LEN]);

/* Interval between resends of an unanswered call (default 250 ms). */
void bus_client_set_retry(bus_client_t *self, int retry_ms);

/* The same for calls to one target only (e.g. long polls a server parks: their resends are
   absorbed by the server, so resending often only costs messages). */
void bus_client_set_target_retry(bus_client_t *self, const char *target, int retry_ms);

/* Number of endpoints the client is connected to for service (after a refresh). */
int bus_client_instances(bus_client_t *self, const char *service);

#endif
