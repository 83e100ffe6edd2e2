#!/usr/bin/env python3
"""Lease policy per group (issue 10, "Leases"; issue 9's approval policy), through REST with
every service and one simulated host:

- an admin sets a group's lease policy (PATCH /v1/groups/{id}: max_lease_days,
  max_extensions, lease_notice_hours; bad values 400 naming the field; the CLI's
  `berth groups update G --max-lease-days N --max-extensions N`);
- an extension within the policy is granted at once (200, the lease one day longer);
- beyond max_extensions, or past max_lease_days from the VM's creation, the same POST answers
  202 with a request of kind extension, PENDING_APPROVAL for a manager (the group's policy is
  conditional: an extension beyond the lease policy is never "small"), with its Location;
  the requester cannot approve it; the manager approves it and taskmgr extends the lease for
  the manager (event vm.lease.extended naming the request), once;
- a rejected extension leaves the lease as it was, and its reason is on the request;
- an auto group grants an extension beyond its policy at once, as a request APPROVED by
  policy and applied.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_lease_policy.py
"""

import os
import subprocess
import sys
import tempfile
import unittest
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import CheckedProxy, PlatformCase, wait_until  # noqa: E402
from billing import vm_events  # noqa: E402

PW = "lease-policy-pw-1"
DAY_MS = 86400000


def end_ms(vm):
    """The VM's lease end as ms since the epoch (from the ISO time shown)."""
    text = vm["lease"]["expires_at"].replace("Z", "+00:00")
    return int(datetime.fromisoformat(text).timestamp() * 1000)


class LeasePolicy(PlatformCase):
    agents = 1
    wait_hosts = 1
    platform_env = {"BERTH_GROUPS_CACHE_MS": "0", "BERTH_TIMER_CHECK_MS": "200"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            admin = cls.api
            cls.api.create_template(name="day", vcpus=1, ram_mb=512, disk_gb=10, os="debian",
                                    image="debian-12", lease_days=1)
            cls.groups = {}
            for name, policy in (("lp", "conditional"), ("free", "auto")):
                r = admin.call("POST", "/v1/groups", {"name": name, "approval_policy": policy,
                                                      "auto_max_vcpus": 8,
                                                      "auto_max_ram_mb": 8192})
                assert r.status == 201, r
                cls.groups[name] = r.json()["group"]
            cls.users = {}
            for name in ("mia", "max"):
                cls.users[name] = admin.create_user(name, PW)
            for user, group, role in (("mia", "lp", "member"), ("max", "lp", "manager"),
                                      ("mia", "free", "member")):
                r = admin.call("POST", "/v1/groups/%s/members" % group,
                               {"user": user, "role": role})
                assert r.status == 201, r
        except Exception:
            cls.p.dump_logs()
            cls.p.stop()
            raise

    def build(self, api, group, name):
        r = api.call("POST", "/v1/requests", {"template": "day", "name": name, "group": group})
        self.assertEqual(r.status, 202, r)
        return api.wait_vm(r.json()["request"]["vms"][0]["id"], ("ACTIVE",))

    def extend(self, api, vm, days):
        return api.call("POST", "/v1/vms/%s/lease" % vm["id"], {"days": days})

    def asked(self, r, state):
        """The extension request of a 202 answer, checked."""
        self.assertEqual(r.status, 202, r)
        req = r.json()["request"]
        self.assertEqual(r.headers["Location"], "/v1/requests/" + req["id"])
        self.assertEqual((req["kind"], req["state"]), ("extension", state), req)
        return req

    def test_1_group_policy_fields(self):
        admin, gid = self.api, self.groups["lp"]["id"]
        for bad in ({"max_extensions": -1}, {"max_lease_days": 40000},
                    {"lease_notice_hours": "soon"}):
            r = admin.call("PATCH", "/v1/groups/" + gid, bad)
            self.assertEqual(r.status, 400, (bad, r))
            self.assertEqual(r.json()["error"]["details"]["field"], list(bad)[0], r)
        # The CLI sets them (through the contract-checking proxy).
        with tempfile.TemporaryDirectory() as home:
            proxy = CheckedProxy(self.p)
            try:
                env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
                env.update({"BERTH_URL": proxy.url, "XDG_CONFIG_HOME": home, "HOME": home})

                def berth(*args, stdin=None):
                    r = subprocess.run([self.p.binary("berth")] + list(args), input=stdin,
                                       env=env, capture_output=True, text=True, timeout=120)
                    self.assertEqual(r.returncode, 0, (args, r.stdout, r.stderr))
                    return r
                berth("login", self.p.admin_user, "--password-stdin",
                      stdin=self.p.admin_password + "\n")
                berth("groups", "update", "lp", "--max-lease-days", "4", "--max-extensions", "1",
                      "--lease-notice-hours", "6")
                self.assertEqual(proxy.violations, [])
            finally:
                proxy.close()
        g = admin.get("/v1/groups/" + gid)["group"]
        self.assertEqual((g["max_lease_days"], g["max_extensions"], g["lease_notice_hours"]),
                         (4, 1, 6))
        # Audited as the admin's change of the group.
        records = admin.get("/v1/audit?actor=" + self.p.admin_user)["records"]
        self.assertTrue(any(gid in a["target"] and "group" in a["action"] for a in records),
                        records)

    def test_2_within_granted_beyond_approved_or_rejected(self):
        admin, gid = self.api, self.groups["lp"]["id"]
        r = admin.call("PATCH", "/v1/groups/" + gid, {"max_lease_days": 4, "max_extensions": 1})
        self.assertEqual(r.status, 200, r)
        mia, maxi = self.users["mia"], self.users["max"]
        vm = self.build(mia, "lp", "ext")
        first = end_ms(vm)

        # Within the policy: at once.
        r = self.extend(mia, vm, 1)
        self.assertEqual(r.status, 200, r)
        vm = r.json()["vm"]
        self.assertEqual(vm["lease"]["extensions"], 1)
        self.assertEqual(end_ms(vm) - first, DAY_MS)
        second = end_ms(vm)

        # Beyond max_extensions: a request for the group's manager, the lease unchanged.
        req = self.asked(self.extend(mia, vm, 1), "PENDING_APPROVAL")
        self.assertEqual((req["policy"], req["awaiting"]), ("manager", "manager"))
        self.assertEqual((req["extension"]["vm"], req["extension"]["days"]), (vm["id"], 1))
        self.assertIn("extended 1 times", req["extension"]["beyond"])
        self.assertEqual(end_ms(mia.vm(vm["id"])), second)
        self.assertIn(req["id"], {q["id"] for q in
                                  maxi.get("/v1/requests?state=PENDING_APPROVAL")["requests"]})
        self.assertEqual(mia.call("POST", "/v1/requests/%s/approve" % req["id"]).status, 403)
        r = maxi.call("POST", "/v1/requests/%s/approve" % req["id"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["request"]["state"], "APPROVED")
        vm = wait_until(lambda: (lambda v: v if v["lease"]["extensions"] == 2 else None)(
            mia.vm(vm["id"])), 15, "the approved extension applied")
        self.assertEqual(end_ms(vm) - second, DAY_MS)
        applied = [e for e in vm_events(self.p, vm["id"]) if e["type"] == "vm.lease.extended"
                   and e["request"] == req["id"]]
        self.assertEqual([(e["by"], e["days"]) for e in applied], [("max", "1")])
        third = end_ms(vm)

        # Beyond max_lease_days alone (4 days from creation; it ends 3 days after it; more
        # extensions allowed now): rejected, unchanged.
        r = admin.call("PATCH", "/v1/groups/" + gid, {"max_extensions": 10})
        self.assertEqual(r.status, 200, r)
        req = self.asked(self.extend(mia, vm, 2), "PENDING_APPROVAL")
        self.assertIn("at most 4 days", req["extension"]["beyond"])
        r = maxi.call("POST", "/v1/requests/%s/reject" % req["id"],
                      {"reason": "ask again next month"})
        self.assertEqual(r.status, 200, r)
        seen = mia.get("/v1/requests/" + req["id"])["request"]
        self.assertEqual((seen["state"], seen["reason"]), ("REJECTED", "ask again next month"))
        vm = mia.vm(vm["id"])
        self.assertEqual((end_ms(vm), vm["lease"]["extensions"]), (third, 2))
        self.assertIsNone(self.p.redis_command("ZSCORE", "berth:timers", "extend:" + req["id"]))

        # An approval applies once: a second approval of a decided request changes nothing.
        self.assertEqual(self.p.redis_command("ZCARD", "berth:timers:claimed"), 0)

    def test_3_auto_group_grants_beyond_policy_by_request(self):
        admin, gid = self.api, self.groups["free"]["id"]
        r = admin.call("PATCH", "/v1/groups/" + gid, {"max_extensions": 1})
        self.assertEqual(r.status, 200, r)
        mia = self.users["mia"]
        vm = self.build(mia, "free", "auto")
        self.assertEqual(self.extend(mia, vm, 1).status, 200)
        req = self.asked(self.extend(mia, vm, 1), "APPROVED")
        self.assertEqual((req["decided_by"], req["policy"]), ("policy", "auto"))
        vm = wait_until(lambda: (lambda v: v if v["lease"]["extensions"] == 2 else None)(
            mia.vm(vm["id"])), 15, "the automatic extension applied")
        # Days past taskmgr's lease_max_extend_days: 400 naming days, nothing asked.
        r = self.extend(mia, vm, 100000)
        self.assertEqual(r.status, 400, r)

    def test_4_template_tightens_the_group(self):
        admin = self.api
        r = admin.call("POST", "/v1/templates", {"name": "brief", "vcpus": 1, "ram_mb": 512,
                                                 "disk_gb": 10, "os": "debian",
                                                 "image": "debian-12", "lease_days": 1,
                                                 "max_lease_days": 3, "lease_notice_hours": 5})
        self.assertEqual(r.status, 201, r)
        self.assertEqual((r.json()["template"]["max_lease_days"],
                          r.json()["template"]["lease_notice_hours"]), (3, 5))
        r = admin.call("POST", "/v1/templates", {"name": "bad", "vcpus": 1, "ram_mb": 512,
                                                 "disk_gb": 10, "os": "debian",
                                                 "image": "debian-12", "lease_days": 1,
                                                 "max_lease_days": -1})
        self.assertEqual(r.status, 400, r)
        # The group allows 100 days; the template 3: a second day more is within, a third not.
        gid = self.groups["free"]["id"]
        r = admin.call("PATCH", "/v1/groups/" + gid, {"max_extensions": 10,
                                                      "max_lease_days": 100})
        self.assertEqual(r.status, 200, r)
        mia = self.users["mia"]
        r = mia.call("POST", "/v1/requests", {"template": "brief", "name": "brief",
                                              "group": "free"})
        self.assertEqual(r.status, 202, r)
        vm = mia.wait_vm(r.json()["request"]["vms"][0]["id"], ("ACTIVE",))
        self.assertEqual(self.extend(mia, vm, 1).status, 200)
        req = self.asked(self.extend(mia, vm, 2), "APPROVED")
        self.assertIn("at most 3 days", req["extension"]["beyond"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
