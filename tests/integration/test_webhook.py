#!/usr/bin/env python3
"""Group webhooks (issue 10, "Leases": notices are events, and an optional webhook URL per
group receives them, retried with backoff, never blocking the engine). The platform clock
runs a day in 10 s (as test_lease.py), so a one-day lease gives its notice and expires within
seconds. Receivers are loopback HTTP servers of the test: one that answers 204, one that
fails each event twice before accepting it, one that never answers in time. The checks are a
receiver's: each delivery is signed (HMAC-SHA256 of "<timestamp>.<body>" under the group's
secret), carries the same event id on every retry, reaches only its own group's hook, and a
receiver that hangs neither holds metering nor the lease timers back; one that never answers
is given up with an audit record its group's manager reads.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_webhook.py
"""

# ctest: heavy

import hashlib
import hmac
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import Api, CheckedProxy, PlatformCase, wait_until  # noqa: E402

SCALE = 8640                    # platform ms per real ms: one day in 10 s
DAY_MS = 86400000
PW = "webhook-pass-1"
SECRETS = {"alpha": "alpha-secret-0123456789", "beta": "beta-secret-0123456789",
           "gamma": "gamma-secret-0123456789"}
HANG_S = 30                     # the hanging receiver's answer comes after this (never in time)


class Receiver:
    """A loopback HTTP server recording every POST: path /<group>, behaviour by group
    (alpha: 204; beta: 500 to the first two attempts of each event, then 204; gamma: no
    answer for HANG_S). .hits holds (group, headers, body bytes, status answered)."""

    def __init__(self):
        self.hits = []
        self.hanging = 0
        self.lock = threading.Lock()
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                group = self.path.strip("/")
                status = 204
                if group == "beta":
                    with rec.lock:
                        seen = sum(1 for h in rec.hits if h[0] == "beta" and
                                   h[1].get("X-Berth-Event-Id") ==
                                   self.headers.get("X-Berth-Event-Id"))
                    status = 500 if seen < 2 else 204
                elif group == "gamma":
                    with rec.lock:
                        rec.hanging += 1
                        rec.hits.append((group, dict(self.headers), body, 0))
                    time.sleep(HANG_S)
                    with rec.lock:
                        rec.hanging -= 1
                    return
                with rec.lock:
                    rec.hits.append((group, dict(self.headers), body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def deliveries(self, group, status=None):
        """(headers, body JSON) of the POSTs to group's hook (answered status, if given)."""
        with self.lock:
            hits = list(self.hits)
        return [(h, json.loads(b)) for g, h, b, s in hits
                if g == group and (status is None or s == status)]


class Webhook(PlatformCase):
    agents = 2
    wait_hosts = 2
    platform_env = {
        "BERTH_CLOCK_SCALE": str(SCALE),
        "BERTH_CLOCK_ORIGIN_MS": str(int(time.time() * 1000)),
        "BERTH_LEASE_NOTICE_MS": str(DAY_MS // 2),      # notice half a day (5 s) before
        "BERTH_LEASE_TOMBSTONE_MS": str(DAY_MS),        # tombstone one day (10 s)
        "BERTH_TIMER_CHECK_MS": "200",
        "BERTH_WEBHOOK_ATTEMPTS": "4",
        "BERTH_WEBHOOK_BASE_DELAY_MS": "300",
        "BERTH_WEBHOOK_TIMEOUT_MS": "2000",
    }

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            cls.rx = Receiver()
            admin = cls.api
            admin.create_template(name="day", vcpus=1, ram_mb=1024, disk_gb=10, os="debian",
                                  image="debian-12", lease_days=1)
            admin.create_template(name="month", vcpus=1, ram_mb=1024, disk_gb=10, os="debian",
                                  image="debian-12", lease_days=30)
            cls.groups = {}
            for name in ("alpha", "beta", "gamma"):
                r = admin.call("POST", "/v1/groups", {"name": name})
                assert r.status == 201, r
                cls.groups[name] = r.json()["group"]["id"]
            for user in ("boss", "pleb"):
                r = admin.call("POST", "/v1/users", {"username": user, "password": PW})
                assert r.status == 201, r
            for name in cls.groups:
                r = admin.call("POST", "/v1/groups/%s/members" % name,
                               {"user": "boss", "role": "manager"})
                assert r.status == 201, r
            r = admin.call("POST", "/v1/groups/alpha/members", {"user": "pleb", "role": "member"})
            assert r.status == 201, r
            cls.boss, cls.pleb = Api(cls.p, "boss", PW), Api(cls.p, "pleb", PW)
        except Exception:
            cls.p.dump_logs()
            cls.p.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        if hasattr(cls, "rx"):
            cls.rx.close()
        super().tearDownClass()

    def hook(self, group, who=None):
        r = (who or self.boss).call("PUT", "/v1/groups/%s/webhook" % group,
                                    {"url": "%s/%s" % (self.rx.url, group),
                                     "secret": SECRETS[group]})
        self.assertEqual(r.status, 200, r)
        return r.json()["group"]

    def request(self, template, name, group, count=1):
        r = self.api.call("POST", "/v1/requests", {"template": template, "name": name,
                                                   "count": count, "group": group})
        self.assertEqual(r.status, 202, r)
        return [v["id"] for v in r.json()["request"]["vms"]]

    def assertSigned(self, group, headers, body):
        ts = headers["X-Berth-Timestamp"]
        raw = json.dumps(body)  # only for the message; the check below is over the bytes sent
        with self.rx.lock:
            sent = [b for g, h, b, _ in self.rx.hits
                    if g == group and h.get("X-Berth-Signature") == headers["X-Berth-Signature"]]
        self.assertTrue(sent, raw)
        want = hmac.new(SECRETS[group].encode(), ts.encode() + b"." + sent[0],
                        hashlib.sha256).hexdigest()
        self.assertEqual(headers["X-Berth-Signature"], "v1=" + want)
        wrong = hmac.new(b"another-secret-0123456", ts.encode() + b"." + sent[0],
                         hashlib.sha256).hexdigest()
        self.assertNotEqual(headers["X-Berth-Signature"], "v1=" + wrong)

    def events_of(self, group, vm, status=204):
        return [(h, b) for h, b in self.rx.deliveries(group, status) if b["vm"] == vm]

    def wait_event(self, group, vm, event, timeout=40):
        return wait_until(lambda: [(h, b) for h, b in self.events_of(group, vm)
                                   if b["event"] == event], timeout,
                          "%s of %s delivered to %s" % (event, vm, group))

    # -- setting the hook ---------------------------------------------------------------

    def test_1_bad_urls_and_who_may_set(self):
        path = "/v1/groups/alpha/webhook"
        for bad in ("ftp://127.0.0.1/x", "http://user:pw@127.0.0.1/x", "http://@127.0.0.1/",
                    "http://", "https:///path", "127.0.0.1:80/x", "http://a b/",
                    "http://127.0.0.1/\x01", "http://127.0.0.1/" + "a" * 2100, ""):
            r = self.boss.call("PUT", path, {"url": bad, "secret": SECRETS["alpha"]})
            self.assertEqual(r.status, 400, (bad, r))
            self.assertEqual(r.json()["error"]["details"].get("field"), "url", (bad, r))
        for body, field in (({"secret": SECRETS["alpha"]}, "url"),
                            ({"url": self.rx.url + "/alpha", "secret": "short"}, "secret"),
                            ({"url": self.rx.url + "/alpha"}, "secret"),  # none set yet
                            ({"url": self.rx.url + "/alpha", "secret": 5}, "secret")):
            r = self.boss.call("PUT", path, body)
            self.assertEqual(r.status, 400, (body, r))
            self.assertEqual(r.json()["error"]["details"].get("field"), field, (body, r))
        self.assertIsNone(self.api.get("/v1/groups/alpha")["group"]["webhook"])
        # A member is not a manager: refused, nothing set.
        r = self.pleb.call("PUT", path, {"url": self.rx.url + "/alpha",
                                         "secret": SECRETS["alpha"]})
        self.assertEqual(r.status, 403, r)
        self.assertIsNone(self.api.get("/v1/groups/alpha")["group"]["webhook"])
        # The manager sets it; the secret is never shown, only that it is set.
        g = self.hook("alpha")
        self.assertEqual(g["webhook"]["url"], self.rx.url + "/alpha")
        self.assertTrue(g["webhook"]["secret_set"])
        self.assertEqual(g["webhook"]["updated_by"], "boss")
        for who in (self.api, self.boss, self.pleb):
            r = who.call("GET", "/v1/groups/alpha")
            self.assertEqual(r.status, 200, r)
            self.assertNotIn(SECRETS["alpha"], r.body.decode())
            self.assertTrue(r.json()["group"]["webhook"]["secret_set"])
        # The URL changes, the secret stays; clear and set again.
        r = self.boss.call("PUT", path, {"url": self.rx.url + "/elsewhere"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["group"]["webhook"]["url"], self.rx.url + "/elsewhere")
        r = self.boss.call("DELETE", path)
        self.assertEqual(r.status, 200, r)
        self.assertIsNone(r.json()["group"]["webhook"])
        self.assertEqual(self.api.call("GET", "/v1/groups/alpha").json()["group"]["webhook"], None)
        self.assertEqual(self.p.redis_command("EXISTS", "berth:group-webhook:{%s}" %
                                              self.groups["alpha"]), 0)
        self.hook("alpha", who=self.api)  # an admin may too
        self.hook("beta")
        self.hook("gamma")

    # -- deliveries -----------------------------------------------------------------------

    def test_2_notices_signed_retried_and_isolated(self):
        alpha = self.request("day", "a", "alpha", count=2)
        beta = self.request("day", "b", "beta")
        for vm in alpha + beta:
            self.api.wait_vm(vm, ("ACTIVE",), timeout=30)
        gone, revived = alpha
        # alpha: the notice and the expiry of its VM, each signed, its id the event's.
        for event in ("lease.notice", "lease.expired"):
            (headers, body), = self.wait_event("alpha", gone, event)
            self.assertEqual(headers["X-Berth-Event-Id"], body["id"])
            self.assertEqual(headers["X-Berth-Event"], event)
            self.assertEqual(headers["Content-Type"], "application/json")
            self.assertEqual(body["group"], self.groups["alpha"])
            self.assertEqual(body["data"]["vm"], gone)
            self.assertSigned("alpha", headers, body)
        exp = self.wait_event("alpha", gone, "lease.expired")[0][1]
        self.assertIn("tombstone_until_ms", exp["data"])
        # Revival of the other within its tombstone, then the first's disposal at its end.
        self.api.wait_vm(revived, ("EXPIRED",), timeout=20)
        r = self.api.call("POST", "/v1/vms/%s/lease" % revived, {"days": 1})
        self.assertEqual(r.status, 200, r)
        self.wait_event("alpha", revived, "lease.revived")
        self.wait_event("alpha", gone, "lease.disposing", timeout=40)
        # beta: each event failed twice, then was accepted once, the same id every time.
        for event in ("lease.notice", "lease.expired"):
            (h, b), = self.wait_event("beta", beta[0], event)
            tries = [x for x, y in self.rx.deliveries("beta")
                     if x["X-Berth-Event-Id"] == h["X-Berth-Event-Id"]]
            self.assertEqual(len(tries), 3, tries)
            self.assertSigned("beta", h, b)
        # Nothing more comes for what was delivered (no duplicate once accepted).
        self.wait_event("beta", beta[0], "lease.disposing", timeout=40)
        for event in ("lease.notice", "lease.expired"):
            self.assertEqual(len([1 for h, b in self.events_of("beta", beta[0])
                                  if b["event"] == event]), 1)
        # Each hook heard only of its own group's VMs.
        for group, mine in (("alpha", set(alpha)), ("beta", set(beta))):
            for h, b in self.rx.deliveries(group):
                self.assertEqual(b["group"], self.groups[group], b)
                self.assertIn(b["vm"], mine, b)
        # The delivered ones are gone from the queue.
        ids = {b["id"] for _, b in self.rx.deliveries("alpha", 204)}
        for i in ids:
            self.assertIsNone(self.p.redis_command("HGET", "berth:webhook:deliveries", i))

    def test_3_a_hanging_receiver_holds_nothing_back(self):
        slow = self.request("day", "g", "gamma")[0]
        self.api.wait_vm(slow, ("ACTIVE",), timeout=30)
        # Its notice reaches the receiver, which does not answer.
        wait_until(lambda: self.rx.hanging > 0, 30, "the hanging receiver holding a POST")
        # Meanwhile a VM of another group is metered (its usage record appears only once the
        # meter has applied its ACTIVE event) and the lease timers go on.
        other = self.request("month", "m", "alpha")[0]
        self.api.wait_vm(other, ("ACTIVE",), timeout=30)
        rec = wait_until(lambda: [u for u in self.api.get("/v1/usage")["usage"]
                                  if u["vm"] == other], 15, "usage of the other VM")
        first = rec[0]["vcpu_hours"]
        self.assertGreater(self.rx.hanging, 0, "the receiver answered: the check proves nothing")
        wait_until(lambda: [u for u in self.api.get("/v1/usage")["usage"]
                            if u["vm"] == other and u["vcpu_hours"] > first], 15,
                   "usage of the other VM advancing")
        vm = self.api.wait_vm(slow, ("EXPIRED",), timeout=30)
        self.assertEqual(vm["state"], "EXPIRED")
        # Its deliveries are given up after the last attempt, each attempt the same id, and
        # the group's manager reads why in the audit trail.
        def given_up():
            recs = self.boss.get("/v1/audit?group=gamma&action=webhook.failed")["records"]
            return [r for r in recs if r["target"] == "vm:" + slow]
        recs = wait_until(given_up, 60, "the hanging hook's delivery given up")
        self.assertEqual(recs[0]["actor"], "service:meter")
        self.assertIn("4 attempts", recs[0]["result"])
        notice_ids = {h["X-Berth-Event-Id"] for h, b in self.rx.deliveries("gamma")
                      if b["event"] == "lease.notice"}
        self.assertEqual(len(notice_ids), 1)
        self.assertEqual(len([1 for h, b in self.rx.deliveries("gamma")
                              if b["event"] == "lease.notice"]), 4)
        # Another group's manager does not see it.
        self.assertEqual(self.pleb.call("GET", "/v1/audit?group=gamma").status, 403)

    def test_5_meter_killed_loses_nothing(self):
        """A meter killed (SIGKILL) while a notice is given: restarted under its name, it
        delivers what was written meanwhile, once."""
        meter = [p for p in self.p.procs if p.service == "meter" and p.alive()][0]
        vm = self.request("day", "k", "alpha")[0]
        self.api.wait_vm(vm, ("ACTIVE",), timeout=30)
        meter.kill(signal.SIGKILL)
        meter.wait(10)
        wait_until(lambda: self.api.vm(vm)["state"] in ("EXPIRING", "EXPIRED"), 30,
                   "the notice given while the meter is down")
        self.assertEqual(self.events_of("alpha", vm), [])
        self.p.restart(meter)
        (headers, body), = self.wait_event("alpha", vm, "lease.notice")
        self.assertSigned("alpha", headers, body)
        self.wait_event("alpha", vm, "lease.expired")
        for event in ("lease.notice", "lease.expired"):
            self.assertEqual(len([1 for h, b in self.events_of("alpha", vm)
                                  if b["event"] == event]), 1)

    # -- the CLI --------------------------------------------------------------------------

    def berth(self, home, *args, stdin=None, code=0):
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        env.update({"BERTH_URL": self.proxy.url, "XDG_CONFIG_HOME": home, "HOME": home})
        r = subprocess.run([self.p.binary("berth")] + list(args), input=stdin, env=env,
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(self.proxy.violations, [], "berth %s" % " ".join(args))
        self.assertEqual(r.returncode, code, "berth %s:\n%s\n%s" % (" ".join(args), r.stdout,
                                                                     r.stderr))
        return r

    def test_4_cli(self):
        self.proxy = CheckedProxy(self.p)
        self.addCleanup(self.proxy.close)
        home = tempfile.mkdtemp(prefix="berth-cli-")
        self.addCleanup(shutil.rmtree, home, ignore_errors=True)
        r = self.api.call("POST", "/v1/groups", {"name": "delta"})
        self.assertEqual(r.status, 201, r)
        r = self.api.call("POST", "/v1/groups/delta/members", {"user": "boss", "role": "manager"})
        self.assertEqual(r.status, 201, r)
        # boss's group roles, cached by the gateway's threads for groups_cache_ms, include the
        # new group on every thread within that time.
        wait_until(lambda: all(self.boss.call("GET", "/v1/groups/delta").status == 200
                               for _ in range(8)), 10, "boss manages delta on every thread")
        self.berth(home, "login", "boss", "--password-stdin", stdin=PW + "\n")
        url = self.rx.url + "/delta"
        out = self.berth(home, "groups", "update", "delta", "--webhook-url", url,
                         "--webhook-secret-stdin", stdin="delta-secret-0123456789\n").stdout
        self.assertRegex(out, r"webhook.url:\s+" + url)
        self.assertRegex(out, r"webhook.secret_set:\s+yes")
        self.assertNotIn("delta-secret", out)
        self.assertEqual(self.p.redis_command("HGET", "berth:group-webhook:{%s}" %
                                              r.json()["member"]["group"], "secret"),
                         "delta-secret-0123456789")
        # A bad URL: the server's 400 naming the field; the hook stays as it was.
        err = self.berth(home, "groups", "update", "delta", "--webhook-url",
                         "http://u:p@127.0.0.1/", code=1).stderr
        self.assertIn("url", err)
        self.assertEqual(self.api.get("/v1/groups/delta")["group"]["webhook"]["url"], url)
        # Both a URL and --webhook-clear, or a secret without a URL: usage errors.
        self.berth(home, "groups", "update", "delta", "--webhook-url", url, "--webhook-clear",
                   code=2)
        self.berth(home, "groups", "update", "delta", "--webhook-secret-stdin", stdin="x\n",
                   code=2)
        out = self.berth(home, "-o", "json", "groups", "update", "delta",
                         "--webhook-clear").stdout
        self.assertIsNone(json.loads(out)["group"]["webhook"])


class HostLoss(PlatformCase):
    """Alerts for a group's VMs when their host is lost: DOWN (SIGSTOP: vm.unreachable), and
    back without them (restarted empty: vm.lost and vm.power.alert)."""
    agents = 2
    wait_hosts = 2
    platform_env = {"BERTH_HEARTBEAT_MS": "300", "BERTH_HOST_REFRESH_MS": "0",
                    "BERTH_WEBHOOK_BASE_DELAY_MS": "300"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.rx = Receiver()
        try:
            r = cls.api.call("POST", "/v1/groups", {"name": "alpha"})
            assert r.status == 201, r
            cls.group = r.json()["group"]["id"]
            r = cls.api.call("PUT", "/v1/groups/alpha/webhook",
                             {"url": cls.rx.url + "/alpha", "secret": SECRETS["alpha"]})
            assert r.status == 200, r
        except Exception:
            cls.p.dump_logs()
            cls.p.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.rx.close()
        super().tearDownClass()

    def test_host_lost_and_back_without_its_vm(self):
        api, p = self.api, self.p
        r = api.call("POST", "/v1/requests", {"template": "small", "name": "h", "count": 1,
                                              "group": "alpha"})
        self.assertEqual(r.status, 202, r)
        vm = api.wait_vm(r.json()["request"]["vms"][0]["id"], ("ACTIVE",), timeout=30)
        other = api.wait_vm(api.request("small", "elsewhere")["vms"][0]["id"], ("ACTIVE",),
                            timeout=30)  # the default group's: no hook
        wait_until(lambda: api.vm(vm["id"])["power_state"] == "RUNNING", 10, "VM running")
        host = vm["host"]
        agent = [x for x in p.procs if x.name == "agent-" + host.split("-")[1] and x.alive()][-1]

        def got(event):
            return [(h, b) for h, b in self.rx.deliveries("alpha", 204)
                    if b["vm"] == vm["id"] and b["event"] == event]
        agent.kill(signal.SIGSTOP)
        try:
            (h, b), = wait_until(lambda: got("vm.unreachable"), 30, "vm.unreachable delivered")
            self.assertEqual(b["group"], self.group)
            self.assertEqual(b["data"]["host"], host)
            self.assertIn("DOWN", b["data"]["reason"])
        finally:
            agent.kill(signal.SIGCONT)
        wait_until(lambda: api.hosts()[host]["state"] == "UP", 20, "host UP again")
        p.restart(agent)
        wait_until(lambda: got("vm.lost"), 30, "vm.lost delivered")
        wait_until(lambda: got("vm.power.alert"), 30, "vm.power.alert delivered")
        self.assertEqual(api.vm(vm["id"])["state"], "ERROR")
        # Only the group's own VM was told of.
        self.assertEqual({b["vm"] for _, b in self.rx.deliveries("alpha")}, {vm["id"]})
        self.assertNotEqual(other["id"], vm["id"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
