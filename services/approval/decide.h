/*  decide: the one approval policy engine. Every kind of request (today "vm") is decided
    here: which policy applies, which level a new request waits for (none: approved at once),
    who may decide the level it waits for, and the level after an approval. */
#ifndef BERTH_APPROVAL_DECIDE_H
#define BERTH_APPROVAL_DECIDE_H

#include "fault.h"

#include "berth.pb-c.h"

/* The policies, from the least to the most strict: when a group and a template each name
   one, the later in this order applies. */
typedef enum {
    DECIDE_AUTO,               /* approved at once */
    DECIDE_CONDITIONAL,        /* at once while small and within quota, else a manager */
    DECIDE_MANAGER,            /* a manager of the request's group */
    DECIDE_ADMIN,              /* a platform admin */
    DECIDE_MANAGER_THEN_ADMIN, /* a manager of the group, then an admin */
} decide_policy_t;

#define DECIDE_LEVEL_AUTO    "auto"
#define DECIDE_LEVEL_MANAGER "manager"
#define DECIDE_LEVEL_ADMIN   "admin"

/* The policy called name, or -1 when no policy has that name. */
int decide_policy_parse(const char *name);
/* The name of policy p ("auto" ...). */
const char *decide_policy_name(decide_policy_t p);
/* Is name empty or a policy's name? 0, or -1 with BAD_REQUEST naming field. */
int decide_check_policy(const char *field, const char *name, fault_t *fault);

/* The policy for a request in group g from template t: the stricter of the group's (empty:
   auto) and the template's (empty: requires_approval says, true admin, false auto). */
decide_policy_t decide_effective(const Berth__Group *g, const Berth__Template *t);

/* The level a new request for count VMs of t in g waits for under p: NULL when it is
   approved at once. conditional approves at once while count VMs ask for at most the
   group's auto_max_vcpus and auto_max_ram_mb in all and fit its quota (when it has one). */
const char *decide_first_level(decide_policy_t p, const Berth__Group *g, const Berth__Template *t,
                               int count);

/* The level after an approval at level under the policy named policy: NULL when approved. */
const char *decide_next_level(const char *policy, const char *level);

/* May who read req at all: its owner, a manager or auditor of its group, an admin or an
   operator? */
int decide_sees(const Berth__Request *req, const Berth__UserAssertion *who);

/* May who decide req now? 0, or -1 with NOT_FOUND (who may not even see req: neither its
   owner, nor a manager or auditor of its group, nor admin or operator) or FORBIDDEN (the
   requester, whatever the role; not allowed at the level req waits for; already decided a
   level of it). The manager level: a manager of req's group or an admin (a group without a
   manager is not stuck); the admin level: an admin. No one decides two levels of a request. */
int decide_may(const Berth__Request *req, const Berth__UserAssertion *who, fault_t *fault);

#endif
