#!/usr/bin/env python3
"""Redis that survives its primary (issue 15): every service and two simulated hosts on a
Redis primary with two replicas and three sentinels on this machine, every write waiting for
one replica (redis_wait_replicas 1):

- during a burst of 50 VM requests the primary is killed with SIGKILL;
- the sentinels promote a replica and every service finds it without a restart (the store
  asks the sentinels again on reconnect): requests made after the failover are answered 202
  and their VMs become ACTIVE;
- no request that was answered 202 is lost: each is there after the failover and each of its
  VMs reaches ACTIVE. Requests refused meanwhile (503: the write could not be confirmed) are
  the clients' to send again.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_failover.py
"""

# ctest: heavy

import os
import signal
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import PlatformCase, wait_until  # noqa: E402

BURST = 50


class Failover(PlatformCase):
    agents = 2
    wait_hosts = 2
    sentinel = True
    platform_env = {"BERTH_REDIS_WAIT_REPLICAS": "1", "BERTH_REDIS_WAIT_TIMEOUT_MS": "2000"}
    agent_env = {"BERTH_HOST_VCPUS": "64", "BERTH_HOST_RAM_MB": "131072",
                 "BERTH_HOST_DISK_GB": "4000"}

    def test_primary_killed_during_a_burst(self):
        self.api.create_template(name="tiny", vcpus=1, ram_mb=256, disk_gb=1, os="debian",
                                 image="debian-12", lease_days=1, requires_approval=False)
        first = self.p.primary_port()
        answered, refused = [], []
        lock = threading.Lock()

        def ask(i):
            try:
                r = self.api.call("POST", "/v1/requests", {"template": "tiny",
                                                           "name": "b%02d" % i})
            except OSError as e:  # the gateway's answer lost with its connection
                with lock:
                    refused.append((i, repr(e)))
                return
            with lock:
                if r.status == 202:
                    answered.append(r.json()["request"])
                else:
                    refused.append((i, r.status))

        threads = []
        for i in range(BURST):
            t = threading.Thread(target=ask, args=(i,))
            t.start()
            threads.append(t)
            if i == BURST // 3:
                wait_until(lambda: len(answered) >= 5, 30, "a few requests answered")
                self.p.redis.kill(signal.SIGKILL)
        for t in threads:
            t.join(60)
        second = wait_until(lambda: (lambda port: port if port != first else None)(
            self.p.primary_port()), 30, "the sentinels promoted a replica")
        print("primary %d -> %d; %d answered 202, %d refused: %s" %
              (first, second, len(answered), len(refused), sorted({x for _, x in refused})))
        # The primary died once five had been answered: those five at least must be kept.
        self.assertGreaterEqual(len(answered), 5)

        # Nothing answered 202 is lost: each request is there, each VM becomes ACTIVE.
        for req in answered:
            r = self.api.call("GET", "/v1/requests/" + req["id"])
            self.assertEqual(r.status, 200, r)
        for req in answered:
            for vm in req["vms"]:
                self.api.wait_vm(vm["id"], ("ACTIVE",), timeout=90)

        # And the platform goes on without a restart.
        r = wait_until(lambda: (lambda r: r if r.status == 202 else None)(
            self.api.call("POST", "/v1/requests", {"template": "tiny", "name": "after"})), 30,
            "a request after the failover answered 202")
        self.api.wait_vm(r.json()["request"]["vms"][0]["id"], ("ACTIVE",), timeout=60)
        self.assertEqual(self.p.unexpected_exits(), [])


if __name__ == "__main__":
    unittest.main()
