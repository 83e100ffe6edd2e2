#!/usr/bin/env python3
"""The portal in a real browser (issue 11): starts the platform as the integration tests do,
makes two groups with a member each (ann in eng, bob in ops), a user in no group yet (cat,
made a manager of eng in the portal), a reservation-based group lab with its member dan and a rate card in force from the start, then runs
portal.test.mjs (Debian's chromium driven by playwright-core, installed by `npm ci` in this
directory) against it. Every API call the pages made is then held to docs/openapi.yaml
(contract.py, as the integration tests' calls are). Screenshots go to BERTH_BROWSER_OUT
(default: a temporary directory, printed).

Run: BERTH_BIN_DIR=build/bin python3 tests/browser/run_browser.py
"""

import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
from berth_test import Api, Platform, berth_platform, contract, wait_until  # noqa: E402

PW = "portal-member-pw"
# host-3's libvirt commands each take this long, so that a provisioning placed there runs long
# enough to be aborted from the portal; it stays in maintenance (no placements) except while
# the abort story runs.
SLOW_HOST_DELAY_MS = 2000
# The rate card in force from the start (EUR, minor units per 1,000 hours): every VM the
# stories run is charged, enough that a few minutes show in cents.
RATE_CARD = {"currency": "EUR", "vcpu_hour": 36000000, "ram_gb_hour": 3600000,
             "disk_gb_hour": 360000, "note": "portal stories"}


def check_calls(path):
    """Holds every API call the portal made (recorded by portal.test.mjs) and its answer to
    docs/openapi.yaml, as the integration tests' HTTP helper does; 0 when all keep to it."""
    with open(path) as f:
        calls = json.load(f)
    bad = []
    for c in calls:
        body = c["body"]
        if body is not None and "json" in c["headers"].get("content-type", ""):
            try:
                body = json.loads(body)
            except ValueError:
                pass
        answer = berth_platform.Response(c["status"], c["response_headers"], c["response_body"].encode())
        try:
            contract.CONTRACT.check(c["method"], c["path"], c["headers"], body, answer)
        except contract.ContractError as e:
            bad.append('during "%s": %s' % (c["step"], e))
    print("run_browser: %d API calls of the portal checked against docs/openapi.yaml, %d depart"
          % (len(calls), len(bad)))
    for b in bad:
        print("  " + b, file=sys.stderr)
    return 1 if bad or not calls else 0


def main():
    chromium = os.environ.get("BERTH_CHROMIUM", "/usr/bin/chromium")
    for need, what in ((chromium, "chromium (deploy/install-deps installs it)"),
                       (os.path.join(HERE, "node_modules", "playwright-core"),
                        "playwright-core (npm ci in tests/browser; make test runs it)")):
        if not os.path.exists(need):
            print("run_browser: missing %s: %s" % (what, need), file=sys.stderr)
            return 1
    out = os.environ.get("BERTH_BROWSER_OUT") or tempfile.mkdtemp(prefix="berth-browser-")
    os.makedirs(out, exist_ok=True)
    p = Platform()
    rc = 1
    try:
        # Three hosts: host-1 goes into maintenance and back in story 3; host-2 (32 GB) takes
        # the large VM of story 2; host-3 (slow libvirt) takes the VM aborted in story 6.
        p.start_all(agents=2)
        p.start_agent(3, env={"BERTH_LIBVIRT_DELAY_MS": str(SLOW_HOST_DELAY_MS)})
        admin = Api(p)
        wait_until(lambda: len(admin.get("/v1/hosts")["hosts"]) == 3, 30, "the hosts reported")
        slow = [h for h in admin.get("/v1/hosts")["hosts"] if h["name"] == "host-3"][0]
        r = admin.call("POST", "/v1/hosts/%s/maintenance" % slow["id"], {"enabled": True})
        assert r.status == 200, r
        for group, user in (("eng", "ann"), ("ops", "bob")):
            r = admin.call("POST", "/v1/groups", {"name": group})
            assert r.status == 201, r
            admin.create_user(user, PW)
            r = admin.call("POST", "/v1/groups/%s/members" % r.json()["group"]["id"],
                           {"user": user, "role": "member"})
            assert r.status == 201, r
        admin.create_user("cat", PW)
        # lab is charged for what it reserves (story 7): dan is its member.
        r = admin.call("POST", "/v1/groups", {"name": "lab", "charging_model": "reservation"})
        assert r.status == 201, r
        r = admin.call("PUT", "/v1/groups/lab/reservations",
                       {"reservations": [{"vcpus": 1, "ram_mb": 1024, "disk_gb": 10}]})
        assert r.status == 200, r
        admin.create_user("dan", PW)
        r = admin.call("POST", "/v1/groups/lab/members", {"user": "dan", "role": "member"})
        assert r.status == 201, r
        r = admin.call("POST", "/v1/rates", RATE_CARD)
        assert r.status == 201, r
        # Story 7 imports an image from a file it makes in the stager's import directory.
        import_dir = os.path.join(p.data_dir, "services", "stager", "import")
        wait_until(lambda: os.path.isdir(import_dir), 20, "the stager's import directory")
        env = dict(os.environ, BERTH_URL=p.url, BERTH_USER="ann", BERTH_PASSWORD=PW,
                   BERTH_OTHER="bob", BERTH_MANAGER="cat", BERTH_RESERVED_USER="dan", BERTH_ADMIN_USER=p.admin_user,
                   BERTH_ADMIN_PASSWORD=p.admin_password, BERTH_OUT=out,
                   BERTH_CHROMIUM=chromium, BERTH_IMPORT_DIR=import_dir)
        rc = subprocess.run(["node", os.path.join(HERE, "portal.test.mjs")], env=env,
                            cwd=HERE, timeout=480).returncode
        print("run_browser: screenshots in %s" % out)
        if rc == 0:
            rc = check_calls(os.path.join(out, "api-calls.json"))
    finally:
        if rc != 0:
            p.dump_logs()
        p.stop()
    return rc


if __name__ == "__main__":
    sys.exit(main())
