#!/usr/bin/env python3
"""A slow hypervisor does not stall its agent: with every libvirt command on the host delayed
3 s (libvirt_delay_ms), the agent's heartbeats keep arriving on time while commands run, and
two VMs placed on that host are built side by side, not one command after the other.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_agent_delay.py
"""

import datetime
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import TERMINAL_VM, PlatformCase  # noqa: E402

DELAY_MS = 3000
HEARTBEAT_MS = 500
HOST = "host-1"
# Stages that each wait for one agent command (CREATE_DISK, PUT_SEED, DEFINE, START).
AGENT_STAGES = ("create_disk", "build_seed", "define", "power_on")


def ms(iso):
    """Milliseconds since the epoch of an API timestamp (2026-01-02T03:04:05.678Z)."""
    t = datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ")
    return int(t.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)


class AgentDelay(PlatformCase):
    agents = 1
    agent_env = {"BERTH_LIBVIRT_DELAY_MS": str(DELAY_MS), "BERTH_HEARTBEAT_MS": str(HEARTBEAT_MS)}

    def last_seen(self):
        value = self.p.redis_command("HGET", "berth:host:" + HOST, "last_seen_ms")
        return int(value) if value else None

    def test_slow_libvirt(self):
        self.assertEqual(list(self.api.hosts()), [HOST])
        req = self.api.request("small", "slow", count=2)
        vm_ids = [v["id"] for v in req["vms"]]
        self.assertEqual(len(vm_ids), 2)

        # Watch the host's heartbeats (taskmgr's record of when it last heard from the agent)
        # until both VMs are ACTIVE, i.e. for the whole time the agent runs their commands.
        beats = [self.last_seen()]
        deadline = time.monotonic() + 120
        vms = {}
        while True:
            self.p.check_alive()
            seen = self.last_seen()
            if seen != beats[-1]:
                beats.append(seen)
            vms = {i: self.api.vm(i) for i in vm_ids}
            states = [v["state"] for v in vms.values()]
            if all(s == "ACTIVE" for s in states):
                break
            ended = [v for v in vms.values()
                     if v["state"] in TERMINAL_VM and v["state"] != "ACTIVE"]
            self.assertEqual(ended, [], "a VM ended other than ACTIVE")
            self.assertLess(time.monotonic(), deadline, "VMs not ACTIVE after 120s: %r" % vms)
            time.sleep(0.05)
        beats.append(self.last_seen())
        self.assertEqual({v["host"] for v in vms.values()}, {HOST})

        # The build took many delays; heartbeats never went quiet for longer than the three
        # intervals their registration lasts (a loop blocked in libvirt would be silent for
        # at least a whole delay each command).
        gaps = [b - a for a, b in zip(beats, beats[1:])]
        self.assertGreater(beats[-1] - beats[0], 3 * DELAY_MS, beats)
        self.assertLessEqual(max(gaps), 3 * HEARTBEAT_MS, "heartbeat gaps (ms): %r" % gaps)

        # Each agent stage of both tasks took at least one delay: the commands really were
        # slow. Had the agent run the two VMs' commands one after the other, the second
        # would finish at least two delays after the first was handed out; here both finish
        # within less than that, so they ran at the same time.
        tasks = [self.api.task(v["task"]) for v in vms.values()]
        for stage in AGENT_STAGES:
            steps = []
            for task in tasks:
                self.assertEqual(task["state"], "SUCCEEDED", task)
                found = [s for s in task["steps"] if s["name"] == stage]
                self.assertEqual(len(found), 1, task["steps"])
                steps.append((ms(found[0]["started_at"]), ms(found[0]["finished_at"])))
            for started, finished in steps:
                self.assertGreaterEqual(finished - started, DELAY_MS, (stage, steps))
            first_out = min(s for s, _ in steps)
            both_done = max(f for _, f in steps)
            self.assertLess(both_done - first_out, 2 * DELAY_MS, (stage, steps))
            # ... and they overlapped: each started before the other finished.
            self.assertLess(max(s for s, _ in steps), min(f for _, f in steps), (stage, steps))

        for vm_id in vm_ids:
            done = self.api.wait_task(self.api.dispose(vm_id)["id"], timeout=120)
            self.assertEqual(done["state"], "SUCCEEDED", done)


if __name__ == "__main__":
    unittest.main()
