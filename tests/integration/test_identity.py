"""Identity resolution, every step of API.md §3, in the acme tenant
(auto_create_profiles true, default_country_code "1")."""
import json
import threading

from lib import (check, event, expect_accepted, outcome_conflicts, phone_digits, post,
                 purchase, uid, writer)


def _send(identity, created=None, what=""):
    """A signup event for identity; returns the 201 body."""
    return expect_accepted(post(event("signup", identity=identity), writer()), created,
                           what=what or "identity %r" % identity)


def _email():
    return uid("m") + "@example.com"


def _conflicts_mention(event_id, value):
    ic = outcome_conflicts(event_id)
    check(ic, "expected identity_conflicts in the outcome of %s, got none" % event_id)
    check(value in json.dumps(ic, ensure_ascii=False),
          "identity_conflicts of %s do not name %r: %r" % (event_id, value, ic))
    return ic


def test_new_then_known_external_user_id():
    u = uid("u")
    a = _send({"externalUserId": u}, created=True, what="first event of a new externalUserId")
    b = _send({"externalUserId": u}, created=False, what="second event")
    check(a["profile_id"] == b["profile_id"], "same externalUserId, two profiles: %s %s" % (
        a["profile_id"], b["profile_id"]))
    c = _send({"externalUserId": "  " + u + " "}, created=False, what="externalUserId with spaces around")
    check(c["profile_id"] == a["profile_id"], "trimmed externalUserId resolved elsewhere")
    d = _send({"externalUserId": u.upper()}, created=True, what="externalUserId in another case")
    check(d["profile_id"] != a["profile_id"], "externalUserId is case-sensitive (case kept) "
          "but %r and %r resolved to one profile" % (u, u.upper()))


def test_email_later_resolves_to_same_profile():
    u, e = uid("u"), _email()
    a = _send({"externalUserId": u, "email": e}, created=True)
    b = _send({"email": e}, created=False, what="email only")
    check(b["profile_id"] == a["profile_id"], "email alone resolved to another profile")
    c = _send({"email": "  " + e.upper() + "  "}, created=False, what="email in upper case with spaces")
    check(c["profile_id"] == a["profile_id"], "normalised email resolved to another profile")
    check(outcome_conflicts(b["event_id"]) == [], "no conflicts expected for event %s" % b["event_id"])


def test_new_external_with_email_of_profile_with_other_external():
    """Step 3: P has EXTERNAL u1 and email e. (u2 new, e) -> P is rejected, a new
    profile is made for u2; e stays on P and is listed under identity_conflicts."""
    u1, u2, e = uid("u"), uid("u"), _email()
    p = _send({"externalUserId": u1, "email": e}, created=True)
    q = _send({"externalUserId": u2, "email": e}, created=True, what="new externalUserId + email of P")
    check(q["profile_id"] != p["profile_id"], "a different EXTERNAL was merged into P")
    _conflicts_mention(q["event_id"], e)
    r = _send({"email": e}, created=False, what="email alone afterwards")
    check(r["profile_id"] == p["profile_id"], "the email moved away from P")
    s = _send({"externalUserId": u2}, created=False, what="u2 alone afterwards")
    check(s["profile_id"] == q["profile_id"], "u2 is not bound to its new profile")


def test_precedence_external_over_email():
    """Step 2: externalUserId of P1 + email of P2 -> P1; the email stays on P2 and is
    recorded as a conflict."""
    u1, u2, e2 = uid("u"), uid("u"), _email()
    p1 = _send({"externalUserId": u1}, created=True)
    p2 = _send({"externalUserId": u2, "email": e2}, created=True)
    x = _send({"externalUserId": u1, "email": e2}, created=False, what="u1 + email of P2")
    check(x["profile_id"] == p1["profile_id"], "expected P1 (EXTERNAL wins), got %s" % x["profile_id"])
    _conflicts_mention(x["event_id"], e2)
    y = _send({"email": e2}, created=False)
    check(y["profile_id"] == p2["profile_id"], "the email left P2 (profiles are never merged)")


def test_precedence_email_over_phone_over_device():
    e, ph, d = _email(), "+1" + phone_digits(), uid("dev")
    pe = _send({"email": e}, created=True)
    pp = _send({"phone": ph}, created=True)
    pd = _send({"deviceKey": d}, created=True)
    x = _send({"deviceKey": d, "phone": ph, "email": e}, created=False, what="device + phone + email")
    check(x["profile_id"] == pe["profile_id"], "EMAIL should win over PHONE and DEVICE_KEY")
    y = _send({"deviceKey": d, "phone": ph}, created=False, what="device + phone")
    check(y["profile_id"] == pp["profile_id"], "PHONE should win over DEVICE_KEY")
    z = _send({"deviceKey": d}, created=False)
    check(z["profile_id"] == pd["profile_id"], "the device key moved")


def test_unbound_identities_bind_to_candidate():
    """Step 5: the given identities that are unbound are bound to the candidate."""
    u, e, d, ph = uid("u"), _email(), uid("dev"), phone_digits()
    p = _send({"externalUserId": u}, created=True)
    x = _send({"externalUserId": u, "email": e, "deviceKey": d, "phone": ph}, created=False)
    check(x["profile_id"] == p["profile_id"], "known externalUserId resolved elsewhere")
    for ident in ({"email": e}, {"deviceKey": d}, {"phone": "+1" + ph}):
        y = _send(ident, created=False, what="newly bound %r alone" % ident)
        check(y["profile_id"] == p["profile_id"], "%r was not bound to the candidate" % ident)


def test_pre_provisioning_then_external_binds():
    """Step 4: a profile made from email + device; a later externalUserId arriving with
    that email binds to it (the profile had no EXTERNAL yet)."""
    e, d, u = _email(), uid("dev"), uid("u")
    p = _send({"email": e, "deviceKey": d}, created=True)
    y = _send({"deviceKey": d}, created=False)
    check(y["profile_id"] == p["profile_id"], "device key not bound on creation")
    x = _send({"externalUserId": u, "email": e}, created=False, what="new externalUserId + known email")
    check(x["profile_id"] == p["profile_id"], "a profile without EXTERNAL should accept the new one")
    z = _send({"externalUserId": u}, created=False)
    check(z["profile_id"] == p["profile_id"], "externalUserId not bound to the candidate")
    # one EXTERNAL per profile: another new externalUserId with the email is rejected
    w = _send({"externalUserId": uid("u"), "email": e}, created=True, what="second new externalUserId")
    check(w["profile_id"] != p["profile_id"], "a second EXTERNAL was bound to the profile")


def test_rejected_candidate_not_replaced_by_lower_match():
    """Step 4: P1 has u1 + e1, P2 has device d2. (u_new, e1, d2): the candidate P1 is
    rejected (other EXTERNAL) and is NOT replaced by P2; a new profile is made, e1
    stays on P1 and d2 on P2."""
    u1, e1, d2, un = uid("u"), _email(), uid("dev"), uid("u")
    p1 = _send({"externalUserId": u1, "email": e1}, created=True)
    p2 = _send({"deviceKey": d2}, created=True)
    x = _send({"externalUserId": un, "email": e1, "deviceKey": d2}, created=True,
              what="new EXTERNAL + email of P1 + device of P2")
    check(x["profile_id"] not in (p1["profile_id"], p2["profile_id"]),
          "expected a new profile, got %s (P1 %s, P2 %s)" % (x["profile_id"], p1["profile_id"], p2["profile_id"]))
    _conflicts_mention(x["event_id"], e1)
    _conflicts_mention(x["event_id"], d2)
    check(_send({"email": e1})["profile_id"] == p1["profile_id"], "email left P1")
    check(_send({"deviceKey": d2})["profile_id"] == p2["profile_id"], "device left P2")
    check(_send({"externalUserId": un})["profile_id"] == x["profile_id"], "new EXTERNAL not bound")


def test_phone_variants_same_profile():
    ph = phone_digits()
    a, b, c = ph[:3], ph[3:6], ph[6:]
    p = _send({"phone": "+1%s" % ph}, created=True)
    forms = ["(%s) %s-%s" % (a, b, c), "%s.%s.%s" % (a, b, c), "%s-%s-%s" % (a, b, c), "%s %s %s" % (a, b, c),
             "+1 (%s) %s-%s" % (a, b, c), "001 %s %s %s" % (a, b, c), "00-1-%s-%s-%s" % (a, b, c),
             " +1%s " % ph, "+1.%s.%s.%s" % (a, b, c)]
    bad = []
    for f in forms:
        x = expect_accepted(post(event("signup", identity={"phone": f}), writer()), what="phone %r" % f)
        if x["profile_id"] != p["profile_id"] or x["profile_created"]:
            bad.append("%r -> %s (created %s)" % (f, x["profile_id"], x["profile_created"]))
    check(not bad, "phone forms of +1%s resolved elsewhere (expected %s): %s" % (ph, p["profile_id"], bad))


def test_device_key_trimmed_case_kept():
    d = uid("Dev")
    p = _send({"deviceKey": d}, created=True)
    check(_send({"deviceKey": " %s\t" % d}, created=False)["profile_id"] == p["profile_id"],
          "trimmed deviceKey resolved elsewhere")
    check(_send({"deviceKey": d.lower()}, created=True)["profile_id"] != p["profile_id"],
          "deviceKey in another case resolved to the same profile (case must be kept)")


def test_identity_types_are_separate_namespaces():
    v = uid("same")
    a = _send({"externalUserId": v}, created=True)
    b = _send({"deviceKey": v}, created=True, what="the same text as a deviceKey")
    check(a["profile_id"] != b["profile_id"], "EXTERNAL and DEVICE_KEY values were matched")


def test_concurrent_first_events_one_profile():
    """20 threads send the first events (different ids) of one new identity at once:
    exactly one profile exists at the end."""
    k = writer()
    ident = {"externalUserId": uid("race"), "email": _email()}
    evs = [purchase(identity=dict(ident)) for _ in range(20)]
    barrier = threading.Barrier(len(evs))
    results = [None] * len(evs)

    def run(i):
        barrier.wait()
        results[i] = post(evs[i], k)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(evs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    bodies = [expect_accepted(r, what="concurrent first event %d" % i) for i, r in enumerate(results)]
    pids = {b["profile_id"] for b in bodies}
    check(len(pids) == 1, "expected one profile, got %d: %s" % (len(pids), sorted(pids)))
    created = sum(1 for b in bodies if b["profile_created"])
    check(created == 1, "expected profile_created true exactly once, got %d times" % created)
    after = _send({"email": ident["email"]}, created=False)
    check(after["profile_id"] in pids, "the email resolved to another profile afterwards")
