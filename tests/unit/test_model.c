/*  test_model: writes of existing objects name their fields. model_tx_put_fields writes
    only the fields it names and model_tx_put_changed only those that changed, so a writer
    holding a copy read earlier never overwrites a field someone else wrote since: the race
    of a task step against a heartbeat's fresh power state is gone. State fields and the
    version change only through transitions; naming them, or a field the message does not
    have, refuses the transaction. A stored object reads back field by field as written. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "model.h"
#include "testenv.h"

#include <stdlib.h>
#include <string.h>

typedef testenv_fixture_t fixture_t;

#define VM_ID  "6b1f0c52-2a5e-4f0e-9d43-0d2b8f1e7a10"
#define VM_KEY "berth:vm:{" VM_ID "}"

static char *s_hget(store_t *store, const char *key, const char *field)
{
    redisReply *r = store_command(store, "HGET %s %s", key, field);
    assert_non_null(r);
    char *value = strdup(r->type == REDIS_REPLY_STRING ? r->str : "");
    freeReplyObject(r);
    return value;
}

static void s_assert_field(store_t *store, const char *key, const char *field, const char *want)
{
    char *value = s_hget(store, key, field);
    if (strcmp(value, want) != 0)
        fail_msg("%s %s is '%s', expected '%s'", key, field, value, want);
    free(value);
}

static long long s_xlen(store_t *store)
{
    redisReply *r = store_command(store, "XLEN %s", STORE_EVENTS);
    assert_non_null(r);
    long long n = r->integer;
    freeReplyObject(r);
    return n;
}

/* A VM as approval creates it: PROVISIONING, no power yet, placed on h1. */
static void s_create_vm(store_t *store)
{
    Berth__Resources flavor = BERTH__RESOURCES__INIT;
    flavor.vcpus = 2;
    flavor.ram_mb = 2048;
    flavor.disk_gb = 20;
    Berth__Vm vm = BERTH__VM__INIT;
    vm.id = VM_ID;
    vm.name = "web-1";
    vm.state = "PROVISIONING";
    vm.power_state = "NOSTATE";
    vm.host = "h1";
    vm.owner = "alice";
    vm.template_ = "small";
    vm.flavor = &flavor;
    vm.version = 1;
    model_tx_t *tx = model_tx_new();
    assert_non_null(tx);
    assert_int_equal(model_tx_transition(tx, LIFECYCLE_VM, VM_KEY, "", "PROVISIONING", 0, NULL), 0);
    model_tx_put(tx, VM_KEY, &vm.base);
    assert_int_equal(model_tx_commit(tx, store, NULL), 0);
    model_tx_destroy(&tx);
}

static Berth__Vm *s_load_vm(store_t *store)
{
    ProtobufCMessage *msg = NULL;
    assert_int_equal(model_load(store, &berth__vm__descriptor, VM_KEY, &msg), 0);
    return (Berth__Vm *)msg;
}

/* What a heartbeat does: the host reports the domain RUNNING. */
static void s_heartbeat(store_t *store, const char *power)
{
    model_tx_t *tx = model_tx_new();
    assert_int_equal(model_tx_vm_power(tx, VM_ID, "h1", power), 0);
    assert_int_equal(model_tx_commit(tx, store, NULL), 0);
    model_tx_destroy(&tx);
}

static void test_create_writes_whole_object_at_version_1(void **state)
{
    fixture_t *f = *state;
    s_create_vm(f->store);
    s_assert_field(f->store, VM_KEY, "state", "PROVISIONING");
    s_assert_field(f->store, VM_KEY, "power_state", "NOSTATE");
    s_assert_field(f->store, VM_KEY, "version", "1");
    s_assert_field(f->store, VM_KEY, "owner", "alice");
    s_assert_field(f->store, VM_KEY, "flavor", "{\"vcpus\":2,\"ram_mb\":2048,\"disk_gb\":20}");
    assert_int_equal(s_xlen(f->store), 1);
}

static void test_put_fields_writes_only_named_fields(void **state)
{
    fixture_t *f = *state;
    s_create_vm(f->store);
    Berth__Vm *vm = s_load_vm(f->store);
    /* Someone else changes owner meanwhile; our copy still says alice. */
    redisReply *r = store_command(f->store, "HSET %s owner bob", VM_KEY);
    freeReplyObject(r);
    free(vm->fault);
    vm->fault = strdup("disk full");
    model_tx_t *tx = model_tx_new();
    model_tx_put_fields(tx, VM_KEY, &vm->base, "fault", NULL);
    assert_null(model_tx_error(tx));
    assert_int_equal(model_tx_commit(tx, f->store, NULL), 0);
    model_tx_destroy(&tx);
    s_assert_field(f->store, VM_KEY, "fault", "disk full");
    s_assert_field(f->store, VM_KEY, "owner", "bob");
    s_assert_field(f->store, VM_KEY, "state", "PROVISIONING");
    berth__vm__free_unpacked(vm, NULL);
}

static void test_put_fields_refuses_unknown_and_state_fields(void **state)
{
    fixture_t *f = *state;
    s_create_vm(f->store);
    Berth__Vm *vm = s_load_vm(f->store);
    const struct {
        const char *field;
        const char *error;
    } cases[] = {
        { "nosuch", "cannot write " VM_KEY ": Vm has no field 'nosuch'" },
        { "state", "cannot write " VM_KEY ": 'state' of a Vm changes only through a transition" },
        { "power_state",
          "cannot write " VM_KEY ": 'power_state' of a Vm changes only through a transition" },
        { "version",
          "cannot write " VM_KEY ": 'version' of a Vm changes only through a transition" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        model_tx_t *tx = model_tx_new();
        model_tx_put_fields(tx, VM_KEY, &vm->base, "host", cases[i].field, NULL);
        assert_non_null(model_tx_error(tx));
        assert_string_equal(model_tx_error(tx), cases[i].error);
        assert_int_equal(model_tx_commit(tx, f->store, NULL), MODEL_REFUSED);
        model_tx_destroy(&tx);
    }
    /* A Task's state is its own kind's field too. */
    Berth__Task task = BERTH__TASK__INIT;
    model_tx_t *tx = model_tx_new();
    model_tx_put_fields(tx, "berth:task:{t}", &task.base, "stage", "state", NULL);
    assert_non_null(strstr(model_tx_error(tx), "'state' of a Task changes only through"));
    model_tx_destroy(&tx);
    assert_int_equal(s_xlen(f->store), 1); /* the creation only */
    berth__vm__free_unpacked(vm, NULL);
}

/* The race of issue 7: a task step holds the VM it read before a heartbeat reported the
   domain RUNNING. Its write names only what the step changes, so the fresh power state
   survives, whichever way the step writes. */
static void test_stale_copy_never_overwrites_fresh_power_state(void **state)
{
    fixture_t *f = *state;
    s_create_vm(f->store);
    Berth__Vm *stale = s_load_vm(f->store); /* the task engine's copy: NOSTATE, version 1 */
    Berth__Vm *before = s_load_vm(f->store);
    s_heartbeat(f->store, "RUNNING");
    s_assert_field(f->store, VM_KEY, "power_state", "RUNNING");
    s_assert_field(f->store, VM_KEY, "version", "2");

    /* A field write from the stale copy (the schedule stage setting the host). */
    free(stale->host);
    stale->host = strdup("h1");
    free(stale->fault);
    stale->fault = strdup("");
    free(stale->image);
    stale->image = strdup("debian-12");
    model_tx_t *tx = model_tx_new();
    model_tx_put_changed(tx, VM_KEY, &before->base, &stale->base);
    assert_null(model_tx_error(tx));
    assert_int_equal(model_tx_commit(tx, f->store, NULL), 0);
    model_tx_destroy(&tx);
    s_assert_field(f->store, VM_KEY, "image", "debian-12");
    s_assert_field(f->store, VM_KEY, "power_state", "RUNNING");

    /* A transition from the stale copy: refused by the version check, read again, retried;
       the power state is still the heartbeat's. */
    tx = model_tx_new();
    assert_int_equal(model_tx_vm_transition(tx, stale, "ACTIVE"), 0);
    model_tx_put_fields(tx, VM_KEY, &stale->base, "fault", NULL);
    assert_int_equal(model_tx_commit(tx, f->store, NULL), MODEL_CONFLICT);
    model_tx_destroy(&tx);
    s_assert_field(f->store, VM_KEY, "state", "PROVISIONING");
    berth__vm__free_unpacked(stale, NULL);
    Berth__Vm *fresh = s_load_vm(f->store);
    assert_string_equal(fresh->power_state, "RUNNING");
    tx = model_tx_new();
    assert_int_equal(model_tx_vm_transition(tx, fresh, "ACTIVE"), 0);
    model_tx_put_fields(tx, VM_KEY, &fresh->base, "fault", NULL);
    assert_int_equal(model_tx_commit(tx, f->store, NULL), 0);
    model_tx_destroy(&tx);
    s_assert_field(f->store, VM_KEY, "state", "ACTIVE");
    s_assert_field(f->store, VM_KEY, "power_state", "RUNNING");
    s_assert_field(f->store, VM_KEY, "version", "3");
    berth__vm__free_unpacked(fresh, NULL);
    berth__vm__free_unpacked(before, NULL);
}

/* A power state from a host the VM is not placed on, or one the table does not know. */
static void test_vm_power_guards_host_and_name(void **state)
{
    fixture_t *f = *state;
    s_create_vm(f->store);
    model_tx_t *tx = model_tx_new();
    assert_int_equal(model_tx_vm_power(tx, VM_ID, "h2", "RUNNING"), 0);
    assert_int_equal(model_tx_commit(tx, f->store, NULL), 0);
    model_tx_destroy(&tx);
    s_assert_field(f->store, VM_KEY, "power_state", "NOSTATE");
    s_assert_field(f->store, VM_KEY, "version", "1");

    tx = model_tx_new();
    assert_int_equal(model_tx_vm_power(tx, VM_ID, "h1", "ON_FIRE"), MODEL_REFUSED);
    assert_string_equal(model_tx_error(tx),
                        "cannot change " VM_KEY ": 'ON_FIRE' is not a power state one can move to");
    model_tx_destroy(&tx);

    s_heartbeat(f->store, "RUNNING");
    s_assert_field(f->store, VM_KEY, "power_state", "RUNNING");
    s_assert_field(f->store, VM_KEY, "version", "2");
    s_heartbeat(f->store, "RUNNING"); /* no change: nothing written */
    s_assert_field(f->store, VM_KEY, "version", "2");
    assert_int_equal(s_xlen(f->store), 2);
}

/* put_changed: unchanged fields are not sent; a changed state needs its transition. */
static void test_put_changed_leaves_states_to_transitions(void **state)
{
    fixture_t *f = *state;
    s_create_vm(f->store);
    Berth__Vm *before = s_load_vm(f->store), *after = s_load_vm(f->store);
    free(after->state);
    after->state = strdup("ACTIVE");
    after->version = 7;
    model_tx_t *tx = model_tx_new();
    model_tx_put_changed(tx, VM_KEY, &before->base, &after->base);
    assert_non_null(model_tx_error(tx));
    assert_int_equal(model_tx_commit(tx, f->store, NULL), MODEL_REFUSED);
    model_tx_destroy(&tx);
    s_assert_field(f->store, VM_KEY, "state", "PROVISIONING");

    /* With the transition in the same step, the changed state and version are its to write. */
    free(after->fault);
    after->fault = strdup("none");
    tx = model_tx_new();
    assert_int_equal(model_tx_vm_transition(tx, before, "ACTIVE"), 0);
    model_tx_put_changed(tx, VM_KEY, &before->base, &after->base);
    assert_null(model_tx_error(tx));
    assert_int_equal(model_tx_commit(tx, f->store, NULL), 0);
    model_tx_destroy(&tx);
    s_assert_field(f->store, VM_KEY, "state", "ACTIVE");
    s_assert_field(f->store, VM_KEY, "version", "2");
    s_assert_field(f->store, VM_KEY, "fault", "none");

    /* Messages of two types cannot be compared. */
    Berth__Task task = BERTH__TASK__INIT;
    tx = model_tx_new();
    model_tx_put_changed(tx, VM_KEY, &task.base, &after->base);
    assert_non_null(strstr(model_tx_error(tx), "a Vm compared with a Task"));
    model_tx_destroy(&tx);
    berth__vm__free_unpacked(before, NULL);
    berth__vm__free_unpacked(after, NULL);
}

/* A stored VM reads back field by field as written: plain and non-ASCII strings, numbers at
   and past their type's range (past it: left at its default), booleans, empty lists, a null
   message, a message; fields in any order. */
static void test_load_reads_stored_fields(void **state)
{
    fixture_t *f = *state;
    s_create_vm(f->store);
    redisReply *r =
        store_command(f->store,
                      "HSET %s name caf\xc3\xa9 lease_days 2147483647 extensions 2147483648 "
                      "tombstone_until_ms -5 from_pool 1 networks [] network null fault abc",
                      VM_KEY);
    assert_non_null(r);
    freeReplyObject(r);
    Berth__Vm *vm = s_load_vm(f->store);
    assert_string_equal(vm->name, "caf\xc3\xa9");
    assert_string_equal(vm->owner, "alice");
    assert_string_equal(vm->fault, "abc");
    assert_int_equal(vm->lease_days, 2147483647);
    assert_int_equal(vm->extensions, 0);
    assert_int_equal(vm->tombstone_until_ms, -5);
    assert_true(vm->from_pool);
    assert_int_equal(vm->n_networks, 0);
    assert_null(vm->network);
    assert_non_null(vm->flavor);
    assert_int_equal(vm->flavor->ram_mb, 2048);
    berth__vm__free_unpacked(vm, NULL);

    /* The same fields written in another order than the message's. */
    r = store_command(f->store, "DEL %s", VM_KEY);
    freeReplyObject(r);
    r = store_command(f->store, "HSET %s version 4 owner bob state ACTIVE id %s", VM_KEY, VM_ID);
    freeReplyObject(r);
    vm = s_load_vm(f->store);
    assert_string_equal(vm->id, VM_ID);
    assert_string_equal(vm->state, "ACTIVE");
    assert_string_equal(vm->owner, "bob");
    assert_int_equal(vm->version, 4);
    berth__vm__free_unpacked(vm, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_writes_whole_object_at_version_1, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_put_fields_writes_only_named_fields, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_put_fields_refuses_unknown_and_state_fields,
                                        testenv_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_stale_copy_never_overwrites_fresh_power_state,
                                        testenv_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_vm_power_guards_host_and_name, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_put_changed_leaves_states_to_transitions,
                                        testenv_setup, testenv_teardown),
        cmocka_unit_test_setup_teardown(test_load_reads_stored_fields, testenv_setup,
                                        testenv_teardown),
    };
    return cmocka_run_group_tests(tests, testenv_group_setup, testenv_group_teardown);
}
