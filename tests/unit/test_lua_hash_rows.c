/*  test_lua_hash_rows: lib/lua/hash_rows.lua on a real Redis. Without fields, each key's
    HGETALL; with fields, each key's values in field order ('' for a missing field); a
    missing hash gives an empty row in its place; rows come in KEYS order. */
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

static void test_rows_in_key_order(void **state)
{
    fixture_t *f = *state;
    redisReply *r = store_command(f->store, "HSET t:b state UP cap 8");
    freeReplyObject(r);
    r = store_command(f->store, "HSET t:a state DOWN");
    freeReplyObject(r);

    const char *all[] = { "t:b", "t:none", "t:a" };
    r = store_run(f->store, &lua_hash_rows, 3, 3, all);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 3);
    assert_int_equal(r->element[0]->elements, 4);
    assert_int_equal(r->element[1]->elements, 0);
    assert_int_equal(r->element[2]->elements, 2);
    assert_string_equal(r->element[2]->element[1]->str, "DOWN");
    freeReplyObject(r);

    const char *some[] = { "t:a", "t:none", "t:b", "cap", "state" };
    r = store_run(f->store, &lua_hash_rows, 3, 5, some);
    assert_non_null(r);
    assert_int_equal(r->elements, 3);
    assert_int_equal(r->element[0]->elements, 2);
    assert_string_equal(r->element[0]->element[0]->str, ""); /* no cap field */
    assert_string_equal(r->element[0]->element[1]->str, "DOWN");
    assert_int_equal(r->element[1]->elements, 0);
    assert_string_equal(r->element[2]->element[0]->str, "8");
    assert_string_equal(r->element[2]->element[1]->str, "UP");
    freeReplyObject(r);

    r = store_run(f->store, &lua_hash_rows, 0, 0, NULL);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 0);
    freeReplyObject(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rows_in_key_order, testenv_setup, testenv_teardown),
    };
    return cmocka_run_group_tests(tests, testenv_group_setup, testenv_group_teardown);
}
