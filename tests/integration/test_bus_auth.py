#!/usr/bin/env python3
"""The bus is authenticated and authorized (issue 8's tests 1 and 2): every ZeroMQ socket is
CURVE, servers admit only the platform's certificates, each handler accepts only the callers
it declares, and an agent's certificate speaks for its own host only. Every refusal leaves
Redis as it was.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_bus_auth.py
"""

import json
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import PlatformCase, wait_until  # noqa: E402

UNKNOWN_VM = "00000000-0000-4000-8000-00000000beef"


class BusAuth(PlatformCase):
    agents = 2
    wait_hosts = 2

    # -- helpers --------------------------------------------------------------------------

    def entries(self):
        """Registry entries of every running instance (services, agents, gateway)."""
        r = self.p.http("GET", "/v1/health")
        self.assertEqual(r.status, 200, r)
        return r.json()["services"]

    def endpoint(self, service):
        return [e for e in self.entries() if e["service"] == service][0]["endpoint"]

    def probes(self, runs):
        """Run berth-probe command lines at once (each refused call waits out its 3 s
        deadline); [(exit status, parsed last stdout line or None)] in order."""
        procs = [subprocess.Popen(self.p.probe_argv(*args, **kw), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for args, kw in runs]
        out = []
        for proc in procs:
            stdout, _ = proc.communicate(timeout=60)
            lines = stdout.strip().splitlines()
            out.append((proc.returncode, json.loads(lines[-1]) if lines else None))
        return out

    def snapshot(self):
        """Every key of the store with its serialized value."""
        return {k: self.p.redis_command("DUMP", k) for k in self.p.redis_command("KEYS", "*")}

    def live_keys(self):
        """Keys the platform itself rewrites while idle (heartbeats, registry leases): found by
        watching until every registry zset has been rewritten twice (two heartbeats of every
        instance), collecting each key whose value changed meanwhile."""
        prev = self.snapshot()
        seen = {k: {v} for k, v in prev.items() if k.startswith("berth:registry:")}
        live = set()
        deadline = time.monotonic() + 20
        while min(len(v) for v in seen.values()) < 3:
            self.assertLess(time.monotonic(), deadline, "registry not refreshed twice")
            time.sleep(0.1)  # poll interval
            cur = self.snapshot()
            live |= {k for k in set(prev) | set(cur) if prev.get(k) != cur.get(k)}
            for k in seen:
                seen[k].add(cur.get(k))
            prev = cur
        return live

    def assert_store_unchanged(self, before, live):
        after = self.snapshot()
        self.assertEqual(sorted(set(after) - set(before)), [], "keys created")
        self.assertEqual(sorted(set(before) - set(after)), [], "keys deleted")
        changed = sorted(k for k in before if k not in live and before[k] != after[k])
        self.assertEqual(changed, [], "keys written")

    def forge(self, cert, service, kind, *args, server=None):
        return (("forge", self.endpoint(service), kind) + args,
                {"cert": cert, "server": server or service})

    # -- tests ----------------------------------------------------------------------------

    def test_1_no_key_or_unknown_key_gets_nothing(self):
        entries = self.entries()
        self.assertEqual(len(entries), 8)   # 5 services, 2 agents, the gateway
        certs = {e["instance"]: self.p.server_cert(e) for e in entries}
        live = self.live_keys()
        before = self.snapshot()
        runs = []
        for cert in ("none", "new"):
            # Ping every instance, and send each service the calls an attacker wants most.
            for e in entries:
                runs.append((("ping", e["endpoint"]), {"cert": cert,
                                                      "server": certs[e["instance"]]}))
            runs += [self.forge(cert, "taskmgr", "dispose", UNKNOWN_VM),
                     self.forge(cert, "taskmgr", "heartbeat", "host-9"),
                     self.forge(cert, "taskmgr", "work", "host-1"),
                     self.forge(cert, "approval", "request", "mallory"),
                     self.forge(cert, "approval", "decide", UNKNOWN_VM),
                     self.forge(cert, "scheduler", "select", UNKNOWN_VM),
                     self.forge(cert, "meter", "usage"),
                     self.forge(cert, "stager", "seed", UNKNOWN_VM)]
        results = self.probes(runs)
        for (args, kw), (rc, out) in zip(runs, results):
            with self.subTest(cert=kw["cert"], call=args[0], kind=args[2] if len(args) > 2
                              else None, server=kw["server"]):
                self.assertNotEqual(rc, 0, out)
                if args[0] == "ping":
                    self.assertIsNone(out)
                else:
                    self.assertEqual(out, {"answered": False})
        print("test 1: %d calls without a key or with a key not in the store, %d answered"
              % (len(runs), sum(1 for rc, _ in results if rc == 0)), file=sys.stderr)
        self.assert_store_unchanged(before, live)
        print("test 1: Redis unchanged: %d keys, none created or deleted; %d compared by value"
              " (%d rewritten by heartbeats meanwhile)"
              % (len(before), len(set(before) - live), len(live)), file=sys.stderr)
        # The same calls with a certificate of the platform are answered (the refusals above
        # are CURVE's, not a dead service's).
        ok = self.probes([(("ping", e["endpoint"]), {"server": certs[e["instance"]]})
                          for e in entries])
        self.assertEqual([rc for rc, _ in ok], [0] * len(entries), ok)

    def test_2_agent_certificate_bound_to_its_host(self):
        # A VM on one of the hosts, so that there is a seed and commands to steal.
        req = self.api.request("small", "bound")
        vm_id = req["vms"][0]["id"]
        vm = self.api.wait_vm(vm_id, ("ACTIVE",), timeout=60)
        owner = vm["host"]
        other = "host-1" if owner == "host-2" else "host-2"
        thief = self.p.host_cert(other)
        hosts = self.api.hosts()
        live = self.live_keys()
        before = self.snapshot()
        runs = [self.forge(thief, "taskmgr", "heartbeat", owner),
                self.forge(thief, "taskmgr", "work", owner),
                self.forge(thief, "taskmgr", "result", owner, "cmd-" + vm_id),
                self.forge(thief, "stager", "seed", vm_id)]
        results = self.probes(runs)
        for (args, _), (rc, out) in zip(runs, results):
            with self.subTest(kind=args[2]):
                self.assertEqual(rc, 0, out)
                self.assertEqual(out["error"]["code"], "FORBIDDEN", out)
        self.assert_store_unchanged(before, live)
        # The heartbeat did not resize the owner's host, which its own agent still reports.
        after = self.api.hosts()
        self.assertEqual(after[owner]["capacity"], hosts[owner]["capacity"])
        self.assertEqual(after[owner]["state"], "UP")
        # The owner's own certificate gets the seed (the refusal was about the host).
        (rc, out), = self.probes([self.forge(self.p.host_cert(owner), "stager", "seed", vm_id)])
        self.assertEqual((rc, out), (0, {"answered": True, "error": None}))
        # And the VM is still fine: nothing the thief sent reached its task.
        self.assertEqual(self.api.vm(vm_id)["state"], "ACTIVE")

    def test_3_handlers_refuse_callers_they_do_not_accept(self):
        live = self.live_keys()
        before = self.snapshot()
        agent = self.p.host_cert("host-1")
        runs = [self.forge(agent, "approval", "decide", UNKNOWN_VM),
                self.forge(agent, "approval", "request", "mallory"),
                self.forge("taskmgr", "approval", "decide", UNKNOWN_VM),
                self.forge(agent, "taskmgr", "dispose", UNKNOWN_VM),
                self.forge("scheduler", "taskmgr", "dispose", UNKNOWN_VM),
                self.forge("gateway", "scheduler", "select", UNKNOWN_VM),
                self.forge(agent, "meter", "usage"),
                self.forge("gateway", "taskmgr", "heartbeat", "host-1"),
                self.forge("gateway", "stager", "seed", UNKNOWN_VM)]
        results = self.probes(runs)
        for (args, kw), (rc, out) in zip(runs, results):
            with self.subTest(cert=kw["cert"], service=kw["server"], kind=args[2]):
                self.assertEqual(rc, 0, out)
                self.assertEqual(out["error"]["code"], "FORBIDDEN", out)
        self.assert_store_unchanged(before, live)
        # Logged by the service that refused, once per flood rather than once per call.
        def logged():
            with open(os.path.join(self.p.log_dir, "approval.log")) as f:
                return '"refused a caller"' in f.read()
        wait_until(logged, 10, "approval logging the refusal")


if __name__ == "__main__":
    unittest.main(verbosity=2)
