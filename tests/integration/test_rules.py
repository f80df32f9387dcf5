"""Rules engine through the web server (CONF.md "A tenant file", "Expressions";
API.md §2 and §4): points, category bonus, manual adjustments, limits, tiers,
rounding, variables, stop, evaluation errors, the before-event profile, dry_run,
batches, the ledger and rules_version.

The tenants are tests/conf/tenants/rules.yaml (one event type per scenario, so
rules never add up across scenarios) and rules_floor/rules_round/rules_ceil.yaml
(the same two rules under each rounding mode). Every test uses fresh identities.
"""
import decimal
import hashlib
import json
import os
import urllib.parse

from lib import (BATCH, EVENTS, check, event, expect_accepted, expect_duplicate,
                 expect_error, expect_json_object, expect_status, fail, get, loads_exact,
                 post, profiles_reader, reader, request, uid, writer)

TENANT = "rules"
PROFILES = "/v1/cdp/profiles"
CONF = os.environ.get("RFEVENTS_CONF", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "conf"))

D = decimal.Decimal


# ---------------------------------------------------------------- helpers

def encode(doc):
    """JSON bytes of doc with every Decimal written as its exact text (no double)."""
    decs = []

    def walk(x):
        if isinstance(x, D):
            decs.append(str(x))
            return "\x00dec%d\x00" % (len(decs) - 1)
        if isinstance(x, dict):
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x
    text = json.dumps(walk(doc), ensure_ascii=False)
    for i, d in enumerate(decs):
        text = text.replace('"\\u0000dec%d\\u0000"' % i, d)
    return text.encode("utf-8")


def who():
    return {"externalUserId": uid("r")}


def ev(etype, ident=None, props=None, **fields):
    return event(etype, identity=ident if ident is not None else who(), properties=props, **fields)


def send(e, tenant=TENANT, created=None):
    """POST e (must be 201); returns the body, parsed with exact decimals."""
    r = post(encode(e), writer(tenant))
    expect_accepted(r, created, what="ingest %s %s" % (e["eventType"], e.get("properties")))
    return loads_exact(r.raw)


def dry(e, tenant=TENANT):
    r = post(encode(e), writer(tenant), path=EVENTS + "?dry_run=true")
    expect_status(r, 200, what="dry_run %s %s" % (e["eventType"], e.get("properties")))
    b = expect_json_object(r, "dry_run")
    check(b.get("status") == "dry_run", 'expected "status":"dry_run": ' + r.describe())
    return loads_exact(r.raw), r


def event_doc(event_id, tenant=TENANT):
    r = get(EVENTS + "/" + urllib.parse.quote(event_id, safe=""), reader(tenant))
    expect_status(r, 200, what="GET event %s" % event_id)
    expect_json_object(r, "GET event")
    doc = loads_exact(r.raw)
    check(isinstance(doc.get("outcome"), dict), "event %s: outcome must be an object: %s" % (
        event_id, r.describe(1500)))
    return doc


def profile(pid, tenant=TENANT):
    r = get(PROFILES + "/" + pid, profiles_reader(tenant))
    expect_status(r, 200, what="GET profile %s" % pid)
    expect_json_object(r, "GET profile")
    return loads_exact(r.raw)


def points_of(doc):
    """(balance, lifetime) of the points balance of a profile document; (0, 0) when absent."""
    b = doc.get("balances")
    check(isinstance(b, dict), "balances must be an object: %r" % (doc,))
    p = b.get("points")
    if p is None:
        return 0, 0
    check(isinstance(p, dict), "balances.points must be an object: %r" % (doc,))
    return p.get("balance"), p.get("lifetime")


def ledger_all(pid, tenant=TENANT, limit=3):
    """Every ledger entry of a profile, following the cursor (newest first)."""
    out, cursor, pages = [], None, 0
    while True:
        path = PROFILES + "/%s/ledger?limit=%d" % (pid, limit)
        if cursor:
            path += "&cursor=" + urllib.parse.quote(cursor, safe="")
        r = get(path, profiles_reader(tenant))
        expect_status(r, 200, what="ledger page %d" % pages)
        doc = expect_json_object(r, "ledger")
        check(isinstance(doc.get("entries"), list), "entries must be a list: " + r.describe())
        check(len(doc["entries"]) <= limit, "page longer than limit %d: %s" % (limit, r.describe()))
        out += doc["entries"]
        cursor = doc.get("next_cursor")
        pages += 1
        if not cursor:
            return out
        check(pages < 1000, "ledger cursor never ends")


def effects_of(b, kind):
    return [x for x in b.get("effects", []) if isinstance(x, dict) and x.get("type") == kind]


def delta_of(b, rule):
    """The points delta a rule added in a result (0 when the rule left no balance effect)."""
    ds = [x.get("delta") for x in effects_of(b, "balance")
          if x.get("rule") == rule and x.get("balance") == "points"]
    check(len(ds) <= 1, "rule %s has %d points effects: %r" % (rule, len(ds), b))
    return ds[0] if ds else 0


def skipped(outcome):
    rs = outcome.get("rules_skipped")
    check(isinstance(rs, list), "outcome.rules_skipped must be a list: %r" % (outcome,))
    return {x.get("rule"): x.get("reason") for x in rs if isinstance(x, dict)}


def expect_points(b, want, what):
    check(b.get("points_awarded") == want, "%s: expected points_awarded %s, got %r in %r" % (
        what, want, b.get("points_awarded"), b))


def same_number(got, want):
    if isinstance(got, bool) or not isinstance(got, (int, D)):
        return False
    return D(got) == D(want)


# ---------------------------------------------------------------- points

def test_points_per_dollar():
    b = send(ev("purchase_a", props={"amount": 125}), created=True)
    expect_points(b, 125, "$125 at 1 point per dollar")
    check(b.get("rules_applied") == ["a_per_dollar"], "rules_applied: %r" % (b,))
    bal = effects_of(b, "balance")
    check(len(bal) == 1 and bal[0].get("rule") == "a_per_dollar" and bal[0].get("balance") == "points"
          and bal[0].get("delta") == 125 and bal[0].get("balance_after") == 125,
          "expected one balance effect a_per_dollar points +125 -> 125: %r" % (b,))
    check(points_of(profile(b["profile_id"])) == (125, 125), "profile balance after $125: %r" % (
        profile(b["profile_id"]),))


def test_bonus_above_100():
    for amount, want in ((50, 50), (150, 200), (100, 100), (D("100.01"), 150), (D("100.5"), 150)):
        b = send(ev("purchase_b", props={"amount": amount}))
        expect_points(b, want, "purchase_b $%s (amount*1 + (amount > 100 ? 50 : 0))" % amount)
        check(points_of(profile(b["profile_id"]))[0] == want, "profile balance after $%s" % amount)


def test_category_bonus_doubles_electronics():
    b = send(ev("purchase_c", props={"amount": 100, "category": "electronics"}))
    expect_points(b, 200, "$100 electronics")
    check(b.get("rules_applied") == ["c_per_dollar", "c_electronics_bonus"], "rules_applied: %r" % (b,))
    check([(x.get("rule"), x.get("delta"), x.get("balance_after")) for x in effects_of(b, "balance")]
          == [("c_per_dollar", 100, 100), ("c_electronics_bonus", 100, 200)],
          "electronics effects in rule order with running balance_after: %r" % (b,))
    b = send(ev("purchase_c", props={"amount": 100, "category": "books"}))
    expect_points(b, 100, "$100 books")
    check(b.get("rules_applied") == ["c_per_dollar"], "books: rules_applied: %r" % (b,))
    out = event_doc(b["event_id"])["outcome"]
    check("c_electronics_bonus" in skipped(out) or "c_electronics_bonus" not in out.get("rules_applied", []),
          "books: the electronics bonus must not apply: %r" % (out,))


def test_manual_adjustment_moves_balance_lifetime_only_grows():
    ident = who()
    b1 = send(ev("points_adjusted", ident, {"points": 500, "reason": "goodwill"}))
    expect_points(b1, 500, "+500 adjustment")
    b2 = send(ev("points_adjusted", ident, {"points": -200, "reason": "correction"}))
    expect_points(b2, -200, "-200 adjustment")
    bal = effects_of(b2, "balance")
    check(len(bal) == 1 and bal[0].get("delta") == -200 and bal[0].get("balance_after") == 300,
          "-200: expected delta -200, balance_after 300: %r" % (b2,))
    doc = profile(b2["profile_id"])
    check(points_of(doc) == (300, 500), "after +500 and -200: expected balance 300, lifetime 500, got %r"
          % (doc.get("balances"),))
    # manual has stop: true, so manual_audit (a later rule of the same event) never applies
    out = event_doc(b2["event_id"])["outcome"]
    sk = skipped(out)
    check("manual_audit" in sk and "stopped" in (sk["manual_audit"] or "") and "manual" in sk["manual_audit"],
          'expected manual_audit skipped with a reason "stopped by manual": %r' % (out,))
    check("audited" not in doc.get("variables", {}), "a stopped rule set a variable: %r" % (doc,))


def test_welcome_once_per_profile():
    ident = who()
    b1 = send(ev("signup", ident))
    expect_points(b1, 100, "first signup")
    check(b1.get("rules_applied") == ["welcome"], "first signup: rules_applied %r" % (b1,))
    b2 = send(ev("signup", ident))
    check(b2["profile_id"] == b1["profile_id"], "second signup went to another profile")
    expect_points(b2, 0, "second signup of the same profile (limit per_profile: 1)")
    check("welcome" not in b2.get("rules_applied", []), "second signup applied welcome: %r" % (b2,))
    check(not effects_of(b2, "balance"), "second signup has balance effects: %r" % (b2,))
    out = event_doc(b2["event_id"])["outcome"]
    sk = skipped(out)
    check("welcome" in sk and "limit" in (sk["welcome"] or "").lower(),
          "expected welcome in rules_skipped with a reason about the limit: %r" % (out,))
    doc = profile(b1["profile_id"])
    check(points_of(doc) == (100, 100), "balance after two signups: %r" % (doc.get("balances"),))
    check(doc.get("variables", {}).get("welcome_eligible") is True,
          "welcome_eligible flag must be true: %r" % (doc.get("variables"),))
    # another profile still gets its welcome
    expect_points(send(ev("signup")), 100, "signup of another profile")


def _limited(ident, etype, at, want, rule, what):
    b = send(ev(etype, ident, occurredAt=at))
    expect_points(b, want, what)
    if want == 0:
        sk = skipped(event_doc(b["event_id"])["outcome"])
        check(rule in sk and "limit" in (sk[rule] or "").lower(),
              "%s: expected %s skipped for its limit, got rules_skipped %r" % (what, rule, sk))
    return b


def test_per_day_limit_across_day_boundary():
    ident = who()
    _limited(ident, "visit_d", "2026-01-31T23:59:59Z", 10, "daily_visit", "visit 2026-01-31T23:59:59Z")
    _limited(ident, "visit_d", "2026-02-01T00:00:00Z", 10, "daily_visit",
             "visit 2026-02-01T00:00:00Z (next UTC day)")
    _limited(ident, "visit_d", "2026-02-01T12:00:00Z", 0, "daily_visit",
             "second visit on 2026-02-01 (per_day: 1)")
    _limited(ident, "visit_d", "2026-01-31T08:00:00Z", 0, "daily_visit",
             "back-dated second visit on 2026-01-31")
    # 01:30 at +02:00 is 2026-01-31T23:30Z: the UTC day of the first visit
    _limited(ident, "visit_d", "2026-02-01T01:30:00+02:00", 0, "daily_visit",
             "visit 2026-02-01T01:30+02:00 = 2026-01-31 UTC")
    _limited(ident, "visit_d", "2026-02-02T00:00:00.000001Z", 10, "daily_visit", "visit on 2026-02-02")


def test_per_month_limit_across_month_boundary():
    ident = who()
    _limited(ident, "visit_m", "2026-01-31T23:59:59Z", 7, "monthly_visit", "visit 2026-01-31T23:59:59Z")
    _limited(ident, "visit_m", "2026-02-01T00:00:00Z", 7, "monthly_visit",
             "visit 2026-02-01T00:00:00Z (next UTC month)")
    _limited(ident, "visit_m", "2026-02-01T00:00:00.5Z", 0, "monthly_visit", "second visit in February")
    _limited(ident, "visit_m", "2026-02-28T23:59:59.999Z", 0, "monthly_visit", "last instant of February")
    _limited(ident, "visit_m", "2026-03-01T00:00:00Z", 7, "monthly_visit", "first visit in March")
    b = _limited(ident, "visit_m", "2026-03-31T23:00:00-05:00", 7, "monthly_visit",
                 "2026-03-31T23:00-05:00 = 2026-04-01 UTC")
    check(points_of(profile(b["profile_id"])) == (28, 28), "per_month: balance 4 x 7")


def test_tier_multiplier_after_threshold():
    ident = who()
    b = send(ev("purchase_t", ident, {"amount": 900}))
    expect_points(b, 900, "900 as bronze")
    check(b.get("tier") == "bronze", "tier after 900: %r" % (b,))
    check(not effects_of(b, "tier") or effects_of(b, "tier")[0].get("to") == "bronze",
          "no tier change below 1000: %r" % (b,))
    b = send(ev("purchase_t", ident, {"amount": 200}))
    expect_points(b, 200, "900 -> 1100 crosses silver, but the event is earned as bronze (x1)")
    tiers = effects_of(b, "tier")
    check(len(tiers) == 1 and tiers[0].get("from") == "bronze" and tiers[0].get("to") == "silver",
          'expected one effect {"type":"tier","from":"bronze","to":"silver"}: %r' % (b,))
    check(b.get("tier") == "silver", "result tier after crossing 1000: %r" % (b,))
    out = event_doc(b["event_id"])["outcome"]
    check(any(isinstance(x, dict) and x.get("type") == "tier" and x.get("from") == "bronze"
              and x.get("to") == "silver" for x in out.get("effects", [])),
          "GET event: the tier change must be in outcome.effects: %r" % (out,))
    doc = profile(b["profile_id"])
    check(doc.get("tier") == "silver", "profile tier: expected silver, got %r" % (doc.get("tier"),))
    b = send(ev("purchase_t", ident, {"amount": 100}))
    expect_points(b, 125, "100 as silver (x1.25)")
    check(not effects_of(b, "tier"), "no tier change within silver: %r" % (b,))
    b = send(ev("purchase_t", ident, {"amount": D("10.5")}))
    expect_points(b, 13, "10.5 x 1.25 = 13.125, floor")
    check(points_of(profile(b["profile_id"])) == (1238, 1238), "balance 900+200+125+13")


# rounding tenants: r_amount = amount, r_hundred = amount * 100, rounded once by the
# tenant's rounding. The values are the exact ones; doubles get several of them wrong
# (0.29*100 = 28.999999999999996, 1.15*100 = 114.99999999999999, 1.1*100 =
# 110.00000000000001, 0.7*100 = 70.00000000000001, 4.35*100 = 434.99999999999994).
ROUNDING = {
    #  amount     floor          round          ceil
    "19.99":  ((19, 1999),   (20, 1999),   (20, 1999)),
    "0.29":   ((0, 29),      (0, 29),      (1, 29)),
    "1.005":  ((1, 100),     (1, 101),     (2, 101)),
    "1.15":   ((1, 115),     (1, 115),     (2, 115)),
    "1.1":    ((1, 110),     (1, 110),     (2, 110)),
    "0.7":    ((0, 70),      (1, 70),      (1, 70)),
    "4.35":   ((4, 435),     (4, 435),     (5, 435)),
    "2.5":    ((2, 250),     (3, 250),     (3, 250)),
    "-2.5":   ((-3, -250),   (-3, -250),   (-2, -250)),
    "0.5":    ((0, 50),      (1, 50),      (1, 50)),
    "0.125":  ((0, 12),      (0, 13),      (1, 13)),
    "-0.125": ((-1, -13),    (0, -13),     (0, -12)),
    "7":      ((7, 700),     (7, 700),     (7, 700)),
}


def test_rounding_floor_round_ceil_exact():
    problems = []
    for col, mode in enumerate(("floor", "round", "ceil")):
        tenant = "rules_" + mode
        for text, wants in ROUNDING.items():
            want_a, want_h = wants[col]
            r = request("POST", EVENTS, encode(ev("r", props={"amount": D(text)})), key=writer(tenant))
            if r.status != 201:
                problems.append("%s %s: %s" % (mode, text, r.describe()))
                continue
            b = loads_exact(r.raw)
            got = (delta_of(b, "r_amount"), delta_of(b, "r_hundred"))
            if got != (want_a, want_h) or b.get("points_awarded") != want_a + want_h:
                problems.append("rounding %s, amount %s: expected amount -> %d, amount*100 -> %d "
                                "(points %d), got %r, points_awarded %r" % (
                                    mode, text, want_a, want_h, want_a + want_h, got,
                                    b.get("points_awarded")))
    if problems:
        fail("%d rounding cases wrong:\n  %s" % (len(problems), "\n  ".join(problems)))


# ---------------------------------------------------------------- set, stop, errors

def _var_effects(b):
    return {x.get("name"): x for x in effects_of(b, "variable")}


def test_set_variables_exact_sum_and_flags():
    ident = who()
    b1 = send(ev("spend", ident, {"amount": D("0.1")}))
    v1 = _var_effects(b1)
    check(set(v1) == {"total_spend", "spent_once", "big_spender"},
          "expected variable effects total_spend, spent_once, big_spender: %r" % (b1,))
    check(all(x.get("rule") == "spend_vars" for x in v1.values()), "variable effects name the rule: %r" % (b1,))
    check(same_number(v1["total_spend"].get("value"), "0.1"), "total_spend after 0.1: %r" % (b1,))
    check(v1["spent_once"].get("value") is True and v1["big_spender"].get("value") is False,
          "flags after 0.1: %r" % (b1,))
    expect_points(b1, 0, "spend has no points rule")
    b2 = send(ev("spend", ident, {"amount": D("0.2")}))
    v2 = _var_effects(b2)
    check(same_number(v2["total_spend"].get("value"), "0.3"),
          "total_spend = coalesce(total_spend, 0) + amount: 0.1 + 0.2 must be exactly 0.3, got %r"
          % (v2["total_spend"].get("value"),))
    b3 = send(ev("spend", ident, {"amount": D("150.25")}))
    doc = profile(b3["profile_id"])
    vs = doc.get("variables")
    check(isinstance(vs, dict), "variables must be an object: %r" % (doc,))
    check(same_number(vs.get("total_spend"), "150.55"),
          "profile total_spend after 0.1 + 0.2 + 150.25: expected exactly 150.55, got %r" % (
              vs.get("total_spend"),))
    check(vs.get("spent_once") is True, "spent_once flag: %r" % (vs,))
    check(vs.get("big_spender") is True, "big_spender after 150.25: %r" % (vs,))


def test_stop_hides_later_rules_only_when_applied():
    b = send(ev("gate", props={"amount": 50}))
    expect_points(b, 5, "gate 50: gate_stop's when is false, so gate_after applies")
    check(b.get("rules_applied") == ["gate_after"], "gate 50: rules_applied %r" % (b,))
    b = send(ev("gate", props={"amount": 150}))
    expect_points(b, 1, "gate 150: gate_stop applies and stops")
    check(b.get("rules_applied") == ["gate_stop"], "gate 150: rules_applied %r" % (b,))
    out = event_doc(b["event_id"])["outcome"]
    sk = skipped(out)
    check("gate_after" in sk and (sk["gate_after"] or "").startswith("stopped by")
          and "gate_stop" in sk["gate_after"],
          'gate 150: expected gate_after in rules_skipped with reason "stopped by gate_stop": %r' % (out,))


def test_evaluation_errors_skip_only_that_rule():
    b = send(ev("calc", props={"a": 10, "b": 0}))
    expect_points(b, 7, "calc a=10 b=0: a/b fails, c*2 fails (c missing), calc_ok applies")
    check(b.get("rules_applied") == ["calc_ok"], "rules_applied: %r" % (b,))
    out = event_doc(b["event_id"])["outcome"]
    sk = skipped(out)
    check("calc_div" in sk and "zero" in (sk["calc_div"] or "").lower(),
          "expected calc_div skipped with a reason naming the division by zero: %r" % (out,))
    check("calc_null" in sk and "null" in (sk["calc_null"] or "").lower(),
          "expected calc_null skipped with a reason naming the null operand: %r" % (out,))
    check(out.get("points_awarded") == 7 and out.get("rules_applied") == ["calc_ok"],
          "GET event outcome: %r" % (out,))
    b = send(ev("calc", props={"a": 10}))
    expect_points(b, 7, "calc a=10 without b: a/null fails")
    sk = skipped(event_doc(b["event_id"])["outcome"])
    check("calc_div" in sk and "null" in (sk["calc_div"] or "").lower(),
          "a / null: expected calc_div skipped because of null: %r" % (sk,))
    b = send(ev("calc", props={"a": 10, "b": 4, "c": D("1.5")}))
    expect_points(b, 12, "calc a=10 b=4 c=1.5: floor(2.5) + 3 + 7")
    check(b.get("rules_applied") == ["calc_div", "calc_null", "calc_ok"], "rules_applied: %r" % (b,))


def test_every_rule_sees_profile_before_event():
    ident = who()
    b0 = send(ev("purchase_a", ident, {"amount": 5}))
    pid = b0["profile_id"]
    balance, count = 5, 0
    for i in range(3):
        b = send(ev("snap", ident))
        # snap_award +10; snap_double + the balance before the event (not after snap_award)
        want = 10 + balance
        expect_points(b, want, "snap #%d with balance %d before" % (i + 1, balance))
        v = _var_effects(b)
        check(same_number(v.get("seen_balance", {}).get("value"), balance)
              and same_number(v.get("seen_lifetime", {}).get("value"), balance),
              "snap #%d: seen_balance/seen_lifetime must be %d (before the event): %r" % (i + 1, balance, b))
        check(same_number(v.get("snap_count", {}).get("value"), count + 1)
              and same_number(v.get("snap_count_again", {}).get("value"), count + 1),
              "snap #%d: both rules read snap_count before the event (%d) and add 1: %r" % (i + 1, count, b))
        check(delta_of(b, "snap_double") == balance,
              "snap #%d: snap_double must add the balance before the event %d: %r" % (i + 1, balance, b))
        balance += want
        count += 1
    check(points_of(profile(pid)) == (balance, balance), "balance after the snaps")


def test_two_balances_read_back_under_two_identities():
    """A profile with two balances found by two identities: the state read
    with the profile's lock carries both balances (once per identity), and
    every event sees both as the earlier events left them."""
    ident = {"externalUserId": uid("r2"), "email": uid("r2") + "@example.com"}
    b0 = send(ev("purchase_a", ident, {"amount": 5}))
    pid = b0["profile_id"]
    points, stamps = 5, 0
    for i in range(4):
        b = send(ev("stamp", ident))
        check(b.get("profile_id") == pid, "stamp #%d: same profile: %r" % (i + 1, b))
        reward = stamps * 10 + points if stamps >= 2 else 0
        expect_points(b, reward, "stamp #%d with %d stamps, %d points before" % (
            i + 1, stamps, points))
        card = [x for x in effects_of(b, "balance") if x.get("balance") == "stamps"]
        check(len(card) == 1 and card[0].get("delta") == 1
              and card[0].get("balance_after") == stamps + 1,
              "stamp #%d: stamps effect +1 to %d: %r" % (i + 1, stamps + 1, b))
        if reward:
            got = [x.get("balance_after") for x in effects_of(b, "balance")
                   if x.get("balance") == "points"]
            check(got == [points + reward], "stamp #%d: points balance_after %d: %r" % (
                i + 1, points + reward, b))
        points += reward
        stamps += 1
    doc = profile(pid)
    check(points_of(doc) == (points, points), "points after the stamps: %r" % (doc,))
    st = doc["balances"].get("stamps")
    check(isinstance(st, dict) and st.get("balance") == stamps and st.get("lifetime") == stamps,
          "stamps after the stamps (%d): %r" % (stamps, doc))


# ---------------------------------------------------------------- dry_run, batch

def test_dry_run_writes_nothing_then_real_event_same_points():
    # a new identity: profile_id null, nothing created
    ident = who()
    e = ev("purchase_b", ident, {"amount": 150})
    d, r = dry(e)
    expect_points(d, 200, "dry_run $150 purchase_b")
    check("profile_id" in d and d["profile_id"] is None,
          "dry_run for a new identity: profile_id must be null: " + r.describe())
    check(not d.get("event_id"), "dry_run must not have an event_id: " + r.describe())
    check(d.get("rules_applied") == ["b_per_dollar"], "dry_run rules_applied: " + r.describe())
    check([(x.get("rule"), x.get("delta"), x.get("balance_after")) for x in effects_of(d, "balance")]
          == [("b_per_dollar", 200, 200)], "dry_run effects: " + r.describe())
    lk = get(PROFILES + "?externalUserId=" + urllib.parse.quote(ident["externalUserId"]),
             profiles_reader(TENANT))
    expect_error(lk, 404, "not_found", what="dry_run must not create the profile")
    b = send(e, created=True)
    expect_points(b, 200, "the same event posted for real after a dry_run")
    missing = sorted(set(b) - {"event_id"} - set(d))
    first_dry = r

    # an existing profile: balance, ledger and history unchanged by a dry_run
    ident = who()
    b1 = send(ev("purchase_b", ident, {"amount": 50}))
    pid = b1["profile_id"]
    e = ev("purchase_b", ident, {"amount": 150})
    d, r = dry(e)
    expect_points(d, 200, "dry_run $150 on a profile with 50")
    check(d.get("profile_id") == pid, "dry_run profile_id: " + r.describe())
    check([(x.get("delta"), x.get("balance_after")) for x in effects_of(d, "balance")] == [(200, 250)],
          "dry_run effects on balance 50: " + r.describe())
    d2, _ = dry(e)
    expect_points(d2, 200, "second dry_run of the same event")
    check(points_of(profile(pid)) == (50, 50), "dry_run changed the balance: %r" % (profile(pid),))
    check(len(ledger_all(pid)) == 1, "dry_run wrote ledger entries")
    h = get(PROFILES + "/%s/events" % pid, profiles_reader(TENANT))
    expect_status(h, 200, what="history")
    check(len(expect_json_object(h).get("events", [])) == 1, "dry_run wrote an event: " + h.describe())
    r = post(e, writer(TENANT))
    b = expect_accepted(r, what="the dry-run event posted for real (its key was not consumed)")
    expect_points(b, 200, "real $150 after the dry_run")
    check([(x.get("delta"), x.get("balance_after")) for x in effects_of(b, "balance")] == [(200, 250)],
          "real event effects: %r" % (b,))
    check(points_of(profile(pid)) == (250, 250), "balance after the real event")
    expect_duplicate(post(e, writer(TENANT)), b["event_id"], what="resend after the real event")
    check(not missing, "dry_run must have the fields of the 201 but event_id; it lacks %r: %s"
          % (missing, first_dry.describe()))


def test_dry_run_shows_identity_conflicts():
    email = uid("dc") + "@example.com"
    a = send(ev("signup", {"email": email}))
    ext = uid("dx")
    b = send(ev("signup", {"externalUserId": ext}))
    e = ev("purchase_a", {"externalUserId": ext, "email": email}, {"amount": 3})
    d, r = dry(e)
    check(d.get("profile_id") == b["profile_id"], "dry_run: the EXTERNAL identity's profile: " + r.describe())
    real = send(e)
    check(real.get("profile_id") == b["profile_id"], "real: the EXTERNAL identity's profile: %r" % (real,))
    want = real.get("identity_conflicts")
    check(isinstance(want, list) and want, "real event: the email bound to %s must be listed under "
          "identity_conflicts: %r" % (a["profile_id"], real))
    check(d.get("identity_conflicts") == want,
          "dry_run must show the identity_conflicts the event would have (%r), got %s" % (
              want, r.describe()))


def test_dry_run_consumes_no_limit_and_sets_no_variable():
    ident = who()
    for i in range(2):
        d, r = dry(ev("signup", ident))
        expect_points(d, 100, "dry_run signup #%d" % (i + 1))
    b = send(ev("signup", ident))
    expect_points(b, 100, "real signup after two dry_runs (the limit was not consumed)")
    d, r = dry(ev("signup", ident))
    expect_points(d, 0, "dry_run signup after the real one")
    d, r = dry(ev("spend", ident, {"amount": 40}))
    check(any(x.get("name") == "total_spend" and same_number(x.get("value"), 40)
              for x in effects_of(d, "variable")), "dry_run spend: variable effect: " + r.describe())
    vs = profile(b["profile_id"]).get("variables", {})
    check("total_spend" not in vs and "spent_once" not in vs, "dry_run wrote variables: %r" % (vs,))


def test_batch_items_each_get_their_points():
    ident, other = who(), who()
    items = [ev("purchase_b", ident, {"amount": a}) for a in (10, 150, 101, 100)]
    items.append(ev("purchase_c", other, {"amount": 40, "category": "electronics"}))
    items.append(ev("signup", ident))
    items.append(ev("signup", ident))
    items.append(dict(items[0]))
    r = request("POST", BATCH, encode({"items": items}), key=writer(TENANT))
    expect_status(r, 200, what="batch")
    res = loads_exact(r.raw).get("results")
    check(isinstance(res, list) and len(res) == len(items), "results: " + r.describe(2000))
    for i, x in enumerate(res[:7]):
        check(x.get("status") == "accepted", "item %d not accepted: %r" % (i, x))
    got = [x.get("points_awarded") for x in res[:7]]
    check(got == [10, 200, 151, 100, 80, 100, 0],
          "batch points: expected [10, 200, 151, 100, 80, 100, 0], got %r" % (got,))
    after = [effects_of(x, "balance")[0].get("balance_after") for x in res[:4]]
    check(after == [10, 210, 361, 461], "balance_after of the purchases in item order: %r" % (after,))
    check(effects_of(res[5], "balance")[0].get("balance_after") == 561, "signup after the purchases")
    check(res[7].get("status") == "duplicate" and res[7].get("original_event_id") == res[0].get("event_id"),
          "the repeated item is a duplicate of item 0: %r" % (res[7],))
    check(points_of(profile(res[0]["profile_id"])) == (561, 561), "balance after the batch")
    check(points_of(profile(res[4]["profile_id"])) == (80, 80), "other profile after the batch")
    sk = skipped(event_doc(res[6]["event_id"])["outcome"])
    check("welcome" in sk and "limit" in (sk["welcome"] or ""), "second signup in a batch: %r" % (sk,))


# ---------------------------------------------------------------- ledger, version, outcome

def test_ledger_newest_first_sums_to_balance():
    ident = who()
    sent = []   # (event_id, rule, delta) in the order applied
    for etype, props, rules in (
            ("purchase_c", {"amount": 30, "category": "electronics"},
             [("c_per_dollar", 30), ("c_electronics_bonus", 30)]),
            ("purchase_a", {"amount": 12}, [("a_per_dollar", 12)]),
            ("points_adjusted", {"points": -5, "reason": "fix"}, [("manual", -5)]),
            ("purchase_b", {"amount": 120}, [("b_per_dollar", 170)]),
            ("signup", None, [("welcome", 100)]),
            ("points_adjusted", {"points": -300, "reason": "expiry"}, [("manual", -300)])):
        b = send(ev(etype, ident, props))
        pid = b["profile_id"]
        sent += [(b["event_id"], rule, delta) for rule, delta in rules]
    entries = ledger_all(pid, limit=3)
    got = [(x.get("event_id"), x.get("rule"), x.get("delta")) for x in entries]
    want = list(reversed(sent))
    check(got == want, "ledger newest first:\n  expected %r\n  got      %r" % (want, got))
    for x in entries:
        for f in ("event_id", "rule", "balance", "delta", "balance_after", "created_at"):
            check(f in x, "ledger entry lacks %s: %r" % (f, x))
        check(x.get("balance") == "points", "ledger entry balance name: %r" % (x,))
    for newer, older in zip(entries, entries[1:]):
        check(newer["balance_after"] - newer["delta"] == older["balance_after"],
              "ledger chain broken between %r and %r" % (newer, older))
    check(entries[-1]["balance_after"] == entries[-1]["delta"], "the oldest entry starts from 0: %r" % (
        entries[-1],))
    total = sum(x["delta"] for x in entries)
    bal, life = points_of(profile(pid))
    check(total == bal == 37 and entries[0]["balance_after"] == bal,
          "ledger sums to %r, newest balance_after %r, profile balance %r (expected 37)" % (
              total, entries[0]["balance_after"], bal))
    check(life == 342, "lifetime: only the positive deltas (60+12+170+100), got %r" % (life,))


def _sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_rules_version_is_sha256_of_tenant_file():
    for tenant, e in ((TENANT, ev("purchase_a", props={"amount": 1})),
                      ("rules_round", ev("r", props={"amount": 1})),
                      ("rules_ceil", ev("r", props={"amount": 1}))):
        want = _sha256_file(os.path.join(CONF, "tenants", tenant + ".yaml"))
        b = send(e, tenant=tenant)
        doc = event_doc(b["event_id"], tenant)
        check(doc.get("rules_version") == want, "%s: rules_version %r, expected sha256 of %s.yaml %s" % (
            tenant, doc.get("rules_version"), tenant, want))


def test_get_event_shows_outcome():
    e = ev("purchase_c", props={"amount": D("99.99"), "category": "electronics"})
    b = send(e)
    expect_points(b, 198, "99.99 + 99.99 electronics, each rule rounded once (floor)")
    doc = event_doc(b["event_id"])
    out = doc["outcome"]
    check(doc.get("eventType") == "purchase_c" and doc.get("profile_id") == b["profile_id"],
          "event document: %r" % (doc,))
    check(out.get("points_awarded") == 198, "outcome.points_awarded: %r" % (out,))
    check(out.get("rules_applied") == b.get("rules_applied"), "outcome.rules_applied %r vs 201 %r" % (
        out.get("rules_applied"), b.get("rules_applied")))
    check(out.get("effects") == b.get("effects"), "outcome.effects %r vs 201 %r" % (
        out.get("effects"), b.get("effects")))
    check(isinstance(out.get("rules_skipped"), list), "outcome.rules_skipped must be a list: %r" % (out,))
    check(isinstance(out.get("identity_conflicts"), list), "outcome.identity_conflicts: %r" % (out,))
    check(out.get("tier") == b.get("tier") == "bronze", "outcome.tier %r, 201 tier %r" % (
        out.get("tier"), b.get("tier")))


def test_batch_dry_run_is_exactly_the_real_batch():
    """A dry-run batch runs for real inside a transaction that is rolled back,
    so later items see earlier ones (the second welcome is limited) and
    nothing is written: the real batch afterwards answers the same."""
    ident = who()
    items = [ev("signup", ident, externalEventId=uid("w")),
             ev("signup", ident, externalEventId=uid("w"))]
    r = request("POST", BATCH + "?dry_run=true", encode({"items": items}),
                key=writer(TENANT))
    expect_status(r, 200, what="dry-run batch")
    res = loads_exact(r.raw)["results"]
    check([x.get("status") for x in res] == ["dry_run", "dry_run"],
          "dry-run batch statuses: %r" % (res,))
    check(all("event_id" not in x for x in res), "dry run shows an event_id: %r" % (res,))
    check(res[0].get("profile_id") is None and res[0].get("profile_created") is True,
          "a profile only the dry run created must show as null: %r" % (res[0],))
    check([x.get("points_awarded") for x in res] == [100, 0],
          "dry run: the second welcome is limited by the first: %r" % (res,))
    # nothing was written: the identity is still unknown, the ids unused
    r = get(PROFILES + "?externalUserId=" + urllib.parse.quote(ident["externalUserId"]),
            key=profiles_reader(TENANT))
    expect_status(r, 404, what="profile after a dry-run batch")
    r = request("POST", BATCH, encode({"items": items}), key=writer(TENANT))
    expect_status(r, 200, what="real batch")
    real = loads_exact(r.raw)["results"]
    check([x.get("status") for x in real] == ["accepted", "accepted"],
          "real batch after the dry run: %r" % (real,))
    check([x.get("points_awarded") for x in real] == [100, 0],
          "real batch points: %r" % (real,))
