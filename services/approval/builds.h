/*  builds: requests that describe their machine (custom builds) and dry runs. The scheduler
    judges the machine and picks its image (ValidateBuild, services/scheduler/heuristics.h);
    this module asks it without blocking the loop (the CreateRequest is kept and answered
    when the verdict comes), adds the group's rules (quota, budget, the templates it offers,
    with a template that would work as a suggestion), and then answers the verdict (a dry
    run), refuses with BUILD_REFUSED (422: each rule broken and the suggestions in details),
    or creates the request (requests_create_build). */
#ifndef BERTH_APPROVAL_BUILDS_H
#define BERTH_APPROVAL_BUILDS_H

#include "approval.h"
#include "berth.pb-c.h"

/* Does msg need the scheduler's verdict (a custom build, or validate_only)? */
int builds_wanted(const Berth__CreateRequest *msg);

/* Go on with CreateRequest msg for owner (group: the group resolved for a scoped key, or
   msg's), answering request now (a bad field) or once the verdict is in. */
void builds_begin(approval_t *approval, bus_request_t *request, const Berth__CreateRequest *msg,
                  const char *owner, int admin);

/* details of fault for verdict v: "rules" (the rules broken, comma-separated), one entry per
   rule with why, "field" (the first rule's), "suggestions" (the sentences, "; "-separated)
   and "suggest.<kind>" (each suggestion's value, comma-separated per kind). */
void builds_details(fault_t *fault, const Berth__BuildVerdict *v);

#endif
