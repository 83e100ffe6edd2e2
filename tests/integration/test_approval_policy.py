#!/usr/bin/env python3
"""The approval policy engine through REST, with every service and one simulated host:

- a member's request under the `manager` policy is approved by the group's manager (not by a
  manager of another group, who does not even see it: 404; not by an auditor: 403);
- `manager_then_admin` needs the manager, then an admin, in that order, each a step of the
  request; the manager cannot take the admin level;
- `conditional`: approved at once below the group's size threshold, escalated to a manager
  above it; a template's stricter policy wins over the group's;
- the approvals inbox (GET /v1/requests?state=PENDING_APPROVAL) per role: exactly what each
  may decide now; the plain list shows what each may read, with filters and paging;
- no self-approval, even for an admin requester; a rejection's reason is shown to the
  requester; each step is an event in berth:events (request.step, request.state);
- the CLI: berth requests --pending, berth approve ID, berth reject ID --reason TEXT.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_approval_policy.py
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import CheckedProxy, PlatformCase  # noqa: E402

PW = "policy-test-pw-1"


class ApprovalPolicy(PlatformCase):
    agents = 1
    wait_hosts = 1
    # Membership changes are seen by the gateway at once (no group-role cache).
    platform_env = {"BERTH_GROUPS_CACHE_MS": "0"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            cls.setup_tenants()
        except Exception:
            cls.p.dump_logs()
            cls.p.stop()
            raise

    @classmethod
    def setup_tenants(cls):
        admin = cls.api
        groups = [("web", {"approval_policy": "manager"}),
                  ("two", {"approval_policy": "manager_then_admin"}),
                  ("cond", {"approval_policy": "conditional", "auto_max_vcpus": 2,
                            "auto_max_ram_mb": 4096}),
                  ("ops", {"approval_policy": "manager"})]
        for name, settings in groups:
            body = dict(settings, name=name)
            r = admin.call("POST", "/v1/groups", body)
            assert r.status == 201, r
            for k, v in settings.items():
                assert r.json()["group"][k] == v, r
        cls.users = {}
        for name in ("mia", "max", "oz", "aud", "ada"):
            cls.users[name] = admin.create_user(name, PW, "admin" if name == "ada" else "user")
        for user, group, role in [("mia", "web", "member"), ("mia", "two", "member"),
                                  ("mia", "cond", "member"), ("max", "web", "manager"),
                                  ("max", "two", "manager"), ("max", "cond", "manager"),
                                  ("oz", "ops", "manager"), ("aud", "web", "auditor")]:
            r = admin.call("POST", "/v1/groups/%s/members" % group, {"user": user, "role": role})
            assert r.status == 201, r

    def ask(self, who, group, template="small", count=1, name="box"):
        r = self.users[who].call("POST", "/v1/requests", {"template": template, "name": name,
                                                          "count": count, "group": group})
        self.assertEqual(r.status, 202, r)
        req = r.json()["request"]
        self.assertEqual(req["kind"], "vm")
        return req

    def decide(self, api, req, approve=True, reason=None):
        path = "/v1/requests/%s/%s" % (req["id"], "approve" if approve else "reject")
        return api.call("POST", path, {"reason": reason} if reason else None)

    def inbox(self, api):
        return {r["id"] for r in api.get("/v1/requests?state=PENDING_APPROVAL")["requests"]}

    def events(self, req_id):
        raw = self.p.redis_command("XRANGE", "berth:events", "-", "+")
        out = []
        for _id, fields in raw:
            e = dict(zip(fields[0::2], fields[1::2]))
            if e.get("request") == req_id and e.get("type", "").startswith("request."):
                out.append(e)
        return out

    def test_manager_policy(self):
        req = self.ask("mia", "web")
        self.assertEqual(req["state"], "PENDING_APPROVAL")
        self.assertEqual((req["policy"], req["awaiting"], req["steps"]), ("manager", "manager", []))
        mia, maxi, oz, aud = (self.users[n] for n in ("mia", "max", "oz", "aud"))
        # The requester, a manager of another group, an auditor of the group: refused.
        self.assertEqual(self.decide(mia, req).status, 403)
        self.assertEqual(self.decide(oz, req).status, 404)
        self.assertEqual(self.decide(aud, req).status, 403)
        self.assertEqual(mia.get("/v1/requests/" + req["id"])["request"]["state"],
                         "PENDING_APPROVAL")
        r = self.decide(maxi, req)
        self.assertEqual(r.status, 200, r)
        done = r.json()["request"]
        self.assertEqual((done["state"], done["decided_by"], done["awaiting"]),
                         ("APPROVED", "max", None))
        self.assertEqual([(s["level"], s["decided_by"], s["decision"]) for s in done["steps"]],
                         [("manager", "max", "approved")])
        self.assertEqual(len(done["tasks"]), 1)
        # The same word again: the same answer.
        self.assertEqual(self.decide(maxi, req).json()["request"]["state"], "APPROVED")

    def test_manager_then_admin_in_order(self):
        req = self.ask("mia", "two", count=2)
        self.assertEqual((req["policy"], req["awaiting"]), ("manager_then_admin", "manager"))
        maxi, ada = self.users["max"], self.users["ada"]
        r = self.decide(maxi, req)
        self.assertEqual(r.status, 200, r)
        mid = r.json()["request"]
        self.assertEqual((mid["state"], mid["awaiting"], mid["tasks"]),
                         ("PENDING_APPROVAL", "admin", []))
        self.assertNotIn(req["id"], self.inbox(maxi))
        self.assertIn(req["id"], self.inbox(ada))
        # The manager cannot take the admin level too.
        self.assertEqual(self.decide(maxi, req, approve=False, reason="second thoughts").status,
                         403)
        r = self.decide(ada, req)
        self.assertEqual(r.status, 200, r)
        done = r.json()["request"]
        self.assertEqual(done["state"], "APPROVED")
        self.assertEqual([(s["level"], s["decided_by"]) for s in done["steps"]],
                         [("manager", "max"), ("admin", "ada")])
        self.assertEqual(len(done["tasks"]), 2)
        # The audit trail: each step as an event, then the state change.
        events = self.events(req["id"])
        self.assertTrue(all(e.get("at_ms") for e in events), events)
        kinds = [(e["type"], e.get("level") or e.get("state")) for e in events]
        self.assertEqual(kinds, [("request.state", "PENDING_APPROVAL"),
                                 ("request.step", "manager"),
                                 ("request.state", "APPROVED")])

    def test_conditional_both_ways(self):
        small = self.ask("mia", "cond", "small", 2)  # 2 vCPUs, 2 GiB in all: under
        self.assertEqual((small["state"], small["policy"]), ("APPROVED", "conditional"))
        self.assertEqual([(s["level"], s["decided_by"]) for s in small["steps"]],
                         [("auto", "policy")])
        big = self.ask("mia", "cond", "medium", 2)  # 4 vCPUs: over
        self.assertEqual((big["state"], big["awaiting"]), ("PENDING_APPROVAL", "manager"))
        self.assertIn(big["id"], self.inbox(self.users["max"]))
        r = self.decide(self.users["max"], big)
        self.assertEqual(r.json()["request"]["state"], "APPROVED", r)
        # The template's policy (large: requires_approval = admin) is the stricter one.
        large = self.ask("mia", "cond", "large")
        self.assertEqual((large["policy"], large["awaiting"]), ("admin", "admin"))
        self.assertEqual(self.decide(self.users["max"], large).status, 403)
        self.assertEqual(self.decide(self.users["ada"], large, False, "not now").status, 200)
        # A template's own policy: stricter than the group's conditional, it applies.
        t = self.api.create_template(name="tiny-mgr", vcpus=1, ram_mb=512, disk_gb=5,
                                     os="debian", image="debian-12", lease_days=1,
                                     approval_policy="manager")
        self.assertEqual(t["approval_policy"], "manager")
        tiny = self.ask("mia", "cond", "tiny-mgr")
        self.assertEqual((tiny["policy"], tiny["awaiting"]), ("manager", "manager"))
        r = self.api.call("POST", "/v1/templates", {"name": "bad-pol", "vcpus": 1, "ram_mb": 512,
                                                    "disk_gb": 5, "os": "debian",
                                                    "image": "debian-12", "lease_days": 1,
                                                    "approval_policy": "boss"})
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json()["error"]["details"]["field"], "approval_policy")
        r = self.api.call("PATCH", "/v1/groups/cond", {"approval_policy": "boss"})
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json()["error"]["details"]["field"], "approval_policy")

    def test_inbox_per_role(self):
        web = self.ask("mia", "web", name="inbox-web")
        two = self.ask("mia", "two", name="inbox-two")
        ops = self.ask("oz", "ops", name="inbox-ops")
        mine = self.ask("ada", "web", name="inbox-admin")  # an admin's own request
        boxes = {n: self.inbox(self.users[n]) for n in ("mia", "max", "oz", "aud", "ada")}
        ours = {web["id"], two["id"], ops["id"], mine["id"]}
        self.assertEqual(boxes["max"] & ours, {web["id"], two["id"], mine["id"]})
        self.assertEqual(boxes["oz"] & ours, set())  # ops' request is oz's own
        self.assertEqual(boxes["mia"] & ours, set())
        self.assertEqual(boxes["aud"] & ours, set())
        # An admin decides either level of anyone's request but their own.
        self.assertEqual(boxes["ada"] & ours, {web["id"], two["id"], ops["id"]})
        r = self.decide(self.users["ada"], mine)
        self.assertEqual(r.status, 403, r)
        self.assertIn("requester", r.json()["error"]["message"])
        # Without the state filter: what each may read.
        seen = {r["id"] for r in self.users["aud"].get("/v1/requests?limit=500")["requests"]}
        self.assertEqual(seen & ours, {web["id"], mine["id"]})
        seen = {r["id"] for r in self.users["oz"].get("/v1/requests?limit=500")["requests"]}
        self.assertEqual(seen & ours, {ops["id"]})
        # Filters and paging.
        listed = self.users["max"].get("/v1/requests?group=two&limit=500")["requests"]
        self.assertIn(two["id"], {r["id"] for r in listed})
        self.assertEqual({r["group"] for r in listed}, {two["group"]})
        listed = self.api.get("/v1/requests?owner=oz&limit=500")["requests"]
        self.assertEqual({r["owner"] for r in listed}, {"oz"})
        self.assertEqual(self.api.get("/v1/requests?group=no-such-group")["requests"], [])
        page, seen_ids, marker = None, [], ""
        for _ in range(100):
            page = self.api.get("/v1/requests?limit=2" + marker)
            seen_ids += [r["id"] for r in page["requests"]]
            if page["next_marker"] is None:
                break
            marker = "&marker=" + page["next_marker"]
        self.assertTrue(ours <= set(seen_ids))
        self.assertEqual(len(seen_ids), len(set(seen_ids)))
        for bad in ("state=ACTIVE", "limit=0", "marker=nope"):
            r = self.api.call("GET", "/v1/requests?" + bad)
            self.assertEqual(r.status, 400, r)

    def test_reject_reason_shown_to_the_requester(self):
        req = self.ask("mia", "web", name="rejected")
        r = self.decide(self.users["max"], req, approve=False, reason="use the shared pool")
        self.assertEqual(r.status, 200, r)
        seen = self.users["mia"].get("/v1/requests/" + req["id"])["request"]
        self.assertEqual((seen["state"], seen["reason"], seen["decided_by"]),
                         ("REJECTED", "use the shared pool", "max"))
        self.assertEqual(seen["steps"][-1]["reason"], "use the shared pool")
        self.assertEqual(seen["steps"][-1]["decision"], "rejected")
        self.assertEqual(self.decide(self.users["ada"], req).status, 409)

    def berth(self, home, *args, stdin=None, code=0):
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        env.update({"BERTH_URL": self.proxy.url, "XDG_CONFIG_HOME": home, "HOME": home})
        r = subprocess.run([self.p.binary("berth")] + list(args), input=stdin, env=env,
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(self.proxy.violations, [], "berth %s" % " ".join(args))
        self.assertEqual(r.returncode, code, "berth %s:\n%s\n%s" % (" ".join(args), r.stdout,
                                                                     r.stderr))
        return r

    def test_cli(self):
        self.proxy = CheckedProxy(self.p)
        self.addCleanup(self.proxy.close)
        home = tempfile.mkdtemp(prefix="berth-cli-")
        self.addCleanup(shutil.rmtree, home, ignore_errors=True)
        one = self.ask("mia", "two", name="cli-one")
        two = self.ask("mia", "web", name="cli-two")
        self.berth(home, "login", "--user", self.p.admin_user, "--password-stdin",
                   stdin=self.p.admin_password + "\n")
        out = self.berth(home, "groups", "create", "cli-pol", "--approval-policy", "conditional",
                         "--auto-max-vcpus", "4", "--auto-max-ram-mb", "8192").stdout
        self.assertRegex(out, r"approval_policy:\s+conditional")
        out = self.berth(home, "-o", "json", "groups", "update", "cli-pol", "--approval-policy",
                         "manager").stdout
        self.assertEqual(json.loads(out)["group"]["auto_max_vcpus"], 4)
        self.assertEqual(json.loads(out)["group"]["approval_policy"], "manager")
        self.berth(home, "login", "--user", "max", "--password-stdin", stdin=PW + "\n")
        out = self.berth(home, "requests", "--pending").stdout
        self.assertIn(one["id"], out)
        self.assertIn(two["id"], out)
        self.assertIn("AWAITING", out.splitlines()[0])
        pending = json.loads(self.berth(home, "-o", "json", "requests", "--pending",
                                        "--group", "web").stdout)["requests"]
        self.assertIn(two["id"], {r["id"] for r in pending})
        self.assertEqual({r["awaiting"] for r in pending}, {"manager"})
        out = self.berth(home, "approve", one["id"]).stdout
        self.assertIn("waits for the admin level", out)
        out = self.berth(home, "reject", two["id"], "--reason", "not this quarter").stdout
        self.assertIn("REJECTED by max", out)
        self.assertNotIn(one["id"], self.berth(home, "requests", "--pending").stdout)
        self.berth(home, "reject", one["id"], code=2)  # a reason is required
        # The same word again answers the same; the admin level is not the manager's.
        self.assertIn("waits for the admin level", self.berth(home, "approve", one["id"]).stdout)
        r = self.berth(home, "reject", one["id"], "--reason", "changed my mind", code=1)
        self.assertIn("FORBIDDEN", r.stderr)
        self.berth(home, "requests", "--pending", "--state", "APPROVED", code=2)
        seen = self.users["mia"].get("/v1/requests/" + two["id"])["request"]
        self.assertEqual(seen["reason"], "not this quarter")


if __name__ == "__main__":
    unittest.main()
