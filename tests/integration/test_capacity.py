#!/usr/bin/env python3
"""Placement never overcommits: a template that fits 12 times in the hosts, 20 requests fired
at once, two scheduler instances placing them: exactly 12 ACTIVE, 8 ERROR with a no-valid-host
fault, and no host over its RAM.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_capacity.py
"""

import json
import os
import subprocess
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import Api, Platform, wait_until  # noqa: E402

# Three hosts of 16 GB each; a 4 GB template fits 4 times per host: 12 in all. vCPUs and
# disk are plentiful, so RAM is the one limit.
HOST = {"BERTH_HOST_VCPUS": "16", "BERTH_HOST_RAM_MB": "16384", "BERTH_HOST_DISK_GB": "1000"}


class Capacity(unittest.TestCase):
    def test_twenty_requests_twelve_fit(self):
        with Platform() as p:
            try:
                p.start_all(agents=3, instances={"scheduler": 2}, agent_env=HOST)
                self.run_story(p)
            except BaseException:
                p.dump_logs()
                raise

    def run_story(self, p):
        api = Api(p)
        wait_until(lambda: len(api.hosts()) == 3, 20, "three hosts reported")
        api.create_template(name="quarter", vcpus=1, ram_mb=4096, disk_gb=10, os="debian",
                            image="debian-12", lease_days=1, requires_approval=False)
        results = [None] * 20

        def fire(i):
            results[i] = api.call("POST", "/v1/requests",
                                  {"template": "quarter", "name": "vm%d" % i})

        threads = [threading.Thread(target=fire, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for r in results:
            self.assertEqual(r.status, 202, r)
        vm_ids = [r.json()["request"]["vms"][0]["id"] for r in results]

        def settled():
            vms = [api.vm(v) for v in vm_ids]
            return vms if all(v["state"] in ("ACTIVE", "ERROR") for v in vms) else None

        vms = wait_until(settled, 120, "every VM ACTIVE or ERROR")
        active = [v for v in vms if v["state"] == "ACTIVE"]
        error = [v for v in vms if v["state"] == "ERROR"]
        self.assertEqual(len(active), 12, [(v["name"], v["state"], v["fault"]) for v in vms])
        self.assertEqual(len(error), 8)
        for v in error:
            self.assertIn("no valid host", v["fault"].lower())
        hosts = api.hosts()
        for h in hosts.values():
            self.assertLessEqual(h["used"]["ram_mb"], h["capacity"]["ram_mb"], h)
        self.assertEqual(sum(h["used"]["ram_mb"] for h in hosts.values()), 12 * 4096)

        # Asked on the bus, "no valid host" says how many hosts each filter removed: the
        # three full hosts fail on RAM.
        vm = "%08x-0000-4000-8000-000000000000" % os.getpid()
        r = subprocess.run(p.probe_argv("select", "127.0.0.1:%d" % p.redis_port, vm, "1",
                                        "4096", "10", cert="taskmgr"),
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        err = json.loads(r.stdout)["error"]
        self.assertEqual(err["code"], "NO_VALID_HOST", err)
        self.assertEqual(err["details"], {"ram": "3", "hosts": "3"}, err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
