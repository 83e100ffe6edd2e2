#!/usr/bin/env python3
"""Group quotas, through the REST API with every service and one simulated host:

- the race: a group whose quota fits 10 small VMs gets 30 concurrent POST /v1/requests; exactly
  10 are accepted (202), the 20 others are 403 QUOTA_EXCEEDED naming the resource, the quota,
  what is used and what was requested, and the group's usage says 10;
- disposing of the 10 gives the quota back: a new request is accepted;
- a rejected request and a failed VM (ERROR) give back what they held;
- a member's own limit (user_quota) refuses them while the group still has room;
- the CLI sets both limits and shows what is used (through the contract-checking proxy).

The host builds nothing over 1536 MB (the agent's vm_max_ram_mb), so a "medium" VM (4 GB)
fails during provisioning and ends in ERROR.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_quota.py
"""

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import CheckedProxy, PlatformCase, wait_until  # noqa: E402

PW = "quota-test-pw-1"


class Quota(PlatformCase):
    agents = 1
    wait_hosts = 1
    agent_env = {"BERTH_VM_MAX_RAM_MB": "1536"}

    def group(self, name, quota, user_quota=None):
        body = {"name": name, "quota": quota}
        if user_quota:
            body["user_quota"] = user_quota
        r = self.api.call("POST", "/v1/groups", body)
        self.assertEqual(r.status, 201, r)
        return r.json()["group"]

    def member(self, group, name):
        user = self.api.create_user(name, PW)
        r = self.api.call("POST", "/v1/groups/%s/members" % group["id"],
                          {"user": name, "role": "member"})
        self.assertEqual(r.status, 201, r)
        return user

    def usage(self, group):
        return self.api.get("/v1/groups/" + group["id"])["group"]["usage"]

    def refused(self, r, resource, quota, used, requested):
        self.assertEqual(r.status, 403, r)
        err = r.json()["error"]
        self.assertEqual(err["code"], "QUOTA_EXCEEDED")
        d = err["details"]
        self.assertEqual((d["resource"], d["quota"], d["used"], d["requested"]),
                         (resource, str(quota), str(used), str(requested)))
        self.assertIn("%s quota %d, %d in use" % (resource, quota, used), err["message"])

    def test_concurrent_requests_never_pass_the_quota(self):
        g = self.group("race", {"vms": 10, "vcpus": 10})
        user = self.member(g, "racer")
        answers = [None] * 30
        start = threading.Barrier(30)

        def ask(i):
            start.wait()
            answers[i] = user.call("POST", "/v1/requests",
                                   {"template": "small", "name": "r%d" % i, "group": "race"})

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        accepted = [r for r in answers if r.status == 202]
        self.assertEqual(len(accepted), 10, [r.status for r in answers])
        for r in answers:
            if r.status != 202:
                self.refused(r, r.json()["error"]["details"].get("resource"), 10, 10, 1)
        self.assertEqual(self.usage(g), {"vms": 10, "vcpus": 10, "ram_mb": 10240, "disk_gb": 100})
        self.assertEqual(self.api.get("/v1/groups/" + g["id"])["group"]["quota"]["vms"], 10)

        # Disposed of, the ten give their share back: the group takes a new request.
        vms = [r.json()["request"]["vms"][0]["id"] for r in accepted]
        for vm in vms:
            user.wait_vm(vm, ("ACTIVE",), timeout=120)
        self.refused(user.call("POST", "/v1/requests", {"template": "small", "name": "more"}),
                     "vms", 10, 10, 1)
        for vm in vms:
            user.dispose(vm)
        for vm in vms:
            user.wait_vm(vm, ("DISPOSED",), timeout=120)
        self.assertEqual(self.usage(g), {"vms": 0, "vcpus": 0, "ram_mb": 0, "disk_gb": 0})
        user.request("small", "again")
        self.assertEqual(self.usage(g)["vms"], 1)

    def test_rejected_and_failed_release(self):
        g = self.group("lab", {"vms": 3})
        user = self.member(g, "labrat")
        # Waiting for approval holds quota; rejected, it gives it back.
        big = user.request("large", "big")
        self.assertEqual(big["state"], "PENDING_APPROVAL")
        self.assertEqual(self.usage(g)["vcpus"], 8)
        self.refused(user.call("POST", "/v1/requests",
                               {"template": "small", "name": "s", "count": 3}), "vms", 3, 1, 3)
        r = self.api.call("POST", "/v1/requests/%s/reject" % big["id"], {"reason": "too big"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.usage(g), {"vms": 0, "vcpus": 0, "ram_mb": 0, "disk_gb": 0})

        # A VM that fails to build gives its share back.
        bad = user.request("medium", "bad")["vms"][0]["id"]
        self.assertEqual(self.usage(g)["vms"], 1)
        user.wait_vm(bad, ("ERROR",), timeout=120)
        wait_until(lambda: self.usage(g)["vms"] == 0, 10, "the failed VM's quota released")
        self.assertEqual(self.usage(g), {"vms": 0, "vcpus": 0, "ram_mb": 0, "disk_gb": 0})
        # Disposing of it later releases nothing more.
        user.dispose(bad)
        user.wait_vm(bad, ("DISPOSED",), timeout=60)
        self.assertEqual(self.usage(g), {"vms": 0, "vcpus": 0, "ram_mb": 0, "disk_gb": 0})
        user.request("small", "fits", count=3)
        self.assertEqual(self.usage(g)["vms"], 3)

    def test_member_limit(self):
        g = self.group("shared", {"vms": 10}, user_quota={"vms": 1})
        a, b = self.member(g, "ann"), self.member(g, "bob")
        a.request("small", "a1")
        r = a.call("POST", "/v1/requests", {"template": "small", "name": "a2"})
        self.refused(r, "vms", 1, 1, 1)
        self.assertEqual(r.json()["error"]["details"]["scope"], "user")
        b.request("small", "b1")
        self.assertEqual(self.usage(g)["vms"], 2)
        got = self.api.get("/v1/groups/" + g["id"])["group"]
        self.assertEqual(got["user_quota"]["vms"], 1)
        # An admin raises the member limit: ann may ask again.
        r = self.api.call("PATCH", "/v1/groups/" + g["id"], {"user_quota": {"vms": 2}})
        self.assertEqual(r.status, 200, r)
        a.request("small", "a2")
        self.assertEqual(self.usage(g)["vms"], 3)

    def berth(self, home, *args, stdin=None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        env.update({"BERTH_URL": self.proxy.url, "XDG_CONFIG_HOME": home, "HOME": home})
        r = subprocess.run([self.p.binary("berth")] + list(args), input=stdin, env=env,
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(self.proxy.violations, [], "berth %s" % " ".join(args))
        self.assertEqual(r.returncode, 0, "berth %s:\n%s\n%s" % (" ".join(args), r.stdout,
                                                                  r.stderr))
        return r.stdout

    def test_cli_quota(self):
        self.proxy = CheckedProxy(self.p)
        self.addCleanup(self.proxy.close)
        home = tempfile.mkdtemp(prefix="berth-cli-")
        self.addCleanup(shutil.rmtree, home, ignore_errors=True)
        self.berth(home, "login", "--user", self.p.admin_user, "--password-stdin",
                   stdin=self.p.admin_password + "\n")
        out = self.berth(home, "groups", "create", "cliq", "--quota-vms", "4",
                         "--user-quota-vms", "1", "--user-quota-ram-mb", "2048")
        self.assertRegex(out, r"quota.vms:\s+4")
        self.assertRegex(out, r"user_quota.vms:\s+1")
        self.assertRegex(out, r"user_quota.ram_mb:\s+2048")
        out = self.berth(home, "groups", "update", "cliq", "--user-quota-vms", "2")
        self.assertRegex(out, r"user_quota.vms:\s+2")
        self.assertRegex(self.berth(home, "groups", "show", "cliq"), r"usage.vms:\s+0")


if __name__ == "__main__":
    unittest.main()
