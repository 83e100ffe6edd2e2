/*  kinds: the kinds of request the one policy engine decides, as a table. A kind says what
    approving a request of it does; the engine (decide.h) says who decides and when, and
    requests.c writes the decision and what the kind adds in one transaction. A new kind is
    one entry here and its module's two functions. */
#ifndef BERTH_APPROVAL_KINDS_H
#define BERTH_APPROVAL_KINDS_H

#include "fault.h"
#include "model.h"
#include "policy.h"
#include "store.h"

#include "berth.pb-c.h"

typedef struct {
    const char *kind; /* Request.kind */
    /* Add to tx what approving req (at its last level) does, atomically with the request's
       own transition. next is the request as it will be written: the kind may fill fields
       of it (what was applied), pointing into *held, which release frees after the commit.
       0, or -1 with a fault (nothing is written). NULL: the kind "vm", whose VMs and tasks
       requests.c moves itself. */
    int (*approve)(store_t *store, const policy_t *policy, model_tx_t *tx,
                   const Berth__Request *req, Berth__Request *next, void **held, fault_t *fault);
    /* After such a transaction conflicted: -1 with the fault when the reason is the kind's
       (a group name taken meanwhile), 0 when the request should be read again. May be NULL. */
    int (*conflict)(store_t *store, const Berth__Request *req, fault_t *fault);
    void (*release)(void *held); /* may be NULL */
} kinds_t;

/* The entry of kind (empty or NULL: "vm", what requests were before kinds), or NULL. */
const kinds_t *kinds_find(const char *kind);

#endif
