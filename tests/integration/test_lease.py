#!/usr/bin/env python3
"""A whole lease in seconds (issue 10, test 1): the platform clock runs 8640 times faster than
real time (a day in 10 s), so a one-day lease gives its notice (vm.lease.notice, EXPIRING),
expires (EXPIRED, powered off by a STOP task), is kept as a tombstone and then disposed
by a DISPOSE task, while its sibling is revived by its owner (POST /v1/vms/{id}/lease: ACTIVE,
powered on by a START task; a second extension is beyond the policy: a request of kind
extension, approved at once by its group's auto policy and applied); the meter bills compute
while a VM runs (not while it is EXPIRED, nor while the revived VM is still powered off) and
disk until the disposal, as the lifecycle table's billing says: each VM's totals are worked out
from the transitions the platform recorded (tests/integration/billing.py) and compared with
GET /v1/usage. Transitions made by timers are audited as service:taskmgr.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_lease.py
"""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import PlatformCase, wait_until  # noqa: E402
from billing import billed_ms, transitions  # noqa: E402

SCALE = 8640                    # platform ms per real ms: one day in 10 s
DAY_MS = 86400000


def events(p, vm_id):
    """(type, fields) of every event of the VM on berth:events, in order."""
    out = []
    for _, flat in p.redis_command("XRANGE", "berth:events", "-", "+"):
        f = dict(zip(flat[0::2], flat[1::2]))
        if f.get("vm") == vm_id:
            out.append(f)
    return out


def wait_state(api, vm_id, states, timeout):
    """The VM once its state is one of states (ACTIVE is no end state here)."""
    return wait_until(lambda: (lambda v: v if v["state"] in states else None)(api.vm(vm_id)),
                      timeout, "VM %s %s" % (vm_id, "/".join(states)))


class Lease(PlatformCase):
    agents = 2
    platform_env = {
        "BERTH_CLOCK_SCALE": str(SCALE),
        "BERTH_CLOCK_ORIGIN_MS": str(int(time.time() * 1000)),
        "BERTH_LEASE_NOTICE_MS": str(DAY_MS // 2),      # notice half a day (5 s) before
        "BERTH_LEASE_TOMBSTONE_MS": str(DAY_MS),        # tombstone one day (10 s)
        "BERTH_TIMER_CHECK_MS": "200",
        "BERTH_LEASE_MAX_EXTENSIONS": "1",
    }

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            # A consumer group of the test's own that never reads: the meter trims the event
            # stream only below every group's position, so the test sees every event.
            cls.p.redis_command("XGROUP", "CREATE", "berth:events", "lease-test", "0",
                                "MKSTREAM")
            cls.api.create_template(name="day", vcpus=1, ram_mb=1024, disk_gb=10, os="debian",
                                    image="debian-12", lease_days=1)
            # The group's notice period (2 hours) replaces the platform's (half a day).
            r = cls.api.call("PATCH", "/v1/groups/default", {"lease_notice_hours": 2})
            assert r.status == 200, r
        except Exception:
            cls.p.dump_logs()
            cls.p.stop()
            raise

    def test_1_lease_runs_out_and_is_disposed(self):
        vm_id, revived_id = [v["id"] for v in self.api.request("day", "brief", count=2)["vms"]]
        self.api.wait_vm(revived_id, ("ACTIVE",), timeout=30)
        vm = self.api.wait_vm(vm_id, ("ACTIVE",), timeout=30)
        self.assertEqual(vm["power_state"], "RUNNING")
        self.assertIsNotNone(vm["lease"]["expires_at"])
        wait_state(self.api, vm_id, ("EXPIRING",), 20)
        notices = [e for e in events(self.p, vm_id) if e["type"] == "vm.lease.notice"]
        self.assertEqual(len(notices), 1, notices)
        self.assertEqual(notices[0]["owner"], self.p.admin_user)
        vm = wait_state(self.api, vm_id, ("EXPIRED",), 20)
        self.assertIsNotNone(vm["lease"]["tombstone_until"])
        # Expiry powers it off (a STOP task), the domain kept for the tombstone period.
        task = self.api.wait_task(vm["task"], timeout=20)
        self.assertEqual((task["kind"], task["state"]), ("STOP", "SUCCEEDED"))
        vm = wait_until(lambda: (lambda v: v if v["power_state"] == "STOPPED" else None)(
            self.api.vm(vm_id)), 10, "the expired VM powered off")
        self.assertEqual(vm["state"], "EXPIRED")
        self.revive(revived_id)
        # The tombstone period ends: disposed by a DISPOSE task.
        wait_state(self.api, vm_id, ("DISPOSING", "DISPOSED"), 25)
        vm = self.api.wait_vm(vm_id, ("DISPOSED",), timeout=20)
        self.assertEqual(self.api.task(vm["task"])["kind"], "DISPOSE")

        states = [(e["state"], int(e["at_ms"])) for e in events(self.p, vm_id)
                  if e["type"] == "vm.state"]
        order = [s for s, _ in states]
        self.assertEqual(order, ["PROVISIONING", "ACTIVE", "EXPIRING", "EXPIRED", "DISPOSING",
                                 "DISPOSED"])
        at = dict(states)
        # Timers fire on the platform clock: notice the group's 2 hours before the end (not
        # the platform's half day: 10 hours apart, more than the slack), expiry at it,
        # disposal a day after (each within a few real seconds' worth of platform time).
        slack = 3000 * SCALE
        self.assertAlmostEqual(at["EXPIRED"] - at["ACTIVE"], DAY_MS, delta=slack)
        self.assertAlmostEqual(at["EXPIRING"] - at["ACTIVE"], DAY_MS - 2 * 3600000, delta=slack)
        self.assertAlmostEqual(at["DISPOSING"] - at["EXPIRED"], DAY_MS, delta=slack)

        # Billing: compute while ACTIVE and running (from the power event that follows the
        # ACTIVE transition, a moment later under load, to EXPIRED), disk also through the
        # tombstone: the totals from the recorded transitions, close to the states' times.
        compute_ms, disk_ms = billed_ms(events(self.p, vm_id), 0)
        compute_h = (at["EXPIRED"] - at["ACTIVE"]) / 3600000.0
        self.assertLessEqual(compute_ms / 3.6e6, compute_h + 1e-6)
        self.assertGreater(compute_ms / 3.6e6, compute_h - 0.5)
        self.assertAlmostEqual(disk_ms / 3.6e6, (at["DISPOSING"] - at["ACTIVE"]) / 3.6e6,
                               delta=1e-6)
        self.assertBilled(vm_id, compute_ms / 3.6e6, disk_ms / 3.6e6)
        # The revived VM: disposed too, its totals from its own transitions (compute stops at
        # its expiry and starts again only once its START ran, not at the revival).
        self.api.dispose(revived_id)
        self.api.wait_vm(revived_id, ("DISPOSED",), timeout=30)
        revived_events = events(self.p, revived_id)
        compute_ms, disk_ms = billed_ms(revived_events, 0)
        trail = transitions(revived_events)
        revived_at = [t for k, s, t in trail if k == "vm.state" and s == "ACTIVE"]
        running_at = [t for k, s, t in trail if k == "vm.power" and s == "RUNNING"]
        self.assertEqual(len(revived_at), 2, trail)
        # Powered off between the revival and its START: disk only, and long enough (in
        # platform time) that a wrong factor could not hide in the tolerance.
        self.assertGreater(running_at[-1] - revived_at[-1], 100, trail)
        self.assertBilled(revived_id, compute_ms / 3.6e6, disk_ms / 3.6e6, trail)

        # The timers' transitions are taskmgr's, not the user's.
        audit = []
        for _, flat in self.p.redis_command("XRANGE", "berth:audit", "-", "+"):
            f = dict(zip(flat[0::2], flat[1::2]))
            if f.get("target", "").endswith(vm_id) or vm_id in f.get("target", ""):
                audit.append(f)
        by_action = {}
        for a in audit:
            by_action.setdefault(a["action"], a["actor"])
        for action in ("vm.notice", "vm.expire"):
            self.assertIn(action, by_action, audit)
            self.assertEqual(by_action[action], "service:taskmgr")


    def assertBilled(self, vm_id, compute_h, disk_h, trail=None):
        """GET /v1/usage shows the VM (1 vCPU, 1 GB, 10 GB) billed these hours."""
        def record():
            mine = [u for u in self.api.get("/v1/usage")["usage"] if u["vm"] == vm_id]
            return mine[0] if mine and abs(mine[0]["disk_gb_hours"] - 10 * disk_h) < 1e-6 \
                else None
        rec = wait_until(record, 10, "usage record of the VM with its tombstone")
        self.assertGreater(disk_h - compute_h, 0.5, trail)  # hours of tombstone at least
        self.assertAlmostEqual(rec["vcpu_hours"], 1 * compute_h, delta=1e-6, msg=trail)
        self.assertAlmostEqual(rec["ram_gb_hours"], 1 * compute_h, delta=1e-6, msg=trail)
        self.assertAlmostEqual(rec["active_hours"], compute_h, delta=1e-6, msg=trail)
        self.assertAlmostEqual(rec["disk_only_hours"], disk_h - compute_h, delta=1e-6, msg=trail)

    def revive(self, vm_id):
        """The other VM, EXPIRED too, is revived by its owner within the tombstone period."""
        vm = wait_state(self.api, vm_id, ("EXPIRED",), 10)
        path = "/v1/vms/%s/lease" % vm_id
        for bad in ({"days": 0}, {}, {"days": 1, "hours": 2}, {"days": "one"}):
            r = self.api.call("POST", path, bad)
            self.assertEqual(r.status, 400, (bad, r))
        self.assertEqual(self.api.call("POST", "/v1/vms/%s/lease" % ("0" * 8 + "-0000-4000-8000-"
                                                                      + "0" * 12),
                                       {"days": 1}).status, 404)
        r = self.api.call("POST", path, {"days": 1})
        self.assertEqual(r.status, 200, r)
        vm = r.json()["vm"]
        self.assertEqual(vm["state"], "ACTIVE")
        self.assertEqual(vm["lease"]["extensions"], 1)
        self.assertIsNone(vm["lease"]["tombstone_until"])
        task = self.api.wait_task(vm["task"], timeout=20)
        self.assertEqual((task["kind"], task["state"]), ("START", "SUCCEEDED"))
        self.assertEqual(self.api.vm(vm_id)["power_state"], "RUNNING")
        revived = [e for e in events(self.p, vm_id) if e["type"] == "vm.lease.extended"]
        self.assertEqual([(e["revived"], e["by"]) for e in revived], [("1", self.p.admin_user)])
        # The lease runs a day from the revival (on the platform clock).
        self.assertAlmostEqual(int(revived[0]["expires_ms"]) - int(revived[0]["at_ms"]), DAY_MS)
        # Beyond the policy (one extension): a request of kind extension, which the default
        # group's auto policy approves at once; taskmgr applies it (for "policy").
        r = self.api.call("POST", path, {"days": 1})
        self.assertEqual(r.status, 202, r)
        req = r.json()["request"]
        self.assertEqual((req["kind"], req["state"], req["decided_by"]),
                         ("extension", "APPROVED", "policy"))
        self.assertIn("extended 1 times", req["extension"]["beyond"])
        wait_until(lambda: self.api.vm(vm_id)["lease"]["extensions"] == 2, 10,
                   "the approved extension applied")
        # Revived, it is audited as the user's doing.
        actors = [dict(zip(f[0::2], f[1::2])) for _, f in
                  self.p.redis_command("XRANGE", "berth:audit", "-", "+")]
        self.assertIn(("vm.revive", self.p.admin_user),
                      [(a["action"], a["actor"]) for a in actors
                       if a.get("target") == "vm:" + vm_id])


if __name__ == "__main__":
    unittest.main(verbosity=2)
