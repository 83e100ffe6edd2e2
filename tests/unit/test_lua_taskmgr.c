/*  test_lua_taskmgr: lib/lua/taskmgr_beat.lua and taskmgr_acquire.lua on a real Redis.
    A heartbeat writes the host's hash, set and expiry, never its state, names only the
    ACTIVE VMs placed on that host whose power state differs from the report, and on a full
    beat the reported domains that are no VM of Berth on that host (orphans). Acquiring takes
    only candidates still due (a task another taskmgr took meanwhile stays its own), bumps
    their epoch, starts the lease and returns each taken task's hash, drops finished or
    vanished tasks from the due set, and returns the earliest score left. Throttling gives a
    heavy slot only within the per-host and global limits, never twice to one task, never to
    a newcomer while a task in line could use it, grants the line oldest first into the due
    and wake sets as slots free, and gives back a slot on an earlier attempt's host. */
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

/* 36-character task ids, as the script expects ("<id>@<host>" members). */
#define T(n) "00000000-0000-0000-0000-00000000000" #n

/* taskmgr_throttle.lua with per_host 2, global 3 at now 500: {held, granted}. id NULL: a
   pump only. */
static void s_throttle(store_t *store, const char *id, const char *host, const char *old,
                       long long held, long long granted)
{
    const char *argv[] = { "t:run", "t:queue", "t:waiting", "t:due", "t:wake",      "2",
                           "3",     "500",     id,          host,    old ? old : "" };
    redisReply *r = store_run(store, &lua_taskmgr_throttle, 5, id ? 11 : 8, argv);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 2);
    assert_int_equal(r->element[0]->integer, held);
    assert_int_equal(r->element[1]->integer, granted);
    freeReplyObject(r);
}

static long long s_int(store_t *store, const char *command)
{
    redisReply *r = store_command(store, command);
    assert_non_null(r);
    long long v = r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    freeReplyObject(r);
    return v;
}

static void test_throttle_grants_in_line_within_limits(void **state)
{
    fixture_t *f = *state;
    s_throttle(f->store, T(1), "h1", NULL, 1, 0);
    s_throttle(f->store, T(2), "h1", NULL, 1, 0);
    s_throttle(f->store, T(3), "h1", NULL, 0, 0); /* h1 full */
    s_throttle(f->store, T(4), "h2", NULL, 1, 0);
    s_throttle(f->store, T(5), "h2", NULL, 0, 0); /* the platform full */
    s_throttle(f->store, T(1), "h1", NULL, 1, 0); /* held already: not counted twice */
    assert_int_equal(s_int(f->store, "ZCARD t:run"), 3);

    /* T3 (h1) and then T5 (h2) wait in line, as tasks.c's write puts them. */
    s_cmd(f->store, "ZADD t:queue 10 " T(3));
    s_cmd(f->store, "HSET t:waiting " T(3) " h1");
    s_cmd(f->store, "ZADD t:queue 20 " T(5));
    s_cmd(f->store, "HSET t:waiting " T(5) " h2");
    /* T4's end gives its slot back: T3 is first in line but h1 is full; T5 fits. */
    s_cmd(f->store, "ZREM t:run " T(4) "@h2");
    s_throttle(f->store, NULL, NULL, NULL, 0, 1);
    redisReply *r = store_command(f->store, "ZSCORE t:due " T(5));
    assert_string_equal(r->str, "0");
    freeReplyObject(r);
    r = store_command(f->store, "ZSCORE t:wake " T(5));
    assert_string_equal(r->str, "500");
    freeReplyObject(r);
    assert_int_equal(s_int(f->store, "ZCARD t:queue"), 1);
    assert_int_equal(s_int(f->store, "HEXISTS t:waiting " T(5)), 0);
    assert_int_equal(s_int(f->store, "ZRANK t:run " T(5) "@h2"), 2);

    /* A newcomer gets nothing while the platform is full... */
    s_throttle(f->store, T(6), "h2", NULL, 0, 0);
    /* ...nor ahead of T3 when a slot on h1 frees: T3 gets it, put in due and wake. */
    s_cmd(f->store, "ZREM t:run " T(1) "@h1");
    s_throttle(f->store, T(7), "h1", NULL, 0, 1);
    assert_int_equal(s_int(f->store, "ZCARD t:queue"), 0);
    assert_int_equal(s_int(f->store, "ZRANK t:wake " T(3)), 0);
    assert_int_equal(s_int(f->store, "ZRANK t:run " T(7) "@h1"), -1);

    /* A retry on another host gives the first host's slot back. */
    s_throttle(f->store, T(2), "h2", "h1", 1, 0);
    r = store_command(f->store, "ZRANGE t:run 0 -1");
    assert_int_equal(r->elements, 3);
    freeReplyObject(r);
    assert_int_equal(s_int(f->store, "ZRANK t:run " T(2) "@h1"), -1);
    assert_int_equal(s_int(f->store, "ZRANK t:run " T(2) "@h2") >= 0, 1);

    /* A task in line that asks itself leaves the line (granted at most once); one in line
       without a host is made due once the line moves (its stage asks again); the host of
       one that left the line by its end is forgotten. */
    s_cmd(f->store, "ZADD t:queue 30 " T(8));
    s_cmd(f->store, "HSET t:waiting " T(8) " h1");
    s_cmd(f->store, "ZADD t:queue 40 " T(9));
    s_throttle(f->store, T(8), "h1", NULL, 0, 0); /* the platform is full: 3 of 3 */
    assert_int_equal(s_int(f->store, "ZRANK t:queue " T(8)), -1);
    assert_int_equal(s_int(f->store, "HLEN t:waiting"), 0);
    s_cmd(f->store, "ZREM t:run " T(3) "@h1");
    s_cmd(f->store, "HSET t:waiting " T(6) " h2");
    s_throttle(f->store, NULL, NULL, NULL, 0, 0);
    assert_int_equal(s_int(f->store, "ZCARD t:queue"), 0);
    assert_int_equal(s_int(f->store, "ZRANK t:wake " T(9)) >= 0, 1);
    assert_int_equal(s_int(f->store, "HLEN t:waiting"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_beat_writes_host_and_names_changed_vms, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_acquire_takes_only_what_is_still_due, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_throttle_grants_in_line_within_limits, testenv_setup,
                                        testenv_teardown),
    };
    return cmocka_run_group_tests(tests, testenv_group_setup, testenv_group_teardown);
}
