/*  chunkwin: credit window of a chunked transfer (chunkwin.h). */
#include "chunkwin.h"

static int64_t s_clamp(int64_t value, int64_t size)
{
    return value < 0 ? 0 : value > size ? size : value;
}

void chunkwin_init(chunkwin_t *w, int64_t size, int64_t chunk, int credit, int64_t start)
{
    w->size = size < 0 ? 0 : size;
    w->chunk = chunk < 1 ? 1 : chunk;
    w->credit = credit < 1 ? 1 : credit;
    w->inflight = 0;
    w->acked = s_clamp(start, w->size);
    w->next = w->acked;
    w->failures = 0;
}

int chunkwin_take(chunkwin_t *w, int64_t *offset, size_t *len)
{
    if (w->inflight >= w->credit || w->next >= w->size)
        return 0;
    int64_t n = w->size - w->next < w->chunk ? w->size - w->next : w->chunk;
    *offset = w->next;
    *len = (size_t)n;
    w->next += n;
    w->inflight++;
    return 1;
}

void chunkwin_answered(chunkwin_t *w, int64_t held)
{
    if (w->inflight > 0)
        w->inflight--;
    held = s_clamp(held, w->size);
    if (held > w->acked) {
        w->acked = held;
        w->failures = 0;
    }
    if (w->next < w->acked)
        w->next = w->acked;
}

int chunkwin_failed(chunkwin_t *w)
{
    if (w->inflight > 0)
        w->inflight--;
    w->next = w->acked;
    return ++w->failures;
}

void chunkwin_rewind(chunkwin_t *w, int64_t held)
{
    w->acked = s_clamp(held, w->size);
    w->next = w->acked;
}

int chunkwin_done(const chunkwin_t *w)
{
    return w->acked >= w->size;
}
