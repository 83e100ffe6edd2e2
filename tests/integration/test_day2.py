#!/usr/bin/env python3
"""Day-2 actions (issue 10, test 3), through the REST API with every service and two simulated
hosts (libvirt test driver):

- each power action (start, stop graceful and forced, reboot, suspend, resume) changes the
  VM's power state and the domain on its host, as a task with stages and a Location;
- an action that makes no sense answers 409 with the VM's state, and one with nothing to do
  (stopping a stopped VM) says so; a bad body answers 400 naming the field;
- shelve powers the VM off, keeps its domain and disk on its host and gives the host's vCPUs
  and RAM back; unshelve with room lands on its own host; with its host full and no room
  anywhere it stays SHELVED; with room on the other host only, it lands there: the disk is
  made again there and the old host's domain removed; when building it there fails, what it
  built there is undone and the VM ends ERROR with its disk still on its old host;
- the CLI: `berth stop|start|shelve|unshelve VM` follow the task to its end, --no-wait does
  not, and a refusal exits 1 with the server's message;
- quota: a shelved VM keeps its count and disk but not its vCPUs and RAM, which another VM can
  then use; unshelving checks the quota again (403 QUOTA_EXCEEDED);
- billing: a stopped ACTIVE VM pays for its disk only; the meter's totals match what the
  recorded transitions say (tests/integration/billing.py), split into compute and disk-only
  hours in GET /v1/usage.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_day2.py
"""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import CheckedProxy, PlatformCase, wait_until  # noqa: E402
from billing import billed_ms, transitions, vm_events  # noqa: E402

PW = "day2-test-pw-1"
# Two hosts of 4 GB: a 2 GB VM fits twice on each, a 4 GB one once.
HOST = {"BERTH_HOST_VCPUS": "16", "BERTH_HOST_RAM_MB": "4096", "BERTH_HOST_DISK_GB": "1000"}


# The power state each action leaves the VM in.
POWER_AFTER = {"start": "RUNNING", "stop": "STOPPED", "reboot": "RUNNING", "suspend": "SUSPENDED",
               "resume": "RUNNING", "shelve": "STOPPED", "unshelve": "RUNNING"}


class Day2(PlatformCase):
    agents = 2
    wait_hosts = 2
    agent_env = HOST

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        for name, ram in (("half", 2048), ("full", 4096), ("tiny", 512)):
            cls.api.create_template(name=name, vcpus=1, ram_mb=ram, disk_gb=10, os="debian",
                                    image="debian-12", lease_days=1, requires_approval=False)

    # -- helpers ---------------------------------------------------------------------------

    def build(self, template, name, api=None, body=None):
        api = api or self.api
        req = dict(body or {}, template=template, name=name)
        r = api.call("POST", "/v1/requests", req)
        self.assertEqual(r.status, 202, r)
        return api.wait_vm(r.json()["request"]["vms"][0]["id"], ("ACTIVE",))

    def act(self, vm, action, api=None, **extra):
        return (api or self.api).call("POST", "/v1/vms/%s/actions" % vm["id"],
                                      dict(extra, action=action))

    def run_action(self, vm, action, api=None, want="SUCCEEDED", **extra):
        """The action's task, finished (want: its end state); the VM after it."""
        api = api or self.api
        r = self.act(vm, action, api, **extra)
        self.assertEqual(r.status, 202, r)
        task = r.json()["task"]
        self.assertEqual(r.headers["Location"], "/v1/tasks/" + task["id"])
        self.assertEqual(task["kind"], action.upper())
        self.assertEqual(task["state"], "QUEUED")
        task = api.wait_task(task["id"])
        self.assertEqual(task["state"], want, task)
        if want == "SUCCEEDED":
            self.assertEqual(task["percent"], 100)
            self.assertTrue(all(s["state"] == "SUCCEEDED" for s in task["steps"]), task)
            # The task's result sets the power state at once; a heartbeat with a snapshot
            # taken before the command may still be on its way and is corrected by the next
            # one (within one heartbeat): settle on the host's fresh report first.
            self.settle(vm, POWER_AFTER[action])
        return task, api.vm(vm["id"])

    def refused(self, r, state, power, text):
        self.assertEqual(r.status, 409, r)
        err = r.json()["error"]
        self.assertEqual(err["code"], "CONFLICT")
        self.assertEqual((err["details"]["state"], err["details"]["power_state"]), (state, power),
                         err)
        self.assertIn(text, err["message"])

    def domain_power(self, host, vm_id):
        """The power state host's agent reports for the VM's domain (None: no domain)."""
        host = self.api.get("/v1/hosts/" + host)["host"]
        return {d["name"]: d["power_state"] for d in host["domains"]}.get(vm_id)

    def wait_domain(self, host, vm_id, power):
        wait_until(lambda: self.domain_power(host, vm_id) == power, 10,
                   "host %s reports %s %s" % (host, vm_id, power))

    def settle(self, vm, power):
        """Wait until the VM and its host's latest report agree on power (run_action)."""
        wait_until(lambda: self.api.vm(vm["id"])["power_state"] == power and
                   self.domain_power(self.api.vm(vm["id"])["host"], vm["id"]) == power, 10,
                   "%s settled %s" % (vm["id"], power))

    def used(self, host):
        u = self.api.hosts()[host]["used"]
        return {k: u[k] for k in ("vcpus", "ram_mb", "disk_gb")}

    def dispose(self, *vms):
        for vm in vms:
            self.api.dispose(vm["id"])
        for vm in vms:
            self.api.wait_vm(vm["id"], ("DISPOSED",))

    # -- power actions ---------------------------------------------------------------------

    def test_power_actions(self):
        vm = self.build("half", "power")
        host = vm["host"]
        self.assertEqual(vm["power_state"], "RUNNING")
        self.wait_domain(host, vm["id"], "RUNNING")

        # Nothing to do, or not in this state: 409 with the state.
        self.refused(self.act(vm, "start"), "ACTIVE", "RUNNING", "already RUNNING")
        self.refused(self.act(vm, "resume"), "ACTIVE", "RUNNING", "already RUNNING")
        self.refused(self.act(vm, "unshelve"), "ACTIVE", "RUNNING", "needs a SHELVED VM")

        # Graceful stop: the test driver's guest shuts down at once.
        task, vm = self.run_action(vm, "stop", timeout_s=5)
        self.assertEqual(vm["power_state"], "STOPPED")
        self.assertEqual([s["name"] for s in task["steps"]], ["shut_down"])
        self.assertIn("SHUTDOWN on host %s: STOPPED (shut down)" % host,
                      task["steps"][0]["result"])
        self.wait_domain(host, vm["id"], "STOPPED")
        self.assertEqual(vm["state"], "ACTIVE")
        self.assertEqual(vm["task"], task["id"])
        self.refused(self.act(vm, "stop"), "ACTIVE", "STOPPED", "already STOPPED")
        self.refused(self.act(vm, "suspend"), "ACTIVE", "STOPPED", "applies to a VM that is")
        self.refused(self.act(vm, "reboot"), "ACTIVE", "STOPPED", "applies to a VM that is")

        task, vm = self.run_action(vm, "start")
        self.assertEqual(vm["power_state"], "RUNNING")
        self.assertEqual([s["name"] for s in task["steps"]], ["power_on", "wait_ready"])
        self.wait_domain(host, vm["id"], "RUNNING")

        task, vm = self.run_action(vm, "reboot")
        self.assertEqual(vm["power_state"], "RUNNING")
        self.assertIn("REBOOT on host", task["steps"][0]["result"])
        task, vm = self.run_action(vm, "reboot", force=True)
        self.assertIn("RESET on host", task["steps"][0]["result"])
        self.assertEqual(vm["power_state"], "RUNNING")

        _, vm = self.run_action(vm, "suspend")
        self.assertEqual(vm["power_state"], "SUSPENDED")
        self.wait_domain(host, vm["id"], "SUSPENDED")
        self.refused(self.act(vm, "suspend"), "ACTIVE", "SUSPENDED", "already SUSPENDED")
        self.refused(self.act(vm, "start"), "ACTIVE", "SUSPENDED", "resume a suspended VM")
        _, vm = self.run_action(vm, "resume")
        self.assertEqual(vm["power_state"], "RUNNING")
        self.wait_domain(host, vm["id"], "RUNNING")

        # Forced stop: off at once, no shutdown asked.
        task, vm = self.run_action(vm, "stop", force=True)
        self.assertIn("POWER_OFF on host %s: STOPPED (powered off)" % host,
                      task["steps"][0]["result"])
        self.assertEqual(vm["power_state"], "STOPPED")
        self.wait_domain(host, vm["id"], "STOPPED")

        # Bad bodies name the field.
        for body, field in (({"action": "fly"}, "action"), ({}, "action"),
                            ({"action": "stop", "timeout_s": 99999}, "timeout_s"),
                            ({"action": "start", "timeout_s": 5}, "timeout_s"),
                            ({"action": "suspend", "force": True}, "force"),
                            ({"action": "stop", "force": "yes"}, "force"),
                            ({"action": "stop", "when": "now"}, "when")):
            r = self.api.call("POST", "/v1/vms/%s/actions" % vm["id"], body)
            self.assertEqual(r.status, 400, (body, r))
            self.assertEqual(r.json()["error"]["details"].get("field"), field, (body, r))

        # Someone else's VM: not found, exactly like one that does not exist.
        other = self.api.create_user("stranger", PW)
        r = self.act(vm, "start", other)
        self.assertEqual(r.status, 404, r)
        r = self.api.call("POST", "/v1/vms/00000000-0000-4000-8000-000000000000/actions",
                          {"action": "start"})
        self.assertEqual(r.status, 404, r)
        self.dispose(vm)

    # -- shelve and unshelve ---------------------------------------------------------------

    def test_stopped_vm_bills_disk_only(self):
        vm = self.build("tiny", "billed")
        self.settle(vm, "RUNNING")

        def billed_over(field, ms):
            """The meter's running total of field (hours) for the VM is past ms."""
            mine = [u for u in self.api.get("/v1/usage")["usage"] if u["vm"] == vm["id"]]
            return bool(mine) and mine[0][field] * 3.6e6 > ms
        # Each state lasts until the meter has billed over a second of it.
        wait_until(lambda: billed_over("active_hours", 1100), 20, "a second billed running")
        self.run_action(vm, "stop", force=True)
        wait_until(lambda: billed_over("disk_only_hours", 1100), 20, "a second billed stopped")
        self.run_action(vm, "start")
        self.dispose(vm)
        events = vm_events(self.p, vm["id"])
        compute_ms, disk_ms = billed_ms(events, 0)
        trail = transitions(events)
        # The stop is on record and long enough that billing it as running could not hide in
        # the tolerance below (1e-6 h is 3.6 ms; the stop lasted over a second).
        self.assertGreater(disk_ms - compute_ms, 1000, trail)
        self.assertGreater(compute_ms, 1000, trail)

        def record():
            mine = [u for u in self.api.get("/v1/usage")["usage"] if u["vm"] == vm["id"]]
            return mine[0] if mine and abs(mine[0]["disk_gb_hours"] - 10 * disk_ms / 3.6e6) \
                < 1e-6 else None
        rec = wait_until(record, 10, "usage of the disposed VM")
        compute_h, disk_h = compute_ms / 3.6e6, disk_ms / 3.6e6
        self.assertAlmostEqual(rec["vcpu_hours"], 1 * compute_h, delta=1e-6, msg=trail)
        self.assertAlmostEqual(rec["ram_gb_hours"], 0.5 * compute_h, delta=1e-6, msg=trail)
        self.assertAlmostEqual(rec["active_hours"], compute_h, delta=1e-6, msg=trail)
        self.assertAlmostEqual(rec["disk_only_hours"], disk_h - compute_h, delta=1e-6, msg=trail)

    def test_shelve_frees_the_host_and_unshelve_lands_elsewhere_when_full(self):
        hosts = sorted(self.api.hosts())
        vm = self.build("half", "shelf")
        home = vm["host"]
        away = [h for h in hosts if h != home][0]
        before = self.used(home)

        task, vm = self.run_action(vm, "shelve", timeout_s=5)
        self.assertEqual([s["name"] for s in task["steps"]], ["shut_down", "shrink_claim"])
        self.assertEqual((vm["state"], vm["power_state"], vm["host"]),
                         ("SHELVED", "STOPPED", home))
        # The host got its vCPUs and RAM back; the disk is kept there, so is the domain.
        after = self.used(home)
        self.assertEqual(after["vcpus"], before["vcpus"] - 1)
        self.assertEqual(after["ram_mb"], before["ram_mb"] - 2048)
        self.assertEqual(after["disk_gb"], before["disk_gb"])
        self.wait_domain(home, vm["id"], "STOPPED")
        for action in ("start", "stop", "shelve", "reboot"):
            self.refused(self.act(vm, action), "SHELVED", "STOPPED", "needs an ACTIVE VM")

        # Unshelve with room: back on its own host, nothing rebuilt.
        task, vm = self.run_action(vm, "unshelve")
        self.assertEqual((vm["state"], vm["power_state"], vm["host"]),
                         ("ACTIVE", "RUNNING", home))
        steps = {s["name"]: s["result"] for s in task["steps"]}
        self.assertIn("not needed", steps["create_disk"])
        self.assertIn("not needed", steps["remove_old"])
        self.assertEqual(self.used(home), before)
        self.wait_domain(home, vm["id"], "RUNNING")

        # Shelve again, then fill every host: the unshelve finds no room and stays SHELVED.
        _, vm = self.run_action(vm, "shelve", force=True)
        self.assertEqual(vm["state"], "SHELVED")
        fills = [self.build("full", "fill-%d" % i) for i in range(2)]
        self.assertEqual({f["host"] for f in fills}, set(hosts))
        task, vm = self.run_action(vm, "unshelve", want="FAILED")
        self.assertIn("no valid host", task["fault"].lower())
        self.assertEqual((vm["state"], vm["host"]), ("SHELVED", home))
        self.wait_domain(home, vm["id"], "STOPPED")

        # Room on the other host only: it lands there, the old domain and disk go.
        self.dispose(*[f for f in fills if f["host"] == away])
        home_used = self.used(home)
        task, vm = self.run_action(vm, "unshelve")
        self.assertEqual((vm["state"], vm["power_state"], vm["host"]),
                         ("ACTIVE", "RUNNING", away))
        steps = {s["name"]: s["result"] for s in task["steps"]}
        self.assertIn("made again there", steps["schedule"])
        self.assertIn("CREATE_DISK on host " + away, steps["create_disk"])
        self.assertIn("DESTROY on host " + home, steps["remove_old"])
        self.wait_domain(away, vm["id"], "RUNNING")
        self.wait_domain(home, vm["id"], None)
        # The old host no longer counts the disk; the new one counts it all.
        self.assertEqual(self.used(home)["disk_gb"], home_used["disk_gb"] - 10)
        self.assertEqual(self.used(away), {"vcpus": 1, "ram_mb": 2048, "disk_gb": 10})
        self.dispose(vm, *[f for f in fills if f["host"] == home])
        for h in hosts:
            self.assertEqual(self.used(h), {"vcpus": 0, "ram_mb": 0, "disk_gb": 0})

    def test_disposing_of_a_shelved_vm(self):
        vm = self.build("tiny", "gone")
        _, vm = self.run_action(vm, "shelve")
        self.dispose(vm)
        self.wait_domain(vm["host"], vm["id"], None)
        self.assertEqual(self.used(vm["host"]), {"vcpus": 0, "ram_mb": 0, "disk_gb": 0})

    # -- the CLI -------------------------------------------------------------------------

    def berth(self, home, *args, stdin=None, rc=0):
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        env.update({"BERTH_URL": self.proxy.url, "XDG_CONFIG_HOME": home, "HOME": home})
        r = subprocess.run([self.p.binary("berth")] + list(args), input=stdin, env=env,
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(self.proxy.violations, [], "berth %s" % " ".join(args))
        self.assertEqual(r.returncode, rc, "berth %s:\n%s\n%s" % (" ".join(args), r.stdout,
                                                                   r.stderr))
        return r

    def test_cli(self):
        self.proxy = CheckedProxy(self.p)
        self.addCleanup(self.proxy.close)
        home = tempfile.mkdtemp(prefix="berth-cli-")
        self.addCleanup(shutil.rmtree, home, ignore_errors=True)
        self.berth(home, "login", "--user", self.p.admin_user, "--password-stdin",
                   stdin=self.p.admin_password + "\n")
        vm = self.build("tiny", "cli")
        out = self.berth(home, "stop", vm["id"], "--timeout", "5").stdout
        self.assertIn("stop     task", out)
        self.assertIn("cli (%s): ACTIVE, " % vm["id"], out)
        self.settle(vm, "STOPPED")
        r = self.berth(home, "stop", vm["id"], rc=1)
        self.assertIn("already STOPPED", r.stderr)
        self.assertIn("409", r.stderr)
        out = self.berth(home, "start", vm["id"], "--no-wait").stdout
        self.assertIn("start %s: task" % vm["id"], out)
        task_id = wait_until(lambda: self.api.vm(vm["id"])["task"], 5, "task")
        self.api.wait_task(task_id)
        self.settle(vm, "RUNNING")
        out = self.berth(home, "shelve", vm["id"], "--force").stdout
        self.assertIn("SHELVED, ", out)
        self.settle(vm, "STOPPED")
        out = self.berth(home, "unshelve", vm["id"]).stdout
        self.assertIn("ACTIVE, ", out)
        self.settle(vm, "RUNNING")
        r = self.berth(home, "reboot", vm["id"], "--timeout", "x", rc=2)
        self.assertIn("usage: berth reboot VM", r.stderr)
        self.dispose(vm)

    # -- quota -----------------------------------------------------------------------------

    def test_quota_while_shelved(self):
        r = self.api.call("POST", "/v1/groups", {"name": "shelvers", "quota": {"vcpus": 2}})
        self.assertEqual(r.status, 201, r)
        group = r.json()["group"]
        user = self.api.create_user("shelver", PW)
        r = self.api.call("POST", "/v1/groups/%s/members" % group["id"],
                          {"user": "shelver", "role": "member"})
        self.assertEqual(r.status, 201, r)

        def usage():
            return self.api.get("/v1/groups/" + group["id"])["group"]["usage"]

        body = {"group": "shelvers"}
        a = self.build("tiny", "qa", user, body)
        b = self.build("tiny", "qb", user, body)
        self.assertEqual(usage(), {"vms": 2, "vcpus": 2, "ram_mb": 1024, "disk_gb": 20})
        _, a = self.run_action(a, "shelve", user)
        # Shelved: the count and the disk are held, vCPUs and RAM are not.
        self.assertEqual(usage(), {"vms": 2, "vcpus": 1, "ram_mb": 512, "disk_gb": 20})
        c = self.build("tiny", "qc", user, body)
        self.assertEqual(usage()["vcpus"], 2)
        r = self.act(a, "unshelve", user)
        self.assertEqual(r.status, 403, r)
        err = r.json()["error"]
        self.assertEqual(err["code"], "QUOTA_EXCEEDED")
        self.assertEqual((err["details"]["resource"], err["details"]["quota"],
                          err["details"]["used"], err["details"]["requested"]),
                         ("vcpus", "2", "2", "1"))
        self.assertEqual(self.api.vm(a["id"])["state"], "SHELVED")
        self.dispose(c)
        self.assertEqual(usage(), {"vms": 2, "vcpus": 1, "ram_mb": 512, "disk_gb": 20})
        _, a = self.run_action(a, "unshelve", user)
        self.assertEqual(a["state"], "ACTIVE")
        self.assertEqual(usage(), {"vms": 2, "vcpus": 2, "ram_mb": 1024, "disk_gb": 20})
        self.dispose(a, b)
        self.assertEqual(usage(), {"vms": 0, "vcpus": 0, "ram_mb": 0, "disk_gb": 0})


class Day2MoveFails(PlatformCase):
    """An unshelve that fails on the other host (its agent builds nothing over 1024 MB) undoes
    what it did there and ends ERROR, its disk still on the host it was shelved on."""

    agents = 1
    wait_hosts = 1
    agent_env = HOST

    def test_failed_move_is_undone(self):
        api = self.api
        for name, ram in (("half", 2048), ("full", 4096)):
            api.create_template(name=name, vcpus=1, ram_mb=ram, disk_gb=10, os="debian",
                                image="debian-12", lease_days=1, requires_approval=False)
        vm = api.wait_vm(api.request("half", "mover")["vms"][0]["id"], ("ACTIVE",))
        r = api.call("POST", "/v1/vms/%s/actions" % vm["id"], {"action": "shelve"})
        self.assertEqual(r.status, 202, r)
        api.wait_task(r.json()["task"]["id"])
        fill = api.wait_vm(api.request("full", "filler")["vms"][0]["id"], ("ACTIVE",))
        self.assertEqual(fill["host"], "host-1")
        self.p.start_agent(2, env=dict(HOST, BERTH_VM_MAX_RAM_MB="1024"))
        wait_until(lambda: len(api.hosts()) == 2, 20, "host-2 reported")

        r = api.call("POST", "/v1/vms/%s/actions" % vm["id"], {"action": "unshelve"})
        self.assertEqual(r.status, 202, r)
        task = api.wait_task(r.json()["task"]["id"])
        self.assertEqual(task["state"], "FAILED", task)
        self.assertIn("define failed on host host-2", task["fault"])
        self.assertIn("ram_mb 2048 is outside 1..1024", task["fault"])
        names = [s["name"] for s in task["steps"]]
        self.assertEqual(names[-2:], ["undo_new_host", "release_claim"], task)
        vm = api.vm(vm["id"])
        self.assertEqual((vm["state"], vm["host"]), ("ERROR", "host-1"), vm)
        self.assertIn("define failed on host host-2", vm["fault"])
        # Nothing left on host-2; the disk and domain are still on host-1.
        used = api.hosts()["host-2"]["used"]
        self.assertEqual((used["vcpus"], used["ram_mb"], used["disk_gb"]), (0, 0, 0))
        wait_until(lambda: vm["id"] not in {d["name"] for d in
                                            api.get("/v1/hosts/host-2")["host"]["domains"]},
                   10, "no domain on host-2")
        domains = api.get("/v1/hosts/host-1")["host"]["domains"]
        self.assertIn(vm["id"], {d["name"] for d in domains})
        api.dispose(vm["id"])
        api.wait_vm(vm["id"], ("DISPOSED",))
        wait_until(lambda: vm["id"] not in {d["name"] for d in
                                            api.get("/v1/hosts/host-1")["host"]["domains"]},
                   10, "no domain on host-1")


if __name__ == "__main__":
    unittest.main(verbosity=2)
