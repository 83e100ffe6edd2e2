/*  model: protobuf resources (Vm, Task, Request, Template, Host, ...) stored in Redis hashes,
    and the one way several keys change together: a transaction of checks, writes and events
    run as a single Lua script. See docs/state.md for the key layout. */
#ifndef BERTH_MODEL_H
#define BERTH_MODEL_H

#include "berth.pb-c.h"
#include "store.h"

#include <jansson.h>

#define MODEL_NOT_FOUND 1 /* model_load: no such key */
#define MODEL_CONFLICT  2 /* model_tx_commit: a check failed, nothing was written */

/* Key of an object: model_key(buf, "vm", id) -> "berth:vm:{id}" for the kinds whose keys carry
   a hash tag (vm, task, request, claim, usage), "berth:<kind>:<id>" for the others. */
const char *model_key(char *buf, size_t size, const char *kind, const char *id);
#define MODEL_KEY_MAX 256

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
/* Check the object's version (0 = the key does not exist yet). */
void model_tx_check_version(model_tx_t *self, const char *key, int64_t version);
/* Write every field of msg into the hash at key (fields not in msg are left alone). */
void model_tx_put(model_tx_t *self, const char *key, const ProtobufCMessage *msg);
void model_tx_hset(model_tx_t *self, const char *key, const char *field, const char *value);
void model_tx_del(model_tx_t *self, const char *key);
void model_tx_zadd(model_tx_t *self, const char *key, int64_t score, const char *member);
void model_tx_zrem(model_tx_t *self, const char *key, const char *member);
void model_tx_sadd(model_tx_t *self, const char *key, const char *member);
/* Append an event to STORE_EVENTS: type plus field/value pairs (NULL-terminated list). */
void model_tx_event(model_tx_t *self, const char *type, ...);

/* Run the checks; if all hold, the writes and events, atomically. 0, MODEL_CONFLICT (with
 *why, static, saying which check failed when why is non-NULL), or -1 when Redis failed. */
int model_tx_commit(model_tx_t *self, store_t *store, const char **why);

/* The single-object case of a transaction: if hash `key` has state == expected_state ("" =
   absent) and version == expected_version (0 = absent), set state := new_state,
   version += 1 and the field/value pairs, and append {type: event, key, state, version,
   fields...} to STORE_EVENTS. 0 (and *new_version), MODEL_CONFLICT, or -1 (Redis). */
int model_transition(store_t *store, const char *key, const char *expected_state,
                     int64_t expected_version, const char *new_state, const char *event,
                     int nfields, const char **fields, int64_t *new_version);

/* ---- helpers every service uses --------------------------------------------------------- */

/* Event for a VM's new state (docs/state.md), added to tx. vm must carry the new state. */
void model_tx_vm_event(model_tx_t *tx, const Berth__Vm *vm);

#endif
