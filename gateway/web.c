/*  web: the portal's static files. The web root is read once when the gateway starts: each
    file is kept in memory with a strong ETag (a hash of its bytes) and, when it is text and
    shrinks, a gzip copy made then, so a request never touches the disk and a path from the
    network is only ever a key looked up in that table (it cannot name anything outside the
    root). Clients revalidate every time (Cache-Control: no-cache) and get 304 when unchanged:
    a new release is seen at once, an unchanged one costs a header. */
#include "web.h"

#include <dirent.h>
#include <microhttpd.h>
#include <sodium.h>
#include <sys/stat.h>
#include <zlib.h>

typedef struct {
    char *path;        /* "/app.js": the URL path, relative to the root */
    const char *type;  /* Content-Type */
    unsigned char *data;
    size_t size;
    unsigned char *gz; /* gzip copy, or NULL (not text, or no smaller) */
    size_t gz_size;
    char etag[40];     /* "<hash>" of the bytes */
    char gz_etag[44];  /* "<hash>-gz": the gzip copy is another representation */
} s_file_t;

struct _web_t {
    s_file_t *files;
    size_t count;
};

/* Content types by extension; anything else is not served (a stray file in the root stays
   private rather than being sent as something a browser might sniff). */
static const struct {
    const char *ext;
    const char *type;
    int text; /* worth compressing */
} s_types[] = {
    { ".html", "text/html; charset=utf-8", 1 },
    { ".css", "text/css; charset=utf-8", 1 },
    { ".js", "text/javascript; charset=utf-8", 1 },
    { ".mjs", "text/javascript; charset=utf-8", 1 },
    { ".json", "application/json", 1 },
    { ".svg", "image/svg+xml", 1 },
    { ".txt", "text/plain; charset=utf-8", 1 },
    { ".png", "image/png", 0 },
    { ".ico", "image/x-icon", 0 },
    { ".woff2", "font/woff2", 0 },
    { NULL, NULL, 0 },
};

static int s_type(const char *name, const char **type)
{
    size_t len = strlen(name);
    for (size_t i = 0; s_types[i].ext; i++) {
        size_t n = strlen(s_types[i].ext);
        if (len > n && strcmp(name + len - n, s_types[i].ext) == 0) {
            *type = s_types[i].type;
            return s_types[i].text;
        }
    }
    *type = NULL;
    return 0;
}

/* data gzipped (RFC 1952) into *out when that is smaller; 0, or -1 (nothing written). */
static int s_gzip(const unsigned char *data, size_t size, unsigned char **out, size_t *out_size)
{
    z_stream z = { 0 };
    if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY) != Z_OK)
        return -1;
    uLong bound = deflateBound(&z, (uLong)size);
    unsigned char *buf = malloc(bound);
    int rc = -1;
    if (buf) {
        z.next_in = (Bytef *)data;
        z.avail_in = (uInt)size;
        z.next_out = buf;
        z.avail_out = (uInt)bound;
        if (deflate(&z, Z_FINISH) == Z_STREAM_END && z.total_out < size) {
            *out = buf;
            *out_size = z.total_out;
            buf = NULL;
            rc = 0;
        }
    }
    free(buf);
    deflateEnd(&z);
    return rc;
}

/* Read the regular file at full (sb: its lstat) as url into the table. 0, or -1 (logged). */
static int s_add(web_t *self, const char *full, const char *url, const struct stat *sb)
{
    const char *type;
    int text = s_type(url, &type);
    if (!type)
        return 0;
    if (self->count == WEB_FILES_MAX || sb->st_size > WEB_FILE_MAX) {
        log_error(NULL, "web root breaks a limit (files, or one file's size)", "{s:s, s:i, s:i}",
                  "file", full, "files_max", WEB_FILES_MAX, "file_max_bytes", WEB_FILE_MAX);
        return -1;
    }
    FILE *f = fopen(full, "rbe");
    unsigned char *data = f ? malloc((size_t)sb->st_size + 1) : NULL;
    size_t n = data ? fread(data, 1, (size_t)sb->st_size + 1, f) : 0;
    int bad = !f || !data || ferror(f) || n != (size_t)sb->st_size;
    if (f)
        fclose(f);
    if (bad) {
        log_error(NULL, "cannot read a web file", "{s:s}", "file", full);
        free(data);
        return -1;
    }
    s_file_t *file = &self->files[self->count];
    *file = (s_file_t){ .path = strdup(url), .type = type, .data = data, .size = n };
    if (!file->path) {
        free(data);
        return -1;
    }
    unsigned char hash[16];
    char hex[33];
    crypto_generichash(hash, sizeof hash, data, n, NULL, 0);
    sodium_bin2hex(hex, sizeof hex, hash, sizeof hash);
    snprintf(file->etag, sizeof file->etag, "\"%s\"", hex);
    snprintf(file->gz_etag, sizeof file->gz_etag, "\"%s-gz\"", hex);
    if (text && n > 0)
        s_gzip(data, n, &file->gz, &file->gz_size);
    self->count++;
    return 0;
}

/* Walk dir (its URL prefix url) into the table, depth levels at most. 0, or -1 (logged). */
static int s_walk(web_t *self, const char *dir, const char *url, int depth)
{
    DIR *d = opendir(dir);
    if (!d) {
        log_error(NULL, "cannot read the web root", "{s:s, s:s}", "dir", dir, "reason",
                  strerror(errno));
        return -1;
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        /* Hidden files (and . and ..) are never served. */
        if (e->d_name[0] == '.')
            continue;
        char full[PATH_MAX], sub[PATH_MAX];
        struct stat sb;
        if ((size_t)snprintf(full, sizeof full, "%s/%s", dir, e->d_name) >= sizeof full ||
            (size_t)snprintf(sub, sizeof sub, "%s/%s", url, e->d_name) >= sizeof sub ||
            lstat(full, &sb) != 0)
            continue;
        if (S_ISDIR(sb.st_mode) && depth > 0)
            rc = s_walk(self, full, sub, depth - 1);
        else if (S_ISREG(sb.st_mode))
            rc = s_add(self, full, sub, &sb);
        /* Symbolic links are skipped: nothing outside the root is served. */
    }
    closedir(d);
    return rc;
}

web_t *web_new(const char *root)
{
    web_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->files = calloc(WEB_FILES_MAX, sizeof *self->files);
    if (!self->files || s_walk(self, root, "", 8) != 0) {
        web_destroy(&self);
        return NULL;
    }
    return self;
}

void web_destroy(web_t **self_p)
{
    if (self_p && *self_p) {
        web_t *self = *self_p;
        for (size_t i = 0; self->files && i < self->count; i++) {
            free(self->files[i].path);
            free(self->files[i].data);
            free(self->files[i].gz);
        }
        free(self->files);
        free(self);
        *self_p = NULL;
    }
}

size_t web_count(const web_t *self)
{
    return self ? self->count : 0;
}

/* Does the client take gzip? Accept-Encoding lists it, and not with q=0. */
static int s_accepts_gzip(http_req_t *req)
{
    const char *ae = http_header(req, "Accept-Encoding");
    for (const char *p = ae; p && *p;) {
        p += strspn(p, " ,");
        size_t n = strcspn(p, ",");
        if (strncasecmp(p, "gzip", 4) == 0 && (n == 4 || p[4] == ';' || p[4] == ' ')) {
            const char *q = memchr(p, ';', n);
            return !(q && strstr(q, "q=0") && !strstr(q, "q=0."));
        }
        p += n;
    }
    return 0;
}

/* Does If-None-Match name either representation of file (or "*")? */
static int s_not_modified(http_req_t *req, const s_file_t *file)
{
    const char *inm = http_header(req, "If-None-Match");
    if (!inm)
        return 0;
    for (const char *p = inm; *p;) {
        p += strspn(p, " ,");
        size_t n = strcspn(p, ",");
        while (n && p[n - 1] == ' ')
            n--;
        if (n >= 2 && strncmp(p, "W/", 2) == 0) {
            p += 2;
            n -= 2;
        }
        if ((n == 1 && *p == '*') || (n == strlen(file->etag) && !strncmp(p, file->etag, n)) ||
            (n == strlen(file->gz_etag) && !strncmp(p, file->gz_etag, n)))
            return 1;
        p += strcspn(p, ",");
    }
    return 0;
}

/* A path a file could have: /, then segments of [A-Za-z0-9._-] none starting with '.'.
   Anything else (.., //, %, \) never names a file. */
static int s_path_ok(const char *path)
{
    if (path[0] != '/')
        return 0;
    for (const char *p = path + 1; *p;) {
        size_t n = strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-");
        if (n == 0 || p[0] == '.' || (p[n] && p[n] != '/'))
            return 0;
        p += n;
        if (*p == '/' && *++p == '\0')
            return 0;
    }
    return 1;
}

void web_serve(web_t *self, http_req_t *req)
{
    const char *path = streq(req->path, "/") ? "/index.html" : req->path;
    if (!s_path_ok(path)) {
        http_error(req, strstr(path, "..") ? "BAD_REQUEST" : "NOT_FOUND",
                   strstr(path, "..") ? "path may not contain '..'" : "no such resource");
        return;
    }
    const s_file_t *file = NULL;
    for (size_t i = 0; self && i < self->count && !file; i++)
        if (streq(self->files[i].path, path))
            file = &self->files[i];
    if (!file) {
        http_error(req, "NOT_FOUND", "no such resource");
        return;
    }
    int gz = file->gz && s_accepts_gzip(req);
    int not_modified = s_not_modified(req, file);
    struct MHD_Response *response =
        not_modified ? MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT)
                     : MHD_create_response_from_buffer(gz ? file->gz_size : file->size,
                                                       gz ? file->gz : file->data,
                                                       MHD_RESPMEM_PERSISTENT);
    if (!response) {
        http_error(req, "INTERNAL", "cannot make the response");
        return;
    }
    MHD_add_response_header(response, "ETag", gz ? file->gz_etag : file->etag);
    MHD_add_response_header(response, "Cache-Control", "no-cache");
    MHD_add_response_header(response, "Content-Security-Policy", WEB_CSP);
    MHD_add_response_header(response, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(response, "X-Frame-Options", "DENY");
    MHD_add_response_header(response, "Referrer-Policy", "same-origin");
    if (file->gz)
        MHD_add_response_header(response, "Vary", "Accept-Encoding");
    if (!not_modified) {
        MHD_add_response_header(response, "Content-Type", file->type);
        if (gz)
            MHD_add_response_header(response, "Content-Encoding", "gzip");
    }
    req->stream = response;
    req->status = not_modified ? 304 : 200;
}
