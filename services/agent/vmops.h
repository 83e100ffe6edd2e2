/*  vmops: what the agent does to libvirt. Owns one libvirt connection (reopened when it
    drops) and the agent's storage pool, and turns one AgentCommand into one AgentResult:
    CREATE_DISK, PUT_SEED, DEFINE, START, DESTROY, the day-2 power operations SHUTDOWN
    (graceful, then forced after timeout_s), POWER_OFF, REBOOT, RESET, SUSPEND and RESUME,
    and a capture's CAPTURE_SNAPSHOT and CAPTURE_CLEANUP,
    each idempotent and keyed by VM id.
    A vmops_t is used by one thread; the agent's worker threads each own one. */
#ifndef BERTH_AGENT_VMOPS_H
#define BERTH_AGENT_VMOPS_H

#include "berth.pb-c.h"

#include <libvirt/libvirt.h>
#include <stdint.h>

typedef struct _vmops_t vmops_t;

/* Settings, copied by vmops_new(). Limits bound what a command may ask for. */
typedef struct {
    const char *uri;             /* libvirt URI, e.g. test:///default or qemu:///system */
    const char *host;            /* host name, for error messages */
    const char *data_dir;        /* the pool directory is <data_dir>/pool */
    const char *pool;            /* libvirt storage pool name */
    int64_t max_vcpus;           /* per VM */
    int64_t max_ram_mb;          /* per VM */
    int64_t max_disk_gb;         /* per VM */
    int64_t max_seed_bytes;      /* largest seed ISO accepted */
    int64_t max_name_len;        /* longest VM name (domain title) */
    int64_t delay_ms;            /* test/diagnostic: sleep before each command's libvirt work */
    const char *qemu_img;        /* the tool a full copy of a base image is made with */
    int64_t copy_timeout_ms;     /* the longest a full copy may take */
    const char *image_cache_dir; /* the image cache: a linked clone's base is noted in its refs */
    int quiet; /* log connection state changes at debug: another connection reports them */
} vmops_config_t;

/* NULL when the data directory cannot be created. Does not need libvirt to be up. */
vmops_t *vmops_new(const vmops_config_t *config);
void vmops_destroy(vmops_t **self_p);

/* Make sure the connection is open and alive and the storage pool exists and runs
   (defining, building and starting it if missing). 0 when both hold; -1, logged once per
   change of state, otherwise. */
int vmops_connect(vmops_t *self);

/* The open connection (borrowed), or NULL when libvirt is unreachable. */
virConnectPtr vmops_conn(vmops_t *self);

/* libvirt driver name ("TEST", "QEMU"), or NULL when unreachable. */
const char *vmops_hypervisor(vmops_t *self);

/* Capacity of the storage pool in GiB; -1 when unknown. */
int64_t vmops_pool_capacity_gb(vmops_t *self);

/* Absolute directory of the pool (the seed files live there). */
const char *vmops_pool_dir(vmops_t *self);

/* What the host has, as the heartbeat reports it: state (UP when libvirt and the pool are
   usable, else DOWN), hypervisor, capacity (node CPUs and memory, pool size) and every
   domain with its power state. Fills *host (every string, the capacity and the domain list
   heap-allocated; release with vmops_inventory_clear). Never fails: what cannot be read is
   left empty. */
void vmops_inventory(vmops_t *self, Berth__Host *host);
void vmops_inventory_clear(Berth__Host *host);

/* Run one command and fill *result (every string heap-allocated; release with
   vmops_result_clear). Never fails to produce a result: bad input and libvirt errors give
   ok = false and an error that names the thing and carries libvirt's reason. */
void vmops_execute(vmops_t *self, const Berth__AgentCommand *cmd, Berth__AgentResult *result);

/* Free the strings of a result filled by vmops_execute or vmops_result_copy. */
void vmops_result_clear(Berth__AgentResult *result);

/* Deep copy of src into *dst; -1 when out of memory. */
int vmops_result_copy(Berth__AgentResult *dst, const Berth__AgentResult *src);

/* The capture file of upload_id under data_dir (<data_dir>/captures/<id>.qcow2): 0, or -1
   when upload_id is not a UUID or the path too long. */
int vmops_capture_path(const char *data_dir, const char *upload_id, char *out, size_t size);

/* The Berth power state name of a libvirt domain state (RUNNING, STOPPED, ...). */
const char *vmops_power_state(int state);

#endif
