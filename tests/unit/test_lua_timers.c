/*  test_lua_timers: lib/lua/timers_claim.lua on a real Redis. Due timers are claimed in due
    order, each by one caller only; a claim that runs out (its instance died) is fired again
    with its own due time; a timer re-scored meanwhile (an extension) keeps its new time;
    timers survive a Redis restart (AOF). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "keys.h"
#include "lua_scripts.h"
#include "testenv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef testenv_fixture_t fixture_t;

static void s_check(redisReply *r)
{
    assert_non_null(r);
    assert_int_not_equal(r->type, REDIS_REPLY_ERROR);
    freeReplyObject(r);
}

/* Claim at platform now, real now, claim_ms, max: the reply (caller frees). */
static redisReply *s_claim(store_t *store, long long now, long long real_now, int claim_ms,
                           int max)
{
    char a[24], b[24], c[24], d[24];
    snprintf(a, sizeof a, "%lld", now);
    snprintf(b, sizeof b, "%lld", real_now);
    snprintf(c, sizeof c, "%d", claim_ms);
    snprintf(d, sizeof d, "%d", max);
    const char *argv[] = { KEYS_TIMERS, KEYS_TIMERS_CLAIMED, a, b, c, d };
    redisReply *r = store_run(store, &lua_timers_claim, 2, 6, argv);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_true(r->elements >= 2);
    return r;
}

static void s_assert_claimed(const redisReply *r, const char *const *want, size_t n)
{
    assert_int_equal(r->elements, 2 + 2 * n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(r->element[2 + 2 * i]->str, want[i]);
}

static void test_claims_due_in_order_once(void **state)
{
    fixture_t *f = *state;
    s_check(store_command(f->store, "ZADD %s 300 expire:c 100 notice:a 200 expire:a 900 later:x",
                          KEYS_TIMERS));
    /* Up to now 500, two at a time: a's notice then its expiry, then c. */
    redisReply *r = s_claim(f->store, 500, 10000, 1000, 2);
    const char *first[] = { "notice:a", "expire:a" };
    s_assert_claimed(r, first, 2);
    assert_string_equal(r->element[3]->str, "100");
    assert_int_equal(r->element[0]->integer, 300); /* earliest left */
    assert_int_equal(r->element[1]->integer, 11000);
    freeReplyObject(r);
    /* Another instance: only what is left. */
    r = s_claim(f->store, 500, 10001, 1000, 10);
    const char *second[] = { "expire:c" };
    s_assert_claimed(r, second, 1);
    assert_int_equal(r->element[0]->integer, 900);
    freeReplyObject(r);
    r = s_claim(f->store, 500, 10002, 1000, 10);
    s_assert_claimed(r, NULL, 0);
    freeReplyObject(r);
    /* Fired: the firing step removes its claim. */
    s_check(store_command(f->store, "ZREM %s 100|notice:a 200|expire:a 300|expire:c",
                          KEYS_TIMERS_CLAIMED));
    r = s_claim(f->store, 500, 99999, 1000, 10);
    s_assert_claimed(r, NULL, 0);
    assert_int_equal(r->element[1]->integer, -1);
    freeReplyObject(r);
}

static void test_stale_claim_fires_again_in_due_order(void **state)
{
    fixture_t *f = *state;
    s_check(store_command(f->store, "ZADD %s 100 expire:a 200 expire:b 300 expire:c", KEYS_TIMERS));
    redisReply *r = s_claim(f->store, 1000, 5000, 1000, 2); /* a, b claimed; dies */
    freeReplyObject(r);
    /* Before the claim ends: nothing of a or b. */
    r = s_claim(f->store, 1000, 5500, 1000, 0);
    s_assert_claimed(r, NULL, 0);
    freeReplyObject(r);
    /* An extension re-scores b while its claim is out: the new time wins. */
    s_check(store_command(f->store, "ZADD %s 5000 expire:b", KEYS_TIMERS));
    /* The claim ran out: a comes back with its own due time, before c. */
    r = s_claim(f->store, 1000, 6001, 1000, 10);
    const char *want[] = { "expire:a", "expire:c" };
    s_assert_claimed(r, want, 2);
    assert_string_equal(r->element[3]->str, "100");
    assert_int_equal(r->element[0]->integer, 5000);
    freeReplyObject(r);
    r = store_command(f->store, "ZCARD %s", KEYS_TIMERS_CLAIMED);
    assert_int_equal(r->integer, 2); /* the two live claims; the dead one is gone */
    freeReplyObject(r);
}

static void test_bad_arguments(void **state)
{
    fixture_t *f = *state;
    const char *argv[] = { KEYS_TIMERS, KEYS_TIMERS_CLAIMED, "x", "1", "1", "1" };
    redisReply *r = store_run(f->store, &lua_timers_claim, 2, 6, argv);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ERROR);
    freeReplyObject(r);
}

static void test_timers_survive_restart(void **state)
{
    fixture_t *f = *state;
    s_check(store_command(f->store, "ZADD %s 100 tombstone:a", KEYS_TIMERS));
    assert_int_equal(testenv_redis_restart(f->redis), 0);
    store_t *store = testenv_store(f->redis, 0);
    assert_non_null(store);
    redisReply *r = s_claim(store, 1000, 1, 1000, 10);
    const char *want[] = { "tombstone:a" };
    s_assert_claimed(r, want, 1);
    freeReplyObject(r);
    store_destroy(&store);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_claims_due_in_order_once, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_stale_claim_fires_again_in_due_order, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, testenv_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_timers_survive_restart, testenv_setup,
                                        testenv_teardown),
    };
    return cmocka_run_group_tests(tests, testenv_group_setup_aof, testenv_group_teardown);
}
