/*  views: resources as the REST API shows them. The stored messages carry bookkeeping that
    is nobody's business outside the platform (task holders, epochs, leases, versions); each
    view names the fields it shows, so a field added to the contract stays internal until a
    view chooses to show it. Times are ISO 8601 UTC, absent values null. */
#include "gateway.h"

/* A string for json_pack's "s": never NULL. */
#define S(x) ((x) ? (x) : "")

json_t *view_str(const char *s)
{
    return s && *s ? json_string(s) : json_null();
}

json_t *view_resources(const Berth__Resources *r)
{
    return json_pack("{s:i, s:I, s:I}", "vcpus", r ? r->vcpus : 0, "ram_mb",
                     (json_int_t)(r ? r->ram_mb : 0), "disk_gb", (json_int_t)(r ? r->disk_gb : 0));
}

json_t *view_template(const Berth__Template *t)
{
    json_t *view =
        json_pack("{s:s, s:s, s:i, s:I, s:I, s:o, s:o, s:i, s:b}", "id", S(t->id), "name",
                  S(t->name), "vcpus", t->vcpus, "ram_mb", (json_int_t)t->ram_mb, "disk_gb",
                  (json_int_t)t->disk_gb, "os", view_str(t->os), "image", view_str(t->image),
                  "lease_days", t->lease_days, "requires_approval", t->requires_approval);
    /* Its approval policy; one from before policies says it with requires_approval. */
    if (view)
        json_object_update_new(view, json_pack("{s:i, s:I, s:b, s:s}", "max_lease_days",
                                               t->max_lease_days, "lease_notice_hours",
                                               (json_int_t)(t->lease_notice_ms / 3600000),
                                               "rebuild_on_loss", t->rebuild_on_loss, "disk",
                                               t->disk && *t->disk ? t->disk : "linked"));
    if (view)
        json_object_set_new(view, "network",
                            t->network && *t->network ? json_string(t->network)
                            : t->n_networks           ? json_string(t->networks[0])
                                                      : json_null());
    if (view) {
        json_t *nets = json_array();
        for (size_t i = 0; nets && i < t->n_networks; i++)
            json_array_append_new(nets, json_string(t->networks[i]));
        if (nets && t->n_networks == 0 && t->network && *t->network)
            json_array_append_new(nets, json_string(t->network));
        json_object_set_new(view, "networks", nets ? nets : json_array());
    }
    if (view)
        json_object_set_new(view, "hypervisor", view_str(t->hypervisor));
    /* Instant deploy: how many VMs of it are kept built ahead (0: no pool). */
    if (view)
        json_object_set_new(view, "pool_size", json_integer(t->pool_size));
    if (view)
        json_object_set_new(view, "approval_policy",
                            json_string(t->approval_policy && *t->approval_policy
                                            ? t->approval_policy
                                        : t->requires_approval ? "admin"
                                                               : "auto"));
    return view;
}

/* States in which a VM may have a domain on its host, so a silent host makes its power
   state unknown rather than whatever was last reported. */
static int s_may_run(const char *state)
{
    return !streq(state, "DISPOSED") && !streq(state, "REJECTED") &&
           !streq(state, "PENDING_APPROVAL");
}

/* A list of names as a JSON array. */
static json_t *s_names(char **names, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, json_string(names[i] ? names[i] : ""));
    return a;
}

static json_t *s_view_vm(const Berth__Vm *vm, int host_down);

json_t *view_vm(const Berth__Vm *vm, int host_down)
{
    json_t *view = s_view_vm(vm, host_down);
    /* Instant deploy: taken from its template's pool (built ahead, resumed when asked for). */
    if (view)
        json_object_set_new(view, "from_pool", json_boolean(vm->from_pool));
    return view;
}

static json_t *s_view_vm(const Berth__Vm *vm, int host_down)
{
    const char *power = vm->power_state;
    if (host_down && s_may_run(S(vm->state)))
        power = "UNKNOWN";
    json_t *lease = json_pack("{s:o, s:o, s:i}", "expires_at",
                              rest_time(vm->lease ? vm->lease->expires_ms : 0), "tombstone_until",
                              rest_time(vm->tombstone_until_ms), "extensions", vm->extensions);
    return json_pack(
        "{s:s, s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, "
        "s:o, s:o, s:i, s:o, s:o, s:o, s:o, s:o, s:o}",
        "id", S(vm->id), "name", S(vm->name), "state", S(vm->state), "power_state", view_str(power),
        "host", view_str(vm->host), "template", view_str(vm->template_), "owner",
        view_str(vm->owner), "group", view_str(vm->group), "lease", lease, "task",
        view_str(vm->task), "request", view_str(vm->request), "flavor", view_resources(vm->flavor),
        "fault", view_str(vm->fault), "image", view_str(vm->image), "os", view_str(vm->os),
        "created_at", rest_time(vm->created_ms), "lease_days", vm->lease_days, "updated_at",
        rest_time(vm->updated_ms), "ssh_keys", sshkeys_view_refs(vm->ssh_keys, vm->n_ssh_keys),
        "network", view_vm_network(vm->network), "staged_image",
        vm->staged_image && *vm->staged_image ? view_str(vm->staged_image) : json_null(),
        "networks", view_vm_networks(vm), "applications",
        json_pack("{s:o, s:o}", "from_image",
                  s_names(vm->applications_image, vm->n_applications_image), "first_boot",
                  s_names(vm->applications_first_boot, vm->n_applications_first_boot)));
}

json_t *view_task(const Berth__Task *task)
{
    json_t *steps = json_array();
    for (size_t i = 0; i < task->n_steps; i++) {
        const Berth__TaskStep *s = task->steps[i];
        json_array_append_new(
            steps, json_pack("{s:s, s:s, s:o, s:o, s:o}", "name", S(s->name), "state", S(s->state),
                             "started_at", rest_time(s->started_ms), "finished_at",
                             rest_time(s->finished_ms), "result", view_str(s->result)));
    }
    json_t *position = task->queue_position > 0 ? json_integer(task->queue_position) : json_null();
    json_t *view = json_pack(
        "{s:s, s:s, s:s, s:o, s:i, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "id",
        S(task->id), "kind", S(task->kind), "state", S(task->state), "stage", view_str(task->stage),
        "percent", task->percent, "steps", steps, "fault", view_str(task->fault), "target",
        view_str(task->target), "owner", view_str(task->owner), "created_at",
        rest_time(task->created_ms), "updated_at", rest_time(task->updated_ms), "finished_at",
        rest_time(task->finished_ms), "class", view_str(task->task_class), "queue_position",
        position, "aborted_by", view_str(task->abort_by));
    /* Instant deploy: a provisioning served from the template's pool says so. */
    if (view)
        json_object_set_new(view, "from_pool", json_boolean(task->from_pool));
    /* A capture names the image it makes. */
    if (view && task->capture && task->capture->name && *task->capture->name)
        json_object_set_new(view, "image", json_string(task->capture->name));
    return view;
}

/* ---- hosts, from their raw hashes (written field by field by taskmgr and scheduler) ---- */

static const char *s_hget(const redisReply *hash, const char *field)
{
    if (!hash || hash->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < hash->elements; i += 2)
        if (hash->element[i]->type == REDIS_REPLY_STRING && streq(hash->element[i]->str, field) &&
            hash->element[i + 1]->type == REDIS_REPLY_STRING)
            return hash->element[i + 1]->str;
    return NULL;
}

static int64_t s_hint(const redisReply *hash, const char *field)
{
    int64_t v = 0;
    const char *text = s_hget(hash, field);
    if (!text || util_parse_int(text, INT64_MIN, INT64_MAX, &v) != 0)
        return 0;
    return v;
}

int view_host_down_fields(const char *state, int64_t last_seen_ms, int64_t now_ms, int64_t down_ms)
{
    return now_ms - last_seen_ms > down_ms || (state && streq(state, "DOWN"));
}

int view_host_down(const redisReply *hash, int64_t now_ms, int64_t down_ms)
{
    return view_host_down_fields(s_hget(hash, "state"), s_hint(hash, "last_seen_ms"), now_ms,
                                 down_ms);
}

json_t *view_host(const redisReply *hash, int64_t now_ms, int64_t down_ms, int with_domains)
{
    int down = view_host_down(hash, now_ms, down_ms);
    const char *state = s_hget(hash, "state");
    /* A host that stopped reporting is DOWN whatever its hash last said. */
    if (down)
        state = "DOWN";
    json_t *host = json_pack(
        "{s:o, s:o, s:s, s:{s:I, s:I, s:I}, s:{s:I, s:I, s:I}, s:I, s:o, s:o}", "id",
        view_str(s_hget(hash, "id")), "name", view_str(s_hget(hash, "name")), "state",
        state && *state ? state : "UNKNOWN", "capacity", "vcpus",
        (json_int_t)s_hint(hash, "cap_vcpus"), "ram_mb", (json_int_t)s_hint(hash, "cap_ram_mb"),
        "disk_gb", (json_int_t)s_hint(hash, "cap_disk_gb"), "used", "vcpus",
        (json_int_t)s_hint(hash, "used_vcpus"), "ram_mb", (json_int_t)s_hint(hash, "used_ram_mb"),
        "disk_gb", (json_int_t)s_hint(hash, "used_disk_gb"), "vms", (json_int_t)s_hint(hash, "vms"),
        "hypervisor", view_str(s_hget(hash, "hypervisor")), "last_seen_at",
        rest_time(s_hint(hash, "last_seen_ms")));
    /* reconcile: the operator's maintenance switch, and the domains the host runs that are
       no VM of Berth on it (JSON text written by taskmgr; listed, never destroyed). */
    if (host) {
        const char *orphans_text = s_hget(hash, "orphans");
        json_t *stored = orphans_text ? json_loads(orphans_text, 0, NULL) : NULL;
        json_t *orphans = json_array();
        size_t k;
        json_t *o;
        json_array_foreach(stored, k, o)
        {
            if (json_is_string(o))
                json_array_append(orphans, o);
        }
        json_decref(stored);
        json_object_set_new(host, "orphans", orphans);
        json_object_set_new(host, "maintenance",
                            json_boolean(streq(s_hget(hash, "maintenance") ?: "", "1")));
    }
    if (!host || !with_domains)
        return host;
    /* The agent's report, as JSON text: copy only well-formed entries. */
    json_t *domains = json_array();
    const char *text = s_hget(hash, "domains");
    json_t *reported = text ? json_loads(text, 0, NULL) : NULL;
    size_t i;
    json_t *d;
    json_array_foreach(reported, i, d)
    {
        const char *name = json_string_value(json_object_get(d, "name"));
        const char *power = json_string_value(json_object_get(d, "power_state"));
        if (name)
            json_array_append_new(domains, json_pack("{s:s, s:s}", "name", name, "power_state",
                                                     down    ? "UNKNOWN"
                                                     : power ? power
                                                             : "UNKNOWN"));
    }
    json_decref(reported);
    json_object_set_new(host, "domains", domains);
    return host;
}
