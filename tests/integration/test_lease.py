#!/usr/bin/env python3
"""A whole lease in seconds (issue 10, test 1): the platform clock runs 8640 times faster than
real time (a day in 10 s), so a one-day lease gives its notice (vm.lease.notice, EXPIRING),
expires (EXPIRED, powered off by a STOP task), is kept as a tombstone and then disposed
by a DISPOSE task, while its sibling is revived by its owner (POST /v1/vms/{id}/lease: ACTIVE,
powered on by a START task; a second extension is beyond the policy); the meter bills compute until the expiry and disk until the disposal, as
the lifecycle table's billing factors say. Transitions made by timers are audited as
service:taskmgr.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_lease.py
"""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import PlatformCase, wait_until  # noqa: E402

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
        # Timers fire on the platform clock: notice half a day before the end, expiry at it,
        # disposal a day after (each within a few real seconds' worth of platform time).
        slack = 3000 * SCALE
        self.assertAlmostEqual(at["EXPIRED"] - at["ACTIVE"], DAY_MS, delta=slack)
        self.assertAlmostEqual(at["EXPIRING"] - at["ACTIVE"], DAY_MS // 2, delta=slack)
        self.assertAlmostEqual(at["DISPOSING"] - at["EXPIRED"], DAY_MS, delta=slack)

        # Billing: compute from ACTIVE to EXPIRED, disk also through the tombstone.
        def record():
            mine = [u for u in self.api.get("/v1/usage")["usage"] if u["vm"] == vm_id]
            return mine[0] if mine and mine[0]["disk_gb_hours"] > mine[0]["vcpu_hours"] * 10 \
                else None
        rec = wait_until(record, 10, "usage record of the VM with its tombstone")
        compute_h = (at["EXPIRED"] - at["ACTIVE"]) / 3600000.0
        disk_h = (at["DISPOSING"] - at["ACTIVE"]) / 3600000.0
        self.assertAlmostEqual(rec["vcpu_hours"], 1 * compute_h, delta=1e-6)
        self.assertAlmostEqual(rec["ram_gb_hours"], 1 * compute_h, delta=1e-6)
        self.assertAlmostEqual(rec["disk_gb_hours"], 10 * disk_h, delta=1e-6)

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
        # Beyond the policy (one extension): refused, the limits in the answer.
        r = self.api.call("POST", path, {"days": 1})
        self.assertEqual(r.status, 409, r)
        self.assertEqual(r.json()["error"]["details"]["max_extensions"], "1")
        # Revived, it is audited as the user's doing.
        actors = [dict(zip(f[0::2], f[1::2])) for _, f in
                  self.p.redis_command("XRANGE", "berth:audit", "-", "+")]
        self.assertIn(("vm.revive", self.p.admin_user),
                      [(a["action"], a["actor"]) for a in actors
                       if a.get("target") == "vm:" + vm_id])


if __name__ == "__main__":
    unittest.main(verbosity=2)
