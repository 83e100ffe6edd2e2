/*  chunkwin: the credit window of a chunked transfer (the ZeroMQ guide's fileio3 pattern), in
    the direction where the sender learns how far the receiver got. The client keeps at most
    `credit` chunk calls in flight, asks for (or sends) chunks in order from `next`, and each
    answer returns one credit. `acked` is the length of the prefix the other side holds; a
    lost or refused call rewinds `next` to it, so the transfer goes on from there instead of
    from the start (an answer to a call made before the rewind only returns its credit).
    Pure bookkeeping, no I/O: an agent's upload to the stager (services/agent/upload.c) runs
    on it. */
#ifndef BERTH_CHUNKWIN_H
#define BERTH_CHUNKWIN_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int64_t size;  /* bytes to transfer */
    int64_t chunk; /* bytes per chunk (the last one may be shorter) */
    int credit;    /* calls in flight at most */
    int inflight;  /* calls out now */
    int64_t next;  /* offset of the next chunk to send */
    int64_t acked; /* the other side holds [0, acked) */
    int failures;  /* calls lost or refused since the last progress */
} chunkwin_t;

/* A window over size bytes in chunks of chunk (>= 1), credit calls (>= 1), starting at start
   (what the other side holds already, clamped to [0, size]). */
void chunkwin_init(chunkwin_t *w, int64_t size, int64_t chunk, int credit, int64_t start);

/* The next chunk to send: 1 with *offset and *len (one credit taken), or 0 when no credit is
   left or every byte is sent. */
int chunkwin_take(chunkwin_t *w, int64_t *offset, size_t *len);

/* A call came back with the other side holding [0, held): its credit returns; progress
   resets the failure count. */
void chunkwin_answered(chunkwin_t *w, int64_t held);

/* A call was lost or refused: its credit returns and the next chunk sent is at acked. The
   number of failures in a row since the last progress. */
int chunkwin_failed(chunkwin_t *w);

/* After a failure, the other side says it holds [0, held): go on from there. */
void chunkwin_rewind(chunkwin_t *w, int64_t held);

/* 1 when the other side holds every byte. */
int chunkwin_done(const chunkwin_t *w);

#endif
