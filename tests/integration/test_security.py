"""The security matrix (API.md §1, §4, §5): every endpoint x (no key, malformed key,
unknown key, another tenant's key, a key without the scope, a key whose sources
exclude the event, a revoked key).

  no / malformed / unknown / revoked key  -> 401 unauthorized + WWW-Authenticate: Bearer,
                                             one and the same answer for all of them
  another tenant's key                     -> that tenant's view: acme's events and
                                             profiles are 404 not_found (never 403), an
                                             event with acme's ids is new (201), a dry
                                             run matches no acme profile
  a key without the scope                  -> 403 forbidden
  a source outside the key's allow-list    -> 403 (single), per-item forbidden (batch)

Every answer carries Content-Type: application/json; charset=utf-8 (the text of
/metrics excepted), X-Content-Type-Options: nosniff and Cache-Control: no-store.
Finally no key made by this module (nor any key of the run) appears in any file under
RFEVENTS_VAR: web server and app logs, MariaDB logs and data files."""
import base64
import os
import re
import time
import urllib.parse

from lib import (ALL_KEYS, BATCH, EVENTS, check, expect_accepted, fail, get, get_event,
                 make_key, make_key_with_id, post, purchase, request, revoke, summarise, uid)

VAR = os.environ.get("RFEVENTS_VAR")
SCOPES = ("events:write", "events:read", "profiles:read", "admin")
MINE = []             # keys made by this module


def _key(tenant, scopes, sources=None):
    k = make_key(tenant, scopes, sources)
    MINE.append(k)
    return k


class _World:
    """Resources of acme (an event, its profile) made once, and keys of every kind."""
    made = None

    @classmethod
    def get(cls):
        if cls.made is None:
            cls.made = cls()
        return cls.made

    def __init__(self):
        self.acme = {s: _key("acme", s) for s in SCOPES}
        self.globex = {s: _key("globex", s) for s in SCOPES}
        self.limited = _key("acme", "events:write", "only.this")
        self.user = uid("sec")
        self.ev = purchase(identity={"externalUserId": self.user})
        b = expect_accepted(post(self.ev, self.acme["admin"]), what="the acme event of the matrix")
        self.eid, self.pid = b["event_id"], b["profile_id"]

    def endpoints(self):
        """(name, method, path, body maker, scope needed) of every protected endpoint."""
        q = urllib.parse.quote
        return [
            ("ingest", "POST", EVENTS, lambda: purchase(), "events:write"),
            ("dry run", "POST", EVENTS + "?dry_run=true",
             lambda: purchase(identity={"externalUserId": self.user}), "events:write"),
            ("batch", "POST", BATCH, lambda: {"items": [purchase()]}, "events:write"),
            ("event", "GET", EVENTS + "/" + self.eid, None, "events:read"),
            ("event types", "GET", "/v1/cdp/event-types", None, "events:write"),
            ("profile by identity", "GET", "/v1/cdp/profiles?externalUserId=" + q(self.user, safe=""),
             None, "profiles:read"),
            ("profile", "GET", "/v1/cdp/profiles/" + self.pid, None, "profiles:read"),
            ("history", "GET", "/v1/cdp/profiles/%s/events" % self.pid, None, "profiles:read"),
            ("ledger", "GET", "/v1/cdp/profiles/%s/ledger" % self.pid, None, "profiles:read"),
            ("metrics", "GET", "/metrics", None, "admin"),
        ]


def _call(ep, key=None, headers=None):
    name, method, path, make, _scope = ep
    return request(method, path, make() if make else None, key=key, headers=headers)


def _headers_problem(r, what):
    h = r.headers
    json_ct = "application/json; charset=utf-8"
    probs = []
    is_metrics_text = r.path.startswith("/metrics") and r.status == 200
    if not is_metrics_text and h.get("content-type", "").lower().replace(" ", "") != \
            json_ct.replace(" ", ""):
        probs.append("Content-Type %r" % h.get("content-type"))
    if h.get("x-content-type-options", "").lower() != "nosniff":
        probs.append("X-Content-Type-Options %r" % h.get("x-content-type-options"))
    if "no-store" not in h.get("cache-control", "").lower():
        probs.append("Cache-Control %r" % h.get("cache-control"))
    if not h.get("x-request-id"):
        probs.append("no X-Request-Id")
    if probs:
        return "%s: %s -> %d: %s" % (what, r.path[:60], r.status, ", ".join(probs))
    return None


def _expect(r, what, status, code=None):
    """None, or a problem when r is not `status` (with error_code `code`)."""
    p = _headers_problem(r, what)
    if p:
        return p
    if r.status != status:
        return "%s: expected %d%s, got %s" % (what, status, " " + code if code else "", r.describe(200))
    if code is not None:
        if not (r.is_json and isinstance(r.body, dict) and r.body.get("status") == "error"
                and r.body.get("error_code") == code):
            return "%s: expected error_code %s, got %s" % (what, code, r.describe(200))
        if status == 401 and r.headers.get("www-authenticate", "").split(" ")[0].lower() != "bearer":
            return "%s: a 401 without WWW-Authenticate: Bearer: %r" % (what, r.headers)
    return None


def _ok_status(ep):
    return {"ingest": 201, "dry run": 200, "batch": 200}.get(ep[0], 200)


def _unauthorized_matrix(creds, label):
    """Every endpoint x every credential in creds -> 401, all with the same body."""
    w = _World.get()
    problems, bodies = [], {}
    n = 0
    for cname, hdrs in creds:
        for ep in w.endpoints():
            n += 1
            r = _call(ep, headers=hdrs)
            p = _expect(r, "%s %s with %s" % (ep[1], ep[0], cname), 401, "unauthorized")
            if p:
                problems.append(p)
            elif r.is_json:
                bodies.setdefault(r.body.get("message"), []).append(cname)
    if len(bodies) > 1:
        problems.append("the 401s differ by credential (an oracle): %r" % {
            m: sorted(set(c))[:4] for m, c in bodies.items()})
    summarise(problems, n, label)


def test_security_no_key_is_401_everywhere():
    _unauthorized_matrix([("no Authorization", None)], "requests without a key not refused with 401")
    h = get("/v1/health")
    check(h.status == 200 and _headers_problem(h, "health") is None,
          "GET /v1/health needs no key and carries the headers: %s %r" % (h.describe(200), h.headers))


def test_security_malformed_and_unknown_keys_are_401():
    w = _World.get()
    k = w.acme["admin"]
    secret = k.rsplit("_", 1)[-1]
    creds = [
        ("Bearer without a key", {"Authorization": "Bearer"}),
        ("Bearer and a space", {"Authorization": "Bearer "}),
        ("the key without Bearer", {"Authorization": k}),
        ("Basic credentials", {"Authorization": "Basic " + base64.b64encode(b"acme:" + k.encode()).decode()}),
        ("Token scheme", {"Authorization": "Token " + k}),
        ("key plus text", {"Authorization": "Bearer " + k + " extra"}),
        ("key cut short", {"Authorization": "Bearer " + k[:-1]}),
        ("key plus a character", {"Authorization": "Bearer " + k + "0"}),
        ("key in upper case", {"Authorization": "Bearer " + k.upper()}),
        ("only the prefix", {"Authorization": "Bearer " + k[:len(k) - len(secret)]}),
        ("only the secret", {"Authorization": "Bearer " + secret}),
        ("prefix of another key", {"Authorization": "Bearer " + w.globex["admin"][:13] + secret}),
        ("unknown well-formed key", {"Authorization": "Bearer rfe_zzzzzzzz_" + "z" * len(secret)}),
        ("4 KiB key", {"Authorization": "Bearer " + "k" * 4096}),
        ("key with a NUL escape", {"Authorization": "Bearer " + k[:5] + "%00" + k[5:]}),
        ("non-ASCII key", {"Authorization": ("Bearer " + "\u00e9" * 20).encode().decode("latin-1")}),
        ("X-Api-Key header instead", {"X-Api-Key": k}),
        ("two Authorization values", {"Authorization": "Bearer x, Bearer " + k}),
    ]
    _unauthorized_matrix(creds, "malformed or unknown keys not refused with 401")


def test_security_huge_authorization_header():
    """An Authorization header over the web server's header limit: 401 from the app or
    431 from the web server (lighttpd's own error page: JSON, but without the app's
    headers, which is why the header check is not applied to it)."""
    w = _World.get()
    problems = []
    for ep in w.endpoints():
        r = _call(ep, headers={"Authorization": "Bearer " + "k" * 9000})
        if r.status == 431 and r.is_json and r.body.get("error_code"):
            continue
        p = _expect(r, "%s %s with a 9000-byte key" % (ep[1], ep[0]), 401, "unauthorized")
        if p:
            problems.append(p)
    summarise(problems, len(w.endpoints()), "huge Authorization headers answered wrongly")


def test_security_revoked_key_is_401_everywhere_within_2s():
    w = _World.get()
    k, kid = make_key_with_id("acme", "admin")
    MINE.append(k)
    ep = w.endpoints()[3]
    check(_call(ep, key=k).status == 200, "the key works before it is revoked")
    revoke(kid)
    time.sleep(2.2)
    _unauthorized_matrix([("revoked key", {"Authorization": "Bearer " + k}),
                          ("no key (for comparison)", None)], "revoked key not refused with 401")


def test_security_missing_scope_is_403():
    w = _World.get()
    problems = []
    n = 0
    for ep in w.endpoints():
        for scope in SCOPES:
            n += 1
            r = _call(ep, key=w.acme[scope])
            allowed = scope == "admin" or scope == ep[4]
            what = "%s %s with an acme %s key" % (ep[1], ep[0], scope)
            p = _expect(r, what, _ok_status(ep)) if allowed else _expect(r, what, 403, "forbidden")
            if p:
                problems.append(p)
    summarise(problems, n, "scope checks failed")


def test_security_source_allow_list():
    w = _World.get()
    problems = []
    k = w.limited
    p = _expect(post(purchase(source="only.this"), k), "a source in the allow-list", 201)
    if p:
        problems.append(p)
    p = _expect(post(purchase(source="other.source"), k), "a source outside the allow-list", 403,
                "forbidden")
    if p:
        problems.append(p)
    p = _expect(post(purchase(source="other.source"), k, path=EVENTS + "?dry_run=true"),
                "dry run of a source outside the allow-list", 403, "forbidden")
    if p:
        problems.append(p)
    r = request("POST", BATCH, {"items": [purchase(source="only.this"), purchase(source="other.source"),
                                          purchase(source="only.thi")]}, key=k)
    p = _expect(r, "batch with sources in and out of the allow-list", 200)
    if p is None:
        got = [(x.get("status"), x.get("error_code")) for x in r.body.get("results", [])]
        if got != [("accepted", None), ("error", "forbidden"), ("error", "forbidden")]:
            p = "batch with sources in and out of the allow-list: %r" % got
    if p:
        problems.append(p)
    summarise(problems, 4, "source allow-list checks failed")


def test_security_other_tenant_sees_nothing_of_acme():
    w = _World.get()
    problems = []
    n = 0
    for scope in SCOPES:
        gk = w.globex[scope]
        for ep in w.endpoints():
            allowed = scope == "admin" or scope == ep[4]
            if not allowed:
                continue
            n += 1
            name = ep[0]
            what = "%s %s of acme with a globex %s key" % (ep[1], name, scope)
            r = _call(ep, key=gk)
            if name in ("event", "profile", "history", "ledger"):
                p = _expect(r, what, 404, "not_found")
            elif name == "profile by identity":
                p = _expect(r, what, 404)
                if p is None and not (r.is_json and r.body.get("status") == "error"):
                    p = "%s: %s" % (what, r.describe(200))
            elif name == "dry run":
                p = _expect(r, what, 200)
                if p is None and r.body.get("profile_id") is not None:
                    p = "%s: the dry run matched a profile %r (acme's is %s)" % (
                        what, r.body.get("profile_id"), w.pid)
            elif name == "event types":
                p = _expect(r, what, 200)
                if p is None and (r.body.get("tenant") != "globex" or "globex_only" not in
                                  [t.get("name") for t in r.body.get("event_types", [])]):
                    p = "%s: not globex's registry: %s" % (what, r.describe(300))
            else:
                p = _expect(r, what, _ok_status(ep))
            if p:
                problems.append(p)
    # acme's (source, externalEventId) is new for globex: accepted, and acme's is untouched
    n += 3
    r = post(w.ev, w.globex["events:write"])
    p = _expect(r, "acme's event sent with a globex key", 201)
    if p is None and (r.body.get("event_id") == w.eid or r.body.get("profile_id") == w.pid):
        p = "acme's event sent with a globex key landed on acme's ids: %s" % r.describe(300)
    if p:
        problems.append(p)
    else:
        ge = r.body["event_id"]
        p = _expect(get_event(ge, w.acme["events:read"]), "globex's event read with an acme key",
                    404, "not_found")
        if p:
            problems.append(p)
    g = get_event(w.eid, w.acme["events:read"])
    p = _expect(g, "acme's event afterwards", 200)
    if p is None and g.body.get("profile_id") != w.pid:
        p = "acme's event changed: %s" % g.describe(300)
    if p:
        problems.append(p)
    summarise(problems, n, "tenant isolation checks failed")


def test_security_zz_no_key_in_any_file_under_var():
    """Keys made by this module (and by the whole run so far), plus their secret
    parts, appear in no file under RFEVENTS_VAR (logs, database files)."""
    if not VAR or not os.path.isdir(VAR):
        fail("RFEVENTS_VAR is not a directory: %r" % VAR)
    check(MINE, "this module made no keys")
    # every key was used at least once, on a success and on a 401 (+1 character)
    for k in MINE:
        request("GET", "/v1/cdp/event-types", key=k)
        request("GET", "/v1/cdp/event-types", key=k + "0")
    time.sleep(0.5)                          # let the web server write its logs
    needles = set()
    for k in set(MINE) | set(ALL_KEYS):
        needles.add(k.encode())
        tail = k.rsplit("_", 1)[-1]
        if len(tail) >= 16:
            needles.add(tail.encode())
    pat = re.compile(b"|".join(re.escape(x) for x in sorted(needles, key=len, reverse=True)))
    found, scanned, nbytes = [], 0, 0
    logs = []
    for root, _dirs, files in os.walk(VAR):
        for name in files:
            path = os.path.join(root, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            if name.endswith(".log") or "log" in name:
                logs.append(path)
            try:
                with open(path, "rb") as f:
                    tail = b""
                    while True:
                        chunk = f.read(4 << 20)
                        if not chunk:
                            break
                        nbytes += len(chunk)
                        m = pat.search(tail + chunk)
                        if m:
                            found.append("%s holds %s..." % (path, m.group(0)[:10].decode()))
                            break
                        tail = chunk[-256:]
                scanned += 1
            except OSError:
                continue
    check(any("error" in os.path.basename(p) for p in logs) and any("access" in p for p in logs),
          "expected the web server's error and access logs under %s, found %r" % (VAR, logs))
    print("security: %d keys (%d of this module) searched in %d files (%.0f MB) under %s" % (
        len(set(MINE) | set(ALL_KEYS)), len(MINE), scanned, nbytes / 1e6, VAR), flush=True)
    if found:
        fail("keys in plain text under %s:\n  %s" % (VAR, "\n  ".join(sorted(set(found))[:20])))
