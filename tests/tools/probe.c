/*  berth-probe: talks to services on the bus directly, for health checks and tests.
      berth-probe ping ENDPOINT               one Ping to one endpoint; exit 0 on a Status
      berth-probe call REDIS_HOST:PORT SERVICE N   N Pings through the registry; prints
                                              {"answered": n, "failed": n, "instances": {id: n}}
      berth-probe garbage ENDPOINT            sends malformed frames; prints how many were
                                              answered with BAD_FRAME */
#include "service.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

static int s_ping(bus_client_t *client, const char *service, json_t *instances)
{
    Berth__Ping ping = BERTH__PING__INIT;
    Berth__Envelope *reply = NULL;
    if (bus_client_call(client, service, &ping.base, NULL, 3000, &reply) != 0)
        return -1;
    Berth__Status *status = (Berth__Status *)envelope_body(reply, &berth__status__descriptor);
    int rc = -1;
    if (status && !reply->error) {
        json_t *n = json_object_get(instances, status->instance);
        json_object_set_new(instances, status->instance,
                            json_integer(n ? json_integer_value(n) + 1 : 1));
        rc = 0;
    }
    if (status)
        protobuf_c_message_free_unpacked(&status->base, NULL);
    berth__envelope__free_unpacked(reply, NULL);
    return rc;
}

/* Send raw frames on a fresh DEALER and count BAD_FRAME answers. */
static int s_garbage(const char *endpoint)
{
    zsock_t *dealer = zsock_new(ZMQ_DEALER);
    zsock_set_linger(dealer, 0);
    if (zsock_connect(dealer, "%s", endpoint) != 0)
        return -1;
    const char *junk[] = { "\x00\x01\x02garbage", "hello", "\x0a\xff\xff\xff\xff\x0f", "" };
    int sent = 0;
    for (int i = 0; i < 4; i++, sent++)
        zstr_send(dealer, junk[i]);
    zstr_sendx(dealer, "two", "frames", NULL);
    sent++;
    /* A well-formed protobuf that is not a valid envelope (no message id). */
    Berth__Envelope env = BERTH__ENVELOPE__INIT;
    env.type = "Ping";
    uint8_t buf[64];
    size_t len = berth__envelope__pack(&env, buf);
    zsock_send(dealer, "b", buf, len);
    sent++;
    int answered = 0;
    zpoller_t *poller = zpoller_new(dealer, NULL);
    int64_t deadline = util_mono_ms() + 3000;
    while (answered < sent && util_mono_ms() < deadline) {
        if (!zpoller_wait(poller, (int)(deadline - util_mono_ms())))
            break;
        zframe_t *frame = zframe_recv(dealer);
        Berth__Envelope *reply =
            frame ? envelope_unpack(zframe_data(frame), zframe_size(frame), NULL) : NULL;
        if (reply && reply->error && streq(reply->error->code, "BAD_FRAME"))
            answered++;
        if (reply)
            berth__envelope__free_unpacked(reply, NULL);
        zframe_destroy(&frame);
    }
    zpoller_destroy(&poller);
    zsock_destroy(&dealer);

    /* And bytes that are not even ZMTP, on a raw TCP connection. */
    const char *hostport = strstr(endpoint, "://");
    char host[128] = "";
    int port = 0;
    if (hostport && sscanf(hostport + 3, "%127[^:]:%d", host, &port) == 2) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
        inet_pton(AF_INET, host, &addr.sin_addr);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0) {
            const char raw[] = "GET / HTTP/1.1\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff";
            if (write(fd, raw, sizeof raw) < 0)
                perror("write");
        }
        if (fd >= 0)
            close(fd);
    }
    printf("{\"sent\": %d, \"bad_frame_replies\": %d}\n", sent, answered);
    return answered == sent ? 0 : 1;
}

int main(int argc, char **argv)
{
    log_set_level("error");
    if (argc == 3 && streq(argv[1], "ping")) {
        bus_client_t *client = bus_client_new(NULL, "probe");
        bus_client_pin(client, "target", argv[2]);
        json_t *instances = json_object();
        int rc = s_ping(client, "target", instances);
        if (rc == 0) {
            char *text = json_dumps(instances, JSON_COMPACT);
            puts(text);
            free(text);
        }
        json_decref(instances);
        bus_client_destroy(&client);
        return rc == 0 ? 0 : 1;
    }
    if (argc == 5 && streq(argv[1], "call")) {
        char host[128];
        int port;
        int64_t n;
        if (sscanf(argv[2], "%127[^:]:%d", host, &port) != 2
            || util_parse_int(argv[4], 1, 1000000, &n) != 0) {
            fprintf(stderr, "usage: berth-probe call HOST:PORT SERVICE N\n");
            return 2;
        }
        store_t *store = store_new(host, port, 1000, 1000);
        bus_client_t *client = bus_client_new(store, "probe");
        json_t *instances = json_object();
        int answered = 0, failed = 0;
        for (int64_t i = 0; i < n; i++)
            s_ping(client, argv[3], instances) == 0 ? answered++ : failed++;
        json_t *out = json_pack("{s:i, s:i, s:o}", "answered", answered, "failed", failed,
                                "instances", instances);
        char *text = json_dumps(out, JSON_COMPACT);
        puts(text);
        free(text);
        json_decref(out);
        bus_client_destroy(&client);
        store_destroy(&store);
        return failed ? 1 : 0;
    }
    if (argc == 3 && streq(argv[1], "garbage"))
        return s_garbage(argv[2]);
    fprintf(stderr, "usage: berth-probe ping ENDPOINT | call HOST:PORT SERVICE N | garbage ENDPOINT\n");
    return 2;
}
