/*  assertion: sign and verify the gateway's user assertions (see assertion.h). The statement
    is signed as the exact bytes that travel, so a verifier checks the signature before it
    parses anything, and nothing a caller changes after signing (user, roles, expiry, the
    action, request or body it was made for) survives verification. */
#include "assertion.h"
#include "util.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct _assertion_t {
    uint8_t public_key[ASSERTION_PUBLIC_LEN];
    uint8_t secret_key[ASSERTION_SECRET_LEN];
    int can_sign; /* secret_key holds a key */
};

assertion_t *assertion_new(const uint8_t public_key[ASSERTION_PUBLIC_LEN],
                           const uint8_t *secret_key)
{
    if (sodium_init() < 0)
        return NULL;
    assertion_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    memcpy(self->public_key, public_key, ASSERTION_PUBLIC_LEN);
    if (secret_key) {
        memcpy(self->secret_key, secret_key, ASSERTION_SECRET_LEN);
        self->can_sign = 1;
    }
    return self;
}

void assertion_destroy(assertion_t **self_p)
{
    if (self_p && *self_p) {
        sodium_memzero((*self_p)->secret_key, ASSERTION_SECRET_LEN);
        free(*self_p);
        *self_p = NULL;
    }
}

/* Read dir/name, a key of len bytes written in hex (berth-secrets), into key. A secret file
   must not be readable by anyone but its owner. 0, or -1 with error set. */
static int s_read_key(const char *dir, const char *name, int secret, uint8_t *key, size_t len,
                      berth_error_t *error)
{
    if (!dir || !*dir)
        return error_set(error, "INTERNAL", "secrets_dir is not set: %s is needed", name);
    char path[1024], text[2 * ASSERTION_SECRET_LEN + 8];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return error_set(error, "INTERNAL", "cannot open %.200s: %s", path, strerror(errno));
    struct stat st;
    if (secret && (fstat(fd, &st) != 0 || (st.st_mode & 077) != 0)) {
        close(fd);
        return error_set(error, "INTERNAL", "%.200s must be readable by its owner only (0600)",
                         path);
    }
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n < 0)
        return error_set(error, "INTERNAL", "cannot read %.200s: %s", path, strerror(errno));
    text[n] = '\0';
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r' || text[n - 1] == ' '))
        text[--n] = '\0';
    size_t got = 0;
    int rc =
        (size_t)n == 2 * len ? sodium_hex2bin(key, len, text, (size_t)n, NULL, &got, NULL) : -1;
    sodium_memzero(text, sizeof text);
    if (rc != 0 || got != len)
        return error_set(error, "INTERNAL", "%.200s does not hold a %zu-byte key in hex", path,
                         len);
    return 0;
}

assertion_t *assertion_signer_new(const char *secrets_dir, berth_error_t *error)
{
    uint8_t pk[ASSERTION_PUBLIC_LEN], sk[ASSERTION_SECRET_LEN], derived[ASSERTION_PUBLIC_LEN];
    if (sodium_init() < 0) {
        error_set(error, "INTERNAL", "libsodium failed to initialise");
        return NULL;
    }
    if (s_read_key(secrets_dir, ASSERTION_PUB_FILE, 0, pk, sizeof pk, error) != 0 ||
        s_read_key(secrets_dir, ASSERTION_KEY_FILE, 1, sk, sizeof sk, error) != 0)
        return NULL;
    assertion_t *self = NULL;
    /* A key pair from two files: a mismatch would sign what no service accepts. */
    if (crypto_sign_ed25519_sk_to_pk(derived, sk) != 0 || memcmp(derived, pk, sizeof pk) != 0)
        error_set(error, "INTERNAL", "%s and %s in %.200s are not one key pair", ASSERTION_KEY_FILE,
                  ASSERTION_PUB_FILE, secrets_dir);
    else if (!(self = assertion_new(pk, sk)))
        error_set(error, "INTERNAL", "out of memory");
    sodium_memzero(sk, sizeof sk);
    return self;
}

assertion_t *assertion_verifier_new(const char *secrets_dir, berth_error_t *error)
{
    uint8_t pk[ASSERTION_PUBLIC_LEN];
    if (s_read_key(secrets_dir, ASSERTION_PUB_FILE, 0, pk, sizeof pk, error) != 0)
        return NULL;
    assertion_t *self = assertion_new(pk, NULL);
    if (!self)
        error_set(error, "INTERNAL", "libsodium failed to initialise");
    return self;
}

Berth__SignedAssertion **assertion_field(ProtobufCMessage *body)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(body->descriptor, "assertion");
    if (!f || f->type != PROTOBUF_C_TYPE_MESSAGE ||
        f->descriptor != &berth__signed_assertion__descriptor)
        return NULL;
    return (Berth__SignedAssertion **)((char *)body + f->offset);
}

int assertion_digest(const ProtobufCMessage *body, uint8_t digest[ASSERTION_DIGEST_LEN])
{
    /* A shallow copy with the field unset: the caller's message is left as it is, and the
       bytes are those the signer packed before it attached the assertion. */
    size_t size = body->descriptor->sizeof_message;
    ProtobufCMessage *copy = malloc(size);
    if (!copy)
        return -1;
    memcpy(copy, body, size);
    Berth__SignedAssertion **field = assertion_field(copy);
    if (field)
        *field = NULL;
    size_t len = protobuf_c_message_get_packed_size(copy);
    uint8_t *packed = malloc(len ? len : 1);
    if (packed) {
        protobuf_c_message_pack(copy, packed);
        crypto_generichash(digest, ASSERTION_DIGEST_LEN, packed, len, NULL, 0);
    }
    free(packed);
    free(copy);
    return packed ? 0 : -1;
}

int assertion_sign(assertion_t *self, const Berth__UserAssertion *claims,
                   const ProtobufCMessage *body, assertion_signed_t *out)
{
    assert(self);
    uint8_t digest[ASSERTION_DIGEST_LEN];
    Berth__UserAssertion bound = *claims;
    bound.body_digest.data = digest;
    bound.body_digest.len = sizeof digest;
    if (!self->can_sign || assertion_digest(body, digest) != 0 ||
        protobuf_c_message_get_packed_size(&bound.base) > ASSERTION_STATEMENT_MAX)
        return -1;
    size_t len = protobuf_c_message_pack(&bound.base, out->statement);
    crypto_sign_detached(out->signature, NULL, out->statement, len, self->secret_key);
    berth__signed_assertion__init(&out->msg);
    out->msg.statement.data = out->statement;
    out->msg.statement.len = len;
    out->msg.signature.data = out->signature;
    out->msg.signature.len = ASSERTION_SIGNATURE_LEN;
    return 0;
}

static int s_refuse(berth_error_t *error, const char *why)
{
    return error_set(error, "UNAUTHENTICATED", "no valid user assertion: %s", why);
}

int assertion_verify(assertion_t *self, const Berth__SignedAssertion *signed_, const char *action,
                     const char *request_id, const ProtobufCMessage *body, int64_t now_ms,
                     Berth__UserAssertion **claims_p, berth_error_t *error)
{
    assert(self);
    if (!signed_)
        return s_refuse(error, "the call carries none");
    if (signed_->signature.len != ASSERTION_SIGNATURE_LEN || signed_->statement.len == 0 ||
        signed_->statement.len > ASSERTION_STATEMENT_MAX)
        return s_refuse(error, "malformed");
    /* The signature first: nothing unsigned is parsed. */
    if (crypto_sign_verify_detached(signed_->signature.data, signed_->statement.data,
                                    signed_->statement.len, self->public_key) != 0)
        return s_refuse(error, "bad signature");
    Berth__UserAssertion *claims =
        berth__user_assertion__unpack(NULL, signed_->statement.len, signed_->statement.data);
    if (!claims)
        return s_refuse(error, "the statement does not parse");
    const char *why = NULL;
    uint8_t digest[ASSERTION_DIGEST_LEN];
    if (!*claims->user)
        why = "it names no user";
    else if (claims->expires_ms <= now_ms)
        why = "expired";
    else if (!action || strcmp(claims->action, action) != 0)
        why = "made for another action";
    else if (strcmp(claims->request_id, request_id ? request_id : "") != 0)
        why = "made for another request";
    else if (!body || assertion_digest(body, digest) != 0)
        why = "the body it came with cannot be read";
    else if (claims->body_digest.len != ASSERTION_DIGEST_LEN ||
             sodium_memcmp(claims->body_digest.data, digest, ASSERTION_DIGEST_LEN) != 0)
        why = "made for another body";
    if (why) {
        berth__user_assertion__free_unpacked(claims, NULL);
        return s_refuse(error, why);
    }
    *claims_p = claims;
    return 0;
}

int assertion_of(assertion_t *self, bus_request_t *request, const Berth__SignedAssertion *signed_,
                 Berth__UserAssertion **claims_p, berth_error_t *error)
{
    const Berth__Envelope *env = bus_request_envelope(request);
    return assertion_verify(self, signed_, env->type, env->request_id, bus_request_parsed(request),
                            util_now_ms(), claims_p, error);
}

int assertion_has_role(const Berth__UserAssertion *claims, const char *role)
{
    for (size_t i = 0; claims && i < claims->n_roles; i++)
        if (strcmp(claims->roles[i], role) == 0)
            return 1;
    return 0;
}

int assertion_has_group_role(const Berth__UserAssertion *claims, const char *group,
                             const char *role)
{
    size_t len = group ? strlen(group) : 0;
    for (size_t i = 0; claims && len && i < claims->n_groups; i++) {
        const char *g = claims->groups[i];
        if (strncmp(g, group, len) == 0 && g[len] == ':' && strcmp(g + len + 1, role) == 0)
            return 1;
    }
    return 0;
}
