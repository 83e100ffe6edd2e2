/*  vms: VMs (list, show, dispose, day-2 actions), tasks and usage. A user sees only what they
    own: someone else's VM or task answers 404 exactly like one that does not exist, so ids
    cannot be probed. Reads come from Redis; disposal and day-2 actions are asked of the
    taskmgr, usage of the meter. */
#include "gateway.h"
#include <ctype.h>
#include "clock.h"
#include "keys.h"
#include "lua_scripts.h"

#define LIST_BATCH       100 /* VM ids read from the index per Redis round trip */
#define USAGE_DEFAULT_MS (30LL * 24 * 3600 * 1000)

/*  Host liveness cache: what a VM's view needs of its host (state, last heartbeat) is kept
    per worker thread for up to host_cache_ms, so showing a VM costs one Redis read, not two.
    Liveness is still computed from the heartbeat time at each use, so a host that falls
    silent shows DOWN on time; only a recorded change of state (DOWN -> UP) is seen up to
    host_cache_ms late. 0 turns the cache off. */
#define HOST_CACHE_SLOTS 64
typedef struct {
    char id[72];        /* host id; "" = empty slot */
    int64_t fetched_ms; /* monotonic ms it was read */
    int known;          /* the host's hash exists */
    int state_down;     /* its recorded state is DOWN */
    int64_t last_seen_ms;
} s_host_entry_t;

static _Thread_local s_host_entry_t s_hosts[HOST_CACHE_SLOTS];

static s_host_entry_t *s_host_slot(const char *host)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const char *c = host; *c; c++)
        h = (h ^ (uint8_t)*c) * 16777619u;
    return &s_hosts[h % HOST_CACHE_SLOTS];
}

int vms_host_down(http_req_t *req, const char *host)
{
    if (!host || !*host)
        return 0;
    if (!rest_id_ok(host) || strlen(host) >= sizeof s_hosts[0].id)
        return 1;
    gateway_t *gw = req->app;
    s_host_entry_t *e = s_host_slot(host);
    if (!(e->id[0] && streq(e->id, host) && gw->host_cache_ms > 0 &&
          util_mono_ms() - e->fetched_ms < gw->host_cache_ms)) {
        /* Only the two fields liveness depends on: the host's hash also carries its domain
           list, which grows with every VM it runs. */
        char key[KEYS_MAX];
        redisReply *r =
            store_command(req->store, "HMGET %s state last_seen_ms", keys_host(key, host));
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            if (r)
                freeReplyObject(r);
            return -1;
        }
        const redisReply *state = r->element[0], *seen = r->element[1];
        int64_t seen_ms = 0;
        e->known = state->type == REDIS_REPLY_STRING || seen->type == REDIS_REPLY_STRING;
        e->state_down = state->type == REDIS_REPLY_STRING && streq(state->str, "DOWN");
        if (seen->type != REDIS_REPLY_STRING ||
            util_parse_int(seen->str, INT64_MIN, INT64_MAX, &seen_ms) != 0)
            seen_ms = 0;
        e->last_seen_ms = seen_ms;
        util_strlcpy(e->id, host, sizeof e->id);
        e->fetched_ms = util_mono_ms();
        freeReplyObject(r);
    }
    /* A host nobody describes any more cannot vouch for its VMs' power state either. */
    return !e->known || view_host_down_fields(e->state_down ? "DOWN" : NULL, e->last_seen_ms,
                                              util_now_ms(), gw->host_down_ms);
}

/* The VM as the API shows it, its host's liveness folded in. NULL with 503 set. cache
   (host -> "1"/"0", may be NULL) saves asking Redis about the same host for every VM of a
   listing. */
static json_t *s_vm_view(http_req_t *req, const Berth__Vm *vm, zhashx_t *cache)
{
    const char *known = cache && vm->host ? zhashx_lookup(cache, vm->host) : NULL;
    int down = known ? known[0] == '1' : vms_host_down(req, vm->host);
    if (cache && !known && down >= 0 && vm->host)
        zhashx_insert(cache, vm->host, down ? "1" : "0");
    if (down < 0) {
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return NULL;
    }
    return view_vm(vm, down);
}

int vms_may_see(http_req_t *req, const Berth__Vm *vm)
{
    return perm_allows(req, "vm.get", vm->owner, vm->group);
}

/*  VMs by name. A VM's id is a UUID; anything else where a VM id is taken is a name, looked
    up among the VMs the caller may see (vm.get) that are not DISPOSED (a name is free again
    once its VM is gone). The index is walked a batch of names at a time (hash_rows.lua),
    at most scan_max VMs. One match is the VM; none is 404; several are 409 listing them. */
#define NAME_BATCH 500

int vms_resolve(http_req_t *req, const char *ref, char id[UTIL_ID_LEN])
{
    if (ref && util_is_uuid(ref)) {
        util_strlcpy(id, ref, UTIL_ID_LEN);
        return 0;
    }
    if (!ref || !*ref || strlen(ref) > LIMIT_VM_NAME_MAX + 8 || !rest_id_ok(ref)) {
        http_error(req, "NOT_FOUND", "no such vm");
        return -1;
    }
    gateway_t *gw = req->app;
    json_t *found = json_array();
    int failed = !found;
    for (int64_t pos = 0; !failed && pos < gw->scan_max; pos += NAME_BATCH) {
        redisReply *ids = store_command(req->store, "ZRANGE %s %lld %lld", KEYS_VMS, (long long)pos,
                                        (long long)(pos + NAME_BATCH - 1));
        if (!ids || ids->type != REDIS_REPLY_ARRAY) {
            if (ids)
                freeReplyObject(ids);
            failed = 1;
            break;
        }
        size_t n = 0;
        char(*keys)[KEYS_MAX] = calloc(ids->elements + 1, sizeof *keys);
        const char **argv = calloc(ids->elements + 5, sizeof *argv);
        redisReply *rows = NULL;
        if (keys && argv) {
            for (size_t i = 0; i < ids->elements; i++) {
                const redisReply *e = ids->element[i];
                if (e->type == REDIS_REPLY_STRING && rest_id_ok(e->str)) {
                    argv[n] = keys_build(keys[n], KEYS_VM, e->str, NULL);
                    n++;
                }
            }
            const char *fields[] = { "id", "name", "state", "owner", "group" };
            memcpy(argv + n, fields, sizeof fields);
            rows = n ? store_run(req->store, &lua_hash_rows, (int)n, (int)n + 5, argv) : NULL;
        }
        free(keys);
        free(argv);
        if (n && (!rows || rows->type != REDIS_REPLY_ARRAY || rows->elements != n))
            failed = 1;
        for (size_t i = 0; !failed && i < n; i++) {
            const redisReply *row = rows->element[i];
            if (row->type != REDIS_REPLY_ARRAY || row->elements != 5)
                continue;
            const char *f[5];
            for (int j = 0; j < 5; j++)
                f[j] = row->element[j]->type == REDIS_REPLY_STRING ? row->element[j]->str : "";
            if (streq(f[1], ref) && !streq(f[2], "DISPOSED") &&
                perm_allows(req, "vm.get", f[3], f[4]))
                json_array_append_new(found, json_string(f[0]));
        }
        int at_end = ids->elements < NAME_BATCH;
        if (rows)
            freeReplyObject(rows);
        freeReplyObject(ids);
        if (at_end)
            break;
    }
    size_t matches = found ? json_array_size(found) : 0;
    if (failed)
        http_error(req, "UNAVAILABLE", "state store unreachable");
    else if (matches == 0)
        http_error(req, "NOT_FOUND", "no such vm");
    else if (matches > 1) {
        /* Error details are strings: the candidates' ids, comma-separated. */
        char list[1024] = "";
        for (size_t i = 0; i < matches; i++) {
            const char *cand = json_string_value(json_array_get(found, i));
            size_t used = strlen(list), len = strlen(cand);
            if (used + len + 2 > sizeof list)
                break;
            if (used)
                list[used++] = ',';
            memcpy(list + used, cand, len + 1);
        }
        http_error_details(req, "CONFLICT", "several VMs have this name: give the id",
                           json_pack("{s:s, s:s}", "name", ref, "candidates", list));
    } else
        util_strlcpy(id, json_string_value(json_array_get(found, 0)), UTIL_ID_LEN);
    json_decref(found);
    return !failed && matches == 1 ? 0 : -1;
}

/* Load a VM the caller may see, by id or name; -1 with 404/409/503 set otherwise. */
static int s_load_vm(http_req_t *req, const char *ref, Berth__Vm **vm_p)
{
    Berth__Vm *vm = NULL;
    char id[UTIL_ID_LEN];
    if (vms_resolve(req, ref, id) != 0)
        return -1;
    if (rest_load(req, &berth__vm__descriptor, "vm", id, (ProtobufCMessage **)&vm))
        return -1;
    if (!vms_may_see(req, vm)) {
        protobuf_c_message_free_unpacked(&vm->base, NULL);
        http_error(req, "NOT_FOUND", "no such vm");
        return -1;
    }
    *vm_p = vm;
    return 0;
}

/* The filters of a VM list: each given one must hold. Without ?state, DISPOSED VMs are left
   out (they stay listed with ?state=DISPOSED for the audit period). */
typedef struct {
    const char *state; /* NULL: every state but DISPOSED */
    const char *owner, *host, *name;
    char group[UTIL_ID_LEN];
    int has_group;
} s_vm_filter_t;

/* The filters of the query. 0, or -1 with 400 (or 503) set. A group named by a name that
   names no group matches nothing. */
static int s_vm_filter(http_req_t *req, s_vm_filter_t *f)
{
    memset(f, 0, sizeof *f);
    f->state = http_query(req, "state");
    f->owner = http_query(req, "owner");
    f->host = http_query(req, "host");
    f->name = http_query(req, "name");
    const char *group = http_query(req, "group");
    if (f->state && vm_state_from_string(f->state) <= 0)
        return http_bad_field(req, "state", "state must be a VM state (ACTIVE, DISPOSED, ...)");
    if (f->owner && !auth_username_ok(f->owner))
        return http_bad_field(req, "owner", "owner is not a user name");
    if (f->host && !rest_id_ok(f->host))
        return http_bad_field(req, "host", "host is not a host id");
    if (f->name && (!*f->name || strlen(f->name) > LIMIT_VM_NAME_MAX + 8))
        return http_bad_field(req, "name", "name is not a VM name");
    if (!group)
        return 0;
    f->has_group = 1;
    if (!util_is_uuid(group) && (strlen(group) > LIMIT_GROUP_NAME_MAX || !rest_id_ok(group)))
        return http_bad_field(req, "group", "group is not a group id or name");
    return rest_group_id(req, group, f->group);
}

static int s_vm_matches(const s_vm_filter_t *f, const Berth__Vm *vm)
{
    const char *state = vm->state ? vm->state : "";
    if (f->state ? !streq(state, f->state) : streq(state, "DISPOSED"))
        return 0;
    return (!f->owner || streq(vm->owner ? vm->owner : "", f->owner)) &&
           (!f->host || streq(vm->host ? vm->host : "", f->host)) &&
           (!f->name || streq(vm->name ? vm->name : "", f->name)) &&
           (!f->has_group || (*f->group && streq(vm->group ? vm->group : "", f->group)));
}

/*  Paging. berth:vms orders every VM id by creation time; a page starts after the marker
    (the last id of the previous page) and holds at most `limit` VMs the caller may see.
    For a user that means filtering by owner while walking the index (in Redis: the hashes of
    a batch are read in one step, and only the caller's leave Redis), so one call looks at
    no more than scan_max ids: when that budget runs out first the page is short and
    next_marker is the last id looked at, and the client simply continues from there.
    next_marker is null only when the index has nothing after this page. */
void vms_list(http_req_t *req)
{
    gateway_t *gw = req->app;
    int64_t limit = gw->list_default;
    const char *text = http_query(req, "limit");
    if (text && util_parse_int(text, 1, gw->list_max, &limit) != 0) {
        http_bad_field(req, "limit", "limit must be an integer from 1 to %d", gw->list_max);
        return;
    }
    int64_t pos = 0;
    s_vm_filter_t filter;
    if (s_vm_filter(req, &filter) != 0 || rest_marker_pos(req, KEYS_VMS, "VM", &pos) != 0)
        return;

    /* Whom vm.get lets see every VM (admin, operator), or which groups' VMs besides the
       caller's own (manager, auditor). */
    int admin = perm_allows(req, "vm.get", NULL, NULL);
    const char **groups = calloc(json_object_size(req->groups) + 1, sizeof *groups);
    size_t n_groups = 0;
    const char *group;
    json_t *role;
    if (!groups) {
        http_error(req, "INTERNAL", "out of memory");
        return;
    }
    json_object_foreach(req->groups, group, role)
    {
        if (perm_allows(req, "vm.get", NULL, group))
            groups[n_groups++] = group;
    }
    zhashx_t *hosts = zhashx_new();
    json_t *vms = json_array();
    char last_seen[72] = "";  /* last id looked at */
    char last_taken[72] = ""; /* last id put on the page */
    int64_t last_taken_pos = -1;
    int scanned = 0, at_end = 0, failed = 0;
    while ((int64_t)json_array_size(vms) < limit && scanned < gw->scan_max && !at_end && !failed) {
        /* Every page is filtered (DISPOSED VMs at least), so read at least a batch. Never
           more than the scan budget has left. */
        int64_t want = limit - (int64_t)json_array_size(vms);
        if (want < LIST_BATCH)
            want = LIST_BATCH;
        if (want > gw->scan_max - scanned)
            want = gw->scan_max - scanned;
        redisReply *ids = store_command(req->store, "ZRANGE %s %lld %lld", KEYS_VMS, (long long)pos,
                                        (long long)(pos + want - 1));
        if (!ids || ids->type != REDIS_REPLY_ARRAY) {
            if (ids)
                freeReplyObject(ids);
            failed = 1;
            break;
        }
        if ((int64_t)ids->elements < want)
            at_end = 1;
        /* The hashes of the batch in one round trip; a user's come back only when theirs. */
        size_t n = ids->elements, nkeys = 0;
        char(*keys)[KEYS_MAX] = calloc(n ? n : 1, sizeof *keys);
        const char **argv = calloc(n ? n : 1, sizeof *argv);
        redisReply *hashes = NULL;
        if (keys && argv) {
            for (size_t i = 0; i < n; i++) {
                const redisReply *e = ids->element[i];
                if (e->type == REDIS_REPLY_STRING && rest_id_ok(e->str)) {
                    argv[nkeys] = keys_build(keys[nkeys], KEYS_VM, e->str, NULL);
                    nkeys++;
                }
            }
            hashes = rest_hashes(req, nkeys, argv, admin ? NULL : req->user, groups, n_groups);
        }
        free(argv);
        free(keys);
        if (!hashes) {
            freeReplyObject(ids);
            failed = 1;
            break;
        }
        size_t used = 0, k = 0;
        for (;
             used < n && (int64_t)json_array_size(vms) < limit && scanned < gw->scan_max && !failed;
             used++) {
            const redisReply *e = ids->element[used];
            scanned++;
            if (e->type != REDIS_REPLY_STRING || !rest_id_ok(e->str))
                continue;
            util_strlcpy(last_seen, e->str, sizeof last_seen);
            const redisReply *hash = hashes->element[k++];
            if (hash->type != REDIS_REPLY_ARRAY || hash->elements == 0)
                continue; /* someone else's, or indexed but gone: nothing to show */
            Berth__Vm *vm = (Berth__Vm *)model_from_hash(&berth__vm__descriptor, hash);
            if (!vm) {
                failed = 1;
                break;
            }
            /* A scoped API key: its user's own VMs too only in its groups. */
            if (!s_vm_matches(&filter, vm) || (req->scoped && !*perm_group_role(req, vm->group))) {
                protobuf_c_message_free_unpacked(&vm->base, NULL);
                continue;
            }
            json_t *view = s_vm_view(req, vm, hosts);
            protobuf_c_message_free_unpacked(&vm->base, NULL);
            if (!view) {
                failed = 1;
                break;
            }
            json_array_append_new(vms, view);
            util_strlcpy(last_taken, e->str, sizeof last_taken);
            last_taken_pos = pos + (int64_t)used;
        }
        /* If the loop stopped inside the batch, what it did not look at is still ahead. */
        if (used < n)
            at_end = 0;
        pos += (int64_t)used;
        freeReplyObject(hashes);
        freeReplyObject(ids);
    }
    zhashx_destroy(&hosts);
    free(groups);
    if (failed) {
        json_decref(vms);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return;
    }
    json_t *next = rest_next_marker(req, KEYS_VMS, (int64_t)json_array_size(vms), limit, last_taken,
                                    last_taken_pos, at_end, last_seen);
    http_json(req, 200, json_pack("{s:o, s:o}", "vms", vms, "next_marker", next));
}

void vms_get(http_req_t *req)
{
    Berth__Vm *vm = NULL;
    if (s_load_vm(req, req->params[0], &vm))
        return;
    json_t *view = s_vm_view(req, vm, NULL);
    protobuf_c_message_free_unpacked(&vm->base, NULL);
    if (view)
        http_json(req, 200, json_pack("{s:o}", "vm", view));
}

static void s_disposal_asked(http_req_t *req, ProtobufCMessage *answer)
{
    const Berth__Task *task = (const Berth__Task *)answer;
    if (!rest_id_ok(task->id)) {
        http_error(req, "INTERNAL", "the taskmgr service answered without a task id");
        return;
    }
    log_info(req->request_id, "disposal asked", "{s:s, s:s, s:s}", "vm", req->params[0], "task",
             task->id, "by", req->user);
    snprintf(req->location, sizeof req->location, "/v1/tasks/%s", task->id);
    http_json(req, 202, json_pack("{s:o}", "task", view_task(task)));
}

void vms_dispose(http_req_t *req)
{
    Berth__Vm *vm = NULL;
    /* ?force=true: the VM's host is gone; the router checked vm.force_dispose already. */
    const char *forced = http_query(req, "force");
    int force = forced && streq(forced, "true");
    if (forced && !force && !streq(forced, "false")) {
        http_bad_field(req, "force", "force must be true or false");
        return;
    }
    if (s_load_vm(req, req->params[0], &vm))
        return;
    if (!force && !perm_allows(req, "vm.dispose", vm->owner, vm->group)) {
        http_error_details(req, "FORBIDDEN",
                           "only its owner, a manager of its group or an admin may dispose of "
                           "a VM",
                           json_pack("{s:s}", "action", "vm.dispose"));
        protobuf_c_message_free_unpacked(&vm->base, NULL);
        return;
    }
    Berth__DisposeVm ask = BERTH__DISPOSE_VM__INIT;
    ask.vm = vm->id;
    ask.force = force;
    ask.actor = req->user;
    ask.request_id = (char *)req->request_id;
    rest_call(req, "taskmgr", &ask.base, &berth__task__descriptor, s_disposal_asked);
    protobuf_c_message_free_unpacked(&vm->base, NULL);
}

/* The day-2 actions the API knows (the taskmgr decides whether one makes sense now). */
static const char *const s_vm_actions[] = { "start",  "stop",   "reboot",   "suspend",
                                            "resume", "shelve", "unshelve", NULL };

static void s_action_asked(http_req_t *req, ProtobufCMessage *answer)
{
    const Berth__Task *task = (const Berth__Task *)answer;
    if (!rest_id_ok(task->id)) {
        http_error(req, "INTERNAL", "the taskmgr service answered without a task id");
        return;
    }
    log_info(req->request_id, "action asked", "{s:s, s:s, s:s, s:s}", "vm", req->params[0], "kind",
             task->kind, "task", task->id, "by", req->user);
    snprintf(req->location, sizeof req->location, "/v1/tasks/%s", task->id);
    http_json(req, 202, json_pack("{s:o}", "task", view_task(task)));
}

void vms_action(http_req_t *req)
{
    static const char *const allowed[] = { "action", "timeout_s", "force", NULL };
    Berth__Vm *vm = NULL;
    if (s_load_vm(req, req->params[0], &vm))
        return;
    if (!perm_allows(req, "vm.action", vm->owner, vm->group)) {
        http_error_details(req, "FORBIDDEN",
                           "only its owner, a manager of its group or an admin may start, stop "
                           "or shelve a VM",
                           json_pack("{s:s}", "action", "vm.action"));
        protobuf_c_message_free_unpacked(&vm->base, NULL);
        return;
    }
    const char *action = NULL;
    int64_t timeout = 0;
    int force = 0;
    if (rest_body(req, allowed) || rest_str(req, "action", 1, 16, &action) ||
        rest_int(req, "timeout_s", 0, 0, LIMIT_STOP_TIMEOUT_MAX_S, &timeout) < 0 ||
        rest_bool(req, "force", 0, &force) < 0) {
        protobuf_c_message_free_unpacked(&vm->base, NULL);
        return;
    }
    int known = 0;
    for (const char *const *a = s_vm_actions; *a; a++)
        known |= streq(*a, action);
    if (!known) {
        http_bad_field(req, "action",
                       "action must be start, stop, reboot, suspend, resume, shelve or unshelve");
        protobuf_c_message_free_unpacked(&vm->base, NULL);
        return;
    }
    Berth__VmAction ask = BERTH__VM_ACTION__INIT;
    ask.vm = vm->id;
    ask.action = (char *)action;
    ask.timeout_s = (int32_t)timeout;
    ask.force = force;
    ask.request_id = (char *)req->request_id;
    rest_call(req, "taskmgr", &ask.base, &berth__task__descriptor, s_action_asked);
    protobuf_c_message_free_unpacked(&vm->base, NULL);
}

/* POST /v1/vms/{id}/capture: the stopped VM's disk becomes a new model image (a CAPTURE
   task; the taskmgr refuses a VM that is not ACTIVE and STOPPED, naming its state). What
   describes the image and is not given comes from the VM's image (the stager fills it). */
void vms_capture(http_req_t *req)
{
    static const char *const allowed[] = {
        "name", "os", "os_version", "applications", "min_ram_mb", "min_disk_gb", NULL
    };
    Berth__Vm *vm = NULL;
    if (s_load_vm(req, req->params[0], &vm))
        return;
    if (!perm_allows(req, "vm.capture", vm->owner, vm->group)) {
        http_error_details(req, "FORBIDDEN",
                           "only its owner, a manager of its group or an admin may capture a VM",
                           json_pack("{s:s}", "action", "vm.capture"));
        protobuf_c_message_free_unpacked(&vm->base, NULL);
        return;
    }
    const char *name = NULL, *os = NULL, *os_version = NULL;
    int64_t min_ram_mb = 0, min_disk_gb = 0;
    Berth__ImageApp items[LIMIT_IMAGE_APPS_MAX];
    Berth__ImageApp *ptrs[LIMIT_IMAGE_APPS_MAX];
    size_t n_apps = 0;
    if (rest_body(req, allowed) || rest_str(req, "name", 1, LIMIT_IMAGE_NAME_MAX, &name) ||
        rest_str(req, "os", 0, LIMIT_TEXT_MAX, &os) < 0 ||
        rest_str(req, "os_version", 0, LIMIT_IMAGE_TEXT_MAX, &os_version) < 0 ||
        rest_int(req, "min_ram_mb", 0, 0, LIMIT_RAM_MB_MAX, &min_ram_mb) < 0 ||
        rest_int(req, "min_disk_gb", 0, 0, LIMIT_DISK_GB_MAX, &min_disk_gb) < 0 ||
        images_applications(req, items, ptrs, &n_apps) != 0) {
        protobuf_c_message_free_unpacked(&vm->base, NULL);
        return;
    }
    size_t len = strlen(name);
    int valid = len >= 1 && len <= 64 &&
                (islower((unsigned char)name[0]) || isdigit((unsigned char)name[0]));
    for (size_t i = 1; valid && i < len; i++)
        valid = islower((unsigned char)name[i]) || isdigit((unsigned char)name[i]) ||
                strchr("._-", name[i]) != NULL;
    if (!valid) {
        http_bad_field(req, "name", "name must match [a-z0-9][a-z0-9._-]{0,63}");
        protobuf_c_message_free_unpacked(&vm->base, NULL);
        return;
    }
    /* A name in use is refused now; one taken while the capture runs fails its register. */
    ProtobufCMessage *taken = NULL;
    int found = rest_find(req, &berth__image__descriptor, "image", name, &taken);
    if (found == 0) {
        protobuf_c_message_free_unpacked(taken, NULL);
        http_bad_field(req, "name", "an image named '%s' exists already", name);
        protobuf_c_message_free_unpacked(&vm->base, NULL);
        return;
    }
    if (found != MODEL_NOT_FOUND) {
        http_error(req, "UNAVAILABLE", "state store unreachable");
        protobuf_c_message_free_unpacked(&vm->base, NULL);
        return;
    }
    Berth__Image image = BERTH__IMAGE__INIT;
    image.name = (char *)name;
    image.os = (char *)(os ? os : "");
    image.os_version = (char *)(os_version ? os_version : "");
    image.applications = ptrs;
    image.n_applications = n_apps;
    image.min_ram_mb = min_ram_mb;
    image.min_disk_gb = min_disk_gb;
    Berth__VmAction ask = BERTH__VM_ACTION__INIT;
    ask.vm = vm->id;
    ask.action = "capture";
    ask.capture = &image;
    ask.request_id = (char *)req->request_id;
    rest_call(req, "taskmgr", &ask.base, &berth__task__descriptor, s_action_asked);
    protobuf_c_message_free_unpacked(&vm->base, NULL);
}

/* Granted within the lease policy: 200 with the VM. Beyond it: the same ask becomes a
   request of kind extension (202, requests_extend). */
static void s_lease_extended(http_req_t *req, ProtobufCMessage *answer)
{
    const Berth__LeaseAnswer *a = (const Berth__LeaseAnswer *)answer;
    const Berth__Vm *vm = a->vm;
    if (!vm || !rest_id_ok(vm->id)) {
        http_error(req, "INTERNAL", "the taskmgr service answered without the VM");
        return;
    }
    if (a->beyond && *a->beyond) {
        json_int_t days = json_integer_value(json_object_get(req->body, "days"));
        requests_extend(req, vm->id, (int)days, a->beyond);
        return;
    }
    log_info(req->request_id, "lease extended", "{s:s, s:s, s:s}", "vm", req->params[0], "state",
             vm->state ? vm->state : "", "by", req->user);
    json_t *view = s_vm_view(req, vm, NULL);
    if (view)
        http_json(req, 200, json_pack("{s:o}", "vm", view));
}

void vms_extend_lease(http_req_t *req)
{
    static const char *const allowed[] = { "days", NULL };
    int64_t days = 0;
    Berth__Vm *vm = NULL;
    if (s_load_vm(req, req->params[0], &vm))
        return;
    /* Who may comes first: a caller who may not learns nothing from the body's checks. */
    if (!perm_allows(req, "vm.extend", vm->owner, vm->group)) {
        http_error_details(req, "FORBIDDEN",
                           "only its owner, a manager of its group or an admin may extend a "
                           "VM's lease",
                           json_pack("{s:s}", "action", "vm.extend"));
        protobuf_c_message_free_unpacked(&vm->base, NULL);
        return;
    }
    if (rest_body(req, allowed) || rest_int(req, "days", 1, 1, INT32_MAX, &days) < 0) {
        protobuf_c_message_free_unpacked(&vm->base, NULL);
        return;
    }
    Berth__ExtendLease ask = BERTH__EXTEND_LEASE__INIT;
    ask.vm = vm->id;
    ask.days = (int32_t)days;
    rest_call(req, "taskmgr", &ask.base, &berth__lease_answer__descriptor, s_lease_extended);
    protobuf_c_message_free_unpacked(&vm->base, NULL);
}

/* Read as docs/state.md documents berth:throttle:queue: 1 is next. Not in line (a new task
   not taken yet, or Redis away): none shown. */
void vms_queue_position(http_req_t *req, Berth__Task *task)
{
    if (!task->state || !streq(task->state, "QUEUED") || !task->id)
        return;
    redisReply *r = store_command(req->store, "ZRANK %s %s", KEYS_THROTTLE_QUEUE, task->id);
    if (r && r->type == REDIS_REPLY_INTEGER)
        task->queue_position = (int32_t)(r->integer + 1);
    if (r)
        freeReplyObject(r);
}

void vms_get_task(http_req_t *req)
{
    Berth__Task *task = NULL;
    if (rest_load(req, &berth__task__descriptor, "task", req->params[0],
                  (ProtobufCMessage **)&task))
        return;
    /* Who started it, and whoever may see its VM. */
    int may = streq(task->owner ? task->owner : "", req->user);
    if (!may) {
        Berth__Vm *vm = NULL;
        int rc =
            rest_find(req, &berth__vm__descriptor, "vm", task->target, (ProtobufCMessage **)&vm);
        if (rc == 0) {
            may = perm_allows(req, "task.get", vm->owner, vm->group);
            protobuf_c_message_free_unpacked(&vm->base, NULL);
        } else if (rc == MODEL_NOT_FOUND)
            may = perm_allows(req, "task.get", NULL, NULL);
        else {
            protobuf_c_message_free_unpacked(&task->base, NULL);
            http_error(req, "UNAVAILABLE", "state store unreachable");
            return;
        }
    }
    if (!may)
        http_error(req, "NOT_FOUND", "no such task");
    else {
        vms_queue_position(req, task);
        http_json(req, 200, json_pack("{s:o}", "task", view_task(task)));
    }
    protobuf_c_message_free_unpacked(&task->base, NULL);
}

/* ---- Abort, retry, force-fail -------------------------------------------------------- */

/* The task named by the path, when the caller may read it (task.get: who started it, or
   whoever may read its VM); its VM's owner and group copied into owner and group ("" when
   the VM is gone). 0, or -1 with 404 (or 503) set. */
static int s_load_task(http_req_t *req, Berth__Task **task_p, char *owner, size_t owner_size,
                       char group[UTIL_ID_LEN])
{
    Berth__Task *task = NULL;
    if (rest_load(req, &berth__task__descriptor, "task", req->params[0],
                  (ProtobufCMessage **)&task))
        return -1;
    Berth__Vm *vm = NULL;
    int rc = rest_find(req, &berth__vm__descriptor, "vm", task->target, (ProtobufCMessage **)&vm);
    if (rc != 0 && rc != MODEL_NOT_FOUND) {
        protobuf_c_message_free_unpacked(&task->base, NULL);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return -1;
    }
    util_strlcpy(owner, vm ? vm->owner : "", owner_size);
    util_strlcpy(group, vm ? vm->group : "", UTIL_ID_LEN);
    if (vm)
        protobuf_c_message_free_unpacked(&vm->base, NULL);
    if (!streq(task->owner ? task->owner : "", req->user) &&
        !perm_allows(req, "task.get", *owner ? owner : NULL, *group ? group : NULL)) {
        protobuf_c_message_free_unpacked(&task->base, NULL);
        http_error(req, "NOT_FOUND", "no such task");
        return -1;
    }
    *task_p = task;
    return 0;
}

static void s_task_recovered(http_req_t *req, ProtobufCMessage *answer)
{
    const Berth__Task *task = (const Berth__Task *)answer;
    log_info(req->request_id, "task recover asked", "{s:s, s:s, s:s, s:s}", "task", req->params[0],
             "action", req->action, "state", task->state ? task->state : "", "by", req->user);
    snprintf(req->location, sizeof req->location, "/v1/tasks/%s", req->params[0]);
    http_json(req, 202, json_pack("{s:o}", "task", view_task(task)));
}

/* POST /v1/tasks/{id}/<verb>: one of the recover verbs, after the checks the caller can be
   told about here (who may, then the body: it takes no field). The taskmgr decides whether
   the verb makes sense for the task now. */
static void s_task_recover(http_req_t *req, const char *verb, const char *refusal)
{
    static const char *const none[] = { NULL };
    Berth__Task *task = NULL;
    char owner[HTTP_USER_MAX], group[UTIL_ID_LEN];
    if (s_load_task(req, &task, owner, sizeof owner, group))
        return;
    if (!perm_allows(req, req->action, *owner ? owner : NULL, *group ? group : NULL)) {
        http_error_details(req, "FORBIDDEN", refusal, json_pack("{s:s}", "action", req->action));
        protobuf_c_message_free_unpacked(&task->base, NULL);
        return;
    }
    if (req->body && rest_body(req, none)) {
        protobuf_c_message_free_unpacked(&task->base, NULL);
        return;
    }
    /* A pool VM whose build failed has left its pool (ERROR) and the pool is short of it;
       building it again would put it back whether or not the pool still has room. The pool
       refills by its own rule instead: its size set again builds what it lacks. */
    if (streq(verb, "retry") && streq(task->kind, "POOL_BUILD")) {
        http_error_details(req, "CONFLICT",
                           "a failed POOL_BUILD is not retried: its VM left the pool; set the "
                           "pool's size again (PUT /v1/templates/{id}/pool) to build a new one, "
                           "and dispose of this VM",
                           json_pack("{s:s, s:s, s:s}", "state", task->state, "kind", task->kind,
                                     "stage", task->stage));
        protobuf_c_message_free_unpacked(&task->base, NULL);
        return;
    }
    Berth__TaskRecover ask = BERTH__TASK_RECOVER__INIT;
    ask.task = task->id;
    ask.verb = (char *)verb;
    ask.request_id = (char *)req->request_id;
    rest_call(req, "taskmgr", &ask.base, &berth__task__descriptor, s_task_recovered);
    protobuf_c_message_free_unpacked(&task->base, NULL);
}

void vms_task_abort(http_req_t *req)
{
    s_task_recover(req, "abort",
                   "only its VM's owner, a manager of its group, an admin or an operator may "
                   "abort a task");
}

void vms_task_retry(http_req_t *req)
{
    s_task_recover(req, "retry", "only an admin or an operator may retry a task");
}

void vms_task_force_fail(http_req_t *req)
{
    s_task_recover(req, "force_fail", "only an admin or an operator may force-fail a task");
}

/* A time query parameter: 0 and *ms (or the default when absent), -1 with 400 set. */
static int s_time_param(http_req_t *req, const char *name, int64_t fallback, int64_t *ms)
{
    const char *text = http_query(req, name);
    if (!text) {
        *ms = fallback;
        return 0;
    }
    if (rest_parse_time(text, ms) != 0) {
        return http_bad_field(
            req, name, "%s must be an ISO 8601 UTC time (2024-05-01T12:00:00Z) or unix seconds",
            name);
    }
    return 0;
}

/* The meter states the window it reported on (the one asked for). */
static void s_usage_reported(http_req_t *req, ProtobufCMessage *answer)
{
    const Berth__UsageReport *report = (const Berth__UsageReport *)answer;
    json_t *usage = json_array();
    for (size_t i = 0; i < report->n_usage; i++) {
        const Berth__UsageRecord *u = report->usage[i];
        json_array_append_new(
            usage, json_pack("{s:o, s:o, s:f, s:f, s:f, s:o, s:o, s:f, s:f}", "vm", view_str(u->vm),
                             "owner", view_str(u->owner), "vcpu_hours", u->vcpu_hours,
                             "ram_gb_hours", u->ram_gb_hours, "disk_gb_hours", u->disk_gb_hours,
                             "template", view_str(u->template_), "host", view_str(u->host),
                             "active_hours", (double)u->active_ms / 3600000.0, "disk_only_hours",
                             (double)(u->disk_ms > u->active_ms ? u->disk_ms - u->active_ms : 0) /
                                 3600000.0));
    }
    char from_iso[REST_TIME_MAX], to_iso[REST_TIME_MAX];
    rest_iso(report->from_ms, from_iso);
    rest_iso(report->to_ms, to_iso);
    http_json(req, 200,
              json_pack("{s:o, s:s, s:s}", "usage", usage, "from", from_iso, "to", to_iso));
}

void vms_usage(http_req_t *req)
{
    gateway_t *gw = req->app;
    int64_t now = clock_now_ms();
    int64_t from, to;
    /* The default window ends at the epoch at the earliest: a `to` in January 1970 must not
       make the default `from` negative. */
    if (s_time_param(req, "to", now, &to) ||
        s_time_param(req, "from", to > USAGE_DEFAULT_MS ? to - USAGE_DEFAULT_MS : 0, &from))
        return;
    /* A window the client got wrong names the parameter the client sent. */
    const char *sent = http_query(req, "from") ? "from" : "to";
    if (from >= to) {
        http_bad_field(req, sent, "from must be before to");
        return;
    }
    if (to - from > gw->usage_window_max_ms) {
        http_bad_field(req, sent, "from..to may span at most %lld days",
                       (long long)(gw->usage_window_max_ms / (24LL * 3600 * 1000)));
        return;
    }
    /* Users see their own usage; an admin sees everyone's or one owner's. */
    const char *owner = http_query(req, "owner");
    if (owner && !auth_username_ok(owner)) {
        http_bad_field(req, "owner", "owner is not a user name");
        return;
    }
    /* ?group=: the usage of a group's VMs, for its managers and auditors (and admins); a
       group the caller may not read that of is not found. */
    const char *group = http_query(req, "group");
    char group_id[UTIL_ID_LEN] = "";
    if (group) {
        if (groups_resolve(req, group, group_id) != 0)
            return;
        const char *role = perm_group_role(req, group_id);
        if (!rest_is_admin(req) && !streq(role, "manager") && !streq(role, "auditor")) {
            if (*role)
                http_error(req, "FORBIDDEN",
                           "a group's usage is for its managers and auditors, and admins");
            else
                http_error(req, "NOT_FOUND", "no such group");
            return;
        }
    }
    if (!rest_is_admin(req) && !*group_id) {
        if (owner && !streq(owner, req->user)) {
            http_error(req, "FORBIDDEN", "only an admin may read another user's usage");
            return;
        }
        owner = req->user;
    }
    Berth__GetUsage ask = BERTH__GET_USAGE__INIT;
    ask.from_ms = from;
    ask.to_ms = to;
    ask.owner = (char *)(owner ? owner : "");
    ask.group = group_id;
    rest_call(req, "meter", &ask.base, &berth__usage_report__descriptor, s_usage_reported);
}
