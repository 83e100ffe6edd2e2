#!/usr/bin/env python3
"""Capture (POST /v1/vms/{id}/capture), with every service and two simulated hosts (libvirt
test driver):

- a stopped VM's disk becomes a new model image: the CAPTURE task's stages (snapshot,
  open_upload, upload, register, cleanup) succeed, the image is READY, kind model, its
  sha256 that of the stager's file, captured_from the VM, and neither the host nor the
  stager keeps a capture file or an upload; the VM stays ACTIVE and STOPPED;
- a VM from a template of the captured image goes ACTIVE, its host having fetched the image
  from the stager (it is in no host's cache before);
- a running VM is refused 409 naming its power state; a bad name or one in use 400 naming
  `name`; a user of another group cannot capture the VM (404: they cannot see it);
- an abort during the upload ends the task ABORTED and leaves no image and no partial files
  on the host or the stager;
- an upload cut short by the agent's or the stager's restart resumes from what the stager
  holds, and the image is the VM's disk all the same;
- the CLI: `berth vm capture VM --name NAME --wait` follows the task to its end; a refusal
  exits 1 with the server's message.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_capture.py
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import PlatformCase, wait_until  # noqa: E402

META = {"os": "debian", "os_version": "12", "arch": "x86_64", "min_ram_mb": 256,
        "min_disk_gb": 1}
BIG = 8 * 1024 * 1024  # random bytes in the image whose capture is aborted mid-upload


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Capture(PlatformCase):
    agents = 2
    wait_hosts = 2
    # Small chunks, one in flight: an upload of BIG takes long enough to abort it.
    agent_env = {"BERTH_IMAGE_CHUNK_BYTES": "16384", "BERTH_IMAGE_CREDIT": "1",
                 "BERTH_HOST_VCPUS": "8", "BERTH_HOST_RAM_MB": "4096",
                 "BERTH_HOST_DISK_GB": "1000"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.import_dir = os.path.join(cls.p.data_dir, "services", "stager", "import")
        wait_until(lambda: os.path.isdir(cls.import_dir), 20, "the stager's import directory")
        # A full copy: the agent makes the disk a real qcow2 file in its pool (the test
        # driver keeps an overlay's volume in memory only), so the capture flattens a file
        # of its own, not the base image again.
        cls.api.create_template(name="cap-small", vcpus=1, ram_mb=512, disk_gb=3, os="debian",
                                image="debian-12", lease_days=1, requires_approval=False,
                                disk="full")

    # -- helpers ---------------------------------------------------------------------------

    def stopped_vm(self, template, name):
        r = self.api.call("POST", "/v1/requests", {"template": template, "name": name})
        self.assertEqual(r.status, 202, r)
        vm = self.api.wait_vm(r.json()["request"]["vms"][0]["id"], ("ACTIVE",))
        r = self.api.call("POST", "/v1/vms/%s/actions" % vm["id"], {"action": "stop",
                                                                     "force": True})
        self.assertEqual(r.status, 202, r)
        self.assertEqual(self.api.wait_task(r.json()["task"]["id"])["state"], "SUCCEEDED")
        return self.api.vm(vm["id"])

    def capture(self, vm, name, api=None, **extra):
        return (api or self.api).call("POST", "/v1/vms/%s/capture" % vm["id"],
                                      dict(extra, name=name))

    def image(self, name):
        r = self.api.call("GET", "/v1/images/" + name)
        return r.json()["image"] if r.status == 200 else None

    def leftovers(self):
        """Capture files on every host and uploads at the stager."""
        out = []
        for n in range(1, self.agents + 1):
            d = os.path.join(self.p.data_dir, "services", "agent-%d" % n, "captures")
            out += [os.path.join(d, f) for f in os.listdir(d)] if os.path.isdir(d) else []
        d = os.path.join(self.p.data_dir, "services", "stager", "images", "uploads")
        out += [os.path.join(d, f) for f in os.listdir(d)] if os.path.isdir(d) else []
        return out

    def agent(self, host):
        name = host.replace("host", "agent")
        return [p for p in self.p.procs if p.name == name and p.alive()][0]

    def log_lines(self, proc, msg, offset=0):
        with open(proc.log_path, errors="replace") as f:
            f.seek(offset)
            return [json.loads(line) for line in f if '"msg":"%s"' % msg in line]

    def mid_upload(self, name):
        """A stopped VM of big-t, its capture as name started: the VM, the task id, and the
        stager's partial file once it holds a third of the file."""
        vm = self.stopped_vm("big-t", name + "-vm")
        r = self.capture(vm, name)
        self.assertEqual(r.status, 202, r)
        task_id = r.json()["task"]["id"]
        part = os.path.join(self.p.data_dir, "services", "stager", "images", "uploads",
                            task_id + ".part")
        wait_until(lambda: os.path.exists(part) and os.path.getsize(part) >= BIG // 3, 30,
                   "a third of the capture uploaded")
        return vm, task_id

    def captured(self, task_id, name, vm):
        task = self.api.wait_task(task_id, timeout=90)
        self.assertEqual(task["state"], "SUCCEEDED", task)
        image = self.image(name)
        self.assertEqual((image["state"], image["captured_from"]), ("READY", vm["id"]))
        stored = os.path.join(self.p.data_dir, "services", "stager", "images",
                              image["id"] + ".qcow2")
        self.assertEqual(sha256_file(stored), image["sha256"])
        self.assertEqual(self.leftovers(), [])
        return image

    def cached(self, host):
        d = os.path.join(self.p.data_dir, "services", host.replace("host", "agent"), "images")
        return {n for n in os.listdir(d) if len(n) == 64}

    # -- scenarios -------------------------------------------------------------------------

    def test_a_captured_image_is_ready_and_used(self):
        vm = self.stopped_vm("cap-small", "cap-src")
        r = self.capture(vm, "cap-img", os_version="12.5")
        self.assertEqual(r.status, 202, r)
        task = r.json()["task"]
        self.assertEqual(r.headers["Location"], "/v1/tasks/" + task["id"])
        self.assertEqual((task["kind"], task["image"]), ("CAPTURE", "cap-img"))
        task = self.api.wait_task(task["id"])
        self.assertEqual(task["state"], "SUCCEEDED", task)
        self.assertEqual([s["name"] for s in task["steps"]],
                         ["snapshot", "open_upload", "upload", "register", "cleanup"])
        self.assertTrue(all(s["state"] == "SUCCEEDED" for s in task["steps"]), task)
        image = self.image("cap-img")
        self.assertEqual((image["state"], image["kind"], image["captured_from"]),
                         ("READY", "model", vm["id"]), image)
        self.assertEqual(image["os_version"], "12.5")  # as given
        self.assertEqual(image["os"], self.image("debian-12")["os"])  # from the VM's image
        stored = os.path.join(self.p.data_dir, "services", "stager", "images",
                              image["id"] + ".qcow2")
        self.assertEqual(sha256_file(stored), image["sha256"])
        self.assertEqual(os.path.getsize(stored), image["size_bytes"])
        self.assertEqual(self.leftovers(), [])
        after = self.api.vm(vm["id"])
        self.assertEqual((after["state"], after["power_state"]), ("ACTIVE", "STOPPED"))
        # A VM of the captured image: its host fetches it from the stager.
        self.assertNotEqual(image["sha256"], self.image("debian-12")["sha256"])
        self.assertFalse(any(image["sha256"] in self.cached(h) for h in self.api.hosts()))
        self.api.create_template(name="from-cap", vcpus=1, ram_mb=512, disk_gb=3, os="debian",
                                 image="cap-img", lease_days=1, requires_approval=False)
        r = self.api.call("POST", "/v1/requests", {"template": "from-cap", "name": "cap-use"})
        self.assertEqual(r.status, 202, r)
        used = self.api.wait_vm(r.json()["request"]["vms"][0]["id"], ("ACTIVE",))
        self.assertIn(image["sha256"], self.cached(used["host"]))
        # The name is taken now.
        r = self.capture(vm, "cap-img")
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json()["error"]["details"]["field"], "name")

    def test_b_refusals(self):
        r = self.api.call("POST", "/v1/requests", {"template": "cap-small", "name": "cap-run"})
        vm = self.api.wait_vm(r.json()["request"]["vms"][0]["id"], ("ACTIVE",))
        self.assertEqual(vm["power_state"], "RUNNING")
        r = self.capture(vm, "never")
        self.assertEqual(r.status, 409, r)
        err = r.json()["error"]
        self.assertEqual((err["details"]["state"], err["details"]["power_state"]),
                         ("ACTIVE", "RUNNING"), err)
        self.assertIsNone(self.image("never"))
        for bad in ("Upper", "-dash", "", "x" * 65):
            r = self.capture(vm, bad)
            self.assertEqual(r.status, 400, r)
            self.assertEqual(r.json()["error"]["details"]["field"], "name", r)
        r = self.api.call("POST", "/v1/vms/%s/capture" % vm["id"], {"name": "x", "color": 1})
        self.assertEqual(r.status, 400, r)
        outsider = self.api.create_user("cap-outsider", "outsider-pw-123")
        r = self.capture(vm, "theirs", api=outsider)
        self.assertIn(r.status, (403, 404), r)
        self.assertIsNone(self.image("theirs"))

    def test_c_abort_during_upload_leaves_nothing(self):
        raw = os.path.join(self.import_dir, "big.raw")
        with open(raw, "wb") as f:
            f.write(os.urandom(BIG))
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw,
                        os.path.join(self.import_dir, "big.qcow2")], check=True,
                       capture_output=True)
        os.unlink(raw)
        r = self.api.call("POST", "/v1/images", dict(META, path="big.qcow2", name="big"))
        self.assertEqual(r.status, 201, r)
        wait_until(lambda: (self.image("big") or {}).get("state") == "READY", 30, "big imported")
        self.api.create_template(name="big-t", vcpus=1, ram_mb=512, disk_gb=3, os="debian",
                                 image="big", lease_days=1, requires_approval=False)
        vm = self.stopped_vm("big-t", "cap-big")
        r = self.capture(vm, "cap-aborted")
        self.assertEqual(r.status, 202, r)
        task_id = r.json()["task"]["id"]
        wait_until(lambda: self.api.task(task_id)["stage"] == "upload", 30, "the upload runs")
        r = self.api.call("POST", "/v1/tasks/%s/abort" % task_id)
        self.assertIn(r.status, (200, 202), r)
        task = self.api.wait_task(task_id)
        self.assertEqual(task["state"], "ABORTED", task)
        self.assertIn("drop_upload", [s["name"] for s in task["steps"]])
        self.assertIsNone(self.image("cap-aborted"))
        self.assertEqual(self.leftovers(), [])
        after = self.api.vm(vm["id"])
        self.assertEqual((after["state"], after["power_state"]), ("ACTIVE", "STOPPED"))

    def test_d_killed_agent_resumes_upload(self):
        vm, task_id = self.mid_upload("cap-agent-killed")
        agent = self.agent(vm["host"])
        agent.kill(signal.SIGKILL)
        agent.wait(10)
        offset = os.path.getsize(agent.log_path)
        again = self.p.restart(agent)
        image = self.captured(task_id, "cap-agent-killed", vm)
        done = [d for d in self.log_lines(again, "upload done", offset) if d["upload"] == task_id]
        self.assertTrue(done, "the restarted agent finished the upload")
        # It went on from what the stager held, not from the start.
        self.assertGreater(done[0]["resumed"], 0)
        self.assertEqual(done[0]["bytes"], image["size_bytes"])

    def test_e_stager_restart_mid_upload(self):
        vm, task_id = self.mid_upload("cap-stager-restarted")
        agent = self.agent(vm["host"])
        offset = os.path.getsize(agent.log_path)
        stager = [p for p in self.p.procs if p.service == "stager" and p.alive()][0]
        stager_offset = os.path.getsize(stager.log_path)
        stager = self.p.restart(stager)
        self.captured(task_id, "cap-stager-restarted", vm)
        # The stager went on from the digest it had noted, without reading the bytes back.
        reopened = [d for d in self.log_lines(stager, "upload reopened", stager_offset)
                    if d["upload"] == task_id]
        self.assertEqual(len(reopened), 1, reopened)
        self.assertTrue(reopened[0]["noted"])
        self.assertGreater(reopened[0]["received"], 0)
        self.assertEqual([d for d in self.log_lines(agent, "upload failed", offset)
                          if d["upload"] == task_id], [])

    def test_f_cli(self):
        home = tempfile.mkdtemp(prefix="berth-cli-")
        self.addCleanup(shutil.rmtree, home, ignore_errors=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        env.update({"BERTH_URL": self.p.url, "XDG_CONFIG_HOME": home, "HOME": home})

        def berth(*args, rc=0):
            r = subprocess.run([self.p.binary("berth")] + list(args), env=env,
                               capture_output=True, text=True, timeout=60,
                               input=self.p.admin_password + "\n")
            self.assertEqual(r.returncode, rc, "berth %s: %s %s" % (args, r.stdout, r.stderr))
            return r.stdout + r.stderr
        berth("login", self.p.admin_user, "--password-stdin")
        src = [v for v in self.api.get("/v1/vms")["vms"] if v["name"] == "cap-src"][0]
        out = berth("vm", "capture", src["id"], "--name", "cap-cli", "--wait")
        self.assertIn("image cap-cli captured", out)
        self.assertEqual(self.image("cap-cli")["captured_from"], src["id"])
        running = [v for v in self.api.get("/v1/vms")["vms"] if v["name"] == "cap-run"][0]
        out = berth("vm", "capture", running["id"], "--name", "cap-cli-2", rc=1)
        self.assertIn("RUNNING", out)


if __name__ == "__main__":
    unittest.main()
