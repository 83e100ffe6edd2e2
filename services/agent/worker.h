/*  worker: the agent's side of the work protocol with taskmgr. Runs the commands a poll
    brought back (through vmops), remembers each command's result by id so a redelivered
    command is answered without being done twice, and keeps the results taskmgr has not
    yet received until a poll carrying them is answered. */
#ifndef BERTH_AGENT_WORKER_H
#define BERTH_AGENT_WORKER_H

#include "vmops.h"

#include <stddef.h>

typedef struct _worker_t worker_t;

/* ops is borrowed. cache_max bounds the id -> result cache, pending_max the results
   waiting for delivery (both >= 1). */
worker_t *worker_new(vmops_t *ops, size_t cache_max, size_t pending_max);
void worker_destroy(worker_t **self_p);

/* Run one command (or answer it from the cache when its id was seen before) and queue its
   result for delivery. Returns the result (borrowed, valid until the next worker call). */
const Berth__AgentResult *worker_run(worker_t *self, const Berth__AgentCommand *cmd);

/* Queue a failed result for a command that was not run (e.g. over a per-poll limit). */
void worker_refuse(worker_t *self, const char *command, const char *error);

/* The results waiting for delivery, oldest first: *results_p points at an array the
   worker owns, valid until the next worker call. Returns the count. */
size_t worker_pending(worker_t *self, Berth__AgentResult ***results_p);

/* The first count pending results reached taskmgr: forget them. */
void worker_delivered(worker_t *self, size_t count);

/* Number of results in the cache. */
size_t worker_cached(worker_t *self);

#endif
