#!/usr/bin/env python3
# ctest: heavy
"""Exactly-once lease timers (issue 10, test 2): three taskmgr instances, 100 leases that all
come due in the same moment, and one taskmgr killed with SIGKILL in the middle of firing
them. Every lease expires exactly once: one EXPIRED transition and one vm.lease.expired event
per VM, at most one notice, and a STOP task each; the killed instance's claims fire
again on the others once they run out.

The burst: the platform clock runs 4320 times faster than real time (a day in 20 s); once the
100 VMs are ACTIVE every taskmgr is stopped (SIGSTOP) until the platform clock has passed
every lease's end, then all are continued at once: every timer is due together, as after a
downtime, and they catch up.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_timers.py
"""

import collections
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import Api, Platform, wait_until  # noqa: E402

SCALE = 4320
DAY_MS = 86400000
N = 100


class Timers(unittest.TestCase):
    def setUp(self):
        self.origin = int(time.time() * 1000)
        self.p = Platform(env={
            "BERTH_CLOCK_SCALE": str(SCALE),
            "BERTH_CLOCK_ORIGIN_MS": str(self.origin),
            "BERTH_LEASE_NOTICE_MS": str(3600000),        # an hour before the end
            "BERTH_LEASE_TOMBSTONE_MS": str(30 * DAY_MS),  # no disposal within the test
            "BERTH_TIMER_BATCH": "10",                     # claims in small bites
            "BERTH_TIMER_CLAIM_MS": "2000",                # a dead claimer's timers: 2 s
            "BERTH_TIMER_CHECK_MS": "200",
        })
        try:
            big = {"BERTH_HOST_VCPUS": "64", "BERTH_HOST_RAM_MB": "65536",
                   "BERTH_HOST_DISK_GB": "1000"}
            self.p.start_all(agents=3, instances={"taskmgr": 3}, agent_env=big)
            self.api = Api(self.p)
            self.p.redis_command("XGROUP", "CREATE", "berth:events", "timers-test", "0",
                                 "MKSTREAM")
            self.api.create_template(name="tiny", vcpus=1, ram_mb=256, disk_gb=1, os="debian",
                                     image="debian-12", lease_days=1)
        except Exception:
            self.p.dump_logs()
            self.p.stop()
            raise

    def tearDown(self):
        if os.environ.get("BERTH_DUMP_LOGS"):
            self.p.dump_logs()
        self.p.stop()

    def platform_now(self):
        return self.origin + (int(time.time() * 1000) - self.origin) * SCALE

    def events(self):
        out = []
        for _, flat in self.p.redis_command("XRANGE", "berth:events", "-", "+"):
            out.append(dict(zip(flat[0::2], flat[1::2])))
        return out

    def test_every_lease_fires_once(self):
        vms = []
        for i in range(N // 50):
            vms += [v["id"] for v in self.api.request("tiny", "burst%d" % i, count=50)["vms"]]
        self.assertEqual(len(vms), N)
        taskmgrs = [p for p in self.p.procs if p.service == "taskmgr"]
        self.assertEqual(len(taskmgrs), 3)

        def all_active():
            return all(self.api.vm(v)["state"] == "ACTIVE" for v in vms)
        wait_until(all_active, 40, "the %d VMs ACTIVE" % N)
        for t in taskmgrs:
            t.popen.send_signal(signal.SIGSTOP)
        try:
            ends = [int(self.p.redis_command("HGET", "berth:vm:{%s}" % v, "lease")
                        .split(":")[1].rstrip("}")) for v in vms]
            # Every lease has ended on the platform clock before the engines run again.
            wait_until(lambda: self.platform_now() > max(ends) + 2 * SCALE, 40,
                       "the platform clock past every lease's end")
            self.assertEqual(self.p.redis_command("ZCOUNT", "berth:timers", "-inf",
                                                  str(max(ends))), 2 * N)
        except Exception:
            for t in taskmgrs:
                t.popen.send_signal(signal.SIGCONT)
            raise

        def expired():
            return sum(1 for e in self.events() if e.get("type") == "vm.lease.expired")
        # taskmgr-2 goes first and is killed the moment it holds claims (a batch of 10, fired
        # one by one in about a millisecond each); then the other two catch up with the rest
        # and, once its claims run out, with what it had claimed and not fired.
        victim = taskmgrs[1]
        victim.popen.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 10
        while self.p.redis_command("ZCARD", "berth:timers:claimed") == 0 \
                and time.monotonic() < deadline:
            pass
        victim.kill(signal.SIGKILL)
        victim.wait(10)
        claimed_at_kill = self.p.redis_command("ZCARD", "berth:timers:claimed")
        fired_at_kill = expired()
        # What it claimed and did not fire is left to run out and fire elsewhere.
        self.assertGreater(claimed_at_kill, 0, "taskmgr-2 was killed holding no claim")
        for t in taskmgrs:
            if t is not victim:
                t.popen.send_signal(signal.SIGCONT)
        wait_until(lambda: expired() >= N, 30, "every lease expired")

        evs = self.events()
        per_vm = collections.Counter(e["vm"] for e in evs if e.get("type") == "vm.lease.expired")
        self.assertEqual(set(per_vm), set(vms))
        self.assertEqual(set(per_vm.values()), {1}, per_vm)
        to_expired = collections.Counter(e["vm"] for e in evs if e.get("type") == "vm.state"
                                         and e.get("state") == "EXPIRED")
        self.assertEqual(set(to_expired.values()), {1})
        self.assertEqual(len(to_expired), N)
        notices = collections.Counter(e["vm"] for e in evs if e.get("type") == "vm.lease.notice")
        self.assertLessEqual(set(notices.values()), {1})
        # Nothing left claimed or due but the tombstones.
        wait_until(lambda: self.p.redis_command("ZCARD", "berth:timers:claimed") == 0, 10,
                   "no claim left")
        left = self.p.redis_command("ZRANGE", "berth:timers", "0", "-1")
        self.assertEqual(len(left), N)
        self.assertTrue(all(m.startswith("tombstone:") for m in left), left[:5])
        # Each expired VM is powered off by its own STOP task.
        def powered_off():
            return all(self.api.vm(v)["power_state"] == "STOPPED" for v in vms)
        wait_until(powered_off, 30, "every expired VM powered off")
        print("expired %d leases once each; at the kill %d had fired and %d timers were claimed"
              % (len(per_vm), fired_at_kill, claimed_at_kill))


if __name__ == "__main__":
    unittest.main(verbosity=2)
