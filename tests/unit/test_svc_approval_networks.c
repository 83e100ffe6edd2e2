/*  test_svc_approval_networks: services/approval/networks.c on a real Redis. A network is
    checked field by field (the field named), added once per name with one default at most,
    read by id or name with its pool's size and addresses in use, not deleted while an
    address is held; a template's network (or the default) becomes the VM's VmNetwork only for
    a group that may use it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "keys.h"
#include "networks.h"
#include "testenv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef testenv_fixture_t fixture_t;

#define GROUP "11111111-2222-4333-8444-555555555555"

static Berth__Network s_net(const char *name, const char *cidr, const char *gateway)
{
    Berth__Network n = BERTH__NETWORK__INIT;
    n.name = (char *)name;
    n.cidr = (char *)cidr;
    n.gateway = (char *)gateway;
    n.bridge = "br0";
    return n;
}

/* networks_check on n must refuse it with BAD_REQUEST naming field. */
static void s_refused(store_t *store, const Berth__Network *n, const char *field)
{
    char **groups = NULL;
    size_t n_groups = 0;
    fault_t fault = { 0 };
    int rc = networks_check(store, n, &groups, &n_groups, &fault);
    if (rc == 0)
        fail_msg("%s/%s gateway %s accepted, %s expected refused", n->name, n->cidr, n->gateway,
                 field);
    assert_string_equal(fault.code, "BAD_REQUEST");
    const char *named = error_detail_get(&fault, "field");
    if (!named || strcmp(named, field) != 0)
        fail_msg("%s/%s: field %s named, %s expected (%s)", n->name, n->cidr, named ? named : "-",
                 field, fault.message);
}

static void test_check_names_the_field(void **state)
{
    fixture_t *f = *state;
    Berth__Network n = s_net("Lab", "10.0.0.0/24", "10.0.0.1");
    s_refused(f->store, &n, "name");
    const char *cidrs[] = { "10.0.0.0",     "10.0.0.0/8",  "10.0.0.0/31",
                            "10.0.0.1/24",  "10.0.0.0/2x", "10.0.256.0/24",
                            "010.0.0.0/24", "a.b.c.d/24",  NULL };
    for (const char **c = cidrs; *c; c++) {
        n = s_net("lab", *c, "10.0.0.1");
        s_refused(f->store, &n, "cidr");
    }
    const char *gateways[] = { "10.0.1.1", "10.0.0.0", "10.0.0.255", "10.0.0", "", NULL };
    for (const char **g = gateways; *g; g++) {
        n = s_net("lab", "10.0.0.0/24", *g);
        s_refused(f->store, &n, "gateway");
    }
    n = s_net("lab", "10.0.0.0/24", "10.0.0.1");
    char *dns[] = { "10.0.0.2", "1.1.1" };
    n.dns = dns;
    n.n_dns = 2;
    s_refused(f->store, &n, "dns");
    n = s_net("lab", "10.0.0.0/24", "10.0.0.1");
    n.libvirt_network = "default";
    s_refused(f->store, &n, "libvirt_network");
    n.bridge = "";
    n.libvirt_network = "";
    s_refused(f->store, &n, "bridge");
    n.bridge = "br0 x";
    s_refused(f->store, &n, "bridge");
    /* The smallest and the largest accepted. */
    char **groups = NULL;
    size_t n_groups = 0;
    fault_t fault = { 0 };
    n = s_net("lab", "10.0.0.0/30", "10.0.0.2");
    assert_int_equal(networks_check(f->store, &n, &groups, &n_groups, &fault), 0);
    free(groups);
    n = s_net("lab", "10.0.0.0/16", "10.0.255.254");
    assert_int_equal(networks_check(f->store, &n, &groups, &n_groups, &fault), 0);
    free(groups);
    assert_int_equal(networks_pool_size("10.0.0.0/30", "10.0.0.2"), 1);
    assert_int_equal(networks_pool_size("10.0.0.0/26", "10.0.0.1"), 61);
    assert_int_equal(networks_pool_size("10.0.0.0/16", "10.0.255.254"), 65533);
}

static void test_create_find_delete(void **state)
{
    fixture_t *f = *state;
    Berth__Network n = s_net("lab", "10.0.0.0/26", "10.0.0.1");
    n.is_default = 1;
    Berth__Network *made = NULL;
    fault_t fault = { 0 };
    assert_int_equal(networks_create(f->store, &n, "admin", &made, &fault), 0);
    assert_int_equal(made->addresses, 61);
    assert_int_equal(made->allocated, 0);
    assert_string_equal(made->created_by, "admin");
    char id[64];
    snprintf(id, sizeof id, "%s", made->id);
    protobuf_c_message_free_unpacked(&made->base, NULL);

    /* The name once; one default. */
    assert_int_equal(networks_create(f->store, &n, "admin", &made, &fault), -1);
    assert_string_equal(fault.code, "CONFLICT");
    Berth__Network other = s_net("lab2", "10.1.0.0/24", "10.1.0.1");
    other.is_default = 1;
    fault = (fault_t){ 0 };
    assert_int_equal(networks_create(f->store, &other, "admin", &made, &fault), -1);
    assert_string_equal(fault.code, "CONFLICT");
    assert_string_equal(error_detail_get(&fault, "field"), "is_default");

    /* By name and by id; a VM of a template naming none gets the default. */
    Berth__Network *got = NULL;
    assert_int_equal(networks_find(f->store, "lab", &got, &fault), 0);
    assert_string_equal(got->id, id);
    protobuf_c_message_free_unpacked(&got->base, NULL);
    assert_int_equal(networks_find(f->store, id, &got, &fault), 0);
    protobuf_c_message_free_unpacked(&got->base, NULL);
    Berth__VmNetwork *v = NULL;
    assert_int_equal(networks_for_vm(f->store, "", "", GROUP, &v, &fault), 0);
    assert_non_null(v);
    assert_string_equal(v->network, id);
    assert_int_equal(v->prefix, 26);
    assert_string_equal(v->gateway, "10.0.0.1");
    assert_string_equal(v->ip, "");
    protobuf_c_message_free_unpacked(&v->base, NULL);

    /* An address held (as the claim script writes it): the delete is refused. */
    char key[KEYS_MAX];
    redisReply *r = store_command(f->store, "HSET %s 10.0.0.2 some-vm",
                                  keys_build(key, KEYS_NETWORK_ADDRESSES, id, NULL));
    freeReplyObject(r);
    assert_int_equal(networks_find(f->store, "lab", &got, &fault), 0);
    assert_int_equal(got->allocated, 1);
    protobuf_c_message_free_unpacked(&got->base, NULL);
    fault = (fault_t){ 0 };
    assert_int_equal(networks_delete(f->store, "lab", "admin", &got, &fault), -1);
    assert_string_equal(fault.code, "CONFLICT");
    assert_non_null(strstr(fault.message, "1 of its addresses"));
    r = store_command(f->store, "DEL %s", key);
    freeReplyObject(r);
    assert_int_equal(networks_delete(f->store, "lab", "admin", &got, &fault), 0);
    protobuf_c_message_free_unpacked(&got->base, NULL);
    /* Gone, and no default any more: no network for a VM. */
    fault = (fault_t){ 0 };
    assert_int_equal(networks_find(f->store, "lab", &got, &fault), -1);
    assert_string_equal(fault.code, "NOT_FOUND");
    assert_int_equal(networks_for_vm(f->store, "", "", GROUP, &v, &fault), 0);
    assert_null(v);
    r = store_command(f->store, "EXISTS %s", KEYS_NETWORK_DEFAULT);
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
}

/* A network limited to groups: a template naming it is refused to another group; the default
   limited so gives another group's VMs no address. */
static void test_groups(void **state)
{
    fixture_t *f = *state;
    /* A group as approval stores it (groups_find reads its hash and name index). */
    char key[KEYS_MAX];
    redisReply *r = store_command(f->store, "HSET %s id " GROUP " name eng",
                                  keys_build(key, KEYS_GROUP, GROUP, NULL));
    freeReplyObject(r);
    r = store_command(f->store, "HSET %s id " GROUP, keys_build(key, KEYS_GROUP_NAME, "eng", NULL));
    freeReplyObject(r);
    Berth__Network n = s_net("eng-net", "10.2.0.0/24", "10.2.0.1");
    char *groups[] = { "eng" };
    n.groups = groups;
    n.n_groups = 1;
    n.is_default = 1;
    Berth__Network *made = NULL;
    fault_t fault = { 0 };
    if (networks_create(f->store, &n, "admin", &made, &fault) != 0)
        fail_msg("create: %s", fault.message);
    assert_int_equal(made->n_groups, 1);
    assert_string_equal(made->groups[0], GROUP); /* the name resolved to the id */
    protobuf_c_message_free_unpacked(&made->base, NULL);
    Berth__VmNetwork *v = NULL;
    assert_int_equal(networks_for_vm(f->store, "", "eng-net", GROUP, &v, &fault), 0);
    assert_non_null(v);
    protobuf_c_message_free_unpacked(&v->base, NULL);
    const char *other = "99999999-2222-4333-8444-555555555555";
    assert_int_equal(networks_for_vm(f->store, "", "eng-net", other, &v, &fault), -1);
    assert_string_equal(fault.code, "FORBIDDEN");
    assert_int_equal(networks_for_vm(f->store, "", "", other, &v, &fault), 0);
    assert_null(v);
    fault = (fault_t){ 0 };
    assert_int_equal(networks_for_vm(f->store, "", "gone", GROUP, &v, &fault), -1);
    assert_string_equal(fault.code, "NOT_FOUND");
    /* One the request names comes first (over the template's), with the same rule; a name
       that is no network is the request's bad field. */
    fault = (fault_t){ 0 };
    assert_int_equal(networks_for_vm(f->store, "eng-net", "gone", GROUP, &v, &fault), 0);
    assert_non_null(v);
    protobuf_c_message_free_unpacked(&v->base, NULL);
    assert_int_equal(networks_for_vm(f->store, "eng-net", "", other, &v, &fault), -1);
    assert_string_equal(fault.code, "FORBIDDEN");
    assert_string_equal(error_detail_get(&fault, "field"), "network");
    fault = (fault_t){ 0 };
    assert_int_equal(networks_for_vm(f->store, "nowhere", "", GROUP, &v, &fault), -1);
    assert_string_equal(fault.code, "BAD_REQUEST");
    assert_string_equal(error_detail_get(&fault, "field"), "network");

    /* Several networks: the request's list over the template's, in order; a forbidden, an
       unknown or a repeated one is refused naming networks[i]. */
    Berth__Network open_net = s_net("open-net", "10.4.0.0/24", "10.4.0.1");
    if (networks_create(f->store, &open_net, "admin", &made, &fault) != 0)
        fail_msg("create: %s", fault.message);
    protobuf_c_message_free_unpacked(&made->base, NULL);
    char *both[] = { "open-net", "eng-net" }, *twice[] = { "open-net", "open-net" };
    char *unknown[] = { "open-net", "nowhere" };
    Berth__VmNetwork **list = NULL;
    size_t n_list = 0;
    fault = (fault_t){ 0 };
    assert_int_equal(
        networks_for_vm_all(f->store, "", both, 2, "", NULL, 0, GROUP, &list, &n_list, &fault), 0);
    assert_int_equal(n_list, 2);
    assert_string_equal(list[0]->name, "open-net");
    assert_string_equal(list[1]->name, "eng-net");
    networks_vm_list_free(&list, n_list);
    assert_null(list);
    assert_int_equal(
        networks_for_vm_all(f->store, "", NULL, 0, "", both, 2, GROUP, &list, &n_list, &fault), 0);
    assert_int_equal(n_list, 2);
    networks_vm_list_free(&list, n_list);
    assert_int_equal(
        networks_for_vm_all(f->store, "", both, 2, "", NULL, 0, other, &list, &n_list, &fault), -1);
    assert_string_equal(fault.code, "FORBIDDEN");
    assert_string_equal(error_detail_get(&fault, "field"), "networks[1]");
    assert_null(list);
    fault = (fault_t){ 0 };
    assert_int_equal(
        networks_for_vm_all(f->store, "", unknown, 2, "", NULL, 0, GROUP, &list, &n_list, &fault),
        -1);
    assert_string_equal(fault.code, "BAD_REQUEST");
    assert_string_equal(error_detail_get(&fault, "field"), "networks[1]");
    fault = (fault_t){ 0 };
    assert_int_equal(
        networks_for_vm_all(f->store, "", twice, 2, "", NULL, 0, GROUP, &list, &n_list, &fault),
        -1);
    assert_string_equal(error_detail_get(&fault, "field"), "networks[1]");
    /* A template's list with no request list: one the group may not use names the template. */
    fault = (fault_t){ 0 };
    assert_int_equal(
        networks_for_vm_all(f->store, "", NULL, 0, "", both, 2, other, &list, &n_list, &fault), -1);
    assert_string_equal(fault.code, "FORBIDDEN");
    assert_string_equal(error_detail_get(&fault, "field"), "template");

    /* A group that does not exist is refused naming the field. */
    char *nogroup[] = { "nope" };
    n = s_net("x", "10.3.0.0/24", "10.3.0.1");
    n.groups = nogroup;
    n.n_groups = 1;
    fault = (fault_t){ 0 };
    assert_int_equal(networks_create(f->store, &n, "admin", &made, &fault), -1);
    assert_string_equal(error_detail_get(&fault, "field"), "groups");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_check_names_the_field, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_create_find_delete, testenv_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_groups, testenv_setup, testenv_teardown),
    };
    return cmocka_run_group_tests(tests, testenv_group_setup, testenv_group_teardown);
}
