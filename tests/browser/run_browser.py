#!/usr/bin/env python3
"""The portal in a real browser (issue 11): starts the platform as the integration tests do,
makes a group and a member, then runs portal.test.mjs (Debian's chromium driven by
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
        p.start_all(agents=1)
        admin = Api(p)
        wait_until(lambda: len(admin.get("/v1/hosts")["hosts"]) == 1, 30, "the host reported")
        r = admin.call("POST", "/v1/groups", {"name": "eng"})
        assert r.status == 201, r
        group = r.json()["group"]["id"]
        admin.create_user("ann", PW)
        r = admin.call("POST", "/v1/groups/%s/members" % group, {"user": "ann", "role": "member"})
        assert r.status == 201, r
        env = dict(os.environ, BERTH_URL=p.url, BERTH_USER="ann", BERTH_PASSWORD=PW,
                   BERTH_OUT=out, BERTH_CHROMIUM=chromium)
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
