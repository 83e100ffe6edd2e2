/*  seed_rate: how many cloud-init seeds a second the stager can build, in process with
    libisofs (what it does) against spawning genisoimage (what it did), side by side in one
    run on the same machine. Each way runs for a fixed number of seeds, five rounds taken in
    turn so background load hits both alike; the table gives the median rate, the CPU time per
    seed (the process and its children) and the ratio. Nothing is asserted: bench/ measures.

    Usage: berth-bench-seed [seeds-per-round]   (default 300) */
#include "files.h"
#include "seed.h"
#include "tool.h"

#include <errno.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 5

static const char *s_meta = "instance-id: 3f2b8c1e-6a4d-4f0e-9b7a-1c2d3e4f5a6b\n"
                            "local-hostname: web-1\n";
static const char *s_user = "#cloud-config\nhostname: web-1\n";

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU seconds used so far by this process (all threads) and its waited-for children. */
static double s_cpu(void)
{
    struct rusage self, kids;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &kids);
    double t = 0;
    const struct rusage *r[] = { &self, &kids };
    for (int i = 0; i < 2; i++)
        t += (double)r[i]->ru_utime.tv_sec + (double)r[i]->ru_utime.tv_usec / 1e6 +
             (double)r[i]->ru_stime.tv_sec + (double)r[i]->ru_stime.tv_usec / 1e6;
    return t;
}

/* The ISO in memory, read back like the stager reads it for its reply. */
static int s_in_process(const char *dir, int i)
{
    (void)dir;
    (void)i;
    uint8_t *iso = NULL;
    size_t size = 0;
    char error[256];
    if (seed_iso(s_meta, s_user, NULL, &iso, &size, error, sizeof error) != 0) {
        fprintf(stderr, "seed_iso: %s\n", error);
        return -1;
    }
    free(iso);
    return 0;
}

/* What the stager did before: write the two files, run genisoimage, read the ISO back. */
static int s_genisoimage(const char *dir, int i)
{
    char meta[PATH_MAX], user[PATH_MAX], out[PATH_MAX], log[PATH_MAX];
    snprintf(meta, sizeof meta, "%s/meta-data", dir);
    snprintf(user, sizeof user, "%s/user-data", dir);
    snprintf(out, sizeof out, "%s/seed-%d.iso", dir, i);
    snprintf(log, sizeof log, "%s/genisoimage.log", dir);
    if (files_replace(meta, s_meta, strlen(s_meta)) ||
        files_replace(user, s_user, strlen(s_user))) {
        fprintf(stderr, "cannot write in %s: %s\n", dir, strerror(errno));
        return -1;
    }
    const char *argv[] = { "genisoimage", "-output", out,  "-volid", "cidata",
                           "-joliet",     "-rock",   user, meta,     NULL };
    char error[512];
    if (tool_run(argv, log, 10000, error, sizeof error) != 0) {
        fprintf(stderr, "%s\n", error);
        return -1;
    }
    uint8_t *iso = NULL;
    size_t size = 0;
    if (files_read(out, 4 << 20, &iso, &size) != 0)
        return -1;
    free(iso);
    unlink(out);
    return 0;
}

/* The stager's whole path: validate, build, write ISO and sum, as StageImage does. */
static int s_stage(const char *dir, int i)
{
    (void)dir;
    static seed_t *seeds;
    static char seeds_dir[PATH_MAX];
    if (!seeds) {
        snprintf(seeds_dir, sizeof seeds_dir, "%s/seeds", dir);
        seed_config_t c = { .max_user_data = 65536 };
        seeds = seed_new(seeds_dir, &c);
        if (!seeds)
            return -1;
    }
    unsigned char r[16];
    randombytes_buf(r, sizeof r);
    char vm[37];
    snprintf(vm, sizeof vm, "%02x%02x%02x%02x-%02x%02x-4%x%02x-8%x%02x-%02x%02x%02x%02x%02x%02x",
             r[0], r[1], r[2], r[3], r[4], r[5], r[6] & 15, r[7], r[8] & 15, r[9], r[10], r[11],
             r[12], r[13], r[14], r[15]);
    char *path = NULL;
    berth_error_t error = { 0 };
    if (seed_stage(seeds, vm, "web-1", "", &path, &error) != 0) {
        fprintf(stderr, "seed_stage: %s\n", error.message);
        return -1;
    }
    free(path);
    (void)i;
    return 0;
}

typedef struct {
    const char *name;
    int (*fn)(const char *dir, int i);
    double rate[ROUNDS]; /* seeds per second */
    double cpu[ROUNDS];  /* CPU ms per seed */
} way_t;

static int s_by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double s_median(const double *v)
{
    double copy[ROUNDS];
    memcpy(copy, v, sizeof copy);
    qsort(copy, ROUNDS, sizeof copy[0], s_by_value);
    return copy[ROUNDS / 2];
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 300;
    if (n < 1 || sodium_init() < 0)
        return 2;
    char dir[] = "/tmp/berth-seed-rate-XXXXXX";
    if (!mkdtemp(dir))
        return 2;
    way_t ways[] = { { "genisoimage (spawned)", s_genisoimage, { 0 }, { 0 } },
                     { "libisofs, in memory", s_in_process, { 0 }, { 0 } },
                     { "libisofs + sum + ISO on disk", s_stage, { 0 }, { 0 } } };
    size_t nways = sizeof ways / sizeof ways[0];
    int rc = 0;
    for (int round = 0; round < ROUNDS && rc == 0; round++)
        for (size_t w = 0; w < nways && rc == 0; w++) {
            double t0 = s_now(), c0 = s_cpu();
            for (int i = 0; i < n && rc == 0; i++)
                rc = ways[w].fn(dir, i);
            double t = s_now() - t0, c = s_cpu() - c0;
            ways[w].rate[round] = n / t;
            ways[w].cpu[round] = c * 1000.0 / n;
        }
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    if (rc != 0)
        return 1;
    double base = s_median(ways[0].rate);
    printf("seed ISO builds, one thread, %d seeds x %d rounds (medians)\n\n", n, ROUNDS);
    printf("| %-30s | %10s | %12s | %8s |\n", "how", "seeds/s", "CPU ms/seed", "ratio");
    printf("|%s|%s|%s|%s|\n", "--------------------------------", "------------", "--------------",
           "----------");
    for (size_t w = 0; w < nways; w++)
        printf("| %-30s | %10.0f | %12.3f | %7.1fx |\n", ways[w].name, s_median(ways[w].rate),
               s_median(ways[w].cpu), s_median(ways[w].rate) / base);
    return 0;
}
