/*  store: hiredis with timeouts and reconnect-with-backoff. A dropped connection is never
    retried in a loop: the next command after the backoff has elapsed tries once, so an
    actor's event loop keeps running (and answering) while Redis is away.

    After Redis restarts, every connection opened before is dead, but a client only learns
    it from the next command it sends. Two things keep that first command from failing:
    - before sending, the socket is checked (one poll(), no round trip): a connection the
      server closed has its end-of-file waiting there. Nothing was sent on it, so replacing
      it and sending on a new connection is safe for every command.
    - a command that breaks on a connection that had worked before (reset, end of file; not
      a timeout) is sent once more on a new connection, but only when running it twice is
      the same as running it once: read-only commands and scripts marked "retry: safe".
      Anything else may have been applied before the connection broke, and is reported as
      failed instead (the caller's own retry, keyed by its idempotency, decides). */
#include "store.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#include <sodium.h>

#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000

#define SENTINELS_MAX 16

/* A process-wide Sentinel setting every store_new() starts with (store_sentinels_default). */
static char *s_default_sentinels;
static char *s_default_master;
/* A process-wide durability setting every store_new() starts with (store_wait_default). */
static int s_default_wait_replicas;
static int s_default_wait_timeout_ms = 1000;

struct _store_t {
    char *host; /* Redis, or with sentinels: the primary they named last */
    int port;
    char *sentinels;   /* "host:port,host:port"; NULL: plain Redis at host:port */
    char *master_name; /* the name the sentinels monitor the primary under */
    char *user;        /* AUTH user (NULL: default) */
    char *password;    /* AUTH on every new connection; NULL: none */
    int connect_timeout_ms;
    int command_timeout_ms;
    int wait_replicas;    /* store_wait: replicas a write must reach (0: no WAIT) */
    int wait_timeout_ms;  /* store_wait: how long WAIT may take */
    redisContext *ctx;    /* NULL while disconnected */
    int64_t retry_at;     /* monotonic ms of the next reconnect attempt */
    int backoff_ms;       /* current backoff, doubles per failure */
    int ok;               /* last command reached Redis */
    int64_t steady_since; /* monotonic ms since which every command reached Redis; 0: none */
    uint64_t sent;        /* commands sent on ctx: 0 = a connection not proven yet */
};

/* What every connection counts (metrics.h): connects by result and connections lost. */
static struct {
    metrics_family_t *connects, *lost, *failovers, *unreplicated;
} s_m;

static void s_metrics_declare(void)
{
    s_m.connects =
        metrics_counter("berth_redis_connects_total",
                        "Connections to Redis opened (ok) or attempted in vain (failed)", "result");
    s_m.lost = metrics_counter(
        "berth_redis_connections_lost_total",
        "Redis connections dropped: broken, closed by the server, or no reply in time", NULL);
    s_m.failovers = metrics_counter(
        "berth_redis_failovers_total",
        "Times the sentinels named another primary than the one this process used", NULL);
    s_m.unreplicated = metrics_counter(
        "berth_redis_unreplicated_writes_total",
        "State writes reported failed because fewer replicas than redis_wait_replicas had them",
        NULL);
}

store_t *store_new(const char *host, int port, int connect_timeout_ms, int command_timeout_ms)
{
    store_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    s_metrics_declare();
    self->host = strdup(host);
    self->port = port;
    self->connect_timeout_ms = connect_timeout_ms;
    self->command_timeout_ms = command_timeout_ms;
    self->backoff_ms = BACKOFF_MIN_MS;
    if (s_default_sentinels)
        store_set_sentinels(self, s_default_sentinels, s_default_master);
    store_set_wait(self, s_default_wait_replicas, s_default_wait_timeout_ms);
    return self;
}

void store_wait_default(int replicas, int timeout_ms)
{
    s_default_wait_replicas = replicas > 0 ? replicas : 0;
    s_default_wait_timeout_ms = timeout_ms > 0 ? timeout_ms : 1;
}

void store_set_wait(store_t *self, int replicas, int timeout_ms)
{
    assert(self);
    self->wait_replicas = replicas > 0 ? replicas : 0;
    self->wait_timeout_ms = timeout_ms > 0 ? timeout_ms : 1;
}

void store_sentinels_default(const char *sentinels, const char *master_name)
{
    free(s_default_sentinels);
    free(s_default_master);
    s_default_sentinels = sentinels && *sentinels ? strdup(sentinels) : NULL;
    s_default_master = s_default_sentinels ? strdup(master_name ? master_name : "berth") : NULL;
}

void store_set_sentinels(store_t *self, const char *sentinels, const char *master_name)
{
    assert(self);
    free(self->sentinels);
    free(self->master_name);
    self->sentinels = sentinels && *sentinels ? strdup(sentinels) : NULL;
    self->master_name =
        self->sentinels ? strdup(master_name && *master_name ? master_name : "berth") : NULL;
    if (self->sentinels)
        self->host[0] = 0; /* no primary known yet: the first one named is no failover */
    if (self->ctx) {
        redisFree(self->ctx);
        self->ctx = NULL;
    }
    self->retry_at = 0;
}

void store_destroy(store_t **self_p)
{
    if (self_p && *self_p) {
        store_t *self = *self_p;
        if (self->ctx)
            redisFree(self->ctx);
        free(self->host);
        free(self->sentinels);
        free(self->master_name);
        if (self->password)
            sodium_memzero(self->password, strlen(self->password));
        free(self->password);
        free(self->user);
        free(self);
        *self_p = NULL;
    }
}

void store_set_auth(store_t *self, const char *user, const char *password)
{
    assert(self);
    if (self->password)
        sodium_memzero(self->password, strlen(self->password));
    free(self->password);
    free(self->user);
    self->password = password ? strdup(password) : NULL;
    self->user = user ? strdup(user) : NULL;
    if (self->ctx) {
        redisFree(self->ctx);
        self->ctx = NULL;
    }
    self->retry_at = 0;
}

int store_use_secrets(store_t *self, const char *secrets_dir)
{
    assert(self);
    if (!secrets_dir) {
        store_set_auth(self, NULL, NULL);
        return 0;
    }
    char password[256];
    if (util_secret_read(secrets_dir, STORE_PASSWORD_FILE, password, sizeof password) != 0 &&
        errno == ENOENT) {
        /* A secrets dir without one (bus certificates only): a Redis without a password. A
           Redis that wants one refuses every command, which the service then reports. */
        log_warn(NULL, "no Redis password in secrets_dir: connecting without one", "{s:s}",
                 "secrets_dir", secrets_dir);
        store_set_auth(self, NULL, NULL);
        return 0;
    }
    if (!*password) {
        log_error(NULL, "cannot read the Redis password (run berth-secrets)", "{s:s, s:s, s:s}",
                  "secrets_dir", secrets_dir, "file", STORE_PASSWORD_FILE, "reason",
                  strerror(errno));
        return -1;
    }
    store_set_auth(self, STORE_USER, password);
    sodium_memzero(password, sizeof password);
    return 0;
}

static void s_drop(store_t *self, const char *why)
{
    if (self->ctx) {
        log_debug(NULL, "redis connection lost", "{s:s, s:s, s:i}", "reason", why, "host",
                  self->host, "port", self->port);
        redisFree(self->ctx);
        self->ctx = NULL;
    }
    self->ok = 0;
    self->steady_since = 0;
    self->retry_at = util_mono_ms() + self->backoff_ms;
    self->backoff_ms =
        self->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : self->backoff_ms * 2;
}

/* Did the server close ctx while it sat idle? A closed connection has its end of file (or
   an error) waiting in the socket; a live one, in this request/reply protocol, has nothing.
   Unexpected bytes mean the connection is out of step: it is dropped as well. */
static int s_stale(redisContext *ctx)
{
    struct pollfd p = { .fd = ctx->fd, .events = POLLIN };
    if (poll(&p, 1, 0) <= 0)
        return 0;
    char c;
    ssize_t n = recv(ctx->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    return 1;
}

/* Ask one sentinel at host:port for the primary's address; 0 and host/port written when it
   names one. Sentinels listen on loopback or a trusted network without a password (see the
   README): they hold no data, only the primary's address. */
static int s_ask_sentinel(store_t *self, const char *shost, int sport, char *host, size_t size,
                          int *port)
{
    struct timeval ct = { self->connect_timeout_ms / 1000,
                          (self->connect_timeout_ms % 1000) * 1000 };
    redisContext *ctx = redisConnectWithTimeout(shost, sport, ct);
    if (!ctx || ctx->err) {
        if (ctx)
            redisFree(ctx);
        return -1;
    }
    redisSetTimeout(ctx, ct);
    redisReply *r = redisCommand(ctx, "SENTINEL get-master-addr-by-name %s", self->master_name);
    int rc = -1;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING) {
        long p = strtol(r->element[1]->str, NULL, 10);
        if (p > 0 && p < 65536 && strlen(r->element[0]->str) < size) {
            util_strlcpy(host, r->element[0]->str, size);
            *port = (int)p;
            rc = 0;
        }
    }
    if (r)
        freeReplyObject(r);
    redisFree(ctx);
    return rc;
}

/* With sentinels: ask them in turn for the primary and make it self->host:port; a changed
   address is a failover (counted). -1 when no sentinel names one. */
static int s_resolve(store_t *self)
{
    char list[512];
    util_strlcpy(list, self->sentinels, sizeof list);
    char *save = NULL;
    for (char *item = strtok_r(list, ", ", &save); item; item = strtok_r(NULL, ", ", &save)) {
        char *colon = strrchr(item, ':');
        if (!colon)
            continue;
        *colon = 0;
        char host[256];
        int port;
        if (s_ask_sentinel(self, item, atoi(colon + 1), host, sizeof host, &port) != 0)
            continue;
        if (strcmp(host, self->host) != 0 || port != self->port) {
            if (self->host[0])
                metrics_add(s_m.failovers, 1);
            log_debug(NULL, "sentinel named the redis primary", "{s:s, s:i, s:s}", "host", host,
                      "port", port, "sentinel", item);
            char *h = strdup(host);
            if (!h)
                return -1;
            free(self->host);
            self->host = h;
            self->port = port;
        }
        return 0;
    }
    log_debug(NULL, "no sentinel named the redis primary", "{s:s, s:s}", "sentinels",
              self->sentinels, "master_name", self->master_name);
    return -1;
}

/* Does the server on ctx say it is the primary (ROLE)? A demoted one says "slave". */
static int s_is_master(redisContext *ctx)
{
    redisReply *r = redisCommand(ctx, "ROLE");
    int yes = r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
              r->element[0]->type == REDIS_REPLY_STRING &&
              strcmp(r->element[0]->str, "master") == 0;
    if (r)
        freeReplyObject(r);
    return yes;
}

static int s_connect(store_t *self)
{
    if (self->ctx && s_stale(self->ctx)) {
        log_debug(NULL, "redis closed an idle connection: opening a new one", "{s:s, s:i}", "host",
                  self->host, "port", self->port);
        metrics_add(s_m.lost, 1);
        redisFree(self->ctx);
        self->ctx = NULL;
        self->steady_since = 0; /* Redis went away meanwhile */
        self->retry_at = 0;     /* nothing was sent: try a new connection now, not after backoff */
    }
    if (self->ctx)
        return 0;
    if (util_mono_ms() < self->retry_at)
        return -1;
    if (self->sentinels && s_resolve(self) != 0) {
        metrics_add(s_m.connects, 1, "failed");
        s_drop(self, "no sentinel named the primary");
        return -1;
    }
    struct timeval ct = { self->connect_timeout_ms / 1000,
                          (self->connect_timeout_ms % 1000) * 1000 };
    redisContext *ctx = redisConnectWithTimeout(self->host, self->port, ct);
    if (!ctx || ctx->err) {
        metrics_add(s_m.connects, 1, "failed");
        self->ctx = ctx;
        s_drop(self, ctx ? ctx->errstr : "out of memory");
        return -1;
    }
    struct timeval rt = { self->command_timeout_ms / 1000,
                          (self->command_timeout_ms % 1000) * 1000 };
    redisSetTimeout(ctx, rt);
    redisEnableKeepAlive(ctx);
    if (self->password) {
        redisReply *auth = self->user ? redisCommand(ctx, "AUTH %s %s", self->user, self->password)
                                      : redisCommand(ctx, "AUTH %s", self->password);
        if (!auth || auth->type == REDIS_REPLY_ERROR) {
            /* A wrong password is a configuration error: said at error level, at most once
               per backoff period like every other failed connect. */
            if (auth)
                log_error(NULL, "redis refused the password", "{s:s, s:i, s:s, s:s}", "host",
                          self->host, "port", self->port, "user",
                          self->user ? self->user : "default", "reply", auth->str);
            metrics_add(s_m.connects, 1, "failed");
            self->ctx = ctx;
            s_drop(self, auth ? auth->str : ctx->errstr);
            if (auth)
                freeReplyObject(auth);
            return -1;
        }
        freeReplyObject(auth);
    }
    if (self->sentinels && !s_is_master(ctx)) {
        /* The sentinels have not yet noticed a failover, or this one is being demoted: ask
           them again after the backoff. */
        metrics_add(s_m.connects, 1, "failed");
        self->ctx = ctx;
        s_drop(self, "the server the sentinels named is not the primary");
        return -1;
    }
    metrics_add(s_m.connects, 1, "ok");
    self->ctx = ctx;
    self->sent = 0;
    self->backoff_ms = BACKOFF_MIN_MS;
    log_debug(NULL, "redis connected", "{s:s, s:i}", "host", self->host, "port", self->port);
    return 0;
}

static redisReply *s_checked(store_t *self, redisReply *reply)
{
    if (!reply) {
        metrics_add(s_m.lost, 1);
        s_drop(self, self->ctx && self->ctx->errstr[0] ? self->ctx->errstr : "no reply");
        return NULL;
    }
    self->ok = 1;
    if (!self->steady_since)
        self->steady_since = util_mono_ms();
    if (reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "READONLY", 8) == 0) {
        /* A demoted primary: the write was refused (not applied). The next command asks the
           sentinels for the new primary. */
        metrics_add(s_m.lost, 1);
        s_drop(self, reply->str);
        self->retry_at = 0;
    }
    return reply;
}

/* Commands that only read: sending one twice is harmless. */
static const char *s_readonly[] = { "PING",    "GET",     "MGET",          "STRLEN",    "EXISTS",
                                    "TYPE",    "TTL",     "PTTL",          "HGET",      "HMGET",
                                    "HGETALL", "HEXISTS", "HLEN",          "SMEMBERS",  "SISMEMBER",
                                    "SCARD",   "ZRANGE",  "ZRANGEBYSCORE", "ZREVRANGE", "ZRANK",
                                    "ZSCORE",  "ZCARD",   "ZCOUNT",        "XRANGE",    "XREVRANGE",
                                    "XLEN",    "XINFO",   "XPENDING",      "LRANGE",    "LLEN",
                                    "SCAN",    "KEYS",    "TIME",          "INFO",      NULL };

/* Is the formatted command (RESP: *n\r\n$len\r\nNAME\r\n...) read-only? */
static int s_is_readonly(const char *cmd, size_t len)
{
    const char *name = memchr(cmd, '$', len);
    if (!name || !(name = memchr(name, '\n', len - (size_t)(name - cmd))))
        return 0;
    name++;
    const char *end = memchr(name, '\r', len - (size_t)(name - cmd));
    if (!end)
        return 0;
    for (const char **r = s_readonly; *r; r++)
        if (strlen(*r) == (size_t)(end - name) && strncasecmp(*r, name, (size_t)(end - name)) == 0)
            return 1;
    return 0;
}

/* Did the last command fail because the connection broke (not because it timed out)? */
static int s_broken(const redisContext *ctx, int err_no)
{
    if (ctx->err == REDIS_ERR_EOF)
        return 1;
    return ctx->err == REDIS_ERR_IO && err_no != EAGAIN && err_no != EWOULDBLOCK &&
           err_no != ETIMEDOUT && err_no != EINTR;
}

/* Send one formatted command and read its reply; see the top of the file for when it is
   sent a second time. */
static redisReply *s_roundtrip(store_t *self, const char *cmd, size_t len, int safe)
{
    for (int attempt = 0;; attempt++) {
        if (s_connect(self) != 0)
            return NULL;
        int proven = self->sent > 0;
        self->sent++;
        redisReply *reply = NULL;
        errno = 0;
        if (redisAppendFormattedCommand(self->ctx, cmd, len) == REDIS_OK)
            redisGetReply(self->ctx, (void **)&reply);
        int err_no = errno;
        if (reply || attempt > 0 || !safe || !proven || !s_broken(self->ctx, err_no))
            return s_checked(self, reply);
        log_debug(NULL, "redis connection broke under a command safe to resend: resending",
                  "{s:s, s:s, s:i}", "reason", self->ctx->errstr, "host", self->host, "port",
                  self->port);
        metrics_add(s_m.lost, 1);
        redisFree(self->ctx);
        self->ctx = NULL;
        self->retry_at = 0;
    }
}

redisReply *store_command(store_t *self, const char *format, ...)
{
    assert(self);
    char *cmd = NULL;
    va_list ap;
    va_start(ap, format);
    int len = redisvFormatCommand(&cmd, format, ap);
    va_end(ap);
    if (len < 0)
        return NULL;
    redisReply *reply = s_roundtrip(self, cmd, (size_t)len, s_is_readonly(cmd, (size_t)len));
    redisFreeCommand(cmd);
    return reply;
}

/* argv as one command; safe < 0 means "decide by the command's name". */
static redisReply *s_commandv(store_t *self, int argc, const char **argv, const size_t *lens,
                              int safe)
{
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (len < 0)
        return NULL;
    if (safe < 0)
        safe = s_is_readonly(cmd, (size_t)len);
    redisReply *reply = s_roundtrip(self, cmd, (size_t)len, safe);
    redisFreeCommand(cmd);
    return reply;
}

redisReply *store_commandv(store_t *self, int argc, const char **argv, const size_t *lens)
{
    assert(self);
    return s_commandv(self, argc, argv, lens, -1);
}

int store_wait(store_t *self)
{
    assert(self);
    if (self->wait_replicas == 0)
        return 0;
    /* WAIT counts the replicas that have this connection's writes: on a new connection it
       would count none of them, so a connection lost since the write fails the wait. */
    if (!self->ctx) {
        metrics_add(s_m.unreplicated, 1);
        self->ok = 0;
        return -1;
    }
    int ms = self->wait_timeout_ms + self->command_timeout_ms;
    struct timeval longer = { ms / 1000, (ms % 1000) * 1000 };
    struct timeval normal = { self->command_timeout_ms / 1000,
                              (self->command_timeout_ms % 1000) * 1000 };
    redisSetTimeout(self->ctx, longer);
    redisReply *r =
        redisCommand(self->ctx, "WAIT %d %d", self->wait_replicas, self->wait_timeout_ms);
    if (self->ctx)
        redisSetTimeout(self->ctx, normal);
    r = s_checked(self, r);
    long long acked = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    if (r)
        freeReplyObject(r);
    if (acked >= self->wait_replicas)
        return 0;
    log_debug(NULL, "write not on enough replicas in time", "{s:i, s:i, s:i}", "replicas",
              (int)acked, "wanted", self->wait_replicas, "timeout_ms", self->wait_timeout_ms);
    metrics_add(s_m.unreplicated, 1);
    self->ok = 0; /* the caller reports the store unavailable (store_ok) */
    return -1;
}

int store_ok(store_t *self)
{
    return self->ok;
}

int64_t store_steady_ms(store_t *self)
{
    return self->steady_since ? util_mono_ms() - self->steady_since : 0;
}

redisReply *store_run(store_t *self, const store_lua_t *script, int nkeys, int argc,
                      const char **argv)
{
    assert(self && script && nkeys >= 0 && argc >= nkeys);
    char numkeys[16];
    snprintf(numkeys, sizeof numkeys, "%d", nkeys);
    const char **args = malloc(((size_t)argc + 3) * sizeof *args);
    if (!args)
        return NULL;
    args[0] = "EVALSHA";
    args[1] = script->sha;
    args[2] = numkeys;
    for (int i = 0; i < argc; i++)
        args[3 + i] = argv[i];
    redisReply *r = s_commandv(self, argc + 3, args, NULL, script->retry_safe);
    if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
        /* A new Redis or a flushed script cache: load the script and run it again. */
        freeReplyObject(r);
        const char *load[] = { "SCRIPT", "LOAD", script->source };
        r = s_commandv(self, 3, load, NULL, 1);
        if (r && r->type == REDIS_REPLY_STRING && strcmp(r->str, script->sha) == 0) {
            freeReplyObject(r);
            r = s_commandv(self, argc + 3, args, NULL, script->retry_safe);
        } else if (r && r->type != REDIS_REPLY_ERROR) {
            log_debug(NULL, "script loaded under another SHA than the one built in", "{s:s}",
                      "script", script->name);
            freeReplyObject(r);
            r = NULL;
        }
    }
    free(args);
    return r;
}
