/*  onboarding: requests for a new group (onboarding.h). The name is checked free when asked
    and again, inside the approving transaction, when the group is written: two onboardings
    for one name can both wait, only one of them can be approved. */
#include "onboarding.h"
#include "approval.h"
#include "decide.h"
#include "groups.h"
#include "keys.h"
#include "limit.h"
#include "log.h"
#include "requests.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

/* The group ask describes, for the group checks (pointers into ask). */
static void s_group_of(const Berth__Onboarding *ask, Berth__Group *g)
{
    berth__group__init(g);
    g->name = ask->name;
    g->cost_centre = ask->cost_centre;
    g->description = ask->description;
    g->quota = ask->quota;
    g->charging_model =
        ask->charging_model && *ask->charging_model ? ask->charging_model : "allocation";
}

/* justification: 1 to LIMIT_REASON_MAX bytes. */
static int s_check_justification(const char *text, int required, fault_t *fault)
{
    size_t len = text ? strlen(text) : 0;
    if ((required && len == 0) || len > LIMIT_REASON_MAX)
        return error_field(fault, "justification", "justification must be %d to %d bytes", required,
                           LIMIT_REASON_MAX);
    return 0;
}

int onboarding_create(store_t *store, const Berth__Onboarding *ask, const char *owner,
                      const char *trace_id, Berth__Request **request_p, fault_t *fault)
{
    if (!ask)
        return error_field(fault, "name", "name is required");
    Berth__Group g;
    s_group_of(ask, &g);
    if (groups_check_new(&g, fault) != 0 ||
        s_check_justification(ask->justification, 1, fault) != 0)
        return -1;
    if (!ask->quota)
        return error_field(fault, "quota", "quota (vms, vcpus, ram_mb, disk_gb) is required");
    int taken = groups_name_taken(store, ask->name, fault);
    if (taken != 0)
        return -1;
    Berth__Onboarding asked = *ask;
    asked.charging_model = g.charging_model;
    asked.cost_centre = ask->cost_centre ? ask->cost_centre : "";
    asked.description = ask->description ? ask->description : "";

    char id[UTIL_ID_LEN];
    util_uuid(id);
    int64_t now = util_now_ms();
    Berth__Request req = BERTH__REQUEST__INIT;
    req.id = id;
    req.state = "PENDING_APPROVAL";
    req.kind = "onboarding";
    req.name = ask->name;
    req.owner = (char *)owner;
    req.created_ms = now;
    req.updated_ms = now;
    req.version = 1;
    /* A new group is the platform's to grant: the admin level, whatever else applies. */
    req.policy = (char *)decide_policy_name(DECIDE_ADMIN);
    req.awaiting = (char *)decide_first_level(DECIDE_ADMIN, NULL, NULL, 0);
    req.onboarding = &asked;
    model_tx_t *tx = model_tx_new();
    if (!tx)
        return error_set(fault, "INTERNAL", "out of memory");
    model_tx_actor(tx, owner, trace_id);
    requests_tx_add(tx, &req);
    const char *why = NULL;
    int rc = model_tx_commit(tx, store, &why);
    model_tx_destroy(&tx);
    if (rc == MODEL_REFUSED)
        return error_set(fault, "INTERNAL", "%s", why);
    if (rc != 0)
        return rc == MODEL_CONFLICT ? error_set(fault, "CONFLICT", "request id in use; try again")
                                    : fault_store(fault, store);
    *request_p = requests_clone(&req);
    return *request_p ? 0 : error_set(fault, "INTERNAL", "out of memory");
}

int onboarding_approve(store_t *store, const policy_t *policy, model_tx_t *tx,
                       const Berth__Request *req, Berth__Request *next, void **held,
                       fault_t *fault)
{
    (void)policy;
    const Berth__Onboarding *ask = req->onboarding;
    if (!ask || !ask->name)
        return error_set(fault, "INTERNAL", "onboarding request '%s' says no group", req->id);
    if (groups_name_taken(store, ask->name, fault) != 0)
        return -1;
    char *id = malloc(UTIL_ID_LEN);
    if (!id)
        return error_set(fault, "INTERNAL", "out of memory");
    Berth__Group want, g;
    s_group_of(ask, &want);
    groups_init_new(&g, &want, id);
    const char *actor = next->decided_by;
    groups_tx_create(tx, &g, actor);
    groups_tx_add_manager(tx, id, req->owner, actor);
    next->group = id;
    *held = id;
    return 0;
}

int onboarding_conflict(store_t *store, const Berth__Request *req, fault_t *fault)
{
    if (!req->onboarding || !req->onboarding->name)
        return 0;
    int taken = groups_name_taken(store, req->onboarding->name, fault);
    if (taken > 0)
        error_set(fault, "CONFLICT",
                  "group '%s' exists already: reject this request, or ask for another name",
                  req->onboarding->name);
    return taken ? -1 : 0;
}

void onboarding_on_create(bus_request_t *request, void *arg)
{
    approval_t *self = arg;
    Berth__CreateOnboarding *msg = bus_request_body(request, &berth__create_onboarding__descriptor);
    if (!msg) {
        bus_reply_error(request, "BAD_REQUEST", "CreateOnboarding body does not parse");
        return;
    }
    Berth__UserAssertion *who = approval_caller(self, request, msg->assertion);
    if (!who)
        return;
    const char *rid = bus_request_envelope(request)->request_id;
    fault_t fault = { 0 };
    Berth__Request *req = NULL;
    int rc = onboarding_create(approval_store(self), msg->onboarding, who->user,
                               rid && *rid ? rid : NULL, &req, &fault);
    berth__user_assertion__free_unpacked(who, NULL);
    if (rc != 0) {
        approval_fail(request, "onboarding refused", &fault);
        return;
    }
    log_info(rid, "onboarding asked", "{s:s, s:s, s:s}", "request", req->id, "name",
             req->onboarding->name, "owner", req->owner);
    bus_reply(request, &req->base);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}
