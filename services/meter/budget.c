/*  budget: budgets as Budget hashes (berth:budget:{<group>}), the groups that have one in
    berth:budgets, and each month's alerts in berth:budget-alerts:{<group>} (see budget.h).

    A look prices the month so far with charge_report (the same lines a report shows, so a
    budget and the chargeback never disagree) and writes month, spent, checked_ms and blocked.
    An alert is written in a transaction that checks its field is absent, with its event: of
    several meters looking at once, exactly one raises it. */
#include "budget.h"
#include "charge.h"
#include "ledger.h"
#include "clock.h"
#include "keys.h"
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

/* The budget's own rules: BAD_REQUEST naming the field, or 0. */
static int s_check(const Berth__Budget *b, berth_error_t *error)
{
    if (b->amount < 1 || b->amount > LIMIT_BUDGET_AMOUNT_MAX)
        return error_field(error, "amount", "amount must be 1 to %lld minor units",
                           (long long)LIMIT_BUDGET_AMOUNT_MAX);
    if (b->n_thresholds > LIMIT_BUDGET_THRESHOLDS_MAX)
        return error_field(error, "thresholds", "a budget has at most %d thresholds",
                           LIMIT_BUDGET_THRESHOLDS_MAX);
    for (size_t i = 0; i < b->n_thresholds; i++) {
        if (b->thresholds[i] < 1 || b->thresholds[i] > LIMIT_BUDGET_THRESHOLD_MAX)
            return error_field(error, "thresholds", "thresholds[%zu] must be 1 to %d (percent)", i,
                               LIMIT_BUDGET_THRESHOLD_MAX);
        if (i > 0 && b->thresholds[i] <= b->thresholds[i - 1])
            return error_field(error, "thresholds", "thresholds must be ascending, each once");
    }
    return 0;
}

/* The stored budget of group: 0 and *out, or -1 with error (NOT_FOUND, UNAVAILABLE). */
static int s_load(store_t *store, const char *group, Berth__Budget **out, berth_error_t *error)
{
    char key[KEYS_MAX];
    ProtobufCMessage *m = NULL;
    int rc = model_load(store, &berth__budget__descriptor,
                        keys_build(key, KEYS_BUDGET, group, NULL), &m);
    if (rc == MODEL_NOT_FOUND)
        return error_set(error, "NOT_FOUND", "the group has no budget");
    if (rc != 0)
        return error_set(error, "UNAVAILABLE", "state store unreachable");
    *out = (Berth__Budget *)m;
    return 0;
}

int budget_set(store_t *store, const Berth__Budget *b, int64_t version, const char *actor,
               int64_t now_ms, const budget_limits_t *limits, Berth__Budget **out,
               berth_error_t *error)
{
    assert(store && limits && out);
    if (!b)
        return error_field(error, "budget", "a budget is required");
    if (!b->group || !util_is_uuid(b->group))
        return error_field(error, "group", "group must be a group id");
    if (s_check(b, error) != 0)
        return -1;
    char key[KEYS_MAX], gkey[KEYS_MAX], akey[KEYS_MAX], v[24], at[24];
    keys_build(gkey, KEYS_GROUP, b->group, NULL);
    keys_build(akey, KEYS_BUDGET_ALERTS, b->group, NULL);
    redisReply *r = store_command(store, "EXISTS %s", gkey);
    int exists = r && r->type == REDIS_REPLY_INTEGER ? (int)r->integer : -1;
    if (r)
        freeReplyObject(r);
    if (exists < 0)
        return error_set(error, "UNAVAILABLE", "state store unreachable");
    if (!exists)
        return error_set(error, "NOT_FOUND", "no such group");
    keys_build(key, KEYS_BUDGET, b->group, NULL);
    Berth__Budget *old = NULL;
    berth_error_t ignored = { 0 };
    if (s_load(store, b->group, &old, &ignored) != 0 && strcmp(ignored.code, "NOT_FOUND") != 0)
        return error_set(error, "UNAVAILABLE", "state store unreachable");
    int64_t stored = old ? old->version : 0;
    int64_t old_amount = old ? old->amount : 0;
    if (old)
        berth__budget__free_unpacked(old, NULL);
    if (version && version != stored)
        return error_set(error, "CONFLICT", "the budget changed meanwhile: read it again");

    Berth__Budget after = *b;
    after.group = b->group;
    after.updated_ms = now_ms;
    after.updated_by = (char *)(actor ? actor : "");
    after.version = stored + 1;
    after.n_alerts = 0;
    after.alerts = NULL;
    after.currency = (char *)"";
    snprintf(v, sizeof v, "%" PRId64, after.version);
    snprintf(at, sizeof at, "%" PRId64, now_ms);
    model_tx_t *tx = model_tx_new();
    if (!tx)
        return error_set(error, "INTERNAL", "out of memory");
    model_tx_check_version(tx, key, stored);
    model_tx_check(tx, gkey, "id", b->group);
    if (stored) {
        model_tx_put_fields(tx, key, &after.base, "amount", "thresholds", "hard_stop", "updated_ms",
                            "updated_by", NULL);
        model_tx_hset(tx, key, "version", v);
    } else {
        after.month = (char *)"";
        after.blocked = (char *)"";
        model_tx_put(tx, key, &after.base);
    }
    /* A new amount is a new budget: its thresholds are reached afresh. */
    if (b->amount != old_amount)
        model_tx_del(tx, akey);
    model_tx_sadd(tx, KEYS_BUDGETS, b->group);
    model_tx_event(tx, "budget.set", "key", key, "group", b->group, "actor", after.updated_by,
                   "version", v, "at_ms", at, NULL);
    model_tx_actor(tx, after.updated_by, NULL);
    const char *why = NULL;
    int rc = model_tx_commit(tx, store, &why);
    model_tx_destroy(&tx);
    if (rc == MODEL_CONFLICT)
        return error_set(error, "CONFLICT", "the budget or its group changed meanwhile: %s",
                         why ? why : "read it again");
    if (rc != 0)
        return error_set(error, "UNAVAILABLE", "cannot store the budget: %s",
                         why ? why : "state store unreachable");
    /* The month as the new budget sees it: blocked or not from now, not from the next tick. */
    berth_error_t look = { 0 };
    if (budget_look(store, b->group, now_ms, limits, &look) != 0)
        log_warn(NULL, "cannot look at the budget's month yet", "{s:s, s:s}", "group", b->group,
                 "reason", look.message);
    return budget_get(store, b->group, now_ms, out, error);
}

int budget_clear(store_t *store, const char *group, int64_t version, const char *actor,
                 berth_error_t *error)
{
    assert(store);
    if (!group || !util_is_uuid(group))
        return error_field(error, "group", "group must be a group id");
    Berth__Budget *old = NULL;
    if (s_load(store, group, &old, error) != 0)
        return strcmp(error->code, "NOT_FOUND") == 0 ? 0 : -1; /* none: nothing to remove */
    int64_t stored = old->version;
    berth__budget__free_unpacked(old, NULL);
    if (version && version != stored)
        return error_set(error, "CONFLICT", "the budget changed meanwhile: read it again");
    char key[KEYS_MAX], akey[KEYS_MAX], at[24];
    keys_build(key, KEYS_BUDGET, group, NULL);
    keys_build(akey, KEYS_BUDGET_ALERTS, group, NULL);
    snprintf(at, sizeof at, "%" PRId64, clock_now_ms());
    model_tx_t *tx = model_tx_new();
    if (!tx)
        return error_set(error, "INTERNAL", "out of memory");
    model_tx_check_version(tx, key, stored);
    model_tx_del(tx, key);
    model_tx_del(tx, akey);
    model_tx_srem(tx, KEYS_BUDGETS, group);
    model_tx_event(tx, "budget.cleared", "key", key, "group", group, "actor", actor ? actor : "",
                   "at_ms", at, NULL);
    model_tx_actor(tx, actor, NULL);
    const char *why = NULL;
    int rc = model_tx_commit(tx, store, &why);
    model_tx_destroy(&tx);
    if (rc == MODEL_CONFLICT)
        return error_set(error, "CONFLICT", "the budget changed meanwhile: read it again");
    if (rc != 0)
        return error_set(error, "UNAVAILABLE", "cannot remove the budget: %s",
                         why ? why : "state store unreachable");
    return 0;
}

/* The month's alerts of the group (fields "<month>:<threshold>") into b->alerts. */
static int s_alerts(store_t *store, Berth__Budget *b, const char *month, berth_error_t *error)
{
    char key[KEYS_MAX];
    redisReply *r =
        store_command(store, "HGETALL %s", keys_build(key, KEYS_BUDGET_ALERTS, b->group, NULL));
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return error_set(error, "UNAVAILABLE", "state store unreachable");
    }
    size_t len = strlen(month);
    for (size_t i = 0; i < b->n_alerts; i++) /* as stored: none, the hash is the record */
        berth__budget_alert__free_unpacked(b->alerts[i], NULL);
    free(b->alerts);
    b->n_alerts = 0;
    b->alerts = calloc(r->elements / 2 + 1, sizeof *b->alerts);
    int rc = b->alerts ? 0 : error_set(error, "INTERNAL", "out of memory");
    for (size_t i = 0; rc == 0 && i + 1 < r->elements; i += 2) {
        const redisReply *f = r->element[i], *v = r->element[i + 1];
        int64_t threshold = 0;
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
            strncmp(f->str, month, len) != 0 || f->str[len] != ':' ||
            util_parse_int(f->str + len + 1, 1, LIMIT_BUDGET_THRESHOLD_MAX, &threshold) != 0)
            continue;
        json_t *j = json_loads(v->str, 0, NULL);
        Berth__BudgetAlert *a = malloc(sizeof *a);
        if (!a) {
            json_decref(j);
            rc = error_set(error, "INTERNAL", "out of memory");
            break;
        }
        berth__budget_alert__init(a);
        a->threshold = (int32_t)threshold;
        a->at_ms = json_integer_value(json_object_get(j, "at_ms"));
        a->spent = json_integer_value(json_object_get(j, "spent"));
        json_decref(j);
        /* In threshold order. */
        size_t at = b->n_alerts;
        while (at > 0 && b->alerts[at - 1]->threshold > a->threshold) {
            b->alerts[at] = b->alerts[at - 1];
            at--;
        }
        b->alerts[at] = a;
        b->n_alerts++;
    }
    freeReplyObject(r);
    return rc;
}

/* Put a copy of value in a loaded message's string field (NULL when out of memory). */
static void s_replace(char **slot, const char *value)
{
    if (*slot != protobuf_c_empty_string)
        free(*slot);
    *slot = strdup(value);
}

int budget_get(store_t *store, const char *group, int64_t now_ms, Berth__Budget **out,
               berth_error_t *error)
{
    assert(store && out);
    if (!group || !util_is_uuid(group))
        return error_field(error, "group", "group must be a group id");
    Berth__Budget *b = NULL;
    if (s_load(store, group, &b, error) != 0)
        return -1;
    char month[8];
    clock_month(now_ms, month);
    /* A look from an earlier month says nothing of this one. */
    if (!b->month || strcmp(b->month, month) != 0) {
        s_replace(&b->month, month);
        s_replace(&b->blocked, "");
        b->spent = 0;
        b->checked_ms = 0;
    }
    Berth__RateCardList *cards = NULL;
    int rc = rates_list(store, &cards, error);
    if (rc == 0) {
        s_replace(&b->currency, cards->n_cards ? cards->cards[0]->currency : "");
        rates_list_free(&cards);
        rc = s_alerts(store, b, month, error);
    }
    if (rc == 0 && (!b->month || !b->blocked || !b->currency))
        rc = error_set(error, "INTERNAL", "out of memory");
    if (rc != 0) {
        berth__budget__free_unpacked(b, NULL);
        return -1;
    }
    *out = b;
    return 0;
}

/* Raise the alert for threshold t of month once: 1 raised now, 0 already raised, -1 Redis. */
static int s_alert(store_t *store, const Berth__Budget *b, const char *month, int32_t t,
                   int64_t spent, int64_t now_ms)
{
    char key[KEYS_MAX], field[24], th[16], sp[24], amount[24], at[24];
    keys_build(key, KEYS_BUDGET_ALERTS, b->group, NULL);
    snprintf(field, sizeof field, "%s:%d", month, t);
    snprintf(th, sizeof th, "%d", t);
    snprintf(sp, sizeof sp, "%" PRId64, spent);
    snprintf(amount, sizeof amount, "%" PRId64, b->amount);
    snprintf(at, sizeof at, "%" PRId64, now_ms);
    json_t *j = json_pack("{s:I, s:I}", "at_ms", (json_int_t)now_ms, "spent", (json_int_t)spent);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    model_tx_t *tx = text ? model_tx_new() : NULL;
    if (!tx) {
        free(text);
        return -1;
    }
    model_tx_check(tx, key, field, "");
    model_tx_hset(tx, key, field, text);
    model_tx_event(tx, "budget.threshold", "key", key, "group", b->group, "month", month,
                   "threshold", th, "spent", sp, "amount", amount, "hard_stop",
                   b->hard_stop ? "1" : "0", "at_ms", at, NULL);
    int rc = model_tx_commit(tx, store, NULL);
    model_tx_destroy(&tx);
    free(text);
    if (rc == MODEL_CONFLICT)
        return 0;
    return rc == 0 ? 1 : -1;
}

int budget_look(store_t *store, const char *group, int64_t now_ms, const budget_limits_t *limits,
                berth_error_t *error)
{
    assert(store && limits);
    Berth__Budget *b = NULL;
    if (s_load(store, group, &b, error) != 0)
        return -1;
    char month[8], key[KEYS_MAX], sp[24], at[24];
    int64_t start = clock_month(now_ms, month);
    int64_t spent = 0;
    if (now_ms > start) {
        Berth__ChargebackReport *report = NULL;
        if (ledger_report(store, group, NULL, start, now_ms, now_ms, limits->max_vms,
                          limits->max_lines, &report, error) != 0) {
            berth__budget__free_unpacked(b, NULL);
            return -1;
        }
        spent = report->total;
        berth__chargeback_report__free_unpacked(report, NULL);
    }
    int over = (__int128)spent >= (__int128)b->amount;
    snprintf(sp, sizeof sp, "%" PRId64, spent);
    snprintf(at, sizeof at, "%" PRId64, now_ms);
    keys_build(key, KEYS_BUDGET, group, NULL);
    model_tx_t *tx = model_tx_new();
    if (!tx) {
        berth__budget__free_unpacked(b, NULL);
        return error_set(error, "INTERNAL", "out of memory");
    }
    /* Only the budget that was read: one set meanwhile is looked at by its own setter. */
    char v[24];
    snprintf(v, sizeof v, "%" PRId64, b->version);
    model_tx_check(tx, key, "version", v);
    model_tx_hset(tx, key, "month", month);
    model_tx_hset(tx, key, "spent", sp);
    model_tx_hset(tx, key, "checked_ms", at);
    model_tx_hset(tx, key, "blocked", b->hard_stop && over ? month : "");
    int rc = model_tx_commit(tx, store, NULL);
    model_tx_destroy(&tx);
    if (rc < 0) {
        berth__budget__free_unpacked(b, NULL);
        return error_set(error, "UNAVAILABLE", "state store unreachable");
    }
    if (rc == MODEL_CONFLICT) {
        berth__budget__free_unpacked(b, NULL);
        return 0; /* set or cleared meanwhile: its setter looks at it */
    }
    /* spent * 100 >= amount * t, in 128 bits (both may be near their limits). */
    for (size_t i = 0; rc == 0 && i < b->n_thresholds; i++) {
        if ((__int128)spent * 100 < (__int128)b->amount * b->thresholds[i])
            break; /* ascending: none after it is reached either */
        int raised = s_alert(store, b, month, b->thresholds[i], spent, now_ms);
        if (raised < 0) {
            rc = error_set(error, "UNAVAILABLE", "state store unreachable");
            break;
        }
        if (raised)
            log_info(NULL, "budget threshold reached", "{s:s, s:s, s:i, s:I, s:I}", "group", group,
                     "month", month, "threshold", b->thresholds[i], "spent", (json_int_t)spent,
                     "amount", (json_int_t)b->amount);
    }
    berth__budget__free_unpacked(b, NULL);
    return rc == 0 ? 0 : -1;
}

int budget_look_all(store_t *store, int64_t now_ms, const budget_limits_t *limits)
{
    redisReply *ids = store_command(store, "SMEMBERS %s", KEYS_BUDGETS);
    if (!ids || ids->type != REDIS_REPLY_ARRAY) {
        if (ids)
            freeReplyObject(ids);
        return -1;
    }
    int failed = 0;
    for (size_t i = 0; i < ids->elements; i++) {
        const redisReply *id = ids->element[i];
        if (id->type != REDIS_REPLY_STRING || !util_is_uuid(id->str))
            continue;
        berth_error_t error = { 0 };
        if (budget_look(store, id->str, now_ms, limits, &error) == 0)
            continue;
        if (strcmp(error.code, "NOT_FOUND") == 0)
            continue; /* cleared since the ids were read */
        log_warn(NULL, "cannot look at a budget", "{s:s, s:s}", "group", id->str, "reason",
                 error.message);
        failed++;
    }
    freeReplyObject(ids);
    return failed;
}
