/*  web: the portal's static files (gateway/web/), read once at start into memory with their
    ETag and, for text, a gzip copy; served at / beside the API, never under /v1. Every page
    carries a Content-Security-Policy that allows script only from the gateway itself. */
#ifndef BERTH_GATEWAY_WEB_H
#define BERTH_GATEWAY_WEB_H

#include "http.h"

typedef struct _web_t web_t;

/* The CSP every portal response carries: no inline script, nothing from elsewhere. */
#define WEB_CSP                                                                                    \
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "             \
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "                   \
    "frame-ancestors 'none'; form-action 'self'"

/* Files a web root may hold at most, and the largest one: the portal is small; a web root
   pointed at the wrong directory must not fill the gateway's memory. */
#define WEB_FILES_MAX 512
#define WEB_FILE_MAX  (4 * 1024 * 1024)

/* Load every regular file under root (hidden files and symbolic links skipped). NULL
   (logged) when root cannot be read or breaks a limit. */
web_t *web_new(const char *root);
void web_destroy(web_t **self_p);
/* How many files were loaded. */
size_t web_count(const web_t *self);

/* Answer a GET or HEAD for a path outside /v1 from the loaded files: 200 with the file
   (gzip when the client accepts it), 304 when If-None-Match names its ETag, 404 when no file
   has that path. "/" is index.html. */
void web_serve(web_t *self, http_req_t *req);

#endif
