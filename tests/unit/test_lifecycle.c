/*  test_lifecycle: the one table of states. Every state's name and value round-trip; every
    allowed transition is accepted by the table and, through model_tx against a real
    redis-server, moves the stored state, bumps the version once and appends its event with
    at_ms; a sample of transitions the table does not allow is refused with an error naming
    the kind and both states, and nothing reaches Redis; a stale state or version is a
    conflict that writes nothing; observed (power) states write only real changes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "lifecycle.h"
#include "model.h"
#include "testenv.h"

#include <stdlib.h>
#include <string.h>

typedef testenv_fixture_t fixture_t;

/* ---- helpers ------------------------------------------------------------------------------ */

static void s_do(store_t *store, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    char *cmd = NULL;
    assert_true(vasprintf(&cmd, format, ap) >= 0);
    va_end(ap);
    /* Plain tokens only, so splitting on spaces is exact. */
    const char *argv[32];
    int argc = 0;
    for (char *tok = strtok(cmd, " "); tok && argc < 32; tok = strtok(NULL, " "))
        argv[argc++] = tok;
    redisReply *r = store_commandv(store, argc, argv, NULL);
    assert_non_null(r);
    assert_int_not_equal(r->type, REDIS_REPLY_ERROR);
    freeReplyObject(r);
    free(cmd);
}

/* HGET as a new string ("" when absent). */
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
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long n = r->integer;
    freeReplyObject(r);
    return n;
}

static long long s_exists(store_t *store, const char *key)
{
    redisReply *r = store_command(store, "EXISTS %s", key);
    assert_non_null(r);
    long long n = r->integer;
    freeReplyObject(r);
    return n;
}

/* The newest event; caller frees. */
static redisReply *s_last_event(store_t *store)
{
    redisReply *r = store_command(store, "XREVRANGE %s + - COUNT 1", STORE_EVENTS);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 1);
    return r;
}

static const char *s_event_field(redisReply *event, const char *field)
{
    redisReply *pairs = event->element[0]->element[1];
    for (size_t i = 0; i + 1 < pairs->elements; i += 2)
        if (strcmp(pairs->element[i]->str, field) == 0)
            return pairs->element[i + 1]->str;
    return NULL;
}

static void s_assert_event(store_t *store, const char *type, const char *key, const char *field,
                           const char *to, const char *name, const char *from, const char *version)
{
    redisReply *ev = s_last_event(store);
    assert_string_equal(s_event_field(ev, "type"), type);
    assert_string_equal(s_event_field(ev, "key"), key);
    assert_string_equal(s_event_field(ev, field), to);
    assert_string_equal(s_event_field(ev, "transition"), name);
    assert_string_equal(s_event_field(ev, "from"), from);
    assert_string_equal(s_event_field(ev, "version"), version);
    const char *at = s_event_field(ev, "at_ms");
    assert_non_null(at);
    assert_true(atoll(at) > 1700000000000LL); /* a real wall-clock time in ms */
    freeReplyObject(ev);
}

/* ---- the table ---------------------------------------------------------------------------- */

/* The states that hold quota: a request's VMs until they are rejected, fail or are gone. */
static void test_states_holding_quota(void **state)
{
    (void)state;
    /* The shelve states hold it too (a SHELVED VM its count and disk: quota_held says so). */
    const char *holds[] = { "PENDING_APPROVAL", "PROVISIONING", "ACTIVE", "DISPOSING",
                            "SHELVING",         "SHELVED",      "UNSHELVING",       "EXPIRING",     "EXPIRED" };
    const char *free_[] = { "", "ERROR", "DISPOSED", "REJECTED", "NOPE" };
    for (size_t i = 0; i < sizeof holds / sizeof *holds; i++)
        assert_true(lifecycle_vm_holds_quota(holds[i]));
    for (size_t i = 0; i < sizeof free_ / sizeof *free_; i++)
        assert_false(lifecycle_vm_holds_quota(free_[i]));
    assert_false(lifecycle_vm_holds_quota(NULL));
}

/* Leases: a running VM bills everything, an expired (powered off) one its disk only, one
   being built or gone nothing; a power row would win over the state's row. */
static void test_billing_factors(void **state)
{
    (void)state;
    struct {
        const char *vm, *power;
        int compute, disk;
    } rows[] = {
        { "ACTIVE", "RUNNING", 1, 1 },  { "ACTIVE", NULL, 1, 1 },     { "EXPIRING", "", 1, 1 },
        { "EXPIRED", "STOPPED", 0, 1 }, { "EXPIRED", NULL, 0, 1 },    { "PROVISIONING", NULL, 0, 0 },
        { "DISPOSED", NULL, 0, 0 },     { "NOPE", "RUNNING", 0, 0 },  { NULL, NULL, 0, 0 },
        /* By power: a stopped or crashed VM pays for its disk only, a suspended one keeps
           its RAM and vCPUs on the host and pays for them; a shelved or expired one never
           pays compute, whatever its power says. */
        { "ACTIVE", "STOPPED", 0, 1 },  { "ACTIVE", "CRASHED", 0, 1 },
        { "ACTIVE", "SUSPENDED", 1, 1 }, { "EXPIRING", "STOPPED", 0, 1 },
        { "EXPIRED", "RUNNING", 0, 1 }, { "SHELVED", "RUNNING", 0, 1 },
    };
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
        int compute = -1, disk = -1;
        lifecycle_billing(rows[i].vm, rows[i].power, &compute, &disk);
        assert_int_equal(compute, rows[i].compute);
        assert_int_equal(disk, rows[i].disk);
    }
    /* UNKNOWN (host DOWN) is not read as a power state at all: the last known one bills. */
    assert_true(lifecycle_power_billed_as_last("UNKNOWN"));
    assert_false(lifecycle_power_billed_as_last("STOPPED"));
    assert_false(lifecycle_power_billed_as_last(NULL));
    char error[256];
    assert_int_equal(lifecycle_check(LIFECYCLE_VM, "ACTIVE", "EXPIRING", error, sizeof error), 0);
    assert_int_equal(lifecycle_check(LIFECYCLE_VM, "EXPIRED", "ACTIVE", error, sizeof error), 0);
    assert_int_equal(lifecycle_check(LIFECYCLE_VM, "EXPIRED", "DISPOSING", error, sizeof error),
                     0);
    assert_int_equal(lifecycle_check(LIFECYCLE_VM, "EXPIRED", "EXPIRING", error, sizeof error),
                     -1);
    assert_int_equal(lifecycle_check(LIFECYCLE_VM, "PROVISIONING", "EXPIRED", error, sizeof error),
                     -1);
}

static void test_names_round_trip(void **state)
{
    (void)state;
    for (int kind = 0; kind < LIFECYCLE_KIND_LAST; kind++) {
        const lifecycle_kind_info_t *k = lifecycle_kind(kind);
        assert_non_null(k);
        assert_int_equal(lifecycle_kind_from_string(k->name), kind);
        assert_string_equal(k->states[0], "");
        for (int s = 1; s < k->n_states; s++) {
            assert_true(strlen(k->states[s]) > 0);
            /* Names are unique within a kind. */
            for (int o = 1; o < s; o++)
                assert_string_not_equal(k->states[o], k->states[s]);
        }
    }
    assert_string_equal(vm_state_to_string(VM_STATE_ACTIVE), "ACTIVE");
    assert_int_equal(vm_state_from_string("DISPOSING"), VM_STATE_DISPOSING);
    assert_int_equal(power_state_from_string("UNKNOWN"), POWER_STATE_UNKNOWN);
    assert_string_equal(task_state_to_string(TASK_STATE_SUCCEEDED), "SUCCEEDED");
    assert_int_equal(request_state_from_string("REJECTED"), REQUEST_STATE_REJECTED);
    assert_int_equal(vm_state_from_string("active"), -1); /* names are exact */
    assert_int_equal(vm_state_from_string(NULL), -1);
    assert_null(vm_state_to_string(VM_STATE_LAST));
    assert_null(vm_state_to_string(-1));
    assert_null(lifecycle_kind(LIFECYCLE_KIND_LAST));
    assert_int_equal(lifecycle_kind_from_string("host"), LIFECYCLE_HOST);
    assert_int_equal(lifecycle_kind_from_string("hosts"), -1);
    assert_int_equal(host_state_from_string("DISABLED"), HOST_STATE_DISABLED);
    assert_false(lifecycle_observed(LIFECYCLE_HOST));
    assert_true(lifecycle_observed(LIFECYCLE_POWER));
    assert_false(lifecycle_observed(LIFECYCLE_VM));
}

/* Every row is accepted by lifecycle_check and found by lifecycle_find; rows are well formed
   (no move to NONE, no row twice). */
static void test_every_allowed_transition_is_accepted(void **state)
{
    (void)state;
    size_t n;
    const lifecycle_transition_t *rows = lifecycle_transitions(&n);
    assert_true(n >= 20);
    char error[160];
    for (size_t i = 0; i < n; i++) {
        const lifecycle_transition_t *r = &rows[i];
        const lifecycle_kind_info_t *k = lifecycle_kind(r->kind);
        assert_non_null(k);
        assert_true(r->to > 0 && r->to < k->n_states);
        assert_true(r->name && *r->name && r->by && *r->by && r->when && *r->when);
        for (size_t j = 0; j < i; j++)
            assert_false(rows[j].kind == r->kind && rows[j].from == r->from && rows[j].to == r->to);
        const char *to = k->states[r->to];
        if (r->from == LIFECYCLE_ANY) {
            /* Observed: from any other state, and without knowing it. */
            assert_int_equal(lifecycle_check(r->kind, NULL, to, error, sizeof error), 0);
            assert_null(lifecycle_find(r->kind, "", to)); /* it does not create the VM */
            for (int s = 1; s < k->n_states; s++)
                if (s != r->to) {
                    if (lifecycle_check(r->kind, k->states[s], to, error, sizeof error) != 0)
                        fail_msg("%s -> %s refused: %s", k->states[s], to, error);
                    assert_ptr_equal(lifecycle_find(r->kind, k->states[s], to), r);
                }
            continue;
        }
        const char *from = k->states[r->from];
        if (lifecycle_check(r->kind, from, to, error, sizeof error) != 0)
            fail_msg("row %zu (%s %s -> %s) refused: %s", i, k->name, from, to, error);
        assert_ptr_equal(lifecycle_find(r->kind, from, to), r);
    }
}

typedef struct {
    lifecycle_kind_t kind;
    const char *from, *to;
    const char *error;
} s_refusal_t;

static const s_refusal_t s_refusals[] = {
    { LIFECYCLE_VM, "ACTIVE", "PROVISIONING",
      "vm: ACTIVE -> PROVISIONING is not an allowed transition" },
    { LIFECYCLE_VM, "DISPOSED", "ACTIVE", "vm: DISPOSED -> ACTIVE is not an allowed transition" },
    { LIFECYCLE_VM, "REJECTED", "PROVISIONING",
      "vm: REJECTED -> PROVISIONING is not an allowed transition" },
    { LIFECYCLE_VM, "PENDING_APPROVAL", "ACTIVE",
      "vm: PENDING_APPROVAL -> ACTIVE is not an allowed transition" },
    { LIFECYCLE_VM, "", "ACTIVE", "vm: (new) -> ACTIVE is not an allowed transition" },
    /* A shelved VM is unshelved before anything else but disposal; a shelve in
       progress cannot be disposed of. */
    { LIFECYCLE_VM, "SHELVED", "ACTIVE", "vm: SHELVED -> ACTIVE is not an allowed transition" },
    { LIFECYCLE_VM, "SHELVING", "DISPOSING",
      "vm: SHELVING -> DISPOSING is not an allowed transition" },
    { LIFECYCLE_VM, "ERROR", "SHELVING", "vm: ERROR -> SHELVING is not an allowed transition" },
    { LIFECYCLE_VM, "ACTIVE", "ACTIVE", "vm: ACTIVE -> ACTIVE is no change" },
    { LIFECYCLE_VM, "FOO", "ACTIVE", "'FOO' is not a vm state" },
    { LIFECYCLE_VM, "ACTIVE", "RUNNING", "'RUNNING' is not a vm state one can move to" },
    { LIFECYCLE_VM, "ACTIVE", "", "'' is not a vm state one can move to" },
    { LIFECYCLE_TASK, "SUCCEEDED", "RUNNING",
      "task: SUCCEEDED -> RUNNING is not an allowed transition" },
    { LIFECYCLE_TASK, "FAILED", "QUEUED", "task: FAILED -> QUEUED is not an allowed transition" },
    { LIFECYCLE_TASK, "", "RUNNING", "task: (new) -> RUNNING is not an allowed transition" },
    { LIFECYCLE_REQUEST, "APPROVED", "REJECTED",
      "request: APPROVED -> REJECTED is not an allowed transition" },
    { LIFECYCLE_REQUEST, "REJECTED", "APPROVED",
      "request: REJECTED -> APPROVED is not an allowed transition" },
    { LIFECYCLE_POWER, "RUNNING", "ACTIVE", "'ACTIVE' is not a power state one can move to" },
    { LIFECYCLE_POWER, "RUNNING", "RUNNING", "power: RUNNING -> RUNNING is no change" },
    { LIFECYCLE_POWER, "", "RUNNING", "power: (new) -> RUNNING is not an allowed transition" },
};

static void test_refused_transitions_name_what_is_wrong(void **state)
{
    (void)state;
    char error[160];
    for (size_t i = 0; i < sizeof s_refusals / sizeof s_refusals[0]; i++) {
        const s_refusal_t *r = &s_refusals[i];
        assert_int_equal(lifecycle_check(r->kind, r->from, r->to, error, sizeof error), -1);
        assert_string_equal(error, r->error);
        assert_null(lifecycle_find(r->kind, r->from, r->to));
    }
    assert_int_equal(lifecycle_check(LIFECYCLE_VM, NULL, "ACTIVE", error, sizeof error), -1);
    assert_string_equal(error, "vm state is not observed: a move to ACTIVE must say where from");
}

/* ---- through model_tx, on Redis ----------------------------------------------------------- */

/* Every row, committed: state moved, version bumped once, event appended with at_ms. */
static void test_every_allowed_transition_commits(void **state)
{
    fixture_t *f = *state;
    size_t n;
    const lifecycle_transition_t *rows = lifecycle_transitions(&n);
    for (size_t i = 0; i < n; i++) {
        const lifecycle_transition_t *r = &rows[i];
        const lifecycle_kind_info_t *k = lifecycle_kind(r->kind);
        const char *to = k->states[r->to];
        char key[64], field_from[32];
        snprintf(key, sizeof key, "berth:%s:{row-%zu}", k->object, i);
        model_tx_t *tx = model_tx_new();
        assert_non_null(tx);
        if (r->from == LIFECYCLE_ANY) {
            /* Any other state will do: the one before `to` in the enum (or after it). */
            int other = r->to > 1 ? r->to - 1 : r->to + 1;
            snprintf(field_from, sizeof field_from, "%s", k->states[other]);
            s_do(f->store, "HSET %s %s %s version 4 id x", key, k->field, field_from);
            assert_int_equal(model_tx_observe(tx, r->kind, key, to, NULL, NULL, "vm", "x", NULL),
                             0);
        } else if (r->from == 0) {
            field_from[0] = '\0';
            assert_int_equal(model_tx_transition(tx, r->kind, key, "", to, 0, NULL), 0);
        } else {
            snprintf(field_from, sizeof field_from, "%s", k->states[r->from]);
            s_do(f->store, "HSET %s %s %s version 4 id x", key, k->field, field_from);
            assert_int_equal(model_tx_transition(tx, r->kind, key, field_from, to, 4, NULL), 0);
        }
        assert_null(model_tx_error(tx));
        long long before = s_xlen(f->store);
        const char *why = NULL;
        int rc = model_tx_commit(tx, f->store, &why);
        if (rc != 0)
            fail_msg("row %zu (%s -> %s) not committed: %d %s", i, field_from, to, rc,
                     why ? why : "");
        model_tx_destroy(&tx);
        const char *version = r->from == 0 ? "1" : "5";
        s_assert_field(f->store, key, k->field, to);
        s_assert_field(f->store, key, "version", version);
        char *updated = s_hget(f->store, key, "updated_ms");
        assert_true(atoll(updated) > 1700000000000LL);
        free(updated);
        assert_int_equal(s_xlen(f->store), before + 1);
        s_assert_event(f->store, k->event, key, k->field, to, r->name, field_from, version);
    }
}

/* Refused while building: the call says so, commit says so, nothing reaches Redis even for
   the other, valid, parts of the transaction. */
static void test_refused_transition_sends_nothing(void **state)
{
    fixture_t *f = *state;
    const char *key = "berth:vm:{r1}";
    s_do(f->store, "HSET %s state ACTIVE version 3 owner alice", key);
    for (size_t i = 0; i < sizeof s_refusals / sizeof s_refusals[0]; i++) {
        const s_refusal_t *r = &s_refusals[i];
        model_tx_t *tx = model_tx_new();
        assert_non_null(tx);
        model_tx_hset(tx, key, "owner", "mallory");
        assert_int_equal(model_tx_transition(tx, r->kind, key, r->from, r->to, 3, NULL),
                         MODEL_REFUSED);
        model_tx_event(tx, "audit", "note", "never", NULL);
        const char *error = model_tx_error(tx);
        assert_non_null(error);
        assert_non_null(strstr(error, r->error));
        assert_non_null(strstr(error, key));
        const char *why = NULL;
        assert_int_equal(model_tx_commit(tx, f->store, &why), MODEL_REFUSED);
        assert_string_equal(why, error);
        model_tx_destroy(&tx);
    }
    /* Observed-only and missing arguments are refused too. */
    model_tx_t *tx = model_tx_new();
    assert_int_equal(model_tx_observe(tx, LIFECYCLE_VM, key, "ERROR", NULL, NULL, NULL),
                     MODEL_REFUSED);
    assert_non_null(strstr(model_tx_error(tx), "vm state is not observed"));
    model_tx_destroy(&tx);
    tx = model_tx_new();
    assert_int_equal(model_tx_transition(tx, LIFECYCLE_VM, key, NULL, "ERROR", 3, NULL),
                     MODEL_REFUSED);
    model_tx_destroy(&tx);
    tx = model_tx_new();
    assert_int_equal(model_tx_transition(tx, LIFECYCLE_VM, key, "", "PROVISIONING", 3, NULL),
                     MODEL_REFUSED);
    assert_non_null(strstr(model_tx_error(tx), "a new object has no version yet"));
    model_tx_destroy(&tx);
    s_assert_field(f->store, key, "owner", "alice");
    s_assert_field(f->store, key, "state", "ACTIVE");
    s_assert_field(f->store, key, "version", "3");
    assert_int_equal(s_xlen(f->store), 0);
}

/* Allowed by the table, but Redis holds something else: a conflict, and nothing written. */
static void test_stale_state_or_version_conflicts(void **state)
{
    fixture_t *f = *state;
    const char *key = "berth:vm:{c1}";
    s_do(f->store, "HSET %s state ACTIVE version 3 host h1", key);
    struct {
        const char *from;
        int64_t version;
    } stale[] = { { "PROVISIONING", 3 }, { "ACTIVE", 2 }, { "ACTIVE", 4 }, { "ACTIVE", 0 } };
    for (size_t i = 0; i < sizeof stale / sizeof stale[0]; i++) {
        model_tx_t *tx = model_tx_new();
        const char *to = strcmp(stale[i].from, "ACTIVE") == 0 ? "DISPOSING" : "ACTIVE";
        assert_int_equal(
            model_tx_transition(tx, LIFECYCLE_VM, key, stale[i].from, to, stale[i].version, NULL),
            0);
        model_tx_hset(tx, key, "host", "h2");
        assert_int_equal(model_tx_commit(tx, f->store, NULL), MODEL_CONFLICT);
        model_tx_destroy(&tx);
    }
    /* Creating what exists is a conflict as well. */
    model_tx_t *tx = model_tx_new();
    assert_int_equal(model_tx_transition(tx, LIFECYCLE_VM, key, "", "PROVISIONING", 0, NULL), 0);
    assert_int_equal(model_tx_commit(tx, f->store, NULL), MODEL_CONFLICT);
    model_tx_destroy(&tx);
    s_assert_field(f->store, key, "state", "ACTIVE");
    s_assert_field(f->store, key, "version", "3");
    s_assert_field(f->store, key, "host", "h1");
    assert_int_equal(s_xlen(f->store), 0);

    /* MODEL_VERSION_ANY checks the state only. */
    tx = model_tx_new();
    assert_int_equal(
        model_tx_transition(tx, LIFECYCLE_VM, key, "ACTIVE", "DISPOSING", MODEL_VERSION_ANY, NULL),
        0);
    assert_int_equal(model_tx_commit(tx, f->store, NULL), 0);
    model_tx_destroy(&tx);
    s_assert_field(f->store, key, "state", "DISPOSING");
    s_assert_field(f->store, key, "version", "4");
}

/* Observed states: a change writes, bumps and tells; no change, a failed guard or a missing
   object write nothing, and do not fail the rest of the transaction. */
static void test_observed_state_writes_only_changes(void **state)
{
    fixture_t *f = *state;
    const char *key = "berth:vm:{o1}", *gone = "berth:vm:{o2}";
    s_do(f->store, "HSET %s state ACTIVE power_state RUNNING version 7 host h1", key);

    model_tx_t *tx = model_tx_new();
    model_tx_observe(tx, LIFECYCLE_POWER, key, "RUNNING", "host", "h1", NULL);  /* no change */
    model_tx_observe(tx, LIFECYCLE_POWER, gone, "RUNNING", "host", "h1", NULL); /* no object */
    model_tx_hset(tx, "berth:host:h1", "last_seen_ms", "1");
    assert_int_equal(model_tx_commit(tx, f->store, NULL), 0);
    model_tx_destroy(&tx);
    s_assert_field(f->store, key, "version", "7");
    assert_int_equal(s_exists(f->store, gone), 0);
    s_assert_field(f->store, "berth:host:h1", "last_seen_ms", "1");
    assert_int_equal(s_xlen(f->store), 0);

    tx = model_tx_new();
    model_tx_observe(tx, LIFECYCLE_POWER, key, "STOPPED", "host", "h2", NULL); /* not its host */
    assert_int_equal(model_tx_commit(tx, f->store, NULL), 0);
    model_tx_destroy(&tx);
    s_assert_field(f->store, key, "power_state", "RUNNING");
    assert_int_equal(s_xlen(f->store), 0);

    tx = model_tx_new();
    model_tx_observe(tx, LIFECYCLE_POWER, key, "STOPPED", "host", "h1", "vm", "o1", NULL);
    assert_int_equal(model_tx_commit(tx, f->store, NULL), 0);
    model_tx_destroy(&tx);
    s_assert_field(f->store, key, "power_state", "STOPPED");
    s_assert_field(f->store, key, "state", "ACTIVE"); /* the lifecycle state is another field */
    s_assert_field(f->store, key, "version", "8");
    s_assert_event(f->store, "vm.power", key, "power_state", "STOPPED", "stopped", "RUNNING", "8");
    redisReply *ev = s_last_event(f->store);
    assert_string_equal(s_event_field(ev, "vm"), "o1");
    freeReplyObject(ev);
}

/* Two states of one object in one step: both checked, both written, one version bump; the
   transition wins over a put of the same field in the same transaction. */
static void test_one_step_bumps_version_once(void **state)
{
    fixture_t *f = *state;
    const char *key = "berth:vm:{b1}";
    s_do(f->store, "HSET %s state PROVISIONING power_state NOSTATE version 2 host h1", key);
    model_tx_t *tx = model_tx_new();
    assert_int_equal(model_tx_transition(tx, LIFECYCLE_VM, key, "PROVISIONING", "ACTIVE", 2, NULL),
                     0);
    assert_int_equal(model_tx_observe(tx, LIFECYCLE_POWER, key, "RUNNING", NULL, NULL, NULL), 0);
    model_tx_hset(tx, key, "state", "PROVISIONING"); /* a put cannot undo the transition */
    model_tx_hset(tx, key, "version", "99");
    assert_int_equal(model_tx_commit(tx, f->store, NULL), 0);
    model_tx_destroy(&tx);
    s_assert_field(f->store, key, "state", "ACTIVE");
    s_assert_field(f->store, key, "power_state", "RUNNING");
    s_assert_field(f->store, key, "version", "3");
    assert_int_equal(s_xlen(f->store), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_round_trip),
        cmocka_unit_test(test_states_holding_quota),
        cmocka_unit_test(test_billing_factors),
        cmocka_unit_test(test_every_allowed_transition_is_accepted),
        cmocka_unit_test(test_refused_transitions_name_what_is_wrong),
        cmocka_unit_test_setup_teardown(test_every_allowed_transition_commits, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_refused_transition_sends_nothing, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_stale_state_or_version_conflicts, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_observed_state_writes_only_changes, testenv_setup,
                                        testenv_teardown),
        cmocka_unit_test_setup_teardown(test_one_step_bumps_version_once, testenv_setup,
                                        testenv_teardown),
    };
    return cmocka_run_group_tests(tests, testenv_group_setup, testenv_group_teardown);
}
