/*  fault: why an approval operation was refused, as the bus will say it: a stable code
    (BAD_REQUEST, NOT_FOUND, CONFLICT, UNAVAILABLE, INTERNAL) and one readable message.
    The modules fill it where the failure is detected; the handlers send it as is. */
#ifndef BERTH_APPROVAL_FAULT_H
#define BERTH_APPROVAL_FAULT_H

#include "store.h"

typedef struct {
    char code[16]; /* empty while nothing failed */
    char message[256];
} fault_t;

/* Record code and a printf-style message in fault (which may be NULL). Always returns -1,
   so a caller can write `return fault_set(...)`. */
int fault_set(fault_t *fault, const char *code, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/* A Redis call failed: UNAVAILABLE when the store is unreachable, INTERNAL when Redis
   answered with an error (a bug or corrupted data, not the caller's fault). Returns -1. */
int fault_store(fault_t *fault, store_t *store);

#endif
