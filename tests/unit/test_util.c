/*  util: ids and numbers from the outside world are read strictly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "testenv.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
                          "3f2b8c1e-6a4d-4f0e-9b7a-1c2d3e4f5a-b", /* a dash for a digit */
                          "3f2b8c1e-6a4d-4f0e-9b7a+1c2d3e4f5a6b", /* no dash */
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

static void s_write(const char *dir, const char *name, const char *text)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_resolve_endpoint(void **state)
{
    (void)state;
    char out[4][UTIL_ENDPOINT_MAX];
    assert_int_equal(util_resolve_endpoint("tcp://127.0.0.1:5555", out, 4), 1);
    assert_string_equal(out[0], "tcp://127.0.0.1:5555");
    /* A name: its IPv4 addresses (localhost is also ::1, left out when IPv4 exists). */
    assert_int_equal(util_resolve_endpoint("tcp://localhost:5555", out, 4), 1);
    assert_string_equal(out[0], "tcp://127.0.0.1:5555");
    /* Not tcp://host:port: as it is. */
    assert_int_equal(util_resolve_endpoint("ipc:///run/berth/taskmgr", out, 4), 1);
    assert_string_equal(out[0], "ipc:///run/berth/taskmgr");
    assert_int_equal(util_resolve_endpoint("tcp://[::1]:5555", out, 4), 1);
    assert_string_equal(out[0], "tcp://[::1]:5555");
    assert_int_equal(util_resolve_endpoint("tcp://no-such-host.invalid:5555", out, 4), -1);
    assert_int_equal(util_resolve_endpoint("tcp://localhost:5555", out, 0), 0);
}

static void test_secret_read(void **state)
{
    (void)state;
    char *dir = testenv_tmpdir();
    assert_non_null(dir);
    char out[16];
    s_write(dir, "ok", "0123456789abc\n");
    assert_int_equal(util_secret_read(dir, "ok", out, sizeof out), 0);
    assert_string_equal(out, "0123456789abc");
    s_write(dir, "empty", " \n");
    assert_int_equal(util_secret_read(dir, "empty", out, sizeof out), -1);
    assert_int_equal(errno, ENODATA);
    assert_string_equal(out, "");
    s_write(dir, "long", "0123456789abcdef0123\n"); /* does not fit: never cut short */
    assert_int_equal(util_secret_read(dir, "long", out, sizeof out), -1);
    assert_int_equal(errno, EFBIG);
    assert_string_equal(out, "");
    assert_int_equal(util_secret_read(dir, "absent", out, sizeof out), -1);
    assert_int_equal(errno, ENOENT);
    testenv_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_is_uuid),
        cmocka_unit_test(test_parse_int),
        cmocka_unit_test(test_secret_read),
        cmocka_unit_test(test_resolve_endpoint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
