/*  work: a small pool of worker threads for what must not run on a service's loop (qemu-img
    runs, seed ISOs, directory sweeps). Jobs wait in a bounded queue; a finished job comes back
    to the owner's loop through an inproc socket, and its done callback runs there, so results
    are handled without locks, one at a time, like every other event of the loop. */
#ifndef BERTH_STAGER_WORK_H
#define BERTH_STAGER_WORK_H

#include <czmq.h>

typedef struct _work_t work_t;

/* Runs on a worker thread; touches only what its arg owns. */
typedef void(work_fn)(void *arg);
/* Runs on the owner's thread (work_deliver, work_destroy): deliver = 1 after fn ran; 0 when
   the pool is being destroyed (fn may not have run): release arg, answer nobody. */
typedef void(work_done_fn)(void *arg, int deliver);

/* threads workers, at most queue_max jobs at a time (queued, running or finished and not
   delivered yet). NULL when threads or sockets cannot be made. */
work_t *work_new(int threads, int queue_max);

/* Stop the workers after their current job and release every job still held (done with
   deliver = 0). Call from the owner's thread. */
void work_destroy(work_t **self_p);

/* Queue fn(arg), then done(arg, 1) on the owner's loop. 0, or -1 when queue_max jobs are
   already held (nothing queued; the caller answers "busy"). A busy episode is logged when it
   starts and when it ends. */
int work_submit(work_t *self, work_fn *fn, work_done_fn *done, void *arg);

/* The socket finished jobs arrive on: poll it in the owner's loop (service_reader) and call
   work_deliver() when it is readable. */
zsock_t *work_socket(work_t *self);

/* Run the done callback of every finished job that has arrived; never blocks. */
void work_deliver(work_t *self);

/* Jobs held now (queued, running, or finished and not delivered). */
size_t work_held(work_t *self);

#endif
