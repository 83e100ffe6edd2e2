#!/usr/bin/env python3
"""Exactly-once charging across meter restarts (issue 14, test 3), with every service and two
meter instances sharing the event stream's consumer group:

- a burst of 1,000 lifecycle events (100 VMs, each started, stopped, started, shelved,
  unshelved, stopped and disposed; the same times for both runs) is written for group "calm"
  and metered undisturbed, then written again for group "storm" while one of the two meters,
  picked at random, is killed with SIGKILL at 20 random points and started again under its
  name (so it takes back what it held);
- both groups' chargebacks are then identical, VM by VM and in total: no event was lost or
  counted twice. The meters read slowly (5 events a read) so that the kills land while the
  burst is being metered.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_meter_kill.py
"""

# ctest: heavy

import os
import random
import signal
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import PlatformCase, wait_until  # noqa: E402

CARD = {"currency": "EUR", "vcpu_hour": 360000000000, "ram_gb_hour": 72000000000,
        "disk_gb_hour": 3600000000, "templates": {"small": 86400000},
        "factors": {"running": 1000, "stopped": 400, "shelved": 300, "expired": 200}}
VMS = 100
# Each VM's life: (ms after its start, stream type, state or power). 10 events a VM.
LIFE = [(0, "vm.state", "ACTIVE"), (0, "vm.power", "RUNNING"), (700, "vm.power", "STOPPED"),
        (1100, "vm.power", "RUNNING"), (1500, "vm.state", "SHELVING"),
        (1600, "vm.state", "SHELVED"), (2300, "vm.state", "UNSHELVING"),
        (2400, "vm.state", "ACTIVE"), (2900, "vm.power", "STOPPED"),
        (3400, "vm.state", "DISPOSED")]
KILLS = 20


class MeterKill(PlatformCase):
    agents = 1
    instances = {"meter": 2}
    platform_env = {"BERTH_EVENTS_BATCH": "5", "BERTH_BATCHES_PER_POLL": "1",
                    "BERTH_POLL_MS": "20", "BERTH_CLAIM_IDLE_MS": "1000"}

    def platform_ms(self):
        return int(time.time() * 1000)

    def burst(self, group, base_ms, tag):
        """The 1,000 events of group's 100 VMs (ids tag and index), each VM's life starting
        at the same seeded offset after base_ms for every group; the VM ids."""
        rng = random.Random(1)
        starts = [base_ms + rng.randrange(0, 1500) for _ in range(VMS)]
        vms = ["%08x-0000-4000-8000-%012x" % (tag, i) for i in range(VMS)]
        self.p.redis_command("SADD", "berth:group-vms:{%s}" % group, *vms)
        events = sorted(((starts[i] + at, i, k, kind, value)
                         for i in range(VMS) for k, (at, kind, value) in enumerate(LIFE)))
        for at, i, _, kind, value in events:
            field = "state" if kind == "vm.state" else "power_state"
            self.p.redis_command("XADD", "berth:events", "*", "type", kind, "vm", vms[i], field,
                                 value, "owner", "u%d" % (i % 7), "template", "small", "vcpus",
                                 str(1 + i % 4), "ram_mb", str(512 * (1 + i % 3)), "disk_gb",
                                 str(10 + i % 5), "at_ms", str(at))
        return vms

    def drained(self):
        """Every entry of the stream delivered to the meters' group and acknowledged."""
        for info in self.p.redis_command("XINFO", "GROUPS", "berth:events"):
            g = dict(zip(info[::2], info[1::2]))
            if g["name"] == "meter":
                return g["pending"] == 0 and g.get("lag", 0) == 0
        return False

    def group(self, name):
        r = self.api.call("POST", "/v1/groups", {"name": name})
        self.assertEqual(r.status, 201, r)
        return r.json()["group"]["id"]

    def rows(self, name, start_s, end_s):
        r = self.api.call("GET", "/v1/chargeback?group=%s&from=%d&to=%d&by=vm" %
                          (name, start_s, end_s))
        self.assertEqual(r.status, 200, r)
        body = r.json()
        return body["total"], [(row["amount"], row["compute_ms"], row["disk_ms"])
                               for row in sorted(body["rows"], key=lambda row: row["vm"][-12:])]

    def test_kill_9_during_a_burst_loses_and_doubles_nothing(self):
        r = self.api.call("POST", "/v1/rates", CARD)
        self.assertEqual(r.status, 201, r)
        calm, storm = self.group("calm"), self.group("storm")
        base = self.platform_ms() + 1000  # after the card took effect
        start_s, end_s = base // 1000, (base + 1500 + 3400) // 1000 + 2

        self.burst(calm, base, 0xca1)
        wait_until(self.drained, 60, "the calm burst metered")

        meters = [p for p in self.p.procs if p.service == "meter" and p.alive()]
        self.assertEqual(len(meters), 2)
        # The burst is written by a thread; the kills and restarts come from this one (a
        # process dies with the thread that started it: platform.py's _die_with_parent).
        writer = threading.Thread(target=self.burst, args=(storm, base, 0x5707))
        writer.start()
        rng = random.Random(7)
        kills = []
        for _ in range(KILLS):
            t = time.monotonic() + rng.uniform(0.05, 0.3)
            wait_until(lambda: time.monotonic() > t, 5, "the next kill")
            i = rng.randrange(len(meters))
            drained = self.drained()
            meters[i].kill(signal.SIGKILL)
            meters[i].wait(10)
            kills.append((meters[i].name, drained))
            meters[i] = self.p.restart(meters[i])
        writer.join(60)
        self.assertEqual(len(kills), KILLS)
        self.assertTrue(any(not drained for _, drained in kills),
                        "no kill landed while the burst was being metered")
        wait_until(self.drained, 60, "the storm burst metered after the kills")
        wait_until(lambda: self.platform_ms() // 1000 > end_s, 10, "the window's end")

        calm_total, calm_rows = self.rows("calm", start_s, end_s)
        storm_total, storm_rows = self.rows("storm", start_s, end_s)
        self.assertEqual(len(calm_rows), VMS)
        self.assertGreater(calm_total, 0)
        self.assertEqual(storm_rows, calm_rows)
        self.assertEqual(storm_total, calm_total)
        print("calm %d, storm %d (after %d kills of %s)" % (calm_total, storm_total, len(kills),
                                                          sorted({name for name, _ in kills})))


if __name__ == "__main__":
    unittest.main()
