#!/usr/bin/env python3
"""Forged bus calls: user identity comes only from the gateway's signed assertion.

A client on the bus (berth-probe send) calls approval, taskmgr and meter directly, as an
attacker on the platform's machine could, with no assertion, one it made with a key of its
own, an expired one, one made for another action, or a genuine one (signed with the gateway's
key, as the gateway would sign for that user) next to a forged `actor`/`owner` field. The
service that decides refuses each, and Redis is left as it was:
  - approving or rejecting a request: only whom the policy engine lets (a manager of its group
    or an admin, not one who cannot see it: NOT_FOUND), and never the requester, whatever the
    role (a member cannot approve their own request even with a forged actor);
  - a request's owner is who the assertion names, not the body's owner;
  - templates: an admin only (and the lease limit holds there too);
  - disposing of a VM: its owner or an admin; reading usage: one's own unless admin;
  - reading a request: its owner or an admin; anyone else is told it does not exist
    (NOT_FOUND, as for an id nobody holds); the catalog: any signed-in user;
  - a genuine assertion is bound to the body it was made for: replayed on another body
    (another request to approve, another VM to dispose of) it is refused.
Through the HTTP API the same actions still work for those allowed to do them.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_forgery.py
"""

import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import PlatformCase, wait_until  # noqa: E402

PASSWORD = "forgery-test-pw"

# What a forged call may touch: every key the refused actions would write (berth:events is
# compared without the hosts' own entries, which heartbeats append on their own).
WATCHED = ("berth:request:*", "berth:requests", "berth:vm:*", "berth:vms", "berth:task:*",
           "berth:tasks:due", "berth:template*", "berth:idem:*", "berth:claim:*")


class Forgery(PlatformCase):
    agents = 1
    # snapshot() compares the whole event stream: the meter must not trim the entries it has
    # acknowledged between two snapshots.
    platform_env = {"BERTH_EVENTS_TRIM_EVERY_MS": "86400000"}
    wait_hosts = 1

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            cls.alice = cls.api.create_user("alice", PASSWORD)
            cls.bob = cls.api.create_user("bob", PASSWORD)
            # Alice's running VM (disposal and usage), built before any forgery is tried.
            req = cls.alice.request("small", "alice-vm")
            cls.alice_vm = req["vms"][0]["id"]
            cls.alice.wait_vm(cls.alice_vm, ("ACTIVE",))
        except Exception:
            cls.p.dump_logs()
            cls.p.stop()
            raise

    # -- the bus, as an attacker reaches it ---------------------------------------------------

    def send(self, service, type_, fields, as_user=None, role="user", forged_key=False,
             expired=False, made_for=None, signed_for=None):
        """One direct bus call with berth-probe (the only place it is invoked): no assertion,
        or one stating as_user with role, signed with the gateway's key or (forged_key) a key
        of the caller's own, optionally expired or made for another message type. The
        probe's answer: {"type", "body"} or {"error": {...}}."""
        # With the gateway's bus certificate: the only caller these handlers accept (any
        # other is refused by the bus before the assertion is even read: test_bus_auth).
        argv = self.p.probe_argv("send", "127.0.0.1:%d" % self.p.redis_port, service, type_,
                                 json.dumps(fields), cert="gateway")
        if as_user:
            argv += ["--as", as_user, role]
            argv += ["--self-made"] if forged_key else ["--key", self.p.secrets_dir]
            if expired:
                argv.append("--expired")
            if made_for:
                argv += ["--for", made_for]
            if signed_for is not None:
                argv += ["--signed-for", json.dumps(signed_for)]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=self.p.base_env())
        if r.returncode != 0:
            raise AssertionError("berth-probe %s failed: %s" % (type_, r.stderr))
        return json.loads(r.stdout.splitlines()[-1])

    def assertRefused(self, answer, code):
        self.assertIn("error", answer, "the call was not refused: %r" % answer)
        self.assertEqual(answer["error"]["code"], code, answer)

    def forgeries(self, type_):
        """The ways to claim to be an admin without the gateway's word, for a call of type_:
        (label, keyword arguments of send)."""
        other = "GetUsage" if type_ != "GetUsage" else "DisposeVm"
        return [
            ("no assertion", {}),
            ("self-made admin assertion", {"as_user": "admin", "role": "admin",
                                           "forged_key": True}),
            ("expired admin assertion", {"as_user": "admin", "role": "admin", "expired": True}),
            ("admin assertion made for another call", {"as_user": "admin", "role": "admin",
                                                       "made_for": other}),
        ]

    def snapshot(self):
        """What the watched keys hold, and the event stream without the hosts' entries."""
        state = {}
        for pattern in WATCHED:
            for key in self.p.redis_command("KEYS", pattern):
                kind = self.p.redis_command("TYPE", key)
                if kind == "hash":
                    state[key] = sorted(self.p.redis_command("HGETALL", key))
                elif kind == "zset":
                    state[key] = self.p.redis_command("ZRANGE", key, 0, -1, "WITHSCORES")
                else:
                    state[key] = self.p.redis_command("DUMP", key)
        events = []
        for _, fields in self.p.redis_command("XRANGE", "berth:events", "-", "+"):
            entry = dict(zip(fields[0::2], fields[1::2]))
            if not entry.get("type", "").startswith("host."):
                events.append(entry)
        state["berth:events"] = events
        return state

    # -- approval -----------------------------------------------------------------------------

    def test_forged_approval_refused_by_approval(self):
        req = self.alice.request("large", "forged")
        self.assertEqual(req["state"], "PENDING_APPROVAL")
        before = self.snapshot()
        decide = {"id": req["id"], "approve": True, "actor": "admin"}
        for label, how in self.forgeries("DecideRequest"):
            with self.subTest(label):
                self.assertRefused(self.send("approval", "DecideRequest", decide, **how),
                                   "UNAUTHENTICATED")
        # A genuine assertion of a user who may not even see it, whatever actor the body
        # names: as if it did not exist (the policy engine, services/approval/decide.c).
        self.assertRefused(self.send("approval", "DecideRequest", decide, as_user="bob"),
                           "NOT_FOUND")
        reject = dict(decide, approve=False)
        self.assertRefused(self.send("approval", "DecideRequest", reject, as_user="bob"),
                           "NOT_FOUND")
        self.assertEqual(self.snapshot(), before)
        self.assertEqual(self.alice.get("/v1/requests/" + req["id"])["request"]["state"],
                         "PENDING_APPROVAL")
        # The admin's own word still decides, over HTTP as before.
        r = self.api.call("POST", "/v1/requests/%s/reject" % req["id"], {"reason": "test"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["request"]["state"], "REJECTED")
        self.assertEqual(r.json()["request"]["decided_by"], self.p.admin_user)

    def test_assertion_replayed_on_another_body_refused(self):
        # An admin's genuine word, made to reject one request, replayed to approve another
        # (or the same one): refused by approval, and nothing is written.
        seen = self.alice.request("large", "replay-seen")
        target = self.alice.request("large", "replay-target")
        before = self.snapshot()
        rejected = {"id": seen["id"], "approve": False, "reason": "no"}
        for body in ({"id": target["id"], "approve": True},
                     {"id": target["id"], "approve": False, "reason": "no"},
                     {"id": seen["id"], "approve": True}):
            with self.subTest(body=body):
                answer = self.send("approval", "DecideRequest", body, as_user="root",
                                   role="admin", signed_for=rejected)
                self.assertRefused(answer, "UNAUTHENTICATED")
                self.assertIn("another body", answer["error"]["message"])
        # Bob's word for a request of his own, replayed to make one with another template.
        answer = self.send("approval", "CreateRequest",
                           {"template": "large", "name": "replayed", "count": 1},
                           as_user="bob", signed_for={"template": "small", "name": "mine",
                                                      "count": 1})
        self.assertRefused(answer, "UNAUTHENTICATED")
        self.assertEqual(self.snapshot(), before)
        # Alice's word to dispose of another VM, replayed on her running one: it stays.
        answer = self.send("taskmgr", "DisposeVm", {"vm": self.alice_vm}, as_user="alice",
                           signed_for={"vm": "8d3c1f0e-5a4b-4c2d-9e1f-0a1b2c3d4e5f"})
        self.assertRefused(answer, "UNAUTHENTICATED")
        self.assertEqual(self.snapshot(), before)
        # The same word on the body it was made for is accepted.
        answer = self.send("approval", "DecideRequest", rejected, as_user="root", role="admin",
                           signed_for=rejected)
        self.assertEqual(answer.get("type"), "Request", answer)
        self.assertEqual(answer["body"]["state"], "REJECTED")

    def test_reading_a_request_needs_its_owner_or_an_admin(self):
        req = self.alice.request("large", "read-me")
        ask = {"id": req["id"]}
        for label, how in self.forgeries("GetRequest"):
            with self.subTest(label):
                self.assertRefused(self.send("approval", "GetRequest", ask, **how),
                                   "UNAUTHENTICATED")
        hidden = self.send("approval", "GetRequest", ask, as_user="bob")
        self.assertRefused(hidden, "NOT_FOUND")
        nobody = self.send("approval", "GetRequest",
                           {"id": "8d3c1f0e-5a4b-4c2d-9e1f-0a1b2c3d4e5f"}, as_user="bob")
        self.assertRefused(nobody, "NOT_FOUND")
        self.assertEqual(hidden["error"]["message"].replace(req["id"], "ID"),
                         nobody["error"]["message"].replace(
                             "8d3c1f0e-5a4b-4c2d-9e1f-0a1b2c3d4e5f", "ID"))
        for user, role in (("alice", "user"), ("root", "admin")):
            seen = self.send("approval", "GetRequest", ask, as_user=user, role=role)
            self.assertEqual(seen.get("type"), "Request", seen)
            self.assertEqual(seen["body"]["owner"], "alice")
        # The catalog: nobody without the gateway's word; any user with it, and over HTTP.
        for label, how in self.forgeries("ListTemplates"):
            with self.subTest(label):
                self.assertRefused(self.send("approval", "ListTemplates", {}, **how),
                                   "UNAUTHENTICATED")
        listed = self.send("approval", "ListTemplates", {}, as_user="bob")
        self.assertEqual(listed.get("type"), "TemplateList", listed)
        self.assertIn("small", [t["name"] for t in self.bob.get("/v1/templates")["templates"]])

    def test_member_cannot_approve_own_request(self):
        req = self.alice.request("large", "mine")
        before = self.snapshot()
        decide = {"id": req["id"], "approve": True, "actor": "admin"}
        # Through the gateway: a member is not an admin.
        r = self.alice.call("POST", "/v1/requests/%s/approve" % req["id"], {})
        self.assertEqual(r.status, 403, r)
        # Directly on the bus, with her own genuine assertion and a forged actor...
        self.assertRefused(self.send("approval", "DecideRequest", decide, as_user="alice"),
                           "FORBIDDEN")
        # ...and even with an assertion that made her an admin: nobody decides their own.
        self.assertRefused(
            self.send("approval", "DecideRequest", decide, as_user="alice", role="admin"),
            "FORBIDDEN")
        self.assertEqual(self.snapshot(), before)

    def test_admin_cannot_approve_own_request(self):
        mine = self.api.request("large", "admins-own")
        r = self.api.call("POST", "/v1/requests/%s/approve" % mine["id"], {})
        self.assertEqual(r.status, 403, r)
        self.assertIn("requester", r.json()["error"]["message"])
        self.assertEqual(self.api.get("/v1/requests/" + mine["id"])["request"]["state"],
                         "PENDING_APPROVAL")

    def test_request_owner_is_who_asks(self):
        ask = {"template": "small", "name": "not-mine", "owner": "admin", "count": 1}
        before = self.snapshot()
        for label, how in self.forgeries("CreateRequest"):
            with self.subTest(label):
                self.assertRefused(self.send("approval", "CreateRequest", ask, **how),
                                   "UNAUTHENTICATED")
        self.assertEqual(self.snapshot(), before)
        # Bob's own word with owner "admin" in the body: the request is Bob's.
        made = self.send("approval", "CreateRequest", dict(ask, template="large"), as_user="bob")
        self.assertEqual(made["type"], "Request", made)
        self.assertEqual(made["body"]["owner"], "bob")
        self.assertEqual(self.bob.get("/v1/requests/" + made["body"]["id"])["request"]["owner"],
                         "bob")

    def test_template_needs_an_admin(self):
        template = {"name": "forever", "vcpus": 1, "ram_mb": 512, "disk_gb": 5, "os": "debian",
                    "image": "debian-12", "lease_days": 3650}
        ask = {"template": template, "actor": "admin"}
        before = self.snapshot()
        for label, how in self.forgeries("CreateTemplate"):
            with self.subTest(label):
                self.assertRefused(self.send("approval", "CreateTemplate", ask, **how),
                                   "UNAUTHENTICATED")
        self.assertRefused(self.send("approval", "CreateTemplate", ask, as_user="bob"),
                           "FORBIDDEN")
        # An admin's word does not lift the lease limit.
        too_long = {"template": dict(template, lease_days=3651)}
        answer = self.send("approval", "CreateTemplate", too_long, as_user="root", role="admin")
        self.assertRefused(answer, "BAD_REQUEST")
        self.assertEqual(answer["error"]["details"].get("field"), "lease_days")
        self.assertEqual(self.snapshot(), before)
        # Over HTTP, the admin still creates templates; a member does not.
        r = self.bob.call("POST", "/v1/templates", dict(template, name="bobs"))
        self.assertEqual(r.status, 403, r)
        made = self.api.create_template(**dict(template, name="yearly", lease_days=365))
        self.assertEqual(made["lease_days"], 365)

    # -- taskmgr ------------------------------------------------------------------------------

    def test_dispose_of_another_users_vm_refused(self):
        before = self.snapshot()
        dispose = {"vm": self.alice_vm, "actor": "alice"}
        for label, how in self.forgeries("DisposeVm"):
            with self.subTest(label):
                self.assertRefused(self.send("taskmgr", "DisposeVm", dispose, **how),
                                   "UNAUTHENTICATED")
        self.assertRefused(self.send("taskmgr", "DisposeVm", dispose, as_user="bob"),
                           "FORBIDDEN")
        r = self.bob.call("DELETE", "/v1/vms/" + self.alice_vm)
        self.assertEqual(r.status, 404, r)  # the gateway does not show Bob her VM at all
        self.assertEqual(self.snapshot(), before)
        self.assertEqual(self.alice.vm(self.alice_vm)["state"], "ACTIVE")

    def test_action_on_another_users_vm_refused(self):
        before = self.snapshot()
        stop = {"vm": self.alice_vm, "action": "stop", "force": True}
        for label, how in self.forgeries("VmAction"):
            with self.subTest(label):
                self.assertRefused(self.send("taskmgr", "VmAction", stop, **how),
                                   "UNAUTHENTICATED")
        self.assertRefused(self.send("taskmgr", "VmAction", stop, as_user="bob"), "FORBIDDEN")
        # Alice's word to reboot it, replayed as a stop: refused.
        answer = self.send("taskmgr", "VmAction", stop, as_user="alice",
                           signed_for={"vm": self.alice_vm, "action": "reboot"})
        self.assertRefused(answer, "UNAUTHENTICATED")
        r = self.bob.call("POST", "/v1/vms/%s/actions" % self.alice_vm, {"action": "stop"})
        self.assertEqual(r.status, 404, r)
        self.assertEqual(self.snapshot(), before)
        vm = self.alice.vm(self.alice_vm)
        self.assertEqual((vm["state"], vm["power_state"]), ("ACTIVE", "RUNNING"))

    def test_task_recover_refused(self):
        # abort: TaskRecover is decided on the gateway's word alone, as the other calls.
        before = self.snapshot()
        task = self.alice.vm(self.alice_vm)["task"]
        for verb in ("abort", "retry", "force_fail"):
            ask = {"task": task, "verb": verb}
            for label, how in self.forgeries("TaskRecover"):
                with self.subTest(verb=verb, forgery=label):
                    self.assertRefused(self.send("taskmgr", "TaskRecover", ask, **how),
                                       "UNAUTHENTICATED")
            # Bob is not her VM's owner; no plain user retries or force-fails.
            self.assertRefused(self.send("taskmgr", "TaskRecover", ask, as_user="bob"),
                               "FORBIDDEN")
        for verb in ("retry", "force_fail"):
            self.assertRefused(self.send("taskmgr", "TaskRecover", {"task": task, "verb": verb},
                                         as_user="alice"), "FORBIDDEN")
        # Alice's word to abort it, replayed as a force-fail: refused.
        answer = self.send("taskmgr", "TaskRecover", {"task": task, "verb": "force_fail"},
                           as_user="alice", role="admin",
                           signed_for={"task": task, "verb": "abort"})
        self.assertRefused(answer, "UNAUTHENTICATED")
        # Allowed callers reach the task's own state: it has ended.
        self.assertRefused(self.send("taskmgr", "TaskRecover", {"task": task, "verb": "abort"},
                                     as_user="alice"), "CONFLICT")
        self.assertRefused(self.send("taskmgr", "TaskRecover",
                                     {"task": task, "verb": "force_fail"}, as_user="opr",
                                     role="operator"), "CONFLICT")
        self.assertEqual(self.snapshot(), before)
        self.assertEqual(self.alice.task(task)["state"], "SUCCEEDED")

    # -- meter --------------------------------------------------------------------------------

    def test_usage_of_another_user_refused(self):
        wait_until(lambda: any(u["owner"] == "alice"
                               for u in self.api.get("/v1/usage?owner=alice")["usage"]),
                   30, "the meter counted alice's VM")
        ask = {"owner": "alice"}
        for label, how in self.forgeries("GetUsage"):
            with self.subTest(label):
                self.assertRefused(self.send("meter", "GetUsage", ask, **how), "UNAUTHENTICATED")
        self.assertRefused(self.send("meter", "GetUsage", ask, as_user="bob"), "FORBIDDEN")
        # Asking for everyone's, a member gets only their own.
        own = self.send("meter", "GetUsage", {}, as_user="bob")
        self.assertEqual(own["type"], "UsageReport", own)
        self.assertEqual([u for u in own["body"]["usage"] if u["owner"] != "bob"], [])
        # Alice's own and an admin's reads still work.
        mine = self.send("meter", "GetUsage", ask, as_user="alice")
        self.assertIn(self.alice_vm, [u["vm"] for u in mine["body"]["usage"]])
        self.assertIn(self.alice_vm,
                      [u["vm"] for u in self.alice.get("/v1/usage")["usage"]])
        r = self.bob.call("GET", "/v1/usage?owner=alice")
        self.assertEqual(r.status, 403, r)


if __name__ == "__main__":
    unittest.main(verbosity=2)
