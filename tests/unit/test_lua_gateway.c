/*  test_lua_gateway: lib/lua/catalog_templates.lua and owned_hashes.lua on a real Redis. The
    templates come back only while the index lists exactly the ids the caller expects (0
    otherwise); a page of hashes hides, as the integer 0, those another owner holds. */
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

static void s_cmd(store_t *store, const char *cmd)
{
    redisReply *r = store_command(store, cmd);
    assert_non_null(r);
    assert_int_not_equal(r->type, REDIS_REPLY_ERROR);
    freeReplyObject(r);
}

static void test_templates_only_while_the_index_holds(void **state)
{
    fixture_t *f = *state;
    s_cmd(f->store, "ZADD t:templates 0 a 0 b");
    s_cmd(f->store, "HSET t:template:a id a name small");
    s_cmd(f->store, "HSET t:template:b id b name large");
    const char *argv[] = { "t:templates", "t:template:a", "t:template:b", "a", "b" };
    redisReply *r = store_run(f->store, &lua_catalog_templates, 3, 5, argv);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 2);
    assert_string_equal(r->element[1]->element[3]->str, "large");
    freeReplyObject(r);
    /* A template added since: the caller's ids are stale, it must read the index again. */
    s_cmd(f->store, "ZADD t:templates 0 c");
    r = store_run(f->store, &lua_catalog_templates, 3, 5, argv);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
}

static void test_hashes_of_others_stay_in_redis(void **state)
{
    fixture_t *f = *state;
    s_cmd(f->store, "HSET t:vm:{1} id 1 owner ann");
    s_cmd(f->store, "HSET t:vm:{2} id 2 owner bob");
    const char *ann[] = { "t:vm:{1}", "t:vm:{2}", "ann" };
    redisReply *r = store_run(f->store, &lua_owned_hashes, 2, 3, ann);
    assert_non_null(r);
    assert_int_equal(r->elements, 2);
    assert_int_equal(r->element[0]->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->element[0]->elements, 4);
    assert_int_equal(r->element[1]->type, REDIS_REPLY_INTEGER);
    assert_int_equal(r->element[1]->integer, 0);
    freeReplyObject(r);
    const char *everyone[] = { "t:vm:{1}", "t:vm:{2}", "" };
    r = store_run(f->store, &lua_owned_hashes, 2, 3, everyone);
    assert_int_equal(r->element[1]->type, REDIS_REPLY_ARRAY);
    assert_string_equal(r->element[1]->element[3]->str, "bob");
    freeReplyObject(r);
}

static void test_hashes_of_the_callers_groups_come_back(void **state)
{
    fixture_t *f = *state;
    s_cmd(f->store, "HSET t:vm:{1} id 1 owner ann group g1");
    s_cmd(f->store, "HSET t:vm:{2} id 2 owner bob group g2");
    s_cmd(f->store, "HSET t:vm:{3} id 3 owner cid group g3");
    s_cmd(f->store, "HSET t:vm:{4} id 4 owner dan");
    /* ann manages g2 (and g4, which holds nothing): her own, and g2's, but not g3's. */
    const char *ann[] = { "t:vm:{1}", "t:vm:{2}", "t:vm:{3}", "t:vm:{4}", "ann", "g2", "g4" };
    redisReply *r = store_run(f->store, &lua_owned_hashes, 4, 7, ann);
    assert_non_null(r);
    assert_int_equal(r->elements, 4);
    assert_int_equal(r->element[0]->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->element[1]->type, REDIS_REPLY_ARRAY);
    assert_string_equal(r->element[1]->element[3]->str, "bob");
    assert_int_equal(r->element[2]->type, REDIS_REPLY_INTEGER);
    assert_int_equal(r->element[3]->type, REDIS_REPLY_INTEGER);
    freeReplyObject(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_templates_only_while_the_index_holds, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_hashes_of_others_stay_in_redis, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_hashes_of_the_callers_groups_come_back,
                                        testenv_setup, testenv_teardown),
    };
    return cmocka_run_group_tests(tests, testenv_group_setup, testenv_group_teardown);
}
