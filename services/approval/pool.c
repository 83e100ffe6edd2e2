/*  pool: a template's instant-deploy pool (pool.h). Every write here is part of one model_tx:
    the pool's VMs and their POOL_BUILD tasks are born with the change that leaves a gap (the
    size set higher, a VM handed out), so the pool is refilled through the task engine and no
    request ever waits for a build. */
#include "pool.h"
#include "catalog.h"
#include "clock.h"
#include "keys.h"
#include "limit.h"
#include "log.h"
#include "networks.h"
#include "envelope.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int pool_count(store_t *store, const char *template_id, int64_t *members, int64_t *ready)
{
    char key[KEYS_MAX];
    redisReply *r = store_command(store, "ZCARD %s", keys_build(key, KEYS_POOL, template_id, NULL));
    if (!r || r->type != REDIS_REPLY_INTEGER) {
        if (r)
            freeReplyObject(r);
        return -1;
    }
    *members = r->integer;
    freeReplyObject(r);
    r = store_command(store, "ZCARD %s", keys_build(key, KEYS_POOL_READY, template_id, NULL));
    if (!r || r->type != REDIS_REPLY_INTEGER) {
        if (r)
            freeReplyObject(r);
        return -1;
    }
    *ready = r->integer;
    freeReplyObject(r);
    return 0;
}

/* One pool VM and its POOL_BUILD task, into tx. Every value is copied by the tx. */
static void s_tx_one(model_tx_t *tx, const Berth__Template *tmpl, Berth__VmNetwork **nets,
                     size_t n_nets, const char *trace_id, int64_t now, int64_t due_ms)
{
    char vm_id[UTIL_ID_LEN], task_id[UTIL_ID_LEN], name[32], key[KEYS_MAX];
    util_uuid(vm_id);
    util_uuid(task_id);
    /* A hostname until a request gives it its own (pool-<first 8 hex of its id>). */
    snprintf(name, sizeof name, "pool-%.8s", vm_id);
    Berth__Resources flavor = BERTH__RESOURCES__INIT;
    flavor.vcpus = tmpl->vcpus;
    flavor.ram_mb = tmpl->ram_mb;
    flavor.disk_gb = tmpl->disk_gb;
    Berth__Vm vm = BERTH__VM__INIT;
    vm.id = vm_id;
    vm.name = name;
    vm.power_state = "NOSTATE";
    vm.template_ = tmpl->id;
    vm.flavor = &flavor;
    vm.image = tmpl->image;
    vm.os = tmpl->os;
    vm.lease_days = tmpl->lease_days;
    vm.rebuild_on_loss = tmpl->rebuild_on_loss;
    vm.disk = tmpl->disk;
    vm.hypervisor = tmpl->hypervisor;
    vm.network = n_nets ? nets[0] : NULL;
    vm.networks = nets;
    vm.n_networks = n_nets;
    vm.created_ms = now;
    vm.updated_ms = now;
    vm.task = task_id;

    Berth__Task t = BERTH__TASK__INIT;
    t.id = task_id;
    t.kind = "POOL_BUILD";
    t.stage = "queued";
    t.target = vm_id;
    t.request_id = (char *)(trace_id ? trace_id : "");
    t.created_ms = now;
    t.updated_ms = now;
    keys_build(key, KEYS_TASK, task_id, NULL);
    model_tx_transition(tx, LIFECYCLE_TASK, key, "", "QUEUED", 0, "task", task_id, "stage", t.stage,
                        NULL);
    t.state = "QUEUED";
    t.version = 1;
    model_tx_put(tx, key, &t.base);
    model_tx_zadd(tx, KEYS_TASKS_DUE, due_ms, task_id);
    if (due_ms == 0)
        model_tx_zadd(tx, KEYS_TASKS_WAKE, now, task_id);

    model_tx_vm_transition(tx, &vm, "POOLING");
    vm.state = "POOLING";
    vm.version = 1;
    model_tx_put(tx, keys_vm(key, vm_id), &vm.base);
    model_tx_zadd(tx, KEYS_VMS, now, vm_id);
    model_tx_zadd(tx, keys_build(key, KEYS_POOL, tmpl->id, NULL), now, vm_id);
}

int pool_tx_fill(store_t *store, model_tx_t *tx, const Berth__Template *tmpl, int64_t members,
                 int n, const char *trace_id, int64_t now, int64_t due_ms, fault_t *fault)
{
    char key[KEYS_MAX];
    /* Fewer than members + 1: nobody added to the pool since it was counted. */
    model_tx_check_size(tx, keys_build(key, KEYS_POOL, tmpl->id, NULL), members + 1);
    if (n <= 0)
        return 0;
    /* The template's networks as a VM in no group gets them. */
    Berth__VmNetwork **nets = NULL;
    size_t n_nets = 0;
    if (networks_for_vm_all(store, NULL, NULL, 0, tmpl->network, tmpl->networks, tmpl->n_networks,
                            "", &nets, &n_nets, fault) != 0) {
        /* A network only some groups may use: a VM in no group cannot have it. */
        if (streq(fault->code, "FORBIDDEN")) {
            char why[ERROR_MESSAGE_MAX];
            util_strlcpy(why, fault->message, sizeof why);
            error_set(fault, "CONFLICT",
                      "template %s cannot have a pool (its VMs are in no group): %s", tmpl->name,
                      why);
        }
        return -1;
    }
    for (int i = 0; i < n; i++)
        s_tx_one(tx, tmpl, nets, n_nets, trace_id, now, due_ms);
    networks_vm_list_free(&nets, n_nets);
    return 0;
}

void pool_vms_free(Berth__Vm ***vms_p, size_t n)
{
    if (!vms_p || !*vms_p)
        return;
    for (size_t i = 0; i < n; i++)
        if ((*vms_p)[i])
            protobuf_c_message_free_unpacked(&(*vms_p)[i]->base, NULL);
    free(*vms_p);
    *vms_p = NULL;
}

/* 1 when vm gets exactly the networks nets (by id, in order). */
static int s_same_networks(const Berth__Vm *vm, Berth__VmNetwork **nets, size_t n_nets)
{
    if (vm->n_networks != n_nets)
        return 0;
    for (size_t i = 0; i < n_nets; i++)
        if (!streq(vm->networks[i]->network, nets[i]->network))
            return 0;
    return 1;
}

/* 1 when host is UP: a pooled VM on a host in maintenance (DISABLED) or DOWN waits there; a
   request is built elsewhere instead. */
static int s_host_up(store_t *store, const char *host)
{
    char key[KEYS_MAX];
    if (!host || !*host)
        return 0;
    redisReply *r = store_command(store, "HGET %s state", keys_host(key, host));
    int up = r && r->type == REDIS_REPLY_STRING && streq(r->str, "UP");
    if (r)
        freeReplyObject(r);
    return up;
}

int pool_ready(store_t *store, const Berth__Template *tmpl, Berth__VmNetwork **nets, size_t n_nets,
               size_t max, Berth__Vm ***vms_p, size_t *n_p)
{
    *vms_p = NULL;
    *n_p = 0;
    if (tmpl->pool_size <= 0 || max == 0)
        return 0;
    char key[KEYS_MAX];
    redisReply *r =
        store_command(store, "ZRANGE %s 0 %lld", keys_build(key, KEYS_POOL_READY, tmpl->id, NULL),
                      (long long)LIMIT_POOL_SIZE_MAX - 1);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return -1;
    }
    Berth__Vm **vms = calloc(max, sizeof *vms);
    size_t n = 0;
    for (size_t i = 0; vms && i < r->elements && n < max; i++) {
        Berth__Vm *vm = NULL;
        if (r->element[i]->type != REDIS_REPLY_STRING ||
            model_load(store, &berth__vm__descriptor, keys_vm(key, r->element[i]->str),
                       (ProtobufCMessage **)&vm) != 0)
            continue;
        if (streq(vm->state, "POOLED") && streq(vm->template_, tmpl->id) &&
            s_same_networks(vm, nets, n_nets) && s_host_up(store, vm->host))
            vms[n++] = vm;
        else
            protobuf_c_message_free_unpacked(&vm->base, NULL);
    }
    freeReplyObject(r);
    if (!vms)
        return -1;
    if (n == 0)
        free(vms);
    else
        *vms_p = vms;
    *n_p = n;
    return 0;
}

int pool_tx_handed_out(store_t *store, model_tx_t *tx, const Berth__Template *tmpl,
                       Berth__Vm **taken, size_t n, const char *trace_id, int64_t now,
                       int64_t delay_ms, fault_t *fault)
{
    char key[KEYS_MAX];
    int64_t members = 0, ready = 0;
    if (pool_count(store, tmpl->id, &members, &ready) != 0)
        return fault_store(fault, store);
    for (size_t i = 0; i < n; i++) {
        model_tx_zrem(tx, keys_build(key, KEYS_POOL, tmpl->id, NULL), taken[i]->id);
        model_tx_zrem(tx, keys_build(key, KEYS_POOL_READY, tmpl->id, NULL), taken[i]->id);
    }
    /* Replacements: as many as keep the pool at its size (the pool's check in
       pool_tx_fill is against the count before these VMs left it). */
    int64_t gap = tmpl->pool_size - (members - (int64_t)n);
    fault_t why = { 0 };
    int64_t due = delay_ms > 0 ? util_now_ms() + delay_ms : 0; /* the due set: real time */
    if (pool_tx_fill(store, tx, tmpl, members, gap > 0 ? (int)gap : 0, trace_id, now, due, &why) !=
        0)
        /* The request is served all the same; the pool stays short until its next change. */
        log_warn(trace_id, "pool not refilled", "{s:s, s:s}", "template", tmpl->id, "reason",
                 why.message);
    return 0;
}

/* The TemplatePool of tmpl as Redis holds it now. */
static int s_answer(store_t *store, const Berth__Template *tmpl, int32_t size,
                    Berth__TemplatePool **pool_p, fault_t *fault)
{
    char key[KEYS_MAX];
    redisReply *ready =
        store_command(store, "ZRANGE %s 0 -1", keys_build(key, KEYS_POOL_READY, tmpl->id, NULL));
    redisReply *all =
        store_command(store, "ZRANGE %s 0 -1", keys_build(key, KEYS_POOL, tmpl->id, NULL));
    if (!ready || ready->type != REDIS_REPLY_ARRAY || !all || all->type != REDIS_REPLY_ARRAY) {
        if (ready)
            freeReplyObject(ready);
        if (all)
            freeReplyObject(all);
        return fault_store(fault, store);
    }
    Berth__TemplatePool p = BERTH__TEMPLATE_POOL__INIT;
    p.template_ = tmpl->id;
    p.name = tmpl->name;
    p.size = size;
    char **ids = calloc(all->elements + ready->elements + 1, sizeof *ids);
    size_t n = 0;
    for (size_t i = 0; ids && i < ready->elements; i++)
        ids[n++] = ready->element[i]->str;
    p.ready = (int32_t)ready->elements;
    for (size_t i = 0; ids && i < all->elements; i++) {
        int is_ready = 0;
        for (size_t k = 0; k < ready->elements; k++)
            is_ready |= streq(ready->element[k]->str, all->element[i]->str);
        if (!is_ready) {
            ids[n++] = all->element[i]->str;
            p.building++;
        }
    }
    p.vms = ids;
    p.n_vms = n;
    int rc = 0;
    if (!ids)
        rc = error_set(fault, "INTERNAL", "out of memory");
    else {
        size_t len = berth__template_pool__get_packed_size(&p);
        uint8_t *buf = malloc(len ? len : 1);
        if (buf) {
            berth__template_pool__pack(&p, buf);
            *pool_p = berth__template_pool__unpack(NULL, len, buf);
            free(buf);
        }
        if (!buf || !*pool_p)
            rc = error_set(fault, "INTERNAL", "out of memory");
    }
    free(ids);
    freeReplyObject(ready);
    freeReplyObject(all);
    return rc;
}

int pool_get(store_t *store, const char *template_ref, Berth__TemplatePool **pool_p, fault_t *fault)
{
    Berth__Template *tmpl = NULL;
    if (catalog_find(store, template_ref, &tmpl, fault) != 0)
        return -1;
    int rc = s_answer(store, tmpl, tmpl->pool_size, pool_p, fault);
    protobuf_c_message_free_unpacked(&tmpl->base, NULL);
    return rc;
}

/* Queue the disposal of a ready pool VM in tx: POOLED -> DISPOSING with its DISPOSE task. */
static int s_tx_dispose(store_t *store, model_tx_t *tx, const Berth__Template *tmpl,
                        const char *vm_id, const char *trace_id, int64_t now)
{
    char key[KEYS_MAX], task_id[UTIL_ID_LEN];
    Berth__Vm *vm = NULL;
    if (model_load(store, &berth__vm__descriptor, keys_vm(key, vm_id), (ProtobufCMessage **)&vm) !=
        0)
        return -1;
    int ok = streq(vm->state, "POOLED");
    if (ok) {
        util_uuid(task_id);
        Berth__Task t = BERTH__TASK__INIT;
        t.id = task_id;
        t.kind = "DISPOSE";
        t.stage = "queued";
        t.target = vm->id;
        t.host = vm->host;
        t.request_id = (char *)(trace_id ? trace_id : "");
        t.created_ms = now;
        t.updated_ms = now;
        keys_build(key, KEYS_TASK, task_id, NULL);
        model_tx_transition(tx, LIFECYCLE_TASK, key, "", "QUEUED", 0, "task", task_id, "stage",
                            t.stage, NULL);
        t.state = "QUEUED";
        t.version = 1;
        model_tx_put(tx, key, &t.base);
        model_tx_zadd(tx, KEYS_TASKS_DUE, 0, task_id);
        model_tx_zadd(tx, KEYS_TASKS_WAKE, now, task_id);
        model_tx_vm_transition(tx, vm, "DISPOSING");
        model_tx_hset(tx, keys_vm(key, vm->id), "task", task_id);
        model_tx_zrem(tx, keys_build(key, KEYS_POOL, tmpl->id, NULL), vm->id);
        model_tx_zrem(tx, keys_build(key, KEYS_POOL_READY, tmpl->id, NULL), vm->id);
    }
    protobuf_c_message_free_unpacked(&vm->base, NULL);
    return ok ? 0 : -1;
}

int pool_set(store_t *store, const Berth__SetTemplatePool *msg, const char *actor,
             const char *trace_id, Berth__TemplatePool **pool_p, fault_t *fault)
{
    if (!msg || !msg->template_ || !*msg->template_)
        return error_field(fault, "template", "template is required");
    if (msg->size < 0 || msg->size > LIMIT_POOL_SIZE_MAX)
        return error_field(fault, "size", "size must be 0..%d", LIMIT_POOL_SIZE_MAX);
    Berth__Template *tmpl = NULL;
    if (catalog_find(store, msg->template_, &tmpl, fault) != 0)
        return -1;
    int64_t now = clock_now_ms(), members = 0, ready = 0;
    int rc = -1;
    model_tx_t *tx = model_tx_new();
    if (!tx) {
        error_set(fault, "INTERNAL", "out of memory");
        goto done;
    }
    model_tx_actor(tx, actor, trace_id);
    if (pool_count(store, tmpl->id, &members, &ready) != 0) {
        fault_store(fault, store);
        goto done;
    }
    char key[KEYS_MAX], size[16];
    keys_build(key, KEYS_TEMPLATE, tmpl->id, NULL);
    model_tx_check(tx, key, "id", tmpl->id);
    snprintf(size, sizeof size, "%d", msg->size);
    model_tx_hset(tx, key, "pool_size", size);
    int gap = msg->size - (int)members;
    if (gap > 0 && pool_tx_fill(store, tx, tmpl, members, gap, trace_id, now, 0, fault) != 0)
        goto done;
    if (gap < 0) {
        /* The newest ready VMs beyond the size go; those still building stay. */
        redisReply *r = store_command(store, "ZREVRANGE %s 0 %d",
                                      keys_build(key, KEYS_POOL_READY, tmpl->id, NULL), -gap - 1);
        if (!r || r->type != REDIS_REPLY_ARRAY) {
            if (r)
                freeReplyObject(r);
            fault_store(fault, store);
            goto done;
        }
        for (size_t i = 0; i < r->elements; i++)
            if (r->element[i]->type == REDIS_REPLY_STRING)
                s_tx_dispose(store, tx, tmpl, r->element[i]->str, trace_id, now);
        freeReplyObject(r);
    }
    const char *why = NULL;
    int c = model_tx_commit(tx, store, &why);
    if (c == MODEL_CONFLICT) {
        error_set(fault, "CONFLICT", "the template or its pool changed meanwhile; try again");
        goto done;
    }
    if (c == MODEL_REFUSED) {
        error_set(fault, "INTERNAL", "%s", why ? why : "refused");
        goto done;
    }
    if (c != 0) {
        fault_store(fault, store);
        goto done;
    }
    log_info(trace_id, "template pool set", "{s:s, s:i, s:I, s:s}", "template", tmpl->id, "size",
             msg->size, "members_before", (json_int_t)members, "actor", actor);
    rc = s_answer(store, tmpl, msg->size, pool_p, fault);
done:
    model_tx_destroy(&tx);
    protobuf_c_message_free_unpacked(&tmpl->base, NULL);
    return rc;
}
