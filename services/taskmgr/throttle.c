/*  throttle: heavy-task slots shared by every taskmgr instance (throttle.h).

    Why slots live in Redis and not in each taskmgr: the limits are per host and for the
    platform, and any instance may run any task, so only a count all of them change
    atomically holds them. The script lib/lua/taskmgr_throttle.lua is that count.

    Never leaking a slot. A slot belongs to a task, not to an instance: a task taken over
    after its holder died keeps its slot and goes on with it (the new holder's acquire finds
    it held). The slot is given back in the very step that writes the task's end, so a
    taskmgr killed just after that step leaves nothing behind; only the grant of the freed
    slot to the next task in line (the pump that follows the step) can be lost that way, and
    any instance's sweep, run with its due-set reads, grants it. A task ended by a path that
    does not give its slot back, or vanished, is found by the sweep too: its slot's task is
    read and the slot removed once the task is over. */
#include "throttle.h"
#include "keys.h"
#include "lua_scripts.h"

struct _throttle_t {
    store_t *store;
    int per_host;     /* heavy tasks a host runs at once */
    int global;       /* heavy tasks the platform runs at once */
    int64_t swept_ms; /* monotonic ms of the last sweep */
    int full_logged;  /* the line was reported once since it was last empty */
};

void throttle_declare(config_t *c)
{
    config_declare(c, "heavy_per_host", "2", 0);
    config_declare(c, "heavy_global", "32", 0);
}

throttle_t *throttle_new(service_t *service)
{
    config_t *c = service_config(service);
    int64_t per_host, global;
    if (config_int(c, "heavy_per_host", 1, 10000, &per_host) ||
        config_int(c, "heavy_global", 1, 1000000, &global))
        return NULL;
    throttle_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->store = service_store(service);
    self->per_host = (int)per_host;
    self->global = (int)global;
    return self;
}

void throttle_destroy(throttle_t **self_p)
{
    if (self_p && *self_p) {
        free(*self_p);
        *self_p = NULL;
    }
}

/* Run the script: {held, granted} into the outputs. -1 when Redis failed. */
static int s_run(throttle_t *self, const char *task, const char *host, const char *old_host,
                 long long *held, long long *granted)
{
    char per_host[24], global[24], now[24];
    snprintf(per_host, sizeof per_host, "%d", self->per_host);
    snprintf(global, sizeof global, "%d", self->global);
    snprintf(now, sizeof now, "%lld", (long long)util_now_ms());
    const char *argv[] = { KEYS_THROTTLE_RUNNING,
                           KEYS_THROTTLE_QUEUE,
                           KEYS_THROTTLE_WAITING,
                           KEYS_TASKS_DUE,
                           KEYS_TASKS_WAKE,
                           per_host,
                           global,
                           now,
                           task,
                           host,
                           old_host ? old_host : "" };
    int argc = task ? 11 : 8;
    redisReply *r = store_run(self->store, &lua_taskmgr_throttle, 5, argc, argv);
    int ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
             r->element[0]->type == REDIS_REPLY_INTEGER &&
             r->element[1]->type == REDIS_REPLY_INTEGER;
    if (ok) {
        *held = r->element[0]->integer;
        *granted = r->element[1]->integer;
    } else
        log_debug(NULL, "throttle script failed", "{s:s}", "reason",
                  r && r->type == REDIS_REPLY_ERROR ? r->str : "state store unreachable");
    if (r)
        freeReplyObject(r);
    return ok ? 0 : -1;
}

int throttle_acquire(throttle_t *self, const char *task, const char *host, const char *old_host)
{
    assert(self && task && host);
    long long held = 0, granted = 0;
    if (s_run(self, task, host, old_host, &held, &granted) != 0)
        return -1;
    if (!held && !self->full_logged) {
        log_info(NULL, "heavy tasks wait for a slot", "{s:s, s:s, s:i, s:i}", "task", task, "host",
                 host, "heavy_per_host", self->per_host, "heavy_global", self->global);
        self->full_logged = 1;
    }
    return held ? 1 : 0;
}

void throttle_tx_wait(model_tx_t *tx, const char *task, const char *host, const char *old_host)
{
    char member[KEYS_MAX];
    if (old_host && *old_host && strcmp(old_host, host) != 0) {
        snprintf(member, sizeof member, "%s@%s", task, old_host);
        model_tx_zrem(tx, KEYS_THROTTLE_RUNNING, member);
    }
    model_tx_zadd(tx, KEYS_THROTTLE_QUEUE, util_now_ms(), task);
    model_tx_hset(tx, KEYS_THROTTLE_WAITING, task, host);
}

void throttle_tx_release(model_tx_t *tx, const char *task, const char *host)
{
    char member[KEYS_MAX];
    if (host && *host) {
        snprintf(member, sizeof member, "%s@%s", task, host);
        model_tx_zrem(tx, KEYS_THROTTLE_RUNNING, member);
    }
    /* Its waiting field, if any, goes with the next grant (a step has no HDEL). */
    model_tx_zrem(tx, KEYS_THROTTLE_QUEUE, task);
}

void throttle_pump(throttle_t *self)
{
    long long held = 0, granted = 0;
    if (s_run(self, NULL, NULL, NULL, &held, &granted) == 0 && granted)
        log_debug(NULL, "heavy slots granted", "{s:I}", "tasks", (json_int_t)granted);
}

/* Is the task of slot member (a "<task id>@<host>") over or gone? -1 when Redis failed. */
static int s_slot_dead(throttle_t *self, const char *member)
{
    char id[UTIL_ID_LEN], key[KEYS_MAX];
    const char *at = strchr(member, '@');
    if (!at || (size_t)(at - member) >= sizeof id)
        return 1; /* not a slot this code wrote: nothing holds it */
    snprintf(id, sizeof id, "%.*s", (int)(at - member), member);
    redisReply *r = store_command(self->store, "HGET %s state", keys_task(key, id));
    if (!r || r->type == REDIS_REPLY_ERROR) {
        if (r)
            freeReplyObject(r);
        return -1;
    }
    int dead = r->type != REDIS_REPLY_STRING || streq(r->str, "SUCCEEDED") ||
               streq(r->str, "FAILED") || streq(r->str, "ABORTED");
    freeReplyObject(r);
    return dead;
}

void throttle_sweep(throttle_t *self, int interval_ms)
{
    int64_t now = util_mono_ms();
    if (self->swept_ms && now - self->swept_ms < interval_ms)
        return;
    self->swept_ms = now;
    redisReply *r = store_command(self->store, "ZRANGE %s 0 -1", KEYS_THROTTLE_RUNNING);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return;
    }
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *m = r->element[i];
        if (m->type != REDIS_REPLY_STRING || s_slot_dead(self, m->str) != 1)
            continue;
        /* Over is final: no task comes back to life to use this slot. */
        redisReply *z = store_command(self->store, "ZREM %s %s", KEYS_THROTTLE_RUNNING, m->str);
        if (z)
            freeReplyObject(z);
        log_info(NULL, "gave back the heavy slot of a task that is over", "{s:s}", "slot", m->str);
    }
    freeReplyObject(r);
    throttle_pump(self);
    redisReply *n = store_command(self->store, "ZCARD %s", KEYS_THROTTLE_QUEUE);
    if (n && n->type == REDIS_REPLY_INTEGER && n->integer == 0)
        self->full_logged = 0;
    if (n)
        freeReplyObject(n);
}
