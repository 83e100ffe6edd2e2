/*  meter charge: the money arithmetic (exact sums, a span split at a rate change, the one
    rounding rule: each VM's day rounded once, half up), rate cards on a real Redis (never in
    the past, one currency), and a group's report from hand-made events read by the meter. */
#include "charge.h"
#include "ledger.h"
#include "rates.h"
#include "testenv.h"
#include "usage.h"
#include "util.h"

#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#define MIN  (INT64_C(60) * 1000)
#define HOUR (INT64_C(60) * MIN)
#define DAY  (INT64_C(24) * HOUR)
#define T0   (INT64_C(1700006400000)) /* 2023-11-15T00:00:00Z: a UTC midnight */

static Berth__RateCard s_card(int64_t effective, int64_t vcpu, int64_t ram, int64_t disk)
{
    Berth__RateCard c = BERTH__RATE_CARD__INIT;
    c.id = "c";
    c.currency = "EUR";
    c.effective_ms = effective;
    c.vcpu_hour = vcpu;
    c.ram_gb_hour = ram;
    c.disk_gb_hour = disk;
    c.factor_running = c.factor_stopped = c.factor_shelved = c.factor_expired = 1000;
    return c;
}

static void test_exact_units(void **state)
{
    (void)state;
    charge_flavor_t one_cpu = { .vcpus = 1 };
    /* 1,000 minor units per 1,000 vCPU-hours: one hour costs exactly one minor unit. */
    Berth__RateCard c = s_card(0, 1000, 0, 0);
    assert_true(charge_exact(&c, CHARGE_RUNNING, &one_cpu, HOUR) == CHARGE_DENOM);
    assert_int_equal(charge_round(charge_exact(&c, CHARGE_RUNNING, &one_cpu, HOUR)), 1);
    /* Compute is not charged while stopped; disk is. */
    assert_true(charge_exact(&c, CHARGE_STOPPED, &one_cpu, HOUR) == 0);
    /* RAM by the MB: 512 MB at 2,000 per 1,000 GB-hours for an hour is one minor unit. */
    charge_flavor_t half_gb = { .ram_mb = 512 };
    Berth__RateCard r = s_card(0, 0, 2000, 0);
    assert_true(charge_exact(&r, CHARGE_RUNNING, &half_gb, HOUR) == CHARGE_DENOM);
    /* A template's day price, pro rata: 240 a day is 10 an hour, in every billing state. */
    Berth__RateTemplatePrice small = BERTH__RATE_TEMPLATE_PRICE__INIT;
    small.template_ = "small";
    small.per_day = 240;
    Berth__RateTemplatePrice *prices[] = { &small };
    Berth__RateCard t = s_card(0, 0, 0, 0);
    t.templates = prices;
    t.n_templates = 1;
    charge_flavor_t tf = { .template_name = "small" }, other = { .template_name = "large" };
    assert_int_equal(charge_round(charge_exact(&t, CHARGE_SHELVED, &tf, HOUR)), 10);
    assert_true(charge_exact(&t, CHARGE_RUNNING, &other, HOUR) == 0);
    /* A factor scales the whole price of its state: disk at half while expired. */
    Berth__RateCard d = s_card(0, 0, 0, 1000);
    d.factor_expired = 500;
    charge_flavor_t disk = { .disk_gb = 10 };
    assert_int_equal(charge_round(charge_exact(&d, CHARGE_EXPIRED, &disk, HOUR)), 5);
    assert_int_equal(charge_round(charge_exact(&d, CHARGE_STOPPED, &disk, HOUR)), 10);
}

static void test_rounding_half_up(void **state)
{
    (void)state;
    charge_flavor_t one_cpu = { .vcpus = 1 };
    /* 1 per 1,000 vCPU-hours: 500 h is exactly half a minor unit, rounded up; a
       millisecond less rounds down. */
    Berth__RateCard c = s_card(0, 1, 0, 0);
    assert_int_equal(charge_round(charge_exact(&c, CHARGE_RUNNING, &one_cpu, 500 * HOUR)), 1);
    assert_int_equal(charge_round(charge_exact(&c, CHARGE_RUNNING, &one_cpu, 500 * HOUR - 1)), 0);
    /* Exact sums: 3,600 one-second parts are exactly one hour, never 3,600 roundings. */
    Berth__RateCard e = s_card(0, 1000, 0, 0);
    charge_exact_t sum = 0;
    for (int i = 0; i < 3600; i++)
        sum += charge_exact(&e, CHARGE_RUNNING, &one_cpu, 1000);
    assert_true(sum == CHARGE_DENOM);
}

static void test_split_at_rate_change(void **state)
{
    (void)state;
    Berth__RateCard a = s_card(T0, 1000, 0, 0), b = s_card(T0 + 30 * MIN, 3000, 0, 0);
    Berth__RateCard *cards[] = { &a, &b };
    Berth__RateCardList list = BERTH__RATE_CARD_LIST__INIT;
    list.cards = cards;
    list.n_cards = 2;
    charge_flavor_t f = { .vcpus = 2 };
    /* Half an hour at 1 and half an hour at 3 per vCPU-hour, two vCPUs: 1 + 3 = 4. */
    assert_true(charge_span(&list, CHARGE_RUNNING, &f, T0, T0 + HOUR) == 4 * CHARGE_DENOM);
    /* Before the first card nothing is charged. */
    assert_true(charge_span(&list, CHARGE_RUNNING, &f, T0 - HOUR, T0) == 0);
    /* The parts add up to the whole. */
    charge_exact_t parts = charge_span(&list, CHARGE_RUNNING, &f, T0, T0 + 17 * MIN) +
                           charge_span(&list, CHARGE_RUNNING, &f, T0 + 17 * MIN, T0 + HOUR);
    assert_true(parts == 4 * CHARGE_DENOM);
}

static void test_classes(void **state)
{
    (void)state;
    assert_int_equal(charge_class("ACTIVE", "RUNNING"), CHARGE_RUNNING);
    assert_int_equal(charge_class("ACTIVE", NULL), CHARGE_RUNNING);
    assert_int_equal(charge_class("ACTIVE", "SUSPENDED"), CHARGE_RUNNING);
    assert_int_equal(charge_class("ACTIVE", "STOPPED"), CHARGE_STOPPED);
    assert_int_equal(charge_class("SHELVED", "STOPPED"), CHARGE_SHELVED);
    assert_int_equal(charge_class("EXPIRED", NULL), CHARGE_EXPIRED);
    assert_int_equal(charge_class("PROVISIONING", NULL), -1);
    assert_int_equal(charge_class("DISPOSED", NULL), -1);
}

static void test_rate_cards(void **state)
{
    testenv_fixture_t *f = *state;
    berth_error_t error = { 0 };
    Berth__RateCard c = s_card(T0 - 1, 1000, 10, 5), *made = NULL;
    /* Never in the past. */
    assert_int_equal(rates_create(f->store, &c, "admin", T0, &made, &error), -1);
    assert_string_equal(error.code, "BAD_REQUEST");
    assert_string_equal(error_detail_get(&error, "field"), "effective_ms");
    /* A currency is an ISO 4217 code. */
    c.effective_ms = T0 + HOUR;
    c.currency = "euro";
    assert_int_equal(rates_create(f->store, &c, "admin", T0, &made, &error), -1);
    assert_string_equal(error_detail_get(&error, "field"), "currency");
    c.currency = "EUR";
    assert_int_equal(rates_create(f->store, &c, "admin", T0, &made, &error), 0);
    assert_int_equal(made->effective_ms, T0 + HOUR);
    assert_string_equal(made->created_by, "admin");
    char first[64];
    util_strlcpy(first, made->id, sizeof first);
    berth__rate_card__free_unpacked(made, NULL);
    /* Effective 0 is now; then one currency for every card, one card per instant. */
    c.effective_ms = 0;
    assert_int_equal(rates_create(f->store, &c, "admin", T0, &made, &error), 0);
    assert_int_equal(made->effective_ms, T0);
    berth__rate_card__free_unpacked(made, NULL);
    c.currency = "USD";
    c.effective_ms = T0 + 2 * HOUR;
    assert_int_equal(rates_create(f->store, &c, "admin", T0, &made, &error), -1);
    assert_string_equal(error.code, "CONFLICT");
    c.currency = "EUR";
    c.effective_ms = T0 + HOUR;
    assert_int_equal(rates_create(f->store, &c, "admin", T0, &made, &error), -1);
    assert_string_equal(error.code, "CONFLICT");
    /* Listed by effective time. */
    Berth__RateCardList *list = NULL;
    assert_int_equal(rates_list(f->store, &list, &error), 0);
    assert_int_equal(list->n_cards, 2);
    assert_int_equal(list->cards[0]->effective_ms, T0);
    assert_string_equal(list->cards[1]->id, first);
    rates_list_free(&list);
    assert_int_equal(rates_get(f->store, first, &made, &error), 0);
    berth__rate_card__free_unpacked(made, NULL);
    assert_int_equal(rates_get(f->store, "00000000-0000-4000-8000-000000000000", &made, &error),
                     -1);
    assert_string_equal(error.code, "NOT_FOUND");
}

static void s_event(store_t *store, const char *vm, const char *type, const char *state, int64_t at)
{
    char at_text[32];
    snprintf(at_text, sizeof at_text, "%" PRId64, at);
    const char *argv[] = {
        "XADD", STORE_EVENTS, "*",     "type",
        type,   "vm",         vm,      strcmp(type, "vm.state") ? "power_state" : "state",
        state,  "owner",      "alice", "vcpus",
        "2",    "ram_mb",     "1024",  "disk_gb",
        "10",   "template",   "small", "at_ms",
        at_text
    };
    redisReply *r = store_commandv(store, (int)(sizeof argv / sizeof *argv), argv, NULL);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    freeReplyObject(r);
}

static void test_report(void **state)
{
    testenv_fixture_t *f = *state;
    const char *group = "11111111-1111-4111-8111-111111111111";
    const char *vm = "22222222-2222-4222-8222-222222222222";
    redisReply *r =
        store_command(f->store, "HSET berth:group:{%s} id %s name g version 1", group, group);
    freeReplyObject(r);
    r = store_command(f->store, "SADD berth:group-vms:{%s} %s", group, vm);
    freeReplyObject(r);
    /* Cards priced so the sums are round: 1,000 per 1,000 vCPU-hours (1 an hour) and 100 per
       1,000 GB-disk-hours (10 GB: 1 an hour); from T0 + 12 h, twice that. */
    berth_error_t error = { 0 };
    Berth__RateCard a = s_card(T0, 1000, 0, 100), b = s_card(T0 + 12 * HOUR, 2000, 0, 200);
    Berth__RateCard *made = NULL;
    assert_int_equal(rates_create(f->store, &a, "admin", T0, &made, &error), 0);
    berth__rate_card__free_unpacked(made, NULL);
    assert_int_equal(rates_create(f->store, &b, "admin", T0, &made, &error), 0);
    berth__rate_card__free_unpacked(made, NULL);
    /* Runs from T0 + 6 h to T0 + 18 h, stopped until T0 + 30 h (across midnight), shelved
       until T0 + 36 h, then disposed. */
    s_event(f->store, vm, "vm.state", "ACTIVE", T0 + 6 * HOUR);
    s_event(f->store, vm, "vm.power", "RUNNING", T0 + 6 * HOUR);
    s_event(f->store, vm, "vm.power", "STOPPED", T0 + 18 * HOUR);
    s_event(f->store, vm, "vm.state", "SHELVED", T0 + 30 * HOUR);
    s_event(f->store, vm, "vm.state", "DISPOSED", T0 + 36 * HOUR);
    usage_limits_t limits = {
        .batch = 10, .batches_per_poll = 10, .claim_idle_ms = 60000, .max_events_per_vm = 1000
    };
    usage_t *u = usage_new(f->store, USAGE_GROUP, "m1", &limits);
    assert_int_equal(usage_setup(u), 0);
    assert_int_equal(usage_poll(u), 7); /* the two rate.created events and the five */
    usage_destroy(&u);

    Berth__ChargebackReport *rep = NULL;
    assert_int_equal(
        charge_live(f->store, group, NULL, T0, T0 + 2 * DAY, T0 + 3 * DAY, 100, 100, &rep, &error),
        0);
    assert_string_equal(rep->currency, "EUR");
    assert_int_equal(rep->n_lines, 2);
    /* Day 1: compute 6 h at 1 + 6 h at 2 = 18 (two vCPUs: 36); disk (10 GB) 6 h at 1 + 12 h
       at 2 = 30; split at the rate change. */
    assert_string_equal(rep->lines[0]->day, "2023-11-15");
    assert_int_equal(rep->lines[0]->compute_ms, 12 * HOUR);
    assert_int_equal(rep->lines[0]->disk_ms, 18 * HOUR);
    assert_int_equal(rep->lines[0]->amount, 36 + 30);
    /* Day 2: disk 12 h (6 stopped, 6 shelved) at 2 an hour = 24. */
    assert_string_equal(rep->lines[1]->day, "2023-11-16");
    assert_int_equal(rep->lines[1]->compute_ms, 0);
    assert_int_equal(rep->lines[1]->disk_ms, 12 * HOUR);
    assert_int_equal(rep->lines[1]->amount, 24);
    assert_int_equal(rep->total, 90);
    berth__chargeback_report__free_unpacked(rep, NULL);
    /* A window inside: only its part, and now caps an open window. */
    assert_int_equal(charge_live(f->store, group, NULL, T0 + 17 * HOUR, T0 + 19 * HOUR,
                                 T0 + 3 * DAY, 100, 100, &rep, &error),
                     0);
    assert_int_equal(rep->n_lines, 1);
    assert_int_equal(rep->lines[0]->amount, 4 + 4); /* 1 h compute at 2x2, 2 h disk at 2 */
    berth__chargeback_report__free_unpacked(rep, NULL);
    /* One VM's lines: all of them here; another VM's: none. */
    assert_int_equal(
        charge_live(f->store, group, vm, T0, T0 + 2 * DAY, T0 + 3 * DAY, 100, 100, &rep, &error),
        0);
    assert_int_equal(rep->total, 90);
    berth__chargeback_report__free_unpacked(rep, NULL);
    assert_int_equal(charge_live(f->store, group, "33333333-3333-4333-8333-333333333333", T0,
                                 T0 + 2 * DAY, T0 + 3 * DAY, 100, 100, &rep, &error),
                     0);
    assert_int_equal(rep->n_lines, 0);
    berth__chargeback_report__free_unpacked(rep, NULL);

    /* Charged by reservation: 1 vCPU and 20 GB reserved from T0 to T0 + 12 h, nothing after.
       reserved, day 1: 12 h of 1 vCPU at 1 = 12, 20 GB at 0.1 = 24: 36.
       beyond, day 1: 6-12 h 1 vCPU over at 1 = 6 (disk 10 of 20: none); 12-18 h 2 vCPUs at 2 =
       24 and 10 GB at 0.2 = 12; 18-24 h the disk = 12: 54. Day 2: 12 h of disk = 24.
       The VM's lines keep their hours, at 0. */
    r = store_command(f->store, "HSET berth:group:{%s} charging_model reservation", group);
    freeReplyObject(r);
    r = store_command(
        f->store,
        "HSET berth:reservation-log:{%s} %lld {\"vcpus\":1,\"ram_mb\":0,\"disk_gb\":20} "
        "%lld {\"vcpus\":0,\"ram_mb\":0,\"disk_gb\":0}",
        group, (long long)T0, (long long)(T0 + 12 * HOUR));
    freeReplyObject(r);
    assert_int_equal(
        charge_live(f->store, group, NULL, T0, T0 + 2 * DAY, T0 + 3 * DAY, 100, 100, &rep, &error),
        0);
    assert_string_equal(rep->charging_model, "reservation");
    assert_int_equal(rep->n_lines, 5);
    const char *want[5][3] = { { "2023-11-15", "", "beyond" },
                               { "2023-11-15", "", "reserved" },
                               { "2023-11-15", vm, "" },
                               { "2023-11-16", "", "beyond" },
                               { "2023-11-16", vm, "" } };
    const int64_t amounts[5] = { 54, 36, 0, 24, 0 };
    for (int i = 0; i < 5; i++) {
        assert_string_equal(rep->lines[i]->day, want[i][0]);
        assert_string_equal(rep->lines[i]->vm, want[i][1]);
        assert_string_equal(rep->lines[i]->kind, want[i][2]);
        assert_int_equal(rep->lines[i]->amount, amounts[i]);
    }
    assert_int_equal(rep->lines[1]->compute_ms, 12 * HOUR); /* reserved: 12 h */
    assert_int_equal(rep->lines[2]->compute_ms, 12 * HOUR); /* the VM ran 12 h */
    assert_int_equal(rep->total, 114);
    berth__chargeback_report__free_unpacked(rep, NULL);
    /* One VM of it: its lines alone (at 0), not the group's. */
    assert_int_equal(
        charge_live(f->store, group, vm, T0, T0 + 2 * DAY, T0 + 3 * DAY, 100, 100, &rep, &error),
        0);
    assert_int_equal(rep->n_lines, 2);
    assert_int_equal(rep->total, 0);
    berth__chargeback_report__free_unpacked(rep, NULL);
    r = store_command(f->store, "HSET berth:group:{%s} charging_model allocation", group);
    freeReplyObject(r);
    /* Refusals name the field. */
    assert_int_equal(charge_live(f->store, "x", NULL, T0, T0 + DAY, T0, 100, 100, &rep, &error),
                     -1);
    assert_string_equal(error_detail_get(&error, "field"), "group");
    assert_int_equal(charge_live(f->store, group, NULL, T0, T0, T0, 100, 100, &rep, &error), -1);
    assert_string_equal(error_detail_get(&error, "field"), "to");
    assert_int_equal(
        charge_live(f->store, group, NULL, T0, T0 + 2 * DAY, T0 + 3 * DAY, 100, 1, &rep, &error),
        -1);
    assert_string_equal(error.code, "BAD_REQUEST");
}

/* Closed months: November closes an hour after it ends, and its report stays as closed; a
   late event (written by a clock behind, booked after the close) that makes November cost
   more is booked once, as an adjustment on the day it is found, never in November. */
static void test_ledger(void **state)
{
    testenv_fixture_t *f = *state;
    const char *group = "44444444-4444-4444-8444-444444444444";
    const char *vm = "55555555-5555-4555-8555-555555555555";
    const int64_t dec1 = T0 + 16 * DAY; /* 2023-12-01T00:00:00Z */
    redisReply *r =
        store_command(f->store, "HSET berth:group:{%s} id %s name g version 1", group, group);
    freeReplyObject(r);
    r = store_command(f->store, "ZADD berth:groups 0 %s", group);
    freeReplyObject(r);
    r = store_command(f->store, "SADD berth:group-vms:{%s} %s", group, vm);
    freeReplyObject(r);
    berth_error_t error = { 0 };
    Berth__RateCard a = s_card(T0, 1000, 0, 100);
    Berth__RateCard *made = NULL;
    assert_int_equal(rates_create(f->store, &a, "admin", T0, &made, &error), 0);
    berth__rate_card__free_unpacked(made, NULL);
    /* Runs 6 h to 18 h (2 vCPUs at 1 = 24), disk 6 h to 36 h (10 GB at 0.1 = 30): 54. */
    s_event(f->store, vm, "vm.state", "ACTIVE", T0 + 6 * HOUR);
    s_event(f->store, vm, "vm.power", "RUNNING", T0 + 6 * HOUR);
    s_event(f->store, vm, "vm.power", "STOPPED", T0 + 18 * HOUR);
    s_event(f->store, vm, "vm.state", "DISPOSED", T0 + 36 * HOUR);
    usage_limits_t limits = {
        .batch = 10, .batches_per_poll = 10, .claim_idle_ms = 60000, .max_events_per_vm = 1000
    };
    usage_t *u = usage_new(f->store, USAGE_GROUP, "m1", &limits);
    assert_int_equal(usage_setup(u), 0);
    assert_true(usage_poll(u) >= 4);
    ledger_limits_t lim = { .max_vms = 100, .max_lines = 1000, .close_ms = HOUR };
    Berth__ChargebackReport *rep = NULL;
    /* Not yet an hour into December: nothing is closed. */
    assert_int_equal(ledger_group(f->store, group, dec1 + 30 * MIN, &lim, &error), 0);
    r = store_command(f->store, "HEXISTS berth:charge-closed:{%s} 2023-11", group);
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
    assert_int_equal(ledger_group(f->store, group, dec1 + 2 * HOUR, &lim, &error), 0);
    assert_int_equal(
        ledger_report(f->store, group, NULL, T0, dec1, dec1 + 2 * HOUR, 100, 1000, &rep, &error),
        0);
    assert_int_equal(rep->total, 54);
    berth__chargeback_report__free_unpacked(rep, NULL);
    /* A late event: the VM ACTIVE again (powered off) from T0 + 40 h, its disk billed until
       November ends: 344 h at 1 = 344 more for November, found at dec1 + 3 h. */
    s_event(f->store, vm, "vm.state", "ACTIVE", T0 + 40 * HOUR);
    assert_int_equal(usage_poll(u), 2); /* the chargeback.closed event and the late one */
    usage_destroy(&u);
    assert_int_equal(
        charge_live(f->store, group, NULL, T0, dec1, dec1 + 3 * HOUR, 100, 1000, &rep, &error), 0);
    assert_int_equal(rep->total, 54 + 344);
    berth__chargeback_report__free_unpacked(rep, NULL);
    assert_int_equal(ledger_group(f->store, group, dec1 + 3 * HOUR, &lim, &error), 0);
    assert_int_equal(ledger_group(f->store, group, dec1 + 4 * HOUR, &lim, &error), 0); /* once */
    /* November as closed; the adjustment in December, on the day it was booked. */
    assert_int_equal(
        ledger_report(f->store, group, NULL, T0, dec1, dec1 + 5 * HOUR, 100, 1000, &rep, &error),
        0);
    assert_int_equal(rep->total, 54);
    berth__chargeback_report__free_unpacked(rep, NULL);
    assert_int_equal(ledger_report(f->store, group, NULL, dec1, dec1 + DAY, dec1 + 5 * HOUR, 100,
                                   1000, &rep, &error),
                     0);
    int adjustments = 0;
    for (size_t i = 0; i < rep->n_lines; i++)
        if (strcmp(rep->lines[i]->kind, "adjustment") == 0) {
            adjustments++;
            assert_string_equal(rep->lines[i]->day, "2023-12-01");
            assert_string_equal(rep->lines[i]->vm, vm);
            assert_int_equal(rep->lines[i]->amount, 344);
        }
    assert_int_equal(adjustments, 1);
    berth__chargeback_report__free_unpacked(rep, NULL);
    /* A window over more months than a report reads is refused, naming to. */
    assert_int_equal(ledger_report(f->store, group, NULL, T0, T0 + 70 * 31 * DAY,
                                   T0 + 70 * 31 * DAY, 100, 1000000, &rep, &error),
                     -1);
    assert_string_equal(error.code, "BAD_REQUEST");
    assert_string_equal(error_detail_get(&error, "field"), "to");
    /* The VM alone sees its adjustment too; a window before it was booked does not. */
    assert_int_equal(ledger_report(f->store, group, vm, dec1, dec1 + 3 * HOUR, dec1 + 5 * HOUR, 100,
                                   1000, &rep, &error),
                     0);
    for (size_t i = 0; i < rep->n_lines; i++)
        assert_string_not_equal(rep->lines[i]->kind, "adjustment");
    berth__chargeback_report__free_unpacked(rep, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_units),
        cmocka_unit_test(test_rounding_half_up),
        cmocka_unit_test(test_split_at_rate_change),
        cmocka_unit_test(test_classes),
        cmocka_unit_test_setup_teardown(test_rate_cards, testenv_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_report, testenv_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_ledger, testenv_setup, testenv_teardown),
    };
    return cmocka_run_group_tests(tests, testenv_group_setup, testenv_group_teardown);
}
