/*  test_user_record: the MAC of a user record covers each power field, and the migration on a
    real Redis gives the records of the release before MACs theirs (indexing every user and
    the ACTIVE admins) once; a store that was migrated and then had its version deleted
    blesses nothing (a hash written meanwhile stays refused); an interrupted run goes on with
    the names it had listed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "keys.h"
#include "testenv.h"
#include "user_record.h"

#include <stdlib.h>
#include <string.h>

typedef testenv_fixture_t fixture_t;

static const unsigned char s_key[USER_RECORD_KEY_LEN] = "0123456789abcdef0123456789abcdef";

static void s_cmd(store_t *store, const char *cmd)
{
    redisReply *r = store_command(store, cmd);
    assert_non_null(r);
    assert_int_not_equal(r->type, REDIS_REPLY_ERROR);
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

/* Does the stored record of name pass its MAC? */
static int s_valid(store_t *store, const char *name)
{
    char key[KEYS_MAX];
    redisReply *r = store_command(store, "HMGET %s password role state epoch mac",
                                  keys_build(key, KEYS_USER, name, NULL));
    assert_non_null(r);
    assert_int_equal(r->elements, 5);
    const char *f[5];
    for (int i = 0; i < 5; i++)
        f[i] = r->element[i]->type == REDIS_REPLY_STRING ? r->element[i]->str : NULL;
    int ok = f[0] && user_record_mac_ok(s_key, name, f[0], f[1] ? f[1] : "user",
                                        f[2] ? f[2] : "ACTIVE", f[3] ? f[3] : "", f[4]);
    freeReplyObject(r);
    return ok;
}

static void test_mac_covers_every_power_field(void **state)
{
    (void)state;
    char mac[USER_RECORD_MAC_HEX];
    user_record_mac(s_key, "ann", "$argon2id$h", "user", "ACTIVE", "e1", mac);
    assert_int_equal(strlen(mac), USER_RECORD_MAC_HEX - 1);
    assert_true(user_record_mac_ok(s_key, "ann", "$argon2id$h", "user", "ACTIVE", "e1", mac));
    assert_false(user_record_mac_ok(s_key, "bob", "$argon2id$h", "user", "ACTIVE", "e1", mac));
    assert_false(user_record_mac_ok(s_key, "ann", "$argon2id$x", "user", "ACTIVE", "e1", mac));
    assert_false(user_record_mac_ok(s_key, "ann", "$argon2id$h", "admin", "ACTIVE", "e1", mac));
    assert_false(user_record_mac_ok(s_key, "ann", "$argon2id$h", "user", "DISABLED", "e1", mac));
    assert_false(user_record_mac_ok(s_key, "ann", "$argon2id$h", "user", "ACTIVE", "e2", mac));
    /* Fields run together differently read differently (each ends with its NUL). */
    assert_false(user_record_mac_ok(s_key, "an", "n$argon2id$h", "user", "ACTIVE", "e1", mac));
    assert_false(user_record_mac_ok(s_key, "ann", "$argon2id$h", "user", "ACTIVE", "e1", NULL));
    unsigned char other[USER_RECORD_KEY_LEN] = { 0 };
    assert_false(user_record_mac_ok(other, "ann", "$argon2id$h", "user", "ACTIVE", "e1", mac));
    char a[USER_RECORD_EPOCH_MAX], b[USER_RECORD_EPOCH_MAX];
    user_record_epoch(a);
    user_record_epoch(b);
    assert_string_not_equal(a, b);
}

static void test_migration_blesses_the_old_records_once(void **state)
{
    fixture_t *f = *state;
    s_cmd(f->store, "HSET berth:user:ann name ann role admin password $argon2id$a created_ms 1");
    s_cmd(f->store, "HSET berth:user:bob name bob role admin password $argon2id$b state DISABLED");
    s_cmd(f->store, "HSET berth:user:carl name carl password $argon2id$c");
    assert_int_equal(user_record_migrate(f->store, s_key, "me", 1000), 0);
    assert_true(s_valid(f->store, "ann"));
    assert_true(s_valid(f->store, "bob"));
    assert_true(s_valid(f->store, "carl"));
    assert_int_equal(s_int(f->store, "ZCARD berth:users"), 3);
    assert_int_equal(s_int(f->store, "SCARD berth:admins"), 1); /* bob is disabled */
    assert_int_equal(s_int(f->store, "SISMEMBER berth:admins ann"), 1);
    assert_int_equal(s_int(f->store, "EXISTS berth:schema:users:todo"), 0);
    redisReply *r = store_command(f->store, "GET berth:schema:users");
    assert_string_equal(r->str, "1");
    freeReplyObject(r);
    /* Current: a second run changes nothing. */
    r = store_command(f->store, "HGET berth:user:ann mac");
    char *mac = strdup(r->str);
    freeReplyObject(r);
    assert_int_equal(user_record_migrate(f->store, s_key, "me", 1000), 0);
    r = store_command(f->store, "HGET berth:user:ann mac");
    assert_string_equal(r->str, mac);
    freeReplyObject(r);
    free(mac);
}

static void test_a_rolled_back_store_blesses_nothing(void **state)
{
    fixture_t *f = *state;
    s_cmd(f->store, "HSET berth:user:ann name ann role admin password $argon2id$a");
    assert_int_equal(user_record_migrate(f->store, s_key, "me", 1000), 0);
    /* Someone with write access to Redis forges an admin and deletes the version. */
    s_cmd(f->store, "HSET berth:user:eve name eve role admin password $argon2id$e");
    s_cmd(f->store, "DEL berth:schema:users");
    assert_int_equal(user_record_migrate(f->store, s_key, "me", 1000), 0);
    assert_true(s_valid(f->store, "ann"));
    assert_false(s_valid(f->store, "eve"));
    assert_int_equal(s_int(f->store, "SISMEMBER berth:admins eve"), 0);
    assert_int_equal(s_int(f->store, "HEXISTS berth:user:eve mac"), 0);
}

static void test_an_interrupted_run_goes_on(void **state)
{
    fixture_t *f = *state;
    /* A run listed ann and bob, gave bob his MAC and died. */
    s_cmd(f->store, "HSET berth:user:ann name ann role admin password $argon2id$a");
    char mac[USER_RECORD_MAC_HEX], cmd[256];
    user_record_mac(s_key, "bob", "$argon2id$b", "user", "ACTIVE", "e1", mac);
    snprintf(cmd, sizeof cmd, "HSET berth:user:bob name bob password $argon2id$b epoch e1 mac %s",
             mac);
    s_cmd(f->store, cmd);
    s_cmd(f->store, "SADD berth:schema:users:todo ann bob");
    assert_int_equal(user_record_migrate(f->store, s_key, "me", 1000), 0);
    assert_true(s_valid(f->store, "ann"));
    assert_true(s_valid(f->store, "bob"));
    assert_int_equal(s_int(f->store, "EXISTS berth:schema:users:todo"), 0);
    assert_int_equal(s_int(f->store, "SISMEMBER berth:admins ann"), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mac_covers_every_power_field),
        cmocka_unit_test_setup_teardown(test_migration_blesses_the_old_records_once,
                                        testenv_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_a_rolled_back_store_blesses_nothing, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_an_interrupted_run_goes_on, testenv_setup,
                                        testenv_teardown),
    };
    return cmocka_run_group_tests(tests, testenv_group_setup, testenv_group_teardown);
}
