#!/usr/bin/env python3
"""The portal in a real browser (issue 11): starts the platform as the integration tests do,
makes two groups with a member each (ann in eng, bob in ops), then runs portal.test.mjs (Debian's chromium driven by
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
        # Two hosts: host-1 goes into maintenance and back in story 3; host-2 (32 GB) takes
        # the large VM of story 2.
        p.start_all(agents=2)
        admin = Api(p)
        wait_until(lambda: len(admin.get("/v1/hosts")["hosts"]) == 2, 30, "the hosts reported")
        for group, user in (("eng", "ann"), ("ops", "bob")):
            r = admin.call("POST", "/v1/groups", {"name": group})
            assert r.status == 201, r
            admin.create_user(user, PW)
            r = admin.call("POST", "/v1/groups/%s/members" % r.json()["group"]["id"],
                           {"user": user, "role": "member"})
            assert r.status == 201, r
        env = dict(os.environ, BERTH_URL=p.url, BERTH_USER="ann", BERTH_PASSWORD=PW,
                   BERTH_OTHER="bob", BERTH_ADMIN_USER=p.admin_user,
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
