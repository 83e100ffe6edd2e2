"""What the meter should bill a VM, worked out from the transitions the platform recorded:
the VM's vm.state and vm.power events on berth:events (each with its at_ms), walked in order
with the rules a user reads in docs/state.md ("Billed by the meter"):

- compute (vCPU and RAM hours) while ACTIVE or EXPIRING and running (or suspended, or not
  reported yet); a STOPPED or CRASHED VM pays for its disk only;
- disk (GB hours) in those states and while SHELVING, SHELVED, UNSHELVING or EXPIRED;
- an UNKNOWN power (its host DOWN) is no news: the last known power still bills.

Written apart from the meter on purpose: a test compares the two.
"""

COMPUTE_STATES = ("ACTIVE", "EXPIRING")
DISK_STATES = COMPUTE_STATES + ("SHELVING", "SHELVED", "UNSHELVING", "EXPIRED")
OFF = ("STOPPED", "CRASHED")


def vm_events(p, vm_id):
    """Every event of the VM on berth:events, in order, as dicts (needs a consumer group of
    the test's own so nothing is trimmed, or a short test)."""
    out = []
    for _, flat in p.redis_command("XRANGE", "berth:events", "-", "+"):
        f = dict(zip(flat[0::2], flat[1::2]))
        if f.get("vm") == vm_id:
            out.append(f)
    return out


def billed_ms(events, until_ms):
    """(compute_ms, disk_ms) of the VM's events up to until_ms (an open interval runs to it)."""
    state, power = None, None
    compute = disk = 0
    since = None
    bills = (False, False)
    for e in events:
        if e["type"] == "vm.state":
            state = e["state"]
        elif e["type"] == "vm.power":
            if e["power_state"] != "UNKNOWN":
                power = e["power_state"]
        else:
            continue
        at = int(e["at_ms"])
        now = (state in COMPUTE_STATES and power not in OFF, state in DISK_STATES)
        if since is not None:
            compute += (at - since) if bills[0] else 0
            disk += (at - since) if bills[1] else 0
        since, bills = at, now
    if since is not None and until_ms > since:
        compute += (until_ms - since) if bills[0] else 0
        disk += (until_ms - since) if bills[1] else 0
    return compute, disk


def transitions(events):
    """[(kind, state, at_ms)] of the VM's state and power changes, for messages."""
    return [(e["type"], e.get("state") or e.get("power_state"), int(e["at_ms"]))
            for e in events if e["type"] in ("vm.state", "vm.power")]


# ---- prices (what the meter should charge: docs/openapi.yaml, RateCard and Chargeback) ------

SHELVED_STATES = ("SHELVING", "SHELVED", "UNSHELVING")
DAY_MS = 86400000


def billing_class(state, power):
    """The card factor a (state, power) pair bills at: running (compute and disk), stopped,
    shelved or expired (disk only), or None (nothing)."""
    if state in COMPUTE_STATES:
        return "stopped" if power in OFF else "running"
    if state in SHELVED_STATES:
        return "shelved"
    if state == "EXPIRED":
        return "expired"
    return None


def spans(events, until_ms):
    """[(start, end, class)] of the VM's billed time, walking its events in stream order as
    the meter does: a span never starts before the previous one ended (a writer's clock may
    be behind another's); the last one runs to until_ms."""
    state, power, cursor, open_at, cls = None, None, 0, None, None
    out = []
    for e in events:
        if e["type"] == "vm.state":
            state = e["state"]
        elif e["type"] == "vm.power":
            if e["power_state"] != "UNKNOWN":
                power = e["power_state"]
        else:
            continue
        t = max(int(e["at_ms"]), cursor)
        if open_at is not None and cls:
            out.append((open_at, t, cls))
        open_at, cursor, cls = t, t, billing_class(state, power)
    if open_at is not None and cls and until_ms > open_at:
        out.append((open_at, until_ms, cls))
    return out


def _per_ms(card, cls, vcpus, ram_mb, disk_gb, template):
    from fractions import Fraction
    hour = Fraction(3600 * 1000 * 1000)  # prices are per 1,000 hours, in ms
    per_ms = Fraction(card["disk_gb_hour"] * disk_gb) / hour
    if template:
        per_ms += Fraction(card["templates"].get(template, 0), DAY_MS)
    if cls == "running":
        per_ms += (Fraction(card["vcpu_hour"] * vcpus) +
                   Fraction(card["ram_gb_hour"] * ram_mb, 1024)) / hour
    return per_ms * Fraction(card["factors"][cls], 1000)


def price(cards, cls, start, end, vcpus, ram_mb, disk_gb, template=None):
    """The exact charge (a Fraction) of [start, end) in class cls, each part under the card in
    force (the last whose effective_ms is at or before it; nothing before the first)."""
    from fractions import Fraction
    cards = sorted(cards, key=lambda c: c["effective_ms"])
    total = Fraction(0)
    for i, card in enumerate(cards):
        a = max(start, card["effective_ms"])
        b = min(end, cards[i + 1]["effective_ms"]) if i + 1 < len(cards) else end
        if a < b:
            total += _per_ms(card, cls, vcpus, ram_mb, disk_gb, template) * (b - a)
    return total


def by_day(cards, billed, lo, hi, flavor, template):
    """{UTC day index: exact charge} of billed spans inside [lo, hi), split at midnights."""
    days = {}
    for a, b, cls in billed:
        a, b = max(a, lo), min(b, hi)
        while a < b:
            stop = min(b, (a // DAY_MS + 1) * DAY_MS)
            days[a // DAY_MS] = days.get(a // DAY_MS, 0) + price(cards, cls, a, stop, *flavor,
                                                                 template)
            a = stop
    return days


def rounded(exact):
    """Minor units, rounded half up (charges are never negative)."""
    from fractions import Fraction
    return (exact + Fraction(1, 2)).__floor__()


def reservation_by_day(cards, vms, reserved, lo, hi):
    """A reservation-based group's ({day: exact} reserved, {day: exact} beyond) in [lo, hi):
    vms is [(spans, (vcpus, ram_mb, disk_gb))], reserved [(at_ms, (vcpus, ram_mb, disk_gb))]
    the group's reservations in all from each time (its group.updated events). What it
    reserved is priced as running; beyond, per resource, what its VMs use above it (vCPUs and
    RAM of running VMs, the disks of every billed VM), priced as running; no template prices."""
    cut = {lo, hi} | {at for at, _ in reserved} | {c["effective_ms"] for c in cards}
    for billed, _ in vms:
        for a, b, _ in billed:
            cut |= {a, b}
    cut |= {d * DAY_MS for d in range(lo // DAY_MS + 1, hi // DAY_MS + 1)}
    points = sorted(t for t in cut if lo <= t <= hi)
    held, over = {}, {}
    for a, b in zip(points, points[1:]):
        r = (0, 0, 0)
        for at, value in sorted(reserved):
            if at <= a:
                r = value
        use = [0, 0, 0]
        for billed, (vcpus, ram_mb, disk_gb) in vms:
            for s, e, cls in billed:
                if s <= a < e:
                    use[0] += vcpus if cls == "running" else 0
                    use[1] += ram_mb if cls == "running" else 0
                    use[2] += disk_gb
        beyond = [max(0, use[i] - r[i]) for i in range(3)]
        day = a // DAY_MS
        held[day] = held.get(day, 0) + price(cards, "running", a, b, *r)
        over[day] = over.get(day, 0) + price(cards, "running", a, b, *beyond)
    return held, over
