/*  transfer: GetImageChunk, one chunk of an image file per call.

    The image is looked up in the catalog (by id or name) and must be READY with the SHA-256
    the agent expects: an image deleted and imported again under the same name is another
    file, and a transfer must never stitch two files together. A chunk is one pread of at
    most image_chunk_max bytes on the loop, like a seed's read: bounded, and from the page
    cache for a file being transferred. The last image looked up is remembered for a second
    with its file open, so a transfer's chunks cost no Redis round trip each.

    Each chunk goes with its SHA-256, which the agent keeps to check the chunk when it resumes
    a transfer or when the whole file's digest fails (the bus is CURVE: the chunk cannot change
    on the way, so the agent does not hash it on arrival). A chunk's digest is computed once
    per image and chunk size, the first time the chunk is sent, and kept in a sidecar next to
    the image file (<file>.chunks-<chunk bytes>: a header naming the file's size and SHA-256,
    then one digest per chunk, zero for one not computed yet): an image file never changes
    under its digest and one image goes to many hosts, so later transfers (and transfers after
    a restart) read digests instead of hashing. */
#include "transfer.h"
#include "limit.h"
#include "log.h"
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <sodium.h>
#include <unistd.h>

#define TRANSFER_REMEMBER_MS 1000 /* how long a looked-up image is trusted without Redis */
#define SIDECAR_MAGIC        "BERTHCD1"
#define DIGEST               crypto_hash_sha256_BYTES

/* A chunk digest sidecar's header: which file, cut in chunks of which size. */
typedef struct {
    char magic[8];
    int64_t size;
    int64_t chunk;
    char sha256[64];
} s_sidecar_t;

struct _transfer_t {
    catalog_t *catalog;
    int64_t chunk_max;
    uint8_t *buffer; /* chunk_max bytes */
    char ref[72];    /* the image last looked up, as the caller named it */
    char sha256[65]; /* its digest */
    int64_t size;    /* its file's size */
    int fd;          /* its file, open (-1: none) */
    char path[PATH_MAX];
    int64_t looked_at; /* monotonic ms of the lookup */
    int side_fd;       /* its chunk digest sidecar for side_chunk (-1: none open) */
    int64_t side_chunk;
    metrics_family_t *bytes_sent;
};

transfer_t *transfer_new(catalog_t *catalog, int64_t chunk_max)
{
    transfer_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->catalog = catalog;
    self->chunk_max = chunk_max;
    self->fd = -1;
    self->side_fd = -1;
    self->buffer = malloc((size_t)chunk_max);
    self->bytes_sent = metrics_counter("berth_stager_image_bytes_sent_total",
                                       "Bytes of image files sent to agents in chunks", NULL);
    if (!self->buffer)
        transfer_destroy(&self);
    return self;
}

void transfer_destroy(transfer_t **self_p)
{
    transfer_t *self = self_p ? *self_p : NULL;
    if (!self)
        return;
    if (self->fd >= 0)
        close(self->fd);
    if (self->side_fd >= 0)
        close(self->side_fd);
    free(self->buffer);
    free(self);
    *self_p = NULL;
}

/* Forget the image remembered. */
static void s_forget(transfer_t *self)
{
    if (self->fd >= 0)
        close(self->fd);
    if (self->side_fd >= 0)
        close(self->side_fd);
    self->fd = self->side_fd = -1;
    self->ref[0] = '\0';
}

/* Look ref up (or use the image remembered) and open its file: 0, or -1 with error. */
static int s_open(transfer_t *self, const char *ref, const char *sha256, berth_error_t *error)
{
    if (self->fd >= 0 && streq(self->ref, ref) && streq(self->sha256, sha256) &&
        util_mono_ms() - self->looked_at < TRANSFER_REMEMBER_MS)
        return 0;
    s_forget(self);
    Berth__Image *image = NULL;
    int rc = catalog_get(self->catalog, ref, &image);
    if (rc == CATALOG_NOT_FOUND)
        return error_field(error, "image", "no image '%s'", ref);
    if (rc != 0)
        return error_set(error, "UNAVAILABLE", "state store unreachable");
    if (!streq(image->state, "READY") || !image->path || image->path[0] != '/') {
        error_set(error, "CONFLICT", "image '%s' is not READY", ref);
        protobuf_c_message_free_unpacked(&image->base, NULL);
        return -1;
    }
    if (!streq(image->sha256, sha256)) {
        error_field(error, "sha256", "image '%s' has another SHA-256 (%s)", ref, image->sha256);
        protobuf_c_message_free_unpacked(&image->base, NULL);
        return -1;
    }
    int fd = open(image->path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        error_set(error, "INTERNAL", "cannot read image '%s': %s", ref, strerror(errno));
        if (fd >= 0)
            close(fd);
        protobuf_c_message_free_unpacked(&image->base, NULL);
        return -1;
    }
    self->fd = fd;
    self->size = (int64_t)st.st_size;
    util_strlcpy(self->path, image->path, sizeof self->path);
    util_strlcpy(self->ref, ref, sizeof self->ref);
    util_strlcpy(self->sha256, image->sha256, sizeof self->sha256);
    self->looked_at = util_mono_ms();
    protobuf_c_message_free_unpacked(&image->base, NULL);
    return 0;
}

/* The remembered image's sidecar for chunks of chunk bytes, open in side_fd (made, or made
   again when it is of another file): 0, or -1 when it cannot be (the digests are then computed
   each time, as the image's directory allows no file next to it). */
static int s_sidecar(transfer_t *self, int64_t chunk)
{
    if (self->side_fd >= 0 && self->side_chunk == chunk)
        return 0;
    if (self->side_fd >= 0)
        close(self->side_fd);
    self->side_fd = -1;
    char path[PATH_MAX + 40];
    if (snprintf(path, sizeof path, "%s.chunks-%lld", self->path, (long long)chunk) >=
        (int)sizeof path)
        return -1;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        return -1;
    s_sidecar_t head = { 0 }, want = { .size = self->size, .chunk = chunk };
    memcpy(want.magic, SIDECAR_MAGIC, sizeof want.magic);
    memcpy(want.sha256, self->sha256, sizeof want.sha256);
    if (pread(fd, &head, sizeof head, 0) != (ssize_t)sizeof head ||
        memcmp(&head, &want, sizeof head) != 0) {
        int64_t n = (self->size + chunk - 1) / chunk;
        if (ftruncate(fd, 0) != 0 || pwrite(fd, &want, sizeof want, 0) != (ssize_t)sizeof want ||
            ftruncate(fd, (off_t)(sizeof want + (size_t)n * DIGEST)) != 0) {
            close(fd);
            unlink(path);
            return -1;
        }
    }
    self->side_fd = fd;
    self->side_chunk = chunk;
    return 0;
}

/* The digest of the got bytes in buffer, chunk index of chunks of chunk bytes: from the
   sidecar, or computed and noted there. */
static void s_chunk_digest(transfer_t *self, int64_t chunk, int64_t index, size_t got,
                           uint8_t digest[DIGEST])
{
    static const uint8_t zero[DIGEST];
    off_t at = (off_t)(sizeof(s_sidecar_t) + (size_t)index * DIGEST);
    int noted = s_sidecar(self, chunk) == 0;
    if (noted && pread(self->side_fd, digest, DIGEST, at) == DIGEST &&
        memcmp(digest, zero, DIGEST) != 0)
        return;
    crypto_hash_sha256(digest, self->buffer, got);
    if (noted && pwrite(self->side_fd, digest, DIGEST, at) != DIGEST)
        log_warn(NULL, "cannot note a chunk's digest", "{s:s, s:s}", "image", self->ref, "reason",
                 strerror(errno));
}

static int s_is_sha256(const char *text)
{
    if (!text || strlen(text) != 64)
        return 0;
    for (const char *p = text; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return 0;
    return 1;
}

static void s_on_get_chunk(bus_request_t *request, void *arg)
{
    transfer_t *self = arg;
    Berth__GetImageChunk *req = bus_request_body(request, &berth__get_image_chunk__descriptor);
    if (!req) {
        bus_reply_error(request, "BAD_REQUEST", "expected a GetImageChunk body");
        return;
    }
    berth_error_t error = { 0 };
    if (!req->image || !*req->image || strlen(req->image) > LIMIT_IMAGE_NAME_MAX)
        error_field(&error, "image", "image must name an image by id or name");
    else if (!s_is_sha256(req->sha256))
        error_field(&error, "sha256", "sha256 must be 64 lower-case hex digits");
    else if (req->offset < 0)
        error_field(&error, "offset", "offset must not be negative");
    else if (req->size < 1 || req->size > self->chunk_max)
        error_field(&error, "size", "size must be 1 to %lld bytes (image_chunk_max)",
                    (long long)self->chunk_max);
    else if (s_open(self, req->image, req->sha256, &error) == 0 && req->offset >= self->size)
        error_field(&error, "offset", "offset %lld is beyond the image's %lld bytes",
                    (long long)req->offset, (long long)self->size);
    if (error.code[0]) {
        bus_reply_fault(request, &error);
        return;
    }
    size_t want = (size_t)req->size;
    if ((int64_t)want > self->size - req->offset)
        want = (size_t)(self->size - req->offset);
    size_t got = 0;
    while (got < want) {
        ssize_t n = pread(self->fd, self->buffer + got, want - got, (off_t)(req->offset + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            error_set(&error, "INTERNAL", "cannot read image '%s' at %lld: %s", req->image,
                      (long long)(req->offset + got), n < 0 ? strerror(errno) : "file shrank");
            s_forget(self);
            bus_reply_fault(request, &error);
            return;
        }
        got += (size_t)n;
    }
    /* A chunk at a multiple of its size has its digest noted; any other is hashed as sent. */
    uint8_t digest[DIGEST];
    char hex[65];
    if (req->offset % req->size == 0)
        s_chunk_digest(self, req->size, req->offset / req->size, got, digest);
    else
        crypto_hash_sha256(digest, self->buffer, got);
    sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
    Berth__ImageChunk reply = BERTH__IMAGE_CHUNK__INIT;
    reply.offset = req->offset;
    reply.data.data = self->buffer;
    reply.data.len = got;
    reply.sha256 = hex;
    reply.total_bytes = self->size;
    reply.image_sha256 = self->sha256;
    bus_reply(request, &reply.base);
    metrics_add(self->bytes_sent, (double)got);
}

void transfer_register(transfer_t *self, service_t *service)
{
    service_on(service, "GetImageChunk", "agent", s_on_get_chunk, self);
}
