#!/usr/bin/env python3
# ctest: heavy
"""GET /v1/events, the live event stream (issue 10, test 7): a client sees every transition of
its VM in order (provisioned, then disposed), resumes after a disconnect without a gap
(Last-Event-ID and ?since), and never sees another group's events, while an operator sees
both groups' and the hosts'. Keepalive comments arrive with a short keepalive setting; a
token past its per-token cap of streams gets 429 with Retry-After; a revoked token ends its
stream; a client that never reads is dropped with a final event and stalls no one else.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_sse.py
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import Api, PlatformCase, berth_platform, wait_until  # noqa: E402

PW = "sse-test-pw-1"


class Sse:
    """A raw-socket Server-Sent Events client of GET /v1/events (HTTP/1.1, chunked)."""

    def __init__(self, port, token, since=None, last_event_id=None, rcvbuf=None, timeout=10.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        path = "/v1/events" + ("?since=" + since if since else "")
        head = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                "Authorization: Bearer %s\r\n" % (path, token))
        if last_event_id:
            head += "Last-Event-ID: %s\r\n" % last_event_id
        self.sock.sendall((head + "\r\n").encode())
        self.raw = b""
        self.text = ""  # decoded body not yet split into blocks
        self.ended = False
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.raw:
            self._recv(deadline)
        head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.strip().lower(): v.strip()
                        for k, v in (line.split(":", 1) for line in lines[1:])}
        self.body = None
        if self.status != 200:
            length = int(self.headers.get("content-length", "0"))
            while len(self.raw) < length:
                self._recv(deadline)
            self.body = json.loads(self.raw[:length])

    def _recv(self, deadline):
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("stream closed")
        self.raw += data

    def _decode(self):
        """Move whole chunks from raw into text."""
        while True:
            if b"\r\n" not in self.raw:
                return
            size_line, rest = self.raw.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                self.ended = True
                self.raw = b""
                return
            if len(rest) < size + 2:
                return
            self.text += rest[:size].decode()
            self.raw = rest[size + 2:]

    def block(self, timeout=10.0):
        """The next block of the stream as a dict: id, event, data (parsed), comments."""
        deadline = time.monotonic() + timeout
        while "\n\n" not in self.text:
            if self.ended:
                raise EOFError("stream ended")
            self._decode()
            if "\n\n" in self.text:
                break
            self._recv(deadline)
        raw, self.text = self.text.split("\n\n", 1)
        out = {"comments": []}
        for line in raw.split("\n"):
            if line.startswith(":"):
                out["comments"].append(line[1:].strip())
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            out[field] = json.loads(value) if field == "data" else value
        return out

    def until(self, predicate, timeout=30.0, what="event"):
        """Blocks until predicate(block) holds; every event block seen, the last included."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("%s not seen after %.0fs; saw %r" % (what, timeout, seen))
            b = self.block(left)
            if "event" in b:
                seen.append(b)
            if predicate(b):
                return seen

    def close(self):
        self.sock.close()


def vm_states(blocks, vm):
    """The VM's changes (lifecycle and power: both bump its version), in stream order."""
    return [b["data"] for b in blocks
            if b.get("event") in ("vm.state", "vm.power") and b["data"].get("vm") == vm]


class Events(PlatformCase):
    agents = 1
    wait_hosts = 1
    platform_env = {"BERTH_EVENTS_KEEPALIVE_S": "1", "BERTH_EVENTS_PER_TOKEN": "3",
                    "BERTH_EVENTS_QUEUE_MAX": "65536", "BERTH_EVENTS_CHECK_MS": "200"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            admin = cls.api
            for g in ("eng", "sales"):
                assert admin.call("POST", "/v1/groups", {"name": g}).status == 201
            cls.users = {}
            for name, group, role in [("mem", "eng", "user"), ("oth", "sales", "user"),
                                      ("opr", None, "operator")]:
                cls.users[name] = admin.create_user(name, PW, role)
                if group:
                    r = admin.call("POST", "/v1/groups/%s/members" % group,
                                   {"user": name, "role": "member"})
                    assert r.status == 201, r
        except Exception:
            cls.p.dump_logs()
            cls.p.stop()
            raise

    def stream(self, who, **kw):
        """A stream of a fresh token of who: each test's streams count against its own cap."""
        s = Sse(self.p.http_port, Api(self.p, who, PW).token, **kw)
        self.addCleanup(s.close)
        return s

    def open_stream(self, who, **kw):
        s = self.stream(who, **kw)
        self.assertEqual(s.status, 200, s.body)
        self.assertTrue(s.headers["content-type"].startswith("text/event-stream"), s.headers)
        hello = s.block()
        self.assertEqual(hello["event"], "stream.open", hello)
        return s, hello

    def request(self, who, group, name):
        r = self.users[who].call("POST", "/v1/requests",
                                 {"template": "small", "name": name, "group": group})
        self.assertEqual(r.status, 202, r)
        return r.json()["request"]

    def assertChain(self, changes):
        """Versions one apart (nothing missed; changes made in one step share theirs), and each
        lifecycle transition starts where the previous one ended."""
        for a, b in zip(changes, changes[1:]):
            self.assertIn(b["version"] - a["version"], (0, 1), changes)
        states = [c for c in changes if c["type"] == "vm.state"]
        for a, b in zip(states, states[1:]):
            self.assertEqual(b["from"], a["state"], states)

    def test_transitions_in_order_resume_and_isolation(self):
        mem, _ = self.open_stream("mem")
        oth, _ = self.open_stream("oth")
        opr, _ = self.open_stream("opr")
        req = self.request("mem", "eng", "sse-a")
        vm = req["vms"][0]["id"]
        other = self.request("oth", "sales", "sse-b")["vms"][0]["id"]
        first = mem.until(lambda b: b.get("event") == "vm.state" and b["data"]["vm"] == vm
                          and b["data"]["state"] == "ACTIVE", 60, "mem's VM ACTIVE")
        states = vm_states(first, vm)
        self.assertEqual(states[0]["from"], "", states)  # from its birth
        self.assertChain(states)
        # The task's progress and the request came too.
        self.assertTrue(any(b["event"].startswith("task.") and b["data"]["task"] == req["tasks"][0]["id"]
                            for b in first), first)
        self.assertTrue(any(b["event"] == "request.state" for b in first), first)
        last_id = first[-1]["id"]
        mem.close()
        # Disposed while the client is away: it resumes after the last id it saw.
        self.users["mem"].dispose(vm)
        self.users["mem"].wait_vm(vm, ("DISPOSED",))
        resumed, _ = self.open_stream("mem", last_event_id=last_id)
        rest = resumed.until(lambda b: b.get("event") == "vm.state" and b["data"]["vm"] == vm
                             and b["data"]["state"] == "DISPOSED", 30, "mem's VM DISPOSED")
        ids = [b["id"] for b in rest]
        self.assertEqual(len(ids), len(set(ids)), rest)
        self.assertTrue(all(self.id_key(i) > self.id_key(last_id) for i in ids), rest)
        whole = states + vm_states(rest, vm)
        self.assertChain(whole)
        self.assertEqual([s["state"] for s in whole if s["type"] == "vm.state"],
                         ["PROVISIONING", "ACTIVE", "DISPOSING", "DISPOSED"], whole)
        # The same from ?since: the whole history again, nothing twice.
        again, _ = self.open_stream("mem", since=first[0]["id"])
        seen = again.until(lambda b: b.get("id") == rest[-1]["id"], 30, "the same last event")
        self.assertEqual([b["id"] for b in seen], [b["id"] for b in first[1:] + rest])
        # The operator saw both groups' VMs and a host; the other user only their own.
        op = opr.until(lambda b: b.get("event") == "vm.state" and b["data"]["vm"] == vm
                       and b["data"]["state"] == "DISPOSED", 30, "opr sees DISPOSED")
        self.assertTrue(any(b["data"].get("vm") == other for b in op), op)
        o = oth.until(lambda b: b.get("event") == "vm.state" and b["data"]["vm"] == other
                      and b["data"]["state"] == "ACTIVE", 60, "oth's VM ACTIVE")
        # Anything after mem's disposal reached oth's queue before this marker event.
        self.p.redis_command("XADD", "berth:events", "*", "type", "request.state",
                             "request", self.request("oth", "sales", "sse-c")["id"])
        o += oth.until(lambda b: b.get("event") == "request.state" and "state" not in b["data"],
                       30, "oth's marker")
        for b in o:
            d = b["data"]
            self.assertNotEqual(d.get("vm"), vm, b)
            self.assertNotEqual(d.get("owner"), "mem", b)
            self.assertNotEqual(d.get("request"), req["id"], b)
            self.assertFalse(b["event"].startswith("host."), b)

    @staticmethod
    def id_key(i):
        ms, seq = i.split("-")
        return int(ms), int(seq)

    def test_hosts_for_the_platform_roles_only(self):
        opr, _ = self.open_stream("opr")
        mem, _ = self.open_stream("mem")
        self.p.redis_command("XADD", "berth:events", "*", "type", "host.state", "host", "h-x",
                             "state", "DOWN")
        self.p.redis_command("XADD", "berth:events", "*", "type", "vm.state", "vm", "v-none",
                             "owner", "mem", "group", "", "state", "ACTIVE")
        got = opr.until(lambda b: b.get("event") == "vm.state" and b["data"]["vm"] == "v-none",
                        10, "marker")
        self.assertTrue(any(b["event"] == "host.state" for b in got), got)
        got = mem.until(lambda b: b.get("event") == "vm.state" and b["data"]["vm"] == "v-none",
                        10, "marker")
        self.assertFalse(any(b["event"].startswith("host.") for b in got), got)

    def test_keepalive(self):
        s, hello = self.open_stream("mem")
        self.assertEqual(hello["data"]["keepalive_s"], 1)
        s.until(lambda b: "keepalive" in b["comments"], 5, "a keepalive comment")

    def test_bad_since(self):
        s = self.stream("mem", since="yesterday")
        self.assertEqual(s.status, 400)
        self.assertEqual(s.body["error"]["details"]["field"], "since")
        r = self.p.http("GET", "/v1/events")
        self.assertEqual(r.status, 401)

    def test_per_token_cap_and_revocation(self):
        tok = Api(self.p, "oth", PW)
        a = Sse(self.p.http_port, tok.token)
        b = Sse(self.p.http_port, tok.token)
        b2 = Sse(self.p.http_port, tok.token)
        for s in (a, b, b2):
            self.addCleanup(s.close)
            self.assertEqual(s.status, 200)
        c = Sse(self.p.http_port, tok.token)
        self.addCleanup(c.close)
        self.assertEqual(c.status, 429, c.body)
        self.assertEqual(c.body["error"]["details"]["limit"], "token")
        self.assertGreaterEqual(int(c.headers["retry-after"]), 1)
        # Another token of the same user has its own count.
        other, _ = self.open_stream("oth")
        # One closed: room again (the gateway notices the close when it next writes).
        b.close()

        def reopened():
            s = Sse(self.p.http_port, tok.token)
            if s.status == 200:
                self.addCleanup(s.close)
                return True
            s.close()
            return False
        wait_until(reopened, 10, "a stream after one closed")
        # Signing out ends the token's streams.
        self.assertEqual(tok.call("DELETE", "/v1/auth/tokens/current").status, 200)
        a.block()  # stream.open
        end = a.until(lambda b: b.get("event") == "stream.end", 10, "stream.end")[-1]
        self.assertEqual(end["data"]["reason"], "token revoked")
        other.block()  # still open

    def test_slow_client_is_dropped_and_stalls_no_one(self):
        slow = self.stream("opr", rcvbuf=4096)
        self.assertEqual(slow.status, 200)
        fast, _ = self.open_stream("opr")
        pad = "x" * 1000
        batch, batches = 20, 150  # ~3 MB: far past the slow client's buffers and its queue
        with self.p.redis_connect() as r:
            for k in range(batches):
                r.sendall(b"".join(berth_platform.resp_command(
                    "XADD", "berth:events", "*", "type", "host.test", "i", str(k * batch + j),
                    "pad", pad) for j in range(batch)))
                reader = berth_platform._RespReader(r)
                for _ in range(batch):
                    reader.read()
                # The fast one reads each batch within a bound, whatever the slow one does.
                last = str((k + 1) * batch - 1)
                fast.until(lambda b: b.get("event") == "host.test" and b["data"]["i"] == last,
                           10, "event " + last)
        n = batch * batches
        # The slow one, read at last: what fitted, then stream.end, then the end of the stream.
        got = slow.until(lambda b: b.get("event") == "stream.end", 30, "the slow one's end")
        self.assertIn("slow client", got[-1]["data"]["reason"])
        self.assertLess(len(got), n)
        with self.assertRaises(EOFError):
            slow.block(10)

    # -- the CLI: berth watch, berth request --wait ------------------------------------------

    def berth(self, home, *args, **kw):
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        # Straight to the gateway: the contract proxy answers whole bodies, not streams.
        env.update({"BERTH_URL": self.p.url, "XDG_CONFIG_HOME": home, "HOME": home})
        return subprocess.Popen([self.p.binary("berth")] + list(args), env=env, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, **kw)

    def test_cli_watch_and_request_wait(self):
        home = tempfile.mkdtemp(prefix="berth-sse-cli-")
        self.addCleanup(shutil.rmtree, home, True)
        login = self.berth(home, "login", "--user", "mem", "--password-stdin")
        out, err = login.communicate(PW + "\n", timeout=60)
        self.assertEqual(login.returncode, 0, err)
        everything = self.berth(home, "-o", "json", "watch", "--all")
        self.addCleanup(everything.kill)
        self.assertIn("watching", everything.stderr.readline())
        req = self.berth(home, "request", "small", "cli-a", "--group", "eng", "--wait",
                         "--timeout", "120")
        out, err = req.communicate(timeout=150)
        self.assertEqual(req.returncode, 0, out + err)
        self.assertIn("ACTIVE", out)
        vm = self.users["mem"].get("/v1/vms/cli-a")["vm"]
        self.assertEqual(vm["state"], "ACTIVE")
        # One VM, by name, until it is gone.
        one = self.berth(home, "watch", "cli-a")
        self.addCleanup(one.kill)
        self.assertIn("watching VM " + vm["id"], one.stderr.readline())
        self.users["mem"].dispose(vm["id"])
        out, err = one.communicate(timeout=120)
        self.assertEqual(one.returncode, 0, out + err)
        lines = [line for line in out.splitlines() if " vm %s " % vm["id"] in line]
        self.assertTrue(any("ACTIVE -> DISPOSING" in line for line in lines), out)
        self.assertIn("DISPOSING -> DISPOSED", lines[-1], out)
        # The --all watcher printed the whole life as JSON lines, in order.
        seen = []
        while not any(e["event"] == "vm.state" and e["data"]["state"] == "DISPOSED"
                      for e in seen):
            line = everything.stdout.readline()
            self.assertTrue(line, "watch --all ended early")
            seen.append(json.loads(line))
        states = [e["data"]["state"] for e in seen
                  if e["event"] == "vm.state" and e["data"]["vm"] == vm["id"]]
        self.assertEqual(states, ["PROVISIONING", "ACTIVE", "DISPOSING", "DISPOSED"], seen)
        self.assertTrue(any(e["event"] == "task.state" and e["data"]["vm"] == vm["id"]
                            for e in seen), seen)
        everything.kill()
        everything.wait()


if __name__ == "__main__":
    unittest.main()
