/*  uploader: capture files sent to the stager in chunks (uploader.h). */
#include "uploader.h"
#include "chunkwin.h"
#include "limit.h"
#include "log.h"
#include "metrics.h"
#include "vmops.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    uploader_done_fn *fn;
    void *arg;
} s_waiter_t;

typedef struct {
    uploader_t *owner;
    char id[UTIL_ID_LEN];
    int fd;
    chunkwin_t win;
    int started;     /* the stager's state is known: chunks may go */
    int asking;      /* a GetUploadState is out */
    int ended;       /* failed: freed once no call is out */
    int64_t resumed; /* bytes the stager held when this run started */
    zlistx_t *waiters;
    uint8_t *buffer;
} s_up_t;

struct _uploader_t {
    uploader_config_t config;
    char data_dir[PATH_MAX];
    bus_client_t *client;
    zhashx_t *running; /* upload id -> s_up_t */
    zlistx_t *dead;    /* ended uploads waiting for their calls */
    metrics_family_t *m_bytes;
};

static void s_up_free(s_up_t **up_p)
{
    s_up_t *up = *up_p;
    if (!up)
        return;
    if (up->fd >= 0)
        close(up->fd);
    zlistx_destroy(&up->waiters);
    free(up->buffer);
    free(up);
    *up_p = NULL;
}

uploader_t *uploader_new(const uploader_config_t *config, bus_client_t *client)
{
    uploader_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->config = *config;
    util_strlcpy(self->data_dir, config->data_dir, sizeof self->data_dir);
    self->config.data_dir = self->data_dir;
    self->client = client;
    self->running = zhashx_new();
    self->dead = zlistx_new();
    self->m_bytes = metrics_counter("berth_agent_image_bytes_uploaded_total",
                                    "Bytes of capture files sent to the stager", NULL);
    if (!self->running || !self->dead)
        uploader_destroy(&self);
    return self;
}

void uploader_destroy(uploader_t **self_p)
{
    uploader_t *self = self_p ? *self_p : NULL;
    if (!self)
        return;
    if (self->running) {
        /* Waiters are told, so what they hold is freed; the stager keeps what it has. */
        for (s_up_t *up = zhashx_first(self->running); up; up = zhashx_next(self->running)) {
            for (s_waiter_t *w = zlistx_first(up->waiters); w; w = zlistx_next(up->waiters)) {
                w->fn("the agent is stopping", w->arg);
                free(w);
            }
            zlistx_purge(up->waiters);
            s_up_free(&up);
        }
        zhashx_destroy(&self->running);
    }
    if (self->dead) {
        for (s_up_t *up = zlistx_first(self->dead); up; up = zlistx_next(self->dead))
            s_up_free(&up);
        zlistx_destroy(&self->dead);
    }
    free(self);
    *self_p = NULL;
}

/* The upload ends (error NULL: the stager holds it all): every waiter is told. It is freed
   now when no call is out, else once the last comes back. */
static void s_end(s_up_t *up, const char *error)
{
    uploader_t *self = up->owner;
    if (up->ended)
        return;
    up->ended = 1;
    log_info(NULL, error ? "upload failed" : "upload done", "{s:s, s:s, s:I, s:I}", "upload",
             up->id, "error", error ? error : "", "bytes", (json_int_t)up->win.acked, "resumed",
             (json_int_t)up->resumed);
    zhashx_delete(self->running, up->id);
    for (s_waiter_t *w = zlistx_first(up->waiters); w; w = zlistx_next(up->waiters)) {
        w->fn(error, w->arg);
        free(w);
    }
    zlistx_purge(up->waiters);
    if (up->win.inflight == 0 && !up->asking)
        s_up_free(&up);
    else
        zlistx_add_end(self->dead, up);
}

/* An ended upload's last call came back: free it. */
static int s_reap(s_up_t *up)
{
    if (!up->ended)
        return 0;
    if (up->win.inflight == 0 && !up->asking) {
        uploader_t *self = up->owner;
        void *handle = zlistx_find(self->dead, up);
        if (handle)
            zlistx_delete(self->dead, handle);
        s_up_free(&up);
    }
    return 1;
}

static void s_on_chunk(bus_client_t *client, const char *call_id, Berth__Envelope *reply,
                       void *arg);
static void s_ask_state(s_up_t *up);

/* A refusal that will not change (the upload gone, another host's, a bad call). */
static int s_final(const Berth__Envelope *reply)
{
    return reply && reply->error && !streq(reply->error->code, "UNAVAILABLE") &&
           !streq(reply->error->code, "INTERNAL") && !streq(reply->error->code, "CONFLICT");
}

/* Send chunks while credit is left. */
static void s_pump(s_up_t *up)
{
    uploader_t *self = up->owner;
    int64_t offset;
    size_t len;
    if (up->ended || !up->started || up->asking)
        return;
    if (chunkwin_done(&up->win) && up->win.inflight == 0) {
        s_end(up, NULL);
        return;
    }
    while (chunkwin_take(&up->win, &offset, &len)) {
        size_t got = 0;
        while (got < len) {
            ssize_t n = pread(up->fd, up->buffer + got, len - got, (off_t)(offset + (int64_t)got));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                up->win.inflight--;
                char why[256];
                snprintf(why, sizeof why, "cannot read the capture file at %lld: %s",
                         (long long)(offset + (int64_t)got), n < 0 ? strerror(errno) : "short");
                s_end(up, why);
                return;
            }
            got += (size_t)n;
        }
        uint8_t digest[crypto_hash_sha256_BYTES];
        char hex[65];
        crypto_hash_sha256(digest, up->buffer, len);
        sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
        Berth__PutImageChunk req = BERTH__PUT_IMAGE_CHUNK__INIT;
        req.upload_id = up->id;
        req.offset = offset;
        req.data.data = up->buffer;
        req.data.len = len;
        req.sha256 = hex;
        if (bus_client_send(self->client, "stager-images", &req.base, NULL, self->config.timeout_ms,
                            s_on_chunk, up, NULL) != 0) {
            up->win.inflight--;
            s_end(up, "cannot send to the stager");
            return;
        }
    }
}

/* A failed call: fail past the retries, else learn from the stager where to go on. */
static void s_failed(s_up_t *up, const Berth__Envelope *reply)
{
    char why[512];
    snprintf(why, sizeof why, "%s",
             !reply         ? "the stager did not answer"
             : reply->error ? reply->error->message
                            : "bad answer");
    if (s_final(reply)) {
        char msg[600];
        snprintf(msg, sizeof msg, "the stager refused the upload: %s", why);
        s_end(up, msg);
        return;
    }
    if (chunkwin_failed(&up->win) > up->owner->config.retries) {
        char msg[600];
        snprintf(msg, sizeof msg, "upload failed after %d tries: %s", up->owner->config.retries + 1,
                 why);
        s_end(up, msg);
        return;
    }
    s_ask_state(up);
}

static void s_on_chunk(bus_client_t *client, const char *call_id, Berth__Envelope *reply, void *arg)
{
    (void)client;
    (void)call_id;
    s_up_t *up = arg;
    Berth__UploadState *state = NULL;
    if (reply && !reply->error)
        state = (Berth__UploadState *)envelope_body(reply, &berth__upload_state__descriptor);
    if (up->ended) {
        if (up->win.inflight > 0)
            up->win.inflight--;
        s_reap(up);
    } else if (!state)
        s_failed(up, reply);
    else {
        int64_t before = up->win.acked;
        chunkwin_answered(&up->win, state->received);
        if (up->win.acked > before)
            metrics_add(up->owner->m_bytes, (double)(up->win.acked - before));
        s_pump(up);
    }
    if (state)
        berth__upload_state__free_unpacked(state, NULL);
    if (reply)
        berth__envelope__free_unpacked(reply, NULL);
}

static void s_on_state(bus_client_t *client, const char *call_id, Berth__Envelope *reply, void *arg)
{
    (void)client;
    (void)call_id;
    s_up_t *up = arg;
    up->asking = 0;
    Berth__UploadState *state = NULL;
    if (reply && !reply->error)
        state = (Berth__UploadState *)envelope_body(reply, &berth__upload_state__descriptor);
    if (up->ended)
        s_reap(up);
    else if (!state) {
        if (s_final(reply) || chunkwin_failed(&up->win) > up->owner->config.retries) {
            char msg[600];
            snprintf(msg, sizeof msg, "the stager did not tell the upload's state: %s",
                     !reply         ? "no answer"
                     : reply->error ? reply->error->message
                                    : "bad answer");
            s_end(up, msg);
        } else
            s_ask_state(up);
    } else if (state->size_bytes != up->win.size) {
        char msg[200];
        snprintf(msg, sizeof msg, "the stager expects %lld bytes, the capture file has %lld",
                 (long long)state->size_bytes, (long long)up->win.size);
        s_end(up, msg);
    } else {
        if (!up->started) {
            int64_t chunk = up->owner->config.chunk_bytes;
            if (state->chunk_max > 0 && state->chunk_max < chunk)
                chunk = state->chunk_max;
            chunkwin_init(&up->win, up->win.size, chunk, up->owner->config.credit, state->received);
            up->resumed = state->received;
            up->started = 1;
        } else
            chunkwin_rewind(&up->win, state->received);
        s_pump(up);
    }
    if (state)
        berth__upload_state__free_unpacked(state, NULL);
    if (reply)
        berth__envelope__free_unpacked(reply, NULL);
}

static void s_ask_state(s_up_t *up)
{
    if (up->asking)
        return;
    Berth__GetUploadState req = BERTH__GET_UPLOAD_STATE__INIT;
    req.upload_id = up->id;
    if (bus_client_send(up->owner->client, "stager-images", &req.base, NULL,
                        up->owner->config.timeout_ms, s_on_state, up, NULL) != 0) {
        s_end(up, "cannot send to the stager");
        return;
    }
    up->asking = 1;
}

void uploader_start(uploader_t *self, const char *upload_id, int64_t size, uploader_done_fn *fn,
                    void *arg)
{
    char path[PATH_MAX + 80], why[PATH_MAX + 200];
    s_waiter_t *w = calloc(1, sizeof *w);
    if (!w) {
        fn("out of memory", arg);
        return;
    }
    w->fn = fn;
    w->arg = arg;
    s_up_t *up = util_is_uuid(upload_id) ? zhashx_lookup(self->running, upload_id) : NULL;
    if (up) {
        zlistx_add_end(up->waiters, w);
        return;
    }
    if (vmops_capture_path(self->data_dir, upload_id, path, sizeof path) != 0) {
        free(w);
        fn("invalid CAPTURE_UPLOAD: upload_id must be a UUID", arg);
        return;
    }
    if (size < 1 || size > TRANSFER_UPLOAD_MAX) {
        free(w);
        fn("invalid CAPTURE_UPLOAD: upload_bytes out of range", arg);
        return;
    }
    up = calloc(1, sizeof *up);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (!up || fd < 0 || fstat(fd, &st) != 0 || (int64_t)st.st_size != size) {
        snprintf(why, sizeof why, "the capture file %s %s", path,
                 fd < 0 ? strerror(errno) : "does not have the size the task expects");
        if (fd >= 0)
            close(fd);
        free(up);
        free(w);
        fn(why, arg);
        return;
    }
    up->owner = self;
    up->fd = fd;
    util_strlcpy(up->id, upload_id, sizeof up->id);
    up->waiters = zlistx_new();
    up->buffer = malloc((size_t)self->config.chunk_bytes);
    if (!up->waiters || !up->buffer) {
        s_up_free(&up);
        free(w);
        fn("out of memory", arg);
        return;
    }
    zlistx_add_end(up->waiters, w);
    chunkwin_init(&up->win, size, self->config.chunk_bytes, self->config.credit, 0);
    zhashx_insert(self->running, up->id, up);
    s_ask_state(up);
}
