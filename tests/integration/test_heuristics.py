"""Custom builds against the real services (gateway, approval, scheduler, stager, agents):

- a table of requests, each checked as a dry run (POST /v1/requests?validate_only=true) for
  its verdict, the rules broken and the suggestions, on a catalog of images whose
  application sets overlap (the base debian-12 and ubuntu-24.04, and three imported here);
- the best image and the first-boot list: a VM built from a custom request records which
  applications came with its image and which its first boot installs, and its seed's
  user-data lists the latter under `packages:`;
- a refused request answers 422 BUILD_REFUSED with the rules and suggestions in details;
- dry runs create nothing: no request, VM or task, and no quota used.

Needs are the image's minimum plus each application's (the largest an image of the OS
states), plus the scheduler's 10 % margin, rounded up."""
import glob
import json
import math
import tempfile
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import PlatformCase, wait_until  # noqa: E402

# The imported catalog: web and db overlap on postgresql; ml is ubuntu's.
CATALOG = [
    ("web", "debian", "12", 512, 2, [("nginx", 256, 1), ("postgresql", 512, 2)]),
    ("db", "debian", "12", 512, 2, [("postgresql", 768, 5), ("redis", 128, 1)]),
    ("ml", "ubuntu", "24.04", 1024, 4, [("python3", 0, 0), ("tensorflow", 2048, 10)]),
]


def need(base, *apps):
    return math.ceil((base + sum(apps)) * 110 / 100)


def custom(os_="debian", apps=(), vcpus=1, ram=1024, disk=10, **more):
    body = {"os": os_, "applications": list(apps), "vcpus": vcpus, "ram_mb": ram, "disk_gb": disk}
    body.update(more)
    return body


# (body, ok, rules broken, {suggestion kind: value}, image chosen, from image, first boot)
TABLE = [
    (custom(), True, set(), {}, "debian-12", [], []),
    (custom(apps=["nginx"]), True, set(), {}, "web", ["nginx"], []),
    (custom(apps=["nginx"], ram=512), False, {"ram"},
     {"ram_mb": str(need(512, 256))}, "web", ["nginx"], []),
    (custom(apps=["nginx"], disk=2), False, {"disk"}, {"disk_gb": str(need(2, 1))}, "web",
     ["nginx"], []),
    (custom(apps=["postgresql", "redis"], ram=2048), True, set(), {}, "db",
     ["postgresql", "redis"], []),
    # web and db each hold one of the two and one more: the newest (db) wins the tie.
    (custom(apps=["nginx", "redis"], ram=2048), True, set(), {}, "db", ["redis"], ["nginx"]),
    (custom(apps=["redis", "tensorflow"], ram=4096, disk=40), False, {"applications"},
     {"drop_application": "tensorflow", "os_version": "ubuntu 24.04"}, "db", ["redis"], []),
    (custom(os_version="11"), False, {"os"}, {"os_version": "12"}, None, [], []),
    (custom(os_="windows"), False, {"os"}, {"os": "debian"}, None, [], []),
    (custom(ram=4194304), False, {"host"}, {"size": None}, "debian-12", [], []),
    (custom(vcpus=256), False, {"host"}, {"size": None}, "debian-12", [], []),
    (custom(os_="ubuntu", apps=["tensorflow"], vcpus=2, ram=2048, disk=20), False, {"ram"},
     {"ram_mb": str(need(1024, 2048))}, "ml", ["tensorflow"], []),
    (custom(os_="ubuntu", apps=["tensorflow"], vcpus=2, ram=4096, disk=20), True, set(), {},
     "ml", ["tensorflow"], []),
    (custom(os_="ubuntu", os_version="24.04", apps=["python3"], vcpus=1, ram=2048, disk=8), True,
     set(), {}, "ml", ["python3"], []),
    # No application: a template that would work is suggested too.
    (custom(ram=256), False, {"ram"}, {"ram_mb": str(need(512)), "template": "small"},
     "debian-12", [], []),
    # web and db both hold postgresql and one more: db, the newest; its need is db's 768 MB.
    (custom(apps=["postgresql"], ram=1024, disk=4), False, {"ram", "disk"},
     {"ram_mb": str(need(512, 768)), "disk_gb": str(need(2, 5))}, "db", ["postgresql"], []),
    ({"template": "medium"}, True, set(), {}, "debian-12", [], []),
]


class Heuristics(PlatformCase):
    agents = 2
    wait_hosts = 2

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        import_dir = os.path.join(cls.p.data_dir, "services", "stager", "import")
        wait_until(lambda: os.path.isdir(import_dir), 20, "the stager's import directory")
        for name, os_, version, ram, disk, apps in CATALOG:
            path = os.path.join(import_dir, name + ".qcow2")
            subprocess.run(["qemu-img", "create", "-f", "qcow2", path, "32M"], check=True,
                           capture_output=True)
            r = cls.api.call("POST", "/v1/images", {
                "path": name + ".qcow2", "name": name, "os": os_, "os_version": version,
                "min_ram_mb": ram, "min_disk_gb": disk,
                "applications": [{"name": a, "version": "1", "min_ram_mb": ar, "min_disk_gb": ad}
                                 for a, ar, ad in apps]})
            assert r.status == 201, r
            wait_until(lambda: cls.api.get("/v1/images/" + name)["image"]["state"] == "READY",
                       30, "image %s READY" % name)

    def dry(self, body, api=None):
        r = (api or self.api).call("POST", "/v1/requests?validate_only=true", body)
        self.assertEqual(r.status, 200, r)
        return r.json()

    def state(self):
        keys = set()
        for pattern in ("berth:request:*", "berth:vm:*", "berth:task:*"):
            keys |= set(self.p.redis_command("KEYS", pattern))
        usage = {k: self.p.redis_command("HGETALL", k)
                 for k in self.p.redis_command("KEYS", "berth:group-usage*")}
        return keys, usage

    def test_table(self):
        self.assertGreaterEqual(len(TABLE), 15)
        for body, ok, rules, suggestions, image, from_image, first_boot in TABLE:
            with self.subTest(body=body):
                v = self.dry(body)
                self.assertEqual(v["ok"], ok, v)
                self.assertEqual(v["verdict"], "ok" if ok else "refused")
                self.assertEqual({x["rule"] for x in v["violations"]}, rules, v)
                got = {}
                for s in v["suggestions"]:
                    got.setdefault(s["kind"], []).append(s["value"])
                    self.assertTrue(s["message"])
                for kind, value in suggestions.items():
                    self.assertIn(kind, got, v)
                    if value is not None:
                        self.assertIn(value, got[kind], v)
                if not suggestions:
                    self.assertEqual(v["suggestions"], [], v)
                self.assertEqual(v["image"]["name"] if v["image"] else None, image, v)
                self.assertEqual(v["applications"]["from_image"], from_image, v)
                self.assertEqual(v["applications"]["first_boot"], first_boot, v)

    def test_size_suggestion_fits_a_host(self):
        v = self.dry(custom(ram=4194304))
        size = [s["value"] for s in v["suggestions"] if s["kind"] == "size"][0]
        fit = dict(kv.split("=") for kv in size.split(","))
        again = self.dry(custom(vcpus=int(fit["vcpus"]), ram=int(fit["ram_mb"]),
                                disk=int(fit["disk_gb"])))
        self.assertNotIn("host", {x["rule"] for x in again["violations"]}, again)
        self.assertIn("no host could ever hold", v["violations"][0]["message"])

    def test_quota_rule(self):
        r = self.api.call("POST", "/v1/groups", {"name": "tight", "quota": {"vcpus": 1}})
        self.assertEqual(r.status, 201, r)
        v = self.dry(custom(vcpus=2, group="tight"))
        self.assertEqual({x["rule"] for x in v["violations"]}, {"quota"}, v)
        self.assertEqual(v["violations"][0]["field"], "vcpus")
        # Fewer vCPUs, or the template of that size (medium's two would not fit either).
        self.assertEqual([(s["kind"], s["value"]) for s in v["suggestions"]],
                         [("vcpus", "1"), ("template", "small")], v)
        self.assertTrue(self.dry(custom(vcpus=1, group="tight"))["ok"])
        # Two VMs of one vCPU each: one fits; a template's size is not the asker's to change.
        v = self.dry(custom(vcpus=1, group="tight", count=2))
        self.assertEqual([(s["kind"], s["value"]) for s in v["suggestions"]],
                         [("count", "1")], v)
        # A template whose size the quota does not leave: more quota, or a smaller one.
        v = self.dry({"template": "medium", "group": "tight"})
        self.assertEqual({x["rule"] for x in v["violations"]}, {"quota"}, v)
        self.assertEqual([(s["kind"], s["value"]) for s in v["suggestions"]],
                         [("allocation", "tight"), ("template", "small")], v)

    def test_bad_fields(self):
        for body, field in [(dict(custom(), template="small", name="x"), "os"),
                            ({"name": "x"}, "template"),
                            (dict(custom(ram=10), name="x"), "ram_mb"),
                            (dict(custom(apps=["a b"]), name="x"), "applications"),
                            (dict(custom(apps=["nginx", "NGINX"]), name="x"), "applications"),
                            ({"os": "debian", "name": "x"}, "vcpus")]:
            with self.subTest(body=body):
                r = self.api.call("POST", "/v1/requests", body)
                self.assertEqual(r.status, 400, r)
                self.assertEqual(r.json()["error"]["details"]["field"], field, r)
        r = self.api.call("POST", "/v1/requests?validate_only=maybe", custom())
        self.assertEqual(r.status, 400, r)

    def test_dry_runs_create_nothing(self):
        before = self.state()
        for body, *_ in TABLE:
            self.dry(body)
        self.dry(dict(custom(apps=["nginx"]), name="would-be", count=3))
        self.assertEqual(self.state(), before)

    def test_refused_then_followed(self):
        before = self.state()
        r = self.api.call("POST", "/v1/requests",
                          dict(custom(apps=["nginx", "redis"], ram=512), name="cache"))
        self.assertEqual(r.status, 422, r)
        err = r.json()["error"]
        self.assertEqual(err["code"], "BUILD_REFUSED")
        self.assertEqual(err["details"]["rules"], "ram")
        self.assertEqual(err["details"]["field"], "ram_mb")
        want = need(512, 256, 128)
        self.assertEqual(err["details"]["suggest.ram_mb"], str(want), err)
        self.assertIn("raise RAM to %d MB" % want, err["details"]["suggestions"])
        self.assertEqual(self.state(), before)
        # Follow the suggestion: the VM is built from db, nginx installed at first boot.
        r = self.api.call("POST", "/v1/requests",
                          dict(custom(apps=["nginx", "redis"], ram=want), name="cache"))
        self.assertEqual(r.status, 202, r)
        vm_id = r.json()["request"]["vms"][0]["id"]
        vm = self.api.wait_vm(vm_id, ("ACTIVE",))
        self.assertEqual(vm["image"], "db")
        self.assertIsNone(vm["template"])
        self.assertEqual(vm["flavor"], {"vcpus": 1, "ram_mb": want, "disk_gb": 10})
        self.assertEqual(vm["applications"], {"from_image": ["redis"], "first_boot": ["nginx"]})
        self.assertGreater(vm["lease_days"], 0)
        seeds = [f for f in glob.glob(os.path.join(self.p.data_dir, "**", "*%s*" % vm_id),
                                      recursive=True) if os.path.isfile(f)]
        seed = [open(f, "rb").read() for f in seeds]
        self.assertTrue(any(b"packages:\n  - nginx\n" in s for s in seed), seeds)

    def test_group_policy_and_lease(self):
        """A custom build takes its group's approval policy (here: a manager decides) and its
        lease (the group's max_lease_days); the request shows what it described."""
        r = self.api.call("POST", "/v1/groups", {"name": "gated", "approval_policy": "manager",
                                                 "max_lease_days": 9})
        self.assertEqual(r.status, 201, r)
        mia = self.api.create_user("mia", "member-password-1")
        max_ = self.api.create_user("max", "manager-password-1")
        for user, role in (("mia", "member"), ("max", "manager")):
            r = self.api.call("POST", "/v1/groups/gated/members", {"user": user, "role": role})
            self.assertEqual(r.status, 201, r)
        r = mia.call("POST", "/v1/requests", dict(custom(apps=["nginx"]), name="gated-web",
                                                  group="gated"))
        self.assertEqual(r.status, 202, r)
        req = r.json()["request"]
        self.assertEqual(req["state"], "PENDING_APPROVAL")
        self.assertEqual(req["awaiting"], "manager")
        self.assertIsNone(req["template"])
        self.assertEqual(req["build"], {"os": "debian", "applications": ["nginx"],
                                        "flavor": {"vcpus": 1, "ram_mb": 1024, "disk_gb": 10}})
        listed = [x for x in mia.get("/v1/requests")["requests"] if x["id"] == req["id"]]
        self.assertEqual(listed[0]["build"], req["build"])
        r = max_.call("POST", "/v1/requests/%s/approve" % req["id"], {})
        self.assertEqual(r.status, 200, r)
        vm = self.api.wait_vm(req["vms"][0]["id"], ("ACTIVE",))
        self.assertEqual(vm["lease_days"], 9)
        self.assertEqual(vm["image"], "web")
        self.assertEqual(vm["applications"], {"from_image": ["nginx"], "first_boot": []})

    def test_cli(self):
        home = tempfile.mkdtemp(dir=self.p.data_dir)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        env.update({"BERTH_URL": self.p.url, "XDG_CONFIG_HOME": home, "HOME": home})

        def berth(*args, rc=0):
            r = subprocess.run([self.p.binary("berth")] + list(args), env=env,
                               capture_output=True, text=True, timeout=60,
                               input=self.p.admin_password + "\n")
            self.assertEqual(r.returncode, rc, "berth %s: %s %s" % (args, r.stdout, r.stderr))
            return r.stdout + r.stderr
        berth("login", self.p.admin_user, "--password-stdin")
        before = self.state()
        # A dry run: the verdict, the image, the lists, the suggestion; exit 1 when refused.
        out = berth("request", "--os", "debian", "--app", "nginx", "--app", "redis", "--vcpus",
                    "1", "--ram", "512", "--disk", "10", "--dry-run", rc=1)
        self.assertIn("refused", out)
        self.assertIn("db (debian 12", out)
        self.assertIn("first boot   nginx", out)
        self.assertIn("raise RAM to %d MB" % need(512, 256, 128), out)
        out = berth("request", "--os", "debian", "--app", "nginx", "--vcpus", "1", "--ram",
                    "2048", "--disk", "10", "--dry-run")
        self.assertIn("verdict      ok", out)
        verdict = json.loads(berth("request", "--os", "debian", "--vcpus", "1", "--ram", "2048",
                                   "--disk", "10", "--dry-run", "-o", "json"))
        self.assertEqual(verdict["image"]["name"], "debian-12")
        self.assertEqual(json.loads(berth("request", "small", "--dry-run", "-o",
                                          "json"))["template"], "small")
        self.assertEqual(self.state(), before)
        # Refused for real: each rule and the suggestions, nothing created.
        out = berth("request", "cli-web", "--os", "debian", "--app", "tensorflow", "--vcpus",
                    "1", "--ram", "4096", "--disk", "20", rc=1)
        self.assertIn("applications: application tensorflow has no build for debian 12", out)
        self.assertIn("- drop application tensorflow", out)
        self.assertIn("- choose ubuntu 24.04, which has tensorflow", out)
        self.assertEqual(self.state(), before)
        # The VM built from a followed suggestion shows its applications.
        out = berth("request", "cli-cache", "--os", "debian", "--app", "nginx", "--app", "redis",
                    "--vcpus", "1", "--ram", str(need(512, 256, 128)), "--disk", "10", "--wait")
        self.assertIn("ACTIVE", out)
        self.assertIn("from image: redis; first boot: nginx", berth("vm", "show", "cli-cache"))
        berth("request", "--app", "nginx", "x", rc=2)
        berth("request", "small", "x", "--ram", "1024", rc=2)


if __name__ == "__main__":
    unittest.main()
