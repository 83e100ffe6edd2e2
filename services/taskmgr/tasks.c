/*  tasks: the engine that runs provisioning, disposal and the day-2 actions (start, stop,
    reboot, suspend, resume, shelve, unshelve, capture: s_actions).

    Typed. The engine works on the task and the VM as protobuf messages (Berth__Task,
    Berth__Vm), loaded when a task is taken and written back whole through model_tx, guarded
    by holder and epoch. Each task kind is a table of stages (s_kinds): name, percent, the
    agent command the stage sends, the stage that undoes it, and its class: a heavy stage
    opens only once the task holds a heavy slot on its host (throttle.c); without one the
    task waits QUEUED at that stage, held by nobody, and resumes there when a slot frees.

    Event-driven. Nothing waits for a tick. A stage starts the moment the previous one's
    answer arrives: a bus reply (scheduler, stager) comes back on the loop and steps its task
    at once (s_on_reply); an agent's result arrives through agents.c and steps its task
    before the result is acknowledged (tasks_on_result: the task write that records the
    result happens first). A stage that is done opens the next and runs it in the same
    step, so each stage costs one task write. The stager is asked for the image and seed
    beside the scheduler (neither needs the other's answer), so stage_image is normally done
    when the host is claimed. New tasks wake the engine without polling:
    whoever queues a task adds its id to berth:tasks:wake in the same atomic step, and a
    thread with its own Redis connection blocks on that set (BZMPOP) and hands the ids it
    popped to the loop, which takes them at once.

    Timers. What still waits for time (a retry, a lease to renew, a command to hand out
    again, a stage deadline, another instance's lease running out) is a due time: held tasks
    keep theirs in memory, tasks not held here are scored in berth:tasks:due (0 for a new
    task, a held task's lease end otherwise). One zloop timer is armed at the earliest of
    them; a wake lost on the way (an instance killed between pop and take) is repaired by
    reading the due set again at least every due_check_ms.

    Holding. Taking a task (a Lua step) bumps its epoch and names this instance holder; every
    write checks both, so an instance that stalled past its lease and was replaced can no
    longer change anything: its write fails and it lets the task go. The agent command in
    flight is recorded in the task (its id) before it is sent; a new holder sends the same
    id again and the agent answers it from its cache. A failed provisioning runs the
    rollback table (remove what the host built, release the claim) and, if the failure was
    the host's, tries again on another host; if the stager refused the staged image chosen
    for it, tries again on any host (that one included: nothing was wrong with it), the image
    chosen afresh. At most max_attempts attempts in all; then the VM ends in ERROR with the
    fault. */
#include "tasks.h"
#include "agents.h"
#include "assertion.h"
#include "clock.h"
#include "keys.h"
#include "limit.h"
#include "lua_scripts.h"
#include "metrics.h"
#include "model.h"
#include "throttle.h"

#include <assert.h>
#include <stdarg.h>

typedef enum { S_DONE, S_WAIT, S_FAIL } s_rc_t;
typedef enum { S_LIGHT, S_HEAVY } s_class_t;

typedef struct {
    char id[UTIL_ID_LEN];
    int64_t epoch;
    Berth__Task *task;          /* the task as this instance changes it */
    Berth__Task *saved_task;    /* ...and as it was last read or written (to diff against) */
    Berth__Vm *vm;              /* the VM, loaded when the task is taken (NULL: gone) */
    Berth__Vm *saved_vm;        /* ...and as it was last read or written */
    Berth__StagedImage *staged; /* the stager's answer, kept for the host stages */
    int vm_dirty;               /* vm changed since the last write */
    int dirty;                  /* task changed since the last write */
    int64_t stage_since;        /* monotonic ms the current stage began here */
    int64_t next_try;           /* monotonic ms to run the stage again (0: on an event only) */
    int64_t sent_at;            /* monotonic ms the command in flight was last handed out */
    char result[512];           /* what the last stage did, or why it failed */
    int lost;                   /* 1: a write was refused (not ours); 2: Redis failed */
    int64_t write_at;           /* monotonic ms a write put off while a call is out must be
                                   done by (0: none put off) */
    int must_write;             /* an agent result was taken: write before it is acked */
    char call[UTIL_ID_LEN];     /* id of the bus call in flight ("" when none) */
    char prefetch[UTIL_ID_LEN]; /* StageImage sent beside the schedule call ("" when none) */
    Berth__Envelope *reply;     /* its answer, once it came */
    int call_timed_out;         /* ...or that none came before its deadline */
    char call_error[32];        /* the error code of the last call's answer ("" none) */
    Berth__AgentResult *done;   /* the agent's result for task->command, once it came */
    int lease_started;          /* provisioned: the lease's timers go with the next write */
    int throttled;              /* waits in line for a heavy slot: written QUEUED, let go */
    int pool_checked;           /* a pool build is done: its next write checks the pool as
                                   read below, so a size change meanwhile is not lost */
    char pool_size_read[16];    /* ...its template's pool_size as read ("" when absent) */
    int64_t pool_members_read;  /* ...how many VMs its pool held then */
    char surplus[UTIL_ID_LEN];  /* ...the pool held its size: the DISPOSE task the write
                                   queues ("" when the VM waits POOLED) */
} s_held_t;

struct _tasks_t {
    service_t *service;
    store_t *store;
    bus_client_t *bus;
    agents_t *agents;       /* the hosts' connections: commands go out through it */
    zhashx_t *held;         /* task id -> s_held_t */
    zactor_t *waker;        /* blocks on berth:tasks:wake, pokes the loop */
    int timer_id;           /* the one armed timer (0: none) */
    int64_t timer_at;       /* its monotonic due time */
    int64_t next_due;       /* monotonic ms of the earliest berth:tasks:due entry (0: none) */
    int64_t due_read_ms;    /* monotonic ms the due set was last read whole */
    int more_due;           /* the last take was limited by max_held: take again when room */
    int lease_ms;           /* a holder's lease; renewed while it works */
    int max_held;           /* tasks one instance runs at once */
    int call_timeout_ms;    /* bus calls to scheduler and stager */
    int command_timeout_ms; /* an agent command without result fails after this */
    int ready_timeout_ms;   /* a started VM must be reported RUNNING within this */
    int redeliver_ms;       /* a command without result is handed out again after this */
    int write_defer_ms;     /* a write while only a bus call is awaited waits this long for
                               the answer, which brings a write of its own (0: never) */
    int due_check_ms;       /* longest sleep without reading the due set */
    int max_attempts;       /* attempts a provisioning makes before it fails */
    int stop_timeout_s;     /* a stop or shelve's graceful shutdown when none is asked */
    int capture_timeout_ms; /* a capture's snapshot or upload fails after this */
    int pool_settle_ms;     /* a pooled VM runs this long (its guest boots) before it is saved */
    assertion_t *verifier;  /* checks who a DisposeVm acts for (the gateway's assertion) */
    leases_t *leases;       /* lease timers (borrowed; NULL: none written) */
    throttle_t *throttle;   /* heavy slots (throttle.h) */
};

typedef struct _s_stage s_stage_t;
typedef s_rc_t(s_stage_fn)(tasks_t *self, s_held_t *h, const s_stage_t *stage);

/* One row of a task kind's table. */
struct _s_stage {
    const char *name;
    int percent;      /* progress once this stage is running */
    s_stage_fn *fn;   /* runs the stage: DONE, WAIT (for an event or a due time), FAIL */
    const char *op;   /* agent command the stage sends (NULL: none) */
    const char *undo; /* rollback stage that undoes it (NULL: nothing to undo) */
    s_class_t klass;  /* heavy: opens only with a heavy slot on the task's host */
    int on_host;      /* a failure here is the host's: worth trying another */
    int on_old_host;  /* the command goes to the task's from_host (UNSHELVE's old host) */
};

static void s_result(s_held_t *h, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void s_result(s_held_t *h, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    vsnprintf(h->result, sizeof h->result, format, ap);
    va_end(ap);
}

/* Replace a string field of an unpacked message (protobuf-c frees it with the message). */
static void s_set(char **field, const char *value)
{
    char *copy = strdup(value ? value : "");
    if (!copy)
        return; /* out of memory: the old value stays, as good as any */
    if (*field && *field != protobuf_c_empty_string)
        free(*field);
    *field = copy;
}

static int s_is(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

/* Append a copy of value to a repeated string field. */
static void s_append(char ***list, size_t *n, const char *value)
{
    char **grown = realloc(*list, (*n + 1) * sizeof *grown);
    char *copy = strdup(value);
    if (!grown || !copy) {
        free(copy);
        if (grown)
            *list = grown;
        return;
    }
    grown[(*n)++] = copy;
    *list = grown;
}

static void s_clear_list(char ***list, size_t *n)
{
    for (size_t i = 0; i < *n; i++)
        free((*list)[i]);
    free(*list);
    *list = NULL;
    *n = 0;
}

static void s_free_done(s_held_t *h)
{
    if (h->done)
        berth__agent_result__free_unpacked(h->done, NULL);
    h->done = NULL;
}

static void s_held_free(void **item)
{
    s_held_t *h = *item;
    if (h) {
        if (h->task)
            berth__task__free_unpacked(h->task, NULL);
        if (h->saved_task)
            berth__task__free_unpacked(h->saved_task, NULL);
        if (h->vm)
            berth__vm__free_unpacked(h->vm, NULL);
        if (h->saved_vm)
            berth__vm__free_unpacked(h->saved_vm, NULL);
        if (h->staged)
            berth__staged_image__free_unpacked(h->staged, NULL);
        if (h->reply)
            berth__envelope__free_unpacked(h->reply, NULL);
        s_free_done(h);
        free(h);
        *item = NULL;
    }
}

static int s_finished(const Berth__Task *t)
{
    return s_is(t->state, "SUCCEEDED") || s_is(t->state, "FAILED") || s_is(t->state, "ABORTED");
}

/* ---- writing ------------------------------------------------------------------------------ */

/* A deep copy of msg (what was last written, to compare with). NULL when out of memory. */
static ProtobufCMessage *s_copy(const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return NULL;
    protobuf_c_message_pack(msg, buf);
    ProtobufCMessage *copy = protobuf_c_message_unpack(msg->descriptor, NULL, len, buf);
    free(buf);
    return copy;
}

/* Shelving and quota: the VM's vCPUs and RAM come off (sign -1: it became SHELVED) or go
   back on (sign 1: unshelve asked, within limit when given) its group's and owner's usage,
   and quota_held says what it holds now: a shelved VM keeps its count and disk. A VM with
   no group holds no quota. */
static void s_quota_shelve(model_tx_t *tx, const Berth__Vm *vm, int sign, const Berth__Group *limit)
{
    const Berth__Resources *f = vm->flavor;
    if (!f || !vm->group || !*vm->group)
        return;
    char key[KEYS_MAX];
    Berth__Quota amount = BERTH__QUOTA__INIT, held = BERTH__QUOTA__INIT;
    amount.vcpus = sign * f->vcpus;
    amount.ram_mb = sign * f->ram_mb;
    model_tx_charge(tx, keys_build(key, KEYS_GROUP_USAGE, vm->group, NULL), "group",
                    limit ? limit->quota : NULL, &amount);
    model_tx_charge(tx, keys_build(key, KEYS_GROUP_USER_USAGE, vm->group, vm->owner), "user",
                    limit ? limit->user_quota : NULL, &amount);
    held.vms = 1;
    held.disk_gb = f->disk_gb;
    if (sign > 0) {
        held.vcpus = f->vcpus;
        held.ram_mb = f->ram_mb;
    }
    model_tx_hold(tx, keys_vm(key, vm->id), &held);
}

/* Add the VM's changes since it was last written to tx: a state change as a lifecycle
   transition (the table refuses one it does not allow), the power state as an observation
   on its host, every other changed field as it is. */
static void s_vm_changes(model_tx_t *tx, s_held_t *h)
{
    Berth__Vm *vm = h->vm, *was = h->saved_vm;
    char vkey[KEYS_MAX], vcpus[24], ram[24], disk[24];
    keys_vm(vkey, vm->id);
    vm->version = was->version; /* moved by transitions only */
    if (!s_is(vm->state, was->state)) {
        const Berth__Resources *f = vm->flavor;
        snprintf(vcpus, sizeof vcpus, "%d", f ? f->vcpus : 0);
        snprintf(ram, sizeof ram, "%lld", f ? (long long)f->ram_mb : 0LL);
        snprintf(disk, sizeof disk, "%lld", f ? (long long)f->disk_gb : 0LL);
        /* The state is checked; the version is not: a heartbeat may have bumped it. */
        model_tx_transition(tx, LIFECYCLE_VM, vkey, was->state, vm->state, MODEL_VERSION_ANY, "vm",
                            vm->id, "owner", vm->owner, "vcpus", vcpus, "ram_mb", ram, "disk_gb",
                            disk, "host", *vm->host ? vm->host : was->host, "template",
                            vm->template_, "group", vm->group, NULL);
        if (s_is(vm->state, "SHELVED")) /* from SHELVING, or an unshelve that found no host */
            s_quota_shelve(tx, vm, -1, NULL);
        /* Instant deploy: a pooled VM is ready for requests; one whose build failed leaves
           its template's pool. */
        char pkey[KEYS_MAX];
        if (s_is(vm->state, "POOLED"))
            model_tx_zadd(tx, keys_build(pkey, KEYS_POOL_READY, vm->template_, NULL), vm->pooled_ms,
                          vm->id);
        if (s_is(was->state, "POOLING") && !s_is(vm->state, "POOLED"))
            model_tx_zrem(tx, keys_build(pkey, KEYS_POOL, vm->template_, NULL), vm->id);
    }
    if (!s_is(vm->power_state, was->power_state)) {
        const char *host = *was->host ? was->host : vm->host;
        if (*host && power_state_from_string(vm->power_state) > 0)
            model_tx_vm_power(tx, vm->id, host, vm->power_state);
        else
            s_set(&vm->power_state, was->power_state); /* nothing to observe it on */
    }
    model_tx_put_changed(tx, vkey, &was->base, &vm->base);
}

static const char *s_kind_class(const char *kind);

/* A pool build's end, into tx: the pool as it was read when its VM was judged ready or
   surplus (a size change or a VM added since makes the write a conflict: the task is let
   go and taken again, and judged again), and a surplus VM's DISPOSE task, born QUEUED. */
static void s_pool_tx(model_tx_t *tx, s_held_t *h, int64_t now)
{
    char key[KEYS_MAX];
    Berth__Vm *vm = h->vm;
    model_tx_check(tx, keys_build(key, KEYS_TEMPLATE, vm->template_, NULL), "pool_size",
                   h->pool_size_read);
    model_tx_check_size(tx, keys_build(key, KEYS_POOL, vm->template_, NULL),
                        h->pool_members_read + 1);
    if (!*h->surplus)
        return;
    Berth__Task task = BERTH__TASK__INIT;
    task.id = h->surplus;
    task.kind = "DISPOSE";
    task.state = "QUEUED";
    task.stage = "queued";
    task.target = vm->id;
    task.request_id = h->task->request_id;
    task.created_ms = now;
    task.updated_ms = now;
    task.host = vm->host;
    task.version = 1;
    task.task_class = (char *)s_kind_class("DISPOSE");
    keys_task(key, task.id);
    model_tx_transition(tx, LIFECYCLE_TASK, key, "", "QUEUED", 0, "task", task.id, "stage",
                        "queued", NULL);
    model_tx_put(tx, key, &task.base);
    model_tx_zadd(tx, KEYS_TASKS_DUE, 0, task.id);
    model_tx_zadd(tx, KEYS_TASKS_WAKE, now, task.id); /* whichever taskmgr is free takes it */
}

/* Write the held task (and the VM when it changed) in one step guarded by holder and epoch:
   state changes as lifecycle transitions (with their events), a stage's progress as a
   task.state event, the other fields that changed, and the task's place in the due set.
   0, or -1 when the task is no longer ours (another instance took it), Redis failed, or the
   lifecycle table refused the change: the caller then lets the task go. */
static int s_save(tasks_t *self, s_held_t *h)
{
    char key[KEYS_MAX], epoch[24], at[24];
    Berth__Task *t = h->task, *was = h->saved_task;
    keys_task(key, h->id);
    snprintf(epoch, sizeof epoch, "%lld", (long long)h->epoch);
    int64_t now = util_now_ms(); /* the holder's lease: real time */
    int finished = s_finished(t);
    int64_t lease_until = now + self->lease_ms;
    int gave_slot = finished && *t->throttle_host;
    t->lease_until_ms = finished || h->throttled ? 0 : lease_until;
    t->updated_ms = clock_now_ms();
    t->version = was->version;
    snprintf(at, sizeof at, "%lld", (long long)t->updated_ms);

    model_tx_t *tx = model_tx_new();
    Berth__Task *task_copy = NULL;
    Berth__Vm *vm_copy = NULL;
    const char *why = NULL;
    char why_copy[256] = ""; /* why points into tx, destroyed before it is logged */
    int rc = -1;
    if (tx) {
        int moved = !s_is(t->state, was->state);
        model_tx_check(tx, key, "holder", service_instance(self->service));
        model_tx_check(tx, key, "epoch", epoch);
        if (moved)
            model_tx_transition(tx, LIFECYCLE_TASK, key, was->state, t->state, MODEL_VERSION_ANY,
                                "task", h->id, "stage", t->stage, NULL);
        else
            model_tx_event(tx, "task.state", "key", key, "task", h->id, "state", t->state, "stage",
                           t->stage, "at_ms", at, NULL);
        model_tx_put_changed(tx, key, &was->base, &t->base);
        if (finished || h->throttled) /* in line: the grant makes it due */
            model_tx_zrem(tx, KEYS_TASKS_DUE, h->id);
        else
            model_tx_zadd(tx, KEYS_TASKS_DUE, lease_until, h->id);
        if (h->throttled)
            throttle_tx_wait(tx, h->id, t->host, was->throttle_host);
        else if (gave_slot)
            throttle_tx_release(tx, h->id, t->throttle_host);
        if (h->vm_dirty && h->vm && h->saved_vm)
            s_vm_changes(tx, h);
        if (h->pool_checked && h->vm)
            s_pool_tx(tx, h, clock_now_ms());
        if (h->lease_started && h->vm && self->leases)
            leases_tx_schedule(self->leases, tx, h->vm);
        if (moved)
            t->version = was->version + 1;
        if (h->vm && h->saved_vm && !s_is(h->vm->state, h->saved_vm->state))
            h->vm->version = h->saved_vm->version + 1;
        task_copy = (Berth__Task *)s_copy(&t->base);
        vm_copy = h->vm ? (Berth__Vm *)s_copy(&h->vm->base) : NULL;
        if (task_copy && (vm_copy || !h->vm))
            rc = model_tx_commit(tx, self->store, &why);
        else
            why = "out of memory";
        if (why) {
            util_strlcpy(why_copy, why, sizeof why_copy);
            why = why_copy;
        }
        model_tx_destroy(&tx);
    } else
        why = "out of memory";
    if (rc != 0) {
        if (task_copy)
            berth__task__free_unpacked(task_copy, NULL);
        if (vm_copy)
            berth__vm__free_unpacked(vm_copy, NULL);
        if (rc == MODEL_REFUSED)
            log_error(t->request_id, "task write refused by the lifecycle table; letting it go",
                      "{s:s, s:s}", "task", h->id, "reason", why ? why : "?");
        else
            log_warn(t->request_id, "task write refused; letting the task go", "{s:s, s:s}", "task",
                     h->id, "reason", rc < 0 ? (why ? why : "state store unreachable") : why);
        h->lost = rc == MODEL_CONFLICT ? 1 : 2;
        return -1;
    }
    berth__task__free_unpacked(h->saved_task, NULL);
    h->saved_task = task_copy;
    if (vm_copy) {
        if (h->saved_vm)
            berth__vm__free_unpacked(h->saved_vm, NULL);
        h->saved_vm = vm_copy;
    }
    h->dirty = 0;
    h->vm_dirty = 0;
    h->write_at = 0;
    h->must_write = 0;
    h->lease_started = 0;
    h->pool_checked = 0;
    h->surplus[0] = 0;
    if (h->throttled || gave_slot)
        throttle_pump(self->throttle); /* a slot freed, or one freed meanwhile: grant it now */
    return 0;
}

/* ---- steps -------------------------------------------------------------------------------- */

static Berth__TaskStep *s_last_step(s_held_t *h)
{
    Berth__Task *t = h->task;
    return t->n_steps ? t->steps[t->n_steps - 1] : NULL;
}

/* Forget the command in flight (a new stage sends its own): an old one is never waited on. */
static void s_forget_command(tasks_t *self, s_held_t *h)
{
    if (*h->task->command)
        agents_cancel(self->agents, h->task->command);
    s_set(&h->task->command, "");
    h->sent_at = 0;
    s_free_done(h);
}

static void s_step_open(tasks_t *self, s_held_t *h, const s_stage_t *stage)
{
    Berth__Task *t = h->task;
    s_set(&t->stage, stage->name);
    t->percent = stage->percent;
    Berth__TaskStep **steps = realloc(t->steps, (t->n_steps + 1) * sizeof *steps);
    Berth__TaskStep *step = malloc(sizeof *step);
    if (steps)
        t->steps = steps;
    if (steps && step) {
        berth__task_step__init(step);
        s_set(&step->name, stage->name);
        s_set(&step->state, "RUNNING");
        s_set(&step->result, "");
        step->started_ms = clock_now_ms();
        t->steps[t->n_steps++] = step;
    } else
        free(step);
    h->stage_since = util_mono_ms();
    h->next_try = 0;
    h->dirty = 1;
    s_forget_command(self, h);
    /* A call of the stage before is not this stage's answer: forget it. */
    h->call[0] = '\0';
    h->call_timed_out = 0;
    if (h->reply)
        berth__envelope__free_unpacked(h->reply, NULL);
    h->reply = NULL;
}

static void s_step_close(s_held_t *h, const char *state)
{
    Berth__TaskStep *last = s_last_step(h);
    if (!last || !s_is(last->state, "RUNNING"))
        return;
    s_set(&last->state, state);
    last->finished_ms = clock_now_ms();
    s_set(&last->result, h->result);
    h->dirty = 1;
}

/* Open stage, unless it is heavy and the task holds no heavy slot on its host and none is
   free (throttle.h): the task then waits in line QUEUED at that stage, its step not opened
   yet (a step's times are when it ran), and is let go once written. 1 when it went in
   line, 0 when the stage is open, -1 when Redis failed (the task is let go; its lease runs
   out and it is taken again where it stood). A host not chosen yet takes no slot. */
static int s_open(tasks_t *self, s_held_t *h, const s_stage_t *stage)
{
    Berth__Task *t = h->task;
    if (stage->klass == S_HEAVY && *t->host) {
        int rc = throttle_acquire(self->throttle, h->id, t->host, t->throttle_host);
        if (rc < 0) {
            h->lost = 2;
            return -1;
        }
        if (rc == 0) {
            s_set(&t->state, "QUEUED");
            s_set(&t->stage, stage->name);
            s_set(&t->throttle_host, "");
            s_set(&t->holder, "");
            h->throttled = 1;
            h->dirty = 1;
            return 1;
        }
        if (!s_is(t->throttle_host, t->host)) {
            s_set(&t->throttle_host, t->host);
            h->dirty = 1;
        }
    }
    s_step_open(self, h, stage);
    return 0;
}

/* Ask the stage again at `at` (monotonic ms) unless an event comes first. */
static void s_retry_at(s_held_t *h, int64_t at)
{
    if (!h->next_try || at < h->next_try)
        h->next_try = at;
}

/* A stage still waiting after timeout_ms fails with what it last saw; until then it is
   asked again at its deadline at the latest. */
static s_rc_t s_waited(s_held_t *h, int timeout_ms)
{
    int64_t deadline = h->stage_since + timeout_ms;
    if (util_mono_ms() >= deadline)
        return S_FAIL;
    s_retry_at(h, deadline);
    return S_WAIT;
}

/* ---- calls to other services -------------------------------------------------------------- */

static void s_on_reply(bus_client_t *client, const char *call_id, Berth__Envelope *reply,
                       void *arg);
static void s_prefetch(tasks_t *self, s_held_t *h);
static int s_staged_fits(const s_held_t *h, const Berth__StagedImage *staged);

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
        s_retry_at(h, util_mono_ms() + 500);
        return S_WAIT;
    }
    if (!h->reply) {
        if (!*h->call && bus_client_send(self->bus, service, body, h->task->request_id,
                                         self->call_timeout_ms, s_on_reply, self, h->call) != 0) {
            s_result(h, "cannot send to %s", service);
            s_retry_at(h, util_mono_ms() + 500);
        }
        return S_WAIT;
    }
    Berth__Envelope *reply = h->reply;
    h->reply = NULL;
    h->call_error[0] = '\0';
    if (reply->error) {
        s_result(h, "%s", reply->error->message);
        util_strlcpy(h->call_error, reply->error->code ? reply->error->code : "",
                     sizeof h->call_error);
        int transient = s_is(reply->error->code, "UNAVAILABLE");
        berth__envelope__free_unpacked(reply, NULL);
        if (transient) {
            s_retry_at(h, util_mono_ms() + 500);
            return S_WAIT;
        }
        return S_FAIL;
    }
    *reply_p = reply;
    return S_DONE;
}

/* s_call for a stage that waits on the answer: still waiting past command_timeout_ms from
   the stage's start is a failure (s_waited). */
static s_rc_t s_ask(tasks_t *self, s_held_t *h, const char *service, const ProtobufCMessage *body,
                    Berth__Envelope **reply_p)
{
    s_rc_t rc = s_call(self, h, service, body, reply_p);
    return rc == S_WAIT ? s_waited(h, self->command_timeout_ms) : rc;
}

/* ---- capture stages ----------------------------------------------------------------------- */

/* 1 if text can name an image (the stager's rule: [a-z0-9][a-z0-9._-]{0,63}). */
static int s_capture_name_ok(const char *text)
{
    size_t n = text ? strlen(text) : 0;
    if (n < 1 || n > 64 ||
        !((text[0] >= 'a' && text[0] <= 'z') || (text[0] >= '0' && text[0] <= '9')))
        return 0;
    for (size_t i = 1; i < n; i++) {
        char c = text[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* open_upload: the stager expects the capture file the snapshot made, from the VM's host. */
static s_rc_t s_capture_open(tasks_t *self, s_held_t *h, const s_stage_t *stage)
{
    (void)stage;
    Berth__Task *t = h->task;
    if (!t->capture || strlen(t->capture->sha256) != 64 || t->capture->size_bytes < 1) {
        s_result(h, "the snapshot reported no digest and size");
        return S_FAIL;
    }
    Berth__BeginUpload req = BERTH__BEGIN_UPLOAD__INIT;
    req.upload_id = t->upload_id;
    req.host = t->host;
    req.sha256 = t->capture->sha256;
    req.size_bytes = t->capture->size_bytes;
    req.image = t->capture;
    req.source_image = h->vm->image;
    req.vm = h->vm->id;
    Berth__Envelope *reply = NULL;
    s_rc_t rc = s_ask(self, h, "stager", &req.base, &reply);
    if (rc != S_DONE)
        return rc;
    berth__envelope__free_unpacked(reply, NULL);
    s_result(h, "upload %s of %lld bytes opened at the stager", t->upload_id,
             (long long)t->capture->size_bytes);
    return S_DONE;
}

/* register: the stager checks the whole file and records the model image READY. */
static s_rc_t s_capture_register(tasks_t *self, s_held_t *h, const s_stage_t *stage)
{
    (void)stage;
    Berth__FinishUpload req = BERTH__FINISH_UPLOAD__INIT;
    req.upload_id = h->task->upload_id;
    Berth__Envelope *reply = NULL;
    s_rc_t rc = s_ask(self, h, "stager", &req.base, &reply);
    if (rc != S_DONE)
        return rc;
    Berth__Image *image = (Berth__Image *)envelope_body(reply, &berth__image__descriptor);
    berth__envelope__free_unpacked(reply, NULL);
    if (!image) {
        s_result(h, "the stager answered without the image");
        return S_FAIL;
    }
    s_result(h, "image %s (%s) READY, SHA-256 %s", image->name, image->id, image->sha256);
    berth__image__free_unpacked(image, NULL);
    return S_DONE;
}

/* drop_upload: whatever the stager holds of the upload goes (none counts as dropped). */
static s_rc_t s_capture_drop(tasks_t *self, s_held_t *h, const s_stage_t *stage)
{
    (void)stage;
    Berth__AbortUpload req = BERTH__ABORT_UPLOAD__INIT;
    req.upload_id = h->task->upload_id;
    Berth__Envelope *reply = NULL;
    s_rc_t rc = s_ask(self, h, "stager", &req.base, &reply);
    if (rc != S_DONE)
        return rc;
    berth__envelope__free_unpacked(reply, NULL);
    s_result(h, "upload %s dropped at the stager", h->task->upload_id);
    return S_DONE;
}

/* ---- provisioning stages ------------------------------------------------------------------ */

static s_rc_t s_validate(tasks_t *self, s_held_t *h, const s_stage_t *stage)
{
    (void)self;
    (void)stage;
    const Berth__Vm *vm = h->vm;
    const Berth__Resources *f = vm->flavor;
    const char *expected = s_is(h->task->kind, "POOL_BUILD") ? "POOLING" : "PROVISIONING";
    if (!s_is(vm->state, expected)) {
        s_result(h, "VM is %s, not %s", vm->state, expected);
        return S_FAIL;
    }
    if (!f || f->vcpus <= 0 || f->ram_mb <= 0 || f->disk_gb <= 0 || !*vm->image) {
        s_result(h, "VM has no valid flavor or image");
        return S_FAIL;
    }
    s_result(h, "%d vCPU, %lld MB RAM, %lld GB disk from image %s", f->vcpus, (long long)f->ram_mb,
             (long long)f->disk_gb, vm->image);
    return S_DONE;
}

/* The id of the network the VM gets an address on ("" without one). */
static char *s_network_id(const s_held_t *h)
{
    const Berth__VmNetwork *n = h->vm->network;
    return n && n->network ? n->network : "";
}

/* The ids of every network the VM gets an address on, in order, into ids (the VM's
   networks; one made before several networks has its network only), for the placement. */
static void s_network_ids(const s_held_t *h, Berth__SelectHost *req,
                          char *ids[LIMIT_VM_NETWORKS_MAX])
{
    req->network = s_network_id(h);
    size_t n = 0;
    for (size_t i = 0; i < h->vm->n_networks && n < LIMIT_VM_NETWORKS_MAX; i++)
        if (h->vm->networks[i]->network && *h->vm->networks[i]->network)
            ids[n++] = h->vm->networks[i]->network;
    req->networks = ids;
    req->n_networks = n;
}

/* The addresses and MACs the claim gave the VM, into its networks (in order). */
static void s_addressed(s_held_t *h, const Berth__HostSelection *sel)
{
    if (!h->vm->network || !*s_network_id(h))
        return;
    s_set(&h->vm->network->ip, sel->ip);
    s_set(&h->vm->network->mac, sel->mac);
    for (size_t i = 0; i < h->vm->n_networks && i < sel->n_ips && i < sel->n_macs; i++) {
        s_set(&h->vm->networks[i]->ip, sel->ips[i]);
        s_set(&h->vm->networks[i]->mac, sel->macs[i]);
    }
}

/* What the VM asks of its host beyond capacity: its template's hypervisor, and its request's
   placement rule between the request's VMs (the scheduler records the request's hosts); and
   the task with the epoch it is held under, so that a claim from a hold that is gone (an
   abort or a take-over came meanwhile) is refused rather than outliving the rollback. */
static void s_filters(const s_held_t *h, Berth__SelectHost *req)
{
    req->task = (char *)h->id;
    req->epoch = h->epoch;
    req->hypervisor = h->vm->hypervisor;
    req->placement = h->vm->placement;
    req->request = h->vm->placement && *h->vm->placement ? h->vm->request : "";
}

static s_rc_t s_schedule(tasks_t *self, s_held_t *h, const s_stage_t *stage)
{
    (void)stage;
    Berth__Task *t = h->task;
    Berth__SelectHost req = BERTH__SELECT_HOST__INIT;
    req.vm = h->vm->id;
    req.flavor = h->vm->flavor;
    req.group = h->vm->group; /* its reservations are used first, and only by it */
    char *net_ids[LIMIT_VM_NETWORKS_MAX];
    s_network_ids(h, &req, net_ids);
    s_filters(h, &req);
    /* Its image: the scheduler chooses the staged image of a template's model (a custom
       build's was chosen by its verdict: it stays), and prefers a host caching it. */
    req.image = h->vm->image;
    req.image_fixed = !h->vm->template_ || !*h->vm->template_;
    req.exclude = t->tried;
    req.n_exclude = t->n_tried;
    req.retry = t->attempts > 0; /* the image is chosen again on the catalog as it is now */
    /* A retry tries the first placement's alternates first (those not failed already). */
    char *prefer[16];
    for (size_t i = 0; t->n_tried && i < t->n_alternates && req.n_prefer < 16; i++) {
        int failed = 0;
        for (size_t k = 0; k < t->n_tried; k++)
            failed |= s_is(t->alternates[i], t->tried[k]);
        if (!failed)
            prefer[req.n_prefer++] = t->alternates[i];
    }
    req.prefer = prefer;
    Berth__Envelope *reply = NULL;
    s_prefetch(self, h);
    s_rc_t rc = s_ask(self, h, "scheduler", &req.base, &reply);
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
    s_set(&t->host, sel->host);
    s_set(&h->vm->host, sel->host);
    s_addressed(h, sel);
    /* The VM records the staged image it is built from, as the scheduler chose it for this
       attempt (a retry may choose another: the record says which); a stager answer for
       another image (asked beside this call) is dropped and asked again. */
    s_set(&h->vm->staged_image, sel->staged_image);
    if (h->staged && !s_staged_fits(h, h->staged)) {
        berth__staged_image__free_unpacked(h->staged, NULL);
        h->staged = NULL;
    }
    h->vm_dirty = 1;
    s_clear_list(&t->alternates, &t->n_alternates);
    for (size_t i = 0; i < sel->n_alternates; i++)
        s_append(&t->alternates, &t->n_alternates, sel->alternates[i]);
    if (*sel->staged_image)
        s_result(h, "claimed on host %s (%zu alternates); built from staged image %s (%s)",
                 sel->host, sel->n_alternates, sel->staged_image_name, sel->staged_image);
    else
        s_result(h, "claimed on host %s (%zu alternates); built from image %s", sel->host,
                 sel->n_alternates, h->vm->image);
    berth__host_selection__free_unpacked(sel, NULL);
    return S_DONE;
}

/* 1 if the stager's answer is for the image the VM is built from: its staged image (by id)
   when it records one, else its image itself (by name). */
static int s_staged_fits(const s_held_t *h, const Berth__StagedImage *staged)
{
    const char *want = h->vm->staged_image ? h->vm->staged_image : "";
    return *want ? s_is(staged->image->id, want) : s_is(staged->image->name, h->vm->image);
}

/* The StagedImage of a stager's reply (which it frees), or NULL when it lacks the image or
   the seed's digest. */
static Berth__StagedImage *s_staged_answer(Berth__Envelope *reply)
{
    Berth__StagedImage *staged =
        (Berth__StagedImage *)envelope_body(reply, &berth__staged_image__descriptor);
    berth__envelope__free_unpacked(reply, NULL);
    if (staged && (!staged->image || strlen(staged->seed_sha256) != 64)) {
        berth__staged_image__free_unpacked(staged, NULL);
        staged = NULL;
    }
    return staged;
}

/* What the stager is asked for the VM: its image and a seed with its name and the public
   key lines of its SSH keys (lines: room for LIMIT_REQUEST_SSH_KEYS_MAX, pointing into the
   VM; a VM carries no more, approval saw to that). */
static void s_stage_ask(const s_held_t *h, Berth__StageImage *req, char **lines)
{
    req->vm = h->vm->id;
    req->name = h->vm->name;
    /* The image it is built from, as chosen at placement: the stager does not choose. */
    req->image = h->vm->staged_image && *h->vm->staged_image ? h->vm->staged_image : h->vm->image;
    req->seed_by_reference = 1;
    size_t n = 0;
    for (size_t i = 0; i < h->vm->n_ssh_keys && n < LIMIT_REQUEST_SSH_KEYS_MAX; i++)
        if (h->vm->ssh_keys[i]->public_key && *h->vm->ssh_keys[i]->public_key)
            lines[n++] = h->vm->ssh_keys[i]->public_key;
    req->ssh_authorized_keys = lines;
    req->n_ssh_authorized_keys = n;
    /* Applications its image lacks: its seed installs them at first boot. */
    req->packages = h->vm->applications_first_boot;
    req->n_packages = h->vm->n_applications_first_boot;
    /* A pooled VM handed out: its seed was built for the pool's name; now for its own. */
    req->reidentify = h->task->from_pool;
    /* Its address goes into the seed's network-config (known once it is placed). */
    if (h->vm->network && h->vm->network->ip && *h->vm->network->ip) {
        req->network = h->vm->network;
        req->networks = h->vm->networks;
        req->n_networks = h->vm->n_networks;
    }
}

/* The stager's answer for this VM (image and the seed's digest; the agent fetches the seed
   itself): asked once, kept while the task is held here; a new holder asks again (the
   stager answers the same seed for the same VM). */
static s_rc_t s_staged(tasks_t *self, s_held_t *h)
{
    if (h->staged)
        return S_DONE;
    if (*h->prefetch) /* asked beside the schedule call: its answer steps the task */
        return s_waited(h, self->command_timeout_ms);
    Berth__StageImage req = BERTH__STAGE_IMAGE__INIT;
    char *lines[LIMIT_REQUEST_SSH_KEYS_MAX];
    s_stage_ask(h, &req, lines);
    Berth__Envelope *reply = NULL;
    s_rc_t rc = s_ask(self, h, "stager", &req.base, &reply);
    if (rc != S_DONE)
        return rc;
    h->staged = s_staged_answer(reply);
    if (!h->staged) {
        s_result(h, "stager answered without image or seed");
        return S_FAIL;
    }
    if (!s_staged_fits(h, h->staged)) {
        s_result(h, "stager answered image %s, not the image %s chosen for the VM",
                 h->staged->image->name, req.image);
        berth__staged_image__free_unpacked(h->staged, NULL);
        h->staged = NULL;
        return S_FAIL;
    }
    return S_DONE;
}

/* Ask the stager for the VM's image and seed beside the schedule call (neither depends on
   the other), so that stage_image is usually done the moment the host is claimed: one bus
   round trip and one task write less per VM. Its answer is kept (s_on_reply); a failure or
   no answer leaves stage_image to ask itself, as without it. */
static void s_prefetch(tasks_t *self, s_held_t *h)
{
    /* A VM on a network: its seed needs the address the claim gives it (a pooled VM handed
       out has it already). */
    if (h->staged || *h->prefetch || (*s_network_id(h) && !h->task->from_pool))
        return;
    Berth__StageImage req = BERTH__STAGE_IMAGE__INIT;
    char *lines[LIMIT_REQUEST_SSH_KEYS_MAX];
    s_stage_ask(h, &req, lines);
    if (bus_client_send(self->bus, "stager", &req.base, h->task->request_id, self->call_timeout_ms,
                        s_on_reply, self, h->prefetch) != 0)
        h->prefetch[0] = '\0';
}

/* The image chosen at placement, and the seed. The stager refusing that image (deleted, or
   no longer READY since it was chosen) fails this attempt, and the next attempt chooses
   again (the VM's staged_image then says what it is built from); its host is not excluded:
   the image failed, not the host (s_complete). */
static s_rc_t s_stage_image(tasks_t *self, s_held_t *h, const s_stage_t *stage)
{
    (void)stage;
    s_rc_t rc = s_staged(self, h);
    if (rc == S_FAIL && s_is(h->task->kind, "PROVISION") &&
        (s_is(h->call_error, "NOT_FOUND") || s_is(h->call_error, "CONFLICT"))) {
        char why[sizeof h->result];
        util_strlcpy(why, h->result, sizeof why);
        const char *chosen =
            h->vm->staged_image && *h->vm->staged_image ? h->vm->staged_image : h->vm->image;
        s_result(h, "the stager refused image %s chosen for this attempt: %s", chosen, why);
        h->task->image_refused = 1; /* written with the failed step (s_failed) */
        h->dirty = 1;
    }
    if (rc != S_DONE)
        return rc;
    s_result(h, "image %s (%s), seed %lld bytes", h->staged->image->name, h->staged->image->format,
             (long long)h->staged->seed_bytes);
    return rc;
}

/* The agent op a stage sends: a forced stop powers off at once, a forced reboot resets. Only
   stages with an op ask ("" otherwise). */
static const char *s_stage_op(const s_held_t *h, const s_stage_t *stage)
{
    if (!stage->op)
        return "";
    if (h->task->force && streq(stage->op, "SHUTDOWN"))
        return "POWER_OFF";
    if (h->task->force && streq(stage->op, "REBOOT"))
        return "RESET";
    return stage->op;
}

/* The host a stage's command goes to. */
static const char *s_stage_host(const s_held_t *h, const s_stage_t *stage)
{
    return stage->on_old_host ? h->task->from_host : h->task->host;
}

/* How long a command may take: a graceful shutdown adds the guest's time to shut down. */
static int s_command_ms(tasks_t *self, const s_held_t *h, const char *op)
{
    if (s_is(op, "CAPTURE_SNAPSHOT") || s_is(op, "CAPTURE_UPLOAD"))
        return self->capture_timeout_ms; /* a whole disk is copied or sent */
    return self->command_timeout_ms + (s_is(op, "SHUTDOWN") ? h->task->timeout_s * 1000 : 0);
}

/* Hand the task's command (op, id from the task) to its host: through the poll the host
   has parked at this instance, or its next one. Rebuilt from task, VM and stager answer,
   so a new holder sends exactly what the old one did. */
static s_rc_t s_push(tasks_t *self, s_held_t *h, const char *op, const char *host)
{
    Berth__AgentCommand cmd = BERTH__AGENT_COMMAND__INIT;
    cmd.id = h->task->command;
    cmd.op = (char *)op;
    cmd.vm = h->vm->id;
    cmd.name = h->vm->name;
    cmd.flavor = h->vm->flavor;
    cmd.image = h->vm->image;
    cmd.network = h->vm->network;   /* DEFINE plugs it in with its MAC */
    cmd.networks = h->vm->networks; /* one interface per network, in order */
    cmd.n_networks = h->vm->n_networks;
    if (s_is(op, "CREATE_DISK") || s_is(op, "PUT_SEED")) {
        s_rc_t rc = s_staged(self, h);
        if (rc != S_DONE)
            return rc;
        cmd.image_path = h->staged->image->path;
        cmd.image_format = h->staged->image->format;
        cmd.full_copy = h->vm->disk && strcmp(h->vm->disk, "full") == 0;
        if (s_is(op, "CREATE_DISK")) { /* the agent builds it on its cached copy of the base */
            cmd.image_sha256 = h->staged->image->sha256;
            cmd.image_bytes = h->staged->image->size_bytes;
            cmd.image_id = h->staged->image->id;
        }
        if (s_is(op, "PUT_SEED"))
            cmd.seed_sha256 = h->staged->seed_sha256;
    }
    if (s_is(op, "DEFINE")) { /* a direct-boot image: its kernel, initrd and command line */
        s_rc_t rc = s_staged(self, h);
        if (rc != S_DONE)
            return rc;
        cmd.kernel_path = h->staged->image->kernel_path;
        cmd.initrd_path = h->staged->image->initrd_path;
        cmd.cmdline = h->staged->image->cmdline;
    }
    if (s_is(op, "SHUTDOWN"))
        cmd.timeout_s = h->task->timeout_s;
    if (s_is(op, "CAPTURE_SNAPSHOT") || s_is(op, "CAPTURE_UPLOAD") || s_is(op, "CAPTURE_CLEANUP")) {
        cmd.upload_id = h->task->upload_id;
        if (h->task->capture) {
            cmd.upload_sha256 = h->task->capture->sha256;
            cmd.upload_bytes = h->task->capture->size_bytes;
        }
    }
    cmd.deadline_ms = util_now_ms() + s_command_ms(self, h, op);
    if (agents_push(self->agents, host, &cmd) != 0) {
        s_result(h, "out of memory queueing %s", op);
        s_retry_at(h, util_mono_ms() + 500);
        return S_WAIT;
    }
    h->sent_at = util_mono_ms();
    return S_WAIT;
}

/* Send the stage's command to the VM's host once (its id recorded in the task first), then
   wait for the result, which arrives as an event (tasks_on_result). */
static s_rc_t s_on_host(tasks_t *self, s_held_t *h, const s_stage_t *stage)
{
    Berth__Task *t = h->task;
    const char *op = s_stage_op(h, stage);
    const char *host = s_stage_host(h, stage);
    if (h->done) {
        Berth__AgentResult *r = h->done;
        h->done = NULL;
        s_set(&t->command, "");
        h->sent_at = 0;
        h->dirty = 1;
        h->must_write = 1;
        s_rc_t rc = S_DONE;
        if (r->ok) {
            /* What the agent says it did ("shut down", "powered off") tells a day-2
               action's story; a provisioning's steps keep their terse form. */
            char detail[320] = "";
            if (!s_is(t->kind, "PROVISION") && *r->detail)
                snprintf(detail, sizeof detail, " (%.300s)", r->detail);
            s_result(h, "%s on host %s%s%s%s", op, host, *r->power_state ? ": " : "",
                     r->power_state, detail);
            if (s_is(op, "CAPTURE_SNAPSHOT") && t->capture) { /* what the upload must carry */
                s_set(&t->capture->sha256, r->sha256);
                t->capture->size_bytes = r->size_bytes;
            }
            if (*r->power_state && !s_is(h->vm->power_state, r->power_state)) {
                s_set(&h->vm->power_state, r->power_state);
                h->vm_dirty = 1;
            }
        } else {
            s_result(h, "%s", *r->error ? r->error : "agent reported a failure");
            rc = S_FAIL;
        }
        berth__agent_result__free_unpacked(r, NULL);
        return rc;
    }
    if (agents_host_down(self->agents, t->host)) { /* reconcile: fail over at once */
        s_result(h, "host %s is DOWN (no heartbeat within its ttl)", t->host);
        return S_FAIL;
    }
    if (!*t->command) {
        /* Stage image answer first, so the command is recorded only when it can be sent. */
        if (s_is(op, "CREATE_DISK") || s_is(op, "PUT_SEED")) {
            s_rc_t rc = s_staged(self, h);
            if (rc != S_DONE)
                return rc;
        }
        char id[UTIL_ID_LEN];
        util_uuid(id);
        s_set(&t->command, id);
        h->dirty = 1;
        if (s_save(self, h) != 0)
            return S_WAIT; /* the caller sees the task gone from our hands */
        h->stage_since = util_mono_ms();
        s_push(self, h, op, host);
    } else if (!h->sent_at || util_mono_ms() - h->sent_at >= self->redeliver_ms)
        s_push(self, h, op, host); /* taken over, or no result for a while: hand it out again */
    if (h->sent_at)                /* else still waiting for the stager's answer, an event */
        s_retry_at(h, h->sent_at + self->redeliver_ms);
    s_result(h, "host %s did not complete %s within %d s", host, op,
             s_command_ms(self, h, op) / 1000);
    return s_waited(h, s_command_ms(self, h, op));
}

/* Ready when libvirt says the domain runs: START answers with the domain's state, so this
   is normally done at once; otherwise the host's heartbeats are watched until the deadline. */
static s_rc_t s_wait_ready(tasks_t *self, s_held_t *h, const s_stage_t *stage)
{
    (void)stage;
    const char *host = h->task->host;
    if (s_is(h->vm->power_state, "RUNNING")) {
        s_result(h, "host %s reports the domain RUNNING", host);
        return S_DONE;
    }
    if (agents_host_down(self->agents, host)) { /* reconcile: fail over at once */
        s_result(h, "host %s is DOWN (no heartbeat within its ttl)", host);
        return S_FAIL;
    }
    char power[32] = "";
    if (agents_power(self->store, host, h->vm->id, power, sizeof power) == 0 &&
        s_is(power, "RUNNING")) {
        s_set(&h->vm->power_state, power);
        h->vm_dirty = 1;
        s_result(h, "host %s reports the domain RUNNING", host);
        return S_DONE;
    }
    s_result(h, "host %s did not report the domain RUNNING within %d s (last: %s)", host,
             self->ready_timeout_ms / 1000, *power ? power : "not reported");
    s_retry_at(h, util_mono_ms() + 500);
    return s_waited(h, self->ready_timeout_ms);
}

/* ---- undoing and disposal ----------------------------------------------------------------- */

/* Remove domain, disk and seed from the host (nothing to do when no host was claimed). */
static s_rc_t s_destroy(tasks_t *self, s_held_t *h, const s_stage_t *stage)
{
    if (!*h->task->host) {
        s_result(h, "nothing on any host");
        return S_DONE;
    }
    if (h->task->rolling_back && agents_host_down(self->agents, h->task->host)) {
        /* reconcile: not waited for; if the host comes back, what it built is an orphan. */
        s_result(h, "host %s is DOWN: what it built is left to reconciliation", h->task->host);
        return S_DONE;
    }
    s_rc_t rc = s_on_host(self, h, stage);
    if (rc == S_DONE) {
        s_set(&h->vm->power_state, "NOSTATE");
        h->vm_dirty = 1;
    }
    return rc;
}

/* Give the claim back. Retried for as long as it takes: a claim never released is capacity
   lost for good, so this stage does not time out. keep_address: the VM keeps its network
   address (s_undo_release). */
static s_rc_t s_release_claim(tasks_t *self, s_held_t *h, int keep_address)
{
    Berth__ReleaseClaim req = BERTH__RELEASE_CLAIM__INIT;
    req.vm = h->vm->id;
    req.keep_address = keep_address;
    Berth__Envelope *reply = NULL;
    s_rc_t rc = s_call(self, h, "scheduler", &req.base, &reply);
    if (rc == S_FAIL) {
        s_retry_at(h, util_mono_ms() + 2000);
        log_warn(h->task->request_id, "claim release refused; retrying", "{s:s, s:s}", "vm", req.vm,
                 "reason", h->result);
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

/* The full release (disposal): capacity, and the network address back to its pool. */
static s_rc_t s_release(tasks_t *self, s_held_t *h, const s_stage_t *stage)
{
    (void)stage;
    return s_release_claim(self, h, 0);
}

/* Undoing a build: the capacity goes back, the VM keeps its network address, so a retry on
   another host builds the same identity (its seed is built once) and a VM that ends ERROR
   holds it until its disposal gives it back. */
static s_rc_t s_undo_release(tasks_t *self, s_held_t *h, const s_stage_t *stage)
{
    (void)stage;
    return s_release_claim(self, h, 1);
}

/* ---- day-2 stages ------------------------------------------------------------------------- */

/* SHELVE: the claim keeps only the disk, which stays on the host; the vCPUs and RAM go back
   to the host. Retried like s_release: capacity must never be lost. */
static s_rc_t s_shrink_claim(tasks_t *self, s_held_t *h, const s_stage_t *stage)
{
    (void)stage;
    Berth__ReleaseClaim req = BERTH__RELEASE_CLAIM__INIT;
    req.vm = h->vm->id;
    req.keep_disk = 1;
    Berth__Envelope *reply = NULL;
    s_rc_t rc = s_call(self, h, "scheduler", &req.base, &reply);
    if (rc == S_FAIL) {
        s_retry_at(h, util_mono_ms() + 2000);
        log_warn(h->task->request_id, "claim shrink refused; retrying", "{s:s, s:s}", "vm", req.vm,
                 "reason", h->result);
        return S_WAIT;
    }
    if (rc != S_DONE)
        return S_WAIT;
    Berth__ClaimReleased *rel =
        (Berth__ClaimReleased *)envelope_body(reply, &berth__claim_released__descriptor);
    s_result(h,
             rel && rel->released ? "vCPUs and RAM given back to host %s; disk kept there"
                                  : "no claim held on host %s",
             h->task->host);
    if (rel)
        berth__claim_released__free_unpacked(rel, NULL);
    berth__envelope__free_unpacked(reply, NULL);
    return S_DONE;
}

/* UNSHELVE: place the VM again, its own host first (where its disk is). The scheduler moves
   the disk-only claim to a full one on whichever host fits. */
static s_rc_t s_unshelve_schedule(tasks_t *self, s_held_t *h, const s_stage_t *stage)
{
    (void)stage;
    Berth__Task *t = h->task;
    Berth__SelectHost req = BERTH__SELECT_HOST__INIT;
    req.vm = h->vm->id;
    req.flavor = h->vm->flavor;
    char *net_ids[LIMIT_VM_NETWORKS_MAX];
    s_network_ids(h, &req, net_ids); /* the claim keeps the addresses it holds */
    s_filters(h, &req);
    char *prefer[1] = { t->from_host };
    req.prefer = prefer;
    req.n_prefer = *t->from_host ? 1 : 0;
    Berth__Envelope *reply = NULL;
    s_rc_t rc = s_ask(self, h, "scheduler", &req.base, &reply);
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
    s_set(&t->host, sel->host);
    s_set(&h->vm->host, sel->host);
    s_addressed(h, sel);
    h->vm_dirty = 1;
    if (s_is(sel->host, t->from_host))
        s_result(h, "claimed on host %s, where its disk is", sel->host);
    else
        s_result(h, "claimed on host %s; its disk is on host %s and is made again there", sel->host,
                 t->from_host);
    berth__host_selection__free_unpacked(sel, NULL);
    return S_DONE;
}

/* UNSHELVE placed on another host than its disk's: 1. */
static int s_moved(const s_held_t *h)
{
    return *h->task->from_host && !s_is(h->task->host, h->task->from_host);
}

/* An UNSHELVE stage that only a move needs (building on the new host, removing the old
   domain and disk): done at once when the VM stays where its disk is. */
static s_rc_t s_if_moved(tasks_t *self, s_held_t *h, const s_stage_t *stage)
{
    if (!s_moved(h)) {
        s_result(h, "not needed: the disk is on host %s", h->task->host);
        return S_DONE;
    }
    if (!stage->op)
        return s_stage_image(self, h, stage);
    s_rc_t rc = s_on_host(self, h, stage);
    if (rc == S_FAIL && stage->on_old_host) {
        /* The VM runs on its new host: what is left on the old one is an orphan to
           report, not a reason to fail the unshelve. */
        log_warn(h->task->request_id, "old host kept the shelved disk", "{s:s, s:s, s:s}", "vm",
                 h->vm->id, "host", h->task->from_host, "reason", h->result);
        char why[sizeof h->result];
        util_strlcpy(why, h->result, sizeof why);
        s_result(h, "left on host %s: %s", h->task->from_host, why);
        return S_DONE;
    }
    return rc;
}

/* ---- the stage tables --------------------------------------------------------------------- */

static const s_stage_t s_provision[] = {
    { "validate", 5, s_validate, NULL, NULL, S_LIGHT, 0, 0 },
    { "schedule", 15, s_schedule, NULL, "release_claim", S_LIGHT, 0, 0 },
    { "stage_image", 30, s_stage_image, NULL, NULL, S_HEAVY, 0, 0 },
    { "create_disk", 45, s_on_host, "CREATE_DISK", "undo_host", S_HEAVY, 1, 0 },
    { "build_seed", 60, s_on_host, "PUT_SEED", "undo_host", S_LIGHT, 1, 0 },
    { "define", 75, s_on_host, "DEFINE", "undo_host", S_LIGHT, 1, 0 },
    { "power_on", 85, s_on_host, "START", "undo_host", S_LIGHT, 1, 0 },
    { "wait_ready", 95, s_wait_ready, NULL, NULL, S_LIGHT, 1, 0 },
    { NULL, 0, NULL, NULL, NULL, S_LIGHT, 0, 0 },
};

/*  Instant deploy (services/approval/pool.h). POOL_BUILD builds a VM for its template's pool
    like a provisioning, placed in no group (so never on capacity a group's reservation
    holds), and ends with the running guest suspended to disk (libvirt's managed save): the
    VM is POOLED, its domain shut off and its memory in a file beside it. A failure rolls back
    and tries other hosts the same way; the VM then leaves the pool, ERROR. */
static s_rc_t s_settle(tasks_t *self, s_held_t *h, const s_stage_t *stage);

static const s_stage_t s_pool_build[] = {
    { "validate", 5, s_validate, NULL, NULL, S_LIGHT, 0, 0 },
    { "schedule", 15, s_schedule, NULL, "release_claim", S_LIGHT, 0, 0 },
    { "stage_image", 25, s_stage_image, NULL, NULL, S_HEAVY, 0, 0 },
    { "create_disk", 40, s_on_host, "CREATE_DISK", "undo_host", S_HEAVY, 1, 0 },
    { "build_seed", 50, s_on_host, "PUT_SEED", "undo_host", S_LIGHT, 1, 0 },
    { "define", 60, s_on_host, "DEFINE", "undo_host", S_LIGHT, 1, 0 },
    { "power_on", 70, s_on_host, "START", "undo_host", S_LIGHT, 1, 0 },
    { "wait_ready", 80, s_wait_ready, NULL, NULL, S_LIGHT, 1, 0 },
    { "settle", 85, s_settle, NULL, NULL, S_LIGHT, 1, 0 },
    { "save_to_disk", 95, s_on_host, "MANAGED_SAVE", "undo_host", S_LIGHT, 1, 0 },
    { NULL, 0, NULL, NULL, NULL, S_LIGHT, 0, 0 },
};

static s_rc_t s_pool_taken(tasks_t *self, s_held_t *h, const s_stage_t *stage);
static s_rc_t s_reidentify(tasks_t *self, s_held_t *h, const s_stage_t *stage);

/* A PROVISION served from the pool (Task.from_pool): the VM taken is already built and
   claimed on its host under its final id; its seed is built again for its own name, keys and
   address, put on the host, and the domain started, which restores it from disk. No stage is
   heavy: it never waits behind builds. A failure rolls back like a provisioning (the domain
   and the claim go) and the next attempt builds the VM on another host, as without a pool. */
static const s_stage_t s_from_pool[] = {
    { "validate", 5, s_validate, NULL, NULL, S_LIGHT, 0, 0 },
    { "from_pool", 20, s_pool_taken, NULL, "release_claim", S_LIGHT, 1, 0 },
    { "reidentify", 40, s_reidentify, NULL, NULL, S_LIGHT, 0, 0 },
    { "build_seed", 60, s_on_host, "PUT_SEED", "undo_host", S_LIGHT, 1, 0 },
    { "resume", 80, s_on_host, "START", "undo_host", S_LIGHT, 1, 0 },
    { "wait_ready", 95, s_wait_ready, NULL, NULL, S_LIGHT, 1, 0 },
    { NULL, 0, NULL, NULL, NULL, S_LIGHT, 0, 0 },
};

/* from_pool: the task goes where the pooled VM waits. */
static s_rc_t s_pool_taken(tasks_t *self, s_held_t *h, const s_stage_t *stage)
{
    (void)stage;
    Berth__Task *t = h->task;
    if (!*h->vm->host) {
        s_result(h, "the pooled VM has no host");
        return S_FAIL;
    }
    if (!s_is(t->host, h->vm->host)) {
        s_set(&t->host, h->vm->host);
        h->dirty = 1;
    }
    if (agents_host_down(self->agents, t->host)) {
        s_result(h, "host %s is DOWN (no heartbeat within its ttl)", t->host);
        return S_FAIL;
    }
    /* Its new seed is asked for now: reidentify then usually finds it built. */
    s_prefetch(self, h);
    s_result(h, "served from the pool of template %s: built ahead on host %s, suspended to disk",
             h->vm->template_, t->host);
    return S_DONE;
}

/* settle: libvirt says the domain runs the moment it starts, long before its guest has booted;
   a guest saved then finishes booting after its resume. pool_settle_ms (taskmgr; 0 by
   default: nothing boots on the test driver) lets it boot first, so the pool holds guests
   that are up. A new holder waits the whole time again. */
static s_rc_t s_settle(tasks_t *self, s_held_t *h, const s_stage_t *stage)
{
    (void)stage;
    int64_t until = h->stage_since + self->pool_settle_ms;
    if (self->pool_settle_ms <= 0 || util_mono_ms() >= until) {
        s_result(h, "ran %d ms before it is saved", self->pool_settle_ms);
        return S_DONE;
    }
    s_retry_at(h, until);
    return S_WAIT;
}

/* reidentify: the stager builds the seed again for the VM's own name, keys and address. */
static s_rc_t s_reidentify(tasks_t *self, s_held_t *h, const s_stage_t *stage)
{
    s_rc_t rc = s_stage_image(self, h, stage);
    if (rc == S_DONE)
        s_result(h, "seed built again: instance-id %s, hostname %s%s%s, %lld bytes", h->vm->id,
                 h->vm->name, h->vm->network && *h->vm->network->ip ? ", address " : "",
                 h->vm->network && *h->vm->network->ip ? h->vm->network->ip : "",
                 (long long)h->staged->seed_bytes);
    return rc;
}

/* What undoes a failed provisioning: the rows the failed attempt needs (the undo column of
   its stages that ran, s_next), in this order; each is also a no-op when nothing is there. */
static const s_stage_t s_rollback[] = {
    { "undo_host", 96, s_destroy, "DESTROY", NULL, S_LIGHT, 0, 0 },
    { "release_claim", 98, s_undo_release, NULL, NULL, S_LIGHT, 0, 0 },
    { NULL, 0, NULL, NULL, NULL, S_LIGHT, 0, 0 },
};

static const s_stage_t s_dispose[] = {
    { "destroy", 30, s_destroy, "DESTROY", NULL, S_HEAVY, 0, 0 },
    { "release_claim", 80, s_release, NULL, NULL, S_LIGHT, 0, 0 },
    { NULL, 0, NULL, NULL, NULL, S_LIGHT, 0, 0 },
};

/*  Day-2 actions. Each is a task of one kind with its own stage table, asked with
    POST /v1/vms/{id}/actions (VmAction). A power action leaves the lifecycle state ACTIVE
    and changes the power state the agent reports; shelve and unshelve move the VM through
    SHELVING/SHELVED/UNSHELVING (lib/lifecycle.c). A failed action changes nothing more:
    the task ends FAILED with the fault and the VM keeps what its host reports (a shelve
    that could not power off is ACTIVE again; an unshelve no host fits stays SHELVED).

    Shelving, concretely: the domain is shut down (forced after timeout_s), its claim keeps
    only the disk (the host's vCPUs and RAM go back), the VM's quota keeps its count and
    disk. The domain and disk stay defined on that host ("keeps its disk"). Unshelving
    charges vCPUs and RAM to the quota again, asks the scheduler for a host (its own first):
    on its own host it is simply powered on; on another host the disk is made again there
    from the VM's image and seed (a new disk: what the guest wrote is not copied between
    hosts yet), the domain defined and started, and the old host's domain and disk are
    removed. */
static const s_stage_t s_start_stages[] = {
    { "power_on", 50, s_on_host, "START", NULL, S_LIGHT, 1, 0 },
    { "wait_ready", 90, s_wait_ready, NULL, NULL, S_LIGHT, 1, 0 },
    { NULL, 0, NULL, NULL, NULL, S_LIGHT, 0, 0 },
};

static const s_stage_t s_stop_stages[] = {
    { "shut_down", 50, s_on_host, "SHUTDOWN", NULL, S_LIGHT, 1, 0 },
    { NULL, 0, NULL, NULL, NULL, S_LIGHT, 0, 0 },
};

static const s_stage_t s_reboot_stages[] = {
    { "reboot", 50, s_on_host, "REBOOT", NULL, S_LIGHT, 1, 0 },
    { NULL, 0, NULL, NULL, NULL, S_LIGHT, 0, 0 },
};

static const s_stage_t s_suspend_stages[] = {
    { "suspend", 50, s_on_host, "SUSPEND", NULL, S_LIGHT, 1, 0 },
    { NULL, 0, NULL, NULL, NULL, S_LIGHT, 0, 0 },
};

static const s_stage_t s_resume_stages[] = {
    { "resume", 50, s_on_host, "RESUME", NULL, S_LIGHT, 1, 0 },
    { NULL, 0, NULL, NULL, NULL, S_LIGHT, 0, 0 },
};

static const s_stage_t s_shelve_stages[] = {
    { "shut_down", 40, s_on_host, "SHUTDOWN", NULL, S_LIGHT, 1, 0 },
    { "shrink_claim", 80, s_shrink_claim, NULL, NULL, S_LIGHT, 0, 0 },
    { NULL, 0, NULL, NULL, NULL, S_LIGHT, 0, 0 },
};

static const s_stage_t s_unshelve_stages[] = {
    { "schedule", 10, s_unshelve_schedule, NULL, NULL, S_LIGHT, 0, 0 },
    { "stage_image", 20, s_if_moved, NULL, NULL, S_HEAVY, 0, 0 },
    { "create_disk", 35, s_if_moved, "CREATE_DISK", NULL, S_HEAVY, 1, 0 },
    { "build_seed", 45, s_if_moved, "PUT_SEED", NULL, S_LIGHT, 1, 0 },
    { "define", 55, s_if_moved, "DEFINE", NULL, S_LIGHT, 1, 0 },
    { "power_on", 70, s_on_host, "START", NULL, S_LIGHT, 1, 0 },
    { "wait_ready", 85, s_wait_ready, NULL, NULL, S_LIGHT, 1, 0 },
    { "remove_old", 95, s_if_moved, "DESTROY", NULL, S_LIGHT, 1, 1 },
    { NULL, 0, NULL, NULL, NULL, S_LIGHT, 0, 0 },
};

/* What undoes an unshelve that failed on another host than its disk's: that host's partial
   build and the claim moved there. The VM then ends ERROR, its disk still on its old host. */
static const s_stage_t s_unshelve_undo[] = {
    { "undo_new_host", 96, s_destroy, "DESTROY", NULL, S_LIGHT, 0, 0 },
    { "release_claim", 98, s_undo_release, NULL, NULL, S_LIGHT, 0, 0 },
    { NULL, 0, NULL, NULL, NULL, S_LIGHT, 0, 0 },
};

/*  Capture: the stopped VM's disk becomes a model image. The agent flattens the disk into a
    capture file (qemu-img convert) and reports its digest and size; the stager opens an
    upload for exactly that file from that host; the agent sends it in chunks; the stager
    checks the whole file and records the image READY; the agent removes its file. The VM
    stays ACTIVE and STOPPED throughout (a start waits for the task). A failure or an abort
    drops the upload at the stager and the capture file on the host (s_capture_undo). */
static s_rc_t s_capture_open(tasks_t *self, s_held_t *h, const s_stage_t *stage);
static s_rc_t s_capture_register(tasks_t *self, s_held_t *h, const s_stage_t *stage);
static s_rc_t s_capture_drop(tasks_t *self, s_held_t *h, const s_stage_t *stage);

static const s_stage_t s_capture_stages[] = {
    { "snapshot", 20, s_on_host, "CAPTURE_SNAPSHOT", NULL, S_LIGHT, 1, 0 },
    { "open_upload", 35, s_capture_open, NULL, NULL, S_LIGHT, 0, 0 },
    { "upload", 50, s_on_host, "CAPTURE_UPLOAD", NULL, S_LIGHT, 1, 0 },
    { "register", 85, s_capture_register, NULL, NULL, S_LIGHT, 0, 0 },
    { "cleanup", 95, s_on_host, "CAPTURE_CLEANUP", NULL, S_LIGHT, 1, 0 },
    { NULL, 0, NULL, NULL, NULL, S_LIGHT, 0, 0 },
};

static const s_stage_t s_capture_undo[] = {
    { "drop_upload", 96, s_capture_drop, NULL, NULL, S_LIGHT, 0, 0 },
    { "remove_capture", 98, s_on_host, "CAPTURE_CLEANUP", NULL, S_LIGHT, 1, 0 },
    { NULL, 0, NULL, NULL, NULL, S_LIGHT, 0, 0 },
};

/* What undoes an aborted day-2 action (but an unshelve): its power state as it was
   when the action was queued (s_restore_power). */
static s_rc_t s_restore_power(tasks_t *self, s_held_t *h, const s_stage_t *stage);

static const s_stage_t s_restore[] = {
    { "restore_power", 95, s_restore_power, NULL, NULL, S_LIGHT, 1, 0 },
    { NULL, 0, NULL, NULL, NULL, S_LIGHT, 0, 0 },
};

/* abort: DELETE /v1/vms/{id}?force=true, for a VM whose host is gone: the agent is not
   asked; the claim goes back to the host's capacity (and the quota with the VM's state). */
static const s_stage_t s_dispose_forced[] = {
    { "release_claim", 80, s_release, NULL, NULL, S_LIGHT, 0, 0 },
    { NULL, 0, NULL, NULL, NULL, S_LIGHT, 0, 0 },
};

/* What each action asks of the VM, and the task it becomes. */
typedef struct {
    const char *action;      /* the API's word */
    const char *kind;        /* the task's kind */
    const s_stage_t *stages; /* the kind's stage table */
    const char *needs;       /* the lifecycle state it needs */
    const char *powers;      /* power states it applies to, space-separated ("": any) */
    const char *done;        /* power state in which it has nothing to do (NULL: none) */
    const char *to;          /* lifecycle state the request moves the VM to (NULL: stays) */
    int graceful;            /* takes timeout_s (a graceful shutdown) */
    int forcible;            /* takes force */
} s_action_t;

static const s_action_t s_actions[] = {
    { "start", "START", s_start_stages, "ACTIVE", "STOPPED CRASHED", "RUNNING", NULL, 0, 0 },
    { "stop", "STOP", s_stop_stages, "ACTIVE", "RUNNING SUSPENDED CRASHED", "STOPPED", NULL, 1, 1 },
    { "reboot", "REBOOT", s_reboot_stages, "ACTIVE", "RUNNING", NULL, NULL, 0, 1 },
    { "suspend", "SUSPEND", s_suspend_stages, "ACTIVE", "RUNNING", "SUSPENDED", NULL, 0, 0 },
    { "resume", "RESUME", s_resume_stages, "ACTIVE", "SUSPENDED", "RUNNING", NULL, 0, 0 },
    { "shelve", "SHELVE", s_shelve_stages, "ACTIVE", "RUNNING STOPPED SUSPENDED CRASHED", NULL,
      "SHELVING", 1, 1 },
    { "unshelve", "UNSHELVE", s_unshelve_stages, "SHELVED", "", NULL, "UNSHELVING", 0, 0 },
    { "capture", "CAPTURE", s_capture_stages, "ACTIVE", "STOPPED", NULL, NULL, 0, 0 },
};

#define S_N_ACTIONS (sizeof s_actions / sizeof s_actions[0])

/* The action whose task kind (by_kind) or API word is name, or NULL. */
static const s_action_t *s_action(const char *name, int by_kind)
{
    for (size_t i = 0; i < S_N_ACTIONS; i++)
        if (s_is(by_kind ? s_actions[i].kind : s_actions[i].action, name))
            return &s_actions[i];
    return NULL;
}

static const s_stage_t *s_table(s_held_t *h)
{
    if (s_is(h->task->kind, "POOL_BUILD"))
        return h->task->rolling_back ? s_rollback : s_pool_build;
    if (s_is(h->task->kind, "DISPOSE"))
        return h->task->force ? s_dispose_forced : s_dispose;
    const s_action_t *a = s_action(h->task->kind, 1);
    if (a && h->task->rolling_back && s_is(a->kind, "CAPTURE"))
        return s_capture_undo;
    if (a && h->task->rolling_back && !s_is(a->kind, "UNSHELVE"))
        return s_restore; /* Only an abort rolls a day-2 action back */
    if (a)
        return h->task->rolling_back && s_is(a->kind, "UNSHELVE") ? s_unshelve_undo : a->stages;
    if (h->task->rolling_back)
        return s_rollback;
    /* From the pool on its first attempt; an attempt after it is built as without one. */
    return h->task->from_pool && h->task->attempts == 0 ? s_from_pool : s_provision;
}

/* A task kind's class, as the API shows it: heavy when a row of its table is heavy. */
static const char *s_kind_class(const char *kind)
{
    const s_action_t *a = s_action(kind, 1);
    const s_stage_t *row = s_is(kind, "DISPOSE") ? s_dispose : a ? a->stages : s_provision;
    for (; row->name; row++)
        if (row->klass == S_HEAVY)
            return "heavy";
    return "light";
}

static const s_stage_t *s_row(const s_stage_t *table, const char *name)
{
    for (const s_stage_t *row = table; row->name; row++)
        if (s_is(row->name, name))
            return row;
    return NULL;
}

/* Does this attempt need undo stage `undo`? Yes when a provisioning stage of this attempt
   that names it as its undo succeeded (now ROLLED_BACK) or failed (it may have done part of
   its work). This attempt's steps are the provisioning steps since the last undo step
   before them; reading them from the task's steps lets a new holder decide the same. */
static int s_undo_needed(const Berth__Task *t, const char *undo)
{
    size_t i = t->n_steps;
    if (s_is(t->state, "ABORTING") && s_is(undo, "release_claim"))
        return 1; /* A claim an earlier holder asked for may be on its way; no-op else */
    while (i > 0 && s_row(s_rollback, t->steps[i - 1]->name))
        i--; /* the undo steps of this rollback, run or running */
    for (; i > 0 && !s_row(s_rollback, t->steps[i - 1]->name); i--) {
        const Berth__TaskStep *step = t->steps[i - 1];
        const s_stage_t *row = s_row(s_provision, step->name);
        if (!row) /* instant deploy's own stages */
            row = s_row(s_from_pool, step->name);
        if (!row)
            row = s_row(s_pool_build, step->name);
        if (row && row->undo && s_is(row->undo, undo) &&
            (s_is(step->state, "ROLLED_BACK") || s_is(step->state, "FAILED")))
            return 1;
    }
    return 0;
}

/* The row to run after `after` (NULL: from the start) in h's current table, or NULL at its
   end. A rollback runs only the undo stages its attempt needs, in the table's order. */
static const s_stage_t *s_next(s_held_t *h, const s_stage_t *table, const s_stage_t *after)
{
    const s_stage_t *row = after ? after + 1 : table;
    if (table == s_rollback)
        while (row->name && !s_undo_needed(h->task, row->name))
            row++;
    return row->name ? row : NULL;
}

/* ---- endings ------------------------------------------------------------------------------ */

/* The task engine's metrics (metrics.h): tasks ended by kind, class and end, their time on
   the platform clock, and (refreshed every heartbeat) what this instance holds and what
   waits: due for a holder, in line for a heavy slot. */
static struct {
    metrics_family_t *ended, *seconds, *held, *waiting;
} s_m;

static void s_metrics_declare(void)
{
    s_m.ended = metrics_counter("berth_tasks_ended_total",
                                "Tasks this instance ended, by kind, class and end state",
                                "kind,class,state");
    s_m.seconds = metrics_histogram(
        "berth_task_seconds", "Time from a task's creation to its end, platform clock", "kind");
    s_m.held = metrics_gauge("berth_tasks_held", "Tasks this instance holds, by class", "class");
    s_m.waiting = metrics_gauge("berth_tasks_waiting",
                                "Tasks waiting, platform-wide: due (for a holder) or line (for a "
                                "heavy slot)",
                                "queue");
    /* Every series is there from the start (a scrape before the first refresh reads 0). */
    metrics_set(s_m.held, 0, "light");
    metrics_set(s_m.held, 0, "heavy");
    metrics_set(s_m.waiting, 0, "due");
    metrics_set(s_m.waiting, 0, "line");
}

static int s_gauges(service_t *service, void *arg)
{
    (void)service;
    tasks_t *self = arg;
    int light = 0, heavy = 0;
    for (s_held_t *h = zhashx_first(self->held); h; h = zhashx_next(self->held)) {
        if (s_is(h->task->task_class, "heavy"))
            heavy++;
        else
            light++;
    }
    metrics_set(s_m.held, light, "light");
    metrics_set(s_m.held, heavy, "heavy");
    const char *queues[][2] = { { "due", KEYS_TASKS_DUE }, { "line", KEYS_THROTTLE_QUEUE } };
    for (size_t i = 0; i < sizeof queues / sizeof queues[0]; i++) {
        redisReply *r = store_command(self->store, "ZCARD %s", queues[i][1]);
        if (r && r->type == REDIS_REPLY_INTEGER)
            metrics_set(s_m.waiting, (double)r->integer, queues[i][0]);
        if (r)
            freeReplyObject(r);
    }
    return 0;
}

static void s_finish_task(s_held_t *h, const char *state)
{
    Berth__Task *t = h->task;
    if (s_is(state, "FAILED") && s_is(t->state, "ABORTING"))
        state = "ABORTED"; /* It stopped because it was asked to, whatever failed after */
    s_set(&t->state, state);
    s_set(&t->stage, "done");
    t->finished_ms = clock_now_ms();
    metrics_add(s_m.ended, 1, t->kind, t->task_class, state);
    if (t->created_ms > 0 && t->finished_ms >= t->created_ms)
        metrics_observe(s_m.seconds, (double)(t->finished_ms - t->created_ms) / 1000.0, t->kind);
    s_set(&t->holder, "");
    if (s_is(state, "SUCCEEDED"))
        t->percent = 100;
    h->dirty = 1;
}

static void s_vm_state(s_held_t *h, const char *state, const char *fault)
{
    s_set(&h->vm->state, state);
    if (fault)
        s_set(&h->vm->fault, fault);
    h->vm_dirty = 1;
}

/* Read a built pool VM's template pool_size and how many VMs its pool holds besides it
   (kept in h for the write's checks). 0, or -1 when Redis failed. */
static int s_pool_read(tasks_t *self, s_held_t *h, int64_t *others)
{
    char key[KEYS_MAX];
    Berth__Vm *vm = h->vm;
    redisReply *size = store_command(self->store, "HGET %s pool_size",
                                     keys_build(key, KEYS_TEMPLATE, vm->template_, NULL));
    keys_build(key, KEYS_POOL, vm->template_, NULL);
    redisReply *card = store_command(self->store, "ZCARD %s", key);
    redisReply *mine = store_command(self->store, "ZSCORE %s %s", key, vm->id);
    int ok = size && (size->type == REDIS_REPLY_STRING || size->type == REDIS_REPLY_NIL) && card &&
             card->type == REDIS_REPLY_INTEGER && mine &&
             (mine->type == REDIS_REPLY_STRING || mine->type == REDIS_REPLY_NIL);
    if (ok) {
        util_strlcpy(h->pool_size_read, size->type == REDIS_REPLY_STRING ? size->str : "",
                     sizeof h->pool_size_read);
        h->pool_members_read = card->integer;
        *others = card->integer - (mine->type == REDIS_REPLY_NIL ? 0 : 1);
        h->pool_checked = 1;
    }
    if (size)
        freeReplyObject(size);
    if (card)
        freeReplyObject(card);
    if (mine)
        freeReplyObject(mine);
    return ok ? 0 : -1;
}

/* The last stage of the task's current table is done. */
static int s_complete(tasks_t *self, s_held_t *h)
{
    Berth__Task *t = h->task;
    Berth__Vm *vm = h->vm;
    if (s_is(t->kind, "DISPOSE")) {
        s_vm_state(h, "DISPOSED", NULL);
        s_set(&vm->power_state, "NOSTATE");
        s_finish_task(h, "SUCCEEDED");
        return s_save(self, h);
    }
    const s_action_t *action = s_action(t->kind, 1);
    if (action && t->rolling_back && s_is(t->kind, "CAPTURE")) {
        /* Its upload and file are gone: failed, or aborted. */
        s_finish_task(h, s_is(t->state, "ABORTING") ? "ABORTED" : "FAILED");
        return s_save(self, h);
    }
    if (action && t->rolling_back && !s_is(t->kind, "UNSHELVE")) {
        /* Its power state is restored; a shelve not done is ACTIVE again. */
        if (s_is(vm->state, "SHELVING"))
            s_vm_state(h, "ACTIVE", NULL);
        s_finish_task(h, "ABORTED");
        return s_save(self, h);
    }
    if (action && t->rolling_back) { /* an unshelve elsewhere, undone */
        s_set(&vm->host, t->from_host);
        s_vm_state(h, "ERROR", t->fault);
        s_finish_task(h, "FAILED");
        return s_save(self, h);
    }
    if (action) {
        if (s_is(t->kind, "SHELVE"))
            s_vm_state(h, "SHELVED", NULL);
        else if (s_is(t->kind, "UNSHELVE"))
            s_vm_state(h, "ACTIVE", "");
        s_set(&t->fault, "");
        s_finish_task(h, "SUCCEEDED");
        return s_save(self, h);
    }
    if (!t->rolling_back && s_is(t->kind, "POOL_BUILD")) {
        /* Suspended to disk: it waits in its template's pool (s_vm_changes adds it), unless
           the pool was made smaller while it was built and its other VMs fill it already:
           it is then disposed, so the pool comes back to its size. */
        int64_t others = 0;
        if (s_pool_read(self, h, &others) != 0) {
            h->lost = 2;
            return -1;
        }
        if (others >= atoll(h->pool_size_read)) {
            util_uuid(h->surplus);
            s_vm_state(h, "DISPOSING", "");
            s_set(&vm->task, h->surplus);
            log_info(t->request_id, "pool build surplus: its pool holds its size; disposing it",
                     "{s:s, s:s, s:s, s:I}", "vm", vm->id, "template", vm->template_, "size",
                     *h->pool_size_read ? h->pool_size_read : "0", "others", (json_int_t)others);
        } else {
            s_vm_state(h, "POOLED", "");
            vm->pooled_ms = clock_now_ms();
        }
        s_set(&t->fault, "");
        s_finish_task(h, "SUCCEEDED");
        return s_save(self, h);
    }
    if (!t->rolling_back) {
        int64_t now = clock_now_ms();
        s_vm_state(h, "ACTIVE", "");
        if (!vm->lease) {
            vm->lease = malloc(sizeof *vm->lease);
            if (vm->lease)
                berth__lease__init(vm->lease);
        }
        /* A VM built again after its host lost it (agents.c) keeps its lease's end; its
           timers are written again with it. */
        if (vm->lease && vm->lease->expires_ms <= 0)
            vm->lease->expires_ms = now + (int64_t)vm->lease_days * 86400000LL;
        h->lease_started = vm->lease && vm->lease_days > 0;
        s_set(&t->fault, "");
        s_finish_task(h, "SUCCEEDED");
        return s_save(self, h);
    }
    /* Rolled back. Another attempt if the failure was the host's (excluded from then on: it
       is the last of `tried`) or the image's (the host may serve again), and attempts are
       left: `attempts` counts those made before this one, whatever failed them. */
    char host[128]; /* a copy: the task's own string goes when "host" is cleared below */
    util_strlcpy(host, t->host, sizeof host);
    size_t n = t->n_tried;
    int host_failed = n && s_is(t->tried[n - 1], host);
    int image_refused = t->image_refused;
    t->image_refused = 0;
    t->rolling_back = 0;
    s_set(&t->host, "");
    s_set(&vm->host, "");
    h->vm_dirty = 1;
    if ((host_failed || image_refused) && t->attempts + 1 < self->max_attempts &&
        !s_is(t->state, "ABORTING")) {
        t->attempts++;
        if (host_failed)
            log_info(t->request_id, "retrying provisioning on another host", "{s:s, s:s, s:i}",
                     "vm", vm->id, "failed_host", host, "attempt", t->attempts + 1);
        else
            log_info(t->request_id, "retrying provisioning: its image was refused",
                     "{s:s, s:s, s:s, s:i}", "vm", vm->id, "host", host, "image",
                     vm->staged_image ? vm->staged_image : "", "attempt", t->attempts + 1);
        s_step_open(self, h, &s_provision[1]);
        return 0; /* the caller runs the stage and writes */
    }
    if (s_is(t->state, "ABORTING") && !strstr(t->fault, "aborted by ")) {
        /* A stage failed after the abort was asked; the fault still says who. */
        char fault[1400];
        snprintf(fault, sizeof fault, "aborted by %s; %s", t->abort_by, t->fault);
        s_set(&t->fault, fault);
    }
    s_vm_state(h, "ERROR", t->fault);
    s_finish_task(h, "FAILED");
    return s_save(self, h);
}

static int s_roll_back(tasks_t *self, s_held_t *h);

/* A stage failed with h->result. 0 when the task goes on (the caller runs the stage now
   open and writes), -1 when it left our hands. */
static int s_failed(tasks_t *self, s_held_t *h, const s_stage_t *stage)
{
    Berth__Task *t = h->task;
    log_warn(t->request_id, "task stage failed", "{s:s, s:s, s:s, s:s}", "task", h->id, "vm",
             h->vm->id, "stage", stage->name, "reason", h->result);
    s_step_close(h, "FAILED");
    if (s_table(h) == s_rollback || s_table(h) == s_unshelve_undo || s_table(h) == s_restore ||
        s_table(h) == s_capture_undo) {
        /* Undoing is best effort past its deadline: go on with the next undo stage. */
        const s_stage_t *next = s_next(h, s_table(h), stage);
        if (next) {
            s_step_open(self, h, next);
            return 0;
        }
        return s_complete(self, h);
    }
    /* The fault tells every attempt, so the root cause survives a last "no valid host". */
    char fault[1024], where[160] = "";
    if (stage->on_host)
        snprintf(where, sizeof where, " on host %s", t->host);
    snprintf(fault, sizeof fault, "%s%s%s failed%s: %s", t->fault, *t->fault ? "; then " : "",
             stage->name, where, h->result);
    s_set(&t->fault, fault);
    if (s_is(t->kind, "DISPOSE")) {
        s_vm_state(h, "ERROR", fault);
        s_finish_task(h, "FAILED");
        return s_save(self, h);
    }
    if (s_action(t->kind, 1)) {
        /* A day-2 action is not rolled back: the VM keeps what its host reports. A shelve
           that could not power off is ACTIVE again; an unshelve no host fits stays SHELVED
           on its host; one that failed building or starting it is ERROR, its disk on the
           host it was shelved on (disposal removes it), after what it built on another host
           and the claim moved there were undone (s_unshelve_undo). */
        if (s_is(t->kind, "CAPTURE")) { /* the upload and the file go first */
            t->rolling_back = 1;
            s_step_open(self, h, &s_capture_undo[0]);
            return 0;
        }
        if (s_is(t->kind, "SHELVE"))
            s_vm_state(h, "ACTIVE", NULL);
        else if (s_is(t->kind, "UNSHELVE") && s_is(stage->name, "schedule"))
            s_vm_state(h, "SHELVED", NULL);
        else if (s_is(t->kind, "UNSHELVE") && s_moved(h)) {
            t->rolling_back = 1; /* the new host's part goes first (s_complete then) */
            s_step_open(self, h, &s_unshelve_undo[0]);
            return 0;
        } else if (s_is(t->kind, "UNSHELVE"))
            s_vm_state(h, "ERROR", fault);
        s_finish_task(h, "FAILED");
        return s_save(self, h);
    }
    if (stage->on_host)
        s_append(&t->tried, &t->n_tried, t->host);
    return s_roll_back(self, h);
}

/* Undo the stages this provisioning attempt completed (after a failure, or an abort at a
   stage boundary). 0 when the task goes on (the caller runs the stage now open and
   writes), -1 when it left our hands. */
static int s_roll_back(tasks_t *self, s_held_t *h)
{
    Berth__Task *t = h->task;
    /* Stages already done on this attempt are undone now. */
    for (size_t i = 0; i < t->n_steps; i++) {
        Berth__TaskStep *step = t->steps[i];
        if (s_is(step->state, "SUCCEEDED") && !s_is(step->name, "validate"))
            s_set(&step->state, "ROLLED_BACK");
    }
    t->rolling_back = 1;
    const s_stage_t *first = s_next(h, s_rollback, NULL);
    if (!first)
        return s_complete(self, h); /* nothing of this attempt to undo */
    s_step_open(self, h, first);
    return 0;
}

/* An abort was asked and the stage in progress is done (a command in flight was
   let finish, so nothing it builds is left behind): undo what the task did instead of going
   on. A provisioning rolls back like a failed attempt and ends ABORTED, its VM ERROR with a
   fault naming who aborted it; a day-2 action restores the VM's power state (s_restore). */
static int s_abort_now(tasks_t *self, s_held_t *h, const s_stage_t *stage)
{
    Berth__Task *t = h->task;
    char fault[300];
    snprintf(fault, sizeof fault, "aborted by %s after stage %s", t->abort_by, stage->name);
    s_set(&t->fault, fault);
    log_info(t->request_id, "task aborted at a stage boundary", "{s:s, s:s, s:s, s:s}", "task",
             h->id, "vm", h->vm->id, "stage", stage->name, "by", t->abort_by);
    if (s_action(t->kind, 1)) {
        t->rolling_back = 1;
        s_step_open(self, h, s_is(t->kind, "CAPTURE") ? &s_capture_undo[0] : &s_restore[0]);
        return 0;
    }
    if (!s_is(t->kind, "PROVISION") && !s_is(t->kind, "POOL_BUILD")) {
        /* nothing to undo (refused before it gets here) */
        s_vm_state(h, "ERROR", fault);
        s_finish_task(h, "ABORTED");
        return s_save(self, h);
    }
    return s_roll_back(self, h);
}

/* The agent op that moves the VM from power state `now` one step toward `was`, or NULL when
   it is there (or cannot be taken back there: a crash is not made again). */
static const char *s_restore_op(const char *now, const char *was)
{
    if (s_is(now, was) || !*was)
        return NULL;
    if (s_is(was, "RUNNING"))
        return s_is(now, "SUSPENDED") ? "RESUME" : s_is(now, "STOPPED") ? "START" : NULL;
    if (s_is(was, "STOPPED"))
        return s_is(now, "RUNNING") || s_is(now, "SUSPENDED") ? "POWER_OFF" : NULL;
    if (s_is(was, "SUSPENDED"))
        return s_is(now, "RUNNING") ? "SUSPEND" : s_is(now, "STOPPED") ? "START" : NULL;
    return NULL;
}

/* Bring the VM back to the power state it had when its action was queued, one agent
   command at a time (stopped -> suspended takes a start, then a suspend). */
static s_rc_t s_restore_power(tasks_t *self, s_held_t *h, const s_stage_t *stage)
{
    for (int i = 0; i < 3; i++) {
        const char *op = s_restore_op(h->vm->power_state, h->task->prior_power);
        if (!op && i == 0) {
            s_result(h, "VM is %s as before; nothing to restore", h->vm->power_state);
            return S_DONE;
        }
        if (!op)
            return S_DONE; /* the result of the last command says where it is */
        s_stage_t row = *stage;
        row.op = op;
        s_rc_t rc = s_on_host(self, h, &row);
        if (rc != S_DONE)
            return rc;
    }
    return S_DONE;
}

/* ---- the loop ----------------------------------------------------------------------------- */

/* A write may wait a little when the task only awaits a bus call's answer (the scheduler's,
   the stager's) and has taken no agent result: the answer normally comes within a few ms
   and its stage writes anyway, so the two writes become one. Nothing is lost if this
   instance dies meanwhile: the task's lease runs out, a new holder runs the stage again and
   the calls are idempotent (a claim per VM, a staged image per model). What is put off is
   written by write_defer_ms at the latest, so progress shows within that. Only a stage
   with stages after it puts a write off: the answer to a last stage ends the task, and an
   end must follow a written start (the lifecycle table has no QUEUED -> SUCCEEDED). */
static int s_may_defer(tasks_t *self, s_held_t *h)
{
    if (self->write_defer_ms <= 0 || h->must_write || h->throttled || *h->task->command ||
        (!*h->call && !*h->prefetch))
        return 0;
    const s_stage_t *row = s_row(s_table(h), h->task->stage);
    return row && row[1].name;
}

/* Advance one held task as far as it goes without waiting: each stage done opens the next
   and runs it; the task is written once when it has to wait (or ends). -1 when the task
   left our hands. */
static int s_step(tasks_t *self, s_held_t *h)
{
    Berth__Task *t = h->task;
    if (s_is(t->state, "QUEUED")) {
        /* New, or granted a heavy slot: it resumes at the stage it waited to open. */
        const s_stage_t *at = s_row(s_table(h), t->stage);
        s_set(&t->state, "RUNNING");
        if (s_open(self, h, at ? at : &s_table(h)[0]) < 0)
            return -1;
    }
    for (int guard = 0; guard < 64 && !s_finished(t) && !h->throttled; guard++) {
        const s_stage_t *table = s_table(h), *stage = table;
        while (stage->name && !s_is(stage->name, t->stage))
            stage++;
        if (!stage->name) {
            /* Not a stage of this table (written by a newer version?): start the table over;
               every stage is idempotent. */
            if (s_open(self, h, &table[0]) < 0)
                return -1;
            continue;
        }
        h->next_try = 0;
        s_rc_t rc = stage->fn(self, h, stage);
        if (h->lost)
            return -1;
        if (rc == S_WAIT)
            break;
        if (rc == S_FAIL) {
            if (s_failed(self, h, stage) != 0)
                return -1;
            continue;
        }
        s_step_close(h, "SUCCEEDED");
        if (s_is(t->state, "ABORTING") && !t->rolling_back) {
            if (s_abort_now(self, h, stage) != 0)
                return -1;
            continue;
        }
        const s_stage_t *next = s_next(h, table, stage);
        if (next && s_open(self, h, next) < 0)
            return -1;
        if (!next && s_complete(self, h) != 0)
            return -1;
    }
    /* Write what changed; renew the lease well before it runs out. */
    int renew = t->lease_until_ms - util_now_ms() < self->lease_ms / 2;
    if (!s_finished(t) && (h->dirty || h->vm_dirty || renew)) {
        if (!renew && s_may_defer(self, h)) {
            int64_t now = util_mono_ms();
            if (!h->write_at)
                h->write_at = now + self->write_defer_ms;
            if (now < h->write_at)
                return 0; /* the answer comes first, normally: one write for both */
        }
        return s_save(self, h);
    }
    return 0;
}

static void s_rearm(tasks_t *self);
static int s_take_due(tasks_t *self, char **woken, size_t n_woken);

/* Step a held task; let it go once it is over or no longer ours. The lost code (0, 1 not
   ours, 2 Redis failed) is returned. */
static int s_advance(tasks_t *self, s_held_t *h)
{
    int rc = s_step(self, h);
    int lost = h->lost;
    if (rc != 0 || s_finished(h->task) || h->throttled) {
        if (rc != 0 && *h->task->command)
            agents_cancel(self->agents, h->task->command);
        zhashx_delete(self->held, h->id);
        if (self->more_due)
            s_take_due(self, NULL, 0);
    }
    return lost;
}

static s_held_t *s_find_call(tasks_t *self, const char *call_id)
{
    for (s_held_t *it = zhashx_first(self->held); it; it = zhashx_next(self->held))
        if (s_is(it->call, call_id) || s_is(it->prefetch, call_id))
            return it;
    return NULL;
}

/* A bus call of a held task ended: keep the answer for its stage and step the task at once.
   A task let go meanwhile no longer wants it. */
static void s_on_reply(bus_client_t *client, const char *call_id, Berth__Envelope *reply, void *arg)
{
    (void)client;
    tasks_t *self = arg;
    s_held_t *h = s_find_call(self, call_id);
    if (!h) {
        if (reply)
            berth__envelope__free_unpacked(reply, NULL);
        return;
    }
    if (s_is(h->prefetch, call_id)) {
        h->prefetch[0] = '\0';
        if (reply && !reply->error && !h->staged) {
            h->staged = s_staged_answer(reply);
            if (h->staged && !s_staged_fits(h, h->staged)) { /* placement chose another */
                berth__staged_image__free_unpacked(h->staged, NULL);
                h->staged = NULL;
            }
        } else if (reply)
            berth__envelope__free_unpacked(reply, NULL);
    } else {
        h->call[0] = '\0';
        h->reply = reply;
        h->call_timed_out = reply == NULL;
    }
    s_advance(self, h);
    s_rearm(self);
}

int tasks_on_result(void *arg, const char *host, const Berth__AgentResult *result)
{
    tasks_t *self = arg;
    s_held_t *h = NULL;
    for (s_held_t *it = zhashx_first(self->held); it && !h; it = zhashx_next(self->held)) {
        const s_stage_t *row = s_row(s_table(it), it->task->stage);
        if (*it->task->command && s_is(it->task->command, result->command) &&
            s_is(row ? s_stage_host(it, row) : it->task->host, host))
            h = it;
    }
    if (!h)
        return 0; /* not a command in flight here (late, or held elsewhere): nothing to record */
    /* A copy: the request that carried it is answered and freed before the task needs it. */
    size_t len = berth__agent_result__get_packed_size(result);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return -1;
    berth__agent_result__pack(result, buf);
    s_free_done(h);
    h->done = berth__agent_result__unpack(NULL, len, buf);
    free(buf);
    if (!h->done)
        return -1;
    int lost = s_advance(self, h);
    s_rearm(self);
    return lost == 2 ? -1 : 0;
}

/* reconcile: host went past its heartbeat's ttl: step every task held here that runs on
   it now, so a stage waiting on the host fails over instead of waiting for its deadline. */
static void s_host_down(void *arg, const char *host)
{
    tasks_t *self = arg;
    zlistx_t *ids = zlistx_new();
    if (!ids)
        return;
    zlistx_set_destructor(ids, (zlistx_destructor_fn *)zstr_free);
    zlistx_set_duplicator(ids, (zlistx_duplicator_fn *)strdup);
    for (s_held_t *it = zhashx_first(self->held); it; it = zhashx_next(self->held))
        if (s_is(it->task->host, host))
            zlistx_add_end(ids, it->id);
    for (char *id = zlistx_first(ids); id; id = zlistx_next(ids)) {
        s_held_t *h = zhashx_lookup(self->held, id);
        if (h) {
            log_info(h->task->request_id, "host DOWN: failing over", "{s:s, s:s, s:s}", "task", id,
                     "host", host, "stage", h->task->stage);
            s_advance(self, h);
        }
    }
    zlistx_destroy(&ids);
    s_rearm(self);
}

/* A task whose VM is gone can never run: fail it and drop it from the due set, once. */
static void s_orphaned(tasks_t *self, s_held_t *h)
{
    char fault[160];
    snprintf(fault, sizeof fault, "the task's VM %s no longer exists", h->task->target);
    log_error(h->task->request_id, "task target VM is missing; failing the task", "{s:s, s:s}",
              "task", h->id, "vm", h->task->target);
    s_set(&h->task->fault, fault);
    s_finish_task(h, "FAILED");
    s_save(self, h);
}

/* Hold task (taken with epoch; the take returned its hash): load its VM and run it. */
static void s_take(tasks_t *self, const char *id, int64_t epoch, Berth__Task *task)
{
    char vkey[KEYS_MAX];
    Berth__Vm *vm = NULL;
    int rc = model_load(self->store, &berth__vm__descriptor, keys_vm(vkey, task->target),
                        (ProtobufCMessage **)&vm);
    s_held_t *h = calloc(1, sizeof *h);
    if (rc < 0 || !h) {
        free(h);
        berth__task__free_unpacked(task, NULL);
        return; /* Redis away or out of memory: the lease runs out and it is due again */
    }
    util_strlcpy(h->id, id, sizeof h->id);
    h->epoch = epoch;
    h->task = task;
    h->vm = rc == 0 ? vm : NULL;
    h->saved_task = (Berth__Task *)s_copy(&task->base);
    h->saved_vm = h->vm ? (Berth__Vm *)s_copy(&h->vm->base) : NULL;
    h->stage_since = util_mono_ms();
    if (!h->saved_task || (h->vm && !h->saved_vm)) {
        void *item = h;
        s_held_free(&item); /* out of memory: the lease runs out and it is due again */
        return;
    }
    if (!*task->task_class) { /* queued by approval, which does not know the stage tables */
        s_set(&task->task_class, s_kind_class(task->kind));
        h->dirty = 1;
    }
    if (!h->vm) {
        s_orphaned(self, h);
        void *item = h;
        s_held_free(&item);
        return;
    }
    log_info(task->request_id, epoch > 1 ? "took over task" : "took task", "{s:s, s:s, s:s, s:I}",
             "task", id, "kind", task->kind, "stage", task->stage, "epoch", (json_int_t)epoch);
    /* Held here already under an older epoch (an abort or a retry made it due again):
       the old hold is stale, its writes would be refused. */
    zhashx_delete(self->held, id);
    zhashx_update(self->held, id, h);
    s_advance(self, h);
}

#define DUE_GRACE_MS 100 /* a task due but not taken is looked for again after this */

/* A task taken by lib/lua/taskmgr_acquire.lua, copied out of its reply. */
typedef struct {
    char id[UTIL_ID_LEN];
    int64_t epoch;
    Berth__Task *task;
} s_taken_t;

/* Take what is due, as room allows; note when the due set asks to be looked at next.
   Candidates are the n ids in woken (just popped from the wake set), or, when woken is NULL,
   the ids the due set holds as due now. Returns the number of tasks taken. */
static int s_take_due(tasks_t *self, char **woken, size_t n_woken)
{
    int room = self->max_held - (int)zhashx_size(self->held);
    self->more_due = 0;
    if (room <= 0) {
        self->more_due = 1;
        return 0;
    }
    char now[24], lease[24], rooms[24];
    int64_t now_ms = util_now_ms();
    snprintf(now, sizeof now, "%lld", (long long)now_ms);
    snprintf(lease, sizeof lease, "%d", self->lease_ms);
    snprintf(rooms, sizeof rooms, "%d", room);
    /* The due ids first (unless the wake named them), then lib/lua/taskmgr_acquire.lua with
       their task keys: it takes those still due, so a task another taskmgr took in between
       stays its own. */
    redisReply *ids_r = NULL;
    char **cand = woken;
    size_t due = n_woken < (size_t)room ? n_woken : (size_t)room;
    if (!woken) {
        ids_r = store_command(self->store, "ZRANGEBYSCORE %s -inf %s LIMIT 0 %s", KEYS_TASKS_DUE,
                              now, rooms);
        self->due_read_ms = util_mono_ms();
        due = ids_r && ids_r->type == REDIS_REPLY_ARRAY ? ids_r->elements : 0;
        cand = due ? calloc(due, sizeof *cand) : NULL;
        for (size_t i = 0; cand && i < due; i++)
            cand[i] = ids_r->element[i]->type == REDIS_REPLY_STRING ? ids_r->element[i]->str : NULL;
        if (due && !cand)
            due = 0;
    } else if (n_woken > due)
        self->more_due = 1; /* the rest stay due: taken when there is room */
    const char **argv = calloc(1 + 2 * due + 3, sizeof *argv);
    char(*task_keys)[KEYS_MAX] = due ? calloc(due, sizeof *task_keys) : NULL;
    int nkeys = 1, argc = 0;
    if (argv && (task_keys || !due)) {
        argv[0] = KEYS_TASKS_DUE;
        const char **args = argv + 1 + due;
        args[argc++] = service_instance(self->service);
        args[argc++] = now;
        args[argc++] = lease;
        for (size_t i = 0; i < due; i++)
            if (cand[i] && *cand[i] && strlen(cand[i]) < UTIL_ID_LEN) {
                argv[nkeys] = keys_task(task_keys[nkeys - 1], cand[i]);
                nkeys++;
                args[argc++] = cand[i];
            }
        memmove(argv + nkeys, args, argc * sizeof *argv);
    }
    redisReply *r = argv && (task_keys || !due)
                        ? store_run(self->store, &lua_taskmgr_acquire, nkeys, nkeys + argc, argv)
                        : NULL;
    if (!woken)
        free(cand);
    if (ids_r)
        freeReplyObject(ids_r);
    free(task_keys);
    free(argv);
    int taken = 0;
    self->next_due = 0;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1) {
        /* Copied out first: taking a task may run it, and that may call back in here. */
        size_t n = (r->elements - 1) / 3;
        s_taken_t *tasks = n ? calloc(n, sizeof *tasks) : NULL;
        size_t k = 0;
        for (size_t i = 1; tasks && i + 2 < r->elements; i += 3) {
            int64_t epoch = 0;
            const redisReply *id = r->element[i], *ep = r->element[i + 1];
            if (id->type != REDIS_REPLY_STRING || ep->type != REDIS_REPLY_STRING ||
                util_parse_int(ep->str, 1, INT64_MAX, &epoch) != 0 ||
                strlen(id->str) >= UTIL_ID_LEN)
                continue;
            Berth__Task *task =
                r->element[i + 2]->type == REDIS_REPLY_ARRAY
                    ? (Berth__Task *)model_from_hash(&berth__task__descriptor, r->element[i + 2])
                    : NULL;
            if (!task)
                continue; /* unreadable: the lease runs out and it is due again */
            util_strlcpy(tasks[k].id, id->str, UTIL_ID_LEN);
            tasks[k].epoch = epoch;
            tasks[k++].task = task;
        }
        long long first = r->element[0]->type == REDIS_REPLY_INTEGER ? r->element[0]->integer : -1;
        /* Due already but not taken here: mostly a task just queued whose wake is on its
           way (the wake takes it); else another instance's lease that ran out. Read again
           after a grace, not at once, so a wake and a read do not race for the same task. */
        int64_t grace = self->due_check_ms < DUE_GRACE_MS ? self->due_check_ms : DUE_GRACE_MS;
        if (first >= 0)
            self->next_due = util_mono_ms() + (first > now_ms ? first - now_ms : grace);
        if ((int)n >= room)
            self->more_due = 1;
        freeReplyObject(r);
        for (size_t i = 0; i < k; i++)
            s_take(self, tasks[i].id, tasks[i].epoch, tasks[i].task);
        taken = (int)k;
        free(tasks);
    } else if (r)
        freeReplyObject(r);
    return taken;
}

/* When each held task next wants to run: its stage's retry, or renewing its lease. */
static int64_t s_held_due(tasks_t *self, s_held_t *h)
{
    int64_t renew = util_mono_ms() + (h->task->lease_until_ms - util_now_ms()) - self->lease_ms / 2;
    int64_t due = h->next_try && h->next_try < renew ? h->next_try : renew;
    return h->write_at && h->write_at < due ? h->write_at : due;
}

static int s_on_timer(zloop_t *loop, int timer_id, void *arg);

/* Arm the one timer at the earliest due time: held tasks, the due set, and at the latest
   due_check_ms from now (a lost wake costs no more than that). */
static void s_rearm(tasks_t *self)
{
    int64_t now = util_mono_ms();
    int64_t at = now + self->due_check_ms;
    if (self->next_due && self->next_due < at)
        at = self->next_due;
    if (self->more_due && zhashx_size(self->held) < (size_t)self->max_held)
        at = now;
    for (s_held_t *h = zhashx_first(self->held); h; h = zhashx_next(self->held)) {
        int64_t due = s_held_due(self, h);
        if (due < at)
            at = due;
    }
    zloop_t *loop = service_loop(self->service);
    if (self->timer_id) {
        if (self->timer_at <= at)
            return;
        zloop_timer_end(loop, self->timer_id);
        self->timer_id = 0;
    }
    int64_t delay = at - now;
    self->timer_id = zloop_timer(loop, (size_t)(delay > 0 ? delay : 1), 1, s_on_timer, self);
    self->timer_at = at;
}

/* Run every held task whose time has come, and arm the timer again. */
static void s_run_held(tasks_t *self)
{
    int64_t now = util_mono_ms();
    zlistx_t *ids = zhashx_keys(self->held);
    for (char *id = zlistx_first(ids); id; id = zlistx_next(ids)) {
        s_held_t *h = zhashx_lookup(self->held, id);
        if (h && s_held_due(self, h) <= now)
            s_advance(self, h);
    }
    zlistx_destroy(&ids);
    s_rearm(self);
}

/* Take what is due (the n woken ids when the wake named them) and run every held task whose
   time has come. */
static void s_run_woken(tasks_t *self, char **woken, size_t n_woken)
{
    s_take_due(self, n_woken ? woken : NULL, n_woken);
    s_run_held(self);
}

static void s_run(tasks_t *self)
{
    throttle_sweep(self->throttle, self->due_check_ms);
    s_run_woken(self, NULL, 0);
}

/* The timer: the due set is read only when something in it is due (or due_check_ms has
   passed, or room opened for tasks left waiting); a timer armed for a held task (a retry, a
   write put off, a lease to renew) steps the held tasks only: two Redis round trips less
   each time. */
static int s_on_timer(zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    tasks_t *self = arg;
    self->timer_id = 0;
    int64_t now = util_mono_ms();
    int due = (self->next_due && self->next_due <= now) ||
              now - self->due_read_ms >= self->due_check_ms ||
              (self->more_due && zhashx_size(self->held) < (size_t)self->max_held);
    if (due)
        s_run(self);
    else
        s_run_held(self);
    return 0;
}

/* ---- waking on new tasks ------------------------------------------------------------------ */

#define WAKE_MAX_IDS 1000 /* ids one wake pops at most (the rest: the next pop) */

typedef struct {
    char host[256];
    int port;
    char secrets_dir[4096]; /* "" when unset: a Redis without a password */
} s_waker_args_t;

/* Wait up to timeout_ms for the pipe: 1 when the thread must stop ($TERM, or the process
   got SIGINT/SIGTERM: a poller then returns NULL for good and $TERM may never be seen
   through it), else 0. A stray signal (EINTR without an interrupt) is not a stop. */
static int s_waker_stop(zpoller_t *poller, zsock_t *pipe, int timeout_ms)
{
    if (!zpoller_wait(poller, timeout_ms))
        return zpoller_terminated(poller) && (zsys_interrupted || zmq_errno() != EINTR);
    char *cmd = zstr_recv(pipe);
    int term = !cmd || streq(cmd, "$TERM");
    zstr_free(&cmd);
    return term;
}

/* The waker thread: blocks on berth:tasks:wake with its own Redis connection and sends
   "WAKE" and the ids it popped to the loop (what queued meanwhile comes in the same pop: one
   command, one take for them all). */
static void s_waker(zsock_t *pipe, void *arg)
{
    s_waker_args_t *a = arg;
    store_t *store = store_new(a->host, a->port, 1000, 3000);
    if (store && store_use_secrets(store, *a->secrets_dir ? a->secrets_dir : NULL) != 0)
        store_destroy(&store);
    zpoller_t *poller = zpoller_new(pipe, NULL);
    zsock_signal(pipe, 0);
    while (poller && !s_waker_stop(poller, pipe, 0)) {
        redisReply *r = store ? store_command(store, "BZMPOP 0.5 1 %s MIN COUNT %d",
                                              KEYS_TASKS_WAKE, WAKE_MAX_IDS)
                              : NULL;
        if (!r) {
            /* Redis away: wait a little, unless told to stop. */
            if (s_waker_stop(poller, pipe, 500))
                break;
            continue;
        }
        /* [key, [[id, score], ...]], or nil when nothing came within the timeout. */
        const redisReply *popped =
            r->type == REDIS_REPLY_ARRAY && r->elements == 2 ? r->element[1] : NULL;
        if (popped && popped->type == REDIS_REPLY_ARRAY && popped->elements) {
            zmsg_t *msg = zmsg_new();
            zmsg_addstr(msg, "WAKE");
            for (size_t i = 0; i < popped->elements; i++) {
                const redisReply *pair = popped->element[i];
                if (pair->type == REDIS_REPLY_ARRAY && pair->elements == 2 &&
                    pair->element[0]->type == REDIS_REPLY_STRING &&
                    pair->element[0]->len < UTIL_ID_LEN)
                    zmsg_addstr(msg, pair->element[0]->str);
            }
            zmsg_send(&msg, pipe);
        }
        freeReplyObject(r);
    }
    zpoller_destroy(&poller);
    store_destroy(&store);
    free(a);
}

static int s_on_wake(service_t *service, void *arg)
{
    (void)service;
    tasks_t *self = arg;
    zmsg_t *msg = zmsg_recv(zactor_sock(self->waker)); /* readable: does not wait */
    char *ids[WAKE_MAX_IDS];
    size_t n = 0;
    char *verb = msg ? zmsg_popstr(msg) : NULL;
    while (msg && n < WAKE_MAX_IDS && (ids[n] = zmsg_popstr(msg)))
        n++;
    s_run_woken(self, ids, n);
    for (size_t i = 0; i < n; i++)
        free(ids[i]);
    free(verb);
    zmsg_destroy(&msg);
    return 0;
}

/* ---- DisposeVm ---------------------------------------------------------------------------- */

static void s_reply_task(bus_request_t *request, store_t *store, const char *id)
{
    char key[KEYS_MAX];
    Berth__Task *task = NULL;
    int rc =
        model_load(store, &berth__task__descriptor, keys_task(key, id), (ProtobufCMessage **)&task);
    if (rc != 0) {
        bus_reply_error(request, rc < 0 ? "UNAVAILABLE" : "INTERNAL",
                        rc < 0 ? "state store unreachable" : "the VM's task is missing");
        return;
    }
    bus_reply(request, &task->base);
    berth__task__free_unpacked(task, NULL);
}

static void s_dispose_for(tasks_t *self, bus_request_t *request, const Berth__DisposeVm *req,
                          const Berth__UserAssertion *who);

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
    /* Who asks is only what the gateway signed; the body's actor is not believed. */
    berth_error_t error = { 0 };
    Berth__UserAssertion *who = NULL;
    if (assertion_of(self->verifier, request, req->assertion, &who, &error) != 0) {
        log_info(bus_request_envelope(request)->request_id, "disposal refused", "{s:s, s:s}", "vm",
                 req->vm, "reason", error.message);
        bus_reply_fault(request, &error);
        return;
    }
    s_dispose_for(self, request, req, who);
    berth__user_assertion__free_unpacked(who, NULL);
}

/* A forced disposal (vm.force_dispose: admins and operators) is for a VM whose host
   is gone, DOWN or unknown, and that no task acts on: 0, or -1 with the refusal sent. A host
   that answers is asked to remove what it has, by an ordinary disposal. */
static int s_force_refused(tasks_t *self, bus_request_t *request, const Berth__Vm *vm,
                           const Berth__UserAssertion *who)
{
    char key[KEYS_MAX], msg[256];
    if (!assertion_has_role(who, "admin") && !assertion_has_role(who, "operator")) {
        bus_reply_error(request, "FORBIDDEN",
                        "only an admin or an operator disposes of a VM without its host");
        return -1;
    }
    Berth__Host *host = NULL;
    int rc = *vm->host ? model_load(self->store, &berth__host__descriptor,
                                    keys_build(key, KEYS_HOST, vm->host, NULL),
                                    (ProtobufCMessage **)&host)
                       : 1;
    if (rc < 0) {
        bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
        return -1;
    }
    int gone = rc == 1 || s_is(host->state, "DOWN") || agents_host_down(self->agents, vm->host);
    if (!gone)
        snprintf(msg, sizeof msg,
                 "host %s is %s (not judged DOWN): dispose of the VM without force", vm->host,
                 host->state);
    if (host)
        berth__host__free_unpacked(host, NULL);
    if (gone && *vm->task) {
        Berth__Task *task = NULL;
        rc = model_load(self->store, &berth__task__descriptor, keys_task(key, vm->task),
                        (ProtobufCMessage **)&task);
        if (rc < 0) {
            bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
            return -1;
        }
        if (rc == 0 && !s_finished(task)) {
            gone = 0;
            snprintf(msg, sizeof msg, "VM has task %s (%s) %s: force-fail it first", task->id,
                     task->kind, task->state);
        }
        if (task)
            berth__task__free_unpacked(task, NULL);
    }
    if (gone)
        return 0;
    berth_error_t error = { 0 };
    error_set(&error, "CONFLICT", "%s", msg);
    error_detail(&error, "state", "%s", vm->state);
    error_detail(&error, "host", "%s", vm->host);
    bus_reply_fault(request, &error);
    return -1;
}

/* DisposeVm for the asserted user who: the VM's owner, a manager of its group or an admin. */
static void s_dispose_for(tasks_t *self, bus_request_t *request, const Berth__DisposeVm *req,
                          const Berth__UserAssertion *who)
{
    char vkey[KEYS_MAX], tkey[KEYS_MAX], msg[160];
    keys_vm(vkey, req->vm);
    for (int attempt = 0; attempt < 3; attempt++) {
        Berth__Vm *vm = NULL;
        int rc = model_load(self->store, &berth__vm__descriptor, vkey, (ProtobufCMessage **)&vm);
        if (rc != 0) {
            bus_reply_error(request, rc < 0 ? "UNAVAILABLE" : "NOT_FOUND",
                            rc < 0 ? "state store unreachable" : "no such VM");
            return;
        }
        if (req->force && s_force_refused(self, request, vm, who) != 0) {
            berth__vm__free_unpacked(vm, NULL);
            return;
        }
        /* vm.dispose of gateway/permissions.c, checked again on the signed claims. */
        if (!req->force && !s_is(vm->owner, who->user) && !assertion_has_role(who, "admin") &&
            !assertion_has_group_role(who, vm->group, "manager")) {
            log_info(bus_request_envelope(request)->request_id, "disposal refused: not the owner",
                     "{s:s, s:s}", "vm", req->vm, "user", who->user);
            berth__vm__free_unpacked(vm, NULL);
            bus_reply_error(request, "FORBIDDEN",
                            "only the VM's owner, a manager of its group or an admin disposes "
                            "of it");
            return;
        }
        if (s_is(vm->state, "DISPOSING")) {
            s_reply_task(request, self->store, vm->task);
            berth__vm__free_unpacked(vm, NULL);
            return;
        }
        if (!s_is(vm->state, "ACTIVE") && !s_is(vm->state, "ERROR") &&
            !s_is(vm->state, "SHELVED") && !s_is(vm->state, "EXPIRING") &&
            !s_is(vm->state, "EXPIRED")) {
            snprintf(
                msg, sizeof msg,
                "VM is %s; only ACTIVE, SHELVED, EXPIRING, EXPIRED or ERROR VMs can be disposed",
                vm->state);
            berth__vm__free_unpacked(vm, NULL);
            bus_reply_error(request, "CONFLICT", msg);
            return;
        }
        model_tx_t *tx = model_tx_new();
        if (!tx) {
            berth__vm__free_unpacked(vm, NULL);
            bus_reply_error(request, "INTERNAL", "out of memory");
            return;
        }
        int64_t now = clock_now_ms();
        char id[UTIL_ID_LEN];
        util_uuid(id);
        Berth__Task task = BERTH__TASK__INIT;
        task.id = id;
        task.kind = "DISPOSE";
        task.state = "QUEUED";
        task.stage = "queued";
        task.target = vm->id;
        task.owner = who->user;
        task.request_id = (char *)bus_request_envelope(request)->request_id;
        task.created_ms = now;
        task.updated_ms = now;
        task.host = vm->host;
        task.version = 1;
        task.task_class = (char *)s_kind_class("DISPOSE");
        task.force = req->force; /* Its host is gone: the agent is not asked */
        /* VM ACTIVE/ERROR -> DISPOSING (state and version as read), naming its new task;
           the task is born QUEUED, in the same step. */
        model_tx_vm_transition(tx, vm, "DISPOSING");
        char *old_task = vm->task;
        vm->task = id;
        model_tx_put_fields(tx, vkey, &vm->base, "task", NULL);
        vm->task = old_task;
        keys_task(tkey, id);
        model_tx_transition(tx, LIFECYCLE_TASK, tkey, "", "QUEUED", 0, "task", id, "stage",
                            "queued", NULL);
        model_tx_put(tx, tkey, &task.base);
        model_tx_zadd(tx, KEYS_TASKS_DUE, 0, id);
        rc = model_tx_commit(tx, self->store, NULL);
        model_tx_destroy(&tx);
        if (rc == 0) {
            log_info(task.request_id, "disposal queued", "{s:s, s:s}", "vm", req->vm, "task", id);
            bus_reply(request, &task.base);
        } else if (rc < 0)
            bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
        else if (rc == MODEL_REFUSED) {
            log_error(task.request_id, "disposal refused by the lifecycle table", "{s:s, s:s}",
                      "vm", req->vm, "state", vm->state);
            bus_reply_error(request, "CONFLICT", "the VM cannot be disposed in its state");
        }
        berth__vm__free_unpacked(vm, NULL); /* task borrowed its strings until here */
        if (rc == 0)
            s_run(self); /* queued here: take it now rather than wait for a wake */
        if (rc != MODEL_CONFLICT)
            return;
        /* The VM changed between read and write: look again. */
    }
    bus_reply_error(request, "CONFLICT", "the VM keeps changing; try again");
}

/* ---- VmAction (day-2 actions) ------------------------------------------------------------ */

/* 1 when word is one of the space-separated words of list ("" holds every word). */
static int s_word_in(const char *word, const char *list)
{
    if (!*list)
        return 1;
    size_t n = strlen(word);
    for (const char *p = list; n && (p = strstr(p, word)); p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
            return 1;
    return 0;
}

/* CONFLICT for an action the VM's state does not allow, naming the state. */
static void s_refuse_action(bus_request_t *request, const Berth__Vm *vm, const char *action,
                            const char *message)
{
    berth_error_t error = { 0 };
    error_set(&error, "CONFLICT", "%s", message);
    error_detail(&error, "action", "%s", action);
    error_detail(&error, "state", "%s", vm->state);
    error_detail(&error, "power_state", "%s", vm->power_state);
    log_info(bus_request_envelope(request)->request_id, "action refused", "{s:s, s:s, s:s}", "vm",
             vm->id, "action", action, "reason", message);
    bus_reply_fault(request, &error);
}

/* Whether action a makes sense for vm now: 0, or -1 with the answer sent: CONFLICT, or the
   task this very call (same request id) queued already. A VM already in the power state the
   action leads to is refused too, saying there is nothing to do. */
static int s_action_allowed(tasks_t *self, bus_request_t *request, const Berth__Vm *vm,
                            const s_action_t *a)
{
    char msg[256];
    if (*vm->task) {
        char tkey[KEYS_MAX];
        Berth__Task *task = NULL;
        int rc = model_load(self->store, &berth__task__descriptor, keys_task(tkey, vm->task),
                            (ProtobufCMessage **)&task);
        if (rc < 0) {
            bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
            return -1;
        }
        int busy = rc == 0 && !s_finished(task);
        if (busy && s_is(task->kind, a->kind) &&
            s_is(task->request_id, bus_request_envelope(request)->request_id)) {
            /* The same call again (a resend that reached another instance): its task. */
            bus_reply(request, &task->base);
            berth__task__free_unpacked(task, NULL);
            return -1;
        }
        if (busy)
            snprintf(msg, sizeof msg, "VM has task %s (%s) %s; %s waits until it ends", task->id,
                     task->kind, task->state, a->action);
        if (task)
            berth__task__free_unpacked(task, NULL);
        if (busy) {
            s_refuse_action(request, vm, a->action, msg);
            return -1;
        }
    }
    /* Leases: an EXPIRING VM still runs; power actions that keep its lifecycle state apply
       to it as to an ACTIVE one (shelving moves the state: it needs ACTIVE). */
    int expiring_ok = s_is(vm->state, "EXPIRING") && s_is(a->needs, "ACTIVE") && !a->to;
    if (!s_is(vm->state, a->needs) && !expiring_ok) {
        snprintf(msg, sizeof msg, "VM is %s: %s needs a%s %s VM", vm->state, a->action,
                 s_is(a->needs, "ACTIVE") ? "n" : "", a->needs);
        s_refuse_action(request, vm, a->action, msg);
        return -1;
    }
    if (a->done && s_is(vm->power_state, a->done)) {
        snprintf(msg, sizeof msg, "VM is already %s: %s has nothing to do", vm->power_state,
                 a->action);
        s_refuse_action(request, vm, a->action, msg);
        return -1;
    }
    if (!s_word_in(vm->power_state, a->powers)) {
        snprintf(msg, sizeof msg, "VM is %s: %s applies to a VM that is %s%s", vm->power_state,
                 a->action, a->powers,
                 s_is(a->action, "start") && s_is(vm->power_state, "SUSPENDED")
                     ? " (resume a suspended VM)"
                     : "");
        s_refuse_action(request, vm, a->action, msg);
        return -1;
    }
    return 0;
}

/* QUOTA_EXCEEDED for an unshelve the group's quota no longer allows. */
static void s_quota_refused(bus_request_t *request, const model_quota_t *q, const char *group)
{
    berth_error_t error = { 0 };
    error_set(&error, "QUOTA_EXCEEDED",
              "%s quota of group %s exceeded: %s quota %lld, %lld in use, unshelving asks for "
              "%lld",
              streq(q->scope, "user") ? "your per-member" : "the", group, q->resource,
              (long long)q->quota, (long long)q->used, (long long)q->requested);
    error_detail(&error, "resource", "%s", q->resource);
    error_detail(&error, "quota", "%lld", (long long)q->quota);
    error_detail(&error, "used", "%lld", (long long)q->used);
    error_detail(&error, "requested", "%lld", (long long)q->requested);
    error_detail(&error, "scope", "%s", q->scope);
    error_detail(&error, "group", "%s", group);
    bus_reply_fault(request, &error);
}

static int s_queue_action(model_tx_t *tx, const Berth__Vm *vm, const char *kind, const char *owner,
                          const char *request_id, int timeout_s, int force, Berth__Image *capture,
                          Berth__Task *task, char id[UTIL_ID_LEN]);

int tasks_queue_action(model_tx_t *tx, const Berth__Vm *vm, const char *kind, const char *owner,
                       const char *request_id, int timeout_s, int force, Berth__Task *task,
                       char id[UTIL_ID_LEN])
{
    return s_queue_action(tx, vm, kind, owner, request_id, timeout_s, force, NULL, task, id);
}

/* tasks_queue_action, with the image a CAPTURE makes (its upload is named by the task's id). */
static int s_queue_action(model_tx_t *tx, const Berth__Vm *vm, const char *kind, const char *owner,
                          const char *request_id, int timeout_s, int force, Berth__Image *capture,
                          Berth__Task *task, char id[UTIL_ID_LEN])
{
    const s_action_t *a = s_action(kind, 1);
    int provision = s_is(kind, "PROVISION"); /* a VM built again (agents.c, rebuild_on_loss) */
    if ((!a && !provision) || !vm || !vm->id || !*vm->id)
        return -1;
    char vkey[KEYS_MAX], tkey[KEYS_MAX];
    keys_vm(vkey, vm->id);
    int64_t now = clock_now_ms();
    util_uuid(id);
    berth__task__init(task);
    task->id = id;
    task->kind = a ? (char *)a->kind : "PROVISION";
    task->state = "QUEUED";
    task->stage = "queued";
    task->target = vm->id;
    task->owner = (char *)owner;
    task->request_id = (char *)(request_id ? request_id : "");
    task->created_ms = now;
    task->updated_ms = now;
    task->host = vm->host;
    task->version = 1;
    task->task_class = (char *)s_kind_class(task->kind);
    task->force = a && force && a->forcible;
    task->timeout_s = a && a->graceful ? timeout_s : 0;
    if (a && s_is(a->kind, "UNSHELVE"))
        task->from_host = vm->host;
    task->prior_state = vm->state; /* What an abort brings it back to */
    task->prior_power = vm->power_state;
    if (capture && a && s_is(a->kind, "CAPTURE")) {
        task->capture = capture;
        task->upload_id = id;
    }
    /* Nobody else started a task on the VM since it was read; it names this one now. */
    model_tx_check(tx, vkey, "task", vm->task);
    Berth__Vm named = *vm;
    named.task = id;
    model_tx_put_fields(tx, vkey, &named.base, "task", NULL);
    keys_task(tkey, id);
    model_tx_transition(tx, LIFECYCLE_TASK, tkey, "", "QUEUED", 0, "task", id, "stage", "queued",
                        NULL);
    model_tx_put(tx, tkey, &task->base);
    model_tx_zadd(tx, KEYS_TASKS_DUE, 0, id);
    model_tx_zadd(tx, KEYS_TASKS_WAKE, now, id); /* whichever taskmgr is free takes it at once */
    return 0;
}

static void s_action_for(tasks_t *self, bus_request_t *request, const Berth__VmAction *req,
                         const s_action_t *a, const Berth__UserAssertion *who);

/* Start a day-2 action: a new task of its kind, queued with the VM's task (and, for shelve
   and unshelve, its lifecycle state) in one step. Refused with CONFLICT, naming the state,
   when the action makes no sense now. */
static void s_on_action(bus_request_t *request, void *arg)
{
    tasks_t *self = arg;
    Berth__VmAction *req = bus_request_body(request, &berth__vm_action__descriptor);
    berth_error_t error = { 0 };
    const s_action_t *a = req ? s_action(req->action, 0) : NULL;
    if (!req || !util_is_uuid(req->vm)) {
        bus_reply_error(request, "BAD_REQUEST", "VmAction needs a VM id (UUID)");
        return;
    }
    if (!a) {
        error_field(&error, "action",
                    "action must be start, stop, reboot, suspend, resume, shelve, unshelve or "
                    "capture");
        bus_reply_fault(request, &error);
        return;
    }
    if (s_is(a->kind, "CAPTURE") != (req->capture != NULL)) {
        error_field(&error, "capture", "capture names the image of a capture, and only of one");
        bus_reply_fault(request, &error);
        return;
    }
    if (req->capture && !s_capture_name_ok(req->capture->name)) {
        error_field(&error, "name", "name must match [a-z0-9][a-z0-9._-]{0,63}");
        bus_reply_fault(request, &error);
        return;
    }
    if (req->timeout_s < 0 || req->timeout_s > LIMIT_STOP_TIMEOUT_MAX_S ||
        (req->timeout_s && !a->graceful)) {
        error_field(&error, "timeout_s", "timeout_s is 0..%d seconds, for stop and shelve",
                    LIMIT_STOP_TIMEOUT_MAX_S);
        bus_reply_fault(request, &error);
        return;
    }
    if (req->force && !a->forcible) {
        error_field(&error, "force", "force applies to stop, reboot and shelve");
        bus_reply_fault(request, &error);
        return;
    }
    /* Who asks is only what the gateway signed. */
    Berth__UserAssertion *who = NULL;
    if (assertion_of(self->verifier, request, req->assertion, &who, &error) != 0) {
        log_info(bus_request_envelope(request)->request_id, "action refused", "{s:s, s:s}", "vm",
                 req->vm, "reason", error.message);
        bus_reply_fault(request, &error);
        return;
    }
    s_action_for(self, request, req, a, who);
    berth__user_assertion__free_unpacked(who, NULL);
}

/* VmAction for the asserted user who: the VM's owner, a manager of its group or an admin
   (vm.action of gateway/permissions.c, checked again on the signed claims). */
static void s_action_for(tasks_t *self, bus_request_t *request, const Berth__VmAction *req,
                         const s_action_t *a, const Berth__UserAssertion *who)
{
    char vkey[KEYS_MAX], gkey[KEYS_MAX];
    const char *rid = bus_request_envelope(request)->request_id;
    keys_vm(vkey, req->vm);
    for (int attempt = 0; attempt < 3; attempt++) {
        Berth__Vm *vm = NULL;
        Berth__Group *group = NULL;
        int rc = model_load(self->store, &berth__vm__descriptor, vkey, (ProtobufCMessage **)&vm);
        if (rc != 0) {
            bus_reply_error(request, rc < 0 ? "UNAVAILABLE" : "NOT_FOUND",
                            rc < 0 ? "state store unreachable" : "no such VM");
            return;
        }
        if (!s_is(vm->owner, who->user) && !assertion_has_role(who, "admin") &&
            !assertion_has_group_role(who, vm->group, "manager")) {
            log_info(rid, "action refused: not the owner", "{s:s, s:s}", "vm", req->vm, "user",
                     who->user);
            berth__vm__free_unpacked(vm, NULL);
            bus_reply_error(request, "FORBIDDEN",
                            "only the VM's owner, a manager of its group or an admin acts on it");
            return;
        }
        if (s_action_allowed(self, request, vm, a) != 0) {
            berth__vm__free_unpacked(vm, NULL);
            return;
        }
        /* Unshelving charges vCPUs and RAM again, within the group's quota as it is now. */
        if (s_is(a->kind, "UNSHELVE") && *vm->group) {
            rc = model_load(self->store, &berth__group__descriptor,
                            keys_build(gkey, KEYS_GROUP, vm->group, NULL),
                            (ProtobufCMessage **)&group);
            if (rc < 0) {
                berth__vm__free_unpacked(vm, NULL);
                bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
                return;
            }
        }
        model_tx_t *tx = model_tx_new();
        if (!tx) {
            berth__vm__free_unpacked(vm, NULL);
            if (group)
                berth__group__free_unpacked(group, NULL);
            bus_reply_error(request, "INTERNAL", "out of memory");
            return;
        }
        char id[UTIL_ID_LEN];
        Berth__Task task;
        s_queue_action(tx, vm, a->kind, who->user, rid,
                       req->timeout_s ? req->timeout_s : self->stop_timeout_s, req->force,
                       req->capture, &task, id);
        if (a->to)
            model_tx_vm_transition(tx, vm, a->to);
        if (s_is(a->kind, "UNSHELVE"))
            s_quota_shelve(tx, vm, 1, group);
        rc = model_tx_commit(tx, self->store, NULL);
        if (rc == 0) {
            log_info(rid, "action queued", "{s:s, s:s, s:s}", "vm", req->vm, "action", a->action,
                     "task", id);
            bus_reply(request, &task.base);
        } else if (rc < 0)
            bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
        else if (rc == MODEL_QUOTA)
            s_quota_refused(request, model_tx_quota(tx), group ? group->name : vm->group);
        else if (rc == MODEL_REFUSED) {
            log_error(rid, "action refused by the lifecycle table", "{s:s, s:s, s:s}", "vm",
                      req->vm, "state", vm->state, "reason", model_tx_error(tx));
            s_refuse_action(request, vm, a->action, "the VM's state does not allow it");
        }
        model_tx_destroy(&tx);
        berth__vm__free_unpacked(vm, NULL); /* task borrowed its strings until here */
        if (group)
            berth__group__free_unpacked(group, NULL);
        if (rc == 0)
            s_run(self); /* queued here: take it now rather than wait for a wake */
        if (rc != MODEL_CONFLICT)
            return;
        /* The VM changed between read and write: look again. */
    }
    bus_reply_error(request, "CONFLICT", "the VM keeps changing; try again");
}

/* ---- Abort, retry and force-fail (TaskRecover) ------------------------------------ */

/* CONFLICT naming the task's state (and kind, stage). */
static void s_refuse_recover(bus_request_t *request, const Berth__Task *task, const char *verb,
                             const char *message)
{
    berth_error_t error = { 0 };
    error_set(&error, "CONFLICT", "%s", message);
    error_detail(&error, "state", "%s", task->state);
    error_detail(&error, "kind", "%s", task->kind);
    error_detail(&error, "stage", "%s", task->stage);
    log_info(bus_request_envelope(request)->request_id, "task recover refused", "{s:s, s:s, s:s}",
             "task", task->id, "verb", verb, "reason", message);
    bus_reply_fault(request, &error);
}

/* Whether verb makes sense for task now: NULL, or why not. */
static const char *s_recover_refusal(const Berth__Task *task, const char *verb, char *msg,
                                     size_t size)
{
    if (s_is(verb, "retry")) {
        if (!s_is(task->state, "FAILED"))
            snprintf(msg, size, "task is %s: only a FAILED task is retried", task->state);
        else if (s_is(task->kind, "SHELVE") || s_is(task->kind, "UNSHELVE") ||
                 s_is(task->kind, "CAPTURE"))
            snprintf(msg, size, "a failed %s is not retried: ask for the action again", task->kind);
        else
            return NULL;
        return msg;
    }
    if (s_finished(task)) {
        snprintf(msg, size, "task is %s: it has ended, there is nothing to %s", task->state,
                 s_is(verb, "abort") ? "abort" : "force-fail");
        return msg;
    }
    if (!s_is(verb, "abort"))
        return NULL;
    if (s_is(task->state, "ABORTING"))
        snprintf(msg, size, "the task is being aborted already"); /* answered with the task */
    else if (s_is(task->kind, "DISPOSE"))
        snprintf(msg, size,
                 "a disposal cannot be aborted (what it removed does not come back); "
                 "force-fail it if it is stuck");
    else if (s_is(task->kind, "UNSHELVE") && !s_is(task->state, "QUEUED"))
        snprintf(msg, size, "a running unshelve cannot be aborted; force-fail it if it is stuck");
    else if (s_is(task->kind, "CAPTURE") &&
             (s_is(task->stage, "register") || s_is(task->stage, "cleanup")))
        snprintf(msg, size, "the capture is past its upload (stage %s): too late to abort",
                 task->stage);
    else if (s_is(task->kind, "SHELVE") && s_is(task->state, "RUNNING") &&
             !s_is(task->stage, "shut_down"))
        snprintf(msg, size,
                 "the shelve is past shutting the VM down (stage %s): too late to "
                 "abort",
                 task->stage);
    else
        return NULL;
    return msg;
}

/* The stage a retry runs again: PROVISION starts over from its placement (its failed attempts
   were rolled back, claim and all); another kind runs its last failed stage. */
static const s_stage_t *s_retry_stage(const Berth__Task *task)
{
    if (s_is(task->kind, "PROVISION"))
        return &s_provision[1];
    const s_stage_t *table =
        s_is(task->kind, "DISPOSE") ? (task->force ? s_dispose_forced : s_dispose) : NULL;
    const s_action_t *a = s_action(task->kind, 1);
    if (a)
        table = a->stages;
    if (!table)
        return NULL;
    for (size_t i = task->n_steps; i > 0; i--) {
        const s_stage_t *row = s_row(table, task->steps[i - 1]->name);
        if (row && s_is(task->steps[i - 1]->state, "FAILED"))
            return row;
    }
    return table;
}

/* The VM's vCPUs, RAM, disk and count charged to its group's and owner's quota again
   (within limit), for a provisioning retried from ERROR. */
static void s_quota_recharge(model_tx_t *tx, const Berth__Vm *vm, const Berth__Group *limit)
{
    const Berth__Resources *f = vm->flavor;
    if (!f || !vm->group || !*vm->group)
        return;
    char key[KEYS_MAX];
    Berth__Quota amount = BERTH__QUOTA__INIT;
    amount.vms = 1;
    amount.vcpus = f->vcpus;
    amount.ram_mb = f->ram_mb;
    amount.disk_gb = f->disk_gb;
    model_tx_charge(tx, keys_build(key, KEYS_GROUP_USAGE, vm->group, NULL), "group",
                    limit ? limit->quota : NULL, &amount);
    model_tx_charge(tx, keys_build(key, KEYS_GROUP_USER_USAGE, vm->group, vm->owner), "user",
                    limit ? limit->user_quota : NULL, &amount);
    model_tx_hold(tx, keys_vm(key, vm->id), &amount);
}

/* Add to tx what verb does to task (changed in place; was: as read) and its VM (vm: as read,
   NULL when gone). 0, or -1 with the answer sent. */
static int s_recover_tx(bus_request_t *request, model_tx_t *tx, Berth__Task *task,
                        const Berth__Task *was, Berth__Vm *vm, const Berth__Group *group,
                        const char *verb, const Berth__UserAssertion *who)
{
    char tkey[KEYS_MAX], vkey[KEYS_MAX], epoch[24], fault[300], msg[256];
    keys_task(tkey, task->id);
    int64_t now = clock_now_ms();
    int live = task->lease_until_ms > util_now_ms() && *task->holder; /* a taskmgr took it */
    int mine = vm && s_is(vm->task, task->id); /* the VM's task is this one */
    const char *to = NULL;                     /* the task's new state */
    const char *vm_to = NULL;                  /* the VM's new state (NULL: stays) */
    const char *vm_fault = NULL;               /* ...and its fault */
    /* Whoever holds it now lets it go at its next write: the epoch it holds is gone. */
    snprintf(epoch, sizeof epoch, "%lld", (long long)was->epoch);
    model_tx_check(tx, tkey, "epoch", epoch);
    model_tx_check(tx, tkey, "stage", was->stage);
    task->epoch = was->epoch + 1;
    if (s_is(verb, "abort") && s_is(task->state, "QUEUED") && !live &&
        s_is(task->stage, "queued")) {
        /* Nothing done yet (no instance took it): ended here, at once. A task QUEUED at
           another stage waits in line for a heavy slot (throttle.h) after stages that did
           something (a claim): it goes ABORTING below, and whoever takes it rolls them back. */
        to = "ABORTED";
        snprintf(fault, sizeof fault, "aborted by %s before it started", who->user);
        if (mine && s_is(task->kind, "PROVISION"))
            vm_to = "ERROR", vm_fault = fault;
        else if (mine && s_is(task->kind, "SHELVE"))
            vm_to = "ACTIVE";
        else if (mine && s_is(task->kind, "UNSHELVE")) {
            vm_to = "SHELVED";
            s_quota_shelve(tx, vm, -1, NULL); /* its unshelve charged vCPUs and RAM again */
        }
    } else if (s_is(verb, "abort") && s_is(task->kind, "UNSHELVE")) {
        s_refuse_recover(request, task, verb,
                         "a taskmgr started the unshelve already; force-fail it if it is stuck");
        return -1;
    } else if (s_is(verb, "abort")) {
        /* Its holder stops at the next stage boundary; whoever takes it now rolls it back. */
        to = "ABORTING";
        fault[0] = '\0';
    } else if (s_is(verb, "force_fail")) {
        to = "FAILED";
        snprintf(fault, sizeof fault, "force-failed by %s at stage %s", who->user, task->stage);
        if (mine && !s_is(vm->state, "ERROR") && lifecycle_find(LIFECYCLE_VM, vm->state, "ERROR"))
            vm_to = "ERROR";
        if (mine)
            vm_fault = fault;
        Berth__TaskStep *last = task->n_steps ? task->steps[task->n_steps - 1] : NULL;
        if (last && s_is(last->state, "RUNNING")) { /* the stage it was stuck in */
            s_set(&last->state, "FAILED");
            s_set(&last->result, fault);
            last->finished_ms = now;
        }
    } else { /* retry */
        const s_stage_t *row = s_retry_stage(task);
        if (!mine || !row) {
            snprintf(msg, sizeof msg, "the task's VM is %s now: only its last task is retried",
                     vm ? "acting on another task" : "gone");
            s_refuse_recover(request, task, verb, msg);
            return -1;
        }
        if (s_is(task->kind, "PROVISION") || s_is(task->kind, "DISPOSE")) {
            if (!s_is(vm->state, "ERROR")) {
                snprintf(msg, sizeof msg, "VM is %s: a %s is retried for a VM in ERROR", vm->state,
                         task->kind);
                s_refuse_recover(request, task, verb, msg);
                return -1;
            }
            vm_to = s_is(task->kind, "PROVISION") ? "PROVISIONING" : "DISPOSING";
            vm_fault = "";
            if (s_is(task->kind, "PROVISION")) {
                s_quota_recharge(tx, vm, group);
                s_set(&vm->host, "");
                s_clear_list(&task->tried, &task->n_tried);
                task->attempts = 0;
                task->image_refused = 0;
                s_clear_list(&task->alternates, &task->n_alternates);
                s_set(&task->host, "");
            }
        } else if (!s_is(vm->state, "ACTIVE") && !s_is(vm->state, "EXPIRING")) {
            snprintf(msg, sizeof msg, "VM is %s: a %s is retried for an ACTIVE VM", vm->state,
                     task->kind);
            s_refuse_recover(request, task, verb, msg);
            return -1;
        }
        to = "RUNNING";
        s_set(&task->stage, row->name);
        task->percent = row->percent;
        task->finished_ms = 0;
        task->rolling_back = 0;
        s_set(&task->command, "");
        s_set(&task->abort_by, "");
        Berth__TaskStep **steps = realloc(task->steps, (task->n_steps + 1) * sizeof *steps);
        Berth__TaskStep *step = malloc(sizeof *step);
        if (steps)
            task->steps = steps;
        if (!steps || !step) {
            free(step);
            bus_reply_error(request, "INTERNAL", "out of memory");
            return -1;
        }
        berth__task_step__init(step);
        step->name = strdup(row->name);
        step->state = strdup("RUNNING");
        step->result = strdup("");
        step->started_ms = now;
        task->steps[task->n_steps++] = step;
        fault[0] = '\0';
    }
    s_set(&task->state, to);
    s_set(&task->fault, fault);
    if (!s_is(verb, "retry")) {
        s_set(&task->abort_by, who->user);
        task->abort_ms = now;
    }
    if (s_finished(task)) {
        s_set(&task->stage, "done");
        task->finished_ms = now;
        s_set(&task->holder, "");
        task->lease_until_ms = 0;
        model_tx_zrem(tx, KEYS_TASKS_DUE, task->id);
    } else {
        /* Due now: whichever taskmgr is free takes it (its old holder's lease is void). */
        model_tx_zadd(tx, KEYS_TASKS_DUE, 0, task->id);
        model_tx_zadd(tx, KEYS_TASKS_WAKE, now, task->id);
    }
    task->updated_ms = now;
    task->version = was->version + 1;
    model_tx_transition(tx, LIFECYCLE_TASK, tkey, was->state, task->state, MODEL_VERSION_ANY,
                        "task", task->id, "stage", task->stage, NULL);
    model_tx_put_changed(tx, tkey, &was->base, &task->base);
    if (vm && (vm_to || vm_fault)) {
        if (vm_to)
            model_tx_vm_transition(tx, vm, vm_to);
        if (vm_fault) {
            s_set(&vm->fault, vm_fault);
            model_tx_put_fields(tx, keys_vm(vkey, vm->id), &vm->base, "fault", "host", NULL);
        }
    }
    return 0;
}

static void s_recover_for(tasks_t *self, bus_request_t *request, const Berth__TaskRecover *req,
                          const Berth__UserAssertion *who);

/* TaskRecover: abort a task (its VM's owner, a manager of its group, admins and operators),
   retry or force-fail it (admins and operators). Answered with the task as it is after. */
static void s_on_recover(bus_request_t *request, void *arg)
{
    tasks_t *self = arg;
    Berth__TaskRecover *req = bus_request_body(request, &berth__task_recover__descriptor);
    berth_error_t error = { 0 };
    if (!req || !util_is_uuid(req->task)) {
        bus_reply_error(request, "BAD_REQUEST", "TaskRecover needs a task id (UUID)");
        return;
    }
    if (!s_is(req->verb, "abort") && !s_is(req->verb, "retry") && !s_is(req->verb, "force_fail")) {
        error_field(&error, "verb", "verb must be abort, retry or force_fail");
        bus_reply_fault(request, &error);
        return;
    }
    Berth__UserAssertion *who = NULL;
    if (assertion_of(self->verifier, request, req->assertion, &who, &error) != 0) {
        log_info(bus_request_envelope(request)->request_id, "task recover refused", "{s:s, s:s}",
                 "task", req->task, "reason", error.message);
        bus_reply_fault(request, &error);
        return;
    }
    s_recover_for(self, request, req, who);
    berth__user_assertion__free_unpacked(who, NULL);
}

static void s_recover_for(tasks_t *self, bus_request_t *request, const Berth__TaskRecover *req,
                          const Berth__UserAssertion *who)
{
    char tkey[KEYS_MAX], vkey[KEYS_MAX], gkey[KEYS_MAX], msg[256];
    const char *rid = bus_request_envelope(request)->request_id;
    int platform = assertion_has_role(who, "admin") || assertion_has_role(who, "operator");
    keys_task(tkey, req->task);
    for (int attempt = 0; attempt < 3; attempt++) {
        Berth__Task *task = NULL, *was = NULL;
        Berth__Vm *vm = NULL;
        Berth__Group *group = NULL;
        int rc =
            model_load(self->store, &berth__task__descriptor, tkey, (ProtobufCMessage **)&task);
        if (rc != 0) {
            bus_reply_error(request, rc < 0 ? "UNAVAILABLE" : "NOT_FOUND",
                            rc < 0 ? "state store unreachable" : "no such task");
            return;
        }
        rc = model_load(self->store, &berth__vm__descriptor, keys_vm(vkey, task->target),
                        (ProtobufCMessage **)&vm);
        if (rc < 0) {
            berth__task__free_unpacked(task, NULL);
            bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
            return;
        }
        /* task.abort, task.retry, task.force_fail of gateway/permissions.c, checked again on
           the signed claims. */
        int may =
            platform ||
            (s_is(req->verb, "abort") && vm &&
             (s_is(vm->owner, who->user) || assertion_has_group_role(who, vm->group, "manager")));
        const char *refusal = may ? s_recover_refusal(task, req->verb, msg, sizeof msg) : NULL;
        /* A provisioning retried is charged to its group's quota again: its limits. */
        int go = may && !refusal;
        if (go && s_is(req->verb, "retry") && s_is(task->kind, "PROVISION") && vm && *vm->group &&
            model_load(self->store, &berth__group__descriptor,
                       keys_build(gkey, KEYS_GROUP, vm->group, NULL),
                       (ProtobufCMessage **)&group) < 0) {
            bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
            go = 0;
        } else if (!may)
            bus_reply_error(request, "FORBIDDEN",
                            s_is(req->verb, "abort")
                                ? "only the VM's owner, a manager of its group, an admin or an "
                                  "operator aborts its task"
                                : "only an admin or an operator retries or force-fails a task");
        else if (refusal && s_is(req->verb, "abort") && s_is(task->state, "ABORTING"))
            bus_reply(request, &task->base); /* asked again: the abort under way */
        else if (refusal)
            s_refuse_recover(request, task, req->verb, refusal);
        model_tx_t *tx = go ? model_tx_new() : NULL;
        was = tx ? (Berth__Task *)s_copy(&task->base) : NULL;
        if (tx)
            model_tx_actor(tx, who->user, rid);
        rc = -1;
        if (go && (!tx || !was))
            bus_reply_error(request, "INTERNAL", "out of memory");
        else if (tx && s_recover_tx(request, tx, task, was, vm, group, req->verb, who) == 0) {
            rc = model_tx_commit(tx, self->store, NULL);
            if (rc == 0) {
                log_info(rid, "task recover", "{s:s, s:s, s:s, s:s}", "task", task->id, "verb",
                         req->verb, "state", task->state, "by", who->user);
                bus_reply(request, &task->base);
            } else if (rc < 0)
                bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
            else if (rc == MODEL_QUOTA)
                bus_reply_error(request, "QUOTA_EXCEEDED",
                                "the VM's group quota no longer allows it: retrying its "
                                "provisioning charges it again");
            else if (rc == MODEL_REFUSED) {
                log_error(rid, "task recover refused by the lifecycle table", "{s:s, s:s}", "task",
                          task->id, "reason", model_tx_error(tx));
                s_refuse_recover(request, task, req->verb,
                                 "the task's or its VM's state does "
                                 "not allow it");
            }
        }
        model_tx_destroy(&tx);
        if (was)
            berth__task__free_unpacked(was, NULL);
        berth__task__free_unpacked(task, NULL);
        if (vm)
            berth__vm__free_unpacked(vm, NULL);
        if (group)
            berth__group__free_unpacked(group, NULL);
        if (rc == 0)
            s_run(self); /* due here too: take it now rather than wait for a wake */
        if (rc != MODEL_CONFLICT)
            return;
        /* The task moved on between read and write (a stage ended, another holder took
           it): look again. */
    }
    bus_reply_error(request, "CONFLICT", "the task keeps changing; try again");
}

/* ---- construction ------------------------------------------------------------------------- */

void tasks_declare(config_t *c)
{
    config_declare(c, "task_lease_ms", "5000", 0);
    config_declare(c, "due_check_ms", "1000", 0);
    config_declare(c, "max_running_tasks", "256", 0);
    config_declare(c, "call_timeout_ms", "3000", 0);
    config_declare(c, "command_timeout_ms", "60000", 0);
    config_declare(c, "ready_timeout_ms", "30000", 0);
    config_declare(c, "max_attempts", "3", 0);
    config_declare(c, "command_redeliver_ms", "15000", 0);
    config_declare(c, "write_defer_ms", "100", 0);
    config_declare(c, "stop_timeout_s", "60", 0);
    config_declare(c, "capture_timeout_ms", "3600000", 0);
    config_declare(c, "pool_settle_ms", "0", 0);
    throttle_declare(c);
}

tasks_t *tasks_new(service_t *service, agents_t *agents)
{
    config_t *c = service_config(service);
    int64_t lease, check, held, call, cmd, ready, attempts, redeliver, defer, port, stop, capture;
    int64_t settle;
    if (config_int(c, "task_lease_ms", 500, 600000, &lease) ||
        config_int(c, "due_check_ms", 10, 600000, &check) ||
        config_int(c, "max_running_tasks", 1, 100000, &held) ||
        config_int(c, "call_timeout_ms", 100, 600000, &call) ||
        config_int(c, "command_timeout_ms", 1000, 3600000, &cmd) ||
        config_int(c, "ready_timeout_ms", 1000, 3600000, &ready) ||
        config_int(c, "max_attempts", 1, 10, &attempts) ||
        config_int(c, "command_redeliver_ms", 100, 3600000, &redeliver) ||
        config_int(c, "write_defer_ms", 0, 10000, &defer) ||
        config_int(c, "stop_timeout_s", 0, LIMIT_STOP_TIMEOUT_MAX_S, &stop) ||
        config_int(c, "capture_timeout_ms", 1000, 86400000, &capture) ||
        config_int(c, "pool_settle_ms", 0, 3600000, &settle) ||
        config_int(c, "redis_port", 1, 65535, &port))
        return NULL;
    tasks_t *self = calloc(1, sizeof *self);
    s_waker_args_t *wa = calloc(1, sizeof *wa);
    if (!self || !wa) {
        free(self);
        free(wa);
        return NULL;
    }
    self->service = service;
    self->store = service_store(service);
    self->bus = service_client(service);
    self->agents = agents;
    self->held = zhashx_new();
    self->lease_ms = (int)lease;
    self->due_check_ms = (int)check;
    self->max_held = (int)held;
    self->call_timeout_ms = (int)call;
    self->command_timeout_ms = (int)cmd;
    self->ready_timeout_ms = (int)ready;
    self->max_attempts = (int)attempts;
    self->redeliver_ms = (int)redeliver;
    self->write_defer_ms = (int)defer;
    self->stop_timeout_s = (int)stop;
    self->capture_timeout_ms = (int)capture;
    self->pool_settle_ms = (int)settle;
    zhashx_set_destructor(self->held, s_held_free);
    berth_error_t error = { 0 };
    self->throttle = throttle_new(service);
    if (!self->throttle) {
        free(wa);
        tasks_destroy(&self);
        return NULL;
    }
    self->verifier = assertion_verifier_new(config_get(c, "secrets_dir"), &error);
    if (!self->verifier) {
        log_error(NULL, "cannot load the user assertion key", "{s:s}", "reason", error.message);
        free(wa);
        tasks_destroy(&self);
        return NULL;
    }
    util_strlcpy(wa->host, config_get(c, "redis_host"), sizeof wa->host);
    wa->port = (int)port;
    if (config_get(c, "secrets_dir"))
        util_strlcpy(wa->secrets_dir, config_get(c, "secrets_dir"), sizeof wa->secrets_dir);
    self->waker = zactor_new(s_waker, wa); /* the thread frees wa */
    if (!self->waker) {
        free(wa);
        tasks_destroy(&self);
        return NULL;
    }
    agents_on_result(agents, tasks_on_result, self);
    agents_on_down(agents, s_host_down, self); /* reconcile: fail over at once */
    service_on(service, "DisposeVm", "gateway", s_on_dispose, self);
    service_on(service, "VmAction", "gateway", s_on_action, self);
    service_on(service, "TaskRecover", "gateway", s_on_recover, self);
    service_reader(service, zactor_sock(self->waker), s_on_wake, self);
    s_metrics_declare();
    service_every(service, service_heartbeat_ms(service), s_gauges, self);
    s_gauges(service, self);
    s_run(self);
    return self;
}

void tasks_use_leases(tasks_t *self, leases_t *leases)
{
    self->leases = leases;
}

void tasks_destroy(tasks_t **self_p)
{
    if (self_p && *self_p) {
        tasks_t *self = *self_p;
        zactor_destroy(&self->waker);
        zhashx_destroy(&self->held);
        assertion_destroy(&self->verifier);
        throttle_destroy(&self->throttle);
        free(self);
        *self_p = NULL;
    }
}
