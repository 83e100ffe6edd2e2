/*  test_keys: the key schema. Every kind builds "berth:<name>:..." with the aggregate's hash
    tag where it has one (a VM's keys share one tag), docs/state.md lists every key, no Lua
    script builds a key of its own (keys arrive in KEYS), and each embedded script's SHA is
    the one Redis computes for it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "keys.h"
#include "lua_scripts.h"
#include "model.h"
#include "testenv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef testenv_fixture_t fixture_t;

/* The hash tag of key (what Redis Cluster hashes), into tag. */
static void s_tag(const char *key, char *tag, size_t size)
{
    const char *open = strchr(key, '{');
    const char *close = open ? strchr(open, '}') : NULL;
    if (!open || !close || close == open + 1)
        snprintf(tag, size, "%s", key);
    else
        snprintf(tag, size, "%.*s", (int)(close - open - 1), open + 1);
}

static void test_keys_have_their_shape(void **state)
{
    (void)state;
    char buf[KEYS_MAX], want[KEYS_MAX];
    assert_string_equal(keys_vm(buf, "v1"), "berth:vm:{v1}");
    assert_string_equal(keys_task(buf, "t1"), "berth:task:{t1}");
    assert_string_equal(keys_host(buf, "h1"), "berth:host:h1");
    assert_string_equal(keys_build(buf, KEYS_TEMPLATE_NAME, "small", NULL),
                        "berth:template-name:small");
    assert_string_equal(keys_build(buf, KEYS_INSTANCE, "gateway", "gw-1"),
                        "berth:instance:gateway:gw-1");
    assert_string_equal(keys_build(buf, KEYS_IDEM, "ann", "k"), "berth:idem:ann:k");
    for (int k = 0; k < KEYS_KIND_COUNT; k++) {
        const char *name = keys_kind_name((keys_kind_t)k);
        assert_int_equal(keys_kind(name), k);
        int two =
            k == KEYS_INSTANCE || k == KEYS_IDEM || k == KEYS_GROUP_USER_USAGE || k == KEYS_SSH_KEY;
        keys_build(buf, (keys_kind_t)k, "x", two ? "y" : NULL);
        snprintf(want, sizeof want, "berth:%s:", name);
        assert_memory_equal(buf, want, strlen(want));
    }
    assert_int_equal(keys_kind("nosuch"), -1);
    /* A too long id is cut, never written past the buffer. */
    char id[2 * KEYS_MAX];
    memset(id, 'a', sizeof id - 1);
    id[sizeof id - 1] = '\0';
    assert_int_equal(strlen(keys_vm(buf, id)), KEYS_MAX - 1);
}

static void test_aggregate_shares_a_tag(void **state)
{
    (void)state;
    char a[KEYS_MAX], b[KEYS_MAX], tag_a[KEYS_MAX], tag_b[KEYS_MAX];
    const keys_kind_t vm_keys[] = { KEYS_CLAIM, KEYS_USAGE };
    s_tag(keys_vm(a, "0f0e"), tag_a, sizeof tag_a);
    assert_string_equal(tag_a, "0f0e");
    for (size_t i = 0; i < sizeof vm_keys / sizeof *vm_keys; i++) {
        s_tag(keys_build(b, vm_keys[i], "0f0e", NULL), tag_b, sizeof tag_b);
        assert_string_equal(tag_a, tag_b);
    }
}

/* docs/state.md, found from this file's path (tests/unit/ -> docs/). */
static char *s_state_md(void)
{
    char path[1024];
    snprintf(path, sizeof path, "%s", __FILE__);
    char *cut = strstr(path, "tests/unit/");
    assert_non_null(cut);
    strcpy(cut, "docs/state.md");
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    static char text[200000];
    size_t n = fread(text, 1, sizeof text - 1, fp);
    fclose(fp);
    text[n] = '\0';
    return text;
}

static void test_docs_list_every_key(void **state)
{
    (void)state;
    const char *doc = s_state_md();
    const char *singles[] = { KEYS_EVENTS,           KEYS_SCHEMA,        KEYS_SCHEMA_LOCK,
                              KEYS_SERVICES,         KEYS_HOSTS,         KEYS_IMAGES,
                              KEYS_TEMPLATES,        KEYS_REQUESTS,      KEYS_VMS,
                              KEYS_TASKS_DUE,        KEYS_TASKS_WAKE,    KEYS_USAGE_INDEX,
                              KEYS_RESERVATIONS_ANY, KEYS_RESERVED_HOSTS,
                              KEYS_TIMERS,           KEYS_TIMERS_CLAIMED,
                              KEYS_THROTTLE_RUNNING, KEYS_THROTTLE_QUEUE, KEYS_THROTTLE_WAITING,
                              KEYS_WEBHOOK_DELIVERIES, KEYS_WEBHOOK_DUE };
    char want[KEYS_MAX + 4];
    for (size_t i = 0; i < sizeof singles / sizeof *singles; i++) {
        snprintf(want, sizeof want, "`%s`", singles[i]);
        if (!strstr(doc, want))
            fail_msg("docs/state.md does not list %s", singles[i]);
    }
    for (int k = 0; k < KEYS_KIND_COUNT; k++) {
        snprintf(want, sizeof want, "`berth:%s:", keys_kind_name((keys_kind_t)k));
        if (!strstr(doc, want))
            fail_msg("docs/state.md does not list the %s keys", keys_kind_name((keys_kind_t)k));
    }
    for (int i = 0; i < LUA_COUNT; i++) {
        snprintf(want, sizeof want, "%s.lua", lua_all[i]->name);
        if (!strstr(doc, want))
            fail_msg("docs/state.md does not name the script %s", want);
    }
}

static void test_scripts_take_keys_from_keys(void **state)
{
    fixture_t *f = *state;
    for (int i = 0; i < LUA_COUNT; i++) {
        const store_lua_t *s = lua_all[i];
        if (strstr(s->source, "berth:"))
            fail_msg("%s.lua builds a key itself: keys must come in KEYS", s->name);
        redisReply *r = store_command(f->store, "SCRIPT LOAD %s", s->source);
        assert_non_null(r);
        if (r->type != REDIS_REPLY_STRING)
            fail_msg("%s.lua does not load: %s", s->name, r->str);
        assert_string_equal(r->str, s->sha);
        freeReplyObject(r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys_have_their_shape),
        cmocka_unit_test(test_aggregate_shares_a_tag),
        cmocka_unit_test(test_docs_list_every_key),
        cmocka_unit_test_setup_teardown(test_scripts_take_keys_from_keys, testenv_setup,
                                        testenv_teardown),
    };
    return cmocka_run_group_tests(tests, testenv_group_setup, testenv_group_teardown);
}
