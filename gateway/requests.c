/*  requests: asking for VMs from a template, and an admin's decision on a request that
    needs one. The approval service owns requests; the gateway checks the input, passes the
    caller's identity along and shows the request with its VMs and tasks as Redis has them. */
#include "gateway.h"
#include "keys.h"

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
    return json_pack("{s:s, s:s, s:o, s:o, s:i, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "id",
                     r->id ? r->id : "", "state", r->state ? r->state : "", "template",
                     view_str(r->template_), "name", view_str(r->name), "count", r->count, "owner",
                     view_str(r->owner), "group", view_str(r->group), "vms", vms, "tasks", tasks,
                     "decided_by", view_str(r->decided_by), "reason", view_str(r->reason),
                     "created_at", rest_time(r->created_ms), "updated_at",
                     rest_time(r->updated_ms));
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

void requests_create(http_req_t *req)
{
    static const char *const allowed[] = { "template", "name", "count", "group", NULL };
    const char *template_ = NULL, *name = NULL, *group = NULL;
    int64_t count = 1;
    if (rest_body(req, allowed) ||
        rest_str(req, "template", 1, LIMIT_TEMPLATE_REF_MAX, &template_) ||
        rest_str(req, "name", 1, LIMIT_VM_NAME_MAX, &name) ||
        rest_str(req, "group", 0, LIMIT_GROUP_REF_MAX, &group) < 0 ||
        rest_int(req, "count", 0, 1, LIMIT_COUNT_MAX, &count) < 0)
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
    Berth__CreateRequest ask = BERTH__CREATE_REQUEST__INIT;
    ask.template_ = (char *)template_;
    ask.name = (char *)name;
    ask.count = (int32_t)count;
    ask.owner = req->user;
    ask.idempotency_key = (char *)(key ? key : "");
    ask.group = (char *)(group ? group : "");
    rest_call(req, "approval", &ask.base, &berth__request__descriptor, s_created);
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
