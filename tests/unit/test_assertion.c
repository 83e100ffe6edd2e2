/*  test_assertion: the gateway's signed user assertions. One signed with the gateway's key
    verifies and says who, with which roles; a changed byte, an expired one, one signed with
    another key, one made for another action, request or body (a replay), and garbage are all
    refused. Keys are read from a secrets directory as berth-secrets writes them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "assertion.h"
#include "testenv.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define NOW 1700000000000LL

typedef struct {
    uint8_t pk[ASSERTION_PUBLIC_LEN];
    uint8_t sk[ASSERTION_SECRET_LEN];
    assertion_t *signer;
    assertion_t *verifier;
} s_keys_t;

static int s_setup(void **state)
{
    assert_true(sodium_init() >= 0);
    s_keys_t *k = calloc(1, sizeof *k);
    crypto_sign_keypair(k->pk, k->sk);
    k->signer = assertion_new(k->pk, k->sk);
    k->verifier = assertion_new(k->pk, NULL);
    assert_non_null(k->signer);
    assert_non_null(k->verifier);
    *state = k;
    return 0;
}

static int s_teardown(void **state)
{
    s_keys_t *k = *state;
    assertion_destroy(&k->signer);
    assertion_destroy(&k->verifier);
    assertion_destroy(&k->verifier); /* safe twice */
    free(k);
    return 0;
}

/* The body every assertion here is made for: approve request r-1. */
static Berth__DecideRequest s_body = {
    .base = PROTOBUF_C_MESSAGE_INIT(&berth__decide_request__descriptor),
    .id = "r-1",
    .approve = 1,
    .actor = "",
    .reason = "",
};

/* Alice, a user, asking to decide request-1 until NOW + 10 s. */
static void s_sign(assertion_t *signer, assertion_signed_t *out)
{
    Berth__UserAssertion claims = BERTH__USER_ASSERTION__INIT;
    char *roles[] = { "user" };
    claims.user = "alice";
    claims.roles = roles;
    claims.n_roles = 1;
    claims.expires_ms = NOW + 10000;
    claims.issued_ms = NOW;
    claims.request_id = "req-1";
    claims.action = "DecideRequest";
    assert_int_equal(assertion_sign(signer, &claims, &s_body.base, out), 0);
}

static int s_verify(assertion_t *verifier, const Berth__SignedAssertion *signed_,
                    berth_error_t *error)
{
    Berth__UserAssertion *claims = NULL;
    int rc = assertion_verify(verifier, signed_, "DecideRequest", "req-1", &s_body.base, NOW,
                              &claims, error);
    if (rc == 0)
        berth__user_assertion__free_unpacked(claims, NULL);
    else
        assert_null(claims);
    return rc;
}

static void test_good_one_verifies(void **state)
{
    s_keys_t *k = *state;
    assertion_signed_t signed_;
    s_sign(k->signer, &signed_);
    Berth__UserAssertion *claims = NULL;
    berth_error_t error = { 0 };
    assert_int_equal(assertion_verify(k->verifier, &signed_.msg, "DecideRequest", "req-1",
                                      &s_body.base, NOW, &claims, &error),
                     0);
    assert_string_equal(claims->user, "alice");
    assert_true(assertion_has_role(claims, "user"));
    assert_false(assertion_has_role(claims, "admin"));
    assert_int_equal(claims->n_groups, 0);
    berth__user_assertion__free_unpacked(claims, NULL);

    /* Group roles: "<group id>:<role>", matched whole (no prefix of a group or role). */
    char *groups[] = { "g1:manager", "g22:auditor" };
    Berth__UserAssertion g = BERTH__USER_ASSERTION__INIT;
    g.groups = groups;
    g.n_groups = 2;
    assert_true(assertion_has_group_role(&g, "g1", "manager"));
    assert_false(assertion_has_group_role(&g, "g2", "auditor"));
    assert_false(assertion_has_group_role(&g, "g22", "audit"));
    assert_false(assertion_has_group_role(&g, "g1", "member"));
    assert_false(assertion_has_group_role(&g, "", "manager"));
    assert_false(assertion_has_group_role(&g, NULL, "manager"));

    /* It survives the wire: packed inside a body and unpacked on the other side. */
    Berth__DecideRequest msg = s_body;
    msg.assertion = &signed_.msg;
    uint8_t buf[2048];
    size_t len = berth__decide_request__pack(&msg, buf);
    Berth__DecideRequest *back = berth__decide_request__unpack(NULL, len, buf);
    assert_non_null(back);
    assert_int_equal(assertion_verify(k->verifier, back->assertion, "DecideRequest", "req-1",
                                      &back->base, NOW, &claims, &error),
                     0);
    berth__user_assertion__free_unpacked(claims, NULL);
    berth__decide_request__free_unpacked(back, NULL);
}

static void test_changed_byte_refused(void **state)
{
    s_keys_t *k = *state;
    berth_error_t error = { 0 };
    assertion_signed_t signed_;
    s_sign(k->signer, &signed_);
    /* Every byte of the statement and of the signature matters. */
    for (size_t i = 0; i < signed_.msg.statement.len; i++) {
        signed_.statement[i] ^= 0x01;
        assert_int_equal(s_verify(k->verifier, &signed_.msg, &error), -1);
        assert_string_equal(error.code, "UNAUTHENTICATED");
        signed_.statement[i] ^= 0x01;
    }
    for (size_t i = 0; i < ASSERTION_SIGNATURE_LEN; i++) {
        signed_.signature[i] ^= 0x80;
        assert_int_equal(s_verify(k->verifier, &signed_.msg, &error), -1);
        signed_.signature[i] ^= 0x80;
    }
    assert_int_equal(s_verify(k->verifier, &signed_.msg, &error), 0);
}

static void test_expired_refused(void **state)
{
    s_keys_t *k = *state;
    assertion_signed_t signed_;
    s_sign(k->signer, &signed_);
    Berth__UserAssertion *claims = NULL;
    berth_error_t error = { 0 };
    assert_int_equal(assertion_verify(k->verifier, &signed_.msg, "DecideRequest", "req-1",
                                      &s_body.base, NOW + 10000, &claims, &error),
                     -1);
    assert_string_equal(error.code, "UNAUTHENTICATED");
    assert_non_null(strstr(error.message, "expired"));
    assert_int_equal(assertion_verify(k->verifier, &signed_.msg, "DecideRequest", "req-1",
                                      &s_body.base, NOW + 9999, &claims, &error),
                     0);
    berth__user_assertion__free_unpacked(claims, NULL);
}

static void test_wrong_key_refused(void **state)
{
    s_keys_t *k = *state;
    uint8_t pk[ASSERTION_PUBLIC_LEN], sk[ASSERTION_SECRET_LEN];
    crypto_sign_keypair(pk, sk);
    assertion_t *other = assertion_new(pk, sk);
    assertion_signed_t signed_;
    s_sign(other, &signed_); /* self-made: a key the services do not know */
    berth_error_t error = { 0 };
    assert_int_equal(s_verify(k->verifier, &signed_.msg, &error), -1);
    assert_non_null(strstr(error.message, "signature"));
    /* A verifier cannot sign. */
    assert_int_equal(assertion_sign(k->verifier, &(Berth__UserAssertion)BERTH__USER_ASSERTION__INIT,
                                    &s_body.base, &signed_),
                     -1);
    assertion_destroy(&other);
}

static void test_other_action_or_request_refused(void **state)
{
    s_keys_t *k = *state;
    assertion_signed_t signed_;
    s_sign(k->signer, &signed_);
    Berth__UserAssertion *claims = NULL;
    berth_error_t error = { 0 };
    assert_int_equal(assertion_verify(k->verifier, &signed_.msg, "DisposeVm", "req-1", &s_body.base,
                                      NOW, &claims, &error),
                     -1);
    assert_non_null(strstr(error.message, "action"));
    assert_int_equal(assertion_verify(k->verifier, &signed_.msg, "DecideRequest", "req-2",
                                      &s_body.base, NOW, &claims, &error),
                     -1);
    assert_non_null(strstr(error.message, "request"));
    assert_int_equal(assertion_verify(k->verifier, &signed_.msg, "DecideRequest", NULL,
                                      &s_body.base, NOW, &claims, &error),
                     -1);
}

/* A genuine assertion replayed on another body: every field of the call is bound, the
   assertion field itself excepted (the body is hashed with it unset). */
static void test_other_body_refused(void **state)
{
    s_keys_t *k = *state;
    assertion_signed_t signed_;
    s_sign(k->signer, &signed_);
    Berth__UserAssertion *claims = NULL;
    berth_error_t error = { 0 };
    Berth__DecideRequest other = s_body;
    other.id = "r-2"; /* approve another request with it */
    assert_int_equal(assertion_verify(k->verifier, &signed_.msg, "DecideRequest", "req-1",
                                      &other.base, NOW, &claims, &error),
                     -1);
    assert_string_equal(error.code, "UNAUTHENTICATED");
    assert_non_null(strstr(error.message, "another body"));
    other = s_body;
    other.approve = 0; /* reject instead */
    assert_int_equal(assertion_verify(k->verifier, &signed_.msg, "DecideRequest", "req-1",
                                      &other.base, NOW, &claims, &error),
                     -1);
    other = s_body;
    other.actor = "bob"; /* a field the service ignores is bound too */
    assert_int_equal(assertion_verify(k->verifier, &signed_.msg, "DecideRequest", "req-1",
                                      &other.base, NOW, &claims, &error),
                     -1);
    assert_int_equal(assertion_verify(k->verifier, &signed_.msg, "DecideRequest", "req-1", NULL,
                                      NOW, &claims, &error),
                     -1);
    /* The body it was made for, carrying it or not, verifies. */
    other = s_body;
    other.assertion = &signed_.msg;
    assert_int_equal(assertion_verify(k->verifier, &signed_.msg, "DecideRequest", "req-1",
                                      &other.base, NOW, &claims, &error),
                     0);
    berth__user_assertion__free_unpacked(claims, NULL);
    uint8_t a[ASSERTION_DIGEST_LEN], b[ASSERTION_DIGEST_LEN];
    assert_int_equal(assertion_digest(&s_body.base, a), 0);
    assert_int_equal(assertion_digest(&other.base, b), 0);
    assert_memory_equal(a, b, sizeof a);
    assert_ptr_equal(other.assertion, &signed_.msg); /* the caller's body is left as it was */
}

static void test_garbage_refused(void **state)
{
    s_keys_t *k = *state;
    berth_error_t error = { 0 };
    assert_int_equal(s_verify(k->verifier, NULL, &error), -1);
    assert_string_equal(error.code, "UNAUTHENTICATED");
    Berth__SignedAssertion empty = BERTH__SIGNED_ASSERTION__INIT;
    assert_int_equal(s_verify(k->verifier, &empty, &error), -1);
    uint8_t junk[ASSERTION_STATEMENT_MAX + 1], sig[ASSERTION_SIGNATURE_LEN];
    randombytes_buf(junk, sizeof junk);
    randombytes_buf(sig, sizeof sig);
    Berth__SignedAssertion garbage = BERTH__SIGNED_ASSERTION__INIT;
    garbage.statement.data = junk;
    garbage.signature.data = sig;
    for (size_t len = 1; len <= sizeof junk; len += 97) {
        garbage.statement.len = len;
        garbage.signature.len = sizeof sig;
        assert_int_equal(s_verify(k->verifier, &garbage, &error), -1);
        garbage.signature.len = sizeof sig - 1;
        assert_int_equal(s_verify(k->verifier, &garbage, &error), -1);
    }
    /* Signed garbage (a statement that is not a UserAssertion) is refused too. */
    uint8_t sk[ASSERTION_SECRET_LEN];
    memcpy(sk, k->sk, sizeof sk);
    junk[0] = 0xff;
    crypto_sign_detached(sig, NULL, junk, 40, sk);
    garbage.statement.len = 40;
    garbage.signature.len = sizeof sig;
    assert_int_equal(s_verify(k->verifier, &garbage, &error), -1);
    /* And a signed statement that names no user. */
    Berth__UserAssertion nobody = BERTH__USER_ASSERTION__INIT;
    nobody.expires_ms = NOW + 1000;
    nobody.action = "DecideRequest";
    nobody.request_id = "req-1";
    assertion_signed_t signed_;
    assert_int_equal(assertion_sign(k->signer, &nobody, &s_body.base, &signed_), 0);
    assert_int_equal(s_verify(k->verifier, &signed_.msg, &error), -1);
}

/* Keys read from a secrets directory as berth-secrets writes them (hex, the secret 0600). */
static void test_keys_from_secrets_dir(void **state)
{
    s_keys_t *k = *state;
    char *dir = testenv_tmpdir();
    assert_non_null(dir);
    berth_error_t error = { 0 };
    assert_null(assertion_verifier_new(dir, &error)); /* nothing there yet */
    assert_non_null(strstr(error.message, ASSERTION_PUB_FILE));
    assert_null(assertion_verifier_new(NULL, &error));

    char pk_hex[2 * ASSERTION_PUBLIC_LEN + 2], sk_hex[2 * ASSERTION_SECRET_LEN + 2];
    sodium_bin2hex(pk_hex, sizeof pk_hex - 1, k->pk, sizeof k->pk);
    sodium_bin2hex(sk_hex, sizeof sk_hex - 1, k->sk, sizeof k->sk);
    strcat(pk_hex, "\n");
    char *pub = testenv_write_file(dir, ASSERTION_PUB_FILE, pk_hex);
    char *key = testenv_write_file(dir, ASSERTION_KEY_FILE, sk_hex);
    assert_int_equal(chmod(key, 0644), 0);
    assert_null(assertion_signer_new(dir, &error)); /* a secret others may read is refused */
    assert_non_null(strstr(error.message, "0600"));
    assert_int_equal(chmod(key, 0600), 0);

    assertion_t *signer = assertion_signer_new(dir, &error);
    assertion_t *verifier = assertion_verifier_new(dir, &error);
    assert_non_null(signer);
    assert_non_null(verifier);
    assertion_signed_t signed_;
    s_sign(signer, &signed_);
    assert_int_equal(s_verify(verifier, &signed_.msg, &error), 0);
    assert_int_equal(s_verify(k->verifier, &signed_.msg, &error), 0);
    assertion_destroy(&signer);
    assertion_destroy(&verifier);

    /* A public key that is not the secret key's half, and a truncated key, are refused. */
    uint8_t other_pk[ASSERTION_PUBLIC_LEN], other_sk[ASSERTION_SECRET_LEN];
    crypto_sign_keypair(other_pk, other_sk);
    sodium_bin2hex(pk_hex, sizeof pk_hex - 1, other_pk, sizeof other_pk);
    free(testenv_write_file(dir, ASSERTION_PUB_FILE, pk_hex));
    assert_null(assertion_signer_new(dir, &error));
    assert_non_null(strstr(error.message, "key pair"));
    pk_hex[10] = '\0';
    free(testenv_write_file(dir, ASSERTION_PUB_FILE, pk_hex));
    assert_null(assertion_verifier_new(dir, &error));
    free(testenv_write_file(dir, ASSERTION_PUB_FILE, "zz"));
    assert_null(assertion_verifier_new(dir, &error));

    free(pub);
    free(key);
    testenv_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_one_verifies),
        cmocka_unit_test(test_changed_byte_refused),
        cmocka_unit_test(test_expired_refused),
        cmocka_unit_test(test_wrong_key_refused),
        cmocka_unit_test(test_other_action_or_request_refused),
        cmocka_unit_test(test_other_body_refused),
        cmocka_unit_test(test_garbage_refused),
        cmocka_unit_test(test_keys_from_secrets_dir),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
