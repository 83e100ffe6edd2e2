"""Configuring the build again changes nothing: every object's flags stay as they were, so
`make run` twice in a row compiles nothing the second time. (CMake's pkg-config cache used to
turn libzmq's "-isystem" include directory into a compile option on every second run.)"""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def flags(build_dir):
    """Every flags.make of the build tree: relative path -> text."""
    out = {}
    for top, _dirs, files in os.walk(build_dir):
        if "flags.make" in files:
            path = os.path.join(top, "flags.make")
            with open(path) as f:
                out[os.path.relpath(path, build_dir)] = f.read()
    return out


class Reconfigure(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="berth-cmake-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def configure(self):
        subprocess.run(["cmake", "-S", ROOT, "-B", self.dir, "-DCMAKE_BUILD_TYPE=Debug"],
                       check=True, capture_output=True)
        return flags(self.dir)

    def test_second_and_third_configure_keep_every_flag(self):
        first = self.configure()
        self.assertIn(os.path.join("CMakeFiles", "berth-gateway.dir", "flags.make"), first)
        for run in ("second", "third"):
            again = self.configure()
            self.assertEqual(sorted(first), sorted(again))
            for path in first:
                self.assertEqual(first[path], again[path],
                                 "%s changed on the %s configure" % (path, run))


if __name__ == "__main__":
    sys.exit(unittest.main())
