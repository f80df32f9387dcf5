"""The Big List of Naughty Strings as externalEventId, identity externalUserId,
property value (acme store_id) and source. Each answer is 201 or a 4xx JSON error,
never 5xx; what was accepted comes back byte for byte (externalUserId with ASCII
whitespace trimmed from both ends). One test per use and chunk of the list."""
import json
import os
import re

from lib import (check, event, fail, get_event, pmap, post, purchase, reader, summarise,
                 uid, writer)

FILE = os.path.join(os.environ.get("RFEVENTS_TESTDATA", "/work/shared/testdata"),
                    "naughty-strings", "blns.json")
CHUNK = 65
ASCII_WS = " \t\n\r\x0b\x0c"
SOURCE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}\Z")


def _load():
    try:
        with open(FILE, encoding="utf-8") as f:
            return json.load(f)
    except OSError:
        return None


STRINGS = _load()


def _show(s):
    return json.dumps(s)[:80]


def _answer(s, r, what):
    """None when r is a fine answer for string s used as what, else a problem."""
    if r.status >= 500:
        return "%s %s: 5xx: %s" % (what, _show(s), r.describe(300))
    if r.status == 201:
        return None
    if 400 <= r.status < 500:
        b = r.body if r.is_json else None
        if not (isinstance(b, dict) and b.get("status") == "error" and isinstance(b.get("error_code"), str)):
            return "%s %s: a %d without a JSON error body: %s" % (what, _show(s), r.status, r.describe(300))
        return None
    return "%s %s: unexpected %s" % (what, _show(s), r.describe(300))


def _roundtrip(s, r, pick, want, what):
    """After a 201, GET the event and compare pick(doc) with want."""
    if r.status != 201:
        return None
    g = get_event(r.body["event_id"], reader())
    if g.status != 200 or not g.is_json:
        return "%s %s: GET the accepted event: %s" % (what, _show(s), g.describe(300))
    try:
        got = pick(g.body)
    except (KeyError, TypeError, AttributeError):
        return "%s %s: the event document lacks the field: %s" % (what, _show(s), g.describe(300))
    if got != want:
        return "%s %s: stored %s, expected %s" % (what, _show(s), _show(got), _show(want))
    return None


def _run(items, one, what):
    res = pmap(one, items, workers=8)
    problems = [p for p in res if p]
    summarise(problems, len(items), what)


def _ext_event_id(chunk):
    src = uid("blns")[:40]
    k = writer()

    def one(s):
        r = post(purchase(source=src, externalEventId=s), k)
        p = _answer(s, r, "externalEventId")
        if p:
            return p
        if (s == "" or len(s) > 255) and r.status != 422:
            return "externalEventId %s (%d code points): expected 422, got %s" % (_show(s), len(s), r.describe(200))
        if r.status in (200, 409):
            return ("externalEventId %s: distinct ids in a fresh source taken as one (collation?): %s"
                    % (_show(s), r.describe(300)))
        return _roundtrip(s, r, lambda d: d["externalEventId"], s, "externalEventId")
    _run(sorted(set(chunk)), one, "naughty externalEventIds answered wrongly")


def _ext_user_id(chunk):
    k = writer()

    def one(s):
        r = post(event("signup", identity={"externalUserId": s}), k)
        p = _answer(s, r, "externalUserId")
        if p:
            return p
        t = s.strip(ASCII_WS)
        if (t == "" or len(t) > 255) and r.status != 422:
            return "externalUserId %s: empty or too long after trimming, expected 422, got %s" % (
                _show(s), r.describe(200))
        return _roundtrip(s, r, lambda d: d["identity"]["externalUserId"], t, "externalUserId")
    _run(list(chunk), one, "naughty externalUserIds answered wrongly")


def _store_id(chunk):
    k = writer()

    def one(s):
        ev = purchase()
        ev["properties"]["store_id"] = s
        r = post(ev, k)
        return _answer(s, r, "store_id") or _roundtrip(
            s, r, lambda d: d["properties"]["store_id"], s, "store_id")
    _run(list(chunk), one, "naughty store_id values answered wrongly")


def _source(chunk):
    k = writer()

    def one(s):
        r = post(purchase(source=s), k)
        if SOURCE_RE.match(s):
            if r.status != 201:
                return "source %s is valid, expected 201, got %s" % (_show(s), r.describe(300))
            return _roundtrip(s, r, lambda d: d["source"], s, "source")
        if r.status != 422 or not (r.is_json and r.body.get("error_code") == "validation_failed"):
            return "source %s is invalid, expected 422 validation_failed, got %s" % (_show(s), r.describe(300))
        return None
    _run(list(chunk), one, "naughty sources answered wrongly")


def _chunks():
    return [STRINGS[i:i + CHUNK] for i in range(0, len(STRINGS), CHUNK)] if STRINGS else []


def _make(fn, chunk):
    return lambda: fn(chunk)


for _use, _fn in (("external_event_id", _ext_event_id), ("external_user_id", _ext_user_id),
                  ("store_id", _store_id), ("source", _source)):
    for _i, _c in enumerate(_chunks()):
        globals()["test_blns_%s_%02d" % (_use, _i + 1)] = _make(_fn, _c)


def test_blns_distinct_user_ids_distinct_profiles():
    """Different externalUserIds (after trimming) never share a profile: catches a
    case- or accent-insensitive collation on the identity key."""
    check(STRINGS, "no naughty strings at " + FILE)
    k = writer()
    values = sorted({s for s in STRINGS if 0 < len(s.strip(ASCII_WS)) <= 255})

    def one(s):
        r = post(event("signup", identity={"externalUserId": s}), k)
        return (s, r.body.get("profile_id") if r.status == 201 and r.is_json else None)
    owners = {}
    for s, pid in pmap(one, values):
        if pid:
            owners.setdefault(pid, set()).add(s.strip(ASCII_WS))
    shared = [sorted(v) for v in owners.values() if len(v) > 1]
    if shared:
        fail("%d profiles were reached by different externalUserIds, e.g. %s" % (
            len(shared), "; ".join(" = ".join(_show(x) for x in g[:3]) for g in shared[:5])))


def test_blns_distinct_event_ids_one_source():
    """All distinct naughty strings as externalEventIds of one fresh source: no two
    are taken as the same id (no 200 duplicate, no 409 conflict)."""
    check(STRINGS, "no naughty strings at " + FILE)
    src = uid("blnsall")[:40]
    k = writer()

    def one(s):
        r = post(purchase(source=src, externalEventId=s), k)
        if r.status in (200, 409) or r.status >= 500:
            return "externalEventId %s: %s" % (_show(s), r.describe(300))
        return None
    _run(sorted(set(STRINGS)), one, "distinct externalEventIds clashed")


if STRINGS is None:
    def test_blns_present():
        fail("naughty strings not found at " + FILE)
