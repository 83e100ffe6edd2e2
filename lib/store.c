/*  store: hiredis with timeouts and reconnect-with-backoff. A dropped connection is never
    retried in a loop: the next command after the backoff has elapsed tries once, so an
    actor's event loop keeps running (and answering) while Redis is away. */
#include "store.h"
#include "log.h"
#include "util.h"

#include <assert.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000

struct _store_t {
    char *host;
    int port;
    int connect_timeout_ms;
    int command_timeout_ms;
    redisContext *ctx; /* NULL while disconnected */
    int64_t retry_at;  /* monotonic ms of the next reconnect attempt */
    int backoff_ms;    /* current backoff, doubles per failure */
    int ok;            /* last command reached Redis */
};

store_t *store_new(const char *host, int port, int connect_timeout_ms, int command_timeout_ms)
{
    store_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->host = strdup(host);
    self->port = port;
    self->connect_timeout_ms = connect_timeout_ms;
    self->command_timeout_ms = command_timeout_ms;
    self->backoff_ms = BACKOFF_MIN_MS;
    return self;
}

void store_destroy(store_t **self_p)
{
    if (self_p && *self_p) {
        store_t *self = *self_p;
        if (self->ctx)
            redisFree(self->ctx);
        free(self->host);
        free(self);
        *self_p = NULL;
    }
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
    self->retry_at = util_mono_ms() + self->backoff_ms;
    self->backoff_ms =
        self->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : self->backoff_ms * 2;
}

static int s_connect(store_t *self)
{
    if (self->ctx)
        return 0;
    if (util_mono_ms() < self->retry_at)
        return -1;
    struct timeval ct = { self->connect_timeout_ms / 1000,
                          (self->connect_timeout_ms % 1000) * 1000 };
    redisContext *ctx = redisConnectWithTimeout(self->host, self->port, ct);
    if (!ctx || ctx->err) {
        self->ctx = ctx;
        s_drop(self, ctx ? ctx->errstr : "out of memory");
        return -1;
    }
    struct timeval rt = { self->command_timeout_ms / 1000,
                          (self->command_timeout_ms % 1000) * 1000 };
    redisSetTimeout(ctx, rt);
    redisEnableKeepAlive(ctx);
    self->ctx = ctx;
    self->backoff_ms = BACKOFF_MIN_MS;
    log_debug(NULL, "redis connected", "{s:s, s:i}", "host", self->host, "port", self->port);
    return 0;
}

static redisReply *s_checked(store_t *self, redisReply *reply)
{
    if (!reply) {
        s_drop(self, self->ctx && self->ctx->errstr[0] ? self->ctx->errstr : "no reply");
        return NULL;
    }
    self->ok = 1;
    return reply;
}

redisReply *store_command(store_t *self, const char *format, ...)
{
    assert(self);
    if (s_connect(self) != 0)
        return NULL;
    va_list ap;
    va_start(ap, format);
    redisReply *reply = redisvCommand(self->ctx, format, ap);
    va_end(ap);
    return s_checked(self, reply);
}

redisReply *store_commandv(store_t *self, int argc, const char **argv, const size_t *lens)
{
    assert(self);
    if (s_connect(self) != 0)
        return NULL;
    return s_checked(self, redisCommandArgv(self->ctx, argc, argv, lens));
}

int store_ok(store_t *self)
{
    return self->ok;
}

/* Scripts are static and shared by every store of the process, and the gateway runs one
   store per worker thread: the shared SHA is read and written under this lock. */
static pthread_mutex_t s_script_lock = PTHREAD_MUTEX_INITIALIZER;

/* Load the script into Redis; its SHA into sha (and into the shared script). */
static int s_load(store_t *self, store_script_t *script, char sha[41])
{
    redisReply *r = store_command(self, "SCRIPT LOAD %s", script->source);
    if (!r)
        return -1;
    int rc = -1;
    if (r->type == REDIS_REPLY_STRING && r->len == 40) {
        memcpy(sha, r->str, 40);
        sha[40] = '\0';
        pthread_mutex_lock(&s_script_lock);
        memcpy(script->sha, sha, 41);
        pthread_mutex_unlock(&s_script_lock);
        rc = 0;
    } else
        log_debug(NULL, "script load failed", "{s:s}", "error", r->str ? r->str : "?");
    freeReplyObject(r);
    return rc;
}

redisReply *store_eval(store_t *self, store_script_t *script, int nkeys, int argc,
                       const char **argv)
{
    assert(argc >= nkeys);
    char sha[41];
    pthread_mutex_lock(&s_script_lock);
    memcpy(sha, script->sha, sizeof sha);
    pthread_mutex_unlock(&s_script_lock);
    if (!sha[0] && s_load(self, script, sha) != 0)
        return NULL;
    char numkeys[16];
    snprintf(numkeys, sizeof numkeys, "%d", nkeys);
    const char **args = malloc(((size_t)argc + 3) * sizeof *args);
    if (!args)
        return NULL;
    args[0] = "EVALSHA";
    args[1] = sha;
    args[2] = numkeys;
    for (int i = 0; i < argc; i++)
        args[3 + i] = argv[i];
    redisReply *r = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        r = store_commandv(self, argc + 3, args, NULL);
        if (!r || r->type != REDIS_REPLY_ERROR || strncmp(r->str, "NOSCRIPT", 8) != 0)
            break;
        freeReplyObject(r);
        r = NULL;
        /* Redis restarted or flushed its script cache: load again and retry once. */
        if (s_load(self, script, sha) != 0)
            break;
    }
    free(args);
    return r;
}
