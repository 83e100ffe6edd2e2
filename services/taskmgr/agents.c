/*  agents: heartbeats, work polls and the command queue of each host.

    A command is a hash berth:cmd:<id> (payload = the packed AgentCommand) plus a member of
    berth:host-cmds:<host>. A poll first records the results it carries (only a PENDING
    command of that host can be completed, so a late duplicate changes nothing), then hands
    out what is queued and not delivered recently. Delivery is at least once; the agent
    answers a repeated command id from its cache. */
#include "agents.h"

#define CMD_TTL_S         (7 * 24 * 3600) /* a command record outlives any task that waits for it */
#define POLL_MAX_COMMANDS 8               /* commands handed out per poll */

struct _agents_t {
    service_t *service;
    int redeliver_ms; /* hand a command out again after this long without a result */
};

/* KEYS: host-cmds zset. ARGV: host, now, redeliver_ms, max. Returns payloads. */
static store_script_t s_fetch = {
    .source = "local out = {}\n"
              "for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, 63)) do\n"
              "  if #out >= tonumber(ARGV[4]) then break end\n"
              "  local key = 'berth:cmd:' .. id\n"
              "  local c = redis.call('HMGET', key, 'host', 'state', 'delivered_ms', 'payload')\n"
              "  if c[1] ~= ARGV[1] or c[2] ~= 'PENDING' or not c[4] then\n"
              "    redis.call('ZREM', KEYS[1], id)\n"
              "  elseif tonumber(c[3] or '0') + tonumber(ARGV[3]) <= tonumber(ARGV[2]) then\n"
              "    redis.call('HSET', key, 'delivered_ms', ARGV[2])\n"
              "    out[#out + 1] = c[4]\n"
              "  end\n"
              "end\n"
              "return out\n",
};

/* KEYS: cmd hash, host-cmds zset. ARGV: host, state, error, power, detail, now. */
static store_script_t s_result = {
    .source =
        "local c = redis.call('HMGET', KEYS[1], 'host', 'state')\n"
        "if c[1] ~= ARGV[1] or c[2] ~= 'PENDING' then return 0 end\n"
        "redis.call('HSET', KEYS[1], 'state', ARGV[2], 'error', ARGV[3], 'power_state', ARGV[4],\n"
        "  'detail', ARGV[5], 'finished_ms', ARGV[6])\n"
        "redis.call('ZREM', KEYS[2], string.sub(KEYS[1], 11))\n"
        "return 1\n",
};

/* A heartbeat in one step: the host's hash and its place in the set of hosts, then the
   power states onto the VMs placed on that host (only changes are written).
   KEYS: host hash, hosts set. ARGV: host id, n, n field/value pairs, then name/state pairs. */
static store_script_t s_beat = {
    .source = "local n = tonumber(ARGV[2])\n"
              "redis.call('HSET', KEYS[1], unpack(ARGV, 3, 2 + 2 * n))\n"
              "redis.call('SADD', KEYS[2], ARGV[1])\n"
              "for i = 3 + 2 * n, #ARGV, 2 do\n"
              "  local key = 'berth:vm:{' .. ARGV[i] .. '}'\n"
              "  local v = redis.call('HMGET', key, 'host', 'power_state')\n"
              "  if v[1] == ARGV[1] and v[2] ~= ARGV[i + 1] then\n"
              "    redis.call('HSET', key, 'power_state', ARGV[i + 1])\n"
              "  end\n"
              "end\n"
              "return 1\n",
};

static int s_valid_id(const char *s, size_t max)
{
    size_t len = s ? strlen(s) : 0;
    return len > 0 && len <= max &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                     "0123456789-_.") == len;
}

/* The agent's heartbeat: registry entry for the agent, host hash for placement, the
   domains it runs, and their power states onto the VMs. */
static void s_on_heartbeat(bus_request_t *request, void *arg)
{
    agents_t *self = arg;
    Berth__AgentHeartbeat *hb = bus_request_body(request, &berth__agent_heartbeat__descriptor);
    if (!hb || !hb->host || !s_valid_id(hb->host->id, 64) || !hb->host->capacity ||
        !s_valid_id(hb->instance, 120) || hb->ttl_ms < 100 || hb->ttl_ms > 600000 ||
        hb->n_domains > 10000) {
        bus_reply_error(request, "BAD_REQUEST",
                        "heartbeat needs instance, host id, capacity and ttl");
        return;
    }
    store_t *store = service_store(self->service);
    registry_entry_t e = { .started_ms = hb->started_ms };
    util_strlcpy(e.service, "agent", sizeof e.service);
    util_strlcpy(e.instance, hb->instance, sizeof e.instance);
    util_strlcpy(e.endpoint, hb->endpoint, sizeof e.endpoint);
    util_strlcpy(e.status, hb->host->state, sizeof e.status);
    if (registry_register(store, &e, hb->ttl_ms) != 0) {
        bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
        return;
    }
    json_t *domains = json_array();
    size_t ours = 0;
    for (size_t i = 0; i < hb->n_domains; i++) {
        Berth__Domain *d = hb->domains[i];
        json_array_append_new(
            domains, json_pack("{s:s, s:s}", "name", d->name, "power_state", d->power_state));
        /* Only domains named by a Berth id are VMs of ours; a host may run others. */
        if (util_is_uuid(d->name) && s_valid_id(d->power_state, 32))
            ours++;
    }
    char *domains_text = json_dumps(domains, JSON_COMPACT);
    json_decref(domains);
    char host_key[MODEL_KEY_MAX];
    model_key(host_key, sizeof host_key, "host", hb->host->id);
    Berth__Resources *cap = hb->host->capacity;
    char vcpus[24], ram[24], disk[24], vms[24], seen[24];
    snprintf(vcpus, sizeof vcpus, "%d", cap->vcpus);
    snprintf(ram, sizeof ram, "%lld", (long long)cap->ram_mb);
    snprintf(disk, sizeof disk, "%lld", (long long)cap->disk_gb);
    snprintf(vms, sizeof vms, "%zu", ours);
    snprintf(seen, sizeof seen, "%lld", (long long)util_now_ms());
    const char *head[] = {
        host_key,       "berth:hosts",
        hb->host->id,   "12",
        "id",           hb->host->id,
        "name",         hb->host->name && *hb->host->name ? hb->host->name : hb->host->id,
        "agent",        hb->instance,
        "state",        *hb->host->state ? hb->host->state : "UP",
        "libvirt_uri",  hb->host->libvirt_uri,
        "hypervisor",   hb->host->hypervisor,
        "cap_vcpus",    vcpus,
        "cap_ram_mb",   ram,
        "cap_disk_gb",  disk,
        "vms",          vms,
        "last_seen_ms", seen,
        "domains",      domains_text ? domains_text : "[]"
    };
    enum { HEAD = sizeof head / sizeof *head };
    const char **argv = calloc(HEAD + 2 * ours, sizeof *argv);
    int argc = HEAD;
    if (argv) {
        memcpy(argv, head, sizeof head);
        for (size_t i = 0; i < hb->n_domains; i++) {
            Berth__Domain *d = hb->domains[i];
            if (util_is_uuid(d->name) && s_valid_id(d->power_state, 32)) {
                argv[argc++] = d->name;
                argv[argc++] = d->power_state;
            }
        }
    }
    redisReply *r = argv ? store_eval(store, &s_beat, 2, argc, argv) : NULL;
    int ok = r && r->type != REDIS_REPLY_ERROR;
    if (r)
        freeReplyObject(r);
    free(domains_text);
    free(argv);
    if (!ok) {
        bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
        return;
    }
    Berth__AgentHeartbeatReply reply = BERTH__AGENT_HEARTBEAT_REPLY__INIT;
    reply.host_state = hb->host->state;
    bus_reply(request, &reply.base);
}

static void s_on_work(bus_request_t *request, void *arg)
{
    agents_t *self = arg;
    Berth__AgentWork *work = bus_request_body(request, &berth__agent_work__descriptor);
    if (!work || !s_valid_id(work->host, 64) || work->n_results > 1024) {
        bus_reply_error(request, "BAD_REQUEST", "work poll needs a valid host id");
        return;
    }
    store_t *store = service_store(self->service);
    char queue[MODEL_KEY_MAX], now[24], redeliver[24];
    snprintf(queue, sizeof queue, "berth:host-cmds:%s", work->host);
    snprintf(now, sizeof now, "%lld", (long long)util_now_ms());
    snprintf(redeliver, sizeof redeliver, "%d", self->redeliver_ms);
    for (size_t i = 0; i < work->n_results; i++) {
        Berth__AgentResult *res = work->results[i];
        if (!s_valid_id(res->command, 64))
            continue;
        char key[MODEL_KEY_MAX];
        snprintf(key, sizeof key, "berth:cmd:%s", res->command);
        const char *argv[] = { key,         queue,
                               work->host,  res->ok ? "DONE" : "FAILED",
                               res->error,  res->power_state,
                               res->detail, now };
        redisReply *r = store_eval(store, &s_result, 2, 8, argv);
        if (!r) {
            bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
            return;
        }
        freeReplyObject(r);
    }
    const char *argv[] = { queue, work->host, now, redeliver, "8" };
    redisReply *r = store_eval(store, &s_fetch, 1, 5, argv);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
        return;
    }
    Berth__AgentWorkReply reply = BERTH__AGENT_WORK_REPLY__INIT;
    Berth__AgentCommand *cmds[POLL_MAX_COMMANDS];
    for (size_t i = 0; i < r->elements && reply.n_commands < POLL_MAX_COMMANDS; i++) {
        redisReply *e = r->element[i];
        Berth__AgentCommand *c =
            e->type == REDIS_REPLY_STRING
                ? berth__agent_command__unpack(NULL, e->len, (const uint8_t *)e->str)
                : NULL;
        if (c)
            cmds[reply.n_commands++] = c;
    }
    freeReplyObject(r);
    reply.commands = cmds;
    bus_reply(request, &reply.base);
    for (size_t i = 0; i < reply.n_commands; i++)
        berth__agent_command__free_unpacked(cmds[i], NULL);
}

agents_t *agents_new(service_t *service)
{
    agents_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->service = service;
    int64_t redeliver = 15000;
    config_int(service_config(service), "command_redeliver_ms", 100, 3600000, &redeliver);
    self->redeliver_ms = (int)redeliver;
    service_on(service, "AgentHeartbeat", s_on_heartbeat, self);
    service_on(service, "AgentWork", s_on_work, self);
    return self;
}

void agents_destroy(agents_t **self_p)
{
    if (self_p && *self_p) {
        free(*self_p);
        *self_p = NULL;
    }
}

int agents_prepare(store_t *store, const char *host, Berth__AgentCommand *cmd,
                   char id_out[UTIL_ID_LEN])
{
    char id[UTIL_ID_LEN];
    util_uuid(id);
    cmd->id = id;
    size_t len = berth__agent_command__get_packed_size(cmd);
    uint8_t *payload = malloc(len ? len : 1);
    if (!payload)
        return -1;
    berth__agent_command__pack(cmd, payload);
    char key[MODEL_KEY_MAX], created[24];
    snprintf(key, sizeof key, "berth:cmd:%s", id);
    snprintf(created, sizeof created, "%lld", (long long)util_now_ms());
    const char *argv[] = {
        "HSET",       key,     "id",           id,      "host",    host,
        "op",         cmd->op, "vm",           cmd->vm, "state",   "PENDING",
        "created_ms", created, "delivered_ms", "0",     "payload", (const char *)payload
    };
    enum { ARGC = sizeof argv / sizeof *argv };
    size_t lens[ARGC];
    for (int i = 0; i < ARGC - 1; i++)
        lens[i] = strlen(argv[i]);
    lens[ARGC - 1] = len; /* the payload is binary */
    redisReply *r = store_commandv(store, ARGC, argv, lens);
    free(payload);
    cmd->id = NULL;
    int ok = r && r->type != REDIS_REPLY_ERROR;
    if (r)
        freeReplyObject(r);
    r = ok ? store_command(store, "EXPIRE %s %d", key, CMD_TTL_S) : NULL;
    if (r)
        freeReplyObject(r);
    if (!ok)
        return -1;
    memcpy(id_out, id, UTIL_ID_LEN);
    return 0;
}

void agents_queue(model_tx_t *tx, const char *host, const char *id)
{
    char queue[MODEL_KEY_MAX];
    snprintf(queue, sizeof queue, "berth:host-cmds:%s", host);
    model_tx_zadd(tx, queue, util_now_ms(), id);
}

static void s_copy(char *dst, size_t size, const redisReply *r)
{
    util_strlcpy(dst, r && r->type == REDIS_REPLY_STRING ? r->str : "", size);
}

int agents_result(store_t *store, const char *id, char *state, size_t state_size, char *error,
                  size_t error_size, char *power, size_t power_size)
{
    redisReply *r = store_command(store, "HMGET berth:cmd:%s state error power_state", id);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
        if (r)
            freeReplyObject(r);
        return -1;
    }
    s_copy(state, state_size, r->element[0]);
    s_copy(error, error_size, r->element[1]);
    s_copy(power, power_size, r->element[2]);
    freeReplyObject(r);
    return 0;
}

int agents_power(store_t *store, const char *host, const char *vm, char *power, size_t size)
{
    char key[MODEL_KEY_MAX];
    model_key(key, sizeof key, "host", host);
    redisReply *r = store_command(store, "HGET %s domains", key);
    if (!r)
        return -1;
    power[0] = '\0';
    json_t *domains = r->type == REDIS_REPLY_STRING ? json_loads(r->str, 0, NULL) : NULL;
    freeReplyObject(r);
    size_t i;
    json_t *d;
    json_array_foreach(domains, i, d)
    {
        if (streq(json_string_value(json_object_get(d, "name")) ?: "", vm))
            util_strlcpy(power, json_string_value(json_object_get(d, "power_state")) ?: "", size);
    }
    json_decref(domains);
    return 0;
}
