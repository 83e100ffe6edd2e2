/*  worker: the agent's commands, run off the event loop with at-most-once effect per id.

    A libvirt call can take seconds (a START on qemu:///system is ~2 s), so none runs on the
    loop. The loop keeps the queue and decides what runs where; each of a few threads
    (zactors) owns a libvirt connection and runs one command at a time, handed to it as a
    packed AgentCommand over its pipe, and pushes the packed result back to one PULL socket
    the loop reads. Nothing is shared between threads but the settings, read-only.

    Order: a VM's commands must run in the order taskmgr sent them (DEFINE after
    CREATE_DISK), so at most one command per VM runs at a time and a thread that comes free
    takes the oldest waiting command whose VM is not busy. Commands for other VMs pass it.
    The waiting queue is bounded; a command over the bound is refused at once with a FAILED
    result (taskmgr fails or retries the stage), logged once per episode.

    Redelivery: taskmgr delivers commands at least once (a poll reply can be lost, a new
    taskmgr instance resends what its predecessor had in flight), so the worker remembers
    the last cache_max results by command id, oldest evicted first, and an id that is
    queued or running is not queued again. Eviction is safe because every operation is also
    idempotent by VM id: a command redelivered after its entry was evicted is run again and
    finds its work already done.

    Results stay queued until a poll carrying them is answered, so a taskmgr that is down or
    restarting loses none; that queue is bounded and, when full, drops its oldest entry
    (still in the cache: a redelivery re-answers it).

    Inventory: one more thread with its own connection lists the host's domains every
    heartbeat interval and right after each command that changes what runs (START, DESTROY,
    or any that failed), and pushes the snapshot to the loop, which keeps the latest for the
    heartbeat. The heartbeat keeps beating whatever libvirt does; so that a hung libvirtd
    still makes the host DOWN (as the heartbeats stopping used to), a snapshot older than a
    few intervals is reported as a DOWN host with no domains. */
#include "worker.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#include <libvirt/libvirt.h>
#include <stdatomic.h>

#define MAX_THREADS     64
#define STALE_INTERVALS 3   /* a snapshot this many refresh intervals old: libvirt is stuck */
#define MAX_COMMAND_ID  128 /* same bound as vmops: longer ids are refused, never cached */

/* A command between worker_submit() and its result. */
typedef struct {
    char *id;          /* command id (may be "") */
    char *vm;          /* ordering key: commands of one VM run one at a time */
    char *op;          /* for the log */
    zframe_t *packed;  /* the AgentCommand until handed to a thread */
    int64_t queued_ms; /* monotonic, when submitted */
} s_job_t;

typedef struct {
    worker_t *worker; /* read by the thread: endpoint and config only */
    size_t index;
    zactor_t *actor;
    s_job_t *job;       /* running on this thread; NULL when idle */
    int64_t started_ms; /* monotonic, when job was handed over */
} s_thread_t;

struct _worker_t {
    vmops_config_t config; /* strings below are owned copies */
    char *uri, *host, *data_dir, *pool, *image_cache_dir;
    char endpoint[64]; /* inproc endpoint of results */
    zsock_t *results;  /* PULL: what the threads finished */
    s_thread_t *threads;
    size_t n_threads;
    worker_done_fn *done;
    void *done_arg;

    zlistx_t *waiting;  /* s_job_t*, oldest first (owned) */
    size_t queue_max;   /* bound on waiting */
    zhashx_t *busy;     /* vm -> s_thread_t* running a command for it */
    zhashx_t *inflight; /* command id -> s_job_t* waiting or running */
    size_t refused;     /* commands refused in this full-queue episode (0 = not full) */

    zhashx_t *cache; /* command id -> Berth__AgentResult* (owned) */
    zlistx_t *order; /* command ids, oldest first, for eviction */
    size_t cache_max;
    Berth__AgentResult **pending; /* owned copies awaiting delivery, oldest first */
    size_t n_pending;
    size_t pending_max;
    int overflowing; /* pending queue hit its bound: warned once */

    zactor_t *watcher;          /* inventory thread, once worker_watch() ran */
    int watch_ms;               /* its refresh interval */
    int gap_ms;                 /* least time between two snapshots asked for by commands */
    Berth__Host *inventory;     /* latest snapshot (unpacked) */
    zframe_t *inventory_packed; /* the same, packed: to tell a change */
    int64_t inventory_ms;       /* monotonic, when it arrived (or the watch started) */
    Berth__Host stuck;          /* what is reported while libvirt does not answer */
    int is_stuck;               /* ... and that was logged */
    worker_inventory_fn *on_inventory;
    void *on_inventory_arg;
};

static void s_drop(worker_t *self, size_t count);

static void s_str_free(void **item)
{
    free(*item);
    *item = NULL;
}

static void s_result_free(void **item)
{
    Berth__AgentResult *r = *item;
    if (r) {
        vmops_result_clear(r);
        free(r);
        *item = NULL;
    }
}

static Berth__AgentResult *s_copy(const Berth__AgentResult *src)
{
    Berth__AgentResult *r = malloc(sizeof *r);
    if (r && vmops_result_copy(r, src) != 0) {
        free(r);
        r = NULL;
    }
    return r;
}

static void s_job_free(void **item)
{
    s_job_t *job = *item;
    if (job) {
        free(job->id);
        free(job->vm);
        free(job->op);
        zframe_destroy(&job->packed);
        free(job);
        *item = NULL;
    }
}

/* Only well-formed ids are remembered or tracked; vmops refuses the others, and a result
   keyed by garbage could never be asked for again. */
static int s_trackable(const char *id)
{
    size_t len = strlen(id);
    if (len == 0 || len > MAX_COMMAND_ID)
        return 0;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        if (*p < 0x20 || *p >= 0x7f)
            return 0;
    return 1;
}

/* ---- the threads -------------------------------------------------------------------- */

/* One worker thread: run each command it is handed and push back the result with how long
   it took. Its vmops (and so its libvirt connection) lives and dies with the thread. */
static void s_runner(zsock_t *pipe, void *args)
{
    s_thread_t *me = args;
    worker_t *w = me->worker;
    /* A command that finds libvirt down says so in its result (logged by the loop); the
       inventory thread's connection, which checks every interval, logs the state change. */
    vmops_config_t config = w->config;
    config.quiet = 1;
    vmops_t *ops = vmops_new(&config);
    zsock_t *out = zsock_new_push(w->endpoint);
    zsock_signal(pipe, 0);
    char index[16];
    snprintf(index, sizeof index, "%zu", me->index);
    while (out) {
        zmsg_t *msg = zmsg_recv(pipe);
        if (!msg && zmq_errno() == EINTR && !zsys_interrupted)
            continue; /* a stray signal; the loop says when to stop ($TERM) */
        if (!msg)
            break;
        char *verb = zmsg_popstr(msg);
        int stop = !verb || streq(verb, "$TERM");
        zframe_t *frame = stop ? NULL : zmsg_pop(msg);
        free(verb);
        zmsg_destroy(&msg);
        if (stop) {
            zframe_destroy(&frame);
            break;
        }
        Berth__AgentCommand *cmd =
            frame ? berth__agent_command__unpack(NULL, zframe_size(frame), zframe_data(frame))
                  : NULL;
        zframe_destroy(&frame);
        Berth__AgentResult r = BERTH__AGENT_RESULT__INIT;
        int64_t started = util_mono_ms();
        if (cmd && ops)
            vmops_execute(ops, cmd, &r);
        else /* only when memory or the pool directory ran out: still answer */
            r.error = strdup(ops ? "not run: out of memory" : "not run: no usable pool directory");
        int64_t took = util_mono_ms() - started;
        if (cmd)
            berth__agent_command__free_unpacked(cmd, NULL);
        size_t len = berth__agent_result__get_packed_size(&r);
        zframe_t *packed = zframe_new(NULL, len);
        if (packed)
            berth__agent_result__pack(&r, zframe_data(packed));
        vmops_result_clear(&r);
        zmsg_t *reply = zmsg_new();
        zmsg_addstr(reply, "DONE");
        zmsg_addstr(reply, index);
        zmsg_addstrf(reply, "%lld", (long long)took);
        if (packed)
            zmsg_append(reply, &packed);
        zmsg_send(&reply, out);
    }
    zsock_destroy(&out);
    vmops_destroy(&ops);
}

/* The inventory thread: a snapshot every interval, and soon when asked (after a command):
   at once, or gap_ms after the snapshot before it, so that a burst of commands (a host
   starting tens of VMs a second) costs one listing of the host's domains per gap, not one
   per command; several asks that queued up meanwhile cost one snapshot. */
static void s_watcher(zsock_t *pipe, void *args)
{
    worker_t *w = args;
    vmops_t *ops = vmops_new(&w->config);
    zsock_t *out = zsock_new_push(w->endpoint);
    zpoller_t *poller = zpoller_new(pipe, NULL);
    zsock_signal(pipe, 0);
    int64_t next = 0;     /* monotonic time of the next periodic snapshot: now */
    int64_t asked_at = 0; /* monotonic time of a snapshot asked for (0: none asked) */
    int64_t last = 0;     /* monotonic time of the last snapshot (0: none yet) */
    while (out && poller && ops) {
        int64_t now = util_mono_ms();
        int64_t due = asked_at && asked_at < next ? asked_at : next;
        if (due > now) {
            void *which = zpoller_wait(poller, (int)(due - now));
            if (zpoller_terminated(poller) && (zsys_interrupted || zmq_errno() != EINTR))
                break;
            while (which == pipe) {
                char *verb = zstr_recv(pipe);
                if (!verb && zmq_errno() == EINTR && !zsys_interrupted)
                    break; /* a stray signal */
                if (!verb || streq(verb, "$TERM")) {
                    free(verb);
                    goto stop;
                }
                free(verb);
                if (!asked_at)
                    asked_at = last && last + w->gap_ms > util_mono_ms() ? last + w->gap_ms
                                                                         : util_mono_ms();
                which = zpoller_wait(poller, 0);
            }
            continue; /* what is due next may have changed */
        }
        int periodic = now >= next;
        Berth__Host host;
        vmops_inventory(ops, &host);
        size_t len = berth__host__get_packed_size(&host);
        zframe_t *packed = zframe_new(NULL, len);
        if (packed)
            berth__host__pack(&host, zframe_data(packed));
        vmops_inventory_clear(&host);
        if (packed) {
            zmsg_t *msg = zmsg_new();
            zmsg_addstr(msg, "INVENTORY");
            zmsg_append(msg, &packed);
            zmsg_send(&msg, out);
        }
        last = util_mono_ms();
        asked_at = 0; /* this snapshot answers every ask so far */
        if (periodic)
            next = last + w->watch_ms;
    }
stop:
    zpoller_destroy(&poller);
    zsock_destroy(&out);
    vmops_destroy(&ops);
}

/* ---- construction ------------------------------------------------------------------- */

/* The agent's command metrics (metrics.h): commands by op and result, libvirt time and time
   waiting for a thread, and how many wait or run now. */
static struct {
    metrics_family_t *commands, *seconds, *waited, *queued;
} s_m;

static void s_metrics_declare(void)
{
    s_m.commands = metrics_counter("berth_agent_commands_total",
                                   "Commands ended, by op and result (ok, failed, refused: the "
                                   "queue was full)",
                                   "op,result");
    s_m.seconds =
        metrics_histogram("berth_agent_command_seconds",
                          "Time a command ran on its thread (libvirt and disk work)", "op");
    s_m.waited = metrics_histogram("berth_agent_command_wait_seconds",
                                   "Time a command waited for a thread", "op");
    s_m.queued = metrics_gauge("berth_agent_queue",
                               "Commands now waiting for a thread or running", "state");
}

static void s_gauges(worker_t *self)
{
    metrics_set(s_m.queued, (double)zlistx_size(self->waiting), "waiting");
    metrics_set(s_m.queued, (double)zhashx_size(self->busy), "running");
}

worker_t *worker_new(const vmops_config_t *config, size_t threads, size_t queue_max,
                     size_t cache_max, worker_done_fn *done, void *arg)
{
    assert(config);
    worker_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->config = *config;
    self->uri = strdup(config->uri ? config->uri : "");
    self->host = strdup(config->host ? config->host : "");
    self->data_dir = strdup(config->data_dir ? config->data_dir : "");
    self->pool = strdup(config->pool ? config->pool : "");
    self->image_cache_dir = strdup(config->image_cache_dir ? config->image_cache_dir : "");
    self->config.image_cache_dir = self->image_cache_dir;
    self->config.uri = self->uri;
    self->config.host = self->host;
    self->config.data_dir = self->data_dir;
    self->config.pool = self->pool;
    self->done = done;
    self->done_arg = arg;
    s_metrics_declare();
    self->queue_max = queue_max > 0 ? queue_max : 1;
    self->cache_max = cache_max > 0 ? cache_max : 1;
    self->pending_max = self->cache_max;
    self->n_threads = threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
    self->cache = zhashx_new();
    self->order = zlistx_new();
    self->waiting = zlistx_new();
    self->busy = zhashx_new();
    self->inflight = zhashx_new();
    self->pending = calloc(self->pending_max, sizeof *self->pending);
    self->threads = calloc(self->n_threads, sizeof *self->threads);
    /* Never a name used before in this process: an inproc name is released asynchronously,
       and a new worker may get the address of one just destroyed. */
    static atomic_uint serial;
    snprintf(self->endpoint, sizeof self->endpoint, "inproc://berth-worker-%u",
             atomic_fetch_add(&serial, 1));
    self->results = zsock_new_pull(self->endpoint);
    if (!self->uri || !self->host || !self->data_dir || !self->pool || !self->image_cache_dir ||
        !self->cache || !self->order || !self->waiting || !self->busy || !self->inflight ||
        !self->pending || !self->threads || !self->results) {
        worker_destroy(&self);
        return NULL;
    }
    zhashx_set_destructor(self->cache, s_result_free);
    zlistx_set_destructor(self->order, s_str_free);
    zlistx_set_destructor(self->waiting, s_job_free);
    /* Check the settings here, where failing stops the agent, rather than on each thread. */
    vmops_t *probe = vmops_new(&self->config);
    if (!probe) {
        worker_destroy(&self);
        return NULL;
    }
    vmops_destroy(&probe);
    /* libvirt's global state before threads use it. */
    if (virInitialize() != 0) {
        log_error(NULL, "cannot initialise libvirt", NULL);
        worker_destroy(&self);
        return NULL;
    }
    for (size_t i = 0; i < self->n_threads; i++) {
        s_thread_t *t = &self->threads[i];
        t->worker = self;
        t->index = i;
        t->actor = zactor_new(s_runner, t);
        if (!t->actor) {
            log_error(NULL, "cannot start a worker thread", "{s:i}", "threads",
                      (int)self->n_threads);
            worker_destroy(&self);
            return NULL;
        }
    }
    return self;
}

void worker_destroy(worker_t **self_p)
{
    if (self_p && *self_p) {
        worker_t *self = *self_p;
        zactor_destroy(&self->watcher);
        for (size_t i = 0; self->threads && i < self->n_threads; i++) {
            zactor_destroy(&self->threads[i].actor);
            void *job = self->threads[i].job;
            s_job_free(&job);
        }
        free(self->threads);
        zsock_destroy(&self->results);
        zlistx_destroy(&self->waiting);
        zhashx_destroy(&self->busy);
        zhashx_destroy(&self->inflight);
        zhashx_destroy(&self->cache);
        zlistx_destroy(&self->order);
        if (self->pending)
            s_drop(self, self->n_pending);
        free(self->pending);
        if (self->inventory)
            berth__host__free_unpacked(self->inventory, NULL);
        zframe_destroy(&self->inventory_packed);
        free(self->uri);
        free(self->host);
        free(self->data_dir);
        free(self->pool);
        free(self->image_cache_dir);
        free(self);
        *self_p = NULL;
    }
}

void worker_set_refresh_gap(worker_t *self, int gap_ms)
{
    assert(self && !self->watcher);
    self->gap_ms = gap_ms > 0 ? gap_ms : 0;
}

int worker_watch(worker_t *self, int interval_ms, worker_inventory_fn *fn, void *arg)
{
    assert(self && !self->watcher);
    self->watch_ms = interval_ms > 0 ? interval_ms : 1000;
    self->inventory_ms = util_mono_ms();
    self->on_inventory = fn;
    self->on_inventory_arg = arg;
    self->watcher = zactor_new(s_watcher, self);
    if (!self->watcher) {
        log_error(NULL, "cannot start the inventory thread", NULL);
        return -1;
    }
    /* A refresh that cannot be queued at once is dropped: the periodic one covers it. */
    zsock_set_sndtimeo(zactor_sock(self->watcher), 0);
    return 0;
}

zsock_t *worker_socket(worker_t *self)
{
    return self->results;
}

void worker_refresh(worker_t *self)
{
    if (self->watcher)
        zstr_send(self->watcher, "REFRESH");
}

const Berth__Host *worker_inventory(worker_t *self)
{
    int64_t age = util_mono_ms() - self->inventory_ms;
    if (!self->watcher || age <= (int64_t)STALE_INTERVALS * self->watch_ms)
        return self->inventory;
    if (!self->is_stuck)
        log_error(NULL, "libvirt does not answer: reporting the host DOWN", "{s:s, s:I}", "uri",
                  self->uri, "ms", (json_int_t)age);
    self->is_stuck = 1;
    berth__host__init(&self->stuck);
    self->stuck.state = (char *)"DOWN";
    if (self->inventory) {
        self->stuck.hypervisor = self->inventory->hypervisor;
        self->stuck.capacity = self->inventory->capacity;
    }
    return &self->stuck;
}

/* ---- results ------------------------------------------------------------------------ */

/* Forget the oldest count pending results. */
static void s_drop(worker_t *self, size_t count)
{
    if (count > self->n_pending)
        count = self->n_pending;
    for (size_t i = 0; i < count; i++) {
        void *item = self->pending[i];
        s_result_free(&item);
    }
    memmove(self->pending, self->pending + count,
            (self->n_pending - count) * sizeof *self->pending);
    self->n_pending -= count;
}

/* Queue a copy of r for delivery unless a result for the same command already waits. */
static void s_queue(worker_t *self, const Berth__AgentResult *r)
{
    for (size_t i = 0; i < self->n_pending; i++)
        if (strcmp(self->pending[i]->command, r->command) == 0)
            return;
    if (self->n_pending == self->pending_max) {
        if (!self->overflowing)
            log_warn(NULL, "result queue full: dropping the oldest undelivered result", "{s:i}",
                     "pending_max", (int)self->pending_max);
        self->overflowing = 1;
        s_drop(self, 1);
    }
    Berth__AgentResult *copy = s_copy(r);
    if (copy)
        self->pending[self->n_pending++] = copy;
}

/* Queue r for delivery and tell the owner. */
static void s_deliver(worker_t *self, const Berth__AgentResult *r)
{
    s_queue(self, r);
    if (self->done)
        self->done(r, self->done_arg);
}

/* Keep r (taking it) under id, evicting the oldest entries over the bound. -1 (r not
   taken) when it cannot be stored. */
static int s_remember(worker_t *self, const char *id, Berth__AgentResult *r)
{
    while (zhashx_size(self->cache) >= self->cache_max) {
        char *oldest = zlistx_first(self->order);
        if (!oldest)
            break;
        zhashx_delete(self->cache, oldest);
        zlistx_delete(self->order, zlistx_cursor(self->order));
    }
    char *key = strdup(id);
    if (!key || zhashx_insert(self->cache, id, r) != 0) {
        free(key);
        return -1;
    }
    zlistx_add_end(self->order, key);
    return 0;
}

/* A failed result for a command that did not run. */
static void s_refusal(worker_t *self, const char *command, const char *error)
{
    Berth__AgentResult r = BERTH__AGENT_RESULT__INIT;
    r.command = (char *)(command ? command : "");
    r.error = (char *)error;
    r.ok = 0;
    s_deliver(self, &r);
}

void worker_refuse(worker_t *self, const char *command, const char *error)
{
    log_warn(NULL, "command refused", "{s:s, s:s}", "command", command ? command : "", "error",
             error);
    s_refusal(self, command, error);
}

/* ---- scheduling --------------------------------------------------------------------- */

static s_thread_t *s_idle_thread(worker_t *self)
{
    for (size_t i = 0; i < self->n_threads; i++)
        if (!self->threads[i].job)
            return &self->threads[i];
    return NULL;
}

/* Hand waiting commands to idle threads: each time the oldest whose VM has nothing
   running, so a VM's commands keep their order and other VMs' commands pass them. */
static void s_dispatch(worker_t *self)
{
    s_thread_t *t;
    while ((t = s_idle_thread(self))) {
        s_job_t *job = zlistx_first(self->waiting);
        while (job && zhashx_lookup(self->busy, job->vm))
            job = zlistx_next(self->waiting);
        if (!job)
            return;
        job = zlistx_detach_cur(self->waiting);
        zmsg_t *msg = zmsg_new();
        zmsg_addstr(msg, "RUN");
        zmsg_append(msg, &job->packed);
        t->job = job;
        t->started_ms = util_mono_ms();
        zhashx_insert(self->busy, job->vm, t);
        zmsg_send(&msg, t->actor);
    }
}

int worker_submit(worker_t *self, const Berth__AgentCommand *cmd)
{
    const char *id = cmd->id ? cmd->id : "";
    int trackable = s_trackable(id);
    Berth__AgentResult *cached = trackable ? zhashx_lookup(self->cache, id) : NULL;
    if (cached) {
        log_debug(NULL, "command seen again: answered from the cache", "{s:s, s:b}", "command", id,
                  "ok", cached->ok);
        s_deliver(self, cached);
        return 0;
    }
    if (trackable && zhashx_lookup(self->inflight, id)) {
        log_debug(NULL, "command seen again: already queued or running", "{s:s}", "command", id);
        return 0;
    }
    if (zlistx_size(self->waiting) >= self->queue_max) {
        if (self->refused++ == 0)
            log_warn(NULL, "command queue full: refusing commands until it has room", "{s:i, s:i}",
                     "worker_queue", (int)self->queue_max, "threads", (int)self->n_threads);
        char why[256];
        snprintf(why, sizeof why,
                 "%.32s of VM '%.64s' on host '%.64s' not run: %zu commands are already "
                 "waiting (worker_queue)",
                 cmd->op && *cmd->op ? cmd->op : "command", cmd->vm ? cmd->vm : "",
                 self->config.host, self->queue_max);
        metrics_add(s_m.commands, 1, cmd->op && *cmd->op ? cmd->op : "none", "refused");
        s_refusal(self, id, why);
        return -1;
    }
    if (self->refused) {
        log_info(NULL, "command queue has room again", "{s:i}", "refused", (int)self->refused);
        self->refused = 0;
    }
    s_job_t *job = calloc(1, sizeof *job);
    size_t len = berth__agent_command__get_packed_size(cmd);
    if (job) {
        job->id = strdup(id);
        job->vm = strdup(cmd->vm ? cmd->vm : "");
        job->op = strdup(cmd->op ? cmd->op : "");
        job->packed = zframe_new(NULL, len);
        job->queued_ms = util_mono_ms();
    }
    if (!job || !job->id || !job->vm || !job->op || !job->packed) {
        void *item = job;
        s_job_free(&item);
        log_error(NULL, "out of memory queueing a command", "{s:s}", "command", id);
        s_refusal(self, id, "not run: the agent is out of memory");
        return -1;
    }
    berth__agent_command__pack(cmd, zframe_data(job->packed));
    zlistx_add_end(self->waiting, job);
    if (trackable)
        zhashx_insert(self->inflight, id, job);
    s_dispatch(self);
    s_gauges(self);
    return 0;
}

/* A thread finished its command: log, remember, deliver, and start what waited for it. */
static void s_on_done(worker_t *self, zmsg_t *msg)
{
    char *index = zmsg_popstr(msg);
    char *took = zmsg_popstr(msg);
    zframe_t *frame = zmsg_pop(msg);
    int64_t i = -1, ms = 0;
    if (!index || util_parse_int(index, 0, (int64_t)self->n_threads - 1, &i) != 0 ||
        !self->threads[i].job) {
        log_error(NULL, "worker thread reported a result it was not given", "{s:s?}", "thread",
                  index);
        goto done;
    }
    util_parse_int(took ? took : "0", 0, INT64_MAX, &ms);
    s_thread_t *t = &self->threads[i];
    s_job_t *job = t->job;
    t->job = NULL;
    zhashx_delete(self->busy, job->vm);
    if (*job->id && zhashx_lookup(self->inflight, job->id) == job)
        zhashx_delete(self->inflight, job->id);
    Berth__AgentResult *r = NULL;
    Berth__AgentResult *unpacked =
        frame ? berth__agent_result__unpack(NULL, zframe_size(frame), zframe_data(frame)) : NULL;
    if (unpacked) {
        /* A thread that could not read the command answers under no id: use the one it
           was given. */
        char *command = unpacked->command;
        if (!*command)
            unpacked->command = job->id;
        r = s_copy(unpacked);
        unpacked->command = command;
        berth__agent_result__free_unpacked(unpacked, NULL);
    }
    int64_t waited = t->started_ms - job->queued_ms;
    metrics_add(s_m.commands, 1, job->op, r && r->ok ? "ok" : "failed");
    metrics_observe(s_m.seconds, (double)ms / 1000.0, job->op);
    metrics_observe(s_m.waited, (double)waited / 1000.0, job->op);
    int quiet =
        r && r->ok &&
        (streq(job->op, "CREATE_DISK") || streq(job->op, "PUT_SEED") || streq(job->op, "DEFINE"));
    if (!r) {
        log_error(NULL, "lost the result of a command", "{s:s, s:s}", "command", job->id, "vm",
                  job->vm);
        s_refusal(self, job->id, "not run: the agent is out of memory");
    } else {
        if (r->ok)
            log_info(NULL, "command done", "{s:s, s:s, s:s, s:s, s:I, s:I}", "command", job->id,
                     "op", job->op, "vm", job->vm, "power_state", r->power_state, "ms",
                     (json_int_t)ms, "waited_ms", (json_int_t)waited);
        else
            log_warn(NULL, "command failed", "{s:s, s:s, s:s, s:s, s:I, s:I}", "command", job->id,
                     "op", job->op, "vm", job->vm, "error", r->error, "ms", (json_int_t)ms,
                     "waited_ms", (json_int_t)waited);
        /* Remembered before anyone hears of it, so a redelivery is answered from the
           cache from now on. */
        int kept = s_trackable(job->id) && strcmp(r->command, job->id) == 0 &&
                   s_remember(self, job->id, r) == 0;
        s_deliver(self, r);
        if (!kept) {
            void *item = r;
            s_result_free(&item);
        }
    }
    /* What runs may have changed: the heartbeat should say so without waiting its turn.
       Disk, seed and definition work changes nothing that runs (a defined domain that is
       not started shows at the next periodic snapshot), so it asks for no snapshot unless
       it failed part way. */
    void *item = job;
    s_job_free(&item);
    if (self->watcher && !quiet)
        zstr_send(self->watcher, "REFRESH");
done:
    free(index);
    free(took);
    zframe_destroy(&frame);
}

/* A fresh inventory: keep it; tell the owner when it differs from the last one. */
static void s_on_inventory(worker_t *self, zmsg_t *msg)
{
    zframe_t *frame = zmsg_pop(msg);
    Berth__Host *host =
        frame ? berth__host__unpack(NULL, zframe_size(frame), zframe_data(frame)) : NULL;
    if (!host) {
        zframe_destroy(&frame);
        return;
    }
    int changed = !self->inventory_packed || !zframe_eq(frame, self->inventory_packed);
    self->inventory_ms = util_mono_ms();
    if (self->is_stuck) {
        log_info(NULL, "libvirt calls return again", "{s:s}", "uri", self->uri);
        self->is_stuck = 0;
        changed = 1;
    }
    if (self->inventory)
        berth__host__free_unpacked(self->inventory, NULL);
    self->inventory = host;
    zframe_destroy(&self->inventory_packed);
    self->inventory_packed = frame;
    if (changed && self->on_inventory)
        self->on_inventory(host, self->on_inventory_arg);
}

void worker_recv(worker_t *self)
{
    /* Everything that is there now, then back to the loop. */
    while (zsock_events(self->results) & ZMQ_POLLIN) {
        zmsg_t *msg = zmsg_recv(self->results);
        if (!msg)
            break;
        char *kind = zmsg_popstr(msg);
        if (kind && streq(kind, "DONE"))
            s_on_done(self, msg);
        else if (kind && streq(kind, "INVENTORY"))
            s_on_inventory(self, msg);
        free(kind);
        zmsg_destroy(&msg);
    }
    s_dispatch(self);
    s_gauges(self);
}

void worker_set_pending_max(worker_t *self, size_t pending_max)
{
    pending_max = pending_max > 0 ? pending_max : 1;
    if (pending_max < self->n_pending)
        s_drop(self, self->n_pending - pending_max);
    Berth__AgentResult **grown = realloc(self->pending, pending_max * sizeof *grown);
    if (grown) {
        self->pending = grown;
        self->pending_max = pending_max;
    }
}

size_t worker_pending(worker_t *self, Berth__AgentResult ***results_p)
{
    *results_p = self->pending;
    return self->n_pending;
}

void worker_delivered(worker_t *self, size_t count)
{
    s_drop(self, count);
    self->overflowing = 0;
}

size_t worker_cached(worker_t *self)
{
    return zhashx_size(self->cache);
}

size_t worker_busy(worker_t *self)
{
    return zlistx_size(self->waiting) + zhashx_size(self->busy);
}
