/*  keys: the key schema. Every Redis key Berth uses is named here and built here, nowhere
    else (docs/state.md describes each one). Keys of one aggregate carry the aggregate's id in
    a hash tag, so a Redis Cluster would keep them in one slot.

    Aggregates and their hash tags:
      VM       {<vm id>}      berth:vm:{id}, berth:claim:{id}, berth:usage:{id}
      task     {<task id>}    berth:task:{id}
      request  {<request id>} berth:request:{id}
      group    {<group id>}   berth:group:{id}, berth:group-members:{id}
    Every other object key has no tag (one key per aggregate), and the indexes (berth:vms,
    berth:hosts, berth:tasks:due, ...) are one key each.

    The supported layout is one Redis primary with replicas: every script below may touch
    keys of several aggregates. What a sharded layout (Redis Cluster) would need, script by
    script (lib/lua/):
      model_tx           the event stream (berth:events) with the keys it changes, and often
                         several aggregates plus indexes (approval creates request, VMs,
                         tasks, berth:vms, berth:requests, berth:tasks:due in one step;
                         handing out a pool VM, its claim with the reservation hashes):
                         needs an outbox per slot or a stream per aggregate;
      placement_claim    the VM's claim with a host (capacity on the host), the hosts'
                         reservation hashes and berth:reservations-any (with every host when
                         an any-host reservation must be kept free), and the hosts of the
                         VM's request for a placement rule (berth:request-hosts), and the
                         task placing it (its epoch fences the claim): needs the claim to live
                         with the host, or a two-phase claim;
      reservations_set   a group with the reservation hashes of the hosts it names (every
                         host's for an any-host reservation);
                         With a network: its hash, its addresses and berth:macs too;
      placement_release  the claim, its host, that host's reservations, berth:reservations-any
                         (and the claim's network addresses with berth:macs), and the hosts
                         of the claim's request (berth:request-hosts);
      usage_apply        a batch of VMs' usage with the event stream (XACK) and
                         berth:usage:vms (split the batch by slot);
      usage_rows         usage hashes of many VMs (read only: split by slot);
      hash_rows          many hosts or instances (read only: split by slot);
      owned_hashes       a page of VMs (read only: split by slot);
      catalog_templates  the template index with every template (read only: split by slot);
      registry_register  a service's zset, its instance hash and berth:services;
      registry_prune     several services' zsets;
      taskmgr_beat       a host and berth:hosts:seen with the VMs its heartbeat reports (read
                         only for VMs);
      taskmgr_acquire    berth:tasks:due with the task hashes it takes;
      taskmgr_throttle   the three throttle keys with berth:tasks:due and berth:tasks:wake;
      groups_member      a group with its members, the user and the user's groups;
      groups_delete      a group with its members, its name and berth:groups. */
#ifndef BERTH_KEYS_H
#define BERTH_KEYS_H

#include <stddef.h>

#define KEYS_MAX 256 /* longest key built here, with its terminating NUL */

/* Keys that name one thing for the whole platform. */
#define KEYS_EVENTS      "berth:events"      /* stream: every transition's event */
#define KEYS_SCHEMA      "berth:schema"      /* string: version of this layout (lib/migrate.h) */
#define KEYS_SCHEMA_LOCK "berth:schema:lock" /* string + TTL: held while a migration runs */
#define KEYS_SERVICES    "berth:services"    /* set: service names with a registry zset */
#define KEYS_HOSTS       "berth:hosts"       /* set: host ids */
#define KEYS_IMAGES      "berth:images"      /* set: image names */
#define KEYS_TEMPLATES   "berth:templates"   /* zset: template ids */
#define KEYS_REQUESTS    "berth:requests"    /* zset: request ids by created_ms */
#define KEYS_VMS         "berth:vms"         /* zset: VM ids by created_ms */
#define KEYS_TASKS_DUE   "berth:tasks:due"   /* zset: task ids by when they need a holder */
#define KEYS_TASKS_WAKE  "berth:tasks:wake"  /* zset: tasks just queued, popped by a taskmgr */
#define KEYS_USAGE_INDEX "berth:usage:vms"   /* zset: VMs with usage by end of last interval */
#define KEYS_GROUPS      "berth:groups"      /* zset: group ids, all score 0 (paged by id) */
#define KEYS_AUDIT       "berth:audit"       /* stream: the audit trail (lib/audit.h) */
#define KEYS_HOSTS_SEEN  "berth:hosts:seen"  /* zset: host ids by when their beat's ttl ends */
/* Heavy-task throttling (services/taskmgr/throttle.h, lib/lua/taskmgr_throttle.lua): slots in
   use as "<task id>@<host>", tasks waiting for one by when they began to wait, and the host
   each waiting task waits on. */
#define KEYS_THROTTLE_RUNNING "berth:throttle:running" /* zset: "<task>@<host>" by grant time */
#define KEYS_THROTTLE_QUEUE   "berth:throttle:queue"   /* zset: waiting task ids, in line */
#define KEYS_THROTTLE_WAITING "berth:throttle:waiting" /* hash: waiting task id -> host */
/* hash: field epoch, bumped by every quota raised without an admin, so that two automatic
   allocations never both take the same free capacity (services/approval/allocations.h). */
#define KEYS_QUOTA_EPOCH "berth:quota-epoch"
/* Reservations (services/scheduler/placement.h): any-host reservations, in the same fields as
   berth:host-reservations:<host>, and the set of hosts whose reservation hash holds any. */
#define KEYS_RESERVATIONS_ANY "berth:reservations-any"
#define KEYS_RESERVED_HOSTS   "berth:reserved-hosts"
/* Users (the gateway writes them): every user name, and the names of the ACTIVE admins (the
   last one can be neither disabled, demoted nor deleted). */
#define KEYS_USERS             "berth:users"  /* zset: user names, all score 0 (paged by name) */
#define KEYS_ADMINS            "berth:admins" /* set: names of the ACTIVE admin users */
#define KEYS_USERS_SCHEMA      "berth:schema:users" /* string: version of the gateway's user records */
#define KEYS_USERS_SCHEMA_LOCK "berth:schema:users:lock" /* string + TTL: its migration's lock */
/* set: the names the user records' migration has yet to give a MAC (lib/user_record.c) */
#define KEYS_USERS_SCHEMA_TODO "berth:schema:users:todo"
/* Lease timers (taskmgr): "<kind>:<vm>" by due time (platform ms), and the claimed ones as
   "<due>|<kind>:<vm>" by claim end (real ms): lib/lua/timers_claim.lua. approval adds
   "extend:<request>" when it approves a lease extension (services/approval/extensions.h). */
#define KEYS_TIMERS         "berth:timers"
#define KEYS_TIMERS_CLAIMED "berth:timers:claimed"
/* Webhook deliveries (the meter: services/meter/webhook.c): each pending one by delivery id
   (the event's stream id) as JSON, and the ids by when they are due next (real ms; a claimed
   one's score is the end of its claim, so a meter that died mid-delivery leaves it due again). */
#define KEYS_WEBHOOK_DELIVERIES "berth:webhook:deliveries"
#define KEYS_WEBHOOK_DUE        "berth:webhook:due"
/* Rate cards (the meter: services/meter/rates.h): their ids by effective_ms. */
#define KEYS_RATES "berth:rates"
/* Budgets (the meter: services/meter/budget.h): the ids of the groups that have one. */
#define KEYS_BUDGETS "berth:budgets"
/* Networks (approval: services/approval/networks.h): their ids, the one marked default
   (hash: id), and every MAC a claim holds (hash: mac -> vm; placement_claim.lua). */
#define KEYS_NETWORKS        "berth:networks"
#define KEYS_NETWORK_DEFAULT "berth:network-default"
#define KEYS_MACS            "berth:macs"

/* Keys with an id: the kind, then keys_build(). */
typedef enum {
    KEYS_VM,            /* berth:vm:{<vm>}            hash: Vm */
    KEYS_CLAIM,         /* berth:claim:{<vm>}         hash: host vcpus ram_mb disk_gb */
    KEYS_USAGE,         /* berth:usage:{<vm>}         hash: the VM's metered intervals */
    KEYS_TASK,          /* berth:task:{<task>}        hash: Task */
    KEYS_REQUEST,       /* berth:request:{<request>}  hash: Request */
    KEYS_HOST,          /* berth:host:<host>          hash: Host */
    KEYS_IMAGE,         /* berth:image:<name>         hash: Image */
    KEYS_IMAGE_ID,      /* berth:image-id:<id>        hash: name of the image with that id */
    KEYS_TEMPLATE,      /* berth:template:<id>        hash: Template */
    KEYS_TEMPLATE_NAME, /* berth:template-name:<name> hash: id of the template so named */
    KEYS_USER,          /* berth:user:<name>          hash: a user */
    KEYS_TOKEN,         /* berth:token:<sha256 hex>   hash + TTL: a bearer token */
    KEYS_REGISTRY,      /* berth:registry:<service>   zset: instances by expiry */
    KEYS_INSTANCE,      /* berth:instance:<service>:<instance>  hash + TTL */
    KEYS_IDEM,          /* berth:idem:<owner>:<key>   hash + TTL: an Idempotency-Key's answer */
    KEYS_GROUP,         /* berth:group:{<group>}      hash: Group */
    KEYS_GROUP_MEMBERS, /* berth:group-members:{<group>}  hash: user -> role */
    KEYS_GROUP_NAME,    /* berth:group-name:<name>    hash: id of the group so named */
    /* berth:user-groups:<user>  hash: group id -> role. Approval writes it with the group's
       members (groups_member.lua); the gateway reads it into the user assertion's groups. */
    KEYS_USER_GROUPS,
    /* berth:group-children:{<group>}  set: ids of groups made inside it; an id may be stale
       (the child moved or went): the child's parent field is the truth (groups_delete.lua). */
    KEYS_GROUP_CHILDREN,
    /* berth:group-vms:{<group>}  set: ids of the VMs made in the group (approval adds each with
       its VM); groups_delete.lua refuses while one is not DISPOSED or REJECTED. */
    KEYS_GROUP_VMS,
    /* berth:login-fail-user:<name>, berth:login-fail-addr:<address>  string + TTL: failed
       sign-ins in the current window (auth_login_throttle.lua). */
    KEYS_LOGIN_FAIL_USER,
    KEYS_LOGIN_FAIL_ADDR,
    /* berth:group-usage:{<group>}  hash: vms vcpus ram_mb disk_gb the group's VMs hold (charged
       with their request, released when they leave a state that holds quota: model_tx). */
    KEYS_GROUP_USAGE,
    /* berth:group-user-usage:<group>:<user>  hash: the same for one member's VMs in the group */
    KEYS_GROUP_USER_USAGE,
    /* berth:host-reservations:<host>  hash: <group>:vcpus|ram_mb|disk_gb reserved for the group
       on the host (approval), <group>:used_vcpus|used_ram_mb|used_disk_gb of it its claims hold
       (scheduler's claim and release scripts; approval's hand-out of a pool VM, whose claim
       then takes the group: model_tx_claim_group). */
    KEYS_HOST_RESERVATIONS,
    /* berth:apikey:<id>  hash + TTL (its expiry): an API key (the HMAC of its secret, never
       the secret), written by the gateway (auth_apikey_put.lua). */
    KEYS_APIKEY,
    /* berth:user-apikeys:<user>  zset: the user's API key ids by created_ms */
    KEYS_USER_APIKEYS,
    /* berth:group-webhook:{<group>}  hash: url secret updated_ms updated_by: where the group's
       notices are POSTed and the key they are signed with (approval writes; the meter reads). */
    KEYS_GROUP_WEBHOOK,
    KEYS_RATE, /* berth:rate:<id>  hash: RateCard (the meter writes it once, never changes it) */
    /* berth:ssh-key:<user>:<name>  hash: SshKey, one of a user's SSH public keys (the gateway
       writes it with model_tx, beside the user's index). */
    KEYS_SSH_KEY,
    /* berth:user-ssh-keys:<user>  zset: the names of the user's SSH keys by created_ms */
    KEYS_USER_SSH_KEYS,
    /* berth:budget:{<group>}  hash: Budget, the group's monthly budget and the meter's last
       look at the month (month spent checked_ms blocked); the approval reads blocked. */
    KEYS_BUDGET,
    /* berth:budget-alerts:{<group>}  hash: "<YYYY-MM>:<threshold>" -> {"at_ms", "spent"} JSON:
       each threshold reached in a month, written once with its budget.threshold event. */
    KEYS_BUDGET_ALERTS,
    /* berth:reservation-log:{<group>}  hash: platform ms -> {"vcpus", "ram_mb", "disk_gb"}
       JSON: the group's reservations in all from then on, written by reservations_set.lua with
       the change (and once by the store migration to version 2); the meter charges a
       reservation-based group from it. */
    KEYS_RESERVATION_LOG,
    /* berth:charge-closed:{<group>}  hash: "<YYYY-MM>" -> the month's chargeback lines as
       closed (JSON), "<YYYY-MM>:booked" -> what its lines and adjustments come to per VM and
       kind, "<YYYY-MM>:version" (services/meter/ledger.c). */
    KEYS_CHARGE_CLOSED,
    /* berth:charge-adjust:{<group>}  hash: "<at_ms>|<YYYY-MM>|<vm>|<kind>" -> {"amount",
       "owner", "template"}: a closed month's late charges, booked at at_ms. */
    KEYS_CHARGE_ADJUST,
    KEYS_NETWORK,      /* berth:network:<id>         hash: Network (approval) */
    KEYS_NETWORK_NAME, /* berth:network-name:<name>  hash: id of the network so named */
    /* berth:network-addresses:<id>  hash: ip -> vm, the addresses the network's claims hold
       (written only by placement_claim.lua and placement_release.lua). */
    KEYS_NETWORK_ADDRESSES,
    /* berth:image-staged:<model id>  zset: names of the staged images derived from the model
       image, by created_ms (the stager writes it with each staged image). */
    KEYS_IMAGE_STAGED,
    /* berth:request-hosts:{<request>}  hash: vm -> host, where each claim of a request with a
       placement rule (affinity, anti-affinity) is; placement_claim.lua checks the rule against
       it and records the VM in the claim's step, placement_release.lua forgets the VM with its
       claim (the hash goes with the request's last claim). */
    KEYS_REQUEST_HOSTS,
    /* Instant deploy (services/approval/pool.c): berth:pool:<template>  zset: the VMs of the
       template's pool, building (POOLING) or ready (POOLED), by created_ms; approval adds one
       with its POOL_BUILD task, and takes it out when it hands it to a request, the taskmgr
       when its build failed or it was built beyond a size lowered meanwhile (surplus). */
    KEYS_POOL,
    /* berth:pool-ready:<template>  zset: the pool's ready (POOLED) VMs by pooled_ms: the
       taskmgr adds one when its build is suspended to disk, approval hands out the oldest. */
    KEYS_POOL_READY,
    KEYS_KIND_COUNT
} keys_kind_t;

/* The key of kind for id (and id2 for the two-part kinds KEYS_INSTANCE, KEYS_IDEM,
   KEYS_GROUP_USER_USAGE and KEYS_SSH_KEY, NULL otherwise) into buf[KEYS_MAX]; returns buf. Ids are
   checked for length by whoever accepts them; one that would not fit is cut, never overflows. */
const char *keys_build(char *buf, keys_kind_t kind, const char *id, const char *id2);

/* Shorthands for the keys built most often. */
const char *keys_vm(char *buf, const char *vm);
const char *keys_task(char *buf, const char *task);
const char *keys_host(char *buf, const char *host);

/* The kind whose name (the word after "berth:", e.g. "vm", "template-name") is name;
   -1 when there is none. */
int keys_kind(const char *name);

/* The name of kind ("vm", "template-name", ...). */
const char *keys_kind_name(keys_kind_t kind);

#endif
