/*  charge: prices the meter's usage with the rate cards.

    Where the time comes from: a VM's usage hash (usage.c) keeps its vm.state and vm.power
    events in stream order, exactly once whatever the order or number of deliveries. Walking
    them as usage_apply.lua does (the state and the power in force after each event, an
    UNKNOWN power billed as the last known one) gives the VM's billed spans, each in one
    billing class; a span never starts before the previous one ended. A VM whose list was
    folded (more than max_events_per_vm events) keeps only intervals for the folded part: its
    compute time there is charged as running and its disk-only time as stopped.

    How a span is priced: split at every rate change (each part under the card in force) and
    at every UTC midnight (each part in its day's line), every part's charge kept exactly as a
    fraction over CHARGE_DENOM, and each (VM, day) line rounded once, half up. Charges are
    derived from the exactly-once usage and from cards that never change, so a report asked
    again gives the same lines for a past window.

    A reservation-based group pays for capacity, not for VMs: each day a "reserved" line (what
    its reservation log says it reserved, used or not) and a "beyond" line (per resource, what
    its VMs used above that: vCPUs and RAM of VMs billed as running, the disks of all billed
    VMs), both at the card's prices as running and without template prices; its VM lines keep
    their times with amount 0. */
#include "charge.h"
#include "keys.h"
#include "lifecycle.h"
#include "limit.h"
#include "log.h"
#include "model.h"
#include "rates.h"
#include "util.h"

#include <assert.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* CHARGE_DENOM over each unit's own denominator (see charge.h). */
#define S_PER_HOUR_UNIT INT64_C(3072)   /* 1,000 h = 3.6e9 ms, per mille */
#define S_PER_RAM_MB    INT64_C(3)      /* the same, per MB of RAM (1,024 per GB) */
#define S_PER_DAY_UNIT  INT64_C(128000) /* a day = 8.64e7 ms, per mille */

int charge_class(const char *vm_state, const char *power_state)
{
    int compute = 0, disk = 0;
    lifecycle_billing(vm_state, power_state, &compute, &disk);
    if (compute)
        return CHARGE_RUNNING;
    if (!disk)
        return -1;
    if (strcmp(vm_state, "EXPIRED") == 0)
        return CHARGE_EXPIRED;
    if (strcmp(vm_state, "SHELVING") == 0 || strcmp(vm_state, "SHELVED") == 0 ||
        strcmp(vm_state, "UNSHELVING") == 0)
        return CHARGE_SHELVED;
    return CHARGE_STOPPED;
}

static int32_t s_factor(const Berth__RateCard *card, charge_class_t cls)
{
    switch (cls) {
    case CHARGE_RUNNING:
        return card->factor_running;
    case CHARGE_STOPPED:
        return card->factor_stopped;
    case CHARGE_SHELVED:
        return card->factor_shelved;
    case CHARGE_EXPIRED:
        return card->factor_expired;
    default:
        return 0;
    }
}

charge_exact_t charge_exact(const Berth__RateCard *card, charge_class_t cls,
                            const charge_flavor_t *flavor, int64_t ms)
{
    assert(card && flavor);
    if (ms <= 0)
        return 0;
    charge_exact_t per_ms = 0;
    if (cls == CHARGE_RUNNING)
        per_ms += (charge_exact_t)card->vcpu_hour * flavor->vcpus * S_PER_HOUR_UNIT +
                  (charge_exact_t)card->ram_gb_hour * flavor->ram_mb * S_PER_RAM_MB;
    per_ms += (charge_exact_t)card->disk_gb_hour * flavor->disk_gb * S_PER_HOUR_UNIT;
    for (size_t i = 0; flavor->template_name && i < card->n_templates; i++)
        if (strcmp(card->templates[i]->template_, flavor->template_name) == 0)
            per_ms += (charge_exact_t)card->templates[i]->per_day * S_PER_DAY_UNIT;
    return per_ms * ms * s_factor(card, cls);
}

charge_exact_t charge_span(const Berth__RateCardList *cards, charge_class_t cls,
                           const charge_flavor_t *flavor, int64_t start, int64_t end)
{
    charge_exact_t sum = 0;
    for (size_t i = 0; cards && i < cards->n_cards && start < end; i++) {
        int64_t from = cards->cards[i]->effective_ms;
        int64_t until = i + 1 < cards->n_cards ? cards->cards[i + 1]->effective_ms : INT64_MAX;
        int64_t a = start > from ? start : from;
        int64_t b = end < until ? end : until;
        if (a < b)
            sum += charge_exact(cards->cards[i], cls, flavor, b - a);
    }
    return sum;
}

int64_t charge_round(charge_exact_t exact)
{
    assert(exact >= 0);
    return (int64_t)((exact + CHARGE_DENOM / 2) / CHARGE_DENOM);
}

/* ---- report ---------------------------------------------------------------------------- */

/* One VM's days inside the window. */
typedef struct {
    int64_t first_day;     /* UTC midnight of the window's first day */
    int n;                 /* days */
    charge_exact_t *exact; /* per day */
    int64_t *compute_ms;
    int64_t *disk_ms;
} s_days_t;

/* A change of what a reservation-based group's VMs use, at a time: +/- vcpus, ram_mb,
   disk_gb. */
typedef struct {
    int64_t at;
    int64_t d[3];
} s_step_t;

typedef struct {
    s_step_t *v;
    size_t n, cap;
    int failed; /* out of memory */
} s_steps_t;

typedef struct {
    const Berth__RateCardList *cards;
    const charge_flavor_t *flavor;
    int64_t from, until; /* the window, until capped at now */
    s_days_t *days;
    s_steps_t *steps; /* reservation-based: the spans go here, not priced per VM */
} s_vm_t;

static void s_step(s_steps_t *s, int64_t at, int sign, const charge_flavor_t *f, int compute)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 256;
        s_step_t *v = realloc(s->v, cap * sizeof *v);
        if (!v) {
            s->failed = 1;
            return;
        }
        s->v = v;
        s->cap = cap;
    }
    s_step_t *st = &s->v[s->n++];
    st->at = at;
    st->d[0] = compute ? sign * f->vcpus : 0;
    st->d[1] = compute ? sign * f->ram_mb : 0;
    st->d[2] = sign * f->disk_gb;
}

/* Book [start, end) in class cls: clipped to the window, split at midnights. */
static void s_book(s_vm_t *v, int cls, int64_t start, int64_t end)
{
    if (cls < 0)
        return;
    if (start < v->from)
        start = v->from;
    if (end > v->until)
        end = v->until;
    if (v->steps && start < end) {
        s_step(v->steps, start, 1, v->flavor, cls == CHARGE_RUNNING);
        s_step(v->steps, end, -1, v->flavor, cls == CHARGE_RUNNING);
    }
    while (start < end) {
        int d = (int)((start - v->days->first_day) / CHARGE_DAY_MS);
        int64_t midnight = v->days->first_day + (int64_t)(d + 1) * CHARGE_DAY_MS;
        int64_t stop = end < midnight ? end : midnight;
        if (d >= 0 && d < v->days->n) {
            if (!v->steps)
                v->days->exact[d] += charge_span(v->cards, cls, v->flavor, start, stop);
            v->days->disk_ms[d] += stop - start;
            if (cls == CHARGE_RUNNING)
                v->days->compute_ms[d] += stop - start;
        }
        start = stop;
    }
}

/* The closed intervals of a folded list ([[start, end], ...]): compute as running, the rest
   of the disk time as stopped. */
static void s_book_folded(s_vm_t *v, json_t *base, json_t *base_disk)
{
    size_t i, j;
    json_t *d, *c;
    json_array_foreach(base_disk, i, d)
    {
        int64_t a = json_integer_value(json_array_get(d, 0));
        int64_t b = json_integer_value(json_array_get(d, 1));
        int64_t at = a;
        json_array_foreach(base, j, c)
        {
            int64_t ca = json_integer_value(json_array_get(c, 0));
            int64_t cb = json_integer_value(json_array_get(c, 1));
            if (cb <= at || ca >= b)
                continue;
            if (ca < at)
                ca = at;
            if (cb > b)
                cb = b;
            s_book(v, CHARGE_STOPPED, at, ca);
            s_book(v, CHARGE_RUNNING, ca, cb);
            at = cb;
        }
        s_book(v, CHARGE_STOPPED, at, b);
    }
}

/* Walk one VM's events (usage hash fields, see s_fields) into its days. */
static void s_walk(s_vm_t *v, const redisReply *h)
{
    json_t *events = json_loads(h->element[0]->str ? h->element[0]->str : "[]", 0, NULL);
    const char *st = NULL, *pw = NULL;
    int legacy = -1;                  /* class of a pre-power event's code */
    int64_t cursor = 0, open_at = -1; /* open_at: start of the span in force */
    int cls = -1;
    json_t *follow = NULL;
    if (h->element[1]->str && *h->element[1]->str) {
        json_t *base = json_loads(h->element[2]->str ? h->element[2]->str : "[]", 0, NULL);
        json_t *base_disk = json_loads(h->element[3]->str ? h->element[3]->str : "[]", 0, NULL);
        s_book_folded(v, base, base_disk);
        size_t n = json_array_size(base_disk);
        if (n)
            cursor = json_integer_value(json_array_get(json_array_get(base_disk, n - 1), 1));
        json_decref(base);
        json_decref(base_disk);
        follow = json_loads(h->element[4]->str ? h->element[4]->str : "[]", 0, NULL);
        st = json_string_value(json_array_get(follow, 0));
        pw = json_string_value(json_array_get(follow, 1));
        if (st && !*st)
            st = NULL;
        if (pw && !*pw)
            pw = NULL;
        int64_t open = 0;
        if (h->element[5]->str && util_parse_int(h->element[5]->str, 0, INT64_MAX, &open) == 0 &&
            open > 0) {
            open_at = open > cursor ? open : cursor;
            cls = st ? charge_class(st, pw) : -1;
        }
    }
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e)
    {
        int64_t at = json_integer_value(json_array_get(e, 2));
        if (json_array_size(e) >= 5) {
            const char *es = json_string_value(json_array_get(e, 3));
            const char *ep = json_string_value(json_array_get(e, 4));
            if (es && *es)
                st = es, legacy = -1;
            if (ep && *ep && !lifecycle_power_billed_as_last(ep))
                pw = ep;
        } else {
            int code = (int)json_integer_value(json_array_get(e, 1));
            st = NULL;
            legacy = code & 1 ? CHARGE_RUNNING : code & 2 ? CHARGE_STOPPED : -1;
        }
        int now = st ? charge_class(st, pw) : legacy;
        if (open_at >= 0) {
            int64_t end = at > open_at ? at : open_at;
            s_book(v, cls, open_at, end);
            cursor = end;
        }
        open_at = at > cursor ? at : cursor;
        cls = now;
    }
    if (open_at >= 0 && v->until > open_at)
        s_book(v, cls, open_at, v->until);
    json_decref(events);
    json_decref(follow);
}

/* ---- reservation-based ----------------------------------------------------------------- */

/* What the group reserves in all from at on (an entry of its reservation log). */
typedef struct {
    int64_t at;
    int64_t r[3]; /* vcpus, ram_mb, disk_gb */
} s_reserved_t;

static int s_reserved_order(const void *a, const void *b)
{
    int64_t x = ((const s_reserved_t *)a)->at, y = ((const s_reserved_t *)b)->at;
    return x < y ? -1 : x > y;
}

static int s_step_order(const void *a, const void *b)
{
    int64_t x = ((const s_step_t *)a)->at, y = ((const s_step_t *)b)->at;
    return x < y ? -1 : x > y;
}

/* The group's reservation log (berth:reservation-log), oldest first: 0 and *out (caller
   frees) and *n, or -1 with error. An entry that does not parse is skipped (and logged). */
static int s_reservation_log(store_t *store, const char *group, s_reserved_t **out, size_t *n,
                             berth_error_t *error)
{
    char key[KEYS_MAX];
    redisReply *r =
        store_command(store, "HGETALL %s", keys_build(key, KEYS_RESERVATION_LOG, group, NULL));
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return error_set(error, "UNAVAILABLE", "state store unreachable");
    }
    s_reserved_t *log = calloc(r->elements / 2 + 1, sizeof *log);
    if (!log) {
        freeReplyObject(r);
        return error_set(error, "INTERNAL", "out of memory");
    }
    size_t k = 0;
    static const char *const dims[3] = { "vcpus", "ram_mb", "disk_gb" };
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const redisReply *f = r->element[i], *v = r->element[i + 1];
        json_t *j = v->type == REDIS_REPLY_STRING ? json_loads(v->str, 0, NULL) : NULL;
        int ok = f->type == REDIS_REPLY_STRING && json_is_object(j) &&
                 util_parse_int(f->str, 0, INT64_MAX, &log[k].at) == 0;
        for (int d = 0; ok && d < 3; d++) {
            json_t *x = json_object_get(j, dims[d]);
            ok = json_is_integer(x) && json_integer_value(x) >= 0;
            log[k].r[d] = ok ? json_integer_value(x) : 0;
        }
        json_decref(j);
        if (ok)
            k++;
        else
            log_warn(NULL, "unreadable reservation log entry, skipped", "{s:s, s:s}", "group",
                     group, "field", f->type == REDIS_REPLY_STRING ? f->str : "");
    }
    freeReplyObject(r);
    qsort(log, k, sizeof *log, s_reserved_order);
    *out = log;
    *n = k;
    return 0;
}

/* Per day: a group line's exact charge and its billed times. */
typedef struct {
    charge_exact_t *exact;
    int64_t *compute_ms;
    int64_t *disk_ms;
} s_group_days_t;

static void s_group_book(s_group_days_t *g, int d, const Berth__RateCardList *cards,
                         const charge_flavor_t *f, int64_t start, int64_t end)
{
    g->exact[d] += charge_span(cards, CHARGE_RUNNING, f, start, end);
    if (f->vcpus || f->ram_mb)
        g->compute_ms[d] += end - start;
    if (f->disk_gb)
        g->disk_ms[d] += end - start;
}

static int64_t s_above(int64_t use, int64_t reserved)
{
    return use > reserved ? use - reserved : 0;
}

/* A reservation-based group's days over [from, until): what it reserved (the log's entry in
   force) into reserved, what its VMs used above that (steps, per resource) into beyond; both
   priced as running under the card in force (no template price: that is a VM's), split at
   every change, rate change and UTC midnight. */
static void s_sweep(const Berth__RateCardList *cards, s_steps_t *steps, const s_reserved_t *log,
                    size_t n_log, const s_days_t *days, int64_t from, int64_t until,
                    s_group_days_t *reserved, s_group_days_t *beyond)
{
    qsort(steps->v, steps->n, sizeof *steps->v, s_step_order);
    int64_t use[3] = { 0, 0, 0 }, res[3] = { 0, 0, 0 };
    size_t li = 0, si = 0;
    for (int64_t t = from; t < until;) {
        for (; si < steps->n && steps->v[si].at <= t; si++)
            for (int d = 0; d < 3; d++)
                use[d] += steps->v[si].d[d];
        for (; li < n_log && log[li].at <= t; li++)
            memcpy(res, log[li].r, sizeof res);
        int day = (int)((t - days->first_day) / CHARGE_DAY_MS);
        int64_t next = days->first_day + (int64_t)(day + 1) * CHARGE_DAY_MS;
        if (until < next)
            next = until;
        if (si < steps->n && steps->v[si].at < next)
            next = steps->v[si].at;
        if (li < n_log && log[li].at < next)
            next = log[li].at;
        if (day >= 0 && day < days->n) {
            charge_flavor_t r = { .vcpus = res[0], .ram_mb = res[1], .disk_gb = res[2] };
            charge_flavor_t b = { .vcpus = s_above(use[0], res[0]),
                                  .ram_mb = s_above(use[1], res[1]),
                                  .disk_gb = s_above(use[2], res[2]) };
            s_group_book(reserved, day, cards, &r, t, next);
            s_group_book(beyond, day, cards, &b, t, next);
        }
        t = next;
    }
}

/* Append a line to report (rc 0), or BAD_REQUEST past max_lines / INTERNAL (-1). */
static int s_line(Berth__ChargebackReport *report, int max_lines, int64_t day_ms, const char *vm,
                  const char *owner, const char *template_name, const char *kind,
                  charge_exact_t exact, int64_t compute_ms, int64_t disk_ms, berth_error_t *error)
{
    if (report->n_lines >= (size_t)max_lines) {
        error_set(error, "BAD_REQUEST", "the report would hold more than %d lines: narrow from..to",
                  max_lines);
        error_detail(error, "field", "to");
        return -1;
    }
    Berth__ChargeLine *line = charge_line_new(day_ms, vm, owner, template_name, kind,
                                              charge_round(exact), compute_ms, disk_ms);
    if (!line)
        return error_set(error, "INTERNAL", "out of memory");
    report->lines[report->n_lines++] = line;
    report->total += line->amount;
    return 0;
}

Berth__ChargeLine *charge_line_new(int64_t day_ms, const char *vm, const char *owner,
                                   const char *template_name, const char *kind, int64_t amount,
                                   int64_t compute_ms, int64_t disk_ms)
{
    Berth__ChargeLine *line = malloc(sizeof *line);
    if (!line)
        return NULL;
    char day[16];
    time_t t = (time_t)(day_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(day, sizeof day, "%Y-%m-%d", &tm);
    berth__charge_line__init(line);
    line->day = strdup(day);
    line->vm = strdup(vm ? vm : "");
    line->owner = strdup(owner ? owner : "");
    line->template_ = strdup(template_name ? template_name : "");
    line->kind = strdup(kind ? kind : "");
    line->amount = amount;
    line->compute_ms = compute_ms;
    line->disk_ms = disk_ms;
    if (!line->day || !line->vm || !line->owner || !line->template_ || !line->kind) {
        berth__charge_line__free_unpacked(line, NULL);
        return NULL;
    }
    return line;
}

/* The usage hash fields s_walk and the line read, in this order. */
static const char *const s_fields[] = { "events",      "base_until",     "base",   "base_disk",
                                        "base_follow", "base_disk_open", "owner",  "template",
                                        "vcpus",       "ram_mb",         "disk_gb" };
#define S_NFIELDS (sizeof s_fields / sizeof s_fields[0])

int charge_line_order(const void *a, const void *b)
{
    const Berth__ChargeLine *x = *(Berth__ChargeLine *const *)a;
    const Berth__ChargeLine *y = *(Berth__ChargeLine *const *)b;
    int c = strcmp(x->day, y->day);
    if (!c)
        c = strcmp(x->vm, y->vm);
    return c ? c : strcmp(x->kind, y->kind);
}

static int64_t s_num(const redisReply *r)
{
    int64_t v = 0;
    if (r->type == REDIS_REPLY_STRING && util_parse_int(r->str, 0, INT64_C(1) << 52, &v) == 0)
        return v;
    return 0;
}

int charge_live(store_t *store, const char *group, const char *only_vm, int64_t from_ms,
                int64_t to_ms, int64_t now_ms, int max_vms, int max_lines,
                Berth__ChargebackReport **out, berth_error_t *error)
{
    assert(store && out && max_vms > 0 && max_lines > 0);
    if (!group || !util_is_uuid(group))
        return error_field(error, "group", "group must be a group id");
    if (from_ms < 0)
        return error_field(error, "from", "from must not be negative");
    if (to_ms <= from_ms)
        return error_field(error, "to", "to must be after from");
    char key[KEYS_MAX];
    ProtobufCMessage *m = NULL;
    int rc =
        model_load(store, &berth__group__descriptor, keys_build(key, KEYS_GROUP, group, NULL), &m);
    if (rc == MODEL_NOT_FOUND)
        return error_set(error, "NOT_FOUND", "no such group");
    if (rc != 0)
        return error_set(error, "UNAVAILABLE", "state store unreachable");
    Berth__Group *g = (Berth__Group *)m;
    int by_reservation = g->charging_model && strcmp(g->charging_model, "reservation") == 0;
    const char *model = by_reservation ? "reservation" : "allocation";
    berth__group__free_unpacked(g, NULL);

    Berth__RateCardList *cards = NULL;
    if (rates_list(store, &cards, error) != 0)
        return -1;
    redisReply *vms =
        store_command(store, "SMEMBERS %s", keys_build(key, KEYS_GROUP_VMS, group, NULL));
    if (!vms || vms->type != REDIS_REPLY_ARRAY) {
        if (vms)
            freeReplyObject(vms);
        rates_list_free(&cards);
        return error_set(error, "UNAVAILABLE", "state store unreachable");
    }
    if (vms->elements > (size_t)max_vms) {
        error_set(error, "BAD_REQUEST", "the group has more VMs than a report may hold");
        error_detail(error, "max_vms", "%d", max_vms);
        freeReplyObject(vms);
        rates_list_free(&cards);
        return -1;
    }
    Berth__ChargebackReport *report = malloc(sizeof *report);
    if (report) {
        berth__chargeback_report__init(report);
        report->lines = calloc((size_t)max_lines + 1, sizeof *report->lines);
        report->group = strdup(group);
        report->charging_model = strdup(model);
        report->vm = strdup(only_vm ? only_vm : "");
        report->currency = strdup(cards->n_cards ? cards->cards[0]->currency : "");
    }
    s_days_t days = { 0 };
    int64_t until = to_ms < now_ms ? to_ms : now_ms;
    days.first_day = from_ms - from_ms % CHARGE_DAY_MS;
    days.n = until > days.first_day ? (int)((until - days.first_day - 1) / CHARGE_DAY_MS) + 1 : 0;
    days.exact = calloc((size_t)days.n + 1, sizeof *days.exact);
    days.compute_ms = calloc((size_t)days.n + 1, sizeof *days.compute_ms);
    days.disk_ms = calloc((size_t)days.n + 1, sizeof *days.disk_ms);
    s_steps_t steps = { 0 };
    s_group_days_t group_days[2] = { 0 }; /* reserved, beyond */
    for (int k = 0; by_reservation && k < 2; k++) {
        group_days[k].exact = calloc((size_t)days.n + 1, sizeof *group_days[k].exact);
        group_days[k].compute_ms = calloc((size_t)days.n + 1, sizeof *group_days[k].compute_ms);
        group_days[k].disk_ms = calloc((size_t)days.n + 1, sizeof *group_days[k].disk_ms);
        if (!group_days[k].exact || !group_days[k].compute_ms || !group_days[k].disk_ms)
            steps.failed = 1;
    }
    rc = 0;
    if (!report || !report->lines || !report->group || !report->charging_model ||
        !report->currency || !report->vm || !days.exact || !days.compute_ms || !days.disk_ms ||
        steps.failed)
        rc = error_set(error, "INTERNAL", "out of memory");
    if (report) {
        report->from_ms = from_ms;
        report->to_ms = to_ms;
    }
    for (size_t i = 0; rc == 0 && i < vms->elements; i++) {
        const redisReply *vm = vms->element[i];
        if (vm->type != REDIS_REPLY_STRING || vm->len > 128 ||
            (only_vm && strcmp(vm->str, only_vm) != 0))
            continue;
        const char *argv[2 + S_NFIELDS];
        argv[0] = "HMGET";
        argv[1] = keys_build(key, KEYS_USAGE, vm->str, NULL);
        for (size_t f = 0; f < S_NFIELDS; f++)
            argv[2 + f] = s_fields[f];
        redisReply *h = store_commandv(store, 2 + S_NFIELDS, argv, NULL);
        if (!h || h->type != REDIS_REPLY_ARRAY || h->elements != S_NFIELDS) {
            if (h)
                freeReplyObject(h);
            rc = error_set(error, "UNAVAILABLE", "state store unreachable");
            break;
        }
        if (h->element[0]->type != REDIS_REPLY_STRING) {
            freeReplyObject(h);
            continue; /* never billed */
        }
        /* The VM records its template's id; cards price templates by name (approval's
           berth:template:<id>, read here; an id no longer there stays as it is). */
        char tname[LIMIT_TEMPLATE_NAME_MAX + 1] = "";
        if (h->element[7]->type == REDIS_REPLY_STRING && util_is_uuid(h->element[7]->str)) {
            char tkey[KEYS_MAX];
            redisReply *n = store_command(
                store, "HGET %s name", keys_build(tkey, KEYS_TEMPLATE, h->element[7]->str, NULL));
            if (n && n->type == REDIS_REPLY_STRING)
                util_strlcpy(tname, n->str, sizeof tname);
            if (n)
                freeReplyObject(n);
        }
        if (!*tname && h->element[7]->type == REDIS_REPLY_STRING)
            util_strlcpy(tname, h->element[7]->str, sizeof tname);
        charge_flavor_t flavor = { .vcpus = s_num(h->element[8]),
                                   .ram_mb = s_num(h->element[9]),
                                   .disk_gb = s_num(h->element[10]),
                                   .template_name = tname };
        memset(days.exact, 0, (size_t)days.n * sizeof *days.exact);
        memset(days.compute_ms, 0, (size_t)days.n * sizeof *days.compute_ms);
        memset(days.disk_ms, 0, (size_t)days.n * sizeof *days.disk_ms);
        s_vm_t v = { .cards = cards,
                     .flavor = &flavor,
                     .from = from_ms,
                     .until = until,
                     .days = &days,
                     .steps = by_reservation ? &steps : NULL };
        s_walk(&v, h);
        if (steps.failed)
            rc = error_set(error, "INTERNAL", "out of memory");
        /* A reservation-based group's VM lines carry their times (amount 0): what the
           group pays is its own lines below. */
        const char *owner = h->element[6]->type == REDIS_REPLY_STRING ? h->element[6]->str : "";
        for (int d = 0; rc == 0 && d < days.n; d++)
            if (days.disk_ms[d] || days.exact[d])
                rc = s_line(report, max_lines, days.first_day + d * CHARGE_DAY_MS, vm->str, owner,
                            tname, "", days.exact[d], days.compute_ms[d], days.disk_ms[d], error);
        freeReplyObject(h);
    }
    freeReplyObject(vms);
    s_reserved_t *log = NULL;
    size_t n_log = 0;
    if (rc == 0 && by_reservation && !only_vm &&
        (rc = s_reservation_log(store, group, &log, &n_log, error)) == 0) {
        s_sweep(cards, &steps, log, n_log, &days, from_ms, until, &group_days[0], &group_days[1]);
        static const char *const kinds[2] = { "reserved", "beyond" };
        for (int d = 0; rc == 0 && d < days.n; d++)
            for (int k = 0; rc == 0 && k < 2; k++)
                if (group_days[k].exact[d] || group_days[k].compute_ms[d] ||
                    group_days[k].disk_ms[d])
                    rc = s_line(report, max_lines, days.first_day + d * CHARGE_DAY_MS, "", "", "",
                                kinds[k], group_days[k].exact[d], group_days[k].compute_ms[d],
                                group_days[k].disk_ms[d], error);
    }
    free(log);
    free(steps.v);
    for (int k = 0; k < 2; k++) {
        free(group_days[k].exact);
        free(group_days[k].compute_ms);
        free(group_days[k].disk_ms);
    }
    rates_list_free(&cards);
    free(days.exact);
    free(days.compute_ms);
    free(days.disk_ms);
    if (rc != 0) {
        if (report)
            berth__chargeback_report__free_unpacked(report, NULL);
        return -1;
    }
    qsort(report->lines, report->n_lines, sizeof *report->lines, charge_line_order);
    *out = report;
    return 0;
}
