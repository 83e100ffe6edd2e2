/*  service: the common skeleton of every Berth process, built on a CZMQ zloop. The loop
    owns the ROUTER, the heartbeat timer and whatever the service adds; handlers and timers
    run one at a time, so service state needs no locks. */
#include "service.h"
#include "clock.h"
#include "metrics.h"
#include "migrate.h"

#include <assert.h>
#include <netdb.h>
#include <unistd.h>

typedef struct {
    service_t *service;
    service_timer_fn *fn;
    void *arg;
} s_job_t;

struct _service_t {
    char *name;
    char *config_path; /* --config FILE, or BERTH_CONFIG */
    config_t *config;
    store_t *store;
    bus_auth_t *auth; /* this process's CURVE certificate and the platform's store */
    bus_server_t *server;
    bus_client_t *client;
    zloop_t *loop;
    zlistx_t *jobs; /* s_job_t, freed at destroy */
    char instance[128];
    char endpoint[256]; /* advertised endpoint */
    int heartbeat_ms;
    int64_t started_ms;
    int registered; /* last heartbeat reached Redis */
    int storeless;  /* never touches Redis (agents) */
};

static void s_job_free(void **item)
{
    free(*item);
    *item = NULL;
}

service_t *service_new(const char *name, int argc, char **argv)
{
    service_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->name = strdup(name);
    self->config = config_new();
    self->jobs = zlistx_new();
    self->loop = zloop_new();
    if (!self->name || !self->config || !self->jobs || !self->loop) {
        service_destroy(&self);
        return NULL;
    }
    zlistx_set_destructor(self->jobs, s_job_free);
    log_init(name, NULL);
    const char *path = getenv("BERTH_CONFIG");
    for (int i = 1; i < argc; i++) {
        if (streq(argv[i], "--config") && i + 1 < argc)
            path = argv[++i];
        else {
            fprintf(stderr, "usage: berth-%s [--config FILE]\n", name);
            service_destroy(&self);
            return NULL;
        }
    }
    self->config_path = path ? strdup(path) : NULL;
    config_t *c = self->config;
    config_declare(c, "redis_host", "127.0.0.1", 0);
    config_declare(c, "redis_port", "6379", 0);
    config_declare(c, "redis_timeout_ms", "1000", 0);
    /* Sentinel: "host:port,..." of the sentinels that name the primary (empty: the plain Redis
       at redis_host:redis_port), and the name they monitor it under. */
    config_declare(c, "redis_sentinels", "", 0);
    config_declare(c, "redis_master_name", "berth", 0);
    /* Durability: each state write (model_tx commit) waits (WAIT) until this many replicas
       have it, at most redis_wait_timeout_ms, else it failed (UNAVAILABLE). 0: no wait. */
    config_declare(c, "redis_wait_replicas", "0", 0);
    config_declare(c, "redis_wait_timeout_ms", "1000", 0);
    config_declare(c, "schema_wait_ms", "30000", 0); /* for Redis and the store's migration */
    config_declare(c, "bind", "tcp://127.0.0.1:*", 0);
    config_declare(c, "advertise", NULL, 0);
    config_declare(c, "instance", NULL, 0);
    config_declare(c, "heartbeat_ms", "1000", 0);
    config_declare(c, "log_level", "info", 0);
    config_declare(c, "secrets_dir", NULL, 0); /* what berth-secrets made (keys, secrets) */
    /* The bus certificate: a name under secrets_dir/curve (the service's own by default; an
       agent's is its host's, "agent-host-1") or a path. */
    config_declare(c, "curve_cert", name, 0);
    /* Prometheus metrics (metrics.h) on a port of the process's own; 0: not served. */
    config_declare(c, "metrics_host", "127.0.0.1", 0);
    config_declare(c, "metrics_port", "0", 0);
    clock_declare(c); /* the platform clock: every service sets the same */
    return self;
}

void service_destroy(service_t **self_p)
{
    if (self_p && *self_p) {
        service_t *self = *self_p;
        zloop_destroy(&self->loop);
        bus_client_destroy(&self->client);
        bus_server_destroy(&self->server);
        metrics_stop();
        bus_auth_destroy(&self->auth);
        store_destroy(&self->store);
        config_destroy(&self->config);
        zlistx_destroy(&self->jobs);
        free(self->config_path);
        free(self->name);
        free(self);
        *self_p = NULL;
    }
}

config_t *service_config(service_t *self)
{
    return self->config;
}

/* The host part others should dial: the bind host, or when bound to all interfaces the
   address this machine's hostname resolves to. */
static void s_advertise(service_t *self, const char *bound)
{
    const char *host = config_get(self->config, "advertise");
    const char *port = strrchr(bound, ':');
    char name[256] = "";
    if (!host) {
        const char *start = strstr(bound, "://");
        start = start ? start + 3 : bound;
        if (strncmp(start, "0.0.0.0", 7) == 0 || *start == '*') {
            gethostname(name, sizeof name - 1);
            struct addrinfo hints = { .ai_family = AF_INET }, *res = NULL;
            if (getaddrinfo(name, NULL, &hints, &res) == 0 && res) {
                getnameinfo(res->ai_addr, res->ai_addrlen, name, sizeof name, NULL, 0,
                            NI_NUMERICHOST);
                freeaddrinfo(res);
            }
            host = name;
        }
    }
    if (host) {
        if (snprintf(self->endpoint, sizeof self->endpoint, "tcp://%.200s%.16s", host,
                     port ? port : "") < 0)
            self->endpoint[0] = '\0';
    } else
        util_strlcpy(self->endpoint, bound, sizeof self->endpoint);
}

static int s_heartbeat(zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    service_t *self = arg;
    registry_entry_t e = { .started_ms = self->started_ms };
    util_strlcpy(e.service, self->name, sizeof e.service);
    util_strlcpy(e.instance, self->instance, sizeof e.instance);
    util_strlcpy(e.endpoint, self->endpoint, sizeof e.endpoint);
    util_strlcpy(e.status, "UP", sizeof e.status);
    int ok = registry_register(self->store, &e, self->heartbeat_ms * 3) == 0;
    if (ok != self->registered)
        log_emit(ok ? BERTH_LOG_INFO : BERTH_LOG_WARN, NULL,
                 ok ? "registered" : "registry unreachable", "{s:s}", "endpoint", self->endpoint);
    self->registered = ok;
    return 0;
}

void service_without_store(service_t *self)
{
    self->storeless = 1;
}

static void s_on_ping(bus_request_t *request, void *arg)
{
    service_t *self = arg;
    Berth__Status status = BERTH__STATUS__INIT;
    status.service = self->name;
    status.instance = self->instance;
    status.endpoint = self->endpoint;
    status.state = self->registered || self->storeless ? "UP" : "DEGRADED";
    status.started_ms = self->started_ms;
    status.uptime_ms = util_now_ms() - self->started_ms;
    status.store_ok = self->store && store_ok(self->store);
    status.handled = bus_server_handled(self->server);
    bus_reply(request, &status.base);
}

static int s_on_router(zloop_t *loop, zsock_t *sock, void *arg)
{
    (void)loop;
    (void)sock;
    bus_server_recv(arg);
    return 0;
}

int service_start(service_t *self)
{
    if (config_load(self->config, self->config_path) != 0)
        return -1;
    config_t *c = self->config;
    if (log_set_level(config_get(c, "log_level")) != 0) {
        log_error(NULL, "unknown log_level", "{s:s}", "log_level", config_get(c, "log_level"));
        return -1;
    }
    int64_t port, timeout, heartbeat, schema_wait, metrics_port, wait_replicas, wait_timeout;
    if (config_int(c, "redis_port", 1, 65535, &port) ||
        config_int(c, "redis_wait_replicas", 0, 64, &wait_replicas) ||
        config_int(c, "redis_wait_timeout_ms", 1, 60000, &wait_timeout) ||
        config_int(c, "metrics_port", 0, 65535, &metrics_port) ||
        config_int(c, "redis_timeout_ms", 10, 60000, &timeout) ||
        config_int(c, "schema_wait_ms", 0, 3600000, &schema_wait) ||
        config_int(c, "heartbeat_ms", 50, 60000, &heartbeat) || clock_configure(c) != 0)
        return -1;
    self->heartbeat_ms = (int)heartbeat;
    if (config_get(c, "instance"))
        util_strlcpy(self->instance, config_get(c, "instance"), sizeof self->instance);
    else {
        char host[64] = "";
        gethostname(host, sizeof host - 1);
        char id[UTIL_ID_LEN];
        util_uuid(id);
        snprintf(self->instance, sizeof self->instance, "%s-%s-%.8s", self->name, host, id);
    }
    log_init(self->name, self->instance);
    config_set(c, "instance", self->instance);
    metrics_set(metrics_gauge("berth_service_info", "This process: its service and instance",
                              "service,instance"),
                1, self->name, self->instance);
    metrics_set(metrics_gauge("process_start_time_seconds",
                              "Start time of the process since the Unix epoch, in seconds", NULL),
                (double)util_now_ms() / 1000.0);
    if (metrics_port && metrics_serve(config_get(c, "metrics_host"), (int)metrics_port) != 0)
        return -1;

    self->started_ms = util_now_ms();
    store_sentinels_default(config_get(c, "redis_sentinels"), config_get(c, "redis_master_name"));
    store_wait_default((int)wait_replicas, (int)wait_timeout);
    if (!self->storeless && !(self->store = store_new(config_get(c, "redis_host"), (int)port,
                                                      (int)timeout, (int)timeout)))
        return -1;
    if (!self->storeless && store_use_secrets(self->store, config_get(c, "secrets_dir")) != 0)
        return -1;
    /* The store in the layout this build reads, before anything reads it. */
    if (!self->storeless && migrate_run(self->store, self->instance, (int)schema_wait) != 0)
        return -1;
    /* No certificate, no bus: a service never serves or calls in the clear. */
    if (!(self->auth = bus_auth_new(config_get(c, "secrets_dir"), config_get(c, "curve_cert"))))
        return -1;
    if (!streq(bus_auth_service(self->auth), self->name)) {
        log_error(NULL, "curve_cert is another service's certificate", "{s:s, s:s}", "curve_cert",
                  config_get(c, "curve_cert"), "names", bus_auth_service(self->auth));
        return -1;
    }
    char sender[192];
    snprintf(sender, sizeof sender, "%s/%s", self->name, self->instance);
    self->server = bus_server_new_curve(config_get(c, "bind"), sender, self->auth);
    self->client = bus_client_new(self->store, sender);
    if (!self->server || !self->client)
        return -1;
    bus_client_secure(self->client, self->auth);
    bus_client_attach(self->client, self->loop);
    s_advertise(self, bus_server_endpoint(self->server));
    config_set(c, "advertise", self->endpoint);
    config_log(c);

    bus_server_on(self->server, "Ping", "*", s_on_ping, self);
    zloop_reader(self->loop, bus_server_socket(self->server), s_on_router, self->server);
    if (!self->storeless) {
        zloop_timer(self->loop, (size_t)self->heartbeat_ms, 0, s_heartbeat, self);
        s_heartbeat(self->loop, 0, self);
    }
    log_info(NULL, "ready", "{s:s, s:s}", "endpoint", self->endpoint, "bound",
             bus_server_endpoint(self->server));
    return 0;
}

void service_on(service_t *self, const char *type, const char *callers, bus_handler_fn *fn,
                void *arg)
{
    assert(self->server);
    bus_server_on(self->server, type, callers, fn, arg);
}

static s_job_t *s_job(service_t *self, service_timer_fn *fn, void *arg)
{
    s_job_t *job = malloc(sizeof *job);
    assert(job);
    job->service = self;
    job->fn = fn;
    job->arg = arg;
    zlistx_add_end(self->jobs, job);
    return job;
}

static int s_on_timer(zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    s_job_t *job = arg;
    return job->fn(job->service, job->arg);
}

static int s_on_reader(zloop_t *loop, zsock_t *sock, void *arg)
{
    (void)loop;
    (void)sock;
    s_job_t *job = arg;
    return job->fn(job->service, job->arg);
}

void service_every(service_t *self, int interval_ms, service_timer_fn *fn, void *arg)
{
    zloop_timer(self->loop, (size_t)interval_ms, 0, s_on_timer, s_job(self, fn, arg));
}

void service_reader(service_t *self, zsock_t *sock, service_timer_fn *fn, void *arg)
{
    zloop_reader(self->loop, sock, s_on_reader, s_job(self, fn, arg));
}

static int s_stop(zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    (void)arg;
    return -1;
}

void service_stop(service_t *self)
{
    zloop_timer(self->loop, 1, 1, s_stop, NULL);
}

int service_run(service_t *self)
{
    zloop_start(self->loop);
    log_info(NULL, "stopping", NULL);
    if (self->store)
        registry_deregister(self->store, self->name, self->instance);
    return 0;
}

bus_auth_t *service_auth(service_t *self)
{
    return self->auth;
}

store_t *service_store(service_t *self)
{
    return self->store;
}

bus_client_t *service_client(service_t *self)
{
    return self->client;
}

const char *service_name(service_t *self)
{
    return self->name;
}

const char *service_instance(service_t *self)
{
    return self->instance;
}

const char *service_endpoint(service_t *self)
{
    return self->endpoint;
}

int service_heartbeat_ms(service_t *self)
{
    return self->heartbeat_ms;
}

zloop_t *service_loop(service_t *self)
{
    return self->loop;
}
