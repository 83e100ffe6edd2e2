#!/usr/bin/env python3
"""The portal's serving and sessions (issue 11): the gateway serves gateway/web at / with a
strong ETag (304 when the client has it), gzip when the client accepts it, the right content
types and a Content-Security-Policy without inline script on every page; a path that climbs
out of the web root is refused, and /v1 is the API as before (its 404s stay JSON). A portal
session is an HttpOnly, SameSite=Strict cookie; a state-changing call with it needs the
anti-CSRF header, bearer clients do not; logout revokes the session. Only Redis and the
gateway run.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_portal.py
"""

import gzip
import http.client
import json
import os
import socket
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import ROOT, Api, Platform  # noqa: E402

WEB = os.path.join(ROOT, "gateway", "web")


class PortalCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.p = Platform()
        try:
            cls.p.start_redis()
            cls.p.start_gateway()
            cls.p.wait_http("/healthz")
            cls.api = Api(cls.p)
        except Exception:
            cls.p.dump_logs()
            cls.p.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.p.stop()

    def run(self, result=None):
        failures = len(result.failures) + len(result.errors) if result else 0
        out = super().run(result)
        if result and len(result.failures) + len(result.errors) > failures:
            self.p.dump_logs()
        return out

    def fetch(self, method, path, headers=None, body=None):
        """One raw request (no contract check: the portal's files are not the API)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.p.http_port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def raw_path(self, path):
        """The status of a GET whose request line carries path byte for byte (http.client
        would keep it, but a test of traversal must not depend on that)."""
        with socket.create_connection(("127.0.0.1", self.p.http_port), timeout=10) as s:
            s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return int(data.split(b" ", 2)[1]), data

    def test_index_page_with_csp(self):
        status, h, body = self.fetch("GET", "/")
        self.assertEqual(status, 200)
        self.assertEqual(h["content-type"], "text/html; charset=utf-8")
        with open(os.path.join(WEB, "index.html"), "rb") as f:
            self.assertEqual(body, f.read())
        csp = h["content-security-policy"]
        directives = {d.strip().split(" ")[0]: d.strip() for d in csp.split(";")}
        self.assertEqual(directives["script-src"], "script-src 'self'")
        self.assertNotIn("unsafe-inline", csp)
        self.assertEqual(h["x-content-type-options"], "nosniff")
        self.assertTrue(h.get("x-request-id"))
        # The page has no inline script for the CSP to block: every <script> has a src.
        self.assertNotRegex(body.decode(), r"<script(?![^>]*\bsrc=)[^>]*>")

    def test_content_types(self):
        for path, ctype in (("/app.css", "text/css; charset=utf-8"),
                            ("/js/app.js", "text/javascript; charset=utf-8"),
                            ("/favicon.svg", "image/svg+xml")):
            status, h, _ = self.fetch("GET", path)
            self.assertEqual(status, 200, path)
            self.assertEqual(h["content-type"], ctype, path)
            self.assertIn("content-security-policy", h, path)

    def test_etag_revalidation(self):
        status, h, body = self.fetch("GET", "/js/app.js")
        self.assertEqual(status, 200)
        etag = h["etag"]
        self.assertRegex(etag, r'^"[0-9a-f]{32}"$')
        self.assertEqual(h["cache-control"], "no-cache")
        status, h2, body2 = self.fetch("GET", "/js/app.js", {"If-None-Match": etag})
        self.assertEqual(status, 304)
        self.assertEqual(body2, b"")
        self.assertEqual(h2["etag"], etag)
        # Another file's tag does not match.
        _, other, _ = self.fetch("GET", "/app.css")
        status, _, body3 = self.fetch("GET", "/js/app.js", {"If-None-Match": other["etag"]})
        self.assertEqual(status, 200)
        self.assertEqual(body3, body)

    def test_gzip_when_accepted(self):
        status, h, plain = self.fetch("GET", "/js/app.js")
        self.assertNotIn("content-encoding", h)
        status, h, packed = self.fetch("GET", "/js/app.js", {"Accept-Encoding": "br, gzip"})
        self.assertEqual(status, 200)
        self.assertEqual(h["content-encoding"], "gzip")
        self.assertEqual(h["vary"], "Accept-Encoding")
        self.assertLess(len(packed), len(plain))
        self.assertEqual(gzip.decompress(packed), plain)
        # The gzip copy has its own tag, and revalidates too.
        status, _, _ = self.fetch("GET", "/js/app.js",
                                  {"Accept-Encoding": "gzip", "If-None-Match": h["etag"]})
        self.assertEqual(status, 304)
        # gzip;q=0 means no gzip.
        _, h, body = self.fetch("GET", "/js/app.js", {"Accept-Encoding": "gzip;q=0"})
        self.assertNotIn("content-encoding", h)
        self.assertEqual(body, plain)

    def test_head(self):
        status, h, body = self.fetch("HEAD", "/")
        self.assertEqual(status, 200)
        self.assertEqual(body, b"")
        self.assertIn("etag", h)

    def test_traversal_refused(self):
        secret = os.path.join(ROOT, "CMakeLists.txt")
        self.assertTrue(os.path.exists(secret))
        for path in ("/../CMakeLists.txt", "/js/../../CMakeLists.txt", "/..%2fCMakeLists.txt",
                     "/%2e%2e/CMakeLists.txt", "/js/..", "//etc/passwd", "/.hidden",
                     "/js/./app.js", "/js/app.js/"):
            status, data = self.raw_path(path)
            self.assertIn(status, (400, 404), path)
            self.assertNotIn(b"add_executable", data, path)
            self.assertNotIn(b"root:", data, path)

    def test_unknown_file_and_methods(self):
        status, h, body = self.fetch("GET", "/nowhere.html")
        self.assertEqual(status, 404)
        self.assertEqual(json.loads(body)["error"]["code"], "NOT_FOUND")
        # Files are read-only: another method is not served from the web root.
        status, _, _ = self.fetch("POST", "/index.html", {"Content-Type": "application/json"},
                                  b"{}")
        self.assertEqual(status, 404)

    def test_api_unchanged(self):
        status, h, body = self.fetch("GET", "/v1/nowhere")
        self.assertEqual(status, 404)
        self.assertEqual(h["content-type"], "application/json")
        self.assertEqual(json.loads(body)["error"]["code"], "NOT_FOUND")
        status, h, body = self.fetch("GET", "/v1")
        self.assertEqual(status, 404)
        self.assertEqual(h["content-type"], "application/json")
        status, h, body = self.fetch("GET", "/v1/users",
                                     {"Authorization": "Bearer " + self.api.token})
        self.assertEqual(status, 200)
        self.assertIn("users", json.loads(body))
        self.assertEqual(h["cache-control"], "no-store")


    # ---- sessions ----

    def session(self):
        """Sign in as the portal does: the session and CSRF cookies, and the answer."""
        body = json.dumps({"username": self.p.admin_user, "password": self.p.admin_password,
                           "session": True}).encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.p.http_port, timeout=10)
        try:
            conn.request("POST", "/v1/auth/tokens", body=body,
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            cookies = r.headers.get_all("Set-Cookie") or []
            answer = json.loads(r.read())
            self.assertEqual(r.status, 201, answer)
        finally:
            conn.close()
        jar = {}
        for c in cookies:
            name, rest = c.split("=", 1)
            value, _, attrs = rest.partition(";")
            jar[name] = (value, [a.strip() for a in attrs.split(";") if a.strip()])
        return answer, jar

    def test_session_cookie_flags(self):
        answer, jar = self.session()
        self.assertNotIn("token", answer)      # the token is only in the HttpOnly cookie
        self.assertRegex(answer["csrf_token"], r"^[A-Za-z0-9_-]{43}$")
        value, attrs = jar["berth_session"]
        self.assertRegex(value, r"^[A-Za-z0-9_-]{43}$")
        for flag in ("HttpOnly", "SameSite=Strict", "Path=/"):
            self.assertIn(flag, attrs)
        self.assertTrue(any(a.startswith("Max-Age=") and int(a[8:]) > 0 for a in attrs))
        csrf, attrs = jar["berth_csrf"]
        self.assertEqual(csrf, answer["csrf_token"])
        self.assertIn("SameSite=Strict", attrs)
        self.assertNotIn("HttpOnly", attrs)    # the portal's script reads it

    def test_csrf_required_with_cookie(self):
        answer, jar = self.session()
        cookie = "berth_session=%s; berth_csrf=%s" % (jar["berth_session"][0],
                                                      jar["berth_csrf"][0])
        # Reads need no CSRF token.
        status, _, body = self.fetch("GET", "/v1/users/" + self.p.admin_user, {"Cookie": cookie})
        self.assertEqual(status, 200, body)
        change = json.dumps({"display_name": "Portal Admin"}).encode()
        path = "/v1/users/" + self.p.admin_user
        json_type = {"Content-Type": "application/json"}
        # A cross-site POST carries the cookie but cannot read berth_csrf: refused, unchanged.
        for extra in ({}, {"X-CSRF-Token": "x" * 43},
                      {"X-CSRF-Token": jar["berth_session"][0]}):
            status, _, body = self.fetch("PATCH", path, dict(json_type, Cookie=cookie, **extra),
                                         change)
            self.assertEqual(status, 403, body)
            self.assertEqual(json.loads(body)["error"]["code"], "FORBIDDEN")
        _, _, body = self.fetch("GET", path, {"Cookie": cookie})
        self.assertNotEqual(json.loads(body)["user"].get("display_name"), "Portal Admin")
        status, _, body = self.fetch("PATCH", path, dict(json_type, Cookie=cookie,
                                                         **{"X-CSRF-Token": answer["csrf_token"]}),
                                     change)
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["user"]["display_name"], "Portal Admin")
        # Bearer-token clients are unaffected: no CSRF header, no cookie.
        status, _, body = self.fetch("PATCH", path, dict(json_type, Authorization="Bearer " +
                                                         self.api.token),
                                     json.dumps({"display_name": "Admin"}).encode())
        self.assertEqual(status, 200, body)
        # A session cookie never carries an API key.
        status, _, _ = self.fetch("GET", path, {"Cookie": "berth_session=bk_" + "a" * 40})
        self.assertEqual(status, 401)

    def test_logout_revokes_session(self):
        answer, jar = self.session()
        cookie = "berth_session=%s; berth_csrf=%s" % (jar["berth_session"][0],
                                                      jar["berth_csrf"][0])
        path = "/v1/users/" + self.p.admin_user
        self.assertEqual(self.fetch("GET", path, {"Cookie": cookie})[0], 200)
        # Logout is state-changing too: without the header it is refused, and nothing ends.
        self.assertEqual(self.fetch("DELETE", "/v1/auth/tokens/current", {"Cookie": cookie})[0],
                         403)
        self.assertEqual(self.fetch("GET", path, {"Cookie": cookie})[0], 200)
        conn = http.client.HTTPConnection("127.0.0.1", self.p.http_port, timeout=10)
        try:
            conn.request("DELETE", "/v1/auth/tokens/current",
                         headers={"Cookie": cookie, "X-CSRF-Token": answer["csrf_token"]})
            r = conn.getresponse()
            cleared = r.headers.get_all("Set-Cookie") or []
            r.read()
            self.assertEqual(r.status, 200)
        finally:
            conn.close()
        names = {c.split("=", 1)[0] for c in cleared if "Max-Age=0" in c}
        self.assertEqual(names, {"berth_session", "berth_csrf"})
        status, _, body = self.fetch("GET", path, {"Cookie": cookie})
        self.assertEqual(status, 401, body)


class WebRootCase(unittest.TestCase):
    """web_root set to a directory of the test's: only its regular, visible files of known
    types are served (a symbolic link to a file outside it is not followed), and a web_root
    that does not exist stops the gateway at start, saying why."""

    @classmethod
    def setUpClass(cls):
        cls.p = Platform()
        cls.root = os.path.join(cls.p.data_dir, "web")
        os.makedirs(os.path.join(cls.root, "sub"))
        files = {"index.html": "<!doctype html><title>t</title>", "sub/page.html": "<p>sub</p>",
                 ".secret.html": "hidden", "notes.conf": "no type", "sub/data.json": "{}"}
        for name, text in files.items():
            with open(os.path.join(cls.root, name), "w") as f:
                f.write(text)
        outside = os.path.join(cls.p.data_dir, "outside.html")
        with open(outside, "w") as f:
            f.write("outside the root")
        os.symlink(outside, os.path.join(cls.root, "link.html"))
        try:
            cls.p.start_redis()
            cls.p.start_gateway({"BERTH_WEB_ROOT": cls.root})
            cls.p.wait_http("/healthz")
        except Exception:
            cls.p.dump_logs()
            cls.p.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.p.stop()

    def status(self, path):
        conn = http.client.HTTPConnection("127.0.0.1", self.p.http_port, timeout=10)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def test_only_visible_regular_files_of_known_types(self):
        self.assertEqual(self.status("/"), (200, b"<!doctype html><title>t</title>"))
        self.assertEqual(self.status("/sub/page.html"), (200, b"<p>sub</p>"))
        self.assertEqual(self.status("/sub/data.json")[0], 200)
        for path in ("/.secret.html", "/notes.conf", "/link.html", "/sub", "/sub/"):
            status, body = self.status(path)
            self.assertIn(status, (400, 404), path)
            self.assertNotIn(b"outside the root", body)

    def test_missing_web_root_stops_the_gateway(self):
        proc = self.p.start("gateway", env={
            "BERTH_HTTP_BIND": "127.0.0.1", "BERTH_HTTP_PORT": str(self.p.free_port()),
            "BERTH_ADMIN_USER": "admin", "BERTH_ADMIN_PASSWORD": self.p.admin_password,
            "BERTH_WEB_ROOT": os.path.join(self.root, "nowhere")})
        rc = proc.wait(30)
        self.assertIsNotNone(rc, "the gateway kept running without its web root")
        self.assertNotEqual(rc, 0)
        self.assertIn("cannot read the web root", proc.tail(50))


if __name__ == "__main__":
    unittest.main(verbosity=2)
