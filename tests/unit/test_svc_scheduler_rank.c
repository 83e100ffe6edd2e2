/*  test_svc_scheduler_rank: a decision walks the hosts in the weigher's order and stops once
    the candidates it may use are known; it must rank exactly as filtering every host does.
    Against a real redis-server: randomized host sets (capacity, usage, state, hypervisor,
    cached images, max_vms), reservations on hosts and on any host, placement rules, excluded
    and preferred hosts, spread and pack; the order is then kept through claims (the claim's
    answer), usage events (the stream the scheduler follows) and refused claims, and every
    ranking is compared with the full scan: the same hosts in the same order, and the same
    per-filter counts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "keys.h"
#include "placement.h"
#include "store.h"
#include "testenv.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_IDS 64

static const char *const s_digests[3] = {
    "1111111111111111111111111111111111111111111111111111111111111111",
    "2222222222222222222222222222222222222222222222222222222222222222",
    "3333333333333333333333333333333333333333333333333333333333333333",
};
static const char *const s_groups[3] = { "g-one", "g-two", "g-three" };

static testenv_redis_t *s_redis;

static int s_group_setup(void **state)
{
    (void)state;
    s_redis = testenv_redis_start(0);
    return s_redis ? 0 : -1;
}

static int s_group_teardown(void **state)
{
    (void)state;
    testenv_redis_destroy(&s_redis);
    return 0;
}

/* A Redis command that must succeed. */
#define s_cmd(store, ...)                                                                          \
    do {                                                                                           \
        redisReply *r_ = store_command(store, __VA_ARGS__);                                        \
        assert_non_null(r_);                                                                       \
        assert_int_not_equal(r_->type, REDIS_REPLY_ERROR);                                         \
        freeReplyObject(r_);                                                                       \
    } while (0)

static int s_pick(int n)
{
    return rand() % n;
}

/* n hosts with random capacity (few values, so many tie), usage, state, hypervisor, images
   and reservations. */
static void s_hosts(store_t *store, int n)
{
    static const int64_t caps[] = { 4096, 8192, 16384 };
    static const char *const states[] = { "UP", "UP", "UP", "UP", "DOWN", "DISABLED" };
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "host-%04d", i);
        int64_t cap = caps[s_pick(3)], used = 1024 * s_pick((int)(cap / 1024) + 1);
        char images[200] = "";
        for (int d = 0; d < 3; d++)
            if (s_pick(3) == 0)
                snprintf(images + strlen(images), sizeof images - strlen(images), "%s%s",
                         *images ? "," : "", s_digests[d]);
        s_cmd(store,
              "HSET berth:host:%s id %s state %s cap_vcpus 8 cap_ram_mb %lld cap_disk_gb 100 "
              "used_vcpus %d used_ram_mb %lld used_disk_gb %d claims %d hypervisor %s "
              "last_seen_ms %lld images %s",
              id, id, states[s_pick(6)], (long long)cap, s_pick(10), (long long)used, s_pick(50),
              s_pick(4), s_pick(4) ? "TEST" : "QEMU", (long long)util_now_ms(), images);
        s_cmd(store, "SADD berth:hosts %s", id);
        if (s_pick(8) == 0) { /* a group's reservation here, partly claimed */
            char key[KEYS_MAX];
            keys_build(key, KEYS_HOST_RESERVATIONS, id, NULL);
            const char *g = s_groups[s_pick(3)];
            s_cmd(store, "HSET %s %s:vcpus %d %s:ram_mb %d %s:disk_gb %d %s:used_ram_mb %d", key, g,
                  s_pick(4), g, 1024 * s_pick(4), g, s_pick(20), g, 1024 * s_pick(2));
            s_cmd(store, "SADD %s %s", KEYS_RESERVED_HOSTS, id);
        }
    }
    if (s_pick(3) == 0)
        s_cmd(store, "HSET %s %s:ram_mb %d", KEYS_RESERVATIONS_ANY, s_groups[s_pick(3)],
              1024 * (1 + s_pick(4)));
}

typedef struct {
    Berth__Resources flavor;
    Berth__SelectHost req;
    char ids[2][16][32];
    char *exclude[16], *prefer[16];
    char vm[64], request[64];
} s_request_t;

static void s_request(store_t *store, int n_hosts, int seq, s_request_t *r)
{
    memset(r, 0, sizeof *r);
    r->flavor = (Berth__Resources)BERTH__RESOURCES__INIT;
    r->flavor.vcpus = 1 + s_pick(2);
    r->flavor.ram_mb = 1024 * (1 + s_pick(s_pick(10) == 0 ? 20 : 3)); /* now and then none fit */
    r->flavor.disk_gb = 1 + s_pick(10);
    r->req = (Berth__SelectHost)BERTH__SELECT_HOST__INIT;
    snprintf(r->vm, sizeof r->vm, "00000000-0000-4000-8000-%012d", seq);
    r->req.vm = r->vm;
    r->req.flavor = &r->flavor;
    r->req.group = (char *)(s_pick(2) ? s_groups[s_pick(3)] : "");
    r->req.hypervisor = (char *)(s_pick(4) == 0 ? "qemu" : "");
    r->req.image_sha256 = (char *)(s_pick(3) ? s_digests[s_pick(3)] : "");
    size_t lists[2] = { (size_t)s_pick(3), (size_t)s_pick(4) };
    for (int l = 0; l < 2; l++)
        for (size_t i = 0; i < lists[l]; i++) {
            snprintf(r->ids[l][i], sizeof r->ids[l][i], "host-%04d", s_pick(n_hosts + 2));
            (l ? r->prefer : r->exclude)[i] = r->ids[l][i];
        }
    r->req.exclude = r->exclude;
    r->req.n_exclude = lists[0];
    r->req.prefer = r->prefer;
    r->req.n_prefer = lists[1];
    r->req.placement = "";
    if (s_pick(5) == 0) { /* a placement rule, with the request's other VMs somewhere */
        r->req.placement = (char *)(s_pick(2) ? "affinity" : "anti-affinity");
        snprintf(r->request, sizeof r->request, "req-%d", seq);
        r->req.request = r->request;
        char key[KEYS_MAX];
        keys_build(key, KEYS_REQUEST_HOSTS, r->request, NULL);
        for (int v = s_pick(3); v > 0; v--)
            s_cmd(store, "HSET %s vm-%d host-%04d", key, v, s_pick(n_hosts));
    }
}

/* Rank req both ways; they must agree. The number of hosts ranked. */
static int s_compare(placement_t *p, const Berth__SelectHost *req)
{
    char walk[MAX_IDS][PLACEMENT_ID_MAX], scan[MAX_IDS][PLACEMENT_ID_MAX];
    int walk_removed[PLACEMENT_FILTERS + 1], scan_removed[PLACEMENT_FILTERS + 1];
    int nw = placement_rank(p, req, 0, walk, MAX_IDS, walk_removed);
    int ns = placement_rank(p, req, 1, scan, MAX_IDS, scan_removed);
    assert_true(ns >= 0);
    assert_int_equal(nw, ns);
    for (int i = 0; i < ns; i++)
        if (strcmp(walk[i], scan[i]) != 0)
            fail_msg("vm %s: candidate %d is %s, the full scan's %s", req->vm, i, walk[i], scan[i]);
    for (int i = 0; i <= PLACEMENT_FILTERS; i++)
        if (walk_removed[i] != scan_removed[i])
            fail_msg("vm %s: count %d is %d, the full scan's %d", req->vm, i, walk_removed[i],
                     scan_removed[i]);
    return ns;
}

/* One host's RAM use changed behind the copy's back, told by a host.usage event. */
static void s_usage_event(store_t *store, int n_hosts)
{
    char id[32];
    snprintf(id, sizeof id, "host-%04d", s_pick(n_hosts));
    int used = 1024 * s_pick(17);
    s_cmd(store, "HSET berth:host:%s used_ram_mb %d", id, used);
    s_cmd(store, "XADD %s * type host.usage host %s used_ram_mb %d", STORE_EVENTS, id, used);
}

static void s_round(unsigned seed, int n_hosts, int pack, int attempts, int alternates)
{
    srand(seed);
    store_t *store = testenv_store(s_redis, 1);
    assert_non_null(store);
    s_hosts(store, n_hosts);
    placement_config_t c;
    placement_config_defaults(&c);
    c.down_grace_ms = 0; /* the store is fresh: judge hosts by their beats at once */
    c.refresh_ms = 3600 * 1000;
    c.host_timeout_ms = 3600 * 1000;
    c.pack = pack;
    c.max_attempts = attempts;
    c.max_alternates = alternates;
    c.max_vms_per_host = s_pick(2) ? 0 : 3;
    placement_t *p = placement_new(store, &c);
    assert_non_null(p);
    assert_int_equal(placement_refresh(p), 0);
    assert_int_equal(placement_follow(p), 0);
    for (int step = 0; step < 120; step++) {
        s_request_t r;
        s_request(store, n_hosts, (int)seed * 1000 + step, &r);
        int ranked = s_compare(p, &r.req);
        switch (s_pick(3)) {
        case 0: { /* claim: the claim's answer moves the host in the copy's order */
            placement_result_t res;
            berth_error_t error = { 0 };
            r.req.placement = "";
            int rc = placement_select(p, &r.req, &res, &error);
            assert_true(rc == 0 || (rc == PLACEMENT_NO_VALID_HOST && ranked == 0) ||
                        rc == PLACEMENT_CONFLICT);
            break;
        }
        case 1: /* usage from the event stream */
            for (int e = s_pick(4); e >= 0; e--)
                s_usage_event(store, n_hosts);
            assert_int_equal(placement_follow(p), 0);
            break;
        default:
            break;
        }
    }
    placement_destroy(&p);
    store_destroy(&store);
}

/* Few candidates wanted (early stops and ties with the last of them), spread. */
static void test_walk_agrees_spread(void **state)
{
    (void)state;
    for (unsigned seed = 1; seed <= 6; seed++)
        s_round(seed, 40 + (int)seed * 15, 0, 1 + (int)(seed % 3), (int)(seed % 2));
}

static void test_walk_agrees_pack(void **state)
{
    (void)state;
    for (unsigned seed = 11; seed <= 16; seed++)
        s_round(seed, 40 + (int)seed * 10, 1, 1 + (int)(seed % 3), (int)(seed % 2));
}

/* The defaults' 19 candidates out of a few hundred hosts. */
static void test_walk_agrees_defaults(void **state)
{
    (void)state;
    placement_config_t d;
    placement_config_defaults(&d);
    d.down_grace_ms = 0; /* the store is fresh: judge hosts by their beats at once */
    s_round(21, 300, 0, d.max_attempts, d.max_alternates);
    s_round(22, 300, 1, d.max_attempts, d.max_alternates);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_walk_agrees_spread),
        cmocka_unit_test(test_walk_agrees_pack),
        cmocka_unit_test(test_walk_agrees_defaults),
    };
    return cmocka_run_group_tests(tests, s_group_setup, s_group_teardown);
}
