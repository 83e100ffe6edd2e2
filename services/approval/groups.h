/*  groups: groups and memberships (proto Group, Membership), written by approval only.
    A group is the hash berth:group:{<id>}, its members the hash berth:group-members:{<id>}
    (user -> role), its name the hash berth:group-name:<name> (field id), and every group id
    is in the zset berth:groups. Each member also has berth:user-groups:<user> (group ->
    role), which the gateway reads into the user assertion. Creating and updating go through
    model_tx; membership changes and deleting through lib/lua/groups_member.lua and
    groups_delete.lua, so the two member hashes never disagree. The bus handlers here are
    entries of approval's handler table (approval.c). */
#ifndef BERTH_APPROVAL_GROUPS_H
#define BERTH_APPROVAL_GROUPS_H

#include "bus_server.h"
#include "fault.h"
#include "limit.h"
#include "model.h"
#include "policy.h"
#include "store.h"
#include "util.h"

/* Limits on groups: lib/limit.h (stated in docs/openapi.yaml too). */
#define GROUPS_NAME_MAX        LIMIT_GROUP_NAME_MAX
#define GROUPS_TEXT_MAX        LIMIT_GROUP_TEXT_MAX
#define GROUPS_COST_CENTRE_MAX LIMIT_GROUP_COST_CENTRE_MAX
#define GROUPS_LEASE_DAYS_MAX  36500  /* max_lease_days; lease_notice_ms up to as many days */
#define GROUPS_EXTENSIONS_MAX  100000 /* max_extensions */
#define GROUPS_MEMBERS_MAX     LIMIT_GROUP_MEMBERS_MAX
#define GROUPS_PAGE_MAX        1000 /* groups in one ListGroups page */
#define GROUPS_PAGE_DEFAULT    100  /* when ListGroups asks for none */

/* Create group (name, cost_centre, description, parent, quota) as actor. 0 and *out_p (free
   with protobuf_c_message_free_unpacked), or -1: BAD_REQUEST with details.field, NOT_FOUND
   (parent), CONFLICT (the name is taken). */
int groups_create(store_t *store, const Berth__Group *group, const char *actor,
                  Berth__Group **out_p, fault_t *fault);

/* Is group (name, cost_centre, description, parent, quota, ...) fit to be created? 0, or -1
   with BAD_REQUEST naming the field. Does not look at the store. */
int groups_check_new(const Berth__Group *group, fault_t *fault);

/* g as a new group made from group's fields, with a new id (written into id, which g points
   to), created now at version 1; g's other pointers are group's. */
void groups_init_new(Berth__Group *g, const Berth__Group *group, char id[UTIL_ID_LEN]);

/* Add to tx the creation of g (from groups_init_new): its name must still be free and its
   parent still there. What groups_create commits, for callers that create a group with more
   in one step (an approved onboarding, onboarding.c). */
void groups_tx_create(model_tx_t *tx, const Berth__Group *g, const char *actor);

/* Add to tx: user (who must still exist) becomes a manager of group, which tx creates or
   which has no membership for user (both member hashes, and the group.member event). */
void groups_tx_add_manager(model_tx_t *tx, const char *group, const char *user, const char *actor);

/* Is name a group's? 0 no, 1 yes (fault: CONFLICT naming the field name), -1 (Redis). */
int groups_name_taken(store_t *store, const char *name, fault_t *fault);

/* The group with id: 0 and *out_p, or -1 (NOT_FOUND, BAD_REQUEST for a malformed id). */
int groups_get(store_t *store, const char *id, Berth__Group **out_p, fault_t *fault);

/* What the group's live VMs hold now (berth:group-usage:{id}; zero where nothing was charged)
   into *used: the `used` of a GetGroup answer. 0, or -1 (Redis). */
int groups_usage(store_t *store, const char *id, Berth__Quota *used, fault_t *fault);

/* The group named by ref, an id or a name: 0 and *out_p, or -1 (NOT_FOUND, BAD_REQUEST when ref
   is neither). */
int groups_find(store_t *store, const char *ref, Berth__Group **out_p, fault_t *fault);

/* The group a user in no group makes requests in (GROUPS_DEFAULT): created with no quota when
   absent. 0 when it exists, -1 (Redis) to try again later. */
#define GROUPS_DEFAULT "default"
int groups_ensure_default(store_t *store, fault_t *fault);

/* user's role in group into role[16] ("" when not a member). 0 or -1 (Redis). */
int groups_role(store_t *store, const char *group, const char *user, char role[16], fault_t *fault);

/* A page of groups by id after marker ("" or NULL: from the first): every group when user is
   NULL, else the groups user belongs to. limit 0 = GROUPS_PAGE_DEFAULT. */
int groups_list(store_t *store, const char *user, int limit, const char *marker,
                Berth__GroupList **list_p, fault_t *fault);
void groups_list_destroy(Berth__GroupList **list_p);

/* Change fields (cost_centre, description, parent, quota) of group id to update's values, if
   its version still is version (0 = any). 0 and *out_p, or -1 (CONFLICT when it changed). */
int groups_update(store_t *store, const char *id, const Berth__Group *update, char **fields,
                  size_t n_fields, int64_t version, const char *actor, Berth__Group **out_p,
                  fault_t *fault);

/* Delete group id (refused with CONFLICT while it has members, groups inside it or VMs that
   are neither DISPOSED nor REJECTED). 0 and *out_p (as it was). */
int groups_delete(store_t *store, const char *id, const char *actor, Berth__Group **out_p,
                  fault_t *fault);

/* op "add" (user must exist; CONFLICT if already a member), "set" or "remove" (NOT_FOUND if
   not a member). role: member, manager or auditor (ignored by remove). 0 or -1. */
int groups_member(store_t *store, const char *op, const char *group, const char *user,
                  const char *role, const char *actor, fault_t *fault);

/* The members of group, by user name. 0 and *list_p, or -1 (NOT_FOUND). */
int groups_members(store_t *store, const char *group, Berth__MemberList **list_p, fault_t *fault);
void groups_members_destroy(Berth__MemberList **list_p);

/* ---- reservations (reserve) ----
   Replace group id's reservations with list (n of them; none removes all), if its version
   still is version (0 = any), as actor. Each names a host by id or name ("" = any host) and
   vcpus / ram_mb / disk_gb (>= 0, not all 0, within lib/limit.h); one per host. What grows
   must be free and unreserved now (checked with the policy's ratios, in the same Lua step as
   the write, lib/lua/reservations_set.lua): else CONFLICT with details host, resource, asked,
   available. The per-host hashes the scheduler's claim reads (berth:host-reservations:<host>,
   berth:reservations-any) are written in that step. 0 and *out_p (with used filled), or -1
   (BAD_REQUEST naming the field, NOT_FOUND, CONFLICT). The one write path of reservations:
   an admin's PUT and an approved allocation both call it. */
int groups_set_reservations(store_t *store, const policy_t *policy, const char *id,
                            Berth__Reservation *const *list, size_t n, int64_t version,
                            const char *actor, Berth__Group **out_p, fault_t *fault);

/* Does g offer template t to its members (its templates name it, or it names none)? */
int groups_offers(const Berth__Group *g, const Berth__Template *t);

/* The reservations, checked field by field (BAD_REQUEST naming it). */
int groups_check_reservations(Berth__Reservation *const *list, size_t n, fault_t *fault);
/* webhook: set group id's webhook to url (util_webhook_check) signed with secret (""
   keeps the one set; one must be set), or remove it (clear), as actor, in one step with a
   group.webhook event. The secret is stored in berth:group-webhook:{<id>} for the meter,
   which signs with it, and never read back out. 0 and *out_p (webhook filled), or -1
   (BAD_REQUEST naming url or secret, NOT_FOUND). */
int groups_set_webhook(store_t *store, const char *id, const char *url, const char *secret,
                       int clear, const char *actor, Berth__Group **out_p, fault_t *fault);

/* g->webhook from berth:group-webhook:{<id>} (NULL when none is set): free it with
   groups_webhook_free before g. 0, or -1 (Redis). */
int groups_webhook_read(store_t *store, Berth__Group *g, fault_t *fault);
void groups_webhook_free(Berth__Group *g);

/* Fill each of g's reservations' `used` (what the group's claims hold of it now). 0, or -1
   (Redis). */
int groups_reservations_used(store_t *store, Berth__Group *g, fault_t *fault);

/* What group id may still use (GroupCapacity in proto/berth.proto says what each figure
   is), with policy's overcommit ratios and host timeout, the scheduler's. 0 and *out_p (free
   with groups_capacity_destroy), or -1 (NOT_FOUND, Redis). */
int groups_capacity(store_t *store, const policy_t *policy, const char *id,
                    Berth__GroupCapacity **out_p, fault_t *fault);
void groups_capacity_destroy(Berth__GroupCapacity **c_p);

/* Bus handlers (arg: the approval_t), listed in approval_handlers. */
void groups_on_create(bus_request_t *request, void *arg);
void groups_on_get(bus_request_t *request, void *arg);
void groups_on_list(bus_request_t *request, void *arg);
void groups_on_update(bus_request_t *request, void *arg);
void groups_on_set_reservations(bus_request_t *request, void *arg);
void groups_on_capacity(bus_request_t *request, void *arg);
void groups_on_set_webhook(bus_request_t *request, void *arg);
void groups_on_delete(bus_request_t *request, void *arg);
void groups_on_add_member(bus_request_t *request, void *arg);
void groups_on_set_role(bus_request_t *request, void *arg);
void groups_on_remove_member(bus_request_t *request, void *arg);
void groups_on_list_members(bus_request_t *request, void *arg);

#endif
