/*  import: the file work of an image import, run on a worker thread (never on the stager's
    loop). First the file the operator named is opened beneath the import directory (the
    kernel refuses any way out: "..", a symlink leading elsewhere, a magic link) and inspected
    with qemu-img; refused, nothing is stored. Accepted, it is copied into the images
    directory from the same open file, with its sha256 computed on the way, and the copy is
    inspected again (the source could change under us; the copy cannot), and only then
    named as the store's. */
#ifndef BERTH_STAGER_IMPORT_H
#define BERTH_STAGER_IMPORT_H

#include "inspect.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *import_dir; /* absolute, resolved: files are imported from beneath it */
    const char *images_dir; /* absolute, resolved: the store's files */
    const char *qemu_img;
    int timeout_ms;        /* one qemu-img run */
    inspect_rules_t rules; /* formats and size accepted */
} import_config_t;

/* Open requested (relative to import_dir, or absolute under it) and inspect it. 0 with *fd_p
   (the caller closes it) and *info; -1 with error: BAD_REQUEST naming `path` (outside the
   directory, missing, not a regular file, or refused by inspect_check), or INTERNAL. */
int import_open(const import_config_t *config, const char *requested, int *fd_p,
                inspect_info_t *info, berth_error_t *error);

/* Inspect the file at path (a file of the store's own: an upload received) as import_open
   inspects what it opens. 0 with *info, or -1 with error BAD_REQUEST naming field
   (details.reason as inspect_check says), or INTERNAL. */
int import_inspect(const import_config_t *config, const char *path, const char *field,
                   inspect_info_t *info, berth_error_t *error);

/* Open requested (as import_open) as a plain file a direct-boot image needs (its kernel or
   initrd), at most the import's size limit; field names it in errors. 0 with *fd_p, or -1. */
int import_open_file(const import_config_t *config, const char *requested, const char *field,
                     int *fd_p, berth_error_t *error);

/* Copy fd's file to <images_dir>/<id>.<suffix> (through a temporary file, synced). 0 with path,
   or -1 with fault and nothing left. */
int import_copy_file(const import_config_t *config, int fd, const char *id, const char *suffix,
                     char *path, size_t path_size, char *fault, size_t fault_size);

/* Copy fd's file to <images_dir>/<id>.<format>, check the copy as import_open checked the
   source (the same format), and digest it. 0 with path, *size_p and sha256; -1 with fault
   (a sentence) and nothing left in images_dir. */
int import_copy(const import_config_t *config, int fd, const char *id, const char *format,
                char *path, size_t path_size, int64_t *size_p, char sha256[65], char *fault,
                size_t fault_size);

#endif
