/*  ledger: closed months and adjustments, what every chargeback report and budget reads.

    A UTC month of the platform clock is closed for a group once month_close_ms have passed
    after it ended: the meter prices it (charge_live) and keeps its lines as they are then
    (berth:charge-closed:{<group>}, field "<YYYY-MM>"), in one transaction that checks the
    month is not closed yet, so of several meters exactly one closes it. From then on a report
    shows those lines for the month's days, never a new price of them.

    A late event (one whose writer's clock was behind, booked after the close) changes what the
    closed month would price to. The meter prices the last closed month again at each tick;
    what differs from its lines and the adjustments booked for it so far (per VM and kind) is
    booked as an adjustment: a line of kind "adjustment" on the day it is booked (so in the
    current month), never a change to the closed month. The booking checks the month's
    version, so a delta is booked once however many meters look. Months before the last closed
    one are final. */
#ifndef BERTH_METER_LEDGER_H
#define BERTH_METER_LEDGER_H

#include "berth.pb-c.h"
#include "error.h"
#include "store.h"

#include <stdint.h>

typedef struct {
    int max_vms;
    int max_lines;
    int64_t close_ms; /* how long after a month ends it is closed */
} ledger_limits_t;

/* The chargeback of group (or of its VM only_vm) over [from_ms, to_ms) as reports show it:
   the days of closed months from their closed lines (a day is in the window when its start
   is), the open days priced now (charge_live), and the adjustments booked in the window as
   lines of kind "adjustment" (amount may be negative). Lines by day, VM, kind; total their
   sum. 0 and *out, or -1 with error (as charge_live). */
int ledger_report(store_t *store, const char *group, const char *only_vm, int64_t from_ms,
                  int64_t to_ms, int64_t now_ms, int max_vms, int max_lines,
                  Berth__ChargebackReport **out, berth_error_t *error);

/* Close the previous month of group, or book its adjustments when it is closed already (see
   above). 0 (also when nothing was due), or -1 with error. */
int ledger_group(store_t *store, const char *group, int64_t now_ms, const ledger_limits_t *limits,
                 berth_error_t *error);

/* ledger_group for every group; the number that failed (each logged). */
int ledger_tick(store_t *store, int64_t now_ms, const ledger_limits_t *limits);

#endif
