"""Every JSONTestSuite parsing case as the body of POST /v1/cdp/events and
/v1/cdp/events/batch (one test per file).

n_ (must be rejected): 400 malformed_json (413 payload_too_large for the two files
     over the 64 KiB body limit is fine too).
y_ (must be accepted by a JSON parser): an object -> 422 validation_failed (it is no
     event), anything else -> 400 malformed_json (not an object). Never 5xx.
i_ (parser's choice): never 5xx; always a JSON body, an error body when 4xx.
"""
import json
import os

from lib import BATCH, EVENTS, TESTDATA, post, writer, fail

DIR = os.path.join(TESTDATA, "jsontestsuite", "test_parsing")
LIMIT = 64 * 1024
BATCH_LIMIT = 8 * 1024 * 1024


def _is_object(raw):
    try:
        return isinstance(json.loads(raw.decode("utf-8")), dict)
    except (UnicodeDecodeError, ValueError):
        return None


def _check(fname, raw, path, r):
    where = "%s to %s" % (fname, path)
    if r.status >= 500:
        fail("%s: expected no 5xx, got %s" % (where, r.describe(300)))
    if not (r.is_json and isinstance(r.body, dict)):
        fail("%s: expected a JSON object body, got %s" % (where, r.describe(300)))
    code = r.body.get("error_code")
    if r.status >= 400 and not (r.body.get("status") == "error" and isinstance(code, str)):
        fail("%s: a %d must carry an error body, got %s" % (where, r.status, r.describe(300)))
    kind = fname[:2]
    limit = LIMIT if path == EVENTS else BATCH_LIMIT
    if kind == "n_":
        ok = (r.status == 400 and code == "malformed_json") or (
            len(raw) > limit and r.status == 413 and code == "payload_too_large")
        if not ok:
            fail("%s: invalid JSON must be 400 malformed_json, got %s" % (where, r.describe(300)))
    elif kind == "y_":
        if _is_object(raw):
            if not (r.status == 422 and code == "validation_failed"):
                fail("%s: a valid JSON object that is no event must be 422 validation_failed, got %s"
                     % (where, r.describe(300)))
        elif not (r.status == 400 and code == "malformed_json"):
            fail("%s: valid JSON that is not an object must be 400 malformed_json, got %s"
                 % (where, r.describe(300)))
    elif r.status not in (200, 201, 400, 422) and not (r.status == 413 and len(raw) > limit):
        fail("%s: unexpected status, got %s" % (where, r.describe(300)))


def _make(fname):
    def t():
        with open(os.path.join(DIR, fname), "rb") as f:
            raw = f.read()
        k = writer()
        for path in (EVENTS, BATCH):
            _check(fname, raw, path, post(raw, k, path=path))
    t.__name__ = "test_" + fname[:-5]
    return t


def _names():
    try:
        return sorted(n for n in os.listdir(DIR) if n.endswith(".json"))
    except OSError:
        return []


for _f in _names():
    _name = "test_" + "".join(c if c.isalnum() or c == "_" else "_" for c in _f[:-5])
    _base, _n = _name, 2
    while _name in globals():          # n_number_2.e+3 and n_number_2.e-3 and the like
        _name, _n = "%s_v%d" % (_base, _n), _n + 1
    globals()[_name] = _make(_f)

if not _names():
    def test_jsontestsuite_present():
        fail("no JSONTestSuite files under %s (RFEVENTS_TESTDATA)" % DIR)
