/*  test_lua_groups: lib/lua/groups_member.lua and groups_delete.lua on a real Redis. A
    membership is written to the group's member hash and the user's group hash together, with
    its event; nothing is written for a missing group or user, a second add, a change or
    removal of a non-member, or a full group. A group is deleted with its name and index entry
    only while it has no members. */
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

/* Run groups_member for user on group g1; the script's answer into out. */
static void s_member(store_t *store, const char *op, const char *user, const char *role,
                     const char *max, char *out, size_t size)
{
    char user_key[64], user_groups[64];
    snprintf(user_key, sizeof user_key, "t:user:%s", user);
    snprintf(user_groups, sizeof user_groups, "t:user-groups:%s", user);
    const char *argv[] = { "t:group:{g1}", "t:group-members:{g1}",
                           user_key,       user_groups,
                           "t:events",     op,
                           "g1",           user,
                           role,           "1000",
                           "root",         max };
    redisReply *r = store_run(store, &lua_groups_member, 5, 12, argv);
    assert_non_null(r);
    assert_true(r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_STRING);
    snprintf(out, size, "%s", r->str);
    freeReplyObject(r);
}

static long long s_int(store_t *store, const char *cmd)
{
    redisReply *r = store_command(store, cmd);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

static void s_cmd(store_t *store, const char *cmd)
{
    redisReply *r = store_command(store, cmd);
    assert_non_null(r);
    freeReplyObject(r);
}

static void s_assert_role(store_t *store, const char *user, const char *role)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "HGET t:group-members:{g1} %s", user);
    redisReply *a = store_command(store, cmd);
    snprintf(cmd, sizeof cmd, "HGET t:user-groups:%s g1", user);
    redisReply *b = store_command(store, cmd);
    assert_non_null(a);
    assert_non_null(b);
    if (role) {
        assert_string_equal(a->str, role);
        assert_string_equal(b->str, role);
    } else {
        assert_int_equal(a->type, REDIS_REPLY_NIL);
        assert_int_equal(b->type, REDIS_REPLY_NIL);
    }
    freeReplyObject(a);
    freeReplyObject(b);
}

static void test_member_writes_both_sides(void **state)
{
    fixture_t *f = *state;
    char out[32];
    s_member(f->store, "add", "ann", "member", "2", out, sizeof out);
    assert_string_equal(out, "NO_GROUP");
    s_cmd(f->store, "HSET t:group:{g1} id g1 name one");
    s_member(f->store, "add", "ann", "member", "2", out, sizeof out);
    assert_string_equal(out, "NO_USER");
    assert_int_equal(s_int(f->store, "EXISTS t:events"), 0);

    s_cmd(f->store, "HSET t:user:ann name ann");
    s_cmd(f->store, "HSET t:user:bob name bob");
    s_cmd(f->store, "HSET t:user:cy name cy");
    s_member(f->store, "add", "ann", "member", "2", out, sizeof out);
    assert_string_equal(out, "OK");
    s_assert_role(f->store, "ann", "member");
    s_member(f->store, "add", "ann", "manager", "2", out, sizeof out);
    assert_string_equal(out, "MEMBER");
    s_assert_role(f->store, "ann", "member");
    s_member(f->store, "set", "bob", "manager", "2", out, sizeof out);
    assert_string_equal(out, "NOT_MEMBER");
    s_member(f->store, "remove", "bob", "", "2", out, sizeof out);
    assert_string_equal(out, "NOT_MEMBER");
    s_assert_role(f->store, "bob", NULL);

    s_member(f->store, "add", "bob", "auditor", "2", out, sizeof out);
    assert_string_equal(out, "OK");
    s_member(f->store, "add", "cy", "member", "2", out, sizeof out);
    assert_string_equal(out, "FULL");
    s_assert_role(f->store, "cy", NULL);

    s_member(f->store, "set", "ann", "manager", "2", out, sizeof out);
    assert_string_equal(out, "OK");
    s_assert_role(f->store, "ann", "manager");
    s_member(f->store, "remove", "ann", "", "2", out, sizeof out);
    assert_string_equal(out, "OK");
    s_assert_role(f->store, "ann", NULL);
    /* One event per change that happened: two adds, a set and a remove. */
    assert_int_equal(s_int(f->store, "XLEN t:events"), 4);
    redisReply *r = store_command(f->store, "XREVRANGE t:events + - COUNT 1");
    assert_non_null(r);
    redisReply *fields = r->element[0]->element[1];
    int seen = 0;
    for (size_t k = 0; k + 1 < fields->elements; k += 2) {
        if (!strcmp(fields->element[k]->str, "change"))
            seen += !strcmp(fields->element[k + 1]->str, "remove");
        if (!strcmp(fields->element[k]->str, "from"))
            seen += !strcmp(fields->element[k + 1]->str, "manager");
        if (!strcmp(fields->element[k]->str, "type"))
            seen += !strcmp(fields->element[k + 1]->str, "group.member");
    }
    assert_int_equal(seen, 3);
    freeReplyObject(r);
}

/* Delete g1 as the caller would, with its children set (child: c1 or none) and its VM set
   (vm: v1 or none) as read before. */
static const char *s_delete_with(store_t *store, const char *child, const char *vm, char *out,
                                 size_t size)
{
    const char *argv[16];
    int k = 0, nkeys;
    argv[k++] = "t:group:{g1}";
    argv[k++] = "t:group-members:{g1}";
    argv[k++] = "t:group-name:one";
    argv[k++] = "t:groups";
    argv[k++] = "t:events";
    argv[k++] = "t:group-children:{g1}";
    argv[k++] = "t:group-vms:{g1}";
    if (child)
        argv[k++] = "t:group:{c1}";
    if (vm)
        argv[k++] = "t:vm:{v1}";
    nkeys = k;
    argv[k++] = "g1";
    argv[k++] = "2000";
    argv[k++] = "root";
    argv[k++] = child ? "1" : "0";
    if (child)
        argv[k++] = child;
    if (vm)
        argv[k++] = vm;
    redisReply *r = store_run(store, &lua_groups_delete, nkeys, k, argv);
    assert_non_null(r);
    snprintf(out, size, "%s", r->str);
    freeReplyObject(r);
    return out;
}

/* Delete g1 with its disposed VM v1 and the usage counters passed after the VM keys. */
static const char *s_delete_usage(store_t *store, char *out, size_t size)
{
    const char *keys[] = { "t:group:{g1}",
                           "t:group-members:{g1}",
                           "t:group-name:one",
                           "t:groups",
                           "t:events",
                           "t:group-children:{g1}",
                           "t:group-vms:{g1}",
                           "t:vm:{v1}",
                           "t:group-usage:{g1}",
                           "t:group-user-usage:g1:ann",
                           "g1",
                           "2000",
                           "root",
                           "0",
                           "v1" };
    redisReply *r = store_run(store, &lua_groups_delete, 10, 15, keys);
    assert_non_null(r);
    snprintf(out, size, "%s", r->str);
    freeReplyObject(r);
    return out;
}

static const char *s_delete(store_t *store, char *out, size_t size)
{
    return s_delete_with(store, NULL, NULL, out, size);
}

static void test_delete_only_without_members(void **state)
{
    fixture_t *f = *state;
    char out[32];
    assert_string_equal(s_delete(f->store, out, sizeof out), "NO_GROUP");
    s_cmd(f->store, "HSET t:group:{g1} id g1 name one");
    s_cmd(f->store, "HSET t:group-name:one id g1");
    s_cmd(f->store, "ZADD t:groups 0 g1");
    s_cmd(f->store, "HSET t:group-members:{g1} ann member");
    assert_string_equal(s_delete(f->store, out, sizeof out), "HAS_MEMBERS");
    assert_int_equal(s_int(f->store, "EXISTS t:group:{g1} t:group-name:one t:groups"), 3);
    assert_int_equal(s_int(f->store, "EXISTS t:events"), 0);

    s_cmd(f->store, "DEL t:group-members:{g1}");
    s_cmd(f->store, "HSET t:group-name:one id g2"); /* the name is another group's now */
    assert_string_equal(s_delete(f->store, out, sizeof out), "CHANGED");
    assert_int_equal(s_int(f->store, "EXISTS t:group:{g1}"), 1);

    s_cmd(f->store, "HSET t:group-name:one id g1");
    /* Capacity the scheduler holds for it must be given back first. */
    s_cmd(f->store, "HSET t:group:{g1} reservations [{\"host\":\"\",\"vcpus\":2}]");
    assert_string_equal(s_delete(f->store, out, sizeof out), "HAS_RESERVATIONS");
    assert_int_equal(s_int(f->store, "EXISTS t:group:{g1}"), 1);
    s_cmd(f->store, "HDEL t:group:{g1} reservations");
    assert_string_equal(s_delete(f->store, out, sizeof out), "DELETED");
    assert_int_equal(s_int(f->store, "EXISTS t:group:{g1} t:group-name:one t:groups"), 0);
    assert_int_equal(s_int(f->store, "XLEN t:events"), 1);
}

static void test_delete_refused_while_a_group_is_inside(void **state)
{
    fixture_t *f = *state;
    char out[32];
    s_cmd(f->store, "HSET t:group:{g1} id g1 name one");
    s_cmd(f->store, "HSET t:group-name:one id g1");
    s_cmd(f->store, "ZADD t:groups 0 g1");
    s_cmd(f->store, "HSET t:group:{c1} id c1 name child parent g1");
    s_cmd(f->store, "SADD t:group-children:{g1} c1");
    assert_string_equal(s_delete_with(f->store, "c1", NULL, out, sizeof out), "HAS_CHILDREN");
    assert_int_equal(s_int(f->store, "EXISTS t:group:{g1} t:group-name:one"), 2);
    /* The set changed since the caller read it (a child was added): read again. */
    assert_string_equal(s_delete_with(f->store, NULL, NULL, out, sizeof out), "CHANGED");
    assert_int_equal(s_int(f->store, "EXISTS t:events"), 0);
    /* The child moved elsewhere: its id in the set is stale, g1 goes. */
    s_cmd(f->store, "HSET t:group:{c1} parent g9");
    assert_string_equal(s_delete_with(f->store, "c1", NULL, out, sizeof out), "DELETED");
    assert_int_equal(s_int(f->store, "EXISTS t:group:{g1} t:group-children:{g1}"), 0);
}

static void test_delete_refused_while_a_vm_lives(void **state)
{
    fixture_t *f = *state;
    char out[32];
    s_cmd(f->store, "HSET t:group:{g1} id g1 name one");
    s_cmd(f->store, "HSET t:group-name:one id g1");
    s_cmd(f->store, "ZADD t:groups 0 g1");
    s_cmd(f->store, "HSET t:vm:{v1} id v1 group g1 state ACTIVE");
    s_cmd(f->store, "SADD t:group-vms:{g1} v1");
    assert_string_equal(s_delete_with(f->store, NULL, "v1", out, sizeof out), "HAS_VMS");
    s_cmd(f->store, "HSET t:vm:{v1} state ERROR"); /* still to be disposed of */
    assert_string_equal(s_delete_with(f->store, NULL, "v1", out, sizeof out), "HAS_VMS");
    /* A VM made since the caller read the set: read again. */
    assert_string_equal(s_delete(f->store, out, sizeof out), "CHANGED");
    assert_int_equal(s_int(f->store, "EXISTS t:events"), 0);
    s_cmd(f->store, "HSET t:vm:{v1} state DISPOSED");
    assert_string_equal(s_delete_with(f->store, NULL, "v1", out, sizeof out), "DELETED");
    assert_int_equal(s_int(f->store, "EXISTS t:group:{g1} t:group-vms:{g1} t:vm:{v1}"), 1);
}

static void test_delete_removes_usage_counters(void **state)
{
    fixture_t *f = *state;
    char out[32];
    s_cmd(f->store, "HSET t:group:{g1} id g1 name one");
    s_cmd(f->store, "HSET t:group-name:one id g1");
    s_cmd(f->store, "ZADD t:groups 0 g1");
    s_cmd(f->store, "HSET t:vm:{v1} id v1 group g1 state ACTIVE owner ann");
    s_cmd(f->store, "SADD t:group-vms:{g1} v1");
    s_cmd(f->store, "HSET t:group-usage:{g1} vms 0 vcpus 0");
    s_cmd(f->store, "HSET t:group-user-usage:g1:ann vms 0 vcpus 0");
    s_cmd(f->store, "HSET t:group-user-usage:g2:ann vms 1 vcpus 1");
    /* Refused: nothing is deleted, the counters neither. */
    assert_string_equal(s_delete_usage(f->store, out, sizeof out), "HAS_VMS");
    assert_int_equal(s_int(f->store, "EXISTS t:group-usage:{g1} t:group-user-usage:g1:ann"), 2);
    s_cmd(f->store, "HSET t:vm:{v1} state DISPOSED");
    assert_string_equal(s_delete_usage(f->store, out, sizeof out), "DELETED");
    assert_int_equal(s_int(f->store, "EXISTS t:group:{g1} t:group-vms:{g1}"), 0);
    assert_int_equal(s_int(f->store, "EXISTS t:group-usage:{g1} t:group-user-usage:g1:ann"), 0);
    /* Another group's counters stay, and so does the VM (disposed: kept for its history). */
    assert_int_equal(s_int(f->store, "EXISTS t:group-user-usage:g2:ann t:vm:{v1}"), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_member_writes_both_sides, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_delete_refused_while_a_vm_lives, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_delete_refused_while_a_group_is_inside, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_delete_only_without_members, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_delete_removes_usage_counters, testenv_setup,
                                        testenv_teardown),
    };
    return cmocka_run_group_tests(tests, testenv_group_setup, testenv_group_teardown);
}
