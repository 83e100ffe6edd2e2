/*  webhook: deliveries of a group's notices to its webhook URL (see webhook.h).

    Two halves, both run from the meter's loop and neither waits on the network:
    - Intake. The "webhook" consumer group on berth:events (the usage consumer's is separate,
      so a backlog of deliveries never holds metering back, nor the other way round). Each
      event that concerns a group with a webhook becomes a delivery: its stream id is the
      delivery id (the receiver's idempotency key: X-Berth-Event-Id), its body is built once,
      and webhook_enqueue.lua records it and acknowledges the event in one step.
    - Delivery. A delivery waits in berth:webhook:due scored by when it is due (real ms).
      webhook_claim.lua takes due ones for this instance, re-scoring each at the end of the
      claim (longer than an attempt can last) with a token: two meters never send the same
      delivery at once, and one that died leaves its claims due again. Attempts run as libcurl
      easy handles in one multi handle driven by curl_multi_perform (never blocks). An answer
      2xx delivers; anything else (a status, a refused connection, the timeout) counts an
      attempt, and the delivery is due again after base_delay_ms * 2^(attempts-1) (at most
      max_delay_ms) until the last attempt, when it is given up and recorded: a webhook.failed
      event and an audit record in the group (webhook_done.lua, which checks the token).
    Each attempt reads the group's webhook again: a changed URL or secret applies to what is
    still queued, and a webhook cleared meanwhile drops its deliveries. */
#include "webhook.h"
#include "clock.h"
#include "keys.h"
#include "limit.h"
#include "log.h"
#include "lua_scripts.h"
#include "metrics.h"
#include "util.h"

#include <assert.h>
#include <curl/curl.h>
#include <inttypes.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ID_MAX     64   /* a stream id */
#define ERROR_MAX  160  /* the last error of an attempt, as recorded */
#define TOKEN_MAX  160  /* a claim token */
#define ANSWER_MAX 4096 /* bytes of a receiver's answer kept (for the log) */

typedef struct s_attempt_t {
    struct s_attempt_t *next;
    CURL *easy;
    struct curl_slist *headers;
    char id[ID_MAX];       /* the delivery id */
    char token[TOKEN_MAX]; /* the claim this attempt holds */
    char *body;            /* what is POSTed (owned) */
    char group[UTIL_ID_LEN];
    int attempts; /* attempts made before this one */
    char curl_error[CURL_ERROR_SIZE];
    size_t answered; /* bytes of the answer read (discarded) */
} s_attempt_t;

struct _webhook_t {
    store_t *store; /* borrowed */
    char *consumer;
    webhook_limits_t limits;
    CURLM *multi;
    s_attempt_t *attempts; /* under way */
    int inflight;
    int ready;                 /* the consumer group is known to exist */
    int own_done;              /* our own pending list has been worked through */
    char own_cursor[ID_MAX];   /* where the pass over our own pending list resumes */
    char claim_cursor[ID_MAX]; /* where XAUTOCLAIM resumes */
    uint64_t claims;           /* claim calls made (part of each token) */
    char nonce[17];            /* random, part of each token: unique even under a reused id */
    uint64_t delivered;
    uint64_t failed;
};

static int s_curl_ready;

webhook_t *webhook_new(store_t *store, const char *consumer, const webhook_limits_t *limits)
{
    assert(store && consumer && limits && limits->attempts >= 1 && limits->max_inflight >= 1 &&
           limits->max_per_group >= 1);
    if (!s_curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return NULL;
        s_curl_ready = 1;
    }
    if (sodium_init() < 0)
        return NULL;
    webhook_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->store = store;
    self->limits = *limits;
    self->consumer = strdup(consumer);
    self->multi = curl_multi_init();
    strcpy(self->own_cursor, "0");
    strcpy(self->claim_cursor, "0-0");
    unsigned char random[8];
    randombytes_buf(random, sizeof random);
    sodium_bin2hex(self->nonce, sizeof self->nonce, random, sizeof random);
    if (!self->consumer || !self->multi) {
        webhook_destroy(&self);
        return NULL;
    }
    /* A resolver that blocks would block the meter's loop on a slow DNS server. */
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    if (!(v->features & CURL_VERSION_ASYNCHDNS))
        log_warn(NULL, "libcurl resolves names synchronously: a slow DNS server delays metering",
                 NULL);
    return self;
}

static void s_attempt_free(webhook_t *self, s_attempt_t *a)
{
    if (a->easy) {
        if (self->multi)
            curl_multi_remove_handle(self->multi, a->easy);
        curl_easy_cleanup(a->easy);
    }
    curl_slist_free_all(a->headers);
    free(a->body);
    free(a);
}

void webhook_destroy(webhook_t **self_p)
{
    if (self_p && *self_p) {
        webhook_t *self = *self_p;
        /* Attempts under way are abandoned: their claims run out and they are due again. */
        while (self->attempts) {
            s_attempt_t *next = self->attempts->next;
            s_attempt_free(self, self->attempts);
            self->attempts = next;
        }
        if (self->multi)
            curl_multi_cleanup(self->multi);
        free(self->consumer);
        free(self);
        *self_p = NULL;
    }
}

int webhook_inflight(webhook_t *self)
{
    return self->inflight;
}

uint64_t webhook_delivered(webhook_t *self)
{
    return self->delivered;
}

uint64_t webhook_failed(webhook_t *self)
{
    return self->failed;
}

void webhook_sign(const char *secret, int64_t ts, const char *body, char *out, size_t size)
{
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    char stamp[24], hex[2 * crypto_auth_hmacsha256_BYTES + 1];
    crypto_auth_hmacsha256_state st;
    snprintf(stamp, sizeof stamp, "%" PRId64 ".", ts);
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)secret, strlen(secret));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)stamp, strlen(stamp));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)body, strlen(body));
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_bin2hex(hex, sizeof hex, mac, sizeof mac);
    snprintf(out, size, "v1=%s", hex);
}

/* ---- intake ------------------------------------------------------------------------------ */

static const char *s_field(const redisReply *fields, const char *name)
{
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const redisReply *k = fields->element[i], *v = fields->element[i + 1];
        if (k->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING &&
            strcmp(k->str, name) == 0)
            return v->str;
    }
    return NULL;
}

static int s_is(const char *text, const char *want)
{
    return text && strcmp(text, want) == 0;
}

/* The webhook event an entry of the stream is, or NULL when it is none a group is told of.
   The names are the webhook's contract (README, "Webhooks"), apart from the stream's. */
static const char *s_kind(const redisReply *fields)
{
    const char *type = s_field(fields, "type");
    if (s_is(type, "vm.lease.notice"))
        return "lease.notice";
    if (s_is(type, "vm.lease.expired"))
        return "lease.expired";
    if (s_is(type, "vm.lease.extended") && s_is(s_field(fields, "revived"), "1"))
        return "lease.revived";
    if (s_is(type, "budget.threshold"))
        return "budget.threshold";
    if (s_is(type, "vm.state")) {
        const char *state = s_field(fields, "state");
        /* The tombstone's end (or a disposal asked of an expired VM). */
        if (s_is(state, "DISPOSING") && s_is(s_field(fields, "from"), "EXPIRED"))
            return "lease.disposing";
        if (s_is(s_field(fields, "transition"), "lost"))
            return "vm.lost";
        return NULL;
    }
    if (s_is(type, "vm.power")) {
        const char *power = s_field(fields, "power_state");
        if (!power)
            power = s_field(fields, "state");
        if (s_is(s_field(fields, "alert"), "1"))
            return "vm.power.alert";
        if (s_is(power, "UNKNOWN"))
            return "vm.unreachable";
    }
    return NULL;
}

/* The group of an event: its own field, else its VM's (power events name none). 0 and id
   ("" when none), or -1 when Redis failed. */
static int s_group_of(webhook_t *self, const redisReply *fields, char id[UTIL_ID_LEN])
{
    const char *group = s_field(fields, "group");
    *id = '\0';
    if (group && util_is_uuid(group)) {
        util_strlcpy(id, group, UTIL_ID_LEN);
        return 0;
    }
    const char *vm = s_field(fields, "vm");
    if (!vm || !util_is_uuid(vm))
        return 0;
    char key[KEYS_MAX];
    redisReply *r = store_command(self->store, "HGET %s group", keys_vm(key, vm));
    if (!r)
        return -1;
    int rc = r->type == REDIS_REPLY_ERROR ? -1 : 0;
    if (r->type == REDIS_REPLY_STRING && util_is_uuid(r->str))
        util_strlcpy(id, r->str, UTIL_ID_LEN);
    freeReplyObject(r);
    return rc;
}

/* The delivery record of an event: the body POSTed (JSON text) and what the records need. */
static char *s_delivery(const char *id, const char *kind, const char *group,
                        const redisReply *fields)
{
    json_t *data = json_object();
    for (size_t i = 0; data && i + 1 < fields->elements; i += 2) {
        const redisReply *k = fields->element[i], *v = fields->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
            strcmp(k->str, "key") == 0 || k->len > 64 || v->len > 1024)
            continue;
        json_object_set_new(data, k->str, json_string(v->str));
    }
    const char *vm = s_field(fields, "vm");
    int64_t at = 0;
    const char *at_text = s_field(fields, "at_ms");
    if (!at_text || util_parse_int(at_text, 0, INT64_C(1) << 52, &at) != 0)
        at = clock_now_ms();
    json_t *body = json_pack("{s:s, s:s, s:s, s:o, s:I, s:o}", "id", id, "event", kind, "group",
                             group, "vm", vm ? json_string(vm) : json_null(), "at_ms",
                             (json_int_t)at, "data", data ? data : json_object());
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(body);
    if (!text)
        return NULL;
    json_t *rec = json_pack("{s:s, s:s, s:s, s:s, s:i}", "event", kind, "group", group, "vm",
                            vm ? vm : "", "body", text, "attempts", 0);
    free(text);
    char *out = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
    json_decref(rec);
    return out;
}

/* Acknowledge the n entries of ids that make no delivery, in one XACK (most events are no
   group's notice: one command per batch read, not per event). */
static int s_ack(webhook_t *self, const char **ids, size_t n)
{
    if (n == 0)
        return 0;
    const char **argv = calloc(n + 3, sizeof *argv);
    if (!argv)
        return -1;
    argv[0] = "XACK";
    argv[1] = KEYS_EVENTS;
    argv[2] = WEBHOOK_GROUP;
    memcpy(argv + 3, ids, n * sizeof *ids);
    redisReply *r = store_commandv(self->store, (int)(n + 3), argv, NULL);
    free(argv);
    int rc = r && r->type == REDIS_REPLY_INTEGER ? 0 : -1;
    if (r)
        freeReplyObject(r);
    return rc;
}

/* One entry: a delivery for its group's webhook (0), or nothing to send (1: the caller
   acknowledges it with the others of its batch); -1 when Redis failed. */
static int s_entry(webhook_t *self, const char *id, const redisReply *fields)
{
    const char *kind = fields->type == REDIS_REPLY_ARRAY ? s_kind(fields) : NULL;
    char group[UTIL_ID_LEN] = "";
    if (kind && s_group_of(self, fields, group) != 0)
        return -1;
    if (!kind || !*group)
        return 1;
    char *rec = s_delivery(id, kind, group, fields);
    if (!rec)
        return -1;
    char hook[KEYS_MAX], now[24];
    keys_build(hook, KEYS_GROUP_WEBHOOK, group, NULL);
    snprintf(now, sizeof now, "%" PRId64, util_now_ms());
    const char *argv[] = {
        KEYS_EVENTS, KEYS_WEBHOOK_DELIVERIES, KEYS_WEBHOOK_DUE, hook, WEBHOOK_GROUP, id, rec, now
    };
    redisReply *r = store_run(self->store, &lua_webhook_enqueue, 4, 8, argv);
    free(rec);
    if (!r)
        return -1;
    int rc = r->type == REDIS_REPLY_INTEGER ? 0 : -1;
    if (rc != 0)
        log_warn(NULL, "cannot record a webhook delivery", "{s:s, s:s}", "id", id, "error",
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    else if (r->integer == 1)
        log_info(NULL, "webhook delivery queued", "{s:s, s:s, s:s}", "id", id, "event", kind,
                 "group", group);
    freeReplyObject(r);
    return rc;
}

/* Every [id, fields] entry of an array (fields NIL: trimmed; acknowledged). Entries handled
   or -1; last_id (when not NULL) gets the last id seen. */
static int s_entries(webhook_t *self, const redisReply *entries, char *last_id)
{
    if (!entries || entries->type != REDIS_REPLY_ARRAY)
        return 0;
    const char **idle = calloc(entries->elements + 1, sizeof *idle); /* nothing to send */
    if (!idle)
        return -1;
    size_t n_idle = 0;
    int n = 0, rc = 0;
    for (size_t i = 0; i < entries->elements && rc == 0; i++) {
        const redisReply *e = entries->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
            e->element[0]->type != REDIS_REPLY_STRING)
            continue;
        int sent = s_entry(self, e->element[0]->str, e->element[1]);
        if (sent < 0) {
            rc = -1;
            break;
        }
        if (sent == 1)
            idle[n_idle++] = e->element[0]->str;
        if (last_id)
            util_strlcpy(last_id, e->element[0]->str, ID_MAX);
        n++;
    }
    /* Those judged so far are acknowledged even when a later one failed (read again, a
       pending entry would be judged the same: nothing to send). */
    if (s_ack(self, idle, n_idle) != 0)
        rc = -1;
    free(idle);
    return rc < 0 ? -1 : n;
}

static int s_setup(webhook_t *self)
{
    /* From the stream's end: a new platform (or one that adds webhooks) tells of what
       happens from now on, not of the history still in the stream. */
    redisReply *r =
        store_command(self->store, "XGROUP CREATE %s %s $ MKSTREAM", KEYS_EVENTS, WEBHOOK_GROUP);
    if (!r)
        return -1;
    int ok = r->type != REDIS_REPLY_ERROR || strncmp(r->str, "BUSYGROUP", 9) == 0;
    freeReplyObject(r);
    if (!ok)
        return -1;
    self->ready = 1;
    self->own_done = 0;
    strcpy(self->own_cursor, "0");
    strcpy(self->claim_cursor, "0-0");
    return 0;
}

/* A reply that says the group or the stream is gone: create it again next time. */
static int s_failed_reply(webhook_t *self, redisReply *r)
{
    if (r->type == REDIS_REPLY_ERROR) {
        if (strncmp(r->str, "NOGROUP", 7) == 0)
            self->ready = 0;
        return 1;
    }
    return 0;
}

static int s_read(webhook_t *self, const char *start, int *read_p)
{
    char count[16];
    snprintf(count, sizeof count, "%d", self->limits.batch);
    const char *argv[] = { "XREADGROUP", "GROUP",   WEBHOOK_GROUP, self->consumer, "COUNT",
                           count,        "STREAMS", KEYS_EVENTS,   start };
    redisReply *r = store_commandv(self->store, (int)(sizeof argv / sizeof *argv), argv, NULL);
    if (!r)
        return -1;
    if (s_failed_reply(self, r)) {
        freeReplyObject(r);
        return -1;
    }
    const redisReply *entries = NULL;
    if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
        r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements >= 2)
        entries = r->element[0]->element[1];
    *read_p = entries && entries->type == REDIS_REPLY_ARRAY ? (int)entries->elements : 0;
    int own = strcmp(start, ">") != 0;
    int rc = s_entries(self, entries, own ? self->own_cursor : NULL);
    freeReplyObject(r);
    return rc;
}

static int s_claim_events(webhook_t *self)
{
    char idle[32], count[16];
    snprintf(idle, sizeof idle, "%" PRId64, self->limits.claim_idle_ms);
    snprintf(count, sizeof count, "%d", self->limits.batch);
    const char *argv[] = { "XAUTOCLAIM", KEYS_EVENTS,        WEBHOOK_GROUP, self->consumer,
                           idle,         self->claim_cursor, "COUNT",       count };
    redisReply *r = store_commandv(self->store, (int)(sizeof argv / sizeof *argv), argv, NULL);
    if (!r)
        return -1;
    int rc = -1;
    if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2 &&
        r->element[0]->type == REDIS_REPLY_STRING) {
        util_strlcpy(self->claim_cursor, r->element[0]->str, sizeof self->claim_cursor);
        rc = s_entries(self, r->element[1], NULL);
    } else
        s_failed_reply(self, r);
    freeReplyObject(r);
    return rc;
}

int webhook_poll(webhook_t *self)
{
    if (!self->ready && s_setup(self) != 0)
        return -1;
    int total = 0, read = 0, n;
    for (int b = 0; !self->own_done && b < 10; b++) {
        if ((n = s_read(self, self->own_cursor, &read)) < 0)
            goto failed;
        total += n;
        if (read == 0)
            self->own_done = 1;
    }
    if (!self->own_done)
        return total; /* more of our own next time, before anything new */
    if ((n = s_claim_events(self)) < 0)
        goto failed;
    total += n;
    do {
        if ((n = s_read(self, ">", &read)) < 0)
            goto failed;
        total += n;
    } while (read == self->limits.batch && total < 10 * self->limits.batch);
    return total;
failed:
    /* What was read and not acknowledged is in our pending list: go over it again. */
    self->own_done = 0;
    strcpy(self->own_cursor, "0");
    return -1;
}

/* ---- delivery ---------------------------------------------------------------------------- */

static size_t s_discard(char *data, size_t size, size_t n, void *arg)
{
    (void)data;
    s_attempt_t *a = arg;
    a->answered += size * n;
    /* A receiver that streams an endless answer is cut off (the attempt fails). */
    return a->answered > ANSWER_MAX ? 0 : size * n;
}

/* Record an attempt's outcome (webhook_done.lua). */
static int s_done(webhook_t *self, const s_attempt_t *a, const char *outcome, int64_t next_ms,
                  const char *reason)
{
    char next[24], now[24], at[24];
    snprintf(next, sizeof next, "%" PRId64, next_ms);
    snprintf(now, sizeof now, "%" PRId64, util_now_ms());
    snprintf(at, sizeof at, "%" PRId64, clock_now_ms());
    const char *argv[] = { KEYS_WEBHOOK_DELIVERIES,
                           KEYS_WEBHOOK_DUE,
                           KEYS_EVENTS,
                           KEYS_AUDIT,
                           a->id,
                           a->token,
                           outcome,
                           next,
                           now,
                           reason ? reason : "",
                           at };
    redisReply *r = store_run(self->store, &lua_webhook_done, 4, 11, argv);
    if (!r)
        return -1;
    int rc = r->type == REDIS_REPLY_INTEGER ? 0 : -1;
    if (rc != 0)
        log_warn(NULL, "cannot record a webhook attempt", "{s:s, s:s}", "id", a->id, "error",
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    else if (r->integer == 0)
        log_info(NULL, "webhook attempt outlived its claim; its outcome is not recorded",
                 "{s:s, s:s}", "id", a->id, "outcome", outcome);
    freeReplyObject(r);
    return rc;
}

/* The wait after the n-th failed attempt: base * 2^(n-1), at most max_delay_ms. */
static int64_t s_backoff(const webhook_limits_t *l, int failed)
{
    int64_t delay = l->base_delay_ms;
    for (int i = 1; i < failed && delay < l->max_delay_ms; i++)
        delay *= 2;
    return delay < l->max_delay_ms ? delay : l->max_delay_ms;
}

/* An attempt ended, as a metric (metrics.h). */
static void s_count(const char *result)
{
    static metrics_family_t *attempts;
    if (!attempts)
        attempts = metrics_counter("berth_webhook_attempts_total",
                                   "Webhook delivery attempts ended, by result (delivered, retry, "
                                   "failed: given up)",
                                   "result");
    metrics_add(attempts, 1, result);
}

/* An attempt ended: delivered, or due again, or given up. */
static int s_finish(webhook_t *self, s_attempt_t *a, CURLcode code)
{
    long status = 0;
    char reason[ERROR_MAX];
    curl_easy_getinfo(a->easy, CURLINFO_RESPONSE_CODE, &status);
    if (code == CURLE_OK && status >= 200 && status < 300) {
        self->delivered++;
        log_info(NULL, "webhook delivered", "{s:s, s:s, s:i, s:i}", "id", a->id, "group", a->group,
                 "status", (int)status, "attempt", a->attempts + 1);
        s_count("delivered");
        return s_done(self, a, "delivered", 0, NULL);
    }
    if (code == CURLE_OK)
        snprintf(reason, sizeof reason, "the receiver answered %ld", status);
    else
        util_strlcpy(reason, *a->curl_error ? a->curl_error : curl_easy_strerror(code),
                     sizeof reason);
    int made = a->attempts + 1;
    if (made >= self->limits.attempts) {
        self->failed++;
        log_warn(NULL, "webhook delivery given up", "{s:s, s:s, s:i, s:s}", "id", a->id, "group",
                 a->group, "attempts", made, "reason", reason);
        s_count("failed");
        return s_done(self, a, "failed", 0, reason);
    }
    int64_t delay = s_backoff(&self->limits, made);
    log_info(NULL, "webhook attempt failed; retrying", "{s:s, s:s, s:i, s:I, s:s}", "id", a->id,
             "group", a->group, "attempt", made, "retry_in_ms", (json_int_t)delay, "reason",
             reason);
    s_count("retry");
    return s_done(self, a, "retry", util_now_ms() + delay, reason);
}

/* Start one claimed delivery: read the group's webhook and hand the POST to libcurl. 0 when
   started or settled (dropped), -1 when Redis failed (the claim runs out: due again). */
static int s_start(webhook_t *self, const char *id, const char *json)
{
    json_t *d = json_loads(json, 0, NULL);
    const char *group = json_string_value(json_object_get(d, "group"));
    const char *body = json_string_value(json_object_get(d, "body"));
    const char *event = json_string_value(json_object_get(d, "event"));
    const char *token = json_string_value(json_object_get(d, "claim"));
    s_attempt_t *a = calloc(1, sizeof *a);
    int rc = 0;
    if (!a || !group || !util_is_uuid(group) || !body || !event || !token) {
        log_warn(NULL, "dropping a malformed webhook delivery", "{s:s}", "id", id);
        if (a && token) {
            util_strlcpy(a->id, id, sizeof a->id);
            util_strlcpy(a->token, token, sizeof a->token);
            s_done(self, a, "dropped", 0, NULL);
        }
        free(a);
        json_decref(d);
        return 0;
    }
    util_strlcpy(a->id, id, sizeof a->id);
    util_strlcpy(a->token, token, sizeof a->token);
    util_strlcpy(a->group, group, sizeof a->group);
    a->attempts = (int)json_integer_value(json_object_get(d, "attempts"));
    /* A group whose receiver is slow holds at most max_per_group slots: its next deliveries
       wait their turn behind the other groups' (no attempt counted). */
    int busy = 0;
    for (s_attempt_t *x = self->attempts; x; x = x->next)
        busy += strcmp(x->group, group) == 0;
    if (busy >= self->limits.max_per_group) {
        int64_t later = util_now_ms() + self->limits.base_delay_ms;
        rc = s_done(self, a, "later", later, NULL);
        free(a);
        json_decref(d);
        return rc;
    }
    a->body = strdup(body);
    char hook[KEYS_MAX];
    redisReply *r = store_command(self->store, "HMGET %s url secret",
                                  keys_build(hook, KEYS_GROUP_WEBHOOK, group, NULL));
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 || !a->body) {
        rc = -1;
        goto out;
    }
    const redisReply *url = r->element[0], *secret = r->element[1];
    const char *why = NULL;
    if (url->type != REDIS_REPLY_STRING || secret->type != REDIS_REPLY_STRING ||
        util_webhook_check(url->str, LIMIT_WEBHOOK_URL_MAX, &why) != 0) {
        log_info(NULL, "webhook delivery dropped: the group has no webhook now", "{s:s, s:s}", "id",
                 id, "group", group);
        s_done(self, a, "dropped", 0, NULL);
        goto out;
    }
    int64_t ts = util_now_ms();
    char sig[80], line[160];
    webhook_sign(secret->str, ts, a->body, sig, sizeof sig);
    struct curl_slist *h = NULL, *t;
    const char *fixed[] = { "Content-Type: application/json", "User-Agent: berth-meter",
                            "Expect:" };
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
        if ((t = curl_slist_append(h, fixed[i])))
            h = t;
    snprintf(line, sizeof line, "X-Berth-Event-Id: %s", id);
    if ((t = curl_slist_append(h, line)))
        h = t;
    snprintf(line, sizeof line, "X-Berth-Event: %s", event);
    if ((t = curl_slist_append(h, line)))
        h = t;
    snprintf(line, sizeof line, "X-Berth-Timestamp: %" PRId64, ts);
    if ((t = curl_slist_append(h, line)))
        h = t;
    snprintf(line, sizeof line, "X-Berth-Signature: %s", sig);
    if ((t = curl_slist_append(h, line)))
        h = t;
    a->headers = h;
    a->easy = curl_easy_init();
    if (!a->easy || !h) {
        rc = -1;
        goto out;
    }
    CURL *e = a->easy;
    curl_easy_setopt(e, CURLOPT_URL, url->str);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)self->limits.timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)self->limits.timeout_ms);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, a->headers);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, a->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(a->body));
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, s_discard);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, a->curl_error);
    curl_easy_setopt(e, CURLOPT_PRIVATE, a);
    if (curl_multi_add_handle(self->multi, e) != CURLM_OK) {
        rc = -1;
        goto out;
    }
    a->next = self->attempts;
    self->attempts = a;
    self->inflight++;
    a = NULL;
out:
    if (r)
        freeReplyObject(r);
    if (a)
        s_attempt_free(self, a);
    json_decref(d);
    return rc;
}

/* Claim due deliveries for the free slots and start them. */
static int s_claim(webhook_t *self)
{
    int room = self->limits.max_inflight - self->inflight;
    if (room <= 0)
        return 0;
    char now[24], claim[24], max[16], token[TOKEN_MAX];
    snprintf(now, sizeof now, "%" PRId64, util_now_ms());
    /* Longer than an attempt may last: the attempt has ended (and been recorded) before
       anyone else may take the delivery. */
    snprintf(claim, sizeof claim, "%" PRId64, 2 * self->limits.timeout_ms + 5000);
    snprintf(max, sizeof max, "%d", room);
    snprintf(token, sizeof token, "%.100s:%s:%" PRIu64, self->consumer, self->nonce,
             ++self->claims);
    const char *argv[] = { KEYS_WEBHOOK_DELIVERIES, KEYS_WEBHOOK_DUE, now, claim, max, token };
    redisReply *r = store_run(self->store, &lua_webhook_claim, 2, 6, argv);
    if (!r)
        return -1;
    int rc = 0;
    if (r->type != REDIS_REPLY_ARRAY) {
        log_warn(NULL, "cannot claim webhook deliveries", "{s:s}", "error",
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        rc = -1;
    } else
        for (size_t i = 0; i + 1 < r->elements; i += 2)
            if (r->element[i]->type == REDIS_REPLY_STRING &&
                r->element[i + 1]->type == REDIS_REPLY_STRING &&
                s_start(self, r->element[i]->str, r->element[i + 1]->str) != 0)
                rc = -1;
    freeReplyObject(r);
    return rc;
}

int webhook_run(webhook_t *self)
{
    int running = 0, rc = 0;
    curl_multi_perform(self->multi, &running);
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(self->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        s_attempt_t *a = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&a);
        CURLcode code = msg->data.result;
        if (!a)
            continue;
        if (s_finish(self, a, code) != 0)
            rc = -1; /* not recorded: the claim runs out and the delivery is due again */
        for (s_attempt_t **p = &self->attempts; *p; p = &(*p)->next)
            if (*p == a) {
                *p = a->next;
                break;
            }
        self->inflight--;
        s_attempt_free(self, a);
    }
    if (s_claim(self) != 0)
        rc = -1;
    /* Started ones get their first bytes out now rather than at the next tick. */
    curl_multi_perform(self->multi, &running);
    return rc;
}
