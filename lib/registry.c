/*  registry: a sorted set per service (member = instance, score = expiry in Redis time)
    plus a hash per instance. Listing prunes lapsed members first, so a killed instance
    vanishes after its TTL even though nobody deregistered it. A listing is three steps,
    because every key a script touches is named before it runs: the services (SMEMBERS), the
    live instances of each (registry_prune.lua), their hashes (hash_rows.lua). */
#include "registry.h"
#include "keys.h"
#include "lua_scripts.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int registry_register(store_t *store, const registry_entry_t *entry, int ttl_ms)
{
    char zkey[KEYS_MAX], hkey[KEYS_MAX], ttl[16], started[32];
    keys_build(zkey, KEYS_REGISTRY, entry->service, NULL);
    keys_build(hkey, KEYS_INSTANCE, entry->service, entry->instance);
    snprintf(ttl, sizeof ttl, "%d", ttl_ms);
    snprintf(started, sizeof started, "%lld", (long long)entry->started_ms);
    const char *argv[] = { zkey,
                           hkey,
                           KEYS_SERVICES,
                           entry->service,
                           entry->instance,
                           ttl,
                           entry->endpoint,
                           entry->status[0] ? entry->status : "UP",
                           started };
    redisReply *r = store_run(store, &lua_registry_register, 3, 9, argv);
    int rc = r && r->type == REDIS_REPLY_INTEGER ? 0 : -1;
    if (r)
        freeReplyObject(r);
    return rc;
}

int registry_deregister(store_t *store, const char *service, const char *instance)
{
    char zkey[KEYS_MAX], hkey[KEYS_MAX];
    redisReply *a = store_command(store, "ZREM %s %s",
                                  keys_build(zkey, KEYS_REGISTRY, service, NULL), instance);
    redisReply *b =
        store_command(store, "DEL %s", keys_build(hkey, KEYS_INSTANCE, service, instance));
    int rc = a && b ? 0 : -1;
    if (a)
        freeReplyObject(a);
    if (b)
        freeReplyObject(b);
    return rc;
}

static int64_t s_int(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : 0;
}

static void s_copy(char *dst, size_t size, const redisReply *r)
{
    util_strlcpy(dst, r && r->type == REDIS_REPLY_STRING ? r->str : "", size);
}

static int s_by_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The names of every service with a registry (sorted), or just service. Caller frees the
   reply (NULL when service is given) and the array. -1 if Redis failed. */
static int s_services(store_t *store, const char *service, redisReply **reply_p,
                      const char ***names_p, size_t *count_p)
{
    *reply_p = NULL;
    if (service) {
        const char **names = malloc(sizeof *names);
        if (!names)
            return -1;
        names[0] = service;
        *names_p = names;
        *count_p = 1;
        return 0;
    }
    redisReply *r = store_command(store, "SMEMBERS %s", KEYS_SERVICES);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return -1;
    }
    const char **names = calloc(r->elements + 1, sizeof *names);
    if (!names) {
        freeReplyObject(r);
        return -1;
    }
    size_t n = 0;
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING &&
            r->element[i]->len < sizeof(((registry_entry_t *)0)->service))
            names[n++] = r->element[i]->str;
    qsort(names, n, sizeof *names, s_by_name);
    *reply_p = r;
    *names_p = names;
    *count_p = n;
    return 0;
}

int registry_list(store_t *store, const char *service, registry_entry_t **entries, size_t *count)
{
    redisReply *services_r = NULL, *live = NULL, *rows = NULL;
    const char **names = NULL;
    char(*keys)[KEYS_MAX] = NULL;
    const char **argv = NULL;
    registry_entry_t *out = NULL;
    size_t nsvc = 0, n = 0;
    int rc = -1;
    if (s_services(store, service, &services_r, &names, &nsvc) != 0)
        goto done;
    /* Step 2: prune each service's zset and list who is left. */
    size_t nkeys = nsvc;
    keys = calloc(nkeys + 1, sizeof *keys);
    argv = calloc(nkeys + 1, sizeof *argv);
    if (!keys || !argv)
        goto done;
    for (size_t i = 0; i < nsvc; i++)
        argv[i] = keys_build(keys[i], KEYS_REGISTRY, names[i], NULL);
    if (nsvc) {
        live = store_run(store, &lua_registry_prune, (int)nsvc, (int)nsvc, argv);
        if (!live || live->type != REDIS_REPLY_ARRAY || live->elements != nsvc)
            goto done;
        for (size_t i = 0; i < nsvc; i++)
            if (live->element[i]->type == REDIS_REPLY_ARRAY)
                n += live->element[i]->elements;
    }
    /* Step 3: every live instance's hash. */
    free(keys);
    free(argv);
    keys = calloc(n + 1, sizeof *keys);
    argv = calloc(n + 6, sizeof *argv);
    out = calloc(n + 1, sizeof *out);
    if (!keys || !argv || !out)
        goto done;
    size_t k = 0;
    for (size_t i = 0; i < nsvc; i++) {
        const redisReply *insts = live->element[i];
        for (size_t j = 0; insts->type == REDIS_REPLY_ARRAY && j < insts->elements; j++) {
            const redisReply *inst = insts->element[j];
            if (inst->type != REDIS_REPLY_STRING || inst->len >= sizeof out[k].instance)
                continue;
            util_strlcpy(out[k].service, names[i], sizeof out[k].service);
            util_strlcpy(out[k].instance, inst->str, sizeof out[k].instance);
            argv[k] = keys_build(keys[k], KEYS_INSTANCE, names[i], inst->str);
            k++;
        }
    }
    static const char *fields[] = { "endpoint", "status", "started_ms", "last_heartbeat_ms",
                                    "expires_ms" };
    for (size_t f = 0; f < 5; f++)
        argv[k + f] = fields[f];
    size_t kept = 0;
    if (k) {
        rows = store_run(store, &lua_hash_rows, (int)k, (int)k + 5, argv);
        if (!rows || rows->type != REDIS_REPLY_ARRAY || rows->elements != k)
            goto done;
        for (size_t i = 0; i < k; i++) {
            redisReply *row = rows->element[i];
            if (row->type != REDIS_REPLY_ARRAY || row->elements != 5)
                continue; /* the hash expired between the two steps */
            registry_entry_t *e = &out[kept++];
            if (e != &out[i])
                *e = out[i];
            s_copy(e->endpoint, sizeof e->endpoint, row->element[0]);
            s_copy(e->status, sizeof e->status, row->element[1]);
            e->started_ms = s_int(row->element[2]);
            e->last_heartbeat_ms = s_int(row->element[3]);
            e->expires_ms = s_int(row->element[4]);
        }
    }
    *entries = out;
    *count = kept;
    out = NULL;
    rc = 0;
done:
    if (services_r)
        freeReplyObject(services_r);
    if (live)
        freeReplyObject(live);
    if (rows)
        freeReplyObject(rows);
    free(names);
    free(keys);
    free(argv);
    free(out);
    return rc;
}
