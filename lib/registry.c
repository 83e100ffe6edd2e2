/*  registry: a sorted set per service (member = instance, score = expiry in Redis time)
    plus a hash per instance. Listing prunes lapsed members first, so a killed instance
    vanishes after its TTL even though nobody deregistered it. */
#include "registry.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static store_script_t s_register = {
    .source = "local t = redis.call('TIME')\n"
              "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
              "local ttl = tonumber(ARGV[3])\n"
              "redis.call('SADD', KEYS[3], ARGV[1])\n"
              "redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])\n"
              "redis.call('HSET', KEYS[2], 'service', ARGV[1], 'instance', ARGV[2],\n"
              "  'endpoint', ARGV[4], 'status', ARGV[5], 'started_ms', ARGV[6],\n"
              "  'last_heartbeat_ms', now, 'expires_ms', now + ttl)\n"
              "redis.call('PEXPIRE', KEYS[2], ttl)\n"
              "return now\n",
};

/* Returns a flat array, 7 strings per live instance. */
static store_script_t s_list = {
    .source =
        "local t = redis.call('TIME')\n"
        "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
        "local services\n"
        "if ARGV[1] == '' then services = redis.call('SMEMBERS', KEYS[1])\n"
        "else services = {ARGV[1]} end\n"
        "table.sort(services)\n"
        "local out = {}\n"
        "for _, svc in ipairs(services) do\n"
        "  local zkey = 'berth:registry:' .. svc\n"
        "  redis.call('ZREMRANGEBYSCORE', zkey, '-inf', now)\n"
        "  local insts = redis.call('ZRANGE', zkey, 0, -1)\n"
        "  table.sort(insts)\n"
        "  for _, inst in ipairs(insts) do\n"
        "    local h = redis.call('HMGET', 'berth:instance:' .. svc .. ':' .. inst, 'endpoint',\n"
        "      'status', 'started_ms', 'last_heartbeat_ms', 'expires_ms')\n"
        "    if h[1] then\n"
        "      for _, v in ipairs({svc, inst, h[1], h[2], h[3], h[4], h[5]}) do\n"
        "        out[#out + 1] = v end\n"
        "    end\n"
        "  end\n"
        "end\n"
        "return out\n",
};

int registry_register(store_t *store, const registry_entry_t *entry, int ttl_ms)
{
    char zkey[96], hkey[192], ttl[16], started[32];
    snprintf(zkey, sizeof zkey, "berth:registry:%s", entry->service);
    snprintf(hkey, sizeof hkey, "berth:instance:%s:%s", entry->service, entry->instance);
    snprintf(ttl, sizeof ttl, "%d", ttl_ms);
    snprintf(started, sizeof started, "%lld", (long long)entry->started_ms);
    const char *argv[] = { zkey,
                           hkey,
                           "berth:services",
                           entry->service,
                           entry->instance,
                           ttl,
                           entry->endpoint,
                           entry->status[0] ? entry->status : "UP",
                           started };
    redisReply *r = store_eval(store, &s_register, 3, 9, argv);
    int rc = r && r->type == REDIS_REPLY_INTEGER ? 0 : -1;
    if (r)
        freeReplyObject(r);
    return rc;
}

int registry_deregister(store_t *store, const char *service, const char *instance)
{
    redisReply *a = store_command(store, "ZREM berth:registry:%s %s", service, instance);
    redisReply *b = store_command(store, "DEL berth:instance:%s:%s", service, instance);
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

int registry_list(store_t *store, const char *service, registry_entry_t **entries, size_t *count)
{
    const char *argv[] = { "berth:services", service ? service : "" };
    redisReply *r = store_eval(store, &s_list, 1, 2, argv);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return -1;
    }
    size_t n = r->elements / 7;
    registry_entry_t *out = calloc(n ? n : 1, sizeof *out);
    if (!out) {
        freeReplyObject(r);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        redisReply **f = r->element + i * 7;
        s_copy(out[i].service, sizeof out[i].service, f[0]);
        s_copy(out[i].instance, sizeof out[i].instance, f[1]);
        s_copy(out[i].endpoint, sizeof out[i].endpoint, f[2]);
        s_copy(out[i].status, sizeof out[i].status, f[3]);
        out[i].started_ms = s_int(f[4]);
        out[i].last_heartbeat_ms = s_int(f[5]);
        out[i].expires_ms = s_int(f[6]);
    }
    freeReplyObject(r);
    *entries = out;
    *count = n;
    return 0;
}
