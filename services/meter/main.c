/*  berth-meter: usage from the event stream, reported per VM. Polls berth:events through
    the "meter" consumer group on a timer (never blocking the loop) and answers GetUsage
    with vCPU-, GB-RAM- and GB-disk-hours per VM for a time window. */
#include "assertion.h"
#include "budget.h"
#include "charge.h"
#include "clock.h"
#include "ledger.h"
#include "keys.h"
#include "limit.h"
#include "lua_scripts.h"
#include "rates.h"
#include "service.h"
#include "usage.h"
#include "util.h"
#include "webhook.h"

typedef struct {
    service_t *service;
    usage_t *usage;
    int report_max_vms;     /* most records one report may hold */
    int failing;            /* the last poll failed (logged once per change) */
    webhook_t *webhook;     /* groups' notices to their webhook URLs */
    int webhook_failing;    /* the last webhook round failed (logged once per change) */
    assertion_t *verifier;  /* checks who a GetUsage asks for (the gateway's assertion) */
    int report_max_lines;   /* most lines one chargeback report may hold */
    int budget_failing;     /* the last look at the budgets failed (logged once per change) */
    int64_t month_close_ms; /* how long after a month ends it is closed (ledger.h) */
    int ledger_failing;     /* the last ledger tick failed (logged once per change) */
} meter_t;

static int s_poll(service_t *service, void *arg)
{
    (void)service;
    meter_t *self = arg;
    int rc = usage_poll(self->usage);
    if ((rc < 0) != self->failing)
        log_emit(rc < 0 ? BERTH_LOG_WARN : BERTH_LOG_INFO, NULL,
                 rc < 0 ? "cannot read the event stream" : "reading the event stream", NULL);
    self->failing = rc < 0;
    return 0;
}

/* Webhooks: the intake of events (at the usage poll's pace) and the deliveries (at a faster
   tick, so an answer is read soon after it arrives); neither waits on a receiver. */
static void s_webhook_status(meter_t *self, int rc)
{
    if ((rc < 0) != self->webhook_failing)
        log_emit(rc < 0 ? BERTH_LOG_WARN : BERTH_LOG_INFO, NULL,
                 rc < 0 ? "cannot move webhook deliveries along" : "webhook deliveries moving",
                 NULL);
    self->webhook_failing = rc < 0;
}

static int s_webhook_poll(service_t *service, void *arg)
{
    (void)service;
    meter_t *self = arg;
    s_webhook_status(self, webhook_poll(self->webhook));
    return 0;
}

static int s_webhook_run(service_t *service, void *arg)
{
    (void)service;
    meter_t *self = arg;
    s_webhook_status(self, webhook_run(self->webhook));
    return 0;
}

static void s_on_get_usage(bus_request_t *request, void *arg)
{
    meter_t *self = arg;
    Berth__GetUsage *ask = bus_request_body(request, &berth__get_usage__descriptor);
    if (!ask) {
        bus_reply_error(request, "BAD_REQUEST", "GetUsage body expected");
        return;
    }
    /* A user reads their own usage only; an admin anyone's (or everyone's: owner empty). Who
       asks is what the gateway signed, never a field of the body. */
    const char *rid = bus_request_envelope(request)->request_id;
    berth_error_t error = { 0 };
    Berth__UserAssertion *who = NULL;
    if (assertion_of(self->verifier, request, ask->assertion, &who, &error) != 0) {
        log_info(rid, "usage refused", "{s:s}", "reason", error.message);
        bus_reply_fault(request, &error);
        return;
    }
    const char *owner = ask->owner;
    const char *group = ask->group ? ask->group : "";
    /* A group's usage: its managers and auditors, and admins; anyone else learns nothing. */
    if (*group && !assertion_has_role(who, "admin") &&
        !assertion_has_group_role(who, group, "manager") &&
        !assertion_has_group_role(who, group, "auditor")) {
        log_info(rid, "usage refused: not the group's", "{s:s, s:s}", "user", who->user, "group",
                 group);
        berth__user_assertion__free_unpacked(who, NULL);
        bus_reply_error(request, "NOT_FOUND", "no such group");
        return;
    }
    if (!assertion_has_role(who, "admin") && !*group) {
        if (*owner && !streq(owner, who->user)) {
            log_info(rid, "usage refused: another user's", "{s:s, s:s}", "user", who->user, "owner",
                     owner);
            berth__user_assertion__free_unpacked(who, NULL);
            bus_reply_error(request, "FORBIDDEN", "a user reads only their own usage");
            return;
        }
        owner = who->user;
    }
    Berth__UsageReport *report = NULL;
    int rc = usage_report_group(service_store(self->service), ask->from_ms, ask->to_ms, group,
                                owner, clock_now_ms(), self->report_max_vms, &report, &error);
    berth__user_assertion__free_unpacked(who, NULL);
    if (rc != 0) {
        bus_reply_fault(request, &error);
        return;
    }
    bus_reply(request, &report->base);
    usage_report_free(&report);
}

/* The caller's signed assertion (NULL with the refusal sent). */
static Berth__UserAssertion *s_who(meter_t *self, bus_request_t *request,
                                   const Berth__SignedAssertion *signed_, const char *what)
{
    berth_error_t error = { 0 };
    Berth__UserAssertion *who = NULL;
    if (assertion_of(self->verifier, request, signed_, &who, &error) != 0) {
        log_info(bus_request_envelope(request)->request_id, "call refused", "{s:s, s:s}", "call",
                 what, "reason", error.message);
        bus_reply_fault(request, &error);
        return NULL;
    }
    return who;
}

/* A new rate card: admins only. */
static void s_on_create_rate(bus_request_t *request, void *arg)
{
    meter_t *self = arg;
    Berth__CreateRate *ask = bus_request_body(request, &berth__create_rate__descriptor);
    if (!ask) {
        bus_reply_error(request, "BAD_REQUEST", "CreateRate body expected");
        return;
    }
    Berth__UserAssertion *who = s_who(self, request, ask->assertion, "CreateRate");
    if (!who)
        return;
    const char *rid = bus_request_envelope(request)->request_id;
    if (!assertion_has_role(who, "admin")) {
        log_info(rid, "rate card refused: not an admin", "{s:s}", "user", who->user);
        berth__user_assertion__free_unpacked(who, NULL);
        bus_reply_error(request, "FORBIDDEN", "only an admin may set rates");
        return;
    }
    berth_error_t error = { 0 };
    Berth__RateCard *card = NULL;
    if (rates_create(service_store(self->service), ask->card, who->user, clock_now_ms(), &card,
                     &error) != 0) {
        berth__user_assertion__free_unpacked(who, NULL);
        bus_reply_fault(request, &error);
        return;
    }
    log_info(rid, "rate card created", "{s:s, s:s, s:I}", "rate", card->id, "user", who->user,
             "effective_ms", (json_int_t)card->effective_ms);
    berth__user_assertion__free_unpacked(who, NULL);
    bus_reply(request, &card->base);
    berth__rate_card__free_unpacked(card, NULL);
}

/* Rate cards, or one: anyone signed in (prices are no secret inside the platform). */
static void s_on_list_rates(bus_request_t *request, void *arg)
{
    meter_t *self = arg;
    Berth__ListRates *ask = bus_request_body(request, &berth__list_rates__descriptor);
    if (!ask) {
        bus_reply_error(request, "BAD_REQUEST", "ListRates body expected");
        return;
    }
    Berth__UserAssertion *who = s_who(self, request, ask->assertion, "ListRates");
    if (!who)
        return;
    berth__user_assertion__free_unpacked(who, NULL);
    berth_error_t error = { 0 };
    Berth__RateCardList *list = NULL;
    if (ask->id && *ask->id) {
        Berth__RateCard *card = NULL;
        if (rates_get(service_store(self->service), ask->id, &card, &error) != 0) {
            bus_reply_fault(request, &error);
            return;
        }
        Berth__RateCardList one = BERTH__RATE_CARD_LIST__INIT;
        one.cards = &card;
        one.n_cards = 1;
        bus_reply(request, &one.base);
        berth__rate_card__free_unpacked(card, NULL);
        return;
    }
    if (rates_list(service_store(self->service), &list, &error) != 0) {
        bus_reply_fault(request, &error);
        return;
    }
    bus_reply(request, &list->base);
    rates_list_free(&list);
}

/* The group and owner of vm (its VM hash, kept after disposal for the audit period):
   0, or -1 when there is no such VM (or Redis failed). */
static int s_vm_of(meter_t *self, const char *vm, char group[UTIL_ID_LEN],
                   char owner[LIMIT_USER_NAME_MAX + 1])
{
    if (!util_is_uuid(vm))
        return -1;
    char key[KEYS_MAX];
    redisReply *r =
        store_command(service_store(self->service), "HMGET %s group owner", keys_vm(key, vm));
    int rc = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                     r->element[0]->type == REDIS_REPLY_STRING && util_is_uuid(r->element[0]->str)
                 ? 0
                 : -1;
    if (rc == 0) {
        util_strlcpy(group, r->element[0]->str, UTIL_ID_LEN);
        util_strlcpy(owner, r->element[1]->type == REDIS_REPLY_STRING ? r->element[1]->str : "",
                     LIMIT_USER_NAME_MAX + 1);
    }
    if (r)
        freeReplyObject(r);
    return rc;
}

/* A group's chargeback: its managers and auditors, and admins; one VM's also for its owner and
   operators (who may read the VM); anyone else learns nothing. */
static void s_on_get_chargeback(bus_request_t *request, void *arg)
{
    meter_t *self = arg;
    Berth__GetChargeback *ask = bus_request_body(request, &berth__get_chargeback__descriptor);
    if (!ask) {
        bus_reply_error(request, "BAD_REQUEST", "GetChargeback body expected");
        return;
    }
    Berth__UserAssertion *who = s_who(self, request, ask->assertion, "GetChargeback");
    if (!who)
        return;
    char group[UTIL_ID_LEN] = "", owner[LIMIT_USER_NAME_MAX + 1] = "";
    const char *vm = ask->vm && *ask->vm ? ask->vm : NULL;
    if (vm && s_vm_of(self, vm, group, owner) != 0) {
        berth__user_assertion__free_unpacked(who, NULL);
        bus_reply_error(request, "NOT_FOUND", "no such vm");
        return;
    }
    if (!vm)
        util_strlcpy(group, ask->group ? ask->group : "", sizeof group);
    int may = assertion_has_role(who, "admin") || assertion_has_group_role(who, group, "manager") ||
              assertion_has_group_role(who, group, "auditor") ||
              (vm && (assertion_has_role(who, "operator") || strcmp(who->user, owner) == 0));
    if (!may)
        log_info(bus_request_envelope(request)->request_id, "chargeback refused: not the group's",
                 "{s:s, s:s, s:s}", "user", who->user, "group", group, "vm", vm ? vm : "");
    berth__user_assertion__free_unpacked(who, NULL);
    if (!may) {
        bus_reply_error(request, "NOT_FOUND", vm ? "no such vm" : "no such group");
        return;
    }
    berth_error_t error = { 0 };
    Berth__ChargebackReport *report = NULL;
    if (ledger_report(service_store(self->service), group, vm, ask->from_ms, ask->to_ms,
                      clock_now_ms(), self->report_max_vms, self->report_max_lines, &report,
                      &error) != 0) {
        bus_reply_fault(request, &error);
        return;
    }
    bus_reply(request, &report->base);
    berth__chargeback_report__free_unpacked(report, NULL);
}

static budget_limits_t s_budget_limits(const meter_t *self)
{
    return (budget_limits_t){ .max_vms = self->report_max_vms,
                              .max_lines = self->report_max_lines };
}

/* Set or clear a group's budget: its managers and admins; anyone else learns nothing. */
static void s_on_set_budget(bus_request_t *request, void *arg)
{
    meter_t *self = arg;
    Berth__SetBudget *ask = bus_request_body(request, &berth__set_budget__descriptor);
    if (!ask || !ask->budget) {
        bus_reply_error(request, "BAD_REQUEST", "SetBudget body with a budget expected");
        return;
    }
    Berth__UserAssertion *who = s_who(self, request, ask->assertion, "SetBudget");
    if (!who)
        return;
    const char *rid = bus_request_envelope(request)->request_id;
    const char *group = ask->budget->group ? ask->budget->group : "";
    if (!assertion_has_role(who, "admin") && !assertion_has_group_role(who, group, "manager")) {
        log_info(rid, "budget refused: not a manager of the group", "{s:s, s:s}", "user", who->user,
                 "group", group);
        int sees = assertion_has_group_role(who, group, "auditor") ||
                   assertion_has_group_role(who, group, "member");
        berth__user_assertion__free_unpacked(who, NULL);
        if (sees)
            bus_reply_error(request, "FORBIDDEN", "a group's budget is set by its managers");
        else
            bus_reply_error(request, "NOT_FOUND", "no such group");
        return;
    }
    berth_error_t error = { 0 };
    store_t *store = service_store(self->service);
    budget_limits_t limits = s_budget_limits(self);
    Berth__Budget *b = NULL;
    int rc = ask->clear ? budget_clear(store, group, ask->version, who->user, &error)
                        : budget_set(store, ask->budget, ask->version, who->user, clock_now_ms(),
                                     &limits, &b, &error);
    if (rc != 0) {
        berth__user_assertion__free_unpacked(who, NULL);
        bus_reply_fault(request, &error);
        return;
    }
    log_info(rid, ask->clear ? "budget cleared" : "budget set", "{s:s, s:s, s:I}", "group", group,
             "user", who->user, "amount", (json_int_t)(b ? b->amount : 0));
    berth__user_assertion__free_unpacked(who, NULL);
    if (b) {
        bus_reply(request, &b->base);
        berth__budget__free_unpacked(b, NULL);
    } else {
        Berth__Budget gone = BERTH__BUDGET__INIT;
        gone.group = (char *)group;
        bus_reply(request, &gone.base);
    }
}

/* A group's budget: its managers and auditors, and admins; anyone else learns nothing. */
static void s_on_get_budget(bus_request_t *request, void *arg)
{
    meter_t *self = arg;
    Berth__GetBudget *ask = bus_request_body(request, &berth__get_budget__descriptor);
    if (!ask) {
        bus_reply_error(request, "BAD_REQUEST", "GetBudget body expected");
        return;
    }
    Berth__UserAssertion *who = s_who(self, request, ask->assertion, "GetBudget");
    if (!who)
        return;
    const char *group = ask->group ? ask->group : "";
    int may = assertion_has_role(who, "admin") || assertion_has_group_role(who, group, "manager") ||
              assertion_has_group_role(who, group, "auditor");
    berth__user_assertion__free_unpacked(who, NULL);
    if (!may) {
        bus_reply_error(request, "NOT_FOUND", "no such group");
        return;
    }
    berth_error_t error = { 0 };
    Berth__Budget *b = NULL;
    if (budget_get(service_store(self->service), group, clock_now_ms(), &b, &error) != 0) {
        bus_reply_fault(request, &error);
        return;
    }
    bus_reply(request, &b->base);
    berth__budget__free_unpacked(b, NULL);
}

/* Every budgeted group's month, at budget_check_ms. */
static int s_look_budgets(service_t *service, void *arg)
{
    meter_t *self = arg;
    budget_limits_t limits = s_budget_limits(self);
    int failed = budget_look_all(service_store(service), clock_now_ms(), &limits);
    if ((failed != 0) != self->budget_failing)
        log_emit(failed ? BERTH_LOG_WARN : BERTH_LOG_INFO, NULL,
                 failed ? "cannot look at every budget" : "looking at budgets", NULL);
    self->budget_failing = failed != 0;
    return 0;
}

/* Close every group's last month, or book its late charges, at ledger_check_ms. */
static int s_ledger(service_t *service, void *arg)
{
    meter_t *self = arg;
    ledger_limits_t limits = { .max_vms = self->report_max_vms,
                               .max_lines = self->report_max_lines,
                               .close_ms = self->month_close_ms };
    int failed = ledger_tick(service_store(service), clock_now_ms(), &limits);
    if ((failed != 0) != self->ledger_failing)
        log_emit(failed ? BERTH_LOG_WARN : BERTH_LOG_INFO, NULL,
                 failed ? "cannot close or adjust every group's month" : "closing months", NULL);
    self->ledger_failing = failed != 0;
    return 0;
}

/* The event stream keeps what any consumer group has not acknowledged and the last
   events_keep_s of events (for live-event clients resuming with Last-Event-ID:
   events_trim.lua): trimmed here, never by length when appended to. */
static int s_trim_events(service_t *service, void *arg)
{
    const int64_t *keep_ms = arg;
    char floor[32];
    int64_t at = util_now_ms() - *keep_ms;
    snprintf(floor, sizeof floor, "%lld-0", (long long)(at > 0 ? at : 0));
    const char *argv[] = { STORE_EVENTS, floor };
    redisReply *r = store_run(service_store(service), &lua_events_trim, 1, 2, argv);
    if (r && r->type == REDIS_REPLY_INTEGER && r->integer > 0)
        log_debug(NULL, "event stream trimmed", "{s:I}", "entries", (json_int_t)r->integer);
    else if (r && r->type == REDIS_REPLY_ERROR)
        log_warn(NULL, "cannot trim the event stream", "{s:s}", "error", r->str);
    freeReplyObject(r);
    return 0;
}

int main(int argc, char **argv)
{
    service_t *service = service_new("meter", argc, argv);
    if (!service)
        return 2;
    config_t *c = service_config(service);
    config_declare(c, "poll_ms", "200", 0);
    config_declare(c, "events_batch", "200", 0);
    config_declare(c, "batches_per_poll", "10", 0);
    config_declare(c, "claim_idle_ms", "10000", 0);
    config_declare(c, "max_events_per_vm", "1000", 0);
    config_declare(c, "report_max_vms", "20000", 0);
    /* Lines (one per VM and day) one chargeback report may hold. */
    config_declare(c, "report_max_lines", "200000", 0);
    /* How often the event stream is trimmed below every consumer group's position. */
    config_declare(c, "events_trim_every_ms", "10000", 0);
    /* Events this recent are never trimmed: a live-event client reconnecting within it
       resumes with Last-Event-ID without a gap (gateway/events.c). */
    config_declare(c, "events_keep_s", "600", 0);
    /* Webhooks (webhook.h): tries per delivery, the wait before the second (doubled after
       each failure, capped), one attempt's time limit, attempts at once (in all, and for one
       group), the delivery tick. */
    config_declare(c, "webhook_attempts", "6", 0);
    config_declare(c, "webhook_base_delay_ms", "2000", 0);
    config_declare(c, "webhook_max_delay_ms", "600000", 0);
    config_declare(c, "webhook_timeout_ms", "10000", 0);
    config_declare(c, "webhook_max_inflight", "32", 0);
    config_declare(c, "webhook_max_per_group", "4", 0);
    config_declare(c, "webhook_tick_ms", "50", 0);
    /* How often every budgeted group's month is priced (thresholds, hard stops). */
    config_declare(c, "budget_check_ms", "60000", 0);
    /* Closed months (ledger.h): how long after its end a month is closed (platform ms), and
       how often the last closed month is priced again for late charges (ms). */
    config_declare(c, "month_close_ms", "3600000", 0);
    config_declare(c, "ledger_check_ms", "600000", 0);
    meter_t self = { .service = service };
    int rc = 1;
    int64_t poll_ms, batch, batches, idle, max_events, max_vms, max_lines, trim_ms, keep_s, keep_ms;
    int64_t wh_attempts, wh_base, wh_max, wh_timeout, wh_inflight, wh_group, wh_tick, budget_ms;
    int64_t ledger_ms;
    if (service_start(service) != 0 || config_int(c, "poll_ms", 10, 60000, &poll_ms) ||
        config_int(c, "events_batch", 1, 10000, &batch) ||
        config_int(c, "batches_per_poll", 1, 1000, &batches) ||
        config_int(c, "claim_idle_ms", 100, 86400000, &idle) ||
        config_int(c, "max_events_per_vm", 4, 100000, &max_events) ||
        config_int(c, "report_max_vms", 1, 1000000, &max_vms) ||
        config_int(c, "report_max_lines", 1, 10000000, &max_lines) ||
        config_int(c, "events_trim_every_ms", 100, 86400000, &trim_ms) ||
        config_int(c, "events_keep_s", 0, 30LL * 24 * 3600, &keep_s) ||
        config_int(c, "webhook_attempts", 1, 100, &wh_attempts) ||
        config_int(c, "webhook_base_delay_ms", 1, 86400000, &wh_base) ||
        config_int(c, "webhook_max_delay_ms", 1, 86400000, &wh_max) ||
        config_int(c, "webhook_timeout_ms", 100, 600000, &wh_timeout) ||
        config_int(c, "webhook_max_inflight", 1, 10000, &wh_inflight) ||
        config_int(c, "webhook_max_per_group", 1, 10000, &wh_group) ||
        config_int(c, "webhook_tick_ms", 5, 60000, &wh_tick) ||
        config_int(c, "budget_check_ms", 50, 86400000, &budget_ms) ||
        config_int(c, "month_close_ms", 0, 31LL * 86400000, &self.month_close_ms) ||
        config_int(c, "ledger_check_ms", 50, 86400000, &ledger_ms))
        goto done;
    usage_limits_t limits = { .batch = (int)batch,
                              .batches_per_poll = (int)batches,
                              .claim_idle_ms = idle,
                              .max_events_per_vm = (int)max_events };
    /* The consumer is the instance: a restarted instance with a new id leaves its pending
       entries to be claimed after claim_idle_ms; one with a fixed id takes them back. */
    self.usage = usage_new(service_store(service), USAGE_GROUP, service_instance(service), &limits);
    if (!self.usage)
        goto done;
    webhook_limits_t wh = { .attempts = (int)wh_attempts,
                            .base_delay_ms = wh_base,
                            .max_delay_ms = wh_max < wh_base ? wh_base : wh_max,
                            .timeout_ms = wh_timeout,
                            .max_inflight = (int)wh_inflight,
                            .max_per_group = (int)wh_group,
                            .batch = (int)batch,
                            .claim_idle_ms = idle };
    self.webhook = webhook_new(service_store(service), service_instance(service), &wh);
    if (!self.webhook) {
        log_error(NULL, "cannot set up libcurl for webhooks", NULL);
        goto done;
    }
    self.report_max_vms = (int)max_vms;
    self.report_max_lines = (int)max_lines;
    berth_error_t error = { 0 };
    self.verifier = assertion_verifier_new(config_get(c, "secrets_dir"), &error);
    if (!self.verifier) {
        log_error(NULL, "cannot load the user assertion key", "{s:s}", "reason", error.message);
        goto done;
    }
    if (usage_setup(self.usage) != 0)
        log_warn(NULL, "cannot create the meter consumer group yet; retrying on every poll", NULL);
    service_on(service, "GetUsage", "gateway", s_on_get_usage, &self);
    service_on(service, "CreateRate", "gateway", s_on_create_rate, &self);
    service_on(service, "ListRates", "gateway", s_on_list_rates, &self);
    service_on(service, "GetChargeback", "gateway", s_on_get_chargeback, &self);
    service_on(service, "SetBudget", "gateway", s_on_set_budget, &self);
    service_on(service, "GetBudget", "gateway", s_on_get_budget, &self);
    service_every(service, (int)poll_ms, s_poll, &self);
    service_every(service, (int)poll_ms, s_webhook_poll, &self);
    service_every(service, (int)wh_tick, s_webhook_run, &self);
    keep_ms = keep_s * 1000;
    service_every(service, (int)trim_ms, s_trim_events, &keep_ms);
    service_every(service, (int)budget_ms, s_look_budgets, &self);
    service_every(service, (int)ledger_ms, s_ledger, &self);
    rc = service_run(service);
done:
    usage_destroy(&self.usage);
    webhook_destroy(&self.webhook);
    assertion_destroy(&self.verifier);
    service_destroy(&service);
    return rc;
}
