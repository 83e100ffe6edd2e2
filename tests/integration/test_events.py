#!/usr/bin/env python3
# ctest: heavy
"""The task engine is event-driven: a VM reaches ACTIVE well within one heartbeat interval
(30 s here), because every stage starts when the previous answer arrives, commands reach the
agent over the poll it parked at taskmgr, and wait_ready is answered by START's domain state,
not by a heartbeat. Also: no command record stays in Redis, task events carry at_ms, a task
whose VM is gone is failed once (not taken again forever), and after a host failed and was
rolled back the next host does not wait on a command meant for the first one.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_events.py
"""

import os
import signal
import sys
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import Api, Platform, PlatformCase, wait_until  # noqa: E402

HEARTBEAT_MS = 30000


class Events(PlatformCase):
    # Heartbeats every 30 s for every service and agent; the scheduler must not call a host
    # down between two of them. Commands time out fast so a host that stopped answering fails
    # its stage in seconds.
    platform_env = {"BERTH_HEARTBEAT_MS": str(HEARTBEAT_MS),
                    "BERTH_HOST_TIMEOUT_MS": str(4 * HEARTBEAT_MS),
                    "BERTH_COMMAND_TIMEOUT_MS": "2000"}
    wait_hosts = 3

    def test_1_active_within_one_heartbeat(self):
        started = time.monotonic()
        req = self.api.request("small", "quick")
        vm_id, task_id = req["vms"][0]["id"], req["tasks"][0]["id"]
        vm = self.api.wait_vm(vm_id, ("ACTIVE",), timeout=10)
        took = time.monotonic() - started
        print("request -> ACTIVE: %.3f s" % took)
        # Not a speed assertion: proof that no heartbeat was needed (one is 30 s away).
        self.assertLess(took, 10, "ACTIVE took %.1f s with %d ms heartbeats" % (took, HEARTBEAT_MS))
        self.assertEqual(vm["power_state"], "RUNNING")
        task = self.api.wait_task(task_id, timeout=10)
        self.assertEqual(task["state"], "SUCCEEDED", task)
        # The second attempt ran every stage once, each succeeding.
        names = [s["name"] for s in task["steps"]]
        second = task["steps"][len(names) - 1 - names[::-1].index("schedule"):]
        self.assertEqual([s["state"] for s in second], ["SUCCEEDED"] * len(second), task)
        print("steps: " + ", ".join("%s %s" % (s["name"], s["state"]) for s in task["steps"]))
        ready = [s for s in task["steps"] if s["name"] == "wait_ready"]
        self.assertEqual(len(ready), 1, task)
        self.assertIn("RUNNING", ready[0]["result"])

        # Commands are references held by the task's holder, never records in Redis.
        self.assertEqual(self.p.redis_command("KEYS", "berth:cmd:*"), [])
        self.assertEqual(self.p.redis_command("KEYS", "berth:host-cmds:*"), [])

        # Every task.state event carries at_ms (docs/state.md).
        events = self.p.redis_command("XRANGE", "berth:events", "-", "+")
        task_events = [dict(zip(f[::2], f[1::2])) for _, f in events]
        task_events = [e for e in task_events if e.get("type") == "task.state"
                       and e.get("task") == task_id]
        self.assertGreater(len(task_events), 2)
        for e in task_events:
            self.assertTrue(e.get("at_ms", "").isdigit(), e)

        # Disposal is event-driven too.
        done = self.api.wait_task(self.api.dispose(vm_id)["id"], timeout=10)
        self.assertEqual(done["state"], "SUCCEEDED", done)

    def orphan_task(self):
        """A due PROVISION task whose VM does not exist; its task id and key."""
        task_id, vm_id = str(uuid.uuid4()), str(uuid.uuid4())
        key = "berth:task:{%s}" % task_id
        now = str(int(time.time() * 1000))
        self.p.redis_command("HSET", key, "id", task_id, "kind", "PROVISION", "state", "QUEUED",
                             "stage", "queued", "target", vm_id, "created_ms", now,
                             "updated_ms", now, "version", "1")
        self.p.redis_command("ZADD", "berth:tasks:due", "0", task_id)
        self.p.redis_command("ZADD", "berth:tasks:wake", now, task_id)
        return task_id, key

    def test_2_task_of_missing_vm_fails_once(self):
        task_id, key = self.orphan_task()
        state = wait_until(lambda: self.p.redis_command("HGET", key, "state") == "FAILED"
                           and "FAILED", 10, "task of a missing VM failed")
        self.assertEqual(state, "FAILED")
        self.assertIn("no longer exists", self.p.redis_command("HGET", key, "fault"))
        self.assertIsNone(self.p.redis_command("ZSCORE", "berth:tasks:due", task_id))
        epoch = self.p.redis_command("HGET", key, "epoch")
        # Not taken again: the engine takes a later due task (in that pass it takes everything
        # due), and the first task's epoch stays where the one take left it.
        _, later = self.orphan_task()
        wait_until(lambda: self.p.redis_command("HGET", later, "state") == "FAILED", 10,
                   "a later task taken")
        self.assertEqual(self.p.redis_command("HGET", key, "epoch"), epoch)

    def test_3_next_host_after_rollback(self):
        # host-3 is the largest host, the free-RAM weigher's choice. Freeze its agent: the
        # build there times out, is rolled back (its DESTROY times out too), and the next
        # host must build the VM with its own commands, not wait on the DESTROY meant for
        # host-3 (which failed a healthy host and burned an attempt).
        agent = [x for x in self.p.procs if x.name == "agent-3"][0]
        agent.kill(signal.SIGSTOP)
        try:
            req = self.api.request("small", "second")
            vm_id, task_id = req["vms"][0]["id"], req["tasks"][0]["id"]
            vm = self.api.wait_vm(vm_id, ("ACTIVE",), timeout=30)
        finally:
            agent.kill(signal.SIGCONT)
            agent.stopping = False  # it runs on: dying now would be a failure
        self.assertNotEqual(vm["host"], "host-3")
        tried = self.p.redis_command("HGET", "berth:task:{%s}" % task_id, "tried")
        self.assertIn("host-3", tried)
        self.assertNotIn(vm["host"], tried, "the healthy host was failed too")
        task = self.api.wait_task(task_id, timeout=10)
        self.assertEqual(task["state"], "SUCCEEDED", task)
        # The second attempt ran every stage once, each succeeding.
        names = [s["name"] for s in task["steps"]]
        second = task["steps"][len(names) - 1 - names[::-1].index("schedule"):]
        self.assertEqual([s["state"] for s in second], ["SUCCEEDED"] * len(second), task)
        print("steps: " + ", ".join("%s %s" % (s["name"], s["state"]) for s in task["steps"]))



class PowerFromHeartbeats(unittest.TestCase):
    def test_power_state_change_is_a_transaction(self):
        with Platform() as p:
            try:
                p.start_all(agents=1)
                api = Api(p)
                wait_until(lambda: len(api.hosts()) == 1, 20, "one host reported")
                req = api.request("small", "drift")
                vm_id = req["vms"][0]["id"]
                api.wait_vm(vm_id, ("ACTIVE",), timeout=20)
                key = "berth:vm:{%s}" % vm_id
                # The record drifts from what libvirt says; the next heartbeat repairs it,
                # through a transaction: version bumped, a vm.power event written.
                version = int(p.redis_command("HGET", key, "version"))
                last = p.redis_command("XREVRANGE", "berth:events", "+", "-", "COUNT", "1")
                since = "(" + last[0][0]
                p.redis_command("HSET", key, "power_state", "STOPPED")
                wait_until(lambda: p.redis_command("HGET", key, "power_state") == "RUNNING", 10,
                           "heartbeat repaired the power state")
                self.assertEqual(int(p.redis_command("HGET", key, "version")), version + 1)
                events = [dict(zip(f[::2], f[1::2]))
                          for _, f in p.redis_command("XRANGE", "berth:events", since, "+")]
                power = [e for e in events if e.get("type") == "vm.power" and e.get("vm") == vm_id]
                self.assertEqual(len(power), 1, power)
                self.assertEqual(power[0]["power_state"], "RUNNING")
                self.assertTrue(power[0]["at_ms"].isdigit())
                # An unchanged state writes nothing: the version stays over two more beats.
                host_key = "berth:host:" + p.redis_command("HGET", key, "host")
                for _ in range(2):
                    seen = p.redis_command("HGET", host_key, "last_seen_ms")
                    wait_until(lambda: p.redis_command("HGET", host_key, "last_seen_ms") != seen,
                               10, "another heartbeat")
                self.assertEqual(int(p.redis_command("HGET", key, "version")), version + 1)
            except BaseException:
                p.dump_logs()
                raise


if __name__ == "__main__":
    unittest.main(verbosity=2)
