"""The permission table (gateway/permissions.c) and the route table (gateway/main.c) as data,
read from the source: what test_permissions.py holds docs/permissions.md and the route table to,
and what test_groups.py generates its RBAC matrix from."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BITS = ["PUBLIC", "USER", "ADMIN", "OPERATOR", "OWNER", "MEMBER", "MANAGER", "AUDITOR"]


def _read(*parts):
    with open(os.path.join(ROOT, *parts)) as f:
        return f.read()


def table():
    """action -> (set of bits, what) from perm_table[]."""
    src = _read("gateway", "permissions.c")
    macros = {}
    for name, expr in re.findall(r"^#define\s+(S_\w+)\s+\((.*)\)\s*$", src, re.M):
        macros[name] = expr
    def bits(expr):
        out = set()
        for tok in re.findall(r"\w+", expr):
            if tok.startswith("PERM_"):
                out.add(tok[5:])
            elif tok in macros:
                out |= bits(macros[tok])
        return out
    body = src[src.index("perm_table[] = {"):]
    body = body[:body.index("{ NULL")]
    rows = re.findall(r'\{\s*"([\w.]+)",\s*([^,]+),\s*"((?:[^"\\]|\\.)*)"\s*\}', body)
    return {a: (bits(rule), what) for a, rule, what in rows}


def routes():
    """[(method, pattern, action)] from s_routes[], then the query flags of s_flags[] that make
    a route's call another action (as "pattern?param=true")."""
    src = _read("gateway", "main.c")
    out = re.findall(r'\{\s*"(\w+)",\s*"([^"]+)",\s*\w+,\s*"([\w.]+)",', src)
    for m, p, param, action in re.findall(
            r'\{\s*"(\w+)",\s*"([^"]+)",\s*"(\w+)",\s*"([\w.]+)"\s*\}', src):
        out.append((m, "%s?%s=true" % (p, param), action))
    return out


def markdown():
    """docs/permissions.md as generated from the two tables."""
    t, r = table(), routes()
    out = ["# Permissions", "",
           "Generated from `gateway/permissions.c` and the route table of `gateway/main.c` by",
           "`python3 tests/integration/test_permissions.py --write`; the test fails when this",
           "file and the tables disagree.", "",
           "Platform roles: `admin`, `operator`, `user`. Group roles (per membership): `member`,",
           "`manager`, `auditor`; `owner` is who made the object, `group` roles are the",
           "caller's role in the object's group. `public` needs no sign-in; `user` is any",
           "signed-in user. An object outside the caller's scope answers 404; an operation on",
           "one they may see but not change answers 403.", "",
           "| action | who | what | routes |", "|---|---|---|---|"]
    for action, (bits, what) in t.items():
        who = ", ".join(b.lower() if b not in ("MEMBER", "MANAGER", "AUDITOR")
                        else "group " + b.lower() for b in BITS if b in bits)
        used = "<br>".join("`%s %s`" % (m, p) for m, p, a in r if a == action)
        out.append("| `%s` | %s | %s | %s |" % (action, who, what, used))
    return "\n".join(out) + "\n"
