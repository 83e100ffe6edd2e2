/*  model: protobuf resources (Vm, Task, Request, Template, Host, ...) stored in Redis hashes,
    and the one way several keys change together: a transaction of checks, writes and events
    run as a single Lua script. See docs/state.md for the key layout. */
#ifndef BERTH_MODEL_H
#define BERTH_MODEL_H

#include "berth.pb-c.h"
#include "lifecycle.h"
#include "store.h"

#include <jansson.h>

#define MODEL_NOT_FOUND 1 /* model_load: no such key */
#define MODEL_CONFLICT  2 /* model_tx_commit: a check failed, nothing was written */
/* model_tx_*: the lifecycle table or the message does not allow what the transaction asks
   (model_tx_error says what); nothing is sent. */
#define MODEL_REFUSED 3
/* model_tx_commit: a charge would pass its limit (model_tx_quota says which); nothing was
   written. */
#define MODEL_QUOTA 4

#define MODEL_VERSION_ANY (-1) /* model_tx_transition: do not check the version */

/* ---- protobuf <-> JSON (reflection over the descriptors: one mechanism for every message) */

/* Message as a JSON object: every field by its proto name; int64 as JSON integers, bytes as
   base64, nested messages as objects, repeated fields as arrays. New reference. */
json_t *model_to_json(const ProtobufCMessage *msg);

/* Message of type desc from a JSON object; unknown keys and wrong types are refused with
 *error pointing at a static reason. Free with protobuf_c_message_free_unpacked(). */
ProtobufCMessage *model_from_json(const ProtobufCMessageDescriptor *desc, json_t *json,
                                  const char **error);

/* ---- Redis hashes ---------------------------------------------------------------------- */

/* Load the hash at key as desc's message. 0 and *msg_p, MODEL_NOT_FOUND, or -1 (Redis). */
int model_load(store_t *store, const ProtobufCMessageDescriptor *desc, const char *key,
               ProtobufCMessage **msg_p);

/* The same from an HGETALL reply already in hand (NULL when the reply is empty). */
ProtobufCMessage *model_from_hash(const ProtobufCMessageDescriptor *desc, const redisReply *r);

/* ---- transactions ---------------------------------------------------------------------- */

typedef struct _model_tx_t model_tx_t;

model_tx_t *model_tx_new(void);
void model_tx_destroy(model_tx_t **self_p);

/* Check that hash field of key equals expected ("" = the field or key is absent). */
void model_tx_check(model_tx_t *self, const char *key, const char *field, const char *expected);
/* Check that the hash, set or sorted set at key (absent: empty) holds fewer than max
   entries: a per-owner limit that two writers racing cannot both pass. */
void model_tx_check_size(model_tx_t *self, const char *key, int64_t max);
/* Check the object's version (0 = the key does not exist yet). */
void model_tx_check_version(model_tx_t *self, const char *key, int64_t version);
/* Write every field of msg into the hash at key: for an object this transaction creates
   (with a transition from "" or model_tx_check_version(tx, key, 0)). An existing object is
   written with model_tx_put_fields or model_tx_put_changed, below. */
void model_tx_put(model_tx_t *self, const char *key, const ProtobufCMessage *msg);
void model_tx_hset(model_tx_t *self, const char *key, const char *field, const char *value);
void model_tx_del(model_tx_t *self, const char *key);
void model_tx_zadd(model_tx_t *self, const char *key, int64_t score, const char *member);
void model_tx_zrem(model_tx_t *self, const char *key, const char *member);
void model_tx_sadd(model_tx_t *self, const char *key, const char *member);
void model_tx_srem(model_tx_t *self, const char *key, const char *member);
/* Append an event to STORE_EVENTS: type plus field/value pairs (NULL-terminated list). */
void model_tx_event(model_tx_t *self, const char *type, ...);
/* Who the transaction's transitions are made for, in their audit records (lib/audit.h):
   a user name when a user asked for them, else (the default) "service:<this service>";
   request_id ties them to the API call (NULL: none). */
void model_tx_actor(model_tx_t *self, const char *actor, const char *request_id);

/* ---- transitions and field masks ------------------------------------------------------
   How a state changes (docs/state.md, "Lifecycle"):

       model_tx_t *tx = model_tx_new();
       if (!tx) ...
       // PROVISIONING -> ACTIVE, if Redis still holds PROVISIONING at the version read:
       model_tx_vm_transition(tx, vm, "ACTIVE");
       // and the other fields this step changes, only those:
       model_tx_put_fields(tx, key, &vm->base, "fault", "lease", NULL);
       rc = model_tx_commit(tx, store, &why);  // 0, MODEL_CONFLICT (read again), MODEL_REFUSED

   A transition is checked against the lifecycle table (lib/lifecycle.h) when it is added:
   one the table does not allow makes the whole transaction refused (MODEL_REFUSED from the
   call and from model_tx_commit, model_tx_error says why) and nothing is ever sent. In
   Redis, in the same step as the other checks, the stored state must still be `from` and
   the version the one read; then the state is written, the object's version becomes the
   stored one plus one, updated_ms becomes now, and the event is appended with
   `type <kind event> key <key> <field> <to> transition <name> at_ms <now> from <old>
   version <new>` plus the caller's fields. Several transitions of one object in one
   transaction bump its version once. The transitions of a transaction are applied after
   its other writes, so a put in the same transaction never undoes them. */

/* Move the kind's state of the object at key from `from` ("" = the object does not exist
   yet: this creates it) to `to`, if the stored version is `version` (0 = absent,
   MODEL_VERSION_ANY = do not check). Extra event fields follow as NULL-terminated
   field/value pairs. 0, or MODEL_REFUSED when the table does not allow it; from == to is
   no transition and is refused too (an observed state that may be unchanged is written
   with model_tx_observe, which then writes nothing). */
int model_tx_transition(model_tx_t *self, lifecycle_kind_t kind, const char *key, const char *from,
                        const char *to, int64_t version, ...);

/* The VM case: vm as read (its state and version are what Redis must still hold), with any
   field this step also changes already set (its host, flavor, owner and template go into
   the vm.state event the meter reads). 0 or MODEL_REFUSED. */
int model_tx_vm_transition(model_tx_t *self, const Berth__Vm *vm, const char *to);

/* An observed state (power: as the host reports it): whatever the state is now, make it
   `to`. Nothing is written, and no event or version bump happens, when the object does not
   exist, when guard_field (NULL = no guard) does not hold guard_value (a heartbeat writes
   only VMs placed on its host), or when the state already is `to`; none of these fails
   the transaction. Extra event fields as for model_tx_transition. 0 or MODEL_REFUSED. */
int model_tx_observe(model_tx_t *self, lifecycle_kind_t kind, const char *key, const char *to,
                     const char *guard_field, const char *guard_value, ...);

/* The power case of model_tx_observe: VM vm_id is `power` if it is placed on host (what a
   heartbeat or a command result reports). The event carries vm and host. Check a power
   state that came from the network with power_state_from_string() first: one the table
   does not know refuses the whole transaction. 0 or MODEL_REFUSED. */
int model_tx_vm_power(model_tx_t *self, const char *vm_id, const char *host, const char *power);

/* Write only the named fields of msg (a NULL-terminated list of proto field names) into
   the hash at key; every other field keeps what Redis holds, so a copy read earlier never
   overwrites a fresher field (a power state reported meanwhile). A name msg does not have,
   a state field (those change through transitions) or `version` refuses the transaction. */
void model_tx_put_fields(model_tx_t *self, const char *key, const ProtobufCMessage *msg,
                         const char *field, ...);

/* Write the fields where after differs from before (the same message as read, and as the
   caller changed it). State fields and `version` are left to a transition of this key in
   the same transaction; changed without one, they refuse the transaction. */
void model_tx_put_changed(model_tx_t *self, const char *key, const ProtobufCMessage *before,
                          const ProtobufCMessage *after);

/* ---- quota ------------------------------------------------------------------------------
   A group's usage (berth:group-usage:{<group>}, and per member berth:group-user-usage) is
   charged in the transaction that creates the VMs, and released by the transaction that
   moves a VM out of a state that holds quota (lifecycle_vm_holds_quota): every VM
   transition from such a state to one that is not (model_tx_transition of LIFECYCLE_VM
   whose event fields name `group` and `owner`, as model_tx_vm_transition's do) gives back
   what the VM holds, once, whoever writes it. */

/* Add amount to the counters at key (vms, vcpus, ram_mb, disk_gb) if none passes its limit
   (a limit of 0, or limit NULL, is none); otherwise the commit answers MODEL_QUOTA and
   model_tx_quota says which limit, scope being the caller's word for whose ("group"). */
void model_tx_charge(model_tx_t *self, const char *key, const char *scope,
                     const Berth__Quota *limit, const Berth__Quota *amount);

/* Mark the VM at vm_key as holding amount (written with the VM): what its release gives
   back. A VM without the mark (made before quotas) releases nothing. */
void model_tx_hold(model_tx_t *self, const char *vm_key, const Berth__Quota *amount);

/* ---- claims ----------------------------------------------------------------------------
   A VM's claim (placement_claim.lua) made in no group (a pool VM's) takes group, in the
   step that gives the VM to it: what the claim holds comes out of group's unclaimed
   reservation on host first, then its any-host one, the rest stays unreserved (the claim
   script's rule), so the group's reservations count the VM from then on and its release
   gives back to them. The commit answers MODEL_CONFLICT when the claim is not on host or
   is in a group already. */
void model_tx_claim_group(model_tx_t *self, const char *vm_id, const char *host, const char *group);

/* The limit a MODEL_QUOTA commit hit. */
typedef struct {
    char scope[16];    /* model_tx_charge's scope */
    char resource[16]; /* vms, vcpus, ram_mb or disk_gb */
    int64_t quota;     /* the limit */
    int64_t used;      /* held before this transaction */
    int64_t requested; /* what this transaction asked for */
} model_quota_t;

/* After a MODEL_QUOTA commit, the limit hit; otherwise NULL. Borrowed. */
const model_quota_t *model_tx_quota(model_tx_t *self);

/* Why the transaction was refused, or NULL. Borrowed; lives as long as the transaction. */
const char *model_tx_error(model_tx_t *self);

/* Run the checks; if all hold, the writes and events, atomically. 0, MODEL_CONFLICT (with
 *why, static, saying which check failed when why is non-NULL), MODEL_REFUSED (nothing was
 sent; *why = model_tx_error), or -1 when Redis failed. */
int model_tx_commit(model_tx_t *self, store_t *store, const char **why);

/* Unchecked by the lifecycle table (kept for the store's own tests; services use
   model_tx_transition): if hash `key` has state == expected_state ("" = absent) and version ==
   expected_version (0 = absent), set state := new_state, version += 1 and the field/value pairs,
   and append {type: event, key, state, version, fields...} to STORE_EVENTS. 0 (and *new_version),
   MODEL_CONFLICT, or -1 (Redis). */
int model_transition(store_t *store, const char *key, const char *expected_state,
                     int64_t expected_version, const char *new_state, const char *event,
                     int nfields, const char **fields, int64_t *new_version);

/* ---- helpers every service uses --------------------------------------------------------- */

/* Event for a VM's new state (docs/state.md), added to tx. vm must carry the new state.
   Superseded by model_tx_vm_transition, which also checks the table and bumps the version. */
void model_tx_vm_event(model_tx_t *tx, const Berth__Vm *vm);

#endif
