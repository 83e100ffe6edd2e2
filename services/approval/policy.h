/*  policy: the limits the approval service enforces (all configurable) and the rules every
    field from the network must pass before it touches Redis: names, ids, counts, free text.
    Kept apart from the handlers so the rules read in one place and unit tests can call them. */
#ifndef BERTH_APPROVAL_POLICY_H
#define BERTH_APPROVAL_POLICY_H

#include "berth.pb-c.h"
#include "config.h"
#include "fault.h"
#include "limit.h"

#include <stdint.h>

/* The limits themselves live in lib/limit.h, shared with the gateway and the API document. */
#define POLICY_NAME_MAX          LIMIT_VM_NAME_MAX
#define POLICY_TEMPLATE_NAME_MAX LIMIT_TEMPLATE_NAME_MAX
#define POLICY_KEY_MAX           LIMIT_IDEMPOTENCY_KEY_MAX
#define POLICY_OWNER_MAX         LIMIT_USER_NAME_MAX
#define POLICY_HYPERVISOR_MAX    15 /* a hypervisor name (the scheduler keeps 15 and a NUL) */

typedef struct {
    int max_count;              /* most VMs one request may ask for */
    int64_t idempotency_ttl_ms; /* how long an idempotency key is remembered */
    int max_templates;          /* catalog size (ListTemplates answers all of them) */
    int max_text;               /* longest image / os / actor string */
    int max_reason;             /* longest decision reason, in bytes */
    /* How reservations are checked against hosts, as the scheduler counts (set
       them to the scheduler's values): usable = capacity * ratio; a host not seen for
       longer than host_timeout_ms is not UP. */
    double ram_ratio, cpu_ratio, disk_ratio;
    int64_t host_timeout_ms;
    /* Custom builds: how long the scheduler's verdict is waited for, and the lease of a
       custom-built VM in a group whose max_lease_days is 0. */
    int64_t build_timeout_ms;
    int32_t build_lease_days;
    /* Instant deploy: a pooled VM's replacement, queued when a request takes it, is due this
       long after (0: at once), so its build does not compete with the hand-out it follows. */
    int64_t pool_refill_delay_ms;
} policy_t;

/* The built-in limits (what an unconfigured service uses). */
void policy_defaults(policy_t *self);

/* Declare the approval keys with their defaults on config, before config_load(). */
void policy_declare(config_t *config);

/* Read the limits from a loaded config. -1 (logged by config_int) when a value is bad. */
int policy_load(policy_t *self, config_t *config);

/* True when text is a valid template name: [a-z0-9][a-z0-9._-]{0,62}, not a UUID. */
int policy_is_template_name(const char *text);

/* Each check returns 0, or -1 with a BAD_REQUEST fault naming the field (details.field) and
   the rule. */
int policy_check_uuid(const char *field, const char *text, fault_t *fault);
int policy_check_owner(const char *field, const char *text, fault_t *fault);
int policy_check_template(const policy_t *self, const Berth__Template *t, fault_t *fault);
int policy_check_template_ref(const char *text, fault_t *fault);
int policy_check_vm_name(const char *text, fault_t *fault);
int policy_check_idempotency_key(const char *text, fault_t *fault);
int policy_check_reason(const policy_t *self, const char *text, fault_t *fault);

/* The number of VMs a request really asks for (0 means 1), or -1 with a fault naming count. */
int policy_count(const policy_t *self, int32_t count, fault_t *fault);

/* A request's placement rule between its VMs: "" (none), "affinity" (all on one host) or
   "anti-affinity" (each on another host); BAD_REQUEST naming placement otherwise. */
int policy_check_placement(const char *placement, fault_t *fault);

#endif
