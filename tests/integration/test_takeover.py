#!/usr/bin/env python3
# ctest: heavy
"""A taskmgr instance killed with SIGKILL in the middle of a provisioning task while a second
one runs: the task is taken over and ends SUCCEEDED (or rolled back), and nothing is left
behind: no claim, no disk, no domain once the VM is disposed.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_takeover.py
"""

import glob
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import Api, Platform, host_domains, used_equal, wait_until  # noqa: E402

HOST_STAGES = ("create_disk", "build_seed", "define", "power_on", "wait_ready")


class Takeover(unittest.TestCase):
    def test_kill_taskmgr_mid_task(self):
        with Platform() as p:
            try:
                p.start_all(agents=2, instances={"taskmgr": 2})
                self.run_story(p)
            except BaseException:
                p.dump_logs()
                raise

    def run_story(self, p):
        api = Api(p)
        wait_until(lambda: len(api.hosts()) == 2, 20, "two hosts reported")
        before = api.hosts()
        procs = {x.env["BERTH_INSTANCE"]: x for x in p.procs if x.service == "taskmgr"}
        # A build takes milliseconds now: freeze the agents so the task waits on a host stage
        # (their hosts stay placeable: the scheduler counts them up for a few seconds).
        agents = [x for x in p.procs if x.service == "agent"]
        for a in agents:
            a.kill(signal.SIGSTOP)
        req = api.request("small", "survivor")
        vm_id = req["vms"][0]["id"]
        task_id = req["tasks"][0]["id"]
        key = "berth:task:{%s}" % task_id

        # Wait until the task is on a host stage, then kill whoever holds it.
        def on_host():
            stage, holder = p.redis_command("HMGET", key, "stage", "holder")
            return holder if stage in HOST_STAGES and holder in procs else None

        try:
            holder = wait_until(on_host, 30, "task on a host stage")
            procs[holder].kill(signal.SIGKILL)
            procs[holder].wait(10)
        finally:
            for a in agents:
                a.kill(signal.SIGCONT)
                a.stopping = False  # they run on: dying now would be a failure

        task = api.wait_task(task_id, timeout=90)
        self.assertIn(task["state"], ("SUCCEEDED", "FAILED"), task)
        new_holder_epoch = int(p.redis_command("HGET", key, "epoch"))
        self.assertGreaterEqual(new_holder_epoch, 2, "the task was not taken over")
        vm = api.vm(vm_id)
        if task["state"] == "SUCCEEDED":
            self.assertEqual(vm["state"], "ACTIVE")
            # As the agent's next heartbeat reports it.
            wait_until(lambda: vm_id in host_domains(api, vm["host"]), 10,
                       "the host reporting the domain")
            api.wait_task(api.dispose(vm_id)["id"], timeout=60)
            self.assertEqual(api.vm(vm_id)["state"], "DISPOSED")
        else:
            self.assertEqual(vm["state"], "ERROR")

        # Nothing left behind: claim, capacity, domains, disks and seeds.
        self.assertIsNone(p.redis_command("HGET", "berth:claim:{%s}" % vm_id, "host"))
        after = api.hosts()
        for h in before:
            self.assertTrue(used_equal(before[h], after[h]), (before[h], after[h]))
            wait_until(lambda: vm_id not in host_domains(api, h), 10, "domain gone on " + h)
        left = glob.glob(os.path.join(p.data_dir, "services", "agent-*", "**", vm_id + "*"),
                         recursive=True)
        self.assertEqual(left, [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
