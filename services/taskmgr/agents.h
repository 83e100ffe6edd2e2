/*  agents: taskmgr's side of the host agents. Agents connect out to taskmgr; their heartbeats
    keep the host record and the VMs' power states current, and their work polls carry
    command results in and pending commands out. Commands live in Redis (berth:cmd:<id>,
    queued per host), so any taskmgr instance can hand them out or take their results. */
#ifndef BERTH_TASKMGR_AGENTS_H
#define BERTH_TASKMGR_AGENTS_H

#include "model.h"
#include "service.h"

typedef struct _agents_t agents_t;

/* Registers the AgentHeartbeat and AgentWork handlers on service. */
agents_t *agents_new(service_t *service);
void agents_destroy(agents_t **self_p);

/* Store cmd for host (its id is assigned here and written into id_out) without queueing
   it; 0 or -1 (Redis). The caller queues it with agents_queue() in the same transaction that
   records the id on its task, so a command is never queued for a task that does not know it. */
int agents_prepare(store_t *store, const char *host, Berth__AgentCommand *cmd,
                   char id_out[UTIL_ID_LEN]);

/* Add the queueing of a prepared command to tx. A queued command is handed out at each poll
   of its host until its result arrives, again when delivered more than redeliver_ms ago. */
void agents_queue(model_tx_t *tx, const char *host, const char *id);

/* State of a queued command: "PENDING", "DONE", "FAILED" or "" (unknown); error and
   power_state of its result copied into the buffers. -1 when Redis failed. */
int agents_result(store_t *store, const char *id, char *state, size_t state_size, char *error,
                  size_t error_size, char *power, size_t power_size);

/* Power state the host's last heartbeat reported for domain vm ("" if not reported). */
int agents_power(store_t *store, const char *host, const char *vm, char *power, size_t size);

#endif
