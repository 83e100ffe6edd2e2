#!/usr/bin/env python3
"""Provisioning end to end through the gateway, with every service and three simulated hosts:
request -> ACTIVE -> dispose -> DISPOSED, approval, usage, and bad input.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_provisioning.py
"""

import glob
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import (PlatformCase, host_domains, iso_file, iso_volume_id,  # noqa: E402
                        used_equal, wait_until)


class Provisioning(PlatformCase):
    agents = 3

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # Requests an admin decides come from a member: nobody decides their own request.
        try:
            cls.member = cls.api.create_user("member", "provisioning-member-pw")
        except Exception:
            cls.p.dump_logs()
            cls.p.stop()
            raise

    def seed_path(self, vm_id):
        paths = glob.glob(os.path.join(self.p.data_dir, "services", "agent-*", "**",
                                       vm_id + "-seed.iso"), recursive=True)
        return paths[0] if paths else None

    def test_1_request_active_dispose(self):
        before = self.api.hosts()
        self.assertEqual(len(before), 3)
        # Each simulated host runs libvirt's own "test" domain: not a VM of Berth's.
        self.assertEqual([h["vms"] for h in before.values()], [0, 0, 0])
        req = self.api.request("small", "web")
        self.assertIn(req["state"], ("APPROVED",))
        self.assertEqual(len(req["vms"]), 1)
        vm_id = req["vms"][0]["id"]
        vm = self.api.wait_vm(vm_id, ("ACTIVE",), timeout=60)
        self.assertEqual(vm["power_state"], "RUNNING")
        # The admin is in no group: the request and its VM are the default group's.
        default = self.p.redis_command("HGET", "berth:group-name:default", "id")
        self.assertEqual((req["group"], vm["group"]), (default, default))
        self.assertIn(vm["host"], before)
        self.assertIsNotNone(vm["lease"]["expires_at"])
        task = self.api.task(vm["task"])
        self.assertEqual(task["state"], "SUCCEEDED")
        self.assertEqual(task["percent"], 100)
        names = [s["name"] for s in task["steps"]]
        for stage in ("validate", "schedule", "stage_image", "create_disk", "build_seed",
                      "define", "power_on", "wait_ready"):
            self.assertIn(stage, names)
        self.assertTrue(all(s["state"] == "SUCCEEDED" for s in task["steps"]), task["steps"])

        # The host's libvirt has the domain (as the agent's next heartbeat, sent once the
        # command's inventory is taken, reports it), its capacity is claimed.
        wait_until(lambda: vm_id in host_domains(self.api, vm["host"]), 10,
                   "the host reporting the domain")
        during = self.api.hosts()[vm["host"]]
        self.assertEqual(during["used"]["ram_mb"] - before[vm["host"]]["used"]["ram_mb"], 1024)
        # Hosts count Berth's VMs only (the test driver's own "test" domain is not one).
        self.assertEqual(during["vms"], before[vm["host"]]["vms"] + 1)

        # The seed the domain boots with names this VM.
        seed = self.seed_path(vm_id)
        self.assertIsNotNone(seed, "no seed ISO for the VM on any agent")
        self.assertEqual(iso_volume_id(seed), "cidata")
        meta = iso_file(seed, "meta-data")
        self.assertIn("instance-id: " + vm_id, meta)
        self.assertIn("local-hostname: web", meta)
        self.assertIn("#cloud-config", iso_file(seed, "user-data"))

        dtask = self.api.dispose(vm_id)
        self.assertEqual(dtask["kind"], "DISPOSE")
        # Asking twice is the same disposal, unless the first one already finished (it takes
        # a few milliseconds now): then the VM is DISPOSED and the second ask is refused.
        r = self.api.call("DELETE", "/v1/vms/" + vm_id)
        if r.status == 409:
            self.assertEqual(self.api.vm(vm_id)["state"], "DISPOSED", r)
        else:
            self.assertEqual(r.status, 202, r)
            self.assertEqual(r.json()["task"]["id"], dtask["id"])
        done = self.api.wait_task(dtask["id"])
        self.assertEqual(done["state"], "SUCCEEDED", done)
        self.assertEqual(done["percent"], 100)
        vm = self.api.vm(vm_id)
        self.assertEqual(vm["state"], "DISPOSED")
        wait_until(lambda: vm_id not in host_domains(self.api, vm["host"]), 10,
                   "domain gone from the host's libvirt")
        after = self.api.hosts()
        for host_id in before:
            self.assertTrue(used_equal(before[host_id], after[host_id]),
                            (before[host_id], after[host_id]))
            self.assertEqual(after[host_id]["vms"], before[host_id]["vms"])
        self.assertIsNone(self.seed_path(vm_id), "seed ISO left on the host")
        r = self.api.call("DELETE", "/v1/vms/" + vm_id)
        self.assertEqual(r.status, 409, r)

    def test_2_requires_approval(self):
        before = self.api.hosts()
        req = self.member.request("large", "big")
        self.assertEqual(req["state"], "PENDING_APPROVAL")
        vm_id = req["vms"][0]["id"]
        self.assertEqual(req["vms"][0]["state"], "PENDING_APPROVAL")
        self.assertEqual(req["tasks"], [])
        time.sleep(1.5)   # give a (wrong) scheduler every chance to claim something
        self.assertEqual(self.api.vm(vm_id)["state"], "PENDING_APPROVAL")
        for h in before:
            self.assertTrue(used_equal(before[h], self.api.hosts()[h]))

        r = self.api.call("POST", "/v1/requests/%s/approve" % req["id"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["request"]["state"], "APPROVED")
        vm = self.api.wait_vm(vm_id, ("ACTIVE",))
        self.api.wait_task(self.api.dispose(vm_id)["id"])

        rej = self.member.request("large", "nope")
        r = self.api.call("POST", "/v1/requests/%s/reject" % rej["id"], {"reason": "no budget"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["request"]["state"], "REJECTED")
        vm = self.api.vm(rej["vms"][0]["id"])
        self.assertEqual(vm["state"], "REJECTED")
        self.assertFalse(vm["host"])
        for h, host in self.api.hosts().items():
            self.assertNotIn(vm["id"], host_domains(self.api, h))
            self.assertTrue(used_equal(before[h], host))
        # Deciding again the other way is a conflict.
        r = self.api.call("POST", "/v1/requests/%s/approve" % rej["id"])
        self.assertEqual(r.status, 409, r)

    def test_3_usage(self):
        meter = [p for p in self.p.procs if p.service == "meter" and p.alive()][0]
        req = self.api.request("medium", "metered")
        vm_id = req["vms"][0]["id"]
        self.api.wait_vm(vm_id, ("ACTIVE",))
        seen_active = time.time()
        time.sleep(8)
        self.api.dispose(vm_id)
        active_s = time.time() - seen_active
        self.api.wait_vm(vm_id, ("DISPOSED",))

        def record():
            usage = self.api.get("/v1/usage")["usage"]
            mine = [u for u in usage if u["vm"] == vm_id]
            return mine[0] if mine else None

        rec = wait_until(record, 10, "usage record of the VM")
        expected = 2 * active_s / 3600.0     # medium: 2 vCPUs
        self.assertAlmostEqual(rec["vcpu_hours"], expected, delta=expected * 0.05)
        self.assertAlmostEqual(rec["ram_gb_hours"], 4 * active_s / 3600.0,
                               delta=4 * active_s / 3600.0 * 0.05)
        self.assertEqual(rec["owner"], self.p.admin_user)

        # Restarting the meter changes nothing.
        new = self.p.restart(meter)
        wait_until(lambda: new.alive() and self.p.http("GET", "/readyz").status == 200, 20,
                   "meter back")
        time.sleep(1)
        again = record()
        self.assertAlmostEqual(again["vcpu_hours"], rec["vcpu_hours"], places=6)

    def test_4_bad_input(self):
        def counts():
            return (self.p.redis_command("ZCARD", "berth:vms"),
                    self.p.redis_command("ZCARD", "berth:requests"))

        before = counts()
        api = self.api
        cases = [
            (api.call("POST", "/v1/requests", b'{"template": "small", "name": ',
                      {"Content-Type": "application/json"}), 400),
            (api.call("POST", "/v1/requests", {"template": "no-such", "name": "x"}), 404),
            (api.call("POST", "/v1/requests", {"template": "small", "name": "x", "count": -1}), 400),
            (api.call("POST", "/v1/requests", {"template": "small", "name": "x",
                                               "count": 10 ** 9}), 400),
            (api.call("POST", "/v1/requests", {"template": "small", "name": "Bad Name!"}), 400),
            (api.call("POST", "/v1/requests", {"template": "small", "name": "x", "count": "3"}), 400),
            (self.p.http("POST", "/v1/requests", {"template": "small", "name": "x"}), 401),
            (self.p.http("POST", "/v1/requests", {"template": "small", "name": "x"},
                         headers={"Authorization": "Bearer not-a-token"}), 401),
            (api.call("POST", "/v1/requests", b"{" + b" " * (10 * 1024 * 1024) + b"}",
                      {"Content-Type": "application/json"}), 413),
            (api.call("GET", "/v1/vms/00000000-0000-4000-8000-000000000000"), 404),
            (api.call("GET", "/v1/vms/../../etc/passwd"), 404),
            (api.call("DELETE", "/v1/vms/00000000-0000-4000-8000-000000000000"), 404),
            (api.call("GET", "/v1/tasks/nope"), 404),
        ]
        for r, status in cases:
            self.assertEqual(r.status, status, r)
            body = r.json()
            self.assertIn("error", body, r)
            for key in ("code", "message", "request_id"):
                self.assertIn(key, body["error"], r)
            self.assertEqual(body["error"]["request_id"], r.headers.get("X-Request-Id"))
        self.assertEqual(counts(), before)
        self.p.check_alive()
        # What the approval service refuses names the field, through the bus to HTTP.
        r = api.call("POST", "/v1/requests", {"template": "small", "name": "Bad-Name"})
        self.assertEqual((r.status, r.json()["error"]["details"]), (400, {"field": "name"}), r)
        r = api.call("POST", "/v1/requests", {"template": "no-such", "name": "x"})
        self.assertEqual((r.status, r.json()["error"]["details"]), (404, {"field": "template"}),
                         r)
        for group, status in (("no-such-group", 404), ("Not A Group", 400), ("", 400),
                              ("g" * 65, 400)):
            with self.subTest(group=group):
                r = self.member.call("POST", "/v1/requests",
                                     {"template": "small", "name": "x", "group": group})
                self.assertEqual((r.status, r.json()["error"]["details"]),
                                 (status, {"field": "group"}), r)
        self.assertEqual(counts(), before)

    def test_4b_usage_window_of_only_to(self):
        # Only `to`, early in 1970: the default window starts at the epoch, never before it,
        # and nothing in the answer speaks of a `from_ms` the client never sent.
        r = self.api.call("GET", "/v1/usage?to=1000")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["from"], "1970-01-01T00:00:00.000Z")
        self.assertEqual(r.json()["to"], "1970-01-01T00:16:40.000Z")
        r = self.api.call("GET", "/v1/usage?to=0")
        self.assertEqual((r.status, r.json()["error"]["details"]), (400, {"field": "to"}), r)
        self.assertNotIn("from_ms", r.text)

    def test_5_idempotency_key_reused_for_another_body(self):
        self.api.create_template(name="idem-gated", vcpus=1, ram_mb=512, disk_gb=5, os="linux",
                                 image="debian-12", lease_days=1, requires_approval=True)
        key = {"Idempotency-Key": "order-7"}
        body = {"template": "idem-gated", "name": "idem", "count": 2}
        first = self.member.call("POST", "/v1/requests", body, key)
        self.assertEqual(first.status, 202, first)
        first = first.json()["request"]
        # The same body again: the same request, nothing new.
        again = self.member.call("POST", "/v1/requests", body, key)
        self.assertEqual(again.status, 202, again)
        self.assertEqual(again.json()["request"]["id"], first["id"])
        # Another body with the same key: refused, saying so, and nothing is created.
        requests = self.p.redis_command("ZCARD", "berth:requests")
        for other in (dict(body, count=3), dict(body, name="idem2"), {"template": "idem-gated",
                                                                      "name": "idem"}):
            with self.subTest(other=other):
                r = self.member.call("POST", "/v1/requests", other, key)
                self.assertEqual(r.status, 422, r)
                err = r.json()["error"]
                self.assertEqual(err["code"], "IDEMPOTENCY_KEY_REUSED")
                self.assertIn("another request body", err["message"])
                self.assertEqual(err["details"]["header"], "Idempotency-Key")
                self.assertEqual(err["details"]["request"], first["id"])
        self.assertEqual(self.p.redis_command("ZCARD", "berth:requests"), requests)
        r = self.api.call("POST", "/v1/requests/%s/reject" % first["id"], {"reason": "test"})
        self.assertEqual(r.status, 200, r)


if __name__ == "__main__":
    unittest.main(verbosity=2)
