/*  leases: the lease timers and what firing them does.

    Timers. berth:timers holds "<kind>:<vm>" scored by when it is due in platform time. Every
    instance runs the same loop: claim what is due (timers_claim.lua moves it to the claimed
    set with a claim end in real time, earliest first, at most timer_batch), fire each, arm
    one zloop timer at the earliest of the next due time (converted to real time by the
    clock's scale), the earliest claim end and timer_check_ms. Nothing fires twice: the claim
    is atomic, and each firing is one model_tx step that checks the VM's state and lease as
    read, makes the transition and removes the claim. If the instance dies between claim and
    firing, the claim runs out and the timer goes back with its own due time, so after any
    downtime (of taskmgr or of Redis, whose AOF keeps both sets) timers catch up in due order.

    Firing. notice: ACTIVE -> EXPIRING with a vm.lease.notice event, when the lease ends
    within the notice period. expire: ACTIVE or EXPIRING -> EXPIRED with a vm.lease.expired
    event, a STOP task (day-2's, forced after a graceful try) and the tombstone timer. tombstone: EXPIRED -> DISPOSING with a
    DISPOSE task. A timer whose VM moved on (extended, disposed, gone) only drops its claim.
    Transitions are made by service:taskmgr (model_tx's default actor), never a user.
    extend:<request>: approval approved a request of kind "extension" (it adds this timer in
    the decision's own step, as it queues a VM's PROVISION task): the extension is applied
    for its decider, once (the VM lists the requests applied to it), or dropped when the VM
    can no longer be extended.

    Lease policy. The platform's settings (lease_max_days, lease_max_extensions,
    lease_notice_ms) are the default; a group's max_lease_days, max_extensions and
    lease_notice_ms (approval's groups) replace them for its VMs, and a template's
    max_lease_days tightens them (the smaller applies) while its lease_notice_ms lengthens
    the notice (the longer applies). An extension within the policy is granted at once;
    beyond it, ExtendLease answers with why, and the gateway files it as a request. */
#include "leases.h"
#include "assertion.h"
#include "clock.h"
#include "keys.h"
#include "lua_scripts.h"
#include "tasks.h"
#include "util.h"

#include <jansson.h>

#define DAY_MS               (86400000LL)
#define LEASE_STOP_TIMEOUT_S 30 /* an expired VM's graceful shutdown, then it is forced */

struct _leases_t {
    service_t *service;
    store_t *store;
    int64_t notice_ms;    /* notice period before a lease ends */
    int64_t tombstone_ms; /* how long an EXPIRED VM is kept before it is disposed */
    int claim_ms;         /* a claimed timer fires again elsewhere after this (real ms) */
    int batch;            /* timers claimed at once */
    int check_ms;         /* longest sleep without looking at the timers */
    int timer_id;         /* the armed zloop timer (0: none) */
    uint64_t fired;       /* transitions made by timers */
    int max_days;         /* a lease may not end later than this after the VM was made */
    int max_extensions;   /* extensions one VM may be granted */
    int max_extend_days;  /* days one extension may add */
    assertion_t *verifier; /* checks who an ExtendLease acts for (the gateway's assertion) */
};

void leases_declare(config_t *c)
{
    config_declare(c, "lease_notice_ms", "259200000", 0);     /* 3 days */
    config_declare(c, "lease_tombstone_ms", "604800000", 0);  /* 7 days */
    config_declare(c, "timer_claim_ms", "10000", 0);
    config_declare(c, "timer_batch", "100", 0);
    config_declare(c, "timer_check_ms", "1000", 0);
    config_declare(c, "lease_max_days", "365", 0);
    config_declare(c, "lease_max_extensions", "10", 0);
    config_declare(c, "lease_max_extend_days", "90", 0);
}

/* ---- policy ------------------------------------------------------------------------------- */

typedef struct {
    int max_days;       /* a lease ends at most this many days after the VM was made */
    int max_extensions; /* extensions granted without an approval */
    int64_t notice_ms;  /* notice period before the end */
} s_policy_t;

/* The lease policy for vm (see the top of this file): 0, or -1 when Redis failed. */
static int s_policy(leases_t *self, const Berth__Vm *vm, s_policy_t *p)
{
    p->max_days = self->max_days;
    p->max_extensions = self->max_extensions;
    p->notice_ms = self->notice_ms;
    char key[KEYS_MAX];
    if (vm->group && util_is_uuid(vm->group)) {
        Berth__Group *g = NULL;
        int rc = model_load(self->store, &berth__group__descriptor,
                            keys_build(key, KEYS_GROUP, vm->group, NULL), (ProtobufCMessage **)&g);
        if (rc < 0)
            return -1;
        if (g) {
            if (g->max_lease_days > 0)
                p->max_days = g->max_lease_days;
            if (g->max_extensions > 0)
                p->max_extensions = g->max_extensions;
            if (g->lease_notice_ms > 0)
                p->notice_ms = g->lease_notice_ms;
            berth__group__free_unpacked(g, NULL);
        }
    }
    if (vm->template_ && util_is_uuid(vm->template_)) {
        Berth__Template *t = NULL;
        int rc = model_load(self->store, &berth__template__descriptor,
                            keys_build(key, KEYS_TEMPLATE, vm->template_, NULL),
                            (ProtobufCMessage **)&t);
        if (rc < 0)
            return -1;
        if (t) {
            if (t->max_lease_days > 0 && t->max_lease_days < p->max_days)
                p->max_days = t->max_lease_days;
            if (t->lease_notice_ms > p->notice_ms)
                p->notice_ms = t->lease_notice_ms;
            berth__template__free_unpacked(t, NULL);
        }
    }
    return 0;
}

/* The notice period in force for vm: the one fixed with its timers, else the platform's. */
static int64_t s_notice(const leases_t *self, const Berth__Vm *vm)
{
    return vm->lease_notice_ms > 0 ? vm->lease_notice_ms : self->notice_ms;
}

/* ---- scheduling --------------------------------------------------------------------------- */

static void s_member(char *buf, size_t size, const char *kind, const char *vm)
{
    snprintf(buf, size, "%s:%s", kind, vm);
}

/* The timers of vm's lease with notice period notice_ms, which the VM keeps. */
static void s_tx_schedule(model_tx_t *tx, const Berth__Vm *vm, int64_t notice_ms)
{
    if (!vm->lease || vm->lease->expires_ms <= 0)
        return;
    char member[64], vkey[KEYS_MAX];
    Berth__Vm kept = *vm;
    kept.lease_notice_ms = notice_ms;
    model_tx_put_fields(tx, keys_vm(vkey, vm->id), &kept.base, "lease_notice_ms", NULL);
    int64_t end = vm->lease->expires_ms;
    /* The notice comes a notice period before the end, but not before half of what is left
       has run: a lease shorter than the notice period is not EXPIRING from its first day. */
    int64_t now = clock_now_ms(), notice = end - notice_ms;
    if (end > now && notice < now + (end - now) / 2)
        notice = now + (end - now) / 2;
    s_member(member, sizeof member, "notice", vm->id);
    model_tx_zadd(tx, KEYS_TIMERS, notice, member);
    s_member(member, sizeof member, "expire", vm->id);
    model_tx_zadd(tx, KEYS_TIMERS, end, member);
    s_member(member, sizeof member, "tombstone", vm->id);
    model_tx_zrem(tx, KEYS_TIMERS, member);
}

void leases_tx_schedule(leases_t *self, model_tx_t *tx, const Berth__Vm *vm)
{
    s_policy_t p;
    if (s_policy(self, vm, &p) != 0)
        p.notice_ms = self->notice_ms; /* Redis failed: the commit will too */
    s_tx_schedule(tx, vm, p.notice_ms);
}

/* ---- firing ------------------------------------------------------------------------------- */

/* The lease field as model.c stores it ({"expires_ms":N}), for the firing step's check:
   an extension between read and write makes the step conflict. */
static void s_lease_text(const Berth__Vm *vm, char *buf, size_t size)
{
    *buf = '\0';
    if (!vm->lease)
        return;
    json_t *j = json_pack("{s:I}", "expires_ms", (json_int_t)vm->lease->expires_ms);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (text)
        snprintf(buf, size, "%s", text);
    free(text);
    json_decref(j);
}

/* vm (as read) -> to, the state checked (a heartbeat may have bumped the version), with
   the fields the meter reads from vm.state. */
static void s_move(model_tx_t *tx, const Berth__Vm *vm, const char *to)
{
    char vkey[KEYS_MAX], vcpus[24], ram[24], disk[24];
    const Berth__Resources *f = vm->flavor;
    snprintf(vcpus, sizeof vcpus, "%d", f ? f->vcpus : 0);
    snprintf(ram, sizeof ram, "%lld", f ? (long long)f->ram_mb : 0LL);
    snprintf(disk, sizeof disk, "%lld", f ? (long long)f->disk_gb : 0LL);
    model_tx_transition(tx, LIFECYCLE_VM, keys_vm(vkey, vm->id), vm->state, to,
                        MODEL_VERSION_ANY, "vm", vm->id, "owner", vm->owner, "vcpus", vcpus,
                        "ram_mb", ram, "disk_gb", disk, "host", vm->host, "template",
                        vm->template_, "group", vm->group, NULL);
}

/* Queue a task of kind on vm in tx (born QUEUED, due now, a taskmgr woken), and name it
   the VM's task. id receives its id. */
static void s_queue_task(model_tx_t *tx, Berth__Vm *vm, const char *kind, int64_t now,
                         char id[UTIL_ID_LEN])
{
    char tkey[KEYS_MAX], vkey[KEYS_MAX];
    util_uuid(id);
    Berth__Task task = BERTH__TASK__INIT;
    task.id = id;
    task.kind = (char *)kind;
    task.state = "QUEUED";
    task.stage = "queued";
    task.target = vm->id;
    task.owner = "service:taskmgr";
    task.request_id = "";
    task.created_ms = now;
    task.updated_ms = now;
    task.host = vm->host;
    task.version = 1;
    keys_task(tkey, id);
    model_tx_transition(tx, LIFECYCLE_TASK, tkey, "", "QUEUED", 0, "task", id, "stage", "queued",
                        NULL);
    model_tx_put(tx, tkey, &task.base);
    model_tx_zadd(tx, KEYS_TASKS_DUE, 0, id);
    model_tx_zadd(tx, KEYS_TASKS_WAKE, now, id);
    char *old = vm->task;
    vm->task = id;
    model_tx_put_fields(tx, keys_vm(vkey, vm->id), &vm->base, "task", NULL);
    vm->task = old;
}

/* Queue day-2 task kind (STOP at expiry: graceful, then forced after LEASE_STOP_TIMEOUT_S;
   START at revival) on vm in tx, owned by service:taskmgr (tasks_queue_action). */
static void s_power_task(model_tx_t *tx, const Berth__Vm *vm, const char *kind,
                         char id[UTIL_ID_LEN])
{
    Berth__Task task;
    tasks_queue_action(tx, vm, kind, "service:taskmgr", "", LEASE_STOP_TIMEOUT_S, 1, &task, id);
}

/* What timer `kind` does to vm now: the transition's target ("" for nothing: the timer is
   stale). */
static const char *s_action(leases_t *self, const char *kind, const Berth__Vm *vm, int64_t now)
{
    int64_t end = vm->lease ? vm->lease->expires_ms : 0;
    int active = streq(vm->state, "ACTIVE"), expiring = streq(vm->state, "EXPIRING");
    if (streq(kind, "notice") && active && end > now && end - s_notice(self, vm) <= now)
        return "EXPIRING";
    if (streq(kind, "expire") && (active || expiring) && end > 0 && end <= now)
        return "EXPIRED";
    if (streq(kind, "tombstone") && streq(vm->state, "EXPIRED") && vm->tombstone_until_ms > 0 &&
        vm->tombstone_until_ms <= now)
        return "DISPOSING";
    return "";
}

/* Fire one claimed timer (claimed: its entry in the claimed set). 0 when done (fired, or
   stale and dropped), -1 when it must fire again (Redis failed, or the VM kept changing:
   the claim runs out and it is due again). */
static int s_fire_extend(leases_t *self, const char *claimed, const char *request_id);

static int s_fire(leases_t *self, const char *claimed, const char *kind, const char *vm_id)
{
    if (streq(kind, "extend"))
        return s_fire_extend(self, claimed, vm_id);
    char vkey[KEYS_MAX], lease[96], at[24], end[24], task[UTIL_ID_LEN] = "";
    keys_vm(vkey, vm_id);
    for (int attempt = 0; attempt < 3; attempt++) {
        Berth__Vm *vm = NULL;
        int rc = model_load(self->store, &berth__vm__descriptor, vkey, (ProtobufCMessage **)&vm);
        if (rc < 0)
            return -1;
        model_tx_t *tx = model_tx_new();
        if (!tx) {
            if (vm)
                berth__vm__free_unpacked(vm, NULL);
            return -1;
        }
        model_tx_zrem(tx, KEYS_TIMERS_CLAIMED, claimed);
        int64_t now = clock_now_ms();
        const char *to = vm ? s_action(self, kind, vm, now) : "";
        if (*to) {
            s_lease_text(vm, lease, sizeof lease);
            model_tx_check(tx, vkey, "lease", lease);
            s_move(tx, vm, to);
            snprintf(at, sizeof at, "%lld", (long long)now);
            snprintf(end, sizeof end, "%lld", (long long)vm->lease->expires_ms);
            if (streq(to, "EXPIRING"))
                model_tx_event(tx, "vm.lease.notice", "vm", vm->id, "name", vm->name, "owner",
                               vm->owner, "group", vm->group, "expires_ms", end, "at_ms", at,
                               NULL);
            else if (streq(to, "EXPIRED")) {
                char member[64];
                int64_t until = now + self->tombstone_ms;
                vm->tombstone_until_ms = until;
                model_tx_put_fields(tx, vkey, &vm->base, "tombstone_until_ms", NULL);
                s_member(member, sizeof member, "tombstone", vm->id);
                model_tx_zadd(tx, KEYS_TIMERS, until, member);
                s_power_task(tx, vm, "STOP", task);
                char until_text[24];
                snprintf(until_text, sizeof until_text, "%lld", (long long)until);
                model_tx_event(tx, "vm.lease.expired", "vm", vm->id, "name", vm->name, "owner",
                               vm->owner, "group", vm->group, "expires_ms", end,
                               "tombstone_until_ms", until_text, "at_ms", at, NULL);
            } else
                s_queue_task(tx, vm, "DISPOSE", now, task);
        }
        const char *why = NULL;
        rc = model_tx_commit(tx, self->store, &why);
        if (rc == 0 && *to) {
            self->fired++;
            log_info(NULL, "lease timer fired", "{s:s, s:s, s:s, s:s, s:s}", "timer", kind, "vm",
                     vm_id, "from", vm->state, "to", to, "task", task);
        } else if (rc == MODEL_REFUSED)
            log_error(NULL, "lease timer refused by the lifecycle table", "{s:s, s:s, s:s}",
                      "timer", kind, "vm", vm_id, "reason", why ? why : "?");
        model_tx_destroy(&tx);
        if (vm)
            berth__vm__free_unpacked(vm, NULL);
        if (rc == 0)
            return 0;
        if (rc != MODEL_CONFLICT)
            return -1;
        /* The VM changed between read and write: look again. */
    }
    return -1;
}

/* ---- the loop ----------------------------------------------------------------------------- */

static int s_on_timer(zloop_t *loop, int timer_id, void *arg);

static void s_arm(leases_t *self, int64_t delay_ms)
{
    zloop_t *loop = service_loop(self->service);
    if (self->timer_id)
        zloop_timer_end(loop, self->timer_id);
    if (delay_ms < 1)
        delay_ms = 1;
    if (delay_ms > self->check_ms)
        delay_ms = self->check_ms;
    self->timer_id = zloop_timer(loop, (size_t)delay_ms, 1, s_on_timer, self);
}

/* Claim what is due and fire it; arm the timer at the next due time, claim end or check. */
static void s_run(leases_t *self)
{
    char now[24], real_now[24], claim[24], batch[24];
    int64_t now_ms = clock_now_ms(), real_ms = util_now_ms();
    snprintf(now, sizeof now, "%lld", (long long)now_ms);
    snprintf(real_now, sizeof real_now, "%lld", (long long)real_ms);
    snprintf(claim, sizeof claim, "%d", self->claim_ms);
    snprintf(batch, sizeof batch, "%d", self->batch);
    const char *argv[] = { KEYS_TIMERS, KEYS_TIMERS_CLAIMED, now, real_now, claim, batch };
    redisReply *r = store_run(self->store, &lua_timers_claim, 2, 6, argv);
    int64_t delay = self->check_ms;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 2) {
        size_t n = (r->elements - 2) / 2;
        for (size_t i = 0; i < n; i++) {
            const redisReply *m = r->element[2 + 2 * i], *d = r->element[3 + 2 * i];
            if (m->type != REDIS_REPLY_STRING || d->type != REDIS_REPLY_STRING || m->len > 100)
                continue;
            char member[128], claimed[160];
            snprintf(member, sizeof member, "%s", m->str);
            snprintf(claimed, sizeof claimed, "%s|%s", d->str, m->str);
            char *colon = strchr(member, ':');
            if (!colon) {
                redisReply *z = store_command(self->store, "ZREM %s %s", KEYS_TIMERS_CLAIMED,
                                              claimed); /* not a timer of ours: dropped */
                if (z)
                    freeReplyObject(z);
                continue;
            }
            *colon = '\0';
            s_fire(self, claimed, member, colon + 1);
        }
        long long next_due = r->element[0]->type == REDIS_REPLY_INTEGER ? r->element[0]->integer
                                                                       : -1;
        long long claim_end =
            r->element[1]->type == REDIS_REPLY_INTEGER ? r->element[1]->integer : -1;
        if ((int)n >= self->batch)
            delay = 1; /* more may be due: claim again at once */
        else {
            if (next_due >= 0) {
                int64_t d = clock_real_delay(next_due - clock_now_ms());
                if (d < delay)
                    delay = d;
            }
            if (claim_end >= 0 && claim_end - util_now_ms() + 1 < delay)
                delay = claim_end - util_now_ms() + 1;
        }
    } else if (r && r->type == REDIS_REPLY_ERROR)
        log_error(NULL, "claiming lease timers failed", "{s:s}", "error", r->str);
    if (r)
        freeReplyObject(r);
    s_arm(self, delay);
}

static int s_on_timer(zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    leases_t *self = arg;
    self->timer_id = 0;
    s_run(self);
    return 0;
}

/* ---- extending and reviving -------------------------------------------------------------- */

/* Is extending vm to new_end within policy p? NULL when it is, else why not (in why). */
static const char *s_beyond_policy(const s_policy_t *p, const Berth__Vm *vm, int64_t new_end,
                                   char *why, size_t size)
{
    if (vm->extensions + 1 > p->max_extensions) {
        snprintf(why, size,
                 "the VM's lease was extended %d times already, the most its group allows "
                 "without an approval (%d)",
                 vm->extensions, p->max_extensions);
        return why;
    }
    if (new_end - vm->created_ms > (int64_t)p->max_days * DAY_MS) {
        snprintf(why, size,
                 "a lease may run at most %d days from the VM's creation without an approval",
                 p->max_days);
        return why;
    }
    return NULL;
}

/* Answer with the VM as stored (and beyond, when the extension was not granted). */
static void s_reply(bus_request_t *request, store_t *store, const char *vkey, const char *beyond,
                    const s_policy_t *p)
{
    Berth__Vm *vm = NULL;
    int rc = model_load(store, &berth__vm__descriptor, vkey, (ProtobufCMessage **)&vm);
    if (rc != 0) {
        bus_reply_error(request, rc < 0 ? "UNAVAILABLE" : "NOT_FOUND",
                        rc < 0 ? "state store unreachable" : "no such VM");
        return;
    }
    Berth__LeaseAnswer answer = BERTH__LEASE_ANSWER__INIT;
    answer.vm = vm;
    answer.beyond = (char *)(beyond ? beyond : "");
    answer.max_extensions = p->max_extensions;
    answer.max_lease_days = p->max_days;
    bus_reply(request, &answer.base);
    berth__vm__free_unpacked(vm, NULL);
}

/* Can vm's lease be extended now? NULL when it can, else the CONFLICT message (in why). */
static const char *s_unextendable(const Berth__Vm *vm, int64_t now, char *why, size_t size)
{
    int expired = streq(vm->state, "EXPIRED");
    if (!streq(vm->state, "ACTIVE") && !streq(vm->state, "EXPIRING") && !expired) {
        snprintf(why, size,
                 "VM is %s; only an ACTIVE, EXPIRING or EXPIRED VM's lease can be extended",
                 vm->state);
        return why;
    }
    if (!vm->lease || (expired && vm->tombstone_until_ms <= now)) {
        snprintf(why, size, "%s",
                 vm->lease ? "the VM's tombstone period is over: it is being disposed"
                           : "the VM has no lease");
        return why;
    }
    return NULL;
}

/* The lease's end once days are added to vm's (an EXPIRED VM's runs the days from now). */
static int64_t s_new_end(const Berth__Vm *vm, int days, int64_t now)
{
    int64_t base = streq(vm->state, "EXPIRED") ? now : vm->lease->expires_ms;
    return base + (int64_t)days * DAY_MS;
}

/* Add to tx the extension of vm (as read, checked extendable) by days, for by; request: the
   approved extension request it applies (NULL: granted within the policy), added to the
   VM's lease_requests through *list (the caller frees it). The revival of an EXPIRED VM
   queues its START (task receives the id). vm's lease fields are changed to what is written.
   0, or -1 when out of memory (nothing added to tx). */
static int s_tx_extend(model_tx_t *tx, Berth__Vm *vm, int days, const char *by,
                       const char *request, int64_t notice_ms, int64_t now, char ***list,
                       char task[UTIL_ID_LEN])
{
    *list = NULL;
    if (request) {
        *list = calloc(vm->n_lease_requests + 1, sizeof **list);
        if (!*list)
            return -1;
        for (size_t i = 0; i < vm->n_lease_requests; i++)
            (*list)[i] = vm->lease_requests[i];
        (*list)[vm->n_lease_requests] = (char *)request;
    }
    char vkey[KEYS_MAX], lease[96];
    keys_vm(vkey, vm->id);
    int expired = streq(vm->state, "EXPIRED");
    int64_t new_end = s_new_end(vm, days, now);
    s_lease_text(vm, lease, sizeof lease);
    model_tx_check(tx, vkey, "lease", lease);
    if (expired)
        s_move(tx, vm, "ACTIVE"); /* revive */
    else if (streq(vm->state, "EXPIRING") && new_end - notice_ms > now)
        s_move(tx, vm, "ACTIVE"); /* extended past the notice period */
    else
        model_tx_check(tx, vkey, "state", vm->state);
    vm->lease->expires_ms = new_end;
    vm->extensions++;
    vm->tombstone_until_ms = 0;
    vm->updated_ms = now;
    model_tx_put_fields(tx, vkey, &vm->base, "lease", "extensions", "tombstone_until_ms",
                        "updated_ms", NULL);
    if (request) {
        Berth__Vm with = *vm;
        with.lease_requests = *list;
        with.n_lease_requests = vm->n_lease_requests + 1;
        model_tx_put_fields(tx, vkey, &with.base, "lease_requests", NULL);
    }
    s_tx_schedule(tx, vm, notice_ms);
    if (expired)
        s_power_task(tx, vm, "START", task);
    char end[24], at[24], n[16];
    snprintf(end, sizeof end, "%lld", (long long)new_end);
    snprintf(at, sizeof at, "%lld", (long long)now);
    snprintf(n, sizeof n, "%d", days);
    model_tx_event(tx, "vm.lease.extended", "vm", vm->id, "name", vm->name, "owner", vm->owner,
                   "group", vm->group, "by", by, "days", n, "expires_ms", end, "revived",
                   expired ? "1" : "0", "request", request ? request : "", "at_ms", at, NULL);
    return 0;
}

/* One attempt: 0 answered, 1 the VM changed meanwhile (try again). */
static int s_extend_once(leases_t *self, bus_request_t *request, const Berth__ExtendLease *req,
                         const Berth__UserAssertion *who)
{
    const char *rid = bus_request_envelope(request)->request_id;
    char vkey[KEYS_MAX], why[200], task[UTIL_ID_LEN] = "";
    keys_vm(vkey, req->vm);
    Berth__Vm *vm = NULL;
    int rc = model_load(self->store, &berth__vm__descriptor, vkey, (ProtobufCMessage **)&vm);
    if (rc != 0) {
        bus_reply_error(request, rc < 0 ? "UNAVAILABLE" : "NOT_FOUND",
                        rc < 0 ? "state store unreachable" : "no such VM");
        return 0;
    }
    /* vm.extend of gateway/permissions.c, checked again on the signed claims. */
    if (!streq(vm->owner, who->user) && !assertion_has_role(who, "admin") &&
        !assertion_has_group_role(who, vm->group, "manager")) {
        berth__vm__free_unpacked(vm, NULL);
        bus_reply_error(request, "FORBIDDEN",
                        "only the VM's owner, a manager of its group or an admin extends its "
                        "lease");
        return 0;
    }
    int64_t now = clock_now_ms();
    if (s_unextendable(vm, now, why, sizeof why)) {
        berth__vm__free_unpacked(vm, NULL);
        bus_reply_error(request, "CONFLICT", why);
        return 0;
    }
    s_policy_t p;
    if (s_policy(self, vm, &p) != 0) {
        berth__vm__free_unpacked(vm, NULL);
        bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
        return 0;
    }
    /* Beyond the policy: nothing changes here; the answer says why, and the gateway asks
       approval for it. */
    if (s_beyond_policy(&p, vm, s_new_end(vm, req->days, now), why, sizeof why)) {
        berth__vm__free_unpacked(vm, NULL);
        log_info(rid, "lease extension beyond the policy", "{s:s, s:s, s:i, s:s}", "vm", req->vm,
                 "by", who->user, "days", req->days, "why", why);
        s_reply(request, self->store, vkey, why, &p);
        return 0;
    }
    model_tx_t *tx = model_tx_new();
    if (!tx) {
        berth__vm__free_unpacked(vm, NULL);
        bus_reply_error(request, "INTERNAL", "out of memory");
        return 0;
    }
    model_tx_actor(tx, who->user, rid); /* audit: made for who asked */
    int expired = streq(vm->state, "EXPIRED");
    char **list = NULL;
    s_tx_extend(tx, vm, req->days, who->user, NULL, p.notice_ms, now, &list, task);
    const char *err = NULL;
    rc = model_tx_commit(tx, self->store, &err);
    if (rc == 0)
        log_info(rid, expired ? "lease extended; VM revived" : "lease extended",
                 "{s:s, s:s, s:i, s:I, s:s}", "vm", vm->id, "by", who->user, "days", req->days,
                 "expires_ms", (json_int_t)vm->lease->expires_ms, "task", task);
    else if (rc == MODEL_REFUSED)
        log_error(rid, "lease extension refused by the lifecycle table", "{s:s, s:s}", "vm",
                  vm->id, "reason", err ? err : "?");
    model_tx_destroy(&tx);
    berth__vm__free_unpacked(vm, NULL);
    if (rc == MODEL_CONFLICT)
        return 1;
    if (rc == 0)
        s_reply(request, self->store, vkey, NULL, &p);
    else if (rc < 0)
        bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
    else
        bus_reply_error(request, "CONFLICT", "the VM's lease cannot be extended in its state");
    if (rc == 0)
        s_arm(self, 1); /* its timers moved: look at them again */
    return 0;
}

/* Fire extend:<request id>: apply the approved extension request to its VM, once. 0 when
   done (applied, applied before, or dropped: the request or the VM no longer allows it),
   -1 when it must fire again. */
static int s_fire_extend(leases_t *self, const char *claimed, const char *request_id)
{
    char rkey[KEYS_MAX], vkey[KEYS_MAX], why[200], task[UTIL_ID_LEN] = "";
    Berth__Request *req = NULL;
    int rc = util_is_uuid(request_id)
                 ? model_load(self->store, &berth__request__descriptor,
                              keys_build(rkey, KEYS_REQUEST, request_id, NULL),
                              (ProtobufCMessage **)&req)
                 : MODEL_NOT_FOUND;
    if (rc < 0)
        return -1;
    const Berth__LeaseExtension *ext = req ? req->extension : NULL;
    const char *drop = NULL;
    if (!req || !streq(req->kind, "extension") || !ext || !util_is_uuid(ext->vm) ||
        ext->days < 1)
        drop = "not an extension request";
    else if (!streq(req->state, "APPROVED"))
        drop = "the request is not approved";
    for (int attempt = 0; attempt < 3; attempt++) {
        Berth__Vm *vm = NULL;
        if (!drop) {
            rc = model_load(self->store, &berth__vm__descriptor, keys_vm(vkey, ext->vm),
                            (ProtobufCMessage **)&vm);
            if (rc < 0)
                break;
        }
        int64_t now = clock_now_ms();
        int applied = 0;
        for (size_t i = 0; vm && i < vm->n_lease_requests; i++)
            applied |= streq(vm->lease_requests[i], request_id);
        const char *skip = drop ? drop
                           : !vm ? "the VM is gone"
                           : applied ? NULL
                                     : s_unextendable(vm, now, why, sizeof why);
        s_policy_t p = { 0 };
        if (vm && !skip && !applied && s_policy(self, vm, &p) != 0) {
            berth__vm__free_unpacked(vm, NULL);
            rc = -1;
            break;
        }
        model_tx_t *tx = model_tx_new();
        if (!tx) {
            if (vm)
                berth__vm__free_unpacked(vm, NULL);
            rc = -1;
            break;
        }
        model_tx_zrem(tx, KEYS_TIMERS_CLAIMED, claimed);
        char **list = NULL;
        /* Made for who approved it: the approval is its authority. */
        if (!skip && !applied) {
            model_tx_actor(tx, req->decided_by, NULL);
            if (s_tx_extend(tx, vm, ext->days, req->decided_by, request_id, p.notice_ms, now,
                            &list, task) != 0) {
                model_tx_destroy(&tx);
                berth__vm__free_unpacked(vm, NULL);
                rc = -1; /* out of memory: the claim runs out and it fires again */
                break;
            }
        }
        const char *err = NULL;
        rc = model_tx_commit(tx, self->store, &err);
        model_tx_destroy(&tx);
        free(list);
        if (rc == 0 && !skip && !applied) {
            self->fired++;
            log_info(NULL, "approved lease extension applied", "{s:s, s:s, s:i, s:s, s:s}",
                     "request", request_id, "vm", ext->vm, "days", ext->days, "by",
                     req->decided_by, "task", task);
        } else if (rc == 0 && skip)
            log_warn(NULL, "approved lease extension dropped", "{s:s, s:s}", "request",
                     request_id, "reason", skip);
        else if (rc == MODEL_REFUSED)
            log_error(NULL, "lease extension refused by the lifecycle table", "{s:s, s:s}",
                      "request", request_id, "reason", err ? err : "?");
        if (vm)
            berth__vm__free_unpacked(vm, NULL);
        if (rc != MODEL_CONFLICT)
            break;
    }
    if (req)
        berth__request__free_unpacked(req, NULL);
    return rc == 0 ? 0 : -1;
}

/* ExtendLease for the gateway: days 1..lease_max_extend_days, for the VM's owner, a manager
   of its group or an admin (taken only from the signed assertion). */
static void s_on_extend(bus_request_t *request, void *arg)
{
    leases_t *self = arg;
    Berth__ExtendLease *req = bus_request_body(request, &berth__extend_lease__descriptor);
    if (!req || !util_is_uuid(req->vm)) {
        bus_reply_error(request, "BAD_REQUEST", "ExtendLease needs a VM id (UUID)");
        return;
    }
    if (req->days < 1 || req->days > self->max_extend_days) {
        berth_error_t fault = { 0 };
        error_field(&fault, "days", "days must be between 1 and %d", self->max_extend_days);
        bus_reply_fault(request, &fault);
        return;
    }
    berth_error_t error = { 0 };
    Berth__UserAssertion *who = NULL;
    if (assertion_of(self->verifier, request, req->assertion, &who, &error) != 0) {
        bus_reply_fault(request, &error);
        return;
    }
    int again = 1;
    for (int attempt = 0; again && attempt < 3; attempt++)
        again = s_extend_once(self, request, req, who);
    if (again)
        bus_reply_error(request, "CONFLICT", "the VM keeps changing; try again");
    berth__user_assertion__free_unpacked(who, NULL);
}

/* ---- construction ------------------------------------------------------------------------- */

leases_t *leases_new(service_t *service)
{
    config_t *c = service_config(service);
    int64_t notice, tombstone, claim, batch, check, max_days, max_ext, max_extend;
    if (config_int(c, "lease_max_days", 1, 36500, &max_days) ||
        config_int(c, "lease_max_extensions", 0, 100000, &max_ext) ||
        config_int(c, "lease_max_extend_days", 1, 36500, &max_extend) ||
        config_int(c, "lease_notice_ms", 0, 3650 * DAY_MS, &notice) ||
        config_int(c, "lease_tombstone_ms", 0, 3650 * DAY_MS, &tombstone) ||
        config_int(c, "timer_claim_ms", 100, 3600000, &claim) ||
        config_int(c, "timer_batch", 1, 10000, &batch) ||
        config_int(c, "timer_check_ms", 10, 600000, &check))
        return NULL;
    leases_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->service = service;
    self->store = service_store(service);
    self->notice_ms = notice;
    self->tombstone_ms = tombstone;
    self->claim_ms = (int)claim;
    self->batch = (int)batch;
    self->check_ms = (int)check;
    self->max_days = (int)max_days;
    self->max_extensions = (int)max_ext;
    self->max_extend_days = (int)max_extend;
    berth_error_t error = { 0 };
    self->verifier = assertion_verifier_new(config_get(c, "secrets_dir"), &error);
    if (!self->verifier) {
        log_error(NULL, "cannot load the user assertion key", "{s:s}", "reason", error.message);
        free(self);
        return NULL;
    }
    service_on(service, "ExtendLease", "gateway", s_on_extend, self);
    s_arm(self, 1);
    return self;
}

void leases_destroy(leases_t **self_p)
{
    if (self_p && *self_p) {
        assertion_destroy(&(*self_p)->verifier);
        free(*self_p);
        *self_p = NULL;
    }
}
