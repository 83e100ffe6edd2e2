/*  allocations: requests for more quota (allocations.h). The automatic path reads the
    platform's capacity and every group's promise, then writes the request (APPROVED) and the
    new quota in one transaction that checks the group's version and berth:quota-epoch as
    read: a change to the group, or another automatic allocation, in between makes it read
    everything again. */
#include "allocations.h"
#include "approval.h"
#include "assertion.h"
#include "clock.h"
#include "decide.h"
#include "groups.h"
#include "keys.h"
#include "limit.h"
#include "log.h"
#include "lua_scripts.h"
#include "requests.h"
#include "util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_ATTEMPTS 3

/* vms, vcpus, ram_mb, disk_gb of q (absent: zeros). */
static void s_values(const Berth__Quota *q, int64_t v[4])
{
    v[0] = q ? q->vms : 0;
    v[1] = q ? q->vcpus : 0;
    v[2] = q ? q->ram_mb : 0;
    v[3] = q ? q->disk_gb : 0;
}

/* Every value of q (when present) from 0 to its limit. */
static int s_check(const char *field, const Berth__Quota *q, fault_t *fault)
{
    if (q && (q->vms < 0 || q->vcpus < 0 || q->ram_mb < 0 || q->disk_gb < 0 ||
              q->ram_mb > LIMIT_GROUP_QUOTA_MAX || q->disk_gb > LIMIT_GROUP_QUOTA_MAX))
        return error_field(fault, field, "%s values must be from 0 to %lld", field,
                           (long long)LIMIT_GROUP_QUOTA_MAX);
    return 0;
}

/* The quota ask gives group g into out: its new values, or g's quota plus the increase.
   -1: CONFLICT for an increase of a group without a quota, BAD_REQUEST past the limits. */
static int s_target(const Berth__Group *g, const Berth__Allocation *ask, Berth__Quota *out,
                    fault_t *fault)
{
    berth__quota__init(out);
    int64_t v[4], d[4];
    if (ask->quota)
        s_values(ask->quota, v);
    else {
        if (!g->quota) {
            error_set(fault, "CONFLICT",
                      "group %s has no quota (no limit) to increase: ask for quota values",
                      g->name);
            return error_detail(fault, "field", "delta");
        }
        s_values(g->quota, v);
        s_values(ask->delta, d);
        for (int i = 0; i < 4; i++)
            v[i] += d[i];
    }
    if (v[0] > INT32_MAX || v[1] > INT32_MAX || v[2] > LIMIT_GROUP_QUOTA_MAX ||
        v[3] > LIMIT_GROUP_QUOTA_MAX)
        return error_field(fault, ask->quota ? "quota" : "delta",
                           "the quota asked for is past the largest quota a group may have");
    out->vms = (int32_t)v[0];
    out->vcpus = (int32_t)v[1];
    out->ram_mb = v[2];
    out->disk_gb = v[3];
    return 0;
}

/* Is every value of q at most max's? */
static int s_within(const Berth__Quota *q, const Berth__Quota *max)
{
    int64_t a[4], b[4];
    s_values(q, a);
    s_values(max, b);
    for (int i = 0; i < 4; i++)
        if (a[i] > b[i])
            return 0;
    return 1;
}

/* Does every value of target that grows past now's stay within max? (A value that does not
   grow is not held to max: an auto_growth_max of 0 for it means it never grows by itself.) */
static int s_grows_within(const Berth__Quota *target, const Berth__Quota *now,
                          const Berth__Quota *max)
{
    int64_t t[4], n[4], m[4];
    s_values(target, t);
    s_values(now, n);
    s_values(max, m);
    for (int i = 0; i < 4; i++)
        if (t[i] > n[i] && t[i] > m[i])
            return 0;
    return 1;
}

static int64_t s_int(const redisReply *e)
{
    int64_t v = 0;
    if (e && e->type == REDIS_REPLY_STRING && util_parse_int(e->str, 0, INT64_MAX, &v) != 0)
        v = 0;
    return v;
}

/* hash_rows of the n keys with fields (NULL-terminated): the reply (caller frees), or NULL
   with the fault set. */
static redisReply *s_rows(store_t *store, char (*keys)[KEYS_MAX], size_t n, const char **fields,
                          fault_t *fault)
{
    size_t nf = 0;
    while (fields[nf])
        nf++;
    const char **argv = calloc(n + nf + 1, sizeof *argv);
    if (!argv) {
        error_set(fault, "INTERNAL", "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        argv[i] = keys[i];
    for (size_t i = 0; i < nf; i++)
        argv[n + i] = fields[i];
    redisReply *r = store_run(store, &lua_hash_rows, (int)n, (int)(n + nf), argv);
    free(argv);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != n) {
        if (r)
            freeReplyObject(r);
        fault_store(fault, store);
        return NULL;
    }
    return r;
}

/* The ids in the set or zset at key (SMEMBERS or ZRANGE), or NULL with the fault set. */
static redisReply *s_ids(store_t *store, const char *command, fault_t *fault)
{
    redisReply *r = store_command(store, command);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        fault_store(fault, store);
        return NULL;
    }
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type != REDIS_REPLY_STRING || r->element[i]->len >= UTIL_ID_LEN + 64) {
            freeReplyObject(r);
            error_set(fault, "INTERNAL", "an index holds something that is not an id");
            return NULL;
        }
    return r;
}

/* The vCPUs, RAM and disk of every host that is not DISABLED, into cap[3]. */
static int s_capacity(store_t *store, int64_t cap[3], fault_t *fault)
{
    redisReply *ids = s_ids(store, "SMEMBERS " KEYS_HOSTS, fault);
    if (!ids)
        return -1;
    size_t n = ids->elements;
    char(*keys)[KEYS_MAX] = calloc(n + 1, sizeof *keys);
    if (!keys) {
        freeReplyObject(ids);
        return error_set(fault, "INTERNAL", "out of memory");
    }
    for (size_t i = 0; i < n; i++)
        keys_host(keys[i], ids->element[i]->str);
    static const char *fields[] = { "state", "cap_vcpus", "cap_ram_mb", "cap_disk_gb", NULL };
    redisReply *rows = n ? s_rows(store, keys, n, fields, fault) : NULL;
    free(keys);
    freeReplyObject(ids);
    if (n && !rows)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const redisReply *row = rows->element[i];
        if (row->type != REDIS_REPLY_ARRAY || row->elements != 4 ||
            (row->element[0]->type == REDIS_REPLY_STRING &&
             streq(row->element[0]->str, "DISABLED")))
            continue;
        for (int k = 0; k < 3; k++)
            cap[k] += s_int(row->element[1 + k]);
    }
    if (rows)
        freeReplyObject(rows);
    return 0;
}

/* What every group but except is promised, added to promised[3] (vcpus, ram_mb, disk_gb):
   its quota, or what its VMs hold when it has none. */
static int s_promised(store_t *store, const char *except, int64_t promised[3], fault_t *fault)
{
    redisReply *ids = s_ids(store, "ZRANGE " KEYS_GROUPS " 0 -1", fault);
    if (!ids)
        return -1;
    size_t n = ids->elements;
    char(*groups)[KEYS_MAX] = calloc(n + 1, sizeof *groups);
    char(*usage)[KEYS_MAX] = calloc(n + 1, sizeof *usage);
    int rc = groups && usage ? 0 : error_set(fault, "INTERNAL", "out of memory");
    for (size_t i = 0; rc == 0 && i < n; i++) {
        keys_build(groups[i], KEYS_GROUP, ids->element[i]->str, NULL);
        keys_build(usage[i], KEYS_GROUP_USAGE, ids->element[i]->str, NULL);
    }
    static const char *quota_field[] = { "quota", NULL };
    static const char *used_fields[] = { "vcpus", "ram_mb", "disk_gb", NULL };
    redisReply *quotas = rc == 0 && n ? s_rows(store, groups, n, quota_field, fault) : NULL;
    redisReply *used = quotas ? s_rows(store, usage, n, used_fields, fault) : NULL;
    if (n && rc == 0 && !used)
        rc = -1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (streq(ids->element[i]->str, except))
            continue;
        const redisReply *q = quotas->element[i], *u = used->element[i];
        const char *text = q->type == REDIS_REPLY_ARRAY && q->elements == 1 &&
                                   q->element[0]->type == REDIS_REPLY_STRING
                               ? q->element[0]->str
                               : "";
        json_t *json = *text ? json_loads(text, 0, NULL) : NULL;
        if (json_is_object(json)) {
            static const char *names[] = { "vcpus", "ram_mb", "disk_gb" };
            for (int k = 0; k < 3; k++)
                promised[k] += json_integer_value(json_object_get(json, names[k]));
        } else if (u->type == REDIS_REPLY_ARRAY && u->elements == 3)
            for (int k = 0; k < 3; k++)
                promised[k] += s_int(u->element[k]);
        json_decref(json);
    }
    if (quotas)
        freeReplyObject(quotas);
    if (used)
        freeReplyObject(used);
    free(groups);
    free(usage);
    freeReplyObject(ids);
    return rc;
}

/* Does the platform have the capacity for g to be promised target besides every other
   group's promise? *fits 1 or 0; 0, or -1 with a fault. */
static int s_fits(store_t *store, const Berth__Group *g, const Berth__Quota *target, int *fits,
                  fault_t *fault)
{
    int64_t cap[3] = { 0 }, promised[3] = { target->vcpus, target->ram_mb, target->disk_gb };
    if (s_capacity(store, cap, fault) != 0 || s_promised(store, g->id, promised, fault) != 0)
        return -1;
    *fits = promised[0] <= cap[0] && promised[1] <= cap[1] && promised[2] <= cap[2];
    return 0;
}

/* Add to tx: g (at the version read) gets quota target, with its group.updated event. */
static void s_tx_apply(model_tx_t *tx, const Berth__Group *g, Berth__Quota *target,
                       const char *actor)
{
    char key[KEYS_MAX], at[24], v[24];
    keys_build(key, KEYS_GROUP, g->id, NULL);
    snprintf(at, sizeof at, "%lld", (long long)clock_now_ms());
    snprintf(v, sizeof v, "%lld", (long long)g->version + 1);
    model_tx_check_version(tx, key, g->version);
    Berth__Group after = *g;
    after.quota = target;
    model_tx_put_fields(tx, key, &after.base, "quota", NULL);
    model_tx_hset(tx, key, "version", v);
    model_tx_event(tx, "group.updated", "key", key, "group", g->id, "actor", actor, "version", v,
                   "at_ms", at, NULL);
}

/* The epoch of berth:quota-epoch into epoch[24] ("" when never bumped). */
static int s_epoch(store_t *store, char epoch[24], fault_t *fault)
{
    redisReply *r = store_command(store, "HGET %s epoch", KEYS_QUOTA_EPOCH);
    if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL)) {
        if (r)
            freeReplyObject(r);
        return fault_store(fault, store);
    }
    epoch[0] = '\0';
    if (r->type == REDIS_REPLY_STRING)
        util_strlcpy(epoch, r->str, 24);
    freeReplyObject(r);
    return 0;
}

/* A reservation ask is approved at once when the group has an auto_growth_max and what it
   would reserve in all stays within its vcpus, ram_mb and disk_gb, and the hosts have it
   free: then it is written here, through the one write path of reservations (which checks
   what is free in the same Lua step). *automatic 1 when written, 0 when an admin decides
   (not within the limits, or not free now); -1 with a fault for anything else. */
static int s_reserve_at_once(store_t *store, const policy_t *policy, const Berth__Group *g,
                             const Berth__Allocation *ask, const char *owner, int *automatic,
                             fault_t *fault)
{
    *automatic = 0;
    if (!g->auto_growth_max)
        return 0;
    int64_t total[3] = { 0 };
    for (size_t i = 0; i < ask->n_reservations; i++) {
        total[0] += ask->reservations[i]->vcpus;
        total[1] += ask->reservations[i]->ram_mb;
        total[2] += ask->reservations[i]->disk_gb;
    }
    if (total[0] > g->auto_growth_max->vcpus || total[1] > g->auto_growth_max->ram_mb ||
        total[2] > g->auto_growth_max->disk_gb)
        return 0;
    Berth__Group *after = NULL;
    if (groups_set_reservations(store, policy, g->id, ask->reservations, ask->n_reservations, 0,
                                owner, &after, fault) == 0) {
        protobuf_c_message_free_unpacked(&after->base, NULL);
        *automatic = 1;
        return 0;
    }
    if (!streq(fault->code, "CONFLICT")) /* a host named wrongly, Redis */
        return -1;
    memset(fault, 0, sizeof *fault); /* not free now: an admin decides */
    return 0;
}

/* One attempt at recording ask for g: 0, MODEL_CONFLICT (read again), or -1. */
static int s_attempt(store_t *store, const policy_t *policy, const Berth__Group *g,
                     const Berth__Allocation *ask, const char *owner, const char *trace_id,
                     Berth__Request **request_p, fault_t *fault)
{
    Berth__Quota target;
    berth__quota__init(&target);
    int automatic = 0, reserve = ask->n_reservations > 0;
    char epoch[24] = "", bumped[24];
    if (reserve) {
        if (s_reserve_at_once(store, policy, g, ask, owner, &automatic, fault) != 0)
            return -1;
    } else {
        if (s_target(g, ask, &target, fault) != 0)
            return -1;
        if (g->quota && s_within(&target, g->quota) && s_within(g->quota, &target))
            return error_field(fault, ask->quota ? "quota" : "delta",
                               "group %s has this quota already", g->name);
        if (g->auto_growth_max && g->quota &&
            s_grows_within(&target, g->quota, g->auto_growth_max) &&
            (s_epoch(store, epoch, fault) != 0 ||
             s_fits(store, g, &target, &automatic, fault) != 0))
            return -1;
    }
    int64_t e = 0;
    if (*epoch && util_parse_int(epoch, 0, INT64_MAX - 1, &e) != 0)
        e = 0;
    snprintf(bumped, sizeof bumped, "%lld", (long long)e + 1);
    decide_policy_t rule = automatic ? DECIDE_AUTO : DECIDE_ADMIN;
    const char *awaiting = decide_first_level(rule, NULL, NULL, 0);

    int64_t now = util_now_ms();
    char id[UTIL_ID_LEN];
    util_uuid(id);
    Berth__Allocation asked = *ask;
    asked.justification = ask->justification ? ask->justification : "";
    asked.previous = g->quota;
    asked.applied = automatic && !reserve ? &target : NULL;
    Berth__ApprovalStep step = BERTH__APPROVAL_STEP__INIT, *steps[1] = { &step };
    step.level = DECIDE_LEVEL_AUTO;
    step.decided_by = "policy";
    step.decision = "approved";
    step.reason = reserve ? "within the group's auto_growth_max and free on the hosts now"
                          : "within the group's auto_growth_max and the platform's free capacity";
    step.at_ms = now;
    Berth__Request req = BERTH__REQUEST__INIT;
    req.id = id;
    req.state = automatic ? "APPROVED" : "PENDING_APPROVAL";
    req.kind = "allocation";
    req.name = g->name;
    req.group = g->id;
    req.owner = (char *)owner;
    req.created_ms = now;
    req.updated_ms = now;
    req.version = 1;
    req.decided_by = automatic ? "policy" : "";
    req.policy = (char *)decide_policy_name(rule);
    req.awaiting = (char *)(awaiting ? awaiting : "");
    req.n_steps = automatic ? 1 : 0;
    req.steps = automatic ? steps : NULL;
    req.allocation = &asked;

    model_tx_t *tx = model_tx_new();
    if (!tx)
        return error_set(fault, "INTERNAL", "out of memory");
    model_tx_actor(tx, owner, trace_id);
    requests_tx_add(tx, &req);
    if (automatic && !reserve) {
        s_tx_apply(tx, g, &target, owner);
        model_tx_check(tx, KEYS_QUOTA_EPOCH, "epoch", epoch);
        model_tx_hset(tx, KEYS_QUOTA_EPOCH, "epoch", bumped);
    } else { /* the group must still be there */
        char key[KEYS_MAX];
        model_tx_check(tx, keys_build(key, KEYS_GROUP, g->id, NULL), "id", g->id);
    }
    const char *why = NULL;
    int rc = model_tx_commit(tx, store, &why);
    model_tx_destroy(&tx);
    if (rc == MODEL_REFUSED)
        return error_set(fault, "INTERNAL", "%s", why);
    if (rc == MODEL_CONFLICT)
        return MODEL_CONFLICT;
    if (rc != 0)
        return fault_store(fault, store);
    *request_p = requests_clone(&req);
    return *request_p ? 0 : error_set(fault, "INTERNAL", "out of memory");
}

int allocations_create(store_t *store, const policy_t *policy, const char *group,
                       const Berth__Allocation *ask, const Berth__UserAssertion *who,
                       const char *trace_id, Berth__Request **request_p, fault_t *fault)
{
    if (!group || !*group)
        return error_field(fault, "group", "group is required");
    if (!ask || (ask->quota != NULL) + (ask->delta != NULL) + (ask->n_reservations > 0) != 1)
        return error_field(fault, "quota",
                           "give quota (the new values), delta (an increase) or reservations "
                           "(what the group's reservations become), one of the three");
    if (s_check("quota", ask->quota, fault) != 0 || s_check("delta", ask->delta, fault) != 0 ||
        groups_check_reservations(ask->reservations, ask->n_reservations, fault) != 0)
        return -1;
    if (ask->justification && strlen(ask->justification) > LIMIT_REASON_MAX)
        return error_field(fault, "justification", "justification must be at most %d bytes",
                           LIMIT_REASON_MAX);
    int admin = assertion_has_role(who, "admin");
    for (int attempt = 0; attempt < S_ATTEMPTS; attempt++) {
        Berth__Group *g = NULL;
        if (groups_find(store, group, &g, fault) != 0) {
            if (streq(fault->code, "NOT_FOUND"))
                error_detail(fault, "field", "group");
            return -1;
        }
        char role[16] = "";
        int rc = admin ? 0 : groups_role(store, g->id, who->user, role, fault);
        if (rc == 0 && !admin && !streq(role, "manager")) {
            /* Its other members learn it exists; anyone else does not. */
            if (*role)
                rc =
                    error_set(fault, "FORBIDDEN",
                              "only a manager of group %s or an admin asks for its quota", g->name);
            else {
                error_set(fault, "NOT_FOUND", "no group %s", group);
                rc = error_detail(fault, "field", "group");
            }
        }
        if (rc == 0)
            rc = s_attempt(store, policy, g, ask, who->user, trace_id, request_p, fault);
        protobuf_c_message_free_unpacked(&g->base, NULL);
        if (rc != MODEL_CONFLICT)
            return rc;
    }
    return error_set(fault, "CONFLICT", "group %s keeps changing; try again", group);
}

typedef struct {
    Berth__Group *group;       /* as read for the approval */
    Berth__Allocation applied; /* the request's allocation, with applied set */
    Berth__Quota quota;        /* what it applies */
} s_held_t;

void allocations_release(void *held)
{
    s_held_t *h = held;
    if (h && h->group)
        protobuf_c_message_free_unpacked(&h->group->base, NULL);
    free(h);
}

int allocations_approve(store_t *store, const policy_t *policy, model_tx_t *tx,
                        const Berth__Request *req, Berth__Request *next, void **held,
                        fault_t *fault)
{
    if (!req->allocation)
        return error_set(fault, "INTERNAL", "allocation request '%s' asks for nothing", req->id);
    s_held_t *h = calloc(1, sizeof *h);
    if (!h)
        return error_set(fault, "INTERNAL", "out of memory");
    if (req->allocation->n_reservations > 0) {
        /* Written before the request's transaction, through the one write path of
           reservations, which checks they are free now (CONFLICT naming the host and
           resource otherwise: the admin sees why). A conflict of the transaction after it
           reads the request again and writes the same reservations again: they replace the
           group's, so writing them twice is writing them once. */
        Berth__Group *after = NULL;
        if (groups_set_reservations(store, policy, req->group, req->allocation->reservations,
                                    req->allocation->n_reservations, 0, next->decided_by,
                                    &after, fault) != 0) {
            if (streq(fault->code, "NOT_FOUND"))
                error_set(fault, "CONFLICT", "the group of request '%s' was deleted: reject it",
                          req->id);
            allocations_release(h);
            return -1;
        }
        protobuf_c_message_free_unpacked(&after->base, NULL);
        *held = h;
        return 0;
    }
    if (groups_get(store, req->group, &h->group, fault) != 0) {
        if (streq(fault->code, "NOT_FOUND"))
            error_set(fault, "CONFLICT", "the group of request '%s' was deleted: reject it",
                      req->id);
        allocations_release(h);
        return -1;
    }
    if (s_target(h->group, req->allocation, &h->quota, fault) != 0) {
        allocations_release(h);
        return -1;
    }
    s_tx_apply(tx, h->group, &h->quota, next->decided_by);
    h->applied = *req->allocation;
    h->applied.applied = &h->quota;
    next->allocation = &h->applied;
    *held = h;
    return 0;
}

void allocations_on_create(bus_request_t *request, void *arg)
{
    approval_t *self = arg;
    Berth__CreateAllocation *msg = bus_request_body(request, &berth__create_allocation__descriptor);
    if (!msg) {
        bus_reply_error(request, "BAD_REQUEST", "CreateAllocation body does not parse");
        return;
    }
    Berth__UserAssertion *who = approval_caller(self, request, msg->assertion);
    if (!who)
        return;
    const char *rid = bus_request_envelope(request)->request_id;
    fault_t fault = { 0 };
    Berth__Request *req = NULL;
    int rc = allocations_create(approval_store(self), approval_limits(self), msg->group,
                                msg->allocation, who,
                                rid && *rid ? rid : NULL, &req, &fault);
    berth__user_assertion__free_unpacked(who, NULL);
    if (rc != 0) {
        approval_fail(request, "allocation refused", &fault);
        return;
    }
    log_info(rid, "allocation asked", "{s:s, s:s, s:s, s:s}", "request", req->id, "state",
             req->state, "group", req->group, "owner", req->owner);
    bus_reply(request, &req->base);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}
