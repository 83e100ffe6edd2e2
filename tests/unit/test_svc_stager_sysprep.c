/*  test_svc_stager_sysprep: stripping identity from a manifest, as virt-sysprep's operations
    of the same names would from the image: the machine-id emptied (its D-Bus copy removed),
    SSH host keys, persistent net rules, DHCP leases and logs removed, HWADDR lines dropped;
    everything else kept as it was. A manifest is checked at import (shape, limits, absolute
    paths listed once), and virt-sysprep's own output becomes its report. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "limit.h"
#include "sysprep.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char s_manifest[] =
    "{\"files\": ["
    "{\"path\": \"/etc/machine-id\", \"content\": \"0123456789abcdef\\n\"},"
    "{\"path\": \"/var/lib/dbus/machine-id\", \"content\": \"0123456789abcdef\\n\"},"
    "{\"path\": \"/etc/ssh/ssh_host_ed25519_key\", \"content\": \"PRIVATE\"},"
    "{\"path\": \"/etc/ssh/ssh_host_ed25519_key.pub\", \"content\": \"ssh-ed25519 AAAA\"},"
    "{\"path\": \"/etc/ssh/sshd_config\", \"content\": \"PermitRootLogin no\\n\"},"
    "{\"path\": \"/etc/sysconfig/network-scripts/ifcfg-eth0\","
    " \"content\": \"DEVICE=eth0\\nHWADDR=52:54:00:aa:bb:cc\\nONBOOT=yes\"},"
    "{\"path\": \"/etc/sysconfig/network-scripts/ifcfg-lo\", \"content\": \"DEVICE=lo\\n\"},"
    "{\"path\": \"/etc/udev/rules.d/70-persistent-net.rules\", \"content\": \"rule\"},"
    "{\"path\": \"/var/lib/dhcp/dhclient.eth0.leases\", \"content\": \"lease\"},"
    "{\"path\": \"/var/log/syslog\", \"content\": \"log\"},"
    "{\"path\": \"/var/log/nginx/access.log\"},"
    "{\"path\": \"/var/logs-are-not-logs\"},"
    "{\"path\": \"/etc/ssh/ssh_config\", \"content\": \"Host *\\n\"}"
    "]}";

/* The content of path in a manifest's JSON, "(absent)" when it is not listed, "(none)" when
   listed without content. */
static const char *s_content(json_t *manifest, const char *path)
{
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(manifest, "files"), i, f)
    {
        if (strcmp(json_string_value(json_object_get(f, "path")), path) == 0) {
            json_t *c = json_object_get(f, "content");
            return c ? json_string_value(c) : "(none)";
        }
    }
    return "(absent)";
}

static json_t *s_op(json_t *report, const char *operation)
{
    size_t i;
    json_t *o;
    json_array_foreach(report, i, o)
    {
        if (strcmp(json_string_value(json_object_get(o, "operation")), operation) == 0)
            return o;
    }
    return NULL;
}

static void test_apply(void **state)
{
    (void)state;
    char *normalized = NULL, *staged = NULL, *report = NULL;
    berth_error_t error = { 0 };
    assert_int_equal(sysprep_manifest_check(s_manifest, &normalized, &error), 0);
    assert_int_equal(sysprep_manifest_apply(normalized, &staged, &report), 0);
    json_t *m = json_loads(staged, 0, NULL), *r = json_loads(report, 0, NULL);
    assert_non_null(m);
    assert_non_null(r);
    assert_string_equal(s_content(m, "/etc/machine-id"), "");
    assert_string_equal(s_content(m, "/var/lib/dbus/machine-id"), "(absent)");
    assert_string_equal(s_content(m, "/etc/ssh/ssh_host_ed25519_key"), "(absent)");
    assert_string_equal(s_content(m, "/etc/ssh/ssh_host_ed25519_key.pub"), "(absent)");
    assert_string_equal(s_content(m, "/etc/udev/rules.d/70-persistent-net.rules"), "(absent)");
    assert_string_equal(s_content(m, "/var/lib/dhcp/dhclient.eth0.leases"), "(absent)");
    assert_string_equal(s_content(m, "/var/log/syslog"), "(absent)");
    assert_string_equal(s_content(m, "/var/log/nginx/access.log"), "(absent)");
    /* What no operation touches is kept as it was. */
    assert_string_equal(s_content(m, "/etc/ssh/sshd_config"), "PermitRootLogin no\n");
    assert_string_equal(s_content(m, "/etc/ssh/ssh_config"), "Host *\n");
    assert_string_equal(s_content(m, "/var/logs-are-not-logs"), "(none)");
    assert_string_equal(s_content(m, "/etc/sysconfig/network-scripts/ifcfg-eth0"),
                        "DEVICE=eth0\nONBOOT=yes");
    assert_string_equal(s_content(m, "/etc/sysconfig/network-scripts/ifcfg-lo"), "DEVICE=lo\n");
    assert_int_equal(json_array_size(json_object_get(m, "files")), 6);

    /* The report: every operation, in order, with what it did. */
    assert_int_equal(json_array_size(r), 6);
    assert_string_equal(json_string_value(json_object_get(json_array_get(r, 0), "operation")),
                        "machine-id");
    json_t *mid = s_op(r, "machine-id");
    assert_string_equal(json_string_value(json_array_get(json_object_get(mid, "emptied"), 0)),
                        "/etc/machine-id");
    assert_int_equal(json_array_size(json_object_get(mid, "removed")), 1);
    assert_int_equal(json_array_size(json_object_get(s_op(r, "ssh-hostkeys"), "removed")), 2);
    assert_int_equal(json_array_size(json_object_get(s_op(r, "logfiles"), "removed")), 2);
    json_t *hw = s_op(r, "net-hwaddr");
    assert_int_equal(json_array_size(json_object_get(hw, "edited")), 1); /* not ifcfg-lo */
    json_decref(m);
    json_decref(r);
    free(staged);
    free(report);

    /* Applied again, nothing more is done: stripping is idempotent. */
    char *again = NULL;
    char *first = NULL;
    assert_int_equal(sysprep_manifest_apply(normalized, &first, &report), 0);
    free(report);
    assert_int_equal(sysprep_manifest_apply(first, &again, &report), 0);
    assert_string_equal(again, first);
    r = json_loads(report, 0, NULL);
    for (size_t i = 0; i < json_array_size(r); i++) {
        json_t *o = json_array_get(r, i);
        assert_int_equal(json_array_size(json_object_get(o, "removed")) +
                             json_array_size(json_object_get(o, "edited")),
                         0);
    }
    json_decref(r);
    free(report);
    free(first);
    free(again);
    free(normalized);
}

static void test_check_refuses(void **state)
{
    (void)state;
    char big[LIMIT_IMAGE_MANIFEST_MAX + 64];
    snprintf(big, sizeof big, "{\"files\": [{\"path\": \"/a\", \"content\": \"%0*d\"}]}",
             LIMIT_IMAGE_MANIFEST_MAX, 0);
    char many[LIMIT_IMAGE_MANIFEST_MAX];
    size_t at = (size_t)snprintf(many, sizeof many, "{\"files\": [");
    for (int i = 0; i <= LIMIT_IMAGE_MANIFEST_FILES_MAX; i++)
        at += (size_t)snprintf(many + at, sizeof many - at, "%s{\"path\": \"/f%d\"}", i ? "," : "",
                               i);
    snprintf(many + at, sizeof many - at, "]}");
    const char *refused[] = {
        "",
        "[]",
        "{\"files\": {}}",
        "{\"files\": [], \"more\": 1}",
        "{\"files\": [{\"path\": \"relative\"}]}",
        "{\"files\": [{\"path\": \"/a/../etc/shadow\"}]}",
        "{\"files\": [{\"path\": \"/a\", \"content\": 7}]}",
        "{\"files\": [{\"path\": \"/a\", \"mode\": 7}]}",
        "{\"files\": [{\"path\": \"/a\"}, {\"path\": \"/a\"}]}",
        "{\"files\": [\"/a\"]}",
        big,
        many,
    };
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        berth_error_t error = { 0 };
        char *normalized = NULL;
        assert_int_equal(sysprep_manifest_check(refused[i], &normalized, &error), -1);
        assert_null(normalized);
        assert_string_equal(error.code, "BAD_REQUEST");
        assert_string_equal(error_detail_get(&error, "field"), "manifest");
    }
    berth_error_t error = { 0 };
    char *normalized = NULL;
    assert_int_equal(sysprep_manifest_check("{\"files\": []}", &normalized, &error), 0);
    assert_string_equal(normalized, "{\"files\":[]}");
    free(normalized);
}

static void test_tool_report(void **state)
{
    (void)state;
    const char out[] = "[   0.0] Examining the guest ...\n"
                       "[  28.8] Performing \"dhcp-client-state\" ...\n"
                       "[  29.3] Performing \"machine-id\" ...\n"
                       "[  29.8] Performing \"ssh-hostkeys\" ...\n";
    char *report = sysprep_tool_report(out, sizeof out - 1);
    assert_non_null(report);
    assert_string_equal(report, "[{\"operation\":\"dhcp-client-state\",\"performed\":true},"
                                "{\"operation\":\"machine-id\",\"performed\":true},"
                                "{\"operation\":\"ssh-hostkeys\",\"performed\":true}]");
    free(report);
    report = sysprep_tool_report("nothing", 7);
    assert_string_equal(report, "[]");
    free(report);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_apply),
        cmocka_unit_test(test_check_refuses),
        cmocka_unit_test(test_tool_report),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
