/*  leases: taskmgr's lease timers. A VM's lease has three timers in berth:timers (notice,
    expire, tombstone), scored by platform time (lib/clock.h) and claimed atomically by one
    taskmgr instance (lib/lua/timers_claim.lua); firing one is a lifecycle transition made
    by service:taskmgr with the claim's removal in the same step, so each fires exactly once
    however many instances run, and a claim whose instance died fires again elsewhere. */
#ifndef BERTH_TASKMGR_LEASES_H
#define BERTH_TASKMGR_LEASES_H

#include "model.h"
#include "service.h"

typedef struct _leases_t leases_t;

/* Declares the lease settings; call before service_start(). */
void leases_declare(config_t *config);

/* Arms the timer loop on the service's loop. NULL on bad settings (logged). */
leases_t *leases_new(service_t *service);
void leases_destroy(leases_t **self_p);

/* Add the notice and expiry timers of vm's lease (vm->lease->expires_ms) to tx, replacing
   any the VM had: written with the lease in the same step. */
void leases_tx_schedule(leases_t *self, model_tx_t *tx, const Berth__Vm *vm);

#endif
