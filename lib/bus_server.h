/*  bus_server: the ROUTER side of the bus. One per service instance: binds an endpoint,
    validates every frame, dispatches by envelope type through a handler table, and answers
    retries of an already-answered message id from a reply cache (at-least-once delivery
    made idempotent at the edge). */
#ifndef BERTH_BUS_SERVER_H
#define BERTH_BUS_SERVER_H

#include "bus_auth.h"
#include "envelope.h"

#include <czmq.h>

typedef struct _bus_server_t bus_server_t;
typedef struct _bus_request_t bus_request_t;

/* Handle one request; must answer with bus_reply() or bus_reply_error() exactly once, or
   keep it with bus_request_defer() and answer it later from the same loop. */
typedef void(bus_handler_fn)(bus_request_t *request, void *arg);

/* Bind a ROUTER at endpoint ("tcp://127.0.0.1:*" picks a free port). sender is
   "service/instance", stamped on replies. NULL (logged) if the bind fails. */
bus_server_t *bus_server_new(const char *endpoint, const char *sender);

/* The same as a CURVE server (bus_auth.h): only callers whose key is in the platform's store
   connect at all, and each handler sees who calls and refuses callers it does not accept.
   auth is borrowed and must outlive the server. Every service binds this way; a server
   without auth (unit tests, the bench's baseline) knows no callers and checks none. */
bus_server_t *bus_server_new_curve(const char *endpoint, const char *sender, bus_auth_t *auth);
void bus_server_destroy(bus_server_t **self_p);

/* The endpoint actually bound (with the port resolved). */
const char *bus_server_endpoint(bus_server_t *self);

/* The socket, for the owner's poll loop; call bus_server_recv() when it is readable. */
zsock_t *bus_server_socket(bus_server_t *self);

/* Route requests of `type` to fn, from callers only: the services allowed to send it,
   separated by spaces ("gateway", "taskmgr agent"), or "*" for any caller the store admits.
   Others get a FORBIDDEN error before fn runs. A type without a handler gets UNKNOWN_TYPE. */
void bus_server_on(bus_server_t *self, const char *type, const char *callers, bus_handler_fn *fn,
                   void *arg);

/* Receive and handle one message (never blocks past what is queued). */
void bus_server_recv(bus_server_t *self);

/* Counters, for status and tests. */
uint64_t bus_server_handled(bus_server_t *self);
uint64_t bus_server_rejected(bus_server_t *self);

/* ---- inside a handler ---- */
const Berth__Envelope *bus_request_envelope(bus_request_t *request);
/* Who sent the request (the certificate's service and, for an agent, host), as the CURVE
   handshake proved it; NULL on a server without CURVE. */
const bus_caller_t *bus_request_caller(bus_request_t *request);
/* The body as desc's message or NULL (then reply BAD_REQUEST). Freed with the request. */
void *bus_request_body(bus_request_t *request, const ProtobufCMessageDescriptor *desc);
/* The body bus_request_body parsed, or NULL before it did (or when it did not parse). */
const ProtobufCMessage *bus_request_parsed(bus_request_t *request);
void bus_reply(bus_request_t *request, const ProtobufCMessage *body);
void bus_reply_error(bus_request_t *request, const char *code, const char *message);
/* The same with the details of error (the platform's one error type, lib/error.h). */
void bus_reply_fault(bus_request_t *request, const berth_error_t *error);

/* Keep a request to answer later (a parked poll, work done off the loop): returns the kept
   request, which the caller answers with bus_reply()/bus_reply_error() on the server's loop
   and then frees with bus_request_destroy(). Resends of its message id meanwhile are not run
   again. NULL when out of memory (the request is then still the handler's to answer). */
bus_request_t *bus_request_defer(bus_request_t *request);

/* Free a kept request, answered or not (an unanswered one is simply dropped: the caller
   resends or gives up at its deadline). Safe after the server is gone. */
void bus_request_destroy(bus_request_t **request_p);

/* Requests kept and not answered yet. */
size_t bus_server_deferred(bus_server_t *self);

#endif
