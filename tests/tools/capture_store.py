#!/usr/bin/env python3
"""Capture a Berth dataset as the platform in BERTH_BIN_DIR writes it, for upgrade tests.

Runs the real platform (deploy/platform.py), uses it as people would (an admin, a user, a
template, three VMs of which one is disposed, usage metered), stops every service and writes
every durable berth:* key as the Redis commands that recreate it, one JSON array per line.
The service registry is left out: it lives only as long as the instances that wrote it.

    BERTH_BIN_DIR=build/bin tests/tools/capture_store.py > tests/integration/fixtures/x.jsonl

The first line is a comment object naming the users' passwords and what the data holds, so
the upgrade test can check it from the outside (log in, list, read usage).
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import berth_test  # noqa: E402

ADMIN_PASSWORD = "admin-password-v1"
USER = ("alice", "alice-password-v1")


def wait(predicate, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise RuntimeError("%s not met after %.0fs" % (what, timeout))


def dump_key(p, key):
    """Commands that recreate key (type-specific), then its TTL if it has one."""
    kind = p.redis_command("TYPE", key)
    cmds = []
    if kind == "hash":
        flat = p.redis_command("HGETALL", key)
        cmds.append(["HSET", key] + flat)
    elif kind == "zset":
        flat = p.redis_command("ZRANGE", key, "0", "-1", "WITHSCORES")
        args = []
        for i in range(0, len(flat), 2):
            args += [flat[i + 1], flat[i]]
        cmds.append(["ZADD", key] + args)
    elif kind == "set":
        cmds.append(["SADD", key] + sorted(p.redis_command("SMEMBERS", key)))
    elif kind == "string":
        cmds.append(["SET", key, p.redis_command("GET", key)])
    elif kind == "list":
        cmds.append(["RPUSH", key] + p.redis_command("LRANGE", key, "0", "-1"))
    elif kind == "stream":
        for entry_id, fields in p.redis_command("XRANGE", key, "-", "+"):
            cmds.append(["XADD", key, entry_id] + fields)
        for group in p.redis_command("XINFO", "GROUPS", key):
            info = dict(zip(group[0::2], group[1::2]))
            if int(info["pending"]) != 0:
                raise RuntimeError("group %s still has pending entries" % info["name"])
            cmds.append(["XGROUP", "CREATE", key, info["name"], info["last-delivered-id"]])
    else:
        raise RuntimeError("key %s has unexpected type %s" % (key, kind))
    ttl = int(p.redis_command("PTTL", key))
    if ttl > 0:
        cmds.append(["PEXPIRE", key, str(ttl)])
    return cmds


def main():
    with berth_test.Platform(admin_password=ADMIN_PASSWORD) as p:
        p.start_all(agents=2)
        admin = berth_test.Api(p)
        r = admin.call("POST", "/v1/users",
                       {"username": USER[0], "password": USER[1], "role": "user"})
        if r.status != 201:
            raise RuntimeError("POST /v1/users: %r" % r)
        admin.create_template(name="web-v1", os="debian", image="debian-12", vcpus=2, ram_mb=2048, lease_days=30,
                             disk_gb=20)
        alice = berth_test.Api(p, *USER)
        req = alice.request("web-v1", "web", count=2)
        req = wait(lambda: (lambda r: r if len(r["vms"]) == 2 else None)(
            alice.get("/v1/requests/" + req["id"])["request"]), "request has its VMs")
        vms = [v["id"] for v in req["vms"]]
        for vm_id in vms:
            alice.wait_vm(vm_id, ("ACTIVE",))
        small = admin.request("small", "db")
        small = wait(lambda: (lambda r: r if r["vms"] else None)(
            admin.get("/v1/requests/" + small["id"])["request"]), "request has its VM")
        small_vm = small["vms"][0]["id"]
        admin.wait_vm(small_vm, ("ACTIVE",))
        task = alice.dispose(vms[1])
        alice.wait_task(task["id"])
        alice.wait_vm(vms[1], ("DISPOSED",))
        # The meter has applied every event once the usage shows both of alice's VMs, the
        # disposed one closed, and the stream has nothing pending.
        def metered():
            usage = alice.get("/v1/usage")["usage"]
            mine = {u["vm"]: u for u in usage}
            pending = p.redis_command("XPENDING", "berth:events", "meter")[0]
            return set(vms) <= set(mine) and int(pending) == 0
        wait(metered, "usage metered")
        # Stop the services (not Redis) so nothing changes while the keys are read.
        p._terminate([proc for proc in p.procs if proc is not p.redis], p.grace)
        keys = sorted(k for k in p.redis_command("KEYS", "berth:*")
                      if not k.startswith(("berth:registry:", "berth:instance:"))
                      and k != "berth:services")
        out = sys.stdout
        out.write(json.dumps({"comment": "captured from a real run", "admin": ["admin",
                  ADMIN_PASSWORD], "user": list(USER), "template": "web-v1",
                  "active": [vms[0], small_vm], "disposed": [vms[1]],
                  "redis": p.redis_command("INFO", "server").split("redis_version:")[1]
                  .split()[0]}) + "\n")
        for key in keys:
            for cmd in dump_key(p, key):
                out.write(json.dumps(cmd) + "\n")


if __name__ == "__main__":
    main()
