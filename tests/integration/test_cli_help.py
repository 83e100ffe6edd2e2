#!/usr/bin/env python3
"""The `berth` CLI as a new user meets it: every command of its table answers --help and
`berth help COMMAND` with its usage (exit 0), an unknown one is bad usage (exit 2); -o
json|yaml anywhere on the line; VMs named instead of their ids (an ambiguous name refused with
the candidates); request --wait names the new VMs with their ids, with a progress bar on a
terminal only; --version; the bash completion and the man page list every command; and
`cmake --install` (what `make install` runs) lays out the binaries, completion, man page,
configs, portal and systemd units, the units checked by systemd-analyze when it is there.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_cli_help.py
"""

import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import CheckedProxy, Platform  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVICES = ["gateway"] + sorted(d for d in os.listdir(os.path.join(ROOT, "services"))
                                if os.path.isdir(os.path.join(ROOT, "services", d)))


def bin_dir():
    d = os.environ.get("BERTH_BIN_DIR")
    if not d:
        raise unittest.SkipTest("BERTH_BIN_DIR is not set")   # ctest always sets it
    return os.path.abspath(d)


def run(*args, env=None, timeout=120, stdin=None):
    return subprocess.run([os.path.join(bin_dir(), "berth")] + list(args), env=env,
                          input=stdin, capture_output=True, text=True, timeout=timeout)


def commands():
    """Every command of the table (berth help --commands), and which are short forms (listed
    as such by berth help)."""
    r = run("help", "--commands")
    assert r.returncode == 0, r.stderr
    names = r.stdout.split("\n")[:-1]
    usage = run("help").stdout
    short_forms = usage[usage.index("short forms:"):]
    short = [n for n in names if re.search(r"(?m)^  %s +berth " % re.escape(n), short_forms)]
    return [n for n in names if n not in short], short


class Offline(unittest.TestCase):
    def setUp(self):
        self.listed, self.short = commands()

    def test_the_table_is_listed(self):
        self.assertGreater(len(self.listed), 40, self.listed)
        for expected in ("vm start", "vm list", "vm show", "group show", "request create",
                         "template list", "host list", "user list", "task show", "login"):
            self.assertIn(expected, self.listed)
        for alias in ("start", "vms", "templates", "hosts", "dispose", "task"):
            self.assertIn(alias, self.short)

    def test_help_of_every_command(self):
        for command in self.listed + self.short:
            words = command.split()
            for args in (words + ["--help"], ["help"] + words, words + ["-h"]):
                with self.subTest(args=args):
                    r = run(*args)
                    self.assertEqual(r.returncode, 0, r.stderr)
                    self.assertEqual(r.stderr, "")
                    self.assertTrue(r.stdout.startswith("usage: berth "), r.stdout)
                    # The usage is the command's own (an alias: its target's).
                    self.assertIn(words[0] if len(words) > 1 else "", r.stdout)
        # An alias says what it stands for.
        r = run("start", "--help")
        self.assertIn("usage: berth vm start VM", r.stdout)
        self.assertIn("short for berth vm start", r.stdout)
        # --help wins over whatever else is on the line, options included.
        r = run("vm", "stop", "some-vm", "--force", "--help", "-o", "json")
        self.assertEqual(r.returncode, 0)
        self.assertIn("usage: berth vm stop VM", r.stdout)

    def test_a_noun_alone(self):
        r = run("vm", "--help")
        self.assertEqual(r.returncode, 0)
        for verb in ("list", "show", "start", "stop", "dispose", "extend"):
            self.assertIn("vm %s" % verb, r.stdout)
        r = run("vm")
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stdout, "")
        self.assertIn("vm start", r.stderr)

    def test_unknown_command(self):
        for args in (["frobnicate"], ["help", "frobnicate"], ["vm", "frobnicate", "x"],
                     ["frobnicate", "--help"]):
            with self.subTest(args=args):
                r = run(*args)
                self.assertEqual(r.returncode, 2, r.stdout)
                self.assertEqual(r.stdout, "")
                self.assertIn("usage", r.stderr)

    def test_bad_output_format(self):
        r = run("vm", "list", "-o", "xml")
        self.assertEqual(r.returncode, 2)
        self.assertIn("table, json or yaml", r.stderr)

    def test_version(self):
        with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
            version = re.search(r"project\(berth VERSION ([0-9.]+)", f.read()).group(1)
        r = run("--version")
        self.assertEqual(r.returncode, 0)
        self.assertTrue(r.stdout.startswith("berth %s" % version), r.stdout)

    def complete(self, script, *words):
        """What the completion offers for the last of words (berth first)."""
        line = "source %s; COMP_WORDS=(berth %s); COMP_CWORD=%d; _berth; " \
               "printf '%%s\\n' \"${COMPREPLY[@]}\"" % (
                   script, " ".join("'%s'" % w for w in words), len(words))
        r = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.split()

    def test_completion_lists_every_command(self):
        with tempfile.TemporaryDirectory() as tmp:
            script = os.path.join(tmp, "berth")
            r = run("completion", "bash")
            self.assertEqual(r.returncode, 0)
            with open(script, "w") as f:
                f.write(r.stdout)
            r = subprocess.run(["bash", "-c", "source %s; complete -p berth" % script],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("-F _berth berth", r.stdout)
            first = self.complete(script, "")
            for command in self.listed + self.short:
                self.assertIn(command.split()[0], first)
            for command in self.listed:
                words = command.split()
                if len(words) == 2 and words[0] not in self.short:
                    self.assertIn(words[1], self.complete(script, words[0], ""), command)
            self.assertEqual(self.complete(script, "vm", "s"),
                             ["show", "start", "stop", "suspend", "shelve"])
            # The older one-word commands with subcommands offer them too.
            self.assertIn("add-member", self.complete(script, "groups", ""))
            self.assertIn("revoke", self.complete(script, "keys", ""))
            self.assertEqual(sorted(self.complete(script, "vms", "-o", "")),
                             ["json", "table", "yaml"])

    def test_man_page_lists_every_command(self):
        r = run("manpage")
        self.assertEqual(r.returncode, 0)
        self.assertTrue(r.stdout.startswith(".TH BERTH 1"))
        for command in self.listed:
            self.assertIn(command.replace("-", "\\-"), r.stdout)
        for alias in self.short:
            self.assertIn(".B berth %s\n" % alias.replace("-", "\\-"), r.stdout)
        if shutil.which("groff"):
            g = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z"], input=r.stdout,
                               capture_output=True, text=True, timeout=60)
            self.assertEqual((g.returncode, g.stderr), (0, ""))


class Install(unittest.TestCase):
    """What `make install` does (cmake --install of the build), staged under DESTDIR."""

    @classmethod
    def setUpClass(cls):
        cls.build = os.path.dirname(bin_dir())
        cls.tmp = tempfile.mkdtemp(prefix="berth-install-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def install(self, prefix, destdir=None):
        env = dict(os.environ)
        env.pop("DESTDIR", None)
        if destdir:
            env["DESTDIR"] = destdir
        r = subprocess.run(["cmake", "--install", self.build, "--prefix", prefix], env=env,
                           capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_destdir_layout(self):
        stage = os.path.join(self.tmp, "stage")
        self.install("/usr", destdir=stage)
        root = os.path.join(stage, "usr")
        for name in ["berth", "berth-secrets"] + ["berth-" + s for s in SERVICES]:
            path = os.path.join(root, "bin", name)
            self.assertTrue(os.access(path, os.X_OK), path)
        completion = os.path.join(root, "share/bash-completion/completions/berth")
        with open(completion) as f:
            self.assertEqual(f.read(), run("completion", "bash").stdout)
        with open(os.path.join(root, "share/man/man1/berth.1")) as f:
            self.assertEqual(f.read(), run("manpage").stdout)
        for conf in os.listdir(os.path.join(ROOT, "deploy/configs")):
            # A /usr install keeps its configs in /etc.
            self.assertTrue(os.path.isfile(os.path.join(stage, "etc/berth", conf)), conf)
        for page in os.listdir(os.path.join(ROOT, "gateway/web")):
            self.assertTrue(os.path.exists(os.path.join(root, "share/berth/web", page)), page)
        # The installed gateway serves the installed portal.
        with open(os.path.join(stage, "etc/berth/gateway.conf")) as f:
            settings = [l.split("=", 1) for l in f if re.match(r"\s*web_root\s*=", l)]
        self.assertEqual([v.strip() for _, v in settings], ["/usr/share/berth/web"])
        # One unit per service, a template for agents, all with the installed paths.
        units = os.path.join(root, "lib/systemd/system")
        for service in SERVICES + ["secrets"]:
            name = "berth-agent@.service" if service == "agent" else "berth-%s.service" % service
            with open(os.path.join(units, name)) as f:
                unit = f.read()
            with self.subTest(unit=name):
                exec_start = re.search(r"^ExecStart=(\S+)", unit, re.M).group(1)
                self.assertEqual(exec_start, "/usr/bin/berth-%s" % service)
                self.assertIn("\nUser=berth\n", unit)
                if service != "secrets":
                    self.assertIn("\nRestart=on-failure\n", unit)
                    self.assertIn("--config /etc/berth/%s.conf" % service, unit)
                self.assertNotIn("@", unit.replace("berth-agent@", "").replace("%i", ""))
        with open(os.path.join(root, "lib/sysusers.d/berth.conf")) as f:
            self.assertRegex(f.read(), r"(?m)^u berth ")

    def test_units_verify(self):
        if not shutil.which("systemd-analyze"):
            self.skipTest("no systemd-analyze (the keys are checked by test_destdir_layout)")
        # A real prefix, so that systemd-analyze finds the programs the units start.
        prefix = os.path.join(self.tmp, "prefix")
        self.install(prefix)
        units = os.path.join(prefix, "lib/systemd/system")
        names = sorted(n for n in os.listdir(units) if not n.endswith("@.service"))
        names.append("berth-agent@host-1.service")
        r = subprocess.run(["systemd-analyze", "verify", "--man=no"] + names, cwd=units,
                           capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn("berth", r.stderr, r.stderr)


class Online(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.p = Platform()
        cls.home = tempfile.mkdtemp(prefix="berth-cli-help-")
        try:
            cls.p.start_all(agents=1)
            cls.proxy = CheckedProxy(cls.p)
        except BaseException:
            cls.p.dump_logs()
            cls.p.stop()
            raise
        cls.env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        cls.env.update({"BERTH_URL": cls.proxy.url, "XDG_CONFIG_HOME": cls.home,
                        "HOME": cls.home})
        r = run("login", cls.p.admin_user, "--password-stdin", env=cls.env,
                stdin=cls.p.admin_password + "\n")
        if r.returncode != 0:
            cls.tearDownClass()
            raise AssertionError(r.stderr)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.home, ignore_errors=True)
        cls.proxy.close()
        cls.p.stop()

    def berth(self, *args, check=True):
        r = run(*args, env=self.env)
        self.assertEqual(self.proxy.violations, [], "berth %s" % " ".join(args))
        if check and r.returncode != 0:
            self.p.dump_logs()
            raise AssertionError("berth %s exited %d:\n%s\n%s"
                                 % (" ".join(args), r.returncode, r.stdout, r.stderr))
        return r

    def vm_named(self, name):
        vms = json.loads(self.berth("vm", "list", "-o", "json").stdout)["vms"]
        return [v for v in vms if v["name"] == name]

    def test_names_formats_and_wait(self):
        r = self.berth("request", "create", "small", "named-vm", "--wait")
        vm = self.vm_named("named-vm")[0]
        # --wait names the new VM with its id; not a terminal: plain lines, no bar.
        line = next(l for l in r.stdout.splitlines() if "ACTIVE" in l)
        self.assertEqual(line.split()[:2], ["named-vm", vm["id"]])
        self.assertIn("100%", line)
        self.assertNotIn("\033[", r.stdout)
        self.assertNotIn("[###", r.stdout)

        # -o json anywhere on the line, in each spelling: the same answer.
        ids = None
        for args in (["-o", "json", "vm", "list"], ["vm", "-o", "json", "list"],
                     ["vm", "list", "-ojson"], ["vms", "--output=json"],
                     ["vm", "list", "--output", "json", "--limit", "50"]):
            with self.subTest(args=args):
                got = sorted(v["id"] for v in json.loads(self.berth(*args).stdout)["vms"])
                self.assertEqual(got, ids or got)
                ids = got
        self.assertIn(vm["id"], ids)

        # A name in place of the id, and YAML that reads back as the same value.
        shown = json.loads(self.berth("vm", "show", "named-vm", "-o", "json").stdout)
        self.assertEqual(shown["vm"]["id"], vm["id"])
        self.assertEqual(yaml.safe_load(self.berth("-o", "yaml", "vm", "show",
                                                   "named-vm").stdout), shown)
        listed = json.loads(self.berth("vms", "-o", "json").stdout)
        self.assertEqual(yaml.safe_load(self.berth("vms", "-o", "yaml").stdout), listed)
        # Tables name the template, group and host rather than give their ids.
        hosts = {h["id"]: h["name"]
                 for h in json.loads(self.berth("host", "list", "-o", "json").stdout)["hosts"]}
        host = hosts[shown["vm"]["host"]]
        table = self.berth("vm", "show", "named-vm").stdout
        self.assertRegex(table, r"(?m)^name: +named-vm$")
        self.assertRegex(table, r"(?m)^template: +small$")
        self.assertRegex(table, r"(?m)^group: +default$")
        self.assertRegex(table, r"(?m)^host: +%s$" % re.escape(host))
        row = next(l for l in self.berth("vm", "list").stdout.splitlines()
                   if l.startswith("named-vm "))
        self.assertEqual(row.split()[3:6], [host, "small", "default"], row)

        # Day-2 actions by name, as noun-verb and as the short form.
        self.berth("vm", "stop", "named-vm")
        self.assertEqual(self.vm_named("named-vm")[0]["power_state"], "STOPPED")
        self.berth("start", "named-vm")
        self.assertEqual(self.vm_named("named-vm")[0]["power_state"], "RUNNING")

    def test_ambiguous_name_lists_the_candidates(self):
        self.berth("request", "small", "twin")
        self.berth("request", "create", "small", "twin")
        twins = self.vm_named("twin")
        self.assertEqual(len(twins), 2, twins)
        r = self.berth("vm", "show", "twin", check=False)
        self.assertEqual(r.returncode, 1)
        for vm in twins:
            self.assertIn(vm["id"], r.stderr)
        self.assertIn(twins[0]["id"], self.berth("vm", "show", twins[0]["id"]).stdout)

    def test_yaml_keeps_strings_that_look_like_something_else(self):
        tricky = ["yes", "No", "null", "~", "007", "1.5", "2026-01-01", "a: b", "x #y",
                  "- item", "{a}", "[b]", "'q'", '"dq" \\ back', "é ü ✓ 😀",
                  "  padded  ", "*star", "&anchor", "!tag", "%pct", "@at",
                  "`tick`", "|pipe", ">gt", "?q", "=", "<<", "true", "ON", ".inf", "-"]
        for i, text in enumerate(tricky):
            self.berth("group", "create", "yaml-%d" % i, "--description", text,
                       "--cost-centre", text if text.isprintable() else "cc")
        listed = json.loads(self.berth("group", "list", "--limit", "200", "-o", "json").stdout)
        seen = {g["description"] for g in listed["groups"] if g["name"].startswith("yaml-")}
        self.assertEqual(seen, set(tricky))
        shown = json.loads(self.berth("group", "show", "yaml-0", "-o", "json").stdout)
        self.assertEqual(shown["group"]["description"], "yes")
        self.assertEqual(json.loads(self.berth("groups", "show", "yaml-0", "-o", "json").stdout),
                         shown)
        self.assertEqual(yaml.safe_load(self.berth("-o", "yaml", "group", "list", "--limit",
                                                   "200").stdout), listed)

    def test_wait_on_a_terminal_draws_a_bar(self):
        master, slave = pty.openpty()
        env = dict(self.env, TERM="xterm")
        proc = subprocess.Popen([os.path.join(bin_dir(), "berth"), "request", "small", "tty-vm",
                                 "--wait"], stdin=subprocess.DEVNULL, stdout=slave,
                                stderr=subprocess.PIPE, env=env)
        os.close(slave)
        out = b""
        while True:
            ready, _, _ = select.select([master], [], [], 300)
            if not ready:
                proc.kill()
                self.fail("no output from request --wait: %r" % out)
            try:
                chunk = os.read(master, 4096)
            except OSError:   # the other side closed: berth is done
                break
            if not chunk:
                break
            out += chunk
        os.close(master)
        self.assertEqual(proc.wait(timeout=300), 0, proc.stderr.read())
        proc.stderr.close()
        text = out.decode()
        vm = self.vm_named("tty-vm")[0]
        self.assertIn("[" + "#" * 20 + "]", text)
        self.assertIn("\033[2K", text)   # the lines are redrawn in place
        last = text.split("\033[2K")[-1]
        self.assertEqual(last.split()[:2], ["tty-vm", vm["id"]])
        self.assertIn("100%", last)


if __name__ == "__main__":
    unittest.main(verbosity=2)
