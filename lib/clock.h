/*  clock: the one platform clock. Platform time is real time seen through an offset and a
    scale (settings clock_offset_ms, clock_scale, clock_origin_ms, the same on every service),
    so a test can run a whole lease in seconds. It stamps every at_ms, created_ms and lease end
    and drives every lease timer; internal timeouts (bus deadlines, heartbeats, task holder
    leases) stay on real clocks (util_now_ms, util_mono_ms). */
#ifndef BERTH_CLOCK_H
#define BERTH_CLOCK_H

#include "config.h"

#include <stdint.h>

/* Platform time in milliseconds: origin + (real now - origin) * scale + offset. */
int64_t clock_now_ms(void);

/* The same for a given real time (Unix ms); what clock_now_ms() applies to the real now. */
int64_t clock_at(int64_t real_ms);

/* Real milliseconds until platform time has moved by platform_ms (rounded up; 0 for <= 0):
   how long a loop waits for a timer due platform_ms from now. */
int64_t clock_real_delay(int64_t platform_ms);

/* Set the clock: scale > 0 and at most 1000000; origin_ms is the real time from which the
   scale counts (any value when scale is 1). -1 when out of range (the clock is unchanged). */
int clock_set(int64_t offset_ms, double scale, int64_t origin_ms);

/* The scale in use (1 unless set). */
double clock_scale(void);

/* The UTC month of platform time ms: its first instant (ms), and its name "YYYY-MM" into
   month (when not NULL). Budgets and chargeback count in these months. */
int64_t clock_month(int64_t ms, char month[8]);

/* Declare clock_offset_ms (0), clock_scale (1) and clock_origin_ms (unset) on config. */
void clock_declare(config_t *config);

/* Set the clock from the declared settings. -1 (logged, naming the setting) when one is
   not a number in range, or a scale other than 1 comes without clock_origin_ms (every
   service must scale from the same instant or their clocks disagree). */
int clock_configure(config_t *config);

#endif
