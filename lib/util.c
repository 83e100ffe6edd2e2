/*  util: wall-clock and monotonic time, UUIDs, bounded string copy, strict integer parsing. */
#include "util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uuid/uuid.h>

int64_t util_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t util_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void util_uuid(char out[UTIL_ID_LEN])
{
    uuid_t id;
    uuid_generate_random(id);
    uuid_unparse_lower(id, out);
}

int util_strlcpy(char *dst, const char *src, size_t size)
{
    size_t len = strlen(src);
    if (size == 0)
        return -1;
    if (len >= size) {
        memcpy(dst, src, size - 1);
        dst[size - 1] = '\0';
        return -1;
    }
    memcpy(dst, src, len + 1);
    return 0;
}

int util_parse_int(const char *text, int64_t min, int64_t max, int64_t *out)
{
    /* strtoll alone would also take leading blanks and a '+': a config value or a
       request field is a plain decimal number or nothing. */
    if (!text)
        return -1;
    const char *digits = text[0] == '-' ? text + 1 : text;
    if (!isdigit((unsigned char)digits[0]))
        return -1;
    errno = 0;
    char *end = NULL;
    long long value = strtoll(text, &end, 10);
    if (errno || *end != '\0' || value < min || value > max)
        return -1;
    *out = value;
    return 0;
}

int util_is_uuid(const char *text)
{
    /* The canonical form checked character by character (what uuid_parse accepts, less the
       upper case): every placement checks its VM's id, and uuid_parse (strtoul per group)
       showed in the scheduler's CPU profile per placement. */
    if (!text)
        return 0;
    for (int i = 0; i < UTIL_ID_LEN - 1; i++) {
        char c = text[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return 0;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return 0; /* the terminating NUL of a short text stops here too */
    }
    return text[UTIL_ID_LEN - 1] == '\0';
}

int util_secret_read(const char *dir, const char *name, char *out, size_t size)
{
    if (size)
        out[0] = '\0';
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    size_t n = size ? fread(out, 1, size - 1, f) : 0;
    int more = fgetc(f) != EOF, failed = ferror(f);
    fclose(f);
    if (failed || more) {
        if (size)
            out[0] = '\0';
        errno = failed ? EIO : EFBIG;
        return -1;
    }
    while (n > 0 && isspace((unsigned char)out[n - 1]))
        n--;
    out[n] = '\0';
    if (n == 0 || memchr(out, '\0', n)) {
        out[0] = '\0';
        errno = ENODATA;
        return -1;
    }
    return 0;
}

int util_webhook_check(const char *url, size_t max, const char **why)
{
    const char *rest = NULL;
    if (!url || !*url)
        *why = "the URL is empty";
    else if (strlen(url) > max)
        *why = "the URL is too long";
    else if (strncmp(url, "https://", 8) == 0)
        rest = url + 8;
    else if (strncmp(url, "http://", 7) == 0)
        rest = url + 7;
    else
        *why = "the URL must start with http:// or https://";
    if (!rest)
        return -1;
    for (const char *p = url; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f) {
            *why = "the URL has a space or a control character";
            return -1;
        }
    /* The authority runs to the first '/', '?' or '#'; an '@' in it carries credentials. */
    size_t authority = strcspn(rest, "/?#");
    if (memchr(rest, '@', authority)) {
        *why = "the URL must not carry a user or password";
        return -1;
    }
    if (authority == 0 || rest[0] == ':') {
        *why = "the URL names no host";
        return -1;
    }
    return 0;
}

int util_resolve_endpoint(const char *endpoint, char (*out)[UTIL_ENDPOINT_MAX], int max)
{
    const char *host = strncmp(endpoint, "tcp://", 6) == 0 ? endpoint + 6 : NULL;
    const char *colon = host ? strrchr(host, ':') : NULL;
    char name[UTIL_ENDPOINT_MAX];
    if (!host || !colon || colon == host || !colon[1] || *host == '[' ||
        (size_t)(colon - host) >= sizeof name) {
        if (max < 1)
            return 0;
        util_strlcpy(out[0], endpoint, UTIL_ENDPOINT_MAX);
        return 1;
    }
    memcpy(name, host, (size_t)(colon - host));
    name[colon - host] = '\0';
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
    if (getaddrinfo(name, NULL, &hints, &res) != 0 || !res)
        return -1;
    int v4 = 0;
    for (struct addrinfo *a = res; a; a = a->ai_next)
        v4 |= a->ai_family == AF_INET;
    int n = 0;
    for (struct addrinfo *a = res; a && n < max; a = a->ai_next) {
        char addr[INET6_ADDRSTRLEN];
        const void *raw = a->ai_family == AF_INET
                              ? (const void *)&((struct sockaddr_in *)a->ai_addr)->sin_addr
                              : (const void *)&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr;
        if ((a->ai_family != AF_INET && a->ai_family != AF_INET6) ||
            (v4 && a->ai_family != AF_INET) || !inet_ntop(a->ai_family, raw, addr, sizeof addr))
            continue;
        char ep[UTIL_ENDPOINT_MAX];
        snprintf(ep, sizeof ep, a->ai_family == AF_INET ? "tcp://%s%s" : "tcp://[%s]%s", addr,
                 colon);
        int seen = 0;
        for (int i = 0; i < n && !seen; i++)
            seen = strcmp(out[i], ep) == 0;
        if (!seen)
            util_strlcpy(out[n++], ep, UTIL_ENDPOINT_MAX);
    }
    freeaddrinfo(res);
    return n;
}
