/*  bus: a call goes to the service it names and comes back matched to it. A server answers
    only requests meant for its own service: a caller that still lists a dead instance whose
    port another service took gets WRONG_SERVICE, never the other service's answer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "bus_client.h"
#include "bus_server.h"
#include "log.h"
#include "testenv.h"
#include "util.h"

#include <pthread.h>

typedef struct {
    bus_server_t *server;
    volatile int stop;
} s_loop_t;

static void s_on_ping(bus_request_t *request, void *arg)
{
    (void)arg;
    Berth__Status status = BERTH__STATUS__INIT;
    status.service = "alpha";
    bus_reply(request, &status.base);
}

/* The server's loop, on its own thread: the client blocks in its call meanwhile. */
static void *s_serve(void *arg)
{
    s_loop_t *loop = arg;
    zpoller_t *poller = zpoller_new(bus_server_socket(loop->server), NULL);
    while (!loop->stop)
        if (zpoller_wait(poller, 50))
            bus_server_recv(loop->server);
    zpoller_destroy(&poller);
    return NULL;
}

static void test_calls_reach_only_the_named_service(void **state)
{
    (void)state;
    s_loop_t loop = { .server = bus_server_new("tcp://127.0.0.1:*", "alpha/a-1") };
    assert_non_null(loop.server);
    bus_server_on(loop.server, "Ping", "*", s_on_ping, NULL);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, s_serve, &loop), 0);

    bus_client_t *client = bus_client_new(NULL, "test/t-1");
    assert_int_equal(bus_client_pin(client, "alpha", bus_server_endpoint(loop.server)), 0);
    assert_int_equal(bus_client_pin(client, "beta", bus_server_endpoint(loop.server)), 0);
    Berth__Ping ping = BERTH__PING__INIT;
    Berth__Envelope *reply = NULL;

    assert_int_equal(bus_client_call(client, "alpha", &ping.base, NULL, 3000, &reply), 0);
    assert_null(reply->error);
    assert_string_equal(reply->type, "Status");
    assert_string_equal(reply->sender, "alpha/a-1");
    berth__envelope__free_unpacked(reply, NULL);

    /* The same endpoint reached as "beta": refused, and the handler did not run (the server
       counts a request after answering it, so once beta's answer is here alpha's count is
       in: one handled in all). */
    assert_int_equal(bus_client_call(client, "beta", &ping.base, NULL, 3000, &reply), 0);
    assert_non_null(reply->error);
    assert_string_equal(reply->error->code, "WRONG_SERVICE");
    berth__envelope__free_unpacked(reply, NULL);
    assert_int_equal(bus_server_handled(loop.server), 1);

    bus_client_destroy(&client);
    loop.stop = 1;
    pthread_join(thread, NULL);
    bus_server_destroy(&loop.server);
}

/* ---- calls not waited for ---- */

typedef struct {
    int answered;  /* callbacks with a Status from alpha */
    int timed_out; /* callbacks with no reply */
    char ids[3][UTIL_ID_LEN];
    int id_seen[3];
} s_async_t;

static void s_on_reply(bus_client_t *client, const char *call_id, Berth__Envelope *reply, void *arg)
{
    (void)client;
    s_async_t *a = arg;
    for (int i = 0; i < 3; i++)
        if (streq(a->ids[i], call_id))
            a->id_seen[i]++;
    if (reply) {
        if (!reply->error && streq(reply->type, "Status"))
            a->answered++;
        berth__envelope__free_unpacked(reply, NULL);
    } else
        a->timed_out++;
}

static int s_until_done(zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    s_async_t *a = arg;
    return a->answered + a->timed_out == 3 ? -1 : 0;
}

static int s_give_up(zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    (void)arg;
    return -1;
}

static void test_calls_not_waited_for(void **state)
{
    (void)state;
    s_loop_t loop = { .server = bus_server_new("tcp://127.0.0.1:*", "alpha/a-1") };
    assert_non_null(loop.server);
    bus_server_on(loop.server, "Ping", "*", s_on_ping, NULL);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, s_serve, &loop), 0);

    zloop_t *zloop = zloop_new();
    bus_client_t *client = bus_client_new(NULL, "test/t-2");
    assert_int_equal(bus_client_pin(client, "alpha", bus_server_endpoint(loop.server)), 0);
    /* Nobody listens here: the call can only end at its deadline. */
    assert_int_equal(bus_client_pin(client, "gamma", "tcp://127.0.0.1:9"), 0);
    bus_client_attach(client, zloop);
    s_async_t a = { 0 };
    Berth__Ping ping = BERTH__PING__INIT;
    int64_t start = util_mono_ms();
    assert_int_equal(
        bus_client_send(client, "alpha", &ping.base, NULL, 3000, s_on_reply, &a, a.ids[0]), 0);
    assert_int_equal(
        bus_client_send(client, "alpha", &ping.base, NULL, 3000, s_on_reply, &a, a.ids[1]), 0);
    assert_int_equal(
        bus_client_send(client, "gamma", &ping.base, NULL, 600, s_on_reply, &a, a.ids[2]), 0);
    /* The calls are under way; nothing has been answered before the loop runs. */
    assert_int_equal(a.answered + a.timed_out, 0);
    zloop_timer(zloop, 10, 0, s_until_done, &a);
    zloop_timer(zloop, 5000, 1, s_give_up, NULL); /* a guard: never hang the suite */
    zloop_start(zloop);
    assert_int_equal(a.answered, 2);
    assert_int_equal(a.timed_out, 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(a.id_seen[i], 1); /* each callback once, with its own id */
    assert_true(util_mono_ms() - start >= 600);

    bus_client_destroy(&client);
    zloop_destroy(&zloop);
    loop.stop = 1;
    pthread_join(thread, NULL);
    bus_server_destroy(&loop.server);
}

/* ---- deferred replies ---- */

typedef struct {
    bus_server_t *server;
    volatile int stop;
    int runs;               /* handler runs */
    bus_request_t *parked;  /* the request kept, answered on the next poll after park_ms */
    int64_t answer_at;
} s_park_t;

static void s_on_park(bus_request_t *request, void *arg)
{
    s_park_t *p = arg;
    p->runs++;
    p->parked = bus_request_defer(request);
    assert_non_null(p->parked);
    p->answer_at = util_mono_ms() + 700; /* well past several client resends (250 ms) */
}

static void *s_serve_parked(void *arg)
{
    s_park_t *p = arg;
    zpoller_t *poller = zpoller_new(bus_server_socket(p->server), NULL);
    while (!p->stop) {
        if (zpoller_wait(poller, 20))
            bus_server_recv(p->server);
        if (p->parked && util_mono_ms() >= p->answer_at) {
            assert_int_equal(bus_server_deferred(p->server), 1);
            Berth__Status status = BERTH__STATUS__INIT;
            status.service = "parked";
            bus_reply(p->parked, &status.base);
            bus_request_destroy(&p->parked);
            assert_int_equal(bus_server_deferred(p->server), 0);
        }
    }
    zpoller_destroy(&poller);
    return NULL;
}

static void test_deferred_reply(void **state)
{
    (void)state;
    s_park_t p = { .server = bus_server_new("tcp://127.0.0.1:*", "alpha/a-1") };
    assert_non_null(p.server);
    bus_server_on(p.server, "Ping", "*", s_on_park, &p);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, s_serve_parked, &p), 0);

    bus_client_t *client = bus_client_new(NULL, "test/t-3");
    assert_int_equal(bus_client_pin(client, "alpha", bus_server_endpoint(p.server)), 0);
    Berth__Ping ping = BERTH__PING__INIT;
    Berth__Envelope *reply = NULL;
    int64_t start = util_mono_ms();
    assert_int_equal(bus_client_call(client, "alpha", &ping.base, NULL, 5000, &reply), 0);
    assert_null(reply->error);
    assert_string_equal(reply->type, "Status");
    assert_true(util_mono_ms() - start >= 600);
    berth__envelope__free_unpacked(reply, NULL);
    /* Resent while parked, the request still ran once. */
    assert_int_equal(p.runs, 1);

    bus_client_destroy(&client);
    p.stop = 1;
    pthread_join(thread, NULL);
    bus_server_destroy(&p.server);
}

int main(void)
{
    log_set_level(getenv("BERTH_TEST_DEBUG") ? "debug" : "error");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_calls_reach_only_the_named_service),
        cmocka_unit_test(test_calls_not_waited_for),
        cmocka_unit_test(test_deferred_reply),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
