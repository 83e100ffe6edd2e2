/*  clock: platform time is real time through an offset and a scale; a scale needs an origin
    shared by every service; timers wait real time divided by the scale. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "clock.h"
#include "util.h"

#include <stdlib.h>

static void test_default_is_real_time(void **state)
{
    (void)state;
    assert_int_equal(clock_set(0, 1, 0), 0);
    int64_t before = util_now_ms();
    int64_t now = clock_now_ms();
    int64_t after = util_now_ms();
    assert_true(now >= before && now <= after);
    assert_int_equal(clock_real_delay(1500), 1500);
}

static void test_offset_and_scale(void **state)
{
    (void)state;
    assert_int_equal(clock_set(5000, 1, 0), 0);
    assert_int_equal(clock_at(1000000), 1005000);
    /* 1000x from an origin: 2 real seconds after it are 2000 platform seconds after it. */
    assert_int_equal(clock_set(0, 1000, 1700000000000), 0);
    assert_int_equal(clock_at(1700000000000), 1700000000000);
    assert_int_equal(clock_at(1700000002000), 1700002000000);
    assert_int_equal(clock_real_delay(86400000), 86400); /* a day waits 86.4 s */
    assert_int_equal(clock_real_delay(1), 1);            /* rounded up, never 0 for a wait */
    assert_int_equal(clock_real_delay(-5), 0);
    assert_true(clock_scale() == 1000);
    /* Out of range: refused, the clock unchanged. */
    assert_int_equal(clock_set(0, 0, 0), -1);
    assert_int_equal(clock_set(0, -2, 0), -1);
    assert_int_equal(clock_set(0, 2000000, 0), -1);
    assert_true(clock_scale() == 1000);
    clock_set(0, 1, 0);
}

static void test_configure(void **state)
{
    (void)state;
    config_t *c = config_new();
    clock_declare(c);
    assert_int_equal(clock_configure(c), 0);
    assert_true(clock_scale() == 1);
    config_set(c, "clock_scale", "3600");
    assert_int_equal(clock_configure(c), -1); /* a scale without an origin */
    config_set(c, "clock_origin_ms", "1700000000000");
    config_set(c, "clock_offset_ms", "-1000");
    assert_int_equal(clock_configure(c), 0);
    assert_int_equal(clock_at(1700000001000), 1700003600000 - 1000);
    const char *bad[] = { "0", "-1", "abc", "", "1e9", "2x" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        config_set(c, "clock_scale", bad[i]);
        assert_int_equal(clock_configure(c), -1);
    }
    config_set(c, "clock_scale", "0.5");
    assert_int_equal(clock_configure(c), 0);
    assert_int_equal(clock_real_delay(1000), 2000);
    config_destroy(&c);
    clock_set(0, 1, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_is_real_time),
        cmocka_unit_test(test_offset_and_scale),
        cmocka_unit_test(test_configure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
