/*  assertion: the gateway's signed statement of who a bus call acts for (proto UserAssertion
    inside a SignedAssertion). Only the gateway holds the Ed25519 secret key (assertion.key in
    secrets_dir, made by berth-secrets) and signs one for every call it makes for an HTTP
    request; a service that decides on a user's behalf verifies it with the public key
    (assertion.pub) and takes the user and roles from it, never from a field of the body. */
#ifndef BERTH_ASSERTION_H
#define BERTH_ASSERTION_H

#include "berth.pb-c.h"
#include "bus_server.h"
#include "error.h"

#include <stdint.h>

#define ASSERTION_KEY_FILE      "assertion.key" /* hex secret key: the gateway only, 0600 */
#define ASSERTION_PUB_FILE      "assertion.pub" /* hex public key: every service */
#define ASSERTION_STATEMENT_MAX 1024            /* largest serialized UserAssertion */
#define ASSERTION_SIGNATURE_LEN 64              /* crypto_sign_BYTES */
#define ASSERTION_PUBLIC_LEN    32              /* crypto_sign_PUBLICKEYBYTES */
#define ASSERTION_SECRET_LEN    64              /* crypto_sign_SECRETKEYBYTES */
#define ASSERTION_SLACK_MS      5000 /* an assertion outlives its call's deadline by this */
#define ASSERTION_DIGEST_LEN    32   /* crypto_generichash BLAKE2b-256 of the body */

typedef struct _assertion_t assertion_t;

/* The gateway's signer, from secrets_dir's key pair. NULL with error set (the file and the
   reason) when a key is missing or malformed. */
assertion_t *assertion_signer_new(const char *secrets_dir, berth_error_t *error);

/* A verifier (every other service), from secrets_dir's public key. NULL with error set. */
assertion_t *assertion_verifier_new(const char *secrets_dir, berth_error_t *error);

/* From raw keys: secret_key may be NULL (a verifier). NULL if libsodium cannot start. */
assertion_t *assertion_new(const uint8_t public_key[ASSERTION_PUBLIC_LEN],
                           const uint8_t *secret_key);
void assertion_destroy(assertion_t **self_p);

/* A signed assertion with the bytes its message points to. Filled in place by
   assertion_sign; never copied (msg points into the struct itself). */
typedef struct {
    Berth__SignedAssertion msg;
    uint8_t statement[ASSERTION_STATEMENT_MAX];
    uint8_t signature[ASSERTION_SIGNATURE_LEN];
} assertion_signed_t;

/* The body's `assertion` field (a SignedAssertion), or NULL when its message has none. */
Berth__SignedAssertion **assertion_field(ProtobufCMessage *body);

/* The digest an assertion binds: BLAKE2b-256 of body packed with its assertion field unset,
   so the signature covers every other field of the call. 0, or -1 out of memory. */
int assertion_digest(const ProtobufCMessage *body, uint8_t digest[ASSERTION_DIGEST_LEN]);

/* Sign claims, bound to body (its digest replaces claims' body_digest), into out. 0, or -1
   when self holds no secret key, claims do not fit, or out of memory. */
int assertion_sign(assertion_t *self, const Berth__UserAssertion *claims,
                   const ProtobufCMessage *body, assertion_signed_t *out);

/* Check a received assertion: a valid signature by the gateway's key, not expired at now_ms,
   made for this action (the envelope's type), request id (the envelope's request_id) and
   body (the message it came in: a genuine assertion moved to another body is refused).
   0 and *claims_p (free with berth__user_assertion__free_unpacked), or -1 with error
   UNAUTHENTICATED saying why. signed_ may be NULL (no assertion: refused). */
int assertion_verify(assertion_t *self, const Berth__SignedAssertion *signed_, const char *action,
                     const char *request_id, const ProtobufCMessage *body, int64_t now_ms,
                     Berth__UserAssertion **claims_p, berth_error_t *error);

/* The same for a request being handled, whose body the handler has parsed: action and
   request id from its envelope, the body from bus_request_body, now from the clock. */
int assertion_of(assertion_t *self, bus_request_t *request, const Berth__SignedAssertion *signed_,
                 Berth__UserAssertion **claims_p, berth_error_t *error);

/* Does the asserted user hold role? */
int assertion_has_role(const Berth__UserAssertion *claims, const char *role);
/* Does the asserted user hold role in group (from the "<group id>:<role>" claims)? */
int assertion_has_group_role(const Berth__UserAssertion *claims, const char *group,
                             const char *role);

#endif
