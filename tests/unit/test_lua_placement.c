/*  test_lua_placement: lib/lua/placement_claim.lua and placement_release.lua on a real Redis.
    A claim re-checks the host (state, heartbeat, capacity with the ratios) and takes its share
    in the same step; a claim that moved meanwhile is refused; moving a claim gives the old
    host its share back; a release gives back exactly the claim (never below zero). Each host
    whose usage changed has its version bumped and a host.usage event in the same step. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "lua_scripts.h"
#include "testenv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef testenv_fixture_t fixture_t;

#define NOW "1000000"

static void s_host(store_t *store, const char *key, const char *state)
{
    redisReply *r = store_command(store,
                                  "HSET %s state %s last_seen_ms " NOW " cap_vcpus 8 cap_ram_mb "
                                  "16384 cap_disk_gb 100 used_vcpus 0 used_ram_mb 0 used_disk_gb 0",
                                  key, state);
    assert_non_null(r);
    freeReplyObject(r);
}

/* Claim vm's 2 vcpus / 4096 MB / 20 GB on host; the reply (caller frees). */
static redisReply *s_claim(store_t *store, const char *host, const char *now_on, const char *vcpus)
{
    char claim[32], host_key[32], prev_key[32];
    snprintf(claim, sizeof claim, "t:claim:{vm}");
    snprintf(host_key, sizeof host_key, "t:host:%s", host);
    snprintf(prev_key, sizeof prev_key, "t:host:%s", *now_on ? now_on : host);
    const char *argv[] = { claim, host_key, prev_key, "t:events", host, vcpus,  "4096", "20",
                           NOW,   "3000",   "1",      "1",        "1",  now_on, "vm" };
    redisReply *r = store_run(store, &lua_placement_claim, 4, 15, argv);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    return r;
}

static void s_assert_used(store_t *store, const char *key, const char *vcpus, const char *ram)
{
    redisReply *r = store_command(store, "HMGET %s used_vcpus used_ram_mb", key);
    assert_non_null(r);
    assert_string_equal(r->element[0]->str, vcpus);
    assert_string_equal(r->element[1]->str, ram);
    freeReplyObject(r);
}

static void test_claim_checks_then_takes(void **state)
{
    fixture_t *f = *state;
    s_host(f->store, "t:host:h1", "UP");
    s_host(f->store, "t:host:h2", "UP");
    s_host(f->store, "t:host:down", "DOWN");

    redisReply *r = s_claim(f->store, "down", "", "2");
    assert_string_equal(r->element[0]->str, "REJECTED");
    assert_int_equal(r->elements, 9);
    assert_string_equal(r->element[1]->str, "DOWN");
    freeReplyObject(r);
    r = s_claim(f->store, "h1", "", "9"); /* more vCPUs than 8 * ratio 1 */
    assert_string_equal(r->element[0]->str, "REJECTED");
    freeReplyObject(r);

    r = s_claim(f->store, "h1", "", "2");
    assert_string_equal(r->element[0]->str, "OK");
    assert_int_equal(r->element[1]->integer, 2);
    assert_int_equal(r->element[2]->integer, 4096);
    freeReplyObject(r);
    /* Someone who did not see that claim: refused, told where it is. */
    r = s_claim(f->store, "h2", "", "2");
    assert_string_equal(r->element[0]->str, "CHANGED");
    assert_string_equal(r->element[1]->str, "h1");
    freeReplyObject(r);

    /* Moving it: h1 gets its share back in the same step. */
    r = s_claim(f->store, "h2", "h1", "2");
    assert_string_equal(r->element[0]->str, "OK");
    freeReplyObject(r);
    s_assert_used(f->store, "t:host:h1", "0", "0");
    s_assert_used(f->store, "t:host:h2", "2", "4096");
    r = store_command(f->store, "HGET t:claim:{vm} host");
    assert_string_equal(r->str, "h2");
    freeReplyObject(r);
    /* Claim on h1, release from h1, claim on h2: three events, h1 at version 2. */
    r = store_command(f->store, "XLEN t:events");
    assert_int_equal(r->integer, 3);
    freeReplyObject(r);
    r = store_command(f->store, "HMGET t:host:h1 version");
    assert_string_equal(r->element[0]->str, "2");
    freeReplyObject(r);
    r = store_command(f->store, "XREVRANGE t:events + - COUNT 1");
    redisReply *ev = r->element[0]->element[1];
    assert_string_equal(ev->element[1]->str, "host.usage");
    assert_string_equal(ev->element[3]->str, "t:host:h2");
    freeReplyObject(r);
}

static redisReply *s_release(store_t *store, const char *host)
{
    char host_key[32];
    snprintf(host_key, sizeof host_key, "t:host:%s", host);
    const char *argv[] = { "t:claim:{vm}", host_key, "t:events", host, "vm", NOW };
    redisReply *r = store_run(store, &lua_placement_release, 3, 6, argv);
    assert_non_null(r);
    assert_true(r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
    return r;
}

static void test_release_gives_back_exactly(void **state)
{
    fixture_t *f = *state;
    s_host(f->store, "t:host:h1", "UP");
    redisReply *r = s_claim(f->store, "h1", "", "2");
    freeReplyObject(r);
    r = s_release(f->store, "other");
    assert_string_equal(r->str, "CHANGED");
    freeReplyObject(r);
    /* Someone zeroed the host meanwhile: the release never goes below zero. */
    r = store_command(f->store, "HSET t:host:h1 used_vcpus 1");
    freeReplyObject(r);
    r = s_release(f->store, "h1");
    assert_string_equal(r->str, "RELEASED");
    freeReplyObject(r);
    s_assert_used(f->store, "t:host:h1", "0", "0");
    r = store_command(f->store, "EXISTS t:claim:{vm}");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
    r = s_release(f->store, "h1");
    assert_string_equal(r->str, "NONE");
    freeReplyObject(r);
}

/* Shelving: keep_disk gives back the vCPUs and RAM only; the claim stays, holding the disk,
   and a claim moved from it (unshelve elsewhere) gives the old host its disk back. */
static void test_release_keeping_the_disk(void **state)
{
    fixture_t *f = *state;
    s_host(f->store, "t:host:h1", "UP");
    s_host(f->store, "t:host:h2", "UP");
    redisReply *r = s_claim(f->store, "h1", "", "2");
    freeReplyObject(r);
    const char *argv[] = { "t:claim:{vm}", "t:host:h1", "t:events", "h1", "vm", NOW, "1" };
    r = store_run(f->store, &lua_placement_release, 3, 7, argv);
    assert_non_null(r);
    assert_string_equal(r->str, "RELEASED");
    freeReplyObject(r);
    s_assert_used(f->store, "t:host:h1", "0", "0");
    r = store_command(f->store, "HMGET t:host:h1 used_disk_gb");
    assert_string_equal(r->element[0]->str, "20");
    freeReplyObject(r);
    r = store_command(f->store, "HMGET t:claim:{vm} host vcpus ram_mb disk_gb");
    assert_string_equal(r->element[0]->str, "h1");
    assert_string_equal(r->element[1]->str, "0");
    assert_string_equal(r->element[2]->str, "0");
    assert_string_equal(r->element[3]->str, "20");
    freeReplyObject(r);
    r = store_command(f->store, "XREVRANGE t:events + - COUNT 1");
    assert_string_equal(r->element[0]->element[1]->element[9]->str, "shrink");
    freeReplyObject(r);
    /* Placed whole on h2: h1 gets its disk back in the same step. */
    r = s_claim(f->store, "h2", "h1", "2");
    assert_string_equal(r->element[0]->str, "OK");
    freeReplyObject(r);
    r = store_command(f->store, "HMGET t:host:h1 used_disk_gb");
    assert_string_equal(r->element[0]->str, "0");
    freeReplyObject(r);
    s_assert_used(f->store, "t:host:h2", "2", "4096");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_claim_checks_then_takes, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_release_gives_back_exactly, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_release_keeping_the_disk, testenv_setup,
                                        testenv_teardown),
    };
    return cmocka_run_group_tests(tests, testenv_group_setup, testenv_group_teardown);
}
