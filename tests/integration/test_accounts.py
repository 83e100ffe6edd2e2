#!/usr/bin/env python3
"""Accounts (issue 9, test 7): logout revokes the token at once on every worker thread while
the user's other tokens keep working; failed sign-ins are throttled per username and per
client address (429 RATE_LIMITED with Retry-After, counted in Redis), a success forgets its
username's failures but not its address's, and the throttle ends when the window does; the
admin password never reaches a log. Low limits and a short window are set for the test; only
Redis and the gateway run. Each scenario signs in from its own loopback address."""

import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import Api, CheckedProxy, Platform, contract, wait_until  # noqa: E402

USER_MAX = 3
ADDRESS_MAX = 6
WINDOW_S = 10  # long enough for a dozen Argon2id checks on a loaded machine
PASSWORD = "correct-horse-battery"


class AccountsCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.p = Platform(env={"BERTH_LOGIN_FAIL_USER_MAX": str(USER_MAX),
                              "BERTH_LOGIN_FAIL_ADDRESS_MAX": str(ADDRESS_MAX),
                              "BERTH_LOGIN_FAIL_WINDOW_S": str(WINDOW_S)})
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

    def user(self, name):
        r = self.api.call("POST", "/v1/users", {"username": name, "password": PASSWORD})
        self.assertEqual(r.status, 201, r)

    def login(self, name, password, source):
        """POST /v1/auth/tokens from the given source address, held to docs/openapi.yaml."""
        body = {"username": name, "password": password}
        headers = {"Content-Type": "application/json"}
        conn = http.client.HTTPConnection("127.0.0.1", self.p.http_port, timeout=20,
                                          source_address=(source, 0))
        try:
            conn.request("POST", "/v1/auth/tokens", body=json.dumps(body), headers=headers)
            r = conn.getresponse()
            response = type("Response", (), {})()
            response.status, response.headers, response.body = r.status, dict(r.getheaders()), \
                r.read()
        finally:
            conn.close()
        contract.CONTRACT.check("POST", "/v1/auth/tokens", headers, body, response)
        return response

    def assert_throttled(self, r, limit):
        self.assertEqual(r.status, 429, r.body)
        error = json.loads(r.body)["error"]
        self.assertEqual(error["code"], "RATE_LIMITED")
        self.assertEqual(error["details"]["limit"], limit)
        retry_after = int(r.headers["Retry-After"])
        self.assertGreaterEqual(retry_after, 1)
        self.assertLessEqual(retry_after, WINDOW_S)
        return retry_after

    def authed(self, token, method="GET", path="/v1/vms"):
        return self.p.http(method, path, headers={"Authorization": "Bearer " + token})

    def test_logout_revokes_the_token_at_once(self):
        self.user("lou")
        first = Api(self.p, "lou", PASSWORD).token
        second = Api(self.p, "lou", PASSWORD).token
        # Every worker thread has checked (and cached) the first token.
        for _ in range(12):
            self.assertEqual(self.authed(first).status, 200)
        r = self.authed(first, "DELETE", "/v1/auth/tokens/current")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"user": "lou", "revoked": True})
        # Refused at once, whichever thread answers, well inside token_cache_ms.
        for _ in range(12):
            r = self.authed(first)
            self.assertEqual(r.status, 401, r)
            self.assertIn("invalid_token", r.headers.get("WWW-Authenticate", ""))
        self.assertEqual(self.authed(first, "DELETE", "/v1/auth/tokens/current").status, 401)
        # The user's other token is not touched.
        self.assertEqual(self.authed(second).status, 200)
        self.assertEqual(self.p.http("DELETE", "/v1/auth/tokens/current").status, 401)

    def test_a_disabled_user_is_shut_out_at_once(self):
        self.user("dora")
        tokens = [Api(self.p, "dora", PASSWORD).token for _ in range(2)]
        for _ in range(12):
            self.assertEqual(self.authed(tokens[0]).status, 200)
        r = self.api.call("PATCH", "/v1/users/dora", {"state": "DISABLED"})
        self.assertEqual(r.status, 200, r)
        user = r.json()["user"]
        self.assertEqual((user["username"], user["role"], user["state"]),
                         ("dora", "user", "DISABLED"))
        # Every token of hers is refused at once, whichever worker thread answers.
        for _ in range(12):
            for token in tokens:
                self.assertEqual(self.authed(token).status, 401)
        r = self.login("dora", PASSWORD, "127.0.0.9")
        self.assertEqual(r.status, 401, r.body)
        self.assertEqual(self.p.redis_command("HGET", "berth:user:dora", "state"), "DISABLED")
        # Enabled again: she signs in, and tokens not yet expired work again.
        r = self.api.call("PATCH", "/v1/users/dora", {"state": "ACTIVE"})
        self.assertEqual(r.json()["user"]["state"], "ACTIVE")
        self.assertEqual(self.login("dora", PASSWORD, "127.0.0.9").status, 201)
        self.assertEqual(self.authed(tokens[1]).status, 200)

    def test_disabling_is_an_admins_and_not_of_oneself(self):
        self.user("ed")
        ed = Api(self.p, "ed", PASSWORD)
        r = ed.call("PATCH", "/v1/users/ed", {"state": "DISABLED"})
        self.assertEqual(r.status, 403, r)
        r = self.api.call("PATCH", "/v1/users/" + self.p.admin_user, {"state": "DISABLED"})
        self.assertEqual(r.status, 409, r)
        self.assertEqual(self.authed(self.api.token).status, 200)
        r = self.api.call("PATCH", "/v1/users/nobody-here", {"state": "DISABLED"})
        self.assertEqual(r.status, 404, r)
        self.assertIsNone(self.p.redis_command("HGET", "berth:user:nobody-here", "state"))
        r = self.api.call("PATCH", "/v1/users/ed", {"state": "GONE"})
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json()["error"]["details"]["field"], "state")
        r = self.api.call("PATCH", "/v1/users/ed", {"state": "ACTIVE", "role": "superuser"})
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json()["error"]["details"]["field"], "role")
        # A user sets neither their own role nor their state.
        r = ed.call("PATCH", "/v1/users/ed", {"role": "admin"})
        self.assertEqual(r.status, 403, r)
        self.assertEqual(ed.get("/v1/users/ed")["user"]["role"], "user")
        self.assertEqual(self.authed(ed.token).status, 200)

    def test_a_user_written_without_a_state_is_active(self):
        # Records written before states existed (and POST /v1/users) have no state field.
        self.user("old")
        self.p.redis_command("HDEL", "berth:user:old", "state")
        token = Api(self.p, "old", PASSWORD).token
        self.assertEqual(self.authed(token).status, 200)

    def test_failed_logins_are_throttled_per_username(self):
        self.user("tina")
        self.user("tom")
        source = "127.0.0.2"
        for _ in range(USER_MAX):
            self.assertEqual(self.login("tina", "wrong-password", source).status, 401)
        # Counted in Redis, so every gateway instance refuses the same name.
        self.assertEqual(self.p.redis_command("GET", "berth:login-fail-user:tina"),
                         str(USER_MAX))
        # Past the limit even the right password is refused, from any address.
        self.assert_throttled(self.login("tina", PASSWORD, source), "login_user")
        self.assert_throttled(self.login("tina", PASSWORD, "127.0.0.3"), "login_user")
        # Another name from the same address is still served (the address is under its limit).
        self.assertEqual(self.login("tom", PASSWORD, source).status, 201)
        # An unknown name is counted like a known one: the answer does not tell them apart.
        for _ in range(USER_MAX):
            self.assertEqual(self.login("nobody", "wrong-password", "127.0.0.4").status, 401)
        self.assert_throttled(self.login("nobody", "x", "127.0.0.4"), "login_user")

    def test_throttle_ends_with_its_window(self):
        self.user("wendy")
        source = "127.0.0.5"
        for _ in range(USER_MAX):
            self.assertEqual(self.login("wendy", "wrong-password", source).status, 401)
        retry_after = self.assert_throttled(self.login("wendy", PASSWORD, source), "login_user")
        started = time.monotonic()
        wait_until(lambda: self.login("wendy", PASSWORD, source).status == 201,
                   retry_after + 5, "wendy served again after Retry-After")
        self.assertLess(time.monotonic() - started, retry_after + 5)
        # The success forgot the name's failures.
        self.assertEqual(self.p.redis_command("EXISTS", "berth:login-fail-user:wendy"), 0)

    def test_a_success_does_not_reset_the_address(self):
        for name in ("amy", "ben", "cat", "dan"):
            self.user(name)
        source = "127.0.0.6"
        for name in ("amy", "ben"):
            for _ in range(USER_MAX - 1):
                self.assertEqual(self.login(name, "wrong-password", source).status, 401)
        # A good sign-in for another name keeps the address's count.
        self.assertEqual(self.login("cat", PASSWORD, source).status, 201)
        self.assertEqual(self.p.redis_command("GET", "berth:login-fail-addr:" + source),
                         str(2 * (USER_MAX - 1)))
        for _ in range(ADDRESS_MAX - 2 * (USER_MAX - 1)):
            self.assertEqual(self.login("cat", "wrong-password", source).status, 401)
        self.assert_throttled(self.login("dan", PASSWORD, source), "login_address")
        # Other addresses are served.
        self.assertEqual(self.login("dan", PASSWORD, "127.0.0.7").status, 201)

    def berth(self, home, *args, stdin=None, code=0):
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        env.update({"BERTH_URL": self.proxy.url, "XDG_CONFIG_HOME": home, "HOME": home})
        r = subprocess.run([self.p.binary("berth")] + list(args), input=stdin, env=env,
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(self.proxy.violations, [], "berth %s" % " ".join(args))
        self.assertEqual(r.returncode, code, "berth %s:\n%s\n%s" % (" ".join(args), r.stdout,
                                                                     r.stderr))
        return r

    def test_cli_logout(self):
        self.user("clio")
        self.proxy = CheckedProxy(self.p)
        self.addCleanup(self.proxy.close)
        home = tempfile.mkdtemp(prefix="berth-cli-")
        self.addCleanup(shutil.rmtree, home, ignore_errors=True)
        self.berth(home, "login", "--user", "clio", "--password-stdin", stdin=PASSWORD + "\n")
        token_file = os.path.join(home, "berth", "token")
        with open(token_file) as f:
            token = json.load(f)["token"]
        self.berth(home, "vms")
        self.assertIn("token revoked", self.berth(home, "logout").stdout)
        self.assertFalse(os.path.exists(token_file))
        self.assertEqual(self.authed(token).status, 401)
        self.assertIn("not logged in", self.berth(home, "logout", code=1).stderr)
        self.berth(home, "logout", "extra", code=2)
        # An admin shuts a user out and lets it back in.
        self.berth(home, "login", "--user", self.p.admin_user, "--password-stdin",
                   stdin=self.p.admin_password + "\n")
        self.assertIn("user clio is DISABLED", self.berth(home, "users", "disable", "clio").stdout)
        self.assertEqual(self.login("clio", PASSWORD, "127.0.0.10").status, 401)
        self.assertIn("user clio is ACTIVE", self.berth(home, "users", "enable", "clio").stdout)
        self.assertEqual(self.login("clio", PASSWORD, "127.0.0.10").status, 201)
        self.assertIn("NOT_FOUND", self.berth(home, "users", "disable", "ghost", code=1).stderr)
        self.berth(home, "users", "frobnicate", "clio", code=2)
        # An admin makes a user from the CLI; the password comes from stdin.
        made = self.berth(home, "users", "create", "cato", "--role", "operator",
                          "--display-name", "Cato C", "--email", "cato@example.com",
                          "--password-stdin", stdin=PASSWORD + "\n")
        self.assertIn("user cato created (operator)", made.stdout)
        self.assertEqual(self.login("cato", PASSWORD, "127.0.0.10").status, 201)
        self.assertIn("CONFLICT", self.berth(home, "users", "create", "cato", "--password-stdin",
                                             stdin=PASSWORD + "\n", code=1).stderr)
        self.berth(home, "users", "create", "nopass", "--password-stdin", stdin="", code=2)

    def test_profile_fields_are_validated_and_a_user_changes_their_own(self):
        r = self.api.call("POST", "/v1/users", {"username": "pia", "password": PASSWORD,
                                                "display_name": "Pia Lund",
                                                "email": "pia@example.com"})
        self.assertEqual(r.status, 201, r)
        self.assertEqual((r.json()["user"]["display_name"], r.json()["user"]["email"]),
                         ("Pia Lund", "pia@example.com"))
        for field, value in (("email", "not-an-address"), ("email", "a@b"),
                             ("email", "x" * 250 + "@example.com"), ("display_name", "a\nb"),
                             ("display_name", "x" * 129)):
            r = self.api.call("POST", "/v1/users", {"username": "pib", "password": PASSWORD,
                                                    field: value})
            self.assertEqual(r.status, 400, (field, value, r))
            self.assertEqual(r.json()["error"]["details"]["field"], field)
        pia = Api(self.p, "pia", PASSWORD)
        r = pia.call("PATCH", "/v1/users/pia", {"display_name": "Pia L.", "email": ""})
        self.assertEqual(r.status, 200, r)
        self.assertEqual((r.json()["user"]["display_name"], r.json()["user"]["email"]),
                         ("Pia L.", None))
        # Another user's record is not hers to read or change: it does not exist for her.
        self.user("quin")
        self.assertEqual(pia.call("GET", "/v1/users/quin").status, 404)
        self.assertEqual(pia.call("PATCH", "/v1/users/quin", {"display_name": "x"}).status, 404)
        self.assertEqual(pia.call("GET", "/v1/users").status, 403)
        me = pia.get("/v1/users/pia")["user"]
        self.assertEqual((me["username"], me["display_name"], me["groups"]),
                         ("pia", "Pia L.", []))

    def test_list_get_and_delete_users(self):
        for name in ("lis-a", "lis-b", "lis-c", "lis-d"):
            self.user(name)
        self.assertEqual(self.api.call("PATCH", "/v1/users/lis-c",
                                       {"state": "DISABLED"}).status, 200)
        page = self.api.get("/v1/users?name=lis-&limit=3")
        self.assertEqual([u["username"] for u in page["users"]], ["lis-a", "lis-b", "lis-c"])
        self.assertEqual(page["next_marker"], "lis-c")
        rest = self.api.get("/v1/users?name=lis-&limit=3&marker=lis-c")
        self.assertEqual([u["username"] for u in rest["users"]], ["lis-d"])
        self.assertIsNone(rest["next_marker"])
        disabled = self.api.get("/v1/users?name=lis-&state=DISABLED")["users"]
        self.assertEqual([u["username"] for u in disabled], ["lis-c"])
        admins = self.api.get("/v1/users?role=admin")["users"]
        self.assertIn(self.p.admin_user, [u["username"] for u in admins])
        for query, field in (("limit=0", "limit"), ("state=GONE", "state"), ("role=root", "role"),
                             ("name=a%20b", "name")):
            r = self.api.call("GET", "/v1/users?" + query)
            self.assertEqual(r.status, 400, r)
            self.assertEqual(r.json()["error"]["details"]["field"], field)
        lis = Api(self.p, "lis-a", PASSWORD)
        self.assertEqual(self.api.get("/v1/users/lis-a")["user"]["groups"], [])
        r = self.api.call("DELETE", "/v1/users/lis-a")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"username": "lis-a", "deleted": True})
        self.assertEqual(self.authed(lis.token).status, 401)
        self.assertEqual(self.api.call("GET", "/v1/users/lis-a").status, 404)
        self.assertEqual(self.api.call("DELETE", "/v1/users/lis-a").status, 404)
        self.assertNotIn("lis-a", [u["username"] for u in
                                   self.api.get("/v1/users?name=lis-")["users"]])
        # Created again under the name, nothing of the old user works.
        self.user("lis-a")
        self.assertEqual(self.authed(lis.token).status, 401)
        self.assertEqual(self.api.call("DELETE", "/v1/users/" + self.p.admin_user).status, 409)

    def test_the_last_active_admin_stays(self):
        self.user("adm2")
        r = self.api.call("PATCH", "/v1/users/adm2", {"role": "admin"})
        self.assertEqual(r.status, 200, r)
        adm2 = Api(self.p, "adm2", PASSWORD)
        # The bootstrap admin may go while another admin is active ...
        r = adm2.call("PATCH", "/v1/users/" + self.p.admin_user, {"role": "user"})
        self.assertEqual(r.status, 200, r)
        # ... its token now carries the role it has: user.
        self.assertEqual(self.api.call("GET", "/v1/users").status, 403)
        self.user_via(adm2, "adm3")
        self.assertEqual(adm2.call("PATCH", "/v1/users/adm3", {"role": "admin"}).status, 200)
        self.assertEqual(adm2.call("PATCH", "/v1/users/adm3", {"state": "DISABLED"}).status, 200)
        self.assertEqual(adm2.call("PATCH", "/v1/users/adm3", {"state": "ACTIVE"}).status, 200)
        self.assertEqual(adm2.call("DELETE", "/v1/users/adm3").status, 200)
        self.user_via(adm2, "adm4")
        r = Api(self.p, "adm4", PASSWORD).call("DELETE", "/v1/users/adm2")
        self.assertEqual(r.status, 403, r)
        # adm2, now the only admin, can be neither demoted nor disabled nor deleted.
        r = adm2.call("PATCH", "/v1/users/adm2", {"role": "user"})
        self.assertEqual(r.status, 409, r)
        self.assertIn("last active admin", r.json()["error"]["message"])
        self.assertEqual(adm2.call("PATCH", "/v1/users/adm2", {"state": "DISABLED"}).status, 409)
        # Put things back as the other tests expect them.
        r = adm2.call("PATCH", "/v1/users/" + self.p.admin_user, {"role": "admin"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.authed(self.api.token).status, 200)
        r = self.api.call("DELETE", "/v1/users/adm2")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.api.call("DELETE", "/v1/users/adm4").status, 200)

    def user_via(self, api, name):
        r = api.call("POST", "/v1/users", {"username": name, "password": PASSWORD})
        self.assertEqual(r.status, 201, r)

    def test_a_password_change_revokes_the_other_tokens(self):
        self.user("pat")
        first = Api(self.p, "pat", PASSWORD)
        other = Api(self.p, "pat", PASSWORD).token
        for _ in range(12):
            self.assertEqual(self.authed(other).status, 200)
        new_password = "a-new-long-password"
        r = first.call("POST", "/v1/auth/password", {"current": PASSWORD, "new": "short"})
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json()["error"]["details"]["field"], "new")
        r = first.call("POST", "/v1/auth/password", {"current": PASSWORD, "new": new_password})
        self.assertEqual(r.status, 201, r)
        fresh = r.json()["token"]
        self.assertEqual(r.json()["user"], "pat")
        # Every token of before is refused at once (this one too); the new one works.
        for _ in range(12):
            self.assertEqual(self.authed(other).status, 401)
            self.assertEqual(self.authed(first.token).status, 401)
        self.assertEqual(self.authed(fresh).status, 200)
        self.assertEqual(self.login("pat", PASSWORD, "127.0.0.11").status, 401)
        self.assertEqual(self.login("pat", new_password, "127.0.0.11").status, 201)
        # A wrong current password counts as a failed sign-in, and is throttled like one.
        for _ in range(USER_MAX):
            r = self.p.http("POST", "/v1/auth/password",
                            {"current": "wrong-password", "new": "another-password"},
                            headers={"Authorization": "Bearer " + fresh})
            self.assertEqual(r.status, 401, r)
        r = self.p.http("POST", "/v1/auth/password",
                        {"current": new_password, "new": "another-password"},
                        headers={"Authorization": "Bearer " + fresh})
        self.assert_throttled(r, "login_user")

    def test_a_user_hash_written_in_redis_is_refused(self):
        self.user("mal")
        token = Api(self.p, "mal", PASSWORD).token
        self.assertEqual(self.authed(token).status, 200)
        # Writing the role in Redis (without the gateway's key) makes no admin: the record
        # fails its MAC, and the user's token and sign-in are refused.
        self.p.redis_command("HSET", "berth:user:mal", "role", "admin")
        wait_until(lambda: self.authed(token).status == 401, timeout=5,
                   what="the token refused within token_cache_ms")
        self.assertEqual(self.login("mal", PASSWORD, "127.0.0.12").status, 401)
        shown = self.api.get("/v1/users/mal")["user"]
        self.assertEqual(shown["integrity"], "INVALID")
        r = self.api.call("PATCH", "/v1/users/mal", {"state": "ACTIVE"})
        self.assertEqual(r.status, 409, r)
        # A whole record written by hand (copying another user's password hash) is no user.
        pw = self.p.redis_command("HGET", "berth:user:mal", "password")
        self.p.redis_command("HSET", "berth:user:forged", "name", "forged", "role", "admin",
                             "password", pw)
        self.assertEqual(self.login("forged", PASSWORD, "127.0.0.12").status, 401)
        self.assertIn(b"user record with a wrong MAC refused", self.gateway_log())
        # The admin deletes and recreates the user: they are whole again.
        self.assertEqual(self.api.call("DELETE", "/v1/users/mal").status, 200)
        self.user("mal")
        self.assertEqual(self.login("mal", PASSWORD, "127.0.0.12").status, 201)

    def gateway_log(self):
        out = b""
        for name in os.listdir(self.p.log_dir):
            if name.startswith("gateway"):
                with open(os.path.join(self.p.log_dir, name), "rb") as f:
                    out += f.read()
        return out

    def test_cli_users_passwd_and_keys(self):
        r = self.api.call("POST", "/v1/users", {"username": "cleo", "password": PASSWORD,
                                                "display_name": "Cleo K"})
        self.assertEqual(r.status, 201, r)
        self.proxy = CheckedProxy(self.p)
        self.addCleanup(self.proxy.close)
        home = tempfile.mkdtemp(prefix="berth-cli-")
        self.addCleanup(shutil.rmtree, home, ignore_errors=True)
        self.berth(home, "login", "--user", "cleo", "--password-stdin", stdin=PASSWORD + "\n")
        shown = self.berth(home, "users", "show", "cleo").stdout
        self.assertIn("Cleo K", shown)
        self.assertIn("NOT_FOUND", self.berth(home, "users", "show", "admin", code=1).stderr)
        # passwd: the session's token is replaced, the old password no longer works.
        new_password = "cleo-new-password"
        out = self.berth(home, "passwd", "--password-stdin",
                         stdin=PASSWORD + "\n" + new_password + "\n").stdout
        self.assertIn("password changed for cleo", out)
        self.berth(home, "users", "show", "cleo")
        self.assertEqual(self.login("cleo", new_password, "127.0.0.13").status, 201)
        self.assertIn("UNAUTHORIZED", self.berth(home, "passwd", "--password-stdin",
                                                 stdin="wrong-one\nwhatever-long\n",
                                                 code=1).stderr)
        # keys: made (the secret printed once), listed without it, used, revoked.
        made = self.berth(home, "keys", "create", "ci", "--days", "3").stdout.split("\n")
        key_id, secret = made[0].split()[2], made[1]
        self.assertTrue(secret.startswith("bk_"), made)
        listed = self.berth(home, "keys", "list").stdout
        self.assertIn(key_id, listed)
        self.assertNotIn(secret, listed)
        self.assertEqual(self.authed(secret).status, 200)
        self.assertIn("revoked", self.berth(home, "keys", "revoke", key_id).stdout)
        self.assertEqual(self.authed(secret).status, 401)
        self.berth(home, "keys", "frobnicate", code=2)
        # An admin lists and deletes users.
        self.berth(home, "login", "--user", self.p.admin_user, "--password-stdin",
                   stdin=self.p.admin_password + "\n")
        listed = self.berth(home, "users", "list", "--name", "cle").stdout
        self.assertIn("cleo", listed)
        self.assertIn("Cleo K", listed)
        self.assertIn("user cleo deleted", self.berth(home, "users", "delete", "cleo").stdout)
        self.assertNotIn("cleo", self.berth(home, "users", "list", "--name", "cle").stdout)

    def test_the_admin_password_is_never_logged(self):
        self.assertEqual(self.login(self.p.admin_user, "wrong-password", "127.0.0.8").status, 401)
        self.assertEqual(self.login(self.p.admin_user, self.p.admin_password,
                                    "127.0.0.8").status, 201)
        for name in os.listdir(self.p.log_dir):
            with open(os.path.join(self.p.log_dir, name), "rb") as f:
                self.assertNotIn(self.p.admin_password.encode(), f.read(), name)


if __name__ == "__main__":
    unittest.main(verbosity=2)
