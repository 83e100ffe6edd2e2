#!/usr/bin/env python3
"""docker-compose.yml is valid and describes a platform that actually comes up.

Without Docker: docker-compose validates and normalizes the file, then every Berth service
in it is started from BERTH_BIN_DIR as a local process with its compose environment
translated to loopback (Redis on a free port, each `tcp://*:5555` bind on a free port,
`tcp://<service>:5555` references pointed at those ports by the name localhost, the gateway on
a free HTTP port).
The test passes when the gateway's /v1/health lists every service of the compose file.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_compose.py
"""

import os
import re
import shutil
import subprocess
import sys
import unittest
import urllib.request
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPOSE_FILE = os.path.join(ROOT, "docker-compose.yml")

# deploy/platform.py, loaded by path once for every test (berth_test.py).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import Api, berth_platform  # noqa: E402

try:
    import yaml
except ImportError:   # a failure, not a skip: deploy/install-deps installs python3-yaml
    yaml = None

ADMIN_PASSWORD = "compose-test-password"
BERTH_BINARIES = {"berth-gateway", "berth-approval", "berth-scheduler", "berth-taskmgr",
                  "berth-stager", "berth-meter", "berth-agent"}
READY_TIMEOUT = float(os.environ.get("BERTH_TEST_TIMEOUT", "90"))


def compose_command():
    """docker-compose (v1, Debian's package) or `docker compose` (v2), whichever exists."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        r = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if r.returncode == 0:
            return ["docker", "compose"]
    return None


def run_compose(args, password=ADMIN_PASSWORD):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
    if password is not None:
        env["BERTH_ADMIN_PASSWORD"] = password
    return subprocess.run(compose_command() + ["-f", COMPOSE_FILE] + args, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def load_config():
    """The normalized compose configuration as docker-compose prints it, parsed."""
    r = run_compose(["config"])
    if r.returncode != 0:
        raise AssertionError("docker-compose config failed:\n" + r.stderr)
    return yaml.safe_load(r.stdout)


def berth_services(config):
    """{compose service name: definition} of the services that run a Berth binary."""
    out = {}
    for name, svc in config["services"].items():
        cmd = svc.get("command") or []
        if isinstance(cmd, str):
            cmd = cmd.split()
        if cmd and cmd[0] in BERTH_BINARIES:
            out[name] = svc
    return out


def init_services(config):
    """{name: definition} of the one-shot services that run berth-secrets before the rest."""
    out = {}
    for name, svc in config["services"].items():
        cmd = svc.get("command") or []
        if isinstance(cmd, str):
            cmd = cmd.split()
        if cmd and cmd[0] == "berth-secrets":
            out[name] = svc
    return out


def mounts(svc):
    """{mount point: (volume, read_only)} of a service's named volumes."""
    out = {}
    for v in svc.get("volumes") or []:
        if isinstance(v, dict):
            out[v["target"]] = (v.get("source"), bool(v.get("read_only")))
        else:
            parts = str(v).split(":")
            out[parts[1]] = (parts[0], len(parts) > 2 and "ro" in parts[2].split(","))
    return out


def service_type(svc):
    cmd = svc["command"]
    first = cmd.split()[0] if isinstance(cmd, str) else cmd[0]
    return first[len("berth-"):]


def environment(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):   # "KEY=value" form
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


class Preconditions(unittest.TestCase):
    def test_tools_present(self):
        self.assertIsNotNone(compose_command(),
                             "neither docker-compose nor `docker compose` found")
        self.assertIsNotNone(yaml, "python3 yaml module missing (apt-get install python3-yaml)")


@unittest.skipIf(compose_command() is None or yaml is None,
                 "reported by Preconditions.test_tools_present")
class ComposeFile(unittest.TestCase):
    """What the compose file promises, checked on docker-compose's normalized output."""

    @classmethod
    def setUpClass(cls):
        cls.config = load_config()
        cls.services = berth_services(cls.config)

    def test_config_is_valid(self):
        r = run_compose(["config", "-q"])
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_admin_password_is_required(self):
        r = run_compose(["config", "-q"], password=None)
        self.assertNotEqual(r.returncode, 0, "compose must not start with a default password")
        self.assertIn("BERTH_ADMIN_PASSWORD", r.stdout + r.stderr)

    def test_every_binary_has_a_service(self):
        types = {"berth-" + service_type(s) for s in self.services.values()}
        self.assertEqual(types, BERTH_BINARIES)
        agents = [n for n, s in self.services.items() if service_type(s) == "agent"]
        self.assertGreaterEqual(len(agents), 3)
        sizes = {(environment(self.services[a]).get("BERTH_HOST_VCPUS"),
                  environment(self.services[a]).get("BERTH_HOST_RAM_MB")) for a in agents}
        self.assertEqual(len(sizes), len(agents), "agents should simulate different sizes")

    def test_agents_share_no_images_volume(self):
        # The stager keeps the base images on a volume of its own; an agent fetches what it
        # needs over the bus into its own cache, so no agent mounts the stager's volumes.
        stager = [s for s in self.services.values() if service_type(s) == "stager"][0]
        images_dir = environment(stager)["BERTH_IMAGES_DIR"]
        images = mounts(stager)[images_dir][0]
        stager_volumes = {v for v, _ in mounts(stager).values() if not v.startswith("secrets")}
        self.assertIn(images, stager_volumes)
        for name, svc in self.services.items():
            if service_type(svc) == "agent":
                with self.subTest(agent=name):
                    self.assertFalse(stager_volumes & {v for v, _ in mounts(svc).values()})
                    self.assertIn("BERTH_STAGER_ENDPOINTS", environment(svc))

    def test_services_are_scalable(self):
        # --scale needs no fixed container name and no fixed host port.
        for name, svc in self.services.items():
            if service_type(svc) == "gateway":
                continue
            with self.subTest(service=name):
                self.assertNotIn("container_name", svc)
                self.assertFalse(svc.get("ports"), "a published port prevents --scale")

    def test_services_wait_for_redis_and_have_healthchecks(self):
        for name, svc in self.services.items():
            with self.subTest(service=name):
                deps = svc.get("depends_on") or {}
                self.assertIn("redis", deps)
                if isinstance(deps, dict):
                    self.assertEqual(deps["redis"].get("condition"), "service_healthy")
                self.assertTrue((svc.get("healthcheck") or {}).get("test"))
        self.assertTrue(self.config["services"]["redis"].get("healthcheck"))

    def test_secrets_made_first_and_mounted_read_only(self):
        # One init step runs berth-secrets into a volume (the agents' hosts included) and
        # into one volume per view (views/<name>); every Berth service waits for it to
        # complete, mounts only its own view, read-only, where BERTH_SECRETS_DIR says, and
        # names its bus certificate. Nothing but the init step mounts the whole volume.
        inits = init_services(self.config)
        self.assertEqual(len(inits), 1, "one service running berth-secrets")
        (init_name, init), = inits.items()
        cmd = init["command"]
        secrets_dir = cmd[1]
        volume, read_only = mounts(init)[secrets_dir]
        self.assertFalse(read_only)
        views = {target: vol for target, (vol, _) in mounts(init).items()}
        for name, svc in self.config["services"].items():
            if name != init_name:
                self.assertNotIn(volume, [v for v, _ in mounts(svc).values()], name)
        redis = mounts(self.config["services"]["redis"])
        self.assertEqual(views.get(secrets_dir + "/views/redis"),
                         redis["/run/berth-secrets"][0])
        for name, svc in self.services.items():
            with self.subTest(service=name):
                deps = svc.get("depends_on") or {}
                self.assertIn(init_name, deps)
                self.assertEqual(deps[init_name].get("condition"),
                                 "service_completed_successfully")
                env = environment(svc)
                self.assertEqual(env.get("BERTH_SECRETS_DIR"), secrets_dir)
                cert = env.get("BERTH_CURVE_CERT")
                own = views.get(secrets_dir + "/views/" + str(cert))
                self.assertTrue(own, "the init step writes no view for %s" % cert)
                self.assertEqual(mounts(svc).get(secrets_dir), (own, True))
                if service_type(svc) == "agent":
                    self.assertEqual(cert, "agent-" + env["BERTH_HOST_NAME"])
                    self.assertIn(env["BERTH_HOST_NAME"],
                                  [cmd[i + 1] for i in range(len(cmd) - 1) if cmd[i] == "--host"])
                else:
                    self.assertEqual(cert, service_type(svc))

    def test_redis_is_private_and_needs_the_password(self):
        redis = self.config["services"]["redis"]
        self.assertFalse(redis.get("ports"), "Redis must never be published")
        command = redis.get("command") or []
        command = command.split() if isinstance(command, str) else command
        self.assertIn("--aclfile", command)
        self.assertEqual(command[command.index("--protected-mode") + 1], "yes")
        self.assertEqual(self.config["services"]["secrets"]["command"][0], "berth-secrets")
        for name, svc in self.services.items():
            if service_type(svc) != "agent":
                with self.subTest(service=name):
                    self.assertTrue(environment(svc).get("BERTH_SECRETS_DIR"))
                    mounts = [str(v.get("target") if isinstance(v, dict) else v.split(":")[1])
                              for v in svc.get("volumes") or []]
                    self.assertIn(environment(svc)["BERTH_SECRETS_DIR"], mounts)

    def test_metrics_served_and_scraped(self):
        """Every service serves /metrics on 9464 inside the network, never published, and
        deploy/prometheus.yml scrapes every one of them by its compose name."""
        with open(os.path.join(ROOT, "deploy", "prometheus.yml")) as f:
            prom = yaml.safe_load(f)
        scraped = {}
        for job in prom["scrape_configs"]:
            for sd in job.get("dns_sd_configs", []):
                for name in sd["names"]:
                    scraped[name] = (sd["type"], sd["port"], job.get("metrics_path", "/metrics"))
        for name, svc in self.services.items():
            with self.subTest(service=name):
                env = environment(svc)
                self.assertEqual(env.get("BERTH_METRICS_PORT"), "9464")
                self.assertEqual(env.get("BERTH_METRICS_HOST"), "0.0.0.0")
                self.assertEqual(scraped.get(name), ("A", 9464, "/metrics"))

    def test_gateway_publishes_its_http_port(self):
        gateways = [s for s in self.services.values() if service_type(s) == "gateway"]
        self.assertEqual(len(gateways), 1)
        env = environment(gateways[0])
        http_port = int(env.get("BERTH_HTTP_PORT", "8080"))
        targets = []
        for p in gateways[0].get("ports") or []:
            if isinstance(p, dict):
                targets.append(int(p["target"]))
            else:
                targets.append(int(str(p).split(":")[-1].split("/")[0]))
        self.assertIn(http_port, targets)
        self.assertEqual(env.get("BERTH_HTTP_BIND"), "0.0.0.0")
        # Not on loopback: HTTPS, with the certificate berth-secrets makes in the secrets
        # volume, which the healthcheck verifies.
        secrets = env.get("BERTH_SECRETS_DIR")
        self.assertEqual(env.get("BERTH_HTTP_TLS_CERT"), secrets + "/gateway.crt")
        self.assertEqual(env.get("BERTH_HTTP_TLS_KEY"), secrets + "/gateway.key")
        test = " ".join(gateways[0]["healthcheck"]["test"])
        self.assertIn("https://", test)
        self.assertIn("--cacert " + secrets + "/gateway.crt", test)


@unittest.skipIf(compose_command() is None or yaml is None,
                 "reported by Preconditions.test_tools_present")
class ComposeAsLocalProcesses(unittest.TestCase):
    """Every compose service, started locally with its compose environment, registers."""

    @classmethod
    def setUpClass(cls):
        cls.platform = None
        config = load_config()
        cls.services = berth_services(config)
        cls.inits = init_services(config)
        cls.redis_names = {n for n, s in config["services"].items()
                           if "redis" in str(s.get("image", "")) and n not in cls.services}
        p = berth_platform.Platform(admin_password=ADMIN_PASSWORD)
        cls.platform = p
        try:
            missing = sorted(b for b in BERTH_BINARIES
                             if not p.bin_dir or not os.access(os.path.join(p.bin_dir, b),
                                                               os.X_OK))
            if missing:
                raise AssertionError("binaries missing from BERTH_BIN_DIR=%r: %s"
                                     % (p.bin_dir, ", ".join(missing)))
            # The init step's volume is the platform's secrets dir (Redis reads its users
            # file there); each service sees only the view its own volume holds.
            (init,) = cls.inits.values()
            p.secrets_dir = os.path.join(p.data_dir, "volumes", init["command"][1].strip("/"))
            os.makedirs(p.secrets_dir, mode=0o700, exist_ok=True)
            cls.volume_dirs = {vol: os.path.join(p.data_dir, "volumes", target.strip("/"))
                               for target, (vol, _) in mounts(init).items()}
            p.start_redis()
            cls._start_services(p)
        except BaseException:
            p.dump_logs()
            p.stop()
            raise

    @classmethod
    def _start_services(cls, p):
        # Every `tcp://*:PORT` bind becomes a free loopback port; remember it by
        # (service, PORT) so that `tcp://service:PORT` elsewhere can be rewritten.
        local = {}
        for name, svc in cls.services.items():
            m = re.fullmatch(r"tcp://(\*|0\.0\.0\.0):(\d+)", environment(svc).get("BERTH_BIND", ""))
            if m:
                local[(name, m.group(2))] = "127.0.0.1:%d" % p.free_port()
        cls.local = local

        def translate(value):
            def sub(m):
                key = (m.group(1), m.group(2))
                if key not in local:
                    raise AssertionError("compose refers to %s:%s, which no service binds"
                                         % key)
                # By name, as compose's DNS would answer: an agent resolves it to every
                # address (here one) and links to each.
                return "tcp://localhost:" + local[key].split(":")[1]
            return re.sub(r"tcp://([A-Za-z0-9_.-]+):(\d+)", sub, value)

        # The init step first, as compose runs it (its volume inside this test's data dir).
        for name, svc in cls.inits.items():
            argv = [os.path.join(p.bin_dir, svc["command"][0])]
            for arg in svc["command"][1:]:
                if arg.startswith("/var/lib/"):
                    arg = os.path.join(p.data_dir, "volumes", arg.strip("/"))
                    os.makedirs(arg, mode=0o700, exist_ok=True)   # the volume's mount point
                argv.append(arg)
            r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                raise AssertionError("%s failed:\n%s%s" % (name, r.stdout, r.stderr))

        # Services that others connect to first (taskmgr before agents), the gateway last.
        def order(item):
            t = service_type(item[1])
            return (t == "gateway", t == "agent", item[0])

        def on_volume(svc, value):
            """value, a path under a volume svc mounts that the init step writes, as the
            local directory the init step wrote it to; None for any other value."""
            for target, (vol, _) in mounts(svc).items():
                if vol in cls.volume_dirs and (value == target or
                                               value.startswith(target + "/")):
                    return cls.volume_dirs[vol] + value[len(target):]
            return None

        for name, svc in sorted(cls.services.items(), key=order):
            env = environment(svc)
            out = {}
            for key, value in env.items():
                if on_volume(svc, value):
                    out[key] = on_volume(svc, value)
                    p.tls = p.tls or key == "BERTH_HTTP_TLS_CERT"
                    continue
                if key == "BERTH_REDIS_HOST":
                    assert value in cls.redis_names, "redis host %r is not a service" % value
                    out[key] = "127.0.0.1"
                elif key == "BERTH_REDIS_PORT":
                    out[key] = str(p.redis_port)
                elif key == "BERTH_BIND":
                    m = re.fullmatch(r"tcp://(\*|0\.0\.0\.0):(\d+)", value)
                    out[key] = "tcp://" + local[(name, m.group(2))] if m else value
                elif key in ("BERTH_HTTP_TLS_CERT", "BERTH_HTTP_TLS_KEY"):
                    # Made by berth-secrets in the secrets volume: the gateway serves HTTPS.
                    out[key] = os.path.join(p.data_dir, "volumes", value.strip("/"))
                    p.tls = True
                elif key == "BERTH_DATA_DIR":
                    continue   # Platform gives each process a directory of its own
                elif value.startswith("/var/lib/"):
                    # A volume's mount point: the same path for every service that mounts
                    # it, inside this test's data dir instead of the machine's /var/lib.
                    out[key] = os.path.join(p.data_dir, "volumes", value.strip("/"))
                    os.makedirs(out[key], exist_ok=True)
                elif key == "BERTH_HTTP_BIND":
                    out[key] = "127.0.0.1"
                elif key == "BERTH_METRICS_HOST":
                    out[key] = "127.0.0.1"
                elif key == "BERTH_METRICS_PORT":
                    out[key] = str(p.free_port())   # each container has 9464 to itself
                elif key == "BERTH_HTTP_PORT":
                    p.http_port = p.free_port()
                    out[key] = str(p.http_port)
                else:
                    out[key] = translate(value)
            out["BERTH_REDIS_HOST"] = "127.0.0.1"
            out["BERTH_REDIS_PORT"] = str(p.redis_port)
            if service_type(svc) == "gateway" and "BERTH_HTTP_PORT" not in out:
                p.http_port = p.free_port()
                out["BERTH_HTTP_PORT"] = str(p.http_port)
                out.setdefault("BERTH_HTTP_BIND", "127.0.0.1")
            p.start(service_type(svc), env=out, name=name)

    @classmethod
    def tearDownClass(cls):
        if cls.platform:
            cls.platform.stop()

    def tearDown(self):
        # On failure, show what the processes said before they are stopped.
        outcome = getattr(self, "_outcome", None)
        if outcome is not None and not getattr(outcome, "success", True):
            self.platform.dump_logs()

    def test_every_compose_service_registers(self):
        expected = Counter(service_type(s) for s in self.services.values())

        def complete(r):
            if r.status != 200:
                return False
            seen = Counter(e["service"] for e in r.json().get("services", []))
            return all(seen[t] >= n for t, n in expected.items())

        try:
            r = self.platform.wait_http("/v1/health", complete, timeout=READY_TIMEOUT)
        except TimeoutError as e:
            self.fail("not every compose service registered: %s (expected %s)"
                      % (e, dict(expected)))
        body = r.json()
        self.assertEqual(body.get("status"), "ok", body)
        for entry in body["services"]:
            self.assertTrue(entry.get("endpoint"), entry)
        # /readyz answers from a snapshot the gateway's loop refreshes every 250 ms: it
        # catches up with /v1/health within a refresh or two.
        self.platform.wait_http("/readyz", lambda r: r.status == 200, timeout=10)
        self.assertEqual(self.platform.unexpected_exits(), [])
        # A VM comes up: its agent got the commands over the polls it parks at every
        # address the name taskmgr stands for.
        api = Api(self.platform)
        vm = api.request("small", "compose-vm")["vms"][0]["id"]
        self.assertEqual(api.wait_vm(vm, ("ACTIVE",))["state"], "ACTIVE")
        # Every container serves its metrics (on 9464 in compose; here on a port each).
        for proc in self.platform.procs:
            with urllib.request.urlopen(self.platform.metrics_url(proc), timeout=10) as m:
                self.assertEqual(m.status, 200, proc.name)
                self.assertIn(b"berth_service_info{", m.read(), proc.name)


if __name__ == "__main__":
    unittest.main(verbosity=2)
