/*  test_audit: the audit writer (lib/audit.c) on a real Redis. Queued records reach the
    stream; with Redis frozen a push never waits, the queue holds audit_queue_max records and
    the rest are dropped and counted; once Redis answers again what waited is written. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "audit.h"
#include "testenv.h"

#include <czmq.h>
#include <stdio.h>
#include <string.h>

typedef testenv_fixture_t fixture_t;

static long long s_xlen(store_t *store)
{
    redisReply *r = store_command(store, "XLEN " KEYS_AUDIT);
    long long n = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    freeReplyObject(r);
    return n;
}

/* Poll until the stream holds want entries (10 s at most). */
static void s_wait_xlen(store_t *store, long long want)
{
    int64_t deadline = zclock_mono() + 10000;
    while (s_xlen(store) != want && zclock_mono() < deadline)
        zclock_sleep(10);
    assert_int_equal(s_xlen(store), want);
}

static audit_log_t *s_log(fixture_t *f, size_t queue_max)
{
    audit_log_options_t o = { .redis_host = "127.0.0.1",
                              .redis_port = testenv_redis_port(f->redis),
                              .queue_max = queue_max,
                              .batch_max = 4,
                              .trim_every_ms = 50 };
    audit_log_t *log = audit_log_new(&o);
    assert_non_null(log);
    return log;
}

static audit_record_t s_record(int i)
{
    audit_record_t r = { .at_ms = 1000 + i };
    snprintf(r.actor, sizeof r.actor, "alice");
    snprintf(r.action, sizeof r.action, "vm.dispose");
    snprintf(r.request_id, sizeof r.request_id, "rid-%d", i);
    snprintf(r.result, sizeof r.result, "202");
    return r;
}

static void test_records_reach_the_stream(void **state)
{
    fixture_t *f = *state;
    audit_log_t *log = s_log(f, 100);
    for (int i = 0; i < 10; i++) {
        audit_record_t r = s_record(i);
        assert_int_equal(audit_log_push(log, &r), 0);
    }
    s_wait_xlen(f->store, 10);
    assert_int_equal(audit_log_dropped(log), 0);
    audit_log_destroy(&log);
    assert_null(log);
}

static void test_redis_down_drops_without_waiting(void **state)
{
    fixture_t *f = *state;
    audit_log_t *log = s_log(f, 8);
    assert_int_equal(testenv_redis_pause(f->redis), 0);
    int64_t started = zclock_mono();
    int queued = 0;
    for (int i = 0; i < 40; i++) {
        audit_record_t r = s_record(i);
        queued += audit_log_push(log, &r) == 0;
    }
    /* Forty pushes against a frozen Redis take no Redis time at all. */
    assert_true(zclock_mono() - started < 500);
    /* The writer holds one batch (4) and the queue 8: at most 12 are kept. */
    assert_true(queued <= 12);
    assert_int_equal(audit_log_dropped(log), (uint64_t)(40 - queued));
    assert_int_equal(testenv_redis_resume(f->redis), 0);
    s_wait_xlen(f->store, queued);
    audit_log_destroy(&log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_records_reach_the_stream, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_redis_down_drops_without_waiting, testenv_setup,
                                        testenv_teardown),
    };
    return cmocka_run_group_tests(tests, testenv_group_setup, testenv_group_teardown);
}
