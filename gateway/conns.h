/*  conns: the gateway's table of open HTTP connections, so that idle and slow clients cannot
    hold the edge. A connection must deliver a complete request header within a short time of
    opening (or of its previous response: keep-alive idling counts) and its body within a
    short time of the header; past the global cap, a new connection evicts an idle one, taken
    from the address holding the most connections, the idlest first. http.c feeds it from
    libmicrohttpd's callbacks; a sweeper thread enforces the deadlines. */
#ifndef BERTH_GATEWAY_CONNS_H
#define BERTH_GATEWAY_CONNS_H

#include <microhttpd.h>

typedef struct _conns_t conns_t;

typedef struct {
    int max;               /* connections kept open; past it an idle one is evicted */
    int slots;             /* the most libmicrohttpd ever holds open (its own limit) */
    int header_timeout_ms; /* a complete header is due this long after open / last response */
    int body_timeout_ms;   /* a complete body is due this long after its header */
} conns_options_t;

/* The table and its sweeper thread. NULL (logged) on failure. */
conns_t *conns_new(const conns_options_t *options);
void conns_destroy(conns_t **self_p);

/* MHD_OPTION_NOTIFY_CONNECTION callback (cls is the conns_t): takes a connection into the
   table when it opens (evicting one when over the cap) and out when it closes. */
void conns_notify(void *cls, struct MHD_Connection *connection, void **socket_context,
                  enum MHD_ConnectionNotificationCode toe);

/* The connection's request header is complete: its body is now due within the body timeout.
   0, or -1 when the connection has been cut (answer MHD_NO: it is closing). */
int conns_header_done(struct MHD_Connection *connection);
/* The request is complete and being answered: the connection is busy, never evicted nor cut
   until conns_request_done. 0, or -1 when the connection has been cut. */
int conns_request_busy(struct MHD_Connection *connection);
/* A streamed body is arriving: its deadline counts from now (each piece must follow the
   last within the body timeout, however long the whole body takes). */
void conns_body_progress(struct MHD_Connection *connection);
/* A streamed body waits on the gateway (waiting 1: its handler parked; never cut meanwhile)
   or goes on arriving (waiting 0). */
void conns_body_wait(struct MHD_Connection *connection, int waiting);
/* The request has ended (response sent or abandoned): the next header is due within the
   header timeout. */
void conns_request_done(struct MHD_Connection *connection);

#endif
