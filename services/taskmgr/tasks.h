/*  tasks: taskmgr's task engine. A task is one operation on one VM (PROVISION, DISPOSE) run as
    a table of stages; it is held by one taskmgr instance through a lease with an epoch, so
    when that instance dies another takes the task over where it stood and carries on.
    Stages run as their answers arrive (bus replies, agent results), never on a tick. */
#ifndef BERTH_TASKMGR_TASKS_H
#define BERTH_TASKMGR_TASKS_H

#include "agents.h"
#include "service.h"

typedef struct _tasks_t tasks_t;

/* Declares the task settings; call before service_start(). */
void tasks_declare(config_t *config);

/* Registers the DisposeVm handler, the wake thread and the engine's timer; agent commands go
   out through agents (borrowed) and their results come back to the engine. NULL on bad
   settings (logged). */
tasks_t *tasks_new(service_t *service, agents_t *agents);
void tasks_destroy(tasks_t **self_p);

/* An agent's result for a command (agents_result_fn): steps the task that sent it and
   writes it before returning. 0 when recorded or not a command in flight here; -1 when the
   write failed (the result must not be acknowledged: the agent sends it again). */
int tasks_on_result(void *arg, const char *host, const Berth__AgentResult *result);

#endif
