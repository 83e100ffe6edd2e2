/*  log: a line below the level is not written, and what its fields handed over ("o": a
    reference) is still released, so a filtered debug line never leaks (LeakSanitizer checks
    it when the suite runs under ASan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "log.h"

static void test_filtered_line_releases_its_fields(void **state)
{
    (void)state;
    assert_int_equal(log_set_level("error"), 0);
    json_t *obj = json_pack("{s:s}", "big", "value");
    assert_non_null(obj);
    json_incref(obj); /* one reference for us, one handed to the line */
    log_debug(NULL, "not written", "{s:o}", "detail", obj);
    /* The line took its reference and let it go: ours is the last. */
    assert_int_equal(obj->refcount, 1);
    json_decref(obj);
}

int main(void)
{
    log_init("test", "test-1");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_filtered_line_releases_its_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
