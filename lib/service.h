/*  service: what every Berth process does the same way. Reads its config (defaults, file,
    BERTH_* env), logs it, connects to Redis, binds its bus endpoint, registers in the
    registry and heartbeats, answers Ping with its Status, runs one poll loop (bus + timers)
    until SIGINT/SIGTERM, then deregisters. A service's main.c only adds its handlers. */
#ifndef BERTH_SERVICE_H
#define BERTH_SERVICE_H

#include "bus_client.h"
#include "bus_server.h"
#include "config.h"
#include "log.h"
#include "registry.h"
#include "store.h"
#include "util.h"

typedef struct _service_t service_t;

/* A periodic job on the service loop. Return -1 to stop the loop (fatal). */
typedef int(service_timer_fn)(service_t *service, void *arg);

/* Parse --config FILE from argv and declare the common keys. NULL on bad arguments. */
service_t *service_new(const char *name, int argc, char **argv);
void service_destroy(service_t **self_p);

/* Declare service-specific keys on this before service_start(). */
config_t *service_config(service_t *self);

/* This process never touches Redis (host agents): no store, no registry heartbeat of its
   own; whoever it reports to registers it. Call before service_start(). */
void service_without_store(service_t *self);

/* Load config, connect, bind, register. -1 (logged) when the service cannot start. */
int service_start(service_t *self);

/* Handle requests of type from callers only (service names separated by spaces, or "*":
   bus_server_on); every handler says who may call it. */
void service_on(service_t *self, const char *type, const char *callers, bus_handler_fn *fn,
                void *arg);
void service_every(service_t *self, int interval_ms, service_timer_fn *fn, void *arg);

/* Read one more socket in the loop (e.g. an outbound DEALER); fn runs when it is readable. */
void service_reader(service_t *self, zsock_t *sock, service_timer_fn *fn, void *arg);

/* Run until interrupted; returns 0 on a clean stop. */
int service_run(service_t *self);

/* The Redis connection; NULL for a service without one (service_without_store). */
store_t *service_store(service_t *self);
bus_client_t *service_client(service_t *self);
/* The process's CURVE certificate (for further bus clients, e.g. the gateway's workers). */
bus_auth_t *service_auth(service_t *self);
const char *service_name(service_t *self);
const char *service_instance(service_t *self);
const char *service_endpoint(service_t *self);
int service_heartbeat_ms(service_t *self);

/* The service's loop, for timers a module arms and moves itself (one-shot, due-time driven). */
zloop_t *service_loop(service_t *self);

/* Ask the loop to stop (from a handler or timer). */
void service_stop(service_t *self);

#endif
