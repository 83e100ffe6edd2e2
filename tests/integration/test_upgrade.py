"""An upgrade keeps what a deployment holds.

fixtures/store-v1.jsonl is a store written by the first release (no schema version), captured
from a real run by tests/tools/capture_store.py: an admin, a user, a template added by the
admin, VMs active and disposed, their usage. The platform of this build starts on it and the
users find everything as they left it: they log in with their passwords, the templates list
(none seeded twice), the VMs read back with their states and owners, the usage matches the
intervals metered then; the store is stamped with its schema version; a new VM can be
provisioned next to the old ones.
"""

import json
import os
import unittest

import berth_test

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "store-v1.jsonl")


def load_fixture():
    with open(FIXTURE) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    return lines[0], lines[1:]


class Upgrade(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.meta, cls.commands = load_fixture()
        cls.p = berth_test.Platform(admin_password=cls.meta["admin"][1])
        try:
            cls.p.start_redis()
            for cmd in cls.commands:
                cls.p.redis_command(*cmd)
            cls.p.start_all(agents=2)
        except BaseException:
            cls.p.dump_logs()
            cls.p.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.p.stop()

    def fixture_hash(self, key):
        for cmd in self.commands:
            if cmd[0] == "HSET" and cmd[1] == key:
                return dict(zip(cmd[2::2], cmd[3::2]))
        raise AssertionError("no %s in the fixture" % key)

    def test_store_is_stamped(self):
        self.assertIsNone(self.meta.get("schema"))
        self.assertEqual(self.p.redis_command("GET", "berth:schema"), "3")
        # Version 3: each host counts the claims on it (the max_vms filter reads it): the
        # fixture's, and those of VMs made since (the scripts keep the count).
        claims = {}
        for key in self.p.redis_command("KEYS", "berth:claim:{*"):
            host = self.p.redis_command("HGET", key, "host")
            claims[host] = claims.get(host, 0) + 1
        self.assertTrue(claims)
        for host, n in claims.items():
            self.assertEqual(self.p.redis_command("HGET", "berth:host:" + host, "claims"), str(n))

    def test_users_log_in_and_templates_list(self):
        alice = berth_test.Api(self.p, *self.meta["user"])
        admin = berth_test.Api(self.p, *self.meta["admin"])
        names = sorted(t["name"] for t in alice.get("/v1/templates")["templates"])
        self.assertEqual(names, sorted(["small", "medium", "large", self.meta["template"]]))
        self.assertEqual(len(admin.get("/v1/templates")["templates"]), 4)
        r = self.p.http("POST", "/v1/auth/tokens",
                        {"username": self.meta["user"][0], "password": "not-her-password"})
        self.assertEqual(r.status, 401)

    def test_vms_read_back(self):
        alice = berth_test.Api(self.p, *self.meta["user"])
        admin = berth_test.Api(self.p, *self.meta["admin"])
        active, disposed = self.meta["active"], self.meta["disposed"]
        for vm_id in active + disposed:
            stored = self.fixture_hash("berth:vm:{%s}" % vm_id)
            api = alice if stored["owner"] == self.meta["user"][0] else admin
            vm = api.vm(vm_id)
            self.assertEqual(vm["state"], "DISPOSED" if vm_id in disposed else "ACTIVE")
            self.assertEqual(vm["owner"], stored["owner"])
            self.assertEqual(vm["name"], stored["name"])
            self.assertEqual(vm["host"], stored["host"])
        listed = {v["id"] for v in alice.get("/v1/vms")["vms"]}
        self.assertIn(active[0], listed)

    def test_usage_matches_what_was_metered(self):
        alice = berth_test.Api(self.p, *self.meta["user"])
        mine = [vm for vm in self.meta["active"] + self.meta["disposed"]
                if self.fixture_hash("berth:vm:{%s}" % vm)["owner"] == self.meta["user"][0]]
        stored = {vm: self.fixture_hash("berth:usage:{%s}" % vm) for vm in mine}
        first = min(int(u["first_ms"]) for u in stored.values())
        closed = [json.loads(u["intervals"])[-1][1] for u in stored.values()]
        start, end = first // 1000 - 3600, max(closed) // 1000 + 1
        usage = alice.get("/v1/usage?from=%d&to=%d" % (start, end))["usage"]
        got = {u["vm"]: u for u in usage}
        self.assertLessEqual(set(mine), set(got))
        for vm in self.meta["disposed"]:
            if vm in stored:
                [[a, b]] = json.loads(stored[vm]["intervals"])
                self.assertAlmostEqual(got[vm]["active_hours"], (b - a) / 3600000.0, places=9)
        for vm in self.meta["active"]:
            if vm in stored:
                self.assertGreater(got[vm]["active_hours"], 0)

    def test_new_vm_next_to_the_old_ones(self):
        alice = berth_test.Api(self.p, *self.meta["user"])
        req = alice.request(self.meta["template"], "after-upgrade")
        req = berth_test.wait_until(
            lambda: (lambda r: r if r["vms"] else None)(
                alice.get("/v1/requests/" + req["id"])["request"]),
            what="the request has its VM")
        vm = alice.wait_vm(req["vms"][0]["id"], ("ACTIVE",))
        self.assertEqual(vm["owner"], self.meta["user"][0])


if __name__ == "__main__":
    unittest.main()
