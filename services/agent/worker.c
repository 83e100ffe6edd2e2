/*  worker: command execution with at-most-once effect per command id.

    taskmgr delivers commands at least once (a poll reply can be lost, a new taskmgr instance
    resends what its predecessor had in flight), so the agent remembers the last cache_max
    results by command id, oldest evicted first. A command seen again is answered from
    there. Eviction is safe because every operation is also idempotent by VM id: a command
    redelivered after its entry was evicted is run again and finds its work already done.

    Results travel on the next poll. They stay queued until a poll carrying them is
    answered, so a taskmgr that is down or restarting loses none; the queue is bounded and,
    when full, drops its oldest entry (still in the cache: a redelivery re-answers it). */
#include "worker.h"
#include "log.h"
#include "util.h"

#include <czmq.h>

struct _worker_t {
    vmops_t *ops;    /* borrowed */
    zhashx_t *cache; /* command id -> Berth__AgentResult* (owned) */
    zlistx_t *order; /* command ids, oldest first, for eviction */
    size_t cache_max;
    Berth__AgentResult **pending; /* owned copies awaiting delivery, oldest first */
    size_t n_pending;
    size_t pending_max;
    int overflowing;              /* pending queue hit its bound: warned once */
    Berth__AgentResult *uncached; /* last result of a command with no usable id */
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

worker_t *worker_new(vmops_t *ops, size_t cache_max, size_t pending_max)
{
    worker_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->ops = ops;
    self->cache_max = cache_max > 0 ? cache_max : 1;
    self->pending_max = pending_max > 0 ? pending_max : 1;
    self->cache = zhashx_new();
    self->order = zlistx_new();
    self->pending = calloc(self->pending_max, sizeof *self->pending);
    if (!self->cache || !self->order || !self->pending) {
        worker_destroy(&self);
        return NULL;
    }
    zhashx_set_destructor(self->cache, s_result_free);
    zlistx_set_destructor(self->order, s_str_free);
    return self;
}

void worker_destroy(worker_t **self_p)
{
    if (self_p && *self_p) {
        worker_t *self = *self_p;
        zhashx_destroy(&self->cache);
        zlistx_destroy(&self->order);
        if (self->pending)
            s_drop(self, self->n_pending);
        free(self->pending);
        void *item = self->uncached;
        s_result_free(&item);
        free(self);
        *self_p = NULL;
    }
}

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

const Berth__AgentResult *worker_run(worker_t *self, const Berth__AgentCommand *cmd)
{
    const char *id = cmd->id ? cmd->id : "";
    Berth__AgentResult *cached = *id ? zhashx_lookup(self->cache, id) : NULL;
    if (cached) {
        log_debug(NULL, "command seen again: answered from the cache", "{s:s, s:b}", "command", id,
                  "ok", cached->ok);
        s_queue(self, cached);
        return cached;
    }
    Berth__AgentResult *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    int64_t started = util_mono_ms();
    vmops_execute(self->ops, cmd, r);
    int64_t took = util_mono_ms() - started;
    if (r->ok)
        log_info(NULL, "command done", "{s:s, s:s?, s:s?, s:s, s:I}", "command", id, "op", cmd->op,
                 "vm", cmd->vm, "power_state", r->power_state, "ms", (json_int_t)took);
    else
        log_warn(NULL, "command failed", "{s:s, s:s?, s:s?, s:s, s:I}", "command", id, "op",
                 cmd->op, "vm", cmd->vm, "error", r->error, "ms", (json_int_t)took);
    s_queue(self, r);
    /* Only well-formed ids are remembered; vmops refused the others, and a result keyed
       by garbage could never be asked for again. */
    if (*id && *r->command && strcmp(r->command, id) == 0 && strlen(id) <= 128 &&
        s_remember(self, id, r) == 0)
        return r;
    void *item = self->uncached;
    s_result_free(&item);
    self->uncached = r;
    return r;
}

void worker_refuse(worker_t *self, const char *command, const char *error)
{
    Berth__AgentResult r = BERTH__AGENT_RESULT__INIT;
    r.command = (char *)(command ? command : "");
    r.error = (char *)error;
    r.ok = 0;
    log_warn(NULL, "command refused", "{s:s, s:s}", "command", r.command, "error", error);
    s_queue(self, &r);
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
