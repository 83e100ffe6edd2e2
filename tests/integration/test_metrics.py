#!/usr/bin/env python3
"""Prometheus metrics (issue 15, Metrics): every process of a running platform serves
/metrics on a port of its own, in the text format as Prometheus' own parser reads it (Debian's
python3-prometheus-client), strictly: every sample under a HELP and a TYPE, no series twice,
histogram buckets cumulative and ending in +Inf = _count. After a VM is provisioned and a bad
request refused, the figures say so: the gateway's requests by route and status, the
scheduler's placement and hosts, taskmgr's tasks ended and its bus calls, the agent's
commands, every service's bus requests and Redis connections. Only GET/HEAD /metrics answer.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_metrics.py
"""

import math
import os
import re
import sys
import unittest
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import PlatformCase, wait_until  # noqa: E402

NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def scrape(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.headers.get("Content-Type"), r.read().decode()


def strict(text):
    """Check the exposition's form beyond what the parser forgives: every sample line under
    its family's HELP and TYPE, names well formed, no series twice. The parsed families."""
    typed, helped, seen = {}, set(), set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert NAME.match(name), line
            assert name not in typed, "TYPE twice: %s" % line
            typed[name] = kind
        else:
            assert line and not line.startswith("#"), "stray line %r" % line
            series = line.rsplit(" ", 1)[0]
            assert series not in seen, "series twice: %s" % series
            seen.add(series)
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            family = name if name in typed else base
            assert family in typed and family in helped, "no TYPE/HELP for %s" % line
            assert typed[family] == "histogram" or family == name, line
    families = {f.name: f for f in text_string_to_metric_families(text)}
    # A counter's family is named without _total: no other family may have that name.
    assert len(families) == len(typed), "families collide: %s" % sorted(typed)
    return families


def value(families, name, **labels):
    """The sum of name's samples whose labels include labels (0 if none)."""
    total = 0.0
    for family in families.values():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


class Metrics(PlatformCase):
    agents = 2
    wait_hosts = 2

    def scrape_all(self):
        """Every running process's metrics: {process name: (service, families)}."""
        out = {}
        for proc in self.p.procs:
            if not proc.alive():
                continue
            status, ctype, text = scrape(self.p.metrics_url(proc))
            self.assertEqual(status, 200, proc.name)
            self.assertEqual(ctype, "text/plain; version=0.0.4; charset=utf-8", proc.name)
            out[proc.name] = (proc.service, strict(text))
        return out

    def by_service(self, scraped, service):
        return [f for s, f in scraped.values() if s == service]

    def total(self, scraped, service, name, **labels):
        return sum(value(f, name, **labels) for f in self.by_service(scraped, service))

    def test_1_every_process_after_a_provisioning(self):
        vm = self.api.request("small", "metered")["vms"][0]["id"]
        self.api.wait_vm(vm, ("ACTIVE",))
        r = self.api.call("POST", "/v1/requests", {"bogus": 1})
        self.assertEqual(r.status, 400, r)
        r = self.api.call("GET", "/v1/vms/00000000-0000-4000-8000-000000000000")
        self.assertEqual(r.status, 404, r)

        # The counters the provisioning moved, once the agents' results are counted and the
        # scheduler's copy of the hosts (reloaded every host_refresh_ms) has both.
        def settled():
            s = self.scrape_all()
            started = self.total(s, "agent", "berth_agent_commands_total", op="START",
                                 result="ok")
            up = self.total(s, "scheduler", "berth_scheduler_hosts", state="UP")
            queued = self.total(s, "gateway", "berth_audit_queue")
            return s if started >= 1 and up == 2 and queued == 0 else None
        scraped = wait_until(settled, 15, "the agents' commands and both hosts counted, the "
                             "gateway's audit records written")
        services = {s for s, _ in scraped.values()}
        self.assertEqual(services, {"gateway", "approval", "scheduler", "taskmgr", "stager",
                                    "meter", "agent"})
        for name, (service, families) in scraped.items():
            with self.subTest(process=name):
                info = [s for s in families["berth_service_info"].samples]
                self.assertEqual(len(info), 1)
                self.assertEqual(info[0].labels["service"], service)
                self.assertEqual(info[0].value, 1)
                self.assertGreater(value(families, "process_cpu_seconds_total"), 0)
                self.assertGreater(value(families, "process_resident_memory_bytes"), 1 << 20)
                if service != "agent":  # agents never touch Redis
                    self.assertGreaterEqual(
                        value(families, "berth_redis_connects_total", result="ok"), 1)
                # Histograms: cumulative buckets, +Inf equal to _count.
                for family in families.values():
                    if family.type != "histogram":
                        continue
                    groups = {}
                    for s in family.samples:
                        key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
                        groups.setdefault(key, []).append(s)
                    for key, samples in groups.items():
                        buckets = [s for s in samples if s.name.endswith("_bucket")]
                        bounds = [float(s.labels["le"]) for s in buckets]
                        self.assertEqual(bounds, sorted(bounds), family.name)
                        self.assertTrue(math.isinf(bounds[-1]), family.name)
                        counts = [s.value for s in buckets]
                        self.assertEqual(counts, sorted(counts), family.name)
                        count = [s.value for s in samples if s.name.endswith("_count")]
                        self.assertEqual(count, [counts[-1]], family.name)

        # The gateway: requests by route pattern (never the path) and status.
        gw = self.by_service(scraped, "gateway")[0]
        self.assertGreaterEqual(value(gw, "berth_http_requests_total", method="POST",
                                      route="/v1/requests", status="202"), 1)
        self.assertGreaterEqual(value(gw, "berth_http_requests_total", method="POST",
                                      route="/v1/requests", status="400"), 1)
        self.assertGreaterEqual(value(gw, "berth_http_requests_total", method="GET",
                                      route="/v1/vms/{id}", status="404"), 1)
        routes = {s.labels["route"] for s in gw["berth_http_requests"].samples}
        self.assertNotIn("/v1/vms/" + vm, routes)
        self.assertEqual(
            value(gw, "berth_http_request_seconds_count", method="POST", route="/v1/requests"),
            value(gw, "berth_http_requests_total", method="POST", route="/v1/requests"))
        # Its audit queue drained (waited for above), nothing dropped (a counter without
        # labels is there from the start, at 0).
        self.assertEqual([s.value for s in gw["berth_audit_dropped"].samples], [0])
        # Its bus calls: the request went to approval.
        self.assertGreaterEqual(value(gw, "berth_bus_calls_total", target="approval",
                                      type="CreateRequest", code="OK"), 1)

        # The scheduler placed it, on one of the hosts it knows UP.
        self.assertGreaterEqual(self.total(scraped, "scheduler", "berth_scheduler_placements_total",
                                           result="claimed"), 1)
        self.assertEqual(self.total(scraped, "scheduler", "berth_scheduler_hosts", state="UP"), 2)
        self.assertGreaterEqual(self.total(scraped, "scheduler", "berth_bus_requests_total",
                                           type="SelectHost", code="OK"), 1)
        # taskmgr ended the provisioning and called the scheduler for it.
        self.assertGreaterEqual(self.total(scraped, "taskmgr", "berth_tasks_ended_total",
                                           kind="PROVISION", state="SUCCEEDED"), 1)
        self.assertGreaterEqual(self.total(scraped, "taskmgr", "berth_task_seconds_count",
                                           kind="PROVISION"), 1)
        self.assertGreaterEqual(self.total(scraped, "taskmgr", "berth_bus_calls_total",
                                           target="scheduler", type="SelectHost", code="OK"), 1)
        for queue in ("due", "line"):
            self.assertIn(queue, {s.labels["queue"] for f in self.by_service(scraped, "taskmgr")
                                  for s in f["berth_tasks_waiting"].samples})
        # The agents built it: disk, seed, definition, start, each counted with its time.
        for op in ("CREATE_DISK", "PUT_SEED", "DEFINE", "START"):
            self.assertGreaterEqual(self.total(scraped, "agent", "berth_agent_commands_total",
                                               op=op, result="ok"), 1, op)
            self.assertGreaterEqual(self.total(scraped, "agent", "berth_agent_command_seconds_count",
                                               op=op), 1, op)

    def test_2_only_get_metrics(self):
        proc = [p for p in self.p.procs if p.service == "taskmgr"][0]
        url = self.p.metrics_url(proc)
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url.replace("/metrics", "/other"), timeout=10)
        self.assertEqual(e.exception.code, 404)
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(urllib.request.Request(url, data=b"x", method="POST"),
                                   timeout=10)
        self.assertEqual(e.exception.code, 405)
        self.assertEqual(e.exception.headers.get("Allow"), "GET, HEAD")
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10) as r:
            self.assertEqual(r.status, 200)


if __name__ == "__main__":
    unittest.main(verbosity=2)
