/*  test_svc_scheduler_heuristics: the scheduler's verdict on a machine asked for
    (services/scheduler/heuristics.c), on a catalog built here: the best image among
    overlapping application sets (most asked for, fewest others, newest, smallest), the
    first-boot list, the need with its margin, the OS and application rules with their
    suggestions, a size no host could hold (the largest that fits), a template's model image
    and its staged image, images that are not READY left out, and the image a VM is built
    from as placement chooses it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../services/scheduler/heuristics.h"

#include <string.h>

typedef struct {
    Berth__Image image;
    Berth__ImageApp apps[4];
    Berth__ImageApp *refs[4];
} s_image_t;

static s_image_t s_store[8];
static Berth__Image *s_images[8];
static size_t s_n;

/* An image of the catalog: apps "name:ram:disk" ... ended by NULL. */
static Berth__Image *s_add(const char *name, const char *os, const char *version, int64_t ram,
                           int64_t disk, int64_t created, int64_t size, ...)
{
    s_image_t *s = &s_store[s_n];
    berth__image__init(&s->image);
    s->image.name = (char *)name;
    s->image.id = (char *)name;
    s->image.os = (char *)os;
    s->image.os_version = (char *)version;
    s->image.min_ram_mb = ram;
    s->image.min_disk_gb = disk;
    s->image.created_ms = created;
    s->image.size_bytes = size;
    s->image.state = "READY";
    s->image.kind = "model";
    va_list ap;
    va_start(ap, size);
    const char *app;
    size_t n = 0;
    while ((app = va_arg(ap, const char *)) != NULL) {
        berth__image_app__init(&s->apps[n]);
        s->apps[n].name = (char *)app;
        s->apps[n].min_ram_mb = va_arg(ap, int);
        s->apps[n].min_disk_gb = va_arg(ap, int);
        s->refs[n] = &s->apps[n];
        n++;
    }
    va_end(ap);
    s->image.applications = s->refs;
    s->image.n_applications = n;
    s_images[s_n] = &s->image;
    return s_images[s_n++];
}

static const heuristics_size_t s_hosts[] = { { 16, 8192, 100 }, { 32, 4096, 500 } };
static const heuristics_config_t s_config = { .margin_pct = 10 };

static int s_setup(void **state)
{
    (void)state;
    s_n = 0;
    s_add("debian-12", "debian", "12", 512, 2, 1, 100, NULL);
    s_add("web", "debian", "12", 512, 2, 10, 300, "nginx", 256, 1, "postgresql", 512, 2, NULL);
    s_add("db", "debian", "12", 512, 2, 20, 300, "postgresql", 768, 5, "redis", 128, 1, NULL);
    s_add("ml", "ubuntu", "24.04", 1024, 4, 30, 900, "tensorflow", 2048, 10, NULL);
    return 0;
}

static Berth__BuildVerdict *s_verdict(const char *os, const char *version, int64_t vcpus,
                                      int64_t ram, int64_t disk, const char *image, ...)
{
    static char *apps[8];
    size_t n = 0;
    va_list ap;
    va_start(ap, image);
    const char *app;
    while ((app = va_arg(ap, const char *)) != NULL)
        apps[n++] = (char *)app;
    va_end(ap);
    Berth__Resources flavor = BERTH__RESOURCES__INIT;
    flavor.vcpus = (int32_t)vcpus;
    flavor.ram_mb = ram;
    flavor.disk_gb = disk;
    Berth__ValidateBuild ask = BERTH__VALIDATE_BUILD__INIT;
    ask.os = (char *)os;
    ask.os_version = (char *)version;
    ask.image = (char *)image;
    ask.applications = apps;
    ask.n_applications = n;
    ask.flavor = &flavor;
    Berth__BuildVerdict *v = NULL;
    assert_int_equal(heuristics_verdict(&s_config, &ask, s_images, s_n, s_hosts, 2, &v), 0);
    return v;
}

static const char *s_suggested(const Berth__BuildVerdict *v, const char *kind)
{
    for (size_t i = 0; i < v->n_suggestions; i++)
        if (strcmp(v->suggestions[i]->kind, kind) == 0)
            return v->suggestions[i]->value;
    return NULL;
}

static void s_free(Berth__BuildVerdict *v)
{
    protobuf_c_message_free_unpacked(&v->base, NULL);
}

static void test_margin(void **state)
{
    (void)state;
    assert_int_equal(heuristics_with_margin(0, 10), 0);
    assert_int_equal(heuristics_with_margin(512, 10), 564); /* 563.2 up */
    assert_int_equal(heuristics_with_margin(1000, 10), 1100);
    assert_int_equal(heuristics_with_margin(1000, 0), 1000);
}

static void test_plain_os_takes_the_image_without_extras(void **state)
{
    (void)state;
    Berth__BuildVerdict *v = s_verdict("debian", "", 1, 1024, 10, "", NULL);
    assert_true(v->ok);
    assert_string_equal(v->image->name, "debian-12");
    assert_int_equal(v->need_ram_mb, 564);
    assert_int_equal(v->need_disk_gb, 3);
    assert_int_equal(v->n_violations, 0);
    assert_int_equal(v->n_suggestions, 0);
    s_free(v);
}

static void test_most_apps_then_fewest_extras_then_newest(void **state)
{
    (void)state;
    Berth__BuildVerdict *v =
        s_verdict("debian", "12", 1, 4096, 20, "", "postgresql", "redis", NULL);
    assert_string_equal(v->image->name, "db"); /* both asked for */
    assert_int_equal(v->n_from_image, 2);
    assert_int_equal(v->n_first_boot, 0);
    /* 512 + 768 + 128 = 1408, +10 % */
    assert_int_equal(v->need_ram_mb, 1549);
    s_free(v);
    /* One each and one more each: the newest, with the other at first boot. */
    v = s_verdict("debian", "12", 1, 4096, 20, "", "nginx", "redis", NULL);
    assert_string_equal(v->image->name, "db");
    assert_int_equal(v->n_from_image, 1);
    assert_string_equal(v->from_image[0], "redis");
    assert_int_equal(v->n_first_boot, 1);
    assert_string_equal(v->first_boot[0], "nginx");
    s_free(v);
    /* The same, smaller wins when as new. */
    s_store[2].image.created_ms = 10;
    s_store[2].image.size_bytes = 200;
    v = s_verdict("debian", "12", 1, 4096, 20, "", "nginx", "redis", NULL);
    assert_string_equal(v->image->name, "db");
    s_free(v);
    s_store[2].image.size_bytes = 400;
    v = s_verdict("debian", "12", 1, 4096, 20, "", "nginx", "redis", NULL);
    assert_string_equal(v->image->name, "web");
    s_free(v);
}

static void test_ram_and_disk_below_need(void **state)
{
    (void)state;
    Berth__BuildVerdict *v = s_verdict("debian", "", 1, 512, 2, "", "nginx", NULL);
    assert_false(v->ok);
    assert_int_equal(v->n_violations, 2);
    assert_string_equal(v->violations[0]->rule, "ram");
    assert_string_equal(v->violations[0]->field, "ram_mb");
    assert_string_equal(v->violations[1]->rule, "disk");
    assert_string_equal(s_suggested(v, "ram_mb"), "845"); /* (512 + 256) * 1.1 */
    assert_string_equal(s_suggested(v, "disk_gb"), "4");  /* (2 + 1) * 1.1 */
    s_free(v);
}

static void test_application_without_a_build(void **state)
{
    (void)state;
    Berth__BuildVerdict *v = s_verdict("debian", "", 4, 8192, 50, "", "tensorflow", NULL);
    assert_false(v->ok);
    assert_string_equal(v->violations[0]->rule, "applications");
    assert_string_equal(s_suggested(v, "drop_application"), "tensorflow");
    assert_string_equal(s_suggested(v, "os_version"), "ubuntu 24.04");
    s_free(v);
}

static void test_unknown_os_and_version(void **state)
{
    (void)state;
    Berth__BuildVerdict *v = s_verdict("debian", "11", 1, 1024, 10, "", NULL);
    assert_false(v->ok);
    assert_null(v->image);
    assert_string_equal(v->violations[0]->rule, "os");
    assert_string_equal(v->violations[0]->field, "os_version");
    assert_string_equal(s_suggested(v, "os_version"), "12");
    s_free(v);
    v = s_verdict("plan9", "", 1, 1024, 10, "", NULL);
    assert_string_equal(v->violations[0]->field, "os");
    assert_non_null(s_suggested(v, "os"));
    s_free(v);
}

static void test_no_host_could_hold_it(void **state)
{
    (void)state;
    Berth__BuildVerdict *v = s_verdict("debian", "", 64, 16384, 1000, "", NULL);
    assert_false(v->ok);
    assert_string_equal(v->violations[0]->rule, "host");
    /* Largest RAM first: the 8192 MB host, 16 vCPUs, 100 GB. */
    assert_string_equal(s_suggested(v, "size"), "vcpus=16,ram_mb=8192,disk_gb=100");
    assert_int_equal(v->largest->ram_mb, 8192);
    s_free(v);
    /* Each dimension fits some host, but no one host holds all three. */
    v = s_verdict("debian", "", 20, 6000, 10, "", NULL);
    assert_false(v->ok);
    assert_string_equal(v->violations[0]->rule, "host");
    s_free(v);
    v = s_verdict("debian", "", 16, 8192, 100, "", NULL);
    assert_true(v->ok);
    s_free(v);
}

static void test_template_model_and_staged(void **state)
{
    (void)state;
    Berth__Image *staged = s_add("debian-12-staged", "debian", "12", 512, 2, 50, 100, NULL);
    staged->kind = "staged";
    staged->model = "debian-12";
    Berth__BuildVerdict *v = s_verdict("", "", 1, 1024, 10, "debian-12", NULL);
    assert_true(v->ok);
    assert_string_equal(v->image->name, "debian-12-staged");
    s_free(v);
    staged->state = "STAGING"; /* not READY: the model itself */
    v = s_verdict("", "", 1, 1024, 10, "debian-12", NULL);
    assert_string_equal(v->image->name, "debian-12");
    s_free(v);
    v = s_verdict("", "", 1, 1024, 10, "gone", NULL);
    assert_false(v->ok);
    assert_string_equal(v->violations[0]->rule, "image");
    s_free(v);
}

/* The image a VM is built from at placement: a template's model's staged images by the
   rule (newest, then smallest, then name), the model without a READY one, and a custom
   build's image as its verdict chose it. */
static void test_build_image(void **state)
{
    (void)state;
    Berth__Image *older = s_add("debian-12-s1", "debian", "12", 512, 2, 50, 100, NULL);
    Berth__Image *newer = s_add("debian-12-s2", "debian", "12", 512, 2, 60, 300, NULL);
    Berth__Image *small = s_add("debian-12-s3", "debian", "12", 512, 2, 60, 200, NULL);
    Berth__Image *staged[] = { older, newer, small };
    for (size_t i = 0; i < 3; i++) {
        staged[i]->kind = "staged";
        staged[i]->model = "debian-12";
    }
    /* Newest first; of the two newest, the smaller. */
    assert_ptr_equal(heuristics_build_image("debian-12", 0, s_images, s_n), small);
    small->state = "DELETING";
    assert_ptr_equal(heuristics_build_image("debian-12", 0, s_images, s_n), newer);
    newer->state = "STAGING";
    assert_ptr_equal(heuristics_build_image("debian-12", 0, s_images, s_n), older);
    older->state = "FAILED";
    assert_string_equal(heuristics_build_image("debian-12", 0, s_images, s_n)->name, "debian-12");
    /* Another model's staged images are not this one's. */
    older->state = "READY";
    older->model = "web";
    assert_string_equal(heuristics_build_image("debian-12", 0, s_images, s_n)->name, "debian-12");
    assert_ptr_equal(heuristics_build_image("web", 0, s_images, s_n), older);
    /* Fixed: the image named, staged or not, whatever its state. */
    assert_string_equal(heuristics_build_image("debian-12", 1, s_images, s_n)->name, "debian-12");
    assert_ptr_equal(heuristics_build_image("debian-12-s2", 1, s_images, s_n), newer);
    /* None so named, or not READY for a template. */
    assert_null(heuristics_build_image("gone", 0, s_images, s_n));
    assert_null(heuristics_build_image("gone", 1, s_images, s_n));
    assert_null(heuristics_build_image("", 0, s_images, s_n));
    assert_null(heuristics_build_image("debian-12-s2", 0, s_images, s_n));
    /* The verdict for the template chooses as placement does. */
    older->model = "debian-12";
    newer->state = small->state = "READY";
    Berth__BuildVerdict *v = s_verdict("", "", 1, 1024, 10, "debian-12", NULL);
    assert_string_equal(v->image->name,
                        heuristics_build_image("debian-12", 0, s_images, s_n)->name);
    s_free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_margin),
        cmocka_unit_test_setup(test_plain_os_takes_the_image_without_extras, s_setup),
        cmocka_unit_test_setup(test_most_apps_then_fewest_extras_then_newest, s_setup),
        cmocka_unit_test_setup(test_ram_and_disk_below_need, s_setup),
        cmocka_unit_test_setup(test_application_without_a_build, s_setup),
        cmocka_unit_test_setup(test_unknown_os_and_version, s_setup),
        cmocka_unit_test_setup(test_no_host_could_hold_it, s_setup),
        cmocka_unit_test_setup(test_template_model_and_staged, s_setup),
        cmocka_unit_test_setup(test_build_image, s_setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
