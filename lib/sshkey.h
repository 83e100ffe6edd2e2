/*  sshkey: OpenSSH public key lines ("ssh-ed25519 AAAA... comment") as users give them: checked
    down to the key inside the base64 blob, and fingerprinted as ssh-keygen -l prints it. The
    gateway checks what a user stores; the stager checks again each line it writes into a
    seed's user-data. */
#ifndef BERTH_SSHKEY_H
#define BERTH_SSHKEY_H

#include <stddef.h>

#define SSHKEY_TYPE_MAX        32 /* "ecdsa-sha2-nistp521" and its NUL, with room */
#define SSHKEY_FINGERPRINT_MAX 51 /* "SHA256:" + 43 base64 characters + NUL */

/* A parsed key line: borrowed views into a copy the caller keeps. */
typedef struct {
    char type[SSHKEY_TYPE_MAX];               /* ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256... */
    char fingerprint[SSHKEY_FINGERPRINT_MAX]; /* "SHA256:" + unpadded base64 of the blob's hash */
    size_t line_len;                          /* the line without surrounding blanks */
    size_t comment_at;                        /* offset of the comment in line (line_len: none) */
} sshkey_t;

/* Parse text (at most max bytes, blanks and one line end around it allowed) as one OpenSSH
   public key line: a type among ssh-ed25519, ssh-rsa and ecdsa-sha2-nistp256/384/521, then
   the base64 blob, which must decode to a key of that type (the type string it embeds equal
   to the one written, then the key's parts: a 32-byte Ed25519 key; an RSA exponent and a
   modulus of 1024 bits or more; the curve named by the type and an uncompressed point of its
   size), then an optional comment without control characters. 0 with *out (text + *start is
   the line with its blanks cut), or -1 with *why (static: what is wrong, for the user). */
int sshkey_parse(const char *text, size_t max, sshkey_t *out, size_t *start, const char **why);

/* 1 if text is exactly a key line sshkey_parse() accepts, with nothing around it: what may be
   written into a seed's user-data. */
int sshkey_line_ok(const char *text, size_t max);

#endif
