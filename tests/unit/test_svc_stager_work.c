/*  test_svc_stager_work: the stager's worker pool. Jobs run on worker threads and their
    results are handled on the owner's thread; the queue is bounded (over it, a submit is
    refused at once, and accepted again once jobs come back); a job still unfinished at
    shutdown is released exactly once. And the point of it all: a loop that hands slow work to
    the pool keeps answering Ping while that work runs, and answers the kept request when the
    work is done (bus_request_defer). Slow jobs wait on a gate the test opens, not on a clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "bus_client.h"
#include "bus_server.h"
#include "log.h"
#include "testenv.h"
#include "work.h"

#include <pthread.h>
#include <stdatomic.h>

/* A gate slow jobs wait on until the test opens it. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int open;
    atomic_int started;  /* jobs that began */
    atomic_int finished; /* jobs whose fn returned */
} gate_t;

static void s_gate_init(gate_t *g)
{
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    g->open = 0;
    atomic_init(&g->started, 0);
    atomic_init(&g->finished, 0);
}

static void s_gate_open(gate_t *g)
{
    pthread_mutex_lock(&g->lock);
    g->open = 1;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

typedef struct {
    gate_t *gate;      /* NULL: the job does not wait */
    pthread_t ran_on;  /* thread fn ran on */
    pthread_t done_on; /* thread done ran on */
    int done_calls;
    int delivered;
} job_t;

static void s_run(void *arg)
{
    job_t *job = arg;
    job->ran_on = pthread_self();
    if (job->gate) {
        atomic_fetch_add(&job->gate->started, 1);
        pthread_mutex_lock(&job->gate->lock);
        while (!job->gate->open)
            pthread_cond_wait(&job->gate->cond, &job->gate->lock);
        pthread_mutex_unlock(&job->gate->lock);
        atomic_fetch_add(&job->gate->finished, 1);
    }
}

static void s_done(void *arg, int deliver)
{
    job_t *job = arg;
    job->done_on = pthread_self();
    job->done_calls++;
    job->delivered = deliver;
}

/* Deliver finished jobs until want of them have come back, or fail after 10 s. */
static void s_deliver_until(work_t *work, size_t held_left)
{
    zpoller_t *poller = zpoller_new(work_socket(work), NULL);
    int64_t deadline = testenv_now_ms() + 10000;
    while (work_held(work) > held_left && testenv_now_ms() < deadline)
        if (zpoller_wait(poller, 50))
            work_deliver(work);
    zpoller_destroy(&poller);
    assert_int_equal(work_held(work), held_left);
}

static void test_work_runs_off_the_owner_thread(void **state)
{
    (void)state;
    work_t *work = work_new(2, 8);
    assert_non_null(work);
    job_t jobs[5] = { 0 };
    for (int i = 0; i < 5; i++)
        assert_int_equal(work_submit(work, s_run, s_done, &jobs[i]), 0);
    assert_int_equal(work_held(work), 5);
    s_deliver_until(work, 0);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(jobs[i].done_calls, 1);
        assert_int_equal(jobs[i].delivered, 1);
        assert_false(pthread_equal(jobs[i].ran_on, pthread_self()));
        assert_true(pthread_equal(jobs[i].done_on, pthread_self()));
    }
    work_destroy(&work);
    work_destroy(&work); /* safe twice */
}

static void test_work_queue_is_bounded(void **state)
{
    (void)state;
    gate_t gate;
    s_gate_init(&gate);
    work_t *work = work_new(1, 2);
    assert_non_null(work);
    job_t a = { .gate = &gate }, b = { .gate = &gate }, c = { 0 };
    assert_int_equal(work_submit(work, s_run, s_done, &a), 0);
    assert_int_equal(work_submit(work, s_run, s_done, &b), 0);
    /* Full: refused at once, nothing queued. */
    assert_int_equal(work_submit(work, s_run, s_done, &c), -1);
    assert_int_equal(work_held(work), 2);
    s_gate_open(&gate);
    s_deliver_until(work, 0);
    assert_int_equal(a.done_calls + b.done_calls, 2);
    assert_int_equal(c.done_calls, 0);
    /* Drained: accepted again. */
    assert_int_equal(work_submit(work, s_run, s_done, &c), 0);
    s_deliver_until(work, 0);
    assert_int_equal(c.done_calls, 1);
    work_destroy(&work);
}

static void test_work_destroy_releases_every_job_once(void **state)
{
    (void)state;
    gate_t gate;
    s_gate_init(&gate);
    work_t *work = work_new(1, 8);
    job_t jobs[4] = { { .gate = &gate }, { .gate = &gate }, { .gate = &gate }, { 0 } };
    for (int i = 0; i < 4; i++)
        assert_int_equal(work_submit(work, s_run, s_done, &jobs[i]), 0);
    int64_t deadline = testenv_now_ms() + 10000;
    while (atomic_load(&gate.started) < 1 && testenv_now_ms() < deadline)
        testenv_pause_ms(5);
    assert_int_equal(atomic_load(&gate.started), 1);
    s_gate_open(&gate);
    work_destroy(&work); /* one running, the rest queued or finished: none delivered */
    for (int i = 0; i < 4; i++) {
        assert_int_equal(jobs[i].done_calls, 1);
        assert_int_equal(jobs[i].delivered, 0);
    }
}

/* ---- a loop that keeps serving while its work is slow ---- */

typedef struct {
    bus_server_t *server;
    work_t *work;
    gate_t gate;
    atomic_int stop;
    bus_request_t *kept; /* the ListImages being worked on */
    job_t job;
    atomic_int answered; /* kept requests answered */
} loop_t;

static void s_on_ping(bus_request_t *request, void *arg)
{
    (void)arg;
    Berth__Status status = BERTH__STATUS__INIT;
    status.service = "loop";
    bus_reply(request, &status.base);
}

static void s_slow_done(void *arg, int deliver)
{
    loop_t *l = arg;
    if (deliver) {
        Berth__ImageList list = BERTH__IMAGE_LIST__INIT;
        /* Counted before the reply leaves: the caller may read the count as soon as it has
           the answer (seen failing once under load when counted after). */
        atomic_fetch_add(&l->answered, 1);
        bus_reply(l->kept, &list.base);
    }
    bus_request_destroy(&l->kept);
}

static void s_slow_run(void *arg)
{
    loop_t *l = arg;
    s_run(&l->job);
}

/* Like StageImage: keep the request, hand the work to the pool, answer when it is back. */
static void s_on_slow(bus_request_t *request, void *arg)
{
    loop_t *l = arg;
    l->kept = bus_request_defer(request);
    assert_non_null(l->kept);
    assert_int_equal(work_submit(l->work, s_slow_run, s_slow_done, l), 0);
}

static void *s_loop(void *arg)
{
    loop_t *l = arg;
    zpoller_t *poller = zpoller_new(bus_server_socket(l->server), work_socket(l->work), NULL);
    while (!atomic_load(&l->stop)) {
        void *which = zpoller_wait(poller, 20);
        if (which == bus_server_socket(l->server))
            bus_server_recv(l->server);
        else if (which == work_socket(l->work))
            work_deliver(l->work);
    }
    zpoller_destroy(&poller);
    return NULL;
}

typedef struct {
    const char *endpoint;
    int rc;
    char type[64];
} slow_call_t;

static void *s_slow_caller(void *arg)
{
    slow_call_t *c = arg;
    bus_client_t *client = bus_client_new(NULL, "test/slow");
    bus_client_pin(client, "loop", c->endpoint);
    Berth__ListImages req = BERTH__LIST_IMAGES__INIT;
    Berth__Envelope *reply = NULL;
    c->rc = bus_client_call(client, "loop", &req.base, NULL, 20000, &reply);
    if (c->rc == 0) {
        snprintf(c->type, sizeof c->type, "%s", reply->error ? "error" : reply->type);
        berth__envelope__free_unpacked(reply, NULL);
    }
    bus_client_destroy(&client);
    return NULL;
}

static void test_loop_answers_ping_while_work_is_slow(void **state)
{
    (void)state;
    loop_t l = { .server = bus_server_new("tcp://127.0.0.1:*", "loop/l-1"),
                 .work = work_new(1, 4) };
    assert_non_null(l.server);
    assert_non_null(l.work);
    s_gate_init(&l.gate);
    l.job.gate = &l.gate;
    atomic_init(&l.stop, 0);
    atomic_init(&l.answered, 0);
    bus_server_on(l.server, "Ping", "*", s_on_ping, &l);
    bus_server_on(l.server, "ListImages", "*", s_on_slow, &l);
    pthread_t loop, caller;
    assert_int_equal(pthread_create(&loop, NULL, s_loop, &l), 0);

    slow_call_t slow = { .endpoint = bus_server_endpoint(l.server), .rc = -2 };
    assert_int_equal(pthread_create(&caller, NULL, s_slow_caller, &slow), 0);
    int64_t deadline = testenv_now_ms() + 10000;
    while (atomic_load(&l.gate.started) < 1 && testenv_now_ms() < deadline)
        testenv_pause_ms(5);
    assert_int_equal(atomic_load(&l.gate.started), 1);

    /* The slow job holds its worker; the loop answers Ping after Ping meanwhile. */
    bus_client_t *client = bus_client_new(NULL, "test/ping");
    assert_int_equal(bus_client_pin(client, "loop", bus_server_endpoint(l.server)), 0);
    for (int i = 0; i < 10; i++) {
        Berth__Ping ping = BERTH__PING__INIT;
        Berth__Envelope *reply = NULL;
        assert_int_equal(bus_client_call(client, "loop", &ping.base, NULL, 5000, &reply), 0);
        assert_null(reply->error);
        assert_string_equal(reply->type, "Status");
        berth__envelope__free_unpacked(reply, NULL);
    }
    assert_int_equal(atomic_load(&l.gate.finished), 0);
    assert_int_equal(slow.rc, -2); /* the kept request is still waiting */

    /* The work ends: the kept request is answered from the loop. */
    s_gate_open(&l.gate);
    pthread_join(caller, NULL);
    assert_int_equal(slow.rc, 0);
    assert_string_equal(slow.type, "ImageList");
    assert_int_equal(atomic_load(&l.answered), 1);

    bus_client_destroy(&client);
    atomic_store(&l.stop, 1);
    pthread_join(loop, NULL);
    work_destroy(&l.work);
    bus_server_destroy(&l.server);
}

int main(void)
{
    log_set_level(getenv("BERTH_TEST_DEBUG") ? "debug" : "error");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_work_runs_off_the_owner_thread),
        cmocka_unit_test(test_work_queue_is_bounded),
        cmocka_unit_test(test_work_destroy_releases_every_job_once),
        cmocka_unit_test(test_loop_answers_ping_while_work_is_slow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
