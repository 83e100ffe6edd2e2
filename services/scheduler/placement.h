/*  placement: choose a host for a VM and claim its flavor there. Filters, in the order applied
    (the first that removes a host counts it, under the name given):
      state          the host is UP and its heartbeat recent
      exclude        not one of SelectHost.exclude (builds failed there)
      hypervisor     its hypervisor is SelectHost.hypervisor (without case; empty: any)
      ram, vcpus, disk  free capacity, with the overcommit ratios
      reserved       other groups' reservations (on the host, or the any-host pool) stay free
      max_vms        fewer claims on it than its max_vms_hosts limit, else max_vms_per_host
                     (0: no limit)
      affinity       SelectHost.placement "affinity": the host the request's other VMs are on
      anti_affinity  "anti-affinity": a host none of the request's other VMs is on
    then a weigher (the VM's group's own reservation first, then free RAM: spread, or pack, a
    setting), then an atomic claim in Redis that takes the group's reservation first
    (placement.c explains the rule). The host list is cached in memory and refreshed; the claim
    itself is a Lua script that re-checks free capacity, the host's claim count and the
    request's placement rule, so any number of scheduler instances can place concurrently and
    never overcommit a host nor break a rule. */
#ifndef BERTH_SCHEDULER_PLACEMENT_H
#define BERTH_SCHEDULER_PLACEMENT_H

#include "berth.pb-c.h"
#include "error.h"
#include "limit.h"
#include "store.h"

#define PLACEMENT_BAD_REQUEST   1 /* the request is malformed (error says what) */
#define PLACEMENT_NO_VALID_HOST 2 /* no host passes; error counts what each filter removed */
#define PLACEMENT_CONFLICT      3 /* the VM already holds a claim of a different flavor */
#define PLACEMENT_NETWORK       4 /* the VM's network is gone or has no free address */

#define PLACEMENT_ID_MAX         128 /* longest host id, with its NUL */
#define PLACEMENT_ALTERNATES_MAX 8
#define PLACEMENT_IP_MAX         16 /* a dotted IPv4 address, with its NUL */
#define PLACEMENT_MAC_MAX        18 /* aa:bb:cc:dd:ee:ff, with its NUL */

typedef struct {
    int64_t host_timeout_ms; /* a host not seen for longer is not UP */
    int64_t down_grace_ms;   /* hosts judged by their beats once Redis answered this long */
    double ram_ratio;        /* usable RAM = capacity * ratio */
    double cpu_ratio;        /* vCPU overcommit */
    double disk_ratio;
    int64_t refresh_ms;       /* a cached host list older than this is reloaded first */
    int max_hosts;            /* most hosts considered (the rest are ignored, flagged) */
    int max_exclude;          /* longest exclude list accepted */
    int max_alternates;       /* alternates returned, <= PLACEMENT_ALTERNATES_MAX */
    int max_attempts;         /* claims tried (races lost) before giving up */
    int pack;                 /* weigher: 0 spread (most RAM left first), 1 pack (least first) */
    int64_t max_vms_per_host; /* most claims on one host (0: no limit) */
    int64_t max_vcpus;        /* largest flavor accepted (default: lib/limit.h's) */
    int64_t max_ram_mb;
    int64_t max_disk_gb;
    /* Hosts' own limits over max_vms_per_host: "host=N,host=N" (NULL or "": none); borrowed,
       read by placement_new. */
    const char *max_vms_hosts;
} placement_config_t;

/* The documented defaults (ratios RAM 1.0, vCPU 4.0, disk 1.0; host timeout 3 s, ...). */
void placement_config_defaults(placement_config_t *config);

/* 0 when text is a list of per-host limits as max_vms_hosts takes it ("host=N,host=N", N from
   0 to 1000000, 0: no limit on that host; NULL or "": none), else -1. */
int placement_max_vms_hosts_valid(const char *text);

typedef struct {
    char host[PLACEMENT_ID_MAX];
    char alternates[PLACEMENT_ALTERNATES_MAX][PLACEMENT_ID_MAX];
    int n_alternates;
    int existing;                /* the VM already held this claim: nothing new was taken */
    char ip[PLACEMENT_IP_MAX];   /* its address on its first network ("" without one) */
    char mac[PLACEMENT_MAC_MAX]; /* and its MAC */
    int n_networks;              /* the networks it is on (SelectHost.networks, or network) */
    char ips[LIMIT_VM_NETWORKS_MAX][PLACEMENT_IP_MAX];   /* its address on each, in order */
    char macs[LIMIT_VM_NETWORKS_MAX][PLACEMENT_MAC_MAX]; /* and its MAC there */
} placement_result_t;

typedef struct _placement_t placement_t;

/* store is borrowed and must outlive the placement. */
placement_t *placement_new(store_t *store, const placement_config_t *config);
void placement_destroy(placement_t **self_p);

/* Pick and claim a host for vm (idempotent by vm). 0 and *result; PLACEMENT_BAD_REQUEST
   (error: BAD_REQUEST naming the field), PLACEMENT_NO_VALID_HOST (error: NO_VALID_HOST with
   the counts of placement_removed), PLACEMENT_CONFLICT (error: CONFLICT) or PLACEMENT_NETWORK
   (error: CONFLICT naming the network: gone, or no free address); -1 when Redis
   failed (error untouched). If the VM holds a claim on a host it now excludes, the claim moves
   to the new host in the same step. */
int placement_select(placement_t *self, const Berth__SelectHost *request,
                     placement_result_t *result, berth_error_t *error);

/* Give vm's claim back to its host (idempotent). 0 with *released (0 when there was no
   claim), PLACEMENT_BAD_REQUEST (error names the field vm) or PLACEMENT_CONFLICT with error,
   or -1 when Redis failed (error untouched). */
int placement_release(placement_t *self, const char *vm, int *released, berth_error_t *error);

/* As placement_release, but a claim holding a network address keeps it (and its MAC): its
   capacity all goes back and the claim stays with none, so that the VM's next placement (a
   retry elsewhere) keeps its address; the full release at its disposal gives it back. */
int placement_release_capacity(placement_t *self, const char *vm, int *released,
                               berth_error_t *error);

/* Shelving: vm's claim gives its vCPUs and RAM back to the host and keeps the disk, which
   stays there; placement_select places such a claim again whole. As placement_release. */
int placement_shrink(placement_t *self, const char *vm, int *released, berth_error_t *error);

/* After PLACEMENT_NO_VALID_HOST (placement_select has already called it): add to error's details
   how many hosts each filter removed
   ("ram": "3", "reserved": "1"; filters that removed none are left out), "busy" (hosts that passed
   but were claimed by others meanwhile) and "hosts" (how many were considered). Returns -1. */
int placement_removed(placement_t *self, berth_error_t *error);

#define PLACEMENT_FILTERS 10 /* the filters placement_removed names */

/* The hosts a decision for request would try, in order, without claiming: ids[0 .. returned)
   (at most max), the preferred hosts that pass, then the best of the others in weigher order,
   as many as a decision may use (max_attempts + max_alternates + 1). scan 0: ranked as
   placement_select ranks them; scan 1: by filtering every host (the reference that ranking
   must agree with). removed[0 .. PLACEMENT_FILTERS) gets the hosts each filter removed and
   removed[PLACEMENT_FILTERS] those that pass but are not in ids' order (whichever way they were
   ranked, the counts are those of every host). The number of ids, or -1 (Redis). */
int placement_rank(placement_t *self, const Berth__SelectHost *request, int scan,
                   char (*ids)[PLACEMENT_ID_MAX], int max, int removed[PLACEMENT_FILTERS + 1]);

/* Reload the host list now. 0 or -1 when Redis failed. */
int placement_refresh(placement_t *self);
/* Keep the copy current from the event stream (host.usage and host.state events since the
   last load, a full load after a gap or for a host it does not know) and liveness from the
   beats' ttl (berth:hosts:seen). From the first call on, decisions no longer reload the copy
   when it ages (the owner reloads it now and then with placement_refresh). 0 or -1. */
int placement_follow(placement_t *self);
/* Full loads of the host list so far (at start, when stale, before a "no valid host"). */
int64_t placement_loads(placement_t *self);
/* Hosts of the last load whose stored state is state ("UP", "DOWN", "DISABLED"). */
int placement_hosts_in(placement_t *self, const char *state);

/* The usable size of each host in the cache, whatever its state and what it holds now
   (capacity with the overcommit ratios: vCPUs, RAM MB, disk GB): what it could ever hold.
   sizes[0 .. returned) (at most max), or -1 when the first load failed. */
int placement_capacities(placement_t *self, int64_t (*sizes)[3], int max);

/* Hosts in the cache, and whether the last load left some out (more than max_hosts). */
int placement_hosts(placement_t *self);
int placement_truncated(placement_t *self);

#endif
