/*  transfer: the stager's side of an image transfer to an agent. GetImageChunk answers one
    chunk of a READY image's file with its SHA-256, the file's size and the file's SHA-256;
    the agent keeps several such calls in flight, checks the whole file and keeps the chunks'
    digests to resume and to find a bad chunk (services/agent/imgcache.c). Only agents may
    call it (the handler table says so). */
#ifndef BERTH_STAGER_TRANSFER_H
#define BERTH_STAGER_TRANSFER_H

#include "catalog.h"
#include "service.h"

typedef struct _transfer_t transfer_t;

/* catalog is borrowed; chunk_max bounds a chunk (TRANSFER_CHUNK_MIN .. TRANSFER_CHUNK_MAX). */
transfer_t *transfer_new(catalog_t *catalog, int64_t chunk_max);
void transfer_destroy(transfer_t **self_p);

/* Declare the handler on service (callers: agents). */
void transfer_register(transfer_t *self, service_t *service);

#endif
