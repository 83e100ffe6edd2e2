/*  ratelimit: token buckets for the gateway's request rate limits, one table per kind of
    key (a client address, a user). A bucket holds up to `burst` requests and refills at
    `per_s` a second; a request that finds it empty is refused with the seconds until the
    next one fits (the 429's Retry-After). The table has a fixed number of entries, however
    many keys come: a new key takes the least recently used entry of its set, so memory stays
    bounded under any load and a forgotten key only starts again with a full bucket. */
#ifndef BERTH_GATEWAY_RATELIMIT_H
#define BERTH_GATEWAY_RATELIMIT_H

#include <stddef.h>

typedef struct _ratelimit_t ratelimit_t;

/* A table of at least `entries` buckets (rounded up to a power of two), each refilling at
   per_s requests a second up to burst. NULL (logged) on failure. Needs sodium_init(). */
ratelimit_t *ratelimit_new(size_t entries, double per_s, double burst);
void ratelimit_destroy(ratelimit_t **self_p);

/* Take one request from the bucket of key (len bytes). 0 when it fits, otherwise the whole
   seconds (at least 1) until it would. Safe from any thread. */
int ratelimit_take(ratelimit_t *self, const void *key, size_t len);

#endif
