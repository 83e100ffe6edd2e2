/*  charge: rate cards and chargeback reports, both the meter's (over the bus). The gateway
    checks the shape of what a client sends and groups the meter's (VM, day) lines into the
    rows a client asks for (by day, month, VM or user), as JSON or CSV; every grouping is a
    sum of the same integer lines, so their totals agree to the minor unit. */
#include "gateway.h"
#include "clock.h"

#include <inttypes.h>
#include <microhttpd.h>
#include <stdio.h>
#include <string.h>

/* The factor names of a card's body, with their proto fields. */
static const char *const s_factors[] = { "running", "stopped", "shelved", "expired", NULL };

static json_t *s_card_view(const Berth__RateCard *c)
{
    json_t *templates = json_object();
    for (size_t i = 0; templates && i < c->n_templates; i++)
        json_object_set_new(templates, c->templates[i]->template_,
                            json_integer(c->templates[i]->per_day));
    return json_pack(
        "{s:s, s:o, s:I, s:s, s:I, s:I, s:I, s:o, s:{s:i, s:i, s:i, s:i}, s:o, "
        "s:o, s:o}",
        "id", c->id, "effective", rest_time(c->effective_ms), "effective_ms",
        (json_int_t)c->effective_ms, "currency", c->currency, "vcpu_hour", (json_int_t)c->vcpu_hour,
        "ram_gb_hour", (json_int_t)c->ram_gb_hour, "disk_gb_hour", (json_int_t)c->disk_gb_hour,
        "templates", templates, "factors", "running", c->factor_running, "stopped",
        c->factor_stopped, "shelved", c->factor_shelved, "expired", c->factor_expired, "created",
        rest_time(c->created_ms), "created_by", view_str(c->created_by), "note", view_str(c->note));
}

static void s_card_made(http_req_t *req, ProtobufCMessage *answer)
{
    const Berth__RateCard *c = (const Berth__RateCard *)answer;
    snprintf(req->location, sizeof req->location, "/v1/rates/%s", c->id);
    http_json(req, 201, json_pack("{s:o}", "rate", s_card_view(c)));
}

/* A price field of the body: 0 to LIMIT_RATE_PRICE_MAX, required. */
static int s_price(http_req_t *req, const char *field, int64_t *out)
{
    return rest_int(req, field, 1, 0, LIMIT_RATE_PRICE_MAX, out);
}

void charge_create_rate(http_req_t *req)
{
    static const char *const allowed[] = { "currency",    "effective",    "vcpu_hour",
                                           "ram_gb_hour", "disk_gb_hour", "templates",
                                           "factors",     "note",         NULL };
    const char *currency, *note = NULL;
    int64_t vcpu, ram, disk;
    if (rest_body(req, allowed) || rest_str(req, "currency", 1, 3, &currency) ||
        s_price(req, "vcpu_hour", &vcpu) || s_price(req, "ram_gb_hour", &ram) ||
        s_price(req, "disk_gb_hour", &disk) ||
        rest_str(req, "note", 0, LIMIT_RATE_NOTE_MAX, &note) < 0)
        return;
    /* effective: when the card takes effect (ISO 8601 or unix seconds); absent: now. */
    int64_t effective = 0;
    json_t *eff = json_object_get(req->body, "effective");
    if (eff && (!json_is_string(eff) || rest_parse_time(json_string_value(eff), &effective))) {
        http_bad_field(req, "effective",
                       "effective must be an ISO 8601 UTC time (2026-11-01T00:00:00Z)");
        return;
    }
    /* factors: per mille for each billing state; an absent one is 1000 (the full price). */
    int32_t factor[4] = { 1000, 1000, 1000, 1000 };
    json_t *factors = json_object_get(req->body, "factors");
    if (factors) {
        if (!json_is_object(factors)) {
            http_bad_field(req, "factors", "factors must be an object of per-mille factors");
            return;
        }
        const char *name;
        json_t *v;
        json_object_foreach(factors, name, v)
        {
            int i = 0;
            while (s_factors[i] && !streq(s_factors[i], name))
                i++;
            if (!s_factors[i]) {
                http_bad_field(req, "factors",
                               "factors takes running, stopped, shelved and expired, not '%s'",
                               name);
                return;
            }
            if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                json_integer_value(v) > LIMIT_RATE_FACTOR_MAX) {
                http_bad_field(req, "factors", "factors.%s must be an integer from 0 to %d", name,
                               LIMIT_RATE_FACTOR_MAX);
                return;
            }
            factor[i] = (int32_t)json_integer_value(v);
        }
    }
    /* templates: {name: minor units per day}. */
    json_t *templates = json_object_get(req->body, "templates");
    if (templates && !json_is_object(templates)) {
        http_bad_field(req, "templates", "templates must be an object: template name -> per day");
        return;
    }
    size_t n = json_object_size(templates);
    if (n > LIMIT_RATE_TEMPLATES_MAX) {
        http_bad_field(req, "templates", "a card prices at most %d templates",
                       LIMIT_RATE_TEMPLATES_MAX);
        return;
    }
    Berth__RateTemplatePrice prices[LIMIT_RATE_TEMPLATES_MAX];
    Berth__RateTemplatePrice *price_p[LIMIT_RATE_TEMPLATES_MAX];
    size_t k = 0;
    const char *name;
    json_t *v;
    json_object_foreach(templates, name, v)
    {
        if (strlen(name) > LIMIT_TEMPLATE_NAME_MAX || !rest_id_ok(name)) {
            http_bad_field(req, "templates", "templates: '%s' is not a template name", name);
            return;
        }
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > LIMIT_RATE_PRICE_MAX) {
            http_bad_field(req, "templates", "templates.%s must be an integer from 0 to %lld", name,
                           (long long)LIMIT_RATE_PRICE_MAX);
            return;
        }
        berth__rate_template_price__init(&prices[k]);
        prices[k].template_ = (char *)name;
        prices[k].per_day = json_integer_value(v);
        price_p[k] = &prices[k];
        k++;
    }
    Berth__RateCard card = BERTH__RATE_CARD__INIT;
    card.currency = (char *)currency;
    card.effective_ms = effective;
    card.vcpu_hour = vcpu;
    card.ram_gb_hour = ram;
    card.disk_gb_hour = disk;
    card.templates = price_p;
    card.n_templates = k;
    card.factor_running = factor[0];
    card.factor_stopped = factor[1];
    card.factor_shelved = factor[2];
    card.factor_expired = factor[3];
    card.note = (char *)(note ? note : "");
    Berth__CreateRate ask = BERTH__CREATE_RATE__INIT;
    ask.card = &card;
    ask.request_id = (char *)req->request_id;
    rest_call(req, "meter", &ask.base, &berth__rate_card__descriptor, s_card_made);
}

static void s_cards_listed(http_req_t *req, ProtobufCMessage *answer)
{
    const Berth__RateCardList *list = (const Berth__RateCardList *)answer;
    json_t *cards = json_array();
    for (size_t i = 0; cards && i < list->n_cards; i++)
        json_array_append_new(cards, s_card_view(list->cards[i]));
    http_json(req, 200, json_pack("{s:o}", "rates", cards));
}

static void s_card_got(http_req_t *req, ProtobufCMessage *answer)
{
    const Berth__RateCardList *list = (const Berth__RateCardList *)answer;
    if (list->n_cards != 1) {
        http_error(req, "NOT_FOUND", "no such rate card");
        return;
    }
    http_json(req, 200, json_pack("{s:o}", "rate", s_card_view(list->cards[0])));
}

void charge_list_rates(http_req_t *req)
{
    Berth__ListRates ask = BERTH__LIST_RATES__INIT;
    rest_call(req, "meter", &ask.base, &berth__rate_card_list__descriptor, s_cards_listed);
}

void charge_get_rate(http_req_t *req)
{
    const char *id = req->params[0];
    if (!util_is_uuid(id)) {
        http_error(req, "NOT_FOUND", "no such rate card");
        return;
    }
    Berth__ListRates ask = BERTH__LIST_RATES__INIT;
    ask.id = (char *)id;
    rest_call(req, "meter", &ask.base, &berth__rate_card_list__descriptor, s_card_got);
}

/* ---- reports ---- */

/* How a report groups the lines: the key columns of each row. */
typedef enum { S_BY_DAY, S_BY_MONTH, S_BY_VM, S_BY_USER } s_by_t;
static const char *const s_by_names[] = { "day", "month", "vm", "user", NULL };

/* The grouping ?by= asks for (checked by charge_report_get): its index in s_by_names. */
static int s_by_of(http_req_t *req)
{
    const char *text = http_query(req, "by");
    int by = 0;
    while (text && s_by_names[by] && !streq(s_by_names[by], text))
        by++;
    return s_by_names[by] ? by : -1;
}

/* Rows by VM or user tell a VM's from the group's own (reservation-based) lines by kind. */
static int s_by_kind(s_by_t by)
{
    return by == S_BY_VM || by == S_BY_USER;
}

/* A row's key for a line: what the row shows in its `by` column. */
static void s_row_key(s_by_t by, const Berth__ChargeLine *l, char *key, size_t size)
{
    switch (by) {
    case S_BY_DAY:
        snprintf(key, size, "%s", l->day);
        break;
    case S_BY_MONTH:
        snprintf(key, size, "%.7s", l->day);
        break;
    case S_BY_VM:
        snprintf(key, size, "%s", l->vm);
        break;
    case S_BY_USER:
        snprintf(key, size, "%s", l->owner);
        break;
    }
}

/* The CSV field of text: quoted when it holds a comma, quote or line break. */
static void s_csv_field(FILE *out, const char *text)
{
    if (!strpbrk(text, ",\"\r\n")) {
        fputs(text, out);
        return;
    }
    fputc('"', out);
    for (const char *p = text; *p; p++) {
        if (*p == '"')
            fputc('"', out);
        fputc(*p, out);
    }
    fputc('"', out);
}

static int s_wants_csv(http_req_t *req)
{
    const char *accept = http_header(req, "Accept");
    return accept && strstr(accept, "text/csv") != NULL;
}

static void s_csv(http_req_t *req, const Berth__ChargebackReport *r, s_by_t by, json_t *rows)
{
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    if (!out) {
        http_error(req, "INTERNAL", "out of memory");
        return;
    }
    fprintf(out, "%s%s%s%s,currency,amount,compute_ms,disk_ms\r\n", s_by_names[by],
            by == S_BY_VM ? ",owner,template" : "", s_by_kind(by) ? ",kind" : "",
            by == S_BY_USER ? ",vms" : "");
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        s_csv_field(out, json_string_value(json_object_get(row, s_by_names[by])));
        if (by == S_BY_VM) {
            fputc(',', out);
            s_csv_field(out, json_string_value(json_object_get(row, "owner")));
            fputc(',', out);
            s_csv_field(out, json_string_value(json_object_get(row, "template")));
        }
        if (s_by_kind(by)) {
            fputc(',', out);
            s_csv_field(out, json_string_value(json_object_get(row, "kind")));
        }
        if (by == S_BY_USER)
            fprintf(out, ",%" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(row, "vms")));
        fprintf(out,
                ",%s,%" JSON_INTEGER_FORMAT ",%" JSON_INTEGER_FORMAT ",%" JSON_INTEGER_FORMAT
                "\r\n",
                r->currency, json_integer_value(json_object_get(row, "amount")),
                json_integer_value(json_object_get(row, "compute_ms")),
                json_integer_value(json_object_get(row, "disk_ms")));
    }
    fprintf(out, "total%s%s%s,%s,%" PRId64 ",,\r\n", by == S_BY_VM ? ",," : "",
            s_by_kind(by) ? "," : "", by == S_BY_USER ? "," : "", r->currency, r->total);
    fclose(out);
    struct MHD_Response *response =
        MHD_create_response_from_buffer(size, text, MHD_RESPMEM_MUST_FREE);
    if (!response) {
        free(text);
        http_error(req, "INTERNAL", "cannot make the response");
        return;
    }
    MHD_add_response_header(response, "Content-Type", "text/csv; charset=utf-8");
    req->stream = response;
    req->status = 200;
}

static void s_reported(http_req_t *req, ProtobufCMessage *answer)
{
    const Berth__ChargebackReport *r = (const Berth__ChargebackReport *)answer;
    s_by_t by = (s_by_t)s_by_of(req);
    /* Rows in key order: lines come by day then VM, so day and month rows are in order
       already; VM and user rows are found by key. */
    json_t *rows = json_array(), *index = json_object(), *vms = json_object();
    int64_t total = 0;
    for (size_t i = 0; rows && index && vms && i < r->n_lines; i++) {
        const Berth__ChargeLine *l = r->lines[i];
        char key[160], id[200];
        s_row_key(by, l, key, sizeof key);
        const char *kind = l->kind ? l->kind : "";
        /* The index tells a user named like a kind from the group's lines. */
        snprintf(id, sizeof id, "%s\t%s", s_by_kind(by) ? kind : "", key);
        json_t *row = json_object_get(index, id);
        if (!row) {
            row = json_pack("{s:s, s:I, s:I, s:I}", s_by_names[by], key, "amount", (json_int_t)0,
                            "compute_ms", (json_int_t)0, "disk_ms", (json_int_t)0);
            if (!row)
                break;
            if (by == S_BY_VM) {
                json_object_set_new(row, "owner", json_string(l->owner));
                json_object_set_new(row, "template", json_string(l->template_));
            }
            if (s_by_kind(by))
                json_object_set_new(row, "kind", json_string(kind));
            if (by == S_BY_USER)
                json_object_set_new(row, "vms", json_integer(0));
            json_object_set_new(index, id, row);
            json_array_append(rows, row);
        }
        /* A user's statistics: the VMs of theirs billed in the window, each counted once. */
        char seen[260];
        snprintf(seen, sizeof seen, "%s\t%s", id, l->vm);
        if (by == S_BY_USER && !*kind && !json_object_get(vms, seen)) {
            json_object_set_new(vms, seen, json_true());
            json_object_set_new(row, "vms",
                                json_integer(json_integer_value(json_object_get(row, "vms")) + 1));
        }
        json_object_set_new(
            row, "amount",
            json_integer(json_integer_value(json_object_get(row, "amount")) + l->amount));
        json_object_set_new(
            row, "compute_ms",
            json_integer(json_integer_value(json_object_get(row, "compute_ms")) + l->compute_ms));
        json_object_set_new(
            row, "disk_ms",
            json_integer(json_integer_value(json_object_get(row, "disk_ms")) + l->disk_ms));
        total += l->amount;
    }
    json_decref(index);
    json_decref(vms);
    if (!rows) {
        http_error(req, "INTERNAL", "out of memory");
        return;
    }
    if (by == S_BY_VM || by == S_BY_USER) {
        /* key order */
        size_t n = json_array_size(rows);
        for (size_t i = 1; i < n; i++)
            for (size_t j = i; j > 0; j--) {
                json_t *a = json_array_get(rows, j - 1), *b = json_array_get(rows, j);
                if (strcmp(json_string_value(json_object_get(a, s_by_names[by])),
                           json_string_value(json_object_get(b, s_by_names[by]))) <= 0)
                    break;
                json_incref(a);
                json_array_set(rows, j - 1, b);
                json_array_set_new(rows, j, a);
            }
    }
    if (total != r->total) {
        log_error(req->request_id, "chargeback lines do not add up to the meter's total",
                  "{s:I, s:I}", "lines", (json_int_t)total, "total", (json_int_t)r->total);
        json_decref(rows);
        http_error(req, "INTERNAL", "the report does not add up");
        return;
    }
    if (s_wants_csv(req)) {
        s_csv(req, r, by, rows);
        json_decref(rows);
        return;
    }
    http_json(req, 200,
              json_pack("{s:s, s:o, s:o, s:s, s:s, s:s, s:o, s:I}", "group", r->group, "from",
                        rest_time(r->from_ms), "to", rest_time(r->to_ms), "by", s_by_names[by],
                        "currency", r->currency, "charging_model", r->charging_model, "rows", rows,
                        "total", (json_int_t)r->total));
}

/* The window of ?from and ?to: from (default: the start of this UTC month) to (default: now).
   0, or -1 with 400 set. */
static int s_window(http_req_t *req, int64_t *from_p, int64_t *to_p)
{
    gateway_t *gw = req->app;
    int64_t now = clock_now_ms(), from, to = now;
    time_t t = (time_t)(now / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    tm.tm_mday = 1;
    tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
    from = (int64_t)timegm(&tm) * 1000;
    const char *from_text = http_query(req, "from"), *to_text = http_query(req, "to");
    if (from_text && rest_parse_time(from_text, &from) != 0) {
        http_bad_field(req, "from",
                       "from must be an ISO 8601 UTC time (2026-11-01T00:00:00Z) or unix seconds");
        return -1;
    }
    if (to_text && rest_parse_time(to_text, &to) != 0) {
        http_bad_field(req, "to",
                       "to must be an ISO 8601 UTC time (2026-12-01T00:00:00Z) or unix seconds");
        return -1;
    }
    if (from >= to) {
        http_bad_field(req, to_text ? "to" : "from", "from must be before to");
        return -1;
    }
    if (to - from > gw->usage_window_max_ms) {
        http_bad_field(req, to_text ? "to" : "from", "from..to may span at most %lld days",
                       (long long)(gw->usage_window_max_ms / (24LL * 3600 * 1000)));
        return -1;
    }
    *from_p = from;
    *to_p = to;
    return 0;
}

void charge_report_get(http_req_t *req)
{
    const char *group = http_query(req, "group");
    if (!group || !*group) {
        http_bad_field(req, "group", "group is required (its name or id)");
        return;
    }
    if (s_by_of(req) < 0) {
        http_bad_field(req, "by", "by must be day, month, vm or user");
        return;
    }
    int64_t from, to;
    if (s_window(req, &from, &to) != 0)
        return;
    char group_id[UTIL_ID_LEN] = "";
    if (groups_authorize(req, group, "chargeback.read",
                         "a group's chargeback is for its managers and auditors, and admins",
                         group_id) != 0)
        return;
    Berth__GetChargeback ask = BERTH__GET_CHARGEBACK__INIT;
    ask.group = group_id;
    ask.from_ms = from;
    ask.to_ms = to;
    rest_call(req, "meter", &ask.base, &berth__chargeback_report__descriptor, s_reported);
}

/* One VM's charges by day: {"charges": {vm, group, from, to, currency, charging_model, days,
   total}}. */
static void s_vm_charged(http_req_t *req, ProtobufCMessage *answer)
{
    const Berth__ChargebackReport *r = (const Berth__ChargebackReport *)answer;
    json_t *days = json_array();
    int64_t total = 0;
    for (size_t i = 0; days && i < r->n_lines; i++) {
        const Berth__ChargeLine *l = r->lines[i];
        json_array_append_new(days, json_pack("{s:s, s:I, s:I, s:I}", "day", l->day, "amount",
                                              (json_int_t)l->amount, "compute_ms",
                                              (json_int_t)l->compute_ms, "disk_ms",
                                              (json_int_t)l->disk_ms));
        total += l->amount;
    }
    if (!days) {
        http_error(req, "INTERNAL", "out of memory");
        return;
    }
    http_json(req, 200,
              json_pack("{s:{s:s, s:s, s:o, s:o, s:s, s:s, s:o, s:I}}", "charges", "vm", r->vm,
                        "group", r->group, "from", rest_time(r->from_ms), "to", rest_time(r->to_ms),
                        "currency", r->currency, "charging_model", r->charging_model, "days", days,
                        "total", (json_int_t)total));
}

/* GET /v1/vms/{id}/charges: what one VM cost so far (?from, ?to as the chargeback's), for
   whoever may read the VM. A VM of a reservation-based group shows its hours at 0: its group
   pays for what it reserved. */
void charge_vm_get(http_req_t *req)
{
    int64_t from, to;
    char id[UTIL_ID_LEN];
    Berth__Vm *vm = NULL;
    if (s_window(req, &from, &to) != 0 || vms_resolve(req, req->params[0], id) != 0 ||
        rest_load(req, &berth__vm__descriptor, "vm", id, (ProtobufCMessage **)&vm))
        return;
    if (!vms_may_see(req, vm)) {
        protobuf_c_message_free_unpacked(&vm->base, NULL);
        http_error(req, "NOT_FOUND", "no such vm");
        return;
    }
    protobuf_c_message_free_unpacked(&vm->base, NULL);
    Berth__GetChargeback ask = BERTH__GET_CHARGEBACK__INIT;
    ask.vm = id;
    ask.from_ms = from;
    ask.to_ms = to;
    rest_call(req, "meter", &ask.base, &berth__chargeback_report__descriptor, s_vm_charged);
}

/* ---- budgets ---- */

static json_t *s_budget_view(const Berth__Budget *b)
{
    json_t *thresholds = json_array(), *alerts = json_array();
    for (size_t i = 0; thresholds && i < b->n_thresholds; i++)
        json_array_append_new(thresholds, json_integer(b->thresholds[i]));
    for (size_t i = 0; alerts && i < b->n_alerts; i++)
        json_array_append_new(alerts,
                              json_pack("{s:i, s:o, s:I}", "threshold", b->alerts[i]->threshold,
                                        "at", rest_time(b->alerts[i]->at_ms), "spent",
                                        (json_int_t)b->alerts[i]->spent));
    return json_pack("{s:s, s:I, s:o, s:o, s:b, s:o, s:I, s:b, s:o, s:o, s:I, s:o, s:o}", "group",
                     b->group, "amount", (json_int_t)b->amount, "currency", view_str(b->currency),
                     "thresholds", thresholds, "hard_stop", b->hard_stop, "month",
                     view_str(b->month), "spent", (json_int_t)b->spent, "blocked",
                     b->blocked && *b->blocked, "checked", rest_time(b->checked_ms), "alerts",
                     alerts, "version", (json_int_t)b->version, "updated", rest_time(b->updated_ms),
                     "updated_by", view_str(b->updated_by));
}

static void s_budget_answer(http_req_t *req, ProtobufCMessage *answer)
{
    const Berth__Budget *b = (const Berth__Budget *)answer;
    if (!b->version) { /* cleared */
        http_json(req, 200, json_pack("{s:n}", "budget"));
        return;
    }
    http_json(req, 200, json_pack("{s:o}", "budget", s_budget_view(b)));
}

/* GET /v1/groups/{id}/budget: the budget, the month's charges so far and its alerts. */
void charge_budget_get(http_req_t *req)
{
    char id[UTIL_ID_LEN];
    if (groups_authorize(req, req->params[0], "budget.get",
                         "a group's budget is for its managers and auditors, and admins", id) != 0)
        return;
    Berth__GetBudget ask = BERTH__GET_BUDGET__INIT;
    ask.group = id;
    rest_call(req, "meter", &ask.base, &berth__budget__descriptor, s_budget_answer);
}

/* PUT /v1/groups/{id}/budget {"amount", "thresholds", "hard_stop", "version"}. */
void charge_budget_set(http_req_t *req)
{
    static const char *const allowed[] = { "amount", "thresholds", "hard_stop", "version", NULL };
    char id[UTIL_ID_LEN];
    int64_t amount = 0, version = 0;
    int hard_stop = 0;
    if (groups_authorize(req, req->params[0], "budget.set",
                         "a group's budget is set by its managers and admins", id) != 0 ||
        rest_body(req, allowed) ||
        rest_int(req, "amount", 1, 1, LIMIT_BUDGET_AMOUNT_MAX, &amount) ||
        rest_bool(req, "hard_stop", 0, &hard_stop) < 0 ||
        rest_int(req, "version", 0, 1, INT64_MAX, &version) < 0)
        return;
    /* thresholds: ascending percentages; absent: 80 and 100. */
    int32_t thresholds[LIMIT_BUDGET_THRESHOLDS_MAX] = { 80, 100 };
    size_t n = 2;
    json_t *list = json_object_get(req->body, "thresholds");
    if (list) {
        if (!json_is_array(list) || json_array_size(list) > LIMIT_BUDGET_THRESHOLDS_MAX) {
            http_bad_field(req, "thresholds", "thresholds must be an array of at most %d percents",
                           LIMIT_BUDGET_THRESHOLDS_MAX);
            return;
        }
        n = 0;
        size_t i;
        json_t *v;
        json_array_foreach(list, i, v)
        {
            json_int_t t = json_is_integer(v) ? json_integer_value(v) : 0;
            if (t < 1 || t > LIMIT_BUDGET_THRESHOLD_MAX || (n && t <= thresholds[n - 1])) {
                http_bad_field(req, "thresholds",
                               "thresholds must be ascending integers from 1 to %d (percent)",
                               LIMIT_BUDGET_THRESHOLD_MAX);
                return;
            }
            thresholds[n++] = (int32_t)t;
        }
    }
    Berth__Budget b = BERTH__BUDGET__INIT;
    b.group = id;
    b.amount = amount;
    b.thresholds = thresholds;
    b.n_thresholds = n;
    b.hard_stop = hard_stop;
    Berth__SetBudget ask = BERTH__SET_BUDGET__INIT;
    ask.budget = &b;
    ask.version = version;
    rest_call(req, "meter", &ask.base, &berth__budget__descriptor, s_budget_answer);
}

/* DELETE /v1/groups/{id}/budget: no budget (nor hard stop) from now; answers {"budget": null}
   whether one was set or not. */
void charge_budget_clear(http_req_t *req)
{
    char id[UTIL_ID_LEN];
    if (groups_authorize(req, req->params[0], "budget.set",
                         "a group's budget is set by its managers and admins", id) != 0)
        return;
    Berth__Budget b = BERTH__BUDGET__INIT;
    b.group = id;
    Berth__SetBudget ask = BERTH__SET_BUDGET__INIT;
    ask.budget = &b;
    ask.clear = 1;
    rest_call(req, "meter", &ask.base, &berth__budget__descriptor, s_budget_answer);
}
