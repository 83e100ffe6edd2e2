/*  domevents: libvirt's domain lifecycle events for the agent. A thread of its own runs
    libvirt's default event loop with one connection registered for lifecycle events
    (started, stopped, crashed, suspended, ...); each event nudges the agent's loop through an
    inproc socket, which refreshes the inventory at once, so a domain that stops or crashes
    behind Berth's back is reported to taskmgr within milliseconds rather than at the next
    periodic snapshot (which remains: a hypervisor without events is still watched). */
#ifndef BERTH_AGENT_DOMEVENTS_H
#define BERTH_AGENT_DOMEVENTS_H

#include <czmq.h>

typedef struct _domevents_t domevents_t;

/* Register libvirt's default event loop implementation: once, before any libvirt
   connection of the process is opened (a driver created before it emits no events). 0, or
   -1 (logged). */
int domevents_init(void);

/* Watch uri's domains on a thread of its own. NULL (logged) when the thread cannot start;
   a hypervisor that refuses event registration is logged once and watched by snapshots only. */
domevents_t *domevents_new(const char *uri);
/* Stop the thread, deregister, close its connection. */
void domevents_destroy(domevents_t **self_p);

/* Readable when a domain changed: read it with domevents_recv. */
zsock_t *domevents_socket(domevents_t *self);
/* Drain what is waiting; the number of events (0 when none). */
int domevents_recv(domevents_t *self);

#endif
