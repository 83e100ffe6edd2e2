/*  work: worker threads behind a mutex-protected queue; results return over inproc PUSH/PULL.

    The queue and the list of finished jobs are plain linked lists guarded by one mutex; workers
    sleep on a condition variable for the queue. A worker that finishes a job appends it to the
    finished list and sends one byte on its own PUSH socket (a ZeroMQ socket belongs to one
    thread) to the owner's PULL socket, which the owner's loop polls: the loop wakes the moment
    a result exists, never on a timer, and takes the finished jobs under the mutex (so the
    hand-over is ordered by the mutex, not by ZeroMQ's internals). The bound counts every job
    the owner has handed over and not had back, so memory held for waiting callers is bounded
    too, not only the queue itself. */
#include "work.h"

#include "log.h"
#include "metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

typedef struct s_job_t {
    work_fn *fn;
    work_done_fn *done;
    void *arg;
    struct s_job_t *next;
} s_job_t;

typedef struct {
    struct _work_t *work;
    zsock_t *push; /* this worker's end; made by the owner, used only by the worker */
    pthread_t thread;
} s_worker_t;

struct _work_t {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    s_job_t *head, *tail; /* queued, not started; guarded by lock */
    s_job_t *finished;    /* done by a worker, not yet delivered (newest first); lock */
    int stopping;         /* guarded by lock */
    s_worker_t *workers;
    int nworkers;  /* made */
    int nthreads;  /* started */
    zsock_t *pull; /* owner's end */
    char endpoint[64];
    size_t held; /* owner-side count of jobs handed over and not delivered */
    size_t queue_max;
    uint64_t refused; /* submits refused in the current busy episode; 0 = not busy */
};

static void *s_worker(void *arg)
{
    s_worker_t *worker = arg;
    work_t *self = worker->work;
    for (;;) {
        pthread_mutex_lock(&self->lock);
        while (!self->stopping && !self->head)
            pthread_cond_wait(&self->wake, &self->lock);
        if (self->stopping) {
            pthread_mutex_unlock(&self->lock);
            break;
        }
        s_job_t *job = self->head;
        self->head = job->next;
        if (!self->head)
            self->tail = NULL;
        pthread_mutex_unlock(&self->lock);

        job->fn(job->arg);
        pthread_mutex_lock(&self->lock);
        job->next = self->finished;
        self->finished = job;
        pthread_mutex_unlock(&self->lock);
        /* The wake-up; if it cannot be sent (ZeroMQ shutting down) the job still waits in
           the list for the next delivery or for work_destroy. */
        zsock_send(worker->push, "1", 1);
    }
    return NULL;
}

/* The jobs handed over and not delivered yet, as a metric (metrics.h). */
static void s_gauge(work_t *self)
{
    static metrics_family_t *held;
    if (!held)
        held = metrics_gauge("berth_stager_jobs",
                             "Image and seed jobs handed to the stager's threads, not delivered",
                             NULL);
    metrics_set(held, (double)self->held);
}

work_t *work_new(int threads, int queue_max)
{
    if (threads < 1 || queue_max < 1)
        return NULL;
    work_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    pthread_mutex_init(&self->lock, NULL);
    pthread_cond_init(&self->wake, NULL);
    self->queue_max = (size_t)queue_max;
    /* A name never used before in this process: a pool destroyed a moment ago may still hold
       its name while ZeroMQ closes its socket in the background. */
    static atomic_uint pools;
    snprintf(self->endpoint, sizeof self->endpoint, "inproc://berth-work-%u",
             atomic_fetch_add(&pools, 1));
    self->pull = zsock_new(ZMQ_PULL);
    self->workers = calloc((size_t)threads, sizeof *self->workers);
    if (!self->pull || !self->workers) {
        work_destroy(&self);
        return NULL;
    }
    zsock_set_rcvhwm(self->pull, 0); /* bounded by queue_max, never by the socket */
    if (zsock_bind(self->pull, "%s", self->endpoint) != 0) {
        work_destroy(&self);
        return NULL;
    }
    /* Every socket first, so a failure leaves no thread to stop. */
    for (; self->nworkers < threads; self->nworkers++) {
        s_worker_t *w = &self->workers[self->nworkers];
        w->work = self;
        w->push = zsock_new(ZMQ_PUSH);
        if (!w->push) {
            work_destroy(&self);
            return NULL;
        }
        zsock_set_sndhwm(w->push, 0);
        zsock_set_linger(w->push, -1); /* a result sent is a result delivered */
        if (zsock_connect(w->push, "%s", self->endpoint) != 0) {
            work_destroy(&self);
            return NULL;
        }
    }
    for (; self->nthreads < threads; self->nthreads++)
        if (pthread_create(&self->workers[self->nthreads].thread, NULL, s_worker,
                           &self->workers[self->nthreads]) != 0) {
            work_destroy(&self);
            return NULL;
        }
    return self;
}

void work_destroy(work_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    work_t *self = *self_p;
    pthread_mutex_lock(&self->lock);
    self->stopping = 1;
    pthread_cond_broadcast(&self->wake);
    pthread_mutex_unlock(&self->lock);
    for (int i = 0; i < self->nthreads; i++)
        pthread_join(self->workers[i].thread, NULL);
    for (int i = 0; i < self->nworkers; i++)
        zsock_destroy(&self->workers[i].push);
    /* Finished but not delivered, then never started. The threads are gone: no lock. */
    s_job_t *lists[] = { self->finished, self->head };
    for (int i = 0; i < 2; i++)
        while (lists[i]) {
            s_job_t *job = lists[i];
            lists[i] = job->next;
            job->done(job->arg, 0);
            free(job);
        }
    zsock_destroy(&self->pull);
    free(self->workers);
    pthread_cond_destroy(&self->wake);
    pthread_mutex_destroy(&self->lock);
    free(self);
    *self_p = NULL;
}

int work_submit(work_t *self, work_fn *fn, work_done_fn *done, void *arg)
{
    s_job_t *job = self->held < self->queue_max ? calloc(1, sizeof *job) : NULL;
    if (!job) {
        /* Logged when an episode starts and when it ends, not once per refusal. */
        if (self->refused++ == 0)
            log_warn(NULL, "work queue full; answering busy until it drains", "{s:I}", "queue_max",
                     (json_int_t)self->queue_max);
        return -1;
    }
    if (self->refused) {
        log_info(NULL, "work queue accepting again", "{s:I}", "refused", (json_int_t)self->refused);
        self->refused = 0;
    }
    job->fn = fn;
    job->done = done;
    job->arg = arg;
    pthread_mutex_lock(&self->lock);
    if (self->tail)
        self->tail->next = job;
    else
        self->head = job;
    self->tail = job;
    pthread_cond_signal(&self->wake);
    pthread_mutex_unlock(&self->lock);
    self->held++;
    s_gauge(self);
    return 0;
}

zsock_t *work_socket(work_t *self)
{
    return self->pull;
}

void work_deliver(work_t *self)
{
    /* Every wake-up now; jobs finished after this are announced by a wake-up of their own. */
    zframe_t *wake;
    while (zsock_events(self->pull) & ZMQ_POLLIN && (wake = zframe_recv(self->pull)))
        zframe_destroy(&wake);
    pthread_mutex_lock(&self->lock);
    s_job_t *list = self->finished;
    self->finished = NULL;
    pthread_mutex_unlock(&self->lock);
    /* Oldest first, the order they finished in. */
    s_job_t *ordered = NULL;
    while (list) {
        s_job_t *job = list;
        list = job->next;
        job->next = ordered;
        ordered = job;
    }
    while (ordered) {
        s_job_t *job = ordered;
        ordered = job->next;
        self->held--;
        job->done(job->arg, 1);
        free(job);
    }
    s_gauge(self);
}

size_t work_held(work_t *self)
{
    return self->held;
}
