#!/usr/bin/env python3
"""Chargeback through the REST API and the CLI, with every service and one simulated host:

- an admin sets a rate card, a group's VMs run, are stopped and shelved, and a second card
  takes effect while they do (a rate change in the middle);
- GET /v1/chargeback's total equals what this test computes on its own from GET /v1/usage
  (read on each side of the rate change) and the two cards, rounded once per VM and day;
- the JSON and the CSV (`Accept: text/csv`) agree to the minor unit, and so do the totals of
  by=day, month, vm and user, and `berth chargeback`'s;
- a reservation-based group (its reservation changed and a rate change while its VMs run,
  one stopped): the total equals what this test computes on its own from the event stream
  (each VM's state and power events, billed as docs/state.md's billing table says, and the
  group's reservation events): per UTC day, what it reserved plus what its VMs used beyond
  that per resource, priced as running, each day's line rounded once.

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
from berth_test import Api, PlatformCase, wait_until  # noqa: E402

TINY = {"vcpus": 1, "ram_mb": 512, "disk_gb": 10}
# Two cards; large prices so that a few seconds cost many minor units.
CARD1 = {"currency": "EUR", "vcpu_hour": 360000000000, "ram_gb_hour": 72000000000,
         "disk_gb_hour": 3600000000, "templates": {"tiny": 86400000},
         "factors": {"running": 1000, "stopped": 400, "shelved": 400, "expired": 400}}
CARD2 = {"currency": "EUR", "vcpu_hour": 720000000000, "ram_gb_hour": 36000000000,
         "disk_gb_hour": 7200000000, "templates": {"tiny": 172800000},
         "factors": {"running": 1000, "stopped": 250, "shelved": 250, "expired": 250}}


# docs/state.md, "Billed by the meter": (state, power) -> (compute, disk); "" = (any).
BILLING = {("ACTIVE", ""): (1, 1), ("ACTIVE", "STOPPED"): (0, 1), ("ACTIVE", "CRASHED"): (0, 1),
           ("EXPIRING", ""): (1, 1), ("EXPIRING", "STOPPED"): (0, 1),
           ("EXPIRING", "CRASHED"): (0, 1), ("EXPIRED", ""): (0, 1), ("SHELVING", ""): (0, 1),
           ("SHELVED", ""): (0, 1), ("UNSHELVING", ""): (0, 1)}
DAY_MS = 86400000


def billing(state, power):
    return BILLING.get((state, power), BILLING.get((state, ""), (0, 0)))


def priced_as_running(cards, vcpus, ram_mb, disk_gb, start, end):
    """The exact charge (Fraction) of [start, end) ms of that capacity, each part under the
    card in force (none before the first)."""
    total = Fraction(0)
    cards = sorted(cards, key=lambda c: c["effective_ms"])
    for i, card in enumerate(cards):
        a = max(start, card["effective_ms"])
        b = min(end, cards[i + 1]["effective_ms"]) if i + 1 < len(cards) else end
        if a < b:
            per_ms = (Fraction(card["vcpu_hour"] * vcpus) + Fraction(card["ram_gb_hour"] * ram_mb,
                                                                     1024) +
                      Fraction(card["disk_gb_hour"] * disk_gb)) / Fraction(3600 * 1000 * 1000)
            total += per_ms * (b - a) * Fraction(card["factors"]["running"], 1000)
    return total


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
        # Per user: their VMs billed in the window, VM-hours and cost (the admin owns all 3).
        user_rows = self.report(group, start, end, "user").json()["rows"]
        self.assertEqual([(r["user"], r["vms"], r["amount"], r["compute_ms"]) for r in user_rows],
                         [(self.p.admin_user, 3, want, sum(r["compute_ms"] for r in vm_rows))])
        text = self.report(group, start, end, "user", "text/csv").body.decode()
        self.assertEqual(list(csv.DictReader(io.StringIO(text)))[0]["vms"], "3", text)
        # Each VM's own charges are its row of the report.
        for row in vm_rows:
            r = self.api.call("GET", "/v1/vms/%s/charges?from=%d&to=%d" % (row["vm"], start, end))
            self.assertEqual(r.status, 200, r)
            c = r.json()["charges"]
            self.assertEqual((c["vm"], c["group"], c["total"], c["currency"]),
                             (row["vm"], group, row["amount"], "EUR"))
            self.assertEqual(sum(d["amount"] for d in c["days"]), row["amount"])

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

    def test_z_reservation_based(self):
        """Runs after the allocation test: the cards it made stay in force."""
        start = int(time.time())
        r = self.api.call("POST", "/v1/groups", {"name": "lab", "charging_model": "reservation"})
        self.assertEqual(r.status, 201, r)
        group = r.json()["group"]["id"]
        for user in ("rita", "stranger"):
            r = self.api.call("POST", "/v1/users", {"username": user, "password": "lab-pass-123"})
            self.assertEqual(r.status, 201, r)
        r = self.api.call("POST", "/v1/groups/lab/members", {"user": "rita", "role": "member"})
        self.assertEqual(r.status, 201, r)
        rita, stranger = Api(self.p, "rita", "lab-pass-123"), Api(self.p, "stranger",
                                                                  "lab-pass-123")

        def reserve(vcpus, ram_mb, disk_gb):
            items = [{"vcpus": vcpus, "ram_mb": ram_mb, "disk_gb": disk_gb}] if vcpus else []
            r = self.api.call("PUT", "/v1/groups/lab/reservations", {"reservations": items})
            self.assertEqual(r.status, 200, r)

        reserve(2, 2048, 20)
        vms = []
        for name in ("r1", "r2", "r3"):
            r = (rita if name == "r1" else self.api).call(
                "POST", "/v1/requests", {"template": "tiny", "name": name, "group": "lab"})
            self.assertEqual(r.status, 202, r)
            vms.append(r.json()["request"]["vms"][0]["id"])
        for vm in vms:
            self.api.wait_vm(vm, ("ACTIVE",))
        self.act({"id": vms[2]}, "stop", force=True)
        reserve(1, 1024, 40)
        change = int(time.time()) + 2
        r = self.api.call("POST", "/v1/rates", dict(CARD1, effective=str(change)))
        self.assertEqual(r.status, 201, r)
        wait_until(lambda: time.time() > change + 1, 10, "the rate change")
        for vm in vms:
            self.api.dispose(vm)
        for vm in vms:
            self.api.wait_vm(vm, ("DISPOSED",))
        reserve(0, 0, 0)
        end = int(time.time()) + 1
        wait_until(lambda: time.time() > end, 5, "the window's end")
        if time.gmtime(start).tm_yday != time.gmtime(end).tm_yday:
            self.skipTest("the window crosses a UTC midnight")

        # The event log: each VM's (state, power) and the group's reservations over time.
        changes = []  # (at_ms, what, vm, value)
        for entry_id, fields in self.p.redis_command("XRANGE", "berth:events", "-", "+"):
            f = dict(zip(fields[::2], fields[1::2]))
            at = int(f.get("at_ms") or entry_id.split("-")[0])
            if f.get("type") == "vm.state" and f.get("vm") in vms:
                changes.append((at, "state", f["vm"], f["state"]))
            elif f.get("type") == "vm.power" and f.get("vm") in vms:
                changes.append((at, "power", f["vm"], f.get("power_state") or f.get("state")))
            elif f.get("type") == "group.updated" and f.get("group") == group and \
                    f.get("change") == "reservations":
                changes.append((at, "reserved", None,
                                (int(f["vcpus"]), int(f["ram_mb"]), int(f["disk_gb"]))))
        self.assertEqual(len([c for c in changes if c[1] == "reserved"]), 3, changes)
        cards = self.api.get("/v1/rates")["rates"]
        state = {vm: ["", ""] for vm in vms}
        reserved = (0, 0, 0)
        lines = {}  # (day, kind) -> Fraction

        def use():
            u = [0, 0, 0]
            for vm in vms:
                compute, disk = billing(*state[vm])
                u[0] += compute * TINY["vcpus"]
                u[1] += compute * TINY["ram_mb"]
                u[2] += disk * TINY["disk_gb"]
            return u

        ms, lo, hi = 0, start * 1000, end * 1000
        bounds = sorted({c[0] for c in changes} | {c["effective_ms"] for c in cards} |
                        {lo, hi})
        for t0, t1 in zip(bounds, bounds[1:]):
            for at, what, vm, value in changes:
                if at != t0:
                    continue
                if what == "reserved":
                    reserved = value
                elif what == "state":
                    state[vm][0] = value
                elif value != "UNKNOWN":  # billed as the last known power
                    state[vm][1] = value
            a, b = max(t0, lo), min(t1, hi)
            if a >= b:
                continue
            day = a // DAY_MS
            u = use()
            beyond = [max(0, u[i] - reserved[i]) for i in range(3)]
            lines[(day, "reserved")] = lines.get((day, "reserved"), 0) + \
                priced_as_running(cards, *reserved, a, b)
            lines[(day, "beyond")] = lines.get((day, "beyond"), 0) + \
                priced_as_running(cards, *beyond, a, b)
            ms += b - a
        self.assertEqual(ms, hi - lo)
        want = sum((x + Fraction(1, 2)).__floor__() for x in lines.values())
        self.assertGreater(lines[(lo // DAY_MS, "beyond")], 0, "the VMs used beyond it")
        got = wait_until(lambda: (lambda t: t if t == want else None)(
            self.report(group, start, end, "vm").json()["total"]), 15,
            "the reservation-based chargeback equals the event log priced by the cards")
        self.assertEqual(got, want)

        body = self.report(group, start, end, "vm").json()
        self.assertEqual(body["charging_model"], "reservation")
        kinds = {row["kind"]: row for row in body["rows"] if row["kind"]}
        self.assertEqual(set(kinds), {"reserved", "beyond"})
        for kind in kinds:
            self.assertEqual(kinds[kind]["amount"], (lines[(lo // DAY_MS, kind)] +
                                                    Fraction(1, 2)).__floor__())
        vm_rows = [row for row in body["rows"] if not row["kind"]]
        self.assertEqual(sorted(row["vm"] for row in vm_rows), sorted(vms))
        self.assertEqual({row["amount"] for row in vm_rows}, {0})
        self.assertTrue(all(row["compute_ms"] > 0 for row in vm_rows), vm_rows)
        # A VM's own charges: its owner reads them (not the group's chargeback), at 0 with its
        # hours; someone outside the group is told there is no such VM.
        r = rita.call("GET", "/v1/vms/%s/charges?from=%d&to=%d" % (vms[0], start, end))
        self.assertEqual(r.status, 200, r)
        c = r.json()["charges"]
        row = [row for row in vm_rows if row["vm"] == vms[0]][0]
        self.assertEqual((c["total"], c["charging_model"]), (0, "reservation"))
        self.assertEqual(sum(d["compute_ms"] for d in c["days"]), row["compute_ms"])
        self.assertEqual(rita.call("GET", "/v1/chargeback?group=lab").status, 403)
        users = {row["user"]: row["vms"] for row in self.report(group, start, end, "user")
                 .json()["rows"] if not row["kind"]}
        self.assertEqual(users, {"rita": 1, self.p.admin_user: 2})
        r = stranger.call("GET", "/v1/vms/%s/charges" % vms[0])
        self.assertEqual((r.status, r.json()["error"]["code"]), (404, "NOT_FOUND"), r)
        r = rita.call("GET", "/v1/vms/%s/charges?from=%d&to=%d" % (vms[0], end, start))
        self.assertEqual((r.status, r.json()["error"]["details"]["field"]), (400, "to"), r)
        for by in ("day", "month", "vm", "user"):
            body = self.report(group, start, end, by).json()
            self.assertEqual(sum(row["amount"] for row in body["rows"]), want, body)
            text = self.report(group, start, end, by, "text/csv").body.decode()
            rows = list(csv.DictReader(io.StringIO(text)))
            self.assertEqual(int(rows[-1]["amount"]), want, text)
            self.assertEqual(sum(int(row["amount"]) for row in rows[:-1]), want, text)
            if by in ("vm", "user"):
                self.assertEqual({row["kind"] for row in rows[:-1]}, {"", "reserved", "beyond"})

        home = tempfile.mkdtemp(prefix="berth-cli-")
        self.addCleanup(shutil.rmtree, home, ignore_errors=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        env.update({"BERTH_URL": self.p.url, "XDG_CONFIG_HOME": home, "HOME": home})
        subprocess.run([self.p.binary("berth"), "login", "--user", self.p.admin_user,
                        "--password-stdin"], input=self.p.admin_password + "\n", env=env,
                       capture_output=True, text=True, timeout=60, check=True)
        out = subprocess.run([self.p.binary("berth"), "chargeback", "--group", "lab", "--from",
                              str(start), "--to", str(end), "--by", "vm"], env=env,
                             capture_output=True, text=True, timeout=60, check=True).stdout
        self.assertIn("(reserved)", out)
        self.assertIn("(beyond)", out)
        self.assertIn("total %d EUR" % want, out)
        self.assertIn("reservation charging", out)
        self.assertRegex(out, r"(?m)^\(reserved\) ")
        # The CLI's CSV is the API's, row for row (the window is over: nothing moves).
        for by in ("vm", "user"):
            cli_csv = subprocess.run([self.p.binary("berth"), "chargeback", "--group", "lab",
                                      "--from", str(start), "--to", str(end), "--by", by,
                                      "-o", "csv"], env=env, capture_output=True, text=True,
                                     timeout=60, check=True).stdout
            api_csv = self.report(group, start, end, by, "text/csv").body.decode()
            self.assertEqual(cli_csv.replace("\r\n", "\n"), api_csv.replace("\r\n", "\n"))
        out = subprocess.run([self.p.binary("berth"), "vm", "charges", vms[1], "--from",
                              str(start), "--to", str(end), "-o", "json"], env=env,
                             capture_output=True, text=True, timeout=60, check=True).stdout
        self.assertEqual(json.loads(out)["charges"]["vm"], vms[1])
        out = subprocess.run([self.p.binary("berth"), "vm", "charges", vms[1]], env=env,
                             capture_output=True, text=True, timeout=60, check=True).stdout
        self.assertIn("total 0 EUR", out)


if __name__ == "__main__":
    unittest.main()
