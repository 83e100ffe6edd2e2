/*  test_svc_agent_worker: the agent's commands run on worker threads against a real libvirt
    (test:///default), the way the agent's loop drives them: submit, wait for the worker's
    socket to become readable, worker_recv. Checks what taskmgr relies on: a VM's commands
    keep their order, other VMs' commands are not held up behind a slow one, a full queue
    refuses at once, a redelivered command id is never run twice, the caller never waits
    for libvirt, and the inventory snapshot follows the host without a libvirt call. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "testenv.h"
#include "util.h"
#include "worker.h"

#include <libvirt/libvirt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define HOST       "host-w"
#define POOL       "berth-unit-worker"
#define SEED_BYTES (40 * 1024)
#define MAX_DONE   64
#define WAIT_MS    20000 /* deadline for anything to arrive: far above what it takes */

typedef struct {
    char command[160];
    int ok;
    char error[512];
    char power_state[32];
} done_t;

typedef struct {
    char *dir;
    char *image;
    worker_t *worker;
    virConnectPtr conn; /* the test's own view of test:///default */
    uint8_t seed[SEED_BYTES];
    int serial;
    done_t done[MAX_DONE]; /* results in the order the done callback saw them */
    size_t n_done;
    size_t n_inventories; /* inventory callbacks seen */
} fixture_t;

static void s_on_done(const Berth__AgentResult *r, void *arg)
{
    fixture_t *f = arg;
    assert_true(f->n_done < MAX_DONE);
    done_t *d = &f->done[f->n_done++];
    util_strlcpy(d->command, r->command, sizeof d->command);
    d->ok = r->ok;
    util_strlcpy(d->error, r->error, sizeof d->error);
    util_strlcpy(d->power_state, r->power_state, sizeof d->power_state);
}

static void s_on_inventory(const Berth__Host *host, void *arg)
{
    (void)host;
    fixture_t *f = arg;
    f->n_inventories++;
}

static int s_setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->dir = testenv_tmpdir();
    assert_non_null(f->dir);
    assert_true(asprintf(&f->image, "%s/base.raw", f->dir) > 0);
    FILE *img = fopen(f->image, "wb");
    assert_non_null(img);
    assert_int_equal(ftruncate(fileno(img), 1 << 20), 0);
    fclose(img);
    f->conn = virConnectOpen("test:///default");
    assert_non_null(f->conn);
    for (size_t i = 0; i < sizeof f->seed; i++)
        f->seed[i] = (uint8_t)(rand() & 0xff);
    memcpy(f->seed + 32769, "CD001", 5);
    *state = f;
    return 0;
}

static int s_teardown(void **state)
{
    fixture_t *f = *state;
    worker_destroy(&f->worker);
    virStoragePoolPtr pool = virStoragePoolLookupByName(f->conn, POOL);
    if (pool) {
        virStoragePoolDestroy(pool);
        virStoragePoolUndefine(pool);
        virStoragePoolFree(pool);
    }
    virConnectClose(f->conn);
    testenv_rmtree(f->dir);
    free(f->dir);
    free(f->image);
    free(f);
    return 0;
}

/* The fixture's worker: threads, queue bound, and a simulated libvirt delay. */
static worker_t *s_worker(fixture_t *f, size_t threads, size_t queue, int64_t delay_ms)
{
    vmops_config_t vc = { .uri = "test:///default",
                          .host = HOST,
                          .data_dir = f->dir,
                          .pool = POOL,
                          .max_vcpus = 64,
                          .max_ram_mb = 262144,
                          .max_disk_gb = 2048,
                          .max_seed_bytes = 1 << 20,
                          .max_name_len = 64,
                          .delay_ms = delay_ms };
    f->worker = worker_new(&vc, threads, queue, 1024, s_on_done, f);
    assert_non_null(f->worker);
    return f->worker;
}

static Berth__AgentCommand s_command(fixture_t *f, const char *op, const char *vm, char *id,
                                     Berth__Resources *flavor)
{
    snprintf(id, UTIL_ID_LEN + 16, "cmd-%d", ++f->serial);
    berth__resources__init(flavor);
    flavor->vcpus = 1;
    flavor->ram_mb = 512;
    flavor->disk_gb = 5;
    Berth__AgentCommand cmd = BERTH__AGENT_COMMAND__INIT;
    cmd.id = id;
    cmd.op = (char *)op;
    cmd.vm = (char *)vm;
    cmd.name = "w";
    cmd.flavor = flavor;
    cmd.image = "debian-12";
    cmd.image_path = f->image;
    cmd.image_format = "raw";
    cmd.seed_iso.data = f->seed;
    cmd.seed_iso.len = sizeof f->seed;
    cmd.deadline_ms = util_now_ms() + 60000;
    return cmd;
}

/* Submit op on vm with a fresh id (written to id); returns what worker_submit returned. */
static int s_submit(fixture_t *f, const char *op, const char *vm, char *id)
{
    Berth__Resources flavor;
    Berth__AgentCommand cmd = s_command(f, op, vm, id, &flavor);
    return worker_submit(f->worker, &cmd);
}

/* Run the loop's side until n results have been seen (fails after WAIT_MS). */
static void s_wait_done(fixture_t *f, size_t n)
{
    zpoller_t *poller = zpoller_new(worker_socket(f->worker), NULL);
    assert_non_null(poller);
    int64_t deadline = util_mono_ms() + WAIT_MS;
    while (f->n_done < n) {
        int64_t left = deadline - util_mono_ms();
        if (left <= 0)
            fail_msg("%zu results after %d ms, expected %zu", f->n_done, WAIT_MS, n);
        if (zpoller_wait(poller, (int)left))
            worker_recv(f->worker);
    }
    zpoller_destroy(&poller);
}

/* Same for inventory callbacks. */
static void s_wait_inventories(fixture_t *f, size_t n)
{
    zpoller_t *poller = zpoller_new(worker_socket(f->worker), NULL);
    int64_t deadline = util_mono_ms() + WAIT_MS;
    while (f->n_inventories < n) {
        int64_t left = deadline - util_mono_ms();
        if (left <= 0)
            fail_msg("%zu inventories after %d ms, expected %zu", f->n_inventories, WAIT_MS, n);
        if (zpoller_wait(poller, (int)left))
            worker_recv(f->worker);
    }
    zpoller_destroy(&poller);
}

static const done_t *s_done_of(fixture_t *f, const char *id)
{
    for (size_t i = 0; i < f->n_done; i++)
        if (strcmp(f->done[i].command, id) == 0)
            return &f->done[i];
    fail_msg("no result for %s", id);
    return NULL;
}

/* Position of id's result in the order results arrived. */
static size_t s_rank(fixture_t *f, const char *id)
{
    return (size_t)(s_done_of(f, id) - f->done);
}

static int s_domain_active(fixture_t *f, const char *vm)
{
    virDomainPtr dom = virDomainLookupByName(f->conn, vm);
    if (!dom)
        return -1;
    int active = virDomainIsActive(dom);
    virDomainFree(dom);
    return active;
}

/* A VM's four build commands handed over at once, on four threads: each needs the one
   before it (DEFINE needs the disk and the seed), so they only all succeed, in order, if
   the worker keeps them in order. */
static void test_one_vm_in_order(void **state)
{
    fixture_t *f = *state;
    s_worker(f, 4, 16, 0);
    char vm[UTIL_ID_LEN];
    util_uuid(vm);
    const char *ops[] = { "CREATE_DISK", "PUT_SEED", "DEFINE", "START" };
    char ids[4][UTIL_ID_LEN + 16];
    for (int i = 0; i < 4; i++)
        assert_int_equal(s_submit(f, ops[i], vm, ids[i]), 0);
    s_wait_done(f, 4);
    for (int i = 0; i < 4; i++) {
        assert_string_equal(f->done[i].command, ids[i]);
        if (!f->done[i].ok)
            fail_msg("%s failed: %s", ops[i], f->done[i].error);
    }
    assert_string_equal(f->done[3].power_state, "RUNNING");
    assert_int_equal(s_domain_active(f, vm), 1);
    assert_int_equal(worker_busy(f->worker), 0);
    char id[UTIL_ID_LEN + 16];
    s_submit(f, "DESTROY", vm, id);
    s_wait_done(f, 5);
    assert_true(f->done[4].ok);
    assert_int_equal(s_domain_active(f, vm), -1);
}

/* Every libvirt step takes 400 ms. Two commands for VM a, then one for VM b: b's does not
   wait behind a's two, it runs beside a's first and is done before a's second. With one
   thread the same submissions finish strictly in order, which shows what the assertion
   tells apart. */
static void test_other_vms_not_held_up(void **state)
{
    fixture_t *f = *state;
    for (size_t threads = 2; threads >= 1; threads--) {
        worker_destroy(&f->worker);
        f->n_done = 0;
        s_worker(f, threads, 16, 400);
        char a[UTIL_ID_LEN], b[UTIL_ID_LEN];
        util_uuid(a);
        util_uuid(b);
        char a1[UTIL_ID_LEN + 16], a2[UTIL_ID_LEN + 16], b1[UTIL_ID_LEN + 16];
        assert_int_equal(s_submit(f, "CREATE_DISK", a, a1), 0);
        assert_int_equal(s_submit(f, "PUT_SEED", a, a2), 0);
        assert_int_equal(s_submit(f, "CREATE_DISK", b, b1), 0);
        s_wait_done(f, 3);
        for (size_t i = 0; i < 3; i++)
            assert_true(f->done[i].ok);
        assert_true(s_rank(f, a1) < s_rank(f, a2)); /* a's order, always */
        if (threads == 2)
            assert_true(s_rank(f, b1) < s_rank(f, a2));
        else
            assert_true(s_rank(f, b1) > s_rank(f, a2));
    }
}

/* The caller never waits for libvirt: worker_submit returns before the command ran, and
   the socket becomes readable once its result is there. */
static void test_submit_never_waits(void **state)
{
    fixture_t *f = *state;
    s_worker(f, 2, 16, 1000);
    char vm[UTIL_ID_LEN];
    util_uuid(vm);
    char id[UTIL_ID_LEN + 16];
    assert_int_equal(s_submit(f, "CREATE_DISK", vm, id), 0);
    /* Back already, with nothing done yet: a synchronous run would have taken a second
       and called done. */
    assert_int_equal(f->n_done, 0);
    assert_int_equal(worker_busy(f->worker), 1);
    zpoller_t *poller = zpoller_new(worker_socket(f->worker), NULL);
    assert_null(zpoller_wait(poller, 0));
    zpoller_destroy(&poller);
    s_wait_done(f, 1);
    assert_string_equal(f->done[0].command, id);
    assert_true(f->done[0].ok);
    assert_int_equal(worker_busy(f->worker), 0);
    virStoragePoolPtr pool = virStoragePoolLookupByName(f->conn, POOL);
    assert_non_null(pool);
    char name[64];
    snprintf(name, sizeof name, "%s.qcow2", vm);
    virStorageVolPtr vol = virStorageVolLookupByName(pool, name);
    assert_non_null(vol);
    virStorageVolFree(vol);
    virStoragePoolFree(pool);
}

/* One thread, two places in the queue: the first command runs, two wait, the fourth is
   refused at once with a FAILED result that says why. Once the queue drains, commands are
   taken again. */
static void test_full_queue_refuses(void **state)
{
    fixture_t *f = *state;
    s_worker(f, 1, 2, 300);
    char vms[5][UTIL_ID_LEN];
    char ids[5][UTIL_ID_LEN + 16];
    for (int i = 0; i < 5; i++)
        util_uuid(vms[i]);
    assert_int_equal(s_submit(f, "DESTROY", vms[0], ids[0]), 0);
    assert_int_equal(s_submit(f, "DESTROY", vms[1], ids[1]), 0);
    assert_int_equal(s_submit(f, "DESTROY", vms[2], ids[2]), 0);
    assert_int_equal(s_submit(f, "DESTROY", vms[3], ids[3]), -1);
    assert_int_equal(f->n_done, 1); /* answered at once */
    assert_string_equal(f->done[0].command, ids[3]);
    assert_false(f->done[0].ok);
    assert_non_null(strstr(f->done[0].error, "not run"));
    assert_non_null(strstr(f->done[0].error, "worker_queue"));
    assert_non_null(strstr(f->done[0].error, vms[3]));
    assert_int_equal(worker_busy(f->worker), 3);
    Berth__AgentResult **results = NULL;
    assert_int_equal(worker_pending(f->worker, &results), 1); /* goes to taskmgr too */
    assert_false(results[0]->ok);
    s_wait_done(f, 4);
    for (size_t i = 1; i < 4; i++)
        assert_true(f->done[i].ok);
    /* The refusal is not remembered: the same command sent again now runs. */
    Berth__Resources flavor;
    Berth__AgentCommand again = s_command(f, "DESTROY", vms[3], ids[4], &flavor);
    again.id = ids[3];
    assert_int_equal(worker_submit(f->worker, &again), 0);
    s_wait_done(f, 5);
    assert_string_equal(f->done[4].command, ids[3]);
    assert_true(f->done[4].ok);
}

/* A redelivered command id is never run twice: not while the first delivery waits or runs
   (one result comes back, nothing more is queued), and not after it finished (answered at
   once from the cache with the first answer, the domain left as it is). */
static void test_redelivery_runs_once(void **state)
{
    fixture_t *f = *state;
    s_worker(f, 2, 16, 0);
    char vm[UTIL_ID_LEN];
    util_uuid(vm);
    char ids[3][UTIL_ID_LEN + 16];
    s_submit(f, "CREATE_DISK", vm, ids[0]);
    s_submit(f, "PUT_SEED", vm, ids[1]);
    s_submit(f, "DEFINE", vm, ids[2]);
    s_wait_done(f, 3);
    worker_destroy(&f->worker);
    f->n_done = 0;
    s_worker(f, 2, 16, 300);

    char id[UTIL_ID_LEN + 16];
    Berth__Resources flavor;
    Berth__AgentCommand start = s_command(f, "START", vm, id, &flavor);
    assert_int_equal(worker_submit(f->worker, &start), 0);
    assert_int_equal(worker_submit(f->worker, &start), 0); /* while it runs */
    assert_int_equal(worker_busy(f->worker), 1);
    s_wait_done(f, 1);
    assert_int_equal(worker_busy(f->worker), 0);
    assert_true(f->done[0].ok);
    assert_string_equal(f->done[0].power_state, "RUNNING");
    size_t cached = worker_cached(f->worker);

    virDomainPtr dom = virDomainLookupByName(f->conn, vm);
    assert_non_null(dom);
    assert_int_equal(virDomainDestroy(dom), 0);
    virDomainFree(dom);
    assert_int_equal(worker_submit(f->worker, &start), 0);
    assert_int_equal(f->n_done, 2); /* at once, from the cache */
    assert_string_equal(f->done[1].command, id);
    assert_true(f->done[1].ok);
    assert_string_equal(f->done[1].power_state, "RUNNING"); /* the first answer */
    assert_int_equal(worker_busy(f->worker), 0);
    assert_int_equal(s_domain_active(f, vm), 0); /* ... and nothing was redone */
    assert_int_equal(worker_cached(f->worker), cached);

    /* A new id does the work. */
    s_submit(f, "START", vm, id);
    s_wait_done(f, 3);
    assert_true(f->done[2].ok);
    assert_int_equal(s_domain_active(f, vm), 1);
    s_submit(f, "DESTROY", vm, id);
    s_wait_done(f, 4);
}

/* Malformed commands come back failed like any other, and are not remembered. */
static void test_bad_commands_answered(void **state)
{
    fixture_t *f = *state;
    s_worker(f, 2, 16, 0);
    char vm[UTIL_ID_LEN];
    util_uuid(vm);
    char id[UTIL_ID_LEN + 16];
    Berth__Resources flavor;
    Berth__AgentCommand cmd = s_command(f, "START", vm, id, &flavor);
    cmd.id = "";
    assert_int_equal(worker_submit(f->worker, &cmd), 0);
    cmd = s_command(f, "REFORMAT", vm, id, &flavor);
    assert_int_equal(worker_submit(f->worker, &cmd), 0);
    cmd = s_command(f, "START", "not-a-uuid", id, &flavor);
    cmd.vm = NULL;
    cmd.op = NULL;
    assert_int_equal(worker_submit(f->worker, &cmd), 0);
    s_wait_done(f, 3);
    assert_non_null(strstr(s_done_of(f, "")->error, "id must be"));
    assert_non_null(strstr(s_done_of(f, "cmd-2")->error, "unknown op 'REFORMAT'"));
    assert_non_null(strstr(s_done_of(f, "cmd-3")->error, "unknown op ''"));
    for (size_t i = 0; i < 3; i++)
        assert_false(f->done[i].ok);
    assert_int_equal(worker_cached(f->worker), 2); /* not the one without an id */
}

/* The inventory snapshot: the first arrives without any command, and a command that
   changes the host's domains brings a fresh one at once, not a whole interval later (the
   interval here is a minute). */
static void test_inventory_follows_commands(void **state)
{
    fixture_t *f = *state;
    s_worker(f, 2, 16, 0);
    assert_null(worker_inventory(f->worker));
    assert_int_equal(worker_watch(f->worker, 60000, s_on_inventory, f), 0);
    s_wait_inventories(f, 1);
    const Berth__Host *host = worker_inventory(f->worker);
    assert_non_null(host);
    assert_string_equal(host->state, "UP");
    assert_string_equal(host->hypervisor, "TEST");
    assert_true(host->capacity && host->capacity->vcpus > 0 && host->capacity->ram_mb > 0);
    size_t before = host->n_domains;

    char vm[UTIL_ID_LEN];
    util_uuid(vm);
    const char *ops[] = { "CREATE_DISK", "PUT_SEED", "DEFINE", "START" };
    char ids[4][UTIL_ID_LEN + 16];
    for (int i = 0; i < 4; i++)
        s_submit(f, ops[i], vm, ids[i]);
    s_wait_done(f, 4);
    for (;;) {
        const char *power = NULL;
        host = worker_inventory(f->worker);
        for (size_t i = 0; i < host->n_domains; i++)
            if (strcmp(host->domains[i]->name, vm) == 0)
                power = host->domains[i]->power_state;
        if (power && strcmp(power, "RUNNING") == 0)
            break;
        s_wait_inventories(f, f->n_inventories + 1); /* fails after WAIT_MS */
    }
    assert_int_equal(host->n_domains, before + 1);
    char id[UTIL_ID_LEN + 16];
    s_submit(f, "DESTROY", vm, id);
    s_wait_done(f, 5);
}

/* A snapshot asked for by a command comes at most one per gap after the one before: a burst
   of commands costs one listing of the host per gap, and the change still shows well before
   the periodic snapshot (a minute here). */
static void test_inventory_gap(void **state)
{
    fixture_t *f = *state;
    s_worker(f, 2, 16, 0);
    worker_set_refresh_gap(f->worker, 1000);
    assert_int_equal(worker_watch(f->worker, 60000, s_on_inventory, f), 0);
    s_wait_inventories(f, 1);
    int64_t first = util_mono_ms();
    char vm[UTIL_ID_LEN];
    util_uuid(vm);
    const char *ops[] = { "CREATE_DISK", "PUT_SEED", "DEFINE", "START" };
    char ids[4][UTIL_ID_LEN + 16];
    for (int i = 0; i < 4; i++)
        s_submit(f, ops[i], vm, ids[i]);
    s_wait_done(f, 4);
    for (;;) {
        const char *power = NULL;
        const Berth__Host *host = worker_inventory(f->worker);
        for (size_t i = 0; i < host->n_domains; i++)
            if (strcmp(host->domains[i]->name, vm) == 0)
                power = host->domains[i]->power_state;
        if (power && strcmp(power, "RUNNING") == 0)
            break;
        s_wait_inventories(f, f->n_inventories + 1); /* fails after WAIT_MS */
    }
    int64_t seen = util_mono_ms() - first;
    assert_true(seen >= 900);  /* not before the gap since the first snapshot */
    assert_true(seen < 30000); /* nor at the periodic one */
    assert_int_equal(f->n_inventories, 2);
    char id[UTIL_ID_LEN + 16];
    s_submit(f, "DESTROY", vm, id);
    s_wait_done(f, 5);
}

/* A libvirtd that accepts the connection and never answers (here: a socket nobody reads)
   leaves the inventory thread waiting. Heartbeats go on, and report the host DOWN with no
   domains once the snapshot is three intervals old; it comes back when libvirt answers. */
static void test_stuck_libvirt_reported_down(void **state)
{
    fixture_t *f = *state;
    char *path = NULL, *uri = NULL;
    assert_true(asprintf(&path, "%s/stuck.sock", f->dir) > 0);
    assert_true(asprintf(&uri, "qemu+unix:///system?socket=%s", path) > 0);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    util_strlcpy(addr.sun_path, path, sizeof addr.sun_path);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    assert_int_equal(listen(fd, 8), 0);
    vmops_config_t vc = { .uri = uri,
                          .host = HOST,
                          .data_dir = f->dir,
                          .pool = POOL,
                          .max_vcpus = 1,
                          .max_ram_mb = 1,
                          .max_disk_gb = 1,
                          .max_seed_bytes = 1,
                          .max_name_len = 1 };
    f->worker = worker_new(&vc, 1, 4, 16, s_on_done, f);
    assert_non_null(f->worker);
    assert_int_equal(worker_watch(f->worker, 100, s_on_inventory, f), 0);
    int64_t deadline = util_mono_ms() + WAIT_MS;
    const Berth__Host *host = NULL;
    while (!(host = worker_inventory(f->worker))) {
        assert_true(util_mono_ms() < deadline);
        zclock_sleep(20); /* nothing arrives on the socket: the thread is stuck */
    }
    assert_string_equal(host->state, "DOWN");
    assert_int_equal(host->n_domains, 0);
    assert_int_equal(f->n_inventories, 0);
    /* The socket goes away: libvirt fails fast, a real snapshot arrives (DOWN as well,
       libvirt being unreachable) and the worker can stop. */
    close(fd);
    unlink(path);
    s_wait_inventories(f, 1);
    host = worker_inventory(f->worker);
    assert_string_equal(host->state, "DOWN");
    worker_destroy(&f->worker);
    free(path);
    free(uri);
}

/* Results wait until delivered; the queue and the cache keep to their bounds. */
static void test_pending_and_cache_bounds(void **state)
{
    fixture_t *f = *state;
    vmops_config_t vc = { .uri = "test:///default",
                          .host = HOST,
                          .data_dir = f->dir,
                          .pool = POOL,
                          .max_vcpus = 1,
                          .max_ram_mb = 1,
                          .max_disk_gb = 1,
                          .max_seed_bytes = 1,
                          .max_name_len = 1 };
    f->worker = worker_new(&vc, 1, 16, 2, s_on_done, f);
    assert_non_null(f->worker);
    worker_t *w = f->worker;
    worker_set_pending_max(w, 3);
    char vm[UTIL_ID_LEN];
    util_uuid(vm);
    char ids[5][UTIL_ID_LEN + 16];
    Berth__Resources flavors[5];
    Berth__AgentCommand cmds[5];
    for (int i = 0; i < 5; i++) {
        cmds[i] = s_command(f, "DESTROY", vm, ids[i], &flavors[i]);
        assert_int_equal(worker_submit(w, &cmds[i]), 0);
    }
    s_wait_done(f, 5);
    Berth__AgentResult **results = NULL;
    assert_int_equal(worker_pending(w, &results), 3); /* oldest two dropped */
    assert_string_equal(results[0]->command, ids[2]);
    assert_string_equal(results[2]->command, ids[4]);
    assert_int_equal(worker_cached(w), 2);
    /* Seeing a command whose result still waits does not queue it twice. */
    worker_submit(w, &cmds[4]);
    assert_int_equal(worker_pending(w, &results), 3);
    worker_delivered(w, 2);
    assert_int_equal(worker_pending(w, &results), 1);
    assert_string_equal(results[0]->command, ids[4]);
    /* Redelivery of a delivered command queues its cached answer again. */
    worker_submit(w, &cmds[3]);
    assert_int_equal(worker_pending(w, &results), 2);
    assert_string_equal(results[1]->command, ids[3]);
    worker_refuse(w, "cmd-x", "not run: too many");
    assert_int_equal(worker_pending(w, &results), 3);
    assert_false(results[2]->ok);
    assert_string_equal(results[2]->error, "not run: too many");
    assert_string_equal(f->done[f->n_done - 1].command, "cmd-x");
    worker_delivered(w, 10);
    assert_int_equal(worker_pending(w, &results), 0);
    worker_destroy(&f->worker);
    worker_destroy(&f->worker);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_one_vm_in_order, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_other_vms_not_held_up, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_submit_never_waits, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_full_queue_refuses, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_redelivery_runs_once, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_bad_commands_answered, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_inventory_follows_commands, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_inventory_gap, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_stuck_libvirt_reported_down, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_pending_and_cache_bounds, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
