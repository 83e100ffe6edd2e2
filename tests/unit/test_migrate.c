/*  test_migrate: the schema version and the upgrade steps on a real Redis. A new or a first-
    release store is stamped with the current version; a newer store is refused; steps run in
    order, once, each recorded; a held lock makes others wait, a dead holder's lock expires
    and the next instance runs the steps; a failed step leaves the version alone; a holder
    that lost its lock cannot record a step (lib/lua/migrate_lock.lua); a service started
    before Redis waits for it. The step to version 2 gives each reserving group its
    reservation log. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "keys.h"
#include "lua_scripts.h"
#include "migrate.h"
#include "testenv.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef testenv_fixture_t fixture_t;

/* MIGRATE_VERSION as the text berth:schema holds. */
#define S_TEXT(x)  #x
#define S_XTEXT(x) S_TEXT(x)
#define CURRENT    S_XTEXT(MIGRATE_VERSION)

static int s_runs[4]; /* times each step ran */
static int s_fail_step = -1;

static int s_step(store_t *store, int from)
{
    s_runs[from]++;
    if (from == s_fail_step)
        return -1;
    redisReply *r = store_command(store, "SADD t:steps %d", from);
    if (!r)
        return -1;
    freeReplyObject(r);
    return 0;
}

static int s_step1(store_t *store)
{
    return s_step(store, 1);
}

static int s_step2(store_t *store)
{
    return s_step(store, 2);
}

static const migrate_step_t s_steps[] = { { 1, "one", s_step1 },
                                          { 2, "two", s_step2 },
                                          { 0, NULL, NULL } };

static char *s_get(store_t *store, const char *key)
{
    redisReply *r = store_command(store, "GET %s", key);
    assert_non_null(r);
    char *v = strdup(r->type == REDIS_REPLY_STRING ? r->str : "(nil)");
    freeReplyObject(r);
    return v;
}

static void s_assert_get(store_t *store, const char *key, const char *want)
{
    char *v = s_get(store, key);
    assert_string_equal(v, want);
    free(v);
}

static void s_cmd(store_t *store, const char *cmd)
{
    redisReply *r = store_command(store, cmd);
    assert_non_null(r);
    assert_int_not_equal(r->type, REDIS_REPLY_ERROR);
    freeReplyObject(r);
}

static int s_setup(void **state)
{
    int rc = testenv_setup(state);

    memset(s_runs, 0, sizeof s_runs);
    s_fail_step = -1;
    return rc;
}

static void test_new_store_is_stamped(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(migrate_version(f->store), 1);
    assert_int_equal(migrate_run(f->store, "me", 1000), 0);
    s_assert_get(f->store, KEYS_SCHEMA, CURRENT);
    assert_int_equal(migrate_version(f->store), MIGRATE_VERSION);
}

#define G1 "11111111-1111-4111-8111-111111111111"
#define G2 "22222222-2222-4222-8222-222222222222"
#define G3 "33333333-3333-4333-8333-333333333333"

static long long s_hlen(store_t *store, const char *key)
{
    redisReply *r = store_command(store, "HLEN %s", key);
    assert_non_null(r);
    long long n = r->integer;
    freeReplyObject(r);
    return n;
}

/* 2 -> 3: each host counts the claims naming it (0 when none, whatever it held before);
   the step run again gives the same. */
static void test_claim_counts(void **state)
{
    fixture_t *f = *state;
    s_cmd(f->store, "SADD berth:hosts h1 h2");
    s_cmd(f->store, "HSET berth:host:h1 state UP");
    s_cmd(f->store, "HSET berth:host:h2 state UP claims 5");
    s_cmd(f->store, "HSET berth:claim:{" G1 "} host h1 vcpus 1");
    s_cmd(f->store, "HSET berth:claim:{" G2 "} host h1 vcpus 2");
    s_cmd(f->store, "SET berth:schema 2");
    for (int run = 0; run < 2; run++) {
        assert_int_equal(migrate_run(f->store, "me", 1000), 0);
        s_assert_get(f->store, KEYS_SCHEMA, CURRENT);
        redisReply *r = store_command(f->store, "HMGET berth:host:h1 claims state");
        assert_string_equal(r->element[0]->str, "2");
        assert_string_equal(r->element[1]->str, "UP");
        freeReplyObject(r);
        r = store_command(f->store, "HGET berth:host:h2 claims");
        assert_string_equal(r->str, "0");
        freeReplyObject(r);
        s_cmd(f->store, "SET berth:schema 2"); /* as if the step had been interrupted */
    }
}

/* 1 -> 2: a group with reservations gets its log (their totals), one without gets none, one
   whose log exists keeps it as it is; the step run again adds nothing. */
static void test_reservation_logs(void **state)
{
    fixture_t *f = *state;
    s_cmd(f->store, "ZADD berth:groups 0 " G1 " 0 " G2 " 0 " G3);
    redisReply *r =
        store_command(f->store, "HSET berth:group:{" G1 "} version 3 reservations %s",
                      "[{\"host\":\"\",\"vcpus\":2,\"ram_mb\":\"4096\"},"
                      "{\"host\":\"h1\",\"vcpus\":1,\"ram_mb\":\"1024\",\"disk_gb\":\"10\"}]");
    assert_non_null(r);
    freeReplyObject(r);
    s_cmd(f->store, "HSET berth:group:{" G2 "} version 1");
    r = store_command(f->store, "HSET berth:group:{" G3 "} version 1 reservations %s",
                      "[{\"host\":\"\",\"vcpus\":4}]");
    freeReplyObject(r);
    s_cmd(f->store, "HSET berth:reservation-log:{" G3 "} 5 x");
    assert_int_equal(migrate_run(f->store, "me", 1000), 0);
    s_assert_get(f->store, KEYS_SCHEMA, CURRENT);
    assert_int_equal(s_hlen(f->store, "berth:reservation-log:{" G1 "}"), 1);
    r = store_command(f->store, "HVALS berth:reservation-log:{" G1 "}");
    assert_int_equal(r->elements, 1);
    assert_string_equal(r->element[0]->str, "{\"vcpus\":3,\"ram_mb\":5120,\"disk_gb\":10}");
    freeReplyObject(r);
    assert_int_equal(s_hlen(f->store, "berth:reservation-log:{" G2 "}"), 0);
    assert_int_equal(s_hlen(f->store, "berth:reservation-log:{" G3 "}"), 1);
    s_cmd(f->store, "SET berth:schema 1"); /* as if the step had been interrupted */
    assert_int_equal(migrate_run(f->store, "me", 1000), 0);
    assert_int_equal(s_hlen(f->store, "berth:reservation-log:{" G1 "}"), 1);
}

static void test_newer_store_is_refused(void **state)
{
    fixture_t *f = *state;
    s_cmd(f->store, "SET berth:schema 99");
    assert_int_equal(migrate_run(f->store, "me", 1000), MIGRATE_NEWER);
    s_assert_get(f->store, KEYS_SCHEMA, "99");
    s_cmd(f->store, "SET berth:schema garbage");
    assert_int_equal(migrate_version(f->store), -1);
}

static void test_steps_run_in_order_once(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(migrate_run_steps(f->store, "me", s_steps, 3, 1000), 0);
    s_assert_get(f->store, KEYS_SCHEMA, "3");
    assert_int_equal(s_runs[1], 1);
    assert_int_equal(s_runs[2], 1);
    s_assert_get(f->store, KEYS_SCHEMA_LOCK, "(nil)"); /* released */
    assert_int_equal(migrate_run_steps(f->store, "me", s_steps, 3, 1000), 0);
    assert_int_equal(s_runs[1] + s_runs[2], 2);
    /* From version 2, only the second step. */
    s_cmd(f->store, "SET berth:schema 2");
    assert_int_equal(migrate_run_steps(f->store, "me", s_steps, 3, 1000), 0);
    assert_int_equal(s_runs[1], 1);
    assert_int_equal(s_runs[2], 2);
}

static void test_held_lock_waits_then_dead_holder_expires(void **state)
{
    fixture_t *f = *state;
    /* Held for good by someone who never finishes: we give up, having run nothing. */
    s_cmd(f->store, "SET berth:schema:lock other PX 60000");
    int64_t start = testenv_now_ms();
    assert_int_equal(migrate_run_steps(f->store, "me", s_steps, 3, 300), -1);
    assert_true(testenv_now_ms() - start >= 300);
    assert_int_equal(s_runs[1] + s_runs[2], 0);
    /* The holder finishes meanwhile: we find the store current and run nothing. */
    s_cmd(f->store, "SET berth:schema 3");
    assert_int_equal(migrate_run_steps(f->store, "me", s_steps, 3, 300), 0);
    assert_int_equal(s_runs[1] + s_runs[2], 0);
    /* A holder that died: its lock expires and we run the steps. */
    s_cmd(f->store, "DEL berth:schema");
    s_cmd(f->store, "SET berth:schema:lock other PX 200");
    assert_int_equal(migrate_run_steps(f->store, "me", s_steps, 3, 5000), 0);
    assert_int_equal(s_runs[1] + s_runs[2], 2);
    s_assert_get(f->store, KEYS_SCHEMA, "3");
}

static void test_failed_step_keeps_version(void **state)
{
    fixture_t *f = *state;
    s_fail_step = 2;
    assert_int_equal(migrate_run_steps(f->store, "me", s_steps, 3, 1000), -1);
    s_assert_get(f->store, KEYS_SCHEMA, "2"); /* the first step is recorded */
    s_assert_get(f->store, KEYS_SCHEMA_LOCK, "(nil)");
    s_fail_step = -1;
    assert_int_equal(migrate_run_steps(f->store, "me", s_steps, 3, 1000), 0);
    assert_int_equal(s_runs[1], 1);
    assert_int_equal(s_runs[2], 2);
}

static long long s_lock(store_t *store, const char *op, const char *owner, const char *v)
{
    const char *argv[] = { KEYS_SCHEMA_LOCK, KEYS_SCHEMA, op, owner, "30000", v };
    redisReply *r = store_run(store, &lua_migrate_lock, 2, 6, argv);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long n = r->integer;
    freeReplyObject(r);
    return n;
}

static void test_lost_lock_records_nothing(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(s_lock(f->store, "take", "a", "0"), 1);
    assert_int_equal(s_lock(f->store, "take", "a", "0"), 1); /* again: extended */
    assert_int_equal(s_lock(f->store, "take", "b", "0"), 0);
    assert_int_equal(s_lock(f->store, "step", "b", "7"), 0);
    s_assert_get(f->store, KEYS_SCHEMA, "(nil)");
    assert_int_equal(s_lock(f->store, "release", "b", "0"), 0);
    assert_int_equal(s_lock(f->store, "step", "a", "2"), 1);
    s_assert_get(f->store, KEYS_SCHEMA, "2");
    assert_int_equal(s_lock(f->store, "release", "a", "0"), 1);
    s_assert_get(f->store, KEYS_SCHEMA_LOCK, "(nil)");
}

typedef struct {
    store_t *store;
    int rc;
} s_waiter_t;

static void *s_migrate_thread(void *arg)
{
    s_waiter_t *w = arg;
    w->rc = migrate_run(w->store, "me", 10000);
    return NULL;
}

static void test_waits_for_redis(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(testenv_redis_stop(f->redis), 0);
    /* Redis away for good: the wait ends with an error, in its time. */
    int64_t start = testenv_now_ms();
    assert_int_equal(migrate_run(f->store, "me", 200), -1);
    assert_true(testenv_now_ms() - start >= 200);
    /* Redis back during the wait: the store is stamped as usual. (The server is restarted
       from this thread: testenv ties its life to the thread that started it.) */
    s_waiter_t w = { f->store, -2 };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, s_migrate_thread, &w), 0);
    testenv_pause_ms(300);
    assert_int_equal(testenv_redis_restart(f->redis), 0);
    pthread_join(t, NULL);
    assert_int_equal(w.rc, 0);
    s_assert_get(f->store, KEYS_SCHEMA, CURRENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_new_store_is_stamped, s_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_reservation_logs, s_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_claim_counts, s_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_newer_store_is_refused, s_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_steps_run_in_order_once, s_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_held_lock_waits_then_dead_holder_expires, s_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_failed_step_keeps_version, s_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_lost_lock_records_nothing, s_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_waits_for_redis, s_setup, testenv_teardown),
    };
    return cmocka_run_group_tests(tests, testenv_group_setup, testenv_group_teardown);
}
