/*  bus_client: per-service DEALERs fed by the registry.

    Membership: the endpoints of a service are re-read from the registry at most once per
    REFRESH_MS, and always before a resend, so a call made just after an instance died or
    appeared sees the change. New endpoints are connected, vanished ones disconnected.
    ZMQ_IMMEDIATE keeps messages off connections that are not up, so a dead instance is
    skipped rather than buffered for.

    Retries: send, wait one retry interval for a reply whose correlation id is ours
    (discarding late replies to earlier calls), resend the same frame, until the deadline.

    Wrong answerers: the registry can list a dead instance for up to its TTL, and its port
    may already belong to another process (CZMQ hands out ports from one range, so a
    service started a moment later often gets exactly that port). A reply whose sender is
    not of the target service therefore is discarded and the call goes on with a resend,
    which round-robins to another instance. Pinned targets are exempt: their caller chose
    the endpoints and may not know the service behind them. */
#include "bus_client.h"
#include "log.h"
#include "registry.h"
#include "util.h"

#include <assert.h>

#define REFRESH_MS 1000

typedef struct {
    zsock_t *dealer;
    zhashx_t *endpoints;   /* endpoint -> "" for what the dealer is connected to */
    int64_t refreshed_at;  /* monotonic ms of the last registry read */
    int pinned;            /* endpoints came from bus_client_pin(), not the registry */
} s_target_t;

struct _bus_client_t {
    store_t *store;        /* borrowed */
    char *sender;
    zhashx_t *targets;     /* service -> s_target_t */
    int retry_ms;
};

static void s_target_free(void **item)
{
    s_target_t *t = *item;
    if (t) {
        zsock_destroy(&t->dealer);
        zhashx_destroy(&t->endpoints);
        free(t);
        *item = NULL;
    }
}

bus_client_t *bus_client_new(store_t *store, const char *sender)
{
    bus_client_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->store = store;
    self->sender = strdup(sender);
    self->targets = zhashx_new();
    self->retry_ms = 250;
    if (!self->sender || !self->targets) {
        bus_client_destroy(&self);
        return NULL;
    }
    zhashx_set_destructor(self->targets, s_target_free);
    return self;
}

void bus_client_destroy(bus_client_t **self_p)
{
    if (self_p && *self_p) {
        bus_client_t *self = *self_p;
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

static s_target_t *s_target(bus_client_t *self, const char *service)
{
    s_target_t *t = zhashx_lookup(self->targets, service);
    if (t)
        return t;
    t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->dealer = zsock_new(ZMQ_DEALER);
    t->endpoints = zhashx_new();
    if (!t->dealer || !t->endpoints) {
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
    s_target_t *t = s_target(self, service);
    if (!t)
        return -1;
    t->pinned = 1;
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

int bus_client_call(bus_client_t *self, const char *service, const ProtobufCMessage *body,
                    const char *request_id, int timeout_ms, Berth__Envelope **reply_p)
{
    assert(self && service && body && reply_p);
    s_target_t *t = s_target(self, service);
    if (!t)
        return -1;
    s_refresh(self, service, t, 0);

    char id[UTIL_ID_LEN];
    util_uuid(id);
    int64_t start = util_mono_ms();
    int64_t deadline = start + timeout_ms;
    envelope_spec_t spec = { .message_id = id,
                             .deadline_ms = util_now_ms() + timeout_ms,
                             .request_id = request_id,
                             .sender = self->sender,
                             .service = service,
                             .body = body };
    zframe_t *frame = envelope_pack(&spec);
    if (!frame)
        return -1;

    int rc = -1;
    int attempts = 0;
    zpoller_t *poller = zpoller_new(t->dealer, NULL);
    while (rc != 0) {
        int64_t now = util_mono_ms();
        if (now >= deadline)
            break;
        if (attempts > 0)
            s_refresh(self, service, t, 1);
        zframe_t *copy = zframe_dup(frame);
        /* DONTWAIT: with no instance connected there is nobody to queue for; wait and retry. */
        if (zframe_send(&copy, t->dealer, ZFRAME_DONTWAIT) != 0)
            zframe_destroy(&copy);
        attempts++;
        int64_t resend_at = now + self->retry_ms < deadline ? now + self->retry_ms : deadline;
        while (rc != 0) {
            int wait = (int)(resend_at - util_mono_ms());
            if (wait <= 0)
                break;
            if (!zpoller_wait(poller, wait))
                break;
            zmsg_t *msg = zmsg_recv(t->dealer);
            if (!msg)
                break;
            zframe_t *data = zmsg_first(msg);
            Berth__Envelope *env = data && zmsg_size(msg) == 1
                                       ? envelope_unpack(zframe_data(data), zframe_size(data), NULL)
                                       : NULL;
            zmsg_destroy(&msg);
            int ours = env && streq(env->correlation_id, id);
            if (ours && (t->pinned || s_sent_by(env->sender, service))) {
                *reply_p = env;
                rc = 0;
            } else if (env) {
                if (ours)
                    log_debug(request_id, "reply from another service discarded",
                              "{s:s, s:s}", "service", service, "sender", env->sender);
                /* else a late reply to an older call */
                berth__envelope__free_unpacked(env, NULL);
            }
        }
        if (zsys_interrupted)
            break;
    }
    zpoller_destroy(&poller);
    zframe_destroy(&frame);
    if (rc != 0)
        log_debug(request_id, "bus call timed out", "{s:s, s:s, s:i, s:i}", "service", service,
                  "type", body->descriptor->short_name, "attempts", attempts, "timeout_ms",
                  timeout_ms);
    return rc;
}
