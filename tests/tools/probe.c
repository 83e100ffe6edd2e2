/*  berth-probe: talks to services on the bus directly, for health checks and tests.
      berth-probe ping ENDPOINT               one Ping to one endpoint; exit 0 on a Status,
                                              printed as {"service", "instance", "state",
                                              "store_ok", "handled", ...}
      berth-probe call REDIS_HOST:PORT SERVICE N [INTERVAL_MS]
                                              N Pings through the registry, INTERVAL_MS apart
                                              (default 0); prints {"answered": n,
                                              "failed": n, "instances": {id: n}}
      berth-probe garbage ENDPOINT            sends malformed frames; prints how many were
                                              answered with BAD_FRAME (exit 0 when all were),
                                              then an oversize frame and non-ZMTP bytes
      berth-probe select HOST:PORT VM VCPUS RAM_MB DISK_GB
                                              one SelectHost to the scheduler; prints
                                              {"host", "alternates"} or the bus error
                                              {"error": {"code", "message", "details"}}
      berth-probe send HOST:PORT SERVICE TYPE JSON [--as USER ROLE [--key DIR | --self-made]
                       [--expired] [--for TYPE]]
                                              one message of TYPE (its fields from JSON) to
                                              SERVICE through the registry, with no user
                                              assertion or, with --as, one stating USER with
                                              ROLE: signed with DIR's assertion.key (what the
                                              gateway would sign), a key of its own
                                              (--self-made: a forgery), already expired, or
                                              made for another TYPE; prints {"type", "body"}
                                              or {"error": {"code", "message", "details"}}
      berth-probe forge ENDPOINT KIND ARG...  one request a caller could forge, answered as
                                              {"answered": true, "error": {...}|null} or
                                              {"answered": false} (exit 1): KIND is
                                              heartbeat HOST | work HOST | result HOST CMD |
                                              seed VM | decide REQUEST | dispose VM |
                                              request OWNER | usage | select VM
    Options, before the command: the bus is CURVE, so the probe needs a certificate.
      --secrets DIR    the platform's secrets (default $BERTH_SECRETS_DIR)
      --cert NAME      its certificate under DIR/curve (default $BERTH_CURVE_CERT); "new" a
                       fresh one the store does not hold; "none" plain ZeroMQ, no key
      --server NAME    the certificate of the server at ENDPOINT (ping, garbage, forge;
                       default the service of --cert, e.g. a service's own health check)
    Redis is reached as the services' user, with the password under --secrets. */
#include "assertion.h"
#include "service.h"

#include <sodium.h>

#include <arpa/inet.h>
#include <getopt.h>
#include <sys/socket.h>
#include <unistd.h>

static bus_auth_t *s_auth;    /* NULL: plain ZeroMQ (--cert none) */
static const char *s_server;  /* the certificate the server at ENDPOINT presents */
static const char *s_secrets; /* --secrets: the Redis password is there too */

/* A bus client speaking CURVE with the probe's certificate (pinned to endpoint if given:
   the server there presents s_server). */
static bus_client_t *s_client(store_t *store, const char *endpoint)
{
    bus_client_t *client = bus_client_new(store, "probe");
    if (!client)
        return NULL;
    if (s_auth)
        bus_client_secure(client, s_auth);
    if (endpoint && ((s_auth && bus_client_set_server(client, "", s_server) != 0) ||
                     bus_client_pin(client, "", endpoint) != 0))
        bus_client_destroy(&client);
    return client;
}

/* A raw DEALER with the probe's certificate, not connected yet. */
static zsock_t *s_dealer(void)
{
    zsock_t *dealer = zsock_new(ZMQ_DEALER);
    if (dealer && s_auth && bus_auth_client(s_auth, dealer, s_server) != 0)
        zsock_destroy(&dealer);
    return dealer;
}

/* One Ping through client. Counts the answering instance in instances and, when last is
   given, stores the Status there as JSON. */
static int s_ping(bus_client_t *client, const char *service, json_t *instances, json_t **last)
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
        if (last)
            *last =
                json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:b, s:I}", "service", status->service,
                          "instance", status->instance, "endpoint", status->endpoint, "state",
                          status->state, "started_ms", (json_int_t)status->started_ms, "uptime_ms",
                          (json_int_t)status->uptime_ms, "store_ok", status->store_ok, "handled",
                          (json_int_t)status->handled);
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
    zsock_t *dealer = s_dealer();
    if (!dealer)
        return -1;
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

    /* A frame above the server's size limit: ZeroMQ drops it and the connection before the
       service sees it, so there is no answer to wait for. Sent on its own socket so the
       replies above are not lost with it. */
    zsock_t *big = s_dealer();
    zsock_set_linger(big, 1000);
    if (big && zsock_connect(big, "%s", endpoint) == 0) {
        zframe_t *frame = zframe_new(NULL, ENVELOPE_MAX_BYTES + 1);
        if (frame) {
            memset(zframe_data(frame), 0x0a, zframe_size(frame));
            zframe_send(&frame, big, 0);
        }
    }
    zsock_destroy(&big);

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

/* A Redis connection authenticated like the services' (with --secrets, when given). */
static store_t *s_store(const char *host, int port)
{
    store_t *store = store_new(host, port, 1000, 1000);
    if (store && store_use_secrets(store, s_secrets) != 0)
        store_destroy(&store);
    return store;
}

/* select HOST:PORT VM VCPUS RAM_MB DISK_GB: the scheduler's answer, as JSON on stdout. */
static int s_select(char **argv)
{
    char host[128];
    int port;
    int64_t vcpus, ram, disk;
    if (sscanf(argv[2], "%127[^:]:%d", host, &port) != 2 ||
        util_parse_int(argv[4], 0, INT32_MAX, &vcpus) != 0 ||
        util_parse_int(argv[5], 0, INT64_MAX, &ram) != 0 ||
        util_parse_int(argv[6], 0, INT64_MAX, &disk) != 0) {
        fprintf(stderr, "usage: berth-probe select HOST:PORT VM VCPUS RAM_MB DISK_GB\n");
        return 2;
    }
    Berth__Resources flavor = BERTH__RESOURCES__INIT;
    flavor.vcpus = (int32_t)vcpus;
    flavor.ram_mb = ram;
    flavor.disk_gb = disk;
    Berth__SelectHost ask = BERTH__SELECT_HOST__INIT;
    ask.vm = argv[3];
    ask.flavor = &flavor;
    store_t *store = s_store(host, port);
    bus_client_t *client = s_client(store, NULL);
    Berth__Envelope *reply = NULL;
    int rc = client ? bus_client_call(client, "scheduler", &ask.base, NULL, 5000, &reply) : -1;
    json_t *out = NULL;
    if (rc == 0 && reply->error) {
        berth_error_t error;
        error_from_proto(&error, reply->error);
        json_t *details = json_object();
        for (size_t i = 0; i < error.n_details; i++)
            json_object_set_new(details, error.details[i].key, json_string(error.details[i].value));
        out = json_pack("{s:{s:s, s:s, s:o}}", "error", "code", error.code, "message",
                        error.message, "details", details);
    } else if (rc == 0) {
        Berth__HostSelection *sel =
            (Berth__HostSelection *)envelope_body(reply, &berth__host_selection__descriptor);
        if (sel) {
            json_t *alternates = json_array();
            for (size_t i = 0; i < sel->n_alternates; i++)
                json_array_append_new(alternates, json_string(sel->alternates[i]));
            out = json_pack("{s:s, s:o}", "host", sel->host, "alternates", alternates);
            protobuf_c_message_free_unpacked(&sel->base, NULL);
        }
    }
    if (out) {
        char *text = json_dumps(out, JSON_COMPACT | JSON_SORT_KEYS);
        puts(text);
        free(text);
        json_decref(out);
    }
    if (reply)
        berth__envelope__free_unpacked(reply, NULL);
    bus_client_destroy(&client);
    store_destroy(&store);
    return out ? 0 : 1;
}

/* ---- send: any message, with or without a user assertion ---------------------------- */

/* The messages `send` knows by name: those a test sends and those it gets back. */
static const ProtobufCMessageDescriptor *s_messages[] = {
    &berth__create_template__descriptor,
    &berth__create_request__descriptor,
    &berth__decide_request__descriptor,
    &berth__get_request__descriptor,
    &berth__list_templates__descriptor,
    &berth__dispose_vm__descriptor,
    &berth__vm_action__descriptor,
    &berth__task_recover__descriptor,
    &berth__get_usage__descriptor,
    &berth__template__descriptor,
    &berth__template_list__descriptor,
    &berth__request__descriptor,
    &berth__task__descriptor,
    &berth__usage_report__descriptor,
    &berth__ping__descriptor,
    &berth__status__descriptor,
    &berth__get_image_chunk__descriptor,
    &berth__image_chunk__descriptor,
};

static const ProtobufCMessageDescriptor *s_message(const char *name)
{
    for (size_t i = 0; i < sizeof s_messages / sizeof s_messages[0]; i++)
        if (name && streq(s_messages[i]->short_name, name))
            return s_messages[i];
    return NULL;
}

/* A new message of desc with its singular fields (strings, integers, booleans, nested
   messages) from the JSON object; NULL (printed) when a field is unknown or of the wrong
   kind. Free with protobuf_c_message_free_unpacked(msg, NULL). */
static ProtobufCMessage *s_from_json(const ProtobufCMessageDescriptor *desc, json_t *obj)
{
    ProtobufCMessage *msg = calloc(1, desc->sizeof_message);
    protobuf_c_message_init(desc, msg);
    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value)
    {
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(desc, key);
        void *at = f ? (char *)msg + f->offset : NULL;
        int ok = f && f->label != PROTOBUF_C_LABEL_REPEATED;
        if (ok && f->type == PROTOBUF_C_TYPE_STRING && json_is_string(value)) {
            *(char **)at = strdup(json_string_value(value));
        } else if (ok && f->type == PROTOBUF_C_TYPE_BOOL && json_is_boolean(value)) {
            *(protobuf_c_boolean *)at = json_is_true(value);
        } else if (ok && f->type == PROTOBUF_C_TYPE_INT32 && json_is_integer(value)) {
            *(int32_t *)at = (int32_t)json_integer_value(value);
        } else if (ok && f->type == PROTOBUF_C_TYPE_INT64 && json_is_integer(value)) {
            *(int64_t *)at = json_integer_value(value);
        } else if (ok && f->type == PROTOBUF_C_TYPE_MESSAGE && json_is_object(value)) {
            ProtobufCMessage *sub = s_from_json(f->descriptor, value);
            ok = sub != NULL;
            *(ProtobufCMessage **)at = sub;
        } else
            ok = 0;
        if (!ok) {
            fprintf(stderr, "berth-probe: %s has no field '%s' of that kind\n", desc->short_name,
                    key);
            protobuf_c_message_free_unpacked(msg, NULL);
            return NULL;
        }
    }
    return msg;
}

/* The message as JSON: strings, numbers, booleans, nested and repeated fields. */
static json_t *s_to_json(const ProtobufCMessage *msg)
{
    json_t *out = json_object();
    const ProtobufCMessageDescriptor *desc = msg->descriptor;
    for (unsigned i = 0; i < desc->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &desc->fields[i];
        const char *at = (const char *)msg + f->offset;
        size_t n = 1;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            n = *(const size_t *)((const char *)msg + f->quantifier_offset);
            at = *(const char *const *)at;
        }
        json_t *list = json_array();
        for (size_t k = 0; k < n; k++) {
            json_t *v = NULL;
            switch (f->type) {
            case PROTOBUF_C_TYPE_STRING: {
                const char *str = ((const char *const *)at)[k];
                v = json_string(str ? str : "");
                break;
            }
            case PROTOBUF_C_TYPE_BOOL:
                v = json_boolean(((const protobuf_c_boolean *)at)[k]);
                break;
            case PROTOBUF_C_TYPE_INT32:
                v = json_integer(((const int32_t *)at)[k]);
                break;
            case PROTOBUF_C_TYPE_INT64:
                v = json_integer(((const int64_t *)at)[k]);
                break;
            case PROTOBUF_C_TYPE_UINT64:
                v = json_integer((json_int_t)((const uint64_t *)at)[k]);
                break;
            case PROTOBUF_C_TYPE_DOUBLE:
                v = json_real(((const double *)at)[k]);
                break;
            case PROTOBUF_C_TYPE_MESSAGE: {
                const ProtobufCMessage *sub = ((const ProtobufCMessage *const *)at)[k];
                v = sub ? s_to_json(sub) : json_null();
                break;
            }
            default:
                v = json_null(); /* bytes and enums: not shown */
            }
            json_array_append_new(list, v);
        }
        if (f->label == PROTOBUF_C_LABEL_REPEATED)
            json_object_set_new(out, f->name, list);
        else {
            json_object_set(out, f->name, json_array_get(list, 0));
            json_decref(list);
        }
    }
    return out;
}

/* Options of `send`: who the assertion states and how it is made. */
typedef struct {
    const char *user; /* NULL: no assertion at all */
    const char *role;
    const char *key_dir;    /* sign with DIR's assertion.key; NULL with self_made */
    int self_made;          /* sign with a fresh key of our own */
    int expired;            /* expired before it is sent */
    const char *action;     /* made for this type instead of the one sent */
    const char *signed_for; /* JSON: made for this body instead of the one sent */
} s_send_opts_t;

static int s_send_usage(void)
{
    fprintf(stderr, "usage: berth-probe send HOST:PORT SERVICE TYPE JSON [--as USER ROLE "
                    "[--key DIR | --self-made] [--expired] [--for TYPE] "
                    "[--signed-for JSON]]\n");
    return 2;
}

static int s_send(int argc, char **argv)
{
    char host[128];
    int port;
    if (argc < 6 || sscanf(argv[2], "%127[^:]:%d", host, &port) != 2)
        return s_send_usage();
    s_send_opts_t o = { 0 };
    for (int i = 6; i < argc; i++) {
        if (streq(argv[i], "--as") && i + 2 < argc) {
            o.user = argv[++i];
            o.role = argv[++i];
        } else if (streq(argv[i], "--key") && i + 1 < argc)
            o.key_dir = argv[++i];
        else if (streq(argv[i], "--self-made"))
            o.self_made = 1;
        else if (streq(argv[i], "--expired"))
            o.expired = 1;
        else if (streq(argv[i], "--for") && i + 1 < argc)
            o.action = argv[++i];
        else if (streq(argv[i], "--signed-for") && i + 1 < argc)
            o.signed_for = argv[++i];
        else
            return s_send_usage();
    }
    if (o.user && !o.key_dir == !o.self_made)
        return s_send_usage(); /* --as needs exactly one of --key and --self-made */
    const ProtobufCMessageDescriptor *desc = s_message(argv[4]);
    json_error_t jerr;
    json_t *fields = json_loads(argv[5], 0, &jerr);
    if (!desc || !json_is_object(fields)) {
        fprintf(stderr, "berth-probe: unknown type or JSON that is not an object\n");
        json_decref(fields);
        return 2;
    }
    ProtobufCMessage *msg = s_from_json(desc, fields);
    json_decref(fields);
    if (!msg)
        return 2;

    char request_id[UTIL_ID_LEN];
    util_uuid(request_id);
    assertion_t *signer = NULL;
    assertion_signed_t signed_;
    berth_error_t error = { 0 };
    if (o.user) {
        if (o.self_made) {
            uint8_t pk[ASSERTION_PUBLIC_LEN], sk[ASSERTION_SECRET_LEN];
            if (sodium_init() >= 0) {
                crypto_sign_keypair(pk, sk);
                signer = assertion_new(pk, sk);
            }
        } else
            signer = assertion_signer_new(o.key_dir, &error);
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(desc, "assertion");
        char *roles[] = { (char *)o.role };
        Berth__UserAssertion claims = BERTH__USER_ASSERTION__INIT;
        claims.user = (char *)o.user;
        claims.roles = roles;
        claims.n_roles = 1;
        claims.issued_ms = util_now_ms();
        claims.expires_ms = o.expired ? claims.issued_ms - 1000 : claims.issued_ms + 15000;
        claims.request_id = request_id;
        claims.action = (char *)(o.action ? o.action : desc->short_name);
        /* --signed-for: a genuine assertion made for another body (a replay). */
        json_t *other = o.signed_for ? json_loads(o.signed_for, 0, &jerr) : NULL;
        ProtobufCMessage *bound = json_is_object(other) ? s_from_json(desc, other) : NULL;
        json_decref(other);
        int signed_ok = signer && f && (bound || !o.signed_for) &&
                        assertion_sign(signer, &claims, bound ? bound : msg, &signed_) == 0;
        if (bound)
            protobuf_c_message_free_unpacked(bound, NULL);
        if (!signed_ok) {
            fprintf(stderr, "berth-probe: cannot sign an assertion for %s: %s\n", desc->short_name,
                    *error.message ? error.message : "no assertion field");
            assertion_destroy(&signer);
            protobuf_c_message_free_unpacked(msg, NULL);
            return 2;
        }
        *(Berth__SignedAssertion **)((char *)msg + f->offset) = &signed_.msg;
    }

    store_t *store = s_store(host, port);
    bus_client_t *client = s_client(store, NULL);
    Berth__Envelope *reply = NULL;
    int rc = client ? bus_client_call(client, argv[3], msg, request_id, 5000, &reply) : -1;
    json_t *out = NULL;
    if (rc == 0 && reply->error) {
        error_from_proto(&error, reply->error);
        json_t *details = json_object();
        for (size_t i = 0; i < error.n_details; i++)
            json_object_set_new(details, error.details[i].key, json_string(error.details[i].value));
        out = json_pack("{s:{s:s, s:s, s:o}}", "error", "code", error.code, "message",
                        error.message, "details", details);
    } else if (rc == 0) {
        const ProtobufCMessageDescriptor *answer = s_message(reply->type);
        ProtobufCMessage *body = answer ? envelope_body(reply, answer) : NULL;
        out = json_pack("{s:s, s:o}", "type", reply->type, "body",
                        body ? s_to_json(body) : json_null());
        if (body)
            protobuf_c_message_free_unpacked(body, NULL);
    }
    if (out) {
        char *text = json_dumps(out, JSON_COMPACT | JSON_SORT_KEYS);
        puts(text);
        free(text);
        json_decref(out);
    } else
        fprintf(stderr, "berth-probe: no answer from %s\n", argv[3]);
    if (reply)
        berth__envelope__free_unpacked(reply, NULL);
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(desc, "assertion");
    if (f && f->type == PROTOBUF_C_TYPE_MESSAGE)
        *(ProtobufCMessage **)((char *)msg + f->offset) = NULL; /* signed_ is on the stack */
    protobuf_c_message_free_unpacked(msg, NULL);
    assertion_destroy(&signer);
    bus_client_destroy(&client);
    store_destroy(&store);
    return out ? 0 : 1;
}

/* forge ENDPOINT KIND ARG...: one request of the kinds an attacker would forge, sent with
   the probe's certificate; what came back (or that nothing did) as JSON. */
static int s_forge(int argc, char **argv)
{
    const char *kind = argv[3];
    const char *arg = argc > 4 ? argv[4] : "";
    Berth__Resources cap = BERTH__RESOURCES__INIT;
    cap.vcpus = 8;
    cap.ram_mb = 16384;
    cap.disk_gb = 100;
    Berth__Host host = BERTH__HOST__INIT;
    host.id = host.name = (char *)arg;
    host.capacity = &cap;
    host.state = "UP";
    Berth__AgentHeartbeat hb = BERTH__AGENT_HEARTBEAT__INIT;
    hb.instance = "forged-agent";
    hb.endpoint = "tcp://127.0.0.1:9";
    hb.host = &host;
    hb.ttl_ms = 60000;
    Berth__AgentResult res = BERTH__AGENT_RESULT__INIT, *results[] = { &res };
    res.command = argc > 5 ? argv[5] : "";
    res.ok = 1;
    res.power_state = "RUNNING";
    Berth__AgentWork work = BERTH__AGENT_WORK__INIT;
    work.host = (char *)arg;
    work.instance = "forged-agent";
    Berth__GetSeed seed = BERTH__GET_SEED__INIT;
    seed.vm = (char *)arg;
    Berth__DecideRequest decide = BERTH__DECIDE_REQUEST__INIT;
    decide.id = (char *)arg;
    decide.approve = 1;
    decide.actor = "admin";
    Berth__DisposeVm dispose = BERTH__DISPOSE_VM__INIT;
    dispose.vm = (char *)arg;
    dispose.actor = "admin";
    Berth__CreateRequest request = BERTH__CREATE_REQUEST__INIT;
    request.template_ = "small";
    request.name = "forged";
    request.count = 1;
    request.owner = (char *)arg;
    Berth__GetUsage usage = BERTH__GET_USAGE__INIT;
    Berth__SelectHost select = BERTH__SELECT_HOST__INIT;
    select.vm = (char *)arg;
    select.flavor = &cap;
    const ProtobufCMessage *body = NULL;
    if (streq(kind, "heartbeat") && argc == 5)
        body = &hb.base;
    else if (streq(kind, "work") && argc == 5)
        body = &work.base;
    else if (streq(kind, "result") && argc == 6) {
        work.results = results;
        work.n_results = 1;
        body = &work.base;
    } else if (streq(kind, "seed") && argc == 5)
        body = &seed.base;
    else if (streq(kind, "decide") && argc == 5)
        body = &decide.base;
    else if (streq(kind, "dispose") && argc == 5)
        body = &dispose.base;
    else if (streq(kind, "request") && argc == 5)
        body = &request.base;
    else if (streq(kind, "usage") && argc == 4)
        body = &usage.base;
    else if (streq(kind, "select") && argc == 5)
        body = &select.base;
    if (!body) {
        fprintf(stderr, "usage: berth-probe forge ENDPOINT heartbeat HOST | work HOST | result HOST"
                        " CMD | seed VM | decide REQUEST | dispose VM | request OWNER | usage |"
                        " select VM\n");
        return 2;
    }
    bus_client_t *client = s_client(NULL, argv[2]);
    Berth__Envelope *reply = NULL;
    int rc = client ? bus_client_call(client, "", body, NULL, 3000, &reply) : -1;
    json_t *out;
    if (rc != 0)
        out = json_pack("{s:b}", "answered", 0);
    else if (reply->error)
        out = json_pack("{s:b, s:{s:s, s:s}}", "answered", 1, "error", "code", reply->error->code,
                        "message", reply->error->message);
    else
        out = json_pack("{s:b, s:n}", "answered", 1, "error");
    char *text = json_dumps(out, JSON_COMPACT);
    puts(text);
    free(text);
    json_decref(out);
    if (reply)
        berth__envelope__free_unpacked(reply, NULL);
    bus_client_destroy(&client);
    return rc == 0 ? 0 : 1;
}

/* The probe's certificate from the options; 0, or -1 (printed). */
static int s_load_auth(const char *secrets, const char *cert, char **tmp_p)
{
    if (!cert || streq(cert, "none"))
        return 0;
    if (!secrets) {
        fprintf(stderr, "berth-probe: --cert needs --secrets or BERTH_SECRETS_DIR\n");
        return -1;
    }
    char path[600];
    if (streq(cert, "new")) {
        /* A key pair the platform never issued: made in a directory of its own. */
        char tmpl[] = "/tmp/berth-probe-XXXXXX";
        if (!mkdtemp(tmpl) || bus_auth_make(tmpl, "intruder", "intruder", NULL, 0) != 0)
            return -1;
        *tmp_p = strdup(tmpl);
        snprintf(path, sizeof path, "%s/curve/intruder.key", tmpl);
        cert = path;
    }
    s_auth = bus_auth_new(secrets, cert);
    if (!s_auth)
        return -1;
    if (!s_server)
        s_server = strchr(cert, '/') ? bus_auth_service(s_auth) : cert;
    return 0;
}

/* Remove what "--cert new" made. */
static void s_remove_tmp(char *tmp)
{
    if (!tmp)
        return;
    char path[600];
    snprintf(path, sizeof path, "%s/curve/intruder.key", tmp);
    unlink(path);
    snprintf(path, sizeof path, "%s/curve/public/intruder.cert", tmp);
    unlink(path);
    snprintf(path, sizeof path, "%s/curve/public", tmp);
    rmdir(path);
    snprintf(path, sizeof path, "%s/curve", tmp);
    rmdir(path);
    rmdir(tmp);
    free(tmp);
}

static int s_command(int argc, char **argv);

int main(int argc, char **argv)
{
    log_set_level("error");
    const char *secrets = getenv("BERTH_SECRETS_DIR");
    const char *cert = getenv("BERTH_CURVE_CERT");
    static const struct option options[] = { { "secrets", required_argument, NULL, 's' },
                                             { "cert", required_argument, NULL, 'c' },
                                             { "server", required_argument, NULL, 'S' },
                                             { NULL, 0, NULL, 0 } };
    int opt;
    while ((opt = getopt_long(argc, argv, "+", options, NULL)) != -1) {
        if (opt == 's')
            secrets = optarg;
        else if (opt == 'c')
            cert = optarg;
        else if (opt == 'S')
            s_server = optarg;
        else
            return 2;
    }
    s_secrets = secrets;
    char *tmp = NULL;
    if (s_load_auth(secrets, cert, &tmp) != 0) {
        s_remove_tmp(tmp);
        return 1;
    }
    int rc = s_command(argc - optind + 1, argv + optind - 1);
    bus_auth_destroy(&s_auth);
    s_remove_tmp(tmp);
    return rc;
}

static int s_command(int argc, char **argv)
{
    if (argc == 3 && streq(argv[1], "ping")) {
        bus_client_t *client = s_client(NULL, argv[2]); /* no service named: whatever serves it */
        if (!client)
            return 1;
        json_t *instances = json_object();
        json_t *status = NULL;
        int rc = s_ping(client, "", instances, &status);
        if (rc == 0) {
            char *text = json_dumps(status, JSON_COMPACT);
            puts(text);
            free(text);
        }
        json_decref(status);
        json_decref(instances);
        bus_client_destroy(&client);
        return rc == 0 ? 0 : 1;
    }
    if ((argc == 5 || argc == 6) && streq(argv[1], "call")) {
        char host[128];
        int port;
        int64_t n, interval = 0;
        if (sscanf(argv[2], "%127[^:]:%d", host, &port) != 2 ||
            util_parse_int(argv[4], 1, 1000000, &n) != 0 ||
            (argc == 6 && util_parse_int(argv[5], 0, 60000, &interval) != 0)) {
            fprintf(stderr, "usage: berth-probe call HOST:PORT SERVICE N [INTERVAL_MS]\n");
            return 2;
        }
        store_t *store = s_store(host, port);
        bus_client_t *client = s_client(store, NULL);
        if (!client)
            return 1;
        json_t *instances = json_object();
        int answered = 0, failed = 0;
        for (int64_t i = 0; i < n && !zsys_interrupted; i++) {
            if (i > 0 && interval > 0)
                zclock_sleep((int)interval); /* a command-line pacing, not an event loop */
            s_ping(client, argv[3], instances, NULL) == 0 ? answered++ : failed++;
        }
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
    if (argc == 7 && streq(argv[1], "select"))
        return s_select(argv);
    if (argc >= 2 && streq(argv[1], "send"))
        return s_send(argc, argv);
    if (argc >= 4 && streq(argv[1], "forge"))
        return s_forge(argc, argv);
    fprintf(stderr, "usage: berth-probe [--secrets DIR] [--cert NAME|new|none] [--server NAME]"
                    " ping ENDPOINT | call HOST:PORT SERVICE N [INTERVAL_MS] | garbage ENDPOINT"
                    " | select HOST:PORT VM VCPUS RAM_MB DISK_GB | send HOST:PORT SERVICE TYPE"
                    " JSON [options] | forge ENDPOINT KIND ARG...\n");
    return 2;
}
