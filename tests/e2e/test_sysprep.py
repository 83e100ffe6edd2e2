#!/usr/bin/env python3
"""Staging a real image with virt-sysprep (Debian's libguestfs-tools), end to end: the stager
runs with sysprep = virt-sysprep; libguestfs boots its appliance under QEMU (software
emulation here: LIBGUESTFS_BACKEND_SETTINGS=force_tcg), cached in one directory across runs
so it is built once.

- the test builds a small Linux root filesystem without mounting anything (`mke2fs -d` from a
  directory): /etc/machine-id, SSH host keys, a log, a persistent net rule, a DHCP lease, and
  what libguestfs needs to see an operating system (/etc/os-release, /etc/fstab, /bin);
- converted to qcow2, it is imported (POST /v1/images) and staged (POST /v1/images/{id}/stage);
  the staged image ends READY, its sysprep report naming the operations virt-sysprep performed;
- its file, read back with debugfs: /etc/machine-id is empty, no ssh_host_ key, no log, no net
  rule and no lease is left, the rest is as it was; the model's file still has them all; the
  file's sha256 is the record's.

Run: BERTH_BIN_DIR=build/bin python3 tests/e2e/test_sysprep.py
"""

# ctest: heavy

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from berth_test import PlatformCase, wait_until  # noqa: E402

# libguestfs' appliance, kept between runs: building it takes most of a first run.
CACHE = os.environ.get("BERTH_E2E_GUESTFS_CACHE", "/var/tmp/berth-e2e-guestfs")
MACHINE_ID = "0f1e2d3c4b5a69788796a5b4c3d2e1f0\n"
FILES = {
    "etc/machine-id": MACHINE_ID,
    "etc/ssh/ssh_host_ed25519_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n",
    "etc/ssh/ssh_host_ed25519_key.pub": "ssh-ed25519 AAAAC3Nza root@model\n",
    "etc/ssh/ssh_host_rsa_key": "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n",
    "etc/ssh/sshd_config": "PermitRootLogin no\n",
    "etc/udev/rules.d/70-persistent-net.rules":
        'SUBSYSTEM=="net", ATTR{address}=="52:54:00:12:34:56", NAME="eth0"\n',
    "var/lib/dhcp/dhclient.eth0.leases": "lease { fixed-address 10.0.0.7; }\n",
    "var/log/syslog": "model: dhclient bound to 10.0.0.7\n",
    "etc/os-release": 'ID=debian\nVERSION_ID="12"\nNAME="Debian GNU/Linux"\n',
    "etc/fstab": "# the root filesystem only\n",
    "etc/hosts": "127.0.0.1 localhost\n",
    "etc/hostname": "model\n",
}


def debugfs(image, request):
    """What debugfs prints for request on the ext4 image (read-only)."""
    r = subprocess.run(["debugfs", "-R", request, image], capture_output=True, text=True)
    return r.stdout


def listing(image, directory):
    """The names in directory of the ext4 image."""
    out = debugfs(image, "ls -p " + directory)
    return {f.split("/")[5] for f in out.splitlines() if f.count("/") >= 6} - {".", ".."}


@unittest.skipUnless(shutil.which("virt-sysprep") and shutil.which("debugfs"),
                     "virt-sysprep (libguestfs-tools) and debugfs (e2fsprogs) are needed: "
                     "deploy/install-deps installs them")
class Sysprep(PlatformCase):
    agents = 1
    platform_env = {"BERTH_SYSPREP": "virt-sysprep", "BERTH_SYSPREP_CACHE_DIR": CACHE,
                    "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg",
                    "BERTH_STAGE_TIMEOUT_MS": "600000"}

    def test_virt_sysprep_strips_a_real_image(self):
        work = tempfile.mkdtemp(prefix="berth-sysprep-")
        self.addCleanup(shutil.rmtree, work, ignore_errors=True)
        root = os.path.join(work, "root")
        for d in ("bin", "usr/bin", "var/log", "var/lib/dhcp", "etc/ssh", "etc/udev/rules.d"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        for path, content in FILES.items():
            with open(os.path.join(root, path), "w") as f:
                f.write(content)
        raw = os.path.join(work, "model.raw")
        subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", root, raw, "32M"], check=True)
        import_dir = os.path.join(self.p.data_dir, "services", "stager", "import")
        wait_until(lambda: os.path.isdir(import_dir), 20, "the stager's import directory")
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw,
                        os.path.join(import_dir, "real.qcow2")], check=True)
        r = self.api.call("POST", "/v1/images", {"path": "real.qcow2", "name": "real-model",
                                                 "os": "debian", "os_version": "12"})
        self.assertEqual(r.status, 201, r)
        model = wait_until(lambda: (lambda im: im if im["state"] != "IMPORTING" else None)(
            self.api.get("/v1/images/real-model")["image"]), 60, "model imported")
        self.assertEqual(model["state"], "READY", model)

        started = time.monotonic()
        r = self.api.call("POST", "/v1/images/real-model/stage")
        self.assertEqual(r.status, 202, r)
        staged_id = r.json()["image"]["id"]
        stages = set()

        def ended():
            im = self.api.get("/v1/images/" + staged_id)["image"]
            if im["state"] == "STAGING":
                stages.add(im["stage"])
                return None
            return im
        staged = wait_until(ended, 600, "the staged image READY")
        print("staged with virt-sysprep in %.1f s" % (time.monotonic() - started))
        self.assertEqual(staged["state"], "READY", staged)
        self.assertIn("SYSPREP", stages)  # virt-sysprep takes a while: it was seen
        self.assertEqual(staged["sysprep"]["method"], "virt-sysprep")
        performed = {o["operation"] for o in staged["sysprep"]["operations"] if o["performed"]}
        self.assertEqual(performed, {"machine-id", "ssh-hostkeys", "net-hwaddr",
                                     "udev-persistent-net", "dhcp-client-state", "logfiles"})

        images_dir = os.path.join(self.p.data_dir, "services", "stager", "images")
        path = os.path.join(images_dir, staged_id + ".qcow2")
        with open(path, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), staged["sha256"])
        # Read the staged filesystem back, and the model's, as raw ext4.
        out = os.path.join(work, "staged.raw")
        subprocess.run(["qemu-img", "convert", "-O", "raw", path, out], check=True)
        before = os.path.join(work, "model-again.raw")
        subprocess.run(["qemu-img", "convert", "-O", "raw",
                        os.path.join(images_dir, model["id"] + ".qcow2"), before], check=True)

        self.assertEqual(debugfs(out, "cat /etc/machine-id"), "")
        self.assertEqual([n for n in listing(out, "/etc/ssh") if n.startswith("ssh_host_")], [])
        self.assertEqual(listing(out, "/etc/ssh"), {"sshd_config"})
        self.assertNotIn("syslog", listing(out, "/var/log"))
        self.assertNotIn("70-persistent-net.rules", listing(out, "/etc/udev/rules.d"))
        self.assertNotIn("dhclient.eth0.leases", listing(out, "/var/lib/dhcp"))
        self.assertEqual(debugfs(out, "cat /etc/ssh/sshd_config"), "PermitRootLogin no\n")
        self.assertEqual(debugfs(out, "cat /etc/hostname"), "model\n")
        # The model is untouched.
        self.assertEqual(debugfs(before, "cat /etc/machine-id"), MACHINE_ID)
        self.assertIn("ssh_host_ed25519_key", listing(before, "/etc/ssh"))
        self.assertIn("syslog", listing(before, "/var/log"))


if __name__ == "__main__":
    unittest.main()
