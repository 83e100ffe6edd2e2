/*  fault: the one place an approval failure gets its code and message. */
#include "fault.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>

int fault_set(fault_t *fault, const char *code, const char *format, ...)
{
    if (fault) {
        util_strlcpy(fault->code, code, sizeof fault->code);
        va_list ap;
        va_start(ap, format);
        vsnprintf(fault->message, sizeof fault->message, format, ap);
        va_end(ap);
    }
    return -1;
}

int fault_store(fault_t *fault, store_t *store)
{
    if (store_ok(store))
        return fault_set(fault, "INTERNAL", "state store refused the operation");
    return fault_set(fault, "UNAVAILABLE", "state store unreachable");
}
