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
#include "assertion.h"
#include "keys.h"
#include "lua_scripts.h"
#include "tasks.h"

#include <time.h>

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
    char *images;          /* the images field as this instance last wrote it (NULL: never) */
} s_host_t;

#define MAX_TRACKED_HOSTS 100000 /* hosts remembered; beyond that every beat is a full one */
#define MAX_DOWN_CHECK    1000   /* hosts past their ttl looked at per check */

struct _agents_t {
    service_t *service;
    zhashx_t *parked;   /* host -> s_park_t */
    zhashx_t *outbox;   /* host -> zlistx_t of s_out_t */
    zhashx_t *hosts;    /* host -> s_host_t */
    zhashx_t *down;     /* host -> "1" (stored DOWN) or "0" (not yet): hosts past their ttl */
    zhashx_t *rebuilds; /* ReleaseClaim call id -> id of a lost VM to build again after it */
    agents_result_fn *on_result;
    void *on_result_arg;
    agents_down_fn *on_down; /* told when a host goes past its ttl (the task engine) */
    void *on_down_arg;
    assertion_t *verifier;   /* checks who a SetHostMaintenance acts for (loaded on first use) */
    int release_timeout_ms;  /* ReleaseClaim of a VM a returning host lost */
    int down_grace_ms;       /* Redis answering this long before a host is judged DOWN */
    int64_t judge_from;      /* monotonic ms from which hosts are judged (0: not started) */
    int64_t last_check_mono; /* monotonic ms of the last check (0: none yet) */
    int max_wait_ms;         /* longest a poll is parked */
    size_t max_host_cmds;    /* commands waiting per host */
    int outbox_full;         /* warned once */
};

#define AGENT_IMAGES_MAX 1024 /* cached images recorded per host */

/* 64 lower-case hex digits: a SHA-256. */
static int s_is_digest(const char *s)
{
    if (!s || strlen(s) != 64)
        return 0;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return 0;
    return 1;
}

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
        free(h->images);
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

/* ---- host state and reconciliation --------------------------------------------------------
   A host's state is a transition of the lifecycle table (kind "host"), never a view computed
   when read. Every taskmgr instance looks for hosts whose last heartbeat's ttl ran out
   (berth:hosts:seen, s_check_down); the first to commit UP/DISABLED -> DOWN, checked against
   the state and last_seen_ms it read, is the only one that does: a later one finds the state
   changed and writes nothing. In the same step the running VMs (ACTIVE, EXPIRING) placed on
   the host get power UNKNOWN (never read as off; the meter charges by lifecycle state, so
   they are charged as they were until the host returns). The task engine of every instance
   is told at once (agents_on_down): a stage waiting on that host fails over without waiting
   for its deadline. No host is judged while Redis has not answered for host_down_grace_ms
   (no beat could be recorded during an outage, so every host would look silent), nor until
   this instance has run that long after standing still itself.

   A heartbeat from a DOWN host moves it back (to UP, or DISABLED when in maintenance) and
   reconciles it with the domains it reports, in the same step; so does the first heartbeat
   of an agent that restarted (its started_ms differs from the one the host holds), since a
   host may come back before its ttl ran out (a simulated one comes back empty). A VM of
   Berth placed there and reported gets its real power state back (an alert when it is not
   running); one not reported was lost with its host: it goes ERROR with a fault,
   which gives its group quota back, and its claim is released at once (the host no longer
   holds it; the scheduler owns claims, so taskmgr asks it, and a disposal releases it again
   idempotently if that call failed). Domains the host runs that are no VM of Berth on it are
   orphans: listed on the host (field `orphans`), announced with a host.orphans event when
   the list grows, never destroyed. */

/* A VM of Berth placed on a host, as the host scan found it. */
typedef struct {
    char id[UTIL_ID_LEN];
    char power[32];
    char state[32]; /* ACTIVE or EXPIRING (s_running) */
} s_vm_ref_t;

/* Is a VM in state a built VM that runs with no task on it (so its host's reports are its
   power state): ACTIVE, or EXPIRING (the same, with its lease's notice given)? */
static int s_running(const char *state)
{
    return streq(state, "ACTIVE") || streq(state, "EXPIRING");
}

#define SCAN_CHUNK 256 /* VM hashes read per script call when scanning for a host's VMs */

/* The running VMs (s_running) placed on host: *refs (malloc'd, caller frees) and *n. A scan
   of berth:vms, read SCAN_CHUNK hashes at a time: it runs when a host goes DOWN or comes
   back, not per beat. 0, or -1 when Redis failed. */
static int s_placed(store_t *store, const char *host, s_vm_ref_t **refs, size_t *n)
{
    *refs = NULL;
    *n = 0;
    redisReply *ids = store_command(store, "ZRANGE %s 0 -1", KEYS_VMS);
    if (!ids || ids->type != REDIS_REPLY_ARRAY) {
        if (ids)
            freeReplyObject(ids);
        return -1;
    }
    s_vm_ref_t *out = NULL;
    size_t count = 0, cap = 0;
    int rc = 0;
    char(*keys)[KEYS_MAX] = calloc(SCAN_CHUNK, sizeof *keys);
    const char *argv[SCAN_CHUNK + 3];
    if (!keys)
        rc = -1;
    for (size_t at = 0; rc == 0 && at < ids->elements; at += SCAN_CHUNK) {
        size_t m = ids->elements - at < SCAN_CHUNK ? ids->elements - at : SCAN_CHUNK, k = 0;
        for (size_t i = 0; i < m; i++)
            if (ids->element[at + i]->type == REDIS_REPLY_STRING &&
                util_is_uuid(ids->element[at + i]->str))
                argv[k] = keys_vm(keys[k], ids->element[at + i]->str), k++;
        argv[k] = "host";
        argv[k + 1] = "state";
        argv[k + 2] = "power_state";
        redisReply *r = k ? store_run(store, &lua_hash_rows, (int)k, (int)k + 3, argv) : NULL;
        if (k && (!r || r->type != REDIS_REPLY_ARRAY || r->elements != k))
            rc = -1;
        for (size_t i = 0; rc == 0 && r && i < k; i++) {
            redisReply *row = r->element[i];
            if (row->type != REDIS_REPLY_ARRAY || row->elements != 3 ||
                row->element[0]->type != REDIS_REPLY_STRING || !streq(row->element[0]->str, host) ||
                row->element[1]->type != REDIS_REPLY_STRING || !s_running(row->element[1]->str))
                continue;
            if (count == cap) {
                size_t more = cap ? 2 * cap : 16;
                s_vm_ref_t *grown = realloc(out, more * sizeof *out);
                if (!grown) {
                    rc = -1;
                    break;
                }
                out = grown;
                cap = more;
            }
            /* The id from the key: berth:vm:{<id>} */
            const char *open = strchr(argv[i], '{');
            util_strlcpy(out[count].id, open ? open + 1 : "", sizeof out[count].id);
            out[count].id[strcspn(out[count].id, "}")] = '\0';
            util_strlcpy(out[count].power,
                         row->element[2]->type == REDIS_REPLY_STRING ? row->element[2]->str : "",
                         sizeof out[count].power);
            util_strlcpy(out[count].state, row->element[1]->str, sizeof out[count].state);
            count++;
        }
        if (r)
            freeReplyObject(r);
    }
    free(keys);
    freeReplyObject(ids);
    if (rc != 0) {
        free(out);
        return -1;
    }
    *refs = out;
    *n = count;
    return 0;
}

/* A power state seen by the heartbeat (not a command's result) that deserves an alert: a
   domain no longer running that was running, suspended or unknown. */
static int s_alert(const char *was, const char *now)
{
    int off = streq(now, "STOPPED") || streq(now, "CRASHED") || streq(now, "NOSTATE");
    int was_on = streq(was, "RUNNING") || streq(was, "SUSPENDED") || streq(was, "UNKNOWN");
    return off && was_on;
}

/* Add VM id's observed power to tx, with an alert when it stopped behind Berth's back. */
static void s_observe(model_tx_t *tx, const char *id, const char *host, const char *was,
                      const char *power)
{
    char key[KEYS_MAX];
    keys_vm(key, id);
    if (s_alert(was, power))
        model_tx_observe(tx, LIFECYCLE_POWER, key, power, "host", host, "vm", id, "host", host,
                         "alert", "1", "reason", "the domain stopped without a request from Berth",
                         NULL);
    else
        model_tx_observe(tx, LIFECYCLE_POWER, key, power, "host", host, "vm", id, "host", host,
                         NULL);
}

/* UP/DISABLED -> DOWN (from `state`, and last_seen_ms still `seen` unless seen is NULL), with
   its running VMs' power UNKNOWN, in one step. 0 done, MODEL_CONFLICT (another instance did it,
   or the host beat meanwhile), -1 Redis. */
static int s_mark_down(store_t *store, const char *host, const char *state, const char *seen,
                       const char *reason)
{
    s_vm_ref_t *refs = NULL;
    size_t n = 0;
    if (s_placed(store, host, &refs, &n) != 0)
        return -1;
    char hkey[KEYS_MAX], vkey[KEYS_MAX];
    keys_host(hkey, host);
    model_tx_t *tx = model_tx_new();
    if (!tx) {
        free(refs);
        return -1;
    }
    if (seen)
        model_tx_check(tx, hkey, "last_seen_ms", seen);
    model_tx_transition(tx, LIFECYCLE_HOST, hkey, state, "DOWN", MODEL_VERSION_ANY, "host", host,
                        "reason", reason, NULL);
    for (size_t i = 0; i < n; i++) {
        if (streq(refs[i].power, "UNKNOWN"))
            continue;
        model_tx_check(tx, keys_vm(vkey, refs[i].id), "state", refs[i].state);
        model_tx_observe(tx, LIFECYCLE_POWER, vkey, "UNKNOWN", "host", host, "vm", refs[i].id,
                         "host", host, "reason", "its host is DOWN", NULL);
    }
    const char *why = NULL;
    int rc = model_tx_commit(tx, store, &why);
    if (rc == 0)
        log_warn(NULL, "host DOWN", "{s:s, s:s, s:i}", "host", host, "reason", reason, "vms",
                 (int)n);
    else if (rc > 0)
        log_debug(NULL, "host not marked DOWN here", "{s:s, s:s}", "host", host, "why",
                  why ? why : "?");
    model_tx_destroy(&tx);
    free(refs);
    return rc == MODEL_REFUSED ? -1 : rc;
}

/* A lost VM whose template says rebuild_on_loss, its claim released: ERROR -> PROVISIONING
   and a PROVISION task, in one step guarded by the VM as read (still ERROR with the same
   task and fault: a disposal asked meanwhile wins). The quota is charged again by the
   transition; a group now over its quota keeps the VM ERROR, its fault saying it was lost. */
static void s_rebuild(agents_t *self, const char *vm_id)
{
    store_t *store = service_store(self->service);
    char vkey[KEYS_MAX], task_id[UTIL_ID_LEN];
    Berth__Vm *vm = NULL;
    if (model_load(store, &berth__vm__descriptor, keys_vm(vkey, vm_id), (ProtobufCMessage **)&vm) !=
        0)
        return;
    model_tx_t *tx = NULL;
    if (streq(vm->state, "ERROR") && vm->rebuild_on_loss && (tx = model_tx_new()) != NULL) {
        model_tx_actor(tx, "service:taskmgr", NULL);
        model_tx_check(tx, vkey, "fault", vm->fault); /* still the loss it was left with */
        Berth__Vm after = *vm;
        after.host = "";
        after.fault = "";
        model_tx_vm_transition(tx, &after, "PROVISIONING");
        model_tx_put_fields(tx, vkey, &after.base, "host", "fault", NULL);
        Berth__Task task;
        tasks_queue_action(tx, &after, "PROVISION", "service:taskmgr", "", 0, 0, &task, task_id);
        const char *why = NULL;
        int rc = model_tx_commit(tx, store, &why);
        if (rc == 0)
            log_info(NULL, "lost VM built again", "{s:s, s:s}", "vm", vm_id, "task", task_id);
        else
            log_warn(NULL, "lost VM not built again", "{s:s, s:s}", "vm", vm_id, "why",
                     rc == MODEL_CONFLICT ? "it changed meanwhile"
                     : why                ? why
                                          : "Redis failed");
        model_tx_destroy(&tx);
    }
    berth__vm__free_unpacked(vm, NULL);
}

static void s_on_released(bus_client_t *client, const char *call_id, Berth__Envelope *reply,
                          void *arg)
{
    (void)client;
    agents_t *self = arg;
    char *rebuild = call_id ? zhashx_lookup(self->rebuilds, call_id) : NULL;
    if (!reply || reply->error)
        log_warn(NULL, "claim of a lost VM not released; its disposal releases it", "{s:s?, s:s?}",
                 "error", reply && reply->error ? reply->error->message : "no answer", "vm",
                 rebuild);
    else if (rebuild)
        s_rebuild(self, rebuild);
    if (call_id)
        zhashx_delete(self->rebuilds, call_id);
    if (reply)
        berth__envelope__free_unpacked(reply, NULL);
}

/* The domain name -> power state of a heartbeat, as a hash (borrowed strings). */
static zhashx_t *s_reported(const Berth__AgentHeartbeat *hb)
{
    zhashx_t *map = zhashx_new();
    for (size_t i = 0; map && i < hb->n_domains; i++)
        if (hb->domains[i]->name && hb->domains[i]->power_state)
            zhashx_update(map, hb->domains[i]->name, hb->domains[i]->power_state);
    return map;
}

/* A heartbeat from a host stored as `state` that is new, back from DOWN, or from an agent
   that restarted (its started_ms differs from `started`, the one the host holds): move it to
   `to` (NULL: keep `state`) and, with reconcile, reconcile its VMs with what it reports (see
   above), in one step. 0 done, MODEL_CONFLICT (someone else did), -1 Redis or memory. */
static int s_return(agents_t *self, store_t *store, const Berth__AgentHeartbeat *hb,
                    const char *state, const char *to, int reconcile, const char *started)
{
    const char *host = hb->host->id;
    char hkey[KEYS_MAX], vkey[KEYS_MAX], now_started[24];
    keys_host(hkey, host);
    snprintf(now_started, sizeof now_started, "%lld", (long long)hb->started_ms);
    s_vm_ref_t *refs = NULL;
    size_t n = 0;
    if (reconcile && s_placed(store, host, &refs, &n) != 0)
        return -1;
    zhashx_t *reported = reconcile ? s_reported(hb) : NULL;
    model_tx_t *tx = model_tx_new();
    Berth__Vm **lost = n ? calloc(n, sizeof *lost) : NULL;
    if (!tx || (reconcile && !reported) || (n && !lost)) {
        model_tx_destroy(&tx);
        zhashx_destroy(&reported);
        free(lost);
        free(refs);
        return -1;
    }
    /* The agent instance this step reconciles with, written once: another beat of the same
       agent finds it written and reconciles nothing again. */
    model_tx_check(tx, hkey, "agent_started_ms", started);
    model_tx_hset(tx, hkey, "agent_started_ms", now_started);
    /* A new host's hash has no version yet (its first claim brings one). */
    if (to)
        model_tx_transition(tx, LIFECYCLE_HOST, hkey, state, to, *state ? MODEL_VERSION_ANY : 0,
                            "host", host, "reason", *state ? "heartbeat again" : "first heartbeat",
                            NULL);
    else
        model_tx_check(tx, hkey, "state", state);
    size_t n_lost = 0, n_present = 0;
    int rc = 0;
    char fault[256], at[32];
    for (size_t i = 0; i < n && rc == 0; i++) {
        const char *power = zhashx_lookup(reported, refs[i].id);
        if (power) {
            n_present++;
            if (power_state_from_string(power) > 0 && !streq(power, refs[i].power)) {
                model_tx_check(tx, keys_vm(vkey, refs[i].id), "state", refs[i].state);
                s_observe(tx, refs[i].id, host, refs[i].power, power);
            }
            continue;
        }
        Berth__Vm *vm = NULL;
        int lrc = model_load(store, &berth__vm__descriptor, keys_vm(vkey, refs[i].id),
                             (ProtobufCMessage **)&vm);
        if (lrc == MODEL_NOT_FOUND)
            continue;
        if (lrc != 0) {
            rc = -1;
            break;
        }
        if (!streq(vm->state, refs[i].state) || !streq(vm->host, host)) {
            berth__vm__free_unpacked(vm, NULL); /* changed since the scan: the commit says */
            continue;
        }
        time_t t = (time_t)(util_now_ms() / 1000);
        struct tm tm;
        strftime(at, sizeof at, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
        snprintf(fault, sizeof fault,
                 "its domain was missing when host %s came back (%s): lost with its host", host,
                 at);
        model_tx_vm_transition(tx, vm, "ERROR");
        if (vm->fault != protobuf_c_empty_string)
            free(vm->fault);
        vm->fault = strdup(fault);
        if (vm->fault)
            model_tx_put_fields(tx, vkey, &vm->base, "fault", NULL);
        model_tx_observe(tx, LIFECYCLE_POWER, vkey, "NOSTATE", "host", host, "vm", vm->id, "host",
                         host, "alert", "1", "reason", "domain missing on its host", NULL);
        lost[n_lost++] = vm;
    }
    if (reconcile && rc == 0) {
        char present[24], gone[24], now[24];
        snprintf(present, sizeof present, "%zu", n_present);
        snprintf(gone, sizeof gone, "%zu", n_lost);
        snprintf(now, sizeof now, "%lld", (long long)util_now_ms());
        model_tx_event(tx, "host.reconciled", "key", hkey, "host", host, "why",
                       streq(state, "DOWN") ? "back from DOWN" : "its agent restarted", "present",
                       present, "lost", gone, "at_ms", now, NULL);
    }
    const char *why = NULL;
    if (rc == 0)
        rc = model_tx_commit(tx, store, &why);
    if (rc == 0) {
        if (to || reconcile)
            log_info(NULL,
                     !*state ? "host registered"
                     : to    ? "host back"
                             : "host reconciled",
                     "{s:s, s:s, s:i, s:i}", "host", host, "state", to ? to : state, "present",
                     (int)n_present, "lost", (int)n_lost);
        for (size_t i = 0; i < n_lost; i++) {
            log_warn(NULL, "VM lost with its host", "{s:s, s:s}", "vm", lost[i]->id, "host", host);
            Berth__ReleaseClaim req = BERTH__RELEASE_CLAIM__INIT;
            req.vm = lost[i]->id;
            req.keep_address = 1; /* rebuilt, or ERROR until disposed: its address stays */
            char call[UTIL_ID_LEN + 64] = "";
            if (bus_client_send(service_client(self->service), "scheduler", &req.base, NULL,
                                self->release_timeout_ms, s_on_released, self, call) == 0 &&
                lost[i]->rebuild_on_loss && *call)
                zhashx_update(self->rebuilds, call, lost[i]->id);
        }
    } else if (rc > 0)
        log_debug(NULL, "host return not written here", "{s:s, s:s}", "host", host, "why",
                  why ? why : "?");
    for (size_t i = 0; i < n_lost; i++)
        berth__vm__free_unpacked(lost[i], NULL);
    model_tx_destroy(&tx);
    zhashx_destroy(&reported);
    free(lost);
    free(refs);
    return rc == MODEL_REFUSED ? -1 : rc;
}

/* Orphans of a full beat: the names the script found (no VM of Berth on this host) and every
   domain not named by a Berth id, sorted, as JSON text; written with a host.orphans event
   when they differ from what the host holds. */
static void s_orphans(store_t *store, const Berth__AgentHeartbeat *hb, const redisReply *found,
                      const char *stored)
{
    zlistx_t *names = zlistx_new();
    if (!names)
        return;
    zlistx_set_comparator(names, (zlistx_comparator_fn *)strcmp);
    for (size_t i = 0; i < found->elements; i++)
        if (found->element[i]->type == REDIS_REPLY_STRING)
            zlistx_add_end(names, found->element[i]->str);
    for (size_t i = 0; i < hb->n_domains; i++)
        if (hb->domains[i]->name && *hb->domains[i]->name && !util_is_uuid(hb->domains[i]->name))
            zlistx_add_end(names, hb->domains[i]->name);
    zlistx_sort(names);
    json_t *list = json_array(), *added = json_array();
    json_t *before = *stored ? json_loads(stored, 0, NULL) : NULL;
    for (const char *name = zlistx_first(names); name; name = zlistx_next(names)) {
        json_array_append_new(list, json_string(name));
        int known = 0;
        size_t i;
        json_t *b;
        json_array_foreach(before, i, b) known |= streq(json_string_value(b) ?: "", name);
        if (!known)
            json_array_append_new(added, json_string(name));
    }
    char *text = json_dumps(list, JSON_COMPACT);
    char *added_text = json_dumps(added, JSON_COMPACT);
    int same = text && streq(text, *stored ? stored : "[]");
    if (text && added_text && !same) {
        char hkey[KEYS_MAX], now[24];
        keys_host(hkey, hb->host->id);
        snprintf(now, sizeof now, "%lld", (long long)util_now_ms());
        model_tx_t *tx = model_tx_new();
        if (tx) {
            model_tx_check(tx, hkey, "orphans", stored);
            model_tx_hset(tx, hkey, "orphans", text);
            if (json_array_size(added))
                model_tx_event(tx, "host.orphans", "key", hkey, "host", hb->host->id, "orphans",
                               text, "added", added_text, "at_ms", now, NULL);
            if (model_tx_commit(tx, store, NULL) == 0 && json_array_size(added))
                log_warn(NULL, "orphan domains on host (not destroyed)", "{s:s, s:s}", "host",
                         hb->host->id, "added", added_text);
            model_tx_destroy(&tx);
        }
    }
    free(text);
    free(added_text);
    json_decref(list);
    json_decref(added);
    json_decref(before);
    zlistx_destroy(&names);
}

/* Hosts past their ttl: each instance tells its engine about those newly past it, and marks
   DOWN those not stored DOWN yet (exactly one instance succeeds). */
static int s_check_down(service_t *service, void *arg)
{
    agents_t *self = arg;
    store_t *store = service_store(service);
    redisReply *r = store_command(store, "ZRANGEBYSCORE %s -inf %lld LIMIT 0 %d", KEYS_HOSTS_SEEN,
                                  (long long)util_now_ms(), MAX_DOWN_CHECK);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return 0;
    }
    /* Nobody's heartbeat could be recorded while Redis was away (an outage, a failover, a
       connection lost by any of this instance's calls): every host looks silent then. Hosts
       are judged only once Redis has answered for host_down_grace_ms, so the agents' beats
       have come through; nor until this instance has run that long, at start and after it
       stood still itself (stopped, starved): the beats sent to it meanwhile are only now
       coming through. */
    int64_t mono = util_mono_ms();
    if (!self->judge_from ||
        (self->last_check_mono && mono - self->last_check_mono > self->down_grace_ms))
        self->judge_from = mono + self->down_grace_ms;
    self->last_check_mono = mono;
    if (mono < self->judge_from || store_steady_ms(store) < self->down_grace_ms) {
        freeReplyObject(r);
        return 0;
    }
    zhashx_t *now_down = zhashx_new();
    if (!now_down) {
        freeReplyObject(r);
        return 0;
    }
    zhashx_set_destructor(now_down, (zhashx_destructor_fn *)zstr_free);
    zhashx_set_duplicator(now_down, (zhashx_duplicator_fn *)strdup);
    for (size_t i = 0; i < r->elements; i++) {
        if (r->element[i]->type != REDIS_REPLY_STRING || !s_valid_id(r->element[i]->str, 64))
            continue;
        const char *host = r->element[i]->str;
        const char *was = zhashx_lookup(self->down, host);
        int stored_down = was && streq(was, "1");
        if (!stored_down) {
            char key[KEYS_MAX];
            redisReply *h =
                store_command(store, "HMGET %s state last_seen_ms", keys_host(key, host));
            if (h && h->type == REDIS_REPLY_ARRAY && h->elements == 2) {
                const char *state =
                    h->element[0]->type == REDIS_REPLY_STRING ? h->element[0]->str : "";
                const char *seen =
                    h->element[1]->type == REDIS_REPLY_STRING ? h->element[1]->str : "";
                if (streq(state, "DOWN"))
                    stored_down = 1;
                else if (*state && s_mark_down(store, host, state, seen,
                                               "no heartbeat within its agent's ttl") == 0)
                    stored_down = 1;
            }
            if (h)
                freeReplyObject(h);
        }
        zhashx_update(now_down, host, stored_down ? "1" : "0");
        if (!was && self->on_down)
            self->on_down(self->on_down_arg, host);
    }
    freeReplyObject(r);
    zhashx_destroy(&self->down);
    self->down = now_down;
    return 0;
}

int agents_host_down(agents_t *self, const char *host)
{
    return host && *host && zhashx_lookup(self->down, host) != NULL;
}

void agents_on_down(agents_t *self, agents_down_fn *fn, void *arg)
{
    self->on_down = fn;
    self->on_down_arg = arg;
}

/* ---- maintenance -------------------------------------------------------------------------- */

/* An operator's maintenance switch: the flag, and UP <-> DISABLED in the same step (a DOWN
   host keeps DOWN; it comes back DISABLED while the flag is set). Answered with the host's
   id and state. */
static void s_on_maintenance(bus_request_t *request, void *arg)
{
    agents_t *self = arg;
    Berth__SetHostMaintenance *req =
        bus_request_body(request, &berth__set_host_maintenance__descriptor);
    if (!req || !s_valid_id(req->host, 64)) {
        bus_reply_error(request, "BAD_REQUEST", "SetHostMaintenance needs a valid host id");
        return;
    }
    berth_error_t error = { 0 };
    if (!self->verifier) /* loaded on first use: the heartbeat side never needs it */
        self->verifier = assertion_verifier_new(
            config_get(service_config(self->service), "secrets_dir"), &error);
    if (!self->verifier) {
        log_error(NULL, "cannot load the user assertion key", "{s:s}", "reason", error.message);
        bus_reply_fault(request, &error);
        return;
    }
    Berth__UserAssertion *who = NULL;
    if (assertion_of(self->verifier, request, req->assertion, &who, &error) != 0) {
        bus_reply_fault(request, &error);
        return;
    }
    if (!assertion_has_role(who, "admin") && !assertion_has_role(who, "operator")) {
        berth__user_assertion__free_unpacked(who, NULL);
        bus_reply_error(request, "FORBIDDEN", "only an operator or an admin sets maintenance");
        return;
    }
    store_t *store = service_store(self->service);
    const char *rid = bus_request_envelope(request)->request_id;
    char key[KEYS_MAX], state[32] = "";
    keys_host(key, req->host);
    int rc = MODEL_CONFLICT;
    for (int attempt = 0; attempt < 3 && rc == MODEL_CONFLICT; attempt++) {
        redisReply *h = store_command(store, "HMGET %s state maintenance id", key);
        if (!h || h->type != REDIS_REPLY_ARRAY || h->elements != 3) {
            rc = -1;
            if (h)
                freeReplyObject(h);
            break;
        }
        if (h->element[2]->type != REDIS_REPLY_STRING) {
            freeReplyObject(h);
            rc = MODEL_NOT_FOUND;
            break;
        }
        util_strlcpy(state, h->element[0]->type == REDIS_REPLY_STRING ? h->element[0]->str : "",
                     sizeof state);
        const char *flag = h->element[1]->type == REDIS_REPLY_STRING ? h->element[1]->str : "";
        const char *to = req->enabled && streq(state, "UP")          ? "DISABLED"
                         : !req->enabled && streq(state, "DISABLED") ? "UP"
                                                                     : NULL;
        model_tx_t *tx = model_tx_new();
        if (!tx) {
            freeReplyObject(h);
            rc = -1;
            break;
        }
        model_tx_actor(tx, who->user, rid);
        model_tx_check(tx, key, "maintenance", flag);
        model_tx_hset(tx, key, "maintenance", req->enabled ? "1" : "0");
        if (to)
            model_tx_transition(
                tx, LIFECYCLE_HOST, key, state, to, MODEL_VERSION_ANY, "host", req->host, "reason",
                req->enabled ? "maintenance on" : "maintenance off", "actor", who->user, NULL);
        else
            model_tx_check(tx, key, "state", state);
        rc = model_tx_commit(tx, store, NULL);
        model_tx_destroy(&tx);
        freeReplyObject(h);
        if (rc == 0 && to)
            util_strlcpy(state, to, sizeof state);
    }
    if (rc == 0) {
        log_info(rid, "host maintenance", "{s:s, s:b, s:s, s:s}", "host", req->host, "enabled",
                 req->enabled, "state", state, "by", who->user);
        Berth__Host host = BERTH__HOST__INIT;
        host.id = req->host;
        host.state = state;
        host.maintenance = req->enabled;
        bus_reply(request, &host.base);
    } else if (rc == MODEL_NOT_FOUND)
        bus_reply_error(request, "NOT_FOUND", "no such host");
    else if (rc == MODEL_CONFLICT)
        bus_reply_error(request, "CONFLICT", "the host keeps changing; try again");
    else
        bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
    berth__user_assertion__free_unpacked(who, NULL);
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
    /* The base images its agent caches: digests, comma-separated (the scheduler prefers a
       host that has a VM's image). Anything but a digest is left out. */
    char *images_text = calloc(AGENT_IMAGES_MAX * 65 + 1, 1);
    char *at = images_text;
    for (size_t i = 0, n = 0; at && i < hb->host->n_images && n < AGENT_IMAGES_MAX; i++)
        if (s_is_digest(hb->host->images[i])) {
            if (n++)
                *at++ = ',';
            memcpy(at, hb->host->images[i], 64);
            at += 64;
        }
    json_decref(domains);
    char host_key[KEYS_MAX];
    keys_host(host_key, hb->host->id);
    Berth__Resources *cap = hb->host->capacity;
    char vcpus[24], ram[24], disk[24], vms[24], seen[24], expires[24];
    int64_t wall = util_now_ms();
    snprintf(vcpus, sizeof vcpus, "%d", cap->vcpus);
    snprintf(ram, sizeof ram, "%lld", (long long)cap->ram_mb);
    snprintf(disk, sizeof disk, "%lld", (long long)cap->disk_gb);
    snprintf(vms, sizeof vms, "%zu", ours);
    snprintf(seen, sizeof seen, "%lld", (long long)wall);
    snprintf(expires, sizeof expires, "%lld", (long long)(wall + hb->ttl_ms));
    char started[24];
    snprintf(started, sizeof started, "%lld", (long long)hb->started_ms);
    /* What the agent says of its hypervisor (UP, or DOWN when libvirt is unreachable); the
       host's own state is taskmgr's, moved below through the lifecycle table. */
    const char *agent_state = *hb->host->state ? hb->host->state : "UP";
    /* lib/lua/taskmgr_beat.lua: the host's hash, set and seen zset, then one VM key per
       domain of ours; the host id, expiry, full flag, now, guard and its fields, then each
       of those domains' name and power state. */
    char guard[24]; /* one heartbeat interval: a VM written more recently than that may be
                       newer than the snapshot this beat carries (taskmgr_beat.lua) */
    snprintf(guard, sizeof guard, "%d", hb->ttl_ms / 3);
    /* clang-format off */
    const char *head[] = {
        hb->host->id,   expires,
        full ? "1" : "0", seen,
        guard,          "13",
        "id",           hb->host->id,
        "name",         hb->host->name && *hb->host->name ? hb->host->name : hb->host->id,
        "agent",        hb->instance,
        "agent_state",  agent_state,
        "libvirt_uri",  hb->host->libvirt_uri,
        "hypervisor",   hb->host->hypervisor,
        "cap_vcpus",    vcpus,
        "cap_ram_mb",   ram,
        "cap_disk_gb",  disk,
        "vms",          vms,
        "last_seen_ms", seen,
        "domains",      domains_text ? domains_text : "[]",
        "images",       images_text ? images_text : ""
    };
    /* clang-format on */
    enum { HEAD = sizeof head / sizeof *head, NKEYS = 3 };
    const char **argv = calloc(NKEYS + ours + HEAD + 2 * ours, sizeof *argv);
    char(*vm_keys)[KEYS_MAX] = ours ? calloc(ours, sizeof *vm_keys) : NULL;
    int argc = NKEYS + (int)ours;
    size_t k = 0; /* VM keys passed: the domains to look at */
    if (argv && (vm_keys || !ours)) {
        argv[0] = host_key;
        argv[1] = KEYS_HOSTS;
        argv[2] = KEYS_HOSTS_SEEN;
        memcpy(argv + argc, head, sizeof head);
        argc += HEAD;
        for (size_t i = 0; i < hb->n_domains; i++) {
            Berth__Domain *d = hb->domains[i];
            if (util_is_uuid(d->name) && s_valid_id(d->power_state, 32)) {
                const char *was = full ? NULL : zhashx_lookup(known->power, d->name);
                if (was && streq(was, d->power_state))
                    continue; /* unchanged since the last beat: looked at each interval */
                argv[NKEYS + k] = keys_vm(vm_keys[k], d->name);
                k++;
                argv[argc++] = d->name;
                argv[argc++] = d->power_state;
            }
        }
    }
    if (argv && k < ours) { /* close the gap the skipped keys left before the arguments */
        memmove(argv + NKEYS + k, argv + NKEYS + ours, (argc - NKEYS - ours) * sizeof *argv);
        argc -= (int)(ours - k);
    }
    redisReply *r = argv && (vm_keys || !ours)
                        ? store_run(store, &lua_taskmgr_beat, NKEYS + (int)k, argc, argv)
                        : NULL;
    int ok =
        r && r->type == REDIS_REPLY_ARRAY && r->elements == 6 &&
        r->element[5]->type == REDIS_REPLY_STRING && r->element[0]->type == REDIS_REPLY_STRING &&
        r->element[1]->type == REDIS_REPLY_STRING && r->element[2]->type == REDIS_REPLY_STRING &&
        r->element[3]->type == REDIS_REPLY_ARRAY && r->element[4]->type == REDIS_REPLY_ARRAY;
    if (ok && known) {
        /* What was reported, for the next beat to compare with. */
        zhashx_purge(known->power);
        for (size_t i = 0; i < hb->n_domains; i++)
            if (util_is_uuid(hb->domains[i]->name) && s_valid_id(hb->domains[i]->power_state, 32))
                zhashx_update(known->power, hb->domains[i]->name, hb->domains[i]->power_state);
        if (full)
            known->full_ms = now;
    }
    if (ok && known && images_text && !streq(images_text, known->images ? known->images : "")) {
        /* The images its agent caches changed (or this instance had not seen them yet): an
           event says so, and the scheduler's copy follows it at once (placement.c). */
        char hkey[KEYS_MAX], now_ms[24];
        keys_host(hkey, hb->host->id);
        snprintf(now_ms, sizeof now_ms, "%lld", (long long)util_now_ms());
        model_tx_t *tx = model_tx_new();
        if (tx) {
            model_tx_hset(tx, hkey, "images", images_text);
            model_tx_event(tx, "host.images", "key", hkey, "host", hb->host->id, "images",
                           images_text, "at_ms", now_ms, NULL);
            if (model_tx_commit(tx, store, NULL) == 0) {
                free(known->images);
                known->images = strdup(images_text);
            }
            model_tx_destroy(&tx);
        }
    }
    const char *stored = ok ? r->element[0]->str : "";
    int maintenance = ok && streq(r->element[1]->str, "1");
    if (ok && !streq(agent_state, "UP") && !streq(stored, "DOWN") && *stored) {
        /* The agent beats but cannot reach its hypervisor: what its VMs do is unknown. */
        s_mark_down(store, hb->host->id, stored, NULL, "libvirt unreachable on the host");
    } else if (ok && streq(agent_state, "UP") &&
               (!*stored || streq(stored, "DOWN") || !streq(r->element[5]->str, started))) {
        /* New, back, or its agent restarted (a restarted simulated host comes back empty):
           reconciled with this report in one step. */
        int is_new = !*stored, back = streq(stored, "DOWN");
        s_return(self, store, hb, stored,
                 is_new ? "UP"
                 : back ? (maintenance ? "DISABLED" : "UP")
                        : NULL,
                 back || (!is_new && *r->element[5]->str), r->element[5]->str);
    } else if (ok && r->element[3]->elements) {
        /* The changes, as one transaction: each an observed power state (version bump and a
           vm.power event, only if still placed here and still different; an alert when a
           domain stopped behind Berth's back). */
        redisReply *c = r->element[3];
        model_tx_t *tx = model_tx_new();
        int changes = 0;
        for (size_t i = 0; tx && i + 3 < c->elements; i += 4)
            if (c->element[i]->type == REDIS_REPLY_STRING &&
                c->element[i + 2]->type == REDIS_REPLY_STRING &&
                c->element[i + 3]->type == REDIS_REPLY_STRING &&
                power_state_from_string(c->element[i + 2]->str) > 0) {
                s_observe(tx, c->element[i]->str, hb->host->id, c->element[i + 3]->str,
                          c->element[i + 2]->str);
                changes++;
            }
        const char *why = NULL;
        int rc = changes ? model_tx_commit(tx, store, &why) : 0;
        if (rc > 0)
            log_debug(NULL, "power states not written; the next heartbeat retries", "{s:s}",
                      "reason", why ? why : "?");
        model_tx_destroy(&tx);
    }
    if (ok && full)
        s_orphans(store, hb, r->element[4], r->element[2]->str);
    if (r)
        freeReplyObject(r);
    free(domains_text);
    free(images_text);
    free(vm_keys);
    free(argv);
    if (!ok) {
        bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
        return;
    }
    /* Heard from now: a stage sent to it need not fail over until the next check says so
       (a disposal retried the moment its host came back failed on the stale judgement). */
    if (streq(agent_state, "UP"))
        zhashx_delete(self->down, hb->host->id);
    Berth__AgentHeartbeatReply reply = BERTH__AGENT_HEARTBEAT_REPLY__INIT;
    reply.host_state = (char *)agent_state;
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
    config_declare(c, "host_check_ms", "500", 0);
    config_declare(c, "host_down_grace_ms", "5000", 0);
    config_declare(c, "release_timeout_ms", "3000", 0);
}

agents_t *agents_new(service_t *service)
{
    config_t *c = service_config(service);
    int64_t wait, cmds, check, release, grace;
    if (config_int(c, "max_poll_wait_ms", 100, 600000, &wait) ||
        config_int(c, "max_host_commands", 1, 1000000, &cmds) ||
        config_int(c, "host_check_ms", 50, 60000, &check) ||
        config_int(c, "release_timeout_ms", 100, 600000, &release) ||
        config_int(c, "host_down_grace_ms", 0, 600000, &grace))
        return NULL;
    agents_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->service = service;
    self->max_wait_ms = (int)wait;
    self->max_host_cmds = (size_t)cmds;
    self->release_timeout_ms = (int)release;
    self->down_grace_ms = (int)grace;
    self->parked = zhashx_new();
    self->outbox = zhashx_new();
    self->hosts = zhashx_new();
    self->down = zhashx_new();
    self->rebuilds = zhashx_new();
    if (!self->parked || !self->outbox || !self->hosts || !self->down || !self->rebuilds) {
        agents_destroy(&self);
        return NULL;
    }
    zhashx_set_destructor(self->down, (zhashx_destructor_fn *)zstr_free);
    zhashx_set_duplicator(self->down, (zhashx_duplicator_fn *)strdup);
    zhashx_set_destructor(self->rebuilds, (zhashx_destructor_fn *)zstr_free);
    zhashx_set_duplicator(self->rebuilds, (zhashx_duplicator_fn *)strdup);
    zhashx_set_destructor(self->parked, s_park_free);
    zhashx_set_destructor(self->outbox, s_list_free);
    zhashx_set_destructor(self->hosts, s_host_free);
    service_on(service, "AgentHeartbeat", "agent", s_on_heartbeat, self);
    service_on(service, "AgentWork", "agent", s_on_work, self);
    service_on(service, "SetHostMaintenance", "gateway", s_on_maintenance, self);
    service_every(service, 250, s_sweep, self);
    service_every(service, (int)check, s_check_down, self);
    return self;
}

void agents_destroy(agents_t **self_p)
{
    if (self_p && *self_p) {
        agents_t *self = *self_p;
        zhashx_destroy(&self->parked);
        zhashx_destroy(&self->outbox);
        zhashx_destroy(&self->hosts);
        zhashx_destroy(&self->down);
        zhashx_destroy(&self->rebuilds);
        assertion_destroy(&self->verifier);
        free(self);
        *self_p = NULL;
    }
}
