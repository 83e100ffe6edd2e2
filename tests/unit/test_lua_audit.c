/*  test_lua_audit: the audit trail's scripts on a real Redis. audit_append.lua appends a
    batch with every field and holds the stream to its cap and age; model_tx.lua's A op makes
    each applied transition an audit record in the same step (actor, action from the
    transition, target from the key, group from the event), and none for a transition not
    applied; events_trim.lua trims the event stream only below every consumer group's
    acknowledged position. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "audit.h"
#include "lua_scripts.h"
#include "testenv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef testenv_fixture_t fixture_t;

static long long s_int(store_t *store, const char *cmd)
{
    redisReply *r = store_command(store, cmd);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

/* The value of field in the stream entry e ([id, [f, v, ...]]); NULL when absent. */
static const char *s_field(const redisReply *e, const char *field)
{
    const redisReply *kv = e->element[1];
    for (size_t i = 0; i + 1 < kv->elements; i += 2)
        if (strcmp(kv->element[i]->str, field) == 0)
            return kv->element[i + 1]->str;
    return NULL;
}

static void s_cmd_ok(store_t *store, const char *cmd)
{
    redisReply *r = store_command(store, cmd);
    assert_non_null(r);
    assert_int_not_equal(r->type, REDIS_REPLY_ERROR);
    freeReplyObject(r);
}

static void test_append_writes_records_and_caps(void **state)
{
    fixture_t *f = *state;
    audit_record_t recs[5];
    memset(recs, 0, sizeof recs);
    for (int i = 0; i < 5; i++) {
        recs[i].at_ms = 1000 + i;
        snprintf(recs[i].actor, sizeof recs[i].actor, "alice");
        snprintf(recs[i].action, sizeof recs[i].action, "vm.dispose");
        snprintf(recs[i].target, sizeof recs[i].target, "vm:%d", i);
        snprintf(recs[i].group, sizeof recs[i].group, "g1");
        snprintf(recs[i].source, sizeof recs[i].source, "127.0.0.1");
        snprintf(recs[i].request_id, sizeof recs[i].request_id, "rid-%d", i);
        snprintf(recs[i].result, sizeof recs[i].result, "202");
    }
    assert_int_equal(audit_append(f->store, recs, 5, 0, 0), 0);
    assert_int_equal(s_int(f->store, "XLEN " KEYS_AUDIT), 5);
    redisReply *r = store_command(f->store, "XRANGE " KEYS_AUDIT " - +");
    assert_int_equal(r->elements, 5);
    const redisReply *e = r->element[4];
    assert_string_equal(s_field(e, "at_ms"), "1004");
    assert_string_equal(s_field(e, "actor"), "alice");
    assert_string_equal(s_field(e, "action"), "vm.dispose");
    assert_string_equal(s_field(e, "target"), "vm:4");
    assert_string_equal(s_field(e, "group"), "g1");
    assert_string_equal(s_field(e, "source"), "127.0.0.1");
    assert_string_equal(s_field(e, "request_id"), "rid-4");
    assert_string_equal(s_field(e, "result"), "202");
    freeReplyObject(r);
    /* A cap of 3: the two oldest go, exactly; an empty batch trims too. */
    assert_int_equal(audit_append(f->store, recs, 1, 3, 0), 0);
    assert_int_equal(s_int(f->store, "XLEN " KEYS_AUDIT), 3);
    assert_int_equal(audit_append(f->store, NULL, 0, 2, 0), 0);
    assert_int_equal(s_int(f->store, "XLEN " KEYS_AUDIT), 2);
    /* An age limit of an hour: an entry from 1970 goes, the one just appended stays. */
    s_cmd_ok(f->store, "DEL " KEYS_AUDIT);
    s_cmd_ok(f->store, "XADD " KEYS_AUDIT " 1000-0 at_ms 1000");
    assert_int_equal(audit_append(f->store, recs, 1, 0, 3600000), 0);
    assert_int_equal(s_int(f->store, "XLEN " KEYS_AUDIT), 1);
    redisReply *top = store_command(f->store, "XRANGE " KEYS_AUDIT " - +");
    assert_string_equal(s_field(top->element[0], "request_id"), "rid-0");
    freeReplyObject(top);
}

static void test_transition_is_audited_in_its_step(void **state)
{
    fixture_t *f = *state;
    redisReply *r = store_command(f->store, "HSET t:vm:{v1} state A version 1");
    freeReplyObject(r);
    /* A k actor rid; then T: a move A -> B with event pairs type, transition, group. */
    const char *move[] = { "t:events", "t:vm:{v1}",  "t:audit", "A",     "3", "alice",
                           "rid-9",    "T",          "2",       "state", "A", "B",
                           "1",        "77",         "",        "",      "3", "type",
                           "vm.state", "transition", "start",   "group", "g1" };
    r = store_run(f->store, &lua_model_tx, 3, 23, move);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    freeReplyObject(r);
    r = store_command(f->store, "XRANGE t:audit - +");
    assert_int_equal(r->elements, 1);
    const redisReply *e = r->element[0];
    assert_string_equal(s_field(e, "actor"), "alice");
    assert_string_equal(s_field(e, "action"), "vm.start");
    assert_string_equal(s_field(e, "target"), "vm:v1");
    assert_string_equal(s_field(e, "group"), "g1");
    assert_string_equal(s_field(e, "request_id"), "rid-9");
    assert_string_equal(s_field(e, "result"), "ok");
    assert_string_equal(s_field(e, "at_ms"), "77");
    freeReplyObject(r);
    /* The same move again conflicts: no audit record, no event. */
    r = store_run(f->store, &lua_model_tx, 3, 23, move);
    assert_int_equal(r->type, REDIS_REPLY_ERROR);
    freeReplyObject(r);
    assert_int_equal(s_int(f->store, "XLEN t:audit"), 1);
    /* An observed state (no transition name) is named by the state it reached. */
    const char *seen[] = { "t:events", "t:vm:{v1}", "t:audit", "A",     "3", "service:taskmgr",
                           "",         "T",         "2",       "state", "*", "C",
                           "*",        "78",        "",        "",      "1", "type",
                           "vm.state" };
    r = store_run(f->store, &lua_model_tx, 3, 19, seen);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    freeReplyObject(r);
    r = store_command(f->store, "XREVRANGE t:audit + - COUNT 1");
    assert_string_equal(s_field(r->element[0], "action"), "vm.c");
    assert_string_equal(s_field(r->element[0], "actor"), "service:taskmgr");
    freeReplyObject(r);
    /* A power state: its kind keeps the type's name. */
    const char *power[] = { "t:events", "t:vm:{v1}",
                            "t:audit",  "A",
                            "3",        "service:taskmgr",
                            "",         "T",
                            "2",        "power_state",
                            "*",        "RUNNING",
                            "*",        "79",
                            "",         "",
                            "1",        "type",
                            "vm.power" };
    r = store_run(f->store, &lua_model_tx, 3, 19, power);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    freeReplyObject(r);
    r = store_command(f->store, "XREVRANGE t:audit + - COUNT 1");
    assert_string_equal(s_field(r->element[0], "action"), "vm.power.running");
    freeReplyObject(r);
}

static void s_cmd(store_t *store, const char *cmd)
{
    redisReply *r = store_command(store, cmd);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("%s: %s", cmd, r->str);
    freeReplyObject(r);
}

static long long s_trim_floor(store_t *store, const char *floor)
{
    const char *argv[] = { "t:events", floor };
    redisReply *r = store_run(store, &lua_events_trim, 1, 2, argv);
    assert_non_null(r);
    if (r->type != REDIS_REPLY_INTEGER)
        fail_msg("events_trim: %s", r->str ? r->str : "?");
    long long n = r->integer;
    freeReplyObject(r);
    return n;
}

static long long s_trim(store_t *store)
{
    return s_trim_floor(store, "");
}

static void test_events_trimmed_only_below_every_group(void **state)
{
    fixture_t *f = *state;
    char cmd[96];
    assert_int_equal(s_trim(f->store), 0); /* no stream */
    for (int i = 1; i <= 10; i++) {
        snprintf(cmd, sizeof cmd, "XADD t:events %d-0 n %d", i, i);
        s_cmd(f->store, cmd);
    }
    assert_int_equal(s_trim(f->store), 0); /* no consumer group: everything is kept */
    /* g1 read six, acknowledged three (4..6 pending); g2 read and acknowledged eight. */
    s_cmd(f->store, "XGROUP CREATE t:events g1 0");
    s_cmd(f->store, "XGROUP CREATE t:events g2 0");
    s_cmd(f->store, "XREADGROUP GROUP g1 c COUNT 6 STREAMS t:events >");
    s_cmd(f->store, "XACK t:events g1 1-0 2-0 3-0");
    s_cmd(f->store, "XREADGROUP GROUP g2 c COUNT 8 STREAMS t:events >");
    s_cmd(f->store, "XACK t:events g2 1-0 2-0 3-0 4-0 5-0 6-0 7-0 8-0");
    /* A floor below the groups' positions keeps what is newer than it: 2-0 and on. */
    assert_int_equal(s_trim_floor(f->store, "2-0"), 1);
    assert_int_equal(s_int(f->store, "XLEN t:events"), 9);
    assert_int_equal(s_trim(f->store), 2); /* g1's oldest pending (4-0) and on are kept */
    redisReply *r = store_command(f->store, "XRANGE t:events - + COUNT 1");
    assert_string_equal(r->element[0]->element[0]->str, "4-0");
    freeReplyObject(r);
    /* g1 acknowledges everything it read and reads no more: its position is 6-0. */
    s_cmd(f->store, "XACK t:events g1 4-0 5-0 6-0");
    assert_int_equal(s_trim(f->store), 2);
    assert_int_equal(s_int(f->store, "XLEN t:events"), 5); /* 6..10: 6 was delivered last */
    /* A group that has read nothing holds everything. */
    s_cmd(f->store, "XGROUP CREATE t:events g3 0");
    assert_int_equal(s_trim(f->store), 0);
    assert_int_equal(s_int(f->store, "XLEN t:events"), 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_append_writes_records_and_caps, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_transition_is_audited_in_its_step, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_events_trimmed_only_below_every_group, testenv_setup,
                                        testenv_teardown),
    };
    return cmocka_run_group_tests(tests, testenv_group_setup, testenv_group_teardown);
}
