/*  berth-secrets: create the platform's secrets in one directory, keeping every one that
    already exists. `make run`, the integration tests and compose's init step run it before
    any service starts; each service reads what it needs from that directory (the setting
    secrets_dir). Each kind of secret is one row of the table below: its file names and the
    function that makes it. Files holding a secret are mode 0600, the directory 0700.

        berth-secrets DIR        create what is missing, list what DIR holds */

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

static const struct {
    const char *file; /* present means this kind is already made */
    s_make_fn *make;
    const char *what;
} s_kinds[] = {
    { "token.secret", s_token_secret, "gateway: HMAC key of tokens and sessions" },
    { "assertion.key", s_assertion_keys, "gateway: signs user assertions (assertion.pub checks)" },
};

int main(int argc, char **argv)
{
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: berth-secrets DIR\n");
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
    return 0;
}
