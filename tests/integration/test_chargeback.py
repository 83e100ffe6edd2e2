#!/usr/bin/env python3
"""Chargeback through the REST API and the CLI, with every service and one simulated host:

- an admin sets a rate card, a group's VMs run, are stopped and shelved, and a second card
  takes effect while they do (a rate change in the middle);
- GET /v1/chargeback's total equals what this test computes on its own from GET /v1/usage
  (read on each side of the rate change) and the two cards, rounded once per VM and day;
- the JSON and the CSV (`Accept: text/csv`) agree to the minor unit, and so do the totals of
  by=day, month, vm and user, and `berth chargeback`'s.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_chargeback.py
"""

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
from fractions import Fraction

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import PlatformCase, wait_until  # noqa: E402

TINY = {"vcpus": 1, "ram_mb": 512, "disk_gb": 10}
# Two cards; large prices so that a few seconds cost many minor units.
CARD1 = {"currency": "EUR", "vcpu_hour": 360000000000, "ram_gb_hour": 72000000000,
         "disk_gb_hour": 3600000000, "templates": {"tiny": 86400000},
         "factors": {"running": 1000, "stopped": 400, "shelved": 400, "expired": 400}}
CARD2 = {"currency": "EUR", "vcpu_hour": 720000000000, "ram_gb_hour": 36000000000,
         "disk_gb_hour": 7200000000, "templates": {"tiny": 172800000},
         "factors": {"running": 1000, "stopped": 250, "shelved": 250, "expired": 250}}


def exact(card, compute_ms, disk_only_ms):
    """The exact charge (a Fraction of minor units) of a tiny VM under card."""
    hour = Fraction(3600 * 1000 * 1000)  # prices are per 1,000 hours, in ms
    disk = Fraction(card["disk_gb_hour"] * TINY["disk_gb"]) / hour + \
        Fraction(card["templates"]["tiny"], 86400 * 1000)
    compute = Fraction(card["vcpu_hour"] * TINY["vcpus"]) / hour + \
        Fraction(card["ram_gb_hour"] * TINY["ram_mb"], 1024) / hour
    f = card["factors"]
    return ((compute + disk) * compute_ms * Fraction(f["running"], 1000) +
            disk * disk_only_ms * Fraction(f["stopped"], 1000))


class Chargeback(PlatformCase):
    agents = 1
    wait_hosts = 1

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.api.create_template(name="tiny", vcpus=1, ram_mb=512, disk_gb=10, os="debian",
                                image="debian-12", lease_days=1, requires_approval=False)

    def act(self, vm, action, **extra):
        r = self.api.call("POST", "/v1/vms/%s/actions" % vm["id"], dict(extra, action=action))
        self.assertEqual(r.status, 202, r)
        self.assertEqual(self.api.wait_task(r.json()["task"]["id"])["state"], "SUCCEEDED")

    def usage(self, group, start, end):
        """{vm: (compute ms, disk-only ms)} of the group's VMs in [start, end) (unix s)."""
        rows = self.api.get("/v1/usage?group=%s&from=%d&to=%d" % (group, start, end))["usage"]
        return {u["vm"]: (round(u["active_hours"] * 3.6e6), round(u["disk_only_hours"] * 3.6e6))
                for u in rows}

    def report(self, group, start, end, by, accept=None):
        r = self.api.call("GET", "/v1/chargeback?group=%s&from=%d&to=%d&by=%s" %
                          (group, start, end, by), headers={"Accept": accept} if accept else None)
        self.assertEqual(r.status, 200, r)
        return r

    def test_totals_match_usage_and_cards(self):
        start = int(time.time())
        r = self.api.call("POST", "/v1/rates", CARD1)
        self.assertEqual(r.status, 201, r)
        r = self.api.call("POST", "/v1/groups", {"name": "finance"})
        self.assertEqual(r.status, 201, r)
        group = r.json()["group"]["id"]
        vms = []
        for name in ("run", "stop", "shelf"):
            r = self.api.call("POST", "/v1/requests",
                              {"template": "tiny", "name": name, "group": "finance"})
            self.assertEqual(r.status, 202, r)
            vms.append(r.json()["request"]["vms"][0]["id"])
        vms = [self.api.wait_vm(v, ("ACTIVE",)) for v in vms]
        self.act(vms[1], "stop", force=True)
        # The second card takes effect at a whole second so that usage can be read on each
        # side of it.
        change = int(time.time()) + 2
        r = self.api.call("POST", "/v1/rates", dict(CARD2, effective=str(change)))
        self.assertEqual(r.status, 201, r)
        self.act(vms[2], "shelve", force=True)
        wait_until(lambda: time.time() > change + 1, 10, "the rate change")
        for vm in vms:
            self.api.dispose(vm["id"])
        for vm in vms:
            self.api.wait_vm(vm["id"], ("DISPOSED",))
        end = int(time.time()) + 1
        wait_until(lambda: time.time() > end, 5, "the window's end")
        if time.gmtime(start).tm_yday != time.gmtime(end).tm_yday:
            self.skipTest("the window crosses a UTC midnight")

        def expected():
            before, after = self.usage(group, start, change), self.usage(group, change, end)
            total = 0
            for vm in vms:
                x = exact(CARD1, *before.get(vm["id"], (0, 0))) + \
                    exact(CARD2, *after.get(vm["id"], (0, 0)))
                total += (x + Fraction(1, 2)).__floor__()  # rounded once, half up
            return total

        # The meter books the last events asynchronously: wait until both sides agree.
        want = wait_until(lambda: (lambda e: e if e == self.report(
            group, start, end, "vm").json()["total"] else None)(expected()), 15,
            "the chargeback equals the usage priced by the cards")
        self.assertGreater(want, 0)
        # Each VM ran (compute) and was billed on each side of the change.
        before = self.usage(group, start, change)
        self.assertTrue(all(before[v["id"]][0] > 0 for v in vms), before)
        after = self.usage(group, change, end)
        self.assertGreater(after[vms[0]["id"]][0], 0, after)
        self.assertGreater(after[vms[2]["id"]][1], 0, after)

        for by in ("day", "month", "vm", "user"):
            body = self.report(group, start, end, by).json()
            self.assertEqual((body["total"], body["by"], body["currency"]), (want, by, "EUR"))
            self.assertEqual(sum(row["amount"] for row in body["rows"]), want, body)
            text = self.report(group, start, end, by, "text/csv").body.decode()
            lines = list(csv.reader(io.StringIO(text)))
            self.assertEqual(lines[-1][0], "total", text)
            self.assertEqual(int(lines[-1][-3]), want, text)
            amount = lines[0].index("amount")
            self.assertEqual(sorted(int(row[amount]) for row in lines[1:-1]),
                             sorted(row["amount"] for row in body["rows"]), text)
        vm_rows = self.report(group, start, end, "vm").json()["rows"]
        self.assertEqual(sorted(r["vm"] for r in vm_rows), sorted(v["id"] for v in vms))

        home = tempfile.mkdtemp(prefix="berth-cli-")
        self.addCleanup(shutil.rmtree, home, ignore_errors=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        env.update({"BERTH_URL": self.p.url, "XDG_CONFIG_HOME": home, "HOME": home})

        def berth(*args, stdin=None):
            r = subprocess.run([self.p.binary("berth")] + list(args), input=stdin, env=env,
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, "berth %s: %s %s" % (args, r.stdout, r.stderr))
            return r.stdout
        berth("login", "--user", self.p.admin_user, "--password-stdin",
              stdin=self.p.admin_password + "\n")
        out = berth("chargeback", "--group", "finance", "--from", str(start), "--to", str(end),
                    "--by", "user", "-o", "json")
        self.assertEqual(json.loads(out)["total"], want)
        cards = json.loads(berth("rates", "-o", "json"))
        cards = cards["rates"] if isinstance(cards, dict) else cards
        self.assertIn(change * 1000, [c["effective_ms"] for c in cards])
        # A card made with the CLI, shown as a table and as JSON, as the API stores it.
        later = int(time.time()) + 30 * 86400
        out = berth("rate", "create", "--currency", "EUR", "--vcpu-hour", "5", "--ram-gb-hour", "6",
                    "--disk-gb-hour", "7", "--effective", str(later), "--templates", "tiny=8",
                    "--note", "next month")
        self.assertIn("next month", out)
        card = [c for c in self.api.get("/v1/rates")["rates"] if c.get("note") == "next month"][0]
        self.assertEqual((card["vcpu_hour"], card["templates"], card["effective_ms"]),
                         (5, {"tiny": 8}, later * 1000))
        self.assertEqual(json.loads(berth("rate", "show", card["id"], "-o", "json"))["rate"], card)
        self.assertIn(card["id"], berth("rate", "show", card["id"]))


if __name__ == "__main__":
    unittest.main()
