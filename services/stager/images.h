/*  images: the image store's bus handlers: ImportImage and DeleteImage (admins and operators,
    from the gateway's signed user assertion), GetImage and ListImages (the gateway, for any
    signed-in user). An import is inspected on the import worker before anything is stored,
    answered IMPORTING once accepted, and copied in the background (import.h). */
#ifndef BERTH_STAGER_IMAGES_H
#define BERTH_STAGER_IMAGES_H

#include "assertion.h"
#include "catalog.h"
#include "import.h"
#include "service.h"
#include "work.h"

typedef struct {
    catalog_t *catalog;     /* borrowed: the loop's */
    work_t *work;           /* borrowed: the import worker (one long copy must not hold seeds) */
    assertion_t *verifier;  /* borrowed: checks the gateway's user assertions */
    import_config_t import; /* strings borrowed */
} images_config_t;

typedef struct _images_t images_t;

images_t *images_new(const images_config_t *config);
/* After work_destroy() of its worker. */
void images_destroy(images_t **self_p);

/* Register the handlers on service. */
void images_register(images_t *self, service_t *service);

/* The verified caller of request, when an admin or an operator; NULL when refused (then the
   request is answered here). Free with berth__user_assertion__free_unpacked. */
Berth__UserAssertion *images_operator(assertion_t *verifier, bus_request_t *request,
                                      const Berth__SignedAssertion *assertion);

/* The metadata an import (or an upload) gives im, checked: name, os, os_version, arch,
   applications, min_ram_mb, min_disk_gb. 0, or -1 with error naming the field. */
int images_check_meta(const Berth__Image *im, berth_error_t *error);

/* Import again the image a dead stager left IMPORTING (recovery has made this instance its
   worker): its files as the import named them are inspected and copied as at first, and it
   ends READY, or FAILED with why and what stopped it (the files are gone, say). 0 when the
   job is queued, -1 when it cannot be. */
int images_resume(images_t *self, const Berth__Image *image, const char *why);

/* Imports being inspected or copied now. */
size_t images_importing(images_t *self);

#endif
