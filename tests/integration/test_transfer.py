#!/usr/bin/env python3
"""Base images reach hosts from the stager over the bus, in chunks, into each agent's image cache:

- a host without the image fetches it, the VM goes ACTIVE, and the file in the agent's cache
  (named by its SHA-256) has the image's SHA-256; of hosts the weigher finds equal, one that
  caches the VM's image is chosen (it reports the image, the scheduler follows);
- an agent killed (SIGKILL) in the middle of a transfer resumes it when it is back: it keeps
  what it had verified and fetches only the rest (its log and its bytes-fetched counter);
- a byte flipped in the .part file while the agent is down is found when it comes back, that
  chunk is fetched again, and the image is right in the end;
- the stager restarted in the middle of a transfer: the agent asks again for what it lost and
  goes on, fetching nothing twice;
- the stager keeps each chunk's digest next to the image; its file gone bad, the agent's
  whole-file check fails, the bad chunk is found by its digest and fetched again (twice at
  most), and the transfer fails until the file is right again;
- the cache is bounded (image_cache_bytes): a new image evicts the least recently used image
  no VM depends on (a linked clone depends on its base, a full copy does not), or an old .part
  of a transfer that did not finish.

The transfer is made slow on purpose (small chunks, one in flight) so that a kill lands in its
middle; the tests wait on the .part file's size, never a fixed time.

Run: BERTH_BIN_DIR=build/bin python3 tests/integration/test_transfer.py
"""

# ctest: heavy

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import PlatformCase, wait_until  # noqa: E402

META = {"os": "debian", "os_version": "12", "arch": "x86_64", "min_ram_mb": 512,
        "min_disk_gb": 2}
BIG = 40 * 1024 * 1024  # bytes of random data in the image a kill interrupts


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ImageCase(PlatformCase):
    """Imports, templates and VMs of the image tests."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.import_dir = os.path.join(cls.p.data_dir, "services", "stager", "import")
        wait_until(lambda: os.path.isdir(cls.import_dir), 20, "the stager's import directory")
        wait_until(lambda: len(cls.api.hosts()) == cls.agents, 20, "the hosts reported")

    def import_image(self, name, data_bytes):
        """A qcow2 holding data_bytes of random data, imported as name; its record."""
        raw = os.path.join(self.import_dir, name + ".raw")
        with open(raw, "wb") as f:
            f.write(os.urandom(data_bytes))
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw,
                        os.path.join(self.import_dir, name + ".qcow2")],
                       check=True, capture_output=True)
        os.unlink(raw)
        r = self.api.call("POST", "/v1/images", dict(META, path=name + ".qcow2", name=name))
        self.assertEqual(r.status, 201, r)
        image = wait_until(lambda: (lambda im: im if im["state"] != "IMPORTING" else None)(
            self.api.get("/v1/images/" + name)["image"]), 30, "image %s imported" % name)
        self.assertEqual(image["state"], "READY", image)
        return image

    def template(self, name, image, disk="linked"):
        r = self.api.call("POST", "/v1/templates", {
            "name": name, "vcpus": 1, "ram_mb": 512, "disk_gb": 3, "os": "debian",
            "image": image, "lease_days": 1, "requires_approval": False, "disk": disk})
        self.assertEqual(r.status, 201, r)

    def vm(self, template, name):
        r = self.api.call("POST", "/v1/requests", {"template": template, "name": name})
        self.assertEqual(r.status, 202, r)
        return r.json()["request"]["vms"][0]["id"]

    def cache_dir(self, agent):
        return os.path.join(self.p.data_dir, "services", agent, "images")

    def cached(self, agent):
        return {n for n in os.listdir(self.cache_dir(agent)) if len(n) == 64}

    def agent(self, name):
        return [p for p in self.p.procs if p.name == name and p.alive()][0]

    def metric(self, proc, name):
        with urllib.request.urlopen(self.p.metrics_url(proc), timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
        return 0.0

    def log_lines(self, proc, msg, offset=0):
        """The JSON log lines with this msg in proc's log from offset on (a process started
        again writes on after the lines of its earlier run)."""
        out = []
        with open(proc.log_path, errors="replace") as f:
            f.seek(offset)
            for line in f:
                if '"msg":"%s"' % msg in line:
                    out.append(json.loads(line))
        return out

    def kill_mid_transfer(self, agent, sha):
        """SIGKILL agent once its .part of sha holds a third of the image, before the end."""
        part = os.path.join(self.cache_dir(agent.name), sha + ".part")
        # Looked at often: the kill must land well before the transfer's end.
        wait_until(lambda: os.path.exists(part) and os.path.getsize(part) >= BIG // 3, 30,
                   "the transfer of %s a third of the way" % sha, interval=0.005)
        agent.kill(signal.SIGKILL)
        agent.wait(10)
        self.assertNotIn(sha, self.cached(agent.name), "the transfer was over already")
        return os.path.getsize(part)


class Transfer(ImageCase):
    agents = 2
    # Small chunks, one in flight: a transfer of BIG takes seconds, long enough to kill it.
    # Hosts of one size: the weigher's choice between them falls to the cached image.
    agent_env = {"BERTH_IMAGE_CHUNK_BYTES": "16384", "BERTH_IMAGE_CREDIT": "1",
                 "BERTH_IMAGE_CHUNK_TIMEOUT_MS": "2000", "BERTH_HOST_VCPUS": "8",
                 "BERTH_HOST_RAM_MB": "16384", "BERTH_HOST_DISK_GB": "200"}
    # A command the agent did not answer (it was killed) is handed out again soon. The
    # scheduler reads the hosts before each decision, so a host's images count as soon as
    # Redis has them (following the host.images event takes up to host_follow_ms more: the
    # unit test test_svc_scheduler_follow covers that).
    platform_env = {"BERTH_COMMAND_REDELIVER_MS": "1000", "BERTH_HOST_REFRESH_MS": "0"}

    def test_a_fetched_verified_and_preferred(self):
        # An image put in host-2's cache: host-2 reports it, and a VM of it goes there rather
        # than to host-1, which the weigher would choose otherwise (the same free RAM, and
        # host-1 first by id).
        other = self.import_image("other", 1024 * 1024)
        self.template("other-t", "other")
        stored = os.path.join(self.p.data_dir, "services", "stager", "images",
                              other["id"] + ".qcow2")
        with open(stored, "rb") as f, \
                open(os.path.join(self.cache_dir("agent-2"), other["sha256"]), "wb") as out:
            out.write(f.read())
        self.p.restart(self.agent("agent-2"))
        wait_until(lambda: other["sha256"] in (self.p.redis_command(
            "HGET", "berth:host:host-2", "images") or ""), 20, "host-2 reports the image")
        vm = self.vm("other-t", "cached-1")
        self.assertEqual(self.api.wait_vm(vm, ("ACTIVE",))["host"], "host-2")
        self.assertEqual(self.metric(self.agent("agent-2"),
                                     "berth_agent_image_bytes_fetched_total"), 0)
        # A host without the image (host-1, now with more RAM free) fetches it.
        small = self.import_image("small", 2 * 1024 * 1024)
        self.template("small-t", "small")
        vm = self.vm("small-t", "fetch-1")
        self.assertEqual(self.api.wait_vm(vm, ("ACTIVE",))["host"], "host-1")
        self.assertIn(small["sha256"], self.cached("agent-1"))
        self.assertNotIn(small["sha256"], self.cached("agent-2"))
        path = os.path.join(self.cache_dir("agent-1"), small["sha256"])
        self.assertEqual(sha256_file(path), small["sha256"])
        self.assertEqual(os.path.getsize(path), small["size_bytes"])
        self.assertEqual(self.metric(self.agent("agent-1"),
                                     "berth_agent_image_bytes_fetched_total"),
                         small["size_bytes"])

    def resumed(self, image, corrupt):
        """A VM of image, its host's agent killed mid-transfer (and a byte of what it had
        verified flipped when corrupt), started again: the VM goes ACTIVE there on the image
        fetched once; returns the resumed agent's resume log line and the agent."""
        self.template(image["name"] + "-t", image["name"], disk="full")
        vm = self.vm(image["name"] + "-t", image["name"] + "-1")
        host = wait_until(lambda: self.api.vm(vm)["host"], 20, "the VM placed")
        name = "agent-" + host.split("-")[1]
        agent = self.agent(name)
        had = self.kill_mid_transfer(agent, image["sha256"])
        part = os.path.join(self.cache_dir(name), image["sha256"] + ".part")
        if corrupt:
            with open(part, "r+b") as f:
                f.seek(100)
                byte = f.read(1)
                f.seek(100)
                f.write(bytes([byte[0] ^ 0xFF]))
        offset = os.path.getsize(agent.log_path)
        again = self.p.restart(agent)
        self.assertEqual(self.api.wait_vm(vm, ("ACTIVE",), timeout=60)["host"], host)
        path = os.path.join(self.cache_dir(name), image["sha256"])
        self.assertEqual(sha256_file(path), image["sha256"])
        self.assertFalse(os.path.exists(part))
        resume = self.log_lines(again, "resuming image transfer", offset)
        self.assertEqual(len(resume), 1, resume)
        fetched = self.metric(again, "berth_agent_image_bytes_fetched_total")
        # It did not start over: what it kept plus what it fetched is the image.
        self.assertEqual(resume[0]["bytes_kept"] + fetched, image["size_bytes"])
        self.assertGreater(resume[0]["bytes_kept"], 0)
        self.assertLessEqual(resume[0]["bytes_kept"], had)
        done = self.log_lines(again, "image fetched", offset)
        self.assertEqual([d["fetched"] for d in done], [fetched])
        return resume[0], again

    def test_b_killed_agent_resumes(self):
        image = self.import_image("big", BIG)
        resume, again = self.resumed(image, corrupt=False)
        self.assertEqual(resume["chunks_bad"], 0)
        self.assertEqual(self.metric(again, "berth_agent_image_chunks_refetched_total"), 0)

    def test_c_corrupt_part_fetched_again(self):
        image = self.import_image("flipped", BIG)
        resume, again = self.resumed(image, corrupt=True)
        self.assertEqual(resume["chunks_bad"], 1)
        self.assertEqual(self.metric(again, "berth_agent_image_chunks_refetched_total"), 1)


    def test_f_stager_restart(self):
        """The stager restarted in the middle of a transfer: the agent asks for the chunks it
        lost again and goes on; nothing is fetched twice."""
        image = self.import_image("restarted", BIG)
        self.template("restarted-t", "restarted", disk="full")
        vm = self.vm("restarted-t", "restarted-1")
        host = wait_until(lambda: self.api.vm(vm)["host"], 20, "the VM placed")
        agent = self.agent("agent-" + host.split("-")[1])
        part = os.path.join(self.cache_dir(agent.name), image["sha256"] + ".part")
        wait_until(lambda: os.path.exists(part) and os.path.getsize(part) >= BIG // 3, 30,
                   "a third of the image fetched")
        offset = os.path.getsize(agent.log_path)
        stager = [p for p in self.p.procs if p.service == "stager" and p.alive()][0]
        self.assertNotIn(image["sha256"], self.cached(agent.name))
        stager = self.p.restart(stager)
        self.assertEqual(self.api.wait_vm(vm, ("ACTIVE",), timeout=60)["host"], host)
        # The rest came from the stager started again.
        self.assertGreater(self.metric(stager, "berth_stager_image_bytes_sent_total"), 0)
        path = os.path.join(self.cache_dir(agent.name), image["sha256"])
        self.assertEqual(sha256_file(path), image["sha256"])
        done = [d for d in self.log_lines(agent, "image fetched", offset)
                if d["sha256"] == image["sha256"]]
        self.assertEqual([d["fetched"] for d in done], [image["size_bytes"]])
        self.assertEqual(self.log_lines(agent, "image transfer failed", offset), [])

    def chunk(self, fields, cert):
        """GetImageChunk sent to the stager with cert's bus certificate: the probe's answer."""
        argv = self.p.probe_argv("send", "127.0.0.1:%d" % self.p.redis_port, "stager",
                                 "GetImageChunk", json.dumps(fields), cert=cert)
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                           env=self.p.base_env())
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout.splitlines()[-1])

    def test_e_chunk_refusals(self):
        """Only agents may ask for chunks; a bad request is refused naming its field."""
        image = self.api.get("/v1/images/small")["image"]
        good = {"image": image["id"], "sha256": image["sha256"], "offset": 4096, "size": 8192}
        agent = self.p.host_cert("host-1")
        answer = self.chunk(good, agent)
        self.assertNotIn("error", answer, answer)
        path = os.path.join(self.p.data_dir, "services", "stager", "images",
                            image["id"] + ".qcow2")
        with open(path, "rb") as f:
            f.seek(4096)
            want = hashlib.sha256(f.read(8192)).hexdigest()
        self.assertEqual(answer["body"]["sha256"], want)
        self.assertEqual(answer["body"]["image_sha256"], image["sha256"])
        self.assertEqual(int(answer["body"]["total_bytes"]), image["size_bytes"])
        self.assertEqual(self.chunk(good, "gateway")["error"]["code"], "FORBIDDEN")
        for field, bad in (("sha256", {"sha256": "0" * 63}),
                           ("sha256", {"sha256": "f" * 64}),
                           ("image", {"image": "no-such-image"}),
                           ("size", {"size": 0}),
                           ("size", {"size": 2097153}),
                           ("offset", {"offset": -1}),
                           ("offset", {"offset": image["size_bytes"]})):
            with self.subTest(field=field, bad=bad):
                err = self.chunk(dict(good, **bad), agent)["error"]
                self.assertEqual((err["code"], err["details"]["field"]), ("BAD_REQUEST", field),
                                 err)


    def test_g_bad_source_chunk_found(self):
        """The stager notes each chunk's digest the first time it sends it, in a sidecar next
        to the image. Its file gone bad afterwards: the agent's whole-file check fails, the
        chunk that does not match its digest is found and fetched again, twice at most, and the
        transfer fails; once the file is right again, the image is fetched and used."""
        image = self.import_image("rotten", 256 * 1024)
        stored = os.path.join(self.p.data_dir, "services", "stager", "images",
                              image["id"] + ".qcow2")
        chunk = int(self.agent_env["BERTH_IMAGE_CHUNK_BYTES"])
        cert = self.p.host_cert("host-1")
        with open(stored, "rb") as f:
            data = f.read()
        want = [hashlib.sha256(data[o:o + chunk]).hexdigest() for o in range(0, len(data), chunk)]
        for i, offset in enumerate(range(0, len(data), chunk)):
            answer = self.chunk({"image": image["id"], "sha256": image["sha256"],
                                 "offset": offset, "size": chunk}, cert)
            self.assertEqual(answer["body"]["sha256"], want[i])
        # The sidecar: a header (magic, size, chunk size, the file's SHA-256), then the digests.
        with open(stored + ".chunks-%d" % chunk, "rb") as f:
            side = f.read()
        self.assertEqual(side[:8], b"BERTHCD1")
        self.assertEqual(side[24:88].decode(), image["sha256"])
        self.assertEqual([side[88 + 32 * i:120 + 32 * i].hex() for i in range(len(want))], want)
        at = len(data) - 1000  # in the last cluster of data
        with open(stored, "r+b") as f:
            f.seek(at)
            f.write(bytes([data[at] ^ 0xFF]))
        offsets = {name: os.path.getsize(self.agent(name).log_path)
                   for name in ("agent-1", "agent-2")}

        def lines(msg):
            return {name: [d for d in self.log_lines(self.agent(name), msg, offsets[name])
                           if d.get("sha256") == image["sha256"]] for name in offsets}

        self.template("rotten-t", "rotten", disk="full")
        self.vm("rotten-t", "rotten-1")
        def settled():
            """Each transfer that failed (the VM's build may be tried again on the other host)
            fetched its bad chunk again twice first: (failed, repaired) by agent."""
            failed = lines("image transfer failed")
            repaired = lines("image chunks found bad, fetched again")
            if any(failed.values()) and all(len(repaired[name]) == 2 * len(failed[name])
                                            for name in offsets):
                return failed, repaired
            return None

        failed, repaired = wait_until(settled, 60, "the transfer failed after two repairs")
        for name in offsets:
            self.assertEqual({d["chunks_bad"] for d in repaired[name]} - {1}, set())
            for d in failed[name]:
                self.assertIn("the image fetched has SHA-256", d["error"])
            self.assertNotIn(image["sha256"], self.cached(name))
        with open(stored, "r+b") as f:
            f.seek(at)
            f.write(bytes([data[at]]))
        vm = self.vm("rotten-t", "rotten-2")
        host = self.api.wait_vm(vm, ("ACTIVE",))["host"]
        path = os.path.join(self.cache_dir("agent-" + host.split("-")[1]), image["sha256"])
        self.assertEqual(sha256_file(path), image["sha256"])


class Eviction(ImageCase):
    agents = 1
    # Room for two of the three images (each 1 MiB of data, 1.3 MiB as qcow2), not three.
    agent_env = {"BERTH_IMAGE_CACHE_BYTES": str(int(3.5 * 1024 * 1024))}

    def test_d_lru_image_no_vm_needs_is_evicted(self):
        # An unfinished transfer's .part, left from long ago, takes room until it is needed.
        stale = os.path.join(self.cache_dir("agent-1"), "d" * 64 + ".part")
        with open(stale, "wb") as f:
            f.write(os.urandom(1024 * 1024))
        an_hour_ago = time.time() - 3600
        os.utime(stale, (an_hour_ago, an_hour_ago))
        self.p.restart(self.agent("agent-1"))
        a = self.import_image("img-a", 1024 * 1024)
        b = self.import_image("img-b", 1024 * 1024)
        c = self.import_image("img-c", 1024 * 1024)
        self.template("a-linked", "img-a")            # its VMs' overlays depend on img-a
        self.template("b-full", "img-b", disk="full")  # a copy: nothing depends on img-b
        self.template("c-full", "img-c", disk="full")
        vm_a = self.vm("a-linked", "evict-a")
        self.api.wait_vm(vm_a, ("ACTIVE",))
        vm_b = self.vm("b-full", "evict-b")
        self.api.wait_vm(vm_b, ("ACTIVE",))
        self.assertFalse(os.path.exists(stale), "img-b needed the room of the old .part")
        self.assertEqual(self.cached("agent-1") & {a["sha256"], b["sha256"]},
                         {a["sha256"], b["sha256"]})
        # img-c needs room: img-a is the least recently used but a VM's disk is built on it,
        # so img-b goes.
        vm_c = self.vm("c-full", "evict-c")
        self.api.wait_vm(vm_c, ("ACTIVE",))
        have = self.cached("agent-1")
        self.assertIn(a["sha256"], have)
        self.assertIn(c["sha256"], have)
        self.assertNotIn(b["sha256"], have)
        agent = self.agent("agent-1")
        self.assertEqual(self.metric(agent, "berth_agent_image_evictions_total"), 1)
        # The VM on img-a disposed, img-a is the one to go when img-b comes back.
        self.api.dispose(vm_a)
        self.api.wait_vm(vm_a, ("DISPOSED",))
        vm_b2 = self.vm("b-full", "evict-b2")
        self.api.wait_vm(vm_b2, ("ACTIVE",))
        have = self.cached("agent-1")
        self.assertEqual(have & {a["sha256"], b["sha256"], c["sha256"]},
                         {b["sha256"], c["sha256"]})
        self.assertEqual(self.metric(agent, "berth_agent_image_evictions_total"), 2)


if __name__ == "__main__":
    unittest.main()
