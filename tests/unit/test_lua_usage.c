/*  test_lua_usage: lib/lua/usage_apply.lua and usage_rows.lua on a real Redis. An event is
    applied and acknowledged in one step, a redelivered one only acknowledged; a late event
    takes its place by stream id and the intervals are derived again; the index scores a VM
    by the end of its last interval (+inf while open); one call applies a batch in order;
    power events bill by the (state, power) pair, UNKNOWN as the last known power. Rows are
    filtered by owner and time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "lua_scripts.h"
#include "testenv.h"

#include <stdlib.h>
#include <string.h>

typedef testenv_fixture_t fixture_t;

/* A billing table as usage.c builds it from lib/lifecycle.c (the shape, not every row). */
#define S_BILLING                                                                                \
    "{\"bill\":{\"ACTIVE\":{\"\":3,\"STOPPED\":2},\"EXPIRED\":{\"\":2}},"                     \
    "\"keep\":{\"UNKNOWN\":true}}"

static const char *s_max_events = "100";

/* Apply one event: state names a lifecycle state, or "power:X" a power state. */
static long long s_apply(store_t *store, const char *id, const char *state, const char *at)
{
    int power = strncmp(state, "power:", 6) == 0;
    const char *argv[] = { "t:events",
                           "t:usage:vms",
                           "t:usage:{vm}",
                           "g",
                           s_max_events,
                           S_BILLING,
                           id,
                           "vm",
                           power ? "" : state,
                           power ? state + 6 : "",
                           at,
                           "ann",
                           "tmpl",
                           "h1",
                           "2",
                           "2048",
                           "20" };
    redisReply *r = store_run(store, &lua_usage_apply, 3, 17, argv);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 1);
    assert_int_equal(r->element[0]->type, REDIS_REPLY_INTEGER);
    long long v = r->element[0]->integer;
    freeReplyObject(r);
    return v;
}

static void s_assert_field(store_t *store, const char *field, const char *want)
{
    redisReply *r = store_command(store, "HGET t:usage:{vm} %s", field);
    assert_non_null(r);
    assert_string_equal(r->type == REDIS_REPLY_STRING ? r->str : "(nil)", want);
    freeReplyObject(r);
}

static void s_assert_score(store_t *store, const char *want)
{
    redisReply *r = store_command(store, "ZSCORE t:usage:vms vm");
    assert_non_null(r);
    assert_string_equal(r->str, want);
    freeReplyObject(r);
}

static void test_apply_in_any_order(void **state)
{
    fixture_t *f = *state;
    /* The entry is pending in the group until the script acknowledges it. */
    redisReply *r = store_command(f->store, "XADD t:events 100-0 type vm.state");
    freeReplyObject(r);
    r = store_command(f->store, "XGROUP CREATE t:events g 0");
    freeReplyObject(r);
    r = store_command(f->store, "XREADGROUP GROUP g c STREAMS t:events >");
    freeReplyObject(r);

    assert_int_equal(s_apply(f->store, "100-0", "ACTIVE", "1000"), 1);
    r = store_command(f->store, "XPENDING t:events g");
    assert_int_equal(r->element[0]->integer, 0);
    freeReplyObject(r);
    s_assert_field(f->store, "intervals", "[[1000,0]]");
    s_assert_field(f->store, "owner", "ann");
    s_assert_score(f->store, "inf");

    assert_int_equal(s_apply(f->store, "100-0", "ACTIVE", "1000"), 0); /* redelivered */
    assert_int_equal(s_apply(f->store, "300-0", "DISPOSED", "5000"), 1);
    s_assert_field(f->store, "intervals", "[[1000,5000]]");
    s_assert_score(f->store, "5000");
    /* Late events, in their place: a STOPPED at 2000 and an ACTIVE at 3000. */
    assert_int_equal(s_apply(f->store, "200-0", "DISPOSING", "2000"), 1);
    assert_int_equal(s_apply(f->store, "250-0", "ACTIVE", "3000"), 1);
    s_assert_field(f->store, "intervals", "[[1000,2000],[3000,5000]]");
    s_assert_field(f->store, "last_event", "300-0");
    s_assert_score(f->store, "5000");
}

/* Leases: an EXPIRED VM (billing 2: disk only) stops its compute time, not its disk time;
   disposal ends both, and the index scores the end of the disk time. */
static void test_disk_only_billing(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(s_apply(f->store, "100-0", "ACTIVE", "1000"), 1);
    assert_int_equal(s_apply(f->store, "200-0", "EXPIRED", "4000"), 1);
    s_assert_field(f->store, "intervals", "[[1000,4000]]");
    s_assert_field(f->store, "disk_intervals", "[[1000,0]]");
    s_assert_score(f->store, "inf");
    assert_int_equal(s_apply(f->store, "300-0", "ACTIVE", "6000"), 1);   /* revived */
    assert_int_equal(s_apply(f->store, "400-0", "DISPOSED", "9000"), 1); /* disposed */
    s_assert_field(f->store, "intervals", "[[1000,4000],[6000,9000]]");
    s_assert_field(f->store, "disk_intervals", "[[1000,9000]]");
    s_assert_score(f->store, "9000");
}

/* Power: an ACTIVE VM stopped bills its disk only until it runs again; an UNKNOWN power (host
   DOWN) changes nothing, whichever power it follows; a late STOPPED takes its place; the
   lifecycle state and the power are followed across events. */
static void test_power_billing(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(s_apply(f->store, "100-0", "power:RUNNING", "500"), 1);
    assert_int_equal(s_apply(f->store, "110-0", "ACTIVE", "1000"), 1);
    assert_int_equal(s_apply(f->store, "200-0", "power:STOPPED", "2000"), 1);
    assert_int_equal(s_apply(f->store, "250-0", "power:UNKNOWN", "2500"), 1); /* still off */
    assert_int_equal(s_apply(f->store, "300-0", "power:RUNNING", "3000"), 1);
    assert_int_equal(s_apply(f->store, "350-0", "power:UNKNOWN", "3500"), 1); /* still on */
    s_assert_field(f->store, "intervals", "[[1000,2000],[3000,0]]");
    s_assert_field(f->store, "disk_intervals", "[[1000,0]]");
    /* A stop that arrives late (another meter held it) lands in its place. */
    assert_int_equal(s_apply(f->store, "400-0", "EXPIRED", "6000"), 1);
    assert_int_equal(s_apply(f->store, "380-0", "power:STOPPED", "5000"), 1);
    s_assert_field(f->store, "intervals", "[[1000,2000],[3000,5000]]");
    s_assert_field(f->store, "disk_intervals", "[[1000,0]]");
    /* Revived: ACTIVE while still STOPPED bills disk only, until it runs. */
    assert_int_equal(s_apply(f->store, "500-0", "ACTIVE", "7000"), 1);
    assert_int_equal(s_apply(f->store, "510-0", "power:RUNNING", "7500"), 1);
    assert_int_equal(s_apply(f->store, "600-0", "DISPOSED", "9000"), 1);
    s_assert_field(f->store, "intervals", "[[1000,2000],[3000,5000],[7500,9000]]");
    s_assert_field(f->store, "disk_intervals", "[[1000,9000]]");
}

/* Folding keeps what is in force: with max_events 4, the older half of the list becomes
   closed intervals, and a STOPPED folded away still makes the next ACTIVE disk only. */
static void test_fold_keeps_power(void **state)
{
    fixture_t *f = *state;
    s_max_events = "4";
    assert_int_equal(s_apply(f->store, "100-0", "ACTIVE", "1000"), 1);
    assert_int_equal(s_apply(f->store, "200-0", "power:STOPPED", "2000"), 1);
    assert_int_equal(s_apply(f->store, "300-0", "EXPIRED", "3000"), 1);
    assert_int_equal(s_apply(f->store, "400-0", "power:UNKNOWN", "3500"), 1);
    assert_int_equal(s_apply(f->store, "500-0", "ACTIVE", "4000"), 1); /* folds */
    redisReply *r = store_command(f->store, "HGET t:usage:{vm} base_until");
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    freeReplyObject(r);
    assert_int_equal(s_apply(f->store, "600-0", "power:RUNNING", "5000"), 1);
    assert_int_equal(s_apply(f->store, "700-0", "DISPOSED", "6000"), 1);
    s_max_events = "100";
    s_assert_field(f->store, "intervals", "[[1000,2000],[5000,6000]]");
    s_assert_field(f->store, "disk_intervals", "[[1000,6000]]");
}

/* One call applies a whole read: events of two VMs, two of one VM seeing each other, a
   redelivered one only acknowledged; every event is acknowledged. */
static void test_apply_batch(void **state)
{
    fixture_t *f = *state;
    redisReply *r = store_command(f->store, "XADD t:events 100-0 type vm.state");
    freeReplyObject(r);
    r = store_command(f->store, "XADD t:events 200-0 type vm.state");
    freeReplyObject(r);
    r = store_command(f->store, "XADD t:events 300-0 type vm.state");
    freeReplyObject(r);
    r = store_command(f->store, "XGROUP CREATE t:events g 0");
    freeReplyObject(r);
    r = store_command(f->store, "XREADGROUP GROUP g c STREAMS t:events >");
    freeReplyObject(r);
    /* clang-format off */
    const char *argv[] = {
        "t:events", "t:usage:vms", "t:usage:{a}", "t:usage:{b}", "t:usage:{a}", "t:usage:{a}",
        "g", "100", S_BILLING,
        "100-0", "a", "ACTIVE", "", "1000", "ann", "tmpl", "h1", "2", "2048", "20",
        "200-0", "b", "ACTIVE", "", "1500", "bob", "tmpl", "h2", "", "", "",
        "300-0", "a", "DISPOSED", "", "4000", "", "", "", "", "", "",
        "100-0", "a", "ACTIVE", "", "1000", "ann", "tmpl", "h1", "2", "2048", "20",
    };
    /* clang-format on */
    r = store_run(f->store, &lua_usage_apply, 6, 53, argv);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 4);
    long long want[] = { 1, 1, 1, 0 };
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(r->element[i]->integer, want[i]);
    freeReplyObject(r);
    r = store_command(f->store, "XPENDING t:events g");
    assert_int_equal(r->element[0]->integer, 0);
    freeReplyObject(r);
    r = store_command(f->store, "HMGET t:usage:{a} intervals owner last_event");
    assert_string_equal(r->element[0]->str, "[[1000,4000]]");
    assert_string_equal(r->element[1]->str, "ann");
    assert_string_equal(r->element[2]->str, "300-0");
    freeReplyObject(r);
    r = store_command(f->store, "HGET t:usage:{b} intervals");
    assert_string_equal(r->str, "[[1500,0]]");
    freeReplyObject(r);
    /* Arguments that do not match the keys are refused before anything is written. */
    r = store_run(f->store, &lua_usage_apply, 3, 7, argv);
    assert_int_equal(r->type, REDIS_REPLY_ERROR);
    freeReplyObject(r);
}

static void test_rows_filter_owner_and_time(void **state)
{
    fixture_t *f = *state;
    redisReply *r = store_command(f->store, "HSET t:u:{a} vm a owner ann template t host h vcpus 1 "
                                            "ram_mb 1 disk_gb 1 intervals [[10,20]] first_ms 10");
    freeReplyObject(r);
    r = store_command(f->store, "HSET t:u:{b} vm b owner bob template t host h vcpus 1 "
                                "ram_mb 1 disk_gb 1 intervals [[50,0]] first_ms 50");
    freeReplyObject(r);
    const char *anyone[] = { "t:u:{a}", "t:u:{b}", "t:u:{none}", "", "100" };
    r = store_run(f->store, &lua_usage_rows, 3, 5, anyone);
    assert_non_null(r);
    assert_int_equal(r->elements, 2);
    assert_int_equal(r->element[0]->elements, 9); /* with disk_intervals ("" here) */
    assert_string_equal(r->element[1]->element[7]->str, "[[50,0]]");
    freeReplyObject(r);
    const char *bob_early[] = { "t:u:{a}", "t:u:{b}", "bob", "40" };
    r = store_run(f->store, &lua_usage_rows, 2, 4, bob_early);
    assert_int_equal(r->elements, 0); /* bob's VM started at 50 */
    freeReplyObject(r);
    const char *ann[] = { "t:u:{a}", "t:u:{b}", "ann", "100" };
    r = store_run(f->store, &lua_usage_rows, 2, 4, ann);
    assert_int_equal(r->elements, 1);
    assert_string_equal(r->element[0]->element[0]->str, "a");
    freeReplyObject(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_apply_in_any_order, testenv_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_disk_only_billing, testenv_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_power_billing, testenv_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_fold_keeps_power, testenv_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_apply_batch, testenv_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_rows_filter_owner_and_time, testenv_setup,
                                        testenv_teardown),
    };
    return cmocka_run_group_tests(tests, testenv_group_setup, testenv_group_teardown);
}
