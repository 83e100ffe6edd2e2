/*  test_lua_registry: lib/lua/registry_register.lua and registry_prune.lua on a real Redis.
    Registering writes the zset score, the instance hash and its TTL in Redis time, and the
    service name; pruning drops lapsed instances and lists the rest sorted, per key. */
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

static void s_register(store_t *store, const char *inst, const char *ttl)
{
    char hkey[64];
    snprintf(hkey, sizeof hkey, "t:instance:%s", inst);
    const char *argv[] = { "t:registry", hkey,        "t:services", "svc", inst,
                           ttl,          "tcp://x:1", "UP",         "17" };
    redisReply *r = store_run(store, &lua_registry_register, 3, 9, argv);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    freeReplyObject(r);
}

static void test_register_writes_every_key(void **state)
{
    fixture_t *f = *state;
    s_register(f->store, "b", "60000");
    redisReply *r =
        store_command(f->store, "HMGET t:instance:b service endpoint status started_ms");
    assert_non_null(r);
    assert_string_equal(r->element[0]->str, "svc");
    assert_string_equal(r->element[1]->str, "tcp://x:1");
    assert_string_equal(r->element[2]->str, "UP");
    assert_string_equal(r->element[3]->str, "17");
    freeReplyObject(r);
    r = store_command(f->store, "PTTL t:instance:b");
    assert_true(r->integer > 50000 && r->integer <= 60000);
    freeReplyObject(r);
    r = store_command(f->store, "SISMEMBER t:services svc");
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    r = store_command(f->store, "ZSCORE t:registry b");
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    freeReplyObject(r);
}

static void test_prune_drops_lapsed_and_sorts(void **state)
{
    fixture_t *f = *state;
    s_register(f->store, "c", "60000");
    s_register(f->store, "a", "60000");
    s_register(f->store, "gone", "1");
    redisReply *r = store_command(f->store, "ZADD t:other 1 old");
    freeReplyObject(r);
    /* Poll until the 1 ms registration has lapsed in Redis time. */
    int64_t deadline = testenv_now_ms() + 2000;
    for (;;) {
        const char *keys[] = { "t:registry", "t:other" };
        r = store_run(f->store, &lua_registry_prune, 2, 2, keys);
        assert_non_null(r);
        assert_int_equal(r->type, REDIS_REPLY_ARRAY);
        assert_int_equal(r->elements, 2);
        if (r->element[0]->elements == 2 || testenv_now_ms() > deadline)
            break;
        freeReplyObject(r);
        testenv_pause_ms(5);
    }
    assert_int_equal(r->element[0]->elements, 2);
    assert_string_equal(r->element[0]->element[0]->str, "a");
    assert_string_equal(r->element[0]->element[1]->str, "c");
    assert_int_equal(r->element[1]->elements, 0); /* score 1: lapsed long ago */
    freeReplyObject(r);
    r = store_command(f->store, "ZCARD t:registry");
    assert_int_equal(r->integer, 2);
    freeReplyObject(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_register_writes_every_key, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_prune_drops_lapsed_and_sorts, testenv_setup,
                                        testenv_teardown),
    };
    return cmocka_run_group_tests(tests, testenv_group_setup, testenv_group_teardown);
}
