/*  calls: the bus actor. Submitted calls wait in a queue guarded by a mutex; an eventfd
    wakes the actor when the queue goes from empty to not empty, and the actor takes the
    whole queue at once. Each call is then started with bus_client_send and kept in a table
    of calls in flight (call id -> call) until its reply or deadline, so that stopping can end
    every one of them: no call is ever left without its end. */
#include "calls.h"
#include "log.h"

#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct _calls_t {
    zactor_t *actor;
    pthread_mutex_t lock;
    zlistx_t *queue; /* calls_call_t * submitted and not yet taken (under lock) */
    int stopped;     /* the actor is gone: calls end at once (under lock) */
    int wake_fd;     /* eventfd: the queue is not empty */
    char *redis_host;
    int redis_port;
    char *secrets_dir; /* where the Redis password is (NULL: none) */
    char *sender;
    bus_auth_t *auth; /* borrowed */
};

/* The actor's own state, on its thread. */
typedef struct {
    calls_t *calls;
    bus_client_t *bus;
    zhashx_t *flight; /* call id -> calls_call_t *, every call started and not ended */
} s_actor_t;

static void s_end(calls_call_t *call, Berth__Envelope *reply)
{
    call->reply = reply;
    call->done(call);
}

static void s_end_stopped(calls_call_t *call)
{
    call->stopped = 1;
    s_end(call, NULL);
}

static void s_on_reply(bus_client_t *client, const char *call_id, Berth__Envelope *reply, void *arg)
{
    (void)client;
    s_actor_t *a = arg;
    calls_call_t *call = zhashx_lookup(a->flight, call_id);
    if (!call) {
        if (reply)
            berth__envelope__free_unpacked(reply, NULL);
        return;
    }
    zhashx_delete(a->flight, call_id);
    s_end(call, reply);
}

/* Start one submitted call; it ends at once when it cannot even be sent. */
static void s_start(s_actor_t *a, calls_call_t *call)
{
    ProtobufCMessage *body =
        protobuf_c_message_unpack(call->type, NULL, call->body_len, call->body);
    char id[UTIL_ID_LEN];
    int rc = body ? bus_client_send(a->bus, call->service, body, call->request_id, call->timeout_ms,
                                    s_on_reply, a, id)
                  : -1;
    if (body)
        protobuf_c_message_free_unpacked(body, NULL);
    if (rc != 0) {
        log_warn(call->request_id, "bus call could not be sent", "{s:s}", "callee", call->service);
        s_end(call, NULL);
        return;
    }
    zhashx_insert(a->flight, id, call);
}

static int s_on_wake(zloop_t *loop, zmq_pollitem_t *item, void *arg)
{
    (void)loop;
    s_actor_t *a = arg;
    uint64_t n;
    if (read(item->fd, &n, sizeof n) < 0 && errno != EAGAIN)
        log_warn(NULL, "bus actor wake-up read failed", "{s:s}", "error", strerror(errno));
    pthread_mutex_lock(&a->calls->lock);
    zlistx_t *taken = a->calls->queue;
    a->calls->queue = zlistx_new();
    pthread_mutex_unlock(&a->calls->lock);
    for (calls_call_t *call = zlistx_first(taken); call; call = zlistx_next(taken))
        s_start(a, call);
    zlistx_destroy(&taken);
    return 0;
}

static int s_on_pipe(zloop_t *loop, zsock_t *pipe, void *arg)
{
    (void)loop;
    (void)arg;
    zmsg_t *msg = zmsg_recv(pipe);
    char *command = msg ? zmsg_popstr(msg) : NULL;
    int term = !command || streq(command, "$TERM");
    free(command);
    zmsg_destroy(&msg);
    return term ? -1 : 0;
}

static void s_actor(zsock_t *pipe, void *arg)
{
    calls_t *self = arg;
    s_actor_t a = { .calls = self, .flight = zhashx_new() };
    store_t *store = store_new(self->redis_host, self->redis_port, 1000, 1000);
    if (store && store_use_secrets(store, self->secrets_dir) != 0)
        store_destroy(&store);
    zloop_t *loop = zloop_new();
    a.bus = store ? bus_client_new(store, self->sender) : NULL;
    if (a.bus && self->auth)
        bus_client_secure(a.bus, self->auth);
    zmq_pollitem_t wake = { .fd = self->wake_fd, .events = ZMQ_POLLIN };
    int ok = a.flight && loop && a.bus;
    if (ok) {
        /* Stopped by $TERM only: a signal to the process is the service loop's business. */
        zloop_set_nonstop(loop, true);
        bus_client_attach(a.bus, loop);
        ok = zloop_reader(loop, pipe, s_on_pipe, &a) == 0 &&
             zloop_poller(loop, &wake, s_on_wake, &a) == 0;
    }
    if (!ok) {
        pthread_mutex_lock(&self->lock);
        self->stopped = 1; /* calls_new sees it */
        pthread_mutex_unlock(&self->lock);
    }
    zsock_signal(pipe, ok ? 0 : 1);
    if (ok)
        zloop_start(loop);
    /* Stop: nothing is taken from now on; every call waiting or in flight ends unanswered. */
    pthread_mutex_lock(&self->lock);
    self->stopped = 1;
    zlistx_t *left = self->queue;
    self->queue = zlistx_new();
    pthread_mutex_unlock(&self->lock);
    for (calls_call_t *call = zlistx_first(left); call; call = zlistx_next(left))
        s_end_stopped(call);
    zlistx_destroy(&left);
    if (a.flight) {
        for (calls_call_t *call = zhashx_first(a.flight); call; call = zhashx_next(a.flight))
            s_end_stopped(call);
        zhashx_destroy(&a.flight);
    }
    bus_client_destroy(&a.bus);
    zloop_destroy(&loop);
    store_destroy(&store);
}

calls_t *calls_new(const char *redis_host, int redis_port, const char *secrets_dir,
                   const char *sender, bus_auth_t *auth)
{
    calls_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    pthread_mutex_init(&self->lock, NULL);
    self->queue = zlistx_new();
    self->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    self->redis_host = strdup(redis_host);
    self->redis_port = redis_port;
    self->sender = strdup(sender);
    self->secrets_dir = secrets_dir ? strdup(secrets_dir) : NULL;
    self->auth = auth;
    if (self->queue && self->wake_fd >= 0 && self->redis_host && self->sender)
        self->actor = zactor_new(s_actor, self);
    if (!self->actor || self->stopped) {
        log_error(NULL, "cannot start the gateway's bus actor", NULL);
        calls_destroy(&self);
        return NULL;
    }
    return self;
}

void calls_stop(calls_t *self)
{
    if (self)
        zactor_destroy(&self->actor);
}

void calls_destroy(calls_t **self_p)
{
    if (self_p && *self_p) {
        calls_t *self = *self_p;
        calls_stop(self);
        zlistx_destroy(&self->queue);
        if (self->wake_fd >= 0)
            close(self->wake_fd);
        pthread_mutex_destroy(&self->lock);
        free(self->redis_host);
        free(self->secrets_dir);
        free(self->sender);
        free(self);
        *self_p = NULL;
    }
}

void calls_submit(calls_t *self, calls_call_t *call)
{
    pthread_mutex_lock(&self->lock);
    if (self->stopped || !self->queue) {
        pthread_mutex_unlock(&self->lock);
        s_end_stopped(call);
        return;
    }
    zlistx_add_end(self->queue, call);
    int first = zlistx_size(self->queue) == 1;
    pthread_mutex_unlock(&self->lock);
    /* The actor takes the whole queue per wake-up: only the first call needs to wake it. */
    uint64_t one = 1;
    if (first && write(self->wake_fd, &one, sizeof one) < 0)
        log_warn(call->request_id, "bus actor wake-up failed", "{s:s}", "error", strerror(errno));
}
