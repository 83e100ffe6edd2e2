/*  groups: groups and memberships in Redis (see groups.h for the keys). Names are unique by
    the name hash, checked in the same model_tx that writes the group, as catalog.c does for
    templates. A caller's rights on a group come from their membership role (manager manages
    members) or the platform role admin; operators read every group, like admins. */
#include "groups.h"
#include "catalog.h"
#include "clock.h"
#include "decide.h"
#include "approval.h"
#include "keys.h"
#include "log.h"
#include "lua_scripts.h"
#include "model.h"
#include "policy.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_PARENT_DEPTH 16 /* a parent chain longer than this is refused */

static int s_is_role(const char *role)
{
    return role && (streq(role, "member") || streq(role, "manager") || streq(role, "auditor"));
}

static int s_printable(const char *text, size_t max)
{
    size_t len = strlen(text);
    if (len > max)
        return 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f)
            return 0;
    return 1;
}

static int s_check_quota(const char *field, const Berth__Quota *q, fault_t *fault)
{
    if (!q)
        return 0;
    if (q->vms < 0 || q->vcpus < 0 || q->ram_mb < 0 || q->disk_gb < 0)
        return error_field(fault, field, "%s values must not be negative", field);
    if (q->ram_mb > (int64_t)1 << 40 || q->disk_gb > (int64_t)1 << 40)
        return error_field(fault, field, "%s values must be at most %lld", field,
                           (long long)1 << 40);
    return 0;
}

static int s_check_id(const char *field, const char *id, fault_t *fault)
{
    if (!id || !util_is_uuid(id))
        return error_field(fault, field, "%s must be a group id", field);
    return 0;
}

/* The fields a client may set, checked. */
static int s_check_fields(const Berth__Group *g, fault_t *fault)
{
    if (g->cost_centre && !s_printable(g->cost_centre, GROUPS_COST_CENTRE_MAX))
        return error_field(fault, "cost_centre",
                           "cost_centre must be at most %d printable characters",
                           GROUPS_COST_CENTRE_MAX);
    if (g->description && !s_printable(g->description, GROUPS_TEXT_MAX))
        return error_field(fault, "description",
                           "description must be at most %d bytes without control characters",
                           GROUPS_TEXT_MAX);
    if (g->parent && *g->parent && s_check_id("parent", g->parent, fault) != 0)
        return -1;
    if (decide_check_policy("approval_policy", g->approval_policy, fault) != 0)
        return -1;
    if (g->auto_max_vcpus < 0 || g->auto_max_ram_mb < 0 || g->auto_max_ram_mb > (int64_t)1 << 40)
        return error_field(fault, g->auto_max_vcpus < 0 ? "auto_max_vcpus" : "auto_max_ram_mb",
                           "auto-approval sizes must be from 0 to %lld", (long long)1 << 40);
    /* Lease policy (0: the platform's setting): taskmgr reads it (services/taskmgr/leases.c). */
    if (g->max_lease_days < 0 || g->max_lease_days > GROUPS_LEASE_DAYS_MAX)
        return error_field(fault, "max_lease_days", "max_lease_days must be from 0 to %d",
                           GROUPS_LEASE_DAYS_MAX);
    if (g->max_extensions < 0 || g->max_extensions > GROUPS_EXTENSIONS_MAX)
        return error_field(fault, "max_extensions", "max_extensions must be from 0 to %d",
                           GROUPS_EXTENSIONS_MAX);
    if (g->lease_notice_ms < 0 || g->lease_notice_ms > (int64_t)GROUPS_LEASE_DAYS_MAX * 86400000)
        return error_field(fault, "lease_notice_hours", "lease_notice_hours must be from 0 to %d",
                           GROUPS_LEASE_DAYS_MAX * 24);
    if (g->charging_model && *g->charging_model && !streq(g->charging_model, "allocation") &&
        !streq(g->charging_model, "reservation"))
        return error_field(fault, "charging_model",
                           "charging_model must be allocation or reservation");
    return s_check_quota("quota", g->quota, fault) ||
           s_check_quota("user_quota", g->user_quota, fault) ||
           s_check_quota("auto_growth_max", g->auto_growth_max, fault);
}

/* The templates g offers: at most LIMIT_GROUP_TEMPLATES_MAX, each a template of the catalog
   named by its name, none twice. */
static int s_check_templates(store_t *store, const Berth__Group *g, fault_t *fault)
{
    if (g->n_templates > LIMIT_GROUP_TEMPLATES_MAX)
        return error_field(fault, "templates", "a group offers at most %d templates",
                           LIMIT_GROUP_TEMPLATES_MAX);
    for (size_t i = 0; i < g->n_templates; i++) {
        const char *name = g->templates[i];
        if (!name || !policy_is_template_name(name))
            return error_field(fault, "templates", "templates must be template names");
        for (size_t k = 0; k < i; k++)
            if (streq(g->templates[k], name))
                return error_field(fault, "templates", "template %s is named twice", name);
        Berth__Template *t = NULL;
        if (catalog_find(store, name, &t, fault) != 0) {
            if (streq(fault->code, "NOT_FOUND"))
                error_field(fault, "templates", "no template %s", name);
            return -1;
        }
        int by_name = streq(t->name, name);
        protobuf_c_message_free_unpacked(&t->base, NULL);
        if (!by_name)
            return error_field(fault, "templates", "name template %s by its name", name);
    }
    return 0;
}

int groups_offers(const Berth__Group *g, const Berth__Template *t)
{
    if (g->n_templates == 0)
        return 1;
    for (size_t i = 0; i < g->n_templates; i++)
        if (streq(g->templates[i], t->name))
            return 1;
    return 0;
}

int groups_check_new(const Berth__Group *group, fault_t *fault)
{
    if (!group)
        return error_field(fault, "group", "group is required");
    if (!group->name || !policy_is_template_name(group->name))
        return error_field(fault, "name",
                           "name must be 1 to %d of a-z, 0-9, '.', '_', '-', starting with a "
                           "letter or digit, and not an id",
                           GROUPS_NAME_MAX);
    return s_check_fields(group, fault);
}

int groups_get(store_t *store, const char *id, Berth__Group **out_p, fault_t *fault)
{
    if (s_check_id("id", id, fault) != 0)
        return -1;
    char key[KEYS_MAX];
    ProtobufCMessage *msg = NULL;
    int rc =
        model_load(store, &berth__group__descriptor, keys_build(key, KEYS_GROUP, id, NULL), &msg);
    if (rc == MODEL_NOT_FOUND)
        return error_set(fault, "NOT_FOUND", "no group %s", id);
    if (rc != 0)
        return fault_store(fault, store);
    *out_p = (Berth__Group *)msg;
    return 0;
}

int groups_usage(store_t *store, const char *id, Berth__Quota *used, fault_t *fault)
{
    char key[KEYS_MAX];
    redisReply *r = store_command(store, "HMGET %s vms vcpus ram_mb disk_gb",
                                  keys_build(key, KEYS_GROUP_USAGE, id, NULL));
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 4) {
        if (r)
            freeReplyObject(r);
        return fault_store(fault, store);
    }
    int64_t v[4] = { 0 };
    for (size_t i = 0; i < 4; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING &&
            util_parse_int(r->element[i]->str, 0, INT64_MAX, &v[i]) != 0)
            v[i] = 0;
    freeReplyObject(r);
    used->vms = (int32_t)v[0];
    used->vcpus = (int32_t)v[1];
    used->ram_mb = v[2];
    used->disk_gb = v[3];
    return 0;
}

int groups_find(store_t *store, const char *ref, Berth__Group **out_p, fault_t *fault)
{
    if (ref && util_is_uuid(ref))
        return groups_get(store, ref, out_p, fault);
    if (!ref || !policy_is_template_name(ref))
        return error_field(fault, "group", "group must be a group id or name");
    char key[KEYS_MAX], id[UTIL_ID_LEN] = "";
    redisReply *r = store_command(store, "HGET %s id", keys_build(key, KEYS_GROUP_NAME, ref, NULL));
    if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL)) {
        if (r)
            freeReplyObject(r);
        return fault_store(fault, store);
    }
    if (r->type == REDIS_REPLY_STRING)
        util_strlcpy(id, r->str, sizeof id);
    freeReplyObject(r);
    if (!util_is_uuid(id))
        return error_set(fault, "NOT_FOUND", "no group %s", ref);
    return groups_get(store, id, out_p, fault);
}

int groups_ensure_default(store_t *store, fault_t *fault)
{
    Berth__Group *g = NULL;
    if (groups_find(store, GROUPS_DEFAULT, &g, fault) == 0) {
        protobuf_c_message_free_unpacked(&g->base, NULL);
        return 0;
    }
    if (!streq(fault->code, "NOT_FOUND"))
        return -1;
    Berth__Group want = BERTH__GROUP__INIT;
    want.name = GROUPS_DEFAULT;
    want.description = "where users in no group make their requests";
    if (groups_create(store, &want, "service:approval", &g, fault) == 0) {
        protobuf_c_message_free_unpacked(&g->base, NULL);
        return 0;
    }
    /* Another approval instance made it first. */
    return streq(fault->code, "CONFLICT") ? 0 : -1;
}

/* parent exists, and (when child is an existing group) is neither child nor below it. */
static int s_check_parent(store_t *store, const char *parent, const char *child, fault_t *fault)
{
    char at[UTIL_ID_LEN];
    util_strlcpy(at, parent, sizeof at);
    for (int depth = 0; *at; depth++) {
        if (depth >= S_PARENT_DEPTH)
            return error_field(fault, "parent", "groups nest at most %d deep", S_PARENT_DEPTH);
        if (child && streq(at, child))
            return error_field(fault, "parent", "a group cannot be inside itself");
        Berth__Group *g = NULL;
        if (groups_get(store, at, &g, fault) != 0) {
            if (streq(fault->code, "NOT_FOUND"))
                error_detail(fault, "field", "parent");
            return -1;
        }
        util_strlcpy(at, g->parent ? g->parent : "", sizeof at);
        protobuf_c_message_free_unpacked(&g->base, NULL);
    }
    return 0;
}

void groups_tx_create(model_tx_t *tx, const Berth__Group *g, const char *actor)
{
    char key[KEYS_MAX], name_key[KEYS_MAX], parent_key[KEYS_MAX], children[KEYS_MAX], at[24];
    keys_build(key, KEYS_GROUP, g->id, NULL);
    keys_build(name_key, KEYS_GROUP_NAME, g->name, NULL);
    snprintf(at, sizeof at, "%lld", (long long)g->created_ms);
    model_tx_check(tx, name_key, "id", "");
    model_tx_check_version(tx, key, 0);
    if (g->parent && *g->parent) { /* still there when the group is written, and knows it */
        model_tx_check(tx, keys_build(parent_key, KEYS_GROUP, g->parent, NULL), "id", g->parent);
        model_tx_sadd(tx, keys_build(children, KEYS_GROUP_CHILDREN, g->parent, NULL), g->id);
    }
    model_tx_put(tx, key, &g->base);
    model_tx_hset(tx, name_key, "id", g->id);
    model_tx_zadd(tx, KEYS_GROUPS, 0, g->id);
    model_tx_event(tx, "group.created", "key", key, "group", g->id, "name", g->name, "actor", actor,
                   "at_ms", at, NULL);
}

void groups_init_new(Berth__Group *g, const Berth__Group *group, char id[UTIL_ID_LEN])
{
    util_uuid(id);
    berth__group__init(g);
    g->id = id;
    g->name = group->name;
    g->cost_centre = group->cost_centre ? group->cost_centre : "";
    g->description = group->description ? group->description : "";
    g->parent = group->parent ? group->parent : "";
    g->quota = group->quota;
    g->user_quota = group->user_quota;
    g->approval_policy = group->approval_policy ? group->approval_policy : "";
    g->auto_max_vcpus = group->auto_max_vcpus;
    g->auto_max_ram_mb = group->auto_max_ram_mb;
    g->charging_model = group->charging_model ? group->charging_model : "";
    g->auto_growth_max = group->auto_growth_max;
    g->templates = group->templates;
    g->n_templates = group->n_templates;
    g->max_lease_days = group->max_lease_days;
    g->max_extensions = group->max_extensions;
    g->lease_notice_ms = group->lease_notice_ms;
    g->created_ms = clock_now_ms();
    g->version = 1;
}

int groups_create(store_t *store, const Berth__Group *group, const char *actor,
                  Berth__Group **out_p, fault_t *fault)
{
    if (groups_check_new(group, fault) != 0)
        return -1;
    if (group->parent && *group->parent && s_check_parent(store, group->parent, NULL, fault) != 0)
        return -1;
    if (s_check_templates(store, group, fault) != 0)
        return -1;
    char id[UTIL_ID_LEN];
    Berth__Group g;
    groups_init_new(&g, group, id);
    model_tx_t *tx = model_tx_new();
    if (!tx)
        return error_set(fault, "INTERNAL", "out of memory");
    groups_tx_create(tx, &g, actor);
    const char *why = NULL;
    int rc = model_tx_commit(tx, store, &why);
    model_tx_destroy(&tx);
    if (rc == MODEL_CONFLICT) {
        if (*g.parent) /* the name, or a parent deleted meanwhile: read again to say which */
            if (s_check_parent(store, g.parent, NULL, fault) != 0)
                return -1;
        error_set(fault, "CONFLICT", "group '%s' already exists", g.name);
        return error_detail(fault, "field", "name");
    }
    if (rc != 0)
        return rc < 0 ? fault_store(fault, store) : error_set(fault, "INTERNAL", "%s", why);
    return groups_get(store, id, out_p, fault);
}

int groups_name_taken(store_t *store, const char *name, fault_t *fault)
{
    char key[KEYS_MAX];
    redisReply *r =
        store_command(store, "HGET %s id", keys_build(key, KEYS_GROUP_NAME, name, NULL));
    if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL)) {
        if (r)
            freeReplyObject(r);
        return fault_store(fault, store);
    }
    int taken = r->type == REDIS_REPLY_STRING && *r->str;
    freeReplyObject(r);
    if (!taken)
        return 0;
    error_set(fault, "CONFLICT", "group '%s' already exists", name);
    error_detail(fault, "field", "name");
    return 1;
}

void groups_tx_add_manager(model_tx_t *tx, const char *group, const char *user, const char *actor)
{
    char members[KEYS_MAX], user_key[KEYS_MAX], user_groups[KEYS_MAX], key[KEYS_MAX], at[24];
    snprintf(at, sizeof at, "%lld", (long long)clock_now_ms());
    keys_build(user_key, KEYS_USER, user, NULL);
    model_tx_check(tx, user_key, "name", user); /* the user still exists */
    model_tx_hset(tx, keys_build(members, KEYS_GROUP_MEMBERS, group, NULL), user, "manager");
    model_tx_hset(tx, keys_build(user_groups, KEYS_USER_GROUPS, user, NULL), group, "manager");
    model_tx_event(tx, "group.member", "key", keys_build(key, KEYS_GROUP, group, NULL), "group",
                   group, "user", user, "change", "add", "role", "manager", "from", "", "actor",
                   actor, "at_ms", at, NULL);
}

int groups_role(store_t *store, const char *group, const char *user, char role[16], fault_t *fault)
{
    char key[KEYS_MAX];
    role[0] = '\0';
    redisReply *r = store_command(
        store, "HGET %s %s", keys_build(key, KEYS_USER_GROUPS, user, NULL), group ? group : "");
    if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL)) {
        if (r)
            freeReplyObject(r);
        return fault_store(fault, store);
    }
    if (r->type == REDIS_REPLY_STRING)
        util_strlcpy(role, r->str, 16);
    freeReplyObject(r);
    return 0;
}

void groups_list_destroy(Berth__GroupList **list_p)
{
    if (list_p && *list_p) {
        Berth__GroupList *list = *list_p;
        for (size_t i = 0; i < list->n_groups; i++)
            protobuf_c_message_free_unpacked(&list->groups[i]->base, NULL);
        free(list->groups);
        if (list->next_marker != protobuf_c_empty_string)
            free(list->next_marker);
        free(list);
        *list_p = NULL;
    }
}

static int s_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int groups_list(store_t *store, const char *user, int limit, const char *marker,
                Berth__GroupList **list_p, fault_t *fault)
{
    if (limit < 0 || limit > GROUPS_PAGE_MAX)
        return error_field(fault, "limit", "limit must be 1 to %d", GROUPS_PAGE_MAX);
    if (limit == 0)
        limit = GROUPS_PAGE_DEFAULT;
    if (marker && *marker && s_check_id("marker", marker, fault) != 0)
        return -1;
    const char *after = marker ? marker : "";
    redisReply *r;
    char key[KEYS_MAX];
    if (user)
        r = store_command(store, "HKEYS %s", keys_build(key, KEYS_USER_GROUPS, user, NULL));
    else if (*after)
        r = store_command(store, "ZRANGEBYLEX %s (%s + LIMIT 0 %d", KEYS_GROUPS, after, limit + 1);
    else
        r = store_command(store, "ZRANGEBYLEX %s - + LIMIT 0 %d", KEYS_GROUPS, limit + 1);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return fault_store(fault, store);
    }
    size_t n = r->elements;
    char **ids = calloc(n ? n : 1, sizeof *ids);
    Berth__GroupList *list = calloc(1, sizeof *list);
    if (list) {
        berth__group_list__init(list);
        list->groups = calloc((size_t)limit, sizeof *list->groups);
    }
    if (!ids || !list || !list->groups) {
        free(ids);
        if (list)
            free(list->groups);
        free(list);
        freeReplyObject(r);
        return error_set(fault, "INTERNAL", "out of memory");
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING && strcmp(r->element[i]->str, after) > 0)
            ids[m++] = r->element[i]->str;
    qsort(ids, m, sizeof *ids, s_cmp);
    int rc = 0;
    size_t i = 0;
    for (; i < m && list->n_groups < (size_t)limit && rc == 0; i++) {
        ProtobufCMessage *msg = NULL;
        int found = model_load(store, &berth__group__descriptor,
                               keys_build(key, KEYS_GROUP, ids[i], NULL), &msg);
        if (found == 0)
            list->groups[list->n_groups++] = (Berth__Group *)msg;
        else if (found != MODEL_NOT_FOUND)
            rc = fault_store(fault, store);
    }
    /* More after this page: the next one starts after its last group. */
    if (rc == 0 && i < m && list->n_groups > 0)
        list->next_marker = strdup(list->groups[list->n_groups - 1]->id);
    free(ids);
    freeReplyObject(r);
    if (rc != 0) {
        groups_list_destroy(&list);
        return -1;
    }
    *list_p = list;
    return 0;
}

int groups_update(store_t *store, const char *id, const Berth__Group *update, char **fields,
                  size_t n_fields, int64_t version, const char *actor, Berth__Group **out_p,
                  fault_t *fault)
{
    if (!update)
        return error_field(fault, "group", "group is required");
    if (n_fields == 0)
        return error_field(fault, "fields", "name at least one field to change");
    if (s_check_fields(update, fault) != 0)
        return -1;
    Berth__Group *g = NULL;
    if (groups_get(store, id, &g, fault) != 0)
        return -1;
    Berth__Group after = *g;
    int parent_changed = 0;
    for (size_t i = 0; i < n_fields; i++) {
        const char *f = fields[i];
        if (streq(f, "cost_centre"))
            after.cost_centre = update->cost_centre ? update->cost_centre : "";
        else if (streq(f, "description"))
            after.description = update->description ? update->description : "";
        else if (streq(f, "quota"))
            after.quota = update->quota; /* absent: no limit */
        else if (streq(f, "user_quota"))
            after.user_quota = update->user_quota; /* absent: no limit per member */
        else if (streq(f, "approval_policy"))
            after.approval_policy = update->approval_policy ? update->approval_policy : "";
        else if (streq(f, "auto_max_vcpus"))
            after.auto_max_vcpus = update->auto_max_vcpus;
        else if (streq(f, "auto_max_ram_mb"))
            after.auto_max_ram_mb = update->auto_max_ram_mb;
        else if (streq(f, "charging_model"))
            after.charging_model = update->charging_model ? update->charging_model : "";
        else if (streq(f, "auto_growth_max"))
            after.auto_growth_max = update->auto_growth_max; /* absent: no automatic growth */
        else if (streq(f, "templates")) {
            if (s_check_templates(store, update, fault) != 0) {
                protobuf_c_message_free_unpacked(&g->base, NULL);
                return -1;
            }
            after.templates = update->templates; /* none: every template */
            after.n_templates = update->n_templates;
        } else if (streq(f, "max_lease_days"))
            after.max_lease_days = update->max_lease_days;
        else if (streq(f, "max_extensions"))
            after.max_extensions = update->max_extensions;
        else if (streq(f, "lease_notice_ms"))
            after.lease_notice_ms = update->lease_notice_ms;
        else if (streq(f, "parent")) {
            after.parent = update->parent ? update->parent : "";
            parent_changed = 1;
        } else {
            protobuf_c_message_free_unpacked(&g->base, NULL);
            return error_field(fault, "fields",
                               "'%.64s' cannot be changed (cost_centre, description, parent, "
                               "quota, user_quota, approval_policy, auto_max_vcpus, "
                               "auto_max_ram_mb, charging_model, auto_growth_max, templates, "
                               "max_lease_days, max_extensions, lease_notice_ms can)",
                               f);
        }
    }
    if (parent_changed && *after.parent && s_check_parent(store, after.parent, id, fault) != 0) {
        protobuf_c_message_free_unpacked(&g->base, NULL);
        return -1;
    }
    char key[KEYS_MAX], parent_key[KEYS_MAX], children[KEYS_MAX], at[24], v[24];
    keys_build(key, KEYS_GROUP, id, NULL);
    snprintf(at, sizeof at, "%lld", (long long)clock_now_ms());
    snprintf(v, sizeof v, "%lld", (long long)g->version + 1);
    model_tx_t *tx = model_tx_new();
    if (!tx) {
        protobuf_c_message_free_unpacked(&g->base, NULL);
        return error_set(fault, "INTERNAL", "out of memory");
    }
    model_tx_check_version(tx, key, g->version);
    model_tx_put_fields(tx, key, &after.base, "cost_centre", "description", "parent", "quota",
                        "user_quota", "approval_policy", "auto_max_vcpus", "auto_max_ram_mb",
                        "charging_model", "auto_growth_max", "templates", "max_lease_days",
                        "max_extensions", "lease_notice_ms", NULL);
    if (after.parent && *after.parent) { /* still there, and knows its child */
        model_tx_check(tx, keys_build(parent_key, KEYS_GROUP, after.parent, NULL), "id",
                       after.parent);
        model_tx_sadd(tx, keys_build(children, KEYS_GROUP_CHILDREN, after.parent, NULL), id);
    }
    model_tx_hset(tx, key, "version", v);
    model_tx_event(tx, "group.updated", "key", key, "group", id, "actor", actor, "version", v,
                   "at_ms", at, NULL);
    int rc = version && version != g->version ? MODEL_CONFLICT : model_tx_commit(tx, store, NULL);
    model_tx_destroy(&tx);
    protobuf_c_message_free_unpacked(&g->base, NULL);
    if (rc == MODEL_CONFLICT)
        return error_set(fault, "CONFLICT", "group %s changed meanwhile: read it again", id);
    if (rc != 0)
        return rc < 0 ? fault_store(fault, store) : error_set(fault, "INTERNAL", "refused");
    return groups_get(store, id, out_p, fault);
}

/* ---- webhook ---------------------------------------------------------------------------- */

int groups_webhook_read(store_t *store, Berth__Group *g, fault_t *fault)
{
    char key[KEYS_MAX];
    redisReply *r = store_command(store, "HMGET %s url secret updated_ms updated_by",
                                  keys_build(key, KEYS_GROUP_WEBHOOK, g->id, NULL));
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 4) {
        if (r)
            freeReplyObject(r);
        return fault_store(fault, store);
    }
    int rc = 0;
    if (r->element[0]->type == REDIS_REPLY_STRING && r->element[0]->len > 0) {
        Berth__GroupWebhook *w = malloc(sizeof *w);
        if (w) {
            berth__group_webhook__init(w);
            w->url = strdup(r->element[0]->str);
            w->secret_set = r->element[1]->type == REDIS_REPLY_STRING && r->element[1]->len > 0;
            int64_t at = 0;
            if (r->element[2]->type == REDIS_REPLY_STRING &&
                util_parse_int(r->element[2]->str, 0, INT64_MAX, &at) == 0)
                w->updated_ms = at;
            w->updated_by =
                strdup(r->element[3]->type == REDIS_REPLY_STRING ? r->element[3]->str : "");
        }
        if (!w || !w->url || !w->updated_by) {
            if (w) {
                free(w->url);
                free(w->updated_by);
                free(w);
            }
            rc = error_set(fault, "INTERNAL", "out of memory");
        } else {
            groups_webhook_free(g);
            g->webhook = w;
        }
    }
    freeReplyObject(r);
    return rc;
}

void groups_webhook_free(Berth__Group *g)
{
    if (g && g->webhook) {
        protobuf_c_message_free_unpacked(&g->webhook->base, NULL);
        g->webhook = NULL;
    }
}

int groups_set_webhook(store_t *store, const char *id, const char *url, const char *secret,
                       int clear, const char *actor, Berth__Group **out_p, fault_t *fault)
{
    const char *why = NULL;
    url = url ? url : "";
    secret = secret ? secret : "";
    if (!clear && util_webhook_check(url, LIMIT_WEBHOOK_URL_MAX, &why) != 0)
        return error_field(fault, "url", "%s", why);
    if (!clear && *secret &&
        (strlen(secret) < LIMIT_WEBHOOK_SECRET_MIN ||
         !s_printable(secret, LIMIT_WEBHOOK_SECRET_MAX)))
        return error_field(fault, "secret", "secret must be %d to %d printable characters",
                           LIMIT_WEBHOOK_SECRET_MIN, LIMIT_WEBHOOK_SECRET_MAX);
    Berth__Group *g = NULL;
    if (groups_get(store, id, &g, fault) != 0)
        return -1;
    char key[KEYS_MAX], hook[KEYS_MAX], at[24];
    keys_build(key, KEYS_GROUP, id, NULL);
    keys_build(hook, KEYS_GROUP_WEBHOOK, id, NULL);
    snprintf(at, sizeof at, "%lld", (long long)clock_now_ms());
    int rc = 0;
    if (!clear && !*secret) { /* keep the secret set, which must exist */
        redisReply *r = store_command(store, "HEXISTS %s secret", hook);
        if (!r || r->type != REDIS_REPLY_INTEGER)
            rc = fault_store(fault, store);
        else if (r->integer == 0)
            rc = error_field(fault, "secret",
                             "secret is required: the group has no webhook secret yet");
        if (r)
            freeReplyObject(r);
    }
    model_tx_t *tx = rc == 0 ? model_tx_new() : NULL;
    if (rc == 0 && !tx)
        rc = error_set(fault, "INTERNAL", "out of memory");
    if (rc == 0) {
        model_tx_check(tx, key, "id", id); /* the group is still there */
        if (clear)
            model_tx_del(tx, hook);
        else {
            model_tx_hset(tx, hook, "url", url);
            if (*secret)
                model_tx_hset(tx, hook, "secret", secret);
            model_tx_hset(tx, hook, "updated_ms", at);
            model_tx_hset(tx, hook, "updated_by", actor);
        }
        model_tx_event(tx, "group.webhook", "key", key, "group", id, "change",
                       clear ? "clear" : "set", "actor", actor, "at_ms", at, NULL);
        int t = model_tx_commit(tx, store, NULL);
        if (t == MODEL_CONFLICT)
            rc = error_set(fault, "NOT_FOUND", "no group %s", id);
        else if (t != 0)
            rc = t < 0 ? fault_store(fault, store) : error_set(fault, "INTERNAL", "refused");
    }
    model_tx_destroy(&tx);
    if (rc == 0 && groups_webhook_read(store, g, fault) != 0)
        rc = -1;
    if (rc != 0) {
        groups_webhook_free(g);
        protobuf_c_message_free_unpacked(&g->base, NULL);
        return -1;
    }
    *out_p = g;
    return 0;
}

/* SMEMBERS of key: 0 and *out (caller frees), or -1 (fault set). */
static int s_members_of(store_t *store, const char *key, redisReply **out, fault_t *fault)
{
    redisReply *r = store_command(store, "SMEMBERS %s", key);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return fault_store(fault, store);
    }
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type != REDIS_REPLY_STRING) {
            freeReplyObject(r);
            return fault_store(fault, store);
        }
    *out = r;
    return 0;
}

static int s_by_str(const void *a, const void *b)
{
    return strcmp((*(redisReply *const *)a)->str, (*(redisReply *const *)b)->str);
}

/* The owners of the VMs vm_ids names (one per VM that has one, sorted), as an array reply
   in *out (caller frees). 0, or -1 (fault set). */
static int s_owners(store_t *store, const redisReply *vm_ids, redisReply **out, fault_t *fault)
{
    size_t m = vm_ids->elements;
    *out = NULL;
    if (m == 0)
        return 0;
    char(*keys)[KEYS_MAX] = calloc(m + 1, sizeof *keys);
    const char **argv = calloc(m + 2, sizeof *argv);
    if (!keys || !argv) {
        free(keys);
        free(argv);
        return error_set(fault, "INTERNAL", "out of memory");
    }
    for (size_t i = 0; i < m; i++)
        argv[i] = keys_build(keys[i], KEYS_VM, vm_ids->element[i]->str, NULL);
    argv[m] = "owner";
    redisReply *r = store_run(store, &lua_hash_rows, (int)m, (int)m + 1, argv);
    free(keys);
    free(argv);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != m) {
        if (r)
            freeReplyObject(r);
        return fault_store(fault, store);
    }
    /* Keep the rows with an owner, flattened into the reply's own element array. */
    size_t kept = 0;
    for (size_t i = 0; i < m; i++) {
        redisReply *row = r->element[i];
        if (row->type == REDIS_REPLY_ARRAY && row->elements == 1 &&
            row->element[0]->type == REDIS_REPLY_STRING && *row->element[0]->str &&
            strlen(row->element[0]->str) <= LIMIT_USER_NAME_MAX) {
            redisReply *owner = row->element[0];
            row->element[0] = NULL;
            row->elements = 0;
            freeReplyObject(row);
            r->element[kept++] = owner;
        } else
            freeReplyObject(row);
    }
    r->elements = kept;
    if (kept > 1)
        qsort(r->element, kept, sizeof *r->element, s_by_str);
    *out = r;
    return 0;
}

int groups_delete(store_t *store, const char *id, const char *actor, Berth__Group **out_p,
                  fault_t *fault)
{
    Berth__Group *g = NULL;
    if (groups_get(store, id, &g, fault) != 0)
        return -1;
    char key[KEYS_MAX], members[KEYS_MAX], name_key[KEYS_MAX], children[KEYS_MAX], vms[KEYS_MAX],
        at[24], n_text[24];
    snprintf(at, sizeof at, "%lld", (long long)clock_now_ms());
    keys_build(children, KEYS_GROUP_CHILDREN, id, NULL);
    keys_build(vms, KEYS_GROUP_VMS, id, NULL);
    /* The sets as read now; the script refuses (CHANGED) if either changed since. */
    redisReply *kids = NULL, *vm_ids = NULL;
    if (s_members_of(store, children, &kids, fault) != 0 ||
        s_members_of(store, vms, &vm_ids, fault) != 0) {
        if (kids)
            freeReplyObject(kids);
        protobuf_c_message_free_unpacked(&g->base, NULL);
        return -1;
    }
    size_t n = kids->elements, m = vm_ids->elements;
    snprintf(n_text, sizeof n_text, "%zu", n);
    /* The usage counters go with the group: the group's, and each VM owner's in it (the
       only members ever charged). */
    redisReply *owners = NULL;
    int rc = s_owners(store, vm_ids, &owners, fault);
    size_t u = owners ? owners->elements : 0;
    const char **argv = calloc(13 + 2 * (n + m) + u, sizeof *argv);
    char webhook[KEYS_MAX];
    char(*object_keys)[KEYS_MAX] = calloc(n + m + u + 2, sizeof *object_keys);
    if (rc == 0 && (!argv || !object_keys))
        rc = error_set(fault, "INTERNAL", "out of memory");
    redisReply *r = NULL;
    if (rc == 0) {
        size_t k = 0;
        argv[k++] = keys_build(key, KEYS_GROUP, id, NULL);
        argv[k++] = keys_build(members, KEYS_GROUP_MEMBERS, id, NULL);
        argv[k++] = keys_build(name_key, KEYS_GROUP_NAME, g->name, NULL);
        argv[k++] = KEYS_GROUPS;
        argv[k++] = KEYS_EVENTS;
        argv[k++] = children;
        argv[k++] = vms;
        for (size_t i = 0; i < n; i++)
            argv[k++] = keys_build(object_keys[i], KEYS_GROUP, kids->element[i]->str, NULL);
        for (size_t i = 0; i < m; i++)
            argv[k++] = keys_build(object_keys[n + i], KEYS_VM, vm_ids->element[i]->str, NULL);
        argv[k++] = keys_build(object_keys[n + m], KEYS_GROUP_USAGE, id, NULL);
        argv[k++] = keys_build(webhook, KEYS_GROUP_WEBHOOK, id, NULL);
        size_t nu = 0; /* distinct owners: the reply is sorted */
        for (size_t i = 0; i < u; i++)
            if (i == 0 || strcmp(owners->element[i]->str, owners->element[i - 1]->str))
                argv[k++] = keys_build(object_keys[n + m + 1 + nu++], KEYS_GROUP_USER_USAGE, id,
                                       owners->element[i]->str);
        int nkeys = (int)k;
        argv[k++] = id;
        argv[k++] = at;
        argv[k++] = actor;
        argv[k++] = n_text;
        for (size_t i = 0; i < n; i++)
            argv[k++] = kids->element[i]->str;
        for (size_t i = 0; i < m; i++)
            argv[k++] = vm_ids->element[i]->str;
        r = store_run(store, &lua_groups_delete, nkeys, (int)k, argv);
        if (!r || (r->type != REDIS_REPLY_STATUS && r->type != REDIS_REPLY_STRING))
            rc = fault_store(fault, store);
        else if (streq(r->str, "NO_GROUP"))
            rc = error_set(fault, "NOT_FOUND", "no group %s", id);
        else if (streq(r->str, "HAS_MEMBERS"))
            rc = error_set(fault, "CONFLICT", "group %s still has members: remove them first", id);
        else if (streq(r->str, "HAS_RESERVATIONS"))
            rc = error_set(fault, "CONFLICT",
                           "group %s still holds reservations: remove them first (PUT "
                           "/v1/groups/{id}/reservations with none)",
                           id);
        else if (streq(r->str, "HAS_CHILDREN"))
            rc = error_set(fault, "CONFLICT",
                           "group %s still has groups inside it: delete or move them first", id);
        else if (streq(r->str, "HAS_VMS"))
            rc = error_set(fault, "CONFLICT",
                           "group %s still has VMs that are not disposed: dispose of them first",
                           id);
        else if (!streq(r->str, "DELETED"))
            rc = error_set(fault, "CONFLICT", "group %s changed meanwhile: try again", id);
    }
    if (r)
        freeReplyObject(r);
    if (owners)
        freeReplyObject(owners);
    free(object_keys);
    free(argv);
    freeReplyObject(kids);
    freeReplyObject(vm_ids);
    if (rc != 0) {
        protobuf_c_message_free_unpacked(&g->base, NULL);
        return -1;
    }
    *out_p = g;
    return 0;
}

int groups_member(store_t *store, const char *op, const char *group, const char *user,
                  const char *role, const char *actor, fault_t *fault)
{
    if (s_check_id("group", group, fault) != 0 || policy_check_owner("user", user, fault) != 0)
        return -1;
    if (!streq(op, "remove") && !s_is_role(role))
        return error_field(fault, "role", "role must be member, manager or auditor");
    char key[KEYS_MAX], members[KEYS_MAX], user_key[KEYS_MAX], user_groups[KEYS_MAX], at[24],
        max[16];
    snprintf(at, sizeof at, "%lld", (long long)clock_now_ms());
    snprintf(max, sizeof max, "%d", GROUPS_MEMBERS_MAX);
    const char *argv[] = { keys_build(key, KEYS_GROUP, group, NULL),
                           keys_build(members, KEYS_GROUP_MEMBERS, group, NULL),
                           keys_build(user_key, KEYS_USER, user, NULL),
                           keys_build(user_groups, KEYS_USER_GROUPS, user, NULL),
                           KEYS_EVENTS,
                           op,
                           group,
                           user,
                           role ? role : "",
                           at,
                           actor,
                           max };
    redisReply *r = store_run(store, &lua_groups_member, 5, 12, argv);
    int rc = 0;
    if (!r || (r->type != REDIS_REPLY_STATUS && r->type != REDIS_REPLY_STRING))
        rc = fault_store(fault, store);
    else if (streq(r->str, "NO_GROUP"))
        rc = error_set(fault, "NOT_FOUND", "no group %s", group);
    else if (streq(r->str, "NO_USER")) {
        error_set(fault, "NOT_FOUND", "no user '%s'", user);
        rc = error_detail(fault, "field", "user");
    } else if (streq(r->str, "MEMBER"))
        rc = error_set(fault, "CONFLICT", "'%s' is already a member of group %s", user, group);
    else if (streq(r->str, "NOT_MEMBER"))
        rc = error_set(fault, "NOT_FOUND", "'%s' is not a member of group %s", user, group);
    else if (streq(r->str, "FULL"))
        rc = error_set(fault, "CONFLICT", "group %s has %d members already", group,
                       GROUPS_MEMBERS_MAX);
    if (r)
        freeReplyObject(r);
    return rc;
}

void groups_members_destroy(Berth__MemberList **list_p)
{
    if (list_p && *list_p) {
        Berth__MemberList *list = *list_p;
        for (size_t i = 0; i < list->n_members; i++) {
            free(list->members[i]->group);
            free(list->members[i]->user);
            free(list->members[i]->role);
            free(list->members[i]);
        }
        free(list->members);
        free(list);
        *list_p = NULL;
    }
}

static int s_by_user(const void *a, const void *b)
{
    return strcmp((*(Berth__Membership *const *)a)->user, (*(Berth__Membership *const *)b)->user);
}

int groups_members(store_t *store, const char *group, Berth__MemberList **list_p, fault_t *fault)
{
    Berth__Group *g = NULL;
    if (groups_get(store, group, &g, fault) != 0)
        return -1;
    protobuf_c_message_free_unpacked(&g->base, NULL);
    char key[KEYS_MAX];
    redisReply *r =
        store_command(store, "HGETALL %s", keys_build(key, KEYS_GROUP_MEMBERS, group, NULL));
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return fault_store(fault, store);
    }
    Berth__MemberList *list = calloc(1, sizeof *list);
    size_t n = r->elements / 2;
    if (list) {
        berth__member_list__init(list);
        list->members = calloc(n ? n : 1, sizeof *list->members);
    }
    int rc = list && list->members ? 0 : -1;
    for (size_t i = 0; i < n && rc == 0; i++) {
        Berth__Membership *m = calloc(1, sizeof *m);
        if (!m) {
            rc = -1;
            break;
        }
        berth__membership__init(m);
        list->members[list->n_members++] = m;
        m->group = strdup(group);
        m->user = strdup(r->element[2 * i]->str ? r->element[2 * i]->str : "");
        m->role = strdup(r->element[2 * i + 1]->str ? r->element[2 * i + 1]->str : "");
        if (!m->group || !m->user || !m->role)
            rc = -1;
    }
    freeReplyObject(r);
    if (rc != 0) {
        if (list && !list->members)
            free(list), list = NULL;
        groups_members_destroy(&list);
        return error_set(fault, "INTERNAL", "out of memory");
    }
    qsort(list->members, list->n_members, sizeof *list->members, s_by_user);
    *list_p = list;
    return 0;
}

/* ---- reservations (reserve) -------------------------------------------------------------- */

/* Every host id (sorted) with its name: rows of hash_rows. 0 and *ids / *rows (caller frees
   both), or -1 (fault set). */
static int s_hosts(store_t *store, redisReply **ids_p, redisReply **rows_p, fault_t *fault)
{
    redisReply *ids = store_command(store, "SMEMBERS %s", KEYS_HOSTS);
    if (!ids || ids->type != REDIS_REPLY_ARRAY) {
        if (ids)
            freeReplyObject(ids);
        return fault_store(fault, store);
    }
    size_t n = ids->elements;
    char(*keys)[KEYS_MAX] = calloc(n + 1, sizeof *keys);
    const char **argv = calloc(n + 2, sizeof *argv);
    redisReply *rows = NULL;
    if (keys && argv) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (ids->element[i]->type == REDIS_REPLY_STRING) {
                argv[k] = keys_host(keys[k], ids->element[i]->str);
                k++;
            }
        argv[k] = "name";
        rows = k == n ? store_run(store, &lua_hash_rows, (int)n, (int)n + 1, argv) : NULL;
    }
    free(keys);
    free(argv);
    if (!rows || rows->type != REDIS_REPLY_ARRAY || rows->elements != n) {
        if (rows)
            freeReplyObject(rows);
        freeReplyObject(ids);
        return fault_store(fault, store);
    }
    *ids_p = ids;
    *rows_p = rows;
    return 0;
}

/* The host id ref names (an id, else a unique name) among ids/rows, or NULL. */
static const char *s_host_ref(const redisReply *ids, const redisReply *rows, const char *ref)
{
    const char *by_name = NULL;
    int named = 0;
    for (size_t i = 0; i < ids->elements; i++) {
        if (streq(ids->element[i]->str, ref))
            return ids->element[i]->str;
        const redisReply *row = rows->element[i];
        if (row->type == REDIS_REPLY_ARRAY && row->elements == 1 &&
            row->element[0]->type == REDIS_REPLY_STRING && streq(row->element[0]->str, ref)) {
            by_name = ids->element[i]->str;
            named++;
        }
    }
    return named == 1 ? by_name : NULL;
}

/* The reservations, checked field by field (BAD_REQUEST naming it). */
int groups_check_reservations(Berth__Reservation *const *list, size_t n, fault_t *fault)
{
    if (n > LIMIT_RESERVATIONS_MAX)
        return error_field(fault, "reservations", "a group has at most %d reservations",
                           LIMIT_RESERVATIONS_MAX);
    char field[64];
    for (size_t i = 0; i < n; i++) {
        const Berth__Reservation *r = list[i];
        const char *host = r && r->host ? r->host : "";
        snprintf(field, sizeof field, "reservations[%zu]", i);
        if (!r)
            return error_field(fault, field, "%s is empty", field);
        if (strlen(host) > LIMIT_HOST_REF_MAX || !s_printable(host, LIMIT_HOST_REF_MAX) ||
            strchr(host, ' '))
            return error_field(fault, field,
                               "%s.host must be a host id or name of at most %d "
                               "printable characters, or empty for any host",
                               field, LIMIT_HOST_REF_MAX);
        if (r->vcpus < 0 || r->vcpus > LIMIT_RESERVE_VCPUS_MAX || r->ram_mb < 0 ||
            r->ram_mb > LIMIT_RESERVE_RAM_MB_MAX || r->disk_gb < 0 ||
            r->disk_gb > LIMIT_RESERVE_DISK_GB_MAX)
            return error_field(fault, field,
                               "%s: vcpus (at most %d), ram_mb and disk_gb (at most %lld) must "
                               "not be negative",
                               field, LIMIT_RESERVE_VCPUS_MAX, (long long)LIMIT_RESERVE_RAM_MB_MAX);
        if (r->vcpus == 0 && r->ram_mb == 0 && r->disk_gb == 0)
            return error_field(fault, field, "%s reserves nothing: give vcpus, ram_mb or disk_gb",
                               field);
    }
    return 0;
}

int groups_set_reservations(store_t *store, const policy_t *policy, const char *id,
                            Berth__Reservation *const *list, size_t n, int64_t version,
                            const char *actor, Berth__Group **out_p, fault_t *fault)
{
    if (groups_check_reservations(list, n, fault) != 0)
        return -1;
    Berth__Group *g = NULL;
    redisReply *ids = NULL, *rows = NULL;
    if (groups_get(store, id, &g, fault) != 0)
        return -1;
    if (s_hosts(store, &ids, &rows, fault) != 0) {
        protobuf_c_message_free_unpacked(&g->base, NULL);
        return -1;
    }
    /* Resolved copies (host ids), what the group hash keeps; one per host. */
    Berth__Reservation *copies = calloc(n + 1, sizeof *copies);
    Berth__Reservation **ptrs = calloc(n + 1, sizeof *ptrs);
    /* KEYS: 4 fixed, then (host, reservations) of every host and of the old ones gone. */
    size_t max_pairs = ids->elements + g->n_reservations;
    char(*keys)[KEYS_MAX] = calloc(2 * max_pairs + 2, sizeof *keys);
    const char **argv = calloc(5 + 2 * max_pairs + 12 + max_pairs + 4 * n, sizeof *argv);
    char(*nums)[24] = calloc(3 * n + 16, sizeof *nums);
    int rc = -1;
    char *text = NULL;
    if (!copies || !ptrs || !keys || !argv || !nums) {
        error_set(fault, "INTERNAL", "out of memory");
        goto done;
    }
    char field[64];
    for (size_t i = 0; i < n; i++) {
        const char *host = list[i]->host ? list[i]->host : "";
        snprintf(field, sizeof field, "reservations[%zu].host", i);
        const char *resolved = *host ? s_host_ref(ids, rows, host) : "";
        if (!resolved) {
            error_field(fault, field, "%s: no host with the id or name '%s'", field, host);
            goto done;
        }
        for (size_t k = 0; k < i; k++)
            if (streq(copies[k].host, resolved)) {
                error_field(fault, field, "%s: host '%s' is reserved twice (one entry per host)",
                            field, *resolved ? resolved : "(any)");
                goto done;
            }
        berth__reservation__init(&copies[i]);
        copies[i].host = (char *)resolved;
        copies[i].vcpus = list[i]->vcpus;
        copies[i].ram_mb = list[i]->ram_mb;
        copies[i].disk_gb = list[i]->disk_gb;
        ptrs[i] = &copies[i];
    }
    /* The group's new `reservations` field, as lib/model.c writes a repeated field. */
    if (n > 0) {
        Berth__Group only = BERTH__GROUP__INIT;
        only.reservations = ptrs;
        only.n_reservations = n;
        json_t *j = model_to_json(&only.base);
        json_t *field_json = j ? json_object_get(j, "reservations") : NULL;
        text = field_json ? json_dumps(field_json, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        json_decref(j);
        if (!text) {
            error_set(fault, "INTERNAL", "out of memory");
            goto done;
        }
    }
    char group_key[KEYS_MAX];
    size_t a = 0;
    argv[a++] = keys_build(group_key, KEYS_GROUP, id, NULL);
    argv[a++] = KEYS_RESERVATIONS_ANY;
    argv[a++] = KEYS_RESERVED_HOSTS;
    argv[a++] = STORE_EVENTS;
    const char **pair_ids = calloc(max_pairs + 1, sizeof *pair_ids);
    if (!pair_ids) {
        error_set(fault, "INTERNAL", "out of memory");
        goto done;
    }
    size_t pairs = 0;
    for (size_t i = 0; i < ids->elements; i++)
        pair_ids[pairs++] = ids->element[i]->str;
    for (size_t i = 0; i < g->n_reservations; i++) { /* reserved hosts no longer listed */
        const char *old = g->reservations[i]->host;
        int known = !old || !*old;
        for (size_t k = 0; !known && k < pairs; k++)
            known = streq(pair_ids[k], old);
        if (!known && strlen(old) <= LIMIT_HOST_REF_MAX)
            pair_ids[pairs++] = old;
    }
    for (size_t p = 0; p < pairs; p++) {
        argv[a++] = keys_host(keys[2 * p], pair_ids[p]);
        argv[a++] = keys_build(keys[2 * p + 1], KEYS_HOST_RESERVATIONS, pair_ids[p], NULL);
    }
    argv[a++] = keys_build(keys[2 * pairs], KEYS_RESERVATION_LOG, id, NULL);
    int n_keys = (int)a;
    snprintf(nums[0], sizeof nums[0], "%lld", (long long)version);
    snprintf(nums[1], sizeof nums[1], "%lld", (long long)util_now_ms());
    snprintf(nums[2], sizeof nums[2], "%lld", (long long)policy->host_timeout_ms);
    snprintf(nums[3], sizeof nums[3], "%.17g", policy->ram_ratio);
    snprintf(nums[4], sizeof nums[4], "%.17g", policy->cpu_ratio);
    snprintf(nums[5], sizeof nums[5], "%.17g", policy->disk_ratio);
    snprintf(nums[6], sizeof nums[6], "%zu", pairs);
    argv[a++] = id;
    for (int i = 0; i < 6; i++)
        argv[a++] = nums[i];
    argv[a++] = text ? text : "";
    argv[a++] = actor;
    argv[a++] = nums[6];
    for (size_t p = 0; p < pairs; p++)
        argv[a++] = pair_ids[p];
    for (size_t i = 0; i < n; i++) {
        snprintf(nums[7 + 3 * i], sizeof nums[0], "%d", copies[i].vcpus);
        snprintf(nums[8 + 3 * i], sizeof nums[0], "%lld", (long long)copies[i].ram_mb);
        snprintf(nums[9 + 3 * i], sizeof nums[0], "%lld", (long long)copies[i].disk_gb);
        argv[a++] = copies[i].host;
        argv[a++] = nums[7 + 3 * i];
        argv[a++] = nums[8 + 3 * i];
        argv[a++] = nums[9 + 3 * i];
    }
    char at[24];
    snprintf(at, sizeof at, "%lld", (long long)clock_now_ms());
    argv[a++] = at;
    redisReply *r = store_run(store, &lua_reservations_set, n_keys, (int)a, argv);
    free(pair_ids);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_STRING) {
        if (r)
            freeReplyObject(r);
        fault_store(fault, store);
        goto done;
    }
    const char *verdict = r->element[0]->str;
    if (streq(verdict, "OK"))
        rc = 0;
    else if (streq(verdict, "NOT_FOUND"))
        error_set(fault, "NOT_FOUND", "no group %s", id);
    else if (streq(verdict, "CONFLICT"))
        error_set(fault, "CONFLICT", "group %s changed meanwhile: read it again", id);
    else if (streq(verdict, "EXCEEDS") && r->elements == 5) {
        const char *host = r->element[1]->str, *res = r->element[2]->str;
        error_set(fault, "CONFLICT",
                  "reserving %s %s on %s%s exceeds what is free and unreserved there: %s "
                  "available",
                  r->element[3]->str, res, *host ? "host " : "", *host ? host : "any host",
                  r->element[4]->str);
        error_detail(fault, "host", "%s", host);
        error_detail(fault, "resource", "%s", res);
        error_detail(fault, "asked", "%s", r->element[3]->str);
        error_detail(fault, "available", "%s", r->element[4]->str);
    } else
        error_set(fault, "INTERNAL", "reservations_set answered %s", verdict);
    freeReplyObject(r);
done:
    free(text);
    free(nums);
    free(argv);
    free(keys);
    free(ptrs);
    free(copies);
    freeReplyObject(rows);
    freeReplyObject(ids);
    protobuf_c_message_free_unpacked(&g->base, NULL);
    if (rc != 0)
        return -1;
    if (groups_get(store, id, out_p, fault) != 0)
        return -1;
    if (groups_reservations_used(store, *out_p, fault) != 0) {
        protobuf_c_message_free_unpacked(&(*out_p)->base, NULL);
        *out_p = NULL;
        return -1;
    }
    return 0;
}

int groups_reservations_used(store_t *store, Berth__Group *g, fault_t *fault)
{
    for (size_t i = 0; i < g->n_reservations; i++) {
        Berth__Reservation *r = g->reservations[i];
        char key[KEYS_MAX];
        const char *host = r->host ? r->host : "";
        if (*host)
            keys_build(key, KEYS_HOST_RESERVATIONS, host, NULL);
        else
            util_strlcpy(key, KEYS_RESERVATIONS_ANY, sizeof key);
        char f[3][64];
        snprintf(f[0], sizeof f[0], "%s:used_vcpus", g->id);
        snprintf(f[1], sizeof f[1], "%s:used_ram_mb", g->id);
        snprintf(f[2], sizeof f[2], "%s:used_disk_gb", g->id);
        redisReply *rep = store_command(store, "HMGET %s %s %s %s", key, f[0], f[1], f[2]);
        if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 3) {
            if (rep)
                freeReplyObject(rep);
            return fault_store(fault, store);
        }
        int64_t v[3] = { 0 };
        for (int j = 0; j < 3; j++)
            if (rep->element[j]->type != REDIS_REPLY_STRING ||
                util_parse_int(rep->element[j]->str, 0, INT64_MAX, &v[j]) != 0)
                v[j] = 0;
        freeReplyObject(rep);
        if (!r->used) {
            r->used = malloc(sizeof *r->used); /* freed with g by free_unpacked */
            if (!r->used)
                return error_set(fault, "INTERNAL", "out of memory");
        }
        berth__resources__init(r->used);
        r->used->vcpus = (int32_t)v[0];
        r->used->ram_mb = v[1];
        r->used->disk_gb = v[2];
    }
    return 0;
}

/* ---- capacity ------------------------------------------------------------------------ */

int groups_capacity(store_t *store, const policy_t *policy, const char *id,
                    Berth__GroupCapacity **out_p, fault_t *fault)
{
    Berth__Group *g = NULL;
    if (groups_get(store, id, &g, fault) != 0)
        return -1;
    Berth__GroupCapacity *c = calloc(1, sizeof *c);
    Berth__Quota *used = calloc(1, sizeof *used), *left = NULL;
    Berth__Resources *res = calloc(3, sizeof *res);
    redisReply *ids = NULL, *r = NULL;
    char(*keys)[KEYS_MAX] = NULL;
    const char **argv = NULL;
    int rc = -1;
    if (!c || !used || !res) {
        error_set(fault, "INTERNAL", "out of memory");
        goto done;
    }
    berth__group_capacity__init(c);
    berth__quota__init(used);
    if (groups_usage(store, g->id, used, fault) != 0 || groups_reservations_used(store, g, fault))
        goto done;
    ids = store_command(store, "SMEMBERS %s", KEYS_HOSTS);
    if (!ids || ids->type != REDIS_REPLY_ARRAY) {
        fault_store(fault, store);
        goto done;
    }
    size_t n = ids->elements, k = 0;
    keys = calloc(2 * n + 1, sizeof *keys);
    argv = calloc(2 * n + 8, sizeof *argv);
    if (!keys || !argv) {
        error_set(fault, "INTERNAL", "out of memory");
        goto done;
    }
    argv[k++] = KEYS_RESERVATIONS_ANY;
    for (size_t i = 0; i < n; i++)
        if (ids->element[i]->type == REDIS_REPLY_STRING && ids->element[i]->len < UTIL_ID_LEN) {
            argv[k++] = keys_host(keys[2 * i], ids->element[i]->str);
            argv[k++] =
                keys_build(keys[2 * i + 1], KEYS_HOST_RESERVATIONS, ids->element[i]->str, NULL);
        }
    int n_keys = (int)k;
    char nums[5][32];
    snprintf(nums[0], sizeof nums[0], "%lld", (long long)util_now_ms());
    snprintf(nums[1], sizeof nums[1], "%lld", (long long)policy->host_timeout_ms);
    snprintf(nums[2], sizeof nums[2], "%.17g", policy->ram_ratio);
    snprintf(nums[3], sizeof nums[3], "%.17g", policy->cpu_ratio);
    snprintf(nums[4], sizeof nums[4], "%.17g", policy->disk_ratio);
    argv[k++] = g->id;
    for (int i = 0; i < 5; i++)
        argv[k++] = nums[i];
    r = store_run(store, &lua_capacity, n_keys, (int)k, argv);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 7) {
        fault_store(fault, store);
        goto done;
    }
    int64_t v[7];
    for (int i = 0; i < 7; i++)
        v[i] = r->element[i]->type == REDIS_REPLY_INTEGER ? r->element[i]->integer : 0;
    for (int i = 0; i < 3; i++)
        berth__resources__init(&res[i]);
    c->hosts = (int32_t)v[0];
    res[0].vcpus = (int32_t)v[1];
    res[0].ram_mb = v[2];
    res[0].disk_gb = v[3];
    /* One host cannot give more than the platform as a whole has free for the group. */
    res[1].vcpus = (int32_t)(v[4] < v[1] ? v[4] : v[1]);
    res[1].ram_mb = v[5] < v[2] ? v[5] : v[2];
    res[1].disk_gb = v[6] < v[3] ? v[6] : v[3];
    res[2] = res[0];
    if (g->quota) {
        left = calloc(1, sizeof *left);
        if (!left) {
            error_set(fault, "INTERNAL", "out of memory");
            goto done;
        }
        berth__quota__init(left);
        left->vms = g->quota->vms > used->vms ? g->quota->vms - used->vms : 0;
        left->vcpus = g->quota->vcpus > used->vcpus ? g->quota->vcpus - used->vcpus : 0;
        left->ram_mb = g->quota->ram_mb > used->ram_mb ? g->quota->ram_mb - used->ram_mb : 0;
        left->disk_gb = g->quota->disk_gb > used->disk_gb ? g->quota->disk_gb - used->disk_gb : 0;
        if (left->vcpus < res[2].vcpus)
            res[2].vcpus = left->vcpus;
        if (left->ram_mb < res[2].ram_mb)
            res[2].ram_mb = left->ram_mb;
        if (left->disk_gb < res[2].disk_gb)
            res[2].disk_gb = left->disk_gb;
        if (left->vms == 0) /* no VM may be added at all */
            berth__resources__init(&res[2]);
    }
    /* c takes g's fields: freed with it by groups_capacity_destroy. */
    c->group = strdup(g->id);
    c->name = strdup(g->name);
    if (!c->group || !c->name) {
        free(c->group);
        free(c->name);
        error_set(fault, "INTERNAL", "out of memory");
        goto done;
    }
    c->quota = g->quota;
    c->reservations = g->reservations;
    c->n_reservations = g->n_reservations;
    g->quota = NULL;
    g->reservations = NULL;
    g->n_reservations = 0;
    c->used = used;
    c->left = left;
    c->free = &res[0];
    c->largest = &res[1];
    c->usable = &res[2];
    used = left = NULL;
    res = NULL;
    *out_p = c;
    c = NULL;
    rc = 0;
done:
    if (r)
        freeReplyObject(r);
    if (ids)
        freeReplyObject(ids);
    free(keys);
    free(argv);
    free(c);
    free(used);
    free(left);
    free(res);
    protobuf_c_message_free_unpacked(&g->base, NULL);
    return rc;
}

void groups_capacity_destroy(Berth__GroupCapacity **c_p)
{
    Berth__GroupCapacity *c = c_p ? *c_p : NULL;
    if (!c)
        return;
    /* The quota and reservations came from an unpacked Group (protobuf-c's default
       allocator: malloc), the rest from groups_capacity. */
    free(c->group);
    free(c->name);
    if (c->quota)
        protobuf_c_message_free_unpacked(&c->quota->base, NULL);
    for (size_t i = 0; i < c->n_reservations; i++)
        protobuf_c_message_free_unpacked(&c->reservations[i]->base, NULL);
    free(c->reservations);
    free(c->used);
    free(c->left);
    free(c->free); /* res[0..2], one allocation */
    free(c);
    *c_p = NULL;
}

/* ---- bus handlers ----------------------------------------------------------------------- */

static const char *s_rid(bus_request_t *request)
{
    const char *id = bus_request_envelope(request)->request_id;
    return id && *id ? id : NULL;
}

/* Platform roles that read every group. */
static int s_sees_all(const Berth__UserAssertion *who)
{
    return assertion_has_role(who, "admin") || assertion_has_role(who, "operator");
}

/* May who read group? 1 yes, 0 no, -1 fault (Redis). */
static int s_may_read(store_t *store, const Berth__UserAssertion *who, const char *group,
                      fault_t *fault)
{
    if (s_sees_all(who))
        return 1;
    char role[16];
    if (groups_role(store, group, who->user, role, fault) != 0)
        return -1;
    return *role != '\0';
}

/* Reply with a message and free the caller's assertion. */
static void s_done(bus_request_t *request, Berth__UserAssertion *who, const ProtobufCMessage *msg)
{
    bus_reply(request, msg);
    berth__user_assertion__free_unpacked(who, NULL);
}

static void s_refuse(bus_request_t *request, Berth__UserAssertion *who, const char *what,
                     const fault_t *fault)
{
    approval_fail(request, what, fault);
    berth__user_assertion__free_unpacked(who, NULL);
}

#define S_BODY(type, desc, name)                                                                   \
    approval_t *self = arg;                                                                        \
    type *msg = bus_request_body(request, &desc);                                                  \
    if (!msg) {                                                                                    \
        bus_reply_error(request, "BAD_REQUEST", name " body does not parse");                      \
        return;                                                                                    \
    }                                                                                              \
    Berth__UserAssertion *who = approval_caller(self, request, msg->assertion);                    \
    if (!who)                                                                                      \
        return;                                                                                    \
    store_t *store = approval_store(self);                                                         \
    fault_t fault = { 0 }

void groups_on_create(bus_request_t *request, void *arg)
{
    S_BODY(Berth__CreateGroup, berth__create_group__descriptor, "CreateGroup");
    Berth__Group *g = NULL;
    if (groups_create(store, msg->group, who->user, &g, &fault) != 0) {
        s_refuse(request, who, "create group refused", &fault);
        return;
    }
    log_info(s_rid(request), "group created", "{s:s, s:s, s:s}", "group", g->id, "name", g->name,
             "actor", who->user);
    s_done(request, who, &g->base);
    protobuf_c_message_free_unpacked(&g->base, NULL);
}

void groups_on_get(bus_request_t *request, void *arg)
{
    S_BODY(Berth__GetGroup, berth__get_group__descriptor, "GetGroup");
    Berth__Group *g = NULL;
    int may = s_may_read(store, who, msg->id, &fault);
    if (may == 0) /* a group one may not see is no different from none */
        error_set(&fault, "NOT_FOUND", "no group %.64s", msg->id ? msg->id : "");
    Berth__Quota used = BERTH__QUOTA__INIT;
    if (may != 1 || groups_get(store, msg->id, &g, &fault) != 0 ||
        groups_usage(store, g->id, &used, &fault) != 0 ||
        groups_reservations_used(store, g, &fault) != 0) {
        s_refuse(request, who, "get group refused", &fault);
        if (g)
            protobuf_c_message_free_unpacked(&g->base, NULL);
        return;
    }
    if (groups_webhook_read(store, g, &fault) != 0) {
        s_refuse(request, who, "get group refused", &fault);
        protobuf_c_message_free_unpacked(&g->base, NULL);
        return;
    }
    Berth__Quota *stored_used = g->used; /* never stored: the counters are the truth */
    g->used = &used;
    s_done(request, who, &g->base);
    g->used = stored_used;
    groups_webhook_free(g);
    protobuf_c_message_free_unpacked(&g->base, NULL);
}

void groups_on_list(bus_request_t *request, void *arg)
{
    S_BODY(Berth__ListGroups, berth__list_groups__descriptor, "ListGroups");
    Berth__GroupList *list = NULL;
    if (groups_list(store, s_sees_all(who) ? NULL : who->user, msg->limit, msg->marker, &list,
                    &fault) != 0) {
        s_refuse(request, who, "list groups refused", &fault);
        return;
    }
    s_done(request, who, &list->base);
    groups_list_destroy(&list);
}

void groups_on_update(bus_request_t *request, void *arg)
{
    S_BODY(Berth__UpdateGroup, berth__update_group__descriptor, "UpdateGroup");
    Berth__Group *g = NULL;
    if (groups_update(store, msg->id, msg->group, msg->fields, msg->n_fields, msg->version,
                      who->user, &g, &fault) != 0) {
        s_refuse(request, who, "update group refused", &fault);
        return;
    }
    log_info(s_rid(request), "group updated", "{s:s, s:I, s:s}", "group", g->id, "version",
             (json_int_t)g->version, "actor", who->user);
    s_done(request, who, &g->base);
    protobuf_c_message_free_unpacked(&g->base, NULL);
}

void groups_on_delete(bus_request_t *request, void *arg)
{
    S_BODY(Berth__DeleteGroup, berth__delete_group__descriptor, "DeleteGroup");
    Berth__Group *g = NULL;
    if (groups_delete(store, msg->id, who->user, &g, &fault) != 0) {
        s_refuse(request, who, "delete group refused", &fault);
        return;
    }
    log_info(s_rid(request), "group deleted", "{s:s, s:s, s:s}", "group", g->id, "name", g->name,
             "actor", who->user);
    s_done(request, who, &g->base);
    protobuf_c_message_free_unpacked(&g->base, NULL);
}

/* Membership changes: an admin, or a manager of that group. */
static void s_member(bus_request_t *request, approval_t *self, Berth__UserAssertion *who,
                     const char *op, const char *group, const char *user, const char *role)
{
    store_t *store = approval_store(self);
    fault_t fault = { 0 };
    char mine[16] = "";
    if (!assertion_has_role(who, "admin")) {
        if (groups_role(store, group, who->user, mine, &fault) != 0) {
            s_refuse(request, who, "membership change refused", &fault);
            return;
        }
        if (!streq(mine, "manager")) {
            error_set(&fault, "FORBIDDEN",
                      "only an admin or a manager of the group may change "
                      "its members");
            s_refuse(request, who, "membership change refused", &fault);
            return;
        }
    }
    if (groups_member(store, op, group, user, role, who->user, &fault) != 0) {
        s_refuse(request, who, "membership change refused", &fault);
        return;
    }
    log_info(s_rid(request), "membership changed", "{s:s, s:s, s:s, s:s, s:s}", "change", op,
             "group", group, "user", user, "role", role ? role : "", "actor", who->user);
    Berth__Membership m = BERTH__MEMBERSHIP__INIT;
    m.group = (char *)group;
    m.user = (char *)user;
    m.role = (char *)(streq(op, "remove") ? "" : role);
    s_done(request, who, &m.base);
}

void groups_on_add_member(bus_request_t *request, void *arg)
{
    S_BODY(Berth__AddMember, berth__add_member__descriptor, "AddMember");
    (void)store;
    (void)fault;
    s_member(request, self, who, "add", msg->group, msg->user, msg->role);
}

void groups_on_set_role(bus_request_t *request, void *arg)
{
    S_BODY(Berth__SetRole, berth__set_role__descriptor, "SetRole");
    (void)store;
    (void)fault;
    s_member(request, self, who, "set", msg->group, msg->user, msg->role);
}

void groups_on_remove_member(bus_request_t *request, void *arg)
{
    S_BODY(Berth__RemoveMember, berth__remove_member__descriptor, "RemoveMember");
    (void)store;
    (void)fault;
    s_member(request, self, who, "remove", msg->group, msg->user, NULL);
}

void groups_on_list_members(bus_request_t *request, void *arg)
{
    S_BODY(Berth__ListMembers, berth__list_members__descriptor, "ListMembers");
    Berth__MemberList *list = NULL;
    int may = s_may_read(store, who, msg->group, &fault);
    if (may == 0)
        error_set(&fault, "NOT_FOUND", "no group %.64s", msg->group ? msg->group : "");
    if (may != 1 || groups_members(store, msg->group, &list, &fault) != 0) {
        s_refuse(request, who, "list members refused", &fault);
        return;
    }
    s_done(request, who, &list->base);
    groups_members_destroy(&list);
}

/* An admin replaces a group's reservations (groups_set_reservations). */
void groups_on_set_reservations(bus_request_t *request, void *arg)
{
    S_BODY(Berth__SetReservations, berth__set_reservations__descriptor, "SetReservations");
    Berth__Group *g = NULL;
    if (groups_set_reservations(store, approval_limits(self), msg->id, msg->reservations,
                                msg->n_reservations, msg->version, who->user, &g, &fault) != 0) {
        s_refuse(request, who, "set reservations refused", &fault);
        return;
    }
    log_info(s_rid(request), "group reservations set", "{s:s, s:i, s:I, s:s}", "group", g->id,
             "reservations", (int)g->n_reservations, "version", (json_int_t)g->version, "actor",
             who->user);
    s_done(request, who, &g->base);
    protobuf_c_message_free_unpacked(&g->base, NULL);
}

void groups_on_capacity(bus_request_t *request, void *arg)
{
    S_BODY(Berth__GetCapacity, berth__get_capacity__descriptor, "GetCapacity");
    Berth__GroupCapacity *c = NULL;
    int may = s_may_read(store, who, msg->group, &fault);
    if (may == 0) /* a group one may not see is no different from none */
        error_set(&fault, "NOT_FOUND", "no group %.64s", msg->group ? msg->group : "");
    if (may != 1 || groups_capacity(store, approval_limits(self), msg->group, &c, &fault) != 0) {
        s_refuse(request, who, "group capacity refused", &fault);
        return;
    }
    s_done(request, who, &c->base);
    groups_capacity_destroy(&c);
}

/* A group's webhook: an admin, or a manager of that group (the notices are the group's). */
void groups_on_set_webhook(bus_request_t *request, void *arg)
{
    S_BODY(Berth__SetGroupWebhook, berth__set_group_webhook__descriptor, "SetGroupWebhook");
    char role[16] = "";
    if (!assertion_has_role(who, "admin")) {
        if (s_check_id("id", msg->id, &fault) != 0 ||
            groups_role(store, msg->id, who->user, role, &fault) != 0) {
            s_refuse(request, who, "set webhook refused", &fault);
            return;
        }
        if (!*role) {
            error_set(&fault, "NOT_FOUND", "no group %.64s", msg->id);
            s_refuse(request, who, "set webhook refused", &fault);
            return;
        }
        if (!streq(role, "manager")) {
            error_set(&fault, "FORBIDDEN", "a group's webhook is set by its managers or an admin");
            s_refuse(request, who, "set webhook refused", &fault);
            return;
        }
    }
    Berth__Group *g = NULL;
    if (groups_set_webhook(store, msg->id, msg->url, msg->secret, msg->clear, who->user, &g,
                           &fault) != 0) {
        s_refuse(request, who, "set webhook refused", &fault);
        return;
    }
    log_info(s_rid(request), msg->clear ? "group webhook cleared" : "group webhook set",
             "{s:s, s:s}", "group", g->id, "actor", who->user);
    s_done(request, who, &g->base);
    groups_webhook_free(g);
    protobuf_c_message_free_unpacked(&g->base, NULL);
}
