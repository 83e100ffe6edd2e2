"""Redis is not an open door: it refuses a client without the platform's password, the
services' own user reaches only berth:* keys and no administrative command, and writing
Redis does not mint a token.

The token records are named by an HMAC of the token under the gateway's token.secret and
carry a MAC over their fields, neither of which can be made without that key: a record
written straight into Redis (as the old layout named them, by the token's SHA-256) does not
authenticate its token, and a genuine record changed (role) or copied under another token's
name stops authenticating.
"""

import base64
import hashlib
import os
import socket
import time
import unittest

import berth_test
from berth_test import berth_platform

# The gateway trusts a checked token for token_cache_ms (1 s by default) per worker thread;
# a changed record is refused once that passes. Generous for a loaded CI machine.
REFUSED_WITHIN_S = 10.0


def raw_redis(port, *commands):
    """Send commands on a fresh unauthenticated connection; each reply (errors as strings)."""
    out = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        reader = berth_platform._RespReader(s)
        for command in commands:
            s.sendall(berth_platform.resp_command(*command))
            try:
                out.append(reader.read())
            except berth_platform.PlatformError as e:
                out.append(str(e))
    return out


def new_token_text():
    """A token-shaped string (32 random bytes, base64url without padding), never issued."""
    return base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()


class StoreAuth(berth_test.PlatformCase):
    agents = 1

    def status(self, token, method="GET", path="/v1/templates"):
        return self.p.http(method, path, headers={"Authorization": "Bearer " + token}).status

    def token_records(self, user):
        """{key: fields} of the token records Redis holds for user."""
        out = {}
        for key in self.p.redis_command("KEYS", "berth:token:*"):
            flat = self.p.redis_command("HGETALL", key)
            fields = dict(zip(flat[0::2], flat[1::2]))
            if fields.get("user") == user:
                out[key] = fields
        return out

    def wait_refused(self, token):
        """Poll an admin-only call with token until it is 401. Meanwhile a worker thread may
        still trust what it checked before the change (token_cache_ms), which is a member:
        403; never an admin (400, the empty body looked at)."""
        deadline = time.monotonic() + REFUSED_WITHIN_S
        while True:
            status = self.status(token, "POST", "/v1/users")
            if status == 401:
                return
            self.assertEqual(status, 403, "the changed record made the token an admin's")
            if time.monotonic() > deadline:
                self.fail("token still accepted %.0f s after its record changed"
                          % REFUSED_WITHIN_S)
            time.sleep(0.1)

    def test_redis_refuses_a_client_without_the_password(self):
        ping, wrong, written = raw_redis(
            self.p.redis_port, ("PING",), ("AUTH", "not-the-password"),
            ("SET", "berth:token:x", "y"))
        self.assertTrue(ping.startswith("redis: NOAUTH"), ping)
        self.assertTrue(wrong.startswith("redis: WRONGPASS"), wrong)
        self.assertTrue(written.startswith("redis: NOAUTH"), written)
        self.assertEqual(self.p.redis_command("EXISTS", "berth:token:x"), 0)
        # With the password: the same server, bound to loopback, protected mode on.
        self.assertEqual(raw_redis(self.p.redis_port, ("AUTH", self.p.redis_password),
                                   ("PING",)), ["OK", "PONG"])
        self.assertEqual(self.p.redis_command("CONFIG", "GET", "protected-mode"),
                         ["protected-mode", "yes"])
        self.assertEqual(self.p.redis_command("CONFIG", "GET", "bind")[1], "127.0.0.1")

    def test_the_services_user_reaches_only_berth_keys(self):
        # What every service logs in as: berth:* keys, nothing that administers the server
        # (rewriting its files, reading its users, wiping or watching everything).
        replies = raw_redis(
            self.p.redis_port, ("AUTH", "berth", self.p.redis_service_password),
            ("SET", "berth:test:mine", "1"), ("SET", "other", "1"),
            ("CONFIG", "SET", "dir", "/tmp"), ("ACL", "LIST"), ("FLUSHALL",), ("KEYS", "*"),
            ("MONITOR",))
        self.assertEqual(replies[:2], ["OK", "OK"])
        for command, reply in zip(("SET other", "CONFIG SET", "ACL LIST", "FLUSHALL", "KEYS",
                                   "MONITOR"), replies[2:]):
            self.assertTrue(str(reply).startswith("redis: NOPERM"), (command, reply))
        self.assertEqual(self.p.redis_command("EXISTS", "other"), 0)
        self.assertEqual(self.p.redis_command("DEL", "berth:test:mine"), 1)

    def test_token_written_into_redis_does_not_authenticate(self):
        far = str(int(time.time() * 1000) + 3600 * 1000)
        forged = new_token_text()
        digest = hashlib.sha256(forged.encode()).hexdigest()
        # The old layout (the token's SHA-256 names the record), and the same with a MAC
        # field made up by the attacker.
        self.p.redis_command("HSET", "berth:token:" + digest, "user", self.p.admin_user,
                             "role", "admin", "expires_ms", far)
        self.assertEqual(self.status(forged, "POST", "/v1/users"), 401)
        self.p.redis_command("HSET", "berth:token:" + digest, "mac",
                             hashlib.sha256(b"guess" + forged.encode()).hexdigest())
        self.assertEqual(self.status(forged), 401)
        # A genuine token still works.
        self.assertEqual(self.status(self.api.token), 200)

    def test_changed_or_copied_record_stops_authenticating(self):
        r = self.api.call("POST", "/v1/users", {"username": "mallory", "password": "mallory-pw-1",
                                                "role": "user"})
        self.assertEqual(r.status, 201, r)
        mallory = berth_test.Api(self.p, "mallory", "mallory-pw-1")
        self.assertEqual(mallory.call("POST", "/v1/users", {"username": "x", "password":
                                                            "xxxxxxxxxx"}).status, 403)
        records = self.token_records("mallory")
        self.assertEqual(len(records), 1, records)
        key, fields = next(iter(records.items()))

        # Her own record made admin: the MAC no longer matches, the token stops working.
        self.p.redis_command("HSET", key, "role", "admin")
        self.wait_refused(mallory.token)

        # An admin's record (fields and MAC) copied under her token's name: bound to its
        # own name, it does not vouch for hers either.
        admin = next(iter(self.token_records(self.p.admin_user).values()))
        self.p.redis_command("HSET", key, "user", admin["user"], "role", admin["role"],
                             "expires_ms", admin["expires_ms"], "mac", admin["mac"])
        self.wait_refused(mallory.token)

        # Logging in again issues a working token.
        again = berth_test.Api(self.p, "mallory", "mallory-pw-1")
        self.assertEqual(self.status(again.token), 200)


if __name__ == "__main__":
    unittest.main()
