#!/usr/bin/env python3
"""A month of chargeback on a scaled clock (issue 14, test 1), with every service and one
simulated host. The platform clock runs 30 days in about 12 s:

- an allocation-based group's VMs go through every billing state: one runs all along, one is
  stopped and started again, one is shelved and unshelved, one's lease ends (EXPIRING, then
  EXPIRED: the tombstone) until it is disposed of;
- a reservation-based group reserves capacity, changes its reservation halfway, and its VMs
  use more than it reserved (one of them stopped for a while);
- a second rate card takes effect in the middle of the month;
- each group's chargeback total equals what this test computes on its own from the event log
  (tests/integration/billing.py: each VM's state and power events priced by the cards, each
  VM's day rounded once for the allocation-based group; each day's reserved and beyond lines
  rounded once for the reservation-based one), and so do its rows by day.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_chargeback_month.py
"""

import calendar
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import billing  # noqa: E402
from berth_test import PlatformCase, wait_until  # noqa: E402

DAY_MS = 86400000
SCALE = 216000  # platform ms per real ms: 30 days in 12 s
ORIGIN_MS = int(time.time() * 1000)
FLAVOR = (1, 512, 10)  # vcpus, ram_mb, disk_gb of both templates
CARD1 = {"currency": "EUR", "vcpu_hour": 20000, "ram_gb_hour": 5000, "disk_gb_hour": 300,
         "templates": {"tiny": 1000, "short": 3000},
         "factors": {"running": 1000, "stopped": 400, "shelved": 250, "expired": 100}}
CARD2 = dict(CARD1, vcpu_hour=30000, disk_gb_hour=200, templates={"tiny": 1500, "short": 500},
             factors={"running": 1000, "stopped": 500, "shelved": 200, "expired": 150})


class Month(PlatformCase):
    agents = 1
    wait_hosts = 1
    platform_env = {"BERTH_CLOCK_SCALE": str(SCALE), "BERTH_CLOCK_ORIGIN_MS": str(ORIGIN_MS),
                    "BERTH_TIMER_CHECK_MS": "50", "BERTH_LEASE_NOTICE_MS": str(DAY_MS),
                    "BERTH_LEASE_TOMBSTONE_MS": str(3 * DAY_MS)}

    def now(self):
        """The platform clock (lib/clock.c: origin + real time since it, scaled)."""
        return ORIGIN_MS + int((time.time() * 1000 - ORIGIN_MS) * SCALE)

    def until_day(self, start, day):
        wait_until(lambda: self.now() >= start + day * DAY_MS, 30, "platform day %d" % day)

    def act(self, vm, action):
        r = self.api.call("POST", "/v1/vms/%s/actions" % vm, {"action": action, "force": True}
                          if action in ("stop", "shelve") else {"action": action})
        self.assertEqual(r.status, 202, r)
        self.assertEqual(self.api.wait_task(r.json()["task"]["id"])["state"], "SUCCEEDED")

    def request(self, template, name, group):
        r = self.api.call("POST", "/v1/requests", {"template": template, "name": name,
                                                   "group": group})
        self.assertEqual(r.status, 202, r)
        vm = r.json()["request"]["vms"][0]["id"]
        self.api.wait_vm(vm, ("ACTIVE",))
        return vm

    def reserve(self, vcpus, ram_mb, disk_gb):
        items = [{"vcpus": vcpus, "ram_mb": ram_mb, "disk_gb": disk_gb}] if vcpus else []
        r = self.api.call("PUT", "/v1/groups/resv/reservations", {"reservations": items})
        self.assertEqual(r.status, 200, r)

    def report(self, group, lo, hi, by="day"):
        r = self.api.call("GET", "/v1/chargeback?group=%s&from=%d&to=%d&by=%s" %
                          (group, lo // 1000, hi // 1000, by))
        self.assertEqual(r.status, 200, r)
        return r.json()

    def test_a_month(self):
        admin = self.api
        start = self.now()
        for card in (CARD1, dict(CARD2, effective=str((start + 12 * DAY_MS) // 1000))):
            r = admin.call("POST", "/v1/rates", card)
            self.assertEqual(r.status, 201, r)
        admin.create_template(name="tiny", vcpus=1, ram_mb=512, disk_gb=10, os="debian",
                              image="debian-12", lease_days=60, requires_approval=False)
        admin.create_template(name="short", vcpus=1, ram_mb=512, disk_gb=10, os="debian",
                              image="debian-12", lease_days=4, requires_approval=False)
        for name, model in (("alloc", "allocation"), ("resv", "reservation")):
            r = admin.call("POST", "/v1/groups", {"name": name, "charging_model": model})
            self.assertEqual(r.status, 201, r)
        groups = {g["name"]: g["id"] for g in admin.get("/v1/groups")["groups"]}
        self.reserve(2, 1024, 20)
        a = self.request("tiny", "runs", "alloc")
        b = self.request("tiny", "stops", "alloc")
        c = self.request("tiny", "shelves", "alloc")
        d = self.request("short", "expires", "alloc")
        r1 = self.request("tiny", "r1", "resv")
        r2 = self.request("tiny", "r2", "resv")
        r3 = self.request("tiny", "r3", "resv")
        self.until_day(start, 2)
        self.act(b, "stop")
        self.act(r2, "stop")
        self.until_day(start, 3)
        self.act(c, "shelve")
        self.until_day(start, 6)
        self.act(b, "start")
        self.act(r2, "start")
        self.until_day(start, 8)
        self.act(c, "unshelve")
        wait_until(lambda: admin.vm(d)["state"] == "DISPOSED", 30,
                   "the short lease through its tombstone to disposal")
        self.until_day(start, 10)
        self.reserve(1, 512, 40)
        self.until_day(start, 20)
        for vm in (a, b, c, r1, r2, r3):
            admin.dispose(vm)
        for vm in (a, b, c, r1, r2, r3):
            admin.wait_vm(vm, ("DISPOSED",))
        end = self.now() + DAY_MS
        lo, hi = start - start % 1000, end - end % 1000
        wait_until(lambda: self.now() >= hi, 30, "the window's end")

        cards = admin.get("/v1/rates")["rates"]
        states = set()
        lines = {}
        for vm, template in ((a, "tiny"), (b, "tiny"), (c, "tiny"), (d, "short")):
            billed = billing.spans(billing.vm_events(self.p, vm), hi)
            states |= {cls for _, _, cls in billed}
            lines[vm] = billing.by_day(cards, billed, lo, hi, FLAVOR, template)
        self.assertEqual(states, {"running", "stopped", "shelved", "expired"})
        want = {}
        for days in lines.values():
            for day, exact in days.items():
                want[day] = want.get(day, 0) + billing.rounded(exact)
        self.assertGreater(len(want), 15)
        got = wait_until(lambda: (lambda body: body if body["total"] == sum(want.values())
                                  else None)(self.report("alloc", lo, hi)), 20,
                         "the allocation-based total equals the event log priced by the cards")
        self.assertEqual({calendar.timegm(time.strptime(row["day"], "%Y-%m-%d")) * 1000 // DAY_MS:
                          row["amount"] for row in got["rows"] if row["amount"]},
                         {day: v for day, v in want.items() if v})

        reserved = []
        for entry_id, flat in self.p.redis_command("XRANGE", "berth:events", "-", "+"):
            f = dict(zip(flat[0::2], flat[1::2]))
            if f.get("type") == "group.updated" and f.get("group") == groups["resv"] and \
                    f.get("change") == "reservations":
                reserved.append((int(f["at_ms"]), (int(f["vcpus"]), int(f["ram_mb"]),
                                                   int(f["disk_gb"]))))
        vms = [(billing.spans(billing.vm_events(self.p, vm), hi), FLAVOR) for vm in (r1, r2, r3)]
        held, over = billing.reservation_by_day(cards, vms, reserved, lo, hi)
        want_resv = sum(billing.rounded(x) for x in held.values()) + \
            sum(billing.rounded(x) for x in over.values())
        self.assertGreater(sum(over.values()), 0)
        got = wait_until(lambda: (lambda body: body if body["total"] == want_resv else None)(
            self.report("resv", lo, hi, "vm")), 20,
            "the reservation-based total equals the event log priced by the cards")
        kinds = {row["kind"]: row["amount"] for row in got["rows"] if row["kind"]}
        self.assertEqual(kinds, {"reserved": sum(billing.rounded(x) for x in held.values()),
                                 "beyond": sum(billing.rounded(x) for x in over.values())})
        print("allocation %d, reservation %d (reserved %d, beyond %d) over %d days" %
              (sum(want.values()), want_resv, kinds["reserved"], kinds["beyond"],
               (hi - lo) // DAY_MS))


if __name__ == "__main__":
    unittest.main()
