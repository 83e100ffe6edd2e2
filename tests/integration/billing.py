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
