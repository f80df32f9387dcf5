"""Authentication (401), scopes and source allow-lists (403), revocation, and
GET /v1/cdp/event-types. API.md §1, §4."""
import time

from lib import (BATCH, EVENTS, admin, batch, check, check_accepted_fields, check_error_body,
                 expect_accepted, expect_error, expect_json_object, expect_status, get,
                 get_event, make_key, make_key_with_id, post, profiles_reader, purchase,
                 reader, request, revoke, summarise, uid, writer)


def _expect_401(r, what):
    expect_error(r, 401, "unauthorized", what=what)
    www = r.headers.get("www-authenticate", "")
    check(www.split(" ")[0].lower() == "bearer",
          "%s: expected WWW-Authenticate: Bearer, got %r: %s" % (what, www, r.describe()))


def _protected_requests(event_id="evt_doesnotexist", profile_id="prf_doesnotexist"):
    return [("POST", EVENTS, purchase()), ("POST", BATCH, {"items": [purchase()]}),
            ("POST", EVENTS + "?dry_run=true", purchase()),
            ("GET", EVENTS + "/" + event_id, None), ("GET", "/v1/cdp/event-types", None),
            ("GET", "/v1/cdp/profiles/" + profile_id, None),
            ("GET", "/v1/cdp/profiles?externalUserId=x", None)]


def test_401_missing_key():
    for method, path, body in _protected_requests():
        _expect_401(request(method, path, body), "%s %s without Authorization" % (method, path))


def test_401_malformed_authorization():
    k = writer()
    values = ["Bearer", "Bearer ", "Bearer  ", "Basic dXNlcjpwYXNz", k, "Token " + k,
              "Bearer " + k + " extra", "Bearer\t", "Bearer " + "\u00e9" * 10]
    problems = []
    for v in values:
        try:
            hdr = {"Authorization": v.encode("utf-8").decode("latin-1")}
            _expect_401(request("POST", EVENTS, purchase(), headers=hdr),
                        "Authorization %r" % v[:40])
        except AssertionError as e:
            problems.append(str(e))
    summarise(problems, len(values), "malformed Authorization headers not refused with 401")


def test_401_unknown_key():
    k = writer()
    flipped = k[:-1] + ("A" if k[-1] != "A" else "B")
    variants = ["rfk_" + uid("unknown").replace("-", ""), flipped, k[:-1], k + "x", k.upper()
                if k.upper() != k else k.lower(), "x" * 4096]
    problems = []
    for v in variants:
        if v == k:
            continue
        for method, path, body in _protected_requests()[:4]:
            try:
                _expect_401(request(method, path, body, key=v), "%s %s with unknown key %r..." % (
                    method, path, v[:16]))
            except AssertionError as e:
                problems.append(str(e))
    summarise(problems, len(variants) * 4, "unknown keys not refused with 401")
    expect_accepted(post(purchase(), k), what="the real key still works")


def test_401_revoked_key_within_2_seconds():
    k, kid = make_key_with_id("acme", "admin")
    other = make_key("acme", "admin")
    ev = purchase()
    b = expect_accepted(post(ev, k), what="a fresh key before revocation")
    expect_status(get_event(b["event_id"], k), 200, what="GET with the key before revocation")
    revoke(kid)
    time.sleep(2.5)
    for method, path, body in _protected_requests(b["event_id"]):
        _expect_401(request(method, path, body, key=k), "%s %s 2.5 s after revoking the key" % (method, path))
    # the revoked key's events stay readable by another key, which still works
    expect_status(get_event(b["event_id"], other), 200, what="GET with another key of the tenant")
    expect_accepted(post(purchase(), other), what="another key of the tenant after the revocation")


def test_key_list_never_shows_key():
    k, kid = make_key_with_id("acme", "events:write")
    from lib import cli
    out = cli("key", "list", "--tenant", "acme").stdout
    check(kid in out, "key list does not show KEY_ID %s" % kid)
    check(k not in out, "key list shows the key itself")


def test_403_events_read_cannot_ingest():
    k = reader()
    ev = purchase()
    expect_error(post(ev, k), 403, "forbidden", what="events:read key POST /v1/cdp/events")
    expect_error(batch([purchase()], k), 403, "forbidden", what="events:read key POST batch")
    expect_error(post(purchase(), k, path=EVENTS + "?dry_run=true"), 403, "forbidden",
                 what="events:read key dry run")
    # not consumed by the refused attempt
    expect_accepted(post(ev, writer()), what="same event with an events:write key")


def test_403_events_write_cannot_read_events():
    k = writer()
    b = expect_accepted(post(purchase(), k))
    expect_error(get_event(b["event_id"], k), 403, "forbidden", what="events:write key GET event")
    expect_error(get("/v1/cdp/profiles/" + b["profile_id"], k), 403, "forbidden",
                 what="events:write key GET profile")
    expect_status(get_event(b["event_id"], reader()), 200, what="events:read key GET event")


def test_admin_can_do_everything():
    k = admin()
    b = expect_accepted(post(purchase(), k), what="admin ingest")
    expect_status(get_event(b["event_id"], k), 200, what="admin GET event")
    expect_status(get("/v1/cdp/event-types", k), 200, what="admin GET event-types")
    expect_status(get("/v1/cdp/profiles/" + b["profile_id"], k), 200, what="admin GET profile")
    r = batch([purchase()], k)
    expect_status(r, 200, what="admin batch")
    r = post(purchase(), k, path=EVENTS + "?dry_run=true")
    expect_status(r, 200, what="admin dry run")


def test_profiles_read_scope():
    k = profiles_reader()
    b = expect_accepted(post(purchase(), writer()))
    expect_status(get("/v1/cdp/profiles/" + b["profile_id"], k), 200, what="profiles:read GET profile")
    expect_error(post(purchase(), k), 403, "forbidden", what="profiles:read ingest")
    expect_error(get_event(b["event_id"], k), 403, "forbidden", what="profiles:read GET event")
    expect_error(get("/v1/cdp/event-types", k), 403, "forbidden", what="profiles:read GET event-types")


def test_multiple_scopes_on_one_key():
    k = make_key("acme", ["events:write", "events:read"])
    b = expect_accepted(post(purchase(), k), what="events:write+events:read ingest")
    expect_status(get_event(b["event_id"], k), 200, what="events:write+events:read GET event")
    expect_error(get("/v1/cdp/profiles/" + b["profile_id"], k), 403, "forbidden",
                 what="events:write+events:read GET profile")


def test_403_source_allow_list():
    k = make_key("acme", "events:write", ["pos.a", "crm:b"])
    expect_accepted(post(purchase(source="pos.a"), k), what="source in the allow-list")
    expect_accepted(post(purchase(source="crm:b"), k), what="second source in the allow-list")
    ev = purchase(source="pos.c")
    expect_error(post(ev, k), 403, "forbidden", what="source outside the allow-list")
    expect_error(post(purchase(source="POS.A"), k), 403, "forbidden", what="source differing in case")
    expect_error(post(purchase(source="pos"), k), 403, "forbidden", what="prefix of an allowed source")
    expect_error(post(purchase(source="pos.c"), k, path=EVENTS + "?dry_run=true"), 403, "forbidden",
                 what="dry run with a source outside the allow-list")
    # the refused event was not consumed: a key without allow-list may send it
    expect_accepted(post(ev, writer()), what="the refused event with an unrestricted key")


def test_403_source_allow_list_per_item_in_batch():
    k = make_key("acme", "events:write", ["pos.a"])
    items = [purchase(source="pos.a"), purchase(source="pos.b"), purchase(source="pos.a")]
    r = batch(items, k)
    expect_status(r, 200, what="batch with one item outside the allow-list")
    res = expect_json_object(r).get("results")
    check(isinstance(res, list) and len(res) == 3, "expected 3 results: " + r.describe())
    check_accepted_fields(res[0], "item 0: " + r.describe())
    check_error_body(res[1], "forbidden", "item 1 (source pos.b): " + r.describe())
    check_accepted_fields(res[2], "item 2: " + r.describe())


def _names(doc):
    """All object keys and string values anywhere in a JSON document."""
    out = set()
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.add(k)
            out |= _names(v)
    elif isinstance(doc, list):
        for v in doc:
            out |= _names(v)
    elif isinstance(doc, str):
        out.add(doc)
    return out


def test_event_types_registry():
    r = get("/v1/cdp/event-types", writer())
    expect_status(r, 200, what="events:write GET /v1/cdp/event-types")
    names = _names(expect_json_object(r))
    for want in ("purchase_completed", "signup", "points_adjusted", "profile_updated",
                 "order_id", "amount", "currency", "store_id", "points", "reason"):
        check(want in names, "event-types lacks %r: %s" % (want, r.describe(1500)))
    check("globex_only" not in names, "acme's registry lists globex's type: " + r.describe(1500))
    r = get("/v1/cdp/event-types", admin("globex"))
    expect_status(r, 200, what="globex admin GET /v1/cdp/event-types")
    check("globex_only" in _names(expect_json_object(r)),
          "globex's registry lacks globex_only: " + r.describe(1500))
    expect_error(get("/v1/cdp/event-types", reader()), 403, "forbidden", what="events:read GET event-types")
    _expect_401(get("/v1/cdp/event-types"), "GET event-types without a key")
