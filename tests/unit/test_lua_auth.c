/*  test_lua_auth: lib/lua/auth_create_user.lua and auth_store_token.lua on a real Redis. A
    user is created once (a second create of the name changes nothing); a token's record
    (its MAC included) and its TTL are written together; failed sign-ins are counted in a
    window (auth_login_throttle.lua); a state is set only on an existing user
    (auth_set_user_state.lua). */
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

static long long s_run(store_t *store, const store_lua_t *script, int argc, const char **argv)
{
    redisReply *r = store_run(store, script, 1, argc, argv);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

static void test_create_user_once(void **state)
{
    fixture_t *f = *state;
    const char *first[] = { "t:user:ann", "ann", "admin", "$argon2id$first", "1" };
    const char *second[] = { "t:user:ann", "ann", "user", "$argon2id$second", "2" };
    assert_int_equal(s_run(f->store, &lua_auth_create_user, 5, first), 1);
    assert_int_equal(s_run(f->store, &lua_auth_create_user, 5, second), 0);
    redisReply *r = store_command(f->store, "HMGET t:user:ann name role password created_ms");
    assert_non_null(r);
    assert_string_equal(r->element[0]->str, "ann");
    assert_string_equal(r->element[1]->str, "admin");
    assert_string_equal(r->element[2]->str, "$argon2id$first");
    assert_string_equal(r->element[3]->str, "1");
    freeReplyObject(r);
}

static void test_token_has_its_ttl(void **state)
{
    fixture_t *f = *state;
    const char *argv[] = { "t:token:ab", "ann", "admin", "99", "30000", "0a1b" };
    assert_int_equal(s_run(f->store, &lua_auth_store_token, 6, argv), 1);
    redisReply *r = store_command(f->store, "HMGET t:token:ab user role expires_ms mac");
    assert_string_equal(r->element[0]->str, "ann");
    assert_string_equal(r->element[1]->str, "admin");
    assert_string_equal(r->element[2]->str, "99");
    assert_string_equal(r->element[3]->str, "0a1b");
    freeReplyObject(r);
    r = store_command(f->store, "PTTL t:token:ab");
    assert_true(r->integer > 20000 && r->integer <= 30000);
    freeReplyObject(r);
}

/* One call of auth_login_throttle.lua: refused (0/1) and the wait in ms into *wait. */
static long long s_throttle(store_t *store, const char *mode, long long *wait)
{
    const char *argv[] = { "t:login-fail-user:ann", mode, "3", "30000" };
    redisReply *r = store_run(store, &lua_auth_login_throttle, 1, 4, argv);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 2);
    long long refused = r->element[0]->integer;
    *wait = r->element[1]->integer;
    freeReplyObject(r);
    return refused;
}

static void test_throttle_counts_failures_in_a_window(void **state)
{
    fixture_t *f = *state;
    long long wait;
    assert_int_equal(s_throttle(f->store, "check", &wait), 0);
    assert_int_equal(s_throttle(f->store, "fail", &wait), 0);
    assert_int_equal(s_throttle(f->store, "fail", &wait), 0);
    assert_int_equal(s_throttle(f->store, "check", &wait), 0);
    /* The third failure reaches the limit: refused, with the window's end as the wait. */
    assert_int_equal(s_throttle(f->store, "fail", &wait), 1);
    assert_true(wait > 20000 && wait <= 30000);
    assert_int_equal(s_throttle(f->store, "check", &wait), 1);
    assert_true(wait > 20000 && wait <= 30000);
    redisReply *r = store_command(f->store, "PTTL t:login-fail-user:ann");
    assert_true(r->integer > 20000 && r->integer <= 30000);
    freeReplyObject(r);
    /* A counter without a TTL (written by hand, or a lost PEXPIRE) is given one. */
    freeReplyObject(store_command(f->store, "PERSIST t:login-fail-user:ann"));
    assert_int_equal(s_throttle(f->store, "check", &wait), 1);
    assert_int_equal(wait, 30000);
    r = store_command(f->store, "PTTL t:login-fail-user:ann");
    assert_true(r->integer > 0);
    freeReplyObject(r);
    /* clear forgets the failures. */
    assert_int_equal(s_throttle(f->store, "clear", &wait), 0);
    assert_int_equal(s_throttle(f->store, "check", &wait), 0);
    assert_int_equal(wait, 0);
    r = store_command(f->store, "EXISTS t:login-fail-user:ann");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
}

static void test_set_user_state_only_for_a_user(void **state)
{
    fixture_t *f = *state;
    const char *missing[] = { "t:user:nobody", "DISABLED" };
    redisReply *r = store_run(f->store, &lua_auth_set_user_state, 1, 2, missing);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 0);
    freeReplyObject(r);
    r = store_command(f->store, "EXISTS t:user:nobody");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
    const char *create[] = { "t:user:ann", "ann", "admin", "$argon2id$h", "7" };
    assert_int_equal(s_run(f->store, &lua_auth_create_user, 5, create), 1);
    const char *disable[] = { "t:user:ann", "DISABLED" };
    r = store_run(f->store, &lua_auth_set_user_state, 1, 2, disable);
    assert_int_equal(r->elements, 2);
    assert_string_equal(r->element[0]->str, "admin");
    assert_string_equal(r->element[1]->str, "7");
    freeReplyObject(r);
    r = store_command(f->store, "HMGET t:user:ann state password");
    assert_string_equal(r->element[0]->str, "DISABLED");
    assert_string_equal(r->element[1]->str, "$argon2id$h");
    freeReplyObject(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_user_once, testenv_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_token_has_its_ttl, testenv_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_throttle_counts_failures_in_a_window, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_set_user_state_only_for_a_user, testenv_setup,
                                        testenv_teardown),
    };
    return cmocka_run_group_tests(tests, testenv_group_setup, testenv_group_teardown);
}
