/*  test_svc_stager_inspect: the checks an imported image passes before the store takes it.
    A path must stay beneath the import directory; qemu-img's JSON is read for format, virtual
    size and any other file the image would read; an image naming a backing file or an
    external data file, a format not accepted, or one over the size limit is refused, naming
    `path` and the reason. The JSON below is what qemu-img info --output=json prints. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "inspect.h"

#include <string.h>

static void test_path(void **state)
{
    (void)state;
    char rel[256];
    berth_error_t error = { 0 };
    assert_int_equal(inspect_path("/srv/import", "debian.qcow2", rel, sizeof rel, &error), 0);
    assert_string_equal(rel, "debian.qcow2");
    assert_int_equal(
        inspect_path("/srv/import", "/srv/import/./a/b.qcow2", rel, sizeof rel, &error), 0);
    assert_string_equal(rel, "a/b.qcow2");

    const char *refused[] = {
        "../etc/passwd", "a/../../x", "/etc/passwd", "/srv/importx/a.qcow2", "",
        "/srv/import",   "a\nb"
    };
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        memset(&error, 0, sizeof error);
        assert_int_equal(inspect_path("/srv/import", refused[i], rel, sizeof rel, &error), -1);
        assert_string_equal(error.code, "BAD_REQUEST");
        assert_string_equal(error_detail_get(&error, "field"), "path");
    }
}

static void test_parse(void **state)
{
    (void)state;
    inspect_info_t info;
    berth_error_t error = { 0 };
    const char *plain = "{\"virtual-size\": 1073741824, \"filename\": \"a.qcow2\", "
                        "\"format\": \"qcow2\", \"actual-size\": 196616, \"format-specific\": "
                        "{\"type\": \"qcow2\", \"data\": {\"compat\": \"1.1\"}}}";
    assert_int_equal(inspect_parse(plain, strlen(plain), &info, &error), 0);
    assert_string_equal(info.format, "qcow2");
    assert_int_equal(info.virtual_size, 1073741824LL);
    assert_int_equal(info.actual_size, 196616);
    assert_false(info.backing_file);
    assert_false(info.data_file);

    const char *backed = "{\"virtual-size\": 1048576, \"format\": \"qcow2\", "
                         "\"backing-filename\": \"/etc/shadow\", \"backing-filename-format\": "
                         "\"raw\"}";
    assert_int_equal(inspect_parse(backed, strlen(backed), &info, &error), 0);
    assert_true(info.backing_file);

    const char *external = "{\"virtual-size\": 1048576, \"format\": \"qcow2\", "
                           "\"format-specific\": {\"type\": \"qcow2\", \"data\": "
                           "{\"data-file\": \"/dev/sda\"}}}";
    assert_int_equal(inspect_parse(external, strlen(external), &info, &error), 0);
    assert_true(info.data_file);

    const char *bad[] = { "", "qemu-img: Could not open 'x'", "{\"format\": \"raw\"}",
                          "{\"virtual-size\": -1, \"format\": \"raw\"}" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memset(&error, 0, sizeof error);
        assert_int_equal(inspect_parse(bad[i], strlen(bad[i]), &info, &error), -1);
        assert_string_equal(error_detail_get(&error, "field"), "path");
    }
}

static void s_refused(const inspect_info_t *info, const inspect_rules_t *rules, const char *reason)
{
    berth_error_t error = { 0 };
    assert_int_equal(inspect_check(info, rules, &error), -1);
    assert_string_equal(error.code, "BAD_REQUEST");
    assert_string_equal(error_detail_get(&error, "field"), "path");
    assert_string_equal(error_detail_get(&error, "reason"), reason);
}

static void test_check(void **state)
{
    (void)state;
    inspect_rules_t rules = { .formats = "qcow2, raw", .max_virtual_size = 1 << 30 };
    inspect_info_t ok = { .format = "qcow2", .virtual_size = 1 << 30 };
    berth_error_t error = { 0 };
    assert_int_equal(inspect_check(&ok, &rules, &error), 0);

    inspect_info_t info = ok;
    strcpy(info.format, "vmdk");
    s_refused(&info, &rules, "format");
    info = ok;
    info.virtual_size = (1 << 30) + 1;
    s_refused(&info, &rules, "virtual_size");
    info = ok;
    info.backing_file = 1;
    s_refused(&info, &rules, "backing_file");
    info = ok;
    info.data_file = 1;
    s_refused(&info, &rules, "data_file");

    assert_true(inspect_format_ok("qcow2, raw", "raw"));
    assert_false(inspect_format_ok("qcow2", "qcow"));
    assert_false(inspect_format_ok("qcow2", ""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path),
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
