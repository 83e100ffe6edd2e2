/*  builds: custom builds and dry runs (builds.h). A CreateRequest that describes its machine,
    or asks validate_only, is checked for bad fields here (400 at once), then kept
    (bus_request_defer) while the scheduler judges it; its answer is completed with the
    group's rules and answered from s_on_verdict. The group's checks read what the template
    path's transaction enforces (quota, user quota, budget, offered templates), so a dry run
    says what the real request would meet; the real request is still checked again in its own
    transaction. */
#include "builds.h"
#include "catalog.h"
#include "groups.h"
#include "keys.h"
#include "limit.h"
#include "log.h"
#include "requests.h"
#include "util.h"
#include "verdict.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A CreateRequest waiting for its verdict. */
typedef struct {
    approval_t *approval;
    bus_request_t *request;   /* kept: its body (msg) lives as long as it */
    Berth__CreateRequest ask; /* the body with owner and group as resolved */
    char owner[LIMIT_TEXT_MAX + 1];
    char group[UTIL_ID_LEN];
    char template_name[LIMIT_TEMPLATE_REF_MAX + 1]; /* a template's dry run: its name */
    int admin;
    int count;
    int offered;     /* the group offers the template (a template's dry run) */
    int64_t left[4]; /* what the quotas leave of vms, vcpus, ram_mb, disk_gb (-1: no limit) */
} s_pending_t;

int builds_wanted(const Berth__CreateRequest *msg)
{
    return msg->validate_only || (msg->os && *msg->os) || (msg->os_version && *msg->os_version) ||
           msg->n_applications || msg->vcpus || msg->ram_mb || msg->disk_gb;
}

/* An application name: 1..LIMIT_IMAGE_TEXT_MAX of [A-Za-z0-9._+-], starting with a letter or
   digit (a package name cloud-init can install). */
static int s_app_ok(const char *app)
{
    size_t len = app ? strlen(app) : 0;
    if (len == 0 || len > LIMIT_IMAGE_TEXT_MAX)
        return 0;
    static const char set[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-";
    return strspn(app, set) == len && strchr(set, app[0]) && app[0] != '.' && app[0] != '_' &&
           app[0] != '+' && app[0] != '-';
}

/* The custom machine's fields (400 naming the field). */
static int s_check_machine(const Berth__CreateRequest *msg, fault_t *fault)
{
    if (!msg->os || !*msg->os)
        return error_field(fault, "os",
                           "a custom build names its os (or the request names a "
                           "template)");
    if (strlen(msg->os) > LIMIT_IMAGE_TEXT_MAX)
        return error_field(fault, "os", "os is at most %d characters", LIMIT_IMAGE_TEXT_MAX);
    if (msg->os_version && strlen(msg->os_version) > LIMIT_IMAGE_TEXT_MAX)
        return error_field(fault, "os_version", "os_version is at most %d characters",
                           LIMIT_IMAGE_TEXT_MAX);
    if (msg->vcpus < 1 || msg->vcpus > LIMIT_VCPUS_MAX)
        return error_field(fault, "vcpus", "vcpus must be 1 to %d", LIMIT_VCPUS_MAX);
    if (msg->ram_mb < LIMIT_RAM_MB_MIN || msg->ram_mb > LIMIT_RAM_MB_MAX)
        return error_field(fault, "ram_mb", "ram_mb must be %d to %d", LIMIT_RAM_MB_MIN,
                           LIMIT_RAM_MB_MAX);
    if (msg->disk_gb < 1 || msg->disk_gb > LIMIT_DISK_GB_MAX)
        return error_field(fault, "disk_gb", "disk_gb must be 1 to %d", LIMIT_DISK_GB_MAX);
    if (msg->n_applications > LIMIT_IMAGE_APPS_MAX)
        return error_field(fault, "applications", "at most %d applications", LIMIT_IMAGE_APPS_MAX);
    for (size_t i = 0; i < msg->n_applications; i++) {
        if (!s_app_ok(msg->applications[i]))
            return error_field(fault, "applications",
                               "applications[%zu] must be 1 to %d letters, digits, '.', '_', "
                               "'+' or '-'",
                               i, LIMIT_IMAGE_TEXT_MAX);
        for (size_t j = 0; j < i; j++)
            if (strcasecmp(msg->applications[i], msg->applications[j]) == 0)
                return error_field(fault, "applications", "application %s is named twice",
                                   msg->applications[i]);
    }
    return 0;
}

static char *s_dup(const char *text)
{
    return strdup(text ? text : "");
}

static int s_usage(store_t *store, const char *key, int64_t used[4])
{
    redisReply *r = store_command(store, "HMGET %s vms vcpus ram_mb disk_gb", key);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 4) {
        if (r)
            freeReplyObject(r);
        return -1;
    }
    for (int i = 0; i < 4; i++)
        used[i] =
            r->element[i]->type == REDIS_REPLY_STRING ? strtoll(r->element[i]->str, NULL, 10) : 0;
    freeReplyObject(r);
    return 0;
}

/* What would fit what the quota leaves of resource i (0 vms, 1 vcpus, 2 ram_mb, 3 disk_gb),
   each VM taking `each` of it: a smaller size per VM that still covers the need (a custom
   build's; a template's size is the template's), else fewer VMs, else more quota. */
static int s_quota_suggest(s_pending_t *p, const Berth__Group *g, Berth__BuildVerdict *v, int i,
                           int64_t left, int64_t each)
{
    static const char *kinds[4] = { "count", "vcpus", "ram_mb", "disk_gb" };
    static const char *what[4] = { "VMs", "vCPUs", "MB RAM", "GB disk" };
    int64_t least[4] = { 1, 1, v->need_ram_mb > 0 ? v->need_ram_mb : LIMIT_RAM_MB_MIN,
                         v->need_disk_gb > 0 ? v->need_disk_gb : 1 };
    int64_t per_vm = p->count > 0 ? left / p->count : left;
    int64_t vms = each > 0 ? left / each : 0;
    char value[32], text[192];
    if (i > 0 && !*p->template_name && per_vm >= least[i]) {
        snprintf(value, sizeof value, "%lld", (long long)per_vm);
        snprintf(text, sizeof text, "lower to %lld %s%s, what the quota of group %s leaves",
                 (long long)per_vm, what[i], p->count > 1 ? " each" : "", g->name);
        return verdict_suggest(v, kinds[i], value, "%s", text);
    }
    if (p->count > 1 && vms >= 1) {
        snprintf(value, sizeof value, "%lld", (long long)vms);
        snprintf(text, sizeof text, "ask for %lld VM%s, what the quota of group %s leaves",
                 (long long)vms, vms == 1 ? "" : "s", g->name);
        return verdict_suggest(v, "count", value, "%s", text);
    }
    snprintf(text, sizeof text,
             "ask for more quota for group %s (an allocation request: berth allocate %s)", g->name,
             g->name);
    return verdict_suggest(v, "allocation", g->name, "%s", text);
}

/* The quota rule: would count VMs of the size pass the group's quota or the owner's
   user_quota in it (as model_tx_charge decides; a limit of 0 is none)? */
static int s_quota(s_pending_t *p, const Berth__Group *g, const Berth__Resources *size,
                   Berth__BuildVerdict *v)
{
    static const char *names[4] = { "vms", "vcpus", "ram_mb", "disk_gb" };
    int64_t want[4] = { p->count, (int64_t)p->count * size->vcpus, (int64_t)p->count * size->ram_mb,
                        (int64_t)p->count * size->disk_gb };
    const Berth__Quota *limits[2] = { g->quota, g->user_quota };
    store_t *store = approval_store(p->approval);
    for (int i = 0; i < 4; i++)
        p->left[i] = -1;
    for (int scope = 0; scope < 2; scope++) {
        const Berth__Quota *q = limits[scope];
        if (!q)
            continue;
        int64_t limit[4] = { q->vms, q->vcpus, q->ram_mb, q->disk_gb }, used[4];
        char key[KEYS_MAX];
        if (scope == 0)
            keys_build(key, KEYS_GROUP_USAGE, g->id, NULL);
        else
            keys_build(key, KEYS_GROUP_USER_USAGE, g->id, p->owner);
        if (s_usage(store, key, used) != 0)
            return -1;
        for (int i = 0; i < 4; i++) {
            if (limit[i] > 0 && (p->left[i] < 0 || limit[i] - used[i] < p->left[i]))
                p->left[i] = limit[i] - used[i];
            if (limit[i] <= 0 || used[i] + want[i] <= limit[i])
                continue;
            if (verdict_rule(
                    v, "quota", i == 0 ? "count" : names[i],
                    "%s quota of group %s: %s quota %lld, %lld in use, this request asks for "
                    "%lld",
                    scope ? "your per-member" : "the", g->name, names[i], (long long)limit[i],
                    (long long)used[i], (long long)want[i]) != 0 ||
                s_quota_suggest(p, g, v, i, limit[i] - used[i],
                                p->count > 0 ? want[i] / p->count : want[i]) != 0)
                return -1;
        }
    }
    return 0;
}

/* A template the group offers that would work instead (its OS, at least the need, within the
   largest host and what the quotas leave: s_quota ran first), the smallest such: suggested when the
   request has no application a template could not bring. */
static int s_template(s_pending_t *p, const Berth__Group *g, Berth__BuildVerdict *v)
{
    const char *os = p->ask.os && *p->ask.os ? p->ask.os : NULL;
    if (!os && v->image)
        os = v->image->os;
    if (p->ask.n_applications || !os || !v->largest)
        return 0;
    Berth__TemplateList *list = NULL;
    fault_t fault = { 0 };
    if (catalog_list(approval_store(p->approval), &list, &fault) != 0)
        return -1;
    const Berth__Template *best = NULL;
    for (size_t i = 0; i < list->n_templates; i++) {
        const Berth__Template *t = list->templates[i];
        int64_t size[4] = { p->count, (int64_t)p->count * t->vcpus, (int64_t)p->count * t->ram_mb,
                            (int64_t)p->count * t->disk_gb };
        int within = 1; /* the count of it fits what the quotas leave */
        for (int k = 0; k < 4; k++)
            within = within && (p->left[k] < 0 || size[k] <= p->left[k]);
        if (!within || !groups_offers(g, t) || strcasecmp(t->os ? t->os : "", os) != 0 ||
            strcmp(t->name, p->template_name) == 0 || t->ram_mb < v->need_ram_mb ||
            t->disk_gb < v->need_disk_gb || t->vcpus > v->largest->vcpus ||
            t->ram_mb > v->largest->ram_mb || t->disk_gb > v->largest->disk_gb)
            continue;
        if (!best || t->ram_mb < best->ram_mb ||
            (t->ram_mb == best->ram_mb && t->vcpus < best->vcpus))
            best = t;
    }
    int rc = 0;
    if (best) {
        char text[160];
        snprintf(text, sizeof text, "pick template %s (%d vCPUs, %lld MB RAM, %lld GB disk)",
                 best->name, best->vcpus, (long long)best->ram_mb, (long long)best->disk_gb);
        rc = verdict_suggest(v, "template", best->name, "%s", text);
    }
    catalog_list_destroy(&list);
    return rc;
}

/* The group's rules on top of the scheduler's verdict. 0, or -1 with fault. */
static int s_group_rules(s_pending_t *p, Berth__BuildVerdict *v, fault_t *fault)
{
    store_t *store = approval_store(p->approval);
    Berth__Group *g = NULL;
    if (groups_get(store, p->group, &g, fault) != 0)
        return -1;
    int rc = 0;
    if (*p->template_name && !p->offered)
        rc = verdict_rule(v, "template", "template", "group %s does not offer template %s", g->name,
                          p->template_name);
    fault_t budget = { 0 };
    if (rc == 0 && requests_budget_blocked(store, g, &budget) != 0) {
        if (!streq(budget.code, "BUDGET_EXCEEDED"))
            rc = error_set(fault, "UNAVAILABLE", "state store unreachable");
        else
            rc = verdict_rule(v, "budget", "group", "%s", budget.message);
    }
    if (rc == 0 && v->flavor && s_quota(p, g, v->flavor, v) != 0)
        rc = error_set(fault, "UNAVAILABLE", "state store unreachable");
    if (rc == 0 && v->n_violations && s_template(p, g, v) != 0)
        rc = error_set(fault, "UNAVAILABLE", "state store unreachable");
    protobuf_c_message_free_unpacked(&g->base, NULL);
    return rc;
}

/* Append text to the detail key (", " or sep between values). */
static void s_detail_add(fault_t *fault, const char *key, const char *sep, const char *text)
{
    const char *was = error_detail_get(fault, key);
    if (was) {
        char joined[ERROR_VALUE_MAX];
        snprintf(joined, sizeof joined, "%s%s%s", was, sep, text);
        error_detail(fault, key, "%s", joined);
    } else
        error_detail(fault, key, "%s", text);
}

void builds_details(fault_t *fault, const Berth__BuildVerdict *v)
{
    if (v->n_violations)
        error_detail(fault, "field", "%s", v->violations[0]->field);
    for (size_t i = 0; i < v->n_violations; i++) {
        const char *rule = v->violations[i]->rule;
        const char *rules = error_detail_get(fault, "rules");
        int seen = 0;
        if (rules) { /* each rule once in the list */
            size_t len = strlen(rule);
            for (const char *at = rules; (at = strstr(at, rule)) != NULL; at += len)
                if ((at == rules || at[-1] == ',') && (at[len] == ',' || at[len] == '\0'))
                    seen = 1;
        }
        if (!seen)
            s_detail_add(fault, "rules", ",", rule);
        s_detail_add(fault, rule, "; ", v->violations[i]->message);
    }
    for (size_t i = 0; i < v->n_suggestions; i++) {
        char key[ERROR_KEY_MAX];
        snprintf(key, sizeof key, "suggest.%s", v->suggestions[i]->kind);
        s_detail_add(fault, key, ",", v->suggestions[i]->value);
        s_detail_add(fault, "suggestions", "; ", v->suggestions[i]->message);
    }
    if (v->image && v->image->name && *v->image->name)
        error_detail(fault, "image", "%s", v->image->name);
}

static void s_pending_free(s_pending_t **p_p)
{
    if (*p_p) {
        bus_request_destroy(&(*p_p)->request);
        free(*p_p);
        *p_p = NULL;
    }
}

static void s_on_verdict(bus_client_t *client, const char *call_id, Berth__Envelope *reply,
                         void *arg)
{
    (void)client;
    (void)call_id;
    s_pending_t *p = arg;
    fault_t fault = { 0 };
    Berth__BuildVerdict *v = NULL;
    if (!reply)
        error_set(&fault, "UNAVAILABLE", "the scheduler did not answer in time; try again");
    else if (reply->error)
        error_from_proto(&fault, reply->error);
    else if (!(v = berth__build_verdict__unpack(NULL, reply->body.len, reply->body.data)))
        error_set(&fault, "INTERNAL", "the scheduler's verdict does not parse");
    if (reply)
        berth__envelope__free_unpacked(reply, NULL);
    if (v && s_group_rules(p, v, &fault) == 0) {
        v->ok = v->n_violations == 0;
        if (*p->template_name) {
            free(v->template_ != protobuf_c_empty_string ? v->template_ : NULL);
            v->template_ = s_dup(p->template_name);
        }
        const char *rid = bus_request_envelope(p->request)->request_id;
        if (p->ask.validate_only) {
            log_info(rid, "build validated (dry run)", "{s:b, s:i}", "ok", v->ok, "violations",
                     (int)v->n_violations);
            bus_reply(p->request, &v->base);
        } else if (!v->ok) {
            error_set(&fault, "BUILD_REFUSED", "the machine asked for cannot work: %s",
                      v->violations[0]->message);
            builds_details(&fault, v);
            approval_fail(p->request, "custom build refused", &fault);
        } else {
            Berth__Request *req = NULL;
            if (requests_create_build(approval_store(p->approval), approval_limits(p->approval),
                                      &p->ask, p->admin, rid, v, &req, &fault) != 0)
                approval_fail(p->request, "create request refused", &fault);
            else {
                log_info(rid, "request accepted", "{s:s, s:s, s:s, s:s, s:i, s:s}", "request",
                         req->id, "state", req->state, "os", p->ask.os, "image", v->image->name,
                         "count", req->count, "group", req->group);
                bus_reply(p->request, &req->base);
                protobuf_c_message_free_unpacked(&req->base, NULL);
            }
        }
    } else if (v)
        approval_fail(p->request, "build check failed", &fault);
    else
        approval_fail(p->request, "build check failed", &fault);
    if (v)
        protobuf_c_message_free_unpacked(&v->base, NULL);
    s_pending_free(&p);
}

void builds_begin(approval_t *approval, bus_request_t *request, const Berth__CreateRequest *msg,
                  const char *owner, int admin)
{
    store_t *store = approval_store(approval);
    const policy_t *policy = approval_limits(approval);
    fault_t fault = { 0 };
    int custom = !msg->template_ || !*msg->template_;
    int count = 0;
    s_pending_t *p = calloc(1, sizeof *p);
    if (!p) {
        bus_reply_error(request, "INTERNAL", "out of memory");
        return;
    }
    p->approval = approval;
    p->admin = admin;
    p->ask = *msg;
    util_strlcpy(p->owner, owner ? owner : "", sizeof p->owner);
    p->ask.owner = p->owner;
    Berth__ValidateBuild ask = BERTH__VALIDATE_BUILD__INIT;
    Berth__Resources flavor = BERTH__RESOURCES__INIT;
    Berth__Template *tmpl = NULL;
    int rc = 0;
    int described = msg->n_applications || msg->vcpus || msg->ram_mb || msg->disk_gb ||
                    (msg->os_version && *msg->os_version);
    if (!custom && ((msg->os && *msg->os) || described))
        rc = error_field(&fault,
                         msg->os && *msg->os   ? "os"
                         : msg->n_applications ? "applications"
                         : msg->vcpus          ? "vcpus"
                         : msg->ram_mb         ? "ram_mb"
                         : msg->disk_gb        ? "disk_gb"
                                               : "os_version",
                         "a request names a template or describes its machine (os, "
                         "applications, vcpus, ram_mb, disk_gb), not both");
    if (rc == 0 && custom)
        rc = s_check_machine(msg, &fault);
    if (rc == 0 && !(msg->validate_only && (!msg->name || !*msg->name)))
        rc = policy_check_vm_name(msg->name, &fault);
    if (rc == 0 && (count = policy_count(policy, msg->count, &fault)) < 0)
        rc = -1;
    if (rc == 0)
        rc = policy_check_placement(msg->placement, &fault);
    if (rc == 0)
        rc = requests_group(store, msg->group, owner, admin, p->group, &fault);
    if (rc == 0 && !custom && catalog_find(store, msg->template_, &tmpl, &fault) == 0) {
        util_strlcpy(p->template_name, tmpl->name, sizeof p->template_name);
        Berth__Group *g = NULL;
        if (groups_get(store, p->group, &g, &fault) != 0)
            rc = -1;
        else {
            p->offered = groups_offers(g, tmpl);
            protobuf_c_message_free_unpacked(&g->base, NULL);
        }
    } else if (rc == 0 && !custom)
        rc = -1;
    if (rc != 0) {
        if (tmpl)
            protobuf_c_message_free_unpacked(&tmpl->base, NULL);
        free(p);
        approval_fail(request, "create request refused", &fault);
        return;
    }
    p->count = count;
    p->ask.group = p->group;
    if (custom) {
        ask.os = msg->os;
        ask.os_version = msg->os_version;
        ask.applications = msg->applications;
        ask.n_applications = msg->n_applications;
        flavor.vcpus = msg->vcpus;
        flavor.ram_mb = msg->ram_mb;
        flavor.disk_gb = msg->disk_gb;
    } else {
        ask.os = tmpl->os;
        ask.image = tmpl->image;
        flavor.vcpus = tmpl->vcpus;
        flavor.ram_mb = tmpl->ram_mb;
        flavor.disk_gb = tmpl->disk_gb;
    }
    ask.flavor = &flavor;
    p->request = bus_request_defer(request);
    const char *rid = p->request ? bus_request_envelope(p->request)->request_id : NULL;
    if (!p->request) {
        bus_reply_error(request, "INTERNAL", "out of memory");
        free(p);
    } else if (bus_client_send(approval_client(approval), "scheduler", &ask.base, rid,
                               (int)policy->build_timeout_ms, s_on_verdict, p, NULL) != 0) {
        bus_reply_error(p->request, "UNAVAILABLE", "no scheduler to judge the request; try again");
        s_pending_free(&p);
    }
    if (tmpl)
        protobuf_c_message_free_unpacked(&tmpl->base, NULL);
}
