/*  decide: the approval policy engine (decide.h). Pure functions of the request, the group,
    the template and the signed assertion: requests.c writes what they say in its
    transactions, so the rules live here once for every kind of request. */
#include "decide.h"
#include "assertion.h"
#include "util.h"

#include <string.h>

static const char *const s_names[] = { "auto", "conditional", "manager", "admin",
                                       "manager_then_admin" };
#define S_N_POLICIES ((int)(sizeof s_names / sizeof s_names[0]))

int decide_policy_parse(const char *name)
{
    for (int i = 0; name && i < S_N_POLICIES; i++)
        if (streq(name, s_names[i]))
            return i;
    return -1;
}

const char *decide_policy_name(decide_policy_t p)
{
    return (int)p >= 0 && (int)p < S_N_POLICIES ? s_names[p] : "admin";
}

int decide_check_policy(const char *field, const char *name, fault_t *fault)
{
    if (!name || !*name || decide_policy_parse(name) >= 0)
        return 0;
    return error_field(fault, field,
                       "%s must be one of auto, conditional, manager, admin, manager_then_admin",
                       field);
}

decide_policy_t decide_effective(const Berth__Group *g, const Berth__Template *t)
{
    int group = g ? decide_policy_parse(g->approval_policy) : -1;
    int tmpl = t ? decide_policy_parse(t->approval_policy) : -1;
    if (group < 0)
        group = DECIDE_AUTO;
    if (tmpl < 0) /* written before policies: requires_approval is what it meant */
        tmpl = t && t->requires_approval ? DECIDE_ADMIN : DECIDE_AUTO;
    return (decide_policy_t)(group > tmpl ? group : tmpl);
}

/* Do count VMs of t stay under g's auto-approval size and within its quota? */
static int s_small(const Berth__Group *g, const Berth__Template *t, int count)
{
    if (!g || !t || count < 1)
        return 0;
    int64_t vcpus = (int64_t)t->vcpus * count, ram = t->ram_mb * count, disk = t->disk_gb * count;
    if (vcpus > g->auto_max_vcpus || ram > g->auto_max_ram_mb)
        return 0;
    const Berth__Quota *q = g->quota;
    return !q || (count <= q->vms && vcpus <= q->vcpus && ram <= q->ram_mb && disk <= q->disk_gb);
}

const char *decide_first_level(decide_policy_t p, const Berth__Group *g, const Berth__Template *t,
                               int count)
{
    switch (p) {
    case DECIDE_AUTO:
        return NULL;
    case DECIDE_CONDITIONAL:
        return s_small(g, t, count) ? NULL : DECIDE_LEVEL_MANAGER;
    case DECIDE_MANAGER:
    case DECIDE_MANAGER_THEN_ADMIN:
        return DECIDE_LEVEL_MANAGER;
    case DECIDE_ADMIN:
    default:
        return DECIDE_LEVEL_ADMIN;
    }
}

const char *decide_next_level(const char *policy, const char *level)
{
    if (streq(policy, "manager_then_admin") && streq(level, DECIDE_LEVEL_MANAGER))
        return DECIDE_LEVEL_ADMIN;
    return NULL;
}

int decide_sees(const Berth__Request *req, const Berth__UserAssertion *who)
{
    const char *group = req->group ? req->group : "";
    return assertion_has_role(who, "admin") || assertion_has_role(who, "operator") ||
           streq(req->owner, who->user) ||
           (*group && (assertion_has_group_role(who, group, "manager") ||
                       assertion_has_group_role(who, group, "auditor")));
}

int decide_may(const Berth__Request *req, const Berth__UserAssertion *who, fault_t *fault)
{
    const char *group = req->group ? req->group : "";
    int admin = assertion_has_role(who, "admin");
    int manager = *group && assertion_has_group_role(who, group, "manager");
    if (!decide_sees(req, who))
        return error_set(fault, "NOT_FOUND", "unknown request '%s'", req->id);
    /* Nobody decides their own request, whatever their role: an approval is a second
       person's word. */
    if (streq(req->owner, who->user))
        return error_set(fault, "FORBIDDEN",
                         "a request is decided by someone other than its "
                         "requester");
    for (size_t i = 0; i < req->n_steps; i++)
        if (streq(req->steps[i]->decided_by, who->user))
            return error_set(fault, "FORBIDDEN",
                             "you decided the %s level of this request already: the next level "
                             "is someone else's",
                             req->steps[i]->level);
    /* A request from before levels existed waits for an admin, as it always did. */
    const char *level = req->awaiting && *req->awaiting ? req->awaiting : DECIDE_LEVEL_ADMIN;
    if (streq(level, DECIDE_LEVEL_MANAGER) ? (manager || admin) : admin)
        return 0;
    error_set(fault, "FORBIDDEN",
              streq(level, DECIDE_LEVEL_MANAGER)
                  ? "this request waits for a manager of its group (or an admin)"
                  : "this request waits for an admin");
    return error_detail(fault, "awaiting", "%s", level);
}
