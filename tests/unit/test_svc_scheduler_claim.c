/*  test_svc_scheduler_claim: placement against a real redis-server. Filters remove the
    right hosts and the "no valid host" answer counts them per filter; the weigher spreads by
    free RAM; a claim is idempotent by VM and a release gives back exactly what was taken;
    two connections racing for one host never claim more than it holds; a stale host cache
    never causes a wrong "no"; a group's reservations (on a host, on any host) are used by it
    first and never by another group, whose "no" counts them; the hypervisor, max_vms and
    placement-rule filters remove what they should and are named in the "no". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "placement.h"
#include "testenv.h"
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    testenv_redis_t *redis;
    store_t *store;
    placement_t *placement;
} fixture_t;

static placement_config_t s_config(void)
{
    placement_config_t c;
    placement_config_defaults(&c);
    c.down_grace_ms = 0; /* the store is fresh: judge hosts by their beats at once */
    c.refresh_ms = 0;    /* every decision reloads: tests change hosts between calls */
    return c;
}

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
    placement_config_t c = s_config();
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

static void s_cmd(store_t *store, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char cmd[1024];
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    /* Arguments are plain tokens here, so splitting on spaces is exact. */
    const char *argv[32];
    int argc = 0;
    for (char *tok = strtok(cmd, " "); tok && argc < 32; tok = strtok(NULL, " "))
        argv[argc++] = tok;
    redisReply *r = store_commandv(store, argc, argv, NULL);
    assert_non_null(r);
    assert_int_not_equal(r->type, REDIS_REPLY_ERROR);
    freeReplyObject(r);
}

/* A host as taskmgr records it from heartbeats, seen age_ms ago. */
static void s_host(store_t *store, const char *id, const char *state, int64_t age_ms, int vcpus,
                   int64_t ram_mb, int64_t disk_gb)
{
    s_cmd(store,
          "HSET berth:host:%s id %s name %s state %s cap_vcpus %d cap_ram_mb %lld "
          "cap_disk_gb %lld last_seen_ms %lld",
          id, id, id, state, vcpus, (long long)ram_mb, (long long)disk_gb,
          (long long)(util_now_ms() - age_ms));
    s_cmd(store, "SADD berth:hosts %s", id);
}

static int64_t s_field(store_t *store, const char *key, const char *field)
{
    redisReply *r = store_command(store, "HGET %s %s", key, field);
    assert_non_null(r);
    int64_t v = r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : -1;
    freeReplyObject(r);
    return v;
}

static int64_t s_used(store_t *store, const char *host, const char *field)
{
    char key[256];
    snprintf(key, sizeof key, "berth:host:%s", host);
    return s_field(store, key, field);
}

static int64_t s_count_claims(store_t *store)
{
    redisReply *r = store_command(store, "KEYS berth:claim:*");
    assert_non_null(r);
    int64_t n = (int64_t)r->elements;
    freeReplyObject(r);
    return n;
}

static void s_vm(int i, char out[UTIL_ID_LEN])
{
    snprintf(out, UTIL_ID_LEN, "00000000-0000-4000-8000-%012d", i);
}

static int s_select(placement_t *p, const char *vm, int vcpus, int64_t ram, int64_t disk,
                    const char **exclude, size_t n_exclude, placement_result_t *result,
                    berth_error_t *error)
{
    Berth__Resources flavor = BERTH__RESOURCES__INIT;
    flavor.vcpus = vcpus;
    flavor.ram_mb = ram;
    flavor.disk_gb = disk;
    Berth__SelectHost req = BERTH__SELECT_HOST__INIT;
    req.vm = (char *)vm;
    req.flavor = &flavor;
    req.exclude = (char **)exclude;
    req.n_exclude = n_exclude;
    return placement_select(p, &req, result, error);
}

#define GROUP_A "aaaaaaaa-0000-4000-8000-000000000000"
#define GROUP_B "bbbbbbbb-0000-4000-8000-000000000000"

/* A VM of 1 vCPU, ram MB and 1 GB in group. */
static int s_select_in(placement_t *p, const char *group, int i, int64_t ram,
                       placement_result_t *result, berth_error_t *error)
{
    char vm[UTIL_ID_LEN];
    s_vm(i, vm);
    Berth__Resources flavor = BERTH__RESOURCES__INIT;
    flavor.vcpus = 1;
    flavor.ram_mb = ram;
    flavor.disk_gb = 1;
    Berth__SelectHost req = BERTH__SELECT_HOST__INIT;
    req.vm = vm;
    req.flavor = &flavor;
    req.group = (char *)group;
    return placement_select(p, &req, result, error);
}

/* Group A holds 3072 MB on host r: A's VMs go there first (though o has more RAM free),
   B never takes it and its "no" counts r under reserved; a release frees it for A again. */
static void test_reservation_on_host(void **state)
{
    fixture_t *f = *state;
    s_host(f->store, "o", "UP", 0, 8, 8192, 100);
    s_host(f->store, "r", "UP", 0, 8, 4096, 100);
    s_cmd(f->store, "HSET berth:host-reservations:r " GROUP_A ":ram_mb 3072 " GROUP_A ":vcpus 0");
    s_cmd(f->store, "SADD berth:reserved-hosts r");
    placement_result_t res;
    berth_error_t error = { 0 };
    assert_int_equal(s_select_in(f->placement, GROUP_A, 1, 1024, &res, &error), 0);
    assert_string_equal(res.host, "r");
    assert_int_equal(s_field(f->store, "berth:host-reservations:r", GROUP_A ":used_ram_mb"), 1024);
    /* B: 1024 MB unreserved on r, 8192 on o: 9 VMs of 1024 MB, then no. */
    for (int i = 0; i < 9; i++)
        assert_int_equal(s_select_in(f->placement, GROUP_B, 10 + i, 1024, &res, &error), 0);
    assert_int_equal(s_used(f->store, "r", "used_ram_mb"), 2048);
    assert_int_equal(s_select_in(f->placement, GROUP_B, 20, 1024, &res, &error),
                     PLACEMENT_NO_VALID_HOST);
    assert_string_equal(error.message,
                        "no valid host: 2 hosts; removed by state: 0, exclude: 0, ram: 1, "
                        "vcpus: 0, disk: 0, reserved: 1");
    assert_string_equal(error_detail_get(&error, "reserved"), "1");
    /* A's VMs still land on what is left of its reservation, and no further. */
    assert_int_equal(s_select_in(f->placement, GROUP_A, 2, 1024, &res, &error), 0);
    assert_int_equal(s_select_in(f->placement, GROUP_A, 3, 1024, &res, &error), 0);
    assert_string_equal(res.host, "r");
    assert_int_equal(s_used(f->store, "r", "used_ram_mb"), 4096);
    assert_int_equal(s_select_in(f->placement, GROUP_A, 4, 1024, &res, &error),
                     PLACEMENT_NO_VALID_HOST);
    /* A releases one: B still cannot have it, A can. */
    char vm[UTIL_ID_LEN];
    s_vm(2, vm);
    int released = 0;
    assert_int_equal(placement_release(f->placement, vm, &released, &error), 0);
    assert_int_equal(released, 1);
    assert_int_equal(s_field(f->store, "berth:host-reservations:r", GROUP_A ":used_ram_mb"), 2048);
    assert_int_equal(s_select_in(f->placement, GROUP_B, 20, 1024, &res, &error),
                     PLACEMENT_NO_VALID_HOST);
    assert_int_equal(s_select_in(f->placement, GROUP_A, 2, 1024, &res, &error), 0);
    assert_string_equal(res.host, "r");
    /* B's release on r gives nothing to A's reservation counters. */
    s_vm(10, vm);
    assert_int_equal(placement_release(f->placement, vm, &released, &error), 0);
    assert_int_equal(s_field(f->store, "berth:host-reservations:r", GROUP_A ":used_ram_mb"), 3072);
}

/* Group A holds 2048 MB on any host: B fills the rest of two hosts, never the last 2048 MB
   in all; A takes it wherever it is; released, it is A's again. */
static void test_reservation_any_host(void **state)
{
    fixture_t *f = *state;
    s_host(f->store, "h1", "UP", 0, 8, 4096, 100);
    s_host(f->store, "h2", "UP", 0, 8, 4096, 100);
    s_cmd(f->store, "HSET berth:reservations-any " GROUP_A ":ram_mb 2048");
    placement_result_t res;
    berth_error_t error = { 0 };
    for (int i = 0; i < 6; i++)
        assert_int_equal(s_select_in(f->placement, GROUP_B, 10 + i, 1024, &res, &error), 0);
    assert_int_equal(s_select_in(f->placement, GROUP_B, 20, 1024, &res, &error),
                     PLACEMENT_NO_VALID_HOST);
    assert_string_equal(error.message,
                        "no valid host: 2 hosts; removed by state: 0, exclude: 0, ram: 0, "
                        "vcpus: 0, disk: 0, reserved: 2");
    assert_int_equal(s_select_in(f->placement, GROUP_A, 1, 1024, &res, &error), 0);
    assert_int_equal(s_select_in(f->placement, GROUP_A, 2, 1024, &res, &error), 0);
    assert_int_equal(s_field(f->store, "berth:reservations-any", GROUP_A ":used_ram_mb"), 2048);
    assert_int_equal(s_select_in(f->placement, GROUP_A, 3, 1024, &res, &error),
                     PLACEMENT_NO_VALID_HOST);
    assert_string_equal(error.message,
                        "no valid host: 2 hosts; removed by state: 0, exclude: 0, ram: 2, "
                        "vcpus: 0, disk: 0, reserved: 0");
    char vm[UTIL_ID_LEN];
    s_vm(1, vm);
    int released = 0;
    assert_int_equal(placement_release(f->placement, vm, &released, &error), 0);
    assert_int_equal(s_field(f->store, "berth:reservations-any", GROUP_A ":used_ram_mb"), 1024);
    assert_int_equal(s_select_in(f->placement, GROUP_B, 20, 1024, &res, &error),
                     PLACEMENT_NO_VALID_HOST);
    assert_int_equal(s_select_in(f->placement, GROUP_A, 1, 1024, &res, &error), 0);
}

static void test_filters(void **state)
{
    fixture_t *f = *state;
    s_host(f->store, "down", "DOWN", 0, 64, 65536, 1000);
    s_host(f->store, "stale", "UP", 10000, 64, 65536, 1000); /* heartbeat 10 s old */
    s_host(f->store, "excluded", "UP", 0, 64, 65536, 1000);
    s_host(f->store, "small-ram", "UP", 0, 64, 1024, 1000);
    s_host(f->store, "small-cpu", "UP", 0, 1, 65536, 1000); /* 1 * 4.0 < 8 vCPUs */
    s_host(f->store, "small-disk", "UP", 0, 64, 65536, 5);
    const char *exclude[] = { "excluded" };
    placement_result_t res;
    berth_error_t error = { 0 };
    char vm[UTIL_ID_LEN];
    s_vm(1, vm);
    assert_int_equal(s_select(f->placement, vm, 8, 2048, 10, exclude, 1, &res, &error),
                     PLACEMENT_NO_VALID_HOST);
    assert_string_equal(error.message,
                        "no valid host: 6 hosts; removed by state: 2, exclude: 1, ram: 1, "
                        "vcpus: 1, disk: 1, reserved: 0");
    assert_int_equal(s_count_claims(f->store), 0);

    /* vCPU overcommit: 2 physical cores * 4.0 hold 8 vCPUs. */
    s_host(f->store, "ok", "UP", 0, 2, 4096, 20);
    assert_int_equal(s_select(f->placement, vm, 8, 2048, 10, exclude, 1, &res, &error), 0);
    assert_string_equal(res.host, "ok");
    assert_int_equal(res.n_alternates, 0);
    assert_int_equal(s_used(f->store, "ok", "used_vcpus"), 8);
    assert_int_equal(s_used(f->store, "ok", "used_ram_mb"), 2048);
    assert_int_equal(s_used(f->store, "ok", "used_disk_gb"), 10);
    char key[128];
    snprintf(key, sizeof key, "berth:claim:{%s}", vm);
    assert_int_equal(s_field(f->store, key, "ram_mb"), 2048);
    assert_int_equal(s_field(f->store, key, "vcpus"), 8);
    assert_int_equal(s_field(f->store, key, "disk_gb"), 10);

    /* "ok" still has RAM and disk but no vCPUs left: now two hosts fail the vcpus filter. */
    char vm2[UTIL_ID_LEN];
    s_vm(2, vm2);
    assert_int_equal(s_select(f->placement, vm2, 8, 2048, 10, exclude, 1, &res, &error),
                     PLACEMENT_NO_VALID_HOST);
    assert_string_equal(error.message,
                        "no valid host: 7 hosts; removed by state: 2, exclude: 1, ram: 1, "
                        "vcpus: 2, disk: 1, reserved: 0");
    /* The same counts as details of the bus error (NO_VALID_HOST's "details"). */
    berth_error_t fault = error;
    assert_string_equal(fault.code, "NO_VALID_HOST");
    assert_string_equal(error_detail_get(&fault, "state"), "2");
    assert_string_equal(error_detail_get(&fault, "exclude"), "1");
    assert_string_equal(error_detail_get(&fault, "ram"), "1");
    assert_string_equal(error_detail_get(&fault, "vcpus"), "2");
    assert_string_equal(error_detail_get(&fault, "disk"), "1");
    assert_string_equal(error_detail_get(&fault, "hosts"), "7");
    assert_null(error_detail_get(&fault, "busy"));
}

/* vm i of 1 vCPU / 1024 MB / 1 GB needing hypervisor, of request (placement rule or ""). */
static int s_select_rule(placement_t *p, int i, const char *hypervisor, const char *placement,
                         const char *request, placement_result_t *result, berth_error_t *error)
{
    char vm[UTIL_ID_LEN];
    s_vm(i, vm);
    Berth__Resources flavor = BERTH__RESOURCES__INIT;
    flavor.vcpus = 1;
    flavor.ram_mb = 1024;
    flavor.disk_gb = 1;
    Berth__SelectHost req = BERTH__SELECT_HOST__INIT;
    req.vm = vm;
    req.flavor = &flavor;
    req.hypervisor = (char *)hypervisor;
    req.placement = (char *)placement;
    req.request = (char *)request;
    return placement_select(p, &req, result, error);
}

#define REQUEST_R "cccccccc-0000-4000-8000-000000000000"

/* hypervisor, anti-affinity and max_vms (2 per host): each removes the hosts it should and
   the "no valid host" answer names them; a release makes room again under both rules. */
static void test_hypervisor_rules_max_vms(void **state)
{
    fixture_t *f = *state;
    placement_config_t c = s_config();
    c.max_vms_per_host = 2;
    placement_t *p = placement_new(f->store, &c);
    assert_non_null(p);
    s_host(f->store, "kvm", "UP", 0, 64, 65536, 1000);
    s_host(f->store, "sim1", "UP", 0, 64, 65536, 1000);
    s_host(f->store, "sim2", "UP", 0, 64, 65536, 1000);
    s_cmd(f->store, "HSET berth:host:kvm hypervisor QEMU");
    s_cmd(f->store, "HSET berth:host:sim1 hypervisor TEST");
    s_cmd(f->store, "HSET berth:host:sim2 hypervisor TEST");
    placement_result_t res;
    berth_error_t error = { 0 };

    assert_int_equal(s_select_rule(p, 1, "qemu", "", "", &res, &error), 0);
    assert_string_equal(res.host, "kvm");
    assert_int_equal(s_select_rule(p, 2, "xen", "", "", &res, &error), PLACEMENT_NO_VALID_HOST);
    assert_string_equal(error_detail_get(&error, "hypervisor"), "3");
    assert_non_null(strstr(error.message, ", hypervisor: 3"));

    /* Anti-affinity: two VMs of R on the two TEST hosts, a third has none left. */
    char first[PLACEMENT_ID_MAX];
    assert_int_equal(s_select_rule(p, 3, "test", "anti-affinity", REQUEST_R, &res, &error), 0);
    util_strlcpy(first, res.host, sizeof first);
    assert_int_equal(s_select_rule(p, 4, "test", "anti-affinity", REQUEST_R, &res, &error), 0);
    assert_string_not_equal(res.host, first);
    assert_int_equal(s_select_rule(p, 5, "test", "anti-affinity", REQUEST_R, &res, &error),
                     PLACEMENT_NO_VALID_HOST);
    assert_string_equal(error_detail_get(&error, "anti_affinity"), "2");
    assert_string_equal(error_detail_get(&error, "hypervisor"), "1");
    /* Asked again, the VM placed keeps its claim (its own host is no other VM's). */
    assert_int_equal(s_select_rule(p, 3, "test", "anti-affinity", REQUEST_R, &res, &error), 0);
    assert_string_equal(res.host, first);
    assert_int_equal(res.existing, 1);

    /* Releasing the first frees its host for the third. */
    char vm[UTIL_ID_LEN];
    int released = 0;
    s_vm(3, vm);
    assert_int_equal(placement_release(p, vm, &released, &error), 0);
    assert_int_equal(released, 1);
    assert_int_equal(s_select_rule(p, 5, "test", "anti-affinity", REQUEST_R, &res, &error), 0);
    assert_string_equal(res.host, first);

    /* max_vms: one claim on each TEST host; two more fill them, the next finds none. */
    assert_int_equal(s_used(f->store, "sim1", "claims"), 1);
    assert_int_equal(s_select_rule(p, 6, "test", "", "", &res, &error), 0);
    assert_int_equal(s_select_rule(p, 7, "test", "", "", &res, &error), 0);
    assert_int_equal(s_used(f->store, "sim1", "claims"), 2);
    assert_int_equal(s_used(f->store, "sim2", "claims"), 2);
    assert_int_equal(s_select_rule(p, 8, "test", "", "", &res, &error), PLACEMENT_NO_VALID_HOST);
    assert_string_equal(error_detail_get(&error, "max_vms"), "2");
    assert_non_null(strstr(error.message, ", max_vms: 2"));

    /* Rules are checked as input. */
    assert_int_equal(s_select_rule(p, 9, "", "near", REQUEST_R, &res, &error),
                     PLACEMENT_BAD_REQUEST);
    assert_string_equal(error_detail_get(&error, "field"), "placement");
    assert_int_equal(s_select_rule(p, 9, "", "affinity", "", &res, &error), PLACEMENT_BAD_REQUEST);
    assert_string_equal(error_detail_get(&error, "field"), "request");
    assert_int_equal(s_select_rule(p, 9, "much-too-long-a-name", "", "", &res, &error),
                     PLACEMENT_BAD_REQUEST);
    assert_string_equal(error_detail_get(&error, "field"), "hypervisor");
    placement_destroy(&p);

    /* A host's own limit (max_vms_hosts) over the platform's: sim1 may take 3, sim2 none
       but those it has (0 on kvm: no limit there). */
    assert_int_equal(placement_max_vms_hosts_valid("sim1=3,sim2=2,kvm=0"), 0);
    assert_int_equal(placement_max_vms_hosts_valid(""), 0);
    const char *bad[] = { "sim1", "sim1=", "=3", "sim1=-1", "sim1=x", "sim1=3,", "sim1=2000000" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(placement_max_vms_hosts_valid(bad[i]), -1);
    c.max_vms_hosts = "sim1=3";
    p = placement_new(f->store, &c);
    assert_non_null(p);
    assert_int_equal(s_select_rule(p, 8, "test", "", "", &res, &error), 0);
    assert_string_equal(res.host, "sim1");
    assert_int_equal(s_select_rule(p, 9, "test", "", "", &res, &error), PLACEMENT_NO_VALID_HOST);
    assert_string_equal(error_detail_get(&error, "max_vms"), "2");
    placement_destroy(&p);
}

static void test_ratios(void **state)
{
    fixture_t *f = *state;
    s_host(f->store, "h", "UP", 0, 4, 1000, 100);
    placement_config_t c = s_config();
    c.ram_ratio = 1.5;
    c.cpu_ratio = 1.0;
    placement_t *p = placement_new(f->store, &c);
    placement_result_t res;
    char vm[UTIL_ID_LEN];
    berth_error_t error = { 0 };
    s_vm(1, vm);
    assert_int_equal(s_select(p, vm, 4, 1500, 1, NULL, 0, &res, &error), 0);
    s_vm(2, vm);
    assert_int_equal(s_select(p, vm, 1, 1, 1, NULL, 0, &res, &error), PLACEMENT_NO_VALID_HOST);
    assert_non_null(strstr(error.message, "ram: 1"));
    placement_destroy(&p);
}

/* A retry names the first placement's alternates (prefer): the first of them that passes
   the filters is claimed, whatever the weigher would say; one that does not pass is skipped. */
static void test_prefer_alternates(void **state)
{
    fixture_t *f = *state;
    s_host(f->store, "small", "UP", 0, 64, 4096, 1000);
    s_host(f->store, "medium", "UP", 0, 64, 8192, 1000);
    s_host(f->store, "large", "UP", 0, 64, 16384, 1000);
    s_host(f->store, "gone", "DOWN", 0, 64, 65536, 1000);
    Berth__Resources flavor = BERTH__RESOURCES__INIT;
    flavor.vcpus = 1;
    flavor.ram_mb = 1024;
    flavor.disk_gb = 1;
    char *exclude[] = { "large" };
    char *prefer[] = { "gone", "small", "medium" };
    char vm[UTIL_ID_LEN];
    berth_error_t error = { 0 };
    s_vm(1, vm);
    Berth__SelectHost req = BERTH__SELECT_HOST__INIT;
    req.vm = vm;
    req.flavor = &flavor;
    req.exclude = exclude;
    req.n_exclude = 1;
    req.prefer = prefer;
    req.n_prefer = 3;
    placement_result_t res;
    assert_int_equal(placement_select(f->placement, &req, &res, &error), 0);
    assert_string_equal(res.host, "small");
    assert_int_equal(res.n_alternates, 1);
    assert_string_equal(res.alternates[0], "medium");
}

static void test_weigher_spreads(void **state)
{
    fixture_t *f = *state;
    s_host(f->store, "small", "UP", 0, 64, 4096, 1000);
    s_host(f->store, "medium", "UP", 0, 64, 8192, 1000);
    s_host(f->store, "large", "UP", 0, 64, 16384, 1000);
    placement_result_t res;
    char vm[UTIL_ID_LEN];
    berth_error_t error = { 0 };
    s_vm(1, vm);
    assert_int_equal(s_select(f->placement, vm, 1, 1024, 1, NULL, 0, &res, &error), 0);
    assert_string_equal(res.host, "large");
    assert_int_equal(res.n_alternates, 2);
    assert_string_equal(res.alternates[0], "medium");
    assert_string_equal(res.alternates[1], "small");

    /* Every next VM goes where the most RAM is free; 28 GB in all fit exactly. */
    const char *hosts[] = { "small", "medium", "large" };
    const int64_t caps[] = { 4096, 8192, 16384 };
    for (int i = 2; i <= 28; i++) {
        int64_t best = -1;
        for (int h = 0; h < 3; h++) {
            int64_t used = s_used(f->store, hosts[h], "used_ram_mb");
            int64_t free_ram = caps[h] - (used < 0 ? 0 : used); /* -1: nothing claimed yet */
            best = free_ram > best ? free_ram : best;
        }
        s_vm(i, vm);
        assert_int_equal(s_select(f->placement, vm, 1, 1024, 1, NULL, 0, &res, &error), 0);
        int chosen = strcmp(res.host, "small") == 0 ? 0 : strcmp(res.host, "medium") == 0 ? 1 : 2;
        assert_int_equal(caps[chosen] - (s_used(f->store, hosts[chosen], "used_ram_mb") - 1024),
                         best);
    }
    for (int h = 0; h < 3; h++)
        assert_int_equal(s_used(f->store, hosts[h], "used_ram_mb"), caps[h]);
    s_vm(29, vm);
    assert_int_equal(s_select(f->placement, vm, 1, 1024, 1, NULL, 0, &res, &error),
                     PLACEMENT_NO_VALID_HOST);
    assert_string_equal(error.message,
                        "no valid host: 3 hosts; removed by state: 0, exclude: 0, ram: 3, "
                        "vcpus: 0, disk: 0, reserved: 0");
}

static void test_idempotent_claim(void **state)
{
    fixture_t *f = *state;
    s_host(f->store, "a", "UP", 0, 8, 8192, 100);
    s_host(f->store, "b", "UP", 0, 8, 4096, 100);
    placement_result_t res;
    char vm[UTIL_ID_LEN];
    berth_error_t error = { 0 };
    s_vm(7, vm);
    assert_int_equal(s_select(f->placement, vm, 2, 2048, 10, NULL, 0, &res, &error), 0);
    assert_string_equal(res.host, "a");
    assert_false(res.existing);
    /* Asked again (a retry): the same host, nothing taken twice. */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(s_select(f->placement, vm, 2, 2048, 10, NULL, 0, &res, &error), 0);
        assert_string_equal(res.host, "a");
        assert_true(res.existing);
        assert_int_equal(res.n_alternates, 1);
        assert_string_equal(res.alternates[0], "b");
    }
    assert_int_equal(s_used(f->store, "a", "used_ram_mb"), 2048);
    assert_int_equal(s_used(f->store, "a", "used_vcpus"), 2);
    assert_int_equal(s_count_claims(f->store), 1);
    /* The same VM with another flavor is a conflict, not a second claim. */
    assert_int_equal(s_select(f->placement, vm, 4, 2048, 10, NULL, 0, &res, &error),
                     PLACEMENT_CONFLICT);
    assert_non_null(strstr(error.message, "different flavor"));
    assert_int_equal(s_used(f->store, "a", "used_vcpus"), 2);

    /* Excluding the host it holds (a build failed there) moves the claim in one step. */
    const char *exclude[] = { "a" };
    assert_int_equal(s_select(f->placement, vm, 2, 2048, 10, exclude, 1, &res, &error), 0);
    assert_string_equal(res.host, "b");
    assert_int_equal(s_used(f->store, "a", "used_ram_mb"), 0);
    assert_int_equal(s_used(f->store, "a", "used_vcpus"), 0);
    assert_int_equal(s_used(f->store, "a", "used_disk_gb"), 0);
    assert_int_equal(s_used(f->store, "b", "used_ram_mb"), 2048);
    assert_int_equal(s_count_claims(f->store), 1);
}

static void test_release_exact(void **state)
{
    fixture_t *f = *state;
    s_host(f->store, "a", "UP", 0, 16, 32768, 500);
    s_host(f->store, "b", "UP", 0, 16, 32768, 500);
    placement_result_t res;
    char vm[UTIL_ID_LEN];
    berth_error_t error = { 0 };
    const int vcpus[] = { 1, 2, 4, 3, 1, 2 };
    const int64_t ram[] = { 512, 2048, 4096, 3000, 777, 1024 };
    const int64_t disk[] = { 10, 20, 40, 13, 1, 7 };
    for (int i = 0; i < 6; i++) {
        s_vm(100 + i, vm);
        assert_int_equal(
            s_select(f->placement, vm, vcpus[i], ram[i], disk[i], NULL, 0, &res, &error), 0);
    }
    assert_int_equal(s_used(f->store, "a", "used_ram_mb") + s_used(f->store, "b", "used_ram_mb"),
                     512 + 2048 + 4096 + 3000 + 777 + 1024);
    int released = -1;
    for (int i = 0; i < 6; i++) {
        s_vm(100 + i, vm);
        assert_int_equal(placement_release(f->placement, vm, &released, &error), 0);
        assert_int_equal(released, 1);
        /* Releasing again is a no-op. */
        assert_int_equal(placement_release(f->placement, vm, &released, &error), 0);
        assert_int_equal(released, 0);
    }
    const char *fields[] = { "used_vcpus", "used_ram_mb", "used_disk_gb" };
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < 3; i++)
            assert_int_equal(s_used(f->store, h ? "b" : "a", fields[i]), 0);
    assert_int_equal(s_count_claims(f->store), 0);
    s_vm(999, vm);
    assert_int_equal(placement_release(f->placement, vm, &released, &error), 0);
    assert_int_equal(released, 0);
    assert_int_equal(placement_release(f->placement, "nope", &released, &error),
                     PLACEMENT_BAD_REQUEST);
}

static void test_bad_requests(void **state)
{
    fixture_t *f = *state;
    s_host(f->store, "a", "UP", 0, 16, 32768, 500);
    placement_result_t res;
    char vm[UTIL_ID_LEN];
    berth_error_t error = { 0 };
    s_vm(1, vm);
    assert_int_equal(s_select(f->placement, "not-a-uuid", 1, 1, 1, NULL, 0, &res, &error),
                     PLACEMENT_BAD_REQUEST);
    assert_string_equal(error_detail_get(&error, "field"), "vm");
    assert_int_equal(s_select(f->placement, "", 1, 1, 1, NULL, 0, &res, &error),
                     PLACEMENT_BAD_REQUEST);
    assert_string_equal(error_detail_get(&error, "field"), "vm");
    assert_int_equal(s_select(f->placement, vm, 0, 1024, 1, NULL, 0, &res, &error),
                     PLACEMENT_BAD_REQUEST);
    assert_string_equal(error_detail_get(&error, "field"), "flavor.vcpus");
    assert_non_null(strstr(error.message, "vcpus"));
    assert_int_equal(s_select(f->placement, vm, 1, -5, 1, NULL, 0, &res, &error),
                     PLACEMENT_BAD_REQUEST);
    assert_string_equal(error_detail_get(&error, "field"), "flavor.ram_mb");
    assert_int_equal(s_select(f->placement, vm, 1, 1024, 0, NULL, 0, &res, &error),
                     PLACEMENT_BAD_REQUEST);
    assert_string_equal(error_detail_get(&error, "field"), "flavor.disk_gb");
    assert_int_equal(s_select(f->placement, vm, 1, INT64_MAX, 1, NULL, 0, &res, &error),
                     PLACEMENT_BAD_REQUEST);
    assert_string_equal(error_detail_get(&error, "field"), "flavor.ram_mb");
    const char *empty[] = { "" };
    assert_int_equal(s_select(f->placement, vm, 1, 1, 1, empty, 1, &res, &error),
                     PLACEMENT_BAD_REQUEST);
    assert_string_equal(error_detail_get(&error, "field"), "exclude");
    const char *many[40];
    for (int i = 0; i < 40; i++)
        many[i] = "x";
    assert_int_equal(s_select(f->placement, vm, 1, 1, 1, many, 40, &res, &error),
                     PLACEMENT_BAD_REQUEST);
    assert_string_equal(error_detail_get(&error, "field"), "exclude");
    assert_non_null(strstr(error.message, "exclude"));
    Berth__SelectHost req = BERTH__SELECT_HOST__INIT;
    req.vm = vm;
    assert_int_equal(placement_select(f->placement, &req, &res, &error), PLACEMENT_BAD_REQUEST);
    assert_string_equal(error_detail_get(&error, "field"), "flavor");
    assert_string_equal(error.message, "flavor is required");
    assert_string_equal(error.code, "BAD_REQUEST");
    int released = -1;
    assert_int_equal(placement_release(f->placement, "../x", &released, &error),
                     PLACEMENT_BAD_REQUEST);
    assert_string_equal(error_detail_get(&error, "field"), "vm");
    assert_int_equal(s_count_claims(f->store), 0);
    assert_int_equal(s_used(f->store, "a", "used_ram_mb"), -1); /* never written */
}

/* ---- concurrency ---- */

typedef struct {
    int port;
    int first, count; /* VM numbers this thread asks for */
    int claimed;
    int refused;
    int failed;
} s_racer_t;

static void *s_race(void *arg)
{
    s_racer_t *r = arg;
    store_t *store = store_new("127.0.0.1", r->port, 2000, 2000);
    placement_config_t c = s_config();
    c.refresh_ms = 60000; /* a stale cache on purpose: only the claim script can decide */
    placement_t *p = placement_new(store, &c);
    for (int i = 0; i < r->count; i++) {
        char vm[UTIL_ID_LEN];
        berth_error_t error = { 0 };
        placement_result_t res;
        s_vm(r->first + i, vm);
        int rc = s_select(p, vm, 1, 1024, 1, NULL, 0, &res, &error);
        if (rc == 0 && !res.existing)
            r->claimed++;
        else if (rc == PLACEMENT_NO_VALID_HOST)
            r->refused++;
        else if (rc != 0)
            r->failed++;
    }
    placement_destroy(&p);
    store_destroy(&store);
    return NULL;
}

static void s_run_race(fixture_t *f, s_racer_t racers[2])
{
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        racers[i].port = testenv_redis_port(f->redis);
        assert_int_equal(pthread_create(&t[i], NULL, s_race, &racers[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
}

static void test_race_never_overcommits(void **state)
{
    fixture_t *f = *state;
    const int fits = 25, per = 40; /* each thread asks 40 times for a host that holds 25 */
    s_host(f->store, "only", "UP", 0, 64, 1024 * fits, 1000);
    /* Distinct VMs: 80 asks for 25 places. */
    s_racer_t racers[2] = { { .first = 1, .count = per }, { .first = 1001, .count = per } };
    s_run_race(f, racers);
    assert_int_equal(racers[0].failed + racers[1].failed, 0);
    assert_int_equal(racers[0].claimed + racers[1].claimed, fits);
    assert_int_equal(racers[0].refused + racers[1].refused, 2 * per - fits);
    assert_int_equal(s_used(f->store, "only", "used_ram_mb"), 1024 * fits);
    assert_int_equal(s_used(f->store, "only", "used_vcpus"), fits);
    assert_int_equal(s_count_claims(f->store), fits);

    /* Release everything, then both race for the same VMs: each is claimed once. */
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < per; j++) {
            char vm[UTIL_ID_LEN];
            berth_error_t error = { 0 };
            int released;
            s_vm(racers[i].first + j, vm);
            assert_int_equal(placement_release(f->placement, vm, &released, &error), 0);
        }
    assert_int_equal(s_used(f->store, "only", "used_ram_mb"), 0);
    s_racer_t same[2] = { { .first = 1, .count = per }, { .first = 1, .count = per } };
    s_run_race(f, same);
    assert_int_equal(same[0].failed + same[1].failed, 0);
    assert_int_equal(same[0].claimed + same[1].claimed, fits);
    assert_int_equal(s_count_claims(f->store), fits);
    assert_int_equal(s_used(f->store, "only", "used_ram_mb"), 1024 * fits);
}

/* Right after Redis came back (an outage, a failover) no heartbeat could have been recorded:
   a host whose last beat is old is still placed on by its state, claim included, until the
   store has answered for down_grace_ms; a DOWN host never is. */
static void test_silent_hosts_wait_for_the_grace(void **state)
{
    fixture_t *f = *state;
    placement_config_t c = s_config();
    c.down_grace_ms = 600000; /* this store has not answered that long */
    placement_t *p = placement_new(f->store, &c);
    assert_non_null(p);
    s_host(f->store, "down", "DOWN", 0, 64, 65536, 1000);
    s_host(f->store, "silent", "UP", 10000, 64, 65536, 1000); /* heartbeat 10 s old */
    placement_result_t res;
    berth_error_t error = { 0 };
    char vm[UTIL_ID_LEN];
    s_vm(1, vm);
    assert_int_equal(s_select(p, vm, 2, 2048, 10, NULL, 0, &res, &error), 0);
    assert_string_equal(res.host, "silent");
    assert_int_equal(s_count_claims(f->store), 1);
    placement_destroy(&p);

    /* Judged by its beats (the store has answered long enough): not placed on. */
    s_vm(2, vm);
    assert_int_equal(s_select(f->placement, vm, 2, 2048, 10, NULL, 0, &res, &error),
                     PLACEMENT_NO_VALID_HOST);
    assert_int_equal(s_count_claims(f->store), 1);
}

static void test_stale_cache_never_says_no(void **state)
{
    fixture_t *f = *state;
    s_host(f->store, "h", "UP", 0, 8, 2048, 100);
    placement_config_t c = s_config();
    c.refresh_ms = 600000;
    placement_t *p = placement_new(f->store, &c);
    placement_result_t res;
    char vm[UTIL_ID_LEN], other[UTIL_ID_LEN];
    berth_error_t error = { 0 };
    s_vm(1, vm);
    s_vm(2, other);
    assert_int_equal(s_select(p, vm, 1, 2048, 1, NULL, 0, &res, &error), 0);
    assert_int_equal(s_select(p, other, 1, 2048, 1, NULL, 0, &res, &error),
                     PLACEMENT_NO_VALID_HOST);
    /* Released through another connection: p's cached copy still says full. */
    int released;
    assert_int_equal(placement_release(f->placement, vm, &released, &error), 0);
    assert_int_equal(s_select(p, other, 1, 2048, 1, NULL, 0, &res, &error), 0);
    assert_string_equal(res.host, "h");

    /* The host goes down behind the cache's back: the claim script refuses it and the
       answer counts it under state. */
    s_host(f->store, "h2", "UP", 0, 8, 65536, 100);
    assert_int_equal(placement_refresh(p), 0);
    s_cmd(f->store, "HSET berth:host:h2 state DOWN");
    assert_int_equal(s_select(p, vm, 1, 1024, 1, NULL, 0, &res, &error), PLACEMENT_NO_VALID_HOST);
    assert_string_equal(error.message,
                        "no valid host: 2 hosts; removed by state: 1, exclude: 0, ram: 1, "
                        "vcpus: 0, disk: 0, reserved: 0");
    placement_destroy(&p);
}

static void test_store_down(void **state)
{
    fixture_t *f = *state;
    placement_result_t res;
    char vm[UTIL_ID_LEN];
    berth_error_t error = { 0 };
    s_vm(1, vm);
    assert_int_equal(testenv_redis_stop(f->redis), 0);
    assert_int_equal(s_select(f->placement, vm, 1, 1, 1, NULL, 0, &res, &error), -1);
    int released;
    assert_int_equal(placement_release(f->placement, vm, &released, &error), -1);
    assert_int_equal(testenv_redis_restart(f->redis), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_filters, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_hypervisor_rules_max_vms, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_ratios, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_weigher_spreads, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_prefer_alternates, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_idempotent_claim, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_release_exact, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_bad_requests, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_race_never_overcommits, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_silent_hosts_wait_for_the_grace, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_stale_cache_never_says_no, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_store_down, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_reservation_on_host, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_reservation_any_host, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, s_group_setup, s_group_teardown);
}
