#!/usr/bin/env python3
"""Model images through the REST API and the CLI, with every service and one simulated host:

- a good qcow2 (made here with `qemu-img create -f qcow2`) put in the stager's import
  directory is imported (201, IMPORTING), ends READY with its size and sha256, and shows in
  GET /v1/images, GET /v1/images/{id} and `berth images` / `berth image show`;
- imports are refused, naming the field, for a qcow2 with a backing file, a raw file claimed
  as qcow2 (a format the store does not take), an image over the virtual-size limit (set to
  1 GB here) and a path outside the import directory; for each, nothing is stored: the Redis
  keys of images and the store directory are as they were;
- a member (platform role user) cannot import (403); delete works and a second delete is 404,
  and is refused (409) while a template names the image; `berth image import` and
  `berth image delete` do the same; `berth image import --apps` states each application's
  need (NAME=VERSION;ram=MB;disk=GB), shown by `berth image show` and `berth images`, and a
  malformed need is refused before anything is sent.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_images.py
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import Api, PlatformCase, wait_until  # noqa: E402

META = {"os": "debian", "os_version": "12", "arch": "x86_64",
        "applications": [{"name": "nginx", "version": "1.22"}, {"name": "postgresql",
                                                                 "version": "15"}],
        "min_ram_mb": 512, "min_disk_gb": 2}


class Images(PlatformCase):
    agents = 1
    platform_env = {"BERTH_IMPORT_MAX_VIRTUAL_GB": "1"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        stager = os.path.join(cls.p.data_dir, "services", "stager")
        cls.import_dir = os.path.join(stager, "import")
        cls.images_dir = os.path.join(stager, "images")
        wait_until(lambda: os.path.isdir(cls.import_dir), 20, "the stager's import directory")
        cls.member = cls.api.create_user("mia", "member-password-1")

    def qemu_img(self, *args):
        subprocess.run(["qemu-img"] + list(args), check=True, capture_output=True)

    def stored(self):
        """What the store holds: the image keys in Redis and the files of the store."""
        keys = set(self.p.redis_command("KEYS", "berth:image*"))
        return keys, sorted(os.listdir(self.images_dir))

    def import_(self, api, path, name, **meta):
        return api.call("POST", "/v1/images", dict(META, path=path, name=name, **meta))

    def assert_refused(self, path, name, status, field, reason=None):
        before = self.stored()
        r = self.import_(self.api, path, name)
        self.assertEqual(r.status, status, r)
        err = r.json()["error"]
        self.assertEqual(err["details"]["field"], field, err)
        if reason:
            self.assertEqual(err["details"]["reason"], reason, err)
        self.assertEqual(self.stored(), before)
        self.assertEqual(self.api.call("GET", "/v1/images/" + name).status, 404)
        return err

    def wait_ready(self, image_id):
        return wait_until(lambda: (lambda im: im if im["state"] in ("READY", "FAILED") else None)(
            self.api.get("/v1/images/" + image_id)["image"]), 30, "image READY")

    def test_import_list_show_delete(self):
        path = os.path.join(self.import_dir, "good.qcow2")
        self.qemu_img("create", "-f", "qcow2", path, "64M")
        r = self.import_(self.api, "good.qcow2", "web-base")
        self.assertEqual(r.status, 201, r)
        image = r.json()["image"]
        self.assertEqual(image["name"], "web-base")
        self.assertEqual(image["format"], "qcow2")
        self.assertIn(image["state"], ("IMPORTING", "READY"))
        self.assertEqual(r.headers.get("Location"), "/v1/images/" + image["id"])
        image = self.wait_ready(image["id"])
        self.assertEqual(image["state"], "READY", image)
        with open(path, "rb") as f:
            data = f.read()
        self.assertEqual(image["sha256"], hashlib.sha256(data).hexdigest())
        self.assertEqual(image["size_bytes"], len(data))
        for k, v in META.items():
            self.assertEqual(image[k], v, k)
        # A second import of the same name is a conflict naming the field.
        again = self.import_(self.api, "good.qcow2", "web-base")
        self.assertEqual(again.status, 409, again)
        self.assertEqual(again.json()["error"]["details"]["field"], "name")

        # Any signed-in user sees it listed and by id or name.
        listed = {i["name"]: i for i in self.member.get("/v1/images")["images"]}
        self.assertEqual(listed["web-base"], image)
        self.assertEqual(self.member.get("/v1/images/" + image["id"])["image"], image)
        self.assertEqual(self.member.get("/v1/images/web-base")["image"], image)

        # The CLI shows the same.
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
        table = berth("images")
        self.assertIn("web-base", table)
        self.assertIn("READY", table)
        self.assertIn("nginx 1.22", table)
        self.assertEqual(json.loads(berth("images", "-o", "json"))["images"],
                         self.api.get("/v1/images")["images"])
        self.assertEqual(json.loads(berth("image", "show", "web-base", "-o", "json"))["image"],
                         image)
        self.assertIn(image["sha256"], berth("image", "show", image["id"]))

        # berth image import, then delete, through the CLI.
        self.qemu_img("create", "-f", "qcow2", os.path.join(self.import_dir, "cli.qcow2"), "32M")
        out = berth("image", "import", "cli.qcow2", "--name", "cli-base", "--os", "ubuntu",
                    "--os-version", "24.04", "--apps", "redis=5:7.0.15-1~deb12u1;ram=128,"
                    "postgresql=15;ram=768;disk=5", "--min-ram-mb", "256", "--min-disk-gb",
                    "1", "-o", "json")
        made = json.loads(out)["image"]
        self.assertEqual(made["os_version"], "24.04")
        self.assertEqual(self.wait_ready(made["id"])["state"], "READY")
        # Each application's need stated with --apps is the image's.
        self.assertEqual(self.api.get("/v1/images/" + made["id"])["image"]["applications"],
                         [{"name": "redis", "version": "5:7.0.15-1~deb12u1", "min_ram_mb": 128},
                          {"name": "postgresql", "version": "15", "min_ram_mb": 768,
                           "min_disk_gb": 5}])
        self.assertIn("redis 5:7.0.15-1~deb12u1 (128 MB RAM), postgresql 15 (768 MB RAM, "
                      "5 GB disk)", berth("image", "show", "cli-base"))
        self.assertIn("postgresql 15 (768 MB RAM, 5 GB disk)", berth("images"))
        # A malformed need is refused, saying which part, and nothing is imported.
        for apps, says in (("redis=7;ram=lots", "ram must be a whole number of MB"),
                           ("redis=7;disk=65537", "0 to 65536"),
                           ("redis=7;cpus=2", "unknown key 'cpus'")):
            out = berth("image", "import", "cli.qcow2", "--name", "cli-bad", "--os", "ubuntu",
                        "--apps", apps, rc=2)
            self.assertIn("--apps: applications item 1 (redis)", out)
            self.assertIn(says, out)
        self.assertEqual(self.api.call("GET", "/v1/images/cli-bad").status, 404)
        refused = berth("image", "import", "nothere.qcow2", "--name", "x", "--os", "y", rc=1)
        self.assertIn("path", refused)
        berth("image", "delete", "cli-base")
        self.assertEqual(self.api.call("GET", "/v1/images/cli-base").status, 404)

        # A member cannot delete; an admin can, once; the file goes with it.
        self.assertEqual(self.member.call("DELETE", "/v1/images/" + image["id"]).status, 403)
        files = os.listdir(self.images_dir)
        r = self.api.call("DELETE", "/v1/images/" + image["id"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["image"]["id"], image["id"])
        self.assertEqual(self.api.call("GET", "/v1/images/" + image["id"]).status, 404)
        self.assertEqual(self.api.call("DELETE", "/v1/images/" + image["id"]).status, 404)
        self.assertEqual(len(os.listdir(self.images_dir)), len(files) - 1)
        self.assertNotIn("web-base", [i["name"] for i in self.api.get("/v1/images")["images"]])

    def test_delete_refused_while_in_use(self):
        self.qemu_img("create", "-f", "qcow2", os.path.join(self.import_dir, "used.qcow2"), "64M")
        r = self.import_(self.api, "used.qcow2", "in-use")
        self.assertEqual(r.status, 201, r)
        self.assertEqual(self.wait_ready(r.json()["image"]["id"])["state"], "READY")
        self.api.create_template(name="uses-it", vcpus=1, ram_mb=512, disk_gb=10, os="debian",
                                 image="in-use", lease_days=1, requires_approval=False)
        r = self.api.call("DELETE", "/v1/images/in-use")
        self.assertEqual(r.status, 409, r)
        self.assertIn("uses-it", json.dumps(r.json()["error"]["details"]))
        self.assertEqual(self.api.get("/v1/images/in-use")["image"]["state"], "READY")

    def test_template_needs_an_image_and_a_host_it_fits(self):
        """A template is checked when created: its image exists (and is not FAILED), its
        size fits at least one host (capacity times the overcommit ratios); nothing is made
        otherwise."""
        wait_until(lambda: len(self.api.hosts()) == 1, 20, "the host reported")
        base = {"vcpus": 1, "ram_mb": 512, "disk_gb": 10, "os": "debian", "lease_days": 1,
                "requires_approval": False}
        r = self.api.call("POST", "/v1/templates", dict(base, name="ghost", image="no-such"))
        self.assertEqual((r.status, r.json()["error"]["details"].get("field")), (400, "image"), r)
        r = self.api.call("POST", "/v1/templates", dict(base, name="huge", image="debian-12",
                                                          ram_mb=4194304))
        self.assertEqual(r.status, 400, r)
        err = r.json()["error"]
        self.assertEqual(err["details"]["field"], "ram_mb", err)
        self.assertLess(int(err["details"]["max"]), 4194304, err)
        names = [t["name"] for t in self.api.get("/v1/templates")["templates"]]
        self.assertNotIn("ghost", names)
        self.assertNotIn("huge", names)
        r = self.api.call("POST", "/v1/templates", dict(base, name="fits", image="debian-12"))
        self.assertEqual(r.status, 201, r)

    def test_direct_boot_files(self):
        """A direct-boot image: its kernel and initrd are copied into the store beside its
        disk and go with it; both are confined to the import directory, and come together."""
        self.qemu_img("create", "-f", "qcow2", os.path.join(self.import_dir, "boot.qcow2"), "32M")
        for name, data in (("k.bin", b"kernel" * 100), ("i.bin", b"initrd" * 100)):
            with open(os.path.join(self.import_dir, name), "wb") as f:
                f.write(data)
        before = self.stored()
        for extra, field in (({"kernel": "k.bin"}, "initrd"), ({"initrd": "i.bin"}, "kernel"),
                             ({"kernel": "../k.bin", "initrd": "i.bin"}, "kernel"),
                             ({"kernel": "k.bin", "initrd": "nope.bin"}, "initrd"),
                             ({"cmdline": "console=ttyS0"}, "cmdline")):
            with self.subTest(extra=extra):
                r = self.import_(self.api, "boot.qcow2", "booty", **extra)
                self.assertEqual((r.status, r.json()["error"]["details"].get("field")),
                                 (400, field), r)
        self.assertEqual(self.stored(), before)
        r = self.import_(self.api, "boot.qcow2", "booty", kernel="k.bin", initrd="i.bin",
                         cmdline="console=ttyS0 quiet")
        self.assertEqual(r.status, 201, r)
        image = self.wait_ready(r.json()["image"]["id"])
        self.assertEqual(image["direct_boot"], {"cmdline": "console=ttyS0 quiet"})
        files = sorted(os.listdir(self.images_dir))
        self.assertIn(image["id"] + ".kernel", files)
        self.assertIn(image["id"] + ".initrd", files)
        with open(os.path.join(self.images_dir, image["id"] + ".kernel"), "rb") as f:
            self.assertEqual(f.read(), b"kernel" * 100)
        self.assertEqual(self.api.call("DELETE", "/v1/images/booty").status, 200)
        self.assertEqual([f for f in os.listdir(self.images_dir) if f.startswith(image["id"])],
                         [])

    def test_full_copy_disks(self):
        """A template's disk "full": each VM's disk is a copy of the base of its own (a qcow2
        without a backing file, of the template's size) in the agent's pool, not an overlay."""
        wait_until(lambda: len(self.api.hosts()) == 1, 20, "the host reported")
        base = {"vcpus": 1, "ram_mb": 512, "disk_gb": 3, "os": "debian", "image": "debian-12",
                "lease_days": 1, "requires_approval": False}
        r = self.api.call("POST", "/v1/templates", dict(base, name="copied", disk="deep"))
        self.assertEqual((r.status, r.json()["error"]["details"].get("field")), (400, "disk"), r)
        r = self.api.call("POST", "/v1/templates", dict(base, name="copied", disk="full"))
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json()["template"]["disk"], "full")
        r = self.api.call("POST", "/v1/requests", {"template": "copied", "name": "copy-1"})
        self.assertEqual(r.status, 202, r)
        vm = r.json()["request"]["vms"][0]["id"]
        self.api.wait_vm(vm, ("ACTIVE",))
        disk = os.path.join(self.p.data_dir, "services", "agent-1", "pool", vm + ".qcow2")
        info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-U", disk],
                                         check=True, capture_output=True, text=True).stdout)
        self.assertEqual(info["format"], "qcow2")
        self.assertNotIn("backing-filename", info)
        self.assertEqual(info["virtual-size"], 3 * 1024 ** 3)
        self.api.dispose(vm)
        self.api.wait_vm(vm, ("DISPOSED",))
        self.assertFalse(os.path.exists(disk), "the copy outlived its VM")

    def test_template_create_cli(self):
        """berth template create: what the API makes, with the server's refusals."""
        wait_until(lambda: len(self.api.hosts()) == 1, 20, "the host reported")
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
        base = ["--vcpus", "1", "--ram-mb", "512", "--disk-gb", "2", "--os", "debian"]
        out = berth("template", "create", "cli-tpl", *base, "--image", "debian-12", "--disk",
                    "full", "--approval-policy", "manager", "--rebuild-on-loss")
        self.assertRegex(out, r"disk:\s+full")
        made = [t for t in self.api.get("/v1/templates")["templates"] if t["name"] == "cli-tpl"][0]
        self.assertEqual((made["disk"], made["approval_policy"], made["lease_days"],
                          made["rebuild_on_loss"]), ("full", "manager", 30, True))
        err = berth("template", "create", "cli-ghost", *base, "--image", "no-such", rc=1)
        self.assertIn("image", err)
        berth("template", "create", "cli-bad", *base, "--image", "debian-12", "--vcpus", "x",
              rc=2)
        berth("template", "create", "cli-bad", "--vcpus", "1", rc=2)
        names = [t["name"] for t in self.api.get("/v1/templates")["templates"]]
        self.assertNotIn("cli-ghost", names)
        self.assertNotIn("cli-bad", names)

    def test_backing_file_refused(self):
        base = os.path.join(self.import_dir, "base.qcow2")
        self.qemu_img("create", "-f", "qcow2", base, "64M")
        self.qemu_img("create", "-f", "qcow2", "-F", "qcow2", "-b", "/etc/passwd",
                      "-u", os.path.join(self.import_dir, "overlay.qcow2"), "64M")
        err = self.assert_refused("overlay.qcow2", "overlay", 400, "path", "backing_file")
        self.assertIn("backing", err["message"])

    def test_wrong_format_refused(self):
        with open(os.path.join(self.import_dir, "disk.qcow2"), "wb") as f:
            f.write(b"\0" * (1 << 20))  # raw bytes named as if qcow2
        err = self.assert_refused("disk.qcow2", "claimed", 400, "path", "format")
        self.assertIn("raw", err["message"])

    def test_oversize_refused(self):
        self.qemu_img("create", "-f", "qcow2", os.path.join(self.import_dir, "big.qcow2"), "2G")
        self.assert_refused("big.qcow2", "big", 400, "path", "virtual_size")

    def test_outside_import_dir_refused(self):
        outside = os.path.join(self.p.data_dir, "outside.qcow2")
        self.qemu_img("create", "-f", "qcow2", outside, "64M")
        self.assert_refused(outside, "outside-abs", 400, "path")
        self.assert_refused("../../outside.qcow2", "outside-rel", 400, "path")
        link = os.path.join(self.import_dir, "link.qcow2")
        os.symlink(outside, link)
        self.assert_refused("link.qcow2", "outside-link", 400, "path")

    def test_member_cannot_import(self):
        self.qemu_img("create", "-f", "qcow2", os.path.join(self.import_dir, "m.qcow2"), "64M")
        before = self.stored()
        r = self.import_(self.member, "m.qcow2", "members-own")
        self.assertEqual(r.status, 403, r)
        self.assertEqual(self.stored(), before)

    def test_bad_fields_named(self):
        for body, field in (({"name": "Bad Name"}, "name"), ({"os": ""}, "os"),
                            ({"min_ram_mb": -1}, "min_ram_mb"),
                            ({"applications": [{"version": "1"}]}, "applications"),
                            ({"arch": "x" * 65}, "arch")):
            r = self.api.call("POST", "/v1/images", dict(META, path="good.qcow2",
                                                         **dict({"name": "ok"}, **body)))
            self.assertEqual(r.status, 400, (body, r))
            self.assertEqual(r.json()["error"]["details"]["field"], field, body)


if __name__ == "__main__":
    unittest.main(verbosity=2)
