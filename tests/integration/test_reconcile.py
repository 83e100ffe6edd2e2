#!/usr/bin/env python3
# ctest: heavy
"""Reconciliation (issue 10, test 6): a host whose agent stops beating goes DOWN once (a stored
transition with its event, with two taskmgr instances racing to make it) and its VMs' power
UNKNOWN; it comes back and they are RUNNING again; an agent restarted with an empty simulated
hypervisor makes its VMs ERROR with a fault and gives their capacity back; a domain no VM of
Berth is listed as an orphan and left alone; maintenance keeps new VMs off a host; a build on a
host that dies fails over to another host at once instead of waiting for its stage timeout.

Heartbeats every HEARTBEAT_MS, so an agent's ttl (three beats) runs out in under a second.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_reconcile.py
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import Api, CheckedProxy, PlatformCase, host_domains, wait_until  # noqa: E402
from billing import billed_ms, transitions, vm_events  # noqa: E402

HEARTBEAT_MS = 300
DOWN_WITHIN_S = 10       # generous: the ttl is 0.9 s and taskmgr checks every 0.5 s
FAILOVER_WITHIN_S = 20   # the stage timeout it must not wait for is 60 s
AGENT_DELAY_MS = 60000   # every libvirt command of the dying host takes this long

ORPHAN_NODE = """<node>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>4</cores><threads>1</threads>
       <active>4</active><mhz>2000</mhz><model>x86_64</model></cpu>
  <memory>8388608</memory>
  <domain type='test'>
    <name>{name}</name>
    <uuid>{name}</uuid>
    <memory>262144</memory>
    <vcpu>1</vcpu>
    <os><type>hvm</type></os>
  </domain>
</node>
"""


def events(p, kind):
    """Every berth:events entry of type kind, as dicts, oldest first."""
    out = []
    for _id, fields in p.redis_command("XRANGE", "berth:events", "-", "+"):
        e = dict(zip(fields[0::2], fields[1::2]))
        if e.get("type") == kind:
            out.append(e)
    return out


def stored(p, vm_id, field):
    return p.redis_command("HGET", "berth:vm:{%s}" % vm_id, field)


class Reconcile(PlatformCase):
    # The meter trims berth:events behind its consumer group: not during the test, which
    # reads the events back.
    platform_env = {"BERTH_HEARTBEAT_MS": str(HEARTBEAT_MS), "BERTH_HOST_REFRESH_MS": "0",
                    "BERTH_EVENTS_TRIM_EVERY_MS": "86400000"}
    agents = 3
    wait_hosts = 3

    @classmethod
    def setUpClass(cls):
        # Two taskmgr instances: each checks for hosts past their ttl; one marks each DOWN.
        cls.p = None
        from berth_test import Platform
        cls.p = Platform(env=cls.platform_env)
        try:
            cls.p.start_all(agents=cls.agents, instances={"taskmgr": 2})
            cls.api = Api(cls.p)
            wait_until(lambda: len(cls.api.hosts()) == 3, 20, "3 hosts reported")
            wait_until(lambda: all(h["state"] == "UP" for h in cls.api.hosts().values()), 20,
                       "3 hosts UP")
        except Exception:
            cls.p.dump_logs()
            cls.p.stop()
            raise

    def agent(self, host):
        """The running agent process of host-N."""
        name = "agent-" + host.split("-")[1]
        return [x for x in self.p.procs if x.name == name and x.alive()][-1]

    def host_state(self, host, state):
        return self.api.hosts().get(host, {}).get("state") == state

    def test_1_down_back_restart(self):
        api, p = self.api, self.p
        vm = api.wait_vm(api.request("small", "down-and-back")["vms"][0]["id"], ("ACTIVE",))
        host = vm["host"]
        wait_until(lambda: stored(p, vm["id"], "power_state") == "RUNNING", DOWN_WITHIN_S,
                   "VM power RUNNING")
        # A build is no stop behind Berth's back: no alert, whatever order the start's result
        # and the heartbeats carrying older snapshots arrived in.
        self.assertEqual([e for e in events(p, "vm.power")
                          if e.get("vm") == vm["id"] and e.get("alert") == "1"], [])
        agent = self.agent(host)
        # The agent hears libvirt's domain lifecycle events (the test driver emits them): a
        # domain that changes behind Berth's back refreshes its inventory at once.
        with open(agent.log_path) as f:
            self.assertIn("watching libvirt domain events", f.read())

        # SIGSTOP: no heartbeat; the host goes DOWN as a stored transition, its VM UNKNOWN.
        agent.kill(signal.SIGSTOP)
        try:
            wait_until(lambda: p.redis_command("HGET", "berth:host:" + host, "state") == "DOWN",
                       DOWN_WITHIN_S, "host %s stored DOWN" % host)
            wait_until(lambda: stored(p, vm["id"], "power_state") == "UNKNOWN", DOWN_WITHIN_S,
                       "VM power stored UNKNOWN")
            self.assertTrue(self.host_state(host, "DOWN"))
            seen = api.vm(vm["id"])
            self.assertEqual((seen["state"], seen["power_state"]), ("ACTIVE", "UNKNOWN"))
            # Still DOWN a moment later, and made DOWN exactly once by the two taskmgrs.
            time.sleep(1.0)  # two more checks of each taskmgr: none may write DOWN again
            downs = [e for e in events(p, "host.state")
                     if e.get("host") == host and e.get("state") == "DOWN"]
            self.assertEqual(len(downs), 1, downs)
            self.assertEqual(downs[0]["transition"], "down")
        finally:
            agent.kill(signal.SIGCONT)

        # Back: UP again, reconciled; the VM it still runs is RUNNING again.
        wait_until(lambda: self.host_state(host, "UP"), DOWN_WITHIN_S, "host %s UP" % host)
        wait_until(lambda: stored(p, vm["id"], "power_state") == "RUNNING", DOWN_WITHIN_S,
                   "VM power RUNNING again")
        back = [e for e in events(p, "host.reconciled") if e.get("host") == host]
        self.assertEqual(len(back), 1, back)
        self.assertEqual((back[0]["present"], back[0]["lost"]), ("1", "0"))
        self.assertEqual(api.vm(vm["id"])["state"], "ACTIVE")

        # Restarted with an empty simulated hypervisor: the VM is lost with its host (ERROR
        # with a fault) and its claim given back.
        before = api.hosts()[host]["used"]
        flavor = vm["flavor"]
        p.restart(agent)
        lost = wait_until(lambda: (lambda v: v["state"] == "ERROR" and v)(api.vm(vm["id"])), 30,
                          "the lost VM in ERROR")
        self.assertIn("domain was missing when host %s came back" % host, lost["fault"])
        self.assertEqual(lost["power_state"], "NOSTATE")
        want = {k: before[k] - flavor[k] for k in ("vcpus", "ram_mb", "disk_gb")}
        wait_until(lambda: api.hosts()[host]["used"] == want, 10, "the lost VM's claim released")
        self.assertTrue(self.host_state(host, "UP"))
        alerts = [e for e in events(p, "vm.power")
                  if e.get("vm") == vm["id"] and e.get("alert") == "1"]
        self.assertTrue(alerts, "no power alert for the lost VM")
        # An ERROR VM is disposed of as usual; nothing left to release.
        task = api.wait_task(api.dispose(vm["id"])["id"])
        self.assertEqual(task["state"], "SUCCEEDED", task)
        self.assertEqual(api.hosts()[host]["used"], want)

        # Billing: the time its host was DOWN (power UNKNOWN) is billed as the running it was
        # last known to do, never as off; compute ends when it is lost (ERROR).
        trail_events = vm_events(p, vm["id"])
        trail = transitions(trail_events)
        unknown = [t for k, s, t in trail if k == "vm.power" and s == "UNKNOWN"]
        self.assertTrue(unknown, trail)
        back = [t for k, s, t in trail if k == "vm.power" and s == "RUNNING" and t > unknown[0]]
        self.assertGreater(back[0] - unknown[0], 100, trail)  # far past the tolerance below
        compute_ms, disk_ms = billed_ms(trail_events, 0)
        compute_h = compute_ms / 3.6e6

        def record():
            mine = [u for u in api.get("/v1/usage")["usage"] if u["vm"] == vm["id"]]
            return mine[0] if mine and abs(mine[0]["active_hours"] - compute_h) < 1e-6 else None
        rec = wait_until(record, 10, "the lost VM's usage: %r" % (trail,))
        self.assertAlmostEqual(rec["vcpu_hours"], flavor["vcpus"] * compute_h, delta=1e-6)
        self.assertAlmostEqual(rec["disk_only_hours"], (disk_ms - compute_ms) / 3.6e6,
                               delta=1e-6)

    def test_2_orphans(self):
        api, p = self.api, self.p
        name = str(uuid.uuid4())
        type(self).orphan = name
        node = os.path.join(p.data_dir, "orphan-node.xml")
        with open(node, "w") as f:
            f.write(ORPHAN_NODE.format(name=name))
        # host-4's hypervisor has a domain Berth never made.
        p.start_agent(4, env={"BERTH_LIBVIRT_URI": "test://" + node})
        wait_until(lambda: name in api.hosts().get("host-4", {}).get("orphans", []), 20,
                   "orphan %s listed on host-4" % name)
        # Kept out of placement for the rest of the story (its test driver is per connection).
        r = api.call("POST", "/v1/hosts/host-4/maintenance", {"enabled": True})
        self.assertEqual(r.status, 200, r)
        detail = api.get("/v1/hosts/host-4")["host"]
        self.assertEqual(detail["orphans"], [name])
        self.assertIn(name, {d["name"] for d in detail["domains"]})
        added = [e for e in events(p, "host.orphans") if e.get("host") == "host-4"]
        self.assertEqual(len(added), 1, added)
        self.assertIn(name, added[0]["added"])
        # Listed, never destroyed: still reported a few heartbeats later.
        time.sleep(3 * HEARTBEAT_MS / 1000)
        self.assertIn(name, {d["name"] for d in api.get("/v1/hosts/host-4")["host"]["domains"]})

    def test_3_maintenance(self):
        api, p = self.api, self.p
        running = api.wait_vm(api.request("small", "stays")["vms"][0]["id"], ("ACTIVE",))
        user = api.create_user("maint-user", "password-123")
        operator = api.create_user("maint-op", "password-123", role="operator")
        r = user.call("POST", "/v1/hosts/host-1/maintenance", {"enabled": True})
        self.assertEqual(r.status, 403, r)
        r = operator.call("POST", "/v1/hosts/host-1/maintenance", {"enabled": "yes"})
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json()["error"]["details"]["field"], "enabled")
        r = operator.call("POST", "/v1/hosts/nowhere/maintenance", {"enabled": True})
        self.assertEqual(r.status, 404, r)
        for host in ("host-1", "host-2", "host-3"):
            r = operator.call("POST", "/v1/hosts/%s/maintenance" % host, {"enabled": True})
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["host"]["state"], "DISABLED")
            self.assertTrue(r.json()["host"]["maintenance"])
        # Again: no change, same answer.
        r = operator.call("POST", "/v1/hosts/host-1/maintenance", {"enabled": True})
        self.assertEqual((r.status, r.json()["host"]["state"]), (200, "DISABLED"))
        # Existing VMs untouched; no new placement anywhere, and the answer counts why.
        still = api.vm(running["id"])
        self.assertEqual((still["state"], still["power_state"]), ("ACTIVE", "RUNNING"))
        refused = api.wait_vm(api.request("small", "nowhere")["vms"][0]["id"], ("ERROR",))
        self.assertIn("no valid host: 4 hosts; removed by state: 4", refused["fault"])
        # One host back: the next VM lands there.
        r = operator.call("POST", "/v1/hosts/host-2/maintenance", {"enabled": False})
        self.assertEqual((r.status, r.json()["host"]["state"]), (200, "UP"))
        placed = api.wait_vm(api.request("small", "on-two")["vms"][0]["id"], ("ACTIVE",))
        self.assertEqual(placed["host"], "host-2")
        # Each switch is a host.state transition with its actor, and audited.
        moves = [e for e in events(p, "host.state")
                 if e.get("host") == "host-1" and e.get("transition") == "disable"]
        self.assertEqual(len(moves), 1, moves)
        self.assertEqual(moves[0]["actor"], "maint-op")
        trail = api.get("/v1/audit?action=host.maintenance")
        self.assertGreaterEqual(len(trail["records"]), 4)

        # The CLI: `berth host maintenance HOST on|off` and `berth hosts` (state, orphans).
        home = tempfile.mkdtemp(prefix="berth-cli-")
        try:
            with CheckedProxy(p) as proxy:
                def berth(*args, stdin=None):
                    env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
                    env.update({"BERTH_URL": proxy.url, "XDG_CONFIG_HOME": home, "HOME": home})
                    r = subprocess.run([p.binary("berth")] + list(args), input=stdin, env=env,
                                       capture_output=True, text=True, timeout=60)
                    self.assertEqual(proxy.violations, [], "berth %s" % " ".join(args))
                    return r
                r = berth("login", "--user", "maint-op", "--password-stdin",
                          stdin="password-123\n")
                self.assertEqual(r.returncode, 0, r.stderr)
                r = berth("host", "maintenance", "host-3", "off")
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stdout.strip(), "host host-3 is UP (maintenance off)")
                r = berth("host", "maintenance", "host-3", "on")
                self.assertEqual(r.stdout.strip(), "host host-3 is DISABLED (maintenance on)")
                r = berth("host", "maintenance", "host-3", "sideways")
                self.assertEqual(r.returncode, 2)
                r = berth("hosts")
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertIn("ORPHANS", r.stdout)
                row = [x for x in r.stdout.splitlines() if x.startswith("host-4 ")][0]
                self.assertIn("DISABLED", row)
                self.assertIn(self.orphan, row)
        finally:
            shutil.rmtree(home, ignore_errors=True)

    def test_4_failover(self):
        api, p = self.api, self.p
        # host-5: the biggest host (the free-RAM weigher's choice), and every command slow.
        agent = p.start_agent(5, env={"BERTH_LIBVIRT_DELAY_MS": str(AGENT_DELAY_MS),
                                      "BERTH_HOST_RAM_MB": "262144"})
        wait_until(lambda: self.host_state("host-5", "UP"), 20, "host-5 UP")
        vm_id = api.request("small", "failover")["vms"][0]["id"]
        wait_until(lambda: api.vm(vm_id)["host"] == "host-5" and
                   api.task(api.vm(vm_id)["task"])["stage"] == "create_disk", 20,
                   "the build waiting on host-5")
        agent.kill(signal.SIGKILL)
        t0 = time.monotonic()
        vm = api.wait_vm(vm_id, ("ACTIVE",), timeout=FAILOVER_WITHIN_S + 10)
        took = time.monotonic() - t0
        self.assertLess(took, FAILOVER_WITHIN_S, "failed over after %.1f s" % took)
        self.assertEqual(vm["host"], "host-2")
        task = api.task(vm["task"])
        failed = [s for s in task["steps"] if s["state"] == "FAILED"]
        self.assertTrue(failed and "host host-5 is DOWN" in failed[0]["result"], task["steps"])
        self.assertTrue(self.host_state("host-5", "DOWN"))

    def test_5_rebuild_on_loss(self):
        """A VM of a template that says rebuild_on_loss, lost with its host, is built again
        (lost -> ERROR -> rebuild -> PROVISIONING -> ACTIVE, RUNNING) with its lease's end
        unchanged and its domain on a host again."""
        api, p = self.api, self.p
        api.create_template(name="phoenix", vcpus=1, ram_mb=512, disk_gb=5, os="debian",
                            image="debian-12", lease_days=3, requires_approval=False,
                            rebuild_on_loss=True)
        self.assertTrue([t for t in api.get("/v1/templates")["templates"]
                         if t["name"] == "phoenix"][0]["rebuild_on_loss"])
        vm = api.wait_vm(api.request("phoenix", "phoenix-1")["vms"][0]["id"], ("ACTIVE",))
        host, first_task = vm["host"], vm["task"]
        wait_until(lambda: stored(p, vm["id"], "power_state") == "RUNNING", DOWN_WITHIN_S,
                   "VM power RUNNING")
        p.restart(self.agent(host))

        def rebuilt():
            v = api.vm(vm["id"])
            return v if v["state"] == "ACTIVE" and v["task"] != first_task and \
                v["power_state"] == "RUNNING" else None
        again = wait_until(rebuilt, 60, "the lost VM built again")
        self.assertEqual(again["lease"], vm["lease"])
        self.assertEqual(again["fault"], vm["fault"])
        task = api.task(again["task"])
        self.assertEqual((task["kind"], task["state"]), ("PROVISION", "SUCCEEDED"), task)
        wait_until(lambda: vm["id"] in host_domains(api, again["host"]), 20,
                   "its domain on host %s" % again["host"])
        moves = [e.get("transition") for e in events(p, "vm.state") if e.get("vm") == vm["id"]]
        self.assertEqual(moves, ["create", "provisioned", "lost", "rebuild", "provisioned"])


if __name__ == "__main__":
    unittest.main()
