/*  test_svc_approval_requests: the approval service against a real redis-server. The catalog
    is seeded exactly once (also when several instances race), requests create their VMs
    (each with the SSH keys asked for), provision tasks, due entries and events in one step,
    approval-required requests wait for a decision, idempotency keys answer the same request,
    and bad input is refused with the right code while Redis stays exactly as it was. The
    last tests go through the bus handlers and through a stopped Redis. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "bus_client.h"
#include "limit.h"
#include "model.h"
#include "testenv.h"
#include "util.h"
#include "../../services/approval/approval.h"
#include "../../services/approval/catalog.h"
#include "../../services/approval/decide.h"
#include "../../services/approval/extensions.h"
#include "../../services/approval/groups.h"
#include "../../services/approval/policy.h"
#include "../../services/approval/requests.h"

#include <ctype.h>
#include <czmq.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static testenv_redis_t *s_redis;
static store_t *s_store;
static policy_t s_policy;

static int s_group_setup(void **state)
{
    (void)state;
    policy_defaults(&s_policy);
    s_redis = testenv_redis_start(0);
    return s_redis ? 0 : -1;
}

static int s_group_teardown(void **state)
{
    (void)state;
    testenv_redis_destroy(&s_redis);
    return 0;
}

static int s_setup(void **state)
{
    (void)state;
    s_store = testenv_store(s_redis, 1);
    if (!s_store)
        return -1;
    /* The images the templates name, as the stager's store records them: a template is
       refused unless its image is there (catalog_create). */
    static const char *const images[] = { "debian-12", "ubuntu-24.04" };
    for (size_t i = 0; i < sizeof images / sizeof images[0]; i++) {
        redisReply *r = store_command(s_store, "HSET berth:image:%s name %s state READY",
                                      images[i], images[i]);
        if (!r || r->type == REDIS_REPLY_ERROR)
            return -1;
        freeReplyObject(r);
    }
    return 0;
}

static int s_teardown(void **state)
{
    (void)state;
    store_destroy(&s_store);
    return 0;
}

/* ---- helpers ---------------------------------------------------------------------------- */

static long long s_int(const char *command, const char *key)
{
    redisReply *r = store_command(s_store, "%s %s", command, key);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

static long long s_dbsize(void)
{
    redisReply *r = store_command(s_store, "DBSIZE");
    assert_non_null(r);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

/* ZSCORE as an integer; -1 when the member is absent. */
static long long s_zscore(const char *key, const char *member)
{
    redisReply *r = store_command(s_store, "ZSCORE %s %s", key, member);
    assert_non_null(r);
    long long v = -1;
    if (r->type == REDIS_REPLY_STRING)
        v = strtoll(r->str, NULL, 10);
    freeReplyObject(r);
    return v;
}

/* Events of type (and state, unless NULL) in the stream; about (unless NULL) must be the
   value of the event's field `field`. */
static int s_events(const char *type, const char *state, const char *field, const char *about)
{
    redisReply *r = store_command(s_store, "XRANGE %s - +", STORE_EVENTS);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    int n = 0;
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *fields = r->element[i]->element[1];
        const char *t = NULL, *s = NULL, *a = NULL;
        for (size_t k = 0; k + 1 < fields->elements; k += 2) {
            const char *name = fields->element[k]->str, *value = fields->element[k + 1]->str;
            if (streq(name, "type"))
                t = value;
            if (streq(name, "state"))
                s = value;
            if (field && streq(name, field))
                a = value;
        }
        if (t && streq(t, type) && (!state || (s && streq(s, state))) &&
            (!about || (a && streq(a, about))))
            n++;
    }
    freeReplyObject(r);
    return n;
}

typedef struct {
    long long keys;
    long long events;
} snapshot_t;

static snapshot_t s_snapshot(void)
{
    snapshot_t s = { s_dbsize(), s_int("XLEN", STORE_EVENTS) };
    return s;
}

static void s_assert_unchanged(snapshot_t before)
{
    snapshot_t now = s_snapshot();
    assert_int_equal(now.keys, before.keys);
    assert_int_equal(now.events, before.events);
}

static Berth__Vm *s_vm(const char *id)
{
    char key[KEYS_MAX];
    ProtobufCMessage *m = NULL;
    assert_int_equal(model_load(s_store, &berth__vm__descriptor, keys_vm(key, id), &m), 0);
    return (Berth__Vm *)m;
}

static Berth__Task *s_task(const char *id)
{
    char key[KEYS_MAX];
    ProtobufCMessage *m = NULL;
    assert_int_equal(model_load(s_store, &berth__task__descriptor, keys_task(key, id), &m), 0);
    return (Berth__Task *)m;
}

static void s_free(void *msg)
{
    if (msg)
        protobuf_c_message_free_unpacked(msg, NULL);
}

static void s_seed(void)
{
    fault_t fault = { 0 };
    assert_true(catalog_seed(s_store, &fault) >= 0);
    assert_int_equal(groups_ensure_default(s_store, &fault), 0);
}

/* The id of the template called name. */
static void s_template_id(const char *name, char id[UTIL_ID_LEN])
{
    Berth__Template *t = NULL;
    fault_t fault = { 0 };
    assert_int_equal(catalog_find(s_store, name, &t, &fault), 0);
    util_strlcpy(id, t->id, UTIL_ID_LEN);
    s_free(t);
}

static Berth__Request *s_create(const char *tmpl, const char *name, int count, const char *owner,
                                const char *key)
{
    Berth__CreateRequest msg = BERTH__CREATE_REQUEST__INIT;
    msg.template_ = (char *)tmpl;
    msg.name = (char *)name;
    msg.count = count;
    msg.owner = (char *)owner;
    msg.idempotency_key = (char *)(key ? key : "");
    Berth__Request *req = NULL;
    fault_t fault = { 0 };
    int rc = requests_create(s_store, &s_policy, &msg, 0, "trace-1", &req, &fault);
    if (rc != 0)
        fail_msg("create refused: %s %s", fault.code, fault.message);
    return req;
}

/* Expect a CreateRequest to be refused with code (and message, unless NULL). */
static void s_create_refused(const policy_t *policy, const char *tmpl, const char *name, int count,
                             const char *owner, const char *key, const char *code,
                             const char *message)
{
    Berth__CreateRequest msg = BERTH__CREATE_REQUEST__INIT;
    msg.template_ = (char *)tmpl;
    msg.name = (char *)name;
    msg.count = count;
    msg.owner = (char *)owner;
    msg.idempotency_key = (char *)(key ? key : "");
    Berth__Request *req = NULL;
    fault_t fault = { 0 };
    snapshot_t before = s_snapshot();
    assert_int_equal(requests_create(s_store, policy, &msg, 0, "trace-1", &req, &fault), -1);
    assert_null(req);
    assert_string_equal(fault.code, code);
    if (message)
        assert_string_equal(fault.message, message);
    s_assert_unchanged(before);
}

static Berth__Request *s_decide(const char *id, int approve, const char *actor, const char *reason,
                                fault_t *fault)
{
    Berth__DecideRequest msg = BERTH__DECIDE_REQUEST__INIT;
    msg.id = (char *)id;
    msg.approve = approve;
    msg.actor = (char *)actor;
    msg.reason = (char *)(reason ? reason : "");
    Berth__Request *req = NULL;
    char *roles[] = { "admin" };
    Berth__UserAssertion who = BERTH__USER_ASSERTION__INIT;
    who.user = (char *)actor;
    who.n_roles = 1;
    who.roles = roles;
    int rc = requests_decide(s_store, &s_policy, &msg, &who, "trace-2", &req, fault);
    assert_int_equal(rc == 0, req != NULL);
    return req;
}

/* ---- catalog ---------------------------------------------------------------------------- */

static void test_seed_once(void **state)
{
    (void)state;
    fault_t fault = { 0 };
    assert_int_equal(catalog_seed(s_store, &fault), 3);
    assert_int_equal(catalog_seed(s_store, &fault), 0);
    /* A second instance starting later finds the catalog in place. */
    store_t *other = testenv_store(s_redis, 0);
    assert_non_null(other);
    assert_int_equal(catalog_seed(other, &fault), 0);
    store_destroy(&other);

    assert_int_equal(s_int("ZCARD", "berth:templates"), 3);
    assert_int_equal(s_events("template.created", NULL, NULL, NULL), 3);
    Berth__TemplateList *list = NULL;
    assert_int_equal(catalog_list(s_store, &list, &fault), 0);
    assert_int_equal(list->n_templates, 3);
    const char *names[] = { "large", "medium", "small" };
    for (size_t i = 0; i < 3; i++) {
        Berth__Template *t = list->templates[i];
        assert_string_equal(t->name, names[i]);
        assert_true(util_is_uuid(t->id));
        char key[KEYS_MAX];
        snprintf(key, sizeof key, "berth:template-name:%s", t->name);
        redisReply *r = store_command(s_store, "HGET %s id", key);
        assert_non_null(r);
        assert_int_equal(r->type, REDIS_REPLY_STRING);
        assert_string_equal(r->str, t->id);
        freeReplyObject(r);
    }
    Berth__Template *large = list->templates[0], *small = list->templates[2];
    assert_int_equal(large->vcpus, 8);
    assert_int_equal(large->ram_mb, 16384);
    assert_int_equal(large->disk_gb, 100);
    assert_string_equal(large->image, "ubuntu-24.04");
    assert_int_equal(large->lease_days, 30);
    assert_true(large->requires_approval);
    assert_int_equal(small->vcpus, 1);
    assert_int_equal(small->ram_mb, 1024);
    assert_string_equal(small->os, "debian");
    assert_string_equal(small->image, "debian-12");
    assert_int_equal(small->lease_days, 7);
    assert_false(small->requires_approval);
    catalog_list_destroy(&list);
    assert_null(list);
}

/* The count check happens before the transaction; what keeps a late seeder out is the name
   check inside it. Here the count says "empty" while the names are taken. */
static void test_seed_checks_names_atomically(void **state)
{
    (void)state;
    s_seed();
    redisReply *r = store_command(s_store, "DEL berth:templates");
    assert_non_null(r);
    freeReplyObject(r);
    snapshot_t before = s_snapshot();
    fault_t fault = { 0 };
    assert_int_equal(catalog_seed(s_store, &fault), 0);
    s_assert_unchanged(before);
}

/* Several instances start at once on an empty store: one catalog, three templates. */
static void test_seed_race(void **state)
{
    (void)state;
    enum { N = 6 };
    int gate[2];
    assert_int_equal(pipe(gate), 0);
    pid_t pids[N];
    for (int i = 0; i < N; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            close(gate[1]);
            store_t *store = testenv_store(s_redis, 0);
            char c;
            /* Every child is released at the same moment: when the parent closes the pipe. */
            if (!store || read(gate[0], &c, 1) != 0)
                _exit(100);
            fault_t fault = { 0 };
            int added = catalog_seed(store, &fault);
            store_destroy(&store);
            _exit(added < 0 ? 101 : added);
        }
    }
    close(gate[0]);
    close(gate[1]);
    int total = 0;
    for (int i = 0; i < N; i++) {
        int status = 0;
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status));
        assert_true(WEXITSTATUS(status) <= 3);
        total += WEXITSTATUS(status);
    }
    assert_int_equal(total, 3);
    assert_int_equal(s_int("ZCARD", "berth:templates"), 3);
    assert_int_equal(s_events("template.created", NULL, NULL, NULL), 3);
    redisReply *r = store_command(s_store, "KEYS berth:template:*");
    assert_non_null(r);
    assert_int_equal(r->elements, 3);
    freeReplyObject(r);
}

static void test_create_template(void **state)
{
    (void)state;
    s_seed();
    Berth__Template t = BERTH__TEMPLATE__INIT;
    t.name = "tiny.v2";
    t.vcpus = 1;
    t.ram_mb = 512;
    t.disk_gb = 5;
    t.os = "debian";
    t.image = "debian-12";
    t.lease_days = 3;
    fault_t fault = { 0 };
    char id[UTIL_ID_LEN] = "";
    assert_int_equal(catalog_create(s_store, &s_policy, &t, "admin", id, &fault), 0);
    assert_true(util_is_uuid(id));
    assert_int_equal(s_events("template.created", NULL, "actor", "admin"), 1);

    Berth__TemplateList *list = NULL;
    assert_int_equal(catalog_list(s_store, &list, &fault), 0);
    assert_int_equal(list->n_templates, 4);
    assert_string_equal(list->templates[3]->name, "tiny.v2");
    assert_string_equal(list->templates[3]->id, id);
    assert_int_equal(list->templates[3]->ram_mb, 512);
    catalog_list_destroy(&list);

    /* Found by name and by id, in either case of the id. */
    Berth__Template *found = NULL;
    assert_int_equal(catalog_find(s_store, "tiny.v2", &found, &fault), 0);
    assert_string_equal(found->id, id);
    s_free(found);
    char upper[UTIL_ID_LEN];
    for (int i = 0; i < UTIL_ID_LEN; i++)
        upper[i] = (char)toupper((unsigned char)id[i]);
    assert_int_equal(catalog_find(s_store, upper, &found, &fault), 0);
    assert_string_equal(found->name, "tiny.v2");
    s_free(found);

    /* The same name again: CONFLICT, nothing written. */
    snapshot_t before = s_snapshot();
    assert_int_equal(catalog_create(s_store, &s_policy, &t, "admin", id, &fault), -1);
    assert_string_equal(fault.code, "CONFLICT");
    assert_string_equal(fault.message, "template 'tiny.v2' already exists");
    s_assert_unchanged(before);
}

static void test_create_template_refuses_bad_fields(void **state)
{
    (void)state;
    s_seed();
    char long_text[300];
    memset(long_text, 'a', sizeof long_text - 1);
    long_text[sizeof long_text - 1] = '\0';
    struct {
        const char *what;
        Berth__Template t;
        const char *actor;
    } cases[] = {
        { "name upper case", BERTH__TEMPLATE__INIT, "admin" },
        { "name empty", BERTH__TEMPLATE__INIT, "admin" },
        { "name a uuid", BERTH__TEMPLATE__INIT, "admin" },
        { "name 64 chars", BERTH__TEMPLATE__INIT, "admin" },
        { "vcpus 0", BERTH__TEMPLATE__INIT, "admin" },
        { "vcpus 257", BERTH__TEMPLATE__INIT, "admin" },
        { "ram 63", BERTH__TEMPLATE__INIT, "admin" },
        { "ram huge", BERTH__TEMPLATE__INIT, "admin" },
        { "disk 0", BERTH__TEMPLATE__INIT, "admin" },
        { "disk huge", BERTH__TEMPLATE__INIT, "admin" },
        { "lease 0", BERTH__TEMPLATE__INIT, "admin" },
        { "lease 3651", BERTH__TEMPLATE__INIT, "admin" },
        { "image empty", BERTH__TEMPLATE__INIT, "admin" },
        { "image slash", BERTH__TEMPLATE__INIT, "admin" },
        { "os too long", BERTH__TEMPLATE__INIT, "admin" },
        { "id given", BERTH__TEMPLATE__INIT, "admin" },
        { "no actor", BERTH__TEMPLATE__INIT, "" },
        { "actor with space", BERTH__TEMPLATE__INIT, "ad min" },
    };
    size_t n = sizeof cases / sizeof cases[0];
    for (size_t i = 0; i < n; i++) {
        Berth__Template *t = &cases[i].t;
        t->name = "good-name";
        t->vcpus = 2;
        t->ram_mb = 2048;
        t->disk_gb = 20;
        t->os = "debian";
        t->image = "debian-12";
        t->lease_days = 10;
    }
    cases[0].t.name = "Good";
    cases[1].t.name = "";
    cases[2].t.name = "0b5e3c1a-9f7d-4a51-8b2e-3c4d5e6f7a8b";
    cases[3].t.name = long_text + sizeof long_text - 65;
    cases[4].t.vcpus = 0;
    cases[5].t.vcpus = 257;
    cases[6].t.ram_mb = 63;
    cases[7].t.ram_mb = 4194305;
    cases[8].t.disk_gb = 0;
    cases[9].t.disk_gb = 65537;
    cases[10].t.lease_days = 0;
    cases[11].t.lease_days = 3651;
    cases[12].t.image = "";
    cases[13].t.image = "../etc/passwd";
    cases[14].t.os = long_text;
    cases[15].t.id = "0b5e3c1a-9f7d-4a51-8b2e-3c4d5e6f7a8b";
    snapshot_t before = s_snapshot();
    for (size_t i = 0; i < n; i++) {
        fault_t fault = { 0 };
        char id[UTIL_ID_LEN] = "";
        int rc = catalog_create(s_store, &s_policy, &cases[i].t, cases[i].actor, id, &fault);
        if (rc != -1 || strcmp(fault.code, "BAD_REQUEST") != 0)
            fail_msg("case '%s' gave %d %s", cases[i].what, rc, fault.code);
        assert_string_equal(id, "");
    }
    s_assert_unchanged(before);
    /* A NULL template (CreateTemplate without one) is refused too. */
    fault_t fault = { 0 };
    char id[UTIL_ID_LEN] = "";
    assert_int_equal(catalog_create(s_store, &s_policy, NULL, "admin", id, &fault), -1);
    assert_string_equal(fault.code, "BAD_REQUEST");
    /* The catalog cap is enforced. */
    policy_t small = s_policy;
    small.max_templates = 3;
    assert_int_equal(catalog_create(s_store, &small, &cases[0].t, "admin", id, &fault), -1);
    cases[0].t.name = "fourth";
    assert_int_equal(catalog_create(s_store, &small, &cases[0].t, "admin", id, &fault), -1);
    assert_string_equal(fault.code, "CONFLICT");
    s_assert_unchanged(before);
}

/* ---- requests --------------------------------------------------------------------------- */

static void test_create_request_queues_provisioning(void **state)
{
    (void)state;
    s_seed();
    char small[UTIL_ID_LEN];
    s_template_id("small", small);
    int64_t start = util_now_ms();
    Berth__Request *req = s_create("small", "web", 2, "alice", NULL);
    assert_true(util_is_uuid(req->id));
    assert_string_equal(req->state, "APPROVED");
    assert_string_equal(req->decided_by, "policy");
    assert_string_equal(req->template_, small);
    assert_string_equal(req->owner, "alice");
    assert_int_equal(req->count, 2);
    assert_int_equal(req->version, 1);
    assert_true(req->created_ms >= start);
    assert_int_equal(req->n_vms, 2);
    assert_int_equal(req->n_tasks, 2);

    const char *names[] = { "web-1", "web-2" };
    for (size_t i = 0; i < 2; i++) {
        Berth__Vm *vm = s_vm(req->vms[i]);
        assert_string_equal(vm->id, req->vms[i]);
        assert_string_equal(vm->name, names[i]);
        assert_string_equal(vm->state, "PROVISIONING");
        assert_string_equal(vm->power_state, "NOSTATE");
        assert_string_equal(vm->template_, small);
        assert_string_equal(vm->owner, "alice");
        assert_string_equal(vm->request, req->id);
        assert_non_null(vm->flavor);
        assert_int_equal(vm->flavor->vcpus, 1);
        assert_int_equal(vm->flavor->ram_mb, 1024);
        assert_int_equal(vm->flavor->disk_gb, 10);
        assert_string_equal(vm->image, "debian-12");
        assert_string_equal(vm->os, "debian");
        assert_int_equal(vm->lease_days, 7);
        assert_int_equal(vm->version, 1);
        assert_int_equal(vm->created_ms, req->created_ms);
        assert_true(vm->lease == NULL || vm->lease->expires_ms == 0);
        assert_string_equal(vm->task, req->tasks[i]);
        assert_int_equal(s_zscore("berth:vms", vm->id), req->created_ms);
        assert_int_equal(s_events("vm.state", "PROVISIONING", "vm", vm->id), 1);

        Berth__Task *task = s_task(req->tasks[i]);
        assert_string_equal(task->kind, "PROVISION");
        assert_string_equal(task->state, "QUEUED");
        assert_string_equal(task->stage, "queued");
        assert_int_equal(task->percent, 0);
        assert_string_equal(task->target, vm->id);
        assert_string_equal(task->owner, "alice");
        assert_string_equal(task->request_id, "trace-1");
        assert_int_equal(task->version, 1);
        assert_int_equal(task->created_ms, req->created_ms);
        assert_int_equal(s_zscore("berth:tasks:due", task->id), 0);
        assert_int_equal(s_events("task.state", "QUEUED", "task", task->id), 1);
        s_free(task);
        s_free(vm);
    }
    assert_int_equal(s_zscore("berth:requests", req->id), req->created_ms);
    assert_int_equal(s_events("request.state", "APPROVED", "request", req->id), 1);
    assert_int_equal(s_events("vm.state", NULL, NULL, NULL), 2);
    assert_int_equal(s_int("ZCARD", "berth:tasks:due"), 2);

    /* What is stored is what was answered. */
    Berth__Request *again = NULL;
    fault_t fault = { 0 };
    assert_int_equal(requests_get(s_store, req->id, &again, &fault), 0);
    assert_string_equal(again->state, "APPROVED");
    assert_int_equal(again->n_vms, 2);
    assert_string_equal(again->vms[1], req->vms[1]);
    assert_string_equal(again->tasks[0], req->tasks[0]);
    s_free(again);
    s_free(req);

    /* By template id, count 0 (means 1): the VM gets the name as given. */
    req = s_create(small, "db", 0, "bob", NULL);
    assert_int_equal(req->count, 1);
    assert_int_equal(req->n_vms, 1);
    Berth__Vm *vm = s_vm(req->vms[0]);
    assert_string_equal(vm->name, "db");
    assert_string_equal(vm->owner, "bob");
    s_free(vm);
    s_free(req);
    assert_int_equal(s_int("ZCARD", "berth:vms"), 3);
    assert_int_equal(s_int("ZCARD", "berth:requests"), 2);
}

static void test_approval_required_then_approved(void **state)
{
    (void)state;
    s_seed();
    Berth__Request *req = s_create("large", "big", 2, "carol", NULL);
    assert_string_equal(req->state, "PENDING_APPROVAL");
    assert_string_equal(req->decided_by, "");
    assert_int_equal(req->n_vms, 2);
    assert_int_equal(req->n_tasks, 0);
    assert_int_equal(s_int("ZCARD", "berth:tasks:due"), 0);
    assert_int_equal(s_events("task.state", NULL, NULL, NULL), 0);
    assert_int_equal(s_events("request.state", "PENDING_APPROVAL", "request", req->id), 1);
    for (size_t i = 0; i < 2; i++) {
        Berth__Vm *vm = s_vm(req->vms[i]);
        assert_string_equal(vm->state, "PENDING_APPROVAL");
        assert_string_equal(vm->task, "");
        assert_int_equal(vm->flavor->ram_mb, 16384);
        assert_int_equal(vm->lease_days, 30);
        assert_int_equal(s_events("vm.state", "PENDING_APPROVAL", "vm", vm->id), 1);
        s_free(vm);
    }

    fault_t fault = { 0 };
    Berth__Request *approved = s_decide(req->id, 1, "admin", "ok for the project", &fault);
    assert_non_null(approved);
    assert_string_equal(approved->state, "APPROVED");
    assert_string_equal(approved->decided_by, "admin");
    assert_int_equal(approved->version, 2);
    assert_int_equal(approved->n_tasks, 2);
    assert_int_equal(s_int("ZCARD", "berth:tasks:due"), 2);
    assert_int_equal(s_events("request.state", "APPROVED", "request", req->id), 1);
    for (size_t i = 0; i < 2; i++) {
        Berth__Vm *vm = s_vm(approved->vms[i]);
        assert_string_equal(vm->state, "PROVISIONING");
        assert_int_equal(vm->version, 2);
        assert_string_equal(vm->task, approved->tasks[i]);
        assert_string_equal(vm->name, i == 0 ? "big-1" : "big-2");
        assert_int_equal(vm->flavor->vcpus, 8);
        assert_int_equal(s_events("vm.state", "PROVISIONING", "vm", vm->id), 1);
        Berth__Task *task = s_task(approved->tasks[i]);
        assert_string_equal(task->state, "QUEUED");
        assert_string_equal(task->target, vm->id);
        assert_string_equal(task->owner, "carol");
        assert_string_equal(task->request_id, "trace-2");
        assert_int_equal(s_zscore("berth:tasks:due", task->id), 0);
        s_free(task);
        s_free(vm);
    }
    /* Each move names its row of the lifecycle table and the state it left. */
    assert_int_equal(s_events("vm.state", "PROVISIONING", "transition", "approve"), 2);
    assert_int_equal(s_events("vm.state", "PROVISIONING", "from", "PENDING_APPROVAL"), 2);
    assert_int_equal(s_events("request.state", "APPROVED", "transition", "approve"), 1);
    assert_int_equal(s_events("task.state", "QUEUED", "transition", "queue"), 2);

    /* Approving again answers the same request and creates nothing. */
    snapshot_t before = s_snapshot();
    Berth__Request *twice = s_decide(req->id, 1, "admin", NULL, &fault);
    assert_non_null(twice);
    assert_string_equal(twice->state, "APPROVED");
    assert_int_equal(twice->version, 2);
    assert_string_equal(twice->tasks[0], approved->tasks[0]);
    s_assert_unchanged(before);
    /* Rejecting an approved request is a conflict. */
    assert_null(s_decide(req->id, 0, "admin", NULL, &fault));
    assert_string_equal(fault.code, "CONFLICT");
    s_assert_unchanged(before);
    s_free(twice);
    s_free(approved);
    s_free(req);
}

/* File an extension of vm by days for user (roles: NULL, or one platform role). */
static Berth__Request *s_extend(const char *vm, int days, const char *user, const char *role,
                                fault_t *fault)
{
    Berth__CreateExtension ask = BERTH__CREATE_EXTENSION__INIT;
    ask.vm = (char *)vm;
    ask.days = days;
    ask.beyond = "the VM's lease was extended 1 times already";
    char *roles[] = { (char *)role };
    Berth__UserAssertion who = BERTH__USER_ASSERTION__INIT;
    who.user = (char *)user;
    who.n_roles = role ? 1 : 0;
    who.roles = role ? roles : NULL;
    Berth__Request *req = NULL;
    int rc = extensions_create(s_store, &ask, &who, "trace-x", &req, fault);
    assert_int_equal(rc == 0, req != NULL);
    return req;
}

/* Lease extensions beyond the lease policy: a request of kind extension in the VM's group,
   decided by the group's policy (auto: approved at once; conditional: a manager's). An
   approval, at once or later, adds the timer that has taskmgr apply it; a rejection does
   not. Who may not extend the VM learns nothing; a VM not running yet cannot be extended. */
static void test_extension_request(void **state)
{
    (void)state;
    s_seed();
    Berth__Request *made = s_create("small", "lx", 1, "erin", NULL);
    char vm[UTIL_ID_LEN], key[KEYS_MAX], timer[64];
    util_strlcpy(vm, made->vms[0], sizeof vm);
    s_free(made);
    fault_t fault = { 0 };
    assert_null(s_extend(vm, 1, "erin", NULL, &fault));
    assert_string_equal(fault.code, "CONFLICT"); /* PROVISIONING */
    redisReply *r = store_command(s_store, "HSET %s state ACTIVE", keys_vm(key, vm));
    freeReplyObject(r);

    snapshot_t before = s_snapshot();
    fault = (fault_t){ 0 };
    assert_null(s_extend(vm, 1, "zed", NULL, &fault));
    assert_string_equal(fault.code, "NOT_FOUND");
    fault = (fault_t){ 0 };
    assert_null(s_extend(vm, 0, "erin", NULL, &fault));
    assert_string_equal(fault.code, "BAD_REQUEST");
    s_assert_unchanged(before);

    /* The default group decides by auto: approved by policy, the timer due at once. */
    Berth__Request *req = s_extend(vm, 2, "erin", NULL, &fault);
    assert_non_null(req);
    assert_string_equal(req->kind, "extension");
    assert_string_equal(req->state, "APPROVED");
    assert_string_equal(req->decided_by, "policy");
    assert_string_equal(req->extension->vm, vm);
    assert_int_equal(req->extension->days, 2);
    snprintf(timer, sizeof timer, "extend:%s", req->id);
    assert_true(s_zscore("berth:timers", timer) > 0);
    assert_int_equal(s_events("request.state", "APPROVED", "request", req->id), 1);
    s_free(req);

    /* conditional: never small for an extension, so a manager (or an admin) decides. */
    Berth__Group *g = NULL;
    assert_int_equal(groups_find(s_store, "default", &g, &fault), 0);
    keys_build(key, KEYS_GROUP, g->id, NULL);
    s_free(g);
    r = store_command(s_store, "HSET %s approval_policy conditional", key);
    freeReplyObject(r);
    Berth__Request *waits = s_extend(vm, 1, "erin", NULL, &fault);
    assert_non_null(waits);
    assert_string_equal(waits->state, "PENDING_APPROVAL");
    assert_string_equal(waits->policy, "manager");
    assert_string_equal(waits->awaiting, "manager");
    snprintf(timer, sizeof timer, "extend:%s", waits->id);
    assert_int_equal(s_zscore("berth:timers", timer), -1);
    Berth__Request *approved = s_decide(waits->id, 1, "admin", NULL, &fault);
    assert_non_null(approved);
    assert_string_equal(approved->state, "APPROVED");
    assert_true(s_zscore("berth:timers", timer) > 0);
    s_free(approved);
    s_free(waits);
    Berth__Request *other = s_extend(vm, 1, "erin", NULL, &fault);
    Berth__Request *rejected = s_decide(other->id, 0, "admin", "not this time", &fault);
    assert_non_null(rejected);
    assert_string_equal(rejected->reason, "not this time");
    snprintf(timer, sizeof timer, "extend:%s", other->id);
    assert_int_equal(s_zscore("berth:timers", timer), -1);
    s_free(rejected);
    s_free(other);
}

/* Nobody decides their own request, admin or not; nothing changes. */
static void test_own_request_not_decided(void **state)
{
    (void)state;
    s_seed();
    Berth__Request *req = s_create("large", "mine", 1, "admin", NULL);
    assert_string_equal(req->state, "PENDING_APPROVAL");
    snapshot_t before = s_snapshot();
    for (int approve = 0; approve <= 1; approve++) {
        fault_t fault = { 0 };
        assert_null(s_decide(req->id, approve, "admin", NULL, &fault));
        assert_string_equal(fault.code, "FORBIDDEN");
    }
    s_assert_unchanged(before);
    fault_t fault = { 0 };
    Berth__Request *approved = s_decide(req->id, 1, "second-admin", NULL, &fault);
    assert_non_null(approved);
    assert_string_equal(approved->decided_by, "second-admin");
    s_free(approved);
    s_free(req);
}

static void test_rejected_builds_nothing(void **state)
{
    (void)state;
    s_seed();
    Berth__Request *req = s_create("large", "nope", 1, "dave", NULL);
    fault_t fault = { 0 };
    Berth__Request *rejected = s_decide(req->id, 0, "admin", "too big for a test", &fault);
    assert_non_null(rejected);
    assert_string_equal(rejected->state, "REJECTED");
    assert_string_equal(rejected->decided_by, "admin");
    assert_string_equal(rejected->reason, "too big for a test");
    assert_int_equal(rejected->n_tasks, 0);
    Berth__Vm *vm = s_vm(req->vms[0]);
    assert_string_equal(vm->state, "REJECTED");
    assert_string_equal(vm->name, "nope");
    assert_string_equal(vm->task, "");
    assert_int_equal(vm->version, 2);
    s_free(vm);
    assert_int_equal(s_int("ZCARD", "berth:tasks:due"), 0);
    assert_int_equal(s_events("vm.state", "REJECTED", "vm", req->vms[0]), 1);
    assert_int_equal(s_events("request.state", "REJECTED", "request", req->id), 1);
    assert_int_equal(s_events("vm.state", "REJECTED", "transition", "reject"), 1);
    assert_int_equal(s_events("task.state", NULL, NULL, NULL), 0);
    redisReply *r = store_command(s_store, "KEYS berth:task:*");
    assert_non_null(r);
    assert_int_equal(r->elements, 0);
    freeReplyObject(r);

    snapshot_t before = s_snapshot();
    Berth__Request *again = s_decide(req->id, 0, "admin", NULL, &fault);
    assert_non_null(again);
    assert_string_equal(again->state, "REJECTED");
    s_free(again);
    assert_null(s_decide(req->id, 1, "admin", NULL, &fault));
    assert_string_equal(fault.code, "CONFLICT");
    char expected[128];
    snprintf(expected, sizeof expected, "request '%s' is already REJECTED", req->id);
    assert_string_equal(fault.message, expected);
    s_assert_unchanged(before);
    s_free(rejected);
    s_free(req);
}

/* Two approval instances deciding the same request at once: one decision wins, the other
   instance's answer follows it (same way: the request; the other way: CONFLICT). */
static void test_decide_race(void **state)
{
    (void)state;
    s_seed();
    Berth__Request *req = s_create("large", "race", 3, "erin", NULL);
    enum { N = 6 };
    int gate[2];
    assert_int_equal(pipe(gate), 0);
    pid_t pids[N];
    for (int i = 0; i < N; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            close(gate[1]);
            store_t *store = testenv_store(s_redis, 0);
            char c;
            if (!store || read(gate[0], &c, 1) != 0)
                _exit(100);
            Berth__DecideRequest msg = BERTH__DECIDE_REQUEST__INIT;
            msg.id = req->id;
            msg.approve = 1;
            msg.actor = "admin";
            Berth__Request *out = NULL;
            fault_t fault = { 0 };
            char *roles[] = { "admin" };
            Berth__UserAssertion who = BERTH__USER_ASSERTION__INIT;
            who.user = "admin";
            who.n_roles = 1;
            who.roles = roles;
            int rc = requests_decide(store, &s_policy, &msg, &who, "trace-3", &out, &fault);
            int ok = rc == 0 && streq(out->state, "APPROVED");
            s_free(out);
            store_destroy(&store);
            _exit(ok ? 0 : 1);
        }
    }
    close(gate[0]);
    close(gate[1]);
    for (int i = 0; i < N; i++) {
        int status = 0;
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    /* Exactly one set of tasks, one approval event, versions bumped once. */
    assert_int_equal(s_int("ZCARD", "berth:tasks:due"), 3);
    assert_int_equal(s_events("request.state", "APPROVED", "request", req->id), 1);
    assert_int_equal(s_events("vm.state", "PROVISIONING", NULL, NULL), 3);
    Berth__Request *now = NULL;
    fault_t fault = { 0 };
    assert_int_equal(requests_get(s_store, req->id, &now, &fault), 0);
    assert_int_equal(now->version, 2);
    assert_int_equal(now->n_tasks, 3);
    s_free(now);
    s_free(req);
}

static void test_idempotency_key(void **state)
{
    (void)state;
    s_seed();
    Berth__Request *first = s_create("small", "app", 2, "frank", "order-42");
    snapshot_t before = s_snapshot();
    Berth__Request *second = s_create("small", "app", 2, "frank", "order-42");
    assert_string_equal(second->id, first->id);
    assert_int_equal(second->n_vms, 2);
    assert_string_equal(second->vms[0], first->vms[0]);
    s_assert_unchanged(before);
    s_free(second);

    redisReply *r = store_command(s_store, "PTTL berth:idem:frank:order-42");
    assert_non_null(r);
    assert_true(r->integer > 0 && r->integer <= 24 * 3600 * 1000LL);
    freeReplyObject(r);

    /* The key is the owner's: another owner with the same key gets its own request. */
    Berth__Request *other = s_create("small", "app", 1, "grace", "order-42");
    assert_string_not_equal(other->id, first->id);
    s_free(other);

    /* Past its expiry the key no longer answers: a new request is created. */
    r = store_command(s_store, "HSET berth:idem:frank:order-42 expires_ms 1");
    assert_non_null(r);
    freeReplyObject(r);
    Berth__Request *later = s_create("small", "app", 1, "frank", "order-42");
    assert_string_not_equal(later->id, first->id);
    Berth__Request *again = s_create("small", "app", 1, "frank", "order-42");
    assert_string_equal(again->id, later->id);
    s_free(again);
    s_free(later);
    s_free(first);
    assert_int_equal(s_int("ZCARD", "berth:requests"), 3);
}

/* A key reused for another body is refused (the caller would otherwise silently get the
   first request instead of what it asked for); the same body, however spelt, is answered. */
static void test_idempotency_key_other_body(void **state)
{
    (void)state;
    s_seed();
    Berth__Request *first = s_create("small", "db", 1, "ivan", "k-1");
    s_create_refused(&s_policy, "small", "db", 2, "ivan", "k-1", "IDEMPOTENCY_KEY_REUSED", NULL);
    s_create_refused(&s_policy, "small", "db2", 1, "ivan", "k-1", "IDEMPOTENCY_KEY_REUSED", NULL);
    s_create_refused(&s_policy, "medium", "db", 1, "ivan", "k-1", "IDEMPOTENCY_KEY_REUSED", NULL);
    /* The refusal says which header and which request. */
    Berth__CreateRequest msg = BERTH__CREATE_REQUEST__INIT;
    msg.template_ = "small";
    msg.name = "dbx";
    msg.count = 1;
    msg.owner = "ivan";
    msg.idempotency_key = "k-1";
    Berth__Request *req = NULL;
    fault_t fault = { 0 };
    assert_int_equal(requests_create(s_store, &s_policy, &msg, 0, NULL, &req, &fault), -1);
    assert_string_equal(error_detail_get(&fault, "header"), "Idempotency-Key");
    assert_string_equal(error_detail_get(&fault, "request"), first->id);
    assert_int_equal(error_http_status(fault.code), 422);
    /* count 0 means 1: the same body. */
    Berth__Request *same = s_create("small", "db", 0, "ivan", "k-1");
    assert_string_equal(same->id, first->id);
    s_free(same);
    /* A key stored before bodies were hashed has no hash: it answers as it always did. */
    redisReply *r = store_command(s_store, "HDEL berth:idem:ivan:k-1 body");
    assert_non_null(r);
    freeReplyObject(r);
    Berth__Request *old = s_create("small", "other", 3, "ivan", "k-1");
    assert_string_equal(old->id, first->id);
    s_free(old);
    s_free(first);
    assert_int_equal(s_int("ZCARD", "berth:requests"), 1);
}

/* Several callers with one key at once: one request, every caller gets it. */
static void test_idempotency_key_race(void **state)
{
    (void)state;
    s_seed();
    enum { N = 6 };
    int gate[2], out[2];
    assert_int_equal(pipe(gate), 0);
    assert_int_equal(pipe(out), 0);
    pid_t pids[N];
    for (int i = 0; i < N; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            close(gate[1]);
            close(out[0]);
            store_t *store = testenv_store(s_redis, 0);
            char c;
            if (!store || read(gate[0], &c, 1) != 0)
                _exit(100);
            Berth__CreateRequest msg = BERTH__CREATE_REQUEST__INIT;
            msg.template_ = "small";
            msg.name = "same";
            msg.count = 1;
            msg.owner = "heidi";
            msg.idempotency_key = "k";
            Berth__Request *req = NULL;
            fault_t fault = { 0 };
            if (requests_create(store, &s_policy, &msg, 0, NULL, &req, &fault) != 0)
                _exit(1);
            char line[UTIL_ID_LEN + 1];
            snprintf(line, sizeof line, "%s\n", req->id);
            ssize_t w = write(out[1], line, strlen(line));
            s_free(req);
            store_destroy(&store);
            _exit(w == (ssize_t)strlen(line) ? 0 : 2);
        }
    }
    close(gate[0]);
    close(out[1]);
    close(gate[1]);
    for (int i = 0; i < N; i++) {
        int status = 0;
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    char ids[N * (UTIL_ID_LEN + 1) + 1];
    size_t got = 0;
    ssize_t n;
    while ((n = read(out[0], ids + got, sizeof ids - 1 - got)) > 0)
        got += (size_t)n;
    close(out[0]);
    ids[got] = '\0';
    assert_int_equal(got, (size_t)N * UTIL_ID_LEN);
    for (int i = 1; i < N; i++)
        assert_memory_equal(ids + i * UTIL_ID_LEN, ids, UTIL_ID_LEN - 1);
    assert_int_equal(s_int("ZCARD", "berth:requests"), 1);
    assert_int_equal(s_int("ZCARD", "berth:vms"), 1);
}

#define KEY_LINE                                                                                   \
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG8ASS8xh/TLWQiuwnuHZI679ehIVEcoupFQO1qD2F+U ann@laptop"
#define KEY_FP "SHA256:rAayeiFDPMXJLjf4uOQBGMtZHMFB5UrwWjOx1RoCRBI"

/* SSH keys the gateway resolved travel with the request to every VM it makes; a key that is
   not the owner's, not a key line, or one too many is refused and nothing is written. */
static void test_ssh_keys_go_to_every_vm(void **state)
{
    (void)state;
    s_seed();
    Berth__SshKey key = BERTH__SSH_KEY__INIT, *keys[LIMIT_REQUEST_SSH_KEYS_MAX + 1];
    key.name = "laptop";
    key.user = "alice";
    key.type = "ssh-ed25519";
    key.public_key = KEY_LINE;
    key.fingerprint = KEY_FP;
    for (size_t i = 0; i <= LIMIT_REQUEST_SSH_KEYS_MAX; i++)
        keys[i] = &key;
    Berth__CreateRequest msg = BERTH__CREATE_REQUEST__INIT;
    msg.template_ = "small";
    msg.name = "keyed";
    msg.count = 2;
    msg.owner = "alice";
    msg.idempotency_key = "";
    msg.n_ssh_keys = 1;
    msg.ssh_keys = keys;
    Berth__Request *req = NULL;
    fault_t fault = { 0 };
    assert_int_equal(requests_create(s_store, &s_policy, &msg, 0, NULL, &req, &fault), 0);
    assert_int_equal(req->n_ssh_keys, 1);
    assert_string_equal(req->ssh_keys[0]->fingerprint, KEY_FP);
    for (size_t i = 0; i < req->n_vms; i++) {
        Berth__Vm *vm = s_vm(req->vms[i]);
        assert_int_equal(vm->n_ssh_keys, 1);
        assert_string_equal(vm->ssh_keys[0]->name, "laptop");
        assert_string_equal(vm->ssh_keys[0]->public_key, KEY_LINE);
        s_free(vm);
    }
    s_free(req);
    /* Refused, Redis unchanged: someone else's key, a line with a second line in it, too many. */
    Berth__SshKey bobs = key, smuggled = key;
    bobs.user = "bob";
    smuggled.public_key = KEY_LINE "\nruncmd: [reboot]";
    Berth__SshKey *bad[][1] = { { &bobs }, { &smuggled } };
    for (size_t b = 0; b < 3; b++) {
        msg.ssh_keys = b < 2 ? bad[b] : keys;
        msg.n_ssh_keys = b < 2 ? 1 : LIMIT_REQUEST_SSH_KEYS_MAX + 1;
        snapshot_t before = s_snapshot();
        memset(&fault, 0, sizeof fault);
        req = NULL;
        assert_int_equal(requests_create(s_store, &s_policy, &msg, 0, NULL, &req, &fault), -1);
        assert_null(req);
        assert_string_equal(fault.code, "BAD_REQUEST");
        assert_string_equal(error_detail_get(&fault, "field"), "ssh_keys");
        s_assert_unchanged(before);
    }
}

static void test_bad_requests_change_nothing(void **state)
{
    (void)state;
    s_seed();
    char long_name[60], long_key[140];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[52] = '\0'; /* 52 characters: one too many */
    memset(long_key, 'k', sizeof long_key - 1);
    long_key[129] = '\0';
    const policy_t *p = &s_policy;
    s_create_refused(p, "nope", "web", 1, "alice", NULL, "NOT_FOUND", "unknown template 'nope'");
    s_create_refused(p, "Small", "web", 1, "alice", NULL, "NOT_FOUND", "unknown template 'Small'");
    s_create_refused(p, "0b5e3c1a-9f7d-4a51-8b2e-3c4d5e6f7a8b", "web", 1, "alice", NULL,
                     "NOT_FOUND", NULL);
    s_create_refused(p, "", "web", 1, "alice", NULL, "BAD_REQUEST", NULL);
    s_create_refused(p, "sm all", "web", 1, "alice", NULL, "BAD_REQUEST", NULL);
    s_create_refused(p, "small", "web", -1, "alice", NULL, "BAD_REQUEST",
                     "count must be between 1 and 50");
    s_create_refused(p, "small", "web", 51, "alice", NULL, "BAD_REQUEST", NULL);
    s_create_refused(p, "small", "web", INT32_MAX, "alice", NULL, "BAD_REQUEST", NULL);
    s_create_refused(p, "small", "web", INT32_MIN, "alice", NULL, "BAD_REQUEST", NULL);
    s_create_refused(p, "small", "", 1, "alice", NULL, "BAD_REQUEST", NULL);
    s_create_refused(p, "small", "Web", 1, "alice", NULL, "BAD_REQUEST", NULL);
    s_create_refused(p, "small", "-web", 1, "alice", NULL, "BAD_REQUEST", NULL);
    s_create_refused(p, "small", "web-", 1, "alice", NULL, "BAD_REQUEST", NULL);
    s_create_refused(p, "small", "web_1", 1, "alice", NULL, "BAD_REQUEST", NULL);
    s_create_refused(p, "small", "web.example", 1, "alice", NULL, "BAD_REQUEST", NULL);
    s_create_refused(p, "small", long_name, 1, "alice", NULL, "BAD_REQUEST", NULL);
    s_create_refused(p, "small", "web", 1, "", NULL, "BAD_REQUEST", NULL);
    s_create_refused(p, "small", "web", 1, "al ice", NULL, "BAD_REQUEST", NULL);
    s_create_refused(p, "small", "web", 1, "alice", "bad key", "BAD_REQUEST", NULL);
    s_create_refused(p, "small", "web", 1, "alice", "a:b", "BAD_REQUEST", NULL);
    s_create_refused(p, "small", "web", 1, "alice", long_key, "BAD_REQUEST", NULL);
    /* The limit is the configured one. */
    policy_t three = s_policy;
    three.max_count = 3;
    s_create_refused(&three, "small", "web", 4, "alice", NULL, "BAD_REQUEST",
                     "count must be between 1 and 3");
    /* The longest allowed name and the configured maximum count are accepted. */
    long_name[51] = '\0';
    Berth__Request *req = s_create("small", long_name, 50, "alice", NULL);
    assert_int_equal(req->n_vms, 50);
    Berth__Vm *vm = s_vm(req->vms[49]);
    char expected[64];
    snprintf(expected, sizeof expected, "%s-50", long_name);
    assert_string_equal(vm->name, expected);
    s_free(vm);
    s_free(req);
    /* No body at all. */
    fault_t fault = { 0 };
    assert_int_equal(requests_create(s_store, p, NULL, 0, NULL, &req, &fault), -1);
    assert_string_equal(fault.code, "BAD_REQUEST");
}

static void test_bad_get_and_decide(void **state)
{
    (void)state;
    s_seed();
    Berth__Request *req = s_create("large", "x", 1, "ivan", NULL);
    snapshot_t before = s_snapshot();
    fault_t fault = { 0 };
    Berth__Request *out = NULL;
    assert_int_equal(requests_get(s_store, "", &out, &fault), -1);
    assert_string_equal(fault.code, "BAD_REQUEST");
    assert_int_equal(requests_get(s_store, "not-a-uuid", &out, &fault), -1);
    assert_string_equal(fault.code, "BAD_REQUEST");
    assert_int_equal(requests_get(s_store, "0b5e3c1a-9f7d-4a51-8b2e-3c4d5e6f7a8b", &out, &fault),
                     -1);
    assert_string_equal(fault.code, "NOT_FOUND");
    assert_null(out);

    assert_null(s_decide("0b5e3c1a-9f7d-4a51-8b2e-3c4d5e6f7a8b", 1, "admin", NULL, &fault));
    assert_string_equal(fault.code, "NOT_FOUND");
    assert_null(s_decide("../../etc", 1, "admin", NULL, &fault));
    assert_string_equal(fault.code, "BAD_REQUEST");
    assert_null(s_decide(req->id, 1, "", NULL, &fault));
    assert_string_equal(fault.code, "BAD_REQUEST");
    assert_null(s_decide(req->id, 0, "admin", "bell\a", &fault));
    assert_string_equal(fault.code, "BAD_REQUEST");
    assert_null(s_decide(req->id, 0, "admin", "\xff\xfe not utf-8", &fault));
    assert_string_equal(fault.code, "BAD_REQUEST");
    char *huge = malloc(2000);
    memset(huge, 'r', 1999);
    huge[1999] = '\0';
    assert_null(s_decide(req->id, 0, "admin", huge, &fault));
    assert_string_equal(fault.code, "BAD_REQUEST");
    free(huge);
    s_assert_unchanged(before);
    /* Real UTF-8 is fine. */
    Berth__Request *rejected = s_decide(req->id, 0, "admin", "zu groß für Tests", &fault);
    assert_non_null(rejected);
    assert_string_equal(rejected->reason, "zu groß für Tests");
    s_free(rejected);
    s_free(req);
}

/* ---- through the bus -------------------------------------------------------------------- */

/* The gateway's signing key and the service's view of it (test_bus_handlers). */
static assertion_t *s_signer;
static assertion_t *s_verifier;

/* An approval server in its own thread, as in the service: its own store, a ROUTER, the
   handler table. Sends its endpoint on the pipe once bound. */
static void s_server_actor(zsock_t *pipe, void *args)
{
    (void)args;
    store_t *store = testenv_store(s_redis, 0);
    bus_server_t *server = bus_server_new("tcp://127.0.0.1:*", "approval/test");
    approval_t *approval = store ? approval_new(store, s_verifier, &s_policy) : NULL;
    if (!store || !server || !approval) {
        zsock_signal(pipe, 1);
        goto done;
    }
    for (const approval_handler_t *h = approval_handlers; h->type; h++)
        bus_server_on(server, h->type, "*", h->fn, approval);
    zsock_signal(pipe, 0);
    zstr_send(pipe, bus_server_endpoint(server));
    zpoller_t *poller = zpoller_new(pipe, bus_server_socket(server), NULL);
    while (true) {
        void *which = zpoller_wait(poller, -1);
        if (which != bus_server_socket(server))
            break; /* $TERM on the pipe, or interrupted */
        bus_server_recv(server);
    }
    zpoller_destroy(&poller);
done:
    approval_destroy(&approval);
    bus_server_destroy(&server);
    store_destroy(&store);
}

/* Sign who the next call acts for into *field (a body's assertion), as the gateway does. */
static void s_as(const char *user, const char *role, const ProtobufCMessage *body,
                 Berth__SignedAssertion **field, assertion_signed_t *out)
{
    Berth__UserAssertion claims = BERTH__USER_ASSERTION__INIT;
    char *roles[] = { (char *)role };
    claims.user = (char *)user;
    claims.roles = roles;
    claims.n_roles = 1;
    claims.expires_ms = util_now_ms() + 10000;
    claims.request_id = "trace-bus";
    claims.action = (char *)body->descriptor->short_name;
    assert_int_equal(assertion_sign(s_signer, &claims, body, out), 0);
    *field = &out->msg;
}

/* Call the server; answers the reply envelope (caller frees). */
static Berth__Envelope *s_call(bus_client_t *client, const ProtobufCMessage *body)
{
    Berth__Envelope *reply = NULL;
    assert_int_equal(bus_client_call(client, "approval", body, "trace-bus", 5000, &reply), 0);
    return reply;
}

static void test_bus_handlers(void **state)
{
    (void)state;
    uint8_t pk[ASSERTION_PUBLIC_LEN], sk[ASSERTION_SECRET_LEN];
    assert_true(sodium_init() >= 0);
    crypto_sign_keypair(pk, sk);
    s_signer = assertion_new(pk, sk);
    s_verifier = assertion_new(pk, NULL);
    zactor_t *server = zactor_new(s_server_actor, NULL);
    assert_non_null(server);
    char *endpoint = zstr_recv(server);
    assert_non_null(endpoint);
    bus_client_t *client = bus_client_new(NULL, "test/client");
    assert_int_equal(bus_client_pin(client, "approval", endpoint), 0);

    /* The catalog is seeded on first use when it was not at start. */
    Berth__ListTemplates list = BERTH__LIST_TEMPLATES__INIT;
    Berth__Envelope *reply = s_call(client, &list.base); /* nobody's word: refused */
    assert_non_null(reply->error);
    assert_string_equal(reply->error->code, "UNAUTHENTICATED");
    berth__envelope__free_unpacked(reply, NULL);
    assertion_signed_t as;
    s_as("judy", "user", &list.base, &list.assertion, &as);
    reply = s_call(client, &list.base);
    assert_null(reply->error);
    Berth__TemplateList *templates =
        (Berth__TemplateList *)envelope_body(reply, &berth__template_list__descriptor);
    assert_non_null(templates);
    assert_int_equal(templates->n_templates, 3);
    assert_string_equal(templates->templates[0]->name, "large");
    s_free(templates);
    berth__envelope__free_unpacked(reply, NULL);

    /* Without the gateway's word on who asks, nothing is created. */
    Berth__CreateRequest create = BERTH__CREATE_REQUEST__INIT;
    create.template_ = "medium";
    create.name = "svc";
    create.owner = "judy";
    snapshot_t before = s_snapshot();
    reply = s_call(client, &create.base);
    assert_non_null(reply->error);
    assert_string_equal(reply->error->code, "UNAUTHENTICATED");
    berth__envelope__free_unpacked(reply, NULL);
    s_assert_unchanged(before);

    /* The owner is the asserted user, whatever the body says (even a body signed as it is). */
    create.owner = "mallory";
    s_as("judy", "user", &create.base, &create.assertion, &as);
    reply = s_call(client, &create.base);
    assert_null(reply->error);
    Berth__Request *req = (Berth__Request *)envelope_body(reply, &berth__request__descriptor);
    assert_non_null(req);
    assert_string_equal(req->owner, "judy");
    assert_string_equal(req->state, "APPROVED");
    assert_int_equal(req->n_tasks, 1);
    Berth__Task *task = s_task(req->tasks[0]);
    assert_string_equal(task->request_id, "trace-bus");
    s_free(task);
    berth__envelope__free_unpacked(reply, NULL);

    /* Reading it: its owner and an admin; anyone else is told it does not exist, as for an
       id nobody holds; nobody without the gateway's word. */
    Berth__GetRequest get = BERTH__GET_REQUEST__INIT;
    get.id = req->id;
    reply = s_call(client, &get.base);
    assert_non_null(reply->error);
    assert_string_equal(reply->error->code, "UNAUTHENTICATED");
    berth__envelope__free_unpacked(reply, NULL);
    const char *readers[][2] = { { "judy", "user" }, { "root", "admin" } };
    for (size_t i = 0; i < 2; i++) {
        s_as(readers[i][0], readers[i][1], &get.base, &get.assertion, &as);
        reply = s_call(client, &get.base);
        assert_null(reply->error);
        Berth__Request *got = (Berth__Request *)envelope_body(reply, &berth__request__descriptor);
        assert_non_null(got);
        assert_string_equal(got->id, req->id);
        assert_string_equal(got->owner, "judy");
        s_free(got);
        berth__envelope__free_unpacked(reply, NULL);
    }
    s_as("mallory", "user", &get.base, &get.assertion, &as);
    reply = s_call(client, &get.base);
    assert_non_null(reply->error);
    assert_string_equal(reply->error->code, "NOT_FOUND");
    char unknown[128];
    snprintf(unknown, sizeof unknown, "unknown request '%s'", req->id);
    assert_string_equal(reply->error->message, unknown);
    berth__envelope__free_unpacked(reply, NULL);
    get.id = "3f0c8a52-0d6e-4c1a-9b7e-2a5d4c3b2a10"; /* nobody's: the same answer */
    s_as("mallory", "user", &get.base, &get.assertion, &as);
    reply = s_call(client, &get.base);
    assert_non_null(reply->error);
    assert_string_equal(reply->error->code, "NOT_FOUND");
    berth__envelope__free_unpacked(reply, NULL);
    s_free(req);

    /* Errors cross as data with their code and message. */
    create.template_ = "nope";
    s_as("judy", "user", &create.base, &create.assertion, &as);
    reply = s_call(client, &create.base);
    assert_non_null(reply->error);
    assert_string_equal(reply->error->code, "NOT_FOUND");
    assert_string_equal(reply->error->message, "unknown template 'nope'");
    berth__envelope__free_unpacked(reply, NULL);

    Berth__DecideRequest decide = BERTH__DECIDE_REQUEST__INIT;
    decide.id = "garbage";
    decide.actor = "admin";
    reply = s_call(client, &decide.base); /* no assertion: refused before anything is read */
    assert_non_null(reply->error);
    assert_string_equal(reply->error->code, "UNAUTHENTICATED");
    berth__envelope__free_unpacked(reply, NULL);
    s_as("judy", "user", &decide.base, &decide.assertion, &as);
    /* A user reaches the policy engine (decide.h: who may decide is its business, tested in
       test_svc_approval_decide), which checks the input first. */
    reply = s_call(client, &decide.base);
    assert_non_null(reply->error);
    assert_string_equal(reply->error->code, "BAD_REQUEST");
    berth__envelope__free_unpacked(reply, NULL);
    s_as("root", "admin", &decide.base, &decide.assertion, &as);
    reply = s_call(client, &decide.base);
    assert_non_null(reply->error);
    assert_string_equal(reply->error->code, "BAD_REQUEST");
    berth__envelope__free_unpacked(reply, NULL);

    Berth__CreateTemplate ct = BERTH__CREATE_TEMPLATE__INIT;
    Berth__Template t = BERTH__TEMPLATE__INIT;
    t.name = "xl";
    t.vcpus = 16;
    t.ram_mb = 65536;
    t.disk_gb = 200;
    t.os = "ubuntu";
    t.image = "ubuntu-24.04";
    t.lease_days = 30;
    t.requires_approval = 1;
    ct.template_ = &t;
    ct.actor = "admin";
    before = s_snapshot();
    reply = s_call(client, &ct.base);
    assert_non_null(reply->error);
    assert_string_equal(reply->error->code, "UNAUTHENTICATED");
    berth__envelope__free_unpacked(reply, NULL);
    s_as("judy", "user", &ct.base, &ct.assertion, &as);
    reply = s_call(client, &ct.base);
    assert_non_null(reply->error);
    assert_string_equal(reply->error->code, "FORBIDDEN");
    berth__envelope__free_unpacked(reply, NULL);
    s_as("root", "admin", &decide.base, &ct.assertion, &as); /* made for another action */
    reply = s_call(client, &ct.base);
    assert_non_null(reply->error);
    assert_string_equal(reply->error->code, "UNAUTHENTICATED");
    berth__envelope__free_unpacked(reply, NULL);
    s_assert_unchanged(before);
    s_as("root", "admin", &ct.base, &ct.assertion, &as);
    reply = s_call(client, &ct.base);
    assert_null(reply->error);
    Berth__Template *made = (Berth__Template *)envelope_body(reply, &berth__template__descriptor);
    assert_non_null(made);
    assert_true(util_is_uuid(made->id));
    assert_string_equal(made->name, "xl");
    assert_true(made->requires_approval);
    s_free(made);
    berth__envelope__free_unpacked(reply, NULL);
    ct.template_ = NULL;
    s_as("root", "admin", &ct.base, &ct.assertion, &as);
    reply = s_call(client, &ct.base);
    assert_non_null(reply->error);
    assert_string_equal(reply->error->code, "BAD_REQUEST");
    berth__envelope__free_unpacked(reply, NULL);

    bus_client_destroy(&client);
    zstr_free(&endpoint);
    zactor_destroy(&server);
    assertion_destroy(&s_signer);
    assertion_destroy(&s_verifier);
}

/* Redis gone: every operation answers UNAVAILABLE and nothing crashes. Runs last: the
   server comes back empty. */
static void test_store_down(void **state)
{
    (void)state;
    s_seed();
    assert_int_equal(testenv_redis_stop(s_redis), 0);
    fault_t fault = { 0 };
    Berth__CreateRequest msg = BERTH__CREATE_REQUEST__INIT;
    msg.template_ = "small";
    msg.name = "web";
    msg.count = 1;
    msg.owner = "alice";
    Berth__Request *req = NULL;
    assert_int_equal(requests_create(s_store, &s_policy, &msg, 0, NULL, &req, &fault), -1);
    assert_string_equal(fault.code, "UNAVAILABLE");
    Berth__TemplateList *list = NULL;
    assert_int_equal(catalog_list(s_store, &list, &fault), -1);
    assert_string_equal(fault.code, "UNAVAILABLE");
    assert_int_equal(catalog_seed(s_store, &fault), -1);
    assert_string_equal(fault.code, "UNAVAILABLE");
    assert_int_equal(requests_get(s_store, "0b5e3c1a-9f7d-4a51-8b2e-3c4d5e6f7a8b", &req, &fault),
                     -1);
    assert_string_equal(fault.code, "UNAVAILABLE");
    assert_int_equal(testenv_redis_restart(s_redis), 0);
}

/* ---- the group a request is made in ----------------------------------------------------- */

/* A group called name, with user (made to exist) in it as role unless role is NULL. */
static void s_group_with(const char *name, const char *user, const char *role, char id[UTIL_ID_LEN])
{
    fault_t fault = { 0 };
    Berth__Group *g = NULL;
    if (groups_find(s_store, name, &g, &fault) != 0) {
        Berth__Group want = BERTH__GROUP__INIT;
        want.name = (char *)name;
        assert_int_equal(groups_create(s_store, &want, "admin", &g, &fault), 0);
    }
    util_strlcpy(id, g->id, UTIL_ID_LEN);
    s_free(g);
    if (!role)
        return;
    char key[KEYS_MAX];
    redisReply *r =
        store_command(s_store, "HSET %s name %s", keys_build(key, KEYS_USER, user, NULL), user);
    assert_non_null(r);
    freeReplyObject(r);
    assert_int_equal(groups_member(s_store, "add", id, user, role, "admin", &fault), 0);
}

/* CreateRequest for owner naming group (NULL: none): 0 and the request, or -1 with fault. */
static int s_create_in(const char *owner, const char *group, int admin, Berth__Request **req,
                       fault_t *fault)
{
    Berth__CreateRequest msg = BERTH__CREATE_REQUEST__INIT;
    msg.template_ = "small";
    msg.name = "g";
    msg.count = 2;
    msg.owner = (char *)owner;
    msg.group = (char *)(group ? group : "");
    *req = NULL;
    return requests_create(s_store, &s_policy, &msg, admin, NULL, req, fault);
}

static void test_request_group(void **state)
{
    (void)state;
    s_seed();
    char def[UTIL_ID_LEN], web[UTIL_ID_LEN], ops[UTIL_ID_LEN], key[KEYS_MAX];
    s_group_with(GROUPS_DEFAULT, NULL, NULL, def);
    s_group_with("web", "carol", "member", web);
    s_group_with("ops", "dave", "manager", ops);
    s_group_with("web", "dave", "auditor", web);
    fault_t fault = { 0 };
    Berth__Request *req = NULL;

    /* In no group: the default group; the request and each VM say so. */
    assert_int_equal(s_create_in("bob", NULL, 0, &req, &fault), 0);
    assert_string_equal(req->group, def);
    for (size_t i = 0; i < req->n_vms; i++) {
        ProtobufCMessage *m = NULL;
        assert_int_equal(model_load(s_store, &berth__vm__descriptor,
                                    keys_build(key, KEYS_VM, req->vms[i], NULL), &m),
                         0);
        assert_string_equal(((Berth__Vm *)m)->group, def);
        s_free(m);
    }
    s_free(req);
    /* ... also when named, by name or id; but not another group. */
    assert_int_equal(s_create_in("bob", GROUPS_DEFAULT, 0, &req, &fault), 0);
    assert_string_equal(req->group, def);
    s_free(req);
    assert_int_equal(s_create_in("bob", web, 0, &req, &fault), -1);
    assert_string_equal(fault.code, "NOT_FOUND");
    assert_string_equal(error_detail_get(&fault, "field"), "group");

    /* One group: that one, unnamed or named by name. The default group is not carol's. */
    assert_int_equal(s_create_in("carol", NULL, 0, &req, &fault), 0);
    assert_string_equal(req->group, web);
    s_free(req);
    assert_int_equal(s_create_in("carol", "web", 0, &req, &fault), 0);
    assert_string_equal(req->group, web);
    s_free(req);
    memset(&fault, 0, sizeof fault);
    assert_int_equal(s_create_in("carol", GROUPS_DEFAULT, 0, &req, &fault), -1);
    assert_string_equal(fault.code, "NOT_FOUND");

    /* An auditor's group does not count, and cannot be named; a manager's does. */
    assert_int_equal(s_create_in("dave", NULL, 0, &req, &fault), 0);
    assert_string_equal(req->group, ops);
    s_free(req);
    memset(&fault, 0, sizeof fault);
    assert_int_equal(s_create_in("dave", "web", 0, &req, &fault), -1);
    assert_string_equal(fault.code, "BAD_REQUEST");
    assert_string_equal(error_detail_get(&fault, "field"), "group");

    /* Several groups: name one. */
    s_group_with("ops", "carol", "member", ops);
    memset(&fault, 0, sizeof fault);
    assert_int_equal(s_create_in("carol", NULL, 0, &req, &fault), -1);
    assert_string_equal(fault.code, "BAD_REQUEST");
    assert_string_equal(error_detail_get(&fault, "field"), "group");
    assert_int_equal(s_create_in("carol", "ops", 0, &req, &fault), 0);
    assert_string_equal(req->group, ops);
    s_free(req);

    /* An admin may name any group; an unknown one is NOT_FOUND for everyone. */
    assert_int_equal(s_create_in("root", "web", 1, &req, &fault), 0);
    assert_string_equal(req->group, web);
    s_free(req);
    memset(&fault, 0, sizeof fault);
    assert_int_equal(s_create_in("root", "nope", 1, &req, &fault), -1);
    assert_string_equal(fault.code, "NOT_FOUND");
    memset(&fault, 0, sizeof fault);
    assert_int_equal(s_create_in("root", "Not A Name", 1, &req, &fault), -1);
    assert_string_equal(fault.code, "BAD_REQUEST");
}

static void test_default_group_made_once(void **state)
{
    (void)state;
    fault_t fault = { 0 };
    char key[KEYS_MAX];
    /* Before it exists, a request from a user in no group waits for it (approval makes it at
       start and retries every heartbeat while Redis is away). */
    assert_true(catalog_seed(s_store, &fault) >= 0);
    Berth__Request *req = NULL;
    assert_int_equal(s_create_in("bob", NULL, 0, &req, &fault), -1);
    assert_string_equal(fault.code, "UNAVAILABLE");
    for (int i = 0; i < 3; i++)
        assert_int_equal(groups_ensure_default(s_store, &fault), 0);
    assert_int_equal(s_int("ZCARD", KEYS_GROUPS), 1);
    redisReply *r = store_command(s_store, "HGET %s id",
                                  keys_build(key, KEYS_GROUP_NAME, GROUPS_DEFAULT, NULL));
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    freeReplyObject(r);
}

/* Who may read a request (decide_sees), from the signed claims: its owner, a manager or auditor of its
   group, an operator or an admin; a member of its group or a manager of another is not. */
static void test_request_visibility(void **state)
{
    (void)state;
    Berth__Request req = BERTH__REQUEST__INIT;
    req.owner = "judy";
    req.group = "g1";
    struct {
        const char *user, *role, *group;
        int sees;
    } cases[] = {
        { "judy", "user", NULL, 1 },         { "root", "admin", NULL, 1 },
        { "ops", "operator", NULL, 1 },      { "mia", "user", "g1:manager", 1 },
        { "aud", "user", "g1:auditor", 1 },  { "mem", "user", "g1:member", 0 },
        { "oth", "user", "g2:manager", 0 },  { "nob", "user", NULL, 0 },
        { "pre", "user", "g10:manager", 0 }, /* a group whose id starts alike */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Berth__UserAssertion who = BERTH__USER_ASSERTION__INIT;
        char *roles[] = { (char *)cases[i].role }, *groups[] = { (char *)cases[i].group };
        who.user = (char *)cases[i].user;
        who.roles = roles;
        who.n_roles = 1;
        who.groups = groups;
        who.n_groups = cases[i].group ? 1 : 0;
        assert_int_equal(decide_sees(&req, &who), cases[i].sees);
    }
    req.group = ""; /* a request in no group: its owner and the platform roles only */
    Berth__UserAssertion who = BERTH__USER_ASSERTION__INIT;
    char *roles[] = { "user" }, *groups[] = { ":manager" };
    who.user = "mia";
    who.roles = roles;
    who.n_roles = 1;
    who.groups = groups;
    who.n_groups = 1;
    assert_int_equal(decide_sees(&req, &who), 0);
}

/* ---- quotas ---------------------------------------------------------------------------- */

/* A group called name with quota (vms) and user_quota (vms; 0 = none) and user as member. */
static void s_quota_group(const char *name, int vms, int user_vms, const char *user,
                          char id[UTIL_ID_LEN])
{
    fault_t fault = { 0 };
    Berth__Quota q = BERTH__QUOTA__INIT, uq = BERTH__QUOTA__INIT;
    q.vms = vms;
    uq.vms = user_vms;
    Berth__Group want = BERTH__GROUP__INIT, *g = NULL;
    want.name = (char *)name;
    want.quota = &q;
    want.user_quota = user_vms ? &uq : NULL;
    assert_int_equal(groups_create(s_store, &want, "admin", &g, &fault), 0);
    util_strlcpy(id, g->id, UTIL_ID_LEN);
    s_free(g);
    s_group_with(name, user, "member", id);
}

/* CreateRequest of count tmpl VMs by owner in group, with key (NULL: none). */
static int s_create_q(const char *tmpl, int count, const char *owner, const char *group,
                      const char *key, Berth__Request **req, fault_t *fault)
{
    Berth__CreateRequest msg = BERTH__CREATE_REQUEST__INIT;
    msg.template_ = (char *)tmpl;
    msg.name = "q";
    msg.count = count;
    msg.owner = (char *)owner;
    msg.group = (char *)group;
    msg.idempotency_key = (char *)(key ? key : "");
    *req = NULL;
    memset(fault, 0, sizeof *fault);
    return requests_create(s_store, &s_policy, &msg, 0, NULL, req, fault);
}

/* Field of the group's usage counters (user NULL) or of user's in the group, as a number. */
static long long s_usage(const char *group, const char *user, const char *field)
{
    char key[KEYS_MAX];
    if (user)
        keys_build(key, KEYS_GROUP_USER_USAGE, group, user);
    else
        keys_build(key, KEYS_GROUP_USAGE, group, NULL);
    redisReply *r = store_command(s_store, "HGET %s %s", key, field);
    assert_non_null(r);
    long long v = r->type == REDIS_REPLY_STRING ? atoll(r->str) : 0;
    freeReplyObject(r);
    return v;
}

static void test_quota_charged_and_refused(void **state)
{
    (void)state;
    s_seed();
    char team[UTIL_ID_LEN];
    s_quota_group("team", 3, 0, "erin", team);
    fault_t fault = { 0 };
    Berth__Request *req = NULL;
    assert_int_equal(s_create_q("small", 2, "erin", "team", "k-q", &req, &fault), 0);
    assert_int_equal(s_usage(team, NULL, "vms"), 2);
    assert_int_equal(s_usage(team, NULL, "vcpus"), 2);
    assert_int_equal(s_usage(team, NULL, "ram_mb"), 2048);
    assert_int_equal(s_usage(team, NULL, "disk_gb"), 20);
    assert_int_equal(s_usage(team, "erin", "vms"), 2);
    /* The same Idempotency-Key again: the same request, charged once. */
    Berth__Request *again = NULL;
    assert_int_equal(s_create_q("small", 2, "erin", "team", "k-q", &again, &fault), 0);
    assert_string_equal(again->id, req->id);
    assert_int_equal(s_usage(team, NULL, "vms"), 2);
    s_free(again);

    /* 2 more would make 4 > 3: refused, naming the resource, the quota and what is used;
       nothing is written. */
    snapshot_t before = s_snapshot();
    assert_int_equal(s_create_q("small", 2, "erin", "team", NULL, &again, &fault), -1);
    assert_null(again);
    assert_string_equal(fault.code, "QUOTA_EXCEEDED");
    assert_string_equal(fault.message, "the quota of group team exceeded: vms quota 3, 2 in use, "
                                       "this request asks for 2");
    assert_string_equal(error_detail_get(&fault, "resource"), "vms");
    assert_string_equal(error_detail_get(&fault, "quota"), "3");
    assert_string_equal(error_detail_get(&fault, "used"), "2");
    assert_string_equal(error_detail_get(&fault, "requested"), "2");
    assert_string_equal(error_detail_get(&fault, "scope"), "group");
    s_assert_unchanged(before);
    assert_int_equal(s_usage(team, NULL, "vms"), 2);

    /* Up to the quota is accepted. */
    assert_int_equal(s_create_q("small", 1, "erin", "team", NULL, &again, &fault), 0);
    assert_int_equal(s_usage(team, NULL, "vms"), 3);

    /* A VM that fails gives its share back, once: a retried step conflicts. */
    Berth__Vm *vm = s_vm(again->vms[0]);
    model_tx_t *tx = model_tx_new();
    assert_int_equal(model_tx_vm_transition(tx, vm, "ERROR"), 0);
    assert_int_equal(model_tx_commit(tx, s_store, NULL), 0);
    model_tx_destroy(&tx);
    assert_int_equal(s_usage(team, NULL, "vms"), 2);
    assert_int_equal(s_usage(team, "erin", "vcpus"), 2);
    tx = model_tx_new();
    assert_int_equal(model_tx_vm_transition(tx, vm, "ERROR"), 0);
    assert_int_equal(model_tx_commit(tx, s_store, NULL), MODEL_CONFLICT);
    model_tx_destroy(&tx);
    assert_int_equal(s_usage(team, NULL, "vms"), 2);
    /* ERROR -> DISPOSING -> DISPOSED releases nothing more. */
    Berth__Vm *failed = s_vm(again->vms[0]);
    tx = model_tx_new();
    assert_int_equal(model_tx_vm_transition(tx, failed, "DISPOSING"), 0);
    assert_int_equal(model_tx_commit(tx, s_store, NULL), 0);
    model_tx_destroy(&tx);
    s_free(failed);
    failed = s_vm(again->vms[0]);
    tx = model_tx_new();
    assert_int_equal(model_tx_vm_transition(tx, failed, "DISPOSED"), 0);
    assert_int_equal(model_tx_commit(tx, s_store, NULL), 0);
    model_tx_destroy(&tx);
    assert_int_equal(s_usage(team, NULL, "vms"), 2);
    s_free(failed);
    s_free(vm);
    s_free(again);
    s_free(req);
}

static void test_quota_released_on_reject_and_per_member(void **state)
{
    (void)state;
    s_seed();
    char lab[UTIL_ID_LEN];
    s_quota_group("lab", 2, 1, "fred", lab);
    s_group_with("lab", "gina", "member", lab);
    fault_t fault = { 0 };
    Berth__Request *big = NULL, *req = NULL;
    /* Waiting for approval counts. */
    assert_int_equal(s_create_q("large", 1, "fred", "lab", NULL, &big, &fault), 0);
    assert_string_equal(big->state, "PENDING_APPROVAL");
    assert_int_equal(s_usage(lab, NULL, "vcpus"), 8);
    /* fred's own limit is 1 VM. */
    assert_int_equal(s_create_q("small", 1, "fred", "lab", NULL, &req, &fault), -1);
    assert_string_equal(fault.code, "QUOTA_EXCEEDED");
    assert_string_equal(error_detail_get(&fault, "scope"), "user");
    assert_string_equal(error_detail_get(&fault, "used"), "1");
    /* gina fills the group; then the group's quota (checked first) refuses her. */
    assert_int_equal(s_create_q("small", 1, "gina", "lab", NULL, &req, &fault), 0);
    s_free(req);
    assert_int_equal(s_create_q("small", 1, "gina", "lab", NULL, &req, &fault), -1);
    assert_string_equal(error_detail_get(&fault, "scope"), "group");
    assert_string_equal(error_detail_get(&fault, "quota"), "2");
    /* Rejecting fred's request gives its VM back to the group and to fred. */
    Berth__Request *rejected = s_decide(big->id, 0, "admin", "no", &fault);
    assert_non_null(rejected);
    assert_int_equal(s_usage(lab, NULL, "vms"), 1);
    assert_int_equal(s_usage(lab, NULL, "vcpus"), 1);
    assert_int_equal(s_usage(lab, "fred", "vms"), 0);
    assert_int_equal(s_create_q("small", 1, "fred", "lab", NULL, &req, &fault), 0);
    assert_int_equal(s_usage(lab, NULL, "vms"), 2);
    /* GetGroup's answer carries what is used. */
    Berth__Quota used = BERTH__QUOTA__INIT;
    assert_int_equal(groups_usage(s_store, lab, &used, &fault), 0);
    assert_int_equal(used.vms, 2);
    assert_int_equal(used.vcpus, 2);
    assert_int_equal(used.ram_mb, 2048);
    s_free(req);
    s_free(rejected);
    s_free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_seed_once, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_seed_checks_names_atomically, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_seed_race, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_create_template, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_create_template_refuses_bad_fields, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_create_request_queues_provisioning, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_approval_required_then_approved, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_rejected_builds_nothing, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_own_request_not_decided, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_decide_race, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_idempotency_key, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_idempotency_key_other_body, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_idempotency_key_race, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_bad_requests_change_nothing, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_ssh_keys_go_to_every_vm, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_bad_get_and_decide, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_bus_handlers, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_request_group, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_default_group_made_once, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_quota_charged_and_refused, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_quota_released_on_reject_and_per_member, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_extension_request, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_store_down, s_setup, s_teardown),
        cmocka_unit_test(test_request_visibility),
    };
    return cmocka_run_group_tests(tests, s_group_setup, s_group_teardown);
}
