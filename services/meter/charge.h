/*  charge: what VMs cost, in integer minor units, from the meter's usage and the rate cards.
    The arithmetic is exact: a charge is kept as a fraction over CHARGE_DENOM (128-bit) while
    it is summed, split at every rate change and every UTC midnight, and rounded once per VM
    and UTC day, half up. That (VM, day) line is the unit of every report: a total by day,
    month, VM or user is a sum of the same integer lines, so the groupings agree exactly. */
#ifndef BERTH_METER_CHARGE_H
#define BERTH_METER_CHARGE_H

#include "berth.pb-c.h"
#include "error.h"
#include "store.h"

#include <stdint.h>

/* Exact charges, in 1/CHARGE_DENOM minor units. CHARGE_DENOM is the least common multiple of
   what the units need: 1,000 hours (3.6e9 ms) per price, 1,024 MB per GB of RAM, 86,400,000
   ms per template day, and 1,000 per mille for the factors. */
__extension__ typedef __int128 charge_exact_t;
#define CHARGE_DENOM INT64_C(11059200000000000)

#define CHARGE_DAY_MS INT64_C(86400000)

/* The billing states a card has a factor for. Which prices each bills (compute and disk, or
   disk only) is the lifecycle table's billing (lifecycle_billing); this only names them. */
typedef enum {
    CHARGE_RUNNING, /* bills compute (and disk) */
    CHARGE_STOPPED, /* bills disk only, in a state that would bill compute powered on */
    CHARGE_SHELVED, /* bills disk only: SHELVING, SHELVED, UNSHELVING */
    CHARGE_EXPIRED, /* bills disk only: EXPIRED, the tombstone */
    CHARGE_CLASSES
} charge_class_t;

/* The class of a (lifecycle state, power state) pair, or -1 when it bills nothing. */
int charge_class(const char *vm_state, const char *power_state);

/* What a VM is priced at: its recorded flavor and template. */
typedef struct {
    int64_t vcpus;
    int64_t ram_mb;
    int64_t disk_gb;
    const char *template_name; /* borrowed; may be NULL */
} charge_flavor_t;

/* The exact charge of ms milliseconds in class cls under card. */
charge_exact_t charge_exact(const Berth__RateCard *card, charge_class_t cls,
                            const charge_flavor_t *flavor, int64_t ms);

/* The exact charge of [start, end) in class cls, each part under the card in force then (the
   last card whose effective_ms is at or before it; time before the first card is free). */
charge_exact_t charge_span(const Berth__RateCardList *cards, charge_class_t cls,
                           const charge_flavor_t *flavor, int64_t start, int64_t end);

/* exact in minor units, rounded half up (charges are never negative). */
int64_t charge_round(charge_exact_t exact);

/* A report's line on the UTC day of day_ms (free with berth__charge_line__free_unpacked),
   or NULL when out of memory. */
Berth__ChargeLine *charge_line_new(int64_t day_ms, const char *vm, const char *owner,
                                   const char *template_name, const char *kind, int64_t amount,
                                   int64_t compute_ms, int64_t disk_ms);

/* The order of a report's lines (qsort): by day, then VM, then kind. */
int charge_line_order(const void *a, const void *b);

/* The chargeback of a group's VMs over [from_ms, to_ms) (to_ms past now_ms counts until
   now_ms), as priced now from the usage (closed months are not frozen here: ledger_report is
   what reports show): one line per VM and UTC day with a charge or billed time (and for a
   reservation-based group its "reserved" and "beyond" lines, see charge.c), by day then VM,
   and their total. With only_vm (not NULL), that VM's lines alone. At most max_lines lines
   (BAD_REQUEST naming to otherwise). 0 and *out (free with
   berth__chargeback_report__free_unpacked), or -1 with error. */
int charge_live(store_t *store, const char *group, const char *only_vm, int64_t from_ms,
                int64_t to_ms, int64_t now_ms, int max_vms, int max_lines,
                Berth__ChargebackReport **out, berth_error_t *error);

#endif
