#!/usr/bin/env python3
# ctest: heavy
"""The stager's loop never waits on its tools: the real berth-stager, with a qemu-img that
hangs until the test lets it go, keeps answering Ping while it prepares its base images, then
finishes preparing once the tool returns.

The stand-in qemu-img is a script that marks that it started, blocks reading one line from a
FIFO the test holds, and then runs the real qemu-img. Before the stager ran qemu-img on a
worker, its loop sat inside the first run and no Ping was answered.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_stager_loop.py
"""

import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import Platform, wait_until  # noqa: E402

SLOW_QEMU_IMG = """#!/bin/sh
echo started >> "{marks}"
read go < "{fifo}"
exec qemu-img "$@"
"""


class StagerLoop(unittest.TestCase):
    def setUp(self):
        self.p = Platform()
        self.addCleanup(self.p.stop)
        self.p.start_redis()
        tools = os.path.join(self.p.data_dir, "tools")
        os.makedirs(tools)
        self.fifo = os.path.join(tools, "gate")
        self.marks = os.path.join(tools, "marks")
        os.mkfifo(self.fifo)
        # Held open read-write by the test: the tool's open never blocks, its read does.
        self.gate = os.open(self.fifo, os.O_RDWR)
        self.addCleanup(os.close, self.gate)
        script = os.path.join(tools, "qemu-img-slow")
        with open(script, "w") as f:
            f.write(SLOW_QEMU_IMG.format(marks=self.marks, fifo=self.fifo))
        os.chmod(script, 0o755)
        self.port = self.p.free_port()
        self.endpoint = "tcp://127.0.0.1:%d" % self.port
        self.stager = self.p.start("stager", env={"BERTH_QEMU_IMG": script,
                                                  "BERTH_BIND": self.endpoint,
                                                  "BERTH_TOOL_TIMEOUT_MS": "120000"})

    def ping(self):
        r = subprocess.run(self.p.probe_argv("ping", self.endpoint, server="stager"),
                           capture_output=True, text=True, timeout=30)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def started_runs(self):
        try:
            with open(self.marks) as f:
                return len(f.read().split())
        except FileNotFoundError:
            return 0

    def test_ping_answered_while_qemu_img_hangs(self):
        wait_until(lambda: self.started_runs() >= 1, timeout=30, what="qemu-img started")
        # The tool is stuck in its first run: the loop answers anyway, every time.
        for _ in range(5):
            status = self.ping()
            self.assertIsNotNone(status, "Ping not answered while qemu-img runs")
            self.assertEqual(status["service"], "stager")
        self.assertEqual(self.started_runs(), 1)
        self.assertEqual(self.p.redis_command("SCARD", "berth:images"), 0)
        self.assertTrue(self.stager.alive())

        # Let every run go: the base images get made and recorded.
        os.write(self.gate, b"go\n" * 8)
        wait_until(lambda: self.p.redis_command("SCARD", "berth:images") == 2, timeout=60,
                   what="both base images recorded")
        self.assertEqual(self.started_runs(), 2)
        self.assertIsNotNone(self.ping())


if __name__ == "__main__":
    unittest.main()
