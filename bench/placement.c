/*  bench-placement: the scheduler's decisions (services/scheduler/placement.c: filters,
    weigher and the claim script, as SelectHost runs them) at a number of hosts, beside the
    same Redis's SET rate on one connection without pipelining, measured in the same run.

    It writes `hosts` UP hosts to the Redis at host:port (berth:hosts and each host's hash, as
    agents' heartbeats leave them; no agents run), loads them as the scheduler does at start,
    then times `decisions` placements of a 1 vCPU / 1 GB / 10 GB VM one after another, the
    copy of the hosts kept current from the event stream every 100 ms as the scheduler's
    host_follow_ms timer does (its time counted in the rate, not in a decision's time), and
    `decisions` SETs. Placements and SETs alternate in ten slices, each rate summed over its
    own slices, so that both sides meet the same moments of a machine whose load changes
    (measured one after the other, a burst of other work on a shared machine fell on one
    side only: the same build's ratio ranged over 2x between runs). The VMs' ids are made
    before the clock starts (a request reaches the scheduler with its VM's id: making a
    random UUID is no part of placing it). It prints one JSON line: hosts, placements_per_s,
    p50_ms, p99_ms, set_per_s, reloads (host loads during the decisions).

    bench-placement host port hosts decisions */
#include "clock.h"
#include "keys.h"
#include "log.h"
#include "placement.h"
#include "store.h"
#include "util.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SLICES 10 /* placement and SET slices, alternating */

static double s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int s_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* n hosts, pipelined (their writing is not what is measured). */
static int s_write_hosts(redisContext *c, int n)
{
    long long now = (long long)util_now_ms();
    char id[64], key[KEYS_MAX];
    for (int i = 0; i < n; i++) {
        snprintf(id, sizeof id, "bench-host-%05d", i);
        keys_host(key, id);
        redisAppendCommand(c,
                           "HSET %s state UP last_seen_ms %lld cap_vcpus 64 cap_ram_mb 262144 "
                           "cap_disk_gb 4000 used_vcpus 0 used_ram_mb 0 used_disk_gb 0 version 1",
                           key, now);
        redisAppendCommand(c, "SADD %s %s", KEYS_HOSTS, id);
    }
    for (int i = 0; i < 2 * n; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK || !r || r->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "writing hosts failed\n");
            return -1;
        }
        freeReplyObject(r);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: bench-placement host port hosts decisions\n");
        return 2;
    }
    log_init("bench-placement", NULL);
    log_set_level("warn");
    const char *host = argv[1];
    int port = atoi(argv[2]), hosts = atoi(argv[3]), decisions = atoi(argv[4]);
    if (port < 1 || hosts < 1 || decisions < 1)
        return 2;
    redisContext *c = redisConnect(host, port);
    if (!c || c->err) {
        fprintf(stderr, "cannot connect to redis\n");
        return 1;
    }
    redisReply *r = redisCommand(c, "FLUSHALL");
    freeReplyObject(r);
    if (s_write_hosts(c, hosts) != 0)
        return 1;

    store_t *store = store_new(host, port, 1000, 5000);
    placement_config_t config;
    placement_config_defaults(&config);
    config.host_timeout_ms = 24 * 3600 * 1000; /* no agents beat here: the hosts stay UP */
    config.refresh_ms = 60000;                 /* the scheduler's default host_refresh_ms */
    placement_t *p = store ? placement_new(store, &config) : NULL;
    if (!p || placement_refresh(p) != 0 || placement_follow(p) != 0) {
        fprintf(stderr, "cannot load the hosts\n");
        return 1;
    }

    Berth__Resources flavor = BERTH__RESOURCES__INIT;
    flavor.vcpus = 1;
    flavor.ram_mb = 1024;
    flavor.disk_gb = 10;
    double *lat = calloc((size_t)decisions, sizeof *lat);
    char(*vms)[UTIL_ID_LEN] = calloc((size_t)decisions, sizeof *vms);
    if (!lat || !vms) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    for (int i = 0; i < decisions; i++)
        util_uuid(vms[i]);
    int64_t loads_before = placement_loads(p);
    double placed_ms = 0, set_ms = 0, followed = s_now_ms();
    for (int slice = 0; slice < SLICES; slice++) {
        int from = (int)((long long)decisions * slice / SLICES);
        int to = (int)((long long)decisions * (slice + 1) / SLICES);
        double t0 = s_now_ms();
        for (int i = from; i < to; i++) {
            /* As the scheduler's timer does every host_follow_ms (100): the claims' host.usage
               events onto the copy, and the hosts whose beats ended. */
            if (s_now_ms() - followed >= 100) {
                if (placement_follow(p) != 0) {
                    fprintf(stderr, "following the event stream failed\n");
                    return 1;
                }
                followed = s_now_ms();
            }
            Berth__SelectHost req = BERTH__SELECT_HOST__INIT;
            req.vm = vms[i];
            req.flavor = &flavor;
            placement_result_t result;
            berth_error_t error = { 0 };
            double start = s_now_ms();
            if (placement_select(p, &req, &result, &error) != 0) {
                fprintf(stderr, "placement %d failed: %s\n", i, error.message);
                return 1;
            }
            lat[i] = s_now_ms() - start;
        }
        placed_ms += s_now_ms() - t0;

        /* The baseline: the same Redis, one connection, one SET at a time. */
        t0 = s_now_ms();
        for (int i = from; i < to; i++) {
            r = redisCommand(c, "SET bench:set:%d %d", i, i);
            if (!r || r->type == REDIS_REPLY_ERROR) {
                fprintf(stderr, "SET failed\n");
                return 1;
            }
            freeReplyObject(r);
        }
        set_ms += s_now_ms() - t0;
    }
    int64_t loads = placement_loads(p) - loads_before;
    qsort(lat, (size_t)decisions, sizeof *lat, s_cmp);

    printf("{\"hosts\": %d, \"placements_per_s\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, "
           "\"set_per_s\": %.1f, \"reloads\": %lld}\n",
           hosts, decisions / (placed_ms / 1000.0), lat[decisions / 2],
           lat[(int)(decisions * 0.99)], decisions / (set_ms / 1000.0), (long long)loads);
    free(lat);
    free(vms);
    placement_destroy(&p);
    store_destroy(&store);
    redisFree(c);
    return 0;
}
