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
    bus_server_on(loop.server, "Ping", s_on_ping, NULL);
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

    /* The same endpoint reached as "beta": refused, and the handler did not run. */
    uint64_t handled = bus_server_handled(loop.server);
    assert_int_equal(bus_client_call(client, "beta", &ping.base, NULL, 3000, &reply), 0);
    assert_non_null(reply->error);
    assert_string_equal(reply->error->code, "WRONG_SERVICE");
    berth__envelope__free_unpacked(reply, NULL);
    assert_int_equal(bus_server_handled(loop.server), handled);

    bus_client_destroy(&client);
    loop.stop = 1;
    pthread_join(thread, NULL);
    bus_server_destroy(&loop.server);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_calls_reach_only_the_named_service),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
