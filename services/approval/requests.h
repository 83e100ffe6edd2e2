/*  requests: asking for VMs from a template and deciding on it. A Request, its VMs and (once
    approved) one provision Task per VM are written in one model_tx with their events; the
    taskmgr finds the tasks in berth:tasks:due by itself. */
#ifndef BERTH_APPROVAL_REQUESTS_H
#define BERTH_APPROVAL_REQUESTS_H

#include "fault.h"
#include "model.h"
#include "policy.h"
#include "store.h"
#include "util.h"

#include "berth.pb-c.h"

/* Create the request msg asks for (validated here), or answer the request an earlier call
   with the same owner and idempotency key created. admin: the owner has the platform's admin
   role (may request in any group). trace_id is the HTTP request id the tasks carry (may be
   NULL). 0 and *request_p (free with protobuf_c_message_free_unpacked), or -1 with a fault:
   QUOTA_EXCEEDED (nothing written) when the request would pass its group's quota or the
   owner's user_quota in it; it is charged to both in the request's own step. */
int requests_create(store_t *store, const policy_t *policy, const Berth__CreateRequest *msg,
                    int admin, const char *trace_id, Berth__Request **request_p, fault_t *fault);

/* The same for a custom build (msg describes the machine: os, applications, vcpus, ram_mb,
   disk_gb; no template), on the scheduler's verdict build (ok, with its chosen image): the
   VMs get its size and image and record which applications come with the image and which
   their first boot installs; the group's lease and approval policy apply. build NULL: as
   requests_create. */
int requests_create_build(store_t *store, const policy_t *policy, const Berth__CreateRequest *msg,
                          int admin, const char *trace_id, const Berth__BuildVerdict *build,
                          Berth__Request **request_p, fault_t *fault);

/* 0 when group may take new VMs as far as its budget goes; -1 with BUDGET_EXCEEDED (the
   meter blocked it for this month) or UNAVAILABLE. */
int requests_budget_blocked(store_t *store, const Berth__Group *group, fault_t *fault);

/* The group (id into group_id) a request of owner naming ref (id, name, or empty) is made in:
   the rule requests_create applies. 0, or -1 with a fault naming the field group. */
int requests_group(store_t *store, const char *ref, const char *owner, int admin,
                   char group_id[UTIL_ID_LEN], fault_t *fault);

/* The request with this id, or NOT_FOUND. */
int requests_get(store_t *store, const char *id, Berth__Request **request_p, fault_t *fault);

/* Approve or reject, as who (the verified assertion; msg->actor is replaced by its user), the
   level a PENDING_APPROVAL request waits for (decide.h says who may); an approval with a
   level left records its step and waits for that level. Deciding the same way again answers
   the request as it is; deciding the other way once decided is a CONFLICT. */
int requests_decide(store_t *store, const policy_t *policy, const Berth__DecideRequest *msg,
                    const Berth__UserAssertion *who, const char *trace_id,
                    Berth__Request **request_p, fault_t *fault);

/* Add to tx the birth of req (a new request, in req->state): its transition from "" with
   the request.state event, its hash and its place in the request index. For the modules
   that make requests of other kinds (onboarding.c, allocations.c). */
void requests_tx_add(model_tx_t *tx, const Berth__Request *req);

/* A heap copy of req (free with protobuf_c_message_free_unpacked), or NULL. */
Berth__Request *requests_clone(const Berth__Request *req);

#endif
