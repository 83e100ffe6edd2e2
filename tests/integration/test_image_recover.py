#!/usr/bin/env python3
"""Images a stager left unfinished when it died are not left so forever:

- kill -9 the stager while it copies a path import (a qcow2 of a few hundred MB, so the copy
  is under way when it dies) and remove the file it imports: once a stager runs again, the
  record ends FAILED (its fault names the stopped stager), never stays IMPORTING, and the
  store keeps no partial file of it (no .import-<id>*, no <id>.*); the FAILED record can
  then be deleted;
- the same with the file left where it was: the import is done again, READY with the
  file's digest, and only its file is in the store;
- the same for a staging killed during its COPY: the staged image ends FAILED and no
  .stage-<id>.* file is left.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_image_recover.py
"""

import hashlib
import os
import signal
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import PlatformCase, wait_until  # noqa: E402

META = {"os": "debian", "os_version": "12", "min_ram_mb": 512, "min_disk_gb": 2}
BIG_MB = 384  # enough that copying it (with its sha256 and fsync) takes a while here


class ImageRecover(PlatformCase):
    agents = 1
    platform_env = {"BERTH_RECOVER_MS": "500"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        stager = os.path.join(cls.p.data_dir, "services", "stager")
        cls.import_dir = os.path.join(stager, "import")
        cls.images_dir = os.path.join(stager, "images")
        wait_until(lambda: os.path.isdir(cls.import_dir), 20, "the stager's import directory")

    def big_qcow2(self, name, mb=BIG_MB):
        """A qcow2 in the import directory holding mb MB of data: its path."""
        path = os.path.join(self.import_dir, name)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path, "4G"], check=True)
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 %dM" % mb, path],
                       check=True, capture_output=True)
        return path

    def stager(self):
        return [p for p in self.p.procs if p.service == "stager" and p.alive()][0]

    def kill_and_restart(self, meanwhile=None):
        """kill -9 the stager, do meanwhile(), start it again."""
        stager = self.stager()
        stager.kill(signal.SIGKILL)
        stager.wait(10)
        if meanwhile:
            meanwhile()
        return self.p.restart(stager)

    def leftovers(self, image_id):
        return [f for f in os.listdir(self.images_dir) if image_id in f]

    def ended(self, image_id, timeout=60):
        return wait_until(
            lambda: (lambda im: im if im["state"] not in ("IMPORTING", "STAGING") else None)(
                self.api.get("/v1/images/" + image_id)["image"]), timeout, "image ended")

    def test_a_import_killed_mid_copy(self):
        # The kill must land while the copy runs: a machine that copies faster than this
        # test can kill gets a file twice as large, up to two more times.
        for attempt in range(3):
            name = "big-a%d" % attempt
            path = self.big_qcow2(name + ".qcow2", BIG_MB << attempt)
            r = self.api.call("POST", "/v1/images", dict(META, path=name + ".qcow2", name=name))
            self.assertEqual(r.status, 201, r)
            image = r.json()["image"]
            self.assertEqual(image["state"], "IMPORTING")
            # The copy is under way: its temporary file exists.
            wait_until(lambda: any(f.startswith(".import-" + image["id"])
                                   for f in os.listdir(self.images_dir)), 30, "the copy started")
            # Its file gone, it cannot be imported again.
            self.kill_and_restart(lambda: os.unlink(path))
            ended = self.ended(image["id"])
            if ended["state"] == "FAILED":
                break
            self.assertEqual(ended["state"], "READY", ended)  # the copy won the race
        self.assertEqual(ended["state"], "FAILED", ended)
        self.assertIn("stopped while the image was being imported", ended["fault"])
        self.assertIn("cannot be imported again", ended["fault"])
        self.assertEqual(self.leftovers(image["id"]), [])
        # Gone for good once deleted; the name is free for another import.
        self.assertEqual(self.api.call("DELETE", "/v1/images/" + name).status, 200)
        self.assertEqual(self.api.call("GET", "/v1/images/" + name).status, 404)

    def test_c_import_taken_over(self):
        """Its file still there, the import killed mid-copy is done again after the restart:
        READY with the file's own digest, no partial file left."""
        path = self.big_qcow2("big-c.qcow2")
        r = self.api.call("POST", "/v1/images", dict(META, path="big-c.qcow2", name="big-c"))
        self.assertEqual(r.status, 201, r)
        image = r.json()["image"]
        wait_until(lambda: any(f.startswith(".import-" + image["id"])
                               for f in os.listdir(self.images_dir)), 30, "the copy started")
        self.kill_and_restart()
        ended = self.ended(image["id"], 120)
        self.assertEqual(ended["state"], "READY", ended)
        with open(path, "rb") as f:
            self.assertEqual(ended["sha256"], hashlib.sha256(f.read()).hexdigest())
        self.assertEqual(ended["size_bytes"], os.path.getsize(path))
        self.assertEqual(self.leftovers(image["id"]), [image["id"] + ".qcow2"])

    def test_b_staging_killed_mid_copy(self):
        self.big_qcow2("big-b.qcow2")
        r = self.api.call("POST", "/v1/images", dict(META, path="big-b.qcow2", name="big-b"))
        self.assertEqual(r.status, 201, r)
        model = self.ended(r.json()["image"]["id"], 120)
        self.assertEqual(model["state"], "READY", model)
        r = self.api.call("POST", "/v1/images/big-b/stage")
        self.assertEqual(r.status, 202, r)
        staged = r.json()["image"]
        wait_until(lambda: any(f.startswith(".stage-" + staged["id"])
                               for f in os.listdir(self.images_dir)), 30, "the staging started")
        self.kill_and_restart()
        ended = self.ended(staged["id"])
        self.assertEqual(ended["state"], "FAILED", ended)
        self.assertIn("stopped while the image was being staged", ended["fault"])
        self.assertEqual(self.leftovers(staged["id"]), [])
        # The model is untouched.
        self.assertEqual(self.api.get("/v1/images/big-b")["image"]["state"], "READY")


if __name__ == "__main__":
    unittest.main()
