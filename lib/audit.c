/*  audit: the audit trail's stream and the gateway's writer thread. An HTTP thread only copies
    a record into a bounded ring under a mutex; one thread sends what has queued up in batches
    (one audit_append.lua round trip each), so a slow or absent Redis costs dropped records,
    counted and logged once, never a stalled request. */
#include "audit.h"
#include "clock.h"

#include "log.h"
#include "lua_scripts.h"
#include "metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int audit_append(store_t *store, const audit_record_t *records, size_t n, int64_t max_entries,
                 int64_t retention_ms)
{
    size_t argc = 3 + 8 * n;
    const char **argv = calloc(argc, sizeof *argv);
    char(*at)[24] = calloc(n + 1, sizeof *at);
    char max[24], min[24];
    if (!argv || !at) {
        free(argv);
        free(at);
        return -1;
    }
    snprintf(max, sizeof max, "%lld", (long long)max_entries);
    int64_t oldest = retention_ms > 0 ? clock_now_ms() - retention_ms : 0;
    snprintf(min, sizeof min, "%lld", (long long)(oldest > 0 ? oldest : 0));
    argv[0] = KEYS_AUDIT;
    argv[1] = max;
    argv[2] = min;
    for (size_t i = 0; i < n; i++) {
        const audit_record_t *r = &records[i];
        const char **v = argv + 3 + 8 * i;
        snprintf(at[i], sizeof at[i], "%lld", (long long)r->at_ms);
        v[0] = at[i];
        v[1] = r->actor;
        v[2] = r->action;
        v[3] = r->target;
        v[4] = r->group;
        v[5] = r->source;
        v[6] = r->request_id;
        v[7] = r->result;
    }
    redisReply *reply = store_run(store, &lua_audit_append, 1, (int)argc, argv);
    int rc = reply && reply->type == REDIS_REPLY_INTEGER ? 0 : -1;
    if (rc != 0)
        log_debug(NULL, "cannot append to the audit trail", "{s:s}", "reason",
                  reply && reply->str ? reply->str : "Redis unreachable");
    freeReplyObject(reply);
    free(argv);
    free(at);
    return rc;
}

struct _audit_log_t {
    audit_log_options_t options;
    store_t *store; /* the writer thread's own connection */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    audit_record_t *ring; /* queue_max records */
    size_t head, count;   /* oldest queued record, records queued */
    int stopping;         /* under lock */
    int warned;           /* the drop was logged (until the queue drains) */
    atomic_uint_least64_t dropped;
};

/* now + ms as a CLOCK_REALTIME deadline for pthread_cond_timedwait. */
static struct timespec s_deadline(int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* The queue as metrics (metrics.h): records waiting for Redis, and those dropped. */
static struct {
    metrics_family_t *queued, *dropped;
} s_m;

static void s_metrics_declare(void)
{
    s_m.queued = metrics_gauge("berth_audit_queue", "Audit records waiting to be written", NULL);
    s_m.dropped = metrics_counter("berth_audit_dropped_total",
                                  "Audit records dropped: the queue was full", NULL);
}

static void *s_writer(void *arg)
{
    audit_log_t *self = arg;
    audit_record_t *batch = calloc(self->options.batch_max, sizeof *batch);
    size_t n = 0;          /* records of batch not sent yet */
    int64_t next_trim = 0; /* when an idle writer applies the retention */
    int64_t stop_by = 0;   /* when a stopping writer gives up on Redis */
    int failing = 0;
    while (batch) {
        pthread_mutex_lock(&self->lock);
        if (n == 0 && self->count == 0 && !self->stopping) {
            struct timespec ts = s_deadline(self->options.trim_every_ms);
            pthread_cond_timedwait(&self->cond, &self->lock, &ts);
        } else if (failing && !self->stopping) {
            struct timespec ts = s_deadline(500);
            pthread_cond_timedwait(&self->cond, &self->lock, &ts);
        }
        while (n < self->options.batch_max && self->count > 0) {
            batch[n++] = self->ring[self->head];
            self->head = (self->head + 1) % self->options.queue_max;
            self->count--;
        }
        if (self->count == 0)
            self->warned = 0;
        int stopping = self->stopping;
        size_t queued = self->count;
        pthread_mutex_unlock(&self->lock);
        metrics_set(s_m.queued, (double)queued);
        int64_t now = util_mono_ms();
        if (stopping && !stop_by)
            stop_by = now + 2000;
        if (n == 0 && now < next_trim) {
            if (stopping)
                break;
            continue;
        }
        if (audit_append(self->store, batch, n, self->options.max_entries,
                         self->options.retention_ms) == 0) {
            if (failing)
                log_info(NULL, "audit trail written again", "{s:I}", "dropped",
                         (json_int_t)atomic_load(&self->dropped));
            failing = 0;
            n = 0;
            next_trim = now + self->options.trim_every_ms;
        } else {
            if (!failing)
                log_warn(NULL, "cannot write the audit trail: records wait, then are dropped",
                         "{s:I}", "queued", (json_int_t)n);
            failing = 1;
        }
        if (stopping && (n == 0 || now >= stop_by)) {
            pthread_mutex_lock(&self->lock);
            int empty = self->count == 0;
            pthread_mutex_unlock(&self->lock);
            if ((empty && n == 0) || now >= stop_by) {
                if (n || !empty)
                    log_error(NULL, "audit records lost at stop: Redis unreachable", "{s:I}",
                              "lost", (json_int_t)(n + self->count));
                break;
            }
        }
    }
    free(batch);
    return NULL;
}

audit_log_t *audit_log_new(const audit_log_options_t *options)
{
    audit_log_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    s_metrics_declare();
    self->options = *options;
    if (self->options.queue_max < 1)
        self->options.queue_max = 1;
    if (self->options.batch_max < 1)
        self->options.batch_max = 1;
    if (self->options.trim_every_ms < 10)
        self->options.trim_every_ms = 10;
    self->ring = calloc(self->options.queue_max, sizeof *self->ring);
    self->store = store_new(options->redis_host, options->redis_port, 1000, 2000);
    if (self->store && store_use_secrets(self->store, options->secrets_dir) != 0)
        store_destroy(&self->store);
    pthread_mutex_init(&self->lock, NULL);
    pthread_cond_init(&self->cond, NULL);
    if (!self->ring || !self->store || pthread_create(&self->thread, NULL, s_writer, self) != 0) {
        log_error(NULL, "cannot start the audit writer", NULL);
        store_destroy(&self->store);
        pthread_mutex_destroy(&self->lock);
        pthread_cond_destroy(&self->cond);
        free(self->ring);
        free(self);
        return NULL;
    }
    return self;
}

void audit_log_destroy(audit_log_t **self_p)
{
    if (self_p && *self_p) {
        audit_log_t *self = *self_p;
        pthread_mutex_lock(&self->lock);
        self->stopping = 1;
        pthread_cond_signal(&self->cond);
        pthread_mutex_unlock(&self->lock);
        pthread_join(self->thread, NULL);
        store_destroy(&self->store);
        pthread_mutex_destroy(&self->lock);
        pthread_cond_destroy(&self->cond);
        free(self->ring);
        free(self);
        *self_p = NULL;
    }
}

int audit_log_push(audit_log_t *self, const audit_record_t *record)
{
    pthread_mutex_lock(&self->lock);
    if (self->count == self->options.queue_max) {
        int warn = !self->warned;
        self->warned = 1;
        pthread_mutex_unlock(&self->lock);
        uint64_t dropped = atomic_fetch_add(&self->dropped, 1) + 1;
        metrics_add(s_m.dropped, 1);
        if (warn)
            log_warn(record->request_id, "audit queue full: records are dropped", "{s:I, s:I}",
                     "audit_queue_max", (json_int_t)self->options.queue_max, "dropped",
                     (json_int_t)dropped);
        return -1;
    }
    self->ring[(self->head + self->count) % self->options.queue_max] = *record;
    self->count++;
    size_t queued = self->count;
    pthread_cond_signal(&self->cond);
    pthread_mutex_unlock(&self->lock);
    metrics_set(s_m.queued, (double)queued);
    return 0;
}

uint64_t audit_log_dropped(audit_log_t *self)
{
    return atomic_load(&self->dropped);
}
