/*  fault: the store's failures in the platform's error type. */
#include "fault.h"

int fault_store(fault_t *fault, store_t *store)
{
    if (store_ok(store))
        return error_set(fault, "INTERNAL", "state store refused the operation");
    return error_set(fault, "UNAVAILABLE", "state store unreachable");
}
