#!/usr/bin/env python3
"""A real guest, end to end (issue 12, "A real guest"): libvirtd with QEMU (software emulation:
this machine has no usable KVM), prepared by deploy/setup-libvirt, under one agent on
qemu:///system, with the rest of the platform as every integration test runs it.

- tests/e2e/build-guest.sh builds a tiny guest from Debian packages (the cloud kernel and a
  busybox initramfs), imported as a direct-boot image (its disk, kernel, initrd and command
  line) through POST /v1/images;
- a user with an SSH key asks for a VM of a template on that image and on a Berth network
  (attached to an isolated libvirt network the test makes): Berth places it with an address,
  stages its seed, defines and starts the domain; the guest mounts the cidata seed and prints
  its instance-id, hostname, address and the first SSH key's comment on its serial console;
- the test reads the console log through libvirt (the log file the domain's XML names) and
  checks each line against what the API says; disposal removes the domain.
- instant deploy, one boot more: the template's pool builds a guest ahead and saves it to disk
  (libvirt managed save); a request takes it and the guest, resumed, is that VM: its
  instance-id and address were the VM's from the start, its hostname and key come with the
  seed the hand-out replaced, which the guest reads again (build-guest.sh's /init); a guest
  with cloud-init alone would not re-learn them until it boots (README, "Instant deploy").

Run: BERTH_BIN_DIR=build/bin python3 tests/e2e/test_guest.py
"""

# ctest: heavy

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from berth_test import Api, PlatformCase, wait_until  # noqa: E402

URI = "qemu:///system"
PW = "guest-pass-123"
# The agent's storage pool, ours alone (libvirtd keeps pools across runs): removed at the end.
POOL = "berth-e2e-%d" % os.getpid()
# An isolated libvirt network (a bridge, no DHCP: the guest's address comes in its seed) the
# VM's Berth network attaches to; gone at the end.
NET = "berth-e2e-%d" % os.getpid()
BRIDGE = "bere2e%d" % (os.getpid() % 100000)


def virsh(*args):
    return subprocess.run(["virsh", "-c", URI] + list(args), capture_output=True, text=True)


class Guest(PlatformCase):
    agents = 1
    wait_hosts = 1
    agent_env = {"BERTH_LIBVIRT_URI": URI, "BERTH_POOL": POOL}
    # The pooled guest's replacement is due long after the test: one extra boot, not two; and
    # a pooled guest runs long enough to boot (and print its pool identity) before its save.
    platform_env = {"BERTH_POOL_REFILL_DELAY_MS": "3600000", "BERTH_POOL_SETTLE_MS": "30000"}

    @classmethod
    def setUpClass(cls):
        subprocess.run([os.path.join(ROOT, "deploy", "setup-libvirt")], check=True)
        with tempfile.NamedTemporaryFile("w", suffix=".xml") as f:
            f.write("<network><name>%s</name><bridge name='%s' stp='off'/></network>"
                    % (NET, BRIDGE))
            f.flush()
            made = virsh("net-create", f.name)
            assert made.returncode == 0, made.stderr
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            virsh("pool-destroy", POOL)
            virsh("pool-undefine", POOL)
            virsh("net-destroy", NET)

    def test_a_guest_boots_with_its_identity(self):
        import_dir = os.path.join(self.p.data_dir, "services", "stager", "import")
        wait_until(lambda: os.path.isdir(import_dir), 20, "the stager's import directory")
        subprocess.run([os.path.join(HERE, "build-guest.sh"), import_dir], check=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2",
                        os.path.join(import_dir, "guest.qcow2"), "64M"], check=True)
        r = self.api.call("POST", "/v1/images", {
            "path": "guest.qcow2", "name": "tiny-guest", "os": "busybox", "kernel": "vmlinuz",
            "initrd": "initrd.gz", "cmdline": "console=ttyS0 panic=-1"})
        self.assertEqual(r.status, 201, r)
        image = wait_until(lambda: (lambda im: im if im["state"] in ("READY", "FAILED") else None)(
            self.api.get("/v1/images/tiny-guest")["image"]), 60, "the image stored")
        self.assertEqual((image["state"], image["direct_boot"]),
                         ("READY", {"cmdline": "console=ttyS0 panic=-1"}), image)
        # A kernel without an initrd is refused, naming what is missing.
        r = self.api.call("POST", "/v1/images", {"path": "guest.qcow2", "name": "half",
                                                 "os": "busybox", "kernel": "vmlinuz"})
        self.assertEqual((r.status, r.json()["error"]["details"].get("field")), (400, "initrd"))
        r = self.api.call("POST", "/v1/networks", {
            "name": "lab", "cidr": "10.77.0.0/24", "gateway": "10.77.0.1", "dns": ["10.77.0.1"],
            "libvirt_network": NET})
        self.assertEqual(r.status, 201, r)
        self.api.create_template(name="guest", vcpus=1, ram_mb=256, disk_gb=1, os="busybox",
                                 image="tiny-guest", lease_days=1, requires_approval=False,
                                 network="lab")

        r = self.api.call("POST", "/v1/users", {"username": "gwen", "password": PW})
        self.assertEqual(r.status, 201, r)
        gwen = Api(self.p, "gwen", PW)
        keydir = tempfile.mkdtemp(prefix="berth-e2e-")
        self.addCleanup(shutil.rmtree, keydir, ignore_errors=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gwen@e2e",
                        "-f", os.path.join(keydir, "k")], check=True)
        with open(os.path.join(keydir, "k.pub")) as f:
            r = gwen.call("POST", "/v1/keys", {"name": "laptop", "public_key": f.read().strip()})
        self.assertEqual(r.status, 201, r)

        t0 = time.monotonic()
        r = gwen.call("POST", "/v1/requests", {"template": "guest", "name": "e2e-1",
                                               "ssh_keys": ["laptop"]})
        self.assertEqual(r.status, 202, r)
        vm_id = r.json()["request"]["vms"][0]["id"]
        vm = gwen.wait_vm(vm_id, ("ACTIVE", "ERROR"), timeout=180)
        self.assertEqual((vm["state"], vm["power_state"]), ("ACTIVE", "RUNNING"), vm)
        active_s = time.monotonic() - t0

        xml = virsh("dumpxml", vm_id).stdout
        self.assertIn("<type arch='x86_64' machine=", xml)
        self.assertIn("type='qemu'", xml)  # software emulation, never kvm
        log = re.search(r"<log file='([^']+)'", xml).group(1)

        def console():
            try:
                with open(log, errors="replace") as f:
                    text = f.read()
            except OSError:
                return None
            return text if "BERTH-GUEST done" in text else None
        text = wait_until(console, 240, "the guest's console says it is done")
        booted_s = time.monotonic() - t0
        lines = dict(re.findall(r"BERTH-GUEST ([a-z-]+): ?(.*?)\r?$", text, re.M))
        print("\n".join(line for line in text.splitlines() if "BERTH-GUEST" in line))
        print("ACTIVE after %.1f s, the guest's lines after %.1f s" % (active_s, booted_s))
        self.assertEqual(lines["instance-id"], vm_id)
        self.assertEqual(lines["hostname"], "e2e-1")
        self.assertEqual(lines["ssh-key-comment"], "gwen@e2e")
        shown = gwen.vm(vm_id)
        self.assertEqual([k["name"] for k in shown["ssh_keys"]], ["laptop"])
        self.assertEqual(lines["address"], shown["network"]["ip"] + "/24")
        self.assertIn("<mac address='%s'/>" % shown["network"]["mac"], xml)
        self.assertIn("<source network='%s'" % NET, xml)

        gwen.dispose(vm_id)
        gwen.wait_vm(vm_id, ("DISPOSED",), timeout=120)
        self.assertNotIn(vm_id, virsh("list", "--all", "--name").stdout)

    def test_b_a_pooled_guest_becomes_the_vm_asked_for(self):
        r = self.api.call("PUT", "/v1/templates/guest/pool", {"size": 1})
        self.assertEqual(r.status, 200, r)
        pooled = r.json()["pool"]["vms"][0]
        wait_until(lambda: self.api.get("/v1/templates/guest/pool")["pool"]["ready"] == 1, 240,
                   "the guest built for the pool")
        self.assertRegex(virsh("dominfo", pooled).stdout, r"Managed save:\s+yes")
        self.assertEqual(self.api.vm(pooled)["power_state"], "STOPPED")
        # It booted as the pool's VM before it was saved: its id, the pool's hostname.
        log = re.search(r"<log file='([^']+)'", virsh("dumpxml", pooled).stdout).group(1)
        with open(log, errors="replace") as f:
            before = dict(re.findall(r"BERTH-GUEST ([a-z-]+): ?(.*?)\r?$", f.read(), re.M))
        self.assertEqual((before.get("instance-id"), before.get("hostname")),
                         (pooled, "pool-" + pooled[:8]), before)

        gwen = Api(self.p, "gwen", PW)
        t0 = time.monotonic()
        r = gwen.call("POST", "/v1/requests", {"template": "guest", "name": "e2e-pooled",
                                               "ssh_keys": ["laptop"]})
        self.assertEqual(r.status, 202, r)
        vm_id = r.json()["request"]["vms"][0]["id"]
        self.assertEqual(vm_id, pooled)  # the id it was built with: domain and instance-id
        vm = gwen.wait_vm(vm_id, ("ACTIVE", "ERROR"), timeout=180)
        self.assertEqual((vm["state"], vm["power_state"], vm["from_pool"]),
                         ("ACTIVE", "RUNNING", True), vm)
        self.assertTrue(gwen.task(vm["task"])["from_pool"])
        active_s = time.monotonic() - t0

        def relearned():
            try:
                with open(log, errors="replace") as f:
                    text = f.read()
            except OSError:
                return None
            # What it printed after it read its seed again (the last lines win).
            lines = dict(re.findall(r"BERTH-GUEST ([a-z-]+): ?(.*?)\r?$", text, re.M))
            done = "BERTH-GUEST reread" in text and text.rstrip().endswith("BERTH-GUEST done")
            return (text, lines) if done and lines.get("hostname") == "e2e-pooled" else None
        text, lines = wait_until(relearned, 240, "the resumed guest saying it is e2e-pooled")
        print("\n".join(line for line in text.splitlines() if "BERTH-GUEST" in line))
        print("pooled guest ACTIVE after %.1f s, its new lines after %.1f s"
              % (active_s, time.monotonic() - t0))
        self.assertEqual(lines["instance-id"], vm_id)
        self.assertEqual(lines["ssh-key-comment"], "gwen@e2e")
        self.assertEqual(lines["address"], gwen.vm(vm_id)["network"]["ip"] + "/24")
        gwen.dispose(vm_id)
        gwen.wait_vm(vm_id, ("DISPOSED",), timeout=120)
        self.assertNotIn(vm_id, virsh("list", "--all", "--name").stdout)


if __name__ == "__main__":
    unittest.main()
