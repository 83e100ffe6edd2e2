/*  agents: taskmgr's side of the host agents. Agents connect out to taskmgr; their heartbeats
    keep the host record and the VMs' power states current; each keeps a work poll parked
    here, answered the moment the task engine pushes a command for its host, and sends each
    result back at once in a new poll. Commands live in memory on the instance holding the
    task (their ids in the task), never in Redis. */
#ifndef BERTH_TASKMGR_AGENTS_H
#define BERTH_TASKMGR_AGENTS_H

#include "model.h"
#include "service.h"

typedef struct _agents_t agents_t;

/* A result from host for one of its commands. Must record it (durably) before returning 0;
   -1 leaves the result unacknowledged, so the agent sends it again. */
typedef int(agents_result_fn)(void *arg, const char *host, const Berth__AgentResult *result);

/* Declares the agent protocol settings; call before service_start(). */
void agents_declare(config_t *config);

/* Registers the AgentHeartbeat, AgentWork and SetHostMaintenance handlers on service, and
   the check that marks hosts past their heartbeat's ttl DOWN. NULL on bad settings. */
agents_t *agents_new(service_t *service);
void agents_destroy(agents_t **self_p);

/* Where results go (the task engine). */
void agents_on_result(agents_t *self, agents_result_fn *fn, void *arg);

/* Hand cmd (copied; its id set by the caller) to host: at once over the poll the host has
   parked here, else in the answer to its next poll. Pushing an id again replaces the
   earlier copy and hands it out again. 0, or -1 when out of memory. */
int agents_push(agents_t *self, const char *host, const Berth__AgentCommand *cmd);

/* Forget command id (its result came, or its task no longer waits for it). */
void agents_cancel(agents_t *self, const char *id);

/* A host went past its last heartbeat's ttl (this instance saw it first in its check; the
   host is or is about to be stored DOWN). */
typedef void(agents_down_fn)(void *arg, const char *host);

/* Who is told when a host goes past its ttl (the task engine: its stages waiting on that
   host fail over at once). */
void agents_on_down(agents_t *self, agents_down_fn *fn, void *arg);

/* True while host is past its last heartbeat's ttl, as this instance last checked (memory
   only: cheap enough for every stage of every task). */
int agents_host_down(agents_t *self, const char *host);

/* Power state the host's last heartbeat reported for domain vm ("" if not reported). */
int agents_power(store_t *store, const char *host, const char *vm, char *power, size_t size);

#endif
