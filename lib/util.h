/*  util: small helpers every module needs: wall-clock milliseconds and unique ids. */
#ifndef BERTH_UTIL_H
#define BERTH_UTIL_H

#include <stdint.h>
#include <stddef.h>

#define UTIL_ID_LEN 37 /* 36 chars of a UUID plus the terminating NUL */

/* Unix time in milliseconds (wall clock: used for deadlines and timestamps that cross processes).
 */
int64_t util_now_ms(void);

/* Monotonic milliseconds, for intervals inside one process. */
int64_t util_mono_ms(void);

/* Write a fresh random UUID (lower case, 36 chars) into out. */
void util_uuid(char out[UTIL_ID_LEN]);

/* True when text is a Berth id: a UUID in the canonical lower-case form util_uuid() writes.
   Ids are keys, so another spelling of the same UUID would name a different object. */
int util_is_uuid(const char *text);

/* Copy src into dst (size bytes), always NUL-terminating. Returns -1 when src was truncated. */
int util_strlcpy(char *dst, const char *src, size_t size);

/* A webhook URL a group may set: http:// or https://, a host, no user or password in it
   (they would show wherever the URL is read), no spaces or control characters, at most max
   bytes. 0, or -1 with *why saying what is wrong. */
int util_webhook_check(const char *url, size_t max, const char **why);

/* Parse a decimal integer in [min, max]; the whole string must be a number. */
int util_parse_int(const char *text, int64_t min, int64_t max, int64_t *out);

/* Read the secret file dir/name that berth-secrets made (one line; the trailing newline and
   blanks are dropped) into out (size bytes). -1 with errno set when it cannot be read, is
   empty (ENODATA) or does not fit (EFBIG); out is then empty. */
int util_secret_read(const char *dir, const char *name, char *out, size_t size);

/* Every address a "tcp://NAME:PORT" endpoint stands for, each as "tcp://ADDRESS:PORT", into
   out (at most max, each UTIL_ENDPOINT_MAX bytes): a compose service name resolves to every
   instance of it. IPv4 addresses only when the name has any (the bus binds IPv4), else IPv6
   ones ("tcp://[ADDRESS]:PORT"); duplicates once. An endpoint that is not tcp:// with a host
   and port is copied as it is. The count, or -1 when the name does not resolve. */
#define UTIL_ENDPOINT_MAX 256
int util_resolve_endpoint(const char *endpoint, char (*out)[UTIL_ENDPOINT_MAX], int max);

#endif
