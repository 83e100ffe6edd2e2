/*  migrate: schema version and upgrade steps.

    Several instances of several services start at once against one store, and exactly one
    of them may run the steps. The first to take berth:schema:lock (SET NX with a TTL) runs
    them in order; after each step it writes the new version in the same Lua step that checks
    it still holds the lock and extends it, so a holder that stalled past its TTL (and lost
    the lock to another instance) cannot write a version. Everyone else polls the version
    until it is current; a holder that died leaves the lock to expire, and the next instance
    runs the interrupted step again from the start (steps are idempotent).

    A store without berth:schema is version 1: the layout of the release before versions
    were written down. When the store is current the version is written if it is missing, so
    the next release knows what it finds. */
#include "migrate.h"
#include "clock.h"
#include "keys.h"
#include "log.h"
#include "lua_scripts.h"
#include "util.h"

#include <assert.h>
#include <czmq.h>
#include <jansson.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#define LOCK_TTL_MS 30000 /* a step longer than this must extend the lock (none does yet) */
#define POLL_MS     50    /* how often a waiting instance looks again */

/* 1 -> 2: every group that reserves capacity gets its reservation log (berth:reservation-log),
   started now with what it reserves: a store from before the log has no record of when its
   reservations were made, so a reservation-based charge starts at the upgrade, never earlier.
   A group whose log exists is left alone (the step may run again). Nothing else writes while
   it runs: every service waits for the migration before it serves. */
static int s_reservation_logs(store_t *store)
{
    redisReply *ids = store_command(store, "ZRANGE %s 0 -1", KEYS_GROUPS);
    if (!ids || ids->type != REDIS_REPLY_ARRAY) {
        if (ids)
            freeReplyObject(ids);
        return -1;
    }
    char at[24];
    snprintf(at, sizeof at, "%lld", (long long)clock_now_ms());
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < ids->elements; i++) {
        const redisReply *id = ids->element[i];
        if (id->type != REDIS_REPLY_STRING || !util_is_uuid(id->str))
            continue;
        char gkey[KEYS_MAX], lkey[KEYS_MAX];
        keys_build(gkey, KEYS_GROUP, id->str, NULL);
        keys_build(lkey, KEYS_RESERVATION_LOG, id->str, NULL);
        redisReply *r = store_command(store, "HGET %s reservations", gkey);
        json_t *list = r && r->type == REDIS_REPLY_STRING ? json_loads(r->str, 0, NULL) : NULL;
        if (!r || r->type == REDIS_REPLY_ERROR)
            rc = -1;
        if (r)
            freeReplyObject(r);
        if (rc != 0 || !json_is_array(list) || json_array_size(list) == 0) {
            json_decref(list);
            continue;
        }
        long long total[3] = { 0, 0, 0 };
        static const char *const dims[3] = { "vcpus", "ram_mb", "disk_gb" };
        size_t k;
        json_t *res;
        json_array_foreach(list, k, res)
        {
            for (int d = 0; d < 3; d++) {
                json_t *v = json_object_get(res, dims[d]);
                /* model_to_json writes 64-bit integers as strings */
                total[d] += json_is_string(v) ? strtoll(json_string_value(v), NULL, 10)
                                              : (long long)json_integer_value(v);
            }
        }
        json_decref(list);
        redisReply *e = store_command(store, "EXISTS %s", lkey);
        if (!e || e->type != REDIS_REPLY_INTEGER)
            rc = -1;
        else if (e->integer == 0) {
            char value[128];
            snprintf(value, sizeof value, "{\"vcpus\":%lld,\"ram_mb\":%lld,\"disk_gb\":%lld}",
                     total[0], total[1], total[2]);
            redisReply *w = store_command(store, "HSET %s %s %s", lkey, at, value);
            if (!w || w->type == REDIS_REPLY_ERROR)
                rc = -1;
            if (w)
                freeReplyObject(w);
        }
        if (e)
            freeReplyObject(e);
    }
    freeReplyObject(ids);
    return rc;
}

/* 2 -> 3: every host's `claims` field counts the claims on it (the max_vms filter and the
   claim script read it; placement_claim.lua and placement_release.lua keep it from then on).
   Counted from the claims themselves and written whole, so running it again gives the same;
   a host holding none is set to 0. */
static int s_claim_counts(store_t *store)
{
    zhashx_t *counts = zhashx_new();
    if (!counts)
        return -1;
    int rc = 0;
    char cursor[32] = "0";
    do {
        redisReply *page = store_command(store, "SCAN %s MATCH berth:claim:{* COUNT 1000", cursor);
        if (!page || page->type != REDIS_REPLY_ARRAY || page->elements != 2 ||
            page->element[0]->type != REDIS_REPLY_STRING ||
            page->element[1]->type != REDIS_REPLY_ARRAY) {
            if (page)
                freeReplyObject(page);
            rc = -1;
            break;
        }
        util_strlcpy(cursor, page->element[0]->str, sizeof cursor);
        for (size_t i = 0; rc == 0 && i < page->element[1]->elements; i++) {
            const redisReply *key = page->element[1]->element[i];
            if (key->type != REDIS_REPLY_STRING)
                continue;
            redisReply *host = store_command(store, "HGET %s host", key->str);
            if (!host || host->type == REDIS_REPLY_ERROR)
                rc = -1;
            else if (host->type == REDIS_REPLY_STRING && host->len > 0) {
                uintptr_t n = (uintptr_t)zhashx_lookup(counts, host->str);
                zhashx_update(counts, host->str, (void *)(n + 1));
            }
            if (host)
                freeReplyObject(host);
        }
        freeReplyObject(page);
    } while (rc == 0 && strcmp(cursor, "0") != 0);
    redisReply *ids = rc == 0 ? store_command(store, "SMEMBERS %s", KEYS_HOSTS) : NULL;
    if (rc == 0 && (!ids || ids->type != REDIS_REPLY_ARRAY))
        rc = -1;
    for (size_t i = 0; rc == 0 && i < ids->elements; i++) {
        const redisReply *id = ids->element[i];
        if (id->type != REDIS_REPLY_STRING)
            continue;
        char key[KEYS_MAX], n[24];
        snprintf(n, sizeof n, "%lu", (unsigned long)(uintptr_t)zhashx_lookup(counts, id->str));
        keys_host(key, id->str);
        /* A host listed but never described stays so (no hash made for it). */
        redisReply *e = store_command(store, "EXISTS %s", key);
        redisReply *w = e && e->type == REDIS_REPLY_INTEGER && e->integer == 1
                            ? store_command(store, "HSET %s claims %s", key, n)
                            : NULL;
        if (!e || e->type != REDIS_REPLY_INTEGER || (e->integer == 1 && !w) ||
            (w && w->type == REDIS_REPLY_ERROR))
            rc = -1;
        if (e)
            freeReplyObject(e);
        if (w)
            freeReplyObject(w);
    }
    if (ids)
        freeReplyObject(ids);
    zhashx_destroy(&counts);
    return rc;
}

/* The steps of this build, oldest first. */
static const migrate_step_t s_steps[] = {
    { 1, "reservation logs: a group that reserves capacity has its berth:reservation-log",
      s_reservation_logs },
    { 2, "claim counts: every host counts the claims on it (berth:host:<id> claims)",
      s_claim_counts },
    { 0, NULL, NULL }
};

/* What one migration works on: the platform's layout (berth:schema, its steps without an
   argument) or one service's own data (migrate_run_own: its version key, steps with arg). */
typedef struct {
    const char *version_key;
    const char *lock_key;
    int absent;                    /* the version a store without version_key is at */
    const migrate_step_t *steps;   /* either these */
    const migrate_own_step_t *own; /* or these, run with arg */
    void *arg;
} s_ctx_t;

static int s_version(const s_ctx_t *ctx, store_t *store)
{
    redisReply *r = store_command(store, "GET %s", ctx->version_key);
    if (!r)
        return -1;
    int64_t v = ctx->absent;
    int rc = ctx->absent;
    if (r->type == REDIS_REPLY_STRING) {
        if (util_parse_int(r->str, 0, 1000000, &v) == 0)
            rc = (int)v;
        else {
            log_error(NULL, "the stored schema version is not a version", "{s:s, s:s}", "key",
                      ctx->version_key, "value", r->str);
            rc = -1;
        }
    } else if (r->type != REDIS_REPLY_NIL)
        rc = -1;
    freeReplyObject(r);
    return rc;
}

int migrate_version(store_t *store)
{
    s_ctx_t ctx = { .version_key = KEYS_SCHEMA, .lock_key = KEYS_SCHEMA_LOCK, .absent = 1 };
    return s_version(&ctx, store);
}

/* migrate_lock.lua: 1 done, 0 refused, -1 Redis failed. */
static int s_lock(const s_ctx_t *ctx, store_t *store, const char *op, const char *owner,
                  int version)
{
    char ttl[16], v[16];
    snprintf(ttl, sizeof ttl, "%d", LOCK_TTL_MS);
    snprintf(v, sizeof v, "%d", version);
    const char *argv[] = { ctx->lock_key, ctx->version_key, op, owner, ttl, v };
    redisReply *r = store_run(store, &lua_migrate_lock, 2, 6, argv);
    if (!r)
        return -1;
    int rc = r->type == REDIS_REPLY_INTEGER ? (int)r->integer : -1;
    freeReplyObject(r);
    return rc;
}

/* Run the step from version (logged). 0 or -1. */
static int s_step_run(const s_ctx_t *ctx, store_t *store, int version)
{
    for (const migrate_step_t *s = ctx->steps; s && s->run; s++)
        if (s->from == version) {
            log_info(NULL, "migrating the store", "{s:i, s:i, s:s, s:s}", "from", version, "to",
                     version + 1, "what", s->what, "key", ctx->version_key);
            return s->run(store);
        }
    for (const migrate_own_step_t *s = ctx->own; s && s->run; s++)
        if (s->from == version) {
            log_info(NULL, "migrating the store", "{s:i, s:i, s:s, s:s}", "from", version, "to",
                     version + 1, "what", s->what, "key", ctx->version_key);
            return s->run(store, ctx->arg);
        }
    assert(0); /* every version below the target has its step */
    return -1;
}

/* Run the steps from version to target while holding the lock. 0 or -1. */
static int s_migrate(const s_ctx_t *ctx, store_t *store, const char *owner, int version, int target)
{
    while (version < target) {
        int64_t start = util_mono_ms();
        if (s_step_run(ctx, store, version) != 0) {
            log_error(NULL, "a migration step failed: the store stays at its version", "{s:i, s:s}",
                      "version", version, "key", ctx->version_key);
            return -1;
        }
        if (s_lock(ctx, store, "step", owner, version + 1) != 1) {
            log_error(NULL, "lost the migration lock before recording a step", "{s:i}", "version",
                      version + 1);
            return -1;
        }
        version++;
        log_info(NULL, "store migrated", "{s:i, s:I}", "version", version, "took_ms",
                 (json_int_t)(util_mono_ms() - start));
    }
    return 0;
}

static int s_run(const s_ctx_t *ctx, store_t *store, const char *owner, int target, int wait_ms)
{
    int64_t deadline = util_mono_ms() + wait_ms;
    int waited_for_redis = 0, waited_for_lock = 0;
    for (;;) {
        int version = s_version(ctx, store);
        if (version > target) {
            log_error(NULL, "the store is newer than this build: upgrade this service",
                      "{s:i, s:i}", "store_version", version, "build_version", target);
            return MIGRATE_NEWER;
        } else if (version == target) {
            /* Current. Write the version down if it is missing (a store of the first
               release, or a new one); SET NX so a newer writer is never overwritten. */
            char v[16];
            snprintf(v, sizeof v, "%d", target);
            redisReply *r = store_command(store, "SET %s %s NX", ctx->version_key, v);
            if (r) {
                freeReplyObject(r);
                return 0;
            }
        } else if (version >= 0) {
            int taken = s_lock(ctx, store, "take", owner, 0);
            if (taken == 1) {
                /* Holding the lock: read again, another holder may have finished first. */
                version = s_version(ctx, store);
                int rc = version < 0 ? -1 : s_migrate(ctx, store, owner, version, target);
                s_lock(ctx, store, "release", owner, 0);
                return rc == 0 ? 0 : -1;
            }
            if (taken == 0 && !waited_for_lock++)
                log_info(NULL, "another instance is migrating the store: waiting", "{s:i, s:i}",
                         "version", version, "target", target);
        }
        if (version < 0 && !waited_for_redis++)
            log_warn(NULL, "cannot read the store's schema version yet: waiting for Redis", "{s:i}",
                     "wait_ms", wait_ms);
        if (util_mono_ms() >= deadline) {
            log_error(NULL, "the store did not become current in time", "{s:i, s:i}", "version",
                      version, "wait_ms", wait_ms);
            return -1;
        }
        /* Before the service's loop exists: a short pause is all there is to do here. */
        zclock_sleep(POLL_MS);
    }
}

int migrate_run_steps(store_t *store, const char *owner, const migrate_step_t *steps, int target,
                      int wait_ms)
{
    assert(store && owner && steps && target >= 1);
    s_ctx_t ctx = {
        .version_key = KEYS_SCHEMA, .lock_key = KEYS_SCHEMA_LOCK, .absent = 1, .steps = steps
    };
    return s_run(&ctx, store, owner, target, wait_ms);
}

int migrate_run_own(store_t *store, const char *owner, const char *version_key,
                    const char *lock_key, const migrate_own_step_t *steps, int target, void *arg,
                    int wait_ms)
{
    assert(store && owner && version_key && lock_key && steps && target >= 1);
    s_ctx_t ctx = {
        .version_key = version_key, .lock_key = lock_key, .absent = 0, .own = steps, .arg = arg
    };
    return s_run(&ctx, store, owner, target, wait_ms);
}

int migrate_run(store_t *store, const char *owner, int wait_ms)
{
    return migrate_run_steps(store, owner, s_steps, MIGRATE_VERSION, wait_ms);
}
