/*  throttle: heavy tasks (builds, disposals, unshelves: the heavy rows of tasks.c's stage
    tables) run at most heavy_per_host at a time on a host and heavy_global on the platform,
    however many taskmgr instances run; light tasks (power actions, lease changes) never
    wait for a slot, so they never queue behind heavy ones. The slots and the line of tasks
    waiting for one live in Redis (lib/lua/taskmgr_throttle.lua); a waiting task is QUEUED
    and held by nobody, and a slot that frees starts the first task in line that can use it
    at once, through the due and wake sets the engine already takes new tasks from. */
#ifndef BERTH_TASKMGR_THROTTLE_H
#define BERTH_TASKMGR_THROTTLE_H

#include "model.h"
#include "service.h"

typedef struct _throttle_t throttle_t;

/* Declares the throttle settings; call before service_start(). */
void throttle_declare(config_t *config);

/* NULL on bad settings (logged). */
throttle_t *throttle_new(service_t *service);
void throttle_destroy(throttle_t **self_p);

/* Does task hold a heavy slot on host? Taken now when host and platform have room and no
   task that waits before it could use it; a slot the task held on old_host (an earlier
   attempt's host, "" none) is given back. 1 held, 0 none free (the caller puts the task in
   line with throttle_tx_wait), -1 Redis failed. */
int throttle_acquire(throttle_t *self, const char *task, const char *host, const char *old_host);

/* Add to tx, the step that writes task QUEUED and lets it go: it waits in line for a slot
   on host from now (its slot on old_host, if any, given back). */
void throttle_tx_wait(model_tx_t *tx, const char *task, const char *host, const char *old_host);

/* Add to tx, the step that writes task's end: its slot on host ("": none) is given back,
   and it leaves the line if it waited in it (a task ended while QUEUED, by whatever path). */
void throttle_tx_release(model_tx_t *tx, const char *task, const char *host);

/* Grant the free slots to the tasks in line, oldest first: each granted task is due and
   woken at once. Run after a step that gave a slot back or put a task in line. */
void throttle_pump(throttle_t *self);

/* Repair, at most every interval_ms: give back the slots of tasks that ended or vanished
   without giving theirs back in their last step (a task ended by another path), and grant
   what a pump that did not run (an instance killed between a step and its pump) left. */
void throttle_sweep(throttle_t *self, int interval_ms);

#endif
