/*  berth-secrets: create the platform's secrets in one directory, keeping every one that
    already exists. `make run`, the integration tests and compose's init step run it before
    any service starts; each service reads what it needs from that directory (the setting
    secrets_dir). Each kind of secret is one row of the table below: its file names and the
    function that makes it. Files holding a secret are mode 0600, the directory 0700.
    Every run then writes DIR/views/<name>/, one per process kind, holding only what that
    process needs (table s_views): point each process's secrets_dir at its own view.

        berth-secrets DIR [--host NAME]... [--rotate CERT]...
            create what is missing and list what DIR holds; --host adds the bus certificate
            of an agent host (kept if it exists); --rotate makes a certificate anew
            ("scheduler", "agent-host-2"): restart whoever holds it (every replica) */

#include "bus_auth.h"

#include <czmq.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
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

/* user.secret: 32 random bytes (hex), the gateway's key of the MACs of user records
   (lib/user_record.h): without it, writing Redis cannot make a user or change a role. */
static int s_user_secret(void)
{
    unsigned char key[32];
    char hex[sizeof key * 2 + 2];
    randombytes_buf(key, sizeof key);
    sodium_bin2hex(hex, sizeof hex - 1, key, sizeof key);
    strcat(hex, "\n");
    sodium_memzero(key, sizeof key);
    return s_write("user.secret", hex, 0600);
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

/* A new password (32 random bytes, hex) into hex (65 bytes) and its SHA-256 (hex, 65 bytes):
   what Redis's users file holds instead of the password. */
static void s_password(char hex[65], char digest_hex[65])
{
    unsigned char key[32], digest[crypto_hash_sha256_BYTES];
    randombytes_buf(key, sizeof key);
    sodium_bin2hex(hex, 65, key, sizeof key);
    crypto_hash_sha256(digest, (const unsigned char *)hex, strlen(hex));
    sodium_bin2hex(digest_hex, 65, digest, sizeof digest);
    sodium_memzero(key, sizeof key);
}

/* Redis's users (redis-server --aclfile redis.acl, which holds only the passwords' SHA-256):
   - berth (redis.password): every service. Only keys and channels named berth:*, and no
     command of @dangerous (CONFIG, DEBUG, MODULE, KEYS, MONITOR, FLUSHALL, SHUTDOWN, ACL...),
     so a service's password cannot rewrite the server's files or read its other users;
     ROLE (in @dangerous) is allowed back: with Sentinel a service checks that the server
     it was sent to is the primary.
   - default (redis-admin.password): the operator's, with every command; the local runner,
     the tests and the benchmark read state through it. */
static int s_redis_passwords(void)
{
    char svc[66], svc_digest[65], admin[66], admin_digest[65], acl[512];
    s_password(svc, svc_digest);
    s_password(admin, admin_digest);
    snprintf(acl, sizeof acl,
             "user default on #%s ~* &* +@all\n"
             "user berth on #%s ~berth:* &berth:* +@all -@dangerous +role\n",
             admin_digest, svc_digest);
    strcat(svc, "\n");
    strcat(admin, "\n");
    /* Leftovers of an interrupted run match no password now; redis.password, the row's mark,
       comes last. */
    unlink("redis.acl");
    unlink("redis-admin.password");
    int rc = s_write("redis.acl", acl, 0600) == 0 &&
                     s_write("redis-admin.password", admin, 0600) == 0 &&
                     s_write("redis.password", svc, 0600) == 0
                 ? 0
                 : -1;
    sodium_memzero(svc, sizeof svc);
    sodium_memzero(admin, sizeof admin);
    return rc;
}

/* Export a GnuTLS object as PEM into a new buffer (gnutls_free it). */
#define S_EXPORT(fn, obj, out) ((fn)((obj), GNUTLS_X509_FMT_PEM, (out)))

/* gateway.key + gateway.crt: the gateway's HTTPS key (ECDSA P-256) and a self-signed
   certificate for it (5 years), valid for localhost, 127.0.0.1, ::1, this machine's name and
   "gateway" (compose's service name). Clients trust this one certificate (curl --cacert,
   BERTH_CA_FILE) or its SHA-256 fingerprint, which `make run` prints. */
static int s_tls_cert(void)
{
    gnutls_x509_privkey_t key = NULL;
    gnutls_x509_crt_t crt = NULL;
    gnutls_datum_t key_pem = { NULL, 0 }, crt_pem = { NULL, 0 };
    unsigned char serial[16], key_id[64];
    size_t key_id_size = sizeof key_id;
    char host[256] = "";
    int rc = -1, err;
    randombytes_buf(serial, sizeof serial);
    serial[0] &= 0x7f; /* a positive number */
    gethostname(host, sizeof host - 1);
    static const unsigned char ip4[] = { 127, 0, 0, 1 };
    static const unsigned char ip6[16] = { [15] = 1 };
    time_t now = time(NULL);
    if ((err = gnutls_x509_privkey_init(&key)) < 0 ||
        (err = gnutls_x509_privkey_generate2(key, GNUTLS_PK_ECDSA,
                                             GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0,
                                             NULL, 0)) < 0 ||
        (err = gnutls_x509_crt_init(&crt)) < 0 || (err = gnutls_x509_crt_set_version(crt, 3)) < 0 ||
        (err = gnutls_x509_crt_set_serial(crt, serial, sizeof serial)) < 0 ||
        (err = gnutls_x509_crt_set_activation_time(crt, now - 3600)) < 0 ||
        (err = gnutls_x509_crt_set_expiration_time(crt, now + 5L * 365 * 24 * 3600)) < 0 ||
        (err = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, "berth-gateway",
                                             strlen("berth-gateway"))) < 0 ||
        (err = gnutls_x509_crt_set_key(crt, key)) < 0 ||
        /* Its own trust anchor: a CA that signs only itself (verifiers want keyCertSign on
           a certificate they are given as the one to trust). */
        (err = gnutls_x509_crt_set_basic_constraints(crt, 1, 0)) < 0 ||
        (err = gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_DIGITAL_SIGNATURE |
                                                      GNUTLS_KEY_KEY_CERT_SIGN)) < 0 ||
        (err = gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_SERVER, 0)) < 0 ||
        (err = gnutls_x509_privkey_get_key_id(key, 0, key_id, &key_id_size)) < 0 ||
        (err = gnutls_x509_crt_set_subject_key_id(crt, key_id, key_id_size)) < 0 ||
        (err = gnutls_x509_crt_set_authority_key_id(crt, key_id, key_id_size)) < 0 ||
        (err = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, "localhost",
                                                    strlen("localhost"), GNUTLS_FSAN_APPEND)) < 0 ||
        (err = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, "gateway",
                                                    strlen("gateway"), GNUTLS_FSAN_APPEND)) < 0 ||
        (*host && strcmp(host, "localhost") != 0 && strcmp(host, "gateway") != 0 &&
         (err = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, host, strlen(host),
                                                     GNUTLS_FSAN_APPEND)) < 0) ||
        (err = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, ip4, sizeof ip4,
                                                    GNUTLS_FSAN_APPEND)) < 0 ||
        (err = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, ip6, sizeof ip6,
                                                    GNUTLS_FSAN_APPEND)) < 0 ||
        (err = gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0)) < 0 ||
        (err = S_EXPORT(gnutls_x509_privkey_export2, key, &key_pem)) < 0 ||
        (err = S_EXPORT(gnutls_x509_crt_export2, crt, &crt_pem)) < 0) {
        fprintf(stderr, "berth-secrets: cannot make the gateway's certificate: %s\n",
                gnutls_strerror(err));
        goto done;
    }
    /* NUL-terminated copies for s_write (PEM is text). */
    char *key_text = calloc(1, key_pem.size + 1), *crt_text = calloc(1, crt_pem.size + 1);
    if (key_text && crt_text) {
        memcpy(key_text, key_pem.data, key_pem.size);
        memcpy(crt_text, crt_pem.data, crt_pem.size);
        unlink("gateway.key"); /* a leftover of an interrupted run: it matches no certificate */
        rc = s_write("gateway.key", key_text, 0600) == 0 &&
                     s_write("gateway.crt", crt_text, 0600) == 0
                 ? 0
                 : -1;
    } else
        fprintf(stderr, "berth-secrets: out of memory\n");
    if (key_text)
        sodium_memzero(key_text, key_pem.size);
    free(key_text);
    free(crt_text);
done:
    if (key_pem.data) {
        sodium_memzero(key_pem.data, key_pem.size);
        gnutls_free(key_pem.data);
    }
    gnutls_free(crt_pem.data);
    if (crt)
        gnutls_x509_crt_deinit(crt);
    if (key)
        gnutls_x509_privkey_deinit(key);
    return rc;
}

static const struct {
    const char *file; /* present means this kind is already made */
    s_make_fn *make;
    const char *what;
} s_kinds[] = {
    { "token.secret", s_token_secret, "gateway: HMAC key of tokens and sessions" },
    { "user.secret", s_user_secret, "gateway: MAC key of user records" },
    { "assertion.key", s_assertion_keys, "gateway: signs user assertions (assertion.pub checks)" },
    { "curve/public", s_curve, "bus: CURVE certificates of every service, public store" },
    { "redis.password", s_redis_passwords,
      "Redis: the services' password (redis-admin.password: the operator's; redis.acl: hashes)" },
    { "gateway.crt", s_tls_cert, "gateway: HTTPS certificate, self-signed (gateway.key: its key)" },
};

/* ---- views: what each process may read ---------------------------------------------- */

/* What each kind of process needs besides its own bus certificate (curve/<name>.key) and the
   public store (curve/public): the gateway alone signs assertions, checks tokens and holds
   the HTTPS key; every service verifies assertions and logs in to Redis; an agent (one view
   per host certificate, "agent-<host>") needs nothing else; Redis (no certificate) reads
   its users file, and its health check the operator's password. */
#define S_VIEW_FILES_MAX 8
static const struct {
    const char *name;
    int curve; /* gets its certificate and the public store */
    const char *files[S_VIEW_FILES_MAX];
} s_views[] = {
    { "gateway",
      1,
      { "token.secret", "assertion.key", "assertion.pub", "gateway.key", "gateway.crt",
        "redis.password", "user.secret", NULL } },
    { "approval", 1, { "assertion.pub", "redis.password", NULL } },
    { "scheduler", 1, { "assertion.pub", "redis.password", NULL } },
    { "taskmgr", 1, { "assertion.pub", "redis.password", NULL } },
    { "stager", 1, { "assertion.pub", "redis.password", NULL } },
    { "meter", 1, { "assertion.pub", "redis.password", NULL } },
    { "redis", 0, { "redis.acl", "redis-admin.password", NULL } },
};

/* Copy from to to, a path inside views/<name>/ (replaced whole: a reader, e.g. zauth reloading
   the store, never sees a half file), keeping from's mode. The new copy is written beside the
   view's top (views/<name>/.<file>.new, the same volume), never inside curve/public: a
   service's certificate store reloads every file there, and a second file with the same key
   stops it (CZMQ asserts on a duplicate). 0 or -1 (printed). */
static int s_copy(const char *from, const char *to)
{
    char tmp[600];
    const char *slash = strchr(to, '/');
    slash = slash ? strchr(slash + 1, '/') : NULL; /* the end of views/<name> */
    const char *base = strrchr(to, '/');
    if (!slash || !base) {
        fprintf(stderr, "berth-secrets: %s is not inside a view\n", to);
        return -1;
    }
    snprintf(tmp, sizeof tmp, "%.*s/.%s.new", (int)(slash - to), to, base + 1);
    struct stat st;
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0 || fstat(in, &st) != 0) {
        fprintf(stderr, "berth-secrets: cannot read %s: %s\n", from, strerror(errno));
        if (in >= 0)
            close(in);
        return -1;
    }
    unlink(tmp);
    int out = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, st.st_mode & 0777);
    char buf[4096];
    ssize_t n = 0;
    int rc = out >= 0 ? 0 : -1;
    while (rc == 0 && (n = read(in, buf, sizeof buf)) > 0)
        rc = write(out, buf, (size_t)n) == n ? 0 : -1;
    if (n < 0)
        rc = -1;
    close(in);
    if (out >= 0 && (fchmod(out, st.st_mode & 0777) != 0 || fsync(out) != 0 || close(out) != 0))
        rc = -1;
    sodium_memzero(buf, sizeof buf);
    if (rc == 0 && rename(tmp, to) != 0)
        rc = -1;
    if (rc != 0) {
        fprintf(stderr, "berth-secrets: cannot write %s: %s\n", to, strerror(errno));
        unlink(tmp);
    }
    return rc;
}

/* views/<name>/ with files and, with curve, its certificate and a copy of the store whose
   stale entries (no longer in DIR's store) are removed. 0 or -1 (printed). */
static int s_view(const char *name, int curve, const char *const *files)
{
    char dir[256], from[600], to[600];
    snprintf(dir, sizeof dir, "views/%s", name);
    if ((mkdir("views", 0700) != 0 && errno != EEXIST) ||
        (mkdir(dir, 0700) != 0 && errno != EEXIST)) {
        fprintf(stderr, "berth-secrets: cannot create %s: %s\n", dir, strerror(errno));
        return -1;
    }
    for (size_t i = 0; files && files[i]; i++) {
        snprintf(to, sizeof to, "%s/%s", dir, files[i]);
        if (s_copy(files[i], to) != 0)
            return -1;
    }
    if (!curve)
        return 0;
    snprintf(to, sizeof to, "%s/curve", dir);
    snprintf(from, sizeof from, "%s/curve/public", dir);
    if ((mkdir(to, 0700) != 0 && errno != EEXIST) || (mkdir(from, 0700) != 0 && errno != EEXIST)) {
        fprintf(stderr, "berth-secrets: cannot create %s: %s\n", from, strerror(errno));
        return -1;
    }
    snprintf(from, sizeof from, "curve/%s.key", name);
    snprintf(to, sizeof to, "%s/curve/%s.key", dir, name);
    if (s_copy(from, to) != 0)
        return -1;
    DIR *store = opendir("curve/public");
    if (!store) {
        fprintf(stderr, "berth-secrets: cannot read curve/public: %s\n", strerror(errno));
        return -1;
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(store)))
        if (e->d_name[0] != '.' && strstr(e->d_name, ".cert")) {
            snprintf(from, sizeof from, "curve/public/%s", e->d_name);
            snprintf(to, sizeof to, "%s/curve/public/%s", dir, e->d_name);
            rc = s_copy(from, to);
        }
    closedir(store);
    snprintf(to, sizeof to, "%s/curve/public", dir);
    DIR *copy = rc == 0 ? opendir(to) : NULL;
    while (copy && (e = readdir(copy))) {
        snprintf(from, sizeof from, "curve/public/%s", e->d_name);
        if (e->d_name[0] != '.' && access(from, F_OK) != 0) {
            snprintf(to, sizeof to, "%s/curve/public/%s", dir, e->d_name);
            unlink(to);
        }
    }
    if (copy)
        closedir(copy);
    return rc;
}

/* Every view: the table's, and one per agent host certificate in curve/. */
static int s_views_write(void)
{
    for (size_t i = 0; i < sizeof s_views / sizeof s_views[0]; i++)
        if (s_view(s_views[i].name, s_views[i].curve, s_views[i].files) != 0)
            return -1;
    DIR *curve = opendir("curve");
    if (!curve) {
        fprintf(stderr, "berth-secrets: cannot read curve: %s\n", strerror(errno));
        return -1;
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(curve))) {
        size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, "agent-", 6) != 0 || len < 5 || len > 70 ||
            strcmp(e->d_name + len - 4, ".key") != 0)
            continue;
        char name[72];
        snprintf(name, sizeof name, "%.*s", (int)(len - 4), e->d_name);
        rc = s_view(name, 1, NULL);
    }
    closedir(curve);
    if (rc == 0)
        printf("%-24s %-8s %s\n", "views/", "written",
               "one directory per process, only what it reads (its secrets_dir)");
    return rc;
}

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
    if (gnutls_global_init() < 0) {
        fprintf(stderr, "berth-secrets: GnuTLS failed to initialise\n");
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
    return s_views_write() == 0 ? 0 : 1;
}
