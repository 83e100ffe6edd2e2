/*  ledger: closed months and adjustments (see ledger.h).

    berth:charge-closed:{<group>}: "<YYYY-MM>" -> {"closed_ms", "total", "lines": [[day, vm,
    kind, owner, template, amount, compute_ms, disk_ms], ...]}, the month's lines as closed;
    "<YYYY-MM>:booked" -> {"<vm>|<kind>": amount}, what its lines and its adjustments come to
    per VM and kind; "<YYYY-MM>:version", bumped by each booking.
    berth:charge-adjust:{<group>}: "<at_ms>|<YYYY-MM>|<vm>|<kind>" -> {"amount", "owner",
    "template"}, an adjustment of the month booked at at_ms. */
#include "ledger.h"
#include "charge.h"
#include "clock.h"
#include "keys.h"
#include "log.h"
#include "model.h"
#include "util.h"

#include <assert.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_DAY_MS INT64_C(86400000)

/* Unix ms of a "YYYY-MM-DD" day's start, or -1. */
static int64_t s_day_ms(const char *day)
{
    struct tm tm = { 0 };
    char extra;
    if (sscanf(day, "%4d-%2d-%2d%c", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &extra) != 3)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm) * 1000;
}

static const char *s_str(json_t *array, size_t i)
{
    const char *s = json_string_value(json_array_get(array, i));
    return s ? s : "";
}

static int64_t s_int(json_t *array, size_t i)
{
    return json_integer_value(json_array_get(array, i));
}

#define S_MONTHS_MAX 64 /* months one report may touch (the gateway allows 366 days) */

/* The months [from, until) touches, and what berth:charge-closed holds for each (a string:
   its closed lines; nil: open): names[0..*n) and the HMGET reply (caller frees), only those
   fields read however many months the group has closed. NULL when Redis failed, or with
   *n = 0 when the window touches more than S_MONTHS_MAX months. */
static redisReply *s_closed_months(store_t *store, const char *group, int64_t from, int64_t until,
                                   char names[S_MONTHS_MAX][8], size_t *n)
{
    *n = 0;
    for (int64_t start = clock_month(from, NULL); start < until;
         start = clock_month(start + 32 * S_DAY_MS, NULL)) {
        if (*n == S_MONTHS_MAX) {
            *n = 0;
            return NULL;
        }
        clock_month(start, names[(*n)++]);
    }
    char key[KEYS_MAX];
    const char *argv[S_MONTHS_MAX + 2] = { "HMGET",
                                           keys_build(key, KEYS_CHARGE_CLOSED, group, NULL) };
    for (size_t i = 0; i < *n; i++)
        argv[2 + i] = names[i];
    if (*n == 0) { /* an empty window: one field that is never a month, read as open */
        names[0][0] = '\0';
        argv[2] = "";
        *n = 1;
    }
    redisReply *r = store_commandv(store, (int)(2 + *n), argv, NULL);
    if (r && (r->type != REDIS_REPLY_ARRAY || r->elements != *n)) {
        freeReplyObject(r);
        r = NULL;
    }
    return r;
}

/* What a month's field of berth:charge-closed holds (NULL: the month is open). */
static const redisReply *s_closed(const redisReply *closed, char names[][8], size_t n,
                                  const char *month)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], month) == 0 && closed->element[i]->type == REDIS_REPLY_STRING)
            return closed->element[i];
    return NULL;
}

static redisReply *s_hgetall(store_t *store, keys_kind_t kind, const char *group)
{
    char key[KEYS_MAX];
    redisReply *r = store_command(store, "HGETALL %s", keys_build(key, kind, group, NULL));
    if (r && r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        r = NULL;
    }
    return r;
}

int ledger_report(store_t *store, const char *group, const char *only_vm, int64_t from_ms,
                  int64_t to_ms, int64_t now_ms, int max_vms, int max_lines,
                  Berth__ChargebackReport **out, berth_error_t *error)
{
    Berth__ChargebackReport *r = NULL;
    if (charge_live(store, group, only_vm, from_ms, to_ms, now_ms, max_vms, max_lines, &r, error) !=
        0)
        return -1;
    int64_t until = to_ms < now_ms ? to_ms : now_ms;
    char names[S_MONTHS_MAX][8];
    size_t n_months = 0;
    redisReply *closed = s_closed_months(store, group, from_ms, until, names, &n_months);
    redisReply *adjust = closed ? s_hgetall(store, KEYS_CHARGE_ADJUST, group) : NULL;
    if (!closed || !adjust) {
        if (closed)
            freeReplyObject(closed);
        berth__chargeback_report__free_unpacked(r, NULL);
        if (closed || n_months) /* Redis failed */
            return error_set(error, "UNAVAILABLE", "state store unreachable");
        error_set(error, "BAD_REQUEST", "the window spans more than %d months: narrow from..to",
                  S_MONTHS_MAX);
        return error_detail(error, "field", "to");
    }
    size_t cap = r->n_lines + 1;
    for (size_t i = 0; i < closed->elements; i++)
        cap += closed->element[i]->len / 16 + 1; /* a line takes more than 16 bytes */
    cap += adjust->elements / 2;
    Berth__ChargeLine **lines = calloc(cap, sizeof *lines);
    size_t n = 0;
    int rc = lines ? 0 : error_set(error, "INTERNAL", "out of memory");
    /* Open days as priced now; a closed month's from its closed lines. */
    for (size_t i = 0; i < r->n_lines; i++) {
        char month[8];
        snprintf(month, sizeof month, "%.7s", r->lines[i]->day);
        if (rc == 0 && !s_closed(closed, names, n_months, month)) {
            lines[n++] = r->lines[i];
            r->lines[i] = NULL;
        } else
            berth__charge_line__free_unpacked(r->lines[i], NULL);
    }
    for (size_t i = 0; rc == 0 && i < closed->elements; i++) {
        const redisReply *v = closed->element[i];
        if (v->type != REDIS_REPLY_STRING)
            continue; /* open */
        json_t *month = json_loads(v->str, 0, NULL);
        size_t k;
        json_t *l;
        json_array_foreach(json_object_get(month, "lines"), k, l)
        {
            int64_t day = s_day_ms(s_str(l, 0));
            if (day < from_ms || day >= until || (only_vm && strcmp(s_str(l, 1), only_vm) != 0))
                continue;
            if (n >= cap ||
                !(lines[n] = charge_line_new(day, s_str(l, 1), s_str(l, 3), s_str(l, 4),
                                             s_str(l, 2), s_int(l, 5), s_int(l, 6), s_int(l, 7)))) {
                rc = error_set(error, "INTERNAL", "cannot read a closed month's lines");
                break;
            }
            n++;
        }
        json_decref(month);
    }
    /* Adjustments booked in the window, on the day they were booked. */
    for (size_t i = 0; rc == 0 && i + 1 < adjust->elements; i += 2) {
        const redisReply *f = adjust->element[i], *v = adjust->element[i + 1];
        char at_text[24], month[8], vm[80], kind[24] = ""; /* a VM's own kind is "" */
        int64_t at = 0;
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
            sscanf(f->str, "%23[0-9]|%7[0-9-]|%79[^|]|%23s", at_text, month, vm, kind) < 3 ||
            util_parse_int(at_text, 0, INT64_MAX, &at) != 0 || at < from_ms || at >= until ||
            (only_vm && strcmp(vm, only_vm) != 0))
            continue;
        json_t *a = json_loads(v->str, 0, NULL);
        const char *owner = json_string_value(json_object_get(a, "owner"));
        const char *tname = json_string_value(json_object_get(a, "template"));
        if (n >= cap ||
            !(lines[n] = charge_line_new(at, strcmp(vm, "-") ? vm : "", owner, tname, "adjustment",
                                         json_integer_value(json_object_get(a, "amount")), 0, 0)))
            rc = error_set(error, "INTERNAL", "out of memory");
        else
            n++;
        json_decref(a);
    }
    freeReplyObject(closed);
    freeReplyObject(adjust);
    if (rc == 0 && n > (size_t)max_lines) {
        rc = error_set(error, "BAD_REQUEST",
                       "the report would hold more than %d lines: narrow from..to", max_lines);
        error_detail(error, "field", "to");
    }
    free(r->lines);
    r->lines = lines;
    r->n_lines = lines ? n : 0;
    if (rc != 0) {
        berth__chargeback_report__free_unpacked(r, NULL);
        return -1;
    }
    r->total = 0;
    for (size_t i = 0; i < n; i++)
        r->total += lines[i]->amount;
    qsort(lines, n, sizeof *lines, charge_line_order);
    *out = r;
    return 0;
}

/* "<vm>|<kind>" of a line, "-" for the group's own (vm ""). */
static void s_line_key(char *key, size_t size, const char *vm, const char *kind)
{
    snprintf(key, size, "%s|%s", *vm ? vm : "-", kind);
}

/* The month's lines as closed: {"closed_ms", "total", "lines": [...]}. */
static json_t *s_closed_json(const Berth__ChargebackReport *r, int64_t now_ms)
{
    json_t *lines = json_array();
    for (size_t i = 0; lines && i < r->n_lines; i++) {
        const Berth__ChargeLine *l = r->lines[i];
        json_array_append_new(lines, json_pack("[s, s, s, s, s, I, I, I]", l->day, l->vm, l->kind,
                                               l->owner, l->template_, (json_int_t)l->amount,
                                               (json_int_t)l->compute_ms, (json_int_t)l->disk_ms));
    }
    return json_pack("{s:I, s:I, s:o}", "closed_ms", (json_int_t)now_ms, "total",
                     (json_int_t)r->total, "lines", lines);
}

/* Close month (starting at start, ending at end) of group: its lines now, written once. */
static int s_close(store_t *store, const char *group, const char *month, int64_t start, int64_t end,
                   int64_t now_ms, const ledger_limits_t *limits, berth_error_t *error)
{
    Berth__ChargebackReport *r = NULL;
    if (charge_live(store, group, NULL, start, end, now_ms, limits->max_vms, limits->max_lines, &r,
                    error) != 0)
        return -1;
    json_t *j = s_closed_json(r, now_ms);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    json_t *booked = json_object();
    for (size_t i = 0; booked && i < r->n_lines; i++) {
        char k[128];
        s_line_key(k, sizeof k, r->lines[i]->vm, r->lines[i]->kind);
        json_object_set_new(
            booked, k,
            json_integer(json_integer_value(json_object_get(booked, k)) + r->lines[i]->amount));
    }
    char *booked_text = booked ? json_dumps(booked, JSON_COMPACT) : NULL;
    json_decref(booked);
    char key[KEYS_MAX], field[32], total[24], at[24];
    keys_build(key, KEYS_CHARGE_CLOSED, group, NULL);
    snprintf(total, sizeof total, "%" PRId64, r->total);
    snprintf(at, sizeof at, "%" PRId64, now_ms);
    berth__chargeback_report__free_unpacked(r, NULL);
    model_tx_t *tx = text && booked_text ? model_tx_new() : NULL;
    int rc = -1;
    if (tx) {
        model_tx_check(tx, key, month, "");
        model_tx_hset(tx, key, month, text);
        snprintf(field, sizeof field, "%s:booked", month);
        model_tx_hset(tx, key, field, booked_text);
        snprintf(field, sizeof field, "%s:version", month);
        model_tx_hset(tx, key, field, "1");
        model_tx_event(tx, "chargeback.closed", "key", key, "group", group, "month", month, "total",
                       total, "at_ms", at, NULL);
        rc = model_tx_commit(tx, store, NULL);
        model_tx_destroy(&tx);
    }
    free(text);
    free(booked_text);
    if (rc == MODEL_CONFLICT)
        return 0; /* another meter closed it */
    if (rc != 0)
        return error_set(error, "UNAVAILABLE", "cannot close %s: state store unreachable", month);
    log_info(NULL, "month closed", "{s:s, s:s, s:s}", "group", group, "month", month, "total",
             total);
    return 0;
}

/* Book what month (closed) now prices to beyond what is booked for it, per VM and kind. */
static int s_adjust(store_t *store, const char *group, const char *month, int64_t start,
                    int64_t end, const char *booked_text, const char *version, int64_t now_ms,
                    const ledger_limits_t *limits, berth_error_t *error)
{
    Berth__ChargebackReport *r = NULL;
    if (charge_live(store, group, NULL, start, end, now_ms, limits->max_vms, limits->max_lines, &r,
                    error) != 0)
        return -1;
    json_t *booked = json_loads(booked_text ? booked_text : "{}", 0, NULL);
    json_t *live = json_object(), *who = json_object();
    if (!json_is_object(booked)) {
        json_decref(booked);
        booked = json_object();
    }
    for (size_t i = 0; live && who && i < r->n_lines; i++) {
        const Berth__ChargeLine *l = r->lines[i];
        char k[128];
        s_line_key(k, sizeof k, l->vm, l->kind);
        json_object_set_new(live, k,
                            json_integer(json_integer_value(json_object_get(live, k)) + l->amount));
        json_object_set_new(who, k, json_pack("[s, s]", l->owner, l->template_));
    }
    berth__chargeback_report__free_unpacked(r, NULL);
    /* Every key either side has. */
    const char *k;
    json_t *v;
    json_object_foreach(booked, k, v)
    {
        if (!json_object_get(live, k))
            json_object_set_new(live, k, json_integer(0));
    }
    char key[KEYS_MAX], akey[KEYS_MAX], field[160], at[24], sum_text[24];
    keys_build(key, KEYS_CHARGE_CLOSED, group, NULL);
    keys_build(akey, KEYS_CHARGE_ADJUST, group, NULL);
    snprintf(at, sizeof at, "%" PRId64, now_ms);
    model_tx_t *tx = model_tx_new();
    int64_t sum = 0, n = 0;
    json_object_foreach(live, k, v)
    {
        int64_t delta = json_integer_value(v) - json_integer_value(json_object_get(booked, k));
        if (!delta || !tx)
            continue;
        json_object_set_new(booked, k, json_integer(json_integer_value(v)));
        json_t *w = json_object_get(who, k);
        json_t *a = json_pack("{s:I, s:s, s:s}", "amount", (json_int_t)delta, "owner", s_str(w, 0),
                              "template", s_str(w, 1));
        char *a_text = a ? json_dumps(a, JSON_COMPACT) : NULL;
        json_decref(a);
        const char *bar = strchr(k, '|');
        snprintf(field, sizeof field, "%s|%s|%.*s|%s", at, month, (int)(bar ? bar - k : 0), k,
                 bar ? bar + 1 : "");
        model_tx_hset(tx, akey, field, a_text ? a_text : "{}");
        free(a_text);
        sum += delta;
        n++;
    }
    char *booked_out = json_dumps(booked, JSON_COMPACT);
    json_decref(booked);
    json_decref(live);
    json_decref(who);
    int rc = 0;
    if (!tx || !booked_out)
        rc = error_set(error, "INTERNAL", "out of memory");
    else if (n > 0) {
        int64_t v_now = 0;
        util_parse_int(version ? version : "0", 0, INT64_MAX, &v_now);
        char v_next[24];
        snprintf(v_next, sizeof v_next, "%" PRId64, v_now + 1);
        snprintf(field, sizeof field, "%s:version", month);
        model_tx_check(tx, key, field, version ? version : "");
        model_tx_hset(tx, key, field, v_next);
        snprintf(field, sizeof field, "%s:booked", month);
        model_tx_hset(tx, key, field, booked_out);
        snprintf(sum_text, sizeof sum_text, "%" PRId64, sum);
        model_tx_event(tx, "chargeback.adjusted", "key", akey, "group", group, "month", month,
                       "amount", sum_text, "at_ms", at, NULL);
        int c = model_tx_commit(tx, store, NULL);
        if (c != 0 && c != MODEL_CONFLICT) /* conflict: another meter booked it */
            rc = error_set(error, "UNAVAILABLE", "cannot book an adjustment");
        else if (c == 0)
            log_info(NULL, "late charges booked as adjustments", "{s:s, s:s, s:I, s:I}", "group",
                     group, "month", month, "amount", (json_int_t)sum, "lines", (json_int_t)n);
    }
    model_tx_destroy(&tx);
    free(booked_out);
    return rc;
}

int ledger_group(store_t *store, const char *group, int64_t now_ms, const ledger_limits_t *limits,
                 berth_error_t *error)
{
    assert(store && group && limits);
    char current[8], month[8], key[KEYS_MAX], booked_field[32], version_field[32];
    int64_t end = clock_month(now_ms, current);
    if (now_ms < end + limits->close_ms)
        return 0;
    int64_t start = clock_month(end - 1, month);
    snprintf(booked_field, sizeof booked_field, "%s:booked", month);
    snprintf(version_field, sizeof version_field, "%s:version", month);
    redisReply *r =
        store_command(store, "HMGET %s %s %s %s", keys_build(key, KEYS_CHARGE_CLOSED, group, NULL),
                      month, booked_field, version_field);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
        if (r)
            freeReplyObject(r);
        return error_set(error, "UNAVAILABLE", "state store unreachable");
    }
    int rc;
    if (r->element[0]->type != REDIS_REPLY_STRING)
        rc = s_close(store, group, month, start, end, now_ms, limits, error);
    else
        rc = s_adjust(store, group, month, start, end,
                      r->element[1]->type == REDIS_REPLY_STRING ? r->element[1]->str : NULL,
                      r->element[2]->type == REDIS_REPLY_STRING ? r->element[2]->str : NULL, now_ms,
                      limits, error);
    freeReplyObject(r);
    return rc;
}

int ledger_tick(store_t *store, int64_t now_ms, const ledger_limits_t *limits)
{
    redisReply *ids = store_command(store, "ZRANGE %s 0 -1", KEYS_GROUPS);
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
        if (ledger_group(store, id->str, now_ms, limits, &error) == 0 ||
            strcmp(error.code, "NOT_FOUND") == 0) /* deleted since the ids were read */
            continue;
        log_warn(NULL, "cannot close or adjust a group's month", "{s:s, s:s}", "group", id->str,
                 "reason", error.message);
        failed++;
    }
    freeReplyObject(ids);
    return failed;
}
