#!/usr/bin/env python3
"""Groups and memberships over REST, the permission table and visibility, with every service
and one simulated host:

- groups: create, read (by id and by name), list (paging, filters name and parent), change,
  delete (refused while members or groups inside remain); members: add, set role, remove;
  every error with its status and the field it names;
- the RBAC matrix, generated from gateway/permissions.c and the route table: every route x
  (member of the group, member of another group, manager, auditor, operator, admin,
  anonymous) gets the status the table says, and the refused calls change nothing;
- isolation: group B's users cannot see group A's VMs, requests, tasks or group (404), a
  manager and an auditor see their group's, a task is visible to whoever may see its VM.

Operators are made like every other user, through POST /v1/users with role operator.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_groups.py
"""

import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import permtable  # noqa: E402
from berth_test import Api, berth_platform, CheckedProxy, PlatformCase, wait_until  # noqa: E402

PW = "groups-test-pw-1"
ROLES = ["member", "other", "manager", "auditor", "operator", "admin", "anonymous"]
GROUP_ROLE = {"member": "MEMBER", "manager": "MANAGER", "auditor": "AUDITOR"}
# What one must be allowed to read an object of the path's kind, to be told 403 (not 404).
READ = {"vms": "vm.get", "tasks": "task.get", "requests": "request.get", "groups": "group.get",
        # The audit trail is no secret object: whoever may not read it is told so (403).
        "audit": "usage.read",
        # A group's chargeback: 403 for whoever may read the group, 404 for anyone else.
        "chargeback": "group.get",
        # A user record is its user's own (and admins'): anyone else is told 404.
        "users": "user.get"}


class Groups(PlatformCase):
    agents = 1
    wait_hosts = 1

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            cls.setup_tenants()
        except Exception:
            cls.p.dump_logs()
            cls.p.stop()
            raise

    @classmethod
    def user(cls, name, role="user"):
        r = cls.api.call("POST", "/v1/users", {"username": name, "password": PW, "role": role})
        assert r.status == 201, r
        assert r.json()["user"]["role"] == role, r
        return Api(cls.p, name, PW)

    @classmethod
    def setup_tenants(cls):
        admin = cls.api
        cls.g = admin.call("POST", "/v1/groups", {"name": "eng", "cost_centre": "CC-100"}).json()["group"]
        cls.h = admin.call("POST", "/v1/groups", {"name": "sales"}).json()["group"]
        cls.users = {"admin": admin}
        for role, name in [("member", "mem"), ("other", "oth"), ("manager", "mgr"),
                           ("auditor", "aud"), ("operator", "opr")]:
            cls.users[role] = cls.user(name, "operator" if role == "operator" else "user")
        cls.user("extra")
        for name, group, role in [("mem", "eng", "member"), ("mgr", "eng", "manager"),
                                  ("aud", "eng", "auditor"), ("oth", "sales", "member"),
                                  ("extra", "eng", "member")]:
            r = admin.call("POST", "/v1/groups/%s/members" % group, {"user": name, "role": role})
            assert r.status == 201, r
        # The member's VMs in eng (one to keep, three to dispose), the other's in sales.
        mem, oth = cls.users["member"], cls.users["other"]
        r = mem.call("POST", "/v1/requests", {"template": "small", "name": "m", "count": 4,
                                              "group": "eng"})
        assert r.status == 202, r
        cls.req = r.json()["request"]
        assert cls.req["group"] == cls.g["id"], cls.req
        cls.vms = [v["id"] for v in cls.req["vms"]]
        r = oth.call("POST", "/v1/requests", {"template": "small", "name": "o", "group": "sales"})
        assert r.status == 202, r
        cls.other_req = r.json()["request"]
        cls.other_vm = cls.other_req["vms"][0]["id"]
        for vm in cls.vms:
            mem.wait_vm(vm, ("ACTIVE",))
        oth.wait_vm(cls.other_vm, ("ACTIVE",))
        cls.task = cls.req["tasks"][0]["id"]
        cls.host = list(admin.hosts())[0]
        r = admin.call("POST", "/v1/rates", {"currency": "EUR", "vcpu_hour": 1000, "ram_gb_hour": 100,
                                             "disk_gb_hour": 10})
        assert r.status == 201, r
        cls.rate = r.json()["rate"]["id"]
        r = admin.call("PUT", "/v1/groups/eng/budget", {"amount": 10 ** 9})
        assert r.status == 200, r
        # Every role's own SSH key "rbac" (a key is its owner's alone).
        with tempfile.TemporaryDirectory() as d:
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", d + "/k"],
                           check=True)
            line = open(d + "/k.pub").read().strip()
        for who in cls.users.values():
            r = who.call("POST", "/v1/keys", {"name": "rbac", "public_key": line})
            assert r.status == 201, r
        cls.image = cls.import_image("rbac-image")
        cls.network = cls.make_network("rbac-net")

    @classmethod
    def make_network(cls, name):
        """A network (on its own /24, by the name's hash): its id."""
        n = sum(name.encode()) % 250
        r = cls.api.call("POST", "/v1/networks", {"name": name, "cidr": "10.77.%d.0/24" % n,
                                                  "gateway": "10.77.%d.1" % n,
                                                  "libvirt_network": "default"})
        assert r.status == 201, r
        return r.json()["network"]["id"]

    @classmethod
    def import_image(cls, name):
        """A small qcow2 imported into the stager's store: its id, once READY."""
        import_dir = os.path.join(cls.p.data_dir, "services", "stager", "import")
        wait_until(lambda: os.path.isdir(import_dir), 20, "the stager's import directory")
        subprocess.run(["qemu-img", "create", "-f", "qcow2", os.path.join(import_dir, name), "16M"],
                       check=True, capture_output=True)
        r = cls.api.call("POST", "/v1/images", {"path": name, "name": name, "os": "debian"})
        assert r.status == 201, r
        image = r.json()["image"]["id"]
        wait_until(lambda: cls.api.get("/v1/images/" + image)["image"]["state"] == "READY", 30,
                   "image %s READY" % name)
        return image

    def call(self, role, method, path, body=None):
        if role == "anonymous":
            return self.p.http(method, path, body)
        return self.users[role].call(method, path, body)

    def assertError(self, r, status, code, field=None):
        self.assertEqual(r.status, status, r)
        err = r.json()["error"]
        self.assertEqual(err["code"], code, err)
        self.assertTrue(err["request_id"])
        if field:
            self.assertEqual(err["details"].get("field"), field, err)

    # -- groups and members --------------------------------------------------------------

    def test_group_crud_and_names_as_ids(self):
        admin = self.api
        r = admin.call("POST", "/v1/groups", {"name": "unit-a", "description": "a unit",
                                              "quota": {"vms": 5, "ram_mb": 8192}})
        self.assertEqual(r.status, 201, r)
        unit = r.json()["group"]
        self.assertEqual(r.headers["Location"], "/v1/groups/" + unit["id"])
        self.assertEqual(unit["quota"]["vms"], 5)
        self.assertIsNone(unit["parent"])
        r = admin.call("POST", "/v1/groups", {"name": "proj-a", "parent": "unit-a"})
        self.assertEqual(r.status, 201, r)
        proj = r.json()["group"]
        self.assertEqual(proj["parent"], unit["id"])
        # By id and by name alike.
        self.assertEqual(admin.get("/v1/groups/unit-a")["group"]["id"], unit["id"])
        self.assertEqual(admin.get("/v1/groups/" + unit["id"])["group"]["name"], "unit-a")
        # Filters and paging.
        self.assertEqual([g["id"] for g in admin.get("/v1/groups?name=proj-a")["groups"]],
                         [proj["id"]])
        self.assertEqual([g["id"] for g in admin.get("/v1/groups?parent=unit-a")["groups"]],
                         [proj["id"]])
        self.assertEqual(admin.get("/v1/groups?parent=no-such-group")["groups"], [])
        seen, marker = [], None
        for _ in range(20):
            page = admin.get("/v1/groups?limit=1" + ("&marker=" + marker if marker else ""))
            self.assertLessEqual(len(page["groups"]), 1)
            seen += [g["id"] for g in page["groups"]]
            marker = page["next_marker"]
            if not marker:
                break
        self.assertEqual(len(seen), len(set(seen)))
        self.assertTrue({unit["id"], proj["id"], self.g["id"]} <= set(seen))
        # Change, with and without a version.
        r = admin.call("PATCH", "/v1/groups/unit-a", {"cost_centre": "CC-7", "version": 1})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["group"]["version"], 2)
        self.assertError(admin.call("PATCH", "/v1/groups/unit-a",
                                    {"description": "x", "version": 1}), 409, "CONFLICT")
        # Not deleted while a group is inside; then moved out, and gone.
        self.assertError(admin.call("DELETE", "/v1/groups/unit-a"), 409, "CONFLICT")
        r = admin.call("PATCH", "/v1/groups/proj-a", {"parent": ""})
        self.assertEqual(r.status, 200, r)
        self.assertIsNone(r.json()["group"]["parent"])
        r = admin.call("DELETE", "/v1/groups/unit-a")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["group"]["name"], "unit-a")
        self.assertError(admin.call("GET", "/v1/groups/unit-a"), 404, "NOT_FOUND")
        self.assertError(admin.call("GET", "/v1/groups/" + unit["id"]), 404, "NOT_FOUND")
        self.assertEqual(admin.call("DELETE", "/v1/groups/proj-a").status, 200)

    def test_group_with_live_vms_is_not_deleted(self):
        admin = self.api
        self.assertEqual(admin.call("POST", "/v1/groups", {"name": "shortlived"}).status, 201)
        self.assertEqual(admin.call("POST", "/v1/groups/shortlived/members",
                                    {"user": "oth", "role": "member"}).status, 201)
        oth = self.users["other"]
        wait_until(lambda: oth.call("GET", "/v1/groups/shortlived").status == 200, 5,
                   "the membership reaches the gateway")
        r = oth.call("POST", "/v1/requests", {"template": "small", "name": "s",
                                              "group": "shortlived"})
        self.assertEqual(r.status, 202, r)
        vm = r.json()["request"]["vms"][0]["id"]
        oth.wait_vm(vm, ("ACTIVE",))
        self.assertEqual(admin.call("DELETE", "/v1/groups/shortlived/members/oth").status, 200)
        r = admin.call("DELETE", "/v1/groups/shortlived")
        self.assertError(r, 409, "CONFLICT")
        self.assertIn("VMs", r.json()["error"]["message"])
        self.assertEqual(admin.wait_task(admin.dispose(vm)["id"])["state"], "SUCCEEDED")
        self.assertEqual(admin.call("DELETE", "/v1/groups/shortlived").status, 200)

    def test_group_errors_name_the_field(self):
        admin = self.api
        for body, field in [({}, "name"), ({"name": "x", "colour": "red"}, "colour"),
                            ({"name": 7}, "name"), ({"name": "Bad Name"}, "name"),
                            ({"name": str(uuid.uuid4())}, "name"),
                            ({"name": "x", "quota": {"vms": -1}}, "quota"),
                            ({"name": "x", "quota": {"cpus": 1}}, "quota"),
                            ({"name": "x", "cost_centre": "c" * 65}, "cost_centre"),
                            ({"name": "x", "parent": "no-such-group"}, "parent")]:
            with self.subTest(body=body):
                self.assertError(admin.call("POST", "/v1/groups", body), 400, "BAD_REQUEST",
                                 field)
        r = admin.call("POST", "/v1/groups", {"name": "eng"})
        self.assertError(r, 409, "CONFLICT", "name")
        self.assertError(admin.call("PATCH", "/v1/groups/eng", {}), 400, "BAD_REQUEST",
                         "cost_centre")
        self.assertError(admin.call("PATCH", "/v1/groups/eng", {"name": "x"}), 400,
                         "BAD_REQUEST", "name")
        self.assertError(admin.call("GET", "/v1/groups/no-such-group"), 404, "NOT_FOUND")
        self.assertError(admin.call("GET", "/v1/groups?limit=0"), 400, "BAD_REQUEST", "limit")
        self.assertError(admin.call("GET", "/v1/groups?colour=red"), 400, "BAD_REQUEST",
                         "colour")
        # Not deleted while it has members.
        self.assertError(admin.call("DELETE", "/v1/groups/eng"), 409, "CONFLICT")

    def test_templates_a_group_offers(self):
        """A group offers some templates: a request for another is 403 naming the field, the
        catalog filtered by the group lists only those, [] offers every one again."""
        admin, mem, oth = self.users["admin"], self.users["member"], self.users["other"]
        r = admin.call("POST", "/v1/groups", {"name": "narrow", "templates": ["small"]})
        self.assertEqual(r.status, 201, r)
        g = r.json()["group"]
        self.addCleanup(admin.call, "DELETE", "/v1/groups/" + g["id"])
        self.assertEqual(g["templates"], ["small"])
        self.assertEqual(admin.call("POST", "/v1/groups/narrow/members",
                                    {"user": "oth", "role": "member"}).status, 201)
        self.addCleanup(admin.call, "DELETE", "/v1/groups/narrow/members/oth")
        r = oth.call("POST", "/v1/requests", {"template": "medium", "name": "nope",
                                              "group": "narrow"})
        self.assertError(r, 403, "FORBIDDEN", "template")
        self.assertIn("does not offer template medium", r.json()["error"]["message"])
        # A membership changed through this gateway holds on every one of its threads at once
        # (each call may land on another thread; one of them cached oth's roles just before).
        for _ in range(8):
            self.assertEqual([t["name"] for t in oth.get("/v1/templates?group=narrow")["templates"]],
                             ["small"])
        self.assertGreater(len(oth.get("/v1/templates")["templates"]), 1)
        # A group one may not read is not found, as an unknown one.
        self.assertEqual(mem.call("GET", "/v1/templates?group=narrow").status, 404)
        self.assertEqual(mem.call("GET", "/v1/templates?group=no-such").status, 404)
        # Validation names the field; only an admin changes it.
        for bad in (["no-such-template"], ["small", "small"], "small", [7]):
            r = admin.call("PATCH", "/v1/groups/narrow", {"templates": bad})
            self.assertError(r, 400, "BAD_REQUEST", "templates")
        self.assertIn(self.users["manager"].call("PATCH", "/v1/groups/narrow",
                                                 {"templates": []}).status, (403, 404))
        r = admin.call("PATCH", "/v1/groups/narrow", {"templates": ["small", "medium"]})
        self.assertEqual((r.status, r.json()["group"]["templates"]), (200, ["small", "medium"]),
                         r)
        r = admin.call("PATCH", "/v1/groups/narrow", {"templates": []})
        self.assertEqual((r.status, r.json()["group"]["templates"]), (200, []), r)
        self.assertEqual(len(oth.get("/v1/templates?group=narrow")["templates"]),
                         len(oth.get("/v1/templates")["templates"]))

    def test_members_add_set_remove(self):
        admin, mgr = self.api, self.users["manager"]
        self.user("newbie")
        r = mgr.call("POST", "/v1/groups/eng/members", {"user": "newbie", "role": "member"})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json()["member"], {"group": self.g["id"], "user": "newbie",
                                              "role": "member"})
        self.assertEqual(r.headers["Location"], "/v1/groups/%s/members/newbie" % self.g["id"])
        self.assertError(mgr.call("POST", "/v1/groups/eng/members",
                                  {"user": "newbie", "role": "member"}), 409, "CONFLICT")
        self.assertError(mgr.call("POST", "/v1/groups/eng/members",
                                  {"user": "nobody-at-all", "role": "member"}), 404,
                         "NOT_FOUND", "user")
        self.assertError(mgr.call("POST", "/v1/groups/eng/members",
                                  {"user": "newbie", "role": "boss"}), 400, "BAD_REQUEST", "role")
        r = mgr.call("PUT", "/v1/groups/%s/members/newbie" % self.g["id"], {"role": "auditor"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["member"]["role"], "auditor")
        members = {m["user"]: m["role"] for m in admin.get("/v1/groups/eng/members")["members"]}
        self.assertEqual(members["newbie"], "auditor")
        self.assertEqual(members["mgr"], "manager")
        page = admin.get("/v1/groups/eng/members?limit=2")
        self.assertEqual(len(page["members"]), 2)
        rest = admin.get("/v1/groups/eng/members?marker=" + page["next_marker"])["members"]
        self.assertEqual([m["user"] for m in page["members"] + rest], sorted(members))
        # The new role is the gateway's within groups_cache_ms: newbie reads the group's VMs.
        newbie = Api(self.p, "newbie", PW)
        wait_until(lambda: newbie.call("GET", "/v1/vms/" + self.vms[0]).status == 200, 5,
                   "the auditor role reaches the gateway")
        r = mgr.call("DELETE", "/v1/groups/eng/members/newbie")
        self.assertEqual(r.status, 200, r)
        self.assertIsNone(r.json()["member"]["role"])
        self.assertError(mgr.call("DELETE", "/v1/groups/eng/members/newbie"), 404, "NOT_FOUND")
        wait_until(lambda: newbie.call("GET", "/v1/vms/" + self.vms[0]).status == 404, 5,
                   "the removal reaches the gateway")
        self.assertError(newbie.call("GET", "/v1/groups/eng"), 404, "NOT_FOUND")

    # -- the RBAC matrix -----------------------------------------------------------------

    def allowed(self, role, bits):
        if "PUBLIC" in bits:
            return True
        if role == "anonymous":
            return False
        if "USER" in bits or role.upper() in bits:  # ADMIN, OPERATOR
            return True
        if "OWNER" in bits and role == "member":
            return True
        return GROUP_ROLE.get(role) in bits

    def expected(self, role, action, path):
        """'ok' or the refusal status the table implies for role on the object at path."""
        table = permtable.table()
        bits = table[action][0]
        if self.allowed(role, bits):
            return "ok"
        if role == "anonymous":
            return 401
        if not bits & {"OWNER", "MEMBER", "MANAGER", "AUDITOR"}:
            return 403
        kind = path.split("?")[0].split("/")[2]
        return 403 if self.allowed(role, table[READ[kind]][0]) else 404

    def concrete(self, pattern):
        if pattern.startswith("/v1/keys/"):  # each role's own key
            return pattern.replace("{name}", "rbac")
        if pattern == "/v1/chargeback":  # a group's report: the group is a query parameter
            return pattern + "?group=eng"
        kind = pattern.split("/")[2] if pattern.startswith("/v1/") else ""
        ids = {"hosts": self.host, "requests": self.req["id"], "vms": self.vms[0],
               "tasks": self.task, "groups": "eng", "rates": self.rate, "images": self.image,
               "networks": self.network, "templates": "small"}
        return pattern.replace("{id}", ids.get(kind, "x")).replace("{user}", "extra") \
            .replace("{name}", "mem")  # the member's own user record

    def snapshot(self):
        a = self.api
        return (a.get("/v1/groups/eng")["group"], a.get("/v1/groups/eng/members")["members"],
                a.vm(self.vms[0])["state"], a.get("/v1/requests/" + self.req["id"])["request"]["state"])

    def stream_head(self, api):
        """GET /v1/events answers a stream that never ends: its status, the stream closed."""
        conn = http.client.HTTPConnection("127.0.0.1", self.p.http_port, timeout=10)
        try:
            conn.request("GET", "/v1/events", headers={"Authorization": "Bearer " + api.token})
            r = conn.getresponse()
            return berth_platform.Response(r.status, dict(r.headers), b"")
        finally:
            conn.close()

    def test_rbac_matrix_from_the_permission_table(self):
        before = self.snapshot()
        spare = list(self.vms[1:])  # a VM for each role allowed to dispose of one
        ok = {"GET": (200,), "POST": (400,), "PUT": (400,), "PATCH": (400,),
              "DELETE": (200, 202, 409)}
        cases = []
        for method, pattern, action in permtable.routes():
            for role in ROLES:
                path = self.concrete(pattern)
                cases.append((self.expected(role, action, path) != "ok", method, pattern, action,
                              role, path))
        # Refusals first (against objects still there), then what is allowed.
        for refused, method, pattern, action, role, path in sorted(cases, key=lambda c: not c[0]):
            with self.subTest(route="%s %s" % (method, pattern), role=role):
                want = self.expected(role, action, path)
                body = {"bogus": True} if method in ("POST", "PUT", "PATCH") else None
                if method == "DELETE" and pattern == "/v1/vms/{id}" and want == "ok":
                    path = "/v1/vms/" + spare.pop()
                if method == "DELETE" and pattern == "/v1/auth/keys/{id}" and want == "ok":
                    made = self.call(role, "POST", "/v1/auth/keys", {"name": "rbac"})
                    self.assertEqual(made.status, 201, made)
                    path = "/v1/auth/keys/" + made.json()["key"]["id"]
                if method == "DELETE" and pattern == "/v1/images/{id}" and want == "ok":
                    path = "/v1/images/" + self.import_image("gone-" + role)
                if method == "DELETE" and pattern == "/v1/networks/{id}" and want == "ok":
                    path = "/v1/networks/" + self.make_network("gone-" + role)
                if method == "DELETE" and pattern == "/v1/users/{name}" and want == "ok":
                    self.user("gone-" + role)
                    path = "/v1/users/gone-" + role
                if path == "/readyz":
                    continue  # 200 or 503 by the platform's state, not by role
                if path == "/v1/auth/tokens/current" and role != "anonymous":
                    # Logout revokes the token it carries: a fresh one, not the role's.
                    logins = {"member": "mem", "other": "oth", "manager": "mgr",
                              "auditor": "aud", "operator": "opr"}
                    who = Api(self.p, logins[role], PW) if role in logins else Api(self.p)
                    r = who.call(method, path, body)
                elif path == "/v1/events" and role != "anonymous":
                    r = self.stream_head(self.users[role])
                else:
                    r = self.call(role, method, path, body)
                if want == "ok":
                    self.assertIn(r.status, ok[method], r)
                    if r.status == 400:
                        self.assertEqual(r.json()["error"]["details"].get("field"), "bogus", r)
                    if method == "DELETE" and pattern.endswith("{user}"):
                        re_add = self.api.call("POST", "/v1/groups/eng/members",
                                               {"user": "extra", "role": "member"})
                        self.assertEqual(re_add.status, 201, re_add)
                else:
                    self.assertEqual(r.status, want, r)
                if not refused:
                    continue
                if want != "ok" and method != "GET":
                    self.assertEqual(self.snapshot(), before, "a refused call changed something")
        self.assertEqual(spare, [], "every role allowed to dispose of a VM did")

    # -- isolation and visibility --------------------------------------------------------

    def test_isolation_between_groups(self):
        oth, mem = self.users["other"], self.users["member"]
        for path in ["/v1/vms/" + self.vms[0], "/v1/requests/" + self.req["id"],
                     "/v1/tasks/" + self.task, "/v1/groups/eng", "/v1/groups/" + self.g["id"],
                     "/v1/groups/eng/members"]:
            with self.subTest(path=path):
                self.assertError(oth.call("GET", path), 404, "NOT_FOUND")
        self.assertError(oth.call("DELETE", "/v1/vms/" + self.vms[0]), 404, "NOT_FOUND")
        self.assertError(mem.call("GET", "/v1/vms/" + self.other_vm), 404, "NOT_FOUND")
        self.assertError(mem.call("GET", "/v1/requests/" + self.other_req["id"]), 404,
                         "NOT_FOUND")
        # Lists show only what one may see.
        listed = oth.get("/v1/vms")["vms"]
        self.assertIn(self.other_vm, {v["id"] for v in listed})
        self.assertEqual({v["owner"] for v in listed}, {"oth"})
        self.assertEqual(set(self.vms) & {v["id"] for v in listed}, set())
        self.assertEqual([g["name"] for g in oth.get("/v1/groups")["groups"]], ["sales"])
        for role in ("manager", "auditor"):
            seen = {v["id"] for v in self.users[role].get("/v1/vms?limit=500")["vms"]}
            self.assertTrue(set(self.vms[:1]) <= seen, role)
            self.assertNotIn(self.other_vm, seen, role)
        for role in ("operator", "admin"):
            seen = {v["id"] for v in self.users[role].get("/v1/vms?limit=500")["vms"]}
            self.assertTrue({self.vms[0], self.other_vm} <= seen, role)
        # Hosts are for operators and admins.
        self.assertError(mem.call("GET", "/v1/hosts"), 403, "FORBIDDEN")
        self.assertEqual(len(self.users["operator"].get("/v1/hosts")["hosts"]), 1)

    def test_task_visible_to_whoever_sees_its_vm(self):
        mem, mgr, aud = self.users["member"], self.users["manager"], self.users["auditor"]
        r = self.user("short").call("GET", "/v1/vms/" + self.vms[0])
        self.assertEqual(r.status, 404)
        # The admin disposes of a member's VM: the member and the group's auditor see the task.
        r = mem.call("POST", "/v1/requests", {"template": "small", "name": "t", "group": "eng"})
        self.assertEqual(r.status, 202, r)
        vm = r.json()["request"]["vms"][0]["id"]
        mem.wait_vm(vm, ("ACTIVE",))
        task = self.api.dispose(vm)
        for who in (mem, mgr, aud):
            self.assertEqual(who.task(task["id"])["id"], task["id"])
        self.assertError(self.users["other"].call("GET", "/v1/tasks/" + task["id"]), 404,
                         "NOT_FOUND")
        self.assertEqual(mem.wait_task(task["id"])["state"], "SUCCEEDED")
        # An auditor reads but does not dispose of; the manager's request is theirs.
        self.assertError(aud.call("DELETE", "/v1/vms/" + self.vms[0]), 403, "FORBIDDEN")
        self.assertEqual(aud.get("/v1/requests/" + self.req["id"])["request"]["id"],
                         self.req["id"])

    # -- the CLI ---------------------------------------------------------------------------

    def berth(self, home, *args, stdin=None, code=0):
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        env.update({"BERTH_URL": self.proxy.url, "XDG_CONFIG_HOME": home, "HOME": home})
        r = subprocess.run([self.p.binary("berth")] + list(args), input=stdin, env=env,
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(self.proxy.violations, [], "berth %s" % " ".join(args))
        self.assertEqual(r.returncode, code, "berth %s:\n%s\n%s" % (" ".join(args), r.stdout,
                                                                     r.stderr))
        return r

    def test_cli_groups(self):
        self.proxy = CheckedProxy(self.p)
        self.addCleanup(self.proxy.close)
        home = tempfile.mkdtemp(prefix="berth-cli-")
        self.addCleanup(shutil.rmtree, home, ignore_errors=True)
        self.berth(home, "login", "--user", self.p.admin_user, "--password-stdin",
                   stdin=self.p.admin_password + "\n")
        self.user("clia")
        out = self.berth(home, "groups", "create", "cli-unit", "--cost-centre", "CC-9",
                         "--quota-vms", "3").stdout
        self.assertRegex(out, r"cost_centre:\s+CC-9")
        self.assertRegex(out, r"quota.vms:\s+3")
        self.berth(home, "groups", "create", "cli-proj", "--parent", "cli-unit")
        out = self.berth(home, "groups", "list", "--parent", "cli-unit").stdout
        self.assertIn("cli-proj", out)
        self.assertEqual(len(out.splitlines()), 2, out)  # the header and cli-proj
        self.assertIn("cli-unit", self.berth(home, "groups").stdout)
        out = self.berth(home, "groups", "update", "cli-unit", "--description", "the unit").stdout
        shown = json.loads(self.berth(home, "-o", "json", "groups", "update", "cli-unit",
                                      "--templates", "small,medium").stdout)
        self.assertEqual(shown["group"]["templates"], ["small", "medium"])
        out2 = self.berth(home, "templates", "--group", "cli-unit").stdout
        self.assertIn("medium", out2)
        self.assertNotIn("large", out2)
        shown = json.loads(self.berth(home, "-o", "json", "groups", "update", "cli-unit",
                                      "--templates", "").stdout)
        self.assertEqual(shown["group"]["templates"], [])
        self.assertRegex(out, r"description:\s+the unit")
        self.assertRegex(out, r"version:\s+2")
        out = self.berth(home, "groups", "add-member", "cli-unit", "clia", "--role",
                         "manager").stdout
        self.assertIn("clia is manager of group cli-unit", out)
        self.berth(home, "groups", "set-role", "cli-unit", "clia", "--role", "auditor")
        out = self.berth(home, "groups", "members", "cli-unit").stdout
        self.assertRegex(out, r"clia\s+auditor")
        members = json.loads(self.berth(home, "-o", "json", "groups", "members",
                                        "cli-unit").stdout)["members"]
        self.assertEqual(members, [{"group": members[0]["group"], "user": "clia",
                                    "role": "auditor"}])
        r = self.berth(home, "groups", "delete", "cli-unit", code=1)
        self.assertIn("CONFLICT", r.stderr)
        self.berth(home, "groups", "remove-member", "cli-unit", "clia")
        self.berth(home, "groups", "update", "cli-proj", "--parent", "")
        self.assertIn("deleted group cli-unit", self.berth(home, "groups", "delete",
                                                           "cli-unit").stdout)
        r = self.berth(home, "groups", "show", "cli-unit", code=1)
        self.assertIn("NOT_FOUND", r.stderr)
        self.berth(home, "groups", "add-member", "cli-proj", "clia", code=2)
        self.berth(home, "groups", "frobnicate", code=2)
        self.assertIn("add-member", self.berth(home, "groups", "help").stdout)


if __name__ == "__main__":
    unittest.main()
