"""Helpers for the black-box integration tests (API.md is the spec).

Python 3 standard library only. Environment (set by tests/run.sh):
  BASE_URL          http://127.0.0.1:PORT of the running service
  RFEVENTS_BIN      the operator CLI (keys are made with it)
  RFEVENTS_DB, RFEVENTS_CONF, RFEVENTS_VAR  passed through to the CLI
  RFEVENTS_TESTDATA the shared testdata folder (JSONTestSuite, naughty strings)

Every test makes its own ids (uid()) so the suite can run again and again against
the same database.
"""
import concurrent.futures
import datetime
import decimal
import http.client
import json
import os
import random
import subprocess
import threading
import urllib.parse
import uuid

BASE_URL = os.environ.get("BASE_URL", "http://127.0.0.1:8080")
_url = urllib.parse.urlsplit(BASE_URL)
HOST = _url.hostname or "127.0.0.1"
PORT = _url.port or 80
PREFIX = _url.path.rstrip("/")          # normally empty
RFEVENTS_BIN = os.environ.get("RFEVENTS_BIN", "bin/rfevents")
TESTDATA = os.environ.get("RFEVENTS_TESTDATA", "/work/shared/testdata")

EVENTS = "/v1/cdp/events"
BATCH = "/v1/cdp/events/batch"
SOURCE = "it.test"
TIMEOUT = 60

_DEFAULT = object()


# ---------------------------------------------------------------- HTTP

class Response:
    """One HTTP answer. Unpacks as (status, headers, body): headers is a dict with
    lower-case names (repeated headers joined by ", "), body the parsed JSON when
    the body parses as JSON, else the raw bytes. .raw has the bytes always."""

    def __init__(self, method, path, status, headers, raw):
        self.method, self.path = method, path
        self.status, self.headers, self.raw = status, headers, raw
        try:
            self.body = json.loads(raw.decode("utf-8"))
            self.is_json = True
        except (ValueError, UnicodeDecodeError):
            self.body = raw
            self.is_json = False

    def __iter__(self):
        return iter((self.status, self.headers, self.body))

    def json(self):
        return self.body if self.is_json else None

    def describe(self, limit=700):
        text = self.raw[:limit].decode("utf-8", "replace")
        if len(self.raw) > limit:
            text += "...(%d bytes)" % len(self.raw)
        return "%s %s -> %s %s" % (self.method, _short(self.path), self.status, text)


def _short(s, n=120):
    return s if len(s) <= n else s[:n] + "..."


def request(method, path, body=None, headers=None, key=None,
            content_type=_DEFAULT, timeout=TIMEOUT):
    """Send one request to the service; returns a Response.

    body: None, bytes (sent as is) or any JSON value (dumped as UTF-8 JSON).
    key: the API key for `Authorization: Bearer KEY` (None: no header).
    content_type: default application/json when a body is given; None sends no
    Content-Type header at all."""
    hdrs = {}
    if body is not None and not isinstance(body, (bytes, bytearray)):
        body = json.dumps(body, ensure_ascii=False).encode("utf-8")
    if content_type is _DEFAULT:
        content_type = "application/json" if body is not None else None
    if content_type is not None:
        hdrs["Content-Type"] = content_type
    if key is not None:
        hdrs["Authorization"] = "Bearer " + key
    for k, v in (headers or {}).items():
        # a None value removes a header set above
        for existing in list(hdrs):
            if existing.lower() == k.lower():
                del hdrs[existing]
        if v is not None:
            hdrs[k] = v
    if body is None and method in ("POST", "PUT", "PATCH"):
        hdrs.setdefault("Content-Length", "0")
    conn = http.client.HTTPConnection(HOST, PORT, timeout=timeout)
    try:
        try:
            conn.request(method, PREFIX + path, body=body, headers=hdrs)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer (413) before reading the whole body
        try:
            resp = conn.getresponse()
        except AttributeError as e:
            # http.client after a failed send on a closed connection
            raise ConnectionResetError("connection closed: %s" % e)
        raw = resp.read()
        h = {}
        for name, value in resp.getheaders():
            name = name.lower()
            h[name] = h[name] + ", " + value if name in h else value
        return Response(method, path, resp.status, h, raw)
    finally:
        conn.close()


def post(ev, key, path=EVENTS, **kw):
    return request("POST", path, ev, key=key, **kw)


def get(path, key=None, **kw):
    return request("GET", path, key=key, **kw)


def get_event(event_id, key):
    return get(EVENTS + "/" + urllib.parse.quote(event_id, safe=""), key)


def batch(items, key, **kw):
    return request("POST", BATCH, {"items": items}, key=key, **kw)


# ---------------------------------------------------------------- keys

def cli(*args, check=True):
    """Run bin/rfevents with args; returns the CompletedProcess."""
    p = subprocess.run([RFEVENTS_BIN] + list(args), capture_output=True, text=True,
                       timeout=60)
    if check and p.returncode != 0:
        raise AssertionError("rfevents %s: exit %d: %s %s" % (
            " ".join(args), p.returncode, p.stdout.strip(), p.stderr.strip()))
    return p


ALL_KEYS = []                 # every key this run made (for the plain-text scan)
_keys_lock = threading.RLock()


def _csv(v):
    if v is None:
        return None
    return v if isinstance(v, str) else ",".join(v)


def db_root_client():
    """The mariadb client as root on this stack's own database socket
    (RFEVENTS_VAR/mysql/mysqld.sock), database rfevents: the arguments
    before its -e. Fails the test when there is no such socket."""
    var = os.environ.get("RFEVENTS_VAR")
    sock = os.path.join(var or "", "mysql", "mysqld.sock")
    check(var and os.path.exists(sock), "RFEVENTS_VAR has no database socket: %r" % sock)
    return ["mariadb", "--no-defaults", "--socket=" + sock, "-u", "root", "rfevents"]


def sql(statements, what="mariadb"):
    """Run statements with db_root_client(); returns what they print (tab-separated,
    without column names)."""
    p = subprocess.run(db_root_client() + ["--batch", "--skip-column-names", "-e", statements],
                       capture_output=True, text=True, timeout=60)
    check(p.returncode == 0, "%s: %s" % (what, p.stderr.strip()))
    return p.stdout


def make_key(tenant, scopes=None, sources=None, name=None):
    """Create a key with the CLI; returns the key string (printed alone on stdout)."""
    args = ["key", "create", "--tenant", tenant]
    if scopes is not None:
        args += ["--scopes", _csv(scopes)]
    if sources is not None:
        args += ["--sources", _csv(sources)]
    if name is not None:
        args += ["--name", name]
    out = cli(*args).stdout.strip()
    assert out and len(out.split()) == 1, "key create printed %r, expected the key alone" % out
    with _keys_lock:
        ALL_KEYS.append(out)
    return out


def make_key_with_id(tenant, scopes=None, sources=None):
    """Create a key and find its KEY_ID in `key list` (by its unique name)."""
    name = uid("itkey")
    k = make_key(tenant, scopes, sources, name=name)
    return k, key_id_for(tenant, name, k)


def key_id_for(tenant, name, key):
    out = cli("key", "list", "--tenant", tenant).stdout
    lines = [ln for ln in out.splitlines() if ln.strip()]
    for ln in lines:
        if name in ln.split() or name in ln:
            return ln.split()[0]
    for ln in lines:  # fall back on the prefix (second column)
        f = ln.split()
        if len(f) > 1 and len(f[1]) >= 4 and key.startswith(f[1].rstrip(".*…")):
            return f[0]
    raise AssertionError("key list --tenant %s shows no line for name %s:\n%s" % (
        tenant, name, out))


def revoke(key_id):
    cli("key", "revoke", key_id)


_keys = {}


def key(tenant="acme", scopes="admin", sources=None):
    """A cached key per (tenant, scopes, sources), made on first use."""
    k = (tenant, _csv(scopes), _csv(sources))
    with _keys_lock:
        if k not in _keys:
            _keys[k] = make_key(tenant, scopes, sources)
        return _keys[k]


def admin(tenant="acme"):
    return key(tenant, "admin")


def writer(tenant="acme"):
    return key(tenant, "events:write")


def reader(tenant="acme"):
    return key(tenant, "events:read")


def profiles_reader(tenant="acme"):
    return key(tenant, "profiles:read")


# ---------------------------------------------------------------- ids and events

def uid(prefix="it"):
    return "%s-%s" % (prefix, uuid.uuid4().hex)


def phone_digits():
    """A random 10-digit national number (area code 2xx-9xx) for default cc 1."""
    return str(random.randint(200, 999)) + "%07d" % random.randint(0, 9999999)


def purchase(identity=None, properties=None, **fields):
    """A valid purchase_completed event with fresh ids; fields override top-level."""
    ev = {
        "source": SOURCE,
        "externalEventId": uid("e"),
        "eventType": "purchase_completed",
        "identity": identity if identity is not None else {"externalUserId": uid("u")},
        "properties": properties if properties is not None else {
            "order_id": uid("o"), "amount": 12.5, "currency": "USD"},
    }
    ev.update(fields)
    return ev


def event(event_type="signup", identity=None, properties=None, **fields):
    """A valid event of any type (default signup, which has no properties)."""
    ev = {
        "source": SOURCE,
        "externalEventId": uid("e"),
        "eventType": event_type,
        "identity": identity if identity is not None else {"externalUserId": uid("u")},
    }
    if properties is not None:
        ev["properties"] = properties
    ev.update(fields)
    return ev


def updated(**props):
    """A profile_updated event (all properties optional) with the given properties."""
    return event("profile_updated", properties=props)


def without(d, *names):
    d = dict(d)
    for n in names:
        d.pop(n, None)
    return d


# ---------------------------------------------------------------- checks

def fail(msg):
    raise AssertionError(msg)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def expect_status(r, *statuses, what=""):
    if r.status not in statuses:
        fail("%sexpected HTTP %s, got %s" % (
            what + ": " if what else "", "/".join(map(str, statuses)), r.describe()))
    return r


def expect_json_object(r, what=""):
    check(r.is_json and isinstance(r.body, dict),
          "%sexpected a JSON object body, got %s" % (what + ": " if what else "", r.describe()))
    return r.body


def check_error_body(body, code, where, field=None):
    """Shape of an error body (API.md §5) or a batch error result."""
    check(isinstance(body, dict), "%s: error is not an object: %r" % (where, body))
    check(body.get("status") == "error", '%s: expected "status":"error" in %r' % (where, body))
    codes = code if isinstance(code, (tuple, list, set)) else (code,)
    check(body.get("error_code") in codes,
          "%s: expected error_code %s, got %r" % (where, "/".join(codes), body))
    check(isinstance(body.get("message"), str) and body["message"],
          "%s: expected a non-empty message, got %r" % (where, body))
    if body.get("error_code") == "validation_failed":
        det = body.get("details")
        check(isinstance(det, list) and det,
              "%s: validation_failed without a details list: %r" % (where, body))
        for d in det:
            check(isinstance(d, dict) and isinstance(d.get("field"), str)
                  and isinstance(d.get("problem"), str),
                  "%s: details entries must be {field, problem} strings: %r" % (where, body))
        if field is not None:
            fields = [d["field"] for d in det]
            check(any(_field_match(f, field) for f in fields),
                  "%s: expected a detail for field %r, got fields %r in %r" % (
                      where, field, fields, body))


def _field_match(got, want):
    return got == want or got.startswith(want + ".") or got.startswith(want + "[")


def expect_error(r, status, code, field=None, what=""):
    """Expect an error answer: status, JSON error body with error_code code (or
    one of a tuple of codes) and, for validation_failed, details naming field."""
    w = (what + ": " if what else "") + r.describe()
    if r.status != status:
        fail("%sexpected HTTP %d %s, got %s" % (
            what + ": " if what else "", status, code, r.describe()))
    check(r.is_json, "expected a JSON error body: " + w)
    check_error_body(r.body, code, w, field)
    return r.body


def check_accepted_fields(b, where, created=None):
    """Fields of an accepted result (201 body or accepted batch item)."""
    check(isinstance(b, dict) and b.get("status") == "accepted",
          '%s: expected "status":"accepted" in %r' % (where, b))
    eid = b.get("event_id")
    check(isinstance(eid, str) and eid.startswith("evt_") and len(eid) > 4,
          "%s: event_id must be evt_...: %r" % (where, b))
    pid = b.get("profile_id")
    check(isinstance(pid, str) and pid.startswith("prf_") and len(pid) > 4,
          "%s: profile_id must be prf_...: %r" % (where, b))
    check(isinstance(b.get("profile_created"), bool),
          "%s: profile_created must be a boolean: %r" % (where, b))
    if created is not None:
        check(b["profile_created"] is created,
              "%s: expected profile_created %s: %r" % (where, created, b))
    pa = b.get("points_awarded")
    check(isinstance(pa, int) and not isinstance(pa, bool),
          "%s: points_awarded must be an integer: %r" % (where, b))
    check(isinstance(b.get("rules_applied"), list),
          "%s: rules_applied must be a list: %r" % (where, b))
    check(isinstance(b.get("effects"), list), "%s: effects must be a list: %r" % (where, b))
    return b


def expect_accepted(r, created=None, what=""):
    """201 accepted with Location: /v1/cdp/events/{event_id}; returns the body."""
    w = (what + ": " if what else "") + r.describe()
    if r.status != 201:
        fail("%sexpected HTTP 201 accepted, got %s" % (what + ": " if what else "", r.describe()))
    check(r.is_json, "expected JSON: " + w)
    b = check_accepted_fields(r.body, w, created)
    loc = r.headers.get("location")
    want = EVENTS + "/" + b["event_id"]
    check(loc is not None and (loc == want or urllib.parse.urlsplit(loc).path == PREFIX + want),
          "%s: expected Location: %s, got %r" % (w, want, loc))
    return b


def expect_duplicate(r, original, what=""):
    w = (what + ": " if what else "") + r.describe()
    if r.status != 200:
        fail("%sexpected HTTP 200 duplicate of %s, got %s" % (
            what + ": " if what else "", original, r.describe()))
    check(r.is_json and isinstance(r.body, dict) and r.body.get("status") == "duplicate",
          'expected "status":"duplicate": ' + w)
    check(r.body.get("original_event_id") == original,
          "expected original_event_id %s: %s" % (original, w))
    return r.body


def expect_conflict(r, original, what=""):
    b = expect_error(r, 409, "conflict", what=what)
    check(b.get("original_event_id") == original,
          "%sexpected original_event_id %s in the conflict: %s" % (
              what + ": " if what else "", original, r.describe()))
    return b


def ingest(ev, key=None, created=None, tenant="acme"):
    """POST ev (must be accepted); returns the 201 body."""
    return expect_accepted(post(ev, key or writer(tenant)), created,
                           what="ingest %s" % ev.get("externalEventId"))


def fetch_event(event_id, tenant="acme"):
    r = get_event(event_id, reader(tenant))
    expect_status(r, 200, what="GET event %s" % event_id)
    return expect_json_object(r)


def outcome_conflicts(event_id, tenant="acme"):
    doc = fetch_event(event_id, tenant)
    out = doc.get("outcome")
    check(isinstance(out, dict), "event %s: outcome must be an object: %r" % (event_id, doc))
    ic = out.get("identity_conflicts", [])
    check(isinstance(ic, list), "event %s: identity_conflicts must be a list: %r" % (event_id, doc))
    return ic


def parse_instant(s):
    """ISO 8601 with zone -> aware datetime (raises ValueError)."""
    if not isinstance(s, str):
        raise ValueError("not a string: %r" % (s,))
    t = s.strip()
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    d = datetime.datetime.fromisoformat(t)
    if d.tzinfo is None:
        raise ValueError("no zone: %r" % s)
    return d


def iso(d):
    return d.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def loads_exact(raw):
    """Parse JSON text with exact decimals (Decimal for every non-integer number), to
    compare what was sent with what came back without a detour through doubles."""
    return json.loads(raw, parse_float=decimal.Decimal)


def pmap(fn, items, workers=8):
    """fn over items on a thread pool; results in the order of items."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as ex:
        return list(ex.map(fn, items))


def summarise(problems, total, what):
    """Raise with the first problems listed when any were collected."""
    if problems:
        head = "\n  ".join(problems[:12])
        more = "" if len(problems) <= 12 else "\n  ... and %d more" % (len(problems) - 12)
        fail("%d of %d %s:\n  %s%s" % (len(problems), total, what, head, more))
