/*  bus_client: per-service DEALERs fed by the registry.

    Membership: the endpoints of a service are re-read from the registry at most once per
    REFRESH_MS, and always before a resend, so a call made just after an instance died or
    appeared sees the change. New endpoints are connected, vanished ones disconnected.
    ZMQ_IMMEDIATE keeps messages off connections that are not up, so a dead instance is
    skipped rather than buffered for.

    Calls: every call, waited for (bus_client_call) or not (bus_client_send), is an entry in
    one table of calls in flight keyed by message id. Until its deadline the same frame is
    resent every retry interval; a reply is matched to its call by correlation id (a reply
    to no call in flight is late, and dropped). A waited-for call polls its own dealer; calls
    not waited for are driven by the owner's zloop (bus_client_attach): a reader per dealer
    and a timer for resends and deadlines, and their callbacks run there, never inside
    another call.

    Wrong answerers: the registry can list a dead instance for up to its TTL, and its port
    may already belong to another process (CZMQ hands out ports from one range, so a
    service started a moment later often gets exactly that port). A reply whose sender is
    not of the target service therefore is discarded and the call goes on with a resend,
    which round-robins to another instance. Pinned targets are exempt: their caller chose
    the endpoints and may not know the service behind them. */
#include "bus_client.h"
#include "log.h"
#include "metrics.h"
#include "registry.h"
#include "util.h"

#include <assert.h>

#define REFRESH_MS 1000

typedef struct {
    zsock_t *dealer;
    zhashx_t *endpoints;  /* endpoint -> "" for what the dealer is connected to */
    int64_t refreshed_at; /* monotonic ms of the last registry read */
    int pinned;           /* endpoints came from bus_client_pin(), not the registry */
    char *service;        /* service stamped on requests (NULL: the target's own name) */
    int retry_ms;         /* resend interval for this target (0: the client's) */
} s_target_t;

/* One call in flight. */
typedef struct {
    char id[UTIL_ID_LEN]; /* message id: the same on every resend */
    char *service;
    char *request_id;
    const char *type;  /* body's message name (static) */
    zframe_t *frame;   /* the packed envelope, resent as is */
    int64_t deadline;  /* monotonic ms after which nobody waits */
    int64_t resend_at; /* monotonic ms of the next resend */
    int attempts;
    int64_t started_us; /* monotonic, for the call's time */
    bus_reply_fn *fn;   /* NULL for a call someone waits for */
    void *arg;
    Berth__Envelope *reply; /* the answer, once it came */
} s_call_t;

struct _bus_client_t {
    store_t *store; /* borrowed */
    char *sender;
    zhashx_t *targets; /* service -> s_target_t */
    zhashx_t *calls;   /* message id -> s_call_t, every call in flight */
    zloop_t *loop;     /* borrowed, once attached */
    bus_auth_t *auth;  /* borrowed; NULL: plain ZeroMQ */
    int retry_ms;
};

/* What every client counts (metrics.h): calls by target, type and end (OK, the error's code,
   or TIMEOUT), their time, and resends. Any thread (the gateway's workers call too). */
static struct {
    metrics_family_t *calls, *seconds, *resends;
} s_m;

static void s_metrics_declare(void)
{
    s_m.calls = metrics_counter("berth_bus_calls_total",
                                "Bus calls made, by target, message type and end (OK, the "
                                "error's code, or TIMEOUT)",
                                "target,type,code");
    s_m.seconds =
        metrics_histogram("berth_bus_call_seconds",
                          "Time from a bus call's start to its answer or deadline", "target,type");
    s_m.resends =
        metrics_counter("berth_bus_resends_total",
                        "Bus calls sent again, unanswered after a retry interval", "target");
}

static void s_call_free(void **item)
{
    s_call_t *c = *item;
    if (c) {
        zframe_destroy(&c->frame);
        if (c->reply)
            berth__envelope__free_unpacked(c->reply, NULL);
        free(c->service);
        free(c->request_id);
        free(c);
        *item = NULL;
    }
}

static void s_target_free(void **item)
{
    s_target_t *t = *item;
    if (t) {
        zsock_destroy(&t->dealer);
        zhashx_destroy(&t->endpoints);
        free(t->service);
        free(t);
        *item = NULL;
    }
}

bus_client_t *bus_client_new(store_t *store, const char *sender)
{
    bus_client_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    s_metrics_declare();
    self->store = store;
    self->sender = strdup(sender);
    self->targets = zhashx_new();
    self->calls = zhashx_new();
    self->retry_ms = 250;
    if (!self->sender || !self->targets || !self->calls) {
        bus_client_destroy(&self);
        return NULL;
    }
    zhashx_set_destructor(self->targets, s_target_free);
    zhashx_set_destructor(self->calls, s_call_free);
    return self;
}

void bus_client_destroy(bus_client_t **self_p)
{
    if (self_p && *self_p) {
        bus_client_t *self = *self_p;
        zhashx_destroy(&self->calls);
        zhashx_destroy(&self->targets);
        free(self->sender);
        free(self);
        *self_p = NULL;
    }
}

void bus_client_set_retry(bus_client_t *self, int retry_ms)
{
    self->retry_ms = retry_ms > 10 ? retry_ms : 10;
}

static int s_on_reader(zloop_t *loop, zsock_t *sock, void *arg);
static s_target_t *s_target(bus_client_t *self, const char *service);
static s_target_t *s_target_new(bus_client_t *self, const char *target, const char *server);

void bus_client_secure(bus_client_t *self, bus_auth_t *auth)
{
    assert(zhashx_size(self->targets) == 0);
    self->auth = auth;
}

int bus_client_set_server(bus_client_t *self, const char *target, const char *server)
{
    assert(!zhashx_lookup(self->targets, target));
    return s_target_new(self, target, server) ? 0 : -1;
}

void bus_client_set_target_retry(bus_client_t *self, const char *target, int retry_ms)
{
    s_target_t *t = s_target(self, target);
    if (t)
        t->retry_ms = retry_ms > 10 ? retry_ms : 10;
}

static s_target_t *s_target(bus_client_t *self, const char *service)
{
    s_target_t *t = zhashx_lookup(self->targets, service);
    return t ? t : s_target_new(self, service, service);
}

/* A new target, speaking CURVE to the key of server when the client is secure. */
static s_target_t *s_target_new(bus_client_t *self, const char *service, const char *server)
{
    s_target_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->dealer = zsock_new(ZMQ_DEALER);
    t->endpoints = zhashx_new();
    if (!t->dealer || !t->endpoints ||
        (self->auth && bus_auth_client(self->auth, t->dealer, server) != 0)) {
        void *item = t;
        s_target_free(&item);
        return NULL;
    }
    zsock_set_immediate(t->dealer, 1);
    zsock_set_linger(t->dealer, 0);
    zsock_set_maxmsgsize(t->dealer, ENVELOPE_MAX_BYTES);
    zsock_set_reconnect_ivl(t->dealer, 100);
    zsock_set_reconnect_ivl_max(t->dealer, 1000);
    t->refreshed_at = -REFRESH_MS;
    zhashx_insert(self->targets, service, t);
    if (self->loop)
        zloop_reader(self->loop, t->dealer, s_on_reader, self);
    return t;
}

/* Make the dealer's connections equal `wanted` (endpoint -> anything). */
static void s_apply(s_target_t *t, zhashx_t *wanted)
{
    zlistx_t *have = zhashx_keys(t->endpoints);
    for (char *ep = zlistx_first(have); ep; ep = zlistx_next(have))
        if (!zhashx_lookup(wanted, ep)) {
            zsock_disconnect(t->dealer, "%s", ep);
            zhashx_delete(t->endpoints, ep);
        }
    zlistx_destroy(&have);
    for (void *v = zhashx_first(wanted); v; v = zhashx_next(wanted)) {
        const char *ep = zhashx_cursor(wanted);
        if (!zhashx_lookup(t->endpoints, ep) && zsock_connect(t->dealer, "%s", ep) == 0)
            zhashx_insert(t->endpoints, ep, "");
    }
}

/* True when sender ("service/instance") belongs to service. */
static int s_sent_by(const char *sender, const char *service)
{
    size_t len = strlen(service);
    return strncmp(sender, service, len) == 0 && sender[len] == '/';
}

static void s_refresh(bus_client_t *self, const char *service, s_target_t *t, int force)
{
    if (t->pinned || !self->store)
        return;
    if (!force && util_mono_ms() - t->refreshed_at < REFRESH_MS)
        return;
    registry_entry_t *entries = NULL;
    size_t count = 0;
    if (registry_list(self->store, service, &entries, &count) != 0)
        return; /* Redis away: keep the connections we have */
    t->refreshed_at = util_mono_ms();
    zhashx_t *wanted = zhashx_new();
    for (size_t i = 0; i < count; i++)
        zhashx_update(wanted, entries[i].endpoint, "");
    free(entries);
    s_apply(t, wanted);
    zhashx_destroy(&wanted);
}

int bus_client_pin(bus_client_t *self, const char *service, const char *endpoints)
{
    return bus_client_pin_as(self, service, service, endpoints);
}

int bus_client_pin_as(bus_client_t *self, const char *target, const char *service,
                      const char *endpoints)
{
    s_target_t *t = zhashx_lookup(self->targets, target);
    if (!t)
        t = s_target_new(self, target, service);
    if (!t)
        return -1;
    t->pinned = 1;
    if (strcmp(target, service) != 0 && !t->service && !(t->service = strdup(service)))
        return -1;
    zhashx_t *wanted = zhashx_new();
    char *copy = strdup(endpoints);
    char *save = NULL;
    for (char *ep = strtok_r(copy, ", ", &save); ep; ep = strtok_r(NULL, ", ", &save))
        zhashx_update(wanted, ep, "");
    free(copy);
    s_apply(t, wanted);
    int n = (int)zhashx_size(wanted);
    zhashx_destroy(&wanted);
    return n > 0 ? 0 : -1;
}

int bus_client_instances(bus_client_t *self, const char *service)
{
    s_target_t *t = s_target(self, service);
    if (!t)
        return 0;
    s_refresh(self, service, t, 1);
    return (int)zhashx_size(t->endpoints);
}

static void s_resend(bus_client_t *self, s_call_t *c);

/* A call is over: with reply (NULL: its deadline passed). */
static void s_count(const s_call_t *c, const Berth__Envelope *reply)
{
    const char *code = !reply                               ? "TIMEOUT"
                       : reply->error && reply->error->code ? reply->error->code
                                                            : "OK";
    metrics_add(s_m.calls, 1, c->service, c->type, code);
    metrics_observe(s_m.seconds, (double)(zclock_usecs() - c->started_us) / 1e6, c->service,
                    c->type);
}

/* Start a call: pack it, enter it in the table, send the first attempt. */
static s_call_t *s_call_start(bus_client_t *self, const char *service, const ProtobufCMessage *body,
                              const char *request_id, int timeout_ms)
{
    s_target_t *t = s_target(self, service);
    if (!t)
        return NULL;
    s_refresh(self, service, t, 0);
    s_call_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    util_uuid(c->id);
    c->service = strdup(service);
    c->request_id = request_id ? strdup(request_id) : NULL;
    c->type = body->descriptor->short_name;
    c->started_us = zclock_usecs();
    c->deadline = util_mono_ms() + timeout_ms;
    envelope_spec_t spec = { .message_id = c->id,
                             .deadline_ms = util_now_ms() + timeout_ms,
                             .request_id = request_id,
                             .sender = self->sender,
                             .service = t->service ? t->service : service,
                             .body = body };
    c->frame = envelope_pack(&spec);
    if (!c->service || !c->frame || (request_id && !c->request_id)) {
        void *item = c;
        s_call_free(&item);
        return NULL;
    }
    zhashx_insert(self->calls, c->id, c);
    s_resend(self, c);
    return c;
}

/* Send (again) the same frame: a resend first re-reads the registry, so it reaches an
   instance that appeared since, and ZeroMQ round-robins it away from a dead one. */
static void s_resend(bus_client_t *self, s_call_t *c)
{
    s_target_t *t = s_target(self, c->service);
    if (!t)
        return;
    if (c->attempts > 0) {
        s_refresh(self, c->service, t, 1);
        metrics_add(s_m.resends, 1, c->service);
    }
    zframe_t *copy = zframe_dup(c->frame);
    /* DONTWAIT: with no instance connected there is nobody to queue for; wait and retry. */
    if (zframe_send(&copy, t->dealer, ZFRAME_DONTWAIT) != 0)
        zframe_destroy(&copy);
    c->attempts++;
    int64_t next = util_mono_ms() + (t->retry_ms ? t->retry_ms : self->retry_ms);
    c->resend_at = next < c->deadline ? next : c->deadline;
}

/* Read what is queued on sock and hand each reply to its call. Never blocks. */
static void s_receive(bus_client_t *self, zsock_t *sock)
{
    zmsg_t *msg;
    while ((msg = zmsg_recv_nowait(sock))) {
        zframe_t *data = zmsg_first(msg);
        Berth__Envelope *env = data && zmsg_size(msg) == 1
                                   ? envelope_unpack(zframe_data(data), zframe_size(data), NULL)
                                   : NULL;
        zmsg_destroy(&msg);
        if (!env)
            continue;
        s_call_t *c = zhashx_lookup(self->calls, env->correlation_id);
        s_target_t *t = c ? zhashx_lookup(self->targets, c->service) : NULL;
        if (c && !c->reply && t && (t->pinned || s_sent_by(env->sender, c->service))) {
            c->reply = env;
            continue;
        }
        if (c)
            log_debug(c->request_id, "reply from another service discarded", "{s:s, s:s}",
                      "service", c->service, "sender", env->sender);
        /* else a late reply to a call that is over */
        berth__envelope__free_unpacked(env, NULL);
    }
}

static void s_timed_out(s_call_t *c)
{
    log_debug(c->request_id, "bus call timed out", "{s:s, s:s, s:i}", "service", c->service, "type",
              c->type, "attempts", c->attempts);
}

/* Calls not waited for: hand answers and timeouts to their callbacks, resend the rest. */
static void s_drive(bus_client_t *self)
{
    int64_t now = util_mono_ms();
    zlistx_t *ids = zhashx_keys(self->calls);
    for (char *id = zlistx_first(ids); id; id = zlistx_next(ids)) {
        s_call_t *c = zhashx_lookup(self->calls, id);
        if (!c || !c->fn)
            continue;
        if (c->reply || now >= c->deadline) {
            Berth__Envelope *reply = c->reply;
            c->reply = NULL;
            bus_reply_fn *fn = c->fn;
            void *arg = c->arg;
            char call_id[UTIL_ID_LEN];
            memcpy(call_id, c->id, UTIL_ID_LEN);
            if (!reply)
                s_timed_out(c);
            s_count(c, reply);
            zhashx_delete(self->calls, id);
            fn(self, call_id, reply, arg);
        } else if (now >= c->resend_at)
            s_resend(self, c);
    }
    zlistx_destroy(&ids);
}

static int s_on_reader(zloop_t *loop, zsock_t *sock, void *arg)
{
    (void)loop;
    s_receive(arg, sock);
    s_drive(arg);
    return 0;
}

static int s_on_timer(zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    s_drive(arg);
    return 0;
}

void bus_client_attach(bus_client_t *self, zloop_t *loop)
{
    assert(!self->loop);
    self->loop = loop;
    for (s_target_t *t = zhashx_first(self->targets); t; t = zhashx_next(self->targets))
        zloop_reader(loop, t->dealer, s_on_reader, self);
    int tick = self->retry_ms / 5 > 10 ? self->retry_ms / 5 : 10;
    zloop_timer(loop, (size_t)tick, 0, s_on_timer, self);
}

int bus_client_send(bus_client_t *self, const char *service, const ProtobufCMessage *body,
                    const char *request_id, int timeout_ms, bus_reply_fn *fn, void *arg,
                    char id_out[UTIL_ID_LEN])
{
    assert(self && self->loop && service && body && fn);
    s_call_t *c = s_call_start(self, service, body, request_id, timeout_ms);
    if (!c)
        return -1;
    c->fn = fn;
    c->arg = arg;
    if (id_out)
        memcpy(id_out, c->id, UTIL_ID_LEN);
    return 0;
}

int bus_client_call(bus_client_t *self, const char *service, const ProtobufCMessage *body,
                    const char *request_id, int timeout_ms, Berth__Envelope **reply_p)
{
    assert(self && service && body && reply_p);
    s_call_t *c = s_call_start(self, service, body, request_id, timeout_ms);
    if (!c)
        return -1;
    s_target_t *t = zhashx_lookup(self->targets, service);
    zpoller_t *poller = zpoller_new(t->dealer, NULL);
    while (!c->reply && !zsys_interrupted) {
        int64_t now = util_mono_ms();
        if (now >= c->deadline)
            break;
        if (now >= c->resend_at)
            s_resend(self, c);
        int wait = (int)(c->resend_at - util_mono_ms());
        if (wait > 0 && zpoller_wait(poller, wait))
            s_receive(self, t->dealer);
    }
    zpoller_destroy(&poller);
    int rc = -1;
    s_count(c, c->reply);
    if (c->reply) {
        *reply_p = c->reply;
        c->reply = NULL;
        rc = 0;
    } else
        s_timed_out(c);
    zhashx_delete(self->calls, c->id);
    return rc;
}
