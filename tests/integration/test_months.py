#!/usr/bin/env python3
"""Closed months (issue 14, test 4: "closed months never change"), with every service and one
simulated host on a platform clock set 20 s before a UTC month ends:

- a group's VM runs across the month's end; an hour's grace being too long for a test, the
  meter closes a month 3 s after it ends (month_close_ms) and looks every 200 ms;
- the closed month's chargeback equals what this test prices on its own from the event stream;
- a late event (a writer whose clock was behind: a power-off stamped inside the closed month,
  appended after the close) changes what that month would cost: it is booked once, as one
  adjustment row of the VM in the new month equal to the difference this test computes, and
  the closed month's report stays exactly what it was.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_months.py
"""

import calendar
import os
import sys
import time
import unittest
from fractions import Fraction

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import PlatformCase, wait_until  # noqa: E402

CARD = {"currency": "EUR", "vcpu_hour": 360000000000, "ram_gb_hour": 72000000000,
        "disk_gb_hour": 3600000000, "templates": {"tiny": 86400000},
        "factors": {"running": 1000, "stopped": 400, "shelved": 400, "expired": 400}}
TINY = {"vcpus": 1, "ram_mb": 512, "disk_gb": 10}
# docs/state.md, "Billed by the meter", for the states this test goes through.
BILLING = {("ACTIVE", ""): "running", ("ACTIVE", "STOPPED"): "stopped"}

# The month's end the platform clock is set just before: the start of the real month.
NOW = time.time()
_t = time.gmtime(NOW)
END_S = calendar.timegm((_t.tm_year, _t.tm_mon, 1, 0, 0, 0))
START_PLATFORM_MS = (END_S - 20) * 1000


def price(card, cls, ms):
    """Exact charge of ms milliseconds of a tiny VM in billing class cls."""
    hour = Fraction(3600 * 1000 * 1000)  # prices are per 1,000 hours, in ms
    disk = Fraction(card["disk_gb_hour"] * TINY["disk_gb"]) / hour + \
        Fraction(card["templates"]["tiny"], 86400 * 1000)
    compute = Fraction(card["vcpu_hour"] * TINY["vcpus"]) / hour + \
        Fraction(card["ram_gb_hour"] * TINY["ram_mb"], 1024) / hour
    per_ms = (compute + disk) if cls == "running" else disk
    return per_ms * ms * Fraction(card["factors"][cls], 1000)


class Months(PlatformCase):
    agents = 1
    wait_hosts = 1
    platform_env = {"BERTH_CLOCK_OFFSET_MS": str(START_PLATFORM_MS - int(NOW * 1000)),
                    "BERTH_MONTH_CLOSE_MS": "3000", "BERTH_LEDGER_CHECK_MS": "200"}

    def vm_events(self, vm):
        """The VM's state and power events in stream order: [(at_ms, what, value)]."""
        out = []
        for entry_id, fields in self.p.redis_command("XRANGE", "berth:events", "-", "+"):
            f = dict(zip(fields[::2], fields[1::2]))
            if f.get("vm") != vm or f.get("type") not in ("vm.state", "vm.power"):
                continue
            at = int(f.get("at_ms") or entry_id.split("-")[0])
            if f["type"] == "vm.state":
                out.append((at, "state", f["state"]))
            else:
                out.append((at, "power", f.get("power_state") or f.get("state")))
        return out

    def month_charge(self, events, lo, hi):
        """The VM's charge over [lo, hi) ms (one UTC day here), as the meter walks events: in
        stream order, a span never starting before the previous one ended; rounded once."""
        state, power, cursor, open_at, cls = "", "", 0, None, None
        spans = []
        for at, what, value in events:
            t = max(at, cursor)
            if open_at is not None:
                spans.append((open_at, t, cls))
            if what == "state":
                state = value
            elif value != "UNKNOWN":
                power = value
            cls = BILLING.get((state, power), BILLING.get((state, "")))
            open_at = cursor = t
        spans.append((open_at, hi, cls))
        exact = sum(price(CARD, c, min(b, hi) - max(a, lo)) for a, b, c in spans
                    if c and min(b, hi) > max(a, lo))
        return (exact + Fraction(1, 2)).__floor__()

    def report(self, frm, to, by="vm"):
        r = self.api.call("GET", "/v1/chargeback?group=books&from=%d&to=%d&by=%s" % (frm, to, by))
        self.assertEqual(r.status, 200, r)
        return r.json()

    def test_closed_month_and_a_late_event(self):
        r = self.api.call("POST", "/v1/rates", CARD)
        self.assertEqual(r.status, 201, r)
        self.api.create_template(name="tiny", vcpus=1, ram_mb=512, disk_gb=10, os="debian",
                                 image="debian-12", lease_days=1, requires_approval=False)
        r = self.api.call("POST", "/v1/groups", {"name": "books"})
        self.assertEqual(r.status, 201, r)
        group = r.json()["group"]["id"]
        r = self.api.call("POST", "/v1/requests", {"template": "tiny", "name": "across",
                                                   "group": "books"})
        self.assertEqual(r.status, 202, r)
        vm = r.json()["request"]["vms"][0]["id"]
        self.api.wait_vm(vm, ("ACTIVE",))
        end_ms = END_S * 1000
        last = max(at for at, _, _ in self.vm_events(vm))
        if last + 3000 >= end_ms:
            self.skipTest("the VM came up too close to the month's end")
        month_start = END_S - 86400  # the closed day: the platform started on the month's last
        # Closed a few seconds after the month ended (platform clock = real + offset).
        wait_until(lambda: self.p.redis_command(
            "HEXISTS", "berth:charge-closed:{%s}" % group,
            time.strftime("%Y-%m", time.gmtime(END_S - 1))) == 1, 40, "the month closed")
        closed = self.report(month_start, END_S)
        want = self.month_charge(self.vm_events(vm), month_start * 1000, end_ms)
        self.assertGreater(want, 0)
        self.assertEqual(closed["total"], want, closed)

        # A late power-off, stamped 2 s after the VM's last event, inside the closed month.
        late = last + 2000
        self.p.redis_command("XADD", "berth:events", "*", "type", "vm.power", "vm", vm,
                             "power_state", "STOPPED", "at_ms", str(late))
        now_ms = int(time.time() * 1000) + START_PLATFORM_MS - int(NOW * 1000)
        after = self.month_charge(self.vm_events(vm), month_start * 1000, end_ms)
        self.assertLess(after, want)  # less running time in the closed month

        def adjustments():
            rows = self.report(END_S, now_ms // 1000 + 86400)["rows"]
            return [row for row in rows if row.get("kind") == "adjustment"]
        rows = wait_until(adjustments, 30, "the late charge booked as an adjustment")
        self.assertEqual([(row["vm"], row["amount"]) for row in rows], [(vm, after - want)])
        # The closed month is as it was; later looks book nothing more.
        self.assertEqual(self.report(month_start, END_S), closed)
        checks = int(self.p.redis_command("HGET", "berth:charge-closed:{%s}" % group,
                                          time.strftime("%Y-%m", time.gmtime(END_S - 1)) +
                                          ":version"))
        t = time.time()
        wait_until(lambda: time.time() > t + 1, 5, "five more looks (ledger_check_ms 200)")
        self.assertEqual(int(self.p.redis_command(
            "HGET", "berth:charge-closed:{%s}" % group,
            time.strftime("%Y-%m", time.gmtime(END_S - 1)) + ":version")), checks)
        self.assertEqual(len(adjustments()), 1)
        csv_text = self.api.call("GET", "/v1/chargeback?group=books&from=%d&to=%d&by=vm" %
                                 (END_S, now_ms // 1000 + 86400),
                                 headers={"Accept": "text/csv"}).body.decode()
        self.assertIn(",adjustment,", csv_text)
        self.api.dispose(vm)


if __name__ == "__main__":
    unittest.main()
