/*  test_registry: instances come and go in a real Redis. Registered instances are listed
    (sorted, with Redis-clock heartbeat and expiry), deregistered ones vanish at once, and
    one that stops heartbeating vanishes when its TTL runs out while a refreshed one stays. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "registry.h"
#include "testenv.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef testenv_fixture_t fixture_t;

static registry_entry_t s_entry(const char *service, const char *instance, const char *endpoint)
{
    registry_entry_t e = { .started_ms = 1700000000000 };
    util_strlcpy(e.service, service, sizeof e.service);
    util_strlcpy(e.instance, instance, sizeof e.instance);
    util_strlcpy(e.endpoint, endpoint, sizeof e.endpoint);
    return e;
}

/* Redis's own clock in ms, the clock registry times are in. */
static int64_t s_redis_now(store_t *store)
{
    redisReply *r = store_command(store, "TIME");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    int64_t now =
        strtoll(r->element[0]->str, NULL, 10) * 1000 + strtoll(r->element[1]->str, NULL, 10) / 1000;
    freeReplyObject(r);
    return now;
}

/* The entry for instance in a list, or NULL. */
static registry_entry_t *s_find(registry_entry_t *entries, size_t count, const char *instance)
{
    for (size_t i = 0; i < count; i++)
        if (strcmp(entries[i].instance, instance) == 0)
            return &entries[i];
    return NULL;
}

static int s_listed(store_t *store, const char *service, const char *instance)
{
    registry_entry_t *entries = NULL;
    size_t count = 0;
    assert_int_equal(registry_list(store, service, &entries, &count), 0);
    int found = s_find(entries, count, instance) != NULL;
    free(entries);
    return found;
}

static void test_register_list_deregister(void **state)
{
    fixture_t *f = *state;
    registry_entry_t b = s_entry("scheduler", "sched-b", "tcp://127.0.0.1:5001");
    registry_entry_t a = s_entry("scheduler", "sched-a", "tcp://127.0.0.1:5002");
    registry_entry_t m = s_entry("meter", "meter-1", "tcp://127.0.0.1:5003");
    util_strlcpy(m.status, "DRAINING", sizeof m.status);
    int64_t before = s_redis_now(f->store);
    assert_int_equal(registry_register(f->store, &b, 5000), 0);
    assert_int_equal(registry_register(f->store, &a, 5000), 0);
    assert_int_equal(registry_register(f->store, &m, 5000), 0);
    int64_t after = s_redis_now(f->store);

    registry_entry_t *entries = NULL;
    size_t count = 0;
    assert_int_equal(registry_list(f->store, "scheduler", &entries, &count), 0);
    assert_int_equal(count, 2);
    assert_string_equal(entries[0].instance, "sched-a"); /* sorted by instance */
    assert_string_equal(entries[1].instance, "sched-b");
    assert_string_equal(entries[0].service, "scheduler");
    assert_string_equal(entries[0].endpoint, "tcp://127.0.0.1:5002");
    assert_string_equal(entries[0].status, "UP"); /* the default status */
    assert_int_equal(entries[0].started_ms, 1700000000000);
    assert_true(entries[0].last_heartbeat_ms >= before && entries[0].last_heartbeat_ms <= after);
    assert_int_equal(entries[0].expires_ms, entries[0].last_heartbeat_ms + 5000);
    free(entries);

    /* All services: sorted by service, then instance. */
    assert_int_equal(registry_list(f->store, NULL, &entries, &count), 0);
    assert_int_equal(count, 3);
    assert_string_equal(entries[0].service, "meter");
    assert_string_equal(entries[0].status, "DRAINING");
    assert_string_equal(entries[1].instance, "sched-a");
    assert_string_equal(entries[2].instance, "sched-b");
    free(entries);

    /* Re-registering the same instance updates it in place, it is not listed twice. */
    util_strlcpy(a.endpoint, "tcp://127.0.0.1:6002", sizeof a.endpoint);
    assert_int_equal(registry_register(f->store, &a, 5000), 0);
    assert_int_equal(registry_list(f->store, "scheduler", &entries, &count), 0);
    assert_int_equal(count, 2);
    assert_string_equal(entries[0].endpoint, "tcp://127.0.0.1:6002");
    free(entries);

    /* Clean shutdown: gone at once, the others untouched. */
    assert_int_equal(registry_deregister(f->store, "scheduler", "sched-b"), 0);
    assert_int_equal(registry_list(f->store, "scheduler", &entries, &count), 0);
    assert_int_equal(count, 1);
    assert_string_equal(entries[0].instance, "sched-a");
    free(entries);
    redisReply *r = store_command(f->store, "EXISTS berth:instance:scheduler:sched-b");
    assert_non_null(r);
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);

    /* Deregistering twice or something unknown is not an error. */
    assert_int_equal(registry_deregister(f->store, "scheduler", "sched-b"), 0);
    assert_int_equal(registry_deregister(f->store, "nosuch", "x"), 0);

    assert_int_equal(registry_list(f->store, "nosuch", &entries, &count), 0);
    assert_int_equal(count, 0);
    free(entries);
}

static void test_unrefreshed_instance_expires(void **state)
{
    fixture_t *f = *state;
    const int ttl = 800;
    registry_entry_t dead = s_entry("stager", "stager-dead", "tcp://127.0.0.1:5101");
    registry_entry_t live = s_entry("stager", "stager-live", "tcp://127.0.0.1:5102");
    assert_int_equal(registry_register(f->store, &dead, ttl), 0);
    assert_int_equal(registry_register(f->store, &live, ttl), 0);

    registry_entry_t *entries = NULL;
    size_t count = 0;
    assert_int_equal(registry_list(f->store, "stager", &entries, &count), 0);
    registry_entry_t *d = s_find(entries, count, "stager-dead");
    assert_non_null(d);
    int64_t dead_expires = d->expires_ms;
    int64_t live_first_beat = s_find(entries, count, "stager-live")->last_heartbeat_ms;
    free(entries);

    /* The instance hash carries the TTL too, so nothing lingers in Redis. */
    redisReply *r = store_command(f->store, "PTTL berth:instance:stager:stager-dead");
    assert_non_null(r);
    assert_true(r->integer > 0 && r->integer <= ttl);
    freeReplyObject(r);

    /* Heartbeat `live` every 50 ms (16 beats per TTL) until `dead` is gone. `dead` may not
       vanish before its expiry and `live` must be listed all along. */
    int64_t deadline = testenv_now_ms() + 10 * ttl;
    int gone = 0;
    while (!gone) {
        assert_true(testenv_now_ms() < deadline);
        assert_int_equal(registry_register(f->store, &live, ttl), 0);
        assert_int_equal(registry_list(f->store, "stager", &entries, &count), 0);
        int64_t listed_by = s_redis_now(f->store);
        assert_non_null(s_find(entries, count, "stager-live"));
        gone = s_find(entries, count, "stager-dead") == NULL;
        if (gone)
            assert_true(listed_by + 2 >= dead_expires); /* 2 ms: clock rounding */
        free(entries);
        if (!gone)
            testenv_pause_ms(50);
    }

    /* The refreshed one moved its heartbeat and expiry forward. */
    assert_int_equal(registry_list(f->store, "stager", &entries, &count), 0);
    assert_int_equal(count, 1);
    assert_string_equal(entries[0].instance, "stager-live");
    assert_true(entries[0].last_heartbeat_ms > live_first_beat);
    assert_int_equal(entries[0].expires_ms, entries[0].last_heartbeat_ms + ttl);
    free(entries);

    /* Listing pruned the lapsed member; Redis dropped its hash. */
    r = store_command(f->store, "ZSCORE berth:registry:stager stager-dead");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_NIL);
    freeReplyObject(r);
    r = store_command(f->store, "EXISTS berth:instance:stager:stager-dead");
    assert_non_null(r);
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);

    /* Once its heartbeat stops, the live one goes the same way. */
    deadline = testenv_now_ms() + 10 * ttl;
    while (s_listed(f->store, "stager", "stager-live")) {
        assert_true(testenv_now_ms() < deadline);
        testenv_pause_ms(50);
    }
    assert_int_equal(registry_list(f->store, NULL, &entries, &count), 0);
    assert_int_equal(count, 0);
    free(entries);
}

static void test_expired_hash_is_not_listed(void **state)
{
    fixture_t *f = *state;
    /* The sorted set says alive but the instance hash is gone (e.g. evicted, or removed by
       hand): the instance has no endpoint to offer and must not be listed. */
    registry_entry_t e = s_entry("meter", "meter-x", "tcp://127.0.0.1:5201");
    assert_int_equal(registry_register(f->store, &e, 5000), 0);
    redisReply *r = store_command(f->store, "DEL berth:instance:meter:meter-x");
    assert_non_null(r);
    freeReplyObject(r);
    assert_false(s_listed(f->store, "meter", "meter-x"));
}

static void test_redis_away_and_back(void **state)
{
    fixture_t *f = *state;
    registry_entry_t e = s_entry("taskmgr", "taskmgr-1", "tcp://127.0.0.1:5301");
    assert_int_equal(registry_register(f->store, &e, 5000), 0);
    assert_int_equal(testenv_redis_stop(f->redis), 0);

    registry_entry_t *entries = NULL;
    size_t count = 0;
    assert_int_equal(registry_register(f->store, &e, 5000), -1);
    assert_int_equal(registry_list(f->store, NULL, &entries, &count), -1);
    assert_null(entries); /* output untouched on failure */

    /* This server keeps no data across a restart: the next heartbeat must re-register the
       instance from nothing (and reload the script Redis no longer knows). */
    assert_int_equal(testenv_redis_restart(f->redis), 0);
    int64_t deadline = testenv_now_ms() + 5000;
    while (registry_register(f->store, &e, 5000) != 0) {
        assert_true(testenv_now_ms() < deadline);
        testenv_pause_ms(50);
    }
    assert_int_equal(registry_list(f->store, NULL, &entries, &count), 0);
    assert_int_equal(count, 1);
    assert_string_equal(entries[0].instance, "taskmgr-1");
    assert_string_equal(entries[0].endpoint, "tcp://127.0.0.1:5301");
    free(entries);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_register_list_deregister, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_unrefreshed_instance_expires, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_expired_hash_is_not_listed, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_redis_away_and_back, testenv_setup, testenv_teardown),
    };
    return cmocka_run_group_tests(tests, testenv_group_setup, testenv_group_teardown);
}
