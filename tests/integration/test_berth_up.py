#!/usr/bin/env python3
# ctest: heavy
"""deploy/berth-up (what `make run` runs): it refuses an HTTP port that is already taken, at
once, naming the port, and leaves no process behind; on a free port it comes up serving HTTPS
with the self-signed certificate whose fingerprint it prints, and SIGTERM stops everything it
started.

Every process berth-up starts inherits a marker in its environment; "left behind" means a
process still carrying it.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_berth_up.py
"""

import hashlib
import http.server
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BERTH_UP = os.path.join(ROOT, "deploy", "berth-up")


def marked_pids(marker):
    """Pids of the processes whose environment carries marker."""
    needle = ("BERTH_UP_TEST_MARKER=" + marker).encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % entry, "rb") as f:
                if needle in f.read().split(b"\0"):
                    pids.append(int(entry))
        except OSError:
            pass   # gone meanwhile, or not ours to read
    return pids


def wait_gone(marker, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = marked_pids(marker)
        if not pids:
            return []
        time.sleep(0.1)
    return marked_pids(marker)


class BerthUp(unittest.TestCase):
    def setUp(self):
        self.data = tempfile.mkdtemp(prefix="berth-up-")
        self.addCleanup(shutil.rmtree, self.data, True)
        self.marker = uuid.uuid4().hex
        self.addCleanup(self.kill_leftovers)
        self.env = dict(os.environ, BERTH_DATA_DIR=self.data, BERTH_UP_TEST_MARKER=self.marker,
                        BERTH_ADMIN_PASSWORD="berth-up-test-pw")
        self.env.setdefault("BERTH_BIN_DIR", os.path.join(ROOT, "build", "bin"))

    def kill_leftovers(self):
        for pid in marked_pids(self.marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def test_taken_port_fails_at_once_and_leaves_nothing(self):
        # The port's holder even answers /readyz like a ready Berth: berth-up must not take
        # its word for its own gateway's.
        class Ready(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = b'{"status": "ready"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        holder = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ready)
        threading.Thread(target=holder.serve_forever, daemon=True).start()
        self.addCleanup(holder.server_close)
        self.addCleanup(holder.shutdown)
        port = holder.server_address[1]
        env = dict(self.env, BERTH_HTTP_PORT=str(port))
        r = subprocess.run([sys.executable, BERTH_UP], env=env, capture_output=True, text=True,
                           timeout=120)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("port %d is already in use" % port, r.stderr)
        self.assertNotIn("Berth is up", r.stdout)
        self.assertEqual(wait_gone(self.marker), [])
        # Nothing was started at all: no service wrote a log.
        logs = os.path.join(self.data, "logs")
        self.assertEqual(os.listdir(logs) if os.path.isdir(logs) else [], [])

    def test_free_port_comes_up_and_sigterm_stops_everything(self):
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        # A short time scale, as for watching leases end: every service runs on it.
        env = dict(self.env, BERTH_HTTP_PORT=str(port), BERTH_CLOCK_SCALE="8640")
        proc = subprocess.Popen([sys.executable, BERTH_UP, "--agents", "1"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()   # "Berth is up." once ready, "" if it exited
            self.assertEqual(line.strip(), "Berth is up.", proc.stderr.read()
                             if proc.poll() is not None else line)
            self.assertTrue(marked_pids(self.marker))
            printed = []
            while not printed or not printed[-1].startswith("Ctrl-C"):
                printed.append(proc.stdout.readline().strip())
                self.assertTrue(printed[-1], "berth-up stopped printing: %r" % printed)
            self.assertIn("clock:     8640x real time (a day in 10 s; BERTH_CLOCK_SCALE)",
                          printed)
            logs = next(l.split()[-1] for l in printed if l.startswith("logs:"))
            with open(os.path.join(logs, "taskmgr.log")) as f:
                self.assertIn('"clock_scale":{"value":"8640","origin":"env"}', f.read())
            url = next(l.split()[-1] for l in printed if l.startswith("URL:"))
            self.assertEqual(url, "https://127.0.0.1:%d" % port)
            fingerprint = next(l.split()[-1] for l in printed if l.startswith("SHA-256"))
            cert = os.path.join(self.data, "secrets", "gateway.crt")
            context = ssl.create_default_context(cafile=cert)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    der = tls.getpeercert(binary_form=True)
                    tls.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    answer = tls.recv(64)
            digest = hashlib.sha256(der).hexdigest().upper()
            self.assertEqual(fingerprint, ":".join(digest[i:i + 2] for i in range(0, 64, 2)))
            self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer)
            # The portal the printed URL promises, from the clone's gateway/web.
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    page = b""
                    while b"</html>" not in page:
                        chunk = tls.recv(65536)
                        if not chunk:
                            break
                        page += chunk
            self.assertTrue(page.startswith(b"HTTP/1.1 200"), page[:200])
            self.assertIn(b"text/html", page.split(b"\r\n\r\n", 1)[0])
            self.assertIn(b'<script type="module" src="/js/app.js">', page)
            proc.send_signal(signal.SIGTERM)
            self.assertEqual(proc.wait(60), 0)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        self.assertEqual(wait_gone(self.marker), [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
