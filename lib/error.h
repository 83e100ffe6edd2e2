/*  error: the platform's one error type, from the handler that detects a failure, over the
    bus (Berth.Error: code, message, details) to the gateway's HTTP answer. The table in
    error.c lists every code a service may answer with and the HTTP status it reads as; the
    gateway maps codes through it and nowhere else. Details carry what helps a caller act:
    the field that was wrong ({"field": "count"}), how many hosts each placement filter
    removed ({"ram": "3"}). */
#ifndef BERTH_ERROR_H
#define BERTH_ERROR_H

#include "berth.pb-c.h"

#include <stddef.h>

#define ERROR_CODE_MAX    32  /* longest code, with its NUL */
#define ERROR_MESSAGE_MAX 256 /* longest message kept, with its NUL */
#define ERROR_DETAILS_MAX                                                                          \
    24 /* most details one error carries (a refused build: rules and suggestions) */
#define ERROR_KEY_MAX   32
#define ERROR_VALUE_MAX 256

/* One error. Plain data: lives on the stack, copied freely, nothing to free. */
typedef struct {
    char code[ERROR_CODE_MAX]; /* "" while nothing failed */
    char message[ERROR_MESSAGE_MAX];
    size_t n_details;
    struct {
        char key[ERROR_KEY_MAX];
        char value[ERROR_VALUE_MAX];
    } details[ERROR_DETAILS_MAX];
} berth_error_t;

/* A code of the table. */
typedef struct {
    const char *code;
    int http_status;
    const char *meaning; /* when a service answers with it */
} error_code_t;

/* The table, terminated by an entry whose code is NULL. */
extern const error_code_t error_codes[];

/* Record code and a printf-style message in self (which may be NULL); details recorded
   before are dropped. Always returns -1, so a caller can write `return error_set(...)`. */
int error_set(berth_error_t *self, const char *code, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/* Add (or replace) the detail key = printf-style value. Details past ERROR_DETAILS_MAX are
   dropped. Returns -1 like error_set. */
int error_detail(berth_error_t *self, const char *key, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/* BAD_REQUEST naming the field (details.field) with a printf-style message. Returns -1. */
int error_field(berth_error_t *self, const char *field, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/* The detail's value, NULL when absent. */
const char *error_detail_get(const berth_error_t *self, const char *key);

/* The HTTP status a code reads as: its row of the table, 500 for a code not in it. */
int error_http_status(const char *code);

/* Is code in the table? */
int error_code_known(const char *code);

/* Copy a received Berth.Error into self (codes, messages and details cut to size). */
void error_from_proto(berth_error_t *self, const Berth__Error *proto);

#endif
