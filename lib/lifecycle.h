/*  lifecycle: the one table of states and transitions. VM lifecycle states, VM power states,
    task states and request states are each declared once here, with their names; the
    transitions between them are a table of rows (kind, from, to, name) that model_tx checks
    before it writes anything, and that `berth-lifecycle --markdown` turns into the state
    diagrams of docs/state.md. Lifecycle state (what the platform manages) and power state
    (what the hypervisor reports) are two kinds with two fields, never mixed. */
#ifndef BERTH_LIFECYCLE_H
#define BERTH_LIFECYCLE_H

#include <stddef.h>
#include <stdio.h>

/* An enum declared once with its names, in the manner of libvirt's VIR_ENUM_DECL/IMPL:
   LIFECYCLE_ENUM_DECL(vm_state) declares vm_state_to_string() and vm_state_from_string();
   LIFECYCLE_ENUM_IMPL(vm_state, VM_STATE_LAST, "", "PENDING_APPROVAL", ...) defines them
   and fails the build when the names and the enum differ in length. */
#define LIFECYCLE_ENUM_DECL(name)                                                                  \
    const char *name##_to_string(int value);                                                       \
    int name##_from_string(const char *text);                                                      \
    extern const char *const name##_names[]

#define LIFECYCLE_ENUM_IMPL(name, last, ...)                                                       \
    const char *const name##_names[] = { __VA_ARGS__ };                                            \
    _Static_assert(sizeof name##_names / sizeof name##_names[0] == (last),                         \
                   #name ": the names do not match the enum");                                     \
    const char *name##_to_string(int value)                                                        \
    {                                                                                              \
        return value >= 0 && value < (last) ? name##_names[value] : NULL;                          \
    }                                                                                              \
    int name##_from_string(const char *text)                                                       \
    {                                                                                              \
        for (int i = 0; text && i < (last); i++)                                                   \
            if (strcmp(name##_names[i], text) == 0)                                                \
                return i;                                                                          \
        return -1;                                                                                 \
    }

/* Every enum's value 0 is NONE, named "": the object does not exist yet. A transition from
   NONE creates the object. */

typedef enum {
    VM_STATE_NONE,
    VM_STATE_PENDING_APPROVAL, /* waiting for an administrator */
    VM_STATE_PROVISIONING,     /* approved; its PROVISION task builds it */
    VM_STATE_ACTIVE,           /* built and handed to its owner */
    VM_STATE_ERROR,            /* provisioning or disposal failed; `fault` says why */
    VM_STATE_DISPOSING,        /* its DISPOSE task removes it */
    VM_STATE_DISPOSED,         /* gone from its host; resources given back */
    VM_STATE_REJECTED,         /* an administrator refused the request */
    /* Shelving (day-2 actions, services/taskmgr/tasks.c). */
    VM_STATE_SHELVING,   /* its SHELVE task powers it off and gives back vCPUs and RAM */
    VM_STATE_SHELVED,    /* powered off; its disk kept on its host; holds no vCPUs or RAM */
    VM_STATE_UNSHELVING, /* its UNSHELVE task places it again and powers it on */
    /* leases */
    VM_STATE_EXPIRING, /* its lease ends soon: the owner was given notice */
    VM_STATE_EXPIRED,  /* its lease ended: powered off, kept as a tombstone until disposed */
    /* instant deploy: a template's pool (services/approval/pool.c) */
    VM_STATE_POOLING, /* built ahead for its template's pool by its POOL_BUILD task; no owner */
    VM_STATE_POOLED,  /* built, booted and suspended to disk: waits for a request to take it */
    VM_STATE_LAST
} vm_state_t;
LIFECYCLE_ENUM_DECL(vm_state);

typedef enum {
    POWER_STATE_NONE,
    POWER_STATE_NOSTATE,   /* no domain on any host (not built yet, or removed) */
    POWER_STATE_RUNNING,   /* running (or blocked on I/O) */
    POWER_STATE_STOPPED,   /* defined but shut off */
    POWER_STATE_SUSPENDED, /* paused or suspended to memory */
    POWER_STATE_CRASHED,   /* the guest crashed */
    POWER_STATE_UNKNOWN,   /* its host is unreachable: never read this as off */
    POWER_STATE_LAST
} power_state_t;
LIFECYCLE_ENUM_DECL(power_state);

typedef enum {
    TASK_STATE_NONE,
    TASK_STATE_QUEUED,    /* waiting in berth:tasks:due for a holder */
    TASK_STATE_RUNNING,   /* a taskmgr instance holds it and runs its stages */
    TASK_STATE_SUCCEEDED, /* every stage done */
    TASK_STATE_FAILED,    /* gave up; `fault` says why (stages were rolled back) */
    TASK_STATE_ABORTED,   /* stopped on request */
    TASK_STATE_ABORTING,  /* abort asked: rolling back from its next stage boundary */
    TASK_STATE_LAST
} task_state_t;
LIFECYCLE_ENUM_DECL(task_state);

typedef enum {
    REQUEST_STATE_NONE,
    REQUEST_STATE_PENDING_APPROVAL, /* its template requires an administrator's decision */
    REQUEST_STATE_APPROVED,         /* by policy or by an administrator; its VMs provision */
    REQUEST_STATE_REJECTED,         /* refused, with a reason */
    REQUEST_STATE_LAST
} request_state_t;
LIFECYCLE_ENUM_DECL(request_state);

/* reconcile: a host's state, written by taskmgr (agents.c) from its heartbeats and by the
   operator's maintenance switch; the scheduler places only on UP hosts. */
typedef enum {
    HOST_STATE_NONE,
    HOST_STATE_UP,       /* its agent beats: new VMs may be placed on it */
    HOST_STATE_DOWN,     /* missed its heartbeats (or libvirt unreachable): VMs' power UNKNOWN */
    HOST_STATE_DISABLED, /* in maintenance: no new placements, its VMs untouched */
    HOST_STATE_LAST
} host_state_t;
LIFECYCLE_ENUM_DECL(host_state);

/* The image store (services/stager/catalog.h): a model image's state. */
typedef enum {
    IMAGE_STATE_NONE,
    IMAGE_STATE_IMPORTING, /* accepted: its file is being copied and checked */
    IMAGE_STATE_READY,     /* its file is in the store, checked; templates may name it */
    IMAGE_STATE_FAILED,    /* its import failed after it was accepted; `fault` says why */
    IMAGE_STATE_DELETING,  /* a deletion checks nothing uses it; then it is removed */
    IMAGE_STATE_STAGING,   /* a staged image being derived from its model (stage, percent) */
    IMAGE_STATE_LAST
} image_state_t;
LIFECYCLE_ENUM_DECL(image_state);

/* The kinds of state. Each kind lives in one hash field of one kind of object and announces
   its changes with one event type on berth:events. */
typedef enum {
    LIFECYCLE_VM,
    LIFECYCLE_POWER,
    LIFECYCLE_TASK,
    LIFECYCLE_REQUEST,
    LIFECYCLE_HOST, /* reconcile: UP, DOWN, DISABLED */
    LIFECYCLE_IMAGE, /* the image store: IMPORTING, STAGING, READY, FAILED, DELETING */
    LIFECYCLE_KIND_LAST
} lifecycle_kind_t;

typedef struct {
    const char *name;          /* "vm", "power", "task", "request", "host" */
    const char *object;        /* the object whose hash holds it: "vm", "task", "request", "host" */
    const char *field;         /* the hash field: "state" or "power_state" */
    const char *event;         /* the event type on berth:events: "vm.state", ... */
    const char *const *states; /* names, indexed by the kind's enum; [0] = "" (none) */
    int n_states;              /* the kind's *_LAST */
    const char *title;         /* heading in docs/state.md */
} lifecycle_kind_info_t;

#define LIFECYCLE_ANY (-1) /* as `from`: whatever the state is now (observed states) */

typedef struct {
    lifecycle_kind_t kind;
    int from;         /* value of the kind's enum; 0 (NONE) creates, LIFECYCLE_ANY observes */
    int to;           /* value of the kind's enum, never NONE */
    const char *name; /* the transition, written in its event as `transition` */
    const char *by;   /* the service that makes it */
    const char *when; /* one line for the docs */
} lifecycle_transition_t;

/* The kind's description; NULL for a value out of range. */
const lifecycle_kind_info_t *lifecycle_kind(lifecycle_kind_t kind);

/* The kind whose name is text ("vm", "power", ...), or -1. */
int lifecycle_kind_from_string(const char *text);

/* Every row of the table, *count of them, in the order the docs show them. */
const lifecycle_transition_t *lifecycle_transitions(size_t *count);

/* The row that allows kind to go from -> to (names as stored; "" = the object does not exist
   yet), or NULL. An observed kind (rows from LIFECYCLE_ANY) allows any from but "", and
   only a change: from == to is no transition. */
const lifecycle_transition_t *lifecycle_find(lifecycle_kind_t kind, const char *from,
                                             const char *to);

/* 0 when the table allows it; -1 with a sentence in error naming the kind, both states and
   what is wrong ("vm: ACTIVE -> PROVISIONING is not an allowed transition", "'FOO' is not a
   vm state"). from NULL asks whether `to` may be observed whatever the state is now. */
int lifecycle_check(lifecycle_kind_t kind, const char *from, const char *to, char *error,
                    size_t error_size);

/* True when the kind's changes are observed (power): its rows come from LIFECYCLE_ANY. */
int lifecycle_observed(lifecycle_kind_t kind);

/* True when a VM in this state holds its group's quota (PENDING_APPROVAL, PROVISIONING, ACTIVE,
   DISPOSING, EXPIRING, EXPIRED and the shelve states); one leaving such a state for another
   releases it (lib/model.h). A SHELVED VM holds only its count and disk (its quota_held says
   so). */
int lifecycle_vm_holds_quota(const char *state);

/* What a VM in a lifecycle state with a power state is billed for: compute (vCPU and RAM
   hours) and disk (GB hours), each a factor 0 or 1 applied by the meter. */
typedef struct {
    int vm;      /* vm_state_t */
    int power;   /* power_state_t, or LIFECYCLE_ANY */
    int compute; /* 1: vCPU and RAM hours count */
    int disk;    /* 1: disk GB hours count */
} lifecycle_billing_t;

/* The billing row for a VM state and power state (power NULL or "": the state's ANY row);
   a state without a row bills nothing. *compute and *disk get its factors. */
void lifecycle_billing(const char *vm_state, const char *power_state, int *compute, int *disk);

/* True for a power state that says nothing about the VM (UNKNOWN: its host stopped
   reporting): the meter keeps billing the last known power state, never reads it as off. */
int lifecycle_power_billed_as_last(const char *power_state);

/* Write the "Lifecycle" section of docs/state.md (between LIFECYCLE_DOC_BEGIN and
   LIFECYCLE_DOC_END, both included, ending with a newline). 0, or -1 when out fails. */
int lifecycle_markdown(FILE *out);

#define LIFECYCLE_DOC_BEGIN "<!-- lifecycle:begin"
#define LIFECYCLE_DOC_END   "<!-- lifecycle:end -->"

#endif
