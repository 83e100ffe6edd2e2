"""Shared helpers of the end-to-end tests: load deploy/platform.py, log in, call the REST API
with a token, and poll for the states a user waits for. Every call made through the
platform's HTTP helper is checked against docs/openapi.yaml (contract.py), so a suite fails
the moment the server and the document disagree."""

import http.server
import importlib.util
import os
import subprocess
import threading
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_spec = importlib.util.spec_from_file_location(
    "berth_platform", os.path.join(ROOT, "deploy", "platform.py"))
berth_platform = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(berth_platform)
Platform = berth_platform.Platform

_spec = importlib.util.spec_from_file_location(
    "berth_contract", os.path.join(os.path.dirname(os.path.abspath(__file__)), "contract.py"))
contract = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(contract)
_unchecked_http = Platform.http


def _checked_http(self, method, path, body=None, headers=None, timeout=10.0):
    """Platform.http, with the call and its answer held to docs/openapi.yaml. A violation
    raises contract.ContractError carrying the answer (.response)."""
    r = _unchecked_http(self, method, path, body, headers, timeout)
    hdrs = dict(headers or {})
    if body is not None and not isinstance(body, (bytes, str)):
        hdrs.setdefault("Content-Type", "application/json")
    try:
        contract.CONTRACT.check(method, path, hdrs, body, r)
    except contract.ContractError as e:
        e.response = r
        raise
    return r


Platform.http = _checked_http


class CheckedProxy:
    """A loopback HTTP proxy in front of the gateway for clients a test cannot call through
    Platform.http (the berth CLI): each call it passes on is checked the same way. What
    departs from the document is answered as the gateway answered it and kept in
    .violations, which the test asserts empty. Use as a context manager; .url for clients."""

    FORWARDED = ("authorization", "content-type", "idempotency-key", "x-request-id")
    RETURNED = ("content-type", "x-request-id", "location", "www-authenticate", "allow")

    def __init__(self, platform):
        self.violations = []
        self.calls = []  # (method, path, the headers forwarded) of every call, in order
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                hdrs = {k: v for k, v in self.headers.items()
                        if k.lower() in CheckedProxy.FORWARDED}
                proxy.calls.append((self.command, self.path, hdrs))
                try:
                    r = platform.http(self.command, self.path, body, hdrs, timeout=60)
                except contract.ContractError as e:
                    proxy.violations.append(str(e))
                    r = e.response
                self.send_response(r.status)
                for k, v in r.headers.items():
                    if k.lower() in CheckedProxy.RETURNED:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(r.body)))
                self.end_headers()
                try:
                    self.wfile.write(r.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client left before its answer (a CLI that gave up, a help text)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = forward

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

TERMINAL_VM = ("ACTIVE", "ERROR", "REJECTED", "DISPOSED")


class Api:
    """The REST API as one logged-in user sees it."""

    def __init__(self, platform, user=None, password=None):
        self.p = platform
        r = platform.http("POST", "/v1/auth/tokens",
                          {"username": user or platform.admin_user,
                           "password": password or platform.admin_password})
        if r.status != 201:
            raise AssertionError("login failed: %r" % r)
        self.token = r.json()["token"]

    def call(self, method, path, body=None, headers=None):
        hdrs = {"Authorization": "Bearer " + self.token}
        hdrs.update(headers or {})
        return self.p.http(method, path, body, headers=hdrs)

    def get(self, path):
        r = self.call("GET", path)
        if r.status != 200:
            raise AssertionError("GET %s: %r" % (path, r))
        return r.json()

    def hosts(self):
        return {h["id"]: h for h in self.get("/v1/hosts")["hosts"]}

    def vm(self, vm_id):
        return self.get("/v1/vms/" + vm_id)["vm"]

    def task(self, task_id):
        return self.get("/v1/tasks/" + task_id)["task"]

    def request(self, template, name, count=1):
        r = self.call("POST", "/v1/requests", {"template": template, "name": name, "count": count})
        if r.status != 202:
            raise AssertionError("POST /v1/requests: %r" % r)
        return r.json()["request"]

    def wait_vm(self, vm_id, states, timeout=60.0):
        """Poll the VM until its state is one of states; the VM. Fails on another end state."""
        deadline = time.monotonic() + timeout
        vm = None
        while time.monotonic() < deadline:
            self.p.check_alive()
            vm = self.vm(vm_id)
            if vm["state"] in states:
                return vm
            if vm["state"] in TERMINAL_VM:
                raise AssertionError("VM %s ended %s, not %s: %r" % (vm_id, vm["state"], states, vm))
            time.sleep(0.1)
        raise AssertionError("VM %s not %s after %.0fs: %r" % (vm_id, states, timeout, vm))

    def wait_task(self, task_id, timeout=60.0):
        deadline = time.monotonic() + timeout
        task = None
        while time.monotonic() < deadline:
            task = self.task(task_id)
            if task["state"] in ("SUCCEEDED", "FAILED", "ABORTED"):
                return task
            time.sleep(0.1)
        raise AssertionError("task %s not finished after %.0fs: %r" % (task_id, timeout, task))

    def dispose(self, vm_id):
        r = self.call("DELETE", "/v1/vms/" + vm_id)
        if r.status != 202:
            raise AssertionError("DELETE /v1/vms/%s: %r" % (vm_id, r))
        return r.json()["task"]

    def create_user(self, name, password, role="user"):
        """Create a user (the caller is an admin) and log in as them: their Api."""
        r = self.call("POST", "/v1/users", {"username": name, "password": password, "role": role})
        if r.status != 201:
            raise AssertionError("POST /v1/users %s: %r" % (name, r))
        return Api(self.p, name, password)

    def create_template(self, **fields):
        r = self.call("POST", "/v1/templates", fields)
        if r.status != 201:
            raise AssertionError("POST /v1/templates: %r" % r)
        return r.json()["template"]


def host_domains(api, host_id):
    """Domain names the host's agent last reported from its libvirt."""
    return {d["name"] for d in api.get("/v1/hosts/" + host_id)["host"]["domains"]}


def wait_until(predicate, timeout=30.0, what="condition", interval=0.1):
    """predicate()'s first true value, asked every interval seconds until timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("%s not met after %.0fs" % (what, timeout))


def iso_file(path, name):
    """One file of an ISO 9660 image (Rock Ridge names), read with isoinfo."""
    r = subprocess.run(["isoinfo", "-R", "-i", path, "-x", "/" + name],
                       capture_output=True, check=True)
    return r.stdout.decode()


def iso_volume_id(path):
    r = subprocess.run(["isoinfo", "-d", "-i", path], capture_output=True, check=True, text=True)
    for line in r.stdout.splitlines():
        if line.startswith("Volume id:"):
            return line.split(":", 1)[1].strip()
    return None


def used_equal(a, b):
    return all(a["used"][k] == b["used"][k] for k in ("vcpus", "ram_mb", "disk_gb"))


class PlatformCase(unittest.TestCase):
    """A test file's scenarios against one platform, started once for the class: set
    `platform_env` (every process), `agent_env` (agents only), `agents` and `instances`
    ({service: count}, see Platform.start_all) and `sentinel` (Redis with two replicas and
    three sentinels) on the subclass,
    and `wait_hosts` to wait until that many hosts reported. On a failure the services' last
    log lines are printed: they are what explain it (always with BERTH_DUMP_LOGS set)."""

    platform_env = None
    agent_env = None
    agents = 3
    instances = None
    wait_hosts = 0
    sentinel = False

    @classmethod
    def setUpClass(cls):
        cls.p = Platform(env=cls.platform_env, sentinel=cls.sentinel)
        try:
            cls.p.start_all(agents=cls.agents, agent_env=cls.agent_env,
                            instances=cls.instances)
            cls.api = Api(cls.p)
            if cls.wait_hosts:
                wait_until(lambda: len(cls.api.hosts()) == cls.wait_hosts, 20,
                           "%d hosts reported" % cls.wait_hosts)
        except Exception:
            cls.p.dump_logs()
            cls.p.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        if os.environ.get("BERTH_DUMP_LOGS"):
            cls.p.dump_logs()
        cls.p.stop()

    def run(self, result=None):
        failures = len(result.failures) + len(result.errors) if result else 0
        out = super().run(result)
        if result and len(result.failures) + len(result.errors) > failures:
            self.p.dump_logs()
        return out
