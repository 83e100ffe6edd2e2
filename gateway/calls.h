/*  calls: the gateway's bus actor. One thread owns the gateway's bus client on its own loop;
    HTTP worker threads hand it calls (calls_submit, thread-safe, never blocks) and go on
    serving other connections; each call ends exactly once, on the actor's thread, with the
    service's reply or with none when its deadline passed. */
#ifndef BERTH_GATEWAY_CALLS_H
#define BERTH_GATEWAY_CALLS_H

#include "bus_client.h"

typedef struct _calls_t calls_t;
typedef struct _calls_call_t calls_call_t;

/* How a call ends: call->reply is set (or NULL). Runs on the actor's thread (or, once the
   actor has stopped, on the submitter's); the call's memory is its owner's again. */
typedef void(calls_done_fn)(calls_call_t *call);

struct _calls_call_t {
    /* asked (set by the submitter, read by the actor) */
    const char *service;                    /* static string */
    const ProtobufCMessageDescriptor *type; /* the body's message type */
    uint8_t *body;                          /* the body, packed */
    size_t body_len;
    char request_id[UTIL_ID_LEN];
    int timeout_ms;
    calls_done_fn *done;
    /* answered */
    Berth__Envelope *reply; /* the callee's (may carry ->error), NULL: none before the deadline */
    int stopped;            /* ended unanswered because the actor stopped */
};

/* Start the actor: its own Redis connection (to find instances) and bus client stamping
   sender and speaking CURVE with auth's certificate (borrowed; NULL: plain ZeroMQ). NULL
   (logged) on failure. */
calls_t *calls_new(const char *redis_host, int redis_port, const char *secrets_dir,
                   const char *sender, bus_auth_t *auth);
/* End every call in flight (no reply) and the actor; calls submitted afterwards end at once.
   The calls_t stays valid for those until calls_destroy. */
void calls_stop(calls_t *self);
void calls_destroy(calls_t **self_p);

/* Hand call to the actor; from any thread. It ends later through call->done (at once,
   from this thread, when the actor has stopped). */
void calls_submit(calls_t *self, calls_call_t *call);

#endif
