/*  webhook: a group's notices POSTed to its webhook URL. Reads the event stream through a
    consumer group of its own ("webhook"), turns the events a group's managers care about
    (lease notice, expiry, revival, disposal at tombstone end, VMs lost or stopped behind
    Berth's back, VMs on a host gone DOWN) into deliveries kept in Redis, and sends them with
    libcurl's multi interface from the meter's loop, never blocking it: a slow or dead
    receiver delays nothing but its own deliveries. */
#ifndef BERTH_METER_WEBHOOK_H
#define BERTH_METER_WEBHOOK_H

#include "store.h"

#include <stdint.h>

#define WEBHOOK_GROUP "webhook" /* the consumer group of berth:events every meter shares */

typedef struct _webhook_t webhook_t;

typedef struct {
    int attempts;          /* a delivery is tried at most this many times, then given up */
    int64_t base_delay_ms; /* the wait before the second attempt; doubled after each failure */
    int64_t max_delay_ms;  /* the longest wait between two attempts */
    int64_t timeout_ms;    /* one attempt's whole time (connect, send, answer) */
    int max_inflight;      /* attempts under way at once in one meter */
    int max_per_group;     /* of them for one group: a dead receiver holds no other's back */
    int batch;             /* events read per XREADGROUP / XAUTOCLAIM */
    int64_t claim_idle_ms; /* events a dead meter read and left this long are taken over */
} webhook_limits_t;

/* A webhook sender as consumer `consumer` of WEBHOOK_GROUP. store is borrowed. NULL when
   libcurl cannot be set up. */
webhook_t *webhook_new(store_t *store, const char *consumer, const webhook_limits_t *limits);
void webhook_destroy(webhook_t **self_p);

/* Read new events (and any this consumer or a dead one left unacknowledged) and record a
   delivery for each that concerns a group with a webhook, acknowledging it in the same step.
   Events handled, or -1 when Redis failed. */
int webhook_poll(webhook_t *self);

/* Move the deliveries along without waiting: send what libcurl can send now, record the
   outcome of attempts that ended (delivered, due again after a backoff, or given up), and
   start due deliveries up to max_inflight. 0, or -1 when Redis failed. */
int webhook_run(webhook_t *self);

/* Attempts under way now, delivered and given up since webhook_new. */
int webhook_inflight(webhook_t *self);
uint64_t webhook_delivered(webhook_t *self);
uint64_t webhook_failed(webhook_t *self);

/* The signature header's value for body sent at timestamp ts (unix ms) with secret:
   "v1=" and the hex HMAC-SHA256 of "<ts>.<body>" (out: at least 68 bytes). */
void webhook_sign(const char *secret, int64_t ts, const char *body, char *out, size_t size);

#endif
