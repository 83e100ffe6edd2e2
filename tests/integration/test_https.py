"""The gateway serves HTTPS with the certificate berth-secrets made (the one `make run`
prints the fingerprint of), and plain HTTP only on loopback.

- Over TLS, the certificate the gateway presents is that file (same SHA-256 fingerprint),
  valid for 127.0.0.1, and the API works through it; a plain HTTP request to the same port
  gets no HTTP answer.
- The CLI works over HTTPS given the certificate (--cacert or BERTH_CA_FILE) and refuses
  the gateway without it: verification is never skipped. Pinned to the printed fingerprint
  (--pin or BERTH_PIN) it works without the file, and a pin the gateway's certificate does
  not match is refused with both fingerprints named, even with the right --cacert.
- The portal is served over TLS too, and its session cookies are Secure there.
- A gateway asked to serve plain HTTP on a non-loopback address does not start, and says
  why; so does one given only half of the certificate/key pair.
"""

import json
import os
import socket
import ssl
import subprocess
import tempfile
import time
import unittest
import urllib.request

import berth_test
from berth_test import berth_platform


class Https(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.p = berth_test.Platform(tls=True)
        try:
            cls.p.start_all(agents=1)
            cls.api = berth_test.Api(cls.p)
        except BaseException:
            cls.p.dump_logs()
            cls.p.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.p.stop()

    def test_served_over_tls_with_the_printed_certificate(self):
        context = self.p.ssl_context()
        with socket.create_connection(("127.0.0.1", self.p.http_port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                der = tls.getpeercert(binary_form=True)
                version = tls.version()
        self.assertEqual(berth_platform.cert_fingerprint(der), self.p.tls_fingerprint())
        self.assertIn(version, ("TLSv1.2", "TLSv1.3"))
        self.assertTrue(self.p.url.startswith("https://"))
        self.assertEqual(self.p.http("GET", "/readyz").status, 200)
        self.assertEqual(self.api.call("GET", "/v1/templates").status, 200)

    def test_portal_and_secure_session_cookies(self):
        context = self.p.ssl_context()
        with urllib.request.urlopen(self.p.url + "/", context=context, timeout=10) as page:
            self.assertEqual(page.status, 200)
            self.assertIn("script-src 'self'", page.headers["Content-Security-Policy"])
        body = json.dumps({"username": self.p.admin_user, "password": self.p.admin_password,
                           "session": True}).encode()
        req = urllib.request.Request(self.p.url + "/v1/auth/tokens", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=context, timeout=10) as r:
            self.assertEqual(r.status, 201)
            cookies = r.headers.get_all("Set-Cookie") or []
        self.assertEqual({c.split("=", 1)[0] for c in cookies}, {"berth_session", "berth_csrf"})
        for c in cookies:
            self.assertIn("Secure", [a.strip() for a in c.split(";")], c)

    def test_plain_http_on_the_tls_port_gets_no_answer(self):
        with socket.create_connection(("127.0.0.1", self.p.http_port), timeout=10) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = b""
            try:
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except (ConnectionResetError, socket.timeout):
                pass
        self.assertFalse(data.startswith(b"HTTP/"), data[:80])

    def test_an_untrusted_client_is_refused_by_its_own_check(self):
        with self.assertRaises(ssl.SSLCertVerificationError):
            with socket.create_connection(("127.0.0.1", self.p.http_port), timeout=10) as raw:
                ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")

    def cli(self, *args, ca_env=None, pin_env=None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        env.update({"BERTH_URL": self.p.url, "XDG_CONFIG_HOME": self.home,
                    "BERTH_PASSWORD": self.p.admin_password})
        if ca_env:
            env["BERTH_CA_FILE"] = ca_env
        if pin_env:
            env["BERTH_PIN"] = pin_env
        return subprocess.run([self.p.binary("berth")] + list(args), env=env,
                              capture_output=True, text=True, timeout=60)

    def test_cli_over_https(self):
        home = tempfile.TemporaryDirectory(prefix="berth-cli-")
        self.addCleanup(home.cleanup)
        self.home = home.name
        ok = self.cli("--cacert", self.p.ca_file, "login", "--user", self.p.admin_user)
        self.assertEqual(ok.returncode, 0, ok.stderr)
        vms = self.cli("vms", ca_env=self.p.ca_file)   # with the token login kept
        self.assertEqual(vms.returncode, 0, vms.stderr)
        refused = self.cli("vms")   # the system's CAs do not know this certificate
        self.assertEqual(refused.returncode, 1)
        self.assertIn("not trusted", refused.stderr)

    def test_cli_pinned(self):
        home = tempfile.TemporaryDirectory(prefix="berth-cli-")
        self.addCleanup(home.cleanup)
        self.home = home.name
        printed = self.p.tls_fingerprint()   # AA:BB:..., as make run prints it
        ok = self.cli("--pin", "sha256:" + printed, "login", "--user", self.p.admin_user)
        self.assertEqual(ok.returncode, 0, ok.stderr)
        plain = "sha256:" + printed.replace(":", "").lower()
        vms = self.cli("vms", pin_env=plain)   # no CA file: the pin alone is trusted
        self.assertEqual(vms.returncode, 0, vms.stderr)
        # One bit off: refused, whatever else would have trusted the certificate.
        wrong = bytearray.fromhex(printed.replace(":", ""))
        wrong[-1] ^= 1
        wrong = "sha256:" + wrong.hex()
        for refused in (self.cli("vms", pin_env=wrong, ca_env=self.p.ca_file),
                        self.cli("--pin", wrong, "vms")):
            self.assertEqual(refused.returncode, 1, refused.stderr)
            self.assertIn("other than the pinned one", refused.stderr)
            self.assertIn(printed, refused.stderr)
            self.assertIn(wrong[7:].upper()[:2] + ":", refused.stderr)
        for bad in ("sha1:" + printed, "sha256:abc", "sha256:" + "g" * 64, printed):
            usage = self.cli("--pin", bad, "vms")
            self.assertEqual(usage.returncode, 2, (bad, usage.stderr))
            self.assertIn("--pin", usage.stderr)

    def start_alone(self, env):
        """Start a second gateway with env; its exit status and log once it exited."""
        proc = self.p.start("gateway", env=dict({
            "BERTH_HTTP_PORT": str(self.p.free_port()),
            "BERTH_ADMIN_PASSWORD": self.p.admin_password}, **env))
        status = proc.wait(30)
        self.assertIsNotNone(status, "the gateway kept running")
        return status, proc.tail(50)

    def test_plain_http_off_loopback_is_refused_at_start(self):
        status, log = self.start_alone({"BERTH_HTTP_BIND": "0.0.0.0"})
        self.assertNotEqual(status, 0)
        self.assertIn("refusing plain HTTP on a non-loopback address", log)
        status, log = self.start_alone({"BERTH_HTTP_BIND": "127.0.0.1",
                                        "BERTH_HTTP_TLS_CERT": self.p.ca_file})
        self.assertNotEqual(status, 0)
        self.assertIn("http_tls_cert and http_tls_key go together", log)


if __name__ == "__main__":
    unittest.main()
