/*  upload: the stager's side of an upload into the image store: a captured VM disk sent by
    its host's agent, or an image file a user sends over HTTP through the gateway. An upload
    is opened (BeginUpload: for a capture the taskmgr names the host that may send it and the
    digest and size the file must have; for an HTTP upload the gateway names its size and the
    user, an admin or operator, by a signed assertion), its file sent in chunks
    (PutImageChunk), each checked against its SHA-256 and appended, and ended: FinishUpload
    checks the whole file's digest and records the image READY, kind model (a capture:
    captured_from its VM; an HTTP upload: only after qemu-img inspected it as a path import
    is inspected, and nothing is kept of a refused one); AbortUpload drops what was sent.
    Uploads survive a restart: each is a file pair under <images_dir>/uploads (<id>.meta: the
    BeginUpload; <id>.part: the bytes held), and GetUploadState tells the sender where to go
    on. An HTTP upload no chunk reached for upload_idle_ms is dropped (its client or the
    gateway went away). */
#ifndef BERTH_STAGER_UPLOAD_H
#define BERTH_STAGER_UPLOAD_H

#include "assertion.h"
#include "catalog.h"
#include "import.h"
#include "service.h"
#include "work.h"

typedef struct {
    catalog_t *catalog;           /* borrowed: the loop's */
    assertion_t *verifier;        /* borrowed: checks the gateway's user assertions */
    work_t *work;                 /* borrowed: HTTP uploads are inspected on its threads */
    const import_config_t *rules; /* borrowed: qemu-img and the rules an import passes */
    int64_t chunk_max;            /* bytes a chunk holds at most */
    int64_t max_bytes;            /* a capture's size at most (capture_max_bytes) */
    int64_t idle_ms;              /* an HTTP upload untouched this long is dropped */
} upload_config_t;

typedef struct _upload_t upload_t;

/* NULL when the uploads directory cannot be made. */
upload_t *upload_new(const upload_config_t *config);
/* After work_destroy() of its worker. */
void upload_destroy(upload_t **self_p);

/* Declare the handlers on service: BeginUpload, FinishUpload, AbortUpload from the taskmgr
   (captures) and the gateway (HTTP uploads); PutImageChunk from agents (the one host each
   capture names) and the gateway (its HTTP uploads); GetUploadState from agents; and the
   sweep of idle HTTP uploads. */
void upload_register(upload_t *self, service_t *service);

#endif
