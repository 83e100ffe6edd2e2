/*  events: GET /v1/events, a Server-Sent Events stream of the state changes the caller may
    see, read from the event stream berth:events (every transition appends to it, model_tx).

    One reader thread, with its own Redis connection, waits on the stream (XREAD BLOCK) and
    appends each entry, formatted once, to the bounded byte queue of every stream whose caller
    may see it: the same rules as the REST reads (permissions.c: members their own VMs, tasks
    and requests, managers and auditors their group's, admins and operators everything, hosts
    only for admins and operators). An entry that does not name its owner and group (a power
    state, a task's progress, a request's step) is resolved from the object's hash, and
    remembered: who owns an object and which group it is in never change.

    An HTTP worker thread never waits here: a stream's answer is a libmicrohttpd response fed
    by a content-reader callback that copies what its queue holds, and suspends the connection
    when the queue is empty; the reader resumes it when it appends. A client that does not
    read fast enough to keep its queue under events_queue_max bytes is dropped with a final
    stream.end event (it resumes with Last-Event-ID), so no slow client holds memory or the
    others. Each SSE event's id is the stream entry's id: a client that reconnects with
    Last-Event-ID (or ?since) gets every entry after it first (the reader catches it up from
    its cursor, then it joins the live fan-out, with no gap and nothing twice). Keepalive
    comments keep idle streams (and the proxies between) open; the token, the user's state
    and the caller's group roles are checked again every events_check_ms, so a revoked or
    expired token or a disabled user ends the stream, and a membership change applies. */
#include "gateway.h"
#include "keys.h"
#include "metrics.h"

#include <microhttpd.h>
#include <pthread.h>

#define S_ID_MAX        48    /* a stream entry id, "<ms>-<seq>" */
#define S_BLOCK_MS      250   /* one XREAD waits at most this long (then timers, catch-ups) */
#define S_READ_COUNT    512   /* entries one XREAD takes at most */
#define S_CATCHUP_COUNT 256   /* entries one catch-up read takes at most */
#define S_OWNERS_MAX    65536 /* objects whose owner and group the reader remembers */
#define S_BLOCK_SIZE    4096  /* bytes libmicrohttpd asks the content reader for at most */
#define S_KICK_MS       500   /* a resumed connection that has not read since is resumed again */

/* Who may see an entry. */
typedef enum {
    S_SCOPE_PLATFORM, /* admins and operators only (hosts, and anything not tied to below) */
    S_SCOPE_VM,       /* vm.get of owner/group */
    S_SCOPE_TASK,     /* task.get of its VM's owner/group, or who started it */
    S_SCOPE_REQUEST,  /* request.get of owner/group */
    S_SCOPE_GROUP,    /* group.get of group */
    S_SCOPE_BUDGET,   /* budget.get of group (a budget's alerts: managers, auditors, admins) */
} s_scope_kind_t;

typedef struct {
    s_scope_kind_t kind;
    char owner[HTTP_USER_MAX];
    char group[72];
    char starter[HTTP_USER_MAX]; /* a task's owner: who started it */
    char target[72];             /* a task's VM */
} s_scope_t;

typedef struct s_client {
    struct s_client *next;
    uint64_t serial; /* names the client between two holds of the mutex */
    events_t *events;
    struct MHD_Connection *connection;
    char token_key[128]; /* the token record (auth_token_key): revocation, per-token cap */
    char address[64];    /* client address: per-address cap */
    char user[HTTP_USER_MAX];
    char role[HTTP_ROLE_MAX];
    json_t *groups;        /* group id -> role (owned; refreshed by the reader) */
    int64_t expires_ms;    /* the token's expiry (unix ms) */
    char cursor[S_ID_MAX]; /* last entry id behind this client: it gets only later ones */
    int live;              /* caught up: gets entries from the reader's fan-out */
    char *buf;             /* SSE text waiting to be sent: [off, len) */
    size_t len, off, cap;
    int mid_block;      /* what was handed out ends inside an SSE block (its rest is owed) */
    int suspended;      /* the content reader suspended the connection: resume to send */
    int64_t resumed_ms; /* when it was last resumed with no read since (0: read since) */
    int ending;         /* the final event is queued: end of stream once it is sent */
} s_client_t;

struct _events_t {
    events_options_t options;
    pthread_mutex_t mutex; /* guards the clients, their queues, stopping */
    s_client_t *clients;
    int count;
    uint64_t serials;
    int stopping;
    pthread_t reader;
    int started;
    /* The reader thread's own. */
    store_t *store;
    char last[S_ID_MAX]; /* the last entry read (fan-out goes on after it); "" until known */
    zhashx_t *owners;    /* "v:<id>", "t:<id>", "r:<id>" -> "owner\037group\037starter\037vm" */
    int down_logged;
    /* Connections to resume once the mutex is released: libmicrohttpd takes its own locks in
       MHD_resume_connection, and may hold them while it frees a response (s_free, which
       takes ours), so it is never called with ours held. */
    struct MHD_Connection **resume;
    size_t n_resume, cap_resume;
};

/* ---- stream ids ---- */

/* Is text a stream entry id ("<ms>-<seq>", both decimal)? */
static int s_id_ok(const char *text)
{
    size_t len = text ? strlen(text) : 0;
    size_t ms = text ? strspn(text, "0123456789") : 0;
    if (len == 0 || len >= S_ID_MAX || ms == 0 || ms > 20 || text[ms] != '-')
        return 0;
    size_t seq = strspn(text + ms + 1, "0123456789");
    return seq > 0 && seq <= 20 && ms + 1 + seq == len;
}

/* Order of two stream ids (negative, 0, positive). */
static int s_id_cmp(const char *a, const char *b)
{
    unsigned long long am = 0, as = 0, bm = 0, bs = 0;
    sscanf(a, "%llu-%llu", &am, &as);
    sscanf(b, "%llu-%llu", &bm, &bs);
    if (am != bm)
        return am < bm ? -1 : 1;
    return as < bs ? -1 : as > bs ? 1 : 0;
}

/* ---- queues (under the mutex) ---- */

/* The client has something to send: its suspended connection is resumed when the mutex is
   released (s_unlock). Until then it stays suspended, so libmicrohttpd neither runs nor
   closes it. */
static void s_wake(s_client_t *c)
{
    events_t *self = c->events;
    if (!c->suspended)
        return;
    if (self->n_resume == self->cap_resume) {
        size_t cap = self->cap_resume ? self->cap_resume * 2 : 16;
        struct MHD_Connection **grown = realloc(self->resume, cap * sizeof *grown);
        if (!grown)
            return; /* stays suspended: woken by the next keepalive */
        self->resume = grown;
        self->cap_resume = cap;
    }
    c->suspended = 0;
    c->resumed_ms = util_mono_ms();
    self->resume[self->n_resume++] = c->connection;
}

/* Resume again the connections resumed a while ago that have not read since. A resume that
   reaches libmicrohttpd while the suspension it undoes is still being completed on the
   connection's thread can be lost (seen under load: a stream that stopped for good); one
   more is harmless. Under the mutex: a registered client's connection is alive (its
   response, freed before the connection, unregisters it in s_free under this mutex). */
static void s_kick(events_t *self)
{
    int64_t now = util_mono_ms();
    pthread_mutex_lock(&self->mutex);
    for (s_client_t *c = self->clients; c; c = c->next)
        if (c->resumed_ms && now - c->resumed_ms >= S_KICK_MS) {
            c->resumed_ms = now;
            MHD_resume_connection(c->connection);
        }
    pthread_mutex_unlock(&self->mutex);
}

/* Release the mutex, then resume the connections woken while it was held. */
static void s_unlock(events_t *self)
{
    struct MHD_Connection **resume = self->resume;
    size_t n = self->n_resume;
    self->resume = NULL;
    self->n_resume = self->cap_resume = 0;
    pthread_mutex_unlock(&self->mutex);
    for (size_t i = 0; i < n; i++)
        MHD_resume_connection(resume[i]);
    free(resume);
}

/* Append text to the client's queue, growing it up to queue_max (0 or -1 when it would not
   fit: the caller drops the client). */
static int s_append(s_client_t *c, const char *text, size_t len, size_t max)
{
    if (c->off > 0 && c->off == c->len)
        c->off = c->len = 0;
    if (c->len - c->off + len > max)
        return -1;
    if (c->len + len > c->cap) {
        if (c->off > 0) {
            memmove(c->buf, c->buf + c->off, c->len - c->off);
            c->len -= c->off;
            c->off = 0;
        }
        if (c->len + len > c->cap) {
            size_t cap = c->cap ? c->cap : 1024;
            while (cap < c->len + len)
                cap *= 2;
            char *grown = realloc(c->buf, cap);
            if (!grown)
                return -1;
            c->buf = grown;
            c->cap = cap;
        }
    }
    memcpy(c->buf + c->len, text, len);
    c->len += len;
    return 0;
}

/* End the client's stream with a final stream.end event saying why; dropped (slow) clients
   lose what was waiting: they resume from the last id they received. */
static void s_end(s_client_t *c, const char *reason, int drop)
{
    if (c->ending)
        return;
    if (drop) {
        /* The rest of a block half sent is kept: the stream stays well-formed. */
        const char *end = c->mid_block ? memmem(c->buf + c->off, c->len - c->off, "\n\n", 2) : NULL;
        if (end)
            c->len = (size_t)(end + 2 - c->buf);
        else
            c->off = c->len = 0;
    }
    char text[256];
    int n = snprintf(text, sizeof text, "event: stream.end\ndata: {\"reason\":\"%s\"}\n\n", reason);
    if (s_append(c, text, (size_t)n, (size_t)-1) != 0) {
        c->off = c->len = 0; /* no memory for it: end without it */
    }
    c->ending = 1;
    s_wake(c);
}

/* Queue text for the client, or drop it when its queue is full. */
static void s_push(events_t *self, s_client_t *c, const char *text, size_t len)
{
    if (c->ending)
        return;
    if (s_append(c, text, len, self->options.queue_max) != 0) {
        log_warn(NULL, "event stream client too slow: dropped", "{s:s, s:s}", "user", c->user,
                 "address", c->address);
        s_end(c, "slow client: resume with Last-Event-ID", 1);
        return;
    }
    s_wake(c);
}

static s_client_t *s_find(events_t *self, uint64_t serial)
{
    for (s_client_t *c = self->clients; c; c = c->next)
        if (c->serial == serial)
            return c;
    return NULL;
}

/* ---- libmicrohttpd's side ---- */

/* The content reader: what the queue holds, or the end, or nothing yet (suspended until the
   reader appends). Runs on the connection's worker thread. */
static ssize_t s_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    s_client_t *c = cls;
    events_t *self = c->events;
    pthread_mutex_lock(&self->mutex);
    c->resumed_ms = 0;
    ssize_t n;
    if (c->len > c->off) {
        size_t take = c->len - c->off < max ? c->len - c->off : max;
        memcpy(buf, c->buf + c->off, take);
        c->off += take;
        /* Blocks end with a blank line and hold none inside. */
        c->mid_block = !(c->off >= 2 && c->buf[c->off - 2] == '\n' && c->buf[c->off - 1] == '\n');
        n = (ssize_t)take;
    } else if (c->ending || self->stopping)
        n = MHD_CONTENT_READER_END_OF_STREAM;
    else {
        /* Suspending twice is undefined in libmicrohttpd: only when not suspended already
           (a reader called again before its suspension took effect just waits). */
        if (!c->suspended) {
            c->suspended = 1;
            MHD_suspend_connection(c->connection);
        }
        n = 0;
    }
    pthread_mutex_unlock(&self->mutex);
    return n;
}

/* The response is gone (the stream ended, or the client went away): forget the client. */
static void s_free(void *cls)
{
    s_client_t *c = cls;
    events_t *self = c->events;
    pthread_mutex_lock(&self->mutex);
    for (s_client_t **p = &self->clients; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            self->count--;
            break;
        }
    pthread_mutex_unlock(&self->mutex);
    json_decref(c->groups);
    free(c->buf);
    free(c);
}

/* ---- who may see what ---- */

/* May the client see an entry of this scope? The REST reads' rules (permissions.c). */
static int s_may_see(const s_client_t *c, const s_scope_t *scope)
{
    http_req_t r;
    memset(&r, 0, sizeof r);
    util_strlcpy(r.user, c->user, sizeof r.user);
    util_strlcpy(r.role, c->role, sizeof r.role);
    r.groups = c->groups;
    switch (scope->kind) {
    case S_SCOPE_VM:
        return perm_allows(&r, "vm.get", scope->owner, scope->group);
    case S_SCOPE_TASK:
        return (*scope->starter && streq(scope->starter, c->user)) ||
               perm_allows(&r, "task.get", scope->owner, scope->group);
    case S_SCOPE_REQUEST:
        return perm_allows(&r, "request.get", scope->owner, scope->group);
    case S_SCOPE_GROUP:
        return perm_allows(&r, "group.get", NULL, scope->group);
    case S_SCOPE_BUDGET:
        return perm_allows(&r, "budget.get", NULL, scope->group);
    case S_SCOPE_PLATFORM:
    default:
        return perm_allows(&r, "host.get", NULL, NULL);
    }
}

/* Owner, group (and a task's starter) of the object kind:id, from the reader's memory or
   its hash. 0, or -1 when unknown (Redis failed, or no such object). */
static int s_owner_of(events_t *self, char kind, const char *id, s_scope_t *scope)
{
    if (!rest_id_ok(id))
        return -1;
    char name[96];
    snprintf(name, sizeof name, "%c:%s", kind, id);
    const char *known = zhashx_lookup(self->owners, name);
    char text[512];
    if (!known) {
        char key[KEYS_MAX];
        redisReply *r = NULL;
        if (kind == 'v')
            r = store_command(self->store, "HMGET %s owner group",
                              keys_build(key, KEYS_VM, id, NULL));
        else if (kind == 'r')
            r = store_command(self->store, "HMGET %s owner group",
                              keys_build(key, KEYS_REQUEST, id, NULL));
        else
            r = store_command(self->store, "HMGET %s target owner",
                              keys_build(key, KEYS_TASK, id, NULL));
        int ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                 r->element[0]->type == REDIS_REPLY_STRING &&
                 r->element[1]->type == REDIS_REPLY_STRING;
        if (ok && kind == 't') {
            s_scope_t vm = { 0 };
            char target[72], starter[HTTP_USER_MAX];
            util_strlcpy(target, r->element[0]->str, sizeof target);
            util_strlcpy(starter, r->element[1]->str, sizeof starter);
            freeReplyObject(r);
            if (s_owner_of(self, 'v', target, &vm) != 0)
                return -1;
            snprintf(text, sizeof text, "%s\037%s\037%s\037%s", vm.owner, vm.group, starter,
                     target);
        } else {
            if (ok)
                snprintf(text, sizeof text, "%s\037%s\037\037", r->element[0]->str,
                         r->element[1]->str);
            if (r)
                freeReplyObject(r);
            if (!ok)
                return -1;
        }
        if (zhashx_size(self->owners) >= S_OWNERS_MAX)
            zhashx_purge(self->owners);
        zhashx_insert(self->owners, name, text);
        known = text;
    }
    const char *g = strchr(known, '\037');
    const char *s = g ? strchr(g + 1, '\037') : NULL;
    const char *t = s ? strchr(s + 1, '\037') : NULL;
    if (!g || !s || !t)
        return -1;
    snprintf(scope->owner, sizeof scope->owner, "%.*s", (int)(g - known), known);
    snprintf(scope->group, sizeof scope->group, "%.*s", (int)(s - g - 1), g + 1);
    snprintf(scope->starter, sizeof scope->starter, "%.*s", (int)(t - s - 1), s + 1);
    util_strlcpy(scope->target, t + 1, sizeof scope->target);
    return 0;
}

/* Who may see the entry with these fields. Anything the reader cannot place is shown only to
   the platform roles. */
static void s_scope(events_t *self, json_t *fields, s_scope_t *scope)
{
    memset(scope, 0, sizeof *scope);
    scope->kind = S_SCOPE_PLATFORM;
    const char *type = json_string_value(json_object_get(fields, "type"));
    const char *vm = json_string_value(json_object_get(fields, "vm"));
    const char *task = json_string_value(json_object_get(fields, "task"));
    const char *request = json_string_value(json_object_get(fields, "request"));
    const char *owner = json_string_value(json_object_get(fields, "owner"));
    const char *group = json_string_value(json_object_get(fields, "group"));
    if (!type || strncmp(type, "host.", 5) == 0)
        return;
    if (task && *task) {
        if (s_owner_of(self, 't', task, scope) == 0)
            scope->kind = S_SCOPE_TASK;
    } else if (vm && *vm) {
        if (owner && group) {
            util_strlcpy(scope->owner, owner, sizeof scope->owner);
            util_strlcpy(scope->group, group, sizeof scope->group);
            scope->kind = S_SCOPE_VM;
        } else if (s_owner_of(self, 'v', vm, scope) == 0)
            scope->kind = S_SCOPE_VM;
    } else if (request && *request) {
        if (s_owner_of(self, 'r', request, scope) == 0)
            scope->kind = S_SCOPE_REQUEST;
    } else if (group && *group && strncmp(type, "group.", 6) == 0) {
        util_strlcpy(scope->group, group, sizeof scope->group);
        scope->kind = S_SCOPE_GROUP;
    } else if (group && *group && strncmp(type, "budget.", 7) == 0) {
        util_strlcpy(scope->group, group, sizeof scope->group);
        scope->kind = S_SCOPE_BUDGET;
    }
}

/* ---- entries ---- */

/* The SSE text of one stream entry ([id, [field, value, ...]]) and who may see it. A new
   string (id, event, data: the fields as JSON, the Redis key left out), or NULL when the
   entry is malformed. */
static char *s_format(events_t *self, const redisReply *entry, char id[S_ID_MAX], s_scope_t *scope)
{
    if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2 ||
        entry->element[0]->type != REDIS_REPLY_STRING ||
        entry->element[1]->type != REDIS_REPLY_ARRAY || !s_id_ok(entry->element[0]->str))
        return NULL;
    util_strlcpy(id, entry->element[0]->str, S_ID_MAX);
    const redisReply *f = entry->element[1];
    json_t *fields = json_object();
    static const char *const numbers[] = { "at_ms",   "version", "vcpus", "ram_mb",
                                           "disk_gb", "percent", NULL };
    for (size_t i = 0; fields && i + 1 < f->elements; i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING || streq(k->str, "key"))
            continue;
        int number = 0;
        for (int j = 0; numbers[j] && !number; j++)
            number = streq(k->str, numbers[j]);
        int64_t value;
        json_t *jv = number && util_parse_int(v->str, INT64_MIN, INT64_MAX, &value) == 0
                         ? json_integer(value)
                         : json_string(v->str);
        if (jv)
            json_object_set_new(fields, k->str, jv);
    }
    if (!fields)
        return NULL;
    s_scope(self, fields, scope);
    /* A task's events name its VM: a client following one VM follows its tasks too. */
    if (scope->kind == S_SCOPE_TASK && *scope->target && !json_object_get(fields, "vm"))
        json_object_set_new(fields, "vm", json_string(scope->target));
    const char *type = json_string_value(json_object_get(fields, "type"));
    if (!type || !*type || strlen(type) > 64 ||
        strspn(type, "abcdefghijklmnopqrstuvwxyz0123456789._-") != strlen(type))
        type = "message";
    char *data = json_dumps(fields, JSON_COMPACT);
    char *text = NULL;
    if (data && asprintf(&text, "id: %s\nevent: %s\ndata: %s\n\n", id, type, data) < 0)
        text = NULL;
    free(data);
    json_decref(fields);
    return text;
}

/* Hand one entry to every live client that may see it and is not past it. */
static void s_fan_out(events_t *self, const redisReply *entry)
{
    char id[S_ID_MAX];
    s_scope_t scope;
    char *text = s_format(self, entry, id, &scope);
    if (!text)
        return;
    size_t len = strlen(text);
    pthread_mutex_lock(&self->mutex);
    for (s_client_t *c = self->clients; c; c = c->next) {
        if (!c->live || c->ending || s_id_cmp(id, c->cursor) <= 0)
            continue;
        util_strlcpy(c->cursor, id, sizeof c->cursor);
        if (s_may_see(c, &scope))
            s_push(self, c, text, len);
    }
    s_unlock(self);
    free(text);
}

/* Catch the clients that are behind up with the stream, from their cursor to the reader's
   position: a few hundred entries per client per round, never more than half a queue, so a
   long backlog arrives at the client's own pace. Caught up, a client goes live. */
static void s_catch_up(events_t *self)
{
    enum { S_BATCH = 64 };
    uint64_t serials[S_BATCH];
    char cursors[S_BATCH][S_ID_MAX];
    int n = 0;
    pthread_mutex_lock(&self->mutex);
    for (s_client_t *c = self->clients; c && n < S_BATCH; c = c->next)
        if (!c->live && !c->ending) {
            serials[n] = c->serial;
            util_strlcpy(cursors[n], c->cursor, S_ID_MAX);
            n++;
        }
    s_unlock(self);
    for (int i = 0; i < n; i++) {
        redisReply *r = NULL;
        if (s_id_cmp(cursors[i], self->last) < 0) {
            /* "(id": strictly after the client's cursor (hiredis joins "(" and the id). */
            r = store_command(self->store, "XRANGE %s (%s %s COUNT %d", KEYS_EVENTS, cursors[i],
                              self->last, S_CATCHUP_COUNT);
            if (!r || r->type != REDIS_REPLY_ARRAY) {
                if (r)
                    freeReplyObject(r);
                continue;
            }
        }
        size_t done = 0, total = r ? r->elements : 0;
        for (; done < total; done++) {
            char id[S_ID_MAX];
            s_scope_t scope;
            char *text = s_format(self, r->element[done], id, &scope);
            pthread_mutex_lock(&self->mutex);
            s_client_t *c = s_find(self, serials[i]);
            int full = !c || c->ending || c->len - c->off > self->options.queue_max / 2;
            if (!full && text) {
                util_strlcpy(c->cursor, id, sizeof c->cursor);
                if (s_may_see(c, &scope))
                    s_push(self, c, text, strlen(text));
            }
            s_unlock(self);
            free(text);
            if (full)
                break;
        }
        if (done == total && total < S_CATCHUP_COUNT) {
            pthread_mutex_lock(&self->mutex);
            s_client_t *c = s_find(self, serials[i]);
            if (c)
                c->live = 1;
            s_unlock(self);
        }
        if (r)
            freeReplyObject(r);
    }
}

/* ---- timers ---- */

static void s_keepalive(events_t *self)
{
    static const char text[] = ": keepalive\n\n";
    pthread_mutex_lock(&self->mutex);
    for (s_client_t *c = self->clients; c; c = c->next)
        s_push(self, c, text, sizeof text - 1);
    s_unlock(self);
}

/* End the streams whose token expired (checked every round: no Redis). */
static void s_expire(events_t *self)
{
    int64_t now = util_now_ms();
    pthread_mutex_lock(&self->mutex);
    for (s_client_t *c = self->clients; c; c = c->next)
        if (c->expires_ms <= now)
            s_end(c, "token expired", 0);
    s_unlock(self);
}

/* Check every stream's token (revoked: its record is gone), user (disabled or deleted) and
   group roles again in Redis. */
static void s_check(events_t *self)
{
    typedef struct {
        uint64_t serial;
        char token_key[128];
        char user[HTTP_USER_MAX];
    } s_who_t;
    pthread_mutex_lock(&self->mutex);
    int n = self->count;
    metrics_set(metrics_gauge("berth_event_streams", "Event streams (SSE) open", NULL), n);
    s_who_t *who = n > 0 ? calloc((size_t)n, sizeof *who) : NULL;
    int k = 0;
    for (s_client_t *c = self->clients; who && c && k < n; c = c->next)
        if (!c->ending) {
            who[k].serial = c->serial;
            util_strlcpy(who[k].token_key, c->token_key, sizeof who[k].token_key);
            util_strlcpy(who[k].user, c->user, sizeof who[k].user);
            k++;
        }
    s_unlock(self);
    for (int i = 0; i < k; i++) {
        char key[KEYS_MAX];
        const char *end = NULL;
        json_t *groups = NULL;
        redisReply *t = store_command(self->store, "EXISTS %s", who[i].token_key);
        redisReply *u = store_command(self->store, "HMGET %s role state",
                                      keys_build(key, KEYS_USER, who[i].user, NULL));
        redisReply *g = store_command(self->store, "HGETALL %s",
                                      keys_build(key, KEYS_USER_GROUPS, who[i].user, NULL));
        if (t && t->type == REDIS_REPLY_INTEGER && t->integer == 0)
            end = "token revoked";
        else if (u && u->type == REDIS_REPLY_ARRAY && u->elements == 2 &&
                 (u->element[0]->type != REDIS_REPLY_STRING ||
                  (u->element[1]->type == REDIS_REPLY_STRING &&
                   streq(u->element[1]->str, "DISABLED"))))
            end = "user disabled";
        if (g && g->type == REDIS_REPLY_ARRAY && (groups = json_object()))
            for (size_t j = 0; j + 1 < g->elements; j += 2)
                if (g->element[j]->type == REDIS_REPLY_STRING &&
                    g->element[j + 1]->type == REDIS_REPLY_STRING)
                    json_object_set_new(groups, g->element[j]->str,
                                        json_string(g->element[j + 1]->str));
        if (t)
            freeReplyObject(t);
        if (u)
            freeReplyObject(u);
        if (g)
            freeReplyObject(g);
        pthread_mutex_lock(&self->mutex);
        s_client_t *c = s_find(self, who[i].serial);
        if (c && end)
            s_end(c, end, 0);
        else if (c && groups) {
            json_decref(c->groups);
            c->groups = groups;
            groups = NULL;
        }
        s_unlock(self);
        json_decref(groups);
    }
    free(who);
}

/* ---- the reader thread ---- */

/* Does the entry's type begin with prefix? */
static int s_type_is(const redisReply *entry, const char *prefix)
{
    if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2 ||
        entry->element[1]->type != REDIS_REPLY_ARRAY)
        return 0;
    const redisReply *f = entry->element[1];
    for (size_t i = 0; i + 1 < f->elements; i += 2)
        if (f->element[i]->type == REDIS_REPLY_STRING && streq(f->element[i]->str, "type"))
            return f->element[i + 1]->type == REDIS_REPLY_STRING &&
                   strncmp(f->element[i + 1]->str, prefix, strlen(prefix)) == 0;
    return 0;
}

/* The id of the stream's newest entry into out ("0-0" when it is empty). 0 or -1 (Redis). */
static int s_newest(store_t *store, char out[S_ID_MAX])
{
    redisReply *r = store_command(store, "XREVRANGE %s + - COUNT 1", KEYS_EVENTS);
    int rc = -1;
    if (r && r->type == REDIS_REPLY_ARRAY) {
        rc = 0;
        util_strlcpy(out, "0-0", S_ID_MAX);
        if (r->elements == 1 && r->element[0]->type == REDIS_REPLY_ARRAY &&
            r->element[0]->elements == 2 && r->element[0]->element[0]->type == REDIS_REPLY_STRING &&
            s_id_ok(r->element[0]->element[0]->str))
            util_strlcpy(out, r->element[0]->element[0]->str, S_ID_MAX);
    }
    if (r)
        freeReplyObject(r);
    return rc;
}

static int s_stopping(events_t *self)
{
    pthread_mutex_lock(&self->mutex);
    int stopping = self->stopping;
    pthread_mutex_unlock(&self->mutex);
    return stopping;
}

static void s_redis_down(events_t *self)
{
    if (!self->down_logged)
        log_warn(NULL, "event stream reader: state store unreachable; retrying", NULL);
    self->down_logged = 1;
    zclock_sleep(S_BLOCK_MS);
}

static void *s_reader(void *arg)
{
    events_t *self = arg;
    int64_t next_keepalive = util_mono_ms() + self->options.keepalive_ms;
    int64_t next_check = util_mono_ms() + self->options.check_ms;
    while (!s_stopping(self)) {
        if (!self->last[0] && s_newest(self->store, self->last) != 0) {
            self->last[0] = '\0';
            s_redis_down(self);
            continue;
        }
        s_catch_up(self);
        redisReply *r = store_command(self->store, "XREAD COUNT %d BLOCK %d STREAMS %s %s",
                                      S_READ_COUNT, S_BLOCK_MS, KEYS_EVENTS, self->last);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            if (r)
                freeReplyObject(r);
            s_redis_down(self);
            continue;
        }
        self->down_logged = 0;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
            r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 2) {
            const redisReply *entries = r->element[0]->element[1];
            for (size_t i = 0; entries->type == REDIS_REPLY_ARRAY && i < entries->elements; i++) {
                const redisReply *e = entries->element[i];
                if (s_type_is(e, "template."))
                    catalog_forget(); /* the gateway's rendered catalog (catalog.c) */
                s_fan_out(self, e);
                if (e->type == REDIS_REPLY_ARRAY && e->elements == 2 &&
                    e->element[0]->type == REDIS_REPLY_STRING && s_id_ok(e->element[0]->str))
                    util_strlcpy(self->last, e->element[0]->str, sizeof self->last);
            }
        }
        freeReplyObject(r);
        int64_t now = util_mono_ms();
        s_kick(self);
        s_expire(self);
        if (now >= next_keepalive) {
            s_keepalive(self);
            next_keepalive = now + self->options.keepalive_ms;
        }
        if (now >= next_check) {
            s_check(self);
            next_check = now + self->options.check_ms;
        }
    }
    return NULL;
}

events_t *events_new(const events_options_t *options)
{
    events_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->options = *options;
    pthread_mutex_init(&self->mutex, NULL);
    self->owners = zhashx_new();
    self->store = store_new(options->redis_host, options->redis_port, 1000, S_BLOCK_MS + 2000);
    if (self->owners) {
        zhashx_set_destructor(self->owners, (zhashx_destructor_fn *)zstr_free);
        zhashx_set_duplicator(self->owners, (zhashx_duplicator_fn *)strdup);
    }
    if (!self->owners || !self->store ||
        store_use_secrets(self->store, options->secrets_dir) != 0) {
        log_error(NULL, "cannot set up the event stream reader", NULL);
        events_destroy(&self);
        return NULL;
    }
    if (pthread_create(&self->reader, NULL, s_reader, self) != 0) {
        log_error(NULL, "cannot start the event stream reader", NULL);
        events_destroy(&self);
        return NULL;
    }
    self->started = 1;
    return self;
}

void events_stop(events_t *self)
{
    if (!self)
        return;
    pthread_mutex_lock(&self->mutex);
    self->stopping = 1;
    for (s_client_t *c = self->clients; c; c = c->next)
        s_end(c, "gateway stopping", 0);
    s_unlock(self);
    if (self->started) {
        pthread_join(self->reader, NULL);
        self->started = 0;
    }
}

void events_destroy(events_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    events_t *self = *self_p;
    events_stop(self);
    /* The HTTP server has stopped: every response, and with it every client, is gone. */
    zhashx_destroy(&self->owners);
    store_destroy(&self->store);
    free(self->resume);
    pthread_mutex_destroy(&self->mutex);
    free(self);
    *self_p = NULL;
}

/* ---- GET /v1/events ---- */

/* Refuse a stream over one of the caps: 429 naming the limit. */
static void s_capped(http_req_t *req, events_t *self, const char *limit, int max)
{
    char message[128];
    snprintf(message, sizeof message, "too many event streams open for this %s (at most %d)", limit,
             max);
    req->retry_after = self->options.retry_ms / 1000 > 0 ? self->options.retry_ms / 1000 : 1;
    http_error_details(req, "RATE_LIMITED", message,
                       json_pack("{s:s, s:i}", "limit", limit, "max", max));
}

void events_stream(http_req_t *req)
{
    gateway_t *gw = req->app;
    events_t *self = gw->events;
    if (!self) {
        http_error(req, "UNAVAILABLE", "event streams are not available");
        return;
    }
    /* Where to start: after the entry a reconnecting client last saw (the EventSource header
       wins over the URL it reconnects to), else now. */
    const char *since = http_header(req, "Last-Event-ID");
    const char *field = "Last-Event-ID";
    if (!since || !*since) {
        since = http_query(req, "since");
        field = "since";
    }
    if (since && !s_id_ok(since)) {
        http_bad_field(req, field, "%s must be an event id (<ms>-<seq>, as sent in id:)", field);
        return;
    }
    char cursor[S_ID_MAX];
    if (since)
        util_strlcpy(cursor, since, sizeof cursor);
    else if (s_newest(req->store, cursor) != 0) {
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return;
    }
    /* The token's expiry ends the stream; its record is what revocation deletes. */
    char token_key[128];
    int64_t expires_ms = INT64_MAX;
    if (auth_token_key(req, token_key, sizeof token_key) == 0) {
        redisReply *r = store_command(req->store, "HGET %s expires_ms", token_key);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            if (r)
                freeReplyObject(r);
            http_error(req, "UNAVAILABLE", "state store unreachable");
            return;
        }
        if (r->type != REDIS_REPLY_STRING || util_parse_int(r->str, 0, INT64_MAX, &expires_ms) != 0)
            expires_ms = 0;
        freeReplyObject(r);
        if (expires_ms <= util_now_ms()) {
            http_error(req, "UNAUTHORIZED", "invalid or expired token");
            return;
        }
    } else
        snprintf(token_key, sizeof token_key, "user:%s", req->user);
    char address[64];
    http_client_address(req, address, sizeof address);

    s_client_t *c = calloc(1, sizeof *c);
    if (!c || !(c->groups = json_deep_copy(req->groups ? req->groups : json_object()))) {
        free(c);
        http_error(req, "INTERNAL", "out of memory");
        return;
    }
    c->events = self;
    c->connection = req->connection;
    util_strlcpy(c->token_key, token_key, sizeof c->token_key);
    util_strlcpy(c->address, address, sizeof c->address);
    util_strlcpy(c->user, req->user, sizeof c->user);
    util_strlcpy(c->role, req->role, sizeof c->role);
    util_strlcpy(c->cursor, cursor, sizeof c->cursor);
    c->expires_ms = expires_ms;
    char hello[256];
    int n =
        snprintf(hello, sizeof hello,
                 "retry: %d\nid: %s\nevent: stream.open\ndata: {\"since\":\"%s\","
                 "\"keepalive_s\":%d}\n\n",
                 self->options.retry_ms, cursor, cursor, (self->options.keepalive_ms + 999) / 1000);
    s_append(c, hello, (size_t)n, (size_t)-1);

    /* The caps and the registration in one hold of the mutex. */
    pthread_mutex_lock(&self->mutex);
    int by_token = 0, by_address = 0;
    for (s_client_t *o = self->clients; o; o = o->next) {
        by_token += streq(o->token_key, c->token_key) && !o->ending;
        by_address += streq(o->address, c->address) && !o->ending;
    }
    const char *limit = self->stopping                             ? "stopping"
                        : self->count >= self->options.max_streams ? "gateway"
                        : by_token >= self->options.per_token      ? "token"
                        : by_address >= self->options.per_address  ? "address"
                                                                   : NULL;
    if (!limit) {
        c->serial = ++self->serials;
        c->next = self->clients;
        self->clients = c;
        self->count++;
    }
    pthread_mutex_unlock(&self->mutex);
    if (limit) {
        json_decref(c->groups);
        free(c->buf);
        free(c);
        if (streq(limit, "stopping"))
            http_error(req, "UNAVAILABLE", "the gateway is stopping");
        else
            s_capped(req, self, limit,
                     streq(limit, "gateway") ? self->options.max_streams
                     : streq(limit, "token") ? self->options.per_token
                                             : self->options.per_address);
        return;
    }
    /* From here the response owns the client: s_free unregisters it. */
    struct MHD_Response *response =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, S_BLOCK_SIZE, s_read, c, s_free);
    if (!response) {
        s_free(c);
        http_error(req, "INTERNAL", "cannot start the event stream");
        return;
    }
    MHD_add_response_header(response, "Content-Type", "text/event-stream");
    MHD_add_response_header(response, "X-Accel-Buffering", "no");
    log_info(req->request_id, "event stream opened", "{s:s, s:s, s:s}", "user", req->user, "since",
             cursor, "address", address);
    req->status = 200;
    req->stream = response;
}
