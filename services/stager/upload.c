/*  upload: uploads from agents into the image store (upload.h).

    An upload is written in order: a chunk is taken only at the offset the stager holds up to
    (`received`), after its SHA-256 matched; one resent (below `received`) is answered with the
    state and not written again; one beyond is refused CONFLICT with `received` in details, and
    the agent goes on from there. The file's digest is folded in as the chunks are appended,
    so FinishUpload costs no second read; its state is noted beside the file after each chunk
    (<id>.state), so a restart goes on without reading the bytes held back. Only the host a
    capture names may send or read it, and only agents may; an HTTP upload only the gateway.

    An HTTP upload's FinishUpload is answered once qemu-img has inspected the file on a worker
    thread (a FinishUpload sent again meanwhile waits for the same inspection): refused, the
    files go and the answer names `file`; accepted, the record is written IMPORTING and the
    file moved into the store as <id>.<format>, then READY. */
#include "upload.h"
#include "files.h"
#include "images.h"
#include "limit.h"
#include "metrics.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* <id>.state: the digest of the bytes held so far, so that a restart need not read them. */
#define STATE_MAGIC "BERTHUP1"
typedef struct {
    char magic[8];
    int64_t received;
    crypto_hash_sha256_state digest; /* of [0, received) */
} s_state_t;

typedef struct s_finish_t s_finish_t;

typedef struct {
    Berth__BeginUpload *meta;        /* as the taskmgr or the gateway opened it */
    int fd;                          /* <id>.part, open for writing */
    int64_t received;                /* bytes held */
    crypto_hash_sha256_state digest; /* of [0, received) */
    s_finish_t *finish;              /* an HTTP upload's inspection under way, or NULL */
} s_upload_t;

struct _upload_t {
    upload_config_t config;
    catalog_t *catalog;
    int64_t chunk_max;
    int64_t max_bytes;
    char dir[PATH_MAX];
    zhashx_t *open; /* upload id -> s_upload_t */
    metrics_family_t *bytes_received;
};

/* An HTTP upload's inspection: the FinishUpload requests waiting for it. */
struct s_finish_t {
    upload_t *upload;
    char id[UTIL_ID_LEN];
    char part[PATH_MAX + 64]; /* the file inspected */
    char sha256[65];          /* the file's digest, checked before the inspection */
    zlistx_t *waiting;        /* bus_request_t * kept */
    int gone;                 /* the upload was dropped meanwhile */
    inspect_info_t info;
    berth_error_t error;
    int rc;
};

/* Is the upload an HTTP upload (the gateway's)? */
static int s_http(const s_upload_t *u)
{
    return u->meta->source && streq(u->meta->source, "gateway");
}

static void s_upload_free(void **item)
{
    s_upload_t *u = *item;
    if (!u)
        return;
    if (u->fd >= 0)
        close(u->fd);
    if (u->finish)
        u->finish->gone = 1;
    if (u->meta)
        berth__begin_upload__free_unpacked(u->meta, NULL);
    free(u);
    *item = NULL;
}

upload_t *upload_new(const upload_config_t *config)
{
    upload_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->config = *config;
    self->catalog = config->catalog;
    self->chunk_max = config->chunk_max;
    self->max_bytes = config->max_bytes;
    snprintf(self->dir, sizeof self->dir, "%s/uploads", catalog_dir(self->catalog));
    self->open = zhashx_new();
    if (!self->open || files_mkdirs(self->dir) != 0) {
        zhashx_destroy(&self->open);
        free(self);
        return NULL;
    }
    zhashx_set_destructor(self->open, s_upload_free);
    self->bytes_received =
        metrics_counter("berth_stager_image_bytes_received_total",
                        "Bytes of image files received from agents and the gateway", NULL);
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

/* An agent may touch only the captures naming its host, and only the gateway its HTTP
   uploads (a server without CURVE knows no callers: unit tests). */
static int s_caller_may(bus_request_t *request, const s_upload_t *u)
{
    const bus_caller_t *caller = bus_request_caller(request);
    if (!caller)
        return 1;
    int gateway = streq(caller->service, "gateway");
    if (s_http(u) != gateway) {
        bus_reply_error(request, "FORBIDDEN",
                        gateway ? "this upload is a capture's" : "this upload is the gateway's");
        return 0;
    }
    if (!gateway && streq(caller->service, "agent") && !streq(caller->host, u->meta->host)) {
        bus_reply_error(request, "FORBIDDEN", "this upload is another host's");
        return 0;
    }
    return 1;
}

static void s_begin(upload_t *self, bus_request_t *request, Berth__BeginUpload *req,
                    berth_error_t *error_p);

static void s_on_begin(bus_request_t *request, void *arg)
{
    upload_t *self = arg;
    Berth__BeginUpload *req = bus_request_body(request, &berth__begin_upload__descriptor);
    if (!req) {
        bus_reply_error(request, "BAD_REQUEST", "expected a BeginUpload body");
        return;
    }
    berth_error_t error = { 0 };
    /* An HTTP upload comes from the gateway, for an admin or operator; a capture from the
       taskmgr. */
    int http = req->source && streq(req->source, "gateway");
    const bus_caller_t *caller = bus_request_caller(request);
    if (caller && http != streq(caller->service, "gateway")) {
        bus_reply_error(request, "FORBIDDEN",
                        "the gateway opens HTTP uploads, the taskmgr captures");
        return;
    }
    Berth__UserAssertion *who = NULL;
    if (http && !(who = images_operator(self->config.verifier, request, req->assertion)))
        return;
    int64_t max = http ? self->config.rules->rules.max_virtual_size : self->max_bytes;
    if (!util_is_uuid(req->upload_id))
        error_field(&error, "upload_id", "upload_id must be a UUID");
    else if (!http && (!req->host || !*req->host || strlen(req->host) > 253))
        error_field(&error, "host", "host must name the agent's host");
    else if (!http && !s_is_hex64(req->sha256))
        error_field(&error, "sha256", "sha256 must be 64 lower-case hex digits");
    else if (req->size_bytes < 1 || req->size_bytes > max) {
        error_field(&error, http ? "file" : "size_bytes", "an upload is 1 to %lld bytes (%s)",
                    (long long)max, http ? "import_max_virtual_gb" : "capture_max_bytes");
        if (http)
            error_detail(&error, "reason", "virtual_size");
    } else if (http)
        images_check_meta(req->image, &error);
    else if (!req->image || !catalog_valid_name(req->image->name))
        error_field(&error, "name", "name must match [a-z0-9][a-z0-9._-]{0,63}");
    if (error.code[0]) {
        if (who)
            berth__user_assertion__free_unpacked(who, NULL);
        bus_reply_fault(request, &error);
        return;
    }
    /* The meta keeps who uploads, not the assertion (it expires with the call). */
    Berth__SignedAssertion *assertion = req->assertion;
    char *actor = req->actor, *host = req->host;
    if (who) {
        req->assertion = NULL;
        req->actor = who->user;
        req->host = "";
    }
    s_begin(self, request, req, &error);
    req->assertion = assertion;
    req->actor = actor;
    req->host = host;
    if (who)
        berth__user_assertion__free_unpacked(who, NULL);
}

/* BeginUpload checked: open it (or answer the one opened before). */
static void s_begin(upload_t *self, bus_request_t *request, Berth__BeginUpload *req,
                    berth_error_t *error_p)
{
    berth_error_t error = *error_p;
    berth_error_t found = { 0 };
    s_upload_t *u = s_find(self, req->upload_id, &found);
    if (u) { /* opened before (a lost answer): the same upload, or a clash */
        if (!streq(u->meta->sha256, req->sha256) || !streq(u->meta->host, req->host) ||
            !streq(u->meta->source, req->source))
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
    log_info(bus_request_envelope(request)->request_id, "upload opened",
             "{s:s, s:s, s:s, s:s, s:I}", "upload", req->upload_id, "host", req->host, "source",
             req->source, "name", req->image->name, "bytes", (json_int_t)req->size_bytes);
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
   into the store as <images_dir>/<id>.<format> unless it is there already, after its digest
   is checked against sha) and ends READY; the upload's files go. 0 and *image_p, or -1 with
   error. */
static int s_end_import(upload_t *self, const char *rid, const char *id, const char *name,
                        const char *format, const char *sha, Berth__Image **image_p,
                        berth_error_t *error)
{
    char path[PATH_MAX + 80], part[PATH_MAX + 64], owned[80], hash[65];
    util_strlcpy(owned, name, sizeof owned);
    util_strlcpy(hash, sha, sizeof hash);
    snprintf(path, sizeof path, "%s/%s.%s", catalog_dir(self->catalog), id,
             *format ? format : "qcow2");
    s_path(self, id, ".part", part, sizeof part);
    s_upload_t *u = s_find(self, id, error);
    if (!u)
        return -1;
    int64_t size = u->meta->size_bytes;
    if (!files_exists(path)) {
        uint8_t digest[crypto_hash_sha256_BYTES];
        char hex[65];
        crypto_hash_sha256_state copy = u->digest;
        crypto_hash_sha256_final(&copy, digest);
        sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
        if (u->received != size || !streq(hex, hash) || fsync(u->fd) != 0 ||
            rename(part, path) != 0) {
            catalog_import_end(self->catalog, owned, NULL, NULL, NULL, 0, NULL,
                               "cannot move the uploaded file into the store");
            return error_set(error, "INTERNAL", "cannot move upload %s into the store", id);
        }
    }
    /* The upload's record goes once the image is READY: until then a retry ends it. */
    if (catalog_import_end(self->catalog, owned, path, NULL, NULL, size, hash, NULL) != 0 ||
        catalog_get(self->catalog, owned, image_p) != 0)
        return error_set(error, "UNAVAILABLE", "state store unreachable");
    s_drop(self, id);
    log_info(rid, "uploaded image recorded", "{s:s, s:s, s:s}", "image", owned, "sha256", hash,
             "captured_from", (*image_p)->captured_from);
    return 0;
}

/* Answer request with the image, or the error. */
static void s_answer(bus_request_t *request, int rc, Berth__Image *image, berth_error_t *error)
{
    if (rc == 0)
        bus_reply(request, &image->base);
    else
        bus_reply_fault(request, error);
}

/* The digest of what u holds, in hex. */
static void s_digest_hex(const s_upload_t *u, char hex[65])
{
    uint8_t digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_state copy = u->digest;
    crypto_hash_sha256_final(&copy, digest);
    sodium_bin2hex(hex, 65, digest, sizeof digest);
}

static void s_finish_free(s_finish_t *job)
{
    if (!job)
        return;
    bus_request_t *kept;
    while (job->waiting && (kept = zlistx_detach(job->waiting, NULL)))
        bus_request_destroy(&kept);
    zlistx_destroy(&job->waiting);
    free(job);
}

/* Worker: qemu-img on the file received. */
static void s_inspect_run(void *arg)
{
    s_finish_t *job = arg;
    job->rc = import_inspect(job->upload->config.rules, job->part, "file", &job->info, &job->error);
}

/* Loop: the inspection is over; record the image, or drop the upload. Every FinishUpload
   waiting gets the same answer. */
static void s_inspect_done(void *arg, int deliver)
{
    s_finish_t *job = arg;
    upload_t *self = job->upload;
    if (!deliver) { /* shutting down: the callers send FinishUpload again */
        s_finish_free(job);
        return;
    }
    bus_request_t *first = zlistx_first(job->waiting);
    const char *rid = first ? bus_request_envelope(first)->request_id : NULL;
    berth_error_t error = { 0 };
    Berth__Image *image = NULL;
    int rc = -1;
    s_upload_t *u = job->gone ? NULL : zhashx_lookup(self->open, job->id);
    if (!u)
        error_set(&error, "CONFLICT", "the upload was dropped while it was inspected");
    else if (job->rc != 0) {
        u->finish = NULL;
        error = job->error;
        log_info(rid, "uploaded image refused", "{s:s, s:s}", "upload", job->id, "reason",
                 error.message);
        s_drop(self, job->id);
    } else {
        u->finish = NULL;
        Berth__Image record = *u->meta->image;
        record.id = job->id;
        record.kind = "model";
        record.format = job->info.format;
        record.state = "";
        record.fault = "";
        record.captured_from = "";
        record.created_ms = util_now_ms();
        record.path = "";
        record.sha256 = "";
        record.size_bytes = 0;
        record.version = 0;
        record.kernel_path = "";
        record.initrd_path = "";
        record.cmdline = "";
        record.model = "";
        record.stage = "";
        record.percent = 0;
        record.sysprep = "";
        record.sysprep_report = "";
        record.manifest = "";
        if (!*record.arch)
            record.arch = "x86_64";
        char name[80];
        util_strlcpy(name, record.name, sizeof name);
        if (catalog_import_begin(self->catalog, &record, u->meta->actor, rid, &error) != 0)
            s_drop(self, job->id);
        else
            rc = s_end_import(self, rid, job->id, name, job->info.format, job->sha256, &image,
                              &error);
    }
    bus_request_t *kept;
    while ((kept = zlistx_detach(job->waiting, NULL))) {
        s_answer(kept, rc, image, &error);
        bus_request_destroy(&kept);
    }
    if (image)
        protobuf_c_message_free_unpacked(&image->base, NULL);
    s_finish_free(job);
}

/* FinishUpload of an HTTP upload: check what arrived, then inspect it on a worker. */
static void s_finish_http(upload_t *self, bus_request_t *request, s_upload_t *u, const char *sha256)
{
    berth_error_t error = { 0 };
    bus_request_t *kept = NULL;
    if (u->finish) { /* asked again while it is inspected: the same answer */
        if ((kept = bus_request_defer(request)))
            zlistx_add_end(u->finish->waiting, kept);
        return;
    }
    char hex[65];
    s_digest_hex(u, hex);
    if (u->received != u->meta->size_bytes) {
        error_set(&error, "CONFLICT", "the upload holds %lld of %lld bytes", (long long)u->received,
                  (long long)u->meta->size_bytes);
        bus_reply_fault(request, &error);
        return;
    }
    if (!streq(hex, sha256 ? sha256 : "")) {
        error_field(&error, "sha256", "the file received has SHA-256 %s, not %s", hex,
                    sha256 ? sha256 : "");
        s_drop(self, u->meta->upload_id);
        bus_reply_fault(request, &error);
        return;
    }
    s_finish_t *job = calloc(1, sizeof *job);
    if (job) {
        job->upload = self;
        util_strlcpy(job->id, u->meta->upload_id, sizeof job->id);
        util_strlcpy(job->sha256, hex, sizeof job->sha256);
        s_path(self, job->id, ".part", job->part, sizeof job->part);
        job->waiting = zlistx_new();
    }
    if (!job || !job->waiting || fsync(u->fd) != 0 || !(kept = bus_request_defer(request))) {
        s_finish_free(job);
        bus_reply_error(request, "INTERNAL", "out of memory");
        return;
    }
    zlistx_add_end(job->waiting, kept);
    if (work_submit(self->config.work, s_inspect_run, s_inspect_done, job) != 0) {
        bus_reply_error(kept, "UNAVAILABLE", "busy: the stager's work queue is full; try again");
        s_finish_free(job);
        return;
    }
    u->finish = job;
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
        berth_error_t none = { 0 };
        s_upload_t *u = streq(image->state, "IMPORTING") && streq(image->kind, "model")
                            ? s_find(self, req->upload_id, &none)
                            : NULL;
        if (u && !s_caller_may(request, u)) {
            protobuf_c_message_free_unpacked(&image->base, NULL);
            return;
        }
        if (u) {
            char sha[65], name[80], format[32];
            util_strlcpy(sha, s_http(u) ? req->sha256 : u->meta->sha256, sizeof sha);
            util_strlcpy(name, image->name, sizeof name);
            util_strlcpy(format, image->format, sizeof format);
            protobuf_c_message_free_unpacked(&image->base, NULL);
            image = NULL;
            int rc = s_end_import(self, rid, req->upload_id, name, format, sha, &image, &error);
            s_answer(request, rc, image, &error);
        } else
            bus_reply(request, &image->base);
        if (image)
            protobuf_c_message_free_unpacked(&image->base, NULL);
        return;
    }
    s_upload_t *u = s_find(self, req->upload_id, &error);
    if (!u) {
        bus_reply_fault(request, &error);
        return;
    }
    if (!s_caller_may(request, u))
        return;
    if (s_http(u)) {
        s_finish_http(self, request, u, req->sha256);
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
    char name[80], sha[65];
    util_strlcpy(name, record.name, sizeof name);
    util_strlcpy(sha, u->meta->sha256, sizeof sha);
    rc = s_end_import(self, rid, req->upload_id, name, "qcow2", sha, &image, &error);
    s_answer(request, rc, image, &error);
    if (image)
        protobuf_c_message_free_unpacked(&image->base, NULL);
}

static void s_on_abort(bus_request_t *request, void *arg)
{
    upload_t *self = arg;
    Berth__AbortUpload *req = bus_request_body(request, &berth__abort_upload__descriptor);
    if (!req || !util_is_uuid(req->upload_id)) {
        bus_reply_error(request, "BAD_REQUEST", "expected an AbortUpload with an upload id");
        return;
    }
    berth_error_t none = { 0 };
    s_upload_t *u = s_find(self, req->upload_id, &none);
    if (u && !s_caller_may(request, u))
        return;
    s_drop(self, req->upload_id); /* gone already counts as dropped */
    log_info(bus_request_envelope(request)->request_id, "upload dropped", "{s:s}", "upload",
             req->upload_id);
    Berth__UploadState state = BERTH__UPLOAD_STATE__INIT;
    state.upload_id = req->upload_id;
    bus_reply(request, &state.base);
}

/* Drop the HTTP uploads no chunk reached for idle_ms (by their file's time, so a restart
   keeps counting): their client or the gateway went away. Captures are the taskmgr's to end. */
static int s_sweep(service_t *service, void *arg)
{
    (void)service;
    upload_t *self = arg;
    DIR *dir = opendir(self->dir);
    if (!dir)
        return 0;
    zlistx_t *idle = zlistx_new();
    time_t now = time(NULL);
    struct dirent *e;
    while (idle && (e = readdir(dir))) {
        size_t len = strlen(e->d_name);
        char id[UTIL_ID_LEN], path[PATH_MAX + 64];
        if (len != 36 + 5 || strcmp(e->d_name + 36, ".meta") != 0)
            continue;
        util_strlcpy(id, e->d_name, sizeof id);
        s_upload_t *u = zhashx_lookup(self->open, id);
        if (u && (!s_http(u) || u->finish))
            continue;
        struct stat st;
        s_path(self, id, ".part", path, sizeof path);
        if (stat(path, &st) != 0) {
            s_path(self, id, ".meta", path, sizeof path);
            if (stat(path, &st) != 0)
                continue;
        }
        if ((int64_t)(now - st.st_mtime) * 1000 < self->config.idle_ms)
            continue;
        if (!u) { /* not opened since a restart: opened now, to learn whose it is */
            berth_error_t none = { 0 };
            u = s_find(self, id, &none);
            if (!u || !s_http(u))
                continue;
        }
        zlistx_add_end(idle, strdup(id));
    }
    closedir(dir);
    for (char *id = idle ? zlistx_first(idle) : NULL; id; id = zlistx_next(idle)) {
        log_info(NULL, "idle upload dropped", "{s:s, s:I}", "upload", id, "idle_ms",
                 (json_int_t)self->config.idle_ms);
        s_drop(self, id);
        free(id);
    }
    zlistx_destroy(&idle);
    return 0;
}

void upload_register(upload_t *self, service_t *service)
{
    service_on(service, "BeginUpload", "taskmgr gateway", s_on_begin, self);
    service_on(service, "FinishUpload", "taskmgr gateway", s_on_finish, self);
    service_on(service, "AbortUpload", "taskmgr gateway", s_on_abort, self);
    service_on(service, "GetUploadState", "agent", s_on_state, self);
    service_on(service, "PutImageChunk", "agent gateway", s_on_chunk, self);
    int64_t every = self->config.idle_ms / 4 < 1000 ? self->config.idle_ms / 4 : 1000;
    service_every(service, (int)(every > 50 ? every : 50), s_sweep, self);
}
