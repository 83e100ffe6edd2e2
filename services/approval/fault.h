/*  fault: why an approval operation was refused, as the bus will say it: the platform's one
    error type (lib/error.h: a code of its table, one readable message and details such as the
    field that broke a rule). The modules fill it where the failure is detected with
    error_set()/error_field(); the handlers send it as is (bus_reply_fault). */
#ifndef BERTH_APPROVAL_FAULT_H
#define BERTH_APPROVAL_FAULT_H

#include "error.h"
#include "store.h"

typedef berth_error_t fault_t;

/* A Redis call failed: UNAVAILABLE when the store is unreachable, INTERNAL when Redis
   answered with an error (a bug or corrupted data, not the caller's fault). Returns -1. */
int fault_store(fault_t *fault, store_t *store);

#endif
