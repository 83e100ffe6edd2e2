/*  test_lua_auth: the auth scripts on a real Redis. auth_put_user.lua creates a user once (a
    second create of the name changes nothing), updates only while the stored MAC is the one
    read, keeps berth:users and the ACTIVE admins in step and never removes the last ACTIVE
    admin; auth_delete_user.lua deletes a user with their API keys and memberships (not the
    last admin, not when what the caller read changed); auth_apikey_put.lua stores a key only
    for an existing user, with its TTL, up to the most keys allowed (expired ones not
    counted), and auth_apikey_delete.lua revokes only a key of the user named; a token's
    record (its MAC and epoch included) and its TTL are written together; failed sign-ins are
    counted in a window (auth_login_throttle.lua). */
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

/* auth_put_user.lua on t:user:<name> with the index t:users and admins t:admins; its answer. */
static char *s_put(store_t *store, const char *mode, const char *expected, const char *name,
                   int n, const char **pairs)
{
    char key[64];
    snprintf(key, sizeof key, "t:user:%s", name);
    const char *argv[32] = { key, "t:users", "t:admins", mode, expected, name };
    for (int i = 0; i < n; i++)
        argv[6 + i] = pairs[i];
    redisReply *r = store_run(store, &lua_auth_put_user, 3, 6 + n, argv);
    assert_non_null(r);
    if (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS)
        fail_msg("auth_put_user: %s", r->type == REDIS_REPLY_ERROR ? r->str : "not a status");
    char *answer = strdup(r->str);
    freeReplyObject(r);
    return answer;
}

static void s_expect(char *answer, const char *want)
{
    assert_string_equal(answer, want);
    free(answer);
}

static long long s_run2(store_t *store, const store_lua_t *script, const char **argv)
{
    redisReply *r = store_run(store, script, 2, 4, argv);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
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

static void test_create_user_once(void **state)
{
    fixture_t *f = *state;
    const char *first[] = { "name", "ann", "role", "admin", "password", "$argon2id$first",
                            "created_ms", "1", "mac", "m1", "email", "" };
    const char *second[] = { "name", "ann", "role", "user", "password", "$argon2id$second",
                             "created_ms", "2", "mac", "m2" };
    s_expect(s_put(f->store, "create", "", "ann", 12, first), "OK");
    s_expect(s_put(f->store, "create", "", "ann", 10, second), "TAKEN");
    redisReply *r = store_command(f->store, "HMGET t:user:ann name role password created_ms mac");
    assert_non_null(r);
    assert_string_equal(r->element[0]->str, "ann");
    assert_string_equal(r->element[1]->str, "admin");
    assert_string_equal(r->element[2]->str, "$argon2id$first");
    assert_string_equal(r->element[3]->str, "1");
    assert_string_equal(r->element[4]->str, "m1");
    freeReplyObject(r);
    assert_int_equal(s_int(f->store, "HEXISTS t:user:ann email"), 0); /* '' writes nothing */
    assert_int_equal(s_int(f->store, "ZCARD t:users"), 1);
    assert_int_equal(s_int(f->store, "SISMEMBER t:admins ann"), 1);
}

static void test_update_only_as_read_and_keeps_an_admin(void **state)
{
    fixture_t *f = *state;
    const char *ann[] = { "name", "ann", "role", "admin", "mac", "a1" };
    const char *bob[] = { "name", "bob", "role", "user", "mac", "b1" };
    s_expect(s_put(f->store, "create", "", "ann", 6, ann), "OK");
    s_expect(s_put(f->store, "create", "", "bob", 6, bob), "OK");
    /* Only while the stored MAC is the one read; never creates. */
    const char *email[] = { "email", "b@example.com", "mac", "b2" };
    s_expect(s_put(f->store, "update", "stale", "bob", 4, email), "CHANGED");
    s_expect(s_put(f->store, "update", "b1", "nobody", 4, email), "NO_USER");
    assert_int_equal(s_int(f->store, "EXISTS t:user:nobody"), 0);
    s_expect(s_put(f->store, "update", "b1", "bob", 4, email), "OK");
    /* The last ACTIVE admin can be neither disabled nor demoted ... */
    const char *disable[] = { "state", "DISABLED", "mac", "a2" };
    const char *demote[] = { "role", "user", "mac", "a2" };
    s_expect(s_put(f->store, "update", "a1", "ann", 4, disable), "LAST_ADMIN");
    s_expect(s_put(f->store, "update", "a1", "ann", 4, demote), "LAST_ADMIN");
    redisReply *r = store_command(f->store, "HMGET t:user:ann role state mac");
    assert_string_equal(r->element[0]->str, "admin");
    assert_int_equal(r->element[1]->type, REDIS_REPLY_NIL);
    assert_string_equal(r->element[2]->str, "a1");
    freeReplyObject(r);
    /* ... until another admin is ACTIVE. */
    const char *promote[] = { "role", "admin", "mac", "b3" };
    s_expect(s_put(f->store, "update", "b2", "bob", 4, promote), "OK");
    assert_int_equal(s_int(f->store, "SCARD t:admins"), 2);
    s_expect(s_put(f->store, "update", "a1", "ann", 4, disable), "OK");
    assert_int_equal(s_int(f->store, "SISMEMBER t:admins ann"), 0);
    assert_int_equal(s_int(f->store, "SISMEMBER t:admins bob"), 1);
    /* reset writes whatever is stored (the bootstrap admin) and enables it again. */
    const char *reset[] = { "state", "ACTIVE", "mac", "a3" };
    s_expect(s_put(f->store, "reset", "", "ann", 4, reset), "OK");
    assert_int_equal(s_int(f->store, "SISMEMBER t:admins ann"), 1);
}

static char *s_delete(store_t *store, const char *name, int n_keys, const char **key_ids,
                      int n_groups, const char **groups)
{
    char k[16][64];
    const char *argv[40];
    int n = 0;
    snprintf(k[0], 64, "t:user:%s", name);
    snprintf(k[1], 64, "t:user-apikeys:%s", name);
    snprintf(k[2], 64, "t:user-groups:%s", name);
    argv[n++] = k[0], argv[n++] = "t:users", argv[n++] = "t:admins";
    argv[n++] = k[1], argv[n++] = k[2], argv[n++] = "t:events";
    for (int i = 0; i < n_keys; i++) {
        snprintf(k[3 + i], 64, "t:apikey:%s", key_ids[i]);
        argv[n++] = k[3 + i];
    }
    for (int i = 0; i < n_groups; i++) {
        snprintf(k[8 + i], 64, "t:group-members:{%s}", groups[i]);
        argv[n++] = k[8 + i];
    }
    int nkeys = n;
    char nk[8], ng[8];
    snprintf(nk, sizeof nk, "%d", n_keys);
    snprintf(ng, sizeof ng, "%d", n_groups);
    argv[n++] = name, argv[n++] = nk, argv[n++] = ng, argv[n++] = "5", argv[n++] = "root";
    for (int i = 0; i < n_groups; i++)
        argv[n++] = groups[i];
    redisReply *r = store_run(store, &lua_auth_delete_user, nkeys, n, argv);
    assert_non_null(r);
    if (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS)
        fail_msg("auth_delete_user: %s", r->type == REDIS_REPLY_ERROR ? r->str : "not a status");
    char *answer = strdup(r->str);
    freeReplyObject(r);
    return answer;
}

static void test_delete_user_with_keys_and_memberships(void **state)
{
    fixture_t *f = *state;
    const char *ann[] = { "name", "ann", "role", "admin", "mac", "a1" };
    const char *bob[] = { "name", "bob", "role", "user", "mac", "b1" };
    s_expect(s_put(f->store, "create", "", "ann", 6, ann), "OK");
    s_expect(s_put(f->store, "create", "", "bob", 6, bob), "OK");
    const char *setup[] = {
        "ZADD t:user-apikeys:bob 1 k1",       "HSET t:apikey:k1 user bob",
        "HSET t:user-groups:bob g1 manager",  "HSET t:group-members:{g1} bob manager carl member",
        "HSET t:group-members:{g2} carl member",
    };
    for (size_t i = 0; i < sizeof setup / sizeof *setup; i++)
        freeReplyObject(store_command(f->store, setup[i]));
    /* The last admin stays; a caller whose view is stale reads again. */
    s_expect(s_delete(f->store, "ann", 0, NULL, 0, NULL), "LAST_ADMIN");
    s_expect(s_delete(f->store, "nobody", 0, NULL, 0, NULL), "NO_USER");
    const char *ids[] = { "k1" };
    const char *groups[] = { "g1" }, *other[] = { "g2" };
    s_expect(s_delete(f->store, "bob", 0, NULL, 1, groups), "CHANGED");
    s_expect(s_delete(f->store, "bob", 1, ids, 1, other), "CHANGED");
    assert_int_equal(s_int(f->store, "EXISTS t:user:bob"), 1);
    s_expect(s_delete(f->store, "bob", 1, ids, 1, groups), "OK");
    assert_int_equal(s_int(f->store, "EXISTS t:user:bob t:apikey:k1 t:user-apikeys:bob "
                                     "t:user-groups:bob"),
                     0);
    assert_int_equal(s_int(f->store, "HEXISTS t:group-members:{g1} bob"), 0);
    assert_int_equal(s_int(f->store, "HEXISTS t:group-members:{g1} carl"), 1);
    assert_int_equal(s_int(f->store, "ZCARD t:users"), 1);
    /* The membership's end is an event, as groups_member.lua writes one. */
    redisReply *r = store_command(f->store, "XRANGE t:events - +");
    assert_int_equal(r->elements, 1);
    redisReply *fields = r->element[0]->element[1];
    assert_string_equal(fields->element[1]->str, "group.member");
    freeReplyObject(r);
}

static char *s_key_put(store_t *store, const char *id, const char *now, const char *expires)
{
    char rec[64];
    snprintf(rec, sizeof rec, "t:apikey:%s", id);
    const char *argv[] = { rec, "t:user-apikeys:bob", "t:user:bob", id, now, expires, "2",
                           "user", "bob", "expires_ms", expires };
    redisReply *r = store_run(store, &lua_auth_apikey_put, 3, 11, argv);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    char *answer = strdup(r->str);
    freeReplyObject(r);
    return answer;
}

static void test_apikeys_expire_and_are_bounded_per_user(void **state)
{
    fixture_t *f = *state;
    s_expect(s_key_put(f->store, "k1", "1000", "99999999999999"), "NO_USER");
    assert_int_equal(s_int(f->store, "EXISTS t:apikey:k1"), 0);
    freeReplyObject(store_command(f->store, "HSET t:user:bob name bob"));
    s_expect(s_key_put(f->store, "k1", "1000", "99999999999999"), "OK");
    s_expect(s_key_put(f->store, "k2", "1000", "99999999999998"), "OK");
    s_expect(s_key_put(f->store, "k1", "1000", "99999999999999"), "OK"); /* a retry */
    s_expect(s_key_put(f->store, "k3", "1000", "99999999999997"), "FULL");
    assert_int_equal(s_int(f->store, "EXISTS t:apikey:k3"), 0);
    /* The record lives as long as the key (PEXPIREAT its expiry). */
    assert_true(s_int(f->store, "PTTL t:apikey:k1") > 1000000);
    /* Keys past their expiry no longer count: at now = k2's expiry, k2 leaves the index. */
    s_expect(s_key_put(f->store, "k3", "99999999999998", "99999999999999"), "OK");
    assert_int_equal(s_int(f->store, "ZCARD t:user-apikeys:bob"), 2);
    /* Revoked only as its user's. */
    const char *wrong[] = { "t:apikey:k1", "t:user-apikeys:carl", "k1", "carl" };
    const char *right[] = { "t:apikey:k1", "t:user-apikeys:bob", "k1", "bob" };
    assert_int_equal(s_run2(f->store, &lua_auth_apikey_delete, wrong), 0);
    assert_int_equal(s_int(f->store, "EXISTS t:apikey:k1"), 1);
    assert_int_equal(s_run2(f->store, &lua_auth_apikey_delete, right), 1);
    assert_int_equal(s_int(f->store, "EXISTS t:apikey:k1"), 0);
    assert_int_equal(s_int(f->store, "ZCARD t:user-apikeys:bob"), 1);
    assert_int_equal(s_run2(f->store, &lua_auth_apikey_delete, right), 0);
}

static void test_token_has_its_ttl(void **state)
{
    fixture_t *f = *state;
    const char *argv[] = { "t:token:ab", "ann", "admin", "99", "30000", "0a1b", "e1" };
    assert_int_equal(s_run(f->store, &lua_auth_store_token, 7, argv), 1);
    redisReply *r = store_command(f->store, "HMGET t:token:ab user role expires_ms mac epoch");
    assert_string_equal(r->element[0]->str, "ann");
    assert_string_equal(r->element[1]->str, "admin");
    assert_string_equal(r->element[2]->str, "99");
    assert_string_equal(r->element[3]->str, "0a1b");
    assert_string_equal(r->element[4]->str, "e1");
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_user_once, testenv_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_token_has_its_ttl, testenv_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_throttle_counts_failures_in_a_window, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_update_only_as_read_and_keeps_an_admin,
                                        testenv_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_delete_user_with_keys_and_memberships,
                                        testenv_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_apikeys_expire_and_are_bounded_per_user,
                                        testenv_setup, testenv_teardown),
    };
    return cmocka_run_group_tests(tests, testenv_group_setup, testenv_group_teardown);
}
