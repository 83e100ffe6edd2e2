#!/usr/bin/env python3
"""The scheduler's filters beyond capacity, through the REST API and the CLI, with three
simulated hosts, two scheduler instances placing at once, max_vms_per_host 2 and host-3's own
limit 3 (max_vms_hosts):

- a template's hypervisor: "qemu" finds no host (the simulated hosts are libvirt's test
  driver), the VM ends ERROR with "no valid host" counting every host under `hypervisor`;
  "test" is placed; a malformed hypervisor is refused (400 naming it);
- anti-affinity (asked with the CLI's --placement): 3 VMs on 3 hosts land on 3 different
  hosts; 4 VMs: 3 land apart and the 4th ends ERROR counting the 3 hosts under
  `anti_affinity`;
- affinity: 2 VMs land on one host; 3 VMs: 2 land on one host (host-1: equal hosts are
  taken in id order), the third ends ERROR (that host is full under `max_vms`, the others are
  removed by `affinity`);
- max VMs per host: 8 VMs without a rule on hosts taking 2, 2 and 3: 7 land, as many per
  host, the 8th counts the 3 hosts under `max_vms`; a bad placement value is refused (400).

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_filters.py
"""

import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import CheckedProxy, PlatformCase, wait_until  # noqa: E402

# Roomy hosts: only the filters under test remove any.
HOST = {"BERTH_HOST_VCPUS": "16", "BERTH_HOST_RAM_MB": "16384", "BERTH_HOST_DISK_GB": "1000"}
SMALL = dict(vcpus=1, ram_mb=512, disk_gb=1, os="debian", image="debian-12", lease_days=1,
             requires_approval=False)


class Filters(PlatformCase):
    agents = 3
    wait_hosts = 3
    agent_env = HOST
    instances = {"scheduler": 2}
    platform_env = {"BERTH_MAX_VMS_PER_HOST": "2", "BERTH_MAX_VMS_HOSTS": "host-3=3"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.api.create_template(name="filt", **SMALL)

    def ask(self, name, count, placement=None, template="filt"):
        body = {"template": template, "name": name, "count": count}
        if placement:
            body["placement"] = placement
        r = self.api.call("POST", "/v1/requests", body)
        self.assertEqual(r.status, 202, r)
        return r.json()["request"]

    def settle(self, request):
        """Every VM of request ACTIVE or ERROR: (active, error) lists of VMs."""
        ids = [v["id"] for v in request["vms"]]

        def settled():
            vms = [self.api.vm(v) for v in ids]
            return vms if all(v["state"] in ("ACTIVE", "ERROR") for v in vms) else None

        vms = wait_until(settled, 120, "every VM of %s ACTIVE or ERROR" % request["name"])
        return ([v for v in vms if v["state"] == "ACTIVE"],
                [v for v in vms if v["state"] == "ERROR"])

    def dispose_all(self, vms):
        tasks = [self.api.dispose(v["id"])["id"] for v in vms]
        for t in tasks:
            self.api.wait_task(t, timeout=120)

    def test_1_hypervisor(self):
        r = self.api.call("POST", "/v1/templates",
                          dict(SMALL, name="bad-hv", hypervisor="no such"))
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json()["error"]["details"].get("field"), "hypervisor", r)
        t = self.api.create_template(name="on-qemu", hypervisor="qemu", **SMALL)
        self.assertEqual(t["hypervisor"], "qemu")
        self.api.create_template(name="on-test", hypervisor="test", **SMALL)

        active, error = self.settle(self.ask("hvq", 1, template="on-qemu"))
        self.assertEqual((len(active), len(error)), (0, 1))
        self.assertIn("no valid host", error[0]["fault"])
        self.assertIn("hypervisor: 3", error[0]["fault"])
        active, error = self.settle(self.ask("hvt", 1, template="on-test"))
        self.assertEqual((len(active), len(error)), (1, 0), error)
        self.dispose_all(active)

    def test_2_anti_affinity(self):
        # Asked with the CLI, its calls held to the API document.
        proxy = CheckedProxy(self.p)
        self.addCleanup(proxy.close)
        home = tempfile.mkdtemp(prefix="berth-cli-")
        self.addCleanup(shutil.rmtree, home, ignore_errors=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        env.update({"BERTH_URL": proxy.url, "XDG_CONFIG_HOME": home, "HOME": home})

        def berth(*args, stdin=None):
            r = subprocess.run([self.p.binary("berth")] + list(args), input=stdin, env=env,
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, (args, r.stdout, r.stderr))
            self.assertEqual(proxy.violations, [])
            return r.stdout

        berth("login", "--user", self.p.admin_user, "--password-stdin",
              stdin=self.p.admin_password + "\n")

        out = json.loads(berth("-o", "json", "request", "filt", "apart", "--count", "3",
                               "--placement", "anti-affinity"))
        request = out["request"]
        self.assertEqual(request["placement"], "anti-affinity")
        active, error = self.settle(request)
        self.assertEqual((len(active), len(error)), (3, 0), error)
        self.assertEqual(len({v["host"] for v in active}), 3, active)
        self.dispose_all(active)

        active, error = self.settle(self.ask("apart4", 4, "anti-affinity"))
        self.assertEqual((len(active), len(error)), (3, 1), error)
        self.assertEqual(len({v["host"] for v in active}), 3, active)
        self.assertIn("no valid host", error[0]["fault"])
        self.assertIn("anti_affinity: 3", error[0]["fault"])
        self.dispose_all(active)

    def test_3_affinity(self):
        active, error = self.settle(self.ask("together", 2, "affinity"))
        self.assertEqual((len(active), len(error)), (2, 0), error)
        self.assertEqual(len({v["host"] for v in active}), 1, active)
        self.dispose_all(active)

        # Three together: the host they share takes two (max_vms_per_host).
        active, error = self.settle(self.ask("together3", 3, "affinity"))
        self.assertEqual((len(active), len(error)), (2, 1), error)
        self.assertEqual(len({v["host"] for v in active}), 1, active)
        self.assertIn("max_vms: 1", error[0]["fault"])
        self.assertIn("affinity: 2", error[0]["fault"])
        self.dispose_all(active)

    def test_4_max_vms(self):
        r = self.api.call("POST", "/v1/requests",
                          {"template": "filt", "name": "bad", "placement": "nearby"})
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json()["error"]["details"].get("field"), "placement", r)

        active, error = self.settle(self.ask("many", 8))
        self.assertEqual((len(active), len(error)), (7, 1), error)
        names = {h["id"]: h["name"] for h in self.api.hosts().values()}
        per_host = collections.Counter(names[v["host"]] for v in active)
        self.assertEqual(per_host, {"host-1": 2, "host-2": 2, "host-3": 3})
        for vm in error:
            self.assertIn("max_vms: 3", vm["fault"])
        self.dispose_all(active)
        # Disposed, their hosts take VMs again.
        active, error = self.settle(self.ask("again", 3))
        self.assertEqual((len(active), len(error)), (3, 0), error)
        self.dispose_all(active)


if __name__ == "__main__":
    unittest.main()
