/*  testenv: what unit tests need from the outside world, for real. A redis-server on a free
    loopback port inside its own temporary directory (started, stopped, paused, restarted on
    the same port), a fresh store_t connected to it, and scratch directories and files. */
#ifndef BERTH_TESTENV_H
#define BERTH_TESTENV_H

#include "store.h"

#include <sys/types.h>

typedef struct _testenv_redis_t testenv_redis_t;

/* Start redis-server (BERTH_REDIS_SERVER or redis-server from PATH) on a free 127.0.0.1
   port in a new temporary directory and wait until it answers PING. aof turns on the
   append-only file (appendfsync always) so data survives testenv_redis_restart(); without
   it a restart comes back empty. NULL (with the reason on stderr) if it would not start. */
testenv_redis_t *testenv_redis_start(int aof);

/* Stop the server if it runs and remove its directory. Accepts NULL, safe twice. */
void testenv_redis_destroy(testenv_redis_t **self_p);

/* Stop the server (SIGTERM, SIGKILL after 10 s) and wait for it. 0, or -1 if not running. */
int testenv_redis_stop(testenv_redis_t *self);

/* Start the server again on the same port and directory; waits for PING. 0 or -1. */
int testenv_redis_restart(testenv_redis_t *self);

/* Freeze / thaw the server (SIGSTOP / SIGCONT): it keeps its port but answers nothing. */
int testenv_redis_pause(testenv_redis_t *self);
int testenv_redis_resume(testenv_redis_t *self);

int testenv_redis_port(testenv_redis_t *self);
pid_t testenv_redis_pid(testenv_redis_t *self);

/* A new store_t for this server (1 s connect and command timeouts) that has already
   answered PING, after FLUSHALL when flush is set. Caller destroys it. NULL on failure. */
store_t *testenv_store(testenv_redis_t *self, int flush);

/* The common cmocka fixture: one redis-server for a group of tests, a fresh flushed store
   for each test. Use testenv_group_setup / testenv_group_setup_aof (data survives
   testenv_redis_restart) and testenv_group_teardown as group fixtures, testenv_setup and
   testenv_teardown per test; *state is a testenv_fixture_t. */
typedef struct {
    testenv_redis_t *redis;
    store_t *store;
} testenv_fixture_t;

int testenv_group_setup(void **state);
int testenv_group_setup_aof(void **state);
int testenv_group_teardown(void **state);
int testenv_setup(void **state);
int testenv_teardown(void **state);

/* A new empty temporary directory; caller frees the path and removes it with
   testenv_rmtree(). NULL on failure. */
char *testenv_tmpdir(void);

/* Remove a directory tree (files and subdirectories). 0 or -1. */
int testenv_rmtree(const char *path);

/* Write text to dir/name; the full path (caller frees) or NULL. */
char *testenv_write_file(const char *dir, const char *name, const char *text);

/* Monotonic milliseconds and a short pause for polling loops with a deadline. */
int64_t testenv_now_ms(void);
void testenv_pause_ms(int ms);

#endif
