/*  http: libmicrohttpd daemon with an internal thread pool. Each worker thread lazily opens
    its own Redis connection, released when the thread ends. A request's body is gathered up
    to the cap, parsed as JSON, and routed by method and path pattern.

    A request lives in its connection's context (s_conn_t) from its first byte to
    MHD_OPTION_NOTIFY_COMPLETED, so a handler can park it (http_park: the connection is
    suspended) and its continuation runs when it is woken (MHD_resume_connection, from any
    thread): MHD then calls the access handler again on the connection's worker thread, and
    the response is queued there. Suspended connections are counted; stopping refuses new
    parks and waits for the count to reach zero before stopping the daemon, as MHD requires. */
#include "http.h"

#include "conns.h"
#include "metrics.h"
#include "permissions.h"

#include <arpa/inet.h>
#include <assert.h>
#include <malloc.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <uuid/uuid.h>

struct _http_t {
    struct MHD_Daemon *daemon;
    http_options_t options;
    const http_route_t *routes;
    void *app;
    atomic_int stopping; /* http_destroy has begun: nothing more is parked */
    atomic_int parked;   /* requests parked once and not yet completed (answer sent or given up) */
    conns_t *conns;      /* open connections: deadlines and the cap with eviction */
};

typedef struct {
    store_t *store;
} s_worker_t;

/* One request, from its first byte to its end. */
typedef struct {
    http_req_t req; /* first: http_park finds the request's context from req */
    http_t *http;
    char *data; /* body gathered so far */
    size_t size;
    int too_large; /* the body crossed the cap */
    int routed;    /* the handler has run (what follows is a continuation) */
    char request_id[UTIL_ID_LEN];
    char params[512]; /* the route's {name} segments; req.params point here */
    /* While parked: what runs when woken, with what. */
    http_resume_fn *resume;
    void *resume_arg;
    void (*resume_free)(void *arg);
    int counted;        /* in http_t.parked until s_completed: its answer is not sent before that */
    const char *route;  /* the route's pattern, "portal" or "unmatched": what metrics name */
    int64_t started_us; /* monotonic, at its first byte */
    /* A streamed body (http_stream_t): */
    const http_stream_t *streaming;
    int64_t received;   /* bytes of the body handed over so far */
    int ended;          /* its end has been handed over */
    int answer_pending; /* an answer set but not sent yet: MHD takes it when the body ends */
} s_conn_t;

/* The gateway's HTTP metrics (metrics.h): requests by method, route pattern and status, and
   their time from the first byte to the answer queued. Labels are route patterns, never
   paths, so a client cannot grow the series. */
static struct {
    metrics_family_t *requests, *seconds;
} s_m;

static void s_metrics_declare(void)
{
    s_m.requests = metrics_counter("berth_http_requests_total",
                                   "HTTP requests answered, by method, route and status",
                                   "method,route,status");
    s_m.seconds =
        metrics_histogram("berth_http_request_seconds",
                          "Time from an HTTP request's first byte to its answer", "method,route");
}

/* The request's method as a label: one of HTTP's, or "other". */
static const char *s_method_label(const char *method)
{
    static const char *const known[] = {
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (streq(method, known[i]))
            return known[i];
    return "other";
}

static pthread_key_t s_worker_key;
static pthread_once_t s_worker_once = PTHREAD_ONCE_INIT;

static void s_worker_free(void *arg)
{
    s_worker_t *w = arg;
    store_destroy(&w->store);
    free(w);
}

static void s_worker_key_init(void)
{
    pthread_key_create(&s_worker_key, s_worker_free);
}

static s_worker_t *s_worker(http_t *self)
{
    pthread_once(&s_worker_once, s_worker_key_init);
    s_worker_t *w = pthread_getspecific(s_worker_key);
    if (w)
        return w;
    w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->store = store_new(self->options.redis_host, self->options.redis_port, 1000, 1000);
    if (w->store && store_use_secrets(w->store, self->options.secrets_dir) != 0)
        store_destroy(&w->store);
    if (!w->store) {
        s_worker_free(w);
        return NULL;
    }
    pthread_setspecific(s_worker_key, w);
    return w;
}

/* A request id without a system call per request (libuuid's generator makes six, and
   system calls are most of what a small request costs): each worker thread draws one random
   UUID and then counts up in its last 48 bits. UUID-shaped (version 4 layout), unique per
   thread by the counter and across threads and instances by the random rest. */
static void s_request_id(char out[UTIL_ID_LEN])
{
    static _Thread_local unsigned char base[16];
    static _Thread_local uint64_t counter;
    if (counter == 0) {
        char seed[UTIL_ID_LEN];
        util_uuid(seed);
        uuid_parse(seed, base);
    }
    counter++;
    unsigned char id[16];
    memcpy(id, base, sizeof id);
    uint64_t carry = counter;
    for (int i = 15; i >= 10; i--) {
        carry += id[i];
        id[i] = (unsigned char)carry;
        carry >>= 8;
    }
    uuid_unparse_lower(id, out);
}

void http_json(http_req_t *req, int status, json_t *body)
{
    json_decref(req->response);
    req->status = status;
    req->response = body;
}

int http_json_text(http_req_t *req, const char *text, size_t len)
{
    struct MHD_Response *response =
        MHD_create_response_from_buffer(len, (void *)text, MHD_RESPMEM_MUST_COPY);
    if (!response ||
        MHD_add_response_header(response, "Content-Type", "application/json") != MHD_YES) {
        if (response)
            MHD_destroy_response(response);
        http_error(req, "INTERNAL", "out of memory");
        return -1;
    }
    if (req->stream)
        MHD_destroy_response(req->stream);
    req->stream = response;
    req->status = 200;
    return 0;
}

/* text as a JSON string; a text that is not valid UTF-8 (a client's bytes cut inside a
   character, say) keeps its ASCII and shows every other byte as '?'. */
static json_t *s_text(const char *text)
{
    json_t *s = json_string(text);
    if (s)
        return s;
    char safe[ERROR_MESSAGE_MAX];
    size_t n = 0;
    for (; text[n] && n < sizeof safe - 1; n++)
        safe[n] = text[n] >= 0x20 && text[n] < 0x7f ? text[n] : '?';
    safe[n] = '\0';
    return json_string(safe);
}

void http_error_details(http_req_t *req, const char *code, const char *message, json_t *details)
{
    if (!json_is_object(details)) {
        json_decref(details);
        details = json_object();
    }
    http_json(req, error_http_status(code),
              json_pack("{s:{s:s, s:o, s:s, s:o}}", "error", "code", code, "message",
                        s_text(message), "request_id", req->request_id, "details", details));
}

void http_error(http_req_t *req, const char *code, const char *message)
{
    http_error_details(req, code, message, NULL);
}

void http_fault(http_req_t *req, const berth_error_t *error)
{
    json_t *details = json_object();
    for (size_t i = 0; i < error->n_details; i++)
        json_object_set_new(details, error->details[i].key, s_text(error->details[i].value));
    http_error_details(req, error->code, error->message, details);
}

int http_bad_field(http_req_t *req, const char *field, const char *format, ...)
{
    char message[ERROR_MESSAGE_MAX];
    va_list ap;
    va_start(ap, format);
    vsnprintf(message, sizeof message, format, ap);
    va_end(ap);
    berth_error_t error;
    error_field(&error, field, "%s", message);
    http_fault(req, &error);
    return -1;
}

const char *http_header(http_req_t *req, const char *name)
{
    return MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, name);
}

const char *http_client_address(http_req_t *req, char *buf, size_t size)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(req->connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = info ? info->client_addr : NULL;
    const void *addr =
        !sa                         ? NULL
        : sa->sa_family == AF_INET  ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
        : sa->sa_family == AF_INET6 ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
                                    : NULL;
    if (!addr || !inet_ntop(sa->sa_family, addr, buf, (socklen_t)size))
        snprintf(buf, size, "unknown");
    return buf;
}

const char *http_query(http_req_t *req, const char *name)
{
    return MHD_lookup_connection_value(req->connection, MHD_GET_ARGUMENT_KIND, name);
}

/* A streamed answer (req->stream, made by its handler): sent with the request id; the
   handler set its own content headers. */
static int s_send_stream(struct MHD_Connection *connection, http_req_t *req)
{
    struct MHD_Response *response = req->stream;
    req->stream = NULL;
    MHD_add_response_header(response, "X-Request-Id", req->request_id);
    if (!MHD_get_response_header(response, "Cache-Control"))
        MHD_add_response_header(response, "Cache-Control", "no-store");
    int rc = MHD_queue_response(connection, (unsigned)req->status, response);
    MHD_destroy_response(response);
    return rc;
}

static int s_send(struct MHD_Connection *connection, http_req_t *req)
{
    if (req->stream && (req->status == 200 || req->status == 304))
        return s_send_stream(connection, req);
    char *text = req->response ? json_dumps(req->response, JSON_COMPACT) : strdup("{}");
    if (!text)
        return MHD_NO;
    size_t len = strlen(text);
    text[len] = '\0';
    struct MHD_Response *response =
        MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!response) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(response, "Content-Type", "application/json");
    MHD_add_response_header(response, "X-Request-Id", req->request_id);
    MHD_add_response_header(response, "Cache-Control", "no-store");
    if (req->location[0])
        MHD_add_response_header(response, "Location", req->location);
    if (req->www_authenticate)
        MHD_add_response_header(response, "WWW-Authenticate", req->www_authenticate);
    for (size_t i = 0; i < sizeof req->set_cookie / sizeof *req->set_cookie; i++)
        if (req->set_cookie[i][0])
            MHD_add_response_header(response, "Set-Cookie", req->set_cookie[i]);
    if (req->allow[0])
        MHD_add_response_header(response, "Allow", req->allow);
    /* Every 503 is something that may pass (a service, Redis, the gateway's own bound); a
       429 says when its bucket has room again. */
    int retry_after = req->retry_after > 0 ? req->retry_after
                      : req->status == 503 ? HTTP_RETRY_AFTER_S
                                           : 0;
    if (retry_after > 0) {
        char seconds[16];
        snprintf(seconds, sizeof seconds, "%d", retry_after);
        MHD_add_response_header(response, "Retry-After", seconds);
    }
    int rc = MHD_queue_response(connection, (unsigned)req->status, response);
    MHD_destroy_response(response);
    return rc;
}

/* Match path against a pattern; {name} segments capture into params. */
static int s_match(const char *pattern, const char *path, const char *params[4], char *buf,
                   size_t bufsize)
{
    int n = 0;
    size_t used = 0;
    while (*pattern && *path) {
        if (*pattern == '{') {
            const char *end = strchr(pattern, '}');
            size_t len = strcspn(path, "/");
            if (!end || len == 0 || n == 4 || used + len + 1 > bufsize)
                return 0;
            memcpy(buf + used, path, len);
            buf[used + len] = '\0';
            params[n++] = buf + used;
            used += len + 1;
            pattern = end + 1;
            path += len;
        } else if (*pattern++ != *path++)
            return 0;
    }
    return *pattern == '\0' && *path == '\0';
}

/* Why the body cannot be used, found while reading it but answered only after routing and
   authentication: a caller without a token learns nothing about how its body was judged. */
typedef struct {
    const char *code; /* NULL = the body is fine */
    const char *message;
} s_body_error_t;

/* Is name one of the space-separated words of list? */
static int s_listed(const char *list, const char *name)
{
    size_t len = strlen(name);
    for (const char *p = list; p && *p;) {
        size_t n = strcspn(p, " ");
        if (n == len && strncmp(p, name, n) == 0)
            return 1;
        p += n;
        p += strspn(p, " ");
    }
    return 0;
}

/* The first query parameter the route does not take, found by s_unknown_query. */
typedef struct {
    const char *allowed;
    const char *unknown;
} s_query_check_t;

static enum MHD_Result s_unknown_query(void *cls, enum MHD_ValueKind kind, const char *key,
                                       const char *value)
{
    (void)kind;
    (void)value;
    s_query_check_t *check = cls;
    if (key && !s_listed(check->allowed, key)) {
        check->unknown = key;
        return MHD_NO;
    }
    return MHD_YES;
}

/* The methods the routes of path take, "GET, DELETE", into out. */
static void s_allow(http_t *self, const char *path, char *out, size_t size)
{
    static __thread char buf[512];
    out[0] = '\0';
    for (const http_route_t *r = self->routes; r->method; r++) {
        const char *params[4] = { 0 };
        if (!s_match(r->pattern, path, params, buf, sizeof buf) || strstr(out, r->method))
            continue;
        size_t used = strlen(out);
        snprintf(out + used, size - used, "%s%s", used ? ", " : "", r->method);
    }
}

/* Has the client address (by_user 0) or the authenticated user (by_user 1) used up its
   rate limit? Then 1 with the 429 and its Retry-After set. The probes (/healthz, /readyz)
   are never limited: an orchestrator sharing an address with busy clients must not read a
   refusal as a dead gateway. */
static int s_rate_limited(http_t *self, http_req_t *req, int by_user)
{
    ratelimit_t *limit = by_user ? self->options.rate_user : self->options.rate_address;
    if (!limit || strcmp(req->path, "/healthz") == 0 || strcmp(req->path, "/readyz") == 0)
        return 0;
    int wait_s;
    if (by_user)
        wait_s = ratelimit_take(limit, req->user, strlen(req->user));
    else {
        const union MHD_ConnectionInfo *info =
            MHD_get_connection_info(req->connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        const struct sockaddr *sa = info ? info->client_addr : NULL;
        if (!sa || sa->sa_family != AF_INET)
            return 0;
        const struct in_addr *in = &((const struct sockaddr_in *)sa)->sin_addr;
        wait_s = ratelimit_take(limit, in, sizeof *in);
    }
    if (wait_s == 0)
        return 0;
    req->retry_after = wait_s;
    char message[96];
    snprintf(message, sizeof message, "too many requests from this %s; retry after %d s",
             by_user ? "user" : "address", wait_s);
    http_error_details(req, "RATE_LIMITED", message,
                       json_pack("{s:s}", "limit", by_user ? "user" : "address"));
    return 1;
}

/* Find the route, check who may call it and the query parameters: the route, or NULL with
   the answer set (or a portal file served). */
static const http_route_t *s_gate(http_t *self, s_conn_t *c)
{
    http_req_t *req = &c->req;
    const http_route_t *route = NULL;
    int path_found = 0;
    for (const http_route_t *r = self->routes; r->method && !route; r++) {
        const char *params[4] = { 0 };
        if (!s_match(r->pattern, req->path, params, c->params, sizeof c->params))
            continue;
        path_found = 1;
        if (strcmp(r->method, req->method) != 0)
            continue;
        memcpy(req->params, params, sizeof params);
        req->action = r->action;
        route = r;
        c->route = r->pattern;
    }
    if (!route) {
        /* Outside the API, a GET or HEAD is a portal file. */
        int api = strncmp(req->path, "/v1/", 4) == 0 || streq(req->path, "/v1");
        if (!path_found && !api && self->options.fallback &&
            (streq(req->method, "GET") || streq(req->method, "HEAD"))) {
            c->route = "portal";
            if (!s_rate_limited(self, req, 0))
                self->options.fallback(req);
            return NULL;
        }
        if (path_found) {
            s_allow(self, req->path, req->allow, sizeof req->allow);
            http_error(req, "METHOD_NOT_ALLOWED", "method not allowed on this resource");
        } else
            http_error(req, "NOT_FOUND", "no such resource");
        return NULL;
    }
    if (s_rate_limited(self, req, 0))
        return NULL;
    if (!perm_public(route->action)) {
        if (!self->options.authenticate) {
            http_error(req, "INTERNAL", "no authenticator configured");
            return NULL;
        }
        if (self->options.authenticate(req) != 0) {
            if (!req->status)
                http_error(req, "UNAUTHORIZED", "authentication required");
            return NULL;
        }
        if (s_rate_limited(self, req, 1))
            return NULL;
        if (perm_gate(req, route->action) != 0)
            return NULL;
        /* A flag that makes the call another action (DELETE /v1/vms/{id}?force=true) is
           that action's to allow, and is audited as it. */
        for (const http_flag_t *f = self->options.flags; f && f->method; f++) {
            const char *value = http_query(req, f->param);
            if (strcmp(f->method, route->method) == 0 && strcmp(f->pattern, route->pattern) == 0 &&
                value && strcmp(value, "true") == 0) {
                req->action = f->action;
                if (perm_gate(req, req->action) != 0)
                    return NULL;
            }
        }
    }
    /* A misspelt parameter would otherwise silently fall back to its default. */
    s_query_check_t check = { .allowed = route->query };
    MHD_get_connection_values(req->connection, MHD_GET_ARGUMENT_KIND, s_unknown_query, &check);
    if (check.unknown) {
        /* The name as the client sent it, cut short and with anything but printable ASCII
           shown as '?': it goes into JSON, which must stay valid UTF-8. */
        char name[65];
        size_t n = 0;
        for (; check.unknown[n] && n < sizeof name - 1; n++)
            name[n] = check.unknown[n] >= 0x20 && check.unknown[n] < 0x7f ? check.unknown[n] : '?';
        name[n] = '\0';
        http_bad_field(req, name, "unknown query parameter '%s'", name);
        return NULL;
    }
    return route;
}

/* Find the route, check who may call it, then run it. */
static void s_route(http_t *self, s_conn_t *c, const s_body_error_t *body_error)
{
    http_req_t *req = &c->req;
    const http_route_t *route = s_gate(self, c);
    if (!route)
        return;
    if (body_error->code) {
        http_error(req, body_error->code, body_error->message);
        return;
    }
    route->fn(req);
}

int http_park(http_req_t *req, http_resume_fn *fn, void *arg, void (*free_fn)(void *arg))
{
    s_conn_t *c = (s_conn_t *)req;
    http_t *self = c->http;
    assert(!c->resume && fn);
    /* Counted before the check, and http_destroy sets stopping before it reads the count:
       either this park is seen there, or stopping is seen here. It stays counted until the
       request completes, so the server is not stopped between a wake and the answer's last
       byte (a woken request's answer is queued, not yet sent). */
    if (!c->counted)
        atomic_fetch_add(&self->parked, 1);
    if (atomic_load(&self->stopping)) {
        if (!c->counted)
            atomic_fetch_sub(&self->parked, 1);
        return -1;
    }
    c->counted = 1;
    c->resume = fn;
    c->resume_arg = arg;
    c->resume_free = free_fn;
    MHD_suspend_connection(req->connection);
    return 0;
}

void http_wake(http_req_t *req)
{
    MHD_resume_connection(req->connection);
}

/* The parked request is back (woken, or ended): what it waited for is handed to its
   continuation when run, then freed. It stays counted until it completes (s_completed). */
static void s_unpark(s_conn_t *c, int run)
{
    http_resume_fn *fn = c->resume;
    void *arg = c->resume_arg;
    void (*free_fn)(void *) = c->resume_free;
    c->resume = NULL;
    c->resume_arg = NULL;
    c->resume_free = NULL;
    if (run)
        fn(&c->req, arg);
    if (free_fn)
        free_fn(arg);
}

/* Send the request's answer (logged, counted, audited). A streamed request whose body has
   not ended cannot be answered before it ends (libmicrohttpd takes an answer only before
   the body or after it): the answer is kept, and sent at the body's end. */
static enum MHD_Result s_answer(http_t *self, s_conn_t *c, struct MHD_Connection *connection,
                                const char *method, const char *url)
{
    http_req_t *req = &c->req;
    if (!req->status)
        http_error(req, "INTERNAL", "handler gave no response");
    int counted = c->answer_pending;
    if (!counted) {
        log_emit(req->status >= 500 ? BERTH_LOG_WARN : BERTH_LOG_DEBUG, req->request_id,
                 "http request", "{s:s, s:s, s:i, s:s}", "method", method, "path", url, "status",
                 req->status, "user", req->user);
        char status[8];
        snprintf(status, sizeof status, "%d", req->status);
        metrics_add(s_m.requests, 1, s_method_label(method), c->route, status);
        metrics_observe(s_m.seconds, (double)(zclock_usecs() - c->started_us) / 1e6,
                        s_method_label(method), c->route);
        if (self->options.done)
            self->options.done(req);
    }
    if (c->streaming && !c->ended) {
        /* Before the body: libmicrohttpd sends it and reads no more of the body (it closes
           the connection after). Once the body has begun, it must end first. */
        if (c->received == 0 && s_send(connection, req) == MHD_YES) {
            json_decref(req->response);
            req->response = NULL;
            return MHD_YES;
        }
        c->answer_pending = 1;
        return MHD_YES;
    }
    int rc = s_send(connection, req);
    json_decref(req->response);
    req->response = NULL;
    return rc;
}

/* Which streamed route the request is for: its method and path match one of the streams
   and its Content-Type is application/octet-stream. NULL: none (its body is gathered). */
static const http_stream_t *s_stream_of(http_t *self, struct MHD_Connection *connection,
                                        const char *method, const char *url)
{
    const char *ct = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Content-Type");
    if (!ct || strncmp(ct, "application/octet-stream", 24) != 0 ||
        (ct[24] && ct[24] != ';' && ct[24] != ' '))
        return NULL;
    for (const http_stream_t *st = self->options.streams; st && st->method; st++) {
        const char *params[4] = { 0 };
        char buf[512];
        if (streq(st->method, method) && s_match(st->pattern, url, params, buf, sizeof buf))
            return st;
    }
    return NULL;
}

/* A streamed request's call: its start (the route's checks, then begin), a piece of its
   body (data), its end, or a continuation after it was parked. */
static enum MHD_Result s_stream_access(http_t *self, s_conn_t *c, struct MHD_Connection *connection,
                                       const char *method, const char *url, const char *upload_data,
                                       size_t *upload_data_size)
{
    http_req_t *req = &c->req;
    s_worker_t *w = s_worker(self);
    req->store = w ? w->store : NULL;
    if (!c->routed) {
        c->routed = 1;
        req->method = method;
        req->path = url;
        req->request_id = c->request_id;
        req->app = self->app;
        if (!req->store)
            http_error(req, "UNAVAILABLE", "gateway worker could not start");
        else if (s_gate(self, c))
            c->streaming->begin(req);
    } else if (c->resume) {
        s_unpark(c, 1);
        conns_body_wait(connection, 0);
    }
    while (!c->resume) {
        if (req->status && !c->answer_pending && !c->ended) {
            s_answer(self, c, connection, method, url);
            if (!c->answer_pending)
                return MHD_YES; /* sent before the body */
        }
        if (*upload_data_size) {
            conns_body_progress(connection);
            size_t taken = *upload_data_size;
            if (!req->status) /* after a refusal the rest of the body is read and dropped */
                taken = c->streaming->data(req, upload_data, *upload_data_size);
            c->received += (int64_t)taken;
            upload_data += taken;
            *upload_data_size -= taken;
            if (!*upload_data_size || c->resume)
                break;
            continue;
        }
        if (c->received < req->body_length)
            break; /* more of the body to come */
        if (!c->ended) {
            c->ended = 1;
            if (!req->status)
                c->streaming->end(req);
            continue;
        }
        if (conns_request_busy(connection) != 0)
            return MHD_NO;
        return s_answer(self, c, connection, method, url);
    }
    if (c->resume)
        conns_body_wait(connection, 1);
    return MHD_YES;
}

/* The request's first call with its whole body: set up the request and run its route. */
static void s_start(http_t *self, s_conn_t *c, const char *method, const char *url)
{
    http_req_t *req = &c->req;
    req->method = method;
    req->path = url;
    req->request_id = c->request_id;
    req->app = self->app;
    if (!req->store)
        http_error(req, "UNAVAILABLE", "gateway worker could not start");
    else if (c->too_large)
        http_error(req, "PAYLOAD_TOO_LARGE", "request body exceeds the size limit");
    else {
        s_body_error_t body_error = { 0 };
        if (c->size) {
            const char *ct =
                MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, "Content-Type");
            json_error_t err;
            if (ct && strncmp(ct, "application/json", 16) != 0)
                body_error =
                    (s_body_error_t){ "UNSUPPORTED_MEDIA_TYPE", "request body must be JSON" };
            else if (!(req->body = json_loadb(c->data, c->size, JSON_REJECT_DUPLICATES, &err)))
                body_error = (s_body_error_t){ "BAD_REQUEST", "request body is not valid JSON" };
        }
        s_route(self, c, &body_error);
    }
}

static enum MHD_Result s_access(void *cls, struct MHD_Connection *connection, const char *url,
                                const char *method, const char *version, const char *upload_data,
                                size_t *upload_data_size, void **con_cls)
{
    (void)version;
    http_t *self = cls;
    s_conn_t *c = *con_cls;
    if (!c) {
        if (conns_header_done(connection) != 0)
            return MHD_NO; /* cut for being too slow or evicted: it is closing */
        c = calloc(1, sizeof *c);
        if (!c)
            return MHD_NO;
        c->http = self;
        c->req.connection = connection;
        c->route = "unmatched";
        c->started_us = zclock_usecs();
        const char *rid = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "X-Request-Id");
        if (rid && strlen(rid) < UTIL_ID_LEN &&
            strspn(rid, "abcdefghijklmnopqrstuvwxyz"
                        "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") == strlen(rid))
            util_strlcpy(c->request_id, rid, sizeof c->request_id);
        else
            s_request_id(c->request_id);
        const char *cl = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Content-Length");
        int64_t declared;
        if (cl && util_parse_int(cl, 0, INT64_MAX, &declared) == 0 &&
            (size_t)declared > self->options.body_max)
            c->too_large = 1;
        c->req.body_length = cl && util_parse_int(cl, 0, INT64_MAX, &declared) == 0 ? declared : -1;
        *con_cls = c;
        /* A streamed body: the route's checks and its begin run now, before the body. */
        if ((c->streaming = s_stream_of(self, connection, method, url)))
            return s_stream_access(self, c, connection, method, url, upload_data, upload_data_size);
        return MHD_YES;
    }
    if (c->streaming)
        return s_stream_access(self, c, connection, method, url, upload_data, upload_data_size);
    if (*upload_data_size) {
        if (!c->too_large && c->size + *upload_data_size <= self->options.body_max) {
            char *grown = realloc(c->data, c->size + *upload_data_size + 1);
            if (!grown)
                return MHD_NO;
            memcpy(grown + c->size, upload_data, *upload_data_size);
            c->data = grown;
            c->size += *upload_data_size;
            c->data[c->size] = '\0';
        } else
            c->too_large = 1;
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (conns_request_busy(connection) != 0)
        return MHD_NO;

    /* The worker thread's Redis connection: a parked request resumes on the thread that
       serves its connection, but take it afresh all the same. */
    http_req_t *req = &c->req;
    s_worker_t *w = s_worker(self);
    req->store = w ? w->store : NULL;
    if (c->resume)
        s_unpark(c, 1); /* woken: the handler's continuation */
    else if (!c->routed) {
        c->routed = 1;
        s_start(self, c, method, url);
    }
    if (c->resume)
        return MHD_YES; /* parked (again): suspended until woken */
    return s_answer(self, c, connection, method, url);
}

static void s_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
                        enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)toe;
    conns_request_done(connection);
    s_conn_t *c = *con_cls;
    if (c) {
        /* Parked and never run again: the client went away while its request waited. */
        if (c->resume)
            s_unpark(c, 0);
        if (c->streaming && c->streaming->release && c->req.upload)
            c->streaming->release(&c->req, toe == MHD_REQUEST_TERMINATED_COMPLETED_OK);
        if (c->counted)
            atomic_fetch_sub(&c->http->parked, 1);
        json_decref(c->req.body);
        json_decref(c->req.groups);
        json_decref(c->req.response);
        if (c->req.stream)
            MHD_destroy_response(c->req.stream);
        free(c->data);
        free(c);
        *con_cls = NULL;
    }
}

#define S_LIMIT_OPTIONS 5

/* The daemon's connection limits (an MHD_OPTION_ARRAY) and the table that enforces ours.
   libmicrohttpd's own limit is only the hard bound (HTTP_THREAD_CONNECTIONS a thread): at
   it, it stops accepting and newcomers wait in the listen queue, which is what let a few
   hundred idle connections take the API down. Our cap (max_connections, below that bound)
   evicts an idle connection for each newcomer instead, and the header and body deadlines
   cut slow clients whose every byte would restart libmicrohttpd's inactivity timeout. */
static int s_connection_limits(http_t *self, struct MHD_OptionItem out[S_LIMIT_OPTIONS])
{
    const http_options_t *o = &self->options;
    int slots = o->threads * HTTP_THREAD_CONNECTIONS;
    conns_options_t co = { .max = o->max_connections,
                           .slots = slots,
                           .header_timeout_ms = o->header_timeout_ms,
                           .body_timeout_ms = o->body_timeout_ms };
    self->conns = conns_new(&co);
    if (!self->conns)
        return -1;
    int n = 0;
    out[n++] = (struct MHD_OptionItem){ MHD_OPTION_CONNECTION_LIMIT, slots, NULL };
    out[n++] =
        (struct MHD_OptionItem){ MHD_OPTION_PER_IP_CONNECTION_LIMIT, o->per_ip_connections, NULL };
    out[n++] = (struct MHD_OptionItem){ MHD_OPTION_CONNECTION_TIMEOUT, o->timeout_s, NULL };
    out[n++] = (struct MHD_OptionItem){ MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)conns_notify,
                                        self->conns };
    out[n++] = (struct MHD_OptionItem){ MHD_OPTION_END, 0, NULL };
    return 0;
}

http_t *http_new(const http_options_t *options, const http_route_t *routes, void *app)
{
    s_metrics_declare();
    http_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->options = *options;
    self->routes = routes;
    self->app = app;
    /* A large answer (a page of 500 VMs: a few MB of replies, messages and JSON, all freed at
       the end of the request) made glibc hand the memory back to the kernel after each
       request and fault it in again for the next: sysmalloc, madvise and page faults were a
       third of a listing's time. Worker threads keep what they used instead (bounded by the
       largest answer, which list_limit_max bounds). */
    mallopt(M_MMAP_THRESHOLD, 8 * 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)options->port) };
    if (inet_pton(AF_INET, options->bind, &addr.sin_addr) != 1) {
        log_error(NULL, "http_bind is not an IPv4 address", "{s:s}", "http_bind", options->bind);
        free(self);
        return NULL;
    }
    /* HTTPS, or plain HTTP where only this machine can listen in. */
    int tls = options->tls_cert_pem && options->tls_key_pem;
    if (!tls && (ntohl(addr.sin_addr.s_addr) >> 24) != 127) {
        log_error(NULL,
                  "refusing plain HTTP on a non-loopback address: set http_tls_cert and "
                  "http_tls_key (HTTPS), or bind to 127.0.0.1",
                  "{s:s}", "http_bind", options->bind);
        free(self);
        return NULL;
    }
    if (tls && MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
        log_error(NULL, "this libmicrohttpd has no TLS support: cannot serve HTTPS", NULL);
        free(self);
        return NULL;
    }
    struct MHD_OptionItem tls_options[] = {
        { MHD_OPTION_HTTPS_MEM_KEY, 0, (void *)options->tls_key_pem },
        { MHD_OPTION_HTTPS_MEM_CERT, 0, (void *)options->tls_cert_pem },
        { MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)"NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2" },
        { MHD_OPTION_END, 0, NULL },
    };
    struct MHD_OptionItem limits[S_LIMIT_OPTIONS];
    if (s_connection_limits(self, limits) != 0) {
        free(self);
        return NULL;
    }
    self->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
            MHD_ALLOW_SUSPEND_RESUME | (tls ? MHD_USE_TLS : 0),
        (uint16_t)options->port, NULL, NULL, s_access, self, MHD_OPTION_ARRAY,
        tls ? tls_options : tls_options + 3, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)options->threads, MHD_OPTION_ARRAY, limits,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)64 * 1024, MHD_OPTION_NOTIFY_COMPLETED,
        s_completed, NULL, MHD_OPTION_END);
    if (!self->daemon) {
        log_error(NULL, "cannot start HTTP server", "{s:s, s:i, s:b}", "bind", options->bind,
                  "port", options->port, "tls", tls);
        conns_destroy(&self->conns);
        free(self);
        return NULL;
    }
    return self;
}

void http_destroy(http_t **self_p)
{
    if (self_p && *self_p) {
        http_t *self = *self_p;
        /* MHD must not be stopped with a connection suspended: refuse new parks, then wait
           for the parked ones to be woken (whoever they wait for has been told to end them),
           run, and their answers sent. */
        atomic_store(&self->stopping, 1);
        int64_t deadline = util_mono_ms() + 10000;
        while (atomic_load(&self->parked) > 0 && util_mono_ms() < deadline)
            zclock_sleep(5);
        if (atomic_load(&self->parked) > 0)
            log_error(NULL, "requests still parked when the HTTP server stopped", "{s:i}", "parked",
                      atomic_load(&self->parked));
        MHD_stop_daemon(self->daemon);
        conns_destroy(&self->conns);
        free(*self_p);
        *self_p = NULL;
    }
}
