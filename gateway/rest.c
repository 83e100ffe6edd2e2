/*  rest: what every REST handler needs: bus calls that park the request until the answer
    (bounded per service), with the service's error mapped to an HTTP status; resources
    loaded from Redis with ids checked first; strict validation of JSON bodies (every wrong
    field named); and ISO 8601 times. */
#include "gateway.h"
#include "keys.h"
#include "lua_scripts.h"

#include <assert.h>
#include <pthread.h>
#include <time.h>

int rest_assert(http_req_t *req, ProtobufCMessage *msg, assertion_signed_t *sa)
{
    gateway_t *gw = req->app;
    Berth__SignedAssertion **field = assertion_field(msg);
    if (!field || !*req->user)
        return 0; /* nothing acts for a user here: the service decides without one */
    int64_t now = util_now_ms();
    char *roles[] = { req->role };
    Berth__UserAssertion claims = BERTH__USER_ASSERTION__INIT;
    claims.user = req->user;
    claims.roles = roles;
    claims.n_roles = 1;
    /* Groups: "<group id>:<role>" for each membership (permissions.c read them). */
    size_t n_groups = json_object_size(req->groups), n = 0;
    char **groups = n_groups ? calloc(n_groups, sizeof *groups) : NULL;
    const char *group;
    json_t *role;
    json_object_foreach(groups ? req->groups : NULL, group, role)
    {
        if (asprintf(&groups[n], "%s:%s", group, json_string_value(role)) < 0)
            break;
        n++;
    }
    claims.groups = groups;
    claims.n_groups = n;
    claims.scoped = req->scoped;
    claims.issued_ms = now;
    claims.expires_ms = now + gw->call_timeout_ms + ASSERTION_SLACK_MS;
    claims.request_id = (char *)req->request_id;
    claims.action = (char *)msg->descriptor->short_name;
    /* Bound to this body: the assertion says nothing about any other call. */
    int signed_rc = n == n_groups ? assertion_sign(gw->signer, &claims, msg, sa) : -1;
    for (size_t i = 0; i < n; i++)
        free(groups[i]);
    free(groups);
    if (signed_rc != 0) {
        log_error(req->request_id, "cannot sign the user assertion", "{s:s}", "user", req->user);
        http_error(req, "INTERNAL", "cannot state who the call acts for");
        return -1;
    }
    *field = &sa->msg;
    return 0;
}

void rest_unassert(ProtobufCMessage *msg)
{
    Berth__SignedAssertion **field = assertion_field(msg);
    if (field)
        *field = NULL;
}

/* ---- bus calls ---- */

/* One bus call made for an HTTP request: asked by a handler (rest_call), carried by the bus
   actor (calls.c), answered by the handler's continuation on a worker thread. */
typedef struct {
    calls_call_t bus; /* first: the actor's view of it */
    http_req_t *req;
    const ProtobufCMessageDescriptor *answer;
    rest_then_fn *then;
} s_call_t;

/* Calls in flight per callee: a slow or dead service holds only its own share. */
#define S_CALLEES_MAX 16
static struct {
    pthread_mutex_t lock;
    struct {
        const char *service; /* static */
        int n;
    } callee[S_CALLEES_MAX];
} s_flight = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* Count a call to service in: 0, or -1 when max are in flight already. */
static int s_flight_take(const char *service, int max)
{
    int rc = -1;
    pthread_mutex_lock(&s_flight.lock);
    for (int i = 0; i < S_CALLEES_MAX; i++) {
        if (!s_flight.callee[i].service)
            s_flight.callee[i].service = service;
        if (streq(s_flight.callee[i].service, service)) {
            if (s_flight.callee[i].n < max) {
                s_flight.callee[i].n++;
                rc = 0;
            }
            break;
        }
    }
    pthread_mutex_unlock(&s_flight.lock);
    return rc;
}

static void s_flight_give(const char *service)
{
    pthread_mutex_lock(&s_flight.lock);
    for (int i = 0; i < S_CALLEES_MAX && s_flight.callee[i].service; i++)
        if (streq(s_flight.callee[i].service, service)) {
            s_flight.callee[i].n--;
            break;
        }
    pthread_mutex_unlock(&s_flight.lock);
}

static void s_call_free(void *arg)
{
    s_call_t *call = arg;
    if (call) {
        free(call->bus.body);
        if (call->bus.reply)
            berth__envelope__free_unpacked(call->bus.reply, NULL);
        free(call);
    }
}

/* The one place where a call made for an HTTP request is put together: what the bus actor
   sends on the request's behalf (service, body with the signed user assertion, request id,
   deadline). NULL with a 500 set when the assertion cannot be signed, or out of memory. */
static s_call_t *s_call_new(http_req_t *req, const char *service, const ProtobufCMessage *msg,
                            const ProtobufCMessageDescriptor *answer, rest_then_fn *then)
{
    gateway_t *gw = req->app;
    s_call_t *call = calloc(1, sizeof *call);
    if (!call)
        return NULL;
    call->req = req;
    call->answer = answer;
    call->then = then;
    call->bus.service = service;
    call->bus.type = msg->descriptor;
    /* The caller's message (its own, on its stack) carries the assertion while it is
       packed. */
    assertion_signed_t assertion;
    if (rest_assert(req, (ProtobufCMessage *)msg, &assertion) != 0) {
        free(call);
        return NULL;
    }
    call->bus.body_len = protobuf_c_message_get_packed_size(msg);
    call->bus.body = malloc(call->bus.body_len ? call->bus.body_len : 1);
    if (call->bus.body)
        protobuf_c_message_pack(msg, call->bus.body);
    rest_unassert((ProtobufCMessage *)msg);
    if (!call->bus.body) {
        free(call);
        return NULL;
    }
    util_strlcpy(call->bus.request_id, req->request_id, sizeof call->bus.request_id);
    call->bus.timeout_ms = gw->call_timeout_ms;
    return call;
}

/* 503 naming the service (Retry-After is added to every 503). */
static void s_unavailable(http_req_t *req, const char *service, const char *format)
{
    char message[128];
    snprintf(message, sizeof message, format, service);
    http_error_details(req, "UNAVAILABLE", message, json_pack("{s:s}", "service", service));
}

/* The call ended (actor's thread): its slot is free, and the request goes on. */
static void s_call_done(calls_call_t *bus)
{
    s_call_t *call = (s_call_t *)bus;
    s_flight_give(call->bus.service);
    http_wake(call->req);
}

/* The request is back on a worker thread with the call's end. */
static void s_call_resume(http_req_t *req, void *arg)
{
    s_call_t *call = arg;
    gateway_t *gw = req->app;
    const char *service = call->bus.service;
    Berth__Envelope *reply = call->bus.reply;
    if (!reply && call->bus.stopped) {
        s_unavailable(req, service, "the gateway is stopping");
        return;
    }
    if (!reply) {
        log_warn(req->request_id, "bus call got no answer", "{s:s, s:s, s:i}", "callee", service,
                 "type", call->bus.type->short_name, "timeout_ms", gw->call_timeout_ms);
        s_unavailable(req, service, "the %s service did not answer in time");
        return;
    }
    if (reply->error) {
        /* The service's own word, status from the one table (lib/error.c). */
        berth_error_t error;
        error_from_proto(&error, reply->error);
        http_fault(req, &error);
        if (req->status >= 500)
            log_warn(req->request_id, "service answered with an error", "{s:s, s:s, s:s}", "callee",
                     service, "code", error.code, "message", error.message);
        return;
    }
    ProtobufCMessage *body = envelope_body(reply, call->answer);
    if (!body) {
        log_error(req->request_id, "service answered with an unexpected message", "{s:s, s:s, s:s}",
                  "callee", service, "expected", call->answer->short_name, "got",
                  reply->type ? reply->type : "");
        http_error(req, "INTERNAL", "unexpected answer from a service");
        return;
    }
    call->then(req, body);
    protobuf_c_message_free_unpacked(body, NULL);
}

void rest_call(http_req_t *req, const char *service, const ProtobufCMessage *msg,
               const ProtobufCMessageDescriptor *answer, rest_then_fn *then)
{
    gateway_t *gw = req->app;
    s_call_t *call = s_call_new(req, service, msg, answer, then);
    if (!call) {
        if (!req->status)
            http_error(req, "INTERNAL", "out of memory");
        return;
    }
    if (s_flight_take(service, gw->calls_per_service) != 0) {
        log_warn(req->request_id, "too many calls in flight to a service", "{s:s, s:i}", "callee",
                 service, "calls_per_service", gw->calls_per_service);
        s_unavailable(req, service, "too many requests are waiting for the %s service");
        s_call_free(call);
        return;
    }
    call->bus.done = s_call_done;
    if (http_park(req, s_call_resume, call, s_call_free) != 0) {
        s_flight_give(service);
        s_unavailable(req, service, "the gateway is stopping");
        s_call_free(call);
        return;
    }
    calls_submit(gw->calls, &call->bus);
}

int rest_marker_pos(http_req_t *req, const char *index, const char *what, int64_t *pos)
{
    *pos = 0;
    const char *marker = http_query(req, "marker");
    if (!marker)
        return 0;
    if (!rest_id_ok(marker))
        return http_bad_field(req, "marker", "marker is not a %s id", what);
    redisReply *r = store_command(req->store, "ZRANK %s %s", index, marker);
    if (!r || (r->type != REDIS_REPLY_INTEGER && r->type != REDIS_REPLY_NIL)) {
        if (r)
            freeReplyObject(r);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return -1;
    }
    int known = r->type == REDIS_REPLY_INTEGER;
    *pos = known ? r->integer + 1 : 0;
    freeReplyObject(r);
    return known ? 0 : http_bad_field(req, "marker", "marker names no %s", what);
}

json_t *rest_next_marker(http_req_t *req, const char *index, int64_t taken, int64_t limit,
                         const char *last_taken, int64_t last_taken_pos, int at_end,
                         const char *last_seen)
{
    json_t *next = json_null();
    if (taken >= limit) {
        /* Page full: is there anything after its last entry? */
        redisReply *r =
            store_command(req->store, "ZRANGE %s %lld %lld", index, (long long)(last_taken_pos + 1),
                          (long long)(last_taken_pos + 1));
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements > 0)
            next = json_string(last_taken);
        if (r)
            freeReplyObject(r);
    } else if (!at_end && last_seen[0])
        next = json_string(last_seen); /* scan budget spent: continue from there */
    return next;
}

int rest_id_ok(const char *id)
{
    /* Ids are UUIDs today; accept the characters of any id scheme we may use, but nothing
       that could change the meaning of a Redis key (hash-tag braces, spaces, colons). */
    size_t len = id ? strlen(id) : 0;
    return len > 0 && len <= 64 &&
           strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") == len;
}

int rest_find(http_req_t *req, const ProtobufCMessageDescriptor *desc, const char *kind,
              const char *id, ProtobufCMessage **out)
{
    if (!rest_id_ok(id))
        return MODEL_NOT_FOUND;
    char key[KEYS_MAX];
    int k = keys_kind(kind);
    assert(k >= 0); /* callers name a kind of keys.h */
    return model_load(req->store, desc, keys_build(key, (keys_kind_t)k, id, NULL), out);
}

int rest_load(http_req_t *req, const ProtobufCMessageDescriptor *desc, const char *kind,
              const char *id, ProtobufCMessage **out)
{
    ProtobufCMessage *msg = NULL;
    int rc = rest_find(req, desc, kind, id, &msg);
    if (rc == MODEL_NOT_FOUND) {
        char message[96];
        snprintf(message, sizeof message, "no such %s", kind);
        http_error(req, "NOT_FOUND", message);
        return -1;
    }
    if (rc != 0) {
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return -1;
    }
    *out = msg;
    return 0;
}

int rest_is_admin(http_req_t *req)
{
    return streq(req->role, "admin");
}

int rest_body(http_req_t *req, const char *const allowed[])
{
    if (!json_is_object(req->body)) {
        http_error(req, "BAD_REQUEST", "request body must be a JSON object");
        return -1;
    }
    /* Unknown fields are refused rather than ignored: a misspelt optional field would
       otherwise silently fall back to its default. */
    const char *key;
    json_t *value;
    json_object_foreach(req->body, key, value)
    {
        int known = 0;
        for (int i = 0; allowed[i] && !known; i++)
            known = streq(allowed[i], key);
        if (!known)
            return http_bad_field(req, key, "unknown field '%.64s'", key);
    }
    return 0;
}

/* The field's value: 0 and *value, 1 when absent and optional, -1 with a 400 when required
   and absent, or null (no field of the API is nullable: null is not "absent"). */
static int s_field(http_req_t *req, const char *field, int required, json_t **value)
{
    json_t *v = json_is_object(req->body) ? json_object_get(req->body, field) : NULL;
    if (v && json_is_null(v)) {
        return http_bad_field(req, field, "field '%s' must not be null", field);
    }
    if (!v) {
        if (!required)
            return 1;
        return http_bad_field(req, field, "field '%s' is required", field);
    }
    *value = v;
    return 0;
}

int rest_str(http_req_t *req, const char *field, int required, size_t max, const char **out)
{
    json_t *v = NULL;
    int rc = s_field(req, field, required, &v);
    if (rc)
        return rc;
    if (!json_is_string(v)) {
        return http_bad_field(req, field, "field '%s' must be a string", field);
    }
    size_t len = json_string_length(v);
    if (len == 0 || len > max || strlen(json_string_value(v)) != len) {
        return http_bad_field(req, field, "field '%s' must be 1 to %zu characters (no NUL)", field,
                              max);
    }
    *out = json_string_value(v);
    return 0;
}

int rest_int(http_req_t *req, const char *field, int required, int64_t min, int64_t max,
             int64_t *out)
{
    json_t *v = NULL;
    int rc = s_field(req, field, required, &v);
    if (rc)
        return rc;
    if (!json_is_integer(v)) {
        return http_bad_field(req, field, "field '%s' must be an integer", field);
    }
    json_int_t n = json_integer_value(v);
    if (n < min || n > max) {
        return http_bad_field(req, field, "field '%s' must be between %lld and %lld", field,
                              (long long)min, (long long)max);
    }
    *out = n;
    return 0;
}

int rest_bool(http_req_t *req, const char *field, int required, int *out)
{
    json_t *v = NULL;
    int rc = s_field(req, field, required, &v);
    if (rc)
        return rc;
    if (!json_is_boolean(v)) {
        return http_bad_field(req, field, "field '%s' must be true or false", field);
    }
    *out = json_is_true(v);
    return 0;
}

void rest_iso(int64_t ms, char out[REST_TIME_MAX])
{
    time_t secs = (time_t)(ms / 1000);
    int frac = (int)(ms % 1000);
    if (frac < 0) {
        secs -= 1;
        frac += 1000;
    }
    struct tm tm;
    if (!gmtime_r(&secs, &tm)) {
        util_strlcpy(out, "1970-01-01T00:00:00.000Z", REST_TIME_MAX);
        return;
    }
    size_t n = strftime(out, REST_TIME_MAX, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, REST_TIME_MAX - n, ".%03dZ", frac);
}

json_t *rest_time(int64_t ms)
{
    if (ms <= 0)
        return json_null();
    char iso[REST_TIME_MAX];
    rest_iso(ms, iso);
    return json_string(iso);
}

/* Read exactly n digits at *p into *out; advance. */
static int s_digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

int rest_parse_time(const char *text, int64_t *ms)
{
    if (!text || !*text || strlen(text) > 40)
        return -1;
    int64_t secs;
    /* Unix seconds; years 1970 to 9999. */
    if (util_parse_int(text, 0, 253402300799LL, &secs) == 0) {
        *ms = secs * 1000;
        return 0;
    }
    const char *p = text;
    int year, month, day, hour = 0, min = 0, sec = 0, frac_ms = 0, offset_min = 0;
    if (s_digits(&p, 4, &year) || *p++ != '-' || s_digits(&p, 2, &month) || *p++ != '-' ||
        s_digits(&p, 2, &day))
        return -1;
    if (*p) {
        if (*p != 'T' && *p != 't' && *p != ' ')
            return -1;
        p++;
        if (s_digits(&p, 2, &hour) || *p++ != ':' || s_digits(&p, 2, &min))
            return -1;
        if (*p == ':') {
            p++;
            if (s_digits(&p, 2, &sec))
                return -1;
            if (*p == '.' || *p == ',') {
                p++;
                int scale = 100, digits = 0;
                while (*p >= '0' && *p <= '9') {
                    frac_ms += (*p - '0') * scale;
                    scale /= 10;
                    digits++;
                    p++;
                }
                if (digits == 0 || digits > 9)
                    return -1;
            }
        }
        if (*p == 'Z' || *p == 'z')
            p++;
        else if (*p == '+' || *p == '-') {
            int sign = *p++ == '-' ? -1 : 1, oh, om;
            if (s_digits(&p, 2, &oh))
                return -1;
            if (*p == ':')
                p++;
            if (s_digits(&p, 2, &om) || oh > 23 || om > 59)
                return -1;
            offset_min = sign * (oh * 60 + om);
        } else
            return -1; /* a local time without a zone is ambiguous */
        if (*p)
            return -1;
    }
    static const int days_in[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    if (year < 1970 || month < 1 || month > 12 || day < 1 || day > days_in[month - 1] ||
        hour > 23 || min > 59 || sec > 59)
        return -1;
    struct tm tm = { .tm_year = year - 1900,
                     .tm_mon = month - 1,
                     .tm_mday = day,
                     .tm_hour = hour,
                     .tm_min = min,
                     .tm_sec = sec };
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    /* timegm normalises 31 April into 1 May: refuse dates that do not exist. */
    struct tm back;
    if (!gmtime_r(&t, &back) || back.tm_mday != day || back.tm_mon != month - 1)
        return -1;
    *ms = ((int64_t)t - (int64_t)offset_min * 60) * 1000 + frac_ms;
    return *ms >= 0 ? 0 : -1;
}

redisReply *rest_hashes(http_req_t *req, size_t n, const char *const *keys, const char *owner,
                        const char *const *groups, size_t n_groups)
{
    const char **argv = malloc((n + 1 + n_groups) * sizeof *argv);
    redisReply *r = NULL;
    if (argv) {
        if (n)
            memcpy(argv, keys, n * sizeof *argv);
        argv[n] = owner ? owner : "";
        if (n_groups)
            memcpy(argv + n + 1, groups, n_groups * sizeof *argv);
        r = store_run(req->store, &lua_owned_hashes, (int)n, (int)(n + 1 + n_groups), argv);
        free(argv);
    }
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != n) {
        if (r)
            freeReplyObject(r);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return NULL;
    }
    return r;
}

/* The group id a ?group= filter names (an id, or a name) into id; "" when no group has that
   name (the page is then empty: a filter never tells whether a group exists). 0, or -1 with
   503 set. */
int rest_group_id(http_req_t *req, const char *ref, char id[UTIL_ID_LEN])
{
    id[0] = '\0';
    if (util_is_uuid(ref)) {
        util_strlcpy(id, ref, UTIL_ID_LEN);
        return 0;
    }
    if (strlen(ref) > LIMIT_GROUP_NAME_MAX || !rest_id_ok(ref))
        return 0;
    char key[KEYS_MAX];
    redisReply *r =
        store_command(req->store, "HGET %s id", keys_build(key, KEYS_GROUP_NAME, ref, NULL));
    if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL)) {
        if (r)
            freeReplyObject(r);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return -1;
    }
    if (r->type == REDIS_REPLY_STRING && util_is_uuid(r->str))
        util_strlcpy(id, r->str, UTIL_ID_LEN);
    freeReplyObject(r);
    return 0;
}
