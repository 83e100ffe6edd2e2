/*  pool: instant deploy. A template with a pool_size keeps that many VMs built ahead: each is
    a VM without owner or group (POOLING while its POOL_BUILD task builds, boots and suspends it
    to disk, then POOLED), placed like any VM but with no group, so it never takes capacity a
    group's reservation holds, holds no quota and is billed to nobody. It gets its final id
    (its domain's name and its seed's instance-id) when it is built. A request for the template
    takes the oldest ready one in its own transaction: the record is completed (owner, group,
    name, lease days, keys), the quota charged, a PROVISION task marked from_pool queued (the
    taskmgr re-identifies its seed and resumes it) and a replacement queued for the pool, all
    in one step; nothing in a request waits for a build. */
#ifndef BERTH_APPROVAL_POOL_H
#define BERTH_APPROVAL_POOL_H

#include "fault.h"
#include "model.h"
#include "store.h"

#include "berth.pb-c.h"

/* Add to tx n new VMs for tmpl's pool, each with its POOL_BUILD task queued, and the check
   that the pool still holds `members` VMs (two approval instances never both fill the same
   gap). due_ms 0: the tasks wake a taskmgr at once; else they are due then (real ms) and a
   taskmgr finds them when it next reads the due set. 0, or -1 with a fault (the template's
   networks, out of memory). */
int pool_tx_fill(store_t *store, model_tx_t *tx, const Berth__Template *tmpl, int64_t members,
                 int n, const char *trace_id, int64_t now, int64_t due_ms, fault_t *fault);

/* How many VMs tmpl's pool holds (building and ready) and how many are ready. 0 or -1. */
int pool_count(store_t *store, const char *template_id, int64_t *members, int64_t *ready);

/* Ready VMs a request for tmpl may take now: at most max, oldest first, each POOLED and
   getting exactly the networks (ids, in order) the request's VMs get. *vms_p (n_p of them,
   NULL and 0 when none) is freed with pool_vms_free. 0, or -1 when Redis failed (the
   request is then built as without a pool). */
int pool_ready(store_t *store, const Berth__Template *tmpl, Berth__VmNetwork **nets, size_t n_nets,
               size_t max, Berth__Vm ***vms_p, size_t *n_p);
void pool_vms_free(Berth__Vm ***vms_p, size_t n);

/* In the request's tx: the n VMs taken leave the pool, and as many replacements as keep the
   pool at its size are queued, due delay_ms from now (the hand-out goes first). 0 or -1
   with a fault. */
int pool_tx_handed_out(store_t *store, model_tx_t *tx, const Berth__Template *tmpl,
                       Berth__Vm **taken, size_t n, const char *trace_id, int64_t now,
                       int64_t delay_ms, fault_t *fault);

/* SetTemplatePool: set the size (an admin; the caller checked) and bring the pool to it:
   VMs are queued for a gap, ready VMs beyond it are disposed of (ones still building stay
   until a later change). *pool_p answers what the pool is now. */
int pool_set(store_t *store, const Berth__SetTemplatePool *msg, const char *actor,
             const char *trace_id, Berth__TemplatePool **pool_p, fault_t *fault);

/* The pool of a template (id or name) as TemplatePool (free with
   protobuf_c_message_free_unpacked). */
int pool_get(store_t *store, const char *template_ref, Berth__TemplatePool **pool_p,
             fault_t *fault);

#endif
