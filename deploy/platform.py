"""Berth platform runner: a real redis-server plus every Berth service as local processes.

Shared by the local runner (deploy/berth-up) and the integration tests. Everything runs on
loopback with free ports inside one data directory; nothing here needs root, Docker or any
Python package outside the standard library.

    from platform import Platform          # with deploy/ on sys.path
    with Platform(bin_dir="build/bin") as p:
        p.start_all(agents=3)              # redis, every service, three agents, gateway
        p.wait_http("/v1/health", lambda r: r.status == 200)
        p.stop_redis(); p.start_redis()    # same port, same dir, AOF reloaded

Environment: BERTH_BIN_DIR (where the berth-* binaries are), BERTH_REDIS_SERVER
(redis-server binary, default from PATH), BERTH_KEEP_DATA=1 (keep a temporary data dir).
"""

import errno
import hashlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

# The services start_all() launches, in start order (the gateway comes last, after agents).
SERVICES = ("approval", "scheduler", "taskmgr", "stager", "meter")

# Simulated host sizes for the agents, cycled: different sizes so placement has a choice.
AGENT_SIZES = (
    {"BERTH_HOST_VCPUS": "8", "BERTH_HOST_RAM_MB": "16384", "BERTH_HOST_DISK_GB": "200"},
    {"BERTH_HOST_VCPUS": "16", "BERTH_HOST_RAM_MB": "32768", "BERTH_HOST_DISK_GB": "500"},
    {"BERTH_HOST_VCPUS": "32", "BERTH_HOST_RAM_MB": "65536", "BERTH_HOST_DISK_GB": "1000"},
)

# Inherited BERTH_* variables that may reach the services; every other BERTH_* setting in the
# caller's environment is dropped so that, say, a stray BERTH_BIND cannot break every process.
PASS_THROUGH = ("BERTH_LOG_LEVEL", "BERTH_HEARTBEAT_MS", "BERTH_LIBVIRT_URI")
# The name the sentinels (Platform(sentinel=True)) monitor the primary under.
SENTINEL_MASTER = "berth"

_PR_SET_PDEATHSIG = 1


class PlatformError(RuntimeError):
    """A process of the platform failed to start, died or did not become ready in time."""


def free_port(host="127.0.0.1"):
    """A TCP port free on host now, for a process to bind later: below the kernel's ephemeral
    range, so that no bind to port 0 meanwhile (a ZeroMQ `tcp://...:*` endpoint, any client
    socket) can take it first, as it could a port the kernel picked."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = random.randrange(max(1024, low - 22000), low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        return port
    raise PlatformError("no free port below the ephemeral range")


def _die_with_parent():
    # Runs in the child between fork and exec: a new session keeps the terminal's Ctrl-C away
    # from the services (the runner stops them in order), and PDEATHSIG stops them if the
    # runner itself is killed with SIGKILL. Linux only; elsewhere the session is enough.
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except Exception:
        pass


class Response:
    """An HTTP answer: status, headers, body (bytes); .text and .json() decode it."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<Response %s %r>" % (self.status, self.text[:200])


class Process:
    """One child process of the platform: a service instance or redis-server."""

    def __init__(self, name, service, argv, env, log_path):
        self.name = name          # unique within the platform, e.g. "agent-2"
        self.service = service    # "agent", "gateway", "redis", ...
        self.argv = list(argv)
        self.env = dict(env)      # the complete environment it was started with
        self.log_path = log_path  # stdout and stderr, appended across restarts
        self.stopping = False     # set once we signalled it: its exit is then expected
        self._log = open(log_path, "ab")
        self._log_start = self._log.tell()   # where this run's output begins
        self._log.write(("---- start %s: %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"),
                                                  " ".join(argv))).encode())
        self._log.flush()
        try:
            self.popen = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL,
                                          stdout=self._log, stderr=subprocess.STDOUT,
                                          start_new_session=True, preexec_fn=_die_with_parent)
        except OSError:
            self._log.close()
            raise

    @property
    def pid(self):
        return self.popen.pid

    @property
    def returncode(self):
        return self.popen.poll()

    def alive(self):
        return self.popen.poll() is None

    def kill(self, sig=signal.SIGTERM):
        """Send sig (SIGTERM by default). Its exit is then expected, not a failure."""
        self.stopping = True
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout=None):
        """Exit status, or None if still running after timeout seconds."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self):
        if not self._log.closed:
            self._log.close()

    def tail(self, lines=20):
        """The last lines this run wrote to its log, for error messages."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(self._log_start, f.tell() - 64 * 1024))
                data = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(data.splitlines()[-lines:])

    def describe_exit(self):
        rc = self.popen.poll()
        if rc is None:
            return "running"
        if rc < 0:
            try:
                return "killed by %s" % signal.Signals(-rc).name
            except ValueError:
                return "killed by signal %d" % -rc
        return "exited with status %d" % rc

    def __repr__(self):
        return "<Process %s pid=%s %s>" % (self.name, self.pid, self.describe_exit())


class Platform:
    """Redis and the Berth services on loopback, owned by this object and stopped by stop().

    bin_dir: directory with the berth-* binaries (default: env BERTH_BIN_DIR).
    data_dir: where Redis data, service data and logs live (default: a new temporary dir,
      removed by stop() unless keep_data or BERTH_KEEP_DATA=1).
    http_port: gateway port (default: a free port). admin_user/admin_password: gateway
      bootstrap credentials (password generated when None). env: extra variables for every
      service. grace: seconds between SIGTERM and SIGKILL in stop(). tls: the gateway serves
      HTTPS with the self-signed certificate berth-secrets made (ca_file), and http() checks
      it; without, plain HTTP on loopback.
    """

    def __init__(self, bin_dir=None, data_dir=None, http_port=None, admin_user="admin",
                 admin_password=None, env=None, redis_port=None, keep_data=None, grace=10.0,
                 tls=False, sentinel=False):
        bin_dir = bin_dir or os.environ.get("BERTH_BIN_DIR")
        self.bin_dir = os.path.abspath(bin_dir) if bin_dir else None
        if data_dir:
            self.data_dir = os.path.abspath(data_dir)
            os.makedirs(self.data_dir, exist_ok=True)
            self._owns_data_dir = False
        else:
            self.data_dir = tempfile.mkdtemp(prefix="berth-")
            self._owns_data_dir = True
        if keep_data is None:
            keep_data = os.environ.get("BERTH_KEEP_DATA", "") not in ("", "0")
        self.keep_data = keep_data
        self.log_dir = os.path.join(self.data_dir, "logs")
        os.makedirs(self.log_dir, exist_ok=True)
        self.redis_dir = os.path.join(self.data_dir, "redis")
        self.secrets_dir = os.path.join(self.data_dir, "secrets")
        self._secrets_made = False
        self.redis_port = redis_port
        self.redis = None                 # the redis-server Process while it runs
        # With sentinel: two replicas of it and three sentinels (start_redis); every process
        # finds the primary through them, and so does redis_connect after a failover.
        self.sentinel = sentinel
        self.replicas = []                # (port, Process) of each replica
        self.sentinels = []               # (port, Process) of each sentinel
        self.http_port = http_port
        self.admin_user = admin_user
        self.admin_password = admin_password or secrets.token_urlsafe(18)
        self.extra_env = dict(env or {})
        self.grace = grace
        self.tls = tls
        self.procs = []                   # every service Process started, in start order
        self.taskmgr_endpoint = None      # set by start_all()
        self.stager_endpoint = None       # set by start_all(): agents fetch seeds there
        self._ports = set()
        self._stopped = False

    # -- ports and environment ------------------------------------------------------------

    def free_port(self):
        """A free loopback port (free_port()) never handed out before by this platform."""
        for _ in range(100):
            port = free_port()
            if port not in self._ports:
                self._ports.add(port)
                return port
        raise PlatformError("no free port found")

    def base_env(self):
        """The environment every service starts with: ours minus stray BERTH_*, plus Redis."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("BERTH_") or k in PASS_THROUGH}
        env.update(self.extra_env)
        env["BERTH_SECRETS_DIR"] = self.secrets_dir
        if self.redis_port is not None:
            env["BERTH_REDIS_HOST"] = "127.0.0.1"
            env["BERTH_REDIS_PORT"] = str(self.redis_port)
        if self.sentinels:
            env["BERTH_REDIS_SENTINELS"] = ",".join("127.0.0.1:%d" % port
                                                    for port, _ in self.sentinels)
            env["BERTH_REDIS_MASTER_NAME"] = SENTINEL_MASTER
        return env

    @property
    def url(self):
        """Base URL of the gateway (valid once start_all() or start_gateway() ran)."""
        if self.http_port is None:
            raise PlatformError("the gateway has no port yet")
        return "%s://127.0.0.1:%d" % ("https" if self.tls else "http", self.http_port)

    @property
    def ca_file(self):
        """The gateway's self-signed certificate (berth-secrets): what HTTPS clients trust."""
        return os.path.join(self.secrets_dir, "gateway.crt")

    def tls_fingerprint(self):
        """SHA-256 fingerprint of the gateway's certificate, as AA:BB:..."""
        self.make_secrets()
        with open(self.ca_file) as f:
            der = ssl.PEM_cert_to_DER_cert(f.read())
        return cert_fingerprint(der)

    def ssl_context(self):
        """A client context that trusts only the gateway's certificate (host name checked)."""
        return ssl.create_default_context(cafile=self.ca_file)

    # -- redis ----------------------------------------------------------------------------

    def make_secrets(self):
        """Create the platform's secrets (berth-secrets) under the data dir, once.

        Runs before Redis and every service start; what exists already (an earlier run of the
        same data dir) is kept.
        """
        if self._secrets_made:
            return
        run = subprocess.run([self.binary("secrets"), self.secrets_dir],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if run.returncode != 0:
            raise PlatformError("berth-secrets failed:\n" + run.stdout)
        self._secrets_made = True

    def view_dir(self, name):
        """The secrets a process named name (a service, or an agent's certificate
        "agent-<host>") may read: berth-secrets' views/<name>, its secrets_dir."""
        return os.path.join(self.secrets_dir, "views", name)

    def host_cert(self, host):
        """The bus certificate of an agent host (made by berth-secrets --host the first time):
        its name under secrets/curve, which the agent gets as BERTH_CURVE_CERT."""
        self.make_secrets()
        name = "agent-" + host
        if not os.path.exists(os.path.join(self.secrets_dir, "curve", name + ".key")):
            run = subprocess.run([self.binary("secrets"), self.secrets_dir, "--host", host],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if run.returncode != 0:
                raise PlatformError("berth-secrets --host %s failed:\n%s" % (host, run.stdout))
        return name

    def server_cert(self, entry):
        """The certificate the server of a registry entry presents: its service's, or an
        agent's host's (found once per instance while Redis answers, then remembered)."""
        if entry["service"] != "agent":
            return entry["service"]
        cache = self.__dict__.setdefault("_agent_certs", {})
        if entry["instance"] not in cache:
            for proc in self.procs:
                host = proc.env.get("BERTH_HOST_NAME") if proc.service == "agent" else None
                if host and self.redis_command("HGET", "berth:host:" + host,
                                               "agent") == entry["instance"]:
                    cache[entry["instance"]] = proc.env["BERTH_CURVE_CERT"]
        if entry["instance"] not in cache:
            raise PlatformError("no agent host for instance %s" % entry["instance"])
        return cache[entry["instance"]]

    def probe_argv(self, *args, cert="gateway", server=None):
        """The command line of berth-probe with a bus certificate: cert is a name under
        secrets/curve ("gateway", "taskmgr", self.host_cert("host-1")), "new" for a key the
        store does not hold or "none" for no CURVE; server the certificate of the server at an
        ENDPOINT argument (default: the service of cert)."""
        argv = [self.binary("probe"), "--secrets", self.secrets_dir, "--cert", cert]
        if server:
            argv += ["--server", server]
        return argv + [str(a) for a in args]

    def start_redis(self, timeout=15.0):
        """Start redis-server (or start it again) on the same port and dir; wait for PING.

        AOF on, RDB snapshots off: a restart replays the append-only file like production.
        Bound to loopback with protected mode on; its users need the passwords berth-secrets
        made (the server reads only their hashes, secrets/redis.acl): berth, the services'
        (berth:* keys only, no @dangerous command), and default, the operator's (every
        command; redis_command uses it).
        """
        self.make_secrets()
        if self.redis is not None and self.redis.alive():
            return self.redis
        if self.redis_port is None:
            self.redis_port = self.free_port()
        os.makedirs(self.redis_dir, exist_ok=True)
        server = os.environ.get("BERTH_REDIS_SERVER", "redis-server")
        argv = [server, "--port", str(self.redis_port), "--bind", "127.0.0.1",
                "--dir", self.redis_dir, "--appendonly", "yes", "--save", "",
                "--daemonize", "no", "--protected-mode", "yes", "--logfile", "",
                "--aclfile", os.path.join(self.secrets_dir, "redis.acl")]
        log_path = os.path.join(self.log_dir, "redis.log")
        try:
            self.redis = Process("redis", "redis", argv, os.environ, log_path)
        except FileNotFoundError:
            raise PlatformError("redis-server not found (%s); run deploy/install-deps" % server)
        deadline = time.monotonic() + timeout
        while True:
            if not self.redis.alive():
                raise PlatformError("redis-server %s:\n%s" % (self.redis.describe_exit(),
                                                               self.redis.tail()))
            try:
                if self._redis_ping(self.redis_port) == "PONG":
                    break
            except (OSError, PlatformError):
                pass   # not listening yet, or still loading the AOF
            if time.monotonic() > deadline:
                raise PlatformError("redis-server on port %d not ready after %.0fs:\n%s"
                                    % (self.redis_port, timeout, self.redis.tail()))
            time.sleep(0.05)
        if self.sentinel and not self.sentinels:
            self._start_replica_and_sentinels(server, timeout)
        return self.redis

    def _redis_ping(self, port):
        with self._redis_socket(port, 1.0) as s:
            s.sendall(resp_command("PING"))
            return _RespReader(s).read()

    def _start_replica_and_sentinels(self, server, timeout):
        """Two replicas of the primary (the same users, replicating as the admin user: after a
        failover the new primary still has one) and three sentinels watching it as
        SENTINEL_MASTER (quorum 2), quick to fail over: down after 1 s, a failover given 5 s."""
        for i in range(2):
            port = self.free_port()
            replica_dir = os.path.join(self.data_dir, "redis-replica-%d" % (i + 1))
            os.makedirs(replica_dir, exist_ok=True)
            argv = [server, "--port", str(port), "--bind", "127.0.0.1",
                    "--dir", replica_dir, "--appendonly", "yes", "--save", "",
                    "--daemonize", "no", "--protected-mode", "yes", "--logfile", "",
                    "--aclfile", os.path.join(self.secrets_dir, "redis.acl"),
                    "--replicaof", "127.0.0.1", str(self.redis_port),
                    "--masteruser", "default", "--masterauth", self.redis_password]
            self.replicas.append((port, Process(
                "redis-replica-%d" % (i + 1), "redis", argv, os.environ,
                os.path.join(self.log_dir, "redis-replica-%d.log" % (i + 1)))))
        for i in range(3):
            port = self.free_port()
            conf = os.path.join(self.data_dir, "sentinel-%d.conf" % (i + 1))
            with open(conf, "w") as f:
                f.write("port %d\nbind 127.0.0.1\ndir %s\n"
                        "sentinel monitor %s 127.0.0.1 %d 2\n"
                        "sentinel down-after-milliseconds %s 1000\n"
                        "sentinel failover-timeout %s 5000\n"
                        "sentinel auth-user %s default\n"
                        "sentinel auth-pass %s %s\n"
                        % (port, self.data_dir, SENTINEL_MASTER, self.redis_port,
                           SENTINEL_MASTER, SENTINEL_MASTER, SENTINEL_MASTER,
                           SENTINEL_MASTER, self.redis_password))
            proc = Process("sentinel-%d" % (i + 1), "sentinel", [server, conf, "--sentinel"],
                           os.environ, os.path.join(self.log_dir, "sentinel-%d.log" % (i + 1)))
            self.sentinels.append((port, proc))
        deadline = time.monotonic() + timeout
        while True:
            try:
                ready = self.primary_port() == self.redis_port and all(
                    len(self._sentinel_command(port, "SENTINEL", "REPLICAS", SENTINEL_MASTER))
                    == len(self.replicas) for port, _ in self.sentinels)
                if ready:
                    return
            except (OSError, PlatformError):
                pass
            if time.monotonic() > deadline:
                raise PlatformError("the replica and sentinels not ready after %.0fs" % timeout)
            time.sleep(0.1)

    def _sentinel_command(self, port, *args):
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(resp_command(*args))
            return _RespReader(s).read()

    def primary_port(self):
        """The port of the Redis primary: the sentinels' answer when they run (the first that
        answers), else the one Redis."""
        for port, proc in self.sentinels:
            if not proc.alive():
                continue
            try:
                addr = self._sentinel_command(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                                              SENTINEL_MASTER)
            except (OSError, PlatformError):
                continue
            if addr:
                return int(addr[1])
        return self.redis_port

    def stop_redis(self, sig=signal.SIGTERM, timeout=15.0):
        """Stop redis-server (SIGTERM flushes the AOF; pass SIGKILL for a crash)."""
        self._terminate([proc for _, proc in self.sentinels + self.replicas], timeout)
        self.sentinels, self.replicas = [], []
        if self.redis is None:
            return
        self.redis.kill(sig)
        if self.redis.wait(timeout) is None:
            self.redis.kill(signal.SIGKILL)
            self.redis.wait()
        self.redis.close()
        self.redis = None

    def _secret(self, name):
        self.make_secrets()
        with open(os.path.join(self.secrets_dir, name)) as f:
            return f.read().strip()

    @property
    def redis_password(self):
        """The password of Redis's default user, the operator's (berth-secrets)."""
        return self._secret("redis-admin.password")

    @property
    def redis_service_password(self):
        """The password of Redis's user berth, which every service AUTHs as."""
        return self._secret("redis.password")

    def redis_connect(self, timeout=5.0):
        """A socket to the platform's Redis (its primary, with sentinels), authenticated as the
        operator (default user, every command); the caller closes it."""
        if self.redis_port is None:
            raise PlatformError("redis has not been started")
        return self._redis_socket(self.primary_port(), timeout)

    def _redis_socket(self, port, timeout):
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        try:
            s.sendall(resp_command("AUTH", self.redis_password))
            _RespReader(s).read()
        except BaseException:
            s.close()
            raise
        return s

    def redis_command(self, *args, timeout=5.0):
        """Run one Redis command on the platform's server; the decoded reply.

        A minimal RESP client so tests can look at state without redis-py. Error replies
        raise PlatformError.
        """
        with self.redis_connect(timeout) as s:
            s.sendall(resp_command(*args))
            return _RespReader(s).read()

    # -- services -------------------------------------------------------------------------

    def binary(self, service):
        """Path of a service's binary: 'scheduler' -> BIN_DIR/berth-scheduler."""
        if not self.bin_dir:
            raise PlatformError("no bin dir: pass bin_dir or set BERTH_BIN_DIR")
        name = service if service.startswith("berth") else "berth-" + service
        path = os.path.join(self.bin_dir, name)
        if not os.access(path, os.X_OK):
            raise PlatformError("%s not found or not executable (build first)" % path)
        return path

    def _unique_name(self, base):
        taken = {p.name for p in self.procs if p.alive()}
        if base not in taken:
            return base
        n = 2
        while "%s-%d" % (base, n) in taken:
            n += 1
        return "%s-%d" % (base, n)

    def start(self, service, env=None, name=None, args=()):
        """Start one instance of a service; the Process handle.

        env is merged over base_env(); BERTH_DATA_DIR defaults to a directory of its own.
        Output goes to logs/<name>.log under the data dir.
        """
        self.make_secrets()
        argv = [self.binary(service)] + list(args)
        name = name or self._unique_name(service)
        full = self.base_env()
        full["BERTH_DATA_DIR"] = os.path.join(self.data_dir, "services", name)
        full.update(env or {})
        # Each process reads only its own view of the secrets (berth-secrets' views/<cert>),
        # unless the caller names a directory of its own.
        if "BERTH_SECRETS_DIR" not in (env or {}):
            view = self.view_dir(full.get("BERTH_CURVE_CERT") or service)
            if os.path.isdir(view):
                full["BERTH_SECRETS_DIR"] = view
        # Every process serves its Prometheus metrics on a port of its own (metrics_url).
        full.setdefault("BERTH_METRICS_PORT", str(self.free_port()))
        os.makedirs(full["BERTH_DATA_DIR"], exist_ok=True)
        log_path = os.path.join(self.log_dir, name + ".log")
        proc = Process(name, service, argv, full, log_path)
        self._stopped = False
        self.procs.append(proc)
        return proc

    @staticmethod
    def metrics_url(proc):
        """Where proc serves its Prometheus metrics."""
        return "http://127.0.0.1:%s/metrics" % proc.env["BERTH_METRICS_PORT"]

    def restart(self, proc, timeout=None):
        """Start a process again with the same binary, environment and name.

        If it is still running it is stopped first (SIGTERM, SIGKILL after the grace period).
        """
        if proc.alive():
            self._terminate([proc], self.grace if timeout is None else timeout)
        proc.close()
        new = Process(proc.name, proc.service, proc.argv, proc.env, proc.log_path)
        self.procs.append(new)
        return new

    def start_gateway(self, env=None):
        if self.http_port is None:
            self.http_port = self.free_port()
        full = {"BERTH_HTTP_BIND": "127.0.0.1", "BERTH_HTTP_PORT": str(self.http_port),
                "BERTH_ADMIN_USER": self.admin_user,
                "BERTH_ADMIN_PASSWORD": self.admin_password}
        if self.tls:
            full["BERTH_HTTP_TLS_CERT"] = os.path.join(self.view_dir("gateway"), "gateway.crt")
            full["BERTH_HTTP_TLS_KEY"] = os.path.join(self.view_dir("gateway"), "gateway.key")
        full.update(env or {})
        return self.start("gateway", env=full)

    def start_agent(self, index, env=None):
        """Start agent number index (1-based) as host-<index>, sized from AGENT_SIZES."""
        if self.taskmgr_endpoint is None:
            raise PlatformError("start taskmgr (start_all) before agents")
        full = {"BERTH_TASKMGR_ENDPOINTS": self.taskmgr_endpoint,
                "BERTH_HOST_NAME": "host-%d" % index}
        if self.stager_endpoint:
            full["BERTH_STAGER_ENDPOINTS"] = self.stager_endpoint
        full.update(AGENT_SIZES[(index - 1) % len(AGENT_SIZES)])
        full.update(env or {})
        full.setdefault("BERTH_CURVE_CERT", self.host_cert(full["BERTH_HOST_NAME"]))
        return self.start("agent", env=full, name="agent-%d" % index)

    def start_all(self, agents=3, wait=True, timeout=60.0, instances=None, agent_env=None):
        """Redis (if not running), every service, agents of different sizes and the gateway.

        instances: {service: count} for services to run more than once (e.g. two taskmgrs).
        agent_env: extra environment for every agent (e.g. fixed host sizes).
        Each taskmgr and stager binds a fixed free port because the agents are configured
        with the endpoints of all of them (agents park a poll at every taskmgr and fetch
        seeds from the stager); instance ids are <service>-<n>, so tests can find the
        process behind an instance. With wait, returns once /readyz answers 200.
        """
        self.start_redis()
        instances = instances or {}
        endpoints = {"taskmgr": [], "stager": []}
        for service in SERVICES:
            for n in range(1, instances.get(service, 1) + 1):
                env = {"BERTH_INSTANCE": "%s-%d" % (service, n)}
                if service in endpoints:
                    endpoints[service].append("tcp://127.0.0.1:%d" % self.free_port())
                    env["BERTH_BIND"] = endpoints[service][-1]
                self.start(service, env=env, name=service if n == 1 else "%s-%d" % (service, n))
        self.taskmgr_endpoint = ",".join(endpoints["taskmgr"])
        self.stager_endpoint = ",".join(endpoints["stager"])
        for i in range(1, agents + 1):
            self.start_agent(i, env=agent_env)
        self.start_gateway()
        if wait:
            self.wait_ready(timeout)
        return self

    def unexpected_exits(self):
        """Processes that exited although nobody asked them to."""
        procs = self.procs + ([self.redis] if self.redis else [])
        return [p for p in procs if not p.stopping and not p.alive()]

    def check_alive(self):
        """Raise PlatformError naming every process that died unexpectedly, with its log."""
        dead = self.unexpected_exits()
        if dead:
            raise PlatformError("\n".join(
                "%s (pid %d) %s; last log lines (%s):\n%s"
                % (p.name, p.pid, p.describe_exit(), p.log_path, p.tail()) for p in dead))

    # -- HTTP -----------------------------------------------------------------------------

    def http(self, method, path, body=None, headers=None, timeout=10.0):
        """One request to the gateway; a Response for every status (no exception on 4xx/5xx).

        body may be bytes, str or a JSON-serializable object (sent as application/json).
        """
        data = body
        hdrs = dict(headers or {})
        if body is not None and not isinstance(body, (bytes, str)):
            data = json.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        if isinstance(data, str):
            data = data.encode()
        req = urllib.request.Request(self.url + path, data=data, headers=hdrs, method=method)
        context = self.ssl_context() if self.tls else None
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
                return Response(r.status, dict(r.headers), r.read())
        except urllib.error.HTTPError as e:
            return Response(e.code, dict(e.headers), e.read())

    def wait_http(self, path, predicate=None, timeout=30.0, interval=0.1):
        """Poll GET path until predicate(Response) is true; the Response that satisfied it.

        Default predicate: status 200. Fails early if a process dies; raises TimeoutError
        with the last answer when the deadline passes.
        """
        predicate = predicate or (lambda r: r.status == 200)
        deadline = time.monotonic() + timeout
        last = None
        while True:
            self.check_alive()
            try:
                last = self.http("GET", path, timeout=max(0.5, min(5.0, timeout)))
                if predicate(last):
                    return last
            except (OSError, ValueError) as e:    # refused, reset, timeout, bad JSON
                last = e
            if time.monotonic() > deadline:
                raise TimeoutError("GET %s: condition not met after %.0fs; last answer: %r"
                                   % (path, timeout, last))
            time.sleep(interval)

    def wait_ready(self, timeout=60.0):
        """Wait until the gateway's /readyz says 200 (Redis up, every service registered)."""
        return self.wait_http("/readyz", timeout=timeout)

    # -- shutdown -------------------------------------------------------------------------

    def _terminate(self, procs, grace):
        """SIGTERM, then SIGKILL after grace seconds; the names of those that needed SIGKILL."""
        for p in procs:
            p.kill(signal.SIGTERM)
        deadline = time.monotonic() + grace
        killed = []
        for p in procs:
            if p.wait(max(0.0, deadline - time.monotonic())) is None:
                p.kill(signal.SIGKILL)
                p.wait()
                killed.append(p.name)
            p.close()
        return killed

    def stop(self):
        """Stop everything started here: services (gateway first), then Redis. Safe twice.

        SIGTERM, then SIGKILL for whatever is still running after the grace period.
        Removes a temporary data dir unless keep_data.
        """
        if self._stopped:
            return
        self._stopped = True
        # A service that ignores SIGTERM (a thread that never sees the stop) is a defect: the
        # operator's Ctrl-C or `docker stop` would hang on it. It fails the test like a
        # sanitizer report does.
        hung = self._terminate(list(reversed(self.procs)), self.grace)
        self.stop_redis()
        reports = self.sanitizer_reports()
        reports += ["%s: did not stop within %.0f s of SIGTERM" % (name, self.grace)
                    for name in hung]
        if self._owns_data_dir and not self.keep_data and not reports:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        if reports:
            raise PlatformError("sanitizer reports or hung stops (logs kept in %s):\n%s"
                                % (self.data_dir, "\n".join(reports)))

    def sanitizer_reports(self, context=60):
        """'name: report' for the first AddressSanitizer, LeakSanitizer or UBSan report in each
        service's log (its first `context` lines, stacks included, so that a report seen only
        once in CI can be read from CI's output): a memory error is a failure even when the
        process lived on."""
        marks = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")
        found = []
        for path in sorted({p.log_path for p in self.procs}):
            try:
                with open(path, "rb") as f:
                    text = f.read().decode("utf-8", "replace")
            except OSError:
                continue
            lines = text.splitlines()
            for i, line in enumerate(lines):
                if any(m in line for m in marks):
                    report = [l.rstrip() for l in lines[i:i + context]]
                    found.append("%s: %s" % (os.path.basename(path), "\n    ".join(report)))
                    break
        return found

    def logs(self):
        """{name: log path} of every process started, for reports."""
        out = {p.name: p.log_path for p in self.procs}
        out["redis"] = os.path.join(self.log_dir, "redis.log")
        return out

    def dump_logs(self, lines=30, file=None):
        """Print the tail of every log (for a failed test)."""
        file = file or sys.stderr
        seen = set()
        for p in self.procs + ([self.redis] if self.redis else []):
            if p.log_path in seen:
                continue
            seen.add(p.log_path)
            print("==== %s (%s) %s" % (p.name, p.describe_exit(), p.log_path), file=file)
            print(p.tail(lines), file=file)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


def cert_fingerprint(der):
    """SHA-256 fingerprint of a DER certificate, as AA:BB:... (what openssl and curl show)."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def resp_command(*args):
    """One Redis command in RESP, the bytes to send."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(parts)


class _RespReader:
    """Reads one RESP reply from a socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OSError(errno.ECONNRESET, "redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OSError(errno.ECONNRESET, "redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise PlatformError("redis: " + rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode("utf-8", "replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise PlatformError("redis: unexpected reply %r" % line)


def _graft_stdlib_platform():
    # This file shares its name with the standard library's `platform`. When deploy/ is first
    # on sys.path, a standard module that imports `platform` gets this one; copy the real
    # module's functions in so that such imports keep working.
    try:
        import importlib.util
        import sysconfig

        path = os.path.join(sysconfig.get_paths()["stdlib"], "platform.py")
        spec = importlib.util.spec_from_file_location("_stdlib_platform", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        for key, value in vars(mod).items():
            if not key.startswith("__") and key not in globals():
                globals()[key] = value
    except Exception:
        pass


if __name__ == "platform":
    _graft_stdlib_platform()
