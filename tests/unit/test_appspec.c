/*  appspec: the one-line form of an image's applications (the CLI's --apps, an upload's
    applications query parameter) read into the JSON import's array, and every malformed part
    refused with a reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "appspec.h"
#include "limit.h"

#include <stdio.h>
#include <string.h>

static void test_names_versions_needs(void **state)
{
    (void)state;
    char why[256] = "";
    /* Debian versions keep their ':' '~' '+' '.' '-'; needs are optional, in either order. */
    json_t *apps =
        appspec_parse("nginx=1:1.22.1-9+deb12u1~bpo;ram=256;disk=1,postgresql=15,redis;disk=2,"
                      "vim=;ram=0",
                      why, sizeof why);
    assert_non_null(apps);
    assert_int_equal(json_array_size(apps), 4);
    char *text = json_dumps(apps, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(text,
                        "[{\"min_disk_gb\":1,\"min_ram_mb\":256,\"name\":\"nginx\",\"version\":"
                        "\"1:1.22.1-9+deb12u1~bpo\"},{\"name\":\"postgresql\",\"version\":\"15\"},"
                        "{\"min_disk_gb\":2,\"name\":\"redis\"},{\"min_ram_mb\":0,\"name\":\"vim\","
                        "\"version\":\"\"}]");
    free(text);
    json_decref(apps);
    apps = appspec_parse("", why, sizeof why);
    assert_non_null(apps);
    assert_int_equal(json_array_size(apps), 0);
    json_decref(apps);
    /* The limits the JSON import enforces, at the edge. */
    char edge[128];
    snprintf(edge, sizeof edge, "db;ram=%d;disk=%d", LIMIT_RAM_MB_MAX, LIMIT_DISK_GB_MAX);
    apps = appspec_parse(edge, why, sizeof why);
    assert_non_null(apps);
    json_decref(apps);
}

static void test_refused(void **state)
{
    (void)state;
    char over_ram[64], over_disk[64], many[LIMIT_IMAGE_APPS_MAX * 3 + 8] = "", name[80];
    snprintf(over_ram, sizeof over_ram, "db;ram=%d", LIMIT_RAM_MB_MAX + 1);
    snprintf(over_disk, sizeof over_disk, "db;disk=%d", LIMIT_DISK_GB_MAX + 1);
    for (int i = 0; i <= LIMIT_IMAGE_APPS_MAX; i++)
        strcat(many, i ? ",a" : "a");
    memset(name, 'n', LIMIT_IMAGE_TEXT_MAX + 1);
    name[LIMIT_IMAGE_TEXT_MAX + 1] = '\0';
    const struct {
        const char *text;
        const char *says;
    } bad[] = {
        { "nginx=1.22;ram=lots", "ram must be a whole number of MB" },
        { "nginx=1.22;ram=-1", "ram must be a whole number of MB" },
        { "nginx=1.22;ram=", "ram must be a whole number of MB" },
        { "nginx=1.22;ram", "ram must be a whole number of MB" },
        { "nginx=1.22;disk=1.5", "disk must be a whole number of GB" },
        { over_ram, "0 to 4194304" },
        { over_disk, "0 to 65536" },
        { "nginx=1.22;cpu=2", "unknown key 'cpu'" },
        { "nginx=1.22;;ram=1", "unknown key ''" },
        { "nginx=1.22;ram=1;ram=2", "ram given twice" },
        { "nginx;ram=1;disk=1;ram=1;disk=1", "more than ram=MB and disk=GB" },
        { "nginx,,redis", "item 2 has no name" },
        { "=1.22", "item 1 has no name" },
        { ";ram=1", "item 1 has no name" },
        { many, "at most 64 applications" },
        { name, "name 1 to 64 characters" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char why[256] = "";
        json_t *apps = appspec_parse(bad[i].text, why, sizeof why);
        if (apps || !strstr(why, bad[i].says))
            fail_msg("'%s': expected refusal saying '%s', got '%s'", bad[i].text, bad[i].says,
                     apps ? "(accepted)" : why);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_versions_needs),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
