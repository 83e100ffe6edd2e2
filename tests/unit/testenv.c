/*  testenv: a real redis-server per test program, and scratch files. The server is a child
    process that dies with the test (PR_SET_PDEATHSIG), so a crashed test leaves nothing
    behind; its log stays in its directory and is printed when it fails to start. */
#include "testenv.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define START_TIMEOUT_MS 10000
#define STOP_GRACE_MS    10000
#define START_ATTEMPTS   5 /* a free port can be taken between probing and binding it */

struct _testenv_redis_t {
    char *dir; /* temporary directory: data files and redis.log */
    int port;
    int aof;   /* append-only file on */
    pid_t pid; /* 0 while stopped */
};

int64_t testenv_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void testenv_pause_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* A loopback port the kernel considers free right now. */
static int s_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = 0 };
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0 &&
        getsockname(fd, (struct sockaddr *)&addr, &len) == 0)
        port = ntohs(addr.sin_port);
    close(fd);
    return port;
}

static void s_print_log(testenv_redis_t *self)
{
    char path[512];
    snprintf(path, sizeof path, "%s/redis.out", self->dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[512];
    fprintf(stderr, "---- %s\n", path);
    while (fgets(line, sizeof line, f))
        fputs(line, stderr);
    fclose(f);
}

/* Reap the child if it exited; 1 if it is gone. */
static int s_exited(testenv_redis_t *self)
{
    if (!self->pid)
        return 1;
    int status;
    pid_t r = waitpid(self->pid, &status, WNOHANG);
    if (r == self->pid || (r < 0 && errno == ECHILD)) {
        self->pid = 0;
        return 1;
    }
    return 0;
}

static int s_ping(int port)
{
    struct timeval tv = { 0, 200000 };
    redisContext *ctx = redisConnectWithTimeout("127.0.0.1", port, tv);
    int ok = 0;
    if (ctx && !ctx->err) {
        redisSetTimeout(ctx, tv);
        redisReply *r = redisCommand(ctx, "PING");
        ok = r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
        if (r)
            freeReplyObject(r);
    }
    if (ctx)
        redisFree(ctx);
    return ok;
}

/* Spawn redis-server on self->port and wait for PING. 0, or -1 once it exited or timed out. */
static int s_spawn(testenv_redis_t *self)
{
    const char *server = getenv("BERTH_REDIS_SERVER");
    server = server && *server ? server : "redis-server";
    char port[16], out[512];
    snprintf(port, sizeof port, "%d", self->port);
    snprintf(out, sizeof out, "%s/redis.out", self->dir);
    const char *argv[] = { server,
                           "--port",
                           port,
                           "--bind",
                           "127.0.0.1",
                           "--dir",
                           self->dir,
                           "--save",
                           "",
                           "--appendonly",
                           self->aof ? "yes" : "no",
                           "--appendfsync",
                           "always",
                           "--daemonize",
                           "no",
                           "--protected-mode",
                           "no",
                           NULL };
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "testenv: fork failed: %s\n", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        /* The server must not outlive a test that crashed or was killed. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        int fd = open(out, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
            close(fd);
        }
        execvp(server, (char **)argv);
        fprintf(stderr, "testenv: cannot run %s: %s\n", server, strerror(errno));
        _exit(127);
    }
    self->pid = pid;
    int64_t deadline = testenv_now_ms() + START_TIMEOUT_MS;
    while (testenv_now_ms() < deadline) {
        if (s_exited(self))
            return -1;
        if (s_ping(self->port))
            return 0;
        testenv_pause_ms(20);
    }
    fprintf(stderr, "testenv: redis-server on port %d not ready after %d ms\n", self->port,
            START_TIMEOUT_MS);
    testenv_redis_stop(self);
    return -1;
}

testenv_redis_t *testenv_redis_start(int aof)
{
    testenv_redis_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->aof = aof;
    self->dir = testenv_tmpdir();
    if (!self->dir) {
        free(self);
        return NULL;
    }
    for (int attempt = 0; attempt < START_ATTEMPTS; attempt++) {
        self->port = s_free_port();
        if (self->port > 0 && s_spawn(self) == 0)
            return self;
    }
    fprintf(stderr, "testenv: redis-server would not start in %s\n", self->dir);
    s_print_log(self);
    testenv_redis_destroy(&self);
    return NULL;
}

int testenv_redis_stop(testenv_redis_t *self)
{
    if (!self || s_exited(self))
        return -1;
    kill(self->pid, SIGTERM);
    kill(self->pid, SIGCONT); /* a paused server would never see the SIGTERM */
    int64_t deadline = testenv_now_ms() + STOP_GRACE_MS;
    while (!s_exited(self)) {
        if (testenv_now_ms() >= deadline) {
            kill(self->pid, SIGKILL);
            waitpid(self->pid, NULL, 0);
            self->pid = 0;
            break;
        }
        testenv_pause_ms(10);
    }
    return 0;
}

int testenv_redis_restart(testenv_redis_t *self)
{
    if (!self)
        return -1;
    testenv_redis_stop(self);
    if (s_spawn(self) != 0) {
        fprintf(stderr, "testenv: redis-server would not restart on port %d\n", self->port);
        s_print_log(self);
        return -1;
    }
    return 0;
}

int testenv_redis_pause(testenv_redis_t *self)
{
    return self && self->pid && kill(self->pid, SIGSTOP) == 0 ? 0 : -1;
}

int testenv_redis_resume(testenv_redis_t *self)
{
    return self && self->pid && kill(self->pid, SIGCONT) == 0 ? 0 : -1;
}

void testenv_redis_destroy(testenv_redis_t **self_p)
{
    if (self_p && *self_p) {
        testenv_redis_t *self = *self_p;
        testenv_redis_stop(self);
        if (self->dir) {
            testenv_rmtree(self->dir);
            free(self->dir);
        }
        free(self);
        *self_p = NULL;
    }
}

int testenv_redis_port(testenv_redis_t *self)
{
    return self->port;
}

pid_t testenv_redis_pid(testenv_redis_t *self)
{
    return self->pid;
}

store_t *testenv_store(testenv_redis_t *self, int flush)
{
    store_t *store = store_new("127.0.0.1", self->port, 1000, 1000);
    if (!store)
        return NULL;
    /* The store connects lazily and backs off after a failure: poll until it is through. */
    int64_t deadline = testenv_now_ms() + START_TIMEOUT_MS;
    int ok = 0;
    while (!ok && testenv_now_ms() < deadline) {
        redisReply *r = store_command(store, flush ? "FLUSHALL" : "PING");
        ok = r && r->type == REDIS_REPLY_STATUS;
        if (r)
            freeReplyObject(r);
        if (!ok)
            testenv_pause_ms(20);
    }
    if (!ok) {
        fprintf(stderr, "testenv: no store connection to port %d\n", self->port);
        store_destroy(&store);
    }
    return store;
}

char *testenv_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/berth-test-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(path)) {
        fprintf(stderr, "testenv: mkdtemp %s: %s\n", path, strerror(errno));
        return NULL;
    }
    return strdup(path);
}

static int s_remove(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int testenv_rmtree(const char *path)
{
    return nftw(path, s_remove, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -1;
}

char *testenv_write_file(const char *dir, const char *name, const char *text)
{
    size_t size = strlen(dir) + strlen(name) + 2;
    char *path = malloc(size);
    if (!path)
        return NULL;
    snprintf(path, size, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    int ok = f && fputs(text, f) >= 0;
    if (f && fclose(f) != 0)
        ok = 0;
    if (!ok) {
        fprintf(stderr, "testenv: cannot write %s\n", path);
        free(path);
        return NULL;
    }
    return path;
}

static int s_group_setup(void **state, int aof)
{
    testenv_fixture_t *f = calloc(1, sizeof *f);
    if (!f || !(f->redis = testenv_redis_start(aof))) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

int testenv_group_setup(void **state)
{
    return s_group_setup(state, 0);
}

int testenv_group_setup_aof(void **state)
{
    return s_group_setup(state, 1);
}

int testenv_group_teardown(void **state)
{
    testenv_fixture_t *f = *state;
    if (f) {
        store_destroy(&f->store);
        testenv_redis_destroy(&f->redis);
        free(f);
    }
    *state = NULL;
    return 0;
}

int testenv_setup(void **state)
{
    testenv_fixture_t *f = *state;
    f->store = testenv_store(f->redis, 1);
    return f->store ? 0 : -1;
}

int testenv_teardown(void **state)
{
    testenv_fixture_t *f = *state;
    store_destroy(&f->store);
    return 0;
}
