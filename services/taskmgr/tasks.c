/*  tasks: the engine that runs provisioning and disposal.

    Holding. Tasks that need a holder sit in berth:tasks:due scored by when they become due
    (0 for a new task; a held task's score is its lease end). Every tick an instance takes
    what is due (a Lua step that bumps the task's epoch and names itself holder), then
    advances each task it holds by one stage at most. Every write of a task checks holder and
    epoch in the same atomic step, so an instance that stalled past its lease and was
    replaced can no longer change anything: its write fails and it lets the task go.

    Stages. A task kind is a table of stages; a stage function answers DONE (next stage),
    WAIT (ask again next tick), or FAIL. Nothing here blocks the loop: a stage that asks the
    scheduler or the stager sends its call and waits; the answer comes back on the loop and
    steps the task at once. Stages that talk to a host send one idempotent agent command and
    wait for its result, recorded in the task as `command`, so a new holder waits for the
    same command instead of sending another. A failed provisioning runs the rollback
    table (remove what the host built, release the claim) and, if the failure was the host's,
    tries again on another host, at most max_attempts hosts in all; then the VM ends in ERROR
    with the fault. */
#include "tasks.h"
#include "agents.h"
#include "model.h"

#include <assert.h>
#include <stdarg.h>

typedef enum { S_DONE, S_WAIT, S_FAIL } s_rc_t;

typedef struct {
    char id[UTIL_ID_LEN];
    int64_t epoch;
    json_t *task;               /* the task as this instance last wrote it */
    json_t *vm;                 /* the VM, loaded when the task is taken */
    Berth__StagedImage *staged; /* the stager's answer, kept for the host stages */
    int64_t stage_since;        /* monotonic ms the current stage began here */
    int64_t next_try;           /* monotonic ms before which a waiting stage is not retried */
    char result[512];           /* what the last stage did, or why it failed */
    int lost;                   /* a write was refused: the task is no longer ours */
    char call[UTIL_ID_LEN];     /* id of the bus call in flight ("" when none) */
    Berth__Envelope *reply;     /* its answer, once it came */
    int call_timed_out;         /* ...or that none came before its deadline */
} s_held_t;

struct _tasks_t {
    service_t *service;
    store_t *store;
    bus_client_t *bus;
    zhashx_t *held;         /* task id -> s_held_t */
    int lease_ms;           /* a holder's lease; renewed while it works */
    int max_held;           /* tasks one instance runs at once */
    int call_timeout_ms;    /* bus calls to scheduler and stager */
    int command_timeout_ms; /* an agent command without result fails after this */
    int ready_timeout_ms;   /* a started VM must be reported RUNNING within this */
    int max_attempts;       /* hosts a provisioning tries before it fails */
};

typedef s_rc_t(s_stage_fn)(tasks_t *self, s_held_t *h);

typedef struct {
    const char *name;
    int percent; /* progress once this stage is running */
    s_stage_fn *fn;
    int on_host; /* a failure here is the host's: worth trying another */
} s_stage_t;

/* ---- small JSON accessors ----------------------------------------------------------------- */

static const char *s_str(json_t *obj, const char *key)
{
    const char *v = json_string_value(json_object_get(obj, key));
    return v ? v : "";
}

static int64_t s_int(json_t *obj, const char *key)
{
    return json_integer_value(json_object_get(obj, key));
}

static void s_set_str(json_t *obj, const char *key, const char *value)
{
    json_object_set_new(obj, key, json_string(value ? value : ""));
}

static void s_set_int(json_t *obj, const char *key, int64_t value)
{
    json_object_set_new(obj, key, json_integer(value));
}

static void s_result(s_held_t *h, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void s_result(s_held_t *h, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    vsnprintf(h->result, sizeof h->result, format, ap);
    va_end(ap);
}

static void s_held_free(void **item)
{
    s_held_t *h = *item;
    if (h) {
        json_decref(h->task);
        json_decref(h->vm);
        if (h->staged)
            berth__staged_image__free_unpacked(h->staged, NULL);
        if (h->reply)
            berth__envelope__free_unpacked(h->reply, NULL);
        free(h);
        *item = NULL;
    }
}

/* ---- writing ------------------------------------------------------------------------------ */

/* Put a JSON object as desc's message into tx. -1 if it does not convert (a bug). */
static int s_put(model_tx_t *tx, const char *key, const ProtobufCMessageDescriptor *desc,
                 json_t *obj)
{
    const char *why = NULL;
    ProtobufCMessage *msg = model_from_json(desc, obj, &why);
    if (!msg) {
        log_error(NULL, "cannot encode object", "{s:s, s:s}", "key", key, "reason", why);
        return -1;
    }
    model_tx_put(tx, key, msg);
    if (desc == &berth__vm__descriptor)
        model_tx_vm_event(tx, (Berth__Vm *)msg);
    protobuf_c_message_free_unpacked(msg, NULL);
    return 0;
}

/* Write the held task (and the VM when vm_changed) in one step guarded by holder and epoch.
   extra, when set, adds more writes to the same step. 0, or -1 when the task is no longer
   ours (another instance took it) or Redis failed: the caller then lets the task go. */
static int s_save(tasks_t *self, s_held_t *h, int vm_changed,
                  void (*extra)(model_tx_t *tx, void *arg), void *arg)
{
    char key[MODEL_KEY_MAX], vkey[MODEL_KEY_MAX], epoch[24];
    model_key(key, sizeof key, "task", h->id);
    snprintf(epoch, sizeof epoch, "%lld", (long long)h->epoch);
    json_t *t = h->task;
    int64_t now = util_now_ms();
    const char *state = s_str(t, "state");
    int finished = streq(state, "SUCCEEDED") || streq(state, "FAILED") || streq(state, "ABORTED");
    int64_t lease_until = now + self->lease_ms;
    s_set_int(t, "lease_until_ms", finished ? 0 : lease_until);
    s_set_int(t, "updated_ms", now);
    s_set_int(t, "version", s_int(t, "version") + 1);

    model_tx_t *tx = model_tx_new();
    model_tx_check(tx, key, "holder", service_instance(self->service));
    model_tx_check(tx, key, "epoch", epoch);
    int rc = s_put(tx, key, &berth__task__descriptor, t);
    model_tx_event(tx, "task.state", "key", key, "task", h->id, "state", state, "stage",
                   s_str(t, "stage"), NULL);
    if (finished)
        model_tx_zrem(tx, "berth:tasks:due", h->id);
    else
        model_tx_zadd(tx, "berth:tasks:due", lease_until, h->id);
    if (vm_changed && rc == 0) {
        json_t *vm = h->vm;
        model_key(vkey, sizeof vkey, "vm", s_str(vm, "id"));
        model_tx_check_version(tx, vkey, s_int(vm, "version"));
        s_set_int(vm, "version", s_int(vm, "version") + 1);
        s_set_int(vm, "updated_ms", now);
        rc = s_put(tx, vkey, &berth__vm__descriptor, vm);
    }
    if (extra)
        extra(tx, arg);
    const char *why = NULL;
    if (rc == 0)
        rc = model_tx_commit(tx, self->store, &why);
    model_tx_destroy(&tx);
    if (rc != 0) {
        log_warn(s_str(t, "request_id"), "task write refused; letting the task go", "{s:s, s:i}",
                 "task", h->id, "rc", rc);
        h->lost = 1;
        return -1;
    }
    return 0;
}

/* ---- steps -------------------------------------------------------------------------------- */

static json_t *s_steps(s_held_t *h)
{
    json_t *steps = json_object_get(h->task, "steps");
    if (!json_is_array(steps)) {
        steps = json_array();
        json_object_set_new(h->task, "steps", steps);
    }
    return steps;
}

static void s_step_open(s_held_t *h, const s_stage_t *stage)
{
    s_set_str(h->task, "stage", stage->name);
    s_set_int(h->task, "percent", stage->percent);
    json_array_append_new(s_steps(h),
                          json_pack("{s:s, s:s, s:I, s:I, s:s}", "name", stage->name, "state",
                                    "RUNNING", "started_ms", (json_int_t)util_now_ms(),
                                    "finished_ms", (json_int_t)0, "result", ""));
    h->stage_since = util_mono_ms();
    h->next_try = 0;
    /* A call of the stage before is not this stage's answer: forget it. */
    h->call[0] = '\0';
    h->call_timed_out = 0;
    if (h->reply)
        berth__envelope__free_unpacked(h->reply, NULL);
    h->reply = NULL;
}

static void s_step_close(s_held_t *h, const char *state)
{
    json_t *steps = s_steps(h);
    json_t *last = json_array_get(steps, json_array_size(steps) - 1);
    if (!last || !streq(s_str(last, "state"), "RUNNING"))
        return;
    s_set_str(last, "state", state);
    s_set_int(last, "finished_ms", util_now_ms());
    s_set_str(last, "result", h->result);
}

/* ---- calls to other services -------------------------------------------------------------- */

static void s_on_reply(bus_client_t *client, const char *call_id, Berth__Envelope *reply,
                       void *arg);

/* One bus call, never waited for: the first ask sends it and answers S_WAIT; the reply
   comes back on the loop (s_on_reply) and the stage, asked again, takes it: S_DONE with
   *reply_p, S_FAIL with the service's error in h->result, or S_WAIT again when no instance
   answered in time (the stage asks again until its own deadline). */
static s_rc_t s_call(tasks_t *self, s_held_t *h, const char *service, const ProtobufCMessage *body,
                     Berth__Envelope **reply_p)
{
    if (h->call_timed_out) {
        h->call_timed_out = 0;
        s_result(h, "%s did not answer", service);
        h->next_try = util_mono_ms() + 500;
        return S_WAIT;
    }
    if (!h->reply) {
        if (!*h->call && bus_client_send(self->bus, service, body, s_str(h->task, "request_id"),
                                         self->call_timeout_ms, s_on_reply, self, h->call) != 0) {
            s_result(h, "cannot send to %s", service);
            h->next_try = util_mono_ms() + 500;
        }
        return S_WAIT;
    }
    Berth__Envelope *reply = h->reply;
    h->reply = NULL;
    if (reply->error) {
        s_result(h, "%s", reply->error->message);
        int transient = streq(reply->error->code, "UNAVAILABLE");
        berth__envelope__free_unpacked(reply, NULL);
        if (transient) {
            h->next_try = util_mono_ms() + 500;
            return S_WAIT;
        }
        return S_FAIL;
    }
    *reply_p = reply;
    return S_DONE;
}

/* A stage still waiting after timeout_ms fails with what it last saw. */
static s_rc_t s_waited(s_held_t *h, int timeout_ms)
{
    return util_mono_ms() - h->stage_since > timeout_ms ? S_FAIL : S_WAIT;
}

/* ---- provisioning stages ------------------------------------------------------------------ */

static Berth__Resources s_flavor(s_held_t *h)
{
    Berth__Resources r = BERTH__RESOURCES__INIT;
    json_t *f = json_object_get(h->vm, "flavor");
    r.vcpus = (int32_t)s_int(f, "vcpus");
    r.ram_mb = s_int(f, "ram_mb");
    r.disk_gb = s_int(f, "disk_gb");
    return r;
}

static s_rc_t s_validate(tasks_t *self, s_held_t *h)
{
    (void)self;
    const char *state = s_str(h->vm, "state");
    Berth__Resources f = s_flavor(h);
    if (!streq(state, "PROVISIONING")) {
        s_result(h, "VM is %s, not PROVISIONING", state);
        return S_FAIL;
    }
    if (f.vcpus <= 0 || f.ram_mb <= 0 || f.disk_gb <= 0 || !*s_str(h->vm, "image")) {
        s_result(h, "VM has no valid flavor or image");
        return S_FAIL;
    }
    s_result(h, "%d vCPU, %lld MB RAM, %lld GB disk from image %s", f.vcpus, (long long)f.ram_mb,
             (long long)f.disk_gb, s_str(h->vm, "image"));
    return S_DONE;
}

static s_rc_t s_schedule(tasks_t *self, s_held_t *h)
{
    Berth__SelectHost req = BERTH__SELECT_HOST__INIT;
    Berth__Resources flavor = s_flavor(h);
    json_t *tried = json_object_get(h->task, "tried");
    char *exclude[16];
    size_t i;
    json_t *v;
    json_array_foreach(tried, i, v)
    {
        if (req.n_exclude < 16)
            exclude[req.n_exclude++] = (char *)json_string_value(v);
    }
    req.vm = (char *)s_str(h->vm, "id");
    req.flavor = &flavor;
    req.exclude = exclude;
    Berth__Envelope *reply = NULL;
    s_rc_t rc = s_call(self, h, "scheduler", &req.base, &reply);
    if (rc == S_WAIT)
        return s_waited(h, self->command_timeout_ms);
    if (rc != S_DONE)
        return rc;
    Berth__HostSelection *sel =
        (Berth__HostSelection *)envelope_body(reply, &berth__host_selection__descriptor);
    berth__envelope__free_unpacked(reply, NULL);
    if (!sel || !*sel->host) {
        if (sel)
            berth__host_selection__free_unpacked(sel, NULL);
        s_result(h, "scheduler gave no host");
        return S_FAIL;
    }
    s_set_str(h->task, "host", sel->host);
    s_set_str(h->vm, "host", sel->host);
    json_t *alts = json_array();
    for (i = 0; i < sel->n_alternates; i++)
        json_array_append_new(alts, json_string(sel->alternates[i]));
    json_object_set_new(h->task, "alternates", alts);
    s_result(h, "claimed on host %s (%zu alternates)", sel->host, sel->n_alternates);
    berth__host_selection__free_unpacked(sel, NULL);
    return S_DONE;
}

/* The stager's answer for this VM: asked once, kept while the task is held here; a new
   holder asks again (the stager answers the same seed for the same VM). */
static s_rc_t s_staged(tasks_t *self, s_held_t *h)
{
    if (h->staged)
        return S_DONE;
    Berth__StageImage req = BERTH__STAGE_IMAGE__INIT;
    req.vm = (char *)s_str(h->vm, "id");
    req.name = (char *)s_str(h->vm, "name");
    req.image = (char *)s_str(h->vm, "image");
    Berth__Envelope *reply = NULL;
    s_rc_t rc = s_call(self, h, "stager", &req.base, &reply);
    if (rc == S_WAIT)
        return s_waited(h, self->command_timeout_ms);
    if (rc != S_DONE)
        return rc;
    h->staged = (Berth__StagedImage *)envelope_body(reply, &berth__staged_image__descriptor);
    berth__envelope__free_unpacked(reply, NULL);
    if (!h->staged || !h->staged->image || !h->staged->seed_iso.len) {
        s_result(h, "stager answered without image or seed");
        return S_FAIL;
    }
    return S_DONE;
}

static s_rc_t s_stage_image(tasks_t *self, s_held_t *h)
{
    s_rc_t rc = s_staged(self, h);
    if (rc == S_DONE)
        s_result(h, "image %s (%s), seed %zu bytes", h->staged->image->name,
                 h->staged->image->format, h->staged->seed_iso.len);
    return rc;
}

/* Record the command id on the task and queue the command, in one step. */
static void s_queue_cmd(model_tx_t *tx, void *arg)
{
    const char **hc = arg;
    agents_queue(tx, hc[0], hc[1]);
}

/* Send op for this VM to its host once, then wait for the result. */
static s_rc_t s_on_host(tasks_t *self, s_held_t *h, const char *op)
{
    const char *host = s_str(h->task, "host");
    const char *cmd_id = s_str(h->task, "command");
    if (!*cmd_id) {
        Berth__AgentCommand cmd = BERTH__AGENT_COMMAND__INIT;
        Berth__Resources flavor = s_flavor(h);
        cmd.op = (char *)op;
        cmd.vm = (char *)s_str(h->vm, "id");
        cmd.name = (char *)s_str(h->vm, "name");
        cmd.flavor = &flavor;
        cmd.image = (char *)s_str(h->vm, "image");
        if (streq(op, "CREATE_DISK") || streq(op, "PUT_SEED")) {
            s_rc_t rc = s_staged(self, h);
            if (rc != S_DONE)
                return rc;
            cmd.image_path = h->staged->image->path;
            cmd.image_format = h->staged->image->format;
            if (streq(op, "PUT_SEED"))
                cmd.seed_iso = h->staged->seed_iso;
        }
        cmd.deadline_ms = util_now_ms() + self->command_timeout_ms;
        char id[UTIL_ID_LEN];
        if (agents_prepare(self->store, host, &cmd, id) != 0) {
            s_result(h, "state store unreachable");
            h->next_try = util_mono_ms() + 500;
            return S_WAIT;
        }
        s_set_str(h->task, "command", id);
        const char *hc[] = { host, id };
        if (s_save(self, h, 0, s_queue_cmd, hc) != 0)
            return S_WAIT; /* the caller sees the task gone from our hands */
        h->stage_since = util_mono_ms();
        return S_WAIT;
    }
    char state[16], error[384], power[32];
    if (agents_result(self->store, cmd_id, state, sizeof state, error, sizeof error, power,
                      sizeof power) != 0)
        return S_WAIT;
    if (streq(state, "PENDING")) {
        s_result(h, "host %s did not complete %s within %d s", host, op,
                 self->command_timeout_ms / 1000);
        return s_waited(h, self->command_timeout_ms);
    }
    s_set_str(h->task, "command", "");
    if (streq(state, "DONE")) {
        s_result(h, "%s on host %s%s%s", op, host, *power ? ": " : "", power);
        if (*power)
            s_set_str(h->vm, "power_state", power);
        return S_DONE;
    }
    if (streq(state, "FAILED")) {
        s_result(h, "%s", *error ? error : "agent reported a failure");
        return S_FAIL;
    }
    /* The record is gone (expired): send the command again. */
    return S_WAIT;
}

static s_rc_t s_create_disk(tasks_t *self, s_held_t *h)
{
    return s_on_host(self, h, "CREATE_DISK");
}

static s_rc_t s_build_seed(tasks_t *self, s_held_t *h)
{
    return s_on_host(self, h, "PUT_SEED");
}

static s_rc_t s_define(tasks_t *self, s_held_t *h)
{
    return s_on_host(self, h, "DEFINE");
}

static s_rc_t s_power_on(tasks_t *self, s_held_t *h)
{
    return s_on_host(self, h, "START");
}

/* Ready when the host's own heartbeat reports the domain RUNNING: what libvirt says,
   not what the start command hoped. */
static s_rc_t s_wait_ready(tasks_t *self, s_held_t *h)
{
    char power[32] = "";
    const char *host = s_str(h->task, "host");
    if (agents_power(self->store, host, s_str(h->vm, "id"), power, sizeof power) == 0 &&
        streq(power, "RUNNING")) {
        s_set_str(h->vm, "power_state", power);
        s_result(h, "host %s reports the domain RUNNING", host);
        return S_DONE;
    }
    s_result(h, "host %s did not report the domain RUNNING within %d s (last: %s)", host,
             self->ready_timeout_ms / 1000, *power ? power : "not reported");
    return s_waited(h, self->ready_timeout_ms);
}

/* ---- undoing and disposal ----------------------------------------------------------------- */

/* Remove domain, disk and seed from the host (nothing to do when no host was claimed). */
static s_rc_t s_destroy(tasks_t *self, s_held_t *h)
{
    if (!*s_str(h->task, "host")) {
        s_result(h, "nothing on any host");
        return S_DONE;
    }
    s_rc_t rc = s_on_host(self, h, "DESTROY");
    if (rc == S_DONE)
        s_set_str(h->vm, "power_state", "NOSTATE");
    return rc;
}

/* Give the claim back. Retried for as long as it takes: a claim never released is capacity
   lost for good, so this stage does not time out. */
static s_rc_t s_release(tasks_t *self, s_held_t *h)
{
    Berth__ReleaseClaim req = BERTH__RELEASE_CLAIM__INIT;
    req.vm = (char *)s_str(h->vm, "id");
    Berth__Envelope *reply = NULL;
    s_rc_t rc = s_call(self, h, "scheduler", &req.base, &reply);
    if (rc == S_FAIL) {
        h->next_try = util_mono_ms() + 2000;
        log_warn(s_str(h->task, "request_id"), "claim release refused; retrying", "{s:s, s:s}",
                 "vm", req.vm, "reason", h->result);
        return S_WAIT;
    }
    if (rc != S_DONE)
        return S_WAIT;
    Berth__ClaimReleased *rel =
        (Berth__ClaimReleased *)envelope_body(reply, &berth__claim_released__descriptor);
    s_result(h, rel && rel->released ? "claim released" : "no claim held");
    if (rel)
        berth__claim_released__free_unpacked(rel, NULL);
    berth__envelope__free_unpacked(reply, NULL);
    return S_DONE;
}

static const s_stage_t s_provision[] = {
    { "validate", 5, s_validate, 0 },
    { "schedule", 15, s_schedule, 0 },
    { "stage_image", 30, s_stage_image, 0 },
    { "create_disk", 45, s_create_disk, 1 },
    { "build_seed", 60, s_build_seed, 1 },
    { "define", 75, s_define, 1 },
    { "power_on", 85, s_power_on, 1 },
    { "wait_ready", 95, s_wait_ready, 1 },
    { NULL, 0, NULL, 0 },
};

static const s_stage_t s_rollback[] = {
    { "undo_host", 96, s_destroy, 0 },
    { "release_claim", 98, s_release, 0 },
    { NULL, 0, NULL, 0 },
};

static const s_stage_t s_dispose[] = {
    { "destroy", 30, s_destroy, 0 },
    { "release_claim", 80, s_release, 0 },
    { NULL, 0, NULL, 0 },
};

static const s_stage_t *s_table(s_held_t *h)
{
    if (streq(s_str(h->task, "kind"), "DISPOSE"))
        return s_dispose;
    json_t *rb = json_object_get(h->task, "rolling_back");
    return json_is_true(rb) ? s_rollback : s_provision;
}

/* ---- endings ------------------------------------------------------------------------------ */

static void s_finish_task(s_held_t *h, const char *state)
{
    s_set_str(h->task, "state", state);
    s_set_str(h->task, "stage", "done");
    s_set_int(h->task, "finished_ms", util_now_ms());
    s_set_str(h->task, "holder", "");
    if (streq(state, "SUCCEEDED"))
        s_set_int(h->task, "percent", 100);
}

/* The last stage of the task's current table is done. */
static int s_complete(tasks_t *self, s_held_t *h)
{
    json_t *t = h->task, *vm = h->vm;
    if (streq(s_str(t, "kind"), "DISPOSE")) {
        s_set_str(vm, "state", "DISPOSED");
        s_set_str(vm, "power_state", "NOSTATE");
        s_finish_task(h, "SUCCEEDED");
        return s_save(self, h, 1, NULL, NULL);
    }
    if (!json_is_true(json_object_get(t, "rolling_back"))) {
        int64_t now = util_now_ms();
        s_set_str(vm, "state", "ACTIVE");
        s_set_str(vm, "fault", "");
        json_object_set_new(vm, "lease",
                            json_pack("{s:I}", "expires_ms",
                                      (json_int_t)(now + s_int(vm, "lease_days") * 86400000LL)));
        s_set_str(t, "fault", "");
        s_finish_task(h, "SUCCEEDED");
        return s_save(self, h, 1, NULL, NULL);
    }
    /* Rolled back. Another host if the failure was the host's and attempts are left. */
    json_t *tried = json_object_get(t, "tried");
    char host[128]; /* a copy: the task's own string goes when "host" is cleared below */
    util_strlcpy(host, s_str(t, "host"), sizeof host);
    size_t n = json_array_size(tried);
    int host_failed = n && streq(json_string_value(json_array_get(tried, n - 1)), host);
    json_object_set_new(t, "rolling_back", json_false());
    s_set_str(t, "host", "");
    s_set_str(vm, "host", "");
    if (host_failed && (int)n < self->max_attempts) {
        log_info(s_str(t, "request_id"), "retrying provisioning on another host", "{s:s, s:s, s:i}",
                 "vm", s_str(vm, "id"), "failed_host", host, "attempt", (int)n + 1);
        s_step_open(h, &s_provision[1]);
        return s_save(self, h, 1, NULL, NULL);
    }
    s_set_str(vm, "state", "ERROR");
    s_set_str(vm, "fault", s_str(t, "fault"));
    s_finish_task(h, "FAILED");
    return s_save(self, h, 1, NULL, NULL);
}

/* A stage failed with h->result. */
static int s_failed(tasks_t *self, s_held_t *h, const s_stage_t *stage)
{
    json_t *t = h->task;
    log_warn(s_str(t, "request_id"), "task stage failed", "{s:s, s:s, s:s, s:s}", "task", h->id,
             "vm", s_str(h->vm, "id"), "stage", stage->name, "reason", h->result);
    if (s_table(h) == s_rollback) {
        /* Undoing is best effort past its deadline: go on with the next undo stage. */
        s_step_close(h, "FAILED");
        if (stage[1].name) {
            s_step_open(h, &stage[1]);
            return s_save(self, h, 0, NULL, NULL);
        }
        return s_complete(self, h);
    }
    s_step_close(h, "FAILED");
    /* The fault tells every attempt, so the root cause survives a last "no valid host". */
    char fault[1024], where[160] = "";
    if (stage->on_host)
        snprintf(where, sizeof where, " on host %s", s_str(t, "host"));
    const char *earlier = s_str(t, "fault");
    snprintf(fault, sizeof fault, "%s%s%s failed%s: %s", earlier, *earlier ? "; then " : "",
             stage->name, where, h->result);
    s_set_str(t, "fault", fault);
    s_set_str(t, "command", "");
    if (streq(s_str(t, "kind"), "DISPOSE")) {
        s_set_str(h->vm, "state", "ERROR");
        s_set_str(h->vm, "fault", fault);
        s_finish_task(h, "FAILED");
        return s_save(self, h, 1, NULL, NULL);
    }
    if (stage->on_host) {
        json_t *tried = json_object_get(t, "tried");
        if (!json_is_array(tried)) {
            tried = json_array();
            json_object_set_new(t, "tried", tried);
        }
        json_array_append_new(tried, json_string(s_str(t, "host")));
    }
    /* Stages already done on this attempt are undone now. */
    json_t *steps = s_steps(h);
    size_t i;
    json_t *step;
    json_array_foreach(steps, i, step)
    {
        if (streq(s_str(step, "state"), "SUCCEEDED") && !streq(s_str(step, "name"), "validate"))
            s_set_str(step, "state", "ROLLED_BACK");
    }
    json_object_set_new(t, "rolling_back", json_true());
    s_step_open(h, &s_rollback[0]);
    return s_save(self, h, 0, NULL, NULL);
}

/* ---- the loop ----------------------------------------------------------------------------- */

/* Advance one held task by at most one stage. -1 when the task left our hands. */
static int s_step(tasks_t *self, s_held_t *h)
{
    json_t *t = h->task;
    const s_stage_t *table = s_table(h);
    if (streq(s_str(t, "state"), "QUEUED")) {
        s_set_str(t, "state", "RUNNING");
        s_step_open(h, &table[0]);
        return s_save(self, h, 0, NULL, NULL);
    }
    const s_stage_t *stage = table;
    while (stage->name && !streq(stage->name, s_str(t, "stage")))
        stage++;
    if (!stage->name) {
        /* Not a stage of this table (written by a newer version?): start the table over;
           every stage is idempotent. */
        s_step_open(h, &table[0]);
        return s_save(self, h, 0, NULL, NULL);
    }
    if (util_mono_ms() < h->next_try)
        return 0;
    s_rc_t rc = stage->fn(self, h);
    if (h->lost)
        return -1;
    if (rc == S_WAIT) {
        /* Renew the lease well before it runs out. */
        if (s_int(t, "lease_until_ms") - util_now_ms() < self->lease_ms / 2)
            return s_save(self, h, 0, NULL, NULL);
        return 0;
    }
    if (rc == S_FAIL)
        return s_failed(self, h, stage);
    s_step_close(h, "SUCCEEDED");
    if (stage[1].name) {
        s_step_open(h, &stage[1]);
        return s_save(self, h, streq(stage->name, "schedule"), NULL, NULL);
    }
    return s_complete(self, h);
}

/* Step a held task; let it go once it is over or no longer ours. */
static void s_advance(tasks_t *self, s_held_t *h)
{
    int rc = s_step(self, h);
    const char *state = s_str(h->task, "state");
    if (rc != 0 || streq(state, "SUCCEEDED") || streq(state, "FAILED"))
        zhashx_delete(self->held, h->id);
}

/* A bus call of a held task ended: keep the answer for its stage and step the task at once
   rather than at the next tick. A task let go meanwhile no longer wants it. */
static void s_on_reply(bus_client_t *client, const char *call_id, Berth__Envelope *reply, void *arg)
{
    (void)client;
    tasks_t *self = arg;
    s_held_t *h = NULL;
    for (s_held_t *it = zhashx_first(self->held); it && !h; it = zhashx_next(self->held))
        if (streq(it->call, call_id))
            h = it;
    if (!h) {
        if (reply)
            berth__envelope__free_unpacked(reply, NULL);
        return;
    }
    h->call[0] = '\0';
    h->reply = reply;
    h->call_timed_out = reply == NULL;
    h->next_try = 0;
    s_advance(self, h);
}

/* Take up to `room` due tasks: bump their epoch, name ourselves holder, start the lease.
   KEYS: due zset. ARGV: holder, now, lease_ms, room. Returns id, epoch pairs. */
static store_script_t s_acquire = {
    .source =
        "local out = {}\n"
        "local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, ARGV[4])\n"
        "for _, id in ipairs(ids) do\n"
        "  local key = 'berth:task:{' .. id .. '}'\n"
        "  local t = redis.call('HMGET', key, 'state', 'epoch')\n"
        "  if not t[1] or t[1] == 'SUCCEEDED' or t[1] == 'FAILED' or t[1] == 'ABORTED' then\n"
        "    redis.call('ZREM', KEYS[1], id)\n"
        "  else\n"
        "    local epoch = tonumber(t[2] or '0') + 1\n"
        "    local until_ms = tonumber(ARGV[2]) + tonumber(ARGV[3])\n"
        "    redis.call('HSET', key, 'holder', ARGV[1], 'epoch', epoch, 'lease_until_ms', "
        "until_ms)\n"
        "    redis.call('ZADD', KEYS[1], until_ms, id)\n"
        "    out[#out + 1] = id\n"
        "    out[#out + 1] = tostring(epoch)\n"
        "  end\n"
        "end\n"
        "return out\n",
};

static void s_take(tasks_t *self, const char *id, int64_t epoch)
{
    char key[MODEL_KEY_MAX], vkey[MODEL_KEY_MAX];
    Berth__Task *task = NULL;
    Berth__Vm *vm = NULL;
    if (model_load(self->store, &berth__task__descriptor, model_key(key, sizeof key, "task", id),
                   (ProtobufCMessage **)&task) != 0)
        return; /* the lease runs out and the task is due again */
    if (model_load(self->store, &berth__vm__descriptor,
                   model_key(vkey, sizeof vkey, "vm", task->target),
                   (ProtobufCMessage **)&vm) != 0) {
        log_error(task->request_id, "task target VM is missing", "{s:s, s:s}", "task", id, "vm",
                  task->target);
        berth__task__free_unpacked(task, NULL);
        return;
    }
    s_held_t *h = calloc(1, sizeof *h);
    if (!h) {
        berth__task__free_unpacked(task, NULL);
        berth__vm__free_unpacked(vm, NULL);
        return;
    }
    util_strlcpy(h->id, id, sizeof h->id);
    h->epoch = epoch;
    h->task = model_to_json(&task->base);
    h->vm = model_to_json(&vm->base);
    h->stage_since = util_mono_ms();
    log_info(task->request_id, epoch > 1 ? "took over task" : "took task", "{s:s, s:s, s:s, s:I}",
             "task", id, "kind", task->kind, "stage", task->stage, "epoch", (json_int_t)epoch);
    berth__task__free_unpacked(task, NULL);
    berth__vm__free_unpacked(vm, NULL);
    zhashx_update(self->held, id, h);
}

static int s_tick(service_t *service, void *arg)
{
    (void)service;
    tasks_t *self = arg;
    int room = self->max_held - (int)zhashx_size(self->held);
    if (room > 0) {
        char now[24], lease[24], rooms[24];
        snprintf(now, sizeof now, "%lld", (long long)util_now_ms());
        snprintf(lease, sizeof lease, "%d", self->lease_ms);
        snprintf(rooms, sizeof rooms, "%d", room);
        const char *argv[] = { "berth:tasks:due", service_instance(self->service), now, lease,
                               rooms };
        redisReply *r = store_eval(self->store, &s_acquire, 1, 5, argv);
        if (r && r->type == REDIS_REPLY_ARRAY)
            for (size_t i = 0; i + 1 < r->elements; i += 2) {
                int64_t epoch = 0;
                if (r->element[i]->type == REDIS_REPLY_STRING &&
                    r->element[i + 1]->type == REDIS_REPLY_STRING &&
                    util_parse_int(r->element[i + 1]->str, 1, INT64_MAX, &epoch) == 0)
                    s_take(self, r->element[i]->str, epoch);
            }
        if (r)
            freeReplyObject(r);
    }
    zlistx_t *ids = zhashx_keys(self->held);
    for (char *id = zlistx_first(ids); id; id = zlistx_next(ids)) {
        s_held_t *h = zhashx_lookup(self->held, id);
        if (h)
            s_advance(self, h);
    }
    zlistx_destroy(&ids);
    return 0;
}

/* ---- DisposeVm ---------------------------------------------------------------------------- */

static void s_reply_task(bus_request_t *request, store_t *store, const char *id)
{
    char key[MODEL_KEY_MAX];
    Berth__Task *task = NULL;
    int rc = model_load(store, &berth__task__descriptor, model_key(key, sizeof key, "task", id),
                        (ProtobufCMessage **)&task);
    if (rc != 0) {
        bus_reply_error(request, rc < 0 ? "UNAVAILABLE" : "INTERNAL",
                        rc < 0 ? "state store unreachable" : "the VM's task is missing");
        return;
    }
    bus_reply(request, &task->base);
    berth__task__free_unpacked(task, NULL);
}

/* Start disposing of a VM: ACTIVE or ERROR -> DISPOSING with a new DISPOSE task, in one step.
   Asking again while it is disposing answers the same task. */
static void s_on_dispose(bus_request_t *request, void *arg)
{
    tasks_t *self = arg;
    Berth__DisposeVm *req = bus_request_body(request, &berth__dispose_vm__descriptor);
    if (!req || !util_is_uuid(req->vm) || strlen(req->actor) > 128) {
        bus_reply_error(request, "BAD_REQUEST", "DisposeVm needs a VM id (UUID)");
        return;
    }
    char vkey[MODEL_KEY_MAX], tkey[MODEL_KEY_MAX], msg[160];
    model_key(vkey, sizeof vkey, "vm", req->vm);
    for (int attempt = 0; attempt < 3; attempt++) {
        Berth__Vm *vm = NULL;
        int rc = model_load(self->store, &berth__vm__descriptor, vkey, (ProtobufCMessage **)&vm);
        if (rc != 0) {
            bus_reply_error(request, rc < 0 ? "UNAVAILABLE" : "NOT_FOUND",
                            rc < 0 ? "state store unreachable" : "no such VM");
            return;
        }
        if (streq(vm->state, "DISPOSING")) {
            s_reply_task(request, self->store, vm->task);
            berth__vm__free_unpacked(vm, NULL);
            return;
        }
        if (!streq(vm->state, "ACTIVE") && !streq(vm->state, "ERROR")) {
            snprintf(msg, sizeof msg, "VM is %s; only ACTIVE or ERROR VMs can be disposed",
                     vm->state);
            berth__vm__free_unpacked(vm, NULL);
            bus_reply_error(request, "CONFLICT", msg);
            return;
        }
        int64_t now = util_now_ms();
        char id[UTIL_ID_LEN];
        util_uuid(id);
        Berth__Task task = BERTH__TASK__INIT;
        task.id = id;
        task.kind = "DISPOSE";
        task.state = "QUEUED";
        task.stage = "queued";
        task.target = vm->id;
        task.owner = *req->actor ? req->actor : vm->owner;
        task.request_id = (char *)bus_request_envelope(request)->request_id;
        task.created_ms = now;
        task.updated_ms = now;
        task.host = vm->host;
        task.version = 1;
        model_tx_t *tx = model_tx_new();
        model_tx_check_version(tx, vkey, vm->version);
        vm->version++;
        vm->updated_ms = now;
        char *old_state = vm->state, *old_task = vm->task;
        vm->state = "DISPOSING";
        vm->task = id;
        model_tx_put(tx, vkey, &vm->base);
        model_tx_vm_event(tx, vm);
        vm->state = old_state;
        vm->task = old_task;
        model_key(tkey, sizeof tkey, "task", id);
        model_tx_check_version(tx, tkey, 0);
        model_tx_put(tx, tkey, &task.base);
        model_tx_event(tx, "task.state", "key", tkey, "task", id, "state", "QUEUED", "stage",
                       "queued", NULL);
        model_tx_zadd(tx, "berth:tasks:due", 0, id);
        rc = model_tx_commit(tx, self->store, NULL);
        model_tx_destroy(&tx);
        if (rc == 0) {
            log_info(task.request_id, "disposal queued", "{s:s, s:s}", "vm", req->vm, "task", id);
            bus_reply(request, &task.base);
        } else if (rc < 0)
            bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
        berth__vm__free_unpacked(vm, NULL); /* task borrowed its strings until here */
        if (rc <= 0)
            return;
        /* The VM changed between read and write: look again. */
    }
    bus_reply_error(request, "CONFLICT", "the VM keeps changing; try again");
}

/* ---- construction ------------------------------------------------------------------------- */

void tasks_declare(config_t *c)
{
    config_declare(c, "task_lease_ms", "5000", 0);
    config_declare(c, "task_tick_ms", "100", 0);
    config_declare(c, "max_running_tasks", "256", 0);
    config_declare(c, "call_timeout_ms", "3000", 0);
    config_declare(c, "command_timeout_ms", "60000", 0);
    config_declare(c, "ready_timeout_ms", "30000", 0);
    config_declare(c, "max_attempts", "3", 0);
    config_declare(c, "command_redeliver_ms", "15000", 0);
}

tasks_t *tasks_new(service_t *service)
{
    config_t *c = service_config(service);
    int64_t lease, tick, held, call, cmd, ready, attempts;
    if (config_int(c, "task_lease_ms", 500, 600000, &lease) ||
        config_int(c, "task_tick_ms", 10, 10000, &tick) ||
        config_int(c, "max_running_tasks", 1, 100000, &held) ||
        config_int(c, "call_timeout_ms", 100, 600000, &call) ||
        config_int(c, "command_timeout_ms", 1000, 3600000, &cmd) ||
        config_int(c, "ready_timeout_ms", 1000, 3600000, &ready) ||
        config_int(c, "max_attempts", 1, 10, &attempts))
        return NULL;
    tasks_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->service = service;
    self->store = service_store(service);
    self->bus = service_client(service);
    self->held = zhashx_new();
    self->lease_ms = (int)lease;
    self->max_held = (int)held;
    self->call_timeout_ms = (int)call;
    self->command_timeout_ms = (int)cmd;
    self->ready_timeout_ms = (int)ready;
    self->max_attempts = (int)attempts;
    zhashx_set_destructor(self->held, s_held_free);
    service_on(service, "DisposeVm", s_on_dispose, self);
    service_every(service, (int)tick, s_tick, self);
    return self;
}

void tasks_destroy(tasks_t **self_p)
{
    if (self_p && *self_p) {
        zhashx_destroy(&(*self_p)->held);
        free(*self_p);
        *self_p = NULL;
    }
}
