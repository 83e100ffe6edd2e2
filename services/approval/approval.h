/*  approval: the bus face of the approval service. Turns each message (ListTemplates,
    CreateTemplate, CreateRequest, GetRequest, DecideRequest; the group messages, whose handlers
    live in groups.c) into a call of the catalog, requests or groups module and its answer or Error,
   logs the outcome at the service boundary, and seeds the template catalog once Redis is reachable.
   main.c binds the handler table. */
#ifndef BERTH_APPROVAL_APPROVAL_H
#define BERTH_APPROVAL_APPROVAL_H

#include "assertion.h"
#include "bus_client.h"
#include "bus_server.h"
#include "policy.h"
#include "store.h"

typedef struct _approval_t approval_t;

/* Who may call a handler: the permission table of the approval service is its handler table.
   A user is known only from the gateway's signed assertion (lib/assertion.h). */
typedef enum {
    APPROVAL_ANYONE, /* reads that act for nobody (the gateway checks who may see them) */
    APPROVAL_USER,   /* any signed-in user, who is the one acting */
    APPROVAL_ADMIN,  /* a user with the admin role */
} approval_who_t;

/* One entry of the handler table: a message type, its handler (arg: the approval_t) and who
   may call it. */
typedef struct {
    const char *type;
    bus_handler_fn *fn;
    approval_who_t who;
} approval_handler_t;

/* The handlers, ended by an entry with a NULL type. */
extern const approval_handler_t approval_handlers[];

/* store is borrowed (the service's connection), and so is verifier (checks the gateway's
   user assertions); policy is copied. NULL if out of memory. */
approval_t *approval_new(store_t *store, assertion_t *verifier, const policy_t *policy);
void approval_destroy(approval_t **self_p);

/* The bus client its calls to other services go through (the service's, borrowed): set
   once by main.c before the loop runs. */
void approval_set_client(approval_t *self, bus_client_t *client);
bus_client_t *approval_client(approval_t *self);

/* The service's store (borrowed). */
store_t *approval_store(approval_t *self);

/* The limits the service was started with (borrowed). */
const policy_t *approval_limits(approval_t *self);

/* Who request acts for, checked against the handler table's rule for its type: the verified
   assertion (free with berth__user_assertion__free_unpacked), or NULL when the call is
   refused (answered: UNAUTHENTICATED without a valid assertion, FORBIDDEN for a role that
   may not). */
Berth__UserAssertion *approval_caller(approval_t *self, bus_request_t *request,
                                      const Berth__SignedAssertion *assertion);

/* Answer fault and log it once (warn for store trouble, info for the caller's mistakes). */
void approval_fail(bus_request_t *request, const char *what, const fault_t *fault);

/* Make sure the catalog has its first templates. 0 once that is so (later calls return at
   once), -1 while Redis cannot be reached (call again later). */
int approval_seed(approval_t *self);

#endif
