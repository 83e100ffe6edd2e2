/*  requests: asking for VMs from a template, and an admin's decision on a request that
    needs one. The approval service owns requests; the gateway checks the input, passes the
    caller's identity along and shows the request with its VMs and tasks as Redis has them. */
#include "gateway.h"
#include "keys.h"
#include "../services/approval/decide.h"

#define S_LIST_BATCH 100 /* request ids read from the index per Redis round trip */
#define S(x)         ((x) ? (x) : "")

/* The approval steps of r as JSON: [{level, decided_by, decision, reason, at}]. */
static json_t *s_steps(const Berth__Request *r)
{
    json_t *steps = json_array();
    for (size_t i = 0; steps && i < r->n_steps; i++) {
        const Berth__ApprovalStep *st = r->steps[i];
        json_array_append_new(steps,
                              json_pack("{s:o, s:o, s:o, s:o, s:o}", "level", view_str(st->level),
                                        "decided_by", view_str(st->decided_by), "decision",
                                        view_str(st->decision), "reason", view_str(st->reason),
                                        "at", rest_time(st->at_ms)));
    }
    return steps;
}

/* A Quota as JSON, or null when absent. */
static json_t *s_quota(const Berth__Quota *q)
{
    if (!q)
        return json_null();
    return json_pack("{s:i, s:i, s:I, s:I}", "vms", q->vms, "vcpus", q->vcpus, "ram_mb",
                     (json_int_t)q->ram_mb, "disk_gb", (json_int_t)q->disk_gb);
}

/* What a request of kind onboarding, allocation or extension asks for, added to view. */
static void s_payload(json_t *view, const Berth__Request *r)
{
    const Berth__Onboarding *o = r->onboarding;
    const Berth__Allocation *a = r->allocation;
    const Berth__LeaseExtension *e = r->extension;
    if (r->os && *r->os) { /* a custom build: the machine it described */
        json_t *apps = json_array();
        for (size_t i = 0; apps && i < r->n_applications; i++)
            json_array_append_new(apps, json_string(S(r->applications[i])));
        json_object_set_new(view, "build",
                            json_pack("{s:s, s:o, s:o}", "os", r->os, "applications", apps,
                                      "flavor", view_resources(r->flavor)));
    }
    if (e)
        json_object_set_new(view, "extension",
                            json_pack("{s:o, s:i, s:o, s:o}", "vm", view_str(e->vm), "days",
                                      e->days, "beyond", view_str(e->beyond), "expires_at",
                                      rest_time(e->expires_ms)));
    if (o)
        json_object_set_new(view, "onboarding",
                            json_pack("{s:o, s:o, s:o, s:o, s:o, s:o}", "name", view_str(o->name),
                                      "cost_centre", view_str(o->cost_centre), "description",
                                      view_str(o->description), "quota", s_quota(o->quota),
                                      "charging_model", view_str(o->charging_model),
                                      "justification", view_str(o->justification)));
    if (a)
        json_object_set_new(
            view, "allocation",
            json_pack("{s:o, s:o, s:o, s:o, s:o, s:o}", "quota", s_quota(a->quota), "delta",
                      s_quota(a->delta), "justification", view_str(a->justification), "previous",
                      s_quota(a->previous), "applied", s_quota(a->applied), "reservations",
                      a->n_reservations
                          ? groups_reservations_view(a->reservations, a->n_reservations)
                          : json_null()));
}

/* The request as shown, with vms and tasks as given. */
static json_t *s_pack(const Berth__Request *r, json_t *vms, json_t *tasks)
{
    json_t *view =
        json_pack("{s:s, s:s, s:o, s:o, s:i, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "id",
                  r->id ? r->id : "", "state", r->state ? r->state : "", "template",
                  view_str(r->template_), "name", view_str(r->name), "count", r->count, "owner",
                  view_str(r->owner), "group", view_str(r->group), "vms", vms, "tasks", tasks,
                  "decided_by", view_str(r->decided_by), "reason", view_str(r->reason),
                  "created_at", rest_time(r->created_ms), "updated_at", rest_time(r->updated_ms));
    /* A request from before kinds and policies was a VM request decided by an admin. */
    if (view)
        json_object_update_new(
            view, json_pack("{s:s, s:o, s:o, s:o}", "kind", r->kind && *r->kind ? r->kind : "vm",
                            "policy", view_str(r->policy), "awaiting",
                            view_str(r->awaiting && *r->awaiting           ? r->awaiting
                                     : streq(r->state, "PENDING_APPROVAL") ? "admin"
                                                                           : ""),
                            "steps", s_steps(r)));
    if (view && r->n_ssh_keys)
        json_object_set_new(view, "ssh_keys", sshkeys_view_refs(r->ssh_keys, r->n_ssh_keys));
    if (view)
        json_object_set_new(view, "placement", view_str(r->placement));
    if (view)
        s_payload(view, r);
    return view;
}

/* The request with its VMs and tasks loaded from Redis. NULL with the error set when Redis
   failed. A VM or task not (yet) written shows as just its id. */
static json_t *s_view(http_req_t *req, const Berth__Request *r)
{
    json_t *vms = json_array();
    json_t *tasks = json_array();
    int failed = 0;
    for (size_t i = 0; i < r->n_vms && !failed; i++) {
        Berth__Vm *vm = NULL;
        int rc = rest_find(req, &berth__vm__descriptor, "vm", r->vms[i], (ProtobufCMessage **)&vm);
        if (rc == MODEL_NOT_FOUND)
            json_array_append_new(vms, json_pack("{s:s}", "id", r->vms[i]));
        else if (rc != 0)
            failed = 1;
        else {
            int down = vms_host_down(req, vm->host);
            if (down < 0)
                failed = 1;
            else
                json_array_append_new(vms, view_vm(vm, down));
            protobuf_c_message_free_unpacked(&vm->base, NULL);
        }
    }
    for (size_t i = 0; i < r->n_tasks && !failed; i++) {
        Berth__Task *task = NULL;
        int rc = rest_find(req, &berth__task__descriptor, "task", r->tasks[i],
                           (ProtobufCMessage **)&task);
        if (rc == MODEL_NOT_FOUND)
            json_array_append_new(tasks, json_pack("{s:s}", "id", r->tasks[i]));
        else if (rc != 0)
            failed = 1;
        else {
            vms_queue_position(req, task);
            json_array_append_new(tasks, view_task(task));
            protobuf_c_message_free_unpacked(&task->base, NULL);
        }
    }
    if (failed) {
        json_decref(vms);
        json_decref(tasks);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return NULL;
    }
    return s_pack(r, vms, tasks);
}

/* Answer with the request: status, and Location when given. */
static void s_answer(http_req_t *req, int status, const Berth__Request *r, int with_location)
{
    json_t *view = s_view(req, r);
    if (!view)
        return;
    if (with_location)
        snprintf(req->location, sizeof req->location, "/v1/requests/%s", r->id);
    http_json(req, status, json_pack("{s:o}", "request", view));
}

static void s_created(http_req_t *req, ProtobufCMessage *answer)
{
    const Berth__Request *created = (const Berth__Request *)answer;
    if (!rest_id_ok(created->id)) {
        http_error(req, "INTERNAL", "the approval service answered without a request id");
        return;
    }
    log_info(req->request_id, "request created", "{s:s, s:s, s:s, s:i, s:s}", "request",
             created->id, "state", created->state, "template", created->template_, "count",
             (int)created->count, "owner", req->user);
    s_answer(req, 202, created, 1);
}

/* A string array (or absent) as JSON. */
static json_t *s_strings(char **items, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, json_string(items[i] ? items[i] : ""));
    return a;
}

/* The answer of a dry run (validate_only): the verdict, the image chosen, which applications
   come with it and which at first boot, each rule broken and the suggestions. */
static void s_validated(http_req_t *req, ProtobufCMessage *answer)
{
    const Berth__BuildVerdict *v = (const Berth__BuildVerdict *)answer;
    json_t *violations = json_array(), *suggestions = json_array();
    for (size_t i = 0; i < v->n_violations; i++)
        json_array_append_new(violations,
                              json_pack("{s:s, s:s, s:s}", "rule", S(v->violations[i]->rule),
                                        "field", S(v->violations[i]->field), "message",
                                        S(v->violations[i]->message)));
    for (size_t i = 0; i < v->n_suggestions; i++)
        json_array_append_new(suggestions,
                              json_pack("{s:s, s:s, s:s}", "kind", S(v->suggestions[i]->kind),
                                        "value", S(v->suggestions[i]->value), "message",
                                        S(v->suggestions[i]->message)));
    json_t *image = json_null();
    if (v->image) {
        json_t *apps = json_array();
        for (size_t i = 0; i < v->image->n_applications; i++)
            json_array_append_new(apps, json_string(S(v->image->applications[i]->name)));
        image =
            json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:I, s:I}", "id", S(v->image->id), "name",
                      S(v->image->name), "kind", *S(v->image->kind) ? S(v->image->kind) : "model",
                      "os", S(v->image->os), "os_version", S(v->image->os_version), "applications",
                      apps, "min_ram_mb", (json_int_t)v->image->min_ram_mb, "min_disk_gb",
                      (json_int_t)v->image->min_disk_gb);
    }
    json_t *body = json_pack(
        "{s:s, s:b, s:o, s:o, s:o, s:{s:o, s:o}, s:{s:I, s:I}, s:o, s:o, s:o}", "verdict",
        v->ok ? "ok" : "refused", "ok", v->ok, "violations", violations, "suggestions", suggestions,
        "image", image, "applications", "from_image", s_strings(v->from_image, v->n_from_image),
        "first_boot", s_strings(v->first_boot, v->n_first_boot), "need", "ram_mb",
        (json_int_t)v->need_ram_mb, "disk_gb", (json_int_t)v->need_disk_gb, "flavor",
        view_resources(v->flavor), "largest_host", view_resources(v->largest), "template",
        v->template_ && *v->template_ ? json_string(v->template_) : json_null());
    if (!body) {
        http_error(req, "INTERNAL", "out of memory");
        return;
    }
    http_json(req, 200, body);
}

void requests_create(http_req_t *req)
{
    static const char *const allowed[] = { "template",   "name",         "count",
                                           "group",      "ssh_keys",     "network",
                                           "placement",  "networks",     "os",
                                           "os_version", "applications", "vcpus",
                                           "ram_mb",     "disk_gb",      NULL };
    const char *template_ = NULL, *name = NULL, *group = NULL, *network = NULL, *placement = NULL;
    const char *os = NULL, *os_version = NULL, *validate = http_query(req, "validate_only");
    int64_t count = 1, vcpus = 0, ram_mb = 0, disk_gb = 0;
    if (validate && !streq(validate, "true") && !streq(validate, "false")) {
        http_bad_field(req, "validate_only", "validate_only is true or false");
        return;
    }
    int dry = validate && streq(validate, "true");
    if (rest_body(req, allowed) || rest_str(req, "os", 0, LIMIT_IMAGE_TEXT_MAX, &os) < 0 ||
        rest_str(req, "template", !os && !dry, LIMIT_TEMPLATE_REF_MAX, &template_) < 0 ||
        rest_str(req, "name", !dry, LIMIT_VM_NAME_MAX, &name) < 0 ||
        rest_str(req, "group", 0, LIMIT_GROUP_REF_MAX, &group) < 0 ||
        rest_int(req, "count", 0, 1, LIMIT_COUNT_MAX, &count) < 0 ||
        rest_str(req, "network", 0, LIMIT_NETWORK_NAME_MAX, &network) < 0 ||
        rest_str(req, "placement", 0, 16, &placement) < 0 ||
        rest_str(req, "os_version", 0, LIMIT_IMAGE_TEXT_MAX, &os_version) < 0 ||
        rest_int(req, "vcpus", 0, 1, LIMIT_VCPUS_MAX, &vcpus) < 0 ||
        rest_int(req, "ram_mb", 0, LIMIT_RAM_MB_MIN, LIMIT_RAM_MB_MAX, &ram_mb) < 0 ||
        rest_int(req, "disk_gb", 0, 1, LIMIT_DISK_GB_MAX, &disk_gb) < 0)
        return;
    if (!template_ && !os) {
        http_bad_field(req, "template", "name a template, or describe the machine with os");
        return;
    }
    char *networks[LIMIT_VM_NETWORKS_MAX];
    size_t n_networks = 0;
    if (networks_string_array(req, "networks", LIMIT_VM_NETWORKS_MAX, LIMIT_NETWORK_NAME_MAX,
                              networks, &n_networks))
        return;
    char *apps[LIMIT_IMAGE_APPS_MAX];
    size_t n_apps = 0;
    if (networks_string_array(req, "applications", LIMIT_IMAGE_APPS_MAX, LIMIT_IMAGE_TEXT_MAX, apps,
                              &n_apps))
        return;
    const char *key = http_header(req, "Idempotency-Key");
    if (key && (strlen(key) == 0 || strlen(key) > LIMIT_IDEMPOTENCY_KEY_MAX ||
                strspn(key, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
                    strlen(key))) {
        berth_error_t error;
        error_set(&error, "BAD_REQUEST",
                  "Idempotency-Key must be 1 to %d letters, digits, '.', '_' or '-'",
                  LIMIT_IDEMPOTENCY_KEY_MAX);
        error_detail(&error, "header", "Idempotency-Key");
        http_fault(req, &error);
        return;
    }
    /* The keys named, as they are now: the request carries the copies its VMs get. */
    Berth__SshKey **ssh_keys = NULL;
    size_t n_ssh_keys = 0;
    if (sshkeys_resolve(req, json_object_get(req->body, "ssh_keys"), &ssh_keys, &n_ssh_keys) != 0)
        return;
    Berth__CreateRequest ask = BERTH__CREATE_REQUEST__INIT;
    ask.template_ = (char *)template_;
    ask.name = (char *)name;
    ask.count = (int32_t)count;
    ask.owner = req->user;
    ask.idempotency_key = (char *)(key ? key : "");
    ask.group = (char *)(group ? group : "");
    ask.ssh_keys = ssh_keys;
    ask.n_ssh_keys = n_ssh_keys;
    ask.network = (char *)(network ? network : "");
    ask.networks = networks; /* approval checks each (the group may use it) */
    ask.n_networks = n_networks;
    ask.placement = (char *)(placement ? placement : ""); /* approval checks */
    /* A custom build: approval checks each field and asks the scheduler for its verdict. */
    ask.os = (char *)(os ? os : "");
    ask.os_version = (char *)(os_version ? os_version : "");
    ask.applications = apps;
    ask.n_applications = n_apps;
    ask.vcpus = (int32_t)vcpus;
    ask.ram_mb = ram_mb;
    ask.disk_gb = disk_gb;
    ask.validate_only = dry;
    ask.template_ = (char *)(template_ ? template_ : "");
    ask.name = (char *)(name ? name : "");
    if (dry)
        rest_call(req, "approval", &ask.base, &berth__build_verdict__descriptor, s_validated);
    else
        rest_call(req, "approval", &ask.base, &berth__request__descriptor, s_created);
    sshkeys_free(ssh_keys, n_ssh_keys);
}

/* The body's object field (a quota: vms, vcpus, ram_mb, disk_gb, each optional) into q:
   0 when present and valid, 1 when absent, -1 with 400 set. */
static int s_quota_field(http_req_t *req, const char *field, Berth__Quota *q)
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
        if (i == 4)
            return http_bad_field(req, field, "unknown %s field '%.32s'", field, key);
        int64_t max = i < 2 ? INT32_MAX : LIMIT_GROUP_QUOTA_MAX;
        if (!json_is_integer(value) || json_integer_value(value) < 0 ||
            json_integer_value(value) > max)
            return http_bad_field(req, field, "%s.%s must be an integer from 0 to %lld", field,
                                  names[i], (long long)max);
        values[i] = json_integer_value(value);
    }
    berth__quota__init(q);
    q->vms = (int32_t)values[0];
    q->vcpus = (int32_t)values[1];
    q->ram_mb = values[2];
    q->disk_gb = values[3];
    return 0;
}

static void s_asked(http_req_t *req, ProtobufCMessage *answer)
{
    const Berth__Request *created = (const Berth__Request *)answer;
    if (!rest_id_ok(created->id)) {
        http_error(req, "INTERNAL", "the approval service answered without a request id");
        return;
    }
    log_info(req->request_id, "request created", "{s:s, s:s, s:s, s:s}", "request", created->id,
             "kind", created->kind, "state", created->state, "owner", req->user);
    s_answer(req, 202, created, 1);
}

void requests_onboard(http_req_t *req)
{
    static const char *const allowed[] = { "name",  "cost_centre",    "description",
                                           "quota", "charging_model", "justification",
                                           NULL };
    const char *name = NULL, *cost = NULL, *desc = NULL, *model = NULL, *why = NULL;
    Berth__Quota q;
    int has_quota;
    if (rest_body(req, allowed) || rest_str(req, "name", 1, LIMIT_GROUP_NAME_MAX, &name) ||
        rest_str(req, "cost_centre", 0, LIMIT_GROUP_COST_CENTRE_MAX, &cost) < 0 ||
        rest_str(req, "description", 0, LIMIT_GROUP_TEXT_MAX, &desc) < 0 ||
        rest_str(req, "charging_model", 0, 16, &model) < 0 ||
        rest_str(req, "justification", 1, LIMIT_REASON_MAX, &why) ||
        (has_quota = s_quota_field(req, "quota", &q)) < 0)
        return;
    if (has_quota) {
        http_bad_field(req, "quota", "quota (vms, vcpus, ram_mb, disk_gb) is required");
        return;
    }
    if (!rest_id_ok(name) || util_is_uuid(name)) {
        http_bad_field(req, "name",
                       "name must be letters, digits, '.', '_' or '-', and not a group id");
        return;
    }
    if (model && !streq(model, "allocation") && !streq(model, "reservation")) {
        http_bad_field(req, "charging_model", "charging_model must be allocation or reservation");
        return;
    }
    Berth__Onboarding o = BERTH__ONBOARDING__INIT;
    o.name = (char *)name;
    o.cost_centre = (char *)(cost ? cost : "");
    o.description = (char *)(desc ? desc : "");
    o.charging_model = (char *)(model ? model : "allocation");
    o.justification = (char *)why;
    o.quota = &q;
    Berth__CreateOnboarding ask = BERTH__CREATE_ONBOARDING__INIT;
    ask.onboarding = &o;
    rest_call(req, "approval", &ask.base, &berth__request__descriptor, s_asked);
}

void requests_allocate(http_req_t *req, const char *group)
{
    static const char *const allowed[] = { "quota", "delta", "reservations", "justification",
                                           NULL };
    const char *why = NULL;
    Berth__Quota q, d;
    Berth__Reservation items[LIMIT_RESERVATIONS_MAX], *ptrs[LIMIT_RESERVATIONS_MAX];
    size_t n = 0;
    int has_quota, has_delta, has_reservations = json_object_get(req->body, "reservations") != NULL;
    if (rest_body(req, allowed) || (has_quota = s_quota_field(req, "quota", &q)) < 0 ||
        (has_delta = s_quota_field(req, "delta", &d)) < 0 ||
        (has_reservations && groups_parse_reservations(req, items, ptrs, &n) != 0) ||
        rest_str(req, "justification", 0, LIMIT_REASON_MAX, &why) < 0)
        return;
    if ((has_quota == 0) + (has_delta == 0) + has_reservations != 1) {
        http_bad_field(req, "quota",
                       "give quota (the new values), delta (an increase) or reservations (what "
                       "the group's reservations become), one of the three");
        return;
    }
    if (has_reservations && n == 0) {
        http_bad_field(req, "reservations",
                       "reservations must name at least one {host, vcpus, ram_mb, disk_gb}");
        return;
    }
    Berth__Allocation a = BERTH__ALLOCATION__INIT;
    a.quota = has_quota == 0 ? &q : NULL;
    a.delta = has_delta == 0 ? &d : NULL;
    a.reservations = ptrs;
    a.n_reservations = n;
    a.justification = (char *)(why ? why : "");
    Berth__CreateAllocation ask = BERTH__CREATE_ALLOCATION__INIT;
    ask.group = (char *)group;
    ask.allocation = &a;
    rest_call(req, "approval", &ask.base, &berth__request__descriptor, s_asked);
}

void requests_extend(http_req_t *req, const char *vm, int days, const char *beyond)
{
    Berth__CreateExtension ask = BERTH__CREATE_EXTENSION__INIT;
    ask.vm = (char *)vm;
    ask.days = days;
    ask.beyond = (char *)(beyond ? beyond : "");
    rest_call(req, "approval", &ask.base, &berth__request__descriptor, s_asked);
}

void requests_get(http_req_t *req)
{
    Berth__Request *r = NULL;
    if (rest_load(req, &berth__request__descriptor, "request", req->params[0],
                  (ProtobufCMessage **)&r))
        return;
    /* Someone else's request does not exist as far as a user can tell. */
    if (!perm_allows(req, "request.get", r->owner, r->group))
        http_error(req, "NOT_FOUND", "no such request");
    else
        s_answer(req, 200, r, 0);
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

static void s_decided(http_req_t *req, const Berth__Request *decided, const char *what)
{
    log_info(req->request_id, what, "{s:s, s:s, s:s}", "request", req->params[0], "state",
             decided->state, "by", req->user);
    s_answer(req, 200, decided, 0);
}

static void s_approved(http_req_t *req, ProtobufCMessage *answer)
{
    s_decided(req, (const Berth__Request *)answer, "request approved");
}

static void s_rejected(http_req_t *req, ProtobufCMessage *answer)
{
    s_decided(req, (const Berth__Request *)answer, "request rejected");
}

static void s_decide(http_req_t *req, int approve)
{
    static const char *const approve_fields[] = { NULL };
    static const char *const reject_fields[] = { "reason", NULL };
    const char *id = req->params[0];
    const char *reason = NULL;
    /* Request ids are UUIDs: anything else names no request (404, like an unknown one). */
    if (!util_is_uuid(id)) {
        http_error(req, "NOT_FOUND", "no such request");
        return;
    }
    /* The permission table first: a request one may not read is not found; one a caller may
       read but not decide is 403. The approval service's engine then checks the level the
       request waits for (decide.h). */
    const char *action = approve ? "request.approve" : "request.reject";
    Berth__Request *r = NULL;
    if (rest_load(req, &berth__request__descriptor, "request", id, (ProtobufCMessage **)&r))
        return;
    int may = perm_allows(req, action, r->owner, r->group);
    int sees = may || perm_allows(req, "request.get", r->owner, r->group);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    if (!may) {
        if (sees)
            http_error_details(req, "FORBIDDEN",
                               "deciding a request needs the manager role in its group or the "
                               "admin role",
                               json_pack("{s:s}", "action", action));
        else
            http_error(req, "NOT_FOUND", "no such request");
        return;
    }
    /* The body is optional; when there is one it is held to the same rules as any other. */
    if (req->body && (rest_body(req, approve ? approve_fields : reject_fields) ||
                      (!approve && rest_str(req, "reason", 0, LIMIT_REASON_MAX, &reason) < 0)))
        return;
    Berth__DecideRequest ask = BERTH__DECIDE_REQUEST__INIT;
    ask.id = (char *)id;
    ask.approve = approve;
    ask.actor = req->user;
    ask.reason = (char *)(reason ? reason : "");
    rest_call(req, "approval", &ask.base, &berth__request__descriptor,
              approve ? s_approved : s_rejected);
}

void requests_approve(http_req_t *req)
{
    s_decide(req, 1);
}

void requests_reject(http_req_t *req)
{
    s_decide(req, 0);
}

/* The claims of the caller (user, platform role, group roles) as the approval service gets
   them signed: what the policy engine judges. Free with s_claims_free. */
static void s_claims(http_req_t *req, Berth__UserAssertion *claims, char **roles)
{
    berth__user_assertion__init(claims);
    claims->user = req->user;
    roles[0] = req->role;
    claims->roles = roles;
    claims->n_roles = 1;
    size_t n = json_object_size(req->groups);
    claims->groups = n ? calloc(n, sizeof *claims->groups) : NULL;
    const char *group;
    json_t *role;
    json_object_foreach(claims->groups ? req->groups : NULL, group, role)
    {
        if (asprintf(&claims->groups[claims->n_groups], "%s:%s", group, json_string_value(role)) <
            0)
            break;
        claims->n_groups++;
    }
}

static void s_claims_free(Berth__UserAssertion *claims)
{
    for (size_t i = 0; i < claims->n_groups; i++)
        free(claims->groups[i]);
    free(claims->groups);
}

/* The filters of a list call. */
typedef struct {
    const char *state, *owner, *kind;
    char group[UTIL_ID_LEN];
    int has_group;
    int inbox; /* state=PENDING_APPROVAL: only what the caller may decide now */
    const Berth__UserAssertion *claims;
} s_filter_t;

static int s_matches(const s_filter_t *f, const Berth__Request *r)
{
    if (f->state && !streq(r->state, f->state))
        return 0;
    if (f->owner && !streq(r->owner, f->owner))
        return 0;
    if (f->has_group && !streq(r->group, f->group))
        return 0;
    if (f->kind && !streq(r->kind && *r->kind ? r->kind : "vm", f->kind))
        return 0;
    if (f->inbox) {
        fault_t fault = { 0 }; /* the engine's own rule (decide.h), as approval applies it */
        return decide_may(r, f->claims, &fault) == 0;
    }
    return 1;
}

/*  Paging as GET /v1/vms (vms.c): berth:requests orders request ids by creation time, a page
    starts after the marker and holds at most `limit` requests the caller may see (request.get)
    and the filters keep; one call looks at no more than scan_max ids, so a short page with a
    next_marker means: continue from there. A page shows each request's VMs and tasks by id
   (RequestSummary). */
void requests_list(http_req_t *req)
{
    gateway_t *gw = req->app;
    int64_t limit = gw->list_default;
    const char *text = http_query(req, "limit");
    if (text && util_parse_int(text, 1, gw->list_max, &limit) != 0) {
        http_bad_field(req, "limit", "limit must be an integer from 1 to %d", gw->list_max);
        return;
    }
    s_filter_t f = { 0 };
    f.state = http_query(req, "state");
    f.owner = http_query(req, "owner");
    const char *group_ref = http_query(req, "group");
    f.kind = http_query(req, "kind");
    if (f.kind && !streq(f.kind, "vm") && !streq(f.kind, "onboarding") &&
        !streq(f.kind, "allocation")) {
        http_bad_field(req, "kind", "kind must be vm, onboarding or allocation");
        return;
    }
    if (f.state && !streq(f.state, "PENDING_APPROVAL") && !streq(f.state, "APPROVED") &&
        !streq(f.state, "REJECTED")) {
        http_bad_field(req, "state", "state must be PENDING_APPROVAL, APPROVED or REJECTED");
        return;
    }
    if (f.owner && (!*f.owner || strlen(f.owner) > LIMIT_USER_NAME_MAX)) {
        http_bad_field(req, "owner", "owner must be a user name of 1 to %d bytes",
                       LIMIT_USER_NAME_MAX);
        return;
    }
    if (group_ref) {
        if (!*group_ref || strlen(group_ref) > LIMIT_GROUP_REF_MAX) {
            http_bad_field(req, "group", "group must be a group id or name");
            return;
        }
        if (rest_group_id(req, group_ref, f.group) != 0)
            return;
        f.has_group = 1;
    }
    f.inbox = f.state && streq(f.state, "PENDING_APPROVAL");
    int64_t pos = 0;
    if (rest_marker_pos(req, KEYS_REQUESTS, "request", &pos) != 0)
        return;

    /* Who sees every request (admin, operator), or which groups' besides their own. */
    int all = perm_allows(req, "request.get", NULL, NULL);
    const char **groups = calloc(json_object_size(req->groups) + 1, sizeof *groups);
    size_t n_groups = 0;
    const char *group;
    json_t *role;
    if (!groups) {
        http_error(req, "INTERNAL", "out of memory");
        return;
    }
    json_object_foreach(req->groups, group, role)
    {
        if (perm_allows(req, "request.get", NULL, group))
            groups[n_groups++] = group;
    }
    Berth__UserAssertion claims;
    char *roles[1];
    s_claims(req, &claims, roles);
    f.claims = &claims;
    json_t *page = json_array();
    char last_seen[72] = "", last_taken[72] = "";
    int64_t last_taken_pos = -1;
    int scanned = 0, at_end = 0, failed = 0;
    while ((int64_t)json_array_size(page) < limit && scanned < gw->scan_max && !at_end && !failed) {
        int64_t want = limit - (int64_t)json_array_size(page);
        if (want < S_LIST_BATCH) /* filtered: read at least a batch */
            want = S_LIST_BATCH;
        if (want > gw->scan_max - scanned)
            want = gw->scan_max - scanned;
        redisReply *ids = store_command(req->store, "ZRANGE %s %lld %lld", KEYS_REQUESTS,
                                        (long long)pos, (long long)(pos + want - 1));
        if (!ids || ids->type != REDIS_REPLY_ARRAY) {
            if (ids)
                freeReplyObject(ids);
            failed = 1;
            break;
        }
        if ((int64_t)ids->elements < want)
            at_end = 1;
        size_t n = ids->elements, nkeys = 0;
        char(*keys)[KEYS_MAX] = calloc(n ? n : 1, sizeof *keys);
        const char **argv = calloc(n ? n : 1, sizeof *argv);
        redisReply *hashes = NULL;
        if (keys && argv) {
            for (size_t i = 0; i < n; i++) {
                const redisReply *e = ids->element[i];
                if (e->type == REDIS_REPLY_STRING && rest_id_ok(e->str))
                    argv[nkeys] = keys_build(keys[nkeys], KEYS_REQUEST, e->str, NULL), nkeys++;
            }
            hashes = rest_hashes(req, nkeys, argv, all ? NULL : req->user, groups, n_groups);
        }
        free(argv);
        free(keys);
        if (!hashes) {
            freeReplyObject(ids);
            failed = 1;
            break;
        }
        size_t used = 0, k = 0;
        for (; used < n && (int64_t)json_array_size(page) < limit && scanned < gw->scan_max &&
               !failed;
             used++) {
            const redisReply *e = ids->element[used];
            scanned++;
            if (e->type != REDIS_REPLY_STRING || !rest_id_ok(e->str))
                continue;
            util_strlcpy(last_seen, e->str, sizeof last_seen);
            const redisReply *hash = hashes->element[k++];
            if (hash->type != REDIS_REPLY_ARRAY || hash->elements == 0)
                continue; /* not the caller's to see, or gone */
            Berth__Request *r =
                (Berth__Request *)model_from_hash(&berth__request__descriptor, hash);
            if (!r) {
                failed = 1;
                break;
            }
            if (s_matches(&f, r) && (!req->scoped || *perm_group_role(req, r->group))) {
                json_t *vms = json_array(), *tasks = json_array();
                for (size_t i = 0; i < r->n_vms; i++)
                    json_array_append_new(vms, json_string(r->vms[i]));
                for (size_t i = 0; i < r->n_tasks; i++)
                    json_array_append_new(tasks, json_string(r->tasks[i]));
                json_array_append_new(page, s_pack(r, vms, tasks));
                util_strlcpy(last_taken, e->str, sizeof last_taken);
                last_taken_pos = pos + (int64_t)used;
            }
            protobuf_c_message_free_unpacked(&r->base, NULL);
        }
        if (used < n)
            at_end = 0;
        pos += (int64_t)used;
        freeReplyObject(hashes);
        freeReplyObject(ids);
    }
    s_claims_free(&claims);
    free(groups);
    if (failed) {
        json_decref(page);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return;
    }
    json_t *next = rest_next_marker(req, KEYS_REQUESTS, (int64_t)json_array_size(page), limit,
                                    last_taken, last_taken_pos, at_end, last_seen);
    http_json(req, 200, json_pack("{s:o, s:o}", "requests", page, "next_marker", next));
}
