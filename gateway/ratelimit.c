/*  ratelimit: a fixed-size, set-associative table of token buckets (see ratelimit.h).

    A key is reduced to 64 bits with SipHash under a key drawn at start, so a client cannot
    choose addresses or names that crowd one set; two keys sharing 64 bits (odds about one in
    2^40 at the default size) would share a bucket, nothing worse. Each set of S_WAYS entries
    has its own lock, so worker threads rarely meet; a new key replaces the set's least
    recently used entry. Time is the monotonic clock in milliseconds. */
#include "ratelimit.h"

#include "log.h"
#include "util.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>

#define S_WAYS 8

typedef struct {
    uint64_t key;    /* SipHash of the key, never 0 (0: unused entry) */
    int64_t last_ms; /* when tokens was last brought up to date */
    double tokens;   /* requests the bucket holds now */
} s_entry_t;

typedef struct {
    pthread_mutex_t lock;
    s_entry_t way[S_WAYS];
} s_set_t;

struct _ratelimit_t {
    double per_ms; /* refill, requests per millisecond */
    double burst;  /* bucket size */
    size_t mask;   /* sets - 1 */
    s_set_t *sets;
    unsigned char hash_key[crypto_shorthash_KEYBYTES];
};

ratelimit_t *ratelimit_new(size_t entries, double per_s, double burst)
{
    ratelimit_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    size_t sets = 1;
    while (sets * S_WAYS < entries)
        sets *= 2;
    self->sets = calloc(sets, sizeof *self->sets);
    if (!self->sets) {
        log_error(NULL, "cannot allocate a rate limit table", "{s:I}", "entries",
                  (json_int_t)entries);
        free(self);
        return NULL;
    }
    for (size_t i = 0; i < sets; i++)
        pthread_mutex_init(&self->sets[i].lock, NULL);
    self->mask = sets - 1;
    self->per_ms = per_s / 1000.0;
    self->burst = burst;
    crypto_shorthash_keygen(self->hash_key);
    return self;
}

void ratelimit_destroy(ratelimit_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ratelimit_t *self = *self_p;
    for (size_t i = 0; i <= self->mask; i++)
        pthread_mutex_destroy(&self->sets[i].lock);
    free(self->sets);
    free(self);
    *self_p = NULL;
}

int ratelimit_take(ratelimit_t *self, const void *key, size_t len)
{
    unsigned char digest[crypto_shorthash_BYTES];
    crypto_shorthash(digest, key, len, self->hash_key);
    uint64_t h = 0;
    for (int i = 0; i < 8; i++)
        h = h << 8 | digest[i];
    h |= 1; /* never 0, the mark of an unused entry */
    s_set_t *set = &self->sets[(h >> 1) & self->mask];
    int64_t now = util_mono_ms();

    pthread_mutex_lock(&set->lock);
    s_entry_t *e = NULL;
    for (int i = 0; i < S_WAYS && !e; i++)
        if (set->way[i].key == h)
            e = &set->way[i];
    if (!e) {
        e = &set->way[0]; /* an unused entry, else the least recently used */
        for (int i = 1; i < S_WAYS && e->key; i++)
            if (!set->way[i].key || set->way[i].last_ms < e->last_ms)
                e = &set->way[i];
        *e = (s_entry_t){ .key = h, .last_ms = now, .tokens = self->burst };
    }
    e->tokens += (double)(now - e->last_ms) * self->per_ms;
    if (e->tokens > self->burst)
        e->tokens = self->burst;
    e->last_ms = now;
    int wait_s = 0;
    if (e->tokens >= 1.0)
        e->tokens -= 1.0;
    else {
        wait_s = (int)ceil((1.0 - e->tokens) / (self->per_ms * 1000.0));
        if (wait_s < 1)
            wait_s = 1;
    }
    pthread_mutex_unlock(&set->lock);
    return wait_s;
}
