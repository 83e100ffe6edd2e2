/*  gateway: shared declarations of the gateway's modules: the HTTP edge (http.c), auth and
    users (auth.c), helpers every REST handler uses (rest.c), the JSON views of resources
    (views.c) and the route handlers (health.c, catalog.c, requests.c, vms.c). */
#ifndef BERTH_GATEWAY_H
#define BERTH_GATEWAY_H

#include "assertion.h"
#include "audit.h"
#include "calls.h"
#include "events.h"
#include "http.h"
#include "limit.h"
#include "model.h"
#include "permissions.h"
#include "web.h"

/* Settings every handler reads; filled once at start, read-only afterwards (shared by the
   worker threads without locks). */
typedef struct {
    int call_timeout_ms;         /* deadline of one bus call made for an HTTP request */
    int calls_per_service;       /* bus calls in flight to one service; beyond: 503 at once */
    calls_t *calls;              /* the bus actor every HTTP-initiated call goes through */
    int64_t token_ttl_ms;        /* lifetime of a bearer token */
    int64_t token_cache_ms;      /* a checked token is trusted this long per thread (0: off) */
    int64_t groups_cache_ms;     /* a user's group roles are reused this long per thread */
    int64_t catalog_cache_ms;    /* the rendered template catalog is reused this long (0: off) */
    int64_t host_down_ms;        /* a host not seen for this long is DOWN */
    int64_t host_cache_ms;       /* a host's liveness fields are reused this long (0: off) */
    int list_default;            /* page size when ?limit is absent */
    int list_max;                /* largest ?limit */
    int scan_max;                /* most VM ids one list call may look at while filtering */
    int password_min;            /* shortest password accepted */
    int password_max;            /* longest password accepted */
    int64_t usage_window_max_ms; /* widest ?from..?to of a usage query */
    int login_user_max;          /* failed sign-ins of a user name per window, then 429 */
    int login_address_max;       /* failed sign-ins from a client address per window */
    int64_t login_window_ms;     /* the window those two are counted in */
    char *dummy_hash;            /* Argon2id hash verified for unknown users (equal timing) */
    assertion_t *signer;         /* signs who each bus call acts for (assertion.key) */
    unsigned char token_key[32]; /* HMAC key of token records (secrets_dir/token.secret) */
    unsigned char user_key[32];  /* MAC key of user records (secrets_dir/user.secret) */
    int apikey_days_default;     /* an API key's lifetime when expires_in_days is absent */
    int apikey_days_max;         /* longest expires_in_days accepted */
    int apikeys_per_user_max;    /* API keys one user holds at most */
    int ssh_keys_per_user_max;   /* SSH keys one user holds at most */
    audit_log_t *audit;          /* the audit trail's writer (NULL: not recording) */
    struct _events_t *events;    /* the live event streams (events.c) */
    web_t *web;                  /* the portal's files (NULL: no portal served) */
    int tls;                     /* HTTPS: session cookies are Secure */
    int64_t upload_max_bytes;    /* largest image file uploaded (image_upload_max_bytes) */
    int64_t upload_chunk_bytes;  /* an upload's chunks to the stager (image_upload_chunk_bytes) */
} gateway_t;

/* ---- trail.c: the audit trail ---- */

/* The action a request is recorded under: its route's permission action ("vm.dispose"), or
   "METHOD /path" when no route matched. Borrowed from the route table or written to buf. */
const char *trail_action(const http_req_t *req, char *buf, size_t size);
/* http_options_t.done: queue the audit record of a mutating call (never blocks). */
void trail_done(http_req_t *req);
void trail_list(http_req_t *req); /* GET /v1/audit */

/* ---- health.c ---- */
void health_live(http_req_t *req);
void health_ready(http_req_t *req); /* from the last refresh: no Redis, no bus */
void health_platform(http_req_t *req);
/* Read the registry for /readyz (service loop, every HEALTH_REFRESH_MS); a read older than
   HEALTH_STALE_MS means the state store is unreachable. */
#define HEALTH_REFRESH_MS 250
#define HEALTH_STALE_MS   2000
void health_refresh(store_t *store);
void health_cleanup(void);

/* ---- auth.c: users, passwords, bearer tokens ---- */

/* Initialise libsodium and the gateway's auth state. -1 (logged) on failure. */
int auth_init(gateway_t *gw, const char *secrets_dir);
void auth_cleanup(gateway_t *gw);
/* Make sure the configured admin exists with the configured password (the operator's config
   wins over what Redis holds). 0 when done, -1 (logged) when Redis failed: try again. */
int auth_bootstrap(gateway_t *gw, store_t *store, const char *user, const char *password);
/* Is name a valid user name (what may appear in berth:user:<name>)? */
int auth_username_ok(const char *name);
/* The portal's session: the token in an HttpOnly, SameSite=Strict cookie, and the anti-CSRF
   token (an HMAC of it) that every state-changing call with the cookie carries in the
   X-CSRF-Token header; the page reads it from a second cookie, berth_csrf. */
#define AUTH_SESSION_COOKIE "berth_session"
#define AUTH_CSRF_COOKIE    "berth_csrf"
#define AUTH_CSRF_HEADER    "X-CSRF-Token"
/* http_auth_fn: the bearer token of the request (Authorization, else the session cookie)
   -> req->user, req->role. */
int auth_authenticate(http_req_t *req);
void auth_login(http_req_t *req);       /* POST /v1/auth/tokens */
void auth_create_user(http_req_t *req); /* POST /v1/users (admin) */
void auth_logout(http_req_t *req);      /* DELETE /v1/auth/tokens/current */
/* The Redis key of the request's bearer token record into buf: what a long-lived event
   stream checks again to end when the token is revoked or expires. 0, or -1 without one. */
int auth_token_key(http_req_t *req, char *buf, size_t size);
void auth_update_user(http_req_t *req);     /* PATCH /v1/users/{name}: admin, or self (profile) */
void auth_get_user(http_req_t *req);        /* GET /v1/users/{name}: admin, or self */
void auth_list_users(http_req_t *req);      /* GET /v1/users (admin) */
void auth_delete_user(http_req_t *req);     /* DELETE /v1/users/{name} (admin) */
void auth_change_password(http_req_t *req); /* POST /v1/auth/password: one's own */
/* Does user name exist, ACTIVE, with a record that passes its MAC? 1 (role set), 0, or -1
   with 503 set. */
int auth_user_usable(http_req_t *req, const char *name, char role[HTTP_ROLE_MAX]);

/* ---- apikeys.c: API keys (Authorization: Bearer bk_...) ---- */

/* Does the bearer text have the shape of an API key (not a token)? */
int apikey_is(const char *text);
/* auth_authenticate for an API key: req->user, req->role and, for a scoped key, req->groups
   (the user's roles in the key's groups only). 0, or -1 with 401 or 503 set. */
int apikey_authenticate(http_req_t *req, const char *text);
void apikey_create(http_req_t *req); /* POST /v1/auth/keys */
void apikey_list(http_req_t *req);   /* GET /v1/auth/keys: one's own */
void apikey_revoke(http_req_t *req); /* DELETE /v1/auth/keys/{id}: one's own (admin: any) */

/* ---- sshkeys.c: users' SSH public keys ---- */
void sshkeys_create(http_req_t *req); /* POST /v1/keys */
void sshkeys_list(http_req_t *req);   /* GET /v1/keys: one's own */
void sshkeys_get(http_req_t *req);    /* GET /v1/keys/{name}: one's own */
void sshkeys_delete(http_req_t *req); /* DELETE /v1/keys/{name}: one's own */
/* The caller's keys a request names (names: a JSON list of key names, NULL = none) into
   *keys_p (n in *n_p; free with sshkeys_free). 0, or -1 with 400 naming ssh_keys (not a list,
   too many, a name twice, a name the caller has no key for) or 503 set. */
int sshkeys_resolve(http_req_t *req, const json_t *names, Berth__SshKey ***keys_p, size_t *n_p);
void sshkeys_free(Berth__SshKey **keys, size_t n);
/* Delete every SSH key of user (just deleted: a user made later with the same name must not
   find them). 0, or -1 when Redis failed. */
int sshkeys_forget(store_t *store, const char *user, const char *request_id);
/* A VM's or request's keys as shown: [{name, fingerprint}]. */
json_t *sshkeys_view_refs(Berth__SshKey *const *keys, size_t n);

/* ---- rest.c: helpers of every REST handler ---- */

/* What a handler does with a service's answer: answer is the reply's body as the type the
   handler named (borrowed: freed after then returns); then sets the response. */
typedef void(rest_then_fn)(http_req_t *req, ProtobufCMessage *answer);

/* Call service over the bus without waiting: the handler's last act. The request is parked
   (its worker thread serves others) and, when the answer comes, then runs with it; when the
   service answers with an error, or not before the deadline, or too many calls to it are in
   flight already (then at once), the request is answered without then: the service's error
   mapped to an HTTP status, or 503 UNAVAILABLE with details.service and Retry-After. msg is
   copied: it may live on the handler's stack. */
void rest_call(http_req_t *req, const char *service, const ProtobufCMessage *msg,
               const ProtobufCMessageDescriptor *answer, rest_then_fn *then);
/* The assertion hook of rest_call: when msg has an `assertion` field, sign who req acts for
   (user, role, expiry just past the call's deadline, request id, msg's type) into sa and
   point the field at it; the caller clears it (rest_unassert) once msg is sent. -1 with a
   500 set when it cannot be signed. */
int rest_assert(http_req_t *req, ProtobufCMessage *msg, assertion_signed_t *sa);
void rest_unassert(ProtobufCMessage *msg);
/* Load the resource kind/id from Redis without answering: 0 and *out, MODEL_NOT_FOUND (absent,
   or id malformed: checked before Redis is asked), or another model_load error. */
int rest_find(http_req_t *req, const ProtobufCMessageDescriptor *desc, const char *kind,
              const char *id, ProtobufCMessage **out);
/* Load the resource kind/id from Redis. 0 and *out, or -1 with 404 (absent, or id malformed:
   checked before Redis is asked) or 503 (Redis unreachable) set. */
int rest_load(http_req_t *req, const ProtobufCMessageDescriptor *desc, const char *kind,
              const char *id, ProtobufCMessage **out);
/* HGETALL of n keys in one Redis round trip: an array of n replies, each the hash (empty when
   the key is absent) or, when owner is non-NULL, the integer 0 for a hash owned by someone
   else and in none of the n_groups groups. Caller frees. NULL with 503 set when Redis failed. */
/* The group id a ?group= filter names (an id, or a name) into id; "" when no group has that
   name (the list is then empty: a filter never tells whether a group exists). 0, or -1 with
   503 set. */
int rest_group_id(http_req_t *req, const char *ref, char id[UTIL_ID_LEN]);
redisReply *rest_hashes(http_req_t *req, size_t n, const char *const *keys, const char *owner,
                        const char *const *groups, size_t n_groups);
/* Is id something that may name a resource (checked before it reaches a Redis key)? */
int rest_id_ok(const char *id);
/* Where a page of the zset index starts: 0 without ?marker, else just after the marker's
   position. 0, or -1 with the answer set (400 naming marker when it is no id or names no
   `what`; 503 when Redis failed). */
int rest_marker_pos(http_req_t *req, const char *index, const char *what, int64_t *pos);
/* The next_marker of a page taken from the zset index by position: when the page is full
   (taken >= limit), last_taken if something follows its position, else null; when the scan
   budget ran out first (!at_end), last_seen, where the next page goes on looking; else null
   (the end). A new reference. */
json_t *rest_next_marker(http_req_t *req, const char *index, int64_t taken, int64_t limit,
                         const char *last_taken, int64_t last_taken_pos, int at_end,
                         const char *last_seen);
/* Is the caller an admin? */
int rest_is_admin(http_req_t *req);

/* Body validation: each returns 0 when the field is present and valid (*out set), 1 when it
   is absent and optional, -1 with a 400 naming the field set. */
int rest_body(http_req_t *req, const char *const allowed[]);
int rest_str(http_req_t *req, const char *field, int required, size_t max, const char **out);
int rest_int(http_req_t *req, const char *field, int required, int64_t min, int64_t max,
             int64_t *out);
int rest_bool(http_req_t *req, const char *field, int required, int *out);

/* Time: unix ms <-> ISO 8601 UTC ("2024-05-01T12:00:00.123Z"). */
#define REST_TIME_MAX 32
void rest_iso(int64_t ms, char out[REST_TIME_MAX]);
json_t *rest_time(int64_t ms); /* ISO string, or null when ms is 0 */
/* ISO 8601 (date, or date-time with Z or +hh:mm) or unix seconds -> unix ms. 0 or -1. */
int rest_parse_time(const char *text, int64_t *ms);

/* ---- views.c: resources as the API shows them ---- */

/* A JSON string, or null when s is NULL or empty. */
json_t *view_str(const char *s);
json_t *view_resources(const Berth__Resources *r);
json_t *view_template(const Berth__Template *t);
/* host_down: the VM's host has stopped reporting, so its power state is unknown. */
json_t *view_vm(const Berth__Vm *vm, int host_down);
json_t *view_task(const Berth__Task *task);
/* A host from its raw Redis hash (HGETALL reply); with_domains adds the domain list. */
json_t *view_host(const redisReply *hash, int64_t now_ms, int64_t down_ms, int with_domains);
/* Is the host hash's host DOWN (stale heartbeat or recorded so)? */
int view_host_down(const redisReply *hash, int64_t now_ms, int64_t down_ms);
/* The same from the two fields it depends on (state may be NULL; last_seen_ms 0 = never). */
int view_host_down_fields(const char *state, int64_t last_seen_ms, int64_t now_ms, int64_t down_ms);

/* ---- catalog.c: templates and hosts ---- */
void catalog_list_templates(http_req_t *req);  /* GET /v1/templates */
void catalog_create_template(http_req_t *req); /* POST /v1/templates (admin) */
void catalog_set_pool(http_req_t *req);        /* PUT /v1/templates/{id}/pool (admin) */
void catalog_get_pool(http_req_t *req);        /* GET /v1/templates/{id}/pool (admin, operator) */
/* The template catalog changed (a template.* event, or a template created here): the next
   listing reads it again. Any thread. */
void catalog_forget(void);
void catalog_list_hosts(http_req_t *req); /* GET /v1/hosts */
void catalog_get_host(http_req_t *req);   /* GET /v1/hosts/{id} */
/* POST /v1/hosts/{id}/maintenance {"enabled": bool}: DISABLED (no new placements) or back. */
void catalog_host_maintenance(http_req_t *req);

/* ---- requests.c ---- */
void requests_create(http_req_t *req);  /* POST /v1/requests */
void requests_get(http_req_t *req);     /* GET /v1/requests/{id} */
void requests_list(http_req_t *req);    /* GET /v1/requests (?state=PENDING_APPROVAL: inbox) */
void requests_approve(http_req_t *req); /* POST /v1/requests/{id}/approve (admin) */
void requests_reject(http_req_t *req);  /* POST /v1/requests/{id}/reject (admin) */
void requests_onboard(http_req_t *req); /* POST /v1/onboarding: a new group, for an admin */
/* POST /v1/groups/{id}/allocations: more quota for group (its id, checked by the caller). */
void requests_allocate(http_req_t *req, const char *group);
/* An extension of vm's lease by days beyond its lease policy (beyond: why, taskmgr's word):
   a request of kind extension, answered 202 with it and its Location. */
void requests_extend(http_req_t *req, const char *vm, int days, const char *beyond);

/* ---- charge.c: rate cards and chargeback (the meter's) ---- */
void charge_create_rate(http_req_t *req);  /* POST /v1/rates */
void charge_list_rates(http_req_t *req);   /* GET /v1/rates */
void charge_get_rate(http_req_t *req);     /* GET /v1/rates/{id} */
void charge_report_get(http_req_t *req);   /* GET /v1/chargeback */
void charge_vm_get(http_req_t *req);       /* GET /v1/vms/{id}/charges */
void charge_budget_get(http_req_t *req);   /* GET /v1/groups/{id}/budget */
void charge_budget_set(http_req_t *req);   /* PUT /v1/groups/{id}/budget */
void charge_budget_clear(http_req_t *req); /* DELETE /v1/groups/{id}/budget */

/* ---- networks.c: networks VMs get addresses on (approval) ---- */
json_t *view_network(const Berth__Network *n);
json_t *view_vm_network(const Berth__VmNetwork *n); /* null without a network */
json_t *view_vm_networks(const Berth__Vm *vm);      /* every network of the VM, in order */
/* The body's array of strings `field` (at most max items of 1 to item_max bytes) into items
   (borrowed from the body): 0 and *n (0 when absent), or -1 with a 400 naming the field or
   the item (field[i]). */
int networks_string_array(http_req_t *req, const char *field, size_t max, size_t item_max,
                          char **items, size_t *n);
void networks_create(http_req_t *req); /* POST /v1/networks (admins) */
void networks_list(http_req_t *req);   /* GET /v1/networks */
void networks_get(http_req_t *req);    /* GET /v1/networks/{id}: id or name */
void networks_delete(http_req_t *req); /* DELETE /v1/networks/{id} (admins) */

/* ---- images.c: the stager's image store ---- */
json_t *view_image(const Berth__Image *im);
void images_import(http_req_t *req); /* POST /v1/images (admins, operators) */
void images_list(http_req_t *req);   /* GET /v1/images */
void images_get(http_req_t *req);    /* GET /v1/images/{id}: id or name */
void images_delete(http_req_t *req); /* DELETE /v1/images/{id} (admins, operators) */
void images_stage(http_req_t *req);  /* POST /v1/images/{id}/stage (admins, operators) */
/* POST /v1/images with an application/octet-stream body (http_stream_t): the image file,
   streamed to the stager in chunks, its metadata in query parameters. */
void images_upload_begin(http_req_t *req);
size_t images_upload_data(http_req_t *req, const char *data, size_t size);
void images_upload_end(http_req_t *req);
void images_upload_release(http_req_t *req, int finished);
/* The body's "applications": [{name, version}] into items/ptrs (LIMIT_IMAGE_APPS_MAX each;
   strings borrowed from the body). 0 and *n, or -1 with a 400 naming the field sent. */
int images_applications(http_req_t *req, Berth__ImageApp *items, Berth__ImageApp **ptrs, size_t *n);

/* ---- vms.c: VMs, tasks, usage ---- */
void vms_list(http_req_t *req);         /* GET /v1/vms */
void vms_get(http_req_t *req);          /* GET /v1/vms/{id} */
void vms_dispose(http_req_t *req);      /* DELETE /v1/vms/{id} */
void vms_action(http_req_t *req);       /* POST /v1/vms/{id}/actions */
void vms_capture(http_req_t *req);      /* POST /v1/vms/{id}/capture */
void vms_extend_lease(http_req_t *req); /* POST /v1/vms/{id}/lease */
void vms_get_task(http_req_t *req);     /* GET /v1/tasks/{id} */
/* A QUEUED task's place in line for a heavy slot into task->queue_position (taskmgr's
   berth:throttle:queue); left 0 when it is not in line. */
void vms_queue_position(http_req_t *req, Berth__Task *task);
void vms_task_abort(http_req_t *req);      /* POST /v1/tasks/{id}/abort */
void vms_task_retry(http_req_t *req);      /* POST /v1/tasks/{id}/retry */
void vms_task_force_fail(http_req_t *req); /* POST /v1/tasks/{id}/force-fail */
void vms_usage(http_req_t *req);           /* GET /v1/usage */
/* May the caller see the VM (vm.get: owner, its group's manager or auditor, admin,
   operator)? The same answers who may see its tasks. */
int vms_may_see(http_req_t *req, const Berth__Vm *vm);
/* The VM id ref names (an id, or the name of a VM the caller may see that is not DISPOSED)
   into id. 0, or -1 with 404 (none), 409 (several: details.candidates, their ids
   comma-separated) or 503 set. */
int vms_resolve(http_req_t *req, const char *ref, char id[UTIL_ID_LEN]);
/* Is the VM's host DOWN? (0 when it has no host or the host is unknown.) -1 on Redis error. */
int vms_host_down(http_req_t *req, const char *host);

/* ---- groups.c: groups and memberships (approval owns them) ---- */
void groups_create(http_req_t *req);        /* POST /v1/groups */
void groups_list(http_req_t *req);          /* GET /v1/groups */
void groups_get(http_req_t *req);           /* GET /v1/groups/{id} */
void groups_update(http_req_t *req);        /* PATCH /v1/groups/{id} */
void groups_delete(http_req_t *req);        /* DELETE /v1/groups/{id} */
void groups_list_members(http_req_t *req);  /* GET /v1/groups/{id}/members */
void groups_add_member(http_req_t *req);    /* POST /v1/groups/{id}/members */
void groups_set_role(http_req_t *req);      /* PUT /v1/groups/{id}/members/{user} */
void groups_remove_member(http_req_t *req); /* DELETE /v1/groups/{id}/members/{user} */
void groups_allocate(http_req_t *req);      /* POST /v1/groups/{id}/allocations */
void groups_capacity(http_req_t *req);      /* GET /v1/groups/{id}/capacity */
/* Reservations as JSON: host (null = any host), vcpus, ram_mb, disk_gb and used (what the
   group's claims hold of it; null where not read). NULL if out of memory. */
json_t *groups_reservations_view(Berth__Reservation *const *items, size_t n);
/* The body's "reservations" array into items/ptrs (at most LIMIT_RESERVATIONS_MAX; strings
   borrowed from the body): 0 and *n, or -1 with a 400 naming the field sent. */
int groups_parse_reservations(http_req_t *req, Berth__Reservation *items, Berth__Reservation **ptrs,
                              size_t *n);
/* The group id ref names (an id, or a name) into id. 0, or -1 with 404 (no such group, or
   a ref that cannot name one) or 503 set. */
int groups_resolve(http_req_t *req, const char *ref, char id[UTIL_ID_LEN]);
/* The group ref names into id, when the caller may do action on it: 0, or -1 with the answer
   sent: 404 for a group the caller may not read (as for none), 403 (forbidden, and the action
   in details) for one they may read but not do action on, or 503. */
int groups_authorize(http_req_t *req, const char *ref, const char *action, const char *forbidden,
                     char id[UTIL_ID_LEN]);
/* PUT /v1/groups/{id}/reservations (reserve) */
void groups_set_reservations(http_req_t *req);
void groups_set_webhook(http_req_t *req);   /* PUT /v1/groups/{id}/webhook */
void groups_clear_webhook(http_req_t *req); /* DELETE /v1/groups/{id}/webhook */

#endif
