#!/usr/bin/env python3
"""The `berth` CLI drives the whole story once: login, templates, hosts, request --wait, vms,
vm show, task, dispose --wait, usage; tables by default, -o json for scripts, server errors
printed with a non-zero exit.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_cli.py
"""

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
from berth_test import CheckedProxy, Platform, wait_until  # noqa: E402


class Cli(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.p = Platform()
        cls.home = tempfile.mkdtemp(prefix="berth-cli-")
        try:
            cls.p.start_all(agents=2)
            # The CLI talks to the gateway through a proxy that holds every call to
            # docs/openapi.yaml.
            cls.proxy = CheckedProxy(cls.p)
        except BaseException:
            cls.p.dump_logs()
            cls.p.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.home, ignore_errors=True)
        cls.proxy.close()
        cls.p.stop()

    def berth(self, *args, stdin=None, check=True):
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        env.update({"BERTH_URL": self.proxy.url, "XDG_CONFIG_HOME": self.home,
                    "HOME": self.home})
        r = subprocess.run([self.p.binary("berth")] + list(args), input=stdin, env=env,
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(self.proxy.violations, [], "berth %s" % " ".join(args))
        if check and r.returncode != 0:
            self.p.dump_logs()
            raise AssertionError("berth %s exited %d:\n%s\n%s"
                                 % (" ".join(args), r.returncode, r.stdout, r.stderr))
        return r

    def test_story(self):
        r = self.berth("vms", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("berth login", r.stderr)

        r = self.berth("login", "--user", self.p.admin_user, "--password-stdin",
                       stdin="wrong\n", check=False)
        self.assertNotEqual(r.returncode, 0)
        # The user name may be given as the one argument.
        self.berth("login", self.p.admin_user, "--password-stdin",
                   stdin=self.p.admin_password + "\n")
        token_file = os.path.join(self.home, "berth", "token")
        self.assertEqual(os.stat(token_file).st_mode & 0o777, 0o600)

        out = self.berth("templates").stdout
        for name in ("small", "medium", "large"):
            self.assertIn(name, out)
        templates = json.loads(self.berth("-o", "json", "templates").stdout)["templates"]
        self.assertGreaterEqual(len(templates), 3)
        self.assertIn("host-1", self.berth("hosts").stdout)

        r = self.berth("request", "small", "cli-vm", "--wait")
        self.assertIn("ACTIVE", r.stdout)
        self.assertIn("100%", r.stdout)
        vms = json.loads(self.berth("-o", "json", "vms").stdout)["vms"]
        vm = [v for v in vms if v["name"] == "cli-vm"][0]
        self.assertEqual(vm["state"], "ACTIVE")
        # The table names the template and the group, not their ids.
        row = next(l for l in self.berth("vms").stdout.splitlines() if l.startswith("cli-vm"))
        self.assertEqual(row.split()[4:6], ["small", "default"], row)
        shown = json.loads(self.berth("-o", "json", "vm", "show", vm["id"]).stdout)["vm"]
        self.assertEqual(shown["id"], vm["id"])
        self.assertIn("RUNNING", self.berth("vm", "show", vm["id"]).stdout)
        task = json.loads(self.berth("-o", "json", "task", shown["task"]).stdout)["task"]
        self.assertEqual(task["state"], "SUCCEEDED")

        r = self.berth("dispose", vm["id"], "--wait")
        self.assertIn("DISPOSED", r.stdout)
        shown = json.loads(self.berth("-o", "json", "vm", "show", vm["id"]).stdout)["vm"]
        self.assertEqual(shown["state"], "DISPOSED")

        usage = json.loads(self.berth("-o", "json", "usage").stdout)["usage"]
        self.assertIn(vm["id"], [u["vm"] for u in usage])
        self.assertIn(vm["id"][:8], self.berth("usage").stdout)

        r = self.berth("request", "no-such-template", "x", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("unknown template", r.stderr)
        # The error's code and details are printed with its message.
        self.assertIn("(NOT_FOUND, field: template; HTTP 404)", r.stderr)
        r = self.berth("vm", "show", "00000000-0000-4000-8000-000000000000", check=False)
        self.assertNotEqual(r.returncode, 0)

    def test_t_request_sent_again_once_made(self):
        """A request the platform could not take (approval down: 503) is sent again with the
        same Idempotency-Key until it is, and made once."""
        self.berth("login", self.p.admin_user, "--password-stdin",
                   stdin=self.p.admin_password + "\n")
        approval = [p for p in self.p.procs if p.service == "approval" and p.alive()][0]
        approval.kill(signal.SIGTERM)
        wait_until(lambda: not approval.alive(), 30, "approval stopped")
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        env.update({"BERTH_URL": self.proxy.url, "XDG_CONFIG_HOME": self.home,
                    "HOME": self.home})
        first_call = len(self.proxy.calls)
        cli = subprocess.Popen([self.p.binary("berth"), "request", "small", "resent"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        said = []
        reader = threading.Thread(target=lambda: said.extend(cli.stderr), daemon=True)
        reader.start()
        try:
            wait_until(lambda: any("sending it again" in line for line in said), 30,
                       "the CLI saying it sends the request again")
        finally:
            self.p.restart(approval)  # from this (the main) thread: it outlives the test
        out, _ = cli.communicate(timeout=60)
        reader.join(10)
        self.assertEqual(cli.returncode, 0, "".join(said) + out)
        # Every time it was sent, it carried the same key.
        keys = [{k.lower(): v for k, v in h.items()}.get("idempotency-key")
                for m, path, h in self.proxy.calls[first_call:]
                if m == "POST" and path == "/v1/requests"]
        self.assertGreaterEqual(len(keys), 2, keys)
        self.assertEqual(len(set(keys)), 1, keys)
        self.assertIsNotNone(keys[0])
        self.assertEqual(self.proxy.violations, [])
        made = [r for r in json.loads(self.berth("-o", "json", "requests").stdout)["requests"]
                if r["name"] == "resent"]
        self.assertEqual(len(made), 1, made)


if __name__ == "__main__":
    unittest.main(verbosity=2)
