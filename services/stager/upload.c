/*  upload: uploads from agents into the image store (upload.h).

    An upload is written in order: a chunk is taken only at the offset the stager holds up to
    (`received`), after its SHA-256 matched; one resent (below `received`) is answered with the
    state and not written again; one beyond is refused CONFLICT with `received` in details, and
    the agent goes on from there. The file's digest is folded in as the chunks are appended,
    so FinishUpload costs no second read; its state is noted beside the file after each chunk
    (<id>.state), so a restart goes on without reading the bytes held back. Only the host an upload
   names may send or read it, and only agents may. */
#include "upload.h"
#include "files.h"
#include "limit.h"
#include "metrics.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

/* <id>.state: the digest of the bytes held so far, so that a restart need not read them. */
#define STATE_MAGIC "BERTHUP1"
typedef struct {
    char magic[8];
    int64_t received;
    crypto_hash_sha256_state digest; /* of [0, received) */
} s_state_t;

typedef struct {
    Berth__BeginUpload *meta;        /* as the taskmgr opened it */
    int fd;                          /* <id>.part, open for writing */
    int64_t received;                /* bytes held */
    crypto_hash_sha256_state digest; /* of [0, received) */
} s_upload_t;

struct _upload_t {
    catalog_t *catalog;
    int64_t chunk_max;
    int64_t max_bytes;
    char dir[PATH_MAX];
    zhashx_t *open; /* upload id -> s_upload_t */
    metrics_family_t *bytes_received;
};

static void s_upload_free(void **item)
{
    s_upload_t *u = *item;
    if (!u)
        return;
    if (u->fd >= 0)
        close(u->fd);
    if (u->meta)
        berth__begin_upload__free_unpacked(u->meta, NULL);
    free(u);
    *item = NULL;
}

upload_t *upload_new(catalog_t *catalog, int64_t chunk_max, int64_t max_bytes)
{
    upload_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->catalog = catalog;
    self->chunk_max = chunk_max;
    self->max_bytes = max_bytes;
    snprintf(self->dir, sizeof self->dir, "%s/uploads", catalog_dir(catalog));
    self->open = zhashx_new();
    if (!self->open || files_mkdirs(self->dir) != 0) {
        zhashx_destroy(&self->open);
        free(self);
        return NULL;
    }
    zhashx_set_destructor(self->open, s_upload_free);
    self->bytes_received = metrics_counter("berth_stager_image_bytes_received_total",
                                           "Bytes of image files received from agents", NULL);
    return self;
}

void upload_destroy(upload_t **self_p)
{
    upload_t *self = self_p ? *self_p : NULL;
    if (!self)
        return;
    zhashx_destroy(&self->open);
    free(self);
    *self_p = NULL;
}

static void s_path(upload_t *self, const char *id, const char *suffix, char *out, size_t size)
{
    snprintf(out, size, "%s/%s%s", self->dir, id, suffix);
}

/* The open upload id names: from memory, or read back from its files (after a restart).
   NULL with error NOT_FOUND (or INTERNAL). */
static s_upload_t *s_find(upload_t *self, const char *id, berth_error_t *error)
{
    if (!util_is_uuid(id)) {
        error_field(error, "upload_id", "upload_id must be a UUID");
        return NULL;
    }
    s_upload_t *u = zhashx_lookup(self->open, id);
    if (u)
        return u;
    char meta_path[PATH_MAX + 64], part_path[PATH_MAX + 64];
    s_path(self, id, ".meta", meta_path, sizeof meta_path);
    s_path(self, id, ".part", part_path, sizeof part_path);
    uint8_t *data = NULL;
    size_t size = 0;
    if (files_read(meta_path, 1 << 20, &data, &size) != 0) {
        error_set(error, "NOT_FOUND", "no upload %s", id);
        return NULL;
    }
    u = calloc(1, sizeof *u);
    if (u)
        u->meta = berth__begin_upload__unpack(NULL, size, data);
    free(data);
    if (!u || !u->meta) {
        free(u);
        error_set(error, "INTERNAL", "cannot read upload %s", id);
        return NULL;
    }
    u->fd = open(part_path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    struct stat st;
    if (u->fd < 0 || fstat(u->fd, &st) != 0) {
        error_set(error, "INTERNAL", "cannot open upload %s: %s", id, strerror(errno));
        s_upload_free((void **)&u);
        return NULL;
    }
    /* The digest of the bytes held, as noted after the last chunk appended (<id>.state); a
       note that does not fit the file (a power loss between the two writes) has the bytes
       held read back once instead. */
    char state_path[PATH_MAX + 64];
    s_path(self, id, ".state", state_path, sizeof state_path);
    s_state_t note;
    int sfd = open(state_path, O_RDONLY | O_CLOEXEC);
    int noted = sfd >= 0 && read(sfd, &note, sizeof note) == (ssize_t)sizeof note &&
                memcmp(note.magic, STATE_MAGIC, sizeof note.magic) == 0 && note.received >= 0 &&
                note.received <= (int64_t)st.st_size && note.received <= u->meta->size_bytes;
    if (sfd >= 0)
        close(sfd);
    crypto_hash_sha256_init(&u->digest);
    uint8_t buffer[65536];
    int64_t held = 0;
    if (noted) {
        u->digest = note.digest;
        held = note.received;
    }
    while (!noted && held < (int64_t)st.st_size && held < u->meta->size_bytes) {
        ssize_t n = pread(u->fd, buffer, sizeof buffer, (off_t)held);
        if (n <= 0)
            break;
        crypto_hash_sha256_update(&u->digest, buffer, (size_t)n);
        held += n;
    }
    u->received = held;
    if (ftruncate(u->fd, (off_t)held) != 0) {
        error_set(error, "INTERNAL", "cannot open upload %s: %s", id, strerror(errno));
        s_upload_free((void **)&u);
        return NULL;
    }
    zhashx_update(self->open, id, u);
    log_info(NULL, "upload reopened", "{s:s, s:I, s:b}", "upload", id, "received", (json_int_t)held,
             "noted", noted);
    return u;
}

/* Note the digest of what u holds in <id>.state (best effort: without it a restart reads
   the bytes back). */
static void s_note_state(upload_t *self, const s_upload_t *u)
{
    char path[PATH_MAX + 64];
    s_path(self, u->meta->upload_id, ".state", path, sizeof path);
    s_state_t note;
    memset(&note, 0, sizeof note);
    memcpy(note.magic, STATE_MAGIC, sizeof note.magic);
    note.received = u->received;
    note.digest = u->digest;
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        return;
    if (pwrite(fd, &note, sizeof note, 0) != (ssize_t)sizeof note)
        log_warn(NULL, "cannot note an upload's digest", "{s:s}", "upload", u->meta->upload_id);
    close(fd);
}

static void s_drop(upload_t *self, const char *id)
{
    char path[PATH_MAX + 64];
    zhashx_delete(self->open, id);
    s_path(self, id, ".part", path, sizeof path);
    unlink(path);
    s_path(self, id, ".meta", path, sizeof path);
    unlink(path);
    s_path(self, id, ".state", path, sizeof path);
    unlink(path);
}

static void s_reply_state(bus_request_t *request, upload_t *self, const s_upload_t *u)
{
    Berth__UploadState state = BERTH__UPLOAD_STATE__INIT;
    state.upload_id = u->meta->upload_id;
    state.received = u->received;
    state.size_bytes = u->meta->size_bytes;
    state.chunk_max = self->chunk_max;
    bus_reply(request, &state.base);
}

static int s_is_hex64(const char *text)
{
    if (!text || strlen(text) != 64)
        return 0;
    for (const char *p = text; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return 0;
    return 1;
}

/* An agent may touch only the uploads naming its host (a server without CURVE knows no
   callers: unit tests). */
static int s_caller_may(bus_request_t *request, const s_upload_t *u)
{
    const bus_caller_t *caller = bus_request_caller(request);
    if (caller && !streq(caller->host, u->meta->host)) {
        bus_reply_error(request, "FORBIDDEN", "this upload is another host's");
        return 0;
    }
    return 1;
}

static void s_on_begin(bus_request_t *request, void *arg)
{
    upload_t *self = arg;
    Berth__BeginUpload *req = bus_request_body(request, &berth__begin_upload__descriptor);
    if (!req) {
        bus_reply_error(request, "BAD_REQUEST", "expected a BeginUpload body");
        return;
    }
    berth_error_t error = { 0 };
    if (!util_is_uuid(req->upload_id))
        error_field(&error, "upload_id", "upload_id must be a UUID");
    else if (!req->host || !*req->host || strlen(req->host) > 253)
        error_field(&error, "host", "host must name the agent's host");
    else if (!s_is_hex64(req->sha256))
        error_field(&error, "sha256", "sha256 must be 64 lower-case hex digits");
    else if (req->size_bytes < 1 || req->size_bytes > self->max_bytes)
        error_field(&error, "size_bytes", "an upload is 1 to %lld bytes (capture_max_bytes)",
                    (long long)self->max_bytes);
    else if (!req->image || !catalog_valid_name(req->image->name))
        error_field(&error, "name", "name must match [a-z0-9][a-z0-9._-]{0,63}");
    if (error.code[0]) {
        bus_reply_fault(request, &error);
        return;
    }
    berth_error_t found = { 0 };
    s_upload_t *u = s_find(self, req->upload_id, &found);
    if (u) { /* opened before (a lost answer): the same upload, or a clash */
        if (!streq(u->meta->sha256, req->sha256) || !streq(u->meta->host, req->host))
            bus_reply_error(request, "CONFLICT", "an upload of another file has this id");
        else
            s_reply_state(request, self, u);
        return;
    }
    if (zhashx_size(self->open) >= TRANSFER_UPLOADS_OPEN_MAX) {
        bus_reply_error(request, "UNAVAILABLE", "too many uploads open; try again later");
        return;
    }
    Berth__Image *taken = NULL;
    if (catalog_get(self->catalog, req->image->name, &taken) == 0) {
        protobuf_c_message_free_unpacked(&taken->base, NULL);
        error_field(&error, "name", "an image named '%s' exists already", req->image->name);
        util_strlcpy(error.code, "CONFLICT", sizeof error.code);
        bus_reply_fault(request, &error);
        return;
    }
    size_t len = berth__begin_upload__get_packed_size(req);
    uint8_t *packed = malloc(len ? len : 1);
    char meta_path[PATH_MAX + 64], part_path[PATH_MAX + 64];
    s_path(self, req->upload_id, ".meta", meta_path, sizeof meta_path);
    s_path(self, req->upload_id, ".part", part_path, sizeof part_path);
    if (packed)
        berth__begin_upload__pack(req, packed);
    int fd = packed ? open(part_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640) : -1;
    if (fd >= 0)
        close(fd);
    if (!packed || fd < 0 || files_write(meta_path, packed, len) != 0) {
        free(packed);
        error_set(&error, "INTERNAL", "cannot open the upload: %s", strerror(errno));
        bus_reply_fault(request, &error);
        return;
    }
    free(packed);
    u = s_find(self, req->upload_id, &error);
    if (!u) {
        bus_reply_fault(request, &error);
        return;
    }
    log_info(bus_request_envelope(request)->request_id, "upload opened", "{s:s, s:s, s:s, s:I}",
             "upload", req->upload_id, "host", req->host, "name", req->image->name, "bytes",
             (json_int_t)req->size_bytes);
    s_reply_state(request, self, u);
}

static void s_on_state(bus_request_t *request, void *arg)
{
    upload_t *self = arg;
    Berth__GetUploadState *req = bus_request_body(request, &berth__get_upload_state__descriptor);
    if (!req) {
        bus_reply_error(request, "BAD_REQUEST", "expected a GetUploadState body");
        return;
    }
    berth_error_t error = { 0 };
    s_upload_t *u = s_find(self, req->upload_id, &error);
    if (!u) {
        bus_reply_fault(request, &error);
        return;
    }
    if (s_caller_may(request, u))
        s_reply_state(request, self, u);
}

static void s_on_chunk(bus_request_t *request, void *arg)
{
    upload_t *self = arg;
    Berth__PutImageChunk *req = bus_request_body(request, &berth__put_image_chunk__descriptor);
    if (!req) {
        bus_reply_error(request, "BAD_REQUEST", "expected a PutImageChunk body");
        return;
    }
    berth_error_t error = { 0 };
    s_upload_t *u = s_find(self, req->upload_id, &error);
    if (!u) {
        bus_reply_fault(request, &error);
        return;
    }
    if (!s_caller_may(request, u))
        return;
    int64_t len = (int64_t)req->data.len;
    char hex[65];
    if (len < 1 || len > self->chunk_max)
        error_field(&error, "data", "a chunk is 1 to %lld bytes (image_chunk_max)",
                    (long long)self->chunk_max);
    else if (req->offset < 0 || req->offset + len > u->meta->size_bytes)
        error_field(&error, "offset", "the chunk [%lld, +%lld) is outside the file's %lld bytes",
                    (long long)req->offset, (long long)len, (long long)u->meta->size_bytes);
    else if (!s_is_hex64(req->sha256))
        error_field(&error, "sha256", "sha256 must be 64 lower-case hex digits");
    else {
        files_sha256_hex(req->data.data, req->data.len, hex);
        if (!streq(hex, req->sha256))
            error_field(&error, "sha256", "the chunk at %lld does not match its SHA-256",
                        (long long)req->offset);
    }
    if (!error.code[0] && req->offset > u->received) {
        error_set(&error, "CONFLICT", "the upload holds %lld bytes: send from there",
                  (long long)u->received);
        error_detail(&error, "received", "%lld", (long long)u->received);
    }
    if (error.code[0]) {
        bus_reply_fault(request, &error);
        return;
    }
    if (req->offset + len <= u->received) { /* sent again: held already */
        s_reply_state(request, self, u);
        return;
    }
    /* Overlapping what is held: only the new tail is appended. */
    int64_t skip = u->received - req->offset;
    const uint8_t *data = req->data.data + skip;
    size_t fresh = (size_t)(len - skip), done = 0;
    while (done < fresh) {
        ssize_t n = pwrite(u->fd, data + done, fresh - done, (off_t)(u->received + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            error_set(&error, "INTERNAL", "cannot write upload %s: %s", req->upload_id,
                      strerror(errno));
            bus_reply_fault(request, &error);
            return;
        }
        done += (size_t)n;
    }
    crypto_hash_sha256_update(&u->digest, data, fresh);
    u->received += (int64_t)fresh;
    s_note_state(self, u);
    metrics_add(self->bytes_received, (double)fresh);
    s_reply_state(request, self, u);
}

/* Fill what the capture did not name from the VM's image. */
static void s_defaults(Berth__Image *image, const Berth__Image *source)
{
    if (!source)
        return;
    if (!*image->os)
        image->os = source->os;
    if (!*image->os_version)
        image->os_version = source->os_version;
    if (!*image->arch)
        image->arch = source->arch;
    if (!image->n_applications) {
        image->applications = source->applications;
        image->n_applications = source->n_applications;
    }
    if (!image->min_ram_mb)
        image->min_ram_mb = source->min_ram_mb;
    if (!image->min_disk_gb)
        image->min_disk_gb = source->min_disk_gb;
}

/* The image named name, recorded IMPORTING for upload id, gets its file (the upload's, moved
   into the store as <images_dir>/<id>.qcow2 unless it is there already) and ends READY; the
   upload's files go. Answered with the image. */
static void s_end_import(upload_t *self, bus_request_t *request, const char *id, const char *name)
{
    const char *rid = bus_request_envelope(request)->request_id;
    berth_error_t error = { 0 };
    char path[PATH_MAX + 80], part[PATH_MAX + 64], owned[80];
    util_strlcpy(owned, name, sizeof owned);
    snprintf(path, sizeof path, "%s/%s.qcow2", catalog_dir(self->catalog), id);
    s_path(self, id, ".part", part, sizeof part);
    s_upload_t *u = s_find(self, id, &error);
    if (!u) {
        bus_reply_fault(request, &error);
        return;
    }
    char sha[65];
    int64_t size = u->meta->size_bytes;
    util_strlcpy(sha, u->meta->sha256, sizeof sha);
    if (!files_exists(path)) {
        uint8_t digest[crypto_hash_sha256_BYTES];
        char hex[65];
        crypto_hash_sha256_state copy = u->digest;
        crypto_hash_sha256_final(&copy, digest);
        sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
        if (u->received != size || !streq(hex, sha) || fsync(u->fd) != 0 ||
            rename(part, path) != 0) {
            catalog_import_end(self->catalog, owned, NULL, NULL, NULL, 0, NULL,
                               "cannot move the uploaded file into the store");
            error_set(&error, "INTERNAL", "cannot move upload %s into the store", id);
            bus_reply_fault(request, &error);
            return;
        }
    }
    /* The upload's record goes once the image is READY: until then a retry ends it. */
    Berth__Image *image = NULL;
    if (catalog_import_end(self->catalog, owned, path, NULL, NULL, size, sha, NULL) != 0 ||
        catalog_get(self->catalog, owned, &image) != 0) {
        bus_reply_error(request, "UNAVAILABLE", "state store unreachable");
        return;
    }
    s_drop(self, id);
    log_info(rid, "captured image recorded", "{s:s, s:s, s:s}", "image", owned, "sha256", sha,
             "captured_from", image->captured_from);
    bus_reply(request, &image->base);
    protobuf_c_message_free_unpacked(&image->base, NULL);
}

static void s_on_finish(bus_request_t *request, void *arg)
{
    upload_t *self = arg;
    Berth__FinishUpload *req = bus_request_body(request, &berth__finish_upload__descriptor);
    if (!req) {
        bus_reply_error(request, "BAD_REQUEST", "expected a FinishUpload body");
        return;
    }
    const char *rid = bus_request_envelope(request)->request_id;
    berth_error_t error = { 0 };
    Berth__Image *image = NULL;
    /* Finished before (a lost answer): the image it made, whose id is the upload's. One
       recorded but not ended (the stager stopped, or Redis failed, in between) is ended now
       from the upload's record. */
    if (util_is_uuid(req->upload_id) && catalog_get(self->catalog, req->upload_id, &image) == 0) {
        if (streq(image->state, "IMPORTING") && streq(image->kind, "model") &&
            *image->captured_from)
            s_end_import(self, request, req->upload_id, image->name);
        else
            bus_reply(request, &image->base);
        protobuf_c_message_free_unpacked(&image->base, NULL);
        return;
    }
    s_upload_t *u = s_find(self, req->upload_id, &error);
    if (!u) {
        bus_reply_fault(request, &error);
        return;
    }
    uint8_t digest[crypto_hash_sha256_BYTES];
    char hex[65];
    if (u->received != u->meta->size_bytes) {
        error_set(&error, "CONFLICT", "the upload holds %lld of %lld bytes", (long long)u->received,
                  (long long)u->meta->size_bytes);
        bus_reply_fault(request, &error);
        return;
    }
    crypto_hash_sha256_state copy = u->digest;
    crypto_hash_sha256_final(&copy, digest);
    sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
    if (!streq(hex, u->meta->sha256)) {
        error_field(&error, "sha256", "the file received has SHA-256 %s, not %s", hex,
                    u->meta->sha256);
        log_warn(rid, "upload dropped: digest mismatch", "{s:s}", "upload", req->upload_id);
        s_drop(self, req->upload_id);
        bus_reply_fault(request, &error);
        return;
    }
    Berth__Image *source = NULL;
    if (u->meta->source_image && *u->meta->source_image &&
        catalog_get(self->catalog, u->meta->source_image, &source) != 0)
        source = NULL;
    Berth__Image record = *u->meta->image;
    s_defaults(&record, source);
    record.id = u->meta->upload_id;
    record.kind = "model";
    record.format = "qcow2";
    record.state = "";
    record.captured_from = u->meta->vm;
    record.created_ms = util_now_ms();
    record.path = "";
    record.sha256 = "";
    record.size_bytes = 0;
    int rc = catalog_import_begin(self->catalog, &record, "", rid, &error);
    if (source)
        protobuf_c_message_free_unpacked(&source->base, NULL);
    if (rc != 0) {
        bus_reply_fault(request, &error);
        return;
    }
    s_end_import(self, request, req->upload_id, record.name);
}

static void s_on_abort(bus_request_t *request, void *arg)
{
    upload_t *self = arg;
    Berth__AbortUpload *req = bus_request_body(request, &berth__abort_upload__descriptor);
    if (!req || !util_is_uuid(req->upload_id)) {
        bus_reply_error(request, "BAD_REQUEST", "expected an AbortUpload with an upload id");
        return;
    }
    s_drop(self, req->upload_id); /* gone already counts as dropped */
    log_info(bus_request_envelope(request)->request_id, "upload dropped", "{s:s}", "upload",
             req->upload_id);
    Berth__UploadState state = BERTH__UPLOAD_STATE__INIT;
    state.upload_id = req->upload_id;
    bus_reply(request, &state.base);
}

void upload_register(upload_t *self, service_t *service)
{
    service_on(service, "BeginUpload", "taskmgr", s_on_begin, self);
    service_on(service, "FinishUpload", "taskmgr", s_on_finish, self);
    service_on(service, "AbortUpload", "taskmgr", s_on_abort, self);
    service_on(service, "GetUploadState", "agent", s_on_state, self);
    service_on(service, "PutImageChunk", "agent", s_on_chunk, self);
}
