"""Tenant isolation (API.md §1), auto_create_profiles false (§3 step 4) and
unknown_properties allow (CONF.md)."""
from lib import (EVENTS, admin, batch, check, check_accepted_fields, check_error_body, event,
                 expect_accepted, expect_error, expect_json_object, expect_status, get,
                 get_event, loads_exact, post, purchase, reader, uid, writer)


def test_same_event_id_in_two_tenants():
    ev = purchase()
    a = expect_accepted(post(ev, writer("acme")), what="acme")
    g = expect_accepted(post(ev, writer("globex")), what="globex, same source and externalEventId")
    check(a["event_id"] != g["event_id"], "two tenants share an event id")
    check(a["profile_id"] != g["profile_id"], "two tenants share a profile")
    check(g["profile_created"] is True, "globex should create its own profile: %r" % g)


def test_cross_tenant_event_is_404():
    a = expect_accepted(post(purchase(), writer("acme")))
    g = expect_accepted(post(purchase(), writer("globex")))
    expect_error(get_event(a["event_id"], reader("globex")), 404, "not_found", what="globex reads acme's event")
    expect_error(get_event(a["event_id"], admin("globex")), 404, "not_found", what="globex admin reads acme's event")
    expect_error(get_event(g["event_id"], reader("acme")), 404, "not_found", what="acme reads globex's event")
    expect_status(get_event(a["event_id"], reader("acme")), 200, what="acme reads its own event")


def test_cross_tenant_profile_is_404():
    a = expect_accepted(post(purchase(), writer("acme")))
    expect_error(get("/v1/cdp/profiles/" + a["profile_id"], admin("globex")), 404, "not_found",
                 what="globex reads acme's profile")
    expect_status(get("/v1/cdp/profiles/" + a["profile_id"], admin("acme")), 200,
                  what="acme reads its own profile")


def test_identities_do_not_match_across_tenants():
    u, e = uid("u"), uid("m") + "@example.com"
    a = expect_accepted(post(purchase(identity={"externalUserId": u, "email": e}), writer("acme")), created=True)
    g = expect_accepted(post(purchase(identity={"externalUserId": u}), writer("globex")), created=True,
                        what="same externalUserId in globex")
    g2 = expect_accepted(post(purchase(identity={"email": e}), writer("globex")), created=True,
                         what="same email in globex")
    check(len({a["profile_id"], g["profile_id"], g2["profile_id"]}) == 3, "profiles shared across tenants")
    a2 = expect_accepted(post(purchase(identity={"email": e}), writer("acme")), created=False)
    check(a2["profile_id"] == a["profile_id"], "acme's email no longer resolves to acme's profile")
    r = get("/v1/cdp/profiles?externalUserId=" + u, admin("globex"))
    expect_status(r, 200, what="globex looks up u")
    check(expect_json_object(r).get("profile_id") == g["profile_id"], "globex lookup found another profile: " + r.describe())


def test_registry_is_per_tenant():
    expect_error(post(event("globex_only"), writer("acme")), 422, "unknown_event_type",
                 what="acme sends globex's type")
    expect_accepted(post(event("globex_only"), writer("globex")), what="globex sends its own type")


def test_closed_tenant_identity_not_found():
    k = writer("closed")
    ev = purchase()
    for i in range(2):
        expect_error(post(ev, k), 404, "identity_not_found", what="closed tenant, unknown identity, try %d" % (i + 1))
    r = post(ev, k, path=EVENTS + "?dry_run=true")
    expect_error(r, 404, "identity_not_found", what="closed tenant dry run")
    r = batch([purchase(), purchase(properties={})], k)
    expect_status(r, 200, what="closed tenant batch")
    res = expect_json_object(r).get("results")
    check(isinstance(res, list) and len(res) == 2, "expected 2 results: " + r.describe())
    check_error_body(res[0], "identity_not_found", "item 0: " + r.describe())
    check_error_body(res[1], "validation_failed", "item 1 (invalid, validation first): " + r.describe())
    # the same identity in an open tenant works
    expect_accepted(post(ev, writer("acme")), what="the same event in acme")


def test_loose_tenant_keeps_unknown_properties():
    k = writer("loose")
    oid = uid("o")
    props = ('{"order_id":"%s","amount":10.10,"currency":"GBP","colour":"red","nested":'
             '{"a":[1,2.50,{"b":null}],"t":true},"weird key \\u00e9":"\\u2603"}' % oid)
    body = ('{"source":"it.test","externalEventId":"%s","eventType":"purchase_completed",'
            '"identity":{"externalUserId":"%s"},"properties":%s}' % (uid("e"), uid("u"), props)).encode()
    b = expect_accepted(post(body, k), what="loose tenant, unknown properties")
    g = get_event(b["event_id"], reader("loose"))
    expect_status(g, 200)
    got = loads_exact(g.raw).get("properties")
    check(got == loads_exact(props.encode()), "unknown properties not kept as sent: sent %s, got %s" % (
        props, g.describe(1500)))
    # known properties are still validated
    bad = purchase(properties={"order_id": oid, "amount": "ten", "currency": "GBP", "colour": "red"})
    expect_error(post(bad, k), 422, "validation_failed", field="properties.amount", what="loose, bad amount")
    expect_error(post(purchase(properties={"colour": "red"}), k), 422, "validation_failed",
                 field="properties.order_id", what="loose, required missing")
    expect_error(post(dict(bad, properties=dict(bad["properties"], amount=1)), writer("acme")), 422,
                 "validation_failed", field="properties.colour", what="acme rejects the same unknown property")


def test_keys_are_per_tenant():
    """A key only ever acts in its own tenant: an acme key's event lands in acme."""
    ev = purchase()
    a = expect_accepted(post(ev, admin("acme")))
    expect_status(get_event(a["event_id"], admin("acme")), 200)
    expect_error(get_event(a["event_id"], admin("loose")), 404, "not_found", what="loose reads acme's event")
    r = post(ev, admin("globex"))
    b = expect_accepted(r, what="globex posts the same event (no cross-tenant dedup)")
    check_accepted_fields(b, r.describe())
