/*  events: GET /v1/events, the live event stream (Server-Sent Events) of the state changes a
    caller may see, read from berth:events by one reader thread and fanned out to bounded
    per-client queues; resumable with Last-Event-ID or ?since. */
#ifndef BERTH_GATEWAY_EVENTS_H
#define BERTH_GATEWAY_EVENTS_H

#include "http.h"

typedef struct _events_t events_t;
typedef struct {
    const char *redis_host; /* the reader's own Redis connection */
    int redis_port;
    const char *secrets_dir;
    int keepalive_ms;     /* a ": keepalive" comment this often on every stream */
    int max_streams;      /* streams open at once on this gateway, then 429 */
    int per_token;        /* streams one bearer token may hold open at once */
    int per_address;      /* streams one client address may hold open at once */
    size_t queue_max;     /* bytes waiting for one client; past it the client is dropped */
    int check_ms;         /* tokens, users and group roles of open streams checked this often */
    int retry_ms;         /* the SSE retry: a client waits this long before reconnecting */
} events_options_t;
/* The streams and their one reader thread (XREAD BLOCK on berth:events). NULL (logged). */
events_t *events_new(const events_options_t *options);
/* End every stream (their clients get an end event) and stop the reader: before the HTTP
   server stops, so no connection is left suspended. */
void events_stop(events_t *self);
void events_destroy(events_t **self_p);
void events_stream(http_req_t *req); /* GET /v1/events */

#endif
