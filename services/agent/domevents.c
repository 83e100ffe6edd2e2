/*  domevents: libvirt domain lifecycle events on a thread of their own, as nudges for the
    agent's loop (see domevents.h).

    The thread runs virEventRunDefaultImpl in a loop; libvirt calls s_on_event on that thread
    for each lifecycle event of the connection's domains, and it pushes a nudge (the domain's
    name) to the agent. The actor's pipe is watched by libvirt's loop itself through the
    socket's file descriptor (ZeroMQ signals it edge-style: every wake drains the pipe), so
    $TERM ends the loop without a timer. */
#include "domevents.h"
#include "log.h"
#include "util.h"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

struct _domevents_t {
    zactor_t *actor;
    zsock_t *in; /* PULL: nudges from the thread */
    char endpoint[64];
    char uri[512];
};

typedef struct {
    domevents_t *owner;
    zsock_t *pipe;
    zsock_t *out; /* PUSH to owner->in */
    int stop;
} s_loop_t;

int domevents_init(void)
{
    if (virInitialize() != 0 || virEventRegisterDefaultImpl() != 0) {
        log_error(NULL, "cannot register libvirt's event loop", NULL);
        return -1;
    }
    return 0;
}

static int s_on_event(virConnectPtr conn, virDomainPtr dom, int event, int detail, void *opaque)
{
    (void)conn;
    s_loop_t *loop = opaque;
    const char *name = virDomainGetName(dom);
    log_debug(NULL, "domain event", "{s:s, s:i, s:i}", "domain", name ? name : "?", "event", event,
              "detail", detail);
    zstr_send(loop->out, name ? name : "");
    return 0;
}

/* The pipe's descriptor is readable: drain it; $TERM stops the loop. */
static void s_on_pipe(int watch, int fd, int events, void *opaque)
{
    (void)watch;
    (void)fd;
    (void)events;
    s_loop_t *loop = opaque;
    while (zsock_events(loop->pipe) & ZMQ_POLLIN) {
        char *verb = zstr_recv(loop->pipe);
        if (!verb || streq(verb, "$TERM"))
            loop->stop = 1;
        free(verb);
        if (loop->stop)
            break;
    }
}

static void s_thread(zsock_t *pipe, void *args)
{
    domevents_t *self = args;
    s_loop_t loop = { .owner = self, .pipe = pipe };
    loop.out = zsock_new_push(self->endpoint);
    virConnectPtr conn = virConnectOpen(self->uri);
    int callback = -1;
    if (conn)
        callback =
            virConnectDomainEventRegisterAny(conn, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                             VIR_DOMAIN_EVENT_CALLBACK(s_on_event), &loop, NULL);
    if (callback < 0) {
        virErrorPtr e = virGetLastError();
        log_warn(NULL, "no libvirt domain events: the inventory is watched by snapshots only",
                 "{s:s, s:s}", "uri", self->uri, "reason", e && e->message ? e->message : "?");
    } else
        log_info(NULL, "watching libvirt domain events", "{s:s}", "uri", self->uri);
    int watch =
        virEventAddHandle(zsock_fd(pipe), VIR_EVENT_HANDLE_READABLE, s_on_pipe, &loop, NULL);
    zsock_signal(pipe, 0);
    s_on_pipe(watch, zsock_fd(pipe), 0, &loop); /* edge-style: anything already there */
    while (!loop.stop && watch >= 0 && loop.out)
        if (virEventRunDefaultImpl() < 0)
            break;
    if (watch >= 0)
        virEventRemoveHandle(watch);
    if (callback >= 0)
        virConnectDomainEventDeregisterAny(conn, callback);
    if (conn)
        virConnectClose(conn);
    zsock_destroy(&loop.out);
    /* An early end (no handle): wait for $TERM as an actor must. */
    while (!loop.stop) {
        char *verb = zstr_recv(pipe);
        loop.stop = !verb || streq(verb, "$TERM");
        free(verb);
    }
}

domevents_t *domevents_new(const char *uri)
{
    domevents_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    snprintf(self->endpoint, sizeof self->endpoint, "inproc://domevents-%p", (void *)self);
    snprintf(self->uri, sizeof self->uri, "%s", uri ? uri : "");
    self->in = zsock_new_pull(self->endpoint);
    self->actor = self->in ? zactor_new(s_thread, self) : NULL;
    if (!self->actor) {
        log_error(NULL, "cannot start the domain events thread", NULL);
        domevents_destroy(&self);
        return NULL;
    }
    return self;
}

void domevents_destroy(domevents_t **self_p)
{
    if (self_p && *self_p) {
        domevents_t *self = *self_p;
        zactor_destroy(&self->actor);
        zsock_destroy(&self->in);
        free(self);
        *self_p = NULL;
    }
}

zsock_t *domevents_socket(domevents_t *self)
{
    return self->in;
}

int domevents_recv(domevents_t *self)
{
    int n = 0;
    while (zsock_events(self->in) & ZMQ_POLLIN) {
        char *name = zstr_recv(self->in);
        free(name);
        n++;
    }
    return n;
}
