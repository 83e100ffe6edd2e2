/*  test_error: the one error type. Every code of the table reads as its HTTP status, an
    unknown code as 500; details are kept, replaced and bounded; and an error with details
    crosses the bus (envelope) unchanged. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "envelope.h"
#include "error.h"

#include <stdio.h>
#include <string.h>

/* The mapping as the API documents it (docs/openapi.yaml, responses). */
static void test_every_code_maps_to_its_status(void **state)
{
    (void)state;
    static const struct {
        const char *code;
        int status;
    } want[] = {
        { "BAD_REQUEST", 400 },
        { "UNAUTHORIZED", 401 },
        { "FORBIDDEN", 403 },
        { "NOT_FOUND", 404 },
        { "METHOD_NOT_ALLOWED", 405 },
        { "CONFLICT", 409 },
        { "NO_VALID_HOST", 409 },
        { "PAYLOAD_TOO_LARGE", 413 },
        { "UNSUPPORTED_MEDIA_TYPE", 415 },
        { "QUOTA_EXCEEDED", 403 },
        { "BUDGET_EXCEEDED", 403 },
        { "IDEMPOTENCY_KEY_REUSED", 422 },
        { "BUILD_REFUSED", 422 },
        { "RATE_LIMITED", 429 },
        { "INTERNAL", 500 },
        { "BAD_FRAME", 500 },
        { "UNKNOWN_TYPE", 500 },
        { "UNAVAILABLE", 503 },
        { "WRONG_SERVICE", 503 },
        { "UNAUTHENTICATED", 500 },
    };
    size_t n = sizeof want / sizeof want[0];
    for (size_t i = 0; i < n; i++) {
        assert_true(error_code_known(want[i].code));
        assert_int_equal(error_http_status(want[i].code), want[i].status);
    }
    /* The table has exactly these rows, each code once, each with a meaning. */
    size_t rows = 0;
    for (const error_code_t *c = error_codes; c->code; c++, rows++) {
        assert_non_null(c->meaning);
        assert_true(strlen(c->code) < ERROR_CODE_MAX);
        for (const error_code_t *d = c + 1; d->code; d++)
            assert_string_not_equal(c->code, d->code);
    }
    assert_int_equal(rows, n);
}

static void test_unknown_code_is_500(void **state)
{
    (void)state;
    assert_false(error_code_known("SOMETHING_NEW"));
    assert_int_equal(error_http_status("SOMETHING_NEW"), 500);
    assert_int_equal(error_http_status(""), 500);
    assert_int_equal(error_http_status(NULL), 500);
    assert_false(error_code_known("bad_request")); /* codes are upper case, exactly */
}

static void test_set_detail_and_field(void **state)
{
    (void)state;
    berth_error_t e;
    memset(&e, 0xAA, sizeof e);
    assert_int_equal(error_set(&e, "CONFLICT", "vm '%s' is %s", "web-1", "ACTIVE"), -1);
    assert_string_equal(e.code, "CONFLICT");
    assert_string_equal(e.message, "vm 'web-1' is ACTIVE");
    assert_int_equal(e.n_details, 0);
    assert_int_equal(error_detail(&e, "ram", "%d", 3), -1);
    assert_int_equal(error_detail(&e, "disk", "%d", 1), -1);
    assert_int_equal(error_detail(&e, "ram", "%d", 4), -1); /* replaced, not added */
    assert_int_equal(e.n_details, 2);
    assert_string_equal(error_detail_get(&e, "ram"), "4");
    assert_string_equal(error_detail_get(&e, "disk"), "1");
    assert_null(error_detail_get(&e, "vcpus"));
    /* A new error forgets the details of the last one. */
    assert_int_equal(error_field(&e, "count", "count must be between 1 and %d", 50), -1);
    assert_string_equal(e.code, "BAD_REQUEST");
    assert_string_equal(e.message, "count must be between 1 and 50");
    assert_int_equal(e.n_details, 1);
    assert_string_equal(error_detail_get(&e, "field"), "count");
    /* NULL is accepted (a caller that does not want the reason). */
    assert_int_equal(error_set(NULL, "INTERNAL", "x"), -1);
    assert_int_equal(error_detail(NULL, "k", "v"), -1);
    assert_int_equal(error_field(NULL, "f", "m"), -1);
}

static void test_bounds(void **state)
{
    (void)state;
    berth_error_t e;
    char long_text[1000];
    memset(long_text, 'x', sizeof long_text - 1);
    long_text[sizeof long_text - 1] = '\0';
    error_set(&e, "BAD_REQUEST", "%s", long_text);
    assert_int_equal(strlen(e.message), ERROR_MESSAGE_MAX - 1);
    for (int i = 0; i < ERROR_DETAILS_MAX + 5; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        error_detail(&e, key, "%s", long_text);
    }
    assert_int_equal(e.n_details, ERROR_DETAILS_MAX);
    assert_int_equal(strlen(e.details[0].value), ERROR_VALUE_MAX - 1);
    char past[16];
    snprintf(past, sizeof past, "k%d", ERROR_DETAILS_MAX);
    assert_null(error_detail_get(&e, past));
}

/* An error with details packed into an envelope comes out of it the same. */
static void test_details_cross_the_bus(void **state)
{
    (void)state;
    berth_error_t sent;
    error_set(&sent, "NO_VALID_HOST", "no valid host: 3 hosts");
    error_detail(&sent, "ram", "%d", 2);
    error_detail(&sent, "state", "%d", 1);
    envelope_spec_t spec = { .message_id = "m-1", .correlation_id = "c-1", .error = &sent };
    zframe_t *frame = envelope_pack(&spec);
    assert_non_null(frame);
    const char *reason = NULL;
    Berth__Envelope *env = envelope_unpack(zframe_data(frame), zframe_size(frame), &reason);
    assert_non_null(env);
    assert_string_equal(env->type, "Error");
    assert_non_null(env->error);
    berth_error_t got;
    error_from_proto(&got, env->error);
    assert_string_equal(got.code, "NO_VALID_HOST");
    assert_string_equal(got.message, "no valid host: 3 hosts");
    assert_int_equal(got.n_details, 2);
    assert_string_equal(error_detail_get(&got, "ram"), "2");
    assert_string_equal(error_detail_get(&got, "state"), "1");
    berth__envelope__free_unpacked(env, NULL);
    zframe_destroy(&frame);
}

/* What a foreign or broken service may send: no code, no message, odd details. */
static void test_from_proto_copes_with_garbage(void **state)
{
    (void)state;
    Berth__Error proto = BERTH__ERROR__INIT;
    Berth__Error__DetailsEntry empty_key = BERTH__ERROR__DETAILS_ENTRY__INIT;
    Berth__Error__DetailsEntry ok = BERTH__ERROR__DETAILS_ENTRY__INIT;
    ok.key = "field";
    ok.value = "name";
    Berth__Error__DetailsEntry *details[] = { &empty_key, &ok };
    proto.details = details;
    proto.n_details = 2;
    berth_error_t got;
    error_from_proto(&got, &proto);
    assert_string_equal(got.code, "INTERNAL");
    assert_true(strlen(got.message) > 0);
    assert_int_equal(got.n_details, 1);
    assert_string_equal(error_detail_get(&got, "field"), "name");
    error_from_proto(&got, NULL);
    assert_string_equal(got.code, "INTERNAL");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_code_maps_to_its_status),
        cmocka_unit_test(test_unknown_code_is_500),
        cmocka_unit_test(test_set_detail_and_field),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_details_cross_the_bus),
        cmocka_unit_test(test_from_proto_copes_with_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
