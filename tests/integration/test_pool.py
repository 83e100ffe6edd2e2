#!/usr/bin/env python3
"""Instant deploy: a template's pool of VMs built ahead and suspended to disk, handed to a
request (re-identified and resumed), refilled in the background; it never takes capacity a
group's reservation holds and counts against no quota until handed out.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_pool.py
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import CheckedProxy, PlatformCase, iso_file, wait_until  # noqa: E402

PW = "pool-test-pw-1"
# One host: 8 vCPUs, 8 GiB; a group reserves half of it below.
HOST = {"BERTH_HOST_VCPUS": "8", "BERTH_HOST_RAM_MB": "8192", "BERTH_HOST_DISK_GB": "200"}


class Pool(PlatformCase):
    agents = 1
    wait_hosts = 1
    agent_env = HOST
    # Two approval instances: two requests at once may both find the same pooled VM ready.
    instances = {"approval": 2}

    def seed_path(self, vm_id):
        paths = glob.glob(os.path.join(self.p.data_dir, "services", "agent-*", "**",
                                       vm_id + "-seed.iso"), recursive=True)
        return paths[0] if paths else None

    def pool(self, template):
        return self.api.get("/v1/templates/%s/pool" % template)["pool"]

    def group(self, name, **fields):
        fields["name"] = name
        r = self.api.call("POST", "/v1/groups", fields)
        self.assertEqual(r.status, 201, r)
        return r.json()["group"]

    def member(self, group, name):
        user = self.api.create_user(name, PW)
        r = self.api.call("POST", "/v1/groups/%s/members" % group["id"],
                          {"user": name, "role": "member"})
        self.assertEqual(r.status, 201, r)
        return user

    def usage_of(self, group):
        return self.api.get("/v1/groups/" + group["id"])["group"]["usage"]

    def test_concurrent_requests_one_pooled_vm(self):
        """Two requests at once for a pool of one: one gets the pooled VM, the other is built
        (a request whose pooled VM another took first is built, never refused)."""
        host = list(self.api.hosts().values())[0]
        self.api.create_template(name="racy", vcpus=1, ram_mb=1024, disk_gb=5, os="debian",
                                 image="debian-12", lease_days=1)
        r = self.api.call("PUT", "/v1/templates/racy/pool", {"size": 1})
        self.assertEqual(r.status, 200, r)
        pooled = r.json()["pool"]["vms"][0]
        wait_until(lambda: self.pool("racy")["ready"] == 1, 30, "the pool built")
        answers = [None, None]

        def ask(i):
            answers[i] = self.api.call("POST", "/v1/requests", {"template": "racy",
                                                                 "name": "race-%d" % i})
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual([a.status for a in answers], [202, 202], answers)
        ids = [a.json()["request"]["vms"][0]["id"] for a in answers]
        vms = [self.api.wait_vm(i, ("ACTIVE", "ERROR"), timeout=30) for i in ids]
        self.assertEqual([v["state"] for v in vms], ["ACTIVE", "ACTIVE"], vms)
        self.assertEqual(sorted(v["from_pool"] for v in vms), [False, True], vms)
        self.assertIn(pooled, ids)
        # Everything goes: the VMs, then the pool (its replacement once it is ready).
        for i in ids:
            self.api.wait_task(self.api.dispose(i)["id"])
        wait_until(lambda: self.pool("racy")["ready"] == 1, 30, "the replacement built")
        self.assertEqual(self.api.call("PUT", "/v1/templates/racy/pool", {"size": 0}).status, 200)
        wait_until(lambda: self.api.hosts()[host["id"]]["used"]["ram_mb"] == 0, 30,
                   "the host empty again")

    def test_maintenance_keeps_pooled_vms(self):
        """A pooled VM on a host in maintenance is not handed out: the request is built (here
        nowhere: the one host takes nothing new), the pooled VM waits."""
        host = list(self.api.hosts().values())[0]
        self.api.create_template(name="maint", vcpus=1, ram_mb=1024, disk_gb=5, os="debian",
                                 image="debian-12", lease_days=1)
        r = self.api.call("PUT", "/v1/templates/maint/pool", {"size": 1})
        self.assertEqual(r.status, 200, r)
        pooled = r.json()["pool"]["vms"][0]
        wait_until(lambda: self.pool("maint")["ready"] == 1, 30, "the pool built")
        path = "/v1/hosts/%s/maintenance" % host["id"]
        self.assertEqual(self.api.call("POST", path, {"enabled": True}).status, 200)
        try:
            wait_until(lambda: self.api.hosts()[host["id"]]["state"] == "DISABLED", 10,
                       "the host in maintenance")
            r = self.api.call("POST", "/v1/requests", {"template": "maint", "name": "m"})
            self.assertEqual(r.status, 202, r)
            vm_id = r.json()["request"]["vms"][0]["id"]
            self.assertNotEqual(vm_id, pooled)
            vm = self.api.wait_vm(vm_id, ("ACTIVE", "ERROR"), timeout=30)
            self.assertEqual((vm["state"], vm["from_pool"]), ("ERROR", False), vm)
            self.assertEqual(self.api.vm(pooled)["state"], "POOLED")
        finally:
            self.assertEqual(self.api.call("POST", path, {"enabled": False}).status, 200)
        self.api.wait_task(self.api.dispose(vm_id)["id"])
        self.assertEqual(self.api.call("PUT", "/v1/templates/maint/pool", {"size": 0}).status, 200)
        wait_until(lambda: self.api.hosts()[host["id"]]["used"]["ram_mb"] == 0, 30,
                   "the host empty again")

    def test_pool(self):
        host = list(self.api.hosts().values())[0]
        r = self.api.call("POST", "/v1/networks", {"name": "pooled", "cidr": "10.30.0.0/24",
                                                    "gateway": "10.30.0.1", "bridge": "br-pool"})
        self.assertEqual(r.status, 201, r)
        self.api.create_template(name="pooled", vcpus=1, ram_mb=1024, disk_gb=5, os="debian",
                                 image="debian-12", lease_days=1, network="pooled")
        self.api.create_template(name="plain", vcpus=1, ram_mb=1024, disk_gb=5, os="debian",
                                 image="debian-12", lease_days=1)
        alpha = self.group("alpha", quota={"vms": 1})
        beta = self.group("beta")
        ua, ub = self.member(alpha, "ann-pool"), self.member(beta, "bob-pool")
        # beta holds half the host: the pool may use the other half only.
        r = self.api.call("PUT", "/v1/groups/%s/reservations" % beta["id"],
                          {"reservations": [{"host": host["name"], "ram_mb": 4096}]})
        self.assertEqual(r.status, 200, r)

        # Validation and permissions.
        r = self.api.call("PUT", "/v1/templates/pooled/pool", {"size": 21})
        self.assertEqual((r.status, r.json()["error"]["details"]["field"]), (400, "size"), r)
        r = self.api.call("PUT", "/v1/templates/no-such/pool", {"size": 1})
        self.assertEqual(r.status, 404, r)
        self.assertEqual(ua.call("PUT", "/v1/templates/pooled/pool", {"size": 1}).status, 403)
        self.assertEqual(ua.call("GET", "/v1/templates/pooled/pool").status, 403)
        # A network only some groups may use: a VM in no group cannot have an address there.
        r = self.api.call("POST", "/v1/networks", {"name": "beta-only", "cidr": "10.31.0.0/24",
                                                    "gateway": "10.31.0.1", "bridge": "br-beta",
                                                    "groups": ["beta"]})
        self.assertEqual(r.status, 201, r)
        self.api.create_template(name="beta-net", vcpus=1, ram_mb=1024, disk_gb=5, os="debian",
                                 image="debian-12", lease_days=1, network="beta-only")
        r = self.api.call("PUT", "/v1/templates/beta-net/pool", {"size": 1})
        self.assertEqual((r.status, r.json()["error"]["code"]), (409, "CONFLICT"), r)
        self.assertIn("no group", r.json()["error"]["message"])
        self.assertEqual(self.pool("beta-net")["size"], 0)

        r = self.api.call("PUT", "/v1/templates/pooled/pool", {"size": 2})
        self.assertEqual(r.status, 200, r)
        self.assertEqual((r.json()["pool"]["size"], len(r.json()["pool"]["vms"])), (2, 2), r)
        tmpl = [t for t in self.api.get("/v1/templates")["templates"] if t["name"] == "pooled"]
        self.assertEqual(tmpl[0]["pool_size"], 2)
        ready = wait_until(lambda: self.pool("pooled")["ready"] == 2 and self.pool("pooled"),
                           60, "the pool built")
        pooled_ids = ready["vms"]
        for vm_id in pooled_ids:
            vm = self.api.vm(vm_id)
            self.assertEqual((vm["state"], vm["owner"], vm["group"]), ("POOLED", None, None), vm)
            # Suspended to disk: the domain is shut off, its memory saved beside it.
            self.assertEqual(vm["power_state"], "STOPPED", vm)
            self.assertTrue(vm["name"].startswith("pool-"), vm)
            build = self.api.task(vm["task"])
            self.assertEqual((build["kind"], build["state"]), ("POOL_BUILD", "SUCCEEDED"))
            self.assertIn("save_to_disk", [s["name"] for s in build["steps"]])
        # Nobody's quota holds them.
        self.assertEqual(self.usage_of(alpha)["vms"], 0)
        self.assertEqual(self.usage_of(beta)["vms"], 0)

        # A request takes one: ACTIVE from the pool, and its task says so.
        r = ua.call("POST", "/v1/requests", {"template": "pooled", "name": "web",
                                              "group": "alpha"})
        self.assertEqual(r.status, 202, r)
        vm_id = r.json()["request"]["vms"][0]["id"]
        self.assertIn(vm_id, pooled_ids)
        vm = ua.wait_vm(vm_id, ("ACTIVE",), timeout=30)
        self.assertEqual((vm["power_state"], vm["from_pool"], vm["name"], vm["owner"],
                          vm["group"]), ("RUNNING", True, "web", "ann-pool", alpha["id"]), vm)
        self.assertIsNotNone(vm["lease"]["expires_at"])
        task = ua.task(vm["task"])
        self.assertEqual((task["kind"], task["state"], task["from_pool"]),
                         ("PROVISION", "SUCCEEDED", True), task)
        names = [s["name"] for s in task["steps"]]
        self.assertEqual(names, ["validate", "from_pool", "reidentify", "build_seed", "resume",
                                 "wait_ready"], task["steps"])
        self.assertNotIn("create_disk", names)
        # Quota: counted from the hand-out on, and only then.
        self.assertEqual(self.usage_of(alpha)["vms"], 1)
        r = ua.call("POST", "/v1/requests", {"template": "pooled", "name": "web2",
                                              "group": "alpha"})
        self.assertEqual((r.status, r.json()["error"]["code"]), (403, "QUOTA_EXCEEDED"), r)

        # Its identity is its own: instance-id, hostname and the address in its record.
        ip = vm["network"]["ip"]
        self.assertTrue(ip.startswith("10.30.0."), vm)
        seed = self.seed_path(vm_id)
        meta = iso_file(seed, "meta-data")
        self.assertIn("instance-id: " + vm_id, meta)
        self.assertIn("local-hostname: web", meta)
        self.assertNotIn("pool-", meta)
        self.assertIn(ip + "/24", iso_file(seed, "network-config"))
        self.assertIn("hostname: web", iso_file(seed, "user-data"))

        # The pool refills in the background to its size, with new VMs.
        refilled = wait_until(lambda: self.pool("pooled")["ready"] == 2 and self.pool("pooled"),
                              60, "the pool refilled")
        self.assertNotIn(vm_id, refilled["vms"])
        self.assertEqual(len(set(refilled["vms"]) & set(pooled_ids)), 1)

        # The meter bills the VM handed out, never the pool's.
        def billed():
            rows = {u["vm"]: u for u in self.api.get("/v1/usage")["usage"]}
            return rows if rows.get(vm_id, {}).get("active_hours", 0) > 0 else None
        rows = wait_until(billed, 30, "the handed-out VM billed")
        for other in refilled["vms"]:
            row = rows.get(other, {"active_hours": 0, "disk_only_hours": 0})
            self.assertEqual((row["active_hours"], row["disk_only_hours"]), (0, 0), row)

        # The pool never takes what beta reserved: three in use of the 4096 MB unreserved, a
        # fourth pool VM fits, a fifth does not, and beta still gets its four.
        r = self.api.call("PUT", "/v1/templates/pooled/pool", {"size": 4})
        self.assertEqual(r.status, 200, r)
        wait_until(lambda: self.pool("pooled")["ready"] == 3 and
                   self.pool("pooled")["building"] == 0, 60, "the pool grown to what fits")
        self.assertEqual(self.api.hosts()[host["id"]]["used"]["ram_mb"], 4096)
        r = ub.call("POST", "/v1/requests", {"template": "plain", "name": "b", "count": 4,
                                              "group": "beta"})
        self.assertEqual(r.status, 202, r)
        for v in r.json()["request"]["vms"]:
            got = ub.wait_vm(v["id"], ("ACTIVE", "ERROR"), timeout=60)
            self.assertEqual(got["state"], "ACTIVE", got)
            self.assertFalse(got["from_pool"])
        self.assertEqual(self.api.hosts()[host["id"]]["used"]["ram_mb"], 8192)

        # A smaller pool disposes of the ready VMs beyond it.
        r = self.api.call("PUT", "/v1/templates/pooled/pool", {"size": 1})
        self.assertEqual(r.status, 200, r)
        wait_until(lambda: self.pool("pooled")["ready"] == 1, 30, "the pool shrunk")
        wait_until(lambda: self.api.hosts()[host["id"]]["used"]["ram_mb"] == 8192 - 2048, 30,
                   "the surplus disposed")


    def test_handout_counts_in_reservation(self):
        """A pooled VM handed to a group with a reservation on its host counts against that
        reservation from the hand-out on: the group's reservation shows it used, and the host
        capacity it frees for others is theirs (another group's request that needs all the
        unreserved rest is placed); its disposal gives the reservation back."""
        host = list(self.api.hosts().values())[0]
        self.api.create_template(name="resv", vcpus=1, ram_mb=1024, disk_gb=5, os="debian",
                                 image="debian-12", lease_days=1)
        self.api.create_template(name="resv-plain", vcpus=1, ram_mb=1024, disk_gb=5,
                                 os="debian", image="debian-12", lease_days=1)
        gamma, delta = self.group("gamma"), self.group("delta")
        ug, ud = self.member(gamma, "gil-pool"), self.member(delta, "dan-pool")
        path = "/v1/groups/%s/reservations" % gamma["id"]
        r = self.api.call("PUT", path, {"reservations": [{"host": host["name"],
                                                          "ram_mb": 2048}]})
        self.assertEqual(r.status, 200, r)
        self.addCleanup(self.api.call, "PUT", path, {"reservations": []})

        def reserved_used():
            return self.api.get("/v1/groups/" + gamma["id"])["group"]["reservations"][0][
                "used"]["ram_mb"]

        self.assertEqual(self.api.call("PUT", "/v1/templates/resv/pool", {"size": 1}).status, 200)
        pooled = wait_until(lambda: self.pool("resv")["ready"] == 1 and self.pool("resv"), 30,
                            "the pool built")["vms"][0]
        self.assertEqual(reserved_used(), 0)  # built in no group: none of gamma's
        r = ug.call("POST", "/v1/requests", {"template": "resv", "name": "g1",
                                              "group": "gamma"})
        self.assertEqual(r.status, 202, r)
        vm_id = r.json()["request"]["vms"][0]["id"]
        self.assertEqual(vm_id, pooled)
        vm = ug.wait_vm(vm_id, ("ACTIVE", "ERROR"), timeout=30)
        self.assertEqual((vm["state"], vm["from_pool"]), ("ACTIVE", True), vm)
        self.assertEqual(reserved_used(), 1024)
        # The replacement, built in no group again, takes unreserved capacity.
        wait_until(lambda: self.pool("resv")["ready"] == 1 and
                   self.pool("resv")["building"] == 0, 30, "the pool refilled")
        self.assertEqual(self.api.hosts()[host["id"]]["used"]["ram_mb"], 2048)
        self.assertEqual(reserved_used(), 1024)
        # Unreserved and free: 8192 - 2048 reserved (1024 of it used) - 1024 the replacement.
        # delta takes all of it; had the VM not counted in gamma's reservation, gamma's would
        # still hold 2048 free beside it and the fifth VM would find no room.
        r = ud.call("POST", "/v1/requests", {"template": "resv-plain", "name": "d", "count": 5,
                                              "group": "delta"})
        self.assertEqual(r.status, 202, r)
        ids = [v["id"] for v in r.json()["request"]["vms"]]
        for i in ids:
            got = ud.wait_vm(i, ("ACTIVE", "ERROR"), timeout=60)
            self.assertEqual(got["state"], "ACTIVE", got)
        self.assertEqual(self.api.hosts()[host["id"]]["used"]["ram_mb"], 8192 - 1024)
        # Disposed, the VM gives gamma's reservation back.
        for i in ids + [vm_id]:
            self.api.wait_task(self.api.dispose(i)["id"])
        wait_until(lambda: reserved_used() == 0, 30, "gamma's reservation given back")
        self.assertEqual(self.api.call("PUT", "/v1/templates/resv/pool", {"size": 0}).status, 200)
        wait_until(lambda: self.api.hosts()[host["id"]]["used"]["ram_mb"] == 0, 30,
                   "the host empty again")


    def test_failed_build_not_retried(self):
        """A pool VM whose build failed has left the pool: retrying its POOL_BUILD is refused
        (409, saying why and what to do); setting the pool's size again builds what it lacks."""
        host = list(self.api.hosts().values())[0]
        tmpl = self.api.create_template(name="unlucky", vcpus=1, ram_mb=1024, disk_gb=5,
                                        os="debian", image="debian-12", lease_days=1)
        # A group reserves all the host's RAM: a pool VM (in no group) finds no room.
        epsilon = self.group("epsilon")
        path = "/v1/groups/%s/reservations" % epsilon["id"]
        r = self.api.call("PUT", path, {"reservations": [{"host": host["name"],
                                                          "ram_mb": 8192}]})
        self.assertEqual(r.status, 200, r)
        self.addCleanup(self.api.call, "PUT", path, {"reservations": []})
        r = self.api.call("PUT", "/v1/templates/unlucky/pool", {"size": 1})
        self.assertEqual(r.status, 200, r)

        # Its build may fail before the answer lists it: found among the VMs in ERROR.
        def failed():
            vms = self.api.get("/v1/vms?state=ERROR")["vms"]
            return [v["id"] for v in vms if v["template"] == tmpl["id"]]
        vm_id = wait_until(failed, 30, "the pool VM failed")[0]
        build = self.api.wait_task(self.api.vm(vm_id)["task"])
        self.assertEqual((build["kind"], build["state"]), ("POOL_BUILD", "FAILED"), build)
        self.assertEqual(self.api.vm(vm_id)["state"], "ERROR")
        self.assertEqual(self.pool("unlucky")["vms"], [])
        r = self.api.call("POST", "/v1/tasks/%s/retry" % build["id"])
        self.assertEqual((r.status, r.json()["error"]["code"]), (409, "CONFLICT"), r)
        self.assertIn("POOL_BUILD is not retried", r.json()["error"]["message"])
        self.assertEqual(r.json()["error"]["details"]["kind"], "POOL_BUILD")
        self.assertEqual(self.api.task(build["id"])["state"], "FAILED")
        # With room again, the size set again builds a new one (set again while a build
        # still finds no room: the scheduler sees reservations as of its last refresh).
        self.assertEqual(self.api.call("PUT", path, {"reservations": []}).status, 200)

        def refilled():
            pool = self.pool("unlucky")
            if not pool["vms"]:
                r = self.api.call("PUT", "/v1/templates/unlucky/pool", {"size": 1})
                self.assertEqual(r.status, 200, r)
            return pool["ready"] == 1 and pool
        self.assertNotIn(vm_id, wait_until(refilled, 30, "the pool built")["vms"])
        # The failed VMs are disposed of like any in ERROR; then the pool goes.
        for i in failed():
            self.assertEqual(self.api.wait_task(self.api.dispose(i)["id"])["state"], "SUCCEEDED")
        r = self.api.call("PUT", "/v1/templates/unlucky/pool", {"size": 0})
        self.assertEqual(r.status, 200, r)
        wait_until(lambda: self.api.hosts()[host["id"]]["used"]["ram_mb"] == 0, 30,
                   "the host empty again")

    def berth(self, home, *args, stdin=None, code=0):
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        env.update({"BERTH_URL": self.proxy.url, "XDG_CONFIG_HOME": home, "HOME": home})
        r = subprocess.run([self.p.binary("berth")] + list(args), input=stdin, env=env,
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(self.proxy.violations, [], "berth %s" % " ".join(args))
        self.assertEqual(r.returncode, code, "berth %s:\n%s\n%s" % (" ".join(args), r.stdout,
                                                                    r.stderr))
        return r.stdout

    def test_cli_pool(self):
        self.proxy = CheckedProxy(self.p)
        self.addCleanup(self.proxy.close)
        home = tempfile.mkdtemp(prefix="berth-cli-")
        self.addCleanup(shutil.rmtree, home, ignore_errors=True)
        self.berth(home, "login", "--user", self.p.admin_user, "--password-stdin",
                   stdin=self.p.admin_password + "\n")
        out = json.loads(self.berth(home, "template", "pool", "small", "0", "-o", "json"))
        self.assertEqual((out["pool"]["name"], out["pool"]["size"]), ("small", 0))
        out = self.berth(home, "template", "pool", "small")
        self.assertRegex(out, r"size:\s+0")
        self.assertRegex(self.berth(home, "template", "list").splitlines()[0], r"APPROVAL\s+POOL")
        self.berth(home, "template", "pool", "small", "many", code=2)
        self.berth(home, "template", "pool", "small", "21", code=1)


class PoolShrink(PlatformCase):
    """A pool made smaller while its VMs are still building comes back to its size: a VM
    that finishes once the pool's others fill it is disposed instead of pooled."""
    agents = 1
    wait_hosts = 1
    # A slow hypervisor (each libvirt call takes this long), so the builds are still under
    # way when the size is lowered.
    agent_env = dict(HOST, BERTH_LIBVIRT_DELAY_MS="400")

    def pool(self, template):
        return self.api.get("/v1/templates/%s/pool" % template)["pool"]

    def test_smaller_while_building(self):
        for name in ("shrink-one", "shrink-none"):
            self.api.create_template(name=name, vcpus=1, ram_mb=1024, disk_gb=5, os="debian",
                                     image="debian-12", lease_days=1)
            r = self.api.call("PUT", "/v1/templates/%s/pool" % name, {"size": 2})
            self.assertEqual(r.status, 200, r)
        built = {}
        for name, size in (("shrink-one", 1), ("shrink-none", 0)):
            r = self.api.call("PUT", "/v1/templates/%s/pool" % name, {"size": size})
            self.assertEqual(r.status, 200, r)
            pool = r.json()["pool"]
            # Both still building: none was ready to dispose at once.
            self.assertEqual((pool["size"], pool["ready"], pool["building"]), (size, 0, 2), pool)
            built[name] = pool["vms"]
        for name, size in (("shrink-one", 1), ("shrink-none", 0)):
            pool = wait_until(lambda: self.pool(name)["building"] == 0 and self.pool(name), 60,
                              "the builds of %s done" % name)
            self.assertEqual((pool["size"], pool["ready"], len(pool["vms"])),
                             (size, size, size), pool)
            for vm_id in pool["vms"]:
                self.assertEqual(self.api.vm(vm_id)["state"], "POOLED")
            surplus = [v for v in built[name] if v not in pool["vms"]]
            self.assertEqual(len(surplus), 2 - size, (built[name], pool))
            for vm_id in surplus:
                vm = self.api.wait_vm(vm_id, ("DISPOSED",), timeout=60)
                self.assertEqual(vm["state"], "DISPOSED", vm)
                task = self.api.task(vm["task"])
                self.assertEqual((task["kind"], task["state"]), ("DISPOSE", "SUCCEEDED"), task)
        # Nothing of the surplus is left on the host: the one pooled VM alone uses it.
        host = list(self.api.hosts().values())[0]
        wait_until(lambda: self.api.hosts()[host["id"]]["used"]["ram_mb"] == 1024, 30,
                   "the surplus released its host")


if __name__ == "__main__":
    unittest.main()
