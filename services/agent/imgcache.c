/*  imgcache: base images cached on the host, fetched in chunks with credit-based flow control.

    The transfer follows the ZeroMQ guide's file transfer pattern (fileio3): the agent keeps up
    to `credit` chunk requests in flight and each answer returns one credit, so the stager is
    never flooded and the link never idles waiting for one round trip per chunk. Chunks are
    asked for in order; a chunk unanswered (or answered with an error the stager may get over)
    is asked for again, at most `retries` times, and the transfer fails past that.

    Integrity, what is checked where: the bus is CURVE (authenticated encryption), so a chunk
    arrives as the stager sent it and is not hashed on arrival; it is written to <sha>.part at
    its offset and the stager's digest of it to the sidecar (<sha>.part.chunks). The file's
    SHA-256, the check of the stager's file (and of the chunks read back from disk), is computed
    as the chunks arrive (over the written prefix, in order; a chunk ahead of the prefix is read
    back when the prefix reaches it) and must equal the image's before the file is renamed to
    <sha>. Only then is it used. It is computed by a thread of its own (the hasher), fed a copy of
   each chunk of the prefix, at most `credit` chunks ahead of it, while the loop receives and
    writes: each byte is hashed once. The chunk digests serve where a chunk must be told bad:
    when the file's digest fails, every chunk is checked against the stager's digest of it and
    the bad ones are fetched again before the file is hashed again (IMGCACHE_REPAIRS times at
    most; a file whose chunks all match yet whose digest does not is the stager's fault, and
    the transfer fails).

    Resume: a transfer of a digest that has a .part and a sidecar of the same chunk size checks
    every chunk the sidecar lists against the file and asks only for the missing and the bad
    ones (a byte flipped while the agent was down is found here).

    Eviction: the files named by a digest are the cache; each image's last use is its file's
    mtime (touched at each use), so the order survives a restart. Room for a new image is made
    before its transfer starts, evicting the least recently used images that no VM depends on
    (<dir>/refs) and no command holds, and .part files no transfer writes; when that is not
    enough the get fails, naming why. */
#include "imgcache.h"
#include "limit.h"
#include "log.h"
#include "metrics.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#define SIDECAR_MAGIC    "BERTHPT1"
#define DIGEST           crypto_hash_sha256_BYTES
#define IMGCACHE_REPAIRS 2 /* times a file whose digest failed has its bad chunks fetched again */

/* A cached image. */
typedef struct {
    char sha[65];
    int64_t size;
    int64_t used_ms; /* last use (the file's mtime) */
    int holds;       /* commands about to use it */
} s_entry_t;

/* Someone waiting for an image. */
typedef struct {
    imgcache_ready_fn *fn;
    void *arg;
} s_waiter_t;

/* The sidecar's header: which file its digests are of. */
typedef struct {
    char magic[8];
    int64_t size;
    int64_t chunk;
} s_sidecar_t;

enum { C_MISSING, C_ASKED, C_WRITTEN };

typedef struct {
    imgcache_t *cache;
    char sha[65];
    char image[72]; /* the stager's image id or name */
    int64_t size;   /* the file's size */
    int64_t chunk;  /* chunk size */
    size_t n_chunks;
    uint8_t *state;     /* per chunk: C_MISSING, C_ASKED, C_WRITTEN */
    uint8_t *tries;     /* per chunk: times asked again */
    size_t next;        /* chunks before it are asked or verified, unless a retry set one back */
    size_t written;     /* chunks written to the .part */
    int repairs;        /* times the file's digest failed and its chunks were checked */
    size_t hashed;      /* chunks [0, hashed) were sent to the hasher */
    int backlog;        /* chunks sent to the hasher it has not folded in yet */
    int finishing;      /* every chunk hashed: the file's digest asked for */
    char key[80];       /* "<sha>.<serial>": this transfer's name with the hasher */
    int inflight;       /* chunk calls out */
    int fd;             /* <sha>.part */
    int side_fd;        /* <sha>.part.chunks */
    zhashx_t *calls;    /* call id -> chunk index + 1 */
    zlistx_t *waiters;  /* s_waiter_t */
    int failed;         /* ended badly: freed once no call is out */
    int64_t fetched;    /* bytes received (verified) in this run */
    int64_t started_ms; /* monotonic */
    uint8_t *buffer;    /* chunk bytes read back (hash, resume) */
} s_xfer_t;

struct _imgcache_t {
    imgcache_config_t config;
    char dir[PATH_MAX];
    char refs[PATH_MAX + 8];
    bus_client_t *client;
    zhashx_t *entries;   /* sha -> s_entry_t */
    zhashx_t *parts;     /* sha -> s_entry_t: a .part no transfer is writing (kept to resume) */
    zhashx_t *transfers; /* sha -> s_xfer_t */
    zlistx_t *dead;      /* failed transfers waiting for their calls to come back */
    zactor_t *hasher;    /* folds chunks into files' digests (s_hasher) */
    unsigned serial;     /* transfers started, for their keys */
    char **list;         /* imgcache_list's answer */
    size_t n_list;
    int list_stale;
    metrics_family_t *m_bytes, *m_refetched, *m_evicted, *m_done;
};

static int s_is_sha(const char *text, size_t len)
{
    if (strlen(text) != len)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!((text[i] >= '0' && text[i] <= '9') || (text[i] >= 'a' && text[i] <= 'f')))
            return 0;
    return 1;
}

static void s_path(imgcache_t *self, const char *sha, const char *suffix, char *out, size_t size)
{
    snprintf(out, size, "%s/%s%s", self->dir, sha, suffix);
}

int imgcache_ref_path(const char *dir, const char *vm, char *out, size_t size)
{
    int n = snprintf(out, size, "%s/refs/%s", dir, vm);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

static void s_entry_free(void **item)
{
    free(*item);
    *item = NULL;
}

static int64_t s_mtime_ms(const struct stat *st)
{
    return (int64_t)st->st_mtim.tv_sec * 1000 + st->st_mtim.tv_nsec / 1000000;
}

/* Every cached image on disk into entries. */
/* Note a .part of sha left by a transfer that ended (or by an earlier run) in parts: it takes
   room in the cache until it is resumed or evicted. */
static void s_part_note(imgcache_t *self, const char *sha)
{
    char path[PATH_MAX + 80];
    struct stat st;
    s_path(self, sha, ".part", path, sizeof path);
    s_entry_t *entry = stat(path, &st) == 0 ? calloc(1, sizeof *entry) : NULL;
    if (!entry)
        return;
    util_strlcpy(entry->sha, sha, sizeof entry->sha);
    entry->size = (int64_t)st.st_size;
    entry->used_ms = s_mtime_ms(&st);
    zhashx_update(self->parts, entry->sha, entry);
}

/* Every cached image on disk into entries, every .part into parts. */
static void s_scan(imgcache_t *self)
{
    DIR *d = opendir(self->dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (strlen(e->d_name) == 69 && streq(e->d_name + 64, ".part")) {
            char sha[65];
            memcpy(sha, e->d_name, 64);
            sha[64] = '\0';
            if (s_is_sha(sha, 64))
                s_part_note(self, sha);
            continue;
        }
        if (!s_is_sha(e->d_name, 64))
            continue;
        char path[PATH_MAX + 80];
        struct stat st;
        s_path(self, e->d_name, "", path, sizeof path);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        s_entry_t *entry = calloc(1, sizeof *entry);
        if (!entry)
            break;
        util_strlcpy(entry->sha, e->d_name, sizeof entry->sha);
        entry->size = (int64_t)st.st_size;
        entry->used_ms = s_mtime_ms(&st);
        zhashx_update(self->entries, entry->sha, entry);
    }
    if (d)
        closedir(d);
    self->list_stale = 1;
}

/* The hasher: one SHA-256 state per transfer key. Messages from the loop: DATA key bytes
   (folded in, answered ACK key), FINAL key (answered DIGEST key hex, the state dropped), DROP
   key (the state dropped, unanswered). */
static void s_state_free(void **item)
{
    free(*item);
    *item = NULL;
}

static void s_hasher(zsock_t *pipe, void *arg)
{
    (void)arg;
    zhashx_t *states = zhashx_new();
    if (states)
        zhashx_set_destructor(states, s_state_free);
    zsock_signal(pipe, 0);
    while (states) {
        zmsg_t *msg = zmsg_recv(pipe);
        char *op = msg ? zmsg_popstr(msg) : NULL;
        char *key = msg ? zmsg_popstr(msg) : NULL;
        if (!op || streq(op, "$TERM")) {
            free(op);
            free(key);
            zmsg_destroy(&msg);
            break;
        }
        crypto_hash_sha256_state *st = key ? zhashx_lookup(states, key) : NULL;
        if (streq(op, "DATA") && key) {
            if (!st && (st = malloc(sizeof *st))) {
                crypto_hash_sha256_init(st);
                zhashx_insert(states, key, st);
            }
            zframe_t *data = zmsg_first(msg);
            if (st && data)
                crypto_hash_sha256_update(st, zframe_data(data), zframe_size(data));
            zstr_sendx(pipe, "ACK", key, NULL);
        } else if (streq(op, "FINAL") && key) {
            uint8_t digest[DIGEST];
            char hex[65];
            if (st)
                crypto_hash_sha256_final(st, digest);
            else /* an empty file: nothing was sent */
                crypto_hash_sha256(digest, (const unsigned char *)"", 0);
            sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
            zhashx_delete(states, key);
            zstr_sendx(pipe, "DIGEST", key, hex, NULL);
        } else if (key)
            zhashx_delete(states, key);
        free(op);
        free(key);
        zmsg_destroy(&msg);
    }
    zhashx_destroy(&states);
}

imgcache_t *imgcache_new(const imgcache_config_t *config, bus_client_t *client)
{
    imgcache_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->config = *config;
    self->client = client;
    util_strlcpy(self->dir, config->dir, sizeof self->dir);
    snprintf(self->refs, sizeof self->refs, "%s/refs", self->dir);
    self->entries = zhashx_new();
    self->parts = zhashx_new();
    if (self->parts)
        zhashx_set_destructor(self->parts, s_entry_free);
    self->transfers = zhashx_new();
    self->dead = zlistx_new();
    self->hasher = zactor_new(s_hasher, NULL);
    if (self->entries)
        zhashx_set_destructor(self->entries, s_entry_free);
    if (!self->entries || !self->parts || !self->transfers || !self->dead || !self->hasher ||
        (mkdir(self->dir, 0750) != 0 && errno != EEXIST) ||
        (mkdir(self->refs, 0750) != 0 && errno != EEXIST)) {
        log_error(NULL, "cannot make the image cache directory", "{s:s, s:s}", "dir", self->dir,
                  "reason", strerror(errno));
        imgcache_destroy(&self);
        return NULL;
    }
    char real[PATH_MAX];
    if (realpath(config->dir, real)) /* absolute: libvirt and qemu-img get paths in it */
        util_strlcpy(self->dir, real, sizeof self->dir);
    snprintf(self->refs, sizeof self->refs, "%s/refs", self->dir);
    self->m_bytes =
        metrics_counter("berth_agent_image_bytes_fetched_total",
                        "Bytes of base images fetched from the stager (verified)", NULL);
    self->m_refetched = metrics_counter(
        "berth_agent_image_chunks_refetched_total",
        "Image chunks asked for again: a bad digest, no answer, or found bad on disk", NULL);
    self->m_evicted = metrics_counter("berth_agent_image_evictions_total",
                                      "Base images evicted from the image cache", NULL);
    self->m_done = metrics_counter("berth_agent_image_transfers_total",
                                   "Image transfers ended, by result (ok, failed)", "result");
    s_scan(self);
    return self;
}

static void s_xfer_free(s_xfer_t *x)
{
    if (!x)
        return;
    if (x->fd >= 0)
        close(x->fd);
    if (x->side_fd >= 0)
        close(x->side_fd);
    zhashx_destroy(&x->calls);
    if (x->waiters) {
        for (s_waiter_t *w = zlistx_first(x->waiters); w; w = zlistx_next(x->waiters))
            free(w);
        zlistx_destroy(&x->waiters);
    }
    free(x->state);
    free(x->tries);
    free(x->buffer);
    free(x);
}

void imgcache_destroy(imgcache_t **self_p)
{
    imgcache_t *self = self_p ? *self_p : NULL;
    if (!self)
        return;
    if (self->transfers) {
        for (s_xfer_t *x = zhashx_first(self->transfers); x; x = zhashx_next(self->transfers))
            s_xfer_free(x);
        zhashx_destroy(&self->transfers);
    }
    if (self->dead) {
        for (s_xfer_t *x = zlistx_first(self->dead); x; x = zlistx_next(self->dead))
            s_xfer_free(x);
        zlistx_destroy(&self->dead);
    }
    zactor_destroy(&self->hasher);
    zhashx_destroy(&self->entries);
    zhashx_destroy(&self->parts);
    free(self->list);
    free(self);
    *self_p = NULL;
}

/* ---- room ---------------------------------------------------------------------------- */

/* The digests some VM's overlay depends on (<dir>/refs/<vm> holds its base's digest). */
static zhashx_t *s_refs(imgcache_t *self)
{
    zhashx_t *refs = zhashx_new();
    DIR *d = refs ? opendir(self->refs) : NULL;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[PATH_MAX + 300], sha[65] = "";
        snprintf(path, sizeof path, "%s/%s", self->refs, e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? read(fd, sha, 64) : -1;
        if (fd >= 0)
            close(fd);
        if (n == 64) {
            sha[64] = '\0';
            zhashx_update(refs, sha, (void *)1);
        }
    }
    if (d)
        closedir(d);
    return refs;
}

/* Bytes the cache holds: its images and the transfers under way (at their full size). */
static int64_t s_held_bytes(imgcache_t *self)
{
    int64_t total = 0;
    for (s_entry_t *e = zhashx_first(self->entries); e; e = zhashx_next(self->entries))
        total += e->size;
    for (s_entry_t *e = zhashx_first(self->parts); e; e = zhashx_next(self->parts))
        total += e->size;
    for (s_xfer_t *x = zhashx_first(self->transfers); x; x = zhashx_next(self->transfers))
        total += x->size;
    return total;
}

/* Make room for bytes more: evict the least recently used of the images nothing depends on and
   the .part files no transfer writes. 0, or -1 with why. */
static int s_make_room(imgcache_t *self, int64_t bytes, char *why, size_t size)
{
    if (bytes > self->config.max_bytes) {
        snprintf(why, size,
                 "the image (%lld bytes) is larger than the image cache (%lld bytes, "
                 "image_cache_bytes)",
                 (long long)bytes, (long long)self->config.max_bytes);
        return -1;
    }
    zhashx_t *refs = NULL;
    while (s_held_bytes(self) + bytes > self->config.max_bytes) {
        if (!refs && !(refs = s_refs(self))) {
            snprintf(why, size, "out of memory");
            return -1;
        }
        s_entry_t *victim = NULL;
        for (s_entry_t *e = zhashx_first(self->entries); e; e = zhashx_next(self->entries))
            if (!e->holds && !zhashx_lookup(refs, e->sha) &&
                (!victim || e->used_ms < victim->used_ms))
                victim = e;
        s_entry_t *part = NULL;
        for (s_entry_t *e = zhashx_first(self->parts); e; e = zhashx_next(self->parts))
            if (!part || e->used_ms < part->used_ms)
                part = e;
        if (part && (!victim || part->used_ms <= victim->used_ms)) {
            char path[PATH_MAX + 80];
            s_path(self, part->sha, ".part", path, sizeof path);
            unlink(path);
            s_path(self, part->sha, ".part.chunks", path, sizeof path);
            unlink(path);
            log_info(NULL, "unfinished image transfer dropped from the cache", "{s:s, s:I}",
                     "sha256", part->sha, "bytes", (json_int_t)part->size);
            zhashx_delete(self->parts, part->sha);
            continue;
        }
        if (!victim) {
            snprintf(why, size,
                     "the image cache is full (%lld of %lld bytes, image_cache_bytes) "
                     "of images VMs on this host depend on",
                     (long long)s_held_bytes(self), (long long)self->config.max_bytes);
            zhashx_destroy(&refs);
            return -1;
        }
        char path[PATH_MAX + 80];
        s_path(self, victim->sha, "", path, sizeof path);
        if (unlink(path) != 0 && errno != ENOENT) {
            snprintf(why, size, "cannot evict image %s: %s", victim->sha, strerror(errno));
            zhashx_destroy(&refs);
            return -1;
        }
        log_info(NULL, "image evicted from the cache", "{s:s, s:I}", "sha256", victim->sha, "bytes",
                 (json_int_t)victim->size);
        metrics_add(self->m_evicted, 1);
        zhashx_delete(self->entries, victim->sha);
        self->list_stale = 1;
    }
    zhashx_destroy(&refs);
    return 0;
}

/* ---- transfers ----------------------------------------------------------------------- */

static void s_on_chunk(bus_client_t *client, const char *call_id, Berth__Envelope *reply,
                       void *arg);
static void s_ask(s_xfer_t *x);
static int s_hash_prefix(s_xfer_t *x, size_t have, const uint8_t *data);

/* Bytes of chunk i. */
static size_t s_chunk_len(const s_xfer_t *x, size_t i)
{
    int64_t start = (int64_t)i * x->chunk;
    int64_t left = x->size - start;
    return (size_t)(left < x->chunk ? left : x->chunk);
}

/* Call every waiter and take the transfer out of the table; it is freed once no call is out. */
static void s_end(s_xfer_t *x, const char *path, const char *error)
{
    imgcache_t *self = x->cache;
    zhashx_delete(self->transfers, x->sha);
    metrics_add(self->m_done, 1, path ? "ok" : "failed");
    if (path)
        log_info(NULL, "image fetched", "{s:s, s:s, s:I, s:I, s:I}", "image", x->image, "sha256",
                 x->sha, "bytes", (json_int_t)x->size, "fetched", (json_int_t)x->fetched, "ms",
                 (json_int_t)(util_mono_ms() - x->started_ms));
    else
        log_warn(NULL, "image transfer failed", "{s:s, s:s, s:s}", "image", x->image, "sha256",
                 x->sha, "error", error);
    x->failed = 1;
    if (!path) {
        zstr_sendx(zactor_sock(self->hasher), "DROP", x->key, NULL);
        s_part_note(self, x->sha); /* what it fetched stays for a later resume */
    }
    zlistx_t *waiters = x->waiters;
    x->waiters = NULL;
    zlistx_add_end(self->dead, x); /* freed by s_reap once no call of it is out */
    for (s_waiter_t *w = zlistx_first(waiters); w; w = zlistx_next(waiters)) {
        w->fn(path, path ? NULL : error, w->arg);
        free(w);
    }
    zlistx_destroy(&waiters);
}

/* Free the transfers that ended and have no call out any more. */
static void s_reap(imgcache_t *self)
{
    s_xfer_t *x = zlistx_first(self->dead);
    while (x) {
        if (x->inflight == 0) {
            zlistx_delete(self->dead, zlistx_cursor(self->dead));
            s_xfer_free(x);
            x = zlistx_first(self->dead);
        } else
            x = zlistx_next(self->dead);
    }
}

/* The stager's digest of chunk i, from the sidecar, into noted: 0, or -1 when there is none
   (the chunk was never written whole). */
static int s_noted(s_xfer_t *x, size_t i, uint8_t noted[DIGEST])
{
    static const uint8_t zero[DIGEST];
    if (pread(x->side_fd, noted, DIGEST, (off_t)(sizeof(s_sidecar_t) + i * DIGEST)) != DIGEST ||
        memcmp(noted, zero, DIGEST) == 0)
        return -1;
    return 0;
}

/* Chunk i of the .part has the digest the stager gave for it: 1, else 0. */
static int s_chunk_good(s_xfer_t *x, size_t i)
{
    uint8_t noted[DIGEST], digest[DIGEST];
    size_t len = s_chunk_len(x, i);
    if (s_noted(x, i, noted) != 0 ||
        pread(x->fd, x->buffer, len, (off_t)i * x->chunk) != (ssize_t)len)
        return 0;
    crypto_hash_sha256(digest, x->buffer, len);
    return memcmp(digest, noted, DIGEST) == 0;
}

/* Chunk i is to be fetched (again): forgotten in the sidecar, missing in the transfer. */
static void s_chunk_drop(s_xfer_t *x, size_t i)
{
    static const uint8_t zero[DIGEST];
    if (pwrite(x->side_fd, zero, DIGEST, (off_t)(sizeof(s_sidecar_t) + i * DIGEST)) != DIGEST)
        log_warn(NULL, "cannot write the image sidecar", "{s:s, s:s}", "sha256", x->sha, "reason",
                 strerror(errno));
    if (x->state[i] == C_WRITTEN)
        x->written--;
    x->state[i] = C_MISSING;
    if (i < x->next)
        x->next = i;
}

/* The file's digest failed: check every chunk against the stager's digest of it and fetch the
   bad ones again, then hash the file again. The number of bad chunks (0: every chunk is what
   the stager sent, the stager's file is not the image; nothing to repair). */
static size_t s_repair(s_xfer_t *x)
{
    imgcache_t *self = x->cache;
    size_t bad = 0;
    for (size_t i = 0; i < x->n_chunks; i++)
        if (!s_chunk_good(x, i)) {
            s_chunk_drop(x, i);
            bad++;
        }
    if (!bad)
        return 0;
    metrics_add(self->m_refetched, (double)bad);
    log_warn(NULL, "image chunks found bad, fetched again", "{s:s, s:s, s:I}", "image", x->image,
             "sha256", x->sha, "chunks_bad", (json_int_t)bad);
    x->repairs++;
    x->finishing = 0; /* the hasher dropped the file's state with its digest: start over */
    x->hashed = 0;
    return bad;
}

/* Every chunk written and the file's digest is hex: the file takes its name in the cache when
   that is the image's. When it is not, a chunk may have gone bad on the local disk (or come
   bad from the stager's): the chunks that do not match the stager's digests are fetched
   again, at most IMGCACHE_REPAIRS times. */
static void s_finish(s_xfer_t *x, const char *hex)
{
    imgcache_t *self = x->cache;
    char part[PATH_MAX + 80], side[PATH_MAX + 80], path[PATH_MAX + 80], why[256];
    s_path(self, x->sha, ".part", part, sizeof part);
    s_path(self, x->sha, ".part.chunks", side, sizeof side);
    s_path(self, x->sha, "", path, sizeof path);
    if (!streq(hex, x->sha) && x->repairs < IMGCACHE_REPAIRS && s_repair(x) > 0) {
        if (s_hash_prefix(x, SIZE_MAX, NULL) != 0) {
            snprintf(why, sizeof why, "cannot read the image back: %s", strerror(errno));
            s_end(x, NULL, why);
        } else
            s_ask(x);
        return;
    }
    if (!streq(hex, x->sha)) {
        /* Every chunk matches the stager's digest of it, yet the file is not the image: the
           stager's file is not what its record says. Start over next time. */
        unlink(part);
        unlink(side);
        snprintf(why, sizeof why, "the image fetched has SHA-256 %s, not %s", hex, x->sha);
        s_end(x, NULL, why);
        return;
    }
    if (rename(part, path) != 0) {
        snprintf(why, sizeof why, "cannot name the image fetched: %s", strerror(errno));
        s_end(x, NULL, why);
        return;
    }
    unlink(side);
    s_entry_t *entry = calloc(1, sizeof *entry);
    if (entry) {
        util_strlcpy(entry->sha, x->sha, sizeof entry->sha);
        entry->size = x->size;
        entry->used_ms = util_now_ms();
        zhashx_update(self->entries, entry->sha, entry);
    }
    self->list_stale = 1;
    s_end(x, path, NULL);
}

/* Send the verified chunks at the front of the file to the hasher, at most `credit` ahead of
   it; data is chunk `have`'s bytes when the caller holds them (others are read back from the
   file). Once every chunk is verified and sent, ask for the file's digest. -1 when the file
   cannot be read back. */
static int s_hash_prefix(s_xfer_t *x, size_t have, const uint8_t *data)
{
    imgcache_t *self = x->cache;
    while (x->hashed < x->n_chunks && x->state[x->hashed] == C_WRITTEN &&
           x->backlog < self->config.credit) {
        size_t len = s_chunk_len(x, x->hashed);
        const uint8_t *bytes = data;
        if (x->hashed != have || !data) {
            if (pread(x->fd, x->buffer, len, (off_t)x->hashed * x->chunk) != (ssize_t)len)
                return -1;
            bytes = x->buffer;
        }
        zmsg_t *msg = zmsg_new();
        if (!msg || zmsg_addstr(msg, "DATA") || zmsg_addstr(msg, x->key) ||
            zmsg_addmem(msg, bytes, len) || zmsg_send(&msg, zactor_sock(self->hasher))) {
            zmsg_destroy(&msg);
            errno = ENOMEM;
            return -1;
        }
        x->backlog++;
        x->hashed++;
    }
    if (x->hashed == x->n_chunks && x->written == x->n_chunks && !x->finishing) {
        x->finishing = 1;
        zstr_sendx(zactor_sock(self->hasher), "FINAL", x->key, NULL);
    }
    return 0;
}

zsock_t *imgcache_socket(imgcache_t *self)
{
    return zactor_sock(self->hasher);
}

/* The transfer of key (NULL when it ended). */
static s_xfer_t *s_by_key(imgcache_t *self, const char *key)
{
    for (s_xfer_t *x = zhashx_first(self->transfers); x; x = zhashx_next(self->transfers))
        if (streq(x->key, key))
            return x;
    return NULL;
}

void imgcache_recv(imgcache_t *self)
{
    char *op = NULL, *key = NULL, *hex = NULL;
    zstr_recvx(zactor_sock(self->hasher), &op, &key, &hex, NULL);
    s_xfer_t *x = op && key ? s_by_key(self, key) : NULL;
    if (x && streq(op, "ACK")) {
        x->backlog--;
        if (s_hash_prefix(x, SIZE_MAX, NULL) != 0) {
            char why[160];
            snprintf(why, sizeof why, "cannot read the image back: %s", strerror(errno));
            s_end(x, NULL, why);
        } else
            s_ask(x);
    } else if (x && streq(op, "DIGEST") && hex)
        s_finish(x, hex);
    free(op);
    free(key);
    free(hex);
    s_reap(self);
}

/* Ask for missing chunks while credit lasts. */
static void s_ask(s_xfer_t *x)
{
    imgcache_t *self = x->cache;
    /* The credit covers the chunks the hasher has still to fold in too: a slow disk or hasher
       slows the transfer down instead of piling chunks up in memory. */
    while (!x->failed && x->inflight + x->backlog < self->config.credit && x->next < x->n_chunks) {
        size_t i = x->next++;
        if (x->state[i] != C_MISSING)
            continue;
        Berth__GetImageChunk req = BERTH__GET_IMAGE_CHUNK__INIT;
        req.image = x->image;
        req.sha256 = x->sha;
        req.offset = (int64_t)i * x->chunk;
        req.size = x->chunk;
        char id[UTIL_ID_LEN];
        if (bus_client_send(self->client, "stager-images", &req.base, NULL, self->config.timeout_ms,
                            s_on_chunk, x, id) != 0) {
            s_end(x, NULL, "cannot ask the stager for the image");
            return;
        }
        x->state[i] = C_ASKED;
        zhashx_update(x->calls, id, (void *)(uintptr_t)(i + 1));
        x->inflight++;
    }
}

/* Chunk i failed (why): ask again, or fail the transfer past the retries. */
static void s_again(s_xfer_t *x, size_t i, const char *why)
{
    imgcache_t *self = x->cache;
    metrics_add(self->m_refetched, 1);
    if (x->tries[i] >= self->config.retries) {
        char error[512];
        snprintf(error, sizeof error, "chunk %zu of image %s failed %d times: %s", i, x->image,
                 x->tries[i] + 1, why);
        s_end(x, NULL, error);
        return;
    }
    x->tries[i]++;
    log_warn(NULL, "image chunk asked for again", "{s:s, s:I, s:s}", "image", x->image, "chunk",
             (json_int_t)i, "reason", why);
    x->state[i] = C_MISSING;
    if (i < x->next)
        x->next = i;
}

static void s_on_chunk(bus_client_t *client, const char *call_id, Berth__Envelope *reply, void *arg)
{
    (void)client;
    s_xfer_t *x = arg;
    imgcache_t *self = x->cache;
    uintptr_t slot = (uintptr_t)zhashx_lookup(x->calls, call_id);
    zhashx_delete(x->calls, call_id);
    x->inflight--;
    Berth__ImageChunk *chunk = NULL;
    if (reply && !reply->error)
        chunk = (Berth__ImageChunk *)envelope_body(reply, &berth__image_chunk__descriptor);
    char why[512] = "";
    if (x->failed || !slot)
        goto out; /* the transfer ended already */
    size_t i = slot - 1;
    size_t len = s_chunk_len(x, i);
    if (!reply)
        snprintf(why, sizeof why, "the stager did not answer");
    else if (reply->error &&
             (streq(reply->error->code, "UNAVAILABLE") || streq(reply->error->code, "INTERNAL")))
        /* The stager's store or disk failed for now: asked again, like a lost answer. */
        snprintf(why, sizeof why, "the stager failed: %s", reply->error->message);
    else if (reply->error) {
        /* A refusal (the image gone, another file under its name) will not change: fail. */
        snprintf(why, sizeof why, "the stager refused: %s", reply->error->message);
        s_end(x, NULL, why);
        goto out;
    } else if (!chunk)
        snprintf(why, sizeof why, "bad answer");
    else if (chunk->total_bytes != x->size || !streq(chunk->image_sha256, x->sha)) {
        snprintf(why, sizeof why,
                 "the stager's image is %lld bytes with SHA-256 %s, not %lld with %s",
                 (long long)chunk->total_bytes, chunk->image_sha256, (long long)x->size, x->sha);
        s_end(x, NULL, why);
        goto out;
    } else if (chunk->offset != (int64_t)i * x->chunk || chunk->data.len != len)
        snprintf(why, sizeof why, "the chunk is %zu bytes at %lld, not %zu at %lld",
                 chunk->data.len, (long long)chunk->offset, len, (long long)i * x->chunk);
    uint8_t digest[DIGEST];
    if (!*why && (!chunk->sha256 || strlen(chunk->sha256) != 2 * DIGEST ||
                  sodium_hex2bin(digest, DIGEST, chunk->sha256, 2 * DIGEST, NULL, NULL, NULL) != 0))
        snprintf(why, sizeof why, "the chunk comes without its SHA-256");
    if (!*why) {
        /* Not hashed here: CURVE authenticated the answer, so these are the bytes the stager
           sent; the file's digest (the hasher) checks what the stager sent. The stager's digest
           of the chunk goes to the sidecar, to check the chunk on resume or after a failed
           file digest. */
        if (pwrite(x->fd, chunk->data.data, len, (off_t)chunk->offset) != (ssize_t)len ||
            pwrite(x->side_fd, digest, DIGEST, (off_t)(sizeof(s_sidecar_t) + i * DIGEST)) !=
                DIGEST) {
            snprintf(why, sizeof why, "cannot write the image: %s", strerror(errno));
            s_end(x, NULL, why);
            goto out;
        }
        x->state[i] = C_WRITTEN;
        x->written++;
        x->fetched += (int64_t)len;
        metrics_add(self->m_bytes, (double)len);
        if (s_hash_prefix(x, i, chunk->data.data) != 0) {
            snprintf(why, sizeof why, "cannot read the image back: %s", strerror(errno));
            s_end(x, NULL, why);
            goto out;
        }
    }
    if (*why)
        s_again(x, i, why);
    if (!x->failed)
        s_ask(x);
out:
    if (chunk)
        protobuf_c_message_free_unpacked(&chunk->base, NULL);
    if (reply)
        berth__envelope__free_unpacked(reply, NULL);
    s_reap(self); /* may free x: last */
}

/* Open <sha>.part and its sidecar, keeping what a cut-short transfer of the same file left
   there: every chunk the sidecar lists is checked against the file. 0, or -1 with why. */
static int s_resume(s_xfer_t *x, char *why, size_t size)
{
    imgcache_t *self = x->cache;
    char part[PATH_MAX + 80], side[PATH_MAX + 80];
    s_path(self, x->sha, ".part", part, sizeof part);
    s_path(self, x->sha, ".part.chunks", side, sizeof side);
    x->fd = open(part, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    x->side_fd = x->fd >= 0 ? open(side, O_RDWR | O_CREAT | O_CLOEXEC, 0640) : -1;
    /* The .part grows as chunks are written (its size tells how far a transfer got). */
    if (x->fd < 0 || x->side_fd < 0) {
        snprintf(why, size, "cannot write to the image cache: %s", strerror(errno));
        return -1;
    }
    s_sidecar_t head = { 0 }, want = { .size = x->size, .chunk = x->chunk };
    memcpy(want.magic, SIDECAR_MAGIC, sizeof want.magic);
    int same = pread(x->side_fd, &head, sizeof head, 0) == (ssize_t)sizeof head &&
               memcmp(&head, &want, sizeof head) == 0;
    if (!same) {
        if (ftruncate(x->side_fd, 0) != 0 ||
            pwrite(x->side_fd, &want, sizeof want, 0) != (ssize_t)sizeof want ||
            ftruncate(x->side_fd, (off_t)(sizeof want + x->n_chunks * DIGEST)) != 0) {
            snprintf(why, size, "cannot write to the image cache: %s", strerror(errno));
            return -1;
        }
        return 0;
    }
    int64_t kept = 0;
    size_t bad = 0;
    for (size_t i = 0; i < x->n_chunks; i++) {
        uint8_t noted[DIGEST];
        if (s_noted(x, i, noted) != 0)
            continue;
        if (s_chunk_good(x, i)) {
            x->state[i] = C_WRITTEN;
            x->written++;
            kept += (int64_t)s_chunk_len(x, i);
            continue;
        }
        bad++;
        metrics_add(self->m_refetched, 1);
        s_chunk_drop(x, i);
    }
    if (kept || bad)
        log_info(NULL, "resuming image transfer", "{s:s, s:s, s:I, s:I, s:I}", "image", x->image,
                 "sha256", x->sha, "bytes_kept", (json_int_t)kept, "chunks_bad", (json_int_t)bad,
                 "bytes", (json_int_t)x->size);
    if (s_hash_prefix(x, SIZE_MAX, NULL) != 0) {
        snprintf(why, size, "cannot read the image back: %s", strerror(errno));
        return -1;
    }
    return 0;
}

static s_xfer_t *s_xfer_new(imgcache_t *self, const char *sha, const char *image, int64_t bytes)
{
    s_xfer_t *x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    x->cache = self;
    x->fd = x->side_fd = -1;
    util_strlcpy(x->sha, sha, sizeof x->sha);
    util_strlcpy(x->image, image, sizeof x->image);
    x->size = bytes;
    x->chunk = self->config.chunk_bytes;
    x->n_chunks = (size_t)((bytes + x->chunk - 1) / x->chunk);
    x->state = calloc(x->n_chunks + 1, 1);
    x->tries = calloc(x->n_chunks + 1, 1);
    x->buffer = malloc((size_t)x->chunk);
    x->calls = zhashx_new();
    x->waiters = zlistx_new();
    x->started_ms = util_mono_ms();
    snprintf(x->key, sizeof x->key, "%s.%u", sha, ++self->serial);
    if (!x->state || !x->tries || !x->buffer || !x->calls || !x->waiters) {
        s_xfer_free(x);
        return NULL;
    }
    return x;
}

void imgcache_get(imgcache_t *self, const char *sha256, const char *image, int64_t bytes,
                  imgcache_ready_fn *fn, void *arg)
{
    char path[PATH_MAX + 80], why[512];
    s_reap(self);
    s_entry_t *entry = zhashx_lookup(self->entries, sha256);
    if (entry) {
        s_path(self, sha256, "", path, sizeof path);
        entry->used_ms = util_now_ms();
        utimensat(AT_FDCWD, path, NULL, 0); /* its last use survives a restart */
        fn(path, NULL, arg);
        return;
    }
    s_xfer_t *x = zhashx_lookup(self->transfers, sha256);
    s_waiter_t *w = calloc(1, sizeof *w);
    if (!w) {
        fn(NULL, "out of memory", arg);
        return;
    }
    w->fn = fn;
    w->arg = arg;
    if (x) {
        zlistx_add_end(x->waiters, w);
        return;
    }
    if (!self->client)
        snprintf(why, sizeof why, "image %s is not cached and stager_endpoints is not set", image);
    else if (!s_is_sha(sha256, 64) || bytes <= 0 || !image || !*image ||
             strlen(image) > LIMIT_IMAGE_NAME_MAX)
        snprintf(why, sizeof why, "the command names no image to fetch (id, size and SHA-256)");
    else {
        /* Its .part, if there is one, becomes the transfer's (counted at the image's size). */
        zhashx_delete(self->parts, sha256);
        if (s_make_room(self, bytes, why, sizeof why) == 0) {
            x = s_xfer_new(self, sha256, image, bytes);
            if (!x)
                snprintf(why, sizeof why, "out of memory");
            else if (s_resume(x, why, sizeof why) != 0) {
                s_xfer_free(x);
                x = NULL;
            }
        }
        if (!x)
            s_part_note(self, sha256);
    }
    if (!x) {
        log_warn(NULL, "image not available", "{s:s, s:s}", "image", image ? image : "", "error",
                 why);
        free(w);
        fn(NULL, why, arg);
        return;
    }
    zlistx_add_end(x->waiters, w);
    zhashx_insert(self->transfers, x->sha, x);
    log_info(NULL, "fetching image", "{s:s, s:s, s:I, s:I, s:i}", "image", image, "sha256", sha256,
             "bytes", (json_int_t)bytes, "chunk", (json_int_t)x->chunk, "credit",
             self->config.credit);
    s_ask(x);
}

void imgcache_hold(imgcache_t *self, const char *sha256)
{
    s_entry_t *entry = zhashx_lookup(self->entries, sha256);
    if (entry)
        entry->holds++;
}

void imgcache_release(imgcache_t *self, const char *sha256)
{
    s_entry_t *entry = zhashx_lookup(self->entries, sha256);
    if (entry && entry->holds > 0)
        entry->holds--;
}

char **imgcache_list(imgcache_t *self, size_t *n)
{
    if (self->list_stale) {
        size_t count = zhashx_size(self->entries);
        char **list = calloc(count + 1, sizeof *list);
        if (list) {
            size_t k = 0;
            for (s_entry_t *e = zhashx_first(self->entries); e; e = zhashx_next(self->entries))
                list[k++] = e->sha;
            free(self->list);
            self->list = list;
            self->n_list = k;
            self->list_stale = 0;
        }
    }
    *n = self->n_list;
    return self->list;
}
