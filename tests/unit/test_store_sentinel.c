/*  store with Redis Sentinel, for real: a primary, its replica and a sentinel (redis-server
    --sentinel) on free loopback ports. The store finds the primary through the sentinel,
    and after the primary is killed (-9) finds the promoted replica without being told. */
#include "metrics.h"
#include "store.h"
#include "testenv.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#define DEADLINE_MS 30000

static int s_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = 0 };
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0 &&
        getsockname(fd, (struct sockaddr *)&addr, &len) == 0)
        port = ntohs(addr.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* A sentinel watching the primary at primary_port as "berth", quick to fail over. */
static pid_t s_sentinel_start(const char *dir, int port, int primary_port)
{
    char conf[4096];
    snprintf(conf, sizeof conf, "%s/sentinel-%d.conf", dir, port);
    FILE *f = fopen(conf, "w");
    if (!f)
        return -1;
    fprintf(f,
            "port %d\nbind 127.0.0.1\ndir %s\n"
            "sentinel monitor berth 127.0.0.1 %d 1\n"
            "sentinel down-after-milliseconds berth 500\n"
            "sentinel failover-timeout berth 2000\n",
            port, dir, primary_port);
    fclose(f);
    const char *server =
        getenv("BERTH_REDIS_SERVER") ? getenv("BERTH_REDIS_SERVER") : "redis-server";
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        char log[4096];
        snprintf(log, sizeof log, "%s/sentinel-%d.log", dir, port);
        execlp(server, server, conf, "--sentinel", "--logfile", log, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* The reply to command on store, as "status:OK", "string:v", "error:..." or "null". */
static void s_reply(store_t *store, const char *command, char *out, size_t size)
{
    redisReply *r = store_command(store, command);
    if (!r)
        snprintf(out, size, "null");
    else {
        snprintf(out, size, "%s:%s",
                 r->type == REDIS_REPLY_STATUS   ? "status"
                 : r->type == REDIS_REPLY_STRING ? "string"
                 : r->type == REDIS_REPLY_ERROR  ? "error"
                                                 : "other",
                 r->str ? r->str : "");
        freeReplyObject(r);
    }
}

/* Poll command on store until it answers want, or the deadline; the answer last seen. */
static int s_until(store_t *store, const char *command, const char *want, char *got, size_t size)
{
    int64_t deadline = testenv_now_ms() + DEADLINE_MS;
    do {
        s_reply(store, command, got, size);
        if (strcmp(got, want) == 0)
            return 0;
        testenv_pause_ms(50);
    } while (testenv_now_ms() < deadline);
    return -1;
}

static void test_store_follows_the_primary_through_sentinel(void **state)
{
    (void)state;
    testenv_redis_t *primary = testenv_redis_start(0);
    testenv_redis_t *replica = testenv_redis_start(0);
    assert_non_null(primary);
    assert_non_null(replica);
    store_t *admin_r = testenv_store(replica, 1);
    char cmd[256], got[256];
    snprintf(cmd, sizeof cmd, "REPLICAOF 127.0.0.1 %d", testenv_redis_port(primary));
    s_reply(admin_r, cmd, got, sizeof got);
    assert_string_equal(got, "status:OK");
    /* The replica in sync before the sentinel looks, so that the sentinel sees it at once. */
    redisReply *r = NULL;
    int64_t deadline = testenv_now_ms() + DEADLINE_MS;
    int linked = 0;
    while (!linked && testenv_now_ms() < deadline) {
        r = store_command(admin_r, "INFO replication");
        linked = r && r->str && strstr(r->str, "master_link_status:up");
        if (r)
            freeReplyObject(r);
        if (!linked)
            testenv_pause_ms(50);
    }
    assert_true(linked);

    char *dir = testenv_tmpdir();
    assert_non_null(dir);
    int sport = s_free_port();
    pid_t sentinel = s_sentinel_start(dir, sport, testenv_redis_port(primary));
    assert_true(sentinel > 0);

    /* The first address in the list answers nothing: the store asks the next one. */
    char list[128];
    snprintf(list, sizeof list, "127.0.0.1:%d,127.0.0.1:%d", s_free_port(), sport);
    store_t *store = store_new("127.0.0.1", 1, 500, 1000);
    store_set_sentinels(store, list, "berth");
    assert_int_equal(s_until(store, "SET berth:k before", "status:OK", got, sizeof got), 0);
    store_t *admin_p = testenv_store(primary, 0);
    s_reply(admin_p, "GET berth:k", got, sizeof got);
    assert_string_equal(got, "string:before"); /* written on the primary */

    /* The primary dies: the sentinel promotes the replica, and the same store writes there. */
    kill(testenv_redis_pid(primary), SIGKILL);
    int64_t killed = testenv_now_ms();
    assert_int_equal(s_until(store, "SET berth:k after", "status:OK", got, sizeof got), 0);
    print_message("first write %lld ms after the kill\n", (long long)(testenv_now_ms() - killed));
    s_reply(admin_r, "GET berth:k", got, sizeof got);
    assert_string_equal(got, "string:after");
    char *text = metrics_render();
    assert_non_null(strstr(text, "berth_redis_failovers_total 1\n"));
    free(text);

    store_destroy(&store);
    store_destroy(&admin_p);
    store_destroy(&admin_r);
    kill(sentinel, SIGKILL);
    waitpid(sentinel, NULL, 0);
    testenv_rmtree(dir);
    free(dir);
    testenv_redis_destroy(&replica);
    testenv_redis_destroy(&primary);
}

/* redis_wait_replicas: a write is reported on the replica while it answers, and failed
   (store_wait -1, store_ok false) while it is stopped. */
static void test_store_wait_needs_the_replica(void **state)
{
    (void)state;
    testenv_redis_t *primary = testenv_redis_start(0);
    testenv_redis_t *replica = testenv_redis_start(0);
    assert_non_null(primary);
    assert_non_null(replica);
    store_t *admin_r = testenv_store(replica, 1);
    char cmd[256], got[256];
    snprintf(cmd, sizeof cmd, "REPLICAOF 127.0.0.1 %d", testenv_redis_port(primary));
    s_reply(admin_r, cmd, got, sizeof got);
    assert_string_equal(got, "status:OK");
    store_t *store = testenv_store(primary, 0);
    store_set_wait(store, 1, 300);
    /* Once the replica is linked, a write reaches it within the wait. */
    int64_t deadline = testenv_now_ms() + DEADLINE_MS;
    int waited = -1;
    while (waited != 0 && testenv_now_ms() < deadline) {
        s_reply(store, "SET berth:w up", got, sizeof got);
        assert_string_equal(got, "status:OK");
        waited = store_wait(store);
    }
    assert_int_equal(waited, 0);
    assert_true(store_ok(store));

    kill(testenv_redis_pid(replica), SIGSTOP);
    s_reply(store, "SET berth:w stopped", got, sizeof got);
    assert_string_equal(got, "status:OK");
    assert_int_equal(store_wait(store), -1);
    assert_false(store_ok(store));
    kill(testenv_redis_pid(replica), SIGCONT);
    char *text = metrics_render();
    assert_non_null(strstr(text, "berth_redis_unreplicated_writes_total"));
    free(text);

    store_destroy(&store);
    store_destroy(&admin_r);
    testenv_redis_destroy(&replica);
    testenv_redis_destroy(&primary);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_wait_needs_the_replica),
        cmocka_unit_test(test_store_follows_the_primary_through_sentinel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
