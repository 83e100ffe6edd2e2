/*  test_store: the one way state changes. A transition applies only from the expected state
    and version, bumps the version and appends its event; a stale version or a wrong state is
    refused with MODEL_CONFLICT and changes nothing. The connection survives Redis going
    away (restart, freeze) and comes back by itself, without blocking past its timeouts; after
    a restart the very first command on the old connection succeeds, and a broken connection
    is retried once only for what is safe to send twice. With a password, a store AUTHs on
    every connection it opens (reconnects included); without it Redis answers nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "lua_scripts.h"
#include "model.h"
#include "store.h"
#include "testenv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef testenv_fixture_t fixture_t;

static long long s_integer(store_t *store, const char *command, const char *key)
{
    redisReply *r = store_command(store, "%s %s", command, key);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long value = r->integer;
    freeReplyObject(r);
    return value;
}

/* HGET as a new string ("" when absent). */
static char *s_hget(store_t *store, const char *key, const char *field)
{
    redisReply *r = store_command(store, "HGET %s %s", key, field);
    assert_non_null(r);
    char *value = strdup(r->type == REDIS_REPLY_STRING ? r->str : "");
    freeReplyObject(r);
    return value;
}

static void s_assert_field(store_t *store, const char *key, const char *field, const char *want)
{
    char *value = s_hget(store, key, field);
    assert_string_equal(value, want);
    free(value);
}

/* The newest event in the stream as field/value pairs; caller frees the reply. */
static redisReply *s_last_event(store_t *store)
{
    redisReply *r = store_command(store, "XREVRANGE %s + - COUNT 1", STORE_EVENTS);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 1);
    return r;
}

static const char *s_event_field(redisReply *event, const char *field)
{
    redisReply *pairs = event->element[0]->element[1];
    for (size_t i = 0; i + 1 < pairs->elements; i += 2)
        if (strcmp(pairs->element[i]->str, field) == 0)
            return pairs->element[i + 1]->str;
    return NULL;
}

static void test_transition_applies_with_right_version(void **state)
{
    fixture_t *f = *state;
    const char *key = "berth:vm:{v1}";
    const char *fields[] = { "owner", "alice", "template", "small-linux" };
    int64_t version = -1;

    /* Creation: the key is absent, expected state "" at version 0. */
    assert_int_equal(
        model_transition(f->store, key, "", 0, "REQUESTED", "vm.requested", 4, fields, &version),
        0);
    assert_int_equal(version, 1);
    s_assert_field(f->store, key, "state", "REQUESTED");
    s_assert_field(f->store, key, "version", "1");
    s_assert_field(f->store, key, "owner", "alice");
    s_assert_field(f->store, key, "template", "small-linux");
    assert_int_equal(s_integer(f->store, "XLEN", STORE_EVENTS), 1);

    redisReply *ev = s_last_event(f->store);
    assert_string_equal(s_event_field(ev, "type"), "vm.requested");
    assert_string_equal(s_event_field(ev, "key"), key);
    assert_string_equal(s_event_field(ev, "state"), "REQUESTED");
    assert_string_equal(s_event_field(ev, "version"), "1");
    assert_string_equal(s_event_field(ev, "owner"), "alice");
    freeReplyObject(ev);

    /* The next step, from the version just read. */
    const char *why[] = { "approved_by", "policy" };
    assert_int_equal(model_transition(f->store, key, "REQUESTED", 1, "APPROVED", "vm.approved", 2,
                                      why, &version),
                     0);
    assert_int_equal(version, 2);
    s_assert_field(f->store, key, "state", "APPROVED");
    s_assert_field(f->store, key, "version", "2");
    s_assert_field(f->store, key, "owner", "alice"); /* untouched fields stay */
    s_assert_field(f->store, key, "approved_by", "policy");
    assert_int_equal(s_integer(f->store, "XLEN", STORE_EVENTS), 2);
    ev = s_last_event(f->store);
    assert_string_equal(s_event_field(ev, "type"), "vm.approved");
    assert_string_equal(s_event_field(ev, "version"), "2");
    assert_null(s_event_field(ev, "owner")); /* an event carries only its own fields */
    freeReplyObject(ev);

    /* No extra fields and no interest in the new version. */
    assert_int_equal(model_transition(f->store, key, "APPROVED", 2, "PROVISIONING",
                                      "vm.provisioning", 0, NULL, NULL),
                     0);
    s_assert_field(f->store, key, "version", "3");
}

static void test_transition_refuses_stale_or_wrong_state(void **state)
{
    fixture_t *f = *state;
    const char *key = "berth:vm:{v2}";
    int64_t version = 0;
    assert_int_equal(
        model_transition(f->store, key, "", 0, "REQUESTED", "vm.requested", 0, NULL, &version), 0);
    assert_int_equal(model_transition(f->store, key, "REQUESTED", 1, "APPROVED", "vm.approved", 0,
                                      NULL, &version),
                     0);
    assert_int_equal(version, 2);
    long long events = s_integer(f->store, "XLEN", STORE_EVENTS);

    /* A second writer that read version 1 lost the race: refused, output untouched. */
    int64_t untouched = 12345;
    const char *fields[] = { "state_note", "from a stale writer" };
    assert_int_equal(model_transition(f->store, key, "APPROVED", 1, "ACTIVE", "vm.active", 2,
                                      fields, &untouched),
                     MODEL_CONFLICT);
    assert_int_equal(untouched, 12345);
    /* Right version, wrong state. */
    assert_int_equal(model_transition(f->store, key, "REQUESTED", 2, "REJECTED", "vm.rejected", 2,
                                      fields, &untouched),
                     MODEL_CONFLICT);
    /* A version from the future. */
    assert_int_equal(
        model_transition(f->store, key, "APPROVED", 3, "ACTIVE", "vm.active", 0, NULL, NULL),
        MODEL_CONFLICT);
    /* Creating what already exists. */
    assert_int_equal(
        model_transition(f->store, key, "", 0, "REQUESTED", "vm.requested", 0, NULL, NULL),
        MODEL_CONFLICT);
    /* Expecting something that does not exist. */
    assert_int_equal(model_transition(f->store, "berth:vm:{nosuch}", "REQUESTED", 1, "APPROVED",
                                      "vm.approved", 0, NULL, NULL),
                     MODEL_CONFLICT);
    assert_int_equal(s_integer(f->store, "EXISTS", "berth:vm:{nosuch}"), 0);

    /* None of that changed the object or wrote an event. */
    s_assert_field(f->store, key, "state", "APPROVED");
    s_assert_field(f->store, key, "version", "2");
    s_assert_field(f->store, key, "state_note", "");
    assert_int_equal(s_integer(f->store, "XLEN", STORE_EVENTS), events);

    /* The winner carries on from the real version. */
    assert_int_equal(
        model_transition(f->store, key, "APPROVED", 2, "ACTIVE", "vm.active", 0, NULL, &version),
        0);
    assert_int_equal(version, 3);
    assert_int_equal(s_integer(f->store, "XLEN", STORE_EVENTS), events + 1);
}

static void test_transition_on_wrong_type_is_an_error(void **state)
{
    fixture_t *f = *state;
    /* A key of the wrong type is a broken invariant, not a lost race: -1, not CONFLICT. */
    redisReply *r = store_command(f->store, "SET berth:vm:{v3} not-a-hash");
    assert_non_null(r);
    freeReplyObject(r);
    assert_int_equal(model_transition(f->store, "berth:vm:{v3}", "", 0, "REQUESTED", "vm.requested",
                                      0, NULL, NULL),
                     -1);
    assert_true(store_ok(f->store)); /* Redis answered: the connection is fine */
}

static void test_transition_after_script_cache_flush(void **state)
{
    fixture_t *f = *state;
    const char *key = "berth:vm:{v4}";
    assert_int_equal(
        model_transition(f->store, key, "", 0, "REQUESTED", "vm.requested", 0, NULL, NULL), 0);
    /* What a Redis restart does to the scripts: the store must reload on NOSCRIPT. */
    redisReply *r = store_command(f->store, "SCRIPT FLUSH");
    assert_non_null(r);
    freeReplyObject(r);
    int64_t version = 0;
    assert_int_equal(model_transition(f->store, key, "REQUESTED", 1, "APPROVED", "vm.approved", 0,
                                      NULL, &version),
                     0);
    assert_int_equal(version, 2);
}

static void test_command_errors_are_replies(void **state)
{
    fixture_t *f = *state;
    redisReply *r = store_command(f->store, "NOSUCHCOMMAND x");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ERROR);
    freeReplyObject(r);
    assert_true(store_ok(f->store));

    /* Binary-safe argv. */
    const char *argv[] = { "SET", "berth:test:bin", "a\0b" };
    size_t lens[] = { 3, 14, 3 };
    r = store_commandv(f->store, 3, argv, lens);
    assert_non_null(r);
    freeReplyObject(r);
    assert_int_equal(s_integer(f->store, "STRLEN", "berth:test:bin"), 3);
}

/* Poll store_command(PING) until it answers; ms it took, or fail after timeout_ms. */
static int64_t s_wait_reconnect(store_t *store, int timeout_ms)
{
    int64_t start = testenv_now_ms();
    for (;;) {
        redisReply *r = store_command(store, "PING");
        if (r) {
            assert_int_equal(r->type, REDIS_REPLY_STATUS);
            freeReplyObject(r);
            assert_true(store_ok(store));
            return testenv_now_ms() - start;
        }
        assert_false(store_ok(store));
        if (testenv_now_ms() - start > timeout_ms)
            fail_msg("store did not reconnect within %d ms", timeout_ms);
        testenv_pause_ms(20);
    }
}

static void test_reconnect_after_redis_restart(void **state)
{
    fixture_t *f = *state;
    const char *key = "berth:vm:{v5}";
    assert_int_equal(
        model_transition(f->store, key, "", 0, "REQUESTED", "vm.requested", 0, NULL, NULL), 0);
    testenv_pause_ms(30);
    assert_true(store_steady_ms(f->store) >= 30); /* answering since the first command */
    assert_int_equal(testenv_redis_stop(f->redis), 0);

    /* Redis gone: every call fails fast with NULL / -1 and nothing crashes. */
    assert_null(store_command(f->store, "PING"));
    assert_false(store_ok(f->store));
    assert_int_equal(store_steady_ms(f->store), 0); /* the outage starts the count again */
    assert_int_equal(
        model_transition(f->store, key, "REQUESTED", 1, "APPROVED", "vm.approved", 0, NULL, NULL),
        -1);
    int64_t start = testenv_now_ms();
    for (int i = 0; i < 50; i++)
        assert_null(store_command(f->store, "PING"));
    assert_true(testenv_now_ms() - start < 1000); /* backoff: no reconnect storm, no blocking */

    /* Back on the same port: the same store reconnects by itself within its longest
       backoff (2 s) plus a margin, and finds the data and a fresh script cache. */
    assert_int_equal(testenv_redis_restart(f->redis), 0);
    int64_t took = s_wait_reconnect(f->store, 4000);
    print_message("reconnected %lld ms after the restart\n", (long long)took);
    int64_t steady = store_steady_ms(f->store);
    assert_true(steady >= 0 && steady < 1000); /* counted from the reconnection */
    s_assert_field(f->store, key, "state", "REQUESTED");
    int64_t version = 0;
    assert_int_equal(model_transition(f->store, key, "REQUESTED", 1, "APPROVED", "vm.approved", 0,
                                      NULL, &version),
                     0);
    assert_int_equal(version, 2);
}

static void test_frozen_redis_times_out(void **state)
{
    fixture_t *f = *state;
    /* A Redis that accepts nothing and answers nothing (stopped process): a command must
       give up after the command timeout (1 s) rather than hang the caller's event loop. */
    assert_int_equal(testenv_redis_pause(f->redis), 0);
    int64_t start = testenv_now_ms();
    redisReply *r = store_command(f->store, "PING");
    int64_t took = testenv_now_ms() - start;
    testenv_redis_resume(f->redis);
    if (r)
        freeReplyObject(r);
    assert_null(r);
    assert_false(store_ok(f->store));
    assert_true(took >= 900 && took < 3000);
    s_wait_reconnect(f->store, 4000);
}

/* Connections Redis has accepted so far (INFO stats, asked on a connection of its own, which
   is counted too). */
static long long s_connections(testenv_redis_t *redis)
{
    store_t *probe = testenv_store(redis, 0);
    assert_non_null(probe);
    redisReply *r = store_command(probe, "INFO stats");
    assert_non_null(r);
    const char *at = strstr(r->str, "total_connections_received:");
    assert_non_null(at);
    long long n = strtoll(at + strlen("total_connections_received:"), NULL, 10);
    freeReplyObject(r);
    store_destroy(&probe);
    return n;
}

static void test_first_commands_after_restart_succeed(void **state)
{
    fixture_t *f = *state;
    const char *key = "berth:vm:{v6}";
    assert_int_equal(
        model_transition(f->store, key, "", 0, "REQUESTED", "vm.requested", 0, NULL, NULL), 0);

    /* Redis restarts while the store sits idle on its connection. The first command is a
       write that is not safe to send twice: it must still succeed, and apply once. */
    testenv_pause_ms(200);
    assert_int_equal(testenv_redis_stop(f->redis), 0);
    assert_int_equal(testenv_redis_restart(f->redis), 0);
    redisReply *r = store_command(f->store, "INCR berth:test:counter");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    assert_true(store_ok(f->store));
    /* The restart went unseen by any failed command: the store still counts from it. */
    assert_true(store_steady_ms(f->store) < 200);

    /* The same for a read and for a transaction (a new script cache too). */
    assert_int_equal(testenv_redis_stop(f->redis), 0);
    assert_int_equal(testenv_redis_restart(f->redis), 0);
    s_assert_field(f->store, key, "state", "REQUESTED");
    assert_int_equal(testenv_redis_stop(f->redis), 0);
    assert_int_equal(testenv_redis_restart(f->redis), 0);
    int64_t version = 0;
    assert_int_equal(model_transition(f->store, key, "REQUESTED", 1, "APPROVED", "vm.approved", 0,
                                      NULL, &version),
                     0);
    assert_int_equal(version, 2);
    r = store_command(f->store, "GET berth:test:counter");
    assert_non_null(r);
    assert_string_equal(r->str, "1"); /* the INCR applied once */
    freeReplyObject(r);
}

static void test_broken_connection_resends_only_what_is_safe(void **state)
{
    fixture_t *f = *state;
    /* Redis drops a connection whose reply outgrows the output limit: the command reached
       Redis and the connection breaks under it, which no check before sending can see. */
    char *big = malloc(200000);
    assert_non_null(big);
    memset(big, 'x', 199999);
    big[199999] = '\0';
    redisReply *r = store_command(f->store, "HSET berth:test:big f %s", big);
    assert_non_null(r);
    freeReplyObject(r);
    r = store_command(f->store, "SET berth:test:str %s", big);
    assert_non_null(r);
    freeReplyObject(r);
    free(big);
    r = store_command(f->store, "CONFIG SET client-output-buffer-limit %s", "normal 1kb 1kb 0");
    assert_non_null(r);
    freeReplyObject(r);

    /* A read, and a script marked safe, are sent once more on a new connection (and break
       again here); a write is never sent twice: GETDEL answered nothing but applied once. */
    struct {
        const char *what;
        long long resends;
    } cases[] = { { "read", 1 }, { "safe script", 1 }, { "write", 0 } };
    for (int i = 0; i < 3; i++) {
        store_t *store = testenv_store(f->redis, 0); /* a proven connection, as in a service */
        assert_non_null(store);
        long long before = s_connections(f->redis);
        if (i == 0)
            r = store_command(store, "HGETALL berth:test:big");
        else if (i == 1)
            r = store_run(store, &lua_hash_rows, 1, 1, (const char *[]){ "berth:test:big" });
        else
            r = store_command(store, "GETDEL berth:test:str");
        long long resends = s_connections(f->redis) - before - 1;
        print_message("%s: %lld resend(s)\n", cases[i].what, resends);
        assert_null(r);
        assert_false(store_ok(store));
        assert_int_equal(resends, cases[i].resends);
        store_destroy(&store);
    }
    r = store_command(f->store, "CONFIG SET client-output-buffer-limit %s", "normal 0 0 0");
    assert_non_null(r);
    freeReplyObject(r);
    assert_int_equal(s_integer(f->store, "EXISTS", "berth:test:str"), 0);
}

/* The reply's type and text, for assertions: "status:PONG", "error:NOAUTH ...", "null". */
static void s_reply(store_t *store, const char *command, char *out, size_t size)
{
    redisReply *r = store_command(store, command);
    if (!r)
        snprintf(out, size, "null");
    else {
        snprintf(out, size, "%s:%s",
                 r->type == REDIS_REPLY_ERROR    ? "error"
                 : r->type == REDIS_REPLY_STATUS ? "status"
                                                 : "other",
                 r->str ? r->str : "");
        freeReplyObject(r);
    }
}

/* Run command on store; its reply must be a status (+OK). */
static void s_ok(store_t *store, const char *command)
{
    char got[256];
    s_reply(store, command, got, sizeof got);
    assert_string_equal(got, "status:OK");
}

static void test_password_on_every_connection(void **state)
{
    fixture_t *f = *state;
    char *dir = testenv_tmpdir();
    assert_non_null(dir);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, STORE_PASSWORD_FILE);
    FILE *file = fopen(path, "w");
    assert_non_null(file);
    fputs("test-password-1\n", file);
    fclose(file);
    int port = testenv_redis_port(f->redis);
    /* As berth-secrets sets it up: the services' user, and a default user with a password. */
    s_ok(f->store, "ACL SETUSER " STORE_USER " on >test-password-1 ~t:* &t:* +@all -@dangerous");
    s_ok(f->store, "CONFIG SET requirepass admin-password-1");
    store_t *admin = store_new("127.0.0.1", port, 1000, 1000);
    store_t *authed = store_new("127.0.0.1", port, 1000, 1000);
    store_t *anonymous = store_new("127.0.0.1", port, 1000, 1000);
    store_t *wrong = store_new("127.0.0.1", port, 1000, 1000);
    store_set_auth(admin, NULL, "admin-password-1");
    assert_int_equal(store_use_secrets(authed, dir), 0);
    store_set_auth(wrong, STORE_USER, "not-the-password");

    char got[256];
    s_reply(authed, "PING", got, sizeof got);
    assert_string_equal(got, "status:PONG");
    s_reply(anonymous, "PING", got, sizeof got);
    assert_true(strncmp(got, "error:NOAUTH", 12) == 0);
    s_reply(wrong, "PING", got, sizeof got);
    assert_string_equal(got, "null"); /* AUTH refused: no connection at all */
    assert_false(store_ok(wrong));
    /* The services' user: its own keys, no server administration. */
    s_ok(authed, "SET t:mine 1");
    s_reply(authed, "SET other:key 1", got, sizeof got);
    assert_true(strncmp(got, "error:NOPERM", 12) == 0);
    s_reply(authed, "CONFIG SET dir /tmp", got, sizeof got);
    assert_true(strncmp(got, "error:NOPERM", 12) == 0);

    /* Every client connection cut: the store's next command opens a new one, which
       authenticates again before the command. */
    redisReply *r = store_command(admin, "CLIENT KILL TYPE normal SKIPME no");
    if (r)
        freeReplyObject(r);
    s_reply(authed, "PING", got, sizeof got);
    assert_string_equal(got, "status:PONG");

    /* No password file (a secrets dir with bus certificates only): no AUTH, said once; this
       Redis then refuses it. */
    store_t *missing = store_new("127.0.0.1", port, 1000, 1000);
    assert_int_equal(store_use_secrets(missing, "/nonexistent-berth-secrets"), 0);
    s_reply(missing, "PING", got, sizeof got);
    assert_true(strncmp(got, "error:NOAUTH", 12) == 0);
    store_destroy(&missing);

    r = store_command(admin, "ACL DELUSER " STORE_USER);
    assert_non_null(r);
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    r = store_command(admin, "CONFIG SET requirepass %s", "");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
    store_destroy(&admin);
    store_destroy(&authed);
    store_destroy(&anonymous);
    store_destroy(&wrong);
    testenv_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_transition_applies_with_right_version, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_transition_refuses_stale_or_wrong_state, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_transition_on_wrong_type_is_an_error, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_transition_after_script_cache_flush, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_command_errors_are_replies, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_reconnect_after_redis_restart, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_frozen_redis_times_out, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_first_commands_after_restart_succeed, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_broken_connection_resends_only_what_is_safe,
                                        testenv_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_password_on_every_connection, testenv_setup,
                                        testenv_teardown),
    };
    return cmocka_run_group_tests(tests, testenv_group_setup_aof, testenv_group_teardown);
}
