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
    again gives the same lines for a past window. */
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

typedef struct {
    const Berth__RateCardList *cards;
    const charge_flavor_t *flavor;
    int64_t from, until; /* the window, until capped at now */
    s_days_t *days;
} s_vm_t;

/* Book [start, end) in class cls: clipped to the window, split at midnights. */
static void s_book(s_vm_t *v, int cls, int64_t start, int64_t end)
{
    if (cls < 0)
        return;
    if (start < v->from)
        start = v->from;
    if (end > v->until)
        end = v->until;
    while (start < end) {
        int d = (int)((start - v->days->first_day) / CHARGE_DAY_MS);
        int64_t midnight = v->days->first_day + (int64_t)(d + 1) * CHARGE_DAY_MS;
        int64_t stop = end < midnight ? end : midnight;
        if (d >= 0 && d < v->days->n) {
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

/* The usage hash fields s_walk and the line read, in this order. */
static const char *const s_fields[] = { "events",      "base_until",     "base",   "base_disk",
                                        "base_follow", "base_disk_open", "owner",  "template",
                                        "vcpus",       "ram_mb",         "disk_gb" };
#define S_NFIELDS (sizeof s_fields / sizeof s_fields[0])

static int s_line_order(const void *a, const void *b)
{
    const Berth__ChargeLine *x = *(Berth__ChargeLine *const *)a;
    const Berth__ChargeLine *y = *(Berth__ChargeLine *const *)b;
    int c = strcmp(x->day, y->day);
    return c ? c : strcmp(x->vm, y->vm);
}

static int64_t s_num(const redisReply *r)
{
    int64_t v = 0;
    if (r->type == REDIS_REPLY_STRING && util_parse_int(r->str, 0, INT64_C(1) << 52, &v) == 0)
        return v;
    return 0;
}

static char *s_dup(const redisReply *r)
{
    return strdup(r->type == REDIS_REPLY_STRING ? r->str : "");
}

int charge_report(store_t *store, const char *group, int64_t from_ms, int64_t to_ms, int64_t now_ms,
                  int max_vms, int max_lines, Berth__ChargebackReport **out, berth_error_t *error)
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
    const char *model = g->charging_model && *g->charging_model ? g->charging_model : "allocation";
    if (strcmp(model, "allocation") != 0) {
        error_set(error, "CONFLICT",
                  "the group is charged by %s, and only allocation-based charges are reported",
                  model);
        error_detail(error, "charging_model", "%s", model);
        berth__group__free_unpacked(g, NULL);
        return -1;
    }
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
        report->currency = strdup(cards->n_cards ? cards->cards[0]->currency : "");
    }
    s_days_t days = { 0 };
    int64_t until = to_ms < now_ms ? to_ms : now_ms;
    days.first_day = from_ms - from_ms % CHARGE_DAY_MS;
    days.n = until > days.first_day ? (int)((until - days.first_day - 1) / CHARGE_DAY_MS) + 1 : 0;
    days.exact = calloc((size_t)days.n + 1, sizeof *days.exact);
    days.compute_ms = calloc((size_t)days.n + 1, sizeof *days.compute_ms);
    days.disk_ms = calloc((size_t)days.n + 1, sizeof *days.disk_ms);
    rc = 0;
    if (!report || !report->lines || !report->group || !report->charging_model ||
        !report->currency || !days.exact || !days.compute_ms || !days.disk_ms)
        rc = error_set(error, "INTERNAL", "out of memory");
    if (report) {
        report->from_ms = from_ms;
        report->to_ms = to_ms;
    }
    for (size_t i = 0; rc == 0 && i < vms->elements; i++) {
        const redisReply *vm = vms->element[i];
        if (vm->type != REDIS_REPLY_STRING || vm->len > 128)
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
        s_vm_t v = {
            .cards = cards, .flavor = &flavor, .from = from_ms, .until = until, .days = &days
        };
        s_walk(&v, h);
        for (int d = 0; rc == 0 && d < days.n; d++) {
            if (!days.disk_ms[d] && !days.exact[d])
                continue;
            if (report->n_lines >= (size_t)max_lines) {
                rc = error_set(error, "BAD_REQUEST",
                               "the report would hold more than %d lines: narrow from..to",
                               max_lines);
                error_detail(error, "field", "to");
                break;
            }
            Berth__ChargeLine *line = malloc(sizeof *line);
            char day[16];
            time_t t = (time_t)((days.first_day + d * CHARGE_DAY_MS) / 1000);
            struct tm tm;
            gmtime_r(&t, &tm);
            strftime(day, sizeof day, "%Y-%m-%d", &tm);
            if (!line) {
                rc = error_set(error, "INTERNAL", "out of memory");
                break;
            }
            berth__charge_line__init(line);
            line->day = strdup(day);
            line->vm = strdup(vm->str);
            line->owner = s_dup(h->element[6]);
            line->template_ = strdup(tname);
            line->amount = charge_round(days.exact[d]);
            line->compute_ms = days.compute_ms[d];
            line->disk_ms = days.disk_ms[d];
            report->lines[report->n_lines++] = line;
            report->total += line->amount;
            if (!line->day || !line->vm || !line->owner || !line->template_)
                rc = error_set(error, "INTERNAL", "out of memory");
        }
        freeReplyObject(h);
    }
    freeReplyObject(vms);
    rates_list_free(&cards);
    free(days.exact);
    free(days.compute_ms);
    free(days.disk_ms);
    if (rc != 0) {
        if (report)
            berth__chargeback_report__free_unpacked(report, NULL);
        return -1;
    }
    qsort(report->lines, report->n_lines, sizeof *report->lines, s_line_order);
    *out = report;
    return 0;
}
