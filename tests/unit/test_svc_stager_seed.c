/*  test_svc_stager_seed: the cloud-init NoCloud seed as the VM will see it. The ISO is read
    back with isoinfo (a separate, maintained tool): volume id "cidata", meta-data with the
    VM's UUID as instance-id and its name as local-hostname, the user-data as given (or a
    default #cloud-config). Staging is idempotent by VM; bad input is refused and leaves no
    file behind; a failing genisoimage is reported, not hidden. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "files.h"
#include "seed.h"
#include "testenv.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#define VM1 "3f2b8c1e-6a4d-4f0e-9b7a-1c2d3e4f5a6b"
#define VM2 "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"

typedef struct {
    char *dir;
    seed_t *seeds;
} fixture_t;

static seed_config_t s_config(void)
{
    return (
        seed_config_t){ .genisoimage = "genisoimage", .timeout_ms = 10000, .max_user_data = 65536 };
}

static int s_setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    if (!f || !(f->dir = testenv_tmpdir()))
        return -1;
    seed_config_t c = s_config();
    f->seeds = seed_new(f->dir, &c);
    if (!f->seeds)
        return -1;
    *state = f;
    return 0;
}

static int s_teardown(void **state)
{
    fixture_t *f = *state;
    seed_destroy(&f->seeds);
    testenv_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

/* Output of a shell command (caller frees); fails the test if it does not exit 0. */
static char *s_capture(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 4096, len = 0;
    char *out = malloc(cap);
    assert_non_null(out);
    size_t n;
    while ((n = fread(out + len, 1, cap - len - 1, p)) > 0) {
        len += n;
        if (cap - len < 2) {
            cap *= 2;
            out = realloc(out, cap);
            assert_non_null(out);
        }
    }
    out[len] = '\0';
    int status = pclose(p);
    if (status != 0)
        fail_msg("command failed (%d): %s", status, cmd);
    return out;
}

static char *s_volume_id(const char *iso)
{
    char *info = s_capture("isoinfo -d -i '%s'", iso);
    char *line = strstr(info, "Volume id: ");
    assert_non_null(line);
    line += strlen("Volume id: ");
    char *id = strndup(line, strcspn(line, "\n"));
    free(info);
    return id;
}

static char *s_iso_file(const char *iso, const char *name)
{
    return s_capture("isoinfo -R -i '%s' -x '/%s'", iso, name);
}

static int s_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static void test_seed_reads_back(void **state)
{
    fixture_t *f = *state;
    char *path = NULL, error[512] = "";
    int rc = seed_stage(f->seeds, VM1, "web-1", "", &path, error, sizeof error);
    if (rc != 0)
        fail_msg("seed_stage: %d %s", rc, error);
    char expected[1024];
    snprintf(expected, sizeof expected, "%s/%s.iso", f->dir, VM1);
    char *real = realpath(expected, NULL);
    assert_non_null(real);
    assert_string_equal(path, real);
    free(real);

    char *volid = s_volume_id(path);
    assert_string_equal(volid, "cidata");
    free(volid);
    char *meta = s_iso_file(path, "meta-data");
    assert_string_equal(meta, "instance-id: " VM1 "\nlocal-hostname: web-1\n");
    free(meta);
    char *user = s_iso_file(path, "user-data");
    assert_string_equal(user, "#cloud-config\nhostname: web-1\n");
    free(user);
    free(path);
}

static void test_seed_custom_user_data(void **state)
{
    fixture_t *f = *state;
    const char *ud =
        "#cloud-config\npackages:\n  - nginx\nruncmd:\n  - [systemctl, start, nginx]\n";
    char *path = NULL, error[512] = "";
    assert_int_equal(seed_stage(f->seeds, VM2, "db", ud, &path, error, sizeof error), 0);
    char *user = s_iso_file(path, "user-data");
    assert_string_equal(user, ud);
    free(user);
    char *meta = s_iso_file(path, "meta-data");
    assert_non_null(strstr(meta, "instance-id: " VM2 "\n"));
    assert_non_null(strstr(meta, "local-hostname: db\n"));
    free(meta);
    free(path);
}

static void test_seed_idempotent(void **state)
{
    fixture_t *f = *state;
    char *first = NULL, *second = NULL, error[512] = "";
    assert_int_equal(seed_stage(f->seeds, VM1, "web-1", "", &first, error, sizeof error), 0);
    struct stat a, b;
    assert_int_equal(stat(first, &a), 0);
    uint8_t *data1 = NULL, *data2 = NULL;
    size_t size1 = 0, size2 = 0;
    assert_int_equal(files_read(first, 4 << 20, &data1, &size1), 0);

    /* The same request again: the same file, not rebuilt (same inode and bytes). */
    assert_int_equal(seed_stage(f->seeds, VM1, "web-1", "", &second, error, sizeof error), 0);
    assert_string_equal(first, second);
    assert_int_equal(stat(second, &b), 0);
    assert_int_equal(a.st_ino, b.st_ino);
    assert_int_equal(files_read(second, 4 << 20, &data2, &size2), 0);
    assert_int_equal(size1, size2);
    assert_memory_equal(data1, data2, size1);
    free(second);
    second = NULL;

    /* Another identity for the same VM is refused and the seed is left as it was. */
    assert_int_equal(seed_stage(f->seeds, VM1, "web-2", "", &second, error, sizeof error),
                     SEED_CONFLICT);
    assert_null(second);
    assert_non_null(strstr(error, VM1));
    assert_int_equal(
        seed_stage(f->seeds, VM1, "web-1", "#cloud-config\n", &second, error, sizeof error),
        SEED_CONFLICT);
    char *meta = s_iso_file(first, "meta-data");
    assert_non_null(strstr(meta, "local-hostname: web-1\n"));
    free(meta);

    /* A seed removed behind our back (sweep, disk cleanup) is simply built again. */
    assert_int_equal(unlink(first), 0);
    assert_int_equal(seed_stage(f->seeds, VM1, "web-1", "", &second, error, sizeof error), 0);
    char *volid = s_volume_id(second);
    assert_string_equal(volid, "cidata");
    free(volid);
    free(second);
    free(first);
    free(data1);
    free(data2);
    /* Only the ISO and its sum: no build leftovers. */
    assert_int_equal(s_entries(f->dir), 2);
}

static void test_seed_bad_input_refused(void **state)
{
    fixture_t *f = *state;
    static const char *names[] = {
        "",     "Web",
        "-a",   "a-",
        "a_b",  "a.b",
        "../x", "a b",
        "ä",    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        NULL
    };
    char *path = NULL, error[512];
    for (const char **n = names; *n; n++) {
        error[0] = '\0';
        assert_int_equal(seed_stage(f->seeds, VM1, *n, "", &path, error, sizeof error),
                         SEED_BAD_REQUEST);
        assert_non_null(strstr(error, "name"));
    }
    /* 63 characters is the longest label allowed. */
    assert_true(
        seed_valid_hostname("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
    static const char *vms[] = { "",
                                 "not-a-uuid",
                                 "3F2B8C1E-6A4D-4F0E-9B7A-1C2D3E4F5A6B",
                                 "3f2b8c1e-6a4d-4f0e-9b7a-1c2d3e4f5a6",
                                 "../../etc/passwd",
                                 "3f2b8c1e+6a4d-4f0e-9b7a-1c2d3e4f5a6b",
                                 NULL };
    for (const char **v = vms; *v; v++)
        assert_int_equal(seed_stage(f->seeds, *v, "web", "", &path, error, sizeof error),
                         SEED_BAD_REQUEST);
    assert_int_equal(seed_stage(f->seeds, VM1, "web", "hello", &path, error, sizeof error),
                     SEED_BAD_REQUEST);
    assert_int_equal(
        seed_stage(f->seeds, VM1, "web", "#cloud-config\n\x01", &path, error, sizeof error),
        SEED_BAD_REQUEST);
    size_t big = 65536 + 1;
    char *large = malloc(big + 1);
    assert_non_null(large);
    memset(large, 'x', big);
    memcpy(large, "#cloud-config\n#", 15);
    large[big] = '\0';
    assert_int_equal(seed_stage(f->seeds, VM1, "web", large, &path, error, sizeof error),
                     SEED_BAD_REQUEST);
    assert_non_null(strstr(error, "limit"));
    large[big - 1] = '\0'; /* exactly the limit is fine */
    assert_int_equal(seed_stage(f->seeds, VM1, "web", large, &path, error, sizeof error), 0);
    char *user = s_iso_file(path, "user-data");
    assert_int_equal(strlen(user), 65536);
    free(user);
    free(path);
    free(large);
}

static void test_seed_refused_leaves_nothing(void **state)
{
    fixture_t *f = *state;
    char *path = NULL, error[512];
    assert_int_equal(seed_stage(f->seeds, VM1, "Bad_Name", "", &path, error, sizeof error),
                     SEED_BAD_REQUEST);
    assert_int_equal(s_entries(f->dir), 0);
}

static void test_seed_tool_failure_reported(void **state)
{
    fixture_t *f = *state;
    char *path = NULL, error[512] = "";
    seed_config_t c = s_config();
    c.genisoimage = "/nonexistent/genisoimage";
    seed_t *broken = seed_new(f->dir, &c);
    assert_non_null(broken);
    assert_int_equal(seed_stage(broken, VM1, "web", "", &path, error, sizeof error), -1);
    assert_non_null(strstr(error, "/nonexistent/genisoimage"));
    seed_destroy(&broken);

    c.genisoimage = "false"; /* runs, exits 1 */
    broken = seed_new(f->dir, &c);
    assert_non_null(broken);
    assert_int_equal(seed_stage(broken, VM1, "web", "", &path, error, sizeof error), -1);
    assert_non_null(strstr(error, "exited with status 1"));
    seed_destroy(&broken);
    assert_null(path);
    assert_int_equal(s_entries(f->dir), 0); /* no half-built seed, no build directory */

    /* A tool that hangs is killed at its deadline. */
    char *script = testenv_write_file(f->dir, "hang.sh", "#!/bin/sh\nexec sleep 30\n");
    assert_non_null(script);
    assert_int_equal(chmod(script, 0700), 0);
    c.genisoimage = script;
    c.timeout_ms = 300;
    broken = seed_new(f->dir, &c);
    int64_t start = testenv_now_ms();
    assert_int_equal(seed_stage(broken, VM1, "web", "", &path, error, sizeof error), -1);
    assert_true(testenv_now_ms() - start < 5000);
    assert_non_null(strstr(error, "killed"));
    seed_destroy(&broken);
    free(script);
    assert_int_equal(s_entries(f->dir), 1); /* the script itself; the build was cleaned up */
}

static void test_seed_sweep(void **state)
{
    fixture_t *f = *state;
    char *a = NULL, *b = NULL, error[512];
    assert_int_equal(seed_stage(f->seeds, VM1, "old", "", &a, error, sizeof error), 0);
    assert_int_equal(seed_stage(f->seeds, VM2, "new", "", &b, error, sizeof error), 0);
    /* Age VM1's files by two hours. */
    struct timeval tv[2];
    gettimeofday(&tv[0], NULL);
    tv[0].tv_sec -= 7200;
    tv[1] = tv[0];
    char sum[1024];
    snprintf(sum, sizeof sum, "%s/%s.sum", f->dir, VM1);
    assert_int_equal(utimes(a, tv), 0);
    assert_int_equal(utimes(sum, tv), 0);
    assert_int_equal(seed_sweep(f->seeds, 3600 * 1000), 2);
    assert_false(files_exists(a));
    assert_true(files_exists(b));
    assert_int_equal(seed_sweep(f->seeds, 3600 * 1000), 0);
    free(a);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_seed_reads_back, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_seed_custom_user_data, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_seed_idempotent, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_seed_bad_input_refused, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_seed_refused_leaves_nothing, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_seed_tool_failure_reported, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_seed_sweep, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
