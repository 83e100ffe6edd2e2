/*  tasks: taskmgr's task engine. A task is one operation on one VM (PROVISION, DISPOSE) run as
    a table of stages; it is held by one taskmgr instance through a lease with an epoch, so
    when that instance dies another takes the task over where it stood and carries on. */
#ifndef BERTH_TASKMGR_TASKS_H
#define BERTH_TASKMGR_TASKS_H

#include "service.h"

typedef struct _tasks_t tasks_t;

/* Declares the task settings; call before service_start(). */
void tasks_declare(config_t *config);

/* Registers the DisposeVm handler and the engine's timer. NULL on bad settings (logged). */
tasks_t *tasks_new(service_t *service);
void tasks_destroy(tasks_t **self_p);

#endif
