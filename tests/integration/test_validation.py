"""422 answers: every rule of API.md §2.1 and the property checks of CONF.md
(tests/conf/tenants/acme.yaml), invalid_identity (§3) and unknown_event_type."""
import datetime

from lib import (check, event, expect_accepted, expect_error, fetch_event, now, iso,
                 parse_instant, phone_digits, post, purchase, summarise, uid, updated, without,
                 writer)


def _run(cases, what):
    """cases: (label, event, expectation) with expectation "ok" (201) or
    (code, field) / ((code, ...), field) for 422. Collects every mismatch."""
    k = writer()
    problems = []
    for label, ev, want in cases:
        r = post(ev, k)
        try:
            if want == "ok":
                expect_accepted(r, what=label)
            else:
                code, field = want
                expect_error(r, 422, code, field=field, what=label)
        except AssertionError as e:
            problems.append(str(e))
    summarise(problems, len(cases), what)


V = "validation_failed"


def _sized(n, ch):
    """A fresh unique string of exactly n code points (uid + ch repeated)."""
    u = uid()
    assert len(u) < n
    return u + ch * (n - len(u))


def test_source_rules():
    e = purchase
    _run([
        ("source missing", without(e(), "source"), (V, "source")),
        ("source empty", e(source=""), (V, "source")),
        ("source 65 chars", e(source="s" * 65), (V, "source")),
        ("source with a space", e(source="brand pos"), (V, "source")),
        ("source with a slash", e(source="brand/pos"), (V, "source")),
        ("source non-ASCII letter", e(source="br\u00e4nd"), (V, "source")),
        ("source with NUL", e(source="pos\u0000x"), (V, "source")),
        ("source a number", e(source=12), (V, "source")),
        ("source null", e(source=None), (V, "source")),
        ("source an object", e(source={"a": "b"}), (V, "source")),
        ("source 64 chars", e(source="S" * 64), "ok"),
        ("source of every allowed character", e(source="Az09_.:-"), "ok"),
        ("source one char", e(source="x"), "ok"),
    ], "source checks failed")


def test_external_event_id_rules():
    e = purchase
    emoji = "\U0001F600"
    _run([
        ("externalEventId missing", without(e(), "externalEventId"), (V, "externalEventId")),
        ("externalEventId empty", e(externalEventId=""), (V, "externalEventId")),
        ("externalEventId 256 chars", e(externalEventId=_sized(256, "x")), (V, "externalEventId")),
        ("externalEventId 256 emoji", e(externalEventId=_sized(256, emoji)), (V, "externalEventId")),
        ("externalEventId a number", e(externalEventId=12345), (V, "externalEventId")),
        ("externalEventId null", e(externalEventId=None), (V, "externalEventId")),
        ("externalEventId 255 chars", e(externalEventId=_sized(255, "x")), "ok"),
        ("externalEventId 255 code points (4-byte emoji)", e(externalEventId=_sized(255, emoji)), "ok"),
        ("externalEventId one char", e(source=uid("src")[:60], externalEventId="1"), "ok"),
    ], "externalEventId checks failed")


def test_event_type_rules():
    e = purchase
    _run([
        ("eventType missing", without(e(), "eventType"), (V, "eventType")),
        ("eventType a number", e(eventType=5), (V, "eventType")),
        ("eventType null", e(eventType=None), (V, "eventType")),
        ("eventType unknown", e(eventType="no_such_type"), ("unknown_event_type", None)),
        ("eventType of another tenant", e(eventType="globex_only"), ("unknown_event_type", None)),
        ("eventType differing in case", e(eventType="Purchase_Completed"), ("unknown_event_type", None)),
        ("eventType empty", e(eventType=""), ((V, "unknown_event_type"), None)),
    ], "eventType checks failed")


def test_occurred_at_valid_forms():
    k = writer()
    forms = ["2024-05-01T12:00:00Z", "2024-05-01T12:00:00.5Z", "2024-05-01T12:00:00.123456Z",
             "2024-05-01T14:00:00+02:00", "2024-05-01T06:30:00-05:30", "2024-05-01T12:00:00.000+00:00",
             "2000-02-29T23:59:59Z"]
    problems = []
    for f in forms:
        ev = purchase(occurredAt=f)
        r = post(ev, k)
        try:
            b = expect_accepted(r, what="occurredAt %r" % f)
            doc = fetch_event(b["event_id"])
            got = doc.get("occurredAt")
            check(parse_instant(got) == parse_instant(f),
                  "occurredAt %r came back as %r (another instant)" % (f, got))
        except (AssertionError, ValueError) as e:
            problems.append(str(e))
    summarise(problems, len(forms), "valid occurredAt forms were not accepted")


def test_occurred_at_invalid_forms():
    bad = ["2024-05-01", "2024-05-01T12:00:00", "2024-05-01T12:00", "2024-13-01T00:00:00Z",
           "2024-02-30T00:00:00Z", "2023-02-29T00:00:00Z", "2024-05-01T25:00:00Z",
           "2024-05-01T12:60:00Z", "2024-05-01T12:00:00+25:00", "yesterday", "", "  ",
           "2024-05-01T12:00:00ZZ", "2024-05-01T12:00:00Z trailing", "12:00:00Z",
           "2024-5-1T12:00:00Z", 1714564800, True, ["2024-05-01T12:00:00Z"], {"at": 1}]
    _run([("occurredAt %r" % (b,), purchase(occurredAt=b), (V, "occurredAt")) for b in bad],
         "bad occurredAt values were not refused with 422")


def test_occurred_at_future_limit():
    t = now()
    _run([
        ("occurredAt 25 h ahead", purchase(occurredAt=iso(t + datetime.timedelta(hours=25))), (V, "occurredAt")),
        ("occurredAt 10 years ahead", purchase(occurredAt="2099-01-01T00:00:00Z"), (V, "occurredAt")),
        ("occurredAt 23 h ahead", purchase(occurredAt=iso(t + datetime.timedelta(hours=23))), "ok"),
        ("occurredAt 25 h ahead in another zone", purchase(
            occurredAt=(t + datetime.timedelta(hours=25)).astimezone(
                datetime.timezone(datetime.timedelta(hours=-8))).isoformat()), (V, "occurredAt")),
        ("occurredAt in the past", purchase(occurredAt="1999-12-31T23:59:59Z"), "ok"),
    ], "occurredAt future-limit checks failed")


def test_identity_shape():
    e = purchase
    id_codes = (V, "invalid_identity")
    _run([
        ("identity missing", without(e(), "identity"), (V, "identity")),
        ("identity empty object", e(identity={}), (V, "identity")),
        ("identity a string", e(identity="u-1"), (V, "identity")),
        ("identity an array", e(identity=[{"externalUserId": "u"}]), (V, "identity")),
        ("identity null", dict(e(), identity=None), (V, "identity")),
        ("identity only unknown keys", e(identity={"userId": uid()}), (V, "identity")),
        ("externalUserId a number", e(identity={"externalUserId": 12345}), (V, "identity")),
        ("email a boolean", e(identity={"email": True}), (V, "identity")),
        ("phone an array", e(identity={"phone": ["5551234567"]}), (V, "identity")),
        ("deviceKey an object", e(identity={"deviceKey": {}}), (V, "identity")),
        ("externalUserId null", e(identity={"externalUserId": None}), (V, "identity")),
        ("good externalUserId, email a number", e(identity={"externalUserId": uid(), "email": 5}), (V, "identity")),
        ("externalUserId empty", e(identity={"externalUserId": ""}), (id_codes, "identity")),
        ("externalUserId only spaces", e(identity={"externalUserId": "   "}), (id_codes, "identity")),
        ("externalUserId 256 chars", e(identity={"externalUserId": _sized(256, "u")}), (id_codes, "identity")),
        ("deviceKey 256 chars", e(identity={"deviceKey": _sized(256, "d")}), (id_codes, "identity")),
        ("externalUserId 255 chars", e(identity={"externalUserId": _sized(255, "u")}), "ok"),
        ("externalUserId 255 chars plus spaces around", e(identity={"externalUserId": "  " + _sized(255, "v") + "\t"}), "ok"),
        ("deviceKey only", e(identity={"deviceKey": uid("dev")}), "ok"),
        ("email only", e(identity={"email": uid("m") + "@example.com"}), "ok"),
        ("phone only", e(identity={"phone": "+1" + phone_digits()}), "ok"),
    ], "identity shape checks failed")


def test_invalid_identity_phones():
    bad = ["12345", "+1234567", "+1234567890123456", "555-CALL-NOW", "+", "++15551234567",
           "+1 555 123 4567 ext 9", "phone", "+1-555-123-456a", "0015551", "+\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669"]
    cases = [("phone %r" % p, purchase(identity={"phone": p}), ("invalid_identity", None)) for p in bad]
    cases += [
        ("phone empty", purchase(identity={"phone": ""}), ((V, "invalid_identity"), None)),
        ("phone only spaces", purchase(identity={"phone": "  "}), ((V, "invalid_identity"), None)),
        ("phone with 8 digits", purchase(identity={"phone": "+1" + phone_digits()[:7]}), "ok"),
        ("phone with 15 digits", purchase(identity={"phone": "+1" + phone_digits() + "1234"}), "ok"),
        ("bad phone beside a good externalUserId",
         purchase(identity={"externalUserId": uid(), "phone": "12"}), ("invalid_identity", None)),
    ]
    _run(cases, "phone checks failed")


def test_properties_shape():
    e = purchase
    _run([
        ("properties an array", e(properties=[{"order_id": "x"}]), (V, "properties")),
        ("properties a string", e(properties="order_id=x"), (V, "properties")),
        ("properties a number", e(properties=5), (V, "properties")),
        ("properties missing on a type with required properties", without(e(), "properties"), (V, "properties")),
        ("properties missing on signup", event("signup"), "ok"),
        ("properties empty on signup", event("signup", properties={}), "ok"),
        ("properties of profile_updated all omitted", updated(), "ok"),
        ("unknown property on signup", event("signup", properties={"x": 1}), (V, "properties.x")),
    ], "properties shape checks failed")


def _p(**kw):
    base = {"order_id": uid("o"), "amount": 10, "currency": "USD"}
    for k, v in kw.items():
        if v is _DROP:
            base.pop(k)
        else:
            base[k] = v
    return purchase(properties=base)


_DROP = object()


def test_required_properties():
    k = writer()
    r = post(_p(order_id=_DROP), k)
    b = expect_error(r, 422, V, field="properties.order_id", what="order_id missing")
    check(any(d["field"] == "properties.order_id" and d["problem"] == "required" for d in b["details"]),
          'expected {"field":"properties.order_id","problem":"required"}: ' + r.describe())
    r = post(purchase(properties={}), k)
    b = expect_error(r, 422, V, what="all required properties missing")
    fields = {d["field"] for d in b["details"]}
    for f in ("properties.order_id", "properties.amount", "properties.currency"):
        check(f in fields, "expected a detail for %s: %s" % (f, r.describe()))
    _run([
        ("amount missing", _p(amount=_DROP), (V, "properties.amount")),
        ("currency missing", _p(currency=_DROP), (V, "properties.currency")),
        ("points missing", event("points_adjusted", properties={"reason": "x"}), (V, "properties.points")),
        ("reason missing", event("points_adjusted", properties={"points": 5}), (V, "properties.reason")),
        ("required property null", _p(order_id=None), (V, "properties.order_id")),
        ("optional properties omitted", _p(), "ok"),
        ("optional properties given", _p(category="tv", store_id="s-1"), "ok"),
    ], "required-property checks failed")


def test_string_type():
    _run([
        ("order_id a number", _p(order_id=5), (V, "properties.order_id")),
        ("order_id a boolean", _p(order_id=True), (V, "properties.order_id")),
        ("category an array", _p(category=["tv"]), (V, "properties.category")),
        ("store_id an object", _p(store_id={"id": 1}), (V, "properties.store_id")),
        ("s a number", updated(s=5), (V, "properties.s")),
        ("s empty string", updated(s=""), "ok"),
        ("store_id with quotes and backslashes", _p(store_id='a"b\\c/d'), "ok"),
    ], "string type checks failed")


def test_number_type_and_bounds():
    _run([
        ("amount a string", _p(amount="12.5"), (V, "properties.amount")),
        ("amount a boolean", _p(amount=True), (V, "properties.amount")),
        ("amount an array", _p(amount=[1]), (V, "properties.amount")),
        ("amount below min 0", _p(amount=-0.01), (V, "properties.amount")),
        ("amount -1", _p(amount=-1), (V, "properties.amount")),
        ("amount 0 (= min)", _p(amount=0), "ok"),
        ("amount integer", _p(amount=120), "ok"),
        ("amount fraction", _p(amount=19.99), "ok"),
        ("amount exponent", _p(amount=1.5e3), "ok"),
        ("n = max 5", updated(n=5), "ok"),
        ("n = min -5", updated(n=-5), "ok"),
        ("n = 5.0", updated(n=5.0), "ok"),
        ("n = 4.9999", updated(n=4.9999), "ok"),
        ("n = 5.0001", updated(n=5.0001), (V, "properties.n")),
        ("n = -5.1", updated(n=-5.1), (V, "properties.n")),
        ("n = 6", updated(n=6), (V, "properties.n")),
        ("n = 1e3", updated(n=1e3), (V, "properties.n")),
        ("n a string", updated(n="1"), (V, "properties.n")),
    ], "number checks failed")


def test_integer_type():
    _run([
        ("i = 5", updated(i=5), "ok"),
        ("i = 5.0", updated(i=5.0), "ok"),
        ("i = -7", updated(i=-7), "ok"),
        ("i = 0", updated(i=0), "ok"),
        ("i = 5.5", updated(i=5.5), (V, "properties.i")),
        ("i = 0.1", updated(i=0.1), (V, "properties.i")),
        ("i = \"5\"", updated(i="5"), (V, "properties.i")),
        ("i = true", updated(i=True), (V, "properties.i")),
        ("points = 5.0", event("points_adjusted", properties={"points": 5.0, "reason": "x"}), "ok"),
        ("points = -20", event("points_adjusted", properties={"points": -20, "reason": "x"}), "ok"),
        ("points = 2.5", event("points_adjusted", properties={"points": 2.5, "reason": "x"}), (V, "properties.points")),
    ], "integer checks failed")


def test_boolean_type():
    _run([
        ("b = true", updated(b=True), "ok"),
        ("b = false", updated(b=False), "ok"),
        ("b = \"true\"", updated(b="true"), (V, "properties.b")),
        ("b = 1", updated(b=1), (V, "properties.b")),
        ("b = 0", updated(b=0), (V, "properties.b")),
        ("b = []", updated(b=[]), (V, "properties.b")),
    ], "boolean checks failed")


def test_timestamp_type():
    _run([
        ("t = Z timestamp", updated(t="2024-05-01T12:00:00Z"), "ok"),
        ("t = offset and fraction", updated(t="2024-05-01T12:00:00.250-03:00"), "ok"),
        ("t = yesterday", updated(t="yesterday"), (V, "properties.t")),
        ("t = epoch number", updated(t=1714564800), (V, "properties.t")),
        ("t = empty", updated(t=""), (V, "properties.t")),
        ("t = month 13", updated(t="2024-13-01T00:00:00Z"), (V, "properties.t")),
        ("t = true", updated(t=True), (V, "properties.t")),
    ], "timestamp checks failed")


def test_max_length_counts_code_points():
    smile = "\U0001F600"                       # 4 UTF-8 bytes, 2 UTF-16 units
    _run([
        ("s = 10 emoji", updated(s=smile * 10), "ok"),
        ("s = 11 emoji", updated(s=smile * 11), (V, "properties.s")),
        ("s = 10 two-byte letters", updated(s="\u00e9" * 10), "ok"),
        ("s = 10 three-byte CJK", updated(s="\u6f22" * 10), "ok"),
        ("s = 5 x (e + combining accent) = 10 code points", updated(s="e\u0301" * 5), "ok"),
        ("s = 6 x (e + combining accent) = 12 code points", updated(s="e\u0301" * 6), (V, "properties.s")),
        ("s = 10 ASCII", updated(s="abcdefghij"), "ok"),
        ("s = 11 ASCII", updated(s="abcdefghijk"), (V, "properties.s")),
        ("order_id = 64 chars", _p(order_id="o" * 64), "ok"),
        ("order_id = 65 chars", _p(order_id="o" * 65), (V, "properties.order_id")),
        ("order_id = 64 emoji", _p(order_id=smile * 64), "ok"),
        ("order_id = 65 emoji", _p(order_id=smile * 65), (V, "properties.order_id")),
    ], "max_length checks failed")


def test_enum():
    _run([
        ("currency USD", _p(currency="USD"), "ok"),
        ("currency EUR", _p(currency="EUR"), "ok"),
        ("currency GBP", _p(currency="GBP"), "ok"),
        ("currency usd", _p(currency="usd"), (V, "properties.currency")),
        ("currency JPY", _p(currency="JPY"), (V, "properties.currency")),
        ("currency empty", _p(currency=""), (V, "properties.currency")),
        ("currency 'USD '", _p(currency="USD "), (V, "properties.currency")),
        ("currency a number", _p(currency=1), (V, "properties.currency")),
    ], "enum checks failed")


def test_unknown_property_rejected_in_acme():
    _run([
        ("unknown property", _p(colour="red"), (V, "properties.colour")),
        ("unknown property null", _p(colour=None), (V, "properties.colour")),
        ("property name differing in case", _p(Store_Id="x"), (V, "properties.Store_Id")),
    ], "unknown-property checks failed")


def test_refused_event_not_consumed():
    """A 422 consumes nothing: the same (source, externalEventId) corrected is 201."""
    k = writer()
    ev = _p(currency="JPY")
    expect_error(post(ev, k), 422, V, what="bad currency")
    ev["properties"]["currency"] = "EUR"
    expect_accepted(post(ev, k), what="same id with the currency fixed")
    ev2 = purchase(identity={"phone": "123"})
    expect_error(post(ev2, k), 422, "invalid_identity", what="bad phone")
    ev2["identity"] = {"phone": "+1" + phone_digits()}
    expect_accepted(post(ev2, k), what="same id with the phone fixed")
    ev3 = purchase(eventType="nope")
    expect_error(post(ev3, k), 422, "unknown_event_type")
    ev3["eventType"] = "purchase_completed"
    expect_accepted(post(ev3, k), what="same id with the event type fixed")
