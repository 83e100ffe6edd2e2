/*  audit: the audit trail, an append-only Redis stream (KEYS_AUDIT) of who did what to what
    and with what result. The gateway queues one record per mutating API call to a writer
    thread (audit_log_*) that never holds an HTTP thread; transitions add theirs in model_tx. */
#ifndef BERTH_AUDIT_H
#define BERTH_AUDIT_H

#include "store.h"
#include "util.h"

#include <stdint.h>

/* The fields of a record, in the order the stream holds them. */
#define AUDIT_FIELDS "at_ms actor action target group source request_id result"

typedef struct {
    int64_t at_ms;
    char actor[80];   /* a user name, "anonymous", or "service:<name>" */
    char action[96];  /* "vm.dispose" (the route's permission action) */
    char target[160]; /* "vm:<id>", "request:<id>", "user:<name>", "group:<id>" ("": none) */
    char group[80];   /* the target's group id when known */
    char source[64];  /* the client's address */
    char request_id[UTIL_ID_LEN];
    char result[16]; /* HTTP status, or "ok" / an error code */
} audit_record_t;

/* Append n records to the audit stream and apply the retention (max_entries: most entries
   kept, 0 = no cap; retention_ms: oldest age kept, 0 = none) in one round trip; n 0 only
   trims. 0, or -1 when Redis failed (debug-logged). */
int audit_append(store_t *store, const audit_record_t *records, size_t n, int64_t max_entries,
                 int64_t retention_ms);

typedef struct _audit_log_t audit_log_t;

typedef struct {
    const char *redis_host;
    int redis_port;
    const char *secrets_dir; /* the Redis password's directory (NULL: none) */
    size_t queue_max;        /* records waiting at most; past it a record is dropped (counted) */
    size_t batch_max;        /* records sent in one round trip at most */
    int64_t max_entries;     /* retention: see audit_append */
    int64_t retention_ms;
    int trim_every_ms; /* the retention is applied at least this often, even when idle */
} audit_log_options_t;

/* Start the writer thread with its own Redis connection. NULL (logged) on failure. */
audit_log_t *audit_log_new(const audit_log_options_t *options);
/* Stop: what is queued is sent (for up to two seconds), then the thread ends. */
void audit_log_destroy(audit_log_t **self_p);
/* Queue a record, never waiting on Redis: 0, or -1 when the queue is full (the record is
   dropped, counted, and logged once until the queue drains). Any thread. */
int audit_log_push(audit_log_t *self, const audit_record_t *record);
/* Records dropped so far (queue full, or Redis down past the queue). */
uint64_t audit_log_dropped(audit_log_t *self);

#endif
