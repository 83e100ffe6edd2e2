/*  worker: runs the agent's commands off its event loop. A small pool of threads, each with
    its own libvirt connection (through vmops), runs the commands taskmgr hands out: those
    for one VM in the order they came, those for different VMs side by side. Results come
    back to the loop over one socket; the worker remembers each result by command id so a
    redelivered command is answered without being done twice, and keeps the results taskmgr
    has not yet received until a poll carrying them is answered. A separate thread keeps a
    snapshot of the host's inventory, so the heartbeat never calls libvirt on the loop. */
#ifndef BERTH_AGENT_WORKER_H
#define BERTH_AGENT_WORKER_H

#include "vmops.h"

#include <czmq.h>
#include <stddef.h>

typedef struct _worker_t worker_t;

/* A command finished (or was answered from the cache, or refused): runs on the loop, from
   worker_recv() or from inside worker_submit()/worker_refuse(). result is borrowed for the
   duration of the call; it is also queued for delivery (worker_pending). */
typedef void(worker_done_fn)(const Berth__AgentResult *result, void *arg);

/* The inventory snapshot changed (the first one, a domain came or went or changed power
   state, libvirt came or went): runs on the loop from worker_recv(). */
typedef void(worker_inventory_fn)(const Berth__Host *host, void *arg);

/* Start threads (1..64) threads, each opening its own libvirt connection with config
   (copied) when it gets its first command. queue_max bounds the commands waiting for a
   thread, cache_max the id -> result cache (also the default bound of the results waiting
   for delivery). done may be NULL. NULL when the pool directory cannot be created or a
   thread cannot start. */
worker_t *worker_new(const vmops_config_t *config, size_t threads, size_t queue_max,
                     size_t cache_max, worker_done_fn *done, void *arg);

/* Stops the threads, each after the command it is running. */
void worker_destroy(worker_t **self_p);

/* Hand one command to the pool. 0 when it was queued (or is already queued or running
   under the same id) or answered from the cache; -1 when the queue is full: the command is
   refused at once and done runs with a FAILED result saying so. Never waits for libvirt. */
int worker_submit(worker_t *self, const Berth__AgentCommand *cmd);

/* Results and inventories arrive here; register it with the loop (service_reader) and call
   worker_recv() when it is readable. */
zsock_t *worker_socket(worker_t *self);

/* Take in what the threads finished: calls done for each result, the inventory callback
   for a changed snapshot, and starts the commands that were waiting. Never blocks. */
void worker_recv(worker_t *self);

/* Keep an inventory snapshot (vmops_inventory on a thread of its own), refreshed every
   interval_ms and right after each command. fn (may be NULL) runs when it changes. -1
   when the thread cannot start. Call once. */
int worker_watch(worker_t *self, int interval_ms, worker_inventory_fn *fn, void *arg);

/* Snapshots asked for by commands come at most one per gap_ms (default 0: at once), so a
   burst of commands costs one listing of the host per gap. Call before worker_watch(). */
void worker_set_refresh_gap(worker_t *self, int gap_ms);

/* Ask the inventory thread for a snapshot soon (within the refresh gap): something changed on
   the host that no command of ours did (a libvirt domain event). No-op before worker_watch. */
void worker_refresh(worker_t *self);

/* The latest inventory snapshot (borrowed, valid until the next worker call), or NULL
   before the first one arrived. When libvirt has not answered for three intervals, a DOWN
   host with no domains instead. */
const Berth__Host *worker_inventory(worker_t *self);

/* Answer a command that was not run (e.g. over a per-poll limit) with a failed result:
   queued for delivery and passed to done. */
void worker_refuse(worker_t *self, const char *command, const char *error);

/* Bound the results waiting for delivery (>= 1; default cache_max). */
void worker_set_pending_max(worker_t *self, size_t pending_max);

/* The results waiting for delivery, oldest first: *results_p points at an array the
   worker owns, valid until the next worker call. Returns the count. */
size_t worker_pending(worker_t *self, Berth__AgentResult ***results_p);

/* The first count pending results reached taskmgr: forget them. */
void worker_delivered(worker_t *self, size_t count);

/* Number of results in the cache. */
size_t worker_cached(worker_t *self);

/* Commands accepted and not finished yet (waiting or running). */
size_t worker_busy(worker_t *self);

#endif
