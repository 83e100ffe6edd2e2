"""The REST contract, enforced: every request the integration suites make through
berth_test's HTTP helper, and every answer they get, is checked against docs/openapi.yaml.

What is checked, for each call:
- the path and method are documented (an undocumented path must answer 404, an undocumented
  method on a documented path 405 with an Allow header listing the documented methods);
- the answer's status is one the operation documents, with the documented JSON body: the
  response schemas are applied strictly (an object may not carry a property the document
  does not list), times are ISO 8601 UTC with milliseconds, ids are lower-case UUIDs;
- every answer carries X-Request-Id and the headers its response documents (Location,
  WWW-Authenticate), every 405 Allow;
- an error's code is one of the document's table (Error.code's x-status, which
  test_contract holds equal to lib/error.c) and the status is the one the table gives it;
- a request that breaks the document (body schema, query and header parameters, path
  parameters, no token where one is needed) is never answered with success.

A violation raises AssertionError naming the call and what differed, which fails the test
that made the call. Debian's python3-jsonschema and python3-yaml do the schema work.
"""

import copy
import json
import os
import re
import urllib.parse

import jsonschema
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC_PATH = os.path.join(ROOT, "docs", "openapi.yaml")
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")

_DATE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

FORMATS = jsonschema.FormatChecker(formats=())


@FORMATS.checks("date-time")
def _is_date_time(value):
    return not isinstance(value, str) or bool(_DATE_TIME.match(value))


@FORMATS.checks("uuid")
def _is_uuid(value):
    return not isinstance(value, str) or bool(_UUID.match(value))


class ContractError(AssertionError):
    pass


class Contract:
    def __init__(self, path=SPEC_PATH):
        with open(path) as f:
            self.spec = yaml.safe_load(f)
        self.paths = []   # (regex, template, path item), most literal first
        for template, item in self.spec["paths"].items():
            pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "([^/]+)",
                                   re.escape(template)) + "$"
            names = re.findall(r"\{([^}]+)\}", template)
            self.paths.append((re.compile(pattern), template, names, item))
        # "/v1/vms/{id}" must not shadow a literal path of the same shape.
        self.paths.sort(key=lambda p: p[1].count("{"))
        self._validators = {}

    # -- schemas ----------------------------------------------------------------------------

    def resolve(self, node):
        """node with its $ref (if any) followed, recursively at the top."""
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            if not ref.startswith("#/"):
                raise ContractError("unsupported $ref %r" % ref)
            target = self.spec
            for part in ref[2:].split("/"):
                target = target[part]
            node = target
        return node

    def json_schema(self, schema, strict):
        """An OpenAPI 3.0 schema as JSON Schema (draft 4): references inlined, nullable as
        a null type, allOf of objects merged; strict: objects refuse undocumented
        properties."""
        schema = copy.deepcopy(self.resolve(schema))
        if not isinstance(schema, dict):
            return schema
        if "allOf" in schema:
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                part = self.json_schema(part, False)
                for key, value in part.items():
                    if key == "properties":
                        merged.setdefault("properties", {}).update(value)
                    elif key == "required":
                        merged["required"] = sorted(set(merged.get("required", [])) |
                                                    set(value))
                    else:
                        merged.setdefault(key, value)
            schema = merged
        for key in ("properties",):
            if key in schema:
                schema[key] = {k: self.json_schema(v, strict) for k, v in schema[key].items()}
        if "items" in schema:
            schema["items"] = self.json_schema(schema["items"], strict)
        if isinstance(schema.get("additionalProperties"), dict):
            schema["additionalProperties"] = self.json_schema(schema["additionalProperties"],
                                                              strict)
        if schema.pop("nullable", False):
            if "type" in schema:
                schema["type"] = [schema["type"], "null"]
            if "enum" in schema and None not in schema["enum"]:
                schema["enum"] = list(schema["enum"]) + [None]
        for key in ("example", "description", "default", "deprecated", "readOnly",
                    "writeOnly"):
            schema.pop(key, None)
        if strict and "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        return schema

    def validator(self, key, schema, strict):
        v = self._validators.get(key)
        if v is None:
            js = self.json_schema(schema, strict)
            jsonschema.Draft4Validator.check_schema(js)
            v = jsonschema.Draft4Validator(js, format_checker=FORMATS)
            self._validators[key] = v
        return v

    @staticmethod
    def problems(validator, instance):
        return ["%s: %s" % ("/".join(str(p) for p in e.absolute_path) or "(body)", e.message)
                for e in validator.iter_errors(instance)]

    # -- lookups ----------------------------------------------------------------------------

    def match(self, path):
        """(template, {name: value}, path item) of the documented path, or None."""
        for regex, template, names, item in self.paths:
            m = regex.match(path)
            if m:
                return template, dict(zip(names, m.groups())), item
        return None

    def operations(self):
        """Every documented (METHOD, template, operation, path item)."""
        for template, item in self.spec["paths"].items():
            for method in METHODS:
                if method in item:
                    yield method.upper(), template, item[method], item

    def parameters(self, item, op):
        params = {}
        for p in item.get("parameters", []) + op.get("parameters", []):
            p = self.resolve(p)
            params[(p["in"], p["name"].lower() if p["in"] == "header" else p["name"])] = p
        return params

    # -- the check --------------------------------------------------------------------------

    def check(self, method, url, headers, body, response):
        """Raise ContractError when the call or its answer departs from the document."""
        what = "%s %s -> %s" % (method, url, response.status)
        try:
            self._check(method.upper(), url, {k.lower(): v for k, v in (headers or {}).items()},
                        body, response)
        except ContractError as e:
            raise ContractError("%s departs from docs/openapi.yaml: %s\n  answer: %s"
                                % (what, e, response.body[:400])) from None

    def _check(self, method, url, headers, body, response):
        status = response.status
        rheaders = {k.lower(): v for k, v in response.headers.items()}
        if not rheaders.get("x-request-id"):
            raise ContractError("no X-Request-Id")
        split = urllib.parse.urlsplit(url)
        found = self.match(split.path)
        if not found:
            if status != 404:
                raise ContractError("undocumented path answered %d, not 404" % status)
            return self._error_body(response)
        template, path_params, item = found
        op = item.get(method.lower())
        if op is None:
            allowed = {m.upper() for m in METHODS if m in item}
            if status != 405:
                raise ContractError("undocumented method on %s answered %d, not 405"
                                    % (template, status))
            allow = {m.strip() for m in rheaders.get("allow", "").split(",") if m.strip()}
            if allow != allowed:
                raise ContractError("Allow: %r, documented methods: %s"
                                    % (rheaders.get("allow"), sorted(allowed)))
            return self._error_body(response)

        refusals = self._request_problems(method, template, path_params, split.query, headers,
                                          body, item, op)
        if refusals and 200 <= status < 300:
            raise ContractError("a request the document refuses succeeded: %s"
                                % "; ".join(refusals))
        responses = op.get("responses", {})
        documented = responses.get(str(status)) or responses.get("default")
        if documented is None:
            raise ContractError("status %d is not documented for %s %s (documented: %s)"
                                % (status, method, template, ", ".join(sorted(responses))))
        documented = self.resolve(documented)
        # The headers a response documents are the ones it sends.
        for name in (documented.get("headers") or {}):
            if name.lower() in ("x-request-id", "www-authenticate", "location", "allow",
                                "retry-after") and \
                    not rheaders.get(name.lower()):
                raise ContractError("no %s header" % name)
        if rheaders.get("content-type", "").startswith("text/csv"):
            if "text/csv" not in (documented.get("content") or {}):
                raise ContractError("Content-Type text/csv is not documented for %s %s %d"
                                    % (method, template, status))
            return
        content = (documented.get("content") or {}).get("application/json")
        if content is None:
            return
        if not rheaders.get("content-type", "").startswith("application/json"):
            raise ContractError("Content-Type %r, not application/json"
                                % rheaders.get("content-type"))
        try:
            instance = json.loads(response.body.decode("utf-8"))
        except ValueError:
            raise ContractError("the body is not JSON") from None
        v = self.validator(("response", method, template, status), content["schema"], True)
        problems = self.problems(v, instance)
        if problems:
            raise ContractError("the body breaks the schema: " + "; ".join(problems[:5]))
        if isinstance(instance, dict) and isinstance(instance.get("error"), dict):
            self._error_status(instance["error"], status)
            if instance["error"].get("request_id") != rheaders.get("x-request-id"):
                raise ContractError("error.request_id differs from X-Request-Id")

    def _error_status(self, error, status):
        """An error's code is one of the table, and the status is the code's."""
        table = self.resolve({"$ref": "#/components/schemas/Error"})
        table = table["properties"]["error"]["properties"]["code"]["x-status"]
        code = error.get("code")
        if code not in table:
            raise ContractError("error code %r is not in the table (x-status)" % code)
        if table[code] != status:
            raise ContractError("error code %s reads as %d, answered with %d"
                                % (code, table[code], status))

    def _error_body(self, response):
        try:
            instance = json.loads(response.body.decode("utf-8"))
        except ValueError:
            raise ContractError("the error body is not JSON") from None
        v = self.validator(("error",), {"$ref": "#/components/schemas/Error"}, True)
        problems = self.problems(v, instance)
        if problems:
            raise ContractError("the error body breaks the Error schema: " +
                                "; ".join(problems[:5]))
        self._error_status(instance["error"], response.status)

    def _credentials(self, security, method, headers):
        """The call carries what one of the operation's security schemes asks: a bearer token,
        or the portal's session cookie (with the anti-CSRF header on a call that is not a GET
        or HEAD)."""
        schemes = self.spec.get("components", {}).get("securitySchemes", {})
        for requirement in security:
            for name in requirement:
                scheme = schemes.get(name, {})
                if scheme.get("scheme") == "bearer":
                    if headers.get("authorization", "").startswith("Bearer "):
                        return True
                elif scheme.get("in") == "cookie":
                    cookies = [c.strip().split("=", 1)[0]
                               for c in headers.get("cookie", "").split(";")]
                    if scheme.get("name") in cookies and (
                            method in ("GET", "HEAD") or headers.get("x-csrf-token")):
                        return True
        return False

    def _request_problems(self, method, template, path_params, query, headers, body, item, op):
        """Why the document refuses this request (empty when it accepts it)."""
        out = []
        params = self.parameters(item, op)
        for name, value in path_params.items():
            p = params.get(("path", name))
            if p is None:
                raise ContractError("path parameter %s of %s is not documented"
                                    % (name, template))
            out += self._param_problems(p, urllib.parse.unquote(value))
        seen = set()
        for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
            p = params.get(("query", name))
            if p is None:
                out.append("unknown query parameter %r" % name)
                continue
            seen.add(name)
            out += self._param_problems(p, value)
        for (where, name), p in params.items():
            if where == "header" and name in headers:
                out += self._param_problems(p, headers[name])
            elif p.get("required") and where == "query" and name not in seen:
                out.append("query parameter %r is required" % name)
        security = op.get("security", self.spec.get("security", []))
        if security and not self._credentials(security, method, headers):
            out.append("no bearer token")
        rb = op.get("requestBody")
        if body is None:
            if rb and self.resolve(rb).get("required"):
                out.append("the body is required")
            return out
        if not rb:
            out.append("the operation takes no body")
            return out
        if isinstance(body, (bytes, str)):
            ctype = headers.get("content-type", "")
            if ctype.startswith("application/octet-stream"):
                if "application/octet-stream" not in self.resolve(rb)["content"]:
                    out.append("Content-Type application/octet-stream is not documented")
                return out
            if not ctype.startswith("application/json"):
                out.append("Content-Type %r is not application/json" % ctype)
                return out
            try:
                body = json.loads(body)
            except ValueError:
                out.append("the body is not JSON")
                return out
        schema = self.resolve(rb)["content"]["application/json"]["schema"]
        v = self.validator(("request", method, template), schema, False)
        out += self.problems(v, body)
        return out

    def _param_problems(self, param, text):
        schema = self.json_schema(param.get("schema", {}), False)
        value = text
        if schema.get("type") == "integer":
            try:
                value = int(text)
            except ValueError:
                return ["parameter %r is not an integer" % param["name"]]
        # Keyed by the schema too: two operations' parameters of one name differ (state).
        v = self.validator(("param", param["in"], param["name"],
                            json.dumps(param.get("schema", {}), sort_keys=True)),
                           param.get("schema", {}), False)
        return ["parameter %r: %s" % (param["name"], p) for p in self.problems(v, value)]


CONTRACT = Contract()
