"""Profile read endpoints (API.md §4), shapes only: rules effects (points, tiers,
variables) are not asserted here."""
import urllib.parse

from lib import (check, event, expect_accepted, expect_error, expect_json_object, expect_status,
                 get, phone_digits, post, profiles_reader, purchase, uid, writer)

PROFILES = "/v1/cdp/profiles"


def test_profile_document():
    u, e, ph = uid("U"), uid("M") + "@Example.com", phone_digits()
    b = expect_accepted(post(purchase(identity={"externalUserId": u, "email": e, "phone": ph}), writer()))
    r = get(PROFILES + "/" + b["profile_id"], profiles_reader())
    expect_status(r, 200, what="GET profile")
    doc = expect_json_object(r)
    check(doc.get("profile_id") == b["profile_id"], "profile_id: " + r.describe())
    check(isinstance(doc.get("created_at"), str) and doc["created_at"], "created_at: " + r.describe())
    ids = doc.get("identities")
    check(isinstance(ids, list), "identities must be a list: " + r.describe())
    pairs = {(i.get("type"), i.get("value")) for i in ids if isinstance(i, dict)}
    for want in (("EXTERNAL", u), ("EMAIL", e.lower()), ("PHONE", "+1" + ph)):
        check(want in pairs, "identities lack %r: %s" % (want, r.describe()))
    check(isinstance(doc.get("balances"), dict), "balances must be an object: " + r.describe())
    for name, bal in doc["balances"].items():
        check(isinstance(bal, dict) and "balance" in bal and "lifetime" in bal,
              "balance %s must have balance and lifetime: %s" % (name, r.describe()))
    check(isinstance(doc.get("variables"), dict), "variables must be an object: " + r.describe())
    check("tier" in doc, "tier missing: " + r.describe())


def test_profile_lookup_by_identity():
    u, e, ph, d = uid("U"), uid("m") + "@example.com", phone_digits(), uid("dev")
    b = expect_accepted(post(purchase(identity={"externalUserId": u, "email": e, "phone": ph,
                                                "deviceKey": d}), writer()))
    k = profiles_reader()
    for name, value in (("externalUserId", u), ("email", e), ("email", e.upper()), ("phone", "+1" + ph),
                        ("phone", "(%s) %s-%s" % (ph[:3], ph[3:6], ph[6:])), ("deviceKey", d)):
        # %20 for spaces (not "+", which a phone number may carry literally)
        r = get(PROFILES + "?" + urllib.parse.urlencode({name: value}, quote_via=urllib.parse.quote), k)
        expect_status(r, 200, what="lookup %s=%s" % (name, value))
        check(expect_json_object(r).get("profile_id") == b["profile_id"],
              "lookup %s=%s found another profile: %s" % (name, value, r.describe()))
    expect_error(get(PROFILES + "?externalUserId=" + uid("nobody"), k), 404, "not_found", what="unknown identity")
    expect_error(get(PROFILES + "/prf_" + uid("x").replace("-", ""), k), 404, "not_found", what="unknown profile")


def test_profile_events_history_newest_first_with_cursor():
    k = writer()
    ident = {"externalUserId": uid("u")}
    times = ["2024-03-01T10:00:00Z", "2024-01-01T10:00:00Z", "2024-02-01T10:00:00Z"]
    ids = {}
    pid = None
    for t in times:
        b = expect_accepted(post(event("signup", identity=ident, occurredAt=t), k))
        ids[t] = b["event_id"]
        pid = b["profile_id"]
    want = [ids[t] for t in sorted(times, reverse=True)]
    r = get(PROFILES + "/%s/events?limit=2" % pid, profiles_reader())
    expect_status(r, 200, what="history page 1")
    doc = expect_json_object(r)
    got = [x.get("event_id") for x in doc.get("events", [])]
    check(got == want[:2], "page 1: expected %r, got %r" % (want[:2], r.describe(1500)))
    cur = doc.get("next_cursor")
    check(isinstance(cur, str) and cur, "page 1 should have a next_cursor: " + r.describe(300))
    r2 = get(PROFILES + "/%s/events?limit=2&cursor=%s" % (pid, urllib.parse.quote(cur, safe="")), profiles_reader())
    expect_status(r2, 200, what="history page 2")
    doc2 = expect_json_object(r2)
    got2 = [x.get("event_id") for x in doc2.get("events", [])]
    check(got2 == want[2:], "page 2: expected %r, got %s" % (want[2:], r2.describe(1500)))
    check(doc2.get("next_cursor") is None, "last page: next_cursor should be null: " + r2.describe(300))


def test_profile_ledger_shape():
    b = expect_accepted(post(purchase(), writer()))
    r = get(PROFILES + "/%s/ledger" % b["profile_id"], profiles_reader())
    expect_status(r, 200, what="ledger")
    doc = expect_json_object(r)
    check(isinstance(doc.get("entries"), list), "entries must be a list: " + r.describe())
    check("next_cursor" in doc, "next_cursor missing: " + r.describe())
    for en in doc["entries"]:
        for f in ("event_id", "rule", "balance", "delta", "balance_after", "created_at"):
            check(f in en, "ledger entry lacks %s: %s" % (f, r.describe()))


def test_profile_endpoints_need_profiles_read():
    b = expect_accepted(post(purchase(), writer()))
    for path in ("/%s" % b["profile_id"], "/%s/events" % b["profile_id"], "/%s/ledger" % b["profile_id"],
                 "?externalUserId=x"):
        expect_error(get(PROFILES + path, writer()), 403, "forbidden", what="events:write GET profiles" + path)
