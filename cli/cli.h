/*  cli: shared pieces of the `berth` client: HTTP calls to the gateway and output. */
#ifndef BERTH_CLI_H
#define BERTH_CLI_H

#include <czmq.h>
#include <jansson.h>

typedef struct {
    const char *url;    /* gateway base URL */
    int json;           /* -o json */
    char token[256];    /* bearer token, when logged in */
} cli_t;

/* Call the gateway. On a 2xx answer: 0 and *body (caller's). Otherwise prints the server's
   error message to stderr and returns -1. */
int cli_http(cli_t *cli, const char *method, const char *path, json_t *request, json_t **body);

/* Print JSON (for -o json). */
void cli_print_json(json_t *value);

int cli_health(cli_t *cli, int argc, char **argv);

#endif
