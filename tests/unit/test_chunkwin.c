/*  chunkwin: the credit window of a chunked transfer: at most credit chunks out, in order,
    the last one short; an answer returns a credit and moves the held prefix; a failure
    rewinds to what the other side holds; a start past zero resumes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "chunkwin.h"

static void test_credit_bounds_calls(void **state)
{
    (void)state;
    chunkwin_t w;
    chunkwin_init(&w, 10, 4, 2, 0);
    int64_t off;
    size_t len;
    assert_int_equal(chunkwin_take(&w, &off, &len), 1);
    assert_int_equal(off, 0);
    assert_int_equal(len, 4);
    assert_int_equal(chunkwin_take(&w, &off, &len), 1);
    assert_int_equal(off, 4);
    assert_int_equal(chunkwin_take(&w, &off, &len), 0); /* no credit left */
    chunkwin_answered(&w, 4);
    assert_int_equal(chunkwin_take(&w, &off, &len), 1);
    assert_int_equal(off, 8);
    assert_int_equal(len, 2); /* the last chunk is short */
    chunkwin_answered(&w, 8);
    assert_int_equal(chunkwin_take(&w, &off, &len), 0); /* every byte sent */
    assert_false(chunkwin_done(&w));
    chunkwin_answered(&w, 10);
    assert_true(chunkwin_done(&w));
    assert_int_equal(w.inflight, 0);
}

static void test_failure_rewinds_to_held(void **state)
{
    (void)state;
    chunkwin_t w;
    chunkwin_init(&w, 100, 10, 4, 0);
    int64_t off;
    size_t len;
    for (int i = 0; i < 4; i++)
        assert_int_equal(chunkwin_take(&w, &off, &len), 1);
    chunkwin_answered(&w, 10);
    assert_int_equal(chunkwin_failed(&w), 1); /* the chunk at 10 was lost */
    assert_int_equal(chunkwin_take(&w, &off, &len), 1);
    assert_int_equal(off, 10); /* sent again from what the other side holds */
    assert_int_equal(chunkwin_failed(&w), 2);
    chunkwin_rewind(&w, 30); /* the other side says it holds more */
    assert_int_equal(chunkwin_take(&w, &off, &len), 1);
    assert_int_equal(off, 30);
    chunkwin_answered(&w, 40);
    assert_int_equal(w.failures, 0); /* progress */
}

static void test_resume_and_clamps(void **state)
{
    (void)state;
    chunkwin_t w;
    int64_t off;
    size_t len;
    chunkwin_init(&w, 50, 20, 1, 40);
    assert_int_equal(chunkwin_take(&w, &off, &len), 1);
    assert_int_equal(off, 40);
    assert_int_equal(len, 10);
    chunkwin_init(&w, 50, 20, 1, 999); /* held beyond the size: done */
    assert_true(chunkwin_done(&w));
    assert_int_equal(chunkwin_take(&w, &off, &len), 0);
    chunkwin_init(&w, 0, 20, 1, 0); /* nothing to send */
    assert_true(chunkwin_done(&w));
    chunkwin_init(&w, 5, 0, 0, -3); /* chunk and credit at least 1, start at least 0 */
    assert_int_equal(chunkwin_take(&w, &off, &len), 1);
    assert_int_equal(off, 0);
    assert_int_equal(len, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_credit_bounds_calls),
        cmocka_unit_test(test_failure_rewinds_to_held),
        cmocka_unit_test(test_resume_and_clamps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
