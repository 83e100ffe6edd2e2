/*  tasks: taskmgr's task engine. A task is one operation on one VM (PROVISION, DISPOSE) run as
    a table of stages; it is held by one taskmgr instance through a lease with an epoch, so
    when that instance dies another takes the task over where it stood and carries on.
    Stages run as their answers arrive (bus replies, agent results), never on a tick. */
#ifndef BERTH_TASKMGR_TASKS_H
#define BERTH_TASKMGR_TASKS_H

#include "agents.h"
#include "model.h"
#include "leases.h"
#include "service.h"

typedef struct _tasks_t tasks_t;

/* Declares the task settings; call before service_start(). */
void tasks_declare(config_t *config);

/* Registers the DisposeVm, VmAction and TaskRecover (abort, retry, force-fail) handlers,
   the wake thread and the engine's timer; agent commands go out through agents (borrowed)
   and their results come back to the engine. NULL on bad settings (logged). */
tasks_t *tasks_new(service_t *service, agents_t *agents);
void tasks_destroy(tasks_t **self_p);

/* The lease timers (borrowed): a provisioned VM's lease timers are written with it. */
void tasks_use_leases(tasks_t *self, leases_t *leases);

/* An agent's result for a command (agents_result_fn): steps the task that sent it and
   writes it before returning. 0 when recorded or not a command in flight here; -1 when the
   write failed (the result must not be acknowledged: the agent sends it again). */
int tasks_on_result(void *arg, const char *host, const Berth__AgentResult *result);

/* Add to tx a new task of a day-2 kind (START, STOP, REBOOT, SUSPEND, RESUME, SHELVE,
   UNSHELVE), or a PROVISION that builds a lost VM again, on vm as read: the task, born QUEUED, due and woken at once, and the VM's `task`
   naming it, guarded by the VM's task as read (one started meanwhile makes the commit a
   CONFLICT). timeout_s (STOP, SHELVE: the graceful shutdown) and force are ignored by kinds
   that do not take them. Whatever else the step must do (a lifecycle move, quota) and the
   commit are the caller's. Fills *task (strings borrowed from the arguments and id) and id.
   0, or -1 for a kind that is neither. Whoever powers a VM off or on as a task
   (lease expiry, revival) queues it this way. */
int tasks_queue_action(model_tx_t *tx, const Berth__Vm *vm, const char *kind, const char *owner,
                       const char *request_id, int timeout_s, int force, Berth__Task *task,
                       char id[UTIL_ID_LEN]);

#endif
