/*  test_config: a setting's value comes from the highest of default < file < BERTH_* env
    (< config_set), a file that names an undeclared key or cannot be read is refused, integer
    settings are range-checked, and secrets never reach the log. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "config.h"
#include "testenv.h"

#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    char *dir; /* scratch directory for config files */
} fixture_t;

/* Every BERTH_ variable these tests set; cleared around each test. */
static const char *s_env[] = { "BERTH_CT_PORT",   "BERTH_CT_NAME",       "BERTH_CT_UNSET",
                               "BERTH_CT_SECRET", "BERTH_CT_UNDECLARED", NULL };

static void s_clear_env(void)
{
    for (const char **e = s_env; *e; e++)
        unsetenv(*e);
}

static int s_setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    if (!f || !(f->dir = testenv_tmpdir())) {
        free(f);
        return -1;
    }
    s_clear_env();
    *state = f;
    return 0;
}

static int s_teardown(void **state)
{
    fixture_t *f = *state;
    s_clear_env();
    testenv_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static config_t *s_config(void)
{
    config_t *c = config_new();
    assert_non_null(c);
    config_declare(c, "ct_port", "8080", 0);
    config_declare(c, "ct_name", "berth", 0);
    config_declare(c, "ct_unset", NULL, 0);
    config_declare(c, "ct_secret", NULL, 1);
    return c;
}

static void test_defaults(void **state)
{
    (void)state;
    config_t *c = s_config();
    assert_int_equal(config_load(c, NULL), 0);
    assert_string_equal(config_get(c, "ct_port"), "8080");
    assert_string_equal(config_origin(c, "ct_port"), "default");
    assert_null(config_get(c, "ct_unset"));
    config_destroy(&c);
    assert_null(c);
    config_destroy(&c); /* safe twice */
}

static void test_file_overrides_default(void **state)
{
    fixture_t *f = *state;
    char *path = testenv_write_file(f->dir, "svc.cfg",
                                    "#   Berth test service\n"
                                    "ct_port = 9090\n"
                                    "ct_unset = \"from the file\"\n");
    assert_non_null(path);
    config_t *c = s_config();
    assert_int_equal(config_load(c, path), 0);
    assert_string_equal(config_get(c, "ct_port"), "9090");
    assert_string_equal(config_origin(c, "ct_port"), "file");
    assert_string_equal(config_get(c, "ct_unset"), "from the file");
    /* What the file does not name keeps its default. */
    assert_string_equal(config_get(c, "ct_name"), "berth");
    assert_string_equal(config_origin(c, "ct_name"), "default");
    config_destroy(&c);
    free(path);
}

static void test_environment_overrides_file(void **state)
{
    fixture_t *f = *state;
    char *path = testenv_write_file(f->dir, "svc.cfg", "ct_port = 9090\nct_name = filename\n");
    assert_non_null(path);
    setenv("BERTH_CT_PORT", "7070", 1);
    setenv("BERTH_CT_UNSET", "", 1); /* set but empty is still set */
    config_t *c = s_config();
    assert_int_equal(config_load(c, path), 0);
    assert_string_equal(config_get(c, "ct_port"), "7070");
    assert_string_equal(config_origin(c, "ct_port"), "env");
    assert_string_equal(config_get(c, "ct_name"), "filename"); /* file, no env */
    assert_string_equal(config_origin(c, "ct_name"), "file");
    assert_non_null(config_get(c, "ct_unset"));
    assert_string_equal(config_get(c, "ct_unset"), "");
    assert_string_equal(config_origin(c, "ct_unset"), "env");

    /* Environment over default with no file at all. */
    config_t *d = s_config();
    assert_int_equal(config_load(d, NULL), 0);
    assert_string_equal(config_get(d, "ct_port"), "7070");

    /* A value derived at start is set last and wins over everything. */
    config_set(c, "ct_port", "6060");
    assert_string_equal(config_get(c, "ct_port"), "6060");
    config_destroy(&c);
    config_destroy(&d);
    free(path);
}

static void test_undeclared_environment_is_ignored(void **state)
{
    (void)state;
    /* Only declared keys exist: a BERTH_ variable meant for another service is no error. */
    setenv("BERTH_CT_UNDECLARED", "1", 1);
    config_t *c = s_config();
    assert_int_equal(config_load(c, NULL), 0);
    config_destroy(&c);
}

static void test_bad_files_refused(void **state)
{
    fixture_t *f = *state;
    config_t *c = s_config();
    char *path = testenv_write_file(f->dir, "typo.cfg", "ct_port = 9090\nct_prot = 9091\n");
    assert_non_null(path);
    assert_int_equal(config_load(c, path), -1);
    free(path);

    /* A section is not a setting either. */
    path = testenv_write_file(f->dir, "nested.cfg", "redis\n    host = x\n");
    assert_non_null(path);
    assert_int_equal(config_load(c, path), -1);
    free(path);

    char missing[512];
    snprintf(missing, sizeof missing, "%s/does-not-exist.cfg", f->dir);
    assert_int_equal(config_load(c, missing), -1);
    config_destroy(&c);
}

static void test_config_int_ranges(void **state)
{
    (void)state;
    config_t *c = s_config();
    assert_int_equal(config_load(c, NULL), 0);
    int64_t value = 0;
    assert_int_equal(config_int(c, "ct_port", 1, 65535, &value), 0);
    assert_int_equal(value, 8080);

    struct {
        const char *text;
        int ok;
        int64_t want;
    } cases[] = {
        { "1", 1, 1 },     { "65535", 1, 65535 }, { "0", 0, 0 },
        { "65536", 0, 0 }, { "-1", 0, 0 },        { "abc", 0, 0 },
        { "12abc", 0, 0 }, { "", 0, 0 },          { "8080 ", 0, 0 },
        { "1e3", 0, 0 },   { "0x10", 0, 0 },      { "99999999999999999999", 0, 0 },
        { " 8080", 0, 0 }, { "+80", 0, 0 },       { "\t80", 0, 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        config_set(c, "ct_port", cases[i].text);
        value = -42;
        int rc = config_int(c, "ct_port", 1, 65535, &value);
        if (cases[i].ok) {
            if (rc != 0 || value != cases[i].want)
                fail_msg("'%s' should read as %lld", cases[i].text, (long long)cases[i].want);
        } else if (rc != -1 || value != -42)
            fail_msg("'%s' should be refused (rc %d) and leave the output alone", cases[i].text,
                     rc);
    }
    /* Unset is not a number. */
    assert_int_equal(config_int(c, "ct_unset", 0, 10, &value), -1);
    /* Full int64 range. */
    config_set(c, "ct_port", "-9223372036854775808");
    assert_int_equal(config_int(c, "ct_port", INT64_MIN, INT64_MAX, &value), 0);
    assert_true(value == INT64_MIN);
    config_destroy(&c);
}

static void test_effective_config_log_masks_secrets(void **state)
{
    fixture_t *f = *state;
    setenv("BERTH_CT_SECRET", "hunter2-very-secret", 1);
    config_t *c = s_config();
    assert_int_equal(config_load(c, NULL), 0);
    assert_string_equal(config_get(c, "ct_secret"), "hunter2-very-secret");

    /* Capture the log line (JSON on stdout). */
    char path[512];
    snprintf(path, sizeof path, "%s/stdout", f->dir);
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, STDOUT_FILENO);
    close(fd);
    config_log(c);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    config_destroy(&c);

    FILE *in = fopen(path, "r");
    assert_non_null(in);
    char line[4096] = "";
    assert_non_null(fgets(line, sizeof line, in));
    fclose(in);
    json_error_t err;
    json_t *root = json_loads(line, 0, &err);
    if (!root)
        fail_msg("log line is not JSON: %s", line);
    assert_string_equal(json_string_value(json_object_get(root, "msg")), "effective config");
    json_t *cfg = json_object_get(root, "config");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(cfg, "ct_port"), "value")), "8080");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(cfg, "ct_secret"), "origin")), "env");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(cfg, "ct_secret"), "value")), "********");
    json_decref(root);
    assert_null(strstr(line, "hunter2"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_file_overrides_default, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_environment_overrides_file, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_undeclared_environment_is_ignored, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_bad_files_refused, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_config_int_ranges, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_effective_config_log_masks_secrets, s_setup,
                                        s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
