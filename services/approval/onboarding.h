/*  onboarding: a user asks for a new group (a business unit or project) with a cost centre,
    a quota and a charging model. The ask is a Request of kind "onboarding" that an admin
    decides (decide.h); approving it creates the group and makes the asker its manager in
    the same transaction as the decision, so a group is never half made. */
#ifndef BERTH_APPROVAL_ONBOARDING_H
#define BERTH_APPROVAL_ONBOARDING_H

#include "bus_server.h"
#include "fault.h"
#include "model.h"
#include "policy.h"
#include "store.h"

#include "berth.pb-c.h"

/* Record ask (validated here) as a request of owner's, waiting for an admin. CONFLICT
   (details.field name) when a group already has the name. 0 and *request_p (free with
   protobuf_c_message_free_unpacked), or -1 with a fault. */
int onboarding_create(store_t *store, const Berth__Onboarding *ask, const char *owner,
                      const char *trace_id, Berth__Request **request_p, fault_t *fault);

/* The kind's approval (kinds.h): the group as asked, its asker its manager; next->group is
   the new group's id (in *held, freed with free()). CONFLICT when the name was taken since. */
int onboarding_approve(store_t *store, const policy_t *policy, model_tx_t *tx,
                       const Berth__Request *req, Berth__Request *next, void **held,
                       fault_t *fault);

/* After a conflicted approval: CONFLICT (-1) when the name is now another group's. */
int onboarding_conflict(store_t *store, const Berth__Request *req, fault_t *fault);

/* Bus handler of CreateOnboarding (arg: the approval_t): any signed-in user. */
void onboarding_on_create(bus_request_t *request, void *arg);

#endif
