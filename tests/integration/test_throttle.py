#!/usr/bin/env python3
"""Priorities and throttling (issue 10, test 4), through the REST API with two taskmgr
instances and one simulated host whose libvirt commands each take a while:

- with heavy_per_host = 2, a burst of 20 provisions never has more than 2 builds running at
  once on the host, as the tasks' own steps tell it (a build runs from its first heavy stage,
  stage_image, to the task's end), and the limit is used (2 do run side by side);
- a queued build is QUEUED with class heavy and a queue_position; the line only moves
  forward, and a task ahead in line leaves it first;
- a stop asked during the burst (a light task) completes before any build that was queued
  when it was asked, and the stopped VM is STOPPED;
- a taskmgr killed with SIGKILL during a second burst leaves no slot behind: the other
  instance finishes every build, still never more than 2 at once, and afterwards a new
  build starts without waiting in line.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_throttle.py
"""

import datetime
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import Api, Platform, PlatformCase, wait_until  # noqa: E402

PER_HOST = 2
BURST = 20
HOST = {"BERTH_HOST_VCPUS": "128", "BERTH_HOST_RAM_MB": "262144", "BERTH_HOST_DISK_GB": "100000",
        # Each libvirt command takes this long, so builds last long enough to overlap.
        "BERTH_LIBVIRT_DELAY_MS": "300"}
ENDED = ("SUCCEEDED", "FAILED", "ABORTED")


def ms(iso):
    """Milliseconds since the epoch of an API timestamp (2026-01-02T03:04:05.678Z)."""
    t = datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ")
    return int(t.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)


def build_interval(task):
    """[start, end) of a provisioning's build: its first stage_image step to its end."""
    starts = [ms(s["started_at"]) for s in task["steps"] if s["name"] == "stage_image"]
    return (starts[0], ms(task["finished_at"])) if starts else None


def most_at_once(intervals):
    """The largest number of half-open intervals that overlap at one instant."""
    edges = sorted([(e, -1) for _, e in intervals] + [(s, 1) for s, _ in intervals])
    most = now = 0
    for _, step in edges:  # an end at the same ms as a start comes first: half-open
        now += step
        most = max(most, now)
    return most


class Throttle(PlatformCase):
    agents = 1
    wait_hosts = 1
    agent_env = HOST
    platform_env = {"BERTH_HEAVY_PER_HOST": str(PER_HOST), "BERTH_HEAVY_GLOBAL": "64"}

    @classmethod
    def setUpClass(cls):
        # As PlatformCase, with two taskmgr instances: the limit holds across them.
        cls.p = Platform(env=cls.platform_env)
        try:
            cls.p.start_all(agents=cls.agents, agent_env=cls.agent_env,
                            instances={"taskmgr": 2})
            cls.api = Api(cls.p)
            wait_until(lambda: len(cls.api.hosts()) == 1, 20, "the host reported")
            cls.api.create_template(name="burst", vcpus=1, ram_mb=256, disk_gb=5, os="debian",
                                    image="debian-12", lease_days=1, requires_approval=False)
        except Exception:
            cls.p.dump_logs()
            cls.p.stop()
            raise

    def burst(self, name):
        """BURST provisions in one request; their task ids."""
        req = self.api.request("burst", name, count=BURST)
        self.request_id = req["id"]
        vm_ids = [v["id"] for v in req["vms"]]
        self.assertEqual(len(vm_ids), BURST)
        tasks = []
        for vm_id in vm_ids:
            task = wait_until(lambda: self.api.vm(vm_id)["task"], 10, "VM %s has a task" % vm_id)
            tasks.append(task)
        return tasks

    def poll(self, ids):
        """Each task as GET /v1/tasks/{id} shows it now, in the order of ids."""
        return [self.api.task(i) for i in ids]

    def finish(self, ids, timeout=180.0):
        return [self.api.wait_task(i, timeout) for i in ids]

    def assert_throttled(self, tasks):
        for t in tasks:
            self.assertEqual(t["state"], "SUCCEEDED", t)
            self.assertEqual(t["class"], "heavy", t)
            self.assertIsNone(t["queue_position"], t)
        intervals = [build_interval(t) for t in tasks]
        self.assertTrue(all(intervals), tasks)
        self.assertEqual(most_at_once(intervals), PER_HOST,
                         "builds at once on the host: %r" % sorted(intervals))

    def test_1_burst_on_one_host(self):
        target = self.api.request("burst", "target")["vms"][0]["id"]
        target = self.api.wait_vm(target, ("ACTIVE",))
        self.assertEqual(target["power_state"], "RUNNING")

        ids = self.burst("b")
        # Wait until builds wait in line, then ask for the stop.
        seen = wait_until(lambda: [t for t in self.poll(ids) if t["queue_position"]], 60,
                          "builds waiting in line")
        r = self.api.call("POST", "/v1/vms/%s/actions" % target["id"], {"action": "stop"})
        self.assertEqual(r.status, 202, r)
        stop = r.json()["task"]
        self.assertEqual(stop["class"], "light")
        queued_then = {t["id"] for t in self.poll(ids)
                       if t["state"] == "QUEUED" and t["queue_position"]}
        self.assertTrue(queued_then, "no build was waiting when the stop was asked")
        # The request shows its tasks' places in line too.
        tasks = self.api.get("/v1/requests/" + self.request_id)["request"]["tasks"]
        self.assertTrue([t for t in tasks if t["queue_position"]], tasks)

        # Watch the line until every build left it. Each round reads the tasks one by one,
        # in the order of ids and in the reverse order by turns.
        last = {}  # task id -> last position seen
        ahead = set()  # (a, b): a was seen ahead of b in line
        order = list(ids)
        while True:
            order.reverse()
            polled = self.poll(order)
            queued = [t for t in polled if t["state"] == "QUEUED" and t["queue_position"]]
            for t in queued:
                self.assertEqual(t["class"], "heavy", t)
                self.assertGreaterEqual(t["queue_position"], 1, t)
                # The line only moves forward.
                self.assertLessEqual(t["queue_position"], last.get(t["id"], BURST), t)
                last[t["id"]] = t["queue_position"]
            # Read in order: a smaller position read earlier is truly ahead (positions only
            # fall, so one behind it could never show a larger one later in this round).
            for i, a in enumerate(queued):
                for b in queued[i + 1:]:
                    if a["queue_position"] < b["queue_position"]:
                        ahead.add((a["id"], b["id"]))
            # First in line, first out: one behind that had left the line when it was read
            # while one ahead of it, read after it, was still in line, went before it.
            # (Read in the other order, both could have left between the two reads.)
            in_line = {t["id"]: bool(t["queue_position"]) for t in polled}
            read_at = {t["id"]: i for i, t in enumerate(polled)}
            for a, b in ahead:
                if read_at[b] < read_at[a]:
                    self.assertFalse(in_line[a] and not in_line[b],
                                     "%s left the line before %s, ahead of it" % (b, a))
            if not queued and all(t["state"] != "QUEUED" for t in polled):
                break
            time.sleep(0.05)
        self.assertTrue(ahead, "never saw two builds in line at once")

        stop = self.api.wait_task(stop["id"], 60)
        self.assertEqual(stop["state"], "SUCCEEDED", stop)
        self.assertEqual(self.api.vm(target["id"])["power_state"], "STOPPED")
        tasks = {t["id"]: t for t in self.finish(ids)}
        self.assert_throttled(list(tasks.values()))
        # The light task went first: done before any build that was waiting when asked.
        for i in queued_then:
            self.assertLess(ms(stop["finished_at"]), ms(tasks[i]["finished_at"]),
                            "stop %r ended after queued build %r" % (stop, tasks[i]))

    def test_2_taskmgr_killed_mid_burst(self):
        ids = self.burst("k")
        wait_until(lambda: any(t["queue_position"] for t in self.poll(ids)), 60,
                   "builds waiting in line")
        victim = [x for x in self.p.procs if x.service == "taskmgr" and x.alive()][0]
        victim.kill(signal.SIGKILL)
        victim.wait(10)
        self.assert_throttled(self.finish(ids))
        # No slot was left behind: a new build goes straight on, never in line.
        vm_id = self.api.request("burst", "after")["vms"][0]["id"]
        task = wait_until(lambda: self.api.vm(vm_id)["task"], 10, "the VM has a task")
        while True:
            t = self.api.task(task)
            self.assertIsNone(t["queue_position"], t)
            if t["state"] in ENDED:
                break
            time.sleep(0.05)
        self.assertEqual(t["state"], "SUCCEEDED", t)


if __name__ == "__main__":
    unittest.main()
