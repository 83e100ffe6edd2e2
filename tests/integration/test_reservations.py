#!/usr/bin/env python3
"""Group reservations (issue 9, test 4), through the REST API with two small simulated hosts
(4 vCPUs, 4096 MB, 100 GB each) and a 1024 MB template:

- group A reserves 2048 MB on host-1 (named by its name); group B fills everything else (6
  VMs), its next VM ends in ERROR with "no valid host" counting host-1 under "reserved";
- A's VMs still land, on host-1, from its reservation (the group shows what they hold of it);
- disposing of one of A's VMs frees its share for A again, never for B;
- changing reservations is validated: more than a host has free and unreserved is 409 with
  the figures, an unknown host or a bad field 400, a non-admin may not (403/404);
- the CLI sets and clears reservations (through the contract-checking proxy).

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_reservations.py
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import CheckedProxy, PlatformCase, wait_until  # noqa: E402

PW = "reserve-test-pw-1"
HOST = {"BERTH_HOST_VCPUS": "4", "BERTH_HOST_RAM_MB": "4096", "BERTH_HOST_DISK_GB": "100"}


class Reservations(PlatformCase):
    agents = 2
    wait_hosts = 2
    agent_env = HOST

    def group(self, name):
        r = self.api.call("POST", "/v1/groups", {"name": name})
        self.assertEqual(r.status, 201, r)
        return r.json()["group"]

    def member(self, group, name):
        user = self.api.create_user(name, PW)
        r = self.api.call("POST", "/v1/groups/%s/members" % group["id"],
                          {"user": name, "role": "member"})
        self.assertEqual(r.status, 201, r)
        return user

    def reserve(self, group, reservations, api=None):
        return (api or self.api).call("PUT", "/v1/groups/%s/reservations" % group["id"],
                                      {"reservations": reservations})

    def vm(self, user, group, name):
        r = user.call("POST", "/v1/requests",
                      {"template": "unit", "name": name, "group": group["name"]})
        self.assertEqual(r.status, 202, r)
        return r.json()["request"]["vms"][0]["id"]

    def test_reservation_honoured(self):
        self.api.create_template(name="unit", vcpus=1, ram_mb=1024, disk_gb=5, os="debian",
                                 image="debian-12", lease_days=1, requires_approval=False)
        hosts = sorted(self.api.hosts().values(), key=lambda h: h["name"])
        h1, h2 = hosts[0], hosts[1]
        a, b = self.group("alpha"), self.group("beta")
        ua, ub = self.member(a, "ann-a"), self.member(b, "bob-b")

        # Validation: unknown host, bad fields, more than the host has, a non-admin.
        r = self.reserve(a, [{"host": "no-such-host", "ram_mb": 1024}])
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json()["error"]["details"]["field"], "reservations[0].host")
        r = self.reserve(a, [{"host": h1["name"], "ram_mb": -1}])
        self.assertEqual(r.status, 400, r)
        r = self.reserve(a, [{"host": h1["name"]}])
        self.assertEqual(r.status, 400, r)
        r = self.reserve(a, [{"host": h1["name"], "ram_mb": 8192}])
        self.assertEqual(r.status, 409, r)
        d = r.json()["error"]["details"]
        self.assertEqual((d["host"], d["resource"], d["asked"], d["available"]),
                         (h1["id"], "ram_mb", "8192", "4096"))
        r = self.reserve(a, [{"ram_mb": 9000}])  # any host: 8192 in all
        self.assertEqual(r.status, 409, r)
        self.assertEqual(r.json()["error"]["details"]["available"], "8192")
        r = self.reserve(a, [{"host": h1["name"], "ram_mb": 2048}], api=ua)
        self.assertIn(r.status, (403, 404), r)

        r = self.reserve(a, [{"host": h1["name"], "ram_mb": 2048}])
        self.assertEqual(r.status, 200, r)
        res = r.json()["group"]["reservations"]
        self.assertEqual(res, [{"host": h1["id"], "vcpus": 0, "ram_mb": 2048, "disk_gb": 0,
                                "used": {"vcpus": 0, "ram_mb": 0, "disk_gb": 0}}])
        # B may not take it either: 2048 on host-1 is all another group could have asked.
        r = self.reserve(b, [{"host": h1["name"], "ram_mb": 4096}])
        self.assertEqual(r.status, 409, r)
        self.assertEqual(r.json()["error"]["details"]["available"], "2048")

        # B fills the rest: 2 on host-1, 4 on host-2; the seventh finds no valid host.
        b_vms = [self.vm(ub, b, "b%d" % i) for i in range(6)]
        for v in b_vms:
            ub.wait_vm(v, ("ACTIVE",), timeout=120)
        late = self.vm(ub, b, "b-late")
        vm = ub.wait_vm(late, ("ERROR",), timeout=120)
        self.assertIn("no valid host", vm["fault"].lower())
        self.assertIn("reserved: 1", vm["fault"], vm["fault"])

        # A's VMs land, on host-1, from its reservation.
        a_vms = [self.vm(ua, a, "a%d" % i) for i in range(2)]
        for v in a_vms:
            self.assertEqual(ua.wait_vm(v, ("ACTIVE",), timeout=120)["host"], h1["id"])
        used = self.api.get("/v1/groups/" + a["id"])["group"]["reservations"][0]["used"]
        self.assertEqual(used["ram_mb"], 2048)
        # Shrinking below what is held is allowed; growing past the host is not.
        r = self.reserve(a, [{"host": h1["name"], "ram_mb": 3072}])
        self.assertEqual(r.status, 409, r)

        # A disposes of one: B still cannot have it, A can.
        ua.wait_task(ua.dispose(a_vms[0])["id"], timeout=120)
        wait_until(lambda: self.api.get("/v1/groups/" + a["id"])["group"]["reservations"][0]
                   ["used"]["ram_mb"] == 1024, 30, "A's reservation given back")
        late = self.vm(ub, b, "b-late2")
        vm = ub.wait_vm(late, ("ERROR",), timeout=120)
        self.assertIn("reserved: 1", vm["fault"], vm["fault"])
        again = self.vm(ua, a, "a-again")
        self.assertEqual(ua.wait_vm(again, ("ACTIVE",), timeout=120)["host"], h1["id"])

        # Removed, the reservation no longer holds anything back.
        r = self.reserve(a, [])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["group"]["reservations"], [])

    def berth(self, home, *args, stdin=None, code=0):
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        env.update({"BERTH_URL": self.proxy.url, "XDG_CONFIG_HOME": home, "HOME": home})
        r = subprocess.run([self.p.binary("berth")] + list(args), input=stdin, env=env,
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(self.proxy.violations, [], "berth %s" % " ".join(args))
        self.assertEqual(r.returncode, code, "berth %s:\n%s\n%s" % (" ".join(args), r.stdout,
                                                                    r.stderr))
        return r.stdout + r.stderr

    def test_cli_reserve(self):
        self.proxy = CheckedProxy(self.p)
        self.addCleanup(self.proxy.close)
        home = tempfile.mkdtemp(prefix="berth-cli-")
        self.addCleanup(shutil.rmtree, home, ignore_errors=True)
        self.berth(home, "login", "--user", self.p.admin_user, "--password-stdin",
                   stdin=self.p.admin_password + "\n")
        g = self.group("gamma")
        h2 = sorted(self.api.hosts().values(), key=lambda h: h["name"])[1]
        host = h2["name"]
        out = self.berth(home, "groups", "reserve", "gamma", host + ":1,512,0", "*:0,0,1")
        self.assertIn("(any)", out)
        self.assertIn("512", out)
        listed = self.api.get("/v1/groups/" + g["id"])["group"]["reservations"]
        self.assertEqual(sorted((r["host"] or "", r["vcpus"], r["ram_mb"], r["disk_gb"])
                                for r in listed),
                         [("", 0, 0, 1), (h2["id"], 1, 512, 0)])
        out = self.berth(home, "groups", "reserve", "gamma", "nowhere:1,1,1", code=1)
        self.assertIn("reservations[0].host", out)
        self.berth(home, "groups", "reserve", "gamma", "bad-spec", code=2)
        shown = json.loads(self.berth(home, "-o", "json", "groups", "reserve", "gamma", "--clear"))
        self.assertEqual(shown["group"]["reservations"], [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
