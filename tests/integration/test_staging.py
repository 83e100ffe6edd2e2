#!/usr/bin/env python3
"""Staged images through the REST API and the CLI (the stager's sysprep = manifest, the
simulated path), with every service and one simulated host:

- a model imported with a manifest holding a machine-id, SSH host keys, logs, a persistent
  net rule, a DHCP lease and a HWADDR line is staged (202, STAGING); polled to READY, its
  stage and percent are seen moving (COPY, SYSPREP, CONVERT, CHECKSUM); the staged image's
  manifest has an empty machine-id, no SSH host key, no log, no net rule, no lease and no
  HWADDR, and keeps the rest; its file is a qcow2 of its own whose sha256 is the record's;
- GET /v1/images?kind= lists each kind; a member may read but not stage (403); a staged image
  cannot be staged again; a bad manifest is refused at import naming `manifest`;
- the model cannot be deleted while a staged image of it exists (409 naming it);
- a VM from a template of the model is built from the staged image (the VM says which, its
  stage_image step names it); the staged image cannot be deleted while the VM exists, and can
  once it is disposed; then the model can be deleted;
- `berth image stage REF --wait` prints the stages and ends READY; `berth images` shows the
  kind and the model;
- the scheduler chooses the staged image when it places a VM (StagedChoice): of two staged
  images of a template's model the newest, recorded in the VM and built from; a host caching
  that staged image's file is preferred to an equal one that does not; with the newest
  deleted, the next VM records the other one; chosen on a stale catalog and deleted before
  the build stages it, the attempt fails over and the next chooses the other (StaleChoice);
  a custom build keeps the image its verdict chose (its model) though a staged image of it
  turned READY before it was placed, while a template of that model gets the staged one;
- on one host (StaleChoiceOneHost), the attempt whose image was refused does not exclude the
  host: the VM is built there from the other staged image, its first stage_image step saying
  the stager refused the deleted one; with max_attempts 1 (StaleChoiceOneAttempt) that
  refusal ends the VM in ERROR, its fault saying so.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_staging.py
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import PlatformCase, wait_until  # noqa: E402

META = {"os": "debian", "os_version": "12", "arch": "x86_64", "min_ram_mb": 256,
        "min_disk_gb": 1}

MANIFEST = {"files": [
    {"path": "/etc/machine-id", "content": "4f1c2b3a9d8e7f60112233445566778899\n"},
    {"path": "/var/lib/dbus/machine-id", "content": "4f1c2b3a9d8e7f60112233445566778899\n"},
    {"path": "/etc/ssh/ssh_host_ed25519_key",
     "content": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"},
    {"path": "/etc/ssh/ssh_host_ed25519_key.pub", "content": "ssh-ed25519 AAAAC3Nza root@web\n"},
    {"path": "/etc/ssh/ssh_host_rsa_key", "content": "-----BEGIN RSA PRIVATE KEY-----\n"},
    {"path": "/etc/ssh/ssh_host_rsa_key.pub", "content": "ssh-rsa AAAAB3Nza root@web\n"},
    {"path": "/etc/ssh/sshd_config", "content": "PermitRootLogin no\n"},
    {"path": "/var/log/syslog", "content": "Dec  6 web-1 dhclient: bound to 10.0.0.7\n"},
    {"path": "/var/log/apt/history.log", "content": "Install: nginx\n"},
    {"path": "/etc/udev/rules.d/70-persistent-net.rules",
     "content": 'SUBSYSTEM=="net", ATTR{address}=="52:54:00:12:34:56", NAME="eth0"\n'},
    {"path": "/var/lib/dhcp/dhclient.eth0.leases", "content": "lease { fixed-address 10.0.0.7; }\n"},
    {"path": "/etc/sysconfig/network-scripts/ifcfg-eth0",
     "content": "DEVICE=eth0\nHWADDR=52:54:00:12:34:56\nBOOTPROTO=dhcp\n"},
    {"path": "/etc/hostname", "content": "web-1\n"},
    {"path": "/usr/sbin/nginx"},
]}


class Staging(PlatformCase):
    agents = 1
    wait_hosts = 1
    # Stages and percents written often, so a poll sees them move on a small image.
    platform_env = {"BERTH_STAGE_REPORT_MS": "20"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        stager = os.path.join(cls.p.data_dir, "services", "stager")
        cls.import_dir = os.path.join(stager, "import")
        cls.images_dir = os.path.join(stager, "images")
        wait_until(lambda: os.path.isdir(cls.import_dir), 20, "the stager's import directory")
        cls.member = cls.api.create_user("mel", "member-password-1")

    def model(self, name, manifest=MANIFEST, mb=48):
        """Import a model image of mb MiB of random data (so each stage takes a moment)."""
        raw = os.path.join(self.import_dir, name + ".raw")
        with open(raw, "wb") as f:
            f.write(os.urandom(mb * 1024 * 1024))
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw,
                        os.path.join(self.import_dir, name + ".qcow2")], check=True)
        os.unlink(raw)
        body = dict(META, path=name + ".qcow2", name=name)
        if manifest is not None:
            body["manifest"] = manifest
        r = self.api.call("POST", "/v1/images", body)
        self.assertEqual(r.status, 201, r)
        image = wait_until(lambda: (lambda im: im if im["state"] != "IMPORTING" else None)(
            self.api.get("/v1/images/" + name)["image"]), 60, "model imported")
        self.assertEqual(image["state"], "READY", image)
        return image

    def watch(self, image_id, timeout=120):
        """Poll the staged image until it is READY or FAILED: it, and the (stage, percent)
        pairs seen while it was STAGING."""
        seen = []

        def ended():
            im = self.api.get("/v1/images/" + image_id)["image"]
            if im["state"] == "STAGING" and (not seen or seen[-1] != (im["stage"], im["percent"])):
                seen.append((im["stage"], im["percent"]))
            return im if im["state"] in ("READY", "FAILED") else None
        # Asked often: the stages go by in well under a second each.
        im = wait_until(ended, timeout, "image %s out of STAGING" % image_id, interval=0.01)
        return im, seen

    def test_stage_a_model(self):
        model = self.model("web-model")
        self.assertEqual((model["kind"], model["model"]), ("model", None))
        self.assertEqual(model["manifest"], MANIFEST)

        # A member may not stage; an admin may.
        self.assertEqual(self.member.call("POST", "/v1/images/web-model/stage").status, 403)
        r = self.api.call("POST", "/v1/images/web-model/stage")
        self.assertEqual(r.status, 202, r)
        staged = r.json()["image"]
        self.assertEqual(r.headers.get("Location"), "/v1/images/" + staged["id"])
        self.assertEqual((staged["kind"], staged["model"], staged["state"]),
                         ("staged", model["id"], "STAGING"))
        self.assertTrue(staged["name"].startswith("web-model-staged-"), staged)
        self.assertEqual(staged["os"], "debian")

        staged, seen = self.watch(staged["id"])
        self.assertEqual(staged["state"], "READY", staged)
        # The stages were seen in order, with percents, while it ran.
        order = ["COPY", "SYSPREP", "CONVERT", "CHECKSUM"]
        stages = [s for s, _ in seen]
        self.assertTrue(stages, "no stage seen while STAGING")
        self.assertEqual(stages, sorted(stages, key=order.index), seen)
        self.assertGreaterEqual(len(seen), 2, seen)
        self.assertTrue(all(0 <= p <= 100 for _, p in seen), seen)
        self.assertEqual((staged["stage"], staged["percent"]), (None, 100))

        # Its identity is gone from its manifest; the rest is kept.
        files = {f["path"]: f.get("content") for f in staged["manifest"]["files"]}
        self.assertEqual(files["/etc/machine-id"], "")
        self.assertNotIn("/var/lib/dbus/machine-id", files)
        self.assertEqual([p for p in files if "ssh_host_" in p], [])
        self.assertEqual([p for p in files if p.startswith("/var/log/")], [])
        self.assertNotIn("/etc/udev/rules.d/70-persistent-net.rules", files)
        self.assertNotIn("/var/lib/dhcp/dhclient.eth0.leases", files)
        self.assertEqual(files["/etc/sysconfig/network-scripts/ifcfg-eth0"],
                         "DEVICE=eth0\nBOOTPROTO=dhcp\n")
        self.assertEqual(files["/etc/ssh/sshd_config"], "PermitRootLogin no\n")
        self.assertEqual(files["/etc/hostname"], "web-1\n")
        self.assertIn("/usr/sbin/nginx", files)
        # What each operation did is on the record.
        self.assertEqual(staged["sysprep"]["method"], "manifest")
        ops = {o["operation"]: o for o in staged["sysprep"]["operations"]}
        self.assertEqual(list(ops), ["machine-id", "ssh-hostkeys", "net-hwaddr",
                                     "udev-persistent-net", "dhcp-client-state", "logfiles"])
        self.assertEqual(ops["machine-id"]["emptied"], ["/etc/machine-id"])
        self.assertEqual(sorted(ops["ssh-hostkeys"]["removed"]),
                         sorted(p for p in (f["path"] for f in MANIFEST["files"])
                                if "ssh_host_" in p))
        self.assertEqual(ops["net-hwaddr"]["edited"], ["/etc/sysconfig/network-scripts/ifcfg-eth0"])
        self.assertEqual(sorted(ops["logfiles"]["removed"]),
                         ["/var/log/apt/history.log", "/var/log/syslog"])

        # Its file: a qcow2 of its own in the store, whose sha256 and size are the record's.
        path = os.path.join(self.images_dir, staged["id"] + ".qcow2")
        with open(path, "rb") as f:
            data = f.read()
        self.assertEqual(hashlib.sha256(data).hexdigest(), staged["sha256"])
        self.assertEqual(len(data), staged["size_bytes"])
        info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", path],
                                         check=True, capture_output=True, text=True).stdout)
        self.assertEqual(info["format"], "qcow2")
        self.assertNotIn("backing-filename", info)
        self.assertEqual(staged["format"], "qcow2")
        # No temporary file of the staging is left.
        self.assertEqual([f for f in os.listdir(self.images_dir) if f.startswith(".stage-")], [])

        # Lists by kind; a list carries no manifest.
        kinds = {}
        for kind in ("model", "staged"):
            kinds[kind] = {i["name"]: i for i in self.member.get("/v1/images?kind=" + kind)["images"]}
        self.assertIn(staged["name"], kinds["staged"])
        self.assertNotIn(staged["name"], kinds["model"])
        self.assertIn("web-model", kinds["model"])
        self.assertTrue(all(i["kind"] == "staged" for i in kinds["staged"].values()))
        self.assertNotIn("manifest", kinds["staged"][staged["name"]])
        r = self.api.call("GET", "/v1/images?kind=other")
        self.assertEqual((r.status, r.json()["error"]["details"]["field"]), (400, "kind"), r)

        # A staged image is not staged again; a missing image is 404.
        self.assertEqual(self.api.call("POST", "/v1/images/%s/stage" % staged["id"]).status, 409)
        self.assertEqual(self.api.call("POST", "/v1/images/no-such/stage").status, 404)

        # The model stays while a staged image of it exists.
        r = self.api.call("DELETE", "/v1/images/web-model")
        self.assertEqual(r.status, 409, r)
        self.assertIn(staged["name"], r.json()["error"]["details"]["staged"])
        self.assertEqual(self.api.get("/v1/images/web-model")["image"]["state"], "READY")

        # A VM from a template of the model is built from the staged image.
        self.api.create_template(name="web-tmpl", vcpus=1, ram_mb=256, disk_gb=2, os="debian",
                                 image="web-model", lease_days=1, requires_approval=False)
        req = self.api.request("web-tmpl", "staged-vm")
        vm = self.api.wait_vm(req["vms"][0]["id"], ("ACTIVE",))
        self.assertEqual(vm["image"], "web-model")
        self.assertEqual(vm["staged_image"], staged["id"])
        task = self.api.task(vm["task"])
        steps = {s["name"]: s["result"] for s in task["steps"]}
        self.assertIn("image %s (qcow2)" % staged["name"], steps["stage_image"])

        # The staged image stays while the VM does; then it goes, and then the model can.
        r = self.api.call("DELETE", "/v1/images/" + staged["id"])
        self.assertEqual(r.status, 409, r)
        self.assertEqual(r.json()["error"]["details"]["vms"], vm["name"])
        self.api.wait_task(self.api.dispose(vm["id"])["id"])
        self.api.wait_vm(vm["id"], ("DISPOSED",))
        r = self.api.call("DELETE", "/v1/images/" + staged["id"])
        self.assertEqual(r.status, 200, r)
        self.assertFalse(os.path.exists(path))

    def test_bad_manifest_is_refused(self):
        before = sorted(os.listdir(self.images_dir))
        subprocess.run(["qemu-img", "create", "-f", "qcow2",
                        os.path.join(self.import_dir, "m.qcow2"), "16M"], check=True,
                       capture_output=True)
        for manifest in ({"files": [{"path": "etc/relative"}]},
                         {"files": [{"path": "/a"}, {"path": "/a"}]},
                         {"files": [{"path": "/a", "mode": 384}]},
                         {"files": "no"},
                         {"files": [{"path": "/f%d" % i} for i in range(257)]}):
            with self.subTest(manifest=str(manifest)[:60]):
                r = self.api.call("POST", "/v1/images",
                                  dict(META, path="m.qcow2", name="bad-manifest",
                                       manifest=manifest))
                self.assertEqual(r.status, 400, r)
                self.assertEqual(r.json()["error"]["details"]["field"], "manifest")
        self.assertEqual(self.api.call("GET", "/v1/images/bad-manifest").status, 404)
        self.assertEqual(sorted(os.listdir(self.images_dir)), before)

    def test_cli_stage_wait(self):
        self.model("cli-model", manifest=None, mb=32)
        home = tempfile.mkdtemp(prefix="berth-cli-")
        self.addCleanup(shutil.rmtree, home, ignore_errors=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        env.update({"BERTH_URL": self.p.url, "XDG_CONFIG_HOME": home, "HOME": home})

        def berth(*args, rc=0):
            r = subprocess.run([self.p.binary("berth")] + list(args), env=env,
                               capture_output=True, text=True, timeout=120,
                               input=self.p.admin_password + "\n")
            self.assertEqual(r.returncode, rc, "berth %s: %s %s" % (args, r.stdout, r.stderr))
            return r.stdout, r.stderr
        berth("login", self.p.admin_user, "--password-stdin")
        out, err = berth("image", "stage", "cli-model", "--wait")
        self.assertIn("READY", out)
        # Its progress as it passes, on stderr (which stages a poll meets depends on speed),
        # ending at 100% READY.
        progress = [ln for ln in err.splitlines() if ln.startswith("stage cli-model-staged-")]
        self.assertTrue(progress, err)
        self.assertRegex(progress[-1], r"100%\s+READY$")
        self.assertTrue(all(re.search(r"(COPY|SYSPREP|CONVERT|CHECKSUM)\s+\d+%\s+STAGING$", ln)
                            for ln in progress[:-1]), progress)
        staged = [i for i in self.api.get("/v1/images?kind=staged")["images"]
                  if i["model"] == self.api.get("/v1/images/cli-model")["image"]["id"]]
        self.assertEqual(len(staged), 1, staged)
        self.assertEqual(staged[0]["state"], "READY")
        # Without a manifest there was nothing to describe: none is made up.
        full = self.api.get("/v1/images/" + staged[0]["id"])["image"]
        self.assertNotIn("manifest", full)
        table, _ = berth("images")
        line = [ln for ln in table.splitlines() if staged[0]["name"] in ln][0]
        self.assertIn("staged", line.split())
        self.assertIn("cli-model", line.split())  # its model, by name
        self.assertEqual(json.loads(berth("images", "--kind", "staged", "-o", "json")[0])["images"],
                         self.api.get("/v1/images?kind=staged")["images"])


class StagedChoice(Staging):
    """The staged image a VM is built from is chosen at placement, on two equal hosts."""
    agents = 2
    wait_hosts = 2
    # Hosts of one size: the weigher's choice between them falls to the cached image. The
    # scheduler reads the hosts and the catalog at each decision, so a host's images and a
    # new staged image count as soon as Redis has them.
    agent_env = {"BERTH_HOST_VCPUS": "8", "BERTH_HOST_RAM_MB": "16384",
                 "BERTH_HOST_DISK_GB": "200"}
    platform_env = {"BERTH_HOST_REFRESH_MS": "0", "BERTH_IMAGE_CACHE_MS": "0"}

    # The Staging tests run once, in their own class.
    test_stage_a_model = test_bad_manifest_is_refused = test_cli_stage_wait = None

    def stage(self, model):
        r = self.api.call("POST", "/v1/images/%s/stage" % model)
        self.assertEqual(r.status, 202, r)
        staged, _ = self.watch(r.json()["image"]["id"])
        self.assertEqual(staged["state"], "READY", staged)
        return staged

    def agent(self, name):
        return [p for p in self.p.procs if p.name == name and p.alive()][0]

    def fetched(self, agent):
        with urllib.request.urlopen(self.p.metrics_url(self.agent(agent)), timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("berth_agent_image_bytes_fetched_total "):
                    return float(line.rsplit(" ", 1)[1])
        return 0.0

    def small_cluster_model(self, name, mb):
        """A model in a qcow2 of 4 KiB clusters: its staged images (qcow2 of the default
        clusters) are other files, with other digests."""
        raw = os.path.join(self.import_dir, name + ".raw")
        with open(raw, "wb") as f:
            f.write(os.urandom(mb * 1024 * 1024))
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o",
                        "cluster_size=4096", raw, os.path.join(self.import_dir, name + ".qcow2")],
                       check=True)
        os.unlink(raw)
        r = self.api.call("POST", "/v1/images", dict(META, path=name + ".qcow2", name=name))
        self.assertEqual(r.status, 201, r)
        image = wait_until(lambda: (lambda im: im if im["state"] != "IMPORTING" else None)(
            self.api.get("/v1/images/" + name)["image"]), 60, "model imported")
        self.assertEqual(image["state"], "READY", image)
        return image

    def test_newest_staged_chosen_at_placement(self):
        model = self.small_cluster_model("pick-model", 8)
        older = self.stage("pick-model")
        newer = self.stage("pick-model")
        self.assertGreater(newer["created"], older["created"])
        self.assertNotEqual(newer["sha256"], model["sha256"])

        # host-2 caches the newest staged image's file (not the model's); host-1, equal
        # otherwise and first by id, caches nothing.
        stored = os.path.join(self.images_dir, newer["id"] + ".qcow2")
        cache = os.path.join(self.p.data_dir, "services", "agent-2", "images")
        os.makedirs(cache, exist_ok=True)
        with open(stored, "rb") as f, open(os.path.join(cache, newer["sha256"]), "wb") as out:
            out.write(f.read())
        self.p.restart(self.agent("agent-2"))
        wait_until(lambda: newer["sha256"] in (self.p.redis_command(
            "HGET", "berth:host:host-2", "images") or ""), 20, "host-2 reports the image")

        self.api.create_template(name="pick-tmpl", vcpus=1, ram_mb=256, disk_gb=2, os="debian",
                                 image="pick-model", lease_days=1, requires_approval=False)
        vm = self.api.wait_vm(self.api.request("pick-tmpl", "pick-1")["vms"][0]["id"],
                              ("ACTIVE",))
        self.assertEqual((vm["image"], vm["staged_image"]), ("pick-model", newer["id"]))
        self.assertEqual(vm["host"], "host-2")
        steps = {s["name"]: s["result"] for s in self.api.task(vm["task"])["steps"]}
        self.assertIn("built from staged image %s (%s)" % (newer["name"], newer["id"]),
                      steps["schedule"])
        self.assertIn("image %s (qcow2)" % newer["name"], steps["stage_image"])
        # Its disk was made on host-2's cached copy of that file: nothing was fetched.
        self.assertEqual(self.fetched("agent-2"), 0)

        # The newest goes (once its VM has); the next VM of the template is built from the
        # other one, and says so.
        self.api.wait_task(self.api.dispose(vm["id"])["id"])
        self.api.wait_vm(vm["id"], ("DISPOSED",))
        r = self.api.call("DELETE", "/v1/images/" + newer["id"])
        self.assertEqual(r.status, 200, r)
        vm = self.api.wait_vm(self.api.request("pick-tmpl", "pick-2")["vms"][0]["id"],
                              ("ACTIVE",))
        self.assertEqual(vm["staged_image"], older["id"])
        steps = {s["name"]: s["result"] for s in self.api.task(vm["task"])["steps"]}
        self.assertIn("image %s (qcow2)" % older["name"], steps["stage_image"])

    def test_custom_build_keeps_its_verdicts_image(self):
        # A custom build of an OS whose only image is a model: its verdict chooses the model.
        # A staged image of it made while the request waits for approval is newer, yet the
        # VM is built from the model, as its verdict said.
        raw = os.path.join(self.import_dir, "keep-model.raw")
        with open(raw, "wb") as f:
            f.write(os.urandom(4 * 1024 * 1024))
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw,
                        os.path.join(self.import_dir, "keep-model.qcow2")], check=True)
        os.unlink(raw)
        r = self.api.call("POST", "/v1/images", dict(META, os="keepos", os_version="1",
                                                     path="keep-model.qcow2", name="keep-model"))
        self.assertEqual(r.status, 201, r)
        wait_until(lambda: self.api.get("/v1/images/keep-model")["image"]["state"] == "READY",
                   60, "keep-model READY")
        r = self.api.call("POST", "/v1/groups", {"name": "keep-gated",
                                                 "approval_policy": "manager"})
        self.assertEqual(r.status, 201, r)
        r = self.api.call("POST", "/v1/groups/keep-gated/members", {"user": "mel",
                                                                     "role": "member"})
        self.assertEqual(r.status, 201, r)
        r = self.member.call("POST", "/v1/requests", {
            "os": "keepos", "vcpus": 1, "ram_mb": 512, "disk_gb": 4, "name": "keep-1",
            "group": "keep-gated"})
        self.assertEqual(r.status, 202, r)
        req = r.json()["request"]
        self.assertEqual(req["state"], "PENDING_APPROVAL", req)
        staged = self.stage("keep-model")
        r = self.api.call("POST", "/v1/requests/%s/approve" % req["id"], {})
        self.assertEqual(r.status, 200, r)
        vm = self.api.wait_vm(req["vms"][0]["id"], ("ACTIVE",))
        self.assertEqual((vm["image"], vm["staged_image"]), ("keep-model", None))
        steps = {s["name"]: s["result"] for s in self.api.task(vm["task"])["steps"]}
        self.assertIn("built from image keep-model", steps["schedule"])
        self.assertIn("image keep-model (qcow2)", steps["stage_image"])
        # A template of the same model, placed now, gets the staged image.
        self.api.create_template(name="keep-tmpl", vcpus=1, ram_mb=256, disk_gb=2, os="keepos",
                                 image="keep-model", lease_days=1, requires_approval=False)
        vm = self.api.wait_vm(self.api.request("keep-tmpl", "keep-2")["vms"][0]["id"],
                              ("ACTIVE",))
        self.assertEqual(vm["staged_image"], staged["id"])


class StaleChoice(StagedChoice):
    """A staged image chosen on a stale catalog and gone by the time the VM is staged: that
    attempt fails over, and the next one chooses again on the catalog as it is then."""
    # The scheduler keeps the catalog it read (a retry reads it again whatever its age).
    platform_env = {"BERTH_HOST_REFRESH_MS": "0", "BERTH_IMAGE_CACHE_MS": "600000"}

    test_newest_staged_chosen_at_placement = test_custom_build_keeps_its_verdicts_image = None

    def test_gone_by_build_time_is_chosen_again(self):
        self.small_cluster_model("gone-model", 4)
        older = self.stage("gone-model")
        newer = self.stage("gone-model")
        self.api.create_template(name="gone-tmpl", vcpus=1, ram_mb=256, disk_gb=2, os="debian",
                                 image="gone-model", lease_days=1, requires_approval=False)
        # A dry run has the scheduler read the catalog, both staged images READY in it.
        r = self.api.call("POST", "/v1/requests?validate_only=true",
                          {"template": "gone-tmpl", "name": "dry"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["image"]["id"], newer["id"], r.json())
        r = self.api.call("DELETE", "/v1/images/" + newer["id"])
        self.assertEqual(r.status, 200, r)

        vm = self.api.wait_vm(self.api.request("gone-tmpl", "gone-1")["vms"][0]["id"],
                              ("ACTIVE",))
        self.assertEqual(vm["staged_image"], older["id"])
        task = self.api.task(vm["task"])
        schedules = [s["result"] for s in task["steps"] if s["name"] == "schedule"]
        self.assertEqual(len(schedules), 2, task["steps"])
        self.assertIn("built from staged image %s" % newer["name"], schedules[0])
        self.assertIn("built from staged image %s" % older["name"], schedules[1])
        staged = [s for s in task["steps"] if s["name"] == "stage_image"]
        self.assertEqual(staged[0]["state"], "FAILED", staged)
        self.assertIn(newer["id"], staged[0]["result"])
        self.assertIn("image %s (qcow2)" % older["name"], staged[-1]["result"])


class StaleChoiceOneHost(StaleChoice):
    """The same on a platform of one host: the attempt failed over for its image leaves that
    host in the running (nothing was wrong with it), so the VM is still built there."""
    agents = 1
    wait_hosts = 1

    test_gone_by_build_time_is_chosen_again = None

    def choose_then_delete(self, model, template):
        """Two staged images of a new model, the newest chosen by a dry run (the scheduler's
        catalog then holds it) and deleted: the older one, and the deleted one."""
        self.small_cluster_model(model, 4)
        older = self.stage(model)
        newer = self.stage(model)
        self.api.create_template(name=template, vcpus=1, ram_mb=256, disk_gb=2, os="debian",
                                 image=model, lease_days=1, requires_approval=False)
        r = self.api.call("POST", "/v1/requests?validate_only=true",
                          {"template": template, "name": "dry"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["image"]["id"], newer["id"], r.json())
        r = self.api.call("DELETE", "/v1/images/" + newer["id"])
        self.assertEqual(r.status, 200, r)
        return older, newer

    def test_refused_image_built_again_on_the_same_host(self):
        older, newer = self.choose_then_delete("one-model", "one-tmpl")
        (host,) = self.api.hosts()
        vm = self.api.wait_vm(self.api.request("one-tmpl", "one-1")["vms"][0]["id"],
                              ("ACTIVE", "ERROR"))
        self.assertEqual(vm["state"], "ACTIVE", vm)
        self.assertEqual(vm["host"], host)
        self.assertEqual(vm["staged_image"], older["id"])
        task = self.api.task(vm["task"])
        self.assertEqual(task["state"], "SUCCEEDED", task)
        schedules = [s for s in task["steps"] if s["name"] == "schedule"]
        self.assertEqual(len(schedules), 2, task["steps"])
        for step in schedules:
            self.assertIn("claimed on host %s" % host, step["result"])
        self.assertIn("built from staged image %s" % newer["name"], schedules[0]["result"])
        self.assertIn("built from staged image %s" % older["name"], schedules[1]["result"])
        staged = [s for s in task["steps"] if s["name"] == "stage_image"]
        self.assertEqual([s["state"] for s in staged], ["FAILED", "SUCCEEDED"], staged)
        self.assertIn("the stager refused image %s" % newer["id"], staged[0]["result"])
        self.assertIn("image %s (qcow2)" % older["name"], staged[1]["result"])
        # The host is not counted among those a build failed on.
        tried = self.p.redis_command("HGET", "berth:task:{%s}" % vm["task"], "tried")
        self.assertNotIn(host, tried or "")


class StaleChoiceOneAttempt(StaleChoiceOneHost):
    """An attempt failed over for its image is one of the task's max_attempts: with one
    attempt allowed, the refusal ends the VM in ERROR, its fault saying why."""
    platform_env = dict(StaleChoiceOneHost.platform_env, BERTH_MAX_ATTEMPTS="1")

    test_refused_image_built_again_on_the_same_host = None

    def test_refused_image_counts_as_an_attempt(self):
        _, newer = self.choose_then_delete("last-model", "last-tmpl")
        vm = self.api.wait_vm(self.api.request("last-tmpl", "last-1")["vms"][0]["id"],
                              ("ACTIVE", "ERROR"))
        self.assertEqual(vm["state"], "ERROR", vm)
        self.assertIn("the stager refused image %s" % newer["id"], vm["fault"])
        task = self.api.task(vm["task"])
        self.assertEqual(task["state"], "FAILED", task)
        self.assertEqual([s["name"] for s in task["steps"]].count("schedule"), 1, task["steps"])


if __name__ == "__main__":
    unittest.main()
