/*  migrate: the version of the key layout the data in Redis is in (berth:schema), and the
    steps that bring a store written by an older release to the layout this build reads.
    Every service runs migrate_run() at start, before it serves: whichever instance starts
    first migrates, under a lock, and the others wait for it. docs/state.md describes the
    versions. */
#ifndef BERTH_MIGRATE_H
#define BERTH_MIGRATE_H

#include "store.h"

/* The key layout this build reads and writes. Version 1 is the first release's layout (its
   stores have no berth:schema key); a change to lib/keys.h that moves data adds a step.
   Version 2: every group that reserves capacity has a reservation log.
   Version 3: every host counts the claims on it (berth:host:<id> claims). */
#define MIGRATE_VERSION 3

#define MIGRATE_NEWER 1 /* migrate_run: the data is newer than this build can read */

/* One step: turns a store at version from into one at from + 1. It may be interrupted (the
   instance dies) and run again from the start, so it must be idempotent. 0 or -1. */
typedef struct {
    int from;
    const char *what; /* for the log: what the step changes */
    int (*run)(store_t *store);
} migrate_step_t;

/* Bring the store to MIGRATE_VERSION, waiting up to wait_ms for Redis to answer and for
   another instance's migration to finish. owner names this instance on the lock. 0 when
   the store is current, MIGRATE_NEWER, or -1 (logged) when Redis stayed away, a step failed
   or the wait ran out. */
int migrate_run(store_t *store, const char *owner, int wait_ms);

/* The same with another table of steps and target version (the tests' own steps). steps
   ends with a NULL run. */
int migrate_run_steps(store_t *store, const char *owner, const migrate_step_t *steps, int target,
                      int wait_ms);

/* A step of one service's own data, which only it can transform (the gateway's user records
   carry a MAC under a key only the gateway holds): the same contract as migrate_step_t, with
   the service's argument. */
typedef struct {
    int from;
    const char *what;
    int (*run)(store_t *store, void *arg);
} migrate_own_step_t;

/* The same as migrate_run_steps for one service's data: its version in version_key (0 when
   absent: data written before it had versions), its lock lock_key. */
int migrate_run_own(store_t *store, const char *owner, const char *version_key,
                    const char *lock_key, const migrate_own_step_t *steps, int target, void *arg,
                    int wait_ms);

/* The version the store is at: berth:schema, 1 when absent; -1 if Redis failed. */
int migrate_version(store_t *store);

#endif
