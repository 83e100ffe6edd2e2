/*  budget: a group's monthly budget (the meter's). The meter looks at every budgeted group
    on a timer (and at once when a budget is set): the month's charges so far, as the
    chargeback report prices them, against the amount. Each threshold reached raises one
    budget.threshold event per month (whatever the number of meters or looks: the alert is
    written once, with its event, in one transaction), and a budget with a hard stop marks the
    group blocked for the month while its charges are at or over the amount: approval refuses
    new VM requests of a blocked group (BUDGET_EXCEEDED). A new month starts unblocked and
    with no alerts. */
#ifndef BERTH_METER_BUDGET_H
#define BERTH_METER_BUDGET_H

#include "berth.pb-c.h"
#include "error.h"
#include "store.h"

#include <stdint.h>

/* What a look at a group's month may read (the chargeback report's limits). */
typedef struct {
    int max_vms;
    int max_lines;
} budget_limits_t;

/* Set the budget of b->group (amount, thresholds, hard_stop) for actor at now_ms; version
   (when not 0) must be the stored one. Then look at the month at once. 0 and *out (free with
   berth__budget__free_unpacked), or -1 with error: BAD_REQUEST naming the field, NOT_FOUND
   (no such group), CONFLICT (version), UNAVAILABLE. */
int budget_set(store_t *store, const Berth__Budget *b, int64_t version, const char *actor,
               int64_t now_ms, const budget_limits_t *limits, Berth__Budget **out,
               berth_error_t *error);

/* Remove the group's budget and its alerts (the group is no longer
   blocked). 0 (also when none was set), or -1 with error. */
int budget_clear(store_t *store, const char *group, int64_t version, const char *actor,
                 berth_error_t *error);

/* The group's budget with this month's alerts and the rate cards' currency. 0 and *out, or
   -1 with error (NOT_FOUND when none is set). */
int budget_get(store_t *store, const char *group, int64_t now_ms, Berth__Budget **out,
               berth_error_t *error);

/* Look at the month of one group (budget_look) or of every budgeted group (budget_look_all):
   the month's charges, blocked or not, and the thresholds reached (events). 0, or -1 with
   error (a look that failed for one group does not stop the others: budget_look_all
   returns the number that failed). */
int budget_look(store_t *store, const char *group, int64_t now_ms, const budget_limits_t *limits,
                berth_error_t *error);
int budget_look_all(store_t *store, int64_t now_ms, const budget_limits_t *limits);

#endif
