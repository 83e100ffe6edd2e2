/*  util: ids and numbers from the outside world are read strictly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "util.h"

static void test_is_uuid(void **state)
{
    (void)state;
    char id[UTIL_ID_LEN];
    util_uuid(id);
    assert_true(util_is_uuid(id));
    assert_true(util_is_uuid("3f2b8c1e-6a4d-4f0e-9b7a-1c2d3e4f5a6b"));
    const char *bad[] = { NULL,
                          "",
                          "3F2B8C1E-6A4D-4F0E-9B7A-1C2D3E4F5A6B", /* not the stored spelling */
                          "3f2b8c1e-6a4d-4f0e-9b7a-1c2d3e4f5a6",  /* short */
                          "3f2b8c1e-6a4d-4f0e-9b7a-1c2d3e4f5a6bb",
                          "3f2b8c1e6a4d-4f0e-9b7a-1c2d3e4f5a6b0", /* dash misplaced */
                          "3f2b8c1e-6a4d-4f0e-9b7a-1c2d3e4f5a6g", /* not hex */
                          "../../../../etc/passwd-aaaaaaaaaaaaaa" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_false(util_is_uuid(bad[i]));
}

static void test_parse_int(void **state)
{
    (void)state;
    int64_t v = 0;
    assert_int_equal(util_parse_int("8080", 1, 65535, &v), 0);
    assert_int_equal(v, 8080);
    assert_int_equal(util_parse_int("-5", -10, 10, &v), 0);
    assert_int_equal(v, -5);
    const char *bad[] = { "", " 8080", "+80", "80x", "99999999999999999999", "70000", "0x10" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(util_parse_int(bad[i], 1, 65535, &v), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_is_uuid),
        cmocka_unit_test(test_parse_int),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
