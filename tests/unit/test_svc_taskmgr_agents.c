/*  The agent protocol of taskmgr (agents.c) over a real bus and a real Redis: a poll with
    nothing due is parked and answered empty after its wait; a command pushed for a host is
    handed out at once over the poll the host parked; a newer poll supersedes a parked one;
    a result is acknowledged only when the engine recorded it; an agent's certificate speaks
    for its own host only; a host registers with its first beat, goes DOWN once its beat's
    ttl runs out (its VMs' power UNKNOWN, the engine told), comes back reconciled, reports
    orphans, alerts on a domain stopped behind Berth's back, and an agent that restarted
    without a VM's domain makes that VM ERROR. The service runs on its own thread, on CURVE; the
   test is the agent, calling it through bus_client with host certificates. */
#include "agents.h"
#include "keys.h"
#include "testenv.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <pthread.h>

typedef struct {
    testenv_redis_t *redis;
    service_t *service;
    agents_t *agents;
    pthread_t thread;
    char endpoint[256];
    char *secrets;      /* secrets dir: taskmgr's certificate and agent-h1..agent-h4 */
    char recorded[64];  /* last result recorded by the engine (its command id) */
    int refuse;         /* the engine's answer: -1 (write failed) when set */
    volatile int downs; /* hosts the engine was told went past their ttl */
} fixture_t;

static void s_on_down(void *arg, const char *host)
{
    fixture_t *f = arg;
    (void)host;
    f->downs++;
}

/* The engine's side: record the result (or fail to). Runs on the service thread. */
static int s_on_result(void *arg, const char *host, const Berth__AgentResult *result)
{
    fixture_t *f = arg;
    (void)host;
    if (f->refuse)
        return -1;
    util_strlcpy(f->recorded, result->command, sizeof f->recorded);
    return 0;
}

/* Test hooks on the service's loop: GetSeed{vm = host} pushes command "cmd-<host>";
   ListImages stops the loop. */
static void s_on_push(bus_request_t *request, void *arg)
{
    fixture_t *f = arg;
    Berth__GetSeed *req = bus_request_body(request, &berth__get_seed__descriptor);
    char id[64];
    snprintf(id, sizeof id, "cmd-%s", req->vm);
    Berth__AgentCommand cmd = BERTH__AGENT_COMMAND__INIT;
    cmd.id = id;
    cmd.op = "START";
    cmd.vm = "00000000-0000-4000-8000-000000000001";
    assert_int_equal(agents_push(f->agents, req->vm, &cmd), 0);
    Berth__Ping pong = BERTH__PING__INIT;
    bus_reply(request, &pong.base);
}

static void s_on_stop(bus_request_t *request, void *arg)
{
    fixture_t *f = arg;
    Berth__Ping pong = BERTH__PING__INIT;
    bus_reply(request, &pong.base);
    service_stop(f->service);
}

static void *s_run(void *arg)
{
    fixture_t *f = arg;
    service_run(f->service);
    return NULL;
}

static char *s_secrets; /* the fixture's, for calls made on other threads */

/* One call to taskmgr as the agent of host (its certificate "agent-<host>"). */
static Berth__Envelope *s_call_as(const char *host, const char *endpoint,
                                  const ProtobufCMessage *body, int timeout)
{
    char cert[64];
    snprintf(cert, sizeof cert, "agent-%s", host);
    bus_auth_t *auth = bus_auth_new(s_secrets, cert);
    assert_non_null(auth);
    bus_client_t *client = bus_client_new(NULL, "agent/test");
    assert_non_null(client);
    bus_client_secure(client, auth);
    assert_int_equal(bus_client_pin(client, "taskmgr", endpoint), 0);
    Berth__Envelope *reply = NULL;
    int rc = bus_client_call(client, "taskmgr", body, NULL, timeout, &reply);
    bus_client_destroy(&client);
    bus_auth_destroy(&auth);
    return rc == 0 ? reply : NULL;
}

static Berth__Envelope *s_call(const char *endpoint, const ProtobufCMessage *body, int timeout)
{
    return s_call_as("h1", endpoint, body, timeout);
}

/* A poll of host; the commands answered (their ids, comma-separated) in out. -1 on error. */
static int s_poll(const char *endpoint, const char *host, int wait_ms, Berth__AgentResult **results,
                  size_t n_results, char *out, size_t size)
{
    Berth__AgentWork work = BERTH__AGENT_WORK__INIT;
    work.host = (char *)host;
    work.instance = "agent-test";
    work.wait_ms = wait_ms;
    work.results = results;
    work.n_results = n_results;
    Berth__Envelope *reply = s_call_as(host, endpoint, &work.base, wait_ms + 3000);
    if (!reply || reply->error) {
        if (reply)
            berth__envelope__free_unpacked(reply, NULL);
        return -1;
    }
    Berth__AgentWorkReply *body =
        (Berth__AgentWorkReply *)envelope_body(reply, &berth__agent_work_reply__descriptor);
    berth__envelope__free_unpacked(reply, NULL);
    assert_non_null(body);
    out[0] = '\0';
    for (size_t i = 0; i < body->n_commands; i++)
        snprintf(out + strlen(out), size - strlen(out), "%s%s", i ? "," : "",
                 body->commands[i]->id);
    berth__agent_work_reply__free_unpacked(body, NULL);
    return 0;
}

static void s_push(fixture_t *f, const char *host)
{
    Berth__GetSeed req = BERTH__GET_SEED__INIT;
    req.vm = (char *)host;
    Berth__Envelope *reply = s_call(f->endpoint, &req.base, 3000);
    assert_non_null(reply);
    assert_null(reply->error);
    berth__envelope__free_unpacked(reply, NULL);
}

static int s_setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    f->redis = testenv_redis_start(0);
    assert_non_null(f->redis);
    char port[16];
    snprintf(port, sizeof port, "%d", testenv_redis_port(f->redis));
    setenv("BERTH_REDIS_PORT", port, 1);
    setenv("BERTH_REDIS_HOST", "127.0.0.1", 1);
    setenv("BERTH_BIND", "tcp://127.0.0.1:*", 1);
    setenv("BERTH_INSTANCE", "taskmgr-test", 1);
    setenv("BERTH_HOST_DOWN_GRACE_MS", "0", 1);
    f->secrets = testenv_tmpdir();
    assert_non_null(f->secrets);
    s_secrets = f->secrets;
    assert_int_equal(bus_auth_make(f->secrets, "taskmgr", "taskmgr", NULL, 0), 0);
    const char *hosts[] = { "h1", "h2", "h3", "h4" };
    for (size_t i = 0; i < 4; i++) {
        char cert[64];
        snprintf(cert, sizeof cert, "agent-%s", hosts[i]);
        assert_int_equal(bus_auth_make(f->secrets, cert, "agent", hosts[i], 0), 0);
    }
    setenv("BERTH_SECRETS_DIR", f->secrets, 1);
    char *argv[] = { "berth-taskmgr", NULL };
    f->service = service_new("taskmgr", 1, argv);
    assert_non_null(f->service);
    agents_declare(service_config(f->service));
    assert_int_equal(service_start(f->service), 0);
    f->agents = agents_new(f->service);
    assert_non_null(f->agents);
    agents_on_result(f->agents, s_on_result, f);
    agents_on_down(f->agents, s_on_down, f);
    service_on(f->service, "GetSeed", "*", s_on_push, f);
    service_on(f->service, "ListImages", "*", s_on_stop, f);
    util_strlcpy(f->endpoint, service_endpoint(f->service), sizeof f->endpoint);
    assert_int_equal(pthread_create(&f->thread, NULL, s_run, f), 0);
    *state = f;
    return 0;
}

static int s_teardown(void **state)
{
    fixture_t *f = *state;
    Berth__ListImages stop = BERTH__LIST_IMAGES__INIT;
    Berth__Envelope *reply = s_call(f->endpoint, &stop.base, 3000);
    if (reply)
        berth__envelope__free_unpacked(reply, NULL);
    pthread_join(f->thread, NULL);
    agents_destroy(&f->agents);
    service_destroy(&f->service);
    testenv_redis_destroy(&f->redis);
    testenv_rmtree(f->secrets);
    free(f->secrets);
    free(f);
    return 0;
}

/* A poll with nothing due waits (parked) and ends empty; wait_ms 0 answers at once. */
static void test_parked_then_empty(void **state)
{
    fixture_t *f = *state;
    char cmds[256];
    assert_int_equal(s_poll(f->endpoint, "h1", 0, NULL, 0, cmds, sizeof cmds), 0);
    assert_string_equal(cmds, "");
    int64_t t0 = util_mono_ms();
    assert_int_equal(s_poll(f->endpoint, "h1", 400, NULL, 0, cmds, sizeof cmds), 0);
    int64_t took = util_mono_ms() - t0;
    assert_string_equal(cmds, "");
    assert_true(took >= 400);
}

typedef struct {
    const char *endpoint;
    const char *host;
    int wait_ms;
    int rc;
    char cmds[256];
    int64_t answered_at; /* monotonic ms */
} s_poller_t;

static void *s_poller(void *arg)
{
    s_poller_t *p = arg;
    p->rc = s_poll(p->endpoint, p->host, p->wait_ms, NULL, 0, p->cmds, sizeof p->cmds);
    p->answered_at = util_mono_ms();
    return NULL;
}

/* Requests the service handled so far (its Status, through Ping). */
static int64_t s_handled(fixture_t *f)
{
    Berth__Ping ping = BERTH__PING__INIT;
    Berth__Envelope *reply = s_call(f->endpoint, &ping.base, 3000);
    assert_non_null(reply);
    Berth__Status *st = (Berth__Status *)envelope_body(reply, &berth__status__descriptor);
    berth__envelope__free_unpacked(reply, NULL);
    assert_non_null(st);
    int64_t n = (int64_t)st->handled;
    berth__status__free_unpacked(st, NULL);
    return n;
}

/* Wait (with a deadline) until the service handled one more request than the Pings this
   makes: the poll started on the other thread has arrived and is parked. */
static void s_wait_parked(fixture_t *f, int64_t base)
{
    int64_t pings = 0, deadline = util_mono_ms() + 5000;
    while (util_mono_ms() < deadline) {
        if (s_handled(f) - base - pings >= 1)
            return;
        pings++;
    }
    fail_msg("the poll never reached the service");
}

/* A command pushed for a host goes out at once over the poll it parked; the result comes
   back in a new poll and is acknowledged once recorded. */
static void test_push_answers_parked_poll(void **state)
{
    fixture_t *f = *state;
    s_poller_t p = { .endpoint = f->endpoint, .host = "h2", .wait_ms = 10000 };
    pthread_t t;
    int64_t base = s_handled(f) + 1; /* the Ping that asked counts from now on */
    assert_int_equal(pthread_create(&t, NULL, s_poller, &p), 0);
    s_wait_parked(f, base);
    int64_t pushed = util_mono_ms();
    s_push(f, "h2");
    pthread_join(t, NULL);
    assert_int_equal(p.rc, 0);
    assert_string_equal(p.cmds, "cmd-h2");
    assert_true(p.answered_at - pushed < 1000); /* not the 10 s wait */

    /* Handed out once: the next poll does not get it again. */
    char cmds[256];
    assert_int_equal(s_poll(f->endpoint, "h2", 0, NULL, 0, cmds, sizeof cmds), 0);
    assert_string_equal(cmds, "");

    /* The result: refused while the engine cannot record it, then acknowledged. */
    Berth__AgentResult r = BERTH__AGENT_RESULT__INIT;
    r.command = "cmd-h2";
    r.ok = 1;
    r.power_state = "RUNNING";
    Berth__AgentResult *results[] = { &r };
    f->refuse = 1;
    assert_int_equal(s_poll(f->endpoint, "h2", 0, results, 1, cmds, sizeof cmds), -1);
    f->refuse = 0;
    assert_int_equal(s_poll(f->endpoint, "h2", 0, results, 1, cmds, sizeof cmds), 0);
    assert_string_equal(f->recorded, "cmd-h2");
}

/* A command pushed while no poll is parked waits for the host's next poll. */
static void test_push_waits_for_next_poll(void **state)
{
    fixture_t *f = *state;
    s_push(f, "h3");
    char cmds[256];
    int64_t t0 = util_mono_ms();
    assert_int_equal(s_poll(f->endpoint, "h3", 10000, NULL, 0, cmds, sizeof cmds), 0);
    assert_string_equal(cmds, "cmd-h3");
    assert_true(util_mono_ms() - t0 < 1000);
}

/* A newer poll from the same host supersedes the parked one, which is answered empty. */
static void test_newer_poll_supersedes(void **state)
{
    fixture_t *f = *state;
    s_poller_t p = { .endpoint = f->endpoint, .host = "h4", .wait_ms = 10000 };
    pthread_t t;
    int64_t base = s_handled(f) + 1; /* the Ping that asked counts from now on */
    assert_int_equal(pthread_create(&t, NULL, s_poller, &p), 0);
    s_wait_parked(f, base);
    int64_t t0 = util_mono_ms();
    char cmds[256];
    assert_int_equal(s_poll(f->endpoint, "h4", 0, NULL, 0, cmds, sizeof cmds), 0);
    pthread_join(t, NULL);
    assert_int_equal(p.rc, 0);
    assert_string_equal(p.cmds, "");
    assert_true(p.answered_at - t0 < 1000);
}

/* An agent speaks for the host its certificate names: h1's certificate cannot poll h2's
   commands, report h2's results or heartbeat as h2; h2's own poll still gets its command. */
static void test_agent_bound_to_host(void **state)
{
    fixture_t *f = *state;
    s_push(f, "h2");
    Berth__AgentResult r = BERTH__AGENT_RESULT__INIT;
    r.command = "cmd-h2";
    r.ok = 1;
    Berth__AgentResult *results[] = { &r };
    Berth__AgentWork work = BERTH__AGENT_WORK__INIT;
    work.host = "h2";
    work.instance = "agent-test";
    Berth__Resources cap = BERTH__RESOURCES__INIT;
    cap.vcpus = 1;
    Berth__Host host = BERTH__HOST__INIT;
    host.id = "h2";
    host.capacity = &cap;
    Berth__AgentHeartbeat hb = BERTH__AGENT_HEARTBEAT__INIT;
    hb.instance = "agent-test";
    hb.host = &host;
    hb.ttl_ms = 1000;
    const ProtobufCMessage *forged[3] = { &work.base, NULL, &hb.base };
    Berth__AgentWork with_result = work;
    with_result.results = results;
    with_result.n_results = 1;
    forged[1] = &with_result.base;
    for (int i = 0; i < 3; i++) {
        Berth__Envelope *reply = s_call_as("h1", f->endpoint, forged[i], 3000);
        assert_non_null(reply);
        assert_non_null(reply->error);
        assert_string_equal(reply->error->code, "FORBIDDEN");
        berth__envelope__free_unpacked(reply, NULL);
    }
    assert_string_equal(f->recorded, ""); /* the forged result reached no task */
    char cmds[256];
    assert_int_equal(s_poll(f->endpoint, "h2", 0, NULL, 0, cmds, sizeof cmds), 0);
    assert_string_equal(cmds, "cmd-h2"); /* still there for h2's own agent */
}

/* ---- reconciliation ---------------------------------------------------------------------- */

#define VM_A "00000000-0000-4000-8000-00000000000a"

/* A heartbeat of h3 (started at `started`) reporting VM_A as power (NULL: not at all) and a
   domain "legacy" that no VM of Berth is. */
static void s_beat(fixture_t *f, int64_t started, const char *power)
{
    Berth__Resources cap = BERTH__RESOURCES__INIT;
    cap.vcpus = 4;
    Berth__Host host = BERTH__HOST__INIT;
    host.id = "h3";
    host.state = "UP";
    host.capacity = &cap;
    Berth__Domain a = BERTH__DOMAIN__INIT, legacy = BERTH__DOMAIN__INIT;
    a.name = VM_A;
    a.power_state = (char *)power;
    legacy.name = "legacy";
    legacy.power_state = "RUNNING";
    Berth__Domain *domains[] = { &legacy, &a };
    Berth__AgentHeartbeat hb = BERTH__AGENT_HEARTBEAT__INIT;
    hb.instance = "agent-h3";
    hb.host = &host;
    hb.ttl_ms = 300;
    hb.started_ms = started;
    hb.domains = domains;
    hb.n_domains = power ? 2 : 1;
    Berth__Envelope *reply = s_call_as("h3", f->endpoint, &hb.base, 3000);
    assert_non_null(reply);
    assert_null(reply->error);
    berth__envelope__free_unpacked(reply, NULL);
}

static char *s_hget(store_t *store, const char *key, const char *field)
{
    redisReply *r = store_command(store, "HGET %s %s", key, field);
    assert_non_null(r);
    char *v = strdup(r->type == REDIS_REPLY_STRING ? r->str : "");
    freeReplyObject(r);
    return v;
}

/* Wait up to 5 s for field of key to be want. */
static void s_wait_field(store_t *store, const char *key, const char *field, const char *want)
{
    char *v = NULL;
    for (int64_t end = util_mono_ms() + 5000; util_mono_ms() < end; zclock_sleep(20)) {
        free(v);
        v = s_hget(store, key, field);
        if (streq(v, want))
            break;
    }
    if (!streq(v, want))
        fail_msg("%s %s is '%s', not '%s'", key, field, v, want);
    free(v);
}

/* Beat as s_beat every 50 ms until field of key is want (5 s at most): a VM written within
   the last heartbeat interval takes a report only from a later beat. */
static void s_beat_until(fixture_t *f, store_t *store, int64_t started, const char *power,
                         const char *key, const char *field, const char *want)
{
    char *v = NULL;
    for (int64_t end = util_mono_ms() + 5000; util_mono_ms() < end; zclock_sleep(50)) {
        s_beat(f, started, power);
        free(v);
        v = s_hget(store, key, field);
        if (streq(v, want))
            break;
    }
    if (!streq(v, want))
        fail_msg("%s %s is '%s', not '%s'", key, field, v, want);
    free(v);
}

/* Events of type on berth:events with field = value, counted. */
static int s_events(store_t *store, const char *type, const char *field, const char *value)
{
    redisReply *r = store_command(store, "XRANGE %s - +", KEYS_EVENTS);
    assert_non_null(r);
    int n = 0;
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *kv = r->element[i]->element[1];
        int is_type = 0, has = 0;
        for (size_t k = 0; k + 1 < kv->elements; k += 2) {
            is_type |= streq(kv->element[k]->str, "type") && streq(kv->element[k + 1]->str, type);
            has |= streq(kv->element[k]->str, field) && streq(kv->element[k + 1]->str, value);
        }
        n += is_type && has;
    }
    freeReplyObject(r);
    return n;
}

static void test_host_down_back_and_reconciled(void **state)
{
    fixture_t *f = *state;
    store_t *store = testenv_store(f->redis, 0);
    assert_non_null(store);
    char vkey[KEYS_MAX], hkey[KEYS_MAX];
    keys_vm(vkey, VM_A);
    keys_host(hkey, "h3");
    redisReply *r = store_command(store,
                                  "HSET %s id %s state ACTIVE power_state RUNNING host h3 "
                                  "version 3 owner u1 group g1",
                                  vkey, VM_A);
    freeReplyObject(r);
    freeReplyObject(store_command(store, "ZADD %s 1 %s", KEYS_VMS, VM_A));

    /* First beat: registered UP; "legacy" is an orphan. */
    s_beat(f, 1000, "RUNNING");
    s_wait_field(store, hkey, "state", "UP");
    s_wait_field(store, hkey, "orphans", "[\"legacy\"]");
    assert_int_equal(s_events(store, "host.orphans", "host", "h3"), 1);

    /* The domain stops behind Berth's back: power STOPPED with an alert. */
    s_beat_until(f, store, 1000, "STOPPED", vkey, "power_state", "STOPPED");
    assert_int_equal(s_events(store, "vm.power", "alert", "1"), 1);
    s_beat_until(f, store, 1000, "RUNNING", vkey, "power_state", "RUNNING");
    assert_int_equal(s_events(store, "vm.power", "alert", "1"), 1); /* a start is no alert */

    /* No more beats: DOWN once its ttl ran out, the VM UNKNOWN, the engine told. */
    s_wait_field(store, hkey, "state", "DOWN");
    s_wait_field(store, vkey, "power_state", "UNKNOWN");
    for (int64_t end = util_mono_ms() + 2000; !f->downs && util_mono_ms() < end;)
        zclock_sleep(20);
    assert_int_equal(f->downs, 1);
    assert_true(agents_host_down(f->agents, "h3"));
    assert_int_equal(s_events(store, "host.state", "state", "DOWN"), 1);

    /* Back with the domain: UP, power RUNNING again, one reconciliation. */
    s_beat(f, 1000, "RUNNING");
    s_wait_field(store, hkey, "state", "UP");
    s_wait_field(store, vkey, "power_state", "RUNNING");
    assert_int_equal(s_events(store, "host.reconciled", "host", "h3"), 1);

    /* Its agent restarted without the domain: the VM is lost, ERROR with a fault. */
    s_beat(f, 2000, NULL);
    s_wait_field(store, vkey, "state", "ERROR");
    char *fault = s_hget(store, vkey, "fault");
    assert_non_null(strstr(fault, "domain was missing when host h3 came back"));
    free(fault);
    s_wait_field(store, vkey, "power_state", "NOSTATE");
    s_wait_field(store, hkey, "state", "UP");
    assert_int_equal(s_events(store, "host.reconciled", "lost", "1"), 1);
    store_destroy(&store);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_parked_then_empty, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_push_answers_parked_poll, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_push_waits_for_next_poll, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_newer_poll_supersedes, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_agent_bound_to_host, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_host_down_back_and_reconciled, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
