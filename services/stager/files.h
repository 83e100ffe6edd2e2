/*  files: the few file operations the stager's stores need: directory trees, whole-file
    reads with a size cap, atomic writes (temporary file + rename, so a crash never leaves
    half a file under its final name) and SHA-256 digests (libsodium). */
#ifndef BERTH_STAGER_FILES_H
#define BERTH_STAGER_FILES_H

#include <stddef.h>
#include <stdint.h>

/* Create path and its missing parents (mode 0750). 0 or -1 with errno. */
int files_mkdirs(const char *path);

/* Read the whole file if it is at most max bytes. 0 with *data_p (caller frees) and *size_p;
   -1 with errno (EFBIG when larger than max). */
int files_read(const char *path, size_t max, uint8_t **data_p, size_t *size_p);

/* Write data to path atomically (unique temporary file, fsync, rename). 0 or -1 with errno. */
int files_write(const char *path, const void *data, size_t size);

/* files_write without the fsync: never half a file under its name while the system runs, but
   after a power loss the file may be empty or missing. For what can be rebuilt and is checked
   when read (seeds carry their digest). 0 or -1 with errno. */
int files_replace(const char *path, const void *data, size_t size);

/* SHA-256 of the file as 64 lower-case hex chars; also its size. 0 or -1 with errno. */
int files_sha256(const char *path, char hex[65], int64_t *size_p);

/* SHA-256 of size bytes at data as 64 lower-case hex chars and a NUL. */
void files_sha256_hex(const void *data, size_t size, char hex[65]);

/* 1 if path exists (any type), 0 if not. */
int files_exists(const char *path);

#endif
