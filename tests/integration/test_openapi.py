"""docs/openapi.yaml against itself and against the running service.

The spec is read with the YAML-subset loader of schema.py (no YAML library needed); when
a Python with PyYAML is around, the two readings must agree. Then: the document is a
structurally valid OpenAPI 3.1 description, every $ref resolves, every schema uses only
keywords schema.Validator checks, and every example matches its schema. Finally every
operation is called for each status the tests can provoke, and each answer must be
documented for its path and method: its status, its required headers (with their
schemas), its media type and, for JSON, its body against the schema in strict mode (an
undocumented member of a documented object is a failure).
"""
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse

import schema as sch
from lib import (BATCH, EVENTS, admin, check, event, fail, key, phone_digits,
                 profiles_reader, purchase, reader, request, summarise, uid, writer)

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC_PATH = os.path.normpath(os.path.join(HERE, "..", "..", "docs", "openapi.yaml"))
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
SCOPES = ("events:write", "events:read", "profiles:read", "admin")

_cache = {}


def spec():
    """(document, validator), read once."""
    if "doc" not in _cache:
        with open(SPEC_PATH, encoding="utf-8") as f:
            text = f.read()
        try:
            doc = sch.load_yaml(text)
        except sch.YamlError as e:
            fail("%s: %s" % (SPEC_PATH, e))
        _cache["doc"] = doc
        _cache["val"] = sch.Validator(doc)
    return _cache["doc"], _cache["val"]


SEEN = set()          # (path template, method, status) answered and checked


# ---------------------------------------------------------------- checking answers

def call(method, path, body=None, key=None, **kw):
    """lib.request with a fresh X-Request-Id, remembered for the echo check."""
    rid = uid("oas")
    hdrs = dict(kw.pop("headers", None) or {})
    hdrs["X-Request-Id"] = rid
    r = request(method, path, body, key=key, headers=hdrs, **kw)
    r.sent_rid = rid
    return r


def _media(ct):
    """'text/plain; version=0.0.4; charset=utf-8' -> ('text/plain', {'version': '0.0.4'}),
    charset aside (returned separately)."""
    parts = [p.strip() for p in (ct or "").split(";")]
    params, charset = {}, None
    for p in parts[1:]:
        if "=" in p:
            k, v = p.split("=", 1)
            k, v = k.strip().lower(), v.strip().strip('"')
            if k == "charset":
                charset = v.lower()
            else:
                params[k] = v
    return (parts[0].lower(), params), charset


def _template_regex(template):
    return re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$")


def templates_for(concrete):
    """The spec paths a concrete path matches."""
    doc, _ = spec()
    return [t for t in doc["paths"] if _template_regex(t).match(concrete)]


def check_response(r, resp, where, problems):
    """r against one (dereferenced) response object."""
    doc, v = spec()
    w = "%s: %s" % (where, r.describe(400))
    for name, h in (resp.get("headers") or {}).items():
        h = v.deref(h)
        got = r.headers.get(name.lower())
        if got is None:
            if h.get("required"):
                problems.append("%s: documented header %s missing" % (w, name))
            continue
        for p in v.validate(got, h.get("schema", {}), strict=True, path=name):
            problems.append("%s: header %s" % (w, p))
    rid = getattr(r, "sent_rid", None)
    if rid is not None and r.headers.get("x-request-id") != rid:
        problems.append("%s: X-Request-Id %r does not echo %r" % (
            w, r.headers.get("x-request-id"), rid))
    content = resp.get("content") or {}
    if not content:
        if r.raw:
            problems.append("%s: body where the spec documents none" % w)
        return
    (mt, params), charset = _media(r.headers.get("content-type"))
    if charset not in (None, "utf-8"):
        problems.append("%s: charset %s" % (w, charset))
    media = None
    for k, m in content.items():
        if _media(k)[0] == (mt, params):
            media = m
    if media is None:
        problems.append("%s: Content-Type %r is none of the documented %s" % (
            w, r.headers.get("content-type"), sorted(content)))
        return
    sc = media.get("schema")
    if sc is None:
        return
    if mt == "application/json":
        if not r.is_json:
            problems.append("%s: body is not JSON" % w)
            return
        for p in v.validate(r.body, sc, strict=True):
            problems.append("%s: %s" % (w, p))
    else:
        try:
            text = r.raw.decode("utf-8")
        except UnicodeDecodeError:
            problems.append("%s: body is not UTF-8" % w)
            return
        for p in v.validate(text, sc, strict=True):
            problems.append("%s: %s" % (w, p))


def conform(r, template, method, problems, what=""):
    """Check r, the answer to `method` on a path matching `template`: the status must be
    documented for that operation (a 405 for another method: for some operation of the
    path), and headers and body must match. Returns the body."""
    doc, v = spec()
    where = "%s %s%s" % (method, template, " (%s)" % what if what else "")
    item = doc["paths"].get(template)
    if item is None:
        problems.append("%s: path not in the spec" % where)
        return r.body
    op = item.get(method.lower())
    if op is None:
        ops = [item[m] for m in METHODS if m in item]
        if r.status != 405:
            problems.append("%s: method not documented, answered %s" % (where, r.describe(300)))
            return r.body
        op = next((o for o in ops if "405" in o["responses"]), None)
        if op is None:
            problems.append("%s: 405 documented for no operation of the path" % where)
            return r.body
    resps = op["responses"]
    st = str(r.status)
    resp = resps.get(st) or resps.get(st[0] + "XX") or resps.get("default")
    if resp is None:
        problems.append("%s: status %s not documented (documented: %s): %s" % (
            where, st, ", ".join(sorted(resps)), r.describe(300)))
        return r.body
    SEEN.add((template, method.upper(), r.status))
    check_response(r, v.deref(resp), where, problems)
    return r.body


def expect(r, status, template, method, problems, code=None, what=""):
    """conform() plus the status (and error_code) this case must get."""
    body = conform(r, template, method, problems, what)
    label = "%s %s%s" % (method, template, " (%s)" % what if what else "")
    if r.status != status:
        problems.append("%s: expected HTTP %d, got %s" % (label, status, r.describe(300)))
    elif code is not None and not (isinstance(body, dict) and body.get("error_code") == code):
        problems.append("%s: expected error_code %s, got %s" % (label, code, r.describe(300)))
    return body if isinstance(body, dict) else {}


def done(problems, n, what):
    summarise(problems, n, what)


def _ident_path(name, value):
    return "/v1/cdp/profiles?%s=%s" % (name, urllib.parse.quote(value, safe=""))


# ---------------------------------------------------------------- the document

def test_spec_yaml_reads_the_same_with_pyyaml():
    """The subset loader and a real YAML parser read the file alike (when PyYAML is
    available to this Python or to /usr/bin/python3; else there is nothing to compare)."""
    doc, _ = spec()
    other = None
    try:
        import yaml  # noqa: F401  (only to find out whether it is there)
        with open(SPEC_PATH, encoding="utf-8") as f:
            other = json.loads(json.dumps(yaml.safe_load(f)))
    except ImportError:
        for py in ("/usr/bin/python3", shutil.which("python3")):
            if not py or not os.path.exists(py) or py == sys.executable:
                continue
            p = subprocess.run(
                [py, "-c", "import yaml,json,sys; json.dump(yaml.safe_load(open(sys.argv[1],"
                 " encoding='utf-8')), sys.stdout)", SPEC_PATH],
                capture_output=True, text=True, timeout=60)
            if p.returncode == 0:
                other = json.loads(p.stdout)
                break
            if "No module named" not in p.stderr:
                fail("PyYAML (%s) cannot read %s: %s" % (py, SPEC_PATH, p.stderr.strip()[-600:]))
    if other is None:
        print("note: no PyYAML found (Debian package python3-yaml); "
              "only the subset loader read docs/openapi.yaml")
        return
    check(other == json.loads(json.dumps(doc)),
          "PyYAML and tests/integration/schema.py read %s differently: %s" % (
              SPEC_PATH, _first_difference(doc, other)))


def test_spec_passes_openapi_spec_validator_when_installed():
    """An independent OpenAPI 3.1 validator agrees (the Python package
    openapi-spec-validator, used only when this Python has it)."""
    doc, _ = spec()
    try:
        from openapi_spec_validator import validate
    except ImportError:
        print("note: openapi-spec-validator is not installed; only this module's own "
              "structural checks ran")
        return
    try:
        validate(json.loads(json.dumps(doc)))
    except Exception as e:  # its exceptions differ between versions
        fail("openapi-spec-validator rejects docs/openapi.yaml: %s: %s" % (
            type(e).__name__, str(e)[:1500]))


def test_checkers_reject_what_they_should():
    """The YAML loader and the schema validator of schema.py are not permissive: a few
    known-bad inputs must be refused (so a green run means something)."""
    for bad in ("a: yes\n", "a: 1e3\n", "a: &x 1\n", "a: 1\na: 2\n", "a: b: c\n",
                "a:\n  - x\n   - y\n", "a: 'open\n"):
        try:
            sch.load_yaml(bad)
        except sch.YamlError:
            continue
        fail("the YAML loader accepted %r" % bad)
    got = sch.load_yaml("a:\n  - {b: 'c: d', e: [1, 2.5, null, true]}\n  - |\n    x\n    y\n"
                        "f: >-\n  g\n  h\n")
    check(got == {"a": [{"b": "c: d", "e": [1, 2.5, None, True]}, "x\ny\n"], "f": "g h"},
          "the YAML loader misread the sample: %r" % got)
    doc, v = spec()
    accepted = {"status": "accepted", "event_id": "evt_" + "a" * 22,
                "profile_id": "prf_" + "b" * 22, "profile_created": True, "points_awarded": 1,
                "rules_applied": [], "rules_skipped": [], "effects": [], "tier": None, "identity_conflicts": []}
    ref = {"$ref": "#/components/schemas/Accepted"}
    check(v.validate(accepted, ref, strict=True) == [], "a good Accepted was refused")
    for change, why in (({"extra": 1}, "undocumented member"),
                        ({"points_awarded": True}, "boolean for integer"),
                        ({"points_awarded": 1.5}, "fraction for integer"),
                        ({"event_id": "evt_short"}, "pattern"),
                        ({"status": "duplicate"}, "const"),
                        ({"effects": [{"type": "tier", "from": "a", "to": "b", "rule": "r", "cause": "c"}]},
                         "undocumented member inside oneOf"),
                        ({"effects": [{"type": "bonus"}]}, "no oneOf branch")):
        bad = dict(accepted, **change)
        check(v.validate(bad, ref, strict=True), "the validator accepted (%s) %r" % (why, bad))
    missing = dict(accepted)
    del missing["tier"]
    check(v.validate(missing, ref, strict=True), "the validator accepted a missing member")
    err = {"$ref": "#/components/responses/Conflict"}
    sc = v.deref(err)["content"]["application/json"]["schema"]
    check(v.validate({"status": "error", "error_code": "conflict", "message": "m"}, sc, True),
          "a conflict without original_event_id passed the allOf schema")
    check(v.validate({"status": "error", "error_code": "forbidden", "message": "m",
                      "original_event_id": "evt_" + "a" * 22}, sc, True),
          "a forbidden error passed as a conflict")
    check(v.validate({"status": "error", "error_code": "conflict", "message": "m", "x": 1,
                      "original_event_id": "evt_" + "a" * 22}, sc, True),
          "an undocumented member passed an allOf schema")


def _first_difference(a, b, path="$"):
    if type(a) is not type(b):
        return "%s: %r vs %r" % (path, a, b)
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return "%s.%s only on one side" % (path, k)
            d = _first_difference(a[k], b[k], "%s.%s" % (path, k))
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return "%s: %d vs %d items" % (path, len(a), len(b))
        for i, (x, y) in enumerate(zip(a, b)):
            d = _first_difference(x, y, "%s[%d]" % (path, i))
            if d:
                return d
        return None
    return None if a == b else "%s: %r vs %r" % (path, a, b)


def test_spec_is_structurally_openapi_31():
    doc, v = spec()
    p = []
    if not (isinstance(doc.get("openapi"), str) and re.match(r"^3\.1\.\d+$", doc["openapi"])):
        p.append("openapi must be a 3.1.x version string, got %r" % doc.get("openapi"))
    info = doc.get("info") or {}
    for k in ("title", "version"):
        if not isinstance(info.get(k), str) or not info[k]:
            p.append("info.%s must be a non-empty string" % k)
    allowed_top = {"openapi", "info", "jsonSchemaDialect", "servers", "paths", "webhooks",
                   "components", "security", "tags", "externalDocs"}
    for k in doc:
        if k not in allowed_top and not k.startswith("x-"):
            p.append("unknown top-level field %r" % k)
    comps = doc.get("components") or {}
    known_comp = {"schemas", "responses", "parameters", "examples", "requestBodies",
                  "headers", "securitySchemes", "links", "callbacks", "pathItems"}
    for sect, entries in comps.items():
        if sect not in known_comp:
            p.append("unknown components section %r" % sect)
            continue
        for name in entries:
            if not re.match(r"^[a-zA-Z0-9._-]+$", name):
                p.append("components.%s: bad name %r" % (sect, name))
    schemes = comps.get("securitySchemes") or {}
    for name, s in schemes.items():
        if s.get("type") == "http" and not s.get("scheme"):
            p.append("securitySchemes.%s: http without scheme" % name)
    check(schemes.get("bearerAuth", {}).get("type") == "http" and
          schemes["bearerAuth"].get("scheme") == "bearer",
          "components.securitySchemes.bearerAuth must be http bearer")

    def check_security(reqs, where):
        if not isinstance(reqs, list):
            p.append("%s: security must be a list" % where)
            return
        for req in reqs:
            for name, scopes in req.items():
                if name not in schemes:
                    p.append("%s: unknown security scheme %r" % (where, name))
                for s in scopes:
                    if s not in SCOPES:
                        p.append("%s: unknown scope %r" % (where, s))

    check_security(doc.get("security", []), "security")
    tags = {t["name"] for t in doc.get("tags", [])}
    op_ids = set()
    if not doc.get("paths"):
        p.append("no paths")
    for path, item in (doc.get("paths") or {}).items():
        if not path.startswith("/"):
            p.append("path %r must start with /" % path)
        templ = set(re.findall(r"\{([^}]+)\}", path))
        path_params = [v.deref(x) for x in item.get("parameters", [])]
        ops = [(m, item[m]) for m in METHODS if m in item]
        if not ops:
            p.append("%s: no operation" % path)
        for k in item:
            if k not in METHODS and k not in ("parameters", "summary", "description",
                                              "servers", "$ref") and not k.startswith("x-"):
                p.append("%s: unknown path item field %r" % (path, k))
        for m, op in ops:
            where = "%s %s" % (m.upper(), path)
            oid = op.get("operationId")
            if not oid or oid in op_ids:
                p.append("%s: operationId missing or repeated: %r" % (where, oid))
            op_ids.add(oid)
            for t in op.get("tags", []):
                if t not in tags:
                    p.append("%s: tag %r not declared" % (where, t))
            if "security" in op:
                check_security(op["security"], where)
            params = path_params + [v.deref(x) for x in op.get("parameters", [])]
            seen = set()
            for prm in params:
                for k in ("name", "in"):
                    if k not in prm:
                        p.append("%s: parameter without %s: %r" % (where, k, prm))
                if prm.get("in") not in ("query", "header", "path", "cookie"):
                    p.append("%s: parameter %r: bad in %r" % (where, prm.get("name"), prm.get("in")))
                if ("schema" in prm) == ("content" in prm):
                    p.append("%s: parameter %r needs schema or content" % (where, prm.get("name")))
                if prm.get("in") == "path" and prm.get("required") is not True:
                    p.append("%s: path parameter %r must be required" % (where, prm.get("name")))
                ident = (prm.get("name"), prm.get("in"))
                if ident in seen:
                    p.append("%s: parameter %r twice" % (where, ident))
                seen.add(ident)
            declared = {n for n, i in seen if i == "path"}
            if declared != templ:
                p.append("%s: path parameters %s vs template %s" % (
                    where, sorted(declared), sorted(templ)))
            if "requestBody" in op:
                rb = v.deref(op["requestBody"])
                if not rb.get("content"):
                    p.append("%s: requestBody without content" % where)
            resps = op.get("responses")
            if not resps:
                p.append("%s: no responses" % where)
                continue
            for code, resp in resps.items():
                if not re.match(r"^([1-5](\d\d|XX)|default)$", code):
                    p.append("%s: bad response key %r" % (where, code))
                resp = v.deref(resp)
                if not isinstance(resp.get("description"), str):
                    p.append("%s %s: response without description" % (where, code))
                for hname, h in (resp.get("headers") or {}).items():
                    if hname.lower() == "content-type":
                        p.append("%s %s: Content-Type must not be a header entry" % (where, code))
                    h = v.deref(h)
                    if ("schema" in h) == ("content" in h):
                        p.append("%s %s: header %s needs schema or content" % (where, code, hname))
                for mt, media in (resp.get("content") or {}).items():
                    if "schema" not in media:
                        p.append("%s %s %s: no schema" % (where, code, mt))
                    if "example" in media and "examples" in media:
                        p.append("%s %s %s: example and examples" % (where, code, mt))
    summarise(p, len(doc.get("paths") or {}), "structural problems in docs/openapi.yaml")


_EXAMPLE_PATH = re.compile(r"\.examples\.[^.\[]+\.value(\.|\[|$)|\.example(\.|\[|$)|\.examples\[")


def _in_example(path):
    """Whether a _walk() path lies inside an example value (data, not spec)."""
    return _EXAMPLE_PATH.search(path) is not None


def _walk(node, path="$"):
    yield path, node
    if isinstance(node, dict):
        for k, x in node.items():
            yield from _walk(x, "%s.%s" % (path, k))
    elif isinstance(node, list):
        for i, x in enumerate(node):
            yield from _walk(x, "%s[%d]" % (path, i))


def test_spec_refs_resolve_and_components_are_used():
    doc, v = spec()
    p, used, n = [], set(), 0
    for path, node in _walk(doc):
        if isinstance(node, dict) and "$ref" in node and not _in_example(path):
            n += 1
            ref = node["$ref"]
            try:
                v.resolve(ref)
            except KeyError as e:
                p.append("%s: %s" % (path, e))
            used.add(ref)
    for sect, entries in (doc.get("components") or {}).items():
        if sect == "securitySchemes":
            continue
        for name in entries:
            if "#/components/%s/%s" % (sect, name) not in used:
                p.append("components.%s.%s is never referenced" % (sect, name))
    check(n > 0, "no $ref at all in the spec?")
    summarise(p, n, "references")


def test_spec_schemas_use_only_checked_keywords():
    """Every schema keyword is one schema.Validator understands (so no constraint is
    silently ignored), types are JSON Schema types, and no OpenAPI 3.0-isms."""
    doc, v = spec()
    roots = []
    for path, node in _walk(doc):
        if not isinstance(node, dict) or _in_example(path):
            continue
        for k in ("schema",):
            if isinstance(node.get(k), dict):
                roots.append(("%s.%s" % (path, k), node[k]))
    for name, s in doc["components"]["schemas"].items():
        roots.append(("components.schemas." + name, s))
    p, seen = [], 0
    for where, root in roots:
        for s in sch.schema_objects(root, v):
            seen += 1
            bad = set(s) - sch.KEYWORDS
            if bad:
                p.append("%s: unsupported keyword(s) %s in %s" % (where, sorted(bad), sorted(s)))
            t = s.get("type")
            for x in (t if isinstance(t, list) else [t] if t else []):
                if x not in sch._TYPES:
                    p.append("%s: unknown type %r" % (where, x))
            if "$ref" in s:
                extra = set(s) - {"$ref", "description", "title", "$comment"}
                if extra:
                    p.append("%s: $ref with sibling constraints %s" % (where, sorted(extra)))
            if "pattern" in s:
                try:
                    re.compile(s["pattern"])
                except re.error as e:
                    p.append("%s: bad pattern %r: %s" % (where, s["pattern"], e))
            for k in ("required", "enum"):
                if k in s and (not isinstance(s[k], list) or not s[k]):
                    p.append("%s: %s must be a non-empty list" % (where, k))
            for r in s.get("required", []):
                # (a part of an allOf may require what another part declares)
                if s.get("type") == "object" and r not in s.get("properties", {}):
                    p.append("%s: required %r is not a property" % (where, r))
    check(seen > 0, "no schemas found")
    summarise(p, seen, "schema objects")


def test_spec_examples_match_their_schemas():
    doc, v = spec()
    p, n = [], 0

    def one(value, schema, where):
        nonlocal n
        n += 1
        for e in v.validate(value, schema, strict=True):
            p.append("%s: %s" % (where, e))

    for path, node in _walk(doc):
        if not isinstance(node, dict) or _in_example(path):
            continue
        if "schema" in node and isinstance(node["schema"], dict):
            sc = node["schema"]
            if "example" in node:
                one(node["example"], sc, path + ".example")
            for name, ex in (node.get("examples") or {}).items():
                ex = v.deref(ex)
                if "value" not in ex:
                    p.append("%s.examples.%s: no value" % (path, name))
                    continue
                one(ex["value"], sc, "%s.examples.%s" % (path, name))
    for name, s in doc["components"]["schemas"].items():
        for sub in sch.schema_objects(s, v):
            for i, ex in enumerate(sub.get("examples", [])):
                one(ex, sub, "components.schemas.%s examples[%d]" % (name, i))
    check(n >= 20, "only %d examples found" % n)
    summarise(p, n, "examples")


# ---------------------------------------------------------------- the live service

def test_request_examples_pass_a_dry_run():
    """The spec's request examples are valid requests (sent with ?dry_run=true, so
    nothing is written; tests/conf/acme registers the example's event types)."""
    doc, v = spec()
    p, n = [], 0
    for path, item in doc["paths"].items():
        op = item.get("post")
        if not op or "requestBody" not in op:
            continue
        media = v.deref(op["requestBody"])["content"]["application/json"]
        for name, ex in media.get("examples", {}).items():
            n += 1
            body = v.deref(ex)["value"]
            r = call("POST", path + "?dry_run=true", body, key=writer())
            b = expect(r, 200, path, "POST", p, what="example %s, dry run" % name)
            for res in b.get("results", [b]):
                if res.get("status") != "dry_run":
                    p.append("example %s: not a dry run result: %s" % (name, r.describe(500)))
    check(n >= 3, "only %d request examples" % n)
    done(p, n, "request examples")


def test_health_conforms():
    p = []
    expect(call("GET", "/v1/health"), 200, "/v1/health", "GET", p)
    expect(call("GET", "/v1/health", key="not-a-key"), 200, "/v1/health", "GET", p,
           what="a bad key does not matter")
    r = call("POST", "/v1/health", key=admin())
    expect(r, 405, "/v1/health", "POST", p, code="method_not_allowed")
    done(p, 3, "health answers")


def test_ingest_accepted_duplicate_conflict_conform():
    p = []
    k = writer()
    ev = purchase(occurredAt="2025-03-01T10:15:00+01:00")
    r = call("POST", EVENTS, ev, key=k)
    b = expect(r, 201, EVENTS, "POST", p)
    if b.get("event_id") and r.headers.get("location") != EVENTS + "/" + b["event_id"]:
        p.append("Location %r does not name event %s" % (r.headers.get("location"), b["event_id"]))
    r = call("POST", EVENTS, ev, key=k)
    d = expect(r, 200, EVENTS, "POST", p, what="duplicate")
    if d.get("status") != "duplicate":
        p.append("expected a duplicate: " + r.describe(300))
    clash = dict(ev, properties=dict(ev["properties"], amount=99))
    r = call("POST", EVENTS, clash, key=k)
    c = expect(r, 409, EVENTS, "POST", p, code="conflict")
    if b.get("event_id") and c.get("original_event_id") != b["event_id"]:
        p.append("conflict names %r, not %s" % (c.get("original_event_id"), b.get("event_id")))
    # a second event for the same person: an existing profile
    ev2 = purchase(identity=ev["identity"])
    b2 = expect(call("POST", EVENTS, ev2, key=k), 201, EVENTS, "POST", p, what="known profile")
    if b2.get("profile_created") is not False:
        p.append("second event created a profile: %r" % b2)
    done(p, 4, "ingest answers")


def test_ingest_dry_run_conforms():
    p = []
    k = writer()
    r = call("POST", EVENTS + "?dry_run=true", purchase(), key=k)
    b = expect(r, 200, EVENTS, "POST", p, what="dry run, new profile")
    if b.get("status") != "dry_run" or b.get("profile_id") is not None:
        p.append("dry run for a new identity: expected dry_run with profile_id null: "
                 + r.describe(400))
    known = writer()
    ev = purchase()
    a = expect(call("POST", EVENTS, ev, key=known), 201, EVENTS, "POST", p)
    r = call("POST", EVENTS + "?dry_run=1", purchase(identity=ev["identity"]), key=k)
    b = expect(r, 200, EVENTS, "POST", p, what="dry run, known profile")
    if a.get("profile_id") and b.get("profile_id") != a["profile_id"]:
        p.append("dry run for a known identity: profile_id %r, expected %s" % (
            b.get("profile_id"), a["profile_id"]))
    r = call("POST", EVENTS + "?dry_run=false", purchase(), key=k)
    expect(r, 201, EVENTS, "POST", p, what="dry_run=false")
    r = call("POST", EVENTS + "?dry_run=maybe", purchase(), key=k)
    expect(r, 422, EVENTS, "POST", p, code="validation_failed", what="dry_run=maybe")
    done(p, 4, "dry run answers")


def test_ingest_identity_conflicts_conform():
    """An identity bound to another profile is listed in identity_conflicts, in the
    201 answer and in the stored outcome."""
    p = []
    k = writer()
    email = uid("ic") + "@x.example"
    first = expect(call("POST", EVENTS, event(identity={"externalUserId": uid("u"),
                                                        "email": email}), key=k),
                   201, EVENTS, "POST", p, what="first owner of the email")
    r = call("POST", EVENTS, event(identity={"externalUserId": uid("u"), "email": email}), key=k)
    b = expect(r, 201, EVENTS, "POST", p, what="another person with the same email")
    ic = b.get("identity_conflicts") or []
    if not (len(ic) == 1 and ic[0].get("type") == "EMAIL" and
            ic[0].get("bound_to_profile_id") == first.get("profile_id")):
        p.append("expected one EMAIL conflict bound to %s: %s" % (
            first.get("profile_id"), r.describe(600)))
    if b.get("event_id"):
        r = call("GET", EVENTS + "/" + b["event_id"], key=reader())
        e = expect(r, 200, EVENTS + "/{event_id}", "GET", p)
        if (e.get("outcome") or {}).get("identity_conflicts") != ic:
            p.append("stored outcome's identity_conflicts differ from the answer's: "
                     + r.describe(900))
    done(p, 3, "identity conflict answers")


def test_ingest_errors_conform():
    """400, 401, 403 (scope and source), 404 identity_not_found, 413, 415 and the
    422s of one event."""
    p = []
    k = writer()
    cases = [
        ("400 syntax", b"{nope", k, {}, 400, "malformed_json"),
        ("400 not an object", b"[1]", k, {}, 400, "malformed_json"),
        ("400 not UTF-8", b'{"source":"\xff"}', k, {}, 400, "malformed_json"),
        ("401 no key", purchase(), None, {}, 401, "unauthorized"),
        ("401 unknown key", purchase(), "rfe_" + uid("k").replace("-", ""), {}, 401,
         "unauthorized"),
        ("401 not bearer", purchase(), None, {"Authorization": "Basic dXNlcjpwdw=="}, 401,
         "unauthorized"),
        ("403 scope", purchase(), reader(), {}, 403, "forbidden"),
        ("403 source", purchase(source="other.src"), key("acme", "events:write", "it.test"),
         {}, 403, "forbidden"),
        ("404 identity", event(identity={"email": uid("n") + "@x.example"}),
         writer("closed"), {}, 404, "identity_not_found"),
        ("413", dict(purchase(), properties={"order_id": "x" * 70000, "amount": 1,
                                             "currency": "USD"}), k, {}, 413,
         "payload_too_large"),
        ("415 text/plain", purchase(), k, {"Content-Type": "text/plain"}, 415,
         "unsupported_media_type"),
        ("415 latin-1", purchase(), k, {"Content-Type": "application/json; charset=latin1"},
         415, "unsupported_media_type"),
        ("422 missing field", {k2: v for k2, v in purchase().items() if k2 != "source"}, k,
         {}, 422, "validation_failed"),
        ("422 property", purchase(properties={"order_id": "o", "amount": -1,
                                              "currency": "USD"}), k, {}, 422,
         "validation_failed"),
        ("422 unknown member", dict(purchase(), extra=1), k, {}, 422, "validation_failed"),
        ("422 phone", purchase(identity={"phone": "12"}), k, {}, 422, "invalid_identity"),
        ("422 email", purchase(identity={"email": "no-at-sign"}), k, {}, 422,
         "invalid_identity"),
        ("422 event type", purchase(eventType="no_such_type"), k, {}, 422,
         "unknown_event_type"),
    ]
    for label, body, kk, hdrs, status, code in cases:
        r = call("POST", EVENTS, body, key=kk, headers=hdrs)
        expect(r, status, EVENTS, "POST", p, code=code, what=label)
    done(p, len(cases), "error answers of POST /v1/cdp/events")


def test_batch_conforms():
    p = []
    k = writer()
    dup = purchase()
    expect(call("POST", EVENTS, dup, key=k), 201, EVENTS, "POST", p)
    clash = dict(dup, properties=dict(dup["properties"], amount=3))
    twice = purchase()
    items = [purchase(), dup, clash, purchase(properties={}), 7,
             purchase(source="elsewhere"), twice, twice, purchase(eventType="nope"),
             purchase(identity={"phone": "1"})]
    want = ["accepted", "duplicate", "conflict", "validation_failed", "malformed_json",
            "accepted", "accepted", "duplicate", "unknown_event_type", "invalid_identity"]
    r = call("POST", BATCH, {"items": items}, key=k)
    b = expect(r, 200, BATCH, "POST", p, what="mixed batch")
    res = b.get("results") or []
    got = [x.get("status") if x.get("status") != "error" else x.get("error_code")
           for x in res if isinstance(x, dict)]
    if got != want:
        p.append("batch results %s, expected %s" % (got, want))
    counts = {"accepted": got.count("accepted"), "duplicates": got.count("duplicate"),
              "errors": len(got) - got.count("accepted") - got.count("duplicate")}
    for name, n in counts.items():
        if b.get(name) != n:
            p.append("batch %s is %r, the results say %d" % (name, b.get(name), n))
    # a source outside the key's allow-list is a per-item forbidden
    ks = key("acme", "events:write", "it.test")
    r = call("POST", BATCH, {"items": [purchase(), purchase(source="other.src")]}, key=ks)
    b = expect(r, 200, BATCH, "POST", p, what="allow-list")
    got = [x.get("error_code", x.get("status")) for x in b.get("results", [])]
    if got != ["accepted", "forbidden"]:
        p.append("allow-list batch: %s, expected accepted, forbidden" % got)
    r = call("POST", BATCH + "?dry_run=true", {"items": [purchase(), event()]}, key=k)
    b = expect(r, 200, BATCH, "POST", p, what="dry run")
    if [x.get("status") for x in b.get("results", [])] != ["dry_run", "dry_run"]:
        p.append("dry-run batch: " + r.describe(600))
    tiny = {"source": "s", "externalEventId": "x", "eventType": "signup",
            "identity": {"deviceKey": "d"}}
    cases = [
        ("422 too many items", {"items": [tiny] * 1001}, k, {}, 422, "batch_too_large"),
        ("422 empty", {"items": []}, k, {}, 422, "validation_failed"),
        ("422 items not a list", {"items": {}}, k, {}, 422, "validation_failed"),
        ("422 unknown member", {"items": [purchase()], "more": 1}, k, {}, 422,
         "validation_failed"),
        ("400 syntax", b'{"items": [', k, {}, 400, "malformed_json"),
        ("400 not an object", b'[]', k, {}, 400, "malformed_json"),
        ("401", {"items": [purchase()]}, None, {}, 401, "unauthorized"),
        ("403", {"items": [purchase()]}, profiles_reader(), {}, 403, "forbidden"),
        ("415", {"items": [purchase()]}, k, {"Content-Type": "application/xml"}, 415,
         "unsupported_media_type"),
    ]
    for label, body, kk, hdrs, status, code in cases:
        r = call("POST", BATCH, body, key=kk, headers=hdrs)
        expect(r, status, BATCH, "POST", p, code=code, what=label)
    done(p, len(cases) + 3, "batch answers")


def test_event_lookup_conforms():
    p = []
    ev = purchase()
    a = expect(call("POST", EVENTS, ev, key=writer()), 201, EVENTS, "POST", p)
    t = EVENTS + "/{event_id}"
    if a.get("event_id"):
        e = expect(call("GET", EVENTS + "/" + a["event_id"], key=reader()), 200, t, "GET", p)
        if e.get("externalEventId") != ev["externalEventId"]:
            p.append("GET event answered another event: %r" % e)
        expect(call("GET", EVENTS + "/" + a["event_id"], key=reader("globex")), 404, t, "GET",
               p, code="not_found", what="another tenant's event")
        expect(call("GET", EVENTS + "/" + a["event_id"], key=profiles_reader()), 403, t, "GET",
               p, code="forbidden")
        expect(call("GET", EVENTS + "/" + a["event_id"]), 401, t, "GET", p,
               code="unauthorized")
    expect(call("GET", EVENTS + "/evt_" + "0" * 22, key=reader()), 404, t, "GET", p,
           code="not_found", what="unknown id")
    expect(call("GET", EVENTS + "/not-an-id", key=reader()), 404, t, "GET", p,
           code="not_found", what="malformed id")
    done(p, 6, "event look-ups")


def test_event_types_conform():
    p = []
    t = "/v1/cdp/event-types"
    b = expect(call("GET", t, key=writer()), 200, t, "GET", p)
    names = [x.get("name") for x in b.get("event_types", [])]
    if "purchase_completed" not in names or b.get("tenant") != "acme":
        p.append("acme registry: tenant %r, types %r" % (b.get("tenant"), names))
    expect(call("GET", t, key=admin("globex")), 200, t, "GET", p, what="admin key")
    expect(call("GET", t, key=reader()), 403, t, "GET", p, code="forbidden")
    expect(call("GET", t), 401, t, "GET", p, code="unauthorized")
    done(p, 4, "registry answers")


def test_profile_reads_conform():
    p = []
    k, pr = writer(), profiles_reader()
    ident = {"externalUserId": uid("u"), "email": uid("m") + "@x.example",
             "phone": "+1" + phone_digits(), "deviceKey": uid("d")}
    first = expect(call("POST", EVENTS, purchase(identity=ident,
                                                 occurredAt="2025-01-01T00:00:00Z"),
                        key=k), 201, EVENTS, "POST", p)
    for i in range(2):
        expect(call("POST", EVENTS, purchase(identity={"externalUserId": ident["externalUserId"]},
                                             occurredAt="2025-01-0%dT00:00:00Z" % (i + 2)),
                    key=k), 201, EVENTS, "POST", p)
    pid = first.get("profile_id") or "prf_" + "0" * 22
    find = "/v1/cdp/profiles"
    for name, value in ident.items():
        b = expect(call("GET", _ident_path(name, value), key=pr), 200, find, "GET", p, what=name)
        if b.get("profile_id") != pid:
            p.append("?%s= found %r, expected %s" % (name, b.get("profile_id"), pid))
    expect(call("GET", _ident_path("email", uid("none") + "@x.example"), key=pr), 404, find,
           "GET", p, code="not_found")
    expect(call("GET", find, key=pr), 422, find, "GET", p, code="validation_failed",
           what="no identity")
    expect(call("GET", _ident_path("phone", "12"), key=pr), 422, find, "GET", p,
           code="invalid_identity")
    expect(call("GET", find + "?email=%zz", key=pr), 422, find, "GET", p,
           code="invalid_identity", what="bad percent-encoding")
    expect(call("GET", _ident_path("email", ident["email"]), key=reader()), 403, find, "GET",
           p, code="forbidden")

    one = "/v1/cdp/profiles/{profile_id}"
    b = expect(call("GET", "/v1/cdp/profiles/" + pid, key=pr), 200, one, "GET", p)
    if (b.get("balances") or {}).get("points", {}).get("balance") != 36:
        p.append("three purchases of 12.5 (floor) should make 36 points: %r" % b)
    expect(call("GET", "/v1/cdp/profiles/prf_" + "0" * 22, key=pr), 404, one, "GET", p,
           code="not_found")
    expect(call("GET", "/v1/cdp/profiles/" + pid, key=profiles_reader("globex")), 404, one,
           "GET", p, code="not_found", what="another tenant's profile")
    expect(call("GET", "/v1/cdp/profiles/" + pid), 401, one, "GET", p, code="unauthorized")

    for leaf, items in (("events", "events"), ("ledger", "entries")):
        t = one + "/" + leaf
        base = "/v1/cdp/profiles/%s/%s" % (pid, leaf)
        b = expect(call("GET", base + "?limit=2", key=pr), 200, t, "GET", p, what="page 1")
        cur = b.get("next_cursor")
        if len(b.get(items, [])) != 2 or not isinstance(cur, str):
            p.append("%s?limit=2: expected 2 %s and a cursor: %r" % (leaf, items, b))
            cur = ""
        b = expect(call("GET", base + "?limit=2&cursor=" + urllib.parse.quote(cur), key=pr),
                   200, t, "GET", p, what="page 2")
        if len(b.get(items, [])) != 1 or b.get("next_cursor", "") is not None:
            p.append("%s page 2: expected 1 %s and next_cursor null: %r" % (leaf, items, b))
        expect(call("GET", base + "?limit=0", key=pr), 422, t, "GET", p,
               code="validation_failed", what="limit=0")
        expect(call("GET", base + "?limit=201", key=pr), 422, t, "GET", p,
               code="validation_failed", what="limit=201")
        expect(call("GET", base + "?cursor=nonsense!", key=pr), 422, t, "GET", p,
               code="validation_failed", what="bad cursor")
        expect(call("GET", "/v1/cdp/profiles/prf_%s/%s" % ("0" * 22, leaf), key=pr), 404, t,
               "GET", p, code="not_found")
        expect(call("GET", base, key=reader()), 403, t, "GET", p, code="forbidden")
    done(p, 30, "profile answers")


def test_rules_effects_conform():
    """Balance, variable and tier effects, skipped rules and their reasons, in the
    answers and in the stored outcome (tenant "rules" sets variables on signup)."""
    p = []
    k = writer("rules")
    person = {"externalUserId": uid("u")}
    a = expect(call("POST", EVENTS, event("signup", identity=person), key=k), 201, EVENTS,
               "POST", p, what="welcome")
    kinds = sorted({e.get("type") for e in a.get("effects", [])})
    if kinds != ["balance", "variable"]:
        p.append("welcome: expected balance and variable effects: %r" % a)
    r = call("POST", EVENTS + "?dry_run=true", event("signup", identity=person), key=k)
    d = expect(r, 200, EVENTS, "POST", p, what="welcome again, dry run")
    if not d.get("rules_skipped"):
        p.append("a second welcome should be skipped (limit per_profile): " + r.describe(500))
    b = expect(call("POST", EVENTS, event("signup", identity=person), key=k), 201, EVENTS,
               "POST", p, what="welcome again")
    if b.get("event_id"):
        e = expect(call("GET", EVENTS + "/" + b["event_id"], key=admin("rules")), 200,
                   EVENTS + "/{event_id}", "GET", p)
        if not (e.get("outcome") or {}).get("rules_skipped"):
            p.append("stored outcome without the skipped rule: %r" % e)
    # a purchase of 1000 crosses the silver threshold of acme: a tier effect
    t = expect(call("POST", EVENTS, purchase(properties={"order_id": uid("o"), "amount": 1000,
                                                         "currency": "USD"}),
                    key=writer()), 201, EVENTS, "POST", p, what="tier change")
    if not any(e.get("type") == "tier" for e in t.get("effects", [])):
        p.append("1000 points should move the profile to silver: %r" % t)
    pid = a.get("profile_id")
    if pid:
        pr = expect(call("GET", "/v1/cdp/profiles/" + pid, key=admin("rules")), 200,
                    "/v1/cdp/profiles/{profile_id}", "GET", p)
        if (pr.get("variables") or {}).get("welcome_eligible") is not True:
            p.append("welcome_eligible should be true: %r" % pr)
    done(p, 6, "rule outcome answers")


def test_metrics_conforms():
    p = []
    r = call("GET", "/metrics", key=admin())
    expect(r, 200, "/metrics", "GET", p)
    if r.status == 200 and b"rfevents_" not in r.raw:
        p.append("/metrics has no rfevents_ series: " + r.describe(300))
    expect(call("GET", "/metrics", key=writer()), 403, "/metrics", "GET", p, code="forbidden")
    expect(call("GET", "/metrics"), 401, "/metrics", "GET", p, code="unauthorized")
    done(p, 3, "metrics answers")


def test_routing_conforms():
    """An unknown route is the documented NotFound; every documented path answers an
    undocumented method with 405 and an Allow header naming exactly the methods the
    spec documents for it (GET implying HEAD)."""
    doc, v = spec()
    p = []
    r = call("GET", "/v1/no-such-route", key=admin())
    if r.status != 404:
        p.append("unknown route: expected 404: " + r.describe(300))
    else:
        check_response(r, v.deref({"$ref": "#/components/responses/NotFound"}),
                       "GET /v1/no-such-route", p)
    concrete = {"{event_id}": "evt_" + "0" * 22, "{profile_id}": "prf_" + "0" * 22}
    for template, item in doc["paths"].items():
        path = template
        for a, b in concrete.items():
            path = path.replace(a, b)
        documented = set()
        for t in templates_for(path):
            documented |= {m.upper() for m in METHODS if m in doc["paths"][t]}
        if "GET" in documented:
            documented.add("HEAD")
        for m in ("PUT", "DELETE", "PATCH", "POST", "GET"):
            if m in documented:
                continue
            r = call(m, path, key=admin())
            expect(r, 405, template, m, p, code="method_not_allowed")
            allow = {x.strip() for x in r.headers.get("allow", "").split(",") if x.strip()}
            if r.status == 405 and allow != documented:
                p.append("%s %s: Allow %s, the spec documents %s" % (
                    m, path, sorted(allow), sorted(documented)))
    done(p, len(doc["paths"]), "routing answers")


def test_security_requirements_match_scopes():
    """The scope each operation documents is enough, and any other non-admin scope is
    refused with 403; operations documented without security need no key."""
    doc, v = spec()
    p, n = [], 0
    ev = purchase()
    a = expect(call("POST", EVENTS, ev, key=writer()), 201, EVENTS, "POST", p)
    eid = a.get("event_id", "evt_" + "0" * 22)
    pid = a.get("profile_id", "prf_" + "0" * 22)
    sample = {
        "ingestEvent": ("POST", EVENTS + "?dry_run=true", purchase()),
        "ingestBatch": ("POST", BATCH + "?dry_run=true", {"items": [purchase()]}),
        "getEvent": ("GET", EVENTS + "/" + eid, None),
        "getEventTypes": ("GET", "/v1/cdp/event-types", None),
        "findProfile": ("GET", _ident_path("externalUserId", ev["identity"]["externalUserId"]),
                        None),
        "getProfile": ("GET", "/v1/cdp/profiles/" + pid, None),
        "getProfileEvents": ("GET", "/v1/cdp/profiles/%s/events" % pid, None),
        "getProfileLedger": ("GET", "/v1/cdp/profiles/%s/ledger" % pid, None),
        "getMetrics": ("GET", "/metrics", None),
        "getHealth": ("GET", "/v1/health", None),
    }
    top = doc.get("security", [])
    for template, item in doc["paths"].items():
        for m in METHODS:
            if m not in item:
                continue
            op = item[m]
            oid = op["operationId"]
            if oid not in sample:
                p.append("%s: no sample request in this test; add one" % oid)
                continue
            method, path, body = sample[oid]
            reqs = op.get("security", top)
            if not reqs:
                n += 1
                r = call(method, path, body)
                if r.status in (401, 403):
                    p.append("%s needs no key per the spec: %s" % (oid, r.describe(300)))
                conform(r, template, method, p, "no key")
                continue
            scopes = {s for req in reqs for ss in req.values() for s in ss}
            for s in SCOPES:
                n += 1
                r = call(method, path, body, key=key("acme", s))
                conform(r, template, method, p, "scope " + s)
                allowed = s in scopes or s == "admin"
                if allowed and r.status in (401, 403):
                    p.append("%s: scope %s is documented as enough: %s" % (
                        oid, s, r.describe(300)))
                if not allowed and r.status != 403:
                    p.append("%s: scope %s is not documented, expected 403: %s" % (
                        oid, s, r.describe(300)))
    done(p, n, "scope checks")


def test_zz_every_operation_answered_success():
    """Every documented operation was seen answering its success status above."""
    doc, _ = spec()
    missing = []
    for template, item in doc["paths"].items():
        for m in METHODS:
            if m not in item:
                continue
            ok = [int(c) for c in item[m]["responses"] if c.isdigit() and c.startswith("2")]
            if not any((template, m.upper(), c) in SEEN for c in ok):
                missing.append("%s %s (%s)" % (m.upper(), template, ok))
    check(not missing, "operations never seen answering success: %s" % ", ".join(missing))
