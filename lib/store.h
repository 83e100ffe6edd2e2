/*  store: the Redis connection of one actor (hiredis). Connect and command timeouts,
    AUTH with the platform's Redis password on every new connection, reconnect with
    exponential backoff (attempted when due, never by sleeping), a stale
    connection replaced before it is used, and the Lua scripts of lib/lua/ by SHA. Keys come
    from keys.h; state changes go through model.h (checked transactions with events). */
#ifndef BERTH_STORE_H
#define BERTH_STORE_H

#include "keys.h"

#include <hiredis/hiredis.h>
#include <stdint.h>

#define STORE_EVENTS KEYS_EVENTS /* the event stream every transition appends to */

typedef struct _store_t store_t;

/* A script of lib/lua/, embedded at build time (lua_scripts.h names each one as lua_<file>). */
typedef struct {
    const char *name;   /* the file name without .lua */
    const char *source; /* the file's text */
    const char *sha;    /* SHA1 of source: the name EVALSHA knows it by */
    int retry_safe;     /* running it twice has the effect of running it once (the file says
                           "-- retry: safe"): it may be sent again after a lost connection */
} store_lua_t;

/* Connects lazily; NULL only when out of memory. */
store_t *store_new(const char *host, int port, int connect_timeout_ms, int command_timeout_ms);
void store_destroy(store_t **self_p);

/* Find the primary through Redis Sentinel: every (re)connect asks the sentinels of the list
   ("host:port,host:port") in turn for master_name's address, connects there and checks ROLE
   says master; a lost connection or a READONLY reply (a demoted primary) makes the next
   connect ask again. sentinels NULL or empty: the plain Redis of store_new. */
void store_set_sentinels(store_t *self, const char *sentinels, const char *master_name);

/* What every store_new() of this process starts with (store_set_sentinels); the services
   set it from their config before opening any store. */
void store_sentinels_default(const char *sentinels, const char *master_name);

/* Durability: after a state write, store_wait asks Redis (WAIT) that `replicas` replicas
   have this connection's writes, at most timeout_ms. replicas 0: no wait. */
void store_set_wait(store_t *self, int replicas, int timeout_ms);

/* What every store_new() of this process starts with (store_set_wait). */
void store_wait_default(int replicas, int timeout_ms);

/* 0 when the writes sent on this connection are on the replicas store_set_wait asks for (or
   none are asked for); -1 when fewer had them in time or the connection was lost since,
   and store_ok() then says false (the write may still exist on the primary). */
int store_wait(store_t *self);

/* The services' Redis user and the file of secrets_dir holding its password (berth-secrets
   makes both: only berth:* keys, no @dangerous command). */
#define STORE_USER          "berth"
#define STORE_PASSWORD_FILE "redis.password"

/* Authenticate every connection from now on as user with password (AUTH right after
   connecting; a reconnect authenticates again); user NULL: Redis's default user; password
   NULL: no AUTH. A connection already open is replaced. */
void store_set_auth(store_t *self, const char *user, const char *password);

/* store_set_auth as STORE_USER with secrets_dir's STORE_PASSWORD_FILE; secrets_dir NULL or
   without that file (warned): a Redis without a password. -1 (logged) when the file is
   there but cannot be read. */
int store_use_secrets(store_t *self, const char *secrets_dir);

/* Run a command. NULL when Redis is unreachable (the connection is dropped and retried with
   backoff on later calls). Error replies are returned as REDIS_REPLY_ERROR. Caller frees.
   A connection Redis closed while it sat idle (Redis restarted) is replaced before the
   command is sent, so the first command after a restart succeeds; a read-only command whose
   connection breaks under it is sent once more on a new connection. */
redisReply *store_command(store_t *self, const char *format, ...);
redisReply *store_commandv(store_t *self, int argc, const char **argv, const size_t *lens);

/* True when the last command reached Redis. */
int store_ok(store_t *self);

/* How long (ms) every command has reached Redis: 0 until one has, and again from each lost
   connection (an outage, a failover). Heartbeats cannot be recorded while Redis is away, so a
   service judges a host by its beats only once this exceeds its grace. */
int64_t store_steady_ms(store_t *self);

/* EVALSHA the script, loading it (SCRIPT LOAD) when Redis does not know it yet or any more.
   argv holds nkeys keys, then the arguments: every key the script touches is among the
   keys. Same NULL/ERROR convention as store_command; a retry-safe script whose connection
   breaks under it is sent once more on a new connection. */
redisReply *store_run(store_t *self, const store_lua_t *script, int nkeys, int argc,
                      const char **argv);

#endif
