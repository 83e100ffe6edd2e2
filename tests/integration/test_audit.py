#!/usr/bin/env python3
"""The audit trail end to end: every mutating call is recorded with its actor, action,
target, result, source and request id, refused calls included; the state changes the
platform makes for a provisioned VM are recorded with service actors; GET /v1/audit filters
and pages; a group's auditor and manager read that group's records only, others get 403;
the stream is trimmed to audit_max_entries.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import CheckedProxy, PlatformCase, wait_until  # noqa: E402

PW = "correct horse battery"
CAP = 300


class Audit(PlatformCase):
    agents = 1
    wait_hosts = 1
    platform_env = {"BERTH_AUDIT_MAX_ENTRIES": str(CAP), "BERTH_AUDIT_TRIM_EVERY_MS": "100",
                    "BERTH_EVENTS_TRIM_EVERY_MS": "200",
                    "BERTH_EVENTS_KEEP_S": "0"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            admin = cls.api
            cls.eng = admin.call("POST", "/v1/groups", {"name": "eng"}).json()["group"]
            cls.sales = admin.call("POST", "/v1/groups", {"name": "sales"}).json()["group"]
            cls.users = {}
            for name, group, role in [("mem", "eng", "member"), ("aud", "eng", "auditor"),
                                      ("mgr", "eng", "manager"), ("oth", "sales", "member")]:
                cls.users[name] = admin.create_user(name, PW)
                r = admin.call("POST", "/v1/groups/%s/members" % group,
                               {"user": name, "role": role})
                assert r.status == 201, r
            # Through the API: a role written into Redis fails the record's MAC.
            cls.users["opr"] = admin.create_user("opr", PW, role="operator")
        except Exception:
            cls.p.dump_logs()
            cls.p.stop()
            raise

    def audit(self, api=None, **query):
        path = "/v1/audit"
        if query:
            path += "?" + urllib.parse.urlencode(query)
        r = (api or self.api).call("GET", path)
        self.assertEqual(r.status, 200, r)
        return r.json()

    def wait_record(self, what, api=None, **query):
        """Poll the trail until a record matches every item of what; that record."""
        def found():
            for rec in self.audit(api, limit=500, **query)["records"]:
                if all(rec.get(k) == v for k, v in what.items()):
                    return rec
            return None
        return wait_until(found, 15, "an audit record %r" % what)

    def test_mutating_calls_are_recorded(self):
        r = self.api.call("POST", "/v1/users", {"username": "alice", "password": PW},
                          headers={"X-Request-Id": "audit-test-create-alice"})
        self.assertEqual(r.status, 201, r)
        rec = self.wait_record({"request_id": "audit-test-create-alice"})
        self.assertEqual(rec["actor"], self.p.admin_user)
        self.assertEqual(rec["action"], "user.create")
        self.assertEqual(rec["target"], "user:alice")
        self.assertEqual(rec["result"], "201")
        self.assertEqual(rec["source"], "127.0.0.1")
        self.assertTrue(rec["at"])
        # A request made and approved: the request's id and group are in its records.
        r = self.users["mgr"].call("POST", "/v1/requests",
                                   {"template": "small", "name": "a1", "group": "eng"})
        self.assertEqual(r.status, 202, r)
        req = r.json()["request"]
        # The gateway's record of the call (the approval records the request's creation
        # too, made for mgr, with result "ok").
        rec = self.wait_record({"action": "request.create", "target": "request:" + req["id"],
                                "result": "202"})
        self.assertEqual(rec["actor"], "mgr")
        self.assertEqual(rec["group"], self.eng["id"])
        self.assertEqual(rec["source"], "127.0.0.1")
        # A group named by name in the path is recorded with its id.
        rec = self.wait_record({"action": "group.members.change", "target": "group:eng"},
                               actor=self.p.admin_user)
        self.assertEqual(rec["group"], self.eng["id"])
        self.assertEqual(rec["result"], "201")
        # Reads are not recorded.
        self.api.get("/v1/vms")
        self.assertEqual(self.audit(action="vm.list")["records"], [])

    def test_refused_calls_are_recorded(self):
        # Anonymous (401), forbidden (403), absent (404), bad body (400), no such route (404).
        r = self.p.http("POST", "/v1/requests", {"template": "small", "name": "x"},
                        headers={"X-Request-Id": "audit-test-anon"})
        self.assertEqual(r.status, 401, r)
        r = self.users["mem"].call("POST", "/v1/templates", {"name": "t"},
                                   headers={"X-Request-Id": "audit-test-forbidden"})
        self.assertEqual(r.status, 403, r)
        gone = "00000000-0000-4000-8000-000000000000"
        r = self.users["mem"].call("DELETE", "/v1/vms/" + gone,
                                   headers={"X-Request-Id": "audit-test-absent"})
        self.assertEqual(r.status, 404, r)
        r = self.users["mem"].call("POST", "/v1/requests", {"bogus": 1},
                                   headers={"X-Request-Id": "audit-test-bad"})
        self.assertEqual(r.status, 400, r)
        want = [("audit-test-anon", "anonymous", "request.create", "401"),
                ("audit-test-forbidden", "mem", "template.create", "403"),
                ("audit-test-absent", "mem", "vm.dispose", "404"),
                ("audit-test-bad", "mem", "request.create", "400")]
        for rid, actor, action, result in want:
            with self.subTest(request_id=rid):
                rec = self.wait_record({"request_id": rid})
                self.assertEqual((rec["actor"], rec["action"], rec["result"]),
                                 (actor, action, result))
        rec = self.wait_record({"request_id": "audit-test-absent"})
        self.assertEqual(rec["target"], "vm:" + gone)

    def test_platform_state_changes_are_recorded(self):
        mem = self.users["mem"]
        req = mem.request("small", "pv")
        vm = req["vms"][0]["id"]
        mem.wait_vm(vm, ("ACTIVE",))
        target = "vm:" + vm
        # The VM made for its requester, in the request's step; its later states by services.
        rec = self.wait_record({"target": target, "actor": "mem"}, target=target)
        self.assertEqual(rec["result"], "ok")
        self.assertTrue(rec["action"].startswith("vm."), rec)
        self.assertEqual(rec["group"], self.eng["id"])

        def by_services():
            recs = self.audit(target=target)["records"]
            return [x for x in recs if x["actor"].startswith("service:")] or None
        recs = wait_until(by_services, 15, "service records of the VM")
        for x in recs:
            self.assertEqual(x["result"], "ok")
            self.assertTrue(x["action"].startswith("vm."), x)
            # Its power changes too carry the VM's group (an auditor of it reads them).
            self.assertEqual(x["group"], self.eng["id"], x)
        # A group is named by its name as well as its id.
        by_name = self.audit(target=target, group="eng")["records"]
        by_id = self.audit(target=target, group=self.eng["id"])["records"]
        self.assertEqual([x["id"] for x in by_name], [x["id"] for x in by_id])
        self.assertTrue(by_name)
        self.assertEqual(self.audit(target=target, group="no-such-group")["records"], [])
        task = req["tasks"][0]["id"]
        self.assertTrue(self.audit(target="task:" + task)["records"])

    def test_filters_and_paging(self):
        for i in range(5):
            r = self.api.call("POST", "/v1/requests/00000000-0000-4000-8000-00000000000%d/approve"
                              % i, {}, headers={"X-Request-Id": "audit-page-%d" % i})
            self.assertIn(r.status, (404,), r)
        self.wait_record({"request_id": "audit-page-4"})
        seen, marker = [], None
        while True:
            q = {"action": "request.approve", "limit": 2}
            if marker:
                q["marker"] = marker
            page = self.audit(**q)
            self.assertLessEqual(len(page["records"]), 2)
            seen += page["records"]
            marker = page["next_marker"]
            if not marker:
                break
        ids = [x["id"] for x in seen]
        self.assertEqual(len(ids), len(set(ids)), "pages overlap")
        rids = [x["request_id"] for x in seen if x["request_id"].startswith("audit-page-")]
        self.assertEqual(rids, ["audit-page-%d" % i for i in (4, 3, 2, 1, 0)], "newest first")
        self.assertTrue(all(x["action"] == "request.approve" for x in seen))
        # Time range: ms and RFC 3339 alike.
        at = [x["at_ms"] for x in seen if x["request_id"] == "audit-page-2"][0]
        recs = self.audit(action="request.approve", **{"from": str(at + 100000)})["records"]
        self.assertEqual(recs, [])
        recs = self.audit(action="request.approve", to="1970-01-02T00:00:00Z")["records"]
        self.assertEqual(recs, [])
        recs = self.audit(actor=self.p.admin_user, action="request.approve",
                          **{"from": str(at - 60000)})["records"]
        self.assertGreaterEqual(len(recs), 5)
        # Unknown parameters and bad values are refused, naming them.
        for query, field in [("colour=red", "colour"), ("limit=0", "limit"),
                             ("marker=abc", "marker"), ("from=yesterday", "from")]:
            r = self.api.call("GET", "/v1/audit?" + query)
            self.assertEqual(r.status, 400, r)
            self.assertEqual(r.json()["error"]["details"]["field"], field)

    def test_auditor_reads_the_group_and_others_are_refused(self):
        mem = self.users["mem"]
        r = mem.call("POST", "/v1/requests", {"template": "small", "name": "sc", "group": "eng"})
        self.assertEqual(r.status, 202, r)
        r = self.users["oth"].call("POST", "/v1/requests",
                                   {"template": "small", "name": "so", "group": "sales"})
        self.assertEqual(r.status, 202, r)
        other = r.json()["request"]["id"]
        for who in ("aud", "mgr"):
            with self.subTest(user=who):
                recs = self.audit(self.users[who], limit=500)["records"]
                self.assertTrue(recs)
                self.assertEqual({x["group"] for x in recs}, {self.eng["id"]})
                self.assertNotIn("request:" + other, {x["target"] for x in recs})
                r = self.users[who].call("GET", "/v1/audit?group=" + self.sales["id"])
                self.assertEqual(r.status, 403, r)
        self.wait_record({"target": "request:" + other})  # the admin reads everything
        for who in ("mem", "oth", "opr"):
            with self.subTest(user=who):
                r = self.users[who].call("GET", "/v1/audit")
                self.assertEqual(r.status, 403, r)
                self.assertEqual(r.json()["error"]["code"], "FORBIDDEN")
        self.assertEqual(self.p.http("GET", "/v1/audit").status, 401)

    def test_event_stream_trimmed_only_below_every_group(self):
        ev = "berth:events"
        # A second consumer group that reads nothing holds the stream at its position P.
        wait_until(lambda: self.p.redis_command("XREVRANGE", ev, "+", "-", "COUNT", "1"), 15,
                   "an event")
        pos = self.p.redis_command("XREVRANGE", ev, "+", "-", "COUNT", "1")[0][0]
        self.p.redis_command("XGROUP", "CREATE", ev, "audit-probe", pos)
        self.addCleanup(self.p.redis_command, "XGROUP", "DESTROY", ev, "audit-probe")
        req = self.users["mem"].request("small", "ev")
        self.users["mem"].wait_vm(req["vms"][0]["id"], ("ACTIVE",))
        first = lambda: self.p.redis_command("XRANGE", ev, "-", "+", "COUNT", "1")[0][0]
        # The meter acknowledges what it read: everything below P goes, P and after stay.
        wait_until(lambda: first() == pos, 15, "the event stream trimmed to the probe's position")
        types = [dict(zip(f[0::2], f[1::2])).get("type")
                 for _, f in self.p.redis_command("XRANGE", ev, pos, "+")]
        self.assertIn("vm.state", types)
        # The probe reads one entry and acknowledges nothing: the stream keeps it.
        got = self.p.redis_command("XREADGROUP", "GROUP", "audit-probe", "c", "COUNT", "1",
                                   "STREAMS", ev, ">")
        held = got[0][1][0][0]
        wait_until(lambda: first() == held, 15, "the stream trimmed to the probe's pending entry")

    def berth(self, home, *args, stdin=None, code=0):
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        env.update({"BERTH_URL": self.proxy.url, "XDG_CONFIG_HOME": home, "HOME": home})
        r = subprocess.run([self.p.binary("berth")] + list(args), input=stdin, env=env,
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(self.proxy.violations, [], "berth %s" % " ".join(args))
        self.assertEqual(r.returncode, code, "berth %s:\n%s\n%s" % (" ".join(args), r.stdout,
                                                                     r.stderr))
        return r

    def test_cli_audit(self):
        self.proxy = CheckedProxy(self.p)
        self.addCleanup(self.proxy.close)
        home = tempfile.mkdtemp(prefix="berth-cli-")
        self.addCleanup(shutil.rmtree, home, ignore_errors=True)
        self.berth(home, "login", "--user", self.p.admin_user, "--password-stdin",
                   stdin=self.p.admin_password + "\n")
        r = self.api.call("POST", "/v1/users", {"username": "clibob", "password": PW},
                          headers={"X-Request-Id": "audit-test-cli"})
        self.assertEqual(r.status, 201, r)
        self.wait_record({"request_id": "audit-test-cli"})
        out = self.berth(home, "audit", "--target", "user:clibob", "--since", "-1h").stdout
        self.assertRegex(out, r"TIME\s+ACTOR\s+ACTION\s+TARGET\s+RESULT")
        self.assertRegex(out, r"%s\s+user.create\s+user:clibob\s+201\s+127.0.0.1\s+audit-test-cli"
                         % self.p.admin_user)
        out = self.berth(home, "-o", "json", "audit", "--action", "user.create", "--limit",
                         "1").stdout
        page = json.loads(out)
        self.assertEqual(len(page["records"]), 1)
        self.assertEqual(page["records"][0]["action"], "user.create")
        self.berth(home, "audit", "--limit", "zero", code=2)

    def test_z_retention_trims_to_the_cap(self):
        # Refused calls are records too: enough of them pass the cap.
        for i in range(CAP + 50):
            self.p.http("DELETE", "/v1/vms/x", headers={"X-Request-Id": "audit-flood-%d" % i})
        self.wait_record({"request_id": "audit-flood-%d" % (CAP + 49)})
        wait_until(lambda: int(self.p.redis_command("XLEN", "berth:audit")) <= CAP, 15,
                   "the trail trimmed to %d entries" % CAP)
        recs = self.audit(limit=500)["records"]
        self.assertNotIn("audit-flood-0", {x["request_id"] for x in recs})


if __name__ == "__main__":
    unittest.main()
