#!/usr/bin/env python3
"""Each process reads only its own secrets: berth-secrets writes DIR/views/<name>, one per
process kind, and the platform (make run, these tests) points each process's secrets_dir at
its own view. The whole platform works so (a VM is provisioned through it); the gateway
alone holds assertion.key, token.secret, user.secret and the HTTPS key; an agent holds no Redis password
and no assertion key; and a process given another's view does not start.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_secret_views.py
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import PlatformCase  # noqa: E402

STORE = "curve/public"
SERVICE = {"assertion.pub", "redis.password"}
# What each view holds besides its own certificate (curve/<name>.key) and the public store.
EXPECTED = {
    "gateway": SERVICE | {"assertion.key", "token.secret", "gateway.key", "gateway.crt",
                          "user.secret"},
    "approval": SERVICE, "scheduler": SERVICE, "taskmgr": SERVICE, "stager": SERVICE,
    "meter": SERVICE,
    "agent-host-1": set(),
}


def files(top):
    """Every file under top, as paths relative to it."""
    out = set()
    for root, _, names in os.walk(top):
        for name in names:
            out.add(os.path.relpath(os.path.join(root, name), top))
    return out


class SecretViews(PlatformCase):
    agents = 1
    wait_hosts = 1

    def test_each_process_runs_on_its_own_view(self):
        store = {os.path.join(STORE, n) for n in os.listdir(os.path.join(self.p.secrets_dir,
                                                                          STORE))}
        running = {}
        for proc in self.p.procs:
            if proc.alive():
                running[proc.env.get("BERTH_CURVE_CERT") or proc.service] = proc
        self.assertEqual(set(running), set(EXPECTED))
        for name, extra in EXPECTED.items():
            with self.subTest(name):
                view = self.p.view_dir(name)
                self.assertEqual(running[name].env["BERTH_SECRETS_DIR"], view)
                self.assertEqual(files(view), extra | store | {"curve/%s.key" % name})
                for secret in files(view) - {"assertion.pub"}:
                    self.assertEqual(os.stat(os.path.join(view, secret)).st_mode & 0o077, 0,
                                     secret)
        # The platform works on them: a user's VM is provisioned end to end.
        user = self.api.create_user("viewer", "views-test-pw")
        req = user.request("small", "on-views")
        user.wait_vm(req["vms"][0]["id"], ("ACTIVE",))

    def test_secrets_only_where_needed(self):
        for name in EXPECTED:
            held = files(self.p.view_dir(name))
            with self.subTest(name):
                if name != "gateway":
                    self.assertFalse(held & {"assertion.key", "token.secret", "gateway.key",
                                             "user.secret"})
                self.assertEqual("redis.password" in held, not name.startswith("agent-"))
                self.assertEqual([k for k in held if k.startswith("curve/") and
                                  k.endswith(".key")], ["curve/%s.key" % name])
        self.assertEqual(files(self.p.view_dir("redis")), {"redis.acl", "redis-admin.password"})

    def refused_start(self, service, view, expect):
        """Start service on another process's view: it exits, and its log says why."""
        proc = self.p.start(service, name="%s-on-%s" % (service, view),
                            env={"BERTH_SECRETS_DIR": self.p.view_dir(view)})
        alive = proc.wait(30) is None
        if alive:
            proc.kill()
            proc.wait(30)
        self.p.procs.remove(proc)  # an exit asked for: not one check_alive should report
        log = proc.tail(40)
        proc.close()
        self.assertFalse(alive, "%s started on the %s view" % (service, view))
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn(expect, log)

    def test_another_view_does_not_start(self):
        # approval on the scheduler's view: no certificate of its own there.
        self.refused_start("approval", "scheduler", "views/scheduler/curve/approval.key")
        # The gateway on approval's view: nor its certificate (nor its keys).
        self.refused_start("gateway", "approval", "views/approval/curve/gateway.key")


if __name__ == "__main__":
    unittest.main(verbosity=2)
