/*  berth-secrets: create the platform's secrets in one directory, keeping every one that
    already exists. `make run`, the integration tests and compose's init step run it before
    any service starts; each service reads what it needs from that directory (the setting
    secrets_dir). Each kind of secret is one row of the table below: its file names and the
    function that makes it. Files holding a secret are mode 0600, the directory 0700.

        berth-secrets DIR [--host NAME]... [--rotate CERT]...
            create what is missing and list what DIR holds; --host adds the bus certificate
            of an agent host (kept if it exists); --rotate makes a certificate anew
            ("scheduler", "agent-host-2"): restart whoever holds it (every replica) */

#include "bus_auth.h"

#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Make the secret(s) of one kind inside dir (the current directory). 0 or -1 (printed). */
typedef int(s_make_fn)(void);

/* Write text to a new file name with mode; -1 (printed) when it fails. */
static int s_write(const char *name, const char *text, mode_t mode)
{
    int fd = open(name, O_WRONLY | O_CREAT | O_EXCL, mode);
    if (fd < 0) {
        fprintf(stderr, "berth-secrets: cannot create %s: %s\n", name, strerror(errno));
        return -1;
    }
    size_t len = strlen(text);
    ssize_t n = write(fd, text, len);
    if (n != (ssize_t)len || fsync(fd) != 0 || close(fd) != 0) {
        fprintf(stderr, "berth-secrets: cannot write %s: %s\n", name, strerror(errno));
        unlink(name);
        return -1;
    }
    return 0;
}

/* token.secret: 32 random bytes (hex), the gateway's HMAC key for tokens and sessions. */
static int s_token_secret(void)
{
    unsigned char key[32];
    char hex[sizeof key * 2 + 2];
    randombytes_buf(key, sizeof key);
    sodium_bin2hex(hex, sizeof hex - 1, key, sizeof key);
    strcat(hex, "\n");
    sodium_memzero(key, sizeof key);
    return s_write("token.secret", hex, 0600);
}

/* assertion.key + assertion.pub: the Ed25519 key pair of user assertions (lib/assertion.h).
   The gateway alone reads the secret key and signs who each bus call acts for; every other
   service reads only the public key to verify it. Both in hex; the public file is 0644. */
static int s_assertion_keys(void)
{
    unsigned char pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    char pk_hex[sizeof pk * 2 + 2], sk_hex[sizeof sk * 2 + 2];
    crypto_sign_keypair(pk, sk);
    sodium_bin2hex(pk_hex, sizeof pk_hex - 1, pk, sizeof pk);
    sodium_bin2hex(sk_hex, sizeof sk_hex - 1, sk, sizeof sk);
    strcat(pk_hex, "\n");
    strcat(sk_hex, "\n");
    sodium_memzero(sk, sizeof sk);
    /* The public key first: the secret key's file is the row's "already made" mark, so a
       run cut short in between makes both again rather than keep a half pair. */
    unlink("assertion.pub");
    int rc = s_write("assertion.pub", pk_hex, 0644);
    if (rc == 0 && chmod("assertion.pub", 0644) != 0) {
        fprintf(stderr, "berth-secrets: cannot chmod assertion.pub: %s\n", strerror(errno));
        rc = -1;
    }
    if (rc == 0)
        rc = s_write("assertion.key", sk_hex, 0600);
    sodium_memzero(sk_hex, sizeof sk_hex);
    return rc;
}

/* Bus certificates (CURVE): curve/<name>.key is one process's secret certificate (a service's,
   shared by its replicas, or an agent host's), curve/public/<name>.cert its public half; the
   public directory is the store every server admits callers from. The metadata names the
   service, and for an agent its host: that is the identity handlers check. */
static const char *s_cert_services[] = { "gateway", "approval", "scheduler", "taskmgr",
                                         "stager",  "meter",    NULL };

/* Make (or with replace, remake) the certificate name (lib/bus_auth.c keeps the layout). */
static int s_cert(const char *name, const char *service, const char *host, int replace)
{
    return bus_auth_make(".", name, service, host, replace);
}

static int s_curve(void)
{
    for (const char **svc = s_cert_services; *svc; svc++)
        if (s_cert(*svc, *svc, NULL, 0) != 0)
            return -1;
    return 0;
}

/* A host name as an agent certificate carries it: a file name, nothing that walks. */
static int s_valid_name(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > 60 || name[0] == '.' || name[0] == '-')
        return 0;
    return strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") == len;
}

static const struct {
    const char *file; /* present means this kind is already made */
    s_make_fn *make;
    const char *what;
} s_kinds[] = {
    { "token.secret", s_token_secret, "gateway: HMAC key of tokens and sessions" },
    { "assertion.key", s_assertion_keys, "gateway: signs user assertions (assertion.pub checks)" },
    { "curve/public", s_curve, "bus: CURVE certificates of every service, public store" },
};

int main(int argc, char **argv)
{
    int bad = argc < 2 || argv[1][0] == '-' || argc % 2 != 0;
    for (int i = 2; !bad && i + 1 < argc; i += 2)
        bad = !(strcmp(argv[i], "--host") == 0 || strcmp(argv[i], "--rotate") == 0) ||
              !s_valid_name(argv[i + 1]);
    if (bad) {
        fprintf(stderr, "usage: berth-secrets DIR [--host NAME]... [--rotate CERT]...\n");
        return 2;
    }
    if (sodium_init() < 0) {
        fprintf(stderr, "berth-secrets: libsodium failed to initialise\n");
        return 1;
    }
    umask(077);
    if (mkdir(argv[1], 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "berth-secrets: cannot create %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    if (chdir(argv[1]) != 0) {
        fprintf(stderr, "berth-secrets: cannot enter %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    for (size_t i = 0; i < sizeof s_kinds / sizeof s_kinds[0]; i++) {
        const char *state = "kept";
        if (access(s_kinds[i].file, F_OK) != 0) {
            if (s_kinds[i].make() != 0)
                return 1;
            state = "created";
        }
        printf("%-24s %-8s %s\n", s_kinds[i].file, state, s_kinds[i].what);
    }
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *name = argv[i + 1];
        char cert[80];
        snprintf(cert, sizeof cert, "agent-%s", name);
        if (strcmp(argv[i], "--host") == 0) {
            char path[128];
            snprintf(path, sizeof path, "curve/%s.key", cert);
            const char *state = access(path, F_OK) == 0 ? "kept" : "created";
            if (s_cert(cert, "agent", name, 0) != 0)
                return 1;
            printf("curve/%-18s %-8s %s\n", cert, state, "bus: the agent certificate of a host");
            continue;
        }
        /* --rotate: a certificate that exists, made anew under the same metadata. */
        char path[128];
        snprintf(path, sizeof path, "curve/%s.key", name);
        zcert_t *old = zcert_load(path);
        if (!old) {
            fprintf(stderr, "berth-secrets: no certificate %s to rotate\n", name);
            return 1;
        }
        char *service = strdup(zcert_meta(old, "service") ? zcert_meta(old, "service") : name);
        char *host = zcert_meta(old, "host") ? strdup(zcert_meta(old, "host")) : NULL;
        zcert_destroy(&old);
        int rc = s_cert(name, service, host, 1);
        free(service);
        free(host);
        if (rc != 0)
            return 1;
        printf("curve/%-18s %-8s %s\n", name, "rotated", "bus: restart whoever holds it");
    }
    return 0;
}
