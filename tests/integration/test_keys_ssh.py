#!/usr/bin/env python3
"""SSH keys (issue 12, Network identity and access): users keep SSH public keys on their
account (POST/GET /v1/keys, GET/DELETE /v1/keys/{name}) with the fingerprint ssh-keygen
prints; what is not a key is refused naming the field and nothing is stored; a key is its
owner's alone (another user gets 404) and goes with its user; a user holds at most
ssh_keys_per_user_max keys; a request names keys, and its VM's cloud-init seed installs their
lines (user-data ssh_authorized_keys) with the VM's name as hostname, unchanged when the key
is deleted later; a name the requester has no key for is refused. The CLI does the same
(berth ssh-key ..., berth request --ssh-key).

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_keys_ssh.py
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import PlatformCase, iso_file  # noqa: E402

MAX_KEYS = 3
PW = "ssh-keys-password"


class SshKeys(PlatformCase):
    agents = 1
    wait_hosts = 1
    platform_env = {"BERTH_SSH_KEYS_PER_USER_MAX": str(MAX_KEYS)}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.keydir = tempfile.mkdtemp(prefix="berth-ssh-")
        try:
            cls.ann = cls.api.create_user("ann", PW)
            cls.bob = cls.api.create_user("bob", PW)
            cls.keys = {}
            for name, args in (("ed", ["-t", "ed25519"]), ("rsa", ["-t", "rsa", "-b", "2048"]),
                               ("ec", ["-t", "ecdsa", "-b", "384"]),
                               ("more", ["-t", "ed25519"])):
                path = os.path.join(cls.keydir, name)
                subprocess.run(["ssh-keygen", "-q", "-N", "", "-C", name + "@laptop", "-f", path]
                               + args, check=True)
                with open(path + ".pub") as f:
                    line = f.read()
                printed = subprocess.run(["ssh-keygen", "-lf", path + ".pub"], check=True,
                                         capture_output=True, text=True).stdout.split()[1]
                cls.keys[name] = (line, printed, path + ".pub")
        except Exception:
            cls.p.dump_logs()
            cls.p.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.keydir, ignore_errors=True)
        super().tearDownClass()

    def add(self, api, name, line, status=201):
        r = api.call("POST", "/v1/keys", {"name": name, "public_key": line})
        self.assertEqual(r.status, status, r)
        return r.json()

    def redis_keys(self, user):
        return sorted(self.p.redis_command("KEYS", "berth:*ssh-key*:%s*" % user) or [])

    def seed_path(self, vm_id):
        paths = glob.glob(os.path.join(self.p.data_dir, "services", "agent-*", "**",
                                       vm_id + "-seed.iso"), recursive=True)
        return paths[0] if paths else None

    def test_1_add_list_show_delete(self):
        line, printed, _ = self.keys["ed"]
        made = self.add(self.ann, "laptop", line)["key"]
        # Stored without the file's line end; fingerprinted as ssh-keygen prints it.
        self.assertEqual(made["public_key"], line.strip())
        self.assertEqual(made["fingerprint"], printed)
        self.assertEqual(made["type"], "ssh-ed25519")
        self.assertEqual(made["comment"], "ed@laptop")
        self.assertEqual(made["name"], "laptop")
        listed = self.ann.get("/v1/keys")["keys"]
        self.assertEqual(listed, [made])
        self.assertEqual(self.ann.get("/v1/keys/laptop")["key"], made)
        # The same name again: 409 naming name.
        r = self.ann.call("POST", "/v1/keys", {"name": "laptop", "public_key": line})
        self.assertEqual(r.status, 409, r)
        self.assertEqual(r.json()["error"]["details"]["field"], "name")
        # RSA and ECDSA too.
        for name in ("rsa", "ec"):
            key = self.add(self.ann, "k-" + name, self.keys[name][0])["key"]
            self.assertEqual(key["fingerprint"], self.keys[name][1])
        self.assertEqual([k["name"] for k in self.ann.get("/v1/keys")["keys"]],
                         ["laptop", "k-rsa", "k-ec"])
        # Delete answers the key as it was, then it is gone.
        r = self.ann.call("DELETE", "/v1/keys/k-rsa")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["key"]["name"], "k-rsa")
        self.assertEqual(self.ann.call("GET", "/v1/keys/k-rsa").status, 404)
        self.assertEqual(self.ann.call("DELETE", "/v1/keys/k-rsa").status, 404)
        self.assertNotIn("berth:ssh-key:ann:k-rsa", self.redis_keys("ann"))
        r = self.ann.call("DELETE", "/v1/keys/k-ec")
        self.assertEqual(r.status, 200, r)

    def test_2_bad_keys_are_refused_and_nothing_stored(self):
        before = self.redis_keys("bob")
        line = self.keys["ed"][0].strip()
        kind, blob, _comment = line.split(" ", 2)
        bad = {
            "not a key": ("public_key", "hello world"),
            "unknown type": ("public_key", "ssh-dss " + blob),
            "type and blob disagree": ("public_key", "ssh-rsa " + blob),
            "bad base64": ("public_key", kind + " " + blob[:-3] + "*!*"),
            "cut short": ("public_key", kind + " " + blob[:40]),
            "two keys": ("public_key", line + "\n" + self.keys["more"][0]),
            "private key": ("public_key", "-----BEGIN OPENSSH PRIVATE KEY-----"),
            "bad name": ("name", None),
        }
        for what, (field, text) in bad.items():
            body = {"name": "x", "public_key": text} if text else \
                {"name": "a b/c", "public_key": line}
            r = self.bob.call("POST", "/v1/keys", body)
            self.assertEqual(r.status, 400, (what, r))
            self.assertEqual(r.json()["error"]["details"]["field"], field, what)
        r = self.bob.call("POST", "/v1/keys", {"name": "x", "public_key": "a" * 8193})
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json()["error"]["details"]["field"], "public_key")
        r = self.bob.call("POST", "/v1/keys", {"name": "x" * 65, "public_key": line})
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json()["error"]["details"]["field"], "name")
        self.assertEqual(self.redis_keys("bob"), before)
        self.assertEqual(self.bob.get("/v1/keys")["keys"], [])

    def test_3_keys_are_their_owners_alone(self):
        self.add(self.ann, "private", self.keys["more"][0])
        # bob neither sees, nor reads, nor deletes ann's key; his list is his own.
        self.assertNotIn("private", [k["name"] for k in self.bob.get("/v1/keys")["keys"]])
        self.assertEqual(self.bob.call("GET", "/v1/keys/private").status, 404)
        self.assertEqual(self.bob.call("DELETE", "/v1/keys/private").status, 404)
        self.assertEqual(self.ann.get("/v1/keys/private")["key"]["name"], "private")
        # Nor can he ask for a VM with it.
        r = self.bob.call("POST", "/v1/requests", {"template": "small", "name": "bobs",
                                                   "ssh_keys": ["private"]})
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json()["error"]["details"]["field"], "ssh_keys")
        self.assertEqual(self.ann.call("DELETE", "/v1/keys/private").status, 200)

    def test_4_a_user_holds_at_most_the_limit(self):
        carl = self.api.create_user("carl", PW)
        lines = [self.keys[n][0] for n in ("ed", "rsa", "ec", "more")]
        for i in range(MAX_KEYS):
            self.add(carl, "k%d" % i, lines[i])
        r = carl.call("POST", "/v1/keys", {"name": "one-too-many", "public_key": lines[3]})
        self.assertEqual(r.status, 409, r)
        self.assertEqual(r.json()["error"]["details"]["limit"], "ssh_keys_per_user_max")
        self.assertEqual(len(carl.get("/v1/keys")["keys"]), MAX_KEYS)
        self.assertEqual(carl.call("GET", "/v1/keys/one-too-many").status, 404)
        # Another user's keys do not count; one deleted makes room.
        self.assertEqual(carl.call("DELETE", "/v1/keys/k0").status, 200)
        self.add(carl, "one-more", lines[3])
        # A user deleted takes the keys along: a new carl starts with none.
        self.assertEqual(self.api.call("DELETE", "/v1/users/carl").status, 200)
        self.assertEqual(self.redis_keys("carl"), [])
        carl = self.api.create_user("carl", PW)
        self.assertEqual(carl.get("/v1/keys")["keys"], [])

    def test_5_a_vm_gets_its_keys_and_hostname_in_its_seed(self):
        line, printed, _ = self.keys["rsa"]
        self.add(self.bob, "work", line)
        self.add(self.bob, "spare", self.keys["ec"][0])
        r = self.bob.call("POST", "/v1/requests", {"template": "small", "name": "keyed",
                                                   "ssh_keys": ["work", "spare"]})
        self.assertEqual(r.status, 202, r)
        req = r.json()["request"]
        self.assertEqual([k["name"] for k in req["ssh_keys"]], ["work", "spare"])
        vm_id = req["vms"][0]["id"]
        vm = self.bob.wait_vm(vm_id, ("ACTIVE",))
        self.assertEqual(vm["ssh_keys"], [{"name": "work", "fingerprint": printed},
                                          {"name": "spare",
                                           "fingerprint": self.keys["ec"][1]}])
        seed = self.seed_path(vm_id)
        self.assertIsNotNone(seed, "no seed ISO for the VM on the agent")
        user_data = iso_file(seed, "user-data")
        self.assertTrue(user_data.startswith("#cloud-config\n"), user_data)
        self.assertIn("hostname: keyed\n", user_data)
        self.assertIn("ssh_authorized_keys:\n", user_data)
        self.assertIn("  - '%s'\n" % line.strip(), user_data)
        self.assertIn("  - '%s'\n" % self.keys["ec"][0].strip(), user_data)
        self.assertIn("local-hostname: keyed\n", iso_file(seed, "meta-data"))
        # Deleting the key later leaves the VM as it was asked for.
        self.assertEqual(self.bob.call("DELETE", "/v1/keys/work").status, 200)
        self.assertEqual(self.bob.vm(vm_id)["ssh_keys"][0]["fingerprint"], printed)
        # A name bob has no key for (any more) is refused, naming the field; nothing made.
        before = len(self.bob.get("/v1/vms")["vms"])
        for names in (["work"], ["spare", "spare"], "spare", [7]):
            r = self.bob.call("POST", "/v1/requests", {"template": "small", "name": "nokey",
                                                       "ssh_keys": names})
            self.assertEqual(r.status, 400, (names, r))
            self.assertEqual(r.json()["error"]["details"]["field"], "ssh_keys")
        self.assertEqual(len(self.bob.get("/v1/vms")["vms"]), before)
        # A VM asked for without keys has none, and the default seed.
        plain = self.bob.request("small", "plain")["vms"][0]["id"]
        self.bob.wait_vm(plain, ("ACTIVE",))
        self.assertEqual(self.bob.vm(plain)["ssh_keys"], [])
        self.assertEqual(iso_file(self.seed_path(plain), "user-data"),
                         "#cloud-config\nhostname: plain\n")

    def test_6_cli(self):
        home = tempfile.mkdtemp(prefix="berth-cli-")
        self.addCleanup(shutil.rmtree, home, ignore_errors=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        env.update({"BERTH_URL": self.p.url, "XDG_CONFIG_HOME": home, "HOME": home})

        def berth(*args, rc=0, stdin=PW + "\n"):
            r = subprocess.run([self.p.binary("berth")] + list(args), env=env,
                               capture_output=True, text=True, timeout=60, input=stdin)
            self.assertEqual(r.returncode, rc, "berth %s: %s %s" % (args, r.stdout, r.stderr))
            return r.stdout + r.stderr
        self.api.create_user("dee", PW)
        berth("login", "dee", "--password-stdin")
        line, printed, path = self.keys["ed"]
        self.assertIn(printed, berth("ssh-key", "add", "file-key", path))
        berth("ssh-key", "add", "flag-key", "--key", self.keys["ec"][0].strip())
        berth("ssh-key", "add", "stdin-key", "-", stdin=self.keys["more"][0])
        table = berth("ssh-keys")
        for name in ("file-key", "flag-key", "stdin-key"):
            self.assertIn(name, table)
        self.assertIn(self.keys["ec"][1], table)
        shown = json.loads(berth("ssh-key", "show", "file-key", "-o", "json"))["key"]
        self.assertEqual(shown["fingerprint"], printed)
        refused = berth("ssh-key", "add", "junk", "--key", "ssh-ed25519 nope", rc=1)
        self.assertIn("public_key", refused)
        out = berth("request", "small", "cli-keyed", "--ssh-key", "file-key",
                    "--ssh-key=flag-key", "-o", "json")
        req = json.loads(out)["request"]
        self.assertEqual([k["name"] for k in req["ssh_keys"]], ["file-key", "flag-key"])
        vm_id = req["vms"][0]["id"]
        self.assertIn("file-key (%s), flag-key (%s)" % (printed, self.keys["ec"][1]),
                      berth("vm", "show", vm_id))
        berth("request", "small", "cli-nokey", "--ssh-key", "nothere", rc=1)
        berth("ssh-key", "delete", "stdin-key")
        self.assertNotIn("stdin-key", berth("ssh-keys"))
        berth("ssh-key", "frobnicate", rc=2)


if __name__ == "__main__":
    unittest.main()
