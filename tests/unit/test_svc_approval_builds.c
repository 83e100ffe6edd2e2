/*  test_svc_approval_builds: how a refused custom build's verdict becomes the details of its
    BUILD_REFUSED error (services/approval/builds.c): the rules broken, each once and with
    why, the first rule's field, the suggestions as sentences and as values by kind, the image;
    and which CreateRequests need the scheduler's verdict. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../services/approval/builds.h"

#include <string.h>

static void test_details(void **state)
{
    (void)state;
    Berth__BuildRule r1 = BERTH__BUILD_RULE__INIT, r2 = BERTH__BUILD_RULE__INIT,
                     r3 = BERTH__BUILD_RULE__INIT;
    r1.rule = "applications";
    r1.field = "applications";
    r1.message = "application x has no build for debian 12";
    r2.rule = "ram";
    r2.field = "ram_mb";
    r2.message = "ram_mb 512 is below 986";
    r3.rule = "applications";
    r3.field = "applications";
    r3.message = "application y has no build for debian 12";
    Berth__BuildRule *rules[] = { &r1, &r2, &r3 };
    Berth__BuildSuggestion s1 = BERTH__BUILD_SUGGESTION__INIT, s2 = BERTH__BUILD_SUGGESTION__INIT,
                           s3 = BERTH__BUILD_SUGGESTION__INIT;
    s1.kind = "drop_application";
    s1.value = "x";
    s1.message = "drop application x";
    s2.kind = "drop_application";
    s2.value = "y";
    s2.message = "drop application y";
    s3.kind = "ram_mb";
    s3.value = "986";
    s3.message = "raise RAM to 986 MB";
    Berth__BuildSuggestion *suggestions[] = { &s1, &s2, &s3 };
    Berth__Image image = BERTH__IMAGE__INIT;
    image.name = "db";
    Berth__BuildVerdict v = BERTH__BUILD_VERDICT__INIT;
    v.violations = rules;
    v.n_violations = 3;
    v.suggestions = suggestions;
    v.n_suggestions = 3;
    v.image = &image;
    fault_t fault = { 0 };
    error_set(&fault, "BUILD_REFUSED", "the machine asked for cannot work");
    builds_details(&fault, &v);
    assert_string_equal(error_detail_get(&fault, "field"), "applications");
    assert_string_equal(error_detail_get(&fault, "rules"), "applications,ram");
    assert_string_equal(error_detail_get(&fault, "applications"),
                        "application x has no build for debian 12; application y has no build "
                        "for debian 12");
    assert_string_equal(error_detail_get(&fault, "ram"), "ram_mb 512 is below 986");
    assert_string_equal(error_detail_get(&fault, "suggest.drop_application"), "x,y");
    assert_string_equal(error_detail_get(&fault, "suggest.ram_mb"), "986");
    assert_string_equal(error_detail_get(&fault, "suggestions"),
                        "drop application x; drop application y; raise RAM to 986 MB");
    assert_string_equal(error_detail_get(&fault, "image"), "db");
}

static void test_wanted(void **state)
{
    (void)state;
    Berth__CreateRequest msg = BERTH__CREATE_REQUEST__INIT;
    msg.template_ = "small";
    assert_false(builds_wanted(&msg));
    msg.validate_only = 1;
    assert_true(builds_wanted(&msg));
    msg.validate_only = 0;
    msg.ram_mb = 1024;
    assert_true(builds_wanted(&msg)); /* then refused: a template and a size */
    msg.ram_mb = 0;
    msg.os = "debian";
    assert_true(builds_wanted(&msg));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_details),
        cmocka_unit_test(test_wanted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
