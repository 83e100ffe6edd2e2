/*  test_svc_scheduler_follow: a scheduler's copy of the hosts kept current from the event
    stream (placement_follow), against a real redis-server: another scheduler's claim (its
    host.usage event) changes where the next VM goes, a host.state event takes a host out, a
    host whose beats ended (berth:hosts:seen) is not chosen, and a host the copy does not
    know or a gap in the stream loads the list whole. A copy that does not follow keeps
    deciding on what it loaded. And the weigher: spread (most RAM left first) or pack (least
    first, filling one host before the next); of hosts weighed equal, one caching the VM's base
    image first, as loaded and as a host.images event says. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "keys.h"
#include "placement.h"
#include "testenv.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    testenv_redis_t *redis;
    store_t *store;
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
    return f->store ? 0 : -1;
}

static int s_teardown(void **state)
{
    fixture_t *f = *state;
    store_destroy(&f->store);
    return 0;
}

static void s_cmd(store_t *store, const char *format, const char *a, const char *b)
{
    redisReply *r = store_command(store, format, a, b);
    assert_non_null(r);
    assert_int_not_equal(r->type, REDIS_REPLY_ERROR);
    freeReplyObject(r);
}

static void s_host(store_t *store, const char *id, const char *ram_mb)
{
    char now[32];
    snprintf(now, sizeof now, "%lld", (long long)util_now_ms());
    redisReply *r = store_command(store,
                                  "HSET berth:host:%s id %s state UP cap_vcpus 8 cap_ram_mb %s "
                                  "cap_disk_gb 100 last_seen_ms %s",
                                  id, id, ram_mb, now);
    assert_non_null(r);
    freeReplyObject(r);
    s_cmd(store, "SADD %s %s", KEYS_HOSTS, id);
}

/* A placement over store that reloads only when told to (the scheduler's default). */
static placement_t *s_placement_as(store_t *store, int pack)
{
    placement_config_t c;
    placement_config_defaults(&c);
    c.down_grace_ms = 0; /* the store is fresh: judge hosts by their beats at once */
    c.refresh_ms = 60000;
    c.pack = pack;
    placement_t *p = placement_new(store, &c);
    assert_non_null(p);
    assert_int_equal(placement_refresh(p), 0);
    return p;
}

static placement_t *s_placement(store_t *store)
{
    return s_placement_as(store, 0);
}

static void s_select_image(placement_t *p, int64_t ram, const char *image,
                           char host[PLACEMENT_ID_MAX])
{
    Berth__Resources flavor = BERTH__RESOURCES__INIT;
    flavor.vcpus = 1;
    flavor.ram_mb = ram;
    flavor.disk_gb = 1;
    Berth__SelectHost req = BERTH__SELECT_HOST__INIT;
    char vm[UTIL_ID_LEN];
    util_uuid(vm);
    req.vm = vm;
    req.flavor = &flavor;
    req.image_sha256 = (char *)image;
    placement_result_t res;
    berth_error_t error = { 0 };
    assert_int_equal(placement_select(p, &req, &res, &error), 0);
    util_strlcpy(host, res.host, PLACEMENT_ID_MAX);
}

static void s_select(placement_t *p, int64_t ram, char host[PLACEMENT_ID_MAX])
{
    Berth__Resources flavor = BERTH__RESOURCES__INIT;
    flavor.vcpus = 1;
    flavor.ram_mb = ram;
    flavor.disk_gb = 1;
    Berth__SelectHost req = BERTH__SELECT_HOST__INIT;
    char vm[UTIL_ID_LEN];
    util_uuid(vm);
    req.vm = vm;
    req.flavor = &flavor;
    placement_result_t res;
    berth_error_t error = { 0 };
    assert_int_equal(placement_select(p, &req, &res, &error), 0);
    util_strlcpy(host, res.host, PLACEMENT_ID_MAX);
}

static void test_another_schedulers_claim_moves_the_next_vm(void **state)
{
    fixture_t *f = *state;
    s_host(f->store, "a", "8192");
    s_host(f->store, "b", "6144");
    placement_t *follower = s_placement(f->store);
    placement_t *still = s_placement(f->store);
    assert_int_equal(placement_follow(follower), 0);
    placement_t *other = s_placement(f->store);
    char host[PLACEMENT_ID_MAX];
    s_select(other, 4096, host); /* a: most RAM free; 4096 left there, 6144 on b */
    assert_string_equal(host, "a");
    /* Spread: the follower saw the claim and goes to b; the copy that does not follow still
       thinks a is emptier (its claim fits: the script only refuses what does not). */
    assert_int_equal(placement_follow(follower), 0);
    s_select(follower, 1024, host);
    assert_string_equal(host, "b");
    s_select(still, 1024, host);
    assert_string_equal(host, "a");
    assert_int_equal(placement_loads(follower), 1); /* events applied, nothing reloaded */
    placement_destroy(&follower);
    placement_destroy(&still);
    placement_destroy(&other);
}

#define IMG_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define IMG_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define IMG_C "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"

static void test_cached_image_breaks_ties(void **state)
{
    fixture_t *f = *state;
    s_host(f->store, "a", "8192");
    s_host(f->store, "b", "8192");
    s_cmd(f->store, "HSET berth:host:b images %s", IMG_A "," IMG_B, "");
    placement_t *p = s_placement(f->store);
    assert_int_equal(placement_follow(p), 0);
    char host[PLACEMENT_ID_MAX];
    s_select_image(p, 1024, IMG_B, host); /* equal RAM: b caches it (a would win by id) */
    assert_string_equal(host, "b");
    s_select_image(p, 1024, IMG_B, host); /* a has more RAM free now: spread wins */
    assert_string_equal(host, "a");
    /* b fetched IMG_C and evicted the others (taskmgr records it and says so): followed
       without a reload. */
    s_cmd(f->store, "HSET berth:host:b images %s%s", IMG_C, "");
    s_cmd(f->store, "XADD berth:events * type host.images key berth:host:b host b images %s%s",
          IMG_C, "");
    assert_int_equal(placement_follow(p), 0);
    s_select_image(p, 1024, IMG_C, host);
    assert_string_equal(host, "b");
    s_select(p, 1024, host); /* a, with more RAM free */
    assert_string_equal(host, "a");
    s_select_image(p, 1024, IMG_B, host); /* equal again; nobody caches it now: by id */
    assert_string_equal(host, "a");
    assert_int_equal(placement_loads(p), 1);
    placement_destroy(&p);
}

static void test_state_events_and_ended_beats_take_hosts_out(void **state)
{
    fixture_t *f = *state;
    s_host(f->store, "a", "8192");
    s_host(f->store, "b", "4096");
    s_host(f->store, "c", "2048");
    placement_t *p = s_placement(f->store);
    assert_int_equal(placement_follow(p), 0);
    /* a goes DOWN (as taskmgr's transition writes it and tells it). */
    s_cmd(f->store, "HSET berth:host:a state %s%s", "DOWN", "");
    s_cmd(f->store, "XADD berth:events * type host.state key berth:host:a host a state %s%s",
          "DOWN", "");
    /* b's last beat's ttl ended a second ago. */
    char ended[32];
    snprintf(ended, sizeof ended, "%lld", (long long)util_now_ms() - 1000);
    s_cmd(f->store, "ZADD berth:hosts:seen %s %s", ended, "b");
    assert_int_equal(placement_follow(p), 0);
    assert_int_equal(placement_hosts_in(p, "DOWN"), 1);
    assert_int_equal(placement_hosts_in(p, "UP"), 2);
    char host[PLACEMENT_ID_MAX];
    s_select(p, 1024, host);
    assert_string_equal(host, "c");
    assert_int_equal(placement_loads(p), 1);
    placement_destroy(&p);
}

static void test_new_host_or_gap_loads_whole(void **state)
{
    fixture_t *f = *state;
    s_host(f->store, "a", "2048");
    placement_t *p = s_placement(f->store);
    assert_int_equal(placement_follow(p), 0);
    /* A host's first heartbeat: its hash, then its first transition's event. */
    s_host(f->store, "n", "65536");
    s_cmd(f->store, "XADD berth:events * type host.state key berth:host:n host n state %s%s", "UP",
          "");
    assert_int_equal(placement_follow(p), 0);
    assert_int_equal(placement_loads(p), 2);
    assert_int_equal(placement_hosts(p), 2);
    char host[PLACEMENT_ID_MAX];
    s_select(p, 1024, host);
    assert_string_equal(host, "n");
    /* Events the copy never read, trimmed away: a gap, so it loads again. */
    s_cmd(f->store, "XADD berth:events * type vm.state vm %s state %s", "x", "ACTIVE");
    s_cmd(f->store, "XADD berth:events * type vm.state vm %s state %s", "y", "ACTIVE");
    redisReply *r = store_command(f->store, "XTRIM berth:events MAXLEN 0");
    freeReplyObject(r);
    assert_int_equal(placement_follow(p), 0);
    assert_int_equal(placement_loads(p), 3);
    /* Nothing new since: nothing loaded. */
    assert_int_equal(placement_follow(p), 0);
    assert_int_equal(placement_loads(p), 3);
    placement_destroy(&p);
}

static void test_spread_and_pack(void **state)
{
    fixture_t *f = *state;
    s_host(f->store, "a", "8192");
    s_host(f->store, "b", "6144");
    s_host(f->store, "c", "4096");
    char host[PLACEMENT_ID_MAX];
    /* Pack: the least RAM left that fits, until it is full, then the next. */
    placement_t *pack = s_placement_as(f->store, 1);
    assert_int_equal(placement_follow(pack), 0);
    const char *packed[] = { "c", "c", "c", "c", "b" };
    for (size_t i = 0; i < sizeof packed / sizeof *packed; i++) {
        s_select(pack, 1024, host);
        assert_string_equal(host, packed[i]);
        assert_int_equal(placement_follow(pack), 0);
    }
    placement_destroy(&pack);
    /* Spread over what is left (a 8192, b 5120, c 0 free): the most RAM left each time. */
    placement_t *spread = s_placement(f->store);
    assert_int_equal(placement_follow(spread), 0);
    const char *spreaded[] = { "a", "a", "a", "a", "b" };
    for (size_t i = 0; i < sizeof spreaded / sizeof *spreaded; i++) {
        s_select(spread, 1024, host);
        assert_string_equal(host, spreaded[i]);
        assert_int_equal(placement_follow(spread), 0);
    }
    placement_destroy(&spread);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_another_schedulers_claim_moves_the_next_vm, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_state_events_and_ended_beats_take_hosts_out, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_new_host_or_gap_loads_whole, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_spread_and_pack, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_cached_image_breaks_ties, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, s_group_setup, s_group_teardown);
}
