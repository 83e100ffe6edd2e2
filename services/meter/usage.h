/*  usage: the meter's bookkeeping. Reads VM lifecycle events from the event stream through
    a consumer group, turns them into usage intervals per VM (berth:usage:{<vm>}), and answers
    usage reports for a time window. Apply and acknowledge are one atomic step, so a meter
    that dies, restarts or sees an event twice neither loses nor double-counts an hour. */
#ifndef BERTH_METER_USAGE_H
#define BERTH_METER_USAGE_H

#include "berth.pb-c.h"
#include "error.h"
#include "store.h"

#include "keys.h"

#include <stdint.h>

#define USAGE_INDEX KEYS_USAGE_INDEX /* zset: VMs with usage, score = end of latest interval */
#define USAGE_GROUP "meter"          /* the consumer group every meter instance shares */

#define USAGE_BAD_WINDOW 1 /* usage_report: from/to are not a valid window */
#define USAGE_TOO_MANY   2 /* usage_report: more VMs match than the configured maximum */

typedef struct _usage_t usage_t;

typedef struct {
    int batch;             /* entries read per XREADGROUP / XAUTOCLAIM (COUNT) */
    int batches_per_poll;  /* full batches one poll may work through before yielding */
    int64_t claim_idle_ms; /* pending entries idle this long belong to a dead consumer */
    int max_events_per_vm; /* lifecycle events kept per VM; more are refused (logged) */
} usage_limits_t;

/* A reader of the event stream as consumer `consumer` of group `group`. store is borrowed. */
usage_t *usage_new(store_t *store, const char *group, const char *consumer,
                   const usage_limits_t *limits);
void usage_destroy(usage_t **self_p);

/* Make sure the group exists (XGROUP CREATE ... MKSTREAM; an existing group is fine).
   0, or -1 when Redis failed (usage_poll calls it again until it succeeds). */
int usage_setup(usage_t *self);

/* One round of work, never blocking: this consumer's own unacknowledged entries (once,
   after a restart under the same name), entries idle too long in dead consumers' pending
   lists (XAUTOCLAIM), then new entries. Every entry read is applied and acknowledged.
   The number of entries handled, or -1 when Redis failed. */
int usage_poll(usage_t *self);

/* Entries handled and refused (malformed vm.state events) since usage_new. */
uint64_t usage_handled(usage_t *self);
uint64_t usage_refused(usage_t *self);

/* Usage of every VM with ACTIVE time in [from_ms, to_ms) (to_ms 0 = now_ms; open intervals
   count up to min(now_ms, to)), for one owner or everyone (owner NULL or ""), at most
   max_vms records, sorted by VM id. 0 and *report_p (free with usage_report_free),
   USAGE_BAD_WINDOW (error: BAD_REQUEST naming the field, from_ms, to_ms or owner),
   USAGE_TOO_MANY (error: BAD_REQUEST with details.max_vms), or -1 (error: UNAVAILABLE when
   Redis failed). error may be NULL. */
int usage_report(store_t *store, int64_t from_ms, int64_t to_ms, const char *owner, int64_t now_ms,
                 int max_vms, Berth__UsageReport **report_p, berth_error_t *error);
/* The same for the VMs of one group (its id; NULL or "": every VM; BAD_REQUEST naming group
   when it is not an id): the VMs approval listed in berth:group-vms:{<group>}. */
int usage_report_group(store_t *store, int64_t from_ms, int64_t to_ms, const char *group,
                       const char *owner, int64_t now_ms, int max_vms,
                       Berth__UsageReport **report_p, berth_error_t *error);
void usage_report_free(Berth__UsageReport **report_p);

#endif
