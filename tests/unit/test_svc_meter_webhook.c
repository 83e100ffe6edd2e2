/*  meter webhook: hand-made events in a real Redis stream become deliveries only for a group
    with a webhook, once each however often they are read; a claimed delivery is no other
    meter's and only its claim's holder records its outcome; a receiver that refuses every
    connection is given up after the last attempt with a webhook.failed event and an audit
    record in the group; the signature is the HMAC-SHA256 receivers recompute. */
#include "testenv.h"
#include "keys.h"
#include "lua_scripts.h"
#include "util.h"
#include "webhook.h"

#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#define G1 "11111111-1111-4111-8111-111111111111" /* a group with a webhook */
#define G2 "22222222-2222-4222-8222-222222222222" /* one without */
#define V1 "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa" /* a VM of G1 */

static testenv_redis_t *s_redis;

static const webhook_limits_t s_limits = {
    .attempts = 2,
    .base_delay_ms = 10,
    .max_delay_ms = 20,
    .timeout_ms = 2000,
    .max_inflight = 4,
    .max_per_group = 1, /* the two deliveries of G1 go one after the other */
    .batch = 2,         /* small, so intake goes through several reads */
    .claim_idle_ms = 60000,
};

static int s_setup(void **state)
{
    store_t *store = testenv_store(s_redis, 1);
    assert_non_null(store);
    *state = store;
    return 0;
}

static int s_teardown(void **state)
{
    store_t *store = *state;
    store_destroy(&store);
    return 0;
}

/* The integer a command answers; the command, asserted not to fail. */
static long long s_integer_of(redisReply *r)
{
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long n = r->integer;
    freeReplyObject(r);
    return n;
}

static void s_ok(redisReply *r)
{
    assert_non_null(r);
    assert_int_not_equal(r->type, REDIS_REPLY_ERROR);
    freeReplyObject(r);
}

#define s_integer(store, ...) s_integer_of(store_command((store), __VA_ARGS__))
#define s_run(store, ...)     s_ok(store_command((store), __VA_ARGS__))

static void test_signature(void **state)
{
    (void)state;
    char sig[80];
    /* python3: hmac.new(secret, b"1700000000000." + body, hashlib.sha256).hexdigest() */
    webhook_sign("0123456789abcdef-secret", INT64_C(1700000000000), "{\"id\":\"1-0\"}", sig,
                 sizeof sig);
    assert_string_equal(sig, "v1=17911ae6852791780974328586826617f35de731a5339bc30e5292b8559b1dd4");
}

/* The events of one scenario: two that G1 is told of, the rest nothing. */
static void s_events(store_t *store)
{
    s_run(store, "HSET berth:vm:{" V1 "} group " G1);
    s_run(store, "XADD berth:events * type vm.lease.notice vm " V1 " group " G1 " at_ms 5");
    s_run(store, "XADD berth:events * type vm.lease.notice vm v2 group " G2 " at_ms 5");
    s_run(store, "XADD berth:events * type vm.power vm " V1 " power_state STOPPED alert 1");
    s_run(store, "XADD berth:events * type vm.state vm " V1 " state ACTIVE group " G1);
    s_run(store, "XADD berth:events * type vm.lease.extended vm " V1 " group " G1 " revived 0");
    s_run(store, "XADD berth:events * type host.state host h1 state DOWN");
}

static void test_intake_once_per_event(void **state)
{
    store_t *store = *state;
    s_run(store, "HSET berth:group-webhook:{" G1 "} url http://127.0.0.1:1/hook secret s3cret");
    webhook_t *a = webhook_new(store, "meter-1", &s_limits);
    webhook_t *b = webhook_new(store, "meter-2", &s_limits);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(webhook_poll(a), 0); /* the group, from the stream's end */
    s_events(store);
    assert_int_equal(webhook_poll(a), 6);
    assert_int_equal(s_integer(store, "HLEN " KEYS_WEBHOOK_DELIVERIES), 2);
    assert_int_equal(s_integer(store, "ZCARD " KEYS_WEBHOOK_DUE), 2);
    /* Every event acknowledged: nothing pending, nothing for another meter. */
    redisReply *r = store_command(store, "XPENDING berth:events " WEBHOOK_GROUP);
    assert_non_null(r);
    assert_int_equal(r->element[0]->integer, 0);
    freeReplyObject(r);
    assert_int_equal(webhook_poll(b), 0);
    /* Read again (a group moved back, as after a restore): still one delivery each. */
    s_run(store, "XGROUP SETID berth:events " WEBHOOK_GROUP " 0");
    assert_int_equal(webhook_poll(b), 6);
    assert_int_equal(s_integer(store, "HLEN " KEYS_WEBHOOK_DELIVERIES), 2);
    webhook_destroy(&a);
    webhook_destroy(&b);
    webhook_destroy(&b);
}

static redisReply *s_claim(store_t *store, const char *token)
{
    char now[24];
    snprintf(now, sizeof now, "%" PRId64, util_now_ms());
    const char *argv[] = { KEYS_WEBHOOK_DELIVERIES, KEYS_WEBHOOK_DUE, now, "60000", "10", token };
    redisReply *r = store_run(store, &lua_webhook_claim, 2, 6, argv);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    return r;
}

static long long s_done(store_t *store, const char *token, const char *outcome)
{
    const char *argv[] = { KEYS_WEBHOOK_DELIVERIES,
                           KEYS_WEBHOOK_DUE,
                           KEYS_EVENTS,
                           KEYS_AUDIT,
                           "9-0",
                           token,
                           outcome,
                           "0",
                           "0",
                           "refused",
                           "7" };
    redisReply *r = store_run(store, &lua_webhook_done, 4, 11, argv);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long n = r->integer;
    freeReplyObject(r);
    return n;
}

static void test_claims_are_exclusive(void **state)
{
    store_t *store = *state;
    s_run(store, "HSET " KEYS_WEBHOOK_DELIVERIES " 9-0 {\"group\":\"" G1
                 "\",\"body\":\"{}\",\"event\":\"lease.notice\",\"attempts\":0}");
    s_run(store, "ZADD " KEYS_WEBHOOK_DUE " 0 9-0");
    redisReply *first = s_claim(store, "m1:1");
    assert_int_equal(first->elements, 2);
    assert_string_equal(first->element[0]->str, "9-0");
    freeReplyObject(first);
    redisReply *second = s_claim(store, "m2:1");
    assert_int_equal(second->elements, 0); /* claimed: not due for anyone else */
    freeReplyObject(second);
    assert_int_equal(s_done(store, "m2:1:1", "delivered"), 0); /* not its claim */
    assert_int_equal(s_integer(store, "HLEN " KEYS_WEBHOOK_DELIVERIES), 1);
    assert_int_equal(s_done(store, "m1:1:1", "retry"), 1); /* due again, one attempt more */
    redisReply *again = s_claim(store, "m2:2");
    assert_int_equal(again->elements, 2);
    assert_non_null(strstr(again->element[1]->str, "\"attempts\":1"));
    freeReplyObject(again);
    assert_int_equal(s_done(store, "m1:1:1", "delivered"), 0); /* the old claim is void */
    assert_int_equal(s_done(store, "m2:2:1", "delivered"), 1);
    assert_int_equal(s_integer(store, "HLEN " KEYS_WEBHOOK_DELIVERIES), 0);
    assert_int_equal(s_integer(store, "ZCARD " KEYS_WEBHOOK_DUE), 0);
    assert_int_equal(s_integer(store, "XLEN " KEYS_AUDIT), 0);
}

static void test_refused_receiver_is_given_up(void **state)
{
    store_t *store = *state;
    /* Port 1 on loopback: nothing listens, every connection is refused at once. */
    s_run(store, "HSET berth:group-webhook:{" G1 "} url http://127.0.0.1:1/hook secret s3cret");
    webhook_t *w = webhook_new(store, "meter-1", &s_limits);
    assert_non_null(w);
    assert_int_equal(webhook_poll(w), 0);
    s_events(store);
    assert_int_equal(webhook_poll(w), 6);
    int64_t deadline = testenv_now_ms() + 10000;
    while (webhook_failed(w) < 2 && testenv_now_ms() < deadline) {
        assert_int_equal(webhook_run(w), 0);
        assert_true(webhook_inflight(w) <= 1); /* max_per_group */
        testenv_pause_ms(5);
    }
    assert_int_equal(webhook_failed(w), 2);
    assert_int_equal(webhook_delivered(w), 0);
    assert_int_equal(webhook_inflight(w), 0);
    assert_int_equal(s_integer(store, "HLEN " KEYS_WEBHOOK_DELIVERIES), 0);
    assert_int_equal(s_integer(store, "ZCARD " KEYS_WEBHOOK_DUE), 0);
    /* Given up where the group's managers read it. */
    redisReply *r = store_command(store, "XRANGE " KEYS_AUDIT " - +");
    assert_non_null(r);
    assert_int_equal(r->elements, 2);
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *f = r->element[i]->element[1];
        int group = 0, action = 0;
        for (size_t k = 0; k + 1 < f->elements; k += 2) {
            group |= !strcmp(f->element[k]->str, "group") && !strcmp(f->element[k + 1]->str, G1);
            action |= !strcmp(f->element[k]->str, "action") &&
                      !strcmp(f->element[k + 1]->str, "webhook.failed");
        }
        assert_true(group && action);
    }
    freeReplyObject(r);
    webhook_destroy(&w);
}

int main(void)
{
    s_redis = testenv_redis_start(0);
    if (!s_redis)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signature),
        cmocka_unit_test_setup_teardown(test_intake_once_per_event, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_claims_are_exclusive, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_refused_receiver_is_given_up, s_setup, s_teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    testenv_redis_destroy(&s_redis);
    return rc;
}
