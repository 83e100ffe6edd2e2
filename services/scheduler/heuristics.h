/*  heuristics: the scheduler's verdict on a machine asked for, before anything is made. Given
    the image catalog and the size of every host, it says whether the request can work (RAM and
    disk cover the OS and each application, with a margin; some host could ever hold it; each
    application exists for the OS), which image fits it best, which of its applications come
    with that image and which are installed at first boot, and, when it cannot work, concrete
    changes that would make it work. Pure: no store, no bus (main.c reads the catalog and the
    host cache and answers ValidateBuild). */
#ifndef BERTH_SCHEDULER_HEURISTICS_H
#define BERTH_SCHEDULER_HEURISTICS_H

#include "berth.pb-c.h"

#include <stddef.h>
#include <stdint.h>

/* A host's usable size (capacity with the overcommit ratios): vCPUs, RAM MB, disk GB. */
typedef struct {
    int64_t vcpus, ram_mb, disk_gb;
} heuristics_size_t;

typedef struct {
    int margin_pct; /* RAM and disk asked for must cover the need plus this much, in percent */
} heuristics_config_t;

/* The verdict on ask (os, os_version, applications, flavor; image: a template's model
   image) against the catalog images[0 .. n_images) (READY images are considered; others are
   ignored) and hosts[0 .. n_hosts). The image rule, best first: the requested OS (and
   version), the most requested applications, the fewest unrequested ones, the newest, the
   smallest. An application's need is the largest min_ram_mb / min_disk_gb any image of the
   OS states for it; the OS's is the chosen image's own minimum. *verdict_p is the caller's
   (protobuf_c_message_free_unpacked). 0, or -1 when out of memory. */
int heuristics_verdict(const heuristics_config_t *config, const Berth__ValidateBuild *ask,
                       Berth__Image *const *images, size_t n_images, const heuristics_size_t *hosts,
                       size_t n_hosts, Berth__BuildVerdict **verdict_p);

/* The image a VM is built from, chosen when it is placed. fixed (a custom build, whose
   verdict chose it): the image named image itself, whatever its state (the stager refuses
   one it cannot build from). Otherwise image names a template's model: the best of it and
   its READY staged images by heuristics_verdict's rule for a request asking for nothing
   beyond the model (same applications: the newest, then the smallest). Borrowed from
   images; NULL when the catalog has no such image (not fixed: no READY one). */
const Berth__Image *heuristics_build_image(const char *image, int fixed,
                                           Berth__Image *const *images, size_t n_images);

/* The need of base (MB or GB) with the margin: base * (100 + margin_pct) / 100, rounded up. */
int64_t heuristics_with_margin(int64_t base, int margin_pct);

#endif
