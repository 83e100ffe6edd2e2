/*  bench-bus: a Ping round trip through lib/bus (bus_client_call to a bus_server answering
    Status, as every service does) against a bare ZeroMQ DEALER/ROUTER echo of a frame of the
    same size, in the same process, over loopback TCP. Each repetition times `calls` round
    trips of each kind, alternating, and the program prints one JSON line per repetition:
    the median per-call time (us) of each. Both sides run under the same security setting:
    CURVE (the platform's: certificates, the ZAP handler admitting the client's key, as
    lib/bus_auth sets every service up) or plain, to see what CURVE itself costs.

    bench-bus [calls] [reps] [curve|plain]     (default curve) */
#include "bus_auth.h"
#include "bus_client.h"
#include "bus_server.h"
#include "log.h"
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

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
    const char *mode = argc > 3 ? argv[3] : "curve";
    int curve = strcmp(mode, "curve") == 0;
    if (calls < 1 || reps < 1 || (!curve && strcmp(mode, "plain") != 0)) {
        fprintf(stderr, "usage: bench-bus [calls] [reps] [curve|plain]\n");
        return 2;
    }
    log_set_level("error");
    zsys_set_logstream(NULL);
    /* CURVE: a server and a client certificate in a store of their own, as berth-secrets
       makes them for the platform. */
    char dir[] = "/tmp/bench-bus-XXXXXX";
    bus_auth_t *server_auth = NULL, *client_auth = NULL;
    if (curve && (!mkdtemp(dir) || bus_auth_make(dir, "bench", "bench", NULL, 0) != 0 ||
                  bus_auth_make(dir, "client", "client", NULL, 0) != 0 ||
                  !(server_auth = bus_auth_new(dir, "bench")) ||
                  !(client_auth = bus_auth_new(dir, "client")))) {
        fprintf(stderr, "bench-bus: cannot make certificates in %s\n", dir);
        return 1;
    }
    s_serve_t bus = { .server =
                          bus_server_new_curve("tcp://127.0.0.1:*", "bench/bench-1", server_auth) };
    s_serve_t bare = { .router = zsock_new(ZMQ_ROUTER) };
    if (curve && bare.router && bus_auth_server(server_auth, bare.router) != 0)
        return 1;
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
    if (curve)
        bus_client_secure(client, client_auth);
    bus_client_pin(client, "bench", bus_server_endpoint(bus.server));
    zsock_t *dealer = zsock_new_dealer(NULL);
    if (curve && bus_auth_client(client_auth, dealer, "bench") != 0)
        return 1;
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
        printf("{\"calls\": %d, \"security\": \"%s\", \"bus_p50_us\": %.2f, "
               "\"bare_p50_us\": %.2f, \"bus_p99_us\": %.2f, \"bare_p99_us\": %.2f}\n",
               calls, mode, bus_us[calls / 2], bare_us[calls / 2], bus_us[calls * 99 / 100],
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
    bus_auth_destroy(&client_auth);
    bus_auth_destroy(&server_auth);
    if (curve) {
        const char *files[] = { "curve/bench.key",
                                "curve/client.key",
                                "curve/public/bench.cert",
                                "curve/public/client.cert",
                                "curve/public",
                                "curve",
                                "" };
        for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
            char path[128];
            snprintf(path, sizeof path, "%s/%s", dir, files[i]);
            if (remove(path) != 0)
                perror(path);
        }
    }
    return 0;
}
