#!/usr/bin/env python3
"""make bench: measure Berth against baselines measured in the same run, print the table and
write it to bench/results.md.

Starts what it needs (a real redis-server and every service with simulated test:///default
hosts, through deploy/platform.py, plus the baseline programs built from bench/), measures,
and stops everything. The machine is shared and noisy, so every figure is the median of
BENCH_REPS (default 5, at least 5 for a table that counts) repetitions and is shown with its
ratio to its baseline. Goals are stated once, in GOALS, and never loosened here: a figure that
misses its goal says so, with what the run shows to be the bottleneck.

    python3 bench/run.py --bin build/bin [--out bench/results.md]

The notes under the table say where provisioning time and CPU go: each stage's median, CPU
per VM of every process, Redis commands per VM by command and by sending service.

Environment: BENCH_REPS (repetitions), BENCH_SECONDS (seconds of each wrk run),
BENCH_PROVISION (requests per provisioning repetition), BENCH_LIST_VMS (VMs in the store for
the list bench), BENCH_PLACEMENTS (scheduler decisions per run at each host count). Smaller
values make a quick look; the table records what it ran with.
"""

import argparse
import datetime
import http.client
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "berth_platform", os.path.join(ROOT, "deploy", "platform.py"))
berth_platform = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(berth_platform)
Platform = berth_platform.Platform
RespReader = berth_platform._RespReader

REPS = max(1, int(os.environ.get("BENCH_REPS", "5")))
SECONDS = max(1, int(os.environ.get("BENCH_SECONDS", "3")))
PROVISION_N = max(1, int(os.environ.get("BENCH_PROVISION", "200")))
PROVISION_CONCURRENCY = 20
LIST_VMS = max(1, int(os.environ.get("BENCH_LIST_VMS", "20000")))
LIST_LIMIT = 500
WRK_THREADS = 2
WRK_CONNECTIONS = 16
LIST_CONNECTIONS = 2
# Simulated hosts big enough that capacity never refuses a bench VM (REPS x 200 smalls).
AGENTS = 3
AGENT_ENV = {"BERTH_HOST_VCPUS": "4096", "BERTH_HOST_RAM_MB": "16777216",
             "BERTH_HOST_DISK_GB": "1000000"}
TEMPLATE = "small"
# The gateway's rate limits, set by the bench far above what it sends (the gateway row reached
# ~16,000 requests/s, near the 20,000 defaults): the bench measures the gateway, not its
# limiter's refusals. Printed in the settings line.
RATE_LIMIT_PER_S = 1000000
RATE_ENV = {"BERTH_RATE_ADDRESS_PER_S": str(RATE_LIMIT_PER_S),
            "BERTH_RATE_ADDRESS_BURST": str(RATE_LIMIT_PER_S),
            "BERTH_RATE_USER_PER_S": str(RATE_LIMIT_PER_S),
            "BERTH_RATE_USER_BURST": str(RATE_LIMIT_PER_S),
            # taskmgr's heavy-task limits (2 builds per host by default) likewise: 20 requests
            # in flight on 3 hosts would otherwise measure the builds' queue, not the engine.
            "BERTH_HEAVY_PER_HOST": "10000",
            "BERTH_HEAVY_GLOBAL": "1000000"}

# The goals of issue 7, item 11. (name, unit, comparison, bound)
GOALS = {
    "provision_p50": ("<=", 50.0, "ms"),
    "provision_p99": ("<=", 250.0, "ms"),
    "redis_rt_per_stage": ("<=", 2.0, ""),
    "bus_ratio": ("<=", 1.5, "x"),
    "gateway_ratio": (">=", 0.25, "x"),
    "gateway_half_p99": ("<=", 5.0, "ms"),
    "list_p99": ("<=", 100.0, "ms"),
    # Issue 15 (Scale): the scheduler at 1,000 and 10,000 hosts.
    "placement_ratio": (">=", 0.25, "x"),
    "placement_growth": ("<=", 3.0, "x"),
    "placement_p99": ("<=", 10.0, "ms"),
    # Issue 12 (Images): a linked clone against a full copy of the same base.
    "disk_linked_speedup": (">=", 20.0, "x"),
    # Images on hosts: a stager -> agent transfer against a plain read/write loop
    # with SHA-256 over the same file on the same disk.
    "transfer_ratio": (">=", 0.8, "x"),
}
# Instant deploy: requests served by a template's pool (re-identify + resume) against the same
# template's VMs built, one at a time, in the same platform and run.
POOL_SIZE = max(1, int(os.environ.get("BENCH_POOL", "10")))
DISK_BASE_MB = 256  # data written into the base image the disks are made from
TRANSFER_MB = 256  # data in the image fetched by an agent from the stager
PLACEMENT_HOSTS = (1000, 10000)
PLACEMENT_DECISIONS = max(1, int(os.environ.get("BENCH_PLACEMENTS", "2000")))

# Config keys worth printing with the table: limits, throttles, timers, security.
SETTING_RE = re.compile(r"max|limit|threads|tick|poll|heartbeat|curve|throttle|rate|ratio|"
                        r"timeout|lease|connections|defer|gap")


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


def median(values):
    return statistics.median(values) if values else float("nan")


def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    i = int(round(p / 100.0 * len(s))) - 1
    return s[max(0, min(len(s) - 1, i))]


def goal_met(name, value):
    op, bound, _ = GOALS[name]
    return value <= bound if op == "<=" else value >= bound


def goal_text(name):
    op, bound, unit = GOALS[name]
    return "%s %g%s" % (op, bound, " " + unit if unit and unit != "x" else unit)


# ---- Redis, raw -------------------------------------------------------------------------

class Redis:
    """One persistent RESP connection (platform.redis_command opens one per command)."""

    def __init__(self, platform):
        self.sock = platform.redis_connect(timeout=30)   # authenticated
        self.reader = RespReader(self.sock)

    @staticmethod
    def encode(*args):
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(parts)

    def call(self, *args):
        self.sock.sendall(self.encode(*args))
        return self.reader.read()

    def pipeline(self, commands):
        self.sock.sendall(b"".join(self.encode(*c) for c in commands))
        return [self.reader.read() for _ in commands]

    def local_addr(self):
        host, port = self.sock.getsockname()[:2]
        return "%s:%d" % (host, port)

    def close(self):
        self.sock.close()


def hash_dict(flat):
    return dict(zip(flat[0::2], flat[1::2])) if flat else {}


# ---- events: when did each VM become ACTIVE ---------------------------------------------

class ActiveWatcher(threading.Thread):
    """Follows berth:events and records the monotonic time each VM's ACTIVE (or ERROR) event
    is seen, so a provisioning client waits without polling the gateway."""

    def __init__(self, platform):
        super().__init__(daemon=True)
        self.redis = Redis(platform)
        self.cond = threading.Condition()
        self.seen = {}   # vm id -> (state, monotonic time)
        self.stop = False
        last = self.redis.call("XREVRANGE", "berth:events", "+", "-", "COUNT", "1")
        self.last_id = last[0][0] if last else "0-0"

    def run(self):
        while not self.stop:
            reply = self.redis.call("XREAD", "COUNT", "1000", "BLOCK", "200", "STREAMS",
                                    "berth:events", self.last_id)
            now = time.monotonic()
            if not reply:
                continue
            with self.cond:
                for entry_id, fields in reply[0][1]:
                    self.last_id = entry_id
                    f = hash_dict(fields)
                    if f.get("type") == "vm.state" and f.get("state") in ("ACTIVE", "ERROR"):
                        vm = f.get("vm") or re.sub(r"^berth:vm:\{(.*)\}$", r"\1", f.get("key", ""))
                        self.seen.setdefault(vm, (f["state"], now))
                self.cond.notify_all()

    def wait(self, vm_id, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while vm_id not in self.seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            return self.seen[vm_id]


# ---- Redis commands issued by the platform ----------------------------------------------

class Monitor(threading.Thread):
    """Counts the commands Redis executes (MONITOR): those sent by clients (round trips; a
    pipelined batch counts each command) and those run inside Lua scripts. The bench's own
    connections are left out."""

    def __init__(self, platform, exclude):
        super().__init__(daemon=True)
        self.sock = platform.redis_connect(timeout=30)   # authenticated
        self.reader = RespReader(self.sock)
        self.exclude = set(exclude)
        self.client = 0
        self.lua = 0
        self.by_command = {}
        self.by_client = {}
        self.stop = False
        self.lock = threading.Lock()
        self.sock.sendall(Redis.encode("MONITOR"))
        self.reader.read()   # +OK
        self.exclude.add("%s:%d" % self.sock.getsockname()[:2])

    def run(self):
        self.sock.settimeout(0.5)
        while not self.stop:
            try:
                line = self.reader.read()
            except (socket.timeout, OSError):
                continue
            m = re.match(r'[\d.]+ \[\d+ ([^\]]+)\] "([^"]*)"', line or "")
            if not m:
                continue
            who, cmd = m.group(1), m.group(2).upper()
            if who in self.exclude:
                continue
            with self.lock:
                if who == "lua":
                    self.lua += 1
                else:
                    self.client += 1
                    self.by_command[cmd] = self.by_command.get(cmd, 0) + 1
                    self.by_client[who] = self.by_client.get(who, 0) + 1

    def snapshot(self):
        with self.lock:
            return self.client, self.lua, dict(self.by_command)

    def clients(self):
        """{client address: commands sent} so far."""
        with self.lock:
            return dict(self.by_client)

    def close(self):
        self.stop = True
        self.join(2)
        self.sock.close()


# ---- HTTP -------------------------------------------------------------------------------

class Http:
    """A keep-alive HTTP/1.1 connection to the gateway for one client thread."""

    def __init__(self, port, token=None):
        self.port = port
        self.token = token
        self.conn = None

    def call(self, method, path, body=None):
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        data = json.dumps(body) if body is not None else None
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                r = self.conn.getresponse()
                text = r.read()
                return r.status, json.loads(text) if text else None
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise


def login(port, user, password):
    status, body = Http(port).call("POST", "/v1/auth/tokens",
                                   {"username": user, "password": password})
    if status != 201:
        raise RuntimeError("login as %s: %s %r" % (user, status, body))
    return body["token"]


# ---- baselines built from bench/ ---------------------------------------------------------

def bench_libvirt(bin_dir):
    out = subprocess.run([os.path.join(bin_dir, "bench-libvirt"), "1000"], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def bench_disks():
    """What an agent on a real hypervisor does to make a VM's disk from a base image of
    DISK_BASE_MB MB of data, REPS times each: a linked clone (libvirt's volume with a backing
    store: qemu-img create -b) and a full copy (the agent's: qemu-img convert, then resize).
    {"linked_ms": [...], "full_ms": [...]}."""
    work = tempfile.mkdtemp(prefix="berth-bench-disks-")
    try:
        base = os.path.join(work, "base.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", base, "2G"], check=True)
        subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                        "write -P 0x5a 0 %dM" % DISK_BASE_MB, base],
                       check=True, capture_output=True)
        out = {"linked_ms": [], "full_ms": []}
        for i in range(REPS):
            linked = os.path.join(work, "linked-%d.qcow2" % i)
            t = time.monotonic()
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base,
                            linked, "10G"], check=True)
            out["linked_ms"].append((time.monotonic() - t) * 1000)
            full = os.path.join(work, "full-%d.qcow2" % i)
            t = time.monotonic()
            subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", base, full],
                           check=True)
            subprocess.run(["qemu-img", "resize", "-q", "-f", "qcow2", full, "10G"], check=True)
            out["full_ms"].append((time.monotonic() - t) * 1000)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench_transfer(bin_dir):
    """An agent fetching a base image of TRANSFER_MB MB of data from the stager over the bus
    (GetImageChunk with the agent's default chunk size and credit, CURVE on), REPS times on a
    platform of one host, each time with the agent's cache emptied and the agent restarted;
    against bench-copy (a read/write loop with SHA-256) of the stager's file into the agent's
    data directory. {"bytes": N, "transfer_ms": [...], "copy_ms": [...], "settings": {...}}."""
    p = Platform(bin_dir=bin_dir)
    try:
        p.start_all(agents=1)
        admin = Http(p.http_port, login(p.http_port, p.admin_user, p.admin_password))
        stager = os.path.join(p.data_dir, "services", "stager")
        image = os.path.join(stager, "import", "transfer.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", image, "2G"], check=True)
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 %dM" % TRANSFER_MB,
                        image], check=True, capture_output=True)
        status, body = admin.call("POST", "/v1/images", {
            "path": "transfer.qcow2", "name": "transfer", "os": "debian", "os_version": "12",
            "arch": "x86_64", "min_ram_mb": 512, "min_disk_gb": 2})
        if status != 201:
            raise RuntimeError("POST /v1/images: %s %r" % (status, body))
        deadline = time.monotonic() + 300
        while True:
            status, body = admin.call("GET", "/v1/images/transfer")
            if body["image"]["state"] == "READY":
                break
            if body["image"]["state"] == "FAILED" or time.monotonic() > deadline:
                raise RuntimeError("image import: %r" % body)
            time.sleep(0.2)
        stored = os.path.join(stager, "images", body["image"]["id"] + ".qcow2")
        size = body["image"]["size_bytes"]
        status, body = admin.call("POST", "/v1/templates", {
            "name": "transfer", "vcpus": 1, "ram_mb": 512, "disk_gb": 3, "os": "debian",
            "image": "transfer", "lease_days": 1, "requires_approval": False})
        if status != 201:
            raise RuntimeError("POST /v1/templates: %s %r" % (status, body))
        agent = [proc for proc in p.procs if proc.service == "agent"][0]
        cache = os.path.join(p.data_dir, "services", agent.name, "images")
        settings = {}
        with open(agent.log_path) as f:
            for line in f:
                if '"effective config"' in line:
                    cfg = json.loads(line)["config"]
                    settings = {k: cfg[k]["value"] for k in ("image_chunk_bytes", "image_credit")}
                    break
        out = {"bytes": size, "transfer_ms": [], "copy_ms": [], "settings": settings}
        for rep in range(REPS):
            agent.kill(signal.SIGTERM)
            agent.wait(30)
            for name in os.listdir(cache):
                if name != "refs":
                    os.unlink(os.path.join(cache, name))
            offset = os.path.getsize(agent.log_path)
            agent = p.restart(agent)
            status, body = admin.call("POST", "/v1/requests",
                                      {"template": "transfer", "name": "transfer-%d" % rep})
            if status != 202:
                raise RuntimeError("POST /v1/requests: %s %r" % (status, body))
            done = None
            deadline = time.monotonic() + 600
            while done is None and time.monotonic() < deadline:
                with open(agent.log_path, errors="replace") as f:
                    f.seek(offset)
                    for line in f:
                        if '"msg":"image fetched"' in line:
                            done = json.loads(line)
                time.sleep(0.1)
            if done is None or done["bytes"] != size:
                raise RuntimeError("the agent did not fetch the image: %r" % done)
            out["transfer_ms"].append(float(done["ms"]))
            copy = os.path.join(p.data_dir, "services", agent.name, "copy.bin")
            line = subprocess.run([os.path.join(bin_dir, "bench-copy"), stored, copy],
                                  check=True, capture_output=True, text=True).stdout
            os.unlink(copy)
            out["copy_ms"].append(json.loads(line)["ms"])
        return out
    finally:
        p.stop()


def bench_bus(bin_dir):
    # Both sides under the platform's setting: CURVE, as every service's socket runs.
    out = subprocess.run([os.path.join(bin_dir, "bench-bus"), "5000", str(REPS), "curve"],
                         check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.strip().splitlines()]


def bench_placement(bin_dir):
    """bench-placement at each of PLACEMENT_HOSTS, REPS times, against a Redis of its own
    (plain, on a free port: what is measured is the scheduler's work and the claim script,
    beside that Redis's SET rate). {hosts: [runs]}."""
    port = berth_platform.free_port()
    data = tempfile.mkdtemp(prefix="berth-bench-redis-")
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                               "--dir", data, "--save", "", "--appendonly", "no"],
                              stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server for bench-placement did not start")
                time.sleep(0.05)
        runs = {n: [] for n in PLACEMENT_HOSTS}
        for _ in range(REPS):
            for n in PLACEMENT_HOSTS:
                out = subprocess.run([os.path.join(bin_dir, "bench-placement"), "127.0.0.1",
                                      str(port), str(n), str(PLACEMENT_DECISIONS)],
                                     check=True, capture_output=True, text=True).stdout
                runs[n].append(json.loads(out.strip().splitlines()[-1]))
        return runs
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(data, ignore_errors=True)


class BareMhd:
    """bench-mhd on a free port with the gateway's daemon settings."""

    def __init__(self, bin_dir, settings, body_bytes=0):
        self.port = berth_platform.free_port()
        argv = [os.path.join(bin_dir, "bench-mhd"), str(self.port),
                settings["http_threads"], settings["http_max_connections"],
                settings["http_per_ip_connections"], settings["http_timeout_s"],
                str(body_bytes)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening"):
            raise RuntimeError("bench-mhd did not start")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wrk(port, path, token=None, connections=WRK_CONNECTIONS, threads=WRK_THREADS,
        seconds=SECONDS, delay_ms=0.0):
    """One wrk run; its summary (requests/s, p50/p99 in ms). Any non-2xx fails the bench."""
    argv = ["wrk", "-t%d" % min(threads, connections), "-c%d" % connections,
            "-d%ds" % seconds, "--timeout", "10s", "-s", os.path.join(ROOT, "bench", "wrk.lua")]
    if token:
        argv += ["-H", "Authorization: Bearer " + token]
    argv.append("http://127.0.0.1:%d%s" % (port, path))
    env = dict(os.environ, BENCH_DELAY_MS="%.4f" % delay_ms)
    out = subprocess.run(argv, check=True, capture_output=True, text=True, env=env).stdout
    summary = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])
    if summary["non2xx"] or summary["errors"]:
        raise RuntimeError("wrk %s: %d non-2xx answers, %d socket errors"
                           % (path, summary["non2xx"], summary["errors"]))
    seconds_run = summary["duration_us"] / 1e6
    return {"rps": summary["requests"] / seconds_run, "p50": summary["p50_us"] / 1000.0,
            "p99": summary["p99_us"] / 1000.0, "mean": summary["mean_us"] / 1000.0}


# ---- the platform ------------------------------------------------------------------------

def effective_settings(p):
    """{service: {key: value}} of the limits, throttles and timers the services logged."""
    out = {}
    for name, path in sorted(p.logs().items()):
        if name == "redis" or (name.startswith("agent-") and name != "agent-1"):
            continue
        try:
            with open(path) as f:
                for line in f:
                    if '"effective config"' not in line:
                        continue
                    cfg = json.loads(line).get("config", {})
                    out[name] = {k: v.get("value") for k, v in cfg.items()
                                 if SETTING_RE.search(k)}
        except (OSError, ValueError):
            pass
    return out


def cpu_ms(pid):
    """CPU time (user + system) a process used so far, ms; 0 once it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * 1000.0 / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def platform_procs(p):
    """(name, pid) of every process of the platform, Redis included."""
    return [(proc.name, proc.pid) for proc in p.procs] + [("redis", p.redis.pid)]


def socket_owners(procs):
    """{"127.0.0.1:port": process name} for the TCP sockets the processes hold (from /proc)."""
    inodes = {}
    for name, pid in procs:
        try:
            for fd in os.listdir("/proc/%d/fd" % pid):
                link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
                if link.startswith("socket:["):
                    inodes[link[8:-1]] = name
        except OSError:
            pass
    owners = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[9] in inodes:
                        port = int(cols[1].split(":")[1], 16)
                        owners["127.0.0.1:%d" % port] = inodes[cols[9]]
        except (OSError, StopIteration, IndexError, ValueError):
            pass
    return owners


def provision_rep(p, watcher, token, n, concurrency, tag):
    """n requests by `concurrency` clients, each waiting for its VM to be ACTIVE before its
    next request. Latencies (ms, request sent -> ACTIVE event), VMs/s and the VM ids."""
    lock = threading.Lock()
    todo = list(range(n))
    lat, vms, failures = [], [], []

    def client():
        h = Http(p.http_port, token)
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop()
            t0 = time.monotonic()
            status, body = h.call("POST", "/v1/requests",
                                  {"template": TEMPLATE, "name": "b%s-%d" % (tag, i), "count": 1})
            if status != 202:
                with lock:
                    failures.append("POST /v1/requests %s %r" % (status, body))
                continue
            vm_id = body["request"]["vms"][0]["id"]
            seen = watcher.wait(vm_id, 120)
            with lock:
                vms.append(vm_id)
                if not seen or seen[0] != "ACTIVE":
                    failures.append("VM %s %s" % (vm_id, seen[0] if seen else "not ACTIVE in 120s"))
                else:
                    lat.append((seen[1] - t0) * 1000.0)

    start = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    if failures:
        raise RuntimeError("provisioning failed %d times, first: %s" % (len(failures), failures[0]))
    return lat, n / elapsed, vms


def stage_profile(redis, vm_ids):
    """Median time in each stage and median wait before it (ms), from the tasks' steps."""
    tasks = redis.pipeline([("HGET", "berth:vm:{%s}" % v, "task") for v in vm_ids])
    steps = redis.pipeline([("HGET", "berth:task:{%s}" % t, "steps") for t in tasks if t])
    run, wait, order = {}, {}, []
    count = []
    for text in steps:
        if not text:
            continue
        seq = json.loads(text)
        count.append(len(seq))
        prev_end = None
        for s in seq:
            name = s.get("name")
            if name not in order:
                order.append(name)
            st, fin = s.get("started_ms") or 0, s.get("finished_ms") or 0
            if st and fin:
                run.setdefault(name, []).append(fin - st)
            if prev_end and st:
                wait.setdefault(name, []).append(st - prev_end)
            prev_end = fin or prev_end
    profile = [(name, median(run.get(name, [])), median(wait.get(name, []))) for name in order]
    return profile, median(count) if count else 0


def write_vms(redis, template_hash, count, owner):
    """count VMs in the stored format (lib/model.c: one hash field per proto field), cloned
    from a real VM's hash, indexed in berth:vms like approval does."""
    base_ms = int(time.time() * 1000) + 10_000   # after every VM the platform made
    batch = []
    for i in range(count):
        vm_id = str(uuid.uuid4())
        fields = dict(template_hash)
        fields.update({"id": vm_id, "name": "list-%d" % i, "owner": owner,
                       "created_ms": str(base_ms + i), "updated_ms": str(base_ms + i)})
        flat = []
        for k, v in fields.items():
            flat += [k, v]
        batch.append(["HSET", "berth:vm:{%s}" % vm_id] + flat)
        batch.append(["ZADD", "berth:vms", str(base_ms + i), vm_id])
        if len(batch) >= 2000:
            redis.pipeline(batch)
            batch = []
    if batch:
        redis.pipeline(batch)


def redis_per_request(p, exclude, calls, n=200):
    """{name: Redis commands sent by clients per request} for each (name, path, token): n
    requests on one keep-alive connection, counted with MONITOR, background subtracted."""
    out = {}
    mon = Monitor(p, exclude)
    mon.start()
    try:
        for name, path, token in calls:
            h = Http(p.http_port, token)
            h.call("GET", path)   # connection up, caches as in steady state
            time.sleep(0.5)
            c0, _, _ = mon.snapshot()
            time.sleep(1.0)
            c1, _, _ = mon.snapshot()
            idle_rate = c1 - c0
            t0 = time.monotonic()
            for _ in range(n):
                status, _ = h.call("GET", path)
                if status != 200:
                    raise RuntimeError("GET %s: %s" % (path, status))
            elapsed = time.monotonic() - t0
            time.sleep(0.3)   # let MONITOR catch up
            c2, _, _ = mon.snapshot()
            out[name] = max(0.0, (c2 - c1) - idle_rate * (elapsed + 0.3)) / n
    finally:
        mon.close()
    return out


# ---- the table ---------------------------------------------------------------------------

class Table:
    def __init__(self):
        self.rows = []    # (what, figure, baseline, ratio, goal, verdict)
        self.notes = []

    def add(self, what, figure, baseline, ratio, goal="", goal_key=None, value=None):
        verdict = ""
        if goal_key:
            verdict = "met" if goal_met(goal_key, value) else "NOT MET"
        self.rows.append((what, figure, baseline, ratio, goal, verdict))

    def markdown(self, header):
        out = [header, "", "| what | figure | baseline | ratio | goal | |",
               "|---|---|---|---|---|---|"]
        for r in self.rows:
            out.append("| " + " | ".join(r) + " |")
        out.append("")
        out += self.notes
        return "\n".join(out) + "\n"


def bench_pool(bin_dir):
    """Request -> ACTIVE of POOL_SIZE VMs taken from a template's pool against POOL_SIZE VMs of
    an identical template without a pool, one request at a time (each waits for its VM's
    ACTIVE event), REPS times on one platform (one host); before each pool repetition the pool
    is full again, so refills never run during it. {"pool_ms": [...], "built_ms": [...],
    "from_pool": n}: every latency, and how many of the pool's tasks said from_pool."""
    p = Platform(bin_dir=bin_dir, env=RATE_ENV)
    watcher = None
    try:
        p.start_all(agents=1, agent_env=AGENT_ENV)
        admin = Http(p.http_port, login(p.http_port, p.admin_user, p.admin_password))
        for name in ("pooled", "built"):
            status, body = admin.call("POST", "/v1/templates", {
                "name": name, "vcpus": 1, "ram_mb": 1024, "disk_gb": 10, "os": "debian",
                "image": "debian-12", "lease_days": 7})
            if status != 201:
                raise RuntimeError("POST /v1/templates: %s %r" % (status, body))
        status, body = admin.call("PUT", "/v1/templates/pooled/pool", {"size": POOL_SIZE})
        if status != 200:
            raise RuntimeError("PUT /v1/templates/pooled/pool: %s %r" % (status, body))
        watcher = ActiveWatcher(p)
        watcher.start()
        out = {"pool_ms": [], "built_ms": [], "from_pool": 0}
        vms = {"pool": [], "built": []}

        def full():
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                status, body = admin.call("GET", "/v1/templates/pooled/pool")
                if status == 200 and body["pool"]["ready"] >= POOL_SIZE:
                    return
                time.sleep(0.1)
            raise RuntimeError("the pool did not fill in 300 s")

        def one(template, tag):
            t0 = time.monotonic()
            status, body = admin.call("POST", "/v1/requests",
                                      {"template": template, "name": tag, "count": 1})
            if status != 202:
                raise RuntimeError("POST /v1/requests: %s %r" % (status, body))
            vm_id = body["request"]["vms"][0]["id"]
            seen = watcher.wait(vm_id, 120)
            if not seen or seen[0] != "ACTIVE":
                raise RuntimeError("VM %s not ACTIVE" % vm_id)
            vms["pool" if template == "pooled" else "built"].append(vm_id)
            return (seen[1] - t0) * 1000.0, body["request"]["tasks"][0]["id"]

        for rep in range(REPS):
            full()
            tasks = []
            for i in range(POOL_SIZE):
                ms, task = one("pooled", "p%d-%d" % (rep, i))
                out["pool_ms"].append(ms)
                tasks.append(task)
            for task in tasks:
                status, body = admin.call("GET", "/v1/tasks/" + task)
                out["from_pool"] += 1 if status == 200 and body["task"]["from_pool"] else 0
            full()  # the refills done: the built side runs on a quiet platform too
            for i in range(POOL_SIZE):
                out["built_ms"].append(one("built", "b%d-%d" % (rep, i))[0])
        redis = Redis(p)
        out["profiles"] = {k: stage_profile(redis, v)[0] for k, v in vms.items()}
        return out
    finally:
        if watcher:
            watcher.stop = True
        p.stop()


def pool_row(table, pool):
    """Instant deploy's row: request -> ACTIVE p50 from the pool against built."""
    from_pool, built = median(pool["pool_ms"]), median(pool["built_ms"])
    table.add("request -> ACTIVE p50 from a pool of %d (%d/%d tasks from_pool)"
              % (POOL_SIZE, pool["from_pool"], len(pool["pool_ms"])),
              "%.1f ms" % from_pool, "built p50 %.1f ms" % built,
              "%.2fx faster" % (built / from_pool))
    for side, what in (("pool", "from the pool"), ("built", "built")):
        table.notes.append("Instant deploy, stages %s (median ms; waited before): " % what +
                           ", ".join("%s %.0f (%.0f)" % (n, r, w if w == w else 0)
                                     for n, r, w in pool["profiles"][side] if n) + ".")


def transfer_row(table, transfer):
    """The image transfer's row: throughput of the agent's fetch against bench-copy's."""
    mb = transfer["bytes"] / 1048576.0
    fetch = mb / (median(transfer["transfer_ms"]) / 1000.0)
    copy = mb / (median(transfer["copy_ms"]) / 1000.0)
    table.add("image stager -> agent, %d MB qcow2 (%s)" % (
        round(mb), ", ".join("%s=%s" % kv for kv in sorted(transfer["settings"].items()))),
        "%.0f MB/s" % fetch, "read/write + SHA-256 %.0f MB/s" % copy, "%.2fx" % (fetch / copy),
        goal_text("transfer_ratio"), "transfer_ratio", fetch / copy)


def placement_rows(table, placement):
    """The scheduler's rows: placements/s beside SET at each host count, the decision p50's
    growth from the smaller to the larger, and the p99 at the larger."""
    f = lambda x, nd=1: ("%." + str(nd) + "f") % x
    small, large = PLACEMENT_HOSTS
    for n in PLACEMENT_HOSTS:
        rate = median([r["placements_per_s"] for r in placement[n]])
        sets = median([r["set_per_s"] for r in placement[n]])
        ratio = median([r["placements_per_s"] / r["set_per_s"] for r in placement[n]])
        reloads = median([r["reloads"] for r in placement[n]])
        table.add("placements/s, %d hosts (claim included; %.0f host reloads)" % (n, reloads),
                  f(rate, 0) + "/s", "SET, one connection " + f(sets, 0) + "/s",
                  f(ratio, 3) + "x", goal_text("placement_ratio"), "placement_ratio", ratio)
    p50 = {n: median([r["p50_ms"] for r in placement[n]]) for n in PLACEMENT_HOSTS}
    growth = p50[large] / p50[small]
    table.add("placement decision p50 at %d hosts" % large, f(p50[large], 3) + " ms",
              "at %d hosts %s ms" % (small, f(p50[small], 3)), f(growth, 2) + "x",
              goal_text("placement_growth"), "placement_growth", growth)
    p99 = median([r["p99_ms"] for r in placement[large]])
    table.add("placement decision p99 at %d hosts" % large, f(p99, 3) + " ms", "", "",
              goal_text("placement_p99"), "placement_p99", p99)


def bench_gateway(bin_dir, table):
    """The gateway's peak rows alone: one VM provisioned, then each path's wrk runs against bare
    libmicrohttpd with the gateway's daemon settings, REPS times, with the load average."""
    p = Platform(bin_dir=bin_dir, env=RATE_ENV)
    watcher = None
    try:
        p.start_all(agents=AGENTS, agent_env=AGENT_ENV)
        gw = effective_settings(p).get("gateway", {})
        admin = login(p.http_port, p.admin_user, p.admin_password)
        status, body = Http(p.http_port, admin).call(
            "POST", "/v1/users", {"username": "bench", "password": "bench-password-1"})
        if status != 201:
            raise RuntimeError("POST /v1/users: %s %r" % (status, body))
        user = login(p.http_port, "bench", "bench-password-1")
        watcher = ActiveWatcher(p)
        watcher.start()
        _, _, vms = provision_rep(p, watcher, user, 1, 1, "g")
        bare = BareMhd(bin_dir, gw)
        paths = [("GET /healthz", p.http_port, "/healthz", None),
                 ("GET /v1/vms/{id} (authenticated)", p.http_port, "/v1/vms/" + vms[0], user),
                 ("GET /v1/templates (authenticated)", p.http_port, "/v1/templates", user)]
        peak = {name: [] for name, _, _, _ in paths}
        bare_rps, loads = [], []
        for rep in range(REPS):
            loads.append(os.getloadavg()[0])
            log("gateway rep %d/%d (load %.2f)" % (rep + 1, REPS, loads[-1]))
            bare_rps.append(wrk(bare.port, "/", None)["rps"])
            for name, port, path, token in paths:
                peak[name].append(wrk(port, path, token)["rps"])
        bare.stop()
    finally:
        if watcher:
            watcher.stop = True
            watcher.join(5)
        p.stop()
    bare_med = median(bare_rps)
    table.add("bare libmicrohttpd, fixed JSON", "%.0f req/s" % bare_med, "", "1.00x", "")
    for name, _, _, _ in paths:
        rps = median(peak[name])
        key = "gateway_ratio" if "/v1/" in name else None
        table.add(name, "%.0f req/s" % rps, "bare %.0f req/s" % bare_med,
                  "%.3fx" % (rps / bare_med), goal_text("gateway_ratio") if key else "", key,
                  rps / bare_med)
    table.notes.append("Each repetition (load average at its start): " + "; ".join(
        "load %.2f: bare %.0f, " % (loads[i], bare_rps[i]) +
        ", ".join("%s %.0f" % (name.split(" (")[0], peak[name][i]) for name, _, _, _ in paths)
        for i in range(REPS)) + " req/s.")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results.md"))
    ap.add_argument("--only", choices=["transfer", "placement", "pool", "gateway"],
                    help="run one row and print it (results.md is left as it is)")
    args = ap.parse_args()
    bin_dir = os.path.abspath(args.bin)
    table = Table()
    started = time.time()

    if args.only == "pool":
        log("instant deploy: %d requests from a template's pool vs built, one at a time (%d reps)"
            % (POOL_SIZE, REPS))
        pool_row(table, bench_pool(bin_dir))
        print(table.markdown("# bench/run.py --only pool"))
        return

    if args.only == "gateway":
        log("gateway: peak requests/s of each path vs bare libmicrohttpd (%d reps)" % REPS)
        bench_gateway(bin_dir, table)
        print(table.markdown("# bench/run.py --only gateway"))
        return

    if args.only == "placement":
        log("scheduler: %d placements at %s hosts beside SET (%d reps)"
            % (PLACEMENT_DECISIONS, " and ".join(map(str, PLACEMENT_HOSTS)), REPS))
        placement_rows(table, bench_placement(bin_dir))
        print(table.markdown("# bench/run.py --only placement"))
        return

    log("transfer: an agent fetching a %d MB image from the stager vs a read/write loop with "
        "SHA-256 (%d reps)" % (TRANSFER_MB, REPS))
    transfer = bench_transfer(bin_dir)
    if args.only == "transfer":
        transfer_row(table, transfer)
        print(table.markdown("# bench/run.py --only transfer"))
        return

    log("baseline: libvirt define+start on test:///default (%d reps)" % REPS)
    virt = [bench_libvirt(bin_dir) for _ in range(REPS)]
    virt_p50 = median([v["p50_ms"] for v in virt])
    virt_p99 = median([v["p99_ms"] for v in virt])
    virt_rate = median([v["per_s"] for v in virt])

    log("bus: Ping through lib/bus vs bare DEALER/ROUTER, both CURVE (%d reps)" % REPS)
    bus = bench_bus(bin_dir)
    bus_p50 = median([b["bus_p50_us"] for b in bus])
    bare_p50 = median([b["bare_p50_us"] for b in bus])
    bus_ratio = median([b["bus_p50_us"] / b["bare_p50_us"] for b in bus])

    log("scheduler: %d placements at %s hosts beside SET (%d reps)"
        % (PLACEMENT_DECISIONS, " and ".join(str(n) for n in PLACEMENT_HOSTS), REPS))
    placement = bench_placement(bin_dir)

    log("disks: linked clone vs full copy of a %d MB base (%d reps)" % (DISK_BASE_MB, REPS))
    disks = bench_disks()

    log("instant deploy: %d requests from a template's pool vs built, one at a time (%d reps)"
        % (POOL_SIZE, REPS))
    pool = bench_pool(bin_dir)

    p = Platform(bin_dir=bin_dir, env=RATE_ENV)
    watcher = None
    try:
        log("starting redis, every service, %d simulated hosts and the gateway" % AGENTS)
        p.start_all(agents=AGENTS, agent_env=AGENT_ENV)
        settings = effective_settings(p)
        gw = settings.get("gateway", {})
        admin = login(p.http_port, p.admin_user, p.admin_password)
        status, body = Http(p.http_port, admin).call(
            "POST", "/v1/users", {"username": "bench", "password": "bench-password-1"})
        if status != 201:
            raise RuntimeError("POST /v1/users: %s %r" % (status, body))
        user = login(p.http_port, "bench", "bench-password-1")
        redis = Redis(p)

        # -- provisioning --------------------------------------------------------------
        watcher = ActiveWatcher(p)
        watcher.start()
        p50s, p99s, rates, all_vms, profiles = [], [], [], [], []
        procs = platform_procs(p)
        cpu = {name: 0.0 for name, _ in procs}   # ms of CPU during the reps, per process
        prov_seconds = 0.0
        for rep in range(REPS):
            log("provision rep %d/%d: %d requests at concurrency %d"
                % (rep + 1, REPS, PROVISION_N, PROVISION_CONCURRENCY))
            before = {name: cpu_ms(pid) for name, pid in procs}
            t_rep = time.monotonic()
            lat, rate, vms = provision_rep(p, watcher, user, PROVISION_N,
                                           PROVISION_CONCURRENCY, "%d" % rep)
            prov_seconds += time.monotonic() - t_rep
            for name, pid in procs:
                cpu[name] += cpu_ms(pid) - before[name]
            p50s.append(pct(lat, 50))
            p99s.append(pct(lat, 99))
            rates.append(rate)
            all_vms += vms
            profiles.append(stage_profile(redis, vms))
            log("  p50 %.0f ms, p99 %.0f ms, %.1f VMs/s" % (p50s[-1], p99s[-1], rate))
        prov_p50, prov_p99, prov_rate = median(p50s), median(p99s), median(rates)

        # -- Redis work per provisioning ----------------------------------------------
        log("redis: commands per VM (MONITOR, background subtracted)")
        exclude = [redis.local_addr(), watcher.redis.local_addr()]
        mon = Monitor(p, exclude)
        mon.start()
        time.sleep(3.0)
        idle_c, idle_l, idle_by = mon.snapshot()
        t_idle = 3.0
        t0 = time.monotonic()
        n_count = 40
        _, _, count_vms = provision_rep(p, watcher, user, n_count, PROVISION_CONCURRENCY, "m")
        t_busy = time.monotonic() - t0
        busy_c, busy_l, busy_by = mon.snapshot()
        by_client = mon.clients()
        mon.close()
        owners = socket_owners(procs)
        by_service = {}
        for addr, count in by_client.items():
            name = re.sub(r"-\d+$", "", owners.get(addr, "other"))
            by_service[name] = by_service.get(name, 0) + count
        all_vms += count_vms
        bg = t_busy / t_idle
        client_per_vm = ((busy_c - idle_c) - idle_c * bg) / n_count
        lua_per_vm = ((busy_l - idle_l) - idle_l * bg) / n_count
        stages = profiles[0][1] or 1
        rt_per_stage = client_per_vm / stages
        top = sorted(((c, (busy_by.get(c, 0) - idle_by.get(c, 0) - idle_by.get(c, 0) * bg)
                       / n_count) for c in busy_by), key=lambda x: -x[1])[:6]

        # -- bus (measured before the platform started) ------------------------------
        # -- gateway -------------------------------------------------------------------
        vm_id = all_vms[0]
        bare = BareMhd(bin_dir, gw)
        paths = [("bare libmicrohttpd, fixed JSON", bare.port, "/", None),
                 ("GET /healthz", p.http_port, "/healthz", None),
                 ("GET /v1/vms/{id} (authenticated)", p.http_port, "/v1/vms/" + vm_id, user),
                 ("GET /v1/templates (authenticated)", p.http_port, "/v1/templates", user)]
        peak = {name: [] for name, _, _, _ in paths}
        for rep in range(REPS):
            log("gateway rep %d/%d: wrk -t%d -c%d -d%ds"
                % (rep + 1, REPS, WRK_THREADS, WRK_CONNECTIONS, SECONDS))
            for name, port, path, token in paths:
                peak[name].append(wrk(port, path, token)["rps"])
        bare.stop()
        bare_rps = median(peak[paths[0][0]])
        rt_per_request = redis_per_request(p, exclude, [(n, path, token)
                                                        for n, _, path, token in paths[1:]])
        half = {}
        for name, port, path, token in paths[1:]:
            rps = median(peak[name])
            # c connections each pausing d ms between answers: rate = c / (d + latency).
            # At the peak, latency = c / peak; half the peak needs d = c / peak.
            delay = WRK_CONNECTIONS * 1000.0 / rps
            runs = [wrk(port, path, token, delay_ms=delay) for _ in range(REPS)]
            half[name] = (median([r["rps"] for r in runs]), median([r["p99"] for r in runs]), rps)

        # -- list ----------------------------------------------------------------------
        log("list: writing %d VMs to Redis in the stored format" % LIST_VMS)
        template_hash = hash_dict(redis.call("HGETALL", "berth:vm:{%s}" % vm_id))
        write_vms(redis, template_hash, LIST_VMS, "bench")
        total = redis.call("ZCARD", "berth:vms")
        list_path = "/v1/vms?limit=%d" % LIST_LIMIT
        status, page = Http(p.http_port, user).call("GET", list_path)
        if status != 200 or len(page["vms"]) != LIST_LIMIT:
            raise RuntimeError("GET %s: %s, %d VMs" % (list_path, status,
                                                        len((page or {}).get("vms", []))))
        page_bytes = len(json.dumps(page, separators=(",", ":")))
        bare_list = BareMhd(bin_dir, gw, page_bytes)
        lists = {"admin": [], "user": [], "bare": []}
        for rep in range(REPS):
            log("list rep %d/%d" % (rep + 1, REPS))
            lists["bare"].append(wrk(bare_list.port, "/", None, connections=LIST_CONNECTIONS))
            lists["admin"].append(wrk(p.http_port, list_path, admin,
                                      connections=LIST_CONNECTIONS))
            lists["user"].append(wrk(p.http_port, list_path, user,
                                     connections=LIST_CONNECTIONS))
        bare_list.stop()
        rt_per_request.update(redis_per_request(
            p, exclude, [("list admin", list_path, admin), ("list user", list_path, user)], 20))
        redis.close()
    finally:
        if watcher:
            watcher.stop = True
            watcher.join(5)
        p.stop()

    # -- the table ---------------------------------------------------------------------
    f = lambda x, nd=1: ("%." + str(nd) + "f") % x
    table.add("provision p50, request -> ACTIVE", f(prov_p50, 0) + " ms",
              "define+start p50 " + f(virt_p50, 2) + " ms", f(prov_p50 / virt_p50, 0) + "x",
              goal_text("provision_p50"), "provision_p50", prov_p50)
    table.add("provision p99, request -> ACTIVE", f(prov_p99, 0) + " ms",
              "define+start p99 " + f(virt_p99, 2) + " ms", f(prov_p99 / virt_p99, 0) + "x",
              goal_text("provision_p99"), "provision_p99", prov_p99)
    table.add("provision throughput", f(prov_rate) + " VMs/s",
              f(virt_rate, 0) + " domains/s", f(prov_rate / virt_rate, 4) + "x")
    table.add("redis round trips per VM (client commands)", f(client_per_vm),
              "%d stages x 2 = %d" % (stages, stages * 2),
              f(client_per_vm / (stages * 2), 2) + "x", "")
    table.add("redis round trips per stage", f(rt_per_stage, 2), "2", f(rt_per_stage / 2, 2) + "x",
              goal_text("redis_rt_per_stage"), "redis_rt_per_stage", rt_per_stage)
    table.add("redis commands per VM inside Lua scripts", f(lua_per_vm), "", "", "")
    table.add("bus Ping round trip p50 (CURVE)", f(bus_p50, 0) + " us",
              "bare DEALER/ROUTER, CURVE " + f(bare_p50, 0) + " us", f(bus_ratio, 2) + "x",
              goal_text("bus_ratio"), "bus_ratio", bus_ratio)
    table.add("bare libmicrohttpd, fixed JSON", f(bare_rps, 0) + " req/s", "", "1.00x", "")
    for name, _, _, _ in paths[1:]:
        rps = median(peak[name])
        ratio = rps / bare_rps
        key = "gateway_ratio" if "/v1/" in name else None
        table.add(name, f(rps, 0) + " req/s (%.1f Redis round trips)" % rt_per_request[name],
                  "bare " + f(bare_rps, 0) + " req/s", f(ratio, 3) + "x",
                  goal_text("gateway_ratio") if key else "", key, ratio)
    for name, _, _, _ in paths[1:]:
        rps, p99, peak_rps = half[name]
        key = "gateway_half_p99" if "/v1/" in name else None
        table.add(name + " p99 at half peak", f(p99, 2) + " ms",
                  "at " + f(rps, 0) + " req/s (peak " + f(peak_rps, 0) + ")", "",
                  goal_text("gateway_half_p99") if key else "", key, p99)
    bare_p99 = median([r["p99"] for r in lists["bare"]])
    for who in ("admin", "user"):
        p99 = median([r["p99"] for r in lists[who]])
        table.add("GET /v1/vms?limit=%d p99 (%s, %d VMs stored)" % (LIST_LIMIT, who, total),
                  f(p99) + " ms (%.0f Redis round trips)" % rt_per_request["list " + who],
                  "bare, same-size body " + f(bare_p99, 2) + " ms",
                  f(p99 / bare_p99, 0) + "x", goal_text("list_p99"), "list_p99", p99)

    placement_rows(table, placement)
    linked, full = median(disks["linked_ms"]), median(disks["full_ms"])
    table.add("VM disk from a %d MB base: linked clone" % DISK_BASE_MB, f(linked, 1) + " ms",
              "full copy %s ms" % f(full, 0), f(full / linked, 1) + "x faster",
              goal_text("disk_linked_speedup"), "disk_linked_speedup", full / linked)
    transfer_row(table, transfer)
    pool_row(table, pool)

    # Where provisioning time goes: the stages of the first repetition's tasks.
    prof, _ = profiles[len(profiles) // 2]
    table.notes.append("Provisioning stages (median of the middle repetition's tasks, ms): " +
                       ", ".join("%s %.0f" % (n, r) + (" (waited %.0f before)" % w if w == w else "")
                                 for n, r, w in prof if n) + ".")
    if prof:
        slowest = max(prof, key=lambda x: (x[1] if x[1] == x[1] else 0) +
                      (x[2] if x[2] == x[2] else 0))
        table.notes.append("Largest share of request -> ACTIVE: `%s` (%.0f ms running, %.0f ms "
                           "waiting before it)." % slowest)
    tick = float((settings.get("taskmgr") or {}).get("task_tick_ms") or 0)
    timed = [r for _, r, _ in prof if r == r and r > 0]
    if tick and timed:
        on_tick = sum(1 for r in timed if abs(r / tick - round(r / tick)) < 0.15 and r >= tick * 0.85)
        table.notes.append("%d of %d stages last a whole number of task_tick_ms (%.0f ms) give "
                           "or take 15%%: stages start on the engine's tick, not when the previous "
                           "step's reply arrives." % (on_tick, len(timed), tick))
    # What a gateway request costs beyond the bare server, and how much of it is Redis: the
    # inverse rates of /healthz (no Redis) and of each authenticated GET.
    health = median(peak["GET /healthz"])
    for name, _, _, _ in paths[2:]:
        rps = median(peak[name])
        table.notes.append("%s: %.0f us per request beyond /healthz at 16 connections, for %.1f "
                           "Redis round trips; /healthz itself costs %.0f us beyond the bare "
                           "server." % (name.split(" (")[0], 1e6 / rps - 1e6 / health,
                                        rt_per_request[name], 1e6 / health - 1e6 / bare_rps))
    table.notes.append("Redis client commands per VM, largest: " +
                       ", ".join("%s %.1f" % (c, n) for c, n in top) + ".")
    # Counted while provisioning only (heartbeats of idle time included: a small excess).
    table.notes.append("Redis client commands per VM by sender (while provisioning, idle "
                       "background not subtracted): " +
                       ", ".join("%s %.1f" % (n, c / n_count) for n, c in
                                 sorted(by_service.items(), key=lambda x: -x[1])) + ".")
    vms_done = REPS * PROVISION_N
    total_cpu = sum(cpu.values())
    table.notes.append("CPU per VM while provisioning (ms, all reps): " +
                       ", ".join("%s %.2f" % (n, c / vms_done) for n, c in
                                 sorted(cpu.items(), key=lambda x: -x[1])) +
                       "; total %.1f ms per VM, %.0f%% of %d CPUs over the reps (the rest: other "
                       "load on the machine, and waits)." %
                       (total_cpu / vms_done, 100.0 * total_cpu / 1000.0 / prov_seconds /
                        (os.cpu_count() or 1), os.cpu_count() or 0))
    table.notes.append("")
    table.notes.append("Settings: %d reps (medians), wrk -t%d -c%d -d%ds (list: -c%d), %d "
                       "provisioning requests per rep at concurrency %d, template `%s`, %d "
                       "simulated hosts on test:///default, CURVE on (every bus socket; the bus row's "
                       "bare ZeroMQ side too), "
                       "services with their built-in defaults except the gateway's rate limits "
                       "and taskmgr's heavy-task limits, set by the bench far above what it "
                       "sends: %s." %
                       (REPS, WRK_THREADS, WRK_CONNECTIONS, SECONDS, LIST_CONNECTIONS,
                        PROVISION_N, PROVISION_CONCURRENCY, TEMPLATE, AGENTS,
                        ", ".join("%s=%s" % (k[len("BERTH_"):].lower(), v)
                                  for k, v in sorted(RATE_ENV.items()))))
    for svc, cfg in sorted(settings.items()):
        if cfg:
            table.notes.append("- %s: %s" % (svc, ", ".join("%s=%s" % kv
                                                            for kv in sorted(cfg.items()))))
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    header = "# make bench, %s, commit %s (%.0f s, %d CPUs, load %.1f)" % (
        when, commit or "?", time.time() - started, os.cpu_count() or 0, os.getloadavg()[0])
    text = table.markdown(header)
    print(text)
    with open(args.out, "w") as out:
        out.write(text)
    log("table written to %s" % args.out)


if __name__ == "__main__":
    main()
