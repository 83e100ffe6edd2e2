#!/usr/bin/env python3
"""Group reservations (issue 9, test 4), through the REST API with two small simulated hosts
(4 vCPUs, 4096 MB, 100 GB each) and a 1024 MB template:

- group A reserves 2048 MB on host-1 (named by its name); group B fills everything else (6
  VMs), its next VM ends in ERROR with "no valid host" counting host-1 under "reserved";
- A's VMs still land, on host-1, from its reservation (the group shows what they hold of it);
- disposing of one of A's VMs frees its share for A again, never for B;
- changing reservations is validated: more than a host has free and unreserved is 409 with
  the figures, an unknown host or a bad field 400, a non-admin may not (403/404);
- the CLI sets and clears reservations (through the contract-checking proxy);
- a group's manager asks for a reservation (POST /v1/groups/{id}/allocations with
  reservations): approved at once within the group's auto_growth_max while the hosts have it
  free, otherwise an admin decides, whose approval writes it when it is free then (409 with the
  figures when it is not);
- GET /v1/groups/{id}/capacity: what a member's group may still use (quota left, free on the
  hosts less other groups' reservations, the largest VM one host could take), 404 to others.

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

    def manager(self, group, name):
        user = self.api.create_user(name, PW)
        r = self.api.call("POST", "/v1/groups/%s/members" % group["id"],
                          {"user": name, "role": "manager"})
        self.assertEqual(r.status, 201, r)
        return user

    def test_reservation_allocation_and_capacity(self):
        hosts = sorted(self.api.hosts().values(), key=lambda h: h["name"])
        h1, h2 = hosts[0], hosts[1]
        d, e = self.group("delta"), self.group("epsilon")
        self.addCleanup(self.reserve, d, [])
        self.addCleanup(self.reserve, e, [])
        md, me = self.manager(d, "mia-d"), self.manager(e, "max-e")
        ud, ue = self.member(d, "dan-d"), self.member(e, "eve-e")
        r = self.api.call("PATCH", "/v1/groups/" + d["id"],
                          {"quota": {"vms": 4, "vcpus": 4, "ram_mb": 4096, "disk_gb": 40},
                           "auto_growth_max": {"vms": 8, "vcpus": 8, "ram_mb": 2048,
                                               "disk_gb": 40}})
        self.assertEqual(r.status, 200, r)

        # Capacity before anything is reserved: both hosts free (RAM ratio 1.0, vCPUs 4.0).
        cap = ud.get("/v1/groups/%s/capacity" % d["name"])["capacity"]
        self.assertEqual((cap["group"], cap["hosts"]), (d["id"], 2))
        self.assertEqual(cap["free"], {"vcpus": 32, "ram_mb": 8192, "disk_gb": 200})
        self.assertEqual(cap["largest"], {"vcpus": 16, "ram_mb": 4096, "disk_gb": 100})
        self.assertEqual(cap["left"], {"vms": 4, "vcpus": 4, "ram_mb": 4096, "disk_gb": 40})
        self.assertEqual(cap["usable"], {"vcpus": 4, "ram_mb": 4096, "disk_gb": 40})
        for who in (ue, me):  # another group's people do not learn it exists
            self.assertEqual(who.call("GET", "/v1/groups/%s/capacity" % d["id"]).status, 404)
        self.assertEqual(self.p.http("GET", "/v1/groups/%s/capacity" % d["id"]).status, 401)

        # Within auto_growth_max and free: approved at once, reserved.
        ask = {"reservations": [{"host": h1["name"], "ram_mb": 1024}],
               "justification": "build farm"}
        r = md.call("POST", "/v1/groups/%s/allocations" % d["id"], ask)
        self.assertEqual(r.status, 202, r)
        req = r.json()["request"]
        self.assertEqual((req["kind"], req["state"]), ("allocation", "APPROVED"))
        self.assertEqual(req["allocation"]["reservations"][0]["ram_mb"], 1024)
        res = self.api.get("/v1/groups/" + d["id"])["group"]["reservations"]
        self.assertEqual([(x["host"], x["ram_mb"]) for x in res], [(h1["id"], 1024)])
        # Epsilon's capacity no longer counts delta's unclaimed 1024 MB; delta's own does.
        self.assertEqual(ue.get("/v1/groups/%s/capacity" % e["id"])["capacity"]["free"]
                         ["ram_mb"], 8192 - 1024)
        self.assertEqual(ud.get("/v1/groups/%s/capacity" % d["id"])["capacity"]["free"]
                         ["ram_mb"], 8192)

        # Past auto_growth_max (3072 MB > 2048): an admin decides, and the approval writes it.
        r = md.call("POST", "/v1/groups/%s/allocations" % d["id"],
                    {"reservations": [{"host": h1["name"], "ram_mb": 3072}]})
        self.assertEqual(r.status, 202, r)
        big = r.json()["request"]
        self.assertEqual((big["state"], big["awaiting"]), ("PENDING_APPROVAL", "admin"))
        self.assertEqual(self.api.get("/v1/groups/" + d["id"])["group"]["reservations"][0]
                         ["ram_mb"], 1024)
        # Meanwhile epsilon reserves what would be left on host-1: the approval finds it taken.
        r = self.reserve(e, [{"host": h1["name"], "ram_mb": 2048}])
        self.assertEqual(r.status, 200, r)
        r = self.api.call("POST", "/v1/requests/%s/approve" % big["id"], {})
        self.assertEqual(r.status, 409, r)
        self.assertEqual(r.json()["error"]["details"]["resource"], "ram_mb")
        self.assertEqual(self.api.get("/v1/requests/" + big["id"])["request"]["state"],
                         "PENDING_APPROVAL")
        self.assertEqual(self.reserve(e, []).status, 200)
        r = self.api.call("POST", "/v1/requests/%s/approve" % big["id"], {})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["request"]["state"], "APPROVED")
        res = self.api.get("/v1/groups/" + d["id"])["group"]["reservations"]
        self.assertEqual([(x["host"], x["ram_mb"]) for x in res], [(h1["id"], 3072)])

        # Within the limits but not free (epsilon holds host-2): waits for an admin.
        self.assertEqual(self.reserve(e, [{"host": h2["name"], "ram_mb": 4096}]).status, 200)
        r = md.call("POST", "/v1/groups/%s/allocations" % d["id"],
                    {"reservations": [{"host": h2["name"], "ram_mb": 1024}]})
        self.assertEqual(r.status, 202, r)
        self.assertEqual(r.json()["request"]["state"], "PENDING_APPROVAL")
        # Delta's capacity: host-2 is all epsilon's, host-1 all free for delta.
        cap = ud.get("/v1/groups/%s/capacity" % d["id"])["capacity"]
        self.assertEqual((cap["free"]["ram_mb"], cap["largest"]["ram_mb"]), (4096, 4096))

        # Refused: a member (403), another group's manager (404), bad bodies (400).
        body = {"reservations": [{"host": h1["name"], "ram_mb": 512}]}
        self.assertEqual(ud.call("POST", "/v1/groups/%s/allocations" % d["id"], body).status,
                         403)
        self.assertEqual(me.call("POST", "/v1/groups/%s/allocations" % d["id"], body).status,
                         404)
        for bad in ({"reservations": []},
                    {"reservations": [{"host": h1["name"]}]},
                    {"reservations": [{"host": "nowhere", "ram_mb": 1}]},
                    {"reservations": body["reservations"], "delta": {"vms": 1}}):
            r = md.call("POST", "/v1/groups/%s/allocations" % d["id"], bad)
            self.assertEqual(r.status, 400, (bad, r))

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
        out = self.berth(home, "groups", "capacity", "gamma")
        self.assertIn("no limit", out)
        self.assertIn("ram_mb", out)
        self.assertIn(h2["id"], out)  # its reservations, under the capacity table
        cap = json.loads(self.berth(home, "-o", "json", "groups", "capacity", "gamma"))
        self.assertEqual(cap["capacity"]["name"], "gamma")
        # An admin's ask for reservations of a group without auto_growth_max waits.
        out = self.berth(home, "allocate", "gamma", "--reserve", host + ":1,256,0 *:0,0,1",
                         "--justification", "cli")
        self.assertIn("PENDING_APPROVAL", out)
        self.berth(home, "allocate", "gamma", "--reserve", "x:1", code=2)
        self.berth(home, "allocate", "gamma", "--reserve", host + ":1,1,1", "--vms", "2", code=2)
        out = self.berth(home, "groups", "reserve", "gamma", "nowhere:1,1,1", code=1)
        self.assertIn("reservations[0].host", out)
        self.berth(home, "groups", "reserve", "gamma", "bad-spec", code=2)
        shown = json.loads(self.berth(home, "-o", "json", "groups", "reserve", "gamma", "--clear"))
        self.assertEqual(shown["group"]["reservations"], [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
