/*  test_lua_placement: lib/lua/placement_claim.lua and placement_release.lua on a real Redis.
    A claim re-checks the host (state, heartbeat, capacity with the ratios) and takes its share
    in the same step; a claim that moved meanwhile is refused; moving a claim gives the old
    host its share back; a release gives back exactly the claim (never below zero). Each host
    whose usage changed has its version bumped and a host.usage event in the same step. A
    group's reservations (on the host, on any host) are taken by its claims first, never by
    another group's, and given back on release. reservations_set.lua (approval's write of a
    group's reservations) lets grow only what is free and unreserved. A claim on a network
    takes an address and a MAC in its step; a release gives them back. A claim past the
    host's most VMs, or against its request's placement rule, is refused in the same step. */
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

#define NOW          "1000000"
#define PLATFORM_NOW "864000000000" /* the platform clock (lib/clock.h), ahead when scaled */

static void s_host(store_t *store, const char *key, const char *state)
{
    redisReply *r = store_command(store,
                                  "HSET %s state %s last_seen_ms " NOW " cap_vcpus 8 cap_ram_mb "
                                  "16384 cap_disk_gb 100 used_vcpus 0 used_ram_mb 0 used_disk_gb 0",
                                  key, state);
    assert_non_null(r);
    freeReplyObject(r);
}

/* Claim vm's vcpus / ram MB / 20 GB on host for group; with pool, every host (h1, h2) for the
   any-host check. The reply (caller frees). */
static redisReply *s_claim_as(store_t *store, const char *vm, const char *group, const char *host,
                              const char *now_on, const char *vcpus, const char *ram, int pool)
{
    char claim[32], host_key[32], prev_key[32], res_key[32], prev_res_key[32];
    snprintf(claim, sizeof claim, "t:claim:{%s}", vm);
    snprintf(host_key, sizeof host_key, "t:host:%s", host);
    snprintf(prev_key, sizeof prev_key, "t:host:%s", *now_on ? now_on : host);
    snprintf(res_key, sizeof res_key, "t:res:%s", host);
    snprintf(prev_res_key, sizeof prev_res_key, "t:res:%s", *now_on ? now_on : host);
    const char *argv[] = {
        claim,   host_key,    prev_key,   "t:events",  res_key,    prev_res_key,
        "t:any", "t:host:h1", "t:res:h1", "t:host:h2", "t:res:h2", host,
        vcpus,   ram,         "20",       NOW,         "3000",     "1",
        "1",     "1",         now_on,     vm,          group,      PLATFORM_NOW
    };
    int n_keys = pool ? 11 : 7;
    const char **args = argv;
    const char *no_pool[20];
    if (!pool) {
        memcpy(no_pool, argv, 7 * sizeof *argv);
        memcpy(no_pool + 7, argv + 11, 13 * sizeof *argv);
        args = no_pool;
    }
    redisReply *r = store_run(store, &lua_placement_claim, n_keys, n_keys + 13, args);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    return r;
}

/* Claim vm's 2 vcpus / 4096 MB / 20 GB on host; the reply (caller frees). */
static redisReply *s_claim(store_t *store, const char *host, const char *now_on, const char *vcpus)
{
    return s_claim_as(store, "vm", "ga", host, now_on, vcpus, "4096", 0);
}

static void s_assert_used(store_t *store, const char *key, const char *vcpus, const char *ram)
{
    redisReply *r = store_command(store, "HMGET %s used_vcpus used_ram_mb", key);
    assert_non_null(r);
    assert_string_equal(r->element[0]->str, vcpus);
    assert_string_equal(r->element[1]->str, ram);
    freeReplyObject(r);
}

static int64_t s_get(store_t *store, const char *key, const char *field)
{
    redisReply *r = store_command(store, "HGET %s %s", key, field);
    assert_non_null(r);
    int64_t v = r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : -1;
    freeReplyObject(r);
    return v;
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
    /* Stamped on the platform clock, not the real time the host's freshness is judged by. */
    assert_string_equal(ev->element[ev->elements - 2]->str, "at_ms");
    assert_string_equal(ev->element[ev->elements - 1]->str, PLATFORM_NOW);
    freeReplyObject(r);

    /* Placed again on the host it is on, with another size: its old share goes and the new
       one comes in the same step; the host still counts one claim, its version moved twice
       (two events), and the last event carries what the host holds now. */
    r = s_claim(f->store, "h2", "h2", "3");
    assert_string_equal(r->element[0]->str, "OK");
    assert_int_equal(r->element[1]->integer, 3);
    freeReplyObject(r);
    s_assert_used(f->store, "t:host:h2", "3", "4096");
    assert_int_equal(s_get(f->store, "t:host:h2", "claims"), 1);
    assert_int_equal(s_get(f->store, "t:host:h2", "version"), 3);
    r = store_command(f->store, "XREVRANGE t:events + - COUNT 1");
    ev = r->element[0]->element[1];
    assert_string_equal(ev->element[9]->str, "claim");
    assert_string_equal(ev->element[11]->str, "3");
    assert_string_equal(ev->element[17]->str, "1");
    assert_string_equal(ev->element[19]->str, "3");
    freeReplyObject(r);
}

static redisReply *s_release_vm(store_t *store, const char *vm, const char *host)
{
    char claim[32], host_key[32], res_key[32];
    snprintf(claim, sizeof claim, "t:claim:{%s}", vm);
    snprintf(host_key, sizeof host_key, "t:host:%s", host);
    snprintf(res_key, sizeof res_key, "t:res:%s", host);
    const char *argv[] = { claim, host_key, "t:events", res_key, "t:any", host, vm, NOW };
    redisReply *r = store_run(store, &lua_placement_release, 5, 8, argv);
    assert_non_null(r);
    assert_true(r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
    return r;
}

static redisReply *s_release(store_t *store, const char *host)
{
    return s_release_vm(store, "vm", host);
}

static void s_verdict(redisReply *r, const char *want, const char *detail)
{
    if (r->type != REDIS_REPLY_ARRAY) { /* a release's answer */
        assert_string_equal(r->str, want);
        freeReplyObject(r);
        return;
    }
    assert_string_equal(r->element[0]->str, want);
    if (detail)
        assert_string_equal(r->element[1]->str, detail);
    freeReplyObject(r);
}

/* Group ga holds 8192 MB on h1 (16384): gb may take only the other 8192; ga's claims take its
   reservation first and record that part; a release (and a move) gives it back. */
static void test_reservation_on_host(void **state)
{
    fixture_t *f = *state;
    s_host(f->store, "t:host:h1", "UP");
    s_host(f->store, "t:host:h2", "UP");
    redisReply *r = store_command(f->store, "HSET t:res:h1 ga:ram_mb 8192 ga:vcpus 1");
    freeReplyObject(r);
    s_verdict(s_claim_as(f->store, "b1", "gb", "h1", "", "1", "8192", 0), "OK", NULL);
    s_verdict(s_claim_as(f->store, "b2", "gb", "h1", "", "1", "1024", 0), "RESERVED", "ram_mb");
    /* ga takes 4096 of its 8192 plus its 1 reserved vCPU; then 6144: 4096 reserved, 2048
       beyond: no room (8192 + 4096 + 6144 > 16384). */
    s_verdict(s_claim_as(f->store, "a1", "ga", "h1", "", "2", "4096", 0), "OK", NULL);
    assert_int_equal(s_get(f->store, "t:res:h1", "ga:used_ram_mb"), 4096);
    assert_int_equal(s_get(f->store, "t:res:h1", "ga:used_vcpus"), 1);
    assert_int_equal(s_get(f->store, "t:claim:{a1}", "res_ram_mb"), 4096);
    assert_int_equal(s_get(f->store, "t:claim:{a1}", "res_vcpus"), 1);
    assert_int_equal(s_get(f->store, "t:claim:{a1}", "any_ram_mb"), 0);
    s_verdict(s_claim_as(f->store, "a2", "ga", "h1", "", "1", "6144", 0), "REJECTED", NULL);
    s_verdict(s_claim_as(f->store, "a2", "ga", "h1", "", "1", "4096", 0), "OK", NULL);
    assert_int_equal(s_get(f->store, "t:res:h1", "ga:used_ram_mb"), 8192);
    /* Released: the reservation is ga's again, gb still may not take it. */
    s_verdict(s_release_vm(f->store, "a2", "h1"), "RELEASED", NULL);
    assert_int_equal(s_get(f->store, "t:res:h1", "ga:used_ram_mb"), 4096);
    s_verdict(s_claim_as(f->store, "b2", "gb", "h1", "", "1", "1024", 0), "RESERVED", "ram_mb");
    /* Moving a1 to h2 gives h1 and the reservation their parts back in the same step. */
    s_verdict(s_claim_as(f->store, "a1", "ga", "h2", "h1", "2", "4096", 0), "OK", NULL);
    assert_int_equal(s_get(f->store, "t:res:h1", "ga:used_ram_mb"), 0);
    assert_int_equal(s_get(f->store, "t:res:h1", "ga:used_vcpus"), 0);
    s_assert_used(f->store, "t:host:h1", "1", "8192");
    /* A group whose reservation went keeps no counters once its claims are released. */
    r = store_command(f->store, "HSET t:res:h2 gc:used_ram_mb 0");
    freeReplyObject(r);
    s_verdict(s_release_vm(f->store, "b1", "h1"), "RELEASED", NULL);
    r = store_command(f->store, "HDEL t:res:h1 ga:ram_mb ga:vcpus");
    freeReplyObject(r);
    s_verdict(s_claim_as(f->store, "a3", "ga", "h1", "", "1", "1024", 0), "OK", NULL);
    s_verdict(s_release_vm(f->store, "a3", "h1"), "RELEASED", NULL);
    r = store_command(f->store, "HLEN t:res:h1");
    assert_int_equal(r->integer, 2); /* ga:used_* kept at 0 only while ga reserves there */
    freeReplyObject(r);
}

/* Group ga holds 8192 MB on any host: gb's claims must leave that much free over the UP hosts;
   without the hosts the script asks for them; ga takes its reservation wherever it lands. */
static void test_reservation_any_host(void **state)
{
    fixture_t *f = *state;
    s_host(f->store, "t:host:h1", "UP");
    s_host(f->store, "t:host:h2", "UP");
    redisReply *r = store_command(f->store, "HSET t:any ga:ram_mb 8192");
    freeReplyObject(r);
    s_verdict(s_claim_as(f->store, "b1", "gb", "h1", "", "1", "12288", 0), "POOL", NULL);
    s_verdict(s_claim_as(f->store, "b1", "gb", "h1", "", "1", "12288", 1), "OK", NULL);
    s_verdict(s_claim_as(f->store, "b2", "gb", "h2", "", "1", "12288", 1), "OK", NULL);
    /* 4096 + 4096 free in all: exactly ga's 8192, so gb gets no more anywhere. */
    s_verdict(s_claim_as(f->store, "b3", "gb", "h2", "", "1", "1024", 1), "RESERVED", "any:ram_mb");
    /* ga lands on either host, from its reservation. */
    s_verdict(s_claim_as(f->store, "a1", "ga", "h1", "", "1", "4096", 0), "OK", NULL);
    assert_int_equal(s_get(f->store, "t:any", "ga:used_ram_mb"), 4096);
    assert_int_equal(s_get(f->store, "t:claim:{a1}", "any_ram_mb"), 4096);
    assert_int_equal(s_get(f->store, "t:claim:{a1}", "res_ram_mb"), 0);
    s_verdict(s_claim_as(f->store, "b3", "gb", "h2", "", "1", "1024", 1), "RESERVED", "any:ram_mb");
    s_verdict(s_claim_as(f->store, "a2", "ga", "h2", "", "1", "4096", 0), "OK", NULL);
    /* Every any-host reservation claimed: no pool check, the host's capacity decides. */
    s_verdict(s_release_vm(f->store, "b2", "h2"), "RELEASED", NULL);
    s_verdict(s_claim_as(f->store, "b3", "gb", "h2", "", "1", "1024", 0), "OK", NULL);
    s_verdict(s_release_vm(f->store, "a2", "h2"), "RELEASED", NULL);
    assert_int_equal(s_get(f->store, "t:any", "ga:used_ram_mb"), 4096);
    /* A DOWN host's free capacity does not count: 4096 of ga's is unclaimed, h2 has
       16384 - 1024 free, h1 (down) 4096; gb may take h2 down to 4096 free, not below. */
    r = store_command(f->store, "HSET t:host:h1 state DOWN");
    freeReplyObject(r);
    s_verdict(s_claim_as(f->store, "b4", "gb", "h2", "", "1", "11264", 1), "OK", NULL);
    s_verdict(s_claim_as(f->store, "b5", "gb", "h2", "", "1", "1", 1), "RESERVED", "any:ram_mb");
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
    /* ga reserves on h1: the claim takes 4096 MB and its 20 GB from it. */
    redisReply *r = store_command(f->store, "HSET t:res:h1 ga:ram_mb 8192 ga:disk_gb 20");
    freeReplyObject(r);
    r = s_claim(f->store, "h1", "", "2");
    freeReplyObject(r);
    const char *argv[] = { "t:claim:{vm}", "t:host:h1", "t:events", "t:res:h1", "t:any",
                           "h1",           "vm",        NOW,        "1" };
    r = store_run(f->store, &lua_placement_release, 5, 9, argv);
    assert_non_null(r);
    assert_string_equal(r->str, "RELEASED");
    freeReplyObject(r);
    /* The reservation gets the RAM back, not the disk. */
    assert_int_equal(s_get(f->store, "t:res:h1", "ga:used_ram_mb"), 0);
    assert_int_equal(s_get(f->store, "t:res:h1", "ga:used_disk_gb"), 20);
    assert_int_equal(s_get(f->store, "t:claim:{vm}", "res_ram_mb"), 0);
    assert_int_equal(s_get(f->store, "t:claim:{vm}", "res_disk_gb"), 20);
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
    assert_int_equal(s_get(f->store, "t:res:h1", "ga:used_disk_gb"), 0);
}

/* reservations_set for group ga, version "0", with the hosts h1 and h2, at the platform time
   at: one named (h1, or "" for any host) reservation of ram MB (none when ram is NULL). The
   reply (caller frees). */
static redisReply *s_reserve_at(store_t *store, const char *host, const char *ram, const char *at)
{
    const char *argv[] = { "t:group",
                           "t:any",
                           "t:reserved",
                           "t:events",
                           "t:host:h1",
                           "t:res:h1",
                           "t:host:h2",
                           "t:res:h2",
                           "t:log",
                           "ga",
                           "0",
                           NOW,
                           "3000",
                           "1",
                           "1",
                           "1",
                           ram ? "[{}]" : "",
                           "admin",
                           "2",
                           "h1",
                           "h2",
                           host,
                           "0",
                           ram,
                           "0",
                           at };
    if (!ram)
        argv[21] = at; /* no quad: the time follows the pairs' hosts */
    redisReply *r = store_run(store, &lua_reservations_set, 9, ram ? 26 : 22, argv);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    return r;
}

static redisReply *s_reserve(store_t *store, const char *host, const char *ram)
{
    return s_reserve_at(store, host, ram, PLATFORM_NOW);
}

/* The reservation log's entry at (NULL when none; caller frees). */
static char *s_log(store_t *store, const char *at)
{
    redisReply *r = store_command(store, "HGET t:log %s", at);
    assert_non_null(r);
    char *text = r->type == REDIS_REPLY_STRING ? strdup(r->str) : NULL;
    freeReplyObject(r);
    return text;
}

/* reservations_set: what grows must be free and unreserved now (on the host, or over the UP
   hosts for any host); shrinking is always allowed; the reserved-hosts set follows. */
static void test_reservations_set(void **state)
{
    fixture_t *f = *state;
    s_host(f->store, "t:host:h1", "UP");
    s_host(f->store, "t:host:h2", "UP");
    redisReply *r = s_reserve(f->store, "h1", "1024");
    assert_string_equal(r->element[0]->str, "NOT_FOUND");
    freeReplyObject(r);
    r = store_command(f->store, "HSET t:group version 1");
    freeReplyObject(r);
    /* gb holds 8192 of h1 (unclaimed), and a claim holds 4096: 4096 left for ga. */
    r = store_command(f->store, "HSET t:res:h1 gb:ram_mb 8192");
    freeReplyObject(r);
    r = store_command(f->store, "HSET t:host:h1 used_ram_mb 4096");
    freeReplyObject(r);
    r = s_reserve(f->store, "h1", "6000");
    assert_string_equal(r->element[0]->str, "EXCEEDS");
    assert_string_equal(r->element[1]->str, "h1");
    assert_string_equal(r->element[2]->str, "ram_mb");
    assert_string_equal(r->element[3]->str, "6000");
    assert_string_equal(r->element[4]->str, "4096");
    freeReplyObject(r);
    char *log = s_log(f->store, PLATFORM_NOW);
    assert_null(log); /* refused: nothing logged */
    r = s_reserve(f->store, "h1", "4096");
    assert_string_equal(r->element[0]->str, "OK");
    assert_int_equal(r->element[1]->integer, 2);
    freeReplyObject(r);
    log = s_log(f->store, PLATFORM_NOW);
    assert_string_equal(log, "{\"vcpus\":0,\"ram_mb\":4096,\"disk_gb\":0}");
    free(log);
    assert_int_equal(s_get(f->store, "t:res:h1", "ga:ram_mb"), 4096);
    assert_int_equal(s_get(f->store, "t:group", "version"), 2);
    r = store_command(f->store, "SISMEMBER t:reserved h1");
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    /* Any host instead (the list replaces h1's): h1's 4096 free again, h2 16384; a down
       host counts not. */
    r = s_reserve(f->store, "", "20481");
    assert_string_equal(r->element[0]->str, "EXCEEDS");
    assert_string_equal(r->element[1]->str, "");
    assert_string_equal(r->element[4]->str, "20480");
    freeReplyObject(r);
    r = store_command(f->store, "HSET t:host:h2 state DOWN");
    freeReplyObject(r);
    r = s_reserve(f->store, "", "4097");
    assert_string_equal(r->element[0]->str, "EXCEEDS");
    freeReplyObject(r);
    r = store_command(f->store, "HSET t:host:h2 state UP");
    freeReplyObject(r);
    r = s_reserve(f->store, "", "16384");
    assert_string_equal(r->element[0]->str, "OK");
    freeReplyObject(r);
    /* Replacing: h1's reservation goes (only the any-host one is left); gb keeps h1 listed. */
    assert_int_equal(s_get(f->store, "t:res:h1", "ga:ram_mb"), -1);
    assert_int_equal(s_get(f->store, "t:any", "ga:ram_mb"), 16384);
    r = store_command(f->store, "HDEL t:res:h1 gb:ram_mb");
    freeReplyObject(r);
    r = s_reserve_at(f->store, "", NULL, "864000000001"); /* none at all */
    assert_string_equal(r->element[0]->str, "OK");
    freeReplyObject(r);
    /* The log keeps each change at its platform time: 16384 then, nothing since. */
    log = s_log(f->store, PLATFORM_NOW);
    assert_string_equal(log, "{\"vcpus\":0,\"ram_mb\":16384,\"disk_gb\":0}");
    free(log);
    log = s_log(f->store, "864000000001");
    assert_string_equal(log, "{\"vcpus\":0,\"ram_mb\":0,\"disk_gb\":0}");
    free(log);
    r = store_command(f->store, "SCARD t:reserved");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
    r = store_command(f->store, "HEXISTS t:group reservations");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
}

/* Claim vm's 1 vCPU / 256 MB / 1 GB on host with an address on network t:net (MAC mac). */
static redisReply *s_claim_net(store_t *store, const char *vm, const char *host, const char *now_on,
                               const char *mac)
{
    char claim[32], host_key[32], prev_key[32], res_key[32], prev_res_key[32];
    snprintf(claim, sizeof claim, "t:claim:{%s}", vm);
    snprintf(host_key, sizeof host_key, "t:host:%s", host);
    snprintf(prev_key, sizeof prev_key, "t:host:%s", *now_on ? now_on : host);
    snprintf(res_key, sizeof res_key, "t:res:%s", host);
    snprintf(prev_res_key, sizeof prev_res_key, "t:res:%s", *now_on ? now_on : host);
    const char *argv[] = { claim,        host_key, prev_key,     "t:events", res_key,
                           prev_res_key, "t:any",  "t:net",      "t:addrs",  "t:macs",
                           host,         "1",      "256",        "1",        NOW,
                           "3000",       "1",      "1",          "1",        now_on,
                           vm,           "ga",     PLATFORM_NOW, "net-id",   mac };
    redisReply *r = store_run(store, &lua_placement_claim, 10, 25, argv);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    return r;
}

static redisReply *s_release_net(store_t *store, const char *vm, const char *host,
                                 const char *keep_disk, const char *keep_address)
{
    char claim[32], host_key[32], res_key[32];
    snprintf(claim, sizeof claim, "t:claim:{%s}", vm);
    snprintf(host_key, sizeof host_key, "t:host:%s", host);
    snprintf(res_key, sizeof res_key, "t:res:%s", host);
    const char *argv[] = { claim, host_key, "t:events", res_key,   "t:any",  "t:addrs",   "t:macs",
                           host,  vm,       NOW,        keep_disk, "net-id", keep_address };
    redisReply *r = store_run(store, &lua_placement_release, 7, 13, argv);
    assert_non_null(r);
    return r;
}

/* Addresses: a /29 with its gateway at .1 has 5 to give (.2 to .6): five VMs get five
   distinct ones, never the network address, the gateway or the broadcast; the sixth is
   refused naming the network, and nothing is written for it; a release gives the address
   and MAC back (the next VM gets that address), shelving keeps them and so does a release of
   the capacity only, a moved claim keeps its address, a MAC in use and a network gone are
   refused. */
static void test_network_addresses(void **state)
{
    fixture_t *f = *state;
    s_host(f->store, "t:host:h1", "UP");
    s_host(f->store, "t:host:h2", "UP");
    redisReply *r = store_command(f->store, "HSET t:net id net-id name lab cidr 10.9.8.0/29 "
                                            "gateway 10.9.8.1");
    freeReplyObject(r);
    char seen[8] = { 0 };
    const char *vms[] = { "v1", "v2", "v3", "v4", "v5" };
    for (int i = 0; i < 5; i++) {
        char mac[24];
        snprintf(mac, sizeof mac, "02:00:00:00:00:%02x", i + 1);
        r = s_claim_net(f->store, vms[i], "h1", "", mac);
        assert_string_equal(r->element[0]->str, "OK");
        assert_int_equal(r->elements, 6);
        int last = -1;
        assert_int_equal(sscanf(r->element[4]->str, "10.9.8.%d", &last), 1);
        assert_true(last >= 2 && last <= 6);
        assert_int_equal(seen[last], 0);
        seen[last] = 1;
        assert_string_equal(r->element[5]->str, mac);
        freeReplyObject(r);
        assert_int_equal(s_get(f->store, "t:claim:{v1}", "vcpus"), 1);
    }
    r = store_command(f->store, "HLEN t:addrs");
    assert_int_equal(r->integer, 5);
    freeReplyObject(r);
    r = store_command(f->store, "HGET t:addrs 10.9.8.2");
    assert_string_equal(r->str, "v1");
    freeReplyObject(r);

    /* The pool is empty: refused with the network's name and size, nothing taken. */
    r = s_claim_net(f->store, "v6", "h1", "", "02:00:00:00:00:06");
    assert_string_equal(r->element[0]->str, "EXHAUSTED");
    assert_string_equal(r->element[1]->str, "lab");
    assert_int_equal(r->element[2]->integer, 5);
    freeReplyObject(r);
    assert_int_equal(s_get(f->store, "t:host:h1", "used_vcpus"), 5);
    r = store_command(f->store, "EXISTS t:claim:{v6}");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);

    /* Shelving keeps the address; a full release gives it and the MAC back. */
    r = s_release_net(f->store, "v3", "h1", "1", "");
    assert_string_equal(r->str, "RELEASED");
    freeReplyObject(r);
    r = store_command(f->store, "HGET t:addrs 10.9.8.4");
    assert_string_equal(r->str, "v3");
    freeReplyObject(r);
    r = s_release_net(f->store, "v3", "h1", "", "");
    assert_string_equal(r->str, "RELEASED");
    freeReplyObject(r);
    r = store_command(f->store, "HEXISTS t:addrs 10.9.8.4");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
    r = store_command(f->store, "HEXISTS t:macs 02:00:00:00:00:03");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);

    /* A MAC in use is refused, nothing taken; another one gets the freed address. */
    r = s_claim_net(f->store, "v6", "h1", "", "02:00:00:00:00:01");
    assert_string_equal(r->element[0]->str, "MAC");
    freeReplyObject(r);
    r = s_claim_net(f->store, "v6", "h1", "", "02:00:00:00:00:06");
    assert_string_equal(r->element[0]->str, "OK");
    assert_string_equal(r->element[4]->str, "10.9.8.4");
    freeReplyObject(r);

    /* A claim moved to another host keeps its address and MAC. */
    r = s_claim_net(f->store, "v1", "h2", "h1", "02:00:00:00:00:99");
    assert_string_equal(r->element[0]->str, "OK");
    assert_string_equal(r->element[4]->str, "10.9.8.2");
    assert_string_equal(r->element[5]->str, "02:00:00:00:00:01");
    freeReplyObject(r);
    r = store_command(f->store, "HLEN t:addrs");
    assert_int_equal(r->integer, 5);
    freeReplyObject(r);

    /* Undoing a build: the capacity all goes back, the claim keeps only the address, and
       the VM's next placement (elsewhere) has it again. */
    int64_t used = s_get(f->store, "t:host:h1", "used_vcpus");
    r = s_release_net(f->store, "v2", "h1", "", "1");
    assert_string_equal(r->str, "RELEASED");
    freeReplyObject(r);
    assert_int_equal(s_get(f->store, "t:host:h1", "used_vcpus"), used - 1);
    assert_int_equal(s_get(f->store, "t:claim:{v2}", "vcpus"), 0);
    assert_int_equal(s_get(f->store, "t:claim:{v2}", "disk_gb"), 0);
    r = store_command(f->store, "HGET t:addrs 10.9.8.3");
    assert_string_equal(r->str, "v2");
    freeReplyObject(r);
    r = s_claim_net(f->store, "v2", "h2", "h1", "02:00:00:00:00:98");
    assert_string_equal(r->element[0]->str, "OK");
    assert_string_equal(r->element[4]->str, "10.9.8.3");
    assert_string_equal(r->element[5]->str, "02:00:00:00:00:02");
    freeReplyObject(r);
    assert_int_equal(s_get(f->store, "t:host:h1", "used_vcpus"), used - 1);
    assert_int_equal(s_get(f->store, "t:claim:{v2}", "vcpus"), 1);

    /* A network gone: refused. */
    r = store_command(f->store, "DEL t:net");
    freeReplyObject(r);
    r = s_claim_net(f->store, "v7", "h1", "", "02:00:00:00:00:07");
    assert_string_equal(r->element[0]->str, "NO_NETWORK");
    freeReplyObject(r);
}

/* Claim vm's 1 vCPU / 256 MB / 1 GB on host h1 with an address on t:netA and t:netB (MACs
   macs, comma-separated); now_on: the host the claim is on ("" none). */
static redisReply *s_claim_two(store_t *store, const char *vm, const char *now_on, const char *macs)
{
    char claim[32];
    snprintf(claim, sizeof claim, "t:claim:{%s}", vm);
    const char *argv[] = { claim,    "t:host:h1",  "t:host:h1", "t:events", "t:res:h1", "t:res:h1",
                           "t:any",  "t:netA",     "t:addrsA",  "t:macs",   "t:netB",   "t:addrsB",
                           "t:macs", "h1",         "1",         "256",      "1",        NOW,
                           "3000",   "1",          "1",         "1",        now_on,     vm,
                           "ga",     PLATFORM_NOW, "A,B",       macs };
    redisReply *r = store_run(store, &lua_placement_claim, 13, 28, argv);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    return r;
}

static int64_t s_hlen(store_t *store, const char *key)
{
    redisReply *r = store_command(store, "HLEN %s", key);
    int64_t n = r->integer;
    freeReplyObject(r);
    return n;
}

/* Two networks: the claim gets an address and a MAC on each in its one step, both kept in
   the claim in order; the second network exhausted refuses the whole claim and nothing is
   taken on the first; a full release gives both back, and a release of the capacity only
   keeps both for the retry, which gets the same ones. */
static void test_two_networks(void **state)
{
    fixture_t *f = *state;
    s_host(f->store, "t:host:h1", "UP");
    freeReplyObject(
        store_command(f->store, "HSET t:netA name a cidr 10.1.0.0/24 gateway 10.1.0.1"));
    /* A /30 with its gateway: one address to give. */
    freeReplyObject(
        store_command(f->store, "HSET t:netB name b cidr 10.2.0.0/30 gateway 10.2.0.1"));
    redisReply *r = s_claim_two(f->store, "v1", "", "02:00:00:00:0a:01,02:00:00:00:0b:01");
    assert_string_equal(r->element[0]->str, "OK");
    assert_string_equal(r->element[4]->str, "10.1.0.2,10.2.0.2");
    assert_string_equal(r->element[5]->str, "02:00:00:00:0a:01,02:00:00:00:0b:01");
    freeReplyObject(r);
    r = store_command(f->store, "HMGET t:claim:{v1} network ip mac networks ips macs");
    assert_string_equal(r->element[0]->str, "A");
    assert_string_equal(r->element[1]->str, "10.1.0.2");
    assert_string_equal(r->element[2]->str, "02:00:00:00:0a:01");
    assert_string_equal(r->element[3]->str, "A,B");
    assert_string_equal(r->element[4]->str, "10.1.0.2,10.2.0.2");
    freeReplyObject(r);
    assert_int_equal(s_hlen(f->store, "t:addrsA"), 1);
    assert_int_equal(s_hlen(f->store, "t:addrsB"), 1);
    assert_int_equal(s_hlen(f->store, "t:macs"), 2);

    /* B is exhausted: refused naming it, nothing written on A nor anywhere. */
    r = s_claim_two(f->store, "v2", "", "02:00:00:00:0a:02,02:00:00:00:0b:02");
    assert_string_equal(r->element[0]->str, "EXHAUSTED");
    assert_string_equal(r->element[1]->str, "b");
    assert_string_equal(r->element[3]->str, "B");
    freeReplyObject(r);
    assert_int_equal(s_hlen(f->store, "t:addrsA"), 1);
    assert_int_equal(s_hlen(f->store, "t:macs"), 2);
    assert_int_equal(s_get(f->store, "t:host:h1", "used_vcpus"), 1);
    r = store_command(f->store, "EXISTS t:claim:{v2}");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);

    /* Undoing the build keeps both; the retry gets the same ones. */
    const char *rel[] = { "t:claim:{v1}",
                          "t:host:h1",
                          "t:events",
                          "t:res:h1",
                          "t:any",
                          "t:addrsA",
                          "t:addrsB",
                          "t:macs",
                          "t:reqhosts",
                          "h1",
                          "v1",
                          NOW,
                          "",
                          "A,B",
                          "1",
                          "2" };
    r = store_run(f->store, &lua_placement_release, 9, 16, rel);
    assert_string_equal(r->str, "RELEASED");
    freeReplyObject(r);
    assert_int_equal(s_hlen(f->store, "t:addrsB"), 1);
    r = s_claim_two(f->store, "v1", "h1", "02:00:00:00:0a:09,02:00:00:00:0b:09");
    assert_string_equal(r->element[0]->str, "OK");
    assert_string_equal(r->element[4]->str, "10.1.0.2,10.2.0.2");
    assert_string_equal(r->element[5]->str, "02:00:00:00:0a:01,02:00:00:00:0b:01");
    freeReplyObject(r);
    assert_int_equal(s_hlen(f->store, "t:macs"), 2);

    /* A full release gives both addresses and both MACs back. */
    rel[14] = "";
    r = store_run(f->store, &lua_placement_release, 9, 16, rel);
    assert_string_equal(r->str, "RELEASED");
    freeReplyObject(r);
    assert_int_equal(s_hlen(f->store, "t:addrsA"), 0);
    assert_int_equal(s_hlen(f->store, "t:addrsB"), 0);
    assert_int_equal(s_hlen(f->store, "t:macs"), 0);
    assert_int_equal(s_get(f->store, "t:host:h1", "used_vcpus"), 0);
    /* The same MAC twice is refused. */
    r = s_claim_two(f->store, "v2", "", "02:00:00:00:0a:02,02:00:00:00:0a:02");
    assert_string_equal(r->element[0]->str, "MAC");
    freeReplyObject(r);
    r = s_claim_two(f->store, "v2", "", "02:00:00:00:0a:02,02:00:00:00:0b:02");
    assert_string_equal(r->element[0]->str, "OK");
    assert_string_equal(r->element[4]->str, "10.1.0.2,10.2.0.2");
    freeReplyObject(r);
}

/* A /16 nearly full (every address held but one, somewhere in the middle, and the
   gateway's): the claim finds that one, then the pool is exhausted with its 65,533 held. */
static void test_network_large_pool(void **state)
{
    fixture_t *f = *state;
    s_host(f->store, "t:host:h1", "UP");
    redisReply *r = store_command(f->store, "HSET t:net id net-id name big cidr 10.8.0.0/16 "
                                            "gateway 10.8.0.1");
    freeReplyObject(r);
    r = store_command(f->store, "EVAL %s 1 t:addrs",
                      "for v = 2, 65534 do local t = string.format('10.8.%d.%d', "
                      "math.floor(v / 256), v % 256) if t ~= '10.8.128.7' then "
                      "redis.call('HSET', KEYS[1], t, 'x') end end return 1");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    freeReplyObject(r);
    r = s_claim_net(f->store, "v1", "h1", "", "02:00:00:00:01:01");
    assert_string_equal(r->element[0]->str, "OK");
    assert_string_equal(r->element[4]->str, "10.8.128.7");
    freeReplyObject(r);
    r = s_claim_net(f->store, "v2", "h1", "", "02:00:00:00:01:02");
    assert_string_equal(r->element[0]->str, "EXHAUSTED");
    assert_int_equal(r->element[2]->integer, 65533);
    freeReplyObject(r);
}

/* Claim vm's 1 vCPU / 1024 MB / 20 GB on host with a limit of max claims on it and a
   placement rule ("" none) of request (its hosts: t:peers:<request>). */
static redisReply *s_claim_rule(store_t *store, const char *vm, const char *host,
                                const char *now_on, const char *max, const char *rule,
                                const char *request)
{
    char claim[32], host_key[32], prev_key[32], res_key[32], prev_res_key[32], peers[32];
    snprintf(claim, sizeof claim, "t:claim:{%s}", vm);
    snprintf(host_key, sizeof host_key, "t:host:%s", host);
    snprintf(prev_key, sizeof prev_key, "t:host:%s", *now_on ? now_on : host);
    snprintf(res_key, sizeof res_key, "t:res:%s", host);
    snprintf(prev_res_key, sizeof prev_res_key, "t:res:%s", *now_on ? now_on : host);
    snprintf(peers, sizeof peers, "t:peers:%s", request);
    const char *argv[] = { claim,   host_key, prev_key,     "t:events", res_key, prev_res_key,
                           "t:any", peers,    host,         "1",        "1024",  "20",
                           NOW,     "3000",   "1",          "1",        "1",     now_on,
                           vm,      "ga",     PLATFORM_NOW, "",         "",      max,
                           rule,    request };
    int n_keys = *rule ? 8 : 7;
    const char **args = argv;
    const char *no_rule[25];
    if (!*rule) {
        memcpy(no_rule, argv, 7 * sizeof *argv);
        memcpy(no_rule + 7, argv + 8, 18 * sizeof *argv);
        args = no_rule;
    }
    redisReply *r = store_run(store, &lua_placement_claim, n_keys, n_keys + 18, args);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    return r;
}

/* A full release of vm's claim on host, passing the hosts of request. */
static redisReply *s_release_rule(store_t *store, const char *vm, const char *host,
                                  const char *request)
{
    char claim[32], host_key[32], res_key[32], peers[32];
    snprintf(claim, sizeof claim, "t:claim:{%s}", vm);
    snprintf(host_key, sizeof host_key, "t:host:%s", host);
    snprintf(res_key, sizeof res_key, "t:res:%s", host);
    snprintf(peers, sizeof peers, "t:peers:%s", request);
    const char *argv[] = { claim, host_key, "t:events", res_key, "t:any", "t:addrs", "t:macs",
                           peers, host,     vm,         NOW,     "",      "",        "" };
    redisReply *r = store_run(store, &lua_placement_release, 8, 14, argv);
    assert_non_null(r);
    return r;
}

/* max VMs per host: the host's claims count moves with the claims (taken, moved, released)
   and a claim past the limit is refused, writing nothing; a claim already on the host is
   counted there. Placement rules: anti-affinity refuses a host another VM of the request is
   on, affinity any other host; the claim records its host, the release forgets it. */
static void test_max_vms_and_placement_rules(void **state)
{
    fixture_t *f = *state;
    s_host(f->store, "t:host:h1", "UP");
    s_host(f->store, "t:host:h2", "UP");

    s_verdict(s_claim_rule(f->store, "v1", "h1", "", "2", "anti-affinity", "r1"), "OK", NULL);
    assert_int_equal(s_get(f->store, "t:host:h1", "claims"), 1);
    s_verdict(s_claim_rule(f->store, "v2", "h1", "", "2", "anti-affinity", "r1"), "AFFINITY",
              "anti_affinity");
    assert_int_equal(s_get(f->store, "t:host:h1", "claims"), 1);
    assert_int_equal(s_get(f->store, "t:claim:{v2}", "vcpus"), -1);
    s_verdict(s_claim_rule(f->store, "v2", "h2", "", "2", "anti-affinity", "r1"), "OK", NULL);
    redisReply *r = store_command(f->store, "HGET t:peers:r1 v2");
    assert_string_equal(r->str, "h2");
    freeReplyObject(r);
    r = store_command(f->store, "HGET t:claim:{v2} request");
    assert_string_equal(r->str, "r1");
    freeReplyObject(r);

    /* The limit: h1 holds one claim; a limit of 1 refuses a second, 2 takes it, then refuses
       a third. */
    s_verdict(s_claim_rule(f->store, "v3", "h1", "", "1", "", ""), "MAX_VMS", "1");
    s_verdict(s_claim_rule(f->store, "v3", "h1", "", "2", "", ""), "OK", NULL);
    assert_int_equal(s_get(f->store, "t:host:h1", "claims"), 2);
    s_verdict(s_claim_rule(f->store, "v4", "h1", "", "2", "", ""), "MAX_VMS", "2");
    assert_int_equal(s_get(f->store, "t:claim:{v4}", "vcpus"), -1);
    /* Placed again where it is, v3 is counted already; moved, it counts on the new host. */
    s_verdict(s_claim_rule(f->store, "v3", "h1", "h1", "2", "", ""), "OK", NULL);
    assert_int_equal(s_get(f->store, "t:host:h1", "claims"), 2);
    s_verdict(s_claim_rule(f->store, "v3", "h2", "h1", "2", "", ""), "OK", NULL);
    assert_int_equal(s_get(f->store, "t:host:h1", "claims"), 1);
    assert_int_equal(s_get(f->store, "t:host:h2", "claims"), 2);
    /* The usage event carries the count the scheduler's copy follows. */
    r = store_command(f->store, "XREVRANGE t:events + - COUNT 1");
    redisReply *ev = r->element[0]->element[1];
    int found = 0;
    for (size_t i = 0; i + 1 < ev->elements; i += 2)
        if (strcmp(ev->element[i]->str, "claims") == 0) {
            assert_string_equal(ev->element[i + 1]->str, "2");
            found = 1;
        }
    assert_true(found);
    freeReplyObject(r);

    /* Affinity: the first VM decides the host; another host is refused. */
    s_verdict(s_claim_rule(f->store, "a1", "h1", "", "0", "affinity", "r2"), "OK", NULL);
    s_verdict(s_claim_rule(f->store, "a2", "h2", "", "0", "affinity", "r2"), "AFFINITY",
              "affinity");
    s_verdict(s_claim_rule(f->store, "a2", "h1", "", "0", "affinity", "r2"), "OK", NULL);

    /* Releasing v1 forgets it in r1's hosts and takes h1's count down: h1 is free for r1. */
    assert_int_equal(s_get(f->store, "t:host:h1", "claims"), 3);
    s_verdict(s_release_rule(f->store, "v1", "h1", "r1"), "RELEASED", NULL);
    assert_int_equal(s_get(f->store, "t:host:h1", "claims"), 2);
    r = store_command(f->store, "HEXISTS t:peers:r1 v1");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
    s_verdict(s_claim_rule(f->store, "v5", "h1", "", "0", "anti-affinity", "r1"), "OK", NULL);
    s_verdict(s_release_rule(f->store, "v5", "h1", "r1"), "RELEASED", NULL);
    s_verdict(s_release_rule(f->store, "v2", "h2", "r1"), "RELEASED", NULL);
    r = store_command(f->store, "EXISTS t:peers:r1");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
}

/* Claim vm's 1 vCPU / 1024 MB / 20 GB on host for task t:task:<task> held under epoch, with
   (rule "") or without an anti-affinity rule of request r9. */
static redisReply *s_claim_fenced(store_t *store, const char *vm, const char *host,
                                  const char *rule, const char *task, const char *epoch)
{
    char claim[32], host_key[32], res_key[32], task_key[32];
    snprintf(claim, sizeof claim, "t:claim:{%s}", vm);
    snprintf(host_key, sizeof host_key, "t:host:%s", host);
    snprintf(res_key, sizeof res_key, "t:res:%s", host);
    snprintf(task_key, sizeof task_key, "t:task:%s", task);
    const char *keys[] = { claim, host_key, host_key, "t:events", res_key, res_key, "t:any" };
    const char *argv[32];
    int n = 0;
    for (int i = 0; i < 7; i++)
        argv[n++] = keys[i];
    if (*rule)
        argv[n++] = "t:peers:r9";
    argv[n++] = task_key;
    int n_keys = n;
    const char *tail[] = { host,         "1", "1024", "20", NOW,  "3000",
                           "1",          "1", "1",    "",   vm,   "ga",
                           PLATFORM_NOW, "",  "",     "0",  rule, *rule ? "r9" : "",
                           epoch };
    for (size_t i = 0; i < sizeof tail / sizeof *tail; i++)
        argv[n++] = tail[i];
    redisReply *r = store_run(store, &lua_placement_claim, n_keys, n, argv);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    return r;
}

/* Fencing: a claim made under an epoch the task no longer has (an abort or a take-over
   bumped it) is refused and writes nothing; under the task's epoch it is taken, with a
   placement rule's key before the task's too. */
static void test_stale_epoch_claims_nothing(void **state)
{
    fixture_t *f = *state;
    s_host(f->store, "t:host:h1", "UP");
    redisReply *r = store_command(f->store, "HSET t:task:k1 epoch 3");
    freeReplyObject(r);
    s_verdict(s_claim_fenced(f->store, "f1", "h1", "", "k1", "2"), "STALE", NULL);
    assert_int_equal(s_get(f->store, "t:claim:{f1}", "vcpus"), -1);
    s_assert_used(f->store, "t:host:h1", "0", "0");
    s_verdict(s_claim_fenced(f->store, "f1", "h1", "anti-affinity", "k1", "2"), "STALE", NULL);
    r = store_command(f->store, "EXISTS t:peers:r9");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
    s_verdict(s_claim_fenced(f->store, "f1", "h1", "", "gone", "1"), "STALE", NULL);
    s_verdict(s_claim_fenced(f->store, "f1", "h1", "anti-affinity", "k1", "3"), "OK", NULL);
    s_assert_used(f->store, "t:host:h1", "1", "1024");
    r = store_command(f->store, "HGET t:peers:r9 f1");
    assert_string_equal(r->str, "h1");
    freeReplyObject(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_claim_checks_then_takes, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_stale_epoch_claims_nothing, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_release_gives_back_exactly, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_release_keeping_the_disk, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_reservation_on_host, testenv_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_reservation_any_host, testenv_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_reservations_set, testenv_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_network_addresses, testenv_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_network_large_pool, testenv_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_two_networks, testenv_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_max_vms_and_placement_rules, testenv_setup,
                                        testenv_teardown),
    };
    return cmocka_run_group_tests(tests, testenv_group_setup, testenv_group_teardown);
}
