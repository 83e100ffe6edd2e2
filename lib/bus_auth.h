/*  bus_auth: CURVE on the bus. A process holds one certificate (its service's, shared by
    every replica, or for an agent its host's) from the platform's secrets, and knows every
    public key in the platform's certificate store. Servers make their ROUTER a CURVE server
    and run a ZAP handler (CZMQ zauth) that admits only keys in the store; clients make each
    DEALER a CURVE client of the server's key, read from the store by the server's name.
    The store's metadata names each key's service (and an agent's host): that is who a
    handler sees calling (bus_server.h, bus_request_caller). */
#ifndef BERTH_BUS_AUTH_H
#define BERTH_BUS_AUTH_H

#include <czmq.h>

typedef struct _bus_auth_t bus_auth_t;

#define BUS_AUTH_NAME_MAX 64 /* longest service or host name a certificate carries */

/* Who sent a request, from the ZAP handshake: the certificate metadata of the store. */
typedef struct {
    char service[BUS_AUTH_NAME_MAX]; /* "gateway", "taskmgr", "agent", ... */
    char host[BUS_AUTH_NAME_MAX];    /* an agent's host; "" for a service */
} bus_caller_t;

/* Make the certificate name for service (host: an agent's, else NULL) under secrets_dir:
   the secret DIR/curve/<name>.key (0600) and the public DIR/curve/public/<name>.cert. An
   existing one is kept unless replace. 0, or -1 (printed on stderr: berth-secrets and tests
   call it before any log exists). */
int bus_auth_make(const char *secrets_dir, const char *name, const char *service, const char *host,
                  int replace);

/* Load the certificate `cert` (a name: DIR/curve/<cert>.key, or a path containing '/') and
   the public store DIR/curve/public. NULL (logged, with what is missing) when either is
   absent or the certificate names no service. */
bus_auth_t *bus_auth_new(const char *secrets_dir, const char *cert);
void bus_auth_destroy(bus_auth_t **self_p);

/* The service (and for an agent, host) this process's certificate names. */
const char *bus_auth_service(bus_auth_t *self);
const char *bus_auth_host(bus_auth_t *self);

/* Make sock (not bound yet) a CURVE server with this certificate. The first call starts the
   ZAP handler, which admits only the store's keys and reloads the store when it changes.
   0, or -1 (logged). */
int bus_auth_server(bus_auth_t *self, zsock_t *sock);

/* Make sock (not connected yet) a CURVE client of the server whose public certificate is
   `server` in the store (a service name, or e.g. "agent-host-1"). 0, or -1 (logged) when
   the store has no such certificate. */
int bus_auth_client(bus_auth_t *self, zsock_t *sock, const char *server);

/* The caller of a message received on a CURVE server socket: 0 and *caller filled from the
   frame's ZAP metadata, or -1 when the frame carries none (a socket without CURVE). */
int bus_auth_caller(zframe_t *frame, bus_caller_t *caller);

/* True when caller is one of `callers`: service names separated by spaces ("gateway",
   "taskmgr agent"), or "*" for any caller the store admits. */
int bus_auth_allows(const char *callers, const bus_caller_t *caller);

#endif
