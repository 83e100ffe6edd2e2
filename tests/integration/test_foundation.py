#!/usr/bin/env python3
# ctest: heavy
"""The foundation holds: real redis-server, real service binaries, the bus and the registry.

One platform (redis, every service, agents, gateway; heartbeat HEARTBEAT_MS) is started for
the whole file and the scenarios run in order against it:

  1. every service type plus the gateway registers; /v1/health lists each instance with an
     endpoint that answers Ping as that instance, and /healthz and /readyz say 200;
  2. a second scheduler instance: calls through the registry reach both instances; kill -9 of
     one: calls keep succeeding through the other and /v1/health drops it within 3 heartbeats;
     a stale registry entry whose port now belongs to another service does not make that
     service answer calls meant for this one;
  3. garbage frames to every registered endpoint are answered BAD_FRAME and the service keeps
     serving (Ping through the endpoint and through the registry);
  4. Redis is restarted under the running services: they keep answering while it is away,
     then reconnect and re-register with the same instance ids, without being restarted.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_foundation.py
"""

import json
import os
import signal
import subprocess
import sys
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# deploy/platform.py, loaded by path once for every test (berth_test.py).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import berth_platform  # noqa: E402

HEARTBEAT_MS = 300
AGENTS = 2
EXPECTED = {"gateway": 1, "approval": 1, "scheduler": 1, "taskmgr": 1, "stager": 1, "meter": 1,
            "agent": AGENTS}
# Slack for observing a drop over HTTP: poll interval plus slow (sanitized, loaded) requests.
DROP_SLACK_S = 1.0


def registered(response):
    """{instance id: entry} of /v1/health."""
    return {e["instance"]: e for e in response.json().get("services", [])}


class Foundation(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.p = berth_platform.Platform(env={"BERTH_HEARTBEAT_MS": str(HEARTBEAT_MS)})
        try:
            cls.probe_bin = cls.p.binary("probe")
            cls.p.start_all(agents=AGENTS, timeout=60)
        except BaseException:
            cls.p.dump_logs()
            cls.p.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.p.stop()

    def tearDown(self):
        outcome = getattr(self, "_outcome", None)
        if outcome is not None and not getattr(outcome, "success", True):
            self.p.dump_logs()

    # -- helpers --------------------------------------------------------------------------

    def probe(self, *args, timeout=60, server=None):
        """Run berth-probe with the gateway's bus certificate (server: the certificate of the
        server at an ENDPOINT argument); (exit status, parsed JSON of its last stdout line or
        None)."""
        r = subprocess.run(self.p.probe_argv(*args, server=server), capture_output=True,
                           text=True, timeout=timeout)
        lines = r.stdout.strip().splitlines()
        try:
            out = json.loads(lines[-1]) if lines else None
        except ValueError:
            out = None
        return r.returncode, out

    def ping(self, entry):
        """The Status the endpoint of a registry entry answers with, or None."""
        rc, out = self.probe("ping", entry["endpoint"], server=self.p.server_cert(entry))
        return out if rc == 0 else None

    def call(self, service, n, interval_ms=0):
        rc, out = self.probe("call", "127.0.0.1:%d" % self.p.redis_port, service, n,
                             interval_ms)
        self.assertIsNotNone(out, "berth-probe call printed nothing (exit %d)" % rc)
        return out

    def health(self):
        r = self.p.http("GET", "/v1/health")
        self.assertEqual(r.status, 200, r)
        return r

    def wait_health(self, predicate, timeout=15.0, what="condition"):
        """Poll /v1/health until predicate(instances) holds; the instances."""
        try:
            r = self.p.wait_http("/v1/health",
                                 lambda r: r.status == 200 and predicate(registered(r)),
                                 timeout=timeout, interval=0.05)
        except TimeoutError as e:
            self.fail("%s not reached: %s" % (what, e))
        return registered(r)

    def redis_time_ms(self):
        sec, usec = self.p.redis_command("TIME")
        return int(sec) * 1000 + int(usec) // 1000

    def wait_until(self, fn, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            value = fn()
            if value:
                return value
            if time.monotonic() > deadline:
                self.fail("%s not reached after %.0fs" % (what, timeout))
            self.p.check_alive()
            time.sleep(0.05)

    # -- scenarios ------------------------------------------------------------------------

    def test_1_every_service_registers_and_answers(self):
        def complete(instances):
            counts = {}
            for e in instances.values():
                counts[e["service"]] = counts.get(e["service"], 0) + 1
            return all(counts.get(s, 0) >= n for s, n in EXPECTED.items())

        instances = self.wait_health(complete, what="every service registered")
        body = self.health().json()
        self.assertEqual(body["status"], "ok", body)
        self.assertEqual(body["missing"], [], body)
        self.assertEqual(self.p.http("GET", "/healthz").status, 200)
        # /readyz answers from a snapshot refreshed every 250 ms: it follows /v1/health.
        self.p.wait_http("/readyz", lambda r: r.status == 200, timeout=10)
        counts = {}
        for inst, e in instances.items():
            counts[e["service"]] = counts.get(e["service"], 0) + 1
            self.assertEqual(e["status"], "UP", e)
            self.assertTrue(e["endpoint"].startswith("tcp://127.0.0.1:"), e)
            # Each heartbeat buys a lease of three heartbeats (Redis clock).
            self.assertEqual(e["expires_ms"] - e["last_heartbeat_ms"], 3 * HEARTBEAT_MS, e)
            # The listed endpoint is really that instance.
            status = self.ping(e)
            self.assertIsNotNone(status, "no Ping answer from %s" % e)
            self.assertEqual(status["instance"], inst)
            self.assertEqual(status["service"], e["service"])
            self.assertEqual(status["state"], "UP")
            # Agents never touch Redis (taskmgr registers them from their heartbeats).
            self.assertEqual(status["store_ok"], e["service"] != "agent", status)
        self.assertEqual(counts, EXPECTED)
        # And they keep heartbeating: every instance's heartbeat moves on.
        self.wait_health(lambda now: all(inst in now and now[inst]["last_heartbeat_ms"]
                                         > e["last_heartbeat_ms"]
                                         for inst, e in instances.items()),
                         timeout=5, what="a fresh heartbeat from every instance")

    def test_2_two_instances_then_kill_one(self):
        first = {i for i, e in registered(self.health()).items() if e["service"] == "scheduler"}
        self.assertEqual(len(first), 1)
        second = self.p.start("scheduler", name="scheduler-second")
        scheds = self.wait_health(
            lambda i: sum(e["service"] == "scheduler" for e in i.values()) == 2,
            what="two scheduler instances registered")
        ids = {i for i, e in scheds.items() if e["service"] == "scheduler"}

        # Calls through the registry spread over both instances, and all are answered.
        out = self.call("scheduler", 20)
        self.assertEqual((out["answered"], out["failed"]), (20, 0), out)
        self.assertEqual(set(out["instances"]), ids, out)

        victim = (ids - first).pop()   # the instance just started
        survivor = first.pop()

        second.kill(signal.SIGKILL)
        killed_at = time.monotonic()
        killed_redis_ms = self.redis_time_ms()   # no heartbeat of the victim after this
        last_seen = dict(scheds[victim])

        def dropped(instances):
            if victim in instances:
                last_seen.update(instances[victim])
                return False
            return True

        # Calls while the dead instance is still listed (and a while after), paced 50 ms.
        caller = subprocess.Popen(self.p.probe_argv("call", "127.0.0.1:%d" % self.p.redis_port,
                                                    "scheduler", "30", "50"),
                                  stdout=subprocess.PIPE, text=True)
        try:
            self.wait_health(dropped, timeout=10, what="killed instance dropped from /v1/health")
            dropped_after = time.monotonic() - killed_at
            stdout, _ = caller.communicate(timeout=60)
        finally:
            if caller.poll() is None:
                caller.kill()
                caller.wait()
        print("killed instance dropped after %.2fs (heartbeat %d ms)"
              % (dropped_after, HEARTBEAT_MS), file=sys.stderr)
        # Exact, on Redis's clock: the entry lapsed no later than 3 heartbeats after the
        # kill, so no /v1/health answered after that could list it ...
        self.assertLessEqual(last_seen["expires_ms"], killed_redis_ms + 3 * HEARTBEAT_MS)
        # ... and as seen from outside, allowing for polling and a slow sanitized request.
        self.assertLessEqual(dropped_after, 3 * HEARTBEAT_MS / 1000.0 + DROP_SLACK_S)
        self.assertEqual(second.wait(5), -signal.SIGKILL)

        out = json.loads(stdout.strip().splitlines()[-1])
        self.assertEqual((out["answered"], out["failed"]), (30, 0), out)
        self.assertEqual(set(out["instances"]), {survivor}, out)
        self.assertIn(survivor, registered(self.health()))

    def test_2b_stale_entry_on_another_services_port(self):
        # A dead instance stays listed until its TTL runs out, and its port may by then
        # belong to another service (CZMQ reuses the lowest free port of its range). Such a
        # listing must not make another service answer calls meant for this one.
        instances = registered(self.health())
        approval = [e for e in instances.values() if e["service"] == "approval"][0]
        schedulers = {i for i, e in instances.items() if e["service"] == "scheduler"}
        stale = "scheduler-stale"
        now = self.redis_time_ms()
        key = "berth:instance:scheduler:" + stale
        self.p.redis_command("HSET", key, "service", "scheduler", "instance", stale,
                             "endpoint", approval["endpoint"], "status", "UP",
                             "started_ms", now, "last_heartbeat_ms", now,
                             "expires_ms", now + 20000)
        self.p.redis_command("PEXPIRE", key, 20000)
        self.p.redis_command("ZADD", "berth:registry:scheduler", now + 20000, stale)
        try:
            self.assertIn(stale, registered(self.health()))
            out = self.call("scheduler", 20)
        finally:
            self.p.redis_command("ZREM", "berth:registry:scheduler", stale)
            self.p.redis_command("DEL", key)
        self.assertEqual((out["answered"], out["failed"]), (20, 0), out)
        self.assertEqual(set(out["instances"]), schedulers, out)

    def test_3_garbage_frames_rejected_service_keeps_serving(self):
        instances = registered(self.health())
        self.assertGreaterEqual(len(instances), sum(EXPECTED.values()))
        for inst, e in sorted(instances.items(), key=lambda kv: kv[1]["service"]):
            with self.subTest(service=e["service"], instance=inst):
                rc, out = self.probe("garbage", e["endpoint"], server=self.p.server_cert(e))
                self.assertIsNotNone(out)
                self.assertGreater(out["sent"], 0)
                self.assertEqual(out["bad_frame_replies"], out["sent"], out)
                self.assertEqual(rc, 0)
                status = self.ping(e)
                self.assertIsNotNone(status, "%s stopped answering after garbage" % inst)
                self.assertEqual(status["instance"], inst)
        self.p.check_alive()
        # Every running process logged the rejection (once, not once per frame).
        for proc in self.p.procs:
            if proc.alive():
                with open(proc.log_path, "rb") as f:
                    lines = [l for l in f.read().decode("utf-8", "replace").splitlines()
                             if '"rejected bad frame"' in l]
                self.assertGreaterEqual(len(lines), 1, proc.name)
                self.assertLessEqual(len(lines), 2, proc.name)
        # And through the registry, each service type still serves calls (agents: each host
        # has its own key, pinged above; nothing calls "any agent").
        for service in set(EXPECTED) - {"agent"}:
            out = self.call(service, 3)
            self.assertEqual((out["answered"], out["failed"]), (3, 0), (service, out))

    def test_4_redis_restart_services_reconnect(self):
        before = registered(self.health())
        pids = {p.name: p.pid for p in self.p.procs if p.alive()}

        self.p.stop_redis()
        # Redis away: nobody exits, every instance still answers Ping and reports itself
        # DEGRADED once its heartbeat has failed; the gateway is alive but not ready.
        for inst, e in before.items():
            if e["service"] == "agent":
                continue   # no Redis of its own: nothing changes for it
            status = self.wait_until(
                lambda: (lambda s: s if s and s["state"] == "DEGRADED" else None)(
                    self.ping(e)),
                timeout=10, what="%s reporting DEGRADED without Redis" % inst)
            self.assertEqual(status["instance"], inst)
            self.assertFalse(status["store_ok"])
        self.assertEqual(self.p.http("GET", "/healthz").status, 200)
        # Not ready from the gateway's first failed registry read (every 250 ms).
        self.wait_until(lambda: self.p.http("GET", "/readyz").status == 503,
                        timeout=3, what="/readyz 503 without Redis")
        self.assertEqual(self.p.http("GET", "/healthz").status, 200)
        self.p.check_alive()

        self.p.start_redis()
        restarted_at = self.redis_time_ms()
        # Every instance heartbeats into the new Redis: same ids, fresh heartbeats.
        after = self.wait_health(
            lambda i: all(inst in i and i[inst]["last_heartbeat_ms"] > restarted_at
                          for inst in before),
            timeout=15, what="every instance re-registered after the Redis restart")
        self.assertEqual(set(after), set(before))
        for inst in before:
            self.assertEqual(after[inst]["endpoint"], before[inst]["endpoint"])
        # Not restarted: the very same processes.
        self.assertEqual({p.name: p.pid for p in self.p.procs if p.alive()}, pids)
        self.assertEqual(self.p.unexpected_exits(), [])
        self.p.wait_ready(timeout=15)
        for inst, e in before.items():
            status = self.wait_until(
                lambda: (lambda s: s if s and s["state"] == "UP"
                         and s["store_ok"] == (e["service"] != "agent") else None)(
                    self.ping(e)),
                timeout=10, what="%s UP again" % inst)
            self.assertEqual(status["instance"], inst)
            self.assertLess(status["started_ms"], restarted_at)


if __name__ == "__main__":
    unittest.main(verbosity=2)
