#!/usr/bin/env python3
"""The `berth` CLI on its own and against a real gateway's login.

Offline: usage text, exit code 2 for bad usage, a clear error and exit 1 when the gateway
cannot be reached, a token file that others could read (or that is corrupt) refused.
With redis-server and berth-gateway (nothing else): `berth login` keeps its token in
$XDG_CONFIG_HOME/berth/token with mode 0600, a wrong password or a bad token gives the
server's message and exit 1, and the token is never sent to another URL.
The end-to-end story (request, wait, dispose, usage) is tested elsewhere.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_cli_basic.py
"""

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# deploy/platform.py, loaded by path once for every test (berth_test.py).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import berth_platform  # noqa: E402

COMMANDS = ["login", "templates", "hosts", "request", "vms", "vm show", "dispose", "task",
            "usage"]
PASSWORD = "cli-basic-password"


def cli_path():
    bin_dir = os.environ.get("BERTH_BIN_DIR")
    if not bin_dir:
        raise unittest.SkipTest("BERTH_BIN_DIR is not set")   # ctest always sets it
    path = os.path.join(bin_dir, "berth")
    if not os.access(path, os.X_OK):
        raise AssertionError("%s not found: build the berth-cli target" % path)
    return path


class CliCase(unittest.TestCase):
    """Each test gets its own config directory and an environment without stray BERTH_*."""

    def setUp(self):
        self.home = tempfile.mkdtemp(prefix="berth-cli-")
        self.addCleanup(shutil.rmtree, self.home, ignore_errors=True)
        self.config = os.path.join(self.home, "config")
        self.token_file = os.path.join(self.config, "berth", "token")

    def run_cli(self, *args, url=None, stdin=None, env=None, timeout=60):
        full = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        full.update({"HOME": self.home, "XDG_CONFIG_HOME": self.config})
        if url:
            full["BERTH_URL"] = url
        full.update(env or {})
        return subprocess.run([cli_path()] + list(args), input=stdin, env=full,
                              capture_output=True, text=True, timeout=timeout)

    def write_token_file(self, url, token="not-a-real-token", mode=0o600):
        os.makedirs(os.path.dirname(self.token_file), mode=0o700, exist_ok=True)
        with open(self.token_file, "w") as f:
            json.dump({"url": url, "user": "someone", "token": token}, f)
        os.chmod(self.token_file, mode)


class Offline(CliCase):
    """Nothing listens at the URL the CLI is pointed at."""

    def setUp(self):
        super().setUp()
        self.url = "http://127.0.0.1:%d" % berth_platform.free_port()

    def test_help_lists_every_command(self):
        r = self.run_cli("--help")
        self.assertEqual(r.returncode, 0, r.stderr)
        for command in COMMANDS:
            self.assertIn("  " + command, r.stdout)
        self.assertIn("-o table|json", r.stdout)

    def test_no_command_is_usage_error(self):
        r = self.run_cli()
        self.assertEqual(r.returncode, 2)
        self.assertIn("usage: berth", r.stderr)

    def test_unknown_command_exits_2(self):
        r = self.run_cli("frobnicate", url=self.url)
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown command frobnicate", r.stderr)

    def test_bad_arguments_exit_2_without_calling_the_gateway(self):
        cases = [
            ("-o", "xml", "templates"),
            ("templates", "-o", "xml"),
            ("request", "small"),                      # NAME missing
            ("request", "small", "web", "--count"),    # value missing
            ("request", "small", "web", "--count", "many"),
            ("vms", "--bogus"),
            ("vm", "frobnicate"),
            ("vm",),
            ("vm", "show"),
            ("task",),
            ("dispose", "a", "b"),
            ("usage", "--from", "-3x"),
            ("login", "a", "b"),
            ("login", "a", "--user", "b"),       # two different users
        ]
        for args in cases:
            with self.subTest(args=args):
                r = self.run_cli(*args, url=self.url)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertNotIn("cannot reach", r.stderr)
                self.assertIn("berth", r.stderr)

    def test_gateway_down_is_a_clear_error(self):
        for args in [("templates",), ("hosts",), ("vms",), ("vm", "show", "x"), ("task", "t"),
                     ("usage",), ("request", "small", "web"), ("dispose", "x")]:
            with self.subTest(args=args):
                r = self.run_cli(*args, url=self.url)
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertIn("cannot reach the gateway at %s" % self.url, r.stderr)
                self.assertEqual(r.stdout, "")

    def test_failed_login_keeps_no_token(self):
        r = self.run_cli("login", "--user", "admin", "--password-stdin", url=self.url,
                         stdin="secret\n")
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot reach the gateway", r.stderr)
        self.assertNotIn("secret", r.stderr + r.stdout)
        self.assertFalse(os.path.exists(self.token_file))

    def test_login_needs_a_user_and_a_password(self):
        r = self.run_cli("login", "--password-stdin", url=self.url, stdin="pw\n")
        self.assertEqual(r.returncode, 2)
        self.assertIn("no user name", r.stderr)
        r = self.run_cli("login", "--user", "admin", "--password-stdin", url=self.url, stdin="")
        self.assertEqual(r.returncode, 2)
        self.assertIn("no password", r.stderr)
        self.assertFalse(os.path.exists(self.token_file))

    def test_token_file_others_can_read_is_refused(self):
        for mode in (0o644, 0o640, 0o604):
            with self.subTest(mode=oct(mode)):
                self.write_token_file(self.url, mode=mode)
                r = self.run_cli("vms", url=self.url)
                self.assertEqual(r.returncode, 1)
                self.assertIn(self.token_file, r.stderr)
                self.assertIn("other users", r.stderr)
                self.assertNotIn("cannot reach", r.stderr)   # refused before any request
        # Private again: the CLI goes on to the gateway (which is down).
        os.chmod(self.token_file, 0o600)
        r = self.run_cli("vms", url=self.url)
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot reach the gateway", r.stderr)

    def test_corrupt_token_file_is_refused(self):
        os.makedirs(os.path.dirname(self.token_file), mode=0o700)
        with open(self.token_file, "w") as f:
            f.write("{not json")
        os.chmod(self.token_file, 0o600)
        r = self.run_cli("hosts", url=self.url)
        self.assertEqual(r.returncode, 1)
        self.assertIn("corrupt", r.stderr)

    def test_url_comes_from_the_token_file(self):
        """Without --url or BERTH_URL the CLI talks to the gateway it logged in to."""
        self.write_token_file(self.url)
        r = self.run_cli("templates")
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot reach the gateway at %s" % self.url, r.stderr)
        other = "http://127.0.0.1:%d" % berth_platform.free_port()
        r = self.run_cli("--url", other, "templates")
        self.assertIn("cannot reach the gateway at %s" % other, r.stderr)


class WithGateway(CliCase):
    """redis-server and berth-gateway only: login and the bearer token."""

    @classmethod
    def setUpClass(cls):
        cli_path()
        cls.platform = berth_platform.Platform(
            admin_password=PASSWORD,
            # Logins are polled until the bootstrap admin exists, and some fail on
            # purpose: the failed-login throttle (test_accounts) is not under test here.
            env={"BERTH_LOGIN_FAIL_USER_MAX": "1000", "BERTH_LOGIN_FAIL_ADDRESS_MAX": "1000"})
        try:
            cls.platform.start_redis()
            cls.platform.start_gateway()
            cls.platform.wait_http("/healthz", timeout=30)
            cls.wait_admin(timeout=30)
        except Exception:
            cls.platform.dump_logs()
            cls.platform.stop()
            raise

    @classmethod
    def wait_admin(cls, timeout):
        """The gateway serves HTTP before its bootstrap admin exists (the Argon2id hash takes
        a moment): poll until the admin can log in."""
        deadline = time.monotonic() + timeout
        while True:
            cls.platform.check_alive()
            r = cls.platform.http("POST", "/v1/auth/tokens",
                                  {"username": "admin", "password": PASSWORD})
            if r.status == 201:
                return
            if time.monotonic() > deadline:
                raise TimeoutError("admin cannot log in after %.0fs: %r" % (timeout, r))
            time.sleep(0.1)

    @classmethod
    def tearDownClass(cls):
        cls.platform.stop()

    def login(self, password=PASSWORD, url=None):
        return self.run_cli("login", "--user", "admin", "--password-stdin",
                            url=url or self.platform.url, stdin=password + "\n")

    def test_login_keeps_a_private_token(self):
        r = self.login()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("logged in to %s as admin" % self.platform.url, r.stdout)
        self.assertNotIn(PASSWORD, r.stdout + r.stderr)
        st = os.stat(self.token_file)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(self.token_file)).st_mode), 0o700)
        with open(self.token_file) as f:
            saved = json.load(f)
        self.assertEqual(saved["url"], self.platform.url)
        self.assertEqual(saved["user"], "admin")
        self.assertTrue(saved["token"])
        self.assertNotIn(PASSWORD, json.dumps(saved))
        # The token works: the VM list (read by the gateway from Redis) answers.
        r = self.run_cli("-o", "json", "vms", url=self.platform.url)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["vms"], [])
        r = self.run_cli("vms", url=self.platform.url)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith("NAME"), r.stdout)

    def test_login_replaces_a_token_file_others_could_read(self):
        self.write_token_file(self.platform.url, mode=0o644)
        r = self.login()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(stat.S_IMODE(os.stat(self.token_file).st_mode), 0o600)

    def test_password_from_the_environment(self):
        r = self.run_cli("login", url=self.platform.url, stdin="",
                         env={"BERTH_USER": "admin", "BERTH_PASSWORD": PASSWORD})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(os.path.exists(self.token_file))

    def test_wrong_password_prints_the_server_message(self):
        r = self.login(password="wrong-password")
        self.assertEqual(r.returncode, 1)
        self.assertIn("HTTP 401", r.stderr)
        self.assertNotIn("run berth login", r.stderr)
        self.assertFalse(os.path.exists(self.token_file))

    def test_not_logged_in_or_bad_token_says_run_login(self):
        r = self.run_cli("vms", url=self.platform.url)
        self.assertEqual(r.returncode, 1)
        self.assertIn("not logged in or token expired: run berth login", r.stderr)
        self.write_token_file(self.platform.url, token="A" * 43)
        r = self.run_cli("vms", url=self.platform.url)
        self.assertEqual(r.returncode, 1)
        self.assertIn("not logged in or token expired: run berth login", r.stderr)

    def test_token_goes_only_to_the_url_that_issued_it(self):
        self.assertEqual(self.login().returncode, 0)
        same = self.platform.url + "/"      # the same URL, written differently
        r = self.run_cli("vms", url=same)
        self.assertEqual(r.returncode, 0, r.stderr)
        other = self.platform.url.replace("127.0.0.1", "localhost")
        r = self.run_cli("vms", url=other)
        self.assertEqual(r.returncode, 1)
        self.assertIn("not logged in", r.stderr)

    def test_server_errors_print_the_message(self):
        self.assertEqual(self.login().returncode, 0)
        r = self.run_cli("vm", "show", "no-such-vm", url=self.platform.url)
        self.assertEqual(r.returncode, 1)
        self.assertIn("HTTP 404", r.stderr)
        self.assertEqual(r.stdout, "")
        r = self.run_cli("usage", "--from", "not-a-time", url=self.platform.url)
        self.assertEqual(r.returncode, 1)
        self.assertIn("ISO 8601", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
