/*  test_svc_stager_stage: StageImage requests as the stager's loop handles them, against a
    real redis-server, real qemu-img (base images) and real seed builds on the worker pool.
    While the only worker is held by a slow job (a gate the test opens), requests are kept,
    not answered and not refused: two requests for one VM make one build (the queue shows it:
    a bound that fits one build per VM turns the next VM away busy, at once), a request for
    the same VM with another name waits for that build and then gets the conflict; once the
    worker is free every kept request is answered, the two for one VM with the same seed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "catalog.h"
#include "log.h"
#include "stage.h"
#include "testenv.h"
#include "util.h"
#include "work.h"

#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>

#define VM1 "3f2b8c1e-6a4d-4f0e-9b7a-1c2d3e4f5a6b"
#define VM2 "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
#define VM3 "9c8b7a6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int open;
} gate_t;

typedef struct {
    testenv_redis_t *redis;
    store_t *store;
    char *dir;
    catalog_t *catalog;
    seed_t *seeds;
    work_t *work;
    stage_t *stage;
    bus_server_t *server;
    gate_t gate;
    atomic_int stop;
    pthread_t loop;
} fixture_t;

/* The test's stand-in for the stager's StageImage handler: keep, then stage_request. */
static void s_on_stage(bus_request_t *request, void *arg)
{
    fixture_t *f = arg;
    bus_request_t *kept = bus_request_defer(request);
    assert_non_null(kept);
    stage_request(f->stage, kept);
}

static void *s_loop(void *arg)
{
    fixture_t *f = arg;
    zpoller_t *poller = zpoller_new(bus_server_socket(f->server), work_socket(f->work), NULL);
    while (!atomic_load(&f->stop)) {
        void *which = zpoller_wait(poller, 20);
        if (which == bus_server_socket(f->server))
            bus_server_recv(f->server);
        else if (which == work_socket(f->work))
            work_deliver(f->work);
    }
    zpoller_destroy(&poller);
    return NULL;
}

static void s_hold(void *arg)
{
    gate_t *g = arg;
    pthread_mutex_lock(&g->lock);
    while (!g->open)
        pthread_cond_wait(&g->cond, &g->lock);
    pthread_mutex_unlock(&g->lock);
}

static void s_held_done(void *arg, int deliver)
{
    (void)arg;
    (void)deliver;
}

static int s_setup(void **state)
{
    if (sodium_init() < 0)
        return -1;
    fixture_t *f = calloc(1, sizeof *f);
    if (!f || !(f->redis = testenv_redis_start(0)) || !(f->store = testenv_store(f->redis, 1)) ||
        !(f->dir = testenv_tmpdir()))
        return -1;
    char path[1024];
    snprintf(path, sizeof path, "%s/images", f->dir);
    catalog_config_t cc = {
        .qemu_img = "qemu-img", .base_size = "1G", .timeout_ms = 20000, .max_images = 10
    };
    f->catalog = catalog_new(f->store, path, &cc);
    char error[512];
    if (!f->catalog || catalog_ensure_base(f->catalog, error, sizeof error) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/seeds", f->dir);
    seed_config_t sc = { .max_user_data = 65536 };
    f->seeds = seed_new(path, &sc);
    /* One worker; room for the slow job and two builds. */
    f->work = work_new(1, 3);
    stage_config_t c = { .seeds = f->seeds,
                         .catalog = f->catalog,
                         .work = f->work,
                         .max_seed_bytes = 1 << 20,
                         .max_waiting = 4 };
    f->stage = f->work ? stage_new(&c) : NULL;
    f->server = bus_server_new("tcp://127.0.0.1:*", "stager/s-1");
    if (!f->seeds || !f->stage || !f->server)
        return -1;
    bus_server_on(f->server, "StageImage", "*", s_on_stage, f);
    pthread_mutex_init(&f->gate.lock, NULL);
    pthread_cond_init(&f->gate.cond, NULL);
    /* Hold the worker before the loop starts (the loop's thread owns the pool after). */
    if (work_submit(f->work, s_hold, s_held_done, &f->gate) != 0)
        return -1;
    atomic_init(&f->stop, 0);
    if (pthread_create(&f->loop, NULL, s_loop, f) != 0)
        return -1;
    *state = f;
    return 0;
}

static int s_teardown(void **state)
{
    fixture_t *f = *state;
    pthread_mutex_lock(&f->gate.lock);
    f->gate.open = 1;
    pthread_cond_broadcast(&f->gate.cond);
    pthread_mutex_unlock(&f->gate.lock);
    atomic_store(&f->stop, 1);
    pthread_join(f->loop, NULL);
    work_destroy(&f->work);
    stage_destroy(&f->stage);
    bus_server_destroy(&f->server);
    seed_destroy(&f->seeds);
    catalog_destroy(&f->catalog);
    store_destroy(&f->store);
    testenv_redis_destroy(&f->redis);
    testenv_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

/* Send a StageImage with message id id on dealer (one connection: the server sees the
   requests in the order they were sent). */
static void s_send(zsock_t *dealer, const char *id, const char *vm, const char *name)
{
    Berth__StageImage req = BERTH__STAGE_IMAGE__INIT;
    req.vm = (char *)vm;
    req.name = (char *)name;
    req.image = "debian-12";
    req.user_data = "";
    envelope_spec_t spec = { .message_id = id,
                             .deadline_ms = util_now_ms() + 60000,
                             .sender = "test/t-1",
                             .body = &req.base };
    zframe_t *frame = envelope_pack(&spec);
    assert_non_null(frame);
    assert_int_equal(zframe_send(&frame, dealer, 0), 0);
}

/* The next reply on dealer (10 s at most); *env_p is the caller's. */
static Berth__Envelope *s_recv(zsock_t *dealer)
{
    zsock_set_rcvtimeo(dealer, 10000);
    zmsg_t *msg = zmsg_recv(dealer);
    assert_non_null(msg);
    zframe_t *frame = zmsg_first(msg);
    const char *reason = NULL;
    Berth__Envelope *env = envelope_unpack(zframe_data(frame), zframe_size(frame), &reason);
    assert_non_null(env);
    zmsg_destroy(&msg);
    return env;
}

/* 1 if a reply is waiting on dealer now. */
static int s_pending(zsock_t *dealer)
{
    return (zsock_events(dealer) & ZMQ_POLLIN) != 0;
}

static void test_stage_coalesces_and_bounds(void **state)
{
    fixture_t *f = *state;
    zsock_t *dealer = zsock_new(ZMQ_DEALER);
    zsock_set_linger(dealer, 0);
    assert_int_equal(zsock_connect(dealer, "%s", bus_server_endpoint(f->server)), 0);

    s_send(dealer, "m-1", VM1, "web-1");
    s_send(dealer, "m-2", VM1, "web-1"); /* another message, the same VM: joins m-1's build */
    s_send(dealer, "m-3", VM1, "web-9"); /* the same VM, another name: waits, then conflicts */
    s_send(dealer, "m-4", VM2, "web-2"); /* the last free slot */
    s_send(dealer, "m-5", VM3, "web-3"); /* no slot: busy, answered at once */

    Berth__Envelope *busy = s_recv(dealer);
    assert_string_equal(busy->correlation_id, "m-5");
    assert_non_null(busy->error);
    assert_string_equal(busy->error->code, "UNAVAILABLE");
    assert_non_null(strstr(busy->error->message, "busy"));
    berth__envelope__free_unpacked(busy, NULL);
    assert_false(s_pending(dealer)); /* the others are kept while the worker is held */

    pthread_mutex_lock(&f->gate.lock);
    f->gate.open = 1;
    pthread_cond_broadcast(&f->gate.cond);
    pthread_mutex_unlock(&f->gate.lock);

    Berth__StagedImage *staged[2] = { NULL, NULL };
    int conflict = 0, vm2 = 0;
    for (int i = 0; i < 4; i++) {
        Berth__Envelope *env = s_recv(dealer);
        if (streq(env->correlation_id, "m-3")) {
            assert_non_null(env->error);
            assert_string_equal(env->error->code, "CONFLICT");
            conflict++;
        } else {
            assert_null(env->error);
            Berth__StagedImage *s =
                (Berth__StagedImage *)envelope_body(env, &berth__staged_image__descriptor);
            assert_non_null(s);
            assert_string_equal(s->image->name, "debian-12");
            assert_true(s->seed_iso.len > 0);
            if (streq(env->correlation_id, "m-4")) {
                vm2++;
                protobuf_c_message_free_unpacked(&s->base, NULL);
            } else {
                int slot = streq(env->correlation_id, "m-1") ? 0 : 1;
                assert_null(staged[slot]);
                staged[slot] = s;
            }
        }
        berth__envelope__free_unpacked(env, NULL);
    }
    assert_int_equal(conflict, 1);
    assert_int_equal(vm2, 1);
    assert_non_null(staged[0]);
    assert_non_null(staged[1]);
    /* One build, one answer: the same ISO, byte for byte. */
    assert_int_equal(staged[0]->seed_iso.len, staged[1]->seed_iso.len);
    assert_memory_equal(staged[0]->seed_iso.data, staged[1]->seed_iso.data,
                        staged[0]->seed_iso.len);
    protobuf_c_message_free_unpacked(&staged[0]->base, NULL);
    protobuf_c_message_free_unpacked(&staged[1]->base, NULL);

    /* Drained: VM3 is accepted now. */
    s_send(dealer, "m-6", VM3, "web-3");
    Berth__Envelope *env = s_recv(dealer);
    assert_string_equal(env->correlation_id, "m-6");
    assert_null(env->error);
    berth__envelope__free_unpacked(env, NULL);
    zsock_destroy(&dealer);
}

/* A refused field is answered BAD_REQUEST naming it (details.field), over the bus. */
static void test_stage_names_the_bad_field(void **state)
{
    fixture_t *f = *state;
    pthread_mutex_lock(&f->gate.lock);
    f->gate.open = 1;
    pthread_cond_broadcast(&f->gate.cond);
    pthread_mutex_unlock(&f->gate.lock);
    zsock_t *dealer = zsock_new(ZMQ_DEALER);
    zsock_set_linger(dealer, 0);
    assert_int_equal(zsock_connect(dealer, "%s", bus_server_endpoint(f->server)), 0);

    s_send(dealer, "m-1", VM1, "Not_A_Hostname");
    Berth__Envelope *env = s_recv(dealer);
    assert_string_equal(env->correlation_id, "m-1");
    assert_non_null(env->error);
    assert_string_equal(env->error->code, "BAD_REQUEST");
    assert_non_null(strstr(env->error->message, "hostname"));
    assert_int_equal(env->error->n_details, 1);
    assert_string_equal(env->error->details[0]->key, "field");
    assert_string_equal(env->error->details[0]->value, "name");
    berth__envelope__free_unpacked(env, NULL);
    zsock_destroy(&dealer);
}

int main(void)
{
    log_set_level(getenv("BERTH_TEST_DEBUG") ? "debug" : "error");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stage_coalesces_and_bounds, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_stage_names_the_bad_field, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
