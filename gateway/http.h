/*  http: the gateway's hardened HTTP edge on libmicrohttpd. Thread pool, connection and
    per-IP limits, timeouts, a body cap (413), JSON only, X-Request-Id on every response,
    the error body {"error": {code, message, request_id, details}}, a route table and the
    permission check of the action each route names (permissions.h). */
#ifndef BERTH_GATEWAY_HTTP_H
#define BERTH_GATEWAY_HTTP_H

#include "error.h"
#include "ratelimit.h"
#include "service.h"

#include <jansson.h>

typedef struct _http_t http_t;

#define HTTP_USER_MAX 65 /* longest user name plus the NUL */
#define HTTP_ROLE_MAX 16

/* What a route handler sees and answers through. */
typedef struct {
    const char *method;
    const char *path;
    const char *params[4]; /* {name} segments of the route, in order */
    json_t *body;          /* parsed JSON body (POST/PUT) or NULL */
    const char *request_id;
    struct MHD_Connection *connection;
    store_t *store;               /* this worker thread's Redis connection */
    void *app;                    /* the gateway state given to http_new */
    char user[HTTP_USER_MAX];     /* authenticated user ("" on public routes) */
    char role[HTTP_ROLE_MAX];     /* "admin", "operator" or "user" once authenticated */
    json_t *groups;               /* the caller's group id -> role (owned; permissions.c) */
    int scoped;                   /* an API key limited to some groups: groups holds only those,
                                     and the caller acts as a plain user */
    int status;                   /* response to send */
    json_t *response;             /* owned; sent as JSON */
    char location[256];           /* Location header when set */
    const char *www_authenticate; /* WWW-Authenticate header when set (static string) */
    char set_cookie[2][160];      /* Set-Cookie headers when set (the portal's session) */
    char allow[64];               /* Allow header of a 405: the methods the path takes */
    int retry_after;              /* Retry-After header in seconds when > 0 */
    const char *action;           /* the matched route's action (NULL: no route matched) */
    struct MHD_Response *stream;  /* owned; when set, sent with status (200 or 304) instead of
                                     a JSON body (GET /v1/events, a portal file) */
    void *upload;                 /* a streamed body's state (http_stream_t), its handler's */
    int64_t body_length;          /* a streamed body's Content-Length (-1: not given) */
} http_req_t;

typedef void(http_handler_fn)(http_req_t *req);

/* Authenticate the request: 0 with req->user and req->role set, or -1 with the response
   (401) already set. */
typedef int(http_auth_fn)(http_req_t *req);

typedef struct {
    const char *method;
    const char *pattern; /* "/v1/vms/{id}" */
    http_handler_fn *fn;
    const char *action; /* its row of the permission table (permissions.c) */
    const char *query;  /* query parameters the route takes, space-separated (NULL: none);
                           any other is refused with a 400 naming it */
} http_route_t;

/* A query flag that makes a route's call another action (DELETE /v1/vms/{id}?force=true):
   with ?param=true the call is checked and audited as that action. */
typedef struct {
    const char *method;
    const char *pattern; /* as in the route */
    const char *param;
    const char *action;
} http_flag_t;

/* Connections one HTTP thread holds at most. libmicrohttpd's epoll loop (MAX_EVENTS 128)
   waits again, with the full idle timeout, whenever one wait returned exactly 128 events:
   seen as a thread whose 128 idle connections all closed at once sleeping 30 s with its
   sockets in CLOSE-WAIT and new clients stuck in the listen queue. A thread with at most
   124 connections, its listen socket and its wake-up pipe never sees 128 events at once. */
#define HTTP_THREAD_CONNECTIONS 124
/* http_max_connections may be at most this many per thread: the rest of each thread's
   connections is room for newcomers while evicted connections close. */
#define HTTP_THREAD_CONNECTIONS_CAP 112

/* A route whose body is not gathered but handed to its handler piece by piece as it
   arrives (an image upload): taken instead of the route's JSON handler when the request's
   Content-Type is application/octet-stream. The route's authentication, permission and
   query checks run first, before any byte of the body is read. */
typedef struct {
    const char *method;
    const char *pattern; /* a route of the table */
    /* Before the body: set a response to refuse (sent at once, the body left unread), or
       take it (req->upload set), possibly parked meanwhile (rest_call). */
    void (*begin)(http_req_t *req);
    /* A piece of the body: the bytes taken, all of them unless the handler parked (the rest
       comes again when it is woken). A response set here is sent once the body has ended;
       the rest of the body is read and dropped. */
    size_t (*data)(http_req_t *req, const char *data, size_t size);
    /* The body has ended: set the response, or park. */
    void (*end)(http_req_t *req);
    /* The request is over (answered, or the client went away: finished 0): release
       req->upload. */
    void (*release)(http_req_t *req, int finished);
} http_stream_t;

typedef struct {
    const char *bind; /* IPv4 address */
    int port;
    int threads;
    int max_connections; /* kept open; past it a newcomer evicts an idle one (conns.h) */
    int per_ip_connections;
    int timeout_s;         /* libmicrohttpd's inactivity timeout (a stalled reader) */
    int header_timeout_ms; /* a request header is due this long after open / last response */
    int body_timeout_ms;   /* a request body is due this long after its header */
    size_t body_max;       /* bytes; larger bodies get 413 */
    const char *redis_host;
    int redis_port;
    const char *secrets_dir;    /* the Redis password's directory (NULL: none) */
    const char *tls_cert_pem;   /* HTTPS when both are set (PEM text, kept by the caller */
    const char *tls_key_pem;    /*   until http_destroy); plain HTTP only on loopback */
    http_auth_fn *authenticate; /* for every route whose action is not public */
    ratelimit_t *rate_address;  /* requests per client address (borrowed; NULL: none) */
    ratelimit_t *rate_user;     /* requests per authenticated user (borrowed; NULL: none) */
    /* Called once per request on its worker thread when its status is known, just before
       the response is sent (the audit trail); must not block. NULL: none. */
    void (*done)(http_req_t *req);
    /* A GET or HEAD whose path no route matches and is not under /v1 (the portal's files):
       public, limited per address like any request. NULL: 404. */
    http_handler_fn *fallback;
    const http_flag_t *flags;     /* NULL-method-terminated (NULL: none) */
    const http_stream_t *streams; /* NULL-method-terminated (NULL: none) */
} http_options_t;

/* Start serving routes (a NULL-method-terminated table). NULL (logged) on failure, and when
   asked to serve plain HTTP on an address outside 127.0.0.0/8. */
http_t *http_new(const http_options_t *options, const http_route_t *routes, void *app);
void http_destroy(http_t **self_p);

/* ---- requests that wait ----
   A handler that needs something slow (a bus call) parks the request and returns without a
   response: the connection is suspended and the worker thread serves others. Whoever the
   request waits for wakes it, from any thread; then fn runs on a worker thread with arg and
   sets the response (or parks the request again). arg is freed with free_fn after fn, or when
   the request ends without fn (the client went away while it waited). */
typedef void(http_resume_fn)(http_req_t *req, void *arg);

/* Park req; the handler returns right after. 0, or -1 when the server is stopping (nothing
   parked: answer now). */
int http_park(http_req_t *req, http_resume_fn *fn, void *arg, void (*free_fn)(void *arg));
/* Wake a parked request: exactly once per http_park, from any thread; the request is not
   to be touched by the waker afterwards. */
void http_wake(http_req_t *req);

/* Seconds a client is asked to wait (Retry-After) before trying a request that got 503. */
#define HTTP_RETRY_AFTER_S 1

/* Set the response. */
void http_json(http_req_t *req, int status, json_t *body);
/* A 200 whose JSON body is already rendered (text, len bytes; copied). 0, or -1 with 500 set. */
int http_json_text(http_req_t *req, const char *text, size_t len);
/* An error response; its status is the code's row of the error table (lib/error.c). */
void http_error(http_req_t *req, const char *code, const char *message);
/* The same with a details object (taken; NULL = {}). */
void http_error_details(http_req_t *req, const char *code, const char *message, json_t *details);
/* The same from the platform's error type, details included. */
void http_fault(http_req_t *req, const berth_error_t *error);
/* BAD_REQUEST naming the field (details.field: a body field, query parameter or path part)
   with a printf-style message: how every handler refuses a bad field. Returns -1. */
int http_bad_field(http_req_t *req, const char *field, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/* A request header or query parameter (borrowed), NULL when absent. */
const char *http_header(http_req_t *req, const char *name);
/* The client's address as text into buf (INET6_ADDRSTRLEN is enough); "unknown" when the
   connection has none. Returns buf. */
const char *http_client_address(http_req_t *req, char *buf, size_t size);
const char *http_query(http_req_t *req, const char *name);

#endif
