#!/usr/bin/env python3
"""Onboarding and allocation requests (issue 9, test 6), through REST with every service and
one simulated host:

- onboarding: a user asks for a group (POST /v1/onboarding); it waits for an admin (in the
  admin's inbox, filterable by kind, not in the asker's); the asker cannot approve it; the
  admin's approval creates the group with the quota, cost centre and charging model asked
  for and makes the asker its manager; a rejection shows its reason and creates nothing; a
  name already taken is refused at submission and again at approval (the request stays
  pending);
- allocation: a group's manager asks for more quota (POST /v1/groups/{id}/allocations): within
  the group's auto_growth_max and the platform's free capacity it is approved at once and the
  quota raised; beyond either it waits for an admin, whose approval applies it;
- who may ask: the group's members and auditors are refused (403), others do not see the
  group (404), and a refused call changes nothing;
- every step is on record: the audit trail has the API calls, the request's state changes;
- group usage (GET /v1/usage?group=) for managers, auditors and admins only;
- deleting a group removes its usage counters, its members' ones included;
- the CLI: berth onboard, berth allocate, berth usage --group.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_onboarding.py
"""

import json
import os
import subprocess
import sys
import tempfile
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import CheckedProxy, PlatformCase, wait_until  # noqa: E402

PW = "onboard-test-pw-1"
QUOTA = {"vms": 4, "vcpus": 4, "ram_mb": 4096, "disk_gb": 40}


class Onboarding(PlatformCase):
    agents = 1
    wait_hosts = 1
    # Membership changes (an approved onboarding makes a manager) are seen at once.
    platform_env = {"BERTH_GROUPS_CACHE_MS": "0"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            cls.users = {}
            for name in ("ann", "bob", "mgr", "mem", "aud"):
                cls.users[name] = cls.api.create_user(name, PW)
            # A group to grow: mgr manages it, mem and aud are its member and auditor.
            r = cls.api.call("POST", "/v1/groups", {
                "name": "grow", "quota": {"vms": 2, "vcpus": 2, "ram_mb": 2048, "disk_gb": 20},
                "auto_growth_max": {"vms": 4, "vcpus": 4, "ram_mb": 4096, "disk_gb": 40}})
            assert r.status == 201, r
            cls.grow = r.json()["group"]
            for user, role in (("mgr", "manager"), ("mem", "member"), ("aud", "auditor")):
                r = cls.api.call("POST", "/v1/groups/grow/members", {"user": user, "role": role})
                assert r.status == 201, r
        except Exception:
            cls.p.dump_logs()
            cls.p.stop()
            raise

    # -- helpers --------------------------------------------------------------------------

    def onboard(self, who, name, **extra):
        body = {"name": name, "cost_centre": "CC-42", "quota": QUOTA,
                "justification": "a new business unit"}
        body.update(extra)
        return self.users[who].call("POST", "/v1/onboarding", body)

    def decide(self, api, req_id, approve=True, reason=None):
        path = "/v1/requests/%s/%s" % (req_id, "approve" if approve else "reject")
        return api.call("POST", path, {"reason": reason} if reason else None)

    def inbox(self, api, kind=None):
        path = "/v1/requests?state=PENDING_APPROVAL" + ("&kind=" + kind if kind else "")
        return {r["id"]: r for r in api.get(path)["requests"]}

    def group(self, ref):
        return self.api.get("/v1/groups/" + ref)["group"]

    def allocate(self, who, body, group="grow"):
        return self.users[who].call("POST", "/v1/groups/%s/allocations" % group, body)

    def audit(self, **query):
        return self.api.get("/v1/audit?" + urllib.parse.urlencode(dict(query, limit=500)))["records"]

    def wait_audit(self, what, **query):
        def found():
            for rec in self.audit(**query):
                if all(rec.get(k) == v for k, v in what.items()):
                    return rec
            return None
        return wait_until(found, 15, "an audit record %r" % what)

    def free_capacity(self):
        """What the platform can still promise: capacity of the hosts not DISABLED minus
        every group's quota (or usage when it has none), as allocations.h defines it."""
        cap = {"vcpus": 0, "ram_mb": 0, "disk_gb": 0}
        for h in self.api.hosts().values():
            if h["state"] != "DISABLED":
                for k in cap:
                    cap[k] += h["capacity"][k]
        marker = None
        while True:
            page = self.api.get("/v1/groups?limit=500" + ("&marker=" + marker if marker else ""))
            for g in page["groups"]:
                promised = g["quota"] or self.group(g["id"])["usage"]
                for k in cap:
                    cap[k] -= promised[k]
            marker = page["next_marker"]
            if not marker:
                return cap

    # -- onboarding -----------------------------------------------------------------------

    def test_onboarding_approved(self):
        ann, admin = self.users["ann"], self.api
        r = self.onboard("ann", "payments", charging_model="reservation")
        self.assertEqual(r.status, 202, r)
        req = r.json()["request"]
        self.assertEqual((req["kind"], req["state"], req["policy"], req["awaiting"]),
                         ("onboarding", "PENDING_APPROVAL", "admin", "admin"))
        self.assertEqual(req["onboarding"]["name"], "payments")
        self.assertEqual(req["onboarding"]["quota"], QUOTA)
        self.assertEqual(req["onboarding"]["charging_model"], "reservation")
        self.assertIsNone(req["group"])
        # Waiting for an admin: in the admin's inbox (also by kind), not in the asker's;
        # the asker cannot approve it, another user does not see it.
        self.assertIn(req["id"], self.inbox(admin))
        self.assertIn(req["id"], self.inbox(admin, "onboarding"))
        self.assertNotIn(req["id"], self.inbox(admin, "allocation"))
        self.assertNotIn(req["id"], self.inbox(ann))
        self.assertEqual(self.decide(ann, req["id"]).status, 403)
        self.assertEqual(self.decide(self.users["bob"], req["id"]).status, 404)
        self.assertEqual(self.users["bob"].call("GET", "/v1/requests/" + req["id"]).status, 404)
        self.assertEqual(admin.call("GET", "/v1/groups/payments").status, 404)
        r = self.decide(admin, req["id"])
        self.assertEqual(r.status, 200, r)
        done = r.json()["request"]
        self.assertEqual((done["state"], done["decided_by"]), ("APPROVED", self.p.admin_user))
        self.assertEqual([(s["level"], s["decision"]) for s in done["steps"]],
                         [("admin", "approved")])
        # The group as asked, with the asker its manager (who may now manage its members).
        g = ann.get("/v1/groups/payments")["group"]
        self.assertEqual(done["group"], g["id"])
        self.assertEqual((g["quota"], g["cost_centre"], g["charging_model"]),
                         (QUOTA, "CC-42", "reservation"))
        members = ann.get("/v1/groups/payments/members")["members"]
        self.assertEqual([(m["user"], m["role"]) for m in members], [("ann", "manager")])
        r = ann.call("POST", "/v1/groups/payments/members", {"user": "bob", "role": "member"})
        self.assertEqual(r.status, 201, r)
        # Approving again answers the same; the name is taken now.
        r = self.decide(admin, req["id"])
        self.assertEqual((r.status, r.json()["request"]["group"]), (200, g["id"]))
        r = self.onboard("bob", "payments")
        self.assertEqual(r.status, 409, r)
        self.assertEqual(r.json()["error"]["details"]["field"], "name")
        # On record: the calls, and the request's state changes made for who asked/decided.
        rec = self.wait_audit({"action": "onboarding.create", "actor": "ann"})
        self.assertEqual(rec["result"], "202")
        # The gateway's record of the call (the approval writes one of its own, result "ok").
        rec = self.wait_audit({"action": "request.approve", "result": "200",
                               "target": "request:" + req["id"]})
        self.assertEqual(rec["actor"], self.p.admin_user)
        steps = [(rec["action"], rec["actor"]) for rec in self.audit(target="request:" + req["id"])
                 if rec["result"] == "ok"]
        self.assertEqual(sorted(steps), sorted([("request.submit", "ann"),
                                                ("request.approve", self.p.admin_user)]), steps)

    def test_onboarding_rejected(self):
        r = self.onboard("ann", "ghost")
        self.assertEqual(r.status, 202, r)
        req = r.json()["request"]
        r = self.decide(self.api, req["id"], approve=False, reason="no budget this year")
        self.assertEqual(r.status, 200, r)
        seen = self.users["ann"].get("/v1/requests/" + req["id"])["request"]
        self.assertEqual((seen["state"], seen["reason"]), ("REJECTED", "no budget this year"))
        self.assertIsNone(seen["group"])
        self.assertEqual(self.api.call("GET", "/v1/groups/ghost").status, 404)
        self.assertEqual(self.p.redis_command("EXISTS", "berth:group-name:ghost"), 0)
        self.assertEqual(self.decide(self.api, req["id"]).status, 409)
        # The gateway's record of the call, with the status it answered (the approval writes
        # one of its own, result "ok", for the state change).
        rec = self.wait_audit({"action": "request.reject", "target": "request:" + req["id"],
                               "result": "200"})
        self.assertEqual(rec["actor"], self.p.admin_user)

    def test_onboarding_name_taken_at_approval(self):
        first = self.onboard("ann", "twin").json()["request"]
        second = self.onboard("bob", "twin").json()["request"]
        self.assertEqual(self.decide(self.api, first["id"]).status, 200)
        r = self.decide(self.api, second["id"])
        self.assertEqual(r.status, 409, r)
        still = self.api.get("/v1/requests/" + second["id"])["request"]
        self.assertEqual(still["state"], "PENDING_APPROVAL")
        members = self.api.get("/v1/groups/twin/members")["members"]
        self.assertEqual([m["user"] for m in members], ["ann"])  # bob made nothing
        self.assertEqual(self.decide(self.api, second["id"], False, "name taken").status, 200)

    def test_onboarding_input_errors(self):
        for body, field in [({"name": "x1", "quota": QUOTA}, "justification"),
                            ({"name": "x1", "justification": "j"}, "quota"),
                            ({"name": "Bad Name", "quota": QUOTA, "justification": "j"}, "name"),
                            ({"name": "x1", "quota": QUOTA, "justification": "j",
                              "charging_model": "free"}, "charging_model"),
                            ({"name": "x1", "quota": {"vms": -1}, "justification": "j"}, "quota")]:
            with self.subTest(field=field):
                r = self.users["ann"].call("POST", "/v1/onboarding", body)
                self.assertEqual(r.status, 400, r)
                self.assertEqual(r.json()["error"]["details"]["field"], field)
        r = self.onboard("ann", "default")  # a group that exists
        self.assertEqual(r.status, 409, r)
        self.assertEqual(self.p.http("POST", "/v1/onboarding", {"name": "x"}).status, 401)

    # -- allocation -----------------------------------------------------------------------

    def test_allocation_automatic_then_manual(self):
        mgr, admin = self.users["mgr"], self.api
        before = self.group("grow")["quota"]
        # Within auto_growth_max and the free capacity: approved at once, quota raised.
        r = self.allocate("mgr", {"delta": {"vms": 1, "vcpus": 1, "ram_mb": 1024, "disk_gb": 10},
                                  "justification": "peak season"})
        self.assertEqual(r.status, 202, r)
        req = r.json()["request"]
        raised = {"vms": before["vms"] + 1, "vcpus": before["vcpus"] + 1,
                  "ram_mb": before["ram_mb"] + 1024, "disk_gb": before["disk_gb"] + 10}
        self.assertEqual((req["kind"], req["state"], req["group"]),
                         ("allocation", "APPROVED", self.grow["id"]))
        self.assertEqual([(s["level"], s["decided_by"]) for s in req["steps"]],
                         [("auto", "policy")])
        self.assertEqual((req["allocation"]["previous"], req["allocation"]["applied"]),
                         (before, raised))
        self.assertEqual(self.group("grow")["quota"], raised)
        # Beyond auto_growth_max: waits for an admin, the quota unchanged until then.
        r = self.allocate("mgr", {"quota": {"vms": 8, "vcpus": 8, "ram_mb": 8192,
                                            "disk_gb": 80}})
        self.assertEqual(r.status, 202, r)
        big = r.json()["request"]
        self.assertEqual((big["state"], big["awaiting"], big["policy"]),
                         ("PENDING_APPROVAL", "admin", "admin"))
        self.assertEqual(self.group("grow")["quota"], raised)
        self.assertIn(big["id"], self.inbox(admin, "allocation"))
        self.assertNotIn(big["id"], self.inbox(mgr))
        self.assertIn(big["id"], {r["id"] for r in mgr.get("/v1/requests?kind=allocation")["requests"]})
        self.assertEqual(self.decide(mgr, big["id"]).status, 403)  # not their own
        r = self.decide(admin, big["id"])
        self.assertEqual(r.status, 200, r)
        done = r.json()["request"]
        want = {"vms": 8, "vcpus": 8, "ram_mb": 8192, "disk_gb": 80}
        self.assertEqual((done["state"], done["allocation"]["applied"]), ("APPROVED", want))
        self.assertEqual(self.group("grow")["quota"], want)
        # A rejected one changes nothing and says why.
        r = self.allocate("mgr", {"delta": {"vcpus": 64}})
        pending = r.json()["request"]
        self.assertEqual(pending["state"], "PENDING_APPROVAL")
        r = self.decide(admin, pending["id"], approve=False, reason="no room")
        self.assertEqual(r.json()["request"]["reason"], "no room")
        self.assertEqual(self.group("grow")["quota"], want)
        # On record: the automatic approval's state change is made for the asker.
        rec = self.wait_audit({"action": "group.allocate", "actor": "mgr"})
        self.assertEqual(rec["result"], "202")
        rec = self.wait_audit({"action": "request.approve", "target": "request:" + big["id"]})
        self.assertEqual(rec["actor"], self.p.admin_user)
        rec = self.wait_audit({"action": "request.create", "target": "request:" + req["id"],
                               "result": "ok"})  # the approval's state change, not the call
        self.assertEqual(rec["actor"], "mgr")
        # Give the capacity back for the other tests.
        r = admin.call("PATCH", "/v1/groups/grow", {"quota": before})
        self.assertEqual(r.status, 200, r)

    def test_allocation_beyond_free_capacity_waits(self):
        admin = self.api
        r = admin.call("POST", "/v1/groups", {
            "name": "roomy", "quota": {"vms": 1, "vcpus": 1, "ram_mb": 512, "disk_gb": 1},
            "auto_growth_max": {"vms": 100000, "vcpus": 100000, "ram_mb": 1 << 40,
                                "disk_gb": 1 << 40}})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(admin.call("POST", "/v1/groups/roomy/members",
                                    {"user": "bob", "role": "manager"}).status, 201)
        free = self.free_capacity()
        self.assertGreater(free["vcpus"], 1, free)
        # All of the free vCPUs (its own 1 is already promised): approved at once.
        fits = {"vms": 1, "vcpus": 1 + free["vcpus"], "ram_mb": 512, "disk_gb": 1}
        r = self.allocate("bob", {"quota": fits}, "roomy")
        self.assertEqual(r.json()["request"]["state"], "APPROVED", r)
        # One more vCPU than the platform has: within auto_growth_max, still an admin's.
        more = dict(fits, vcpus=fits["vcpus"] + 1)
        r = self.allocate("bob", {"quota": more}, "roomy")
        self.assertEqual(r.json()["request"]["state"], "PENDING_APPROVAL", r)
        self.assertEqual(self.group("roomy")["quota"], fits)
        self.assertEqual(self.decide(admin, r.json()["request"]["id"], False, "full").status, 200)
        # Give the capacity back for the other tests.
        r = admin.call("PATCH", "/v1/groups/roomy", {"quota": {"vms": 1, "vcpus": 1,
                                                               "ram_mb": 512, "disk_gb": 1}})
        self.assertEqual(r.status, 200, r)

    def test_allocation_who_may_ask(self):
        before = self.group("grow")
        body = {"delta": {"vms": 1}}
        for who, status in (("mem", 403), ("aud", 403), ("bob", 404), ("ann", 404)):
            with self.subTest(who=who):
                self.assertEqual(self.allocate(who, body).status, status)
        self.assertEqual(self.p.http("POST", "/v1/groups/grow/allocations", body).status, 401)
        self.assertEqual(self.group("grow")["version"], before["version"])
        # Input: exactly one of quota and delta.
        for body in ({}, {"quota": QUOTA, "delta": QUOTA}, {"delta": {"vms": -1}},
                     {"quota": {"cpus": 1}}):
            with self.subTest(body=body):
                r = self.allocate("mgr", body)
                self.assertEqual(r.status, 400, r)
                self.assertIn(r.json()["error"]["details"]["field"], ("quota", "delta"))
        # A group without a quota has no limit to increase.
        r = self.api.call("POST", "/v1/groups/default/allocations", {"delta": {"vms": 1}})
        self.assertEqual(r.status, 409, r)
        self.assertEqual(self.group("grow")["version"], before["version"])

    def test_auto_growth_max_set_by_admin_only(self):
        r = self.users["mgr"].call("PATCH", "/v1/groups/grow",
                                   {"auto_growth_max": {"vms": 99}})
        self.assertEqual(r.status, 403, r)
        r = self.api.call("POST", "/v1/groups", {"name": "limits", "charging_model": "allocation"})
        self.assertEqual(r.status, 201, r)
        self.assertIsNone(r.json()["group"]["auto_growth_max"])
        r = self.api.call("PATCH", "/v1/groups/limits",
                          {"auto_growth_max": {"vms": 3}, "charging_model": "reservation"})
        self.assertEqual(r.status, 200, r)
        g = r.json()["group"]
        self.assertEqual((g["auto_growth_max"]["vms"], g["charging_model"]), (3, "reservation"))

    # -- usage and deletion ---------------------------------------------------------------

    def test_group_usage_and_deletion(self):
        admin = self.api
        r = admin.call("POST", "/v1/groups", {"name": "metered"})
        self.assertEqual(r.status, 201, r)
        gid = r.json()["group"]["id"]
        for user, role in (("mgr", "manager"), ("mem", "member"), ("aud", "auditor")):
            self.assertEqual(admin.call("POST", "/v1/groups/metered/members",
                                        {"user": user, "role": role}).status, 201)
        mem = self.users["mem"]
        r = mem.call("POST", "/v1/requests", {"template": "small", "name": "meter-me",
                                              "group": "metered"})
        self.assertEqual(r.status, 202, r)
        vm = r.json()["request"]["vms"][0]["id"]
        mem.wait_vm(vm, ("ACTIVE",))

        def group_usage(api):
            r = api.call("GET", "/v1/usage?group=metered")
            self.assertEqual(r.status, 200, r)
            return {u["vm"] for u in r.json()["usage"]}
        wait_until(lambda: vm in group_usage(self.users["mgr"]), 20, "the VM in group usage")
        self.assertIn(vm, group_usage(self.users["aud"]))
        self.assertIn(vm, group_usage(admin))
        self.assertEqual(mem.call("GET", "/v1/usage?group=metered").status, 403)
        self.assertEqual(self.users["bob"].call("GET", "/v1/usage?group=metered").status, 404)
        self.assertEqual(self.users["bob"].call("GET", "/v1/usage?group=nosuch").status, 404)
        # Another group's usage does not show it.
        self.assertNotIn(vm, {u["vm"] for u in self.users["mgr"].get(
            "/v1/usage?group=grow")["usage"]})
        # Dispose, empty the group, delete it: its usage counters go with it.
        mem.wait_task(mem.dispose(vm)["id"])
        for user in ("mgr", "mem", "aud"):
            self.assertEqual(admin.call("DELETE", "/v1/groups/metered/members/" + user).status,
                             200)
        user_key = "berth:group-user-usage:%s:mem" % gid
        self.assertEqual(self.p.redis_command("EXISTS", user_key), 1)
        r = admin.call("DELETE", "/v1/groups/metered")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.p.redis_command("EXISTS", user_key,
                                              "berth:group-usage:{%s}" % gid), 0)

    # -- CLI ------------------------------------------------------------------------------

    def test_cli(self):
        with CheckedProxy(self.p) as proxy, tempfile.TemporaryDirectory() as home:
            env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
            env.update({"BERTH_URL": proxy.url, "XDG_CONFIG_HOME": home, "HOME": home})

            def berth(*args, stdin=None, code=0):
                r = subprocess.run([self.p.binary("berth")] + list(args), env=env, input=stdin,
                                   capture_output=True, text=True, timeout=60)
                self.assertEqual(proxy.violations, [], "berth %s" % " ".join(args))
                self.assertEqual(r.returncode, code, "berth %s:\n%s\n%s" % (
                    " ".join(args), r.stdout, r.stderr))
                return r
            berth("login", "--user", "ann", "--password-stdin", stdin=PW + "\n")
            r = berth("-o", "json", "onboard", "clientele", "--cost-centre", "CC-9", "--vms", "2",
                      "--vcpus", "2", "--ram-mb", "2048", "--disk-gb", "20",
                      "--justification", "a new team")
            req = json.loads(r.stdout)["request"]
            self.assertEqual((req["kind"], req["onboarding"]["name"]), ("onboarding", "clientele"))
            self.assertEqual(self.decide(self.api, req["id"]).status, 200)
            r = berth("-o", "json", "allocate", "clientele", "--vcpus", "+1")
            alloc = json.loads(r.stdout)["request"]
            self.assertEqual((alloc["kind"], alloc["allocation"]["delta"]["vcpus"]),
                             ("allocation", 1))
            r = berth("allocate", "clientele", "--vms", "5")
            self.assertIn("PENDING_APPROVAL", r.stdout)
            pending = self.api.get("/v1/requests?state=PENDING_APPROVAL&kind=allocation")
            asked = [p["allocation"]["quota"] for p in pending["requests"]
                     if p["group"] == req["id"] or p["name"] == "clientele"]
            # New values: the ones not named keep the group's quota.
            self.assertIn({"vms": 5, "vcpus": 2, "ram_mb": 2048, "disk_gb": 20}, asked)
            berth("allocate", "clientele", "--vms", "5", "--vcpus", "+1", code=2)
            berth("usage", "--group", "clientele")
            r = berth("allocate", "grow", "--vms", "+1", code=1)
            self.assertIn("no such group", r.stderr)
            # An admin lets the group grow by itself, and sees the allocations to decide.
            berth("login", "--user", self.p.admin_user, "--password-stdin",
                  stdin=self.p.admin_password + "\n")
            r = berth("-o", "json", "groups", "update", "clientele", "--auto-growth-max-vcpus",
                      "10", "--charging-model", "reservation")
            g = json.loads(r.stdout)["group"]
            self.assertEqual((g["auto_growth_max"]["vcpus"], g["charging_model"]),
                             (10, "reservation"))
            r = berth("requests", "--pending", "--kind", "allocation")
            self.assertIn("KIND", r.stdout.splitlines()[0])
            self.assertIn("allocation", r.stdout)
            self.assertNotIn("onboarding", r.stdout)

if __name__ == "__main__":
    unittest.main()
