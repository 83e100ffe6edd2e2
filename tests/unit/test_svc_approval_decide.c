/*  test_svc_approval_decide: the approval policy engine (services/approval/decide.c). Its pure
    rules (which policy applies, the level a new request waits for, who may decide it), then
    requests made and decided through requests.c against a real redis-server: each policy,
    two levels in order, conditional both ways, no self-approval for an admin requester, a
    manager of another group refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "keys.h"
#include "model.h"
#include "testenv.h"
#include "util.h"
#include "../../services/approval/catalog.h"
#include "../../services/approval/decide.h"
#include "../../services/approval/groups.h"
#include "../../services/approval/policy.h"
#include "../../services/approval/requests.h"

#include <czmq.h>
#include <stdio.h>
#include <string.h>

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
    fault_t fault = { 0 };
    if (!s_store || catalog_seed(s_store, &fault) < 0 || groups_ensure_default(s_store, &fault))
        return -1;
    return 0;
}

static int s_teardown(void **state)
{
    (void)state;
    store_destroy(&s_store);
    return 0;
}

static void s_free(void *msg)
{
    if (msg)
        protobuf_c_message_free_unpacked(msg, NULL);
}

/* ---- who ------------------------------------------------------------------------------- */

/* An assertion for user with platform role and, unless group is NULL, group_role in group. */
typedef struct {
    Berth__UserAssertion a;
    char *roles[1];
    char *groups[1];
    char group[UTIL_ID_LEN + 16];
} s_who_t;

static const Berth__UserAssertion *s_who(s_who_t *w, const char *user, const char *role,
                                         const char *group, const char *group_role)
{
    berth__user_assertion__init(&w->a);
    w->a.user = (char *)user;
    w->roles[0] = (char *)role;
    w->a.roles = w->roles;
    w->a.n_roles = 1;
    if (group) {
        snprintf(w->group, sizeof w->group, "%s:%s", group, group_role);
        w->groups[0] = w->group;
        w->a.groups = w->groups;
        w->a.n_groups = 1;
    }
    return &w->a;
}

/* ---- pure rules ------------------------------------------------------------------------ */

static void test_policy_names(void **state)
{
    (void)state;
    const char *names[] = { "auto", "conditional", "manager", "admin", "manager_then_admin" };
    for (int i = 0; i < 5; i++) {
        assert_int_equal(decide_policy_parse(names[i]), i);
        assert_string_equal(decide_policy_name((decide_policy_t)i), names[i]);
    }
    assert_int_equal(decide_policy_parse("Admin"), -1);
    assert_int_equal(decide_policy_parse(""), -1);
    fault_t fault = { 0 };
    assert_int_equal(decide_check_policy("approval_policy", "", &fault), 0);
    assert_int_equal(decide_check_policy("approval_policy", "boss", &fault), -1);
    assert_string_equal(fault.code, "BAD_REQUEST");
    assert_string_equal(error_detail_get(&fault, "field"), "approval_policy");
}

/* The stricter of the group's and the template's; a template without one says it with
   requires_approval (true: admin, false: auto); a group without one is auto. */
static void test_effective_is_the_stricter(void **state)
{
    (void)state;
    Berth__Group g = BERTH__GROUP__INIT;
    Berth__Template t = BERTH__TEMPLATE__INIT;
    assert_int_equal(decide_effective(&g, &t), DECIDE_AUTO);
    t.requires_approval = 1;
    assert_int_equal(decide_effective(&g, &t), DECIDE_ADMIN);
    g.approval_policy = "manager";
    assert_int_equal(decide_effective(&g, &t), DECIDE_ADMIN);
    g.approval_policy = "manager_then_admin";
    assert_int_equal(decide_effective(&g, &t), DECIDE_MANAGER_THEN_ADMIN);
    t.requires_approval = 0;
    g.approval_policy = "conditional";
    assert_int_equal(decide_effective(&g, &t), DECIDE_CONDITIONAL);
    t.approval_policy = "manager";
    assert_int_equal(decide_effective(&g, &t), DECIDE_MANAGER);
    t.approval_policy = "auto"; /* named: requires_approval no longer counts */
    t.requires_approval = 1;
    assert_int_equal(decide_effective(&g, &t), DECIDE_CONDITIONAL);
}

static void test_levels(void **state)
{
    (void)state;
    Berth__Group g = BERTH__GROUP__INIT;
    Berth__Template t = BERTH__TEMPLATE__INIT;
    t.vcpus = 2;
    t.ram_mb = 2048;
    t.disk_gb = 20;
    assert_null(decide_first_level(DECIDE_AUTO, &g, &t, 5));
    assert_string_equal(decide_first_level(DECIDE_MANAGER, &g, &t, 1), "manager");
    assert_string_equal(decide_first_level(DECIDE_ADMIN, &g, &t, 1), "admin");
    assert_string_equal(decide_first_level(DECIDE_MANAGER_THEN_ADMIN, &g, &t, 1), "manager");
    /* conditional: no threshold set approves nothing at once */
    assert_string_equal(decide_first_level(DECIDE_CONDITIONAL, &g, &t, 1), "manager");
    g.auto_max_vcpus = 4;
    g.auto_max_ram_mb = 4096;
    assert_null(decide_first_level(DECIDE_CONDITIONAL, &g, &t, 1));
    assert_null(decide_first_level(DECIDE_CONDITIONAL, &g, &t, 2)); /* 4 vCPUs, 4 GiB: at */
    assert_string_equal(decide_first_level(DECIDE_CONDITIONAL, &g, &t, 3), "manager");
    g.auto_max_ram_mb = 2047; /* RAM alone over */
    assert_string_equal(decide_first_level(DECIDE_CONDITIONAL, &g, &t, 1), "manager");
    /* small, but over the group's quota: a manager looks */
    g.auto_max_ram_mb = 4096;
    Berth__Quota q = BERTH__QUOTA__INIT;
    q.vms = 10;
    q.vcpus = 10;
    q.ram_mb = 1 << 20;
    q.disk_gb = 10;
    g.quota = &q;
    assert_string_equal(decide_first_level(DECIDE_CONDITIONAL, &g, &t, 1), "manager");
    q.disk_gb = 20;
    assert_null(decide_first_level(DECIDE_CONDITIONAL, &g, &t, 1));

    assert_string_equal(decide_next_level("manager_then_admin", "manager"), "admin");
    assert_null(decide_next_level("manager_then_admin", "admin"));
    assert_null(decide_next_level("manager", "manager"));
    assert_null(decide_next_level("", "admin")); /* a request from before policies */
}

static void test_who_may_decide(void **state)
{
    (void)state;
    Berth__Request r = BERTH__REQUEST__INIT;
    r.id = "r1";
    r.owner = "mia";
    r.group = "g1";
    r.state = "PENDING_APPROVAL";
    r.awaiting = "manager";
    s_who_t w;
    fault_t fault = { 0 };
#define MAY(who) decide_may(&r, (who), &fault)
    assert_int_equal(MAY(s_who(&w, "max", "user", "g1", "manager")), 0);
    assert_int_equal(MAY(s_who(&w, "root", "admin", NULL, NULL)), 0);
    /* a manager of another group does not even see it */
    assert_int_equal(MAY(s_who(&w, "oz", "user", "g2", "manager")), -1);
    assert_string_equal(fault.code, "NOT_FOUND");
    /* a member of the group neither (members see their own) */
    assert_int_equal(MAY(s_who(&w, "mo", "user", "g1", "member")), -1);
    assert_string_equal(fault.code, "NOT_FOUND");
    /* an auditor and an operator see it, and may not decide it */
    assert_int_equal(MAY(s_who(&w, "al", "user", "g1", "auditor")), -1);
    assert_string_equal(fault.code, "FORBIDDEN");
    assert_int_equal(MAY(s_who(&w, "op", "operator", NULL, NULL)), -1);
    assert_string_equal(fault.code, "FORBIDDEN");
    /* the requester never, even as an admin and the group's manager */
    r.owner = "root";
    assert_int_equal(MAY(s_who(&w, "root", "admin", "g1", "manager")), -1);
    assert_string_equal(fault.code, "FORBIDDEN");
    r.owner = "mia";
    /* the admin level: only an admin */
    r.awaiting = "admin";
    assert_int_equal(MAY(s_who(&w, "max", "user", "g1", "manager")), -1);
    assert_string_equal(fault.code, "FORBIDDEN");
    assert_string_equal(error_detail_get(&fault, "awaiting"), "admin");
    assert_int_equal(MAY(s_who(&w, "root", "admin", NULL, NULL)), 0);
    /* no one decides two levels */
    Berth__ApprovalStep step = BERTH__APPROVAL_STEP__INIT, *steps[1] = { &step };
    step.level = "manager";
    step.decided_by = "root";
    step.decision = "approved";
    r.steps = steps;
    r.n_steps = 1;
    assert_int_equal(MAY(s_who(&w, "root", "admin", NULL, NULL)), -1);
    assert_string_equal(fault.code, "FORBIDDEN");
    assert_int_equal(MAY(s_who(&w, "ada", "admin", NULL, NULL)), 0);
#undef MAY
}

/* ---- through requests.c ---------------------------------------------------------------- */

/* A group called name with policy, the auto-approval size, and mia (member), max (manager). */
static void s_group(const char *name, const char *policy, int max_vcpus, int64_t max_ram,
                    char id[UTIL_ID_LEN])
{
    fault_t fault = { 0 };
    Berth__Group want = BERTH__GROUP__INIT, *g = NULL;
    want.name = (char *)name;
    want.approval_policy = (char *)policy;
    want.auto_max_vcpus = max_vcpus;
    want.auto_max_ram_mb = max_ram;
    assert_int_equal(groups_create(s_store, &want, "admin", &g, &fault), 0);
    util_strlcpy(id, g->id, UTIL_ID_LEN);
    s_free(g);
    const char *users[] = { "mia", "max", "root" }, *roles[] = { "member", "manager", NULL };
    for (int i = 0; i < 3; i++) {
        char key[KEYS_MAX];
        redisReply *r = store_command(s_store, "HSET %s name %s",
                                      keys_build(key, KEYS_USER, users[i], NULL), users[i]);
        assert_non_null(r);
        freeReplyObject(r);
        if (roles[i])
            assert_int_equal(groups_member(s_store, "add", id, users[i], roles[i], "admin", &fault),
                             0);
    }
}

static Berth__Request *s_create(const char *owner, int admin, const char *group, const char *tmpl,
                                int count)
{
    Berth__CreateRequest msg = BERTH__CREATE_REQUEST__INIT;
    msg.template_ = (char *)tmpl;
    msg.name = "box";
    msg.count = count;
    msg.owner = (char *)owner;
    msg.group = (char *)group;
    Berth__Request *req = NULL;
    fault_t fault = { 0 };
    if (requests_create(s_store, &s_policy, &msg, admin, "t", &req, &fault) != 0)
        fail_msg("create refused: %s %s", fault.code, fault.message);
    assert_string_equal(req->kind, "vm");
    return req;
}

/* Decide req as who: the request after, or NULL with fault set. */
static Berth__Request *s_decide(const Berth__Request *req, int approve, const char *reason,
                                const Berth__UserAssertion *who, fault_t *fault)
{
    Berth__DecideRequest msg = BERTH__DECIDE_REQUEST__INIT;
    msg.id = req->id;
    msg.approve = approve;
    msg.actor = "whoever"; /* the assertion's user decides */
    msg.reason = (char *)(reason ? reason : "");
    Berth__Request *out = NULL;
    memset(fault, 0, sizeof *fault);
    int rc = requests_decide(s_store, &s_policy, &msg, who, "t", &out, fault);
    assert_int_equal(rc == 0, out != NULL);
    return out;
}

/* The request as stored. */
static Berth__Request *s_load(const char *id)
{
    Berth__Request *r = NULL;
    fault_t fault = { 0 };
    assert_int_equal(requests_get(s_store, id, &r, &fault), 0);
    return r;
}

static void test_auto_and_legacy_templates(void **state)
{
    (void)state;
    char g[UTIL_ID_LEN];
    s_group("plain", "", 0, 0, g);
    Berth__Request *r = s_create("mia", 0, g, "small", 1); /* auto: approved, one auto step */
    assert_string_equal(r->state, "APPROVED");
    assert_string_equal(r->policy, "auto");
    assert_string_equal(r->awaiting, "");
    assert_int_equal(r->n_steps, 1);
    assert_string_equal(r->steps[0]->level, "auto");
    assert_string_equal(r->steps[0]->decided_by, "policy");
    s_free(r);
    r = s_create("mia", 0, g, "large", 1); /* requires_approval: the admin level */
    assert_string_equal(r->state, "PENDING_APPROVAL");
    assert_string_equal(r->policy, "admin");
    assert_string_equal(r->awaiting, "admin");
    s_who_t w;
    fault_t fault = { 0 };
    assert_null(s_decide(r, 1, NULL, s_who(&w, "max", "user", g, "manager"), &fault));
    assert_string_equal(fault.code, "FORBIDDEN");
    Berth__Request *d = s_decide(r, 1, NULL, s_who(&w, "root", "admin", NULL, NULL), &fault);
    assert_non_null(d);
    assert_string_equal(d->state, "APPROVED");
    s_free(d);
    s_free(r);
}

static void test_manager_policy(void **state)
{
    (void)state;
    char g[UTIL_ID_LEN], other[UTIL_ID_LEN];
    s_group("web", "manager", 0, 0, g);
    s_group("ops", "manager", 0, 0, other);
    Berth__Request *r = s_create("mia", 0, g, "small", 1);
    assert_string_equal(r->state, "PENDING_APPROVAL");
    assert_string_equal(r->awaiting, "manager");
    s_who_t w;
    fault_t fault = { 0 };
    /* a manager of another group: as if it did not exist */
    assert_null(s_decide(r, 1, NULL, s_who(&w, "oz", "user", other, "manager"), &fault));
    assert_string_equal(fault.code, "NOT_FOUND");
    Berth__Request *d = s_decide(r, 1, NULL, s_who(&w, "max", "user", g, "manager"), &fault);
    assert_non_null(d);
    assert_string_equal(d->state, "APPROVED");
    assert_int_equal(d->n_tasks, 1);
    assert_int_equal(d->n_steps, 1);
    assert_string_equal(d->steps[0]->level, "manager");
    assert_string_equal(d->steps[0]->decided_by, "max");
    assert_string_equal(d->steps[0]->decision, "approved");
    s_free(d);
    d = s_load(r->id); /* as stored */
    assert_string_equal(d->state, "APPROVED");
    assert_int_equal(d->n_steps, 1);
    s_free(d);
    s_free(r);
}

static void test_manager_then_admin(void **state)
{
    (void)state;
    char g[UTIL_ID_LEN];
    s_group("web", "manager_then_admin", 0, 0, g);
    Berth__Request *r = s_create("mia", 0, g, "small", 2);
    assert_string_equal(r->awaiting, "manager");
    s_who_t w;
    fault_t fault = { 0 };
    /* the admin level is not first: an admin may decide the manager level (a group without
       a manager is not stuck), but then not the admin level too */
    Berth__Request *d = s_decide(r, 1, "fine", s_who(&w, "max", "user", g, "manager"), &fault);
    assert_non_null(d);
    assert_string_equal(d->state, "PENDING_APPROVAL");
    assert_string_equal(d->awaiting, "admin");
    s_free(d);
    /* the manager again: the same answer; the manager cannot take the admin level */
    d = s_decide(r, 1, NULL, s_who(&w, "max", "user", g, "manager"), &fault);
    assert_non_null(d);
    assert_string_equal(d->awaiting, "admin");
    s_free(d);
    assert_null(s_decide(r, 1, NULL, s_who(&w, "max2", "user", g, "manager"), &fault));
    assert_string_equal(fault.code, "FORBIDDEN");
    d = s_load(r->id);
    assert_string_equal(d->state, "PENDING_APPROVAL");
    assert_int_equal(d->n_vms, 2);
    assert_int_equal(d->n_tasks, 0);
    s_free(d);
    d = s_decide(r, 1, NULL, s_who(&w, "root", "admin", NULL, NULL), &fault);
    assert_non_null(d);
    assert_string_equal(d->state, "APPROVED");
    assert_string_equal(d->decided_by, "root");
    assert_int_equal(d->n_tasks, 2);
    assert_int_equal(d->n_steps, 2);
    assert_string_equal(d->steps[0]->level, "manager");
    assert_string_equal(d->steps[0]->reason, "fine");
    assert_string_equal(d->steps[1]->level, "admin");
    assert_string_equal(d->steps[1]->decided_by, "root");
    s_free(d);
    s_free(r);
}

static void test_conditional_both_ways(void **state)
{
    (void)state;
    char g[UTIL_ID_LEN];
    s_group("web", "conditional", 2, 4096, g);
    Berth__Request *r = s_create("mia", 0, g, "small", 2); /* 2 vCPUs, 2 GiB: under */
    assert_string_equal(r->state, "APPROVED");
    assert_string_equal(r->policy, "conditional");
    s_free(r);
    r = s_create("mia", 0, g, "medium", 2); /* 4 vCPUs: over, a manager decides */
    assert_string_equal(r->state, "PENDING_APPROVAL");
    assert_string_equal(r->awaiting, "manager");
    s_who_t w;
    fault_t fault = { 0 };
    Berth__Request *d =
        s_decide(r, 0, "too big for now", s_who(&w, "max", "user", g, "manager"), &fault);
    assert_non_null(d);
    assert_string_equal(d->state, "REJECTED");
    assert_string_equal(d->reason, "too big for now");
    assert_string_equal(d->steps[0]->decision, "rejected");
    s_free(d);
    s_free(r);
    /* the template's policy is stricter: it wins */
    r = s_create("mia", 0, g, "large", 1);
    assert_string_equal(r->policy, "admin");
    assert_string_equal(r->awaiting, "admin");
    s_free(r);
}

static void test_no_self_approval_for_an_admin(void **state)
{
    (void)state;
    char g[UTIL_ID_LEN];
    s_group("web", "manager_then_admin", 0, 0, g);
    Berth__Request *r = s_create("root", 1, g, "small", 1);
    s_who_t w;
    fault_t fault = { 0 };
    assert_null(s_decide(r, 1, NULL, s_who(&w, "root", "admin", g, "manager"), &fault));
    assert_string_equal(fault.code, "FORBIDDEN");
    assert_null(s_decide(r, 0, NULL, s_who(&w, "root", "admin", NULL, NULL), &fault));
    assert_string_equal(fault.code, "FORBIDDEN");
    Berth__Request *d = s_load(r->id);
    assert_string_equal(d->state, "PENDING_APPROVAL");
    assert_int_equal(d->n_steps, 0);
    s_free(d);
    s_free(r);
}

/* A group's and a template's policy are checked where they are written. */
static void test_settings_validated(void **state)
{
    (void)state;
    fault_t fault = { 0 };
    Berth__Group want = BERTH__GROUP__INIT, *g = NULL;
    want.name = "bad";
    want.approval_policy = "boss";
    assert_int_equal(groups_create(s_store, &want, "admin", &g, &fault), -1);
    assert_string_equal(error_detail_get(&fault, "field"), "approval_policy");
    want.approval_policy = "conditional";
    want.auto_max_vcpus = -1;
    assert_int_equal(groups_create(s_store, &want, "admin", &g, &fault), -1);
    assert_string_equal(error_detail_get(&fault, "field"), "auto_max_vcpus");
    want.auto_max_vcpus = 4;
    want.auto_max_ram_mb = 8192;
    assert_int_equal(groups_create(s_store, &want, "admin", &g, &fault), 0);
    assert_string_equal(g->approval_policy, "conditional");
    Berth__Group change = BERTH__GROUP__INIT, *after = NULL;
    change.approval_policy = "manager_then_admin";
    char *fields[] = { "approval_policy" };
    assert_int_equal(groups_update(s_store, g->id, &change, fields, 1, 0, "admin", &after, &fault),
                     0);
    s_free(after);
    Berth__Group *read = NULL;
    assert_int_equal(groups_get(s_store, g->id, &read, &fault), 0);
    assert_string_equal(read->approval_policy, "manager_then_admin");
    assert_int_equal(read->auto_max_vcpus, 4); /* untouched */
    s_free(read);
    change.approval_policy = "nobody";
    assert_int_equal(groups_update(s_store, g->id, &change, fields, 1, 0, "admin", &after, &fault),
                     -1);
    assert_string_equal(error_detail_get(&fault, "field"), "approval_policy");
    s_free(g);

    Berth__Template t = BERTH__TEMPLATE__INIT;
    t.name = "odd";
    t.vcpus = 1;
    t.ram_mb = 512;
    t.disk_gb = 5;
    t.os = "debian";
    t.image = "debian-12";
    t.lease_days = 1;
    t.approval_policy = "everyone";
    char id[UTIL_ID_LEN];
    assert_int_equal(catalog_create(s_store, &s_policy, &t, "admin", id, &fault), -1);
    assert_string_equal(error_detail_get(&fault, "field"), "approval_policy");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy_names),
        cmocka_unit_test(test_effective_is_the_stricter),
        cmocka_unit_test(test_levels),
        cmocka_unit_test(test_who_may_decide),
        cmocka_unit_test_setup_teardown(test_auto_and_legacy_templates, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_manager_policy, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_manager_then_admin, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_conditional_both_ways, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_no_self_approval_for_an_admin, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_settings_validated, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, s_group_setup, s_group_teardown);
}
