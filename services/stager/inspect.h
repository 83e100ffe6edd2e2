/*  inspect: the checks an image file passes before the store takes it. The path an operator
    names must lie under the import directory (checked here by its words, then again by the
    kernel when it is opened: import.c), and `qemu-img info --output=json` must describe a
    format the store accepts, a virtual size within the limit, and no other file the image
    would read (a backing file, an external data file): an image that names one is a classic
    way to read the host's files through a VM's disk. Pure functions, no I/O. */
#ifndef BERTH_STAGER_INSPECT_H
#define BERTH_STAGER_INSPECT_H

#include "error.h"

#include <stddef.h>
#include <stdint.h>

/* What qemu-img says of a file. */
typedef struct {
    char format[32];      /* "qcow2", "raw", "vmdk", ... */
    int64_t virtual_size; /* bytes the guest sees */
    int64_t actual_size;  /* bytes the file takes on disk */
    int backing_file;     /* it names a backing file */
    int data_file;        /* it names an external data file (qcow2 data-file) */
} inspect_info_t;

/* The store's rules. */
typedef struct {
    const char *formats;      /* comma-separated formats accepted ("qcow2") */
    int64_t max_virtual_size; /* bytes; larger images are refused */
} inspect_rules_t;

/* The path requested, relative to the import directory import_dir (absolute, without a
   trailing '/'), into rel: an absolute path must start with import_dir + "/"; no component
   may be ".." and none may be empty after the first; "." components are dropped. 0, or -1
   with error BAD_REQUEST naming the field "path". */
int inspect_path(const char *import_dir, const char *requested, char *rel, size_t rel_size,
                 berth_error_t *error);

/* Parse qemu-img info's JSON (text of len bytes; anything before its first '{' is skipped)
   into info. 0, or -1 with error BAD_REQUEST naming "path" ("not a disk image qemu-img can
   read"). */
int inspect_parse(const char *text, size_t len, inspect_info_t *info, berth_error_t *error);

/* 0 when info passes rules; -1 with error BAD_REQUEST naming "path", details.reason one of
   format, virtual_size, backing_file, data_file. */
int inspect_check(const inspect_info_t *info, const inspect_rules_t *rules, berth_error_t *error);

/* 1 when format is in the comma-separated list formats. */
int inspect_format_ok(const char *formats, const char *format);

#endif
