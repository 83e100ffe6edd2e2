/*  test_lua_model_tx: lib/lua/model_tx.lua on a real Redis, called as lib/model.c calls it.
    Every check runs before any write (one failed check: nothing written, the error names
    the key and field), every operation writes the key named by its index into KEYS, events
    go to KEYS[1], a transition checks state and version then moves them with its event, and
    a malformed list is refused without writing; a size check holds a set below its limit;
    a charge stays within its limits or writes
    nothing, and a release gives back what a VM holds once, never below zero; a claim made in
   no group takes a group from its reservations by the claim script's rule, once, and its
   release gives that back. */
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

#define EVENTS "t:events"

static redisReply *s_tx(store_t *store, int nkeys, int argc, const char **argv)
{
    redisReply *r = store_run(store, &lua_model_tx, nkeys, argc, argv);
    assert_non_null(r);
    return r;
}

static long long s_int(store_t *store, const char *fmt, const char *key)
{
    redisReply *r = store_command(store, fmt, key);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

static void s_assert_hget(store_t *store, const char *key, const char *field, const char *want)
{
    redisReply *r = store_command(store, "HGET %s %s", key, field);
    assert_non_null(r);
    if (want)
        assert_string_equal(r->type == REDIS_REPLY_STRING ? r->str : "(nil)", want);
    else
        assert_int_equal(r->type, REDIS_REPLY_NIL);
    freeReplyObject(r);
}

static void test_every_operation_writes_its_key(void **state)
{
    fixture_t *f = *state;
    redisReply *r = store_command(f->store, "ZADD t:z 1 gone");
    freeReplyObject(r);
    r = store_command(f->store, "SET t:del x");
    freeReplyObject(r);
    r = store_command(f->store, "SADD t:s old");
    freeReplyObject(r);
    const char *argv[] = { EVENTS, "t:h", "t:z", "t:s", "t:del",
                           /* ops */
                           "C", "2", "state", "", "P", "2", "2", "state", "NEW", "version", "1",
                           "Z", "3", "5", "m", "R", "3", "gone", "S", "4", "member", "M", "4",
                           "old", "D", "5", "E", "2", "type", "x.created", "key", "t:h" };
    r = s_tx(f->store, 5, (int)(sizeof argv / sizeof *argv), argv);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    s_assert_hget(f->store, "t:h", "state", "NEW");
    s_assert_hget(f->store, "t:h", "version", "1");
    assert_int_equal(s_int(f->store, "ZCARD %s", "t:z"), 1);
    assert_int_equal(s_int(f->store, "SISMEMBER %s member", "t:s"), 1);
    assert_int_equal(s_int(f->store, "SISMEMBER %s old", "t:s"), 0);
    assert_int_equal(s_int(f->store, "EXISTS %s", "t:del"), 0);
    r = store_command(f->store, "XRANGE %s - +", EVENTS);
    assert_non_null(r);
    assert_int_equal(r->elements, 1);
    redisReply *fields = r->element[0]->element[1];
    assert_string_equal(fields->element[1]->str, "x.created");
    assert_string_equal(fields->element[3]->str, "t:h");
    freeReplyObject(r);
}

static void test_failed_check_writes_nothing(void **state)
{
    fixture_t *f = *state;
    redisReply *r = store_command(f->store, "HSET t:h state OLD version 3");
    freeReplyObject(r);
    /* The write comes first in the list, the failing check second: still nothing written. */
    const char *argv[] = {
        EVENTS,  "t:h", "t:other", "P", "3",       "1", "x", "1", "C",    "3",
        "state", "",    "C",       "2", "version", "2", "E", "1", "type", "never"
    };
    r = s_tx(f->store, 3, (int)(sizeof argv / sizeof *argv), argv);
    assert_int_equal(r->type, REDIS_REPLY_ERROR);
    assert_string_equal(r->str, "CONFLICT t:h version is 3");
    freeReplyObject(r);
    assert_int_equal(s_int(f->store, "EXISTS %s", "t:other"), 0);
    assert_int_equal(s_int(f->store, "EXISTS %s", EVENTS), 0);
}

/* N: a sorted set, a set or a hash below max passes (an absent key is empty); at max the
   whole transaction is refused, naming the key and its size. */
static void test_size_check_keeps_a_limit(void **state)
{
    fixture_t *f = *state;
    const char *add[] = { EVENTS, "t:idx", "N", "2", "2", "Z", "2", "1", "a" };
    redisReply *r = s_tx(f->store, 2, 9, add);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    freeReplyObject(r);
    const char *second[] = { EVENTS, "t:idx", "N", "2", "2", "Z", "2", "2", "b" };
    r = s_tx(f->store, 2, 9, second);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    freeReplyObject(r);
    const char *third[] = { EVENTS, "t:idx", "t:rec", "P", "3", "1", "x", "1",
                            "N",    "2",     "2",     "Z", "2", "3", "c" };
    r = s_tx(f->store, 3, 15, third);
    assert_int_equal(r->type, REDIS_REPLY_ERROR);
    assert_string_equal(r->str, "CONFLICT t:idx holds 2");
    freeReplyObject(r);
    assert_int_equal(s_int(f->store, "ZCARD %s", "t:idx"), 2);
    assert_int_equal(s_int(f->store, "EXISTS %s", "t:rec"), 0);
    /* A hash and a set count their entries too. */
    r = store_command(f->store, "HSET t:h a 1 b 2");
    freeReplyObject(r);
    r = store_command(f->store, "SADD t:s a");
    freeReplyObject(r);
    const char *sizes[] = { EVENTS, "t:h", "t:s", "N", "2", "3", "N", "3", "2" };
    r = s_tx(f->store, 3, 9, sizes);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    freeReplyObject(r);
    const char *full[] = { EVENTS, "t:h", "N", "2", "2" };
    r = s_tx(f->store, 2, 5, full);
    assert_int_equal(r->type, REDIS_REPLY_ERROR);
    assert_string_equal(r->str, "CONFLICT t:h holds 2");
    freeReplyObject(r);
}

static void test_transition_checks_then_moves(void **state)
{
    fixture_t *f = *state;
    redisReply *r = store_command(f->store, "HSET t:h state A version 4");
    freeReplyObject(r);
    const char *move[] = { EVENTS, "t:h", "T", "2", "state", "A",       "B",   "4",
                           "99",   "",    "",  "2", "type",  "x.state", "key", "t:h" };
    r = s_tx(f->store, 2, 16, move);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    freeReplyObject(r);
    s_assert_hget(f->store, "t:h", "state", "B");
    s_assert_hget(f->store, "t:h", "version", "5");
    s_assert_hget(f->store, "t:h", "updated_ms", "99");
    r = store_command(f->store, "XRANGE %s - +", EVENTS);
    assert_int_equal(r->elements, 1);
    redisReply *ev = r->element[0]->element[1];
    assert_int_equal(ev->elements, 8); /* type, key, from, version */
    assert_string_equal(ev->element[5]->str, "A");
    assert_string_equal(ev->element[7]->str, "5");
    freeReplyObject(r);
    /* The same move again: the version read is stale now. */
    r = s_tx(f->store, 2, 16, move);
    assert_int_equal(r->type, REDIS_REPLY_ERROR);
    assert_string_equal(r->str, "CONFLICT t:h state is B");
    freeReplyObject(r);
    /* An observed state equal to the current one changes nothing and writes no event. */
    const char *seen[] = { EVENTS, "t:h", "T", "2", "state", "*",    "B",
                           "*",    "100", "",  "",  "1",     "type", "x.seen" };
    r = s_tx(f->store, 2, 14, seen);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    freeReplyObject(r);
    s_assert_hget(f->store, "t:h", "version", "5");
    assert_int_equal(s_int(f->store, "XLEN %s", EVENTS), 1);
}

static void test_malformed_lists_are_refused(void **state)
{
    fixture_t *f = *state;
    /* An index past KEYS, and an unknown opcode: an error, nothing written. */
    const char *bad_key[] = { EVENTS, "t:h", "P", "2", "1", "a", "b", "D", "7" };
    redisReply *r = s_tx(f->store, 2, 9, bad_key);
    assert_int_equal(r->type, REDIS_REPLY_ERROR);
    assert_non_null(strstr(r->str, "BADKEY"));
    freeReplyObject(r);
    const char *bad_op[] = { EVENTS, "t:h", "P", "2", "1", "a", "b", "X", "2" };
    r = s_tx(f->store, 2, 9, bad_op);
    assert_int_equal(r->type, REDIS_REPLY_ERROR);
    assert_non_null(strstr(r->str, "BADOP"));
    freeReplyObject(r);
    assert_int_equal(s_int(f->store, "EXISTS %s", "t:h"), 0);
}

static void test_charge_within_limits_or_refused(void **state)
{
    fixture_t *f = *state;
    /* vms: limit 3; vcpus: limit 0 = none. */
    const char *charge[] = { EVENTS, "t:use", "Q", "2",     "group", "2",
                             "vms",  "3",     "2", "vcpus", "0",     "4" };
    redisReply *r = s_tx(f->store, 2, 12, charge);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    freeReplyObject(r);
    s_assert_hget(f->store, "t:use", "vms", "2");
    s_assert_hget(f->store, "t:use", "vcpus", "4");
    /* 2 + 2 > 3: refused with the limit, what is used and what was asked; the other write
       of the same transaction is not made. */
    const char *over[] = { EVENTS, "t:use", "t:h", "P",   "3", "1", "a",     "b", "Q",
                           "2",    "user",  "2",   "vms", "3", "2", "vcpus", "0", "4" };
    r = s_tx(f->store, 3, 18, over);
    assert_int_equal(r->type, REDIS_REPLY_ERROR);
    assert_string_equal(r->str, "QUOTA user vms 3 2 2");
    freeReplyObject(r);
    s_assert_hget(f->store, "t:use", "vms", "2");
    assert_int_equal(s_int(f->store, "EXISTS %s", "t:h"), 0);
    /* Up to the limit exactly is allowed. */
    const char *fits[] = { EVENTS, "t:use", "Q", "2", "group", "1", "vms", "3", "1" };
    r = s_tx(f->store, 2, 9, fits);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    freeReplyObject(r);
    s_assert_hget(f->store, "t:use", "vms", "3");
    /* A negative amount gives back (a shelved VM's vCPUs), never below 0, whatever the
       limit. */
    const char *give[] = { EVENTS, "t:use", "Q",  "2",     "group", "2",
                           "vms",  "3",     "-1", "vcpus", "2",     "-9" };
    r = s_tx(f->store, 2, 12, give);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    freeReplyObject(r);
    s_assert_hget(f->store, "t:use", "vms", "2");
    s_assert_hget(f->store, "t:use", "vcpus", "0");
}

static void test_release_once_never_below_zero(void **state)
{
    fixture_t *f = *state;
    redisReply *r = store_command(f->store, "HSET t:vm quota_held %s", "1 2 512 10");
    freeReplyObject(r);
    r = store_command(f->store, "HSET t:g vms 3 vcpus 6 ram_mb 100 disk_gb 30");
    freeReplyObject(r);
    const char *release[] = { EVENTS, "t:vm", "t:g", "t:u", "U", "2", "3", "4" };
    r = s_tx(f->store, 4, 8, release);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    freeReplyObject(r);
    s_assert_hget(f->store, "t:g", "vms", "2");
    s_assert_hget(f->store, "t:g", "vcpus", "4");
    s_assert_hget(f->store, "t:g", "ram_mb", "0"); /* held more than was counted: 0, not < 0 */
    s_assert_hget(f->store, "t:g", "disk_gb", "20");
    s_assert_hget(f->store, "t:u", "vms", "0"); /* nothing counted for the member: 0 */
    s_assert_hget(f->store, "t:vm", "quota_held", NULL);
    /* Again (a retried step, or a VM made before quotas): nothing more comes off. */
    r = s_tx(f->store, 4, 8, release);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    freeReplyObject(r);
    s_assert_hget(f->store, "t:g", "vms", "2");
    s_assert_hget(f->store, "t:g", "vcpus", "4");
}

static void test_claim_takes_group_from_its_reservations(void **state)
{
    fixture_t *f = *state;
    /* A pool VM's claim on h1 (no group), h1 in use by it only. The group reserves 512 MB
       and 2 vCPUs on h1 and 2048 MB on any host; another group 4096 MB on h1. */
    redisReply *r = store_command(f->store,
                                  "HSET t:claim host h1 vcpus 1 ram_mb 1024 disk_gb 5 "
                                  "group %s res_vcpus 0 res_ram_mb 0 res_disk_gb 0",
                                  "");
    freeReplyObject(r);
    r = store_command(f->store, "HSET t:host:h1 used_vcpus 1 used_ram_mb 1024 used_disk_gb 5");
    freeReplyObject(r);
    r = store_command(f->store, "HSET t:res g:ram_mb 512 g:vcpus 2 g:used_vcpus 0 other:ram_mb "
                                "4096");
    freeReplyObject(r);
    r = store_command(f->store, "HSET t:any g:ram_mb 2048");
    freeReplyObject(r);

    /* On another host than the caller read: nothing written. */
    const char *wrong[] = { EVENTS, "t:claim", "t:res", "t:any", "G", "2", "3", "4", "h2", "g" };
    r = s_tx(f->store, 4, 10, wrong);
    assert_int_equal(r->type, REDIS_REPLY_ERROR);
    assert_non_null(strstr(r->str, "CONFLICT t:claim host is h1"));
    freeReplyObject(r);
    s_assert_hget(f->store, "t:claim", "group", "");

    const char *take[] = { EVENTS, "t:claim", "t:res", "t:any", "G", "2", "3", "4", "h1", "g" };
    r = s_tx(f->store, 4, 10, take);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    freeReplyObject(r);
    /* RAM: 512 from the host reservation, the other 512 from the any-host one; vCPUs: 1 of
       the 2 reserved on h1; disk: nothing reserved, unreserved. */
    s_assert_hget(f->store, "t:claim", "group", "g");
    s_assert_hget(f->store, "t:claim", "res_ram_mb", "512");
    s_assert_hget(f->store, "t:claim", "any_ram_mb", "512");
    s_assert_hget(f->store, "t:claim", "res_vcpus", "1");
    s_assert_hget(f->store, "t:claim", "any_vcpus", "0");
    s_assert_hget(f->store, "t:claim", "res_disk_gb", "0");
    s_assert_hget(f->store, "t:res", "g:used_ram_mb", "512");
    s_assert_hget(f->store, "t:res", "g:used_vcpus", "1");
    s_assert_hget(f->store, "t:res", "g:used_disk_gb", NULL);
    s_assert_hget(f->store, "t:res", "other:used_ram_mb", NULL);
    s_assert_hget(f->store, "t:any", "g:used_ram_mb", "512");
    /* The host's usage is what it was: the VM used it already. */
    s_assert_hget(f->store, "t:host:h1", "used_ram_mb", "1024");

    /* Again (a retried hand-out): the claim is in a group now, nothing is counted twice. */
    r = s_tx(f->store, 4, 10, take);
    assert_int_equal(r->type, REDIS_REPLY_ERROR);
    assert_non_null(strstr(r->str, "CONFLICT t:claim group is g"));
    freeReplyObject(r);
    s_assert_hget(f->store, "t:res", "g:used_ram_mb", "512");

    /* Its release gives the group's reservations back what it took of them. */
    const char *release[] = { "t:claim", "t:host:h1", EVENTS, "t:res", "t:any",
                              "h1",      "vm",        "1",    "",      "" };
    r = store_run(f->store, &lua_placement_release, 5, 10, release);
    assert_non_null(r);
    assert_string_equal(r->str, "RELEASED");
    freeReplyObject(r);
    s_assert_hget(f->store, "t:res", "g:used_ram_mb", "0");
    s_assert_hget(f->store, "t:res", "g:used_vcpus", "0");
    s_assert_hget(f->store, "t:any", "g:used_ram_mb", "0");
    s_assert_hget(f->store, "t:host:h1", "used_ram_mb", "0");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_every_operation_writes_its_key, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_failed_check_writes_nothing, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_size_check_keeps_a_limit, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_transition_checks_then_moves, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_malformed_lists_are_refused, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_charge_within_limits_or_refused, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_release_once_never_below_zero, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_claim_takes_group_from_its_reservations, testenv_setup,
                                        testenv_teardown),
    };
    return cmocka_run_group_tests(tests, testenv_group_setup, testenv_group_teardown);
}
