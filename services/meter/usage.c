/*  usage: metering from the event log. Every meter instance is a consumer of one group on
    berth:events; what it reads it applies to the VM's usage hash and acknowledges in the same
    Lua script, so an entry is either applied and acked or neither.

    Why a per-VM event list rather than a "last applied id" watermark: with several meter
    instances (or one that died holding entries) the events of one VM can be applied out of
    order. If instance A read a VM's ACTIVE and died, instance B may apply the later DISPOSING
    first and only then reclaim ACTIVE from A's pending list. A watermark would drop that
    ACTIVE as "old" and lose the VM's hours. So the hash keeps the VM's lifecycle events
    sorted by stream id, an event already in the list is ignored (redelivery, restart), a
    late one is inserted in its place, and the intervals are derived again from the list:
    the result depends only on which events exist, never on the order they were applied in.
    The list is bounded: past max_events_per_vm the older half is folded into closed
    intervals ("base") and events older than the fold are then taken as applied.

    Intervals: the list holds the VM's vm.state and vm.power events, and each event's bill is
    that of the (lifecycle state, power state) pair in force after it, from lib/lifecycle.c's
    billing table (ACTIVE and RUNNING: compute and disk; ACTIVE and STOPPED: disk only; an
    UNKNOWN power, its host DOWN, bills as the last known power). An event whose pair bills
    compute opens an interval at its at_ms (unless one is open); one whose pair does not closes
    the open one. Disk has intervals of its own, opened by every pair that bills disk (also
    EXPIRED: a powered-off VM kept as a tombstone). An interval never starts before the previous one ended and never
    ends before it started, so skewed clocks between writers cannot make time count twice
    or negatively. */
#include "usage.h"
#include "clock.h"
#include "error.h"
#include "keys.h"
#include "lifecycle.h"
#include "lua_scripts.h"
#include "log.h"
#include "util.h"

#include <assert.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ID_MAX       64  /* a stream id: "<ms>-<seq>" */
#define VM_ID_MAX    128 /* longest VM id accepted from an event */
#define FIELD_MAX    256 /* longest owner / template / host accepted from an event */
#define REPORT_CHUNK 100 /* usage hashes read per report script call */

struct _usage_t {
    store_t *store; /* borrowed */
    char *group;
    char *consumer;
    usage_limits_t limits;
    int ready;                 /* the group is known to exist */
    int own_done;              /* our own pending list has been worked through */
    char own_cursor[ID_MAX];   /* where the pass over our own pending list resumes */
    char claim_cursor[ID_MAX]; /* where XAUTOCLAIM resumes its scan of the pending list */
    uint64_t handled;
    uint64_t refused;
    char *billing; /* the lifecycle table's billing as usage_apply.lua reads it (JSON) */
};

/* The billing table as usage_apply.lua reads it: {"bill": {state: {power or "": code}},
   "keep": {power: true}}, code bit 0 compute, bit 1 disk; only pairs that bill something and
   differ from the state's any row. Read through lifecycle_billing, the table's one reader. */
static char *s_billing_json(void)
{
    json_t *bill = json_object(), *keep = json_object();
    for (int v = 1; bill && keep && v < VM_STATE_LAST; v++) {
        const char *state = vm_state_names[v];
        int c = 0, d = 0;
        lifecycle_billing(state, NULL, &c, &d);
        json_t *rows = json_object();
        if (c || d)
            json_object_set_new(rows, "", json_integer(c | d << 1));
        for (int p = 1; p < POWER_STATE_LAST; p++) {
            int pc = 0, pd = 0;
            lifecycle_billing(state, power_state_names[p], &pc, &pd);
            if (pc != c || pd != d)
                json_object_set_new(rows, power_state_names[p], json_integer(pc | pd << 1));
        }
        if (json_object_size(rows))
            json_object_set_new(bill, state, rows);
        else
            json_decref(rows);
    }
    for (int p = 1; keep && p < POWER_STATE_LAST; p++)
        if (lifecycle_power_billed_as_last(power_state_names[p]))
            json_object_set_new(keep, power_state_names[p], json_true());
    json_t *all = bill && keep ? json_pack("{s:o, s:o}", "bill", bill, "keep", keep) : NULL;
    if (!all) {
        json_decref(bill);
        json_decref(keep);
        return NULL;
    }
    char *text = json_dumps(all, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(all);
    return text;
}

usage_t *usage_new(store_t *store, const char *group, const char *consumer,
                   const usage_limits_t *limits)
{
    assert(store && group && consumer && limits);
    assert(limits->batch > 0 && limits->batches_per_poll > 0 && limits->max_events_per_vm >= 4);
    usage_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->store = store;
    self->group = strdup(group);
    self->consumer = strdup(consumer);
    self->limits = *limits;
    strcpy(self->own_cursor, "0");
    strcpy(self->claim_cursor, "0-0");
    self->billing = s_billing_json();
    if (!self->group || !self->consumer || !self->billing) {
        usage_destroy(&self);
        return NULL;
    }
    return self;
}

void usage_destroy(usage_t **self_p)
{
    if (self_p && *self_p) {
        usage_t *self = *self_p;
        free(self->group);
        free(self->consumer);
        free(self->billing);
        free(self);
        *self_p = NULL;
    }
}

uint64_t usage_handled(usage_t *self)
{
    return self->handled;
}

uint64_t usage_refused(usage_t *self)
{
    return self->refused;
}

int usage_setup(usage_t *self)
{
    redisReply *r =
        store_command(self->store, "XGROUP CREATE %s %s 0 MKSTREAM", STORE_EVENTS, self->group);
    if (!r)
        return -1;
    int ok = r->type != REDIS_REPLY_ERROR || strncmp(r->str, "BUSYGROUP", 9) == 0;
    if (!ok)
        log_debug(NULL, "cannot create consumer group", "{s:s, s:s}", "group", self->group, "error",
                  r->str);
    freeReplyObject(r);
    if (!ok)
        return -1;
    /* A new or re-created group: start over on our own pending list. */
    self->ready = 1;
    self->own_done = 0;
    strcpy(self->own_cursor, "0");
    strcpy(self->claim_cursor, "0-0");
    return 0;
}

/* The value of field name in an entry's field/value array, or NULL. */
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

/* A VM id or state from an event: non-empty, bounded, and free of characters that would
   change the key it lands in (braces end the hash tag). */
static int s_valid_token(const char *text, size_t max)
{
    if (!text || !*text || strlen(text) > max)
        return 0;
    for (const char *p = text; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.'))
            return 0;
    return 1;
}

/* A numeric metadata field as text, or "" when absent, 0 or not a number in [0, max]. Zero
   counts as absent: a writer that did not have the flavor at hand must not wipe the one an
   earlier event recorded, since every interval is priced at the VM's recorded flavor. */
static const char *s_number(const char *text, int64_t max, const char *id, const char *name)
{
    int64_t value;
    if (!text || strcmp(text, "0") == 0)
        return "";
    if (util_parse_int(text, 0, max, &value) != 0) {
        log_warn(NULL, "ignoring a bad number in an event", "{s:s, s:s, s:s}", "id", id, "field",
                 name, "value", text);
        return "";
    }
    return text;
}

/* The vm.state and vm.power events of one read, applied by one usage_apply call (one
   round trip). */
typedef struct {
    int n;                 /* events gathered */
    const char **keys;     /* stream, index, then each event's usage hash */
    const char **args;     /* group, max_events, billing, then BATCH_ARGS per event */
    char (*key)[KEYS_MAX]; /* each event's usage hash key */
    char (*at)[32];        /* each event's at_ms as text */
    char max_events[16];
} s_batch_t;

#define BATCH_HEAD 3  /* arguments before the events' */
#define BATCH_ARGS 11 /* arguments per event */

static int s_batch_init(usage_t *self, s_batch_t *b, size_t max)
{
    memset(b, 0, sizeof *b);
    b->keys = calloc(max + 2, sizeof *b->keys);
    b->args = calloc(BATCH_HEAD + BATCH_ARGS * max, sizeof *b->args);
    b->key = calloc(max ? max : 1, sizeof *b->key);
    b->at = calloc(max ? max : 1, sizeof *b->at);
    if (!b->keys || !b->args || !b->key || !b->at)
        return -1;
    b->keys[0] = STORE_EVENTS;
    b->keys[1] = USAGE_INDEX;
    b->args[0] = self->group;
    snprintf(b->max_events, sizeof b->max_events, "%d", self->limits.max_events_per_vm);
    b->args[1] = b->max_events;
    b->args[2] = self->billing;
    return 0;
}

static void s_batch_free(s_batch_t *b)
{
    free(b->keys);
    free(b->args);
    free(b->key);
    free(b->at);
}

/* Gather one vm.state or vm.power (power set) entry into the batch. 1 when it is done with
   (gathered, or refused and to be acked by the caller: *ack set). */
static int s_apply_vm(usage_t *self, s_batch_t *b, const char *id, const redisReply *fields,
                      int power, int *ack)
{
    const char *vm = s_field(fields, "vm");
    const char *state = s_field(fields, power ? "power_state" : "state");
    if (!s_valid_token(vm, VM_ID_MAX) || !s_valid_token(state, 32)) {
        log_warn(NULL, "refusing a VM event without a valid vm and state",
                 "{s:s, s:s?, s:s?}", "id", id, "vm", vm, "state", state);
        self->refused++;
        *ack = 1;
        return 1;
    }
    /* When it happened: at_ms, or else when Redis appended it (the id's time part). */
    int64_t at = 0;
    const char *at_text = s_field(fields, "at_ms");
    if (!at_text || util_parse_int(at_text, 1, INT64_C(1) << 52, &at) != 0) {
        char ms[ID_MAX];
        util_strlcpy(ms, id, sizeof ms);
        char *dash = strchr(ms, '-');
        if (dash)
            *dash = '\0';
        if (util_parse_int(ms, 1, INT64_C(1) << 52, &at) != 0)
            at = clock_now_ms();
        if (at_text)
            log_warn(NULL, "bad at_ms in an event, using the entry's time", "{s:s, s:s}", "id", id,
                     "at_ms", at_text);
    }
    const char *meta[3] = { s_field(fields, "owner"), s_field(fields, "template"),
                            s_field(fields, "host") };
    for (int i = 0; i < 3; i++)
        if (!meta[i] || strlen(meta[i]) > FIELD_MAX)
            meta[i] = "";
    int e = b->n++;
    b->keys[2 + e] = keys_build(b->key[e], KEYS_USAGE, vm, NULL);
    snprintf(b->at[e], sizeof b->at[e], "%" PRId64, at);
    const char *args[BATCH_ARGS] = {
        id,
        vm,
        power ? "" : state,
        power ? state : "",
        b->at[e],
        meta[0],
        meta[1],
        meta[2],
        s_number(s_field(fields, "vcpus"), 1000000, id, "vcpus"),
        s_number(s_field(fields, "ram_mb"), INT64_C(1) << 40, id, "ram_mb"),
        s_number(s_field(fields, "disk_gb"), INT64_C(1) << 30, id, "disk_gb"),
    };
    memcpy(b->args + BATCH_HEAD + BATCH_ARGS * e, args, sizeof args);
    return 1;
}

/* Apply the gathered events in one step (each is acknowledged by the script). 0, or -1 when
   Redis failed or refused the batch: what it did not apply stays pending in our list. */
static int s_batch_apply(usage_t *self, s_batch_t *b)
{
    if (b->n == 0)
        return 0;
    int nkeys = 2 + b->n, nargs = BATCH_HEAD + BATCH_ARGS * b->n;
    const char **argv = malloc(sizeof *argv * (size_t)(nkeys + nargs));
    if (!argv)
        return -1;
    memcpy(argv, b->keys, sizeof *argv * (size_t)nkeys);
    memcpy(argv + nkeys, b->args, sizeof *argv * (size_t)nargs);
    redisReply *r = store_run(self->store, &lua_usage_apply, nkeys, nkeys + nargs, argv);
    free(argv);
    if (!r)
        return -1;
    int rc = 0;
    if (r->type != REDIS_REPLY_ARRAY) {
        log_error(NULL, "cannot apply events to their usage", "{s:s, s:s, s:i}", "first",
                  b->args[BATCH_HEAD], "error", r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply",
                  "events", b->n);
        rc = -1;
    } else
        for (size_t i = 0; i < r->elements && i < (size_t)b->n; i++)
            if (r->element[i]->type == REDIS_REPLY_INTEGER && r->element[i]->integer == 1)
                log_debug(NULL, "usage applied", "{s:s, s:s, s:s, s:s, s:s}", "id",
                          b->args[BATCH_HEAD + BATCH_ARGS * i], "vm",
                          b->args[BATCH_HEAD + 1 + BATCH_ARGS * i], "state",
                          b->args[BATCH_HEAD + 2 + BATCH_ARGS * i], "power",
                          b->args[BATCH_HEAD + 3 + BATCH_ARGS * i], "at_ms",
                          b->args[BATCH_HEAD + 4 + BATCH_ARGS * i]);
    freeReplyObject(r);
    return rc;
}

/* Acknowledge entries that need no work (other event types, refused or deleted ones). */
static int s_ack(usage_t *self, const char **ids, int count)
{
    if (count == 0)
        return 0;
    const char **argv = malloc(sizeof *argv * (size_t)(count + 3));
    if (!argv)
        return -1;
    argv[0] = "XACK";
    argv[1] = STORE_EVENTS;
    argv[2] = self->group;
    for (int i = 0; i < count; i++)
        argv[3 + i] = ids[i];
    redisReply *r = store_commandv(self->store, count + 3, argv, NULL);
    free(argv);
    int rc = r && r->type == REDIS_REPLY_INTEGER ? 0 : -1;
    if (r)
        freeReplyObject(r);
    return rc;
}

/* Handle an array of [id, fields] entries; fields NIL means the entry was trimmed from the
   stream. The vm.state events go to Redis in one batch (one round trip). Returns how many
   were handled, or -1 when Redis failed (the rest stays pending in our list and is picked up
   by the next pass over it). */
static int s_entries(usage_t *self, const redisReply *entries, char *last_id, size_t last_size)
{
    if (!entries || entries->type != REDIS_REPLY_ARRAY)
        return 0;
    const char **acks = malloc(sizeof *acks * (entries->elements + 1));
    s_batch_t batch = { 0 };
    if (!acks || s_batch_init(self, &batch, entries->elements) != 0) {
        free(acks);
        s_batch_free(&batch);
        return -1;
    }
    int nacks = 0, handled = 0, rc = 0;
    for (size_t i = 0; i < entries->elements; i++) {
        const redisReply *entry = entries->element[i];
        if (entry->type != REDIS_REPLY_ARRAY || entry->elements < 2 ||
            entry->element[0]->type != REDIS_REPLY_STRING)
            continue;
        const char *id = entry->element[0]->str;
        const redisReply *fields = entry->element[1];
        if (last_id)
            util_strlcpy(last_id, id, last_size);
        int ack = 0;
        if (fields->type != REDIS_REPLY_ARRAY)
            ack = 1;
        else {
            const char *type = s_field(fields, "type");
            if (type && strcmp(type, "vm.state") == 0)
                s_apply_vm(self, &batch, id, fields, 0, &ack);
            else if (type && strcmp(type, "vm.power") == 0)
                s_apply_vm(self, &batch, id, fields, 1, &ack);
            else
                ack = 1;
        }
        if (ack)
            acks[nacks++] = id;
        handled++;
    }
    if (s_batch_apply(self, &batch) != 0)
        rc = -1;
    if (s_ack(self, acks, nacks) != 0)
        rc = -1;
    s_batch_free(&batch);
    free(acks);
    if (rc == 0)
        self->handled += (uint64_t)handled;
    return rc == 0 ? handled : -1;
}

/* A reply that says the group or the stream is gone (FLUSHALL, a deleted key): create it
   again on the next poll. */
static int s_lost_group(usage_t *self, const redisReply *r)
{
    if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOGROUP", 7) == 0) {
        self->ready = 0;
        return 1;
    }
    return 0;
}

/* The entries of the one stream in an XREADGROUP reply (NIL = nothing to read). */
static const redisReply *s_stream_entries(const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1)
        return NULL;
    const redisReply *stream = r->element[0];
    if (stream->type != REDIS_REPLY_ARRAY || stream->elements < 2)
        return NULL;
    return stream->element[1];
}

/* One XREADGROUP from `start` (">" = new entries, an id = our own pending list after it).
   Entries read, or -1. */
static int s_read(usage_t *self, const char *start, int *read_p)
{
    char count[16];
    snprintf(count, sizeof count, "%d", self->limits.batch);
    const char *argv[] = { "XREADGROUP", "GROUP",   self->group,  self->consumer, "COUNT",
                           count,        "STREAMS", STORE_EVENTS, start };
    redisReply *r = store_commandv(self->store, (int)(sizeof argv / sizeof *argv), argv, NULL);
    if (!r)
        return -1;
    if (r->type == REDIS_REPLY_ERROR) {
        if (!s_lost_group(self, r))
            log_debug(NULL, "XREADGROUP failed", "{s:s}", "error", r->str);
        freeReplyObject(r);
        return -1;
    }
    const redisReply *entries = s_stream_entries(r);
    int own = strcmp(start, ">") != 0;
    *read_p = entries ? (int)entries->elements : 0;
    int rc = s_entries(self, entries, own ? self->own_cursor : NULL, sizeof self->own_cursor);
    freeReplyObject(r);
    return rc;
}

/* Take over entries that other (dead) consumers read but did not acknowledge within
   claim_idle_ms, one batch per poll, resuming where the last scan stopped. */
static int s_claim(usage_t *self)
{
    char idle[32], count[16];
    snprintf(idle, sizeof idle, "%" PRId64, self->limits.claim_idle_ms);
    snprintf(count, sizeof count, "%d", self->limits.batch);
    const char *argv[] = { "XAUTOCLAIM", STORE_EVENTS,       self->group, self->consumer,
                           idle,         self->claim_cursor, "COUNT",     count };
    redisReply *r = store_commandv(self->store, (int)(sizeof argv / sizeof *argv), argv, NULL);
    if (!r)
        return -1;
    int rc = -1;
    if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2 &&
        r->element[0]->type == REDIS_REPLY_STRING) {
        util_strlcpy(self->claim_cursor, r->element[0]->str, sizeof self->claim_cursor);
        rc = s_entries(self, r->element[1], NULL, 0);
        if (rc > 0)
            log_info(NULL, "took over events of a dead meter", "{s:i}", "entries", rc);
    } else if (r->type == REDIS_REPLY_ERROR && !s_lost_group(self, r))
        log_debug(NULL, "XAUTOCLAIM failed", "{s:s}", "error", r->str);
    freeReplyObject(r);
    return rc;
}

int usage_poll(usage_t *self)
{
    if (!self->ready && usage_setup(self) != 0)
        return -1;
    int total = 0, read = 0;
    /* 1. What we read before a restart under the same name, or before a Redis failure. */
    for (int b = 0; !self->own_done && b < self->limits.batches_per_poll; b++) {
        int n = s_read(self, self->own_cursor, &read);
        if (n < 0)
            goto failed;
        total += n;
        if (read == 0)
            self->own_done = 1;
    }
    if (!self->own_done)
        return total;
    /* 2. What dead consumers left behind. */
    int n = s_claim(self);
    if (n < 0)
        goto failed;
    total += n;
    /* 3. New events, while full batches keep coming. */
    for (int b = 0; b < self->limits.batches_per_poll; b++) {
        n = s_read(self, ">", &read);
        if (n < 0)
            goto failed;
        total += n;
        if (read < self->limits.batch)
            break;
    }
    return total;
failed:
    /* Anything read but not applied is in our pending list: go over it again. */
    self->own_done = 0;
    strcpy(self->own_cursor, "0");
    return -1;
}

/* ---- reports --------------------------------------------------------------------------- */

static void s_record_free(Berth__UsageRecord *rec)
{
    if (rec) {
        free(rec->vm);
        free(rec->owner);
        free(rec->template_);
        free(rec->host);
        free(rec);
    }
}

void usage_report_free(Berth__UsageReport **report_p)
{
    if (report_p && *report_p) {
        Berth__UsageReport *report = *report_p;
        for (size_t i = 0; i < report->n_usage; i++)
            s_record_free(report->usage[i]);
        free(report->usage);
        free(report);
        *report_p = NULL;
    }
}

/* Milliseconds of the intervals (JSON [[start, end_or_0], ...]) inside [from, to); an open
   interval runs until `to`, which the caller has already capped at now. */
static int64_t s_active_ms(const char *intervals, int64_t from, int64_t to)
{
    json_t *list = json_loads(intervals, 0, NULL);
    int64_t total = 0;
    size_t i;
    json_t *iv;
    json_array_foreach(list, i, iv)
    {
        int64_t start = json_integer_value(json_array_get(iv, 0));
        int64_t end = json_integer_value(json_array_get(iv, 1));
        if (end == 0 || end > to)
            end = to;
        if (start < from)
            start = from;
        if (end > start)
            total += end - start;
    }
    json_decref(list);
    return total;
}

static int s_int(const char *text, int64_t *out)
{
    *out = 0;
    return text && *text ? util_parse_int(text, 0, INT64_MAX, out) : 0;
}

/* One record from a row of s_rows, or NULL (no time inside the window, or out of memory). */
static Berth__UsageRecord *s_record(const redisReply *row, int64_t from, int64_t to)
{
    const char *f[9];
    for (int i = 0; i < 9; i++)
        f[i] = i < (int)row->elements && row->element[i]->type == REDIS_REPLY_STRING
                   ? row->element[i]->str
                   : "";
    int64_t active = s_active_ms(f[7], from, to);
    int64_t disk_ms = *f[8] ? s_active_ms(f[8], from, to) : active;
    if (active <= 0 && disk_ms <= 0)
        return NULL;
    int64_t vcpus, ram_mb, disk_gb;
    s_int(f[4], &vcpus);
    s_int(f[5], &ram_mb);
    s_int(f[6], &disk_gb);
    Berth__UsageRecord *rec = malloc(sizeof *rec);
    if (!rec)
        return NULL;
    berth__usage_record__init(rec);
    rec->vm = strdup(f[0]);
    rec->owner = strdup(f[1]);
    rec->template_ = strdup(f[2]);
    rec->host = strdup(f[3]);
    if (!rec->vm || !rec->owner || !rec->template_ || !rec->host) {
        s_record_free(rec);
        return NULL;
    }
    double hours = (double)active / 3600000.0;
    rec->active_ms = active;
    rec->disk_ms = disk_ms;
    rec->vcpu_hours = (double)vcpus * hours;
    rec->ram_gb_hours = (double)ram_mb / 1024.0 * hours;
    rec->disk_gb_hours = (double)disk_gb * ((double)disk_ms / 3600000.0);
    return rec;
}

static int s_by_vm(const void *a, const void *b)
{
    const Berth__UsageRecord *x = *(Berth__UsageRecord *const *)a;
    const Berth__UsageRecord *y = *(Berth__UsageRecord *const *)b;
    return strcmp(x->vm, y->vm);
}

/* Add the records of one chunk of VM ids (candidates[first, first + count)) to report.
   0, USAGE_TOO_MANY, or -1. */
/* The VM ids a report keeps (a group's VMs), sorted; NULL = every VM. */
typedef struct {
    const char **ids;
    size_t n;
} s_only_t;

static int s_by_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int s_kept(const s_only_t *only, const char *vm)
{
    return !only || bsearch(&vm, only->ids, only->n, sizeof *only->ids, s_by_str) != NULL;
}

static int s_chunk(store_t *store, const redisReply *candidates, size_t first, size_t count,
                   const char *owner, const s_only_t *only, int64_t from, int64_t to, int max_vms,
                   Berth__UsageReport *report)
{
    char keys[REPORT_CHUNK][KEYS_MAX];
    const char *argv[REPORT_CHUNK + 2];
    int nkeys = 0;
    for (size_t i = first; i < first + count; i++) {
        const redisReply *vm = candidates->element[i];
        if (vm->type != REDIS_REPLY_STRING || vm->len > VM_ID_MAX || !s_kept(only, vm->str))
            continue;
        keys_build(keys[nkeys], KEYS_USAGE, vm->str, NULL);
        argv[nkeys] = keys[nkeys];
        nkeys++;
    }
    char to_text[32];
    snprintf(to_text, sizeof to_text, "%" PRId64, to);
    argv[nkeys] = owner;
    argv[nkeys + 1] = to_text;
    redisReply *r = store_run(store, &lua_usage_rows, nkeys, nkeys + 2, argv);
    if (!r)
        return -1;
    int rc = 0;
    if (r->type != REDIS_REPLY_ARRAY) {
        log_debug(NULL, "usage rows failed", "{s:s}", "error",
                  r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        rc = -1;
    }
    for (size_t i = 0; rc == 0 && i < r->elements; i++) {
        const redisReply *row = r->element[i];
        if (row->type != REDIS_REPLY_ARRAY || row->elements < 8)
            continue;
        Berth__UsageRecord *rec = s_record(row, from, to);
        if (!rec)
            continue;
        if (report->n_usage >= (size_t)max_vms) {
            s_record_free(rec);
            rc = USAGE_TOO_MANY;
            break;
        }
        report->usage[report->n_usage++] = rec;
    }
    freeReplyObject(r);
    return rc;
}

static int s_report(store_t *store, int64_t from_ms, int64_t to, const s_only_t *only,
                    const char *owner, int64_t now_ms, int max_vms, Berth__UsageReport **report_p,
                    berth_error_t *error);

/* BAD_REQUEST naming field; USAGE_BAD_WINDOW. */
static int s_bad_window(berth_error_t *error, const char *field, const char *message)
{
    error_field(error, field, "%s", message);
    return USAGE_BAD_WINDOW;
}

int usage_report(store_t *store, int64_t from_ms, int64_t to_ms, const char *owner, int64_t now_ms,
                 int max_vms, Berth__UsageReport **report_p, berth_error_t *error)
{
    return usage_report_group(store, from_ms, to_ms, NULL, owner, now_ms, max_vms, report_p, error);
}

int usage_report_group(store_t *store, int64_t from_ms, int64_t to_ms, const char *group,
                       const char *owner, int64_t now_ms, int max_vms,
                       Berth__UsageReport **report_p, berth_error_t *error)
{
    assert(store && report_p && max_vms > 0);
    if (from_ms < 0)
        return s_bad_window(error, "from_ms", "from_ms must not be negative");
    if (to_ms < 0)
        return s_bad_window(error, "to_ms", "to_ms must not be negative");
    int64_t to = to_ms ? to_ms : now_ms;
    if (from_ms > to)
        return s_bad_window(error, "from_ms", "from_ms must not be after to_ms");
    if (owner && strlen(owner) > FIELD_MAX)
        return s_bad_window(error, "owner", "owner is too long");
    if (group && *group && !util_is_uuid(group))
        return s_bad_window(error, "group", "group must be a group id");
    /* A group's VMs are those approval added to its set with their request. */
    s_only_t only = { 0 };
    redisReply *members = NULL;
    if (group && *group) {
        char key[KEYS_MAX];
        members = store_command(store, "SMEMBERS %s", keys_build(key, KEYS_GROUP_VMS, group, NULL));
        if (!members || members->type != REDIS_REPLY_ARRAY) {
            if (members)
                freeReplyObject(members);
            return error_set(error, "UNAVAILABLE", "state store unreachable");
        }
        only.ids = calloc(members->elements + 1, sizeof *only.ids);
        if (!only.ids) {
            freeReplyObject(members);
            return error_set(error, "INTERNAL", "out of memory");
        }
        for (size_t i = 0; i < members->elements; i++)
            if (members->element[i]->type == REDIS_REPLY_STRING)
                only.ids[only.n++] = members->element[i]->str;
        qsort(only.ids, only.n, sizeof *only.ids, s_by_str);
    }
    int rc = s_report(store, from_ms, to, group && *group ? &only : NULL, owner, now_ms, max_vms,
                      report_p, error);
    free(only.ids);
    if (members)
        freeReplyObject(members);
    return rc;
}

/* usage_report_group once the window is checked and the group's VMs are read (only). */
static int s_report(store_t *store, int64_t from_ms, int64_t to, const s_only_t *only,
                    const char *owner, int64_t now_ms, int max_vms, Berth__UsageReport **report_p,
                    berth_error_t *error)
{
    /* Open intervals run until now; nothing counts past the end of the window. */
    int64_t until = to < now_ms ? to : now_ms;

    /* The index holds every VM with usage, scored by the end of its latest interval (+inf
       while open): VMs that went quiet before the window are never read. */
    char from_text[32];
    snprintf(from_text, sizeof from_text, "%" PRId64, from_ms);
    redisReply *ids = store_command(store, "ZRANGEBYSCORE %s %s +inf", USAGE_INDEX, from_text);
    if (!ids)
        return error_set(error, "UNAVAILABLE", "state store unreachable");
    if (ids->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(ids);
        return error_set(error, "UNAVAILABLE", "state store unreachable");
    }
    Berth__UsageReport *report = malloc(sizeof *report);
    size_t cap = ids->elements < (size_t)max_vms ? ids->elements : (size_t)max_vms;
    if (report) {
        berth__usage_report__init(report);
        report->usage = calloc(cap + 1, sizeof *report->usage);
    }
    if (!report || !report->usage) {
        free(report);
        freeReplyObject(ids);
        return error_set(error, "INTERNAL", "out of memory");
    }
    report->from_ms = from_ms;
    report->to_ms = to;
    int rc = 0;
    for (size_t first = 0; first < ids->elements && rc == 0; first += REPORT_CHUNK) {
        size_t count = ids->elements - first < REPORT_CHUNK ? ids->elements - first : REPORT_CHUNK;
        rc = s_chunk(store, ids, first, count, owner ? owner : "", only, from_ms, until, max_vms,
                     report);
    }
    freeReplyObject(ids);
    if (rc != 0) {
        usage_report_free(&report);
        if (rc == USAGE_TOO_MANY) {
            error_set(error, "BAD_REQUEST",
                      "more VMs have usage in this window than a report may hold: narrow the "
                      "window or ask for one owner");
            error_detail(error, "max_vms", "%d", max_vms);
        } else
            error_set(error, "UNAVAILABLE", "state store unreachable");
        return rc;
    }
    qsort(report->usage, report->n_usage, sizeof *report->usage, s_by_vm);
    *report_p = report;
    return 0;
}
