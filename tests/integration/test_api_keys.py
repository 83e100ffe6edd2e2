#!/usr/bin/env python3
"""API keys (issue 9, Accounts): a user makes named keys for automation, scoped to some of their
groups and with an expiry; the secret is shown once and only its HMAC is kept; a key
authenticates like a token but acts with the user's roles in its groups only (a key scoped to
one group cannot see the other group's VMs, nor ask for VMs there); a revoked or expired key,
and every key of a disabled user, is refused at once; a key cannot make keys; keys are listed
(never their secrets) and revoked like tokens."""

import hashlib
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import Api, PlatformCase  # noqa: E402

PW = "api-keys-password"


class KeyApi(Api):
    """The REST API as seen through an API key."""

    def __init__(self, platform, secret):  # noqa: super().__init__ would sign in
        self.p = platform
        self.token = secret


class ApiKeys(PlatformCase):
    agents = 1
    wait_hosts = 1

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            admin = cls.api
            for name in ("blue", "green"):
                r = admin.call("POST", "/v1/groups", {"name": name})
                assert r.status == 201, r
            r = admin.call("POST", "/v1/users", {"username": "kim", "password": PW})
            assert r.status == 201, r
            r = admin.call("POST", "/v1/users", {"username": "lee", "password": PW})
            assert r.status == 201, r
            # kim manages both groups; lee is a member of green with a VM there.
            for user, group, role in (("kim", "blue", "manager"), ("kim", "green", "manager"),
                                      ("lee", "green", "member")):
                r = admin.call("POST", "/v1/groups/%s/members" % group,
                               {"user": user, "role": role})
                assert r.status == 201, r
            cls.kim = Api(cls.p, "kim", PW)
            lee = Api(cls.p, "lee", PW)
            r = lee.call("POST", "/v1/requests", {"template": "small", "name": "lee-vm",
                                                  "group": "green"})
            assert r.status == 202, r
            cls.green_vm = r.json()["request"]["vms"][0]["id"]
            lee.wait_vm(cls.green_vm, ("ACTIVE",))
        except Exception:
            cls.p.dump_logs()
            cls.p.stop()
            raise

    def make(self, api, body, status=201):
        r = api.call("POST", "/v1/auth/keys", body)
        self.assertEqual(r.status, status, r)
        return r.json()

    def test_a_scoped_key_sees_only_its_groups(self):
        made = self.make(self.kim, {"name": "blue-ci", "groups": ["blue"], "expires_in_days": 7})
        key, secret = made["key"], made["secret"]
        self.assertEqual(key["name"], "blue-ci")
        self.assertEqual(len(key["groups"]), 1)
        as_key = KeyApi(self.p, secret)
        # kim (manager of green) sees lee's green VM with a token, not with the blue key.
        self.assertIn(self.green_vm, {v["id"] for v in self.kim.get("/v1/vms?limit=500")["vms"]})
        self.assertNotIn(self.green_vm, {v["id"] for v in as_key.get("/v1/vms?limit=500")["vms"]})
        self.assertEqual(as_key.call("GET", "/v1/vms/" + self.green_vm).status, 404)
        self.assertEqual(self.kim.call("GET", "/v1/vms/" + self.green_vm).status, 200)
        # Nor is green, or its members, there for it: kim's manager role in green is not.
        self.assertEqual(as_key.call("GET", "/v1/groups/green").status, 404)
        self.assertEqual(as_key.call("GET", "/v1/groups/green/members").status, 404)
        self.assertEqual(as_key.call("GET", "/v1/groups/blue").status, 200)
        self.assertEqual(as_key.call("POST", "/v1/groups/green/members",
                                     {"user": "lee", "role": "auditor"}).status, 404)
        # An unscoped key acts with all of kim's groups.
        wide = KeyApi(self.p, self.make(self.kim, {"name": "all"})["secret"])
        self.assertIn(self.green_vm, {v["id"] for v in wide.get("/v1/vms?limit=500")["vms"]})
        # Only the HMAC of the secret is stored, nowhere the secret.
        record = self.p.redis_command("HGETALL", "berth:apikey:" + key["id"])
        flat = " ".join(record) if isinstance(record, list) else str(record)
        self.assertNotIn(secret, flat)
        self.assertNotIn(secret.split("_")[-1], flat)
        self.assertNotIn(hashlib.sha256(secret.encode()).hexdigest(), flat)

    def test_a_scoped_key_acts_for_its_user_in_its_groups_only(self):
        r = self.api.call("POST", "/v1/groups/blue/members", {"user": "lee", "role": "member"})
        self.assertEqual(r.status, 201, r)
        lee = Api(self.p, "lee", PW)
        as_key = KeyApi(self.p, self.make(lee, {"name": "blue-only", "groups": ["blue"]})["secret"])
        # lee's own VM in green is out of the key's reach, as are requests made in green.
        self.assertEqual(as_key.call("GET", "/v1/vms/" + self.green_vm).status, 404)
        self.assertNotIn(self.green_vm, {v["id"] for v in as_key.get("/v1/vms?limit=500")["vms"]})
        def green_requests():
            return len(self.api.get("/v1/requests?group=green&limit=500")["requests"])
        before = green_requests()
        r = as_key.call("POST", "/v1/requests", {"template": "small", "name": "x",
                                                 "group": "green"})
        self.assertEqual(r.status, 404, r)
        self.assertEqual(r.json()["error"]["details"]["field"], "group")
        self.assertEqual(green_requests(), before)
        # In blue it asks as lee would.
        r = as_key.call("POST", "/v1/requests", {"template": "small", "name": "blue-vm",
                                                 "group": "blue"})
        self.assertEqual(r.status, 202, r)
        self.assertEqual(r.json()["request"]["group"], self.api.get("/v1/groups/blue")["group"]["id"])

    def test_keys_are_listed_and_revoked_at_once(self):
        made = self.make(self.kim, {"name": "rev", "groups": ["green"]})
        as_key = KeyApi(self.p, made["secret"])
        self.assertEqual(as_key.call("GET", "/v1/vms").status, 200)
        listed = self.kim.get("/v1/auth/keys")["keys"]
        self.assertIn(made["key"]["id"], [k["id"] for k in listed])
        self.assertNotIn("secret", str(listed))
        # A key cannot make keys (a scoped key never widens itself), nor is it a token.
        r = as_key.call("POST", "/v1/auth/keys", {"name": "more"})
        self.assertEqual(r.status, 403, r)
        self.assertEqual(as_key.call("DELETE", "/v1/auth/tokens/current").status, 400)
        # Someone else's key is not theirs to revoke (nor to know of).
        lee = Api(self.p, "lee", PW)
        self.assertEqual(lee.call("DELETE", "/v1/auth/keys/" + made["key"]["id"]).status, 404)
        r = self.kim.call("DELETE", "/v1/auth/keys/" + made["key"]["id"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"id": made["key"]["id"], "revoked": True})
        for _ in range(12):  # every worker thread refuses it at once
            self.assertEqual(as_key.call("GET", "/v1/vms").status, 401)
        self.assertEqual(self.kim.call("DELETE", "/v1/auth/keys/" + made["key"]["id"]).status,
                         404)
        self.assertNotIn(made["key"]["id"], [k["id"] for k in self.kim.get("/v1/auth/keys")["keys"]])

    def test_an_expired_or_forged_key_is_refused(self):
        made = self.make(self.kim, {"name": "short", "expires_in_days": 1})
        as_key = KeyApi(self.p, made["secret"])
        self.assertEqual(as_key.call("GET", "/v1/vms").status, 200)
        # Its expiry moved into the past (the record's MAC covers it): refused, whatever Redis
        # says after a rewrite; and a record whose expiry is past is refused by the gateway.
        rec = "berth:apikey:" + made["key"]["id"]
        self.p.redis_command("HSET", rec, "expires_ms", str(int(time.time() * 1000) - 1000))
        self.assertEqual(as_key.call("GET", "/v1/vms").status, 401)
        self.p.redis_command("HSET", rec, "expires_ms", str(int(time.time() * 1000) + 10 ** 9))
        self.assertEqual(as_key.call("GET", "/v1/vms").status, 401)  # MAC no longer matches
        # A key of the right shape that was never made, and a wrong secret for a real id.
        other = self.make(self.kim, {"name": "real"})
        forged = other["secret"][:-4] + "AAAA"
        self.assertEqual(KeyApi(self.p, forged).call("GET", "/v1/vms").status, 401)
        self.assertEqual(KeyApi(self.p, "bk_0123456789abcdef_" + "A" * 43)
                         .call("GET", "/v1/vms").status, 401)
        # Input is checked.
        for body, field in (({"name": "x", "expires_in_days": 367}, "expires_in_days"),
                            ({"name": "x", "expires_in_days": 0}, "expires_in_days"),
                            ({"name": "bad name"}, "name"),
                            ({"name": "x", "groups": ["nosuch"]}, "groups"),
                            ({"name": "x", "groups": "blue"}, "groups")):
            r = self.kim.call("POST", "/v1/auth/keys", body)
            self.assertEqual(r.status, 400, (body, r))
            self.assertEqual(r.json()["error"]["details"]["field"], field)

    def test_a_disabled_users_keys_stop_at_once(self):
        r = self.api.call("POST", "/v1/users", {"username": "dee", "password": PW})
        self.assertEqual(r.status, 201, r)
        dee = Api(self.p, "dee", PW)
        as_key = KeyApi(self.p, self.make(dee, {"name": "dee-key"})["secret"])
        self.assertEqual(as_key.call("GET", "/v1/vms").status, 200)
        self.assertEqual(self.api.call("PATCH", "/v1/users/dee",
                                       {"state": "DISABLED"}).status, 200)
        for _ in range(12):
            self.assertEqual(as_key.call("GET", "/v1/vms").status, 401)
        self.assertEqual(self.api.call("PATCH", "/v1/users/dee",
                                       {"state": "ACTIVE"}).status, 200)
        self.assertEqual(as_key.call("GET", "/v1/vms").status, 200)
        # A password change leaves keys alone; deleting the user takes them.
        r = dee.call("POST", "/v1/auth/password", {"current": PW, "new": PW + "-2"})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(as_key.call("GET", "/v1/vms").status, 200)
        self.assertEqual(self.api.call("DELETE", "/v1/users/dee").status, 200)
        self.assertEqual(as_key.call("GET", "/v1/vms").status, 401)
        self.assertEqual(self.p.redis_command("EXISTS", "berth:user-apikeys:dee"), 0)

    def test_a_user_holds_a_bounded_number_of_keys(self):
        r = self.api.call("POST", "/v1/users", {"username": "max", "password": PW})
        self.assertEqual(r.status, 201, r)
        mx = Api(self.p, "max", PW)
        for i in range(20):
            self.make(mx, {"name": "k%d" % i})
        r = mx.call("POST", "/v1/auth/keys", {"name": "one-more"})
        self.assertEqual(r.status, 409, r)
        self.assertEqual(r.json()["error"]["details"]["limit"], "apikeys_per_user_max")
        self.assertEqual(len(mx.get("/v1/auth/keys")["keys"]), 20)
        first = mx.get("/v1/auth/keys")["keys"][0]["id"]
        self.assertEqual(mx.call("DELETE", "/v1/auth/keys/" + first).status, 200)
        self.make(mx, {"name": "one-more"})


if __name__ == "__main__":
    unittest.main(verbosity=2)
