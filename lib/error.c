/*  error: the table of codes and the one error type (see error.h). */
#include "error.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const error_code_t error_codes[] = {
    { "BAD_REQUEST", 400, "the input breaks a rule; details.field names the field" },
    { "UNAUTHORIZED", 401, "no valid credentials" },
    { "FORBIDDEN", 403, "the caller's role may not do this" },
    { "NOT_FOUND", 404, "no such resource (or not the caller's)" },
    { "METHOD_NOT_ALLOWED", 405, "the resource does not take this method" },
    { "CONFLICT", 409, "the resource is not in a state that allows this" },
    { "NO_VALID_HOST", 409, "no host can take the VM; details count each filter's removals" },
    { "PAYLOAD_TOO_LARGE", 413, "the body is larger than the limit" },
    { "UNSUPPORTED_MEDIA_TYPE", 415, "the body is not JSON" },
    { "QUOTA_EXCEEDED", 403, "the group's or the member's quota does not allow this" },
    { "BUDGET_EXCEEDED", 403, "the group's charges this month reached its budget's hard stop" },
    { "IDEMPOTENCY_KEY_REUSED", 422, "the idempotency key was used for another body" },
    { "BUILD_REFUSED", 422,
      "the machine asked for cannot work; details name each rule broken and suggestions" },
    { "RATE_LIMITED", 429, "too many requests from the address or user; see Retry-After" },
    { "INTERNAL", 500, "a fault of the platform, not of the caller" },
    /* Bus-level refusals: over HTTP they can only mean a fault of the platform. */
    { "BAD_FRAME", 500, "a bus frame that is not a valid envelope" },
    { "UNKNOWN_TYPE", 500, "the service has no handler for the message type" },
    { "UNAVAILABLE", 503, "a store or service did not answer; retry" },
    { "WRONG_SERVICE", 503, "the endpoint now serves another service; retry" },
    { "UNAUTHENTICATED", 500, "a bus call without a valid user assertion from the gateway" },
    { NULL, 0, NULL },
};

int error_set(berth_error_t *self, const char *code, const char *format, ...)
{
    if (self) {
        util_strlcpy(self->code, code, sizeof self->code);
        va_list ap;
        va_start(ap, format);
        vsnprintf(self->message, sizeof self->message, format, ap);
        va_end(ap);
        self->n_details = 0;
    }
    return -1;
}

static int s_detail(berth_error_t *self, const char *key, const char *format, va_list ap)
{
    size_t i = 0;
    while (i < self->n_details && strcmp(self->details[i].key, key) != 0)
        i++;
    if (i == ERROR_DETAILS_MAX)
        return -1;
    util_strlcpy(self->details[i].key, key, ERROR_KEY_MAX);
    vsnprintf(self->details[i].value, ERROR_VALUE_MAX, format, ap);
    if (i == self->n_details)
        self->n_details++;
    return -1;
}

int error_detail(berth_error_t *self, const char *key, const char *format, ...)
{
    if (!self)
        return -1;
    va_list ap;
    va_start(ap, format);
    s_detail(self, key, format, ap);
    va_end(ap);
    return -1;
}

int error_field(berth_error_t *self, const char *field, const char *format, ...)
{
    if (!self)
        return -1;
    util_strlcpy(self->code, "BAD_REQUEST", sizeof self->code);
    va_list ap;
    va_start(ap, format);
    vsnprintf(self->message, sizeof self->message, format, ap);
    va_end(ap);
    self->n_details = 0;
    return error_detail(self, "field", "%s", field);
}

const char *error_detail_get(const berth_error_t *self, const char *key)
{
    for (size_t i = 0; self && i < self->n_details; i++)
        if (strcmp(self->details[i].key, key) == 0)
            return self->details[i].value;
    return NULL;
}

int error_http_status(const char *code)
{
    for (int i = 0; code && error_codes[i].code; i++)
        if (strcmp(error_codes[i].code, code) == 0)
            return error_codes[i].http_status;
    return 500;
}

int error_code_known(const char *code)
{
    for (int i = 0; code && error_codes[i].code; i++)
        if (strcmp(error_codes[i].code, code) == 0)
            return 1;
    return 0;
}

void error_from_proto(berth_error_t *self, const Berth__Error *proto)
{
    memset(self, 0, sizeof *self);
    util_strlcpy(self->code, proto && proto->code && *proto->code ? proto->code : "INTERNAL",
                 sizeof self->code);
    util_strlcpy(self->message,
                 proto && proto->message && *proto->message
                     ? proto->message
                     : "the service failed without a message",
                 sizeof self->message);
    for (size_t i = 0; proto && i < proto->n_details && self->n_details < ERROR_DETAILS_MAX; i++) {
        const Berth__Error__DetailsEntry *d = proto->details[i];
        if (d && d->key && *d->key && d->value)
            error_detail(self, d->key, "%s", d->value);
    }
}
