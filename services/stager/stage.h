/*  stage: the StageImage requests of one stager. Each is kept (bus_request_defer) while its
    VM's seed is built on the worker pool, then answered from the loop with the image record
    and the seed ISO. A VM has at most one build at a time: requests for it while it is built
    wait for that build and get the same answer. */
#ifndef BERTH_STAGER_STAGE_H
#define BERTH_STAGER_STAGE_H

#include "bus_server.h"
#include "catalog.h"
#include "seed.h"
#include "work.h"

typedef struct {
    seed_t *seeds;         /* borrowed; used on worker threads */
    catalog_t *catalog;    /* borrowed; used on the loop */
    work_t *work;          /* borrowed; must be destroyed before the stage */
    size_t max_seed_bytes; /* largest ISO sent in a reply */
    size_t max_waiting;    /* requests that may wait on one VM's build */
} stage_config_t;

typedef struct _stage_t stage_t;

stage_t *stage_new(const stage_config_t *config);
/* After work_destroy(): the builds still out hold a pointer to the stage. */
void stage_destroy(stage_t **self_p);

/* Start (or join) the build a kept StageImage asks for (the caller checked the fields that
   need no lookup); it is answered and destroyed here, now or when its build ends. Over the
   work queue's bound it is answered UNAVAILABLE at once. */
void stage_request(stage_t *self, bus_request_t *kept);

/* VMs being built now. */
size_t stage_building(stage_t *self);

#endif
