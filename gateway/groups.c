/*  groups: the REST face of groups and memberships, which the approval service owns (every
    change is a bus call acting for the signed-in user). A group is named by its id or its
    name wherever an id is taken; the name is read from berth:group-name:<name>. Who may see
    or change a group is the permission table's word (perm_allows); a group one may not read
    answers 404, as if it did not exist. */
#include "gateway.h"
#include "keys.h"

/* See gateway.h: a group named by id or name, as its id. */
int groups_resolve(http_req_t *req, const char *ref, char id[UTIL_ID_LEN])
{
    if (ref && util_is_uuid(ref)) {
        util_strlcpy(id, ref, UTIL_ID_LEN);
        return 0;
    }
    if (!ref || strlen(ref) > LIMIT_GROUP_NAME_MAX || !rest_id_ok(ref)) {
        http_error(req, "NOT_FOUND", "no such group");
        return -1;
    }
    char key[KEYS_MAX];
    redisReply *r =
        store_command(req->store, "HGET %s id", keys_build(key, KEYS_GROUP_NAME, ref, NULL));
    if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL)) {
        if (r)
            freeReplyObject(r);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return -1;
    }
    int found = r->type == REDIS_REPLY_STRING && util_is_uuid(r->str);
    if (found)
        util_strlcpy(id, r->str, UTIL_ID_LEN);
    freeReplyObject(r);
    if (!found)
        http_error(req, "NOT_FOUND", "no such group");
    return found ? 0 : -1;
}

int groups_authorize(http_req_t *req, const char *ref, const char *action, const char *forbidden,
                     char id[UTIL_ID_LEN])
{
    if (groups_resolve(req, ref, id) != 0)
        return -1;
    if (perm_allows(req, action, NULL, id))
        return 0;
    if (perm_allows(req, "group.get", NULL, id))
        http_error_details(req, "FORBIDDEN", forbidden, json_pack("{s:s}", "action", action));
    else
        http_error(req, "NOT_FOUND", "no such group");
    return -1;
}

/* The group of the path ({id}) into id, when the caller may do action on it. */
static int s_group(http_req_t *req, const char *action, char id[UTIL_ID_LEN])
{
    return groups_authorize(req, req->params[0], action,
                            "this operation needs the manager role in the group", id);
}

/* The body's "templates" (an array of template names; [] or null: every template) into
   names[]/g: 1 when absent, 0 when given, -1 with a 400 sent. Names borrowed from the body. */
static int s_templates(http_req_t *req, Berth__Group *g, char **names)
{
    json_t *list = json_object_get(req->body, "templates");
    if (!list)
        return 1;
    if (json_is_null(list))
        return 0;
    if (!json_is_array(list) || json_array_size(list) > LIMIT_GROUP_TEMPLATES_MAX) {
        http_bad_field(req, "templates", "templates must be an array of at most %d template names",
                       LIMIT_GROUP_TEMPLATES_MAX);
        return -1;
    }
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        if (!json_is_string(v) || json_string_length(v) > LIMIT_TEMPLATE_NAME_MAX ||
            !rest_id_ok(json_string_value(v))) {
            http_bad_field(req, "templates", "templates[%zu] must be a template name", i);
            return -1;
        }
        names[i] = (char *)json_string_value(v);
    }
    g->templates = names;
    g->n_templates = json_array_size(list);
    return 0;
}

/* A Quota as JSON, or null when absent. */
static json_t *s_quota_view(const Berth__Quota *q)
{
    if (!q)
        return json_null();
    return json_pack("{s:i, s:i, s:I, s:I}", "vms", q->vms, "vcpus", q->vcpus, "ram_mb",
                     (json_int_t)q->ram_mb, "disk_gb", (json_int_t)q->disk_gb);
}

json_t *groups_reservations_view(Berth__Reservation *const *items, size_t n)
{
    json_t *list = json_array();
    for (size_t i = 0; list && i < n; i++) {
        const Berth__Reservation *r = items[i];
        json_t *used = r->used ? json_pack("{s:i, s:I, s:I}", "vcpus", r->used->vcpus, "ram_mb",
                                           (json_int_t)r->used->ram_mb, "disk_gb",
                                           (json_int_t)r->used->disk_gb)
                               : json_null();
        if (json_array_append_new(
                list, json_pack("{s:o, s:i, s:I, s:I, s:o}", "host",
                                r->host && *r->host ? json_string(r->host) : json_null(), "vcpus",
                                r->vcpus, "ram_mb", (json_int_t)r->ram_mb, "disk_gb",
                                (json_int_t)r->disk_gb, "used", used)) != 0) {
            json_decref(list);
            return NULL;
        }
    }
    return list;
}

/* The templates a group offers as a JSON array of names ([]: every template). */
static json_t *s_names_view(const Berth__Group *g)
{
    json_t *list = json_array();
    for (size_t i = 0; list && i < g->n_templates; i++)
        json_array_append_new(list, json_string(g->templates[i] ? g->templates[i] : ""));
    return list;
}

/* webhook: where the group's notices go and whether a secret signs them (never the
   secret); null when none is set, and in lists (read with the one group). */
static json_t *s_webhook_view(const Berth__GroupWebhook *w)
{
    if (!w)
        return json_null();
    return json_pack("{s:s, s:b, s:o, s:o}", "url", w->url ? w->url : "", "secret_set",
                     w->secret_set, "updated_at", rest_time(w->updated_ms), "updated_by",
                     view_str(w->updated_by));
}

static json_t *s_view(const Berth__Group *g)
{
    json_t *view = json_pack(
        "{s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:I}", "id", g->id ? g->id : "", "name",
        g->name ? g->name : "", "cost_centre", view_str(g->cost_centre), "description",
        view_str(g->description), "parent", view_str(g->parent), "quota", s_quota_view(g->quota),
        "created_at", rest_time(g->created_ms), "version", (json_int_t)g->version);
    /* usage: what the group's live VMs hold (GET of one group; null elsewhere). How its
       requests are decided (services/approval/decide.h); empty: auto. */
    if (view && (json_object_set_new(view, "user_quota", s_quota_view(g->user_quota)) != 0 ||
                 json_object_set_new(view, "usage", s_quota_view(g->used)) != 0 ||
                 json_object_update_new(
                     view, json_pack("{s:s, s:i, s:I}", "approval_policy",
                                     g->approval_policy && *g->approval_policy ? g->approval_policy
                                                                               : "auto",
                                     "auto_max_vcpus", g->auto_max_vcpus, "auto_max_ram_mb",
                                     (json_int_t)g->auto_max_ram_mb)) != 0 ||
                 json_object_update_new(
                     view, json_pack("{s:s, s:o}", "charging_model",
                                     g->charging_model && *g->charging_model ? g->charging_model
                                                                             : "allocation",
                                     "auto_growth_max", s_quota_view(g->auto_growth_max))) != 0 ||
                 json_object_update_new(
                     view, json_pack("{s:i, s:i, s:I}", "max_lease_days", g->max_lease_days,
                                     "max_extensions", g->max_extensions, "lease_notice_hours",
                                     (json_int_t)(g->lease_notice_ms / 3600000))) != 0 ||
                 json_object_set_new(view, "reservations",
                                     groups_reservations_view(g->reservations,
                                                              g->n_reservations)) != 0 ||
                 json_object_set_new(view, "templates", s_names_view(g)) != 0 ||
                 json_object_set_new(view, "webhook", s_webhook_view(g->webhook)) != 0)) {
        json_decref(view);
        return NULL;
    }
    return view;
}

/* The approval settings of a group body into g; fields (when non-NULL) gets the names given.
   0, or -1 with 400 set. */
static int s_approval(http_req_t *req, Berth__Group *g, char **fields, size_t *n)
{
    const char *policy = NULL;
    int64_t vcpus = 0, ram = 0;
    int has_policy, has_vcpus, has_ram;
    if ((has_policy = rest_str(req, "approval_policy", 0, 32, &policy)) < 0 ||
        (has_vcpus = rest_int(req, "auto_max_vcpus", 0, 0, INT32_MAX, &vcpus)) < 0 ||
        (has_ram = rest_int(req, "auto_max_ram_mb", 0, 0, (int64_t)1 << 40, &ram)) < 0)
        return -1;
    if (has_policy == 0 && !streq(policy, "auto") && !streq(policy, "conditional") &&
        !streq(policy, "manager") && !streq(policy, "admin") &&
        !streq(policy, "manager_then_admin"))
        return http_bad_field(req, "approval_policy",
                              "approval_policy must be auto, conditional, manager, admin or "
                              "manager_then_admin");
    const char *model = NULL;
    int has_model = rest_str(req, "charging_model", 0, 16, &model);
    if (has_model < 0)
        return -1;
    if (has_model == 0 && !streq(model, "allocation") && !streq(model, "reservation"))
        return http_bad_field(req, "charging_model",
                              "charging_model must be allocation or reservation");
    if (has_model == 0) {
        g->charging_model = (char *)model;
        if (fields)
            fields[(*n)++] = "charging_model";
    }
    if (has_policy == 0) {
        g->approval_policy = (char *)policy;
        if (fields)
            fields[(*n)++] = "approval_policy";
    }
    if (has_vcpus == 0) {
        g->auto_max_vcpus = (int32_t)vcpus;
        if (fields)
            fields[(*n)++] = "auto_max_vcpus";
    }
    if (has_ram == 0) {
        g->auto_max_ram_mb = ram;
        if (fields)
            fields[(*n)++] = "auto_max_ram_mb";
    }
    return 0;
}

/* The lease policy of a group body into g (0: the platform's setting; taskmgr applies it);
   fields (when non-NULL) gets the names given. 0, or -1 with 400 set. */
static int s_lease(http_req_t *req, Berth__Group *g, char **fields, size_t *n)
{
    int64_t days = 0, ext = 0, hours = 0;
    int has_days, has_ext, has_hours;
    if ((has_days = rest_int(req, "max_lease_days", 0, 0, 36500, &days)) < 0 ||
        (has_ext = rest_int(req, "max_extensions", 0, 0, 100000, &ext)) < 0 ||
        (has_hours = rest_int(req, "lease_notice_hours", 0, 0, 36500 * 24, &hours)) < 0)
        return -1;
    if (has_days == 0) {
        g->max_lease_days = (int32_t)days;
        if (fields)
            fields[(*n)++] = "max_lease_days";
    }
    if (has_ext == 0) {
        g->max_extensions = (int32_t)ext;
        if (fields)
            fields[(*n)++] = "max_extensions";
    }
    if (has_hours == 0) {
        g->lease_notice_ms = hours * 3600000;
        if (fields)
            fields[(*n)++] = "lease_notice_ms";
    }
    return 0;
}

static json_t *s_member_view(const Berth__Membership *m)
{
    return json_pack("{s:s, s:s, s:o}", "group", m->group ? m->group : "", "user",
                     m->user ? m->user : "", "role", view_str(m->role));
}

/* The body's field ("quota" or "user_quota") into q: 0 when present and valid, 1 when
   absent, -1 with 400 set. */
static int s_quota(http_req_t *req, const char *field, Berth__Quota *q)
{
    json_t *v = json_object_get(req->body, field);
    if (!v)
        return 1;
    if (!json_is_object(v))
        return http_bad_field(req, field, "%s must be an object (vms, vcpus, ram_mb, disk_gb)",
                              field);
    static const char *const names[] = { "vms", "vcpus", "ram_mb", "disk_gb" };
    int64_t values[4] = { 0 };
    const char *key;
    json_t *value;
    json_object_foreach(v, key, value)
    {
        int i = 0;
        while (i < 4 && !streq(names[i], key))
            i++;
        int64_t max = i < 2 ? INT32_MAX : LIMIT_GROUP_QUOTA_MAX;
        if (i == 4)
            return http_bad_field(req, field, "unknown %s field '%.32s'", field, key);
        if (!json_is_integer(value) || json_integer_value(value) < 0 ||
            json_integer_value(value) > max)
            return http_bad_field(req, field, "%s.%s must be an integer from 0 to %lld", field,
                                  names[i], (long long)max);
        values[i] = json_integer_value(value);
    }
    q->vms = (int32_t)values[0];
    q->vcpus = (int32_t)values[1];
    q->ram_mb = values[2];
    q->disk_gb = values[3];
    return 0;
}

/* The texts of a group body (cost_centre, description, parent as id or name) into g.
   -1 with 400/404/503 set. parent "" (PATCH only: allow_clear) clears it. */
static int s_texts(http_req_t *req, Berth__Group *g, char parent[UTIL_ID_LEN], int allow_clear)
{
    const char *cost = NULL, *desc = NULL, *ref = NULL;
    if (rest_str(req, "cost_centre", 0, LIMIT_GROUP_COST_CENTRE_MAX, &cost) < 0 ||
        rest_str(req, "description", 0, LIMIT_GROUP_TEXT_MAX, &desc) < 0)
        return -1;
    json_t *p = json_object_get(req->body, "parent");
    if (allow_clear && json_is_string(p) && json_string_length(p) == 0)
        ref = "";
    else if (rest_str(req, "parent", 0, LIMIT_GROUP_REF_MAX, &ref) < 0)
        return -1;
    g->cost_centre = (char *)cost; /* NULL: not given (the INIT's "" would read as given) */
    g->description = (char *)desc;
    g->parent = NULL;
    if (ref && *ref) {
        if (groups_resolve(req, ref, parent) != 0) {
            json_decref(req->response);
            req->response = NULL;
            req->status = 0;
            return http_bad_field(req, "parent", "parent names no group");
        }
        g->parent = parent;
    } else if (ref)
        g->parent = "";
    return 0;
}

static void s_group_answer(http_req_t *req, ProtobufCMessage *answer)
{
    http_json(req, 200, json_pack("{s:o}", "group", s_view((const Berth__Group *)answer)));
}

static void s_created(http_req_t *req, ProtobufCMessage *answer)
{
    const Berth__Group *g = (const Berth__Group *)answer;
    log_info(req->request_id, "group created", "{s:s, s:s, s:s}", "group", g->id, "name", g->name,
             "by", req->user);
    snprintf(req->location, sizeof req->location, "/v1/groups/%s", g->id);
    http_json(req, 201, json_pack("{s:o}", "group", s_view(g)));
}

void groups_create(http_req_t *req)
{
    static const char *const allowed[] = { "name",
                                           "cost_centre",
                                           "description",
                                           "parent",
                                           "quota",
                                           "user_quota",
                                           "approval_policy",
                                           "auto_max_vcpus",
                                           "auto_max_ram_mb",
                                           "charging_model",
                                           "auto_growth_max",
                                           "templates",
                                           "max_lease_days",
                                           "max_extensions",
                                           "lease_notice_hours",
                                           NULL };
    const char *name;
    char parent[UTIL_ID_LEN], *names[LIMIT_GROUP_TEMPLATES_MAX];
    Berth__Group g = BERTH__GROUP__INIT;
    Berth__Quota q = BERTH__QUOTA__INIT, uq = BERTH__QUOTA__INIT, grow = BERTH__QUOTA__INIT;
    int has_quota, has_user_quota, has_grow;
    if (rest_body(req, allowed) || rest_str(req, "name", 1, LIMIT_GROUP_NAME_MAX, &name) ||
        s_texts(req, &g, parent, 0) || (has_quota = s_quota(req, "quota", &q)) < 0 ||
        (has_user_quota = s_quota(req, "user_quota", &uq)) < 0 ||
        (has_grow = s_quota(req, "auto_growth_max", &grow)) < 0 ||
        s_approval(req, &g, NULL, NULL) || s_templates(req, &g, names) < 0 ||
        s_lease(req, &g, NULL, NULL))
        return;
    g.auto_growth_max = has_grow == 0 ? &grow : NULL;
    /* The name becomes part of a Redis key; approval checks the full grammar. */
    if (!rest_id_ok(name) || util_is_uuid(name)) {
        http_bad_field(req, "name",
                       "name must be letters, digits, '.', '_' or '-', and not a group id");
        return;
    }
    g.name = (char *)name;
    g.quota = has_quota == 0 ? &q : NULL;
    g.user_quota = has_user_quota == 0 ? &uq : NULL;
    Berth__CreateGroup ask = BERTH__CREATE_GROUP__INIT;
    ask.group = &g;
    rest_call(req, "approval", &ask.base, &berth__group__descriptor, s_created);
}

/* A page of groups: the caller's (approval filters: admins and operators see all), then the
   filters name and parent. */
static void s_listed(http_req_t *req, ProtobufCMessage *answer)
{
    const Berth__GroupList *list = (const Berth__GroupList *)answer;
    const char *name = http_query(req, "name"), *ref = http_query(req, "parent");
    char id[UTIL_ID_LEN];
    const char *parent = NULL;
    if (ref) {
        if (groups_resolve(req, ref, id) != 0) {
            if (req->status == 503)
                return;
            json_decref(req->response);
            req->response = NULL; /* no such parent: no group is inside it ("-" is none's) */
            util_strlcpy(id, "-", sizeof id);
        }
        parent = id;
    }
    json_t *groups = json_array();
    for (size_t i = 0; i < list->n_groups; i++) {
        const Berth__Group *g = list->groups[i];
        if ((name && !streq(name, g->name ? g->name : "")) ||
            (parent && !streq(parent, g->parent ? g->parent : "")))
            continue;
        json_array_append_new(groups, s_view(g));
    }
    http_json(req, 200,
              json_pack("{s:o, s:o}", "groups", groups, "next_marker",
                        list->next_marker && *list->next_marker ? json_string(list->next_marker)
                                                                : json_null()));
}

void groups_list(http_req_t *req)
{
    gateway_t *gw = req->app;
    int64_t limit = gw->list_default;
    const char *text = http_query(req, "limit"), *marker = http_query(req, "marker");
    const char *name = http_query(req, "name"), *parent = http_query(req, "parent");
    if (text && util_parse_int(text, 1, gw->list_max, &limit) != 0) {
        http_bad_field(req, "limit", "limit must be an integer from 1 to %d", gw->list_max);
        return;
    }
    if (marker && !util_is_uuid(marker)) {
        http_bad_field(req, "marker", "marker is not a group id");
        return;
    }
    if (name && (strlen(name) > LIMIT_GROUP_NAME_MAX || !rest_id_ok(name))) {
        http_bad_field(req, "name", "name is not a group name");
        return;
    }
    if (parent && (strlen(parent) > LIMIT_GROUP_REF_MAX || !rest_id_ok(parent))) {
        http_bad_field(req, "parent", "parent is not a group id or name");
        return;
    }
    Berth__ListGroups ask = BERTH__LIST_GROUPS__INIT;
    ask.limit = (int32_t)limit;
    ask.marker = (char *)(marker ? marker : "");
    rest_call(req, "approval", &ask.base, &berth__group_list__descriptor, s_listed);
}

void groups_get(http_req_t *req)
{
    char id[UTIL_ID_LEN];
    if (s_group(req, "group.get", id) != 0)
        return;
    Berth__GetGroup ask = BERTH__GET_GROUP__INIT;
    ask.id = id;
    rest_call(req, "approval", &ask.base, &berth__group__descriptor, s_group_answer);
}

/* A Resources as JSON. */
static json_t *s_resources_view(const Berth__Resources *r)
{
    return json_pack("{s:i, s:I, s:I}", "vcpus", r ? r->vcpus : 0, "ram_mb",
                     (json_int_t)(r ? r->ram_mb : 0), "disk_gb", (json_int_t)(r ? r->disk_gb : 0));
}

static void s_capacity_answer(http_req_t *req, ProtobufCMessage *answer)
{
    const Berth__GroupCapacity *c = (const Berth__GroupCapacity *)answer;
    http_json(req, 200,
              json_pack("{s:{s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:i}}", "capacity",
                        "group", c->group ? c->group : "", "name", c->name ? c->name : "",
                        "quota", s_quota_view(c->quota), "used", s_quota_view(c->used), "left",
                        s_quota_view(c->left), "free", s_resources_view(c->free), "largest",
                        s_resources_view(c->largest), "usable", s_resources_view(c->usable),
                        "reservations",
                        groups_reservations_view(c->reservations, c->n_reservations), "hosts",
                        c->hosts));
}

/* GET /v1/groups/{id}/capacity: what the group may still use (its members see this, not the
   hosts). */
void groups_capacity(http_req_t *req)
{
    char id[UTIL_ID_LEN];
    if (s_group(req, "group.capacity", id) != 0)
        return;
    Berth__GetCapacity ask = BERTH__GET_CAPACITY__INIT;
    ask.group = id;
    rest_call(req, "approval", &ask.base, &berth__group_capacity__descriptor, s_capacity_answer);
}

void groups_update(http_req_t *req)
{
    static const char *const allowed[] = { "cost_centre",     "description",     "parent",
                                           "quota",           "user_quota",      "version",
                                           "approval_policy", "auto_max_vcpus",  "auto_max_ram_mb",
                                           "charging_model",  "auto_growth_max", "templates",
                                           "max_lease_days",  "max_extensions",
                                           "lease_notice_hours", NULL };
    char id[UTIL_ID_LEN], parent[UTIL_ID_LEN], *names[LIMIT_GROUP_TEMPLATES_MAX];
    Berth__Group g = BERTH__GROUP__INIT;
    Berth__Quota q = BERTH__QUOTA__INIT, uq = BERTH__QUOTA__INIT, grow = BERTH__QUOTA__INIT;
    int64_t version = 0;
    int has_quota, has_user_quota, has_grow, has_templates;
    if (s_group(req, "group.update", id) || rest_body(req, allowed) ||
        s_texts(req, &g, parent, 1) || (has_quota = s_quota(req, "quota", &q)) < 0 ||
        (has_user_quota = s_quota(req, "user_quota", &uq)) < 0 ||
        (has_grow = s_quota(req, "auto_growth_max", &grow)) < 0 ||
        (has_templates = s_templates(req, &g, names)) < 0 ||
        rest_int(req, "version", 0, 1, INT64_MAX, &version) < 0)
        return;
    char *fields[16];
    size_t n = 0;
    if (g.cost_centre)
        fields[n++] = "cost_centre";
    if (g.description)
        fields[n++] = "description";
    if (g.parent)
        fields[n++] = "parent";
    if (has_quota == 0) {
        fields[n++] = "quota";
        g.quota = &q;
    }
    if (has_user_quota == 0) {
        fields[n++] = "user_quota";
        g.user_quota = &uq;
    }
    if (has_grow == 0) {
        fields[n++] = "auto_growth_max";
        g.auto_growth_max = &grow;
    }
    if (has_templates == 0)
        fields[n++] = "templates";
    if (s_approval(req, &g, fields, &n) != 0 || s_lease(req, &g, fields, &n) != 0)
        return;
    if (n == 0) {
        http_bad_field(req, "cost_centre",
                       "name at least one field to change: cost_centre, description, parent, "
                       "quota, user_quota, approval_policy, auto_max_vcpus, auto_max_ram_mb, "
                       "charging_model, auto_growth_max, templates, max_lease_days, "
                       "max_extensions, lease_notice_hours");
        return;
    }
    Berth__UpdateGroup ask = BERTH__UPDATE_GROUP__INIT;
    ask.id = id;
    ask.group = &g;
    ask.fields = fields;
    ask.n_fields = n;
    ask.version = version;
    rest_call(req, "approval", &ask.base, &berth__group__descriptor, s_group_answer);
}

void groups_delete(http_req_t *req)
{
    char id[UTIL_ID_LEN];
    if (s_group(req, "group.delete", id) != 0)
        return;
    Berth__DeleteGroup ask = BERTH__DELETE_GROUP__INIT;
    ask.id = id;
    rest_call(req, "approval", &ask.base, &berth__group__descriptor, s_group_answer);
}

/* ---- members ---- */

static int s_by_user(const void *a, const void *b)
{
    return strcmp((*(Berth__Membership *const *)a)->user, (*(Berth__Membership *const *)b)->user);
}

static void s_members_listed(http_req_t *req, ProtobufCMessage *answer)
{
    gateway_t *gw = req->app;
    Berth__MemberList *list = (Berth__MemberList *)answer;
    int64_t limit = gw->list_default;
    const char *text = http_query(req, "limit"), *marker = http_query(req, "marker");
    if (text)
        util_parse_int(text, 1, gw->list_max, &limit); /* checked before the call */
    qsort(list->members, list->n_members, sizeof *list->members, s_by_user);
    json_t *members = json_array();
    size_t i = 0;
    while (i < list->n_members && marker && strcmp(list->members[i]->user, marker) <= 0)
        i++;
    for (; i < list->n_members && (int64_t)json_array_size(members) < limit; i++)
        json_array_append_new(members, s_member_view(list->members[i]));
    json_t *next =
        i < list->n_members && i > 0 ? json_string(list->members[i - 1]->user) : json_null();
    http_json(req, 200, json_pack("{s:o, s:o}", "members", members, "next_marker", next));
}

void groups_list_members(http_req_t *req)
{
    gateway_t *gw = req->app;
    int64_t limit;
    const char *text = http_query(req, "limit"), *marker = http_query(req, "marker");
    if (text && util_parse_int(text, 1, gw->list_max, &limit) != 0) {
        http_bad_field(req, "limit", "limit must be an integer from 1 to %d", gw->list_max);
        return;
    }
    if (marker && !auth_username_ok(marker)) {
        http_bad_field(req, "marker", "marker is not a user name");
        return;
    }
    char id[UTIL_ID_LEN];
    if (s_group(req, "group.members.list", id) != 0)
        return;
    Berth__ListMembers ask = BERTH__LIST_MEMBERS__INIT;
    ask.group = id;
    rest_call(req, "approval", &ask.base, &berth__member_list__descriptor, s_members_listed);
}

static void s_member_added(http_req_t *req, ProtobufCMessage *answer)
{
    const Berth__Membership *m = (const Berth__Membership *)answer;
    perm_forget(m->user);
    snprintf(req->location, sizeof req->location, "/v1/groups/%s/members/%s", m->group, m->user);
    http_json(req, 201, json_pack("{s:o}", "member", s_member_view(m)));
}

static void s_member_changed(http_req_t *req, ProtobufCMessage *answer)
{
    const Berth__Membership *m = (const Berth__Membership *)answer;
    perm_forget(m->user);
    http_json(req, 200, json_pack("{s:o}", "member", s_member_view(m)));
}

/* The role field: member, manager or auditor. 0, or -1 with 400 set. */
static int s_role(http_req_t *req, const char **role)
{
    if (rest_str(req, "role", 1, 16, role) != 0)
        return -1;
    if (!streq(*role, "member") && !streq(*role, "manager") && !streq(*role, "auditor"))
        return http_bad_field(req, "role", "role must be member, manager or auditor");
    return 0;
}

void groups_add_member(http_req_t *req)
{
    static const char *const allowed[] = { "user", "role", NULL };
    const char *user, *role;
    char id[UTIL_ID_LEN];
    if (s_group(req, "group.members.change", id) || rest_body(req, allowed) ||
        rest_str(req, "user", 1, LIMIT_USER_NAME_MAX, &user) || s_role(req, &role))
        return;
    if (!auth_username_ok(user)) {
        http_bad_field(req, "user", "user is not a user name");
        return;
    }
    Berth__AddMember ask = BERTH__ADD_MEMBER__INIT;
    ask.group = id;
    ask.user = (char *)user;
    ask.role = (char *)role;
    rest_call(req, "approval", &ask.base, &berth__membership__descriptor, s_member_added);
}

void groups_set_role(http_req_t *req)
{
    static const char *const allowed[] = { "role", NULL };
    const char *role;
    char id[UTIL_ID_LEN];
    if (s_group(req, "group.members.change", id) || rest_body(req, allowed) || s_role(req, &role))
        return;
    if (!auth_username_ok(req->params[1])) {
        http_error(req, "NOT_FOUND", "no such member");
        return;
    }
    Berth__SetRole ask = BERTH__SET_ROLE__INIT;
    ask.group = id;
    ask.user = (char *)req->params[1];
    ask.role = (char *)role;
    rest_call(req, "approval", &ask.base, &berth__membership__descriptor, s_member_changed);
}

void groups_remove_member(http_req_t *req)
{
    char id[UTIL_ID_LEN];
    if (s_group(req, "group.members.change", id) != 0)
        return;
    if (!auth_username_ok(req->params[1])) {
        http_error(req, "NOT_FOUND", "no such member");
        return;
    }
    Berth__RemoveMember ask = BERTH__REMOVE_MEMBER__INIT;
    ask.group = id;
    ask.user = (char *)req->params[1];
    rest_call(req, "approval", &ask.base, &berth__membership__descriptor, s_member_changed);
}

/* ---- allocations ---- */

void groups_allocate(http_req_t *req)
{
    char id[UTIL_ID_LEN];
    if (s_group(req, "group.allocate", id) != 0)
        return;
    requests_allocate(req, id);
}

/* ---- reservations (reserve) ---- */

int groups_parse_reservations(http_req_t *req, Berth__Reservation *items, Berth__Reservation **ptrs,
                              size_t *n)
{
    static const char *const names[] = { "host", "vcpus", "ram_mb", "disk_gb" };
    json_t *list = json_object_get(req->body, "reservations");
    if (!json_is_array(list)) {
        http_bad_field(req, "reservations",
                       "reservations must be an array of {host, vcpus, ram_mb, disk_gb}");
        return -1;
    }
    *n = json_array_size(list);
    if (*n > LIMIT_RESERVATIONS_MAX) {
        http_bad_field(req, "reservations", "a group has at most %d reservations",
                       LIMIT_RESERVATIONS_MAX);
        return -1;
    }
    for (size_t i = 0; i < *n; i++) {
        json_t *item = json_array_get(list, i);
        char field[48];
        snprintf(field, sizeof field, "reservations[%zu]", i);
        if (!json_is_object(item)) {
            http_bad_field(req, field, "%s must be an object {host, vcpus, ram_mb, disk_gb}",
                           field);
            return -1;
        }
        berth__reservation__init(&items[i]);
        ptrs[i] = &items[i];
        items[i].host = "";
        const char *key;
        json_t *value;
        json_object_foreach(item, key, value)
        {
            int k = 0;
            while (k < 4 && !streq(names[k], key))
                k++;
            if (k == 4) {
                http_bad_field(req, field, "unknown %s field '%.32s'", field, key);
                return -1;
            }
            if (k == 0) {
                if (json_is_null(value))
                    continue;
                if (!json_is_string(value) || json_string_length(value) > LIMIT_HOST_REF_MAX) {
                    http_bad_field(req, field,
                                   "%s.host must be a host id or name (at most %d characters), "
                                   "or null for any host",
                                   field, LIMIT_HOST_REF_MAX);
                    return -1;
                }
                items[i].host = (char *)json_string_value(value);
                continue;
            }
            int64_t max = k == 1   ? LIMIT_RESERVE_VCPUS_MAX
                          : k == 2 ? LIMIT_RESERVE_RAM_MB_MAX
                                   : LIMIT_RESERVE_DISK_GB_MAX;
            if (!json_is_integer(value) || json_integer_value(value) < 0 ||
                json_integer_value(value) > max) {
                http_bad_field(req, field, "%s.%s must be an integer from 0 to %lld", field, key,
                               (long long)max);
                return -1;
            }
            if (k == 1)
                items[i].vcpus = (int32_t)json_integer_value(value);
            else if (k == 2)
                items[i].ram_mb = json_integer_value(value);
            else
                items[i].disk_gb = json_integer_value(value);
        }
    }
    return 0;
}

/* PUT /v1/groups/{id}/reservations {"reservations": [{host, vcpus, ram_mb, disk_gb}],
   "version"}: the group's reservations become exactly these (approval checks the hosts
   have them free, 409 otherwise); answers the group. */
void groups_set_reservations(http_req_t *req)
{
    static const char *const allowed[] = { "reservations", "version", NULL };
    char id[UTIL_ID_LEN];
    int64_t version = 0;
    if (s_group(req, "group.reservations.set", id) || rest_body(req, allowed) ||
        rest_int(req, "version", 0, 1, INT64_MAX, &version) < 0)
        return;
    Berth__Reservation items[LIMIT_RESERVATIONS_MAX], *ptrs[LIMIT_RESERVATIONS_MAX];
    size_t n = 0;
    if (groups_parse_reservations(req, items, ptrs, &n) != 0)
        return;
    Berth__SetReservations ask = BERTH__SET_RESERVATIONS__INIT;
    ask.id = id;
    ask.reservations = ptrs;
    ask.n_reservations = n;
    ask.version = version;
    rest_call(req, "approval", &ask.base, &berth__group__descriptor, s_group_answer);
}

/* ---- webhook ---- */

/* PUT /v1/groups/{id}/webhook {"url", "secret"}: the group's notices go to url, signed with
   secret (omitted: the one set stays; the first PUT needs one). Answers the group. */
void groups_set_webhook(http_req_t *req)
{
    static const char *const allowed[] = { "url", "secret", NULL };
    char id[UTIL_ID_LEN];
    const char *url = NULL, *secret = NULL, *why = NULL;
    if (s_group(req, "group.webhook.set", id) || rest_body(req, allowed) ||
        rest_str(req, "url", 1, LIMIT_WEBHOOK_URL_MAX, &url) < 0 ||
        rest_str(req, "secret", 0, LIMIT_WEBHOOK_SECRET_MAX, &secret) < 0)
        return;
    if (util_webhook_check(url, LIMIT_WEBHOOK_URL_MAX, &why) != 0) {
        http_bad_field(req, "url", "%s", why);
        return;
    }
    if (secret && strlen(secret) < LIMIT_WEBHOOK_SECRET_MIN) {
        http_bad_field(req, "secret", "secret must be at least %d characters",
                       LIMIT_WEBHOOK_SECRET_MIN);
        return;
    }
    Berth__SetGroupWebhook ask = BERTH__SET_GROUP_WEBHOOK__INIT;
    ask.id = id;
    ask.url = (char *)url;
    ask.secret = (char *)(secret ? secret : "");
    rest_call(req, "approval", &ask.base, &berth__group__descriptor, s_group_answer);
}

/* DELETE /v1/groups/{id}/webhook: no more notices are POSTed for the group (deliveries
   already due are dropped when their turn comes). Answers the group. */
void groups_clear_webhook(http_req_t *req)
{
    char id[UTIL_ID_LEN];
    if (s_group(req, "group.webhook.set", id) != 0)
        return;
    Berth__SetGroupWebhook ask = BERTH__SET_GROUP_WEBHOOK__INIT;
    ask.id = id;
    ask.clear = 1;
    rest_call(req, "approval", &ask.base, &berth__group__descriptor, s_group_answer);
}
