#!/usr/bin/env python3
"""The gateway's REST edge: auth, access control, input validation and the resource views.

A real redis-server and the real berth-gateway binary, nothing else: what the gateway reads
from Redis (VMs, tasks, requests, hosts) is written here in the layout of docs/state.md, the
way approval, taskmgr and scheduler write it. Calls that need another service (approval,
taskmgr, meter) are checked for what the edge owns: validation before the call, and 503
when nobody answers. The full provisioning story is tested with every service running.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_gateway_api.py
"""

import hashlib
import hmac
import http.client
import json
import os
import sys
import re
import threading
import time
import unittest
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# deploy/platform.py, loaded by path once for every test (berth_test.py).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import berth_platform, wait_until  # noqa: E402

ADMIN_PASSWORD = "gateway-test-admin-pw"
CALL_TIMEOUT_MS = 500            # no other service runs: calls to them must give up quickly
BODY_MAX = 1048576               # the gateway's default http_body_max


def now_ms():
    return int(time.time() * 1000)


class GatewayApi(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.p = berth_platform.Platform(
            admin_password=ADMIN_PASSWORD,
            # Logins are polled until the bootstrap admin exists, and some fail on
            # purpose: the failed-login throttle (test_accounts) is not under test here.
            env={"BERTH_LOGIN_FAIL_USER_MAX": "1000", "BERTH_LOGIN_FAIL_ADDRESS_MAX": "1000"})
        try:
            cls.p.start_redis()
            cls.gateway = cls.p.start_gateway(
                env={"BERTH_HTTP_CALL_TIMEOUT_MS": str(CALL_TIMEOUT_MS)})
            cls.p.wait_http("/healthz", timeout=30)
            # The admin is bootstrapped on the service loop: poll until a login works.
            deadline = time.monotonic() + 30
            while True:
                r = cls.p.http("POST", "/v1/auth/tokens",
                               {"username": "admin", "password": ADMIN_PASSWORD})
                if r.status == 201:
                    cls.admin_token = r.json()["token"]
                    break
                if time.monotonic() > deadline:
                    raise AssertionError("admin login never worked: %r" % r)
                time.sleep(0.1)
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

    # -- helpers ---------------------------------------------------------------------------

    def token_key(self, token):
        """The Redis record of a token: named by its HMAC-SHA256 under token.secret."""
        with open(os.path.join(self.p.secrets_dir, "token.secret")) as f:
            secret = bytes.fromhex(f.read().strip())
        return "berth:token:" + hmac.new(secret, token.encode(), hashlib.sha256).hexdigest()

    def call(self, method, path, body=None, token=None, headers=None):
        hdrs = dict(headers or {})
        if token:
            hdrs["Authorization"] = "Bearer " + token
        r = self.p.http(method, path, body=body, headers=hdrs)
        # Every answer, whatever it is, carries a request id.
        self.assertTrue(r.headers.get("X-Request-Id"), "%s %s: no X-Request-Id" % (method, path))
        return r

    def as_admin(self, method, path, body=None, headers=None):
        return self.call(method, path, body, self.admin_token, headers)

    def assertError(self, r, status, code=None, field=None):
        """r is an error answer of the documented shape."""
        self.assertEqual(r.status, status, r)
        self.assertTrue(r.headers.get("Content-Type", "").startswith("application/json"))
        body = r.json()
        self.assertEqual(set(body), {"error"}, body)
        err = body["error"]
        self.assertEqual(set(err), {"code", "message", "request_id", "details"}, err)
        self.assertIsInstance(err["message"], str)
        self.assertTrue(err["message"])
        self.assertIsInstance(err["details"], dict)
        self.assertEqual(err["request_id"], r.headers["X-Request-Id"])
        if code:
            self.assertEqual(err["code"], code, err)
        if field:
            self.assertEqual(err["details"].get("field"), field, err)
        return err

    def redis(self, *args):
        return self.p.redis_command(*args)

    def create_user(self, name=None, role="user", password="user-password-1"):
        name = name or "u-" + uuid.uuid4().hex[:8]
        r = self.as_admin("POST", "/v1/users",
                          {"username": name, "password": password, "role": role})
        self.assertEqual(r.status, 201, r)
        return name, password

    def login(self, name, password):
        r = self.call("POST", "/v1/auth/tokens", {"username": name, "password": password})
        self.assertEqual(r.status, 201, r)
        return r.json()["token"]

    def new_user_token(self, role="user"):
        name, password = self.create_user(role=role)
        return name, self.login(name, password)

    def put_vm(self, owner, created_ms=None, **fields):
        """A VM hash as approval/taskmgr write it, indexed in berth:vms."""
        vm_id = str(uuid.uuid4())
        created_ms = created_ms or now_ms()
        vm = {"id": vm_id, "name": "vm-" + vm_id[:6], "state": "ACTIVE",
              "power_state": "RUNNING", "host": "", "template": "small", "owner": owner,
              "lease": json.dumps({"expires_ms": created_ms + 7 * 86400000}), "task": "",
              "request": "", "flavor": json.dumps({"vcpus": 2, "ram_mb": 2048, "disk_gb": 20}),
              "fault": "", "created_ms": str(created_ms), "version": "3", "image": "base",
              "os": "linux", "lease_days": "7"}
        vm.update({k: str(v) for k, v in fields.items()})
        args = ["HSET", "berth:vm:{%s}" % vm_id]
        for k, v in vm.items():
            args += [k, v]
        self.redis(*args)
        self.redis("ZADD", "berth:vms", str(created_ms), vm_id)
        return vm_id

    def put_host(self, host_id, last_seen_ms, state="UP", domains=()):
        self.redis("SADD", "berth:hosts", host_id)
        self.redis("HSET", "berth:host:" + host_id, "id", host_id, "name", host_id,
                   "state", state, "agent", "agent-" + host_id, "libvirt_uri", "test:///default",
                   "hypervisor", "test", "cap_vcpus", "16", "cap_ram_mb", "32768",
                   "cap_disk_gb", "500", "used_vcpus", "4", "used_ram_mb", "4096",
                   "used_disk_gb", "40", "vms", str(len(domains)),
                   "last_seen_ms", str(last_seen_ms), "domains", json.dumps(list(domains)))

    # -- auth ------------------------------------------------------------------------------

    def test_admin_is_bootstrapped_with_an_argon2id_hash(self):
        h = self.redis("HGETALL", "berth:user:admin")
        user = dict(zip(h[::2], h[1::2]))
        self.assertEqual(user["name"], "admin")
        self.assertEqual(user["role"], "admin")
        self.assertTrue(user["password"].startswith("$argon2id$"), user["password"])
        self.assertNotIn(ADMIN_PASSWORD, json.dumps(user))
        self.assertGreater(int(user["created_ms"]), 0)

    def test_login_returns_a_token_stored_only_hashed_with_ttl(self):
        r = self.call("POST", "/v1/auth/tokens",
                      {"username": "admin", "password": ADMIN_PASSWORD})
        self.assertEqual(r.status, 201, r)
        body = r.json()
        token = body["token"]
        self.assertRegex(token, r"^[A-Za-z0-9_-]{43}$")
        expires = time.mktime(time.strptime(body["expires_at"][:19], "%Y-%m-%dT%H:%M:%S"))
        expires -= time.timezone   # expires_at is UTC
        self.assertAlmostEqual(expires, time.time() + 86400, delta=120)
        key = self.token_key(token)
        h = self.redis("HGETALL", key)
        stored = dict(zip(h[::2], h[1::2]))
        self.assertEqual(stored["user"], "admin")
        self.assertEqual(stored["role"], "admin")
        self.assertRegex(stored["mac"], r"^[0-9a-f]{64}$")
        ttl = self.redis("PTTL", key)
        self.assertTrue(86400000 - 120000 < ttl <= 86400000, ttl)
        # The token itself is nowhere in Redis.
        self.assertEqual(self.redis("KEYS", "*" + token + "*"), [])
        self.assertEqual(self.call("GET", "/v1/vms", token=token).status, 200)

    def test_wrong_user_and_wrong_password_get_the_same_401(self):
        wrong_pw = self.call("POST", "/v1/auth/tokens",
                             {"username": "admin", "password": "not-the-password"})
        no_user = self.call("POST", "/v1/auth/tokens",
                            {"username": "nobody-here", "password": ADMIN_PASSWORD})
        e1 = self.assertError(wrong_pw, 401, "UNAUTHORIZED")
        e2 = self.assertError(no_user, 401, "UNAUTHORIZED")
        self.assertEqual(e1["message"], e2["message"])

    def test_login_input_is_validated(self):
        r = self.call("POST", "/v1/auth/tokens", {"username": "admin"})
        self.assertError(r, 400, "BAD_REQUEST", field="password")
        r = self.call("POST", "/v1/auth/tokens", {"username": 7, "password": "x"})
        self.assertError(r, 400, "BAD_REQUEST", field="username")
        r = self.call("POST", "/v1/auth/tokens",
                      {"username": "admin", "password": ADMIN_PASSWORD, "otp": "1"})
        self.assertError(r, 400, "BAD_REQUEST", field="otp")
        r = self.call("POST", "/v1/auth/tokens", [1, 2])
        self.assertError(r, 400, "BAD_REQUEST")
        r = self.call("POST", "/v1/auth/tokens")
        self.assertError(r, 400, "BAD_REQUEST")

    def test_missing_malformed_wrong_and_expired_tokens_get_401(self):
        cases = {
            "missing": {},
            "not bearer": {"Authorization": "Basic YWRtaW46YWRtaW4="},
            "empty": {"Authorization": "Bearer "},
            "garbage": {"Authorization": "Bearer {not a token}"},
            "unknown": {"Authorization": "Bearer " + "A" * 43},
        }
        for name, hdrs in cases.items():
            with self.subTest(name):
                r = self.call("GET", "/v1/vms", headers=hdrs)
                self.assertError(r, 401, "UNAUTHORIZED")
                self.assertTrue(r.headers.get("WWW-Authenticate", "").startswith("Bearer"), r)
        # Expired: the stored expiry has passed even though the key has not been evicted yet.
        token = self.login("admin", ADMIN_PASSWORD)
        key = self.token_key(token)
        self.redis("HSET", key, "expires_ms", str(now_ms() - 1000))
        r = self.call("GET", "/v1/vms", token=token)
        self.assertError(r, 401, "UNAUTHORIZED")
        self.assertIn("invalid_token", r.headers.get("WWW-Authenticate", ""))
        # Gone from Redis (TTL ran out): the same.
        token = self.login("admin", ADMIN_PASSWORD)
        self.redis("DEL", self.token_key(token))
        self.assertError(self.call("GET", "/v1/vms", token=token), 401, "UNAUTHORIZED")

    def test_a_deleted_token_stops_working_within_the_cache_time(self):
        # A token the gateway has checked is trusted for token_cache_ms (1 s by default);
        # deleting its record revokes it within that time, however often it is used meanwhile.
        token = self.login("admin", ADMIN_PASSWORD)
        self.assertEqual(self.call("GET", "/v1/vms", token=token).status, 200)
        self.redis("DEL", self.token_key(token))
        deleted = time.monotonic()
        while self.call("GET", "/v1/vms", token=token).status != 401:
            self.assertLess(time.monotonic() - deleted, 1.0 + 2.0, "token still accepted")
            time.sleep(0.05)

    def test_template_list_follows_the_catalog_events(self):
        # Templates are read from their keys (approval writes them; none runs here) and the
        # rendered list is kept until the event stream says the catalog changed: a new template
        # shows as soon as its event is read, then in every listing, whichever worker thread
        # answers it.
        def put_template(tid, name, event=True):
            self.redis("HSET", "berth:template:" + tid, "id", tid, "name", name, "vcpus", "1",
                       "ram_mb", "512", "disk_gb", "5", "os", "linux", "image", "base",
                       "lease_days", "7", "requires_approval", "0")
            self.redis("ZADD", "berth:templates", "0", tid)
            if event:
                self.redis("XADD", "berth:events", "*", "type", "template.created",
                           "template", tid, "name", name)

        def names():
            r = self.as_admin("GET", "/v1/templates")
            self.assertEqual(r.status, 200, r)
            return [t["name"] for t in r.json()["templates"]]

        def shows(expected, within):
            wait_until(lambda: names() == expected, within, "the listing shows %s" % expected)
            for _ in range(8):
                self.assertEqual(names(), expected)

        try:
            put_template("t-zeta", "zeta")
            shows(["zeta"], 2)
            put_template("t-alpha", "alpha")
            shows(["alpha", "zeta"], 2)
            # A change that came with no event (not approval's way) still shows within
            # catalog_cache_ms (1 s by default).
            put_template("t-beta", "beta", event=False)
            shows(["alpha", "beta", "zeta"], 5)
        finally:
            self.redis("DEL", "berth:templates", "berth:template:t-zeta", "berth:template:t-alpha",
                       "berth:template:t-beta")

    def test_public_routes_need_no_token(self):
        self.assertEqual(self.call("GET", "/healthz").status, 200)
        self.assertIn(self.call("GET", "/readyz").status, (200, 503))
        self.assertEqual(self.call("GET", "/v1/health").status, 200)

    def test_every_v1_route_requires_a_token(self):
        some = str(uuid.uuid4())
        for method, path in [("GET", "/v1/templates"), ("POST", "/v1/templates"),
                             ("GET", "/v1/hosts"), ("GET", "/v1/hosts/h1"),
                             ("POST", "/v1/requests"), ("GET", "/v1/requests/" + some),
                             ("GET", "/v1/requests"),
                             ("POST", "/v1/requests/%s/approve" % some),
                             ("POST", "/v1/requests/%s/reject" % some),
                             ("GET", "/v1/vms"), ("GET", "/v1/vms/" + some),
                             ("DELETE", "/v1/vms/" + some), ("GET", "/v1/tasks/" + some),
                             ("GET", "/v1/usage"), ("POST", "/v1/users"),
                             ("GET", "/v1/groups"), ("POST", "/v1/groups"),
                             ("GET", "/v1/groups/" + some), ("PATCH", "/v1/groups/" + some),
                             ("DELETE", "/v1/groups/" + some),
                             ("GET", "/v1/groups/%s/members" % some),
                             ("POST", "/v1/groups/%s/members" % some),
                             ("PUT", "/v1/groups/%s/members/ann" % some),
                             ("DELETE", "/v1/groups/%s/members/ann" % some)]:
            with self.subTest(method=method, path=path):
                # Even a malformed body gets 401 first: nothing is judged before identity.
                body = b"{broken" if method in ("POST", "PUT", "PATCH") else None
                hdrs = {"Content-Type": "application/json"} if body else {}
                self.assertError(self.call(method, path, body=body, headers=hdrs), 401,
                                 "UNAUTHORIZED")

    def test_users_admin_creates_and_roles_are_enforced(self):
        name, password = self.create_user()
        h = self.redis("HGETALL", "berth:user:" + name)
        user = dict(zip(h[::2], h[1::2]))
        self.assertEqual(user["role"], "user")
        self.assertTrue(user["password"].startswith("$argon2id$"))
        self.assertError(self.as_admin("POST", "/v1/users",
                                       {"username": name, "password": "another-pass"}),
                         409, "CONFLICT")
        token = self.login(name, password)
        some = str(uuid.uuid4())
        for method, path, body in [
                ("POST", "/v1/users", {"username": "x1", "password": "password-1"}),
                ("POST", "/v1/templates", {"name": "t"})]:
            with self.subTest(path=path):
                self.assertError(self.call(method, path, body, token), 403, "FORBIDDEN")
        # Deciding is for a group's manager or an admin: a request outside one's scope is
        # not found (docs/permissions.md, request.approve).
        for method, path, body in [("POST", "/v1/requests/%s/approve" % some, None),
                                   ("POST", "/v1/requests/%s/reject" % some, {"reason": "no"})]:
            with self.subTest(path=path):
                self.assertError(self.call(method, path, body, token), 404, "NOT_FOUND")
        # Reading one's own is allowed; hosts are for operators and admins.
        self.assertEqual(self.call("GET", "/v1/vms", token=token).status, 200)
        self.assertError(self.call("GET", "/v1/hosts", token=token), 403, "FORBIDDEN")
        self.assertError(self.call("GET", "/v1/hosts/h1", token=token), 403, "FORBIDDEN")

    def test_user_creation_is_validated(self):
        cases = [({"username": "bad name", "password": "password-1"}, "username"),
                 ({"username": "{x}", "password": "password-1"}, "username"),
                 ({"username": "x" * 65, "password": "password-1"}, "username"),
                 ({"username": "okname", "password": "short"}, "password"),
                 ({"username": "okname", "password": "password-1", "role": "root"}, "role"),
                 ({"username": "okname", "password": 12345678}, "password"),
                 ({"username": "okname", "password": "password-1", "admin": True}, "admin")]
        for body, field in cases:
            with self.subTest(body=body):
                self.assertError(self.as_admin("POST", "/v1/users", body), 400, "BAD_REQUEST",
                                 field=field)
        self.assertEqual(self.redis("EXISTS", "berth:user:okname"), 0)
        # The three platform roles of the spec's Role are accepted, and signing in says which.
        for role in ("user", "operator", "admin"):
            with self.subTest(role=role):
                r = self.as_admin("POST", "/v1/users",
                                  {"username": "role-" + role, "password": "password-1",
                                   "role": role})
                self.assertEqual((r.status, r.json()["user"]["role"]), (201, role), r)
                self.assertEqual(self.redis("HGET", "berth:user:role-" + role, "role"), role)

    def test_configured_admin_password_wins_over_the_stored_one(self):
        # A second gateway instance (same Redis) configured with a new admin password
        # re-hashes it at start; the old password stops working.
        other_port = self.p.free_port()
        new_password = "rotated-admin-password"
        old_hash = self.redis("HGET", "berth:user:admin", "password")
        gw = self.p.start("gateway", name="gateway-rotated", env={
            "BERTH_HTTP_BIND": "127.0.0.1", "BERTH_HTTP_PORT": str(other_port),
            "BERTH_ADMIN_USER": "admin", "BERTH_ADMIN_PASSWORD": new_password})
        try:
            deadline = time.monotonic() + 30
            while self.redis("HGET", "berth:user:admin", "password") == old_hash:
                self.assertTrue(gw.alive(), gw.tail())
                self.assertLess(time.monotonic(), deadline, "admin password never re-hashed")
                time.sleep(0.1)
            self.assertError(self.call("POST", "/v1/auth/tokens",
                                       {"username": "admin", "password": ADMIN_PASSWORD}),
                             401)
            self.login("admin", new_password)
            # Tokens issued before stay valid until they expire.
            self.assertEqual(self.as_admin("GET", "/v1/vms").status, 200)
        finally:
            gw.kill()
            gw.wait(10)
            # Put the suite's password back the same way.
            back = self.p.start("gateway", name="gateway-restore", env={
                "BERTH_HTTP_BIND": "127.0.0.1", "BERTH_HTTP_PORT": str(self.p.free_port()),
                "BERTH_ADMIN_USER": "admin", "BERTH_ADMIN_PASSWORD": ADMIN_PASSWORD})
            deadline = time.monotonic() + 30
            while self.call("POST", "/v1/auth/tokens", {
                    "username": "admin", "password": ADMIN_PASSWORD}).status != 201:
                self.assertLess(time.monotonic(), deadline, "admin password not restored")
                time.sleep(0.1)
            back.kill()
            back.wait(10)

    def test_gateway_refuses_to_start_without_an_admin_password(self):
        gw = self.p.start("gateway", name="gateway-nopw", env={
            "BERTH_HTTP_BIND": "127.0.0.1", "BERTH_HTTP_PORT": str(self.p.free_port())})
        gw.stopping = True   # its exit is the point
        self.assertIsNotNone(gw.wait(30), "gateway without admin_password kept running")
        self.assertNotEqual(gw.returncode, 0)
        self.assertIn("admin_password", gw.tail(50))

    def test_concurrent_logins_and_reads(self):
        # Several worker threads hash, issue tokens and read at once; every answer is right.
        name, password = self.create_user()
        results = []

        def worker():
            for _ in range(3):
                r = self.p.http("POST", "/v1/auth/tokens",
                                {"username": name, "password": password}, timeout=60)
                if r.status != 201:
                    results.append(("login", r.status))
                    continue
                tok = r.json()["token"]
                r = self.p.http("GET", "/v1/vms", headers={"Authorization": "Bearer " + tok})
                results.append(("vms", r.status))

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(results, [("vms", 200)] * 24)

    # -- the HTTP edge ---------------------------------------------------------------------

    def test_request_id_is_echoed_or_generated(self):
        r = self.call("GET", "/healthz", headers={"X-Request-Id": "trace-abc_123"})
        self.assertEqual(r.headers["X-Request-Id"], "trace-abc_123")
        r = self.call("GET", "/healthz", headers={"X-Request-Id": "bad id with spaces"})
        self.assertNotEqual(r.headers["X-Request-Id"], "bad id with spaces")
        self.assertRegex(r.headers["X-Request-Id"], r"^[0-9a-f-]{36}$")
        r = self.call("GET", "/nowhere", headers={"X-Request-Id": "trace-404"})
        self.assertEqual(self.assertError(r, 404, "NOT_FOUND")["request_id"], "trace-404")

    def test_unknown_route_and_wrong_method(self):
        self.assertError(self.as_admin("GET", "/v1/nothing"), 404, "NOT_FOUND")
        r = self.as_admin("PUT", "/v1/vms")
        self.assertError(r, 405, "METHOD_NOT_ALLOWED")
        # A 405 says which methods the resource takes (RFC 9110).
        self.assertEqual(r.headers.get("Allow"), "GET")
        r = self.as_admin("PATCH", "/v1/vms/" + str(uuid.uuid4()))
        self.assertError(r, 405, "METHOD_NOT_ALLOWED")
        self.assertEqual(r.headers.get("Allow"), "GET, DELETE")

    def test_unknown_query_parameters_are_refused(self):
        # A misspelt parameter must not silently fall back to its default.
        for path, field in [("/v1/vms?limt=5", "limt"), ("/v1/vms?limit=5&sort=name", "sort"),
                            ("/v1/usage?since=2024-01-01", "since"),
                            ("/v1/templates?name=small", "name"),
                            ("/v1/vms/%s?verbose=1" % uuid.uuid4(), "verbose"),
                            # Not UTF-8 once unescaped: still a well-formed JSON error.
                            ("/v1/vms?%FF%FEx=1", "??x"), ("/v1/vms?a%0Ab=1", "a?b")]:
            with self.subTest(path=path):
                self.assertError(self.as_admin("GET", path), 400, "BAD_REQUEST", field=field)
        self.assertEqual(self.as_admin("GET", "/v1/vms?limit=5").status, 200)

    def test_malformed_json_is_400(self):
        for raw in (b"{", b"not json", b'{"template": "a",}', b'{"a":1,"a":2}'):
            with self.subTest(raw=raw):
                r = self.as_admin("POST", "/v1/requests", raw,
                                  headers={"Content-Type": "application/json"})
                self.assertError(r, 400, "BAD_REQUEST")

    def test_non_json_body_is_415(self):
        r = self.as_admin("POST", "/v1/requests", b"template=small",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertError(r, 415, "UNSUPPORTED_MEDIA_TYPE")

    def test_body_over_the_cap_is_413(self):
        big = b'{"name": "' + b"x" * (10 * 1024 * 1024) + b'"}'
        r = self.as_admin("POST", "/v1/requests", big,
                          headers={"Content-Type": "application/json"})
        self.assertError(r, 413, "PAYLOAD_TOO_LARGE")
        # Also without a Content-Length (chunked upload).
        conn = http.client.HTTPConnection("127.0.0.1", self.p.http_port, timeout=30)
        try:
            def chunks():
                for _ in range(BODY_MAX // 65536 + 2):
                    yield b"x" * 65536
            conn.request("POST", "/v1/requests", body=chunks(), encode_chunked=True,
                         headers={"Content-Type": "application/json",
                                  "Authorization": "Bearer " + self.admin_token})
            resp = conn.getresponse()
            self.assertEqual(resp.status, 413)
            self.assertTrue(resp.getheader("X-Request-Id"))
            self.assertEqual(json.loads(resp.read())["error"]["code"], "PAYLOAD_TOO_LARGE")
        finally:
            conn.close()
        # The gateway is still serving.
        self.assertEqual(self.call("GET", "/healthz").status, 200)

    # -- requests: validated before anything is asked of approval ----------------------------

    def test_request_input_is_validated(self):
        cases = [({"name": "web"}, "template"),
                 ({"template": "small"}, "name"),
                 ({"template": 5, "name": "web"}, "template"),
                 ({"template": "small", "name": ["web"]}, "name"),
                 ({"template": "small", "name": "web", "count": -1}, "count"),
                 ({"template": "small", "name": "web", "count": 0}, "count"),
                 ({"template": "small", "name": "web", "count": 1001}, "count"),
                 # One limit (lib/limit.h) for the gateway, approval and the document.
                 ({"template": "small", "name": "web", "count": 51}, "count"),
                 ({"template": "small", "name": "web", "count": None}, "count"),
                 ({"template": "small", "name": "w" * 52}, "name"),
                 ({"template": "small", "name": None}, "name"),
                 ({"template": "t" * 65, "name": "web"}, "template"),
                 ({"template": "small", "name": "web", "count": 10 ** 15}, "count"),
                 ({"template": "small", "name": "web", "count": 1.5}, "count"),
                 ({"template": "small", "name": "web", "count": "2"}, "count"),
                 ({"template": "small", "name": "web", "count": True}, "count"),
                 ({"template": "small", "name": "web", "size": "xl"}, "size"),
                 # The message quotes 64 bytes of the name, which cut this one inside a
                 # character: the answer is still well-formed JSON naming the field.
                 ({"template": "small", "name": "web", "x" * 63 + "\u00e9": 1},
                  "x" * 63 + "\u00e9"),
                 ({"template": "small", "name": ""}, "name")]
        for body, field in cases:
            with self.subTest(body=body):
                self.assertError(self.as_admin("POST", "/v1/requests", body), 400,
                                 "BAD_REQUEST", field=field)
        r = self.as_admin("POST", "/v1/requests", {"template": "small", "name": "web"},
                          headers={"Idempotency-Key": "has spaces in it"})
        self.assertError(r, 400, "BAD_REQUEST")
        # Nothing was created.
        self.assertEqual(self.redis("EXISTS", "berth:requests"), 0)

    def test_valid_request_without_approval_service_is_503(self):
        t0 = time.monotonic()
        r = self.as_admin("POST", "/v1/requests", {"template": "small", "name": "web"})
        err = self.assertError(r, 503, "UNAVAILABLE")
        self.assertIn("approval", err["message"])
        self.assertLess(time.monotonic() - t0, CALL_TIMEOUT_MS / 1000 + 3)
        self.assertError(self.as_admin("GET", "/v1/templates"), 503, "UNAVAILABLE")

    def test_template_input_is_validated(self):
        good = {"name": "big", "vcpus": 4, "ram_mb": 8192, "disk_gb": 80, "os": "linux",
                "image": "debian-12", "lease_days": 30, "requires_approval": True}
        for field, value in [("vcpus", 0), ("vcpus", "4"), ("ram_mb", -1), ("disk_gb", 1.5),
                             ("lease_days", 0), ("requires_approval", "yes"),
                             ("name", "has space"), ("image", ""), ("color", "red"),
                             ("id", "my-id"), ("vcpus", 257), ("ram_mb", 63),
                             ("ram_mb", 4194305), ("disk_gb", 65537), ("lease_days", 3651),
                             ("name", "n" * 64), ("os", None), ("image", "i" * 129)]:
            with self.subTest(field=field, value=value):
                body = dict(good, **{field: value})
                self.assertError(self.as_admin("POST", "/v1/templates", body), 400,
                                 "BAD_REQUEST", field=field)

    def test_usage_query_is_validated(self):
        for query, field in [("from=yesterday", "from"), ("to=2024-13-01T00:00:00Z", "to"),
                             ("from=2024-02-30", "from"),
                             ("from=2024-05-02T00:00:00Z&to=2024-05-01T00:00:00Z", "from"),
                             ("from=2000-01-01T00:00:00Z&to=2024-01-01T00:00:00Z", "from"),
                             ("owner=%7Bx%7D", "owner"),
                             # Only `to` was sent: the error names `to`, not a default `from`.
                             ("to=0", "to"), ("to=1970-01-01T00:00:00Z", "to")]:
            with self.subTest(query=query):
                self.assertError(self.as_admin("GET", "/v1/usage?" + query), 400,
                                 "BAD_REQUEST", field=field)
        _, token = self.new_user_token()
        self.assertError(self.call("GET", "/v1/usage?owner=admin", token=token), 403,
                         "FORBIDDEN")
        # Well-formed (ISO with offset, unix seconds), but no meter runs: 503.
        self.assertError(self.as_admin(
            "GET", "/v1/usage?from=2024-05-01T12:00:00%2B02:00&to=1714600000"), 503,
            "UNAVAILABLE")

    # -- VMs, tasks, requests and hosts as Redis holds them ---------------------------------

    def test_unknown_and_malformed_vm_ids_are_404(self):
        for vm_id in (str(uuid.uuid4()), "not-a-vm", "x" * 300, "a%7Bb%7D", "a%20b", "..."):
            with self.subTest(vm_id=vm_id):
                self.assertError(self.as_admin("GET", "/v1/vms/" + vm_id), 404, "NOT_FOUND")
                self.assertError(self.as_admin("DELETE", "/v1/vms/" + vm_id), 404,
                                 "NOT_FOUND")
        for path in ("/v1/tasks/", "/v1/requests/"):
            self.assertError(self.as_admin("GET", path + str(uuid.uuid4())), 404, "NOT_FOUND")
        self.assertError(self.as_admin("POST", "/v1/requests/%7Bbad%7D/approve"), 404,
                         "NOT_FOUND")
        # An id that is not a UUID names no request: 404 as documented, never 400.
        for method, path in [("POST", "/v1/requests/not-a-uuid/approve"),
                             ("POST", "/v1/requests/not-a-uuid/reject"),
                             ("POST", "/v1/requests/%s/approve" % str(uuid.uuid4()).upper()),
                             ("GET", "/v1/requests/not-a-uuid")]:
            with self.subTest(path=path):
                self.assertError(self.as_admin(method, path), 404, "NOT_FOUND")
        self.assertError(self.as_admin("GET", "/v1/hosts/no-such-host"), 404, "NOT_FOUND")

    def test_vm_view_and_ownership(self):
        name, token = self.new_user_token()
        self.put_host("h-live", now_ms())
        mine = self.put_vm(name, host="h-live")
        theirs = self.put_vm("someone-else", host="h-live")
        r = self.call("GET", "/v1/vms/" + mine, token=token)
        self.assertEqual(r.status, 200, r)
        vm = r.json()["vm"]
        for key in ("id", "name", "state", "power_state", "host", "template", "owner", "lease",
                    "task", "request", "flavor", "fault", "created_at"):
            self.assertIn(key, vm)
        self.assertEqual(vm["id"], mine)
        self.assertEqual(vm["state"], "ACTIVE")
        self.assertEqual(vm["power_state"], "RUNNING")
        self.assertEqual(vm["owner"], name)
        self.assertEqual(vm["flavor"], {"vcpus": 2, "ram_mb": 2048, "disk_gb": 20})
        self.assertRegex(vm["lease"]["expires_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
        self.assertIsNone(vm["fault"])
        self.assertNotIn("version", vm)
        # Someone else's VM does not exist for a user; an admin sees it.
        self.assertError(self.call("GET", "/v1/vms/" + theirs, token=token), 404, "NOT_FOUND")
        self.assertError(self.call("DELETE", "/v1/vms/" + theirs, token=token), 404,
                         "NOT_FOUND")
        self.assertEqual(self.as_admin("GET", "/v1/vms/" + theirs).status, 200)
        # Disposal of one's own VM is asked of taskmgr; none runs here.
        self.assertError(self.call("DELETE", "/v1/vms/" + mine, token=token), 503,
                         "UNAVAILABLE")

    def test_vm_on_a_silent_host_has_unknown_power_state(self):
        self.put_host("h-silent", now_ms() - 60000, state="UP")
        vm_id = self.put_vm("admin", host="h-silent")
        vm = self.as_admin("GET", "/v1/vms/" + vm_id).json()["vm"]
        self.assertEqual(vm["power_state"], "UNKNOWN")
        self.assertEqual(vm["state"], "ACTIVE")

    def test_vm_list_pages_and_filters_by_owner(self):
        name, token = self.new_user_token()
        base = now_ms() + 10 ** 9      # after every VM other tests created
        mine = [self.put_vm(name, created_ms=base + i * 10) for i in range(7)]
        for i in range(5):
            self.put_vm("other-owner", created_ms=base + i * 10 + 5)
        seen, marker, pages = [], None, 0
        while True:
            path = "/v1/vms?limit=3" + ("&marker=" + marker if marker else "")
            r = self.call("GET", path, token=token)
            self.assertEqual(r.status, 200, r)
            body = r.json()
            self.assertLessEqual(len(body["vms"]), 3)
            for vm in body["vms"]:
                self.assertEqual(vm["owner"], name)
            seen += [vm["id"] for vm in body["vms"]]
            pages += 1
            marker = body["next_marker"]
            if marker is None:
                break
            self.assertLess(pages, 10)
        self.assertEqual(seen, mine)          # every one, in creation order, once
        self.assertEqual(pages, 3)
        # An admin sees everyone's.
        r = self.as_admin("GET", "/v1/vms?limit=500")
        ids = [vm["id"] for vm in r.json()["vms"]]
        self.assertTrue(set(mine) <= set(ids))
        self.assertGreater(len({vm["owner"] for vm in r.json()["vms"]}), 1)
        for query, field in [("limit=0", "limit"), ("limit=501", "limit"),
                             ("limit=abc", "limit"), ("marker=%7Bx%7D", "marker"),
                             ("marker=" + str(uuid.uuid4()), "marker")]:
            with self.subTest(query=query):
                self.assertError(self.call("GET", "/v1/vms?" + query, token=token), 400,
                                 "BAD_REQUEST", field=field)

    def test_task_view_hides_bookkeeping(self):
        name, token = self.new_user_token()
        task_id = str(uuid.uuid4())
        steps = [{"name": "schedule", "state": "SUCCEEDED", "started_ms": now_ms() - 2000,
                  "finished_ms": now_ms() - 1000, "result": "host h1"},
                 {"name": "create_disk", "state": "RUNNING", "started_ms": now_ms() - 900}]
        self.redis("HSET", "berth:task:{%s}" % task_id, "id", task_id, "kind", "PROVISION",
                   "state", "RUNNING", "stage", "create_disk", "percent", "40",
                   "steps", json.dumps(steps), "target", str(uuid.uuid4()), "owner", name,
                   "created_ms", str(now_ms() - 3000), "holder", "taskmgr-x", "epoch", "4",
                   "lease_until_ms", str(now_ms() + 5000), "command", "cmd-1",
                   "alternates", json.dumps(["h2"]), "version", "9")
        r = self.call("GET", "/v1/tasks/" + task_id, token=token)
        self.assertEqual(r.status, 200, r)
        task = r.json()["task"]
        self.assertEqual(task["state"], "RUNNING")
        self.assertEqual(task["percent"], 40)
        self.assertEqual(task["stage"], "create_disk")
        self.assertEqual([s["name"] for s in task["steps"]], ["schedule", "create_disk"])
        self.assertEqual(set(task["steps"][0]),
                         {"name", "state", "started_at", "finished_at", "result"})
        self.assertIsNone(task["steps"][1]["finished_at"])
        self.assertIsNone(task["finished_at"])
        for hidden in ("holder", "epoch", "lease_until_ms", "command", "alternates", "tried",
                       "rolling_back", "version", "host"):
            self.assertNotIn(hidden, task)
        other, other_token = self.new_user_token()
        self.assertError(self.call("GET", "/v1/tasks/" + task_id, token=other_token), 404)

    def test_request_view_with_vms_and_tasks(self):
        name, token = self.new_user_token()
        vm_id = self.put_vm(name, state="PENDING_APPROVAL", power_state="")
        req_id = str(uuid.uuid4())
        self.redis("HSET", "berth:request:{%s}" % req_id, "id", req_id,
                   "state", "PENDING_APPROVAL", "template", "big", "name", "db", "count", "1",
                   "owner", name, "vms", json.dumps([vm_id]), "tasks", json.dumps([]),
                   "created_ms", str(now_ms()), "version", "1")
        r = self.call("GET", "/v1/requests/" + req_id, token=token)
        self.assertEqual(r.status, 200, r)
        req = r.json()["request"]
        self.assertEqual(req["state"], "PENDING_APPROVAL")
        self.assertEqual(req["owner"], name)
        self.assertEqual(req["count"], 1)
        self.assertEqual([v["id"] for v in req["vms"]], [vm_id])
        self.assertEqual(req["vms"][0]["state"], "PENDING_APPROVAL")
        self.assertIsNone(req["vms"][0]["power_state"])
        self.assertEqual(req["tasks"], [])
        _, other_token = self.new_user_token()
        self.assertError(self.call("GET", "/v1/requests/" + req_id, token=other_token), 404)
        # Approving asks approval, which is not running.
        self.assertError(self.as_admin("POST", "/v1/requests/%s/approve" % req_id), 503)
        self.assertError(self.as_admin("POST", "/v1/requests/%s/reject" % req_id,
                                       {"reason": 5}), 400, field="reason")

    def test_hosts_from_redis_and_silent_hosts_are_down(self):
        now = now_ms()
        domains = [{"name": str(uuid.uuid4()), "power_state": "RUNNING"}]
        self.put_host("hz-up", now, domains=domains)
        self.put_host("hz-stale", now - 60000, state="UP", domains=domains)
        r = self.as_admin("GET", "/v1/hosts")
        self.assertEqual(r.status, 200, r)
        hosts = {h["id"]: h for h in r.json()["hosts"]}
        up = hosts["hz-up"]
        self.assertEqual(up["state"], "UP")
        self.assertEqual(up["capacity"], {"vcpus": 16, "ram_mb": 32768, "disk_gb": 500})
        self.assertEqual(up["used"], {"vcpus": 4, "ram_mb": 4096, "disk_gb": 40})
        self.assertEqual(up["vms"], 1)
        self.assertEqual(up["hypervisor"], "test")
        self.assertTrue(up["last_seen_at"].endswith("Z"))
        self.assertNotIn("domains", up)
        self.assertEqual(hosts["hz-stale"]["state"], "DOWN")
        one = self.as_admin("GET", "/v1/hosts/hz-up").json()["host"]
        self.assertEqual(one["domains"], domains)
        stale = self.as_admin("GET", "/v1/hosts/hz-stale").json()["host"]
        self.assertEqual(stale["state"], "DOWN")
        self.assertEqual(stale["domains"][0]["power_state"], "UNKNOWN")


class OpenApiDocument(unittest.TestCase):
    """docs/openapi.yaml describes exactly the routes the gateway serves."""

    def test_every_route_is_documented_and_nothing_else(self):
        with open(os.path.join(ROOT, "gateway", "main.c")) as f:
            served = set(re.findall(r'\{\s*"(GET|POST|PUT|DELETE|PATCH)",\s*"([^"]+)"', f.read()))
        self.assertGreater(len(served), 10)
        documented = set()
        path = None
        with open(os.path.join(ROOT, "docs", "openapi.yaml")) as f:
            in_paths = False
            for line in f:
                if re.match(r"^\S", line):
                    in_paths = line.startswith("paths:")
                    continue
                if not in_paths:
                    continue
                m = re.match(r"^  (/\S*):\s*$", line)
                if m:
                    path = m.group(1)
                    continue
                m = re.match(r"^    (get|post|put|delete|patch):\s*$", line)
                if m and path:
                    documented.add((m.group(1).upper(), path))
        self.assertEqual(served, documented)


if __name__ == "__main__":
    unittest.main(verbosity=2)
