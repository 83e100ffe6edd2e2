#!/usr/bin/env python3
"""Rate limits (issue 8, test 7): past the per-user and the per-address limit the gateway
answers 429 RATE_LIMITED with Retry-After, other users and addresses go on being served, the
probes are never limited, and after the advertised wait the limited client is served again.
Low limits are set for the test; only Redis and the gateway run."""

import http.client
import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import Api, Platform, contract  # noqa: E402

BURST = 5


class GatewayCase(unittest.TestCase):
    env = None

    @classmethod
    def setUpClass(cls):
        cls.p = Platform(env=cls.env)
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

    def get(self, path, token=None, source="127.0.0.1"):
        """GET from the given source address, held to docs/openapi.yaml."""
        headers = {"Authorization": "Bearer " + token} if token else {}
        conn = http.client.HTTPConnection("127.0.0.1", self.p.http_port, timeout=10,
                                          source_address=(source, 0))
        try:
            conn.request("GET", path, headers=headers)
            r = conn.getresponse()
            response = type("Response", (), {})()
            response.status, response.headers, response.body = r.status, dict(r.getheaders()), \
                r.read()
        finally:
            conn.close()
        contract.CONTRACT.check("GET", path, headers, None, response)
        return response

    def exhaust(self, path, token=None, source="127.0.0.1"):
        """Requests until the first 429 (at most a burst and a few); that answer."""
        for _ in range(BURST + 5):
            r = self.get(path, token, source)
            if r.status == 429:
                return r
            self.assertEqual(r.status, 200, r.body)
        self.fail("no 429 after %d requests with a burst of %d" % (BURST + 5, BURST))

    def assert_limited(self, r, limit):
        self.assertEqual(r.status, 429)
        error = json.loads(r.body)["error"]
        self.assertEqual(error["code"], "RATE_LIMITED")
        self.assertEqual(error["details"]["limit"], limit)
        retry_after = int(r.headers["Retry-After"])
        self.assertGreaterEqual(retry_after, 1)
        return retry_after

    def assert_recovers(self, retry_after, path, token=None, source="127.0.0.1"):
        """Served again once the advertised wait has passed (polled, with room for a loaded
        machine); a refused poll costs the bucket nothing."""
        start = time.monotonic()
        deadline = start + retry_after + 5
        while time.monotonic() < deadline:
            r = self.get(path, token, source)
            if r.status == 200:
                return time.monotonic() - start
            self.assertEqual(r.status, 429, r.body)
            time.sleep(0.2)
        self.fail("still refused %.1f s after Retry-After: %d" % (retry_after + 5, retry_after))


class TestUserLimit(GatewayCase):
    env = {"BERTH_RATE_USER_PER_S": "1", "BERTH_RATE_USER_BURST": str(BURST)}

    def test_user_over_limit_gets_429_then_recovers(self):
        r = self.api.call("POST", "/v1/users", {"username": "ann", "password": "ann-secret-1",
                                                "role": "user"})
        self.assertEqual(r.status, 201, r)
        ann = Api(self.p, "ann", "ann-secret-1").token

        retry_after = self.assert_limited(self.exhaust("/v1/vms", ann), "user")
        # The same address, another user: not limited.
        self.assertEqual(self.get("/v1/vms", self.api.token).status, 200)
        took = self.assert_recovers(retry_after, "/v1/vms", ann)
        print("user limit: 429 with Retry-After %d s, served again after %.2f s"
              % (retry_after, took))


class TestAddressLimit(GatewayCase):
    env = {"BERTH_RATE_ADDRESS_PER_S": "1", "BERTH_RATE_ADDRESS_BURST": str(BURST)}

    def test_address_over_limit_gets_429_then_recovers(self):
        limited, other = "127.0.0.5", "127.0.0.6"
        retry_after = self.assert_limited(self.exhaust("/v1/health", source=limited), "address")
        # Authenticated or not, the address is limited; the probe is not; others are served.
        self.assert_limited(self.get("/v1/hosts", self.api.token, limited), "address")
        self.assertEqual(self.get("/healthz", source=limited).status, 200)
        self.assertEqual(self.get("/v1/health", source=other).status, 200)
        took = self.assert_recovers(retry_after, "/v1/health", source=limited)
        print("address limit: 429 with Retry-After %d s, served again after %.2f s"
              % (retry_after, took))


if __name__ == "__main__":
    unittest.main(verbosity=2)
