/*  requests: the life of a Request up to the moment its VMs are handed to the taskmgr.

    Creating a request writes, in one model_tx: the Request, one Vm per machine asked for,
    and, when the template needs no approval, one PROVISION Task per VM queued in
    berth:tasks:due. Each object is born by a transition from "" (lib/lifecycle.c), which
    writes its vm.state / task.state / request.state event. Either all of it exists or none
    of it does, so a crash or a lost Redis connection never leaves VMs without their request
    or tasks without their VM.

    Deciding re-reads the request and its VMs and moves them with transitions that check the
    state and version read: if another approval instance decided meanwhile, the transaction
    fails, the request is read again and the answer follows what was actually decided.

    Idempotency keys live in the hash berth:idem:<owner>:<key> (fields request, expires_ms,
    body). The transaction checks that the key still holds what was read before, so two calls
    racing with one key create one request; expires_ms is the logical expiry (a Redis TTL,
    set right after, only reclaims the memory). body is the SHA-256 of what was asked
    (template, name, count): a key reused for anything else is refused rather than answered
    with the first request, which would silently drop the second. */
#include "requests.h"
#include "clock.h"
#include "assertion.h"
#include "keys.h"
#include "catalog.h"
#include "decide.h"
#include "groups.h"
#include "kinds.h"
#include "log.h"
#include "limit.h"
#include "model.h"
#include "networks.h"
#include "pool.h"
#include "sshkey.h"
#include "util.h"

#include <ctype.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_REQUESTS KEYS_REQUESTS
#define S_VMS      KEYS_VMS
#define S_DUE      KEYS_TASKS_DUE
#define S_NAME_LEN (POLICY_NAME_MAX + 16) /* a VM name with its "-N" suffix */

/* Everything one transaction writes for n VMs: the messages and the strings they point to. */
typedef struct {
    size_t n;
    char (*vm_ids)[UTIL_ID_LEN];
    char (*task_ids)[UTIL_ID_LEN];
    char (*names)[S_NAME_LEN];
    char **vm_refs;   /* Request.vms */
    char **task_refs; /* Request.tasks */
    Berth__Vm *vms;
    Berth__Resources *flavors;
    Berth__Task *tasks;
} s_batch_t;

static void s_batch_free(s_batch_t *b)
{
    free(b->vm_ids);
    free(b->task_ids);
    free(b->names);
    free(b->vm_refs);
    free(b->task_refs);
    free(b->vms);
    free(b->flavors);
    free(b->tasks);
    memset(b, 0, sizeof *b);
}

static int s_batch_init(s_batch_t *b, size_t n)
{
    memset(b, 0, sizeof *b);
    b->n = n;
    size_t m = n ? n : 1;
    b->vm_ids = calloc(m, sizeof *b->vm_ids);
    b->task_ids = calloc(m, sizeof *b->task_ids);
    b->names = calloc(m, sizeof *b->names);
    b->vm_refs = calloc(m, sizeof *b->vm_refs);
    b->task_refs = calloc(m, sizeof *b->task_refs);
    b->vms = calloc(m, sizeof *b->vms);
    b->flavors = calloc(m, sizeof *b->flavors);
    b->tasks = calloc(m, sizeof *b->tasks);
    if (!b->vm_ids || !b->task_ids || !b->names || !b->vm_refs || !b->task_refs || !b->vms ||
        !b->flavors || !b->tasks) {
        s_batch_free(b);
        return -1;
    }
    return 0;
}

Berth__Request *requests_clone(const Berth__Request *req)
{
    size_t len = berth__request__get_packed_size(req);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return NULL;
    berth__request__pack(req, buf);
    Berth__Request *copy = berth__request__unpack(NULL, len, buf);
    free(buf);
    return copy;
}

void requests_tx_add(model_tx_t *tx, const Berth__Request *req)
{
    char key[KEYS_MAX];
    keys_build(key, KEYS_REQUEST, req->id, NULL);
    model_tx_transition(tx, LIFECYCLE_REQUEST, key, "", req->state, 0, "request", req->id, NULL);
    model_tx_put(tx, key, &req->base);
    model_tx_zadd(tx, S_REQUESTS, req->created_ms, req->id);
}

static void s_lower_id(char out[UTIL_ID_LEN], const char *id)
{
    for (int i = 0; i < UTIL_ID_LEN - 1; i++)
        out[i] = (char)tolower((unsigned char)id[i]);
    out[UTIL_ID_LEN - 1] = '\0';
}

/* Queue the provision task of VM i in batch b: the task (created by its transition, which
   writes its event), its due entry, its wake entry (berth:tasks:wake: a taskmgr takes it at
   once), and the VM's task field. */
static void s_tx_provision(model_tx_t *tx, s_batch_t *b, size_t i, const char *trace_id,
                           int64_t now, int from_pool)
{
    Berth__Vm *vm = &b->vms[i];
    Berth__Task *t = &b->tasks[i];
    char key[KEYS_MAX];
    util_uuid(b->task_ids[i]);
    b->task_refs[i] = b->task_ids[i];
    berth__task__init(t);
    t->id = b->task_ids[i];
    t->kind = "PROVISION";
    t->stage = "queued";
    t->percent = 0;
    t->target = vm->id;
    t->owner = vm->owner;
    t->request_id = (char *)(trace_id ? trace_id : "");
    t->created_ms = now;
    t->updated_ms = now;
    t->from_pool = from_pool; /* instant deploy: re-identified and resumed, not built */
    vm->task = t->id;
    keys_build(key, KEYS_TASK, t->id, NULL);
    model_tx_transition(tx, LIFECYCLE_TASK, key, "", "QUEUED", 0, "task", t->id, "stage", t->stage,
                        NULL);
    t->state = "QUEUED";
    t->version = 1;
    model_tx_put(tx, key, &t->base);
    model_tx_zadd(tx, S_DUE, 0, t->id);
    model_tx_zadd(tx, KEYS_TASKS_WAKE, now, t->id); /* wakes a taskmgr at once */
}

/* The group a request is made in, resolved for owner (written to group_id, and the owner's
   role there to role: "" for the default group of a user in no group, and for an admin who
   is not a member). A named group (id or name) must be one the owner makes requests in
   (member or manager; an auditor changes nothing), except for an admin; a group the owner
   is not in is NOT_FOUND, as if it did not exist. Unnamed: the owner's only such group; a
   user in several must name one; a user in none uses GROUPS_DEFAULT. */
static int s_group(store_t *store, const char *ref, const char *owner, int admin,
                   char group_id[UTIL_ID_LEN], char role[16], fault_t *fault)
{
    char key[KEYS_MAX];
    role[0] = '\0';
    if (ref && *ref) {
        Berth__Group *g = NULL;
        if (groups_find(store, ref, &g, fault) != 0) {
            if (streq(fault->code, "NOT_FOUND"))
                error_detail(fault, "field", "group");
            return -1;
        }
        util_strlcpy(group_id, g->id, UTIL_ID_LEN);
        int is_default = streq(g->name, GROUPS_DEFAULT);
        protobuf_c_message_free_unpacked(&g->base, NULL);
        if (groups_role(store, group_id, owner, role, fault) != 0)
            return -1;
        if (streq(role, "member") || streq(role, "manager") || admin)
            return 0;
        if (streq(role, "auditor"))
            return error_field(fault, "group", "an auditor of group %s cannot make requests in it",
                               ref);
        if (is_default) { /* open to a user in no group: the same rule as when unnamed */
            char only[UTIL_ID_LEN];
            if (s_group(store, NULL, owner, admin, only, role, fault) != 0)
                return -1;
            if (streq(only, group_id))
                return 0;
        }
        error_set(fault, "NOT_FOUND", "no group %s", ref);
        return error_detail(fault, "field", "group");
    }
    redisReply *r =
        store_command(store, "HGETALL %s", keys_build(key, KEYS_USER_GROUPS, owner, NULL));
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return fault_store(fault, store);
    }
    size_t found = 0;
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const char *gid = r->element[i]->str, *grole = r->element[i + 1]->str;
        if (!gid || !grole || !util_is_uuid(gid) ||
            !(streq(grole, "member") || streq(grole, "manager")))
            continue;
        if (found++ == 0) {
            util_strlcpy(group_id, gid, UTIL_ID_LEN);
            util_strlcpy(role, grole, 16);
        }
    }
    freeReplyObject(r);
    if (found > 1) {
        role[0] = '\0';
        return error_field(fault, "group",
                           "you make requests in %zu groups: name the one for this request in "
                           "group",
                           found);
    }
    if (found == 1)
        return 0;
    Berth__Group *g = NULL;
    if (groups_find(store, GROUPS_DEFAULT, &g, fault) != 0) {
        if (streq(fault->code, "NOT_FOUND")) /* approval makes it at start: not yet */
            error_set(fault, "UNAVAILABLE", "the default group does not exist yet; try again");
        return -1;
    }
    util_strlcpy(group_id, g->id, UTIL_ID_LEN);
    protobuf_c_message_free_unpacked(&g->base, NULL);
    return 0;
}

/* Charge count VMs of tmpl's flavor to the group's usage (within its quota) and to the
   owner's usage in the group (within its user_quota), in tx: the request's own step, so two
   requests can never together pass a quota. */
static void s_charge(model_tx_t *tx, const Berth__Group *group, const char *owner,
                     const Berth__Template *tmpl, int count)
{
    char key[KEYS_MAX];
    Berth__Quota amount = BERTH__QUOTA__INIT;
    amount.vms = count;
    amount.vcpus = count * tmpl->vcpus;
    amount.ram_mb = (int64_t)count * tmpl->ram_mb;
    amount.disk_gb = (int64_t)count * tmpl->disk_gb;
    model_tx_charge(tx, keys_build(key, KEYS_GROUP_USAGE, group->id, NULL), "group", group->quota,
                    &amount);
    model_tx_charge(tx, keys_build(key, KEYS_GROUP_USER_USAGE, group->id, owner), "user",
                    group->user_quota, &amount);
}

/* 0 when the group may take new VMs this month as far as its budget goes; -1 with
   BUDGET_EXCEEDED when the meter marked it blocked for the month of the platform clock (its
   budget has a hard stop and the month's charges reached the amount), or UNAVAILABLE. */
static int s_budget_blocked(store_t *store, const Berth__Group *group, fault_t *fault)
{
    char key[KEYS_MAX], month[8];
    clock_month(clock_now_ms(), month);
    redisReply *r = store_command(store, "HMGET %s blocked spent amount",
                                  keys_build(key, KEYS_BUDGET, group->id, NULL));
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
        if (r)
            freeReplyObject(r);
        return error_set(fault, "UNAVAILABLE", "state store unreachable");
    }
    int blocked = r->element[0]->type == REDIS_REPLY_STRING && streq(r->element[0]->str, month);
    if (blocked) {
        const char *spent = r->element[1]->type == REDIS_REPLY_STRING ? r->element[1]->str : "?";
        const char *amount = r->element[2]->type == REDIS_REPLY_STRING ? r->element[2]->str : "?";
        error_set(fault, "BUDGET_EXCEEDED",
                  "group %s has spent %s of its budget of %s for %s, and its budget stops new "
                  "requests: ask a manager to raise it",
                  group->name, spent, amount, month);
        error_detail(fault, "month", "%s", month);
        error_detail(fault, "spent", "%s", spent);
        error_detail(fault, "amount", "%s", amount);
    }
    freeReplyObject(r);
    return blocked ? -1 : 0;
}

int requests_budget_blocked(store_t *store, const Berth__Group *group, fault_t *fault)
{
    return s_budget_blocked(store, group, fault);
}

/* QUOTA_EXCEEDED for the limit q names: the resource, the quota, what is in use and what
   the request asks for, in the message and in details. */
static void s_quota_fault(const model_quota_t *q, const Berth__Group *group, fault_t *fault)
{
    int user = streq(q->scope, "user");
    error_set(fault, "QUOTA_EXCEEDED",
              "%s quota of group %s exceeded: %s quota %lld, %lld in use, this request asks "
              "for %lld",
              user ? "your per-member" : "the", group->name, q->resource, (long long)q->quota,
              (long long)q->used, (long long)q->requested);
    error_detail(fault, "resource", "%s", q->resource);
    error_detail(fault, "quota", "%lld", (long long)q->quota);
    error_detail(fault, "used", "%lld", (long long)q->used);
    error_detail(fault, "requested", "%lld", (long long)q->requested);
    error_detail(fault, "scope", "%s", q->scope);
    error_detail(fault, "group", "%s", group->id);
}

#define S_BODY_HASH_LEN (crypto_hash_sha256_BYTES * 2 + 1) /* hex SHA-256 with its NUL */

/* The hash of what a CreateRequest asks for (template, name, count; 0 and 1 alike; the group
   when one is named), as hex. Lengths go first so that no two different requests share an
   encoding; a request naming no group hashes as before groups existed, so keys stored then
   still match. */
static void s_body_hash(const Berth__CreateRequest *msg, int count, char out[S_BODY_HASH_LEN])
{
    char head[96];
    const char *tmpl = msg->template_ ? msg->template_ : "";
    const char *name = msg->name ? msg->name : "";
    const char *group = msg->group ? msg->group : "";
    int n = *group ? snprintf(head, sizeof head, "%zu:%zu:%d:%zu:", strlen(tmpl), strlen(name),
                              count, strlen(group))
                   : snprintf(head, sizeof head, "%zu:%zu:%d:", strlen(tmpl), strlen(name), count);
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, (const unsigned char *)head, (unsigned long long)n);
    crypto_hash_sha256_update(&st, (const unsigned char *)tmpl, strlen(tmpl));
    crypto_hash_sha256_update(&st, (const unsigned char *)name, strlen(name));
    crypto_hash_sha256_update(&st, (const unsigned char *)group, strlen(group));
    /* The network asked for (none: the hash a request without one always had). */
    if (msg->network && *msg->network) {
        crypto_hash_sha256_update(&st, (const unsigned char *)":net:", 5);
        crypto_hash_sha256_update(&st, (const unsigned char *)msg->network, strlen(msg->network));
    }
    /* The networks asked for (none: as before). */
    for (size_t i = 0; i < msg->n_networks; i++) {
        crypto_hash_sha256_update(&st, (const unsigned char *)":nets:", 6);
        crypto_hash_sha256_update(&st, (const unsigned char *)msg->networks[i],
                                  strlen(msg->networks[i]));
    }
    /* The placement rule asked for (none: the hash a request without one always had). */
    if (msg->placement && *msg->placement) {
        crypto_hash_sha256_update(&st, (const unsigned char *)":placement:", 11);
        crypto_hash_sha256_update(&st, (const unsigned char *)msg->placement,
                                  strlen(msg->placement));
    }
    /* A custom build's machine (none: the hash a template's request always had). */
    if (msg->os && *msg->os) {
        char size[96];
        int len = snprintf(size, sizeof size, ":build:%d:%lld:%lld:", msg->vcpus,
                           (long long)msg->ram_mb, (long long)msg->disk_gb);
        crypto_hash_sha256_update(&st, (const unsigned char *)size, (unsigned long long)len);
        crypto_hash_sha256_update(&st, (const unsigned char *)msg->os, strlen(msg->os) + 1);
        if (msg->os_version)
            crypto_hash_sha256_update(&st, (const unsigned char *)msg->os_version,
                                      strlen(msg->os_version) + 1);
        for (size_t i = 0; i < msg->n_applications; i++)
            crypto_hash_sha256_update(&st, (const unsigned char *)msg->applications[i],
                                      strlen(msg->applications[i]) + 1);
    }
    /* The keys asked for, by fingerprint (none: the hash a request without keys always had). */
    for (size_t i = 0; i < msg->n_ssh_keys; i++) {
        const char *fp = msg->ssh_keys[i]->fingerprint ? msg->ssh_keys[i]->fingerprint : "";
        crypto_hash_sha256_update(&st, (const unsigned char *)":key:", 5);
        crypto_hash_sha256_update(&st, (const unsigned char *)fp, strlen(fp));
    }
    unsigned char digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&st, digest);
    sodium_bin2hex(out, S_BODY_HASH_LEN, digest, sizeof digest);
}

/* What the idempotency key at idem_key says. 1: it names a live request made with the same
   body (hash), answered in *request_p. 0: the key is free; held (size UTIL_ID_LEN) gets the
   value the key holds now ("" when absent, else an expired or dangling id) for the
   transaction to check. -1: fault, IDEMPOTENCY_KEY_REUSED when the live request was made
   with another body. */
static int s_idem_lookup(store_t *store, const char *idem_key, int64_t now, const char *hash,
                         char *held, Berth__Request **request_p, fault_t *fault)
{
    redisReply *r = store_command(store, "HMGET %s request expires_ms body", idem_key);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
        if (r)
            freeReplyObject(r);
        return fault_store(fault, store);
    }
    held[0] = '\0';
    int64_t expires = 0;
    if (r->element[0]->type == REDIS_REPLY_STRING)
        util_strlcpy(held, r->element[0]->str, UTIL_ID_LEN);
    if (r->element[1]->type == REDIS_REPLY_STRING &&
        util_parse_int(r->element[1]->str, 0, INT64_MAX, &expires) != 0)
        expires = 0;
    /* A key written before bodies were hashed has none: it answers as it always did. */
    int other_body = r->element[2]->type == REDIS_REPLY_STRING && strcmp(r->element[2]->str, hash);
    freeReplyObject(r);
    if (!held[0] || expires <= now)
        return 0;
    /* held is non-empty here: it must name the request, which is what the check compares. */
    if (!util_is_uuid(held))
        return 0;
    char key[KEYS_MAX];
    ProtobufCMessage *msg = NULL;
    int rc = model_load(store, &berth__request__descriptor,
                        keys_build(key, KEYS_REQUEST, held, NULL), &msg);
    if (rc == MODEL_NOT_FOUND)
        return 0;
    if (rc != 0)
        return fault_store(fault, store);
    if (other_body) {
        protobuf_c_message_free_unpacked(msg, NULL);
        error_set(fault, "IDEMPOTENCY_KEY_REUSED",
                  "this Idempotency-Key was used for another request body (request %s); use a "
                  "new key for a new request",
                  held);
        error_detail(fault, "header", "Idempotency-Key");
        return error_detail(fault, "request", "%s", held);
    }
    *request_p = (Berth__Request *)msg;
    return 1;
}

/* The SSH keys the gateway resolved for the request: at most LIMIT_REQUEST_SSH_KEYS_MAX,
   each the owner's, named, fingerprinted and one public key line the seed may carry as it
   is. */
static int s_check_ssh_keys(const Berth__CreateRequest *msg, fault_t *fault)
{
    if (msg->n_ssh_keys > LIMIT_REQUEST_SSH_KEYS_MAX) {
        error_set(fault, "BAD_REQUEST", "a request installs at most %d SSH keys",
                  LIMIT_REQUEST_SSH_KEYS_MAX);
        return error_detail(fault, "field", "ssh_keys");
    }
    for (size_t i = 0; i < msg->n_ssh_keys; i++) {
        const Berth__SshKey *k = msg->ssh_keys[i];
        if (!k->name || !*k->name || strlen(k->name) > LIMIT_SSH_KEY_NAME_MAX || !k->user ||
            !msg->owner || strcmp(k->user, msg->owner) != 0 || !k->fingerprint ||
            strlen(k->fingerprint) >= SSHKEY_FINGERPRINT_MAX || !k->public_key ||
            !sshkey_line_ok(k->public_key, LIMIT_SSH_KEY_MAX)) {
            error_set(fault, "BAD_REQUEST", "ssh_keys[%zu] is not a resolved SSH public key", i);
            return error_detail(fault, "field", "ssh_keys");
        }
    }
    return 0;
}

int requests_group(store_t *store, const char *ref, const char *owner, int admin,
                   char group_id[UTIL_ID_LEN], fault_t *fault)
{
    char role[16];
    return s_group(store, ref, owner, admin, group_id, role, fault);
}

/* The template a custom build stands on: its size, OS and chosen image, the group's lease
   (its max_lease_days, else the service's build_lease_days) and no approval rule of its own
   (the group's applies). A heap message (free with protobuf_c_message_free_unpacked), or
   NULL when out of memory. */
static Berth__Template *s_build_template(const policy_t *policy, const Berth__CreateRequest *msg,
                                         const Berth__Group *group,
                                         const Berth__BuildVerdict *build)
{
    Berth__Template t = BERTH__TEMPLATE__INIT;
    t.id = "";
    t.name = "custom";
    t.vcpus = msg->vcpus;
    t.ram_mb = msg->ram_mb;
    t.disk_gb = msg->disk_gb;
    t.os = msg->os;
    t.image = build->image && build->image->name ? build->image->name : "";
    t.lease_days = group->max_lease_days > 0 ? group->max_lease_days : policy->build_lease_days;
    size_t len = berth__template__get_packed_size(&t);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return NULL;
    berth__template__pack(&t, buf);
    Berth__Template *copy = berth__template__unpack(NULL, len, buf);
    free(buf);
    return copy;
}

/* A request of msg's template, or of the custom build the verdict build judged; taking ready
   VMs of the template's pool when use_pool (*pool_retry set when one was taken by another
   request meanwhile: the caller asks again without). */
static int s_create(store_t *store, const policy_t *policy, const Berth__CreateRequest *msg,
                    int admin, const char *trace_id, const Berth__BuildVerdict *build,
                    Berth__Request **request_p, fault_t *fault, int use_pool, int *pool_retry)
{
    if (!msg)
        return error_set(fault, "BAD_REQUEST", "CreateRequest body is required");
    int count = 0;
    if (policy_check_owner("owner", msg->owner, fault) != 0 ||
        (!build && policy_check_template_ref(msg->template_, fault) != 0) ||
        policy_check_vm_name(msg->name, fault) != 0 ||
        (count = policy_count(policy, msg->count, fault)) < 0 ||
        policy_check_idempotency_key(msg->idempotency_key, fault) != 0 ||
        policy_check_placement(msg->placement, fault) != 0 || s_check_ssh_keys(msg, fault) != 0)
        return -1;

    int64_t now = clock_now_ms();     /* stamps */
    int64_t real_now = util_now_ms(); /* the idempotency key's life: real time */
    int keyed = msg->idempotency_key && *msg->idempotency_key;
    char idem_key[KEYS_MAX] = "", held[UTIL_ID_LEN] = "", hash[S_BODY_HASH_LEN] = "";
    if (keyed) {
        keys_build(idem_key, KEYS_IDEM, msg->owner, msg->idempotency_key);
        s_body_hash(msg, count, hash);
        int found = s_idem_lookup(store, idem_key, real_now, hash, held, request_p, fault);
        if (found != 0)
            return found > 0 ? 0 : -1;
    }

    char group_id[UTIL_ID_LEN], role[16];
    if (s_group(store, msg->group, msg->owner, admin, group_id, role, fault) != 0)
        return -1;
    Berth__Group *group = NULL;
    if (groups_get(store, group_id, &group, fault) != 0)
        return -1;
    Berth__Template *tmpl = NULL;
    if (build) {
        if (!(tmpl = s_build_template(policy, msg, group, build))) {
            protobuf_c_message_free_unpacked(&group->base, NULL);
            return error_set(fault, "INTERNAL", "out of memory");
        }
    } else if (catalog_find(store, msg->template_, &tmpl, fault) != 0) {
        protobuf_c_message_free_unpacked(&group->base, NULL);
        return -1;
    }
    if (!build && !groups_offers(group, tmpl)) {
        error_set(fault, "FORBIDDEN", "group %s does not offer template %s", group->name,
                  tmpl->name);
        error_detail(fault, "field", "template");
        protobuf_c_message_free_unpacked(&tmpl->base, NULL);
        protobuf_c_message_free_unpacked(&group->base, NULL);
        return -1;
    }
    if (s_budget_blocked(store, group, fault) != 0) {
        protobuf_c_message_free_unpacked(&tmpl->base, NULL);
        protobuf_c_message_free_unpacked(&group->base, NULL);
        return -1;
    }
    /* The networks its VMs get addresses on (the request's, the template's, or the default):
       copied into each VM as they are now; the scheduler allocates the addresses when it
       places the VM. */
    Berth__VmNetwork **vnets = NULL;
    size_t n_vnets = 0;
    if (networks_for_vm_all(store, msg->network, msg->networks, msg->n_networks, tmpl->network,
                            tmpl->networks, tmpl->n_networks, group_id, &vnets, &n_vnets,
                            fault) != 0) {
        protobuf_c_message_free_unpacked(&tmpl->base, NULL);
        protobuf_c_message_free_unpacked(&group->base, NULL);
        return -1;
    }
    /* Instant deploy: ready VMs of the template's pool the request takes (an approved
       request without a placement rule; each getting the networks these VMs get). */
    Berth__Vm **pooled = NULL;
    size_t n_pooled = 0;
    s_batch_t b;
    model_tx_t *tx = model_tx_new();
    if (tx)
        model_tx_actor(tx, msg->owner, trace_id); /* audit: made for the requester */
    if (!tx || s_batch_init(&b, (size_t)count) != 0) {
        model_tx_destroy(&tx);
        protobuf_c_message_free_unpacked(&tmpl->base, NULL);
        networks_vm_list_free(&vnets, n_vnets);
        protobuf_c_message_free_unpacked(&group->base, NULL);
        return error_set(fault, "INTERNAL", "out of memory");
    }
    /* The policy engine says whether it is approved at once, or the level it waits for. */
    decide_policy_t rule = decide_effective(group, tmpl);
    const char *awaiting = decide_first_level(rule, group, tmpl, count);
    int approved = awaiting == NULL;
    if (use_pool && approved && (!msg->placement || !*msg->placement) &&
        pool_ready(store, tmpl, vnets, n_vnets, (size_t)count, &pooled, &n_pooled) != 0)
        n_pooled = 0; /* Redis failed: built as without a pool (the commit says the rest) */
    Berth__ApprovalStep auto_step = BERTH__APPROVAL_STEP__INIT, *auto_steps[1] = { &auto_step };
    auto_step.level = DECIDE_LEVEL_AUTO;
    auto_step.decided_by = "policy";
    auto_step.decision = "approved";
    auto_step.at_ms = now;
    const char *vm_state = approved ? "PROVISIONING" : "PENDING_APPROVAL";

    char req_id[UTIL_ID_LEN], key[KEYS_MAX];
    util_uuid(req_id);
    Berth__Request req = BERTH__REQUEST__INIT;
    req.id = req_id;
    req.state = approved ? "APPROVED" : "PENDING_APPROVAL";
    req.template_ = tmpl->id;
    req.name = msg->name;
    req.count = count;
    req.owner = msg->owner;
    req.n_vms = b.n;
    req.vms = b.vm_refs;
    req.n_tasks = approved ? b.n : 0;
    req.tasks = approved ? b.task_refs : NULL;
    req.created_ms = now;
    req.updated_ms = now;
    req.version = 1;
    req.decided_by = approved ? "policy" : "";
    req.group = group_id;
    req.kind = "vm";
    req.policy = (char *)decide_policy_name(rule);
    req.awaiting = (char *)(approved ? "" : awaiting);
    req.n_steps = approved ? 1 : 0;
    req.steps = approved ? auto_steps : NULL;
    req.n_ssh_keys = msg->n_ssh_keys;
    req.ssh_keys = msg->ssh_keys;
    req.placement = msg->placement ? msg->placement : "";
    Berth__Resources build_flavor = BERTH__RESOURCES__INIT;
    if (build) {
        req.os = msg->os;
        req.applications = msg->applications;
        req.n_applications = msg->n_applications;
        build_flavor.vcpus = msg->vcpus;
        build_flavor.ram_mb = msg->ram_mb;
        build_flavor.disk_gb = msg->disk_gb;
        req.flavor = &build_flavor;
    }

    /* The template and the group must still be there when the transaction runs, and the
       owner's place in the group what it was when read. */
    if (!build)
        model_tx_check(tx, keys_build(key, KEYS_TEMPLATE, tmpl->id, NULL), "id", tmpl->id);
    model_tx_check(tx, keys_build(key, KEYS_GROUP, group_id, NULL), "id", group_id);
    for (size_t i = 0; i < n_vnets; i++)
        model_tx_check(tx, keys_build(key, KEYS_NETWORK, vnets[i]->network, NULL), "id",
                       vnets[i]->network);
    if (*role)
        model_tx_check(tx, keys_build(key, KEYS_USER_GROUPS, msg->owner, NULL), group_id, role);
    for (size_t i = 0; i < b.n; i++) {
        Berth__Vm *vm = &b.vms[i];
        Berth__Resources *flavor = &b.flavors[i];
        berth__vm__init(vm);
        berth__resources__init(flavor);
        const Berth__Vm *pv = i < n_pooled ? pooled[i] : NULL;
        if (pv) /* its id (its domain's name, its seed's instance-id) was given when built */
            util_strlcpy(b.vm_ids[i], pv->id, UTIL_ID_LEN);
        else
            util_uuid(b.vm_ids[i]);
        b.vm_refs[i] = b.vm_ids[i];
        if (count == 1)
            util_strlcpy(b.names[i], msg->name, S_NAME_LEN);
        else
            snprintf(b.names[i], S_NAME_LEN, "%s-%zu", msg->name, i + 1);
        flavor->vcpus = tmpl->vcpus;
        flavor->ram_mb = tmpl->ram_mb;
        flavor->disk_gb = tmpl->disk_gb;
        vm->id = b.vm_ids[i];
        vm->name = b.names[i];
        vm->power_state = "NOSTATE";
        vm->template_ = tmpl->id;
        vm->owner = msg->owner;
        vm->request = req_id;
        vm->group = group_id;
        vm->flavor = flavor;
        vm->image = tmpl->image;
        vm->os = tmpl->os;
        vm->lease_days = tmpl->lease_days;
        vm->rebuild_on_loss = tmpl->rebuild_on_loss;
        vm->disk = tmpl->disk;
        vm->hypervisor = tmpl->hypervisor;
        vm->placement = msg->placement ? msg->placement : "";
        if (build) { /* what its image brings, and what its first boot installs */
            vm->applications_image = build->from_image;
            vm->n_applications_image = build->n_from_image;
            vm->applications_first_boot = build->first_boot;
            vm->n_applications_first_boot = build->n_first_boot;
        }
        vm->n_ssh_keys = msg->n_ssh_keys;
        vm->ssh_keys = msg->ssh_keys;
        vm->network = n_vnets ? vnets[0] : NULL;
        vm->networks = vnets;
        vm->n_networks = n_vnets;
        vm->created_ms = now;
        vm->updated_ms = now;
        if (pv) {
            /* Taken from the pool: where it runs, its addresses and image stay; the rest of
               its record is the request's. */
            vm->host = pv->host;
            vm->power_state = pv->power_state;
            vm->network = pv->network;
            vm->networks = pv->networks;
            vm->n_networks = pv->n_networks;
            vm->staged_image = pv->staged_image;
            vm->from_pool = 1;
            vm->pooled_ms = pv->pooled_ms;
            vm->state = pv->state;
            vm->version = pv->version;
            /* Its claim, made in no group, is the group's from now on: it counts against
               the group's reservation on its host (or any host) in this same step. */
            model_tx_claim_group(tx, pv->id, pv->host, group_id);
        }
        if (approved)
            s_tx_provision(tx, &b, i, trace_id, now, pv != NULL);
        /* Born by its transition (state "" at version 0; a pooled VM from POOLED at the
           version read), then written whole. */
        model_tx_vm_transition(tx, vm, vm_state);
        vm->state = (char *)vm_state;
        vm->version = pv ? pv->version + 1 : 1;
        model_tx_put(tx, keys_build(key, KEYS_VM, vm->id, NULL), &vm->base);
        Berth__Quota held = BERTH__QUOTA__INIT;
        held.vms = 1;
        held.vcpus = flavor->vcpus;
        held.ram_mb = flavor->ram_mb;
        held.disk_gb = flavor->disk_gb;
        model_tx_hold(tx, key, &held);
        model_tx_zadd(tx, S_VMS, now, vm->id);
        /* The group knows its VMs: it is not deleted while one lives (groups_delete.lua). */
        model_tx_sadd(tx, keys_build(key, KEYS_GROUP_VMS, group_id, NULL), vm->id);
    }
    keys_build(key, KEYS_REQUEST, req_id, NULL);
    model_tx_transition(tx, LIFECYCLE_REQUEST, key, "", req.state, 0, "request", req_id, NULL);
    model_tx_put(tx, key, &req.base);
    model_tx_zadd(tx, S_REQUESTS, now, req_id);
    if (keyed) {
        char expires[24];
        snprintf(expires, sizeof expires, "%lld",
                 (long long)(real_now + policy->idempotency_ttl_ms));
        model_tx_check(tx, idem_key, "request", held);
        model_tx_hset(tx, idem_key, "request", req_id);
        model_tx_hset(tx, idem_key, "expires_ms", expires);
        model_tx_hset(tx, idem_key, "body", hash);
    }
    s_charge(tx, group, msg->owner, tmpl, count);
    const char *why = NULL;
    int pool_failed = n_pooled && pool_tx_handed_out(store, tx, tmpl, pooled, n_pooled, trace_id,
                                                     now, policy->pool_refill_delay_ms, fault);
    int rc = pool_failed ? -1 : model_tx_commit(tx, store, &why);
    pool_vms_free(&pooled, n_pooled);
    /* A pooled VM another request took first: built as without the pool instead. */
    if (rc == MODEL_CONFLICT && n_pooled && pool_retry)
        *pool_retry = 1;
    if (rc == MODEL_REFUSED)
        error_set(fault, "INTERNAL", "%s", why);
    if (rc == MODEL_QUOTA)
        s_quota_fault(model_tx_quota(tx), group, fault);
    protobuf_c_message_free_unpacked(&group->base, NULL);
    model_tx_destroy(&tx);
    if (rc == 0) {
        if (keyed) {
            redisReply *r = store_command(store, "PEXPIRE %s %lld", idem_key,
                                          (long long)policy->idempotency_ttl_ms);
            if (r)
                freeReplyObject(r);
            else
                log_debug(NULL, "idempotency key kept without a TTL", "{s:s}", "key", idem_key);
        }
        *request_p = requests_clone(&req);
        s_batch_free(&b);
        protobuf_c_message_free_unpacked(&tmpl->base, NULL);
        networks_vm_list_free(&vnets, n_vnets);
        return *request_p ? 0 : error_set(fault, "INTERNAL", "out of memory");
    }
    s_batch_free(&b);
    protobuf_c_message_free_unpacked(&tmpl->base, NULL);
    networks_vm_list_free(&vnets, n_vnets);
    if (rc == MODEL_REFUSED || rc == MODEL_QUOTA || pool_failed)
        return -1;
    if (rc == MODEL_CONFLICT && keyed) {
        /* Another call with the same key won the race: answer what it created. */
        int found = s_idem_lookup(store, idem_key, util_now_ms(), hash, held, request_p, fault);
        if (found != 0)
            return found > 0 ? 0 : -1;
    }
    if (rc == MODEL_CONFLICT)
        return error_set(fault, "CONFLICT",
                         "the catalog, the group or the key changed meanwhile; try again");
    return fault_store(fault, store);
}

int requests_create(store_t *store, const policy_t *policy, const Berth__CreateRequest *msg,
                    int admin, const char *trace_id, Berth__Request **request_p, fault_t *fault)
{
    int pool_retry = 0;
    int rc = s_create(store, policy, msg, admin, trace_id, NULL, request_p, fault, 1, &pool_retry);
    if (rc != 0 && pool_retry) {
        log_info(trace_id, "the pooled VM was taken by another request; building instead", "{s:s}",
                 "template", msg->template_);
        memset(fault, 0, sizeof *fault);
        rc = s_create(store, policy, msg, admin, trace_id, NULL, request_p, fault, 0, NULL);
    }
    return rc;
}

int requests_create_build(store_t *store, const policy_t *policy, const Berth__CreateRequest *msg,
                          int admin, const char *trace_id, const Berth__BuildVerdict *build,
                          Berth__Request **request_p, fault_t *fault)
{
    /* A custom build has no template, so no pool. */
    return s_create(store, policy, msg, admin, trace_id, build, request_p, fault, 0, NULL);
}

int requests_get(store_t *store, const char *id, Berth__Request **request_p, fault_t *fault)
{
    if (policy_check_uuid("id", id, fault) != 0)
        return -1;
    char lower[UTIL_ID_LEN], key[KEYS_MAX];
    s_lower_id(lower, id);
    ProtobufCMessage *msg = NULL;
    int rc = model_load(store, &berth__request__descriptor,
                        keys_build(key, KEYS_REQUEST, lower, NULL), &msg);
    if (rc == MODEL_NOT_FOUND)
        return error_set(fault, "NOT_FOUND", "unknown request '%s'", id);
    if (rc != 0)
        return fault_store(fault, store);
    *request_p = (Berth__Request *)msg;
    return 0;
}

static void s_free_vms(Berth__Vm **vms, size_t n)
{
    for (size_t i = 0; vms && i < n; i++)
        if (vms[i])
            protobuf_c_message_free_unpacked(&vms[i]->base, NULL);
    free(vms);
}

/* An approval at a level that leaves another level to decide: the step is recorded and the
   request waits for the next level (decide_next_level). The request keeps its state, so the
   check that it still waits for the level read stands in for a transition. */
static int s_step(store_t *store, const Berth__Request *req, Berth__ApprovalStep *step,
                  const char *next_level, Berth__Request **request_p, fault_t *fault)
{
    Berth__ApprovalStep **steps = calloc(req->n_steps + 1, sizeof *steps);
    model_tx_t *tx = steps ? model_tx_new() : NULL;
    if (!tx) {
        free(steps);
        return error_set(fault, "INTERNAL", "out of memory");
    }
    for (size_t i = 0; i < req->n_steps; i++)
        steps[i] = req->steps[i];
    steps[req->n_steps] = step;
    Berth__Request next = *req;
    next.steps = steps;
    next.n_steps = req->n_steps + 1;
    next.awaiting = (char *)next_level;
    next.updated_ms = step->at_ms;
    char key[KEYS_MAX];
    keys_build(key, KEYS_REQUEST, req->id, NULL);
    model_tx_check(tx, key, "state", "PENDING_APPROVAL");
    model_tx_check(tx, key, "awaiting", req->awaiting ? req->awaiting : "");
    model_tx_put_fields(tx, key, &next.base, "steps", "awaiting", "updated_ms", NULL);
    char at[24];
    snprintf(at, sizeof at, "%lld", (long long)step->at_ms);
    model_tx_event(tx, "request.step", "request", req->id, "level", step->level, "decided_by",
                   step->decided_by, "decision", step->decision, "awaiting", next_level, "at_ms",
                   at, NULL);
    const char *why = NULL;
    int rc = model_tx_commit(tx, store, &why);
    if (rc == 0) {
        *request_p = requests_clone(&next);
        if (!*request_p)
            rc = error_set(fault, "INTERNAL", "out of memory");
    } else if (rc == MODEL_REFUSED)
        rc = error_set(fault, "INTERNAL", "%s", why);
    else if (rc != MODEL_CONFLICT)
        rc = fault_store(fault, store);
    model_tx_destroy(&tx);
    free(steps);
    return rc;
}

/* One attempt at deciding req (read just now) at the level it waits for. 0 with *request_p,
   MODEL_CONFLICT when the request or a VM changed since it was read, -1 with a fault. */
static int s_decide(store_t *store, const Berth__DecideRequest *msg, const Berth__Request *req,
                    const char *trace_id, Berth__Request **request_p, fault_t *fault)
{
    Berth__ApprovalStep step = BERTH__APPROVAL_STEP__INIT;
    step.level = req->awaiting && *req->awaiting ? req->awaiting : DECIDE_LEVEL_ADMIN;
    step.decided_by = msg->actor;
    step.decision = msg->approve ? "approved" : "rejected";
    step.reason = msg->reason ? msg->reason : "";
    step.at_ms = clock_now_ms();
    const char *next_level = msg->approve ? decide_next_level(req->policy, step.level) : NULL;
    if (next_level)
        return s_step(store, req, &step, next_level, request_p, fault);
    Berth__ApprovalStep **steps = calloc(req->n_steps + 1, sizeof *steps);
    if (!steps)
        return error_set(fault, "INTERNAL", "out of memory");
    for (size_t i = 0; i < req->n_steps; i++)
        steps[i] = req->steps[i];
    steps[req->n_steps] = &step;

    s_batch_t b;
    Berth__Vm **loaded = calloc(req->n_vms ? req->n_vms : 1, sizeof *loaded);
    if (!loaded || s_batch_init(&b, req->n_vms) != 0) {
        free(loaded);
        free(steps);
        return error_set(fault, "INTERNAL", "out of memory");
    }
    int64_t now = step.at_ms;
    char key[KEYS_MAX];
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < req->n_vms; i++) {
        ProtobufCMessage *m = NULL;
        int found = util_is_uuid(req->vms[i])
                        ? model_load(store, &berth__vm__descriptor,
                                     keys_build(key, KEYS_VM, req->vms[i], NULL), &m)
                        : MODEL_NOT_FOUND;
        if (found == MODEL_NOT_FOUND)
            rc = error_set(fault, "INTERNAL", "request '%s' names VM '%s' that does not exist",
                           req->id, req->vms[i]);
        else if (found != 0)
            rc = fault_store(fault, store);
        else {
            loaded[i] = (Berth__Vm *)m;
            /* Another instance decided between our read of the request and of its VMs:
               read the request again (the caller's loop) and answer what it now says. */
            if (strcmp(loaded[i]->state, "PENDING_APPROVAL") != 0) {
                error_set(fault, "CONFLICT", "VM '%s' is %s, not PENDING_APPROVAL", loaded[i]->name,
                          loaded[i]->state);
                rc = MODEL_CONFLICT;
            }
        }
    }
    model_tx_t *tx = rc == 0 ? model_tx_new() : NULL;
    if (rc == 0 && !tx)
        rc = error_set(fault, "INTERNAL", "out of memory");
    if (tx)
        model_tx_actor(tx, msg->actor, trace_id); /* audit: made for who decided */
    Berth__Request next = *req;
    if (rc == 0) {
        next.state = msg->approve ? "APPROVED" : "REJECTED";
        next.decided_by = msg->actor;
        next.reason = msg->reason ? msg->reason : "";
        next.version = req->version + 1;
        next.updated_ms = now;
        next.awaiting = "";
        next.steps = steps;
        next.n_steps = req->n_steps + 1;
        if (msg->approve) {
            next.n_tasks = b.n;
            next.tasks = b.task_refs;
        }
        /* Each VM and the request move from PENDING_APPROVAL at the version read; only the
           fields the decision changes are written besides. */
        for (size_t i = 0; i < b.n; i++) {
            Berth__Vm *vm = &b.vms[i];
            *vm = *loaded[i]; /* shallow: the strings stay loaded[i]'s */
            model_tx_vm_transition(tx, loaded[i], msg->approve ? "PROVISIONING" : "REJECTED");
            vm->state = msg->approve ? "PROVISIONING" : "REJECTED";
            vm->version = loaded[i]->version + 1;
            vm->updated_ms = now;
            if (msg->approve)
                s_tx_provision(tx, &b, i, trace_id, now, 0);
            model_tx_put_changed(tx, keys_build(key, KEYS_VM, vm->id, NULL), &loaded[i]->base,
                                 &vm->base);
        }
        keys_build(key, KEYS_REQUEST, req->id, NULL);
        /* A step recorded meanwhile (it keeps the version) changes the level awaited. */
        model_tx_check(tx, key, "awaiting", req->awaiting ? req->awaiting : "");
        model_tx_transition(tx, LIFECYCLE_REQUEST, key, req->state, next.state, req->version,
                            "request", req->id, NULL);
        model_tx_put_changed(tx, key, &req->base, &next.base);
        const char *why = NULL;
        rc = model_tx_commit(tx, store, &why);
        if (rc == 0) {
            *request_p = requests_clone(&next);
            if (!*request_p)
                rc = error_set(fault, "INTERNAL", "out of memory");
        } else if (rc == MODEL_REFUSED)
            rc = error_set(fault, "INTERNAL", "%s", why);
        else if (rc != MODEL_CONFLICT)
            rc = fault_store(fault, store);
    }
    model_tx_destroy(&tx);
    s_free_vms(loaded, req->n_vms);
    s_batch_free(&b);
    free(steps);
    return rc;
}

/* One attempt at deciding req, of a kind other than "vm", at the level it waits for: the
   request's transition, and on approval what its kind does (kinds.h), in one transaction.
   0 with *request_p, MODEL_CONFLICT when something changed since it was read, -1. */
static int s_decide_kind(store_t *store, const policy_t *policy, const Berth__DecideRequest *msg,
                         const Berth__Request *req, const kinds_t *kind, const char *trace_id,
                         Berth__Request **request_p, fault_t *fault)
{
    Berth__ApprovalStep step = BERTH__APPROVAL_STEP__INIT;
    step.level = req->awaiting && *req->awaiting ? req->awaiting : DECIDE_LEVEL_ADMIN;
    step.decided_by = msg->actor;
    step.decision = msg->approve ? "approved" : "rejected";
    step.reason = msg->reason ? msg->reason : "";
    step.at_ms = clock_now_ms();
    const char *next_level = msg->approve ? decide_next_level(req->policy, step.level) : NULL;
    if (next_level)
        return s_step(store, req, &step, next_level, request_p, fault);
    Berth__ApprovalStep **steps = calloc(req->n_steps + 1, sizeof *steps);
    model_tx_t *tx = steps ? model_tx_new() : NULL;
    if (!tx) {
        free(steps);
        return error_set(fault, "INTERNAL", "out of memory");
    }
    for (size_t i = 0; i < req->n_steps; i++)
        steps[i] = req->steps[i];
    steps[req->n_steps] = &step;
    model_tx_actor(tx, msg->actor, trace_id); /* audit: made for who decided */
    Berth__Request next = *req;
    next.state = msg->approve ? "APPROVED" : "REJECTED";
    next.decided_by = msg->actor;
    next.reason = msg->reason ? msg->reason : "";
    next.version = req->version + 1;
    next.updated_ms = step.at_ms;
    next.awaiting = "";
    next.steps = steps;
    next.n_steps = req->n_steps + 1;
    void *held = NULL;
    int rc = msg->approve ? kind->approve(store, policy, tx, req, &next, &held, fault) : 0;
    if (rc == 0) {
        char key[KEYS_MAX];
        keys_build(key, KEYS_REQUEST, req->id, NULL);
        model_tx_check(tx, key, "awaiting", req->awaiting ? req->awaiting : "");
        model_tx_transition(tx, LIFECYCLE_REQUEST, key, req->state, next.state, req->version,
                            "request", req->id, "kind", req->kind, NULL);
        model_tx_put_changed(tx, key, &req->base, &next.base);
        const char *why = NULL;
        rc = model_tx_commit(tx, store, &why);
        if (rc == 0) {
            *request_p = requests_clone(&next);
            if (!*request_p)
                rc = error_set(fault, "INTERNAL", "out of memory");
        } else if (rc == MODEL_REFUSED)
            rc = error_set(fault, "INTERNAL", "%s", why);
        else if (rc == MODEL_CONFLICT && kind->conflict && kind->conflict(store, req, fault) != 0)
            rc = -1;
        else if (rc != MODEL_CONFLICT)
            rc = fault_store(fault, store);
    }
    if (held && kind->release)
        kind->release(held);
    model_tx_destroy(&tx);
    free(steps);
    return rc;
}

/* Has user recorded a step with decision on req? */
static int s_stepped(const Berth__Request *req, const char *user, const char *decision)
{
    for (size_t i = 0; i < req->n_steps; i++)
        if (streq(req->steps[i]->decided_by, user) && streq(req->steps[i]->decision, decision))
            return 1;
    return 0;
}

int requests_decide(store_t *store, const policy_t *policy, const Berth__DecideRequest *msg,
                    const Berth__UserAssertion *who, const char *trace_id,
                    Berth__Request **request_p, fault_t *fault)
{
    if (!msg || !who)
        return error_set(fault, "BAD_REQUEST", "DecideRequest body is required");
    Berth__DecideRequest ask = *msg;
    ask.actor = who->user; /* decided by who asks, whatever the body says */
    msg = &ask;
    if (policy_check_uuid("id", msg->id, fault) != 0 ||
        policy_check_owner("actor", msg->actor, fault) != 0 ||
        policy_check_reason(policy, msg->reason, fault) != 0)
        return -1;
    const char *want = msg->approve ? "APPROVED" : "REJECTED";
    /* A conflict means someone else changed the request between our read and our write:
       read again, and the second read shows what they did. */
    for (int attempt = 0; attempt < 3; attempt++) {
        Berth__Request *req = NULL;
        if (requests_get(store, msg->id, &req, fault) != 0)
            return -1;
        int rc;
        /* Who may not see it learns nothing (NOT_FOUND); the requester never decides it
           (FORBIDDEN). Checked before anything else, so the answer never shows more. */
        if (!decide_sees(req, who)) {
            error_set(fault, "NOT_FOUND", "unknown request '%s'", req->id);
            protobuf_c_message_free_unpacked(&req->base, NULL);
            return -1;
        }
        if (streq(req->owner, msg->actor)) {
            protobuf_c_message_free_unpacked(&req->base, NULL);
            return error_set(fault, "FORBIDDEN",
                             "a request is decided by someone other than its requester");
        }
        /* Decided this way already (the whole request, or this caller's level of it): the
           same answer again. */
        if ((strcmp(req->state, want) == 0 && streq(req->decided_by, msg->actor)) ||
            s_stepped(req, msg->actor, msg->approve ? "approved" : "rejected")) {
            *request_p = req;
            return 0;
        }
        if (strcmp(req->state, "PENDING_APPROVAL") != 0)
            rc = error_set(fault, "CONFLICT", "request '%s' is already %s", req->id, req->state);
        else if (decide_may(req, who, fault) != 0)
            rc = -1;
        else {
            const kinds_t *kind = kinds_find(req->kind);
            if (!kind)
                rc = error_set(fault, "INTERNAL", "request '%s' is of an unknown kind '%s'",
                               req->id, req->kind);
            else if (kind->approve)
                rc = s_decide_kind(store, policy, msg, req, kind, trace_id, request_p, fault);
            else
                rc = s_decide(store, msg, req, trace_id, request_p, fault);
        }
        protobuf_c_message_free_unpacked(&req->base, NULL);
        if (rc != MODEL_CONFLICT)
            return rc;
    }
    return error_set(fault, "CONFLICT", "request '%s' keeps changing; try again", msg->id);
}
