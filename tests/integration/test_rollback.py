#!/usr/bin/env python3
# ctest: heavy
"""A build that fails on a host is rolled back there (claim released, nothing left on the
host) and tried again on another host; when no host can build it, the VM ends in ERROR with
a fault that says why, and every host's capacity is back where it was.

Hosts refuse a flavor they cannot build through the agent's own limit (vm_max_ram_mb), so the
failure comes from the real agent, in the middle of provisioning, after the scheduler claimed.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_rollback.py
"""

import glob
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import Api, Platform, host_domains, used_equal, wait_until  # noqa: E402


class Rollback(unittest.TestCase):
    def test_retry_elsewhere_then_error(self):
        # The scheduler reads the hosts afresh for every placement (host_refresh_ms 0): with
        # its 1 s cache, a request made right after host-2 first reports could be placed from
        # a copy that does not have host-2 yet, and the story below would not start there.
        with Platform(env={"BERTH_HOST_REFRESH_MS": "0"}) as p:
            try:
                p.start_all(agents=0, wait=False)
                # host-1: 16 GB, builds up to 1536 MB VMs; host-2: 32 GB (the free-RAM
                # weigher's first choice), builds nothing over 512 MB.
                p.start_agent(1, env={"BERTH_VM_MAX_RAM_MB": "1536"})
                p.start_agent(2, env={"BERTH_VM_MAX_RAM_MB": "512"})
                p.wait_ready()
                self.run_story(p)
            except BaseException:
                p.dump_logs()
                raise

    def run_story(self, p):
        api = Api(p)
        wait_until(lambda: len(api.hosts()) == 2, 20, "two hosts reported")
        before = api.hosts()

        # 1 GB: fails on host-2, rolled back there, built on host-1.
        vm_id = api.request("small", "second-try")["vms"][0]["id"]
        vm = api.wait_vm(vm_id, ("ACTIVE",))
        self.assertEqual(vm["host"], "host-1")
        task = api.task(vm["task"])
        self.assertEqual(task["state"], "SUCCEEDED")
        states = [(s["name"], s["state"]) for s in task["steps"]]
        # The agent checks a flavor against its limits when it defines the domain.
        self.assertIn(("define", "FAILED"), states)
        self.assertIn(("create_disk", "ROLLED_BACK"), states)
        self.assertIn(("undo_host", "SUCCEEDED"), states)
        self.assertIn(("release_claim", "SUCCEEDED"), states)
        self.assertEqual(states[-1], ("wait_ready", "SUCCEEDED"))
        failed = [s for s in task["steps"] if s["state"] == "FAILED"][0]
        self.assertIn("ram_mb 1024", failed["result"])
        hosts = api.hosts()
        self.assertTrue(used_equal(hosts["host-2"], before["host-2"]), hosts["host-2"])
        self.assertEqual(hosts["host-1"]["used"]["ram_mb"] - before["host-1"]["used"]["ram_mb"],
                         1024)

        # 2 GB: fails on both hosts, then no host is left: ERROR with the reason.
        api.create_template(name="twogig", vcpus=1, ram_mb=2048, disk_gb=10, os="debian",
                            image="debian-12", lease_days=1, requires_approval=False)
        bad_id = api.request("twogig", "nowhere")["vms"][0]["id"]
        bad = api.wait_vm(bad_id, ("ERROR",))
        # The fault tells each attempt, the root cause first.
        self.assertIn("define failed on host host-2", bad["fault"])
        self.assertIn("define failed on host host-1", bad["fault"])
        self.assertIn("ram_mb 2048", bad["fault"])
        self.assertIn("no valid host", bad["fault"])
        self.assertFalse(bad["host"])
        task = api.task(bad["task"])
        self.assertEqual(task["state"], "FAILED")
        self.assertEqual([s["name"] for s in task["steps"] if s["state"] == "FAILED"],
                         ["define", "define", "schedule"])
        last_failure = [s for s in task["steps"] if s["state"] == "FAILED"][-1]
        self.assertIn("no valid host", last_failure["result"].lower())
        # Each rollback runs the undo stages its attempt needs, from the stage table: a host
        # stage failed -> remove what the host built, then give the claim back; scheduling
        # failed -> only the (empty) claim, nothing on any host.
        names = [s["name"] for s in task["steps"]]
        undos = []
        for i, step in enumerate(task["steps"]):
            if step["state"] == "FAILED":
                undos.append([n for n in names[i + 1:i + 3]
                              if n in ("undo_host", "release_claim")])
        self.assertEqual(undos, [["undo_host", "release_claim"], ["undo_host", "release_claim"],
                                 ["release_claim"]], names)
        self.assertIsNone(p.redis_command("HGET", "berth:claim:{%s}" % bad_id, "host"))
        for h in ("host-1", "host-2"):
            self.assertNotIn(bad_id, host_domains(api, h))
        self.assertEqual(glob.glob(os.path.join(p.data_dir, "services", "agent-*", "**",
                                                bad_id + "*"), recursive=True), [])

        # Disposing of the ERROR VM is allowed and changes no capacity.
        api.wait_task(api.dispose(bad_id)["id"])
        self.assertEqual(api.vm(bad_id)["state"], "DISPOSED")
        api.wait_task(api.dispose(vm_id)["id"])
        after = api.hosts()
        for h in before:
            self.assertTrue(used_equal(before[h], after[h]), (before[h], after[h]))


if __name__ == "__main__":
    unittest.main(verbosity=2)
