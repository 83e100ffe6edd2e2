/*  test_lua_taskmgr: lib/lua/taskmgr_beat.lua and taskmgr_acquire.lua on a real Redis.
    A heartbeat writes the host's hash, set and expiry, never its state, names only the
    ACTIVE VMs placed on that host whose power state differs from the report, and on a full
    beat the reported domains that are no VM of Berth on that host (orphans). Acquiring takes
    only candidates still due (a task another taskmgr took meanwhile stays its own), bumps
    their epoch, starts the lease and returns each taken task's hash, drops finished or
    vanished tasks from the due set, and returns the earliest score left. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "lua_scripts.h"
#include "testenv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef testenv_fixture_t fixture_t;

/* A command without arguments (a literal, split on spaces by hiredis); asserts it worked. */
#define s_cmd(store, command) s_check(store_command(store, command))

static void s_check(redisReply *r)
{
    assert_non_null(r);
    assert_int_not_equal(r->type, REDIS_REPLY_ERROR);
    freeReplyObject(r);
}

static void s_assert_field(store_t *store, const char *key, const char *field, const char *want)
{
    redisReply *r = store_command(store, "HGET %s %s", key, field);
    assert_non_null(r);
    if (want) {
        assert_int_equal(r->type, REDIS_REPLY_STRING);
        assert_string_equal(r->str, want);
    } else
        assert_int_equal(r->type, REDIS_REPLY_NIL);
    freeReplyObject(r);
}

/* The flat field/value list h (an HGETALL reply) holds field = want. */
static void s_assert_hash(const redisReply *h, const char *field, const char *want)
{
    assert_int_equal(h->type, REDIS_REPLY_ARRAY);
    for (size_t i = 0; i + 1 < h->elements; i += 2)
        if (strcmp(h->element[i]->str, field) == 0) {
            assert_string_equal(h->element[i + 1]->str, want);
            return;
        }
    fail_msg("field %s missing", field);
}

static void test_beat_writes_host_and_names_changed_vms(void **state)
{
    fixture_t *f = *state;
    s_cmd(f->store, "HSET t:vm:{a} host h1 power_state RUNNING state ACTIVE version 4");
    s_cmd(f->store, "HSET t:vm:{b} host h1 power_state SHUTOFF state ACTIVE version 2");
    s_cmd(f->store, "HSET t:vm:{c} host h2 power_state RUNNING state ACTIVE version 1");
    s_cmd(f->store, "HSET t:vm:{d} host h1 power_state RUNNING state BUILDING version 1");
    s_cmd(f->store, "HSET t:vm:{g} host h1 power_state NOSTATE state DISPOSED version 9");
    s_cmd(f->store, "HSET t:host:{h1} state DOWN maintenance 1 orphans [\"x\"] "
                    "agent_started_ms 77");
    /* a and c reported SHUTOFF (c is on another host), b unchanged, d a task's, e unknown,
       g disposed: a full beat names c, e and g as orphans. */
    /* w was written 50 ms before this beat (guard 100 ms): the report may be older than
       that write, so it is not named. */
    s_cmd(f->store, "HSET t:vm:{w} host h1 power_state RUNNING state ACTIVE version 5 "
                    "updated_ms 4950");
    /* clang-format off */
    const char *argv[] = { "t:host:{h1}", "t:hosts", "t:seen", "t:vm:{a}", "t:vm:{b}",
                           "t:vm:{c}", "t:vm:{d}", "t:vm:{e}", "t:vm:{g}", "t:vm:{w}",
                           "h1", "5000", "1", "5000", "100", "2",
                           "id", "h1", "agent_state", "UP",
                           "a", "SHUTOFF", "b", "SHUTOFF", "c", "SHUTOFF", "d", "SHUTOFF",
                           "e", "SHUTOFF", "g", "RUNNING", "w", "STOPPED" };
    /* clang-format on */
    redisReply *r = store_run(f->store, &lua_taskmgr_beat, 10, 34, argv);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 6);
    assert_string_equal(r->element[5]->str, "77");
    /* The host's state is the caller's to move: the script reports it, never writes it. */
    assert_string_equal(r->element[0]->str, "DOWN");
    assert_string_equal(r->element[1]->str, "1");
    assert_string_equal(r->element[2]->str, "[\"x\"]");
    redisReply *c = r->element[3];
    assert_int_equal(c->elements, 4);
    assert_string_equal(c->element[0]->str, "a");
    assert_string_equal(c->element[1]->str, "4");
    assert_string_equal(c->element[2]->str, "SHUTOFF");
    assert_string_equal(c->element[3]->str, "RUNNING");
    redisReply *o = r->element[4];
    assert_int_equal(o->elements, 3);
    assert_string_equal(o->element[0]->str, "c");
    assert_string_equal(o->element[1]->str, "e");
    assert_string_equal(o->element[2]->str, "g");
    freeReplyObject(r);
    s_assert_field(f->store, "t:host:{h1}", "state", "DOWN");
    s_assert_field(f->store, "t:host:{h1}", "agent_state", "UP");
    r = store_command(f->store, "SISMEMBER t:hosts h1");
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    r = store_command(f->store, "ZSCORE t:seen h1");
    assert_string_equal(r->str, "5000");
    freeReplyObject(r);
    /* The script reads VMs, never writes them: the caller's transaction does. */
    s_assert_field(f->store, "t:vm:{a}", "power_state", "RUNNING");
    r = store_command(f->store, "EXISTS t:vm:{e}");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
    /* A beat that is not full names no orphans; a new host has no state. */
    const char *partial[] = { "t:host:{h2}", "t:hosts", "t:seen", "t:vm:{c}", "h2",
                              "6000",        "0",       "6000",   "100",      "1",
                              "id",          "h2",      "c",      "RUNNING" };
    r = store_run(f->store, &lua_taskmgr_beat, 4, 14, partial);
    assert_non_null(r);
    assert_int_equal(r->elements, 6);
    assert_string_equal(r->element[0]->str, "");
    assert_string_equal(r->element[5]->str, "");
    assert_string_equal(r->element[1]->str, "");
    assert_int_equal(r->element[3]->elements, 0);
    assert_int_equal(r->element[4]->elements, 0);
    freeReplyObject(r);
}

static redisReply *s_acquire(store_t *store, const char *holder, int n, const char **ids)
{
    const char *argv[16];
    char keys[8][32];
    argv[0] = "t:due";
    for (int i = 0; i < n; i++) {
        snprintf(keys[i], sizeof keys[i], "t:task:{%s}", ids[i]);
        argv[1 + i] = keys[i];
    }
    argv[1 + n] = holder;
    argv[2 + n] = "1000";
    argv[3 + n] = "500";
    for (int i = 0; i < n; i++)
        argv[4 + n + i] = ids[i];
    redisReply *r = store_run(store, &lua_taskmgr_acquire, 1 + n, 4 + 2 * n, argv);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    return r;
}

static void test_acquire_takes_only_what_is_still_due(void **state)
{
    fixture_t *f = *state;
    s_cmd(f->store, "HSET t:task:{t1} state RUNNING epoch 2");
    s_cmd(f->store, "HSET t:task:{t2} state QUEUED");
    s_cmd(f->store, "HSET t:task:{t3} state SUCCEEDED epoch 1");
    s_cmd(f->store, "HSET t:task:{t5} state QUEUED");
    /* t4 has no hash; t5 is due only later; t6 is due at 3000. */
    s_cmd(f->store, "ZADD t:due 900 t1 0 t2 10 t3 20 t4 2000 t5 3000 t6");
    const char *ids[] = { "t1", "t2", "t3", "t4", "t5" };
    redisReply *r = s_acquire(f->store, "tm-a", 5, ids);
    assert_int_equal(r->elements, 7);
    assert_int_equal(r->element[0]->integer, 1500); /* the new leases */
    assert_string_equal(r->element[1]->str, "t1");
    assert_string_equal(r->element[2]->str, "3");
    assert_string_equal(r->element[4]->str, "t2");
    assert_string_equal(r->element[5]->str, "1");
    /* Each taken task's hash as it is after the take: no read needed after it. */
    s_assert_hash(r->element[3], "state", "RUNNING");
    s_assert_hash(r->element[3], "holder", "tm-a");
    s_assert_hash(r->element[3], "epoch", "3");
    s_assert_hash(r->element[6], "state", "QUEUED");
    s_assert_hash(r->element[6], "lease_until_ms", "1500");
    freeReplyObject(r);
    s_assert_field(f->store, "t:task:{t1}", "holder", "tm-a");
    s_assert_field(f->store, "t:task:{t1}", "lease_until_ms", "1500");
    s_assert_field(f->store, "t:task:{t5}", "holder", NULL);
    r = store_command(f->store, "ZRANGE t:due 0 -1");
    assert_int_equal(r->elements, 4); /* t3 finished and t4 gone: dropped */
    assert_string_equal(r->element[0]->str, "t1");
    assert_string_equal(r->element[1]->str, "t2");
    assert_string_equal(r->element[2]->str, "t5");
    assert_string_equal(r->element[3]->str, "t6");
    freeReplyObject(r);
    /* Another taskmgr read t1 and t2 as due before the take: they are not due now. */
    r = s_acquire(f->store, "tm-b", 2, ids);
    assert_int_equal(r->elements, 1);
    assert_int_equal(r->element[0]->integer, 1500);
    freeReplyObject(r);
    s_assert_field(f->store, "t:task:{t1}", "holder", "tm-a");
    s_assert_field(f->store, "t:task:{t1}", "epoch", "3");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_beat_writes_host_and_names_changed_vms, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_acquire_takes_only_what_is_still_due, testenv_setup,
                                        testenv_teardown),
    };
    return cmocka_run_group_tests(tests, testenv_group_setup, testenv_group_teardown);
}
