#!/usr/bin/env python3
"""Group budgets through the REST API and the CLI, with every service, two meters and one
simulated host. Prices are set high so that a VM running for a few seconds spends a budget:

- who may read and set a budget (the group's manager and auditor read it, its manager sets it;
  a member is told 403, a stranger 404), and every bad field refused with nothing stored;
- each threshold the month's charges reach is raised once, as one `budget.threshold` event in
  the event stream and one webhook delivery, however many looks two meters take;
- `spent` is what GET /v1/chargeback reports for the month up to the meter's look;
- the hard stop refuses a new VM request with 403 BUDGET_EXCEEDED and creates nothing; a new
  amount lifts it at once and starts the month's alerts afresh; without a hard stop requests go
  on; a removed budget is gone (404) and removing it again answers the same;
- `berth budget set|show|delete`.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_budget.py
"""

import calendar
import datetime
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import Api, CheckedProxy, PlatformCase, wait_until  # noqa: E402

PW = "budget-pass-1"
SECRET = "lab-secret-0123456789"
# About 121 minor units per ms for a running tiny VM: a budget of AMOUNT is spent in ~2.5 s.
CARD = {"currency": "EUR", "vcpu_hour": 360000000000, "ram_gb_hour": 72000000000,
        "disk_gb_hour": 3600000000, "templates": {"tiny": 86400000},
        "factors": {"running": 1000, "stopped": 400, "shelved": 400, "expired": 400}}
AMOUNT = 300000


def ms(text):
    """Unix ms of an RFC 3339 UTC time the API wrote."""
    t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return round(t.timestamp() * 1000)


class Receiver:
    """A loopback HTTP server that answers 204 and keeps each POSTed body (JSON)."""

    def __init__(self):
        self.bodies = []
        self.lock = threading.Lock()
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with rec.lock:
                    rec.bodies.append(json.loads(body))
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d/lab" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def thresholds(self):
        with self.lock:
            return sorted(int(b["data"]["threshold"]) for b in self.bodies
                          if b["event"] == "budget.threshold")


class Budget(PlatformCase):
    agents = 1
    wait_hosts = 1
    instances = {"meter": 2}
    platform_env = {"BERTH_BUDGET_CHECK_MS": "200", "BERTH_WEBHOOK_BASE_DELAY_MS": "200"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            cls.rx = Receiver()
            admin = cls.api
            admin.create_template(name="tiny", vcpus=1, ram_mb=512, disk_gb=10, os="debian",
                                  image="debian-12", lease_days=1, requires_approval=False)
            r = admin.call("POST", "/v1/rates", CARD)
            assert r.status == 201, r
            cls.gid = {}
            for name in ("lab", "other"):
                r = admin.call("POST", "/v1/groups", {"name": name})
                assert r.status == 201, r
                cls.gid[name] = r.json()["group"]["id"]
            for user, group, role in [("boss", "lab", "manager"), ("aud", "lab", "auditor"),
                                      ("pleb", "lab", "member"), ("out", "other", "member")]:
                r = admin.call("POST", "/v1/users", {"username": user, "password": PW})
                assert r.status == 201, r
                r = admin.call("POST", "/v1/groups/%s/members" % group,
                               {"user": user, "role": role})
                assert r.status == 201, r
            cls.u = {name: Api(cls.p, name, PW) for name in ("boss", "aud", "pleb", "out")}
            r = cls.u["boss"].call("PUT", "/v1/groups/lab/webhook",
                                   {"url": cls.rx.url, "secret": SECRET})
            assert r.status == 200, r
        except Exception:
            cls.p.dump_logs()
            cls.p.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        if hasattr(cls, "rx"):
            cls.rx.close()
        super().tearDownClass()

    def assertError(self, r, status, code, field=None):
        self.assertEqual(r.status, status, r)
        err = r.json()["error"]
        self.assertEqual(err["code"], code, err)
        if field:
            self.assertEqual(err["details"].get("field"), field, err)
        return err

    def budget(self, who="boss"):
        r = self.u[who].call("GET", "/v1/groups/lab/budget")
        self.assertEqual(r.status, 200, r)
        return r.json()["budget"]

    def request(self, name):
        return self.u["pleb"].call("POST", "/v1/requests",
                                   {"template": "tiny", "name": name, "group": "lab"})

    def threshold_events(self):
        """The budget.threshold entries of the event stream for lab: [threshold, ...]."""
        entries = self.p.redis_command("XRANGE", "berth:events", "-", "+")
        out = []
        for _id, fields in entries:
            f = dict(zip(fields[::2], fields[1::2]))
            if f.get("type") == "budget.threshold" and f.get("group") == self.gid["lab"]:
                out.append(int(f["threshold"]))
        return sorted(out)

    def month_start_s(self):
        now = datetime.datetime.now(datetime.timezone.utc)
        return calendar.timegm((now.year, now.month, 1, 0, 0, 0))

    def chargeback_total(self, to_s):
        r = self.u["boss"].call("GET", "/v1/chargeback?group=lab&from=%d&to=%d&by=vm" %
                                (self.month_start_s(), to_s))
        self.assertEqual(r.status, 200, r)
        return r.json()["total"]

    def test_1_who_may_and_bad_fields(self):
        key = "berth:budget:{%s}" % self.gid["lab"]
        self.assertError(self.u["boss"].call("GET", "/v1/groups/lab/budget"), 404, "NOT_FOUND")
        self.assertError(self.u["pleb"].call("PUT", "/v1/groups/lab/budget", {"amount": 5}),
                         403, "FORBIDDEN")
        self.assertError(self.u["aud"].call("PUT", "/v1/groups/lab/budget", {"amount": 5}),
                         403, "FORBIDDEN")
        self.assertError(self.u["pleb"].call("GET", "/v1/groups/lab/budget"), 403, "FORBIDDEN")
        self.assertError(self.u["out"].call("GET", "/v1/groups/lab/budget"), 404, "NOT_FOUND")
        self.assertError(self.u["out"].call("PUT", "/v1/groups/lab/budget", {"amount": 5}),
                         404, "NOT_FOUND")
        self.assertError(self.u["out"].call("DELETE", "/v1/groups/lab/budget"), 404,
                         "NOT_FOUND")
        for body, field in [({}, "amount"), ({"amount": 0}, "amount"),
                            ({"amount": 10 ** 15 + 1}, "amount"), ({"amount": "5"}, "amount"),
                            ({"amount": 5, "thresholds": [100, 50]}, "thresholds"),
                            ({"amount": 5, "thresholds": [50, 50]}, "thresholds"),
                            ({"amount": 5, "thresholds": [0]}, "thresholds"),
                            ({"amount": 5, "thresholds": [1001]}, "thresholds"),
                            ({"amount": 5, "thresholds": list(range(1, 12))}, "thresholds"),
                            ({"amount": 5, "thresholds": "80"}, "thresholds"),
                            ({"amount": 5, "hard_stop": "yes"}, "hard_stop"),
                            ({"amount": 5, "version": 0}, "version"),
                            ({"amount": 5, "bogus": 1}, "bogus")]:
            with self.subTest(body=body):
                self.assertError(self.u["boss"].call("PUT", "/v1/groups/lab/budget", body),
                                 400, "BAD_REQUEST", field)
        self.assertEqual(self.p.redis_command("EXISTS", key), 0, "a refused budget was stored")
        self.assertError(self.u["boss"].call("GET", "/v1/groups/lab/budget"), 404, "NOT_FOUND")
        self.assertError(self.api.call("PUT", "/v1/groups/nosuch/budget", {"amount": 5}), 404,
                         "NOT_FOUND")

    def test_2_thresholds_once_and_hard_stop(self):
        r = self.u["boss"].call("PUT", "/v1/groups/lab/budget",
                                {"amount": AMOUNT, "thresholds": [50, 100], "hard_stop": True})
        self.assertEqual(r.status, 200, r)
        b = r.json()["budget"]
        self.assertEqual((b["group"], b["amount"], b["thresholds"], b["hard_stop"], b["blocked"],
                          b["alerts"], b["currency"], b["version"], b["updated_by"]),
                         (self.gid["lab"], AMOUNT, [50, 100], True, False, [], "EUR", 1, "boss"))
        self.assertEqual(b["month"], datetime.datetime.now(datetime.timezone.utc)
                         .strftime("%Y-%m"))
        self.assertEqual(self.budget("aud")["amount"], AMOUNT)

        r = self.request("b1")
        self.assertEqual(r.status, 202, r)
        vm = r.json()["request"]["vms"][0]["id"]
        self.api.wait_vm(vm, ("ACTIVE",))
        wait_until(lambda: self.budget()["blocked"], 60, "the hard stop holds")
        b = self.budget()
        self.assertGreaterEqual(b["spent"], AMOUNT)
        self.assertEqual([a["threshold"] for a in b["alerts"]], [50, 100])
        for a in b["alerts"]:
            self.assertGreaterEqual(a["spent"] * 100, AMOUNT * a["threshold"], a)

        # Refused, with the month's figures; nothing is created.
        before = len(self.u["pleb"].get("/v1/requests?limit=500")["requests"])
        err = self.assertError(self.request("b2"), 403, "BUDGET_EXCEEDED")
        self.assertEqual(err["details"]["month"], b["month"], err)
        self.assertEqual(int(err["details"]["amount"]), AMOUNT, err)
        self.assertGreaterEqual(int(err["details"]["spent"]), AMOUNT, err)
        self.assertEqual(len(self.u["pleb"].get("/v1/requests?limit=500")["requests"]), before)

        # Many more looks by both meters later, each threshold was raised once.
        seen = ms(self.budget()["checked"])
        wait_until(lambda: ms(self.budget()["checked"]) >= seen + 2000, 30,
                   "the meters looked for two more seconds")
        self.assertEqual(self.threshold_events(), [50, 100])
        wait_until(lambda: self.rx.thresholds() == [50, 100], 30, "both webhook deliveries")
        self.assertEqual(self.threshold_events(), [50, 100])

        # spent is the chargeback of the month up to the look.
        b = self.budget()
        checked = ms(b["checked"])
        self.assertLessEqual(self.chargeback_total(checked // 1000), b["spent"])
        self.assertGreaterEqual(self.chargeback_total(checked // 1000 + 1), b["spent"])

        # A stale version is refused; a new amount lifts the stop at once, alerts afresh.
        self.assertError(self.u["boss"].call("PUT", "/v1/groups/lab/budget",
                                             {"amount": AMOUNT * 1000, "version": 7}),
                         409, "CONFLICT")
        r = self.u["boss"].call("PUT", "/v1/groups/lab/budget",
                                {"amount": AMOUNT * 1000, "thresholds": [50, 100],
                                 "hard_stop": True, "version": b["version"]})
        self.assertEqual(r.status, 200, r)
        b = r.json()["budget"]
        self.assertEqual((b["blocked"], b["alerts"], b["version"]), (False, [], 2))
        r = self.request("b3")
        self.assertEqual(r.status, 202, r)
        vm3 = r.json()["request"]["vms"][0]["id"]

        # Without a hard stop, a spent budget raises its alerts and refuses nothing.
        r = self.u["boss"].call("PUT", "/v1/groups/lab/budget", {"amount": 1})
        self.assertEqual(r.status, 200, r)
        b = r.json()["budget"]
        self.assertEqual((b["thresholds"], b["hard_stop"], b["blocked"]), ([80, 100], False, False))
        self.assertEqual([a["threshold"] for a in b["alerts"]], [80, 100])
        r = self.request("b4")
        self.assertEqual(r.status, 202, r)
        vm4 = r.json()["request"]["vms"][0]["id"]

        # Removed: 404 from then on, and removing again answers the same.
        for _ in range(2):
            r = self.u["boss"].call("DELETE", "/v1/groups/lab/budget")
            self.assertEqual(r.status, 200, r)
            self.assertIsNone(r.json()["budget"])
        self.assertError(self.u["boss"].call("GET", "/v1/groups/lab/budget"), 404, "NOT_FOUND")
        self.assertEqual(self.p.redis_command("SISMEMBER", "berth:budgets", self.gid["lab"]), 0)
        for v in (vm, vm3, vm4):
            self.api.dispose(v)

    def berth(self, home, *args, code=0, stdin=None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        env.update({"BERTH_URL": self.proxy.url, "XDG_CONFIG_HOME": home, "HOME": home})
        r = subprocess.run([self.p.binary("berth")] + list(args), input=stdin, env=env,
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(self.proxy.violations, [], "berth %s" % " ".join(args))
        self.assertEqual(r.returncode, code, "berth %s:\n%s\n%s" % (" ".join(args), r.stdout,
                                                                     r.stderr))
        return r

    def test_3_cli(self):
        self.proxy = CheckedProxy(self.p)
        self.addCleanup(self.proxy.close)
        home = tempfile.mkdtemp(prefix="berth-cli-")
        self.addCleanup(shutil.rmtree, home, ignore_errors=True)
        self.berth(home, "login", "boss", "--password-stdin", stdin=PW + "\n")
        out = self.berth(home, "budget", "set", "lab", "--amount", "900000000",
                         "--thresholds", "50,80,100", "--hard-stop").stdout
        self.assertRegex(out, r"amount\s+900000000")
        self.assertRegex(out, r"hard_stop\s+yes")
        b = json.loads(self.berth(home, "-o", "json", "budget", "show", "lab").stdout)["budget"]
        self.assertEqual((b["amount"], b["thresholds"], b["hard_stop"]),
                         (900000000, [50, 80, 100], True))
        self.assertEqual(self.budget()["amount"], 900000000)
        out = self.berth(home, "budget", "lab").stdout
        self.assertRegex(out, r"spent\s+\d+")
        err = self.berth(home, "budget", "set", "lab", "--amount", "5", "--thresholds", "100,50",
                         code=1).stderr
        self.assertIn("thresholds", err)
        self.berth(home, "budget", "set", "lab", code=2)
        self.berth(home, "budget", "set", "lab", "--amount", "x", code=2)
        self.berth(home, "budget", "delete", "lab")
        self.assertError(self.u["boss"].call("GET", "/v1/groups/lab/budget"), 404, "NOT_FOUND")
        err = self.berth(home, "budget", "show", "lab", code=1).stderr
        self.assertIn("no budget", err)


if __name__ == "__main__":
    unittest.main()
