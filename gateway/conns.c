/*  conns: the table of open HTTP connections, their deadlines and the cap (see conns.h).

    Why a table of our own: libmicrohttpd's idle timeout restarts at every byte (a client
    sending one header byte a second is never idle), its connection limit refuses newcomers
    instead of dropping the idle, and it has no way to close a connection from outside its
    callbacks. So each connection has a slot here with its phase and since when it is in it:

      IDLE  waiting for (the rest of) a request header: cut header_timeout_ms after `since`
            (open, or the end of the previous response: keep-alive idling counts)
      BODY  header complete, body arriving: cut body_timeout_ms after `since`
      BUSY  request complete, being answered (or suspended on the bus): never cut here
      CUT   evicted or timed out; the socket was shut down and libmicrohttpd is closing it

    Only the client's slowness counts: a connection with bytes waiting unread (its worker
    thread is busy with another connection's request) is never cut nor evicted.

    A connection is cut by shutdown(2) on its socket: its worker thread sees the end of the
    stream at once and closes it the ordinary way (no CLOSE-WAIT left behind). The socket
    stays valid until libmicrohttpd's CLOSED notification, which frees the slot under the
    same mutex the cutters hold, so a cut never reaches a reused descriptor. Workers move
    their own connection IDLE -> BODY -> BUSY -> IDLE with compare-and-swap, without the
    mutex (a request costs no lock); a cutter moves IDLE or BODY -> CUT the same way, so a
    request that has become BUSY is never cut by a race. */
#include "conns.h"

#include "log.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>

typedef enum { S_FREE = 0, S_IDLE, S_BODY, S_BUSY, S_CUT } s_phase_t;

typedef struct {
    _Atomic int phase;        /* s_phase_t */
    _Atomic int64_t since_ms; /* monotonic time the phase began */
    int fd;                   /* the connection's socket (valid while the slot is used) */
    uint32_t addr;            /* client IPv4 address, network order (0: not IPv4) */
    int next_free;            /* free list link (-1: end) */
} s_slot_t;

struct _conns_t {
    conns_options_t options;
    pthread_mutex_t mutex; /* guards the free list, open, cut and every slot's fd/addr */
    pthread_cond_t wake;   /* the sweeper's sleep; signalled to stop it */
    pthread_t sweeper;
    int sweeper_started;
    int stopping;
    s_slot_t *slots;
    int free_head;
    int open;       /* slots in use */
    int cut;        /* of which CUT (closing, no longer counted against the cap) */
    int cap_logged; /* the cap was reached and said so; re-armed below 90% of it */
    int sweep_ms;   /* how often deadlines are checked */
    /* Scratch of the eviction choice (under the mutex): connections per address. */
    uint32_t *count_addr;
    int *count_n;
    unsigned *count_gen;
    unsigned gen;
    size_t count_size; /* a power of two, at least twice the slots */
};

static s_slot_t *s_slot_of(struct MHD_Connection *connection)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return info ? info->socket_context : NULL;
}

/* Has the client sent bytes the gateway has not read yet? Then the gateway is behind (its
   worker thread busy with another connection), not the client: such a connection is neither
   late nor idle. */
static int s_unread(const s_slot_t *slot)
{
    int n = 0;
    return ioctl(slot->fd, FIONREAD, &n) == 0 && n > 0;
}

/* Shut the slot's socket down if it is still IDLE or BODY; 1 if it was cut. Under the mutex. */
static int s_cut(conns_t *self, s_slot_t *slot)
{
    int phase = atomic_load(&slot->phase);
    if ((phase != S_IDLE && phase != S_BODY) ||
        !atomic_compare_exchange_strong(&slot->phase, &phase, S_CUT))
        return 0;
    shutdown(slot->fd, SHUT_RDWR);
    self->cut++;
    return 1;
}

/* Number of open connections from addr, counted into the scratch table. */
static int *s_count(conns_t *self, uint32_t addr)
{
    size_t mask = self->count_size - 1;
    size_t i = (size_t)(addr * 2654435761u) & mask;
    while (self->count_gen[i] == self->gen && self->count_addr[i] != addr)
        i = (i + 1) & mask;
    if (self->count_gen[i] != self->gen) {
        self->count_gen[i] = self->gen;
        self->count_addr[i] = addr;
        self->count_n[i] = 0;
    }
    return &self->count_n[i];
}

/* The connection to evict for a newcomer: IDLE or BODY with nothing unread, from the address
   holding the most open connections, the one longest in its phase first. NULL when every
   other connection is busy. Under the mutex. */
static s_slot_t *s_victim(conns_t *self, const s_slot_t *newcomer)
{
    if (++self->gen == 0) {
        memset(self->count_gen, 0, self->count_size * sizeof *self->count_gen);
        self->gen = 1;
    }
    int n = self->options.slots;
    for (int i = 0; i < n; i++)
        if (atomic_load(&self->slots[i].phase) != S_FREE)
            (*s_count(self, self->slots[i].addr))++;
    s_slot_t *best = NULL;
    int best_count = 0;
    int64_t best_since = 0;
    for (int i = 0; i < n; i++) {
        s_slot_t *slot = &self->slots[i];
        int phase = atomic_load(&slot->phase);
        if (slot == newcomer || (phase != S_IDLE && phase != S_BODY))
            continue;
        int count = *s_count(self, slot->addr);
        int64_t since = atomic_load(&slot->since_ms);
        if ((!best || count > best_count || (count == best_count && since < best_since)) &&
            !s_unread(slot)) {
            best = slot;
            best_count = count;
            best_since = since;
        }
    }
    return best;
}

static void s_open(conns_t *self, struct MHD_Connection *connection, void **socket_context)
{
    const union MHD_ConnectionInfo *fd_info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
    const union MHD_ConnectionInfo *addr_info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    pthread_mutex_lock(&self->mutex);
    if (self->free_head < 0 || !fd_info) {
        /* Cannot happen: libmicrohttpd holds at most `slots` connections. */
        pthread_mutex_unlock(&self->mutex);
        return;
    }
    s_slot_t *slot = &self->slots[self->free_head];
    self->free_head = slot->next_free;
    slot->fd = fd_info->connect_fd;
    slot->addr = 0;
    if (addr_info && addr_info->client_addr && addr_info->client_addr->sa_family == AF_INET)
        slot->addr = ((const struct sockaddr_in *)addr_info->client_addr)->sin_addr.s_addr;
    atomic_store(&slot->since_ms, util_mono_ms());
    atomic_store(&slot->phase, S_IDLE);
    self->open++;
    *socket_context = slot;
    if (self->open - self->cut > self->options.max) {
        s_slot_t *victim = s_victim(self, slot);
        int evicted = victim && s_cut(self, victim);
        if (!evicted)
            s_cut(self, slot); /* every other connection is busy: the newcomer goes */
        if (!self->cap_logged) {
            self->cap_logged = 1;
            log_warn(NULL,
                     evicted ? "http connection cap reached: evicting idle connections"
                             : "http connection cap reached with every connection busy: "
                               "refusing new connections",
                     "{s:i}", "http_max_connections", self->options.max);
        }
    }
    pthread_mutex_unlock(&self->mutex);
}

static void s_close(conns_t *self, void **socket_context)
{
    s_slot_t *slot = *socket_context;
    if (!slot)
        return;
    pthread_mutex_lock(&self->mutex);
    if (atomic_load(&slot->phase) == S_CUT)
        self->cut--;
    atomic_store(&slot->phase, S_FREE);
    slot->fd = -1;
    slot->next_free = self->free_head;
    self->free_head = (int)(slot - self->slots);
    self->open--;
    if (self->cap_logged && (self->open - self->cut) * 10 < self->options.max * 9)
        self->cap_logged = 0;
    pthread_mutex_unlock(&self->mutex);
    *socket_context = NULL;
}

void conns_notify(void *cls, struct MHD_Connection *connection, void **socket_context,
                  enum MHD_ConnectionNotificationCode toe)
{
    if (toe == MHD_CONNECTION_NOTIFY_STARTED)
        s_open(cls, connection, socket_context);
    else if (toe == MHD_CONNECTION_NOTIFY_CLOSED)
        s_close(cls, socket_context);
}

/* Move the connection's slot from one phase to the next; -1 when it was cut meanwhile. */
static int s_advance(struct MHD_Connection *connection, int from, int to)
{
    s_slot_t *slot = s_slot_of(connection);
    if (!slot)
        return 0;
    int phase = atomic_load(&slot->phase);
    if (phase == to)
        return 0;
    if (phase != from)
        return phase == S_CUT ? -1 : 0;
    atomic_store(&slot->since_ms, util_mono_ms());
    if (!atomic_compare_exchange_strong(&slot->phase, &phase, to))
        return -1; /* the only other writer is a cutter */
    return 0;
}

int conns_header_done(struct MHD_Connection *connection)
{
    return s_advance(connection, S_IDLE, S_BODY);
}

int conns_request_busy(struct MHD_Connection *connection)
{
    return s_advance(connection, S_BODY, S_BUSY);
}

void conns_body_progress(struct MHD_Connection *connection)
{
    s_slot_t *slot = s_slot_of(connection);
    if (slot && atomic_load(&slot->phase) == S_BODY)
        atomic_store(&slot->since_ms, util_mono_ms());
}

void conns_body_wait(struct MHD_Connection *connection, int waiting)
{
    if (waiting)
        s_advance(connection, S_BODY, S_BUSY);
    else
        s_advance(connection, S_BUSY, S_BODY);
}

void conns_request_done(struct MHD_Connection *connection)
{
    s_slot_t *slot = s_slot_of(connection);
    if (!slot)
        return;
    /* since first: a cutter that sees IDLE must see when it began. */
    int phase = S_BUSY;
    atomic_store(&slot->since_ms, util_mono_ms());
    if (!atomic_compare_exchange_strong(&slot->phase, &phase, S_IDLE)) {
        phase = S_BODY; /* a request abandoned before its body was complete */
        atomic_compare_exchange_strong(&slot->phase, &phase, S_IDLE);
    }
}

/* Cut every connection past its deadline. */
static void s_sweep(conns_t *self)
{
    int64_t now = util_mono_ms();
    for (int i = 0; i < self->options.slots; i++) {
        s_slot_t *slot = &self->slots[i];
        int phase = atomic_load(&slot->phase);
        int64_t limit = phase == S_IDLE   ? self->options.header_timeout_ms
                        : phase == S_BODY ? self->options.body_timeout_ms
                                          : -1;
        if (limit >= 0 && now - atomic_load(&slot->since_ms) >= limit && !s_unread(slot))
            s_cut(self, slot);
    }
}

static void *s_sweeper(void *arg)
{
    conns_t *self = arg;
    pthread_mutex_lock(&self->mutex);
    while (!self->stopping) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += (long)self->sweep_ms * 1000000L;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        int rc = 0;
        while (!self->stopping && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&self->wake, &self->mutex, &until);
        if (!self->stopping)
            s_sweep(self);
    }
    pthread_mutex_unlock(&self->mutex);
    return NULL;
}

conns_t *conns_new(const conns_options_t *options)
{
    conns_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->options = *options;
    pthread_mutex_init(&self->mutex, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&self->wake, &attr);
    pthread_condattr_destroy(&attr);
    /* A deadline is enforced at most a tenth of it late (and never more often than 20 times
       a second). */
    int shortest = options->header_timeout_ms < options->body_timeout_ms
                       ? options->header_timeout_ms
                       : options->body_timeout_ms;
    self->sweep_ms = shortest / 10 < 50 ? 50 : shortest / 10;
    self->count_size = 16;
    while (self->count_size < (size_t)options->slots * 2)
        self->count_size *= 2;
    self->slots = calloc((size_t)options->slots, sizeof *self->slots);
    self->count_addr = calloc(self->count_size, sizeof *self->count_addr);
    self->count_n = calloc(self->count_size, sizeof *self->count_n);
    self->count_gen = calloc(self->count_size, sizeof *self->count_gen);
    if (!self->slots || !self->count_addr || !self->count_n || !self->count_gen) {
        log_error(NULL, "cannot allocate the http connection table", "{s:i}", "slots",
                  options->slots);
        conns_destroy(&self);
        return NULL;
    }
    for (int i = 0; i < options->slots; i++) {
        self->slots[i].fd = -1;
        self->slots[i].next_free = i + 1 < options->slots ? i + 1 : -1;
    }
    self->free_head = options->slots > 0 ? 0 : -1;
    if (pthread_create(&self->sweeper, NULL, s_sweeper, self) != 0) {
        log_error(NULL, "cannot start the http connection sweeper", NULL);
        conns_destroy(&self);
        return NULL;
    }
    self->sweeper_started = 1;
    return self;
}

void conns_destroy(conns_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    conns_t *self = *self_p;
    if (self->sweeper_started) {
        pthread_mutex_lock(&self->mutex);
        self->stopping = 1;
        pthread_cond_signal(&self->wake);
        pthread_mutex_unlock(&self->mutex);
        pthread_join(self->sweeper, NULL);
    }
    pthread_cond_destroy(&self->wake);
    pthread_mutex_destroy(&self->mutex);
    free(self->slots);
    free(self->count_addr);
    free(self->count_n);
    free(self->count_gen);
    free(self);
    *self_p = NULL;
}
