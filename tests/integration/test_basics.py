"""Health, response headers, routing (404/405), media type (415), body limits (413)
and malformed bodies (400). API.md §1, §2, §4, §5."""
from lib import (BATCH, EVENTS, admin, batch, check, expect_accepted, expect_error,
                 expect_json_object, expect_status, fail, get, post, purchase, reader,
                 request, uid, writer, summarise)


def test_health_without_key():
    r = get("/v1/health")
    expect_status(r, 200, what="GET /v1/health without a key")
    b = expect_json_object(r)
    check(b.get("status") == "ok", 'expected {"status":"ok",...}: ' + r.describe())
    r2 = request("HEAD", "/v1/health")
    check(r2.status in (200, 405), "HEAD /v1/health: expected 200 or 405, got " + r2.describe())


def _header_problems(r, sent_rid):
    p = []
    ct = r.headers.get("content-type", "")
    parts = [x.strip().lower() for x in ct.split(";")]
    if parts[0] != "application/json":
        p.append("Content-Type %r is not application/json" % ct)
    for param in parts[1:]:
        if param.startswith("charset=") and param[8:].strip('"') != "utf-8":
            p.append("Content-Type %r has a charset other than utf-8" % ct)
    if r.headers.get("x-request-id") != sent_rid:
        p.append("X-Request-Id %r does not echo %r" % (r.headers.get("x-request-id"), sent_rid))
    if r.headers.get("x-content-type-options", "").lower() != "nosniff":
        p.append("X-Content-Type-Options %r, expected nosniff" % r.headers.get("x-content-type-options"))
    if "no-store" not in r.headers.get("cache-control", "").lower():
        p.append("Cache-Control %r, expected no-store" % r.headers.get("cache-control"))
    if not (r.is_json and isinstance(r.body, dict)):
        p.append("body is not a JSON object")
    return p


def test_common_headers_on_every_status():
    """Every answer (success or error of any status) is JSON with Content-Type
    application/json, X-Request-Id echoing the client's, nosniff and no-store."""
    k = writer()
    ev = purchase()
    big = purchase()
    big["properties"]["store_id"] = "x" * 70000
    clash = dict(ev, eventType="signup")
    clash.pop("properties")
    cases = [
        ("200 health", "GET", "/v1/health", None, None, {}),
        ("201 accepted", "POST", EVENTS, ev, k, {}),
        ("200 duplicate", "POST", EVENTS, ev, k, {}),
        ("200 batch", "POST", BATCH, {"items": [purchase()]}, k, {}),
        ("200 dry run", "POST", EVENTS + "?dry_run=true", purchase(), k, {}),
        ("400 malformed", "POST", EVENTS, b"{nope", k, {}),
        ("401 no key", "POST", EVENTS, purchase(), None, {}),
        ("403 scope", "POST", EVENTS, purchase(), reader(), {}),
        ("404 route", "GET", "/v1/no-such-route", None, k, {}),
        ("404 event", "GET", EVENTS + "/evt_" + uid("x").replace("-", ""), None, reader(), {}),
        ("405 method", "DELETE", "/v1/health", None, k, {}),
        ("409 conflict", "POST", EVENTS, clash, k, {}),
        ("413 too large", "POST", EVENTS, big, k, {}),
        ("415 text/plain", "POST", EVENTS, purchase(), k, {"Content-Type": "text/plain"}),
        ("422 invalid", "POST", EVENTS, dict(purchase(), source=""), k, {}),
    ]
    problems = []
    for label, method, path, body, key, hdrs in cases:
        rid = uid("rid")
        r = request(method, path, body, key=key, headers=dict(hdrs, **{"X-Request-Id": rid}))
        want = int(label.split()[0])
        if r.status != want:
            problems.append("%s: expected HTTP %d: %s" % (label, want, r.describe(200)))
        for p in _header_problems(r, rid):
            problems.append("%s: %s: %s" % (label, p, r.describe(200)))
    summarise(problems, len(cases), "responses had wrong status or headers")


def test_request_id_generated_when_absent():
    seen = set()
    for method, path, key in (("GET", "/v1/health", None), ("POST", EVENTS, None),
                              ("GET", "/v1/nope", admin())):
        r = request(method, path, purchase() if method == "POST" else None, key=key)
        rid = r.headers.get("x-request-id")
        check(rid, "expected an X-Request-Id the server made up: " + r.describe())
        check(rid not in seen, "X-Request-Id %r repeated across requests" % rid)
        seen.add(rid)


def test_unknown_route_is_json_404():
    k = admin()
    for method, path in (("GET", "/v1/nope"), ("GET", "/v1/cdp/nope"),
                         ("POST", "/v1/cdp/nope"), ("GET", "/v1/cdp/events/evt_x/extra")):
        body = purchase() if method == "POST" else None
        expect_error(request(method, path, body, key=k), 404, "not_found",
                     what="%s %s" % (method, path))


def test_unknown_path_outside_v1_is_json_404():
    """API.md §5: JSON always, never HTML -- also for paths the web server might
    not hand to the app."""
    k = admin()
    for path in ("/v2/cdp/events", "/nope", "/v1"):
        expect_error(request("GET", path, key=k), 404, "not_found", what="GET " + path)


def test_405_with_allow_header():
    k = admin()
    cases = [("GET", EVENTS, "POST"), ("PUT", EVENTS, "POST"), ("DELETE", "/v1/health", "GET"),
             ("POST", "/v1/health", "GET"), ("GET", BATCH, "POST"), ("PUT", BATCH, "POST"),
             ("DELETE", EVENTS + "/evt_abc", "GET"), ("POST", "/v1/cdp/event-types", "GET")]
    problems = []
    for method, path, allowed in cases:
        body = purchase() if method in ("POST", "PUT") else None
        r = request(method, path, body, key=k)
        if path == BATCH and method == "GET" and r.status == 404:
            continue  # GET .../batch may be read as the event id "batch": 404 is fine
        try:
            expect_error(r, 405, "method_not_allowed", what="%s %s" % (method, path))
            allow = [a.strip().upper() for a in r.headers.get("allow", "").split(",")]
            check(allowed in allow, "%s %s: expected Allow to list %s, got %r" % (
                method, path, allowed, r.headers.get("allow")))
            check(method not in allow, "%s %s: Allow %r lists the refused method" % (
                method, path, r.headers.get("allow")))
        except AssertionError as e:
            problems.append(str(e))
    summarise(problems, len(cases), "405 checks failed")


def test_415_unsupported_media_type():
    k = writer()
    for path, body in ((EVENTS, purchase()), (BATCH, {"items": [purchase()]})):
        for ct in ("text/plain", "application/x-www-form-urlencoded", "text/json",
                   "multipart/form-data; boundary=x", None):
            r = request("POST", path, body, key=k, content_type=ct)
            expect_error(r, 415, "unsupported_media_type", what="POST %s Content-Type %r" % (path, ct))
    # the refused event was not consumed, and a charset parameter is fine
    ev = purchase()
    expect_error(post(ev, k, content_type="text/plain"), 415, "unsupported_media_type")
    expect_accepted(post(ev, k, content_type="application/json; charset=utf-8"),
                    what="same event with Content-Type application/json; charset=utf-8")


def test_400_malformed_single():
    k = writer()
    good = purchase()
    import json
    text = json.dumps(good).encode()
    bodies = [
        b"", b" ", b"not json", b"{", b'{"source": "a"', b"[1, 2]", b"[]", b'"string"', b"null",
        b"123", b"true", text + b" x", text + text, b"{'source': 'a'}",
        b'{"source":"\xff\xfe"}', b'{"source":"\xc0\xaf"}', b'{"source":"\xed\xa0\x80"}',
        text.replace(b'"USD"', b'"US\xe9D"'),   # Latin-1 byte inside an otherwise valid event
        b"\xef\xbb\xbf",
        b'{"source":"a",}', b"{\"source\":NaN}",
    ]
    problems = []
    for b in bodies:
        r = post(b, k)
        try:
            expect_error(r, 400, "malformed_json", what="body %r" % b[:60])
        except AssertionError as e:
            problems.append(str(e))
    summarise(problems, len(bodies), "malformed bodies not answered 400 malformed_json")
    # the event whose bytes were broken was not consumed
    expect_accepted(post(good, k), what="valid event after its malformed twin")


def test_400_malformed_batch():
    k = writer()
    bodies = [b"", b"not json", b"[]", b'[{"items":[]}]', b'"items"', b"null", b'{"items":[',
              b'{"items":[{"source":"\xff"}]}', b'{"items":[]} []']
    problems = []
    for b in bodies:
        try:
            expect_error(post(b, k, path=BATCH), 400, "malformed_json", what="batch body %r" % b[:60])
        except AssertionError as e:
            problems.append(str(e))
    summarise(problems, len(bodies), "malformed batch bodies not answered 400 malformed_json")


def test_413_single_over_64k():
    k = writer()
    ev = purchase()
    ev["properties"]["store_id"] = "x" * (70 * 1024)
    expect_error(post(ev, k), 413, "payload_too_large", what="70 KiB single event")
    ev["properties"]["store_id"] = "y" * (1024 * 1024)
    expect_error(post(ev, k), 413, "payload_too_large", what="1 MiB single event")
    # nothing was consumed: the same id with a small body is accepted
    ev["properties"]["store_id"] = "small"
    expect_accepted(post(ev, k), what="same event id after a 413")


def _padded(obj, size):
    import json
    raw = json.dumps(obj).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))   # trailing whitespace is valid JSON


def test_413_single_boundary_is_64_kib():
    """64 KiB = 65536 bytes is allowed, one byte more is over the limit."""
    k = writer()
    ev = purchase()
    ev["properties"]["store_id"] = "z" * 60000
    expect_accepted(post(_padded(ev, 65536), k), what="single body of exactly 65536 bytes")
    ev2 = purchase()
    ev2["properties"]["store_id"] = "z" * 60000
    expect_error(post(_padded(ev2, 65537), k), 413, "payload_too_large",
                 what="single body of 65537 bytes")


def test_413_batch_over_8_mib():
    k = writer()
    item = purchase()
    body = _padded({"items": [item]}, 8 * 1024 * 1024 + 1)
    expect_error(post(body, k, path=BATCH), 413, "payload_too_large", what="batch of 8 MiB + 1 byte")
    items = []
    for _ in range(1000):
        ev = purchase()
        ev["properties"]["store_id"] = "s" * 9000
        items.append(ev)
    expect_error(batch(items, k), 413, "payload_too_large", what="batch of 1000 x 9 KB")
    # the exact limit is allowed, and nothing of the refused batches was applied
    r = post(_padded({"items": [item]}, 8 * 1024 * 1024), k, path=BATCH)
    expect_status(r, 200, what="batch body of exactly 8 MiB")
    res = expect_json_object(r).get("results")
    check(isinstance(res, list) and len(res) == 1 and res[0].get("status") == "accepted",
          "expected the item of the 8 MiB batch accepted (nothing applied before): " + r.describe())
    ok = post(items[0], k)
    expect_accepted(ok, what="an item of the refused 9 MB batch, sent alone")


def test_batch_limit_not_applied_to_single():
    """A batch body above 64 KiB is fine (the 8 MiB limit applies)."""
    k = writer()
    items = []
    for _ in range(20):
        ev = purchase()
        ev["properties"]["store_id"] = "b" * 5000
        items.append(ev)
    r = batch(items, k)
    expect_status(r, 200, what="batch of about 100 KB")
    res = expect_json_object(r).get("results")
    check(isinstance(res, list) and len(res) == 20 and all(x.get("status") == "accepted" for x in res),
          "expected 20 accepted: " + r.describe())


def test_health_with_query_string():
    r = get("/v1/health?x=1")
    expect_status(r, 200, what="GET /v1/health?x=1")
    if r.is_json and r.body.get("status") != "ok":
        fail("expected status ok: " + r.describe())
