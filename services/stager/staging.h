/*  staging: derive a staged image from a model image (StageModel; admins, operators). The
    staged image is recorded STAGING and answered at once; then, on the import worker, its
    stages run in order (the stage table in staging.c): COPY the model's file, SYSPREP (strip
    its identity: virt-sysprep on the copy, or the same operations on the model's manifest,
    sysprep.h), CONVERT to qcow2 (qemu-img convert) and CHECKSUM (sha256). The worker keeps the
    stage and percent where the loop reads them; the loop writes them to the record as they
    move (GET /v1/images/{id} shows them), and writes READY or FAILED at the end. */
#ifndef BERTH_STAGER_STAGING_H
#define BERTH_STAGER_STAGING_H

#include "assertion.h"
#include "catalog.h"
#include "service.h"
#include "work.h"

typedef struct {
    catalog_t *catalog;    /* borrowed: the loop's */
    work_t *work;          /* borrowed: the import worker */
    assertion_t *verifier; /* borrowed */
    const char *images_dir;
    const char *qemu_img;
    const char *sysprep;      /* "manifest" or "virt-sysprep": how identity is stripped */
    const char *virt_sysprep; /* the tool, looked up in PATH when not absolute */
    int timeout_ms;           /* one virt-sysprep or qemu-img convert run */
} staging_config_t;

typedef struct _staging_t staging_t;

/* NULL when out of memory or config->sysprep is neither method. */
staging_t *staging_new(const staging_config_t *config);
/* After work_destroy() of its worker. */
void staging_destroy(staging_t **self_p);

/* Register StageModel on service, and the timer that writes stages and percents every
   report_ms. */
void staging_register(staging_t *self, service_t *service, int report_ms);

/* Staged images being derived now. */
size_t staging_running(staging_t *self);

#endif
