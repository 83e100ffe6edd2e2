/*  upload: the stager's side of an upload from an agent (a captured VM disk becoming a model
    image). The taskmgr opens an upload (BeginUpload: the host that may send it, the digest
    and size the file must have, the image to record); that agent sends the file in chunks
    (PutImageChunk), each checked against its SHA-256 and appended; FinishUpload checks the
    whole file's digest and records the image READY, kind model, captured_from its VM;
    AbortUpload drops what was sent. Uploads survive a restart: each is a file pair under
    <images_dir>/uploads (<id>.meta: the BeginUpload; <id>.part: the bytes held), and
    GetUploadState tells the agent where to go on. */
#ifndef BERTH_STAGER_UPLOAD_H
#define BERTH_STAGER_UPLOAD_H

#include "catalog.h"
#include "service.h"

typedef struct _upload_t upload_t;

/* catalog is borrowed; chunk_max bounds a chunk, max_bytes an upload's size. NULL when the
   uploads directory cannot be made. */
upload_t *upload_new(catalog_t *catalog, int64_t chunk_max, int64_t max_bytes);
void upload_destroy(upload_t **self_p);

/* Declare the handlers on service: BeginUpload, FinishUpload, AbortUpload from the taskmgr;
   GetUploadState and PutImageChunk from agents (the one host each upload names). */
void upload_register(upload_t *self, service_t *service);

#endif
