#!/usr/bin/env python3
# ctest: heavy
"""Abort and the recover verbs. Every libvirt command of the hosts is slowed down
(libvirt_delay_ms), so each stage that waits for an agent command lasts long enough to be
aborted in the middle: the task stops at the stage's end and undoes what it did, and nothing
is left behind (claim, host capacity, domain, disk and seed files). A day-2 stop that is
aborted leaves the VM running as it was. Who may: the VM's owner (a member of another group
is told 404); retry and force-fail are for admins and operators. A VM whose host is gone is
disposed of with ?force=true without its agent.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_abort.py
"""

import glob
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import CheckedProxy, PlatformCase, host_domains, used_equal, wait_until  # noqa: E402

DELAY_MS = 1500
PW = "abort-test-pw-1"
# The provisioning stages that each wait for one agent command, in order.
AGENT_STAGES = ("create_disk", "build_seed", "define", "power_on")


class Abort(PlatformCase):
    platform_env = {"BERTH_HEARTBEAT_MS": "500", "BERTH_HOST_REFRESH_MS": "0"}
    agent_env = {"BERTH_LIBVIRT_DELAY_MS": str(DELAY_MS)}
    agents = 2
    wait_hosts = 2

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            admin = cls.api
            for group in ("blue", "red"):
                r = admin.call("POST", "/v1/groups", {"name": group})
                assert r.status == 201, r
            cls.alice = admin.create_user("alice", PW)
            cls.bob = admin.create_user("bob", PW)
            for user, group in (("alice", "blue"), ("bob", "red")):
                r = admin.call("POST", "/v1/groups/%s/members" % group,
                               {"user": user, "role": "member"})
                assert r.status == 201, r
            cls.proxy = CheckedProxy(cls.p)
        except Exception:
            cls.p.dump_logs()
            cls.p.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "proxy", None):
            cls.proxy.close()
        super().tearDownClass()

    # -- helpers ---------------------------------------------------------------------------

    def berth(self, user, password, *args):
        """The CLI, signed in as user, through the contract-checking proxy."""
        home = tempfile.mkdtemp(dir=self.p.data_dir)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        env.update({"BERTH_URL": self.proxy.url, "XDG_CONFIG_HOME": home, "HOME": home})
        run = lambda argv, stdin=None: subprocess.run(  # noqa: E731
            [self.p.binary("berth")] + argv, input=stdin, env=env, capture_output=True,
            text=True, timeout=120)
        r = run(["login", user, "--password-stdin"], password + "\n")
        self.assertEqual(r.returncode, 0, r)
        r = run(list(args))
        self.assertEqual(self.proxy.violations, [], "berth %s" % " ".join(args))
        return r

    def request(self, name):
        r = self.alice.call("POST", "/v1/requests",
                            {"template": "small", "name": name, "group": "blue"})
        self.assertEqual(r.status, 202, r)
        req = r.json()["request"]
        return req["vms"][0]["id"], req["tasks"][0]["id"]

    def wait_stage(self, task_id, stage, timeout=60):
        def at():
            t = self.alice.task(task_id)
            self.assertNotIn(t["state"], ("SUCCEEDED", "FAILED", "ABORTED"),
                             "task ended before stage %s: %r" % (stage, t))
            return t["stage"] == stage and t
        return wait_until(at, timeout, "task %s at stage %s" % (task_id, stage))

    def files_of(self, vm_id):
        return glob.glob(os.path.join(self.p.data_dir, "services", "agent-*", "**", vm_id + "*"),
                         recursive=True)

    def assertNothingLeft(self, vm_id, before):
        """No claim, no domain on any host, no disk or seed file, capacity as before."""
        self.assertIsNone(self.p.redis_command("HGET", "berth:claim:{%s}" % vm_id, "host"))
        for host in before:
            wait_until(lambda: vm_id not in host_domains(self.api, host), 20,
                       "no domain of %s on %s" % (vm_id, host))
        self.assertEqual(self.files_of(vm_id), [])
        after = self.api.hosts()
        for host in before:
            self.assertTrue(used_equal(before[host], after[host]), (host, before[host],
                                                                      after[host]))

    def abort(self, api, task_id):
        r = api.call("POST", "/v1/tasks/%s/abort" % task_id)
        self.assertEqual(r.status, 202, r)
        self.assertEqual(r.headers.get("Location"), "/v1/tasks/" + task_id)
        return r.json()["task"]

    # -- abort a provisioning in each stage ------------------------------------------------

    def test_1_abort_provisioning_in_each_stage(self):
        for stage in ("early",) + AGENT_STAGES:
            with self.subTest(stage=stage):
                before = self.api.hosts()
                vm_id, task_id = self.request("ab-" + stage.replace("_", "-"))
                if stage != "early":  # "early": at once, in whatever stage it is then
                    self.wait_stage(task_id, stage)
                if stage == "define":  # the CLI's way
                    r = self.berth("alice", PW, "abort", task_id)
                    self.assertEqual(r.returncode, 0, r)
                    self.assertIn("ABORT", r.stdout)
                else:
                    task = self.abort(self.alice, task_id)
                    self.assertIn(task["state"], ("ABORTING", "ABORTED"), task)
                    self.assertEqual(task["aborted_by"], "alice")
                if stage == "build_seed":  # asked again while it rolls back: the same abort
                    again = self.alice.call("POST", "/v1/tasks/%s/abort" % task_id)
                    self.assertIn(again.status, (202, 409), again)
                    if again.status == 409:  # it ended meanwhile
                        self.assertEqual(again.json()["error"]["details"]["state"], "ABORTED")
                task = self.alice.wait_task(task_id, timeout=90)
                self.assertEqual(task["state"], "ABORTED", task)
                self.assertIn("aborted by alice", task["fault"])
                vm = self.alice.vm(vm_id)
                self.assertEqual(vm["state"], "ERROR", vm)
                self.assertIn("aborted by alice", vm["fault"])
                self.assertFalse(vm["host"], vm)
                if stage != "early":
                    # The stage in progress ended, then the rollback undid it.
                    steps = [(s["name"], s["state"]) for s in task["steps"]]
                    self.assertIn((stage, "ROLLED_BACK"), steps)
                    self.assertIn(("undo_host", "SUCCEEDED"), steps)
                    self.assertEqual(steps[-1], ("release_claim", "SUCCEEDED"))
                    self.assertNotIn(("wait_ready", "SUCCEEDED"), steps)
                self.assertNothingLeft(vm_id, before)
                # The group's quota has the VM back: its usage is what it was.
                self.assertEqual(self.blue_usage_vms(), self.live_blue_vms())

    def blue_usage_vms(self):
        """The VMs group blue's quota counts now."""
        usage = self.api.get("/v1/groups/blue")["group"]["usage"]
        return usage["vms"] if usage else 0

    def live_blue_vms(self):
        vms = self.api.get("/v1/vms?group=blue")["vms"]
        return len([v for v in vms if v["state"] not in ("ERROR", "DISPOSED", "REJECTED")])

    # -- abort a day-2 action --------------------------------------------------------------

    def test_2_abort_stop_restores_the_vm(self):
        vm_id, _ = self.request("stop-undo")
        vm = self.alice.wait_vm(vm_id, ("ACTIVE",), timeout=90)
        wait_until(lambda: self.alice.vm(vm_id)["power_state"] == "RUNNING", 30, "RUNNING")
        r = self.alice.call("POST", "/v1/vms/%s/actions" % vm_id, {"action": "stop"})
        self.assertEqual(r.status, 202, r)
        stop = r.json()["task"]["id"]
        self.wait_stage(stop, "shut_down")
        self.abort(self.alice, stop)
        task = self.alice.wait_task(stop, timeout=90)
        self.assertEqual(task["state"], "ABORTED", task)
        self.assertIn("aborted by alice", task["fault"])
        self.assertEqual([(s["name"], s["state"]) for s in task["steps"]][-1],
                         ("restore_power", "SUCCEEDED"))
        vm = wait_until(lambda: (lambda v: v["power_state"] == "RUNNING" and v)(
            self.alice.vm(vm_id)), 30, "VM running again")
        self.assertEqual(vm["state"], "ACTIVE")

        # A finished task is not aborted: 409 with its state.
        r = self.alice.call("POST", "/v1/tasks/%s/abort" % stop)
        self.assertEqual(r.status, 409, r)
        self.assertEqual(r.json()["error"]["details"]["state"], "ABORTED")
        # Someone in another group does not see the task at all.
        r = self.bob.call("POST", "/v1/tasks/%s/abort" % vm["task"])
        self.assertEqual(r.status, 404, r)
        # A shelve aborted while the VM shuts down: ACTIVE and running again, its claim whole.
        claim = self.p.redis_command("HGETALL", "berth:claim:{%s}" % vm_id)
        r = self.alice.call("POST", "/v1/vms/%s/actions" % vm_id, {"action": "shelve"})
        self.assertEqual(r.status, 202, r)
        shelve = r.json()["task"]["id"]
        self.wait_stage(shelve, "shut_down")
        self.abort(self.alice, shelve)
        task = self.alice.wait_task(shelve, timeout=90)
        self.assertEqual(task["state"], "ABORTED", task)
        self.assertNotIn("shrink_claim", [s["name"] for s in task["steps"]])
        vm = wait_until(lambda: (lambda v: v["power_state"] == "RUNNING" and v)(
            self.alice.vm(vm_id)), 30, "VM running again")
        self.assertEqual(vm["state"], "ACTIVE")
        self.assertEqual(self.p.redis_command("HGETALL", "berth:claim:{%s}" % vm_id), claim)

        # A disposal is not aborted (what it removed does not come back).
        dispose = self.alice.dispose(vm_id)["id"]
        r = self.alice.call("POST", "/v1/tasks/%s/abort" % dispose)
        self.assertEqual(r.status, 409, r)
        self.assertEqual(self.alice.wait_task(dispose, timeout=90)["state"], "SUCCEEDED")
        # No body fields.
        r = self.alice.call("POST", "/v1/tasks/%s/abort" % stop, {"why": "x"})
        self.assertEqual((r.status, r.json()["error"]["details"].get("field")), (400, "why"))
        # The audit trail has the abort, by alice.
        audit = self.api.get("/v1/audit?action=task.abort")["records"]
        self.assertTrue([a for a in audit if a["actor"] == "alice"
                         and a["target"] == "task:" + stop], audit)

    # -- force-fail and retry --------------------------------------------------------------

    def test_3_force_fail_then_retry(self):
        vm_id, task_id = self.request("stuck")
        self.wait_stage(task_id, "define")
        # A plain member may neither force-fail nor retry, even their own VM's task.
        for verb in ("force-fail", "retry"):
            r = self.alice.call("POST", "/v1/tasks/%s/%s" % (task_id, verb))
            self.assertEqual(r.status, 403, r)
        r = self.api.call("POST", "/v1/tasks/%s/force-fail" % task_id)
        self.assertEqual(r.status, 202, r)
        task = r.json()["task"]
        self.assertEqual((task["state"], task["aborted_by"]), ("FAILED", "admin"))
        self.assertIn("force-failed by admin", task["fault"])
        vm = self.alice.vm(vm_id)
        self.assertEqual(vm["state"], "ERROR")
        self.assertIn("force-failed by admin", vm["fault"])
        # Its old holder's writes are refused from now on: it stays FAILED.
        time.sleep(DELAY_MS * 2 / 1000.0)
        self.assertEqual(self.alice.task(task_id)["state"], "FAILED")
        r = self.api.call("POST", "/v1/tasks/%s/force-fail" % task_id)
        self.assertEqual(r.status, 409, r)

        # Retry: the provisioning runs again (it starts over from its placement) to ACTIVE.
        r = self.api.call("POST", "/v1/tasks/%s/retry" % task_id)
        self.assertEqual(r.status, 202, r)
        self.assertEqual(r.json()["task"]["state"], "RUNNING")
        task = self.alice.wait_task(task_id, timeout=90)
        self.assertEqual(task["state"], "SUCCEEDED", task)
        vm = self.alice.vm(vm_id)
        self.assertEqual((vm["state"], vm["fault"] or ""), ("ACTIVE", ""))
        r = self.api.call("POST", "/v1/tasks/%s/retry" % task_id)
        self.assertEqual(r.status, 409, r)
        for action in ("task.force_fail", "task.retry"):
            audit = self.api.get("/v1/audit?action=" + action)["records"]
            self.assertTrue([a for a in audit if a["actor"] == "admin"], audit)

    # -- a VM whose host is gone ----------------------------------------------------------

    def agent_of(self, host):
        return [x for x in self.p.procs
                if x.name == "agent-" + host.split("-")[1] and x.alive()][-1]

    def stored_host(self, host, state):
        wait_until(lambda: self.p.redis_command("HGET", "berth:host:" + host, "state") == state,
                   60, "host %s stored %s" % (host, state))

    def test_4_retry_a_disposal_its_host_missed(self):
        vm_id, _ = self.request("missed")
        host = self.alice.wait_vm(vm_id, ("ACTIVE",), timeout=90)["host"]
        agent = self.agent_of(host)
        agent.kill(signal.SIGSTOP)
        try:
            self.stored_host(host, "DOWN")
            dispose = self.alice.dispose(vm_id)["id"]
            task = self.alice.wait_task(dispose, timeout=90)
            self.assertEqual(task["state"], "FAILED", task)
            self.assertEqual(self.alice.vm(vm_id)["state"], "ERROR")
        finally:
            agent.kill(signal.SIGCONT)
            agent.stopping = False  # it runs on
        self.stored_host(host, "UP")
        r = self.alice.call("POST", "/v1/tasks/%s/retry" % dispose)
        self.assertEqual(r.status, 403, r)
        r = self.api.call("POST", "/v1/tasks/%s/retry" % dispose)
        self.assertEqual(r.status, 202, r)
        self.assertEqual((r.json()["task"]["state"], r.json()["task"]["stage"]),
                         ("RUNNING", "destroy"))
        task = self.alice.wait_task(dispose, timeout=90)
        self.assertEqual(task["state"], "SUCCEEDED", task)
        self.assertEqual([(s["name"], s["state"]) for s in task["steps"]][-3:],
                         [("destroy", "FAILED"), ("destroy", "SUCCEEDED"),
                          ("release_claim", "SUCCEEDED")])
        self.assertEqual(self.alice.vm(vm_id)["state"], "DISPOSED")
        self.assertIsNone(self.p.redis_command("HGET", "berth:claim:{%s}" % vm_id, "host"))
        wait_until(lambda: vm_id not in host_domains(self.api, host), 20, "domain removed")

    def test_5_force_dispose_without_its_host(self):
        vm_id, _ = self.request("orphaned")
        vm = self.alice.wait_vm(vm_id, ("ACTIVE",), timeout=90)
        host = vm["host"]
        # Its host is up: a forced disposal is refused (dispose of it normally).
        r = self.api.call("DELETE", "/v1/vms/%s?force=true" % vm_id)
        self.assertEqual(r.status, 409, r)
        self.assertIsNotNone(self.p.redis_command("HGET", "berth:claim:{%s}" % vm_id, "host"))
        agent = self.agent_of(host)
        agent.kill(signal.SIGTERM)
        agent.wait(30)
        # DOWN as the taskmgr judged it (the stored state), not only as the API shows it.
        self.stored_host(host, "DOWN")
        # Its owner may not; an admin may.
        r = self.alice.call("DELETE", "/v1/vms/%s?force=true" % vm_id)
        self.assertEqual(r.status, 403, r)
        r = self.berth(self.p.admin_user, self.p.admin_password, "dispose", vm_id, "--force")
        self.assertEqual(r.returncode, 0, r)
        task = self.api.wait_task(self.api.vm(vm_id)["task"])
        self.assertEqual(task["state"], "SUCCEEDED", task)
        self.assertEqual([s["name"] for s in task["steps"]], ["release_claim"])
        self.assertEqual(self.api.vm(vm_id)["state"], "DISPOSED")
        self.assertIsNone(self.p.redis_command("HGET", "berth:claim:{%s}" % vm_id, "host"))
        self.assertEqual(self.blue_usage_vms(), self.live_blue_vms())
        audit = self.api.get("/v1/audit?action=vm.force_dispose")["records"]
        self.assertTrue([a for a in audit if a["actor"] == "admin"], audit)


if __name__ == "__main__":
    unittest.main(verbosity=2)
