#!/usr/bin/env python3
"""The portal in a real browser (issue 11): starts the platform as the integration tests do,
makes two groups with a member each (ann in eng, bob in ops) and a user in no group yet (cat,
made a manager of eng in the portal), then runs portal.test.mjs (Debian's chromium driven by
playwright-core, installed by `npm ci` in this directory) against it. Screenshots go to
BERTH_BROWSER_OUT (default: a temporary directory, printed).

Run: BERTH_BIN_DIR=build/bin python3 tests/browser/run_browser.py
"""

import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
from berth_test import Api, Platform, wait_until  # noqa: E402

PW = "portal-member-pw"
# host-3's libvirt commands each take this long, so that a provisioning placed there runs long
# enough to be aborted from the portal; it stays in maintenance (no placements) except while
# the abort story runs.
SLOW_HOST_DELAY_MS = 2000


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
        env = dict(os.environ, BERTH_URL=p.url, BERTH_USER="ann", BERTH_PASSWORD=PW,
                   BERTH_OTHER="bob", BERTH_MANAGER="cat", BERTH_ADMIN_USER=p.admin_user,
                   BERTH_ADMIN_PASSWORD=p.admin_password, BERTH_OUT=out,
                   BERTH_CHROMIUM=chromium)
        rc = subprocess.run(["node", os.path.join(HERE, "portal.test.mjs")], env=env,
                            cwd=HERE, timeout=480).returncode
        print("run_browser: screenshots in %s" % out)
    finally:
        if rc != 0:
            p.dump_logs()
        p.stop()
    return rc


if __name__ == "__main__":
    sys.exit(main())
