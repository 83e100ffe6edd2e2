/*  allocations: a group's manager (or an admin) asks for more quota: new values, or an
    increase on the quota the group has. The ask is a Request of kind "allocation". It is
    approved at once, the quota raised in the same transaction, when

      - the group has a quota and every value of it that grows (vms, vcpus, ram_mb,
        disk_gb) stays within its auto_growth_max (a value of 0 there never grows by itself;
        a group without auto_growth_max never grows without an admin), and
      - the platform has the free capacity: for each of vcpus, ram_mb and disk_gb, the
        capacity of every host that is not DISABLED covers what every group is promised
        once this one has its new quota. A group is promised its quota; a group without a
        quota (no limit) what its VMs hold now. vCPUs count without overcommit.

    Otherwise it waits for an admin (decide.h), whose approval applies it to the quota as it
    is then (an increase adds to it; new values replace it), checked against the group's
    version in the decision's transaction.

    An allocation may ask for reservations instead: the group's reservations become the ones
    asked for. That is approved at once when what they reserve in all stays within the
    auto_growth_max's vcpus, ram_mb and disk_gb and the hosts have it free and unreserved
    now; otherwise an admin decides, and the approval writes them if they are free then. Both
    go through groups_set_reservations, the one write path of reservations. */
#ifndef BERTH_APPROVAL_ALLOCATIONS_H
#define BERTH_APPROVAL_ALLOCATIONS_H

#include "bus_server.h"
#include "fault.h"
#include "model.h"
#include "policy.h"
#include "store.h"

#include "berth.pb-c.h"

/* Ask for ask (quota or delta, validated here) in group (id or name) as who (a manager of
   the group or an admin: FORBIDDEN for its other members and auditors, NOT_FOUND for anyone
   else). 0 and *request_p (APPROVED when automatic; free with
   protobuf_c_message_free_unpacked), or -1 with a fault. */
int allocations_create(store_t *store, const policy_t *policy, const char *group,
                       const Berth__Allocation *ask, const Berth__UserAssertion *who,
                       const char *trace_id, Berth__Request **request_p, fault_t *fault);

/* The kind's approval (kinds.h): the group's new quota, written if the group is still at
   the version read; next->allocation->applied says what it got. */
int allocations_approve(store_t *store, const policy_t *policy, model_tx_t *tx,
                        const Berth__Request *req, Berth__Request *next, void **held,
                        fault_t *fault);
void allocations_release(void *held);

/* Bus handler of CreateAllocation (arg: the approval_t). */
void allocations_on_create(bus_request_t *request, void *arg);

#endif
