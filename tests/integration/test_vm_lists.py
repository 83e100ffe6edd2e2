#!/usr/bin/env python3
"""VM lists and VMs by name (issue 10, Reconciliation): disposed VMs leave the default list
and are listed with ?state=DISPOSED; the filters state, owner, host, name and group, with
paging; a VM is named by its name wherever its id is taken, within what the caller may see
(the same name in two groups is two VMs; an admin who sees both gets 409 with the
candidates), and a disposed VM's name is free again.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_vm_lists.py
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import CheckedProxy, PlatformCase  # noqa: E402

PW = "lists-test-pw-1"


class VmLists(PlatformCase):
    agents = 1
    wait_hosts = 1

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            admin = cls.api
            cls.groups = {}
            for g in ("eng", "sales"):
                r = admin.call("POST", "/v1/groups", {"name": g})
                assert r.status == 201, r
                cls.groups[g] = r.json()["group"]["id"]
            cls.mem = admin.create_user("mem", PW)
            cls.oth = admin.create_user("oth", PW)
            for name, group in (("mem", "eng"), ("oth", "sales")):
                r = admin.call("POST", "/v1/groups/%s/members" % group,
                               {"user": name, "role": "member"})
                assert r.status == 201, r
            cls.vms = {}
            for who, group in ((cls.mem, "eng"), (cls.oth, "sales")):
                r = who.call("POST", "/v1/requests", {"template": "small", "name": "web",
                                                      "count": 2, "group": group})
                assert r.status == 202, r
                cls.vms[group] = {v["name"]: v["id"] for v in r.json()["request"]["vms"]}
                for vm in cls.vms[group].values():
                    who.wait_vm(vm, ("ACTIVE",))
        except Exception:
            cls.p.dump_logs()
            cls.p.stop()
            raise

    def ids(self, who, query):
        r = who.call("GET", "/v1/vms?" + query)
        self.assertEqual(r.status, 200, r)
        return {v["id"] for v in r.json()["vms"]}

    def test_by_name_within_scope(self):
        self.assertEqual(self.mem.get("/v1/vms/web-1")["vm"]["id"], self.vms["eng"]["web-1"])
        self.assertEqual(self.oth.get("/v1/vms/web-1")["vm"]["id"], self.vms["sales"]["web-1"])
        r = self.api.call("GET", "/v1/vms/web-1")
        self.assertEqual(r.status, 409, r)
        err = r.json()["error"]
        self.assertEqual(err["code"], "CONFLICT")
        self.assertEqual(set(err["details"]["candidates"].split(",")),
                         {self.vms["eng"]["web-1"], self.vms["sales"]["web-1"]})
        self.assertEqual(self.mem.call("GET", "/v1/vms/no-such-vm").status, 404)

    def test_filters_and_paging(self):
        eng, sales = set(self.vms["eng"].values()), set(self.vms["sales"].values())
        self.assertEqual(self.ids(self.api, "owner=oth"), sales)
        self.assertEqual(self.ids(self.api, "group=eng"), eng)
        self.assertEqual(self.ids(self.api, "group=" + self.groups["sales"]), sales)
        self.assertEqual(self.ids(self.api, "group=no-such-group"), set())
        self.assertEqual(self.ids(self.api, "name=web-2"),
                         {self.vms["eng"]["web-2"], self.vms["sales"]["web-2"]})
        self.assertEqual(self.ids(self.mem, "name=web-2"), {self.vms["eng"]["web-2"]})
        self.assertEqual(self.ids(self.api, "host=host-1&group=eng"), eng)
        self.assertEqual(self.ids(self.api, "host=host-9"), set())
        self.assertEqual(self.ids(self.mem, "state=ACTIVE&owner=oth"), set())
        # A filtered list pages like any other.
        seen, marker = [], None
        while True:
            r = self.api.call("GET", "/v1/vms?limit=1&name=web-1" +
                              ("&marker=" + marker if marker else ""))
            self.assertEqual(r.status, 200, r)
            page = r.json()
            self.assertLessEqual(len(page["vms"]), 1)
            seen += [v["id"] for v in page["vms"]]
            marker = page["next_marker"]
            if not marker:
                break
        self.assertEqual(sorted(seen), sorted([self.vms["eng"]["web-1"], self.vms["sales"]["web-1"]]))
        for query, field in (("state=SLEEPY", "state"), ("owner=-x", "owner"),
                             ("colour=red", "colour")):
            r = self.api.call("GET", "/v1/vms?" + query)
            self.assertEqual(r.status, 400, r)
            self.assertEqual(r.json()["error"]["details"]["field"], field)

    def test_disposed_leave_the_default_list(self):
        r = self.oth.call("POST", "/v1/requests", {"template": "small", "name": "gone",
                                                   "group": "sales"})
        self.assertEqual(r.status, 202, r)
        vm = r.json()["request"]["vms"][0]["id"]
        self.oth.wait_vm(vm, ("ACTIVE",))
        r = self.oth.call("DELETE", "/v1/vms/gone")  # by name
        self.assertEqual(r.status, 202, r)
        self.oth.wait_vm(vm, ("DISPOSED",))
        self.assertNotIn(vm, self.ids(self.oth, ""))
        self.assertIn(vm, self.ids(self.oth, "state=DISPOSED"))
        self.assertNotIn(vm, self.ids(self.api, "limit=500"))
        self.assertEqual(self.ids(self.oth, "state=DISPOSED&name=gone"), {vm})
        # Its name is free again; its id still shows it.
        self.assertEqual(self.oth.call("GET", "/v1/vms/gone").status, 404)
        self.assertEqual(self.oth.vm(vm)["state"], "DISPOSED")
        # The CLI's filters are the API's (through the contract-checking proxy).
        proxy = CheckedProxy(self.p)
        self.addCleanup(proxy.close)
        home = tempfile.mkdtemp(prefix="berth-cli-")
        self.addCleanup(shutil.rmtree, home, ignore_errors=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        env.update({"BERTH_URL": proxy.url, "XDG_CONFIG_HOME": home, "HOME": home})

        def berth(*args, stdin=None):
            r = subprocess.run([self.p.binary("berth")] + list(args), input=stdin, env=env,
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            return r.stdout
        berth("login", "oth", "--password-stdin", stdin=PW + "\n")
        listed = json.loads(berth("-o", "json", "vms", "--state", "DISPOSED", "--name", "gone"))
        self.assertEqual([v["id"] for v in listed["vms"]], [vm])
        self.assertNotIn(vm, berth("vms"))
        self.assertIn(vm, berth("vm", "list", "--state", "DISPOSED"))
        self.assertEqual(proxy.violations, [])


if __name__ == "__main__":
    unittest.main()
