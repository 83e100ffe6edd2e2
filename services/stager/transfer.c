/*  transfer: GetImageChunk, one chunk of an image file per call.

    The image is looked up in the catalog (by id or name) and must be READY with the SHA-256
    the agent expects: an image deleted and imported again under the same name is another
    file, and a transfer must never stitch two files together. A chunk is one pread of at
    most image_chunk_max bytes on the loop, like a seed's read: bounded, and from the page
    cache for a file being transferred. The last image looked up is remembered for a second
    with its file open, so a transfer's chunks cost no Redis round trip each. A chunk's digest
    is remembered too (an image file never changes under its digest, and one image goes to
    many hosts): the same chunk sent again costs its read, not its hashing. */
#include "transfer.h"
#include "files.h"
#include "limit.h"
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sodium.h>
#include <unistd.h>

#define TRANSFER_REMEMBER_MS 1000  /* how long a looked-up image is trusted without Redis */
#define TRANSFER_DIGESTS_MAX 65536 /* chunk digests remembered (64 GiB of 1 MiB chunks) */

struct _transfer_t {
    catalog_t *catalog;
    int64_t chunk_max;
    uint8_t *buffer;   /* chunk_max bytes */
    char ref[72];      /* the image last looked up, as the caller named it */
    char sha256[65];   /* its digest */
    int64_t size;      /* its file's size */
    int fd;            /* its file, open (-1: none) */
    int64_t looked_at; /* monotonic ms of the lookup */
    zhashx_t *digests; /* "<image sha256>:<offset>:<bytes>" -> hex digest of that chunk */
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
    self->buffer = malloc((size_t)chunk_max);
    self->digests = zhashx_new();
    if (self->digests)
        zhashx_set_destructor(self->digests, (zhashx_destructor_fn *)zstr_free);
    self->bytes_sent = metrics_counter("berth_stager_image_bytes_sent_total",
                                       "Bytes of image files sent to agents in chunks", NULL);
    if (!self->buffer || !self->digests)
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
    free(self->buffer);
    zhashx_destroy(&self->digests);
    free(self);
    *self_p = NULL;
}

/* Forget the image remembered. */
static void s_forget(transfer_t *self)
{
    if (self->fd >= 0)
        close(self->fd);
    self->fd = -1;
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
    util_strlcpy(self->ref, ref, sizeof self->ref);
    util_strlcpy(self->sha256, image->sha256, sizeof self->sha256);
    self->looked_at = util_mono_ms();
    protobuf_c_message_free_unpacked(&image->base, NULL);
    return 0;
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
    char key[100], hex[65];
    snprintf(key, sizeof key, "%s:%lld:%zu", self->sha256, (long long)req->offset, got);
    const char *known = zhashx_lookup(self->digests, key);
    if (known)
        util_strlcpy(hex, known, sizeof hex);
    else {
        files_sha256_hex(self->buffer, got, hex);
        if (zhashx_size(self->digests) >= TRANSFER_DIGESTS_MAX)
            zhashx_purge(self->digests);
        zhashx_insert(self->digests, key, strdup(hex));
    }
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
