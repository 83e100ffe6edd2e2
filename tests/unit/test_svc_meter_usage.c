/*  meter usage: hand-made vm.state events in a real Redis stream, read through the "meter"
    consumer group, turned into hours for a window. A restart (new consumer, same group), a
    redelivery of everything, a consumer that died holding events and garbage events must
    neither lose nor double-count an hour. */
#include "testenv.h"
#include "usage.h" /* tests/CMakeLists.txt adds no service include dir */
#include "util.h"

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#define T0   INT64_C(1700000000000) /* a fixed past instant: reports are computed for it */
#define MIN  (INT64_C(60) * 1000)
#define HOUR (INT64_C(60) * MIN)

static testenv_redis_t *s_redis;

typedef struct {
    store_t *store;
} fixture_t;

static const usage_limits_t s_limits = {
    .batch = 3, /* small, so the tests go through several batches */
    .batches_per_poll = 2,
    .claim_idle_ms = 60000,
    .max_events_per_vm = 1000,
};

static int s_setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->store = testenv_store(s_redis, 1);
    assert_non_null(f->store);
    *state = f;
    return 0;
}

static int s_teardown(void **state)
{
    fixture_t *f = *state;
    store_destroy(&f->store);
    free(f);
    return 0;
}

/* XADD a vm.state event; at 0 leaves at_ms out. Returns the entry id (static buffer). */
static const char *s_vm_event(store_t *store, const char *vm, const char *state, int64_t at,
                              const char *owner, int vcpus, int ram_mb, int disk_gb)
{
    static char id[64];
    char at_text[32], v[16], r[16], d[16];
    snprintf(at_text, sizeof at_text, "%" PRId64, at);
    snprintf(v, sizeof v, "%d", vcpus);
    snprintf(r, sizeof r, "%d", ram_mb);
    snprintf(d, sizeof d, "%d", disk_gb);
    char key[128];
    snprintf(key, sizeof key, "berth:vm:{%s}", vm);
    const char *argv[] = { "XADD", STORE_EVENTS, "*",     "type",   "vm.state", "key",     key,
                           "vm",   vm,           "state", state,    "version",  "1",       "owner",
                           owner,  "vcpus",      v,       "ram_mb", r,          "disk_gb", d,
                           "host", "host-1",     "at_ms", at_text };
    int argc = (int)(sizeof argv / sizeof *argv) - (at ? 0 : 2);
    redisReply *reply = store_commandv(store, argc, argv, NULL);
    assert_non_null(reply);
    assert_int_equal(reply->type, REDIS_REPLY_STRING);
    util_strlcpy(id, reply->str, sizeof id);
    freeReplyObject(reply);
    return id;
}

/* XADD an arbitrary entry from field/value pairs (NULL-terminated). */
static void s_raw_event(store_t *store, ...)
{
    const char *argv[40] = { "XADD", STORE_EVENTS, "*" };
    int argc = 3;
    va_list ap;
    va_start(ap, store);
    for (const char *s = va_arg(ap, const char *); s && argc < 40; s = va_arg(ap, const char *))
        argv[argc++] = s;
    va_end(ap);
    redisReply *reply = store_commandv(store, argc, argv, NULL);
    assert_non_null(reply);
    assert_int_equal(reply->type, REDIS_REPLY_STRING);
    freeReplyObject(reply);
}

static long long s_integer(store_t *store, const char *command)
{
    redisReply *r = store_command(store, command);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long value = r->integer;
    freeReplyObject(r);
    return value;
}

/* Entries read by some consumer of the group and not acknowledged. */
static long long s_pending(store_t *store)
{
    redisReply *r = store_command(store, "XPENDING %s %s", STORE_EVENTS, USAGE_GROUP);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    long long value = r->element[0]->integer;
    freeReplyObject(r);
    return value;
}

/* Lifecycle events recorded for a VM (each applied once, however often it was delivered). */
static size_t s_recorded(store_t *store, const char *vm)
{
    redisReply *r = store_command(store, "HGET berth:usage:{%s} events", vm);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    json_t *events = json_loads(r->str, 0, NULL);
    assert_non_null(events);
    size_t n = json_array_size(events);
    json_decref(events);
    freeReplyObject(r);
    return n;
}

/* Poll until a round handles nothing; the total handled. */
static int s_drain(usage_t *usage)
{
    int total = 0;
    for (int round = 0; round < 1000; round++) {
        int n = usage_poll(usage);
        assert_true(n >= 0);
        if (n == 0)
            return total;
        total += n;
    }
    fail_msg("usage_poll never ran dry");
    return -1;
}

static Berth__UsageReport *s_report(store_t *store, int64_t from, int64_t to, const char *owner,
                                    int64_t now)
{
    Berth__UsageReport *report = NULL;
    berth_error_t error = { 0 };
    int rc = usage_report(store, from, to, owner, now, 1000, &report, &error);
    if (rc != 0)
        fail_msg("usage_report: %d %s", rc, error.message);
    return report;
}

static const Berth__UsageRecord *s_find(const Berth__UsageReport *report, const char *vm)
{
    for (size_t i = 0; i < report->n_usage; i++)
        if (strcmp(report->usage[i]->vm, vm) == 0)
            return report->usage[i];
    return NULL;
}

static void s_assert_hours(const Berth__UsageRecord *rec, int64_t active_ms, double vcpu_h,
                           double ram_h, double disk_h)
{
    assert_non_null(rec);
    assert_int_equal(rec->active_ms, active_ms);
    assert_true(fabs(rec->vcpu_hours - vcpu_h) < 1e-9);
    assert_true(fabs(rec->ram_gb_hours - ram_h) < 1e-9);
    assert_true(fabs(rec->disk_gb_hours - disk_h) < 1e-9);
}

/* The story every user sees: hours per VM for a window, open intervals up to now. */
static void s_add_story(store_t *store)
{
    /* vm-a: 2 vCPU, 4 GB, 20 GB disk, ACTIVE from T0 for two hours. */
    s_vm_event(store, "vm-a", "PROVISIONING", T0 - 5 * MIN, "alice", 2, 4096, 20);
    s_vm_event(store, "vm-a", "ACTIVE", T0, "alice", 2, 4096, 20);
    s_raw_event(store, "type", "task.state", "task", "t-1", "state", "SUCCEEDED", NULL);
    s_vm_event(store, "vm-a", "DISPOSING", T0 + 2 * HOUR, "alice", 2, 4096, 20);
    /* A writer without the flavor at hand (0) must not wipe the one recorded. */
    s_vm_event(store, "vm-a", "DISPOSED", T0 + 2 * HOUR + MIN, "alice", 0, 0, 0);
    /* vm-b: 4 vCPU, 2 GB, 10 GB disk, ACTIVE from T0 + 1h and still running. */
    s_vm_event(store, "vm-b", "ACTIVE", T0 + HOUR, "bob", 4, 2048, 10);
    /* vm-c: never became ACTIVE. */
    s_vm_event(store, "vm-c", "ERROR", T0 + HOUR, "bob", 1, 1024, 5);
}

static void s_assert_story(store_t *store)
{
    /* Window [T0, T0 + 3h), asked at T0 + 3h. */
    Berth__UsageReport *report = s_report(store, T0, T0 + 3 * HOUR, NULL, T0 + 3 * HOUR);
    assert_int_equal(report->n_usage, 2);
    assert_string_equal(report->usage[0]->vm, "vm-a");
    assert_string_equal(report->usage[0]->owner, "alice");
    assert_string_equal(report->usage[0]->host, "host-1");
    s_assert_hours(s_find(report, "vm-a"), 2 * HOUR, 4.0, 8.0, 40.0);
    s_assert_hours(s_find(report, "vm-b"), 2 * HOUR, 8.0, 4.0, 20.0);
    usage_report_free(&report);
    assert_null(report);
}

static void test_hours_for_a_window(void **state)
{
    fixture_t *f = *state;
    s_add_story(f->store);
    usage_t *usage = usage_new(f->store, USAGE_GROUP, "meter-1", &s_limits);
    assert_non_null(usage);
    assert_int_equal(usage_setup(usage), 0);
    assert_int_equal(s_drain(usage), 7);
    assert_int_equal(s_pending(f->store), 0);
    assert_int_equal(usage_refused(usage), 0);
    s_assert_story(f->store);

    /* Part of a window: [T0 + 90min, T0 + 2h30) at a later now. */
    Berth__UsageReport *report =
        s_report(f->store, T0 + 90 * MIN, T0 + 150 * MIN, "", T0 + 10 * HOUR);
    s_assert_hours(s_find(report, "vm-a"), 30 * MIN, 1.0, 2.0, 10.0);
    s_assert_hours(s_find(report, "vm-b"), 60 * MIN, 4.0, 2.0, 10.0);
    usage_report_free(&report);

    /* to = 0 means now: vm-b's open interval counts up to now only. */
    report = s_report(f->store, T0, 0, NULL, T0 + HOUR + 30 * MIN);
    s_assert_hours(s_find(report, "vm-b"), 30 * MIN, 2.0, 1.0, 5.0);
    assert_int_equal(report->to_ms, T0 + HOUR + 30 * MIN);
    usage_report_free(&report);

    /* One owner. */
    report = s_report(f->store, T0, T0 + 3 * HOUR, "bob", T0 + 3 * HOUR);
    assert_int_equal(report->n_usage, 1);
    assert_string_equal(report->usage[0]->vm, "vm-b");
    usage_report_free(&report);

    /* Before anything ran, and after vm-a ended (vm-b still open): only what overlaps. */
    report = s_report(f->store, T0 - 10 * HOUR, T0, NULL, T0 + 3 * HOUR);
    assert_int_equal(report->n_usage, 0);
    usage_report_free(&report);
    report = s_report(f->store, T0 + 5 * HOUR, T0 + 6 * HOUR, NULL, T0 + 7 * HOUR);
    assert_int_equal(report->n_usage, 1);
    s_assert_hours(s_find(report, "vm-b"), HOUR, 4.0, 2.0, 10.0);
    usage_report_free(&report);
    usage_destroy(&usage);
    assert_null(usage);
}

/* A restart is a new consumer in the same group; a redelivery of every entry (the group
   rewound) is applied again by a third one. Totals never change. */
static void test_restart_and_redelivery(void **state)
{
    fixture_t *f = *state;
    s_add_story(f->store);
    usage_t *usage = usage_new(f->store, USAGE_GROUP, "meter-1", &s_limits);
    assert_non_null(usage);
    assert_int_equal(s_drain(usage), 7);
    usage_destroy(&usage);

    usage = usage_new(f->store, USAGE_GROUP, "meter-2", &s_limits);
    assert_non_null(usage);
    assert_int_equal(usage_setup(usage), 0);
    assert_int_equal(s_drain(usage), 0);
    s_assert_story(f->store);
    usage_destroy(&usage);

    redisReply *r = store_command(f->store, "XGROUP SETID %s %s 0", STORE_EVENTS, USAGE_GROUP);
    assert_non_null(r);
    assert_int_not_equal(r->type, REDIS_REPLY_ERROR);
    freeReplyObject(r);
    usage = usage_new(f->store, USAGE_GROUP, "meter-3", &s_limits);
    assert_non_null(usage);
    assert_int_equal(s_drain(usage), 7); /* every entry seen again ... */
    assert_int_equal(s_pending(f->store), 0);
    s_assert_story(f->store); /* ... and nothing counted twice */
    assert_int_equal(s_recorded(f->store, "vm-a"), 4);
    assert_int_equal(s_recorded(f->store, "vm-b"), 1);

    /* A new event after all that still counts. */
    s_vm_event(f->store, "vm-b", "DISPOSING", T0 + 2 * HOUR, "bob", 4, 2048, 10);
    assert_int_equal(s_drain(usage), 1);
    Berth__UsageReport *report = s_report(f->store, T0, T0 + 3 * HOUR, NULL, T0 + 3 * HOUR);
    s_assert_hours(s_find(report, "vm-b"), HOUR, 4.0, 2.0, 10.0);
    usage_report_free(&report);
    usage_destroy(&usage);
}

/* A meter restarted under the same name finds what it read and never applied in its own
   pending list; entries a dead meter (other name) read are claimed after claim_idle_ms,
   even when a later event of the same VM was applied first. */
static void test_dead_consumers(void **state)
{
    fixture_t *f = *state;
    usage_t *usage = usage_new(f->store, USAGE_GROUP, "meter-1", &s_limits);
    assert_non_null(usage);
    assert_int_equal(usage_setup(usage), 0);

    /* "meter-1" read two events, then died before applying them. */
    s_vm_event(f->store, "vm-a", "ACTIVE", T0, "alice", 2, 4096, 20);
    s_vm_event(f->store, "vm-a", "DISPOSING", T0 + HOUR, "alice", 2, 4096, 20);
    redisReply *r = store_command(f->store, "XREADGROUP GROUP %s meter-1 COUNT 10 STREAMS %s >",
                                  USAGE_GROUP, STORE_EVENTS);
    assert_non_null(r);
    freeReplyObject(r);
    assert_int_equal(s_pending(f->store), 2);
    assert_int_equal(s_drain(usage), 2); /* the same name again: its own pending list */
    assert_int_equal(s_pending(f->store), 0);
    Berth__UsageReport *report = s_report(f->store, T0, T0 + 2 * HOUR, NULL, T0 + 2 * HOUR);
    s_assert_hours(s_find(report, "vm-a"), HOUR, 2.0, 4.0, 20.0);
    usage_report_free(&report);
    usage_destroy(&usage);

    /* "ghost" reads vm-b's ACTIVE and dies; meter-2 applies the later DISPOSING first. */
    s_vm_event(f->store, "vm-b", "ACTIVE", T0 + HOUR, "bob", 4, 2048, 10);
    r = store_command(f->store, "XREADGROUP GROUP %s ghost COUNT 10 STREAMS %s >", USAGE_GROUP,
                      STORE_EVENTS);
    assert_non_null(r);
    freeReplyObject(r);
    s_vm_event(f->store, "vm-b", "DISPOSING", T0 + 3 * HOUR, "bob", 4, 2048, 10);
    usage_limits_t quick = s_limits;
    quick.claim_idle_ms = 200;
    usage = usage_new(f->store, USAGE_GROUP, "meter-2", &quick);
    assert_non_null(usage);
    int64_t started = testenv_now_ms();
    assert_int_equal(s_drain(usage), 1);
    assert_int_equal(s_pending(f->store), 1); /* ghost's entry is not idle long enough yet */
    report = s_report(f->store, T0, T0 + 4 * HOUR, NULL, T0 + 4 * HOUR);
    assert_null(s_find(report, "vm-b")); /* a close without an open counts nothing */
    usage_report_free(&report);

    int64_t deadline = testenv_now_ms() + 10000;
    while (s_pending(f->store) > 0 && testenv_now_ms() < deadline) {
        assert_true(usage_poll(usage) >= 0);
        testenv_pause_ms(20);
    }
    assert_int_equal(s_pending(f->store), 0);
    assert_true(testenv_now_ms() - started >= 200);
    report = s_report(f->store, T0, T0 + 4 * HOUR, NULL, T0 + 4 * HOUR);
    s_assert_hours(s_find(report, "vm-b"), 2 * HOUR, 8.0, 4.0, 20.0);
    s_assert_hours(s_find(report, "vm-a"), HOUR, 2.0, 4.0, 20.0);
    usage_report_free(&report);
    usage_destroy(&usage);
}

/* Garbage in the stream is acknowledged and refused, never applied, never stuck. */
static void test_garbage_events(void **state)
{
    fixture_t *f = *state;
    s_raw_event(f->store, "type", "vm.state", "state", "ACTIVE", NULL);               /* no vm */
    s_raw_event(f->store, "type", "vm.state", "vm", "x}{y", "state", "ACTIVE", NULL); /* tag */
    s_raw_event(f->store, "type", "vm.state", "vm", "vm-z", NULL);                    /* no state */
    s_raw_event(f->store, "type", "vm.state", "vm", "", "state", "", NULL);
    s_raw_event(f->store, "garbage", "1", NULL);
    /* Bad numbers and at_ms are ignored: the interval still counts from the entry's time. */
    s_raw_event(f->store, "type", "vm.state", "vm", "vm-n", "state", "ACTIVE", "vcpus", "-4",
                "ram_mb", "lots", "at_ms", "yesterday", NULL);
    usage_t *usage = usage_new(f->store, USAGE_GROUP, "meter-1", &s_limits);
    assert_non_null(usage);
    assert_int_equal(s_drain(usage), 6);
    assert_int_equal(usage_refused(usage), 4);
    assert_int_equal(s_pending(f->store), 0);
    assert_int_equal(s_integer(f->store, "EXISTS berth:usage:{vm-z}"), 0);
    assert_int_equal(s_integer(f->store, "ZCARD " USAGE_INDEX), 1);
    int64_t now = util_now_ms();
    Berth__UsageReport *report = s_report(f->store, now - HOUR, 0, NULL, now + HOUR);
    const Berth__UsageRecord *rec = s_find(report, "vm-n");
    assert_non_null(rec);
    assert_true(rec->active_ms > 59 * MIN && rec->active_ms <= HOUR + MIN);
    assert_true(rec->vcpu_hours == 0.0);
    usage_report_free(&report);
    usage_destroy(&usage);
}

/* Windows that make no sense are refused; a report past its size limit says so. */
static void test_bad_windows(void **state)
{
    fixture_t *f = *state;
    s_add_story(f->store);
    usage_t *usage = usage_new(f->store, USAGE_GROUP, "meter-1", &s_limits);
    assert_non_null(usage);
    s_drain(usage);
    Berth__UsageReport *report = NULL;
    berth_error_t error = { 0 };
    assert_int_equal(usage_report(f->store, T0, T0 - 1, NULL, T0, 10, &report, &error),
                     USAGE_BAD_WINDOW);
    assert_string_equal(error.code, "BAD_REQUEST");
    assert_string_equal(error_detail_get(&error, "field"), "from_ms");
    assert_int_equal(usage_report(f->store, -1, T0, NULL, T0, 10, &report, &error),
                     USAGE_BAD_WINDOW);
    assert_string_equal(error_detail_get(&error, "field"), "from_ms");
    assert_int_equal(usage_report(f->store, 0, -5, NULL, T0, 10, &report, &error),
                     USAGE_BAD_WINDOW);
    assert_string_equal(error_detail_get(&error, "field"), "to_ms");
    assert_int_equal(usage_report(f->store, T0 + HOUR, 0, NULL, T0, 10, &report, &error),
                     USAGE_BAD_WINDOW); /* from in the future of now, to = now */
    assert_string_equal(error_detail_get(&error, "field"), "from_ms");
    char long_owner[300];
    memset(long_owner, 'a', sizeof long_owner - 1);
    long_owner[sizeof long_owner - 1] = '\0';
    assert_int_equal(usage_report(f->store, T0, T0 + HOUR, long_owner, T0, 10, &report, &error),
                     USAGE_BAD_WINDOW);
    assert_string_equal(error_detail_get(&error, "field"), "owner");
    assert_null(report);
    assert_int_equal(
        usage_report(f->store, T0, T0 + 3 * HOUR, NULL, T0 + 3 * HOUR, 1, &report, &error),
        USAGE_TOO_MANY);
    assert_string_equal(error.code, "BAD_REQUEST");
    assert_string_equal(error_detail_get(&error, "max_vms"), "1");
    assert_null(report);
    assert_int_equal(
        usage_report(f->store, T0, T0 + 3 * HOUR, "bob", T0 + 3 * HOUR, 1, &report, &error), 0);
    assert_int_equal(report->n_usage, 1);
    usage_report_free(&report);
    /* An empty window is valid and empty. */
    assert_int_equal(
        usage_report(f->store, T0 + HOUR, T0 + HOUR, NULL, T0 + 3 * HOUR, 10, &report, &error), 0);
    assert_int_equal(report->n_usage, 0);
    usage_report_free(&report);
    usage_destroy(&usage);
}

/* A VM that goes ACTIVE and back many times keeps a bounded event list; folding old
   events into closed intervals changes no total, and redelivery of folded events is
   still ignored. */
static void test_many_transitions(void **state)
{
    fixture_t *f = *state;
    usage_limits_t small = s_limits;
    small.max_events_per_vm = 4;
    for (int i = 0; i < 10; i++) {
        s_vm_event(f->store, "vm-l", "ACTIVE", T0 + i * 20 * MIN, "carol", 1, 1024, 1);
        s_vm_event(f->store, "vm-l", "ERROR", T0 + i * 20 * MIN + 10 * MIN, "carol", 1, 1024, 1);
    }
    usage_t *usage = usage_new(f->store, USAGE_GROUP, "meter-1", &small);
    assert_non_null(usage);
    assert_int_equal(s_drain(usage), 20);
    Berth__UsageReport *report = s_report(f->store, T0, T0 + 10 * HOUR, NULL, T0 + 10 * HOUR);
    s_assert_hours(s_find(report, "vm-l"), 100 * MIN, 100.0 / 60, 100.0 / 60, 100.0 / 60);
    usage_report_free(&report);
    assert_true(s_recorded(f->store, "vm-l") <= 4);

    redisReply *r = store_command(f->store, "XGROUP SETID %s %s 0", STORE_EVENTS, USAGE_GROUP);
    freeReplyObject(r);
    assert_int_equal(s_drain(usage), 20);
    report = s_report(f->store, T0, T0 + 10 * HOUR, NULL, T0 + 10 * HOUR);
    s_assert_hours(s_find(report, "vm-l"), 100 * MIN, 100.0 / 60, 100.0 / 60, 100.0 / 60);
    usage_report_free(&report);
    usage_destroy(&usage);
}

/* The group disappears (FLUSHALL): the next poll creates it again and carries on. */
static void test_group_recreated(void **state)
{
    fixture_t *f = *state;
    usage_t *usage = usage_new(f->store, USAGE_GROUP, "meter-1", &s_limits);
    assert_non_null(usage);
    assert_int_equal(usage_setup(usage), 0);
    redisReply *r = store_command(f->store, "FLUSHALL");
    freeReplyObject(r);
    assert_int_equal(usage_poll(usage), -1); /* NOGROUP noticed */
    s_vm_event(f->store, "vm-a", "ACTIVE", T0, "alice", 2, 4096, 20);
    assert_int_equal(s_drain(usage), 1);
    assert_int_equal(s_integer(f->store, "ZCARD " USAGE_INDEX), 1);
    usage_destroy(&usage);
}

int main(void)
{
    s_redis = testenv_redis_start(0);
    if (!s_redis)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hours_for_a_window, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_restart_and_redelivery, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_dead_consumers, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_garbage_events, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_bad_windows, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_many_transitions, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_group_recreated, s_setup, s_teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    testenv_redis_destroy(&s_redis);
    return rc;
}
