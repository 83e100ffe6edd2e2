/*  gateway: shared declarations of the gateway's modules (HTTP edge, route handlers). */
#ifndef BERTH_GATEWAY_H
#define BERTH_GATEWAY_H

#include "http.h"

/* health.c */
void health_live(http_req_t *req);
void health_ready(http_req_t *req);
void health_platform(http_req_t *req);

#endif
