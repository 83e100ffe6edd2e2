/*  test_svc_approval_groups: groups and memberships through approval's bus handlers, against
    a real redis-server. Only an admin creates, changes and deletes groups; a group's manager
    manages its members and nobody else's; a member cannot; who the caller is comes only from
    the signed assertion. Names are unique, lists page by marker and show a non-admin only their
    groups, and a group with members is not deleted. Every refusal leaves Redis as it was. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "bus_client.h"
#include "envelope.h"
#include "keys.h"
#include "testenv.h"
#include "util.h"
#include "../../services/approval/approval.h"
#include "../../services/approval/groups.h"

#include <czmq.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

static testenv_redis_t *s_redis;
static store_t *s_store;
static policy_t s_policy;
static assertion_t *s_signer;
static assertion_t *s_verifier;
static zactor_t *s_server;
static bus_client_t *s_client;

/* An approval server in its own thread, as in the service. Sends its endpoint once bound. */
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
            break;
        bus_server_recv(server);
    }
    zpoller_destroy(&poller);
done:
    approval_destroy(&approval);
    bus_server_destroy(&server);
    store_destroy(&store);
}

static int s_group_setup(void **state)
{
    (void)state;
    policy_defaults(&s_policy);
    s_redis = testenv_redis_start(0);
    if (!s_redis || sodium_init() < 0)
        return -1;
    uint8_t pk[ASSERTION_PUBLIC_LEN], sk[ASSERTION_SECRET_LEN];
    crypto_sign_keypair(pk, sk);
    s_signer = assertion_new(pk, sk);
    s_verifier = assertion_new(pk, NULL);
    return s_signer && s_verifier ? 0 : -1;
}

static int s_group_teardown(void **state)
{
    (void)state;
    assertion_destroy(&s_signer);
    assertion_destroy(&s_verifier);
    testenv_redis_destroy(&s_redis);
    return 0;
}

static int s_setup(void **state)
{
    (void)state;
    s_store = testenv_store(s_redis, 1);
    if (!s_store)
        return -1;
    s_server = zactor_new(s_server_actor, NULL);
    if (!s_server)
        return -1;
    char *endpoint = zstr_recv(s_server);
    s_client = bus_client_new(NULL, "test/client");
    int rc = endpoint && s_client ? bus_client_pin(s_client, "approval", endpoint) : -1;
    zstr_free(&endpoint);
    return rc;
}

static int s_teardown(void **state)
{
    (void)state;
    bus_client_destroy(&s_client);
    zactor_destroy(&s_server);
    store_destroy(&s_store);
    return 0;
}

/* ---- helpers ---------------------------------------------------------------------------- */

/* Sign who the next call acts for into *field, as the gateway does. */
static void s_as(const char *user, const char *role, const ProtobufCMessage *body,
                 Berth__SignedAssertion **field, assertion_signed_t *out)
{
    Berth__UserAssertion claims = BERTH__USER_ASSERTION__INIT;
    char *roles[] = { (char *)role };
    claims.user = (char *)user;
    claims.roles = roles;
    claims.n_roles = 1;
    claims.expires_ms = util_now_ms() + 10000;
    claims.request_id = "trace-groups";
    claims.action = (char *)body->descriptor->short_name;
    assert_int_equal(assertion_sign(s_signer, &claims, body, out), 0);
    *field = &out->msg;
}

static Berth__Envelope *s_call(const ProtobufCMessage *body)
{
    Berth__Envelope *reply = NULL;
    assert_int_equal(bus_client_call(s_client, "approval", body, "trace-groups", 5000, &reply), 0);
    return reply;
}

/* Call and expect the error code; Redis must be unchanged (keys and events). */
static long long s_state(void)
{
    redisReply *r = store_command(s_store, "DBSIZE");
    assert_non_null(r);
    long long keys = r->integer;
    freeReplyObject(r);
    r = store_command(s_store, "XLEN %s", KEYS_EVENTS);
    assert_non_null(r);
    long long events = r->integer;
    freeReplyObject(r);
    return keys * 1000000 + events;
}

static void s_refused(const ProtobufCMessage *body, const char *code, const char *field)
{
    long long before = s_state();
    Berth__Envelope *reply = s_call(body);
    assert_non_null(reply->error);
    if (strcmp(reply->error->code, code))
        fail_msg("%s: want %s, got %s (%s)", body->descriptor->short_name, code, reply->error->code,
                 reply->error->message);
    if (field) {
        int seen = 0;
        for (size_t i = 0; i < reply->error->n_details; i++)
            seen += !strcmp(reply->error->details[i]->key, "field") &&
                    !strcmp(reply->error->details[i]->value, field);
        assert_int_equal(seen, 1);
    }
    berth__envelope__free_unpacked(reply, NULL);
    assert_int_equal(s_state(), before);
}

/* Call, expect success and the body of type desc (caller frees). */
static ProtobufCMessage *s_ok(const ProtobufCMessage *body, const ProtobufCMessageDescriptor *desc)
{
    Berth__Envelope *reply = s_call(body);
    if (reply->error)
        fail_msg("%s: %s %s", body->descriptor->short_name, reply->error->code,
                 reply->error->message);
    ProtobufCMessage *msg = envelope_body(reply, desc);
    assert_non_null(msg);
    berth__envelope__free_unpacked(reply, NULL);
    return msg;
}

static void s_user(const char *name)
{
    char key[KEYS_MAX];
    redisReply *r =
        store_command(s_store, "HSET %s name %s", keys_build(key, KEYS_USER, name, NULL), name);
    assert_non_null(r);
    freeReplyObject(r);
}

/* Create group name as root; its id into id. */
static void s_create(const char *name, const Berth__Quota *quota, char id[UTIL_ID_LEN])
{
    assertion_signed_t as;
    Berth__CreateGroup c = BERTH__CREATE_GROUP__INIT;
    Berth__Group g = BERTH__GROUP__INIT;
    g.name = (char *)name;
    g.cost_centre = "CC-1";
    g.quota = (Berth__Quota *)quota;
    c.group = &g;
    s_as("root", "admin", &c.base, &c.assertion, &as);
    Berth__Group *made = (Berth__Group *)s_ok(&c.base, &berth__group__descriptor);
    assert_true(util_is_uuid(made->id));
    assert_string_equal(made->name, name);
    assert_int_equal(made->version, 1);
    util_strlcpy(id, made->id, UTIL_ID_LEN);
    protobuf_c_message_free_unpacked(&made->base, NULL);
}

/* A membership change by actor (role: their platform role). */
static Berth__Envelope *s_add(const char *actor, const char *role, const char *group,
                              const char *user, const char *as_role)
{
    assertion_signed_t as;
    Berth__AddMember a = BERTH__ADD_MEMBER__INIT;
    a.group = (char *)group;
    a.user = (char *)user;
    a.role = (char *)as_role;
    s_as(actor, role, &a.base, &a.assertion, &as);
    return s_call(&a.base);
}

static void s_assert_member(const char *group, const char *user, const char *role)
{
    char key[KEYS_MAX];
    redisReply *r =
        store_command(s_store, "HGET %s %s", keys_build(key, KEYS_USER_GROUPS, user, NULL), group);
    assert_non_null(r);
    if (role)
        assert_string_equal(r->str, role);
    else
        assert_int_equal(r->type, REDIS_REPLY_NIL);
    freeReplyObject(r);
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_create_and_get(void **state)
{
    (void)state;
    assertion_signed_t as;
    Berth__CreateGroup c = BERTH__CREATE_GROUP__INIT;
    Berth__Group g = BERTH__GROUP__INIT;
    Berth__Quota q = BERTH__QUOTA__INIT;
    q.vms = 10;
    q.vcpus = 20;
    q.ram_mb = 40960;
    q.disk_gb = 500;
    g.name = "eng";
    g.cost_centre = "CC-42";
    g.description = "Engineering";
    g.quota = &q;
    c.group = &g;
    s_refused(&c.base, "UNAUTHENTICATED", NULL); /* no assertion */
    s_as("alice", "user", &c.base, &c.assertion, &as);
    s_refused(&c.base, "FORBIDDEN", NULL); /* non-admin */

    s_as("root", "admin", &c.base, &c.assertion, &as);
    Berth__Group *made = (Berth__Group *)s_ok(&c.base, &berth__group__descriptor);
    assert_string_equal(made->cost_centre, "CC-42");
    assert_non_null(made->quota);
    assert_int_equal(made->quota->vms, 10);
    assert_int_equal(made->quota->ram_mb, 40960);

    s_as("root", "admin", &c.base, &c.assertion, &as);
    s_refused(&c.base, "CONFLICT", "name"); /* the name is taken */
    g.name = "Bad Name";
    s_as("root", "admin", &c.base, &c.assertion, &as);
    s_refused(&c.base, "BAD_REQUEST", "name");
    g.name = "eng2";
    q.vms = -1;
    s_as("root", "admin", &c.base, &c.assertion, &as);
    s_refused(&c.base, "BAD_REQUEST", "quota");
    q.vms = 1;
    g.parent = "00000000-0000-4000-8000-000000000000";
    s_as("root", "admin", &c.base, &c.assertion, &as);
    s_refused(&c.base, "NOT_FOUND", "parent");

    /* A project group inside the business unit, without a quota: no limit. */
    g.parent = made->id;
    g.quota = NULL;
    s_as("root", "admin", &c.base, &c.assertion, &as);
    Berth__Group *child = (Berth__Group *)s_ok(&c.base, &berth__group__descriptor);
    assert_string_equal(child->parent, made->id);
    assert_null(child->quota);

    Berth__GetGroup get = BERTH__GET_GROUP__INIT;
    get.id = child->id;
    s_as("root", "admin", &get.base, &get.assertion, &as);
    Berth__Group *got = (Berth__Group *)s_ok(&get.base, &berth__group__descriptor);
    assert_string_equal(got->name, "eng2");
    assert_null(got->quota);
    protobuf_c_message_free_unpacked(&got->base, NULL);
    get.id = made->id;
    s_as("root", "admin", &get.base, &get.assertion, &as);
    got = (Berth__Group *)s_ok(&get.base, &berth__group__descriptor);
    assert_int_equal(got->quota->disk_gb, 500);
    protobuf_c_message_free_unpacked(&got->base, NULL);
    /* Someone outside the group cannot tell it exists. */
    s_as("alice", "user", &get.base, &get.assertion, &as);
    s_refused(&get.base, "NOT_FOUND", NULL);
    get.id = "not-an-id";
    s_as("root", "admin", &get.base, &get.assertion, &as);
    s_refused(&get.base, "BAD_REQUEST", "id");
    protobuf_c_message_free_unpacked(&child->base, NULL);
    protobuf_c_message_free_unpacked(&made->base, NULL);
}

static void test_memberships(void **state)
{
    (void)state;
    char a[UTIL_ID_LEN], b[UTIL_ID_LEN];
    s_create("alpha", NULL, a);
    s_create("beta", NULL, b);
    s_user("alice");
    s_user("bob");
    s_user("carol");

    /* Nobody but an admin may make the first manager. */
    long long before = s_state();
    Berth__Envelope *reply = s_add("alice", "user", a, "alice", "manager");
    assert_string_equal(reply->error->code, "FORBIDDEN");
    berth__envelope__free_unpacked(reply, NULL);
    assert_int_equal(s_state(), before);

    reply = s_add("root", "admin", a, "alice", "manager");
    assert_null(reply->error);
    berth__envelope__free_unpacked(reply, NULL);
    s_assert_member(a, "alice", "manager");

    /* The manager of alpha adds bob to alpha, but nobody to beta. */
    reply = s_add("alice", "user", a, "bob", "member");
    assert_null(reply->error);
    berth__envelope__free_unpacked(reply, NULL);
    s_assert_member(a, "bob", "member");
    before = s_state();
    reply = s_add("alice", "user", b, "carol", "member");
    assert_string_equal(reply->error->code, "FORBIDDEN");
    berth__envelope__free_unpacked(reply, NULL);
    /* A member adds nobody. */
    reply = s_add("bob", "user", a, "carol", "member");
    assert_string_equal(reply->error->code, "FORBIDDEN");
    berth__envelope__free_unpacked(reply, NULL);
    /* Twice, an unknown user, an unknown role, an unknown group. */
    reply = s_add("alice", "user", a, "bob", "member");
    assert_string_equal(reply->error->code, "CONFLICT");
    berth__envelope__free_unpacked(reply, NULL);
    reply = s_add("alice", "user", a, "nobody", "member");
    assert_string_equal(reply->error->code, "NOT_FOUND");
    berth__envelope__free_unpacked(reply, NULL);
    reply = s_add("alice", "user", a, "carol", "owner");
    assert_string_equal(reply->error->code, "BAD_REQUEST");
    berth__envelope__free_unpacked(reply, NULL);
    reply = s_add("root", "admin", "00000000-0000-4000-8000-000000000000", "carol", "member");
    assert_string_equal(reply->error->code, "NOT_FOUND");
    berth__envelope__free_unpacked(reply, NULL);
    assert_int_equal(s_state(), before);
    s_assert_member(b, "carol", NULL);

    /* The manager changes bob's role, and removes him. */
    assertion_signed_t as;
    Berth__SetRole set = BERTH__SET_ROLE__INIT;
    set.group = a;
    set.user = "bob";
    set.role = "auditor";
    s_as("bob", "user", &set.base, &set.assertion, &as);
    s_refused(&set.base, "FORBIDDEN", NULL);
    s_as("alice", "user", &set.base, &set.assertion, &as);
    Berth__Membership *m = (Berth__Membership *)s_ok(&set.base, &berth__membership__descriptor);
    assert_string_equal(m->role, "auditor");
    protobuf_c_message_free_unpacked(&m->base, NULL);
    s_assert_member(a, "bob", "auditor");
    set.user = "carol";
    s_as("alice", "user", &set.base, &set.assertion, &as);
    s_refused(&set.base, "NOT_FOUND", NULL);

    /* Members of a group see its members; others do not see the group. */
    Berth__ListMembers lm = BERTH__LIST_MEMBERS__INIT;
    lm.group = a;
    s_as("bob", "user", &lm.base, &lm.assertion, &as);
    Berth__MemberList *ml = (Berth__MemberList *)s_ok(&lm.base, &berth__member_list__descriptor);
    assert_int_equal(ml->n_members, 2);
    assert_string_equal(ml->members[0]->user, "alice");
    assert_string_equal(ml->members[0]->role, "manager");
    assert_string_equal(ml->members[1]->user, "bob");
    assert_string_equal(ml->members[1]->role, "auditor");
    protobuf_c_message_free_unpacked(&ml->base, NULL);
    s_as("carol", "user", &lm.base, &lm.assertion, &as);
    s_refused(&lm.base, "NOT_FOUND", NULL);

    Berth__RemoveMember rm = BERTH__REMOVE_MEMBER__INIT;
    rm.group = a;
    rm.user = "bob";
    s_as("bob", "user", &rm.base, &rm.assertion, &as);
    s_refused(&rm.base, "FORBIDDEN", NULL);
    s_as("alice", "user", &rm.base, &rm.assertion, &as);
    m = (Berth__Membership *)s_ok(&rm.base, &berth__membership__descriptor);
    protobuf_c_message_free_unpacked(&m->base, NULL);
    s_assert_member(a, "bob", NULL);
    s_as("alice", "user", &rm.base, &rm.assertion, &as);
    s_refused(&rm.base, "NOT_FOUND", NULL);
}

static void test_list_pages(void **state)
{
    (void)state;
    char ids[5][UTIL_ID_LEN];
    const char *names[] = { "g-a", "g-b", "g-c", "g-d", "g-e" };
    for (int i = 0; i < 5; i++)
        s_create(names[i], NULL, ids[i]);
    s_user("dan");
    Berth__Envelope *reply = s_add("root", "admin", ids[3], "dan", "auditor");
    assert_null(reply->error);
    berth__envelope__free_unpacked(reply, NULL);
    reply = s_add("root", "admin", ids[1], "dan", "member");
    assert_null(reply->error);
    berth__envelope__free_unpacked(reply, NULL);

    /* An admin pages through every group, two at a time, each once. */
    assertion_signed_t as;
    Berth__ListGroups list = BERTH__LIST_GROUPS__INIT;
    list.limit = 2;
    char marker[UTIL_ID_LEN] = "";
    int seen[5] = { 0 }, pages = 0, total = 0;
    do {
        list.marker = marker;
        s_as("root", "admin", &list.base, &list.assertion, &as);
        Berth__GroupList *page =
            (Berth__GroupList *)s_ok(&list.base, &berth__group_list__descriptor);
        assert_true(page->n_groups <= 2);
        for (size_t i = 0; i < page->n_groups; i++) {
            total++;
            for (int k = 0; k < 5; k++)
                seen[k] += !strcmp(page->groups[i]->id, ids[k]);
            assert_true(strcmp(page->groups[i]->id, marker) > 0);
        }
        util_strlcpy(marker, page->next_marker ? page->next_marker : "", sizeof marker);
        protobuf_c_message_free_unpacked(&page->base, NULL);
        pages++;
    } while (*marker && pages < 10);
    assert_int_equal(total, 5);
    assert_int_equal(pages, 3);
    for (int k = 0; k < 5; k++)
        assert_int_equal(seen[k], 1);

    /* A user sees only their own groups, whatever their role in them. */
    list.limit = 0;
    list.marker = "";
    s_as("dan", "user", &list.base, &list.assertion, &as);
    Berth__GroupList *mine = (Berth__GroupList *)s_ok(&list.base, &berth__group_list__descriptor);
    assert_int_equal(mine->n_groups, 2);
    for (size_t i = 0; i < mine->n_groups; i++)
        assert_true(!strcmp(mine->groups[i]->id, ids[1]) || !strcmp(mine->groups[i]->id, ids[3]));
    assert_true(!mine->next_marker || !*mine->next_marker);
    protobuf_c_message_free_unpacked(&mine->base, NULL);

    list.limit = GROUPS_PAGE_MAX + 1;
    s_as("dan", "user", &list.base, &list.assertion, &as);
    s_refused(&list.base, "BAD_REQUEST", "limit");
    list.limit = 1;
    list.marker = "garbage";
    s_as("dan", "user", &list.base, &list.assertion, &as);
    s_refused(&list.base, "BAD_REQUEST", "marker");
}

static void test_update_and_delete(void **state)
{
    (void)state;
    char id[UTIL_ID_LEN];
    Berth__Quota q = BERTH__QUOTA__INIT;
    q.vms = 5;
    s_create("ops", &q, id);
    s_user("erin");

    assertion_signed_t as;
    Berth__UpdateGroup up = BERTH__UPDATE_GROUP__INIT;
    Berth__Group change = BERTH__GROUP__INIT;
    Berth__Quota more = BERTH__QUOTA__INIT;
    more.vms = 50;
    more.vcpus = 100;
    change.quota = &more;
    change.name = "renamed"; /* not named in fields: left alone */
    char *fields[] = { "quota" };
    up.id = id;
    up.group = &change;
    up.fields = fields;
    up.n_fields = 1;
    s_as("erin", "user", &up.base, &up.assertion, &as);
    s_refused(&up.base, "FORBIDDEN", NULL);
    s_as("root", "admin", &up.base, &up.assertion, &as);
    Berth__Group *g = (Berth__Group *)s_ok(&up.base, &berth__group__descriptor);
    assert_int_equal(g->version, 2);
    assert_int_equal(g->quota->vms, 50);
    assert_int_equal(g->quota->vcpus, 100);
    assert_string_equal(g->name, "ops");
    protobuf_c_message_free_unpacked(&g->base, NULL);
    /* A stale version changes nothing; dropping the quota lifts every limit. */
    up.version = 1;
    s_as("root", "admin", &up.base, &up.assertion, &as);
    s_refused(&up.base, "CONFLICT", NULL);
    up.version = 2;
    change.quota = NULL;
    s_as("root", "admin", &up.base, &up.assertion, &as);
    g = (Berth__Group *)s_ok(&up.base, &berth__group__descriptor);
    assert_int_equal(g->version, 3);
    assert_null(g->quota);
    protobuf_c_message_free_unpacked(&g->base, NULL);
    fields[0] = "name";
    s_as("root", "admin", &up.base, &up.assertion, &as);
    s_refused(&up.base, "BAD_REQUEST", "fields");
    fields[0] = "parent"; /* not inside itself */
    change.parent = id;
    up.version = 0;
    s_as("root", "admin", &up.base, &up.assertion, &as);
    s_refused(&up.base, "BAD_REQUEST", "parent");

    /* Not deleted while it has members; then gone, and its name free again. */
    Berth__Envelope *reply = s_add("root", "admin", id, "erin", "member");
    assert_null(reply->error);
    berth__envelope__free_unpacked(reply, NULL);
    Berth__DeleteGroup del = BERTH__DELETE_GROUP__INIT;
    del.id = id;
    s_as("erin", "user", &del.base, &del.assertion, &as);
    s_refused(&del.base, "FORBIDDEN", NULL);
    s_as("root", "admin", &del.base, &del.assertion, &as);
    s_refused(&del.base, "CONFLICT", NULL);
    Berth__RemoveMember rm = BERTH__REMOVE_MEMBER__INIT;
    rm.group = id;
    rm.user = "erin";
    s_as("root", "admin", &rm.base, &rm.assertion, &as);
    Berth__Membership *m = (Berth__Membership *)s_ok(&rm.base, &berth__membership__descriptor);
    protobuf_c_message_free_unpacked(&m->base, NULL);
    s_as("root", "admin", &del.base, &del.assertion, &as);
    g = (Berth__Group *)s_ok(&del.base, &berth__group__descriptor);
    assert_string_equal(g->name, "ops");
    protobuf_c_message_free_unpacked(&g->base, NULL);
    s_as("root", "admin", &del.base, &del.assertion, &as);
    s_refused(&del.base, "NOT_FOUND", NULL);
    char again[UTIL_ID_LEN];
    s_create("ops", NULL, again);
    assert_string_not_equal(again, id);
}

/* A business unit with a project inside is not deleted until the project is gone or moved. */
static void test_delete_refused_with_children(void **state)
{
    (void)state;
    char unit[UTIL_ID_LEN], other[UTIL_ID_LEN];
    s_create("unit", NULL, unit);
    s_create("other", NULL, other);
    assertion_signed_t as;
    Berth__CreateGroup c = BERTH__CREATE_GROUP__INIT;
    Berth__Group g = BERTH__GROUP__INIT;
    g.name = "project";
    g.parent = unit;
    c.group = &g;
    s_as("root", "admin", &c.base, &c.assertion, &as);
    Berth__Group *project = (Berth__Group *)s_ok(&c.base, &berth__group__descriptor);

    Berth__DeleteGroup del = BERTH__DELETE_GROUP__INIT;
    del.id = unit;
    s_as("root", "admin", &del.base, &del.assertion, &as);
    s_refused(&del.base, "CONFLICT", NULL);
    /* Moved into other: unit may go, other may not. */
    Berth__UpdateGroup up = BERTH__UPDATE_GROUP__INIT;
    Berth__Group change = BERTH__GROUP__INIT;
    char *fields[] = { "parent" };
    change.parent = other;
    up.id = project->id;
    up.group = &change;
    up.fields = fields;
    up.n_fields = 1;
    s_as("root", "admin", &up.base, &up.assertion, &as);
    Berth__Group *moved = (Berth__Group *)s_ok(&up.base, &berth__group__descriptor);
    assert_string_equal(moved->parent, other);
    protobuf_c_message_free_unpacked(&moved->base, NULL);
    del.id = other;
    s_as("root", "admin", &del.base, &del.assertion, &as);
    s_refused(&del.base, "CONFLICT", NULL);
    del.id = unit;
    s_as("root", "admin", &del.base, &del.assertion, &as);
    Berth__Group *gone = (Berth__Group *)s_ok(&del.base, &berth__group__descriptor);
    protobuf_c_message_free_unpacked(&gone->base, NULL);
    /* The project deleted, its parent goes too. */
    del.id = project->id;
    s_as("root", "admin", &del.base, &del.assertion, &as);
    gone = (Berth__Group *)s_ok(&del.base, &berth__group__descriptor);
    protobuf_c_message_free_unpacked(&gone->base, NULL);
    del.id = other;
    s_as("root", "admin", &del.base, &del.assertion, &as);
    gone = (Berth__Group *)s_ok(&del.base, &berth__group__descriptor);
    protobuf_c_message_free_unpacked(&gone->base, NULL);
    protobuf_c_message_free_unpacked(&project->base, NULL);
}

/* reserve: SetReservations, admin only: hosts by id or name, one per host, bounded fields;
   what grows must be free (CONFLICT with the figures); the answer shows what is used. */
static void test_set_reservations(void **state)
{
    (void)state;
    char id[UTIL_ID_LEN];
    s_create("res", NULL, id);
    s_user("rita");
    redisReply *r = store_command(s_store,
                                  "HSET berth:host:h-1 id h-1 name rack1 state UP last_seen_ms "
                                  "%lld cap_vcpus 4 cap_ram_mb 4096 cap_disk_gb 100 "
                                  "used_ram_mb 1024",
                                  (long long)util_now_ms());
    freeReplyObject(r);
    r = store_command(s_store, "SADD berth:hosts h-1");
    freeReplyObject(r);

    assertion_signed_t as;
    Berth__SetReservations set = BERTH__SET_RESERVATIONS__INIT;
    Berth__Reservation one = BERTH__RESERVATION__INIT, two = BERTH__RESERVATION__INIT;
    Berth__Reservation *list[] = { &one, &two };
    set.id = id;
    set.reservations = list;
    set.n_reservations = 1;
    one.host = "rack1"; /* by name */
    one.ram_mb = 2048;
    s_as("rita", "user", &set.base, &set.assertion, &as);
    s_refused(&set.base, "FORBIDDEN", NULL);
    one.ram_mb = 4000; /* 4096 - 1024 used: 3072 free */
    s_as("root", "admin", &set.base, &set.assertion, &as);
    s_refused(&set.base, "CONFLICT", NULL);
    one.ram_mb = 0;
    s_as("root", "admin", &set.base, &set.assertion, &as);
    s_refused(&set.base, "BAD_REQUEST", "reservations[0]");
    one.ram_mb = 2048;
    one.host = "nowhere";
    s_as("root", "admin", &set.base, &set.assertion, &as);
    s_refused(&set.base, "BAD_REQUEST", "reservations[0].host");
    one.host = "rack1";
    two.host = "h-1"; /* the same host by id */
    two.vcpus = 1;
    set.n_reservations = 2;
    s_as("root", "admin", &set.base, &set.assertion, &as);
    s_refused(&set.base, "BAD_REQUEST", "reservations[1].host");
    two.host = ""; /* any host */
    s_as("root", "admin", &set.base, &set.assertion, &as);
    Berth__Group *g = (Berth__Group *)s_ok(&set.base, &berth__group__descriptor);
    assert_int_equal(g->n_reservations, 2);
    assert_string_equal(g->reservations[0]->host, "h-1");
    assert_int_equal(g->reservations[0]->ram_mb, 2048);
    assert_non_null(g->reservations[0]->used);
    assert_int_equal(g->reservations[0]->used->ram_mb, 0);
    assert_string_equal(g->reservations[1]->host, "");
    assert_int_equal(g->version, 2);
    protobuf_c_message_free_unpacked(&g->base, NULL);
    char field[64];
    snprintf(field, sizeof field, "%s:ram_mb", id);
    r = store_command(s_store, "HGET berth:host-reservations:h-1 %s", field);
    assert_string_equal(r->str, "2048");
    freeReplyObject(r);
    /* A stale version changes nothing; none removes every reservation. */
    set.version = 1;
    s_as("root", "admin", &set.base, &set.assertion, &as);
    s_refused(&set.base, "CONFLICT", NULL);
    set.version = 0;
    set.n_reservations = 0;
    s_as("root", "admin", &set.base, &set.assertion, &as);
    g = (Berth__Group *)s_ok(&set.base, &berth__group__descriptor);
    assert_int_equal(g->n_reservations, 0);
    protobuf_c_message_free_unpacked(&g->base, NULL);
    r = store_command(s_store, "EXISTS berth:host-reservations:h-1 berth:reserved-hosts");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_and_get, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_memberships, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_list_pages, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_update_and_delete, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_delete_refused_with_children, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_set_reservations, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, s_group_setup, s_group_teardown);
}
