"""POST /v1/cdp/events: accepted, duplicate, conflict, the fingerprint's canonical
form, dry runs, and GET /v1/cdp/events/{id}. API.md §2.1, §4."""
import os
import json
import time
import urllib.parse

from lib import (EVENTS, SOURCE, batch, check, db_root_client, expect_accepted, expect_conflict,
                 expect_duplicate, expect_error, expect_json_object, expect_status, fetch_event,
                 get, get_event, loads_exact, now, parse_instant, phone_digits, post, purchase,
                 reader, sql, summarise, uid, updated, writer)

DRY = EVENTS + "?dry_run=true"


def test_accepted_shape_and_location():
    k = writer()
    ev = purchase()
    r = post(ev, k)
    b = expect_accepted(r, created=True, what="new event, new identity")
    check(set(b) >= {"status", "event_id", "profile_id", "profile_created", "points_awarded",
                     "rules_applied", "effects"}, "missing fields: " + r.describe())
    loc = urllib.parse.urlsplit(r.headers["location"]).path
    r2 = get(loc, reader())
    expect_status(r2, 200, what="GET the Location of a 201")
    check(r2.body.get("event_id") == b["event_id"], "Location leads to another event: " + r2.describe())
    b2 = expect_accepted(post(purchase(identity=ev["identity"]), k), created=False,
                         what="second event of the same identity")
    check(b2["event_id"] != b["event_id"], "two events got the same event_id")
    check(b2["profile_id"] == b["profile_id"], "same externalUserId, other profile: %r vs %r" % (b, b2))


def test_duplicate_same_payload():
    k = writer()
    ev = purchase()
    b = expect_accepted(post(ev, k))
    # the first retry finds the key with the profile's locks, later ones
    # (the key is then known as a duplicate) by one plain read: the
    # answers are the same
    bodies = []
    for i in range(3):
        d = expect_duplicate(post(ev, k), b["event_id"], what="retry %d" % (i + 1))
        check(set(d) >= {"status", "original_event_id"}, "duplicate body: %r" % d)
        bodies.append(d)
    check(bodies[0] == bodies[1] == bodies[2], "duplicate answers differ: %r" % bodies)
    # duplicates changed nothing: the stored event is the first one
    doc = fetch_event(b["event_id"])
    check(doc.get("externalEventId") == ev["externalEventId"], "stored event: %r" % doc)
    # another key of the same tenant sees the same duplicate
    from lib import admin
    expect_duplicate(post(ev, admin()), b["event_id"], what="retry with another key")


def _from_memory():
    """rfevents_duplicates_from_memory_total of this machine's workers."""
    from lib import admin
    r = get("/metrics", admin())
    expect_status(r, 200, what="GET /metrics")
    for line in r.raw.decode("utf-8", "replace").splitlines():
        if line.startswith("rfevents_duplicates_from_memory_total "):
            return int(line.split()[1])
    check(False, "GET /metrics has no rfevents_duplicates_from_memory_total")


def test_duplicate_answered_from_memory():
    """Once a duplicate was found stored, the next ones are answered from the
    table of stored events (no statement): the same answer, counted in
    rfevents_duplicates_from_memory_total. A changed payload under that key
    misses the table and is still a 409 conflict naming the original; a dry
    run of the original is a duplicate; a batch item of it too."""
    k = writer()
    ev = purchase()
    b = expect_accepted(post(ev, k))
    first = expect_duplicate(post(ev, k), b["event_id"], what="first retry (found stored)")
    m0 = _from_memory()
    for i in range(3):
        d = expect_duplicate(post(ev, k), b["event_id"], what="retry %d from memory" % (i + 1))
        check(d == first, "answer from memory %r differs from %r" % (d, first))
    m1 = _from_memory()
    check(m1 - m0 == 3, "3 retries of a known duplicate: %d answered from memory" % (m1 - m0))
    changed = dict(ev, properties=dict(ev["properties"], amount=ev["properties"]["amount"] + 1))
    expect_conflict(post(changed, k), b["event_id"], what="changed payload of a remembered key")
    r = post(ev, k, path=DRY)
    expect_duplicate(r, b["event_id"], what="dry run of a remembered duplicate")
    r = batch([ev, purchase()], k)
    expect_status(r, 200, what="batch with a remembered duplicate")
    items = r.body.get("results") or []
    check(len(items) == 2 and items[0].get("status") == "duplicate" and
          items[0].get("original_event_id") == b["event_id"] and
          items[1].get("status") == "accepted", "batch results: %r" % items)
    check(_from_memory() - m1 >= 2, "the dry run and the batch item were not answered from memory")
    # the stored event is still the first one, with its outcome
    doc = fetch_event(b["event_id"])
    check(doc.get("externalEventId") == ev["externalEventId"], "stored event: %r" % doc)


def test_events_deleted_by_hand_are_not_remembered():
    """The table of stored events is bound to the database as it is: when the
    highest event id falls (a backup restored, events deleted by hand), every
    worker stops using what it remembered within DB_INSTANCE_MAX_AGE_US (10
    s), so an event sent again is accepted, not answered from memory."""
    db_root_client()            # the test needs the stack's own database
    k = writer()
    ev = purchase()
    b = expect_accepted(post(ev, k))
    expect_duplicate(post(ev, k), b["event_id"], what="first retry (found stored)")
    m0 = _from_memory()
    expect_duplicate(post(ev, k), b["event_id"], what="second retry")
    check(_from_memory() - m0 == 1, "the second retry was not answered from memory")
    # the newest event goes: the highest id falls
    delete = ("DELETE l FROM ledger l JOIN events e ON e.id = l.event_id"
              " WHERE e.public_id = '%s'; DELETE FROM events WHERE public_id = '%s';"
              % (b["event_id"], b["event_id"]))
    sql(delete, "DELETE")
    time.sleep(10.5)
    b2 = expect_accepted(post(ev, k), what="the deleted event sent again")
    check(b2["event_id"] != b["event_id"], "the deleted event's id came back")
    expect_duplicate(post(ev, k), b2["event_id"], what="the new one's retry")


def test_same_external_id_other_source_is_new_event():
    k = writer()
    ev = purchase()
    b1 = expect_accepted(post(ev, k))
    b2 = expect_accepted(post(dict(ev, source=SOURCE + ".other"), k),
                         what="same externalEventId, other source")
    check(b1["event_id"] != b2["event_id"], "different sources share an event")
    b3 = expect_accepted(post(dict(ev, externalEventId=ev["externalEventId"].upper()), k),
                         what="externalEventId differing only in case")
    check(b3["event_id"] != b1["event_id"], "ids differing in case were taken as one")
    b4 = expect_accepted(post(dict(ev, externalEventId=ev["externalEventId"] + " "), k),
                         what="externalEventId with a trailing space")
    check(b4["event_id"] != b1["event_id"], "ids differing by a trailing space were taken as one")


def test_conflict_when_payload_differs():
    k = writer()
    ev = purchase(occurredAt="2024-05-01T12:00:00Z")
    ev["properties"]["category"] = "tv"
    b = expect_accepted(post(ev, k))
    orig = b["event_id"]
    p = ev["properties"]
    variants = {
        "amount changed": dict(ev, properties=dict(p, amount=12.51)),
        "property added": dict(ev, properties=dict(p, store_id="s1")),
        "optional property removed": dict(ev, properties={k2: v for k2, v in p.items() if k2 != "category"}),
        "enum value changed": dict(ev, properties=dict(p, currency="EUR")),
        "string case changed": dict(ev, properties=dict(p, order_id=p["order_id"].upper())),
        "eventType changed": dict(ev, eventType="signup", properties={}),
        "identity changed": dict(ev, identity={"externalUserId": uid("u")}),
        "identity added": dict(ev, identity=dict(ev["identity"], email=uid("m") + "@example.com")),
        "occurredAt changed": dict(ev, occurredAt="2024-05-01T12:00:01Z"),
        "occurredAt dropped": {k2: v for k2, v in ev.items() if k2 != "occurredAt"},
    }
    problems = []
    for label, v in variants.items():
        try:
            expect_conflict(post(v, k), orig, what=label)
        except AssertionError as e:
            problems.append(str(e))
    summarise(problems, len(variants), "changed payloads not answered 409 conflict")
    # the original is still a duplicate after all the conflicts
    expect_duplicate(post(ev, k), orig, what="original payload after the conflicts")


def test_defaulted_occurred_at_does_not_count():
    """Without occurredAt the receipt time is used, but it is not in the fingerprint:
    a retry a second later is a duplicate. Adding occurredAt later changes the
    fingerprint (the given value counts), so that is a conflict."""
    k = writer()
    ev = purchase()
    b = expect_accepted(post(ev, k))
    time.sleep(1.1)
    expect_duplicate(post(ev, k), b["event_id"], what="retry without occurredAt 1.1 s later")
    doc = fetch_event(b["event_id"])
    occ = parse_instant(doc.get("occurredAt"))
    check(abs((occ - now()).total_seconds()) < 600,
          "a defaulted occurredAt should be the receipt time, got %r" % doc.get("occurredAt"))
    expect_conflict(post(dict(ev, occurredAt=doc["occurredAt"]), k), b["event_id"],
                    what="same event now with occurredAt given")


def _raw(eid, uidv, oid, amount="120.5", order="std", email=None, extra=""):
    ident = '"externalUserId":"%s"' % uidv
    if email:
        ident += ',"email":"%s"' % email
    if order == "std":
        return ('{"source":"%s","externalEventId":"%s","eventType":"purchase_completed",'
                '"occurredAt":"2024-05-01T12:00:00Z","identity":{%s},"properties":{"order_id":"%s",'
                '"amount":%s,"currency":"USD","category":"caf\u00e9"%s}}' % (
                    SOURCE, eid, ident, oid, amount, extra)).encode()
    ident_rev = ",".join(reversed(ident.split(",")))
    return ('{\n  "properties" : { "category" : "caf\\u00e9", "currency":"USD", "amount" : %s , '
            '"order_id":"%s"%s },\r\n\t"identity":{ %s },"occurredAt":"2024-05-01T12:00:00Z",'
            '"eventType":"purchase_completed","externalEventId":"%s", "source":"%s"}\n' % (
                amount, oid, extra, ident_rev, eid, SOURCE)).encode()


def test_fingerprint_canonical_form():
    """Keys in any order, any whitespace, escapes, and the same number written
    differently (120.5, 120.50, 1.205e2, 1205E-1) give the same fingerprint."""
    k = writer()
    eid, uidv, oid = uid("e"), uid("u"), uid("o")
    email = uid("m") + "@example.com"
    b = expect_accepted(post(_raw(eid, uidv, oid, email=email), k))
    orig = b["event_id"]
    variants = [("reordered keys, whitespace, \\u escape", _raw(eid, uidv, oid, order="rev", email=email))]
    for amount in ("120.50", "1.205e2", "1205E-1", "120.500000", "0.1205e+3", "12050e-2"):
        variants.append(("amount written %s" % amount, _raw(eid, uidv, oid, amount, "rev", email)))
    variants.append(("email in another case with spaces",
                     _raw(eid, uidv, oid, "120.5", "std", "  " + email.upper() + " ")))
    problems = []
    for label, body in variants:
        try:
            expect_duplicate(post(body, k), orig, what=label)
        except AssertionError as e:
            problems.append(str(e))
    try:
        expect_conflict(post(_raw(eid, uidv, oid, "120.51", "rev", email), k), orig, what="amount 120.51")
    except AssertionError as e:
        problems.append(str(e))
    summarise(problems, len(variants) + 1, "fingerprint variants answered wrongly")


def test_fingerprint_integer_and_identity_forms():
    k = writer()
    ev = updated(i=5)
    phone = phone_digits()
    ev["identity"] = {"phone": "(%s) %s-%s" % (phone[:3], phone[3:6], phone[6:])}
    b = expect_accepted(post(ev, k))
    for i_text in ("5.0", "5e0", "50e-1", "5.000"):
        body = json.dumps(ev).replace('"i": 5', '"i": ' + i_text).encode()
        expect_duplicate(post(body, k), b["event_id"], what="integer 5 written %s" % i_text)
    for form in ("+1" + phone, "001" + phone, "%s.%s.%s" % (phone[:3], phone[3:6], phone[6:])):
        expect_duplicate(post(dict(ev, identity={"phone": form}), k), b["event_id"],
                         what="phone written %r" % form)


def test_fingerprint_occurred_at_same_instant():
    """Assumption (API.md is silent): the given occurredAt enters the fingerprint
    as the instant it denotes, so the same instant written in another zone or with
    .000 is a duplicate; a different instant is a conflict."""
    k = writer()
    ev = purchase(occurredAt="2024-05-01T12:00:00Z")
    b = expect_accepted(post(ev, k))
    for form in ("2024-05-01T14:00:00+02:00", "2024-05-01T07:00:00-05:00", "2024-05-01T12:00:00.000Z",
                 "2024-05-01T12:00:00+00:00"):
        expect_duplicate(post(dict(ev, occurredAt=form), k), b["event_id"], what="occurredAt %s" % form)
    expect_conflict(post(dict(ev, occurredAt="2024-05-01T12:00:00+02:00"), k), b["event_id"],
                    what="same wall-clock time, other zone = other instant")
    expect_conflict(post(dict(ev, occurredAt="2024-05-01T12:00:00.001Z"), k), b["event_id"],
                    what="one millisecond later")


def test_dry_run_new_identity():
    k = writer()
    ev = purchase()
    for i in range(2):
        r = post(ev, k, path=DRY)
        expect_status(r, 200, what="dry run %d" % (i + 1))
        b = expect_json_object(r)
        check(b.get("status") == "dry_run", 'expected "status":"dry_run": ' + r.describe())
        check("event_id" not in b, "a dry run has no event_id: " + r.describe())
        check("profile_id" in b and b["profile_id"] is None,
              "profile_id must be null when the profile would be created: " + r.describe())
        check(b.get("profile_created") is True,
              "profile_created must be true when the profile would be created: " + r.describe())
        pa = b.get("points_awarded")
        check(isinstance(pa, int) and not isinstance(pa, bool), "points_awarded: " + r.describe())
        check(isinstance(b.get("rules_applied"), list), "rules_applied: " + r.describe())
        check(isinstance(b.get("effects"), list), "effects: " + r.describe())
        check("location" not in r.headers, "a dry run has no Location: " + r.describe())
    # nothing was written: the key is free and the profile does not exist yet
    expect_accepted(post(ev, k), created=True, what="the event after its dry runs")


def test_dry_run_existing_identity():
    k = writer()
    first_ev = purchase()
    first = expect_accepted(post(first_ev, k))
    ev = purchase(identity=dict(first_ev["identity"]))
    r = post(ev, k, path=DRY)
    expect_status(r, 200, what="dry run, known identity")
    b = expect_json_object(r)
    check(b.get("status") == "dry_run" and b.get("profile_id") == first["profile_id"],
          "expected dry_run with profile_id %s: %s" % (first["profile_id"], r.describe()))
    check(b.get("profile_created") is False, "expected profile_created false: " + r.describe())
    # a dry run with a new email for the known profile binds nothing
    email = uid("m") + "@example.com"
    post(dict(ev, identity=dict(ev["identity"], email=email)), k, path=DRY)
    b2 = expect_accepted(post(purchase(identity={"email": email}), k), created=True,
                         what="email seen only in a dry run")
    check(b2["profile_id"] != first["profile_id"], "a dry run bound an identity")
    expect_accepted(post(ev, k), created=False, what="the dry-run event for real")


def test_dry_run_validates_and_false_is_normal():
    k = writer()
    expect_error(post(purchase(eventType="nope"), k, path=DRY), 422, "unknown_event_type", what="dry run")
    expect_error(post(purchase(properties={}), k, path=DRY), 422, "validation_failed", what="dry run")
    expect_error(post(b"[]", k, path=DRY), 400, "malformed_json", what="dry run")
    expect_accepted(post(purchase(), k, path=EVENTS + "?dry_run=false"), what="dry_run=false")


def test_get_event_document():
    k = writer()
    ph = phone_digits()
    user = uid("U-Case")
    dev = uid("Dev")
    local = uid("Foo.Bar")
    ident = {"externalUserId": "  " + user + "\t", "email": "  %s@Example.COM " % local,
             "phone": "(%s) %s-%s" % (ph[:3], ph[3:6], ph[6:]), "deviceKey": " " + dev + " "}
    props_raw = ('{"order_id":"%s","amount":19.99,"currency":"EUR","category":"caf\\u00e9 \\"tv\\" \\\\ \\/",'
                 '"store_id":"\U0001F600 \u2028 line1\\nline2"}' % uid("o"))
    body = ('{"source":"%s","externalEventId":"%s","eventType":"purchase_completed",'
            '"occurredAt":"2024-05-01T14:00:00.250+02:00","identity":%s,"properties":%s}' % (
                SOURCE, uid("e"), json.dumps(ident), props_raw)).encode("utf-8")
    sent = json.loads(body)
    r = post(body, k)
    b = expect_accepted(r, created=True)
    g = get_event(b["event_id"], reader())
    expect_status(g, 200, what="GET event")
    doc = expect_json_object(g)
    problems = []

    def want(cond, msg):
        if not cond:
            problems.append(msg)
    want(doc.get("event_id") == b["event_id"], "event_id")
    want(doc.get("source") == SOURCE, "source")
    want(doc.get("externalEventId") == sent["externalEventId"], "externalEventId")
    want(doc.get("eventType") == "purchase_completed", "eventType")
    try:
        want(parse_instant(doc.get("occurredAt")) == parse_instant("2024-05-01T12:00:00.250Z"),
             "occurredAt is not the instant 2024-05-01T12:00:00.250Z")
    except ValueError as e:
        problems.append("occurredAt: %s" % e)
    try:
        want(abs((parse_instant(doc.get("receivedAt")) - now()).total_seconds()) < 600,
             "receivedAt is not about now")
    except ValueError as e:
        problems.append("receivedAt: %s" % e)
    idn = doc.get("identity") or {}
    want(idn.get("externalUserId") == user, "identity.externalUserId: trimmed, case kept: %r" % user)
    want(idn.get("email") == ("%s@example.com" % local).lower(), "identity.email: trimmed, lowercased")
    want(idn.get("phone") == "+1" + ph, "identity.phone: E.164 +1%s" % ph)
    want(idn.get("deviceKey") == dev, "identity.deviceKey: trimmed, case kept")
    want(loads_exact(g.raw).get("properties") == loads_exact(props_raw.encode()),
         "properties are not what was sent")
    want(doc.get("profile_id") == b["profile_id"], "profile_id")
    want(isinstance(doc.get("rules_version"), str) and doc["rules_version"], "rules_version")
    out = doc.get("outcome")
    if not isinstance(out, dict):
        problems.append("outcome is not an object")
    else:
        want(out.get("points_awarded") == b["points_awarded"], "outcome.points_awarded")
        want(out.get("rules_applied") == b["rules_applied"], "outcome.rules_applied")
        for f in ("rules_skipped", "effects", "identity_conflicts"):
            want(isinstance(out.get(f), list), "outcome.%s is not a list" % f)
        want(out.get("identity_conflicts") in ([], None), "outcome.identity_conflicts should be empty")
    if problems:
        raise AssertionError("event document wrong (%s): sent %s; got %s" % (
            "; ".join(problems), body.decode(), g.describe(2000)))


def test_event_properties_keep_exact_numbers():
    """Numbers come back with their exact decimal value (not through a binary double)."""
    k = writer()
    problems = []
    for amount in ("0.1", "19.99", "1e-7", "123456789.123456789", "12345678901234567890",
                   "0.30000000000000004", "1E+2"):
        props = '{"order_id":"%s","amount":%s,"currency":"USD"}' % (uid("o"), amount)
        body = ('{"source":"%s","externalEventId":"%s","eventType":"purchase_completed",'
                '"identity":{"externalUserId":"%s"},"properties":%s}' % (SOURCE, uid("e"), uid("u"), props)).encode()
        r = post(body, k)
        if r.status != 201:
            problems.append("amount %s: expected 201, got %s" % (amount, r.describe()))
            continue
        g = get_event(r.body["event_id"], reader())
        if g.status != 200:
            problems.append("amount %s: GET: %s" % (amount, g.describe()))
            continue
        got = loads_exact(g.raw).get("properties", {}).get("amount")
        if got != loads_exact(amount.encode()):
            problems.append("amount %s came back as %s" % (amount, got))
    summarise(problems, 7, "numbers not stored exactly")


def test_get_event_not_found():
    k = reader()
    ids = ["evt_" + uid("x").replace("-", ""), "nonsense", "evt_", "evt_" + "a" * 300,
           "prf_" + uid("x").replace("-", ""), "evt_%27%20OR%201%3D1--", "%00", "evt_%E2%82%AC",
           "..%2F..%2Fetc%2Fpasswd"]
    problems = []
    for i in ids:
        r = get(EVENTS + "/" + i, k)
        try:
            if i == "%00" and os.environ.get("SERVER") == "nginx":
                # nginx refuses a NUL in the path itself, before any location,
                # with its own (JSON) 400
                expect_error(r, 400, "bad_request", what="GET event %r via nginx" % i)
            else:
                expect_error(r, 404, "not_found", what="GET event %r" % i)
        except AssertionError as e:
            problems.append(str(e))
    summarise(problems, len(ids), "unknown event ids not answered 404 not_found")
