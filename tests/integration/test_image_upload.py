#!/usr/bin/env python3
"""Model images uploaded over HTTP (POST /v1/images, Content-Type: application/octet-stream,
the metadata in query parameters), with every service and one simulated host:

- a qcow2 of a few MB, sent in chunks of 64 KiB to the stager, ends READY at once (201) with
  the file's own sha256 and size, is listed, and the store's file is the file sent;
- refused with nothing stored (no record, no file in the store nor in its uploads): a qcow2
  whose header names a backing file (/etc/passwd), a raw file (a format not accepted), each
  400 naming `file` with the reason;
- refused before the body is read (the request's headers alone get the answer): a file over
  the gateway's image_upload_max_bytes (413 with details.max), a member's upload (403), a
  name taken (409), no Content-Length (400);
- a connection broken mid-upload leaves nothing behind at the stager; nor does a gateway
  killed mid-upload, once the stager's upload_idle_ms (2 s here) has passed;
- each application's need (`applications=nginx=1.22;ram=256;disk=1,...`) is stored and shown;
  a malformed one (a bad number, over its limit, an unknown or repeated key) is a 400 naming
  `applications` before the body is read;
- `berth image import --file` streams a file and shows the image, with the needs --apps
  states, and a malformed need is the gateway's refusal.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_image_upload.py
"""

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import Api, PlatformCase, wait_until  # noqa: E402

META = {"os": "debian", "os_version": "12", "arch": "x86_64",
        "applications": "nginx=1.22,postgresql=15", "min_ram_mb": "512", "min_disk_gb": "2"}
LIMIT = 8 * 1024 * 1024


class ImageUpload(PlatformCase):
    agents = 1
    platform_env = {"BERTH_IMAGE_UPLOAD_MAX_BYTES": str(LIMIT),
                    "BERTH_IMAGE_UPLOAD_CHUNK_BYTES": "65536",
                    "BERTH_UPLOAD_IDLE_MS": "2000"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        stager = os.path.join(cls.p.data_dir, "services", "stager")
        cls.images_dir = os.path.join(stager, "images")
        cls.uploads_dir = os.path.join(cls.images_dir, "uploads")
        wait_until(lambda: os.path.isdir(cls.uploads_dir), 20, "the stager's uploads directory")
        cls.member = cls.api.create_user("uma", "member-password-1")
        cls.tmp = tempfile.mkdtemp(prefix="berth-upload-")
        cls.home = tempfile.mkdtemp(prefix="berth-cli-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        shutil.rmtree(cls.home, ignore_errors=True)
        super().tearDownClass()

    def file(self, name, *create, data_mb=0):
        """A file made by qemu-img create (and data_mb MB written into it by qemu-io)."""
        path = os.path.join(self.tmp, name)
        subprocess.run(["qemu-img", "create", "-q"] + list(create[:-1]) + [path, create[-1]],
                       check=True)
        if data_mb:
            subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x3c 0 %dM" % data_mb,
                            path], check=True, capture_output=True)
        return path

    def stored(self):
        keys = set(self.p.redis_command("KEYS", "berth:image*"))
        return keys, sorted(os.listdir(self.images_dir)), sorted(os.listdir(self.uploads_dir))

    def query(self, name, **meta):
        return "/v1/images?" + urllib.parse.urlencode(dict(META, name=name, **meta))

    def upload(self, api, path, name, **meta):
        with open(path, "rb") as f:
            data = f.read()
        return api.call("POST", self.query(name, **meta), data,
                        headers={"Content-Type": "application/octet-stream"})

    def headers_only(self, token, name, length, **meta):
        """Send the request's headers only (no byte of the body): the answer, or None when
        the gateway waits for the body."""
        conn = http.client.HTTPConnection("127.0.0.1", self.p.http_port, timeout=5)
        conn.putrequest("POST", self.query(name, **meta))
        conn.putheader("Authorization", "Bearer " + token)
        conn.putheader("Content-Type", "application/octet-stream")
        if length is not None:
            conn.putheader("Content-Length", str(length))
        conn.endheaders()
        try:
            r = conn.getresponse()
            return r.status, json.loads(r.read() or b"{}")
        except socket.timeout:
            return None
        finally:
            conn.close()

    def test_a_upload(self):
        path = self.file("good.qcow2", "-f", "qcow2", "64M", data_mb=3)
        with open(path, "rb") as f:
            data = f.read()
        self.assertGreater(len(data), 3 * 1024 * 1024)
        r = self.upload(self.api, path, "up-good")
        self.assertEqual(r.status, 201, r)
        image = r.json()["image"]
        self.assertEqual(r.headers.get("Location"), "/v1/images/" + image["id"])
        self.assertEqual((image["name"], image["state"], image["format"], image["kind"]),
                         ("up-good", "READY", "qcow2", "model"))
        self.assertEqual(image["sha256"], hashlib.sha256(data).hexdigest())
        self.assertEqual(image["size_bytes"], len(data))
        self.assertEqual(image["applications"], [{"name": "nginx", "version": "1.22"},
                                                 {"name": "postgresql", "version": "15"}])
        self.assertEqual((image["min_ram_mb"], image["min_disk_gb"]), (512, 2))
        names = [im["name"] for im in self.api.get("/v1/images")["images"]]
        self.assertIn("up-good", names)
        with open(os.path.join(self.images_dir, image["id"] + ".qcow2"), "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), image["sha256"])
        self.assertEqual(os.listdir(self.uploads_dir), [])

    def assert_refused(self, path, name, reason):
        before = self.stored()
        r = self.upload(self.api, path, name)
        self.assertEqual(r.status, 400, r)
        err = r.json()["error"]
        self.assertEqual((err["details"]["field"], err["details"]["reason"]), ("file", reason),
                         err)
        self.assertEqual(self.stored(), before)
        self.assertEqual(self.api.call("GET", "/v1/images/" + name).status, 404)

    def test_b_backing_file_refused(self):
        path = self.file("backed.qcow2", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw",
                         "1M")
        self.assert_refused(path, "up-backed", "backing_file")

    def test_c_wrong_format_refused(self):
        path = os.path.join(self.tmp, "plain.raw")
        with open(path, "wb") as f:
            f.write(os.urandom(300 * 1024))
        self.assert_refused(path, "up-raw", "format")

    def test_d_refused_before_the_body(self):
        before = self.stored()
        status, body = self.headers_only(self.api.token, "up-big", LIMIT + 1)
        self.assertEqual(status, 413, body)
        self.assertEqual(body["error"]["details"]["max"], LIMIT)
        status, body = self.headers_only(self.member.token, "up-member", 1024)
        self.assertEqual(status, 403, body)
        status, body = self.headers_only(self.api.token, "debian-12", 1024)
        self.assertEqual(status, 409, body)
        self.assertEqual(body["error"]["details"]["field"], "name")
        status, body = self.headers_only(self.api.token, "up-nolength", None)
        self.assertEqual(status, 400, body)
        self.assertEqual(body["error"]["details"]["field"], "Content-Length")
        status, body = self.headers_only(self.api.token, "UP bad", 1024)
        self.assertEqual(status, 400, body)
        self.assertEqual(body["error"]["details"]["field"], "name")
        # A JSON import takes its metadata in its body, not in query parameters.
        r = self.api.call("POST", "/v1/images?name=up-json",
                          {"path": "x.qcow2", "name": "up-json", "os": "debian"})
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json()["error"]["details"]["field"], "name")
        self.assertEqual(self.stored(), before)

    def test_e_broken_connection_leaves_nothing(self):
        before = self.stored()
        path = self.file("cut.qcow2", "-f", "qcow2", "64M", data_mb=4)
        with open(path, "rb") as f:
            data = f.read()
        conn = http.client.HTTPConnection("127.0.0.1", self.p.http_port, timeout=10)
        conn.putrequest("POST", self.query("up-cut"))
        conn.putheader("Authorization", "Bearer " + self.api.token)
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(len(data)))
        conn.endheaders()
        conn.send(data[:len(data) // 2])
        # The stager holds part of it...
        wait_until(lambda: any(f.endswith(".part") and
                               os.path.getsize(os.path.join(self.uploads_dir, f)) > 0
                               for f in os.listdir(self.uploads_dir)), 20, "part of the upload")
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
        # ...and nothing once the connection is gone.
        wait_until(lambda: self.stored() == before, 30, "the cut upload dropped")
        self.assertEqual(self.api.call("GET", "/v1/images/up-cut").status, 404)

    def start_upload(self, name, data_mb):
        """An upload sent half-way, the stager holding part of it: its connection."""
        path = self.file(name + ".qcow2", "-f", "qcow2", "64M", data_mb=data_mb)
        with open(path, "rb") as f:
            data = f.read()
        conn = http.client.HTTPConnection("127.0.0.1", self.p.http_port, timeout=10)
        conn.putrequest("POST", self.query(name))
        conn.putheader("Authorization", "Bearer " + self.api.token)
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(len(data)))
        conn.endheaders()
        conn.send(data[:len(data) // 2])
        wait_until(lambda: any(f.endswith(".part") and
                               os.path.getsize(os.path.join(self.uploads_dir, f)) > 0
                               for f in os.listdir(self.uploads_dir)), 20, "part of the upload")
        return conn

    def test_h_application_needs(self):
        """Each application's need, stated in the applications query parameter
        (NAME[=VERSION][;ram=MB][;disk=GB]), is stored and shown; a malformed one is a 400
        naming applications before a byte of the body is read, and nothing is stored."""
        path = self.file("needs.qcow2", "-f", "qcow2", "16M")
        r = self.upload(self.api, path, "up-needs",
                        applications="nginx=1:1.22.1-9+deb12u1~bpo;ram=256;disk=1,"
                                     "postgresql=15;disk=5,redis")
        self.assertEqual(r.status, 201, r)
        image = self.api.get("/v1/images/" + r.json()["image"]["id"])["image"]
        self.assertEqual(image["applications"], [
            {"name": "nginx", "version": "1:1.22.1-9+deb12u1~bpo", "min_ram_mb": 256,
             "min_disk_gb": 1},
            {"name": "postgresql", "version": "15", "min_disk_gb": 5},
            {"name": "redis", "version": None}])
        before = self.stored()
        for apps, says in (("nginx=1.22;ram=lots", "ram must be a whole number of MB"),
                           ("nginx=1.22;ram=4194305", "0 to 4194304"),
                           ("nginx=1.22;disk=65537", "0 to 65536"),
                           ("nginx=1.22;cpu=2", "unknown key 'cpu'"),
                           ("nginx=1.22;ram=1;ram=2", "ram given twice"),
                           ("nginx,,redis", "item 2 has no name")):
            status, body = self.headers_only(self.api.token, "up-bad-needs", 1024,
                                             applications=apps)
            self.assertEqual(status, 400, (apps, body))
            err = body["error"]
            self.assertEqual(err["details"]["field"], "applications", (apps, err))
            self.assertIn(says, err["message"], apps)
        self.assertEqual(self.stored(), before)
        self.assertEqual(self.api.call("GET", "/v1/images/up-bad-needs").status, 404)

    def test_g_gateway_killed_mid_upload(self):
        before = self.stored()
        conn = self.start_upload("up-orphan", 4)
        gateway = [p for p in self.p.procs if p.service == "gateway" and p.alive()][0]
        gateway.kill(signal.SIGKILL)
        gateway.wait(10)
        conn.close()
        # The stager drops what it held once nothing came for upload_idle_ms.
        wait_until(lambda: self.stored() == before, 30, "the orphaned upload dropped")
        self.p.restart(gateway)
        self.p.wait_http("/readyz", timeout=30)
        self.assertEqual(self.api.call("GET", "/v1/images/up-orphan").status, 404)

    def test_f_cli(self):
        path = self.file("cli.qcow2", "-f", "qcow2", "64M", data_mb=1)
        with open(path, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        env.update({"BERTH_URL": self.p.url, "XDG_CONFIG_HOME": self.home, "HOME": self.home})

        def berth(*args, rc=0):
            r = subprocess.run([self.p.binary("berth")] + list(args), env=env,
                               capture_output=True, text=True, timeout=60,
                               input=self.p.admin_password + "\n")
            self.assertEqual(r.returncode, rc, "berth %s: %s %s" % (args, r.stdout, r.stderr))
            return r.stdout + r.stderr
        berth("login", self.p.admin_user, "--password-stdin")
        image = json.loads(berth("-o", "json", "image", "import", "--file", path, "--name",
                                 "up-cli", "--os", "debian", "--os-version", "12",
                                 "--apps", "nginx=1.22"))["image"]
        self.assertEqual((image["name"], image["state"], image["sha256"]),
                         ("up-cli", "READY", sha))
        self.assertEqual(image["applications"], [{"name": "nginx", "version": "1.22"}])
        # Each application's need given with --apps goes with the upload and shows.
        made = json.loads(berth("-o", "json", "image", "import", "--file", path, "--name",
                                "up-cli-needs", "--os", "debian", "--apps",
                                "nginx=1.22;ram=256;disk=1,redis=7;ram=128"))["image"]
        self.assertEqual(self.api.get("/v1/images/" + made["id"])["image"]["applications"],
                         [{"name": "nginx", "version": "1.22", "min_ram_mb": 256,
                           "min_disk_gb": 1},
                          {"name": "redis", "version": "7", "min_ram_mb": 128}])
        shown = berth("image", "show", "up-cli-needs")
        self.assertIn("nginx 1.22 (256 MB RAM, 1 GB disk), redis 7 (128 MB RAM)", shown)
        self.assertIn("nginx 1.22 (256 MB RAM, 1 GB disk)", berth("images"))
        # A malformed need is the gateway's 400 naming applications; nothing is made.
        out = berth("image", "import", "--file", path, "--name", "up-cli-bad", "--os",
                    "debian", "--apps", "nginx=1.22;ram=lots", rc=1)
        self.assertIn("field: applications", out)
        self.assertIn("ram must be a whole number of MB", out)
        self.assertEqual(self.api.call("GET", "/v1/images/up-cli-bad").status, 404)
        # A refusal is the server's word, naming the file.
        backed = self.file("cli-backed.qcow2", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw",
                           "1M")
        out = berth("image", "import", "--file", backed, "--name", "up-cli-backed", "--os",
                    "debian", rc=1)
        self.assertIn("backing_file", out)
        self.assertIn("field: file", out)
        # --file and a stager path do not go together.
        berth("image", "import", "x.qcow2", "--file", path, "--name", "n", "--os", "o", rc=2)


if __name__ == "__main__":
    unittest.main()
