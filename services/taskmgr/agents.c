/*  agents: taskmgr's side of the host agents: heartbeats, parked work polls, commands out,
    results in.

    The protocol. An agent keeps one AgentWork poll parked at every taskmgr instance (one
    connection per instance). A poll is answered at once when commands for its host are
    waiting here, else kept (bus_request_defer) and answered the moment a command for that
    host is pushed on this instance, or empty after its wait_ms. A newer poll from the same
    host supersedes a parked one (the old one is answered empty). Only the instance holding
    a task sends its commands, so they live here in memory (the outbox of each host), never
    in Redis: a command is a reference and small arguments, and the task records its id.
    The agent sends each result as soon as the command finishes, on the connection that
    delivered the command, in a new AgentWork; the result is handed to the task engine,
    which writes the task that records it before the poll is answered (acknowledged). A
    command handed out stays in the outbox, not handed out again, until its result arrives
    or the engine cancels it; the engine pushes it again when no result came for
    command_redeliver_ms (or when a new holder takes the task over), and the agent answers a
    repeated id from its cache. */
#include "agents.h"
#include "keys.h"
#include "lua_scripts.h"

#define POLL_MAX_COMMANDS 8 /* commands handed out per poll answer */

typedef struct {
    Berth__AgentCommand *cmd; /* owned copy */
    int delivered;            /* handed out in a poll answer */
} s_out_t;

typedef struct {
    bus_request_t *request; /* the kept poll */
    int64_t until;          /* monotonic ms to answer it empty */
} s_park_t;

/* What this instance last recorded from one host's heartbeats: a beat between two intervals
   (an agent reports a change at once) refreshes the registry only when the entry changed,
   and looks up only the VMs whose reported power state changed. */
typedef struct {
    char entry[512];       /* instance, endpoint, status, started_ms as last registered */
    int64_t registered_ms; /* monotonic, when it was last registered */
    int64_t full_ms;       /* monotonic, when every reported VM was last looked up */
    zhashx_t *power;       /* domain name -> power state, as last reported */
} s_host_t;

#define MAX_TRACKED_HOSTS 100000 /* hosts remembered; beyond that every beat is a full one */

struct _agents_t {
    service_t *service;
    zhashx_t *parked; /* host -> s_park_t */
    zhashx_t *outbox; /* host -> zlistx_t of s_out_t */
    zhashx_t *hosts;  /* host -> s_host_t */
    agents_result_fn *on_result;
    void *on_result_arg;
    int max_wait_ms;      /* longest a poll is parked */
    size_t max_host_cmds; /* commands waiting per host */
    int outbox_full;      /* warned once */
};

static int s_valid_id(const char *s, size_t max)
{
    size_t len = s ? strlen(s) : 0;
    return len > 0 && len <= max &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                     "0123456789-_.") == len;
}

static void s_out_free(void **item)
{
    s_out_t *o = *item;
    if (o) {
        if (o->cmd)
            berth__agent_command__free_unpacked(o->cmd, NULL);
        free(o);
        *item = NULL;
    }
}

static void s_list_free(void **item)
{
    zlistx_t *list = *item;
    zlistx_destroy(&list);
    *item = NULL;
}

static void s_host_free(void **item)
{
    s_host_t *h = *item;
    if (h) {
        zhashx_destroy(&h->power);
        free(h);
        *item = NULL;
    }
}

static void s_park_free(void **item)
{
    s_park_t *p = *item;
    if (p) {
        bus_request_destroy(&p->request);
        free(p);
        *item = NULL;
    }
}

/* ---- heartbeats --------------------------------------------------------------------------- */

/* An agent speaks only for the host its certificate names (lib/bus_auth.h): a heartbeat,
   poll or result naming another host is refused before anything is read or written. A
   server without CURVE (unit tests) knows no callers. */
static int s_own_host(bus_request_t *request, const char *host)
{
    const bus_caller_t *caller = bus_request_caller(request);
    if (!caller || streq(caller->host, host))
        return 1;
    log_warn(bus_request_envelope(request)->request_id, "agent refused for another host",
             "{s:s, s:s, s:s}", "type", bus_request_envelope(request)->type, "certificate_host",
             caller->host, "host", host);
    berth_error_t error;
    error_set(&error, "FORBIDDEN", "this agent's certificate is for host '%s'", caller->host);
    bus_reply_fault(request, &error);
    return 0;
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
    if (!s_own_host(request, hb->host->id))
        return;
    store_t *store = service_store(self->service);
    registry_entry_t e = { .started_ms = hb->started_ms };
    util_strlcpy(e.service, "agent", sizeof e.service);
    util_strlcpy(e.instance, hb->instance, sizeof e.instance);
    util_strlcpy(e.endpoint, hb->endpoint, sizeof e.endpoint);
    util_strlcpy(e.status, hb->host->state, sizeof e.status);
    /* The agent beats every ttl/3 and at once on a change. The registry entry is refreshed
       and every reported VM looked at twice per interval at most (and the entry whenever
       it changed); in between, only the domains whose power state changed are looked at. */
    int64_t now = util_mono_ms(), half = hb->ttl_ms / 6; /* half an interval */
    char entry[512];
    snprintf(entry, sizeof entry, "%s|%s|%s|%lld", e.instance, e.endpoint, e.status,
             (long long)e.started_ms);
    s_host_t *known = zhashx_lookup(self->hosts, hb->host->id);
    if (!known && zhashx_size(self->hosts) < MAX_TRACKED_HOSTS) {
        known = calloc(1, sizeof *known);
        if (known && !(known->power = zhashx_new())) {
            free(known);
            known = NULL;
        }
        if (known) {
            zhashx_set_destructor(known->power, (zhashx_destructor_fn *)zstr_free);
            zhashx_set_duplicator(known->power, (zhashx_duplicator_fn *)strdup);
            zhashx_insert(self->hosts, hb->host->id, known);
        }
    }
    int full = !known || !known->full_ms || now - known->full_ms >= half;
    int reg = !known || !known->registered_ms || now - known->registered_ms >= half ||
              strcmp(known->entry, entry) != 0;
    if (reg && registry_register(store, &e, hb->ttl_ms) != 0) {
        bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
        return;
    }
    if (reg && known) {
        util_strlcpy(known->entry, entry, sizeof known->entry);
        known->registered_ms = now;
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
    char host_key[KEYS_MAX];
    keys_host(host_key, hb->host->id);
    Berth__Resources *cap = hb->host->capacity;
    char vcpus[24], ram[24], disk[24], vms[24], seen[24];
    snprintf(vcpus, sizeof vcpus, "%d", cap->vcpus);
    snprintf(ram, sizeof ram, "%lld", (long long)cap->ram_mb);
    snprintf(disk, sizeof disk, "%lld", (long long)cap->disk_gb);
    snprintf(vms, sizeof vms, "%zu", ours);
    snprintf(seen, sizeof seen, "%lld", (long long)util_now_ms());
    /* lib/lua/taskmgr_beat.lua: the host's hash and set, then one VM key per domain of ours;
       the host id and its fields, then each of those domains' name and power state. */
    const char *head[] = {
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
    const char **argv = calloc(2 + ours + HEAD + 2 * ours, sizeof *argv);
    char(*vm_keys)[KEYS_MAX] = ours ? calloc(ours, sizeof *vm_keys) : NULL;
    int argc = 2 + (int)ours;
    size_t k = 0; /* VM keys passed: the domains to look at */
    if (argv && (vm_keys || !ours)) {
        argv[0] = host_key;
        argv[1] = KEYS_HOSTS;
        memcpy(argv + argc, head, sizeof head);
        argc += HEAD;
        for (size_t i = 0; i < hb->n_domains; i++) {
            Berth__Domain *d = hb->domains[i];
            if (util_is_uuid(d->name) && s_valid_id(d->power_state, 32)) {
                const char *was = full ? NULL : zhashx_lookup(known->power, d->name);
                if (was && streq(was, d->power_state))
                    continue; /* unchanged since the last beat: looked at each interval */
                argv[2 + k] = keys_vm(vm_keys[k], d->name);
                k++;
                argv[argc++] = d->name;
                argv[argc++] = d->power_state;
            }
        }
    }
    if (argv && k < ours) { /* close the gap the skipped keys left before the arguments */
        memmove(argv + 2 + k, argv + 2 + ours, (argc - 2 - ours) * sizeof *argv);
        argc -= (int)(ours - k);
    }
    redisReply *r = argv && (vm_keys || !ours)
                        ? store_run(store, &lua_taskmgr_beat, 2 + (int)k, argc, argv)
                        : NULL;
    int ok = r && r->type == REDIS_REPLY_ARRAY;
    if (ok && known) {
        /* What was reported, for the next beat to compare with. */
        zhashx_purge(known->power);
        for (size_t i = 0; i < hb->n_domains; i++)
            if (util_is_uuid(hb->domains[i]->name) && s_valid_id(hb->domains[i]->power_state, 32))
                zhashx_update(known->power, hb->domains[i]->name, hb->domains[i]->power_state);
        if (full)
            known->full_ms = now;
    }
    /* The changes, as one transaction: each an observed power state (version bump and a
       vm.power event, only if still placed here and still different). */
    model_tx_t *tx = ok && r->elements ? model_tx_new() : NULL;
    int changes = 0;
    for (size_t i = 0; tx && i + 2 < r->elements; i += 3)
        if (r->element[i]->type == REDIS_REPLY_STRING &&
            r->element[i + 2]->type == REDIS_REPLY_STRING &&
            power_state_from_string(r->element[i + 2]->str) > 0 &&
            model_tx_vm_power(tx, r->element[i]->str, hb->host->id, r->element[i + 2]->str) == 0)
            changes++;
    const char *why = NULL;
    int rc = changes ? model_tx_commit(tx, store, &why) : 0;
    if (rc > 0)
        log_debug(NULL, "power states not written; the next heartbeat retries", "{s:s}", "reason",
                  why ? why : "?");
    model_tx_destroy(&tx);
    if (r)
        freeReplyObject(r);
    free(domains_text);
    free(vm_keys);
    free(argv);
    if (!ok) {
        bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
        return;
    }
    Berth__AgentHeartbeatReply reply = BERTH__AGENT_HEARTBEAT_REPLY__INIT;
    reply.host_state = hb->host->state;
    bus_reply(request, &reply.base);
}

/* ---- work polls --------------------------------------------------------------------------- */

/* Answer request with the commands of host not handed out yet (marking them handed out). */
static void s_answer(agents_t *self, bus_request_t *request, const char *host)
{
    Berth__AgentWorkReply reply = BERTH__AGENT_WORK_REPLY__INIT;
    Berth__AgentCommand *cmds[POLL_MAX_COMMANDS];
    zlistx_t *list = zhashx_lookup(self->outbox, host);
    for (s_out_t *o = list ? zlistx_first(list) : NULL; o && reply.n_commands < POLL_MAX_COMMANDS;
         o = zlistx_next(list))
        if (!o->delivered) {
            o->delivered = 1;
            cmds[reply.n_commands++] = o->cmd;
        }
    reply.commands = cmds;
    bus_reply(request, &reply.base);
}

static int s_has_due(agents_t *self, const char *host)
{
    zlistx_t *list = zhashx_lookup(self->outbox, host);
    for (s_out_t *o = list ? zlistx_first(list) : NULL; o; o = zlistx_next(list))
        if (!o->delivered)
            return 1;
    return 0;
}

/* Drop command id from host's outbox (any host when host is NULL). */
static void s_drop(agents_t *self, const char *host, const char *id)
{
    for (zlistx_t *list = zhashx_first(self->outbox); list; list = zhashx_next(self->outbox)) {
        if (host && strcmp(zhashx_cursor(self->outbox), host) != 0)
            continue;
        for (s_out_t *o = zlistx_first(list); o; o = zlistx_next(list))
            if (strcmp(o->cmd->id, id) == 0) {
                zlistx_delete(list, zlistx_cursor(list));
                return;
            }
    }
}

static void s_on_work(bus_request_t *request, void *arg)
{
    agents_t *self = arg;
    Berth__AgentWork *work = bus_request_body(request, &berth__agent_work__descriptor);
    if (!work || !s_valid_id(work->host, 64) || work->n_results > 1024 || work->wait_ms < 0) {
        bus_reply_error(request, "BAD_REQUEST", "work poll needs a valid host id");
        return;
    }
    if (!s_own_host(request, work->host))
        return; /* its commands and its results are the named host's only */
    /* This poll supersedes the one parked for the same host: that one is answered empty
       first, so what the results below set going is handed out in the answer to this one. */
    s_park_t *old = zhashx_lookup(self->parked, work->host);
    if (old) {
        Berth__AgentWorkReply empty = BERTH__AGENT_WORK_REPLY__INIT;
        bus_reply(old->request, &empty.base);
        zhashx_delete(self->parked, work->host);
    }
    /* Results: each is recorded by its task before this poll is answered. */
    for (size_t i = 0; i < work->n_results; i++) {
        Berth__AgentResult *res = work->results[i];
        if (!s_valid_id(res->command, 64))
            continue;
        s_drop(self, work->host, res->command);
        if (self->on_result && self->on_result(self->on_result_arg, work->host, res) != 0) {
            bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
            return;
        }
    }
    if (work->wait_ms == 0 || s_has_due(self, work->host)) {
        s_answer(self, request, work->host);
        return;
    }
    s_park_t *park = calloc(1, sizeof *park);
    bus_request_t *kept = park ? bus_request_defer(request) : NULL;
    if (!kept) {
        free(park);
        s_answer(self, request, work->host); /* out of memory: answer now, the agent asks again */
        return;
    }
    int wait = work->wait_ms < self->max_wait_ms ? work->wait_ms : self->max_wait_ms;
    park->request = kept;
    park->until = util_mono_ms() + wait;
    zhashx_update(self->parked, work->host, park);
}

/* Answer the polls parked past their wait, empty. */
static int s_sweep(service_t *service, void *arg)
{
    (void)service;
    agents_t *self = arg;
    int64_t now = util_mono_ms();
    zlistx_t *hosts = zhashx_keys(self->parked);
    for (char *host = zlistx_first(hosts); host; host = zlistx_next(hosts)) {
        s_park_t *p = zhashx_lookup(self->parked, host);
        if (p && p->until <= now) {
            Berth__AgentWorkReply empty = BERTH__AGENT_WORK_REPLY__INIT;
            bus_reply(p->request, &empty.base);
            zhashx_delete(self->parked, host);
        }
    }
    zlistx_destroy(&hosts);
    return 0;
}

/* ---- the engine's side -------------------------------------------------------------------- */

int agents_push(agents_t *self, const char *host, const Berth__AgentCommand *cmd)
{
    size_t len = berth__agent_command__get_packed_size(cmd);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return -1;
    berth__agent_command__pack(cmd, buf);
    Berth__AgentCommand *copy = berth__agent_command__unpack(NULL, len, buf);
    free(buf);
    s_out_t *o = copy ? calloc(1, sizeof *o) : NULL;
    if (!o) {
        if (copy)
            berth__agent_command__free_unpacked(copy, NULL);
        return -1;
    }
    o->cmd = copy;
    s_drop(self, NULL, cmd->id); /* pushed again: replaces the one handed out */
    zlistx_t *list = zhashx_lookup(self->outbox, host);
    if (!list) {
        list = zlistx_new();
        if (!list) {
            void *item = o;
            s_out_free(&item);
            return -1;
        }
        zlistx_set_destructor(list, s_out_free);
        zhashx_insert(self->outbox, host, list);
    }
    if (zlistx_size(list) >= self->max_host_cmds) {
        if (!self->outbox_full)
            log_warn(NULL, "too many commands waiting for one host: dropping the oldest",
                     "{s:s, s:i}", "host", host, "max_host_commands", (int)self->max_host_cmds);
        self->outbox_full = 1;
        zlistx_first(list);
        zlistx_delete(list, zlistx_cursor(list));
    }
    zlistx_add_end(list, o);
    s_park_t *park = zhashx_lookup(self->parked, host);
    if (park) {
        s_answer(self, park->request, host);
        zhashx_delete(self->parked, host);
    }
    return 0;
}

void agents_cancel(agents_t *self, const char *id)
{
    if (id && *id)
        s_drop(self, NULL, id);
}

void agents_on_result(agents_t *self, agents_result_fn *fn, void *arg)
{
    self->on_result = fn;
    self->on_result_arg = arg;
}

int agents_power(store_t *store, const char *host, const char *vm, char *power, size_t size)
{
    char key[KEYS_MAX];
    keys_host(key, host);
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

/* ---- construction ------------------------------------------------------------------------- */

void agents_declare(config_t *c)
{
    config_declare(c, "max_poll_wait_ms", "30000", 0);
    config_declare(c, "max_host_commands", "1024", 0);
}

agents_t *agents_new(service_t *service)
{
    config_t *c = service_config(service);
    int64_t wait, cmds;
    if (config_int(c, "max_poll_wait_ms", 100, 600000, &wait) ||
        config_int(c, "max_host_commands", 1, 1000000, &cmds))
        return NULL;
    agents_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->service = service;
    self->max_wait_ms = (int)wait;
    self->max_host_cmds = (size_t)cmds;
    self->parked = zhashx_new();
    self->outbox = zhashx_new();
    self->hosts = zhashx_new();
    if (!self->parked || !self->outbox || !self->hosts) {
        agents_destroy(&self);
        return NULL;
    }
    zhashx_set_destructor(self->parked, s_park_free);
    zhashx_set_destructor(self->outbox, s_list_free);
    zhashx_set_destructor(self->hosts, s_host_free);
    service_on(service, "AgentHeartbeat", "agent", s_on_heartbeat, self);
    service_on(service, "AgentWork", "agent", s_on_work, self);
    service_every(service, 250, s_sweep, self);
    return self;
}

void agents_destroy(agents_t **self_p)
{
    if (self_p && *self_p) {
        agents_t *self = *self_p;
        zhashx_destroy(&self->parked);
        zhashx_destroy(&self->outbox);
        zhashx_destroy(&self->hosts);
        free(self);
        *self_p = NULL;
    }
}
