/*  store: the Redis connection of one actor (hiredis). Connect and command timeouts,
    reconnect with exponential backoff (attempted when due, never by sleeping) and Lua
    scripts by SHA. State changes go through model.h (checked transactions with events). */
#ifndef BERTH_STORE_H
#define BERTH_STORE_H

#include <hiredis/hiredis.h>
#include <stdint.h>

#define STORE_EVENTS "berth:events" /* the event stream every transition appends to */

typedef struct _store_t store_t;

/* A Lua script; declare it static with its source, the SHA is filled in on first use. */
typedef struct {
    const char *source;
    char sha[41];
} store_script_t;

/* Connects lazily; NULL only when out of memory. */
store_t *store_new(const char *host, int port, int connect_timeout_ms, int command_timeout_ms);
void store_destroy(store_t **self_p);

/* Run a command. NULL when Redis is unreachable (the connection is dropped and retried with
   backoff on later calls). Error replies are returned as REDIS_REPLY_ERROR. Caller frees. */
redisReply *store_command(store_t *self, const char *format, ...);
redisReply *store_commandv(store_t *self, int argc, const char **argv, const size_t *lens);

/* True when the last command reached Redis. */
int store_ok(store_t *self);

/* EVALSHA the script (loading it when Redis does not know it). argv holds nkeys keys then
   arguments. Same NULL/ERROR convention as store_command. */
redisReply *store_eval(store_t *self, store_script_t *script, int nkeys, int argc,
                       const char **argv);

#endif
