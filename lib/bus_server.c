/*  bus_server: ROUTER socket, handler table, reply cache.

    Frames are [identity][envelope]. Anything else, or an envelope that fails validation,
    is answered with a BAD_FRAME error (when there is someone to answer) and counted; the
    first rejection and then one per thousand are logged, so a flood cannot flood the log.

    Retries: a caller that timed out resends with the same message id. If this instance
    already answered it, the cached reply is sent again instead of running the handler
    twice. The cache holds two generations that rotate every REPLY_CACHE_MS, which bounds
    both its age and its size without per-entry timers.

    Deferred replies: a handler that cannot answer yet (a parked poll, work handed to a
    thread) keeps the request with bus_request_defer() and answers later from the loop. While
    it is unanswered its message id is in `deferred`, so a resend of it is not run again:
    it only refreshes the route the answer takes. */
#include "bus_server.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#include <assert.h>

#define REPLY_CACHE_MS  30000 /* a reply stays replayable for 30 to 60 s */
#define REPLY_CACHE_MAX 20000 /* entries per generation before an early rotation */

typedef struct {
    bus_handler_fn *fn;
    void *arg;
    char *callers; /* who may send it: service names, or "*" */
} s_handler_t;

struct _bus_server_t {
    zsock_t *router;
    char *endpoint;      /* bound endpoint, port resolved */
    char *sender;        /* "service/instance" */
    bus_auth_t *auth;    /* borrowed; NULL: no CURVE, no callers known */
    zhashx_t *handlers;  /* type -> s_handler_t */
    zhashx_t *cache_now; /* message id -> zframe_t reply */
    zhashx_t *cache_old; /* previous generation */
    zhashx_t *deferred;  /* message id -> bus_request_t kept by a handler, not answered yet */
    int64_t rotated_at;  /* monotonic ms of the last rotation */
    uint64_t handled;
    uint64_t rejected;
    uint64_t forbidden; /* requests refused for their caller */
};

struct _bus_request_t {
    bus_server_t *server;
    zframe_t *identity;
    Berth__Envelope *envelope;
    ProtobufCMessage *body; /* unpacked on demand */
    int replied;
    int deferred;        /* kept by its handler (heap copy, listed in server->deferred) */
    int known;           /* caller is set (a CURVE server) */
    bus_caller_t caller; /* from the handshake's metadata */
    char key[256];       /* "service/host/message id": the caller's own id space */
    const char *label;   /* the type as metrics name it: "unknown" when no handler has it */
    int64_t received_us; /* monotonic, for the handling time */
};

/* What every server counts (metrics.h): requests by type and answer, their handling time
   (to the reply, a kept request's included), frames refused, requests dropped late. */
static struct {
    metrics_family_t *requests, *seconds, *rejected, *expired;
} s_m;

static void s_metrics_declare(void)
{
    s_m.requests = metrics_counter("berth_bus_requests_total",
                                   "Bus requests answered, by message type and code (OK or "
                                   "the error's)",
                                   "type,code");
    s_m.seconds = metrics_histogram("berth_bus_request_seconds",
                                    "Time from a bus request's arrival to its answer", "type");
    s_m.rejected =
        metrics_counter("berth_bus_rejected_total", "Bus frames refused as malformed", NULL);
    s_m.expired = metrics_counter("berth_bus_expired_total",
                                  "Bus requests dropped unanswered, past their deadline", NULL);
}

static void s_handler_free(void **item)
{
    s_handler_t *h = *item;
    if (h) {
        free(h->callers);
        free(h);
        *item = NULL;
    }
}

static void s_frame_free(void **item)
{
    zframe_destroy((zframe_t **)item);
}

static zhashx_t *s_cache_new(void)
{
    zhashx_t *cache = zhashx_new();
    if (cache)
        zhashx_set_destructor(cache, s_frame_free);
    return cache;
}

bus_server_t *bus_server_new(const char *endpoint, const char *sender)
{
    return bus_server_new_curve(endpoint, sender, NULL);
}

bus_server_t *bus_server_new_curve(const char *endpoint, const char *sender, bus_auth_t *auth)
{
    bus_server_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    s_metrics_declare();
    self->auth = auth;
    self->sender = strdup(sender);
    self->handlers = zhashx_new();
    self->cache_now = s_cache_new();
    self->cache_old = s_cache_new();
    self->deferred = zhashx_new();
    self->router = zsock_new(ZMQ_ROUTER);
    if (!self->sender || !self->handlers || !self->cache_now || !self->cache_old ||
        !self->deferred || !self->router) {
        bus_server_destroy(&self);
        return NULL;
    }
    zhashx_set_destructor(self->handlers, s_handler_free);
    zsock_set_maxmsgsize(self->router, ENVELOPE_MAX_BYTES);
    zsock_set_linger(self->router, 0);
    zsock_set_router_mandatory(self->router, 0);
    if (auth && bus_auth_server(auth, self->router) != 0) {
        bus_server_destroy(&self);
        return NULL;
    }
    if (zsock_bind(self->router, "%s", endpoint) < 0) {
        log_error(NULL, "cannot bind bus endpoint", "{s:s, s:s}", "endpoint", endpoint, "reason",
                  zmq_strerror(zmq_errno()));
        bus_server_destroy(&self);
        return NULL;
    }
    self->endpoint = zsock_last_endpoint(self->router);
    self->rotated_at = util_mono_ms();
    return self;
}

void bus_server_destroy(bus_server_t **self_p)
{
    if (self_p && *self_p) {
        bus_server_t *self = *self_p;
        /* Requests still deferred outlive the server: their answers go nowhere. */
        if (self->deferred)
            for (bus_request_t *r = zhashx_first(self->deferred); r;
                 r = zhashx_next(self->deferred))
                r->server = NULL;
        zhashx_destroy(&self->deferred);
        zsock_destroy(&self->router);
        zhashx_destroy(&self->handlers);
        zhashx_destroy(&self->cache_now);
        zhashx_destroy(&self->cache_old);
        zstr_free(&self->endpoint);
        free(self->sender);
        free(self);
        *self_p = NULL;
    }
}

const char *bus_server_endpoint(bus_server_t *self)
{
    return self->endpoint;
}

zsock_t *bus_server_socket(bus_server_t *self)
{
    return self->router;
}

uint64_t bus_server_handled(bus_server_t *self)
{
    return self->handled;
}

uint64_t bus_server_rejected(bus_server_t *self)
{
    return self->rejected;
}

void bus_server_on(bus_server_t *self, const char *type, const char *callers, bus_handler_fn *fn,
                   void *arg)
{
    s_handler_t *h = malloc(sizeof *h);
    assert(h && callers);
    h->fn = fn;
    h->arg = arg;
    h->callers = strdup(callers);
    assert(h->callers);
    zhashx_update(self->handlers, type, h);
}

static void s_send(bus_server_t *self, zframe_t *identity, zframe_t *reply)
{
    zmsg_t *msg = zmsg_new();
    zmsg_append(msg, &identity);
    zmsg_append(msg, &reply);
    zmsg_send(&msg, self->router);
}

static void s_reject(bus_server_t *self, zframe_t *identity, const char *reason)
{
    self->rejected++;
    metrics_add(s_m.rejected, 1);
    if (self->rejected % 1000 == 1)
        log_warn(NULL, "rejected bad frame", "{s:s, s:I}", "reason", reason, "rejected_total",
                 (json_int_t)self->rejected);
    if (!identity)
        return;
    char id[UTIL_ID_LEN];
    util_uuid(id);
    envelope_spec_t spec = {
        .message_id = id, .sender = self->sender, .error_code = "BAD_FRAME", .error_message = reason
    };
    zframe_t *reply = envelope_pack(&spec);
    if (reply)
        s_send(self, zframe_dup(identity), reply);
}

static void s_rotate(bus_server_t *self)
{
    if (util_mono_ms() - self->rotated_at < REPLY_CACHE_MS &&
        zhashx_size(self->cache_now) < REPLY_CACHE_MAX)
        return;
    zhashx_destroy(&self->cache_old);
    self->cache_old = self->cache_now;
    self->cache_now = s_cache_new();
    self->rotated_at = util_mono_ms();
}

static void s_answer(bus_request_t *req, const ProtobufCMessage *body, const char *code,
                     const char *message, const berth_error_t *error)
{
    assert(!req->replied);
    req->replied = 1;
    bus_server_t *self = req->server;
    if (!self)
        return; /* deferred past the server's end */
    if (req->deferred)
        zhashx_delete(self->deferred, req->key);
    char id[UTIL_ID_LEN];
    util_uuid(id);
    envelope_spec_t spec = { .message_id = id,
                             .correlation_id = req->envelope->message_id,
                             .request_id = req->envelope->request_id,
                             .sender = self->sender,
                             .body = body,
                             .error_code = code,
                             .error_message = message,
                             .error = error };
    zframe_t *reply = envelope_pack(&spec);
    if (!reply) {
        spec.body = NULL;
        spec.error = NULL;
        spec.error_code = "INTERNAL";
        spec.error_message = "reply could not be encoded";
        reply = envelope_pack(&spec);
    }
    if (!reply)
        return;
    const char *answer = code ? code : error ? error->code : "OK";
    metrics_add(s_m.requests, 1, req->label, answer);
    metrics_observe(s_m.seconds, (double)(zclock_usecs() - req->received_us) / 1e6, req->label);
    s_rotate(self);
    zhashx_update(self->cache_now, req->key, zframe_dup(reply));
    s_send(self, zframe_dup(req->identity), reply);
}

void bus_reply(bus_request_t *request, const ProtobufCMessage *body)
{
    s_answer(request, body, NULL, NULL, NULL);
}

void bus_reply_error(bus_request_t *request, const char *code, const char *message)
{
    s_answer(request, NULL, code, message, NULL);
}

void bus_reply_fault(bus_request_t *request, const berth_error_t *error)
{
    s_answer(request, NULL, NULL, NULL, error);
}

const Berth__Envelope *bus_request_envelope(bus_request_t *request)
{
    return request->envelope;
}

const bus_caller_t *bus_request_caller(bus_request_t *request)
{
    return request->known ? &request->caller : NULL;
}

void *bus_request_body(bus_request_t *request, const ProtobufCMessageDescriptor *desc)
{
    if (!request->body)
        request->body = envelope_body(request->envelope, desc);
    return request->body;
}

const ProtobufCMessage *bus_request_parsed(bus_request_t *request)
{
    return request->body;
}

bus_request_t *bus_request_defer(bus_request_t *request)
{
    assert(!request->replied && !request->deferred);
    bus_request_t *kept = calloc(1, sizeof *kept);
    if (!kept)
        return NULL;
    *kept = *request;
    kept->deferred = 1;
    if (zhashx_insert(request->server->deferred, kept->key, kept) != 0) {
        free(kept);
        return NULL;
    }
    /* The copy owns identity, envelope and body now; the loop's request is spent. */
    request->identity = NULL;
    request->envelope = NULL;
    request->body = NULL;
    request->replied = 1;
    return kept;
}

void bus_request_destroy(bus_request_t **request_p)
{
    if (request_p && *request_p) {
        bus_request_t *r = *request_p;
        assert(r->deferred);
        if (!r->replied && r->server)
            zhashx_delete(r->server->deferred, r->key);
        if (r->body)
            protobuf_c_message_free_unpacked(r->body, NULL);
        berth__envelope__free_unpacked(r->envelope, NULL);
        zframe_destroy(&r->identity);
        free(r);
        *request_p = NULL;
    }
}

size_t bus_server_deferred(bus_server_t *self)
{
    return zhashx_size(self->deferred);
}

/* A caller the handler does not accept: refused before the handler (and Redis) sees it,
   logged like bad frames, first and then one per thousand. */
static void s_forbid(bus_server_t *self, bus_request_t *req, const char *callers)
{
    self->forbidden++;
    if (self->forbidden % 1000 == 1)
        log_warn(req->envelope->request_id, "refused a caller", "{s:s, s:s, s:s, s:s, s:I}", "type",
                 req->envelope->type, "caller", req->caller.service, "host", req->caller.host,
                 "accepts", callers, "forbidden_total", (json_int_t)self->forbidden);
    berth_error_t error;
    error_set(&error, "FORBIDDEN", "%s may not send %s", req->caller.service, req->envelope->type);
    bus_reply_fault(req, &error);
}

/* A request names the service it is meant for; none named means any. */
static int s_meant_for_us(bus_server_t *self, const char *service)
{
    size_t len = strlen(service);
    return len == 0 || (strncmp(self->sender, service, len) == 0 && self->sender[len] == '/');
}

void bus_server_recv(bus_server_t *self)
{
    zmsg_t *msg = zmsg_recv_nowait(self->router);
    if (!msg)
        return;
    zframe_t *identity = zmsg_pop(msg);
    zframe_t *frame = zmsg_pop(msg);
    const char *reason = NULL;
    Berth__Envelope *env = NULL;
    bus_caller_t caller = { "", "" };
    if (!frame || zmsg_size(msg) != 0)
        reason = "expected exactly one envelope frame";
    else if (self->auth && bus_auth_caller(frame, &caller) != 0)
        reason = "no caller identity on a CURVE connection";
    else
        env = envelope_unpack(zframe_data(frame), zframe_size(frame), &reason);
    zmsg_destroy(&msg);
    zframe_destroy(&frame);
    if (!env) {
        s_reject(self, identity, reason);
        zframe_destroy(&identity);
        return;
    }
    /* Message ids are the caller's: replies and kept requests are filed under the caller
       too, so a caller who learns or guesses another's id can neither fetch its reply nor
       poison it with one of its own (a FORBIDDEN, say). */
    char key[sizeof((bus_request_t *)0)->key];
    snprintf(key, sizeof key, "%s/%s/%s", caller.service, caller.host, env->message_id);
    /* A retry of something already answered: replay, do not re-run. */
    zframe_t *cached = zhashx_lookup(self->cache_now, key);
    if (!cached)
        cached = zhashx_lookup(self->cache_old, key);
    if (cached) {
        s_send(self, identity, zframe_dup(cached));
        berth__envelope__free_unpacked(env, NULL);
        return;
    }
    /* A resend of a request a handler keeps: answer it on the route it came by last. */
    bus_request_t *kept = zhashx_lookup(self->deferred, key);
    if (kept) {
        zframe_destroy(&kept->identity);
        kept->identity = identity;
        berth__envelope__free_unpacked(env, NULL);
        return;
    }
    s_handler_t *h = zhashx_lookup(self->handlers, env->type);
    bus_request_t req = { .server = self,
                          .identity = identity,
                          .envelope = env,
                          .known = self->auth != NULL,
                          .label = h ? env->type : "unknown",
                          .received_us = zclock_usecs() };
    req.caller = caller;
    memcpy(req.key, key, sizeof key);
    if (env->deadline_ms && env->deadline_ms < util_now_ms()) {
        metrics_add(s_m.expired, 1);
        log_debug(env->request_id, "dropped request past its deadline", "{s:s}", "type", env->type);
    } else if (!s_meant_for_us(self, env->service)) {
        /* A caller that still lists a dead instance whose port we now hold. */
        bus_reply_error(&req, "WRONG_SERVICE", "this endpoint serves another service");
    } else {
        if (h && req.known && !bus_auth_allows(h->callers, &caller))
            s_forbid(self, &req, h->callers);
        else if (h)
            h->fn(&req, h->arg);
        else
            bus_reply_error(&req, "UNKNOWN_TYPE", "no handler for this message type");
        if (!req.replied)
            bus_reply_error(&req, "INTERNAL", "handler gave no reply");
        self->handled++;
    }
    if (req.body)
        protobuf_c_message_free_unpacked(req.body, NULL);
    if (req.envelope)
        berth__envelope__free_unpacked(req.envelope, NULL);
    zframe_destroy(&req.identity);
}
