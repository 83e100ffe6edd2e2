/*  placement: filters, weigher, claim.

    Decisions are made on an in-memory copy of every host's capacity and usage, reloaded
    when older than refresh_ms (the host ids, then one Lua call for every host's row: two
    round trips however many hosts there are). The copy may be stale; that is safe because
    it only orders the candidates: the claim script re-checks the host's state and free
    capacity from Redis and takes the claim in the same atomic step. A claim that loses a
    race hands back the host's current row, the copy is corrected and the next candidate is
    tried.

    A decision does not filter every host. The copy keeps its hosts in the weigher's RAM order
    (most usable RAM left first for spread, least for pack; equal ones in id order): sorted at
    each load, and a host whose RAM use changes (a host.usage event, a claim's answer) moves to
    its place by binary searches and one memmove. A decision filters the caller's preferred
    hosts and the hosts where the VM's group holds an unclaimed reservation (the weigher puts
    those first; they are few and known from the load), then walks the order, filtering as it
    goes, and stops once it holds the K candidates a decision can use (max_attempts +
    max_alternates + 1) and, when the VM's image is cached somewhere, the hosts tied with the
    K-th that cache it (the weigher's next step). Every host it did not reach weighs less than
    K candidates in hand, so the choice is the one a scan of every host makes; the work is K
    filters plus the reserved and preferred hosts, however many hosts there are. Only a
    decision that ends in "no valid host" (every host refused, or every claim tried lost)
    filters the rest, for its counts.

    A "no valid host" answer is never given from stale data: when the cached copy refuses,
    it is reloaded and the decision is made again before saying no. The answer counts the
    hosts each filter removed (the first filter that rejects a host counts it), so an
    operator can tell "everything is down" from "nothing has the RAM".

    Claims: berth:claim:{<vm>} = host vcpus ram_mb disk_gb, and the host's used_* fields are
    the sums of its claims. Only lib/lua/placement_claim.lua and placement_release.lua write
    either, always together, and in the same step bump the host's version and append a
    host.usage event (docs/state.md), as model_tx does for every other state write: a claim
    checks capacity and writes in one step, which a model_tx cannot express, so these
    scripts keep that step and its bookkeeping.

    Reservations (a group's capacity on a named host, or on any host; approval writes them,
    services/approval/groups.h). Each host's reservation hash holds, per group, what is
    reserved and what of it the group's claims hold; the difference is the group's unclaimed
    reservation there, held for it. A claim takes from its group's reservation on the host
    first, then from its group's any-host reservation, then from unreserved capacity (the
    claim records each part, and a release gives each back, so a released reservation is
    available again at once). Rules, checked by the claim script in the claim's own step:
      - on a host: used + want + (every group's unclaimed reservation there) - (what the claim
        takes of its own) <= capacity * ratio; other groups never take reserved capacity;
      - any-host: while some group's any-host reservation is unclaimed, a claim that takes
        unreserved capacity of a resource must leave the sum over UP hosts of max(0, capacity
        * ratio - used - unclaimed reservations) at least the unclaimed any-host total. This
        keeps the capacity free somewhere on the platform (not necessarily in one piece: a
        reservation is an amount, not a VM shape). It reads every host, so the script is given
        every host only when such a reservation exists (it asks for them otherwise).
    The weigher puts hosts where the group holds an unclaimed reservation first (the whole
    flavor, then part of it), so the group uses its reserved capacity first. A host refused
    only because of other groups' reservations counts under the filter "reserved".

    VMs per host and placement rules. Each host's `claims` field counts the claims on it
    (the claim script moves it with the claim, the release script takes it down); the copy
    follows it from host.usage events, so the max_vms filter is one comparison per host, and
    the claim script refuses a claim that would pass the host's limit (its max_vms_hosts entry,
    else max_vms_per_host: passed with each claim), so two schedulers cannot both place the
    last VM a host may take. A request's placement rule (affinity: all
    its VMs on one host; anti-affinity: each on another) is kept in berth:request-hosts:{<id>}
    (vm -> host), written by the claim in its step and forgotten by the release: a decision
    reads it once (s_peers) and marks the hosts it names, and the claim script checks the rule
    against it again, so concurrent placements of one request's VMs cannot break it. The
    hypervisor filter compares the host's reported driver name (TEST, QEMU) without case.

    Addresses: a VM on networks (SelectHost.networks, or network alone) gets an IPv4 address
    and a MAC on each in its claim's one step, all or none (placement_claim.lua takes a free
    address of each network; the MACs are picked here at random, locally administered, and
    the script refuses one in use). A full release gives them all back in the release's
    step. A network with no free address ends the placement at once: no host would do
    better. */
#include "placement.h"
#include "clock.h"
#include "keys.h"
#include "log.h"
#include "lua_scripts.h"
#include "model.h"
#include "util.h"

#include <assert.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CHANGED 100 /* internal: the VM's claim changed while we placed it */
#define ROUNDS  4   /* placements restarted after a concurrent change to the same VM */

/* Filters, in the order they are applied; the index is the counter of removals. */
enum {
    F_STATE,
    F_EXCLUDE,
    F_RAM,
    F_VCPUS,
    F_DISK,
    F_RESERVED,
    F_HYPERVISOR,
    F_MAX_VMS,
    F_AFFINITY,
    F_ANTI_AFFINITY,
    F_COUNT,
    F_PASS = -1
};

#define GROUP_ID_MAX   40 /* a group id (a UUID) with its NUL */
#define HYPERVISOR_MAX 16 /* a hypervisor's name with its NUL */

/* One group's unclaimed reservation in a reservation hash (vcpus, ram_mb, disk_gb). */
typedef struct {
    char group[GROUP_ID_MAX];
    int64_t own[3];
} s_reserve_t;

/* A reservation hash as the scheduler uses it: every group's unclaimed total, and each
   group's part (reserve[first .. first + count) of the placement's array). */
typedef struct {
    int64_t held[3]; /* unclaimed reservations of every group: vcpus, ram_mb, disk_gb */
    int first, count;
} s_holdings_t;

typedef struct {
    const char *id; /* in placement_t.names: the ids apart, so a pass over hosts stays small */
    char state[16]; /* as stored: UP, DOWN, DISABLED */
    int up;         /* state == "UP" */
    int expired;    /* following: its heartbeat's ttl ended (berth:hosts:seen) */
    int64_t last_seen_ms;
    int64_t cap_vcpus, cap_ram_mb, cap_disk_gb;
    int64_t used_vcpus, used_ram_mb, used_disk_gb;
    s_holdings_t res;                /* its reservation hash */
    int64_t claims;                  /* claims on it (the claim script's count) */
    char hypervisor[HYPERVISOR_MAX]; /* as its agent reports it (libvirt's driver: TEST, QEMU) */
    unsigned peers;  /* == placement_t.peers_stamp: a VM of the request is claimed here */
    unsigned seen;   /* == placement_t.rank_stamp: this decision's ranking filtered it */
    int64_t max_vms; /* claims it may hold: its max_vms_hosts entry, else max_vms_per_host */
} s_host_t;

typedef struct {
    int index;      /* into hosts */
    double weight;  /* weigher key, larger first: usable RAM left (spread) or its negation (pack) */
    const char *id; /* tie-break, for a stable order */
    int reserved;   /* the group's unclaimed reservation here: 2 covers the flavor, 1 part */
    int cached;     /* its agent caches the VM's base image (1) or not (0) */
} s_candidate_t;

/* One host's own limit of claims (max_vms_hosts). */
typedef struct {
    char id[PLACEMENT_ID_MAX];
    int64_t max;
} s_limit_t;

struct _placement_t {
    store_t *store; /* borrowed */
    placement_config_t config;
    s_host_t *hosts;
    char (*names)[PLACEMENT_ID_MAX]; /* the hosts' ids, hosts[i].id = names[i] */
    char **images; /* images[i]: digests hosts[i]'s agent caches, comma-separated (or NULL) */
    int n_hosts;
    s_candidate_t *candidates; /* scratch, n_hosts long */
    int *order;                /* host indices in the weigher's RAM order: s_key, then index */
    int *reserved_hosts;       /* indices of the hosts with a reservation hash */
    int n_reserved_hosts;
    unsigned rank_stamp;      /* this decision's mark on the hosts it filtered (s_rank) */
    int judging;              /* this decision judges hosts by their beats (s_rank_begin) */
    int ranked_all;           /* the last s_rank filtered every host */
    int ranked_front;         /* the last ranking's preferred candidates (the first ones) */
    int64_t loaded_at;        /* monotonic ms of the last load; 0 = never */
    int64_t loads;            /* full loads so far */
    char cursor[48];          /* the event stream's last entry applied to the copy */
    long long added;          /* the stream's entries-added count at the cursor */
    int following;            /* placement_follow keeps the copy current between loads */
    int truncated;            /* the last load saw more than max_hosts hosts */
    char ratios[3][32];       /* ram, cpu, disk ratios as text for the claim script */
    int removed[F_COUNT + 1]; /* the last "no valid host": hosts per filter, then busy */
    s_reserve_t *reserve;     /* every group's part of the hosts' and any-host holdings */
    int n_reserve;
    s_holdings_t any;    /* the any-host reservations */
    double pool_free[3]; /* sum over UP hosts of max(0, usable - used - held): s_rank */
    char ips[LIMIT_VM_NETWORKS_MAX][PLACEMENT_IP_MAX];   /* the last claim's addresses */
    char macs[LIMIT_VM_NETWORKS_MAX][PLACEMENT_MAC_MAX]; /* and MACs, one per network */
    char net_why[160];              /* why the last claim's network refused it */
    char net_refusing[UTIL_ID_LEN]; /* and that network's id */
    unsigned peers_stamp;           /* this decision's mark on the hosts its request's VMs are on */
    int n_peers;                    /* the request's other VMs with a claim (0 without a rule) */
    const char *previous;           /* the host the VM's claim is on ("" none): counted there */
    int rule_why;                   /* the filter of the claim script's last AFFINITY answer */
    s_limit_t *limits;              /* max_vms_hosts, parsed */
    int n_limits;
};

/* Per request: the group's share of the target host's and the any-host reservations. */
typedef struct {
    int64_t on_host[3], on_any[3], rest[3];
} s_split_t;

/* The filters' names, as NO_VALID_HOST's details and message say them (F_* order). */
static const char *const s_filter_names[F_COUNT] = { "state",        "exclude", "ram",
                                                     "vcpus",        "disk",    "reserved",
                                                     "hypervisor",   "max_vms", "affinity",
                                                     "anti_affinity" };

void placement_config_defaults(placement_config_t *config)
{
    *config = (placement_config_t){ .host_timeout_ms = 3000,
                                    .down_grace_ms = 5000,
                                    .ram_ratio = 1.0,
                                    .cpu_ratio = 4.0,
                                    .disk_ratio = 1.0,
                                    .refresh_ms = 1000,
                                    .max_hosts = 100000,
                                    .max_exclude = 32,
                                    .max_alternates = 2,
                                    .max_attempts = 16,
                                    .max_vms_per_host = 0,
                                    .max_vcpus = LIMIT_VCPUS_MAX,
                                    .max_ram_mb = LIMIT_RAM_MB_MAX,
                                    .max_disk_gb = LIMIT_DISK_GB_MAX };
}

/* Parse text ("host=N,host=N") into limits (room for n_max; NULL: only check). The number
   of entries, or -1 when text is not such a list. */
static int s_limits(const char *text, s_limit_t *limits, int n_max)
{
    int n = 0;
    const char *p = text ? text : "";
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        char number[24];
        int64_t max = 0;
        size_t id_len = eq ? (size_t)(eq - p) : 0, num_len = eq ? len - id_len - 1 : 0;
        if (!eq || id_len == 0 || id_len >= PLACEMENT_ID_MAX || num_len == 0 ||
            num_len >= sizeof number)
            return -1;
        memcpy(number, eq + 1, num_len);
        number[num_len] = '\0';
        if (util_parse_int(number, 0, 1000000, &max) != 0)
            return -1;
        if (limits && n < n_max) {
            memcpy(limits[n].id, p, id_len);
            limits[n].id[id_len] = '\0';
            limits[n].max = max;
        }
        n++;
        p += len + (end ? 1 : 0);
        if (end && !*p)
            return -1; /* a trailing comma */
    }
    return n;
}

int placement_max_vms_hosts_valid(const char *text)
{
    return s_limits(text, NULL, 0) < 0 ? -1 : 0;
}

placement_t *placement_new(store_t *store, const placement_config_t *config)
{
    assert(store && config);
    assert(config->max_alternates >= 0 && config->max_alternates <= PLACEMENT_ALTERNATES_MAX);
    placement_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->store = store;
    self->config = *config;
    self->config.max_vms_hosts = NULL; /* borrowed: parsed here, not kept */
    self->previous = "";
    int n_limits = s_limits(config->max_vms_hosts, NULL, 0);
    self->limits = n_limits > 0 ? calloc((size_t)n_limits, sizeof *self->limits) : NULL;
    if (n_limits < 0 || (n_limits > 0 && !self->limits)) {
        free(self);
        return NULL;
    }
    self->n_limits = s_limits(config->max_vms_hosts, self->limits, n_limits);
    snprintf(self->ratios[0], sizeof self->ratios[0], "%.17g", config->ram_ratio);
    snprintf(self->ratios[1], sizeof self->ratios[1], "%.17g", config->cpu_ratio);
    snprintf(self->ratios[2], sizeof self->ratios[2], "%.17g", config->disk_ratio);
    return self;
}

/* The images lists of a load. */
static void s_images_free(char **images, int n)
{
    for (int i = 0; images && i < n; i++)
        free(images[i]);
    free(images);
}

void placement_destroy(placement_t **self_p)
{
    if (self_p && *self_p) {
        placement_t *self = *self_p;
        s_images_free(self->images, self->n_hosts);
        free(self->hosts);
        free(self->names);
        free(self->candidates);
        free(self->order);
        free(self->reserved_hosts);
        free(self->reserve);
        free(self->limits);
        free(self);
        *self_p = NULL;
    }
}

int placement_hosts(placement_t *self)
{
    return self->n_hosts;
}

int64_t placement_loads(placement_t *self)
{
    return self->loads;
}

int placement_hosts_in(placement_t *self, const char *state)
{
    int n = 0;
    for (int i = 0; i < self->n_hosts; i++)
        n += strcmp(self->hosts[i].state, state) == 0;
    return n;
}

int placement_truncated(placement_t *self)
{
    return self->truncated;
}

static int64_t s_int(const redisReply *r)
{
    int64_t v = 0;
    if (r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    if (r->type == REDIS_REPLY_STRING &&
        util_parse_int(r->str, INT64_MIN / 4, INT64_MAX / 4, &v) == 0)
        return v;
    return 0;
}

/* Fill h's state from 8 replies: state, last_seen_ms, cap_* then used_*. */
static void s_row(s_host_t *h, redisReply **f)
{
    util_strlcpy(h->state, f[0]->type == REDIS_REPLY_STRING ? f[0]->str : "", sizeof h->state);
    h->up = strcmp(h->state, "UP") == 0;
    h->last_seen_ms = s_int(f[1]);
    h->cap_vcpus = s_int(f[2]);
    h->cap_ram_mb = s_int(f[3]);
    h->cap_disk_gb = s_int(f[4]);
    h->used_vcpus = s_int(f[5]);
    h->used_ram_mb = s_int(f[6]);
    h->used_disk_gb = s_int(f[7]);
}

static int s_by_id(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int s_host_by_id(const void *key, const void *h)
{
    return strcmp(key, ((const s_host_t *)h)->id);
}

/* Parse one HGETALL of a reservation hash into *out, appending the groups' parts to
   reserve[*n ..] (room for every field pair). */
static void s_holdings(redisReply *row, s_holdings_t *out, s_reserve_t *reserve, int *n)
{
    static const char *const names[3] = { "vcpus", "ram_mb", "disk_gb" };
    memset(out, 0, sizeof *out);
    out->first = *n;
    for (size_t i = 0; row->type == REDIS_REPLY_ARRAY && i + 1 < row->elements; i += 2) {
        redisReply *field = row->element[i];
        const char *colon = field->type == REDIS_REPLY_STRING ? strchr(field->str, ':') : NULL;
        if (!colon || (size_t)(colon - field->str) >= GROUP_ID_MAX)
            continue;
        char group[GROUP_ID_MAX];
        memcpy(group, field->str, (size_t)(colon - field->str));
        group[colon - field->str] = '\0';
        int k = out->first;
        while (k < *n && strcmp(reserve[k].group, group) != 0)
            k++;
        if (k == *n) {
            memset(&reserve[k], 0, sizeof reserve[k]);
            util_strlcpy(reserve[k].group, group, sizeof reserve[k].group);
            (*n)++;
        }
        const char *name = colon + 1;
        int64_t v = s_int(row->element[i + 1]);
        for (int j = 0; j < 3; j++) {
            if (strcmp(name, names[j]) == 0)
                reserve[k].own[j] += v; /* reserved ... */
            else if (strncmp(name, "used_", 5) == 0 && strcmp(name + 5, names[j]) == 0)
                reserve[k].own[j] -= v; /* ... less what its claims hold */
        }
    }
    out->count = *n - out->first;
    for (int k = out->first; k < *n; k++)
        for (int j = 0; j < 3; j++) {
            if (reserve[k].own[j] < 0)
                reserve[k].own[j] = 0;
            out->held[j] += reserve[k].own[j];
        }
}

/* The any-host reservations and those of every host in berth:reserved-hosts, into hosts
   (sorted by id) and self. Two round trips. 0 or -1 (Redis). */
static int s_load_reservations(placement_t *self, s_host_t *hosts, int n_hosts)
{
    redisReply *ids = store_command(self->store, "SMEMBERS %s", KEYS_RESERVED_HOSTS);
    if (!ids || ids->type != REDIS_REPLY_ARRAY) {
        if (ids)
            freeReplyObject(ids);
        return -1;
    }
    /* The any-host hash, then each reserved host we know. */
    size_t n_keys = 1;
    int *index = calloc(ids->elements + 1, sizeof *index);
    char(*keys)[KEYS_MAX] = calloc(ids->elements + 1, sizeof *keys);
    const char **argv = calloc(ids->elements + 1, sizeof *argv);
    redisReply *r = NULL;
    if (index && keys && argv) {
        argv[0] = KEYS_RESERVATIONS_ANY;
        for (size_t i = 0; i < ids->elements; i++) {
            redisReply *id = ids->element[i];
            if (id->type != REDIS_REPLY_STRING)
                continue;
            s_host_t *h = bsearch(id->str, hosts, (size_t)n_hosts, sizeof *hosts, s_host_by_id);
            if (!h)
                continue;
            index[n_keys] = (int)(h - hosts);
            argv[n_keys] = keys_build(keys[n_keys], KEYS_HOST_RESERVATIONS, h->id, NULL);
            n_keys++;
        }
        r = store_run(self->store, &lua_hash_rows, (int)n_keys, (int)n_keys, argv);
    }
    free(keys);
    free(argv);
    freeReplyObject(ids);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != n_keys) {
        free(index);
        if (r)
            freeReplyObject(r);
        return -1;
    }
    size_t pairs = 0;
    for (size_t i = 0; i < n_keys; i++)
        if (r->element[i]->type == REDIS_REPLY_ARRAY)
            pairs += r->element[i]->elements / 2;
    s_reserve_t *reserve = calloc(pairs + 1, sizeof *reserve);
    if (!reserve) {
        free(index);
        freeReplyObject(r);
        return -1;
    }
    int n = 0;
    s_holdings(r->element[0], &self->any, reserve, &n);
    for (size_t i = 1; i < n_keys; i++)
        s_holdings(r->element[i], &hosts[index[i]].res, reserve, &n);
    free(index);
    freeReplyObject(r);
    free(self->reserve);
    self->reserve = reserve;
    self->n_reserve = n;
    return 0;
}

/* Where the event stream stands: its last generated id into out ("0-0" when there is no
   stream yet; every entry up to it is in the stream or was trimmed) and how many entries it
   has ever had (*added). 0 or -1. */
static int s_stream_end(placement_t *self, char out[48], long long *added)
{
    redisReply *r = store_command(self->store, "XINFO STREAM %s", STORE_EVENTS);
    if (!r)
        return -1;
    util_strlcpy(out, "0-0", 48);
    *added = 0;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
        const redisReply *k = r->element[i], *v = r->element[i + 1];
        if (k->type != REDIS_REPLY_STRING)
            continue;
        if (strcmp(k->str, "last-generated-id") == 0 && v->type == REDIS_REPLY_STRING)
            util_strlcpy(out, v->str, 48);
        else if (strcmp(k->str, "entries-added") == 0 && v->type == REDIS_REPLY_INTEGER)
            *added = v->integer;
    }
    freeReplyObject(r);
    return 0;
}

/* ---- the weigher's order, kept as the copy changes ---- */

/* The weigher's RAM key of h, larger first: usable RAM left (spread) or its negation (pack). */
static double s_key(const placement_t *self, const s_host_t *h)
{
    double free_ram = (double)h->cap_ram_mb * self->config.ram_ratio - (double)h->used_ram_mb;
    return self->config.pack ? -free_ram : free_ram;
}

typedef struct {
    double key;
    int index;
} s_keyed_t;

static int s_by_key(const void *a, const void *b)
{
    const s_keyed_t *x = a, *y = b;
    if (x->key != y->key)
        return x->key > y->key ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

/* order from scratch, after a load (keyed: scratch, n_hosts long). */
static void s_order_build(placement_t *self, s_keyed_t *keyed)
{
    int n = self->n_hosts;
    for (int i = 0; i < n; i++)
        keyed[i] = (s_keyed_t){ s_key(self, &self->hosts[i]), i };
    qsort(keyed, (size_t)n, sizeof *keyed, s_by_key);
    for (int i = 0; i < n; i++)
        self->order[i] = keyed[i].index;
}

/* The first position in order[lo, hi) whose host does not go before a host keyed key with
   index i (binary search: order is sorted), or host i's own position when the search meets
   it. */
static int s_lower(const placement_t *self, int lo, int hi, double key, int i)
{
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2, at = self->order[mid];
        if (at == i)
            return mid; /* host i itself: keyed key by the caller, whatever it weighs now */
        double k = s_key(self, &self->hosts[at]);
        if (k > key || (k == key && at < i))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* h's key was old and changed (its used or capacity RAM): move it to its place in order.
   Two binary searches (where it was, where it goes) and one memmove of the hosts between. */
static void s_reorder(placement_t *self, const s_host_t *h, double old)
{
    int i = (int)(h - self->hosts), n = self->n_hosts, *o = self->order;
    double key = s_key(self, h);
    if (key == old)
        return;
    int p = s_lower(self, 0, n, old, i);
    if (p >= n || o[p] != i)
        return; /* not where its old key says: cannot be (every change comes here) */
    if (key > old) {
        int q = s_lower(self, 0, p, key, i);
        memmove(o + q + 1, o + q, (size_t)(p - q) * sizeof *o);
        o[q] = i;
    } else {
        int q = s_lower(self, p + 1, n, key, i) - 1;
        memmove(o + p, o + p + 1, (size_t)(q - p) * sizeof *o);
        o[q] = i;
    }
}

int placement_refresh(placement_t *self)
{
    /* Where the stream stands before the load: what follows it is applied on top
       (placement_follow), and events the load already reflects are applied again harmlessly
       (they carry the values, not the changes). */
    char cursor[48];
    long long added;
    if (s_stream_end(self, cursor, &added) != 0)
        return -1;
    redisReply *ids = store_command(self->store, "SMEMBERS %s", KEYS_HOSTS);
    if (!ids)
        return -1;
    if (ids->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(ids);
        return -1;
    }
    /* Sorted by id, so a cap keeps the same hosts every time; ids longer than any agent may
       send cannot be placed on and are skipped. */
    size_t total = ids->elements, n_ids = 0;
    const char **sorted = calloc(total + 1, sizeof *sorted);
    if (!sorted) {
        freeReplyObject(ids);
        return -1;
    }
    for (size_t i = 0; i < total; i++)
        if (ids->element[i]->type == REDIS_REPLY_STRING && ids->element[i]->len > 0 &&
            ids->element[i]->len < PLACEMENT_ID_MAX)
            sorted[n_ids++] = ids->element[i]->str;
    qsort(sorted, n_ids, sizeof *sorted, s_by_id);
    int capped = total > (size_t)self->config.max_hosts;
    if (n_ids > (size_t)self->config.max_hosts)
        n_ids = (size_t)self->config.max_hosts;
    /* s_row's first 8, then claims and hypervisor; the last, the images the host's agent
       caches, goes apart. */
    static const char *fields[] = { "state",       "last_seen_ms", "cap_vcpus",   "cap_ram_mb",
                                    "cap_disk_gb", "used_vcpus",   "used_ram_mb", "used_disk_gb",
                                    "claims",      "hypervisor",   "images" };
    enum { N_FIELDS = sizeof fields / sizeof *fields };
    char(*keys)[KEYS_MAX] = calloc(n_ids + 1, sizeof *keys);
    const char **argv = calloc(n_ids + N_FIELDS, sizeof *argv);
    redisReply *r = NULL;
    if (keys && argv) {
        for (size_t i = 0; i < n_ids; i++)
            argv[i] = keys_host(keys[i], sorted[i]);
        for (size_t f = 0; f < N_FIELDS; f++)
            argv[n_ids + f] = fields[f];
        r = store_run(self->store, &lua_hash_rows, (int)n_ids, (int)n_ids + N_FIELDS, argv);
    }
    free(keys);
    free(argv);
    if (!r) {
        free(sorted);
        freeReplyObject(ids);
        return -1;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != n_ids) {
        log_debug(NULL, "host load failed", "{s:s}", "error", r->str ? r->str : "?");
        free(sorted);
        freeReplyObject(ids);
        freeReplyObject(r);
        return -1;
    }
    int n = (int)n_ids;
    s_host_t *hosts = calloc((size_t)n + 1, sizeof *hosts);
    char(*names)[PLACEMENT_ID_MAX] = calloc((size_t)n + 1, sizeof *names);
    s_candidate_t *candidates = calloc((size_t)n + 1, sizeof *candidates);
    char **images = calloc((size_t)n + 1, sizeof *images);
    int *order = calloc((size_t)n + 1, sizeof *order);
    int *reserved_hosts = calloc((size_t)n + 1, sizeof *reserved_hosts);
    s_keyed_t *keyed = calloc((size_t)n + 1, sizeof *keyed);
    if (!hosts || !names || !candidates || !images || !order || !reserved_hosts || !keyed) {
        free(keyed);
        free(order);
        free(reserved_hosts);
        free(images);
        free(hosts);
        free(names);
        free(candidates);
        free(sorted);
        freeReplyObject(ids);
        freeReplyObject(r);
        return -1;
    }
    int kept = 0;
    for (int i = 0; i < n; i++) {
        redisReply *row = r->element[i];
        if (row->type != REDIS_REPLY_ARRAY || row->elements != N_FIELDS)
            continue; /* in the set but not described (yet) */
        util_strlcpy(names[kept], sorted[i], sizeof names[kept]);
        hosts[kept].id = names[kept];
        s_row(&hosts[kept], row->element);
        hosts[kept].claims = s_int(row->element[8]);
        util_strlcpy(hosts[kept].hypervisor,
                     row->element[9]->type == REDIS_REPLY_STRING ? row->element[9]->str : "",
                     sizeof hosts[kept].hypervisor);
        if (row->element[10]->type == REDIS_REPLY_STRING && row->element[10]->len > 0)
            images[kept] = strdup(row->element[10]->str); /* NULL (none) when out of memory */
        kept++;
    }
    self->truncated = capped;
    free(sorted);
    freeReplyObject(ids);
    freeReplyObject(r);
    if (s_load_reservations(self, hosts, kept) != 0) {
        free(keyed);
        free(order);
        free(reserved_hosts);
        s_images_free(images, kept);
        free(hosts);
        free(names);
        free(candidates);
        return -1;
    }
    s_images_free(self->images, self->n_hosts);
    free(self->hosts);
    free(self->names);
    free(self->candidates);
    free(self->order);
    free(self->reserved_hosts);
    self->order = order;
    self->reserved_hosts = reserved_hosts;
    self->images = images;
    self->hosts = hosts;
    self->names = names;
    self->candidates = candidates;
    self->n_hosts = kept;
    self->loads++;
    util_strlcpy(self->cursor, cursor, sizeof self->cursor);
    self->added = added;
    int64_t now = util_now_ms();
    for (int i = 0; i < kept; i++) {
        hosts[i].expired = now - hosts[i].last_seen_ms > self->config.host_timeout_ms;
        hosts[i].max_vms = self->config.max_vms_per_host;
    }
    /* Hosts with a limit of their own (few: a lookup each). */
    for (int k = 0; k < self->n_limits; k++) {
        s_host_t *h = bsearch(self->limits[k].id, hosts, (size_t)kept, sizeof *hosts, s_host_by_id);
        if (h)
            h->max_vms = self->limits[k].max;
    }
    self->n_reserved_hosts = 0;
    for (int i = 0; i < kept; i++)
        if (hosts[i].res.count > 0)
            reserved_hosts[self->n_reserved_hosts++] = i;
    s_order_build(self, keyed);
    free(keyed);
    self->loaded_at = util_mono_ms();
    return 0;
}

static int s_stale(placement_t *self)
{
    /* Following the stream, the copy is current; the owner reloads it now and then. */
    if (self->following && self->loaded_at)
        return 0;
    return self->loaded_at == 0 || util_mono_ms() - self->loaded_at >= self->config.refresh_ms;
}

/* ---- following the event stream ---- */

#define FOLLOW_COUNT   1000 /* entries read per XREAD */
#define FOLLOW_BATCHES 10   /* XREADs per placement_follow; the rest waits for the next */

/* A stream id "ms-seq" as its two numbers (what is missing reads 0). */
static void s_id_parse(const char *id, unsigned long long *ms, unsigned long long *seq)
{
    char *rest;
    *ms = strtoull(id, &rest, 10);
    *seq = *rest == '-' ? strtoull(rest + 1, NULL, 10) : 0;
}

/* Is stream id a later than b? (Called for every entry followed: strtoull, not sscanf.) */
static int s_id_after(const char *a, const char *b)
{
    unsigned long long am, as, bm, bs;
    s_id_parse(a, &am, &as);
    s_id_parse(b, &bm, &bs);
    return am > bm || (am == bm && as > bs);
}

static s_host_t *s_find(placement_t *self, const char *id)
{
    return id ? bsearch(id, self->hosts, (size_t)self->n_hosts, sizeof *self->hosts, s_host_by_id)
              : NULL;
}

/* One entry's fields onto the copy: host.usage (used_*) and host.state. 1 when the copy
   cannot take it (a host it does not know: a full load is due), else 0. */
static int s_apply(placement_t *self, const redisReply *f)
{
    const char *type = NULL, *host = NULL, *state = NULL, *images = NULL;
    const redisReply *used[3] = { NULL, NULL, NULL }, *claims = NULL;
    static const char *const used_names[3] = { "used_vcpus", "used_ram_mb", "used_disk_gb" };
    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        if (strcmp(k->str, "type") == 0)
            type = v->str;
        else if (strcmp(k->str, "host") == 0)
            host = v->str;
        else if (strcmp(k->str, "state") == 0)
            state = v->str;
        else if (strcmp(k->str, "claims") == 0)
            claims = v;
        else if (strcmp(k->str, "images") == 0)
            images = v->str;
        else
            for (int j = 0; j < 3; j++)
                if (strcmp(k->str, used_names[j]) == 0)
                    used[j] = v;
    }
    int usage = type && strcmp(type, "host.usage") == 0;
    int moved = type && strcmp(type, "host.state") == 0 && state;
    int cached = type && strcmp(type, "host.images") == 0 && images;
    if (!usage && !moved && !cached)
        return 0;
    s_host_t *h = s_find(self, host);
    if (!h)
        return 1;
    if (cached) { /* the images its agent caches now */
        size_t i = (size_t)(h - self->hosts);
        free(self->images[i]);
        self->images[i] = *images ? strdup(images) : NULL;
        return 0;
    }
    if (usage) {
        double old = s_key(self, h);
        if (used[0])
            h->used_vcpus = s_int(used[0]);
        if (used[1])
            h->used_ram_mb = s_int(used[1]);
        if (used[2])
            h->used_disk_gb = s_int(used[2]);
        if (claims)
            h->claims = s_int(claims);
        s_reorder(self, h, old);
    } else {
        util_strlcpy(h->state, state, sizeof h->state);
        h->up = strcmp(h->state, "UP") == 0;
    }
    return 0;
}

int placement_follow(placement_t *self)
{
    self->following = 1;
    if (!self->loaded_at)
        return placement_refresh(self);
    /* Read up to where the stream stood (end): every entry added up to there was either
       read here or trimmed unread, and the count of entries ever added tells which (the
       stream keeps no record of what trimming removed). */
    char end[48];
    long long added_end;
    if (s_stream_end(self, end, &added_end) != 0)
        return -1;
    int reload = 0;
    for (int batch = 0; !reload && s_id_after(end, self->cursor) && batch < FOLLOW_BATCHES;
         batch++) {
        redisReply *r = store_command(self->store, "XREAD COUNT %d STREAMS %s %s", FOLLOW_COUNT,
                                      STORE_EVENTS, self->cursor);
        if (!r)
            return -1;
        size_t n = 0, applied = 0;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
            r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 2 &&
            r->element[0]->element[1]->type == REDIS_REPLY_ARRAY) {
            const redisReply *entries = r->element[0]->element[1];
            for (; n < entries->elements && !reload; n++) {
                const redisReply *e = entries->element[n];
                if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
                    e->element[0]->type != REDIS_REPLY_STRING ||
                    e->element[1]->type != REDIS_REPLY_ARRAY)
                    continue;
                if (s_id_after(e->element[0]->str, end))
                    break; /* added after the count was taken: the next round's */
                reload = s_apply(self, e->element[1]);
                util_strlcpy(self->cursor, e->element[0]->str, sizeof self->cursor);
                self->added++;
                applied++;
            }
        }
        freeReplyObject(r);
        if (!reload && applied == 0) {
            /* Nothing left after the cursor up to end: the rest was trimmed unread. */
            util_strlcpy(self->cursor, end, sizeof self->cursor);
            self->added = -1;
        }
        if (n < FOLLOW_COUNT)
            break;
    }
    if (!reload && !s_id_after(end, self->cursor) && self->added != added_end)
        reload = 1; /* caught up, but fewer entries read than were added: a gap */
    if (reload)
        return placement_refresh(self);
    /* Liveness: the hosts whose last beat's ttl has ended (few; the rest beat on time). */
    redisReply *dead = store_command(self->store, "ZRANGEBYSCORE %s -inf %lld", KEYS_HOSTS_SEEN,
                                     (long long)util_now_ms());
    if (!dead)
        return -1;
    for (int i = 0; i < self->n_hosts; i++)
        self->hosts[i].expired = 0;
    for (size_t i = 0; dead->type == REDIS_REPLY_ARRAY && i < dead->elements; i++) {
        s_host_t *h = dead->element[i]->type == REDIS_REPLY_STRING
                          ? s_find(self, dead->element[i]->str)
                          : NULL;
        if (h)
            h->expired = 1;
    }
    freeReplyObject(dead);
    return 0;
}

/* want on top of used still within capacity * ratio (doubles, as the Lua check does). */
static int s_fits(int64_t used, int64_t want, int64_t cap, double ratio)
{
    return (double)used + (double)want <= (double)cap * ratio;
}

static int s_excluded(const Berth__SelectHost *req, const char *id)
{
    for (size_t i = 0; i < req->n_exclude; i++)
        if (strcmp(req->exclude[i], id) == 0)
            return 1;
    return 0;
}

/* group's unclaimed part of holdings (zeros when it has none there). */
static const int64_t *s_own(const placement_t *self, const s_holdings_t *holdings,
                            const char *group)
{
    static const int64_t none[3] = { 0, 0, 0 };
    for (int k = holdings->first; group && *group && k < holdings->first + holdings->count; k++)
        if (strcmp(self->reserve[k].group, group) == 0)
            return self->reserve[k].own;
    return none;
}

/* Flavor f as resources (vcpus, ram_mb, disk_gb) and the usable capacity per resource. */
static void s_want(const Berth__Resources *f, int64_t want[3])
{
    want[0] = f->vcpus;
    want[1] = f->ram_mb;
    want[2] = f->disk_gb;
}

static void s_usable(const placement_t *self, const s_host_t *h, double usable[3])
{
    usable[0] = (double)h->cap_vcpus * self->config.cpu_ratio;
    usable[1] = (double)h->cap_ram_mb * self->config.ram_ratio;
    usable[2] = (double)h->cap_disk_gb * self->config.disk_ratio;
}

static void s_used(const s_host_t *h, int64_t used[3])
{
    used[0] = h->used_vcpus;
    used[1] = h->used_ram_mb;
    used[2] = h->used_disk_gb;
}

static int s_is_up(const placement_t *self, const s_host_t *h, int64_t now)
{
    if (!self->judging) /* Redis was away lately: no beat could be recorded, go by the state */
        return h->up;
    /* Following the stream, the copy's last_seen_ms is the load's: liveness comes from the
       beats' ttl (placement_follow), and the claim script checks last_seen_ms itself. */
    if (self->following)
        return h->up && !h->expired;
    return h->up && now - h->last_seen_ms <= self->config.host_timeout_ms;
}

/* What a claim of req on h takes from the group's reservations (as the claim script). */
static void s_split(const placement_t *self, const s_host_t *h, const Berth__SelectHost *req,
                    s_split_t *split)
{
    int64_t want[3];
    s_want(req->flavor, want);
    const int64_t *own = s_own(self, &h->res, req->group);
    const int64_t *own_any = s_own(self, &self->any, req->group);
    for (int j = 0; j < 3; j++) {
        split->on_host[j] = want[j] < own[j] ? want[j] : own[j];
        int64_t left = want[j] - split->on_host[j];
        split->on_any[j] = left < own_any[j] ? left : own_any[j];
        split->rest[j] = left - split->on_any[j];
    }
}

/* The reservations' rule (placement_claim.lua) for req on h: 1 when other groups'
   reservations leave no room, on the host or in the any-host pool. */
static int s_reserved(const placement_t *self, const s_host_t *h, const Berth__SelectHost *req)
{
    /* No reservation here or anywhere: nothing beyond the capacity filters applies. */
    if (h->res.count == 0 && self->any.count == 0)
        return 0;
    s_split_t split;
    s_split(self, h, req, &split);
    int64_t want[3], used[3];
    double usable[3];
    s_want(req->flavor, want);
    s_used(h, used);
    s_usable(self, h, usable);
    for (int j = 0; j < 3; j++) {
        if ((double)(used[j] + want[j] + h->res.held[j] - split.on_host[j]) > usable[j])
            return 1;
        int64_t unclaimed = self->any.held[j] - split.on_any[j];
        if (split.rest[j] > 0 && unclaimed > 0) {
            /* pool_free counted h (when UP) before this claim: take it out, add it after */
            double before = usable[j] - (double)(used[j] + h->res.held[j]);
            double after = before - (double)(want[j] - split.on_host[j]);
            double free = self->pool_free[j] - (before > 0 ? before : 0) + (after > 0 ? after : 0);
            if (free < (double)unclaimed)
                return 1;
        }
    }
    return 0;
}

/* The first filter that removes h, or F_PASS. */
static int s_filter(const placement_t *self, const s_host_t *h, const Berth__SelectHost *req,
                    int64_t now)
{
    const Berth__Resources *f = req->flavor;
    if (!s_is_up(self, h, now))
        return F_STATE;
    if (s_excluded(req, h->id))
        return F_EXCLUDE;
    if (req->hypervisor && *req->hypervisor && strcasecmp(h->hypervisor, req->hypervisor) != 0)
        return F_HYPERVISOR;
    if (!s_fits(h->used_ram_mb, f->ram_mb, h->cap_ram_mb, self->config.ram_ratio))
        return F_RAM;
    if (!s_fits(h->used_vcpus, f->vcpus, h->cap_vcpus, self->config.cpu_ratio))
        return F_VCPUS;
    if (!s_fits(h->used_disk_gb, f->disk_gb, h->cap_disk_gb, self->config.disk_ratio))
        return F_DISK;
    if (s_reserved(self, h, req))
        return F_RESERVED;
    /* The VM's own claim on h (a shelved VM placed again there) is counted already. */
    if (h->max_vms > 0 && h->claims - (strcmp(self->previous, h->id) == 0) >= h->max_vms)
        return F_MAX_VMS;
    /* The request's other VMs: affinity wants the host they are on, anti-affinity another. */
    int peers_here = self->n_peers > 0 && h->peers == self->peers_stamp;
    if (self->n_peers > 0 && strcmp(req->placement, "affinity") == 0 && !peers_here)
        return F_AFFINITY;
    if (peers_here && strcmp(req->placement, "anti-affinity") == 0)
        return F_ANTI_AFFINITY;
    return F_PASS;
}

/* Weigher: the group's own reservation first (covering the flavor, then part of it), then most
   usable RAM left (spread: VMs apart, each with room to grow) or least (pack: hosts filled one
   after another, the others kept free for large VMs or to be switched off), then, of hosts
   weighed equal, one whose agent caches the VM's base image, then by id so equal hosts keep one
   order. */
static int s_by_weight(const void *a, const void *b)
{
    const s_candidate_t *x = a, *y = b;
    if (x->reserved != y->reserved)
        return x->reserved > y->reserved ? -1 : 1;
    if (x->weight != y->weight)
        return x->weight > y->weight ? -1 : 1;
    /* Equal so far: the host that caches the VM's base image (no transfer before its disk). */
    if (x->cached != y->cached)
        return x->cached > y->cached ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index); /* hosts[] is in id order */
}

/* The best k of c[from, n) in weigher order at c[from, from + k) (all of them when fewer);
   the rest follow in no order. One pass with a bounded insertion: a decision uses the first
   few candidates only, and sorting thousands of hosts for them was most of its time. */
static void s_best(s_candidate_t *c, int from, int n, int k)
{
    int m = 0; /* c[from, from + m) holds the best so far, in order */
    for (int i = from; i < n; i++) {
        if (m == k && s_by_weight(&c[i], &c[from + m - 1]) >= 0)
            continue;
        s_candidate_t x = c[i];
        /* While growing, i is the next slot itself; once full, the worst of the best moves
           out to i's place. */
        int j = from + (m < k ? m : m - 1);
        c[i] = c[j];
        while (j > from && s_by_weight(&x, &c[j - 1]) < 0) {
            c[j] = c[j - 1];
            j--;
        }
        c[j] = x;
        if (m < k)
            m++;
    }
}

/* Mark the hosts that the other VMs of req's request hold claims on (the placement rule's
   record, berth:request-hosts): one Redis read per decision, and only with a rule, so the
   affinity filters stay a comparison per host. 0 or -1 (Redis). */
static int s_peers(placement_t *self, const Berth__SelectHost *req)
{
    self->n_peers = 0;
    if (++self->peers_stamp == 0)
        self->peers_stamp = 1;
    if (!req->placement || !*req->placement)
        return 0;
    char key[KEYS_MAX];
    keys_build(key, KEYS_REQUEST_HOSTS, req->request, NULL);
    redisReply *r = store_command(self->store, "HGETALL %s", key);
    if (!r)
        return -1;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
        const redisReply *vm = r->element[i], *host = r->element[i + 1];
        if (vm->type != REDIS_REPLY_STRING || host->type != REDIS_REPLY_STRING ||
            strcmp(vm->str, req->vm) == 0)
            continue;
        self->n_peers++;
        s_host_t *h = s_find(self, host->str);
        if (h)
            h->peers = self->peers_stamp;
    }
    freeReplyObject(r);
    return 0;
}

/* What both rankings start with: counts zeroed, what is free over the UP hosts (only the
   any-host rule, s_reserved, reads it), and the VM's base image by digest (of hosts weighed
   equal, one that caches it goes first; NULL when none is known). */
static const char *s_rank_begin(placement_t *self, const Berth__SelectHost *req, int64_t now,
                                int counts[F_COUNT])
{
    /* While Redis was away (an outage, a failover) nobody's heartbeat could be recorded, so
       every host would look silent: beats count only once it has answered for down_grace_ms
       (taskmgr judges hosts DOWN by the same rule); until then a host is what its state says. */
    self->judging = store_steady_ms(self->store) >= self->config.down_grace_ms;
    memset(counts, 0, sizeof(int) * F_COUNT);
    memset(self->pool_free, 0, sizeof self->pool_free);
    for (int i = 0; self->any.count > 0 && i < self->n_hosts; i++) {
        const s_host_t *h = &self->hosts[i];
        if (!s_is_up(self, h, now))
            continue;
        int64_t used[3];
        double usable[3];
        s_used(h, used);
        s_usable(self, h, usable);
        for (int j = 0; j < 3; j++) {
            double free = usable[j] - (double)(used[j] + h->res.held[j]);
            if (free > 0)
                self->pool_free[j] += free;
        }
    }
    return req->image_sha256 && strlen(req->image_sha256) == 64 && self->images ? req->image_sha256
                                                                                : NULL;
}

/* s_rank by a scan of every host: each through the filters, the passing ones to
   self->candidates, the caller's preferred hosts first, then the best of the others in weigher
   order (s_best); counts removals per filter. The number of candidates. s_rank must agree
   with it on every input (placement_rank, for the tests, runs either). */
static int s_rank_scan(placement_t *self, const Berth__SelectHost *req, int64_t now,
                       int counts[F_COUNT])
{
    const char *image = s_rank_begin(self, req, now, counts);
    int n = 0;
    for (int i = 0; i < self->n_hosts; i++) {
        const s_host_t *h = &self->hosts[i];
        int why = s_filter(self, h, req, now);
        if (why != F_PASS) {
            counts[why]++;
            continue;
        }
        self->candidates[n].index = i;
        double free_ram = (double)h->cap_ram_mb * self->config.ram_ratio - (double)h->used_ram_mb;
        self->candidates[n].weight = self->config.pack ? -free_ram : free_ram;
        self->candidates[n].id = h->id;
        const int64_t *own = s_own(self, &h->res, req->group);
        int64_t want[3];
        s_want(req->flavor, want);
        int all = 1, some = 0;
        for (int j = 0; j < 3; j++) {
            all &= own[j] >= want[j];
            some |= own[j] > 0;
        }
        self->candidates[n].reserved = all ? 2 : some;
        /* Digests are 64 characters between commas: a match is one whole entry. */
        self->candidates[n].cached =
            image && self->images[i] && strstr(self->images[i], image) != NULL;
        n++;
    }
    /* Hosts the caller prefers (a retry's alternates) go first, in the caller's order. */
    int front = 0;
    for (size_t p = 0; p < req->n_prefer; p++)
        for (int i = front; i < n; i++)
            if (strcmp(self->candidates[i].id, req->prefer[p]) == 0) {
                s_candidate_t moved = self->candidates[i];
                self->candidates[i] = self->candidates[front];
                self->candidates[front++] = moved;
                break;
            }
    /* Then, in weigher order, as many as a decision can use: the claims it tries and the
       alternates after the last of them. */
    s_best(self->candidates, front, n, self->config.max_attempts + self->config.max_alternates + 1);
    self->ranked_front = front;
    self->ranked_all = 1;
    return n;
}

/* The weigher's reservation step for req on h: 2 when the group's unclaimed reservation
   there covers the flavor, 1 when part of it, else 0. */
static int s_reserved_weight(const placement_t *self, const s_host_t *h,
                             const Berth__SelectHost *req)
{
    if (h->res.count == 0)
        return 0;
    const int64_t *own = s_own(self, &h->res, req->group);
    int64_t want[3];
    s_want(req->flavor, want);
    int all = 1, some = 0;
    for (int j = 0; j < 3; j++) {
        all &= own[j] >= want[j];
        some |= own[j] > 0;
    }
    return some ? (all ? 2 : 1) : 0;
}

/* Filter h for req (marking it filtered by this decision): counted under the filter that
   removes it, or appended to self->candidates with its weigher keys. 1 when it passed. */
static int s_consider(placement_t *self, const s_host_t *h, const Berth__SelectHost *req,
                      int64_t now, const char *image, int counts[F_COUNT], int *n)
{
    ((s_host_t *)h)->seen = self->rank_stamp;
    int why = s_filter(self, h, req, now);
    if (why != F_PASS) {
        counts[why]++;
        return 0;
    }
    int i = (int)(h - self->hosts);
    s_candidate_t *c = &self->candidates[(*n)++];
    c->index = i;
    c->weight = s_key(self, h);
    c->id = h->id;
    c->reserved = s_reserved_weight(self, h, req);
    /* Digests are 64 characters between commas: a match is one whole entry. */
    c->cached = image && self->images[i] && strstr(self->images[i], image) != NULL;
    return 1;
}

/* The candidates of a decision in self->candidates: the caller's preferred hosts that pass,
   in the caller's order, then the best K = max_attempts + max_alternates + 1 of the others in
   weigher order (s_best), then possibly more in no order. Returns their number.

   Not every host is filtered. The hosts where req's group holds an unclaimed reservation
   (which the weigher puts first; few, and known from the load) are filtered before the
   others; then the others are walked in self->order, which is the weigher's order but for
   the cached-image step, and the walk stops once K candidates are in hand and the host
   reached weighs less than the K-th: every host not reached weighs less than K candidates,
   so it cannot be among the best K. The hosts tied with the K-th are all taken, so the
   cached-image and id steps choose among them exactly as a scan would. counts (per filter)
   are complete only when self->ranked_all: the walk filtered every host; s_rank_rest
   completes them. */
static int s_rank(placement_t *self, const Berth__SelectHost *req, int64_t now, int counts[F_COUNT])
{
    const char *image = s_rank_begin(self, req, now, counts);
    if (++self->rank_stamp == 0) { /* wrapped: no host may look filtered already */
        for (int i = 0; i < self->n_hosts; i++)
            self->hosts[i].seen = 0;
        self->rank_stamp = 1;
    }
    int n = 0;
    /* Hosts the caller prefers (a retry's alternates) go first, in the caller's order. */
    for (size_t p = 0; p < req->n_prefer; p++) {
        const s_host_t *h = s_find(self, req->prefer[p]);
        if (h && h->seen != self->rank_stamp)
            s_consider(self, h, req, now, image, counts, &n);
    }
    int front = n, k = self->config.max_attempts + self->config.max_alternates + 1;
    /* The group's reserved hosts: ahead of every other in the weigher's order. */
    for (int r = 0; r < self->n_reserved_hosts; r++) {
        const s_host_t *h = &self->hosts[self->reserved_hosts[r]];
        if (h->seen != self->rank_stamp && s_reserved_weight(self, h, req) > 0)
            s_consider(self, h, req, now, image, counts, &n);
    }
    /* The rest in order, until the best k are known. */
    int need = k - (n - front), walked = 0, i = 0, skipped = 0, short_cached = 0;
    double tie = 0;
    for (; i < self->n_hosts; i++) {
        int at = self->order[i];
        const s_host_t *h = &self->hosts[at];
        if (walked >= need) {
            /* Past the k-th: only a host tied with it that caches the image can rank above a
               candidate in hand (the others tied with it come later in id order), and only
               while fewer of the tied hosts in hand cache it than the tie's share of the k. */
            if (need <= 0 || short_cached <= 0 || s_key(self, h) != tie)
                break;
            if (!self->images[at] || !strstr(self->images[at], image)) {
                skipped = 1;
                continue;
            }
        }
        if (h->seen == self->rank_stamp)
            continue;
        if (!s_consider(self, h, req, now, image, counts, &n))
            continue;
        if (++walked > need)
            short_cached--; /* a tied host that caches the image */
        else if (walked == need && image) {
            /* The tie's share of the k: those walked that tie with the k-th, of which the
               ones caching the image count already. */
            tie = s_key(self, h);
            short_cached = need;
            for (int c = n - walked; c < n; c++)
                if (self->candidates[c].weight != tie || self->candidates[c].cached)
                    short_cached--;
        }
    }
    self->ranked_all = i == self->n_hosts && !skipped;
    self->ranked_front = front;
    s_best(self->candidates, front, n, k);
    return n;
}

/* After s_rank stopped early: the hosts it did not filter through the filters now (the copy
   of them is as it was then), each counted under the filter that removes it, or as busy
   (passing, not tried), so the counts are those of a scan of every host. */
static void s_rank_rest(placement_t *self, const Berth__SelectHost *req, int64_t now,
                        int counts[F_COUNT], int *busy)
{
    for (int i = 0; !self->ranked_all && i < self->n_hosts; i++) {
        s_host_t *h = &self->hosts[i];
        if (h->seen == self->rank_stamp)
            continue;
        h->seen = self->rank_stamp;
        int why = s_filter(self, h, req, now);
        if (why == F_PASS)
            (*busy)++;
        else
            counts[why]++;
    }
    self->ranked_all = 1;
}

static_assert(F_COUNT == PLACEMENT_FILTERS, "placement.h's filter count");

int placement_rank(placement_t *self, const Berth__SelectHost *request, int scan,
                   char (*ids)[PLACEMENT_ID_MAX], int max, int removed[PLACEMENT_FILTERS + 1])
{
    if (s_stale(self) && placement_refresh(self) != 0)
        return -1;
    self->previous = "";
    if (s_peers(self, request) != 0)
        return -1;
    int64_t now = util_now_ms();
    int n = scan ? s_rank_scan(self, request, now, removed) : s_rank(self, request, now, removed);
    int k = self->config.max_attempts + self->config.max_alternates + 1;
    int ordered = n < self->ranked_front + k ? n : self->ranked_front + k;
    removed[F_COUNT] = n - ordered;
    s_rank_rest(self, request, now, removed, &removed[F_COUNT]);
    int m = ordered < max ? ordered : max;
    for (int i = 0; i < m; i++)
        util_strlcpy(ids[i], self->candidates[i].id, PLACEMENT_ID_MAX);
    return m;
}

/* Up to max_alternates candidates from position `from` on, skipping the chosen host. */
static void s_alternates(placement_t *self, int n, int from, placement_result_t *result)
{
    result->n_alternates = 0;
    for (int i = from; i < n && result->n_alternates < self->config.max_alternates; i++) {
        const char *id = self->hosts[self->candidates[i].index].id;
        if (strcmp(id, result->host) != 0)
            util_strlcpy(result->alternates[result->n_alternates++], id, PLACEMENT_ID_MAX);
    }
}

#define RESERVED   2 /* s_claim: only other groups' reservations stand in the way */
#define RETRY_POOL 3 /* s_claim: the script needs every host for the any-host check */
#define NETWORK    4 /* s_claim: the VM's network refuses (gone, or no address free) */
#define MAC_TAKEN  5 /* s_claim: the MAC picked is in use: pick another */
#define MAC_TRIES  8 /* MACs picked before giving up (2^-24 odds each on a full platform) */
#define MAX_VMS    6 /* s_claim: the host holds as many claims as it may (its max_vms) */
#define AFFINITY   7 /* s_claim: the request's placement rule refuses the host (self->rule_why) */
#define STALE      8 /* s_claim: the task moved past the epoch the caller holds it under */

/* A random locally administered unicast MAC (the first octet's bits 1 set, 0 clear). */
static void s_random_mac(char out[PLACEMENT_MAC_MAX])
{
    uint8_t b[6];
    randombytes_buf(b, sizeof b);
    b[0] = (uint8_t)((b[0] & 0xfc) | 0x02);
    snprintf(out, PLACEMENT_MAC_MAX, "%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4],
             b[5]);
}

/* The networks req asks addresses on, in order: SelectHost.networks, or network alone.
   Returns how many (s_invalid has checked there are at most LIMIT_VM_NETWORKS_MAX). */
static int s_networks(const Berth__SelectHost *req, const char *nets[LIMIT_VM_NETWORKS_MAX])
{
    if (req->n_networks > 0) {
        size_t n =
            req->n_networks < LIMIT_VM_NETWORKS_MAX ? req->n_networks : LIMIT_VM_NETWORKS_MAX;
        for (size_t i = 0; i < n; i++)
            nets[i] = req->networks[i];
        return (int)n;
    }
    if (req->network && *req->network) {
        nets[0] = req->network;
        return 1;
    }
    return 0;
}

/* Split the comma-separated list text into up to LIMIT_VM_NETWORKS_MAX items of size each
   in out; returns how many. */
static int s_list(const char *text, char *out, size_t size)
{
    int n = 0;
    while (text && *text && n < LIMIT_VM_NETWORKS_MAX) {
        size_t len = strcspn(text, ",");
        snprintf(out + (size_t)n * size, size, "%.*s", (int)len, text);
        n++;
        text += len;
        if (*text == ',')
            text++;
    }
    return n;
}

/* Try one host for req. 0 (claimed), 1 (rejected: h updated from Redis), RESERVED, CHANGED,
   or -1. with_pool: pass every known host for the any-host check (the script asks when it
   needs them). */
static int s_claim(placement_t *self, const Berth__SelectHost *req, s_host_t *h,
                   const char *previous, int64_t now, int with_pool)
{
    const char *vm = req->vm, *group = req->group ? req->group : "";
    /* Each network's keys, a MAC picked for each, and both lists as the script takes them. */
    const char *nets[LIMIT_VM_NETWORKS_MAX];
    int n_net = s_networks(req, nets);
    char net_key[LIMIT_VM_NETWORKS_MAX][KEYS_MAX], addrs_key[LIMIT_VM_NETWORKS_MAX][KEYS_MAX];
    char net_list[LIMIT_VM_NETWORKS_MAX * (UTIL_ID_LEN + 1)] = "";
    char mac_list[LIMIT_VM_NETWORKS_MAX * PLACEMENT_MAC_MAX] = "";
    for (int i = 0; i < n_net; i++) {
        char mac[PLACEMENT_MAC_MAX];
        keys_build(net_key[i], KEYS_NETWORK, nets[i], NULL);
        keys_build(addrs_key[i], KEYS_NETWORK_ADDRESSES, nets[i], NULL);
        s_random_mac(mac);
        size_t at = strlen(net_list), at_mac = strlen(mac_list);
        snprintf(net_list + at, sizeof net_list - at, "%s%s", i ? "," : "", nets[i]);
        snprintf(mac_list + at_mac, sizeof mac_list - at_mac, "%s%s", i ? "," : "", mac);
    }
    const char *rule = req->placement ? req->placement : "";
    char peers_key[KEYS_MAX], max_vms[24];
    if (*rule)
        keys_build(peers_key, KEYS_REQUEST_HOSTS, req->request, NULL);
    snprintf(max_vms, sizeof max_vms, "%lld", (long long)h->max_vms);
    /* The fencing token: the claim is taken only while the task still holds this epoch. */
    int fenced = req->task && *req->task;
    char task_key[KEYS_MAX], epoch[24] = "";
    if (fenced) {
        keys_task(task_key, req->task);
        snprintf(epoch, sizeof epoch, "%lld", (long long)req->epoch);
    }
    const Berth__Resources *f = req->flavor;
    char claim_key[KEYS_MAX], host_key[KEYS_MAX], prev_key[KEYS_MAX], res_key[KEYS_MAX],
        prev_res_key[KEYS_MAX];
    char vcpus[24], ram[24], disk[24], now_text[24], timeout[24], at[24];
    keys_build(claim_key, KEYS_CLAIM, vm, NULL);
    keys_host(host_key, h->id);
    keys_build(res_key, KEYS_HOST_RESERVATIONS, h->id, NULL);
    if (*previous) {
        keys_host(prev_key, previous);
        keys_build(prev_res_key, KEYS_HOST_RESERVATIONS, previous, NULL);
    } else { /* no claim yet: the script is told the target for both */
        util_strlcpy(prev_key, host_key, sizeof prev_key);
        util_strlcpy(prev_res_key, res_key, sizeof prev_res_key);
    }
    snprintf(vcpus, sizeof vcpus, "%d", f->vcpus);
    snprintf(ram, sizeof ram, "%lld", (long long)f->ram_mb);
    snprintf(disk, sizeof disk, "%lld", (long long)f->disk_gb);
    snprintf(now_text, sizeof now_text, "%lld", (long long)now);
    snprintf(at, sizeof at, "%lld", (long long)clock_now_ms());
    /* The claim script checks the beat too, by the same rule (s_rank_begin): not yet judging,
       any beat will do. */
    snprintf(timeout, sizeof timeout, "%lld",
             self->judging ? (long long)self->config.host_timeout_ms : (long long)INT64_MAX / 4);
    int n_pool = with_pool ? self->n_hosts : 0;
    const char **argv =
        calloc((size_t)(7 + 2 * n_pool + 3 * LIMIT_VM_NETWORKS_MAX + 1 + 1 + 19), sizeof *argv);
    char(*pool)[KEYS_MAX] = calloc((size_t)(2 * n_pool + 1), sizeof *pool);
    if (!argv || !pool) {
        free(argv);
        free(pool);
        return -1;
    }
    const char *head[] = {
        claim_key, host_key, prev_key, STORE_EVENTS, res_key, prev_res_key, KEYS_RESERVATIONS_ANY
    };
    const char *tail[] = { h->id,
                           vcpus,
                           ram,
                           disk,
                           now_text,
                           timeout,
                           self->ratios[0],
                           self->ratios[1],
                           self->ratios[2],
                           previous,
                           vm,
                           group,
                           at,
                           net_list,
                           mac_list,
                           max_vms,
                           rule,
                           *rule ? req->request : "",
                           epoch };
    int argc = 0;
    for (int i = 0; i < 7; i++)
        argv[argc++] = head[i];
    for (int i = 0; i < n_pool; i++) {
        argv[argc++] = keys_host(pool[2 * i], self->hosts[i].id);
        argv[argc++] = keys_build(pool[2 * i + 1], KEYS_HOST_RESERVATIONS, self->hosts[i].id, NULL);
    }
    for (int i = 0; i < n_net; i++) {
        argv[argc++] = net_key[i];
        argv[argc++] = addrs_key[i];
        argv[argc++] = KEYS_MACS;
    }
    if (*rule)
        argv[argc++] = peers_key;
    if (fenced)
        argv[argc++] = task_key;
    int n_keys = argc, n_tail = 19;
    for (int i = 0; i < n_tail; i++)
        argv[argc++] = tail[i];
    redisReply *r = store_run(self->store, &lua_placement_claim, n_keys, argc, argv);
    free(argv);
    free(pool);
    if (!r)
        return -1;
    int rc = -1;
    if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
        r->element[0]->type == REDIS_REPLY_STRING) {
        const char *verdict = r->element[0]->str;
        double old = s_key(self, h);
        if (strcmp(verdict, "OK") == 0 && r->elements == 6) {
            h->used_vcpus = s_int(r->element[1]);
            h->used_ram_mb = s_int(r->element[2]);
            h->used_disk_gb = s_int(r->element[3]);
            s_reorder(self, h, old);
            memset(self->ips, 0, sizeof self->ips);
            memset(self->macs, 0, sizeof self->macs);
            s_list(r->element[4]->str, self->ips[0], sizeof self->ips[0]);
            s_list(r->element[5]->str, self->macs[0], sizeof self->macs[0]);
            rc = 0;
        } else if (strcmp(verdict, "REJECTED") == 0 && r->elements == 9) {
            s_row(h, r->element + 1);
            s_reorder(self, h, old);
            rc = 1;
        } else if (strcmp(verdict, "CHANGED") == 0)
            rc = CHANGED;
        else if (strcmp(verdict, "RESERVED") == 0)
            rc = RESERVED;
        else if (strcmp(verdict, "POOL") == 0 && !with_pool)
            rc = RETRY_POOL;
        else if (strcmp(verdict, "MAC") == 0)
            rc = MAC_TAKEN;
        else if (strcmp(verdict, "MAX_VMS") == 0 && r->elements == 2) {
            h->claims = s_int(r->element[1]);
            rc = MAX_VMS;
        } else if (strcmp(verdict, "AFFINITY") == 0 && r->elements == 2 &&
                   r->element[1]->type == REDIS_REPLY_STRING) {
            self->rule_why =
                strcmp(r->element[1]->str, "affinity") == 0 ? F_AFFINITY : F_ANTI_AFFINITY;
            rc = AFFINITY;
        } else if (strcmp(verdict, "STALE") == 0)
            rc = STALE;
        else if (strcmp(verdict, "NO_NETWORK") == 0 && r->elements >= 2 &&
                 r->element[1]->type == REDIS_REPLY_STRING) {
            util_strlcpy(self->net_refusing, r->element[1]->str, sizeof self->net_refusing);
            snprintf(self->net_why, sizeof self->net_why, "network %s no longer exists",
                     self->net_refusing);
            rc = NETWORK;
        } else if (strcmp(verdict, "EXHAUSTED") == 0 && r->elements >= 4 &&
                   r->element[3]->type == REDIS_REPLY_STRING) {
            util_strlcpy(self->net_refusing, r->element[3]->str, sizeof self->net_refusing);
            snprintf(self->net_why, sizeof self->net_why,
                     "network '%.64s' has no free address: all %lld of its addresses are "
                     "allocated",
                     r->element[1]->str ? r->element[1]->str : self->net_refusing,
                     (long long)s_int(r->element[2]));
            rc = NETWORK;
        }
    }
    if (rc == -1)
        log_debug(NULL, "claim script failed", "{s:s, s:s}", "vm", vm, "error",
                  r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    freeReplyObject(r);
    if (rc == RETRY_POOL)
        return s_claim(self, req, h, previous, now, 1);
    return rc;
}

/* s_claim with another MAC while the one picked is in use. */
static int s_claim_mac(placement_t *self, const Berth__SelectHost *req, s_host_t *h,
                       const char *previous, int64_t now, int with_pool)
{
    for (int i = 0; i < MAC_TRIES; i++) {
        int rc = s_claim(self, req, h, previous, now, with_pool);
        if (rc != MAC_TAKEN)
            return rc;
    }
    log_warn(NULL, "no free MAC found", "{s:s, s:i}", "vm", req->vm, "tries", MAC_TRIES);
    return -1;
}

/* Filters, weigher, claims; with fresh data before any "no". */
static int s_place(placement_t *self, const Berth__SelectHost *req, const char *previous,
                   placement_result_t *result, berth_error_t *error)
{
    int fresh = 0;
    if (s_stale(self)) {
        if (placement_refresh(self) != 0)
            return -1;
        fresh = 1;
    }
    int counts[F_COUNT], busy = 0;
    self->previous = previous;
    for (;;) {
        int64_t now = util_now_ms();
        if (s_peers(self, req) != 0)
            return -1;
        int n = s_rank(self, req, now, counts);
        busy = 0;
        int attempts = 0;
        for (int i = 0; i < n; i++) {
            if (attempts++ >= self->config.max_attempts) {
                busy += n - i; /* passing hosts we gave up on */
                break;
            }
            s_host_t *h = &self->hosts[self->candidates[i].index];
            int rc = s_claim_mac(self, req, h, previous, now, self->any.count > 0);
            if (rc == NETWORK) {
                error_set(error, "CONFLICT", "%s", self->net_why);
                error_detail(error, "network", "%s", self->net_refusing);
                return PLACEMENT_NETWORK;
            }
            if (rc == STALE) {
                error_set(error, "CONFLICT",
                          "task %s is no longer held under epoch %lld: nothing was claimed",
                          req->task, (long long)req->epoch);
                error_detail(error, "reason", "stale");
                return PLACEMENT_CONFLICT;
            }
            if (rc == 0) {
                util_strlcpy(result->host, h->id, sizeof result->host);
                const char *nets[LIMIT_VM_NETWORKS_MAX];
                result->n_networks = s_networks(req, nets);
                memcpy(result->ips, self->ips, sizeof result->ips);
                memcpy(result->macs, self->macs, sizeof result->macs);
                util_strlcpy(result->ip, self->ips[0], sizeof result->ip);
                util_strlcpy(result->mac, self->macs[0], sizeof result->mac);
                s_alternates(self, n, i + 1, result);
                return 0;
            }
            if (rc == RESERVED) {
                counts[F_RESERVED]++;
                continue;
            }
            if (rc == MAX_VMS || rc == AFFINITY) {
                /* Filled by another scheduler, or its VMs of this request moved meanwhile. */
                counts[rc == MAX_VMS ? F_MAX_VMS : self->rule_why]++;
                continue;
            }
            if (rc != 1)
                return rc;
            /* Lost a race: count the host under the filter that removes it now. */
            int why = s_filter(self, h, req, now);
            if (why == F_PASS)
                busy++;
            else
                counts[why]++;
        }
        /* No claim taken: the hosts the ranking did not reach count too (as busy when they
           pass: the attempts ran out before them). */
        s_rank_rest(self, req, now, counts, &busy);
        if (fresh)
            break;
        if (placement_refresh(self) != 0)
            return -1;
        fresh = 1;
    }
    memcpy(self->removed, counts, sizeof(int) * F_COUNT);
    self->removed[F_COUNT] = busy;
    char extra[256] = "";
    /* The filters added after the first six are named only when they removed a host. */
    for (int i = F_HYPERVISOR; i < F_COUNT; i++)
        if (counts[i])
            snprintf(extra + strlen(extra), sizeof extra - strlen(extra), ", %s: %d",
                     s_filter_names[i], counts[i]);
    if (busy)
        snprintf(extra + strlen(extra), sizeof extra - strlen(extra), ", busy: %d", busy);
    if (self->truncated)
        snprintf(extra + strlen(extra), sizeof extra - strlen(extra),
                 " (only the first %d hosts were considered)", self->config.max_hosts);
    error_set(error, "NO_VALID_HOST",
              "no valid host: %d hosts; removed by state: %d, exclude: %d, ram: %d, vcpus: %d, "
              "disk: %d, reserved: %d%s",
              self->n_hosts, counts[F_STATE], counts[F_EXCLUDE], counts[F_RAM], counts[F_VCPUS],
              counts[F_DISK], counts[F_RESERVED], extra);
    placement_removed(self, error);
    return PLACEMENT_NO_VALID_HOST;
}

/* BAD_REQUEST naming the first field of req that breaks a rule; 0 when all are fine. */
static int s_invalid(const placement_t *self, const Berth__SelectHost *req, berth_error_t *error)
{
    const placement_config_t *c = &self->config;
    if (!util_is_uuid(req->vm))
        return error_field(error, "vm", "vm must be a lower-case UUID");
    const Berth__Resources *f = req->flavor;
    if (!f)
        return error_field(error, "flavor", "flavor is required");
    if (f->vcpus < 1 || f->vcpus > c->max_vcpus)
        return error_field(error, "flavor.vcpus",
                           "flavor.vcpus must be positive and within the configured maximum");
    if (f->ram_mb < 1 || f->ram_mb > c->max_ram_mb)
        return error_field(error, "flavor.ram_mb",
                           "flavor.ram_mb must be positive and within the configured maximum");
    if (f->disk_gb < 1 || f->disk_gb > c->max_disk_gb)
        return error_field(error, "flavor.disk_gb",
                           "flavor.disk_gb must be positive and within the configured maximum");
    if (req->n_exclude > (size_t)c->max_exclude)
        return error_field(error, "exclude",
                           "exclude lists more hosts than the configured maximum");
    for (size_t i = 0; i < req->n_exclude; i++)
        if (!req->exclude[i] || !*req->exclude[i] || strlen(req->exclude[i]) >= PLACEMENT_ID_MAX)
            return error_field(error, "exclude", "exclude holds an empty or overlong host id");
    if (req->group && (strlen(req->group) >= GROUP_ID_MAX || strchr(req->group, ':')))
        return error_field(error, "group", "group must be a group id");
    if (req->network && *req->network && !util_is_uuid(req->network))
        return error_field(error, "network", "network must be a network id");
    if (req->n_networks > LIMIT_VM_NETWORKS_MAX)
        return error_field(error, "networks", "networks lists more than %d networks",
                           LIMIT_VM_NETWORKS_MAX);
    for (size_t i = 0; i < req->n_networks; i++) {
        if (!req->networks[i] || !util_is_uuid(req->networks[i]))
            return error_field(error, "networks", "networks[%zu] must be a network id", i);
        for (size_t j = 0; j < i; j++)
            if (strcmp(req->networks[i], req->networks[j]) == 0)
                return error_field(error, "networks", "networks[%zu] is listed twice", i);
    }
    if (req->n_networks > 0 && req->network && *req->network &&
        strcmp(req->network, req->networks[0]) != 0)
        return error_field(error, "network", "network must be the first of networks");
    if (req->n_prefer > (size_t)c->max_exclude)
        return error_field(error, "prefer",
                           "prefer lists more hosts than the configured maximum (max_exclude)");
    if (req->hypervisor && strlen(req->hypervisor) >= HYPERVISOR_MAX)
        return error_field(error, "hypervisor", "hypervisor must be a hypervisor name");
    if (req->task && *req->task && (!util_is_uuid(req->task) || req->epoch < 1))
        return error_field(error, "task", "task must be a task id, with its epoch (1 or more)");
    if (req->placement && *req->placement) {
        if (strcmp(req->placement, "affinity") != 0 && strcmp(req->placement, "anti-affinity") != 0)
            return error_field(error, "placement", "placement must be affinity or anti-affinity");
        if (!req->request || !util_is_uuid(req->request))
            return error_field(error, "request", "request must be a request id with placement");
    }
    return 0;
}

int placement_select(placement_t *self, const Berth__SelectHost *req, placement_result_t *result,
                     berth_error_t *error)
{
    if (s_invalid(self, req, error) != 0)
        return PLACEMENT_BAD_REQUEST;
    memset(result, 0, sizeof *result);
    char claim_key[KEYS_MAX];
    keys_build(claim_key, KEYS_CLAIM, req->vm, NULL);
    const Berth__Resources *f = req->flavor;
    for (int round = 0; round < ROUNDS; round++) {
        /* A first placement (nothing excluded yet) normally finds no claim: claim at once,
           as if none were there. The claim step refuses (CHANGED) when one is, and the next
           round reads it: one Redis round trip instead of two in the common case. */
        if (round == 0 && req->n_exclude == 0) {
            int rc = s_place(self, req, "", result, error);
            if (rc != CHANGED)
                return rc;
            continue;
        }
        redisReply *r = store_command(
            self->store, "HMGET %s host vcpus ram_mb disk_gb network ip mac networks ips macs",
            claim_key);
        if (!r)
            return -1;
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 10) {
            freeReplyObject(r);
            return -1;
        }
        char previous[PLACEMENT_ID_MAX] = "";
        if (r->element[0]->type == REDIS_REPLY_STRING)
            util_strlcpy(previous, r->element[0]->str, sizeof previous);
        int same = s_int(r->element[1]) == f->vcpus && s_int(r->element[2]) == f->ram_mb &&
                   s_int(r->element[3]) == f->disk_gb;
        /* A disk-only claim (a shelved VM's, placement_shrink) is placed again whole: on
           its own host if that fits, else on another one (the claim moves there). */
        int shelved = s_int(r->element[1]) == 0 && s_int(r->element[2]) == 0 &&
                      s_int(r->element[3]) == f->disk_gb;
        /* The addresses the claim holds, when it is on the networks asked for (claims from
           before several networks name one, in network, ip and mac). */
        const char *nets[LIMIT_VM_NETWORKS_MAX];
        int n_net = s_networks(req, nets), at = r->element[7]->type == REDIS_REPLY_STRING ? 7 : 4;
        char held[LIMIT_VM_NETWORKS_MAX][UTIL_ID_LEN] = { { 0 } };
        char ips[LIMIT_VM_NETWORKS_MAX][PLACEMENT_IP_MAX] = { { 0 } };
        char macs[LIMIT_VM_NETWORKS_MAX][PLACEMENT_MAC_MAX] = { { 0 } };
        int n_held = s_list(r->element[at]->str, held[0], sizeof held[0]);
        s_list(r->element[at + 1]->str, ips[0], sizeof ips[0]);
        s_list(r->element[at + 2]->str, macs[0], sizeof macs[0]);
        int addressed = n_net == 0 || n_held == n_net;
        for (int i = 0; i < n_net && addressed; i++)
            addressed = strcmp(held[i], nets[i]) == 0 && *ips[i] && *macs[i];
        /* A claim holding only its address (placement_release_capacity) is placed again
           whole, like a shelved one. */
        int bare =
            s_int(r->element[1]) == 0 && s_int(r->element[2]) == 0 && s_int(r->element[3]) == 0;
        freeReplyObject(r);
        if (*previous && !s_excluded(req, previous) && !shelved && !bare && addressed) {
            /* Asked again (a retry, another instance): the claim already taken stands. */
            if (!same) {
                error_set(error, "CONFLICT",
                          "vm %s already holds a claim of a different flavor on host %s", req->vm,
                          previous);
                return PLACEMENT_CONFLICT;
            }
            util_strlcpy(result->host, previous, sizeof result->host);
            result->n_networks = n_net;
            memcpy(result->ips, ips, sizeof result->ips);
            memcpy(result->macs, macs, sizeof result->macs);
            util_strlcpy(result->ip, ips[0], sizeof result->ip);
            util_strlcpy(result->mac, macs[0], sizeof result->mac);
            result->existing = 1;
            if (s_stale(self) && placement_refresh(self) != 0)
                return -1;
            self->previous = previous;
            if (s_peers(self, req) != 0)
                return -1;
            int counts[F_COUNT];
            s_alternates(self, s_rank(self, req, util_now_ms(), counts), 0, result);
            return 0;
        }
        int rc = s_place(self, req, previous, result, error);
        if (rc != CHANGED)
            return rc;
    }
    error_set(error, "CONFLICT", "the claim of vm %s kept changing while placing it; retry",
              req->vm);
    return PLACEMENT_CONFLICT;
}

/* Release vm's claim, all of it or (keep_disk) its vCPUs and RAM only. */
static int s_release(placement_t *self, const char *vm, int keep_disk, int keep_address,
                     int *released, berth_error_t *error)
{
    if (!util_is_uuid(vm)) {
        error_field(error, "vm", "vm must be a lower-case UUID");
        return PLACEMENT_BAD_REQUEST;
    }
    char claim_key[KEYS_MAX], host_key[KEYS_MAX], res_key[KEYS_MAX],
        addrs_key[LIMIT_VM_NETWORKS_MAX][KEYS_MAX], peers_key[KEYS_MAX];
    keys_build(claim_key, KEYS_CLAIM, vm, NULL);
    for (int round = 0; round < ROUNDS; round++) {
        redisReply *r =
            store_command(self->store, "HMGET %s host network request networks", claim_key);
        if (!r)
            return -1;
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 4) {
            freeReplyObject(r);
            return -1;
        }
        if (r->element[0]->type == REDIS_REPLY_NIL) {
            freeReplyObject(r);
            *released = 0;
            return 0;
        }
        if (r->element[0]->type != REDIS_REPLY_STRING || r->element[0]->len >= PLACEMENT_ID_MAX) {
            freeReplyObject(r);
            return -1;
        }
        /* The claim's networks as it names them: its networks field, else its network. */
        char host[PLACEMENT_ID_MAX], net[LIMIT_VM_NETWORKS_MAX * (UTIL_ID_LEN + 1)] = "";
        memcpy(host, r->element[0]->str, r->element[0]->len + 1);
        if (r->element[3]->type == REDIS_REPLY_STRING)
            util_strlcpy(net, r->element[3]->str, sizeof net);
        else if (r->element[1]->type == REDIS_REPLY_STRING)
            util_strlcpy(net, r->element[1]->str, sizeof net);
        char nets[LIMIT_VM_NETWORKS_MAX][UTIL_ID_LEN] = { { 0 } };
        int n_net = s_list(net, nets[0], sizeof nets[0]);
        /* The request whose placement rule recorded the claim's host ("-": none). */
        keys_build(peers_key, KEYS_REQUEST_HOSTS,
                   r->element[2]->type == REDIS_REPLY_STRING && util_is_uuid(r->element[2]->str)
                       ? r->element[2]->str
                       : "-",
                   NULL);
        freeReplyObject(r);
        for (int i = 0; i < (n_net ? n_net : 1); i++)
            keys_build(addrs_key[i], KEYS_NETWORK_ADDRESSES, n_net ? nets[i] : "-", NULL);
        keys_host(host_key, host);
        char now[24];
        snprintf(now, sizeof now, "%lld", (long long)clock_now_ms());
        keys_build(res_key, KEYS_HOST_RESERVATIONS, host, NULL);
        /* KEYS: five, an address key per network (one without), the MACs, the request's
           hosts; then ARGV. */
        int n_addrs = n_net ? n_net : 1, argc = 0;
        char count[8];
        snprintf(count, sizeof count, "%d", n_addrs);
        const char *argv[7 + LIMIT_VM_NETWORKS_MAX + 1 + 7];
        const char *head[] = { claim_key, host_key, STORE_EVENTS, res_key, KEYS_RESERVATIONS_ANY };
        for (int i = 0; i < 5; i++)
            argv[argc++] = head[i];
        for (int i = 0; i < n_addrs; i++)
            argv[argc++] = addrs_key[i];
        argv[argc++] = KEYS_MACS;
        argv[argc++] = peers_key;
        int n_keys = argc;
        const char *tail[] = { host, vm, now, keep_disk ? "1" : "", net, keep_address ? "1" : "",
                               count };
        for (int i = 0; i < 7; i++)
            argv[argc++] = tail[i];
        r = store_run(self->store, &lua_placement_release, n_keys, argc, argv);
        if (!r)
            return -1;
        int verdict = r->type != REDIS_REPLY_STRING     ? -1
                      : strcmp(r->str, "RELEASED") == 0 ? 1
                      : strcmp(r->str, "NONE") == 0     ? 0
                      : strcmp(r->str, "CHANGED") == 0  ? CHANGED
                                                        : -1;
        if (verdict == -1)
            log_debug(NULL, "release script failed", "{s:s, s:s}", "vm", vm, "error",
                      r->str ? r->str : "unexpected reply");
        freeReplyObject(r);
        if (verdict == 0 || verdict == 1) {
            *released = verdict;
            return 0;
        }
        if (verdict == -1)
            return -1;
    }
    error_set(error, "CONFLICT", "the claim of vm %s kept changing while releasing it; retry", vm);
    return PLACEMENT_CONFLICT;
}

int placement_release(placement_t *self, const char *vm, int *released, berth_error_t *error)
{
    return s_release(self, vm, 0, 0, released, error);
}

int placement_release_capacity(placement_t *self, const char *vm, int *released,
                               berth_error_t *error)
{
    return s_release(self, vm, 0, 1, released, error);
}

int placement_shrink(placement_t *self, const char *vm, int *released, berth_error_t *error)
{
    return s_release(self, vm, 1, 0, released, error);
}

int placement_removed(placement_t *self, berth_error_t *error)
{
    for (int i = 0; i < F_COUNT; i++)
        if (self->removed[i])
            error_detail(error, s_filter_names[i], "%d", self->removed[i]);
    if (self->removed[F_COUNT])
        error_detail(error, "busy", "%d", self->removed[F_COUNT]);
    error_detail(error, "hosts", "%d", self->n_hosts);
    return -1;
}

int placement_capacities(placement_t *self, int64_t (*sizes)[3], int max)
{
    if (self->n_hosts == 0 && placement_refresh(self) != 0)
        return -1;
    int n = 0;
    for (int i = 0; i < self->n_hosts && n < max; i++) {
        double usable[3];
        s_usable(self, &self->hosts[i], usable);
        for (int d = 0; d < 3; d++)
            sizes[n][d] = (int64_t)usable[d];
        n++;
    }
    return n;
}
