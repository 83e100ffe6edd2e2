/*  extensions: requests of kind "extension" (extensions.h). */
#include "extensions.h"
#include "approval.h"
#include "assertion.h"
#include "clock.h"
#include "decide.h"
#include "groups.h"
#include "keys.h"
#include "limit.h"
#include "log.h"
#include "requests.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_DAYS_MAX 36500 /* taskmgr holds the real limit (lease_max_extend_days) */

/* Add to tx the timer that has taskmgr apply request id, due now. */
static void s_tx_timer(model_tx_t *tx, const char *id)
{
    char member[64];
    snprintf(member, sizeof member, "extend:%s", id);
    model_tx_zadd(tx, KEYS_TIMERS, clock_now_ms(), member);
}

int extensions_create(store_t *store, const Berth__CreateExtension *ask,
                      const Berth__UserAssertion *who, const char *trace_id,
                      Berth__Request **request_p, fault_t *fault)
{
    if (!ask || !util_is_uuid(ask->vm))
        return error_field(fault, "vm", "vm must be a VM id");
    if (ask->days < 1 || ask->days > S_DAYS_MAX)
        return error_field(fault, "days", "days must be between 1 and %d", S_DAYS_MAX);
    if (ask->beyond && strlen(ask->beyond) > LIMIT_REASON_MAX)
        return error_field(fault, "beyond", "beyond must be at most %d bytes", LIMIT_REASON_MAX);
    char key[KEYS_MAX];
    Berth__Vm *vm = NULL;
    int rc = model_load(store, &berth__vm__descriptor, keys_build(key, KEYS_VM, ask->vm, NULL),
                        (ProtobufCMessage **)&vm);
    if (rc < 0)
        return fault_store(fault, store);
    const char *group = vm && vm->group ? vm->group : "";
    /* vm.extend, checked again on the signed claims; who may not sees nothing. */
    if (!vm || !(streq(vm->owner, who->user) || assertion_has_role(who, "admin") ||
                 (*group && assertion_has_group_role(who, group, "manager")))) {
        if (vm)
            berth__vm__free_unpacked(vm, NULL);
        error_set(fault, "NOT_FOUND", "no VM %s", ask->vm);
        return error_detail(fault, "field", "vm");
    }
    if (!streq(vm->state, "ACTIVE") && !streq(vm->state, "EXPIRING") &&
        !streq(vm->state, "EXPIRED")) {
        error_set(fault, "CONFLICT",
                  "VM is %s; only an ACTIVE, EXPIRING or EXPIRED VM's lease can be extended",
                  vm->state);
        berth__vm__free_unpacked(vm, NULL);
        return -1;
    }
    Berth__Group *g = NULL;
    Berth__Template *t = NULL;
    if (*group && groups_get(store, group, &g, fault) != 0 && !streq(fault->code, "NOT_FOUND")) {
        berth__vm__free_unpacked(vm, NULL);
        return -1;
    }
    if (vm->template_ && util_is_uuid(vm->template_) &&
        model_load(store, &berth__template__descriptor,
                   keys_build(key, KEYS_TEMPLATE, vm->template_, NULL),
                   (ProtobufCMessage **)&t) < 0) {
        if (g)
            protobuf_c_message_free_unpacked(&g->base, NULL);
        berth__vm__free_unpacked(vm, NULL);
        return fault_store(fault, store);
    }
    decide_policy_t rule = decide_effective(g, t);
    if (rule == DECIDE_CONDITIONAL) /* beyond the lease policy is never small */
        rule = DECIDE_MANAGER;
    const char *awaiting = decide_first_level(rule, g, t, 1);
    int automatic = awaiting == NULL;

    int64_t now = clock_now_ms();
    char id[UTIL_ID_LEN];
    util_uuid(id);
    Berth__LeaseExtension ext = BERTH__LEASE_EXTENSION__INIT;
    ext.vm = vm->id;
    ext.days = ask->days;
    ext.beyond = (char *)(ask->beyond ? ask->beyond : "");
    ext.expires_ms = vm->lease ? vm->lease->expires_ms : 0;
    Berth__ApprovalStep step = BERTH__APPROVAL_STEP__INIT, *steps[1] = { &step };
    step.level = DECIDE_LEVEL_AUTO;
    step.decided_by = "policy";
    step.decision = "approved";
    step.reason = "the group's approval policy is auto";
    step.at_ms = now;
    Berth__Request req = BERTH__REQUEST__INIT;
    req.id = id;
    req.state = automatic ? "APPROVED" : "PENDING_APPROVAL";
    req.kind = "extension";
    req.name = vm->name;
    req.group = (char *)group;
    req.owner = who->user;
    req.template_ = vm->template_;
    req.count = 1;
    req.created_ms = now;
    req.updated_ms = now;
    req.version = 1;
    req.decided_by = automatic ? "policy" : "";
    req.policy = (char *)decide_policy_name(rule);
    req.awaiting = (char *)(awaiting ? awaiting : "");
    req.n_steps = automatic ? 1 : 0;
    req.steps = automatic ? steps : NULL;
    req.extension = &ext;
    char *vm_ref = vm->id;
    req.n_vms = 1;
    req.vms = &vm_ref;

    model_tx_t *tx = model_tx_new();
    rc = tx ? 0 : error_set(fault, "INTERNAL", "out of memory");
    if (tx) {
        model_tx_actor(tx, who->user, trace_id);
        requests_tx_add(tx, &req);
        if (automatic)
            s_tx_timer(tx, id);
        /* the VM must still be there, in a state read above */
        model_tx_check(tx, keys_build(key, KEYS_VM, vm->id, NULL), "state", vm->state);
        const char *why = NULL;
        rc = model_tx_commit(tx, store, &why);
        model_tx_destroy(&tx);
        if (rc == MODEL_REFUSED)
            rc = error_set(fault, "INTERNAL", "%s", why);
        else if (rc == MODEL_CONFLICT)
            rc = error_set(fault, "CONFLICT", "the VM changed meanwhile; try again");
        else if (rc != 0)
            rc = fault_store(fault, store);
    }
    if (rc == 0) {
        *request_p = requests_clone(&req);
        if (!*request_p)
            rc = error_set(fault, "INTERNAL", "out of memory");
    }
    if (g)
        protobuf_c_message_free_unpacked(&g->base, NULL);
    if (t)
        protobuf_c_message_free_unpacked(&t->base, NULL);
    berth__vm__free_unpacked(vm, NULL);
    return rc;
}

int extensions_approve(store_t *store, const policy_t *policy, model_tx_t *tx,
                       const Berth__Request *req, Berth__Request *next, void **held,
                       fault_t *fault)
{
    (void)store;
    (void)policy;
    (void)next;
    (void)held;
    if (!req->extension || !util_is_uuid(req->extension->vm))
        return error_set(fault, "INTERNAL", "extension request '%s' names no VM", req->id);
    s_tx_timer(tx, req->id);
    return 0;
}

void extensions_on_create(bus_request_t *request, void *arg)
{
    approval_t *self = arg;
    Berth__CreateExtension *msg = bus_request_body(request, &berth__create_extension__descriptor);
    if (!msg) {
        bus_reply_error(request, "BAD_REQUEST", "CreateExtension body does not parse");
        return;
    }
    Berth__UserAssertion *who = approval_caller(self, request, msg->assertion);
    if (!who)
        return;
    const char *rid = bus_request_envelope(request)->request_id;
    fault_t fault = { 0 };
    Berth__Request *req = NULL;
    int rc =
        extensions_create(approval_store(self), msg, who, rid && *rid ? rid : NULL, &req, &fault);
    berth__user_assertion__free_unpacked(who, NULL);
    if (rc != 0) {
        approval_fail(request, "lease extension request refused", &fault);
        return;
    }
    log_info(rid, "lease extension asked", "{s:s, s:s, s:s, s:s}", "request", req->id, "state",
             req->state, "vm", req->extension->vm, "owner", req->owner);
    bus_reply(request, &req->base);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}
