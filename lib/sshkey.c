/*  sshkey: OpenSSH public key lines, checked and fingerprinted.

    The blob is the key in the SSH wire format (RFC 4253 6.6): a sequence of strings, each a
    32-bit big-endian length and its bytes. Every key starts with its type name; what follows
    depends on the type (RFC 8709 for Ed25519, RFC 5656 for ECDSA). A line whose blob is not
    such a key is refused here, so a user learns at once that what was pasted is not a key,
    not when the guest ignores it. */
#include "sshkey.h"

#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define S_BLOB_MAX 8192 /* a 16384-bit RSA key's blob is about 2 KB */

/* The types accepted, with what the rest of their blob must hold. */
typedef struct {
    const char *name;
    const char *curve;  /* ECDSA: the curve the blob names */
    size_t point_bytes; /* ECDSA: size of the uncompressed point; Ed25519: of the key */
} s_type_t;

static const s_type_t s_types[] = {
    { "ssh-ed25519", NULL, 32 },
    { "ssh-rsa", NULL, 0 },
    { "ecdsa-sha2-nistp256", "nistp256", 65 },
    { "ecdsa-sha2-nistp384", "nistp384", 97 },
    { "ecdsa-sha2-nistp521", "nistp521", 133 },
};

/* The next string of the blob at *pos: 0 with *at and *len, -1 when the blob ends first. */
static int s_string(const uint8_t *blob, size_t size, size_t *pos, const uint8_t **at, size_t *len)
{
    if (size - *pos < 4)
        return -1;
    const uint8_t *p = blob + *pos;
    uint32_t n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    if (n > size - *pos - 4)
        return -1;
    *at = p + 4;
    *len = n;
    *pos += 4 + (size_t)n;
    return 0;
}

static int s_string_is(const uint8_t *at, size_t len, const char *text)
{
    return len == strlen(text) && memcmp(at, text, len) == 0;
}

/* Does the blob hold a key of type t? NULL if so, else what is wrong. */
static const char *s_blob_problem(const s_type_t *t, const uint8_t *blob, size_t size)
{
    size_t pos = 0, len;
    const uint8_t *at;
    if (s_string(blob, size, &pos, &at, &len) != 0)
        return "public_key's base64 does not hold an SSH key";
    if (!s_string_is(at, len, t->name))
        return "public_key's base64 holds a key of another type than the one written before it";
    if (t->curve) {
        const uint8_t *point;
        size_t point_len;
        if (s_string(blob, size, &pos, &at, &len) != 0 || !s_string_is(at, len, t->curve) ||
            s_string(blob, size, &pos, &point, &point_len) != 0 || point_len != t->point_bytes ||
            point[0] != 0x04)
            return "public_key's ECDSA key is not a point of its curve";
    } else if (t->point_bytes) {
        if (s_string(blob, size, &pos, &at, &len) != 0 || len != t->point_bytes)
            return "public_key's Ed25519 key is not 32 bytes";
    } else {
        const uint8_t *n;
        size_t n_len;
        if (s_string(blob, size, &pos, &at, &len) != 0 || len == 0 ||
            s_string(blob, size, &pos, &n, &n_len) != 0)
            return "public_key's RSA key lacks its exponent or modulus";
        while (n_len && *n == 0) {
            n++;
            n_len--;
        }
        if (n_len < 128)
            return "public_key's RSA key is shorter than 1024 bits";
    }
    if (pos != size)
        return "public_key's base64 holds more than one key";
    return NULL;
}

static int s_blank(char c)
{
    return c == ' ' || c == '\t';
}

int sshkey_parse(const char *text, size_t max, sshkey_t *out, size_t *start, const char **why)
{
    size_t len = strnlen(text, max + 1);
    if (len > max) {
        *why = "public_key is longer than the limit";
        return -1;
    }
    /* Blanks and one line end around the line, as a file written by ssh-keygen has them. */
    size_t from = 0, to = len;
    while (from < to && s_blank(text[from]))
        from++;
    if (to > from && text[to - 1] == '\n')
        to--;
    if (to > from && text[to - 1] == '\r')
        to--;
    while (to > from && s_blank(text[to - 1]))
        to--;
    for (size_t i = from; i < to; i++) {
        unsigned char c = (unsigned char)text[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            *why = "public_key must be one line without control characters (one key at a time)";
            return -1;
        }
    }
    const char *line = text + from;
    size_t line_len = to - from;
    size_t type_len = 0;
    while (type_len < line_len && !s_blank(line[type_len]))
        type_len++;
    const s_type_t *type = NULL;
    for (size_t i = 0; i < sizeof s_types / sizeof *s_types; i++)
        if (type_len == strlen(s_types[i].name) && memcmp(line, s_types[i].name, type_len) == 0)
            type = &s_types[i];
    if (!type) {
        *why = "public_key must start with its type: ssh-ed25519, ssh-rsa or "
               "ecdsa-sha2-nistp256, -nistp384 or -nistp521";
        return -1;
    }
    size_t b64 = type_len;
    while (b64 < line_len && s_blank(line[b64]))
        b64++;
    size_t b64_end = b64;
    while (b64_end < line_len && !s_blank(line[b64_end]))
        b64_end++;
    if (b64_end == b64) {
        *why = "public_key has no key after its type";
        return -1;
    }
    uint8_t blob[S_BLOB_MAX];
    size_t blob_len = 0;
    const char *end = NULL;
    if (sodium_base642bin(blob, sizeof blob, line + b64, b64_end - b64, NULL, &blob_len, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        end != line + b64_end) {
        *why = "public_key's key is not valid base64";
        return -1;
    }
    const char *problem = s_blob_problem(type, blob, blob_len);
    if (problem) {
        *why = problem;
        return -1;
    }
    size_t comment = b64_end;
    while (comment < line_len && s_blank(line[comment]))
        comment++;
    uint8_t digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(digest, blob, blob_len);
    char b64_digest[sodium_base64_ENCODED_LEN(crypto_hash_sha256_BYTES,
                                              sodium_base64_VARIANT_ORIGINAL_NO_PADDING)];
    sodium_bin2base64(b64_digest, sizeof b64_digest, digest, sizeof digest,
                      sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
    snprintf(out->type, sizeof out->type, "%s", type->name);
    snprintf(out->fingerprint, sizeof out->fingerprint, "SHA256:%s", b64_digest);
    out->line_len = line_len;
    out->comment_at = comment;
    *start = from;
    return 0;
}

int sshkey_line_ok(const char *text, size_t max)
{
    sshkey_t key;
    size_t start;
    const char *why;
    return sshkey_parse(text, max, &key, &start, &why) == 0 && start == 0 &&
           key.line_len == strlen(text);
}
