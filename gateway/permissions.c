/*  permissions: the action -> rule table and its two checks: the edge's (platform role, before
    the handler) and the handlers' (the object's owner and group, perm_allows). The caller's
    group roles come from berth:user-groups:<user> (written by approval), cached per worker
    thread for groups_cache_ms: a membership change made here is seen at once (perm_forget),
    one made through another gateway instance within that bound. */
#include "permissions.h"
#include "gateway.h"
#include "keys.h"

#include <pthread.h>
#include <stdatomic.h>

#define S_PLATFORM (PERM_ADMIN | PERM_OPERATOR)
#define S_READERS  (PERM_OWNER | PERM_MANAGER | PERM_AUDITOR | S_PLATFORM)
#define S_IN_GROUP (PERM_MEMBER | PERM_MANAGER | PERM_AUDITOR)

const perm_entry_t perm_table[] = {
    { "health.read", PERM_PUBLIC, "liveness, readiness and the platform's health" },
    { "auth.login", PERM_PUBLIC, "sign in for a bearer token" },
    { "auth.logout", PERM_USER, "sign out: revoke the token used, at once" },
    { "user.create", PERM_ADMIN, "create a user" },
    { "user.update", PERM_OWNER | PERM_ADMIN,
      "change a user: admins all, not the last admin; the user their profile" },
    { "user.list", PERM_ADMIN, "list users (filters state, role, name prefix)" },
    { "user.get", PERM_OWNER | PERM_ADMIN, "read a user with their memberships" },
    { "user.delete", PERM_ADMIN, "delete a user, their keys and memberships (not the last admin)" },
    { "auth.password", PERM_USER, "change one's own password: one's other tokens are revoked" },
    { "apikey.create", PERM_USER, "make an API key scoped to some of one's groups" },
    { "apikey.list", PERM_USER, "list one's own API keys (never their secrets)" },
    { "apikey.revoke", PERM_USER, "revoke one's own API key at once (admins: anyone's)" },
    { "sshkey.create", PERM_USER, "add an SSH public key to one's account" },
    { "sshkey.list", PERM_USER, "list one's own SSH keys" },
    { "sshkey.get", PERM_USER, "read one of one's own SSH keys" },
    { "sshkey.delete", PERM_USER, "delete one of one's own SSH keys (VMs keep their copies)" },
    { "template.list", PERM_USER, "read the template catalog" },
    { "template.create", PERM_ADMIN, "add a template" },
    { "template.pool.get", S_PLATFORM,
      "read a template's instant-deploy pool: its size and the VMs built ahead in it" },
    { "template.pool.set", PERM_ADMIN,
      "set how many VMs of a template are kept built ahead (the pool fills in the background)" },
    { "image.import", S_PLATFORM,
      "import a model image from the stager's import directory or an upload (inspected first)" },
    { "image.list", PERM_USER, "list the model images" },
    { "image.get", PERM_USER, "read a model image" },
    { "image.delete", S_PLATFORM, "delete an image no template, VM or staged image uses" },
    { "image.stage", S_PLATFORM,
      "stage a model image: a staged image derived from it, its identity stripped" },
    { "network.create", PERM_ADMIN, "add a network VMs get addresses on" },
    { "network.list", PERM_USER, "list the networks" },
    { "network.get", PERM_USER, "read a network (its pool's size and addresses in use)" },
    { "network.delete", PERM_ADMIN, "delete a network no VM holds an address on" },
    { "host.list", S_PLATFORM, "list hosts" },
    { "host.get", S_PLATFORM, "read a host and its VMs" },
    { "host.maintenance", S_PLATFORM, "put a host in maintenance (no new placements) or end it" },
    { "request.create", PERM_USER, "request VMs (in a group one belongs to)" },
    { "request.get", S_READERS, "read a request" },
    { "request.list", PERM_USER, "list the requests one may read (PENDING_APPROVAL: to decide)" },
    { "request.approve", PERM_MANAGER | PERM_ADMIN, "approve the level a request waits for" },
    { "request.reject", PERM_MANAGER | PERM_ADMIN, "reject the level a request waits for" },
    { "vm.list", PERM_USER, "list the VMs one may read (vm.get)" },
    { "vm.get", S_READERS, "read a VM" },
    { "vm.dispose", PERM_OWNER | PERM_MANAGER | PERM_ADMIN, "dispose of a VM" },
    { "vm.force_dispose", S_PLATFORM,
      "dispose of a VM whose host is gone (DOWN or unknown) without its agent" },
    { "vm.action", PERM_OWNER | PERM_MANAGER | PERM_ADMIN,
      "start, stop, reboot, suspend, resume, shelve or unshelve a VM" },
    { "vm.capture", PERM_OWNER | PERM_MANAGER | PERM_ADMIN,
      "capture a stopped VM's disk as a new model image" },
    { "vm.extend", PERM_OWNER | PERM_MANAGER | PERM_ADMIN,
      "extend a VM's lease (an EXPIRED one's revives it)" },
    { "task.get", S_READERS, "read a task: whoever may read its VM, and who started it" },
    { "task.abort", PERM_OWNER | PERM_MANAGER | S_PLATFORM,
      "abort a task: it stops at its next stage boundary and undoes what it did" },
    { "task.retry", S_PLATFORM, "run a FAILED task's failed stage again" },
    { "task.force_fail", S_PLATFORM, "end a stuck task FAILED at once (its VM ERROR)" },
    { "event.stream", PERM_USER,
      "follow the live events of what one may read (hosts: admins, operators)" },
    { "usage.read", PERM_USER,
      "read one's own usage (admins: anyone's; ?group=: its managers and auditors)" },
    { "rate.create", PERM_ADMIN,
      "add a rate card (prices from its effective time on, never before it was made)" },
    { "rate.list", PERM_USER, "list the rate cards" },
    { "rate.get", PERM_USER, "read a rate card" },
    { "chargeback.read", PERM_MANAGER | PERM_AUDITOR | PERM_ADMIN,
      "read a group's chargeback report (its managers and auditors, admins)" },
    { "audit.read", PERM_ADMIN | PERM_MANAGER | PERM_AUDITOR,
      "read the audit trail (managers and auditors: their group's records)" },
    { "group.create", PERM_ADMIN, "create a group" },
    { "group.list", PERM_USER, "list the groups one may read (group.get)" },
    { "group.get", S_IN_GROUP | S_PLATFORM, "read a group" },
    { "group.capacity", S_IN_GROUP | S_PLATFORM,
      "read what a group may still use (quota left, free capacity, reservations)" },
    { "group.update", PERM_ADMIN, "change a group" },
    { "group.delete", PERM_ADMIN, "delete a group (no members, no child groups)" },
    { "group.members.list", S_IN_GROUP | S_PLATFORM, "list a group's members" },
    { "group.members.change", PERM_MANAGER | PERM_ADMIN, "add members, set roles, remove" },
    { "onboarding.create", PERM_USER,
      "ask for a new group (an admin approves; the asker becomes its manager)" },
    { "group.allocate", PERM_MANAGER | PERM_ADMIN,
      "ask for more quota for a group (at once within its auto_growth_max and free capacity)" },
    { "group.reservations.set", PERM_ADMIN,
      "replace a group's reservations (capacity held for it on hosts or any host)" },
    { "group.webhook.set", PERM_MANAGER | PERM_ADMIN,
      "set or clear the group's webhook (where its lease notices and alerts are POSTed)" },
    { "budget.get", PERM_MANAGER | PERM_AUDITOR | PERM_ADMIN,
      "read a group's monthly budget, the month's charges so far and its alerts" },
    { "budget.set", PERM_MANAGER | PERM_ADMIN,
      "set or remove a group's monthly budget (thresholds, hard stop)" },
    { NULL, 0, NULL },
};

unsigned perm_rule(const char *action)
{
    for (const perm_entry_t *e = perm_table; action && e->action; e++)
        if (streq(e->action, action))
            return e->rule;
    return 0;
}

int perm_public(const char *action)
{
    return (perm_rule(action) & PERM_PUBLIC) != 0;
}

static unsigned s_platform_bit(const char *role)
{
    return streq(role, "admin") ? PERM_ADMIN : streq(role, "operator") ? PERM_OPERATOR : 0;
}

int perm_sees_all(http_req_t *req)
{
    return (s_platform_bit(req->role) & S_PLATFORM) != 0;
}

/* ---- the caller's group roles, cached per worker thread ---- */

#define S_SLOTS 64

typedef struct {
    char user[HTTP_USER_MAX];
    int64_t checked_ms; /* monotonic; 0: empty */
    unsigned forgotten; /* s_forgotten[] of this slot's index when it was read */
    json_t *groups;     /* group id -> role */
} s_slot_t;

/* Bumped by perm_forget for every user hashing to the index, on any thread: a membership
   changed through this gateway is seen by its next request on every thread, not only within
   groups_cache_ms (which still bounds changes made through another gateway instance). */
static atomic_uint s_forgotten[S_SLOTS];

static pthread_key_t s_cache_key;
static pthread_once_t s_cache_once = PTHREAD_ONCE_INIT;

static void s_cache_free(void *arg)
{
    s_slot_t *slots = arg;
    for (int i = 0; i < S_SLOTS; i++)
        json_decref(slots[i].groups);
    free(slots);
}

static void s_cache_key_init(void)
{
    pthread_key_create(&s_cache_key, s_cache_free);
}

static unsigned s_cache_index(const char *user)
{
    unsigned h = 5381;
    for (const char *p = user; *p; p++)
        h = h * 33 + (unsigned char)*p;
    return h % S_SLOTS;
}

static s_slot_t *s_cache_slot(const char *user)
{
    pthread_once(&s_cache_once, s_cache_key_init);
    s_slot_t *slots = pthread_getspecific(s_cache_key);
    if (!slots && (slots = calloc(S_SLOTS, sizeof *slots)) &&
        pthread_setspecific(s_cache_key, slots) != 0) {
        free(slots);
        slots = NULL;
    }
    return slots ? &slots[s_cache_index(user)] : NULL;
}

void perm_forget(const char *user)
{
    atomic_fetch_add(&s_forgotten[s_cache_index(user)], 1);
}

/* req->groups from the cache or Redis. 0, or -1 with 503 set. */
static int s_load_groups(http_req_t *req)
{
    gateway_t *gw = req->app;
    if (req->groups)
        return 0;
    s_slot_t *slot = s_cache_slot(req->user);
    /* Read before Redis: a forget that lands while we read makes this copy stale at once. */
    unsigned forgotten = atomic_load(&s_forgotten[s_cache_index(req->user)]);
    if (slot && slot->checked_ms && streq(slot->user, req->user) && slot->forgotten == forgotten &&
        util_mono_ms() - slot->checked_ms < gw->groups_cache_ms) {
        req->groups = json_deep_copy(slot->groups);
        return req->groups ? 0 : -1;
    }
    char key[KEYS_MAX];
    redisReply *r =
        store_command(req->store, "HGETALL %s", keys_build(key, KEYS_USER_GROUPS, req->user, NULL));
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        http_error(req, "UNAVAILABLE", "state store unreachable");
        return -1;
    }
    json_t *groups = json_object();
    for (size_t i = 0; groups && i + 1 < r->elements; i += 2)
        if (r->element[i]->type == REDIS_REPLY_STRING &&
            r->element[i + 1]->type == REDIS_REPLY_STRING)
            json_object_set_new(groups, r->element[i]->str, json_string(r->element[i + 1]->str));
    freeReplyObject(r);
    if (!groups) {
        http_error(req, "INTERNAL", "out of memory");
        return -1;
    }
    req->groups = groups;
    if (slot && gw->groups_cache_ms > 0) {
        json_decref(slot->groups);
        slot->groups = json_deep_copy(groups);
        util_strlcpy(slot->user, req->user, sizeof slot->user);
        slot->forgotten = forgotten;
        slot->checked_ms = slot->groups ? util_mono_ms() : 0;
    }
    return 0;
}

const char *perm_group_role(http_req_t *req, const char *group)
{
    const char *role =
        group && *group ? json_string_value(json_object_get(req->groups, group)) : NULL;
    return role ? role : "";
}

int perm_gate(http_req_t *req, const char *action)
{
    unsigned rule = perm_rule(action);
    if (!rule) {
        log_error(req->request_id, "route names an action the permission table lacks", "{s:s}",
                  "action", action ? action : "");
        http_error(req, "INTERNAL", "no permission rule for this operation");
        return -1;
    }
    if (s_load_groups(req) != 0)
        return -1;
    if (rule & (PERM_PUBLIC | PERM_USER | PERM_OBJECT | s_platform_bit(req->role)))
        return 0;
    http_error_details(req, "FORBIDDEN",
                       (rule & S_PLATFORM) == PERM_ADMIN ? "this operation needs the admin role"
                                                         : "this operation needs the admin or "
                                                           "operator role",
                       json_pack("{s:s}", "action", action));
    return -1;
}

int perm_allows(http_req_t *req, const char *action, const char *owner, const char *group)
{
    unsigned rule = perm_rule(action);
    if (rule & (PERM_PUBLIC | PERM_USER | s_platform_bit(req->role)))
        return 1;
    const char *role = perm_group_role(req, group);
    /* A scoped API key reaches even its user's own objects only in its groups. */
    if ((rule & PERM_OWNER) && owner && *owner && streq(owner, req->user) &&
        (!req->scoped || *role))
        return 1;
    return ((rule & PERM_MEMBER) && streq(role, "member")) ||
           ((rule & PERM_MANAGER) && streq(role, "manager")) ||
           ((rule & PERM_AUDITOR) && streq(role, "auditor"));
}
