/*  extensions: a lease extension beyond the VM's lease policy (services/taskmgr/leases.c says
    what is within it) becomes a Request of kind "extension" in the VM's group, decided by the
    one policy engine (decide.h) with the group's and the template's approval policy; a
    conditional policy sends it to a manager (an extension beyond the policy is never "small").
    Approving it adds the timer extend:<request id> to berth:timers in the decision's own
    step, as approving a VM request queues its PROVISION task: taskmgr applies it once, for
    the decider. Rejected, the lease is unchanged and the reason is on the request. */
#ifndef BERTH_APPROVAL_EXTENSIONS_H
#define BERTH_APPROVAL_EXTENSIONS_H

#include "bus_server.h"
#include "fault.h"
#include "model.h"
#include "policy.h"
#include "store.h"

#include "berth.pb-c.h"

/* File the extension of vm by days (beyond: why the policy did not grant it) for who (the
   VM's owner, a manager of its group or an admin; NOT_FOUND for anyone else). 0 and
   *request_p (APPROVED at once under an auto policy), or -1 with a fault. */
int extensions_create(store_t *store, const Berth__CreateExtension *ask,
                      const Berth__UserAssertion *who, const char *trace_id,
                      Berth__Request **request_p, fault_t *fault);

/* The kind's approval (kinds.h): the timer that has taskmgr apply it. */
int extensions_approve(store_t *store, const policy_t *policy, model_tx_t *tx,
                       const Berth__Request *req, Berth__Request *next, void **held,
                       fault_t *fault);

/* Bus handler of CreateExtension (arg: the approval_t). */
void extensions_on_create(bus_request_t *request, void *arg);

#endif
