/*  bus_auth: certificates, the ZAP handler and caller identity.

    Files (made by berth-secrets, deploy/secrets.c): DIR/curve/<name>.key holds a secret
    certificate, DIR/curve/public/<name>.cert the public half of every certificate of the
    platform. The public store is what servers admit and where clients read a server's key:
    a key that is not in it is refused at the handshake, before any frame reaches a handler.

    ZAP: libzmq asks the one ZAP handler of the context (inproc://zeromq.zap.01) about every
    CURVE handshake. CZMQ's zauth is that handler; there can be one per process, so it is
    shared by every server of the process and started by the first. With CURVE it looks the
    client key up in the store and returns the certificate's metadata, which libzmq attaches
    to every message of that connection: a handler reads who is calling from the frame
    (service, host), not from anything the caller wrote. */
#include "bus_auth.h"
#include "log.h"
#include "util.h"

#include <assert.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#define ZAP_DOMAIN "berth"

struct _bus_auth_t {
    zcert_t *cert;
    char *public_dir; /* DIR/curve/public */
    zhashx_t *keys;   /* server name -> public key (Z85), read from the store once */
    int serving;      /* holds a reference on the process's zauth */
};

/* The process's one ZAP handler, shared by every server (see above). */
static zactor_t *s_zauth;
static char *s_zauth_dir;
static int s_zauth_users;

static void s_free(void **item)
{
    free(*item);
    *item = NULL;
}

int bus_auth_make(const char *secrets_dir, const char *name, const char *service, const char *host,
                  int replace)
{
    char dir[512], secret[600], public[600], tmp[610];
    snprintf(dir, sizeof dir, "%s/curve", secrets_dir);
    snprintf(secret, sizeof secret, "%s/%s.key", dir, name);
    snprintf(public, sizeof public, "%s/public/%s.cert", dir, name);
    snprintf(tmp, sizeof tmp, "%s.new", secret);
    if (!replace && zsys_file_exists(secret) && zsys_file_exists(public))
        return 0;
    if ((mkdir(dir, 0700) != 0 && errno != EEXIST)) {
        fprintf(stderr, "cannot create %s: %s\n", dir, strerror(errno));
        return -1;
    }
    snprintf(dir, sizeof dir, "%s/curve/public", secrets_dir);
    if ((mkdir(dir, 0755) != 0 && errno != EEXIST)) {
        fprintf(stderr, "cannot create %s: %s\n", dir, strerror(errno));
        return -1;
    }
    zcert_t *cert = zcert_new();
    if (!cert)
        return -1;
    zcert_set_meta(cert, "service", "%s", service);
    if (host)
        zcert_set_meta(cert, "host", "%s", host);
    /* The secret first, complete under a temporary name, then the public half: the store
       never lists a key nobody holds, and a half-written secret is never loaded. */
    unlink(tmp);
    int rc = zcert_save_secret(cert, tmp) == 0 && chmod(tmp, 0600) == 0 &&
                     rename(tmp, secret) == 0 && zcert_save_public(cert, public) == 0
                 ? 0
                 : -1;
    if (rc != 0)
        fprintf(stderr, "cannot write the certificate %s: %s\n", secret, strerror(errno));
    zcert_destroy(&cert);
    return rc;
}

bus_auth_t *bus_auth_new(const char *secrets_dir, const char *cert)
{
    if (!secrets_dir || !*secrets_dir || !cert || !*cert) {
        log_error(NULL, "no CURVE certificate: secrets_dir and curve_cert must be set", NULL);
        return NULL;
    }
    bus_auth_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    char *path =
        strchr(cert, '/') ? strdup(cert) : zsys_sprintf("%s/curve/%s.key", secrets_dir, cert);
    self->public_dir = zsys_sprintf("%s/curve/public", secrets_dir);
    self->keys = zhashx_new();
    if (!path || !self->public_dir || !self->keys) {
        free(path);
        bus_auth_destroy(&self);
        return NULL;
    }
    zhashx_set_destructor(self->keys, s_free);
    self->cert = zcert_load(path);
    if (!self->cert ||
        streq(zcert_secret_txt(self->cert), "0000000000000000000000000000000000000000")) {
        log_error(NULL, "cannot load CURVE certificate (run berth-secrets)", "{s:s}", "file", path);
        free(path);
        bus_auth_destroy(&self);
        return NULL;
    }
    const char *service = zcert_meta(self->cert, "service");
    if (!service || !*service || strlen(service) >= BUS_AUTH_NAME_MAX) {
        log_error(NULL, "CURVE certificate names no service", "{s:s}", "file", path);
        free(path);
        bus_auth_destroy(&self);
        return NULL;
    }
    if (!zsys_file_exists(self->public_dir)) {
        log_error(NULL, "no CURVE certificate store (run berth-secrets)", "{s:s}", "dir",
                  self->public_dir);
        free(path);
        bus_auth_destroy(&self);
        return NULL;
    }
    free(path);
    return self;
}

void bus_auth_destroy(bus_auth_t **self_p)
{
    if (self_p && *self_p) {
        bus_auth_t *self = *self_p;
        if (self->serving && --s_zauth_users == 0) {
            zactor_destroy(&s_zauth);
            zstr_free(&s_zauth_dir);
        }
        zcert_destroy(&self->cert);
        zhashx_destroy(&self->keys);
        free(self->public_dir);
        free(self);
        *self_p = NULL;
    }
}

const char *bus_auth_service(bus_auth_t *self)
{
    return zcert_meta(self->cert, "service");
}

const char *bus_auth_host(bus_auth_t *self)
{
    const char *host = zcert_meta(self->cert, "host");
    return host ? host : "";
}

/* Start (or share) the process's zauth, admitting the keys of our store. */
static int s_zauth_start(bus_auth_t *self)
{
    if (self->serving)
        return 0;
    if (s_zauth) {
        if (!streq(s_zauth_dir, self->public_dir)) {
            log_error(NULL, "one CURVE store per process", "{s:s, s:s}", "running", s_zauth_dir,
                      "asked", self->public_dir);
            return -1;
        }
    } else {
        s_zauth = zactor_new(zauth, NULL);
        s_zauth_dir = strdup(self->public_dir);
        if (!s_zauth || !s_zauth_dir || zstr_sendx(s_zauth, "CURVE", self->public_dir, NULL) != 0 ||
            zsock_wait(s_zauth) != 0) {
            log_error(NULL, "cannot start the ZAP handler", "{s:s}", "store", self->public_dir);
            zactor_destroy(&s_zauth);
            zstr_free(&s_zauth_dir);
            return -1;
        }
    }
    s_zauth_users++;
    self->serving = 1;
    return 0;
}

int bus_auth_server(bus_auth_t *self, zsock_t *sock)
{
    assert(self && sock);
    if (s_zauth_start(self) != 0)
        return -1;
    zcert_apply(self->cert, sock);
    zsock_set_zap_domain(sock, ZAP_DOMAIN);
    zsock_set_curve_server(sock, 1);
    return 0;
}

/* The public key of server from the store (cached: a store file is read once). */
static const char *s_server_key(bus_auth_t *self, const char *server)
{
    const char *key = zhashx_lookup(self->keys, server);
    if (key)
        return key;
    /* A name is a file name in the store: nothing that could walk out of it. */
    if (!*server || strchr(server, '/') || server[0] == '.')
        return NULL;
    char *path = zsys_sprintf("%s/%s.cert", self->public_dir, server);
    zcert_t *cert = path ? zcert_load(path) : NULL;
    free(path);
    if (!cert)
        return NULL;
    char *copy = strdup(zcert_public_txt(cert));
    zcert_destroy(&cert);
    if (!copy || zhashx_insert(self->keys, server, copy) != 0) {
        free(copy);
        return NULL;
    }
    return copy;
}

int bus_auth_client(bus_auth_t *self, zsock_t *sock, const char *server)
{
    assert(self && sock && server);
    const char *key = s_server_key(self, server);
    if (!key) {
        log_error(NULL, "no public certificate for this server in the CURVE store", "{s:s, s:s}",
                  "server", server, "store", self->public_dir);
        return -1;
    }
    zcert_apply(self->cert, sock);
    zsock_set_curve_serverkey(sock, key);
    return 0;
}

int bus_auth_caller(zframe_t *frame, bus_caller_t *caller)
{
    const char *service = zframe_meta(frame, "service");
    if (!service || !*service)
        return -1;
    const char *host = zframe_meta(frame, "host");
    util_strlcpy(caller->service, service, sizeof caller->service);
    util_strlcpy(caller->host, host ? host : "", sizeof caller->host);
    return 0;
}

int bus_auth_allows(const char *callers, const bus_caller_t *caller)
{
    if (!callers || !caller->service[0])
        return 0;
    size_t len = strlen(caller->service);
    for (const char *p = callers; *p;) {
        while (*p == ' ')
            p++;
        size_t n = strcspn(p, " ");
        if (n == 1 && *p == '*')
            return 1;
        if (n == len && strncmp(p, caller->service, n) == 0)
            return 1;
        p += n;
    }
    return 0;
}
