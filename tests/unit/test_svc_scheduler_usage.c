/*  test_svc_scheduler_usage: a host's usage changes like every other state, against a real
    redis-server. Each claim, move and release bumps the version of every host whose used_*
    changed and appends one host.usage event (host, vm, change, the new used_*, version,
    at_ms) in the same step; a claim asked again, or refused for capacity, changes nothing
    and tells nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "placement.h"
#include "testenv.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VM "00000000-0000-4000-8000-000000000042"

typedef struct {
    testenv_redis_t *redis;
    store_t *store;
    placement_t *placement;
} fixture_t;

static int s_group_setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    if (!f || !(f->redis = testenv_redis_start(0)))
        return -1;
    *state = f;
    return 0;
}

static int s_group_teardown(void **state)
{
    fixture_t *f = *state;
    testenv_redis_destroy(&f->redis);
    free(f);
    return 0;
}

static int s_setup(void **state)
{
    fixture_t *f = *state;
    f->store = testenv_store(f->redis, 1);
    if (!f->store)
        return -1;
    placement_config_t c;
    placement_config_defaults(&c);
    c.down_grace_ms = 0; /* the store is fresh: judge hosts by their beats at once */
    c.refresh_ms = 0;
    f->placement = placement_new(f->store, &c);
    return f->placement ? 0 : -1;
}

static int s_teardown(void **state)
{
    fixture_t *f = *state;
    placement_destroy(&f->placement);
    store_destroy(&f->store);
    return 0;
}

static void s_host(store_t *store, const char *id, int64_t ram_mb)
{
    redisReply *r = store_command(store,
                                  "HSET berth:host:%s id %s state UP cap_vcpus 8 cap_ram_mb %lld "
                                  "cap_disk_gb 100 last_seen_ms %lld",
                                  id, id, (long long)ram_mb, (long long)util_now_ms());
    assert_non_null(r);
    freeReplyObject(r);
    r = store_command(store, "SADD berth:hosts %s", id);
    assert_non_null(r);
    freeReplyObject(r);
}

static long long s_version(store_t *store, const char *host)
{
    redisReply *r = store_command(store, "HGET berth:host:%s version", host);
    assert_non_null(r);
    long long v = r->type == REDIS_REPLY_STRING ? atoll(r->str) : 0;
    freeReplyObject(r);
    return v;
}

static long long s_xlen(store_t *store)
{
    redisReply *r = store_command(store, "XLEN %s", STORE_EVENTS);
    assert_non_null(r);
    long long n = r->integer;
    freeReplyObject(r);
    return n;
}

/* Event `back` entries from the newest (0 = newest) must say this. */
static void s_assert_usage(store_t *store, int back, const char *host, const char *change,
                           const char *used_ram_mb, const char *version)
{
    redisReply *r = store_command(store, "XREVRANGE %s + - COUNT %d", STORE_EVENTS, back + 1);
    assert_non_null(r);
    assert_true(r->type == REDIS_REPLY_ARRAY && r->elements == (size_t)back + 1);
    redisReply *pairs = r->element[back]->element[1];
    const char *want[][2] = {
        { "type", "host.usage" },       { "host", host },      { "vm", VM }, { "change", change },
        { "used_ram_mb", used_ram_mb }, { "version", version }
    };
    for (size_t w = 0; w < sizeof want / sizeof want[0]; w++) {
        const char *got = NULL;
        for (size_t i = 0; i + 1 < pairs->elements; i += 2)
            if (strcmp(pairs->element[i]->str, want[w][0]) == 0)
                got = pairs->element[i + 1]->str;
        if (!got || strcmp(got, want[w][1]) != 0)
            fail_msg("event %d: %s is '%s', expected '%s'", back, want[w][0], got ? got : "(none)",
                     want[w][1]);
    }
    char key[64];
    snprintf(key, sizeof key, "berth:host:%s", host);
    int at = 0, has_key = 0;
    for (size_t i = 0; i + 1 < pairs->elements; i += 2) {
        at |= strcmp(pairs->element[i]->str, "at_ms") == 0 &&
              atoll(pairs->element[i + 1]->str) > 1700000000000LL;
        has_key |= strcmp(pairs->element[i]->str, "key") == 0 &&
                   strcmp(pairs->element[i + 1]->str, key) == 0;
    }
    assert_true(at && has_key);
    freeReplyObject(r);
}

static int s_select(placement_t *p, int64_t ram, const char *exclude, placement_result_t *res)
{
    Berth__Resources flavor = BERTH__RESOURCES__INIT;
    flavor.vcpus = 2;
    flavor.ram_mb = ram;
    flavor.disk_gb = 10;
    Berth__SelectHost req = BERTH__SELECT_HOST__INIT;
    char *ex[] = { (char *)exclude };
    req.vm = VM;
    req.flavor = &flavor;
    req.exclude = exclude ? ex : NULL;
    req.n_exclude = exclude ? 1 : 0;
    berth_error_t error = { 0 };
    return placement_select(p, &req, res, &error);
}

static void test_claim_move_release_bump_and_tell(void **state)
{
    fixture_t *f = *state;
    s_host(f->store, "a", 8192);
    s_host(f->store, "b", 4096);
    placement_result_t res;

    assert_int_equal(s_select(f->placement, 2048, NULL, &res), 0);
    assert_string_equal(res.host, "a");
    assert_int_equal(s_version(f->store, "a"), 1);
    assert_int_equal(s_xlen(f->store), 1);
    s_assert_usage(f->store, 0, "a", "claim", "2048", "1");

    /* Asked again: the claim stands, nothing is written or told. */
    assert_int_equal(s_select(f->placement, 2048, NULL, &res), 0);
    assert_true(res.existing);
    assert_int_equal(s_version(f->store, "a"), 1);
    assert_int_equal(s_xlen(f->store), 1);

    /* Moved off "a": both hosts change in the one step, each with its event. */
    assert_int_equal(s_select(f->placement, 2048, "a", &res), 0);
    assert_string_equal(res.host, "b");
    assert_int_equal(s_version(f->store, "a"), 2);
    assert_int_equal(s_version(f->store, "b"), 1);
    assert_int_equal(s_xlen(f->store), 3);
    s_assert_usage(f->store, 1, "a", "release", "0", "2");
    s_assert_usage(f->store, 0, "b", "claim", "2048", "1");

    int released = -1;
    berth_error_t error = { 0 };
    assert_int_equal(placement_release(f->placement, VM, &released, &error), 0);
    assert_int_equal(released, 1);
    assert_int_equal(s_version(f->store, "b"), 2);
    assert_int_equal(s_xlen(f->store), 4);
    s_assert_usage(f->store, 0, "b", "release", "0", "2");

    /* Nothing left to release: nothing told. */
    assert_int_equal(placement_release(f->placement, VM, &released, &error), 0);
    assert_int_equal(released, 0);
    assert_int_equal(s_xlen(f->store), 4);
}

static void test_refused_claim_changes_nothing(void **state)
{
    fixture_t *f = *state;
    s_host(f->store, "tiny", 1024);
    placement_result_t res;
    assert_int_equal(s_select(f->placement, 2048, NULL, &res), PLACEMENT_NO_VALID_HOST);
    assert_int_equal(s_version(f->store, "tiny"), 0);
    assert_int_equal(s_xlen(f->store), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_claim_move_release_bump_and_tell, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_refused_claim_changes_nothing, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, s_group_setup, s_group_teardown);
}
