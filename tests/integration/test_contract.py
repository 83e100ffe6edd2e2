#!/usr/bin/env python3
"""docs/openapi.yaml against the code it documents, with no server running:

- its limits (maxLength, minimum, maximum) are those of lib/limit.h, every one of them;
- its routes and query parameters are the gateway's route table (gateway/main.c);
- its error codes and their statuses are the table of lib/error.c;
- every schema compiles, and the checker that holds every integration suite's calls to the
  document (contract.py, through berth_test) does catch what it is meant to catch.

Run: python3 tests/integration/test_contract.py
"""

import json
import os
import re
import sys
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_test import ROOT, contract  # noqa: E402

C = contract.CONTRACT


def read(*parts):
    with open(os.path.join(ROOT, *parts)) as f:
        return f.read()


def limits():
    """LIMIT_* of lib/limit.h: name -> value."""
    return {m.group(1): int(m.group(2)) for m in
            re.finditer(r"^#define\s+(LIMIT_\w+)\s+(\d+)", read("lib", "limit.h"), re.M)}


class Fake:
    """A response as Platform.http returns it."""

    def __init__(self, status, body, headers=None):
        self.status = status
        self.body = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.headers = {"X-Request-Id": "r-1", "Content-Type": "application/json"}
        self.headers.update(headers or {})


def error(code, status, **details):
    return Fake(status, {"error": {"code": code, "message": "m", "request_id": "r-1",
                                   "details": details}})


TEMPLATE = {"id": str(uuid.uuid4()), "name": "small", "vcpus": 1, "ram_mb": 1024,
            "disk_gb": 10, "os": "linux", "image": "base", "lease_days": 7,
            "requires_approval": False}
AUTH = {"Authorization": "Bearer " + "A" * 43}


class Contract(unittest.TestCase):
    def schema_at(self, path, method, *keys):
        node = C.spec["paths"][path][method]
        for k in keys:
            node = C.resolve(node)[k]
        return C.resolve(node)

    def test_limits_are_those_of_lib_limit_h(self):
        create = self.schema_at("/v1/requests", "post", "requestBody", "content",
                                "application/json", "schema")["properties"]
        tmpl = C.resolve({"$ref": "#/components/schemas/TemplateInput"})["properties"]
        reject = self.schema_at("/v1/requests/{id}/reject", "post", "requestBody", "content",
                                "application/json", "schema")["properties"]
        idem = [C.resolve(p) for p in C.spec["paths"]["/v1/requests"]["post"]["parameters"]
                if C.resolve(p)["name"] == "Idempotency-Key"][0]["schema"]
        user = C.resolve({"$ref": "#/components/schemas/UserName"})
        group = C.resolve({"$ref": "#/components/schemas/GroupInput"})["properties"]
        quota = C.resolve({"$ref": "#/components/schemas/Quota"})["properties"]
        action = self.schema_at("/v1/vms/{id}/actions", "post", "requestBody", "content",
                                "application/json", "schema")["properties"]
        reserve = C.resolve({"$ref": "#/components/schemas/ReservationInput"})["properties"]
        reservations = self.schema_at("/v1/groups/{id}/reservations", "put", "requestBody",
                                      "content", "application/json",
                                      "schema")["properties"]["reservations"]
        apikey = self.schema_at("/v1/auth/keys", "post", "requestBody", "content",
                                "application/json", "schema")["properties"]
        webhook = self.schema_at("/v1/groups/{id}/webhook", "put", "requestBody", "content",
                                 "application/json", "schema")["properties"]
        budget = self.schema_at("/v1/groups/{id}/budget", "put", "requestBody", "content",
                                "application/json", "schema", "properties")
        rate = self.schema_at("/v1/rates", "post", "requestBody", "content",
                              "application/json", "schema")["properties"]
        image = self.schema_at("/v1/images", "post", "requestBody", "content",
                               "application/json", "schema")["properties"]
        sshkey = self.schema_at("/v1/keys", "post", "requestBody", "content",
                                "application/json", "schema")["properties"]
        sshkeys = self.schema_at("/v1/keys", "get", "responses", "200", "content",
                                 "application/json", "schema")["properties"]["keys"]
        network = C.resolve({"$ref": "#/components/schemas/NetworkInput"})["properties"]
        networks = self.schema_at("/v1/networks", "get", "responses", "200", "content",
                                  "application/json", "schema")["properties"]["networks"]
        pool = self.schema_at("/v1/templates/{id}/pool", "put", "requestBody", "content",
                              "application/json", "schema")["properties"]
        stated = {
            "LIMIT_POOL_SIZE_MAX": pool["size"]["maximum"],
            "LIMIT_RATE_PRICE_MAX": rate["vcpu_hour"]["maximum"],
            "LIMIT_RATE_FACTOR_MAX": rate["factors"]["properties"]["running"]["maximum"],
            "LIMIT_RATE_TEMPLATES_MAX": rate["templates"]["maxProperties"],
            "LIMIT_RATE_NOTE_MAX": rate["note"]["maxLength"],
            "LIMIT_BUDGET_AMOUNT_MAX": budget["amount"]["maximum"],
            "LIMIT_BUDGET_THRESHOLDS_MAX": budget["thresholds"]["maxItems"],
            "LIMIT_BUDGET_THRESHOLD_MAX": budget["thresholds"]["items"]["maximum"],
            "LIMIT_COUNT_MAX": create["count"]["maximum"],
            "LIMIT_VM_NAME_MAX": create["name"]["maxLength"],
            "LIMIT_TEMPLATE_REF_MAX": create["template"]["maxLength"],
            "LIMIT_GROUP_REF_MAX": create["group"]["maxLength"],
            "LIMIT_IDEMPOTENCY_KEY_MAX": idem["maxLength"],
            "LIMIT_REASON_MAX": reject["reason"]["maxLength"],
            "LIMIT_TEMPLATE_NAME_MAX": tmpl["name"]["maxLength"],
            "LIMIT_VCPUS_MAX": tmpl["vcpus"]["maximum"],
            "LIMIT_RAM_MB_MIN": tmpl["ram_mb"]["minimum"],
            "LIMIT_RAM_MB_MAX": tmpl["ram_mb"]["maximum"],
            "LIMIT_DISK_GB_MAX": tmpl["disk_gb"]["maximum"],
            "LIMIT_LEASE_DAYS_MAX": tmpl["lease_days"]["maximum"],
            "LIMIT_TEXT_MAX": tmpl["image"]["maxLength"],
            "LIMIT_USER_NAME_MAX": user["maxLength"],
            "LIMIT_DISPLAY_NAME_MAX": C.resolve({"$ref": "#/components/schemas/DisplayName"})[
                "maxLength"],
            "LIMIT_EMAIL_MAX": C.resolve({"$ref": "#/components/schemas/Email"})["maxLength"],
            "LIMIT_APIKEY_NAME_MAX": apikey["name"]["maxLength"],
            "LIMIT_APIKEY_DAYS_MAX": apikey["expires_in_days"]["maximum"],
            "LIMIT_APIKEY_GROUPS_MAX": apikey["groups"]["maxItems"],
            "LIMIT_GROUP_NAME_MAX": group["name"]["maxLength"],
            "LIMIT_GROUP_TEXT_MAX": group["description"]["maxLength"],
            "LIMIT_GROUP_COST_CENTRE_MAX": group["cost_centre"]["maxLength"],
            "LIMIT_GROUP_QUOTA_MAX": quota["ram_mb"]["maximum"],
            "LIMIT_GROUP_TEMPLATES_MAX": group["templates"]["maxItems"],
            "LIMIT_STOP_TIMEOUT_MAX_S": action["timeout_s"]["maximum"],
            "LIMIT_RESERVATIONS_MAX": reservations["maxItems"],
            "LIMIT_RESERVE_VCPUS_MAX": reserve["vcpus"]["maximum"],
            "LIMIT_RESERVE_RAM_MB_MAX": reserve["ram_mb"]["maximum"],
            "LIMIT_RESERVE_DISK_GB_MAX": reserve["disk_gb"]["maximum"],
            "LIMIT_HOST_REF_MAX": reserve["host"]["maxLength"],
            "LIMIT_WEBHOOK_URL_MAX": webhook["url"]["maxLength"],
            "LIMIT_WEBHOOK_SECRET_MIN": webhook["secret"]["minLength"],
            "LIMIT_WEBHOOK_SECRET_MAX": webhook["secret"]["maxLength"],
            "LIMIT_IMAGE_TEXT_MAX": image["os_version"]["maxLength"],
            "LIMIT_IMAGE_APPS_MAX": image["applications"]["maxItems"],
            "LIMIT_IMAGE_NAME_MAX": image["name"]["maxLength"],
            "LIMIT_IMAGE_PATH_MAX": image["path"]["maxLength"],
            "LIMIT_IMAGE_CMDLINE_MAX": image["cmdline"]["maxLength"],
            "LIMIT_IMAGE_MANIFEST_MAX": image["manifest"]["x-max-bytes"],
            "LIMIT_IMAGE_MANIFEST_FILES_MAX": image["manifest"]["properties"]["files"]["maxItems"],
            "LIMIT_IMAGE_UPLOAD_MAX": self.schema_at("/v1/images", "post", "requestBody",
                                                     "content", "application/octet-stream",
                                                     "schema")["x-max-bytes"],
            "LIMIT_SSH_KEY_NAME_MAX": sshkey["name"]["maxLength"],
            "LIMIT_SSH_KEY_MAX": sshkey["public_key"]["maxLength"],
            "LIMIT_SSH_KEYS_PER_USER": sshkeys["maxItems"],
            "LIMIT_REQUEST_SSH_KEYS_MAX": create["ssh_keys"]["maxItems"],
            "LIMIT_NETWORK_NAME_MAX": network["name"]["maxLength"],
            "LIMIT_NETWORK_PREFIX_MIN": network["cidr"]["x-prefix-minimum"],
            "LIMIT_NETWORK_PREFIX_MAX": network["cidr"]["x-prefix-maximum"],
            "LIMIT_NETWORK_DNS_MAX": network["dns"]["maxItems"],
            "LIMIT_NETWORK_BRIDGE_MAX": network["bridge"]["maxLength"],
            "LIMIT_NETWORK_ATTACH_MAX": network["libvirt_network"]["maxLength"],
            "LIMIT_NETWORK_GROUPS_MAX": network["groups"]["maxItems"],
            "LIMIT_NETWORKS_MAX": networks["maxItems"],
            "LIMIT_VM_NETWORKS_MAX": tmpl["networks"]["maxItems"],
        }
        # A template names a network by its name.
        self.assertEqual(tmpl["network"]["maxLength"], stated["LIMIT_NETWORK_NAME_MAX"])
        self.assertEqual(create["networks"]["maxItems"], stated["LIMIT_VM_NETWORKS_MAX"])
        self.assertEqual(tmpl["networks"]["items"]["maxLength"], stated["LIMIT_NETWORK_NAME_MAX"])
        # An application's name and version share the image texts' limit.
        app = C.resolve({"$ref": "#/components/schemas/ImageApp"})["properties"]
        self.assertEqual(app["name"]["maxLength"], stated["LIMIT_IMAGE_TEXT_MAX"])
        self.assertEqual(image["arch"]["maxLength"], stated["LIMIT_IMAGE_TEXT_MAX"])
        # A group's members: at most LIMIT_GROUP_MEMBERS_MAX, stated where members are added.
        members = C.spec["paths"]["/v1/groups/{id}/members"]["post"]["description"]
        self.assertIn(str(limits()["LIMIT_GROUP_MEMBERS_MAX"]), members)
        stated["LIMIT_GROUP_MEMBERS_MAX"] = limits()["LIMIT_GROUP_MEMBERS_MAX"]
        # os shares image's limit.
        self.assertEqual(tmpl["os"]["maxLength"], stated["LIMIT_TEXT_MAX"])
        # Every limit of the code is stated, and stated as the code has it.
        self.assertEqual(stated, limits())

    def test_routes_are_the_gateway_route_table(self):
        table = re.findall(r'\{\s*"(\w+)",\s*"([^"]+)",\s*\w+,\s*"[\w.]+",\s*(NULL|"[^"]*")\s*\}',
                           read("gateway", "main.c"))
        self.assertTrue(table)
        code = {(m, p): set(q.strip('"').split()) if q != "NULL" else set()
                for m, p, q in table}
        documented = {}
        for method, template, op, item in C.operations():
            params = C.parameters(item, op)
            documented[(method, template)] = {n for (w, n) in params if w == "query"}
        self.assertEqual(documented, code)

    def test_error_codes_are_those_of_lib_error_c(self):
        rows = re.findall(r'\{\s*"([A-Z_]+)",\s*(\d{3}),', read("lib", "error.c"))
        self.assertTrue(rows)
        error = C.resolve({"$ref": "#/components/schemas/Error"})
        stated = error["properties"]["error"]["properties"]["code"]["x-status"]
        self.assertEqual(stated, {code: int(status) for code, status in rows})
        # Each error status a route documents is one some code reads as (or 405/415/...).
        statuses = set(stated.values())
        for method, template, op, _item in C.operations():
            for status in op["responses"]:
                if int(status) >= 400:
                    self.assertIn(int(status), statuses, (method, template, status))

    def test_every_schema_compiles(self):
        for method, template, op, item in C.operations():
            for status, resp in op["responses"].items():
                content = (C.resolve(resp).get("content") or {}).get("application/json")
                if content:
                    C.validator(("compile", method, template, status), content["schema"], True)
            rb = op.get("requestBody")
            if rb:
                C.validator(("compile", method, template),
                            C.resolve(rb)["content"]["application/json"]["schema"], False)
            for p in C.parameters(item, op).values():
                C.validator(("compile", p["in"], p["name"]), p.get("schema", {}), False)

    # -- the checker catches drift -----------------------------------------------------------

    def assertDeparts(self, method, url, response, body=None, headers=None, why=""):
        with self.assertRaises(contract.ContractError) as cm:
            C.check(method, url, dict(AUTH, **(headers or {})), body, response)
        self.assertIn(why, str(cm.exception))

    def test_checker_accepts_what_the_document_says(self):
        C.check("GET", "/v1/templates", AUTH, None, Fake(200, {"templates": [TEMPLATE]}))
        C.check("GET", "/v1/vms?limit=5", AUTH, None, Fake(200, {"vms": [], "next_marker": None}))
        C.check("GET", "/v1/vms?limt=5", AUTH, None, error("BAD_REQUEST", 400, field="limt"))
        C.check("PUT", "/v1/vms", AUTH, None, Fake(405, json.loads(
            error("METHOD_NOT_ALLOWED", 405).body), {"Allow": "GET"}))
        C.check("GET", "/nowhere", {}, None, error("NOT_FOUND", 404))

    def test_checker_catches_drift(self):
        ok = {"templates": [TEMPLATE]}
        self.assertDeparts("GET", "/v1/templates", Fake(418, ok), why="not documented")
        self.assertDeparts("GET", "/v1/templates", Fake(200, dict(ok, extra=1)),
                           why="extra")
        self.assertDeparts("GET", "/v1/templates",
                           Fake(200, {"templates": [dict(TEMPLATE, vcpus="1")]}), why="vcpus")
        missing = dict(TEMPLATE)
        del missing["image"]
        self.assertDeparts("GET", "/v1/templates", Fake(200, {"templates": [missing]}),
                           why="image")
        r = Fake(200, ok)
        del r.headers["X-Request-Id"]
        self.assertDeparts("GET", "/v1/templates", r, why="X-Request-Id")
        # Times carry milliseconds and Z.
        vm_id = str(uuid.uuid4())
        self.assertDeparts("GET", "/v1/tasks/" + vm_id, Fake(200, {"task": {
            "id": vm_id, "kind": "PROVISION", "state": "QUEUED", "stage": None, "percent": 0,
            "steps": [], "fault": None, "target": None, "created_at": "2024-05-01T12:00:00Z",
            "finished_at": None}}), why="created_at")
        # A 405 lists the methods of the resource.
        self.assertDeparts("PUT", "/v1/vms", error("METHOD_NOT_ALLOWED", 405), why="Allow")
        self.assertDeparts("PATCH", "/v1/vms/" + vm_id,
                           Fake(405, json.loads(error("METHOD_NOT_ALLOWED", 405).body),
                                {"Allow": "GET"}), why="Allow")
        # An undocumented path is a 404, whatever else it answers.
        self.assertDeparts("GET", "/v1/secret", Fake(200, {}), why="not 404")
        # A request the document refuses must not succeed.
        accepted = Fake(202, {}, {"Location": "/v1/requests/x"})
        for body, why in [({"template": "small", "name": "web", "count": 51}, "count"),
                          ({"template": "small", "name": "w" * 52}, "name"),
                          ({"template": "small", "name": "web", "count": None}, "None"),
                          ({"template": "small", "name": "web", "size": 1}, "size")]:
            self.assertDeparts("POST", "/v1/requests", accepted, body=body,
                               why="refuses succeeded")
        self.assertDeparts("POST", "/v1/requests", accepted,
                           body={"template": "small", "name": "web"},
                           headers={"Idempotency-Key": "has spaces"}, why="Idempotency-Key")
        self.assertDeparts("GET", "/v1/vms?sort=name",
                           Fake(200, {"vms": [], "next_marker": None}), why="sort")
        with self.assertRaises(contract.ContractError):
            C.check("GET", "/v1/vms", {}, None, Fake(200, {"vms": [], "next_marker": None}))
        # Error bodies: the documented shape, details as strings.
        self.assertDeparts("GET", "/v1/vms/" + vm_id,
                           Fake(404, {"error": {"code": "NOT_FOUND", "message": "m",
                                                "request_id": "r-1"}}), why="details")
        self.assertDeparts("GET", "/v1/vms/" + vm_id, error("NOT_FOUND", 404, count=3),
                           why="count")
        # The code decides the status, and only codes of the table leave the gateway.
        self.assertDeparts("GET", "/v1/vms/" + vm_id, error("CONFLICT", 404), why="reads as")
        self.assertDeparts("GET", "/v1/vms/" + vm_id, error("GONE", 404), why="not in the table")
        self.assertDeparts("GET", "/nowhere", error("NOT_FOUND", 400), why="not 404")
        self.assertDeparts("GET", "/v1/vms/" + vm_id,
                           Fake(404, {"error": {"code": "NOT_FOUND", "message": "m",
                                                "request_id": "other", "details": {}}}),
                           why="request_id")


if __name__ == "__main__":
    unittest.main(verbosity=2)
