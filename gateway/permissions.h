/*  permissions: the one table of who may do what (action -> rule). Every route of the route
    table names its action; the HTTP edge checks the platform part of the rule before the
    handler runs, and handlers check the object part (owner, role in the object's group)
    through perm_allows. docs/permissions.md is generated from this table. */
#ifndef BERTH_GATEWAY_PERMISSIONS_H
#define BERTH_GATEWAY_PERMISSIONS_H

#include "http.h"

/* Who a rule lets through: any of its bits. The platform roles are the user's role
   (admin, operator, user); the group roles are the caller's role in the object's group
   (member, manager, auditor), read from berth:user-groups:<user>. */
enum {
    PERM_PUBLIC = 1 << 0,   /* anyone, signed in or not */
    PERM_USER = 1 << 1,     /* any signed-in user (what they see may still be filtered) */
    PERM_ADMIN = 1 << 2,    /* platform role admin */
    PERM_OPERATOR = 1 << 3, /* platform role operator */
    PERM_OWNER = 1 << 4,    /* the object's owner */
    PERM_MEMBER = 1 << 5,   /* role member in the object's group */
    PERM_MANAGER = 1 << 6,  /* role manager in the object's group */
    PERM_AUDITOR = 1 << 7,  /* role auditor in the object's group */
};
#define PERM_OBJECT (PERM_OWNER | PERM_MEMBER | PERM_MANAGER | PERM_AUDITOR)

typedef struct {
    const char *action; /* "vm.dispose" */
    unsigned rule;      /* PERM_* bits */
    const char *what;   /* one line for docs/permissions.md */
} perm_entry_t;

/* The table, ended by a NULL action. */
extern const perm_entry_t perm_table[];

/* The rule of action; 0 when the table has no such action. */
unsigned perm_rule(const char *action);
/* Does action need no sign-in? */
int perm_public(const char *action);
/* The edge's check, after sign-in: 0 when the caller's platform role passes the rule or the
   rule leaves the decision to the handler (object bits, PERM_USER); -1 with 403 set
   otherwise (500 for an action the table lacks). Loads the caller's group roles into req. */
int perm_gate(http_req_t *req, const char *action);
/* May the caller do action on an object owned by owner in group (either may be NULL)? */
int perm_allows(http_req_t *req, const char *action, const char *owner, const char *group);
/* The caller's role in group ("" when none; borrowed from req). */
const char *perm_group_role(http_req_t *req, const char *group);
/* Does the caller's platform role see every object (admin, operator)? */
int perm_sees_all(http_req_t *req);
/* Drop every thread's cached group roles of user: a change made through this gateway shows
   at once (one made through another gateway instance within groups_cache_ms). */
void perm_forget(const char *user);

#endif
