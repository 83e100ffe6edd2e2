/*  bench-bus: a Ping round trip through lib/bus (bus_client_call to a bus_server answering
    Status, as every service does) against a bare ZeroMQ DEALER/ROUTER echo of a frame of the
    same size, in the same process, over loopback TCP. Each repetition times `calls` round
    trips of each kind, alternating, and the program prints one JSON line per repetition:
    the median per-call time (us) of each.

    bench-bus [calls] [reps] */
#include "bus_client.h"
#include "bus_server.h"
#include "log.h"
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef struct {
    bus_server_t *server; /* lib/bus side, or NULL */
    zsock_t *router;      /* bare side, or NULL */
    volatile int stop;
} s_serve_t;

static double s_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int s_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void s_on_ping(bus_request_t *request, void *arg)
{
    (void)arg;
    Berth__Status status = BERTH__STATUS__INIT;
    status.service = "bench";
    status.instance = "bench-1";
    status.state = "UP";
    bus_reply(request, &status.base);
}

/* The server's loop on its own thread, as a service's actor would run it. */
static void *s_serve(void *arg)
{
    s_serve_t *s = arg;
    zsock_t *sock = s->server ? bus_server_socket(s->server) : s->router;
    zpoller_t *poller = zpoller_new(sock, NULL);
    while (!s->stop) {
        if (!zpoller_wait(poller, 50))
            continue;
        if (s->server)
            bus_server_recv(s->server);
        else {
            zmsg_t *msg = zmsg_recv(s->router);
            if (msg)
                zmsg_send(&msg, s->router);
        }
    }
    zpoller_destroy(&poller);
    return NULL;
}

int main(int argc, char **argv)
{
    int calls = argc > 1 ? atoi(argv[1]) : 5000;
    int reps = argc > 2 ? atoi(argv[2]) : 5;
    if (calls < 1 || reps < 1) {
        fprintf(stderr, "bench-bus: calls and reps must be positive\n");
        return 2;
    }
    log_set_level("error");
    zsys_set_logstream(NULL);
    s_serve_t bus = { .server = bus_server_new("tcp://127.0.0.1:*", "bench/bench-1") };
    s_serve_t bare = { .router = zsock_new(ZMQ_ROUTER) };
    int port = bare.router ? zsock_bind(bare.router, "tcp://127.0.0.1:*") : -1;
    if (!bus.server || port < 0) {
        fprintf(stderr, "bench-bus: cannot bind\n");
        return 1;
    }
    bus_server_on(bus.server, "Ping", "*", s_on_ping, NULL);
    pthread_t t1, t2;
    pthread_create(&t1, NULL, s_serve, &bus);
    pthread_create(&t2, NULL, s_serve, &bare);

    bus_client_t *client = bus_client_new(NULL, "bench/client-1");
    bus_client_pin(client, "bench", bus_server_endpoint(bus.server));
    zsock_t *dealer = zsock_new_dealer(NULL);
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", port);
    zsock_connect(dealer, "%s", endpoint);
    zpoller_t *poller = zpoller_new(dealer, NULL);

    /* The bare frame is as large as the bus's request envelope, so both move the same bytes. */
    Berth__Ping ping = BERTH__PING__INIT;
    size_t frame_size = 160;
    char *payload = calloc(1, frame_size);
    double *bus_us = calloc((size_t)calls, sizeof *bus_us);
    double *bare_us = calloc((size_t)calls, sizeof *bare_us);
    if (!payload || !bus_us || !bare_us)
        return 1;

    /* Warm up both paths (connections, first allocations). */
    for (int i = 0; i < 100; i++) {
        Berth__Envelope *reply = NULL;
        if (bus_client_call(client, "bench", &ping.base, NULL, 3000, &reply) == 0)
            berth__envelope__free_unpacked(reply, NULL);
        zframe_t *f = zframe_new(payload, frame_size);
        zframe_send(&f, dealer, 0);
        zpoller_wait(poller, 3000);
        f = zframe_recv(dealer);
        zframe_destroy(&f);
    }
    for (int r = 0; r < reps; r++) {
        for (int i = 0; i < calls; i++) {
            double t0 = s_now_us();
            Berth__Envelope *reply = NULL;
            if (bus_client_call(client, "bench", &ping.base, NULL, 3000, &reply) != 0 ||
                reply->error) {
                fprintf(stderr, "bench-bus: Ping through lib/bus failed\n");
                return 1;
            }
            berth__envelope__free_unpacked(reply, NULL);
            bus_us[i] = s_now_us() - t0;
        }
        for (int i = 0; i < calls; i++) {
            double t0 = s_now_us();
            zframe_t *f = zframe_new(payload, frame_size);
            zframe_send(&f, dealer, 0);
            if (!zpoller_wait(poller, 3000) || !(f = zframe_recv(dealer))) {
                fprintf(stderr, "bench-bus: bare round trip failed\n");
                return 1;
            }
            zframe_destroy(&f);
            bare_us[i] = s_now_us() - t0;
        }
        qsort(bus_us, (size_t)calls, sizeof *bus_us, s_cmp);
        qsort(bare_us, (size_t)calls, sizeof *bare_us, s_cmp);
        printf("{\"calls\": %d, \"bus_p50_us\": %.2f, \"bare_p50_us\": %.2f, "
               "\"bus_p99_us\": %.2f, \"bare_p99_us\": %.2f}\n",
               calls, bus_us[calls / 2], bare_us[calls / 2], bus_us[calls * 99 / 100],
               bare_us[calls * 99 / 100]);
        fflush(stdout);
    }

    zpoller_destroy(&poller);
    zsock_destroy(&dealer);
    bus_client_destroy(&client);
    bus.stop = bare.stop = 1;
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    bus_server_destroy(&bus.server);
    zsock_destroy(&bare.router);
    free(payload);
    free(bus_us);
    free(bare_us);
    return 0;
}
