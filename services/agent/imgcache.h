/*  imgcache: the agent's cache of base images, fetched from the stager in chunks.

    A directory of image files named by their hex SHA-256, bounded in bytes: a new image makes
    room by evicting the least recently used image no VM on this host depends on (a linked
    clone's overlay depends on its base; a full copy does not; the dependencies are the files
    of <dir>/refs, one per VM, written by vmops) and none a command is about to use (held).
    A missing image is fetched with GetImageChunk, several chunks in flight (the credit), each
    checked against its SHA-256 as it arrives, into <sha>.part; the whole file's SHA-256 is
    checked before it is renamed to <sha> and used. A sidecar (<sha>.part.chunks) keeps the
    digest of every chunk written, so a transfer cut short (the agent killed, the stager
    restarted) resumes from what is on disk after checking it again. Runs on the agent's loop. */
#ifndef BERTH_AGENT_IMGCACHE_H
#define BERTH_AGENT_IMGCACHE_H

#include "bus_client.h"

#include <stdint.h>

typedef struct _imgcache_t imgcache_t;

typedef struct {
    const char *dir;     /* the cache directory (made when missing) */
    int64_t max_bytes;   /* the most the cached images may take together */
    int64_t chunk_bytes; /* bytes asked for per GetImageChunk */
    int credit;          /* chunk requests one transfer keeps in flight */
    int retries;         /* times one chunk is asked for again (bad digest, no answer) */
    int timeout_ms;      /* the longest one chunk call waits */
} imgcache_config_t;

/* What a get ends with: path of the cached image (borrowed for the call) or error. */
typedef void(imgcache_ready_fn)(const char *path, const char *error, void *arg);

/* client (borrowed) has the target "stager-images" pinned to the stager; NULL when no stager
   is configured (only images cached already can be used). NULL when dir cannot be made. */
imgcache_t *imgcache_new(const imgcache_config_t *config, bus_client_t *client);
/* Drops transfers in flight without calling their waiters back (their .part files stay). */
void imgcache_destroy(imgcache_t **self_p);

/* The image of digest sha256 (the stager's image `image`, of bytes bytes): fn is called
   once, at once when it is cached, else when its transfer ends. */
void imgcache_get(imgcache_t *self, const char *sha256, const char *image, int64_t bytes,
                  imgcache_ready_fn *fn, void *arg);

/* A command is about to use (hold) or is done with (release) the image: held images are never
   evicted. */
void imgcache_hold(imgcache_t *self, const char *sha256);
void imgcache_release(imgcache_t *self, const char *sha256);

/* The socket of the thread computing files' digests, and what the loop does when it is
   readable (a transfer moves on). */
zsock_t *imgcache_socket(imgcache_t *self);
void imgcache_recv(imgcache_t *self);

/* The digests of the images cached (borrowed, valid until the cache next changes). */
char **imgcache_list(imgcache_t *self, size_t *n);

/* The refs directory of a cache directory: <dir>/refs, one file per VM naming its base. */
int imgcache_ref_path(const char *dir, const char *vm, char *out, size_t size);

#endif
