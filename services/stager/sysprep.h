/*  sysprep: what stripping a model image's identity means, once, as data. The operations are
    virt-sysprep's (libguestfs-tools), by its names; on a real image the stager runs
    virt-sysprep with them (staging.h), and on an image described by a manifest (the files it
    holds, given at import) it applies the same operations to the manifest, so the simulated
    path and the real one strip the same things. */
#ifndef BERTH_STAGER_SYSPREP_H
#define BERTH_STAGER_SYSPREP_H

#include "error.h"

#include <stddef.h>

/* The operations, comma-separated, as virt-sysprep --operations takes them. */
extern const char SYSPREP_OPERATIONS[];

/* Check a manifest given at import: JSON {"files": [{"path": "/abs", "content": "..."}]}
   ("content" optional), at most LIMIT_IMAGE_MANIFEST_MAX bytes and LIMIT_IMAGE_MANIFEST_FILES_MAX
   files, each path absolute and listed once. 0 with *normalized (compact JSON; caller frees), or -1
   with error naming field `manifest`. */
int sysprep_manifest_check(const char *text, char **normalized, berth_error_t *error);

/* Apply every operation to a checked manifest: files removed, emptied or edited (a HWADDR=
   line dropped) as virt-sysprep would. 0 with *staged (the manifest left) and *report (JSON
   [{"operation", "removed": [...], "emptied": [...], "edited": [...]}] in operation order);
   both the caller's to free. -1 when the manifest is not one sysprep_manifest_check passed. */
int sysprep_manifest_apply(const char *manifest, char **staged, char **report);

/* The report of a virt-sysprep run from its output: [{"operation", "performed": true}] for
   each operation it says it performed ("Performing \"machine-id\" ..."). Caller frees;
   NULL when out of memory. */
char *sysprep_tool_report(const char *output, size_t len);

#endif
