/*  test_svc_stager_catalog: the image catalog against a real redis-server and real qemu-img.
    At start the base images exist as qcow2 files (checked with `qemu-img info`) with their
    size and SHA-256 (checked with sha256sum) recorded; a second start changes nothing; a
    record whose file vanished is repaired; lookups of unknown names say NOT_FOUND. Staged
    images go STAGING to READY or FAILED, the newest READY one of a model is found, and a
    model is not deleted while it has staged images. Recovery ends what a dead stager left. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "catalog.h"
#include "testenv.h"
#include "util.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    testenv_redis_t *redis;
    store_t *store;
    char *dir;
    catalog_t *catalog;
} fixture_t;

static catalog_config_t s_config(void)
{
    return (catalog_config_t){
        .qemu_img = "qemu-img", .base_size = "2G", .timeout_ms = 20000, .max_images = 100
    };
}

static int s_group_setup(void **state)
{
    if (sodium_init() < 0)
        return -1;
    fixture_t *f = calloc(1, sizeof *f);
    if (!f || !(f->redis = testenv_redis_start(0)))
        return -1;
    *state = f;
    return 0;
}

static int s_group_teardown(void **state)
{
    fixture_t *f = *state;
    testenv_redis_destroy(&f->redis);
    free(f);
    return 0;
}

static int s_setup(void **state)
{
    fixture_t *f = *state;
    f->store = testenv_store(f->redis, 1);
    f->dir = testenv_tmpdir();
    if (!f->store || !f->dir)
        return -1;
    char images[1024];
    snprintf(images, sizeof images, "%s/images", f->dir);
    catalog_config_t c = s_config();
    f->catalog = catalog_new(f->store, images, &c);
    return f->catalog ? 0 : -1;
}

static int s_teardown(void **state)
{
    fixture_t *f = *state;
    catalog_destroy(&f->catalog);
    store_destroy(&f->store);
    testenv_rmtree(f->dir);
    free(f->dir);
    return 0;
}

static char *s_capture(const char *fmt, const char *arg)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, fmt, arg);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char *out = calloc(1, 65536);
    assert_non_null(out);
    size_t n = fread(out, 1, 65535, p);
    out[n] = '\0';
    assert_int_equal(pclose(p), 0);
    return out;
}

static Berth__Image *s_get(fixture_t *f, const char *name)
{
    Berth__Image *image = NULL;
    assert_int_equal(catalog_get(f->catalog, name, &image), 0);
    return image;
}

static void s_check_file(const Berth__Image *image)
{
    assert_string_equal(image->format, "qcow2");
    assert_true(image->path[0] == '/');
    struct stat st;
    assert_int_equal(stat(image->path, &st), 0);
    assert_int_equal(image->size_bytes, st.st_size);
    assert_true(st.st_size < 4 * 1024 * 1024); /* small: a few hundred KB of metadata */
    char *info = s_capture("qemu-img info --output=json '%s'", image->path);
    assert_non_null(strstr(info, "\"format\": \"qcow2\""));
    assert_non_null(strstr(info, "\"virtual-size\": 2147483648"));
    free(info);
    char *sum = s_capture("sha256sum '%s'", image->path);
    assert_int_equal(strncmp(sum, image->sha256, 64), 0);
    assert_int_equal(strlen(image->sha256), 64);
    free(sum);
}

static void test_base_images_created(void **state)
{
    fixture_t *f = *state;
    char error[512] = "";
    if (catalog_ensure_base(f->catalog, error, sizeof error) != 0)
        fail_msg("ensure: %s", error);
    Berth__Image *debian = s_get(f, "debian-12");
    assert_string_equal(debian->name, "debian-12");
    assert_string_equal(debian->os, "debian");
    s_check_file(debian);
    Berth__Image *ubuntu = s_get(f, "ubuntu-24.04");
    assert_string_equal(ubuntu->os, "ubuntu");
    s_check_file(ubuntu);

    Berth__ImageList *list = NULL;
    assert_int_equal(catalog_list(f->catalog, NULL, &list), 0);
    assert_int_equal(list->n_images, 2);
    assert_string_equal(list->images[0]->name, "debian-12");
    assert_string_equal(list->images[1]->name, "ubuntu-24.04");
    protobuf_c_message_free_unpacked(&list->base, NULL);

    /* A second start keeps the records and files as they are. */
    char *sha = strdup(debian->sha256);
    struct stat before, after;
    assert_int_equal(stat(debian->path, &before), 0);
    assert_int_equal(catalog_ensure_base(f->catalog, error, sizeof error), 0);
    Berth__Image *again = s_get(f, "debian-12");
    assert_string_equal(again->sha256, sha);
    assert_string_equal(again->path, debian->path);
    assert_int_equal(stat(again->path, &after), 0);
    assert_int_equal(before.st_ino, after.st_ino);
    free(sha);
    protobuf_c_message_free_unpacked(&again->base, NULL);
    protobuf_c_message_free_unpacked(&debian->base, NULL);
    protobuf_c_message_free_unpacked(&ubuntu->base, NULL);
}

static void test_missing_file_repaired(void **state)
{
    fixture_t *f = *state;
    char error[512] = "";
    assert_int_equal(catalog_ensure_base(f->catalog, error, sizeof error), 0);
    Berth__Image *ubuntu = s_get(f, "ubuntu-24.04");
    assert_int_equal(unlink(ubuntu->path), 0);
    assert_int_equal(catalog_ensure_base(f->catalog, error, sizeof error), 0);
    Berth__Image *fixed = s_get(f, "ubuntu-24.04");
    s_check_file(fixed);
    protobuf_c_message_free_unpacked(&fixed->base, NULL);
    protobuf_c_message_free_unpacked(&ubuntu->base, NULL);

    /* A record pointing somewhere else that no longer exists (another machine's wiped
       directory) is replaced with this instance's file. */
    redisReply *r = store_command(f->store, "HSET berth:image:debian-12 path /nonexistent/x.qcow2");
    assert_non_null(r);
    freeReplyObject(r);
    assert_int_equal(catalog_ensure_base(f->catalog, error, sizeof error), 0);
    Berth__Image *debian = s_get(f, "debian-12");
    assert_string_not_equal(debian->path, "/nonexistent/x.qcow2");
    s_check_file(debian);
    protobuf_c_message_free_unpacked(&debian->base, NULL);
}

static void test_unknown_and_invalid_names(void **state)
{
    fixture_t *f = *state;
    char error[512] = "";
    assert_int_equal(catalog_ensure_base(f->catalog, error, sizeof error), 0);
    Berth__Image *image = NULL;
    assert_int_equal(catalog_get(f->catalog, "windows-11", &image), CATALOG_NOT_FOUND);
    assert_int_equal(catalog_get(f->catalog, "", &image), CATALOG_NOT_FOUND);
    assert_int_equal(catalog_get(f->catalog, "../debian-12", &image), CATALOG_NOT_FOUND);
    assert_null(image);
    assert_true(catalog_valid_name("ubuntu-24.04"));
    assert_false(catalog_valid_name("Ubuntu"));
    assert_false(catalog_valid_name(".hidden"));
    assert_false(catalog_valid_name("a/b"));
}

static void test_tool_failure_reported(void **state)
{
    fixture_t *f = *state;
    char images[1024], error[512] = "";
    snprintf(images, sizeof images, "%s/other", f->dir);
    catalog_config_t c = s_config();
    c.base_size = "not-a-size";
    catalog_t *broken = catalog_new(f->store, images, &c);
    assert_non_null(broken);
    assert_int_equal(catalog_ensure_base(broken, error, sizeof error), -1);
    assert_non_null(strstr(error, "qemu-img exited with status"));
    catalog_destroy(&broken);
    Berth__Image *image = NULL;
    assert_int_equal(catalog_get(f->catalog, "debian-12", &image), CATALOG_NOT_FOUND);
}

/* A staged image recorded from a model: STAGING, then READY (or FAILED) by catalog_stage_end. */
static Berth__Image *s_stage(fixture_t *f, const Berth__Image *model, const char *name,
                             int64_t created_ms, const char *fault)
{
    char id[UTIL_ID_LEN];
    util_uuid(id);
    Berth__Image staged = *model;
    staged.id = id;
    staged.name = (char *)name;
    staged.kind = "staged";
    staged.model = model->id;
    staged.state = "";
    staged.version = 0;
    staged.path = "";
    staged.created_ms = created_ms;
    staged.stage = "COPY";
    berth_error_t error = { 0 };
    assert_int_equal(catalog_stage_begin(f->catalog, model, &staged, "admin", "rid", &error), 0);
    Berth__Image *got = s_get(f, name);
    assert_string_equal(got->state, "STAGING");
    assert_string_equal(got->model, model->id);
    protobuf_c_message_free_unpacked(&got->base, NULL);
    /* Taken: the same name cannot be staged twice. */
    memset(&error, 0, sizeof error);
    assert_int_equal(catalog_stage_begin(f->catalog, model, &staged, "admin", "rid", &error), -1);
    assert_string_equal(error.code, "CONFLICT");
    assert_int_equal(catalog_stage_progress(f->catalog, name, "CONVERT", 40), 0);
    got = s_get(f, name);
    assert_string_equal(got->stage, "CONVERT");
    assert_int_equal(got->percent, 40);
    protobuf_c_message_free_unpacked(&got->base, NULL);
    catalog_staged_t done = { .path = "/nonexistent/staged.qcow2",
                              .size = 42,
                              .sha256 = "ab",
                              .manifest = "{\"files\":[]}",
                              .report = "[]" };
    assert_int_equal(catalog_stage_end(f->catalog, name, fault ? NULL : &done, fault), 0);
    /* Ended: no more progress is written. */
    assert_int_equal(catalog_stage_progress(f->catalog, name, "CHECKSUM", 99), MODEL_CONFLICT);
    return s_get(f, name);
}

static void test_staged_images(void **state)
{
    fixture_t *f = *state;
    char error[512] = "";
    if (catalog_ensure_base(f->catalog, error, sizeof error) != 0)
        fail_msg("ensure: %s", error);
    Berth__Image *model = s_get(f, "debian-12");

    Berth__Image *first = s_stage(f, model, "debian-12-staged-1", 1000, NULL);
    assert_string_equal(first->state, "READY");
    assert_string_equal(first->format, "qcow2");
    assert_string_equal(first->sha256, "ab");
    assert_int_equal(first->percent, 100);
    assert_string_equal(first->stage, "");
    Berth__Image *second = s_stage(f, model, "debian-12-staged-2", 2000, NULL);
    Berth__Image *broken = s_stage(f, model, "debian-12-staged-3", 3000, "CONVERT: no space");
    assert_string_equal(broken->state, "FAILED");
    assert_string_equal(broken->stage, "CONVERT"); /* where it failed */

    /* Lists by kind, without manifests. */
    Berth__ImageList *list = NULL;
    assert_int_equal(catalog_list(f->catalog, "staged", &list), 0);
    assert_int_equal(list->n_images, 3);
    assert_string_equal(list->images[0]->manifest, "");
    protobuf_c_message_free_unpacked(&list->base, NULL);
    assert_int_equal(catalog_list(f->catalog, "model", &list), 0);
    assert_int_equal(list->n_images, 2);
    protobuf_c_message_free_unpacked(&list->base, NULL);

    /* The model stays while a staged image of it does; it is READY again after the refusal. */
    Berth__Image *deleted = NULL;
    berth_error_t err = { 0 };
    assert_int_equal(catalog_delete(f->catalog, "debian-12", "admin", "rid", &deleted, &err), -1);
    assert_string_equal(err.code, "CONFLICT");
    assert_non_null(strstr(error_detail_get(&err, "staged"), "debian-12-staged-1"));
    Berth__Image *again = s_get(f, "debian-12");
    assert_string_equal(again->state, "READY");
    protobuf_c_message_free_unpacked(&again->base, NULL);

    const char *names[] = { "debian-12-staged-1", "debian-12-staged-2", "debian-12-staged-3" };
    for (int i = 0; i < 3; i++) {
        memset(&err, 0, sizeof err);
        assert_int_equal(catalog_delete(f->catalog, names[i], "admin", "rid", &deleted, &err), 0);
        protobuf_c_message_free_unpacked(&deleted->base, NULL);
    }
    memset(&err, 0, sizeof err);
    assert_int_equal(catalog_delete(f->catalog, "debian-12", "admin", "rid", &deleted, &err), 0);
    protobuf_c_message_free_unpacked(&deleted->base, NULL);
    /* A model no longer READY (here: gone) cannot be staged. */
    memset(&err, 0, sizeof err);
    Berth__Image staged = *model;
    staged.id = "00000000-0000-4000-8000-000000000001";
    staged.name = "late";
    staged.kind = "staged";
    assert_int_equal(catalog_stage_begin(f->catalog, model, &staged, "admin", "rid", &err), -1);
    assert_string_equal(err.code, "CONFLICT");
    protobuf_c_message_free_unpacked(&first->base, NULL);
    protobuf_c_message_free_unpacked(&second->base, NULL);
    protobuf_c_message_free_unpacked(&broken->base, NULL);
    protobuf_c_message_free_unpacked(&model->base, NULL);
}

static void test_store_down(void **state)
{
    fixture_t *f = *state;
    char error[512] = "";
    assert_int_equal(testenv_redis_stop(f->redis), 0);
    assert_int_equal(catalog_ensure_base(f->catalog, error, sizeof error), -1);
    assert_non_null(strstr(error, "unreachable"));
    Berth__ImageList *list = NULL;
    assert_int_equal(catalog_list(f->catalog, NULL, &list), -1);
    assert_int_equal(testenv_redis_restart(f->redis), 0);
}

/* A record IMPORTING by cat (its worker: cat's instance), named name; its id into id. */
static void s_importing(catalog_t *cat, const char *name, char id[UTIL_ID_LEN])
{
    util_uuid(id);
    Berth__Image image = BERTH__IMAGE__INIT;
    image.id = id;
    image.name = (char *)name;
    image.os = "debian";
    image.kind = "model";
    berth_error_t error = { 0 };
    assert_int_equal(catalog_import_begin(cat, &image, "test", "r-1", &error), 0);
}

static void s_touch(const char *dir, const char *prefix, const char *id, const char *suffix)
{
    char path[2048];
    snprintf(path, sizeof path, "%s/%s%s%s", dir, prefix, id, suffix);
    FILE *out = fopen(path, "w");
    assert_non_null(out);
    fputs("partial", out);
    fclose(out);
}

static int s_exists(const char *dir, const char *prefix, const char *id, const char *suffix)
{
    char path[2048];
    snprintf(path, sizeof path, "%s/%s%s%s", dir, prefix, id, suffix);
    return access(path, F_OK) == 0;
}

/* Recovery: records whose worker is gone (or is this instance, without a job on them here)
   end FAILED and lose their partial files; a live instance's records, and this instance's
   own work in progress, are left alone; partial files of no record go too. */
static void test_recover(void **state)
{
    fixture_t *f = *state;
    char images[1024];
    snprintf(images, sizeof images, "%s/images", f->dir);
    catalog_config_t c = s_config();
    catalog_t *cats[3];
    const char *names[3] = { "stager-me", "stager-live", "stager-dead" };
    for (int i = 0; i < 3; i++) {
        c.instance = names[i];
        assert_non_null(cats[i] = catalog_new(f->store, images, &c));
    }
    catalog_t *me = cats[0];
    const char *dir = catalog_dir(me);
    char dead_id[UTIL_ID_LEN], live_id[UTIL_ID_LEN], mine_id[UTIL_ID_LEN], left_id[UTIL_ID_LEN],
        stray_id[UTIL_ID_LEN];
    s_importing(cats[2], "by-dead", dead_id);
    s_importing(cats[1], "by-live", live_id);
    s_importing(me, "by-me", mine_id);
    s_importing(me, "left-by-me", left_id);
    util_uuid(stray_id);
    catalog_work_begin(me, mine_id);
    s_touch(dir, ".import-", dead_id, ".tmp");
    s_touch(dir, "", dead_id, ".qcow2");
    s_touch(dir, ".stage-", left_id, ".copy");
    s_touch(dir, ".import-", live_id, ".tmp");
    s_touch(dir, ".import-", mine_id, ".tmp");
    s_touch(dir, ".import-", stray_id, ".tmp");

    const char *live[] = { "stager-me", "stager-live" };
    int failed = -1;
    assert_int_equal(catalog_recover(me, live, 2, NULL, NULL, &failed), 0);
    assert_int_equal(failed, 2);
    Berth__Image *im = s_get(f, "by-dead");
    assert_string_equal(im->state, "FAILED");
    assert_non_null(strstr(im->fault, "stager-dead stopped while the image was being imported"));
    assert_string_equal(im->worker, "");
    protobuf_c_message_free_unpacked(&im->base, NULL);
    im = s_get(f, "left-by-me");
    assert_string_equal(im->state, "FAILED");
    protobuf_c_message_free_unpacked(&im->base, NULL);
    const char *kept[] = { "by-live", "by-me" };
    for (int i = 0; i < 2; i++) {
        im = s_get(f, kept[i]);
        assert_string_equal(im->state, "IMPORTING");
        protobuf_c_message_free_unpacked(&im->base, NULL);
    }
    assert_false(s_exists(dir, ".import-", dead_id, ".tmp"));
    assert_false(s_exists(dir, "", dead_id, ".qcow2"));
    assert_false(s_exists(dir, ".stage-", left_id, ".copy"));
    assert_false(s_exists(dir, ".import-", stray_id, ".tmp"));
    assert_true(s_exists(dir, ".import-", live_id, ".tmp"));
    assert_true(s_exists(dir, ".import-", mine_id, ".tmp"));

    /* Nothing more to do; then the live instance is gone, and this one's job ended. */
    assert_int_equal(catalog_recover(me, live, 2, NULL, NULL, &failed), 0);
    assert_int_equal(failed, 0);
    catalog_work_end(me, mine_id);
    assert_int_equal(catalog_recover(me, live, 1, NULL, NULL, &failed), 0);
    assert_int_equal(failed, 2);
    assert_false(s_exists(dir, ".import-", live_id, ".tmp"));
    assert_false(s_exists(dir, ".import-", mine_id, ".tmp"));
    for (int i = 0; i < 3; i++)
        catalog_destroy(&cats[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_base_images_created, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_missing_file_repaired, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_unknown_and_invalid_names, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_tool_failure_reported, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_staged_images, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_store_down, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_recover, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, s_group_setup, s_group_teardown);
}
