/*  uploader: an agent's upload of a capture file to the stager (CAPTURE_UPLOAD), the mirror
    of the image cache's download: the agent is the client, keeps up to `credit`
    PutImageChunk calls in flight (lib/chunkwin.h), each chunk with its SHA-256, and goes on
    from what the stager says it holds (GetUploadState) when it starts, when the agent or
    the stager was restarted, and after a lost or refused chunk. Runs on the agent's loop. */
#ifndef BERTH_AGENT_UPLOADER_H
#define BERTH_AGENT_UPLOADER_H

#include "bus_client.h"

typedef struct _uploader_t uploader_t;

typedef struct {
    const char *data_dir; /* capture files live in <data_dir>/captures */
    int64_t chunk_bytes;  /* bytes per chunk (at most what the stager takes) */
    int credit;           /* chunk calls in flight */
    int retries;          /* failed calls in a row before the upload fails */
    int timeout_ms;       /* one call's deadline */
} uploader_config_t;

/* An upload ended: error NULL when the stager holds the whole file, else why not. */
typedef void(uploader_done_fn)(const char *error, void *arg);

/* client (borrowed, attached to the loop) reaches the stager as "stager-images". */
uploader_t *uploader_new(const uploader_config_t *config, bus_client_t *client);
void uploader_destroy(uploader_t **self_p);

/* Send the capture file of upload_id (size bytes) to the stager; fn is called once with its
   end. An upload of the same id already running gets fn as one more waiter. */
void uploader_start(uploader_t *self, const char *upload_id, int64_t size, uploader_done_fn *fn,
                    void *arg);

#endif
