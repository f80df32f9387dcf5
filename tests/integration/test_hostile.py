"""Hostile input at the HTTP edge: extreme numbers, nesting at the depth limit, bodies at
the size limit, invalid UTF-8 in every position, overlong values in every field,
missing / short / slow / chunked bodies, Content-Type variants, duplicate keys, BOM.

The rule for every case: a JSON answer, never 5xx; an error is a 4xx JSON error body
with an error_code (API.md §5), a valid input succeeds and is stored exactly; and after
each group the service still serves (GET /v1/health 200 and a normal event 201).
Raw sockets (not http.client) send what a well-behaved client never would."""
import json
import os
import re
import socket
import time
import urllib.parse

from lib import (BATCH, EVENTS, HOST, PORT, PREFIX, SOURCE, admin, check, expect_accepted,
                 get, get_event, loads_exact, post, purchase, reader, request, summarise,
                 uid, writer)

TRIED = [0]          # hostile inputs sent by this module


def _limit_single():
    """max_body_single of the stack's rfevents.yaml, else the default 64 KiB."""
    conf = os.environ.get("RFEVENTS_CONF", "")
    try:
        with open(os.path.join(conf, "rfevents.yaml")) as f:
            m = re.search(r"^max_body_single:\s*(\d+)", f.read(), re.M)
            if m:
                return int(m.group(1))
    except OSError:
        pass
    return 65536


# ---------------------------------------------------------------- checks

def _judge(r, what, ok=(201,), errors=None):
    """None when r is acceptable, else a problem. ok: success statuses allowed;
    errors: {status: error_code or tuple of codes} of the 4xx answers allowed (none
    when not given)."""
    TRIED[0] += 1
    if r.status >= 500:
        return "%s: 5xx: %s" % (what, r.describe(300))
    if not (r.is_json and isinstance(r.body, dict)):
        return "%s: not a JSON object: %s" % (what, r.describe(300))
    if r.status in ok:
        return None
    if r.status < 400:
        return "%s: expected %s, got %s" % (what, "/".join(map(str, ok)) or "a 4xx", r.describe(300))
    if not (r.body.get("status") == "error" and isinstance(r.body.get("error_code"), str)
            and r.body.get("error_code")):
        return "%s: a %d without an error body: %s" % (what, r.status, r.describe(300))
    errors = errors or {}
    want = errors.get(r.status)
    codes = want if isinstance(want, tuple) else (want,)
    if want is None or r.body["error_code"] not in codes:
        alts = ["/".join(map(str, ok))] if ok else []
        alts += ["%d %s" % (st, "/".join(c) if isinstance(c, tuple) else c)
                 for st, c in errors.items()]
        return "%s: expected %s, got %s" % (what, " or ".join(alts), r.describe(300))
    return None


def _still_serves(what):
    h = get("/v1/health")
    check(h.status == 200, "after %s: GET /v1/health: %s" % (what, h.describe(300)))
    expect_accepted(post(purchase(), writer()), what="a normal event after %s" % what)


def _stored_exactly(r, raw_props, tenant, what):
    """For a 201: GET the event; its properties equal the sent ones exactly."""
    if r.status != 201:
        return None
    g = get_event(r.body["event_id"], reader(tenant))
    if g.status != 200:
        return "%s: GET the accepted event: %s" % (what, g.describe(300))
    if loads_exact(g.raw).get("properties") != loads_exact(raw_props):
        return "%s: properties not stored exactly: %s" % (what, g.describe(300))
    return None


def _body(props_raw, event_type="purchase_completed", ext=None, user=None):
    return ('{"source":"%s","externalEventId":"%s","eventType":"%s",'
            '"identity":{"externalUserId":"%s"},"properties":%s}' % (
                SOURCE, ext or uid("e"), event_type, user or uid("u"), props_raw)).encode()


def _profile_sums(profile_id, what):
    """The profile's points balance equals the sum of points_awarded of its events
    (from its history) and its ledger sums to the balance: nothing wrapped around."""
    k = admin()
    p = get("/v1/cdp/profiles/" + profile_id, k)
    if p.status != 200:
        return "%s: GET profile: %s" % (what, p.describe(300))
    bal = ((p.body.get("balances") or {}).get("points") or {}).get("balance", 0)
    h = get("/v1/cdp/profiles/%s/events?limit=200" % profile_id, k)
    lg = get("/v1/cdp/profiles/%s/ledger?limit=200" % profile_id, k)
    if h.status != 200 or lg.status != 200:
        return "%s: history/ledger: %s %s" % (what, h.describe(200), lg.describe(200))
    awarded = sum(e["outcome"]["points_awarded"] for e in h.body["events"])
    lsum = sum(x["delta"] for x in lg.body["entries"])
    if not (isinstance(bal, int) and -2 ** 63 <= bal < 2 ** 63 and bal == awarded == lsum):
        return "%s: balance %r, points awarded %r, ledger sum %r" % (what, bal, awarded, lsum)
    return None


# ---------------------------------------------------------------- raw HTTP

def _raw(head, chunks=(), delay=0.0, shutdown=False, timeout=20.0):
    """Send head (bytes, up to and with the blank line) then each chunk (delay seconds
    apart); optionally shut the write side. Returns (status, headers, body bytes), or
    (None, None, why) when the server closed without an answer or timed out."""
    s = socket.create_connection((HOST, PORT), timeout=timeout)
    try:
        s.sendall(head)
        for c in chunks:
            if delay:
                time.sleep(delay)
            s.sendall(c)
        if shutdown:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass      # the server already answered and closed
        s.settimeout(timeout)
        buf = b""
        deadline = time.time() + timeout
        while b"\r\n\r\n" not in buf:
            if time.time() > deadline:
                return None, None, "timeout"
            try:
                d = s.recv(65536)
            except socket.timeout:
                return None, None, "timeout"
            except ConnectionResetError:
                return None, None, "reset"
            if not d:
                return None, None, "closed"
            buf += d
        hdr, body = buf.split(b"\r\n\r\n", 1)
        lines = hdr.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for ln in lines[1:]:
            n, _, v = ln.partition(":")
            headers[n.strip().lower()] = v.strip()
        want = int(headers.get("content-length", "-1"))
        while want >= 0 and len(body) < want and time.time() < deadline:
            try:
                d = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not d:
                break
            body += d
        return status, headers, body
    finally:
        s.close()


class _RawResponse:
    """A raw answer dressed like lib.Response for _judge()."""

    def __init__(self, what, status, headers, raw):
        self.status, self.headers, self.raw = status, headers, raw
        self.method, self.path = "RAW", what
        try:
            self.body = json.loads(raw.decode("utf-8"))
            self.is_json = True
        except (ValueError, UnicodeDecodeError):
            self.body, self.is_json = raw, False

    def describe(self, limit=300):
        return "%s -> %s %s" % (self.path, self.status, self.raw[:limit].decode("utf-8", "replace"))


def _head(method, path, key=None, ctype="application/json", length=None, extra=()):
    h = ["%s %s HTTP/1.1" % (method, PREFIX + path), "Host: %s:%d" % (HOST, PORT),
         "Connection: close"]
    if ctype is not None:
        h.append("Content-Type: " + ctype)
    if key is not None:
        h.append("Authorization: Bearer " + key)
    if length is not None:
        h.append("Content-Length: %s" % length)
    h.extend(extra)
    return ("\r\n".join(h) + "\r\n\r\n").encode("latin-1")


def _judge_raw(res, what, ok=(201,), errors=None, closed_ok=False):
    status, headers, raw = res
    # mod_fcgid reads the whole body before the app runs and answers a body cut
    # short by EOF with its own 500 (no configuration changes that); the app
    # never sees such a request. Every other server lets the app answer 400.
    if (status == 500 and os.environ.get("SERVER") == "apache" and
            ("EOF" in what or "chunk" in what.lower())):
        TRIED[0] += 1
        return None
    if status is None:
        TRIED[0] += 1
        return None if closed_ok and raw in ("closed", "reset") else \
            "%s: no answer (%s)" % (what, raw)
    return _judge(_RawResponse(what, status, headers, raw), what, ok, errors)


# ---------------------------------------------------------------- numbers

def test_hostile_numbers():
    k = writer()
    problems = []
    nums = ["1e400", "-0", "9223372036854775808", "9223372036854775807", "1e-400",
            "123456789012345678901234567890", "-1e400", "1E+400", "0.0000000000000000000001",
            "-9223372036854775809", "18446744073709551616", "1e19", "4.9e-324"]
    for num in nums:
        # amount: a number, min 0 (negative: 422); the rule's points come from it
        props = '{"order_id":"o","amount":%s,"currency":"USD"}' % num
        user = uid("u")
        r = post(_body(props, user=user), k)
        what = "amount %s" % num
        neg = num.startswith("-") and num != "-0"
        p = _judge(r, what, ok=() if neg else (201,),
                   errors={422: "validation_failed"}) or _stored_exactly(r, props, "acme", what)
        if p is None and r.status == 201:
            p = _profile_sums(r.body["profile_id"], what)
        if p:
            problems.append(p)
        # the same as a batch item
        r = request("POST", BATCH, b'{"items":[' + _body(props) + b']}', key=k)
        p = _judge(r, "batch " + what, ok=(200,))
        if p is None:
            st = r.body["results"][0].get("status")
            if st not in ("accepted", "error") or (st == "accepted" and neg):
                p = "batch %s: item answered %r" % (what, r.body["results"][0])
        if p:
            problems.append(p)
        # integer and bounded number properties of profile_updated
        for name in ("i", "n"):
            props2 = '{"%s":%s}' % (name, num)
            r = post(_body(props2, "profile_updated"), k)
            w = "profile_updated.%s = %s" % (name, num)
            p = _judge(r, w, errors={422: "validation_failed"}) or \
                _stored_exactly(r, props2, "acme", w)
            if p:
                problems.append(p)
    # points beyond int64 and a balance pushed past INT64_MAX: nothing wraps around
    user = {"externalUserId": uid("big")}
    pid = None
    for pts in ("9223372036854775807", "1", "9223372036854775807", "-9223372036854775808",
                "-9223372036854775808", "-1", "9223372036854775808", "1e30"):
        props = '{"points":%s,"reason":"hostile"}' % pts
        r = post(('{"source":"%s","externalEventId":"%s","eventType":"points_adjusted",'
                  '"identity":{"externalUserId":"%s"},"properties":%s}' % (
                      SOURCE, uid("e"), user["externalUserId"], props)).encode(), k)
        what = "points_adjusted %s" % pts
        p = _judge(r, what, errors={422: "validation_failed"}) or \
            _stored_exactly(r, props, "acme", what)
        if p:
            problems.append(p)
        elif r.status == 201:
            pid = r.body["profile_id"]
            pa = r.body.get("points_awarded")
            if not (isinstance(pa, int) and -2 ** 63 <= pa < 2 ** 63):
                problems.append("%s: points_awarded %r" % (what, pa))
    if pid:
        p = _profile_sums(pid, "balance pushed to the int64 limits")
        if p:
            problems.append(p)
    summarise(problems, len(nums) * 4 + 9, "extreme numbers answered wrongly")
    _still_serves("extreme numbers")


# ---------------------------------------------------------------- nesting and size

def _nested(levels, open_="[", close="]"):
    """A body whose whole nesting is `levels` containers: the event object, its
    properties object, and levels-2 arrays in properties.deep (tenant loose)."""
    inner = open_ * (levels - 2) + close * (levels - 2)
    return '{"order_id":"o","amount":1,"currency":"USD","deep":%s}' % inner


def test_hostile_nesting_at_the_depth_limit():
    k = writer("loose")
    problems = []
    # core/core.h JSON_MAX_DEPTH: 64 containers are parsed, a 65th is refused
    for levels, ok in ((63, True), (64, True), (65, False), (100000, False)):
        props = _nested(levels)
        r = post(_body(props), k)
        what = "body nested %d levels deep" % levels
        if ok:
            p = _judge(r, what) or _stored_exactly(r, props, "loose", what)
        else:
            p = _judge(r, what, ok=(), errors={400: "malformed_json", 413: "payload_too_large"})
        if p:
            problems.append(p)
    # the same depths inside a batch (one more level: {"items":[ ... ]})
    for levels, ok in ((64, True), (65, False), (100000, False)):
        body = b'{"items":[' + _body(_nested(levels - 2)) + b"]}"
        r = request("POST", BATCH, body, key=k)
        what = "batch nested %d levels deep" % levels
        if ok:
            p = _judge(r, what, ok=(200,))
            if p is None and r.body["results"][0].get("status") != "accepted":
                p = "%s: %r" % (what, r.body["results"][0])
        else:
            p = _judge(r, what, ok=(), errors={400: "malformed_json"})
        if p:
            problems.append(p)
    # objects rather than arrays, and deep nesting in identity / at the top
    for what, body in (
            ("objects 65 deep", _body('{"a":' * 63 + "1" + "}" * 63)),
            ("objects 64 deep", _body('{"a":' * 62 + "1" + "}" * 62)),
            ("identity 100000 deep", ('{"source":"s","externalEventId":"x","eventType":"signup",'
                                      '"identity":%s}' % ("[" * 30000 + "]" * 30000)).encode()),
            ("top-level array 100000 deep", b"[" * 30000 + b"]" * 30000)):
        r = post(body, k)
        p = _judge(r, what, ok=(201,) if "64" in what else (),
                   errors={400: "malformed_json", 422: "validation_failed"})
        if p:
            problems.append(p)
    summarise(problems, 11, "deep nesting answered wrongly")
    _still_serves("deep nesting")


def _sized_body(size, ext=None):
    """A loose purchase event of exactly `size` bytes: properties.arr holds as many
    zeros as fit, padded with spaces."""
    head = _body("@", ext=ext).split(b"@")[0] + b'{"order_id":"o","amount":1,"currency":"USD","arr":['
    tail = b"0]}}"
    room = size - len(head) - len(tail)
    n = room // 2
    body = head + b"0," * n + b" " * (room - 2 * n) + tail
    assert len(body) == size, (len(body), size)
    return body


def test_hostile_body_size_limit_and_big_arrays():
    k = writer("loose")
    limit = _limit_single()
    problems = []
    r = post(_sized_body(limit), k)
    p = _judge(r, "a body of exactly %d bytes (the limit)" % limit)
    if p is None:
        g = get_event(r.body["event_id"], reader("loose"))
        arr = g.body.get("properties", {}).get("arr") if g.is_json else None
        if g.status != 200 or not arr or len(arr) < (limit - 300) // 2 or any(arr):
            p = "the body at the limit was not stored whole: %s" % g.describe(200)
    if p:
        problems.append(p)
    for size in (limit + 1, limit + 4096):
        p = _judge(post(_sized_body(size), k), "a body of %d bytes" % size, ok=(),
                   errors={413: "payload_too_large"})
        if p:
            problems.append(p)
    # a 100k-element array: over the single limit alone, fine inside a batch
    arr = "[" + ",".join(["0"] * 100000) + "]"
    props = '{"order_id":"o","amount":1,"currency":"USD","arr":%s}' % arr
    p = _judge(post(_body(props), k), "100k-element array (%d bytes) alone" % len(props), ok=(),
               errors={413: "payload_too_large"})
    if p:
        problems.append(p)
    r = request("POST", BATCH, b'{"items":[' + _body(props) + b"]}", key=k)
    p = _judge(r, "100k-element array in a batch item", ok=(200,))
    if p is None:
        x = r.body["results"][0]
        if x.get("status") == "accepted":
            g = get_event(x["event_id"], reader("loose"))
            if g.status != 200 or len(g.body["properties"]["arr"]) != 100000:
                p = "100k-element array in a batch item: not stored whole: %s" % g.describe(200)
        elif not (x.get("status") == "error" and x.get("error_code")):
            p = "100k-element array in a batch item: %r" % x
    if p:
        problems.append(p)
    # 1000 items of ~7 KiB each (about 7 MiB, under the 8 MiB batch limit)
    items = [_body('{"order_id":"o","amount":1,"currency":"USD","pad":"%s"}' % ("x" * 7000))
             for _ in range(1000)]
    r = request("POST", BATCH, b'{"items":[' + b",".join(items) + b"]}", key=k, timeout=120)
    p = _judge(r, "a batch of 1000 items of 7 KiB", ok=(200,))
    if p is None and [x.get("status") for x in r.body["results"]].count("accepted") != 1000:
        p = "a batch of 1000 items of 7 KiB: not all accepted: %r" % r.body["results"][:2]
    if p:
        problems.append(p)
    # 8 MiB + 1 batch: 413
    big = b'{"items":[' + _body('{"order_id":"o","amount":1,"currency":"USD","pad":"%s"}' % (
        "x" * (8 << 20))) + b"]}"
    p = _judge(request("POST", BATCH, big, key=k, timeout=120), "a batch over 8 MiB", ok=(),
               errors={413: "payload_too_large"})
    if p:
        problems.append(p)
    summarise(problems, 7, "bodies at the size limit answered wrongly")
    _still_serves("bodies at the size limit")


# ---------------------------------------------------------------- invalid UTF-8

BAD_UTF8 = [b"\xff", b"\x80", b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x80\xaf", b"\xed\xa0\x80",
            b"\xed\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82",
            b"\xfe\xfe\xff\xff"]


def _utf8_positions():
    """(name, bytes template with @@ where the bad bytes go, path)."""
    ev = ('{"source":"%s","externalEventId":"%s","eventType":"purchase_completed",'
          '"occurredAt":"2024-01-01T00:00:00Z",'
          '"identity":{"externalUserId":"%s","email":"a@b.example","phone":"+15551234567",'
          '"deviceKey":"dev"},'
          '"properties":{"order_id":"o","amount":1,"currency":"USD","store_id":"st"}}')
    base = ev % (SOURCE, "EXT", "USER")

    def at(old, new):
        assert old in base, old
        return base.replace(old, new, 1)
    pos = [
        ("top-level key", at('"source"', '"sou@@rce"')),
        ("source", at('"%s"' % SOURCE, '"it.@@"')),
        ("externalEventId", at('"EXT"', '"EXT@@"')),
        ("eventType", at('"purchase_completed"', '"purchase@@"')),
        ("occurredAt", at('"2024-01-01T00:00:00Z"', '"2024-01-01T00:00:00@@Z"')),
        ("identity key", at('"email"', '"em@@ail"')),
        ("identity.externalUserId", at('"USER"', '"US@@ER"')),
        ("identity.email", at('"a@b.example"', '"a@@@b.example"')),
        ("identity.phone", at('"+15551234567"', '"+1555@@1234567"')),
        ("identity.deviceKey", at('"dev"', '"d@@ev"')),
        ("properties key", at('"store_id"', '"store@@_id"')),
        ("properties.order_id", at('"order_id":"o"', '"order_id":"o@@"')),
        ("properties.store_id", at('"st"', '"s@@t"')),
        ("between tokens", at('"amount":1', '"amount":@@1')),
        ("inside a number", at('"amount":1', '"amount":1@@')),
    ]
    return pos


def test_hostile_invalid_utf8_in_every_position():
    k = writer()
    problems = []
    n = 0
    for name, tpl in _utf8_positions():
        for bad in BAD_UTF8:
            body = tpl.replace("EXT", uid("e")).replace("USER", uid("u")).encode().replace(b"@@", bad)
            n += 1
            p = _judge(post(body, k), "%s with bytes %r" % (name, bad), ok=(),
                       errors={400: "malformed_json"})
            if p:
                problems.append(p)
        # and inside a batch: the whole body is not JSON
        body = tpl.replace("EXT", uid("e")).replace("USER", uid("u")).encode().replace(b"@@", b"\xff")
        n += 1
        p = _judge(request("POST", BATCH, b'{"items":[' + body + b"]}", key=k),
                   "batch item: %s with byte ff" % name, ok=(), errors={400: "malformed_json"})
        if p:
            problems.append(p)
    for name, body in (("batch key", b'{"it\xffems":[]}'), ("lone high byte body", b"\xff"),
                       ("Latin-1 body", '{"source":"caf\u00e9"}'.encode("latin-1")),
                       ("UTF-16 body", json.dumps(purchase()).encode("utf-16")),
                       ("UTF-32 body", json.dumps(purchase()).encode("utf-32"))):
        n += 1
        path = BATCH if "batch" in name else EVENTS
        p = _judge(request("POST", path, body, key=k), name, ok=(), errors={400: "malformed_json"})
        if p:
            problems.append(p)
    summarise(problems, n, "invalid UTF-8 answered wrongly")
    _still_serves("invalid UTF-8")


# ---------------------------------------------------------------- overlong values

def _sized(n, ch="a"):
    u = uid()
    return u + ch * (n - len(u))


def test_hostile_overlong_values_in_every_field():
    k = writer()
    V, I = "validation_failed", "invalid_identity"
    emoji = "\U0001F600"
    cases = [
        # (label, event, None for 201 or (code, field))
        ("source 64 chars", purchase(source="s" * 64), None),
        ("source 65 chars", purchase(source="s" * 65), (V, "source")),
        ("source 100000 chars", purchase(source="s" * 60000), (V, "source")),
        ("externalEventId 255 chars", purchase(externalEventId=_sized(255)), None),
        ("externalEventId 256 chars", purchase(externalEventId=_sized(256)), (V, "externalEventId")),
        ("externalEventId 255 4-byte chars", purchase(externalEventId=_sized(255, emoji)), None),
        ("externalEventId 256 4-byte chars", purchase(externalEventId=_sized(256, emoji)),
         (V, "externalEventId")),
        ("externalEventId 60000 chars", purchase(externalEventId=_sized(60000)), (V, "externalEventId")),
        ("eventType 65 chars", purchase(eventType="p" * 65), ("unknown_event_type", "eventType")),
        ("eventType 60000 chars", purchase(eventType="p" * 60000), ("unknown_event_type", "eventType")),
        ("occurredAt 60000 chars", purchase(occurredAt="2024-01-01T00:00:00" + "0" * 60000 + "Z"),
         (V, "occurredAt")),
        ("occurredAt with 9 fraction digits", purchase(occurredAt="2024-01-01T00:00:00." + "1" * 9 + "Z"),
         None),
        # RFC 3339 allows any number of digits; core/ts.c takes 1-9: either answer
        ("occurredAt with 60 fraction digits", purchase(occurredAt="2024-01-01T00:00:00." + "1" * 60 + "Z"),
         "either"),
        ("unknown top-level field with a 60000-char name", dict(purchase(), **{"x" * 60000: 1}),
         (V, None)),
    ]
    for key, lim in (("externalUserId", 255), ("deviceKey", 255)):
        cases += [
            ("identity.%s %d chars" % (key, lim), purchase(identity={key: _sized(lim)}), None),
            ("identity.%s %d chars" % (key, lim + 1), purchase(identity={key: _sized(lim + 1)}),
             (I, "identity." + key)),
            ("identity.%s %d 4-byte chars" % (key, lim), purchase(identity={key: _sized(lim, emoji)}),
             None),
            ("identity.%s %d 4-byte chars" % (key, lim + 1),
             purchase(identity={key: _sized(lim + 1, emoji)}), (I, "identity." + key)),
            ("identity.%s 60000 chars" % key, purchase(identity={key: _sized(60000)}),
             (I, "identity." + key)),
        ]
    dom = "@x.example"
    cases += [
        ("identity.email 255 chars", purchase(identity={"email": _sized(255 - len(dom)) + dom}), None),
        ("identity.email 256 chars", purchase(identity={"email": _sized(256 - len(dom)) + dom}),
         (I, "identity.email")),
        ("identity.phone 16 digits", purchase(identity={"phone": "+1" + "5" * 15}), (I, "identity.phone")),
        ("identity.phone 60000 digits", purchase(identity={"phone": "+" + "5" * 60000}),
         (I, "identity.phone")),
        ("identity key 60000 chars", purchase(identity={"externalUserId": uid(), "k" * 60000: "v"}),
         (V, None)),
        ("order_id 64 chars (max_length 64)",
         purchase(properties={"order_id": "o" * 64, "amount": 1, "currency": "USD"}), None),
        ("order_id 65 chars", purchase(properties={"order_id": "o" * 65, "amount": 1, "currency": "USD"}),
         (V, "properties.order_id")),
        ("order_id 64 4-byte chars",
         purchase(properties={"order_id": emoji * 64, "amount": 1, "currency": "USD"}), None),
        ("order_id 65 4-byte chars",
         purchase(properties={"order_id": emoji * 65, "amount": 1, "currency": "USD"}),
         (V, "properties.order_id")),
        ("order_id 60000 chars",
         purchase(properties={"order_id": "o" * 60000, "amount": 1, "currency": "USD"}),
         (V, "properties.order_id")),
        ("currency 60000 chars (enum)",
         purchase(properties={"order_id": "o", "amount": 1, "currency": "U" * 60000}),
         (V, "properties.currency")),
        ("store_id 60000 chars (no max_length)",
         purchase(properties={"order_id": "o", "amount": 1, "currency": "USD", "store_id": "s" * 60000}),
         None),
        ("profile_updated.s 10 4-byte chars (max_length 10)",
         purchase(eventType="profile_updated", properties={"s": emoji * 10}), None),
        ("profile_updated.s 11 4-byte chars",
         purchase(eventType="profile_updated", properties={"s": emoji * 11}), (V, "properties.s")),
        ("unknown property with a 60000-char name",
         purchase(properties={"order_id": "o", "amount": 1, "currency": "USD", "p" * 60000: 1}),
         (V, None)),
    ]
    problems = []
    accepted = []
    for label, ev, want in cases:
        r = post(ev, k)
        if want == "either":
            p = _judge(r, label, errors={422: "validation_failed"})
        elif want is None:
            p = _judge(r, label)
            if p is None:
                accepted.append((label, ev, r.body["event_id"], r.body["profile_id"]))
        else:
            code, field = want
            p = _judge(r, label, ok=(), errors={422: code, 413: "payload_too_large"})
            if p is None and r.status == 422 and field is not None:
                fields = [d.get("field") for d in r.body.get("details") or []]
                if field not in fields:
                    p = "%s: expected a detail for %s, got %r" % (label, field, fields)
        if p:
            problems.append(p)
    # what was accepted is stored exactly and found again by its identity
    rk, pk = reader(), admin()
    for label, ev, eid, pid in accepted:
        g = get_event(eid, rk)
        if g.status != 200:
            problems.append("%s: GET event: %s" % (label, g.describe(200)))
            continue
        for f in ("source", "externalEventId", "eventType", "properties"):
            if g.body.get(f) != ev.get(f):
                problems.append("%s: %s stored as %r..." % (label, f, str(g.body.get(f))[:80]))
        for name, val in ev["identity"].items():
            q = "/v1/cdp/profiles?%s=%s" % (name, urllib.parse.quote(val, safe=""))
            r = get(q, pk)
            if r.status != 200 or r.body.get("profile_id") != pid:
                problems.append("%s: GET /v1/cdp/profiles?%s=<%d chars, %d bytes encoded>: "
                                "expected profile %s: %s" % (
                                    label, name, len(val), len(q), pid, r.describe(200)))
    # a batch mixing overlong items with a good one: each item alone
    items = [c[1] for c in cases if isinstance(c[2], tuple)][:10] + [purchase()]
    r = request("POST", BATCH, {"items": items}, key=k)
    p = _judge(r, "batch of overlong items", ok=(200,))
    if p is None:
        sts = [x.get("status") for x in r.body["results"]]
        if sts != ["error"] * (len(items) - 1) + ["accepted"]:
            p = "batch of overlong items: statuses %r" % sts
    if p:
        problems.append(p)
    summarise(problems, len(cases) + 1, "overlong values answered wrongly")
    _still_serves("overlong values")


def test_hostile_long_identity_lookup_finds_its_own_profile():
    """GET /v1/cdp/profiles?externalUserId=V for a V of 99 code points whose
    percent-encoding (1143 bytes) is longer than 1023 bytes, while another profile
    holds exactly V's first 1023 encoded bytes (15 ASCII + 84 emoji): the lookup must
    answer V's profile (or refuse the query with a 4xx), never the other one."""
    k = admin()
    e = "\U0001F600"
    b = uid("p")[:15] + e * 84
    a = b + e * 10
    check(len(urllib.parse.quote(b, safe="")) == 1023, "test bug: the prefix must encode to 1023 bytes")
    rb = expect_accepted(post(purchase(identity={"externalUserId": b}), k), what="the shorter identity")
    ra = expect_accepted(post(purchase(identity={"externalUserId": a}), k), what="the longer identity")
    for name, val, pid in (("the longer identity", a, ra["profile_id"]),
                           ("the shorter identity", b, rb["profile_id"])):
        r = get("/v1/cdp/profiles?externalUserId=" + urllib.parse.quote(val, safe=""), k)
        TRIED[0] += 1
        check(r.status < 500, "%s: %s" % (name, r.describe(200)))
        check(not (r.status == 200 and r.body.get("profile_id") != pid),
              "GET /v1/cdp/profiles?externalUserId=<%s, %d bytes encoded> answered another "
              "profile: %s instead of %s (the query value is cut at 1023 bytes?)" % (
                  name, len(urllib.parse.quote(val, safe="")), r.body.get("profile_id"), pid))
        check(r.status == 200, "%s (%d code points) is not found by its own value: %s" % (
            name, len(val), r.describe(200)))
    # 1024 leading blanks (trimmed by normalisation) push the encoding to 4215 bytes;
    # cut at 4095 it would read as blanks + the shorter identity
    padded = urllib.parse.quote(" " * 1024 + a, safe="")
    r = get("/v1/cdp/profiles?externalUserId=" + padded, k)
    TRIED[0] += 1
    check(r.status < 500 and r.is_json, "padded identity: %s" % r.describe(200))
    check(not (r.status == 200 and r.body.get("profile_id") != ra["profile_id"]),
          "GET /v1/cdp/profiles?externalUserId=<1024 blanks + the longer identity, %d bytes "
          "encoded> answered another profile %s (the shorter identity's is %s)" % (
              len(padded), r.body.get("profile_id"), rb["profile_id"]))
    _still_serves("long identity look-ups")


# ---------------------------------------------------------------- bodies on the wire

def _small_event():
    return json.dumps(purchase(), separators=(",", ":")).encode()


def test_hostile_missing_and_short_bodies():
    k = writer()
    problems = []
    for path in (EVENTS, BATCH):
        # Content-Length: 0
        r = request("POST", path, b"", key=k)
        p = _judge(r, "%s with Content-Length: 0" % path, ok=(), errors={400: "malformed_json"})
        if p:
            problems.append(p)
        # no Content-Length and no body at all
        res = _raw(_head("POST", path, k), timeout=20)
        p = _judge_raw(res, "%s without Content-Length or body" % path, ok=(),
                       errors={400: "malformed_json", 411: "length_required"})
        if p:
            problems.append(p)
        # a body shorter than its Content-Length, then the write side closed
        res = _raw(_head("POST", path, k, length=100), [b'{"source":'], shutdown=True, timeout=20)
        p = _judge_raw(res, "%s: 10 of 100 bytes, then EOF" % path, ok=(),
                       errors={400: ("malformed_json", "bad_request"), 408: "request_timeout",
                               413: "payload_too_large"}, closed_ok=True)
        if p:
            problems.append(p)
        # a body longer than its Content-Length: the extra bytes are not a request
        res = _raw(_head("POST", path, k, length=10), [_small_event()], timeout=20)
        p = _judge_raw(res, "%s: Content-Length 10 and a longer body" % path, ok=(),
                       errors={400: ("malformed_json", "bad_request")}, closed_ok=True)
        if p:
            problems.append(p)
    for cl in ("-1", "abc", "99999999999999999999", "1e3", "10, 10", "0x10"):
        res = _raw(_head("POST", EVENTS, k, length=cl), [b"{}"], shutdown=True, timeout=20)
        p = _judge_raw(res, "Content-Length: %s" % cl, ok=(),
                       errors={400: ("malformed_json", "bad_request"), 411: "length_required",
                               413: "payload_too_large"}, closed_ok=True)
        if p:
            problems.append(p)
    # two Content-Length headers that disagree (request smuggling): refused
    res = _raw(_head("POST", EVENTS, k, length=5, extra=("Content-Length: 500",)), [b"{}"],
               shutdown=True, timeout=20)
    p = _judge_raw(res, "two different Content-Length headers", ok=(),
                   errors={400: ("bad_request", "malformed_json")}, closed_ok=True)
    if p:
        problems.append(p)
    # Content-Length and Transfer-Encoding together
    ev = _small_event()
    res = _raw(_head("POST", EVENTS, k, length=len(ev), extra=("Transfer-Encoding: chunked",)),
               [b"%x\r\n%s\r\n0\r\n\r\n" % (len(ev), ev)], timeout=20)
    p = _judge_raw(res, "Content-Length with Transfer-Encoding: chunked", ok=(201,),
                   errors={400: ("bad_request", "malformed_json")}, closed_ok=True)
    if p:
        problems.append(p)
    summarise(problems, 16, "missing or short bodies answered wrongly")
    _still_serves("missing and short bodies")


def test_hostile_stalled_bodies_do_not_block_the_service():
    """12 connections (more than the FastCGI processes) each send part of a body and
    stall: the web server holds them, the app is not blocked; then they are closed."""
    k = writer()
    socks = []
    try:
        for i in range(12):
            s = socket.create_connection((HOST, PORT), timeout=10)
            s.sendall(_head("POST", EVENTS if i % 2 else BATCH, k, length=500) + b'{"items":')
            socks.append(s)
        time.sleep(0.5)
        t0 = time.time()
        for _ in range(8):
            expect_accepted(post(purchase(), k), what="an event while 12 uploads are stalled")
        h = get("/v1/health")
        check(h.status == 200, "health while 12 uploads are stalled: " + h.describe(200))
        check(time.time() - t0 < 10, "8 events took %.1f s while 12 uploads stall" % (time.time() - t0))
        TRIED[0] += 12
    finally:
        for s in socks:
            s.close()
    _still_serves("stalled bodies")


def test_hostile_slow_and_chunked_bodies():
    k = writer()
    problems = []
    # 1 byte every 50 ms: a slow client still gets its event accepted
    ev = {"source": "s", "externalEventId": uid("e"), "eventType": "signup",
          "identity": {"externalUserId": uid("u")}}
    body = json.dumps(ev, separators=(",", ":")).encode()
    t0 = time.time()
    res = _raw(_head("POST", EVENTS, k, length=len(body)), [body[i:i + 1] for i in range(len(body))],
               delay=0.05, timeout=60)
    p = _judge_raw(res, "a %d-byte body sent 1 byte per 50 ms (%.1f s)" % (len(body), time.time() - t0))
    if p:
        problems.append(p)
    # chunked transfer encoding: valid, tiny chunks, chunk extensions, trailers
    for what, make in (
            ("chunked in 7-byte chunks",
             lambda b: b"".join(b"%x\r\n%s\r\n" % (len(b[i:i + 7]), b[i:i + 7])
                                for i in range(0, len(b), 7)) + b"0\r\n\r\n"),
            ("chunked, one chunk", lambda b: b"%x\r\n%s\r\n0\r\n\r\n" % (len(b), b)),
            ("chunked with a chunk extension", lambda b: b"%x;x=y\r\n%s\r\n0\r\n\r\n" % (len(b), b)),
            ("chunked with a trailer", lambda b: b"%x\r\n%s\r\n0\r\nX-T: 1\r\n\r\n" % (len(b), b))):
        b = _small_event()
        res = _raw(_head("POST", EVENTS, k, extra=("Transfer-Encoding: chunked",)), [make(b)], timeout=20)
        p = _judge_raw(res, what)
        if p:
            problems.append(p)
    # a chunked batch
    b = json.dumps({"items": [purchase(), purchase()]}).encode()
    res = _raw(_head("POST", BATCH, k, extra=("Transfer-Encoding: chunked",)),
               [b"%x\r\n%s\r\n0\r\n\r\n" % (len(b), b)], timeout=20)
    p = _judge_raw(res, "a chunked batch", ok=(200,))
    if p:
        problems.append(p)
    # chunked over the single limit: 413
    big = _sized_body(_limit_single() + 100)
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(big[i:i + 4096]), big[i:i + 4096])
                      for i in range(0, len(big), 4096)) + b"0\r\n\r\n"
    res = _raw(_head("POST", EVENTS, writer("loose"), extra=("Transfer-Encoding: chunked",)),
               [chunks], timeout=20)
    p = _judge_raw(res, "chunked body over the limit", ok=(), errors={413: "payload_too_large"},
                   closed_ok=True)
    if p:
        problems.append(p)
    # broken chunking
    for what, raw in (("chunk size not hex", b"zz\r\n{}\r\n0\r\n\r\n"),
                      ("chunk shorter than its size", b"100\r\n{}\r\n0\r\n\r\n"),
                      ("no final chunk, then EOF", b"2\r\n{}\r\n")):
        res = _raw(_head("POST", EVENTS, k, extra=("Transfer-Encoding: chunked",)), [raw],
                   shutdown=True, timeout=20)
        p = _judge_raw(res, what, ok=(), errors={400: ("bad_request", "malformed_json"),
                                                 408: "request_timeout"}, closed_ok=True)
        if p:
            problems.append(p)
    # an unknown transfer coding
    res = _raw(_head("POST", EVENTS, k, extra=("Transfer-Encoding: gzip",)), [b"{}"],
               shutdown=True, timeout=20)
    if res[0] == 501:
        TRIED[0] += 1   # RFC 9112 6.1: 501 for a transfer coding the server does not know
        p = None
    else:
        p = _judge_raw(res, "Transfer-Encoding: gzip", ok=(),
                       errors={400: ("bad_request", "malformed_json"), 411: "length_required",
                               415: "unsupported_media_type"}, closed_ok=True)
    if p:
        problems.append(p)
    summarise(problems, 11, "slow or chunked bodies answered wrongly")
    _still_serves("slow and chunked bodies")


# ---------------------------------------------------------------- media types, keys, BOM

def test_hostile_content_type_variants():
    k = writer()
    problems = []
    good = ["application/json", "application/json; charset=utf-8", "application/json;charset=UTF8",
            "application/json ; charset=utf-8", "application/json; charset=\"utf-8\""]
    bad = [None, "", "text/plain", "text/json", "application/x-www-form-urlencoded",
           "multipart/form-data; boundary=x", "application/json; charset=latin-1",
           "application/json; charset=utf-16", "application/jsonp", "application/json-seq",
           "application/json\x0bx", "*/*", "application/*", "application/json, text/plain",
           "application/json; charset=utf-8; charset=latin-1", "applicationjson"]
    for ct in good:
        p = _judge(post(purchase(), k, content_type=ct), "Content-Type %r" % ct)
        if p:
            problems.append(p)
    for ct in bad:
        p = _judge(post(purchase(), k, content_type=ct), "Content-Type %r" % (ct,), ok=(),
                   errors={415: "unsupported_media_type", 400: "bad_request"})
        if p:
            problems.append(p)
    # ambiguous parameters: either answer, never 5xx
    for ct in ("application/json; foo=bar", "application/json;", "application/json; charset="):
        p = _judge(post(purchase(), k, content_type=ct), "Content-Type %r" % ct, ok=(201,),
                   errors={415: "unsupported_media_type"})
        if p:
            problems.append(p)
    # two Content-Type headers
    res = _raw(_head("POST", EVENTS, k, ctype="text/plain", length=len(_small_event()),
                     extra=("Content-Type: application/json",)), [_small_event()], timeout=20)
    p = _judge_raw(res, "two Content-Type headers", ok=(201,),
                   errors={400: ("bad_request", "malformed_json"), 415: "unsupported_media_type"})
    if p:
        problems.append(p)
    summarise(problems, len(good) + len(bad) + 4, "Content-Type variants answered wrongly")
    _still_serves("Content-Type variants")


def test_hostile_duplicate_keys_bom_and_stray_bytes():
    k, rk = writer(), reader()
    problems = []
    ext1, ext2, u = uid("e"), uid("e"), uid("u")
    # duplicate keys: the last one wins (core/core.h), consistently for the fingerprint
    dup = ('{"source":"%s","externalEventId":"%s","externalEventId":"%s","eventType":"signup",'
           '"identity":{"externalUserId":"x-first","externalUserId":"%s"}}' % (SOURCE, ext1, ext2, u))
    r = post(dup.encode(), k)
    p = _judge(r, "duplicate keys", ok=(201,), errors={400: "malformed_json", 422: "validation_failed"})
    if p is None and r.status == 201:
        g = get_event(r.body["event_id"], rk)
        if g.status != 200 or g.body.get("externalEventId") != ext2 or \
                g.body.get("identity") != {"externalUserId": u}:
            p = "duplicate keys: the last value should win: %s" % g.describe(300)
        else:
            single = ('{"source":"%s","externalEventId":"%s","eventType":"signup",'
                      '"identity":{"externalUserId":"%s"}}' % (SOURCE, ext2, u))
            r2 = post(single.encode(), k)
            if not (r2.status == 200 and r2.body.get("original_event_id") == r.body["event_id"]):
                p = "the same event without the duplicate keys is not its duplicate: %s" % r2.describe(300)
            r3 = post(dup.encode(), k)
            if not (r3.status == 200 and r3.body.get("original_event_id") == r.body["event_id"]):
                p = "the body with duplicate keys again is not a duplicate: %s" % r3.describe(300)
            TRIED[0] += 2
    if p:
        problems.append(p)
    ev = json.dumps(purchase()).encode()
    for what, body, ok in (
            ("UTF-8 BOM before the object", b"\xef\xbb\xbf" + ev, False),
            ("BOM after the object", ev + b"\xef\xbb\xbf", False),
            ("BOM escaped inside a string value", json.dumps(purchase(properties={
                "order_id": "\ufeffo", "amount": 1, "currency": "USD"})).encode(), True),
            ("raw BOM inside a string value", json.dumps(purchase(properties={
                "order_id": "\ufeffo", "amount": 1, "currency": "USD"}), ensure_ascii=False).encode(), True),
            ("NUL byte after the object", ev + b"\x00", False),
            ("raw NUL inside a string", ev.replace(b'"USD"', b'"US\x00D"'), False),
            ("raw control character inside a string", ev.replace(b'"USD"', b'"US\x01D"'), False),
            ("trailing garbage", ev + b"x", False),
            ("two objects", ev + ev, False),
            ("leading form feed", b"\x0c" + ev, False),
            ("trailing whitespace", ev + b" \t\r\n", True),
            ("the literal null", b"null", False), ("an array", b"[]", False),
            ("a string", b'"x"', False), ("a number", b"1", False),
            ("single quotes", ev.replace(b'"', b"'"), False),
            ("a comment", b"/* c */" + ev, False),
            ("NaN", ev.replace(b'"amount": 12.5', b'"amount": NaN'), False),
            ("Infinity", ev.replace(b'"amount": 12.5', b'"amount": Infinity'), False),
            ("leading zero", ev.replace(b'"amount": 12.5', b'"amount": 012'), False),
            ("hex number", ev.replace(b'"amount": 12.5', b'"amount": 0x10'), False),
            ("trailing comma", ev[:-1] + b",}", False),
            ("lone low surrogate escape", ev.replace(b'"USD"', b'"\\udc00"'), False),
            ("invalid escape", ev.replace(b'"USD"', b'"\\x41"'), False)):
        r = post(body, k)
        p = _judge(r, what, ok=(201,) if ok else (),
                   errors={400: "malformed_json", 422: "validation_failed"})
        if p is None and not ok and r.status != 400:
            p = "%s: expected 400 malformed_json, got %s" % (what, r.describe(200))
        if p:
            problems.append(p)
    summarise(problems, 25, "duplicate keys, BOM or stray bytes answered wrongly")
    _still_serves("duplicate keys, BOM and stray bytes")


def test_hostile_zz_figures():
    """Print how many hostile inputs this module sent (the log keeps the figure)."""
    print("hostile: %d hostile inputs tried" % TRIED[0], flush=True)
    _still_serves("all hostile inputs")
