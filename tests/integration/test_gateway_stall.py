#!/usr/bin/env python3
# ctest: heavy
"""A hung or dead service costs only the requests that need it.

The gateway's HTTP threads never wait on the bus: a request that needs a service is parked
until the answer or the deadline. With the meter stopped (SIGSTOP), /healthz and /readyz
answer at once, listing VMs, templates and creating a request (approval) keep working while
usage calls hang; usage calls beyond the per-service bound get a fast 503 with Retry-After,
the hung ones a 503 once their deadline passes, and everything is back after SIGCONT. With
approval killed during a burst of POSTs, every connection gets an answer. A client that
goes away while its request is parked leaves the gateway healthy (and, under the
sanitizers, clean); a gateway stopped with requests parked answers them (503) and exits
cleanly.
"""

import signal
import socket
import threading
import time

import berth_test

BOUND = 4            # http_calls_per_service for this platform
DEADLINE_MS = 4000   # http_call_timeout_ms: far above the "at once" bound below
AT_ONCE_S = 1.0      # generous for a loaded two-core machine


class Calls:
    """Requests run in parallel threads, each on its own connection and held to
    docs/openapi.yaml; .results in order: (status, headers with lower-case names, body as
    JSON, seconds), or (None, None, exception, seconds) for no answer."""

    def __init__(self, platform, method, path, token, n, body=None):
        self.results = [None] * n
        self.threads = [threading.Thread(target=self._one,
                                         args=(platform, method, path, token, body, i))
                        for i in range(n)]
        for t in self.threads:
            t.start()

    def _one(self, platform, method, path, token, body, i):
        start = time.monotonic()
        try:
            r = platform.http(method, path, body, {"Authorization": "Bearer " + token},
                              timeout=30)
            self.results[i] = (r.status, {k.lower(): v for k, v in r.headers.items()},
                               r.json(), time.monotonic() - start)
        except Exception as e:  # a connection closed with no answer is what this test hunts
            self.results[i] = (None, None, e, time.monotonic() - start)

    def done(self):
        return [r for r in self.results if r is not None]

    def join(self, timeout):
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return self.results


class GatewayStall(berth_test.PlatformCase):
    platform_env = {"BERTH_HTTP_CALLS_PER_SERVICE": str(BOUND),
                    "BERTH_HTTP_CALL_TIMEOUT_MS": str(DEADLINE_MS)}
    agents = 1

    def service(self, name):
        return [p for p in self.p.procs if p.service == name and p.alive()][0]

    def timed(self, method, path, body=None):
        start = time.monotonic()
        r = self.api.call(method, path, body)
        return r, time.monotonic() - start

    def assert_unavailable(self, result, service):
        status, headers, body, _ = result
        self.assertEqual(status, 503, result)
        self.assertEqual(headers.get("retry-after"), "1", result)
        self.assertEqual(body["error"]["code"], "UNAVAILABLE", result)
        self.assertEqual(body["error"]["details"].get("service"), service, result)

    def test_stopped_meter_costs_only_usage_calls(self):
        self.assertEqual(self.api.call("GET", "/v1/usage").status, 200)
        meter = self.service("meter")
        meter.kill(signal.SIGSTOP)
        try:
            # Twice the bound at once: the bound's worth wait for the meter, the rest are
            # refused at once.
            usage = Calls(self.p, "GET", "/v1/usage", self.api.token, 2 * BOUND)
            fast = berth_test.wait_until(
                lambda: len(usage.done()) >= BOUND and usage.done(), 10,
                "%d usage calls answered" % BOUND)
            self.assertEqual(len(fast), BOUND, "only the calls beyond the bound are answered")
            for result in fast:
                self.assert_unavailable(result, "meter")
                self.assertLess(result[3], AT_ONCE_S, result)

            # Everything that does not need the meter goes on, /healthz included, while
            # the bound's worth of usage calls hold what they hold.
            for path in ("/healthz", "/readyz"):
                r = self.p.http("GET", path)
                self.assertEqual(r.status, 200, r)
            for path in ("/v1/vms", "/v1/templates"):
                r, seconds = self.timed("GET", path)
                self.assertEqual(r.status, 200, r)
                self.assertLess(seconds, AT_ONCE_S, path)
            r, seconds = self.timed("POST", "/v1/requests",
                                    {"template": "small", "name": "during-stall"})
            self.assertEqual(r.status, 202, r)
            self.assertLess(seconds, AT_ONCE_S)
            start = time.monotonic()
            for _ in range(20):
                self.assertEqual(self.p.http("GET", "/healthz").status, 200)
            self.assertLess((time.monotonic() - start) / 20, AT_ONCE_S)
            self.assertEqual(len(usage.done()), BOUND, "the waiting usage calls still wait")

            # The waiting ones end at their deadline: 503 with Retry-After, not a hang.
            results = usage.join(DEADLINE_MS / 1000.0 + 10)
            for result in results:
                self.assert_unavailable(result, "meter")
            slow = sorted(r[3] for r in results)[BOUND:]
            for seconds in slow:
                self.assertGreaterEqual(seconds, DEADLINE_MS / 1000.0 * 0.9)
        finally:
            meter.kill(signal.SIGCONT)
        berth_test.wait_until(lambda: self.api.call("GET", "/v1/usage").status == 200, 20,
                              "usage answered after SIGCONT")
        # The slots of the calls that ended are free again: a full bound's worth is served.
        usage = Calls(self.p, "GET", "/v1/usage", self.api.token, BOUND)
        for result in usage.join(20):
            self.assertEqual(result[0], 200, result)

    def test_parked_client_that_leaves(self):
        meter = self.service("meter")
        meter.kill(signal.SIGSTOP)
        try:
            # Clients that send a usage call and hang up while it waits for the meter.
            for _ in range(BOUND):
                s = socket.create_connection(("127.0.0.1", self.p.http_port), timeout=5)
                s.sendall(("GET /v1/usage HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                           "\r\n" % self.api.token).encode())
                s.close()
            r = self.p.http("GET", "/healthz", timeout=AT_ONCE_S * 5)
            self.assertEqual(r.status, 200)
        finally:
            meter.kill(signal.SIGCONT)
        # Their calls end (answered or timed out) and their slots come back.
        berth_test.wait_until(
            lambda: all(r[0] == 200 for r in
                        Calls(self.p, "GET", "/v1/usage", self.api.token, BOUND).join(20)),
            DEADLINE_MS / 1000.0 + 20, "a full bound of usage calls served again")
        self.p.check_alive()
        self.assertEqual(self.p.sanitizer_reports(), [])

    def test_stopping_gateway_answers_parked_requests(self):
        meter = self.service("meter")
        gateway = self.service("gateway")
        meter.kill(signal.SIGSTOP)
        try:
            usage = Calls(self.p, "GET", "/v1/usage", self.api.token, BOUND + 1)
            # The one beyond the bound answers at once: the others are parked.
            berth_test.wait_until(lambda: usage.done(), 10, "a usage call answered")
            gateway.kill(signal.SIGTERM)
            self.assertEqual(gateway.wait(timeout=15), 0, "the gateway stops cleanly")
            for result in usage.join(10):
                self.assert_unavailable(result, "meter")
        finally:
            meter.kill(signal.SIGCONT)
            self.p.restart(gateway)
        self.p.wait_ready()
        self.assertEqual(self.api.call("GET", "/v1/usage").status, 200)

    def test_killed_approval_every_connection_answered(self):
        approval = self.service("approval")
        posts = Calls(self.p, "POST", "/v1/requests", self.api.token, 30,
                      body={"template": "small", "name": "burst"})
        approval.kill(signal.SIGKILL)
        results = posts.join(DEADLINE_MS / 1000.0 + 20)
        try:
            unanswered = [r for r in results if r is None or r[0] is None]
            self.assertEqual(unanswered, [], "connections closed without an answer")
            for result in results:
                if result[0] != 202:
                    self.assert_unavailable(result, "approval")
        finally:
            self.p.restart(approval)
        berth_test.wait_until(
            lambda: self.api.call("POST", "/v1/requests",
                                  {"template": "small", "name": "after"}).status == 202,
            30, "approval back")
        r = self.p.http("GET", "/healthz")
        self.assertEqual(r.status, 200)


if __name__ == "__main__":
    import unittest
    unittest.main()
